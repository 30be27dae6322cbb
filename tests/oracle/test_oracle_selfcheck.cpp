// Self-check of the independent test oracle (tests/oracle/oracle.hpp).
//
// The oracle is what the library is judged against, so it is itself checked two ways that do not rely on the
// library at all:
//   1. hand-computed values (a few elements per loss, including the kinks r = ±δ, t·x = 1, p = 0/1, and the edge
//      cases of the contract: −inf logits, ±1e4 logits, all-ignored batch, bad labels, N = 0);
//   2. central finite differences of the oracle's own reduced loss against the oracle's own gradient, for every
//      loss, every reduction and every option, at points kept away from kinks.
#include "oracle.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

using oracle::ElemParams;
using oracle::Red;
using oracle::Result;
using oracle::RowParams;
using Vec = std::vector<double>;
using Labels = std::vector<int64_t>;

constexpr double kInf = std::numeric_limits<double>::infinity();
const double kLn2 = std::log(2.0);

const char* red_name(Red r) {
  switch (r) {
    case Red::None: return "none";
    case Red::Mean: return "mean";
    case Red::Sum: return "sum";
    case Red::BatchMean: return "batchmean";
  }
  return "?";
}

// The scalar whose gradient Result::grad is: the reduced loss, or for Red::None the sum of the per-item losses
// (upstream gradient of ones).
double total(const Result& r) {
  double s = 0;
  for (double v : r.loss) s += v;
  return s;
}

// Central finite differences of total(f(x)) against f(x).grad / grad_scale, coordinate by coordinate.
// Step h = 1e-6·max(1,|x_i|); the actual step (x+h) − (x−h) is used to cancel representation error.
void check_fd(const std::string& what, const Vec& x0, const std::function<Result(const Vec&)>& f,
              double grad_scale = 1.0) {
  const Result r0 = f(x0);
  ASSERT_EQ(r0.grad.size(), x0.size()) << what;
  for (std::size_t i = 0; i < x0.size(); ++i) {
    const double h = 1e-6 * std::max(1.0, std::fabs(x0[i]));
    Vec xp = x0, xm = x0;
    xp[i] += h;
    xm[i] -= h;
    const double fd = (total(f(xp)) - total(f(xm))) / (xp[i] - xm[i]) * grad_scale;
    const double g = r0.grad[i];
    ASSERT_TRUE(std::isfinite(g)) << what << " i=" << i;
    EXPECT_NEAR(g, fd, 2e-7 + 2e-6 * std::fabs(g)) << what << " i=" << i << " x=" << x0[i];
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Hand-computed values: elementwise
// ---------------------------------------------------------------------------------------------------------------

TEST(OracleHand, MseReductions) {
  const Vec x{1, 2, -1}, y{0, 0, 1};  // r = 1, 2, -2 ; r² = 1, 4, 4
  auto n = oracle::elementwise("mse", x, y, {}, Red::None);
  EXPECT_EQ(n.loss, (Vec{1, 4, 4}));
  EXPECT_EQ(n.grad, (Vec{2, 4, -4}));
  auto s = oracle::elementwise("mse", x, y, {}, Red::Sum);
  EXPECT_DOUBLE_EQ(s.loss.at(0), 9);
  EXPECT_EQ(s.grad, (Vec{2, 4, -4}));
  auto m = oracle::elementwise("mse", x, y, {}, Red::Mean);
  EXPECT_DOUBLE_EQ(m.loss.at(0), 3);
  EXPECT_DOUBLE_EQ(m.grad[0], 2.0 / 3);
  EXPECT_DOUBLE_EQ(m.grad[2], -4.0 / 3);
  // weights: mean divides by numel, not Σw
  auto mw = oracle::elementwise("mse", x, y, {2, 0, 1}, Red::Mean);
  EXPECT_DOUBLE_EQ(mw.loss.at(0), (2 * 1 + 0 + 4) / 3.0);
  EXPECT_DOUBLE_EQ(mw.grad[0], 2 * 2 / 3.0);
  EXPECT_DOUBLE_EQ(mw.grad[1], 0);
  // grad_scale multiplies the gradient, not the loss
  ElemParams p;
  p.grad_scale = 4;
  auto ms = oracle::elementwise("mse", x, y, {}, Red::Mean, p);
  EXPECT_DOUBLE_EQ(ms.loss.at(0), 3);
  EXPECT_DOUBLE_EQ(ms.grad[1], 4 * 4.0 / 3);
}

TEST(OracleHand, MaeAndL1SignAtZero) {
  for (const char* name : {"mae", "l1"}) {
    auto r = oracle::elementwise(name, {3, 1, -2}, {1, 1, 0}, {}, Red::None);
    EXPECT_EQ(r.loss, (Vec{2, 0, 2})) << name;
    EXPECT_EQ(r.grad, (Vec{1, 0, -1})) << name;
  }
}

TEST(OracleHand, Rmse) {
  auto r = oracle::elementwise("rmse", {3, 4}, {0, 0}, {}, Red::Mean);
  const double L = std::sqrt(12.5);
  EXPECT_DOUBLE_EQ(r.loss.at(0), L);
  EXPECT_DOUBLE_EQ(r.grad[0], 3 / (2 * L));
  EXPECT_DOUBLE_EQ(r.grad[1], 4 / (2 * L));
  auto z = oracle::elementwise("rmse", {1, 2}, {1, 2}, {}, Red::Mean);
  EXPECT_EQ(z.loss.at(0), 0);
  EXPECT_EQ(z.grad, (Vec{0, 0}));  // L = 0 → gradient 0, not NaN
  EXPECT_THROW(oracle::elementwise("rmse", {1}, {0}, {}, Red::Sum), std::invalid_argument);
  EXPECT_THROW(oracle::elementwise("rmse", {1}, {0}, {}, Red::None), std::invalid_argument);
}

TEST(OracleHand, Msle) {
  auto r = oracle::elementwise("msle", {1, -0.5, 3}, {0, 2, -4}, {}, Red::None);
  EXPECT_DOUBLE_EQ(r.loss[0], kLn2 * kLn2);
  EXPECT_DOUBLE_EQ(r.grad[0], 2 * kLn2 / 2);
  EXPECT_DOUBLE_EQ(r.loss[1], std::log(3.0) * std::log(3.0));  // x clamped to 0
  EXPECT_EQ(r.grad[1], 0);                                      // x ≤ 0 → 0
  EXPECT_DOUBLE_EQ(r.loss[2], std::log(4.0) * std::log(4.0));  // y clamped to 0
  EXPECT_DOUBLE_EQ(r.grad[2], 2 * std::log(4.0) / 4);
}

TEST(OracleHand, HuberAtKinks) {
  ElemParams p;
  p.delta = 2;
  auto r = oracle::elementwise("huber", {2, -2, 1, 5}, {0, 0, 0, 0}, {}, Red::None, p);
  // r = ±δ takes the linear branch: δ(|r| − δ/2) = 2, ∂ = ±δ (which equals r there, continuous)
  EXPECT_DOUBLE_EQ(r.loss[0], 2);
  EXPECT_DOUBLE_EQ(r.grad[0], 2);
  EXPECT_DOUBLE_EQ(r.loss[1], 2);
  EXPECT_DOUBLE_EQ(r.grad[1], -2);
  EXPECT_DOUBLE_EQ(r.loss[2], 0.5);
  EXPECT_DOUBLE_EQ(r.grad[2], 1);
  EXPECT_DOUBLE_EQ(r.loss[3], 8);
  EXPECT_DOUBLE_EQ(r.grad[3], 2);
}

TEST(OracleHand, SmoothL1) {
  ElemParams p;
  p.beta = 0.5;
  auto r = oracle::elementwise("smooth_l1", {0.25, 0.5, -3}, {0, 0, 0}, {}, Red::None, p);
  EXPECT_DOUBLE_EQ(r.loss[0], 0.0625);  // ½r²/β
  EXPECT_DOUBLE_EQ(r.grad[0], 0.5);     // r/β
  EXPECT_DOUBLE_EQ(r.loss[1], 0.25);    // |r| − β/2 at the kink
  EXPECT_DOUBLE_EQ(r.grad[1], 1);
  EXPECT_DOUBLE_EQ(r.loss[2], 2.75);
  EXPECT_DOUBLE_EQ(r.grad[2], -1);
  p.beta = 0;  // β = 0 is exactly L1
  auto l1 = oracle::elementwise("smooth_l1", {0.25, 0, -3}, {0, 0, 0}, {}, Red::None, p);
  EXPECT_EQ(l1.loss, (Vec{0.25, 0, 3}));
  EXPECT_EQ(l1.grad, (Vec{1, 0, -1}));
}

TEST(OracleHand, PseudoHuber) {
  ElemParams p;
  p.delta = 2;
  auto r = oracle::elementwise("pseudo_huber", {2, 0, 1e30, -1e30}, {0, 0, 0, 0}, {}, Red::None, p);
  EXPECT_DOUBLE_EQ(r.loss[0], 4 * (std::sqrt(2.0) - 1));
  EXPECT_DOUBLE_EQ(r.grad[0], 2 / std::sqrt(2.0));
  EXPECT_EQ(r.loss[1], 0);
  EXPECT_EQ(r.grad[1], 0);
  // huge |r|: δ²(|r|/δ − 1) ≈ δ|r|, ∂ → δ·sign(r); must be finite
  EXPECT_DOUBLE_EQ(r.loss[2], 2e30);
  EXPECT_DOUBLE_EQ(r.grad[2], 2);
  EXPECT_DOUBLE_EQ(r.loss[3], 2e30);
  EXPECT_DOUBLE_EQ(r.grad[3], -2);
  // tiny r: no cancellation, ℓ ≈ r²/2
  auto t = oracle::elementwise("pseudo_huber", {1e-10}, {0}, {}, Red::None);
  EXPECT_DOUBLE_EQ(t.loss[0], 0.5e-20);
}

TEST(OracleHand, LogCosh) {
  auto r = oracle::elementwise("log_cosh", {1, 1e4, -1e4, 1e-9, 0}, {0, 0, 0, 0, 0}, {}, Red::None);
  EXPECT_DOUBLE_EQ(r.loss[0], std::log(std::cosh(1.0)));
  EXPECT_DOUBLE_EQ(r.grad[0], std::tanh(1.0));
  EXPECT_DOUBLE_EQ(r.loss[1], 1e4 - kLn2);  // no overflow
  EXPECT_DOUBLE_EQ(r.grad[1], 1);
  EXPECT_DOUBLE_EQ(r.loss[2], 1e4 - kLn2);
  EXPECT_DOUBLE_EQ(r.grad[2], -1);
  EXPECT_DOUBLE_EQ(r.loss[3], 0.5e-18);  // no cancellation near 0
  EXPECT_EQ(r.loss[4], 0);
}

TEST(OracleHand, HingeAtKink) {
  // labels {0,1} and {-1,1} both work: t = +1 iff y > 0
  auto r = oracle::elementwise("hinge", {1, -1, 0.5, -0.5, 2}, {1, 0, 1, -1, 1}, {}, Red::None);
  EXPECT_EQ(r.loss, (Vec{0, 0, 0.5, 0.5, 0}));  // t·x = 1 at the first two: loss 0
  EXPECT_EQ(r.grad, (Vec{0, 0, -1, 1, 0}));     // and gradient 0 (t·x < 1 is false)
  auto s = oracle::elementwise("squared_hinge", {1, 0.5, -0.5, 3}, {1, 1, -1, 0}, {}, Red::None);
  EXPECT_EQ(s.loss, (Vec{0, 0.25, 0.25, 16}));
  EXPECT_EQ(s.grad, (Vec{0, -1, 1, 8}));
}

TEST(OracleHand, BceEndpointsAndBad) {
  auto r = oracle::elementwise("bce", {0, 0, 1, 1, 0.5, 0.25}, {0, 1, 1, 0, 1, 0}, {}, Red::None);
  EXPECT_EQ(r.bad, 0);
  EXPECT_EQ(r.loss[0], 0);    // −(0·(−100) + 1·log 1)
  EXPECT_EQ(r.loss[1], 100);  // log 0 clamped at −100
  EXPECT_EQ(r.loss[2], 0);
  EXPECT_EQ(r.loss[3], 100);
  EXPECT_DOUBLE_EQ(r.loss[4], kLn2);
  EXPECT_DOUBLE_EQ(r.loss[5], -std::log(0.75));
  EXPECT_EQ(r.grad[0], 0);
  EXPECT_DOUBLE_EQ(r.grad[1], -1e12);  // (p − y)/max(p(1−p), 1e-12)
  EXPECT_EQ(r.grad[2], 0);
  EXPECT_DOUBLE_EQ(r.grad[3], 1e12);
  EXPECT_DOUBLE_EQ(r.grad[4], -2);
  EXPECT_DOUBLE_EQ(r.grad[5], 0.25 / (0.25 * 0.75));

  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto b = oracle::elementwise("bce", {0.5, 1.5, nan, -0.1, 0.25}, {1, 1, 1, 0, 0}, {}, Red::None);
  EXPECT_EQ(b.bad, 3);
  EXPECT_DOUBLE_EQ(b.loss[0], kLn2);
  EXPECT_TRUE(std::isnan(b.loss[1]) && std::isnan(b.loss[2]) && std::isnan(b.loss[3]));
  EXPECT_EQ(b.grad[1], 0);
  EXPECT_EQ(b.grad[2], 0);
  EXPECT_EQ(b.grad[3], 0);
  EXPECT_DOUBLE_EQ(b.grad[4], 0.25 / (0.25 * 0.75));
  auto bm = oracle::elementwise("bce", {0.5, 1.5, 0.25}, {1, 1, 0}, {}, Red::Mean);
  EXPECT_EQ(bm.bad, 1);
  EXPECT_TRUE(std::isnan(bm.loss.at(0)));
  EXPECT_DOUBLE_EQ(bm.grad[0], -2.0 / 3);  // rest of the batch still computed
  EXPECT_EQ(bm.grad[1], 0);
}

TEST(OracleHand, BceWithLogits) {
  auto r = oracle::elementwise("bce_with_logits", {0, 1e4, -1e4, 1e4, 0}, {1, 0, 1, 1, 0.5}, {}, Red::None);
  EXPECT_DOUBLE_EQ(r.loss[0], kLn2);
  EXPECT_DOUBLE_EQ(r.grad[0], -0.5);
  EXPECT_DOUBLE_EQ(r.loss[1], 1e4);  // stable: finite at |x| = 1e4
  EXPECT_DOUBLE_EQ(r.grad[1], 1);
  EXPECT_DOUBLE_EQ(r.loss[2], 1e4);
  EXPECT_DOUBLE_EQ(r.grad[2], -1);
  EXPECT_EQ(r.loss[3], 0);
  EXPECT_EQ(r.grad[3], 0);
  EXPECT_DOUBLE_EQ(r.loss[4], kLn2);
  EXPECT_EQ(r.grad[4], 0);
  ElemParams p;
  p.pos_weight = 3;
  auto w = oracle::elementwise("bce_with_logits", {0, 0}, {1, 0}, {}, Red::None, p);
  EXPECT_DOUBLE_EQ(w.loss[0], 3 * kLn2);
  EXPECT_DOUBLE_EQ(w.grad[0], 3 * 0.5 - 3);  // (pw·y + 1 − y)σ − pw·y
  EXPECT_DOUBLE_EQ(w.loss[1], kLn2);
  EXPECT_DOUBLE_EQ(w.grad[1], 0.5);
  // per-column pos_weight on a [2, 3] matrix: element i uses col[i % 3]
  p.pos_weight_col = {1, 2, 4};
  auto c = oracle::elementwise("bce_with_logits", Vec(6, 0.0), Vec(6, 1.0), {}, Red::None, p);
  for (int i = 0; i < 6; ++i) EXPECT_DOUBLE_EQ(c.loss[i], p.pos_weight_col[i % 3] * kLn2) << i;
}

TEST(OracleHand, ElementwiseEmptyAndNaN) {
  for (const char* name : {"mse", "mae", "huber", "bce", "bce_with_logits", "hinge", "log_cosh"}) {
    EXPECT_EQ(oracle::elementwise(name, {}, {}, {}, Red::Sum).loss, (Vec{0})) << name;
    auto m = oracle::elementwise(name, {}, {}, {}, Red::Mean);
    ASSERT_EQ(m.loss.size(), 1u);
    EXPECT_TRUE(std::isnan(m.loss[0])) << name;
    EXPECT_TRUE(oracle::elementwise(name, {}, {}, {}, Red::None).loss.empty()) << name;
  }
  EXPECT_TRUE(std::isnan(oracle::elementwise("rmse", {}, {}, {}, Red::Mean).loss.at(0)));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const char* name : {"mse", "mae", "huber", "smooth_l1", "pseudo_huber", "log_cosh", "hinge", "msle",
                           "squared_hinge", "bce_with_logits"}) {
    auto r = oracle::elementwise(name, {0.5, nan, 0.25}, {0, 1, 1}, {}, Red::None);
    EXPECT_TRUE(std::isnan(r.loss[1]) && std::isnan(r.grad[1])) << name;
    EXPECT_TRUE(std::isfinite(r.loss[0]) && std::isfinite(r.loss[2]) && std::isfinite(r.grad[0])) << name;
  }
  EXPECT_THROW(oracle::elementwise("nope", {1}, {1}, {}, Red::Sum), std::invalid_argument);
  EXPECT_THROW(oracle::elementwise("mse", {1}, {1}, {}, Red::BatchMean), std::invalid_argument);
  EXPECT_THROW(oracle::elementwise("mse", {1, 2}, {1}, {}, Red::Sum), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------------------------
// Hand-computed values: row-wise
// ---------------------------------------------------------------------------------------------------------------

TEST(OracleHand, CrossEntropyBasic) {
  auto r = oracle::cross_entropy(2, 2, {0, 0, 1e4, -1e4}, {0, 1}, Red::None);
  EXPECT_DOUBLE_EQ(r.loss[0], kLn2);
  EXPECT_DOUBLE_EQ(r.loss[1], 2e4);  // ±1e4 logits: finite
  EXPECT_EQ(r.grad, (Vec{-0.5, 0.5, 1, -1}));
  EXPECT_DOUBLE_EQ(r.lse[0], kLn2);
  EXPECT_DOUBLE_EQ(r.lse[1], 1e4);
  auto m = oracle::cross_entropy(2, 2, {0, 0, 1e4, -1e4}, {0, 1}, Red::Mean);
  EXPECT_DOUBLE_EQ(m.loss.at(0), (kLn2 + 2e4) / 2);
  EXPECT_DOUBLE_EQ(m.grad[0], -0.25);
  // three classes, hand softmax
  const double e = std::exp(1.0), Z = 1 + e + e * e;
  auto t = oracle::cross_entropy(1, 3, {0, 1, 2}, {1}, Red::Sum);
  EXPECT_DOUBLE_EQ(t.loss.at(0), std::log(Z) - 1);
  EXPECT_DOUBLE_EQ(t.grad[0], 1 / Z);
  EXPECT_DOUBLE_EQ(t.grad[1], e / Z - 1);
  EXPECT_DOUBLE_EQ(t.grad[2], e * e / Z);
}

TEST(OracleHand, CrossEntropyNegInfNonTarget) {
  auto r = oracle::cross_entropy(1, 3, {0, -kInf, 0}, {0}, Red::Sum);
  EXPECT_DOUBLE_EQ(r.loss.at(0), kLn2);
  EXPECT_EQ(r.grad[1], 0);
  EXPECT_DOUBLE_EQ(r.grad[0], -0.5);
  EXPECT_DOUBLE_EQ(r.grad[2], 0.5);
  for (double g : r.grad) EXPECT_TRUE(std::isfinite(g));
  // also with softcap (tanh(−inf) = −1 → z' = −k, chain factor 0) and z-loss
  RowParams p;
  p.softcap = 5;
  p.z_loss = 0.1;
  auto s = oracle::cross_entropy(1, 3, {0, -kInf, 0}, {0}, Red::Sum, p);
  EXPECT_TRUE(std::isfinite(s.loss.at(0)));
  EXPECT_EQ(s.grad[1], 0);
}

TEST(OracleHand, CrossEntropyOptions) {
  RowParams p;
  p.label_smoothing = 0.3;
  // uniform logits: every −logp = log 2, so smoothing leaves the loss at log 2
  auto r = oracle::cross_entropy(1, 2, {0, 0}, {0}, Red::Sum, p);
  EXPECT_DOUBLE_EQ(r.loss.at(0), kLn2);
  // grad = (1−ε)(P − onehot) + (ε/C)(W·P − w) = 0.7·(−0.5, 0.5) + 0.15·(0, 0)
  EXPECT_DOUBLE_EQ(r.grad[0], -0.35);
  EXPECT_DOUBLE_EQ(r.grad[1], 0.35);

  RowParams z;
  z.z_loss = 0.5;
  auto q = oracle::cross_entropy(1, 2, {0, 0}, {1}, Red::Sum, z);
  EXPECT_DOUBLE_EQ(q.loss.at(0), kLn2 + 0.5 * kLn2 * kLn2);
  EXPECT_DOUBLE_EQ(q.grad[0], 0.5 + 2 * 0.5 * kLn2 * 0.5);

  RowParams c;
  c.softcap = 10;
  auto s = oracle::cross_entropy(1, 2, {100, 0}, {1}, Red::Sum, c);
  const double zc = 10 * std::tanh(10.0);
  const double lse = zc + std::log1p(std::exp(-zc));
  EXPECT_DOUBLE_EQ(s.lse.at(0), lse);
  EXPECT_DOUBLE_EQ(s.loss.at(0), lse);
  const double P0 = std::exp(zc - lse), P1 = std::exp(-lse), sech2 = 1 / (std::cosh(10.0) * std::cosh(10.0));
  EXPECT_DOUBLE_EQ(s.grad[0], P0 * sech2);  // chained through 1 − tanh²(10)
  EXPECT_DOUBLE_EQ(s.grad[1], P1 - 1);      // tanh(0) = 0: chain factor 1

  RowParams w;
  w.class_weight = {1, 3};
  auto m = oracle::cross_entropy(2, 2, {0, 0, 0, 0}, {0, 1}, Red::Mean, w);
  EXPECT_DOUBLE_EQ(m.loss.at(0), (kLn2 + 3 * kLn2) / 4);  // divisor Σ w[y_n] = 4
  EXPECT_DOUBLE_EQ(m.grad[0], -0.5 / 4);
  EXPECT_DOUBLE_EQ(m.grad[2], 3 * 0.5 / 4);
}

TEST(OracleHand, CrossEntropyIgnoreAndBad) {
  RowParams p;
  p.ignore_index = -1;
  auto r = oracle::cross_entropy(4, 2, {0, 0, 1, 2, 0, 0, 5, 5}, {0, -1, 7, 1}, Red::None, p);
  EXPECT_EQ(r.bad, 1);
  EXPECT_DOUBLE_EQ(r.loss[0], kLn2);
  EXPECT_EQ(r.loss[1], 0);
  EXPECT_TRUE(std::isnan(r.loss[2]));
  EXPECT_DOUBLE_EQ(r.loss[3], kLn2);
  EXPECT_EQ(r.grad[2], 0);
  EXPECT_EQ(r.grad[3], 0);
  EXPECT_EQ(r.grad[4], 0);
  EXPECT_EQ(r.grad[5], 0);
  EXPECT_DOUBLE_EQ(r.lse[1], 2 + std::log1p(std::exp(-1.0)));  // lse reported for ignored rows too
  EXPECT_DOUBLE_EQ(r.lse[2], kLn2);
  auto m = oracle::cross_entropy(4, 2, {0, 0, 1, 2, 0, 0, 5, 5}, {0, -1, 7, 1}, Red::Mean, p);
  EXPECT_TRUE(std::isnan(m.loss.at(0)));  // the bad row's NaN reaches the reduced loss
  EXPECT_DOUBLE_EQ(m.grad[0], -0.25);      // divisor 2: the bad and ignored rows are excluded
  // all ignored: mean NaN, gradient zeros; sum 0
  auto a = oracle::cross_entropy(2, 2, {1, 2, 3, 4}, {-100, -100}, Red::Mean);
  EXPECT_TRUE(std::isnan(a.loss.at(0)));
  EXPECT_EQ(a.grad, (Vec{0, 0, 0, 0}));
  EXPECT_EQ(a.bad, 0);
  auto as = oracle::cross_entropy(2, 2, {1, 2, 3, 4}, {-100, -100}, Red::Sum);
  EXPECT_EQ(as.loss.at(0), 0);
  // ignore_index inside [0, C) ignores that class's rows
  RowParams q;
  q.ignore_index = 1;
  auto in = oracle::cross_entropy(2, 2, {0, 0, 0, 0}, {0, 1}, Red::Mean, q);
  EXPECT_DOUBLE_EQ(in.loss.at(0), kLn2);
  EXPECT_EQ(in.grad[2], 0);
}

TEST(OracleHand, CrossEntropyN0) {
  EXPECT_EQ(oracle::cross_entropy(0, 5, {}, {}, Red::Sum).loss, (Vec{0}));
  EXPECT_TRUE(std::isnan(oracle::cross_entropy(0, 5, {}, {}, Red::Mean).loss.at(0)));
  EXPECT_TRUE(oracle::cross_entropy(0, 5, {}, {}, Red::None).loss.empty());
  EXPECT_TRUE(std::isnan(oracle::cross_entropy_soft(0, 5, {}, {}, Red::Mean).loss.at(0)));
  EXPECT_TRUE(std::isnan(oracle::nll(0, 5, {}, {}, Red::Mean).loss.at(0)));
  EXPECT_TRUE(std::isnan(oracle::kl_div(0, 5, {}, {}, Red::BatchMean).loss.at(0)));
  EXPECT_EQ(oracle::kl_div_logits(0, 5, {}, {}, Red::Sum).loss, (Vec{0}));
  EXPECT_THROW(oracle::cross_entropy(1, 2, {0, 0}, {0}, Red::BatchMean), std::invalid_argument);
}

TEST(OracleHand, CrossEntropyNaNRowIsolated) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto r = oracle::cross_entropy(3, 2, {0, 0, nan, 1, 0, 0}, {0, 1, 1}, Red::None);
  EXPECT_TRUE(std::isnan(r.loss[1]) && std::isnan(r.grad[2]) && std::isnan(r.grad[3]));
  EXPECT_DOUBLE_EQ(r.loss[0], kLn2);
  EXPECT_DOUBLE_EQ(r.loss[2], kLn2);
  EXPECT_EQ(r.bad, 0);
}

TEST(OracleHand, CrossEntropySoft) {
  auto r = oracle::cross_entropy_soft(1, 2, {0, 0}, {0.25, 0.75}, Red::Sum);
  EXPECT_DOUBLE_EQ(r.loss.at(0), kLn2);
  EXPECT_DOUBLE_EQ(r.grad[0], 0.25);
  EXPECT_DOUBLE_EQ(r.grad[1], -0.25);
  EXPECT_DOUBLE_EQ(r.lse.at(0), kLn2);
  // one-hot soft target equals sparse CE
  RowParams p;
  p.class_weight = {2, 1, 0.5};
  auto a = oracle::cross_entropy_soft(1, 3, {0.3, -1, 2}, {0, 0, 1}, Red::Sum, p);
  auto b = oracle::cross_entropy(1, 3, {0.3, -1, 2}, {2}, Red::Sum, p);
  EXPECT_DOUBLE_EQ(a.loss.at(0), b.loss.at(0));
  for (int c = 0; c < 3; ++c) EXPECT_DOUBLE_EQ(a.grad[c], b.grad[c]);
  // zero-probability class with a −inf logit: term skipped, finite loss, zero gradient there
  auto z = oracle::cross_entropy_soft(1, 3, {0, -kInf, 0}, {0.5, 0, 0.5}, Red::Mean);
  EXPECT_DOUBLE_EQ(z.loss.at(0), kLn2);
  EXPECT_EQ(z.grad[1], 0);
  // smoothing: t' = (1−ε)t + ε/C
  RowParams s;
  s.label_smoothing = 0.5;
  auto q = oracle::cross_entropy_soft(1, 2, {1, 0}, {1, 0}, Red::Sum, s);
  const double lse = std::log(1 + std::exp(1.0));
  EXPECT_DOUBLE_EQ(q.loss.at(0), 0.75 * (lse - 1) + 0.25 * lse);
  // mean divides by N
  auto m = oracle::cross_entropy_soft(2, 2, {0, 0, 0, 0}, {1, 0, 0, 1}, Red::Mean);
  EXPECT_DOUBLE_EQ(m.loss.at(0), kLn2);
  EXPECT_DOUBLE_EQ(m.grad[0], -0.25);
}

TEST(OracleHand, Nll) {
  RowParams p;
  p.class_weight = {1, 2, 3};
  auto r = oracle::nll(3, 3, {-1, -2, -3, -4, -5, -6, -7, -8, -9}, {2, 1, -100}, Red::None, p);
  EXPECT_EQ(r.loss, (Vec{9, 10, 0}));
  EXPECT_EQ(r.grad, (Vec{0, 0, -3, 0, -2, 0, 0, 0, 0}));
  auto m = oracle::nll(3, 3, {-1, -2, -3, -4, -5, -6, -7, -8, -9}, {2, 1, -100}, Red::Mean, p);
  EXPECT_DOUBLE_EQ(m.loss.at(0), 19.0 / 5);
  EXPECT_DOUBLE_EQ(m.grad[2], -3.0 / 5);
  EXPECT_DOUBLE_EQ(m.grad[4], -2.0 / 5);
  auto b = oracle::nll(2, 3, {-1, -2, -3, -4, -5, -6}, {3, 0}, Red::Sum);
  EXPECT_EQ(b.bad, 1);
  EXPECT_TRUE(std::isnan(b.loss.at(0)));
  EXPECT_EQ(b.grad, (Vec{0, 0, 0, -1, 0, 0}));
  auto a = oracle::nll(1, 3, {-1, -2, -3}, {-100}, Red::Mean);
  EXPECT_TRUE(std::isnan(a.loss.at(0)));
  EXPECT_EQ(a.grad, (Vec{0, 0, 0}));
}

TEST(OracleHand, KlDiv) {
  const Vec q{std::log(0.25), std::log(0.75), std::log(0.5), std::log(0.5)};
  const Vec p{0.5, 0.5, 0, 1};
  auto r = oracle::kl_div(2, 2, q, p, Red::None);
  EXPECT_DOUBLE_EQ(r.loss[0], 0.5 * std::log(0.5) - 0.5 * std::log(0.25));
  EXPECT_DOUBLE_EQ(r.loss[1], 0.5 * std::log(0.5) - 0.5 * std::log(0.75));
  EXPECT_EQ(r.loss[2], 0);  // xlogy(0, 0) = 0
  EXPECT_DOUBLE_EQ(r.loss[3], -std::log(0.5));
  EXPECT_EQ(r.grad, (Vec{-0.5, -0.5, -0.0, -1}));
  const double S = r.loss[0] + r.loss[1] + r.loss[2] + r.loss[3];
  EXPECT_DOUBLE_EQ(oracle::kl_div(2, 2, q, p, Red::Sum).loss.at(0), S);
  auto m = oracle::kl_div(2, 2, q, p, Red::Mean);
  EXPECT_DOUBLE_EQ(m.loss.at(0), S / 4);
  EXPECT_DOUBLE_EQ(m.grad[3], -0.25);
  auto b = oracle::kl_div(2, 2, q, p, Red::BatchMean);
  EXPECT_DOUBLE_EQ(b.loss.at(0), S / 2);
  EXPECT_DOUBLE_EQ(b.grad[3], -0.5);
  // log_target gives the same numbers for t = log p (and exp(−inf) = 0 → term 0)
  RowParams lt;
  lt.log_target = true;
  auto l = oracle::kl_div(2, 2, q, {std::log(0.5), std::log(0.5), -kInf, 0}, Red::None, lt);
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(l.loss[i], r.loss[i], 1e-15) << i;
    EXPECT_NEAR(l.grad[i], r.grad[i], 1e-15) << i;
  }
  // negative p → NaN naturally
  EXPECT_TRUE(std::isnan(oracle::kl_div(1, 1, {0}, {-0.5}, Red::None).loss[0]));
  // loss_terms: Σ|p·log p| + |p·q| per element, reduced like the loss
  ASSERT_EQ(r.loss_terms.size(), 4u);
  EXPECT_DOUBLE_EQ(r.loss_terms[0], 0.5 * std::log(2.0) + 0.5 * std::log(4.0));
  EXPECT_EQ(r.loss_terms[2], 0);
  EXPECT_DOUBLE_EQ(b.loss_terms.at(0), (r.loss_terms[0] + r.loss_terms[1] + r.loss_terms[2] + r.loss_terms[3]) / 2);
  EXPECT_TRUE(oracle::nll(1, 2, {-1, -0.5}, {0}, Red::Sum).loss_terms.empty());
  // cross_entropy: |z_y| + |lse| for the row [0, 1], label 0
  EXPECT_DOUBLE_EQ(oracle::cross_entropy(1, 2, {0, 1}, {0}, Red::Sum).loss_terms.at(0), std::log1p(std::exp(1.0)));
}

TEST(OracleHand, KlDivLogits) {
  // identical student and teacher: zero loss, zero gradient
  const Vec s{1, 2, 3, -1, 0, 4};
  auto z = oracle::kl_div_logits(2, 3, s, s, Red::BatchMean);
  EXPECT_NEAR(z.loss.at(0), 0, 1e-15);
  for (double g : z.grad) EXPECT_NEAR(g, 0, 1e-15);
  // C = 2, T = 2: p = softmax(u/2) = (0.5, 0.5), student (0, 2)/2 → q = softmax(0, 1)
  RowParams p;
  p.temperature = 2;
  auto r = oracle::kl_div_logits(1, 2, {0, 2}, {0, 0}, Red::None, p);
  const double q0 = 1 / (1 + std::exp(1.0)), q1 = 1 - q0;
  EXPECT_DOUBLE_EQ(r.loss.at(0), 4 * (0.5 * std::log(0.5 / q0) + 0.5 * std::log(0.5 / q1)));
  EXPECT_DOUBLE_EQ(r.grad[0], 2 * (q0 - 0.5));
  EXPECT_DOUBLE_EQ(r.grad[1], 2 * (q1 - 0.5));
  // loss_terms: T²·Σ p·(|u/T| + |lse(u/T)| + |s/T| + |lse(s/T)|), what log p − log q is made from
  EXPECT_DOUBLE_EQ(r.loss_terms.at(0), 4 * (std::log(2.0) + std::log1p(std::exp(1.0)) + 0.5));
  auto m = oracle::kl_div_logits(1, 2, {0, 2}, {0, 0}, Red::Mean, p);
  EXPECT_DOUBLE_EQ(m.loss.at(0), r.loss[0] / 2);
  EXPECT_DOUBLE_EQ(m.grad[0], r.grad[0] / 2);
  // teacher −inf class: p = 0, its term is 0 even though the student also has −inf there
  auto i = oracle::kl_div_logits(1, 3, {0, -kInf, 0}, {0, -kInf, 1}, Red::Sum);
  EXPECT_TRUE(std::isfinite(i.loss.at(0)));
  EXPECT_EQ(i.grad[1], 0);
}

// ---------------------------------------------------------------------------------------------------------------
// Finite differences: every elementwise loss × reduction × option
// ---------------------------------------------------------------------------------------------------------------

struct ElemCase {
  std::string loss;
  ElemParams p;
};

// Random (x, y) for `loss`, drawn away from the loss's kinks so the central difference is a true derivative.
void draw_elem(const ElemCase& ec, std::mt19937_64& rng, std::size_t n, Vec& x, Vec& y) {
  std::uniform_real_distribution<double> U(0, 1);
  auto u = [&](double a, double b) { return a + (b - a) * U(rng); };
  x.resize(n);
  y.resize(n);
  const std::string& l = ec.loss;
  for (std::size_t i = 0; i < n; ++i) {
    if (l == "bce") {
      x[i] = u(0.05, 0.95);
      y[i] = (i % 3 == 0) ? double(i % 2) : u(0, 1);
    } else if (l == "bce_with_logits") {
      x[i] = u(-6, 6);
      y[i] = (i % 3 == 0) ? double(i % 2) : u(0, 1);
    } else if (l == "hinge" || l == "squared_hinge") {
      const double labels[3] = {0, 1, -1};
      y[i] = labels[i % 3];
      const double t = y[i] > 0 ? 1 : -1;
      double v;
      do v = u(-3, 3);
      while (std::fabs(1 - t * v) < 0.05);
      x[i] = v;
    } else if (l == "msle") {
      x[i] = u(0.05, 4);
      y[i] = u(-0.8, 4);
    } else {
      y[i] = u(-2, 2);
      double r;
      const double kinks[3] = {0, ec.p.delta, ec.p.beta};
      bool near;
      do {
        r = u(-4, 4);
        near = false;
        for (double k : kinks) near = near || std::fabs(std::fabs(r) - k) < 0.05;
      } while (near);
      x[i] = y[i] + r;
    }
  }
}

TEST(OracleFD, Elementwise) {
  std::vector<ElemCase> cases;
  for (const char* l : {"mse", "mae", "l1", "msle", "huber", "smooth_l1", "pseudo_huber", "log_cosh", "hinge",
                        "squared_hinge", "bce", "bce_with_logits"})
    cases.push_back({l, {}});
  ElemParams p;
  p.delta = 0.7;
  cases.push_back({"huber", p});
  p.delta = 2.5;
  cases.push_back({"pseudo_huber", p});
  cases.push_back({"huber", p});
  p = {};
  p.beta = 1.3;
  cases.push_back({"smooth_l1", p});
  p.beta = 0;
  cases.push_back({"smooth_l1", p});
  p = {};
  p.pos_weight = 2.5;
  cases.push_back({"bce_with_logits", p});
  p.pos_weight_col = {0.5, 1, 3};
  cases.push_back({"bce_with_logits", p});

  std::mt19937_64 rng(12345);
  const std::size_t n = 12;  // a multiple of 3, so pos_weight_col reads as a [4, 3] matrix
  for (const auto& ec : cases) {
    for (bool weighted : {false, true}) {
      for (Red red : {Red::None, Red::Sum, Red::Mean}) {
        for (double scale : {1.0, 0.375}) {
          Vec x, y, w;
          draw_elem(ec, rng, n, x, y);
          if (weighted) {
            std::uniform_real_distribution<double> W(0.2, 2);
            w.resize(n);
            for (auto& v : w) v = W(rng);
          }
          ElemParams pp = ec.p;
          pp.grad_scale = scale;
          const std::string what = ec.loss + " red=" + red_name(red) + (weighted ? " weighted" : "") +
                                   " scale=" + std::to_string(scale) + " delta=" + std::to_string(ec.p.delta) +
                                   " beta=" + std::to_string(ec.p.beta) + " pw=" + std::to_string(ec.p.pos_weight) +
                                   (ec.p.pos_weight_col.empty() ? "" : " pwcol");
          check_fd(what, x, [&](const Vec& xx) { return oracle::elementwise(ec.loss, xx, y, w, red, pp); }, scale);
        }
      }
    }
  }
}

TEST(OracleFD, Rmse) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> U(-3, 3), W(0.2, 2);
  for (bool weighted : {false, true}) {
    Vec x(9), y(9), w;
    for (auto& v : x) v = U(rng);
    for (auto& v : y) v = U(rng);
    if (weighted) {
      w.resize(9);
      for (auto& v : w) v = W(rng);
    }
    ElemParams p;
    p.grad_scale = 1.5;
    check_fd(std::string("rmse") + (weighted ? " weighted" : ""), x,
             [&](const Vec& xx) { return oracle::elementwise("rmse", xx, y, w, Red::Mean, p); }, 1.5);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Finite differences: row-wise losses × reduction × option
// ---------------------------------------------------------------------------------------------------------------

constexpr int64_t kN = 5, kC = 7;

Vec rand_vec(std::mt19937_64& rng, std::size_t n, double a, double b) {
  std::uniform_real_distribution<double> U(a, b);
  Vec v(n);
  for (auto& e : v) e = U(rng);
  return v;
}

Vec rand_probs(std::mt19937_64& rng, int64_t N, int64_t C, bool with_zero) {
  Vec t = rand_vec(rng, static_cast<std::size_t>(N * C), 0.05, 1);
  for (int64_t n = 0; n < N; ++n) {
    if (with_zero) t[n * C + (n % C)] = 0;
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += t[n * C + c];
    for (int64_t c = 0; c < C; ++c) t[n * C + c] /= s;
  }
  return t;
}

std::vector<std::pair<std::string, RowParams>> ce_configs() {
  std::vector<std::pair<std::string, RowParams>> v;
  RowParams p;
  v.push_back({"plain", p});
  p.class_weight = {0.5, 1, 2, 0.25, 1.5, 3, 0.8};
  v.push_back({"weights", p});
  p = {};
  p.label_smoothing = 0.1;
  v.push_back({"smooth", p});
  p.label_smoothing = 1;
  v.push_back({"smooth=1", p});
  p = {};
  p.z_loss = 0.05;
  v.push_back({"zloss", p});
  p = {};
  p.softcap = 3;
  v.push_back({"softcap", p});
  p = {};
  p.class_weight = {0.5, 1, 2, 0.25, 1.5, 3, 0.8};
  p.label_smoothing = 0.2;
  p.z_loss = 0.01;
  p.softcap = 4;
  p.ignore_index = 3;  // inside [0, C): rows labelled 3 are ignored
  p.grad_scale = 0.625;
  v.push_back({"all", p});
  return v;
}

TEST(OracleFD, CrossEntropySparse) {
  std::mt19937_64 rng(99);
  for (const auto& cfg : ce_configs()) {
    const std::string& name = cfg.first;  // (not a structured binding: C++17 lambdas cannot capture those)
    const RowParams& p = cfg.second;
    for (Red red : {Red::None, Red::Sum, Red::Mean}) {
      const Vec z = rand_vec(rng, kN * kC, -5, 5);
      Labels y{0, 6, 3, p.ignore_index, 2};  // row 3 always ignored (row 2 too for "all")
      check_fd("ce " + name + " " + red_name(red), z,
               [&](const Vec& zz) { return oracle::cross_entropy(kN, kC, zz, y, red, p); }, p.grad_scale);
    }
  }
}

TEST(OracleFD, CrossEntropySoft) {
  std::mt19937_64 rng(98);
  for (const auto& cfg : ce_configs()) {
    const std::string& name = cfg.first;  // (not a structured binding: C++17 lambdas cannot capture those)
    const RowParams& p = cfg.second;
    for (Red red : {Red::None, Red::Sum, Red::Mean}) {
      const Vec z = rand_vec(rng, kN * kC, -5, 5);
      const Vec t = rand_probs(rng, kN, kC, /*with_zero=*/true);
      check_fd("ce_soft " + name + " " + red_name(red), z,
               [&](const Vec& zz) { return oracle::cross_entropy_soft(kN, kC, zz, t, red, p); }, p.grad_scale);
    }
  }
}

TEST(OracleFD, Nll) {
  std::mt19937_64 rng(97);
  for (const auto& cfg : ce_configs()) {
    const std::string& name = cfg.first;  // (not a structured binding: C++17 lambdas cannot capture those)
    const RowParams& p = cfg.second;
    for (Red red : {Red::None, Red::Sum, Red::Mean}) {
      const Vec x = rand_vec(rng, kN * kC, -6, 0);
      Labels y{0, 6, 3, p.ignore_index, 2};
      check_fd("nll " + name + " " + red_name(red), x,
               [&](const Vec& xx) { return oracle::nll(kN, kC, xx, y, red, p); }, p.grad_scale);
    }
  }
}

TEST(OracleFD, KlDiv) {
  std::mt19937_64 rng(96);
  for (bool log_target : {false, true}) {
    for (Red red : {Red::None, Red::Sum, Red::Mean, Red::BatchMean}) {
      RowParams p;
      p.log_target = log_target;
      p.grad_scale = 1.75;
      const Vec q = rand_vec(rng, kN * kC, -5, 0);
      Vec t = rand_probs(rng, kN, kC, /*with_zero=*/!log_target);
      if (log_target)
        for (auto& v : t) v = std::log(v);
      check_fd(std::string("kl_div ") + (log_target ? "log_target " : "") + red_name(red), q,
               [&](const Vec& qq) { return oracle::kl_div(kN, kC, qq, t, red, p); }, p.grad_scale);
    }
  }
}

TEST(OracleFD, KlDivLogits) {
  std::mt19937_64 rng(95);
  for (double T : {1.0, 0.5, 2.5}) {
    for (Red red : {Red::None, Red::Sum, Red::Mean, Red::BatchMean}) {
      RowParams p;
      p.temperature = T;
      p.grad_scale = 0.8;
      const Vec s = rand_vec(rng, kN * kC, -4, 4);
      const Vec u = rand_vec(rng, kN * kC, -4, 4);
      check_fd("kl_div_logits T=" + std::to_string(T) + " " + red_name(red), s,
               [&](const Vec& ss) { return oracle::kl_div_logits(kN, kC, ss, u, red, p); }, p.grad_scale);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------------------------

TEST(OracleProps, CrossEntropyRowsSumToZeroAndShiftInvariant) {
  std::mt19937_64 rng(5);
  const int64_t N = 4, C = 33;
  const Vec z = rand_vec(rng, N * C, -8, 8);
  const Labels y{0, 32, 17, 5};
  auto r = oracle::cross_entropy(N, C, z, y, Red::Mean);
  for (int64_t n = 0; n < N; ++n) {
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += r.grad[n * C + c];
    EXPECT_NEAR(s, 0, 1e-15);
  }
  Vec zs = z;
  for (int64_t c = 0; c < C; ++c) zs[1 * C + c] += 123.25;  // shift row 1
  auto s = oracle::cross_entropy(N, C, zs, y, Red::None);
  auto o = oracle::cross_entropy(N, C, z, y, Red::None);
  for (int64_t n = 0; n < N; ++n) EXPECT_NEAR(s.loss[n], o.loss[n], 1e-12);
  EXPECT_NEAR(s.lse[1], o.lse[1] + 123.25, 1e-12);
}

TEST(OracleProps, NoneGradEqualsSumGradAndScaleIsLinear) {
  std::mt19937_64 rng(6);
  const Vec z = rand_vec(rng, kN * kC, -3, 3);
  const Labels y{1, 2, 3, 4, 5};
  RowParams p;
  p.label_smoothing = 0.05;
  auto a = oracle::cross_entropy(kN, kC, z, y, Red::None, p);
  auto b = oracle::cross_entropy(kN, kC, z, y, Red::Sum, p);
  EXPECT_EQ(a.grad, b.grad);
  p.grad_scale = 3;
  auto c = oracle::cross_entropy(kN, kC, z, y, Red::Sum, p);
  for (std::size_t i = 0; i < c.grad.size(); ++i) EXPECT_NEAR(c.grad[i], 3 * b.grad[i], 1e-15);
  EXPECT_EQ(c.loss, b.loss);
  const Vec x = rand_vec(rng, 10, -2, 2), t = rand_vec(rng, 10, -2, 2);
  auto en = oracle::elementwise("huber", x, t, {}, Red::None);
  auto es = oracle::elementwise("huber", x, t, {}, Red::Sum);
  EXPECT_EQ(en.grad, es.grad);
}

// The tests will run the oracle at N·C ≈ 5e6 (C = 50257); make sure that is fine and still exact in structure.
TEST(OracleProps, LargeVocabulary) {
  std::mt19937_64 rng(8);
  const int64_t N = 100, C = 50257;
  const Vec z = rand_vec(rng, static_cast<std::size_t>(N * C), -10, 10);
  Labels y(N);
  for (int64_t n = 0; n < N; ++n) y[n] = (n * 7919) % C;
  y[3] = -100;
  auto r = oracle::cross_entropy(N, C, z, y, Red::Mean);
  ASSERT_EQ(r.grad.size(), static_cast<std::size_t>(N * C));
  EXPECT_TRUE(std::isfinite(r.loss.at(0)));
  for (int64_t n : {0, 50, 99}) {
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += r.grad[n * C + c];
    EXPECT_NEAR(s, 0, 1e-15);
  }
}

}  // namespace
