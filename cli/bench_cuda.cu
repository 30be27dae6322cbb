// `fusedloss bench` on the GPU: CUDA-event timing of the fused call, of a device-to-device copy
// moving the same bytes, and of an unfused baseline (Thrust transform_reduce + transform for the
// elementwise losses; separate kernels for cross_entropy, nll and kl_div).
//
// Method:
//  * warm-up calls first; then `repeats` calls, each between its own pair of events, median kept;
//  * buffer sets rotate (inputs, gradient) until at least BenchSettings::rotate_bytes (4× L2 by
//    default) are touched, so small sizes are not served from L2;
//  * for the fused call and the copy, a tiny "hold" kernel keeps the stream waiting until every
//    timed call is enqueued, so host launch overhead never leaves the GPU idle between a start
//    event and its kernel (the nvbench technique). It gives up after 2 s, so it cannot deadlock.
//    The Thrust baseline synchronises inside transform_reduce, so it is timed without the hold.
#include <cuda_runtime.h>
#include <thrust/execution_policy.h>
#if defined(FUSEDLOSS_EMULATED_DEVICE)
#include <thrust/system/cpp/execution_policy.h>
#endif
#include <thrust/for_each.h>
#include <thrust/functional.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/transform.h>
#include <thrust/transform_reduce.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "cli/bench.hpp"
#include "cli/bench_data.hpp"
#include "cli/common.hpp"
#include "cli/gpu_runtime.hpp"
#include "fusedloss/cuda/device_common.cuh"
#include "fusedloss/detail/elementwise_ops.hpp"
#include "fusedloss/detail/rowwise_ops.hpp"

namespace fusedloss_cli {
namespace {

using fusedloss::DType;
using fusedloss::Loss;
using fusedloss::Reduction;
using fusedloss::cuda::from_f32;
using fusedloss::cuda::to_f32;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw RuntimeFailure(std::string(what) + ": " + cudaGetErrorString(e));
  }
}

// ---- data -----------------------------------------------------------------------------------

template <class S>
__global__ void fill_kernel(S* p, std::int64_t n, bench_data::Fill f, std::uint64_t seed) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    p[i] = from_f32<S>(bench_data::fill_value(f, seed, static_cast<std::uint64_t>(i)));
}

template <class L>
__global__ void fill_labels_kernel(L* p, std::int64_t n, bench_data::Fill f, std::uint64_t seed) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    p[i] = static_cast<L>(bench_data::fill_label(f, seed, static_cast<std::uint64_t>(i)));
}

template <class F>
void with_storage(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float16: f(static_cast<__half*>(nullptr)); return;
    case DType::BFloat16: f(static_cast<__nv_bfloat16*>(nullptr)); return;
    default: f(static_cast<float*>(nullptr)); return;
  }
}

void fill_values(void* p, DType dtype, std::int64_t n, const bench_data::Fill& f, std::uint64_t seed,
                 cudaStream_t stream) {
  if (n == 0) return;
  with_storage(dtype, [&](auto* tag) {
    using S = std::remove_pointer_t<decltype(tag)>;
    ::fusedloss::cuda::triple_chevron(1024, 256, 0, stream).doit(fill_kernel<S>, static_cast<S*>(p), n, f, seed);
  });
  check(cudaGetLastError(), "fill kernel");
}

void fill_labels(void* p, DType dtype, std::int64_t n, const bench_data::Fill& f, std::uint64_t seed,
                 cudaStream_t stream) {
  if (n == 0) return;
  if (dtype == DType::Int32)
    ::fusedloss::cuda::triple_chevron(1024, 256, 0, stream).doit(fill_labels_kernel<std::int32_t>, static_cast<std::int32_t*>(p), n, f, seed);
  else
    ::fusedloss::cuda::triple_chevron(1024, 256, 0, stream).doit(fill_labels_kernel<std::int64_t>, static_cast<std::int64_t*>(p), n, f, seed);
  check(cudaGetLastError(), "fill kernel");
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

// ---- unfused baselines ------------------------------------------------------------------------

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

/// Any elementwise loss, chosen at run time: one Thrust instantiation per dtype instead of one per
/// loss and dtype (the branch is uniform across the grid, so it costs nothing measurable).
__device__ __forceinline__ void eval_any(Loss loss, float x, float y, const fusedloss::detail::ElementwiseOpParams<float>& p,
                                         float& l, float& d) {
  using fusedloss::detail::ElementwiseOp;
  switch (loss) {
    case Loss::MSE:
    case Loss::RMSE: ElementwiseOp<Loss::MSE>::eval(x, y, p, l, d); return;
    case Loss::MAE: ElementwiseOp<Loss::MAE>::eval(x, y, p, l, d); return;
    case Loss::MSLE: ElementwiseOp<Loss::MSLE>::eval(x, y, p, l, d); return;
    case Loss::Huber: ElementwiseOp<Loss::Huber>::eval(x, y, p, l, d); return;
    case Loss::SmoothL1: ElementwiseOp<Loss::SmoothL1>::eval(x, y, p, l, d); return;
    case Loss::PseudoHuber: ElementwiseOp<Loss::PseudoHuber>::eval(x, y, p, l, d); return;
    case Loss::LogCosh: ElementwiseOp<Loss::LogCosh>::eval(x, y, p, l, d); return;
    case Loss::Hinge: ElementwiseOp<Loss::Hinge>::eval(x, y, p, l, d); return;
    case Loss::SquaredHinge: ElementwiseOp<Loss::SquaredHinge>::eval(x, y, p, l, d); return;
    case Loss::BCE: ElementwiseOp<Loss::BCE>::eval(x, y, p, l, d); return;
    case Loss::BCEWithLogits: ElementwiseOp<Loss::BCEWithLogits>::eval(x, y, p, l, d); return;
    default: l = 0; d = 0; return;
  }
}

/// What the elementwise baseline's loss and gradient passes both read.
template <class S>
struct ElementwiseInputs {
  Loss loss;
  const S* x;
  const S* y;
  const S* w;
  fusedloss::detail::ElementwiseOpParams<float> params;
  /// The unweighted loss l and derivative d of element i.
  __device__ void eval(std::int64_t i, float& l, float& d) const {
    eval_any(loss, to_f32(x[i]), to_f32(y[i]), params, l, d);
  }
};

template <class S>
struct LossAt {
  ElementwiseInputs<S> in;
  float* loss_none;
  __device__ float operator()(std::int64_t i) const {
    float l, d;
    in.eval(i, l, d);
    if (in.w != nullptr) l *= to_f32(in.w[i]);
    if (loss_none != nullptr) loss_none[i] = l;
    return l;
  }
};

template <class S>
struct GradAt {
  ElementwiseInputs<S> in;
  float scale;
  __device__ S operator()(std::int64_t i) const {
    float l, d;
    in.eval(i, l, d);
    d *= scale;
    if (in.w != nullptr) d *= to_f32(in.w[i]);
    return from_f32<S>(d);
  }
};

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

template <class S>
__global__ void row_max_kernel(const S* z, std::int64_t C, float* row_max) {
  const S* row = z + static_cast<std::int64_t>(blockIdx.x) * C;
  float m = -INFINITY;
  for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) m = fmaxf(m, to_f32(row[c]));
  m = block_reduce(m, true);
  if (threadIdx.x == 0) row_max[blockIdx.x] = m;
}

template <class S>
__global__ void row_lse_kernel(const S* z, std::int64_t C, const float* row_max, float* lse) {
  const S* row = z + static_cast<std::int64_t>(blockIdx.x) * C;
  const float m = row_max[blockIdx.x];
  float s = 0;
  for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) s += __expf(to_f32(row[c]) - m);
  s = block_reduce(s, false);
  if (threadIdx.x == 0) lse[blockIdx.x] = m + logf(s);
}

template <class S, class L>
__global__ void ce_grad_kernel(const S* z, const L* labels, const float* lse, std::int64_t N, std::int64_t C,
                               float scale, S* g) {
  const std::int64_t total = N * C;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const std::int64_t n = i / C, c = i - n * C;
    const float p = __expf(to_f32(z[i]) - lse[n]);
    g[i] = from_f32<S>((p - (c == static_cast<std::int64_t>(labels[n]) ? 1.0f : 0.0f)) * scale);
  }
}

template <class S, class L>
struct CeRowLoss {
  const S* z;
  const L* labels;
  const float* lse;
  std::int64_t C;
  float* loss_none;
  __device__ float operator()(std::int64_t n) const {
    const float l = lse[n] - to_f32(z[n * C + static_cast<std::int64_t>(labels[n])]);
    if (loss_none != nullptr) loss_none[n] = l;
    return l;
  }
};

template <class S, class L>
struct NllRowLoss {
  const S* x;
  const L* labels;
  std::int64_t C;
  float* loss_none;
  __device__ float operator()(std::int64_t n) const {
    const float l = -to_f32(x[n * C + static_cast<std::int64_t>(labels[n])]);
    if (loss_none != nullptr) loss_none[n] = l;
    return l;
  }
};

template <class S, class L>
struct NllScatter {
  S* g;
  const L* labels;
  std::int64_t C;
  float value;
  __device__ void operator()(std::int64_t n) const { g[n * C + static_cast<std::int64_t>(labels[n])] = from_f32<S>(value); }
};

template <class S>
struct KlLoss {
  const S* q;
  const S* p;
  float* loss_none;
  __device__ float operator()(std::int64_t i) const {
    float dq;
    const float l = fusedloss::detail::kl_div_element(to_f32(q[i]), to_f32(p[i]), false, dq);
    if (loss_none != nullptr) loss_none[i] = l;
    return l;
  }
};

template <class S>
struct KlGrad {
  const S* p;
  float scale;
  __device__ S operator()(std::int64_t i) const { return from_f32<S>(-to_f32(p[i]) * scale); }
};

double loss_output_floats(const BenchCase& c) {
  if (c.reduction != Reduction::None) return 1;
  if (!c.rowwise || c.loss == Loss::KLDiv) return static_cast<double>(c.n);
  return static_cast<double>(c.rows);
}

struct DeviceSet {
  gpu::Buffer x, y, w, labels, grad, loss;
};

// ---- the runner -------------------------------------------------------------------------------

class CudaRunner : public BenchRunner {
 public:
  CudaRunner() : info_(gpu::device_info()) {
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    hold_ = std::make_unique<StreamHold>();
  }
  ~CudaRunner() override {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
    hold_.reset();
    cudaStreamDestroy(stream_);
  }

  BenchDevice device() const override {
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

  bool has_baseline(const BenchCase& c) const override { return has_unfused_baseline(c); }

  CaseResult run(const BenchCase& c, const BenchSettings& s) override {
    CaseResult r;
    const double traffic = traffic_bytes(c);
    const double set_bytes = std::max(1.0, buffer_set_bytes(c));
    const double budget = 0.85 * static_cast<double>(gpu::free_memory());

    // 1. The copy ceiling, on its own buffers (freed before the problem's are allocated).
    {
      const std::size_t copy_bytes = static_cast<std::size_t>(traffic / 2);
      int sets = rotation_sets(s.rotate_bytes, 2.0 * copy_bytes);
      while (sets > 1 && 2.0 * copy_bytes * sets > budget) --sets;
      if (2.0 * copy_bytes * sets > budget)
        throw RuntimeFailure("not enough device memory for the copy (" + std::to_string(2 * copy_bytes) + " bytes)");
      std::vector<gpu::Buffer> src, dst;
      for (int k = 0; k < sets; ++k) {
        src.emplace_back(copy_bytes);
        dst.emplace_back(copy_bytes);
        check(cudaMemsetAsync(src.back().get(), k + 1, copy_bytes, stream_), "cudaMemsetAsync");
      }
      r.copy = time_it(
          [&](int i) {
            const std::size_t k = static_cast<std::size_t>(i % sets);
            check(cudaMemcpyAsync(dst[k].get(), src[k].get(), copy_bytes, cudaMemcpyDeviceToDevice, stream_),
                  "cudaMemcpyAsync");
          },
          s, true);
    }

    // 2. The problem's buffer sets.
    int sets = rotation_sets(s.rotate_bytes, set_bytes);
    while (sets > 1 && set_bytes * sets > budget) --sets;
    if (set_bytes > budget)
      throw RuntimeFailure("not enough device memory: one buffer set needs " +
                           std::to_string(static_cast<long long>(set_bytes)) + " bytes, " +
                           std::to_string(static_cast<long long>(budget / 0.85)) + " free");
    r.buffer_sets = sets;
    std::vector<DeviceSet> bufs(static_cast<std::size_t>(sets));
    for (int k = 0; k < sets; ++k) allocate_and_fill(c, bufs[static_cast<std::size_t>(k)], 1000 + k);
    gpu::Buffer errors(sizeof(std::int64_t));
    check(cudaStreamSynchronize(stream_), "filling the buffers");

    // 3. Fused.
    fusedloss::ExecutionConfig cfg;
    cfg.backend = fusedloss::Backend::CUDA;
    cfg.stream = stream_;
    std::size_t ws_bytes = 0;
    {
      const fusedloss::Status st = with_problem(c, bufs[0], errors.as<std::int64_t>(), [&](const auto& p, const auto& out) {
        return fusedloss::workspace_size(p, out, cfg, &ws_bytes);
      });
      if (st != fusedloss::Status::Success)
        throw RuntimeFailure(std::string("workspace_size failed: ") + fusedloss::status_string(st));
    }
    gpu::Buffer workspace(ws_bytes);
    cfg.workspace = workspace.get();
    cfg.workspace_bytes = ws_bytes;
    r.fused = time_it(
        [&](int i) {
          DeviceSet& set = bufs[static_cast<std::size_t>(i % sets)];
          const fusedloss::Status st = with_problem(c, set, errors.as<std::int64_t>(), [&](const auto& p, const auto& out) {
            return fusedloss::compute(p, out, cfg);
          });
          if (st != fusedloss::Status::Success)
            throw RuntimeFailure(std::string("fused call failed: ") + fusedloss::status_string(st));
        },
        s, true);
    if (c.reduction != Reduction::None) {
      float v = 0;
      check(cudaMemcpy(&v, bufs[0].loss.get(), sizeof v, cudaMemcpyDeviceToHost), "reading the loss");
      r.fused_loss = v;
    }

    // 4. Unfused baseline.
    if (s.baseline && has_baseline(c)) {
      if (c.loss == Loss::CrossEntropy) {  // per-row scratch of the multi-kernel baseline
        row_max_ = gpu::Buffer(static_cast<std::size_t>(c.rows) * sizeof(float));
        lse_ = gpu::Buffer(static_cast<std::size_t>(c.rows) * sizeof(float));
      }
      r.unfused_name = c.rowwise ? (c.loss == Loss::CrossEntropy ? "separate kernels: row max, logsumexp, nll "
                                                                   "gather (thrust), softmax-minus-one-hot gradient"
                                                                 : "thrust transform_reduce + gradient pass")
                                 : "thrust transform_reduce (loss) + thrust transform (gradient)";
      r.unfused = time_it([&](int i) { unfused(c, bufs[static_cast<std::size_t>(i % sets)]); }, s, false);
      r.unfused_loss = unfused(c, bufs[0]);
      check(cudaStreamSynchronize(stream_), "unfused baseline");
      r.has_loss_values = c.reduction != Reduction::None && !c.inplace;
    }
    return r;
  }

 private:
  template <class F>
  Timing time_it(F&& once, const BenchSettings& s, bool hold) {
    const int warmup = std::max(1, s.warmup);
    const auto w0 = std::chrono::steady_clock::now();
    for (int i = 0; i < warmup; ++i) once(i);
    check(cudaStreamSynchronize(stream_), "warm-up");
    const double per_call =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count() / static_cast<double>(warmup);
    int reps = std::max(1, s.repeats);
    if (per_call * reps > s.max_case_seconds) reps = std::max(3, static_cast<int>(s.max_case_seconds / per_call));
    reps = std::min(reps, std::max(1, s.repeats));
    while (static_cast<int>(events_.size()) < 2 * reps) {
      cudaEvent_t e;
      check(cudaEventCreate(&e), "cudaEventCreate");
      events_.push_back(e);
    }
    std::vector<double> ms;
    constexpr int kBatch = 64;  // calls enqueued behind one hold: far below the launch-queue depth
    for (int b0 = 0; b0 < reps; b0 += kBatch) {
      const int b1 = std::min(reps, b0 + kBatch);
      if (hold) hold_->hold(stream_);
      try {
        for (int r = b0; r < b1; ++r) {
          check(cudaEventRecord(events_[2 * r], stream_), "cudaEventRecord");
          once(warmup + r);
          check(cudaEventRecord(events_[2 * r + 1], stream_), "cudaEventRecord");
        }
      } catch (...) {
        if (hold) hold_->release();
        cudaStreamSynchronize(stream_);
        throw;
      }
      if (hold) hold_->release();
      check(cudaStreamSynchronize(stream_), "timed calls");
      for (int r = b0; r < b1; ++r) {
        float t = 0;
        check(cudaEventElapsedTime(&t, events_[2 * r], events_[2 * r + 1]), "cudaEventElapsedTime");
        ms.push_back(t);
      }
    }
    return summarize(std::move(ms));
  }

  void allocate_and_fill(const BenchCase& c, DeviceSet& set, std::uint64_t seed) {
    const std::size_t e = fusedloss::dtype_size(c.dtype);
    const std::size_t n = static_cast<std::size_t>(c.n);
    set.x = gpu::Buffer(n * e);
    fill_values(set.x.get(), c.dtype, c.n, bench_data::input_fill(c.loss), seed, stream_);
    const bool labels = c.rowwise && (c.loss == Loss::NLL || (c.loss == Loss::CrossEntropy && !c.soft));
    if (labels) {
      set.labels = gpu::Buffer(static_cast<std::size_t>(c.rows) * fusedloss::dtype_size(c.label_dtype));
      fill_labels(set.labels.get(), c.label_dtype, c.rows, bench_data::label_fill(c.classes), seed + 7, stream_);
    } else {
      set.y = gpu::Buffer(n * e);
      fill_values(set.y.get(), c.dtype, c.n, bench_data::target_fill(c.loss, std::max<std::int64_t>(1, c.classes)),
                  seed + 7, stream_);
    }
    if (c.weighted && !c.rowwise) {
      set.w = gpu::Buffer(n * e);
      fill_values(set.w.get(), c.dtype, c.n, bench_data::weight_fill(), seed + 13, stream_);
    }
    if (!c.inplace) set.grad = gpu::Buffer(n * e);
    set.loss = gpu::Buffer(static_cast<std::size_t>(loss_output_floats(c)) * sizeof(float));
  }

  /// Calls f(problem, outputs) with the case's problem over `set`.
  template <class F>
  static fusedloss::Status with_problem(const BenchCase& c, DeviceSet& set, std::int64_t* errors, F&& f) {
    BenchBuffers b;
    b.x = set.x.get();
    b.y = set.y.get();
    b.w = set.w.get();
    b.labels = set.labels.get();
    b.grad = set.grad.get();
    b.loss = set.loss.as<float>();
    b.error_count = errors;
    return with_bench_problem(c, b, std::forward<F>(f));
  }

  double unfused(const BenchCase& c, DeviceSet& set) {
    double value = 0;
#if defined(FUSEDLOSS_EMULATED_DEVICE)
    // No Thrust CUDA backend without nvcc: the emulated baseline runs Thrust's sequential host
    // backend over the same buffers (emulated device memory is host-addressable).
    const auto policy = thrust::cpp::par;
#else
    const auto policy = thrust::cuda::par(allocator_).on(stream_);
#endif
    const thrust::counting_iterator<std::int64_t> first(0);
    with_storage(c.dtype, [&](auto* tag) {
      using S = std::remove_pointer_t<decltype(tag)>;
      const S* x = set.x.as<S>();
      const S* y = set.y.as<S>();
      const S* w = c.weighted ? set.w.as<S>() : nullptr;
      S* g = c.inplace ? set.x.as<S>() : set.grad.as<S>();
      float* loss_none = c.reduction == Reduction::None ? set.loss.as<float>() : nullptr;
      const double divisor = reduce_divisor(c);
      if (!c.rowwise) {
        {
          const ElementwiseInputs<S> in{c.loss, x, y, w, fusedloss::detail::ElementwiseOpParams<float>{}};
          // The gradient's scale is known up front (except for rmse), so the gradient pass goes
          // first and the host only waits for the reduction at the end; with an in-place
          // gradient the loss must be read before the input is overwritten.
          const bool grad_first = c.loss != Loss::RMSE && !c.inplace;
          const float scale = static_cast<float>(1.0 / divisor);
          if (grad_first) thrust::transform(policy, first, first + c.n, g, GradAt<S>{in, scale});
          const float total = thrust::transform_reduce(
              policy, first, first + c.n, LossAt<S>{in, loss_none}, 0.0f, thrust::plus<float>());
          value = total / divisor;
          if (grad_first) return;
          float grad_scale = scale;
          if (c.loss == Loss::RMSE) {
            value = std::sqrt(static_cast<double>(total) / static_cast<double>(c.n));
            grad_scale = value > 0 ? static_cast<float>(1.0 / (2.0 * static_cast<double>(c.n) * value)) : 0.0f;
          }
          thrust::transform(policy, first, first + c.n, g, GradAt<S>{in, grad_scale});
        }
        return;
      }
      const std::int64_t N = c.rows, C = c.classes;
      if (c.loss == Loss::KLDiv) {
        const float total =
            thrust::transform_reduce(policy, first, first + c.n, KlLoss<S>{x, y, loss_none}, 0.0f, thrust::plus<float>());
        value = total / divisor;
        thrust::transform(policy, first, first + c.n, g, KlGrad<S>{y, static_cast<float>(1.0 / divisor)});
        return;
      }
      auto with_labels = [&](auto* ltag) {
        using L = std::remove_pointer_t<decltype(ltag)>;
        const L* labels = set.labels.as<L>();
        if (c.loss == Loss::NLL) {
          const float total = thrust::transform_reduce(policy, first, first + N, NllRowLoss<S, L>{x, labels, C, loss_none},
                                                       0.0f, thrust::plus<float>());
          value = total / divisor;
          check(cudaMemsetAsync(g, 0, static_cast<std::size_t>(c.n) * sizeof(S), stream_), "cudaMemsetAsync");
          thrust::for_each(policy, first, first + N, NllScatter<S, L>{g, labels, C, static_cast<float>(-1.0 / divisor)});
          return;
        }
        // cross_entropy, integer labels: the PyTorch-eager shape of the computation.
        gpu::Buffer& row_max = row_max_;
        gpu::Buffer& lse = lse_;
        if (N > 0) {
          ::fusedloss::cuda::triple_chevron(static_cast<unsigned>(N), kRowThreads, 0, stream_).doit(row_max_kernel<S>, x, C, row_max.as<float>());
          ::fusedloss::cuda::triple_chevron(static_cast<unsigned>(N), kRowThreads, 0, stream_).doit(row_lse_kernel<S>, x, C, row_max.as<float>(), lse.as<float>());
          check(cudaGetLastError(), "baseline kernels");
        }
        const float total = thrust::transform_reduce(policy, first, first + N,
                                                     CeRowLoss<S, L>{x, labels, lse.as<float>(), C, loss_none}, 0.0f,
                                                     thrust::plus<float>());
        value = total / divisor;
        ::fusedloss::cuda::triple_chevron(std::max(1, info_.sm_count) * 8, 256, 0, stream_)
            .doit(ce_grad_kernel<S, L>, x, labels, lse.as<float>(), N, C, static_cast<float>(1.0 / divisor), g);
        check(cudaGetLastError(), "baseline kernels");
      };
      if (c.label_dtype == DType::Int32) with_labels(static_cast<std::int32_t*>(nullptr));
      else with_labels(static_cast<std::int64_t*>(nullptr));
    });
    return value;
  }

  gpu::DeviceInfo info_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<StreamHold> hold_;
  std::vector<cudaEvent_t> events_;
  gpu::Buffer row_max_, lse_;
  CachingAllocator allocator_;
};

}  // namespace

std::unique_ptr<BenchRunner> make_cuda_runner() {
  if (!fusedloss::cuda_available()) throw NoGpuError("--device cuda: no usable CUDA device on this machine");
  return std::make_unique<CudaRunner>();
}

}  // namespace fusedloss_cli
