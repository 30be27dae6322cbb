#include "cli/problem.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>

#include "cli/common.hpp"
#include "cli/gpu_runtime.hpp"

namespace fusedloss_cli {

using fusedloss::Backend;
using fusedloss::DType;
using fusedloss::Loss;
using fusedloss::Reduction;
using fusedloss::Status;

namespace {

constexpr Loss kAllLosses[] = {Loss::MSE,         Loss::MAE,         Loss::RMSE,   Loss::MSLE,         Loss::Huber,
                               Loss::SmoothL1,    Loss::PseudoHuber, Loss::LogCosh, Loss::Hinge,       Loss::SquaredHinge,
                               Loss::BCE,         Loss::BCEWithLogits, Loss::CrossEntropy, Loss::NLL, Loss::KLDiv,
                               Loss::KLDivLogits};

std::string known_losses() {
  std::string s;
  for (Loss l : kAllLosses) s += std::string(s.empty() ? "" : ", ") + fusedloss::loss_name(l);
  return s + ", l1";
}

/// --param keys and the losses that read each (empty: every loss).
struct ParamKey {
  const char* key;
  std::vector<Loss> losses;
};
const std::vector<ParamKey>& param_keys() {
  static const std::vector<ParamKey> keys = {
      {"delta", {Loss::Huber, Loss::PseudoHuber}},
      {"beta", {Loss::SmoothL1}},
      {"pos_weight", {Loss::BCEWithLogits}},
      {"ignore_index", {Loss::CrossEntropy, Loss::NLL}},
      {"label_smoothing", {Loss::CrossEntropy}},
      {"z_loss", {Loss::CrossEntropy}},
      {"softcap", {Loss::CrossEntropy}},
      {"log_target", {Loss::KLDiv}},
      {"temperature", {Loss::KLDivLogits}},
      {"grad_scale", {}},
  };
  return keys;
}

bool parse_bool(const std::string& raw, const std::string& what) {
  const std::string v = lower(raw);
  if (v == "true" || v == "1" || v == "yes" || v == "on") return true;
  if (v == "false" || v == "0" || v == "no" || v == "off") return false;
  throw UsageError(what + ": expected true or false, got '" + raw + "'");
}

void require(bool ok, const std::string& message) {
  if (!ok) throw UsageError(message);
}

bool is_kl(Loss l) { return l == Loss::KLDiv || l == Loss::KLDivLogits; }

}  // namespace

std::vector<std::string> all_loss_names() {
  std::vector<std::string> names;
  for (Loss l : kAllLosses) names.emplace_back(fusedloss::loss_name(l));
  return names;
}

Loss parse_loss_name(const std::string& name) {
  Loss loss{};
  if (!fusedloss::parse_loss(name.c_str(), &loss))
    throw UsageError("--loss: unknown loss '" + name + "' (known: " + known_losses() + ")");
  return loss;
}

Reduction parse_reduction(const std::string& raw) {
  const std::string t = lower(raw);
  if (t == "none") return Reduction::None;
  if (t == "mean") return Reduction::Mean;
  if (t == "sum") return Reduction::Sum;
  if (t == "batchmean") return Reduction::BatchMean;
  if (t == "default" || t.empty()) return Reduction::Default;
  throw UsageError("--reduction: unknown reduction '" + raw + "' (use none, mean, sum or batchmean)");
}

const char* reduction_name(Reduction r) {
  switch (r) {
    case Reduction::None: return "none";
    case Reduction::Mean: return "mean";
    case Reduction::Sum: return "sum";
    case Reduction::BatchMean: return "batchmean";
    case Reduction::Default: return "default";
  }
  return "unknown";
}

Reduction default_reduction(Loss loss) { return loss == Loss::KLDivLogits ? Reduction::BatchMean : Reduction::Mean; }

LossSpec make_spec(const std::string& loss, const std::string& reduction, const std::string& dtype,
                   const std::vector<std::string>& params) {
  LossSpec spec;
  spec.loss = parse_loss_name(loss);
  spec.name = fusedloss::loss_name(spec.loss);
  if (!dtype.empty()) {
    spec.dtype = parse_value_dtype(dtype);
    spec.dtype_given = true;
  }
  spec.reduction = parse_reduction(reduction);
  if (spec.reduction == Reduction::Default) spec.reduction = default_reduction(spec.loss);
  require(spec.reduction != Reduction::BatchMean || is_kl(spec.loss),
          "--reduction batchmean applies to kl_div and kl_div_logits only, not " + spec.name);
  require(spec.loss != Loss::RMSE || spec.reduction == Reduction::Mean,
          "rmse is defined for --reduction mean only (got " + std::string(reduction_name(spec.reduction)) + ")");

  std::set<std::string> seen;
  for (const std::string& item : params) {
    const std::size_t eq = item.find('=');
    require(eq != std::string::npos && eq > 0, "--param: expected KEY=VALUE, got '" + item + "'");
    const std::string key = lower(item.substr(0, eq));
    const std::string value = item.substr(eq + 1);
    const ParamKey* info = nullptr;
    for (const ParamKey& k : param_keys())
      if (key == k.key) info = &k;
    if (info == nullptr) {
      std::string list;
      for (const ParamKey& k : param_keys()) list += std::string(list.empty() ? "" : ", ") + k.key;
      throw UsageError("--param: unknown key '" + key + "' (known: " + list + ")");
    }
    require(seen.insert(key).second, "--param: '" + key + "' given twice");
    if (!info->losses.empty() && std::find(info->losses.begin(), info->losses.end(), spec.loss) == info->losses.end())
      throw UsageError("--param: '" + key + "' does not apply to " + spec.name);
    const std::string what = "--param " + key;
    if (key == "delta") {
      spec.elementwise.delta = parse_double(value, what);
      require(spec.elementwise.delta > 0, what + " must be > 0");
    } else if (key == "beta") {
      spec.elementwise.beta = parse_double(value, what);
      require(spec.elementwise.beta >= 0, what + " must be >= 0");
    } else if (key == "pos_weight") {
      spec.elementwise.pos_weight = parse_double(value, what);
      require(spec.elementwise.pos_weight > 0, what + " must be > 0");
      spec.pos_weight_given = true;
    } else if (key == "ignore_index") {
      spec.rowwise.ignore_index = parse_int(value, what);
    } else if (key == "label_smoothing") {
      spec.rowwise.label_smoothing = parse_double(value, what);
      require(spec.rowwise.label_smoothing >= 0 && spec.rowwise.label_smoothing <= 1, what + " must be in [0, 1]");
    } else if (key == "z_loss") {
      spec.rowwise.z_loss = parse_double(value, what);
      require(spec.rowwise.z_loss >= 0, what + " must be >= 0");
    } else if (key == "softcap") {
      spec.rowwise.softcap = parse_double(value, what);
      require(spec.rowwise.softcap >= 0, what + " must be >= 0 (0 turns it off)");
    } else if (key == "log_target") {
      spec.rowwise.log_target = parse_bool(value, what);
    } else if (key == "temperature") {
      spec.rowwise.temperature = parse_double(value, what);
      require(spec.rowwise.temperature > 0, what + " must be > 0");
    } else if (key == "grad_scale") {
      spec.grad_scale = parse_double(value, what);
      const double mag = std::fabs(spec.grad_scale);
      require(mag == 0 || (mag >= std::numeric_limits<float>::min() && mag <= std::numeric_limits<float>::max()),
              what + " must be 0 (loss only) or have a magnitude in [FLT_MIN, FLT_MAX] = " +
                  "[1.1754943508222875e-38, 3.4028234663852886e38]");
    }
  }
  return spec;
}

std::vector<std::int64_t> HostProblem::loss_shape() const {
  if (spec.reduction != Reduction::None) return {};
  if (!rowwise || spec.loss == Loss::KLDiv) return input.shape;
  return {rows};
}

std::int64_t HostProblem::loss_count() const {
  std::int64_t n = 1;
  for (std::int64_t d : loss_shape()) n *= d;
  return n;
}

std::string HostProblem::describe() const {
  std::string s = spec.name + " " + fusedloss::dtype_name(dtype) + " " + shape_string(input.shape) +
                  " reduction=" + reduction_name(spec.reduction);
  if (spec.loss == Loss::CrossEntropy) s += sparse ? " (integer labels)" : " (soft targets)";
  return s;
}

std::vector<std::int64_t> parse_shape(const std::string& text, const std::string& what) {
  std::string t = lower(text);
  std::replace(t.begin(), t.end(), ',', 'x');
  std::vector<std::int64_t> shape;
  for (const std::string& part : split(t, 'x')) {
    const std::int64_t d = parse_size(part, what);
    shape.push_back(d);
  }
  require(!shape.empty(), what + ": empty shape");
  shape_numel(shape, what);
  return shape;
}

HostProblem load_problem(const LossSpec& spec, const InputFiles& files) {
  require(!files.input.empty(), "--input is required");
  require(!files.target.empty(), "--target is required");
  HostProblem p;
  p.spec = spec;
  p.rowwise = !fusedloss::is_elementwise(spec.loss);

  NpyArray x = read_npy(files.input);
  require(npy_is_float(x.type) || !p.rowwise,
          files.input + ": the input of " + spec.name + " must be a float array, got " + npy_descr(x.type));
  p.dtype = spec.dtype_given ? spec.dtype : default_value_dtype(x.type);
  NpyArray y = read_npy(files.target);

  if (!p.rowwise) {
    p.input = take_values(x, p.dtype, files.input);
    require(y.shape == x.shape, "shape mismatch: --target " + files.target + " has shape " + shape_string(y.shape) +
                                    ", --input has " + shape_string(x.shape));
    p.target = take_values(y, p.dtype, files.target);
    p.has_target = true;
    p.n = p.input.numel();
    if (!files.weight.empty()) {
      const NpyArray w = read_npy(files.weight);
      require(w.shape == x.shape, "shape mismatch: --weight " + files.weight + " has shape " + shape_string(w.shape) +
                                      ", --input has " + shape_string(x.shape));
      p.weight = to_values(w, p.dtype, files.weight);
      p.has_weight = true;
    }
    if (!files.pos_weight.empty()) {
      require(spec.loss == Loss::BCEWithLogits, "--pos-weight applies to bce_with_logits only");
      require(!spec.pos_weight_given, "--param pos_weight and --pos-weight " + files.pos_weight +
                                          " both set pos_weight; give one (a scalar or a per-column file)");
      const NpyArray pw = read_npy(files.pos_weight);
      require(pw.shape.size() == 1 && pw.shape[0] >= 1,
              "--pos-weight " + files.pos_weight + " must be a 1-D array [C], got shape " + shape_string(pw.shape));
      require(!x.shape.empty() && x.shape.back() == pw.shape[0],
              "shape mismatch: --pos-weight has " + std::to_string(pw.shape[0]) +
                  " columns but the input's last dimension is " +
                  (x.shape.empty() ? std::string("absent (0-d input)") : std::to_string(x.shape.back())));
      p.pos_weight = to_values(pw, DType::Float32, files.pos_weight);
      p.has_pos_weight = true;
    }
    return p;
  }

  // Row-wise: input [N, C].
  require(x.shape.size() == 2, "--input " + files.input + " must be 2-D [N, C] for " + spec.name + ", got shape " +
                                   shape_string(x.shape));
  require(x.shape[1] >= 1, "--input " + files.input + " has no classes (C = 0)");
  p.rows = x.shape[0];
  p.classes = x.shape[1];
  p.input = take_values(x, p.dtype, files.input);
  require(files.pos_weight.empty(), "--pos-weight applies to bce_with_logits only");
  const std::string n_shape = "[" + std::to_string(p.rows) + "]";
  const bool integer_target = !npy_is_float(y.type);
  if (spec.loss == Loss::CrossEntropy || spec.loss == Loss::NLL) {
    if (integer_target || spec.loss == Loss::NLL) {
      require(integer_target, "--target " + files.target + ": nll needs integer labels (int32/int64), got " +
                                  npy_descr(y.type));
      require(y.shape == std::vector<std::int64_t>{p.rows}, "shape mismatch: --target " + files.target +
                                                                " (labels) has shape " + shape_string(y.shape) +
                                                                ", expected " + n_shape);
      p.labels = to_labels(y, files.target);
      p.has_labels = true;
      p.sparse = true;
    } else {
      // A 1-D float target is almost always class indices saved with the wrong dtype.
      require(y.shape == x.shape, "shape mismatch: --target " + files.target + " (soft targets) has shape " +
                                      shape_string(y.shape) + ", --input has " + shape_string(x.shape) +
                                      (y.shape.size() == 1
                                           ? std::string("; class-index labels must be int32 or int64 (got ") + npy_descr(y.type) +
                                                 "); soft targets must have shape [N, C] = " + shape_string(x.shape)
                                           : std::string()));
      p.target = take_values(y, p.dtype, files.target);
      p.has_target = true;
    }
    if (!p.sparse && spec.rowwise.ignore_index != -100)
      throw UsageError("--param ignore_index applies to integer labels, not soft targets");
    if (!files.weight.empty()) {
      const NpyArray w = read_npy(files.weight);
      require(w.shape == std::vector<std::int64_t>{p.classes}, "shape mismatch: --weight " + files.weight +
                                                                   " (class weights) has shape " +
                                                                   shape_string(w.shape) + ", expected [" +
                                                                   std::to_string(p.classes) + "]");
      p.class_weight = to_values(w, DType::Float32, files.weight);
      p.has_class_weight = true;
    }
  } else {  // kl_div, kl_div_logits
    require(!integer_target, "--target " + files.target + ": " + spec.name + " needs a float target [N, C], got " +
                                 npy_descr(y.type));
    require(y.shape == x.shape, "shape mismatch: --target " + files.target + " has shape " + shape_string(y.shape) +
                                    ", --input has " + shape_string(x.shape));
    p.target = take_values(y, p.dtype, files.target);
    p.has_target = true;
    require(files.weight.empty(), "--weight is not supported by " + spec.name);
  }
  return p;
}

HostProblem generate_problem(const LossSpec& spec, const std::vector<std::int64_t>& shape, std::uint64_t seed,
                             bool soft, bool weighted) {
  HostProblem p;
  p.spec = spec;
  p.rowwise = !fusedloss::is_elementwise(spec.loss);
  p.dtype = spec.dtype_given ? spec.dtype : DType::Float32;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const Loss L = spec.loss;

  if (!p.rowwise) {
    require(!soft, "--soft applies to cross_entropy only");
    p.input = HostTensor(p.dtype, shape);
    p.target = HostTensor(p.dtype, shape);
    p.has_target = true;
    p.n = p.input.numel();
    for (std::int64_t i = 0; i < p.n; ++i) {
      double x = 0, y = 0;
      switch (L) {
        case Loss::MSLE: x = 4 * uniform(rng) - 0.2; y = 4 * uniform(rng); break;
        case Loss::Hinge:
        case Loss::SquaredHinge: x = 1.5 * normal(rng); y = uniform(rng) < 0.5 ? -1.0 : 1.0; break;
        case Loss::BCE: x = 0.001 + 0.998 * uniform(rng); y = uniform(rng); break;
        case Loss::BCEWithLogits: x = 3 * normal(rng); y = uniform(rng) < 0.5 ? 0.0 : uniform(rng); break;
        default: x = 2 * normal(rng); y = normal(rng); break;
      }
      set_value(p.input, i, x);
      set_value(p.target, i, y);
    }
    if (weighted) {
      p.weight = HostTensor(p.dtype, shape);
      for (std::int64_t i = 0; i < p.n; ++i) set_value(p.weight, i, 2 * uniform(rng));
      p.has_weight = true;
    }
    return p;
  }

  require(shape.size() == 2, "--shape for " + spec.name + " must be N x C (e.g. 512x32000), got " + shape_string(shape));
  p.rows = shape[0];
  p.classes = shape[1];
  const std::int64_t N = p.rows, C = p.classes;
  p.input = HostTensor(p.dtype, shape);
  std::vector<double> row(static_cast<std::size_t>(C));
  auto log_softmax_row = [&](std::vector<double>& r) {
    double m = -INFINITY;
    for (double v : r) m = std::max(m, v);
    double s = 0;
    for (double v : r) s += std::exp(v - m);
    const double lse = m + std::log(s);
    for (double& v : r) v -= lse;
  };
  for (std::int64_t n = 0; n < N; ++n) {
    for (std::int64_t c = 0; c < C; ++c) row[c] = 3 * normal(rng);
    if (L == Loss::NLL || L == Loss::KLDiv) log_softmax_row(row);
    for (std::int64_t c = 0; c < C; ++c) set_value(p.input, n * C + c, row[c]);
  }
  const bool sparse = L == Loss::NLL || (L == Loss::CrossEntropy && !soft);
  if (soft) require(L == Loss::CrossEntropy, "--soft applies to cross_entropy only");
  if (sparse) {
    p.labels = HostTensor(DType::Int64, {N});
    p.has_labels = true;
    p.sparse = true;
    std::uniform_int_distribution<std::int64_t> label(0, C - 1);
    for (std::int64_t n = 0; n < N; ++n) {
      // About 3% of the rows carry ignore_index, so the ignore path is exercised too.
      const std::int64_t v = (uniform(rng) < 0.03 && N > 1) ? spec.rowwise.ignore_index : label(rng);
      set_value(p.labels, n, static_cast<double>(v));
    }
  } else {
    p.target = HostTensor(p.dtype, shape);
    p.has_target = true;
    for (std::int64_t n = 0; n < N; ++n) {
      for (std::int64_t c = 0; c < C; ++c) row[c] = 3 * normal(rng);
      if (L != Loss::KLDivLogits) {  // probabilities (or log-probabilities for log_target)
        log_softmax_row(row);
        if (!(L == Loss::KLDiv && spec.rowwise.log_target))
          for (double& v : row) v = std::exp(v);
      }
      for (std::int64_t c = 0; c < C; ++c) set_value(p.target, n * C + c, row[c]);
    }
  }
  if (weighted) {
    require(!is_kl(L), "--weighted: " + spec.name + " takes no weights");
    p.class_weight = HostTensor(DType::Float32, {C});
    for (std::int64_t c = 0; c < C; ++c) set_value(p.class_weight, c, 0.25 + 1.5 * uniform(rng));
    p.has_class_weight = true;
  }
  return p;
}

fusedloss::ElementwiseProblem elementwise_problem(const HostProblem& h, const void* x, const void* y, const void* w,
                                                  const void* pw) {
  fusedloss::ElementwiseProblem p;
  p.loss = h.spec.loss;
  p.dtype = h.dtype;
  p.n = h.n;
  p.input = x;
  p.target = y;
  p.weight = h.has_weight ? w : nullptr;
  p.reduction = h.spec.reduction;
  p.grad_scale = h.spec.grad_scale;
  p.params = h.spec.elementwise;
  if (h.has_pos_weight) {
    p.params.pos_weight_per_column = static_cast<const float*>(pw);
    p.params.columns = h.pos_weight.numel();
  }
  return p;
}

fusedloss::RowwiseProblem rowwise_problem(const HostProblem& h, const void* x, const void* labels, const void* target,
                                          const void* class_weight) {
  fusedloss::RowwiseProblem p;
  p.loss = h.spec.loss;
  p.dtype = h.dtype;
  p.rows = h.rows;
  p.classes = h.classes;
  p.input = x;
  p.labels = h.has_labels ? labels : nullptr;
  p.label_dtype = h.has_labels ? h.labels.dtype : DType::Int64;
  p.target = h.has_target ? target : nullptr;
  p.class_weight = h.has_class_weight ? static_cast<const float*>(class_weight) : nullptr;
  p.reduction = h.spec.reduction;
  p.grad_scale = h.spec.grad_scale;
  p.params = h.spec.rowwise;
  return p;
}

namespace {



Status call(const HostProblem& h, const void* x, const void* y, const void* w, const void* pw, const void* labels,
            const void* class_weight, const fusedloss::LossOutputs& out, const fusedloss::ExecutionConfig& cfg) {
  if (!h.rowwise) return fusedloss::compute_sync(elementwise_problem(h, x, y, w, pw), out, cfg);
  return fusedloss::compute_sync(rowwise_problem(h, x, labels, y, class_weight), out, cfg);
}

void check_status(Status s, const HostProblem& h, Backend backend) {
  switch (s) {
    case Status::Success:
    case Status::InvalidValue: return;
    case Status::InvalidArgument:
      throw UsageError("the library rejected the call as an invalid argument: " + h.describe());
    case Status::NotSupported:
      if (backend == Backend::CUDA) throw NoGpuError("the CUDA path is not available (no usable GPU)");
      throw RuntimeFailure(std::string("the library reported: ") + fusedloss::status_string(s));
    default:
      throw RuntimeFailure(std::string("the library reported: ") + fusedloss::status_string(s) + " (" +
                           h.describe() + ")");
  }
}

}  // namespace

ProblemResult run_problem(const HostProblem& h, Backend backend, int threads, bool want_grad) {
  ProblemResult r;
  r.loss = HostTensor(DType::Float32, h.loss_shape());
  if (want_grad) r.grad = HostTensor(h.dtype, h.input.shape);
  if (h.has_lse()) r.lse = HostTensor(DType::Float32, {h.rows});

  fusedloss::ExecutionConfig cfg;
  cfg.backend = backend;
  cfg.cpu_threads = threads;
  fusedloss::LossOutputs out;

  if (backend == Backend::CPU) {
    out.loss = static_cast<float*>(r.loss.data());
    out.grad = want_grad ? r.grad.data() : nullptr;
    out.lse = h.has_lse() ? static_cast<float*>(r.lse.data()) : nullptr;
    out.error_count = &r.invalid_values;
    r.status = call(h, h.input.data(), h.has_target ? h.target.data() : nullptr, h.weight.data(),
                    h.pos_weight.data(), h.labels.data(), h.class_weight.data(), out, cfg);
    check_status(r.status, h, backend);
    return r;
  }

  // CUDA: copy everything to the device, compute, copy the results back.
  auto upload = [](const HostTensor& t) {
    gpu::Buffer b(t.bytes.size());
    gpu::copy_to_device(b.get(), t.data(), t.bytes.size());
    return b;
  };
  const gpu::Buffer x = upload(h.input), y = upload(h.target), w = upload(h.weight), pw = upload(h.pos_weight),
                    labels = upload(h.labels), cw = upload(h.class_weight);
  gpu::Buffer loss(r.loss.bytes.size()), grad(want_grad ? r.grad.bytes.size() : 0), lse(r.lse.bytes.size()),
      errors(sizeof(std::int64_t));
  gpu::memset_device(errors.get(), 0, sizeof(std::int64_t));
  out.loss = loss.as<float>();
  out.grad = grad.get();
  out.lse = lse.as<float>();
  out.error_count = errors.as<std::int64_t>();
  r.status = call(h, x.get(), y.get(), w.get(), pw.get(), labels.get(), cw.get(), out, cfg);
  check_status(r.status, h, backend);
  gpu::copy_to_host(r.loss.data(), loss.get(), loss.size());
  gpu::copy_to_host(r.grad.data(), grad.get(), grad.size());
  gpu::copy_to_host(r.lse.data(), lse.get(), lse.size());
  gpu::copy_to_host(&r.invalid_values, errors.get(), sizeof(std::int64_t));
  return r;
}

}  // namespace fusedloss_cli
