// fusedloss — the internal seam between the public API (src/api.cpp: validation, backend
// choice) and the two implementations (cpu/, cuda/).
//
// Every function here is called only with a problem that validate() accepted and normalised:
//   * reduction is never Reduction::Default (resolved per loss);
//   * RowwiseProblem::row_stride is >= classes (0 was replaced by classes);
//   * sizes do not overflow, required pointers are non-null, the only overlap between an
//     input and an output is grad == input exactly;
//   * options are in range for the loss.
#pragma once

#include <cstddef>

#include "fusedloss/api.hpp"
#include "src/linear_ce_plan.hpp"

namespace fusedloss {
namespace detail {

// ---- CPU path (cpu/) -------------------------------------------------------------------
// Synchronous. Accumulates in double. Writes *outputs.error_count (when given) and returns
// Status::InvalidValue when invalid data values were seen, Success otherwise.
// `threads` >= 1. Results do not depend on `threads`.
Status cpu_compute(const ElementwiseProblem& problem, const LossOutputs& outputs, int threads) noexcept;
Status cpu_compute(const RowwiseProblem& problem, const LossOutputs& outputs, int threads) noexcept;
/// `workspace`: layout.bytes of host memory, 256-byte aligned (see linear_ce_plan.hpp). Besides
/// it the call allocates at most layout.host_scratch bytes (the row-wise cross_entropy's scratch
/// for at most kLinearCeRowWorkers workers).
Status cpu_compute(const LinearCrossEntropyProblem& problem, const LinearCrossEntropyOutputs& outputs,
                   const LinearCeLayout& layout, void* workspace, int threads) noexcept;
/// An upper bound of the heap memory cpu_compute(RowwiseProblem) allocates for sparse
/// cross_entropy (labels given) with `threads` workers on a problem like `problem` with r rows:
/// fixed + per_row × r, whatever r.
CpuScratchBound cpu_sparse_ce_scratch(const RowwiseProblem& problem, int threads) noexcept;

// ---- CUDA path (cuda/), present when FUSEDLOSS_WITH_CUDA is 1 --------------------------
// Asynchronous on `stream`; never synchronises, never allocates. `d_workspace` holds at least
// cuda_workspace_size(problem) bytes (it may be nullptr when that is 0) and is 256-byte aligned.
// The invalid-data count is written to *outputs.error_count when given (device memory), else
// discarded. Returns Success once everything is enqueued, CudaError when a launch fails.
std::size_t cuda_workspace_size(const ElementwiseProblem& problem) noexcept;
std::size_t cuda_workspace_size(const RowwiseProblem& problem) noexcept;
Status cuda_compute(const ElementwiseProblem& problem, const LossOutputs& outputs, void* d_workspace,
                    std::size_t workspace_bytes, CUstream_st* stream) noexcept;
Status cuda_compute(const RowwiseProblem& problem, const LossOutputs& outputs, void* d_workspace,
                    std::size_t workspace_bytes, CUstream_st* stream) noexcept;
/// `d_workspace`: layout.bytes of device memory, 256-byte aligned (see linear_ce_plan.hpp).
Status cuda_compute(const LinearCrossEntropyProblem& problem, const LinearCrossEntropyOutputs& outputs,
                    const LinearCeLayout& layout, void* d_workspace, CUstream_st* stream) noexcept;

}  // namespace detail
}  // namespace fusedloss
