// fusedloss CLI — a linear_cross_entropy problem in host memory (read from .npy files or generated) and one
// run of it on the CPU path or the CUDA path, shared by `eval` and `validate --loss linear_cross_entropy`.
#pragma once

#include <cstdint>
#include <vector>

#include "cli/problem.hpp"
#include "cli/tensor.hpp"
#include "fusedloss/api.hpp"

namespace fusedloss_cli {

struct LinearCeHost {
  LossSpec spec;  ///< cross_entropy's options (reduction, ignore_index, label_smoothing, z_loss, softcap, grad_scale)
  fusedloss::DType dtype = fusedloss::DType::Float32;
  std::int64_t N = 0, H = 0, V = 0;
  HostTensor hidden, weight, bias, labels, class_weight;  ///< bias / class_weight: empty when absent
  bool has_bias() const { return !bias.bytes.empty(); }
  bool has_class_weight() const { return !class_weight.bytes.empty(); }
};

struct LinearCeRun {
  HostTensor loss, lse, grad_hidden, grad_weight, grad_bias;  ///< grad_bias empty without bias
  std::int64_t invalid_values = 0;
  fusedloss::Status status = fusedloss::Status::Success;
};

/// --input hidden [N, H], --linear-weight [V, H], --target labels [N], optional --bias [V] and --weight [V].
LinearCeHost load_linear_ce(const LossSpec& spec, const InputFiles& files);
/// Seeded data of shape N x H x V: hidden ~ N(0, 1), weight ~ N(0, 2/√H) (logits of a few units), bias ~
/// N(0, 1), labels uniform in [0, V) with ~10% ignore_index; `weighted`: class weights in [0.5, 2].
LinearCeHost generate_linear_ce(const LossSpec& spec, const std::vector<std::int64_t>& shape, std::uint64_t seed,
                                bool weighted);
/// One call on `backend` (CUDA: inputs uploaded, compute_sync, results read back). Throws UsageError for a
/// status other than Success / InvalidValue.
LinearCeRun run_linear_ce(const LinearCeHost& h, fusedloss::Backend backend, int threads, bool grad);

}  // namespace fusedloss_cli
