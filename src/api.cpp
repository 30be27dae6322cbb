// The public entry points: validate → choose the backend → call it. The one place where a
// runtime request becomes a backend call; the backends turn it into template instantiations.
#include <array>
#include <cstdlib>
#include <cstdint>
#include <thread>

#include "fusedloss/api.hpp"
#include "src/backend.hpp"
#include "src/validate.hpp"

#if FUSEDLOSS_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace fusedloss {
namespace {

/// Unknown: the CUDA runtime is in an error state (e.g. sticky after a kernel fault), so where the
/// pointer lives cannot be told; OtherDevice: device memory of a device that is not current.
enum class Space { None, Host, Device, OtherDevice, Unknown };

#if FUSEDLOSS_WITH_CUDA
bool cuda_device_present() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the (non-sticky) error so it does not leak into the caller's checks
    return false;
  }
  return count > 0;
}
#endif

/// Which memory a pointer lives in, as the backends see it: device and managed memory go to
/// the CUDA path; pageable and pinned host memory to the CPU path.
Space pointer_space(const void* ptr) noexcept {
  if (ptr == nullptr) return Space::None;
#if FUSEDLOSS_WITH_CUDA
  cudaPointerAttributes attributes{};
  const cudaError_t e = cudaPointerGetAttributes(&attributes, ptr);
  if (e != cudaSuccess) {
    cudaGetLastError();
    switch (e) {
      case cudaErrorNoDevice:
      case cudaErrorInsufficientDriver:
      case cudaErrorInitializationError:
      case cudaErrorStubLibrary:
      case cudaErrorSystemDriverMismatch:
      case cudaErrorCompatNotSupportedOnDevice:
        return Space::Host;  // no usable driver or device: nothing can be device memory
      case cudaErrorInvalidValue:
        return Space::Host;  // what older drivers answer for pageable host memory
      default:
        // Anything else (a sticky error after a kernel fault, say) leaves the question open:
        // guessing "host" would send device pointers to the CPU path and crash the process.
        return Space::Unknown;
    }
  }
  if (attributes.type == cudaMemoryTypeManaged) return Space::Device;  // reachable from every device
  if (attributes.type != cudaMemoryTypeDevice) return Space::Host;
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess) {
    cudaGetLastError();
    return Space::Unknown;
  }
  // The kernels run on the current device; another device's memory would fault there.
  return attributes.device == current ? Space::Device : Space::OtherDevice;
#else
  return Space::Host;
#endif
}

/// Every pointer a call reads or writes; they must all live in one memory space.
std::array<const void*, 8> call_pointers(const ElementwiseProblem& p, const LossOutputs& o) {
  return {p.input, p.target, p.weight, p.params.pos_weight_per_column, o.loss, o.grad, o.lse, o.error_count};
}
std::array<const void*, 8> call_pointers(const RowwiseProblem& p, const LossOutputs& o) {
  return {p.input, p.target, p.labels, p.class_weight, o.loss, o.grad, o.lse, o.error_count};
}
std::array<const void*, 11> call_pointers(const LinearCrossEntropyProblem& p, const LinearCrossEntropyOutputs& o) {
  return {p.hidden, p.weight,        p.bias,          p.labels,      p.class_weight, o.loss,
          o.lse,    o.grad_hidden,   o.grad_weight,   o.grad_bias,   o.error_count};
}

/// Picks the backend for the call's pointers. Auto follows the pointers (all host → CPU, all
/// device → CUDA, a mix → InvalidArgument); an explicit choice is checked against them.
template <std::size_t K>
Status resolve_backend(Backend requested, const std::array<const void*, K>& pointers, Backend* chosen) noexcept {
  const int r = static_cast<int>(requested);
  if (r < static_cast<int>(Backend::Auto) || r > static_cast<int>(Backend::CUDA)) return Status::InvalidArgument;
  bool any_host = false, any_device = false;
  for (const void* p : pointers) {
    const Space s = pointer_space(p);
    if (s == Space::Unknown) return Status::CudaError;
    if (s == Space::OtherDevice) return Status::InvalidArgument;
    any_host |= s == Space::Host;
    any_device |= s == Space::Device;
  }
  switch (requested) {
    case Backend::Auto:
      if (any_host && any_device) return Status::InvalidArgument;
      *chosen = any_device ? Backend::CUDA : Backend::CPU;
      return (*chosen == Backend::CUDA && !cuda_available()) ? Status::NotSupported : Status::Success;
    case Backend::CPU:
      if (any_device) return Status::NotSupported;  // device memory is out of the CPU path's reach
      *chosen = Backend::CPU;
      return Status::Success;
    case Backend::CUDA:
      if (!cuda_available()) return Status::NotSupported;
      if (any_host) return Status::NotSupported;  // pageable host memory is out of the kernels' reach
      *chosen = Backend::CUDA;
      return Status::Success;
  }
  return Status::InvalidArgument;
}

int cpu_thread_count(const ExecutionConfig& config) noexcept {
  if (config.cpu_threads > 0) return config.cpu_threads;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

/// Validation + backend choice, common to every entry point.
template <class Problem, class Outputs>
Status prepare(const Problem& problem, const Outputs& outputs, const ExecutionConfig& config,
               Problem* normalised, Backend* backend) noexcept {
  const Status valid = detail::validate(problem, outputs, normalised);
  if (valid != Status::Success) return valid;
  return resolve_backend(config.backend, call_pointers(problem, outputs), backend);
}

template <class Problem>
Status workspace_size_impl(const Problem& problem, const LossOutputs& outputs, const ExecutionConfig& config,
                           std::size_t* bytes) noexcept {
  if (bytes == nullptr) return Status::InvalidArgument;
  Problem p;
  Backend backend = Backend::CPU;
  const Status s = prepare(problem, outputs, config, &p, &backend);
  if (s != Status::Success) return s;
  *bytes = 0;
#if FUSEDLOSS_WITH_CUDA
  if (backend == Backend::CUDA) *bytes = detail::cuda_workspace_size(p);
#endif
  return Status::Success;
}

#if FUSEDLOSS_WITH_CUDA
constexpr std::uintptr_t kWorkspaceAlignment = 256;  // what the kernels assume of a caller's workspace

bool is_empty(const ElementwiseProblem& p) { return p.n == 0; }
bool is_empty(const RowwiseProblem& p) { return p.rows == 0; }

/// An empty problem launches no kernel: its documented result (sum → 0, mean/batchmean → NaN,
/// none → nothing; error count 0) is written with stream-ordered memsets, which graphs capture
/// as memset nodes. 0xFF bytes are a quiet NaN (with the sign bit set).
Status enqueue_empty_result(Reduction reduction, const LossOutputs& outputs, cudaStream_t stream) noexcept {
  if (outputs.error_count != nullptr && cudaMemsetAsync(outputs.error_count, 0, sizeof(std::int64_t), stream) != cudaSuccess)
    return Status::CudaError;
  if (reduction != Reduction::None &&
      cudaMemsetAsync(outputs.loss, reduction == Reduction::Sum ? 0x00 : 0xFF, sizeof(float), stream) != cudaSuccess)
    return Status::CudaError;
  return Status::Success;
}

/// Runs the CUDA path with the caller's workspace, or a stream-ordered one when allowed.
template <class Problem>
Status run_cuda(const Problem& p, const LossOutputs& outputs, const ExecutionConfig& config,
                bool allow_alloc) noexcept {
  cudaStream_t stream = config.stream;
  // A misaligned workspace is a caller bug even when this problem happens to need none.
  if (reinterpret_cast<std::uintptr_t>(config.workspace) % kWorkspaceAlignment != 0) return Status::InvalidArgument;
  if (is_empty(p)) {
    const Status s = enqueue_empty_result(p.reduction, outputs, stream);
    if (s != Status::Success) cudaGetLastError();
    return s;
  }
  const std::size_t needed = detail::cuda_workspace_size(p);
  if (needed <= config.workspace_bytes && (needed == 0 || config.workspace != nullptr)) {
    return detail::cuda_compute(p, outputs, config.workspace, config.workspace_bytes, stream);
  }
  if (!allow_alloc) return Status::WorkspaceTooSmall;
  void* workspace = nullptr;
  if (cudaMallocAsync(&workspace, needed, stream) != cudaSuccess) {
    cudaGetLastError();
    return Status::OutOfMemory;
  }
  const Status s = detail::cuda_compute(p, outputs, workspace, needed, stream);
  const bool freed = cudaFreeAsync(workspace, stream) == cudaSuccess;
  if (s != Status::Success) return s;
  return freed ? Status::Success : Status::CudaError;
}

/// compute() + wait + read the invalid-data count back (allocating a counter when the caller
/// gave none).
/// `run(outputs)` (enqueues a call with those outputs), then wait for the stream and read the
/// invalid-data count back (allocating a counter when the caller gave none).
template <class Outputs, class Run>
Status sync_with_error_count(const Outputs& outputs, cudaStream_t stream, const Run& run) noexcept {
  Outputs out = outputs;
  std::int64_t* own_counter = nullptr;
  if (out.error_count == nullptr) {
    if (cudaMallocAsync(reinterpret_cast<void**>(&own_counter), sizeof(std::int64_t), stream) != cudaSuccess) {
      cudaGetLastError();
      return Status::OutOfMemory;
    }
    out.error_count = own_counter;
  }
  Status s = run(out);
  std::int64_t errors = 0;
  if (s == Status::Success &&
      cudaMemcpyAsync(&errors, out.error_count, sizeof errors, cudaMemcpyDeviceToHost, stream) != cudaSuccess)
    s = Status::CudaError;
  if (own_counter != nullptr) cudaFreeAsync(own_counter, stream);
  if (cudaStreamSynchronize(stream) != cudaSuccess) s = Status::CudaError;
  if (s != Status::Success) {
    cudaGetLastError();
    return s;
  }
  return errors > 0 ? Status::InvalidValue : Status::Success;
}

/// compute() + wait + read the invalid-data count back.
template <class Problem>
Status run_cuda_sync(const Problem& p, const LossOutputs& outputs, const ExecutionConfig& config) noexcept {
  return sync_with_error_count(outputs, config.stream,
                               [&](const LossOutputs& out) { return run_cuda(p, out, config, /*allow_alloc=*/true); });
}
#endif

template <class Problem>
Status compute_impl(const Problem& problem, const LossOutputs& outputs, const ExecutionConfig& config,
                    bool synchronous) noexcept {
  Problem p;
  Backend backend = Backend::CPU;
  const Status s = prepare(problem, outputs, config, &p, &backend);
  if (s != Status::Success) return s;
  if (backend == Backend::CPU) return detail::cpu_compute(p, outputs, cpu_thread_count(config));
#if FUSEDLOSS_WITH_CUDA
  return synchronous ? run_cuda_sync(p, outputs, config) : run_cuda(p, outputs, config, config.allow_stream_ordered_alloc);
#else
  (void)synchronous;
  return Status::NotSupported;
#endif
}


// ---- linear_cross_entropy -----------------------------------------------------------------------
using LinearProblem = LinearCrossEntropyProblem;
using LinearOutputs = LinearCrossEntropyOutputs;

/// Validation, backend choice and the chunk layout (which depends on the backend).
Status prepare_linear(const LinearProblem& problem, const LinearOutputs& outputs, const ExecutionConfig& config,
                      LinearProblem* p, Backend* backend, detail::LinearCeLayout* layout) noexcept {
  const Status s = prepare(problem, outputs, config, p, backend);
  if (s != Status::Success) return s;
  return detail::linear_ce_layout(*p, outputs, *backend, layout) ? Status::Success : Status::InvalidArgument;
}

Status linear_cpu(const LinearProblem& p, const LinearOutputs& outputs, const ExecutionConfig& config,
                  const detail::LinearCeLayout& layout) noexcept {
  if (config.workspace != nullptr) {
    if (reinterpret_cast<std::uintptr_t>(config.workspace) % 256 != 0) return Status::InvalidArgument;
    if (config.workspace_bytes < layout.bytes) return Status::WorkspaceTooSmall;
    return detail::cpu_compute(p, outputs, layout, config.workspace, cpu_thread_count(config));
  }
  // No caller workspace: the same bytes from the heap (256-byte aligned like a caller's).
  void* ws = nullptr;
  if (layout.bytes > 0 && posix_memalign(&ws, 256, layout.bytes) != 0) return Status::OutOfMemory;
  const Status s = detail::cpu_compute(p, outputs, layout, ws, cpu_thread_count(config));
  std::free(ws);
  return s;
}

#if FUSEDLOSS_WITH_CUDA
Status linear_cuda(const LinearProblem& p, const LinearOutputs& outputs, const ExecutionConfig& config,
                   const detail::LinearCeLayout& layout, bool allow_alloc) noexcept {
  cudaStream_t stream = config.stream;
  if (reinterpret_cast<std::uintptr_t>(config.workspace) % kWorkspaceAlignment != 0) return Status::InvalidArgument;
  if (config.workspace != nullptr && layout.bytes <= config.workspace_bytes)
    return detail::cuda_compute(p, outputs, layout, config.workspace, stream);
  if (!allow_alloc) return Status::WorkspaceTooSmall;
  void* workspace = nullptr;
  if (cudaMallocAsync(&workspace, layout.bytes, stream) != cudaSuccess) {
    cudaGetLastError();
    return Status::OutOfMemory;
  }
  const Status s = detail::cuda_compute(p, outputs, layout, workspace, stream);
  const bool freed = cudaFreeAsync(workspace, stream) == cudaSuccess;
  if (s != Status::Success) return s;
  return freed ? Status::Success : Status::CudaError;
}

Status linear_cuda_sync(const LinearProblem& p, const LinearOutputs& outputs, const ExecutionConfig& config,
                        const detail::LinearCeLayout& layout) noexcept {
  return sync_with_error_count(outputs, config.stream, [&](const LinearOutputs& out) {
    return linear_cuda(p, out, config, layout, /*allow_alloc=*/true);
  });
}
#endif

Status linear_compute(const LinearProblem& problem, const LinearOutputs& outputs, const ExecutionConfig& config,
                      bool synchronous) noexcept {
  LinearProblem p;
  Backend backend = Backend::CPU;
  detail::LinearCeLayout layout;
  const Status s = prepare_linear(problem, outputs, config, &p, &backend, &layout);
  if (s != Status::Success) return s;
  if (backend == Backend::CPU) return linear_cpu(p, outputs, config, layout);
#if FUSEDLOSS_WITH_CUDA
  return synchronous ? linear_cuda_sync(p, outputs, config, layout)
                     : linear_cuda(p, outputs, config, layout, config.allow_stream_ordered_alloc);
#else
  (void)synchronous;
  return Status::NotSupported;
#endif
}

}  // namespace

Status linear_cross_entropy_plan(const LinearCrossEntropyProblem& problem, const LinearCrossEntropyOutputs& outputs,
                                 const ExecutionConfig& config, LinearCrossEntropyPlan* plan) noexcept {
  if (plan == nullptr) return Status::InvalidArgument;
  LinearProblem p;
  Backend backend = Backend::CPU;
  detail::LinearCeLayout layout;
  const Status s = prepare_linear(problem, outputs, config, &p, &backend, &layout);
  if (s != Status::Success) return s;
  plan->chunk_rows = layout.chunk_rows;
  plan->workspace_bytes = layout.bytes;
  plan->internal_bytes = layout.host_scratch;
  return Status::Success;
}
Status workspace_size(const LinearCrossEntropyProblem& problem, const LinearCrossEntropyOutputs& outputs,
                      const ExecutionConfig& config, std::size_t* bytes) noexcept {
  if (bytes == nullptr) return Status::InvalidArgument;
  LinearCrossEntropyPlan plan;
  const Status s = linear_cross_entropy_plan(problem, outputs, config, &plan);
  if (s == Status::Success) *bytes = plan.workspace_bytes;
  return s;
}
Status compute(const LinearCrossEntropyProblem& problem, const LinearCrossEntropyOutputs& outputs,
               const ExecutionConfig& config) noexcept {
  return linear_compute(problem, outputs, config, false);
}
Status compute_sync(const LinearCrossEntropyProblem& problem, const LinearCrossEntropyOutputs& outputs,
                    const ExecutionConfig& config) noexcept {
  return linear_compute(problem, outputs, config, true);
}

bool cuda_available() noexcept {
#if FUSEDLOSS_WITH_CUDA
  return cuda_device_present();
#else
  return false;
#endif
}

Status workspace_size(const ElementwiseProblem& problem, const LossOutputs& outputs, const ExecutionConfig& config,
                      std::size_t* bytes) noexcept {
  return workspace_size_impl(problem, outputs, config, bytes);
}
Status workspace_size(const RowwiseProblem& problem, const LossOutputs& outputs, const ExecutionConfig& config,
                      std::size_t* bytes) noexcept {
  return workspace_size_impl(problem, outputs, config, bytes);
}
Status compute(const ElementwiseProblem& problem, const LossOutputs& outputs, const ExecutionConfig& config) noexcept {
  return compute_impl(problem, outputs, config, false);
}
Status compute(const RowwiseProblem& problem, const LossOutputs& outputs, const ExecutionConfig& config) noexcept {
  return compute_impl(problem, outputs, config, false);
}
Status compute_sync(const ElementwiseProblem& problem, const LossOutputs& outputs,
                    const ExecutionConfig& config) noexcept {
  return compute_impl(problem, outputs, config, true);
}
Status compute_sync(const RowwiseProblem& problem, const LossOutputs& outputs, const ExecutionConfig& config) noexcept {
  return compute_impl(problem, outputs, config, true);
}

}  // namespace fusedloss
