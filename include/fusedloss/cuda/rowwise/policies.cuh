// fusedloss — row-wise kernels, part 2 of 4: one policy per loss. A policy says what is loaded
// per element, which row statistics the loss needs, the row loss and the gradient of one element;
// the drivers (drivers.cuh) own the loops, the loads/stores and the group reductions, and call
// the policy per element and per row. The loss math itself is the host+device definition in
// fusedloss/detail/rowwise_ops.hpp (shared with the CPU path); a policy only arranges it.
//
// The policy contract (every member is used by both drivers):
//   kLabel     the row has a sparse label (RowHead: y, w[y], input[y]); invalid rows are skipped
//   kInput     the input row is loaded as vectors (nll reads input[y] only)
//   kTarget    a second [N, C] row is loaded (soft target, teacher, kl_div target)
//   kSoftmax   rows whose softmax statistics (max → R, Σ 2^{(z'−R)·unit}) are needed: 0, 1 or 2
//              (input; input and target)
//   kWeight    per-element weight w_c (weight()); kSumW: Σ w is a row statistic; kSumWz:
//              Σ_{w≠0} w·(z'−R) is one (the label-smoothing / soft-target term of the loss)
//   kGradSums  values summed over the row in the gradient pass (loss terms that need the
//              finished statistics: kl_div_logits, kl_div)
//   kPatch     one column (the label) gets a gradient of its own after the row was stored
//   Call setup(a)                  per-call constants (statistics of the label pass)
//   logit(raw, in, a)              z' of the input: softcap applied, outside columns −inf
//   ref(mx, a)                     the shift reference from the max of the RAW row (register driver)
//   unit(k)                        the exponent unit of the softmax: log2e (log2e/T with a temperature)
//   Row row(a, k, row, hd, R, s)   per-row constants from the statistics s
//   grad(x, t, w, c, in, R, r, acc, a)  ∂ℓ/∂x_c (times F); adds its kGradSums terms to acc
//   zero_grad(r)                   the row's gradient is exactly 0 (written as zeros, no math)
//   grad_sums(r)                   the gradient-pass sums are needed by the loss of this row
//   finish(a, r, s, row)           the group leader writes the row's loss (and lse)
// Every flag is a compile-time constant: a feature that is off costs nothing per element.
#pragma once

#include "fusedloss/cuda/rowwise/primitives.cuh"
#include "fusedloss/detail/rowwise_ops.hpp"

namespace fusedloss {
namespace cuda {
namespace rowwise {

/// Row statistics as the drivers hand them to a policy (the streaming driver fills wz and g in
/// its second pass, the register driver wz in its first).
struct Sums {
  float e[2];  ///< Σ 2^{(z'−R)·unit} of each softmax row
  float w;     ///< Σ w_c
  float wz;    ///< Σ_{w_c≠0} w_c (z'_c − R)
  float g;     ///< the gradient pass's sum
};

/// Defaults of the contract; a policy overrides what it uses.
struct PolicyBase {
  static constexpr bool kLabel = false, kInput = true, kTarget = false, kTargetLogits = false;
  static constexpr int kSoftmax = 1;
  static constexpr bool kWeight = false, kSumW = false, kSumWz = false, kPatch = false;
  static constexpr int kGradSums = 0;
  __device__ __forceinline__ static float logit(float raw, bool, const RowArgs&) { return raw; }
  __device__ __forceinline__ static float ref(float mx, const RowArgs&) { return shift_ref(mx); }
  template <class Call>
  __device__ __forceinline__ static float unit(const Call&) {
    return kLog2e;
  }
  template <class I>
  __device__ __forceinline__ static float weight(float, I, bool, const float*, const RowArgs&) {
    return 0.f;
  }
};

/// Softcap of the cross_entropy policies: z' = k·tanh(z/k) inside the row; outside columns must
/// stay −inf (the cap would turn them into −k; a real −inf logit does become −k).
template <bool SOFTCAP>
__device__ __forceinline__ float capped_logit(float raw, bool in, const RowArgs& a) {
  if constexpr (SOFTCAP) return in ? softcap_fwd(raw, a.cap, a.inv_cap) : -CUDART_INF_F;
  return raw;
}
/// The shift reference of a cross_entropy row from its raw max: tanh is monotonic, so the max of
/// the capped row is the capped max.
template <bool SOFTCAP>
__device__ __forceinline__ float capped_ref(float mx, const RowArgs& a) {
  return shift_ref(SOFTCAP ? softcap_fwd(mx, a.cap, a.inv_cap) : mx);
}

/// The common tail of the cross_entropy gradients: ∂ℓ/∂z_c = (e_c·A − w_c·E)·chain_c with
/// e_c = exp(z'_c − R) and chain_c = dz'/dz (1 without softcap).
template <bool SOFTCAP, bool WEIGHT>
__device__ __forceinline__ float ce_grad(float z_raw, float R, float A, float E, float w, const RowArgs& a) {
  float chain = 1.f;
  float z = z_raw;
  if constexpr (SOFTCAP) z = softcap_fwd_chain(z_raw, a.cap, a.inv_cap, chain);
  float g = exp2f((z - R) * kLog2e) * A;
  if constexpr (WEIGHT) g -= E * w;
  if constexpr (SOFTCAP) g *= chain;
  return g;
}

// ---- sparse cross_entropy ----------------------------------------------------------------------------
// Row statistics (R = shift reference): lse_rel = lse − R = log Σ e^{z−R}, zy_rel = z_y − R,
// swz = Σ_{w_c≠0} w_c (z_c − R). The loss is detail::sparse_ce_row_loss at these shifted
// arguments: the shift cancels exactly in the math, (lse−R) − (z_y−R) = lse − z_y, but in float
// it avoids the cancellation of two numbers of size |z| (±1e4 logits). A term whose coefficient
// is 0 is skipped (never 0·inf): (1−ε)·w_y == 0 skips the target term.
//   ∂ℓ/∂z_c = (e_c·A − E·w_c − B·[c = y])·chain_c,  (A, B, E) = F·detail::sparse_ce_grad_coeffs
// The loop writes every column without −B; the owner of column y then rewrites it (kPatch).
// SMOOTH: 0 no label smoothing, 1 smoothing without class weights (w_c = 1), 2 with.
template <bool SOFTCAP, int SMOOTH>
struct SparseCe : PolicyBase {
  static constexpr bool kLabel = true, kWeight = SMOOTH != 0, kSumWz = SMOOTH != 0, kPatch = true;
  struct Call {
    float F;        ///< gradient factor (grad_scale / divisor)
    float W;        ///< Σ_c w_c (C without class weights)
    bool zero_div;  ///< mean over nothing: gradient all zero
  };
  struct Row {
    RowHead hd;
    float R, sum_e, lse_rel, lse;
    float A, B, E;
    bool zero;
  };
  __device__ __forceinline__ static Call setup(const RowArgs& a) {
    const RowStats* st = a.stats;
    return {st != nullptr ? st->factor : a.factor, st != nullptr ? st->weight_sum : static_cast<float>(a.C),
            st != nullptr && st->zero_div != 0};
  }
  __device__ __forceinline__ static float logit(float raw, bool in, const RowArgs& a) { return capped_logit<SOFTCAP>(raw, in, a); }
  __device__ __forceinline__ static float ref(float mx, const RowArgs& a) { return capped_ref<SOFTCAP>(mx, a); }
  template <class I>
  __device__ __forceinline__ static float weight(float, I c, bool in, const float* w, const RowArgs&) {
    return in ? (SMOOTH == 2 ? __ldg(w + c) : 1.f) : 0.f;
  }
  __device__ __forceinline__ static Row row(const RowArgs& a, const Call& k, long long, const RowHead& hd, const float* R, const Sums& s) {
    Row r;
    r.hd = hd;
    r.R = R[0];
    r.sum_e = s.e[0];
    r.lse_rel = logf(r.sum_e);
    r.lse = r.R + r.lse_rel;
    const detail::SparseCeGradCoeffs<float> c = detail::sparse_ce_grad_coeffs<float>(hd.wy, k.W, a.eps, a.inv_c, a.z_loss, r.lse);
    r.A = over_row_sum(c.a * k.F, r.sum_e);
    r.B = c.b * k.F;
    r.E = c.e * k.F;
    // every coefficient 0: the contract's gradient is exactly 0 (even for NaN rows)
    r.zero = hd.kind != kRowValid || k.zero_div || detail::sparse_ce_grad_is_zero<float>(hd.wy, a.eps, a.z_loss);
    return r;
  }
  template <class I>
  __device__ __forceinline__ static float grad(float z, float, float w, I, bool, const float* R, const Row& r, float*, const RowArgs& a) {
    return ce_grad<SOFTCAP, SMOOTH != 0>(z, R[0], r.A, r.E, w, a);
  }
  __device__ __forceinline__ static bool zero_grad(const Row& r) { return r.zero; }
  __device__ __forceinline__ static bool grad_sums(const Row& r) { return r.hd.kind == kRowValid; }
  /// The label column's gradient (the loop wrote it without −B).
  __device__ __forceinline__ static float patch(const Row& r, const RowArgs& a) {
    float chain = 1.f;
    float z = r.hd.zy;
    if constexpr (SOFTCAP) z = softcap_fwd_chain(r.hd.zy, a.cap, a.inv_cap, chain);
    float g = exp2f((z - r.R) * kLog2e) * r.A;
    if constexpr (SMOOTH != 0) g -= r.E * r.hd.wy;
    g -= r.B;
    if constexpr (SOFTCAP) g *= chain;
    return g;
  }
  __device__ __forceinline__ static void finish(const RowArgs& a, const Call& k, const Row& r, const Sums& s, long long row) {
    if (a.lse != nullptr) a.lse[row] = r.lse;
    float l = r.hd.kind == kRowBad ? CUDART_NAN_F : 0.f;
    if (r.hd.kind == kRowValid) {
      const float zy_rel = (SOFTCAP ? softcap_fwd(r.hd.zy, a.cap, a.inv_cap) : r.hd.zy) - r.R;
      const float swz = SMOOTH != 0 ? s.wz : 0.f;
      if ((1.f - a.eps) * r.hd.wy != 0.f) {
        l = detail::sparse_ce_row_loss<float>(r.lse_rel, zy_rel, r.hd.wy, k.W, swz, a.eps, a.inv_c, 0.f);
      } else {
        l = a.eps > 0.f ? a.eps * a.inv_c * (k.W * r.lse_rel - swz) : 0.f;
      }
      if (a.z_loss > 0.f) l += a.z_loss * r.lse * r.lse;
    }
    a.row_loss[row] = l;
  }
};

// ---- soft-target cross_entropy -------------------------------------------------------------------------
//   wt_c = w_c·t'_c (t' smoothed), Swt = Σ wt_c
//   ℓ = Swt·(lse − R) − Σ_{wt_c≠0} wt_c (z'_c − R) + s·lse²     ∂ℓ/∂z_c = (e_c·A − wt_c·F)·chain_c
//   with A = (Swt + 2·s·lse)·F / Σe. Columns outside the row get wt = 0.
template <bool SOFTCAP, bool WEIGHTED>
struct SoftCe : PolicyBase {
  static constexpr bool kTarget = true, kWeight = true, kSumW = true, kSumWz = true;
  struct Call {
    float F;
  };
  struct Row {
    float lse_rel, lse, A, F;
    float sw;  ///< Swt (finish() reads it from the Row, which the streaming driver keeps in shared memory)
  };
  __device__ __forceinline__ static Call setup(const RowArgs& a) { return {a.factor}; }
  __device__ __forceinline__ static float logit(float raw, bool in, const RowArgs& a) { return capped_logit<SOFTCAP>(raw, in, a); }
  __device__ __forceinline__ static float ref(float mx, const RowArgs& a) { return capped_ref<SOFTCAP>(mx, a); }
  template <class I>
  __device__ __forceinline__ static float weight(float t, I c, bool in, const float* w, const RowArgs& a) {
    if (!in) return 0.f;
    const float tp = detail::smoothed_target<float>(t, a.eps, a.inv_c);
    return WEIGHTED ? __ldg(w + c) * tp : tp;
  }
  __device__ __forceinline__ static Row row(const RowArgs& a, const Call& k, long long, const RowHead&, const float* R, const Sums& s) {
    Row r;
    r.lse_rel = logf(s.e[0]);
    r.lse = R[0] + r.lse_rel;
    r.A = over_row_sum((s.w + (a.z_loss > 0.f ? 2.f * a.z_loss * r.lse : 0.f)) * k.F, s.e[0]);
    r.F = k.F;
    r.sw = s.w;
    return r;
  }
  template <class I>
  __device__ __forceinline__ static float grad(float z, float, float wt, I, bool, const float* R, const Row& r, float*, const RowArgs& a) {
    return ce_grad<SOFTCAP, true>(z, R[0], r.A, r.F, wt, a);
  }
  __device__ __forceinline__ static bool zero_grad(const Row&) { return false; }
  __device__ __forceinline__ static bool grad_sums(const Row&) { return true; }
  __device__ __forceinline__ static void finish(const RowArgs& a, const Call&, const Row& r, const Sums& s, long long row) {
    if (a.lse != nullptr) a.lse[row] = r.lse;
    float l = r.sw != 0.f ? r.sw * r.lse_rel - s.wz : -s.wz;  // a zero coefficient adds 0, even with lse = inf
    if (a.z_loss > 0.f) l += a.z_loss * r.lse * r.lse;
    a.row_loss[row] = l;
  }
};

// ---- kl_div_logits (distillation) ----------------------------------------------------------------------
// Student s (input), teacher u (target), temperature T. With Rs, Ru the shift references of the
// row maxima and e^s_c = exp((s_c − Rs)/T), e^u_c = exp((u_c − Ru)/T):
//   q_c = e^s_c / Ss, p_c = e^u_c / Su,  D = log Su − log Ss
//   ℓ = T²·Σ_{p_c≠0} p_c·[((u_c − Ru) − (s_c − Rs))/T − D]        ∂ℓ/∂s_c = T·F·(q_c − p_c)
// The shift is applied before the division by T, so ±1e4 logits keep full relative precision.
// The loss needs D, so its sum runs in the gradient pass.
struct KlLogits : PolicyBase {
  static constexpr bool kTarget = true, kTargetLogits = true;
  static constexpr int kSoftmax = 2, kGradSums = 1;
  struct Call {
    float unit;  ///< log2e / T: the exponent unit of both softmaxes
    float TF;    ///< T·F
  };
  struct Row {
    float Su, D, GS, GU, unit;
  };
  __device__ __forceinline__ static Call setup(const RowArgs& a) { return {a.inv_temp * kLog2e, a.temp * a.factor}; }
  __device__ __forceinline__ static float unit(const Call& k) { return k.unit; }
  __device__ __forceinline__ static Row row(const RowArgs&, const Call& k, long long, const RowHead&, const float*, const Sums& s) {
    const float Ss = s.e[0], Su = s.e[1];
    return {Su, logf(Su) - logf(Ss), __fdividef(k.TF, Ss), __fdividef(k.TF, Su), k.unit};
  }
  template <class I>
  __device__ __forceinline__ static float grad(float zs, float zu, float, I, bool, const float* R, const Row& r, float* acc, const RowArgs& a) {
    const float sd = zs - R[0];
    const float ud = zu - R[1];
    const float es = exp2f(sd * r.unit), eu = exp2f(ud * r.unit);
    if (eu != 0.f) acc[0] += eu * ((ud - sd) * a.inv_temp - r.D);  // outside columns: eu = 0
    return es * r.GS - eu * r.GU;
  }
  __device__ __forceinline__ static bool zero_grad(const Row&) { return false; }
  __device__ __forceinline__ static bool grad_sums(const Row&) { return true; }
  __device__ __forceinline__ static void finish(const RowArgs& a, const Call&, const Row& r, const Sums& s, long long row) {
    a.row_loss[row] = a.temp * a.temp * __fdividef(s.g, r.Su);
  }
};

// ---- nll: a row of zeros with −w_y·F at the label; the loss reads one element -------------------------
struct Nll : PolicyBase {
  static constexpr bool kLabel = true, kInput = false;
  static constexpr int kSoftmax = 0;
  struct Call {
    float F;
    bool zero_div;
  };
  struct Row {
    RowHead hd;
    long long ycol;  ///< the label column, −1 when the row's gradient is all zero
    float gy;
  };
  __device__ __forceinline__ static Call setup(const RowArgs& a) {
    const RowStats* st = a.stats;
    return {st != nullptr ? st->factor : a.factor, st != nullptr && st->zero_div != 0};
  }
  __device__ __forceinline__ static Row row(const RowArgs&, const Call& k, long long, const RowHead& hd, const float*, const Sums&) {
    const bool put = hd.kind == kRowValid && !k.zero_div;
    return {hd, put ? hd.y : -1, put ? -hd.wy * k.F : 0.f};
  }
  template <class I>
  __device__ __forceinline__ static float grad(float, float, float, I c, bool, const float*, const Row& r, float*, const RowArgs&) {
    return c == r.ycol ? r.gy : 0.f;
  }
  __device__ __forceinline__ static bool zero_grad(const Row& r) { return r.ycol < 0; }
  __device__ __forceinline__ static bool grad_sums(const Row&) { return false; }
  __device__ __forceinline__ static void finish(const RowArgs& a, const Call&, const Row& r, const Sums&, long long row) {
    float l = r.hd.kind == kRowBad ? CUDART_NAN_F : 0.f;
    if (r.hd.kind == kRowValid && r.hd.wy != 0.f) l = -r.hd.wy * r.hd.zy;
    a.row_loss[row] = l;
  }
};

// ---- kl_div: elementwise over the row (input log q, target t), no row statistics ----------------------
// ℓ_c, ∂ℓ/∂log q_c from detail::kl_div_element; a target probability of 0 gives the term 0 (never
// 0·inf). reduction none writes the dense [N·C] loss instead of a row sum.
struct KlDiv : PolicyBase {
  static constexpr bool kTarget = true;
  static constexpr int kSoftmax = 0, kGradSums = 1;
  struct Call {
    float F;
  };
  struct Row {
    float* dense;  ///< this row of the dense loss, or nullptr
    float F;
    bool log_target;
  };
  __device__ __forceinline__ static Call setup(const RowArgs& a) { return {a.factor}; }
  __device__ __forceinline__ static Row row(const RowArgs& a, const Call& k, long long row, const RowHead&, const float*, const Sums&) {
    return {a.dense_loss != nullptr ? a.dense_loss + row * a.C : nullptr, k.F, a.log_target != 0};
  }
  template <class I>
  __device__ __forceinline__ static float grad(float q, float t, float, I c, bool in, const float*, const Row& r, float* acc, const RowArgs&) {
    float dq = 0.f;
    float l = detail::kl_div_element<float>(q, t, r.log_target, dq);
    if (dq == 0.f) l = 0.f;
    if (in) {
      if (r.dense != nullptr) {
        r.dense[c] = l;
      } else {
        acc[0] += l;
      }
    }
    return dq * r.F;
  }
  __device__ __forceinline__ static bool zero_grad(const Row&) { return false; }
  __device__ __forceinline__ static bool grad_sums(const Row& r) { return r.dense == nullptr; }
  __device__ __forceinline__ static void finish(const RowArgs& a, const Call&, const Row& r, const Sums& s, long long row) {
    if (r.dense == nullptr) a.row_loss[row] = s.g;
  }
};

}  // namespace rowwise
}  // namespace cuda
}  // namespace fusedloss
