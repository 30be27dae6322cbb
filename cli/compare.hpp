// fusedloss CLI — GPU-vs-CPU comparison for `fusedloss validate`, and the documented tolerances.
//
// THE TOLERANCES (the one place they are defined; `fusedloss validate` prints them):
//   loss and lse (float32 in every dtype, fp32 accumulation on the GPU, double on the CPU):
//       |gpu − cpu| ≤ 1e-5 · max(|cpu|, mean|cpu|)                      (relative 1e-5)
//     The mean|cpu| floor keeps per-row losses that are tiny next to their neighbours (a
//     confidently right row of a `none` cross_entropy) from demanding more than fp32 can give.
//     lse passes T = kLseTermScale = 1: lse = m + log Σ_c e^{z_c − m} with the sum ≥ 1, so the log's
//     absolute error is the sum's relative error (a few fp32 ulps) whatever the lse's size: an lse
//     near 0 (one logit at 0 far above the rest) is known to ~1e-7 absolutely, not relatively.
//     A caller that knows the terms a loss value is a difference of passes their Σ|terms| as T (the
//     term scale below): |gpu − cpu| ≤ 1e-5 · max(|cpu|, mean|cpu|, T). fp32 rounding is relative
//     to those terms, not to a small result: p·log p − p·q of a kl_div, lse − z_y of a confidently
//     right cross_entropy row, the log1p values of an msle of close values (the GPU tests take T
//     from the float64 oracle's loss_terms). `fusedloss validate` sees only the values and passes
//     no T, so a single such row can fail there although the GPU computes it as well as fp32 can.
//   gradient, float32:   |gpu − cpu| ≤ 1e-6 · max(max|cpu grad|, T)        (1e-6 · scale)
//     T, the term scale of a row-wise loss, is the size of the terms its gradient is a difference
//     of (F·p_c·a − F·b·[c = y] − …, F = grad_scale / the mean's divisor): F · max class weight
//     (· temperature for kl_div_logits). Where those terms cancel exactly (one class, C = 1: p = 1)
//     the true gradient is 0 and any computation returns rounding noise of T's size (the CPU
//     path's double gives ~1e-17, float32 gives 0 or ~1e-8): measuring against max|cpu grad|,
//     itself that noise, would demand more than either precision holds. Elementwise losses: the two
//     whose gradient is a difference cancel in the same way — bce_with_logits,
//     (pw·y + 1 − y)·σ(x) − pw·y, T = F · max weight · 2·max(1, max pos_weight); msle,
//     2·(log1p x − log1p y)/(1 + x), T = F · max weight (each term 2·log1p(u)/(1 + x) is below 1
//     where the two are close); F = grad_scale / the mean's divisor. The others: T = 0.
//   gradient, fp16/bf16: within 1 unit in the last place of the dtype of the CPU result (which is
//     the correctly rounded double result — for bf16 cross_entropy without smoothing or z-loss,
//     whose exponentials run on float lanes, one of the two bf16 values around the exact one, as a
//     GPU's fp32 result is: README, Accuracy), or within the fp32 bound above (for values so small
//     that the fp32 computation's absolute error exceeds their ulp).
//   linear_cross_entropy's grad_hidden = G·W, grad_weight = Gᵀ·h, grad_bias = Σ_n G (G = ∂loss/∂z, both
//     paths fp32 GEMMs of K = V, N, N terms): the same rule with T = the GEMM bound of the two paths over
//     grad_abs, T = (2(K + 2)·u + 8·δz)·S / grad_abs (u = 2⁻²⁴; Higham §3.5: |fl(A·B) − A·B| ≤ K·u·|A|·|B|,
//     once per path; δz = (H + 1)·u·max_{n,v}(Σ_k|h_nk W_vk| + |b_v|), the logits' GEMM error, which moves
//     G by ≤ 4·δz relatively through the softmax). S = the largest Σ|terms| of an element: Σ_v |G|⁺_nv|W_vk|,
//     Σ_n |G|⁺_nv|h_nk|, Σ_n |G|⁺_nv, with |G|⁺ the size of the terms G is a difference of, from z in
//     double and the reference lse (cli/linear_ce_validate.cpp; the same |G|⁺ as
//     tests/common/linear_ce_check.hpp, which holds each path to the per-element form of this bound).
//   invalid data values: the two paths must count the same number.
// NaN matches NaN and ±inf matches the same infinity; any other non-finite difference fails.
#pragma once

#include <cstdint>
#include <string>

#include "cli/tensor.hpp"
#include "fusedloss/api.hpp"

namespace fusedloss_cli {

/// T of the lse comparison (see above).
constexpr double kLseTermScale = 1.0;

struct Tolerance {
  double loss_rel;      ///< loss / lse: |Δ| ≤ loss_rel · max(|ref|, mean|ref|, T)
  double grad_abs;      ///< gradient: |Δ| ≤ grad_abs · max|ref|
  int grad_ulp;         ///< gradient: or |Δ| ≤ grad_ulp ulps of the dtype (0: not used)
};

/// The documented tolerance for a dtype (see the table above).
Tolerance tolerance_for(fusedloss::DType dtype);
/// A human-readable form of the rule applied to `kind` ("loss", "lse", "grad").
std::string tolerance_text(const Tolerance& tol, const std::string& kind, fusedloss::DType dtype);

enum class CompareKind { Loss, Grad };

struct Comparison {
  double max_abs = 0;          ///< max |got − ref| over finite pairs
  double max_rel = 0;          ///< max |got − ref| / |ref| (ref ≠ 0)
  double max_ulp = 0;          ///< max ulp distance in the compared dtype
  std::int64_t worst = -1;     ///< flat index with the largest error / allowed ratio (-1: all exact)
  double worst_got = 0, worst_ref = 0;
  std::int64_t failures = 0;   ///< elements outside the tolerance (non-finite mismatches included)
  std::int64_t count = 0;
  bool pass() const { return failures == 0; }
};

/// Compares `got` against `ref` (same dtype and shape). Loss arrays are float32; gradients are in
/// the problem dtype, and ulps are counted in that dtype. term_scale: T above (a gradient's term
/// scale, or Σ|terms| of a reduced loss; 0: none).
Comparison compare(const HostTensor& got, const HostTensor& ref, CompareKind kind, const Tolerance& tol,
                   double term_scale = 0.0);

/// T of the table above for a row-wise loss: |grad_scale| / divisor · max_class_weight
/// (· temperature for kl_div_logits). divisor: what the reduction divides by (1 for sum/none).
double rowwise_term_scale(fusedloss::Loss loss, double grad_scale, double divisor, double max_class_weight,
                          double temperature);

/// T of the table above for an elementwise loss (0 for the losses whose gradient does not cancel).
double elementwise_term_scale(fusedloss::Loss loss, double grad_scale, double divisor, double max_weight,
                              double max_pos_weight);
/// Same for a problem whose weights and pos_weight vector are host memory.
double elementwise_term_scale(const fusedloss::ElementwiseProblem& host_problem);

/// T for a row-wise problem whose labels and class weights are host memory: the divisor of its
/// (resolved) reduction read from them (Σ w[y] over counted labels for a mean with labels). Used by
/// `fusedloss validate` and by the GPU tests, so both hold a problem to the same T.
double rowwise_term_scale(const fusedloss::RowwiseProblem& host_problem);

/// T of the linear_cross_entropy GEMM outputs (see the table): reduction length K, Σ|terms| bound S,
/// the logits' error δz.
double linear_ce_gemm_term_scale(const Tolerance& tol, double K, double sum_abs_terms, double delta_z);

/// Ulp distance between two values stored in `dtype` bit patterns (float32, float16, bfloat16).
std::int64_t ulp_distance_bits(std::uint32_t a, std::uint32_t b, fusedloss::DType dtype);

/// "[12, 345]" for a flat index in a shape ("[]" for 0-d, "-" when index < 0).
std::string index_string(std::int64_t flat, const std::vector<std::int64_t>& shape);

}  // namespace fusedloss_cli
