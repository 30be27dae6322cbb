// fusedloss CLI — `fusedloss validate --loss linear_cross_entropy`: the CUDA path against the CPU path on the
// same data (generated N x H x V, or --input hidden, --linear-weight, --target [, --bias, --weight]), under the
// tolerances of cli/compare.hpp (the GEMM outputs with the GEMM term scale defined there).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/compare.hpp"
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

/// The largest Σ|terms| of an element of grad_hidden, grad_weight and grad_bias, and the largest logit error
/// δz_n (cli/compare.hpp), from the inputs and the reference lse: z in double, then |G|⁺_nv, the size of the
/// terms G_nv is a difference of, F·chain·((1−ε)·w_y·(p + [v = y]) + ε/V·(Σw·p + w_v) + 2·z_loss·(|lse| + 1)·p).
struct GemmScales {
  double grad_hidden = 0, grad_weight = 0, grad_bias = 0, delta_z = 0;
};

GemmScales gemm_scales(const LinearCeHost& h, const HostTensor& lse, double F) {
  const fl::RowwiseParams& prm = h.spec.rowwise;
  const std::int64_t N = h.N, H = h.H, V = h.V;
  const auto cw = [&](std::int64_t v) { return h.has_class_weight() ? get_value(h.class_weight, v) : 1.0; };
  double wsum = 0.0;
  for (std::int64_t v = 0; v < V; ++v) wsum += cw(v);
  std::vector<double> gw(static_cast<std::size_t>(V * H), 0.0), gb(static_cast<std::size_t>(V), 0.0),
      gh(static_cast<std::size_t>(H)), hr(static_cast<std::size_t>(H)), G(static_cast<std::size_t>(V));
  GemmScales s;
  const auto* labels = static_cast<const unsigned char*>(h.labels.data());
  for (std::int64_t n = 0; n < N; ++n) {
    for (std::int64_t k = 0; k < H; ++k) hr[static_cast<std::size_t>(k)] = get_value(h.hidden, n * H + k);
    std::int64_t y = 0;
    if (h.labels.dtype == fl::DType::Int32) {
      std::int32_t y32;
      std::memcpy(&y32, labels + 4 * n, 4);
      y = y32;
    } else {
      std::memcpy(&y, labels + 8 * n, 8);
    }
    const bool valid = y != prm.ignore_index && y >= 0 && y < V;
    const double l = get_value(lse, n), wy = valid ? cw(y) : 0.0, eps = prm.label_smoothing;
    double a_max = 0.0;
    for (std::int64_t v = 0; v < V; ++v) {
      double z = h.has_bias() ? get_value(h.bias, v) : 0.0, a = std::fabs(z);
      for (std::int64_t k = 0; k < H; ++k) {
        const double w = get_value(h.weight, v * H + k);
        z += hr[static_cast<std::size_t>(k)] * w;
        a += std::fabs(hr[static_cast<std::size_t>(k)] * w);
      }
      a_max = std::max(a_max, a);
      double chain = 1.0;
      if (prm.softcap > 0) {
        const double c = std::cosh(z / prm.softcap);
        z = prm.softcap * std::tanh(z / prm.softcap);
        chain = 1.0 / (c * c);
      }
      const double p = std::exp(z - l);
      G[static_cast<std::size_t>(v)] =
          valid ? F * chain * ((1 - eps) * wy * (p + (v == y ? 1 : 0)) + eps / static_cast<double>(V) * (wsum * p + cw(v)) +
                               2 * prm.z_loss * (std::fabs(l) + 1) * p)
                : 0.0;
    }
    s.delta_z = std::max(s.delta_z, static_cast<double>(H + 1) * 0x1p-24 * a_max);
    std::fill(gh.begin(), gh.end(), 0.0);
    for (std::int64_t v = 0; v < V; ++v) {
      const double g = G[static_cast<std::size_t>(v)];
      if (g == 0.0) continue;
      gb[static_cast<std::size_t>(v)] += g;
      for (std::int64_t k = 0; k < H; ++k) {
        gh[static_cast<std::size_t>(k)] += g * std::fabs(get_value(h.weight, v * H + k));
        gw[static_cast<std::size_t>(v * H + k)] += g * std::fabs(hr[static_cast<std::size_t>(k)]);
      }
    }
    for (double x : gh) s.grad_hidden = std::max(s.grad_hidden, x);
  }
  for (double x : gw) s.grad_weight = std::max(s.grad_weight, x);
  for (double x : gb) s.grad_bias = std::max(s.grad_bias, x);
  return s;
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
  if (!fl::cuda_available()) print_validate_device();  // throws NoGpuError before any data is made
  const LinearCeHost h = from_files ? load_linear_ce(spec, o.files)
                                    : generate_linear_ce(spec, parse_shape(o.shape.empty() ? "257x65x5003" : o.shape, "--shape"),
                                                         o.seed, o.weighted);
  std::printf("validate linear_cross_entropy %s N=%lld H=%lld V=%lld%s%s, %s%s\n", fl::dtype_name(h.dtype),
              static_cast<long long>(h.N), static_cast<long long>(h.H), static_cast<long long>(h.V),
              h.has_bias() ? ", bias" : "", h.has_class_weight() ? ", class weights" : "", reduction_name(spec.reduction),
              from_files ? "" : (" (generated, seed " + std::to_string(o.seed) + ")").c_str());
  print_validate_device();

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
  const double t_ce = rowwise_term_scale(ce);
  double w_max = 1.0;
  if (h.has_class_weight()) w_max = max_abs(h.class_weight);
  const GemmScales gs = gemm_scales(h, cpu.lse, w_max > 0.0 ? t_ce / w_max : 0.0);
  const double N = static_cast<double>(h.N), V = static_cast<double>(h.V);

  std::printf("%-12s %-12s %-12s %-12s %-18s %-42s %s\n", "", "max abs err", "max rel err", "max ulp", "worst index",
              "tolerance", "result");
  bool pass = true;
  const auto check = [&](const char* name, const HostTensor& got, const HostTensor& ref, CompareKind kind, double T,
                         fl::DType dtype, const char* kind_text) {
    const Comparison c = compare(got, ref, kind, tol, T);
    print_validate_row(name, 12, c, ref.shape, dtype, tolerance_text(tol, kind_text, dtype));
    pass &= c.pass();
  };
  check("loss", cuda.loss, cpu.loss, CompareKind::Loss, 0.0, fl::DType::Float32, "loss");
  check("lse", cuda.lse, cpu.lse, CompareKind::Loss, kLseTermScale, fl::DType::Float32, "lse");
  check("grad_hidden", cuda.grad_hidden, cpu.grad_hidden, CompareKind::Grad,
        linear_ce_gemm_term_scale(tol, V, gs.grad_hidden, gs.delta_z), h.dtype, "grad");
  check("grad_weight", cuda.grad_weight, cpu.grad_weight, CompareKind::Grad,
        linear_ce_gemm_term_scale(tol, N, gs.grad_weight, gs.delta_z), h.dtype, "grad");
  if (h.has_bias())
    check("grad_bias", cuda.grad_bias, cpu.grad_bias, CompareKind::Grad,
          linear_ce_gemm_term_scale(tol, N, gs.grad_bias, gs.delta_z), h.dtype, "grad");
  return finish_validate(pass, cuda.invalid_values, cpu.invalid_values);
}

}  // namespace fusedloss_cli
