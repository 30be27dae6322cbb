// fusedloss emulated device — state shared by the engine (fibers, scheduling, synchronisation),
// the memory model (allocations, shadow state, the checkers) and the runtime API.
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "fusedloss_sim/sim.hpp"

namespace fusedloss_sim {
namespace internal {

constexpr int kMaxClusterBlocks = 8;
constexpr int kMaxBlockThreads = 1024;
constexpr std::size_t kSharedPerBlock = 227 * 1024;  ///< H100: 227 KB usable per block
constexpr std::size_t kStaticSharedLimit = 48 * 1024;

struct Block;
struct Thread;

/// One kernel launch being executed.
struct Launch {
  const void* kernel = nullptr;
  detail::Invoker invoke = nullptr;
  void* args = nullptr;  ///< a private copy of the parameters (legal for kernels to read)
  std::size_t args_bytes = 0;
  dim3 grid, block;
  unsigned cluster = 1;
  std::size_t dynamic_smem = 0;
  std::vector<long> slot_offset;  ///< shared slot → offset in every block's arena (−1: not placed)
  std::size_t shared_top = 0;     ///< static shared bytes placed so far
  LaunchRecord record;
  int findings = 0;
  bool failed = false;
  cudaError_t error = cudaSuccess;
};

/// A record of one shared-memory byte's last write and last read, for racecheck.
struct Access {
  std::uint16_t tid = 0xffff;  ///< cluster-wide thread id (rank·1024 + thread), 0xffff: none
  std::uint16_t block_epoch = 0, warp_epoch = 0, cluster_epoch = 0;
};
struct ShadowCell {
  Access write, read;
  bool many_readers = false;
};

struct Warp {
  unsigned live = 0;       ///< lanes that exist and have not exited
  unsigned arrived = 0;    ///< lanes waiting in the pending operation
  unsigned op_mask = 0;
  int op = -1;             ///< 0..3 shuffle modes, 4 ballot, 5 syncwarp
  const void* site = nullptr;
  std::uint64_t value[32] = {};
  int arg[32] = {};
  int width[32] = {};
  std::uint64_t result[32] = {};
  std::uint16_t epoch = 0;  ///< __syncwarp generations
};

enum class ThreadState { Ready, Barrier, WarpOp, ClusterBarrier, Done };

struct Worker;

struct Thread {
  Block* block = nullptr;
  Worker* worker = nullptr;
  uint3 idx{};
  int linear = 0, lane = 0, warp = 0;
  ThreadState state = ThreadState::Ready;
  bool abort = false;  ///< set when the block is abandoned: the next switch unwinds the thread
  const void* site = nullptr;
  int predicate = 0;
  // memory the thread may touch besides device memory and shared memory
  const char* stack_lo = nullptr;
  const char* stack_hi = nullptr;
  // the allocations it touched last (lookup cache: a kernel streams a few arrays at once)
  struct Allocation* alloc_hint[4] = {};
  unsigned alloc_next = 0;
};

struct Cluster;

struct Block {
  Launch* launch = nullptr;
  Cluster* cluster = nullptr;
  unsigned rank = 0;
  uint3 idx{};
  int threads = 0;
  int live = 0;
  int arrived = 0;
  int count_sum = 0;
  int count_result = 0;
  const void* barrier_site = nullptr;
  std::uint16_t epoch = 0;
  unsigned char* arena = nullptr;
  ShadowCell* shadow = nullptr;
  std::size_t arena_used = 0;
  std::vector<Warp> warps;
  std::vector<Thread> thread;
};

struct Cluster {
  int blocks = 0;
  Block* block[kMaxClusterBlocks] = {};
  int live = 0;
  int arrived = 0;
  std::uint16_t epoch = 0;
};

// ---- engine -------------------------------------------------------------------------------------------
/// The emulated thread running on this OS thread (nullptr outside kernels).
extern thread_local Thread* tls_thread;
inline Thread* current() { return tls_thread; }
/// Marks every thread of t's cluster to be unwound at its next switch.
void abandon_block_of(Thread* t);
/// Runs a launch to completion on the calling OS thread (every block, in the schedule's order).
void execute(Launch& L);
/// A checker finding: recorded, the launch fails with `error`, the block is abandoned.
/// Adds the running cluster's warp-level requests and sectors to L.record and starts afresh
/// (the engine calls it when every thread of the cluster has finished).
void flush_traffic(Launch& L);
void report(Thread* t, const char* checker, const std::string& what, const void* address, cudaError_t error);
std::string describe_thread(const Thread* t);

// ---- memory ---------------------------------------------------------------------------------------------
struct Allocation {
  char* base = nullptr;
  std::size_t size = 0;
  std::uint8_t* defined = nullptr;  ///< initcheck: one bit per byte, set when written
  std::size_t defined_bytes = 0;
  std::atomic<bool> freed{false};
  bool pinned_host = false;  ///< cudaHostAlloc memory: host memory the device may access
};
void* device_alloc(std::size_t bytes);
bool device_free(void* p);
/// The live allocation holding [p, p + n), or nullptr; `stale` tells a freed one or a gap apart.
Allocation* find_allocation(const void* p, std::size_t n, bool* inside_region);
extern const char* g_region_lo;  ///< the device address range (set once, before any allocation)
extern const char* g_region_hi;
inline bool in_device_region(const void* p) {
  const char* c = static_cast<const char*>(p);
  return c >= g_region_lo && c < g_region_hi;
}
void mark_defined(Allocation* a, std::size_t offset, std::size_t n);
bool is_defined(const Allocation* a, std::size_t offset, std::size_t n, std::size_t* first_undefined);
std::size_t device_bytes_in_use();
void* pinned_alloc(std::size_t bytes);
bool pinned_free(void* p);
bool is_pinned(const void* p, std::size_t n);

// ---- errors -------------------------------------------------------------------------------------------
/// The sticky error (a fault that corrupted the context), cudaSuccess when there is none.
cudaError_t sticky_error();
void set_sticky(cudaError_t e);
/// Records `e` as the last error of this thread and returns it.
cudaError_t set_error(cudaError_t e);

/// Enqueues host work on a stream as the runtime orders it: run now, or recorded into the graph the stream
/// is capturing (replayed with the graph). Library calls implemented on the CPU (sim/src/cublas.cpp) use it.
cudaError_t enqueue_host(cudaStream_t stream, std::function<void()> work);

/// The launch log (every OS thread appends).
void record_launch(const LaunchRecord& r);
std::string kernel_name(const void* kernel);

}  // namespace internal
}  // namespace fusedloss_sim
