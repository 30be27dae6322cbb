// fusedloss — row-wise kernels, part 4 of 4: the reductions around the row kernel, on the
// deterministic two-level reduction of deterministic_reduce.cuh (partials in double here). The
// label pass (sparse cross_entropy / nll: Σ w[y_n], the bad-label count, Σ w_c → RowStats) runs
// before the row kernel, so the mean's divisor is known on the device before any gradient is
// written; the loss pass sums the per-row losses after it. A one-block grid finishes its result
// itself; larger ones leave one partial per fixed chunk and the combine kernel finishes.
#pragma once

#include "fusedloss/cuda/deterministic_reduce.cuh"
#include "fusedloss/cuda/rowwise/primitives.cuh"

namespace fusedloss {
namespace cuda {
namespace rowwise {

using DoublePartials = BasicPartialsView<double>;

/// Finishes the label statistics from the totals (Σ w[y], Σ w_c) and the bad-label count.
struct LabelFinish {
  RowStats* stats;
  long long* error_count;
  long long C;
  double grad_scale;
  int need_wsum;
  int mean;
  __device__ void operator()(const double* totals, std::int64_t bad) const {
    const double div = totals[0];
    RowStats s;
    s.divisor = div;
    s.bad = bad;
    s.weight_sum = need_wsum ? static_cast<float>(totals[1]) : static_cast<float>(C);
    s.zero_div = (mean && div == 0.0) ? 1 : 0;
    s.factor = mean ? (div != 0.0 ? static_cast<float>(grad_scale / div) : 0.f) : static_cast<float>(grad_scale);
    s.pad_ = 0;
    *stats = s;
    if (error_count != nullptr) *error_count = bad;
  }
};

struct LabelArgs {
  const void* labels;
  const float* w;
  long long N, C, ignore_index;
  long long chunk;   ///< labels per block
  long long cchunk;  ///< class weights per block (W)
  int labels64;
  LabelFinish finish;
};

/// Block b reduces labels [b·chunk, (b+1)·chunk) and class weights [b·cchunk, (b+1)·cchunk) into
/// partial slot b (values: Σ w[y], Σ w_c; count: bad labels).
__global__ void __launch_bounds__(kStatsThreads) label_stats_kernel(const LabelArgs la, const DoublePartials part) {
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
  if (la.finish.need_wsum) {
    const long long clo = b * la.cchunk;
    const long long chi = clo + la.cchunk < la.C ? clo + la.cchunk : la.C;
    for (long long c = clo + threadIdx.x; c < chi; c += blockDim.x) wsum += static_cast<double>(__ldg(la.w + c));
  }
  div = block_sum(div, sd);
  wsum = block_sum(wsum, sw);
  bad = block_sum(bad, sb);
  const double totals[2] = {div, wsum};
  if (gridDim.x == 1) {
    if (threadIdx.x == 0) la.finish(totals, bad);
  } else {
    store_partial<2, true>(part, b, totals, bad);
  }
}

/// Finishes the scalar loss: the sum over rows divided by the mean's divisor (on the device).
struct LossFinish {
  float* out;             ///< outputs.loss[0]
  const RowStats* stats;  ///< non-null: divide by stats->divisor (sparse mean), NaN when zero_div
  double divisor;         ///< used when stats == nullptr
  __device__ void operator()(const double* totals, std::int64_t) const {
    float v;
    if (stats != nullptr) {
      v = stats->zero_div ? CUDART_NAN_F : static_cast<float>(totals[0] / stats->divisor);
    } else {
      v = static_cast<float>(totals[0] / divisor);
    }
    *out = v;
  }
};

struct LossArgs {
  const float* rows;  ///< per-row losses [N]
  long long N;
  long long chunk;    ///< row losses per block
  LossFinish finish;
};

/// Block b sums the row losses [b·chunk, (b+1)·chunk) in double into partial slot b.
__global__ void __launch_bounds__(kStatsThreads) loss_partial_kernel(const LossArgs f, const DoublePartials part) {
  FUSEDLOSS_SHARED(double[kWarpSize], sd);
  const long long b = blockIdx.x;
  const long long lo = b * f.chunk;
  const long long hi = lo + f.chunk < f.N ? lo + f.chunk : f.N;
  double acc = 0.0;
  for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) acc += static_cast<double>(f.rows[i]);
  acc = block_sum(acc, sd);
  const double totals[1] = {acc};
  if (gridDim.x == 1) {
    if (threadIdx.x == 0) f.finish(totals, 0);
  } else {
    store_partial<1, false>(part, b, totals, 0);
  }
}

__global__ void write_scalar_kernel(float* out, float value) { *out = value; }

}  // namespace rowwise
}  // namespace cuda
}  // namespace fusedloss
