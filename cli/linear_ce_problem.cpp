// fusedloss CLI — linear_cross_entropy problems in host memory and one run of them (see linear_ce_problem.hpp).
#include "cli/linear_ce_problem.hpp"

#include <cmath>
#include <random>
#include <string>

#include "cli/common.hpp"
#include "cli/gpu_runtime.hpp"
#include "cli/npy.hpp"
#include "fusedloss/fusedloss.hpp"

namespace fusedloss_cli {

namespace fl = ::fusedloss;

LinearCeHost load_linear_ce(const LossSpec& spec, const InputFiles& files) {
  if (files.linear_weight.empty()) throw UsageError("linear_cross_entropy needs --linear-weight W.npy [V, H]");
  if (files.target.empty()) throw UsageError("--target is required with --input");
  if (!files.pos_weight.empty()) throw UsageError("--pos-weight does not apply to linear_cross_entropy");
  LinearCeHost h;
  h.spec = spec;
  NpyArray hidden_npy = read_npy(files.input), weight_npy = read_npy(files.linear_weight);
  h.dtype = spec.dtype_given ? spec.dtype : default_value_dtype(hidden_npy.type);
  if (hidden_npy.shape.size() != 2) throw UsageError("--input (hidden) must be 2-D [N, H], got " + shape_string(hidden_npy.shape));
  if (weight_npy.shape.size() != 2 || weight_npy.shape[1] != hidden_npy.shape[1])
    throw UsageError("--linear-weight must be [V, H] with H = " + std::to_string(hidden_npy.shape[1]) + ", got " +
                     shape_string(weight_npy.shape));
  h.N = hidden_npy.shape[0];
  h.H = hidden_npy.shape[1];
  h.V = weight_npy.shape[0];
  h.hidden = take_values(hidden_npy, h.dtype, "--input");
  h.weight = take_values(weight_npy, h.dtype, "--linear-weight");
  h.labels = to_labels(read_npy(files.target), "--target");
  if (h.labels.shape != std::vector<std::int64_t>{h.N})
    throw UsageError("--target must hold N = " + std::to_string(h.N) + " labels, got " + shape_string(h.labels.shape));
  if (!files.bias.empty()) {
    h.bias = to_values(read_npy(files.bias), h.dtype, "--bias");
    if (h.bias.shape != std::vector<std::int64_t>{h.V}) throw UsageError("--bias must be [V], got " + shape_string(h.bias.shape));
  }
  if (!files.weight.empty()) {
    h.class_weight = to_values(read_npy(files.weight), fl::DType::Float32, "--weight");
    if (h.class_weight.shape != std::vector<std::int64_t>{h.V})
      throw UsageError("--weight (class weights) must be [V], got " + shape_string(h.class_weight.shape));
  }
  return h;
}

LinearCeHost generate_linear_ce(const LossSpec& spec, const std::vector<std::int64_t>& shape, std::uint64_t seed,
                                bool weighted) {
  if (shape.size() != 3 || shape[0] < 0 || shape[1] < 1 || shape[2] < 1)
    throw UsageError("--shape for linear_cross_entropy must be N x H x V (e.g. 37x65x1003), got " + shape_string(shape));
  LinearCeHost h;
  h.spec = spec;
  h.dtype = spec.dtype_given ? spec.dtype : fl::DType::Float32;
  h.N = shape[0];
  h.H = shape[1];
  h.V = shape[2];
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::uniform_int_distribution<std::int64_t> label(0, h.V - 1);
  h.hidden = HostTensor(h.dtype, {h.N, h.H});
  h.weight = HostTensor(h.dtype, {h.V, h.H});
  h.bias = HostTensor(h.dtype, {h.V});
  h.labels = HostTensor(fl::DType::Int64, {h.N});
  for (std::int64_t i = 0; i < h.N * h.H; ++i) set_value(h.hidden, i, normal(rng));
  const double w_scale = 2.0 / std::sqrt(static_cast<double>(h.H));
  for (std::int64_t i = 0; i < h.V * h.H; ++i) set_value(h.weight, i, w_scale * normal(rng));
  for (std::int64_t v = 0; v < h.V; ++v) set_value(h.bias, v, normal(rng));
  auto* y = static_cast<std::int64_t*>(h.labels.data());
  for (std::int64_t n = 0; n < h.N; ++n) y[n] = uniform(rng) < 0.1 && h.N > 1 ? spec.rowwise.ignore_index : label(rng);
  if (weighted) {
    h.class_weight = HostTensor(fl::DType::Float32, {h.V});
    for (std::int64_t v = 0; v < h.V; ++v) set_value(h.class_weight, v, 0.5 + 1.5 * uniform(rng));
  }
  return h;
}

LinearCeRun run_linear_ce(const LinearCeHost& h, fl::Backend backend, int threads, bool grad) {
  const bool none = h.spec.reduction == fl::Reduction::None;
  LinearCeRun r;
  r.loss = HostTensor(fl::DType::Float32, none ? std::vector<std::int64_t>{h.N} : std::vector<std::int64_t>{});
  r.lse = HostTensor(fl::DType::Float32, {h.N});
  if (grad) {
    r.grad_hidden = HostTensor(h.dtype, {h.N, h.H});
    r.grad_weight = HostTensor(h.dtype, {h.V, h.H});
    if (h.has_bias()) r.grad_bias = HostTensor(h.dtype, {h.V});
  }
  // Inputs and outputs where the backend reads them: the host tensors (CPU) or device copies (CUDA).
  const bool cuda = backend == fl::Backend::CUDA;
  std::vector<gpu::Buffer> device;
  auto in = [&](const HostTensor& t) -> const void* {
    if (t.bytes.empty()) return nullptr;
    if (!cuda) return t.data();
    device.emplace_back(t.bytes.size());
    gpu::copy_to_device(device.back().get(), t.data(), t.bytes.size());
    return device.back().get();
  };
  auto out = [&](HostTensor& t) -> void* {
    if (t.bytes.empty()) return nullptr;
    if (!cuda) return t.data();
    device.emplace_back(t.bytes.size());
    return device.back().get();
  };
  device.reserve(12);
  fl::LinearCrossEntropyProblem p;
  p.dtype = h.dtype;
  p.rows = h.N;
  p.hidden_size = h.H;
  p.classes = h.V;
  p.hidden = in(h.hidden);
  p.weight = in(h.weight);
  p.bias = in(h.bias);
  p.labels = in(h.labels);
  p.label_dtype = h.labels.dtype;
  p.class_weight = static_cast<const float*>(in(h.class_weight));
  p.reduction = h.spec.reduction;
  p.grad_scale = h.spec.grad_scale;
  p.params = h.spec.rowwise;
  fl::LinearCrossEntropyOutputs o;
  o.loss = static_cast<float*>(out(r.loss));
  o.lse = static_cast<float*>(out(r.lse));
  o.grad_hidden = out(r.grad_hidden);
  o.grad_weight = out(r.grad_weight);
  o.grad_bias = out(r.grad_bias);
  HostTensor errors(fl::DType::Int64, {1});
  o.error_count = static_cast<std::int64_t*>(out(errors));
  if (cuda) gpu::memset_device(o.error_count, 0, sizeof(std::int64_t));
  fl::ExecutionConfig cfg;
  cfg.backend = backend;
  cfg.cpu_threads = threads;
  r.status = fl::compute_sync(p, o, cfg);
  if (r.status != fl::Status::Success && r.status != fl::Status::InvalidValue)
    throw UsageError(std::string("linear_cross_entropy: ") + fl::status_string(r.status) +
                     (r.status == fl::Status::InvalidArgument
                          ? " (an option out of range, or shapes the memory budget cannot hold)"
                          : ""));
  if (cuda) {
    auto back = [&](HostTensor& t, const void* d) {
      if (!t.bytes.empty()) gpu::copy_to_host(t.data(), d, t.bytes.size());
    };
    back(r.loss, o.loss);
    back(r.lse, o.lse);
    back(r.grad_hidden, o.grad_hidden);
    back(r.grad_weight, o.grad_weight);
    back(r.grad_bias, o.grad_bias);
    back(errors, o.error_count);
  }
  r.invalid_values = static_cast<const std::int64_t*>(errors.data())[0];
  return r;
}

}  // namespace fusedloss_cli
