// GPU tests of the row-wise losses (cross_entropy sparse / soft, nll, kl_div, kl_div_logits):
// the CUDA path (Backend::CUDA on device copies) against the CPU path (Backend::CPU on host
// copies) for every loss × option × reduction × dtype over a spread of shapes, plus edge values,
// determinism, CUDA graphs, concurrent streams and an N·C > 2^32 case.
//
// Every test GTEST_SKIP()s when no CUDA device is usable (CI has none).
//
// Tolerance: the one rule of `fusedloss validate` (cli/compare.hpp, through cuda/validate_tolerance.hpp)
// for loss, lse and gradient, with T, the gradient's term scale, from the problem. NaN must match NaN
// and ±inf must match exactly.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "fusedloss/api.hpp"
#include "fusedloss/cuda/device_common.cuh"
#include "fusedloss/float16.hpp"
#include "fusedloss/types.hpp"
#include "cli/compare.hpp"
#include "cuda/emulated_scale.hpp"
#include "cuda/validate_tolerance.hpp"
#include "oracle/oracle.hpp"

namespace {

/// Outputs and guard bytes are filled with this before a call: 0x5A5A… is a finite value in f32,
/// f16 and bf16, so an output the call failed to write can never pass for an expected NaN.
constexpr unsigned char kPoisonFill = 0x5A;

using fusedloss::Backend;
using fusedloss::DType;
using fusedloss::ExecutionConfig;
using fusedloss::Loss;
using fusedloss::LossOutputs;
using fusedloss::Reduction;
using fusedloss::RowwiseProblem;
using fusedloss::Status;

bool device_usable() {
  static int state = -1;
  if (state < 0) {
    int n = 0;
    const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0 && fusedloss::cuda_available();
    cudaGetLastError();
    state = ok ? 1 : 0;
  }
  return state == 1;
}

#define REQUIRE_DEVICE()                                          \
  do {                                                            \
    if (!device_usable()) GTEST_SKIP() << "no usable CUDA device"; \
  } while (0)

#define CUDA_OK(expr) ASSERT_EQ((expr), cudaSuccess) << #expr

// ---- dtype helpers (host) ----------------------------------------------------------------------------

std::size_t esize(DType d) { return d == DType::Float32 ? 4 : 2; }

void put_value(DType d, std::vector<std::uint8_t>& buf, std::size_t i, float v) {
  if (d == DType::Float32) {
    std::memcpy(buf.data() + 4 * i, &v, 4);
  } else {
    const std::uint16_t bits = d == DType::Float16 ? fusedloss::to_half(v).bits : fusedloss::to_bfloat16(v).bits;
    std::memcpy(buf.data() + 2 * i, &bits, 2);
  }
}

float get_value(DType d, const std::vector<std::uint8_t>& buf, std::size_t i) {
  if (d == DType::Float32) {
    float v;
    std::memcpy(&v, buf.data() + 4 * i, 4);
    return v;
  }
  std::uint16_t bits;
  std::memcpy(&bits, buf.data() + 2 * i, 2);
  return d == DType::Float16 ? fusedloss::to_float(fusedloss::half_t{bits})
                             : fusedloss::to_float(fusedloss::bfloat16_t{bits});
}

// ---- device buffer -------------------------------------------------------------------------------------

/// Device allocation of at least 64 bytes (so that empty inputs still get a non-null pointer).
struct DevBuf {
  void* p = nullptr;
  std::size_t bytes = 0;
  DevBuf() = default;
  explicit DevBuf(std::size_t n) : bytes(n) {
    if (cudaMalloc(&p, n > 64 ? n : 64) != cudaSuccess) {
      cudaGetLastError();
      p = nullptr;
    }
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf(DevBuf&& o) noexcept : p(o.p), bytes(o.bytes) {
    o.p = nullptr;
    o.bytes = 0;
  }
  DevBuf& operator=(DevBuf&& o) noexcept {
    if (this != &o) {
      if (p != nullptr) cudaFree(p);
      p = o.p;
      bytes = o.bytes;
      o.p = nullptr;
      o.bytes = 0;
    }
    return *this;
  }
  ~DevBuf() {
    if (p != nullptr) cudaFree(p);
  }
  bool ok() const { return p != nullptr; }
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

DevBuf upload(const void* src, std::size_t bytes) {
  DevBuf b(bytes);
  if (b.ok() && bytes > 0) cudaMemcpy(b.p, src, bytes, cudaMemcpyHostToDevice);
  return b;
}

template <class T>
std::vector<T> download(const void* src, std::size_t count) {
  std::vector<T> v(count);
  if (count > 0) cudaMemcpy(v.data(), src, count * sizeof(T), cudaMemcpyDeviceToHost);
  return v;
}

// ---- test cases ------------------------------------------------------------------------------------------

/// One loss configuration (the "variant") — everything except shape, dtype and reduction.
struct Variant {
  const char* name;
  Loss loss;
  bool sparse = false;      ///< cross_entropy with labels (nll always has labels)
  DType label_dtype = DType::Int64;
  bool weights = false;
  double eps = 0.0, z_loss = 0.0, softcap = 0.0, temperature = 1.0;
  bool log_target = false;
  bool lse = false;
  double ignore_frac = 0.0, bad_frac = 0.0;
};

const Variant kVariants[] = {
    {"ce", Loss::CrossEntropy, true, DType::Int64, false, 0, 0, 0, 1, false, false, 0.1, 0},
    {"ce_i32_weights_bad", Loss::CrossEntropy, true, DType::Int32, true, 0, 0, 0, 1, false, false, 0.1, 0.05},
    {"ce_smooth", Loss::CrossEntropy, true, DType::Int64, false, 0.1, 0, 0, 1, false, false, 0.1, 0},
    {"ce_smooth_weights", Loss::CrossEntropy, true, DType::Int64, true, 0.2, 0, 0, 1, false, false, 0.1, 0},
    {"ce_zloss_lse", Loss::CrossEntropy, true, DType::Int64, false, 0, 1e-3, 0, 1, false, true, 0.1, 0},
    {"ce_softcap_lse", Loss::CrossEntropy, true, DType::Int64, false, 0, 0, 30.0, 1, false, true, 0.1, 0},
    {"ce_all", Loss::CrossEntropy, true, DType::Int32, true, 0.1, 1e-4, 20.0, 1, false, true, 0.1, 0.02},
    {"ce_soft", Loss::CrossEntropy, false, DType::Int64, false, 0, 0, 0, 1, false, false, 0, 0},
    {"ce_soft_all", Loss::CrossEntropy, false, DType::Int64, true, 0.1, 1e-3, 15.0, 1, false, true, 0, 0},
    {"nll", Loss::NLL, true, DType::Int64, false, 0, 0, 0, 1, false, false, 0.1, 0},
    {"nll_i32_weights_bad", Loss::NLL, true, DType::Int32, true, 0, 0, 0, 1, false, false, 0.1, 0.05},
    {"kl_div", Loss::KLDiv, false, DType::Int64, false, 0, 0, 0, 1, false, false, 0, 0},
    {"kl_div_log_target", Loss::KLDiv, false, DType::Int64, false, 0, 0, 0, 1, true, false, 0, 0},
    {"kl_logits", Loss::KLDivLogits, false, DType::Int64, false, 0, 0, 0, 1, false, false, 0, 0},
    {"kl_logits_t2", Loss::KLDivLogits, false, DType::Int64, false, 0, 0, 0, 2.0, false, false, 0, 0},
};
constexpr int kNumVariants = static_cast<int>(sizeof(kVariants) / sizeof(kVariants[0]));

bool has_labels(const Variant& v) { return v.loss == Loss::NLL || (v.loss == Loss::CrossEntropy && v.sparse); }
bool is_kl(const Variant& v) { return v.loss == Loss::KLDiv || v.loss == Loss::KLDivLogits; }

std::vector<Reduction> reductions_for(const Variant& v) {
  if (is_kl(v)) return {Reduction::None, Reduction::Mean, Reduction::Sum, Reduction::BatchMean};
  return {Reduction::None, Reduction::Mean, Reduction::Sum};
}

/// Host-side data of one problem (input rows with stride; padding filled with a marker value).
struct Data {
  DType dtype = DType::Float32;
  std::int64_t N = 0, C = 0, stride = 0;
  std::vector<std::uint8_t> input, target;  // [N·stride] in dtype
  std::vector<std::uint8_t> labels;         // [N] int32 / int64
  std::vector<float> weights;               // [C] or empty
};

void set_label(const Variant& v, Data& d, std::int64_t n, std::int64_t y) {
  if (v.label_dtype == DType::Int32) {
    const std::int32_t y32 = static_cast<std::int32_t>(y);
    std::memcpy(d.labels.data() + 4 * n, &y32, 4);
  } else {
    std::memcpy(d.labels.data() + 8 * n, &y, 8);
  }
}

/// Random data for a variant. scale: logits ~ N(0, scale²).
Data make_data(const Variant& v, DType dtype, std::int64_t N, std::int64_t C, std::int64_t stride, std::uint64_t seed,
               double scale = 3.0) {
  Data d;
  d.dtype = dtype;
  d.N = N;
  d.C = C;
  d.stride = stride;
  const std::size_t total = static_cast<std::size_t>(N * stride);
  d.input.assign(total * esize(dtype), 0);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> unif(0.f, 1.f);
  const bool dense_target = !has_labels(v);
  if (dense_target) d.target.assign(total * esize(dtype), 0);
  std::vector<double> row(static_cast<std::size_t>(C)), trow(static_cast<std::size_t>(C));
  for (std::int64_t n = 0; n < N; ++n) {
    for (std::int64_t c = 0; c < C; ++c) row[c] = scale * normal(rng);
    if (v.loss == Loss::NLL || v.loss == Loss::KLDiv) {
      // the input holds log-probabilities: log_softmax of the row
      double m = -INFINITY, s = 0;
      for (double z : row) m = std::max(m, z);
      for (double z : row) s += std::exp(z - m);
      for (double& z : row) z = z - m - std::log(s);
    }
    for (std::int64_t c = 0; c < C; ++c) put_value(dtype, d.input, static_cast<std::size_t>(n * stride + c), static_cast<float>(row[c]));
    for (std::int64_t c = C; c < stride; ++c) put_value(dtype, d.input, static_cast<std::size_t>(n * stride + c), 777.f);
    if (!dense_target) continue;
    if (v.loss == Loss::KLDivLogits) {
      for (std::int64_t c = 0; c < C; ++c) trow[c] = scale * normal(rng);  // teacher logits
    } else {
      // probabilities with some exact zeros (softmax of a sparse-ish row). No zeros with
      // log_target: a log-probability of −inf is a contract edge case tested separately
      // (ContractZeroCoefficientTerms), not a CPU-comparison input.
      double m = -INFINITY, s = 0;
      for (std::int64_t c = 0; c < C; ++c) {
        trow[c] = unif(rng) < 0.2f && C > 1 && !v.log_target ? -INFINITY : 2.0 * normal(rng);
        m = std::max(m, trow[c]);
      }
      if (std::isinf(m)) trow[0] = m = 0.0;
      for (std::int64_t c = 0; c < C; ++c) s += std::exp(trow[c] - m);
      for (std::int64_t c = 0; c < C; ++c) {
        const double p = std::exp(trow[c] - m) / s;
        trow[c] = v.log_target ? (p > 0 ? std::log(p) : -INFINITY) : p;
      }
    }
    for (std::int64_t c = 0; c < C; ++c) put_value(dtype, d.target, static_cast<std::size_t>(n * stride + c), static_cast<float>(trow[c]));
    for (std::int64_t c = C; c < stride; ++c) put_value(dtype, d.target, static_cast<std::size_t>(n * stride + c), 555.f);
  }
  if (has_labels(v)) {
    const std::size_t lsize = v.label_dtype == DType::Int32 ? 4 : 8;
    d.labels.assign(static_cast<std::size_t>(N) * lsize, 0);
    std::uniform_int_distribution<std::int64_t> lab(0, C - 1);
    for (std::int64_t n = 0; n < N; ++n) {
      std::int64_t y = lab(rng);
      const float r = unif(rng);
      if (r < v.ignore_frac) y = -100;
      else if (r < v.ignore_frac + v.bad_frac) y = (n % 2 == 0) ? C + (n % 7) : -1 - (n % 3);
      set_label(v, d, n, y);
    }
  }
  if (v.weights) {
    d.weights.resize(static_cast<std::size_t>(C));
    for (auto& w : d.weights) w = 0.5f + 1.5f * unif(rng);
  }
  return d;
}

std::int64_t label_at(const Variant& v, const Data& d, std::int64_t n) {
  if (v.label_dtype == DType::Int32) {
    std::int32_t y;
    std::memcpy(&y, d.labels.data() + 4 * n, 4);
    return y;
  }
  std::int64_t y;
  std::memcpy(&y, d.labels.data() + 8 * n, 8);
  return y;
}

struct Options {
  Reduction reduction = Reduction::Mean;
  bool grad = true;
  bool inplace = false;
  double grad_scale = 1.0;
  std::ptrdiff_t grad_offset = 0;    ///< out of place: gradient buffer shifted by this many elements
  std::ptrdiff_t target_offset = 0;  ///< dense target shifted by this many elements
};

/// Results of one call, in host memory.
struct Result {
  Status status = Status::Success;
  std::vector<float> loss;
  std::vector<std::uint8_t> grad;  // [N·stride] in dtype (padding included)
  std::vector<float> lse;
  std::int64_t errors = 0;
};

std::size_t loss_count(const Variant& v, const Data& d, Reduction r) {
  if (r != Reduction::None) return 1;
  return v.loss == Loss::KLDiv ? static_cast<std::size_t>(d.N * d.C) : static_cast<std::size_t>(d.N);
}

RowwiseProblem make_problem(const Variant& v, const Data& d, const Options& o, const void* input, const void* target,
                            const void* labels, const float* weights) {
  RowwiseProblem p;
  p.loss = v.loss;
  p.dtype = d.dtype;
  p.rows = d.N;
  p.classes = d.C;
  p.row_stride = d.stride;
  p.input = input;
  p.labels = has_labels(v) ? labels : nullptr;
  p.label_dtype = v.label_dtype;
  p.target = has_labels(v) ? nullptr : target;
  p.class_weight = (v.loss == Loss::CrossEntropy || v.loss == Loss::NLL) && v.weights ? weights : nullptr;
  p.reduction = o.reduction;
  p.grad_scale = o.grad_scale;
  p.params.ignore_index = -100;
  p.params.label_smoothing = v.eps;
  p.params.z_loss = v.z_loss;
  p.params.softcap = v.softcap;
  p.params.log_target = v.log_target;
  p.params.temperature = v.temperature;
  return p;
}

Result run_cpu(const Variant& v, const Data& d, const Options& o) {
  Result r;
  const std::size_t nl = loss_count(v, d, o.reduction);
  std::vector<std::uint8_t> input = d.input;  // in place overwrites it
  r.loss.assign(nl, std::numeric_limits<float>::quiet_NaN());
  r.lse.assign(static_cast<std::size_t>(d.N), -12345.f);
  if (o.grad) r.grad = o.inplace ? input : std::vector<std::uint8_t>(d.input.size(), 0xEE);
  RowwiseProblem p = make_problem(v, d, o, input.data(), d.target.data(), d.labels.data(), d.weights.data());
  LossOutputs out;
  out.loss = r.loss.data();
  out.grad = o.grad ? (o.inplace ? static_cast<void*>(input.data()) : static_cast<void*>(r.grad.data())) : nullptr;
  out.lse = (v.lse && v.loss == Loss::CrossEntropy) ? r.lse.data() : nullptr;
  out.error_count = &r.errors;
  ExecutionConfig cfg;
  cfg.backend = Backend::CPU;
  r.status = fusedloss::compute(p, out, cfg);
  if (o.grad && o.inplace) r.grad = input;
  return r;
}

/// The CUDA path on device copies. Outputs are poisoned (kPoisonFill bytes: finite in every float
/// format) before the call.
Result run_gpu(const Variant& v, const Data& d, const Options& o, cudaStream_t stream = nullptr) {
  Result r;
  const std::size_t nl = loss_count(v, d, o.reduction);
  const std::size_t es = esize(d.dtype);
  const std::size_t elems = static_cast<std::size_t>(d.N * d.stride);
  // Shifted buffers (non-congruent pointers) get room for the shift.
  DevBuf input = upload(d.input.data(), d.input.size());
  DevBuf target(d.target.size() + 16 * es);
  if (!d.target.empty())
    cudaMemcpy(target.as<std::uint8_t>() + o.target_offset * es, d.target.data(), d.target.size(), cudaMemcpyHostToDevice);
  DevBuf labels = upload(d.labels.data(), d.labels.size());
  DevBuf weights = upload(d.weights.data(), d.weights.size() * sizeof(float));
  DevBuf grad(o.grad && !o.inplace ? d.input.size() + 16 * es : 0);
  DevBuf loss(nl * sizeof(float));
  DevBuf lse(static_cast<std::size_t>(d.N) * sizeof(float) + 4);
  DevBuf errors(sizeof(std::int64_t));
  if (!input.ok() || !target.ok() || !labels.ok() || !weights.ok() || !grad.ok() || !loss.ok() || !lse.ok() ||
      !errors.ok()) {
    r.status = Status::OutOfMemory;
    return r;
  }
  if (grad.p != nullptr) cudaMemset(grad.p, kPoisonFill, grad.bytes);
  cudaMemset(loss.p, kPoisonFill, loss.bytes);
  cudaMemset(lse.p, kPoisonFill, lse.bytes);
  cudaMemset(errors.p, kPoisonFill, errors.bytes);
  void* gptr = o.grad ? (o.inplace ? input.p : static_cast<void*>(grad.as<std::uint8_t>() + o.grad_offset * es)) : nullptr;
  RowwiseProblem p = make_problem(v, d, o, input.p, target.as<std::uint8_t>() + o.target_offset * es, labels.p,
                                  weights.as<float>());
  LossOutputs out;
  out.loss = loss.as<float>();
  out.grad = gptr;
  out.lse = (v.lse && v.loss == Loss::CrossEntropy) ? lse.as<float>() : nullptr;
  out.error_count = errors.as<std::int64_t>();
  ExecutionConfig cfg;
  cfg.backend = Backend::CUDA;
  cfg.stream = stream;
  std::size_t ws_bytes = 0;
  r.status = fusedloss::workspace_size(p, out, cfg, &ws_bytes);
  if (r.status != Status::Success) return r;
  DevBuf ws(ws_bytes);
  cfg.workspace = ws.p;
  cfg.workspace_bytes = ws_bytes;
  r.status = fusedloss::compute(p, out, cfg);
  if (cudaStreamSynchronize(stream) != cudaSuccess) r.status = Status::CudaError;
  if (r.status != Status::Success) return r;
  r.loss = download<float>(loss.p, nl);
  if (o.grad) {
    r.grad.resize(elems * es);
    cudaMemcpy(r.grad.data(), o.inplace ? input.p : gptr, elems * es, cudaMemcpyDeviceToHost);
  }
  r.lse = download<float>(lse.p, static_cast<std::size_t>(d.N));
  std::int64_t e = 0;
  cudaMemcpy(&e, errors.p, sizeof e, cudaMemcpyDeviceToHost);
  r.errors = e;
  return r;
}

/// The host-memory problem of a test case (labels and class weights readable for T).
RowwiseProblem host_problem(const Variant& v, const Data& d, const Options& o) {
  return make_problem(v, d, o, d.input.data(), d.target.data(), d.labels.data(), d.weights.data());
}

/// The [N, C] gradient values of a strided [N, stride] buffer, densely.
std::vector<std::uint8_t> dense_rows(const Data& d, const std::vector<std::uint8_t>& strided) {
  const std::size_t es = esize(d.dtype), row = static_cast<std::size_t>(d.C) * es;
  std::vector<std::uint8_t> out(static_cast<std::size_t>(d.N) * row);
  for (std::int64_t n = 0; n < d.N; ++n)
    std::memcpy(out.data() + n * row, strided.data() + static_cast<std::size_t>(n * d.stride) * es, row);
  return out;
}

/// Compares the GPU result with the CPU one under cli/compare.hpp's rule; returns a description of
/// the first mismatch ("" when they agree).
std::string compare(const Variant& v, const Data& d, const Options& o, const Result& cpu, const Result& gpu) {
  using validate_tolerance::f32_tensor;
  using validate_tolerance::raw_tensor;
  using validate_tolerance::within_tolerance;
  char buf[512];
  if (gpu.status != Status::Success) return std::string("gpu status ") + fusedloss::status_string(gpu.status);
  const Status want = cpu.errors > 0 ? Status::InvalidValue : Status::Success;
  if (cpu.status != want) return std::string("cpu status ") + fusedloss::status_string(cpu.status);
  if (gpu.errors != cpu.errors) {
    std::snprintf(buf, sizeof buf, "error_count gpu %lld cpu %lld", static_cast<long long>(gpu.errors),
                  static_cast<long long>(cpu.errors));
    return buf;
  }
  const ::testing::AssertionResult loss =
      within_tolerance(f32_tensor(gpu.loss), f32_tensor(cpu.loss), fusedloss_cli::CompareKind::Loss, d.dtype);
  if (!loss) return loss.message();
  if (v.lse && v.loss == Loss::CrossEntropy) {
    const ::testing::AssertionResult lse = within_tolerance(f32_tensor(gpu.lse), f32_tensor(cpu.lse),
                                                            fusedloss_cli::CompareKind::Loss, d.dtype, fusedloss_cli::kLseTermScale, "lse");
    if (!lse) return lse.message();
  }
  if (!o.grad) return "";
  // padding: in place it still holds the input's padding; out of place the GPU buffer's poison
  const std::size_t es = esize(d.dtype);
  for (std::int64_t n = 0; n < d.N; ++n) {
    for (std::int64_t c = d.C; c < d.stride; ++c) {
      const std::size_t i = static_cast<std::size_t>(n * d.stride + c);
      bool poison = true;
      for (std::size_t b = 0; b < es; ++b) poison = poison && gpu.grad[i * es + b] == kPoisonFill;
      const bool ok = o.inplace ? std::memcmp(&gpu.grad[i * es], &cpu.grad[i * es], es) == 0 : poison;
      if (!ok) {
        std::snprintf(buf, sizeof buf, "padding [%lld, %lld] was written: %.9g", static_cast<long long>(n),
                      static_cast<long long>(c), get_value(d.dtype, gpu.grad, i));
        return buf;
      }
    }
  }
  const std::vector<std::uint8_t> g = dense_rows(d, gpu.grad), c = dense_rows(d, cpu.grad);
  const ::testing::AssertionResult grad = within_tolerance(
      raw_tensor(d.dtype, g.data(), d.N * d.C), raw_tensor(d.dtype, c.data(), d.N * d.C),
      fusedloss_cli::CompareKind::Grad, d.dtype, fusedloss_cli::rowwise_term_scale(host_problem(v, d, o)));
  if (!grad) return grad.message();
  return "";
}

const char* dtype_str(DType d) { return d == DType::Float32 ? "f32" : (d == DType::Float16 ? "f16" : "bf16"); }
const char* red_str(Reduction r) {
  switch (r) {
    case Reduction::None: return "none";
    case Reduction::Mean: return "mean";
    case Reduction::Sum: return "sum";
    case Reduction::BatchMean: return "batchmean";
    default: return "?";
  }
}

/// Scoped FUSEDLOSS_ROWWISE_STRATEGY override (auto when value is null).
struct StrategyScope {
  explicit StrategyScope(const char* value) {
    if (value != nullptr) {
      setenv("FUSEDLOSS_ROWWISE_STRATEGY", value, 1);
    } else {
      unsetenv("FUSEDLOSS_ROWWISE_STRATEGY");
    }
  }
  ~StrategyScope() { unsetenv("FUSEDLOSS_ROWWISE_STRATEGY"); }
};

struct Shape {
  std::int64_t N, C;
};

/// Runs variant × dtype over shapes × reductions, alternating in place / out of place and row
/// stride == C / > C, and reports every mismatch.
void sweep(const Variant& v, DType dtype, const std::vector<Shape>& shapes, std::uint64_t seed) {
  int k = 0;
  for (const Shape& s : shapes) {
    for (Reduction red : reductions_for(v)) {
      ++k;
      const std::int64_t stride = (k % 3 == 2) ? s.C + 5 : s.C;
      Options o;
      o.reduction = red;
      o.inplace = (k % 2 == 0);
      o.grad_scale = (k % 4 == 3) ? 0.5 : 1.0;
      const Data d = make_data(v, dtype, s.N, s.C, stride, seed + static_cast<std::uint64_t>(k));
      const Result cpu = run_cpu(v, d, o);
      const Result gpu = run_gpu(v, d, o);
      const std::string err = compare(v, d, o, cpu, gpu);
      EXPECT_TRUE(err.empty()) << v.name << " " << dtype_str(dtype) << " N=" << s.N << " C=" << s.C
                               << " stride=" << stride << " " << red_str(red) << (o.inplace ? " in-place" : "")
                               << ": " << err;
    }
  }
}

// Shapes of the main sweep: every C of the issue; N ∈ {1, 7, 65535, 65537} where the CPU reference
// stays fast (≈ 5M elements per variant × dtype × reduction). The many-row shapes reach the
// multi-block label and loss reductions (> 16384 rows); the emulated device takes them at
// 16411 / 16417 rows, past the same 16384-row boundary.
constexpr std::int64_t kManyRows = fusedloss_test::gpu_or_emulated<std::int64_t>(65535, 16411);
constexpr std::int64_t kManyRowsOdd = fusedloss_test::gpu_or_emulated<std::int64_t>(65537, 16417);
const std::vector<Shape> kShapes = {{1, 1},         {7, 2},        {7, 31},         {7, 32},    {7, 33},
                                    {kManyRows, 2}, {kManyRowsOdd, 33}, {kManyRows, 31}, {7, 1000},  {1, 1025},
                                    {7, 1025},      {3, 32000},    {2, 50257},      {2, 131072}, {1, 262145}};
// Smaller set for the forced strategies (stream / scalar / no cluster): a block of 512 threads per
// row even at C = 3, so the emulated device takes 67 rows instead of 65537.
const std::vector<Shape> kStrategyShapes = {
    {7, 33}, {fusedloss_test::gpu_or_emulated<std::int64_t>(65537, 67), 3}, {7, 1025}, {3, 32000}, {2, 131072}};

class RowwiseSweep : public ::testing::TestWithParam<std::tuple<int, DType>> {};

TEST_P(RowwiseSweep, MatchesCpuPath) {
  REQUIRE_DEVICE();
  const Variant& v = kVariants[std::get<0>(GetParam())];
  sweep(v, std::get<1>(GetParam()), kShapes, 1000 + 17 * std::get<0>(GetParam()));
}

TEST_P(RowwiseSweep, StreamingStrategyMatchesCpuPath) {
  REQUIRE_DEVICE();
  StrategyScope scope("stream");
  sweep(kVariants[std::get<0>(GetParam())], std::get<1>(GetParam()), kStrategyShapes, 2000);
}

TEST_P(RowwiseSweep, ScalarStrategyMatchesCpuPath) {
  REQUIRE_DEVICE();
  StrategyScope scope("scalar");
  sweep(kVariants[std::get<0>(GetParam())], std::get<1>(GetParam()), kStrategyShapes, 3000);
}

TEST_P(RowwiseSweep, NoClusterStrategyMatchesCpuPath) {
  REQUIRE_DEVICE();
  StrategyScope scope("nocluster");
  sweep(kVariants[std::get<0>(GetParam())], std::get<1>(GetParam()), {{2, 50257}, {2, 131072}, {1, 262145}}, 4000);
}

TEST_P(RowwiseSweep, LossOnlyMatchesCpuPath) {
  REQUIRE_DEVICE();
  const Variant& v = kVariants[std::get<0>(GetParam())];
  const DType dtype = std::get<1>(GetParam());
  for (const Shape& s : std::vector<Shape>{{7, 33}, {5, 4097}, {2, 131072}}) {
    for (Reduction red : reductions_for(v)) {
      Options o;
      o.reduction = red;
      o.grad = false;
      const Data d = make_data(v, dtype, s.N, s.C, s.C, 5000);
      const std::string err = compare(v, d, o, run_cpu(v, d, o), run_gpu(v, d, o));
      EXPECT_TRUE(err.empty()) << v.name << " " << dtype_str(dtype) << " C=" << s.C << " " << red_str(red) << ": " << err;
    }
  }
}

/// Gradient / target pointers not congruent with the input mod 16 (the scalar fallback).
TEST_P(RowwiseSweep, MisalignedBuffersMatchCpuPath) {
  REQUIRE_DEVICE();
  const Variant& v = kVariants[std::get<0>(GetParam())];
  const DType dtype = std::get<1>(GetParam());
  for (const Shape& s : std::vector<Shape>{{7, 33}, {3, 1000}, {2, 40000}}) {
    Options o;
    o.reduction = Reduction::Sum;
    o.grad_offset = 1;
    o.target_offset = 3;
    const Data d = make_data(v, dtype, s.N, s.C, s.C, 6000);
    const std::string err = compare(v, d, o, run_cpu(v, d, o), run_gpu(v, d, o));
    EXPECT_TRUE(err.empty()) << v.name << " " << dtype_str(dtype) << " C=" << s.C << ": " << err;
  }
}

std::string sweep_name(const ::testing::TestParamInfo<std::tuple<int, DType>>& info) {
  return std::string(kVariants[std::get<0>(info.param)].name) + "_" + dtype_str(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(AllLosses, RowwiseSweep,
                         ::testing::Combine(::testing::Range(0, kNumVariants),
                                            ::testing::Values(DType::Float32, DType::Float16, DType::BFloat16)),
                         sweep_name);

// ---- edge values -------------------------------------------------------------------------------------------

const Variant& variant(const char* name) {
  const std::string wanted(name);
  for (const Variant& v : kVariants)
    if (wanted == v.name) return v;
  return kVariants[0];
}

class RowwiseEdge : public ::testing::TestWithParam<DType> {};

/// Non-target logits of −inf: finite loss, zero gradient there; also with smoothing (loss +inf,
/// as the contract says) and softcap (−inf becomes −k).
TEST_P(RowwiseEdge, NegativeInfinityLogits) {
  REQUIRE_DEVICE();
  const DType dtype = GetParam();
  for (const char* name : {"ce", "ce_zloss_lse", "ce_softcap_lse", "ce_smooth", "ce_soft", "kl_logits"}) {
    const Variant& v = variant(name);
    for (std::int64_t C : {5, 1000, 50000}) {
      Data d = make_data(v, dtype, 4, C, C, 7000);
      for (std::int64_t n = 0; n < d.N; ++n) {
        const std::int64_t y = has_labels(v) ? label_at(v, d, n) : -1;
        for (std::int64_t c = 0; c < C; c += 2)
          if (c != y && c != 1) put_value(dtype, d.input, static_cast<std::size_t>(n * C + c), -INFINITY);
      }
      for (Reduction red : {Reduction::None, Reduction::Mean}) {
        Options o;
        o.reduction = red;
        const Result cpu = run_cpu(v, d, o), gpu = run_gpu(v, d, o);
        const std::string err = compare(v, d, o, cpu, gpu);
        EXPECT_TRUE(err.empty()) << name << " " << dtype_str(dtype) << " C=" << C << " " << red_str(red) << ": " << err;
        if (std::string(name) == "ce" && red == Reduction::Mean && gpu.status == Status::Success) {
          bool any_valid = false;
          for (std::int64_t n = 0; n < d.N; ++n) any_valid |= label_at(v, d, n) != -100;
          if (any_valid) EXPECT_TRUE(std::isfinite(gpu.loss[0]));
          for (std::int64_t n = 0; n < d.N; ++n)
            for (std::int64_t c = 0; c < C; c += 2)
              if (c != label_at(v, d, n) && c != 1)
                EXPECT_EQ(get_value(dtype, gpu.grad, static_cast<std::size_t>(n * C + c)), 0.f);
        }
      }
    }
  }
}

/// Logits of ±1e4 (fp16 holds them; bf16 rounds them — the same rounded values go to both paths).
TEST_P(RowwiseEdge, HugeLogits) {
  REQUIRE_DEVICE();
  const DType dtype = GetParam();
  for (const char* name : {"ce", "ce_smooth_weights", "ce_zloss_lse", "ce_softcap_lse", "ce_soft_all", "kl_logits"}) {
    const Variant& v = variant(name);
    for (std::int64_t C : {33, 5000, 70000}) {
      Data d = make_data(v, dtype, 3, C, C, 8000);
      std::mt19937 rng(3);
      for (std::int64_t i = 0; i < 3 * C; ++i) {
        const float x = get_value(dtype, d.input, static_cast<std::size_t>(i));
        put_value(dtype, d.input, static_cast<std::size_t>(i), (rng() % 3 == 0) ? (x > 0 ? 1e4f : -1e4f) : x + 9990.f);
      }
      Options o;
      o.reduction = Reduction::None;
      const std::string err = compare(v, d, o, run_cpu(v, d, o), run_gpu(v, d, o));
      EXPECT_TRUE(err.empty()) << name << " " << dtype_str(dtype) << " C=" << C << ": " << err;
    }
  }
}

/// Every row ignored: mean → NaN with an all-zero gradient, sum → 0, lse still written.
TEST_P(RowwiseEdge, AllIgnored) {
  REQUIRE_DEVICE();
  const DType dtype = GetParam();
  for (const char* name : {"ce_zloss_lse", "ce_all", "nll"}) {
    const Variant& v = variant(name);
    for (std::int64_t C : {7, 3000, 140000}) {
      Data d = make_data(v, dtype, 5, C, C, 9000);
      for (std::int64_t n = 0; n < d.N; ++n) set_label(v, d, n, -100);
      for (Reduction red : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
        Options o;
        o.reduction = red;
        o.inplace = true;
        const Result cpu = run_cpu(v, d, o), gpu = run_gpu(v, d, o);
        const std::string err = compare(v, d, o, cpu, gpu);
        EXPECT_TRUE(err.empty()) << name << " " << dtype_str(dtype) << " C=" << C << " " << red_str(red) << ": " << err;
        if (gpu.status != Status::Success) continue;
        if (red == Reduction::Mean) EXPECT_TRUE(std::isnan(gpu.loss[0]));
        if (red == Reduction::Sum) EXPECT_EQ(gpu.loss[0], 0.f);
        for (std::int64_t i = 0; i < d.N * C; ++i) ASSERT_EQ(get_value(dtype, gpu.grad, static_cast<std::size_t>(i)), 0.f);
        if (v.lse)
          for (std::int64_t n = 0; n < d.N; ++n) EXPECT_TRUE(std::isfinite(gpu.lse[n]));
      }
    }
  }
}

/// Labels outside [0, C): counted, row loss NaN, gradient row 0, no out-of-bounds access.
TEST_P(RowwiseEdge, BadLabels) {
  REQUIRE_DEVICE();
  const DType dtype = GetParam();
  for (const char* name : {"ce_i32_weights_bad", "ce_all", "nll_i32_weights_bad"}) {
    const Variant& v = variant(name);
    for (std::int64_t C : {3, 2000, 150000}) {
      Data d = make_data(v, dtype, 40, C, C, 10000);
      set_label(v, d, 3, C);
      set_label(v, d, 5, -7);
      set_label(v, d, 39, C + 1000);
      set_label(v, d, 6, -100);
      for (Reduction red : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
        Options o;
        o.reduction = red;
        const Result cpu = run_cpu(v, d, o), gpu = run_gpu(v, d, o);
        EXPECT_GT(cpu.errors, 0);
        const std::string err = compare(v, d, o, cpu, gpu);
        EXPECT_TRUE(err.empty()) << name << " " << dtype_str(dtype) << " C=" << C << " " << red_str(red) << ": " << err;
        if (gpu.status != Status::Success) continue;
        for (std::int64_t n = 0; n < d.N; ++n) {
          const std::int64_t y = label_at(v, d, n);
          if (y == -100 || (y >= 0 && y < C)) continue;
          if (red == Reduction::None) EXPECT_TRUE(std::isnan(gpu.loss[n]));
          for (std::int64_t c = 0; c < C; ++c) ASSERT_EQ(get_value(dtype, gpu.grad, static_cast<std::size_t>(n * C + c)), 0.f);
        }
      }
    }
  }
}

/// A NaN in one row stays in that row (reduction none).
TEST_P(RowwiseEdge, NanRowIsolated) {
  REQUIRE_DEVICE();
  const DType dtype = GetParam();
  for (const char* name : {"ce", "ce_all", "ce_soft_all", "kl_logits", "kl_div"}) {
    const Variant& v = variant(name);
    for (std::int64_t C : {9, 4000, 100000}) {
      Data d = make_data(v, dtype, 6, C, C, 11000);
      put_value(dtype, d.input, static_cast<std::size_t>(2 * C + C / 2), NAN);
      Options o;
      o.reduction = Reduction::None;
      const Result cpu = run_cpu(v, d, o), gpu = run_gpu(v, d, o);
      const std::string err = compare(v, d, o, cpu, gpu);
      EXPECT_TRUE(err.empty()) << name << " " << dtype_str(dtype) << " C=" << C << ": " << err;
      if (gpu.status != Status::Success || v.loss == Loss::KLDiv) continue;
      for (std::int64_t n = 0; n < d.N; ++n) {
        const std::int64_t y = has_labels(v) ? label_at(v, d, n) : 0;
        if (y == -100) continue;  // ignored rows: loss 0 whatever the logits
        if (y < 0 || y >= C) continue;  // bad labels: NaN anyway
        if (n == 2) EXPECT_TRUE(std::isnan(gpu.loss[n])) << name;
        if (n != 2) EXPECT_FALSE(std::isnan(gpu.loss[n])) << name << " row " << n;
      }
    }
  }
}

/// N == 0: sum → 0, mean → NaN, none → nothing written; error_count → 0.
TEST_P(RowwiseEdge, ZeroRows) {
  REQUIRE_DEVICE();
  const DType dtype = GetParam();
  for (const char* name : {"ce", "ce_soft", "nll", "kl_div", "kl_logits"}) {
    const Variant& v = variant(name);
    for (Reduction red : {Reduction::Sum, Reduction::Mean, Reduction::None}) {
      const Data d = make_data(v, dtype, 0, 10, 10, 1);
      Options o;
      o.reduction = red;
      const Result gpu = run_gpu(v, d, o);
      ASSERT_EQ(gpu.status, Status::Success) << name;
      EXPECT_EQ(gpu.errors, 0);
      if (red == Reduction::Sum) EXPECT_EQ(gpu.loss[0], 0.f);
      if (red == Reduction::Mean) EXPECT_TRUE(std::isnan(gpu.loss[0]));
    }
  }
}

/// Terms whose coefficient is exactly 0 contribute exactly 0 (never 0·inf), checked against the
/// independent oracle (tests/oracle) on the dtype-rounded inputs and exact zeros where it has them:
///  * kl_div, log_target: t = −inf (p = 0) next to q finite;
///  * kl_div: p = 0 next to q = −inf;
///  * cross_entropy with class weights: w[y] = 0 and z_y = −inf → row loss 0, gradient 0.
TEST_P(RowwiseEdge, ContractZeroCoefficientTerms) {
  REQUIRE_DEVICE();
  using validate_tolerance::f32_tensor;
  using validate_tolerance::raw_tensor;
  using validate_tolerance::rounded_tensor;
  using validate_tolerance::within_tolerance;
  const DType dtype = GetParam();
  const float ln2 = std::log(2.f), ln4 = std::log(4.f);
  struct KlCase {
    bool log_target;
    float q[4], t[4];
  };
  const KlCase kl_cases[] = {
      {true, {-ln4, -ln4, -ln4, -ln4}, {-ln2, -ln2, -INFINITY, -INFINITY}},
      {false, {-ln2, -ln2, -INFINITY, -INFINITY}, {0.5f, 0.5f, 0.f, 0.f}},
  };
  for (const KlCase& kc : kl_cases) {
    Variant v = variant(kc.log_target ? "kl_div_log_target" : "kl_div");
    Data d;
    d.dtype = dtype;
    d.N = 1;
    d.C = 4;
    d.stride = 4;
    d.input.assign(4 * esize(dtype), 0);
    d.target.assign(4 * esize(dtype), 0);
    std::vector<double> q(4), t(4);
    for (int c = 0; c < 4; ++c) {
      put_value(dtype, d.input, c, kc.q[c]);
      put_value(dtype, d.target, c, kc.t[c]);
      q[c] = get_value(dtype, d.input, c);
      t[c] = get_value(dtype, d.target, c);
    }
    Options o;
    o.reduction = Reduction::Sum;
    const Result gpu = run_gpu(v, d, o);
    ASSERT_EQ(gpu.status, Status::Success);
    oracle::RowParams op;
    op.log_target = kc.log_target;
    const oracle::Result want = oracle::kl_div(1, 4, q, t, oracle::Red::Sum, op);
    // The sum's terms p·log p and −p·q cancel (to 0 exactly without rounding, for the second case):
    // T = Σ|terms| is the size its rounding error is relative to.
    EXPECT_TRUE(within_tolerance(f32_tensor(gpu.loss), rounded_tensor(DType::Float32, want.loss),
                                 fusedloss_cli::CompareKind::Loss, dtype, want.loss_terms.at(0)))
        << v.name;
    EXPECT_TRUE(within_tolerance(raw_tensor(dtype, gpu.grad.data(), 4), rounded_tensor(dtype, want.grad),
                                 fusedloss_cli::CompareKind::Grad, dtype, fusedloss_cli::rowwise_term_scale(host_problem(v, d, o))))
        << v.name;
    for (int c = 2; c < 4; ++c) EXPECT_EQ(get_value(dtype, gpu.grad, c), 0.f) << v.name << " column " << c;
  }
  {
    Variant v = variant("ce_i32_weights_bad");
    Data d = make_data(v, dtype, 2, 5, 5, 42);
    set_label(v, d, 0, 3);
    set_label(v, d, 1, 1);
    d.weights = {1.f, 1.f, 1.f, 0.f, 1.f};  // w[3] = 0
    put_value(dtype, d.input, 3, -INFINITY);  // z_y of row 0
    Options o;
    o.reduction = Reduction::None;
    const Result gpu = run_gpu(v, d, o);
    ASSERT_EQ(gpu.status, Status::Success);
    EXPECT_EQ(gpu.loss[0], 0.f);
    for (int c = 0; c < 5; ++c) EXPECT_EQ(get_value(dtype, gpu.grad, c), 0.f) << "column " << c;
    EXPECT_TRUE(std::isfinite(gpu.loss[1]));
  }
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, RowwiseEdge, ::testing::Values(DType::Float32, DType::Float16, DType::BFloat16),
                         [](const ::testing::TestParamInfo<DType>& i) { return std::string(dtype_str(i.param)); });

// ---- determinism, graphs, streams ----------------------------------------------------------------------------

/// A device-resident problem with separate outputs, reusable across calls.
struct DeviceProblem {
  Variant v;
  Data d;
  DevBuf input, target, labels, weights, grad, loss, lse, errors, ws;
  RowwiseProblem p;
  LossOutputs out;
  ExecutionConfig cfg;
  bool ok = false;

  DeviceProblem(const Variant& var, DType dtype, std::int64_t N, std::int64_t C, Reduction red, std::uint64_t seed)
      : v(var), d(make_data(var, dtype, N, C, C, seed)) {
    input = upload(d.input.data(), d.input.size());
    target = upload(d.target.data(), d.target.size());
    labels = upload(d.labels.data(), d.labels.size());
    weights = upload(d.weights.data(), d.weights.size() * sizeof(float));
    grad = DevBuf(d.input.size());
    Options o;
    o.reduction = red;
    loss = DevBuf(loss_count(v, d, red) * sizeof(float));
    lse = DevBuf(static_cast<std::size_t>(N) * sizeof(float));
    errors = DevBuf(sizeof(std::int64_t));
    p = make_problem(v, d, o, input.p, target.p, labels.p, weights.as<float>());
    out.loss = loss.as<float>();
    out.grad = grad.p;
    out.lse = v.lse ? lse.as<float>() : nullptr;
    out.error_count = errors.as<std::int64_t>();
    cfg.backend = Backend::CUDA;
    std::size_t bytes = 0;
    if (fusedloss::workspace_size(p, out, cfg, &bytes) != Status::Success) return;
    ws = DevBuf(bytes);
    cfg.workspace = ws.p;
    cfg.workspace_bytes = bytes;
    ok = input.ok() && target.ok() && labels.ok() && weights.ok() && grad.ok() && loss.ok() && lse.ok() &&
         errors.ok() && ws.ok();
  }
  Status launch(cudaStream_t s) {
    ExecutionConfig c = cfg;
    c.stream = s;
    return fusedloss::compute(p, out, c);
  }
  /// Finite poison (0x5A bytes), so an output a call failed to write cannot pass for a NaN result.
  void poison(cudaStream_t s) {
    cudaMemsetAsync(grad.p, 0x5A, grad.bytes, s);
    cudaMemsetAsync(loss.p, 0x5A, loss.bytes, s);
    cudaMemsetAsync(lse.p, 0x5A, lse.bytes, s);
    cudaMemsetAsync(errors.p, 0x5A, errors.bytes, s);
  }
  /// Every output the call writes (lse only when it was asked for: otherwise nothing writes it).
  std::vector<std::uint8_t> snapshot() {
    const std::size_t lse_bytes = out.lse != nullptr ? lse.bytes : 0;
    std::vector<std::uint8_t> all(grad.bytes + loss.bytes + lse_bytes + errors.bytes);
    cudaMemcpy(all.data(), grad.p, grad.bytes, cudaMemcpyDeviceToHost);
    cudaMemcpy(all.data() + grad.bytes, loss.p, loss.bytes, cudaMemcpyDeviceToHost);
    if (lse_bytes > 0) cudaMemcpy(all.data() + grad.bytes + loss.bytes, lse.p, lse_bytes, cudaMemcpyDeviceToHost);
    cudaMemcpy(all.data() + grad.bytes + loss.bytes + lse_bytes, errors.p, errors.bytes, cudaMemcpyDeviceToHost);
    return all;
  }
};

struct DetCase {
  const char* variant;
  DType dtype;
  std::int64_t N, C;
  Reduction red;
  const char* strategy;
};

const DetCase kDetCases[] = {
    {"ce_smooth_weights", DType::BFloat16, 1025, 50257, Reduction::Mean, nullptr},
    {"ce_all", DType::Float32, 600, 131072, Reduction::Mean, nullptr},
    {"ce_zloss_lse", DType::BFloat16, 300, 262145, Reduction::Sum, nullptr},
    {"ce_all", DType::Float16, 500, 70001, Reduction::Mean, "stream"},
    {"ce_soft_all", DType::BFloat16, 300, 60000, Reduction::Mean, nullptr},
    {"kl_logits", DType::Float32, 200, 100000, Reduction::BatchMean, nullptr},
    {"kl_div", DType::BFloat16, 70000, 33, Reduction::Mean, nullptr},
    {"nll_i32_weights_bad", DType::Float32, 100000, 500, Reduction::Mean, nullptr},
    {"ce", DType::BFloat16, 65537, 33, Reduction::Mean, nullptr},
};

TEST(RowwiseCuda, DeterministicHundredRuns) {
  REQUIRE_DEVICE();
  for (const DetCase& dc : kDetCases) {
    StrategyScope scope(dc.strategy);
    DeviceProblem dp(variant(dc.variant), dc.dtype, fusedloss_test::rows_for(dc.N, dc.C), dc.C, dc.red, 12000);
    ASSERT_TRUE(dp.ok) << dc.variant;
    dp.poison(nullptr);
    ASSERT_EQ(dp.launch(nullptr), Status::Success);
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<std::uint8_t> first = dp.snapshot();
    for (int rep = 1; rep < fusedloss_test::kRepetitions; ++rep) {
      dp.poison(nullptr);
      ASSERT_EQ(dp.launch(nullptr), Status::Success);
      CUDA_OK(cudaDeviceSynchronize());
      ASSERT_TRUE(dp.snapshot() == first) << dc.variant << " C=" << dc.C << " differs at repetition " << rep;
    }
  }
}

TEST(RowwiseCuda, GraphCaptureAndReplay) {
  REQUIRE_DEVICE();
  for (const DetCase& dc : kDetCases) {
    StrategyScope scope(dc.strategy);
    DeviceProblem dp(variant(dc.variant), dc.dtype, fusedloss_test::rows_for(dc.N, dc.C), dc.C, dc.red, 13000);
    ASSERT_TRUE(dp.ok) << dc.variant;
    cudaStream_t s;
    CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    dp.poison(s);
    ASSERT_EQ(dp.launch(s), Status::Success);
    CUDA_OK(cudaStreamSynchronize(s));
    const std::vector<std::uint8_t> reference = dp.snapshot();
    dp.poison(s);
    CUDA_OK(cudaStreamSynchronize(s));

    cudaGraph_t graph;
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    const Status st = dp.launch(s);
    CUDA_OK(cudaStreamEndCapture(s, &graph));
    ASSERT_EQ(st, Status::Success) << dc.variant;
    cudaGraphExec_t exec;
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    for (int rep = 0; rep < 3; ++rep) {
      dp.poison(s);
      CUDA_OK(cudaGraphLaunch(exec, s));
      CUDA_OK(cudaStreamSynchronize(s));
      EXPECT_TRUE(dp.snapshot() == reference) << dc.variant << " graph replay " << rep;
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(s);
  }
}

TEST(RowwiseCuda, TwoStreamsInParallelEqualSerial) {
  REQUIRE_DEVICE();
  for (int i = 0; i + 1 < static_cast<int>(sizeof(kDetCases) / sizeof(kDetCases[0])); i += 2) {
    const DetCase& a = kDetCases[i];
    const DetCase& b = kDetCases[i + 1];
    DeviceProblem pa(variant(a.variant), a.dtype, fusedloss_test::rows_for(a.N, a.C), a.C, a.red, 14000);
    DeviceProblem pb(variant(b.variant), b.dtype, fusedloss_test::rows_for(b.N, b.C), b.C, b.red, 15000);
    ASSERT_TRUE(pa.ok && pb.ok);
    pa.poison(nullptr);
    pb.poison(nullptr);
    ASSERT_EQ(pa.launch(nullptr), Status::Success);
    ASSERT_EQ(pb.launch(nullptr), Status::Success);
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<std::uint8_t> ra = pa.snapshot(), rb = pb.snapshot();
    cudaStream_t s1, s2;
    CUDA_OK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
    CUDA_OK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
    for (int rep = 0; rep < 5; ++rep) {
      pa.poison(s1);
      pb.poison(s2);
      ASSERT_EQ(pa.launch(s1), Status::Success);
      ASSERT_EQ(pb.launch(s2), Status::Success);
      CUDA_OK(cudaDeviceSynchronize());
      EXPECT_TRUE(pa.snapshot() == ra) << a.variant;
      EXPECT_TRUE(pb.snapshot() == rb) << b.variant;
    }
    cudaStreamDestroy(s1);
    cudaStreamDestroy(s2);
  }
}

// ---- N·C > 2^32 ---------------------------------------------------------------------------------------------

/// The large-offset problem: ce_zloss_lse (z-loss and lse output on) over bf16 logits at `x`
/// ([N, S], gradient written in place) with int64 labels, reduction none; run with its own
/// workspace and synchronised. Outputs: loss [N], lse [N], error count.
void run_ce_in_place(void* x, const void* labels, std::int64_t N, std::int64_t C, std::int64_t S, const DevBuf& loss,
                     const DevBuf& lse, const DevBuf& err) {
  RowwiseProblem p;
  p.loss = Loss::CrossEntropy;
  p.dtype = DType::BFloat16;
  p.rows = N;
  p.classes = C;
  p.row_stride = S;
  p.input = x;
  p.labels = labels;
  p.label_dtype = DType::Int64;
  p.reduction = Reduction::None;
  p.params.z_loss = variant("ce_zloss_lse").z_loss;
  LossOutputs out;
  out.loss = loss.as<float>();
  out.grad = x;
  out.lse = lse.as<float>();
  out.error_count = err.as<std::int64_t>();
  ExecutionConfig cfg;
  cfg.backend = Backend::CUDA;
  std::size_t ws_bytes = 0;
  ASSERT_EQ(fusedloss::workspace_size(p, out, cfg, &ws_bytes), Status::Success);
  DevBuf ws(ws_bytes);
  cfg.workspace = ws.p;
  cfg.workspace_bytes = ws_bytes;
  ASSERT_EQ(fusedloss::compute(p, out, cfg), Status::Success);
  CUDA_OK(cudaDeviceSynchronize());
  std::int64_t errors = -1;
  CUDA_OK(cudaMemcpy(&errors, err.p, 8, cudaMemcpyDeviceToHost));
  EXPECT_EQ(errors, 0);
}

/// Rows `rows` of that call against the CPU path: `d` holds their logits and labels densely (row k
/// of d is row rows[k] of the call), read before the call overwrote them.
void expect_rows_match_cpu(const Data& d, const std::vector<std::int64_t>& rows, const void* x, std::int64_t S,
                           const DevBuf& loss, const DevBuf& lse) {
  const Variant& v = variant("ce_zloss_lse");
  Options o;
  o.reduction = Reduction::None;
  const Result cpu = run_cpu(v, d, o);
  Result gpu;
  const std::size_t k_rows = rows.size(), row_bytes = static_cast<std::size_t>(d.C) * 2;
  gpu.loss.resize(k_rows);
  gpu.lse.resize(k_rows);
  gpu.grad.resize(k_rows * row_bytes);
  for (std::size_t k = 0; k < k_rows; ++k) {
    CUDA_OK(cudaMemcpy(&gpu.loss[k], loss.as<float>() + rows[k], 4, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(&gpu.lse[k], lse.as<float>() + rows[k], 4, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(gpu.grad.data() + k * row_bytes, static_cast<const std::uint8_t*>(x) + 2 * rows[k] * S,
                       row_bytes, cudaMemcpyDeviceToHost));
  }
  gpu.errors = cpu.errors;  // the call's own count was checked by run_ce_in_place
  const std::string e = compare(v, d, o, cpu, gpu);
  EXPECT_TRUE(e.empty()) << e;
}

/// Element offsets past 2^32 with three rows: a row stride of 2^31 + 16 puts row 2 at element
/// 2^32 + 32 (8.6 GB into the buffer) while only 3·C elements are ever written, so the 64-bit
/// row addressing runs on the emulated device too (whose memory is committed only where touched).
TEST(RowwiseCuda, RowOffsetsBeyond2Pow32ThroughTheRowStride) {
  REQUIRE_DEVICE();
  const std::int64_t N = 3, C = 50257, S = (std::int64_t{1} << 31) + 16;
  const std::size_t bytes = static_cast<std::size_t>((N - 1) * S + C) * 2;
  std::size_t free_b = 0, total_b = 0;
  CUDA_OK(cudaMemGetInfo(&free_b, &total_b));
  if (free_b < bytes + (1ull << 30)) GTEST_SKIP() << "needs " << (bytes >> 20) << " MiB of device memory";
  const Data d = make_data(variant("ce_zloss_lse"), DType::BFloat16, N, C, C, 4242);
  DevBuf x(bytes);
  ASSERT_TRUE(x.ok());
  for (std::int64_t n = 0; n < N; ++n)
    CUDA_OK(cudaMemcpy(x.as<std::uint8_t>() + 2 * n * S, d.input.data() + 2 * n * C, 2 * C, cudaMemcpyHostToDevice));
  DevBuf dl = upload(d.labels.data(), d.labels.size());
  DevBuf loss(N * 4), lse(N * 4), err(8);
  ASSERT_NO_FATAL_FAILURE(run_ce_in_place(x.p, dl.p, N, C, S, loss, lse, err));
  expect_rows_match_cpu(d, {0, 1, 2}, x.p, S, loss, lse);
}

#if !defined(FUSEDLOSS_EMULATED_DEVICE)  // 4.3e9 elements: GPU only (RowOffsetsBeyond2Pow32ThroughTheRowStride runs everywhere)

__global__ void fill_logits_bf16(__nv_bfloat16* x, std::uint64_t n) {
  for (std::uint64_t i = blockIdx.x * static_cast<std::uint64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::uint64_t>(gridDim.x) * blockDim.x) {
    std::uint64_t z = i + 0x9e3779b97f4a7c15ull;  // splitmix64
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float u = static_cast<float>(z >> 40) * (1.f / 16777216.f);  // [0, 1)
    x[i] = __float2bfloat16_rn(8.f * u - 4.f);
  }
}

/// 2^15 rows × (2^17 + 1) classes of bf16 (≈ 4.3e9 elements, 8.6 GB), gradient in place; the first
/// and last rows are checked against the CPU path (reduction none: rows are independent).
TEST(RowwiseCuda, MoreThan2Pow32Elements) {
  REQUIRE_DEVICE();
  const std::int64_t N = 1 << 15, C = (1 << 17) + 1;
  const std::uint64_t total = static_cast<std::uint64_t>(N) * static_cast<std::uint64_t>(C);
  ASSERT_GT(total, 1ull << 32);
  std::size_t free_b = 0, total_b = 0;
  CUDA_OK(cudaMemGetInfo(&free_b, &total_b));
  if (free_b < total * 2 + (1ull << 30)) GTEST_SKIP() << "needs " << (total * 2 >> 20) << " MiB of device memory";

  DevBuf x(total * 2);
  ASSERT_TRUE(x.ok());
  ::fusedloss::cuda::triple_chevron(4096, 256).doit(fill_logits_bf16, x.as<__nv_bfloat16>(), total);
  CUDA_OK(cudaGetLastError());
  std::vector<std::int64_t> labels(static_cast<std::size_t>(N));
  std::mt19937_64 rng(99);
  for (auto& y : labels) y = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(C));
  labels[static_cast<std::size_t>(N - 2)] = -100;  // one ignored row among the checked ones
  labels[static_cast<std::size_t>(N - 1)] = C - 1;  // the very last element is the target
  DevBuf dl = upload(labels.data(), labels.size() * 8);
  DevBuf loss(static_cast<std::size_t>(N) * 4), lse(static_cast<std::size_t>(N) * 4), err(8);
  ASSERT_TRUE(dl.ok() && loss.ok() && lse.ok() && err.ok());

  const std::int64_t check_rows[] = {0, N - 3, N - 2, N - 1};
  std::vector<std::uint8_t> rows_in(4 * static_cast<std::size_t>(C) * 2);
  for (int k = 0; k < 4; ++k)
    CUDA_OK(cudaMemcpy(rows_in.data() + k * C * 2, x.as<std::uint8_t>() + check_rows[k] * C * 2, C * 2,
                       cudaMemcpyDeviceToHost));

  ASSERT_NO_FATAL_FAILURE(run_ce_in_place(x.p, dl.p, N, C, C, loss, lse, err));

  // The four rows, as they were before the call, against the CPU path.
  Data d;
  d.dtype = DType::BFloat16;
  d.N = 4;
  d.C = C;
  d.stride = C;
  d.input = rows_in;
  d.labels.resize(4 * 8);
  for (int k = 0; k < 4; ++k) std::memcpy(d.labels.data() + 8 * k, &labels[static_cast<std::size_t>(check_rows[k])], 8);
  expect_rows_match_cpu(d, std::vector<std::int64_t>(std::begin(check_rows), std::end(check_rows)), x.p, C, loss, lse);
}
#endif  // !FUSEDLOSS_EMULATED_DEVICE

}  // namespace
