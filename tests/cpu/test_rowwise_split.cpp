// cross_entropy with few long rows (N < 16, C ≥ 16384, no softcap): cpu/rowwise.cpp splits each row
// into segments at fixed columns, combines the segments' max and Σe in order, and writes the
// gradient segment by segment. Against the float64 oracle, with the edge rows the one-row pass
// handles (a segment of −inf, a NaN, a +inf, a row of −inf), for every thread count bitwise alike.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include "common/test_util.hpp"

namespace {

using namespace tu;
namespace fl = ::fusedloss;

::testing::AssertionResult same_bits(const RunResult& a, const RunResult& b) {
  if (std::memcmp(a.loss_raw.data(), b.loss_raw.data(), a.loss_raw.size() * sizeof(float)) != 0)
    return ::testing::AssertionFailure() << "loss bits differ";
  if (a.grad.bytes() != b.grad.bytes() || std::memcmp(a.grad.data(), b.grad.data(), a.grad.bytes()) != 0)
    return ::testing::AssertionFailure() << "gradient bits differ";
  if (a.lse.size() != b.lse.size() || std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * sizeof(double)) != 0)
    return ::testing::AssertionFailure() << "lse bits differ";
  return ::testing::AssertionSuccess();
}

TEST(CpuRowwiseSplit, EdgeRowsMatchTheOracleForEveryThreadCount) {
  const double inf = std::numeric_limits<double>::infinity();
  Rng rng(1408);
  for (DType d : {DType::Float32, DType::BFloat16}) {
    for (Reduction red : {Reduction::None, Reduction::Mean}) {
      SCOPED_TRACE(std::string(fl::dtype_name(d)) + " " + red_name(red));
      const std::int64_t N = 6, C = 40009;  // segments of 8192: the last one partial, odd length
      Instance in = make_instance(rng, Family{Loss::CrossEntropy, false}, d, N, C, false, 0, red);
      in.labels = {5, 40008, 8191, 17, 12000, 3};
      for (std::int64_t c = 8192; c < 2 * 8192; ++c) in.x[static_cast<std::size_t>(1 * C + c)] = -inf;  // a −inf segment
      in.x[static_cast<std::size_t>(2 * C + 30000)] = std::nan("");                               // NaN: row NaN
      in.x[static_cast<std::size_t>(3 * C + 20000)] = inf;                                       // +inf: lse +inf, NaN gradient
      for (std::int64_t c = 0; c < C; ++c) in.x[static_cast<std::size_t>(4 * C + c)] = -inf;     // all −inf
      in.materialise();
      const oracle::Result o = oracle_for(in);
      fl::ExecutionConfig cfg;
      cfg.backend = fl::Backend::CPU;
      cfg.cpu_threads = 1;
      const RunResult ref = in.run(true, true, cfg);
      ASSERT_TRUE(ref.status == Status::Success || ref.status == Status::InvalidValue);
      EXPECT_TRUE(close_vec(ref.loss, o.loss, 1e-6, 1e-12, "loss"));
      EXPECT_TRUE(close_vec(ref.lse, o.lse, 1e-6, 1e-12, "lse"));
      EXPECT_TRUE(within_ulps(ref.grad_dense, o.grad, d, 1.0, 1e-12));
      for (int t : {2, 3, 7, 16}) {
        cfg.cpu_threads = t;
        EXPECT_TRUE(same_bits(in.run(true, true, cfg), ref)) << "cpu_threads = " << t;
      }
    }
  }
}

// The plain case at scale: 3 rows of the GPT-2 vocabulary with label smoothing, class weights and z-loss.
TEST(CpuRowwiseSplit, OptionsMatchTheOracle) {
  Rng rng(1409);
  for (DType d : {DType::Float32, DType::BFloat16}) {
    SCOPED_TRACE(fl::dtype_name(d));
    Instance in = make_instance(rng, Family{Loss::CrossEntropy, false}, d, 3, 50257, /*options=*/true, 0, Reduction::None);
    in.r.params.softcap = 0.0;  // softcapped rows take the one-row pass
    const oracle::Result o = oracle_for(in);
    const RunResult r = in.run(true, true);
    ASSERT_TRUE(r.status == Status::Success || r.status == Status::InvalidValue);
    EXPECT_TRUE(close_vec(r.loss, o.loss, 1e-6, 1e-12, "loss"));
    EXPECT_TRUE(close_vec(r.lse, o.lse, 1e-6, 1e-12, "lse"));
    EXPECT_TRUE(within_ulps(r.grad_dense, o.grad, d, 1.0, 1e-12 * max_abs(o.grad)));
  }
}

// An empty batch with a width near 2^63 is a valid call that reads nothing; choosing the segment
// width must not overflow on it (found by fuzz_validate: ⌈C/16⌉ was computed as (C + 15) / 16).
TEST(CpuRowwiseSplit, EmptyBatchOfHugeRowsIsFine) {
  for (std::int64_t C : {std::numeric_limits<std::int64_t>::max(), std::numeric_limits<std::int64_t>::max() - 15,
                         std::int64_t{1} << 62}) {
    SCOPED_TRACE(C);
    const float x = 0.0f;
    const std::int64_t label = 0;
    float loss = -1.0f;
    fl::RowwiseProblem p;
    p.loss = Loss::CrossEntropy;
    p.rows = 0;
    p.classes = C;
    p.input = &x;
    p.labels = &label;
    p.reduction = Reduction::Sum;
    fl::LossOutputs out;
    out.loss = &loss;
    fl::ExecutionConfig cfg;
    cfg.backend = fl::Backend::CPU;
    ASSERT_EQ(fl::compute(p, out, cfg), Status::Success);
    EXPECT_EQ(loss, 0.0f);
  }
}

}  // namespace
