// The CPU path's vector math at scale: bce_with_logits (one exponential, one division, a log
// polynomial sized for float outputs: cpu/simd-inl.h) element by element against long double, on
// millions of inputs across every float exponent, and the exp-based losses (cross_entropy,
// log_cosh) against the float64 oracle on large random shapes. ctest runs this file once per SIMD
// target as well (tests/CMakeLists.txt, label `simd`).
//
// The bound (README, "Accuracy"): each per-element loss and gradient is within 1 ulp of the dtype
// (the double value, error < ~2^−42 relative, rounded once). For the gradient of soft labels,
// (1 − y) − A·σ(−|x|) (x > 0) and A·σ(−|x|) − pw·y (x ≤ 0) may cancel: there the double evaluation
// can be off by a few double ulps of the two terms, so the check allows 2^−48·(|term 1| + |term 2|)
// on top of the 1 ulp (hard labels y ∈ {0, 1} never cancel and get no allowance).
//
// The polynomial coefficients in cpu/simd-inl.h are Chebyshev interpolants in double (mpmath:
// e^r = 1 + r + r²·Q(r) on |r| ≤ ln 2/2, degree 7; atanh series G(z) on z ≤ ((√2−1)/(√2+1))², degree 4);
// this test is what holds them to the bound.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "common/test_util.hpp"

namespace {

using namespace tu;
namespace fl = ::fusedloss;
using ld = long double;

/// σ(−|x|) = e/(1 + e), e = e^{−|x|}, in long double.
ld sigmoid_neg_abs(ld x) {
  const ld e = std::exp(-std::fabs(x));
  return e / (1 + e);
}
ld softplus_ld(ld z) { return (z > 0 ? z : ld(0)) + std::log1p(std::exp(-std::fabs(z))); }

/// x values covering every float exponent (both signs, random significands), the range where the
/// losses change fastest, and edge values; `count` of them, rounded to the dtype.
Vec logits(Rng& rng, DType d, std::size_t count) {
  Vec x(count);
  const double edges[] = {0.0, -0.0, 1e-45, -1e-45, 1.1754943508222875e-38, 0.5, -0.5, 0.34657359, 0.88137359,
                          -0.88137359, 1.0, -1.0, 16.635532, -16.635532, 36.7, -36.7, 87.3, -87.3, 103.9, -103.9,
                          708.0, -708.0, 745.2, 3.4028234663852886e38, -3.4028234663852886e38};
  std::size_t i = 0;
  for (double e : edges)
    if (i < count) x[i++] = e;
  for (; i < count; ++i) {
    const int kind = static_cast<int>(i % 4);
    double v;
    if (kind == 0) {
      v = std::ldexp(rng.uniform(1.0, 2.0), static_cast<int>(rng.integer(-149, 127)));  // any exponent
    } else if (kind == 1) {
      v = rng.uniform(-40.0, 40.0);  // e^{−|x|} from 1 to below float precision
    } else if (kind == 2) {
      v = rng.normal(0.0, 3.0);  // typical logits
    } else {
      v = std::ldexp(rng.uniform(1.0, 2.0), static_cast<int>(rng.integer(-30, 7)));  // near the ln 2 / √2 splits
    }
    x[i] = rng.bernoulli(0.5) ? v : -v;
  }
  return round_to(d, x);
}

struct Violations {
  std::size_t count = 0;
  double worst_ulps = 0;
  std::string first;
};

/// |got − want| ≤ 1 ulp_d(want) + allowance, or got == want rounded to d (overflow, flush to 0, NaN).
void check(Violations& v, DType d, double got, ld want, double allowance, const char* what, double x, double y) {
  const double w = static_cast<double>(want);
  if (same_value(got, round_to(d, w))) return;  // also NaN for NaN (0·inf at x = ±inf)
  const double err = std::fabs(static_cast<double>(static_cast<ld>(got) - want));
  const double u = ulp(d, w);
  if (err <= u + allowance) return;
  if (v.count++ == 0) {
    std::ostringstream s;
    s.precision(17);
    s << what << " at x = " << x << ", y = " << y << ": got " << got << ", want " << w << " (" << err / u
      << " ulp)";
    v.first = s.str();
  }
  v.worst_ulps = std::max(v.worst_ulps, err / u);
}

/// One CPU call of an elementwise loss with reduction none: the per-element losses, and the
/// gradient dℓ/dx itself.
RunResult per_element_call(Loss loss, DType d, const Vec& x, const Vec& y, double pos_weight = 1.0) {
  const Buffer xb = Buffer::from(d, x), yb = Buffer::from(d, y);
  fl::ElementwiseProblem p;
  p.loss = loss;
  p.dtype = d;
  p.n = static_cast<std::int64_t>(x.size());
  p.input = xb.data();
  p.target = yb.data();
  p.reduction = Reduction::None;
  p.params.pos_weight = pos_weight;
  fl::ExecutionConfig cfg;
  cfg.backend = fl::Backend::CPU;
  return run(p, true, cfg);
}

void expect_bce_with_logits_within_one_ulp(DType d, bool hard_labels, double pos_weight, std::size_t count,
                                           std::uint64_t seed) {
  SCOPED_TRACE(std::string(fl::dtype_name(d)) + (hard_labels ? " hard labels" : " soft labels") +
               " pos_weight " + std::to_string(pos_weight) + " seed " + std::to_string(seed));
  Rng rng(seed);
  const Vec x = logits(rng, d, count);
  Vec y(count);
  for (double& v : y) v = hard_labels ? (rng.bernoulli(0.5) ? 1.0 : 0.0) : round_to(d, rng.uniform(0.0, 1.0));
  const RunResult r = per_element_call(Loss::BCEWithLogits, d, x, y, pos_weight);
  ASSERT_EQ(r.status, Status::Success);

  Violations loss_v, grad_v;
  for (std::size_t i = 0; i < count; ++i) {
    const ld xi = x[i], yi = y[i], pw_y = static_cast<ld>(pos_weight) * yi;
    const ld loss = pw_y * softplus_ld(-xi) + (1 - yi) * softplus_ld(xi);
    const ld a_q = (pw_y + 1 - yi) * sigmoid_neg_abs(xi);
    const ld first = xi > 0 ? 1 - yi : a_q, second = xi > 0 ? a_q : pw_y;
    const ld grad = first - second;
    const double allowance = hard_labels ? 0.0 : std::ldexp(static_cast<double>(std::fabs(first) + std::fabs(second)), -48);
    check(loss_v, DType::Float32, r.loss[i], loss, 0.0, "loss", x[i], y[i]);
    check(grad_v, d, r.grad_dense[i], grad, allowance, "gradient", x[i], y[i]);
  }
  EXPECT_EQ(loss_v.count, 0u) << "worst " << loss_v.worst_ulps << " ulp; first: " << loss_v.first;
  EXPECT_EQ(grad_v.count, 0u) << "worst " << grad_v.worst_ulps << " ulp; first: " << grad_v.first;
}

TEST(SimdAccuracy, BceWithLogitsF32EveryElementWithinOneUlp) {
  // 2^21 + 2^20 + 3 elements: hard and soft labels, the default and a non-unit pos_weight; the odd
  // count leaves a partial last vector for the scalar tail.
  expect_bce_with_logits_within_one_ulp(DType::Float32, true, 1.0, (std::size_t(1) << 20) + 3, 1401);
  expect_bce_with_logits_within_one_ulp(DType::Float32, false, 1.0, (std::size_t(1) << 20) + 1, 1402);
  expect_bce_with_logits_within_one_ulp(DType::Float32, true, 3.7, std::size_t(1) << 19, 1403);
  expect_bce_with_logits_within_one_ulp(DType::Float32, false, 0.3, std::size_t(1) << 19, 1404);
}

TEST(SimdAccuracy, BceWithLogitsHalfAndBfloat16EveryElementWithinOneUlp) {
  for (DType d : {DType::BFloat16, DType::Float16}) {
    expect_bce_with_logits_within_one_ulp(d, true, 1.0, (std::size_t(1) << 19) + 5, 1405);
    expect_bce_with_logits_within_one_ulp(d, false, 2.0, (std::size_t(1) << 19) + 7, 1406);
  }
}

// log_cosh evaluates both of its scalar branches from one expm1 and one log1p
// (cpu/elementwise.cpp): every per-element loss and gradient within 1 ulp of the dtype against
// long double, over every float exponent, both branches, the |r| = 1 switch and ±inf/NaN-free
// extremes (r = x − y with y = 0, so r is exact).
TEST(SimdAccuracy, LogCoshEveryElementWithinOneUlp) {
  for (DType d : {DType::Float32, DType::BFloat16, DType::Float16}) {
    SCOPED_TRACE(fl::dtype_name(d));
    Rng rng(1408);
    const std::size_t count = (std::size_t(1) << 19) + 3;
    Vec x = logits(rng, d, count);
    for (std::size_t i = 0; i < 4096; ++i)  // around the branch switch at |r| = 1
      x[i + 64] = round_to(d, (i % 2 ? -1.0 : 1.0) * (1.0 + std::ldexp(rng.uniform(-1.0, 1.0), -static_cast<int>(i % 24))));
    const Vec y(count, 0.0);
    const RunResult r = per_element_call(Loss::LogCosh, d, x, y);
    ASSERT_EQ(r.status, Status::Success);
    Violations loss_v, grad_v;
    for (std::size_t i = 0; i < count; ++i) {
      const ld a = std::fabs(static_cast<ld>(x[i]));
      // cosh a − 1 = 2·sinh²(a/2) keeps the small branch's relative accuracy; no overflow above.
      const ld sh = std::sinh(a / 2);
      const ld loss = a < 1 ? std::log1p(2 * sh * sh) : a + std::log1p(std::exp(-2 * a)) - std::log(ld(2));
      check(loss_v, DType::Float32, r.loss[i], loss, 0.0, "loss", x[i], 0.0);
      check(grad_v, d, r.grad_dense[i], std::tanh(static_cast<ld>(x[i])), 0.0, "gradient", x[i], 0.0);
    }
    EXPECT_EQ(loss_v.count, 0u) << "worst " << loss_v.worst_ulps << " ulp; first: " << loss_v.first;
    EXPECT_EQ(grad_v.count, 0u) << "worst " << grad_v.worst_ulps << " ulp; first: " << grad_v.first;
  }
}

/// The correctly rounded (nearest, ties to even) bfloat16 of a finite double, as a double (±inf on
/// overflow); written from the definition: the two bfloat16 neighbours at v's exponent.
double bfloat16_nearest_even(double v) {
  if (v == 0) return v;
  const double a = std::fabs(v);
  const int e = std::max(std::ilogb(a), -126);
  const double spacing = std::ldexp(1.0, e - 7);
  const double lo = std::floor(a / spacing) * spacing, hi = lo + spacing;
  const double below = a - lo, above = hi - a;
  double r = below < above ? lo : above < below ? hi : (std::fmod(lo / spacing, 2.0) == 0 ? lo : hi);
  if (r >= std::ldexp(1.0, 128)) r = std::numeric_limits<double>::infinity();
  return v < 0 ? -r : r;
}

// The bfloat16 gradient store (cpu/simd-inl.h) rounds each double once, to nearest even: mse
// gradients w·2(x − y)·grad_scale built to land on and next to bfloat16 rounding ties, across
// exponents up to overflow and down into float's subnormals, against the definition.
TEST(SimdAccuracy, Bfloat16GradientIsTheCorrectlyRoundedDouble) {
  Rng rng(1411);
  const std::size_t n = 65536 + 3;
  for (int call = 0; call < 24; ++call) {
    Vec x(n), y(n), w(n);
    for (std::size_t i = 0; i < n; ++i) {
      x[i] = round_to(DType::BFloat16, rng.uniform(-4.0, 4.0));
      y[i] = std::ldexp(static_cast<double>(rng.integer(-8, 8)), -static_cast<int>(rng.integer(6, 12)));  // below x's last bit
      w[i] = round_to(DType::BFloat16, rng.uniform(0.5, 2.0));
    }
    // Powers of two keep the ties exact; others are general doubles; the scale walks the exponents.
    const int exponent = std::min(-126 + call * 11, 126);  // grad_scale ∈ [FLT_MIN, FLT_MAX]
    const double gs = std::ldexp(call % 2 == 0 ? 1.0 : rng.uniform(1.0, 2.0), exponent);
    const Buffer xb = Buffer::from(DType::BFloat16, x), yb = Buffer::from(DType::BFloat16, y),
                 wb = Buffer::from(DType::BFloat16, w);
    const Vec ys = yb.to_double();
    fl::ElementwiseProblem p;
    p.loss = Loss::MSE;
    p.dtype = DType::BFloat16;
    p.n = static_cast<std::int64_t>(n);
    p.input = xb.data();
    p.target = yb.data();
    p.weight = wb.data();
    p.reduction = Reduction::Sum;  // gradient factor = grad_scale
    p.grad_scale = gs;
    fl::ExecutionConfig cfg;
    cfg.backend = fl::Backend::CPU;
    const RunResult r = run(p, true, cfg);
    ASSERT_EQ(r.status, Status::Success);
    std::size_t bad = 0;
    std::string first;
    for (std::size_t i = 0; i < n; ++i) {
      const double g = (w[i] * (2.0 * (x[i] - ys[i]))) * gs;  // the library's double operations, in order
      const double want = bfloat16_nearest_even(g);
      if (!same_value(r.grad_dense[i], want) && bad++ == 0) {
        std::ostringstream m;
        m.precision(17);
        m << "g = " << g << ": got " << r.grad_dense[i] << ", want " << want;
        first = m.str();
      }
    }
    EXPECT_EQ(bad, 0u) << "grad_scale 2^" << exponent << ": " << first;
  }
}

// The other users of the shared exponential (cross_entropy's softmax, log_cosh's large branch) on
// large random inputs against the float64 oracle, at the suite's bound (tests/cpu/test_oracle_vs_cpu.cpp).
TEST(SimdAccuracy, ExponentialLossesMatchTheOracleOnLargeInputs) {
  Rng rng(1407);
  struct Shape {
    Family family;
    std::int64_t size, classes;
  };
  for (const Shape& s : {Shape{{Loss::CrossEntropy, false}, 257, 4099}, Shape{{Loss::LogCosh, false}, 1000003, 0},
                         Shape{{Loss::KLDivLogits, false}, 61, 3001}}) {
    for (DType d : {DType::Float32, DType::BFloat16}) {
      SCOPED_TRACE(family_name(s.family) + " " + fl::dtype_name(d));
      const Instance in = make_instance(rng, s.family, d, s.size, s.classes, false, 0, Reduction::None);
      const oracle::Result o = oracle_for(in);
      const RunResult r = in.run(true, false);
      ASSERT_EQ(r.status, Status::Success);
      EXPECT_TRUE(close_vec(r.loss, o.loss, 1e-6, 1e-12, "loss"));
      EXPECT_TRUE(within_ulps(r.grad_dense, o.grad, d, 1.0, 1e-12 * max_abs(o.grad)));
    }
  }
}

// bfloat16 cross_entropy without smoothing or z-loss takes its exponentials on float lanes
// (cpu/rowwise.cpp, "the softmax on float lanes"); the lanes it hands back to double — logits more
// than 86.5 below the row maximum, a·factor outside [2^−100, 2^100] — are held at the same bound:
// rows spread over [−160, 10] (most lanes deep), the target at the row maximum in some rows, class
// weights, sum and mean, extreme grad_scale, one-row and split passes. Gradient 1 ulp with no
// absolute allowance, so a flushed or misrounded tiny gradient fails.
TEST(SimdAccuracy, Bf16CrossEntropyWithDeepLogitsMatchesTheOracle) {
  Rng rng(1412);
  struct Case {
    std::int64_t N, C;
    Reduction red;
    double grad_scale;
  };
  for (const Case& k : {Case{37, 4099, Reduction::Sum, 1.0}, Case{37, 4099, Reduction::Mean, 1.0},
                        Case{37, 4099, Reduction::Sum, 1e33}, Case{37, 4099, Reduction::Mean, 1e-33},
                        Case{3, 20011, Reduction::Sum, 1.0}, Case{3, 20011, Reduction::None, 1e-33}}) {
    SCOPED_TRACE(std::to_string(k.N) + "x" + std::to_string(k.C) + " " + red_name(k.red) + " grad_scale " +
                 std::to_string(k.grad_scale));
    Instance in = make_instance(rng, Family{Loss::CrossEntropy, false}, DType::BFloat16, k.N, k.C, false, 0, k.red);
    in.x = round_to(DType::BFloat16, rng.uniform_vec(static_cast<std::size_t>(k.N * k.C), -160, 10));
    for (std::int64_t n = 0; n < k.N; n += 2) {  // the target holds the row maximum
      const std::int64_t y = in.labels[static_cast<std::size_t>(n)];
      in.x[static_cast<std::size_t>(n * k.C + y)] = 12.0;
    }
    in.class_weight.resize(static_cast<std::size_t>(k.C));
    for (float& v : in.class_weight) v = static_cast<float>(rng.uniform(0.2, 3));
    in.set_grad_scale(k.grad_scale);
    in.materialise();
    const oracle::Result o = oracle_for(in);
    const RunResult r = in.run(true, true);
    ASSERT_EQ(r.status, Status::Success);
    EXPECT_TRUE(close_vec(r.loss, o.loss, 1e-6, 1e-12, "loss"));
    EXPECT_TRUE(close_vec(r.lse, o.lse, 1e-6, 1e-12, "lse"));
    EXPECT_TRUE(within_ulps(r.grad_dense, o.grad, DType::BFloat16, 1.0, 0.0));
  }
}

}  // namespace
