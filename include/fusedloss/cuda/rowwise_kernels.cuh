// fusedloss — CUDA kernels of the row-wise losses (cross_entropy sparse / soft, nll, kl_div,
// kl_div_logits). Header-only, CUDA-only; cuda/rowwise.cu picks an instantiation and launches it
// (the algorithm, the memory traffic and the per-row strategies are explained there).
//
// Layout of a row in the kernels: a row of C elements starting at address `row` is covered by a
// grid of 16-byte vectors aligned DOWN: vector vi holds columns [vi·VEC − h, vi·VEC − h + VEC)
// with h = (row % 16) / sizeof(T) (0 when the row is 16-byte aligned). Interior vectors are loaded
// and stored with one 16-byte access; the (at most two) edge vectors element by element with
// bounds checks, so nothing outside [row, row + C) is ever read or written. Columns outside the
// row read as −inf (logits) or 0 (targets). The same grid is used for every pointer of a call
// (input, target, gradient), which therefore must be congruent mod 16; otherwise the host runs
// the VEC = 1 instantiation (h = 0, one element per "vector").
#pragma once

#include <cooperative_groups.h>
#include <cuda_runtime.h>
#include <math_constants.h>

#include <cstdint>
#include <type_traits>

#include "fusedloss/cuda/device_common.cuh"
#include "fusedloss/detail/rowwise_ops.hpp"

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

__device__ __forceinline__ float warp_max_f(float v) {
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
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

// ---- dtype traits: raw bit storage of one vector ------------------------------------------------

template <class S>
struct Bits;
template <>
struct Bits<float> {
  static constexpr std::uint32_t kNegInf = 0xff800000u;
  __device__ static std::uint32_t of(float v) { return __float_as_uint(v); }
};
template <>
struct Bits<__half> {
  static constexpr std::uint32_t kNegInf = 0xfc00u;
  __device__ static std::uint32_t of(__half v) { return __half_as_ushort(v); }
};
template <>
struct Bits<__nv_bfloat16> {
  static constexpr std::uint32_t kNegInf = 0xff80u;
  __device__ static std::uint32_t of(__nv_bfloat16 v) { return __bfloat16_as_ushort(v); }
};

/// One "vector" of VEC elements of storage type S, kept as raw 32-bit words so that register
/// arrays of it stay in registers (every index is a compile-time constant after unrolling).
template <class S, int VEC>
struct VecIO {
  static constexpr int kBytes = static_cast<int>(sizeof(S));
  static_assert(VEC == 1 || VEC * kBytes == 16, "a vector is one element or 16 bytes");
  static constexpr int kWords = (VEC * kBytes + 3) / 4;
  struct Raw {
    std::uint32_t w[kWords];
  };

  /// Elements between the 16-byte boundary below p and p (0 for VEC == 1).
  __device__ static int misalign(const void* p) {
    if constexpr (VEC == 1) {
      return 0;
    } else {
      return static_cast<int>((reinterpret_cast<std::uintptr_t>(p) & 15u) / kBytes);
    }
  }

  __device__ static Raw fill(std::uint32_t elem_bits) {
    Raw r;
    const std::uint32_t word = kBytes == 4 ? elem_bits : (elem_bits | (elem_bits << 16));
#pragma unroll
    for (int i = 0; i < kWords; ++i) r.w[i] = word;
    return r;
  }
  __device__ static Raw neg_inf() { return fill(Bits<S>::kNegInf); }
  __device__ static Raw zero() { return fill(0u); }

  __device__ static float get(const Raw& r, int e) {
    if constexpr (kBytes == 4) {
      return __uint_as_float(r.w[e]);
    } else {
      const std::uint32_t word = r.w[e >> 1];
      const unsigned short b = (e & 1) ? static_cast<unsigned short>(word >> 16) : static_cast<unsigned short>(word);
      if constexpr (sizeof(S) == 2 && std::is_same<S, __half>::value) {
        return to_f32(__ushort_as_half(b));
      } else {
        return to_f32(__ushort_as_bfloat16(b));
      }
    }
  }
  __device__ static void put_bits(Raw& r, int e, std::uint32_t bits) {
    if constexpr (kBytes == 4) {
      r.w[e] = bits;
    } else {
      std::uint32_t& word = r.w[e >> 1];
      word = (e & 1) ? ((word & 0x0000ffffu) | (bits << 16)) : ((word & 0xffff0000u) | (bits & 0xffffu));
    }
  }
  /// Rounds v once (to nearest even) to S.
  __device__ static void put(Raw& r, int e, float v) { put_bits(r, e, Bits<S>::of(from_f32<S>(v))); }
  /// A whole vector from VEC floats, each rounded once to nearest even (paired conversions for
  /// the 16-bit types: one cvt.rn.{bf16x2,f16x2}.f32 per two elements, no read-modify-write).
  __device__ static Raw pack(const float (&v)[VEC]) {
    Raw r;
    if constexpr (kBytes == 4) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) r.w[e] = __float_as_uint(v[e]);
    } else if constexpr (VEC == 1) {
      r.w[0] = Bits<S>::of(from_f32<S>(v[0]));
    } else if constexpr (std::is_same<S, __half>::value) {
#pragma unroll
      for (int i = 0; i < kWords; ++i) {
        const __half2 h2 = __floats2half2_rn(v[2 * i], v[2 * i + 1]);  // .x = low half = element 2i
        r.w[i] = *reinterpret_cast<const std::uint32_t*>(&h2);
      }
    } else {
#pragma unroll
      for (int i = 0; i < kWords; ++i) {
        const __nv_bfloat162 b2 = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
        r.w[i] = *reinterpret_cast<const std::uint32_t*>(&b2);
      }
    }
    return r;
  }

  __device__ static std::uint32_t load_elem_bits(const S* p) {
    if constexpr (kBytes == 4) {
      return *reinterpret_cast<const unsigned int*>(p);
    } else {
      return *reinterpret_cast<const unsigned short*>(p);
    }
  }
  __device__ static void store_elem_bits(S* p, std::uint32_t bits) {
    if constexpr (kBytes == 4) {
      *reinterpret_cast<unsigned int*>(p) = bits;
    } else {
      *reinterpret_cast<unsigned short*>(p) = static_cast<unsigned short>(bits);
    }
  }

  /// Loads vector vi of the aligned-down row grid `al` (= row − h); c0 = vi·VEC − h is its first
  /// column. Columns outside [0, C) take the bits of `outside`. STREAMING selects the evict-first
  /// cache hint (data read for the last time).
  template <bool STREAMING, class I>
  __device__ static Raw load(const S* al, I vi, I c0, I C, const Raw& outside) {
    Raw r;
    const S* p = al + vi * VEC;
    if (c0 >= 0 && c0 + VEC <= C) {
      if constexpr (VEC == 1) {
        r.w[0] = load_elem_bits(p);
      } else {
        const uint4* q = reinterpret_cast<const uint4*>(p);
        const uint4 u = STREAMING ? __ldcs(q) : __ldcg(q);
        r.w[0] = u.x;
        r.w[1] = u.y;
        r.w[2] = u.z;
        r.w[3] = u.w;
      }
    } else {
      r = load_edge(p, static_cast<long long>(c0), static_cast<long long>(C), outside);
    }
    return r;
  }

  /// The (at most two per row) vectors that straddle a row end, element by element.
  __device__ static __forceinline__ Raw load_edge(const S* p, long long c0, long long C, Raw r) {
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const long long c = c0 + e;
      if (c >= 0 && c < C) put_bits(r, e, load_elem_bits(p + e));
    }
    return r;
  }

  /// Stores vector vi (only its columns inside [0, C)).
  template <class I>
  __device__ static void store(S* al, I vi, I c0, I C, const Raw& r) {
    S* p = al + vi * VEC;
    if (c0 >= 0 && c0 + VEC <= C) {
      if constexpr (VEC == 1) {
        store_elem_bits(p, r.w[0]);
      } else {
        __stcs(reinterpret_cast<uint4*>(p), make_uint4(r.w[0], r.w[1], r.w[2], r.w[3]));
      }
    } else {
      store_edge(p, static_cast<long long>(c0), static_cast<long long>(C), r);
    }
  }

  __device__ static __forceinline__ void store_edge(S* p, long long c0, long long C, Raw r) {
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const long long c = c0 + e;
      if (c >= 0 && c < C) {
        const std::uint32_t bits = kBytes == 4 ? r.w[e] : ((r.w[e >> 1] >> ((e & 1) * 16)) & 0xffffu);
        store_elem_bits(p + e, bits);
      }
    }
  }
};

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

/// Block-wide reduction of K values (sum or max), fixed order, result in every thread.
template <int K, bool MAX>
__device__ __forceinline__ void block_reduce(float (&v)[K], float (*red)[kWarpSize]) {
  const int lane = threadIdx.x & (kWarpSize - 1);
  const int warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
#pragma unroll
  for (int k = 0; k < K; ++k) v[k] = MAX ? warp_max_f(v[k]) : warp_sum(v[k]);
  __syncthreads();  // red may still be read by the previous reduction
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) red[k][warp] = v[k];
  }
  __syncthreads();
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const float t = lane < warps ? red[k][lane] : (MAX ? -CUDART_INF_F : 0.f);
    v[k] = MAX ? warp_max_f(t) : warp_sum(t);
  }
}

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
    for (int k = 0; k < K; ++k) v[k] = warp_max_f(v[k]);
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
    block_reduce<K, true>(v, sm.red);
  }
  template <int K>
  __device__ void sum(float (&v)[K]) {
    block_reduce<K, false>(v, sm.red);
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
    block_reduce<K, MAX>(v, sm.red);
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

// ---- sparse cross_entropy: per-row algebra --------------------------------------------------------

/// Row loss of sparse cross_entropy from shifted statistics (R = shift reference):
///   lse_rel = lse − R = log Σ e^{z−R},  zy_rel = z_y − R,  swz = Σ_{w_c ≠ 0} w_c (z_c − R).
/// The shift cancels exactly in the math, (lse−R) − (z_y−R) = lse − z_y, and W(lse−R) − Σw(z−R) =
/// W·lse − Σwz, but in float it avoids the cancellation of two numbers of size |z| (±1e4 logits).
/// It is detail::sparse_ce_row_loss at shifted arguments, except that a term whose coefficient is
/// 0 is skipped (never 0·inf): (1−ε)·w_y == 0 skips the target term.
__device__ __forceinline__ float sparse_ce_loss(float lse, float lse_rel, float zy_rel, float wy, float W, float swz,
                                                const RowArgs& a) {
  const float b = (1.f - a.eps) * wy;
  float l;
  if (b != 0.f) {
    l = detail::sparse_ce_row_loss<float>(lse_rel, zy_rel, wy, W, swz, a.eps, a.inv_c, 0.f);
  } else {
    l = a.eps > 0.f ? a.eps * a.inv_c * (W * lse_rel - swz) : 0.f;
  }
  if (a.z_loss > 0.f) l += a.z_loss * lse * lse;
  return l;
}

/// Gradient constants of a row: grad_c = (e_c·A − E·w_c − B·[c = y])·chain_c with e_c = exp(z_c − R).
struct SparseCoef {
  float A, B, E;
  bool zero;  ///< every coefficient is 0: the contract's gradient is exactly 0 (even for NaN rows)
};
__device__ __forceinline__ SparseCoef sparse_ce_coef(float wy, float W, float lse, float sum_e, float F,
                                                     const RowArgs& a) {
  const detail::SparseCeGradCoeffs<float> k = detail::sparse_ce_grad_coeffs<float>(wy, W, a.eps, a.inv_c, a.z_loss, lse);
  SparseCoef c;
  c.A = over_row_sum(k.a * F, sum_e);
  c.B = k.b * F;
  c.E = k.e * F;
  c.zero = detail::sparse_ce_grad_is_zero<float>(wy, a.eps, a.z_loss);
  return c;
}

/// Gradient of one column (without the target term).
/// SMOOTH: 0 no label smoothing, 1 smoothing without class weights (w_c = 1), 2 with.
template <bool SOFTCAP, int SMOOTH>
__device__ __forceinline__ float sparse_ce_grad(float z_raw, float R, const SparseCoef& k, float w, const RowArgs& a) {
  float chain = 1.f;
  float z = z_raw;
  if constexpr (SOFTCAP) z = softcap_fwd_chain(z_raw, a.cap, a.inv_cap, chain);
  float g = exp2f((z - R) * kLog2e) * k.A;
  if constexpr (SMOOTH != 0) g -= k.E * w;
  if constexpr (SOFTCAP) g *= chain;
  return g;
}

/// The target column's gradient (the loop wrote it without −B; its owner overwrites it).
template <bool SOFTCAP, int SMOOTH>
__device__ __forceinline__ float sparse_ce_target_grad(const RowHead& hd, float R, const SparseCoef& k,
                                                       const RowArgs& a) {
  float chain = 1.f;
  float z = hd.zy;
  if constexpr (SOFTCAP) z = softcap_fwd_chain(hd.zy, a.cap, a.inv_cap, chain);
  float g = exp2f((z - R) * kLog2e) * k.A;
  if constexpr (SMOOTH != 0) g -= k.E * hd.wy;
  g -= k.B;
  if constexpr (SOFTCAP) g *= chain;
  return g;
}

template <class I>
__device__ __forceinline__ float class_w(const RowArgs& a, I c) {
  return a.w != nullptr ? __ldg(a.w + c) : 1.f;
}

// ---- sparse cross_entropy, row held on chip (warp / block / cluster) -------------------------------

template <class S, int VEC, int ITEMS, bool SOFTCAP, int SMOOTH, class G>
__device__ __forceinline__ void sparse_ce_regs_row(const RowArgs& a, G& g, long long row, float F, float W,
                                                   bool zero_div, int parity) {
  using IO = VecIO<S, VEC>;
  using Raw = typename IO::Raw;
  const int C = static_cast<int>(a.C);  // register strategies: C < 2^20
  const S* xrow = static_cast<const S*>(a.x) + row * a.stride;
  const int h = IO::misalign(xrow);
  const int nvec = (C + h + VEC - 1) / VEC;
  const S* xal = xrow - h;
  S* gal = a.grad != nullptr ? static_cast<S*>(a.grad) + row * a.stride - h : nullptr;

  RowHead hd{};
  if (g.head_loader()) hd = load_sparse_head<S>(a, xrow, row);
  hd = g.share(hd, parity);
  const bool valid = hd.kind == kRowValid;

  if (!valid && a.lse == nullptr) {  // ignored / bad row: nothing to read
    if (g.leader()) a.row_loss[row] = hd.kind == kRowBad ? CUDART_NAN_F : 0.f;
    if (gal != nullptr) zero_row_slots<S, VEC, ITEMS>(g, gal, h, nvec, C);
    return;
  }

  // 1. the row into registers (the only global read of it), and its maximum
  Raw r[ITEMS];
  const Raw ninf = IO::neg_inf();
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    const int vi = g.base + g.tid + j * g.T;
    r[j] = vi < nvec ? IO::template load<true>(xal, vi, vi * VEC - h, C, ninf) : ninf;
  }
  float mx[1] = {-CUDART_INF_F};
#pragma unroll
  for (int j = 0; j < ITEMS; ++j)
#pragma unroll
    for (int e = 0; e < VEC; ++e) mx[0] = fmaxf(mx[0], IO::get(r[j], e));
  g.max(mx);
  // tanh is monotonic: the max of the capped row is the capped max.
  const float R = shift_ref(SOFTCAP ? softcap_fwd(mx[0], a.cap, a.inv_cap) : mx[0]);
  launder(r);
  const float* ws = opaque_ptr(a.w);  // weight loads stay in the pass that uses them

  // 2. Σ e^{z−R} (and Σ w(z−R) for label smoothing) from registers
  constexpr int NS = SMOOTH != 0 ? 2 : 1;
  float acc[NS];
#pragma unroll
  for (int k = 0; k < NS; ++k) acc[k] = 0.f;
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    const int c0 = (g.base + g.tid + j * g.T) * VEC - h;
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const int c = c0 + e;
      const bool in = c >= 0 && c < C;
      float z = IO::get(r[j], e);
      // Outside columns hold −inf, which adds e^{−inf} = 0 — but the softcap would turn them into
      // −k, so with a softcap they are masked explicitly (a real −inf logit does become −k).
      if constexpr (SOFTCAP) z = in ? softcap_fwd(z, a.cap, a.inv_cap) : -CUDART_INF_F;
      acc[0] += exp2f((z - R) * kLog2e);
      if constexpr (SMOOTH != 0) {
        if (in) {
          const float w = SMOOTH == 2 ? __ldg(ws + c) : 1.f;
          if (w != 0.f) acc[1] += w * (z - R);
        }
      }
    }
  }
  g.sum(acc);
  const float sum_e = acc[0];
  const float lse_rel = logf(sum_e);
  const float lse = R + lse_rel;

  if (g.leader()) {
    if (a.lse != nullptr) a.lse[row] = lse;
    float loss = hd.kind == kRowBad ? CUDART_NAN_F : 0.f;
    if (valid) {
      const float zy = SOFTCAP ? softcap_fwd(hd.zy, a.cap, a.inv_cap) : hd.zy;
      loss = sparse_ce_loss(lse, lse_rel, zy - R, hd.wy, W, SMOOTH != 0 ? acc[NS - 1] : 0.f, a);
    }
    a.row_loss[row] = loss;
  }
  if (gal == nullptr) return;
  const SparseCoef k = sparse_ce_coef(hd.wy, W, lse, sum_e, F, a);
  if (!valid || zero_div || k.zero) {
    zero_row_slots<S, VEC, ITEMS>(g, gal, h, nvec, C);
    return;
  }

  // 3. the gradient from registers: one global write
  launder(r);
  const float Rg = opaque(R);  // same value; keeps the sum pass's exps from being kept alive
  const float* wg = opaque_ptr(a.w);  // same pointer; keeps the sum pass's weight loads from staying live
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    const int vi = g.base + g.tid + j * g.T;
    if (vi < nvec) {
      const int c0 = vi * VEC - h;
      float gv[VEC];
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        float w = 0.f;
        if constexpr (SMOOTH != 0) {
          const int c = c0 + e;
          w = (c >= 0 && c < C) ? (SMOOTH == 2 ? __ldg(wg + c) : 1.f) : 0.f;
        }
        gv[e] = sparse_ce_grad<SOFTCAP, SMOOTH>(IO::get(r[j], e), Rg, k, w, a);
      }
      IO::store(gal, vi, c0, C, IO::pack(gv));
    }
  }
  // 4. patch the target column: its owner (the thread that just stored it) rewrites it.
  const int off = static_cast<int>((hd.y + h) / VEC) - g.base;
  if (off >= 0 && off < ITEMS * g.T && off % g.T == g.tid) {
    gal[h + hd.y] = from_f32<S>(sparse_ce_target_grad<SOFTCAP, SMOOTH>(hd, R, k, a));
  }
}

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

template <class S, int VEC, int ITEMS, int MODE, bool SOFTCAP, int SMOOTH>
__global__ void __launch_bounds__(ModeBounds<MODE>::kThreads, ModeBounds<MODE>::kMinBlocks)
    sparse_ce_regs_kernel(const RowArgs a) {
  if constexpr (FUSEDLOSS_CLUSTER_UNSUPPORTED(MODE)) {
    return;  // never launched: the host checks the kernel's binary version first
  } else {
    FUSEDLOSS_SHARED(GroupSmem, sm);
    Group<MODE> g(sm, ITEMS);
    const RowStats* st = a.stats;
    const float F = st != nullptr ? st->factor : a.factor;
    const float W = st != nullptr ? st->weight_sum : static_cast<float>(a.C);
    const bool zero_div = st != nullptr && st->zero_div != 0;
    int parity = 0;
    for (long long row = g.first_row(); row < a.N; row += g.row_step(), parity ^= 1)
      sparse_ce_regs_row<S, VEC, ITEMS, SOFTCAP, SMOOTH>(a, g, row, F, W, zero_div, parity);
    g.finish();
  }
}

// ---- online softmax helpers (streaming kernels) ------------------------------------------------------

/// Running (max m, Σ e^{z − shift_ref(m)}) of one thread.
struct Online {
  float m;  // start: −inf
  float s;  // start: 0
  /// Raise the running max to vm (the max of the next values) before adding their exps.
  __device__ void raise(float vm) {
    if (vm > m) {
      if (s != 0.f) s *= exp2f((shift_ref(m) - shift_ref(vm)) * kLog2e);
      m = vm;
    }
  }
  __device__ float ref() const { return shift_ref(m); }
  /// This thread's sum re-expressed relative to the group maximum M.
  __device__ float rescaled(float M) const {
    if (s == 0.f) return 0.f;
    return s * exp2f((shift_ref(m) - shift_ref(M)) * kLog2e);
  }
};

// ---- sparse cross_entropy, streaming (rows too large for chip; online softmax + L2 re-read) -----------

template <class S, int VEC, bool SOFTCAP, int SMOOTH>
__global__ void __launch_bounds__(kStreamThreads) sparse_ce_stream_kernel(const RowArgs a) {
  using IO = VecIO<S, VEC>;
  using Raw = typename IO::Raw;
  constexpr int U = kStreamUnroll;
  FUSEDLOSS_SHARED(GroupSmem, sm);
  Group<kBlock> g(sm, 0);
  const RowStats* st = a.stats;
  const float F = st != nullptr ? st->factor : a.factor;
  const float W = st != nullptr ? st->weight_sum : static_cast<float>(a.C);
  const bool zero_div = st != nullptr && st->zero_div != 0;
  const long long C = a.C;
  const Raw ninf = IO::neg_inf();
  int parity = 0;
  for (long long row = g.first_row(); row < a.N; row += g.row_step(), parity ^= 1) {
    const S* xrow = static_cast<const S*>(a.x) + row * a.stride;
    const int h = IO::misalign(xrow);
    const long long nvec = (C + h + VEC - 1) / VEC;
    const S* xal = xrow - h;
    S* gal = a.grad != nullptr ? static_cast<S*>(a.grad) + row * a.stride - h : nullptr;

    RowHead hd{};
    if (g.head_loader()) hd = load_sparse_head<S>(a, xrow, row);
    hd = g.share(hd, parity);
    const bool valid = hd.kind == kRowValid;
    if (!valid && a.lse == nullptr) {
      if (g.leader()) a.row_loss[row] = hd.kind == kRowBad ? CUDART_NAN_F : 0.f;
      if (gal != nullptr) zero_row_stream<S, VEC>(g, gal, h, nvec, C);
      continue;
    }

    // pass 1: online max / sum of exps (reads the row; the re-read below should hit L2)
    Online on{-CUDART_INF_F, 0.f};
    for (long long v0 = g.tid; v0 < nvec; v0 += static_cast<long long>(U) * g.T) {
      Raw r[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const long long vi = v0 + static_cast<long long>(u) * g.T;
        r[u] = vi < nvec ? IO::template load<false>(xal, vi, vi * VEC - h, C, ninf) : ninf;
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const long long c0 = (v0 + static_cast<long long>(u) * g.T) * VEC - h;
        float z[VEC];
        float vm = -CUDART_INF_F;
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          z[e] = IO::get(r[u], e);
          if constexpr (SOFTCAP) {
            const long long c = c0 + e;
            z[e] = (c >= 0 && c < C) ? softcap_fwd(z[e], a.cap, a.inv_cap) : -CUDART_INF_F;
          }
          vm = fmaxf(vm, z[e]);
        }
        on.raise(vm);
        const float ref = on.ref();
#pragma unroll
        for (int e = 0; e < VEC; ++e) on.s += exp2f((z[e] - ref) * kLog2e);
      }
    }
    float mx[1] = {on.m};
    g.max(mx);
    const float R = shift_ref(mx[0]);
    float sm1[1] = {on.rescaled(mx[0])};
    g.sum(sm1);
    const float sum_e = sm1[0];
    const float lse_rel = logf(sum_e);
    const float lse = R + lse_rel;

    const SparseCoef k = sparse_ce_coef(hd.wy, W, lse, sum_e, F, a);
    const bool write_grad = gal != nullptr && valid && !zero_div && !k.zero;

    // pass 2 (when needed): gradient, and Σ w(z − R) for the smoothing term of the loss
    float swz[1] = {0.f};
    const bool need_swz = SMOOTH != 0 && valid;
    if (write_grad || need_swz) {
      for (long long v0 = g.tid; v0 < nvec; v0 += static_cast<long long>(U) * g.T) {
        Raw r[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const long long vi = v0 + static_cast<long long>(u) * g.T;
          r[u] = vi < nvec ? IO::template load<true>(xal, vi, vi * VEC - h, C, ninf) : ninf;
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const long long vi = v0 + static_cast<long long>(u) * g.T;
          if (vi < nvec) {
            const long long c0 = vi * VEC - h;
            float gv[VEC];
#pragma unroll
            for (int e = 0; e < VEC; ++e) {
              const float zr = IO::get(r[u], e);
              float w = 0.f;
              if constexpr (SMOOTH != 0) {
                const long long c = c0 + e;
                if (c >= 0 && c < C) {
                  w = SMOOTH == 2 ? __ldg(a.w + c) : 1.f;
                  if (w != 0.f) swz[0] += w * ((SOFTCAP ? softcap_fwd(zr, a.cap, a.inv_cap) : zr) - R);
                }
              }
              gv[e] = write_grad ? sparse_ce_grad<SOFTCAP, SMOOTH>(zr, R, k, w, a) : 0.f;
            }
            if (write_grad) IO::store(gal, vi, c0, C, IO::pack(gv));
          }
        }
      }
      if (need_swz) g.sum(swz);
    }
    // After pass 2: in place, the zeros must not be read back as logits. Each thread zeroes the
    // columns it read itself.
    if (gal != nullptr && !write_grad) zero_row_stream<S, VEC>(g, gal, h, nvec, C);
    if (g.leader()) {
      if (a.lse != nullptr) a.lse[row] = lse;
      float loss = hd.kind == kRowBad ? CUDART_NAN_F : 0.f;
      if (valid) {
        const float zy = SOFTCAP ? softcap_fwd(hd.zy, a.cap, a.inv_cap) : hd.zy;
        loss = sparse_ce_loss(lse, lse_rel, zy - R, hd.wy, W, swz[0], a);
      }
      a.row_loss[row] = loss;
    }
    if (write_grad && ((hd.y + h) / VEC) % g.T == g.tid)
      gal[h + hd.y] = from_f32<S>(sparse_ce_target_grad<SOFTCAP, SMOOTH>(hd, R, k, a));
  }
}

// ---- soft-target cross_entropy -----------------------------------------------------------------------
//   wt_c = w_c·t'_c (t' smoothed), Swt = Σ wt_c
//   ℓ = Swt·(lse − R) − Σ_{wt_c≠0} wt_c (z_c − R) + s·lse²      ∂ℓ/∂z_c = (e_c·A − wt_c·F)·chain_c
//   with A = (Swt + 2·s·lse)·F / Σe.  Columns outside the row get wt = 0 (masked explicitly).

template <bool WEIGHTED, class I>
__device__ __forceinline__ float soft_wt(float t, I c, I C, const float* w, const RowArgs& a) {
  if (c < 0 || c >= C) return 0.f;
  const float tp = detail::smoothed_target<float>(t, a.eps, a.inv_c);
  return WEIGHTED ? __ldg(w + c) * tp : tp;
}

__device__ __forceinline__ float soft_ce_loss(float lse, float lse_rel, float swt, float swtz, const RowArgs& a) {
  float l = swt != 0.f ? swt * lse_rel - swtz : -swtz;  // a zero coefficient adds 0, even with lse = inf
  if (a.z_loss > 0.f) l += a.z_loss * lse * lse;
  return l;
}

template <bool SOFTCAP>
__device__ __forceinline__ float soft_ce_grad(float z_raw, float wt, float R, float A, float F, const RowArgs& a) {
  float chain = 1.f;
  float z = z_raw;
  if constexpr (SOFTCAP) z = softcap_fwd_chain(z_raw, a.cap, a.inv_cap, chain);
  float g = exp2f((z - R) * kLog2e) * A - wt * F;
  if constexpr (SOFTCAP) g *= chain;
  return g;
}

template <class S, int VEC, int ITEMS, int MODE, bool SOFTCAP, bool WEIGHTED>
__global__ void __launch_bounds__(ModeBounds<MODE>::kThreads, ModeBounds<MODE>::kMinBlocks)
    soft_ce_regs_kernel(const RowArgs a) {
  if constexpr (FUSEDLOSS_CLUSTER_UNSUPPORTED(MODE)) {
    return;
  } else {
    using IO = VecIO<S, VEC>;
    using Raw = typename IO::Raw;
    FUSEDLOSS_SHARED(GroupSmem, sm);
    Group<MODE> g(sm, ITEMS);
    const float F = a.factor;
    const int C = static_cast<int>(a.C);  // register strategies: C < 2^20
    const Raw ninf = IO::neg_inf();
    const Raw zero = IO::zero();
    for (long long row = g.first_row(); row < a.N; row += g.row_step()) {
      const S* xrow = static_cast<const S*>(a.x) + row * a.stride;
      const S* trow = static_cast<const S*>(a.t) + row * a.stride;
      const int h = IO::misalign(xrow);
      const int nvec = (C + h + VEC - 1) / VEC;
      const S* xal = xrow - h;
      const S* tal = trow - h;
      S* gal = a.grad != nullptr ? static_cast<S*>(a.grad) + row * a.stride - h : nullptr;

      Raw rz[ITEMS], rt[ITEMS];
#pragma unroll
      for (int j = 0; j < ITEMS; ++j) {
        const int vi = g.base + g.tid + j * g.T;
        rz[j] = vi < nvec ? IO::template load<true>(xal, vi, vi * VEC - h, C, ninf) : ninf;
        rt[j] = vi < nvec ? IO::template load<true>(tal, vi, vi * VEC - h, C, zero) : zero;
      }
      float mx[1] = {-CUDART_INF_F};
#pragma unroll
      for (int j = 0; j < ITEMS; ++j)
#pragma unroll
        for (int e = 0; e < VEC; ++e) mx[0] = fmaxf(mx[0], IO::get(rz[j], e));
      g.max(mx);
      const float R = shift_ref(SOFTCAP ? softcap_fwd(mx[0], a.cap, a.inv_cap) : mx[0]);
      launder(rz);
      launder(rt);
      const float* ws = opaque_ptr(a.w);

      float acc[3] = {0.f, 0.f, 0.f};  // Σe, Swt, Σ wt (z − R)
#pragma unroll
      for (int j = 0; j < ITEMS; ++j) {
        const int c0 = (g.base + g.tid + j * g.T) * VEC - h;
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          float z = IO::get(rz[j], e);
          if constexpr (SOFTCAP) z = (c0 + e >= 0 && c0 + e < C) ? softcap_fwd(z, a.cap, a.inv_cap) : -CUDART_INF_F;
          acc[0] += exp2f((z - R) * kLog2e);
          const float wt = soft_wt<WEIGHTED>(IO::get(rt[j], e), c0 + e, C, ws, a);
          acc[1] += wt;
          if (wt != 0.f) acc[2] += wt * (z - R);
        }
      }
      g.sum(acc);
      const float sum_e = acc[0];
      const float lse_rel = logf(sum_e);
      const float lse = R + lse_rel;
      if (g.leader()) {
        if (a.lse != nullptr) a.lse[row] = lse;
        a.row_loss[row] = soft_ce_loss(lse, lse_rel, acc[1], acc[2], a);
      }
      if (gal == nullptr) continue;
      const float A = over_row_sum((acc[1] + (a.z_loss > 0.f ? 2.f * a.z_loss * lse : 0.f)) * F, sum_e);
      launder(rz);
      launder(rt);
      const float* wg = opaque_ptr(a.w);
      const float Rg = opaque(R);
#pragma unroll
      for (int j = 0; j < ITEMS; ++j) {
        const int vi = g.base + g.tid + j * g.T;
        if (vi < nvec) {
          const int c0 = vi * VEC - h;
          float gv[VEC];
#pragma unroll
          for (int e = 0; e < VEC; ++e) {
            const float wt = soft_wt<WEIGHTED>(IO::get(rt[j], e), c0 + e, C, wg, a);
            gv[e] = soft_ce_grad<SOFTCAP>(IO::get(rz[j], e), wt, Rg, A, F, a);
          }
          IO::store(gal, vi, c0, C, IO::pack(gv));
        }
      }
    }
    g.finish();
  }
}

template <class S, int VEC, bool SOFTCAP, bool WEIGHTED>
__global__ void __launch_bounds__(kStreamThreads) soft_ce_stream_kernel(const RowArgs a) {
  using IO = VecIO<S, VEC>;
  using Raw = typename IO::Raw;
  constexpr int U = kStreamUnroll;
  FUSEDLOSS_SHARED(GroupSmem, sm);
  Group<kBlock> g(sm, 0);
  const float F = a.factor;
  const long long C = a.C;
  const Raw ninf = IO::neg_inf();
  const Raw zero = IO::zero();
  for (long long row = g.first_row(); row < a.N; row += g.row_step()) {
    const S* xrow = static_cast<const S*>(a.x) + row * a.stride;
    const S* trow = static_cast<const S*>(a.t) + row * a.stride;
    const int h = IO::misalign(xrow);
    const long long nvec = (C + h + VEC - 1) / VEC;
    const S* xal = xrow - h;
    const S* tal = trow - h;
    S* gal = a.grad != nullptr ? static_cast<S*>(a.grad) + row * a.stride - h : nullptr;

    // pass 1: online softmax statistics and Swt
    Online on{-CUDART_INF_F, 0.f};
    float swt = 0.f;
    for (long long v0 = g.tid; v0 < nvec; v0 += static_cast<long long>(U) * g.T) {
      Raw rz[U], rt[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const long long vi = v0 + static_cast<long long>(u) * g.T;
        rz[u] = vi < nvec ? IO::template load<false>(xal, vi, vi * VEC - h, C, ninf) : ninf;
        rt[u] = vi < nvec ? IO::template load<false>(tal, vi, vi * VEC - h, C, zero) : zero;
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const long long c0 = (v0 + static_cast<long long>(u) * g.T) * VEC - h;
        float z[VEC];
        float vm = -CUDART_INF_F;
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          z[e] = IO::get(rz[u], e);
          if constexpr (SOFTCAP)
            z[e] = (c0 + e >= 0 && c0 + e < C) ? softcap_fwd(z[e], a.cap, a.inv_cap) : -CUDART_INF_F;
          vm = fmaxf(vm, z[e]);
          swt += soft_wt<WEIGHTED>(IO::get(rt[u], e), c0 + e, C, a.w, a);
        }
        on.raise(vm);
        const float ref = on.ref();
#pragma unroll
        for (int e = 0; e < VEC; ++e) on.s += exp2f((z[e] - ref) * kLog2e);
      }
    }
    float mx[1] = {on.m};
    g.max(mx);
    const float R = shift_ref(mx[0]);
    float s2[2] = {on.rescaled(mx[0]), swt};
    g.sum(s2);
    const float sum_e = s2[0];
    const float Swt = s2[1];
    const float lse_rel = logf(sum_e);
    const float lse = R + lse_rel;
    const float A = over_row_sum((Swt + (a.z_loss > 0.f ? 2.f * a.z_loss * lse : 0.f)) * F, sum_e);

    // pass 2: gradient and Σ wt (z − R)
    float swtz[1] = {0.f};
    for (long long v0 = g.tid; v0 < nvec; v0 += static_cast<long long>(U) * g.T) {
      Raw rz[U], rt[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const long long vi = v0 + static_cast<long long>(u) * g.T;
        rz[u] = vi < nvec ? IO::template load<true>(xal, vi, vi * VEC - h, C, ninf) : ninf;
        rt[u] = vi < nvec ? IO::template load<true>(tal, vi, vi * VEC - h, C, zero) : zero;
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const long long vi = v0 + static_cast<long long>(u) * g.T;
        if (vi < nvec) {
          const long long c0 = vi * VEC - h;
          float gv[VEC];
#pragma unroll
          for (int e = 0; e < VEC; ++e) {
            const float zr = IO::get(rz[u], e);
            const float wt = soft_wt<WEIGHTED>(IO::get(rt[u], e), c0 + e, C, a.w, a);
            if (wt != 0.f) swtz[0] += wt * ((SOFTCAP ? softcap_fwd(zr, a.cap, a.inv_cap) : zr) - R);
            gv[e] = gal != nullptr ? soft_ce_grad<SOFTCAP>(zr, wt, R, A, F, a) : 0.f;
          }
          if (gal != nullptr) IO::store(gal, vi, c0, C, IO::pack(gv));
        }
      }
    }
    g.sum(swtz);
    if (g.leader()) {
      if (a.lse != nullptr) a.lse[row] = lse;
      a.row_loss[row] = soft_ce_loss(lse, lse_rel, Swt, swtz[0], a);
    }
  }
}

// ---- kl_div_logits (distillation) ----------------------------------------------------------------------
// Student s (input), teacher u (target), temperature T. With Rs, Ru the shift references of the
// row maxima and e^s_c = exp((s_c − Rs)/T), e^u_c = exp((u_c − Ru)/T):
//   q_c = e^s_c / Ss, p_c = e^u_c / Su,  D = log Su − log Ss
//   ℓ = T²·Σ_{p_c≠0} p_c·[((u_c − Ru) − (s_c − Rs))/T − D]        ∂ℓ/∂s_c = T·F·(q_c − p_c)
// The shift is applied before the division by T, so ±1e4 logits keep full relative precision.

template <class S, int VEC, int ITEMS, int MODE>
__global__ void __launch_bounds__(ModeBounds<MODE>::kThreads, ModeBounds<MODE>::kMinBlocks)
    kl_logits_regs_kernel(const RowArgs a) {
  if constexpr (FUSEDLOSS_CLUSTER_UNSUPPORTED(MODE)) {
    return;
  } else {
    using IO = VecIO<S, VEC>;
    using Raw = typename IO::Raw;
    FUSEDLOSS_SHARED(GroupSmem, sm);
    Group<MODE> g(sm, ITEMS);
    const int C = static_cast<int>(a.C);  // register strategies: C < 2^20
    const float cexp = a.inv_temp * kLog2e;
    const float TF = a.temp * a.factor;
    const Raw ninf = IO::neg_inf();
    for (long long row = g.first_row(); row < a.N; row += g.row_step()) {
      const S* srow = static_cast<const S*>(a.x) + row * a.stride;
      const S* urow = static_cast<const S*>(a.t) + row * a.stride;
      const int h = IO::misalign(srow);
      const int nvec = (C + h + VEC - 1) / VEC;
      const S* sal = srow - h;
      const S* ual = urow - h;
      S* gal = a.grad != nullptr ? static_cast<S*>(a.grad) + row * a.stride - h : nullptr;

      Raw rs[ITEMS], ru[ITEMS];
#pragma unroll
      for (int j = 0; j < ITEMS; ++j) {
        const int vi = g.base + g.tid + j * g.T;
        rs[j] = vi < nvec ? IO::template load<true>(sal, vi, vi * VEC - h, C, ninf) : ninf;
        ru[j] = vi < nvec ? IO::template load<true>(ual, vi, vi * VEC - h, C, ninf) : ninf;
      }
      float mx[2] = {-CUDART_INF_F, -CUDART_INF_F};
#pragma unroll
      for (int j = 0; j < ITEMS; ++j)
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          mx[0] = fmaxf(mx[0], IO::get(rs[j], e));
          mx[1] = fmaxf(mx[1], IO::get(ru[j], e));
        }
      g.max(mx);
      const float Rs = shift_ref(mx[0]), Ru = shift_ref(mx[1]);
      launder(rs);
      launder(ru);
      float sums[2] = {0.f, 0.f};
#pragma unroll
      for (int j = 0; j < ITEMS; ++j)
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          sums[0] += exp2f((IO::get(rs[j], e) - Rs) * cexp);
          sums[1] += exp2f((IO::get(ru[j], e) - Ru) * cexp);
        }
      g.sum(sums);
      const float Ss = sums[0], Su = sums[1];
      const float D = logf(Su) - logf(Ss);
      const float GS = __fdividef(TF, Ss), GU = __fdividef(TF, Su);
      launder(rs);
      launder(ru);
      const float Rs2 = opaque(Rs), Ru2 = opaque(Ru);
      float L[1] = {0.f};
#pragma unroll
      for (int j = 0; j < ITEMS; ++j) {
        const int vi = g.base + g.tid + j * g.T;
        float gv[VEC];
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const float sd = IO::get(rs[j], e) - Rs2;
          const float ud = IO::get(ru[j], e) - Ru2;
          const float es = exp2f(sd * cexp), eu = exp2f(ud * cexp);
          if (eu != 0.f) L[0] += eu * ((ud - sd) * a.inv_temp - D);  // outside columns: eu = 0
          gv[e] = es * GS - eu * GU;
        }
        if (gal != nullptr && vi < nvec) IO::store(gal, vi, vi * VEC - h, C, IO::pack(gv));
      }
      g.sum(L);
      if (g.leader()) a.row_loss[row] = a.temp * a.temp * __fdividef(L[0], Su);
    }
    g.finish();
  }
}

template <class S, int VEC>
__global__ void __launch_bounds__(kStreamThreads) kl_logits_stream_kernel(const RowArgs a) {
  using IO = VecIO<S, VEC>;
  using Raw = typename IO::Raw;
  constexpr int U = kStreamUnroll;
  FUSEDLOSS_SHARED(GroupSmem, sm);
  Group<kBlock> g(sm, 0);
  const long long C = a.C;
  const float cexp = a.inv_temp * kLog2e;
  const float TF = a.temp * a.factor;
  const Raw ninf = IO::neg_inf();
  for (long long row = g.first_row(); row < a.N; row += g.row_step()) {
    const S* srow = static_cast<const S*>(a.x) + row * a.stride;
    const S* urow = static_cast<const S*>(a.t) + row * a.stride;
    const int h = IO::misalign(srow);
    const long long nvec = (C + h + VEC - 1) / VEC;
    const S* sal = srow - h;
    const S* ual = urow - h;
    S* gal = a.grad != nullptr ? static_cast<S*>(a.grad) + row * a.stride - h : nullptr;

    // pass 1: online statistics of both rows (exps in units of 1/T)
    Online os{-CUDART_INF_F, 0.f}, ou{-CUDART_INF_F, 0.f};
    for (long long v0 = g.tid; v0 < nvec; v0 += static_cast<long long>(U) * g.T) {
      Raw rs[U], ru[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const long long vi = v0 + static_cast<long long>(u) * g.T;
        rs[u] = vi < nvec ? IO::template load<false>(sal, vi, vi * VEC - h, C, ninf) : ninf;
        ru[u] = vi < nvec ? IO::template load<false>(ual, vi, vi * VEC - h, C, ninf) : ninf;
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        float ms = -CUDART_INF_F, mu = -CUDART_INF_F;
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          ms = fmaxf(ms, IO::get(rs[u], e));
          mu = fmaxf(mu, IO::get(ru[u], e));
        }
        // Online keeps Σ exp2((z − ref)·log2e); here the exponent unit is log2e/T.
        if (ms > os.m) {
          if (os.s != 0.f) os.s *= exp2f((shift_ref(os.m) - shift_ref(ms)) * cexp);
          os.m = ms;
        }
        if (mu > ou.m) {
          if (ou.s != 0.f) ou.s *= exp2f((shift_ref(ou.m) - shift_ref(mu)) * cexp);
          ou.m = mu;
        }
        const float rfs = os.ref(), rfu = ou.ref();
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          os.s += exp2f((IO::get(rs[u], e) - rfs) * cexp);
          ou.s += exp2f((IO::get(ru[u], e) - rfu) * cexp);
        }
      }
    }
    float mx[2] = {os.m, ou.m};
    g.max(mx);
    const float Rs = shift_ref(mx[0]), Ru = shift_ref(mx[1]);
    float sums[2] = {os.s == 0.f ? 0.f : os.s * exp2f((os.ref() - Rs) * cexp),
                     ou.s == 0.f ? 0.f : ou.s * exp2f((ou.ref() - Ru) * cexp)};
    g.sum(sums);
    const float Ss = sums[0], Su = sums[1];
    const float D = logf(Su) - logf(Ss);
    const float GS = __fdividef(TF, Ss), GU = __fdividef(TF, Su);

    // pass 2: gradient and the loss sum
    float L[1] = {0.f};
    for (long long v0 = g.tid; v0 < nvec; v0 += static_cast<long long>(U) * g.T) {
      Raw rs[U], ru[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const long long vi = v0 + static_cast<long long>(u) * g.T;
        rs[u] = vi < nvec ? IO::template load<true>(sal, vi, vi * VEC - h, C, ninf) : ninf;
        ru[u] = vi < nvec ? IO::template load<true>(ual, vi, vi * VEC - h, C, ninf) : ninf;
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const long long vi = v0 + static_cast<long long>(u) * g.T;
        float gv[VEC];
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const float sd = IO::get(rs[u], e) - Rs;
          const float ud = IO::get(ru[u], e) - Ru;
          const float es = exp2f(sd * cexp), eu = exp2f(ud * cexp);
          if (eu != 0.f) L[0] += eu * ((ud - sd) * a.inv_temp - D);
          gv[e] = es * GS - eu * GU;
        }
        if (gal != nullptr && vi < nvec) IO::store(gal, vi, vi * VEC - h, C, IO::pack(gv));
      }
    }
    g.sum(L);
    if (g.leader()) a.row_loss[row] = a.temp * a.temp * __fdividef(L[0], Su);
  }
}

// ---- nll: a row of zeros with −w_y·F at the label; the loss reads one element ---------------------

template <class S, int VEC, int MODE>
__global__ void __launch_bounds__(MODE == kWarp ? kWarpSize * kWarpRowsPerBlock : kSimpleThreads)
    nll_kernel(const RowArgs a) {
  using IO = VecIO<S, VEC>;
  using Raw = typename IO::Raw;
  FUSEDLOSS_SHARED(GroupSmem, sm);
  Group<MODE> g(sm, 0);
  const RowStats* st = a.stats;
  const float F = st != nullptr ? st->factor : a.factor;
  const bool zero_div = st != nullptr && st->zero_div != 0;
  const long long C = a.C;
  int parity = 0;
  for (long long row = g.first_row(); row < a.N; row += g.row_step(), parity ^= 1) {
    const S* xrow = static_cast<const S*>(a.x) + row * a.stride;
    RowHead hd{};
    if (g.head_loader()) hd = load_sparse_head<S>(a, xrow, row);
    hd = g.share(hd, parity);  // input[y] is read before any store of the row (in place)
    const bool valid = hd.kind == kRowValid;
    if (g.leader()) {
      float loss = hd.kind == kRowBad ? CUDART_NAN_F : 0.f;
      if (valid && hd.wy != 0.f) loss = -hd.wy * hd.zy;
      a.row_loss[row] = loss;
    }
    if (a.grad == nullptr) continue;
    S* grow = static_cast<S*>(a.grad) + row * a.stride;
    const int h = IO::misalign(grow);
    const long long nvec = (C + h + VEC - 1) / VEC;
    S* gal = grow - h;
    const bool put = valid && !zero_div;
    const long long ycol = put ? hd.y : -1;
    const float gy = put ? -hd.wy * F : 0.f;
    for (long long vi = g.tid; vi < nvec; vi += g.T) {
      const long long c0 = vi * VEC - h;
      Raw o = IO::zero();
      if (ycol >= c0 && ycol < c0 + VEC) {
#pragma unroll
        for (int e = 0; e < VEC; ++e)
          if (c0 + e == ycol) IO::put(o, e, gy);
      }
      IO::store(gal, vi, c0, C, o);
    }
  }
}

// ---- kl_div: elementwise over the row ----------------------------------------------------------------

template <class S, int VEC, int MODE>
__global__ void __launch_bounds__(MODE == kWarp ? kWarpSize * kWarpRowsPerBlock : kSimpleThreads)
    kl_div_kernel(const RowArgs a) {
  using IO = VecIO<S, VEC>;
  using Raw = typename IO::Raw;
  FUSEDLOSS_SHARED(GroupSmem, sm);
  Group<MODE> g(sm, 0);
  const float F = a.factor;
  const long long C = a.C;
  const bool log_target = a.log_target != 0;
  const Raw zero = IO::zero();
  for (long long row = g.first_row(); row < a.N; row += g.row_step()) {
    const S* qrow = static_cast<const S*>(a.x) + row * a.stride;
    const S* trow = static_cast<const S*>(a.t) + row * a.stride;
    const int h = IO::misalign(qrow);
    const long long nvec = (C + h + VEC - 1) / VEC;
    const S* qal = qrow - h;
    const S* tal = trow - h;
    S* gal = a.grad != nullptr ? static_cast<S*>(a.grad) + row * a.stride - h : nullptr;
    float* dense = a.dense_loss != nullptr ? a.dense_loss + row * C : nullptr;
    float acc[1] = {0.f};
    for (long long vi = g.tid; vi < nvec; vi += g.T) {
      const long long c0 = vi * VEC - h;
      const Raw q = IO::template load<true>(qal, vi, c0, C, zero);
      const Raw t = IO::template load<true>(tal, vi, c0, C, zero);
      float gv[VEC];
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const long long c = c0 + e;
        float dq = 0.f;
        float l = detail::kl_div_element<float>(IO::get(q, e), IO::get(t, e), log_target, dq);
        if (dq == 0.f) l = 0.f;  // target probability 0: the term is 0 (never 0·inf)
        if (c >= 0 && c < C) {
          if (dense != nullptr) {
            dense[c] = l;
          } else {
            acc[0] += l;
          }
        }
        gv[e] = dq * F;
      }
      if (gal != nullptr) IO::store(gal, vi, c0, C, IO::pack(gv));
    }
    if (dense == nullptr) {
      g.sum(acc);
      if (g.leader()) a.row_loss[row] = acc[0];
    }
  }
}

// ---- label statistics and the final loss reduction (fixed order, double) ------------------------------

struct LabelArgs {
  const void* labels;
  const float* w;
  double* part_div;
  double* part_wsum;
  long long* part_bad;
  RowStats* stats;
  long long* error_count;
  long long N, C, ignore_index;
  long long chunk;   ///< labels per block
  long long cchunk;  ///< class weights per block (W)
  double grad_scale;
  int labels64;
  int need_wsum;
  int mean;
};

__device__ __forceinline__ void finish_label_stats(const LabelArgs& la, double div, long long bad, double wsum) {
  RowStats s;
  s.divisor = div;
  s.bad = bad;
  s.weight_sum = la.need_wsum ? static_cast<float>(wsum) : static_cast<float>(la.C);
  s.zero_div = (la.mean && div == 0.0) ? 1 : 0;
  s.factor = la.mean ? (div != 0.0 ? static_cast<float>(la.grad_scale / div) : 0.f) : static_cast<float>(la.grad_scale);
  s.pad_ = 0;
  *la.stats = s;
  if (la.error_count != nullptr) *la.error_count = bad;
}

/// Block b reduces labels [b·chunk, (b+1)·chunk) and class weights [b·cchunk, (b+1)·cchunk).
/// A one-block grid finishes the statistics itself; otherwise label_final_kernel does.
__global__ void __launch_bounds__(kStatsThreads) label_stats_kernel(const LabelArgs la) {
  FUSEDLOSS_SHARED(double[kWarpSize], sd);
  FUSEDLOSS_SHARED(double[kWarpSize], sw);
  FUSEDLOSS_SHARED(long long[kWarpSize], sb);
  const long long b = blockIdx.x;
  double div = 0.0, wsum = 0.0;
  long long bad = 0;
  const long long lo = b * la.chunk;
  const long long hi = lo + la.chunk < la.N ? lo + la.chunk : la.N;
  for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) {
    const long long y = la.labels64 ? __ldg(static_cast<const long long*>(la.labels) + i)
                                    : static_cast<long long>(__ldg(static_cast<const int*>(la.labels) + i));
    if (y == la.ignore_index) continue;
    if (y < 0 || y >= la.C) {
      ++bad;
      continue;
    }
    div += la.w != nullptr ? static_cast<double>(__ldg(la.w + y)) : 1.0;
  }
  if (la.need_wsum) {
    const long long clo = b * la.cchunk;
    const long long chi = clo + la.cchunk < la.C ? clo + la.cchunk : la.C;
    for (long long c = clo + threadIdx.x; c < chi; c += blockDim.x) wsum += static_cast<double>(__ldg(la.w + c));
  }
  div = block_sum(div, sd);
  wsum = block_sum(wsum, sw);
  bad = block_sum(bad, sb);
  if (threadIdx.x == 0) {
    if (gridDim.x == 1) {
      finish_label_stats(la, div, bad, wsum);
    } else {
      la.part_div[b] = div;
      la.part_wsum[b] = wsum;
      la.part_bad[b] = bad;
    }
  }
}

__global__ void __launch_bounds__(kStatsThreads) label_final_kernel(const LabelArgs la, int parts) {
  FUSEDLOSS_SHARED(double[kWarpSize], sd);
  FUSEDLOSS_SHARED(double[kWarpSize], sw);
  FUSEDLOSS_SHARED(long long[kWarpSize], sb);
  double div = 0.0, wsum = 0.0;
  long long bad = 0;
  for (int i = threadIdx.x; i < parts; i += blockDim.x) {
    div += la.part_div[i];
    wsum += la.part_wsum[i];
    bad += la.part_bad[i];
  }
  div = block_sum(div, sd);
  wsum = block_sum(wsum, sw);
  bad = block_sum(bad, sb);
  if (threadIdx.x == 0) finish_label_stats(la, div, bad, wsum);
}

struct LossArgs {
  const float* rows;  ///< per-row losses [N]
  double* part;       ///< per-block partial sums
  float* out;         ///< outputs.loss[0]
  const RowStats* stats;  ///< non-null: divide by stats->divisor (sparse mean), NaN when zero_div
  long long N;
  long long chunk;
  double divisor;  ///< used when stats == nullptr
};

__device__ __forceinline__ void finish_loss(const LossArgs& f, double total) {
  float v;
  if (f.stats != nullptr) {
    v = f.stats->zero_div ? CUDART_NAN_F : static_cast<float>(total / f.stats->divisor);
  } else {
    v = static_cast<float>(total / f.divisor);
  }
  *f.out = v;
}

__global__ void __launch_bounds__(kStatsThreads) loss_partial_kernel(const LossArgs f) {
  FUSEDLOSS_SHARED(double[kWarpSize], sd);
  const long long b = blockIdx.x;
  const long long lo = b * f.chunk;
  const long long hi = lo + f.chunk < f.N ? lo + f.chunk : f.N;
  double acc = 0.0;
  for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) acc += static_cast<double>(f.rows[i]);
  acc = block_sum(acc, sd);
  if (threadIdx.x == 0) {
    if (gridDim.x == 1) {
      finish_loss(f, acc);
    } else {
      f.part[b] = acc;
    }
  }
}

__global__ void __launch_bounds__(kStatsThreads) loss_final_kernel(const LossArgs f, int parts) {
  FUSEDLOSS_SHARED(double[kWarpSize], sd);
  double acc = 0.0;
  for (int i = threadIdx.x; i < parts; i += blockDim.x) acc += f.part[i];
  acc = block_sum(acc, sd);
  if (threadIdx.x == 0) finish_loss(f, acc);
}

__global__ void write_scalar_kernel(float* out, float value) { *out = value; }

}  // namespace rowwise
}  // namespace cuda
}  // namespace fusedloss
