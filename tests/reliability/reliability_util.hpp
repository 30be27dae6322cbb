// tests/reliability/reliability_util.hpp — host buffers in f32/f16/bf16, one-call runners that
// capture every output of a call, and comparison helpers for the CPU reliability tests.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "fusedloss/fusedloss.hpp"

namespace reltest {

using fusedloss::DType;
using fusedloss::Loss;
using fusedloss::Reduction;
using fusedloss::Status;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

inline const char* dtype_tag(DType d) { return fusedloss::dtype_name(d); }

inline const char* red_tag(Reduction r) {
  switch (r) {
    case Reduction::None: return "none";
    case Reduction::Mean: return "mean";
    case Reduction::Sum: return "sum";
    case Reduction::BatchMean: return "batchmean";
    case Reduction::Default: return "default";
  }
  return "?";
}

/// Largest finite value of a value dtype.
inline double dtype_max(DType d) {
  switch (d) {
    case DType::Float16: return 65504.0;
    case DType::BFloat16: return 3.3895313892515355e38;
    default: return 3.4028234663852886e38;
  }
}

/// Relative precision of a value dtype's rounding (half an ulp at 1, doubled for slack).
inline double dtype_eps(DType d) {
  switch (d) {
    case DType::Float16: return 1e-3;
    case DType::BFloat16: return 8e-3;
    default: return 2e-7;
  }
}

/// A host buffer of `count` values in a value dtype (8-byte aligned storage).
struct Buf {
  DType dtype = DType::Float32;
  std::int64_t count = 0;
  std::vector<std::uint64_t> words;

  Buf() = default;
  Buf(DType d, std::int64_t n) : dtype(d), count(n), words(static_cast<std::size_t>((n * 4 + 7) / 8 + 1), 0) {}

  std::size_t bytes() const { return static_cast<std::size_t>(count) * fusedloss::dtype_size(dtype); }
  void* data() { return words.data(); }
  const void* data() const { return words.data(); }
  unsigned char* raw() { return reinterpret_cast<unsigned char*>(words.data()); }
  const unsigned char* raw() const { return reinterpret_cast<const unsigned char*>(words.data()); }

  double get(std::int64_t i) const {
    switch (dtype) {
      case DType::Float16: {
        fusedloss::half_t h;
        std::memcpy(&h.bits, raw() + 2 * i, 2);
        return fusedloss::to_float(h);
      }
      case DType::BFloat16: {
        fusedloss::bfloat16_t b;
        std::memcpy(&b.bits, raw() + 2 * i, 2);
        return fusedloss::to_float(b);
      }
      default: {
        float f;
        std::memcpy(&f, raw() + 4 * i, 4);
        return f;
      }
    }
  }
  /// Stores v rounded to the dtype (through float; ties in the double → float step do not matter
  /// here because every test reads the stored value back as its reference input).
  void set(std::int64_t i, double v) {
    const float f = static_cast<float>(v);
    switch (dtype) {
      case DType::Float16: {
        const std::uint16_t b = fusedloss::to_half(f).bits;
        std::memcpy(raw() + 2 * i, &b, 2);
        break;
      }
      case DType::BFloat16: {
        const std::uint16_t b = fusedloss::to_bfloat16(f).bits;
        std::memcpy(raw() + 2 * i, &b, 2);
        break;
      }
      default: std::memcpy(raw() + 4 * i, &f, 4); break;
    }
  }
  void fill_bytes(unsigned char byte) { std::memset(raw(), byte, words.size() * 8); }
  std::vector<double> values() const {
    std::vector<double> v(static_cast<std::size_t>(count));
    for (std::int64_t i = 0; i < count; ++i) v[static_cast<std::size_t>(i)] = get(i);
    return v;
  }
  bool same_bytes(const Buf& o) const {
    return dtype == o.dtype && count == o.count && (bytes() == 0 || std::memcmp(raw(), o.raw(), bytes()) == 0);
  }
};

/// Random values in [lo, hi], stored (rounded) in `d`.
inline Buf random_buf(DType d, std::int64_t n, double lo, double hi, std::uint64_t seed) {
  Buf b(d, n);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  for (std::int64_t i = 0; i < n; ++i) b.set(i, u(rng));
  return b;
}

constexpr unsigned char kPoison = 0x5A;  // 0x5A5A as f16/bf16 and 0x5A5A5A5A as f32: finite, non-zero

/// Everything one call produced.
struct Outcome {
  Status status = Status::InvalidArgument;
  std::vector<float> loss;
  Buf grad;
  std::vector<float> lse;
  std::int64_t errors = -7;

  double loss_at(std::size_t i) const { return loss.at(i); }
  bool bitwise_equal(const Outcome& o) const {
    // (memcmp of an empty vector's null data() is undefined: compare sizes, then bytes if any.)
    auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
      return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
    };
    return status == o.status && errors == o.errors && same(loss, o.loss) && same(lse, o.lse) &&
           grad.same_bytes(o.grad);
  }
};

inline std::int64_t loss_count(const fusedloss::ElementwiseProblem& p) {
  return p.reduction == Reduction::None ? p.n : 1;
}
inline std::int64_t loss_count(const fusedloss::RowwiseProblem& p) {
  if (p.reduction != Reduction::None) return 1;
  return p.loss == Loss::KLDiv ? p.rows * p.classes : p.rows;
}

inline void fill_poison(std::vector<float>& v) { std::memset(v.data(), kPoison, v.size() * 4); }

/// Runs one elementwise call on the CPU path with fresh, poisoned outputs.
inline Outcome run(const fusedloss::ElementwiseProblem& p, bool with_grad = true, int threads = 0) {
  Outcome o;
  o.loss.assign(static_cast<std::size_t>(std::max<std::int64_t>(loss_count(p), 1)), 0.0f);
  fill_poison(o.loss);
  fusedloss::LossOutputs out;
  out.loss = o.loss.data();
  if (with_grad) {
    o.grad = Buf(p.dtype, p.n);
    o.grad.fill_bytes(kPoison);
    out.grad = o.grad.data();
  }
  out.error_count = &o.errors;
  fusedloss::ExecutionConfig cfg;
  cfg.backend = fusedloss::Backend::CPU;
  cfg.cpu_threads = threads;
  o.status = fusedloss::compute(p, out, cfg);
  return o;
}

/// Runs one row-wise call on the CPU path with fresh, poisoned outputs (grad spans the row stride).
inline Outcome run(const fusedloss::RowwiseProblem& p, bool with_grad = true, bool with_lse = false,
                   int threads = 0) {
  Outcome o;
  o.loss.assign(static_cast<std::size_t>(std::max<std::int64_t>(loss_count(p), 1)), 0.0f);
  fill_poison(o.loss);
  fusedloss::LossOutputs out;
  out.loss = o.loss.data();
  const std::int64_t stride = p.row_stride > 0 ? p.row_stride : p.classes;
  if (with_grad) {
    o.grad = Buf(p.dtype, p.rows * stride);
    o.grad.fill_bytes(kPoison);
    out.grad = o.grad.data();
  }
  if (with_lse) {
    o.lse.assign(static_cast<std::size_t>(std::max<std::int64_t>(p.rows, 1)), 0.0f);
    fill_poison(o.lse);
    out.lse = o.lse.data();
  }
  out.error_count = &o.errors;
  fusedloss::ExecutionConfig cfg;
  cfg.backend = fusedloss::Backend::CPU;
  cfg.cpu_threads = threads;
  o.status = fusedloss::compute(p, out, cfg);
  return o;
}

/// Checks a value the library produced against the float64 reference `want`, allowing for
/// the output dtype: where |want| exceeds the dtype's range the correctly rounded result is
/// ±inf; NaN must stay NaN; otherwise |got − want| ≤ rel·|want| + abs.
inline ::testing::AssertionResult close_in_dtype(double got, double want, double rel, double abs, double max_finite) {
  if (std::isnan(want)) {
    if (std::isnan(got)) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "got " << got << ", want NaN";
  }
  if (std::fabs(want) > max_finite * (1 + 1e-3)) {
    if (std::isinf(got) && (got > 0) == (want > 0)) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "got " << got << ", want " << want << " (overflows the dtype: ±inf)";
  }
  if (!std::isfinite(got))
    return ::testing::AssertionFailure() << "got " << got << ", want finite " << want;
  if (std::fabs(got - want) <= rel * std::fabs(want) + abs) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "got " << got << ", want " << want << " (diff " << std::fabs(got - want)
                                       << ")";
}

inline std::vector<std::int64_t> labels_as_i64(const std::vector<std::int64_t>& v) { return v; }

/// Labels in the requested integer dtype, as bytes (8-byte aligned).
struct LabelBuf {
  DType dtype = DType::Int64;
  std::vector<std::int64_t> storage;
  LabelBuf(DType d, const std::vector<std::int64_t>& values) : dtype(d), storage(values.size() + 1, 0) {
    if (values.empty()) return;
    if (d == DType::Int64) {
      std::memcpy(storage.data(), values.data(), values.size() * 8);
    } else {
      auto* p = reinterpret_cast<std::int32_t*>(storage.data());
      for (std::size_t i = 0; i < values.size(); ++i) p[i] = static_cast<std::int32_t>(values[i]);
    }
  }
  const void* data() const { return storage.data(); }
};

}  // namespace reltest
