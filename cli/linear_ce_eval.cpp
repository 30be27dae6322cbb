// fusedloss CLI — `fusedloss eval --loss linear_cross_entropy`: hidden [N, H] (--input), labels [N] (--target),
// the head's weight [V, H] (--linear-weight), optional bias [V] (--bias) and class weights [V] (--weight), the
// cross_entropy options as --param (ignore_index, label_smoothing, z_loss, softcap, grad_scale). Writes
// loss.npy, lse.npy and (unless --no-grad) grad_hidden.npy, grad_weight.npy (, grad_bias.npy) to --out.
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/npy.hpp"
#include "cli/tensor.hpp"
#include "fusedloss/fusedloss.hpp"

namespace fusedloss_cli {

int run_linear_ce_eval(const EvalOptions& o) {
  namespace fl = ::fusedloss;
  // The cross_entropy options, parsed and range-checked as for cross_entropy itself.
  const LossSpec spec = make_spec("cross_entropy", o.reduction, o.dtype, o.params);
  if (o.out.empty()) throw UsageError("--out is required");
  if (o.files.linear_weight.empty()) throw UsageError("linear_cross_entropy needs --linear-weight W.npy [V, H]");
  if (!o.files.pos_weight.empty()) throw UsageError("--pos-weight does not apply to linear_cross_entropy");
  if (o.threads < 0) throw UsageError("--threads must be >= 0");
  const fl::Backend backend = resolve_device(o.device);

  NpyArray hidden_npy = read_npy(o.files.input), weight_npy = read_npy(o.files.linear_weight);
  const fl::DType dtype = spec.dtype_given ? spec.dtype : default_value_dtype(hidden_npy.type);
  if (hidden_npy.shape.size() != 2) throw UsageError("--input (hidden) must be 2-D [N, H], got " + shape_string(hidden_npy.shape));
  if (weight_npy.shape.size() != 2 || weight_npy.shape[1] != hidden_npy.shape[1])
    throw UsageError("--linear-weight must be [V, H] with H = " + std::to_string(hidden_npy.shape[1]) + ", got " +
                     shape_string(weight_npy.shape));
  const std::int64_t N = hidden_npy.shape[0], H = hidden_npy.shape[1], V = weight_npy.shape[0];
  HostTensor hidden = take_values(hidden_npy, dtype, "--input"), weight = take_values(weight_npy, dtype, "--linear-weight");
  HostTensor labels = to_labels(read_npy(o.files.target), "--target");
  if (labels.shape != std::vector<std::int64_t>{N})
    throw UsageError("--target must hold N = " + std::to_string(N) + " labels, got " + shape_string(labels.shape));
  HostTensor bias, class_weight;
  if (!o.files.bias.empty()) {
    bias = to_values(read_npy(o.files.bias), dtype, "--bias");
    if (bias.shape != std::vector<std::int64_t>{V}) throw UsageError("--bias must be [V], got " + shape_string(bias.shape));
  }
  if (!o.files.weight.empty()) {
    class_weight = to_values(read_npy(o.files.weight), fl::DType::Float32, "--weight");
    if (class_weight.shape != std::vector<std::int64_t>{V})
      throw UsageError("--weight (class weights) must be [V], got " + shape_string(class_weight.shape));
  }

  fl::LinearCrossEntropyProblem p;
  p.dtype = dtype;
  p.rows = N;
  p.hidden_size = H;
  p.classes = V;
  p.hidden = hidden.data();
  p.weight = weight.data();
  p.bias = o.files.bias.empty() ? nullptr : bias.data();
  p.labels = labels.data();
  p.label_dtype = labels.dtype;
  p.class_weight = o.files.weight.empty() ? nullptr : static_cast<const float*>(class_weight.data());
  p.reduction = spec.reduction;
  p.grad_scale = spec.grad_scale;
  p.params = spec.rowwise;
  const bool none = spec.reduction == fl::Reduction::None;
  HostTensor loss(fl::DType::Float32, none ? std::vector<std::int64_t>{N} : std::vector<std::int64_t>{});
  HostTensor lse(fl::DType::Float32, {N}), grad_hidden(dtype, {N, H}), grad_weight(dtype, {V, H}), grad_bias(dtype, {V});
  fl::LinearCrossEntropyOutputs out;
  out.loss = static_cast<float*>(loss.data());
  out.lse = static_cast<float*>(lse.data());
  if (!o.no_grad) {
    out.grad_hidden = grad_hidden.data();
    out.grad_weight = grad_weight.data();
    out.grad_bias = p.bias != nullptr ? grad_bias.data() : nullptr;
  }
  std::int64_t errors = 0;
  out.error_count = &errors;
  if (backend == fl::Backend::CUDA)
    throw UsageError("linear_cross_entropy: eval runs on the CPU path for now (use --device cpu)");
  fl::ExecutionConfig cfg;
  cfg.backend = fl::Backend::CPU;
  cfg.cpu_threads = o.threads;
  const fl::Status s = fl::compute(p, out, cfg);
  if (s != fl::Status::Success && s != fl::Status::InvalidValue)
    throw UsageError(std::string("linear_cross_entropy: ") + fl::status_string(s) +
                     (s == fl::Status::InvalidArgument ? " (an option out of range, or shapes the memory budget cannot hold)" : ""));
  if (s == fl::Status::InvalidValue && !o.allow_invalid)
    throw UsageError(std::to_string(errors) + " label(s) outside [0, V) that are not ignore_index; nothing written; "
                     "pass --allow-invalid to write the results (loss NaN, gradient 0 there)");

  const double first = loss.numel() > 0 ? get_value(loss, 0) : 0.0;
  std::vector<std::pair<std::string, NpyArray>> files;
  files.emplace_back("loss.npy", to_npy(std::move(loss)));
  files.emplace_back("lse.npy", to_npy(std::move(lse)));
  if (!o.no_grad) {
    files.emplace_back("grad_hidden.npy", to_npy(std::move(grad_hidden)));
    files.emplace_back("grad_weight.npy", to_npy(std::move(grad_weight)));
    if (p.bias != nullptr) files.emplace_back("grad_bias.npy", to_npy(std::move(grad_bias)));
  }
  write_outputs(o.out, files);
  if (!o.quiet) {
    if (!none) std::printf("loss = %s  (linear_cross_entropy %s N=%lld H=%lld V=%lld, cpu)\n", format_value(first).c_str(),
                           fl::dtype_name(dtype), static_cast<long long>(N), static_cast<long long>(H),
                           static_cast<long long>(V));
    std::string list;
    for (const auto& f : files) list += (list.empty() ? "" : ", ") + f.first + " " + shape_string(f.second.shape);
    std::printf("wrote %s: %s\n", o.out.c_str(), list.c_str());
  }
  return kExitOk;
}

}  // namespace fusedloss_cli
