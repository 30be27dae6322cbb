// fusedloss CPU path — the elementwise losses (mse … bce_with_logits).
//
// One fused pass per chunk of kChunk elements: load x, y, w as double, evaluate the loss, add
// w·l into the chunk's partial, and write w·dl·scale·grad_scale (the reduction's scale, 1/n for
// mean, is known up front). The chunk partials are added in chunk order, so the result does not
// depend on the thread count. rmse needs the total before any gradient: a read-only first pass
// sums w·r², a second pass writes the gradients (safe with grad == input).
//
// The chunk loop runs on SIMD vectors of doubles (Google Highway, compiled for every x86 target
// and picked at run time): VecOp<L> below is the lane-by-lane twin of the shared scalar
// ElementwiseOp<L> (same operations in the same order, so the arithmetic-only losses give the
// same bits; the transcendental ones use the vector math of cpu/simd-inl.h, and bce_with_logits
// a reformulated gradient, see its VecOp). Every element goes through VecOp, the last partial
// vector of a chunk through lane buffers. bce_with_logits' VecOp is staged (one stage at a time
// over a block, see chunk_elements), and the memory-bound losses' passes over more than 32 MiB
// stream their outputs past the cache; neither changes a bit of the results.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/elementwise.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/load_store.hpp"
#include "cpu/parallel.hpp"
#include "cpu/simd-inl.h"
#include "fusedloss/detail/elementwise_ops.hpp"
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "src/backend.hpp"

HWY_BEFORE_NAMESPACE();
namespace fusedloss {
namespace detail {
namespace cpu {
namespace HWY_NAMESPACE {

/// ElementwiseOpParams<double> broadcast to lanes.
struct VParams {
  VD delta, beta, pos_weight;
};

/// The vector twin of ElementwiseOp<L>, one per loss.
template <class Op>
struct VecOp;

template <>
struct VecOp<ElementwiseOp<Loss::MSE>> {
  static constexpr bool kMemoryBound = true;  // a few flops per element: streams big outputs
  HWY_INLINE static void eval(DD d, VD x, VD y, const VParams&, VD& loss, VD& dloss) {
    const VD r = hn::Sub(x, y);
    loss = hn::Mul(r, r);
    dloss = hn::Mul(hn::Set(d, 2.0), r);
  }
};
template <>
struct VecOp<ElementwiseOp<Loss::RMSE>> : VecOp<ElementwiseOp<Loss::MSE>> {};

template <>
struct VecOp<ElementwiseOp<Loss::MAE>> {
  static constexpr bool kMemoryBound = true;  // a few flops per element: streams big outputs
  HWY_INLINE static void eval(DD d, VD x, VD y, const VParams&, VD& loss, VD& dloss) {
    const VD r = hn::Sub(x, y);
    loss = hn::Abs(r);
    dloss = Sign(d, r);
  }
};

template <>
struct VecOp<ElementwiseOp<Loss::MSLE>> {
  HWY_INLINE static void eval(DD d, VD x, VD y, const VParams&, VD& loss, VD& dloss) {
    const VD zero = hn::Zero(d), one = hn::Set(d, 1.0);
    const VD dl = hn::Sub(Log1p(d, MaxLike(zero, x)), Log1p(d, MaxLike(zero, y)));
    loss = hn::Mul(dl, dl);
    dloss = hn::IfThenZeroElse(hn::Le(x, zero), hn::Div(hn::Mul(hn::Set(d, 2.0), dl), hn::Add(one, x)));
  }
};

template <>
struct VecOp<ElementwiseOp<Loss::Huber>> {
  static constexpr bool kMemoryBound = true;  // a few flops per element: streams big outputs
  HWY_INLINE static void eval(DD d, VD x, VD y, const VParams& p, VD& loss, VD& dloss) {
    const VD r = hn::Sub(x, y);
    const VD a = hn::Abs(r);
    const VD c = hn::IfThenElse(hn::Lt(a, p.delta), a, p.delta);
    loss = hn::Mul(c, hn::Sub(a, hn::Mul(hn::Set(d, 0.5), c)));
    dloss = hn::Mul(Sign(d, r), c);
  }
};

template <>
struct VecOp<ElementwiseOp<Loss::SmoothL1>> {
  static constexpr bool kMemoryBound = true;  // a few flops per element: streams big outputs
  HWY_INLINE static void eval(DD d, VD x, VD y, const VParams& p, VD& loss, VD& dloss) {
    const VD half = hn::Set(d, 0.5);
    const VD r = hn::Sub(x, y);
    const VD a = hn::Abs(r);
    const MD quad = hn::Lt(a, p.beta);
    const VD rb = hn::Div(r, p.beta);  // only kept where a < β (never for β = 0)
    loss = hn::IfThenElse(quad, hn::Mul(hn::Mul(half, r), rb), hn::Sub(a, hn::Mul(half, p.beta)));
    dloss = hn::IfThenElse(quad, rb, Sign(d, r));
  }
};

template <>
struct VecOp<ElementwiseOp<Loss::PseudoHuber>> {
  HWY_INLINE static void eval(DD d, VD x, VD y, const VParams& p, VD& loss, VD& dloss) {
    const VD one = hn::Set(d, 1.0);
    const VD r = hn::Sub(x, y);
    const VD a = hn::Div(r, p.delta);
    // sqrt(1 + a²) cannot overflow in double here: |r| ≤ 2·FLT_MAX and δ ≥ FLT_MIN bound a² by
    // 1e154; an infinite a is the saturated case below.
    const VD h = hn::Sqrt(hn::Add(one, hn::Mul(a, a)));
    const MD saturated = hn::IsInf(a);
    const VD q = hn::IfThenElse(saturated, one, hn::Div(hn::Abs(a), hn::Add(h, one)));
    loss = hn::Mul(hn::Mul(p.delta, q), hn::Abs(r));
    dloss = hn::Mul(p.delta, hn::IfThenElse(saturated, Sign(d, a), hn::Div(a, h)));
  }
};

template <>
struct VecOp<ElementwiseOp<Loss::LogCosh>> {
  // The scalar definition's two branches (expm1, two log1p, exp and tanh in all) from ONE
  // exponential and one log1p, both the polynomials of cpu/simd-inl.h. With a = |r| and
  // e^s = scale·(1 + em1) for s = −a (a < 1) or s = −2a (ExpParts):
  //   m = e^s − 1 = scale·em1 + (scale − 1)      (no cancellation: scale = 1 near 0)
  //   a < 1: log cosh a = log1p(m²/(2(1 + m)))           (cosh a − 1 = (1 − e^{−a})²/(2e^{−a}))
  //   else:  log cosh a = a + log1p(e^{−2a}) − ln 2
  //   tanh a = −w/(w + 2), w = e^{−2a} − 1 = m(m + 2) (a < 1) or the large branch's m
  // Every log1p argument is in [0, 0.55], every term of the sums ≥ 0 (no cancellation). r = ±inf:
  // e^{−2a} = 0, so loss inf and gradient ±1; NaN stays NaN.
  HWY_INLINE static void eval(DD d, VD x, VD y, const VParams&, VD& loss, VD& dloss) {
    const VD one = hn::Set(d, 1.0), two = hn::Set(d, 2.0);
    const VD r = hn::Sub(x, y);
    const VD a = hn::Abs(r);
    const MD small = hn::Lt(a, one);
    const VD s = hn::IfThenElse(small, hn::Neg(a), hn::Mul(hn::Set(d, -2.0), a));
    VD em1, scale;
    ExpParts(d, s, em1, scale);
    const MD flushed = hn::Lt(s, hn::Set(d, -708.0));  // e^s < 2^−1021: 0 (ExpNonPositive)
    const VD e = hn::IfThenZeroElse(flushed, hn::MulAdd(em1, scale, scale));
    const VD m = hn::IfThenElse(flushed, hn::Set(d, -1.0), hn::MulAdd(em1, scale, hn::Sub(scale, one)));
    VD l, unused;
    Log1pAndReciprocal(d, hn::IfThenElse(small, hn::Div(hn::Mul(m, m), hn::Mul(two, hn::Add(one, m))), e), l, unused);
    loss = hn::IfThenElse(small, l, hn::Sub(hn::Add(a, l), hn::Set(d, 0.693147180559945309417232121458176568)));
    const VD w = hn::IfThenElse(small, hn::Mul(m, hn::Add(m, two)), m);
    dloss = hn::CopySign(hn::Div(hn::Neg(w), hn::Add(w, two)), r);
  }
};

/// ±1 from a label (the scalar `y == y ? 2·(y > 0) − 1 : y`).
HWY_INLINE VD HingeSign(DD d, VD y) {
  const VD t = hn::Sub(hn::Mul(hn::Set(d, 2.0), hn::IfThenElseZero(hn::Gt(y, hn::Zero(d)), hn::Set(d, 1.0))),
                       hn::Set(d, 1.0));
  return hn::IfThenElse(hn::Eq(y, y), t, y);
}
/// max(0, m) with NaN kept and −inf → 0.
HWY_INLINE VD PositivePart(DD d, VD m) {
  return hn::IfThenElse(hn::Gt(m, hn::Zero(d)), m, hn::IfThenElse(hn::Eq(m, m), hn::Zero(d), m));
}

template <>
struct VecOp<ElementwiseOp<Loss::Hinge>> {
  static constexpr bool kMemoryBound = true;  // a few flops per element: streams big outputs
  HWY_INLINE static void eval(DD d, VD x, VD y, const VParams&, VD& loss, VD& dloss) {
    const VD t = HingeSign(d, y);
    const VD margin = hn::Sub(hn::Set(d, 1.0), hn::Mul(t, x));
    const VD active = hn::IfThenElseZero(hn::Gt(margin, hn::Zero(d)), hn::Set(d, 1.0));
    loss = PositivePart(d, margin);
    dloss = hn::IfThenElse(hn::Eq(margin, margin), hn::Mul(hn::Neg(t), active), margin);
  }
};

template <>
struct VecOp<ElementwiseOp<Loss::SquaredHinge>> {
  static constexpr bool kMemoryBound = true;  // a few flops per element: streams big outputs
  HWY_INLINE static void eval(DD d, VD x, VD y, const VParams&, VD& loss, VD& dloss) {
    const VD t = HingeSign(d, y);
    const VD margin = PositivePart(d, hn::Sub(hn::Set(d, 1.0), hn::Mul(t, x)));
    loss = hn::Mul(margin, margin);
    dloss = hn::Mul(hn::Mul(hn::Set(d, -2.0), t), margin);
  }
};

template <>
struct VecOp<ElementwiseOp<Loss::BCE>> {
  static MD valid(DD d, VD p) { return hn::And(hn::Ge(p, hn::Zero(d)), hn::Le(p, hn::Set(d, 1.0))); }
  HWY_INLINE static void eval(DD d, VD p, VD y, const VParams&, VD& loss, VD& dloss) {
    const VD one = hn::Set(d, 1.0), floor = hn::Set(d, -100.0);
    const VD log_p = MaxLike(Log(d, p), floor);
    const VD log_1mp = MaxLike(Log1p(d, hn::Neg(p)), floor);
    loss = hn::Neg(hn::Add(hn::Mul(y, log_p), hn::Mul(hn::Sub(one, y), log_1mp)));
    dloss = hn::Div(hn::Sub(p, y), MaxLike(hn::Mul(p, hn::Sub(one, p)), hn::Set(d, 1e-12)));
  }
};

template <>
struct VecOp<ElementwiseOp<Loss::BCEWithLogits>> {
  // Staged: steps 1a and 1b depend on x only and form one long dependency chain (~140 cycles per
  // vector, counted from the latencies), so chunk_elements runs each stage over a block of lanes
  // before the next (see there).
  static constexpr bool kStaged = true;
  // 1a. e = e^{−|x|}.
  HWY_INLINE static VD exp_stage(DD d, VD x) { return ExpNonPositive(d, hn::Neg(hn::Abs(x))); }
  // 1b. log1p(e) and 1/u, u = 1 + e, with one division (Log1pAndReciprocal).
  HWY_INLINE static void log_stage(DD d, VD e, VD& l1p, VD& inv_u) { Log1pAndReciprocal(d, e, l1p, inv_u); }
  // 2. softplus(±x) = max(±x, 0) + log1p(e), so with A = pw·y + 1 − y
  //      ℓ = pw·y·softplus(−x) + (1 − y)·softplus(x) = A·log1p(e) + (x > 0 ? (1 − y)·x : −pw·y·x),
  //    a sum of two non-negative terms for y ∈ [0, 1] (no cancellation).
  // 3. With q = e/u = σ(−|x|), the gradient A·σ(x) − pw·y is
  //      x > 0: (1 − y) − A·q      x ≤ 0: A·q − pw·y
  //    (σ(x) = 1 − q for x > 0), so σ − 1 never forms: at y = 1, x = 30 it is −q to the last bit
  //    instead of 1/u − 1, which keeps only 3 significant digits. (x = 0: both forms agree.)
  HWY_INLINE static void finish(DD d, VD x, VD y, const VParams& p, VD e, VD l1p, VD inv_u, VD& loss, VD& dloss) {
    const VD one = hn::Set(d, 1.0);
    const VD pw_y = hn::Mul(p.pos_weight, y);
    const VD one_m_y = hn::Sub(one, y);
    const VD A = hn::Add(pw_y, one_m_y);
    const MD positive = hn::Gt(x, hn::Zero(d));
    // ±inf x: 0·inf = NaN where the scalar definition has it too (y = 1 at +inf, y = 0 at −inf).
    loss = hn::MulAdd(A, l1p, hn::Mul(x, hn::IfThenElse(positive, one_m_y, hn::Neg(pw_y))));
    const VD aq = hn::Mul(A, hn::Mul(e, inv_u));
    dloss = hn::IfThenElse(positive, hn::Sub(one_m_y, aq), hn::Sub(aq, pw_y));
  }
  HWY_INLINE static void eval(DD d, VD x, VD y, const VParams& p, VD& loss, VD& dloss) {
    const VD e = exp_stage(d, x);
    VD l1p, inv_u;
    log_stage(d, e, l1p, inv_u);
    finish(d, x, y, p, e, l1p, inv_u, loss, dloss);
  }
};

/// Whether VecOp V splits its work into stages (exp_stage, log_stage, finish).
template <class V, class = void>
struct IsStaged : std::false_type {};
template <class V>
struct IsStaged<V, std::void_t<decltype(V::kStaged)>> : std::true_type {};
/// Whether VecOp V's loop is bound by memory, not by its arithmetic (the losses without
/// transcendental functions): only these stream big outputs past the cache. Measured (f32 2^22,
/// 2 threads, two interleaved runs each): mse 0.88–0.98 ms streamed vs 0.98–1.34 stored, huber
/// 0.99–1.20 vs 1.25–1.46; bce_with_logits 2.15–2.45 vs 1.99–2.00 — its FP-bound loop only
/// loses by it; msle, bce, log_cosh, pseudo_huber within noise.
template <class V, class = void>
struct IsMemoryBound : std::false_type {};
template <class V>
struct IsMemoryBound<V, std::void_t<decltype(V::kMemoryBound)>> : std::true_type {};

constexpr std::int64_t kChunk = 32768;  // elements per chunk: fixed, so results are thread-count independent

struct ChunkResult {
  double sum = 0.0;       // Σ w_i·l_i over the chunk
  std::int64_t bad = 0;   // invalid data values in the chunk
};

/// The chunk [begin, end) on VecOp<L>: whole vectors in place; the last partial vector is copied
/// into lane buffers (padded with zeros, a valid input of every loss), computed the same way and
/// copied back, so every element of every chunk gets the same vector arithmetic. bce_with_logits'
/// per-column pos_weight becomes a vector of each lane's column weight.
template <class Op, class IO>
ChunkResult chunk_elements(const ElementwiseProblem& p, std::int64_t begin, std::int64_t end, float* loss_none,
                           typename IO::storage* grad, double grad_factor, bool stream) {
  using S = typename IO::storage;
  using V = VecOp<Op>;
  const DD d;
  const std::int64_t lanes = static_cast<std::int64_t>(hn::Lanes(d));
  const S* x = static_cast<const S*>(p.input);
  const S* y = static_cast<const S*>(p.target);
  const S* w = static_cast<const S*>(p.weight);
  constexpr bool kPerColumn = std::is_same<Op, ElementwiseOp<Loss::BCEWithLogits>>::value;
  const float* pos_col = kPerColumn ? p.params.pos_weight_per_column : nullptr;
  const std::int64_t columns = p.params.columns;
  std::int64_t col = pos_col != nullptr ? begin % columns : 0;
  VParams op{hn::Set(d, p.params.delta), hn::Set(d, p.params.beta), hn::Set(d, p.params.pos_weight)};
  const VD factor = hn::Set(d, grad_factor);
  const VD nan = hn::Set(d, std::numeric_limits<double>::quiet_NaN());
  VD acc = hn::Zero(d);
  std::int64_t bad = 0;
  // Outputs too big to be still cached when the caller reads them bypass the cache (StoreOrStream).
  const bool stream_grad = stream && grad != nullptr && CanStream(typename VecIo<IO>::StoreTag(), grad + begin);
  const bool stream_loss = stream && loss_none != nullptr && CanStream(DF(), loss_none + begin);
  // The whole evaluation of one vector (an op's stages in one go).
  const auto evaluate = [&](VD xv, VD yv, VD& l, VD& dl) __attribute__((always_inline)) { V::eval(d, xv, yv, op, l, dl); };
  // One vector of elements: xs, ys, ws (may be null) in, ls (may be null), gs (may be null) out,
  // evaluated by `eval`. The partial last vector passes the mask of its live lanes (padding adds
  // nothing to the sums).
  const auto step = [&](const S* xs, const S* ys, const S* ws, float* ls, S* gs, auto partial, MD live, auto eval) __attribute__((always_inline)) {
    const VD xv = VecIo<IO>::Load(d, xs);  // read before gs is written (grad may alias x)
    const VD yv = VecIo<IO>::Load(d, ys);
    VD l, dl;
    eval(xv, yv, l, dl);
    if (ws != nullptr) {
      const VD wv = VecIo<IO>::Load(d, ws);
      l = hn::Mul(wv, l);
      dl = hn::Mul(wv, dl);
    }
    VD g = hn::Mul(dl, factor);
    if constexpr (Op::kHasInvalidInputs) {
      const MD valid = V::valid(d, xv);
      l = hn::IfThenElse(valid, l, nan);
      g = hn::IfThenElseZero(valid, g);
      bad += static_cast<std::int64_t>(hn::CountTrue(d, decltype(partial)::value ? hn::AndNot(valid, live) : hn::Not(valid)));
    }
    acc = hn::Add(acc, decltype(partial)::value ? hn::IfThenElseZero(live, l) : l);
    if (ls != nullptr) VecIo<Io<DType::Float32>>::Store(d, ls, l, stream_loss && !decltype(partial)::value);
    if (gs != nullptr) VecIo<IO>::Store(d, gs, g, stream_grad && !decltype(partial)::value);
  };
  using Whole = std::false_type;
  using Partial = std::true_type;
  // bce_with_logits' per-column pos_weight: the lanes' column weights for the next `lanes` elements.
  const auto next_pos_weights = [&] {
    HWY_ALIGN double pw[hn::MaxLanes(DD())];
    for (std::int64_t k = 0; k < lanes; ++k) {
      pw[k] = static_cast<double>(pos_col[col]);
      if (++col == columns) col = 0;
    }
    op.pos_weight = hn::Load(d, pw);
  };
  const MD all = hn::FirstN(d, static_cast<std::size_t>(lanes));
  // The whole vectors at [from, to), `eval_at(i)` giving the evaluation of the vector at i; one loop
  // per kind of call, so the common call (no weights, reduced loss) has no per-vector tests.
  const auto whole_vectors = [&](std::int64_t from, std::int64_t to, auto eval_at) __attribute__((always_inline)) {
    if (pos_col != nullptr) {
      for (std::int64_t k = from; k < to; k += lanes) {
        next_pos_weights();
        step(x + k, y + k, w != nullptr ? w + k : nullptr, loss_none != nullptr ? loss_none + k : nullptr,
             grad != nullptr ? grad + k : nullptr, Whole(), all, eval_at(k));
      }
    } else if (w == nullptr && loss_none == nullptr && grad != nullptr) {
      for (std::int64_t k = from; k < to; k += lanes) step(x + k, y + k, nullptr, nullptr, grad + k, Whole(), all, eval_at(k));
    } else {
      for (std::int64_t k = from; k < to; k += lanes)
        step(x + k, y + k, w != nullptr ? w + k : nullptr, loss_none != nullptr ? loss_none + k : nullptr,
             grad != nullptr ? grad + k : nullptr, Whole(), all, eval_at(k));
    }
  };
  const auto in_one_go = [&](std::int64_t) __attribute__((always_inline)) { return evaluate; };
  std::int64_t i = begin;
  const std::int64_t whole_end = begin + (end - begin) / lanes * lanes;
  if constexpr (IsStaged<V>::value) {
    // A staged op's dependency chain is longer than the out-of-order window reaches across
    // vectors, so one stage at a time over a block of kStageBlock elements, through L1 buffers:
    // 1.6× faster for bce_with_logits (0.79 vs 1.23 ns per element in a microbenchmark of this loop,
    // one thread, data in L2; the library's call: 0.058 vs 0.087 ms for 65536 elements). The
    // arithmetic is the same, so are the bits. x is read in full before any gradient of the
    // block is written (grad may alias x).
    constexpr std::int64_t kStageBlock = 256;
    HWY_ALIGN double e[kStageBlock], l1p[kStageBlock], inv_u[kStageBlock];
    for (; i + kStageBlock <= whole_end; i += kStageBlock) {
      for (std::int64_t j = 0; j < kStageBlock; j += lanes) hn::Store(V::exp_stage(d, VecIo<IO>::Load(d, x + i + j)), d, e + j);
      for (std::int64_t j = 0; j < kStageBlock; j += lanes) {
        VD lv, uv;
        V::log_stage(d, hn::Load(d, e + j), lv, uv);
        hn::Store(lv, d, l1p + j);
        hn::Store(uv, d, inv_u + j);
      }
      whole_vectors(i, i + kStageBlock, [&, block = i](std::int64_t k) __attribute__((always_inline)) {
        const std::int64_t j = k - block;
        return [&, j](VD xv, VD yv, VD& l, VD& dl) __attribute__((always_inline)) {
          V::finish(d, xv, yv, op, hn::Load(d, e + j), hn::Load(d, l1p + j), hn::Load(d, inv_u + j), l, dl);
        };
      });
    }
  }
  whole_vectors(i, whole_end, in_one_go);
  i = whole_end;
  if (i < end) {
    if (pos_col != nullptr) next_pos_weights();
    const std::size_t rest = static_cast<std::size_t>(end - i);
    S xs[hn::MaxLanes(DD())] = {}, ys[hn::MaxLanes(DD())] = {}, ws[hn::MaxLanes(DD())] = {}, gs[hn::MaxLanes(DD())];
    float ls[hn::MaxLanes(DD())];
    std::memcpy(xs, x + i, rest * sizeof(S));
    std::memcpy(ys, y + i, rest * sizeof(S));
    if (w != nullptr) std::memcpy(ws, w + i, rest * sizeof(S));
    step(xs, ys, w != nullptr ? ws : nullptr, ls, gs, Partial(), hn::FirstN(d, rest), evaluate);
    if (loss_none != nullptr) std::memcpy(loss_none + i, ls, rest * sizeof(float));
    if (grad != nullptr) std::memcpy(grad + i, gs, rest * sizeof(S));
  }
  if (stream_grad || stream_loss) hwy::FlushStream();  // the streamed lines are visible before the chunk reports done
  return ChunkResult{SumLanes(d, acc), bad};
}

/// Memory-bound passes (IsMemoryBound) that touch more bytes than this stream their outputs
/// (StoreOrStream): such an output cannot still be in a 32 MiB last-level cache when the caller
/// reads it, so skipping the read for ownership of each line it writes (a quarter of mse's
/// traffic) costs nothing later.
constexpr double kStreamOutputsAboveBytes = 32.0 * 1024 * 1024;

/// One pass over every element. `loss_none` (may be null) receives w·l as float32; `grad`
/// (may be null) receives w·dl·grad_factor in the problem's dtype. Returns false when the
/// parallel runner failed (cannot happen here: no allocation in the workers).
template <class Op, class IO>
bool elementwise_pass(const ElementwiseProblem& p, int threads, float* loss_none, typename IO::storage* grad,
                      double grad_factor, std::vector<ChunkResult>& parts) {
  const double element_bytes = static_cast<double>(sizeof(typename IO::storage)) *
                                   (2 + (p.weight != nullptr) + (grad != nullptr)) +
                               (loss_none != nullptr ? sizeof(float) : 0);
  const bool stream = IsMemoryBound<VecOp<Op>>::value && static_cast<double>(p.n) * element_bytes > kStreamOutputsAboveBytes;
  return parallel_for_chunks(static_cast<std::int64_t>(parts.size()), threads, [&] {
    return [&](std::int64_t chunk) {
      const std::int64_t begin = chunk * kChunk;
      const std::int64_t end = begin + kChunk < p.n ? begin + kChunk : p.n;
      parts[static_cast<std::size_t>(chunk)] = chunk_elements<Op, IO>(p, begin, end, loss_none, grad, grad_factor, stream);
    };
  });
}

template <class Op, class IO>
Status run_elementwise(const ElementwiseProblem& p, const LossOutputs& out, int threads) {
  using S = typename IO::storage;
  const std::int64_t n = p.n;
  std::vector<ChunkResult> parts(static_cast<std::size_t>(chunk_count(n, kChunk)));
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
      bool written;
      if (L != 0.0) {  // NaN L (NaN data) propagates as NaN
        std::vector<ChunkResult> unused(parts.size());
        written = elementwise_pass<Op, IO>(p, threads, nullptr, grad, p.grad_scale / (2.0 * static_cast<double>(n) * L),
                                           unused);
      } else {  // L == 0: the gradient is defined as 0 (w·2r·0 could be NaN for infinite data)
        written = parallel_for_chunks(static_cast<std::int64_t>(parts.size()), threads, [&] {
          return [&](std::int64_t chunk) {
            const std::int64_t begin = chunk * kChunk, end = begin + kChunk < n ? begin + kChunk : n;
            for (std::int64_t i = begin; i < end; ++i) IO::store(grad, i, 0.0);
          };
        });
      }
      if (!written) return Status::OutOfMemory;
    }
  } else if (p.reduction == Reduction::Sum) {
    out.loss[0] = static_cast<float>(total);
  } else if (p.reduction != Reduction::None) {
    out.loss[0] = static_cast<float>(total / static_cast<double>(n));  // n == 0: NaN
  }

  if (out.error_count != nullptr) *out.error_count = bad;
  return bad > 0 ? Status::InvalidValue : Status::Success;
}

/// This target's entry point (see cpu_compute below).
Status ComputeElementwise(const ElementwiseProblem& problem, const LossOutputs& outputs, int threads) {
  Status status = Status::InvalidArgument;  // an unknown loss or dtype (validate() never passes one)
  visit_value_dtype(problem.dtype, [&](auto io) {
    using IO = decltype(io);
    visit_elementwise_op(problem.loss, [&](auto op) {
      status = run_elementwise<decltype(op), IO>(problem, outputs, threads < 1 ? 1 : threads);
    });
  });
  return status;
}

}  // namespace HWY_NAMESPACE
}  // namespace cpu
}  // namespace detail
}  // namespace fusedloss
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace fusedloss {
namespace detail {
namespace cpu {
HWY_EXPORT(ComputeElementwise);
}  // namespace cpu

Status cpu_compute(const ElementwiseProblem& problem, const LossOutputs& outputs, int threads) noexcept {
  try {
    return HWY_DYNAMIC_DISPATCH(cpu::ComputeElementwise)(problem, outputs, threads);
  } catch (...) {
    return Status::OutOfMemory;  // std::bad_alloc for the partials: host memory exhausted
  }
}

}  // namespace detail
}  // namespace fusedloss
#endif  // HWY_ONCE
