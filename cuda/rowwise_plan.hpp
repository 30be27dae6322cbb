// fusedloss CUDA path — the plan of a row-wise call: which row kernel runs, with how many threads
// per row. One function decides it (plan_rowwise); cuda/rowwise.cu launches what it returns and
// tests assert it, so a strategy can never silently stop running.
#pragma once

#include "fusedloss/api.hpp"

namespace fusedloss {
namespace detail {

/// The per-row strategies (the table is in cuda/rowwise.cu). nll and kl_div have no register
/// strategies: warp (short rows) or stream (a block per row, one pass), scalar when misaligned.
enum class RowwiseStrategy : int { Warp = 0, Block = 1, Cluster = 2, Stream = 3, Scalar = 4 };

const char* rowwise_strategy_name(RowwiseStrategy s) noexcept;

struct RowwisePlan {
  RowwiseStrategy strategy = RowwiseStrategy::Stream;
  int threads = 0;        ///< threads per block
  int cluster = 1;        ///< blocks per cluster (> 1 only for Cluster; 1 may also be a cluster of one)
  int rows_per_block = 1; ///< 4 for the warp strategy (one row per warp)
  int vec = 1;            ///< elements per vector access (1: scalar)
  int items = 0;          ///< 16-byte vectors per thread held in registers (0: streaming)
  const void* kernel = nullptr;  ///< the row kernel (a __global__ function)
};

/// The plan for `problem` (validated and normalised as for cuda_compute) on CUDA device `device`.
/// FUSEDLOSS_ROWWISE_STRATEGY forces a strategy (testing / diagnosis): auto (or unset) | warp |
/// block | cluster | stream | scalar | nocluster (auto without clusters). Every row-wise loss
/// honours it. Returns NotSupported when the forced strategy cannot run this problem (the row does
/// not fit it, no cluster support, pointers not congruent mod 16 for a vectorised strategy) and
/// InvalidArgument for an unknown value — never a silent fallback.
Status plan_rowwise(const RowwiseProblem& problem, const LossOutputs& outputs, int device, RowwisePlan* plan) noexcept;

}  // namespace detail
}  // namespace fusedloss
