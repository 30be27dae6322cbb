// fusedloss CUDA path — the small kernels around linear_cross_entropy's GEMMs (cuda/linear_cross_entropy.cu):
// the label pass (mean divisor, bad-label count), dtype widening / narrowing, the bias broadcast, the
// chunk's loss sum, the bias gradient's column sums, and the final rounding of the fp32 / fp64 sums.
//
// Each is one streaming pass over its data (the widening / narrowing ones read b and write 4 bytes per
// element or the reverse; the column sums read the chunk's ∂loss/∂z once, coalesced along V). Every
// reduction has a fixed order — per-thread sequential loops and block_sum's fixed tree, one block where a
// scalar results — so the results are bitwise reproducible. No atomics.
#pragma once

#include <cstdint>

#include "fusedloss/cuda/device_common.cuh"

namespace fusedloss {
namespace cuda {
namespace lce {

constexpr int kThreads = 256;

/// Per-call scalars in the workspace (written by label_stats_kernel before anything reads them).
struct Scalars {
  double divisor;   ///< Σ w[y_n] over valid, non-ignored rows
  double loss_sum;  ///< Σ of the row losses, chunk by chunk in row order
  long long bad;    ///< bad labels
  float alpha;      ///< the GEMMs' alpha: 1 / divisor for mean (0 when the divisor is 0), else 1
  float zero, one;  ///< the GEMMs' beta values (cuBLAS device pointer mode reads alpha and beta there)
};

/// One block: the labels once, in a fixed order, in double.
__global__ void __launch_bounds__(kThreads)
    label_stats_kernel(const void* labels, bool labels64, long long N, long long V, long long ignore_index,
                       const float* class_weight, bool mean, Scalars* s) {
  FUSEDLOSS_SHARED(double[kWarpSize], sd);
  FUSEDLOSS_SHARED(long long[kWarpSize], sb);
  double div = 0.0;
  long long bad = 0;
  for (long long i = threadIdx.x; i < N; i += blockDim.x) {
    const long long y = labels64 ? static_cast<const long long*>(labels)[i]
                                 : static_cast<long long>(static_cast<const int*>(labels)[i]);
    if (y == ignore_index) continue;
    if (y < 0 || y >= V) {
      ++bad;
      continue;
    }
    div += class_weight != nullptr ? static_cast<double>(class_weight[y]) : 1.0;
  }
  div = block_sum(div, sd);
  bad = block_sum(bad, sb);
  if (threadIdx.x == 0) {
    s->divisor = div;
    s->loss_sum = 0.0;
    s->bad = bad;
    s->alpha = !mean ? 1.0f : div == 0.0 ? 0.0f : static_cast<float>(1.0 / div);
    s->zero = 0.0f;
    s->one = 1.0f;
  }
}

/// dst[r, c] = float(src[r, c]) for rows × cols (row strides ld_src, ld_dst).
template <class S>
__global__ void __launch_bounds__(kThreads)
    widen_kernel(const S* src, long long ld_src, long long rows, long long cols, float* dst, long long ld_dst) {
  const long long n = rows * cols;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long r = i / cols, c = i % cols;
    dst[r * ld_dst + c] = to_f32(src[r * ld_src + c]);
  }
}

/// dst[r, c] = src[r, c] rounded once to S.
template <class S>
__global__ void __launch_bounds__(kThreads)
    narrow_kernel(const float* src, long long ld_src, long long rows, long long cols, S* dst, long long ld_dst) {
  const long long n = rows * cols;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long r = i / cols, c = i % cols;
    dst[r * ld_dst + c] = from_f32<S>(src[r * ld_src + c]);
  }
}

/// z[r, v] = bias[v] for the chunk's rows (the logits GEMM then adds H·Wᵀ with beta = 1).
template <class S>
__global__ void __launch_bounds__(kThreads) broadcast_bias_kernel(const S* bias, long long rows, long long V, float* z) {
  const long long n = rows * V;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x)
    z[i] = to_f32(bias[i % V]);
}

/// One block: s->loss_sum += Σ row_loss[0..rows) (fixed order, double).
__global__ void __launch_bounds__(kThreads) row_loss_sum_kernel(const float* row_loss, long long rows, Scalars* s) {
  FUSEDLOSS_SHARED(double[kWarpSize], sd);
  double acc = 0.0;
  for (long long i = threadIdx.x; i < rows; i += blockDim.x) acc += static_cast<double>(row_loss[i]);
  acc = block_sum(acc, sd);
  if (threadIdx.x == 0) s->loss_sum += acc;
}

/// acc[v] (+)= Σ_r g[r, v] over the chunk's rows in order (one thread per column, coalesced along V).
__global__ void __launch_bounds__(kThreads)
    bias_colsum_kernel(const float* g, long long rows, long long V, double* acc, bool first) {
  const long long v = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (v >= V) return;
  double s = first ? 0.0 : acc[v];
  for (long long r = 0; r < rows; ++r) s += static_cast<double>(g[r * V + v]);
  acc[v] = s;
}

/// out[i] = round(old + acc[i]) (accumulate) or round(acc[i]); acc is not read when `none` (no rows ran).
template <class S>
__global__ void __launch_bounds__(kThreads)
    finish_weight_kernel(const float* acc, long long n, S* out, bool accumulate, bool none) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const float g = none ? 0.0f : acc[i];
    out[i] = from_f32<S>(accumulate ? to_f32(out[i]) + g : g);
  }
}

/// grad_bias[v] = round(old + float(alpha · acc[v])) (accumulate) or round(float(alpha · acc[v])).
template <class S>
__global__ void __launch_bounds__(kThreads)
    finish_bias_kernel(const double* acc, long long V, S* out, bool accumulate, bool none, const Scalars* s) {
  const long long v = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (v >= V) return;
  const float g = none ? 0.0f : static_cast<float>(static_cast<double>(s->alpha) * acc[v]);
  out[v] = from_f32<S>(accumulate ? to_f32(out[v]) + g : g);
}

/// The reduced loss (sum, or mean = sum / divisor, NaN when that is 0) and the bad-label count.
__global__ void finish_loss_kernel(const Scalars* s, bool mean, float* loss, long long* error_count) {
  if (threadIdx.x != 0) return;
  if (loss != nullptr) {
    const double v = !mean ? s->loss_sum : s->divisor == 0.0 ? __longlong_as_double(0x7ff8000000000000LL)
                                                              : s->loss_sum / s->divisor;
    *loss = static_cast<float>(v);
  }
  if (error_count != nullptr) *error_count = s->bad;
}

}  // namespace lce
}  // namespace cuda
}  // namespace fusedloss
