// fusedloss CLI — host tensors in the library's dtypes, and conversions from/to .npy arrays.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli/npy.hpp"
#include "fusedloss/types.hpp"

namespace fusedloss_cli {

struct HostTensor {
  fusedloss::DType dtype = fusedloss::DType::Float32;
  std::vector<std::int64_t> shape;
  std::vector<unsigned char> bytes;

  HostTensor() = default;
  HostTensor(fusedloss::DType d, std::vector<std::int64_t> s);  ///< zero-filled
  std::int64_t numel() const;
  const void* data() const { return bytes.empty() ? nullptr : bytes.data(); }
  void* data() { return bytes.empty() ? nullptr : bytes.data(); }
};

/// Value `i` as a double (exact for every dtype).
double get_value(const HostTensor& t, std::int64_t i);
/// Stores `v` correctly rounded (round to nearest even, single rounding) into t's dtype.
void set_value(HostTensor& t, std::int64_t i, double v);

/// Correctly rounded conversions from double (no double rounding through float).
float round_to_float(double v);
std::uint16_t round_to_half_bits(double v);
std::uint16_t round_to_bfloat16_bits(double v);

/// A float (or integer) .npy array converted to `target` (Float32, Float16 or BFloat16), each
/// value rounded once. `what` names the tensor in error messages.
HostTensor to_values(const NpyArray& array, fusedloss::DType target, const std::string& what);
/// Same, but takes array.data over when no conversion is needed (array.data is left empty).
HostTensor take_values(NpyArray& array, fusedloss::DType target, const std::string& what);
/// An integer .npy array (int32 / int64) as labels; throws UsageError for a float array.
HostTensor to_labels(const NpyArray& array, const std::string& what);
/// The .npy form of a tensor: f32 → <f4, f16 → <f2, bf16 → <f4 (widened exactly: NumPy has no
/// bfloat16), i32 → <i4, i64 → <i8.
NpyArray to_npy(const HostTensor& t);
/// Same, taking t's buffer over where no conversion is needed.
NpyArray to_npy(HostTensor&& t);
/// The dtype a float .npy array maps to when --dtype is not given: f2 → f16, else f32.
fusedloss::DType default_value_dtype(NpyType type);

/// Parses "f32" / "float32" / "fp32", "f16" / "float16" / "fp16" / "half", "bf16" / "bfloat16".
fusedloss::DType parse_value_dtype(const std::string& text);

}  // namespace fusedloss_cli
