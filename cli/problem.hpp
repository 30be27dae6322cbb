// fusedloss CLI — a loss problem held in host memory: built from .npy files (eval, validate)
// or generated (validate without --input), and run on the CPU or the CUDA path.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli/tensor.hpp"
#include "fusedloss/api.hpp"

namespace fusedloss_cli {

/// What the command line says about the loss: its name, options and dtype.
struct LossSpec {
  fusedloss::Loss loss = fusedloss::Loss::MSE;
  std::string name;                                            ///< canonical name
  bool dtype_given = false;                                    ///< --dtype given
  fusedloss::DType dtype = fusedloss::DType::Float32;          ///< when dtype_given
  fusedloss::Reduction reduction = fusedloss::Reduction::Default;  ///< resolved: never Default
  fusedloss::ElementwiseParams elementwise{};
  fusedloss::RowwiseParams rowwise{};
  double grad_scale = 1.0;
  bool pos_weight_given = false;  ///< --param pos_weight given (it conflicts with --pos-weight FILE)
};

/// Parses --loss, --reduction, --dtype (may be empty) and the --param KEY=VALUE list.
/// Throws UsageError with a one-line message for anything unknown, inapplicable or out of range.
LossSpec make_spec(const std::string& loss, const std::string& reduction, const std::string& dtype,
                   const std::vector<std::string>& params);
/// Parses a loss name (canonical or alias); throws UsageError listing the known names.
fusedloss::Loss parse_loss_name(const std::string& name);
/// "none", "mean", "sum", "batchmean" (or "default"); throws UsageError.
fusedloss::Reduction parse_reduction(const std::string& text);
const char* reduction_name(fusedloss::Reduction r);
/// The loss's default reduction (BatchMean for kl_div_logits, Mean otherwise).
fusedloss::Reduction default_reduction(fusedloss::Loss loss);
/// The names of every loss, canonical ones, in the library's order.
std::vector<std::string> all_loss_names();

/// Input file paths of eval / validate.
struct InputFiles {
  std::string input, target, weight, pos_weight;
  std::string linear_weight, bias;  ///< linear_cross_entropy: the LM head's weight [V, H] and bias [V]
};

struct HostProblem {
  LossSpec spec;
  fusedloss::DType dtype = fusedloss::DType::Float32;  ///< of input / dense target / weight / grad
  bool rowwise = false;
  bool sparse = false;  ///< cross_entropy / nll with integer labels
  std::int64_t n = 0;   ///< elementwise: number of elements
  std::int64_t rows = 0, classes = 0;
  HostTensor input, target, weight, labels, class_weight, pos_weight;
  bool has_target = false, has_weight = false, has_labels = false, has_class_weight = false, has_pos_weight = false;

  /// Shape of loss.npy: {} for a reduced loss, else the input's shape (elementwise, kl_div) or {N}.
  std::vector<std::int64_t> loss_shape() const;
  std::int64_t loss_count() const;
  bool has_lse() const { return rowwise && spec.loss == fusedloss::Loss::CrossEntropy; }
  std::string describe() const;  ///< "cross_entropy bf16 [4, 10] reduction=mean"
};

/// Reads the files and checks every shape / dtype rule, with messages naming the file.
HostProblem load_problem(const LossSpec& spec, const InputFiles& files);
/// Random data of `shape` suited to the loss (probabilities for bce, labels in range, ...).
/// Row-wise losses need a 2-D shape [N, C]. `soft` asks cross_entropy for dense targets,
/// `weighted` adds per-element or class weights.
HostProblem generate_problem(const LossSpec& spec, const std::vector<std::int64_t>& shape, std::uint64_t seed,
                             bool soft, bool weighted);
/// Parses "1000", "64x1000", "64,1000" into a shape; throws UsageError.
std::vector<std::int64_t> parse_shape(const std::string& text, const std::string& what);

/// The library's problem for an elementwise HostProblem, over the given data pointers (host or device).
fusedloss::ElementwiseProblem elementwise_problem(const HostProblem& h, const void* x, const void* y, const void* w,
                                                  const void* pw);
/// The library's problem for a row-wise HostProblem, over the given data pointers (host or device).
fusedloss::RowwiseProblem rowwise_problem(const HostProblem& h, const void* x, const void* labels, const void* target,
                                          const void* class_weight);

struct ProblemResult {
  HostTensor loss;  ///< float32, loss_shape()
  HostTensor grad;  ///< problem dtype, input shape (empty when not requested)
  HostTensor lse;   ///< float32 [N] (cross_entropy only)
  std::int64_t invalid_values = 0;
  fusedloss::Status status = fusedloss::Status::Success;  ///< Success or InvalidValue
};

/// Runs the problem on the CPU path (threads: 0 = all cores) or the CUDA path (data copied to
/// the device and back). Throws UsageError when the library rejects the arguments, NoGpuError
/// when the CUDA path is unavailable, RuntimeFailure on a CUDA error.
ProblemResult run_problem(const HostProblem& problem, fusedloss::Backend backend, int threads, bool want_grad);

}  // namespace fusedloss_cli
