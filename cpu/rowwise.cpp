// fusedloss CPU path — the row-wise losses over an [N, C] matrix: cross_entropy (sparse labels
// or soft targets), nll, kl_div, kl_div_logits.
//
// Work is cut into chunks of a fixed number of rows (a function of C only); each row is computed
// in double by one thread (bfloat16 cross_entropy without smoothing, z-loss or softcap takes its
// exponentials on float lanes, sums still in double: see "the softmax on float lanes"), and the
// per-chunk partial sums are combined in chunk order, so the result does not depend on the thread
// count. Each logit is read before the gradient over it is written (copied to per-thread double
// scratch where the loss needs it again), which makes grad == input (in place) safe.
// The mean divisor of cross_entropy / nll (Σ w[y_n] over valid, non-ignored rows) and the count
// of bad labels come from a cheap sequential pass over the labels before any gradient is written.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/rowwise.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/labels.hpp"
#include "cpu/load_store.hpp"
#include "cpu/parallel.hpp"
#include "cpu/simd-inl.h"
#include "fusedloss/detail/rowwise_ops.hpp"
#include "hwy/highway.h"
#include "src/backend.hpp"

HWY_BEFORE_NAMESPACE();
namespace fusedloss {
namespace detail {
namespace cpu {
namespace HWY_NAMESPACE {

constexpr std::int64_t kChunkElements = 32768;  // rows per chunk = max(1, this / C): fixed by the problem
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

/// Runs row(n) (a per-thread callable made by make_row(), returning the row's loss contribution)
/// for every row, and returns the per-chunk sums in `parts` (chunk order). False on failure.
template <class MakeRow>
bool for_each_row(std::int64_t rows, std::int64_t classes, int threads, std::vector<double>& parts,
                  const MakeRow& make_row) {
  const std::int64_t per_chunk = classes >= kChunkElements ? 1 : kChunkElements / classes;
  const std::int64_t chunks = chunk_count(rows, per_chunk);
  parts.assign(static_cast<std::size_t>(chunks), 0.0);
  return parallel_for_chunks(chunks, threads, [&] {
    return [&parts, per_chunk, rows, row = make_row()](std::int64_t chunk) mutable {
      const std::int64_t begin = chunk * per_chunk;
      const std::int64_t end = begin + per_chunk < rows ? begin + per_chunk : rows;
      double acc = 0.0;
      for (std::int64_t n = begin; n < end; ++n) acc += row(n);
      parts[static_cast<std::size_t>(chunk)] = acc;
    };
  });
}

inline double sum_in_order(const std::vector<double>& parts) {
  double total = 0.0;
  for (double v : parts) total += v;
  return total;
}

/// A row of doubles held in scratch.
struct ScratchRow {
  const double* z;
  VD load(DD d, std::int64_t c) const { return hn::LoadU(d, z + c); }
  double operator[](std::int64_t c) const { return z[c]; }
};
/// A row read straight from the input in its dtype (no softcap): no scratch copy of the logits,
/// and the row is still in cache for the later reads.
template <class IO>
struct InputRow {
  const typename IO::storage* x;
  VD load(DD d, std::int64_t c) const { return VecIo<IO>::Load(d, x + c); }
  double operator[](std::int64_t c) const { return IO::load(x, c); }
};

/// The row maximum in the scalar's sense (`z > m ? z : m`, so NaN entries are skipped), over
/// vectors of four running maxima (one would make each compare wait for the previous one).
template <class D, class LoadV, class Load>
double row_max(D d, std::int64_t C, const LoadV& load_v, const Load& load) {
  using V = hn::Vec<D>;
  const std::int64_t lanes = static_cast<std::int64_t>(hn::Lanes(d));
  const auto max_like = [](V a, V b) { return hn::IfThenElse(hn::Gt(a, b), a, b); };
  V m0 = hn::Set(d, -std::numeric_limits<hn::TFromD<D>>::infinity()), m1 = m0, m2 = m0, m3 = m0;
  std::int64_t c = 0;
  for (; c + 4 * lanes <= C; c += 4 * lanes) {
    m0 = max_like(load_v(c), m0);
    m1 = max_like(load_v(c + lanes), m1);
    m2 = max_like(load_v(c + 2 * lanes), m2);
    m3 = max_like(load_v(c + 3 * lanes), m3);
  }
  for (; c + lanes <= C; c += lanes) m0 = max_like(load_v(c), m0);
  HWY_ALIGN hn::TFromD<D> lane_max[hn::MaxLanes(D())];
  hn::Store(max_like(max_like(m0, m1), max_like(m2, m3)), d, lane_max);
  double m = -kInf;
  for (std::int64_t k = 0; k < lanes; ++k) m = lane_max[k] > m ? static_cast<double>(lane_max[k]) : m;
  for (; c < C; ++c) m = load(c) > m ? load(c) : m;
  return m;
}
double row_max(const ScratchRow& z, std::int64_t C) {
  return row_max(DD(), C, [&](std::int64_t c) { return z.load(DD(), c); }, [&](std::int64_t c) { return z[c]; });
}
/// f32 and bf16 rows: the maximum of the stored values is the maximum of their doubles, so it is
/// taken on float lanes (twice as many per vector, no conversion to double).
template <class IO>
double row_max(const InputRow<IO>& z, std::int64_t C) {
  const auto scalar = [&](std::int64_t c) { return z[c]; };
  if constexpr (std::is_same<IO, Io<DType::Float32>>::value) {
    const hn::ScalableTag<float> df;
    return row_max(df, C, [&](std::int64_t c) { return hn::LoadU(df, z.x + c); }, scalar);
  } else if constexpr (std::is_same<IO, Io<DType::BFloat16>>::value) {
    const hn::ScalableTag<float> df;
    const hn::Rebind<std::uint16_t, decltype(df)> d16;
    const hn::RebindToUnsigned<decltype(df)> du;
    return row_max(df, C, [&](std::int64_t c) {
      return hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(d16, z.x + c))));
    }, scalar);
  } else {
    return row_max(DD(), C, [&](std::int64_t c) { return z.load(DD(), c); }, scalar);
  }
}

/// Max-shifted logsumexp of z[0..C): fills e[c] = exp(z[c] − max) and *sum_e = Σ e. A row whose max
/// is infinite gives −inf (all −inf) or +inf (a +inf entry), NaN when it also holds a NaN.
/// Vector lanes first, the last partial vector scalar; the lanes are combined in a fixed order.
template <class Row>
double row_logsumexp(const Row& z, std::int64_t C, double* e, double* sum_e) {
  const DD d;
  const std::int64_t lanes = static_cast<std::int64_t>(hn::Lanes(d));
  const std::int64_t whole = C - C % lanes;
  const double m = row_max(z, C);  // NaN entries are skipped here ...
  const VD mb = hn::Set(d, m);
  VD sv = hn::Zero(d);
  for (std::int64_t c = 0; c < whole; c += lanes) {
    const VD ev = ExpNonPositive(d, hn::Sub(z.load(d, c), mb));  // ... and reach the sum (NaN) when m is finite
    hn::StoreU(ev, d, e + c);
    sv = hn::Add(sv, ev);
  }
  double s = SumLanes(d, sv);
  for (std::int64_t c = whole; c < C; ++c) {
    e[c] = std::exp(z[c] - m);
    s += e[c];
  }
  *sum_e = s;
  if (std::isinf(m)) {
    for (std::int64_t c = 0; c < C; ++c)
      if (std::isnan(z[c])) return kNaN;
    return m;
  }
  return m + std::log(s);
}

/// z[c] = softcap(x[c]) as double for a row of C values.
template <class IO>
void load_row(const typename IO::storage* x, std::int64_t C, double cap, double* z) {
  const DD d;
  const std::int64_t lanes = static_cast<std::int64_t>(hn::Lanes(d));
  std::int64_t c = 0;
  if (cap > 0.0) {
    const VD k = hn::Set(d, cap);
    for (; c + lanes <= C; c += lanes) hn::StoreU(hn::Mul(k, Tanh(d, hn::Div(VecIo<IO>::Load(d, x + c), k))), d, z + c);
  } else {
    for (; c + lanes <= C; c += lanes) hn::StoreU(VecIo<IO>::Load(d, x + c), d, z + c);
  }
  for (; c < C; ++c) z[c] = softcap_value(IO::load(x, c), cap);
}

/// A gradient row on whole vectors: gr[c] = g_c·softcap'(z_c)·factor with g = grad_v(c) (the scalar
/// loops' operations in their order). Returns the first column left for the scalar tail.
template <class IO, class G>
std::int64_t store_grad_row(typename IO::storage* gr, std::int64_t C, const double* z, double cap, double factor,
                            const G& grad_v) {
  const DD d;
  const std::int64_t lanes = static_cast<std::int64_t>(hn::Lanes(d));
  const VD capv = hn::Set(d, cap), one = hn::Set(d, 1.0), fv = hn::Set(d, factor);
  std::int64_t c = 0;
  for (; c + lanes <= C; c += lanes) {
    VD g = grad_v(d, c);
    if (cap > 0.0) {
      const VD t = hn::Div(hn::LoadU(d, z + c), capv);
      g = hn::Mul(g, hn::Sub(one, hn::Mul(t, t)));
    }
    VecIo<IO>::Store(d, gr + c, hn::Mul(g, fv));
  }
  return c;
}

/// gr[0..C) = +0 (all-zero bits in f32, fp16 and bf16 alike, so a memset: nll's rows are almost
/// all zeros, and the dtype's rounding store cost 2x PyTorch's time on bf16 256x4096).
template <class IO>
void store_zero_row(typename IO::storage* gr, std::int64_t C) {
  std::memset(gr, 0, static_cast<std::size_t>(C) * sizeof(typename IO::storage));
}

LabelStats label_stats(const RowwiseProblem& p) {
  return cpu::label_stats(p.labels, p.label_dtype, p.rows, p.classes, p.params.ignore_index, p.class_weight);
}

Status finish(const RowwiseProblem& p, const LossOutputs& out, double total, double divisor, std::int64_t bad) {
  switch (p.reduction) {
    case Reduction::None: break;
    case Reduction::Sum: out.loss[0] = static_cast<float>(total); break;
    default: out.loss[0] = divisor == 0.0 ? static_cast<float>(kNaN) : static_cast<float>(total / divisor); break;
  }
  if (out.error_count != nullptr) *out.error_count = bad;
  return bad > 0 ? Status::InvalidValue : Status::Success;
}

bool is_mean(Reduction r) { return r == Reduction::Mean || r == Reduction::BatchMean; }

/// The shared tail of every row-wise loss: runs the rows (see for_each_row), sums the per-chunk
/// partials in chunk order and writes the reduced loss / error count.
template <class MakeRow>
Status reduce_rows(const RowwiseProblem& p, const LossOutputs& out, int threads, double divisor, std::int64_t bad,
                   const MakeRow& make_row) {
  std::vector<double> parts;
  if (!for_each_row(p.rows, p.classes, threads, parts, make_row)) return Status::OutOfMemory;
  return finish(p, out, sum_in_order(parts), divisor, bad);
}

/// Gradient scaling of the label losses (sparse cross_entropy, nll): a mean divides by Σ w[y_n].
struct LabelScale {
  LabelStats stats;
  bool zero_grad;  // mean over no weight (every row ignored / zero weight): the gradient is all zero
  double factor;
};

LabelScale label_scale(const RowwiseProblem& p) {
  const LabelStats stats = label_stats(p);
  const bool mean = is_mean(p.reduction);
  return {stats, mean && stats.weight_sum == 0.0, mean ? p.grad_scale / stats.weight_sum : p.grad_scale};
}

/// The divisor of kl_div / kl_div_logits: N·C for Mean, N for BatchMean, 1 otherwise.
double kl_divisor(const RowwiseProblem& p) {
  if (p.reduction == Reduction::Mean) return static_cast<double>(p.rows) * static_cast<double>(p.classes);
  if (p.reduction == Reduction::BatchMean) return static_cast<double>(p.rows);
  return 1.0;
}

// ---- cross_entropy, sparse labels: the gradient of a row segment --------------------------------
/// Sparse cross_entropy's gradient at column c (scalar, double): (e_c·a − [c = y]·b − e·w_c)·factor.
inline double sparse_grad_at(double e_c, std::int64_t c, std::int64_t y, double a, const SparseCeGradCoeffs<double>& k,
                             double factor, const float* cw) {
  double g = e_c * a;
  if (c == y) g -= k.b;
  if (k.e > 0.0) g -= k.e * class_weight_at(cw, c);
  return g * factor;
}

/// gr[0..len) = the gradient of columns c0..c0+len of a row (no softcap) whose maximum is M, the
/// exponentials recomputed in double from xr (each vector is read before it is written: gr may
/// alias xr). z_y is the target logit, read by the caller before any gradient of the row is written.
template <class IO>
void grad_segment_double(const typename IO::storage* xr, typename IO::storage* gr, std::int64_t len, std::int64_t c0,
                         std::int64_t y, double z_y, double M, double a, const SparseCeGradCoeffs<double>& k,
                         double factor, const float* cw) {
  std::int64_t c = store_grad_row<IO>(gr, len, nullptr, 0.0, factor, [&](DD dd, std::int64_t cc) {
    VD g = hn::Mul(ExpNonPositive(dd, hn::Sub(VecIo<IO>::Load(dd, xr + cc), hn::Set(dd, M))), hn::Set(dd, a));
    if (k.e > 0.0) {
      const VD wc = cw != nullptr ? hn::PromoteTo(dd, hn::LoadU(DF(), cw + c0 + cc)) : hn::Set(dd, 1.0);
      g = hn::Sub(g, hn::Mul(hn::Set(dd, k.e), wc));
    }
    return g;
  });
  for (; c < len; ++c) IO::store(gr, c, sparse_grad_at(std::exp(IO::load(xr, c) - M), c0 + c, y, a, k, factor, cw));
  if (y >= c0 && y < c0 + len) IO::store(gr, y - c0, sparse_grad_at(std::exp(z_y - M), y, y, a, k, factor, cw));
}

// ---- cross_entropy, bfloat16 logits: the softmax on float lanes ----------------------------------
// Without label smoothing, z-loss and softcap (the common case) a bfloat16 row's exponentials
// e_c = e^{z_c − m} are evaluated on float lanes (twice as many per vector as double) and widened
// to double for every sum. Why that keeps the documented bound (ε = 2^−22, the relative error of
// ExpDifferenceF32; m = the row maximum, so the largest term is exactly e^0 = 1 and S = Σe ≥ 1):
//   1. S: each term off by ≤ ε of itself, the sum in double, so S − 1 is off by ≤ ε·(S − 1) (+ the
//      double sum's rounding) and log S by ≤ ε·(S − 1)/S ≤ ε·log S (log S ≥ 1 − 1/S). The loss
//      w_y·((m − z_y) + log S) adds two terms ≥ 0: no cancellation, it is within ~ε relative (the
//      tests hold rtol 1e-6 = 2^−19.9), and so is lse = m + log S.
//   2. gradient c ≠ y: g_c = e_c·(w_y/S·factor), a product: relative error ≤ ε (e_c) + ε (S) + 2·2^−24
//      (w_y/S·factor rounded to float, the float product) < 2^−20.4; one rounding to bfloat16 (an ulp
//      is 2^−8..2^−7 relative) then lands within 1 ulp: the correctly rounded value unless the exact
//      one lies within 2^−20.4 relative of a rounding boundary (by estimate < 1 value in 2^11).
//   3. gradient c = y: w_y·(e_y/S − 1)·factor, computed in double with e_y = e^{z_y − m} in double.
//      If y holds the maximum, e_y = 1 exactly and 1/S − 1 = −(S − 1)/S carries S − 1's relative
//      error ε; otherwise p_y ≤ p_max = 1/S, so p_y ≤ 1/2, 1 − p_y ≥ 1/2 and p_y's error (≤ ε·p_y)
//      is ≤ ε of the result. No cancellation either way.
//   Label smoothing (g_c = p_c·a − ε_s·w_c/C) and z-loss (a = b + 2·s·lse, and lse itself) can cancel,
//   where ε would be amplified without bound: those rows, softcap rows and float32 rows (whose 1-ulp
//   bound needs e to ≲ 2^−25) keep the double exponential.
//   Lanes too small for float's normal range (z − m < −86.5) and the last partial vector are done in
//   double; a·factor outside [2^−100, 2^100] (or NaN) sends the whole row to the double path.
template <class IO>
constexpr bool kFloatSoftmaxDtype = std::is_same<IO, Io<DType::BFloat16>>::value;

/// This problem's rows take the float-lane softmax (for a bfloat16 dtype).
inline bool float_softmax_rows(const RowwiseProblem& p) {
  return !(p.params.label_smoothing > 0.0) && !(p.params.z_loss > 0.0) && !(p.params.softcap > 0.0);
}

/// Σ_c e^{z_c − m} in double over a bfloat16 row segment with a finite maximum m: whole vectors on
/// float lanes (ExpDifferenceF32), widened into two double accumulators, then the last partial
/// vector in double — a fixed order. When e is not null it receives each whole vector's
/// exponentials, −1 in a deep lane (the gradient redoes those in double). NaN entries make the sum
/// NaN and, with kNanFlag, set *nan (the one-row pass needs only the sum).
template <bool kNanFlag>
double sum_exp_float_lanes(const std::uint16_t* x, std::int64_t len, double m, float* e, bool* nan) {
  using IO = Io<DType::BFloat16>;
  const DF32 df;
  const DD d;
  const std::int64_t lanes = static_cast<std::int64_t>(hn::Lanes(df));
  const VF32 mv = hn::Set(df, static_cast<float>(m));  // a bfloat16 value: exact
  VD lo = hn::Zero(d), hi = hn::Zero(d);
  MF32 nan_seen = hn::FirstN(df, 0);
  std::int64_t c = 0;
  for (; c + lanes <= len; c += lanes) {
    const VF32 z = LoadBF16AsF32(df, x + c);
    MF32 deep;
    const VF32 ev = ExpDifferenceF32(df, z, mv, deep);
    if (kNanFlag) nan_seen = hn::Or(nan_seen, hn::IsNaN(z));
    if (e != nullptr) hn::StoreU(hn::IfThenElse(deep, hn::Set(df, -1.0f), ev), df, e + c);
    AddWidened(df, ev, lo, hi);
  }
  double s = SumLanes(d, hn::Add(lo, hi));
  bool saw_nan = !hn::AllFalse(df, nan_seen);
  for (; c < len; ++c) {
    const double z = IO::load(x, c);
    saw_nan = saw_nan || std::isnan(z);
    s += std::exp(z - m);
  }
  if (kNanFlag) *nan = saw_nan;
  return s;
}

/// gr[0..len) = the gradient of columns c0..c0+len of a bfloat16 row without smoothing or z-loss
/// (maximum M, a = w_y/S): e_c·(a·factor) on float lanes, rounded once to bfloat16, with
/// e = exp_v(c, deep) for each whole vector. Vectors with a deep lane, the last partial vector and
/// the target column are done in double (grad_segment_double), as is everything when a·factor is
/// outside [2^−100, 2^100] (float would lose it). gr may alias xr (each vector is read first).
template <class ExpV>
void grad_segment_float_lanes(const std::uint16_t* xr, std::uint16_t* gr, std::int64_t len, std::int64_t c0,
                              std::int64_t y, double z_y, double M, double a, const SparseCeGradCoeffs<double>& k,
                              double factor, const float* cw, const ExpV& exp_v) {
  using IO = Io<DType::BFloat16>;
  const double af = a * factor;
  if (!(std::fabs(af) >= 0x1p-100 && std::fabs(af) <= 0x1p100)) {
    grad_segment_double<IO>(xr, gr, len, c0, y, z_y, M, a, k, factor, cw);
    return;
  }
  const DF32 df;
  const std::int64_t lanes = static_cast<std::int64_t>(hn::Lanes(df));
  const VF32 afv = hn::Set(df, static_cast<float>(af));
  std::int64_t c = 0;
  for (; c + lanes <= len; c += lanes) {
    MF32 deep;
    const VF32 ev = exp_v(c, deep);
    if (hn::AllFalse(df, deep)) {
      StoreF32AsBF16(df, hn::Mul(ev, afv), gr + c);
    } else {
      grad_segment_double<IO>(xr + c, gr + c, lanes, c0 + c, y, z_y, M, a, k, factor, cw);
    }
  }
  if (c < len) grad_segment_double<IO>(xr + c, gr + c, len - c, c0 + c, y, z_y, M, a, k, factor, cw);
  if (y >= c0 && y < c0 + len) IO::store(gr, y - c0, sparse_grad_at(std::exp(z_y - M), y, y, a, k, factor, cw));
}

// ---- cross_entropy, sparse labels, rows split across threads ------------------------------------
// Few long rows (N < kSplitRows, C ≥ kSplitColumns, no softcap) would leave threads idle with one
// row per task, so each row is cut into segments at fixed columns (a function of C only):
//   1. per segment s (parallel): m_s = max z, S_s = Σ e^{z − m_s}, Σ w_c z_c (label smoothing), NaN seen;
//   2. per row (in segment order): M = max m_s, Σe = Σ_s S_s·e^{m_s − M}, lse = M + log Σe, the loss;
//   3. per segment (parallel): the gradient e^{z − M}·a − ε/C·w_c (− b at the label), exp recomputed.
// Segment boundaries and the combine order never depend on the thread count, so neither do results.
constexpr std::int64_t kSplitRows = 16;
constexpr std::int64_t kSplitColumns = 16384;

/// Columns per segment: at least 8192, at most 16 segments per row, a multiple of 64.
inline std::int64_t split_segment(std::int64_t C) {
  const std::int64_t sixteenth = C / 16 + (C % 16 != 0);  // ⌈C/16⌉ without overflow at C near 2^63
  const std::int64_t seg = sixteenth > 8192 ? sixteenth : 8192;
  return (seg + 63) / 64 * 64;
}

bool split_cross_entropy(const RowwiseProblem& p) {
  return p.labels != nullptr && p.params.softcap == 0.0 && p.rows < kSplitRows && p.classes >= kSplitColumns;
}

struct SegmentStats {
  double max = -kInf, sum_e = 0.0, sum_wz = 0.0;
  bool nan = false;
};

template <class IO>
Status cross_entropy_sparse_split(const RowwiseProblem& p, const LossOutputs& out, int threads, double W,
                                  const LabelScale& scale) {
  using S = typename IO::storage;
  const std::int64_t N = p.rows, C = p.classes, stride = p.row_stride;
  const std::int64_t seg = split_segment(C), segs = chunk_count(C, seg);
  const S* x = static_cast<const S*>(p.input);
  S* grad = static_cast<S*>(out.grad);
  const float* cw = p.class_weight;
  const double eps = p.params.label_smoothing, zl = p.params.z_loss;
  const double inv_c = 1.0 / static_cast<double>(C);
  const DD d;
  const std::int64_t lanes = static_cast<std::int64_t>(hn::Lanes(d));
  const bool float_rows = kFloatSoftmaxDtype<IO> && float_softmax_rows(p);

  // 1. Segment statistics.
  std::vector<SegmentStats> stats(static_cast<std::size_t>(N * segs));
  const bool ok1 = parallel_for_chunks(N * segs, threads, [&] {
    return [&](std::int64_t task) {
      const std::int64_t n = task / segs, c0 = task % segs * seg, len = c0 + seg < C ? seg : C - c0;
      const S* xr = x + n * stride + c0;
      SegmentStats& st = stats[static_cast<std::size_t>(task)];
      st.max = row_max(InputRow<IO>{xr}, len);
      if constexpr (kFloatSoftmaxDtype<IO>) {
        if (float_rows && std::isfinite(st.max)) {
          st.sum_e = sum_exp_float_lanes<true>(xr, len, st.max, nullptr, &st.nan);
          return;
        }
      }
      const VD mb = hn::Set(d, st.max);
      VD sv = hn::Zero(d);
      MD nan = hn::FirstN(d, 0);
      std::int64_t c = 0;
      for (; c + lanes <= len; c += lanes) {
        const VD z = VecIo<IO>::Load(d, xr + c);
        nan = hn::Or(nan, hn::IsNaN(z));
        sv = hn::Add(sv, ExpNonPositive(d, hn::Sub(z, mb)));
      }
      st.sum_e = SumLanes(d, sv);
      st.nan = !hn::AllFalse(d, nan);
      for (; c < len; ++c) {
        const double z = IO::load(xr, c);
        st.nan = st.nan || std::isnan(z);
        st.sum_e += std::exp(z - st.max);
      }
      if (st.max == -kInf) st.sum_e = 0.0;  // only −inf (or NaN, flagged): no contribution
      if (eps > 0.0) {
        for (std::int64_t k = 0; k < len; ++k) {
          const double wc = class_weight_at(cw, c0 + k);
          if (wc != 0.0) st.sum_wz += wc * IO::load(xr, k);  // a zero-weight class contributes exactly 0
        }
      }
    };
  });
  if (!ok1) return Status::OutOfMemory;

  // 2. Rows: lse, Σe, loss (segment order).
  std::vector<double> lse(static_cast<std::size_t>(N)), sum_e(static_cast<std::size_t>(N)), maxima(static_cast<std::size_t>(N));
  float* loss_none = p.reduction == Reduction::None ? out.loss : nullptr;
  double total = 0.0;
  for (std::int64_t n = 0; n < N; ++n) {
    const SegmentStats* st = stats.data() + n * segs;
    double M = -kInf, sum_wz = 0.0;
    bool nan = false;
    for (std::int64_t s = 0; s < segs; ++s) {
      M = st[s].max > M ? st[s].max : M;
      nan = nan || st[s].nan;
      sum_wz += st[s].sum_wz;
    }
    double l, se;
    if (std::isinf(M)) {  // as row_logsumexp: ±inf, NaN with a NaN entry; Σe = NaN (inf − inf)
      l = nan ? kNaN : M;
      se = kNaN;
    } else {
      se = 0.0;
      for (std::int64_t s = 0; s < segs; ++s)
        if (st[s].max != -kInf) se += st[s].sum_e * std::exp(st[s].max - M);
      if (nan) se = kNaN;
      l = M + std::log(se);
    }
    lse[static_cast<std::size_t>(n)] = l;
    sum_e[static_cast<std::size_t>(n)] = se;
    maxima[static_cast<std::size_t>(n)] = M;
    if (out.lse != nullptr) out.lse[n] = static_cast<float>(l);
    const std::int64_t y = load_label(p.labels, p.label_dtype, n);
    const bool ignored = y == p.params.ignore_index, valid = !ignored && y >= 0 && y < C;
    double loss = ignored ? 0.0 : kNaN;
    if (valid)
      loss = sparse_ce_row_loss(l, IO::load(x + n * stride, y), class_weight_at(cw, y), W, sum_wz, eps, inv_c, zl);
    if (loss_none != nullptr) loss_none[n] = static_cast<float>(loss);
    total += ignored ? 0.0 : loss;
  }

  // 3. Gradient segments (each reads its logits before writing them: grad may alias the input).
  if (grad != nullptr) {
    const bool ok3 = parallel_for_chunks(N * segs, threads, [&] {
      return [&](std::int64_t task) {
        const std::int64_t n = task / segs, c0 = task % segs * seg, len = c0 + seg < C ? seg : C - c0;
        const S* xr = x + n * stride + c0;
        S* gr = grad + n * stride + c0;
        const std::int64_t y = load_label(p.labels, p.label_dtype, n);
        const bool valid = y != p.params.ignore_index && y >= 0 && y < C;
        const double w_y = valid ? class_weight_at(cw, y) : 0.0;
        if (!valid || scale.zero_grad || sparse_ce_grad_is_zero(w_y, eps, zl)) {
          store_zero_row<IO>(gr, len);
          return;
        }
        const double M = maxima[static_cast<std::size_t>(n)];
        const SparseCeGradCoeffs<double> k = sparse_ce_grad_coeffs(w_y, W, eps, inv_c, zl, lse[static_cast<std::size_t>(n)]);
        const double a = k.a / sum_e[static_cast<std::size_t>(n)];
        const double z_y = y >= c0 && y < c0 + len ? IO::load(xr, y - c0) : 0.0;
        if constexpr (kFloatSoftmaxDtype<IO>) {
          if (float_rows) {
            const DF32 df;
            const VF32 mv = hn::Set(df, static_cast<float>(M));  // M is finite here (else a·factor is NaN)
            grad_segment_float_lanes(xr, gr, len, c0, y, z_y, M, a, k, scale.factor, cw, [&](std::int64_t cc, MF32& deep) {
              return ExpDifferenceF32(df, LoadBF16AsF32(df, xr + cc), mv, deep);
            });
            return;
          }
        }
        grad_segment_double<IO>(xr, gr, len, c0, y, z_y, M, a, k, scale.factor, cw);
      };
    });
    if (!ok3) return Status::OutOfMemory;
  }
  return finish(p, out, total, scale.stats.weight_sum, scale.stats.bad);
}

// ---- cross_entropy, sparse labels --------------------------------------------------------------
template <class IO>
Status cross_entropy_sparse(const RowwiseProblem& p, const LossOutputs& out, int threads) {
  using S = typename IO::storage;
  const std::int64_t C = p.classes, stride = p.row_stride;
  const S* x = static_cast<const S*>(p.input);
  S* grad = static_cast<S*>(out.grad);
  const float* cw = p.class_weight;
  const double eps = p.params.label_smoothing, zl = p.params.z_loss, cap = p.params.softcap;
  const double inv_c = 1.0 / static_cast<double>(C);
  const std::int64_t ignore = p.params.ignore_index;

  double W = static_cast<double>(C);  // Σ_c w_c
  if (cw != nullptr) {
    W = 0.0;
    for (std::int64_t c = 0; c < C; ++c) W += static_cast<double>(cw[c]);
  }
  const LabelScale scale = label_scale(p);
  if (split_cross_entropy(p)) return cross_entropy_sparse_split<IO>(p, out, threads, W, scale);
  const bool zero_grad = scale.zero_grad;
  const double factor = scale.factor;
  float* loss_none = p.reduction == Reduction::None ? out.loss : nullptr;
  const bool float_rows = kFloatSoftmaxDtype<IO> && float_softmax_rows(p);
  return reduce_rows(p, out, threads, scale.stats.weight_sum, scale.stats.bad, [&] {
    return [&, z = std::vector<double>(static_cast<std::size_t>(cap > 0.0 ? C : 0)),
            e = std::vector<double>(static_cast<std::size_t>(C))](std::int64_t n) mutable -> double {
      // Without softcap the logits are read in place (before any gradient of the row is written).
      const S* xr = x + n * stride;
      const auto logit = [&](std::int64_t c) { return cap > 0.0 ? z[c] : IO::load(xr, c); };
      double sum_e = 0.0, lse = 0.0, m = 0.0;
      bool on_float_lanes = false;  // a bfloat16 row with a finite maximum (see "the softmax on float lanes")
      float* ef = reinterpret_cast<float*>(e.data());  // its exponentials: C floats fit in C doubles
      if constexpr (kFloatSoftmaxDtype<IO>) {
        if (float_rows) {
          m = row_max(InputRow<IO>{xr}, C);
          on_float_lanes = std::isfinite(m);
          if (on_float_lanes) {
            sum_e = sum_exp_float_lanes<false>(xr, C, m, ef, nullptr);  // a NaN entry: NaN
            lse = m + std::log(sum_e);
          }
        }
      }
      if (!on_float_lanes) {
        if (cap > 0.0) load_row<IO>(xr, C, cap, z.data());
        lse = cap > 0.0 ? row_logsumexp(ScratchRow{z.data()}, C, e.data(), &sum_e)
                        : row_logsumexp(InputRow<IO>{xr}, C, e.data(), &sum_e);
      }
      if (out.lse != nullptr) out.lse[n] = static_cast<float>(lse);

      const std::int64_t y = load_label(p.labels, p.label_dtype, n);
      const bool ignored = y == ignore;
      const bool valid = !ignored && y >= 0 && y < C;
      double loss = ignored ? 0.0 : kNaN;  // bad label: NaN (counted by label_stats)
      double w_y = 0.0;
      if (valid) {
        w_y = class_weight_at(cw, y);
        double sum_wz = 0.0;
        if (eps > 0.0) {
          for (std::int64_t c = 0; c < C; ++c) {
            // A zero-weight class (e.g. padded vocabulary at −inf) contributes exactly 0.
            const double wc = class_weight_at(cw, c);
            if (wc != 0.0) sum_wz += wc * logit(c);
          }
        }
        loss = sparse_ce_row_loss(lse, logit(y), w_y, W, sum_wz, eps, inv_c, zl);
      }
      if (loss_none != nullptr) loss_none[n] = static_cast<float>(loss);

      if (grad != nullptr) {
        S* gr = grad + n * stride;
        if (!valid || zero_grad || sparse_ce_grad_is_zero(w_y, eps, zl)) {
          store_zero_row<IO>(gr, C);
        } else {
          const SparseCeGradCoeffs<double> k = sparse_ce_grad_coeffs(w_y, W, eps, inv_c, zl, lse);
          // p_c·a = e_c·(a / Σe); a +inf logit makes Σe = NaN (inf/inf), so the row is NaN throughout.
          const double a = k.a / sum_e;
          if constexpr (kFloatSoftmaxDtype<IO>) {
            if (on_float_lanes) {
              const DF32 df;
              grad_segment_float_lanes(xr, gr, C, 0, y, logit(y), m, a, k, factor, cw, [&](std::int64_t c, MF32& deep) {
                const VF32 ev = hn::LoadU(df, ef + c);
                deep = hn::Lt(ev, hn::Zero(df));
                return ev;
              });
              return ignored ? 0.0 : loss;
            }
          }
          auto grad_at = [&](std::int64_t c) {
            double g = e[c] * a;
            if (c == y) g -= k.b;
            if (k.e > 0.0) g -= k.e * class_weight_at(cw, c);
            if (cap > 0.0) g *= softcap_derivative(z[c], cap);
            return g * factor;
          };
          // The same operations on whole vectors (the target column is redone by grad_at after).
          std::int64_t c = store_grad_row<IO>(gr, C, z.data(), cap, factor, [&](DD d, std::int64_t c0) {
            VD g = hn::Mul(hn::LoadU(d, e.data() + c0), hn::Set(d, a));
            if (k.e > 0.0) {
              const VD wc = cw != nullptr ? hn::PromoteTo(d, hn::LoadU(DF(), cw + c0)) : hn::Set(d, 1.0);
              g = hn::Sub(g, hn::Mul(hn::Set(d, k.e), wc));
            }
            return g;
          });
          for (; c < C; ++c) IO::store(gr, c, grad_at(c));
          IO::store(gr, y, grad_at(y));
        }
      }
      return ignored ? 0.0 : loss;
    };
  });
}

// ---- cross_entropy, soft (dense) targets --------------------------------------------------------
template <class IO>
Status cross_entropy_soft(const RowwiseProblem& p, const LossOutputs& out, int threads) {
  using S = typename IO::storage;
  const std::int64_t N = p.rows, C = p.classes, stride = p.row_stride;
  const S* x = static_cast<const S*>(p.input);
  const S* t = static_cast<const S*>(p.target);
  S* grad = static_cast<S*>(out.grad);
  const float* cw = p.class_weight;
  const double eps = p.params.label_smoothing, zl = p.params.z_loss, cap = p.params.softcap;
  const double inv_c = 1.0 / static_cast<double>(C);
  const double divisor = static_cast<double>(N);
  const double factor = is_mean(p.reduction) ? p.grad_scale / divisor : p.grad_scale;
  float* loss_none = p.reduction == Reduction::None ? out.loss : nullptr;

  return reduce_rows(p, out, threads, divisor, 0, [&] {
    return [&, z = std::vector<double>(static_cast<std::size_t>(C)),
            e = std::vector<double>(static_cast<std::size_t>(C)),
            wt = std::vector<double>(static_cast<std::size_t>(C))](std::int64_t n) mutable -> double {
      const S* tr = t + n * stride;
      load_row<IO>(x + n * stride, C, cap, z.data());
      double sum_e;
      const double lse = row_logsumexp(ScratchRow{z.data()}, C, e.data(), &sum_e);
      if (out.lse != nullptr) out.lse[n] = static_cast<float>(lse);

      // ℓ = Σ_c w_c t'_c·(lse − z_c) + s·lse²  (= S·lse − Σ w_c t'_c z_c + s·lse²); zero terms skipped.
      double loss = 0.0, S_wt = 0.0;
      for (std::int64_t c = 0; c < C; ++c) {
        wt[c] = class_weight_at(cw, c) * smoothed_target(IO::load(tr, c), eps, inv_c);
        if (wt[c] != 0.0) loss += wt[c] * (lse - z[c]);
        S_wt += wt[c];
      }
      if (zl > 0.0) loss += zl * lse * lse;
      if (loss_none != nullptr) loss_none[n] = static_cast<float>(loss);

      if (grad != nullptr) {
        // ∂ℓ/∂z_c = p_c·(S + 2·s·lse) − w_c t'_c, chained through the softcap.
        S* gr = grad + n * stride;
        const double a = (S_wt + (zl > 0.0 ? 2.0 * zl * lse : 0.0)) / sum_e;
        std::int64_t c = store_grad_row<IO>(gr, C, z.data(), cap, factor, [&](DD d, std::int64_t c0) {
          return hn::Sub(hn::Mul(hn::LoadU(d, e.data() + c0), hn::Set(d, a)), hn::LoadU(d, wt.data() + c0));
        });
        for (; c < C; ++c) {
          double g = e[c] * a - wt[c];
          if (cap > 0.0) g *= softcap_derivative(z[c], cap);
          IO::store(gr, c, g * factor);
        }
      }
      return loss;
    };
  });
}

// ---- nll ------------------------------------------------------------------------------------------
template <class IO>
Status nll(const RowwiseProblem& p, const LossOutputs& out, int threads) {
  using S = typename IO::storage;
  const std::int64_t C = p.classes, stride = p.row_stride;
  const S* x = static_cast<const S*>(p.input);
  S* grad = static_cast<S*>(out.grad);
  const float* cw = p.class_weight;
  const std::int64_t ignore = p.params.ignore_index;

  const LabelScale scale = label_scale(p);
  const bool zero_grad = scale.zero_grad;
  const double factor = scale.factor;
  float* loss_none = p.reduction == Reduction::None ? out.loss : nullptr;

  return reduce_rows(p, out, threads, scale.stats.weight_sum, scale.stats.bad, [&] {
    return [&](std::int64_t n) -> double {
      const std::int64_t y = load_label(p.labels, p.label_dtype, n);
      const bool ignored = y == ignore;
      const bool valid = !ignored && y >= 0 && y < C;
      double loss = ignored ? 0.0 : kNaN;
      double w_y = 0.0;
      if (valid) {
        w_y = class_weight_at(cw, y);
        const double x_y = IO::load(x + n * stride, y);  // read before the row is overwritten
        loss = w_y == 0.0 ? 0.0 : -w_y * x_y;
      }
      if (loss_none != nullptr) loss_none[n] = static_cast<float>(loss);
      if (grad != nullptr) {
        S* gr = grad + n * stride;
        store_zero_row<IO>(gr, C);
        if (valid && !zero_grad) IO::store(gr, y, -w_y * factor);
      }
      return ignored ? 0.0 : loss;
    };
  });
}

// ---- kl_div ----------------------------------------------------------------------------------------
template <class IO>
Status kl_div(const RowwiseProblem& p, const LossOutputs& out, int threads) {
  using S = typename IO::storage;
  const std::int64_t C = p.classes, stride = p.row_stride;
  const S* q = static_cast<const S*>(p.input);
  const S* t = static_cast<const S*>(p.target);
  S* grad = static_cast<S*>(out.grad);
  const bool log_target = p.params.log_target;
  const double divisor = kl_divisor(p);
  const double factor = p.grad_scale / divisor;
  float* loss_none = p.reduction == Reduction::None ? out.loss : nullptr;  // dense [N*C]

  return reduce_rows(p, out, threads, divisor, 0, [&] {
    return [&](std::int64_t n) -> double {
      const S* qr = q + n * stride;
      const S* tr = t + n * stride;
      S* gr = grad != nullptr ? grad + n * stride : nullptr;
      // kl_div_element on whole vectors, then the scalar definition for the rest of the row.
      const DD d;
      const std::int64_t lanes = static_cast<std::int64_t>(hn::Lanes(d));
      const VD fv = hn::Set(d, factor);
      VD accv = hn::Zero(d);
      std::int64_t c = 0;
      for (; c + lanes <= C; c += lanes) {
        const VD qv = VecIo<IO>::Load(d, qr + c), tv = VecIo<IO>::Load(d, tr + c);
        const VD pv = log_target ? Exp(d, tv) : tv;
        const VD log_p = log_target ? tv : Log(d, tv);
        const VD l = hn::IfThenZeroElse(hn::Eq(pv, hn::Zero(d)), hn::Mul(pv, hn::Sub(log_p, qv)));
        accv = hn::Add(accv, l);
        if (loss_none != nullptr) VecIo<Io<DType::Float32>>::Store(d, loss_none + n * C + c, l);
        if (gr != nullptr) VecIo<IO>::Store(d, gr + c, hn::Mul(hn::Neg(pv), fv));
      }
      double acc = SumLanes(d, accv);
      for (; c < C; ++c) {
        double dq;
        const double l = kl_div_element(IO::load(qr, c), IO::load(tr, c), log_target, dq);
        acc += l;
        if (loss_none != nullptr) loss_none[n * C + c] = static_cast<float>(l);
        if (gr != nullptr) IO::store(gr, c, dq * factor);
      }
      return acc;
    };
  });
}

// ---- kl_div_logits -----------------------------------------------------------------------------------
// p = softmax(u/T), q = softmax(s/T): ℓ_n = T²·Σ_c p_c·(log p_c − log q_c) (p_c = 0 terms are 0),
// ∂ℓ_n/∂s_c = T·(q_c − p_c).
template <class IO>
Status kl_div_logits(const RowwiseProblem& p, const LossOutputs& out, int threads) {
  using S = typename IO::storage;
  const std::int64_t C = p.classes, stride = p.row_stride;
  const S* student = static_cast<const S*>(p.input);
  const S* teacher = static_cast<const S*>(p.target);
  S* grad = static_cast<S*>(out.grad);
  const double T = p.params.temperature;
  const double inv_t = 1.0 / T;
  const double divisor = kl_divisor(p);
  const double gfactor = T * p.grad_scale / divisor;
  float* loss_none = p.reduction == Reduction::None ? out.loss : nullptr;

  return reduce_rows(p, out, threads, divisor, 0, [&] {
    const std::size_t Cs = static_cast<std::size_t>(C);
    return [&, a = std::vector<double>(Cs), b = std::vector<double>(Cs), ea = std::vector<double>(Cs),
            eb = std::vector<double>(Cs)](std::int64_t n) mutable -> double {
      const S* sr = student + n * stride;
      const S* ur = teacher + n * stride;
      const DD d;
      const std::int64_t lanes = static_cast<std::int64_t>(hn::Lanes(d));
      const VD inv_tv = hn::Set(d, inv_t);
      std::int64_t c0 = 0;
      for (; c0 + lanes <= C; c0 += lanes) {
        hn::StoreU(hn::Mul(VecIo<IO>::Load(d, ur + c0), inv_tv), d, a.data() + c0);
        hn::StoreU(hn::Mul(VecIo<IO>::Load(d, sr + c0), inv_tv), d, b.data() + c0);
      }
      for (std::int64_t c = c0; c < C; ++c) {
        a[c] = IO::load(ur, c) * inv_t;
        b[c] = IO::load(sr, c) * inv_t;
      }
      double sum_a, sum_b;
      const double lse_a = row_logsumexp(ScratchRow{a.data()}, C, ea.data(), &sum_a);
      const double lse_b = row_logsumexp(ScratchRow{b.data()}, C, eb.data(), &sum_b);
      const double inv_sa = 1.0 / sum_a, inv_sb = 1.0 / sum_b;
      S* gr = grad != nullptr ? grad + n * stride : nullptr;
      // The loop below on whole vectors first (a p_c = 0 term adds exactly 0).
      const VD isa = hn::Set(d, inv_sa), isb = hn::Set(d, inv_sb), la = hn::Set(d, lse_a), lb = hn::Set(d, lse_b);
      const VD gf = hn::Set(d, gfactor);
      VD accv = hn::Zero(d);
      std::int64_t c = 0;
      for (; c + lanes <= C; c += lanes) {
        const VD pc = hn::Mul(hn::LoadU(d, ea.data() + c), isa), qc = hn::Mul(hn::LoadU(d, eb.data() + c), isb);
        const VD term = hn::Mul(pc, hn::Sub(hn::Sub(hn::LoadU(d, a.data() + c), la), hn::Sub(hn::LoadU(d, b.data() + c), lb)));
        accv = hn::Add(accv, hn::IfThenZeroElse(hn::Eq(pc, hn::Zero(d)), term));
        if (gr != nullptr) VecIo<IO>::Store(d, gr + c, hn::Mul(hn::Sub(qc, pc), gf));
      }
      double acc = SumLanes(d, accv);
      for (; c < C; ++c) {
        const double pc = ea[c] * inv_sa, qc = eb[c] * inv_sb;
        if (pc != 0.0) acc += pc * ((a[c] - lse_a) - (b[c] - lse_b));
        if (gr != nullptr) IO::store(gr, c, (qc - pc) * gfactor);
      }
      const double loss = T * T * acc;
      if (loss_none != nullptr) loss_none[n] = static_cast<float>(loss);
      return loss;
    };
  });
}

template <class IO>
Status run_rowwise(const RowwiseProblem& p, const LossOutputs& out, int threads) {
  switch (p.loss) {
    case Loss::CrossEntropy:
      return p.labels != nullptr ? cross_entropy_sparse<IO>(p, out, threads) : cross_entropy_soft<IO>(p, out, threads);
    case Loss::NLL: return nll<IO>(p, out, threads);
    case Loss::KLDiv: return kl_div<IO>(p, out, threads);
    case Loss::KLDivLogits: return kl_div_logits<IO>(p, out, threads);
    default: return Status::InvalidArgument;  // not a row-wise loss (validate() never passes one)
  }
}

/// An upper bound of the heap scratch cross_entropy_sparse allocates for a chunk of rows of `p`
/// with `threads` workers, as fixed + per_row × rows (see cpu_sparse_ce_scratch in backend.hpp).
/// Non-split: the per-chunk partials (≤ 1 double a row) and per worker e (+ z with softcap), C
/// doubles each; split (< kSplitRows rows): the segment statistics and three doubles a row.
CpuScratchBound SparseCeScratch(const RowwiseProblem& p, int threads) {
  constexpr std::size_t kOverhead = 64;  // malloc's header and alignment, per allocation
  const std::size_t C = static_cast<std::size_t>(p.classes), workers = static_cast<std::size_t>(threads < 1 ? 1 : threads);
  const std::size_t row_vectors = p.params.softcap > 0.0 ? 2 : 1;
  CpuScratchBound b;
  b.fixed = workers * row_vectors * (C * sizeof(double) + kOverhead) + kOverhead;
  b.per_row = sizeof(double);
  RowwiseProblem split = p;
  split.rows = kSplitRows - 1;
  if (split_cross_entropy(split)) {
    const std::size_t rows = static_cast<std::size_t>(kSplitRows - 1);
    const std::size_t segs = static_cast<std::size_t>(chunk_count(p.classes, split_segment(p.classes)));
    const std::size_t bytes = rows * segs * sizeof(SegmentStats) + 3 * rows * sizeof(double) + 4 * kOverhead;
    b.fixed = bytes > b.fixed ? bytes : b.fixed;
  }
  return b;
}

/// This target's entry point (see cpu_compute below).
Status ComputeRowwise(const RowwiseProblem& problem, const LossOutputs& outputs, int threads) {
  Status status = Status::InvalidArgument;  // unknown dtype (validate() never passes one)
  visit_value_dtype(problem.dtype, [&](auto io) {
    status = run_rowwise<decltype(io)>(problem, outputs, threads < 1 ? 1 : threads);
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
HWY_EXPORT(ComputeRowwise);
HWY_EXPORT(SparseCeScratch);
}  // namespace cpu

CpuScratchBound cpu_sparse_ce_scratch(const RowwiseProblem& problem, int threads) noexcept {
  return HWY_DYNAMIC_DISPATCH(cpu::SparseCeScratch)(problem, threads);
}

Status cpu_compute(const RowwiseProblem& problem, const LossOutputs& outputs, int threads) noexcept {
  try {
    return HWY_DYNAMIC_DISPATCH(cpu::ComputeRowwise)(problem, outputs, threads);
  } catch (...) {
    return Status::OutOfMemory;  // std::bad_alloc for the partials: host memory exhausted
  }
}

}  // namespace detail
}  // namespace fusedloss
#endif  // HWY_ONCE
