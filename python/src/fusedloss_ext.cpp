// The nanobind extension: DLPack arrays in, one fusedloss::compute call out. Outputs are
// allocated by the caller (the framework's allocator), so nothing is copied here and the CUDA
// path stays asynchronous on the stream the caller passes.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

#include "fusedloss/fusedloss.hpp"

namespace nb = nanobind;
using Array = nb::ndarray<>;
using OptArray = std::optional<Array>;

namespace {

std::string describe(fusedloss::Loss loss) { return std::string("fusedloss ") + fusedloss::loss_name(loss); }

/// The op an error message names: a loss, or an op name such as "fusedloss linear_cross_entropy".
struct Who {
  std::string name;
  Who(fusedloss::Loss loss) : name(describe(loss)) {}  // NOLINT(google-explicit-constructor)
  Who(const char* op) : name(op) {}                     // NOLINT(google-explicit-constructor)
};

fusedloss::DType value_dtype(const Array& a, const char* what, const Who& who) {
  const nb::dlpack::dtype d = a.dtype();
  if (d.lanes == 1 && d.code == uint8_t(nb::dlpack::dtype_code::Float)) {
    if (d.bits == 32) return fusedloss::DType::Float32;
    if (d.bits == 16) return fusedloss::DType::Float16;
  }
  if (d.lanes == 1 && d.code == uint8_t(nb::dlpack::dtype_code::Bfloat) && d.bits == 16)
    return fusedloss::DType::BFloat16;
  throw nb::type_error((who.name + ": " + what + " must be float32, float16 or bfloat16").c_str());
}

fusedloss::DType label_dtype(const Array& a, const Who& who) {
  const nb::dlpack::dtype d = a.dtype();
  if (d.lanes == 1 && d.code == uint8_t(nb::dlpack::dtype_code::Int)) {
    if (d.bits == 64) return fusedloss::DType::Int64;
    if (d.bits == 32) return fusedloss::DType::Int32;
  }
  throw nb::type_error((who.name + ": class labels must be int64 or int32").c_str());
}

bool is_float32(const Array& a) {
  const nb::dlpack::dtype d = a.dtype();
  return d.lanes == 1 && d.code == uint8_t(nb::dlpack::dtype_code::Float) && d.bits == 32;
}

/// Elements are adjacent in memory in C order (any stride is fine along a size-1 dimension).
bool dense(const Array& a) {
  int64_t expected = 1;
  for (size_t i = a.ndim(); i-- > 0;) {
    if (a.shape(i) != 1 && a.stride(i) != expected) return false;
    expected *= int64_t(a.shape(i));
  }
  return true;
}

void require(bool ok, const Who& who, const std::string& message) {
  if (!ok) throw nb::value_error((who.name + ": " + message).c_str());
}

void require_dense(const Array& a, const Who& who, const char* what) {
  require(dense(a), who, std::string(what) + " must be contiguous");
}

/// The int64 scalar the library overwrites with the number of invalid data values.
std::int64_t* error_count_ptr(const Array& a, const Who& who) {
  const nb::dlpack::dtype d = a.dtype();
  require(a.size() == 1 && d.lanes == 1 && d.code == uint8_t(nb::dlpack::dtype_code::Int) && d.bits == 64, who,
          "error_count must be one int64");
  return static_cast<std::int64_t*>(a.data());
}

/// All arrays of one call share the first array's device.
void require_same_device(const Array& first, const OptArray& other, const Who& who, const char* what) {
  if (!other) return;
  require(other->device_type() == first.device_type() && other->device_id() == first.device_id(), who,
          std::string(what) + " is on a different device than the input");
}

/// Phase 1 and 2 of the C++ API. Returns the workspace bytes still needed (nothing computed) when
/// `workspace` is absent or too small, else 0 after computing. InvalidValue is not an error here:
/// the bad elements are reported through error_count, as on the asynchronous CUDA path.
/// `who` names the op in error messages.
template <class Problem, class Outputs>
std::size_t run(const Problem& problem, const Outputs& out, const Array& input, int cpu_threads,
                std::uintptr_t stream, const OptArray& workspace, const Who& who) {
  fusedloss::ExecutionConfig cfg;
  cfg.cpu_threads = cpu_threads;
  cfg.backend = input.device_type() == nb::device::cpu::value ? fusedloss::Backend::CPU : fusedloss::Backend::CUDA;
  cfg.stream = reinterpret_cast<CUstream_st*>(stream);
  std::size_t need = 0;
  fusedloss::Status s = fusedloss::workspace_size(problem, out, cfg, &need);
  if (s == fusedloss::Status::Success) {
    const std::size_t have = workspace ? workspace->nbytes() : 0;
    if (need > have) return need;
    if (need > 0) {
      cfg.workspace = workspace->data();
      cfg.workspace_bytes = have;
    }
    nb::gil_scoped_release release;
    s = fusedloss::compute(problem, out, cfg);
  }
  if (s == fusedloss::Status::Success || s == fusedloss::Status::InvalidValue) return 0;
  const std::string message = who.name + ": " + fusedloss::status_string(s);
  if (s == fusedloss::Status::InvalidArgument) throw nb::value_error(message.c_str());
  throw std::runtime_error(message);
}

/// The sparse cross_entropy options RowwiseProblem and LinearCrossEntropyProblem share.
template <class Problem>
void set_cross_entropy_options(Problem& p, const OptArray& class_weight, const Who& who, const char* weight_message,
                               int reduction, double grad_scale, int64_t ignore_index, double label_smoothing,
                               double z_loss, double softcap) {
  if (class_weight) {
    require(is_float32(*class_weight) && class_weight->ndim() == 1 && int64_t(class_weight->shape(0)) == p.classes &&
                dense(*class_weight),
            who, weight_message);
    p.class_weight = static_cast<const float*>(class_weight->data());
  }
  p.reduction = static_cast<fusedloss::Reduction>(reduction);
  p.grad_scale = grad_scale;
  p.params.ignore_index = ignore_index;
  p.params.label_smoothing = label_smoothing;
  p.params.z_loss = z_loss;
  p.params.softcap = softcap;
}

std::size_t elementwise(int loss_id, const Array& input, const Array& target, const OptArray& weight,
                        const OptArray& pos_weight, int reduction, double grad_scale, double delta, double beta,
                        double pos_weight_scalar, const Array& loss_out, const OptArray& grad, const Array& error_count,
                        int cpu_threads, std::uintptr_t stream, const OptArray& workspace) {
  const auto loss = static_cast<fusedloss::Loss>(loss_id);
  require(fusedloss::is_elementwise(loss), loss, "not an elementwise loss");
  fusedloss::ElementwiseProblem p;
  p.loss = loss;
  p.dtype = value_dtype(input, "input", loss);
  p.n = int64_t(input.size());
  require(target.size() == input.size(), loss, "target must have as many elements as the input");
  require(value_dtype(target, "target", loss) == p.dtype, loss, "target must have the input's dtype");
  require_dense(input, loss, "input");
  require_dense(target, loss, "target");
  p.input = input.data();
  p.target = target.data();
  if (weight) {
    require(weight->size() == input.size() && value_dtype(*weight, "weight", loss) == p.dtype, loss,
            "weight must have the input's shape and dtype");
    require_dense(*weight, loss, "weight");
    p.weight = weight->data();
  }
  if (pos_weight) {
    require(is_float32(*pos_weight) && pos_weight->ndim() == 1 && dense(*pos_weight), loss,
            "pos_weight must be a contiguous float32 vector");
    p.params.pos_weight_per_column = static_cast<const float*>(pos_weight->data());
    p.params.columns = int64_t(pos_weight->size());
  }
  p.reduction = static_cast<fusedloss::Reduction>(reduction);
  p.grad_scale = grad_scale;
  p.params.delta = delta;
  p.params.beta = beta;
  p.params.pos_weight = pos_weight_scalar;
  for (const OptArray& a : {OptArray(target), weight, pos_weight, OptArray(loss_out), grad, OptArray(error_count)})
    require_same_device(input, a, loss, "an argument");

  fusedloss::LossOutputs out;
  require(is_float32(loss_out) && dense(loss_out), loss, "loss output must be contiguous float32");
  require(loss_out.size() == (p.reduction == fusedloss::Reduction::None ? input.size() : 1), loss,
          "loss output has the wrong size");
  out.loss = static_cast<float*>(loss_out.data());
  if (grad) {
    require(grad->size() == input.size() && dense(*grad) && value_dtype(*grad, "grad", loss) == p.dtype, loss,
            "grad must be contiguous with the input's shape and dtype");
    out.grad = grad->data();
  }
  out.error_count = error_count_ptr(error_count, loss);
  return run(p, out, input, cpu_threads, stream, workspace, loss);
}

std::size_t rowwise(int loss_id, const Array& input, const OptArray& labels, const OptArray& target,
                    const OptArray& class_weight, int reduction, double grad_scale, int64_t ignore_index,
                    double label_smoothing, double z_loss, double softcap, bool log_target, double temperature,
                    const Array& loss_out, const OptArray& grad, const OptArray& lse, const Array& error_count,
                    int cpu_threads, std::uintptr_t stream, const OptArray& workspace) {
  const auto loss = static_cast<fusedloss::Loss>(loss_id);
  require(!fusedloss::is_elementwise(loss), loss, "not a row-wise loss");
  require(input.ndim() == 2, loss, "input must be 2-D [N, C]");
  fusedloss::RowwiseProblem p;
  p.loss = loss;
  p.dtype = value_dtype(input, "input", loss);
  p.rows = int64_t(input.shape(0));
  p.classes = int64_t(input.shape(1));
  // Rows may be padded (row stride >= C); classes within a row must be adjacent.
  const bool unit_inner = p.classes == 1 || input.stride(1) == 1;
  p.row_stride = p.rows <= 1 ? p.classes : input.stride(0);
  require(unit_inner && p.row_stride >= p.classes, loss, "input rows must be contiguous with a row stride >= C");
  p.input = input.data();
  if (labels) {
    require(labels->ndim() == 1 && int64_t(labels->shape(0)) == p.rows && dense(*labels), loss,
            "target labels must be a contiguous [N] vector");
    p.labels = labels->data();
    p.label_dtype = label_dtype(*labels, loss);
  }
  auto same_layout = [&](const Array& a) {
    return a.ndim() == 2 && a.shape(0) == input.shape(0) && a.shape(1) == input.shape(1) &&
           (p.rows <= 1 || a.stride(0) == input.stride(0)) && (p.classes == 1 || a.stride(1) == 1);
  };
  if (target) {
    require(same_layout(*target), loss, "target must have the input's shape and row stride");
    require(value_dtype(*target, "target", loss) == p.dtype, loss, "target must have the input's dtype");
    p.target = target->data();
  }
  set_cross_entropy_options(p, class_weight, loss, "weight must be a contiguous float32 [C] vector", reduction,
                            grad_scale, ignore_index, label_smoothing, z_loss, softcap);
  p.params.log_target = log_target;
  p.params.temperature = temperature;
  for (const OptArray& a : {labels, target, class_weight, OptArray(loss_out), grad, lse, OptArray(error_count)})
    require_same_device(input, a, loss, "an argument");

  fusedloss::LossOutputs out;
  require(is_float32(loss_out) && dense(loss_out), loss, "loss output must be contiguous float32");
  out.loss = static_cast<float*>(loss_out.data());
  if (grad) {
    require(same_layout(*grad) && value_dtype(*grad, "grad", loss) == p.dtype, loss,
            "grad must have the input's shape, row stride and dtype");
    out.grad = grad->data();
  }
  if (lse) {
    require(is_float32(*lse) && lse->ndim() == 1 && int64_t(lse->shape(0)) == p.rows && dense(*lse), loss,
            "lse output must be a contiguous float32 [N] vector");
    out.lse = static_cast<float*>(lse->data());
  }
  out.error_count = error_count_ptr(error_count, loss);
  return run(p, out, input, cpu_threads, stream, workspace, loss);
}

/// A memory budget that cannot hold one row is the one invalid argument the caller cannot spot from
/// the shapes alone, so it gets its own message naming the smallest budget the plan accepts (found
/// by bisection: a plan call is cheap and allocates nothing, and acceptance grows with the budget).
void require_budget_fits_a_row(const fusedloss::LinearCrossEntropyProblem& p,
                               const fusedloss::LinearCrossEntropyOutputs& out, const Array& hidden, const Who& who) {
  fusedloss::ExecutionConfig cfg;
  cfg.backend = hidden.device_type() == nb::device::cpu::value ? fusedloss::Backend::CPU : fusedloss::Backend::CUDA;
  fusedloss::LinearCrossEntropyProblem q = p;
  fusedloss::LinearCrossEntropyPlan plan;
  const auto accepts = [&](std::size_t budget) {
    q.memory_budget_bytes = budget;
    return fusedloss::linear_cross_entropy_plan(q, out, cfg, &plan) == fusedloss::Status::Success;
  };
  if (accepts(p.memory_budget_bytes) || !accepts(std::numeric_limits<std::size_t>::max())) return;
  std::size_t lo = p.memory_budget_bytes, hi = std::numeric_limits<std::size_t>::max();  // lo refused, hi accepted
  while (hi - lo > 1) {
    const std::size_t mid = lo + (hi - lo) / 2;
    (accepts(mid) ? hi : lo) = mid;
  }
  require(false, who,
          "memory_budget of " + std::to_string(p.memory_budget_bytes) +
              " bytes cannot hold one row; this call needs at least " + std::to_string(hi) + " bytes");
}

/// hidden [N, H] (row stride >= H) · weight[V, H]ᵀ + bias → sparse cross_entropy, in chunks within
/// `memory_budget` bytes of workspace; every output but loss and error_count optional.
std::size_t linear_cross_entropy(const Array& hidden, const Array& weight, const OptArray& bias, const Array& labels,
                                 const OptArray& class_weight, int reduction, double grad_scale, int64_t ignore_index,
                                 double label_smoothing, double z_loss, double softcap, std::size_t memory_budget,
                                 int64_t max_chunk_rows, const Array& loss_out, const OptArray& lse,
                                 const OptArray& grad_hidden, const OptArray& grad_weight, const OptArray& grad_bias,
                                 const Array& error_count, int cpu_threads, std::uintptr_t stream,
                                 const OptArray& workspace) {
  const Who who("fusedloss linear_cross_entropy");
  auto check = [&](bool ok, const std::string& message) { require(ok, who, message); };
  auto dtype_of = [&](const Array& a, const char* name) { return value_dtype(a, name, who); };
  check(hidden.ndim() == 2, "hidden must be 2-D [N, H]");
  check(weight.ndim() == 2, "weight must be 2-D [V, H]");
  fusedloss::LinearCrossEntropyProblem p;
  p.dtype = dtype_of(hidden, "hidden");
  p.rows = int64_t(hidden.shape(0));
  p.hidden_size = int64_t(hidden.shape(1));
  p.classes = int64_t(weight.shape(0));
  check(int64_t(weight.shape(1)) == p.hidden_size, "weight must be [V, H] with hidden's H");
  check(dtype_of(weight, "weight") == p.dtype, "weight must have hidden's dtype");
  check(dense(weight), "weight must be contiguous");
  // Rows of hidden may be padded (row stride >= H); a row's elements must be adjacent.
  p.hidden_stride = p.rows <= 1 ? p.hidden_size : hidden.stride(0);
  check((p.hidden_size == 1 || hidden.stride(1) == 1) && p.hidden_stride >= p.hidden_size,
        "hidden rows must be contiguous with a row stride >= H");
  p.hidden = hidden.data();
  p.weight = weight.data();
  if (bias) {
    check(bias->ndim() == 1 && int64_t(bias->shape(0)) == p.classes && dense(*bias) &&
              dtype_of(*bias, "bias") == p.dtype,
          "bias must be a contiguous [V] vector of hidden's dtype");
    p.bias = bias->data();
  }
  check(labels.ndim() == 1 && int64_t(labels.shape(0)) == p.rows && dense(labels),
        "target labels must be a contiguous [N] vector");
  p.label_dtype = label_dtype(labels, who);
  p.labels = labels.data();
  set_cross_entropy_options(p, class_weight, who, "class_weight must be a contiguous float32 [V] vector", reduction,
                            grad_scale, ignore_index, label_smoothing, z_loss, softcap);
  p.memory_budget_bytes = memory_budget;
  p.max_chunk_rows = max_chunk_rows;
  for (const OptArray& a : {OptArray(weight), bias, OptArray(labels), class_weight, OptArray(loss_out), lse,
                            grad_hidden, grad_weight, grad_bias, OptArray(error_count)})
    require_same_device(hidden, a, who, "an argument");

  fusedloss::LinearCrossEntropyOutputs out;
  check(is_float32(loss_out) && dense(loss_out), "loss output must be contiguous float32");
  check(loss_out.size() == (p.reduction == fusedloss::Reduction::None ? std::size_t(p.rows) : 1),
        "loss output has the wrong size");
  out.loss = static_cast<float*>(loss_out.data());
  if (lse) {
    check(is_float32(*lse) && lse->ndim() == 1 && int64_t(lse->shape(0)) == p.rows && dense(*lse),
          "lse output must be a contiguous float32 [N] vector");
    out.lse = static_cast<float*>(lse->data());
  }
  if (grad_hidden) {
    check(grad_hidden->ndim() == 2 && grad_hidden->shape(0) == hidden.shape(0) &&
              grad_hidden->shape(1) == hidden.shape(1) && (p.rows <= 1 || grad_hidden->stride(0) == p.hidden_stride) &&
              (p.hidden_size == 1 || grad_hidden->stride(1) == 1) && dtype_of(*grad_hidden, "grad_hidden") == p.dtype,
          "grad_hidden must have hidden's shape, row stride and dtype");
    out.grad_hidden = grad_hidden->data();
  }
  if (grad_weight) {
    check(grad_weight->size() == weight.size() && dense(*grad_weight) &&
              dtype_of(*grad_weight, "grad_weight") == p.dtype,
          "grad_weight must be contiguous with weight's shape and dtype");
    out.grad_weight = grad_weight->data();
  }
  if (grad_bias) {
    check(grad_bias->size() == std::size_t(p.classes) && dense(*grad_bias) &&
              dtype_of(*grad_bias, "grad_bias") == p.dtype,
          "grad_bias must be a contiguous [V] vector of hidden's dtype");
    out.grad_bias = grad_bias->data();
  }
  out.error_count = error_count_ptr(error_count, who);
  require_budget_fits_a_row(p, out, hidden, who);
  return run(p, out, hidden, cpu_threads, stream, workspace, who);
}

}  // namespace

NB_MODULE(_fusedloss, m) {
  m.doc() = "fusedloss C++ entry points on DLPack arrays (use fusedloss / fusedloss.torch instead)";
  m.def("elementwise", &elementwise, nb::arg("loss"), nb::arg("input"), nb::arg("target"), nb::arg("weight").none(),
        nb::arg("pos_weight").none(), nb::arg("reduction"), nb::arg("grad_scale"), nb::arg("delta"), nb::arg("beta"),
        nb::arg("pos_weight_scalar"), nb::arg("loss_out"), nb::arg("grad").none(), nb::arg("error_count"),
        nb::arg("cpu_threads"), nb::arg("stream"), nb::arg("workspace").none());
  m.def("rowwise", &rowwise, nb::arg("loss"), nb::arg("input"), nb::arg("labels").none(), nb::arg("target").none(),
        nb::arg("class_weight").none(), nb::arg("reduction"), nb::arg("grad_scale"), nb::arg("ignore_index"),
        nb::arg("label_smoothing"), nb::arg("z_loss"), nb::arg("softcap"), nb::arg("log_target"),
        nb::arg("temperature"), nb::arg("loss_out"), nb::arg("grad").none(), nb::arg("lse").none(),
        nb::arg("error_count"), nb::arg("cpu_threads"), nb::arg("stream"), nb::arg("workspace").none());
  m.def("linear_cross_entropy", &linear_cross_entropy, nb::arg("hidden"), nb::arg("weight"), nb::arg("bias").none(),
        nb::arg("labels"), nb::arg("class_weight").none(), nb::arg("reduction"), nb::arg("grad_scale"),
        nb::arg("ignore_index"), nb::arg("label_smoothing"), nb::arg("z_loss"), nb::arg("softcap"),
        nb::arg("memory_budget"), nb::arg("max_chunk_rows"), nb::arg("loss_out"), nb::arg("lse").none(),
        nb::arg("grad_hidden").none(), nb::arg("grad_weight").none(), nb::arg("grad_bias").none(),
        nb::arg("error_count"), nb::arg("cpu_threads"), nb::arg("stream"), nb::arg("workspace").none());
  m.def("parse_loss", [](const std::string& name) {
    fusedloss::Loss loss;
    if (!fusedloss::parse_loss(name.c_str(), &loss)) throw nb::value_error(("unknown loss '" + name + "'").c_str());
    return std::make_pair(int(loss), fusedloss::is_elementwise(loss));
  });
  m.def("cuda_available", &fusedloss::cuda_available);
}
