// The independent float64 oracle (tests/oracle/oracle.hpp) against the library's CPU path, on random data:
// every loss × reduction × option set × size × dtype. Sizes are not multiples of anything (1, 7, 1000, 100003
// elements; C ∈ {1, 2, 33, 1000, 50257}).
//
// Tolerances. The oracle gets exactly the values the library reads (inputs rounded to the dtype first).
//  * loss (float32 output of a double computation): rtol 1e-6 (≈ 17 float ulps) plus an absolute floor of
//    1e-12 × Σ|terms| for cancellation inside a reduction;
//  * gradient (one rounding of a double into the dtype): 1 ulp of the dtype, plus 1e-12 × max|gradient| for
//    double-precision cancellation (e.g. σ(x) − 1 at large x);
//  * lse (float32): rtol 1e-6 plus 1e-12 × max(1, max|z|).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "common/test_util.hpp"

namespace {

using namespace tu;
namespace fl = ::fusedloss;

constexpr double kLossRtol = 1e-6;
constexpr double kCancel = 1e-12;

fl::ExecutionConfig cpu() {
  fl::ExecutionConfig c;
  c.backend = fl::Backend::CPU;
  return c;
}

/// Absolute tolerance for a reduced loss: the oracle's per-item values give Σ|terms|, scaled like the result.
double loss_floor(const oracle::Result& none, const oracle::Result& reduced) {
  double s = 0, a = 0;
  for (double v : none.loss) {
    if (!std::isfinite(v)) continue;
    s += v;
    a += std::fabs(v);
  }
  double scale = 1;
  if (!reduced.loss.empty() && std::isfinite(reduced.loss[0]) && s != 0) scale = std::fabs(reduced.loss[0] / s);
  return kCancel * a * scale + 1e-300;
}

// =========================================================================================================
// Elementwise
// =========================================================================================================

struct ElemCase {
  Loss loss;
  Reduction red;
  std::int64_t n;
  DType dtype;
  int variant;  // 0: defaults; 1: weights + non-default option + grad_scale; 2: a second option set
};

void PrintTo(const ElemCase& c, std::ostream* os) {
  *os << fl::loss_name(c.loss) << " v" << c.variant << " " << red_name(c.red) << " n=" << c.n << " "
      << fl::dtype_name(c.dtype);
}

std::string elem_case_name(const ::testing::TestParamInfo<ElemCase>& info) {
  const ElemCase& c = info.param;
  return std::string(fl::loss_name(c.loss)) + "_v" + std::to_string(c.variant) + "_" + red_name(c.red) + "_n" +
         std::to_string(c.n) + "_" + fl::dtype_name(c.dtype);
}

bool has_variant2(Loss l) { return l == Loss::SmoothL1 || l == Loss::BCEWithLogits || l == Loss::Huber; }

std::vector<ElemCase> elem_cases() {
  std::vector<ElemCase> v;
  for (Loss loss : elementwise_losses()) {
    for (Reduction red : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
      if (loss == Loss::RMSE && red != Reduction::Mean) continue;
      for (int variant = 0; variant < 3; ++variant) {
        if (variant == 2 && !has_variant2(loss)) continue;
        for (std::int64_t n : {1, 7, 1000, 100003})
          for (DType d : {DType::Float32, DType::Float16, DType::BFloat16}) v.push_back({loss, red, n, d, variant});
      }
    }
  }
  return v;
}

class OracleVsCpuElementwise : public ::testing::TestWithParam<ElemCase> {};

TEST_P(OracleVsCpuElementwise, LossAndGradientMatch) {
  const ElemCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  const std::size_t n = static_cast<std::size_t>(c.n);
  Vec x, y, w;
  elementwise_data(rng, c.loss, n, x, y);
  x = round_to(c.dtype, x);
  y = round_to(c.dtype, y);

  fl::ElementwiseProblem p;
  p.loss = c.loss;
  p.dtype = c.dtype;
  p.n = c.n;
  p.reduction = c.red;
  oracle::ElemParams op;
  std::vector<float> pw_col;
  if (c.variant >= 1) {
    w = round_to(c.dtype, rng.uniform_vec(n, 0, 2));
    p.grad_scale = op.grad_scale = c.variant == 1 ? -0.375 : 96.0;
  }
  if (c.variant == 1) {
    p.params.delta = op.delta = 0.35;
    p.params.beta = op.beta = 0.3;
    p.params.pos_weight = op.pos_weight = 2.75;
    if (c.loss == Loss::PseudoHuber) p.params.delta = op.delta = 2.5;
  } else if (c.variant == 2) {
    p.params.delta = op.delta = 3.0;
    p.params.beta = op.beta = 0.0;
    // bce_with_logits as an [n / columns, columns] multi-label matrix with one pos_weight per column.
    const std::int64_t columns = c.n == 1000 ? 40 : c.n;
    pw_col.resize(static_cast<std::size_t>(columns));
    for (float& v : pw_col) v = static_cast<float>(rng.uniform(0.25, 4));
    if (c.loss == Loss::BCEWithLogits) {
      p.params.pos_weight = 1e30;  // must be ignored when the vector is given
      p.params.pos_weight_per_column = pw_col.data();
      p.params.columns = columns;
      op.pos_weight_col.assign(pw_col.begin(), pw_col.end());
    }
  }

  const Buffer bx = Buffer::from(c.dtype, x), by = Buffer::from(c.dtype, y), bw = Buffer::from(c.dtype, w);
  p.input = bx.data();
  p.target = by.data();
  p.weight = w.empty() ? nullptr : bw.data();

  const std::string name = fl::loss_name(c.loss);
  const oracle::Result o = oracle::elementwise(name, x, y, w, to_red(c.red), op);
  const RunResult r = run(p, true, cpu());

  ASSERT_EQ(r.status, Status::Success) << fl::status_string(r.status);
  EXPECT_EQ(r.error_count, 0);
  ASSERT_EQ(o.bad, 0);
  // Every w_i·ℓ_i is >= 0, so a reduction has no cancellation: rtol bounds it.
  const double floor = kCancel * max_abs(o.loss);
  EXPECT_TRUE(close_vec(r.loss, o.loss, kLossRtol, floor, "loss"));
  EXPECT_TRUE(within_ulps(r.grad_dense, o.grad, c.dtype, 1.0, kCancel * max_abs(o.grad)));
}

INSTANTIATE_TEST_SUITE_P(All, OracleVsCpuElementwise, ::testing::ValuesIn(elem_cases()), elem_case_name);

// =========================================================================================================
// Row-wise
// =========================================================================================================

enum class RowKind { SparseCE, SoftCE, NLL, KLDiv, KLDivLogits };

const char* kind_name(RowKind k) {
  switch (k) {
    case RowKind::SparseCE: return "ce";
    case RowKind::SoftCE: return "soft_ce";
    case RowKind::NLL: return "nll";
    case RowKind::KLDiv: return "kl_div";
    case RowKind::KLDivLogits: return "kl_div_logits";
  }
  return "?";
}

struct RowCase {
  RowKind kind;
  Reduction red;
  std::int64_t N, C;
  DType dtype;
  int variant;
};

void PrintTo(const RowCase& c, std::ostream* os) {
  *os << kind_name(c.kind) << " v" << c.variant << " " << red_name(c.red) << " N=" << c.N << " C=" << c.C << " "
      << fl::dtype_name(c.dtype);
}

std::string row_case_name(const ::testing::TestParamInfo<RowCase>& info) {
  const RowCase& c = info.param;
  return std::string(kind_name(c.kind)) + "_v" + std::to_string(c.variant) + "_" + red_name(c.red) + "_N" +
         std::to_string(c.N) + "_C" + std::to_string(c.C) + "_" + fl::dtype_name(c.dtype);
}

int variants(RowKind k) { return k == RowKind::SparseCE ? 4 : 2; }

std::vector<RowCase> row_cases() {
  struct Shape {
    std::int64_t N, C;
  };
  // N·C up to ~200k: the oracle works in long double, one row at a time.
  const std::vector<Shape> f32_shapes = {{1, 1},   {7, 1},   {1, 2},    {100003, 2}, {7, 33},
                                         {1000, 33}, {1, 1000}, {7, 1000}, {3, 50257}};
  const std::vector<Shape> half_shapes = {{1, 1}, {7, 2}, {1000, 33}, {7, 1000}, {3, 50257}};
  std::vector<RowCase> v;
  for (RowKind k : {RowKind::SparseCE, RowKind::SoftCE, RowKind::NLL, RowKind::KLDiv, RowKind::KLDivLogits}) {
    const bool kl = k == RowKind::KLDiv || k == RowKind::KLDivLogits;
    std::vector<Reduction> reds = {Reduction::None, Reduction::Mean, Reduction::Sum};
    if (kl) reds.push_back(Reduction::BatchMean);
    for (DType d : {DType::Float32, DType::Float16, DType::BFloat16})
      for (const Shape& s : d == DType::Float32 ? f32_shapes : half_shapes)
        for (int variant = 0; variant < variants(k); ++variant)
          for (Reduction red : reds) v.push_back({k, red, s.N, s.C, d, variant});
  }
  return v;
}

class OracleVsCpuRowwise : public ::testing::TestWithParam<RowCase> {};

TEST_P(OracleVsCpuRowwise, LossGradientAndLseMatch) {
  const RowCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  const std::int64_t N = c.N, C = c.C;
  const std::size_t NC = static_cast<std::size_t>(N * C);
  const bool v1 = c.variant == 1, v2 = c.variant == 2, v3 = c.variant == 3;

  oracle::RowParams op;
  fl::RowwiseProblem p;
  p.dtype = c.dtype;
  p.rows = N;
  p.classes = C;
  p.reduction = c.red;
  std::int64_t stride = C;
  DType label_dtype = DType::Int64;
  std::vector<float> class_weight;
  Vec input, target;
  std::vector<std::int64_t> labels;

  auto random_labels = [&](std::int64_t ignore, double ignore_fraction) {
    labels.resize(static_cast<std::size_t>(N));
    for (auto& l : labels) l = rng.bernoulli(ignore_fraction) ? ignore : rng.integer(0, C - 1);
  };
  auto random_class_weight = [&]() {
    class_weight.resize(static_cast<std::size_t>(C));
    for (float& w : class_weight) w = static_cast<float>(rng.uniform(0.2, 3));
    op.class_weight.assign(class_weight.begin(), class_weight.end());
  };
  /// Probability rows (softmax of random logits) with ~10% exact zeros.
  auto random_probs = [&]() {
    Vec t = softmax_rows(rng.normal_vec(NC, 0, 2), N, C);
    for (double& v : t)
      if (rng.bernoulli(0.1)) v = 0;
    return t;
  };

  switch (c.kind) {
    case RowKind::SparseCE:
      p.loss = Loss::CrossEntropy;
      input = rng.normal_vec(NC, 0, 3);
      if (c.variant == 0) random_labels(-100, 0);
      if (v1) {
        p.params.ignore_index = op.ignore_index = -1;
        random_labels(-1, 0.15);
        random_class_weight();
        label_dtype = DType::Int32;
        p.grad_scale = op.grad_scale = 0.5;
      }
      if (v2) {
        random_labels(-100, 0.1);
        p.params.label_smoothing = op.label_smoothing = 0.1;
        p.params.z_loss = op.z_loss = 1e-3;
        p.grad_scale = op.grad_scale = -3;
      }
      if (v3) {
        random_labels(-100, 0.1);
        random_class_weight();
        p.params.softcap = op.softcap = 4;
        p.params.label_smoothing = op.label_smoothing = 0.2;
        stride = C + 5;
      }
      break;
    case RowKind::SoftCE:
      p.loss = Loss::CrossEntropy;
      input = rng.normal_vec(NC, 0, 3);
      target = random_probs();
      if (v1) {
        random_class_weight();
        p.params.label_smoothing = op.label_smoothing = 0.15;
        p.params.z_loss = op.z_loss = 1e-2;
        p.params.softcap = op.softcap = 6;
        p.grad_scale = op.grad_scale = 2;
        stride = C + 3;
      }
      break;
    case RowKind::NLL:
      p.loss = Loss::NLL;
      input = log_softmax_rows(rng.normal_vec(NC, 0, 2), N, C);
      random_labels(-100, 0);
      if (v1) {
        random_labels(-100, 0.15);
        random_class_weight();
        label_dtype = DType::Int32;
        stride = 2 * C + 1;
      }
      break;
    case RowKind::KLDiv:
      p.loss = Loss::KLDiv;
      input = log_softmax_rows(rng.normal_vec(NC, 0, 2), N, C);
      if (!v1) {
        target = random_probs();
      } else {
        p.params.log_target = op.log_target = true;
        target = log_softmax_rows(rng.normal_vec(NC, 0, 2), N, C);
        stride = C + 1;
        p.grad_scale = op.grad_scale = 1.5;
      }
      break;
    case RowKind::KLDivLogits:
      p.loss = Loss::KLDivLogits;
      input = rng.normal_vec(NC, 0, 3);
      target = rng.normal_vec(NC, 0, 3);
      if (v1) {
        p.params.temperature = op.temperature = 2.5;
        stride = C + 7;
        p.grad_scale = op.grad_scale = -0.25;
      }
      break;
  }
  input = round_to(c.dtype, input);
  target = round_to(c.dtype, target);
  p.row_stride = stride;
  p.label_dtype = label_dtype;

  const Buffer bin = strided(c.dtype, input, N, C, stride);
  const Buffer btg = target.empty() ? Buffer() : strided(c.dtype, target, N, C, stride);
  const Buffer blb = Buffer::labels(label_dtype, labels);
  p.input = bin.data();
  p.target = target.empty() ? nullptr : btg.data();
  p.labels = labels.empty() ? nullptr : blb.data();
  p.class_weight = class_weight.empty() ? nullptr : class_weight.data();

  const oracle::Red red = to_red(c.red);
  auto call_oracle = [&](oracle::Red rr) {
    switch (c.kind) {
      case RowKind::SparseCE: return oracle::cross_entropy(N, C, input, labels, rr, op);
      case RowKind::SoftCE: return oracle::cross_entropy_soft(N, C, input, target, rr, op);
      case RowKind::NLL: return oracle::nll(N, C, input, labels, rr, op);
      case RowKind::KLDiv: return oracle::kl_div(N, C, input, target, rr, op);
      case RowKind::KLDivLogits: return oracle::kl_div_logits(N, C, input, target, rr, op);
    }
    return oracle::Result{};
  };
  const oracle::Result o = call_oracle(red);
  const bool ce = p.loss == Loss::CrossEntropy;
  const RunResult r = run(p, true, ce, cpu());

  ASSERT_EQ(r.status, Status::Success) << fl::status_string(r.status);
  EXPECT_EQ(r.error_count, 0);
  ASSERT_EQ(o.bad, 0);
  // Only kl_div has terms of both signs (p·log p − p·q with unnormalised targets); every other row loss is
  // non-negative, so rtol alone bounds its reduction.
  double floor = kCancel * max_abs(o.loss);
  if (c.red != Reduction::None && c.kind == RowKind::KLDiv) floor = loss_floor(call_oracle(oracle::Red::None), o);
  EXPECT_TRUE(close_vec(r.loss, o.loss, kLossRtol, floor, "loss"));
  // The natural gradient scale (|grad_scale|·w_max / numel) floors the cancellation allowance, so that an
  // exactly-zero expected gradient (C = 1) accepts double rounding residue of the per-row coefficients.
  const double wmax = class_weight.empty() ? 1.0 : *std::max_element(class_weight.begin(), class_weight.end());
  const double natural = std::fabs(p.grad_scale) * wmax / static_cast<double>(std::max<std::int64_t>(1, N * C));
  EXPECT_TRUE(within_ulps(r.grad_dense, o.grad, c.dtype, 1.0, kCancel * std::max(max_abs(o.grad), natural)));
  if (ce) {
    EXPECT_TRUE(close_vec(r.lse, o.lse, kLossRtol, kCancel * std::max(1.0, max_abs(input)), "lse"));
  }
  if (stride > C) {
    EXPECT_TRUE(padding_untouched(r.grad, N, C, stride)) << "the gradient's row padding was written";
  }
}

INSTANTIATE_TEST_SUITE_P(All, OracleVsCpuRowwise, ::testing::ValuesIn(row_cases()), row_case_name);

}  // namespace
