#include "cli/gpu_runtime.hpp"

#include "cli/common.hpp"

#if FUSEDLOSS_CLI_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace fusedloss_cli {
namespace gpu {

std::string version_string(int v) { return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10); }

#if FUSEDLOSS_CLI_WITH_CUDA

namespace {
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw RuntimeFailure(std::string(what) + ": " + cudaGetErrorString(e));
  }
}
}  // namespace

bool compiled() { return true; }

DeviceInfo device_info() {
  DeviceInfo info;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    throw NoGpuError("no CUDA device is available");
  }
  check(cudaGetDevice(&info.ordinal), "cudaGetDevice");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, info.ordinal), "cudaGetDeviceProperties");
  info.name = prop.name;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  info.sm_count = prop.multiProcessorCount;
  info.memory_bytes = static_cast<std::int64_t>(prop.totalGlobalMem);
  info.l2_bytes = prop.l2CacheSize;
  check(cudaDriverGetVersion(&info.driver_version), "cudaDriverGetVersion");
  check(cudaRuntimeGetVersion(&info.runtime_version), "cudaRuntimeGetVersion");
  return info;
}

std::size_t free_memory() {
  std::size_t free_bytes = 0, total = 0;
  if (cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return free_bytes;
}

void* malloc_device(std::size_t bytes) {
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw RuntimeFailure("cannot allocate " + std::to_string(bytes) + " bytes of device memory: " +
                         cudaGetErrorString(e));
  }
  return p;
}
void free_device(void* ptr) noexcept {
  if (ptr != nullptr) cudaFree(ptr);
}
void copy_to_device(void* dst, const void* src, std::size_t bytes) {
  if (bytes) check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy host to device");
}
void copy_to_host(void* dst, const void* src, std::size_t bytes) {
  if (bytes) check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy device to host");
}
void memset_device(void* dst, int value, std::size_t bytes) {
  if (bytes) check(cudaMemset(dst, value, bytes), "cudaMemset");
}

#else  // no CUDA path in this build

namespace {
[[noreturn]] void no_cuda() { throw NoGpuError("this build of fusedloss has no CUDA path"); }
}  // namespace

bool compiled() { return false; }
DeviceInfo device_info() { no_cuda(); }
std::size_t free_memory() { return 0; }
void* malloc_device(std::size_t) { no_cuda(); }
void free_device(void*) noexcept {}
void copy_to_device(void*, const void*, std::size_t) { no_cuda(); }
void copy_to_host(void*, const void*, std::size_t) { no_cuda(); }
void memset_device(void*, int, std::size_t) { no_cuda(); }

#endif

}  // namespace gpu
}  // namespace fusedloss_cli
