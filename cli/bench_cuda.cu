// `fusedloss bench` on the GPU: the harness (bench_harness.hpp) over device memory, one stream
// and CUDA events. The copy ceiling is a device-to-device cudaMemcpyAsync; the baselines' passes
// are grid-stride kernels, block-per-row reductions and Thrust transform_reduce. Also built for the
// emulated device (sim/), where every access of the fused call is counted as well.
//
// Method (the harness's, with this device's clock):
//  * warm-up calls first; then `repeats` calls, each between its own pair of events, median kept;
//  * buffer sets rotate (inputs, gradient) until at least BenchSettings::rotate_bytes (4× L2 by
//    default) are touched, so small sizes are not served from L2;
//  * for the fused call and the copy, a tiny "hold" kernel keeps the stream waiting until every
//    call of a batch is enqueued, so host launch overhead never leaves the GPU idle between a
//    start event and its kernel (the nvbench technique). It gives up after 2 s, so it cannot
//    deadlock. The Thrust baseline synchronises inside transform_reduce, so it is timed without
//    the hold.
#include <cuda_runtime.h>
#include <thrust/execution_policy.h>
#if defined(FUSEDLOSS_EMULATED_DEVICE)
#include <thrust/system/cpp/execution_policy.h>
#endif
#include <thrust/functional.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/transform_reduce.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cli/bench.hpp"
#include "cli/bench_harness.hpp"
#include "cli/common.hpp"
#include "cli/gpu_runtime.hpp"
#include "cli/traffic.hpp"
#include "fusedloss/cuda/device_common.cuh"

namespace fusedloss_cli {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw RuntimeFailure(std::string(what) + ": " + cudaGetErrorString(e));
  }
}

// ---- the stream hold ------------------------------------------------------------------------

__device__ __forceinline__ unsigned long long global_timer_ns() {
#if defined(FUSEDLOSS_EMULATED_DEVICE)
  return fusedloss_sim::global_timer_ns();
#else
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
#endif
}

__global__ void hold_kernel(volatile int* flag, unsigned long long timeout_ns) {
  const unsigned long long start = global_timer_ns();
  for (;;) {
    if (*flag != 0) return;
    if (global_timer_ns() - start > timeout_ns) return;
    __nanosleep(1000);
  }
}

class StreamHold {
 public:
  StreamHold() {
    void* host = nullptr;
    check(cudaHostAlloc(&host, sizeof(int), cudaHostAllocMapped), "cudaHostAlloc");
    host_ = static_cast<volatile int*>(host);
    *host_ = 0;
    void* device = nullptr;
    check(cudaHostGetDevicePointer(&device, host, 0), "cudaHostGetDevicePointer");
    device_ = static_cast<int*>(device);
  }
  ~StreamHold() { cudaFreeHost(const_cast<int*>(host_)); }
  StreamHold(const StreamHold&) = delete;
  StreamHold& operator=(const StreamHold&) = delete;
  void hold(cudaStream_t stream) {
#if defined(FUSEDLOSS_EMULATED_DEVICE)
    // The emulated device runs every operation when it is enqueued: there is no queue to hold.
    (void)stream;
    return;
#endif
    *host_ = 0;
    ::fusedloss::cuda::triple_chevron(1, 1, 0, stream).doit(hold_kernel, device_, 2000000000ull);
    check(cudaGetLastError(), "hold kernel");
  }
  void release() { __atomic_store_n(const_cast<int*>(host_), 1, __ATOMIC_SEQ_CST); }

 private:
  volatile int* host_ = nullptr;
  int* device_ = nullptr;
};

// ---- Thrust's temporary storage ---------------------------------------------------------------

/// Thrust's temporary storage from a cache, so the baseline does not pay cudaMalloc/cudaFree
/// (which synchronise) on every call, the way a framework's caching allocator would not either.
class CachingAllocator {
 public:
  using value_type = char;
  CachingAllocator() = default;
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;
  ~CachingAllocator() {
    for (auto& block : free_) cudaFree(block.second);
    for (auto& block : used_) cudaFree(block.first);
  }
  char* allocate(std::ptrdiff_t bytes) {
    const std::size_t n = static_cast<std::size_t>(bytes);
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->first >= n) {
        char* p = it->second;
        used_.emplace_back(p, it->first);
        free_.erase(it);
        return p;
      }
    }
    void* p = nullptr;
    check(cudaMalloc(&p, n), "cudaMalloc (thrust temporary storage)");
    used_.emplace_back(static_cast<char*>(p), n);
    return static_cast<char*>(p);
  }
  void deallocate(char* p, std::size_t) {
    for (auto it = used_.begin(); it != used_.end(); ++it) {
      if (it->first == p) {
        free_.emplace_back(it->second, p);
        used_.erase(it);
        return;
      }
    }
  }

 private:
  std::vector<std::pair<std::size_t, char*>> free_;  // size, block
  std::vector<std::pair<char*, std::size_t>> used_;  // block, size
};

// ---- the baselines' kernels ------------------------------------------------------------------

template <class F>
__global__ void for_each_kernel(std::int64_t n, F f) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) f(i);
}

template <class F>
__global__ void for_each_2d_kernel(std::int64_t rows, std::int64_t cols, F f) {
  const std::int64_t total = rows * cols;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const std::int64_t r = i / cols;
    f(r, i - r * cols);
  }
}

constexpr int kRowThreads = 256;

__device__ float block_reduce(float v, bool is_max) {
  FUSEDLOSS_SHARED(float[kRowThreads / 32], scratch);
  for (int o = 16; o > 0; o >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, other) : v + other;
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < kRowThreads / 32 ? scratch[lane] : (is_max ? -INFINITY : 0.0f);
  for (int o = 16; o > 0; o >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, other) : v + other;
  }
  return v;
}

/// One block per row: finish(row, max or sum of map(row, c)).
template <class M, class F>
__global__ void row_reduce_kernel(std::int64_t cols, bool is_max, M map, F finish) {
  const std::int64_t r = blockIdx.x;
  float v = is_max ? -INFINITY : 0.0f;
  for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) v = is_max ? fmaxf(v, map(r, c)) : v + map(r, c);
  v = block_reduce(v, is_max);
  if (threadIdx.x == 0) finish(r, v);
}

// ---- the device ---------------------------------------------------------------------------------

/// The CUDA device of the harness (see bench_harness.hpp for the policy's members).
class CudaDevice {
 public:
  using Buffer = gpu::Buffer;
  static constexpr int kMinWarmup = 1;     // the first call pays module loading
  static constexpr int kTimingBatch = 64;  // calls enqueued behind one hold: far below the launch-queue depth
  static constexpr bool kGpu = true;
  static constexpr bool kOpPerLoss = false;  // one Thrust instantiation per dtype

  CudaDevice() : info_(gpu::device_info()) {
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    hold_ = std::make_unique<StreamHold>();
    grid_ = std::max(1, info_.sm_count) * 8;
  }
  ~CudaDevice() {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
    hold_.reset();
    cudaStreamDestroy(stream_);
  }
  CudaDevice(const CudaDevice&) = delete;
  CudaDevice& operator=(const CudaDevice&) = delete;

  BenchDevice describe() const {
    BenchDevice d;
    d.backend = "cuda";
    d.name = info_.name;
    d.driver_version = gpu::version_string(info_.driver_version);
    d.runtime_version = gpu::version_string(info_.runtime_version);
    d.compute_capability = std::to_string(info_.cc_major) + "." + std::to_string(info_.cc_minor);
    d.sm_count = info_.sm_count;
    d.memory_bytes = info_.memory_bytes;
    d.cache_bytes = info_.l2_bytes;
#if defined(FUSEDLOSS_EMULATED_DEVICE)
    d.emulated = true;
#endif
    return d;
  }
  fusedloss::ExecutionConfig config() const {
    fusedloss::ExecutionConfig cfg;
    cfg.backend = fusedloss::Backend::CUDA;
    cfg.stream = stream_;
    return cfg;
  }
  double memory_budget() const { return 0.85 * static_cast<double>(gpu::free_memory()); }
  bool measures_traffic() const { return traffic_measurable(); }

  Buffer alloc(std::size_t bytes) { return Buffer(bytes); }
  void copy(void* dst, const void* src, std::size_t bytes) {
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_), "cudaMemcpyAsync");
  }
  void zero(void* p, std::size_t bytes) { check(cudaMemsetAsync(p, 0, bytes, stream_), "cudaMemsetAsync"); }
  void to_host(void* dst, const void* src, std::size_t bytes) {
    check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy to the host");
  }
  void sync() { check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

  template <class F>
  void for_each(std::int64_t count, std::int64_t, const F& f) {
    if (count == 0) return;
    ::fusedloss::cuda::triple_chevron(grid_for(count), 256, 0, stream_).doit(for_each_kernel<F>, count, f);
    check(cudaGetLastError(), "for_each kernel");
  }
  template <class F>
  void for_each_2d(std::int64_t rows, std::int64_t cols, const F& f) {
    if (rows * cols == 0) return;
    ::fusedloss::cuda::triple_chevron(grid_for(rows * cols), 256, 0, stream_).doit(for_each_2d_kernel<F>, rows, cols, f);
    check(cudaGetLastError(), "for_each_2d kernel");
  }
  template <class F>
  double sum(std::int64_t count, std::int64_t, const F& term) {
    const thrust::counting_iterator<std::int64_t> first(0);
#if defined(FUSEDLOSS_EMULATED_DEVICE)
    // No Thrust CUDA backend without nvcc: Thrust's sequential host backend over the same buffers
    // (emulated device memory is host-addressable), after the kernels enqueued before it.
    sync();
    return thrust::transform_reduce(thrust::cpp::par, first, first + count, term, 0.0f, thrust::plus<float>());
#else
    return thrust::transform_reduce(thrust::cuda::par(allocator_).on(stream_), first, first + count, term, 0.0f,
                                    thrust::plus<float>());
#endif
  }
  template <class M, class F>
  void row_reduce(std::int64_t rows, std::int64_t cols, bool max, const M& map, const F& finish) {
    if (rows == 0) return;
    ::fusedloss::cuda::triple_chevron(static_cast<unsigned>(rows), kRowThreads, 0, stream_)
        .doit(row_reduce_kernel<M, F>, cols, max, map, finish);
    check(cudaGetLastError(), "row reduction kernel");
  }

  void begin_batch(bool hold) {
    if (hold) hold_->hold(stream_);
  }
  void mark(int slot) {
    while (static_cast<int>(events_.size()) <= slot) {
      cudaEvent_t e;
      check(cudaEventCreate(&e), "cudaEventCreate");
      events_.push_back(e);
    }
    check(cudaEventRecord(events_[static_cast<std::size_t>(slot)], stream_), "cudaEventRecord");
  }
  double elapsed_ms(int from, int to) const {
    float t = 0;
    check(cudaEventElapsedTime(&t, events_[static_cast<std::size_t>(from)], events_[static_cast<std::size_t>(to)]),
          "cudaEventElapsedTime");
    return t;
  }
  void end_batch(bool hold, bool check_errors) {
    if (hold) hold_->release();
    if (check_errors) check(cudaStreamSynchronize(stream_), "timed calls");
    else cudaStreamSynchronize(stream_);
  }

 private:
  /// Blocks of 256 threads for a grid-stride pass over `count` items: 8 per SM, fewer for small passes.
  unsigned grid_for(std::int64_t count) const {
    return static_cast<unsigned>(std::min<std::int64_t>(grid_, (count + 255) / 256));
  }

  gpu::DeviceInfo info_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<StreamHold> hold_;
  std::vector<cudaEvent_t> events_;
  CachingAllocator allocator_;
  int grid_ = 8;
};

}  // namespace

std::unique_ptr<BenchRunner> make_cuda_runner() {
  if (!fusedloss::cuda_available()) throw NoGpuError("--device cuda: no usable CUDA device on this machine");
  return std::make_unique<bench_harness::BenchHarness<CudaDevice>>();
}

}  // namespace fusedloss_cli
