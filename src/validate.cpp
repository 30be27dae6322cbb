// Argument validation: every rule that makes a call InvalidArgument lives here, once, for both
// backends. Nothing here reads the data (that would need a device sync on the CUDA path);
// data-dependent problems are InvalidValue and are found by the backends while computing.
#include "src/validate.hpp"

#include <cmath>
#include <cstdint>
#include <limits>

namespace fusedloss {
namespace detail {
namespace {

constexpr std::int64_t kMaxBytes = std::numeric_limits<std::int64_t>::max();

bool is_value_dtype(DType d) { return d == DType::Float32 || d == DType::Float16 || d == DType::BFloat16; }
bool is_label_dtype(DType d) { return d == DType::Int32 || d == DType::Int64; }
bool is_known_reduction(Reduction r) {
  const int v = static_cast<int>(r);
  return v >= static_cast<int>(Reduction::None) && v <= static_cast<int>(Reduction::Default);
}
// Options are given as double but the CUDA path computes in float32: a value that would round
// to 0 or overflow to inf there is rejected on both backends, so the two always agree.
constexpr double kFloatMax = std::numeric_limits<float>::max();
constexpr double kFloatMin = std::numeric_limits<float>::min();  // smallest normal float
bool positive_float(double v) { return v >= kFloatMin && v <= kFloatMax; }  // false for NaN
bool zero_or_positive_float(double v) { return v == 0 || positive_float(v); }
// grad_scale: 0 is valid (loss only, zero gradient); any other value must be a normal float in
// magnitude, so the CUDA path never multiplies by a flushed-to-zero or infinite factor.
bool grad_scale_float(double v) { return v == 0 || positive_float(std::fabs(v)); }  // false for NaN and ±inf
/// Every buffer must be aligned to its element size (typed access on both backends).
bool aligned(const void* ptr, std::size_t elem_bytes) {
  return elem_bytes == 0 || reinterpret_cast<std::uintptr_t>(ptr) % elem_bytes == 0;
}

/// count * elem_bytes without overflow; false when it does not fit in int64.
bool byte_size(std::int64_t count, std::size_t elem_bytes, std::int64_t* bytes) {
  return !__builtin_mul_overflow(count, static_cast<std::int64_t>(elem_bytes), bytes) && *bytes <= kMaxBytes;
}

/// A byte range one call reads or writes.
struct Region {
  const void* ptr = nullptr;
  std::int64_t bytes = 0;
  bool output = false;
};

bool overlaps(const Region& a, const Region& b) {
  if (a.ptr == nullptr || b.ptr == nullptr || a.bytes == 0 || b.bytes == 0) return false;
  const auto a0 = reinterpret_cast<std::uintptr_t>(a.ptr), b0 = reinterpret_cast<std::uintptr_t>(b.ptr);
  return a0 < b0 + static_cast<std::uintptr_t>(b.bytes) && b0 < a0 + static_cast<std::uintptr_t>(a.bytes);
}

/// Outputs may not overlap each other or any input. The in-place gradient (grad == input with
/// the same extent) is the single allowed exception, passed in as `allowed_a`/`allowed_b`.
template <std::size_t K>
bool regions_disjoint(const Region (&regions)[K], int allowed_a, int allowed_b) {
  for (std::size_t i = 0; i < K; ++i) {
    for (std::size_t j = i + 1; j < K; ++j) {
      if (!regions[i].output && !regions[j].output) continue;  // inputs may share memory
      if (!overlaps(regions[i], regions[j])) continue;
      const bool in_place = (int(i) == allowed_a && int(j) == allowed_b) || (int(i) == allowed_b && int(j) == allowed_a);
      if (in_place && regions[i].ptr == regions[j].ptr && regions[i].bytes == regions[j].bytes) continue;
      return false;
    }
  }
  return true;
}

}  // namespace

std::int64_t loss_output_count(const ElementwiseProblem& p) noexcept {
  return p.reduction == Reduction::None ? p.n : 1;
}

std::int64_t loss_output_count(const RowwiseProblem& p) noexcept {
  if (p.reduction != Reduction::None) return 1;
  return p.loss == Loss::KLDiv ? p.rows * p.classes : p.rows;
}

Status validate(const ElementwiseProblem& problem, const LossOutputs& out, ElementwiseProblem* normalised) noexcept {
  ElementwiseProblem p = problem;
  if (!is_elementwise(p.loss) || !is_value_dtype(p.dtype) || !is_known_reduction(p.reduction))
    return Status::InvalidArgument;
  if (p.reduction == Reduction::Default) p.reduction = Reduction::Mean;
  if (p.reduction == Reduction::BatchMean) return Status::InvalidArgument;  // KL losses only
  if (p.loss == Loss::RMSE && p.reduction != Reduction::Mean) return Status::InvalidArgument;
  if (!grad_scale_float(p.grad_scale)) return Status::InvalidArgument;

  std::int64_t data_bytes = 0;
  if (p.n < 0 || !byte_size(p.n, dtype_size(p.dtype), &data_bytes)) return Status::InvalidArgument;
  if (p.n > 0 && (p.input == nullptr || p.target == nullptr)) return Status::InvalidArgument;

  const ElementwiseParams& k = p.params;
  if ((p.loss == Loss::Huber || p.loss == Loss::PseudoHuber) && !positive_float(k.delta))
    return Status::InvalidArgument;
  if (p.loss == Loss::SmoothL1 && !zero_or_positive_float(k.beta)) return Status::InvalidArgument;
  if (p.loss == Loss::BCEWithLogits && !positive_float(k.pos_weight)) return Status::InvalidArgument;
  // A per-column pos_weight is meaningful for bce_with_logits only, and must tile n exactly.
  if (k.columns < 0) return Status::InvalidArgument;
  if ((k.pos_weight_per_column != nullptr) != (k.columns > 0)) return Status::InvalidArgument;
  if (k.pos_weight_per_column != nullptr) {
    if (p.loss != Loss::BCEWithLogits || p.n % k.columns != 0) return Status::InvalidArgument;
  }

  const std::int64_t loss_count = loss_output_count(p);
  if (loss_count > 0 && out.loss == nullptr) return Status::InvalidArgument;
  if (out.lse != nullptr) return Status::InvalidArgument;  // row-wise cross_entropy only

  std::int64_t loss_bytes = 0, pos_bytes = 0;
  if (!byte_size(loss_count, sizeof(float), &loss_bytes) || !byte_size(k.columns, sizeof(float), &pos_bytes))
    return Status::InvalidArgument;
  const std::size_t elem = dtype_size(p.dtype);
  if (!aligned(p.input, elem) || !aligned(p.target, elem) || !aligned(p.weight, elem) || !aligned(out.grad, elem) ||
      !aligned(k.pos_weight_per_column, sizeof(float)) || !aligned(out.loss, sizeof(float)) ||
      !aligned(out.error_count, sizeof(std::int64_t)))
    return Status::InvalidArgument;

  const Region regions[] = {
      {p.input, data_bytes, false},                                         // 0
      {p.target, data_bytes, false},                                        // 1
      {p.weight, p.weight ? data_bytes : 0, false},                         // 2
      {k.pos_weight_per_column, pos_bytes, false},                          // 3
      {out.grad, out.grad ? data_bytes : 0, true},                          // 4
      {out.loss, loss_bytes, true},                                         // 5
      {out.error_count, out.error_count ? std::int64_t(sizeof(std::int64_t)) : 0, true},  // 6
  };
  if (!regions_disjoint(regions, 0, 4)) return Status::InvalidArgument;

  *normalised = p;
  return Status::Success;
}

Status validate(const RowwiseProblem& problem, const LossOutputs& out, RowwiseProblem* normalised) noexcept {
  RowwiseProblem p = problem;
  const bool ce = p.loss == Loss::CrossEntropy, nll = p.loss == Loss::NLL;
  const bool kl = p.loss == Loss::KLDiv, kl_logits = p.loss == Loss::KLDivLogits;
  if (!(ce || nll || kl || kl_logits) || !is_value_dtype(p.dtype) || !is_known_reduction(p.reduction))
    return Status::InvalidArgument;
  if (p.reduction == Reduction::Default) p.reduction = kl_logits ? Reduction::BatchMean : Reduction::Mean;
  if (p.reduction == Reduction::BatchMean && !(kl || kl_logits)) return Status::InvalidArgument;
  if (!grad_scale_float(p.grad_scale)) return Status::InvalidArgument;

  // Shape: N >= 0 rows of C >= 1 classes, rows row_stride >= C elements apart.
  if (p.rows < 0 || p.classes < 1 || p.row_stride < 0) return Status::InvalidArgument;
  if (p.row_stride == 0) p.row_stride = p.classes;
  if (p.row_stride < p.classes) return Status::InvalidArgument;
  const std::size_t elem = dtype_size(p.dtype);
  std::int64_t span = 0, span_bytes = 0, numel = 0;  // span: elements from the first to one past the last
  if (p.rows > 0) {
    if (__builtin_mul_overflow(p.rows - 1, p.row_stride, &span) || __builtin_add_overflow(span, p.classes, &span))
      return Status::InvalidArgument;
  }
  if (!byte_size(span, elem, &span_bytes)) return Status::InvalidArgument;
  if (__builtin_mul_overflow(p.rows, p.classes, &numel) || !byte_size(numel, sizeof(float), &span /*scratch*/))
    return Status::InvalidArgument;

  // Which inputs each loss reads. cross_entropy takes labels (sparse) or a dense target, not both.
  const bool has_data = p.rows > 0;
  if (has_data && p.input == nullptr) return Status::InvalidArgument;
  if (ce) {
    if (p.labels != nullptr && p.target != nullptr) return Status::InvalidArgument;
    if (has_data && p.labels == nullptr && p.target == nullptr) return Status::InvalidArgument;
  } else if (nll) {
    if (p.target != nullptr || (has_data && p.labels == nullptr)) return Status::InvalidArgument;
  } else {  // KL losses: a dense target, no labels, no class weights
    if (p.labels != nullptr || p.class_weight != nullptr) return Status::InvalidArgument;
    if (has_data && p.target == nullptr) return Status::InvalidArgument;
  }
  if (p.labels != nullptr && !is_label_dtype(p.label_dtype)) return Status::InvalidArgument;

  const RowwiseParams& k = p.params;
  if (ce) {
    // In [0, 1], and a positive value float-representable (the CUDA path would read 1e-46 as 0).
    if (!(zero_or_positive_float(k.label_smoothing) && k.label_smoothing <= 1)) return Status::InvalidArgument;
    if (!zero_or_positive_float(k.z_loss)) return Status::InvalidArgument;
    if (!zero_or_positive_float(k.softcap)) return Status::InvalidArgument;
  }
  if (kl_logits && !positive_float(k.temperature)) return Status::InvalidArgument;

  const std::int64_t loss_count = loss_output_count(p);
  if (loss_count > 0 && out.loss == nullptr) return Status::InvalidArgument;
  if (out.lse != nullptr && !ce) return Status::InvalidArgument;

  std::int64_t label_bytes = 0, weight_bytes = 0, loss_bytes = 0, lse_bytes = 0;
  if (p.labels != nullptr && !byte_size(p.rows, dtype_size(p.label_dtype), &label_bytes)) return Status::InvalidArgument;
  if (p.class_weight != nullptr && !byte_size(p.classes, sizeof(float), &weight_bytes)) return Status::InvalidArgument;
  if (!byte_size(loss_count, sizeof(float), &loss_bytes)) return Status::InvalidArgument;
  if (out.lse != nullptr && !byte_size(p.rows, sizeof(float), &lse_bytes)) return Status::InvalidArgument;
  if (!aligned(p.input, elem) || !aligned(p.target, elem) || !aligned(out.grad, elem) ||
      (p.labels != nullptr && !aligned(p.labels, dtype_size(p.label_dtype))) ||
      !aligned(p.class_weight, sizeof(float)) || !aligned(out.loss, sizeof(float)) ||
      !aligned(out.lse, sizeof(float)) || !aligned(out.error_count, sizeof(std::int64_t)))
    return Status::InvalidArgument;
  const Region regions[] = {
      {p.input, span_bytes, false},                                          // 0
      {p.target, p.target ? span_bytes : 0, false},                          // 1
      {p.labels, label_bytes, false},                                        // 2
      {p.class_weight, weight_bytes, false},                                 // 3
      {out.grad, out.grad ? span_bytes : 0, true},                           // 4
      {out.loss, loss_bytes, true},                                          // 5
      {out.lse, lse_bytes, true},                                            // 6
      {out.error_count, out.error_count ? std::int64_t(sizeof(std::int64_t)) : 0, true},  // 7
  };
  if (!regions_disjoint(regions, 0, 4)) return Status::InvalidArgument;

  *normalised = p;
  return Status::Success;
}

Status validate(const LinearCrossEntropyProblem& problem, const LinearCrossEntropyOutputs& out,
                LinearCrossEntropyProblem* normalised) noexcept {
  LinearCrossEntropyProblem p = problem;
  if (!is_value_dtype(p.dtype) || !is_known_reduction(p.reduction)) return Status::InvalidArgument;
  if (p.reduction == Reduction::Default) p.reduction = Reduction::Mean;
  if (p.reduction == Reduction::BatchMean) return Status::InvalidArgument;  // KL losses only
  if (!grad_scale_float(p.grad_scale)) return Status::InvalidArgument;

  // Shape: N >= 0 rows of H >= 1 hidden values (rows hidden_stride >= H apart), V >= 1 classes.
  if (p.rows < 0 || p.hidden_size < 1 || p.classes < 1 || p.hidden_stride < 0 || p.max_chunk_rows < 0)
    return Status::InvalidArgument;
  if (p.hidden_stride == 0) p.hidden_stride = p.hidden_size;
  if (p.hidden_stride < p.hidden_size) return Status::InvalidArgument;
  // The GEMMs (CBLAS, cuBLAS) take int dimensions and leading dimensions.
  constexpr std::int64_t kIntMax = std::numeric_limits<int>::max();
  if (p.classes > kIntMax || p.hidden_stride > kIntMax) return Status::InvalidArgument;
  const std::size_t elem = dtype_size(p.dtype);
  std::int64_t hidden_span = 0, hidden_bytes = 0, weight_numel = 0, weight_bytes = 0, bias_bytes = 0;
  if (p.rows > 0 && (__builtin_mul_overflow(p.rows - 1, p.hidden_stride, &hidden_span) ||
                     __builtin_add_overflow(hidden_span, p.hidden_size, &hidden_span)))
    return Status::InvalidArgument;
  if (!byte_size(hidden_span, elem, &hidden_bytes) || __builtin_mul_overflow(p.classes, p.hidden_size, &weight_numel) ||
      !byte_size(weight_numel, elem, &weight_bytes) || !byte_size(p.classes, elem, &bias_bytes))
    return Status::InvalidArgument;

  // Inputs: weight always (it defines the gradients' shapes), hidden and labels when there are rows.
  if (p.weight == nullptr) return Status::InvalidArgument;
  if (p.rows > 0 && (p.hidden == nullptr || p.labels == nullptr)) return Status::InvalidArgument;
  if (p.labels != nullptr && !is_label_dtype(p.label_dtype)) return Status::InvalidArgument;
  if (out.grad_bias != nullptr && p.bias == nullptr) return Status::InvalidArgument;  // no bias, no gradient

  const RowwiseParams& k = p.params;
  if (!(zero_or_positive_float(k.label_smoothing) && k.label_smoothing <= 1)) return Status::InvalidArgument;
  if (!zero_or_positive_float(k.z_loss) || !zero_or_positive_float(k.softcap)) return Status::InvalidArgument;
  if (k.log_target || k.temperature != 1.0) return Status::InvalidArgument;  // KL options: not this loss's

  const std::int64_t loss_count = p.reduction == Reduction::None ? p.rows : 1;
  if (loss_count > 0 && out.loss == nullptr) return Status::InvalidArgument;
  std::int64_t label_bytes = 0, cw_bytes = 0, loss_bytes = 0, lse_bytes = 0;
  if (p.labels != nullptr && !byte_size(p.rows, dtype_size(p.label_dtype), &label_bytes)) return Status::InvalidArgument;
  if (p.class_weight != nullptr && !byte_size(p.classes, sizeof(float), &cw_bytes)) return Status::InvalidArgument;
  if (!byte_size(loss_count, sizeof(float), &loss_bytes)) return Status::InvalidArgument;
  if (out.lse != nullptr && !byte_size(p.rows, sizeof(float), &lse_bytes)) return Status::InvalidArgument;
  if (!aligned(p.hidden, elem) || !aligned(p.weight, elem) || !aligned(p.bias, elem) ||
      (p.labels != nullptr && !aligned(p.labels, dtype_size(p.label_dtype))) ||
      !aligned(p.class_weight, sizeof(float)) || !aligned(out.loss, sizeof(float)) ||
      !aligned(out.lse, sizeof(float)) || !aligned(out.grad_hidden, elem) || !aligned(out.grad_weight, elem) ||
      !aligned(out.grad_bias, elem) || !aligned(out.error_count, sizeof(std::int64_t)))
    return Status::InvalidArgument;
  // No in-place output here: every output is disjoint from every input and every other output.
  const Region regions[] = {
      {p.hidden, hidden_bytes, false},
      {p.weight, weight_bytes, false},
      {p.bias, p.bias ? bias_bytes : 0, false},
      {p.labels, label_bytes, false},
      {p.class_weight, cw_bytes, false},
      {out.loss, loss_bytes, true},
      {out.lse, lse_bytes, true},
      {out.grad_hidden, out.grad_hidden ? hidden_bytes : 0, true},
      {out.grad_weight, out.grad_weight ? weight_bytes : 0, true},
      {out.grad_bias, out.grad_bias ? bias_bytes : 0, true},
      {out.error_count, out.error_count ? std::int64_t(sizeof(std::int64_t)) : 0, true},
  };
  if (!regions_disjoint(regions, -1, -1)) return Status::InvalidArgument;

  *normalised = p;
  return Status::Success;
}

}  // namespace detail
}  // namespace fusedloss
