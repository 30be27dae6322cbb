// tests/oracle/oracle.hpp — an independent, naive reference ("oracle") for every fusedloss loss.
//
// Purpose: the library's CPU and GPU paths are checked against this file. It is written straight from the
// loss contract (issue 2, "Loss contract") and deliberately shares NO code with the library: it includes only
// the C++ standard library, never a fusedloss header, and uses its own formulas. If the library and this file
// agree, two independent readings of the contract agree.
//
// Design rules:
//   * Naive and obviously right beats fast: plain loops, one element / one row at a time.
//   * All internal arithmetic is `long double` (80-bit on x86-64). Inputs are double, outputs are double, so
//     the oracle carries more precision than the library's double accumulation and its own rounding is not
//     what a comparison tolerance ends up measuring.
//   * softmax / logsumexp are max-shifted, so large logits (±1e4) never overflow.
//   * "Never form 0·inf": in the row-wise losses a term whose (structural) coefficient is exactly zero
//     contributes exactly 0 — e.g. the smoothing term when ε = 0, the z-loss when s = 0, a soft-target class
//     with t' = 0, a KL element with p = 0 (or exp(t) = 0). That is what lets a −inf non-target logit give a
//     finite loss and a zero gradient. Element weights of the elementwise losses are plain multiplications.
//   * Invalid *arguments* (size mismatch, an unknown loss name, BatchMean outside KL, rmse without Mean,
//     out-of-range options) throw std::invalid_argument: the oracle is for tests, which never call it that way.
//     Invalid *data* (a BCE probability outside [0,1] or NaN; a label outside [0,C) that is not ignore_index)
//     is counted in Result::bad and isolated to its element / row, as the contract requires of the library.
//   * NaN policy for the elementwise losses: a NaN prediction or target gives NaN loss and NaN gradient for
//     that element only (BCE: a NaN probability is "bad" instead: NaN loss, 0 gradient). For the row-wise
//     losses a NaN logit propagates naturally through logsumexp to that row's loss and gradient only.
//
// Gradient convention: Result::grad is d(reduced loss)/d(input) · grad_scale. For Red::None the gradient is the
// per-element (per-row) derivative with an upstream gradient of ones, i.e. the same as for Red::Sum.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace oracle {

enum class Red { None, Mean, Sum, BatchMean };

struct Result {
  // Red::None: per element (elementwise losses), per row (cross_entropy, cross_entropy_soft, nll,
  // kl_div_logits), or per element [N*C] for kl_div. Any other reduction: exactly one value.
  std::vector<double> loss;
  // Same length as the input x / logits (N or N*C, dense row-major, no stride).
  std::vector<double> grad;
  // cross_entropy and cross_entropy_soft only: logsumexp of each row of the (softcapped) logits, for every row,
  // ignored and bad-label rows included. Empty for every other loss.
  std::vector<double> lse;
  // Number of data-dependent invalid values: BCE p outside [0,1] or NaN; labels outside [0,C) that are not
  // ignore_index.
  int64_t bad = 0;
  // msle, cross_entropy (sparse, soft), kl_div and kl_div_logits (empty for the others; msle: see
  // elementwise()): for each value of `loss`,
  // the sum of the absolute values of the terms it is a difference of (coef·lse and coef·z' of each −log p;
  // p·log p and p·q; T²·p times the logits and logsumexps that make log p − log q; the z-loss), reduced
  // like the loss. A computation's rounding
  // error is relative to these, not to the (possibly tiny) loss: a confidently right row's lse − z_y, a KL
  // of two close distributions.
  std::vector<double> loss_terms;
};

struct ElemParams {
  double delta = 1;       // huber, pseudo_huber (> 0)
  double beta = 1;        // smooth_l1 (>= 0; 0 means L1)
  double pos_weight = 1;  // bce_with_logits scalar pos_weight (> 0)
  // bce_with_logits per-column pos_weight: if non-empty, element i uses pos_weight_col[i % size()] (the data is
  // an [N, C] row-major multi-label matrix with C = size()); overrides pos_weight.
  std::vector<double> pos_weight_col;
  double grad_scale = 1;
};

struct RowParams {
  int64_t ignore_index = -100;       // cross_entropy, nll
  std::vector<double> class_weight;  // cross_entropy(_soft), nll; empty = all ones, else length C
  double label_smoothing = 0;        // cross_entropy(_soft), in [0, 1]
  double z_loss = 0;                 // cross_entropy(_soft), >= 0
  double softcap = 0;                // cross_entropy(_soft), >= 0, 0 = off
  bool log_target = false;           // kl_div
  double temperature = 1;            // kl_div_logits, > 0
  double grad_scale = 1;
};

namespace detail {

using real = long double;

inline real qnan() { return std::numeric_limits<real>::quiet_NaN(); }

inline void require(bool ok, const char* what) {
  if (!ok) throw std::invalid_argument(std::string("oracle: ") + what);
}

// sign with sign(0) = 0 (the contract's subgradient choice) and NaN propagated.
inline real sign(real v) {
  if (std::isnan(v)) return v;
  return static_cast<real>((v > 0) - (v < 0));
}

// coef·v, but exactly 0 when coef == 0 even if v is ±inf/NaN (see "never form 0·inf" above).
inline real times(real coef, real v) { return coef == 0 ? real(0) : coef * v; }

// softplus(z) = log(1 + e^z) in the overflow-free form max(z,0) + log1p(e^{-|z|}).
inline real softplus(real z) {
  if (std::isnan(z)) return z;
  return (z > 0 ? z : real(0)) + std::log1p(std::exp(-std::fabs(z)));
}

// logistic sigmoid, evaluated so that exp never overflows.
inline real sigmoid(real x) {
  if (x >= 0) return 1 / (1 + std::exp(-x));
  const real e = std::exp(x);
  return e / (1 + e);
}

// log(cosh(r)) without overflow and without cancellation near 0:
//   |r| <= 1 : cosh r = 1 + 2 sinh²(r/2)  →  log1p(2 sinh²(r/2))         (accurate for tiny r)
//   |r| >  1 : log cosh r = |r| + log1p(e^{-2|r|}) − log 2               (never overflows)
inline real log_cosh(real r) {
  const real a = std::fabs(r);
  if (a <= 1) {
    const real s = std::sinh(r / 2);
    return std::log1p(2 * s * s);
  }
  return a + std::log1p(std::exp(-2 * a)) - std::log(real(2));
}

// logsumexp of z[0..C), max-shifted. NaN entries are skipped when finding the max so that they reach the sum
// and make the result NaN (rather than being hidden by std::max's comparison semantics).
inline real logsumexp(const real* z, int64_t C) {
  real m = -std::numeric_limits<real>::infinity();
  for (int64_t c = 0; c < C; ++c)
    if (z[c] > m) m = z[c];
  if (std::isinf(m)) {
    // all −inf → −inf (every term is e^{-inf} = 0); a +inf entry → +inf. Avoids inf − inf = NaN.
    bool any_nan = false;
    for (int64_t c = 0; c < C; ++c) any_nan = any_nan || std::isnan(z[c]);
    return any_nan ? qnan() : m;
  }
  real s = 0;
  for (int64_t c = 0; c < C; ++c) s += std::exp(z[c] - m);
  return m + std::log(s);
}

// p_c = e^{z_c − lse}. A row holding +inf has lse = +inf and no defined probabilities (inf/inf):
// every p_c is NaN, as PyTorch's softmax gives, so the row's gradient is NaN throughout.
inline real softmax_p(real z, real lse) {
  return lse == std::numeric_limits<real>::infinity() ? qnan() : std::exp(z - lse);
}

enum class Elem {
  mse, mae, rmse, msle, huber, smooth_l1, pseudo_huber, log_cosh, hinge, squared_hinge, bce, bce_with_logits
};

inline Elem parse_elem(const std::string& s) {
  if (s == "mse") return Elem::mse;
  if (s == "mae" || s == "l1") return Elem::mae;
  if (s == "rmse") return Elem::rmse;
  if (s == "msle") return Elem::msle;
  if (s == "huber") return Elem::huber;
  if (s == "smooth_l1") return Elem::smooth_l1;
  if (s == "pseudo_huber") return Elem::pseudo_huber;
  if (s == "log_cosh") return Elem::log_cosh;
  if (s == "hinge") return Elem::hinge;
  if (s == "squared_hinge") return Elem::squared_hinge;
  if (s == "bce") return Elem::bce;
  if (s == "bce_with_logits") return Elem::bce_with_logits;
  throw std::invalid_argument("oracle: unknown elementwise loss '" + s + "'");
}

// One element: unweighted loss l and its derivative d = ∂l/∂x, straight from the contract.
// Returns false (and sets l = NaN, d = 0) for a bad BCE probability.
inline bool elem_point(Elem k, real x, real y, real pw, const ElemParams& p, real& l, real& d) {
  if (k == Elem::bce && (std::isnan(x) || x < 0 || x > 1)) {
    l = qnan();
    d = 0;
    return false;
  }
  if (std::isnan(x) || std::isnan(y)) {  // NaN in → NaN out, for this element only
    l = d = qnan();
    return true;
  }
  const real r = x - y;
  switch (k) {
    case Elem::mse:
    case Elem::rmse:  // rmse uses r² here; its reduction is handled by the caller
      l = r * r;
      d = 2 * r;
      break;
    case Elem::mae:
      l = std::fabs(r);
      d = sign(r);
      break;
    case Elem::msle: {
      const real lx = std::log1p(x > 0 ? x : real(0));
      const real ly = std::log1p(y > 0 ? y : real(0));
      l = (lx - ly) * (lx - ly);
      d = x > 0 ? 2 * (std::log1p(x) - ly) / (1 + x) : real(0);
      break;
    }
    case Elem::huber: {
      const real delta = p.delta;
      if (std::fabs(r) < delta) {
        l = r * r / 2;
        d = r;
      } else {
        l = delta * (std::fabs(r) - delta / 2);
        d = delta * sign(r);
      }
      break;
    }
    case Elem::smooth_l1: {
      const real beta = p.beta;
      if (std::fabs(r) < beta) {  // never true for beta = 0, so beta = 0 is exactly L1 (no division by 0)
        l = r * r / (2 * beta);
        d = r / beta;
      } else {
        l = std::fabs(r) - beta / 2;
        d = sign(r);
      }
      break;
    }
    case Elem::pseudo_huber: {
      // δ²(sqrt(1+a²) − 1) with a = r/δ, rewritten as δ²·a²/(h+1) = δ|r|·|a|/(h+1), h = hypot(1, a):
      // no cancellation for small r, no overflow of a² for huge r (|a|/(h+1) < 1).
      const real delta = p.delta;
      if (std::isinf(r)) {
        l = std::numeric_limits<real>::infinity();
        d = delta * sign(r);  // limit of r/sqrt(1+(r/δ)²)
        break;
      }
      const real a = r / delta;
      const real h = std::hypot(real(1), a);
      l = delta * std::fabs(r) * (std::fabs(a) / (h + 1));
      d = r / h;
      break;
    }
    case Elem::log_cosh:
      l = log_cosh(r);
      d = std::tanh(r);
      break;
    case Elem::hinge: {
      const real t = y > 0 ? 1 : -1;
      const real m = 1 - t * x;
      l = m > 0 ? m : real(0);
      d = t * x < 1 ? -t : real(0);
      break;
    }
    case Elem::squared_hinge: {
      const real t = y > 0 ? 1 : -1;
      const real m = 1 - t * x;
      const real mp = m > 0 ? m : real(0);
      l = mp * mp;
      d = -2 * t * mp;
      break;
    }
    case Elem::bce: {
      // −(y·max(log p, −100) + (1−y)·max(log(1−p), −100)); log1p(−p) is log(1−p) without rounding 1−p.
      const real lp = std::max(std::log(x), real(-100));
      const real l1p = std::max(std::log1p(-x), real(-100));
      l = -(y * lp + (1 - y) * l1p);
      d = (x - y) / std::max(x * (1 - x), real(1e-12));
      break;
    }
    case Elem::bce_with_logits:
      // −log σ(x) = softplus(−x), −log(1 − σ(x)) = softplus(x): finite for |x| = 1e4.
      l = pw * y * softplus(-x) + (1 - y) * softplus(x);
      d = (pw * y + 1 - y) * sigmoid(x) - pw * y;
      break;
  }
  return true;
}

inline void check_rows(int64_t N, int64_t C, std::size_t in_size, std::size_t second_size,
                       std::size_t second_expected, const RowParams& p) {
  require(N >= 0, "N must be >= 0");
  require(C >= 1, "C must be >= 1");
  require(in_size == static_cast<std::size_t>(N * C), "input size must be N*C");
  require(second_size == second_expected, "second input has the wrong size");
  require(p.class_weight.empty() || p.class_weight.size() == static_cast<std::size_t>(C),
          "class_weight must be empty or length C");
  require(p.label_smoothing >= 0 && p.label_smoothing <= 1, "label_smoothing must be in [0,1]");
  require(p.z_loss >= 0, "z_loss must be >= 0");
  require(p.softcap >= 0, "softcap must be >= 0");
  require(p.temperature > 0, "temperature must be > 0");
}

inline real class_w(const RowParams& p, int64_t c) {
  return p.class_weight.empty() ? real(1) : real(p.class_weight[static_cast<std::size_t>(c)]);
}

// Row n of the logits after the optional softcap, plus the chain factor dz'/dz for each entry:
//   z' = k·tanh(z/k),  dz'/dz = 1 − tanh²(z/k) = 1/cosh²(z/k)   (the cosh form keeps precision for large |z|/k
//   and is exactly 0 at z = ±inf, where cosh overflows to inf).
inline void load_row(const std::vector<double>& logits, int64_t n, int64_t C, real softcap, std::vector<real>& z,
                     std::vector<real>& chain) {
  for (int64_t c = 0; c < C; ++c) {
    const real v = logits[static_cast<std::size_t>(n * C + c)];
    if (softcap > 0) {
      z[c] = softcap * std::tanh(v / softcap);
      const real ch = std::cosh(v / softcap);
      chain[c] = 1 / (ch * ch);
    } else {
      z[c] = v;
      chain[c] = 1;
    }
  }
}

// The sparse-label bookkeeping shared by cross_entropy and nll: the mean divisor Σ_{valid, non-ignored} w[y_n].
inline real label_divisor(int64_t N, int64_t C, const std::vector<int64_t>& labels, const RowParams& p) {
  real div = 0;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t y = labels[static_cast<std::size_t>(n)];
    if (y == p.ignore_index || y < 0 || y >= C) continue;
    div += class_w(p, y);
  }
  return div;
}

// Turn per-item losses into Result::loss for the given reduction (divisor already chosen by the caller).
inline void reduce_into(Result& res, const std::vector<real>& items, Red red, real divisor) {
  if (red == Red::None) {
    res.loss.assign(items.begin(), items.end());
    return;
  }
  real s = 0;
  for (real v : items) s += v;
  res.loss.assign(1, static_cast<double>(red == Red::Sum ? s : s / divisor));
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------------------------
// Elementwise losses. `none` → w_i·ℓ_i; `sum` → Σ w_i ℓ_i; `mean` → Σ w_i ℓ_i / N (numel, not Σw).
// rmse: Mean only, L = sqrt(Σ w_i r_i² / N), ∂_i = w_i r_i / (N·L), 0 when L = 0.
// N = 0: sum → 0, mean → NaN (0/0), none → empty.
// ---------------------------------------------------------------------------------------------------------------
inline Result elementwise(const std::string& loss, const std::vector<double>& x, const std::vector<double>& y,
                          const std::vector<double>& w, Red red, const ElemParams& p = {}) {
  using detail::real;
  using detail::require;
  const detail::Elem k = detail::parse_elem(loss);
  const std::size_t N = x.size();
  require(y.size() == N, "y must have the same length as x");
  require(w.empty() || w.size() == N, "w must be empty or the same length as x");
  require(red != Red::BatchMean, "BatchMean is only valid for kl_div / kl_div_logits");
  require(k != detail::Elem::rmse || red == Red::Mean, "rmse supports only Red::Mean");
  if (k == detail::Elem::huber || k == detail::Elem::pseudo_huber) require(p.delta > 0, "delta must be > 0");
  if (k == detail::Elem::smooth_l1) require(p.beta >= 0, "beta must be >= 0");
  if (k == detail::Elem::bce_with_logits) {
    require(p.pos_weight > 0, "pos_weight must be > 0");
    for (double v : p.pos_weight_col) require(v > 0, "pos_weight_col entries must be > 0");
  }

  Result res;
  res.grad.assign(N, 0.0);
  std::vector<real> wl(N);  // w_i·ℓ_i
  std::vector<real> wd(N);  // w_i·∂ℓ_i/∂x_i
  // msle: ℓ = (a − b)², a = log1p(x), b = log1p(y). A relative rounding of a and b moves ℓ by up to
  // 2|a − b|·(|a| + |b|) relative to it: its scale, for loss_terms.
  std::vector<real> terms(k == detail::Elem::msle ? N : 0);
  for (std::size_t i = 0; i < N; ++i) {
    const real wi = w.empty() ? real(1) : real(w[i]);
    const real pw = p.pos_weight_col.empty() ? real(p.pos_weight)
                                             : real(p.pos_weight_col[i % p.pos_weight_col.size()]);
    real l = 0, d = 0;
    if (!detail::elem_point(k, x[i], y[i], pw, p, l, d)) {
      ++res.bad;
      wl[i] = l;  // NaN whatever the weight: a bad value must stay visible
      wd[i] = 0;
      continue;
    }
    wl[i] = wi * l;
    wd[i] = wi * d;
    if (k == detail::Elem::msle) {
      const real a = std::log1p(x[i] > 0 ? real(x[i]) : real(0)), b = std::log1p(y[i] > 0 ? real(y[i]) : real(0));
      terms[i] = std::fabs(wi) * 2 * std::fabs(a - b) * (std::fabs(a) + std::fabs(b));
    }
  }

  const real scale = p.grad_scale;
  if (k == detail::Elem::rmse) {
    // wl holds w_i·r_i²; L = sqrt(Σ/N); ∂L/∂x_i = w_i·2r_i/(2N·L) = (w_i·2r_i)/(2·N·L).
    real s = 0;
    for (real v : wl) s += v;
    const real L = std::sqrt(s / static_cast<real>(N));  // N = 0 → sqrt(0/0) = NaN
    res.loss.assign(1, static_cast<double>(L));
    for (std::size_t i = 0; i < N; ++i)
      res.grad[i] = (L == 0) ? 0.0 : static_cast<double>(scale * wd[i] / (2 * static_cast<real>(N) * L));
    return res;
  }

  const real div = (red == Red::Mean) ? static_cast<real>(N) : real(1);
  if (!terms.empty()) {
    Result scale;
    detail::reduce_into(scale, terms, red, div);
    res.loss_terms = scale.loss;
  }
  detail::reduce_into(res, wl, red, div);
  for (std::size_t i = 0; i < N; ++i) res.grad[i] = static_cast<double>(scale * wd[i] / div);
  return res;
}

// ---------------------------------------------------------------------------------------------------------------
// cross_entropy with integer labels.
//   z' = k·tanh(z/k) if softcap k > 0 else z;  lse = logsumexp(z');  logp = z' − lse;  P = softmax(z').
//   ℓ_n = (1−ε)·w[y]·(−logp[y]) + (ε/C)·Σ_c w[c]·(−logp[c]) + s·lse²
//   ∂ℓ_n/∂z'_j = (1−ε)·w[y]·(P_j − [j=y]) + (ε/C)·(W·P_j − w[j]) + 2s·lse·P_j,   W = Σ_c w[c]
//   ∂ℓ_n/∂z_j  = ∂ℓ_n/∂z'_j · dz'_j/dz_j.
// Ignored row: ℓ = 0, gradient 0. Bad label: ℓ = NaN, gradient 0, bad++, not in the divisor.
// mean = Σ ℓ_n / Σ_{valid non-ignored} w[y_n]; divisor 0 → loss NaN and all-zero gradient.
// ---------------------------------------------------------------------------------------------------------------
inline Result cross_entropy(int64_t N, int64_t C, const std::vector<double>& logits,
                            const std::vector<int64_t>& labels, Red red, const RowParams& p = {}) {
  using detail::real;
  detail::check_rows(N, C, logits.size(), labels.size(), static_cast<std::size_t>(N), p);
  detail::require(red != Red::BatchMean, "BatchMean is only valid for kl_div / kl_div_logits");

  const real eps = p.label_smoothing, zl = p.z_loss, k = p.softcap;
  real W = 0;  // Σ_c w[c], used by the smoothing gradient
  for (int64_t c = 0; c < C; ++c) W += detail::class_w(p, c);

  const real divisor = detail::label_divisor(N, C, labels, p);
  const bool zero_div_mean = (red == Red::Mean && divisor == 0);
  const real factor = real(p.grad_scale) / (red == Red::Mean ? divisor : real(1));

  Result res;
  res.grad.assign(static_cast<std::size_t>(N * C), 0.0);
  res.lse.assign(static_cast<std::size_t>(N), 0.0);
  std::vector<real> rowloss(static_cast<std::size_t>(N), 0), rowterms(static_cast<std::size_t>(N), 0);
  std::vector<real> z(static_cast<std::size_t>(C)), chain(static_cast<std::size_t>(C));

  for (int64_t n = 0; n < N; ++n) {
    detail::load_row(logits, n, C, k, z, chain);
    const real lse = detail::logsumexp(z.data(), C);
    res.lse[static_cast<std::size_t>(n)] = static_cast<double>(lse);

    const int64_t y = labels[static_cast<std::size_t>(n)];
    if (y == p.ignore_index) continue;  // loss 0, gradient row 0
    if (y < 0 || y >= C) {              // bad label: isolated to this row
      ++res.bad;
      rowloss[static_cast<std::size_t>(n)] = detail::qnan();
      continue;
    }

    const real a = (1 - eps) * detail::class_w(p, y);  // coefficient of the target term
    real l = detail::times(a, -(z[y] - lse));
    real terms = detail::times(a, std::fabs(z[y]) + std::fabs(lse));
    if (eps != 0)
      for (int64_t c = 0; c < C; ++c) {
        l += detail::times(eps / C * detail::class_w(p, c), -(z[c] - lse));
        terms += detail::times(eps / C * detail::class_w(p, c), std::fabs(z[c]) + std::fabs(lse));
      }
    if (zl != 0) l += zl * lse * lse;
    if (zl != 0) terms += zl * lse * lse;
    rowloss[static_cast<std::size_t>(n)] = l;
    rowterms[static_cast<std::size_t>(n)] = terms;

    if (zero_div_mean) continue;  // gradient stays all zeros
    for (int64_t c = 0; c < C; ++c) {
      const real P = detail::softmax_p(z[c], lse);
      real g = 0;
      if (a != 0) g += a * (P - (c == y ? 1 : 0));
      if (eps != 0) g += eps / C * (W * P - detail::class_w(p, c));
      if (zl != 0) g += 2 * zl * lse * P;
      res.grad[static_cast<std::size_t>(n * C + c)] = static_cast<double>(g * chain[c] * factor);
    }
  }

  if (zero_div_mean) {
    res.loss.assign(1, std::numeric_limits<double>::quiet_NaN());
    return res;
  }
  Result scale;
  detail::reduce_into(scale, rowterms, red, divisor);
  res.loss_terms = scale.loss;
  detail::reduce_into(res, rowloss, red, divisor);
  return res;
}

// ---------------------------------------------------------------------------------------------------------------
// cross_entropy with dense (soft) targets t[n, c].
//   t' = (1−ε)·t + ε/C;  ℓ_n = −Σ_c w[c]·t'[c]·logp[c] + s·lse²   (terms with w[c]·t'[c] = 0 are 0)
//   ∂ℓ_n/∂z'_j = (Σ_c w[c]t'[c])·P_j − w[j]·t'[j] + 2s·lse·P_j;  softcap chained as for sparse CE.
// mean divides by N. No ignore_index, no bad values.
// ---------------------------------------------------------------------------------------------------------------
inline Result cross_entropy_soft(int64_t N, int64_t C, const std::vector<double>& logits,
                                 const std::vector<double>& target_probs, Red red, const RowParams& p = {}) {
  using detail::real;
  detail::check_rows(N, C, logits.size(), target_probs.size(), static_cast<std::size_t>(N * C), p);
  detail::require(red != Red::BatchMean, "BatchMean is only valid for kl_div / kl_div_logits");

  const real eps = p.label_smoothing, zl = p.z_loss, k = p.softcap;
  const real divisor = (red == Red::Mean) ? static_cast<real>(N) : real(1);
  const real factor = real(p.grad_scale) / divisor;

  Result res;
  res.grad.assign(static_cast<std::size_t>(N * C), 0.0);
  res.lse.assign(static_cast<std::size_t>(N), 0.0);
  std::vector<real> rowloss(static_cast<std::size_t>(N), 0), rowterms(static_cast<std::size_t>(N), 0);
  std::vector<real> z(static_cast<std::size_t>(C)), chain(static_cast<std::size_t>(C)),
      wt(static_cast<std::size_t>(C));

  for (int64_t n = 0; n < N; ++n) {
    detail::load_row(logits, n, C, k, z, chain);
    const real lse = detail::logsumexp(z.data(), C);
    res.lse[static_cast<std::size_t>(n)] = static_cast<double>(lse);

    real l = 0, WT = 0, terms = 0;
    for (int64_t c = 0; c < C; ++c) {
      // ε == 0 keeps t' exactly t (no rounding through (1−0)·t + 0).
      const real t = target_probs[static_cast<std::size_t>(n * C + c)];
      const real tp = (eps == 0) ? t : (1 - eps) * t + eps / C;
      wt[c] = detail::class_w(p, c) * tp;
      l += detail::times(wt[c], -(z[c] - lse));
      terms += detail::times(std::fabs(wt[c]), std::fabs(z[c]) + std::fabs(lse));
      WT += wt[c];
    }
    if (zl != 0) l += zl * lse * lse;
    if (zl != 0) terms += zl * lse * lse;
    rowloss[static_cast<std::size_t>(n)] = l;
    rowterms[static_cast<std::size_t>(n)] = terms;

    for (int64_t c = 0; c < C; ++c) {
      const real P = detail::softmax_p(z[c], lse);
      real g = WT * P - wt[c];
      if (zl != 0) g += 2 * zl * lse * P;
      res.grad[static_cast<std::size_t>(n * C + c)] = static_cast<double>(g * chain[c] * factor);
    }
  }
  Result scale;
  detail::reduce_into(scale, rowterms, red, divisor);
  res.loss_terms = scale.loss;
  detail::reduce_into(res, rowloss, red, divisor);
  return res;
}

// ---------------------------------------------------------------------------------------------------------------
// nll: input already log-probabilities x[n, c]. ℓ_n = −w[y]·x[n, y]; ∂ = −w[y]/divisor at column y, else 0.
// ignore_index, bad labels and the mean divisor exactly as for cross_entropy.
// ---------------------------------------------------------------------------------------------------------------
inline Result nll(int64_t N, int64_t C, const std::vector<double>& logprobs, const std::vector<int64_t>& labels,
                  Red red, const RowParams& p = {}) {
  using detail::real;
  detail::check_rows(N, C, logprobs.size(), labels.size(), static_cast<std::size_t>(N), p);
  detail::require(red != Red::BatchMean, "BatchMean is only valid for kl_div / kl_div_logits");

  const real divisor = detail::label_divisor(N, C, labels, p);
  const bool zero_div_mean = (red == Red::Mean && divisor == 0);
  const real factor = real(p.grad_scale) / (red == Red::Mean ? divisor : real(1));

  Result res;
  res.grad.assign(static_cast<std::size_t>(N * C), 0.0);
  std::vector<real> rowloss(static_cast<std::size_t>(N), 0);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t y = labels[static_cast<std::size_t>(n)];
    if (y == p.ignore_index) continue;
    if (y < 0 || y >= C) {
      ++res.bad;
      rowloss[static_cast<std::size_t>(n)] = detail::qnan();
      continue;
    }
    const real wy = detail::class_w(p, y);
    rowloss[static_cast<std::size_t>(n)] = detail::times(wy, -real(logprobs[static_cast<std::size_t>(n * C + y)]));
    if (!zero_div_mean) res.grad[static_cast<std::size_t>(n * C + y)] = static_cast<double>(-wy * factor);
  }
  if (zero_div_mean) {
    res.loss.assign(1, std::numeric_limits<double>::quiet_NaN());
    return res;
  }
  detail::reduce_into(res, rowloss, red, divisor);
  return res;
}

// ---------------------------------------------------------------------------------------------------------------
// kl_div: q = log-probabilities [N, C]; target p (probabilities) or t = log p when log_target.
//   ℓ = xlogy(p, p) − p·q  (0 when p = 0),   ∂ℓ/∂q = −p
//   ℓ = exp(t)·(t − q)     (0 when exp(t) = 0), ∂ℓ/∂q = −exp(t)
// none → [N*C] elementwise; mean / (N·C); batchmean / N; sum / 1. Negative p gives NaN via log.
// ---------------------------------------------------------------------------------------------------------------
inline Result kl_div(int64_t N, int64_t C, const std::vector<double>& q_logprobs, const std::vector<double>& target,
                     Red red, const RowParams& p = {}) {
  using detail::real;
  detail::check_rows(N, C, q_logprobs.size(), target.size(), static_cast<std::size_t>(N * C), p);

  const std::size_t M = static_cast<std::size_t>(N * C);
  real divisor = 1;
  if (red == Red::Mean) divisor = static_cast<real>(N) * static_cast<real>(C);
  if (red == Red::BatchMean) divisor = static_cast<real>(N);
  const real factor = real(p.grad_scale) / divisor;

  Result res;
  res.grad.assign(M, 0.0);
  std::vector<real> items(M), terms(M);
  for (std::size_t i = 0; i < M; ++i) {
    const real q = q_logprobs[i], t = target[i];
    real l, coef;  // coef = the target probability p (= exp(t) with log_target)
    if (p.log_target) {
      coef = std::exp(t);
      l = detail::times(coef, t - q);
      terms[i] = detail::times(coef, std::fabs(t)) + detail::times(coef, std::fabs(q));
    } else {
      coef = t;
      const real xlogy = (t == 0) ? real(0) : t * std::log(t);  // log(negative) = NaN, propagates
      l = xlogy - detail::times(t, q);
      terms[i] = std::fabs(xlogy) + std::fabs(detail::times(t, q));
    }
    items[i] = l;
    res.grad[i] = static_cast<double>(-coef * factor);
  }
  const Red as = red == Red::BatchMean ? Red::Mean : red;
  Result scale;
  detail::reduce_into(scale, terms, as, divisor);
  res.loss_terms = scale.loss;
  detail::reduce_into(res, items, as, divisor);
  return res;
}

// ---------------------------------------------------------------------------------------------------------------
// kl_div_logits (distillation): student logits s, teacher logits u, temperature T.
//   log p = log_softmax(u/T), log q = log_softmax(s/T)
//   ℓ_n = T²·Σ_c p_c·(log p_c − log q_c)   (terms with p_c = 0 are 0)
//   ∂ℓ_n/∂s_c = T·(q_c − p_c)
// none → per row [N]; mean / (N·C); batchmean / N; sum / 1.
// ---------------------------------------------------------------------------------------------------------------
inline Result kl_div_logits(int64_t N, int64_t C, const std::vector<double>& student,
                            const std::vector<double>& teacher, Red red, const RowParams& p = {}) {
  using detail::real;
  detail::check_rows(N, C, student.size(), teacher.size(), static_cast<std::size_t>(N * C), p);

  const real T = p.temperature;
  real divisor = 1;
  if (red == Red::Mean) divisor = static_cast<real>(N) * static_cast<real>(C);
  if (red == Red::BatchMean) divisor = static_cast<real>(N);
  const real factor = real(p.grad_scale) / divisor;

  Result res;
  res.grad.assign(static_cast<std::size_t>(N * C), 0.0);
  std::vector<real> rowloss(static_cast<std::size_t>(N), 0), rowterms(static_cast<std::size_t>(N), 0);
  std::vector<real> a(static_cast<std::size_t>(C)), b(static_cast<std::size_t>(C));
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      a[c] = real(teacher[static_cast<std::size_t>(n * C + c)]) / T;
      b[c] = real(student[static_cast<std::size_t>(n * C + c)]) / T;
    }
    const real lse_a = detail::logsumexp(a.data(), C), lse_b = detail::logsumexp(b.data(), C);
    real l = 0, terms = 0;
    for (int64_t c = 0; c < C; ++c) {
      const real logp = a[c] - lse_a, logq = b[c] - lse_b;
      const real pc = std::exp(logp), qc = std::exp(logq);
      l += detail::times(pc, logp - logq);
      terms += detail::times(pc, std::fabs(a[c]) + std::fabs(lse_a) + std::fabs(b[c]) + std::fabs(lse_b));
      res.grad[static_cast<std::size_t>(n * C + c)] = static_cast<double>(T * (qc - pc) * factor);
    }
    rowloss[static_cast<std::size_t>(n)] = T * T * l;
    rowterms[static_cast<std::size_t>(n)] = T * T * terms;
  }
  const Red as = red == Red::BatchMean ? Red::Mean : red;
  Result scale;
  detail::reduce_into(scale, rowterms, as, divisor);
  res.loss_terms = scale.loss;
  detail::reduce_into(res, rowloss, as, divisor);
  return res;
}

// ---------------------------------------------------------------------------------------------------------------
// linear_cross_entropy: z = h·Wᵀ + b (h [N, H] dense, W [V, H], b [V] or empty), then cross_entropy(z, labels).
//   ∂L/∂h = G·W,  ∂L/∂W = Gᵀ·h,  ∂L/∂b = Σ_n G[n, ·]   with G = ∂L/∂z from cross_entropy above.
// The matrix products are plain triple loops in long double; nothing is chunked.
// ---------------------------------------------------------------------------------------------------------------
struct LinearResult {
  Result ce;                      // loss, lse, bad, and ce.grad = G = ∂L/∂z [N*V]
  std::vector<double> logits;     // z [N*V]
  std::vector<double> grad_hidden;  // [N*H]
  std::vector<double> grad_weight;  // [V*H]
  std::vector<double> grad_bias;    // [V] (empty without a bias)
};

inline LinearResult linear_cross_entropy(int64_t N, int64_t H, int64_t V, const std::vector<double>& hidden,
                                         const std::vector<double>& weight, const std::vector<double>& bias,
                                         const std::vector<int64_t>& labels, Red red, const RowParams& p = {}) {
  using detail::real;
  detail::require(static_cast<int64_t>(hidden.size()) == N * H && static_cast<int64_t>(weight.size()) == V * H,
                  "linear_cross_entropy: hidden must be [N, H] and weight [V, H]");
  detail::require(bias.empty() || static_cast<int64_t>(bias.size()) == V, "linear_cross_entropy: bias must be [V]");
  LinearResult r;
  r.logits.assign(static_cast<std::size_t>(N * V), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t v = 0; v < V; ++v) {
      real z = bias.empty() ? real(0) : real(bias[static_cast<std::size_t>(v)]);
      for (int64_t k = 0; k < H; ++k)
        z += real(hidden[static_cast<std::size_t>(n * H + k)]) * real(weight[static_cast<std::size_t>(v * H + k)]);
      r.logits[static_cast<std::size_t>(n * V + v)] = static_cast<double>(z);
    }
  r.ce = cross_entropy(N, V, r.logits, labels, red, p);
  const std::vector<double>& G = r.ce.grad;
  r.grad_hidden.assign(static_cast<std::size_t>(N * H), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < H; ++k) {
      real g = 0;
      for (int64_t v = 0; v < V; ++v)
        g += real(G[static_cast<std::size_t>(n * V + v)]) * real(weight[static_cast<std::size_t>(v * H + k)]);
      r.grad_hidden[static_cast<std::size_t>(n * H + k)] = static_cast<double>(g);
    }
  r.grad_weight.assign(static_cast<std::size_t>(V * H), 0.0);
  for (int64_t v = 0; v < V; ++v)
    for (int64_t k = 0; k < H; ++k) {
      real g = 0;
      for (int64_t n = 0; n < N; ++n)
        g += real(G[static_cast<std::size_t>(n * V + v)]) * real(hidden[static_cast<std::size_t>(n * H + k)]);
      r.grad_weight[static_cast<std::size_t>(v * H + k)] = static_cast<double>(g);
    }
  if (!bias.empty()) {
    r.grad_bias.assign(static_cast<std::size_t>(V), 0.0);
    for (int64_t v = 0; v < V; ++v) {
      real g = 0;
      for (int64_t n = 0; n < N; ++n) g += real(G[static_cast<std::size_t>(n * V + v)]);
      r.grad_bias[static_cast<std::size_t>(v)] = static_cast<double>(g);
    }
  }
  return r;
}

}  // namespace oracle
