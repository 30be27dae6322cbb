/*
fusedloss CUDA path — linear_cross_entropy: logits = hidden · weightᵀ + bias, then sparse cross_entropy,
chunk by chunk, never holding the [N, V] logits. The CPU twin is cpu/linear_cross_entropy.cpp; both use the
chunking and workspace layout of src/linear_ce_plan.hpp.

  0. label_stats_kernel: mean divisor Σ w[y_n] and bad-label count of the whole batch → Scalars (workspace),
     with alpha = 1/divisor (mean) or 1. fp16/bf16: weight widened once to fp32.
  per chunk of c rows, in order:
  1. Z = H_c·Wᵀ (+ b)        cublasSgemm into the fp32 workspace (bias broadcast first, beta = 1)   [c, V]
  2. Z ← ∂ℓ/∂Z in place      the row-wise cross_entropy (cuda/rowwise.cu), reduction none, grad_scale:
                             one read + one write of the chunk's logits
  3. grad_hidden_c = α·G·W   cublasSgemm (α = 1/divisor on the device: no host sync)              [c, H]
  4. grad_weight += α·Gᵀ·H_c  cublasSgemm, beta 0 for the first chunk then 1: fp32 accumulator     [V, H]
  5. grad_bias   += Σ_rows G  bias_colsum_kernel, fp64 accumulator                                 [V]
  6. the sums rounded once to the dtype (into the old value when accumulating); loss = Σ / divisor.
Traffic per chunk: the logits are written by 1, read + written by 2, read by 3, 4, 5 (5 reads of c·V·4
bytes); W is read by 1 and 3 (V·H·4 each), the accumulator read + written by 4. The [N, V] logits are never
formed: the workspace is the caller's memory budget.

cuBLAS and determinism. cuBLAS documents that its routines give bit-wise identical results run to run on
GPUs of the same architecture and SM count for one toolkit version, except (a) routines using atomics
(cublasSetAtomicsMode) and (b) when several streams share a handle without a per-stream workspace
(cublasSetWorkspace / CUBLAS_WORKSPACE_CONFIG), since the workspace then decides the algorithm. What we pin:
CUBLAS_ATOMICS_NOT_ALLOWED, CUBLAS_PEDANTIC_MATH (fp32 compute, no TF32 even under NVIDIA_TF32_OVERRIDE,
no reduced-precision split-K), the call's stream, and a workspace of fixed size (kLinearCeBlasWorkspace,
4 MiB) carved from the caller's workspace with cublasSetWorkspace on every call — so cuBLAS never allocates
and its heuristic sees the same inputs each time. The chunk order, the GEMM shapes and the kernels' reduction
orders are fixed, so a call is bitwise reproducible run to run on one GPU model and toolkit. Results may
change with the toolkit version or GPU model (cuBLAS's algorithm choice), as they would for any cuBLAS user.

Handles: one cuBLAS handle per host thread and device, created on the first call (cublasCreate allocates
cuBLAS's own small state then — make that first call outside stream capture); later calls allocate nothing.
*/
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "fusedloss/cuda/device_common.cuh"
#include "fusedloss/cuda/linear_ce_kernels.cuh"
#include "src/backend.hpp"

namespace fusedloss {
namespace detail {
namespace {

namespace lk = ::fusedloss::cuda::lce;

/// This thread's handle for the current device (created once; see the header comment).
cublasHandle_t thread_handle() {
  struct Cache {
    int device = -1;
    cublasHandle_t handle = nullptr;
    ~Cache() {
      if (handle != nullptr) cublasDestroy(handle);
    }
  };
  thread_local Cache cache;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return nullptr;
  if (cache.handle != nullptr && cache.device == device) return cache.handle;
  if (cache.handle != nullptr) cublasDestroy(cache.handle);
  cache.handle = nullptr;
  if (cublasCreate(&cache.handle) != CUBLAS_STATUS_SUCCESS) return nullptr;
  cache.device = device;
  return cache.handle;
}

#define FUSEDLOSS_CUBLAS_TRY(expr)                                          \
  do {                                                                      \
    if ((expr) != CUBLAS_STATUS_SUCCESS) return ::fusedloss::Status::CudaError; \
  } while (0)

template <class T>
T* region(void* workspace, std::size_t offset) {
  return offset == kLinearCeAbsent ? nullptr
                                   : reinterpret_cast<T*>(static_cast<unsigned char*>(workspace) + offset);
}

unsigned grid_for(long long n) {
  const long long blocks = (n + lk::kThreads - 1) / lk::kThreads;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks > 65535 ? 65535 : blocks);
}

template <class S>
Status run(const LinearCrossEntropyProblem& p, const LinearCrossEntropyOutputs& out, const LinearCeLayout& l,
           void* ws, cudaStream_t stream) {
  using ::fusedloss::cuda::triple_chevron;
  constexpr bool kF32 = std::is_same<S, float>::value;
  const long long N = p.rows, H = p.hidden_size, V = p.classes, ld_h = p.hidden_stride;
  const S* hidden = static_cast<const S*>(p.hidden);
  const S* bias = static_cast<const S*>(p.bias);
  const bool want_grad = out.grad_hidden != nullptr || out.grad_weight != nullptr || out.grad_bias != nullptr;
  const bool mean = p.reduction == Reduction::Mean;
  const dim3 T(lk::kThreads);

  cublasHandle_t h = thread_handle();
  if (h == nullptr) return Status::CudaError;
  FUSEDLOSS_CUBLAS_TRY(cublasSetStream(h, stream));
  FUSEDLOSS_CUBLAS_TRY(cublasSetWorkspace(h, region<void>(ws, l.blas), kLinearCeBlasWorkspace));
  FUSEDLOSS_CUBLAS_TRY(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH));
  FUSEDLOSS_CUBLAS_TRY(cublasSetAtomicsMode(h, CUBLAS_ATOMICS_NOT_ALLOWED));
  FUSEDLOSS_CUBLAS_TRY(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_DEVICE));

  float* logits = region<float>(ws, l.logits);
  float* row_loss = region<float>(ws, l.row_loss);
  double* bias_acc = region<double>(ws, l.bias_acc);
  lk::Scalars* sc = region<lk::Scalars>(ws, l.scalars);
  const float* d_alpha = &sc->alpha;
  const float* d_zero = &sc->zero;
  const float* d_one = &sc->one;

  // 0. The batch's label statistics; fp32 weight.
  triple_chevron(1, T, 0, stream)
      .doit(lk::label_stats_kernel, p.labels, p.label_dtype == DType::Int64, N, V, p.params.ignore_index,
            p.class_weight, mean, sc);
  FUSEDLOSS_CUDA_CHECK_LAUNCH();
  const float* W = nullptr;
  if constexpr (kF32) {
    W = static_cast<const float*>(p.weight);
  } else {
    float* w32 = region<float>(ws, l.weight32);
    triple_chevron(grid_for(V * H), T, 0, stream)
        .doit(lk::widen_kernel<S>, static_cast<const S*>(p.weight), H, V, H, w32, H);
    FUSEDLOSS_CUDA_CHECK_LAUNCH();
    W = w32;
  }
  float* gw_acc = out.grad_weight == nullptr ? nullptr
                  : l.grad_weight32 != kLinearCeAbsent ? region<float>(ws, l.grad_weight32)
                                                       : static_cast<float*>(out.grad_weight);
  const int iV = static_cast<int>(V), iH = static_cast<int>(H);

  for (long long r0 = 0; r0 < N; r0 += l.chunk_rows) {
    const long long c = N - r0 < l.chunk_rows ? N - r0 : l.chunk_rows;
    const int ic = static_cast<int>(c);
    const bool first = r0 == 0;
    const float* hc = nullptr;
    int ld_hc = 0;
    if constexpr (kF32) {
      hc = hidden + r0 * ld_h;
      ld_hc = static_cast<int>(ld_h);
    } else {
      float* h32 = region<float>(ws, l.hidden32);
      triple_chevron(grid_for(c * H), T, 0, stream).doit(lk::widen_kernel<S>, hidden + r0 * ld_h, ld_h, c, H, h32, H);
      FUSEDLOSS_CUDA_CHECK_LAUNCH();
      hc = h32;
      ld_hc = iH;
    }
    // 1. Z = H_c·Wᵀ (+ b). Row-major Z[c, V] is column-major Zᵀ[V, c] = W·H_cᵀ.
    const float* z_beta = d_zero;
    if (bias != nullptr) {
      triple_chevron(grid_for(c * V), T, 0, stream).doit(lk::broadcast_bias_kernel<S>, bias, c, V, logits);
      FUSEDLOSS_CUDA_CHECK_LAUNCH();
      z_beta = d_one;
    }
    const float* d_unit = d_one;
    FUSEDLOSS_CUBLAS_TRY(
        cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, iV, ic, iH, d_unit, W, iH, hc, ld_hc, z_beta, logits, iV));

    // 2. loss + ∂ℓ/∂Z in place: the one cross_entropy kernel family.
    const void* labels_c = static_cast<const unsigned char*>(p.labels) + r0 * static_cast<long long>(dtype_size(p.label_dtype));
    const RowwiseProblem ce = linear_ce_chunk_problem(p, c, logits, labels_c);
    LossOutputs ce_out;
    ce_out.loss = p.reduction == Reduction::None ? out.loss + r0 : row_loss;
    ce_out.grad = want_grad ? logits : nullptr;
    ce_out.lse = out.lse != nullptr ? out.lse + r0 : nullptr;
    const Status s = cuda_compute(ce, ce_out, region<void>(ws, l.ce), cuda_workspace_size(ce), stream);
    if (s != Status::Success) return s;
    if (p.reduction != Reduction::None) {
      triple_chevron(1, T, 0, stream).doit(lk::row_loss_sum_kernel, static_cast<const float*>(row_loss), c, sc);
      FUSEDLOSS_CUDA_CHECK_LAUNCH();
    }
    if (!want_grad) continue;

    // 3. grad_hidden_c = α·G·W: column-major GHᵀ[H, c] = Wᵀ[H, V]·Gᵀ[V, c].
    if (out.grad_hidden != nullptr) {
      S* gh = static_cast<S*>(out.grad_hidden) + r0 * ld_h;
      if constexpr (kF32) {
        FUSEDLOSS_CUBLAS_TRY(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, iH, ic, iV, d_alpha, W, iH, logits, iV, d_zero,
                                         gh, static_cast<int>(ld_h)));
      } else {
        float* gh32 = region<float>(ws, l.grad_hidden32);
        FUSEDLOSS_CUBLAS_TRY(
            cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, iH, ic, iV, d_alpha, W, iH, logits, iV, d_zero, gh32, iH));
        triple_chevron(grid_for(c * H), T, 0, stream)
            .doit(lk::narrow_kernel<S>, static_cast<const float*>(gh32), H, c, H, gh, ld_h);
        FUSEDLOSS_CUDA_CHECK_LAUNCH();
      }
    }
    // 4. grad_weight += α·Gᵀ·H_c: column-major GWᵀ[H, V] = H_cᵀ[H, c]·G[c, V].
    if (gw_acc != nullptr)
      FUSEDLOSS_CUBLAS_TRY(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, iH, iV, ic, d_alpha, hc, ld_hc, logits, iV,
                                       first ? d_zero : d_one, gw_acc, iH));
    // 5. grad_bias += Σ_rows G (α applied when rounding).
    if (bias_acc != nullptr) {
      triple_chevron(grid_for(V), T, 0, stream)
          .doit(lk::bias_colsum_kernel, static_cast<const float*>(logits), c, V, bias_acc, first);
      FUSEDLOSS_CUDA_CHECK_LAUNCH();
    }
  }

  // 6. Round the sums once; the reduced loss and the bad-label count.
  const bool none_ran = N == 0;
  if (out.grad_weight != nullptr) {
    if (gw_acc != out.grad_weight) {
      triple_chevron(grid_for(V * H), T, 0, stream)
          .doit(lk::finish_weight_kernel<S>, static_cast<const float*>(gw_acc), V * H, static_cast<S*>(out.grad_weight),
                out.accumulate, none_ran);
      FUSEDLOSS_CUDA_CHECK_LAUNCH();
    } else if (none_ran) {
      FUSEDLOSS_CUDA_TRY(cudaMemsetAsync(out.grad_weight, 0, sizeof(float) * static_cast<std::size_t>(V * H), stream));
    }
  }
  if (out.grad_bias != nullptr) {
    triple_chevron(grid_for(V), T, 0, stream)
        .doit(lk::finish_bias_kernel<S>, static_cast<const double*>(bias_acc), V, static_cast<S*>(out.grad_bias),
              out.accumulate, none_ran, static_cast<const lk::Scalars*>(sc));
    FUSEDLOSS_CUDA_CHECK_LAUNCH();
  }
  triple_chevron(1, 32, 0, stream)
      .doit(lk::finish_loss_kernel, static_cast<const lk::Scalars*>(sc), mean,
            p.reduction == Reduction::None ? static_cast<float*>(nullptr) : out.loss,
            reinterpret_cast<long long*>(out.error_count));
  FUSEDLOSS_CUDA_CHECK_LAUNCH();
  return Status::Success;
}

}  // namespace

Status cuda_compute(const LinearCrossEntropyProblem& problem, const LinearCrossEntropyOutputs& outputs,
                    const LinearCeLayout& layout, void* d_workspace, CUstream_st* stream) noexcept {
  switch (problem.dtype) {
    case DType::Float32: return run<float>(problem, outputs, layout, d_workspace, stream);
    case DType::Float16: return run<__half>(problem, outputs, layout, d_workspace, stream);
    case DType::BFloat16: return run<__nv_bfloat16>(problem, outputs, layout, d_workspace, stream);
    default: return Status::InvalidArgument;
  }
}

}  // namespace detail
}  // namespace fusedloss
