// tests/common/test_util.hpp — helpers shared by the CPU-path and API tests.
//
//  * Rng + FL_SEEDED_RNG: random data with a fresh seed per test, printed on failure through SCOPED_TRACE
//    (set FUSEDLOSS_TEST_SEED=<seed> to replay a failing run).
//  * Buffer: a typed host buffer (f32 / f16 / bf16 / i32 / i64) filled from and read back as double, with the
//    rounding the library's dtypes imply, and "poison" (a NaN bit pattern) to detect what a call wrote.
//  * run(): one library call with every output poisoned first, results read back as double.
//  * Comparisons: close_vec (rtol/atol, NaN == NaN), within_ulps (tolerance in units of the dtype's ulp).
//  * Bridges to the oracle (tests/oracle/oracle.hpp): reduction enum, loss names.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "fusedloss/fusedloss.hpp"
#include "fusedloss/float16.hpp"
#include "oracle/oracle.hpp"

// gtest prints value-parameterised DType parameters through this (found by ADL) instead of raw bytes.
// `static`: one private copy per test translation unit.
namespace fusedloss {
static inline void PrintTo(DType d, std::ostream* os) { *os << dtype_name(d); }
}  // namespace fusedloss

namespace tu {

namespace fl = ::fusedloss;
using fl::DType;
using fl::Loss;
using fl::Reduction;
using fl::Status;
using Vec = std::vector<double>;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// ------------------------------------------------------------------------------------------------------------
// Random numbers
// ------------------------------------------------------------------------------------------------------------

/// A fresh seed for every test (std::random_device), or FUSEDLOSS_TEST_SEED when set (to replay a failure).
inline std::uint64_t fresh_seed() {
  if (const char* s = std::getenv("FUSEDLOSS_TEST_SEED")) {
    if (*s != '\0') return std::strtoull(s, nullptr, 0);
  }
  std::random_device rd;
  return (std::uint64_t(rd()) << 32) ^ std::uint64_t(rd());
}

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : seed_(seed), gen_(seed) {}
  std::uint64_t seed() const { return seed_; }
  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(gen_); }
  double normal(double mean = 0, double sd = 1) { return std::normal_distribution<double>(mean, sd)(gen_); }
  /// Uniform integer in [lo, hi] (inclusive).
  std::int64_t integer(std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(gen_);
  }
  bool bernoulli(double p) { return uniform(0, 1) < p; }
  Vec uniform_vec(std::size_t n, double lo, double hi) {
    Vec v(n);
    for (double& x : v) x = uniform(lo, hi);
    return v;
  }
  Vec normal_vec(std::size_t n, double mean, double sd) {
    Vec v(n);
    for (double& x : v) x = normal(mean, sd);
    return v;
  }
  std::mt19937_64& engine() { return gen_; }

 private:
  std::uint64_t seed_;
  std::mt19937_64 gen_;
};

#define FL_CAT2_(a, b) a##b
#define FL_CAT_(a, b) FL_CAT2_(a, b)
/// Declares `Rng var` with a fresh seed and attaches the seed to every failure message of the current scope.
#define FL_SEEDED_RNG(var)                                                                                  \
  ::tu::Rng var(::tu::fresh_seed());                                                                        \
  SCOPED_TRACE(::testing::Message() << "random seed " << var.seed() << " (replay: FUSEDLOSS_TEST_SEED=" \
                                    << var.seed() << ")")

// ------------------------------------------------------------------------------------------------------------
// dtypes: rounding, ulps, poison bit patterns
// ------------------------------------------------------------------------------------------------------------

inline bool is_value_dtype(DType d) { return d == DType::Float32 || d == DType::Float16 || d == DType::BFloat16; }

/// v rounded to `d` (through float32 like the library's host conversions), returned as double.
inline double round_to(DType d, double v) {
  const float f = static_cast<float>(v);
  switch (d) {
    case DType::Float32: return f;
    case DType::Float16: return fl::to_float(fl::to_half(f));
    case DType::BFloat16: return fl::to_float(fl::to_bfloat16(f));
    default: return v;
  }
}
inline Vec round_to(DType d, Vec v) {
  for (double& x : v) x = round_to(d, x);
  return v;
}

/// Explicit significand bits and minimum normal exponent of a floating dtype.
inline int mantissa_bits(DType d) { return d == DType::Float32 ? 23 : d == DType::Float16 ? 10 : 7; }
inline int min_normal_exponent(DType d) { return d == DType::Float16 ? -14 : -126; }
inline double max_finite(DType d) {
  switch (d) {
    case DType::Float16: return 65504.0;
    case DType::BFloat16: return std::ldexp(255.0 / 128.0, 127);
    default: return std::numeric_limits<float>::max();
  }
}

/// One unit in the last place of `d` at magnitude |v| (the subnormal spacing below the normal range).
inline double ulp(DType d, double v) {
  const double a = std::fabs(v);
  int e = min_normal_exponent(d);
  if (a > 0 && std::isfinite(a)) e = std::max(e, std::ilogb(a));
  return std::ldexp(1.0, e - mantissa_bits(d));
}

constexpr std::uint32_t kPoisonF32 = 0x7FCADBADu;  // quiet NaN with a recognisable payload
constexpr std::uint16_t kPoisonF16 = 0x7E6Du;
constexpr std::uint16_t kPoisonBF16 = 0x7FEDu;
constexpr std::uint32_t kPoisonI32 = 0x5A5A5A5Au;
constexpr std::uint64_t kPoisonI64 = 0x5A5A5A5A5A5A5A5Aull;

inline float poison_float() {
  float f;
  std::memcpy(&f, &kPoisonF32, sizeof f);
  return f;
}
inline bool is_poison(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u == kPoisonF32;
}
inline std::vector<float> poisoned_floats(std::size_t n) { return std::vector<float>(n, poison_float()); }
inline bool all_poison(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float f) { return is_poison(f); });
}
inline std::int64_t poison_i64() { return static_cast<std::int64_t>(kPoisonI64); }

// ------------------------------------------------------------------------------------------------------------
// Buffer: typed host storage read/written as double
// ------------------------------------------------------------------------------------------------------------

class Buffer {
 public:
  Buffer() = default;
  Buffer(DType d, std::size_t count) : dtype_(d), count_(count), words_((count * elem() + 7) / 8 + 1, 0) {}

  static Buffer from(DType d, const Vec& values) {
    Buffer b(d, values.size());
    for (std::size_t i = 0; i < values.size(); ++i) b.set(i, values[i]);
    return b;
  }
  static Buffer labels(DType d, const std::vector<std::int64_t>& values) {
    Buffer b(d, values.size());
    for (std::size_t i = 0; i < values.size(); ++i) b.set_int(i, values[i]);
    return b;
  }

  DType dtype() const { return dtype_; }
  std::size_t size() const { return count_; }
  std::size_t elem() const { return fl::dtype_size(dtype_); }
  std::size_t bytes() const { return count_ * elem(); }
  void* data() { return words_.data(); }
  const void* data() const { return words_.data(); }
  unsigned char* byte_ptr() { return reinterpret_cast<unsigned char*>(words_.data()); }
  /// Pointer to element i (for building overlapping / offset arguments).
  void* at(std::size_t i) { return byte_ptr() + i * elem(); }

  /// Stores v rounded to the dtype (floating) or truncated (integer).
  void set(std::size_t i, double v) {
    unsigned char* p = byte_ptr() + i * elem();
    switch (dtype_) {
      case DType::Float32: {
        const float f = static_cast<float>(v);
        std::memcpy(p, &f, 4);
        break;
      }
      case DType::Float16: {
        const fl::half_t h = fl::to_half(static_cast<float>(v));
        std::memcpy(p, &h.bits, 2);
        break;
      }
      case DType::BFloat16: {
        const fl::bfloat16_t h = fl::to_bfloat16(static_cast<float>(v));
        std::memcpy(p, &h.bits, 2);
        break;
      }
      case DType::Int32:
      case DType::Int64: set_int(i, static_cast<std::int64_t>(v)); break;
    }
  }
  double get(std::size_t i) const {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(words_.data()) + i * elem();
    switch (dtype_) {
      case DType::Float32: {
        float f;
        std::memcpy(&f, p, 4);
        return f;
      }
      case DType::Float16: {
        fl::half_t h;
        std::memcpy(&h.bits, p, 2);
        return fl::to_float(h);
      }
      case DType::BFloat16: {
        fl::bfloat16_t h;
        std::memcpy(&h.bits, p, 2);
        return fl::to_float(h);
      }
      case DType::Int32:
      case DType::Int64: return static_cast<double>(get_int(i));
    }
    return kNaN;
  }
  void set_int(std::size_t i, std::int64_t v) {
    unsigned char* p = byte_ptr() + i * elem();
    if (dtype_ == DType::Int32) {
      const std::int32_t x = static_cast<std::int32_t>(v);
      std::memcpy(p, &x, 4);
    } else {
      std::memcpy(p, &v, 8);
    }
  }
  std::int64_t get_int(std::size_t i) const {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(words_.data()) + i * elem();
    if (dtype_ == DType::Int32) {
      std::int32_t x;
      std::memcpy(&x, p, 4);
      return x;
    }
    std::int64_t x;
    std::memcpy(&x, p, 8);
    return x;
  }
  Vec to_double() const {
    Vec v(count_);
    for (std::size_t i = 0; i < count_; ++i) v[i] = get(i);
    return v;
  }

  /// Raw bit pattern of element i (zero-extended).
  std::uint64_t bits(std::size_t i) const {
    std::uint64_t u = 0;
    std::memcpy(&u, reinterpret_cast<const unsigned char*>(words_.data()) + i * elem(), elem());
    return u;
  }
  std::uint64_t poison_bits() const {
    switch (dtype_) {
      case DType::Float32: return kPoisonF32;
      case DType::Float16: return kPoisonF16;
      case DType::BFloat16: return kPoisonBF16;
      case DType::Int32: return kPoisonI32;
      case DType::Int64: return kPoisonI64;
    }
    return 0;
  }
  void poison() {
    const std::uint64_t pb = poison_bits();
    for (std::size_t i = 0; i < count_; ++i) std::memcpy(byte_ptr() + i * elem(), &pb, elem());
  }
  void poison(std::size_t i) {
    const std::uint64_t pb = poison_bits();
    std::memcpy(byte_ptr() + i * elem(), &pb, elem());
  }
  bool is_poison(std::size_t i) const { return bits(i) == poison_bits(); }
  bool all_poison() const {
    for (std::size_t i = 0; i < count_; ++i)
      if (!is_poison(i)) return false;
    return true;
  }
  bool same_bits(const Buffer& o) const {
    return dtype_ == o.dtype_ && count_ == o.count_ && std::memcmp(data(), o.data(), bytes()) == 0;
  }

 private:
  DType dtype_ = DType::Float32;
  std::size_t count_ = 0;
  std::vector<std::uint64_t> words_;  // 8-byte aligned storage (one spare word so data() is never null)
};

/// [N, C] dense values placed into rows `stride` apart; the padding gets the poison pattern (it must be
/// neither read — it is NaN — nor written).
inline Buffer strided(DType d, const Vec& dense, std::int64_t N, std::int64_t C, std::int64_t stride) {
  Buffer b(d, static_cast<std::size_t>(N > 0 ? (N - 1) * stride + C : 0));
  b.poison();
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t c = 0; c < C; ++c) b.set(n * stride + c, dense[n * C + c]);
  return b;
}
/// The [N, C] values of a strided buffer, densely.
inline Vec gather(const Buffer& b, std::int64_t N, std::int64_t C, std::int64_t stride) {
  Vec v(static_cast<std::size_t>(N * C));
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t c = 0; c < C; ++c) v[n * C + c] = b.get(n * stride + c);
  return v;
}
/// True when every padding element (columns C..stride-1 of each row) still holds the poison pattern.
inline bool padding_untouched(const Buffer& b, std::int64_t N, std::int64_t C, std::int64_t stride) {
  for (std::int64_t n = 0; n + 1 < N; ++n)
    for (std::int64_t c = C; c < stride; ++c)
      if (!b.is_poison(n * stride + c)) return false;
  return true;
}

// ------------------------------------------------------------------------------------------------------------
// One library call with poisoned outputs
// ------------------------------------------------------------------------------------------------------------

struct RunResult {
  Status status = Status::Success;
  Vec loss;               // the float32 loss output(s), as double
  Buffer grad;            // the gradient buffer as written (same extent/stride as the input)
  Vec grad_dense;         // the gradient's [n] / [N, C] values densely
  Vec lse;                // cross_entropy lse output when requested
  std::int64_t error_count = 0;
  std::vector<float> loss_raw;
};

inline std::int64_t loss_count(const fl::ElementwiseProblem& p) {
  return p.reduction == Reduction::None ? p.n : 1;
}
inline std::int64_t loss_count(const fl::RowwiseProblem& p) {
  if (p.reduction != Reduction::None) return 1;
  return p.loss == Loss::KLDiv ? p.rows * p.classes : p.rows;
}

inline RunResult run(const fl::ElementwiseProblem& p, bool want_grad = true, fl::ExecutionConfig cfg = {}) {
  RunResult r;
  r.loss_raw = poisoned_floats(static_cast<std::size_t>(std::max<std::int64_t>(loss_count(p), 1)));
  r.grad = Buffer(p.dtype, static_cast<std::size_t>(std::max<std::int64_t>(p.n, 0)));
  r.grad.poison();
  std::int64_t ec = poison_i64();
  fl::LossOutputs out;
  out.loss = r.loss_raw.data();
  out.grad = want_grad ? r.grad.data() : nullptr;
  out.error_count = &ec;
  r.status = fl::compute(p, out, cfg);
  r.loss.assign(r.loss_raw.begin(), r.loss_raw.begin() + std::max<std::int64_t>(loss_count(p), 0));
  r.grad_dense = r.grad.to_double();
  r.error_count = ec;
  return r;
}

inline RunResult run(const fl::RowwiseProblem& p, bool want_grad = true, bool want_lse = false,
                     fl::ExecutionConfig cfg = {}) {
  RunResult r;
  const std::int64_t stride = p.row_stride > 0 ? p.row_stride : p.classes;
  const std::int64_t span = p.rows > 0 ? (p.rows - 1) * stride + p.classes : 0;
  r.loss_raw = poisoned_floats(static_cast<std::size_t>(std::max<std::int64_t>(loss_count(p), 1)));
  r.grad = Buffer(p.dtype, static_cast<std::size_t>(span));
  r.grad.poison();
  std::vector<float> lse = poisoned_floats(static_cast<std::size_t>(std::max<std::int64_t>(p.rows, 1)));
  std::int64_t ec = poison_i64();
  fl::LossOutputs out;
  out.loss = r.loss_raw.data();
  out.grad = want_grad ? r.grad.data() : nullptr;
  out.lse = want_lse ? lse.data() : nullptr;
  out.error_count = &ec;
  r.status = fl::compute(p, out, cfg);
  r.loss.assign(r.loss_raw.begin(), r.loss_raw.begin() + std::max<std::int64_t>(loss_count(p), 0));
  r.grad_dense = gather(r.grad, p.rows, p.classes, stride);
  if (want_lse) r.lse.assign(lse.begin(), lse.begin() + p.rows);
  r.error_count = ec;
  return r;
}

// ------------------------------------------------------------------------------------------------------------
// Comparisons
// ------------------------------------------------------------------------------------------------------------

inline bool same_value(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return a == b;
}

/// |actual − expected| <= atol + rtol·|expected| elementwise; NaN matches only NaN, ±inf only itself.
inline ::testing::AssertionResult close_vec(const Vec& actual, const Vec& expected, double rtol, double atol,
                                            const char* what = "values") {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure() << what << ": size " << actual.size() << " != expected "
                                         << expected.size();
  std::ostringstream msg;
  msg.precision(10);
  std::size_t bad = 0;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double a = actual[i], e = expected[i];
    bool ok;
    if (std::isnan(e) || std::isnan(a) || std::isinf(e) || std::isinf(a))
      ok = same_value(a, e);
    else
      ok = std::fabs(a - e) <= atol + rtol * std::fabs(e);
    if (!ok) {
      if (bad < 8)
        msg << "\n  " << what << "[" << i << "]: got " << a << ", expected " << e << " (diff " << std::fabs(a - e)
            << ", tol " << atol + rtol * std::fabs(e) << ")";
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << actual.size() << " " << what
                                       << " out of tolerance (rtol " << rtol << ", atol " << atol << ")"
                                       << msg.str();
}

/// |actual − expected| <= ulps·ulp_d(expected) + atol, or actual equals expected rounded to `d` (which covers
/// overflow to ±inf and flush to zero); NaN matches only NaN.
inline ::testing::AssertionResult within_ulps(const Vec& actual, const Vec& expected, DType d, double ulps,
                                              double atol, const char* what = "gradient") {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure() << what << ": size " << actual.size() << " != expected "
                                         << expected.size();
  std::ostringstream msg;
  msg.precision(10);
  std::size_t bad = 0;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double a = actual[i], e = expected[i];
    bool ok;
    if (std::isnan(e) || std::isnan(a))
      ok = std::isnan(a) && std::isnan(e);
    else if (same_value(a, round_to(d, e)))
      ok = true;
    else if (std::isinf(a) || std::isinf(e))
      ok = false;
    else
      ok = std::fabs(a - e) <= ulps * ulp(d, e) + atol;
    if (!ok) {
      if (bad < 8)
        msg << "\n  " << what << "[" << i << "]: got " << a << ", expected " << e << " (diff " << std::fabs(a - e)
            << " = " << std::fabs(a - e) / ulp(d, e) << " ulp of " << fl::dtype_name(d) << ")";
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << actual.size() << " " << what << " beyond " << ulps
                                       << " ulp (+ atol " << atol << ")" << msg.str();
}

inline double max_abs(const Vec& v) {
  double m = 0;
  for (double x : v)
    if (std::isfinite(x)) m = std::max(m, std::fabs(x));
  return m;
}
inline double sum(const Vec& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

// ------------------------------------------------------------------------------------------------------------
// Names and oracle bridges
// ------------------------------------------------------------------------------------------------------------

inline oracle::Red to_red(Reduction r) {
  switch (r) {
    case Reduction::None: return oracle::Red::None;
    case Reduction::Sum: return oracle::Red::Sum;
    case Reduction::BatchMean: return oracle::Red::BatchMean;
    default: return oracle::Red::Mean;
  }
}
inline const char* red_name(Reduction r) {
  switch (r) {
    case Reduction::None: return "none";
    case Reduction::Mean: return "mean";
    case Reduction::Sum: return "sum";
    case Reduction::BatchMean: return "batchmean";
    case Reduction::Default: return "default";
  }
  return "unknown";
}
inline std::string dtype_tag(DType d) { return fl::dtype_name(d); }

/// A gtest-safe identifier fragment (letters, digits, '_').
inline std::string ident(std::string s) {
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return s;
}

inline const std::vector<Loss>& elementwise_losses() {
  static const std::vector<Loss> v = {Loss::MSE,      Loss::MAE,         Loss::RMSE,  Loss::MSLE,
                                      Loss::Huber,    Loss::SmoothL1,    Loss::PseudoHuber, Loss::LogCosh,
                                      Loss::Hinge,    Loss::SquaredHinge, Loss::BCE,  Loss::BCEWithLogits};
  return v;
}
inline const std::vector<Loss>& rowwise_losses() {
  static const std::vector<Loss> v = {Loss::CrossEntropy, Loss::NLL, Loss::KLDiv, Loss::KLDivLogits};
  return v;
}

/// Random elementwise data suited to each loss: (x, y) with x a probability for bce, labels for the hinges.
inline void elementwise_data(Rng& rng, Loss loss, std::size_t n, Vec& x, Vec& y) {
  x.resize(n);
  y.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    switch (loss) {
      case Loss::MSLE:
        x[i] = rng.uniform(-0.5, 6);
        y[i] = rng.uniform(-0.5, 6);
        break;
      case Loss::Hinge:
      case Loss::SquaredHinge:
        x[i] = rng.uniform(-3, 3);
        y[i] = rng.bernoulli(0.5) ? 1.0 : (rng.bernoulli(0.5) ? 0.0 : -1.0);
        break;
      case Loss::BCE:
        x[i] = rng.uniform(0.001, 0.999);
        y[i] = rng.bernoulli(0.3) ? rng.uniform(0, 1) : (rng.bernoulli(0.5) ? 1.0 : 0.0);
        break;
      case Loss::BCEWithLogits:
        x[i] = rng.normal(0, 4);
        y[i] = rng.bernoulli(0.3) ? rng.uniform(0, 1) : (rng.bernoulli(0.5) ? 1.0 : 0.0);
        break;
      default:
        x[i] = rng.normal(0, 2);
        y[i] = rng.normal(0, 2);
        break;
    }
  }
}

/// A row-wise log-softmax of `logits` ([N, C], double) — used to make valid log-probability inputs.
inline Vec log_softmax_rows(const Vec& logits, std::int64_t N, std::int64_t C) {
  Vec out(logits.size());
  for (std::int64_t n = 0; n < N; ++n) {
    double m = -kInf;
    for (std::int64_t c = 0; c < C; ++c) m = std::max(m, logits[n * C + c]);
    double s = 0;
    for (std::int64_t c = 0; c < C; ++c) s += std::exp(logits[n * C + c] - m);
    const double lse = m + std::log(s);
    for (std::int64_t c = 0; c < C; ++c) out[n * C + c] = logits[n * C + c] - lse;
  }
  return out;
}
inline Vec softmax_rows(const Vec& logits, std::int64_t N, std::int64_t C) {
  Vec out = log_softmax_rows(logits, N, C);
  for (double& v : out) v = std::exp(v);
  return out;
}
/// Random probability rows [N, C] (softmax of N(0, 2²) logits) with ~10% exact zeros.
inline Vec random_prob_rows(Rng& rng, std::int64_t N, std::int64_t C) {
  Vec t = softmax_rows(rng.normal_vec(static_cast<std::size_t>(N * C), 0, 2), N, C);
  for (double& v : t)
    if (rng.bernoulli(0.1)) v = 0;
  return t;
}

// ------------------------------------------------------------------------------------------------------------
// Loss families: one random, valid call of any loss (used by the property and edge tests)
// ------------------------------------------------------------------------------------------------------------

/// A loss as the tests group them: every elementwise loss, and cross_entropy split into sparse / soft.
struct Family {
  Loss loss = Loss::MSE;
  bool soft = false;  // cross_entropy with a dense target
};
inline std::string family_name(const Family& f) {
  return std::string(fl::loss_name(f.loss)) + (f.soft ? "_soft" : "");
}
inline bool family_rowwise(const Family& f) { return !fl::is_elementwise(f.loss); }
inline bool family_has_labels(const Family& f) {
  return (f.loss == Loss::CrossEntropy && !f.soft) || f.loss == Loss::NLL;
}
inline std::vector<Family> all_families() {
  std::vector<Family> v;
  for (Loss l : elementwise_losses()) v.push_back({l, false});
  v.push_back({Loss::CrossEntropy, false});
  v.push_back({Loss::CrossEntropy, true});
  v.push_back({Loss::NLL, false});
  v.push_back({Loss::KLDiv, false});
  v.push_back({Loss::KLDivLogits, false});
  return v;
}

/// A complete call: data (rounded to the dtype), the buffers holding it, and the problem pointing at them.
/// Not copyable (the problem points into the buffers); move it or build it in place.
struct Instance {
  Family fam;
  DType dtype = DType::Float32;
  std::int64_t n = 0;                   // elementwise: elements
  std::int64_t N = 0, C = 0, stride = 0;  // row-wise
  Vec x, y, w;                          // dense values: input, target (dense), elementwise weight
  std::vector<std::int64_t> labels;
  DType label_dtype = DType::Int64;
  std::vector<float> class_weight, pos_col;
  Buffer bx, by, bw, blabels;
  fl::ElementwiseProblem e;
  fl::RowwiseProblem r;

  Instance() = default;
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;
  Instance(Instance&&) = default;

  bool rowwise() const { return family_rowwise(fam); }
  /// (Re)creates the buffers from the dense values and points the problem at them.
  void materialise() {
    if (!rowwise()) {
      bx = Buffer::from(dtype, x);
      by = Buffer::from(dtype, y);
      bw = Buffer::from(dtype, w);
      e.input = bx.data();
      e.target = by.data();
      e.weight = w.empty() ? nullptr : bw.data();
      e.params.pos_weight_per_column = pos_col.empty() ? nullptr : pos_col.data();
      e.params.columns = static_cast<std::int64_t>(pos_col.size());
    } else {
      bx = strided(dtype, x, N, C, stride);
      by = y.empty() ? Buffer() : strided(dtype, y, N, C, stride);
      blabels = Buffer::labels(label_dtype, labels);
      r.input = bx.data();
      r.target = y.empty() ? nullptr : by.data();
      r.labels = labels.empty() ? nullptr : blabels.data();
      r.label_dtype = label_dtype;
      r.class_weight = class_weight.empty() ? nullptr : class_weight.data();
      r.row_stride = stride;
    }
  }
  RunResult run(bool grad = true, bool lse = false, fl::ExecutionConfig cfg = {}) const {
    if (!rowwise()) return tu::run(e, grad, cfg);
    return tu::run(r, grad, lse && fam.loss == Loss::CrossEntropy, cfg);
  }
  void set_reduction(Reduction red) { (rowwise() ? r.reduction : e.reduction) = red; }
  void set_grad_scale(double s) { (rowwise() ? r.grad_scale : e.grad_scale) = s; }
  double grad_scale() const { return rowwise() ? r.grad_scale : e.grad_scale; }
};

/// A random valid call of family `f`: `size` elements (elementwise) or rows (row-wise, with `C` classes and
/// `extra_stride` padding per row). With `options`, the non-default options are used: weights / class
/// weights, delta, beta, pos_weight (per column when size % 4 == 0), label smoothing, z_loss, softcap,
/// ignored rows, temperature, log_target.
inline Instance make_instance(Rng& rng, const Family& f, DType d, std::int64_t size, std::int64_t C = 0,
                              bool options = false, std::int64_t extra_stride = 0,
                              Reduction red = Reduction::Mean) {
  Instance in;
  in.fam = f;
  in.dtype = d;
  if (!family_rowwise(f)) {
    in.n = size;
    elementwise_data(rng, f.loss, static_cast<std::size_t>(size), in.x, in.y);
    in.x = round_to(d, in.x);
    in.y = round_to(d, in.y);
    in.e.loss = f.loss;
    in.e.dtype = d;
    in.e.n = size;
    in.e.reduction = f.loss == Loss::RMSE ? Reduction::Mean : red;
    if (options) {
      in.w = round_to(d, rng.uniform_vec(static_cast<std::size_t>(size), 0, 2));
      in.e.params.delta = 0.7;
      in.e.params.beta = 0.4;
      in.e.params.pos_weight = 1.7;
      if (f.loss == Loss::BCEWithLogits && size % 4 == 0) in.pos_col = {0.5f, 1.5f, 2.5f, 4.0f};
    }
  } else {
    const std::int64_t N = size;
    const std::size_t NC = static_cast<std::size_t>(N * C);
    in.N = N;
    in.C = C;
    in.stride = C + extra_stride;
    in.r.loss = f.loss;
    in.r.dtype = d;
    in.r.rows = N;
    in.r.classes = C;
    in.r.reduction = red;
    if (red == Reduction::BatchMean && f.loss != Loss::KLDiv && f.loss != Loss::KLDivLogits)
      in.r.reduction = Reduction::Mean;
    auto probs = [&] { return random_prob_rows(rng, N, C); };
    switch (f.loss) {
      case Loss::CrossEntropy:
        in.x = rng.normal_vec(NC, 0, 3);
        if (f.soft) in.y = probs();
        break;
      case Loss::NLL:
      case Loss::KLDiv: in.x = log_softmax_rows(rng.normal_vec(NC, 0, 2), N, C); break;
      default: in.x = rng.normal_vec(NC, 0, 3); break;
    }
    if (f.loss == Loss::KLDiv) {
      if (options) {
        in.r.params.log_target = true;
        in.y = log_softmax_rows(rng.normal_vec(NC, 0, 2), N, C);
      } else {
        in.y = probs();
      }
    }
    if (f.loss == Loss::KLDivLogits) {
      in.y = rng.normal_vec(NC, 0, 3);
      if (options) in.r.params.temperature = 2.0;
    }
    if (family_has_labels(f)) {
      in.labels.resize(static_cast<std::size_t>(N));
      for (auto& l : in.labels) l = (options && rng.bernoulli(0.1)) ? -100 : rng.integer(0, C - 1);
      if (options) in.label_dtype = DType::Int32;
    }
    if (options && (f.loss == Loss::CrossEntropy || f.loss == Loss::NLL)) {
      in.class_weight.resize(static_cast<std::size_t>(C));
      for (float& v : in.class_weight) v = static_cast<float>(rng.uniform(0.2, 3));
    }
    if (options && f.loss == Loss::CrossEntropy) {
      in.r.params.label_smoothing = 0.1;
      in.r.params.z_loss = 1e-3;
      in.r.params.softcap = 8;
    }
    in.x = round_to(d, in.x);
    in.y = round_to(d, in.y);
  }
  in.materialise();
  return in;
}

/// The oracle's answer for an instance (its grad_scale) under reduction `red` (Default: the loss's).
inline oracle::Result oracle_for(const Instance& in, Reduction red) {
  if (!in.rowwise()) {
    oracle::ElemParams op;
    op.delta = in.e.params.delta;
    op.beta = in.e.params.beta;
    op.pos_weight = in.e.params.pos_weight;
    op.pos_weight_col.assign(in.pos_col.begin(), in.pos_col.end());
    op.grad_scale = in.e.grad_scale;
    if (red == Reduction::Default) red = Reduction::Mean;
    return oracle::elementwise(fl::loss_name(in.fam.loss), in.x, in.y, in.w, to_red(red), op);
  }
  oracle::RowParams op;
  op.ignore_index = in.r.params.ignore_index;
  op.class_weight.assign(in.class_weight.begin(), in.class_weight.end());
  op.label_smoothing = in.r.params.label_smoothing;
  op.z_loss = in.r.params.z_loss;
  op.softcap = in.r.params.softcap;
  op.log_target = in.r.params.log_target;
  op.temperature = in.r.params.temperature;
  op.grad_scale = in.r.grad_scale;
  if (red == Reduction::Default) red = in.fam.loss == Loss::KLDivLogits ? Reduction::BatchMean : Reduction::Mean;
  const oracle::Red rr = to_red(red);
  switch (in.fam.loss) {
    case Loss::CrossEntropy:
      return in.fam.soft ? oracle::cross_entropy_soft(in.N, in.C, in.x, in.y, rr, op)
                         : oracle::cross_entropy(in.N, in.C, in.x, in.labels, rr, op);
    case Loss::NLL: return oracle::nll(in.N, in.C, in.x, in.labels, rr, op);
    case Loss::KLDiv: return oracle::kl_div(in.N, in.C, in.x, in.y, rr, op);
    default: return oracle::kl_div_logits(in.N, in.C, in.x, in.y, rr, op);
  }
}

/// The oracle's answer for an instance (its current reduction and grad_scale).
inline oracle::Result oracle_for(const Instance& in) {
  return oracle_for(in, in.rowwise() ? in.r.reduction : in.e.reduction);
}

}  // namespace tu
