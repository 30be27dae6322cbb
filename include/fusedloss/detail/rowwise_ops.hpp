// fusedloss — the one definition of the row-wise loss algebra, shared by the CPU path
// (T = double) and the CUDA kernels (T = float).
//
// A row-wise loss is computed from a few per-row statistics (max, Σexp, the target logit,
// weighted sums); these helpers turn those statistics into the row's loss and each column's
// gradient, so the two backends only differ in how they gather the statistics.
//
// Notation for cross_entropy over a row z[0..C) (after the optional softcap):
//   lse = log Σ_c e^{z_c},  p_c = e^{z_c − lse},  W = Σ_c w_c,  ε = label_smoothing,  s = z_loss
//   ℓ = (1−ε)·w_y·(lse − z_y) + (ε/C)·(W·lse − Σ_c w_c z_c) + s·lse²
//   ∂ℓ/∂z_c = p_c·[(1−ε)·w_y + ε·W/C + 2·s·lse] − (1−ε)·w_y·[c = y] − ε·w_c/C
// With soft targets t'_c = (1−ε)·t_c + ε/C and S = Σ_c w_c t'_c:
//   ℓ = S·lse − Σ_c w_c t'_c z_c + s·lse²,   ∂ℓ/∂z_c = p_c·(S + 2·s·lse) − w_c t'_c
// Terms whose coefficient is zero are skipped by the callers (never 0·inf with −inf logits).
#pragma once

#include "fusedloss/detail/math.hpp"

namespace fusedloss {
namespace detail {

/// Softcap: z ↦ k·tanh(z/k) for k > 0 (identity for k = 0).
template <class T>
FUSEDLOSS_HD inline T softcap_value(T z, T k) {
  return k > T(0) ? k * math::tanh_(z / k) : z;
}
/// d(k·tanh(z/k))/dz expressed through the capped value c = k·tanh(z/k): 1 − (c/k)².
template <class T>
FUSEDLOSS_HD inline T softcap_derivative(T capped, T k) {
  if (!(k > T(0))) return T(1);
  const T t = capped / k;
  return T(1) - t * t;
}

/// Per-row coefficients of the sparse cross_entropy gradient: grad_c = p_c·a − b·[c = y] − e·w_c.
template <class T>
struct SparseCeGradCoeffs {
  T a;  // multiplies softmax p_c
  T b;  // subtracted at the target column
  T e;  // times w_c, subtracted everywhere (label smoothing)
};

template <class T>
FUSEDLOSS_HD inline SparseCeGradCoeffs<T> sparse_ce_grad_coeffs(T w_y, T weight_sum, T eps, T inv_c,
                                                                 T z_loss, T lse) {
  SparseCeGradCoeffs<T> k;
  k.b = (T(1) - eps) * w_y;
  k.e = eps * inv_c;
  k.a = k.b + k.e * weight_sum + (z_loss > T(0) ? T(2) * z_loss * lse : T(0));
  return k;
}

/// Every coefficient of the sparse gradient is 0 (target weight 0, no smoothing, no z-loss): the
/// row's gradient is exactly 0 — even for a NaN or ±inf row, whose softmax is never formed.
template <class T>
FUSEDLOSS_HD inline bool sparse_ce_grad_is_zero(T w_y, T eps, T z_loss) {
  return (T(1) - eps) * w_y == T(0) && !(eps > T(0)) && !(z_loss > T(0));
}

/// Row loss of sparse cross_entropy. sum_wz = Σ_c w_c z_c (only read when eps > 0).
template <class T>
FUSEDLOSS_HD inline T sparse_ce_row_loss(T lse, T z_y, T w_y, T weight_sum, T sum_wz, T eps, T inv_c,
                                         T z_loss) {
  // A zero coefficient (w_y = 0 or eps = 1) contributes exactly 0, even for z_y = −inf.
  const T target_coeff = (T(1) - eps) * w_y;
  T loss = target_coeff != T(0) ? target_coeff * (lse - z_y) : T(0);
  if (eps > T(0)) loss += eps * inv_c * (weight_sum * lse - sum_wz);
  if (z_loss > T(0)) loss += z_loss * lse * lse;
  return loss;
}

/// Smoothed soft target t' = (1−ε)·t + ε/C.
template <class T>
FUSEDLOSS_HD inline T smoothed_target(T t, T eps, T inv_c) {
  return eps > T(0) ? (T(1) - eps) * t + eps * inv_c : t;
}

/// KL divergence element: xlogy(p, p) − p·q, or e^t·(t − q) for a log-space target. The
/// derivative with respect to q is −p (−e^t); returned through dq. Where the target
/// probability is 0 the element is exactly 0 even when q = −inf (a masked class); PyTorch
/// forms 0·(−inf) = NaN there. A negative target gives NaN through log, as in PyTorch.
template <class T>
FUSEDLOSS_HD inline T kl_div_element(T q, T target, bool log_target, T& dq) {
  using namespace math;
  const T p = log_target ? exp_(target) : target;
  dq = -p;
  if (p == T(0)) return T(0);
  const T log_p = log_target ? target : log_(target);
  return p * (log_p - q);
}

}  // namespace detail
}  // namespace fusedloss
