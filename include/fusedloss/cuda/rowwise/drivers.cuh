// fusedloss — row-wise kernels, part 3 of 4: the two row drivers and the kernels.
// register driver: the row is read ONCE into registers by its group (warp / block / cluster),
//   max → sums → gradient from registers, written ONCE: traffic = 1 read + 1 write of the row
//   (+ the target row for two-row losses).
// streaming driver: rows too large for the chip; pass 1 keeps an online softmax (running max,
//   rescaled sum), pass 2 re-reads the row (from L2 when it is still there) and writes the
//   gradient: 2 reads + 1 write. With no softmax (nll, kl_div) it is one pass: 1 read + 1 write.
// Both are templated on a policy (policies.cuh); the kernels below only name the instantiations.
#pragma once

#include "fusedloss/cuda/rowwise/policies.cuh"

namespace fusedloss {
namespace cuda {
namespace rowwise {

/// Where one row lives: its vector grid (aligned down by h elements), nvec vectors.
template <class S, class I>
struct RowView {
  const S* xrow;  ///< input row (not aligned down: input[y] is read through it)
  const S* xal;   ///< input, aligned down
  const S* tal;   ///< target, aligned down (nullptr without one)
  S* gal;         ///< gradient, aligned down (nullptr without one)
  int h;
  I nvec;
};

template <class P, class S, int VEC, class I>
__device__ __forceinline__ RowView<S, I> row_view(const RowArgs& a, long long row, I C) {
  using IO = VecIO<S, VEC>;
  RowView<S, I> v;
  v.xrow = static_cast<const S*>(a.x) + row * a.stride;
  S* grow = a.grad != nullptr ? static_cast<S*>(a.grad) + row * a.stride : nullptr;
  // The vector grid follows the input; without input vectors (nll) the gradient row.
  v.h = P::kInput ? IO::misalign(v.xrow) : (grow != nullptr ? IO::misalign(grow) : 0);
  v.nvec = (C + v.h + VEC - 1) / VEC;
  v.xal = v.xrow - v.h;
  v.tal = P::kTarget ? static_cast<const S*>(a.t) + row * a.stride - v.h : nullptr;
  v.gal = grow != nullptr ? grow - v.h : nullptr;
  return v;
}

/// Step 0 of both drivers for losses with a label: the group leader reads the label (and w[y],
/// input[y]) and shares it. The share is a shuffle / barrier that every later store of the group
/// follows, so input[y] is read before the row is overwritten in place.
template <class P, class S, class G>
__device__ __forceinline__ RowHead row_head(const RowArgs& a, G& g, const S* xrow, long long row, int parity) {
  RowHead hd{};
  if constexpr (P::kLabel) {
    if (g.head_loader()) hd = load_sparse_head<S>(a, xrow, row);
    hd = g.share(hd, parity);
  }
  return hd;
}

/// An ignored or invalid row with nothing else to report (no lse): loss 0 / NaN, gradient 0,
/// nothing of the row read.
template <class P>
__device__ __forceinline__ bool skip_row(const RowArgs& a, const RowHead& hd) {
  return P::kLabel && hd.kind != kRowValid && a.lse == nullptr;
}

template <class G>
__device__ __forceinline__ void skipped_row_loss(const RowArgs& a, const G& g, const RowHead& hd, long long row) {
  if (g.leader()) a.row_loss[row] = hd.kind == kRowBad ? CUDART_NAN_F : 0.f;
}

// ---- register-resident driver -----------------------------------------------------------------------

template <class P, class S, int VEC, int ITEMS, class G>
__device__ __forceinline__ void regs_row(const RowArgs& a, const typename P::Call& k, G& g, long long row,
                                         int parity) {
  using IO = VecIO<S, VEC>;
  using Raw = typename IO::Raw;
  constexpr int NT = P::kTarget ? ITEMS : 1;
  constexpr int NM = P::kSoftmax;
  const int C = static_cast<int>(a.C);  // register strategies: C < 2^20
  const RowView<S, int> v = row_view<P, S, VEC>(a, row, C);

  // 1. the label (sparse losses); a row without a valid one reads nothing else
  const RowHead hd = row_head<P, S>(a, g, v.xrow, row, parity);
  if (skip_row<P>(a, hd)) {
    skipped_row_loss(a, g, hd, row);
    if (v.gal != nullptr) zero_row_slots<S, VEC, ITEMS>(g, v.gal, v.h, v.nvec, C);
    return;
  }

  // 2. the row into registers (the only global read of it), and its maximum
  Raw rx[ITEMS], rt[NT];
  const Raw ninf = IO::neg_inf();
  const Raw tfill = P::kTargetLogits ? ninf : IO::zero();
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    const int vi = g.base + g.tid + j * g.T;
    rx[j] = vi < v.nvec ? IO::template load<Load::Streaming>(v.xal, vi, vi * VEC - v.h, C, ninf) : ninf;
    if constexpr (P::kTarget) rt[j] = vi < v.nvec ? IO::template load<Load::Streaming>(v.tal, vi, vi * VEC - v.h, C, tfill) : tfill;
  }
  float mx[NM];
#pragma unroll
  for (int m = 0; m < NM; ++m) mx[m] = -CUDART_INF_F;
#pragma unroll
  for (int j = 0; j < ITEMS; ++j)
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      mx[0] = fmaxf(mx[0], IO::get(rx[j], e));
      if constexpr (NM == 2) mx[1] = fmaxf(mx[1], IO::get(rt[NT - 1 < j ? 0 : j], e));
    }
  g.max(mx);
  float R[NM];
#pragma unroll
  for (int m = 0; m < NM; ++m) R[m] = m == 0 ? P::ref(mx[0], a) : shift_ref(mx[m]);
  // Compiler barriers: each pass recomputes its values from the packed raw words; without them
  // the compiler keeps the previous pass's per-element floats alive across the group reduction
  // (twice the registers of a packed bf16/fp16 row, and spills).
  launder(rx);
  if constexpr (P::kTarget) launder(rt);
  const float* ws = opaque_ptr(a.w);  // weight loads stay in the pass that uses them

  // 3. the row statistics from registers: Σ 2^{(z'−R)·unit} per softmax row, Σw, Σ_{w≠0} w(z'−R)
  constexpr int KW = NM, KWZ = NM + (P::kSumW ? 1 : 0), NS = KWZ + (P::kSumWz ? 1 : 0);
  const float unit = P::unit(k);
  float acc[NS];
#pragma unroll
  for (int i = 0; i < NS; ++i) acc[i] = 0.f;
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    const int c0 = (g.base + g.tid + j * g.T) * VEC - v.h;
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const int c = c0 + e;
      const bool in = c >= 0 && c < C;
      const float z = P::logit(IO::get(rx[j], e), in, a);
      const float t = P::kTarget ? IO::get(rt[NT - 1 < j ? 0 : j], e) : 0.f;
      acc[0] += exp2f((z - R[0]) * unit);
      if constexpr (NM == 2) acc[1] += exp2f((t - R[1]) * unit);
      if constexpr (P::kWeight) {
        const float w = P::weight(t, c, in, ws, a);
        if constexpr (P::kSumW) acc[KW] += w;
        if constexpr (P::kSumWz) {
          if (w != 0.f) acc[KWZ] += w * (z - R[0]);
        }
      }
    }
  }
  g.sum(acc);
  Sums s{};
#pragma unroll
  for (int m = 0; m < NM; ++m) s.e[m] = acc[m];
  if constexpr (P::kSumW) s.w = acc[KW];
  if constexpr (P::kSumWz) s.wz = acc[KWZ];
  const typename P::Row r = P::row(a, k, row, hd, R, s);

  // The loss now, unless it needs the gradient pass: its statistics die before that pass.
  if constexpr (P::kGradSums == 0) {
    if (g.leader()) P::finish(a, k, r, s, row);
  }

  // 4. the gradient from registers: one global write (and the sums that need the statistics)
  const bool write = v.gal != nullptr && !P::zero_grad(r);
  if (!write && P::kGradSums == 0) {
    if (v.gal != nullptr) zero_row_slots<S, VEC, ITEMS>(g, v.gal, v.h, v.nvec, C);
    return;
  }
  launder(rx);
  if constexpr (P::kTarget) launder(rt);
  float Rg[NM];  // same values; keeps the sum pass's exps from being kept alive
#pragma unroll
  for (int m = 0; m < NM; ++m) Rg[m] = opaque(R[m]);
  const float* wg = opaque_ptr(a.w);  // same pointer; keeps the sum pass's weight loads from staying live
  const int hg = opaque(v.h);  // same value; keeps the sum pass's per-element columns from staying live
  float gacc[P::kGradSums > 0 ? P::kGradSums : 1] = {0.f};
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    const int vi = g.base + g.tid + j * g.T;
    if (vi < v.nvec) {
      const int c0 = vi * VEC - hg;
      float gv[VEC];
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const int c = c0 + e;
        const bool in = c >= 0 && c < C;
        const float t = P::kTarget ? IO::get(rt[NT - 1 < j ? 0 : j], e) : 0.f;
        const float w = P::kWeight ? P::weight(t, c, in, wg, a) : 0.f;
        gv[e] = P::grad(IO::get(rx[j], e), t, w, c, in, Rg, r, gacc, a);
      }
      if (write) IO::store(v.gal, vi, c0, C, IO::pack(gv));
    }
  }
  if constexpr (P::kGradSums > 0) {
    g.sum(gacc);
    s.g = gacc[0];
    if (g.leader()) P::finish(a, k, r, s, row);
  }
  // 5. the label column: its owner (the thread that just stored it) rewrites it
  if constexpr (P::kPatch) {
    const int off = static_cast<int>((hd.y + v.h) / VEC) - g.base;
    if (write && off >= 0 && off < ITEMS * g.T && off % g.T == g.tid) v.gal[v.h + hd.y] = from_f32<S>(P::patch(r, a));
  }
}

// ---- streaming driver (online softmax; or one pass without a softmax) --------------------------------

template <class P, class S, int VEC, class G>
__device__ __forceinline__ void stream_row(const RowArgs& a, const typename P::Call& k, G& g, long long row,
                                           int parity) {
  using IO = VecIO<S, VEC>;
  using Raw = typename IO::Raw;
  constexpr int U = kStreamUnroll;
  constexpr int NM = P::kSoftmax;
  constexpr int NX = P::kInput ? U : 1, NT = P::kTarget ? U : 1;
  const long long C = a.C;
  const RowView<S, long long> v = row_view<P, S, VEC>(a, row, C);
  const Raw xfill = P::kSoftmax > 0 ? IO::neg_inf() : IO::zero();
  const Raw tfill = P::kTargetLogits ? IO::neg_inf() : IO::zero();

  // 1. the label (sparse losses); a row without a valid one reads nothing else
  const RowHead hd = row_head<P, S>(a, g, v.xrow, row, parity);
  if (skip_row<P>(a, hd)) {
    skipped_row_loss(a, g, hd, row);
    if (v.gal != nullptr) zero_row_stream<S, VEC>(g, v.gal, v.h, v.nvec, C);
    return;
  }

  // 2. pass 1: online max / Σ of each softmax row (and Σw); the re-read below should hit L2
  float R[NM > 0 ? NM : 1] = {0.f};
  Sums s{};
  if constexpr (NM > 0) {
    const float unit = P::unit(k);
    Online on[NM];
#pragma unroll
    for (int m = 0; m < NM; ++m) on[m] = Online{-CUDART_INF_F, 0.f};
    float sw = 0.f;
    for (long long v0 = g.tid; v0 < v.nvec; v0 += static_cast<long long>(U) * g.T) {
      Raw rx[U], rt[NT];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const long long vi = v0 + static_cast<long long>(u) * g.T;
        rx[u] = vi < v.nvec ? IO::template load<Load::L2>(v.xal, vi, vi * VEC - v.h, C, xfill) : xfill;
        if constexpr (P::kTarget) rt[u] = vi < v.nvec ? IO::template load<Load::L2>(v.tal, vi, vi * VEC - v.h, C, tfill) : tfill;
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const long long c0 = (v0 + static_cast<long long>(u) * g.T) * VEC - v.h;
        float z[NM][VEC];
        float vm[NM];
#pragma unroll
        for (int m = 0; m < NM; ++m) vm[m] = -CUDART_INF_F;
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const long long c = c0 + e;
          const bool in = c >= 0 && c < C;
          z[0][e] = P::logit(IO::get(rx[u], e), in, a);
          vm[0] = fmaxf(vm[0], z[0][e]);
          const float t = P::kTarget ? IO::get(rt[NT - 1 < u ? 0 : u], e) : 0.f;
          if constexpr (NM == 2) {
            z[NM - 1][e] = t;
            vm[NM - 1] = fmaxf(vm[NM - 1], z[NM - 1][e]);
          }
          if constexpr (P::kSumW) sw += P::weight(t, c, in, a.w, a);
        }
#pragma unroll
        for (int m = 0; m < NM; ++m) on[m].raise(vm[m], unit);
#pragma unroll
        for (int m = 0; m < NM; ++m) {
          const float ref = on[m].ref();
#pragma unroll
          for (int e = 0; e < VEC; ++e) on[m].s += exp2f((z[m][e] - ref) * unit);
        }
      }
    }
    float mx[NM];
#pragma unroll
    for (int m = 0; m < NM; ++m) mx[m] = on[m].m;
    g.max(mx);
    float s1[NM + (P::kSumW ? 1 : 0)];
#pragma unroll
    for (int m = 0; m < NM; ++m) {
      R[m] = shift_ref(mx[m]);  // the online max is already of z' (capped)
      s1[m] = on[m].rescaled(mx[m], unit);
    }
    if constexpr (P::kSumW) s1[NM] = sw;
    g.sum(s1);
#pragma unroll
    for (int m = 0; m < NM; ++m) s.e[m] = s1[m];
    if constexpr (P::kSumW) s.w = s1[NM];
  }
  const typename P::Row r = P::row(a, k, row, hd, R, s);
  // finish() runs after pass 2 on the leader only: with one row per block its copy of the row
  // constants waits in shared memory, not in every thread's registers across the loop (at the
  // 64 registers of the 16-bit soft-target kernels they spilled to local memory).
  constexpr bool kStashRow = std::is_same<G, Group<kBlock>>::value;
  FUSEDLOSS_SHARED(typename P::Row, leader_row);
  if (kStashRow && g.leader()) leader_row = r;

  // 3. pass 2 (when needed): the gradient, and the sums that need the statistics
  const bool write = v.gal != nullptr && !P::zero_grad(r);
  const bool sums = (P::kSumWz || P::kGradSums > 0) && P::grad_sums(r);
  if (write || sums || P::kGradSums > 0) {
    float p2[2] = {0.f, 0.f};  // Σ_{w≠0} w(z'−R), the gradient pass's sum
    for (long long v0 = g.tid; v0 < v.nvec; v0 += static_cast<long long>(U) * g.T) {
      Raw rx[NX], rt[NT];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const long long vi = v0 + static_cast<long long>(u) * g.T;
        if constexpr (P::kInput) rx[u] = vi < v.nvec ? IO::template load<Load::Streaming>(v.xal, vi, vi * VEC - v.h, C, xfill) : xfill;
        if constexpr (P::kTarget) rt[u] = vi < v.nvec ? IO::template load<Load::Streaming>(v.tal, vi, vi * VEC - v.h, C, tfill) : tfill;
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const long long vi = v0 + static_cast<long long>(u) * g.T;
        if (vi < v.nvec) {
          const long long c0 = vi * VEC - v.h;
          const ColRange cols = col_range<VEC>(c0, C);
          float gv[VEC];
#pragma unroll
          for (int e = 0; e < VEC; ++e) {
            const long long c = c0 + e;
            const bool in = cols.has(e);
            const float x = P::kInput ? IO::get(rx[NX - 1 < u ? 0 : u], e) : 0.f;
            const float t = P::kTarget ? IO::get(rt[NT - 1 < u ? 0 : u], e) : 0.f;
            const float w = P::kWeight ? P::weight(t, c, in, a.w, a) : 0.f;
            if constexpr (P::kSumWz) {
              if (w != 0.f) p2[0] += w * (P::logit(x, true, a) - R[0]);
            }
            gv[e] = (write || P::kGradSums > 0) ? P::grad(x, t, w, c, in, R, r, p2 + 1, a) : 0.f;
          }
          if (write) IO::store(v.gal, vi, c0, C, IO::pack(gv));
        }
      }
    }
    if (sums) {
      float p[(P::kSumWz ? 1 : 0) + (P::kGradSums > 0 ? 1 : 0) > 0 ? (P::kSumWz ? 1 : 0) + (P::kGradSums > 0 ? 1 : 0) : 1];
      if constexpr (P::kSumWz) p[0] = p2[0];
      if constexpr (P::kGradSums > 0) p[P::kSumWz ? 1 : 0] = p2[1];
      g.sum(p);
      if constexpr (P::kSumWz) s.wz = p[0];
      if constexpr (P::kGradSums > 0) s.g = p[P::kSumWz ? 1 : 0];
    }
  }
  // In place, the zeros must not be read back as input: each thread zeroes the columns it read.
  if (v.gal != nullptr && !write) zero_row_stream<S, VEC>(g, v.gal, v.h, v.nvec, C);
  if (g.leader()) P::finish(a, k, kStashRow ? static_cast<const typename P::Row&>(leader_row) : r, s, row);
  if constexpr (P::kPatch) {
    if (write && ((hd.y + v.h) / VEC) % g.T == g.tid) v.gal[v.h + hd.y] = from_f32<S>(P::patch(r, a));
  }
}

// ---- the kernels: a driver over the rows of a group, per policy ---------------------------------------

template <int MODE>
struct ModeBounds {
  static constexpr int kThreads = MODE == kWarp ? kWarpSize * kWarpRowsPerBlock : kMaxBlockThreads;
  static constexpr int kMinBlocks = MODE == kWarp ? 4 : 1;
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define FUSEDLOSS_CLUSTER_UNSUPPORTED(MODE) ((MODE) == kCluster)
#else
#define FUSEDLOSS_CLUSTER_UNSUPPORTED(MODE) false
#endif

template <class P, class S, int VEC, int ITEMS, int MODE>
__device__ __forceinline__ void regs_rows(const RowArgs& a) {
  if constexpr (FUSEDLOSS_CLUSTER_UNSUPPORTED(MODE)) {
    return;  // never launched: the host checks the kernel's binary version first
  } else {
    FUSEDLOSS_SHARED(GroupSmem, sm);
    Group<MODE> g(sm, ITEMS);
    const typename P::Call k = P::setup(a);
    int parity = 0;
    for (long long row = g.first_row(); row < a.N; row += g.row_step(), parity ^= 1)
      regs_row<P, S, VEC, ITEMS>(a, k, g, row, parity);
    g.finish();
  }
}

template <class P, class S, int VEC, int MODE>
__device__ __forceinline__ void stream_rows(const RowArgs& a) {
  FUSEDLOSS_SHARED(GroupSmem, sm);
  Group<MODE> g(sm, 0);
  const typename P::Call k = P::setup(a);
  int parity = 0;
  for (long long row = g.first_row(); row < a.N; row += g.row_step(), parity ^= 1)
    stream_row<P, S, VEC>(a, k, g, row, parity);
}

// Named entry points (the names are what launch records, the traffic report and the static
// kernel checks read: <loss>_regs_kernel<S, VEC, ITEMS, MODE, ...>, <loss>_stream_kernel<S, VEC, ...>).
#define FUSEDLOSS_REGS_BOUNDS __launch_bounds__(ModeBounds<MODE>::kThreads, ModeBounds<MODE>::kMinBlocks)

template <class S, int VEC, int ITEMS, int MODE, bool SOFTCAP, int SMOOTH>
__global__ void FUSEDLOSS_REGS_BOUNDS sparse_ce_regs_kernel(const RowArgs a) {
  regs_rows<SparseCe<SOFTCAP, SMOOTH>, S, VEC, ITEMS, MODE>(a);
}
template <class S, int VEC, bool SOFTCAP, int SMOOTH>
__global__ void __launch_bounds__(kStreamThreads) sparse_ce_stream_kernel(const RowArgs a) {
  stream_rows<SparseCe<SOFTCAP, SMOOTH>, S, VEC, kBlock>(a);
}
template <class S, int VEC, int ITEMS, int MODE, bool SOFTCAP, bool WEIGHTED>
__global__ void FUSEDLOSS_REGS_BOUNDS soft_ce_regs_kernel(const RowArgs a) {
  regs_rows<SoftCe<SOFTCAP, WEIGHTED>, S, VEC, ITEMS, MODE>(a);
}
template <class S, int VEC, bool SOFTCAP, bool WEIGHTED>
__global__ void __launch_bounds__(kStreamThreads) soft_ce_stream_kernel(const RowArgs a) {
  stream_rows<SoftCe<SOFTCAP, WEIGHTED>, S, VEC, kBlock>(a);
}
template <class S, int VEC, int ITEMS, int MODE>
__global__ void FUSEDLOSS_REGS_BOUNDS kl_logits_regs_kernel(const RowArgs a) {
  regs_rows<KlLogits, S, VEC, ITEMS, MODE>(a);
}
template <class S, int VEC>
__global__ void __launch_bounds__(kStreamThreads) kl_logits_stream_kernel(const RowArgs a) {
  stream_rows<KlLogits, S, VEC, kBlock>(a);
}
// nll and kl_div need no row statistics: the streaming driver's single pass, a warp per short row.
template <class S, int VEC, int MODE>
__global__ void __launch_bounds__(MODE == kWarp ? kWarpSize * kWarpRowsPerBlock : kSimpleThreads) nll_kernel(const RowArgs a) {
  stream_rows<Nll, S, VEC, MODE>(a);
}
template <class S, int VEC, int MODE>
__global__ void __launch_bounds__(MODE == kWarp ? kWarpSize * kWarpRowsPerBlock : kSimpleThreads) kl_div_kernel(const RowArgs a) {
  stream_rows<KlDiv, S, VEC, MODE>(a);
}
#undef FUSEDLOSS_REGS_BOUNDS

}  // namespace rowwise
}  // namespace cuda
}  // namespace fusedloss
