// fusedloss — 16-bit float storage types usable from plain C++ (host) code.
//
// The CUDA path reads and writes the same bit patterns as __half / __nv_bfloat16; these types
// exist so host code (the CPU path, tests, tools, callers without a CUDA compiler) can produce
// and consume fp16/bf16 buffers. Conversions round to nearest even, keep NaN a NaN and
// saturate to ±inf exactly like the CUDA intrinsics __float2half_rn / __float2bfloat16_rn.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FUSEDLOSS_HD __host__ __device__
#else
#define FUSEDLOSS_HD
#endif

namespace fusedloss {

struct half_t {
  std::uint16_t bits;
};
struct bfloat16_t {
  std::uint16_t bits;
};

namespace detail {
FUSEDLOSS_HD inline std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
FUSEDLOSS_HD inline float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
}  // namespace detail

FUSEDLOSS_HD inline float to_float(bfloat16_t v) { return detail::bits_float(std::uint32_t(v.bits) << 16); }

FUSEDLOSS_HD inline bfloat16_t to_bfloat16(float f) {
  std::uint32_t u = detail::float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bfloat16_t{std::uint16_t((u >> 16) | 0x40u)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even (overflows to inf correctly)
  return bfloat16_t{std::uint16_t(u >> 16)};
}

FUSEDLOSS_HD inline float to_float(half_t v) {
  const std::uint32_t sign = std::uint32_t(v.bits & 0x8000u) << 16;
  const std::uint32_t exp = (v.bits >> 10) & 0x1fu;
  std::uint32_t mant = v.bits & 0x3ffu;
  if (exp == 0x1fu) return detail::bits_float(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  if (exp != 0) return detail::bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return detail::bits_float(sign);
  // Subnormal half: normalise into a float.
  int e = -1;
  do {
    ++e;
    mant <<= 1;
  } while ((mant & 0x400u) == 0);
  return detail::bits_float(sign | std::uint32_t(112 - e) << 23 | ((mant & 0x3ffu) << 13));
}

FUSEDLOSS_HD inline half_t to_half(float f) {
  const std::uint32_t u = detail::float_bits(f);
  const std::uint16_t sign = std::uint16_t((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return half_t{std::uint16_t(sign | 0x7e00u)};  // NaN
  if (a >= 0x477ff000u) return half_t{std::uint16_t(sign | 0x7c00u)};  // rounds to >= 65520: inf
  if (a < 0x38800000u) {
    // Result is subnormal (or zero) in half: scale into an integer count of 2^-24 units.
    if (a < 0x33000000u) return half_t{sign};  // below half of the smallest subnormal
    const std::uint32_t exp = a >> 23;
    const std::uint32_t mant = (a & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126u - exp;  // 14..24 for this range
    std::uint32_t q = mant >> shift;
    const std::uint32_t rem = mant & ((1u << shift) - 1u);
    const std::uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (q & 1u))) ++q;
    return half_t{std::uint16_t(sign | q)};
  }
  std::uint32_t r = a - 0x38000000u;  // rebias exponent 127 → 15 (in place, mantissa kept)
  r += 0xfffu + ((r >> 13) & 1u);     // round to nearest even on the 13 dropped bits
  return half_t{std::uint16_t(sign | (r >> 13))};
}

}  // namespace fusedloss
