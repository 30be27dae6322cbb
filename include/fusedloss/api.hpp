// fusedloss — the public entry points.
//
// One call computes a loss AND the gradient of that (reduced) loss with respect to the
// prediction / logits, in one fused pass where the algorithm allows it.
//
//   fusedloss::ElementwiseProblem p;           // or RowwiseProblem for [N, C] losses
//   p.loss = fusedloss::Loss::Huber; p.dtype = fusedloss::DType::BFloat16;
//   p.n = n; p.input = d_pred; p.target = d_target; p.reduction = fusedloss::Reduction::Mean;
//   fusedloss::LossOutputs out; out.loss = d_loss; out.grad = d_pred;   // in-place gradient
//   fusedloss::ExecutionConfig cfg; cfg.stream = stream;
//   size_t bytes = 0; fusedloss::workspace_size(p, out, cfg, &bytes);  // phase 1
//   cfg.workspace = d_ws; cfg.workspace_bytes = bytes;
//   fusedloss::Status s = fusedloss::compute(p, out, cfg);             // phase 2, async
//
// Memory and stream contract (for framework callers):
//  * The library never takes ownership of, frees, or retains any pointer after a call returns
//    (on the CUDA path: after the stream work it enqueued completes).
//  * All pointers of one call live in the same memory space: host memory for the CPU path,
//    device (or managed) memory for the CUDA path. That includes the outputs and the optional
//    class-weight / pos-weight vectors. Backend::Auto picks the path from where they live.
//    Device memory must belong to the current device (cudaSetDevice), managed memory to any:
//    another device's memory is InvalidArgument, not a fault inside a kernel.
//  * The CUDA path is asynchronous on ExecutionConfig::stream: no host synchronisation, no
//    allocation (unless allow_stream_ordered_alloc), capturable in a CUDA graph. Outputs are
//    valid once the stream work completes. Data-dependent errors arrive through
//    LossOutputs::error_count; compute_sync() waits and turns them into Status::InvalidValue.
//  * The CPU path runs on the calling thread plus a private pool of worker threads, is
//    thread-safe (no global mutable state), and returns when the outputs are written. Its result
//    does not depend on the number of threads.
//  * Validation happens first: an invalid call returns InvalidArgument with nothing written.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fusedloss/types.hpp"

namespace fusedloss {

/// Options of the elementwise losses; each is read only by the losses named. Options (and
/// grad_scale) must be representable in float32, the CUDA path's precision: a positive option
/// lies in [FLT_MIN, FLT_MAX] (1.2e-38 … 3.4e38); grad_scale is 0 or |grad_scale| lies in
/// [FLT_MIN, FLT_MAX]; else InvalidArgument.
struct ElementwiseParams {
  double delta = 1.0;       ///< huber, pseudo_huber: > 0
  double beta = 1.0;        ///< smooth_l1: >= 0 (0 is L1)
  double pos_weight = 1.0;  ///< bce_with_logits scalar: > 0 (ignored when pos_weight_per_column is set)
  /// bce_with_logits on an [n / columns, columns] multi-label matrix: a float32 vector of length
  /// `columns` (same memory space as the data); element i uses pos_weight_per_column[i % columns].
  /// Values are not validated (a non-positive entry is the caller's business).
  const float* pos_weight_per_column = nullptr;
  std::int64_t columns = 0;  ///< > 0 and dividing n when pos_weight_per_column is set
};

/// Loss over n elements: prediction x[i], target y[i], optional weight w[i].
///   none: w_i·l_i (shape [n]);  sum: Σ w_i·l_i;  mean: Σ w_i·l_i / n  (numel, not Σw).
/// n == 0: sum → 0, mean → NaN, none → nothing written.
/// input, target and weight share `dtype` (Float32, Float16 or BFloat16).
struct ElementwiseProblem {
  Loss loss = Loss::MSE;
  DType dtype = DType::Float32;
  std::int64_t n = 0;
  const void* input = nullptr;   ///< [n] predictions (probabilities for bce, logits for bce_with_logits)
  const void* target = nullptr;  ///< [n]
  const void* weight = nullptr;  ///< [n] optional per-element weights (nullptr = 1)
  Reduction reduction = Reduction::Default;
  /// The gradient is multiplied by this (e.g. a loss scale): 0 (loss only, zero gradient) or
  /// |grad_scale| in [FLT_MIN, FLT_MAX].
  double grad_scale = 1.0;
  ElementwiseParams params{};
};

/// Options of the row-wise losses; each is read only by the losses named. Positive options lie
/// in [FLT_MIN, FLT_MAX] (see ElementwiseParams).
struct RowwiseParams {
  std::int64_t ignore_index = -100;  ///< cross_entropy (sparse), nll
  double label_smoothing = 0.0;      ///< cross_entropy: 0, or in [FLT_MIN, 1]
  double z_loss = 0.0;               ///< cross_entropy: >= 0, adds z_loss·lse² per row
  double softcap = 0.0;              ///< cross_entropy: >= 0; > 0 replaces z by softcap·tanh(z/softcap)
  bool log_target = false;           ///< kl_div: the target holds log-probabilities
  double temperature = 1.0;          ///< kl_div_logits: > 0
};

/// Loss over rows of an [N, C] matrix (row-major, rows `row_stride` elements apart).
///  * cross_entropy: input = logits z; either `labels` [N] (sparse, Int32/Int64) or `target`
///    [N, C] soft probabilities (same dtype and row stride as input). Options: ignore_index,
///    class_weight, label_smoothing, z_loss, softcap; optional per-row lse output.
///  * nll: input = log-probabilities, `labels` [N]; ignore_index, class_weight.
///  * kl_div: input = log-probabilities q, `target` [N, C] probabilities (log-probabilities with
///    log_target). reduction none gives the elementwise [N*C] loss (dense, no stride), like PyTorch.
///  * kl_div_logits: input = student logits, `target` = teacher logits [N, C], temperature.
/// mean for cross_entropy/nll divides by Σ w[y_n] over rows that are neither ignored nor invalid
/// (PyTorch's rule; when that is 0 — e.g. every row ignored — the loss is NaN and the gradient 0);
/// for soft-target cross_entropy by N; for kl_div / kl_div_logits by N·C (batchmean: by N).
/// N == 0: sum → 0, mean/batchmean → NaN, none → nothing written.
struct RowwiseProblem {
  Loss loss = Loss::CrossEntropy;
  DType dtype = DType::Float32;  ///< input, dense target and gradient
  std::int64_t rows = 0;         ///< N >= 0
  std::int64_t classes = 0;      ///< C >= 1
  std::int64_t row_stride = 0;   ///< elements between rows of input/target/grad; 0 means C; else >= C
  const void* input = nullptr;   ///< [N, row_stride]
  const void* labels = nullptr;  ///< [N] class indices (sparse cross_entropy, nll)
  DType label_dtype = DType::Int64;
  const void* target = nullptr;         ///< [N, row_stride] dense target (see above)
  const float* class_weight = nullptr;  ///< [C] optional float32 class weights (cross_entropy, nll)
  Reduction reduction = Reduction::Default;
  double grad_scale = 1.0;  ///< as ElementwiseProblem::grad_scale
  RowwiseParams params{};
};

/// Where results go. Every pointer lives in the same memory space as the problem's data.
struct LossOutputs {
  /// Required. float32: 1 value for mean/sum/batchmean; n (elementwise), N (row-wise) or
  /// N*C (kl_div) values for none.
  float* loss = nullptr;
  /// Optional: gradient of the reduced loss × grad_scale, in the problem's dtype, same shape
  /// (and row stride) as the input. May alias the input exactly (in-place gradient); any
  /// other overlap with an input is not allowed.
  void* grad = nullptr;
  /// Optional, cross_entropy only: float32 [N] logsumexp of each row's (softcapped) logits,
  /// reported for every row including ignored ones.
  float* lse = nullptr;
  /// Optional: overwritten with this call's number of invalid data values (bad labels / bad
  /// BCE probabilities); never accumulated across calls, so it needs no zeroing.
  std::int64_t* error_count = nullptr;
};

struct ExecutionConfig {
  Backend backend = Backend::Auto;
  CUstream_st* stream = nullptr;  ///< cudaStream_t for the CUDA path (nullptr = legacy default stream)
  /// Device workspace for the CUDA path (see workspace_size); 256-byte aligned (cudaMalloc's
  /// alignment), else InvalidArgument — also when this problem needs none.
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  /// CUDA path: when the given workspace is too small, allocate it with cudaMallocAsync /
  /// cudaFreeAsync on `stream` instead of failing with WorkspaceTooSmall.
  bool allow_stream_ordered_alloc = false;
  int cpu_threads = 0;  ///< CPU path worker threads; 0 = hardware concurrency
};

/// Linear + cross-entropy (the LM head and its loss): logits z = hidden · weightᵀ + bias, then
/// sparse cross_entropy of z against `labels`, without ever holding the [N, V] logits. Rows are
/// processed in chunks of `chunk_rows` (see LinearCrossEntropyPlan): a GEMM forms one chunk's
/// fp32 logits in the workspace, the row-wise cross_entropy turns them into loss + ∂loss/∂z in
/// place, and two GEMMs turn that into the chunk's rows of grad_hidden and its share of
/// grad_weight (accumulated in fp32 over the chunks, rounded once at the end); grad_bias is the
/// column sum of ∂loss/∂z. Chunks run in a fixed order with a fixed GEMM configuration, so the
/// result is bitwise reproducible run to run.
///
/// Semantics are those of RowwiseProblem's sparse cross_entropy applied to z (softcap acts on z,
/// bias included): ignore_index, class_weight, label_smoothing, z_loss, softcap, the lse output,
/// reductions none / sum / mean (mean divides by Σ w[y_n] over valid, non-ignored rows).
///
/// Memory: the workspace (workspace_size) is at most `memory_budget_bytes`; it holds
/// chunk_rows × V fp32 logits; for fp16/bf16 inputs fp32 copies of the chunk's hidden rows and
/// of `weight` (V × H); the fp32 grad_weight accumulator (V × H) for fp16/bf16 or accumulate;
/// V doubles for grad_bias. On the CPU path the budget also covers what the call allocates
/// besides the workspace (LinearCrossEntropyPlan::internal_bytes: the in-place cross_entropy's
/// scratch for a fixed 8 workers, independent of the machine, so the chunk size and the results
/// never depend on the thread count). A budget that does not fit that plus one row is
/// InvalidArgument.
/// No [N, V] buffer is ever formed.
struct LinearCrossEntropyProblem {
  DType dtype = DType::Float32;     ///< hidden, weight, bias and the three gradients
  std::int64_t rows = 0;            ///< N >= 0
  std::int64_t hidden_size = 0;     ///< H >= 1
  std::int64_t classes = 0;         ///< V >= 1 (vocabulary)
  std::int64_t hidden_stride = 0;   ///< elements between rows of hidden / grad_hidden; 0 means H; else >= H
  const void* hidden = nullptr;     ///< [N, hidden_stride]
  const void* weight = nullptr;     ///< [V, H] dense row-major (nn.Linear's weight)
  const void* bias = nullptr;       ///< [V] optional
  const void* labels = nullptr;     ///< [N] class indices
  DType label_dtype = DType::Int64;
  const float* class_weight = nullptr;  ///< [V] optional float32 class weights
  Reduction reduction = Reduction::Default;  ///< None, Sum or Mean (Default = Mean)
  double grad_scale = 1.0;          ///< as RowwiseProblem::grad_scale
  /// ignore_index, label_smoothing, z_loss, softcap as for cross_entropy; log_target and
  /// temperature must keep their defaults.
  RowwiseParams params{};
  /// Upper bound of the workspace; the chunk size follows from it, V, H and the dtype.
  std::size_t memory_budget_bytes = std::size_t(256) << 20;
  /// Optional cap on the rows per chunk (0 = as many as the budget allows).
  std::int64_t max_chunk_rows = 0;
};

/// Where linear_cross_entropy's results go (same memory space as the problem's data).
struct LinearCrossEntropyOutputs {
  float* loss = nullptr;        ///< required: 1 value (sum / mean) or N (none)
  float* lse = nullptr;         ///< optional: float32 [N] logsumexp of each row's (softcapped) logits
  void* grad_hidden = nullptr;  ///< optional: [N, hidden_stride] in dtype (H columns written)
  void* grad_weight = nullptr;  ///< optional: [V, H] in dtype
  void* grad_bias = nullptr;    ///< optional: [V] in dtype; needs `bias`
  /// Gradient accumulation: grad_weight / grad_bias ← round(old + g), g this call's gradient as
  /// the fp32 sum over chunks; i.e. exactly `old + (what a non-accumulating call writes)` for
  /// fp32, with one rounding of the sum for fp16/bf16. (fp32 then needs a V × H fp32
  /// accumulator in the workspace, as fp16/bf16 always do.)
  bool accumulate = false;
  std::int64_t* error_count = nullptr;  ///< as LossOutputs::error_count
};

/// How a call is cut up (linear_cross_entropy_plan).
struct LinearCrossEntropyPlan {
  std::int64_t chunk_rows = 0;        ///< rows per chunk (the last chunk may be shorter)
  std::size_t workspace_bytes = 0;    ///< = workspace_size()
  /// CPU path: the most host memory the call allocates besides the workspace (the row-wise
  /// cross_entropy's scratch, reserved for a fixed number of workers); 0 on the CUDA path.
  /// workspace_bytes + internal_bytes <= memory_budget_bytes.
  std::size_t internal_bytes = 0;
};

/// The chunking and workspace of a call (validates it like compute()).
Status linear_cross_entropy_plan(const LinearCrossEntropyProblem& problem, const LinearCrossEntropyOutputs& outputs,
                                 const ExecutionConfig& config, LinearCrossEntropyPlan* plan) noexcept;

/// Phase 1: the workspace bytes compute() needs for this problem on the backend `config`
/// selects (0 for the CPU path). Validates the problem like compute() does.
Status workspace_size(const ElementwiseProblem& problem, const LossOutputs& outputs,
                      const ExecutionConfig& config, std::size_t* bytes) noexcept;
Status workspace_size(const RowwiseProblem& problem, const LossOutputs& outputs,
                      const ExecutionConfig& config, std::size_t* bytes) noexcept;
/// linear_cross_entropy needs a workspace on both backends (see LinearCrossEntropyProblem). The
/// CPU path uses ExecutionConfig::workspace (host memory) when given, else allocates it itself.
Status workspace_size(const LinearCrossEntropyProblem& problem, const LinearCrossEntropyOutputs& outputs,
                      const ExecutionConfig& config, std::size_t* bytes) noexcept;

/// Phase 2: compute the loss and (if outputs.grad) its gradient.
/// CPU path: synchronous; returns InvalidValue when invalid data values were seen.
/// CUDA path: asynchronous on config.stream; returns Success once enqueued.
Status compute(const ElementwiseProblem& problem, const LossOutputs& outputs,
               const ExecutionConfig& config = {}) noexcept;
Status compute(const RowwiseProblem& problem, const LossOutputs& outputs,
               const ExecutionConfig& config = {}) noexcept;
Status compute(const LinearCrossEntropyProblem& problem, const LinearCrossEntropyOutputs& outputs,
               const ExecutionConfig& config = {}) noexcept;

/// compute(), then (CUDA path) wait for the stream and read the invalid-data count, so the
/// return value is InvalidValue when any data value was invalid. A convenience for tests and
/// tools — training loops should use compute() and read error_count when they choose to.
/// With the CUDA path and no workspace given it allocates one itself (stream-ordered).
Status compute_sync(const ElementwiseProblem& problem, const LossOutputs& outputs,
                    const ExecutionConfig& config = {}) noexcept;
Status compute_sync(const RowwiseProblem& problem, const LossOutputs& outputs,
                    const ExecutionConfig& config = {}) noexcept;
Status compute_sync(const LinearCrossEntropyProblem& problem, const LinearCrossEntropyOutputs& outputs,
                    const ExecutionConfig& config = {}) noexcept;

}  // namespace fusedloss
