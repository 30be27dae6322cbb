// fusedloss — device-side building blocks shared by the CUDA kernels (cuda/*.cu).
// Header-only, CUDA-only: never included by the public API headers.
//
//  * dtype traits: the storage type of each DType and float32 load / rounded store;
//  * the one warp / block reduction family (sum, max; fixed shuffle trees: bitwise reproducible);
//  * FUSEDLOSS_CUDA_TRY: map a cudaError_t to Status::CudaError without aborting;
//  * the seams between the kernels and the device they run on (nvcc's, or the emulated device in
//    sim/): the launch helper, __shared__ declarations, compiler barriers, cluster support. Under
//    nvcc each compiles to exactly the plain CUDA it replaces.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math_constants.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "fusedloss/types.hpp"

#define FUSEDLOSS_CUDA_TRY(expr)                                          \
  do {                                                                    \
    if ((expr) != cudaSuccess) return ::fusedloss::Status::CudaError;     \
  } while (0)

/// After a kernel launch: report a launch failure (bad configuration, no device) as CudaError.
#define FUSEDLOSS_CUDA_CHECK_LAUNCH() FUSEDLOSS_CUDA_TRY(cudaGetLastError())

// ---- device seams ------------------------------------------------------------------------------------

/// Per-block shared storage of type T (arrays allowed: FUSEDLOSS_SHARED(float[32], red)). The
/// emulated device gives every block (and every block of a cluster) its own copy.
#if defined(FUSEDLOSS_EMULATED_DEVICE)
#define FUSEDLOSS_SHARED(T, name) ::fusedloss::cuda::shared_t<T>& name = ::fusedloss_sim::block_shared<T>([] {})
#else
#define FUSEDLOSS_SHARED(T, name) __shared__ ::fusedloss::cuda::shared_t<T> name
#endif

/// Compiler barriers: an empty asm with a read-write operand makes a value opaque to the
/// optimiser and emits no instruction (the operand letters are PTX's under nvcc).
#if defined(FUSEDLOSS_EMULATED_DEVICE)
#define FUSEDLOSS_OPAQUE_F32(v) asm volatile("" : "+g"(v))
#define FUSEDLOSS_OPAQUE_U64(v) asm volatile("" : "+r"(v))
#else
#define FUSEDLOSS_OPAQUE_F32(v) asm volatile("" : "+f"(v))
#define FUSEDLOSS_OPAQUE_U64(v) asm volatile("" : "+l"(v))
#endif
#define FUSEDLOSS_OPAQUE_U32(v) asm volatile("" : "+r"(v))

/// Thread-block clusters and distributed shared memory (sm_90+, and the emulated device).
#if defined(FUSEDLOSS_EMULATED_DEVICE) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900)
#define FUSEDLOSS_DEVICE_HAS_CLUSTERS 1
#else
#define FUSEDLOSS_DEVICE_HAS_CLUSTERS 0
#endif

namespace fusedloss {
namespace cuda {

/// A plain 16-byte vector load / store (uint4, float4): exactly `*p` / `*p = v` under nvcc
/// (LDG.E.128 / STG.E.128). On the emulated device the host compiler would split the copy into
/// per-field accesses, which the traffic accounting would count as four 4-byte requests.
template <class T>
__device__ __forceinline__ T load_vector(const T* p) {
#if defined(FUSEDLOSS_EMULATED_DEVICE)
  return ::fusedloss_sim::load_whole(p);
#else
  return *p;
#endif
}
template <class T>
__device__ __forceinline__ void store_vector(T* p, const T& v) {
#if defined(FUSEDLOSS_EMULATED_DEVICE)
  ::fusedloss_sim::store_whole(p, v);
#else
  *p = v;
#endif
}

template <class T>
using shared_t = T;

/// The one way kernels are launched (CUB's triple_chevron): under nvcc exactly
/// `kernel<<<grid, block, smem, stream>>>(args...)`, on the emulated device its launch. Errors
/// surface through cudaGetLastError, as with <<<>>>.
struct triple_chevron {
  dim3 grid, block;
  std::size_t smem;
  cudaStream_t stream;
  triple_chevron(dim3 g, dim3 b, std::size_t s = 0, cudaStream_t st = 0) : grid(g), block(b), smem(s), stream(st) {}
  template <class... P, class... A>
  void doit(void (*kernel)(P...), A&&... args) const {
#if defined(FUSEDLOSS_EMULATED_DEVICE)
    ::fusedloss_sim::launch(kernel, grid, block, smem, stream, 1u, std::forward<A>(args)...);
#else
    kernel<<<grid, block, smem, stream>>>(std::forward<A>(args)...);
#endif
  }
};

template <DType D>
struct Storage;
template <>
struct Storage<DType::Float32> {
  using type = float;
};
template <>
struct Storage<DType::Float16> {
  using type = __half;
};
template <>
struct Storage<DType::BFloat16> {
  using type = __nv_bfloat16;
};
template <DType D>
using storage_t = typename Storage<D>::type;

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class S>
__device__ __forceinline__ S from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

constexpr int kWarpSize = 32;

// ---- the one warp / block reduction family (fixed order: bitwise reproducible) ----------------------

/// Sum and max as reduction operators. Max is fmaxf for floats: a NaN element does not win over
/// the numbers of its row (a NaN row's statistics go NaN through its sums instead).
struct SumOp {
  template <class T>
  __device__ static T identity() {
    return T(0);
  }
  template <class T>
  __device__ static T apply(T a, T b) {
    return a + b;
  }
};
struct MaxOp {
  template <class T>
  __device__ static T identity() {
    return -CUDART_INF_F;
  }
  __device__ static float apply(float a, float b) { return fmaxf(a, b); }
};

/// Butterfly reduction over a full warp; every lane ends with the same value, and the order of
/// operations is fixed, so the result is bitwise reproducible.
template <class Op, class T>
__device__ __forceinline__ T warp_reduce(T v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) v = Op::apply(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}
template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  return warp_reduce<SumOp>(v);
}
__device__ __forceinline__ float warp_max(float v) { return warp_reduce<MaxOp>(v); }

/// Block-wide reduction of K values per thread (blockDim.x a multiple of 32, at most 1024): warp
/// butterflies, then the warp results in warp order. Every thread gets the results. `scratch`
/// is __shared__ T[K][32]. Every thread of the block must call it (it holds two __syncthreads).
template <class Op, int K, class T>
__device__ __forceinline__ void block_reduce(T (&v)[K], T (*scratch)[kWarpSize]) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
#pragma unroll
  for (int k = 0; k < K; ++k) v[k] = warp_reduce<Op>(v[k]);
  __syncthreads();  // scratch may still be read by the previous reduction
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) scratch[k][warp] = v[k];
  }
  __syncthreads();
#pragma unroll
  for (int k = 0; k < K; ++k) v[k] = warp_reduce<Op>(lane < warps ? scratch[k][lane] : Op::template identity<T>());
}

/// Block-wide sum of one value per thread; `scratch` is __shared__ T[32].
template <class T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  T a[1] = {v};
  block_reduce<SumOp>(a, reinterpret_cast<T(*)[kWarpSize]>(scratch));
  return a[0];
}

}  // namespace cuda
}  // namespace fusedloss
