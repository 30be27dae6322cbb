// fusedloss — the one definition of every elementwise loss and its derivative.
//
// Each ElementwiseOp<L>::eval(x, y, params, loss, dloss) evaluates l(x, y) and dl/dx for one
// element. The CPU path instantiates it with T = double, the CUDA kernels with T = float; the
// test oracle in tests/oracle is written independently from the formulas, not from this file.
// Reductions, weights, grad_scale and rmse's square root are applied by the callers.
#pragma once

#include "fusedloss/detail/math.hpp"
#include "fusedloss/types.hpp"

namespace fusedloss {
namespace detail {

template <class T>
struct ElementwiseOpParams {
  T delta = T(1);       // huber, pseudo_huber
  T beta = T(1);        // smooth_l1
  T pos_weight = T(1);  // bce_with_logits (per element when a per-column vector is used)
};

template <Loss L>
struct ElementwiseOp;

template <>
struct ElementwiseOp<Loss::MSE> {
  static constexpr bool kHasInvalidInputs = false;
  template <class T>
  FUSEDLOSS_HD static void eval(T x, T y, const ElementwiseOpParams<T>&, T& loss, T& dloss) {
    const T r = x - y;
    loss = r * r;
    dloss = T(2) * r;
  }
};

// rmse accumulates squared residuals exactly like mse; the square root and the 1/(N·L)
// gradient factor need the total and are applied by the backend after the reduction.
template <>
struct ElementwiseOp<Loss::RMSE> : ElementwiseOp<Loss::MSE> {};

template <>
struct ElementwiseOp<Loss::MAE> {
  static constexpr bool kHasInvalidInputs = false;
  template <class T>
  FUSEDLOSS_HD static void eval(T x, T y, const ElementwiseOpParams<T>&, T& loss, T& dloss) {
    using namespace math;
    const T r = x - y;
    loss = abs_(r);
    dloss = sign_(r);
  }
};

template <>
struct ElementwiseOp<Loss::MSLE> {
  static constexpr bool kHasInvalidInputs = false;
  template <class T>
  FUSEDLOSS_HD static void eval(T x, T y, const ElementwiseOpParams<T>&, T& loss, T& dloss) {
    using namespace math;
    // Negative values are clamped to 0 (PyTorch-style log1p of a clamped value), which also
    // keeps log1p away from its pole at -1; the clamp has zero derivative below 0.
    // max_(0, v) keeps a NaN v (0 > NaN is false), so NaN inputs give a NaN loss and gradient.
    const T d = log1p_(max_(T(0), x)) - log1p_(max_(T(0), y));
    loss = d * d;
    dloss = x <= T(0) ? T(0) : T(2) * d / (T(1) + x);
  }
};

template <>
struct ElementwiseOp<Loss::Huber> {
  static constexpr bool kHasInvalidInputs = false;
  template <class T>
  FUSEDLOSS_HD static void eval(T x, T y, const ElementwiseOpParams<T>& p, T& loss, T& dloss) {
    using namespace math;
    // With c = min(|r|, δ) both pieces are one expression: c·(|r| − ½c) is ½r² below δ and
    // δ(|r| − ½δ) above; sign(r)·c is r or δ·sign(r). Branch-free, so random residuals cost
    // no mispredictions on the CPU; a NaN residual fails `a < δ` and stays NaN.
    const T r = x - y;
    const T a = abs_(r);
    const T c = a < p.delta ? a : p.delta;
    loss = c * (a - T(0.5) * c);
    dloss = sign_(r) * c;
  }
};

template <>
struct ElementwiseOp<Loss::SmoothL1> {
  static constexpr bool kHasInvalidInputs = false;
  template <class T>
  FUSEDLOSS_HD static void eval(T x, T y, const ElementwiseOpParams<T>& p, T& loss, T& dloss) {
    using namespace math;
    const T r = x - y;
    const T a = abs_(r);
    if (a < p.beta) {  // never true for beta == 0, so no division by zero: plain L1
      loss = T(0.5) * r * (r / p.beta);  // r/β < 1 here: r² never forms, so no float overflow for huge β
      dloss = r / p.beta;
    } else {
      loss = a - T(0.5) * p.beta;
      dloss = sign_(r);
    }
  }
};

template <>
struct ElementwiseOp<Loss::PseudoHuber> {
  static constexpr bool kHasInvalidInputs = false;
  template <class T>
  FUSEDLOSS_HD static void eval(T x, T y, const ElementwiseOpParams<T>& p, T& loss, T& dloss) {
    using namespace math;
    const T r = x - y;
    const T a = r / p.delta;
    const T h = hypot_(T(1), a);  // sqrt(1 + a²) without overflowing a²
    // δ²(h − 1) = δ²·a²/(h + 1) = (δ·q)·|r| with q = |a|/(h + 1) ∈ [0, 1): no cancellation for small
    // a, and δ·q ≤ δ keeps the product finite whenever the loss is. r/δ can overflow to ±inf in float
    // (tiny δ) or be ±inf (infinite r): then q → 1 and dloss = δ·a/h → δ·sign(r).
    const bool saturated = isinf_(a);
    const T q = saturated ? T(1) : abs_(a) / (h + T(1));
    loss = (p.delta * q) * abs_(r);
    dloss = p.delta * (saturated ? sign_(a) : a / h);
  }
};

template <>
struct ElementwiseOp<Loss::LogCosh> {
  static constexpr bool kHasInvalidInputs = false;
  template <class T>
  FUSEDLOSS_HD static void eval(T x, T y, const ElementwiseOpParams<T>&, T& loss, T& dloss) {
    using namespace math;
    const T r = x - y;
    const T a = abs_(r);
    if (a < T(1)) {
      // cosh r − 1 = m² / (2(1 + m)) with m = e^|r| − 1: accurate where log(cosh r) ≈ r²/2.
      const T m = expm1_(a);
      loss = log1p_(m * m / (T(2) * (T(1) + m)));
    } else {
      // log cosh r = |r| + log1p(e^{−2|r|}) − log 2: no overflow for any finite r.
      loss = a + log1p_(exp_(T(-2) * a)) - T(0.693147180559945309417232121458176568);
    }
    dloss = tanh_(r);
  }
};

template <>
struct ElementwiseOp<Loss::Hinge> {
  static constexpr bool kHasInvalidInputs = false;
  template <class T>
  FUSEDLOSS_HD static void eval(T x, T y, const ElementwiseOpParams<T>&, T& loss, T& dloss) {
    // ±1 (labels may be {0, 1} or {-1, 1}); a NaN label stays NaN instead of reading as −1.
    const T t = y == y ? T(2) * T(y > T(0)) - T(1) : y;
    const T margin = T(1) - t * x;
    // Selects instead of branches (random margins would mispredict on the CPU), and no margin·0
    // product: margin = −inf (|x| = inf on the right side) must give 0, not NaN. NaN propagates.
    const T active = T(margin > T(0));  // 0 at the kink t·x = 1
    loss = margin > T(0) ? margin : (margin == margin ? T(0) : margin);
    dloss = margin == margin ? -t * active : margin;
  }
};

template <>
struct ElementwiseOp<Loss::SquaredHinge> {
  static constexpr bool kHasInvalidInputs = false;
  template <class T>
  FUSEDLOSS_HD static void eval(T x, T y, const ElementwiseOpParams<T>&, T& loss, T& dloss) {
    const T t = y == y ? T(2) * T(y > T(0)) - T(1) : y;
    const T m = T(1) - t * x;
    const T margin = m > T(0) ? m : (m == m ? T(0) : m);  // max(0, m), NaN kept, −inf → 0 (not −inf·0)
    loss = margin * margin;
    dloss = T(-2) * t * margin;
  }
};

template <>
struct ElementwiseOp<Loss::BCE> {
  /// A probability outside [0, 1] (or NaN) is invalid data: the element's loss is NaN, its
  /// gradient 0, and it is counted.
  static constexpr bool kHasInvalidInputs = true;
  template <class T>
  FUSEDLOSS_HD static bool valid(T p) {
    return p >= T(0) && p <= T(1);
  }
  template <class T>
  FUSEDLOSS_HD static void eval(T p, T y, const ElementwiseOpParams<T>&, T& loss, T& dloss) {
    using namespace math;
    // PyTorch clamps the logs at -100 so p ∈ {0, 1} gives a finite loss (and 0·(-100), not 0·inf).
    const T log_p = max_(log_(p), T(-100));
    const T log_1mp = max_(log1p_(-p), T(-100));  // log1p: 1 − p would round p = 1e-8 away in float
    loss = -(y * log_p + (T(1) - y) * log_1mp);
    dloss = (p - y) / max_(p * (T(1) - p), T(1e-12));
  }
};

template <>
struct ElementwiseOp<Loss::BCEWithLogits> {
  static constexpr bool kHasInvalidInputs = false;
  template <class T>
  FUSEDLOSS_HD static void eval(T x, T y, const ElementwiseOpParams<T>& p, T& loss, T& dloss) {
    using namespace math;
    // −log σ(x) = softplus(−x), −log(1 − σ(x)) = softplus(x): finite for any finite x.
    const T pw_y = p.pos_weight * y;
    loss = pw_y * softplus_(-x) + (T(1) - y) * softplus_(x);
    dloss = (pw_y + T(1) - y) * sigmoid_(x) - pw_y;
  }
};

/// Calls f(ElementwiseOp<L>{}) for the runtime loss; the one runtime→template switch for
/// elementwise losses. Returns false for a loss that is not elementwise.
template <class F>
inline bool visit_elementwise_op(Loss loss, F&& f) {
  switch (loss) {
    case Loss::MSE: f(ElementwiseOp<Loss::MSE>{}); return true;
    case Loss::MAE: f(ElementwiseOp<Loss::MAE>{}); return true;
    case Loss::RMSE: f(ElementwiseOp<Loss::RMSE>{}); return true;
    case Loss::MSLE: f(ElementwiseOp<Loss::MSLE>{}); return true;
    case Loss::Huber: f(ElementwiseOp<Loss::Huber>{}); return true;
    case Loss::SmoothL1: f(ElementwiseOp<Loss::SmoothL1>{}); return true;
    case Loss::PseudoHuber: f(ElementwiseOp<Loss::PseudoHuber>{}); return true;
    case Loss::LogCosh: f(ElementwiseOp<Loss::LogCosh>{}); return true;
    case Loss::Hinge: f(ElementwiseOp<Loss::Hinge>{}); return true;
    case Loss::SquaredHinge: f(ElementwiseOp<Loss::SquaredHinge>{}); return true;
    case Loss::BCE: f(ElementwiseOp<Loss::BCE>{}); return true;
    case Loss::BCEWithLogits: f(ElementwiseOp<Loss::BCEWithLogits>{}); return true;
    default: return false;
  }
}

}  // namespace detail
}  // namespace fusedloss
