// linear_cross_entropy's chunking and workspace layout (see linear_ce_plan.hpp).
#include "src/linear_ce_plan.hpp"

#include <algorithm>

#include "src/backend.hpp"

namespace fusedloss {
namespace detail {
namespace {

constexpr std::size_t kAlign = 256;
std::size_t align_up(std::size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

/// Bytes of a region of `count` elements of `elem` bytes, aligned; false on overflow.
bool region_bytes(std::int64_t count, std::size_t elem, std::size_t* bytes) {
  std::size_t b = 0;
  if (count < 0 || __builtin_mul_overflow(static_cast<std::size_t>(count), elem, &b) || b > (~std::size_t(0) >> 2))
    return false;
  *bytes = align_up(b);
  return true;
}

}  // namespace

RowwiseProblem linear_ce_chunk_problem(const LinearCrossEntropyProblem& p, std::int64_t rows, const float* logits,
                                       const void* labels) noexcept {
  RowwiseProblem ce;
  ce.loss = Loss::CrossEntropy;
  ce.dtype = DType::Float32;
  ce.rows = rows;
  ce.classes = p.classes;
  ce.row_stride = p.classes;
  ce.input = logits;
  ce.labels = labels;
  ce.label_dtype = p.label_dtype;
  ce.class_weight = p.class_weight;
  ce.reduction = Reduction::None;
  ce.grad_scale = p.grad_scale;
  ce.params = p.params;
  return ce;
}

bool linear_ce_layout(const LinearCrossEntropyProblem& p, const LinearCrossEntropyOutputs& out, Backend backend,
                      LinearCeLayout* layout) noexcept {
  const bool half = p.dtype != DType::Float32;
  const bool cuda = backend == Backend::CUDA;
  const std::int64_t V = p.classes, H = p.hidden_size;
  std::int64_t VH = 0;
  if (__builtin_mul_overflow(V, H, &VH)) return false;

  // Fixed part: independent of the chunk size.
  std::size_t weight32 = 0, grad_weight32 = 0, bias_acc = 0;
  if (half && !region_bytes(VH, sizeof(float), &weight32)) return false;
  // The grad_weight accumulator: fp16/bf16 always; fp32 only when accumulating, since this call's
  // gradient is summed apart from the old value and added to it once (see accumulate).
  if (out.grad_weight != nullptr && (half || out.accumulate) && !region_bytes(VH, sizeof(float), &grad_weight32))
    return false;
  if (out.grad_bias != nullptr && !region_bytes(V, sizeof(double), &bias_acc)) return false;
  const std::size_t scalars = cuda ? kAlign : 0, blas = cuda ? kLinearCeBlasWorkspace : 0;
  // The chunk's cross_entropy workspace (CUDA) grows with its rows; sized for every row (an upper bound).
  std::size_t ce = 0;
#if FUSEDLOSS_WITH_CUDA
  if (cuda) ce = align_up(cuda_workspace_size(linear_ce_chunk_problem(p, std::max<std::int64_t>(p.rows, 1), nullptr, p.labels)));
#endif
  // CPU: the in-place cross_entropy's own scratch, for kLinearCeRowWorkers workers (see the header).
  CpuScratchBound scratch;
  if (!cuda) scratch = cpu_sparse_ce_scratch(linear_ce_chunk_problem(p, 1, nullptr, p.labels), kLinearCeRowWorkers);
  const std::size_t fixed = weight32 + grad_weight32 + bias_acc + scalars + blas + ce + scratch.fixed;

  // Per row: V fp32 logits, a loss, and (fp16/bf16) H fp32 hidden (+ H fp32 grad_hidden) values.
  // Each chunk region is rounded up to 256 bytes: up to 4 × 256 bytes of slack are reserved.
  std::size_t per_row = 0;
  const std::size_t row_elems = static_cast<std::size_t>(V) + 1 +
                                (half ? static_cast<std::size_t>(H) * (out.grad_hidden != nullptr ? 2 : 1) : 0);
  if (__builtin_mul_overflow(row_elems, sizeof(float), &per_row)) return false;
  per_row += scratch.per_row;
  const std::size_t slack = 4 * kAlign;
  if (p.memory_budget_bytes < fixed + slack + per_row) return false;
  std::int64_t chunk = static_cast<std::int64_t>(
      std::min<std::size_t>((p.memory_budget_bytes - fixed - slack) / per_row, std::size_t(1) << 40));
  chunk = std::min<std::int64_t>(chunk, std::int64_t(1) << 30);  // an int for the GEMMs
  if (p.max_chunk_rows > 0) chunk = std::min(chunk, p.max_chunk_rows);
  chunk = std::max<std::int64_t>(1, std::min(chunk, p.rows));

  LinearCeLayout l;
  l.chunk_rows = chunk;
  std::size_t at = 0;
  const auto place = [&at](std::size_t bytes) {
    if (bytes == 0) return kLinearCeAbsent;
    const std::size_t offset = at;
    at += bytes;
    return offset;
  };
  std::size_t b = 0;
  if (!region_bytes(chunk * V, sizeof(float), &b)) return false;
  l.logits = place(b);
  if (!region_bytes(chunk, sizeof(float), &b)) return false;
  l.row_loss = place(b);
  if (!region_bytes(half ? chunk * H : 0, sizeof(float), &b)) return false;
  l.hidden32 = place(b);
  if (!region_bytes(half && out.grad_hidden != nullptr ? chunk * H : 0, sizeof(float), &b)) return false;
  l.grad_hidden32 = place(b);
  l.weight32 = place(weight32);
  l.grad_weight32 = place(grad_weight32);
  l.bias_acc = place(bias_acc);
  l.scalars = place(scalars);
  l.blas = place(blas);
  l.ce = place(ce);
  l.bytes = at;
  l.host_scratch = scratch.fixed + scratch.per_row * static_cast<std::size_t>(chunk);
  if (l.bytes > p.memory_budget_bytes || l.host_scratch > p.memory_budget_bytes - l.bytes) return false;
  *layout = l;
  return true;
}

}  // namespace detail
}  // namespace fusedloss
