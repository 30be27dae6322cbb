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

/// Number of float32 values compute() writes to LossOutputs::loss (0 when none with no data).
std::int64_t loss_output_count(const ElementwiseProblem& normalised) noexcept;
std::int64_t loss_output_count(const RowwiseProblem& normalised) noexcept;

}  // namespace detail
}  // namespace fusedloss
