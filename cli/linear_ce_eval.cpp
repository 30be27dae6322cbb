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
#include "cli/linear_ce_problem.hpp"
#include "cli/npy.hpp"
#include "cli/tensor.hpp"
#include "fusedloss/fusedloss.hpp"

namespace fusedloss_cli {

int run_linear_ce_eval(const EvalOptions& o) {
  namespace fl = ::fusedloss;
  // The cross_entropy options, parsed and range-checked as for cross_entropy itself.
  const LossSpec spec = make_spec("cross_entropy", o.reduction, o.dtype, o.params);
  if (o.out.empty()) throw UsageError("--out is required");
  if (o.threads < 0) throw UsageError("--threads must be >= 0");
  const fl::Backend backend = resolve_device(o.device);
  const LinearCeHost h = load_linear_ce(spec, o.files);
  LinearCeRun r = run_linear_ce(h, backend, o.threads, !o.no_grad);
  if (r.status == fl::Status::InvalidValue && !o.allow_invalid)
    throw UsageError(std::to_string(r.invalid_values) + " label(s) outside [0, V) that are not ignore_index; nothing "
                     "written; pass --allow-invalid to write the results (loss NaN, gradient 0 there)");
  const bool none = spec.reduction == fl::Reduction::None;
  const fl::DType dtype = h.dtype;
  const std::int64_t N = h.N, H = h.H, V = h.V;
  HostTensor& loss = r.loss;
  HostTensor& lse = r.lse;
  HostTensor& grad_hidden = r.grad_hidden;
  HostTensor& grad_weight = r.grad_weight;
  HostTensor& grad_bias = r.grad_bias;
  const double first = loss.numel() > 0 ? get_value(loss, 0) : 0.0;
  std::vector<std::pair<std::string, NpyArray>> files;
  files.emplace_back("loss.npy", to_npy(std::move(loss)));
  files.emplace_back("lse.npy", to_npy(std::move(lse)));
  if (!o.no_grad) {
    files.emplace_back("grad_hidden.npy", to_npy(std::move(grad_hidden)));
    files.emplace_back("grad_weight.npy", to_npy(std::move(grad_weight)));
    if (h.has_bias()) files.emplace_back("grad_bias.npy", to_npy(std::move(grad_bias)));
  }
  write_outputs(o.out, files);
  if (!o.quiet) {
    if (!none) std::printf("loss = %s  (linear_cross_entropy %s N=%lld H=%lld V=%lld, %s)\n", format_value(first).c_str(),
                           fl::dtype_name(dtype), static_cast<long long>(N), static_cast<long long>(H),
                           static_cast<long long>(V), backend == fl::Backend::CUDA ? "cuda" : "cpu");
    std::string list;
    for (const auto& f : files) list += (list.empty() ? "" : ", ") + f.first + " " + shape_string(f.second.shape);
    std::printf("wrote %s: %s\n", o.out.c_str(), list.c_str());
  }
  return kExitOk;
}

}  // namespace fusedloss_cli
