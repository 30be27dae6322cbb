// The CPU path's SIMD dispatch (Google Highway): every compiled target this CPU can run computes the
// same results, and the whole suite can run on one forced target.
//
// FUSEDLOSS_SIMD_TARGET=<name> (AVX3, AVX2, SSE4, EMU128: hwy::TargetName) pins the dispatch of this
// process to that target before any test runs, so ctest runs the key checks (oracle, edge values,
// determinism) once per target (tests/CMakeLists.txt, label `simd`): a machine without AVX-512 still
// has its code paths tested, and the AVX-512 machine tests the lower ones. A target this CPU
// cannot run skips the run.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/test_util.hpp"
#include "hwy/targets.h"

namespace {

using namespace tu;
namespace fl = ::fusedloss;

/// The targets the library is compiled for (CMakeLists.txt: Highway's defaults without SSSE3)
/// that this CPU supports, best first.
std::vector<std::int64_t> runnable_targets() {
  std::vector<std::int64_t> out;
  for (std::int64_t t : {std::int64_t(HWY_AVX3), std::int64_t(HWY_AVX2), std::int64_t(HWY_SSE4), std::int64_t(HWY_EMU128)})
    if ((hwy::SupportedTargets() & t) != 0 || t == HWY_EMU128) out.push_back(t);
  return out;
}

std::int64_t g_forced = 0;  // the target FUSEDLOSS_SIMD_TARGET pinned (0: none)

class ForcedTarget : public ::testing::Environment {
 public:
  void SetUp() override {
    const char* name = std::getenv("FUSEDLOSS_SIMD_TARGET");
    if (name == nullptr || *name == '\0') return;
    for (std::int64_t t : runnable_targets())
      if (std::string(hwy::TargetName(t)) == name) g_forced = t;
    if (g_forced == 0) GTEST_SKIP() << "this CPU cannot run the SIMD target " << name;
    hwy::SetSupportedTargetsForTest(g_forced);
  }
};
[[maybe_unused]] ::testing::Environment* const kForcedTarget = ::testing::AddGlobalTestEnvironment(new ForcedTarget);

/// Restores the process's pinned target (or the CPU's own) when a test that switches leaves.
struct TargetScope {
  ~TargetScope() { hwy::SetSupportedTargetsForTest(g_forced); }
};

struct Outcome {
  std::string target;
  RunResult r;
};

/// Runs `in` once per runnable target.
std::vector<Outcome> run_on_every_target(const Instance& in) {
  TargetScope restore;
  std::vector<Outcome> out;
  for (std::int64_t t : runnable_targets()) {
    hwy::SetSupportedTargetsForTest(t);
    out.push_back({hwy::TargetName(t), in.run(true, true)});
  }
  return out;
}

bool bitwise_equal(const Buffer& a, const Buffer& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.data(), b.data(), a.bytes()) == 0;
}

// Arithmetic-only losses: the vector code performs the scalar definition's operations in the same
// order without fused multiply-adds, so every target writes the same bits (the tail of a chunk, run
// by the scalar code, included).
TEST(SimdTargets, ArithmeticLossesAreBitwiseIdenticalOnEveryTarget) {
  Rng rng(77);
  for (Loss loss : {Loss::MSE, Loss::MAE, Loss::Huber, Loss::SmoothL1, Loss::Hinge, Loss::SquaredHinge}) {
    for (DType d : {DType::Float32, DType::Float16, DType::BFloat16}) {
      Instance in = make_instance(rng, Family{loss, false}, d, 1003, 0, /*options=*/true, 0, Reduction::None);
      const std::vector<Outcome> runs = run_on_every_target(in);
      for (const Outcome& o : runs) {
        SCOPED_TRACE(std::string(fl::loss_name(loss)) + " " + fl::dtype_name(d) + " on " + o.target);
        ASSERT_EQ(o.r.status, Status::Success);
        EXPECT_TRUE(bitwise_equal(o.r.grad, runs.front().r.grad));
        EXPECT_EQ(o.r.loss_raw, runs.front().r.loss_raw);
      }
    }
  }
}

// Every loss on every target against the float64 oracle at the documented bound: loss rtol 1e-6,
// gradient 1 ulp of the dtype (the transcendental losses use each target's vector libm).
TEST(SimdTargets, EveryLossMatchesTheOracleOnEveryTarget) {
  Rng rng(78);
  for (const Family& f : all_families()) {
    for (DType d : {DType::Float32, DType::Float16, DType::BFloat16}) {
      Instance in = family_rowwise(f) ? make_instance(rng, f, d, 7, 1003, true)
                                      : make_instance(rng, f, d, 1003, 0, true);
      const oracle::Result o = oracle_for(in);
      for (const Outcome& run : run_on_every_target(in)) {
        SCOPED_TRACE(family_name(f) + " " + fl::dtype_name(d) + " on " + run.target);
        ASSERT_TRUE(run.r.status == Status::Success || run.r.status == Status::InvalidValue);
        EXPECT_TRUE(close_vec(run.r.loss, o.loss, 1e-6, 1e-12, "loss"));
        EXPECT_TRUE(within_ulps(run.r.grad_dense, o.grad, d, 1.0, 1e-12 * max_abs(o.grad)));
      }
    }
  }
}

}  // namespace
