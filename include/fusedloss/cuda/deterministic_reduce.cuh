// fusedloss — deterministic two-level reduction: per-block partials in a workspace, then one
// fixed-order combine. Header-only, CUDA-only; shared by the elementwise kernels (float tile
// partials) and the row-wise label and loss passes (rowwise/reductions.cuh: double partials, one
// per fixed chunk of 16384 rows; a one-block pass finishes its result itself).
//
// Why not CUB's DeviceReduce or float atomics: the loss must be bitwise identical run to run
// AND independent of the grid the producer happened to be launched with (SM count, occupancy).
// So the producer kernel assigns a FIXED set of elements to each partial (e.g. "tile t = elements
// [t·TILE, (t+1)·TILE)", grid-striding over tiles), reduces each tile with a fixed shuffle tree
// (block_reduce_partial below) and stores it in slot t of the workspace. The reduction tree then
// depends only on the problem size, never on gridDim. A single-block combine kernel then adds
// the partials in a fixed order (thread j sums slots j, j+B, j+2B, ... in double, then a fixed
// block tree) and hands the totals to a caller-supplied `Finish` functor, which writes the
// finished result (loss, error count, any derived scalar a later pass needs) to device memory.
// No host synchronisation, no allocation, no atomics, no memset: every slot is written by its
// producer before the combine reads it, so the workspace needs no initialisation and the whole
// sequence is capturable in a CUDA graph.
//
// The combine's order depends only on P and kCombineThreads: the row-wise passes, which had a
// combine of their own with 256 threads, give bitwise the same totals for P <= 256 (up to
// 4,194,304 rows: every sum starts from +0.0, and threads 256..511 only add +0.0) and sum in a
// different, equally fixed order for P > 256 (slot i now lands in thread i mod 512, not i mod 256).
//
// Workspace layout for P partials with K value streams of type V (float or double) and optional
// int64 counts (BasicPartialsLayout<V> computes the offsets; every region starts on a 256-byte
// boundary):
//   [ V value[K][P] ][ int64 count[P] ][ extra bytes for the caller (e.g. a device scalar) ]
// Counts (invalid data values per partial) are exact integers, so their order does not matter,
// but they ride along with the values to need no second reduction.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "fusedloss/cuda/device_common.cuh"

namespace fusedloss {
namespace cuda {

/// Threads of the combine kernel. A constant, so the combine order never depends on the device.
constexpr int kCombineThreads = 512;
/// Every workspace region is aligned to this many bytes.
constexpr std::size_t kWorkspaceRegionAlign = 256;

__host__ __device__ constexpr std::size_t align_up(std::size_t v, std::size_t a) { return (v + a - 1) / a * a; }

/// Offsets of the regions of a partials workspace (usable on host and device). V is the type of
/// the value slots: float (elementwise tiles) or double (row-wise label and loss partials).
template <class V>
struct BasicPartialsLayout {
  std::int64_t partials = 0;  ///< P: number of partial slots
  int value_streams = 0;      ///< K: values per slot (0 when only counts are reduced)
  bool counts = false;        ///< one int64 count per slot
  std::size_t extra_bytes = 0;  ///< caller-owned bytes after the partials (e.g. a device scalar)

  __host__ __device__ constexpr std::size_t value_bytes() const {
    return align_up(static_cast<std::size_t>(partials) * sizeof(V), kWorkspaceRegionAlign);
  }
  __host__ __device__ constexpr std::size_t values_offset(int stream) const {
    return static_cast<std::size_t>(stream) * value_bytes();
  }
  __host__ __device__ constexpr std::size_t counts_offset() const {
    return static_cast<std::size_t>(value_streams) * value_bytes();
  }
  __host__ __device__ constexpr std::size_t extra_offset() const {
    return counts_offset() +
           (counts ? align_up(static_cast<std::size_t>(partials) * sizeof(std::int64_t), kWorkspaceRegionAlign) : 0);
  }
  /// Total bytes (0 when nothing at all is needed).
  __host__ __device__ constexpr std::size_t bytes() const {
    return extra_offset() + align_up(extra_bytes, kWorkspaceRegionAlign);
  }
};

using PartialsLayout = BasicPartialsLayout<float>;

/// Device pointers into a workspace laid out by BasicPartialsLayout<V>. `values` points at stream
/// 0; stream s starts `value_stride` values later.
template <class V>
struct BasicPartialsView {
  V* values = nullptr;
  std::int64_t value_stride = 0;
  std::int64_t* counts = nullptr;
  std::int64_t partials = 0;
  void* extra = nullptr;
};

using PartialsView = BasicPartialsView<float>;

/// Carves `workspace` (256-byte aligned, at least layout.bytes() long) into a view.
template <class V>
inline BasicPartialsView<V> make_partials_view(void* workspace, const BasicPartialsLayout<V>& layout) {
  BasicPartialsView<V> v;
  unsigned char* base = static_cast<unsigned char*>(workspace);
  v.partials = layout.partials;
  v.value_stride = static_cast<std::int64_t>(layout.value_bytes() / sizeof(V));
  if (base == nullptr) return v;
  if (layout.value_streams > 0) v.values = reinterpret_cast<V*>(base + layout.values_offset(0));
  if (layout.counts) v.counts = reinterpret_cast<std::int64_t*>(base + layout.counts_offset());
  if (layout.extra_bytes > 0) v.extra = base + layout.extra_offset();
  return v;
}

/// Shared-memory scratch of block_reduce_partial (one per block, declared __shared__).
template <int K>
struct PartialScratch {
  float values[K > 0 ? K : 1][kWarpSize];
  long long counts[kWarpSize];
};

/// Producer side: reduces K float values and one integer count per thread over the block in a
/// fixed order (fixed butterfly inside each warp, then warp 0 adds the warp sums in warp order).
/// The results are valid in thread 0 only. blockDim.x must be a multiple of 32, at most 1024.
/// Every thread of the block must call it (it contains __syncthreads). With kCounts false the
/// count is not reduced (and costs nothing).
template <int K, bool kCounts>
__device__ __forceinline__ void block_reduce_partial(float (&v)[K > 0 ? K : 1], long long& count,
                                                     PartialScratch<K>& scratch) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
#pragma unroll
  for (int k = 0; k < K; ++k) v[k] = warp_sum(v[k]);
  if constexpr (kCounts) count = warp_sum(count);
  __syncthreads();  // the scratch may still be read by warp 0 from the previous call
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) scratch.values[k][warp] = v[k];
    if constexpr (kCounts) scratch.counts[warp] = count;
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) v[k] = warp_sum(lane < warps ? scratch.values[k][lane] : 0.0f);
    if constexpr (kCounts) count = warp_sum(lane < warps ? scratch.counts[lane] : 0LL);
  }
}

/// Producer side: thread 0 stores the block's reduced values/count into partial slot `slot`.
template <int K, bool kCounts, class V>
__device__ __forceinline__ void store_partial(const BasicPartialsView<V>& view, std::int64_t slot,
                                              const V (&v)[K > 0 ? K : 1], long long count) {
  if (threadIdx.x != 0) return;
#pragma unroll
  for (int k = 0; k < K; ++k) view.values[static_cast<std::int64_t>(k) * view.value_stride + slot] = v[k];
  if constexpr (kCounts) view.counts[slot] = static_cast<std::int64_t>(count);
}

/// The combine kernel: one block of kCombineThreads threads. Sums each of the K value streams
/// over view.partials slots in a fixed order, in double, and the counts (when kCounts), then
/// thread 0 calls finish(totals, count), with totals a double[K] (count 0 without kCounts).
/// view.partials may be 0 (finish then sees zeros): that is how an empty problem writes its
/// result. Launch it with launch_combine().
template <int K, bool kCounts, class Finish, class V>
__global__ void __launch_bounds__(kCombineThreads) combine_partials_kernel(BasicPartialsView<V> view, Finish finish) {
  FUSEDLOSS_SHARED(double[(K > 0 ? K : 1)][kWarpSize], value_scratch);
  FUSEDLOSS_SHARED(long long[kWarpSize], count_scratch);
  double totals[K > 0 ? K : 1];
  long long count = 0;
#pragma unroll
  for (int k = 0; k < K; ++k) totals[k] = 0.0;
  for (std::int64_t i = threadIdx.x; i < view.partials; i += kCombineThreads) {
#pragma unroll
    for (int k = 0; k < K; ++k)
      totals[k] += static_cast<double>(view.values[static_cast<std::int64_t>(k) * view.value_stride + i]);
    if constexpr (kCounts) count += static_cast<long long>(view.counts[i]);
  }
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  constexpr int kWarps = kCombineThreads / kWarpSize;
#pragma unroll
  for (int k = 0; k < K; ++k) totals[k] = warp_sum(totals[k]);
  if constexpr (kCounts) count = warp_sum(count);
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) value_scratch[k][warp] = totals[k];
    count_scratch[warp] = count;
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) totals[k] = warp_sum(lane < kWarps ? value_scratch[k][lane] : 0.0);
    if constexpr (kCounts) count = warp_sum(lane < kWarps ? count_scratch[lane] : 0LL);
    if (lane == 0) finish(static_cast<const double*>(totals), static_cast<std::int64_t>(count));
  }
}

/// Enqueues the combine kernel on `stream`. Returns the launch status (cudaGetLastError()).
template <int K, bool kCounts, class Finish, class V>
inline cudaError_t launch_combine(const BasicPartialsView<V>& view, const Finish& finish, cudaStream_t stream) {
  ::fusedloss::cuda::triple_chevron(1, kCombineThreads, 0, stream).doit(combine_partials_kernel<K, kCounts, Finish, V>, view, finish);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace fusedloss
