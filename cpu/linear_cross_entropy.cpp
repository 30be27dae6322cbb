// fusedloss CPU path — linear_cross_entropy: logits = hidden · weightᵀ + bias, then sparse
// cross_entropy, chunk by chunk, never holding the [N, V] logits.
//
// Per chunk of rows (fixed order, chunk size from the memory budget; see src/linear_ce_plan.hpp):
//   1. Z = H_c · Wᵀ (+ b)          sgemm into the fp32 workspace            [c, V]
//   2. Z ← ∂loss/∂Z in place       the row-wise cross_entropy (cpu/rowwise.cpp), reduction none,
//                                  gradient scaled by grad_scale / Σw (mean) or grad_scale
//   3. grad_hidden_c = G · W       sgemm                                     [c, H]
//   4. grad_weight  += Gᵀ · H_c    sgemm, beta = 1, fp32 accumulator         [V, H]
//   5. grad_bias    += Σ_rows G    double accumulator                        [V]
// then each sum is rounded once to the output dtype (added to the old value when accumulating).
// Memory traffic per chunk: Z written by 1, read + written once by 2, read by 3, 4 and 5;
// W is read by 1 and 3, the accumulator read + written by 4.
// Derivation: z_nv = Σ_k h_nk W_vk + b_v, so ∂L/∂h_nk = Σ_v G_nv W_vk, ∂L/∂W_vk = Σ_n G_nv h_nk,
// ∂L/∂b_v = Σ_n G_nv with G = ∂L/∂z — each a sum over chunks of that chunk's rows' terms.
//
// Determinism: the chunks run in order, and each GEMM is one OpenBLAS call whose threads split
// the output (never the reduction dimension K), so every output element is the same sequence
// of fp32 operations run to run; the per-row losses are summed in row order in double.
#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

#include "cpu/labels.hpp"
#include "cpu/load_store.hpp"
#include "src/backend.hpp"

namespace fusedloss {
namespace detail {
namespace cpu {
namespace {

template <class T>
T* region(void* workspace, std::size_t offset) {
  return offset == kLinearCeAbsent ? nullptr
                                   : reinterpret_cast<T*>(static_cast<unsigned char*>(workspace) + offset);
}

/// dst[r·ld_dst + c] = src[r·ld_src + c] widened to fp32, for rows × cols values.
template <class IO>
void widen(const typename IO::storage* src, std::int64_t ld_src, std::int64_t rows, std::int64_t cols, float* dst,
           std::int64_t ld_dst) {
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c)
      dst[r * ld_dst + c] = static_cast<float>(IO::load(src + r * ld_src, c));
}

/// dst = src rounded once to the storage dtype (rows × cols).
template <class IO>
void narrow(const float* src, std::int64_t ld_src, std::int64_t rows, std::int64_t cols, typename IO::storage* dst,
            std::int64_t ld_dst) {
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) IO::store(dst + r * ld_dst, c, static_cast<double>(src[r * ld_src + c]));
}

template <class IO>
Status run(const LinearCrossEntropyProblem& p, const LinearCrossEntropyOutputs& out, const LinearCeLayout& l,
           void* ws, int threads) {
  using S = typename IO::storage;
  constexpr bool kF32 = std::is_same<S, float>::value;
  const std::int64_t N = p.rows, H = p.hidden_size, V = p.classes, ld_h = p.hidden_stride;
  const S* hidden = static_cast<const S*>(p.hidden);
  const S* bias = static_cast<const S*>(p.bias);
  const bool want_grad = out.grad_hidden != nullptr || out.grad_weight != nullptr || out.grad_bias != nullptr;

  // Step 0: the mean's divisor over the whole batch, and the gradient factor every chunk uses.
  const LabelStats stats = label_stats(p.labels, p.label_dtype, N, V, p.params.ignore_index, p.class_weight);
  const bool mean = p.reduction == Reduction::Mean;
  const double factor = !mean ? p.grad_scale : stats.weight_sum == 0.0 ? 0.0 : p.grad_scale / stats.weight_sum;

  float* logits = region<float>(ws, l.logits);
  float* row_loss = region<float>(ws, l.row_loss);
  double* bias_acc = region<double>(ws, l.bias_acc);

  // fp32 views of weight and of the grad_weight accumulator (grad_weight itself for fp32 when not
  // accumulating; else a workspace region, added to the old value once at the end).
  const float* W = nullptr;
  if constexpr (kF32) {
    W = static_cast<const float*>(p.weight);
  } else {
    float* w32 = region<float>(ws, l.weight32);
    widen<IO>(static_cast<const S*>(p.weight), H, V, H, w32, H);
    W = w32;
  }
  float* gw_acc = out.grad_weight == nullptr ? nullptr
                  : l.grad_weight32 != kLinearCeAbsent ? region<float>(ws, l.grad_weight32)
                                                       : static_cast<float*>(out.grad_weight);
  float gw_beta = 0.0f;  // the first chunk overwrites the accumulator
  if (bias_acc != nullptr) std::fill(bias_acc, bias_acc + V, 0.0);

  double loss_sum = 0.0;
  for (std::int64_t r0 = 0; r0 < N; r0 += l.chunk_rows) {
    const std::int64_t c = N - r0 < l.chunk_rows ? N - r0 : l.chunk_rows;
    const int ic = static_cast<int>(c), iV = static_cast<int>(V), iH = static_cast<int>(H);
    // H_c as fp32.
    const float* hc = nullptr;
    int ld_hc = 0;
    if constexpr (kF32) {
      hc = hidden + r0 * ld_h;
      ld_hc = static_cast<int>(ld_h);
    } else {
      float* h32 = region<float>(ws, l.hidden32);
      widen<IO>(hidden + r0 * ld_h, ld_h, c, H, h32, H);
      hc = h32;
      ld_hc = iH;
    }
    // 1. Z = H_c·Wᵀ (+ b).
    float z_beta = 0.0f;
    if (bias != nullptr) {
      for (std::int64_t v = 0; v < V; ++v) logits[v] = static_cast<float>(IO::load(bias, v));
      for (std::int64_t r = 1; r < c; ++r) std::memcpy(logits + r * V, logits, sizeof(float) * static_cast<std::size_t>(V));
      z_beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ic, iV, iH, 1.0f, hc, ld_hc, W, iH, z_beta, logits, iV);

    // 2. loss + ∂loss/∂Z of the chunk, in place (the one cross_entropy definition).
    RowwiseProblem ce = linear_ce_chunk_problem(
        p, c, logits, static_cast<const unsigned char*>(p.labels) + r0 * static_cast<std::int64_t>(dtype_size(p.label_dtype)));
    ce.grad_scale = factor;  // the mean's divisor of the whole batch, applied here
    LossOutputs ce_out;
    ce_out.loss = p.reduction == Reduction::None ? out.loss + r0 : row_loss;
    ce_out.grad = want_grad ? logits : nullptr;
    ce_out.lse = out.lse != nullptr ? out.lse + r0 : nullptr;
    // At most kLinearCeRowWorkers threads: the plan reserved their scratch out of the budget.
    const Status s = cpu_compute(ce, ce_out, std::min(threads, kLinearCeRowWorkers));
    if (s != Status::Success && s != Status::InvalidValue) return s;  // bad labels: counted in step 0
    if (p.reduction != Reduction::None)
      for (std::int64_t r = 0; r < c; ++r) loss_sum += static_cast<double>(row_loss[r]);
    if (!want_grad) continue;

    // 3. grad_hidden rows of the chunk = G·W.
    if (out.grad_hidden != nullptr) {
      S* gh = static_cast<S*>(out.grad_hidden) + r0 * ld_h;
      if constexpr (kF32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ic, iH, iV, 1.0f, logits, iV, W, iH, 0.0f, gh,
                    static_cast<int>(ld_h));
      } else {
        float* gh32 = region<float>(ws, l.grad_hidden32);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ic, iH, iV, 1.0f, logits, iV, W, iH, 0.0f, gh32, iH);
        narrow<IO>(gh32, H, c, H, gh, ld_h);
      }
    }
    // 4. grad_weight += Gᵀ·H_c (fp32 accumulator).
    if (gw_acc != nullptr) {
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, iV, iH, ic, 1.0f, logits, iV, hc, ld_hc, gw_beta, gw_acc, iH);
      gw_beta = 1.0f;
    }
    // 5. grad_bias += column sums of G (rows in order).
    if (bias_acc != nullptr)
      for (std::int64_t r = 0; r < c; ++r)
        for (std::int64_t v = 0; v < V; ++v) bias_acc[v] += static_cast<double>(logits[r * V + v]);
  }

  // Round the sums once (into the old value when accumulating). With no rows the sum is 0.
  if (gw_acc != nullptr) {
    if (gw_beta == 0.0f) std::fill(gw_acc, gw_acc + V * H, 0.0f);
    if (gw_acc != out.grad_weight) {
      S* gw = static_cast<S*>(out.grad_weight);
      for (std::int64_t i = 0; i < V * H; ++i)
        IO::store(gw, i, (out.accumulate ? IO::load(gw, i) : 0.0) + static_cast<double>(gw_acc[i]));
    }
  }
  if (bias_acc != nullptr) {
    S* gb = static_cast<S*>(out.grad_bias);
    for (std::int64_t v = 0; v < V; ++v) {
      const float g = static_cast<float>(bias_acc[v]);  // this call's gradient, as fp32 like grad_weight's
      IO::store(gb, v, (out.accumulate ? IO::load(gb, v) : 0.0) + static_cast<double>(g));
    }
  }
  if (p.reduction == Reduction::Sum) out.loss[0] = static_cast<float>(loss_sum);
  if (mean)
    out.loss[0] = stats.weight_sum == 0.0 ? std::numeric_limits<float>::quiet_NaN()
                                          : static_cast<float>(loss_sum / stats.weight_sum);
  if (out.error_count != nullptr) *out.error_count = stats.bad;
  return stats.bad > 0 ? Status::InvalidValue : Status::Success;
}

}  // namespace
}  // namespace cpu

Status cpu_compute(const LinearCrossEntropyProblem& problem, const LinearCrossEntropyOutputs& outputs,
                   const LinearCeLayout& layout, void* workspace, int threads) noexcept {
  Status status = Status::InvalidArgument;  // unknown dtype (validate() never passes one)
  try {
    cpu::visit_value_dtype(problem.dtype, [&](auto io) {
      status = cpu::run<decltype(io)>(problem, outputs, layout, workspace, threads < 1 ? 1 : threads);
    });
  } catch (...) {
    return Status::OutOfMemory;
  }
  return status;
}

}  // namespace detail
}  // namespace fusedloss
