// fusedloss — row-wise kernels, part 4 of 4: the reductions around the row kernel. The label
// pass (sparse cross_entropy / nll: Σ w[y_n], the bad-label count, Σ w_c → RowStats) runs before
// the row kernel so the mean's divisor is known on the device before any gradient is written; the
// loss pass sums the per-row losses after it. Both are fixed-order and in double.
#pragma once

#include "fusedloss/cuda/rowwise/primitives.cuh"

namespace fusedloss {
namespace cuda {
namespace rowwise {

// ---- label statistics and the final loss reduction (fixed order, double) ------------------------------

struct LabelArgs {
  const void* labels;
  const float* w;
  double* part_div;
  double* part_wsum;
  long long* part_bad;
  RowStats* stats;
  long long* error_count;
  long long N, C, ignore_index;
  long long chunk;   ///< labels per block
  long long cchunk;  ///< class weights per block (W)
  double grad_scale;
  int labels64;
  int need_wsum;
  int mean;
};

__device__ __forceinline__ void finish_label_stats(const LabelArgs& la, double div, long long bad, double wsum) {
  RowStats s;
  s.divisor = div;
  s.bad = bad;
  s.weight_sum = la.need_wsum ? static_cast<float>(wsum) : static_cast<float>(la.C);
  s.zero_div = (la.mean && div == 0.0) ? 1 : 0;
  s.factor = la.mean ? (div != 0.0 ? static_cast<float>(la.grad_scale / div) : 0.f) : static_cast<float>(la.grad_scale);
  s.pad_ = 0;
  *la.stats = s;
  if (la.error_count != nullptr) *la.error_count = bad;
}

/// Block b reduces labels [b·chunk, (b+1)·chunk) and class weights [b·cchunk, (b+1)·cchunk).
/// A one-block grid finishes the statistics itself; otherwise label_final_kernel does.
__global__ void __launch_bounds__(kStatsThreads) label_stats_kernel(const LabelArgs la) {
  FUSEDLOSS_SHARED(double[kWarpSize], sd);
  FUSEDLOSS_SHARED(double[kWarpSize], sw);
  FUSEDLOSS_SHARED(long long[kWarpSize], sb);
  const long long b = blockIdx.x;
  double div = 0.0, wsum = 0.0;
  long long bad = 0;
  const long long lo = b * la.chunk;
  const long long hi = lo + la.chunk < la.N ? lo + la.chunk : la.N;
  for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) {
    const long long y = la.labels64 ? __ldg(static_cast<const long long*>(la.labels) + i)
                                    : static_cast<long long>(__ldg(static_cast<const int*>(la.labels) + i));
    if (y == la.ignore_index) continue;
    if (y < 0 || y >= la.C) {
      ++bad;
      continue;
    }
    div += la.w != nullptr ? static_cast<double>(__ldg(la.w + y)) : 1.0;
  }
  if (la.need_wsum) {
    const long long clo = b * la.cchunk;
    const long long chi = clo + la.cchunk < la.C ? clo + la.cchunk : la.C;
    for (long long c = clo + threadIdx.x; c < chi; c += blockDim.x) wsum += static_cast<double>(__ldg(la.w + c));
  }
  div = block_sum(div, sd);
  wsum = block_sum(wsum, sw);
  bad = block_sum(bad, sb);
  if (threadIdx.x == 0) {
    if (gridDim.x == 1) {
      finish_label_stats(la, div, bad, wsum);
    } else {
      la.part_div[b] = div;
      la.part_wsum[b] = wsum;
      la.part_bad[b] = bad;
    }
  }
}

__global__ void __launch_bounds__(kStatsThreads) label_final_kernel(const LabelArgs la, int parts) {
  FUSEDLOSS_SHARED(double[kWarpSize], sd);
  FUSEDLOSS_SHARED(double[kWarpSize], sw);
  FUSEDLOSS_SHARED(long long[kWarpSize], sb);
  double div = 0.0, wsum = 0.0;
  long long bad = 0;
  for (int i = threadIdx.x; i < parts; i += blockDim.x) {
    div += la.part_div[i];
    wsum += la.part_wsum[i];
    bad += la.part_bad[i];
  }
  div = block_sum(div, sd);
  wsum = block_sum(wsum, sw);
  bad = block_sum(bad, sb);
  if (threadIdx.x == 0) finish_label_stats(la, div, bad, wsum);
}

struct LossArgs {
  const float* rows;  ///< per-row losses [N]
  double* part;       ///< per-block partial sums
  float* out;         ///< outputs.loss[0]
  const RowStats* stats;  ///< non-null: divide by stats->divisor (sparse mean), NaN when zero_div
  long long N;
  long long chunk;
  double divisor;  ///< used when stats == nullptr
};

__device__ __forceinline__ void finish_loss(const LossArgs& f, double total) {
  float v;
  if (f.stats != nullptr) {
    v = f.stats->zero_div ? CUDART_NAN_F : static_cast<float>(total / f.stats->divisor);
  } else {
    v = static_cast<float>(total / f.divisor);
  }
  *f.out = v;
}

__global__ void __launch_bounds__(kStatsThreads) loss_partial_kernel(const LossArgs f) {
  FUSEDLOSS_SHARED(double[kWarpSize], sd);
  const long long b = blockIdx.x;
  const long long lo = b * f.chunk;
  const long long hi = lo + f.chunk < f.N ? lo + f.chunk : f.N;
  double acc = 0.0;
  for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) acc += static_cast<double>(f.rows[i]);
  acc = block_sum(acc, sd);
  if (threadIdx.x == 0) {
    if (gridDim.x == 1) {
      finish_loss(f, acc);
    } else {
      f.part[b] = acc;
    }
  }
}

__global__ void __launch_bounds__(kStatsThreads) loss_final_kernel(const LossArgs f, int parts) {
  FUSEDLOSS_SHARED(double[kWarpSize], sd);
  double acc = 0.0;
  for (int i = threadIdx.x; i < parts; i += blockDim.x) acc += f.part[i];
  acc = block_sum(acc, sd);
  if (threadIdx.x == 0) finish_loss(f, acc);
}

__global__ void write_scalar_kernel(float* out, float value) { *out = value; }

}  // namespace rowwise
}  // namespace cuda
}  // namespace fusedloss
