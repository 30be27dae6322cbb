// fusedloss emulated device — the CUDA runtime API that fusedloss and its tests use, on the CPU.
//
// One device, with an H100 SXM's properties. Streams are in order and every operation runs when
// it is enqueued (on the calling thread), so the host never waits on a later one; events record
// host time (emulated times are not GPU times). Stream capture records kernel launches, copies
// and memsets into a graph that a graph launch replays. Errors follow the runtime: a failed call
// sets the thread's last error; a kernel fault (any checker finding) is sticky.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "internal.hpp"

struct CUstream_st {
  unsigned flags = 0;
  cudaGraph_t capture = nullptr;  ///< the graph being captured into, or nullptr
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point time{};
  bool recorded = false;
};

namespace {
enum class NodeKind { Kernel, Memcpy, Memset, Host, Empty };
}

struct CUgraphNode_st {
  NodeKind kind = NodeKind::Empty;
  // kernel
  const void* kernel = nullptr;
  fusedloss_sim::detail::Invoker invoke = nullptr;
  std::shared_ptr<void> args;
  std::size_t args_bytes = 0;
  void* (*clone)(const void*) = nullptr;
  void (*destroy)(void*) = nullptr;
  dim3 grid, block;
  std::size_t smem = 0;
  unsigned cluster = 1;
  // memcpy / memset
  void* dst = nullptr;
  const void* src = nullptr;
  std::size_t bytes = 0;
  cudaMemcpyKind copy_kind = cudaMemcpyDefault;
  int value = 0;
  // host work (a library call's CPU implementation, cudaLaunchHostFunc)
  std::function<void()> host;
};
struct CUgraph_st {
  std::vector<std::unique_ptr<CUgraphNode_st>> nodes;
  bool invalidated = false;
};
struct CUgraphExec_st {
  std::vector<CUgraphNode_st*> nodes;
  cudaGraph_t graph = nullptr;  ///< owned copy
};

namespace fusedloss_sim {
namespace internal {
namespace {

std::atomic<int> g_sticky{cudaSuccess};
thread_local cudaError_t tls_last = cudaSuccess;
std::mutex g_log_mutex;
std::vector<LaunchRecord> g_log;
std::mutex g_capture_mutex;
int g_global_captures = 0;  ///< streams capturing in global mode (synchronous calls are then illegal)

constexpr std::size_t kTotalMemory = 85520809984ull;  // H100 80GB HBM3

std::size_t host_available() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  std::size_t kb = 0;
  std::string unit;
  while (f >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return kTotalMemory;
}

/// Device memory the emulated device offers: an H100's, but never more than this host can back.
std::size_t free_memory() {
  const std::size_t used = device_bytes_in_use();
  const std::size_t dev_free = kTotalMemory > used ? kTotalMemory - used : 0;
  const std::size_t host = host_available();
  const std::size_t margin = std::size_t{1} << 30;
  const std::size_t host_free = host > margin ? host - margin : 0;
  return dev_free < host_free ? dev_free : host_free;
}

bool capture_forbids_sync() {
  std::lock_guard<std::mutex> lock(g_capture_mutex);
  return g_global_captures > 0;
}

bool is_special(cudaStream_t s) {
  return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread;
}
CUstream_st* stream_of(cudaStream_t s) { return is_special(s) ? nullptr : s; }

/// Where a memcpy operand lives: 0 host, 1 device (live allocation covering the range), −1 bad.
int space_of(const void* p, std::size_t n) {
  bool inside = false;
  if (find_allocation(p, n, &inside) != nullptr) return 1;
  return inside ? -1 : 0;
}

cudaError_t do_memcpy(void* dst, const void* src, std::size_t n, cudaMemcpyKind kind) {
  if (n == 0) return cudaSuccess;
  if (dst == nullptr || src == nullptr) return cudaErrorInvalidValue;
  const int ds = space_of(dst, n), ss = space_of(src, n);
  if (ds < 0 || ss < 0) return cudaErrorInvalidValue;
  switch (kind) {
    case cudaMemcpyHostToDevice:
      if (ds != 1 || ss != 0) return cudaErrorInvalidValue;
      break;
    case cudaMemcpyDeviceToHost:
      if (ds != 0 || ss != 1) return cudaErrorInvalidValue;
      break;
    case cudaMemcpyDeviceToDevice:
      if (ds != 1 || ss != 1) return cudaErrorInvalidValue;
      break;
    case cudaMemcpyHostToHost:
      if (ds != 0 || ss != 0) return cudaErrorInvalidValue;
      break;
    case cudaMemcpyDefault:
      break;
    default:
      return cudaErrorInvalidMemcpyDirection;
  }
  std::memmove(dst, src, n);
  if (ds == 1) {
    Allocation* a = find_allocation(dst, n, nullptr);
    mark_defined(a, static_cast<std::size_t>(static_cast<char*>(dst) - a->base), n);
  }
  return cudaSuccess;
}

cudaError_t do_memset(void* dst, int value, std::size_t n) {
  if (n == 0) return cudaSuccess;
  Allocation* a = find_allocation(dst, n, nullptr);
  if (a == nullptr) return cudaErrorInvalidValue;
  std::memset(dst, value, n);
  mark_defined(a, static_cast<std::size_t>(static_cast<char*>(dst) - a->base), n);
  return cudaSuccess;
}

cudaError_t run_kernel(const void* kernel, detail::Invoker invoke, const void* args, std::size_t args_bytes,
                       void* (*clone)(const void*), void (*destroy)(void*), dim3 grid, dim3 block, std::size_t smem,
                       unsigned cluster) {
  Launch L;
  L.kernel = kernel;
  L.invoke = invoke;
  L.args = clone(args);  // the kernel reads its own copy of the parameters
  L.args_bytes = args_bytes;
  L.grid = grid;
  L.block = block;
  L.cluster = cluster;
  L.dynamic_smem = smem;
  L.record.kernel = kernel_name(kernel);
  L.record.grid = grid;
  L.record.block = block;
  L.record.cluster = cluster;
  L.record.dynamic_smem = smem;
  execute(L);
  destroy(L.args);
  L.record.result = L.error;
  record_launch(L.record);
  if (L.failed) {
    set_sticky(L.error == cudaSuccess ? cudaErrorLaunchFailure : L.error);
    return set_error(sticky_error());
  }
  return cudaSuccess;
}

cudaError_t check_config(dim3 grid, dim3 block, std::size_t smem, unsigned cluster) {
  const unsigned long long threads = static_cast<unsigned long long>(block.x) * block.y * block.z;
  if (threads == 0 || threads > static_cast<unsigned long long>(kMaxBlockThreads) || block.z > 64) {
    return cudaErrorInvalidConfiguration;
  }
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535u || grid.z > 65535u) {
    return cudaErrorInvalidConfiguration;
  }
  if (smem > kSharedPerBlock) return cudaErrorInvalidValue;
  if (cluster == 0 || cluster > static_cast<unsigned>(kMaxClusterBlocks) || grid.x % cluster != 0) {
    return cudaErrorInvalidClusterSize;
  }
  return cudaSuccess;
}

void replay(CUgraphNode_st* n) {
  switch (n->kind) {
    case NodeKind::Kernel:
      run_kernel(n->kernel, n->invoke, n->args.get(), n->args_bytes, n->clone, n->destroy, n->grid, n->block, n->smem,
                 n->cluster);
      break;
    case NodeKind::Memcpy:
      do_memcpy(n->dst, n->src, n->bytes, n->copy_kind);
      break;
    case NodeKind::Memset:
      do_memset(n->dst, n->value, n->bytes);
      break;
    case NodeKind::Host:
      n->host();
      break;
    case NodeKind::Empty:
      break;
  }
}

}  // namespace

cudaError_t sticky_error() { return static_cast<cudaError_t>(g_sticky.load()); }
void set_sticky(cudaError_t e) {
  int expected = cudaSuccess;
  g_sticky.compare_exchange_strong(expected, e);
}
cudaError_t set_error(cudaError_t e) {
  if (e != cudaSuccess) tls_last = e;
  return e;
}
void record_launch(const LaunchRecord& r) {
  std::lock_guard<std::mutex> lock(g_log_mutex);
  if (g_log.size() < 100000) g_log.push_back(r);
}

cudaError_t enqueue_host(cudaStream_t stream, std::function<void()> work) {
  if (sticky_error() != cudaSuccess) return set_error(sticky_error());
  if (CUstream_st* s = stream_of(stream); s != nullptr && s->capture != nullptr) {
    auto node = std::make_unique<CUgraphNode_st>();
    node->kind = NodeKind::Host;
    node->host = std::move(work);
    s->capture->nodes.push_back(std::move(node));
    return cudaSuccess;
  }
  work();  // stream operations run when they are enqueued
  return cudaSuccess;
}

}  // namespace internal

std::vector<LaunchRecord> launches() {
  std::lock_guard<std::mutex> lock(internal::g_log_mutex);
  return internal::g_log;
}
void clear_launches() {
  std::lock_guard<std::mutex> lock(internal::g_log_mutex);
  internal::g_log.clear();
}

namespace detail {

unsigned cluster_dim_of(const cudaLaunchConfig_t* config);

cudaError_t launch(const void* kernel, Invoker invoke, const void* args, std::size_t args_bytes, void (*destroy)(void*),
                   void* (*clone)(const void*), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream,
                   unsigned cluster) {
  using namespace internal;
  if (sticky_error() != cudaSuccess) return set_error(sticky_error());
  if (const cudaError_t e = check_config(grid, block, smem, cluster)) return set_error(e);
  if (CUstream_st* s = stream_of(stream); s != nullptr && s->capture != nullptr) {
    auto node = std::make_unique<CUgraphNode_st>();
    node->kind = NodeKind::Kernel;
    node->kernel = kernel;
    node->invoke = invoke;
    node->args = std::shared_ptr<void>(clone(args), destroy);
    node->args_bytes = args_bytes;
    node->clone = clone;
    node->destroy = destroy;
    node->grid = grid;
    node->block = block;
    node->smem = smem;
    node->cluster = cluster;
    s->capture->nodes.push_back(std::move(node));
    return cudaSuccess;
  }
  return run_kernel(kernel, invoke, args, args_bytes, clone, destroy, grid, block, smem, cluster);
}

cudaError_t func_attributes(cudaFuncAttributes* attr, const void* kernel) {
  if (attr == nullptr || kernel == nullptr) return internal::set_error(cudaErrorInvalidValue);
  *attr = cudaFuncAttributes{};
  attr->maxThreadsPerBlock = internal::kMaxBlockThreads;
  attr->binaryVersion = 90;
  attr->ptxVersion = 90;
  attr->maxDynamicSharedSizeBytes = static_cast<int>(internal::kStaticSharedLimit);
  attr->clusterDimMustBeSet = 0;
  attr->nonPortableClusterSizeAllowed = 0;
  return cudaSuccess;
}

cudaError_t occupancy_blocks(int* blocks, const void* kernel, int block_threads, size_t dynamic_smem) {
  if (blocks == nullptr || kernel == nullptr || block_threads <= 0) return internal::set_error(cudaErrorInvalidValue);
  const int warps = (block_threads + 31) / 32;
  int by_threads = 64 / warps;  // 64 resident warps per SM
  int by_smem = dynamic_smem > 0 ? static_cast<int>((228 * 1024) / (dynamic_smem + 1024)) : 32;
  int b = by_threads < by_smem ? by_threads : by_smem;
  if (b > 32) b = 32;
  *blocks = b;
  return cudaSuccess;
}

cudaError_t occupancy_clusters(int* clusters, const void* kernel, const cudaLaunchConfig_t* config) {
  if (clusters == nullptr || kernel == nullptr || config == nullptr) return internal::set_error(cudaErrorInvalidValue);
  const unsigned K = cluster_dim_of(config);
  const unsigned threads = config->blockDim.x * config->blockDim.y * config->blockDim.z;
  if (K == 0 || K > static_cast<unsigned>(internal::kMaxClusterBlocks) || threads > 1024) {
    *clusters = 0;
    return cudaSuccess;
  }
  int per_sm = 0;
  occupancy_blocks(&per_sm, kernel, static_cast<int>(threads), config->dynamicSmemBytes);
  *clusters = static_cast<int>(132u * static_cast<unsigned>(per_sm) / K);
  return cudaSuccess;
}

unsigned cluster_dim_of(const cudaLaunchConfig_t* config) {
  for (unsigned i = 0; i < config->numAttrs; ++i)
    if (config->attrs[i].id == cudaLaunchAttributeClusterDimension)
      return config->attrs[i].val.clusterDim.x * config->attrs[i].val.clusterDim.y * config->attrs[i].val.clusterDim.z;
  return 1;
}

}  // namespace detail
}  // namespace fusedloss_sim

// ---- the C runtime API ------------------------------------------------------------------------------------
using namespace fusedloss_sim::internal;

#define FL_STICKY_GUARD() \
  if (sticky_error() != cudaSuccess) return set_error(sticky_error())

extern "C" {

cudaError_t cudaGetLastError(void) {
  if (sticky_error() != cudaSuccess) return sticky_error();
  const cudaError_t e = tls_last;
  tls_last = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return sticky_error() != cudaSuccess ? sticky_error() : tls_last; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorInvalidClusterSize: return "cudaErrorInvalidClusterSize";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    default: return "cudaErrorUnknown";
  }
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorInvalidClusterSize: return "invalid cluster size";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    default: return "unknown error";
  }
}

cudaError_t cudaGetDeviceCount(int* count) {
  if (count == nullptr) return set_error(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) return set_error(cudaErrorInvalidValue);
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : set_error(cudaErrorInvalidDevice); }
cudaError_t cudaDeviceSynchronize(void) {
  FL_STICKY_GUARD();
  if (capture_forbids_sync()) return set_error(cudaErrorStreamCaptureUnsupported);
  return cudaSuccess;
}
cudaError_t cudaDeviceReset(void) {
  g_sticky.store(cudaSuccess);
  tls_last = cudaSuccess;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  if (v == nullptr) return set_error(cudaErrorInvalidValue);
  *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  if (v == nullptr) return set_error(cudaErrorInvalidValue);
  *v = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (p == nullptr) return set_error(cudaErrorInvalidValue);
  if (device != 0) return set_error(cudaErrorInvalidDevice);
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof p->name, "fusedloss emulated device (H100 SXM properties)");
  p->totalGlobalMem = kTotalMemory;
  p->sharedMemPerBlock = kStaticSharedLimit;
  p->regsPerBlock = 65536;
  p->warpSize = 32;
  p->memPitch = 2147483647;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = 1024;
  p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 2147483647;
  p->maxGridSize[1] = 65535;
  p->maxGridSize[2] = 65535;
  p->totalConstMem = 65536;
  p->major = 9;
  p->minor = 0;
  p->textureAlignment = 512;
  p->multiProcessorCount = 132;
  p->integrated = 0;
  p->canMapHostMemory = 1;
  p->concurrentKernels = 1;
  p->ECCEnabled = 1;
  p->asyncEngineCount = 3;
  p->unifiedAddressing = 1;
  p->memoryBusWidth = 5120;
  p->l2CacheSize = 50 * 1024 * 1024;
  p->persistingL2CacheMaxSize = 32 * 1024 * 1024;
  p->maxThreadsPerMultiProcessor = 2048;
  p->streamPrioritiesSupported = 1;
  p->globalL1CacheSupported = 1;
  p->localL1CacheSupported = 1;
  p->sharedMemPerMultiprocessor = 228 * 1024;
  p->regsPerMultiprocessor = 65536;
  p->managedMemory = 1;
  p->isMultiGpuBoard = 0;
  p->pageableMemoryAccess = 0;
  p->concurrentManagedAccess = 1;
  p->computePreemptionSupported = 1;
  p->cooperativeLaunch = 1;
  p->sharedMemPerBlockOptin = kSharedPerBlock;
  p->maxBlocksPerMultiProcessor = 32;
  p->accessPolicyMaxWindowSize = 134213632;
  p->reservedSharedMemPerBlock = 1024;
  p->memoryPoolsSupported = 1;
  p->clusterLaunch = 1;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (value == nullptr) return set_error(cudaErrorInvalidValue);
  if (device != 0) return set_error(cudaErrorInvalidDevice);
  cudaDeviceProp p;
  cudaGetDeviceProperties(&p, 0);
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxBlockDimX: *value = p.maxThreadsDim[0]; break;
    case cudaDevAttrMaxBlockDimY: *value = p.maxThreadsDim[1]; break;
    case cudaDevAttrMaxBlockDimZ: *value = p.maxThreadsDim[2]; break;
    case cudaDevAttrMaxGridDimX: *value = p.maxGridSize[0]; break;
    case cudaDevAttrMaxGridDimY: *value = p.maxGridSize[1]; break;
    case cudaDevAttrMaxGridDimZ: *value = p.maxGridSize[2]; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = static_cast<int>(p.sharedMemPerBlock); break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    case cudaDevAttrL2CacheSize: *value = p.l2CacheSize; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = p.maxThreadsPerMultiProcessor; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = static_cast<int>(p.sharedMemPerMultiprocessor); break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(p.sharedMemPerBlockOptin); break;
    case cudaDevAttrMaxRegistersPerBlock: *value = p.regsPerBlock; break;
    case cudaDevAttrMaxRegistersPerMultiprocessor: *value = p.regsPerMultiprocessor; break;
    case cudaDevAttrMaxBlocksPerMultiprocessor: *value = p.maxBlocksPerMultiProcessor; break;
    case cudaDevAttrClusterLaunch: *value = 1; break;
    case cudaDevAttrMemoryPoolsSupported: *value = 1; break;
    case cudaDevAttrUnifiedAddressing: *value = 1; break;
    case cudaDevAttrGlobalMemoryBusWidth: *value = p.memoryBusWidth; break;
    case cudaDevAttrConcurrentKernels: *value = 1; break;
    case cudaDevAttrCanMapHostMemory: *value = 1; break;
    case cudaDevAttrCooperativeLaunch: *value = 1; break;
    case cudaDevAttrEccEnabled: *value = 1; break;
    case cudaDevAttrIntegrated: *value = 0; break;
    default: return set_error(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  FL_STICKY_GUARD();
  if (free_bytes != nullptr) *free_bytes = free_memory();
  if (total != nullptr) *total = kTotalMemory;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
  FL_STICKY_GUARD();
  if (p == nullptr) return set_error(cudaErrorInvalidValue);
  if (capture_forbids_sync()) return set_error(cudaErrorStreamCaptureUnsupported);
  *p = nullptr;
  if (bytes == 0) return cudaSuccess;
  if (bytes > free_memory()) return set_error(cudaErrorMemoryAllocation);
  *p = device_alloc(bytes);
  return *p != nullptr ? cudaSuccess : set_error(cudaErrorMemoryAllocation);
}
cudaError_t cudaFree(void* p) {
  FL_STICKY_GUARD();
  if (p == nullptr) return cudaSuccess;
  return device_free(p) ? cudaSuccess : set_error(cudaErrorInvalidValue);
}
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) {
  FL_STICKY_GUARD();
  if (p == nullptr) return set_error(cudaErrorInvalidValue);
  *p = nullptr;
  if (bytes == 0) return cudaSuccess;
  if (bytes > free_memory()) return set_error(cudaErrorMemoryAllocation);
  *p = device_alloc(bytes);
  return *p != nullptr ? cudaSuccess : set_error(cudaErrorMemoryAllocation);
}
cudaError_t cudaFreeAsync(void* p, cudaStream_t s) {
  FL_STICKY_GUARD();
  if (CUstream_st* st = stream_of(s); st != nullptr && st->capture != nullptr) return cudaSuccess;  // freed with the graph's memory, never earlier
  if (p == nullptr) return cudaSuccess;
  return device_free(p) ? cudaSuccess : set_error(cudaErrorInvalidValue);
}
cudaError_t cudaMallocHost(void** p, size_t bytes) {
  if (p == nullptr) return set_error(cudaErrorInvalidValue);
  *p = pinned_alloc(bytes);
  return *p != nullptr ? cudaSuccess : set_error(cudaErrorMemoryAllocation);
}
cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned int) { return cudaMallocHost(p, bytes); }
cudaError_t cudaFreeHost(void* p) { return (p == nullptr || pinned_free(p)) ? cudaSuccess : set_error(cudaErrorInvalidValue); }
cudaError_t cudaHostGetDevicePointer(void** d, void* h, unsigned int) {
  if (d == nullptr || !is_pinned(h, 1)) return set_error(cudaErrorInvalidValue);
  *d = h;
  return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void* p) {
  FL_STICKY_GUARD();
  if (a == nullptr) return set_error(cudaErrorInvalidValue);
  *a = cudaPointerAttributes{};
  a->device = 0;
  if (p != nullptr && find_allocation(p, 1, nullptr) != nullptr) {
    a->type = cudaMemoryTypeDevice;
    a->devicePointer = const_cast<void*>(p);
  } else if (p != nullptr && is_pinned(p, 1)) {
    a->type = cudaMemoryTypeHost;
    a->hostPointer = const_cast<void*>(p);
    a->devicePointer = const_cast<void*>(p);
  } else {
    a->type = cudaMemoryTypeUnregistered;
    a->device = -2;
  }
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  FL_STICKY_GUARD();
  if (capture_forbids_sync()) return set_error(cudaErrorStreamCaptureUnsupported);
  return set_error(do_memcpy(dst, src, n, kind));
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
  FL_STICKY_GUARD();
  if (CUstream_st* st = stream_of(s); st != nullptr && st->capture != nullptr) {
    auto node = std::make_unique<CUgraphNode_st>();
    node->kind = NodeKind::Memcpy;
    node->dst = dst;
    node->src = src;
    node->bytes = n;
    node->copy_kind = kind;
    st->capture->nodes.push_back(std::move(node));
    return cudaSuccess;
  }
  return set_error(do_memcpy(dst, src, n, kind));
}
cudaError_t cudaMemset(void* dst, int value, size_t n) {
  FL_STICKY_GUARD();
  if (capture_forbids_sync()) return set_error(cudaErrorStreamCaptureUnsupported);
  return set_error(do_memset(dst, value, n));
}
cudaError_t cudaMemsetAsync(void* dst, int value, size_t n, cudaStream_t s) {
  FL_STICKY_GUARD();
  if (CUstream_st* st = stream_of(s); st != nullptr && st->capture != nullptr) {
    if (find_allocation(dst, n, nullptr) == nullptr && n > 0) return set_error(cudaErrorInvalidValue);
    auto node = std::make_unique<CUgraphNode_st>();
    node->kind = NodeKind::Memset;
    node->dst = dst;
    node->bytes = n;
    node->value = value;
    st->capture->nodes.push_back(std::move(node));
    return cudaSuccess;
  }
  return set_error(do_memset(dst, value, n));
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  if (s == nullptr) return set_error(cudaErrorInvalidValue);
  *s = new CUstream_st();
  (*s)->flags = flags;
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* s, unsigned int flags, int) {
  return cudaStreamCreateWithFlags(s, flags);
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (is_special(s)) return set_error(cudaErrorInvalidResourceHandle);
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  FL_STICKY_GUARD();
  if (CUstream_st* st = stream_of(s); st != nullptr && st->capture != nullptr)
    return set_error(cudaErrorStreamCaptureUnsupported);
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t) {
  FL_STICKY_GUARD();
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned int) {
  FL_STICKY_GUARD();
  return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
  FL_STICKY_GUARD();
  CUstream_st* st = stream_of(s);
  if (st == nullptr || st->capture != nullptr) return set_error(cudaErrorIllegalState);
  st->capture = new CUgraph_st();
  st->mode = mode;
  if (mode == cudaStreamCaptureModeGlobal) {
    std::lock_guard<std::mutex> lock(g_capture_mutex);
    ++g_global_captures;
  }
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* g) {
  CUstream_st* st = stream_of(s);
  if (st == nullptr || st->capture == nullptr || g == nullptr) return set_error(cudaErrorIllegalState);
  *g = st->capture;
  st->capture = nullptr;
  if (st->mode == cudaStreamCaptureModeGlobal) {
    std::lock_guard<std::mutex> lock(g_capture_mutex);
    --g_global_captures;
  }
  return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status) {
  if (status == nullptr) return set_error(cudaErrorInvalidValue);
  CUstream_st* st = stream_of(s);
  *status = (st != nullptr && st->capture != nullptr) ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t g, unsigned long long) {
  if (exec == nullptr || g == nullptr) return set_error(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st();
  for (auto& n : g->nodes) (*exec)->nodes.push_back(n.get());
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t) {
  FL_STICKY_GUARD();
  if (exec == nullptr) return set_error(cudaErrorInvalidValue);
  for (CUgraphNode_st* n : exec->nodes) {
    replay(n);
    if (sticky_error() != cudaSuccess) return set_error(sticky_error());
  }
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  delete g;
  return cudaSuccess;
}
cudaError_t cudaGraphGetNodes(cudaGraph_t g, cudaGraphNode_t* nodes, size_t* count) {
  if (g == nullptr || count == nullptr) return set_error(cudaErrorInvalidValue);
  if (nodes == nullptr) {
    *count = g->nodes.size();
    return cudaSuccess;
  }
  const size_t n = *count < g->nodes.size() ? *count : g->nodes.size();
  for (size_t i = 0; i < n; ++i) nodes[i] = g->nodes[i].get();
  *count = n;
  return cudaSuccess;
}
cudaError_t cudaGraphNodeGetType(cudaGraphNode_t n, cudaGraphNodeType* type) {
  if (n == nullptr || type == nullptr) return set_error(cudaErrorInvalidValue);
  switch (n->kind) {
    case NodeKind::Kernel: *type = cudaGraphNodeTypeKernel; break;
    case NodeKind::Memcpy: *type = cudaGraphNodeTypeMemcpy; break;
    case NodeKind::Memset: *type = cudaGraphNodeTypeMemset; break;
    default: *type = cudaGraphNodeTypeEmpty; break;
  }
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* e) {
  if (e == nullptr) return set_error(cudaErrorInvalidValue);
  *e = new CUevent_st();
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  FL_STICKY_GUARD();
  if (e == nullptr) return set_error(cudaErrorInvalidResourceHandle);
  e->time = std::chrono::steady_clock::now();
  e->recorded = true;
  return cudaSuccess;
}
cudaError_t cudaEventRecordWithFlags(cudaEvent_t e, cudaStream_t s, unsigned int) { return cudaEventRecord(e, s); }
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  FL_STICKY_GUARD();
  return e != nullptr ? cudaSuccess : set_error(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  FL_STICKY_GUARD();
  return e != nullptr ? cudaSuccess : set_error(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  FL_STICKY_GUARD();
  if (ms == nullptr || a == nullptr || b == nullptr) return set_error(cudaErrorInvalidValue);
  if (!a->recorded || !b->recorded) return set_error(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(b->time - a->time).count();
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void*, cudaFuncAttribute, int) { return cudaSuccess; }
cudaError_t cudaLaunchKernel(const void*, dim3, dim3, void**, size_t, cudaStream_t) {
  // Untyped launches cannot be emulated: kernels go through fusedloss_sim::launch.
  return set_error(cudaErrorNotSupported);
}
cudaError_t cudaLaunchKernelExC(const cudaLaunchConfig_t*, const void*, void**) {
  return set_error(cudaErrorNotSupported);
}

}  // extern "C"
