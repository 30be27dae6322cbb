// fusedloss — the fused elementwise loss kernels (header-only, CUDA-only).
//
// cuda/elementwise.cu explains the algorithm and does the runtime → template dispatch; this
// header holds the kernel template and its host-side launch helpers so that tests (and the
// benchmark) can instantiate one configuration directly, e.g. with a forced grid size to show
// that the result does not depend on it.
//
// Work decomposition (the reduction tree depends only on n):
//   * tile t = elements [t·kTileElements, (t+1)·kTileElements); one block processes a whole tile,
//     blocks grid-stride over tiles, the grid is sized from occupancy × SM count;
//   * inside a tile, thread `tid` of step `j` owns the V = 16/sizeof(S) consecutive elements at
//     offset (j·kBlockThreads + tid)·V, so one warp-wide step is a run of fully coalesced 16-byte
//     accesses; the vector path (16-byte loads/stores) and the scalar path (misaligned pointers,
//     the last partial tile) use the SAME element → thread mapping and the SAME arithmetic code,
//     so aligned and misaligned calls give bitwise identical results;
//   * each thread accumulates its kElemsPerThread values in float32 in a fixed order, the block
//     reduces them with a fixed shuffle tree, thread 0 stores the tile's partial in workspace slot
//     t (deterministic_reduce.cuh), and a one-block combine kernel finishes the loss.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "fusedloss/api.hpp"
#include "fusedloss/cuda/deterministic_reduce.cuh"
#include "fusedloss/cuda/device_common.cuh"
#include "fusedloss/cuda/vector_io.cuh"
#include "fusedloss/detail/elementwise_ops.hpp"

namespace fusedloss {
namespace cuda {
namespace elementwise {

/// Threads per block of the main kernel (a constant: it is part of the reduction tree).
constexpr int kBlockThreads = 256;
/// Elements per tile = per partial (a constant: it is part of the reduction tree).
constexpr int kTileElements = 4096;
/// Elements each thread handles per tile (16: fp32 as 4 × float4, fp16/bf16 as 2 × 8-wide).
constexpr int kElemsPerThread = kTileElements / kBlockThreads;
static_assert(kElemsPerThread % 8 == 0, "a thread's share of a tile must be whole 16-byte vectors");

/// What the main kernel produces.
enum class Mode : int {
  Reduce = 0,      ///< scalar reductions (mean/sum; rmse pass 1): one float partial per tile
  PerElement = 1,  ///< reduction none: w·l per element (float32)
  GradOnly = 2,    ///< rmse pass 2: gradients only, the scale read from device memory
};

/// Number of tiles (= partial slots) for n elements.
__host__ __device__ constexpr std::int64_t tile_count(std::int64_t n) {
  return n <= 0 ? 0 : (n + kTileElements - 1) / kTileElements;
}

/// Kernel arguments (passed by value).
template <class S>
struct Args {
  const S* x = nullptr;   ///< input (may alias grad)
  const S* y = nullptr;   ///< target
  const S* w = nullptr;   ///< per-element weights (nullptr when off)
  S* grad = nullptr;      ///< gradient out (nullptr when off)
  float* loss = nullptr;  ///< Mode::PerElement: w·l per element
  PartialsView partials;  ///< Mode::Reduce: value slots; BCE: count slots
  std::int64_t n = 0;
  std::int64_t tiles = 0;
  float scale = 1.0f;                    ///< gradient factor (grad_scale, /n for mean)
  const float* device_scale = nullptr;   ///< Mode::GradOnly: the factor, written by the combine
  detail::ElementwiseOpParams<float> params{};
  const float* pos_col = nullptr;  ///< bce_with_logits per-column pos_weight (nullptr when off)
  std::int64_t columns = 0;
  bool vector_ok = false;  ///< every pointer used is 16-byte aligned
};

// ---- the kernel ---------------------------------------------------------------------------

template <class Op, class S, bool kW, bool kGrad, Mode kMode, bool kPosCol>
__global__ void __launch_bounds__(kBlockThreads) elementwise_kernel(const Args<S> a) {
  using IO = VecIO<S>;
  using Raw = typename IO::Raw;
  constexpr int V = 16 / static_cast<int>(sizeof(S));
  constexpr int kSteps = kElemsPerThread / V;
  constexpr bool kCount = Op::kHasInvalidInputs && kMode != Mode::GradOnly;
  constexpr bool kLoss = kMode != Mode::GradOnly;
  constexpr int kValueStreams = kMode == Mode::Reduce ? 1 : 0;
  constexpr bool kPartials = kMode == Mode::Reduce || kCount;
  static_assert(kMode != Mode::GradOnly || kGrad, "GradOnly writes gradients");
  static_assert(kElemsPerThread % V == 0, "whole vectors per thread");

  float scale = a.scale;
  int scale_exp = 0;  // GradOnly: the factor is scale·2^scale_exp (see Finish)
  if constexpr (kMode == Mode::GradOnly) {
    scale = a.device_scale[0];
    scale_exp = static_cast<int>(a.device_scale[1]);
  }
  const detail::ElementwiseOpParams<float> base_params = a.params;
  const std::int64_t n = a.n;

  for (std::int64_t tile = blockIdx.x; tile < a.tiles; tile += gridDim.x) {
    const std::int64_t tile_base = tile * kTileElements;
    const bool vec = a.vector_ok && tile_base + kTileElements <= n;

    // 1. Issue every load of this thread's share of the tile before any store, so all of them
    //    are in flight at once. Safe with grad == x: a thread reads exactly the elements it
    //    later writes, and no other thread touches them.
    //    The scalar path (misaligned pointers, the last tile) reads the same lanes element by
    //    element, +0.0 beyond n, so everything downstream is one code path. x is loaded
    //    coherently: it may alias the gradient.
    Raw px[kSteps], py[kSteps], pk_w[kSteps];
    int lims[kSteps];
#pragma unroll
    for (int j = 0; j < kSteps; ++j) {
      const std::int64_t i = tile_base + (j * kBlockThreads + static_cast<int>(threadIdx.x)) * V;
      int lim = V;
      if (!vec) {
        const std::int64_t left = n - i;
        lim = left <= 0 ? 0 : (left >= V ? V : static_cast<int>(left));
      }
      lims[j] = lim;
      px[j] = vec ? IO::template load<Load::Coherent>(a.x + i) : IO::load_prefix(a.x + i, lim);
      py[j] = vec ? IO::template load<Load::ReadOnly>(a.y + i) : IO::load_prefix(a.y + i, lim);
      if constexpr (kW)
        pk_w[j] = vec ? IO::template load<Load::ReadOnly>(a.w + i) : IO::load_prefix(a.w + i, lim);
    }

    // 2. Evaluate, accumulate (fixed order: step, then lane), store.
    std::int64_t tile_col = 0;
    if constexpr (kPosCol) tile_col = tile_base % a.columns;  // uniform: once per tile
    float acc = 0.0f;
    int bad = 0;
#pragma unroll
    for (int j = 0; j < kSteps; ++j) {
      const int off = (j * kBlockThreads + static_cast<int>(threadIdx.x)) * V;
      const std::int64_t i = tile_base + off;
      const int lim = lims[j];

      float pos[V];
      if constexpr (kPosCol) {
        // Column of element i; tile_col < columns and off < kTileElements, so 32-bit arithmetic
        // is exact whenever columns < 2^31 (always true in practice).
        std::int64_t c;
        if (a.columns <= 0x7fffffffLL) {
          c = static_cast<std::int64_t>(static_cast<unsigned>(tile_col + off) % static_cast<unsigned>(a.columns));
        } else {
          c = (tile_col + off) % a.columns;
        }
#pragma unroll
        for (int k = 0; k < V; ++k) {
          pos[k] = __ldg(a.pos_col + c);
          c = (c + 1 == a.columns) ? 0 : c + 1;
        }
      }

      float ls[V], gs[V];
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const float x = IO::get(px[j], k);
        const float y = IO::get(py[j], k);
        float w = 1.0f;
        if constexpr (kW) w = IO::get(pk_w[j], k);
        detail::ElementwiseOpParams<float> p = base_params;
        if constexpr (kPosCol) p.pos_weight = pos[k];
        float l, d;
        Op::eval(x, y, p, l, d);
        bool invalid = false;
        if constexpr (kCount) {
          if (!Op::valid(x)) {  // invalid data: loss NaN, gradient exactly 0 (also for w = inf), counted
            invalid = true;
            l = __int_as_float(0x7fc00000);
            d = 0.0f;
            bad += k < lim ? 1 : 0;
          }
        }
        if constexpr (kLoss) {
          const float wl = kW ? __fmul_rn(w, l) : l;
          ls[k] = wl;
          if constexpr (kMode == Mode::Reduce) acc = __fadd_rn(acc, k < lim ? wl : 0.0f);
        }
        if constexpr (kGrad) {
          const float wd = kW ? __fmul_rn(d, w) : d;
          float g = __fmul_rn(wd, scale);
          if constexpr (kMode == Mode::GradOnly) g = scale == 0.0f ? 0.0f : ldexpf(g, scale_exp);  // L == 0: 0
          if constexpr (kCount) g = invalid ? 0.0f : g;
          gs[k] = g;
        }
      }

      if (vec) {
        if constexpr (kGrad) IO::template store<Store::Plain>(a.grad + i, IO::pack(gs));
        if constexpr (kMode == Mode::PerElement) {
#pragma unroll
          for (int q = 0; q < V / 4; ++q)
            store_vector(reinterpret_cast<float4*>(a.loss + i) + q,
                         make_float4(ls[4 * q], ls[4 * q + 1], ls[4 * q + 2], ls[4 * q + 3]));
        }
      } else {
#pragma unroll
        for (int k = 0; k < V; ++k) {
          if (k < lim) {
            if constexpr (kGrad) a.grad[i + k] = from_f32<S>(gs[k]);
            if constexpr (kMode == Mode::PerElement) a.loss[i + k] = ls[k];
          }
        }
      }
    }

    if constexpr (kPartials) {
      FUSEDLOSS_SHARED(PartialScratch<kValueStreams>, scratch);
      float v[kValueStreams > 0 ? kValueStreams : 1] = {acc};
      long long count = bad;
      block_reduce_partial<kValueStreams, kCount>(v, count, scratch);
      store_partial<kValueStreams, kCount>(a.partials, tile, v, count);
    }
  }
}

// ---- finishing (runs in the combine kernel, thread 0) --------------------------------------

enum class FinishKind : int { None = 0, Sum = 1, Mean = 2, Rmse = 3 };

/// Writes the finished result from the combined totals: the scalar loss (sum, mean = Σ/n with
/// n == 0 → NaN, rmse = sqrt(Σ/n)), rmse's gradient factor grad_scale/(2·n·L) (0 when L == 0;
/// the kernels' derivative is 2r), and the invalid-data count.
struct Finish {
  FinishKind kind = FinishKind::None;
  float* loss = nullptr;                 ///< nullptr: no scalar loss (reduction none)
  std::int64_t* error_count = nullptr;   ///< nullptr: discarded
  float* rmse_scale = nullptr;           ///< rmse with a gradient: the pass-2 factor {m, e}, m·2^e
  std::int64_t n = 0;
  double grad_scale = 1.0;

  __device__ void operator()(const double* totals, std::int64_t count) const {
    if (error_count != nullptr) *error_count = count;
    const double nd = static_cast<double>(n);
    switch (kind) {
      case FinishKind::Sum: *loss = static_cast<float>(totals[0]); break;
      case FinishKind::Mean: *loss = static_cast<float>(totals[0] / nd); break;  // 0/0 = NaN for n == 0
      case FinishKind::Rmse: {
        const double L = sqrt(totals[0] / nd);
        *loss = static_cast<float>(L);
        if (rmse_scale != nullptr) {
          // grad_scale/(2nL) can exceed float's range (large grad_scale, tiny L) while w·2r·factor
          // does not: pass it as a float mantissa and a power of two, applied after the product.
          const double factor = L != 0.0 ? grad_scale / (2.0 * nd * L) : 0.0;
          int e = 0;
          const double m = isfinite(factor) ? frexp(factor, &e) : factor;  // NaN L: NaN gradients
          rmse_scale[0] = static_cast<float>(m);
          rmse_scale[1] = static_cast<float>(e);
        }
        break;
      }
      case FinishKind::None: break;
    }
  }
};

// ---- host side ----------------------------------------------------------------------------

/// The workspace of a (validated) problem: one float partial per tile for scalar reductions,
/// one int64 count per tile for bce, rmse's gradient factor. Nothing for n == 0.
inline PartialsLayout workspace_layout(const ElementwiseProblem& p) {
  PartialsLayout layout;
  if (p.n <= 0) return layout;
  const bool scalar = p.reduction != Reduction::None;
  const bool counts = p.loss == Loss::BCE;
  if (!scalar && !counts) return layout;
  layout.partials = tile_count(p.n);
  layout.value_streams = scalar ? 1 : 0;
  layout.counts = counts;
  layout.extra_bytes = p.loss == Loss::RMSE ? 2 * sizeof(float) : 0;
  return layout;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

/// Kernel arguments of a (validated) problem. `mode` decides which outputs are wired; the
/// gradient factor is grad_scale (sum, none) or grad_scale/n (mean), rounded once to float.
template <class S>
Args<S> make_args(const ElementwiseProblem& p, const LossOutputs& out, const PartialsView& view, Mode mode) {
  Args<S> a;
  a.x = static_cast<const S*>(p.input);
  a.y = static_cast<const S*>(p.target);
  a.w = static_cast<const S*>(p.weight);
  a.grad = static_cast<S*>(out.grad);
  a.loss = mode == Mode::PerElement ? out.loss : nullptr;
  a.partials = view;
  a.n = p.n;
  a.tiles = tile_count(p.n);
  const bool mean = p.reduction == Reduction::Mean || p.reduction == Reduction::BatchMean;
  a.scale = static_cast<float>(mean && p.n > 0 ? p.grad_scale / static_cast<double>(p.n) : p.grad_scale);
  a.device_scale = mode == Mode::GradOnly ? static_cast<const float*>(view.extra) : nullptr;
  a.params.delta = static_cast<float>(p.params.delta);
  a.params.beta = static_cast<float>(p.params.beta);
  a.params.pos_weight = static_cast<float>(p.params.pos_weight);
  if (p.loss == Loss::BCEWithLogits && p.params.pos_weight_per_column != nullptr && p.params.columns > 0) {
    a.pos_col = p.params.pos_weight_per_column;
    a.columns = p.params.columns;
  }
  a.vector_ok = aligned16(a.x) && aligned16(a.y) && (a.w == nullptr || aligned16(a.w)) &&
                (a.grad == nullptr || aligned16(a.grad)) && (a.loss == nullptr || aligned16(a.loss));
  return a;
}

/// Blocks that fit on the current device at once for `kernel` (occupancy × SM count), cached
/// per device by the caller's static `cache`.
template <class Kernel>
inline cudaError_t resident_blocks(Kernel kernel, std::atomic<int> (&cache)[16], int* blocks) {
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return e;
  if (device >= 0 && device < 16) {
    const int cached = cache[device].load(std::memory_order_relaxed);
    if (cached > 0) {
      *blocks = cached;
      return cudaSuccess;
    }
  }
  int sms = 0, per_sm = 0;
  e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e != cudaSuccess) return e;
  e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kBlockThreads, 0);
  if (e != cudaSuccess) return e;
  const int total = (sms > 0 ? sms : 1) * (per_sm > 0 ? per_sm : 1);
  if (device >= 0 && device < 16) cache[device].store(total, std::memory_order_relaxed);
  *blocks = total;
  return cudaSuccess;
}

/// Enqueues the main kernel for `a` (nothing when a.n == 0). The grid is min(tiles, blocks
/// resident on the device), or min(tiles, grid_override) when grid_override > 0 — the result is
/// the same bits either way.
template <class Op, class S, bool kW, bool kGrad, Mode kMode, bool kPosCol>
cudaError_t launch_main(const Args<S>& a, cudaStream_t stream, int grid_override = 0) {
  if (a.tiles <= 0) return cudaSuccess;
  auto kernel = elementwise_kernel<Op, S, kW, kGrad, kMode, kPosCol>;
  int grid = grid_override;
  if (grid <= 0) {
    static std::atomic<int> cache[16];
    const cudaError_t e = resident_blocks(kernel, cache, &grid);
    if (e != cudaSuccess) return e;
  }
  if (static_cast<std::int64_t>(grid) > a.tiles) grid = static_cast<int>(a.tiles);
  if (grid < 1) grid = 1;
  ::fusedloss::cuda::triple_chevron(grid, kBlockThreads, 0, stream).doit(kernel, a);
  return cudaGetLastError();
}

/// Enqueues one whole non-rmse call: the main kernel, then (when a scalar loss or an error count
/// must be written) the combine. Mode::Reduce or Mode::PerElement.
template <class Op, class S, bool kW, bool kGrad, Mode kMode, bool kPosCol>
cudaError_t enqueue(const ElementwiseProblem& p, const LossOutputs& out, void* workspace, cudaStream_t stream,
                    int grid_override = 0) {
  static_assert(kMode != Mode::GradOnly, "rmse has its own sequence");
  constexpr bool kCount = Op::kHasInvalidInputs;
  const PartialsView view = make_partials_view(workspace, workspace_layout(p));
  const Args<S> a = make_args<S>(p, out, view, kMode);
  cudaError_t e = launch_main<Op, S, kW, kGrad, kMode, kPosCol>(a, stream, grid_override);
  if (e != cudaSuccess) return e;
  Finish f;
  f.n = p.n;
  f.error_count = out.error_count;
  if constexpr (kMode == Mode::Reduce) {
    f.kind = p.reduction == Reduction::Sum ? FinishKind::Sum : FinishKind::Mean;
    f.loss = out.loss;
  } else {
    if (out.error_count == nullptr) return cudaSuccess;  // nothing left to write
  }
  PartialsView combine_view = view;
  if (p.n <= 0) combine_view.partials = 0;  // empty problem: only the result is written
  if constexpr (kCount) {
    if (combine_view.partials > 0) return launch_combine<kMode == Mode::Reduce ? 1 : 0, true>(combine_view, f, stream);
  }
  return launch_combine<kMode == Mode::Reduce ? 1 : 0, false>(combine_view, f, stream);
}

/// Enqueues rmse: pass 1 reduces Σ w·r² (read-only), the combine writes L and the gradient
/// factor to the workspace, pass 2 (gradient requested, n > 0) writes the gradients.
template <class S, bool kW>
cudaError_t enqueue_rmse(const ElementwiseProblem& p, const LossOutputs& out, void* workspace, cudaStream_t stream,
                         int grid_override = 0) {
  using Op = detail::ElementwiseOp<Loss::MSE>;  // same algebra as rmse; shares mse's kernels
  const PartialsView view = make_partials_view(workspace, workspace_layout(p));
  const Args<S> a1 = make_args<S>(p, out, view, Mode::Reduce);
  cudaError_t e = launch_main<Op, S, kW, false, Mode::Reduce, false>(a1, stream, grid_override);
  if (e != cudaSuccess) return e;
  Finish f;
  f.kind = FinishKind::Rmse;
  f.loss = out.loss;
  f.error_count = out.error_count;
  f.n = p.n;
  f.grad_scale = p.grad_scale;
  const bool grad_pass = out.grad != nullptr && p.n > 0;
  f.rmse_scale = grad_pass ? static_cast<float*>(view.extra) : nullptr;
  PartialsView combine_view = view;
  if (p.n <= 0) combine_view.partials = 0;
  e = launch_combine<1, false>(combine_view, f, stream);
  if (e != cudaSuccess || !grad_pass) return e;
  const Args<S> a2 = make_args<S>(p, out, view, Mode::GradOnly);
  return launch_main<Op, S, kW, true, Mode::GradOnly, false>(a2, stream, grid_override);
}

}  // namespace elementwise
}  // namespace cuda
}  // namespace fusedloss
