// Hand-computed values for every loss through the public API on the CPU path: a few elements each,
// including the kinks (r = ±δ, r = ±β, t·x = 1, p = 0 / 1), every reduction, and grad_scale.
// Expected numbers are written from the formulas of the loss contract (issue 2), not from any code.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "common/test_util.hpp"

namespace {

using namespace tu;
namespace fl = ::fusedloss;

const double kLn2 = std::log(2.0);
constexpr double kRtol = 2e-6;  // the loss is float32; the f32 gradient is one rounding of a double
constexpr double kAtol = 1e-7;

fl::ExecutionConfig cpu() {
  fl::ExecutionConfig c;
  c.backend = fl::Backend::CPU;
  return c;
}

bool exact_in(DType d, const Vec& v) {
  for (double x : v)
    if (!same_value(round_to(d, x), x)) return false;
  return true;
}

/// Runs an elementwise loss with none / sum / mean (and grad_scale) and checks against the per-element
/// expectations `l` (= w_i·ℓ_i) and `g` (= w_i·∂ℓ_i). Also in f16 / bf16 when the inputs are exact there.
void check_elem(Loss loss, const Vec& x, const Vec& y, const Vec& w, const Vec& l, const Vec& g,
                fl::ElementwiseParams params = {}) {
  const std::int64_t n = static_cast<std::int64_t>(x.size());
  for (DType d : {DType::Float32, DType::Float16, DType::BFloat16}) {
    if (d != DType::Float32 && !(exact_in(d, x) && exact_in(d, y) && exact_in(d, w))) continue;
    SCOPED_TRACE(std::string(fl::loss_name(loss)) + " " + fl::dtype_name(d));
    const Buffer bx = Buffer::from(d, x), by = Buffer::from(d, y), bw = Buffer::from(d, w);
    for (Reduction red : {Reduction::None, Reduction::Sum, Reduction::Mean, Reduction::Default}) {
      for (double scale : {1.0, -2.5}) {
        SCOPED_TRACE(std::string("reduction ") + red_name(red) + " grad_scale " + std::to_string(scale));
        fl::ElementwiseProblem p;
        p.loss = loss;
        p.dtype = d;
        p.n = n;
        p.input = bx.data();
        p.target = by.data();
        p.weight = w.empty() ? nullptr : bw.data();
        p.reduction = red;
        p.grad_scale = scale;
        p.params = params;
        const RunResult r = run(p, true, cpu());
        ASSERT_EQ(r.status, Status::Success) << fl::status_string(r.status);
        EXPECT_EQ(r.error_count, 0);
        const double div = (red == Reduction::Mean || red == Reduction::Default) ? double(n) : 1.0;
        if (red == Reduction::None) {
          EXPECT_TRUE(close_vec(r.loss, l, kRtol, kAtol, "loss"));
        } else {
          ASSERT_EQ(r.loss.size(), 1u);
          EXPECT_TRUE(close_vec(r.loss, {sum(l) / div}, kRtol, kAtol, "loss"));
        }
        Vec eg(g.size());
        for (std::size_t i = 0; i < g.size(); ++i) eg[i] = g[i] * scale / div;
        if (d == DType::Float32)
          EXPECT_TRUE(close_vec(r.grad_dense, eg, kRtol, kAtol, "gradient"));
        else
          EXPECT_TRUE(within_ulps(r.grad_dense, eg, d, 1.0, 0.0));
      }
    }
  }
}

TEST(CpuHandValues, Mse) {
  // r = {1, -3, 0, -0.5}
  check_elem(Loss::MSE, {1.5, -2, 0, 3}, {0.5, 1, 0, 3.5}, {}, {1, 9, 0, 0.25}, {2, -6, 0, -1});
  check_elem(Loss::MSE, {1.5, -2, 0, 3}, {0.5, 1, 0, 3.5}, {2, 0.5, 1, 4}, {2, 4.5, 0, 1}, {4, -3, 0, -4});
}

TEST(CpuHandValues, MaeAndL1Alias) {
  // r = {2, -2, 0, 0.25}; sign(0) = 0.
  check_elem(Loss::MAE, {3, -1, 2, 0.25}, {1, 1, 2, 0}, {}, {2, 2, 0, 0.25}, {1, -1, 0, 1});
  Loss l1 = Loss::MSE;
  ASSERT_TRUE(fl::parse_loss("l1", &l1));
  check_elem(l1, {3, -1}, {1, 1}, {0.5, 3}, {1, 6}, {0.5, -3});
}

TEST(CpuHandValues, Rmse) {
  // r = {3, -4, 0}: L = sqrt(25/3), ∂_i = r_i / (N·L).
  const double L = std::sqrt(25.0 / 3.0);
  for (Reduction red : {Reduction::Mean, Reduction::Default}) {
    const Buffer x = Buffer::from(DType::Float32, {3, 0, 1}), y = Buffer::from(DType::Float32, {0, 4, 1});
    fl::ElementwiseProblem p;
    p.loss = Loss::RMSE;
    p.n = 3;
    p.input = x.data();
    p.target = y.data();
    p.reduction = red;
    p.grad_scale = 2;
    const RunResult r = run(p, true, cpu());
    ASSERT_EQ(r.status, Status::Success);
    EXPECT_TRUE(close_vec(r.loss, {L}, kRtol, 0));
    EXPECT_TRUE(close_vec(r.grad_dense, {2 * 3 / (3 * L), 2 * -4 / (3 * L), 0}, kRtol, kAtol));
  }
  {  // weighted: Σ w r² = 2·1 + 1·0 = 2, N = 2: L = 1; ∂ = w r / (N L) = {1, 0}
    const Buffer x = Buffer::from(DType::Float32, {1, 5}), y = Buffer::from(DType::Float32, {0, 5}),
                 w = Buffer::from(DType::Float32, {2, 1});
    fl::ElementwiseProblem p;
    p.loss = Loss::RMSE;
    p.n = 2;
    p.input = x.data();
    p.target = y.data();
    p.weight = w.data();
    p.reduction = Reduction::Mean;
    const RunResult r = run(p, true, cpu());
    ASSERT_EQ(r.status, Status::Success);
    EXPECT_TRUE(close_vec(r.loss, {1.0}, kRtol, 0));
    EXPECT_TRUE(close_vec(r.grad_dense, {1.0, 0.0}, kRtol, kAtol));
  }
  {  // all residuals 0: L = 0 and the gradient is 0 (not 0/0)
    const Buffer x = Buffer::from(DType::Float32, {1, -2, 3});
    fl::ElementwiseProblem p;
    p.loss = Loss::RMSE;
    p.n = 3;
    p.input = x.data();
    p.target = x.data();
    p.reduction = Reduction::Mean;
    const RunResult r = run(p, true, cpu());
    ASSERT_EQ(r.status, Status::Success);
    EXPECT_EQ(r.loss[0], 0.0);
    EXPECT_TRUE(close_vec(r.grad_dense, {0, 0, 0}, 0, 0));
  }
}

TEST(CpuHandValues, Msle) {
  // log1p(3) = 2 ln2, log1p(1) = ln2; negative values clamp to 0 with zero derivative; x = 0 has ∂ = 0.
  const double l2 = kLn2 * kLn2;
  check_elem(Loss::MSLE, {3, 0, -0.5, 1, 1}, {1, 1, 1, 3, -3}, {}, {l2, l2, l2, l2, l2},
             {kLn2 / 2, 0, 0, -kLn2, kLn2});
}

TEST(CpuHandValues, HuberAtAndAroundTheKinks) {
  // δ = 1: |r| < 1 quadratic, |r| >= 1 linear; at r = ±δ both pieces give ½δ² and ∂ = ±δ.
  check_elem(Loss::Huber, {0.5, 1, -1, 3, -2.5, 0, 2.5}, {0, 0, 0, 0, 0, 0, 1.5}, {},
             {0.125, 0.5, 0.5, 2.5, 2, 0, 0.5}, {0.5, 1, -1, 1, -1, 0, 1});
  fl::ElementwiseParams p;
  p.delta = 2;  // r = {2, 1, -3, -2}
  check_elem(Loss::Huber, {2, 1, -3, -2}, {0, 0, 0, 0}, {}, {2, 0.5, 4, 2}, {2, 1, -2, -2}, p);
  check_elem(Loss::Huber, {2, 1}, {0, 0}, {0.5, 3}, {1, 1.5}, {1, 3}, p);
}

TEST(CpuHandValues, SmoothL1AtAndAroundTheKinks) {
  check_elem(Loss::SmoothL1, {0.5, 1, -1, 2, 0}, {0, 0, 0, 0, 0}, {}, {0.125, 0.5, 0.5, 1.5, 0},
             {0.5, 1, -1, 1, 0});
  fl::ElementwiseParams p;
  p.beta = 0;  // plain L1
  check_elem(Loss::SmoothL1, {0.5, 0, -3}, {0, 0, 0}, {}, {0.5, 0, 3}, {1, 0, -1}, p);
  p.beta = 0.5;  // r = 0.25 quadratic, r = -2 linear, r = β at the kink
  check_elem(Loss::SmoothL1, {0.25, -2, 0.5}, {0, 0, 0}, {}, {0.0625, 1.75, 0.25}, {0.5, -1, 1}, p);
}

TEST(CpuHandValues, PseudoHuber) {
  // δ = 1: r = 0.75 → sqrt(1 + 0.5625) = 1.25: ℓ = 0.25, ∂ = 0.6; r = 2.4 → 2.6: ℓ = 1.6, ∂ = 12/13.
  const double r4 = static_cast<float>(2.4);
  const double h4 = std::sqrt(1 + r4 * r4);
  const double big = 1e4, hb = std::sqrt(1 + big * big);
  check_elem(Loss::PseudoHuber, {0, 0.75, -0.75, r4, big}, {0, 0, 0, 0, 0}, {}, {0, 0.25, 0.25, h4 - 1, hb - 1},
             {0, 0.6, -0.6, r4 / h4, big / hb});
  fl::ElementwiseParams p;
  p.delta = 2;  // r/δ = 0.75: ℓ = 4·0.25 = 1, ∂ = 1.5 / 1.25 = 1.2
  check_elem(Loss::PseudoHuber, {1.5, -1.5}, {0, 0}, {}, {1, 1}, {1.2, -1.2}, p);
}

TEST(CpuHandValues, LogCoshIncludingHugeResiduals) {
  const double small = static_cast<float>(0.001);
  check_elem(Loss::LogCosh, {0, 1, -30, 100, 1e4, small}, {0, 0, 0, 0, 0, 0}, {},
             {0, std::log(std::cosh(1.0)), 30 - kLn2 + std::log1p(std::exp(-60.0)), 100 - kLn2, 1e4 - kLn2,
              std::log(std::cosh(small))},
             {0, std::tanh(1.0), -1, 1, 1, std::tanh(small)});
}

TEST(CpuHandValues, HingeAtTheKink) {
  // t = {1, -1, -1, 1, -1, 1, 1, 1}; t·x = {0.5, -0.5, 2, 1, 1, 2, 0, 0}: kink t·x = 1 has ℓ = 0, ∂ = 0.
  check_elem(Loss::Hinge, {0.5, 0.5, -2, 1, -1, 2, 0, 0}, {1, 0, -1, 1, 0, 1, 1, 0.25}, {},
             {0.5, 1.5, 0, 0, 0, 0, 1, 1}, {-1, 1, 0, 0, 0, 0, -1, -1});
}

TEST(CpuHandValues, SquaredHingeAtTheKink) {
  check_elem(Loss::SquaredHinge, {0.5, 0.5, -2, 1, -1, 2, 0}, {1, 0, -1, 1, 0, 1, 1}, {},
             {0.25, 2.25, 0, 0, 0, 0, 1}, {-1, 3, 0, 0, 0, 0, -2});
}

TEST(CpuHandValues, BceIncludingProbabilitiesZeroAndOne) {
  // p ∈ {0, 1}: logs clamped at -100; ∂ = (p − y) / max(p(1−p), 1e-12).
  check_elem(Loss::BCE, {0.5, 0.25, 0, 1, 0, 1, 0.5, 0.75}, {1, 0, 0, 1, 1, 0, 0.5, 0.25}, {},
             {kLn2, -std::log(0.75), 0, 0, 100, 100, kLn2, -(0.25 * std::log(0.75) + 0.75 * std::log(0.25))},
             {-2, 4.0 / 3.0, 0, 0, -1e12, 1e12, 0, 8.0 / 3.0});
}

TEST(CpuHandValues, BceWithLogits) {
  const double s2 = 1 / (1 + std::exp(-2.0));
  check_elem(Loss::BCEWithLogits, {0, 0, 2, -1e4, 1e4, 0}, {1, 0, 1, 1, 0, 0.5}, {},
             {kLn2, kLn2, std::log1p(std::exp(-2.0)), 1e4, 1e4, kLn2}, {-0.5, 0.5, s2 - 1, -1, 1, 0});
  fl::ElementwiseParams p;
  p.pos_weight = 3;  // ℓ = −(3y log σ + (1−y) log(1−σ)), ∂ = (3y + 1 − y)σ − 3y
  const double s1 = 1 / (1 + std::exp(-1.0));
  check_elem(Loss::BCEWithLogits, {0, 0, 1}, {1, 0.5, 0}, {}, {3 * kLn2, 2 * kLn2, std::log1p(std::exp(1.0))},
             {-1.5, -0.5, s1}, p);
}

TEST(CpuHandValues, BceWithLogitsPerColumnPosWeight) {
  // [2 rows × 2 columns], pos_weight per column {1, 3}: element i uses column i % 2.
  const std::vector<float> pw = {1.0f, 3.0f};
  fl::ElementwiseParams p;
  p.pos_weight = 100;  // ignored when the per-column vector is given
  p.pos_weight_per_column = pw.data();
  p.columns = 2;
  check_elem(Loss::BCEWithLogits, {0, 0, 0, 0}, {1, 1, 0, 1}, {}, {kLn2, 3 * kLn2, kLn2, 3 * kLn2},
             {-0.5, -1.5, 0.5, -1.5}, p);
}

// ---------------------------------------------------------------------------------------------------------
// Row-wise losses
// ---------------------------------------------------------------------------------------------------------

struct RowCase {
  Loss loss = Loss::CrossEntropy;
  std::int64_t N = 0, C = 0;
  Vec input;
  std::vector<std::int64_t> labels;  // sparse CE / nll
  Vec target;                        // dense CE / kl
  std::vector<float> class_weight;
  fl::RowwiseParams params;
};

RunResult run_rows(const RowCase& c, Reduction red, double scale = 1.0, bool lse = false) {
  const Buffer in = Buffer::from(DType::Float32, c.input);
  const Buffer tg = Buffer::from(DType::Float32, c.target);
  const Buffer lb = Buffer::labels(DType::Int64, c.labels);
  fl::RowwiseProblem p;
  p.loss = c.loss;
  p.rows = c.N;
  p.classes = c.C;
  p.input = in.data();
  p.labels = c.labels.empty() ? nullptr : lb.data();
  p.target = c.target.empty() ? nullptr : tg.data();
  p.class_weight = c.class_weight.empty() ? nullptr : c.class_weight.data();
  p.reduction = red;
  p.grad_scale = scale;
  p.params = c.params;
  return run(p, true, lse, cpu());
}

/// Softmax of a row given as doubles.
Vec softmax(const Vec& z) { return softmax_rows(z, 1, static_cast<std::int64_t>(z.size())); }
double logsumexp(const Vec& z) {
  double m = -kInf, s = 0;
  for (double v : z) m = std::max(m, v);
  for (double v : z) s += std::exp(v - m);
  return m + std::log(s);
}

TEST(CpuHandValues, CrossEntropyUniformAndSimpleRows) {
  RowCase c;
  c.N = 3;
  c.C = 3;
  c.input = {0, 0, 0, 1, 2, 3, 5, -5, 0};
  c.labels = {2, 0, -100};  // the last row is ignored
  const Vec z1 = {1, 2, 3};
  const double lse1 = logsumexp(z1);
  const Vec p1 = softmax(z1);
  const Vec rowloss = {std::log(3.0), lse1 - 1, 0};
  const Vec g_sum = {1 / 3.0, 1 / 3.0, 1 / 3.0 - 1, p1[0] - 1, p1[1], p1[2], 0, 0, 0};
  const Vec lse = {std::log(3.0), lse1, logsumexp({5, -5, 0})};

  const RunResult none = run_rows(c, Reduction::None, 1, true);
  ASSERT_EQ(none.status, Status::Success);
  EXPECT_TRUE(close_vec(none.loss, rowloss, kRtol, kAtol, "loss"));
  EXPECT_TRUE(close_vec(none.grad_dense, g_sum, kRtol, kAtol, "gradient"));
  EXPECT_TRUE(close_vec(none.lse, lse, kRtol, kAtol, "lse"));  // ignored rows get their lse too

  const RunResult s = run_rows(c, Reduction::Sum);
  EXPECT_TRUE(close_vec(s.loss, {rowloss[0] + rowloss[1]}, kRtol, kAtol));
  EXPECT_TRUE(close_vec(s.grad_dense, g_sum, kRtol, kAtol));

  // mean divides by the number of non-ignored rows (2), and grad_scale multiplies the gradient only.
  const RunResult m = run_rows(c, Reduction::Mean, 4.0);
  EXPECT_TRUE(close_vec(m.loss, {(rowloss[0] + rowloss[1]) / 2}, kRtol, kAtol));
  Vec g_mean = g_sum;
  for (double& v : g_mean) v *= 4.0 / 2;
  EXPECT_TRUE(close_vec(m.grad_dense, g_mean, kRtol, kAtol));
}

TEST(CpuHandValues, CrossEntropyClassWeightsAndIgnoreIndex) {
  RowCase c;
  c.N = 3;
  c.C = 3;
  c.input = {0, 0, 0, 1, 2, 3, 0, 0, 0};
  c.labels = {2, 0, 1};
  c.class_weight = {2.0f, 1.0f, 0.5f};
  c.params.ignore_index = 1;  // the third row is ignored; -100 is now an ordinary (bad) value
  const Vec p1 = softmax({1, 2, 3});
  const double l0 = std::log(3.0), l1 = logsumexp({1, 2, 3}) - 1;
  // mean = (w2·l0 + w0·l1) / (w2 + w0)
  const RunResult m = run_rows(c, Reduction::Mean);
  ASSERT_EQ(m.status, Status::Success);
  EXPECT_TRUE(close_vec(m.loss, {(0.5 * l0 + 2 * l1) / 2.5}, kRtol, kAtol));
  const Vec g = {0.5 / 3 / 2.5, 0.5 / 3 / 2.5, 0.5 * (1 / 3.0 - 1) / 2.5, 2 * (p1[0] - 1) / 2.5, 2 * p1[1] / 2.5,
                 2 * p1[2] / 2.5, 0, 0, 0};
  EXPECT_TRUE(close_vec(m.grad_dense, g, kRtol, kAtol));
  const RunResult none = run_rows(c, Reduction::None);
  EXPECT_TRUE(close_vec(none.loss, {0.5 * l0, 2 * l1, 0}, kRtol, kAtol));
}

TEST(CpuHandValues, CrossEntropyLabelSmoothing) {
  RowCase c;
  c.N = 2;
  c.C = 3;
  c.input = {0, 0, 0, 1, 2, 3};
  c.labels = {2, 0};
  c.params.label_smoothing = 0.3;
  const double eps = 0.3, lse1 = logsumexp({1, 2, 3});
  const Vec p1 = softmax({1, 2, 3});
  // Uniform logits: every −logp = ln 3, so ℓ = ln 3 whatever ε.
  // Row 1: (1−ε)(lse − 1) + (ε/3)·Σ_c (lse − z_c) = 0.7(lse − 1) + 0.1·(3 lse − 6).
  const Vec rowloss = {std::log(3.0), (1 - eps) * (lse1 - 1) + eps / 3 * (3 * lse1 - 6)};
  const Vec g = {1 / 3.0 - eps / 3, 1 / 3.0 - eps / 3, 1 / 3.0 - (1 - eps) - eps / 3,
                 p1[0] - (1 - eps) - eps / 3, p1[1] - eps / 3, p1[2] - eps / 3};
  const RunResult none = run_rows(c, Reduction::None);
  ASSERT_EQ(none.status, Status::Success);
  EXPECT_TRUE(close_vec(none.loss, rowloss, kRtol, kAtol));
  EXPECT_TRUE(close_vec(none.grad_dense, g, kRtol, kAtol));
  // ε = 1: only the uniform term remains.
  c.params.label_smoothing = 1.0;
  const RunResult one = run_rows(c, Reduction::Sum);
  EXPECT_TRUE(close_vec(one.loss, {std::log(3.0) + (3 * lse1 - 6) / 3}, kRtol, kAtol));
}

TEST(CpuHandValues, CrossEntropyZLoss) {
  RowCase c;
  c.N = 1;
  c.C = 2;
  c.input = {0, 0};
  c.labels = {0};
  c.params.z_loss = 0.5;  // ℓ = ln2 + 0.5·ln²2; ∂_c = p_c·(1 + 2·0.5·ln2) − [c = 0]
  const RunResult r = run_rows(c, Reduction::Sum, 1, true);
  ASSERT_EQ(r.status, Status::Success);
  EXPECT_TRUE(close_vec(r.loss, {kLn2 + 0.5 * kLn2 * kLn2}, kRtol, kAtol));
  EXPECT_TRUE(close_vec(r.grad_dense, {0.5 * (1 + kLn2) - 1, 0.5 * (1 + kLn2)}, kRtol, kAtol));
  EXPECT_TRUE(close_vec(r.lse, {kLn2}, kRtol, kAtol));
}

TEST(CpuHandValues, CrossEntropySoftcap) {
  RowCase c;
  c.N = 1;
  c.C = 3;
  c.input = {2, 0, -4};
  c.labels = {1};
  c.params.softcap = 2;  // z' = 2·tanh(z/2); chain 1 − tanh²(z/2)
  const Vec zc = {2 * std::tanh(1.0), 0, 2 * std::tanh(-2.0)};
  const Vec chain = {1 - std::tanh(1.0) * std::tanh(1.0), 1, 1 - std::tanh(-2.0) * std::tanh(-2.0)};
  const Vec p = softmax(zc);
  const RunResult r = run_rows(c, Reduction::Mean, 1, true);
  ASSERT_EQ(r.status, Status::Success);
  EXPECT_TRUE(close_vec(r.loss, {logsumexp(zc) - 0}, kRtol, kAtol));
  EXPECT_TRUE(close_vec(r.grad_dense, {p[0] * chain[0], (p[1] - 1) * chain[1], p[2] * chain[2]}, kRtol, kAtol));
  EXPECT_TRUE(close_vec(r.lse, {logsumexp(zc)}, kRtol, kAtol));  // lse of the softcapped logits
}

TEST(CpuHandValues, CrossEntropySoftTargets) {
  RowCase c;
  c.N = 2;
  c.C = 3;
  c.input = {0, 0, 0, 0, 0, 0};
  c.target = {0.5, 0.5, 0, 0, 0, 1};
  const RunResult r = run_rows(c, Reduction::Mean, 1, true);
  ASSERT_EQ(r.status, Status::Success);
  EXPECT_TRUE(close_vec(r.loss, {std::log(3.0)}, kRtol, kAtol));  // mean over N = 2 rows of ln 3
  const double t = 1 / 3.0;
  EXPECT_TRUE(close_vec(r.grad_dense, {(t - .5) / 2, (t - .5) / 2, t / 2, t / 2, t / 2, (t - 1) / 2}, kRtol, kAtol));
  EXPECT_TRUE(close_vec(r.lse, {std::log(3.0), std::log(3.0)}, kRtol, kAtol));
  // Smoothing: t' = 0.7·t + 0.1; class weights w: ℓ = −Σ w t' logp = ln3·Σ w t'.
  c.params.label_smoothing = 0.3;
  c.class_weight = {1.0f, 2.0f, 4.0f};
  const Vec tp = {0.45, 0.45, 0.1, 0.1, 0.1, 0.8};
  const double S0 = 0.45 + 0.9 + 0.4, S1 = 0.1 + 0.2 + 3.2;
  const RunResult n = run_rows(c, Reduction::None);
  EXPECT_TRUE(close_vec(n.loss, {std::log(3.0) * S0, std::log(3.0) * S1}, kRtol, kAtol));
  // ∂_c = S·p_c − w_c t'_c
  EXPECT_TRUE(close_vec(n.grad_dense,
                        {S0 * t - tp[0], S0 * t - 2 * tp[1], S0 * t - 4 * tp[2], S1 * t - tp[3], S1 * t - 2 * tp[4],
                         S1 * t - 4 * tp[5]},
                        kRtol, kAtol));
}

TEST(CpuHandValues, CrossEntropySingleClass) {
  RowCase c;
  c.N = 2;
  c.C = 1;
  c.input = {3.5, -7};
  c.labels = {0, 0};
  const RunResult r = run_rows(c, Reduction::None, 1, true);
  ASSERT_EQ(r.status, Status::Success);
  EXPECT_TRUE(close_vec(r.loss, {0, 0}, 0, kAtol));
  EXPECT_TRUE(close_vec(r.grad_dense, {0, 0}, 0, kAtol));
  EXPECT_TRUE(close_vec(r.lse, {3.5, -7}, kRtol, 0));
}

TEST(CpuHandValues, Nll) {
  RowCase c;
  c.loss = Loss::NLL;
  c.N = 3;
  c.C = 3;
  c.input = {-1, -2, -3, -0.5, -1.5, -2.5, -9, -9, -9};
  c.labels = {1, 0, -100};
  const RunResult none = run_rows(c, Reduction::None);
  ASSERT_EQ(none.status, Status::Success);
  EXPECT_TRUE(close_vec(none.loss, {2, 0.5, 0}, kRtol, kAtol));
  EXPECT_TRUE(close_vec(none.grad_dense, {0, -1, 0, -1, 0, 0, 0, 0, 0}, 0, 0));
  const RunResult m = run_rows(c, Reduction::Mean, 3.0);
  EXPECT_TRUE(close_vec(m.loss, {1.25}, kRtol, kAtol));
  EXPECT_TRUE(close_vec(m.grad_dense, {0, -1.5, 0, -1.5, 0, 0, 0, 0, 0}, kRtol, 0));
  c.class_weight = {2.0f, 1.0f, 1.0f};  // ℓ = {1·2, 2·0.5}; mean divides by w1 + w0 = 3
  const RunResult w = run_rows(c, Reduction::Mean);
  EXPECT_TRUE(close_vec(w.loss, {1.0}, kRtol, kAtol));
  EXPECT_TRUE(close_vec(w.grad_dense, {0, -1 / 3.0, 0, -2 / 3.0, 0, 0, 0, 0, 0}, kRtol, kAtol));
  const RunResult s = run_rows(c, Reduction::Sum);
  EXPECT_TRUE(close_vec(s.loss, {3.0}, kRtol, kAtol));
}

TEST(CpuHandValues, KlDivProbabilityAndLogTargets) {
  RowCase c;
  c.loss = Loss::KLDiv;
  c.N = 2;
  c.C = 3;
  const double lh = std::log(0.5), lq = std::log(0.25);
  c.input = {lh, lh, lq, lh, lq, lq};
  c.target = {0.25, 0.75, 0, 1, 0, 0};
  // ℓ = p log p − p q (0 where p = 0): {0.25·ln(0.25/0.5), 0.75·ln(0.75/0.5), 0, ln 2, 0, 0}; ∂ = −p
  const double q0 = static_cast<float>(lh), q1 = static_cast<float>(lq);
  const Vec el = {0.25 * std::log(0.25) - 0.25 * q0, 0.75 * std::log(0.75) - 0.75 * q0, 0, -q0, 0, 0};
  const RunResult none = run_rows(c, Reduction::None);
  ASSERT_EQ(none.status, Status::Success);
  ASSERT_EQ(none.loss.size(), 6u);  // none is elementwise [N·C]
  EXPECT_TRUE(close_vec(none.loss, el, kRtol, kAtol));
  EXPECT_TRUE(close_vec(none.grad_dense, {-0.25, -0.75, 0, -1, 0, 0}, 0, 0));
  const double total = sum(el);
  EXPECT_TRUE(close_vec(run_rows(c, Reduction::Sum).loss, {total}, kRtol, kAtol));
  const RunResult mean = run_rows(c, Reduction::Mean);
  EXPECT_TRUE(close_vec(mean.loss, {total / 6}, kRtol, kAtol));
  EXPECT_TRUE(close_vec(mean.grad_dense, {-0.25 / 6, -0.75 / 6, 0, -1 / 6.0, 0, 0}, kRtol, 0));
  const RunResult bm = run_rows(c, Reduction::BatchMean, -2.0);
  EXPECT_TRUE(close_vec(bm.loss, {total / 2}, kRtol, kAtol));
  EXPECT_TRUE(close_vec(bm.grad_dense, {0.25, 0.75, 0, 1, 0, 0}, kRtol, 0));
  EXPECT_TRUE(close_vec(run_rows(c, Reduction::Default).loss, {total / 6}, kRtol, kAtol));  // default: mean

  // log_target: t = log p; ℓ = e^t (t − q), ∂ = −e^t.
  c.params.log_target = true;
  c.target = {std::log(0.25), std::log(0.75), std::log(0.125), 0, std::log(0.5), -3};
  Vec t(6), el2(6), g2(6);
  for (int i = 0; i < 6; ++i) {
    t[i] = static_cast<float>(c.target[i]);
    const double q = static_cast<float>(c.input[i]);
    el2[i] = std::exp(t[i]) * (t[i] - q);
    g2[i] = -std::exp(t[i]);
  }
  (void)q1;
  const RunResult lt = run_rows(c, Reduction::None);
  ASSERT_EQ(lt.status, Status::Success);
  EXPECT_TRUE(close_vec(lt.loss, el2, kRtol, kAtol));
  EXPECT_TRUE(close_vec(lt.grad_dense, g2, kRtol, 0));
  const RunResult lts = run_rows(c, Reduction::Sum);
  EXPECT_TRUE(close_vec(lts.loss, {sum(el2)}, kRtol, kAtol));
}

TEST(CpuHandValues, KlDivLogitsWithTemperature) {
  RowCase c;
  c.loss = Loss::KLDivLogits;
  c.N = 2;
  c.C = 2;
  const double l3 = static_cast<float>(std::log(3.0));
  c.input = {0, 0, 1, -1};     // student
  c.target = {l3, 0, 1, -1};   // teacher; row 1 equals the student → ℓ = 0, ∂ = 0
  const Vec p = softmax({l3, 0});  // ≈ {0.75, 0.25}
  const double row0 = p[0] * std::log(p[0] / 0.5) + p[1] * std::log(p[1] / 0.5);
  const RunResult none = run_rows(c, Reduction::None);
  ASSERT_EQ(none.status, Status::Success);
  ASSERT_EQ(none.loss.size(), 2u);  // none is per row
  EXPECT_TRUE(close_vec(none.loss, {row0, 0}, kRtol, kAtol));
  EXPECT_TRUE(close_vec(none.grad_dense, {0.5 - p[0], 0.5 - p[1], 0, 0}, kRtol, kAtol));
  const RunResult dflt = run_rows(c, Reduction::Default);  // batchmean: / N
  EXPECT_TRUE(close_vec(dflt.loss, {row0 / 2}, kRtol, kAtol));
  EXPECT_TRUE(close_vec(dflt.grad_dense, {(0.5 - p[0]) / 2, (0.5 - p[1]) / 2, 0, 0}, kRtol, kAtol));
  const RunResult mean = run_rows(c, Reduction::Mean);  // / (N·C)
  EXPECT_TRUE(close_vec(mean.loss, {row0 / 4}, kRtol, kAtol));

  // T = 2 with logits doubled: same distributions, ℓ = T²·KL, ∂ = T·(q − p).
  c.params.temperature = 2;
  c.input = {0, 0, 2, -2};
  c.target = {2 * l3, 0, 2, -2};
  const RunResult t2 = run_rows(c, Reduction::Sum, 0.5);
  ASSERT_EQ(t2.status, Status::Success);
  EXPECT_TRUE(close_vec(t2.loss, {4 * row0}, kRtol, kAtol));
  EXPECT_TRUE(close_vec(t2.grad_dense, {0.5 * 2 * (0.5 - p[0]), 0.5 * 2 * (0.5 - p[1]), 0, 0}, kRtol, kAtol));
}

}  // namespace
