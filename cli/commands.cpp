// `fusedloss eval` and `fusedloss validate`.
#include "cli/commands.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "cli/common.hpp"
#include "cli/compare.hpp"
#include "cli/gpu_runtime.hpp"

namespace fusedloss_cli {

using fusedloss::Backend;
using fusedloss::DType;
using fusedloss::Loss;
using fusedloss::Reduction;

namespace fs = std::filesystem;

Backend resolve_device(const std::string& raw) {
  const std::string device = lower(raw);
  if (device.empty() || device == "auto") return fusedloss::cuda_available() ? Backend::CUDA : Backend::CPU;
  if (device == "cpu") return Backend::CPU;
  if (device == "cuda" || device == "gpu") {
    if (!fusedloss::cuda_available())
      throw NoGpuError(gpu::compiled() ? "--device cuda: no usable CUDA device on this machine"
                                       : "--device cuda: this build of fusedloss has no CUDA path");
    return Backend::CUDA;
  }
  throw UsageError("--device: unknown device '" + raw + "' (use cpu or cuda)");
}

std::string no_gpu_advice(const std::string& command) {
  if (command == "traffic") return "configure with -DFUSEDLOSS_DEVICE=emulated (README: Running without a GPU)";
  const std::string cpu = command == "validate" ? "`fusedloss eval --device cpu ...` (the CPU reference path)"
                                                : "`--device cpu` (the CPU path)";
  return "instead: " + cpu + ", or the emulated build (README: Running without a GPU)";
}

namespace {

/// T of cli/compare.hpp: the size of the terms the problem's gradient is a difference of.
double term_scale_of(const HostProblem& p) {
  if (!p.rowwise)
    return elementwise_term_scale(
        elementwise_problem(p, p.input.data(), p.target.data(), p.weight.data(), p.pos_weight.data()));
  return rowwise_term_scale(rowwise_problem(p, p.input.data(), p.labels.data(), p.target.data(), p.class_weight.data()));
}

std::string invalid_value_meaning(Loss loss) {
  if (loss == Loss::BCE) return "probabilities outside [0, 1] or NaN";
  return "labels outside [0, C) that are not ignore_index";
}

}  // namespace

/// Writes every file under `dir` atomically as a set: each goes to a temporary name first and is
/// renamed only when all were written. On failure nothing is left behind.
void write_outputs(const std::string& dir, const std::vector<std::pair<std::string, NpyArray>>& files) {
  std::error_code ec;
  const bool existed = fs::exists(dir, ec);
  if (!existed) {
    fs::create_directories(dir, ec);
    if (ec) throw UsageError("--out " + dir + ": cannot create the directory: " + ec.message());
  }
  std::vector<std::pair<std::string, std::string>> staged;  // temp, final
  auto cleanup = [&] {
    for (const auto& s : staged) fs::remove(s.first, ec);
    if (!existed) fs::remove(dir, ec);
  };
  const std::string suffix = ".tmp-" + std::to_string(static_cast<long>(::getpid()));
  for (const auto& f : files) {
    const std::string final_path = (fs::path(dir) / f.first).string();
    const std::string temp_path = (fs::path(dir) / ("." + f.first + suffix)).string();
    try {
      write_npy(temp_path, f.second.type, f.second.shape, f.second.data.data());
    } catch (const NpyError& e) {
      cleanup();
      throw UsageError(std::string("cannot write the output: ") + e.what());
    }
    staged.emplace_back(temp_path, final_path);
  }
  for (const auto& s : staged) {
    fs::rename(s.first, s.second, ec);
    if (ec) {
      cleanup();
      throw UsageError("cannot write " + s.second + ": " + ec.message());
    }
  }
}

std::string format_value(double v) {
  if (std::isnan(v)) return "nan";  // printf would print the sign of 0/0 as "-nan"
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

namespace {

/// Why a reduced loss is NaN when the data hold no NaN: a mean over nothing. Empty when it is not.
std::string empty_mean_reason(const HostProblem& p) {
  const Reduction r = p.spec.reduction;
  if (r != Reduction::Mean && r != Reduction::BatchMean) return "";
  if (!p.rowwise) return p.n == 0 ? "mean of no elements" : "";
  if (p.rows == 0) return "mean of no rows";
  if (!p.sparse) return "";
  const std::int64_t ignore = p.spec.rowwise.ignore_index;
  std::int64_t ignored = 0, invalid = 0;
  double weight_sum = 0;
  for (std::int64_t n = 0; n < p.rows; ++n) {
    const auto y = static_cast<std::int64_t>(get_value(p.labels, n));
    if (y == ignore) {
      ++ignored;
    } else if (y < 0 || y >= p.classes) {
      ++invalid;
    } else {
      weight_sum += p.has_class_weight ? get_value(p.class_weight, y) : 1.0;
    }
  }
  if (ignored == p.rows) return "every row is ignored: all labels are ignore_index " + std::to_string(ignore);
  if (ignored + invalid == p.rows)
    return "no row counts toward the mean: " + std::to_string(ignored) + " ignored, " + std::to_string(invalid) +
           " with an invalid label";
  if (weight_sum == 0) return "the class weights of the counted rows sum to 0";
  return "";
}

}  // namespace

int run_eval(const EvalOptions& o) {
  if (lower(o.loss) == "linear_cross_entropy") return run_linear_ce_eval(o);  // cli/linear_ce_eval.cpp
  const LossSpec spec = make_spec(o.loss, o.reduction, o.dtype, o.params);
  if (o.out.empty()) throw UsageError("--out is required");
  {
    std::error_code ec;
    if (fs::exists(o.out, ec) && !fs::is_directory(o.out, ec))
      throw UsageError("--out " + o.out + " exists and is not a directory");
  }
  if (o.threads < 0) throw UsageError("--threads must be >= 0");
  const Backend backend = resolve_device(o.device);
  const HostProblem problem = load_problem(spec, o.files);
  ProblemResult r = run_problem(problem, backend, o.threads, !o.no_grad);
  if (r.status == fusedloss::Status::InvalidValue && !o.allow_invalid)
    throw UsageError(std::to_string(r.invalid_values) + " invalid data value(s) in the input (" +
                     invalid_value_meaning(spec.loss) +
                     "); nothing written; pass --allow-invalid to write the results (loss NaN, gradient 0 there)");

  const double first_loss = r.loss.numel() > 0 ? get_value(r.loss, 0) : 0.0;
  double loss_sum = 0;
  for (std::int64_t i = 0; i < r.loss.numel(); ++i) loss_sum += get_value(r.loss, i);
  const std::int64_t loss_count = r.loss.numel();
  const std::vector<std::int64_t> loss_shape = r.loss.shape;
  std::vector<std::pair<std::string, NpyArray>> files;
  files.emplace_back("loss.npy", to_npy(std::move(r.loss)));
  if (!o.no_grad) files.emplace_back("grad.npy", to_npy(std::move(r.grad)));
  if (problem.has_lse()) files.emplace_back("lse.npy", to_npy(std::move(r.lse)));
  write_outputs(o.out, files);

  if (!o.quiet) {
    const std::string where = backend == Backend::CUDA ? "cuda" : "cpu";
    if (loss_shape.empty()) {
      const std::string reason = std::isnan(first_loss) ? empty_mean_reason(problem) : std::string();
      std::printf("loss = %s%s  (%s, %s)\n", format_value(first_loss).c_str(),
                  reason.empty() ? "" : (" (" + reason + ")").c_str(), problem.describe().c_str(), where.c_str());
    } else {
      std::printf("loss: %lld values %s, sum %s  (%s, %s)\n", static_cast<long long>(loss_count),
                  shape_string(loss_shape).c_str(), format_value(loss_sum).c_str(), problem.describe().c_str(),
                  where.c_str());
    }
    if (r.invalid_values > 0)
      std::printf("invalid data values: %lld (%s): loss NaN, gradient 0 there\n",
                  static_cast<long long>(r.invalid_values), invalid_value_meaning(spec.loss).c_str());
    std::string list;
    for (const auto& f : files)
      list += (list.empty() ? "" : ", ") + (fs::path(o.out) / f.first).string() + " " + shape_string(f.second.shape) +
              " " + npy_descr(f.second.type);
    std::printf("wrote %s\n", list.c_str());
  }
  return kExitOk;
}

namespace {

std::vector<std::int64_t> default_validate_shape(Loss loss) {
  if (fusedloss::is_elementwise(loss)) return {100003};
  return {257, 5003};
}

}  // namespace

void print_validate_row(const char* name, int name_width, const Comparison& c, const std::vector<std::int64_t>& shape,
                        DType ulp_dtype, const std::string& tol) {
  char ulp[48];
  std::snprintf(ulp, sizeof ulp, "%.0f (%s)", c.max_ulp, fusedloss::dtype_name(ulp_dtype));
  std::printf("%-*s %-12.4g %-12.4g %-12s %-18s %-42s %s\n", name_width, name, c.max_abs, c.max_rel, ulp,
              index_string(c.worst, shape).c_str(), tol.c_str(), c.pass() ? "PASS" : "FAIL");
  if (!c.pass())
    std::printf("       %lld of %lld values outside the tolerance; worst %s: cuda %.9g, cpu %.9g\n",
                static_cast<long long>(c.failures), static_cast<long long>(c.count),
                index_string(c.worst, shape).c_str(), c.worst_got, c.worst_ref);
}

int finish_validate(bool pass, std::int64_t cuda_invalid, std::int64_t cpu_invalid) {
  const bool counts_match = cpu_invalid == cuda_invalid;
  std::printf("invalid data values: cuda %lld, cpu %lld  %s\n", static_cast<long long>(cuda_invalid),
              static_cast<long long>(cpu_invalid), counts_match ? "PASS" : "FAIL");
  pass &= counts_match;
  std::printf("%s\n", pass ? "PASS" : "FAIL");
  return pass ? kExitOk : kExitFail;
}

void print_validate_device() {
  if (!fusedloss::cuda_available())
    throw NoGpuError(gpu::compiled() ? "validate needs a GPU: no usable CUDA device on this machine"
                                     : "validate needs a GPU: this build of fusedloss has no CUDA path");
  const gpu::DeviceInfo device = gpu::device_info();
  std::printf("CUDA path on %s (driver %s, runtime %s) vs the CPU reference path\n", device.name.c_str(),
              gpu::version_string(device.driver_version).c_str(), gpu::version_string(device.runtime_version).c_str());
}

std::vector<std::int64_t> data_shape(const ValidateOptions& o, const LossSpec& spec) {
  if (o.threads < 0) throw UsageError("--threads must be >= 0");
  if (!o.files.input.empty()) {
    if (o.files.target.empty()) throw UsageError("--target is required with --input");
    if (!o.shape.empty()) throw UsageError("--shape is for generated data; it cannot be combined with --input");
    if (o.soft || o.weighted) throw UsageError("--soft and --weighted are for generated data; not with --input");
    return {};
  }
  if (!o.files.target.empty() || !o.files.weight.empty() || !o.files.pos_weight.empty())
    throw UsageError("--target / --weight / --pos-weight need --input");
  return o.shape.empty() ? default_validate_shape(spec.loss) : parse_shape(o.shape, "--shape");
}

int run_validate(const ValidateOptions& o) {
  if (lower(o.loss) == "linear_cross_entropy") return run_linear_ce_validate(o);  // cli/linear_ce_validate.cpp
  const LossSpec spec = make_spec(o.loss, o.reduction, o.dtype, o.params);
  const std::vector<std::int64_t> shape = data_shape(o, spec);
  const bool from_files = shape.empty();

  if (!fusedloss::cuda_available()) print_validate_device();  // throws NoGpuError before any data is made

  const HostProblem problem =
      from_files ? load_problem(spec, o.files) : generate_problem(spec, shape, o.seed, o.soft, o.weighted);
  std::printf("validate %s%s\n", problem.describe().c_str(),
              from_files ? "" : (" (generated, seed " + std::to_string(o.seed) + ")").c_str());
  print_validate_device();

  const ProblemResult cpu = run_problem(problem, Backend::CPU, o.threads, true);
  const ProblemResult cuda = run_problem(problem, Backend::CUDA, 0, true);

  const Tolerance tol = tolerance_for(problem.dtype);
  std::printf("%-6s %-12s %-12s %-12s %-18s %-42s %s\n", "", "max abs err", "max rel err", "max ulp", "worst index",
              "tolerance", "result");
  bool pass = true;
  const Comparison loss = compare(cuda.loss, cpu.loss, CompareKind::Loss, tol);
  print_validate_row("loss", 6, loss, problem.loss_shape(), DType::Float32, tolerance_text(tol, "loss", DType::Float32));
  pass &= loss.pass();
  const Comparison grad = compare(cuda.grad, cpu.grad, CompareKind::Grad, tol, term_scale_of(problem));
  print_validate_row("grad", 6, grad, problem.input.shape, problem.dtype, tolerance_text(tol, "grad", problem.dtype));
  pass &= grad.pass();
  if (problem.has_lse()) {
    const Comparison lse = compare(cuda.lse, cpu.lse, CompareKind::Loss, tol, kLseTermScale);
    print_validate_row("lse", 6, lse, {problem.rows}, DType::Float32, tolerance_text(tol, "lse", DType::Float32));
    pass &= lse.pass();
  }
  return finish_validate(pass, cuda.invalid_values, cpu.invalid_values);
}

}  // namespace fusedloss_cli
