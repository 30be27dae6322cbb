// The independent float64 oracle (tests/oracle/oracle.hpp) against the library's CPU path, on random data:
// every loss × reduction × option set × size × dtype (the cases of tests/common/oracle_cases.hpp, shared with
// the CUDA path's oracle test). Sizes are not multiples of anything (1, 7, 1000, 100003 elements;
// C ∈ {1, 2, 33, 1000, 50257}).
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

#include "common/oracle_cases.hpp"
#include "common/test_util.hpp"

namespace {

using namespace tu;
using namespace oracle_cases;
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

class OracleVsCpuElementwise : public ::testing::TestWithParam<ElemCase> {};

TEST_P(OracleVsCpuElementwise, LossAndGradientMatch) {
  const ElemCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  const OracleCase s = make_elem(c, rng);
  const oracle::Result& o = s.expected;
  const RunResult r = s.in.run(true, false, cpu());

  ASSERT_EQ(r.status, Status::Success) << fl::status_string(r.status);
  EXPECT_EQ(r.error_count, 0);
  ASSERT_EQ(o.bad, 0);
  // Every w_i·ℓ_i is >= 0, so a reduction has no cancellation: rtol bounds it.
  const double floor = kCancel * max_abs(o.loss);
  EXPECT_TRUE(close_vec(r.loss, o.loss, kLossRtol, floor, "loss"));
  EXPECT_TRUE(within_ulps(r.grad_dense, o.grad, c.dtype, 1.0, kCancel * max_abs(o.grad)));
}

INSTANTIATE_TEST_SUITE_P(All, OracleVsCpuElementwise, ::testing::ValuesIn(elem_cases({1, 7, 1000, 100003})),
                         elem_case_name);

// =========================================================================================================
// Row-wise
// =========================================================================================================

// N·C up to ~200k: the oracle works in long double, one row at a time.
std::vector<RowCase> cpu_row_cases() {
  return row_cases({{1, 1}, {7, 1}, {1, 2}, {100003, 2}, {7, 33}, {1000, 33}, {1, 1000}, {7, 1000}, {3, 50257}},
                   {{1, 1}, {7, 2}, {1000, 33}, {7, 1000}, {3, 50257}});
}

class OracleVsCpuRowwise : public ::testing::TestWithParam<RowCase> {};

TEST_P(OracleVsCpuRowwise, LossGradientAndLseMatch) {
  const RowCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  const OracleCase s = make_row(c, rng);
  const oracle::Result& o = s.expected;
  const fl::RowwiseProblem& p = s.in.r;
  const bool ce = p.loss == Loss::CrossEntropy;
  const RunResult r = s.in.run(true, ce, cpu());

  ASSERT_EQ(r.status, Status::Success) << fl::status_string(r.status);
  EXPECT_EQ(r.error_count, 0);
  ASSERT_EQ(o.bad, 0);
  // Only kl_div has terms of both signs (p·log p − p·q with unnormalised targets); every other row loss is
  // non-negative, so rtol alone bounds its reduction.
  double floor = kCancel * max_abs(o.loss);
  if (c.red != Reduction::None && c.kind == RowKind::KLDiv) floor = loss_floor(oracle_for(s.in, Reduction::None), o);
  EXPECT_TRUE(close_vec(r.loss, o.loss, kLossRtol, floor, "loss"));
  // The natural gradient scale (|grad_scale|·w_max / numel) floors the cancellation allowance, so that an
  // exactly-zero expected gradient (C = 1) accepts double rounding residue of the per-row coefficients.
  const std::vector<float>& cw = s.in.class_weight;
  const double wmax = cw.empty() ? 1.0 : *std::max_element(cw.begin(), cw.end());
  const double natural = std::fabs(p.grad_scale) * wmax / static_cast<double>(std::max<std::int64_t>(1, c.N * c.C));
  EXPECT_TRUE(within_ulps(r.grad_dense, o.grad, c.dtype, 1.0, kCancel * std::max(max_abs(o.grad), natural)));
  if (ce) {
    EXPECT_TRUE(close_vec(r.lse, o.lse, kLossRtol, kCancel * std::max(1.0, max_abs(s.in.x)), "lse"));
  }
  if (s.in.stride > c.C) {
    EXPECT_TRUE(padding_untouched(r.grad, c.N, c.C, s.in.stride)) << "the gradient's row padding was written";
  }
}

INSTANTIATE_TEST_SUITE_P(All, OracleVsCpuRowwise, ::testing::ValuesIn(cpu_row_cases()), row_case_name);

}  // namespace
