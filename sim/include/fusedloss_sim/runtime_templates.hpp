// fusedloss emulated device — the C++ overloads that the toolkit's cuda_runtime.h puts over the C
// runtime API (typed pointers, kernels passed as functions), routed to the emulated device.
#pragma once

#include <cuda_runtime_api.h>

#include "fusedloss_sim/sim.hpp"

template <class T>
inline cudaError_t cudaMalloc(T** p, size_t bytes) {
  return ::cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
template <class T>
inline cudaError_t cudaMallocAsync(T** p, size_t bytes, cudaStream_t stream) {
  return ::cudaMallocAsync(reinterpret_cast<void**>(p), bytes, stream);
}
template <class T>
inline cudaError_t cudaMallocHost(T** p, size_t bytes) {
  return ::cudaMallocHost(reinterpret_cast<void**>(p), bytes);
}
template <class T>
inline cudaError_t cudaHostAlloc(T** p, size_t bytes, unsigned flags) {
  return ::cudaHostAlloc(reinterpret_cast<void**>(p), bytes, flags);
}
template <class T>
inline cudaError_t cudaHostGetDevicePointer(T** d, void* h, unsigned flags) {
  return ::cudaHostGetDevicePointer(reinterpret_cast<void**>(d), h, flags);
}

namespace fusedloss_sim {
namespace detail {
/// Attributes of a kernel (registers and local memory are not modelled: 0).
cudaError_t func_attributes(cudaFuncAttributes* attr, const void* kernel);
cudaError_t occupancy_blocks(int* blocks, const void* kernel, int block_threads, size_t dynamic_smem);
cudaError_t occupancy_clusters(int* clusters, const void* kernel, const cudaLaunchConfig_t* config);
unsigned cluster_dim_of(const cudaLaunchConfig_t* config);
}  // namespace detail
}  // namespace fusedloss_sim

template <class... P>
inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, void (*kernel)(P...)) {
  return fusedloss_sim::detail::func_attributes(attr, reinterpret_cast<const void*>(kernel));
}
template <class... P>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, void (*kernel)(P...), int block_threads,
                                                                 size_t dynamic_smem) {
  return fusedloss_sim::detail::occupancy_blocks(blocks, reinterpret_cast<const void*>(kernel), block_threads,
                                                 dynamic_smem);
}
template <class... P>
inline cudaError_t cudaOccupancyMaxActiveClusters(int* clusters, void (*kernel)(P...), const cudaLaunchConfig_t* config) {
  return fusedloss_sim::detail::occupancy_clusters(clusters, reinterpret_cast<const void*>(kernel), config);
}
template <class... P, class... A>
inline cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* config, void (*kernel)(P...), A&&... args) {
  return fusedloss_sim::launch(kernel, config->gridDim, config->blockDim, config->dynamicSmemBytes, config->stream,
                               fusedloss_sim::detail::cluster_dim_of(config), std::forward<A>(args)...);
}
