// Unit tests of validate's comparison: ulp distances, tolerances, NaN handling, worst index.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cli/compare.hpp"
#include "fusedloss/float16.hpp"

namespace fusedloss_cli {
namespace {

using fusedloss::DType;

HostTensor tensor(DType dtype, const std::vector<double>& values) {
  HostTensor t(dtype, {static_cast<std::int64_t>(values.size())});
  for (std::size_t i = 0; i < values.size(); ++i) set_value(t, static_cast<std::int64_t>(i), values[i]);
  return t;
}

TEST(Compare, UlpDistanceCountsRepresentableValues) {
  const float one = 1.0f;
  std::uint32_t a;
  std::memcpy(&a, &one, 4);
  EXPECT_EQ(ulp_distance_bits(a, a + 1, DType::Float32), 1);
  EXPECT_EQ(ulp_distance_bits(a, a + 5, DType::Float32), 5);
  // Across zero: +0 and -0 are 0 apart, the smallest positive and negative subnormals 2.
  EXPECT_EQ(ulp_distance_bits(0x0000u, 0x8000u, DType::BFloat16), 0);
  EXPECT_EQ(ulp_distance_bits(0x0001u, 0x8001u, DType::Float16), 2);
  EXPECT_EQ(ulp_distance_bits(0x3F80u, 0x3F81u, DType::BFloat16), 1);
}

TEST(Compare, IdenticalArraysPass) {
  const HostTensor a = tensor(DType::Float32, {1, -2, 3.5, 0});
  const Comparison c = compare(a, a, CompareKind::Loss, tolerance_for(DType::Float32));
  EXPECT_TRUE(c.pass());
  EXPECT_EQ(c.max_abs, 0);
  EXPECT_EQ(c.max_ulp, 0);
  EXPECT_EQ(c.worst, -1);
}

TEST(Compare, LossRelativeTolerance) {
  const Tolerance tol = tolerance_for(DType::Float32);
  const HostTensor ref = tensor(DType::Float32, {100.0});
  EXPECT_TRUE(compare(tensor(DType::Float32, {100.0005}), ref, CompareKind::Loss, tol).pass());   // 5e-6 relative
  EXPECT_FALSE(compare(tensor(DType::Float32, {100.002}), ref, CompareKind::Loss, tol).pass());   // 2e-5 relative
  // A tiny per-row loss next to large ones is held to the mean magnitude, not its own.
  const HostTensor rows = tensor(DType::Float32, {1e-6, 10, 10, 10});
  EXPECT_TRUE(compare(tensor(DType::Float32, {2e-6, 10, 10, 10}), rows, CompareKind::Loss, tol).pass());
}

TEST(Compare, Fp32GradientAbsoluteToleranceScalesWithTheLargestValue) {
  const Tolerance tol = tolerance_for(DType::Float32);
  const HostTensor ref = tensor(DType::Float32, {1.0, 0.5, 1e-3});
  EXPECT_TRUE(compare(tensor(DType::Float32, {1.0, 0.5, 1e-3 + 5e-7}), ref, CompareKind::Grad, tol).pass());
  const Comparison bad = compare(tensor(DType::Float32, {1.0, 0.5, 1e-3 + 5e-6}), ref, CompareKind::Grad, tol);
  EXPECT_FALSE(bad.pass());
  EXPECT_EQ(bad.failures, 1);
  EXPECT_EQ(bad.worst, 2);
}

TEST(Compare, HalfPrecisionGradientAllowsOneUlp) {
  const Tolerance tol = tolerance_for(DType::BFloat16);
  EXPECT_EQ(tol.grad_ulp, 1);
  HostTensor ref = tensor(DType::BFloat16, {1.0, 0.25});
  HostTensor one_ulp = ref, two_ulp = ref;
  std::uint16_t bits;
  std::memcpy(&bits, ref.bytes.data(), 2);
  const std::uint16_t b1 = bits + 1, b2 = bits + 2;
  std::memcpy(one_ulp.bytes.data(), &b1, 2);
  std::memcpy(two_ulp.bytes.data(), &b2, 2);
  const Comparison c1 = compare(one_ulp, ref, CompareKind::Grad, tol);
  EXPECT_TRUE(c1.pass());
  EXPECT_EQ(c1.max_ulp, 1);
  const Comparison c2 = compare(two_ulp, ref, CompareKind::Grad, tol);
  EXPECT_FALSE(c2.pass());
  EXPECT_EQ(c2.max_ulp, 2);
  EXPECT_EQ(c2.worst, 0);
}

TEST(Compare, NonFiniteValuesMustMatch) {
  const Tolerance tol = tolerance_for(DType::Float32);
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  const HostTensor ref = tensor(DType::Float32, {nan, inf, 1});
  EXPECT_TRUE(compare(tensor(DType::Float32, {nan, inf, 1}), ref, CompareKind::Loss, tol).pass());
  const Comparison c = compare(tensor(DType::Float32, {1, inf, 1}), ref, CompareKind::Loss, tol);
  EXPECT_FALSE(c.pass());
  EXPECT_EQ(c.worst, 0);
  EXPECT_FALSE(compare(tensor(DType::Float32, {nan, -inf, 1}), ref, CompareKind::Loss, tol).pass());
}

TEST(Compare, LossTermScaleBoundsACancellingSum) {
  const Tolerance tol = tolerance_for(DType::Float32);
  // A kl_div sum of terms of size ~1 that cancel to 2e-9: fp32 knows it to ~1e-7, not relatively.
  const HostTensor ref = tensor(DType::Float32, {2e-9});
  const HostTensor got = tensor(DType::Float32, {0.0});
  EXPECT_FALSE(compare(got, ref, CompareKind::Loss, tol).pass());
  EXPECT_TRUE(compare(got, ref, CompareKind::Loss, tol, 1.4).pass());
  EXPECT_FALSE(compare(tensor(DType::Float32, {2e-5}), ref, CompareKind::Loss, tol, 1.4).pass());
}

TEST(Compare, LseNearZeroIsHeldToAnAbsoluteBound) {
  const Tolerance tol = tolerance_for(DType::Float32);
  // lse of the row [0, -10] is log1p(e^-10) = 4.54e-5; m + log(s) in fp32 is off by ~ulp(1).
  const HostTensor ref = tensor(DType::Float32, {4.5398899e-5, 4.5398899e-5});
  const HostTensor got = tensor(DType::Float32, {4.5417706e-5, 4.5398899e-5});
  EXPECT_FALSE(compare(got, ref, CompareKind::Loss, tol).pass());
  EXPECT_TRUE(compare(got, ref, CompareKind::Loss, tol, kLseTermScale).pass());
  EXPECT_FALSE(compare(tensor(DType::Float32, {6.6e-5, 4.5398899e-5}), ref, CompareKind::Loss, tol, kLseTermScale)
                   .pass());
  EXPECT_NE(tolerance_text(tol, "lse", DType::Float32).find(",1)"), std::string::npos);
}

TEST(Compare, RowwiseTermScaleReadsTheMeanDivisorFromTheLabels) {
  const std::vector<std::int32_t> labels = {0, -100, 2, 7, 2};  // 7: out of range, -100: ignored
  const std::vector<float> weights = {0.5f, 1.0f, 3.0f};
  fusedloss::RowwiseProblem p;
  p.loss = fusedloss::Loss::CrossEntropy;
  p.rows = 5;
  p.classes = 3;
  p.labels = labels.data();
  p.label_dtype = DType::Int32;
  p.class_weight = weights.data();
  p.reduction = fusedloss::Reduction::Mean;
  p.grad_scale = -2.0;
  // divisor = w[0] + w[2] + w[2] = 6.5; T = |grad_scale| / divisor · max w.
  EXPECT_DOUBLE_EQ(rowwise_term_scale(p), 2.0 / 6.5 * 3.0);
  p.reduction = fusedloss::Reduction::Sum;
  EXPECT_DOUBLE_EQ(rowwise_term_scale(p), 2.0 * 3.0);
  p.loss = fusedloss::Loss::KLDivLogits;
  p.labels = nullptr;
  p.class_weight = nullptr;
  p.params.temperature = 2.0;
  p.reduction = fusedloss::Reduction::Default;  // batchmean: / N
  EXPECT_DOUBLE_EQ(rowwise_term_scale(p), 2.0 / 5.0 * 2.0);
}

TEST(Compare, IndexStringFollowsTheShape) {
  EXPECT_EQ(index_string(7, {3, 4}), "[1, 3]");
  EXPECT_EQ(index_string(0, {}), "[]");
  EXPECT_EQ(index_string(-1, {5}), "-");
}

TEST(Compare, ToleranceTextNamesTheRule) {
  EXPECT_NE(tolerance_text(tolerance_for(DType::BFloat16), "grad", DType::BFloat16).find("1 ulp bf16"),
            std::string::npos);
  EXPECT_NE(tolerance_text(tolerance_for(DType::Float32), "loss", DType::Float32).find("1e-05"), std::string::npos);
}

}  // namespace
}  // namespace fusedloss_cli
