// The vector math of cpu/simd-inl.h at double precision, on every SIMD target this CPU runs: the
// documented relative error bounds of ExpNonPositive (e^x, x ≤ 0) and Log1pAndReciprocal
// (log1p(e) and 1/(1 + e), e ∈ [0, 1]) against long double, on millions of points, plus their
// special values. (tests/cpu/test_simd_accuracy.cpp checks what reaches the float outputs.)
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/test_simd_math.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu/simd-inl.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace fusedloss {
namespace detail {
namespace cpu {
namespace HWY_NAMESPACE {

/// out[3i .. 3i+2] = ExpNonPositive(x_i), log1p(e_i) and 1/(1 + e_i) with e_i = in[i] (n a multiple of 8).
void EvalMath(const double* x, const double* e, std::size_t n, double* exp_out, double* log1p_out, double* recip_out) {
  const DD d;
  for (std::size_t i = 0; i < n; i += hn::Lanes(d)) {
    hn::StoreU(ExpNonPositive(d, hn::LoadU(d, x + i)), d, exp_out + i);
    VD l, r;
    Log1pAndReciprocal(d, hn::LoadU(d, e + i), l, r);
    hn::StoreU(l, d, log1p_out + i);
    hn::StoreU(r, d, recip_out + i);
  }
}

/// out[i] = ExpDifferenceF32(z_i, m_i), deep[i] = its deep flag (n a multiple of 16).
void EvalExpF32(const float* z, const float* m, std::size_t n, float* out, std::uint8_t* deep) {
  const DF32 df;
  HWY_ALIGN float flags[hn::MaxLanes(DF32())];
  for (std::size_t i = 0; i < n; i += hn::Lanes(df)) {
    MF32 dp;
    hn::StoreU(ExpDifferenceF32(df, hn::LoadU(df, z + i), hn::LoadU(df, m + i), dp), df, out + i);
    hn::Store(hn::IfThenElseZero(dp, hn::Set(df, 1.0f)), df, flags);
    for (std::size_t k = 0; k < hn::Lanes(df); ++k) deep[i + k] = flags[k] != 0.0f;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace cpu
}  // namespace detail
}  // namespace fusedloss
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <gtest/gtest.h>

#include "hwy/targets.h"

namespace fusedloss {
namespace detail {
namespace cpu {
HWY_EXPORT(EvalMath);
HWY_EXPORT(EvalExpF32);
}  // namespace cpu
}  // namespace detail
}  // namespace fusedloss

namespace {

using ld = long double;

double rel_err(double got, ld want) {
  if (want == 0) return got == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  return static_cast<double>(std::fabs((static_cast<ld>(got) - want) / want));
}

TEST(SimdMath, ExpAndLog1pWithinTheirBoundsOnEveryTarget) {
  const std::size_t n = std::size_t(1) << 20;
  std::mt19937_64 gen(1410);
  std::vector<double> x(n), e(n);
  for (std::size_t i = 0; i < n; ++i) {
    switch (i % 4) {
      case 0: x[i] = -std::uniform_real_distribution<double>(0, 708)(gen); break;
      case 1: x[i] = -std::uniform_real_distribution<double>(0, 2)(gen); break;
      case 2: x[i] = -std::ldexp(std::uniform_real_distribution<double>(1, 2)(gen), -static_cast<int>(gen() % 60)); break;
      default: x[i] = -std::uniform_real_distribution<double>(0, 40)(gen); break;
    }
    // e: e^{−|x|} for float x (what the losses pass), uniform [0, 1], and around the √2 − 1 split.
    switch (i % 3) {
      case 0: e[i] = std::exp(static_cast<double>(static_cast<float>(x[i]))); break;
      case 1: e[i] = std::uniform_real_distribution<double>(0, 1)(gen); break;
      default: e[i] = 0.41421356237309504880 + std::uniform_real_distribution<double>(-1e-3, 1e-3)(gen); break;
    }
  }
  const double edge_x[] = {0.0, -0.0, -1e-300, -708.0, -707.9999, -708.0001, -745.0, -1e308,
                           -std::numeric_limits<double>::infinity(), std::nan("")};
  const double edge_e[] = {0.0, 1.0, 1e-300, 0.41421356237309504880, 0.414213562373095, 0.4142135623730951,
                           0.5, 2.2250738585072014e-308, 1e-17, std::nan("")};
  for (std::size_t k = 0; k < 10; ++k) {
    x[k] = edge_x[k];
    e[k] = edge_e[k];
  }
  std::vector<double> ex(n), lp(n), rc(n);
  std::vector<std::int64_t> targets;  // the compiled targets this CPU runs (taken before any is pinned)
  for (std::int64_t t : {std::int64_t(HWY_AVX3), std::int64_t(HWY_AVX2), std::int64_t(HWY_SSE4), std::int64_t(HWY_EMU128)})
    if ((hwy::SupportedTargets() & t) != 0 || t == HWY_EMU128) targets.push_back(t);
  for (std::int64_t t : targets) {
    SCOPED_TRACE(hwy::TargetName(t));
    hwy::SetSupportedTargetsForTest(t);
    HWY_DYNAMIC_DISPATCH(fusedloss::detail::cpu::EvalMath)(x.data(), e.data(), n, ex.data(), lp.data(), rc.data());
    double worst_exp = 0, worst_log1p = 0, worst_recip = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (std::isnan(x[i])) {
        EXPECT_TRUE(std::isnan(ex[i]));
      } else if (x[i] < -708.0) {
        EXPECT_EQ(ex[i], 0.0) << "x = " << x[i];  // flushed (documented)
      } else {
        worst_exp = std::max(worst_exp, rel_err(ex[i], std::exp(static_cast<ld>(x[i]))));
      }
      if (std::isnan(e[i])) {
        EXPECT_TRUE(std::isnan(lp[i]) && std::isnan(rc[i]));
        continue;
      }
      worst_log1p = std::max(worst_log1p, rel_err(lp[i], std::log1p(static_cast<ld>(e[i]))));
      worst_recip = std::max(worst_recip, rel_err(rc[i], 1 / (1 + static_cast<ld>(e[i]))));
    }
    RecordProperty(std::string("worst_exp_") + hwy::TargetName(t), std::to_string(worst_exp));
    EXPECT_LT(worst_exp, std::ldexp(1.0, -43)) << worst_exp;
    EXPECT_LT(worst_log1p, std::ldexp(1.0, -43)) << worst_log1p;
    EXPECT_LT(worst_recip, std::ldexp(1.0, -50)) << worst_recip;
    std::printf("[ %s ] worst relative error: exp %.3g (2^%.1f), log1p %.3g (2^%.1f), 1/(1+e) %.3g\n", hwy::TargetName(t),
                worst_exp, std::log2(worst_exp), worst_log1p, std::log2(worst_log1p), worst_recip);
  }
  // Back to the process's target: the one FUSEDLOSS_SIMD_TARGET pins (tests/cpu/test_simd_targets.cpp), else the best.
  std::int64_t pinned = 0;
  const char* name = std::getenv("FUSEDLOSS_SIMD_TARGET");
  for (std::int64_t t : {std::int64_t(HWY_AVX3), std::int64_t(HWY_AVX2), std::int64_t(HWY_SSE4), std::int64_t(HWY_EMU128)})
    if (name != nullptr && std::string(hwy::TargetName(t)) == name) pinned = t;
  hwy::SetSupportedTargetsForTest(pinned);
}

/// The compiled targets this CPU runs (taken before any is pinned).
std::vector<std::int64_t> runnable_targets() {
  std::vector<std::int64_t> targets;
  for (std::int64_t t : {std::int64_t(HWY_AVX3), std::int64_t(HWY_AVX2), std::int64_t(HWY_SSE4), std::int64_t(HWY_EMU128)})
    if ((hwy::SupportedTargets() & t) != 0 || t == HWY_EMU128) targets.push_back(t);
  return targets;
}
/// Back to the process's target: the one FUSEDLOSS_SIMD_TARGET pins, else the best.
void restore_pinned_target() {
  std::int64_t pinned = 0;
  const char* name = std::getenv("FUSEDLOSS_SIMD_TARGET");
  for (std::int64_t t : {std::int64_t(HWY_AVX3), std::int64_t(HWY_AVX2), std::int64_t(HWY_SSE4), std::int64_t(HWY_EMU128)})
    if (name != nullptr && std::string(hwy::TargetName(t)) == name) pinned = t;
  hwy::SetSupportedTargetsForTest(pinned);
}

// The float-lane exponential of bfloat16 cross_entropy (cpu/simd-inl.h, ExpDifferenceF32): e^{z − m}
// within 2^−22 relative of long double for float z ≤ m — bfloat16 pairs and float pairs far apart in
// magnitude (where a rounded z − m would be off by up to 2^−24·|z − m|) — exactly 1 at z = m, 0
// with the deep flag below z − m = −86.5, 0 without it for z = −inf, NaN for NaN.
TEST(SimdMath, FloatLaneExpWithinItsBoundOnEveryTarget) {
  const std::size_t n = std::size_t(1) << 20;
  std::mt19937_64 gen(1411);
  std::vector<float> z(n), m(n), out(n);
  std::vector<std::uint8_t> deep(n);
  const auto bf16 = [](float v) {  // truncated to bfloat16 (any bfloat16 value will do)
    std::uint32_t b;
    std::memcpy(&b, &v, 4);
    b &= 0xffff0000u;
    std::memcpy(&v, &b, 4);
    return v;
  };
  for (std::size_t i = 0; i < n; ++i) {
    const float mi = static_cast<float>(std::uniform_real_distribution<double>(-30, 30)(gen));
    switch (i % 4) {
      case 0: m[i] = bf16(mi); z[i] = bf16(m[i] - static_cast<float>(std::uniform_real_distribution<double>(0, 90)(gen))); break;
      case 1: m[i] = mi; z[i] = m[i] - static_cast<float>(std::uniform_real_distribution<double>(0, 3)(gen)); break;
      case 2:  // z and m far apart in magnitude: z − m is not a float
        m[i] = std::ldexp(static_cast<float>(std::uniform_real_distribution<double>(1, 2)(gen)), -static_cast<int>(gen() % 30));
        z[i] = -static_cast<float>(std::uniform_real_distribution<double>(0, 86)(gen));
        break;
      default: m[i] = 20.0f + static_cast<float>(std::uniform_real_distribution<double>(0, 1)(gen)); z[i] = std::ldexp(mi, -static_cast<int>(gen() % 40)); break;
    }
    if (z[i] > m[i]) z[i] = m[i];
  }
  const float inf = std::numeric_limits<float>::infinity();
  const float edge_z[] = {3.0f, -0.0f, -86.0f, -86.6f, -87.5f, -104.0f, -1e30f, -inf, std::nanf(""), -1e-30f};
  const float edge_m[] = {3.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 5.0f, 1.0f, 0.0f};
  for (std::size_t k = 0; k < 10; ++k) z[k] = edge_z[k], m[k] = edge_m[k];
  for (std::int64_t t : runnable_targets()) {
    SCOPED_TRACE(hwy::TargetName(t));
    hwy::SetSupportedTargetsForTest(t);
    HWY_DYNAMIC_DISPATCH(fusedloss::detail::cpu::EvalExpF32)(z.data(), m.data(), n, out.data(), deep.data());
    EXPECT_EQ(out[0], 1.0f);
    EXPECT_EQ(out[1], 1.0f);
    EXPECT_TRUE(!deep[2] && deep[3] && deep[4] && deep[5] && deep[6]);
    EXPECT_TRUE(out[7] == 0.0f && !deep[7]);
    EXPECT_TRUE(std::isnan(out[8]) && !deep[8]);
    double worst = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (std::isnan(z[i])) continue;
      const ld x = static_cast<ld>(z[i]) - static_cast<ld>(m[i]);
      if (deep[i]) {
        EXPECT_EQ(out[i], 0.0f);
        EXPECT_LT(x, -86.49L) << z[i] << " " << m[i];
        continue;
      }
      if (z[i] == -inf) {
        EXPECT_EQ(out[i], 0.0f);
        continue;
      }
      EXPECT_GE(x, -86.51L) << z[i] << " " << m[i];
      worst = std::max(worst, rel_err(out[i], std::exp(x)));
    }
    EXPECT_LT(worst, std::ldexp(1.0, -22)) << worst;
    std::printf("[ %s ] float-lane exp: worst relative error %.3g (2^%.1f)\n", hwy::TargetName(t), worst, std::log2(worst));
  }
  restore_pinned_target();
}

}  // namespace
#endif  // HWY_ONCE
