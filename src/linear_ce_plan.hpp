// linear_cross_entropy: how a call is cut into row chunks and where each buffer lives in the
// workspace. One definition for both backends, so the CPU path and the CUDA path (and the
// emulated device running the latter) chunk and lay out a problem identically.
//
// Workspace regions (each 256-byte aligned, present only when the call needs it):
//   logits       chunk × V   fp32  one chunk's logits, then (in place) ∂loss/∂z of that chunk
//   row_loss     chunk       fp32  per-row losses of a chunk (summed in row order for sum / mean)
//   hidden32     chunk × H   fp32  fp16/bf16: the chunk's hidden rows widened for the GEMMs
//   grad_hidden32 chunk × H  fp32  fp16/bf16 with grad_hidden: the chunk's grad_hidden before rounding
//   weight32     V × H       fp32  fp16/bf16: weight widened once per call
//   grad_weight32 V × H      fp32  with grad_weight, fp16/bf16 or accumulate: the sum over chunks
//   bias_acc     V           fp64  with grad_bias: column sums of ∂loss/∂z over chunks
//   scalars      256 bytes         CUDA: mean divisor, its reciprocal, loss sum, bad-label count
//   blas         4 MiB             CUDA: cuBLAS's workspace (cublasSetWorkspace)
//   ce           (small)           CUDA: the row-wise cross_entropy's own workspace for one chunk
// fp32 problems need no hidden32/weight32 copies, and (not accumulating) sum grad_weight in the output.
//
// CPU: the row-wise cross_entropy that runs in place on a chunk allocates its own scratch (per
// worker: V doubles, twice with softcap; per row: one partial sum). The plan reserves it out of the
// budget for kLinearCeRowWorkers workers — a constant, not the machine's thread count, so the chunk
// size (and with it every result) is the same on every machine — and the CPU path runs that step
// on at most that many threads: workspace + host_scratch <= memory_budget_bytes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fusedloss/api.hpp"

namespace fusedloss {
namespace detail {

struct LinearCeLayout {
  std::int64_t chunk_rows = 0;
  std::size_t logits = 0, row_loss = 0, hidden32 = 0, grad_hidden32 = 0, weight32 = 0, grad_weight32 = 0,
              bias_acc = 0, scalars = 0, blas = 0, ce = 0;  // byte offsets (SIZE_MAX: region absent)
  std::size_t bytes = 0;                            // total workspace
  std::size_t host_scratch = 0;                     // CPU: what the call allocates besides the workspace
};

/// Heap scratch of a CPU step on r rows: at most fixed + per_row × r bytes.
struct CpuScratchBound {
  std::size_t fixed = 0, per_row = 0;
};

/// The CPU path's row-wise cross_entropy step runs on at most this many threads (see above).
constexpr int kLinearCeRowWorkers = 8;

constexpr std::size_t kLinearCeAbsent = ~std::size_t(0);
constexpr std::size_t kLinearCeBlasWorkspace = std::size_t(4) << 20;  // what cuBLAS recommends for Hopper

/// The row-wise cross_entropy problem one chunk of `rows` rows runs (fp32 logits in place, reduction none,
/// gradient of the sum × grad_scale); `logits` and `labels` point at the chunk's data.
RowwiseProblem linear_ce_chunk_problem(const LinearCrossEntropyProblem& p, std::int64_t rows, const float* logits,
                                       const void* labels) noexcept;

/// Chunk size and layout for a validated (normalised) problem on `backend` (CPU or CUDA).
/// False when the budget does not hold one row's worth (InvalidArgument).
bool linear_ce_layout(const LinearCrossEntropyProblem& p, const LinearCrossEntropyOutputs& out, Backend backend,
                      LinearCeLayout* layout) noexcept;

}  // namespace detail
}  // namespace fusedloss
