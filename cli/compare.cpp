#include "cli/compare.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "fusedloss/float16.hpp"

namespace fusedloss_cli {

using fusedloss::DType;

Tolerance tolerance_for(DType dtype) {
  if (dtype == DType::Float32) return Tolerance{1e-5, 1e-6, 0};
  return Tolerance{1e-5, 1e-6, 1};  // fp16 / bf16
}

std::string tolerance_text(const Tolerance& tol, const std::string& kind, DType dtype) {
  char buf[160];
  if (kind == "lse") {
    std::snprintf(buf, sizeof buf, "|d| <= %g*max(|ref|,mean|ref|,%g)", tol.loss_rel, kLseTermScale);
  } else if (kind != "grad") {
    std::snprintf(buf, sizeof buf, "|d| <= %g*max(|ref|,mean|ref|)", tol.loss_rel);
  } else if (tol.grad_ulp > 0) {
    std::snprintf(buf, sizeof buf, "<= %d ulp %s or |d| <= %g*max(max|ref|,T)", tol.grad_ulp,
                  fusedloss::dtype_name(dtype), tol.grad_abs);
  } else {
    std::snprintf(buf, sizeof buf, "|d| <= %g*max(max|ref|,T)", tol.grad_abs);
  }
  return buf;
}

namespace {

std::uint32_t bits_at(const HostTensor& t, std::int64_t i) {
  if (t.dtype == DType::Float32) {
    std::uint32_t b;
    std::memcpy(&b, t.bytes.data() + 4 * i, 4);
    return b;
  }
  std::uint16_t b;
  std::memcpy(&b, t.bytes.data() + 2 * i, 2);
  return b;
}

}  // namespace

std::int64_t ulp_distance_bits(std::uint32_t a, std::uint32_t b, DType dtype) {
  const int width = dtype == DType::Float32 ? 32 : 16;
  const std::uint32_t sign = 1u << (width - 1);
  auto ordered = [&](std::uint32_t v) -> std::int64_t {
    const std::int64_t magnitude = static_cast<std::int64_t>(v & (sign - 1u));
    return (v & sign) ? -magnitude : magnitude;
  };
  const std::int64_t d = ordered(a) - ordered(b);
  return d < 0 ? -d : d;
}

double rowwise_term_scale(fusedloss::Loss loss, double grad_scale, double divisor, double max_class_weight,
                          double temperature) {
  if (!(divisor > 0)) return 0.0;  // nothing divides (an all-ignored mean): the gradient is all zeros
  const double t = loss == fusedloss::Loss::KLDivLogits ? temperature : 1.0;
  return std::fabs(grad_scale) / divisor * max_class_weight * t;
}

double elementwise_term_scale(fusedloss::Loss loss, double grad_scale, double divisor, double max_weight,
                              double max_pos_weight) {
  if (!(divisor > 0)) return 0.0;
  const double f = std::fabs(grad_scale) / divisor * max_weight;
  if (loss == fusedloss::Loss::BCEWithLogits) return f * 2.0 * std::max(1.0, max_pos_weight);
  if (loss == fusedloss::Loss::MSLE) return f;
  return 0.0;
}

double elementwise_term_scale(const fusedloss::ElementwiseProblem& p) {
  using fusedloss::Reduction;
  double w_max = 1.0;
  if (p.weight != nullptr) {
    w_max = 0.0;
    for (std::int64_t i = 0; i < p.n; ++i) {
      double w;
      if (p.dtype == DType::Float32) {
        float f;
        std::memcpy(&f, static_cast<const unsigned char*>(p.weight) + 4 * i, 4);
        w = f;
      } else {
        std::uint16_t b;
        std::memcpy(&b, static_cast<const unsigned char*>(p.weight) + 2 * i, 2);
        w = p.dtype == DType::Float16 ? fusedloss::to_float(fusedloss::half_t{b})
                                      : fusedloss::to_float(fusedloss::bfloat16_t{b});
      }
      w_max = std::max(w_max, std::fabs(w));
    }
  }
  double pw_max = p.params.pos_weight;
  if (p.params.pos_weight_per_column != nullptr) {
    pw_max = 0.0;
    for (std::int64_t c = 0; c < p.params.columns; ++c)
      pw_max = std::max(pw_max, std::fabs(double{p.params.pos_weight_per_column[c]}));
  }
  const Reduction red = p.reduction == Reduction::Default ? Reduction::Mean : p.reduction;
  const double divisor = red == Reduction::Mean ? static_cast<double>(p.n) : 1.0;
  return elementwise_term_scale(p.loss, p.grad_scale, divisor, w_max, pw_max);
}

double linear_ce_gemm_term_scale(const Tolerance& tol, double K, double sum_abs_terms, double delta_z) {
  constexpr double kU = 0x1p-24;  // fp32 unit roundoff
  return (2.0 * (K + 2.0) * kU + 8.0 * delta_z) * sum_abs_terms / tol.grad_abs;
}

double rowwise_term_scale(const fusedloss::RowwiseProblem& p) {
  using fusedloss::Loss;
  using fusedloss::Reduction;
  const bool kl = p.loss == Loss::KLDiv || p.loss == Loss::KLDivLogits;
  Reduction red = p.reduction;
  if (red == Reduction::Default) red = p.loss == Loss::KLDivLogits ? Reduction::BatchMean : Reduction::Mean;
  const bool weighted = p.class_weight != nullptr && (p.loss == Loss::CrossEntropy || p.loss == Loss::NLL);
  const bool labelled = p.labels != nullptr && (p.loss == Loss::NLL || (p.loss == Loss::CrossEntropy && p.target == nullptr));
  double w_max = 1.0;
  if (weighted) {
    w_max = 0.0;
    for (std::int64_t c = 0; c < p.classes; ++c) w_max = std::max(w_max, std::fabs(double{p.class_weight[c]}));
  }
  double divisor = 1.0;
  if (red == Reduction::Mean && labelled) {
    divisor = 0.0;
    for (std::int64_t n = 0; n < p.rows; ++n) {
      std::int64_t y;
      if (p.label_dtype == DType::Int32) {
        std::int32_t y32;
        std::memcpy(&y32, static_cast<const unsigned char*>(p.labels) + 4 * n, 4);
        y = y32;
      } else {
        std::memcpy(&y, static_cast<const unsigned char*>(p.labels) + 8 * n, 8);
      }
      if (y != p.params.ignore_index && y >= 0 && y < p.classes) divisor += weighted ? double{p.class_weight[y]} : 1.0;
    }
  } else if (red == Reduction::Mean) {
    divisor = static_cast<double>(p.rows) * (kl ? static_cast<double>(p.classes) : 1.0);
  } else if (red == Reduction::BatchMean) {
    divisor = static_cast<double>(p.rows);
  }
  return rowwise_term_scale(p.loss, p.grad_scale, divisor, w_max, p.params.temperature);
}

Comparison compare(const HostTensor& got, const HostTensor& ref, CompareKind kind, const Tolerance& tol,
                   double term_scale) {
  Comparison c;
  const std::int64_t n = ref.numel();
  c.count = n;
  if (n == 0) return c;
  double max_ref = 0, sum_ref = 0;
  std::int64_t finite_refs = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const double r = get_value(ref, i);
    if (std::isfinite(r)) {
      max_ref = std::max(max_ref, std::fabs(r));
      sum_ref += std::fabs(r);
      ++finite_refs;
    }
  }
  const double mean_ref = finite_refs ? sum_ref / static_cast<double>(finite_refs) : 0.0;
  double worst_ratio = 0;  // exact agreement everywhere leaves worst = -1
  for (std::int64_t i = 0; i < n; ++i) {
    const double g = get_value(got, i), r = get_value(ref, i);
    double ratio = 0;  // error / allowed error
    bool fail = false;
    if (!std::isfinite(g) || !std::isfinite(r)) {
      const bool same = (std::isnan(g) && std::isnan(r)) || g == r;
      fail = !same;
      ratio = same ? 0.0 : std::numeric_limits<double>::infinity();
    } else {
      const double d = std::fabs(g - r);
      c.max_abs = std::max(c.max_abs, d);
      if (r != 0) c.max_rel = std::max(c.max_rel, d / std::fabs(r));
      else if (d != 0) c.max_rel = std::numeric_limits<double>::infinity();
      const double ulps = static_cast<double>(ulp_distance_bits(bits_at(got, i), bits_at(ref, i), got.dtype));
      c.max_ulp = std::max(c.max_ulp, ulps);
      if (kind == CompareKind::Loss) {
        const double allowed = tol.loss_rel * std::max({std::fabs(r), mean_ref, term_scale});
        ratio = d == 0 ? 0.0 : (allowed > 0 ? d / allowed : std::numeric_limits<double>::infinity());
      } else {
        const double allowed = tol.grad_abs * std::max(max_ref, term_scale);
        ratio = d == 0 ? 0.0 : (allowed > 0 ? d / allowed : std::numeric_limits<double>::infinity());
        if (tol.grad_ulp > 0) ratio = std::min(ratio, ulps / tol.grad_ulp);
      }
      fail = ratio > 1.0;
    }
    if (fail) ++c.failures;
    if (ratio > worst_ratio) {
      worst_ratio = ratio;
      c.worst = i;
      c.worst_got = g;
      c.worst_ref = r;
    }
  }
  return c;
}

std::string index_string(std::int64_t flat, const std::vector<std::int64_t>& shape) {
  if (flat < 0) return "-";
  std::vector<std::int64_t> idx(shape.size());
  for (std::size_t k = shape.size(); k-- > 0;) {
    if (shape[k] > 0) {
      idx[k] = flat % shape[k];
      flat /= shape[k];
    }
  }
  std::string s = "[";
  for (std::size_t k = 0; k < idx.size(); ++k) s += (k ? ", " : "") + std::to_string(idx[k]);
  return s + "]";
}

}  // namespace fusedloss_cli
