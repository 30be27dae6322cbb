// fusedloss — 16-byte vector I/O shared by the elementwise and row-wise kernels. A vector of VEC
// elements of storage type S (float, __half, __nv_bfloat16) is kept as raw 32-bit words, so that
// register arrays of vectors stay in registers (every index is a compile-time constant after
// unrolling) and a 16-bit dtype costs half the registers of its float lanes. Whole vectors move
// as one 128-bit access with the cache hint the caller names; vectors that straddle the end of
// a range move element by element, so nothing outside the range is touched. Lanes convert to
// float on read and round once (to nearest even) to S on write.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "fusedloss/cuda/device_common.cuh"

namespace fusedloss {
namespace cuda {

/// Raw bits of one element: the −inf pattern (the fill of a max) and the element's bits.
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

/// Cache behaviour of a whole-vector load.
enum class Load : int {
  Coherent,   ///< plain ld.global: the data may alias an output of the same kernel
  ReadOnly,   ///< ld.global.nc (__ldg): read-only for the kernel's lifetime
  L2,         ///< ld.global.cg (__ldcg): cached in L2 only (data read again by another pass)
  Streaming,  ///< ld.global.cs (__ldcs): evict-first (data read for the last time)
};
/// Cache behaviour of a whole-vector store.
enum class Store : int {
  Plain,      ///< st.global
  Streaming,  ///< st.global.cs (__stcs): evict-first (output not read again by this kernel)
};

/// One vector of VEC elements of S: VEC == 1 (the scalar fallback for misaligned pointers) or
/// 16 bytes (the default).
template <class S, int VEC = static_cast<int>(16 / sizeof(S))>
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

  /// Lane e as float.
  __device__ static float get(const Raw& r, int e) {
    if constexpr (kBytes == 4) {
      return __uint_as_float(r.w[e]);
    } else {
      const std::uint32_t word = r.w[e >> 1];
      const unsigned short b = (e & 1) ? static_cast<unsigned short>(word >> 16) : static_cast<unsigned short>(word);
      if constexpr (std::is_same<S, __half>::value) {
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

  /// One 128-bit load with cache behaviour H.
  template <Load H>
  __device__ static uint4 load16(const uint4* q) {
    if constexpr (H == Load::Coherent) {
      return load_vector(q);
    } else if constexpr (H == Load::ReadOnly) {
      return __ldg(q);
    } else if constexpr (H == Load::L2) {
      return __ldcg(q);
    } else {
      return __ldcs(q);
    }
  }

  /// The whole vector at p (16-byte aligned unless VEC == 1): one 128-bit load.
  template <Load H>
  __device__ static Raw load(const S* p) {
    Raw r;
    if constexpr (VEC == 1) {
      r.w[0] = load_elem_bits(p);
    } else {
      const uint4 u = load16<H>(reinterpret_cast<const uint4*>(p));
      r.w[0] = u.x;
      r.w[1] = u.y;
      r.w[2] = u.z;
      r.w[3] = u.w;
    }
    return r;
  }
  /// The whole vector to p (16-byte aligned unless VEC == 1): one 128-bit store.
  template <Store H>
  __device__ static void store(S* p, const Raw& r) {
    if constexpr (VEC == 1) {
      store_elem_bits(p, r.w[0]);
    } else if constexpr (H == Store::Plain) {
      store_vector(reinterpret_cast<uint4*>(p), make_uint4(r.w[0], r.w[1], r.w[2], r.w[3]));
    } else {
      __stcs(reinterpret_cast<uint4*>(p), make_uint4(r.w[0], r.w[1], r.w[2], r.w[3]));
    }
  }

  /// The first n lanes (0 <= n <= VEC) at p element by element, the others +0.0: a vector cut
  /// by the end of an array.
  __device__ static __forceinline__ Raw load_prefix(const S* p, int n) {
    Raw r = zero();
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      if (e < n) {
        if constexpr (kBytes == 4) {
          r.w[e] = load_elem_bits(p + e);
        } else {
          r.w[e >> 1] |= load_elem_bits(p + e) << ((e & 1) * 16);
        }
      }
    }
    return r;
  }

  // ---- a row on a grid of vectors aligned down from `al`: vector vi holds the elements
  //      c0 + e, e < VEC, of a range [0, C) (rowwise/primitives.cuh) --------------------------

  /// Vector vi: one 128-bit load when it lies inside the range, else element by element with the
  /// lanes outside taking the bits of `outside`. The 128-bit load is spelled out here rather than
  /// calling load<H>(p): the same code through the call makes ptxas (13.0, sm_90) spill 8-24 B in
  /// three soft_ce_stream_kernel instantiations at 64 registers.
  template <Load H, class I>
  __device__ static Raw load(const S* al, I vi, I c0, I C, const Raw& outside) {
    Raw r;
    const S* p = al + vi * VEC;
    if (c0 >= 0 && c0 + VEC <= C) {
      if constexpr (VEC == 1) {
        r.w[0] = load_elem_bits(p);
      } else {
        const uint4 u = load16<H>(reinterpret_cast<const uint4*>(p));
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

  /// Stores vector vi (only its lanes inside [0, C)), evict-first.
  template <class I>
  __device__ static void store(S* al, I vi, I c0, I C, const Raw& r) {
    S* p = al + vi * VEC;
    if (c0 >= 0 && c0 + VEC <= C) {
      store<Store::Streaming>(p, r);
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

}  // namespace cuda
}  // namespace fusedloss
