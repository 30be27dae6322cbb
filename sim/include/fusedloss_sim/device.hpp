// fusedloss emulated device — the CUDA device language for kernels compiled by the host compiler.
//
// Every CUDA thread runs as a fiber; the functions below that synchronise (barriers, warp
// shuffles and votes, cluster barriers) switch fibers, so the same kernel source runs unchanged.
// The intrinsics whose hardware results are approximations (__expf, __fdividef, ...) are computed
// in IEEE float here; README "Running without a GPU" lists how they differ.
#pragma once

#include <math.h>  // the global-namespace float functions (expf, fmaxf, isfinite, ...) device code calls

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <cuda_runtime_api.h>
#include <vector_types.h>

#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

namespace fusedloss_sim {

// ---- synchronisation (each takes the call site, for the divergence checks) -----------------------
void sync_threads(const void* site);
int sync_threads_count(int predicate, const void* site);  ///< __syncthreads_count; the others derive from it
void sync_warp(unsigned mask, const void* site);
/// One warp shuffle: mode 0 idx, 1 up, 2 down, 3 xor. Values travel as 64-bit patterns.
std::uint64_t shuffle(unsigned mask, std::uint64_t bits, int mode, int arg, int width, const void* site);
unsigned ballot(unsigned mask, int predicate, const void* site);
unsigned active_mask();
void nanosleep(unsigned ns);
std::uint64_t global_timer_ns();

// ---- shared memory: per-block storage (cluster blocks can map each other's) -----------------------
int new_shared_slot(std::size_t bytes, std::size_t align);
void* shared_slot(int slot);
void* dynamic_shared();

/// The storage of one `__shared__` declaration in the current block. Tag is a lambda type unique
/// to the declaration (and to each template instantiation of its function).
template <class T, class Tag>
T& block_shared(Tag) {
  static const int slot = new_shared_slot(sizeof(T), alignof(T));
  return *static_cast<T*>(shared_slot(slot));
}

template <class T>
T shuffle_value(unsigned mask, T v, int mode, int arg, int width, const void* site) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffles move up to 8 bytes");
  std::uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = shuffle(mask, bits, mode, arg, width, site);
  T r;
  std::memcpy(&r, &bits, sizeof(T));
  return r;
}

template <class To, class From>
To bit_cast(From v) {
  static_assert(sizeof(To) == sizeof(From), "same size");
  To r;
  std::memcpy(&r, &v, sizeof r);
  return r;
}

}  // namespace fusedloss_sim

// The built-in coordinates: per OS thread, set by the scheduler each time it resumes a CUDA thread.
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local uint3 blockDim;
extern thread_local uint3 gridDim;
constexpr int warpSize = 32;

// Macros, so that each call site names its source line in the checkers' reports.
#define FUSEDLOSS_SIM_STR2(x) #x
#define FUSEDLOSS_SIM_STR(x) FUSEDLOSS_SIM_STR2(x)
#define fusedloss_sim_here() static_cast<const void*>(__FILE__ ":" FUSEDLOSS_SIM_STR(__LINE__))
#define __syncthreads() ::fusedloss_sim::sync_threads(fusedloss_sim_here())
#define __syncthreads_count(p) ::fusedloss_sim::sync_threads_count((p), fusedloss_sim_here())
#define __syncthreads_and(p) (::fusedloss_sim::sync_threads_count(!!(p), fusedloss_sim_here()) == \
                              static_cast<int>(blockDim.x * blockDim.y * blockDim.z))
#define __syncthreads_or(p) (::fusedloss_sim::sync_threads_count(!!(p), fusedloss_sim_here()) != 0)
#define __syncwarp(...) ::fusedloss_sim_syncwarp(fusedloss_sim_here(), ##__VA_ARGS__)
#define __shfl_sync(m, v, l, ...) ::fusedloss_sim_shfl((m), (v), 0, (l), fusedloss_sim_here(), ##__VA_ARGS__)
#define __shfl_up_sync(m, v, d, ...) ::fusedloss_sim_shfl((m), (v), 1, (d), fusedloss_sim_here(), ##__VA_ARGS__)
#define __shfl_down_sync(m, v, d, ...) ::fusedloss_sim_shfl((m), (v), 2, (d), fusedloss_sim_here(), ##__VA_ARGS__)
#define __shfl_xor_sync(m, v, x, ...) ::fusedloss_sim_shfl((m), (v), 3, (x), fusedloss_sim_here(), ##__VA_ARGS__)
#define __ballot_sync(m, p) ::fusedloss_sim::ballot((m), (p), fusedloss_sim_here())
#define __any_sync(m, p) (::fusedloss_sim::ballot((m), (p), fusedloss_sim_here()) != 0u)
#define __all_sync(m, p) (::fusedloss_sim::ballot((m), (p), fusedloss_sim_here()) == (m))
#define __activemask() ::fusedloss_sim::active_mask()

inline void fusedloss_sim_syncwarp(const void* site, unsigned mask = 0xffffffffu) {
  ::fusedloss_sim::sync_warp(mask, site);
}
template <class T>
inline T fusedloss_sim_shfl(unsigned mask, T v, int mode, int arg, const void* site, int width = 32) {
  return ::fusedloss_sim::shuffle_value(mask, v, mode, arg, width, site);
}

// ---- memory access intrinsics: plain accesses (the checkers see them as such) ---------------------
namespace fusedloss_sim {
// A 16-byte vector (uint4, float4, ...) is one access, as the GPU's LDG.128/STG.128 is: copied as
// one 128-bit integer, so that the compiler cannot split it into per-field accesses, which the
// traffic accounting would count as four requests of 4 bytes per lane.
using whole16 __attribute__((may_alias)) = unsigned __int128;
template <class T>
inline T load_whole(const T* p) {
  if constexpr (sizeof(T) == 16 && alignof(T) == 16) {
    const whole16 v = *reinterpret_cast<const whole16*>(p);
    T r;
    std::memcpy(&r, &v, sizeof r);
    return r;
  } else {
    return *p;
  }
}
template <class T>
inline void store_whole(T* p, const T& v) {
  if constexpr (sizeof(T) == 16 && alignof(T) == 16) {
    whole16 w;
    std::memcpy(&w, &v, sizeof w);
    *reinterpret_cast<whole16*>(p) = w;
  } else {
    *p = v;
  }
}
}  // namespace fusedloss_sim
template <class T>
inline T __ldg(const T* p) {
  return fusedloss_sim::load_whole(p);
}
template <class T>
inline T __ldcg(const T* p) {
  return fusedloss_sim::load_whole(p);
}
template <class T>
inline T __ldcs(const T* p) {
  return fusedloss_sim::load_whole(p);
}
template <class T>
inline T __ldca(const T* p) {
  return fusedloss_sim::load_whole(p);
}
template <class T>
inline T __ldlu(const T* p) {
  return fusedloss_sim::load_whole(p);
}
template <class T>
inline void __stcs(T* p, T v) {
  fusedloss_sim::store_whole(p, v);
}
template <class T>
inline void __stcg(T* p, T v) {
  fusedloss_sim::store_whole(p, v);
}
template <class T>
inline void __stwb(T* p, T v) {
  fusedloss_sim::store_whole(p, v);
}

// ---- bit casts and arithmetic intrinsics --------------------------------------------------------
inline unsigned __float_as_uint(float v) { return fusedloss_sim::bit_cast<unsigned>(v); }
inline float __uint_as_float(unsigned v) { return fusedloss_sim::bit_cast<float>(v); }
inline int __float_as_int(float v) { return fusedloss_sim::bit_cast<int>(v); }
inline float __int_as_float(int v) { return fusedloss_sim::bit_cast<float>(v); }
inline long long __double_as_longlong(double v) { return fusedloss_sim::bit_cast<long long>(v); }
inline double __longlong_as_double(long long v) { return fusedloss_sim::bit_cast<double>(v); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
// Hardware: reciprocal approximation (MUFU.RCP, ≤ 1 ulp) times x. Here: the IEEE reciprocal.
inline float __fdividef(float a, float b) { return a * (1.0f / b); }
// Hardware: ex2.approx / lg2.approx (2 + 1.5·|x| ulp and so on). Here: the libm functions.
inline float __expf(float x) { return exp2f(x * 1.4426950408889634f); }
inline float __exp10f(float x) { return exp10f(x); }
inline float __logf(float x) { return log2f(x) * 0.6931471805599453f; }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __powf(float a, float b) { return powf(a, b); }
inline float __tanhf(float x) { return tanhf(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __saturatef(float x) { return x != x ? 0.f : (x < 0.f ? 0.f : (x > 1.f ? 1.f : x)); }
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
inline int __clz(int v) { return v == 0 ? 32 : __builtin_clz(static_cast<unsigned>(v)); }
inline int __ffs(int v) { return __builtin_ffs(v); }
inline unsigned __brev(unsigned v) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((v >> i) & 1u) << (31 - i);
  return r;
}
inline void __nanosleep(unsigned ns) { fusedloss_sim::nanosleep(ns); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ---- atomics (device-wide; the traffic counters see each one) ------------------------------------
template <class T>
inline T atomicAdd(T* p, T v) {
  if constexpr (std::is_integral<T>::value) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
  } else {
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    T desired = old + v;
    while (!__atomic_compare_exchange(p, &old, &desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) desired = old + v;
    return old;
  }
}
template <class T>
inline T atomicSub(T* p, T v) {
  return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED);
}
template <class T>
inline T atomicMax(T* p, T v) {
  T old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}
template <class T>
inline T atomicMin(T* p, T v) {
  T old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (v < old && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}
template <class T>
inline T atomicExch(T* p, T v) {
  return __atomic_exchange_n(p, v, __ATOMIC_RELAXED);
}
template <class T>
inline T atomicCAS(T* p, T expected, T desired) {
  __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return expected;
}
