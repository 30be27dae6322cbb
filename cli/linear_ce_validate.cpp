// fusedloss CLI — `fusedloss validate --loss linear_cross_entropy`: the CUDA path against the CPU path on the
// same data (generated N x H x V, or --input hidden, --linear-weight, --target [, --bias, --weight]), under the
// tolerances of cli/compare.hpp (the GEMM outputs with the GEMM term scale defined there).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/compare.hpp"
#include "cli/gpu_runtime.hpp"
#include "cli/linear_ce_problem.hpp"
#include "fusedloss/fusedloss.hpp"

namespace fusedloss_cli {
namespace {

namespace fl = ::fusedloss;

double max_abs(const HostTensor& t) {
  double m = 0.0;
  for (std::int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::fabs(get_value(t, i)));
  return m;
}

void print_row(const char* name, const Comparison& c, const std::vector<std::int64_t>& shape, fl::DType dtype,
               const std::string& tol) {
  char ulp[48];
  std::snprintf(ulp, sizeof ulp, "%.0f (%s)", c.max_ulp, fl::dtype_name(dtype));
  std::printf("%-12s %-12.4g %-12.4g %-12s %-18s %-42s %s\n", name, c.max_abs, c.max_rel, ulp,
              index_string(c.worst, shape).c_str(), tol.c_str(), c.pass() ? "PASS" : "FAIL");
  if (!c.pass())
    std::printf("       %lld of %lld values outside the tolerance; worst %s: cuda %.9g, cpu %.9g\n",
                static_cast<long long>(c.failures), static_cast<long long>(c.count),
                index_string(c.worst, shape).c_str(), c.worst_got, c.worst_ref);
}

}  // namespace

int run_linear_ce_validate(const ValidateOptions& o) {
  const LossSpec spec = make_spec("cross_entropy", o.reduction, o.dtype, o.params);
  if (o.threads < 0) throw UsageError("--threads must be >= 0");
  if (o.soft) throw UsageError("--soft does not apply to linear_cross_entropy (integer labels)");
  const bool from_files = !o.files.input.empty();
  if (from_files && !o.shape.empty()) throw UsageError("--shape is for generated data; it cannot be combined with --input");
  if (!from_files && (!o.files.target.empty() || !o.files.linear_weight.empty() || !o.files.bias.empty()))
    throw UsageError("--target / --linear-weight / --bias need --input");
  if (!fl::cuda_available())
    throw NoGpuError(gpu::compiled() ? "validate needs a GPU: no usable CUDA device on this machine"
                                     : "validate needs a GPU: this build of fusedloss has no CUDA path");
  const LinearCeHost h = from_files ? load_linear_ce(spec, o.files)
                                    : generate_linear_ce(spec, parse_shape(o.shape.empty() ? "257x65x5003" : o.shape, "--shape"),
                                                         o.seed, o.weighted);
  const gpu::DeviceInfo device = gpu::device_info();
  std::printf("validate linear_cross_entropy %s N=%lld H=%lld V=%lld%s%s, %s%s\n", fl::dtype_name(h.dtype),
              static_cast<long long>(h.N), static_cast<long long>(h.H), static_cast<long long>(h.V),
              h.has_bias() ? ", bias" : "", h.has_class_weight() ? ", class weights" : "", reduction_name(spec.reduction),
              from_files ? "" : (" (generated, seed " + std::to_string(o.seed) + ")").c_str());
  std::printf("CUDA path on %s (driver %s, runtime %s) vs the CPU reference path\n", device.name.c_str(),
              gpu::version_string(device.driver_version).c_str(), gpu::version_string(device.runtime_version).c_str());

  const LinearCeRun cpu = run_linear_ce(h, fl::Backend::CPU, o.threads, true);
  const LinearCeRun cuda = run_linear_ce(h, fl::Backend::CUDA, 0, true);

  // Term scales (cli/compare.hpp): the row-wise T of G, then the GEMM bound of each gradient.
  const Tolerance tol = tolerance_for(h.dtype);
  fl::RowwiseProblem ce;
  ce.loss = fl::Loss::CrossEntropy;
  ce.rows = h.N;
  ce.classes = h.V;
  ce.labels = h.labels.data();
  ce.label_dtype = h.labels.dtype;
  ce.class_weight = h.has_class_weight() ? static_cast<const float*>(h.class_weight.data()) : nullptr;
  ce.reduction = spec.reduction;
  ce.grad_scale = spec.grad_scale;
  ce.params = spec.rowwise;
  const double g = 2.0 * rowwise_term_scale(ce) * (1.0 + spec.rowwise.z_loss * (max_abs(cpu.lse) + 1.0));
  const double w_max = max_abs(h.weight), h_max = max_abs(h.hidden), b_max = h.has_bias() ? max_abs(h.bias) : 0.0;
  double h_row_l1 = 0.0;
  for (std::int64_t n = 0; n < h.N; ++n) {
    double s = 0.0;
    for (std::int64_t k = 0; k < h.H; ++k) s += std::fabs(get_value(h.hidden, n * h.H + k));
    h_row_l1 = std::max(h_row_l1, s);
  }
  const double delta_z = static_cast<double>(h.H + 1) * 0x1p-24 * (h_row_l1 * w_max + b_max);
  const double N = static_cast<double>(h.N), V = static_cast<double>(h.V);

  std::printf("%-12s %-12s %-12s %-12s %-18s %-42s %s\n", "", "max abs err", "max rel err", "max ulp", "worst index",
              "tolerance", "result");
  bool pass = true;
  const auto check = [&](const char* name, const HostTensor& got, const HostTensor& ref, CompareKind kind, double T,
                         fl::DType dtype, const char* kind_text) {
    const Comparison c = compare(got, ref, kind, tol, T);
    print_row(name, c, ref.shape, dtype, tolerance_text(tol, kind_text, dtype));
    pass &= c.pass();
  };
  check("loss", cuda.loss, cpu.loss, CompareKind::Loss, 0.0, fl::DType::Float32, "loss");
  check("lse", cuda.lse, cpu.lse, CompareKind::Loss, kLseTermScale, fl::DType::Float32, "lse");
  check("grad_hidden", cuda.grad_hidden, cpu.grad_hidden, CompareKind::Grad,
        linear_ce_gemm_term_scale(tol, V, g * w_max, delta_z), h.dtype, "grad");
  check("grad_weight", cuda.grad_weight, cpu.grad_weight, CompareKind::Grad,
        linear_ce_gemm_term_scale(tol, N, N * g * h_max, delta_z), h.dtype, "grad");
  if (h.has_bias())
    check("grad_bias", cuda.grad_bias, cpu.grad_bias, CompareKind::Grad,
          linear_ce_gemm_term_scale(tol, N, N * g, delta_z), h.dtype, "grad");
  const bool counts_match = cpu.invalid_values == cuda.invalid_values;
  std::printf("invalid data values: cuda %lld, cpu %lld  %s\n", static_cast<long long>(cuda.invalid_values),
              static_cast<long long>(cpu.invalid_values), counts_match ? "PASS" : "FAIL");
  pass &= counts_match;
  std::printf("%s\n", pass ? "PASS" : "FAIL");
  return pass ? kExitOk : kExitFail;
}

}  // namespace fusedloss_cli
