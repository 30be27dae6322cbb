// fusedloss — row-wise kernels, part 1 of 4: primitives. The parameter block, the per-row label
// header, the thread groups that own a row (warp / block / cluster: Group<MODE>) and the
// online-softmax accumulator; rows move through VecIO (vector_io.cuh). No loss algebra here
// (policies.cuh), no kernels (drivers.cuh).
//
// Layout of a row: a row of C elements starting at address `row` is covered by a grid of 16-byte
// vectors aligned DOWN: vector vi holds columns [vi·VEC − h, vi·VEC − h + VEC) with
// h = (row % 16) / sizeof(T) (0 when the row is 16-byte aligned). Interior vectors are one
// 16-byte access; the (at most two) edge vectors are accessed element by element with bounds
// checks, so nothing outside [row, row + C) is ever read or written. Columns outside the row read
// as the policy's fill (−inf for logits, 0 for targets). Every pointer of a call uses the same
// grid and must be congruent mod 16; otherwise the host runs the VEC = 1 instantiation.
#pragma once

#include <cooperative_groups.h>
#include <cuda_runtime.h>
#include <math_constants.h>

#include <cstdint>
#include <type_traits>

#include "fusedloss/cuda/device_common.cuh"
#include "fusedloss/cuda/vector_io.cuh"

namespace fusedloss {
namespace cuda {
namespace rowwise {

constexpr float kLog2e = 1.4426950408889634f;

// ---- strategy constants (shared with the host dispatch) ---------------------------------------
constexpr int kWarpRowsPerBlock = 4;  ///< warp mode: 128-thread blocks, one row per warp
/// 16-byte vectors per thread held in registers by the register-resident strategies. `streams`
/// counts the per-element streams of the hot loops: 1 for the logits, +1 for a second [N, C] row
/// held on chip (soft target / teacher), +1 for per-element class-weight loads (weighted label
/// smoothing, weighted soft targets). Block and cluster kernels run at most 512 threads (≤ 128
/// registers per thread), warp kernels 4 blocks of 128 per SM (≤ 128 registers); these values
/// are the largest that compile without spills for every instantiation (checked with -Xptxas -v
/// on sm_90 and sm_80).
template <class S>
constexpr int items_per_thread(int streams) {
  return streams <= 1 ? 8 : (streams == 2 ? 4 : 2);
}
constexpr int kMaxBlockThreads = 512;  ///< register-resident block / cluster kernels
constexpr int kStreamThreads = 512;  ///< streaming (online softmax, re-read) block size
constexpr int kStreamUnroll = 4;     ///< vectors in flight per thread in the streaming loops
constexpr int kSimpleThreads = 256;  ///< nll / kl_div block mode
constexpr int kMaxClusterSize = 8;   ///< portable cluster size limit
constexpr int kStatsThreads = 256;   ///< label statistics and loss reduction kernels

enum GroupMode : int { kWarp = 0, kBlock = 1, kCluster = 2 };

// ---- device-side parameter blocks --------------------------------------------------------------

/// Written by the label-statistics kernels (sparse cross_entropy / nll) into the workspace and
/// read by the main kernel and the loss reduction: the mean divisor is known on the device before
/// any gradient is written, without a host round trip.
struct RowStats {
  double divisor;     ///< Σ w[y_n] over valid, non-ignored rows
  long long bad;      ///< number of invalid labels
  float factor;       ///< gradient multiplier: grad_scale / divisor (mean) or grad_scale (0 when zero_div)
  float weight_sum;   ///< W = Σ_c w_c (C without class weights)
  int zero_div;       ///< mean with divisor 0: loss NaN, gradient all zero
  int pad_;
};

/// Everything a row kernel needs (passed by value).
struct RowArgs {
  const void* x;        ///< input [N, stride] (logits / log-probabilities / student logits)
  const void* t;        ///< dense target [N, stride] (soft CE, kl_div, kl_div_logits), else nullptr
  void* grad;           ///< gradient [N, stride] or nullptr; may equal x
  const void* labels;   ///< [N] int32 / int64 (sparse CE, nll)
  const float* w;       ///< class weights [C] or nullptr
  float* row_loss;      ///< [N] per-row loss (outputs.loss for none, else the workspace)
  float* dense_loss;    ///< kl_div with reduction none: [N*C] (dense, no stride), else nullptr
  float* lse;           ///< [N] or nullptr (cross_entropy)
  const RowStats* stats;  ///< sparse losses: device statistics, else nullptr
  long long N, C, stride;
  long long ignore_index;
  float factor;     ///< gradient multiplier when stats == nullptr
  float eps;        ///< label smoothing
  float inv_c;      ///< 1 / C
  float z_loss;
  float cap, inv_cap;    ///< softcap k and 1/k (k > 0 only when the SOFTCAP instantiation runs)
  float temp, inv_temp;  ///< kl_div_logits temperature
  int labels64;
  int log_target;
};

// ---- small math helpers -------------------------------------------------------------------------

/// The shift reference of a row with maximum m: m itself when finite, else 0. With it a row of
/// all −inf gives Σe = 0 → lse = −inf, and a row holding +inf gives Σe = inf → lse = +inf instead
/// of inf − inf = NaN (its probabilities are NaN: see over_row_sum).
__device__ __forceinline__ float shift_ref(float m) { return isfinite(m) ? m : 0.f; }

/// num / Σe for the softmax coefficients of a row. Σe = Σ e^{z − shift_ref(max)} is +inf exactly
/// when the row holds +inf (and no NaN): its probabilities are inf/inf, so the result is NaN and
/// the row's gradient NaN throughout, as on the CPU path (not 0 from __fdividef(x, inf)).
__device__ __forceinline__ float over_row_sum(float num, float sum_e) {
  return isinf(sum_e) ? CUDART_NAN_F : __fdividef(num, sum_e);
}

/// Compiler barriers for register-resident rows. Each pass over the row recomputes values from
/// the packed raw words (conversions, tanh, exp2 of the same arguments as the previous pass);
/// without these the compiler keeps the previous pass's per-element floats alive across the group
/// reduction instead — twice the registers of the packed bf16/fp16 row, and spills. An empty
/// volatile asm with a read-write operand makes the value opaque (no instruction is emitted).
__device__ __forceinline__ float opaque(float v) {
  FUSEDLOSS_OPAQUE_F32(v);
  return v;
}
__device__ __forceinline__ int opaque(int v) {
  FUSEDLOSS_OPAQUE_U32(v);
  return v;
}
template <class T>
__device__ __forceinline__ const T* opaque_ptr(const T* p) {
  FUSEDLOSS_OPAQUE_U64(p);
  return p;
}
template <class Raw, int N>
__device__ __forceinline__ void launder(Raw (&r)[N]) {
#pragma unroll
  for (int j = 0; j < N; ++j)
#pragma unroll
    for (int i = 0; i < static_cast<int>(sizeof(r[j].w) / sizeof(r[j].w[0])); ++i) FUSEDLOSS_OPAQUE_U32(r[j].w[i]);
}

// Per-row divisions use __fdividef (MUFU.RCP + FMUL, ≤ 2 ulp): an IEEE `/` brings a called
// slow-path subroutine whose call site makes ptxas spill the register-resident row. Every divisor
// here is a sum of exps in [1, C·e^0] or (1+e)² ∈ [1, 4]; at 0 / inf / NaN the result is the IEEE
// one (x·(1/0) = inf, x·(1/inf) = 0).

/// Softcap value k·tanh(z/k) (multiplying by 1/k instead of dividing). NaN stays NaN, ±inf → ±k.
__device__ __forceinline__ float softcap_fwd(float z, float k, float inv_k) { return k * tanhf(z * inv_k); }

/// Softcap value and its derivative 1 − tanh²(z/k) = 4e/(1+e)², e = exp(−2|z/k|). The exp form
/// keeps a few-ulp relative error for every z, where 1 − t² from a float t loses relative
/// precision as |z/k| grows (e.g. 1e-4 relative at |z/k| = 4, and 0 instead of 8e-9 at 10), and
/// it is exactly 0 at z = ±inf, like the oracle's 1/cosh².
__device__ __forceinline__ float softcap_fwd_chain(float z, float k, float inv_k, float& chain) {
  const float x = z * inv_k;
  const float e = expf(-2.f * fabsf(x));
  const float d = 1.f + e;
  chain = __fdividef(4.f * e, d * d);
  return k * tanhf(x);
}

// ---- per-row header (label, its weight, its logit) ---------------------------------------------

struct alignas(16) RowHead {
  long long y;  ///< label
  float wy;     ///< w[y] (1 without weights), valid rows only
  float zy;     ///< input[y] (raw, before softcap), valid rows only
  int kind;     ///< 0 valid, 1 ignored, 2 bad label
  int pad_;
};
enum : int { kRowValid = 0, kRowIgnored = 1, kRowBad = 2 };

/// Reads the label of `row` and, for a valid one, w[y] and input[y]. Bounds-checked: a label
/// outside [0, C) reads nothing else.
template <class S>
__device__ __forceinline__ RowHead load_sparse_head(const RowArgs& a, const S* xrow, long long row) {
  RowHead h;
  h.y = a.labels64 ? __ldg(static_cast<const long long*>(a.labels) + row)
                   : static_cast<long long>(__ldg(static_cast<const int*>(a.labels) + row));
  h.wy = 0.f;
  h.zy = 0.f;
  h.pad_ = 0;
  if (h.y == a.ignore_index) {
    h.kind = kRowIgnored;
  } else if (h.y < 0 || h.y >= a.C) {
    h.kind = kRowBad;
  } else {
    h.kind = kRowValid;
    h.wy = a.w != nullptr ? __ldg(a.w + h.y) : 1.f;
    h.zy = to_f32(xrow[h.y]);  // plain load: x may be the gradient buffer (in place)
  }
  return h;
}

// ---- thread groups that own one row: a warp, a block, or a cluster of blocks --------------------

struct GroupSmem {
  float red[4][kWarpSize];  ///< block reduction scratch (up to 4 values at once)
  RowHead head[2];          ///< row header, double-buffered by iteration parity
  float xchg[2][4];         ///< cluster exchange slots (read remotely through DSMEM)
};

template <int MODE>
struct Group;

/// One row per warp; 32 lanes; no shared memory, no barriers.
template <>
struct Group<kWarp> {
  int tid;
  int T;
  int base;  ///< first vector slot of this thread group (register layout)
  __device__ Group(GroupSmem&, int) : tid(static_cast<int>(threadIdx.x) & (kWarpSize - 1)), T(kWarpSize), base(0) {}
  __device__ long long first_row() const {
    return static_cast<long long>(blockIdx.x) * kWarpRowsPerBlock + threadIdx.x / kWarpSize;
  }
  __device__ long long row_step() const { return static_cast<long long>(gridDim.x) * kWarpRowsPerBlock; }
  __device__ bool leader() const { return tid == 0; }
  __device__ bool head_loader() const { return tid == 0; }
  /// Broadcast lane 0's header. The shuffle consumes lane 0's loads, so every later store of the
  /// warp happens after input[y] was read (in-place safety).
  __device__ RowHead share(RowHead h, int) const {
    RowHead r;
    r.y = __shfl_sync(0xffffffffu, h.y, 0);
    r.wy = __shfl_sync(0xffffffffu, h.wy, 0);
    r.zy = __shfl_sync(0xffffffffu, h.zy, 0);
    r.kind = __shfl_sync(0xffffffffu, h.kind, 0);
    r.pad_ = 0;
    return r;
  }
  template <int K>
  __device__ void max(float (&v)[K]) {
#pragma unroll
    for (int k = 0; k < K; ++k) v[k] = warp_max(v[k]);
  }
  template <int K>
  __device__ void sum(float (&v)[K]) {
#pragma unroll
    for (int k = 0; k < K; ++k) v[k] = warp_sum(v[k]);
  }
  __device__ void finish() {}
};

/// One row per block (any multiple of 32 threads up to 1024).
template <>
struct Group<kBlock> {
  GroupSmem& sm;
  int tid;
  int T;
  int base;
  __device__ Group(GroupSmem& s, int) : sm(s), tid(static_cast<int>(threadIdx.x)), T(static_cast<int>(blockDim.x)), base(0) {}
  __device__ long long first_row() const { return blockIdx.x; }
  __device__ long long row_step() const { return gridDim.x; }
  __device__ bool leader() const { return tid == 0; }
  __device__ bool head_loader() const { return tid == 0; }
  /// Thread 0's header through shared memory (double-buffered by iteration parity, so one barrier
  /// per row suffices). The barrier also orders thread 0's read of input[y] before every store.
  __device__ RowHead share(const RowHead& h, int parity) {
    if (tid == 0) sm.head[parity] = h;
    __syncthreads();
    return sm.head[parity];
  }
  template <int K>
  __device__ void max(float (&v)[K]) {
    block_reduce<MaxOp>(v, sm.red);
  }
  template <int K>
  __device__ void sum(float (&v)[K]) {
    block_reduce<SumOp>(v, sm.red);
  }
  __device__ void finish() {}
};

/// One row per cluster of K blocks (sm_90+): block r owns the vector slots
/// [r·T·ITEMS, (r+1)·T·ITEMS) of the row. Reductions: block reduction, then every block reads the
/// K block results through distributed shared memory and combines them in rank order (identical
/// in every block, deterministic). Two exchange slots alternate; a slot is rewritten only after
/// a later cluster barrier, which every reader of its previous contents has passed.
template <>
struct Group<kCluster> {
  GroupSmem& sm;
  int tid;
  int T;
  int base;
  unsigned rank;
  unsigned size;
  int slot;
  __device__ Group(GroupSmem& s, int items) : sm(s), tid(static_cast<int>(threadIdx.x)), T(static_cast<int>(blockDim.x)), base(0), rank(0), size(1), slot(0) {
#if FUSEDLOSS_DEVICE_HAS_CLUSTERS
    cooperative_groups::cluster_group cl = cooperative_groups::this_cluster();
    rank = cl.block_rank();
    size = cl.num_blocks();
#endif
    base = static_cast<int>(rank) * T * items;
  }
  __device__ long long first_row() const { return blockIdx.x / size; }
  __device__ long long row_step() const { return gridDim.x / size; }
  __device__ bool leader() const { return rank == 0 && tid == 0; }
  __device__ bool head_loader() const { return tid == 0; }
  __device__ RowHead share(const RowHead& h, int parity) {
    if (tid == 0) sm.head[parity] = h;
    __syncthreads();
    return sm.head[parity];
  }
  template <int K, bool MAX>
  __device__ void exchange(float (&v)[K]) {
    static_assert(K <= 4, "at most 4 values per exchange");
    block_reduce<typename std::conditional<MAX, MaxOp, SumOp>::type>(v, sm.red);
#if FUSEDLOSS_DEVICE_HAS_CLUSTERS
    cooperative_groups::cluster_group cl = cooperative_groups::this_cluster();
    float* mine = sm.xchg[slot];
    slot ^= 1;
    if (tid == 0) {
#pragma unroll
      for (int k = 0; k < K; ++k) mine[k] = v[k];
    }
    cl.sync();  // release/acquire: every block's slot is visible cluster-wide
#pragma unroll
    for (int k = 0; k < K; ++k) {
      float acc = MAX ? -CUDART_INF_F : 0.f;
      for (unsigned r = 0; r < size; ++r) {
        const float o = *cl.map_shared_rank(mine + k, r);
        acc = MAX ? fmaxf(acc, o) : acc + o;
      }
      v[k] = acc;
    }
#endif
  }
  template <int K>
  __device__ void max(float (&v)[K]) {
    exchange<K, true>(v);
  }
  template <int K>
  __device__ void sum(float (&v)[K]) {
    exchange<K, false>(v);
  }
  /// No block may exit while another can still read its shared memory.
  __device__ void finish() {
#if FUSEDLOSS_DEVICE_HAS_CLUSTERS
    cooperative_groups::this_cluster().sync();
#endif
  }
};

/// Writes zeros to the group's vector slots of a gradient row (register layout: ITEMS slots).
template <class S, int VEC, int ITEMS, class G>
__device__ __forceinline__ void zero_row_slots(const G& g, S* gal, int h, int nvec, int C) {
  using IO = VecIO<S, VEC>;
  const typename IO::Raw z = IO::zero();
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    const int vi = g.base + g.tid + j * g.T;
    if (vi < nvec) IO::store(gal, vi, vi * VEC - h, C, z);
  }
}

/// Writes zeros to a whole gradient row, strided over the group (streaming layout).
template <class S, int VEC, class G>
__device__ __forceinline__ void zero_row_stream(const G& g, S* gal, int h, long long nvec, long long C) {
  using IO = VecIO<S, VEC>;
  const typename IO::Raw z = IO::zero();
  for (long long vi = g.tid; vi < nvec; vi += g.T) IO::store(gal, vi, vi * VEC - h, C, z);
}

/// The elements e ∈ [0, VEC) of a vector whose first column is c0 (64-bit) that lie inside the
/// row [0, C): e ∈ [lo, hi). Computed once per vector, so the per-element test is a 32-bit compare
/// with the unrolled constant e instead of 64-bit column arithmetic (which, in the gradient pass of
/// the 16-bit soft-target streaming kernels, spilled at 64 registers). Only that pass uses it: in the
/// sum pass ptxas then picks 64 registers for the weighted soft-target kernels, and spills.
struct ColRange {
  int lo, hi;
  __device__ __forceinline__ bool has(int e) const { return e >= lo && e < hi; }
};
template <int VEC>
__device__ __forceinline__ ColRange col_range(long long c0, long long C) {
  const long long lo = -c0, hi = C - c0;
  return {lo <= 0 ? 0 : (lo >= VEC ? VEC : static_cast<int>(lo)), hi <= 0 ? 0 : (hi >= VEC ? VEC : static_cast<int>(hi))};
}

// ---- online softmax ---------------------------------------------------------------------------

/// Running (max m, Σ 2^{(z − shift_ref(m))·unit}) of one thread (online softmax; unit = log2e, or
/// log2e/T for a temperature).
struct Online {
  float m;  // start: −inf
  float s;  // start: 0
  /// Raise the running max to vm (the max of the next values) before adding their exps.
  __device__ void raise(float vm, float unit) {
    if (vm > m) {
      if (s != 0.f) s *= exp2f((shift_ref(m) - shift_ref(vm)) * unit);
      m = vm;
    }
  }
  __device__ float ref() const { return shift_ref(m); }
  /// This thread's sum re-expressed relative to the group maximum M.
  __device__ float rescaled(float M, float unit) const {
    if (s == 0.f) return 0.f;
    return s * exp2f((shift_ref(m) - shift_ref(M)) * unit);
  }
};

}  // namespace rowwise
}  // namespace cuda
}  // namespace fusedloss
