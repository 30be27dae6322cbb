// fusedloss CPU path — reading f32/f16/bf16 values as double and writing a double back,
// rounded once (to nearest, ties to even) to the storage dtype.
//
// The dtype is a template parameter (Io<DType>) so the element loops are instantiated once
// per dtype and contain no per-element dispatch; visit_value_dtype() is the one runtime switch.
#pragma once

#include <cmath>
#include <cstdint>

#include "fusedloss/float16.hpp"
#include "fusedloss/types.hpp"

namespace fusedloss {
namespace detail {
namespace cpu {

/// v rounded to float with round-to-odd (truncate, then set the last bit when inexact). A float
/// carries more than twice the precision (+2 bits) of half and bfloat16, so rounding this value
/// to nearest-even in half/bfloat16 gives exactly the correctly rounded double → half/bfloat16
/// result, with no double-rounding error. NaN stays NaN, overflow still reaches ±inf.
inline float double_to_float_round_to_odd(double v) {
  const float f = static_cast<float>(v);
  if (static_cast<double>(f) == v || v != v) return f;  // exact (incl. ±inf, ±0) or NaN
  // One ulp toward zero (sign kept) when f rounded away from zero: a subtraction rather than a
  // branch, since that direction is a coin flip for real data and would mispredict half the time.
  const std::uint32_t u = float_bits(f) - std::uint32_t(std::fabs(static_cast<double>(f)) > std::fabs(v));
  return bits_float(u | 1u);
}

template <DType D>
struct Io;

template <>
struct Io<DType::Float32> {
  using storage = float;
  static double load(const storage* p, std::int64_t i) { return static_cast<double>(p[i]); }
  static void store(storage* p, std::int64_t i, double v) { p[i] = static_cast<float>(v); }
};

template <>
struct Io<DType::Float16> {
  using storage = std::uint16_t;  // half_t bit pattern
  static double load(const storage* p, std::int64_t i) { return static_cast<double>(to_float(half_t{p[i]})); }
  static void store(storage* p, std::int64_t i, double v) {
    p[i] = to_half(double_to_float_round_to_odd(v)).bits;
  }
};

template <>
struct Io<DType::BFloat16> {
  using storage = std::uint16_t;  // bfloat16_t bit pattern
  static double load(const storage* p, std::int64_t i) {
    return static_cast<double>(to_float(bfloat16_t{p[i]}));
  }
  static void store(storage* p, std::int64_t i, double v) {
    p[i] = to_bfloat16(double_to_float_round_to_odd(v)).bits;
  }
};

/// Calls f(Io<D>{}) for a value dtype (Float32/Float16/BFloat16); false for any other dtype.
template <class F>
inline bool visit_value_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32: f(Io<DType::Float32>{}); return true;
    case DType::Float16: f(Io<DType::Float16>{}); return true;
    case DType::BFloat16: f(Io<DType::BFloat16>{}); return true;
    default: return false;
  }
}

/// Class label n of an Int32 or Int64 label vector, as int64.
inline std::int64_t load_label(const void* labels, DType label_dtype, std::int64_t n) {
  return label_dtype == DType::Int32 ? static_cast<std::int64_t>(static_cast<const std::int32_t*>(labels)[n])
                                     : static_cast<const std::int64_t*>(labels)[n];
}

}  // namespace cpu
}  // namespace detail
}  // namespace fusedloss
