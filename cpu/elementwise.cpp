// fusedloss CPU path — the elementwise losses (mse … bce_with_logits).
//
// One fused pass per chunk of kChunk elements: load x, y, w as double, evaluate the shared
// ElementwiseOp<L>::eval<double>, accumulate Σ w·l into the chunk's partial, and write
// w·dl·scale·grad_scale (the reduction's scale, 1/n for mean, is known up front). The chunk
// partials are added in chunk order, so the result does not depend on the thread count.
// rmse needs the total before any gradient: a read-only first pass sums w·r², a second pass
// writes the gradients (safe with grad == input).
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/load_store.hpp"
#include "cpu/parallel.hpp"
#include "fusedloss/detail/elementwise_ops.hpp"
#include "src/backend.hpp"

namespace fusedloss {
namespace detail {
namespace {

using cpu::chunk_count;
using cpu::parallel_for_chunks;

constexpr std::int64_t kChunk = 32768;  // elements per chunk: fixed, so results are thread-count independent

struct ChunkResult {
  double sum = 0.0;       // Σ w_i·l_i over the chunk, in index order
  std::int64_t bad = 0;   // invalid data values in the chunk
};

/// One pass over every element. `loss_none` (may be null) receives w·l as float32; `grad`
/// (may be null) receives w·dl·grad_factor in the problem's dtype. Returns false when the
/// parallel runner failed (cannot happen here: no allocation in the workers).
template <class Op, class IO>
bool elementwise_pass(const ElementwiseProblem& p, int threads, float* loss_none,
                      typename IO::storage* grad, double grad_factor, std::vector<ChunkResult>& parts) {
  using S = typename IO::storage;
  constexpr bool kPerColumn = std::is_same<Op, ElementwiseOp<Loss::BCEWithLogits>>::value;
  const std::int64_t n = p.n;
  const S* x = static_cast<const S*>(p.input);
  const S* y = static_cast<const S*>(p.target);
  const S* w = static_cast<const S*>(p.weight);
  const float* pos_col = kPerColumn ? p.params.pos_weight_per_column : nullptr;
  const std::int64_t columns = p.params.columns;
  ElementwiseOpParams<double> base;
  base.delta = p.params.delta;
  base.beta = p.params.beta;
  base.pos_weight = p.params.pos_weight;

  return parallel_for_chunks(static_cast<std::int64_t>(parts.size()), threads, [&] {
    return [&](std::int64_t chunk) {
      const std::int64_t begin = chunk * kChunk;
      const std::int64_t end = begin + kChunk < n ? begin + kChunk : n;
      ElementwiseOpParams<double> op = base;
      std::int64_t col = (pos_col != nullptr && columns > 0) ? begin % columns : 0;
      double acc = 0.0;
      std::int64_t bad = 0;
      for (std::int64_t i = begin; i < end; ++i) {
        const double xi = IO::load(x, i);  // read before grad[i] is written (grad may alias x)
        const double yi = IO::load(y, i);
        const double wi = w != nullptr ? IO::load(w, i) : 1.0;
        if (kPerColumn && pos_col != nullptr) {
          op.pos_weight = static_cast<double>(pos_col[col]);
          if (++col == columns) col = 0;
        }
        double wl, g;
        bool valid = true;
        if constexpr (Op::kHasInvalidInputs) valid = Op::valid(xi);
        if (valid) {
          double l, d;
          Op::eval(xi, yi, op, l, d);
          wl = wi * l;
          g = wi * d * grad_factor;
        } else {
          ++bad;
          wl = std::numeric_limits<double>::quiet_NaN();
          g = 0.0;
        }
        acc += wl;
        if (loss_none != nullptr) loss_none[i] = static_cast<float>(wl);
        if (grad != nullptr) IO::store(grad, i, g);
      }
      parts[static_cast<std::size_t>(chunk)] = ChunkResult{acc, bad};
    };
  });
}

/// rmse's gradient pass: grad_i = w_i·dl_i·factor with dl = 2r (the shared mse derivative).
template <class IO>
bool rmse_grad_pass(const ElementwiseProblem& p, int threads, typename IO::storage* grad, double factor,
                    std::int64_t chunks) {
  using S = typename IO::storage;
  using Op = ElementwiseOp<Loss::RMSE>;
  const std::int64_t n = p.n;
  const S* x = static_cast<const S*>(p.input);
  const S* y = static_cast<const S*>(p.target);
  const S* w = static_cast<const S*>(p.weight);
  const ElementwiseOpParams<double> op{};
  return parallel_for_chunks(chunks, threads, [&] {
    return [&](std::int64_t chunk) {
      const std::int64_t begin = chunk * kChunk;
      const std::int64_t end = begin + kChunk < n ? begin + kChunk : n;
      for (std::int64_t i = begin; i < end; ++i) {
        if (factor == 0.0) {  // L == 0 (or infinite): the gradient is defined as 0
          IO::store(grad, i, 0.0);
          continue;
        }
        const double xi = IO::load(x, i);
        const double yi = IO::load(y, i);
        const double wi = w != nullptr ? IO::load(w, i) : 1.0;
        double l, d;
        Op::eval(xi, yi, op, l, d);
        IO::store(grad, i, wi * d * factor);
      }
    };
  });
}

template <class Op, class IO>
Status run_elementwise(const ElementwiseProblem& p, const LossOutputs& out, int threads) {
  using S = typename IO::storage;
  const std::int64_t n = p.n;
  const std::int64_t chunks = chunk_count(n, kChunk);
  std::vector<ChunkResult> parts(static_cast<std::size_t>(chunks));
  S* grad = static_cast<S*>(out.grad);
  const bool is_rmse = p.loss == Loss::RMSE;

  bool ok;
  if (is_rmse) {
    ok = elementwise_pass<Op, IO>(p, threads, nullptr, nullptr, 0.0, parts);  // read-only: Σ w·r²
  } else {
    const bool mean = p.reduction == Reduction::Mean || p.reduction == Reduction::BatchMean;
    const double factor = mean ? p.grad_scale / static_cast<double>(n) : p.grad_scale;
    float* loss_none = p.reduction == Reduction::None ? out.loss : nullptr;
    ok = elementwise_pass<Op, IO>(p, threads, loss_none, grad, factor, parts);
  }
  if (!ok) return Status::OutOfMemory;  // a worker could not run (host memory exhausted)

  double total = 0.0;
  std::int64_t bad = 0;
  for (const ChunkResult& r : parts) {  // chunk order: deterministic
    total += r.sum;
    bad += r.bad;
  }

  if (is_rmse) {
    // L = sqrt(Σ w r² / n) (n == 0: NaN); grad_i = w_i·r_i/(n·L)·grad_scale = w_i·(2r_i)·gs/(2nL).
    const double L = std::sqrt(total / static_cast<double>(n));
    out.loss[0] = static_cast<float>(L);
    if (grad != nullptr && n > 0) {
      const double denom = 2.0 * static_cast<double>(n) * L;
      double factor = 0.0;
      if (L != 0.0) factor = p.grad_scale / denom;  // NaN L (NaN data) propagates as NaN
      if (!rmse_grad_pass<IO>(p, threads, grad, factor, chunks)) return Status::OutOfMemory;
    }
  } else if (p.reduction == Reduction::Sum) {
    out.loss[0] = static_cast<float>(total);
  } else if (p.reduction != Reduction::None) {
    out.loss[0] = static_cast<float>(total / static_cast<double>(n));  // n == 0: NaN
  }

  if (out.error_count != nullptr) *out.error_count = bad;
  return bad > 0 ? Status::InvalidValue : Status::Success;
}

}  // namespace

Status cpu_compute(const ElementwiseProblem& problem, const LossOutputs& outputs, int threads) noexcept {
  try {
    Status status = Status::InvalidArgument;  // an unknown loss or dtype (validate() never passes one)
    cpu::visit_value_dtype(problem.dtype, [&](auto io) {
      using IO = decltype(io);
      visit_elementwise_op(problem.loss, [&](auto op) {
        status = run_elementwise<decltype(op), IO>(problem, outputs, threads < 1 ? 1 : threads);
      });
    });
    return status;
  } catch (...) {
    return Status::OutOfMemory;  // std::bad_alloc for the partials: host memory exhausted
  }
}

}  // namespace detail
}  // namespace fusedloss
