// fusedloss — scalar math shared by the CPU path (T = double) and the CUDA path (T = float).
//
// The loss definitions are written once, against these overloads, so both backends evaluate
// the same formula; only the precision differs. Device code calls the CUDA math library
// (log1pf, expf, ...), host code <cmath>.
#pragma once

#include <cmath>
#include <cstdint>

#include "fusedloss/float16.hpp"

namespace fusedloss {
namespace detail {
namespace math {

#if defined(__CUDA_ARCH__)
#define FUSEDLOSS_MATH1(name, fexpr, dexpr)                  \
  __device__ inline float name(float x) { return fexpr(x); } \
  __device__ inline double name(double x) { return dexpr(x); }
FUSEDLOSS_MATH1(abs_, ::fabsf, ::fabs)
FUSEDLOSS_MATH1(sqrt_, ::sqrtf, ::sqrt)
FUSEDLOSS_MATH1(exp_, ::expf, ::exp)
FUSEDLOSS_MATH1(log_, ::logf, ::log)
FUSEDLOSS_MATH1(log1p_, ::log1pf, ::log1p)
FUSEDLOSS_MATH1(expm1_, ::expm1f, ::expm1)
FUSEDLOSS_MATH1(tanh_, ::tanhf, ::tanh)
#undef FUSEDLOSS_MATH1
__device__ inline bool isnan_(float x) { return ::isnan(x); }
__device__ inline bool isnan_(double x) { return ::isnan(x); }
__device__ inline bool isinf_(float x) { return ::isinf(x); }
__device__ inline bool isinf_(double x) { return ::isinf(x); }
__device__ inline float hypot_(float a, float b) { return ::hypotf(a, b); }
__device__ inline double hypot_(double a, double b) { return ::hypot(a, b); }
#else
template <class T> inline T abs_(T x) { return std::fabs(x); }
template <class T> inline T sqrt_(T x) { return std::sqrt(x); }
template <class T> inline T exp_(T x) { return std::exp(x); }
template <class T> inline T log_(T x) { return std::log(x); }
template <class T> inline T log1p_(T x) { return std::log1p(x); }
template <class T> inline T expm1_(T x) { return std::expm1(x); }
template <class T> inline T tanh_(T x) { return std::tanh(x); }
template <class T> inline bool isnan_(T x) { return std::isnan(x); }
template <class T> inline bool isinf_(T x) { return std::isinf(x); }
template <class T> inline T hypot_(T a, T b) { return std::hypot(a, b); }
#endif

template <class T> FUSEDLOSS_HD inline T max_(T a, T b) { return a > b ? a : b; }
template <class T> FUSEDLOSS_HD inline T min_(T a, T b) { return a < b ? a : b; }
/// sign with sign(0) = 0; NaN stays NaN so a NaN input gives a NaN gradient, not a silent 0.
/// Written as a select rather than nested branches: random signs would mispredict on the CPU.
template <class T> FUSEDLOSS_HD inline T sign_(T x) {
  const T s = T(x > T(0)) - T(x < T(0));
  return x == x ? s : x;
}

/// softplus(x) = log(1 + e^x) without overflow for large x or loss of precision for very negative x.
template <class T> FUSEDLOSS_HD inline T softplus_(T x) { return max_(x, T(0)) + log1p_(exp_(-abs_(x))); }

/// 1 / (1 + e^-x) that never forms inf/inf.
template <class T> FUSEDLOSS_HD inline T sigmoid_(T x) {
  const T e = exp_(-abs_(x));
  const T s = T(1) / (T(1) + e);
  return x >= T(0) ? s : e * s;
}

}  // namespace math
}  // namespace detail
}  // namespace fusedloss
