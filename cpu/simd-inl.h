// fusedloss CPU path — per-SIMD-target building blocks (Google Highway): loading f32/f16/bf16 as
// double lanes, storing double lanes rounded once to the dtype, and the libm functions with the
// special values the loss definitions rely on.
//
// Included once per Highway target by the foreach_target.h files (cpu/elementwise.cpp,
// cpu/rowwise.cpp, tests/cpu/test_simd_math.cpp), hence the toggle guard instead of #pragma once.
// Everything is computed in double, as the scalar path does; the math differs from the scalar
// libm by at most ~1e-13 relative (ExpNonPositive, Log1pAndReciprocal: polynomials sized for
// float outputs) or ≤ 4 ulp of double (Highway's contrib math), far below one ulp of
// float/half/bfloat16.
#if defined(FUSEDLOSS_CPU_SIMD_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef FUSEDLOSS_CPU_SIMD_INL_H_
#undef FUSEDLOSS_CPU_SIMD_INL_H_
#else
#define FUSEDLOSS_CPU_SIMD_INL_H_
#endif

#include <cstdint>
#include <limits>

#include "cpu/load_store.hpp"
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace fusedloss {
namespace detail {
namespace cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DD = hn::ScalableTag<double>;
using VD = hn::Vec<DD>;
using MD = hn::Mask<DD>;

// ---- math with IEEE special values (Highway's contrib math leaves NaN/inf/overflow to the caller)

/// e^x = scale·(1 + em1) for x ≤ 0 (the exponentials of the losses: e^{−|x|}, e^{−2|r|},
/// e^{z − max}), sized for float/half/bfloat16 outputs and double sums, not for double results:
/// relative error < 2^−43 (7.4e-14; tests/cpu/test_simd_math.cpp). x = k·ln 2 + r, |r| ≤ ln 2/2,
/// with k = round(x/ln 2) from the low bits of x/ln 2 + 1.5·2^52 (no int conversions);
/// em1 = e^r − 1 = r + r²·Q(r), Q of degree 7 (Chebyshev interpolation of (e^r − 1 − r)/r², tools
/// in the test's comment) by Estrin's scheme — 4 dependent steps instead of Horner's 7, since the
/// exponential heads the long dependency chains of the transcendental losses; scale = 2^k is one
/// exponent-field add, valid for k ≥ −1022 (callers handle x < −708). NaN x: NaN em1.
HWY_INLINE void ExpParts(DD d, VD x, VD& em1, VD& scale) {
  const hn::RebindToUnsigned<DD> du;
  const VD magic = hn::Set(d, 6755399441055744.0);  // 1.5·2^52: adding it rounds to an integer
  const VD t = hn::MulAdd(x, hn::Set(d, 1.442695040888963407359924681), magic);
  const VD k = hn::Sub(t, magic);
  // x − k·ln 2 in two parts (Highway's ExpReduce constants).
  VD r = hn::MulAdd(k, hn::Set(d, -0.6931471805596629565116018), x);
  r = hn::MulAdd(k, hn::Set(d, -0.28235290563031577122588448175e-12), r);
  const VD r2 = hn::Mul(r, r);
  const VD r4 = hn::Mul(r2, r2);
  const VD q01 = hn::MulAdd(hn::Set(d, 0.16666666666662586), r, hn::Set(d, 0.4999999999995511));
  const VD q23 = hn::MulAdd(hn::Set(d, 0.00833333334420298), r, hn::Set(d, 0.04166666678626573));
  const VD q45 = hn::MulAdd(hn::Set(d, 0.00019841224599656011), r, hn::Set(d, 0.0013888839110572009));
  const VD q67 = hn::MulAdd(hn::Set(d, 2.7617564785876086e-06), r, hn::Set(d, 2.4867870179687727e-05));
  const VD q = hn::MulAdd(r4, hn::MulAdd(q67, r2, q45), hn::MulAdd(q23, r2, q01));
  em1 = hn::MulAdd(r2, q, r);
  scale = hn::BitCast(d, hn::Add(hn::ShiftLeft<52>(hn::BitCast(du, t)), hn::Set(du, std::uint64_t(1023) << 52)));
}
/// e^x for x ≤ 0 (ExpParts). Below x = −708 the result is flushed to 0: it is < 2^−1021 there and
/// vanishes in every float output and in each sum it joins (≥ e^0 = 1 for a softmax, or added to
/// terms of order 1 for the elementwise losses). NaN stays NaN.
HWY_INLINE VD ExpNonPositive(DD d, VD x) {
  VD em1, scale;
  ExpParts(d, x, em1, scale);
  return hn::IfThenZeroElse(hn::Lt(x, hn::Set(d, -708.0)), hn::MulAdd(em1, scale, scale));
}
/// log1p(e) and 1/(1 + e) for e ∈ [0, 1] (NaN stays NaN), with ONE division: the pair every
/// logistic loss needs (softplus and sigmoid share e = e^{−|x|}). fdlibm's log on u = 1 + e:
/// u = 2^k·(1 + f) with k = 1 above √2, and log(1 + f) = 2·atanh(s), s = f/(2 + f) ∈ [−0.172,
/// 0.172], by an odd polynomial of degree 11 (relative error < 2^−43). In terms of e:
///   k = 0: s = e/(e + 2);  k = 1: s = (e − 1)/(e + 3)   (f = e or (e − 1)/2, exact, not 1 + e − 1),
/// and s and 1/u come from the one reciprocal D = 1/(u·den): s = num·u·D, 1/u = den·D. Each is a
/// few roundings of double (≤ ~4e-16 relative).
HWY_INLINE void Log1pAndReciprocal(DD d, VD e, VD& log1p_e, VD& inv_u) {
  const VD one = hn::Set(d, 1.0);
  const MD big = hn::Gt(e, hn::Set(d, 0.41421356237309504880));  // u > √2: k = 1
  const VD num = hn::IfThenElse(big, hn::Sub(e, one), e);
  const VD den = hn::Add(num, hn::IfThenElse(big, hn::Set(d, 4.0), hn::Set(d, 2.0)));
  const VD u = hn::Add(one, e);
  const VD D = hn::Div(one, hn::Mul(u, den));
  inv_u = hn::Mul(den, D);
  const VD s = hn::Mul(hn::Mul(num, u), D);
  const VD z = hn::Mul(s, s);
  // log(1 + f) = 2s + s·z·G(z), G of degree 4 (Chebyshev interpolation of the atanh series on
  // z ≤ 0.0295): relative error < 2^−43.
  VD g = hn::Set(d, 0.19362653714202008);
  g = hn::MulAdd(g, z, hn::Set(d, 0.22191400830308503));
  g = hn::MulAdd(g, z, hn::Set(d, 0.2857175453591449));
  g = hn::MulAdd(g, z, hn::Set(d, 0.3999999879733759));
  g = hn::MulAdd(g, z, hn::Set(d, 0.6666666666737509));
  const VD log1p_f = hn::MulAdd(hn::Mul(s, z), g, hn::Add(s, s));
  log1p_e = hn::IfThenElse(big, hn::Add(log1p_f, hn::Set(d, 0.693147180559945309417232121458176568)), log1p_f);
}
/// e^x for any x: overflow gives +inf, NaN stays NaN (contrib: 1 ulp).
HWY_INLINE VD Exp(DD d, VD x) {
  const VD y = hn::IfThenElse(hn::Gt(x, hn::Set(d, 709.782712893384)),
                              hn::Set(d, std::numeric_limits<double>::infinity()), hn::Exp(d, x));
  return hn::IfThenElse(hn::IsNaN(x), x, y);
}
/// log1p(x) for x ≥ −1: −1 → −inf, +inf → +inf, NaN stays NaN (contrib: 2 ulp).
HWY_INLINE VD Log1p(DD d, VD x) {
  const VD inf = hn::Set(d, std::numeric_limits<double>::infinity());
  VD y = hn::IfThenElse(hn::Eq(x, inf), inf, hn::Log1p(d, x));
  y = hn::IfThenElse(hn::Eq(x, hn::Set(d, -1.0)), hn::Neg(inf), y);
  return hn::IfThenElse(hn::IsNaN(x), x, y);
}
/// log(x): 0 → −inf, +inf → +inf, x < 0 → NaN, NaN stays NaN (contrib: 4 ulp).
HWY_INLINE VD Log(DD d, VD x) {
  const VD inf = hn::Set(d, std::numeric_limits<double>::infinity());
  VD y = hn::IfThenElse(hn::Eq(x, inf), inf, hn::Log(d, x));
  y = hn::IfThenElse(hn::Eq(x, hn::Zero(d)), hn::Neg(inf), y);
  y = hn::IfThenElse(hn::Lt(x, hn::Zero(d)), hn::Set(d, std::numeric_limits<double>::quiet_NaN()), y);
  return hn::IfThenElse(hn::IsNaN(x), x, y);
}
/// tanh(x): ±inf → ±1, NaN stays NaN (contrib: 4 ulp).
HWY_INLINE VD Tanh(DD d, VD x) { return hn::IfThenElse(hn::IsNaN(x), x, hn::Tanh(d, x)); }

/// The scalar `a > b ? a : b` lane by lane (math::max_: a NaN `a` gives b, exactly as there).
HWY_INLINE VD MaxLike(VD a, VD b) { return hn::IfThenElse(hn::Gt(a, b), a, b); }
/// math::sign_: sign(0) = 0, NaN stays NaN.
HWY_INLINE VD Sign(DD d, VD x) {
  const VD s = hn::Sub(hn::IfThenElseZero(hn::Gt(x, hn::Zero(d)), hn::Set(d, 1.0)),
                       hn::IfThenElseZero(hn::Lt(x, hn::Zero(d)), hn::Set(d, 1.0)));
  return hn::IfThenElse(hn::Eq(x, x), s, x);
}

/// Sum of the lanes in lane order (a fixed order per target: results stay bitwise reproducible).
HWY_INLINE double SumLanes(DD d, VD v) {
  HWY_ALIGN double lanes[hn::MaxLanes(DD())];
  hn::Store(v, d, lanes);
  double s = 0.0;
  for (size_t k = 0; k < hn::Lanes(d); ++k) s += lanes[k];
  return s;
}

// ---- loads and stores ------------------------------------------------------------------------

using DF = hn::Rebind<float, DD>;
using DU32 = hn::Rebind<uint32_t, DD>;
using DI32 = hn::Rebind<int32_t, DD>;
using DU16 = hn::Rebind<uint16_t, DD>;

/// Lanes rounded to float (nearest even), overflow to ±inf. Highway's portable EMU128 target
/// saturates at ±FLT_MAX instead, so it converts lane by lane there.
HWY_INLINE hn::Vec<DF> ToFloat(DD d, VD v) {
#if HWY_TARGET == HWY_EMU128 || HWY_TARGET == HWY_SCALAR
  HWY_ALIGN double in[hn::MaxLanes(DD())];
  HWY_ALIGN float out[hn::MaxLanes(DD())];
  hn::Store(v, d, in);
  for (size_t k = 0; k < hn::Lanes(d); ++k) out[k] = static_cast<float>(in[k]);
  return hn::Load(DF(), out);
#else
  (void)d;
  return hn::DemoteTo(DF(), v);
#endif
}

/// Lanes rounded to float with round-to-odd (double_to_float_round_to_odd, lane by lane), as
/// bit patterns: truncate, then set the last bit when inexact, so the half/bfloat16 rounding that
/// follows is the correctly rounded double → half/bfloat16 result.
HWY_INLINE hn::Vec<DU32> RoundToOddBits(DD d, VD v) {
  const DI32 di;
  const hn::Vec<DF> f = ToFloat(d, v);
  const VD back = hn::PromoteTo(d, f);
  const MD inexact = hn::And(hn::Ne(back, v), hn::Eq(v, v));
  const MD away = hn::Gt(hn::Abs(back), hn::Abs(v));
  // The two corrections as 0/1 integer lanes (a mask cannot change lane width).
  const hn::Vec<DI32> down = hn::DemoteTo(di, hn::IfThenElseZero(away, hn::Set(d, 1.0)));
  const hn::Vec<DI32> odd = hn::DemoteTo(di, hn::IfThenElseZero(inexact, hn::Set(d, 1.0)));
  const DU32 du;
  return hn::Or(hn::Sub(hn::BitCast(du, f), hn::BitCast(du, down)), hn::BitCast(du, odd));
}

/// RoundToOddBits for lanes whose float is normal or zero, inf, NaN (the common case): the double's
/// bits below float precision fold into a sticky last bit, after which the conversion is exact.
/// Below 2^−126 the float is subnormal and would round again, so the caller checks `tiny` first.
HWY_INLINE hn::Vec<DU32> RoundToOddBitsNormal(DD d, VD v) {
  const hn::RebindToUnsigned<DD> du;
  const auto bits = hn::BitCast(du, v);
  const auto low = hn::Set(du, (std::uint64_t(1) << 29) - 1);  // 52 − 23 mantissa bits float drops
  const auto inexact = hn::Ne(hn::And(bits, low), hn::Zero(du));
  const auto odd = hn::Or(hn::AndNot(low, bits), hn::IfThenElseZero(inexact, hn::Set(du, std::uint64_t(1) << 29)));
  return hn::BitCast(DU32(), ToFloat(d, hn::BitCast(d, odd)));
}
/// Lanes whose round-to-odd float would be subnormal (0 < |v| < 2^−126).
HWY_INLINE MD TinyForFloat(DD d, VD v) {
  const VD a = hn::Abs(v);
  return hn::And(hn::Lt(a, hn::Set(d, 1.1754943508222875e-38)), hn::Gt(a, hn::Zero(d)));
}
/// The round-to-odd float bits of v, by the cheap route when no lane is tiny.
HWY_INLINE hn::Vec<DU32> OddFloatBits(DD d, VD v) {
  return hn::AllFalse(d, TinyForFloat(d, v)) ? RoundToOddBitsNormal(d, v) : RoundToOddBits(d, v);
}

/// StoreU, or when `stream` a non-temporal store (write-combined straight to memory, no read
/// for ownership of the line; p must be aligned to the vector, and the writer calls
/// hwy::FlushStream() before another thread may read). Only where the vector is a full 16 bytes
/// or more: Highway rounds narrower streams up to 16 bytes, which would write past p's lanes.
template <class D, class V, typename T>
HWY_INLINE void StoreOrStream(V v, D d, T* HWY_RESTRICT p, bool stream) {
#if HWY_TARGET != HWY_EMU128 && HWY_TARGET != HWY_SCALAR
  if constexpr (sizeof(T) * hn::MaxLanes(D()) >= 16) {
    if (stream) {
      hn::Stream(v, d, p);
      return;
    }
  }
#else
  (void)stream;
#endif
  hn::StoreU(v, d, p);
}
/// Whether StoreOrStream may stream d's vectors at p: 16 bytes or more, and p aligned to one.
template <class D>
HWY_INLINE bool CanStream(D d, const void* p) {
  const std::size_t bytes = sizeof(hn::TFromD<D>) * hn::Lanes(d);
#if HWY_TARGET != HWY_EMU128 && HWY_TARGET != HWY_SCALAR
  return bytes >= 16 && reinterpret_cast<std::uintptr_t>(p) % bytes == 0;
#else
  (void)bytes;
  (void)p;
  return false;
#endif
}

template <class IO>
struct VecIo;

template <>
struct VecIo<Io<DType::Float32>> {
  static VD Load(DD d, const float* p) { return hn::PromoteTo(d, hn::LoadU(DF(), p)); }
  static void Store(DD d, float* p, VD v, bool stream = false) { StoreOrStream(ToFloat(d, v), DF(), p, stream); }
  using StoreTag = DF;
};

template <>
struct VecIo<Io<DType::BFloat16>> {
  static VD Load(DD d, const std::uint16_t* p) {
    const hn::Vec<DU32> u = hn::ShiftLeft<16>(hn::PromoteTo(DU32(), hn::LoadU(DU16(), p)));
    return hn::PromoteTo(d, hn::BitCast(DF(), u));
  }
  /// The correctly rounded (nearest even) bfloat16 of v. Common case, every lane's float normal or
  /// zero/inf/NaN: round the double itself at bfloat16's last bit (bit 45: add half an ulp − 1 plus
  /// the ulp's parity, clear the bits below), after which the float conversion is exact (or
  /// overflows to ±inf, as bfloat16 does) and its top half is the bfloat16; NaN lanes skip the
  /// rounding and convert to a quiet NaN. Otherwise: to_bfloat16 of the round-to-odd float.
  static void Store(DD d, std::uint16_t* p, VD v, bool stream = false) {
    const DU32 du;
    if (hn::AllFalse(d, TinyForFloat(d, v))) {
      const hn::RebindToUnsigned<DD> du64;
      const auto bits = hn::BitCast(du64, v);
      const auto half_ulp = hn::Add(hn::Set(du64, (std::uint64_t(1) << 44) - 1), hn::And(hn::ShiftRight<45>(bits), hn::Set(du64, 1)));
      const auto rounded = hn::And(hn::Add(bits, half_ulp), hn::Set(du64, ~((std::uint64_t(1) << 45) - 1)));
      const VD r = hn::IfThenElse(hn::IsNaN(v), v, hn::BitCast(d, rounded));
      const hn::Vec<DU32> hi = hn::ShiftRight<16>(hn::BitCast(du, ToFloat(d, r)));
      StoreOrStream(hn::DemoteTo(DU16(), hn::BitCast(DI32(), hi)), DU16(), p, stream);
      return;
    }
    const hn::Vec<DU32> u = RoundToOddBits(d, v);
    const hn::Vec<DU32> hi = hn::ShiftRight<16>(u);
    const hn::Vec<DU32> rounded = hn::ShiftRight<16>(hn::Add(u, hn::Add(hn::Set(du, 0x7fffu), hn::And(hi, hn::Set(du, 1u)))));
    const auto nan = hn::RebindMask(du, hn::IsNaN(hn::BitCast(DF(), u)));
    const hn::Vec<DU32> bits = hn::IfThenElse(nan, hn::Or(hi, hn::Set(du, 0x40u)), rounded);
    StoreOrStream(hn::DemoteTo(DU16(), hn::BitCast(DI32(), bits)), DU16(), p, stream);
  }
  using StoreTag = DU16;
};

template <>
struct VecIo<Io<DType::Float16>> {
  using StoreTag = DU16;  // the bytes of one stored vector
#if HWY_TARGET >= HWY_SSE4
  // Without F16C Highway emulates the conversions, truncating and mapping inf/NaN to finite
  // values; the scalar conversions of float16.hpp take over the (cheap) lane conversions here.
  static VD Load(DD d, const std::uint16_t* p) {
    HWY_ALIGN double lanes[hn::MaxLanes(DD())];
    for (size_t k = 0; k < hn::Lanes(d); ++k) lanes[k] = static_cast<double>(to_float(half_t{p[k]}));
    return hn::Load(d, lanes);
  }
  static void Store(DD d, std::uint16_t* p, VD v, bool /*stream*/ = false) {
    HWY_ALIGN uint32_t lanes[hn::MaxLanes(DD())];
    hn::Store(OddFloatBits(d, v), DU32(), lanes);
    for (size_t k = 0; k < hn::Lanes(d); ++k) p[k] = to_half(bits_float(lanes[k])).bits;
  }
#else
  using DH = hn::Rebind<hwy::float16_t, DD>;
  static VD Load(DD d, const std::uint16_t* p) {
    return hn::PromoteTo(d, hn::PromoteTo(DF(), hn::LoadU(DH(), reinterpret_cast<const hwy::float16_t*>(p))));
  }
  /// F16C's conversion rounds to nearest even: applied to the round-to-odd float it is exact.
  static void Store(DD d, std::uint16_t* p, VD v, bool stream = false) {
    StoreOrStream(hn::DemoteTo(DH(), hn::BitCast(DF(), OddFloatBits(d, v))), DH(),
                  reinterpret_cast<hwy::float16_t*>(p), stream);
  }
#endif
};


// ---- float32 lanes: cross_entropy's softmax for bfloat16 rows ------------------------------------
// (cpu/rowwise.cpp: e^{z − m} on float lanes, every sum in double; why that keeps a bfloat16
// gradient within 1 ulp is derived there. DF32 is a full vector: twice DD's lanes, one on HWY_SCALAR.)
using DF32 = hn::ScalableTag<float>;  // a full vector of floats (twice the lanes of DD)
using VF32 = hn::Vec<DF32>;
using MF32 = hn::Mask<DF32>;

/// e^{z − m} on float lanes for z ≤ m, m a finite float (a row maximum): relative error < 2^−22
/// (tests/cpu/test_simd_math.cpp), for bfloat16 outputs and double sums. z − m is formed exactly as
/// s + s_lo (TwoSum), so the error does not grow with |z − m| (a rounded s would add up to
/// 2^−24·|z − m|); s = k·ln 2 + r, |r| ≤ ln 2/2 (Cody–Waite: k·ln2_hi is exact, s − k·ln2_hi is
/// exact), r = that + (s_lo − k·ln2_lo); e^r = 1 + r + r²·Q(r), Q the Taylor polynomial of degree 5
/// (truncation < 2^−27 on |r| ≤ ln 2/2); 2^k is one exponent-field add. Lanes with z − m < −86.5
/// (2^k would leave float's normal range) give 0 and are set in `deep`: a caller that needs them
/// (a gradient) redoes them in double. z = −inf gives 0 (not deep), NaN gives NaN.
HWY_INLINE VF32 ExpDifferenceF32(DF32 df, VF32 z, VF32 m, MF32& deep) {
  const hn::RebindToUnsigned<DF32> du;
  const VF32 neg_m = hn::Neg(m);
  const VF32 s = hn::Add(z, neg_m);
  const VF32 bb = hn::Sub(s, z);
  const VF32 s_lo = hn::Add(hn::Sub(z, hn::Sub(s, bb)), hn::Sub(neg_m, bb));  // z − m = s + s_lo exactly
  const VF32 magic = hn::Set(df, 12582912.0f);  // 1.5·2^23: adding it rounds to an integer
  const VF32 t = hn::MulAdd(s, hn::Set(df, 1.44269504088896341f), magic);
  const VF32 k = hn::Sub(t, magic);
  const VF32 r_hi = hn::MulAdd(k, hn::Set(df, -6.93145751953125e-1f), s);  // ln2_hi: 15 bits, k·ln2_hi exact
  const VF32 r = hn::Add(r_hi, hn::MulAdd(k, hn::Set(df, -1.428606765330187045e-6f), s_lo));
  VF32 q = hn::Set(df, 1.0f / 5040.0f);
  q = hn::MulAdd(q, r, hn::Set(df, 1.0f / 720.0f));
  q = hn::MulAdd(q, r, hn::Set(df, 1.0f / 120.0f));
  q = hn::MulAdd(q, r, hn::Set(df, 1.0f / 24.0f));
  q = hn::MulAdd(q, r, hn::Set(df, 1.0f / 6.0f));
  q = hn::MulAdd(q, r, hn::Set(df, 0.5f));
  const VF32 em1 = hn::MulAdd(hn::Mul(r, r), q, r);  // e^r − 1
  const VF32 scale = hn::BitCast(df, hn::Add(hn::ShiftLeft<23>(hn::BitCast(du, t)), hn::Set(du, 127u << 23)));
  const VF32 y = hn::MulAdd(em1, scale, scale);
  const MF32 below = hn::Lt(s, hn::Set(df, -86.5f));
  deep = hn::AndNot(hn::Eq(z, hn::Set(df, -std::numeric_limits<float>::infinity())), below);
  return hn::IfThenZeroElse(below, y);  // NaN z: NaN s, so NaN y
}

/// 16-bit bfloat16 lanes at p as float lanes (exact).
HWY_INLINE VF32 LoadBF16AsF32(DF32 df, const std::uint16_t* p) {
  const hn::RebindToUnsigned<DF32> du;
  const hn::Rebind<std::uint16_t, DF32> d16;
  return hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(d16, p))));
}

/// Float lanes rounded to bfloat16 (nearest even, overflow to ±inf, NaN a quiet NaN), stored at p.
HWY_INLINE void StoreF32AsBF16(DF32 /*df*/, VF32 v, std::uint16_t* p) {
  const hn::RebindToUnsigned<DF32> du;
  const hn::RebindToSigned<DF32> di;
  const hn::Rebind<std::uint16_t, DF32> d16;
  const auto bits = hn::BitCast(du, v);
  const auto hi = hn::ShiftRight<16>(bits);
  const auto rounded = hn::ShiftRight<16>(hn::Add(bits, hn::Add(hn::Set(du, 0x7fffu), hn::And(hi, hn::Set(du, 1u)))));
  const auto out = hn::IfThenElse(hn::RebindMask(du, hn::IsNaN(v)), hn::Or(hi, hn::Set(du, 0x40u)), rounded);
  hn::StoreU(hn::DemoteTo(d16, hn::BitCast(di, out)), d16, p);
}

/// v's float lanes widened to double and added to two double accumulators (lower, upper half; on
/// HWY_SCALAR, one float lane and one double lane, all to `lo`).
HWY_INLINE void AddWidened(DF32 df, VF32 v, VD& lo, VD& hi) {
  const DD d;
  (void)df;
#if HWY_TARGET == HWY_SCALAR
  lo = hn::Add(lo, hn::PromoteTo(d, v));
  (void)hi;
#else
  lo = hn::Add(lo, hn::PromoteTo(d, hn::LowerHalf(hn::Half<DF32>(), v)));
  hi = hn::Add(hi, hn::PromoteTo(d, hn::UpperHalf(hn::Half<DF32>(), v)));
#endif
}

}  // namespace HWY_NAMESPACE
}  // namespace cpu
}  // namespace detail
}  // namespace fusedloss
HWY_AFTER_NAMESPACE();

#endif  // FUSEDLOSS_CPU_SIMD_INL_H_
