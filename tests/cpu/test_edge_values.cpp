// Edge values on the CPU path, every dtype: −inf logits, logits ±1e4, NaN isolated to its row / element,
// all-ignored batches and zero mean divisors, N = 0, bad labels (int32 and int64), BCE probabilities outside
// [0, 1], zero-probability KL targets. Expected values: the contract (by hand) or the float64 oracle.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

#include "common/test_util.hpp"

namespace {

using namespace tu;
namespace fl = ::fusedloss;

const DType kDtypes[] = {DType::Float32, DType::Float16, DType::BFloat16};
std::string dtype_param_name(const ::testing::TestParamInfo<DType>& i) { return fl::dtype_name(i.param); }

/// The oracle-vs-CPU comparison of test_oracle_vs_cpu.cpp for one instance (see the tolerances there).
void expect_matches_oracle(const Instance& in, const RunResult& r, const oracle::Result& o) {
  EXPECT_TRUE(close_vec(r.loss, o.loss, 1e-6, 1e-12 * std::max(1.0, max_abs(o.loss)), "loss"));
  EXPECT_TRUE(within_ulps(r.grad_dense, o.grad, in.dtype, 1.0, 1e-12 * std::max(max_abs(o.grad), 1e-3)));
  if (in.rowwise() && in.fam.loss == Loss::CrossEntropy && !r.lse.empty()) {
    EXPECT_TRUE(close_vec(r.lse, o.lse, 1e-6, 1e-9, "lse"));
  }
}

/// An elementwise instance over the given values, reduction none (x and y rounded to the dtype).
Instance elementwise_instance(Loss l, DType d, const Vec& x, const Vec& y, double delta = 1.0) {
  Instance in;
  in.fam = {l, false};
  in.dtype = d;
  in.n = static_cast<std::int64_t>(x.size());
  in.x = round_to(d, x);
  in.y = round_to(d, y);
  in.e.loss = l;
  in.e.dtype = d;
  in.e.n = in.n;
  in.e.reduction = Reduction::None;
  in.e.params.delta = delta;
  in.materialise();
  return in;
}

// =========================================================================================================
// −inf logits
// =========================================================================================================

class CpuEdgeNegInf : public ::testing::TestWithParam<DType> {};

TEST_P(CpuEdgeNegInf, NonTargetLogitsGiveFiniteLossAndZeroGradient) {
  const DType d = GetParam();
  FL_SEEDED_RNG(rng);
  const std::int64_t N = 9, C = 11;
  struct Opt {
    const char* name;
    bool weights;
    double zl, cap;
    bool soft;
  };
  for (const Opt& opt : {Opt{"plain", false, 0, 0, false}, Opt{"class weights", true, 0, 0, false},
                         Opt{"z_loss", false, 0.01, 0, false}, Opt{"softcap", false, 0, 5, false},
                         Opt{"everything", true, 0.01, 5, false}, Opt{"soft targets", false, 0, 0, true},
                         Opt{"soft targets, weights, z_loss, softcap", true, 0.01, 5, true}}) {
    for (Reduction red : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
      SCOPED_TRACE(std::string(opt.name) + " " + red_name(red));
      Instance in = make_instance(rng, {Loss::CrossEntropy, opt.soft}, d, N, C, false, 0, red);
      if (opt.weights) {
        in.class_weight.resize(C);
        for (float& w : in.class_weight) w = static_cast<float>(rng.uniform(0.3, 2));
      }
      in.r.params.z_loss = opt.zl;
      in.r.params.softcap = opt.cap;
      in.r.grad_scale = 0.75;
      // Mask 4 non-target classes of every row (a soft target gets probability 0 there).
      for (std::int64_t n = 0; n < N; ++n) {
        int masked = 0;
        for (std::int64_t c = (n * 3) % C; masked < 4; c = (c + 1) % C) {
          if (!opt.soft && c == in.labels[n]) continue;
          in.x[n * C + c] = -kInf;
          if (opt.soft) in.y[n * C + c] = 0;
          ++masked;
        }
      }
      in.materialise();
      const RunResult r = in.run(true, true);
      ASSERT_EQ(r.status, Status::Success);
      for (double l : r.loss) EXPECT_TRUE(std::isfinite(l)) << "loss " << l;
      for (std::size_t i = 0; i < in.x.size(); ++i) {
        if (std::isinf(in.x[i])) {
          EXPECT_EQ(r.grad_dense[i], 0.0) << "gradient at a −inf logit, element " << i;
        } else {
          EXPECT_TRUE(std::isfinite(r.grad_dense[i])) << "element " << i;
        }
      }
      expect_matches_oracle(in, r, oracle_for(in));
    }
  }
}

TEST_P(CpuEdgeNegInf, OnlyTheTargetFiniteGivesZeroLoss) {
  const DType d = GetParam();
  const Buffer z = Buffer::from(d, {-kInf, -kInf, 3.0, -kInf, 0.5, -kInf, -kInf, -kInf});
  const Buffer y = Buffer::labels(DType::Int64, {2, 1});  // row 1: the target is −inf → +inf loss
  fl::RowwiseProblem p;
  p.dtype = d;
  p.rows = 2;
  p.classes = 4;
  p.input = z.data();
  p.labels = y.data();
  p.reduction = Reduction::None;
  const RunResult r = run(p, true, true);
  ASSERT_EQ(r.status, Status::Success);
  EXPECT_EQ(r.loss[0], 0.0);
  EXPECT_TRUE(close_vec(r.grad_dense, {0, 0, 0, 0, 1, -1, 0, 0}, 0, 0));  // row 1: p = onehot(0), label 1
  EXPECT_EQ(r.loss[1], kInf) << "a −inf target logit has infinite loss";
  EXPECT_TRUE(close_vec(r.lse, {3.0, 0.5}, 0, 0, "lse"));
}

TEST_P(CpuEdgeNegInf, MaskedZeroWeightClassesWithLabelSmoothing) {
  // A padded vocabulary: the padding classes have logit −inf AND class weight 0. With label smoothing the
  // smoothing sum Σ_c w_c·(−logp_c) has terms 0·inf; the contract gives them weight 0, i.e. a finite loss.
  const DType d = GetParam();
  FL_SEEDED_RNG(rng);
  const std::int64_t N = 6, C = 10;
  Instance in = make_instance(rng, {Loss::CrossEntropy, false}, d, N, C, false, 0, Reduction::Sum);
  in.class_weight.assign(C, 1.0f);
  for (std::int64_t c = 7; c < C; ++c) in.class_weight[c] = 0.0f;
  for (std::int64_t n = 0; n < N; ++n) {
    in.labels[n] = rng.integer(0, 6);
    for (std::int64_t c = 7; c < C; ++c) in.x[n * C + c] = -kInf;
  }
  in.r.params.label_smoothing = 0.1;
  in.materialise();
  const RunResult r = in.run(true, true);
  ASSERT_EQ(r.status, Status::Success);
  EXPECT_TRUE(std::isfinite(r.loss[0])) << "loss " << r.loss[0];
  expect_matches_oracle(in, r, oracle_for(in));
}

TEST_P(CpuEdgeNegInf, KlDivLogitsMaskedClasses) {
  const DType d = GetParam();
  FL_SEEDED_RNG(rng);
  const std::int64_t N = 5, C = 12;
  for (bool teacher_only : {false, true}) {
    SCOPED_TRACE(teacher_only ? "teacher −inf only" : "student and teacher −inf");
    Instance in = make_instance(rng, {Loss::KLDivLogits, false}, d, N, C, true, 0, Reduction::BatchMean);
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t c = n; c < C; c += 4) {
        in.y[n * C + c] = -kInf;
        if (!teacher_only) in.x[n * C + c] = -kInf;
      }
    in.materialise();
    const RunResult r = in.run();
    ASSERT_EQ(r.status, Status::Success);
    EXPECT_TRUE(std::isfinite(r.loss[0]));
    for (std::size_t i = 0; i < in.x.size(); ++i) {
      EXPECT_TRUE(std::isfinite(r.grad_dense[i]));
      if (std::isinf(in.x[i])) {
        EXPECT_EQ(r.grad_dense[i], 0.0) << i;
      }
    }
    expect_matches_oracle(in, r, oracle_for(in));
  }
}

TEST_P(CpuEdgeNegInf, KlDivZeroProbabilityTargets) {
  // p = 0 (or log_target t = −inf) contributes exactly 0 with gradient 0, even where q = −inf.
  const DType d = GetParam();
  for (bool log_target : {false, true}) {
    SCOPED_TRACE(log_target ? "log_target" : "probability target");
    const double zero = log_target ? -kInf : 0.0;
    const double half = log_target ? std::log(0.5) : 0.5;
    const Buffer q = Buffer::from(d, {std::log(0.5), std::log(0.5), -kInf, -2.0});
    const Buffer t = Buffer::from(d, {half, half, zero, zero});
    fl::RowwiseProblem p;
    p.loss = Loss::KLDiv;
    p.dtype = d;
    p.rows = 1;
    p.classes = 4;
    p.input = q.data();
    p.target = t.data();
    p.params.log_target = log_target;
    p.reduction = Reduction::None;
    const RunResult r = run(p);
    ASSERT_EQ(r.status, Status::Success);
    const double ql = q.get(0), tl = t.get(0), pl = log_target ? std::exp(tl) : tl;
    const double el = pl * ((log_target ? tl : std::log(tl)) - ql);
    EXPECT_TRUE(close_vec(r.loss, {el, el, 0, 0}, 1e-6, 1e-7, "loss"));
    EXPECT_TRUE(within_ulps(r.grad_dense, {-pl, -pl, 0, 0}, d, 1.0, 0));
  }
}

INSTANTIATE_TEST_SUITE_P(All, CpuEdgeNegInf, ::testing::ValuesIn(kDtypes), dtype_param_name);

// =========================================================================================================
// Huge finite logits
// =========================================================================================================

class CpuEdgeHugeLogits : public ::testing::TestWithParam<DType> {};

TEST_P(CpuEdgeHugeLogits, PlusMinusTenThousandStayFiniteAndMatchTheOracle) {
  const DType d = GetParam();
  FL_SEEDED_RNG(rng);
  const std::int64_t N = 16, C = 9;
  for (const Family& f : {Family{Loss::CrossEntropy, false}, Family{Loss::CrossEntropy, true},
                          Family{Loss::KLDivLogits, false}}) {
    for (bool options : {false, true}) {
      for (Reduction red : {Reduction::None, Reduction::Sum, Reduction::Mean}) {
        SCOPED_TRACE(family_name(f) + (options ? " with options" : "") + " " + red_name(red));
        Instance in = make_instance(rng, f, d, N, C, options, 0, red);
        for (double& v : in.x) v = round_to(d, rng.bernoulli(0.5) ? (rng.bernoulli(0.5) ? 1e4 : -1e4) : v);
        if (f.loss == Loss::KLDivLogits)
          for (double& v : in.y) v = round_to(d, rng.bernoulli(0.5) ? (rng.bernoulli(0.5) ? 1e4 : -1e4) : v);
        in.materialise();
        const RunResult r = in.run(true, true);
        ASSERT_EQ(r.status, Status::Success);
        const oracle::Result o = oracle_for(in);
        for (double l : r.loss) EXPECT_FALSE(std::isnan(l));
        for (double g : r.grad_dense) ASSERT_TRUE(std::isfinite(g));
        expect_matches_oracle(in, r, o);
      }
    }
  }
}

TEST_P(CpuEdgeHugeLogits, ElementwiseLargeMagnitudes) {
  const DType d = GetParam();
  // bce_with_logits, log_cosh, pseudo_huber, smooth_l1, huber at |x| = 1e4: finite (no exp overflow).
  const Vec x = round_to(d, {1e4, -1e4, 1e4, -1e4, 3e4, -3e4});
  const Vec y = {0, 1, 1, 0, 0.5, 0.5};
  for (Loss l : {Loss::BCEWithLogits, Loss::LogCosh, Loss::PseudoHuber, Loss::Huber, Loss::SmoothL1, Loss::MAE}) {
    SCOPED_TRACE(fl::loss_name(l));
    Instance in = elementwise_instance(l, d, x, y);
    const RunResult r = in.run();
    ASSERT_EQ(r.status, Status::Success);
    for (double v : r.loss) EXPECT_TRUE(std::isfinite(v)) << v;
    for (double g : r.grad_dense) EXPECT_TRUE(std::isfinite(g)) << g;
    expect_matches_oracle(in, r, oracle_for(in));
  }
}

INSTANTIATE_TEST_SUITE_P(All, CpuEdgeHugeLogits, ::testing::ValuesIn(kDtypes), dtype_param_name);

// =========================================================================================================
// Infinite inputs (fp16 overflow makes them ordinary): the limit where the math has one
// =========================================================================================================

class CpuEdgeInf : public ::testing::TestWithParam<DType> {};

TEST_P(CpuEdgeInf, ElementwiseInfiniteInputsMatchTheOracle) {
  // hinge / squared_hinge on the right side of the margin at |x| = inf give 0 (max(0, −inf)), not
  // −inf·0 = NaN; pseudo_huber at |r| = inf gives loss inf and gradient δ·sign(r).
  const DType d = GetParam();
  const Vec x = {kInf, -kInf, kInf, -kInf, 0.5, 2.0};
  const Vec y = {1, 0, 0, 1, kInf, -kInf};
  for (Loss l : {Loss::Hinge, Loss::SquaredHinge, Loss::PseudoHuber, Loss::Huber, Loss::SmoothL1, Loss::MAE,
                 Loss::LogCosh}) {
    SCOPED_TRACE(fl::loss_name(l));
    Instance in = elementwise_instance(l, d, x, y, 1.5);
    const RunResult r = in.run();
    ASSERT_EQ(r.status, Status::Success);
    for (double v : r.loss) EXPECT_FALSE(std::isnan(v)) << "loss " << v;
    for (double g : r.grad_dense) EXPECT_FALSE(std::isnan(g)) << "gradient " << g;
    expect_matches_oracle(in, r, oracle_for(in));
  }
}

TEST_P(CpuEdgeInf, PlusInfLogitMakesItsRowNaNAndLeavesTheOthers) {
  // A +inf logit: lse = +inf, the loss +inf (NaN when the target is the +inf class), and the
  // softmax inf/inf undefined, so the row's gradient is NaN throughout (as PyTorch's). Other rows
  // are untouched; a row whose target has class weight 0 contributes exactly 0, +inf or not.
  const DType d = GetParam();
  FL_SEEDED_RNG(rng);
  const std::int64_t N = 6, C = 7;
  for (bool soft : {false, true}) {
    for (bool smoothing : {false, true}) {
      SCOPED_TRACE(std::string(soft ? "soft" : "sparse") + (smoothing ? " with label smoothing" : ""));
      Instance in = make_instance(rng, {Loss::CrossEntropy, soft}, d, N, C, false, 0, Reduction::None);
      in.r.params.label_smoothing = smoothing ? 0.1 : 0.0;
      in.x[1 * C + 3] = kInf;  // row 1: a +inf non-target (sparse) logit
      in.x[4 * C + 0] = kInf;  // row 4: two +inf logits
      in.x[4 * C + 5] = kInf;
      if (!soft) {
        in.labels[1] = 2;
        in.labels[4] = 0;  // the target is +inf itself: inf − inf
      }
      in.materialise();
      const RunResult r = in.run(true, true);
      ASSERT_EQ(r.status, Status::Success);
      EXPECT_EQ(r.lse[1], kInf);
      EXPECT_EQ(r.lse[4], kInf);
      if (!soft) {
        // With smoothing the Σ_c w_c·(lse − z_c) term meets inf − inf at the +inf class: NaN.
        if (!smoothing) {
          EXPECT_EQ(r.loss[1], kInf);
        }
        EXPECT_TRUE(std::isnan(r.loss[4]));
      }
      for (std::int64_t n = 0; n < N; ++n)
        for (std::int64_t c = 0; c < C; ++c) {
          const double g = r.grad_dense[static_cast<std::size_t>(n * C + c)];
          if (n == 1 || n == 4)
            EXPECT_TRUE(std::isnan(g)) << "row " << n << " column " << c << ": " << g;
          else
            EXPECT_TRUE(std::isfinite(g)) << "row " << n << " column " << c << ": " << g;
        }
      expect_matches_oracle(in, r, oracle_for(in));
    }
  }
}

TEST_P(CpuEdgeInf, ZeroWeightTargetRowStaysZeroEvenWhenNaNOrInf) {
  const DType d = GetParam();
  FL_SEEDED_RNG(rng);
  const std::int64_t N = 4, C = 5;
  Instance in = make_instance(rng, {Loss::CrossEntropy, false}, d, N, C, false, 0, Reduction::Sum);
  in.class_weight.assign(C, 1.0f);
  in.class_weight[2] = 0.0f;
  in.labels = {2, 2, 1, 2};
  in.x[0 * C + 4] = kNaN;
  in.x[1 * C + 0] = kInf;
  in.materialise();
  const RunResult r = in.run(true, true);
  ASSERT_EQ(r.status, Status::Success);
  for (std::int64_t n : {0, 1, 3})
    for (std::int64_t c = 0; c < C; ++c)
      EXPECT_EQ(r.grad_dense[static_cast<std::size_t>(n * C + c)], 0.0) << "row " << n << " column " << c;
  EXPECT_TRUE(std::isfinite(r.loss[0])) << "the weight-0 rows add exactly 0: " << r.loss[0];
  expect_matches_oracle(in, r, oracle_for(in));
}

INSTANTIATE_TEST_SUITE_P(All, CpuEdgeInf, ::testing::ValuesIn(kDtypes), dtype_param_name);

// =========================================================================================================
// NaN isolation
// =========================================================================================================

struct NaNCase {
  Family fam;
  DType dtype;
  friend void PrintTo(const NaNCase& c, std::ostream* os) { *os << family_name(c.fam) << " " << fl::dtype_name(c.dtype); }
};
/// The families (those `applies` accepts) × dtypes a NaN test runs for.
template <class Pred>
std::vector<NaNCase> nan_cases(Pred applies) {
  std::vector<NaNCase> v;
  for (const Family& f : all_families())
    if (f.loss != Loss::RMSE && applies(f))  // rmse is a single scalar: nothing to isolate
      for (DType d : kDtypes) v.push_back({f, d});
  return v;
}
std::vector<NaNCase> nan_cases() {
  return nan_cases([](const Family&) { return true; });
}
std::string nan_case_name(const ::testing::TestParamInfo<NaNCase>& i) {
  return family_name(i.param.fam) + "_" + fl::dtype_name(i.param.dtype);
}

class CpuEdgeNaN : public ::testing::TestWithParam<NaNCase> {};

TEST_P(CpuEdgeNaN, NaNInputIsIsolatedWithReductionNone) {
  const NaNCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  const bool rows = family_rowwise(c.fam);
  Instance in = rows ? make_instance(rng, c.fam, c.dtype, 7, 13, true, 0, Reduction::None)
                     : make_instance(rng, c.fam, c.dtype, 41, 0, true, 0, Reduction::None);
  if (family_has_labels(c.fam)) in.labels[3] = 4;  // the NaN row is not ignored
  in.materialise();
  const RunResult clean = in.run(true, true);
  ASSERT_EQ(clean.status, Status::Success);

  // Row 3 (row-wise; for nll at its label, the only entry it reads) or element 17.
  const std::size_t bad = rows ? static_cast<std::size_t>(3 * in.C + 4) : 17;
  in.x[bad] = kNaN;
  in.materialise();
  const RunResult r = in.run(true, true);
  const bool bce = c.fam.loss == Loss::BCE;
  EXPECT_EQ(r.status, bce ? Status::InvalidValue : Status::Success) << "NaN logits are not invalid *labels*";
  EXPECT_EQ(r.error_count, bce ? 1 : 0);

  // Which loss outputs and gradient entries may change: the NaN row / element only.
  auto loss_affected = [&](std::size_t i) {
    if (!rows) return i == bad;
    if (c.fam.loss == Loss::KLDiv) return i == bad;  // none is elementwise [N·C]
    return i == 3;
  };
  auto grad_affected = [&](std::size_t i) { return rows ? (i / in.C == 3) : i == bad; };
  for (std::size_t i = 0; i < r.loss.size(); ++i) {
    if (loss_affected(i)) {
      EXPECT_TRUE(std::isnan(r.loss[i])) << "the NaN row/element must have a NaN loss, got " << r.loss[i];
    } else {
      ASSERT_TRUE(same_value(r.loss[i], clean.loss[i])) << "loss " << i << " changed";
    }
  }
  for (std::size_t i = 0; i < r.grad_dense.size(); ++i)
    if (!grad_affected(i)) {
      ASSERT_TRUE(same_value(r.grad_dense[i], clean.grad_dense[i])) << "gradient " << i << " changed";
    }
  if (bce) {
    EXPECT_EQ(r.grad_dense[bad], 0.0) << "an invalid probability has gradient 0";
  }
  if (c.fam.loss == Loss::CrossEntropy) {
    for (std::int64_t n = 0; n < in.N; ++n) {
      if (n == 3) {
        EXPECT_TRUE(std::isnan(r.lse[n])) << "the NaN row's lse";
      } else {
        EXPECT_EQ(r.lse[n], clean.lse[n]);
      }
    }
  }
}

// Dense-target row losses only (soft cross_entropy, kl_div_logits).
class CpuEdgeNaNTarget : public ::testing::TestWithParam<NaNCase> {};

TEST_P(CpuEdgeNaNTarget, NaNTargetRowIsIsolated) {
  const NaNCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  Instance in = make_instance(rng, c.fam, c.dtype, 7, 13, true, 0, Reduction::None);
  const RunResult clean = in.run(true, true);
  in.y[2 * 13 + 5] = kNaN;
  in.materialise();
  const RunResult r = in.run(true, true);
  ASSERT_EQ(r.status, Status::Success);
  EXPECT_TRUE(std::isnan(r.loss[2]));
  for (std::int64_t n = 0; n < 7; ++n) {
    if (n == 2) continue;
    EXPECT_TRUE(same_value(r.loss[n], clean.loss[n])) << "row " << n;
    for (std::int64_t col = 0; col < 13; ++col)
      ASSERT_TRUE(same_value(r.grad_dense[n * 13 + col], clean.grad_dense[n * 13 + col])) << "row " << n;
  }
}

INSTANTIATE_TEST_SUITE_P(All, CpuEdgeNaN, ::testing::ValuesIn(nan_cases()), nan_case_name);
INSTANTIATE_TEST_SUITE_P(All, CpuEdgeNaNTarget, ::testing::ValuesIn(nan_cases([](const Family& f) {
                           return f.loss == Loss::KLDivLogits || f.soft;
                         })),
                         nan_case_name);

// =========================================================================================================
// All rows ignored, zero mean divisor
// =========================================================================================================

struct LabelCase {
  Loss loss;
  DType dtype;
  DType label_dtype;
  friend void PrintTo(const LabelCase& c, std::ostream* os) {
    *os << fl::loss_name(c.loss) << " " << fl::dtype_name(c.dtype) << " labels " << fl::dtype_name(c.label_dtype);
  }
};
std::vector<LabelCase> label_cases() {
  std::vector<LabelCase> v;
  for (Loss l : {Loss::CrossEntropy, Loss::NLL})
    for (DType d : kDtypes)
      for (DType ld : {DType::Int32, DType::Int64}) v.push_back({l, d, ld});
  return v;
}
std::string label_case_name(const ::testing::TestParamInfo<LabelCase>& i) {
  return std::string(fl::loss_name(i.param.loss)) + "_" + fl::dtype_name(i.param.dtype) + "_" +
         fl::dtype_name(i.param.label_dtype);
}

class CpuEdgeLabels : public ::testing::TestWithParam<LabelCase> {};

TEST_P(CpuEdgeLabels, AllRowsIgnored) {
  const LabelCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  const std::int64_t N = 6, C = 8;
  for (bool weights : {false, true}) {
    for (std::int64_t ignore : {std::int64_t(-100), std::int64_t(3)}) {
      Instance in = make_instance(rng, {c.loss, false}, c.dtype, N, C, false, 0, Reduction::Mean);
      in.label_dtype = c.label_dtype;
      in.r.params.ignore_index = ignore;
      in.r.params.label_smoothing = c.loss == Loss::CrossEntropy ? 0.1 : 0.0;
      if (weights) {
        in.class_weight.resize(C);
        for (float& w : in.class_weight) w = static_cast<float>(rng.uniform(0.5, 2));
      }
      for (auto& y : in.labels) y = ignore;
      in.materialise();
      SCOPED_TRACE(std::string(weights ? "weighted " : "") + "ignore_index " + std::to_string(ignore));

      const RunResult mean = in.run(true, true);
      ASSERT_EQ(mean.status, Status::Success);
      EXPECT_EQ(mean.error_count, 0);
      EXPECT_TRUE(std::isnan(mean.loss[0])) << "mean over no rows is NaN, got " << mean.loss[0];
      for (double g : mean.grad_dense) ASSERT_EQ(g, 0.0);
      if (c.loss == Loss::CrossEntropy) {
        for (double l : mean.lse) EXPECT_TRUE(std::isfinite(l)) << "lse is reported for ignored rows";
      }

      in.r.reduction = Reduction::Sum;
      const RunResult sum_r = in.run();
      ASSERT_EQ(sum_r.status, Status::Success);
      EXPECT_EQ(sum_r.loss[0], 0.0);
      for (double g : sum_r.grad_dense) ASSERT_EQ(g, 0.0);

      in.r.reduction = Reduction::None;
      const RunResult none = in.run();
      ASSERT_EQ(none.status, Status::Success);
      for (double l : none.loss) EXPECT_EQ(l, 0.0);
      for (double g : none.grad_dense) ASSERT_EQ(g, 0.0);
    }
  }
}

TEST_P(CpuEdgeLabels, ZeroWeightDivisorGivesNaNMeanAndZeroGradient) {
  const LabelCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  const std::int64_t N = 5, C = 4;
  Instance in = make_instance(rng, {c.loss, false}, c.dtype, N, C, false, 0, Reduction::Mean);
  in.label_dtype = c.label_dtype;
  in.class_weight = {0.0f, 0.0f, 2.0f, 1.0f};
  for (auto& y : in.labels) y = rng.integer(0, 1);  // only zero-weight classes
  in.labels[2] = -100;
  in.materialise();
  const RunResult r = in.run();
  ASSERT_EQ(r.status, Status::Success);
  EXPECT_TRUE(std::isnan(r.loss[0]));
  for (double g : r.grad_dense) ASSERT_EQ(g, 0.0);
  const oracle::Result o = oracle_for(in);
  EXPECT_TRUE(std::isnan(o.loss[0]));  // the oracle agrees
}

TEST_P(CpuEdgeLabels, BadLabelsAreCountedAndIsolated) {
  const LabelCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  const std::int64_t N = 10, C = 7;
  const bool i64 = c.label_dtype == DType::Int64;
  for (bool options : {false, true}) {
    for (Reduction red : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
      SCOPED_TRACE(std::string(red_name(red)) + (options ? " with options" : ""));
      Instance in = make_instance(rng, {c.loss, false}, c.dtype, N, C, options, 0, red);
      in.label_dtype = c.label_dtype;
      for (auto& y : in.labels) y = rng.integer(0, C - 1);
      in.labels[1] = C;                                                       // one past the end
      in.labels[4] = -1;                                                      // negative, not ignore_index
      in.labels[6] = i64 ? (std::int64_t(1) << 40) : std::numeric_limits<std::int32_t>::min();
      in.labels[8] = in.r.params.ignore_index;                                // ignored: not an error
      in.materialise();
      const RunResult r = in.run(true, true);
      EXPECT_EQ(r.status, Status::InvalidValue);
      EXPECT_EQ(r.error_count, 3);
      const oracle::Result o = oracle_for(in);
      ASSERT_EQ(o.bad, 3);
      expect_matches_oracle(in, r, o);
      for (std::int64_t n : {1, 4, 6}) {
        for (std::int64_t col = 0; col < C; ++col) ASSERT_EQ(r.grad_dense[n * C + col], 0.0) << "bad row " << n;
        if (red == Reduction::None) {
          EXPECT_TRUE(std::isnan(r.loss[n])) << "bad row " << n;
        }
      }
      if (red != Reduction::None) {
        EXPECT_TRUE(std::isnan(r.loss[0])) << "a reduction over a NaN row is NaN";
      }
    }
  }
  // Without an error_count pointer the status still says InvalidValue.
  Instance in = make_instance(rng, {c.loss, false}, c.dtype, N, C, false, 0, Reduction::Sum);
  in.label_dtype = c.label_dtype;
  in.labels[0] = C + 5;
  in.materialise();
  float loss = 0;
  fl::LossOutputs o;
  o.loss = &loss;
  EXPECT_EQ(fl::compute(in.r, o), Status::InvalidValue);
}

INSTANTIATE_TEST_SUITE_P(All, CpuEdgeLabels, ::testing::ValuesIn(label_cases()), label_case_name);

// =========================================================================================================
// N = 0
// =========================================================================================================

struct EmptyCase {
  Family fam;
  DType dtype;
  friend void PrintTo(const EmptyCase& c, std::ostream* os) { *os << family_name(c.fam) << " " << fl::dtype_name(c.dtype); }
};
std::vector<EmptyCase> empty_cases() {
  std::vector<EmptyCase> v;
  for (const Family& f : all_families())
    for (DType d : kDtypes) v.push_back({f, d});
  return v;
}

class CpuEdgeEmpty : public ::testing::TestWithParam<EmptyCase> {};

TEST_P(CpuEdgeEmpty, SumIsZeroMeanIsNaNNoneWritesNothing) {
  const EmptyCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  const bool rows = family_rowwise(c.fam);
  std::vector<Reduction> reds = {Reduction::None, Reduction::Sum, Reduction::Mean, Reduction::Default};
  if (c.fam.loss == Loss::RMSE) reds = {Reduction::Mean, Reduction::Default};
  if (c.fam.loss == Loss::KLDiv || c.fam.loss == Loss::KLDivLogits) reds.push_back(Reduction::BatchMean);
  for (bool null_pointers : {false, true}) {
    for (Reduction red : reds) {
      SCOPED_TRACE(std::string(red_name(red)) + (null_pointers ? " null data pointers" : ""));
      Instance in = rows ? make_instance(rng, c.fam, c.dtype, 0, 5, true, 0, red)
                         : make_instance(rng, c.fam, c.dtype, 0, 0, true, 0, red);
      in.set_reduction(red);
      if (null_pointers) {
        in.e.input = in.e.target = in.e.weight = nullptr;
        in.r.input = in.r.target = in.r.labels = nullptr;
        if (in.rowwise() && c.fam.soft) in.r.target = in.by.data();  // soft CE is told apart by its target
      }
      std::vector<float> loss = poisoned_floats(4);
      std::vector<float> lse = poisoned_floats(4);
      Buffer grad(c.dtype, 4);
      grad.poison();
      std::int64_t errors = poison_i64();
      fl::LossOutputs o;
      o.loss = loss.data();
      o.grad = grad.data();
      o.lse = c.fam.loss == Loss::CrossEntropy ? lse.data() : nullptr;
      o.error_count = &errors;
      const Status s = in.rowwise() ? fl::compute(in.r, o) : fl::compute(in.e, o);
      ASSERT_EQ(s, Status::Success) << fl::status_string(s);
      EXPECT_EQ(errors, 0);
      EXPECT_TRUE(grad.all_poison()) << "N = 0 wrote a gradient";
      EXPECT_TRUE(all_poison(lse)) << "N = 0 wrote an lse";
      EXPECT_TRUE(is_poison(loss[1]) && is_poison(loss[2])) << "wrote past the single reduced value";
      if (red == Reduction::None) {
        EXPECT_TRUE(is_poison(loss[0])) << "none with N = 0 writes nothing";
        // ... and then the loss pointer itself may be null.
        o.loss = nullptr;
        EXPECT_EQ(in.rowwise() ? fl::compute(in.r, o) : fl::compute(in.e, o), Status::Success);
      } else if (red == Reduction::Sum) {
        EXPECT_EQ(loss[0], 0.0f);
      } else {
        EXPECT_TRUE(std::isnan(loss[0])) << "mean / batchmean over nothing is NaN, got " << loss[0];
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, CpuEdgeEmpty, ::testing::ValuesIn(empty_cases()),
                         [](const ::testing::TestParamInfo<EmptyCase>& i) {
                           return family_name(i.param.fam) + "_" + fl::dtype_name(i.param.dtype);
                         });

// =========================================================================================================
// BCE probabilities outside [0, 1]
// =========================================================================================================

class CpuEdgeBce : public ::testing::TestWithParam<DType> {};

TEST_P(CpuEdgeBce, ProbabilitiesOutsideTheUnitIntervalAreInvalidValues) {
  const DType d = GetParam();
  const Vec p = round_to(d, {-0.25, 1.5, kNaN, kInf, -kInf, 0.3, 0.0, 1.0, -0.0, 0.75});
  const Vec y = round_to(d, {1, 0, 1, 0, 1, 1, 0, 1, 1, 0.5});
  const Vec w = round_to(d, {1, 0, 2, 1, 1, 0.5, 1, 1, 1, 3});  // a zero weight does not hide a bad value
  const std::size_t bad[] = {0, 1, 2, 3, 4};
  for (bool weighted : {false, true}) {
    for (Reduction red : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
      SCOPED_TRACE(std::string(red_name(red)) + (weighted ? " weighted" : ""));
      Instance in;
      in.fam = {Loss::BCE, false};
      in.dtype = d;
      in.n = static_cast<std::int64_t>(p.size());
      in.x = p;
      in.y = y;
      if (weighted) in.w = w;
      in.e.loss = Loss::BCE;
      in.e.dtype = d;
      in.e.n = in.n;
      in.e.reduction = red;
      in.e.grad_scale = 2;
      in.materialise();
      const RunResult r = in.run();
      EXPECT_EQ(r.status, Status::InvalidValue);
      EXPECT_EQ(r.error_count, 5);
      for (std::size_t i : bad) {
        EXPECT_EQ(r.grad_dense[i], 0.0) << "element " << i;
        if (red == Reduction::None) {
          EXPECT_TRUE(std::isnan(r.loss[i])) << "element " << i;
        }
      }
      if (red != Reduction::None) {
        EXPECT_TRUE(std::isnan(r.loss[0]));
      }
      const oracle::Result o = oracle_for(in);
      ASSERT_EQ(o.bad, 5);
      expect_matches_oracle(in, r, o);  // the valid elements (p = 0, 1, −0 included) are computed normally
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, CpuEdgeBce, ::testing::ValuesIn(kDtypes), dtype_param_name);

}  // namespace
