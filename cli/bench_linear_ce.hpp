// fusedloss CLI — `fusedloss bench --loss linear_cross_entropy` (cli/bench_linear_ce.cpp).
#pragma once

#include "cli/commands.hpp"

namespace fusedloss_cli {

/// The fused linear + cross-entropy against the unfused baseline and PyTorch: time and peak extra memory.
int run_linear_ce_bench(const BenchOptions& options);

}  // namespace fusedloss_cli
