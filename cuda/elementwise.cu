/*
fusedloss CUDA path — the elementwise losses (mse, mae, rmse, msle, huber, smooth_l1,
pseudo_huber, log_cosh, hinge, squared_hinge, bce, bce_with_logits), fused loss + gradient.

The kernels live in include/fusedloss/cuda/elementwise_kernels.cuh, the deterministic partial
combine in include/fusedloss/cuda/deterministic_reduce.cuh; this file turns a runtime problem
(dtype, loss, options) into one template instantiation and enqueues it.

The algorithm
-------------
An elementwise loss with a scalar reduction is  L = c · Σ_i w_i·l(x_i, y_i)  (c = 1/n for mean,
1 for sum), and its gradient  ∂L/∂x_i = c · w_i · l'(x_i, y_i) · grad_scale  needs nothing but
the element itself and the constant c, which is known before the first element is read. So ONE
pass does everything: each element is read once (x, y, and w when given), its loss is added to
a float32 register accumulator, and its gradient is written right away, rounded once to the
input dtype. An unfused implementation (forward kernel → per-element loss tensor → reduction →
backward kernel re-reading x and y) moves 2-3× the bytes.

  main kernel, grid = min(#tiles, occupancy × #SMs), 256 threads, grid-stride over tiles:
    for each tile t of 4096 elements owned by this block:
      each thread: 16 elements as 16-byte vectors (4 × float4 for fp32, 2 × 8-wide for fp16/bf16)
        load x, y (, w) → float32 → ElementwiseOp<L>::eval<float> (the one shared definition)
        → acc += w·l (fixed order), grad[i] = w·l'·scale (rounded once), loss[i] = w·l (none)
      block: warp butterfly → warp sums in warp order → partial[t]   (and bad-value count[t])
  combine kernel, 1 block of 512 threads:
      thread j sums partial[j], partial[j+512], ... in double; fixed block tree; thread 0 writes
      loss = Σ (sum) or Σ/n (mean; NaN for n == 0) and *error_count.

Determinism: the partials are per TILE, not per block, and a tile's element → thread mapping,
its per-thread order and its shuffle tree are compile-time constants. The grid only decides
which block processes which tile, so the loss is bitwise identical run to run and across grid
sizes, SM counts and occupancy (same inputs → same bits on any GPU of the architecture; also for
aligned vs misaligned pointers, since both paths share one mapping and one arithmetic code
path). No float atomics, no atomics at all: every workspace slot is written before it is read,
so the workspace needs no memset.

Memory traffic per element (b = bytes of the dtype; the partials add 4-12 bytes per 4096 elements):
  mean/sum + grad:   read 2b (3b with w), write b            → the floor for a fused call
  none + grad:       read 2b (3b), write b + 4 (float32 loss)
  loss only:         read 2b (3b)
  rmse + grad:       pass 1 reads 2b (3b), pass 2 reads 2b (3b) and writes b       (see below)
Vector loads/stores are 16 bytes whenever every pointer is 16-byte aligned (checked at run
time); otherwise, and for the last partial tile, a scalar path with the same mapping and bounds
checks runs. All indices are 64-bit.

rmse: L = sqrt(Σ w r² / n) and ∂_i = w_i·r_i/(n·L) — the gradient needs the total, so it cannot
be written in the first pass. Options considered:
  (a) two passes: pass 1 reduces Σ w r² (read-only), a one-thread finish computes L and the
      factor grad_scale/(2nL) into the workspace, pass 2 re-reads x, y (, w) and writes the
      gradient reading the factor from device memory (no host sync). Traffic 5b (7b with w).
  (b) pass 1 also stores the unscaled w·2r in the gradient buffer, pass 2 rescales it in place:
      5b as well without weights (6b instead of 7b with), but the gradient would be rounded
      twice — against the "rounded once" rule, and visibly so for fp16/bf16.
  (c) one cooperative kernel with a grid-wide barrier: saves a launch, but requires all blocks
      co-resident and a cooperative launch; the partial tree would still be the same.
We use (a): correct rounding, graph-capturable, and for n·(2-3)b below the L2 size (50 MB on
H100) pass 2 reads from L2, so it costs little more than mse. The factor 0 (L == 0 or L = inf)
writes gradient 0, exactly like the CPU path.

Bad data: bce with p outside [0, 1] or NaN gives that element loss NaN (so a scalar reduction is
NaN), gradient 0, and is counted per tile; the combine writes the total to *error_count.

Compile-time specialisation (one kernel per loss × dtype × weights on/off × gradient on/off ×
{scalar reduction, none} × per-column pos_weight on/off for bce_with_logits, + rmse's pass 2):
features that are off are absent from the hot loop, not branched around.

No host synchronisation, no allocation; everything is enqueued on the caller's stream, so the
call can be captured in a CUDA graph. The only host-side CUDA queries are cudaGetDevice and, once
per kernel and device, the occupancy calculator (cached).
*/
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "fusedloss/cuda/device_common.cuh"
#include "fusedloss/cuda/elementwise_kernels.cuh"
#include "fusedloss/detail/elementwise_ops.hpp"
#include "src/backend.hpp"

namespace fusedloss {
namespace detail {
namespace {

namespace ew = ::fusedloss::cuda::elementwise;

template <class F>
cudaError_t with_bool(bool b, F&& f) {
  return b ? f(std::true_type{}) : f(std::false_type{});
}

template <class Op, class S, bool kW, bool kGrad, ew::Mode kMode>
cudaError_t run_mode(const ElementwiseProblem& p, const LossOutputs& out, void* ws, cudaStream_t stream) {
  if constexpr (std::is_same<Op, ElementwiseOp<Loss::BCEWithLogits>>::value) {
    if (p.params.pos_weight_per_column != nullptr && p.params.columns > 0)
      return ew::enqueue<Op, S, kW, kGrad, kMode, true>(p, out, ws, stream);
  }
  return ew::enqueue<Op, S, kW, kGrad, kMode, false>(p, out, ws, stream);
}

template <class Op, class S>
cudaError_t run_op(const ElementwiseProblem& p, const LossOutputs& out, void* ws, cudaStream_t stream) {
  if constexpr (std::is_same<Op, ElementwiseOp<Loss::RMSE>>::value) {
    return with_bool(p.weight != nullptr, [&](auto w) {
      return ew::enqueue_rmse<S, decltype(w)::value>(p, out, ws, stream);
    });
  } else {
    return with_bool(p.weight != nullptr, [&](auto w) {
      return with_bool(out.grad != nullptr, [&](auto g) {
        constexpr bool kW = decltype(w)::value;
        constexpr bool kGrad = decltype(g)::value;
        if (p.reduction == Reduction::None) return run_mode<Op, S, kW, kGrad, ew::Mode::PerElement>(p, out, ws, stream);
        return run_mode<Op, S, kW, kGrad, ew::Mode::Reduce>(p, out, ws, stream);
      });
    });
  }
}

template <class S>
cudaError_t run_dtype(const ElementwiseProblem& p, const LossOutputs& out, void* ws, cudaStream_t stream,
                      bool* known_loss) {
  cudaError_t result = cudaSuccess;
  *known_loss = visit_elementwise_op(p.loss, [&](auto op) { result = run_op<decltype(op), S>(p, out, ws, stream); });
  return result;
}

}  // namespace

std::size_t cuda_workspace_size(const ElementwiseProblem& problem) noexcept {
  return ew::workspace_layout(problem).bytes();
}

Status cuda_compute(const ElementwiseProblem& problem, const LossOutputs& outputs, void* d_workspace,
                    std::size_t workspace_bytes, CUstream_st* stream) noexcept {
  // validate() has already checked all of this; the checks are cheap insurance for direct callers.
  if (problem.n < 0) return Status::InvalidArgument;
  const bool loss_values = problem.reduction != Reduction::None || problem.n > 0;
  if (loss_values && outputs.loss == nullptr) return Status::InvalidArgument;  // none with n == 0 may pass null
  if (problem.n > 0 && (problem.input == nullptr || problem.target == nullptr)) return Status::InvalidArgument;
  if (problem.reduction == Reduction::Default) return Status::InvalidArgument;
  if (problem.loss == Loss::RMSE && problem.reduction != Reduction::Mean) return Status::InvalidArgument;
  const std::size_t needed = cuda_workspace_size(problem);
  if (workspace_bytes < needed || (needed > 0 && d_workspace == nullptr)) return Status::WorkspaceTooSmall;

  cudaError_t e = cudaSuccess;
  bool known_loss = false;
  switch (problem.dtype) {
    case DType::Float32: e = run_dtype<float>(problem, outputs, d_workspace, stream, &known_loss); break;
    case DType::Float16: e = run_dtype<__half>(problem, outputs, d_workspace, stream, &known_loss); break;
    case DType::BFloat16: e = run_dtype<__nv_bfloat16>(problem, outputs, d_workspace, stream, &known_loss); break;
    default: return Status::InvalidArgument;
  }
  if (!known_loss) return Status::InvalidArgument;
  return e == cudaSuccess ? Status::Success : Status::CudaError;
}

}  // namespace detail
}  // namespace fusedloss
