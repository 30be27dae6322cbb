// fusedloss CLI — reading and writing NumPy .npy files (format versions 1.0, 2.0 and 3.0).
//
// Supported: little-endian, C order (a Fortran-order flag is accepted only where it means the
// same layout: 0-d and 1-d arrays), element types float16 '<f2', float32 '<f4', float64 '<f8',
// int32 '<i4', int64 '<i8'. The data must be exactly shape-product × itemsize bytes.
// Everything else (big-endian, other dtypes, structured dtypes, truncated or padded files) is
// rejected with a one-line NpyError that names the file and the problem.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace fusedloss_cli {

enum class NpyType { F2, F4, F8, I4, I8 };

/// '<f2', '<f4', ...
const char* npy_descr(NpyType type);
/// 2, 4, 8, 4, 8.
std::size_t npy_itemsize(NpyType type);
bool npy_is_float(NpyType type);

/// A malformed, unreadable or unsupported .npy file, or a failed write. The message is one
/// line and starts with the file name.
struct NpyError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct NpyArray {
  NpyType type = NpyType::F4;
  std::vector<std::int64_t> shape;  ///< empty: a 0-d array (one element)
  std::vector<unsigned char> data;  ///< little-endian, C order, numel() * itemsize bytes

  std::int64_t numel() const;
  /// Typed views (the caller checks `type`).
  template <class T>
  const T* as() const {
    return reinterpret_cast<const T*>(data.data());
  }
  template <class T>
  T* as() {
    return reinterpret_cast<T*>(data.data());
  }
};

/// Parses a complete .npy image held in memory; `name` is used in error messages.
NpyArray parse_npy(const unsigned char* bytes, std::size_t size, const std::string& name);
/// Reads and parses a file.
NpyArray read_npy(const std::string& path);

/// The complete .npy image (version 1.0, or 2.0 when the header needs it) of an array.
/// `data` holds numel(shape) * itemsize bytes in C order.
std::vector<unsigned char> serialize_npy(NpyType type, const std::vector<std::int64_t>& shape, const void* data);
/// Writes serialize_npy() to `path` (creating or truncating it). Throws NpyError.
void write_npy(const std::string& path, NpyType type, const std::vector<std::int64_t>& shape, const void* data);

}  // namespace fusedloss_cli
