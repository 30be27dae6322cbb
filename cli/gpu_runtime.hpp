// fusedloss CLI — the few CUDA runtime services the commands need (device buffers, copies,
// device description). Compiled against the CUDA runtime when the build has the CUDA path
// (FUSEDLOSS_CLI_WITH_CUDA=1); otherwise every call reports that this build has no GPU support.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace fusedloss_cli {
namespace gpu {

/// True when this binary was built with the CUDA path.
bool compiled();

struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  int driver_version = 0;   ///< e.g. 13000 (CUDA 13.0)
  int runtime_version = 0;  ///< e.g. 13000
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  std::int64_t memory_bytes = 0;
  std::int64_t l2_bytes = 0;
};

/// The current device. Throws RuntimeFailure (NoGpuError when none is usable).
DeviceInfo device_info();
/// "13.0" from 13000.
std::string version_string(int cuda_version);
/// Free device memory in bytes (0 on failure).
std::size_t free_memory();

void* malloc_device(std::size_t bytes);  ///< throws RuntimeFailure (naming the size) on failure
void free_device(void* ptr) noexcept;
void copy_to_device(void* dst, const void* src, std::size_t bytes);
void copy_to_host(void* dst, const void* src, std::size_t bytes);
void memset_device(void* dst, int value, std::size_t bytes);

/// An owning device allocation (nullptr for 0 bytes).
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(std::size_t bytes) : ptr_(bytes ? malloc_device(bytes) : nullptr), bytes_(bytes) {}
  ~Buffer() { free_device(ptr_); }
  Buffer(Buffer&& other) noexcept : ptr_(other.ptr_), bytes_(other.bytes_) {
    other.ptr_ = nullptr;
    other.bytes_ = 0;
  }
  Buffer& operator=(Buffer&& other) noexcept {
    if (this != &other) {
      free_device(ptr_);
      ptr_ = other.ptr_;
      bytes_ = other.bytes_;
      other.ptr_ = nullptr;
      other.bytes_ = 0;
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* get() const { return ptr_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  std::size_t size() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace gpu
}  // namespace fusedloss_cli
