// Argument validation shared by both backends: a call is checked completely before any work
// starts, so an invalid call returns InvalidArgument with nothing written.
#pragma once

#include "fusedloss/api.hpp"

namespace fusedloss {
namespace detail {

/// Checks `problem` + `outputs`; on success stores the normalised problem (reduction resolved,
/// row_stride resolved) in *normalised.
Status validate(const ElementwiseProblem& problem, const LossOutputs& outputs, ElementwiseProblem* normalised) noexcept;
Status validate(const RowwiseProblem& problem, const LossOutputs& outputs, RowwiseProblem* normalised) noexcept;
/// linear_cross_entropy: reduction resolved (Default → Mean), hidden_stride resolved (0 → H).
/// The memory budget is checked by linear_ce_layout (it depends on the backend).
Status validate(const LinearCrossEntropyProblem& problem, const LinearCrossEntropyOutputs& outputs,
                LinearCrossEntropyProblem* normalised) noexcept;

/// Number of float32 values compute() writes to LossOutputs::loss (0 when none with no data).
std::int64_t loss_output_count(const ElementwiseProblem& normalised) noexcept;
std::int64_t loss_output_count(const RowwiseProblem& normalised) noexcept;

}  // namespace detail
}  // namespace fusedloss
