// fusedloss emulated device — the checkers (memcheck, racecheck, initcheck; synccheck lives in the
// engine) and the traffic counters.
//
// The kernel translation units are compiled with GCC's -fsanitize=thread instrumentation but
// linked WITHOUT the ThreadSanitizer runtime: every load, store and atomic the compiler emits
// calls one of the __tsan_* entry points below, which this file implements. Outside a kernel
// (host code in the same files) they return at once.
//   memcheck:  a global access must lie inside a live device allocation (device memory is one
//              address range: gaps and freed allocations are told apart); shared accesses must lie
//              inside the shared memory the block declared; anything else must be the thread's
//              own stack, its launch parameters, pinned mapped host memory or the program image.
//   initcheck: a global read of bytes never written (by a copy, a memset or a kernel) since the
//              allocation; a shared read of bytes never written since the block started.
//   racecheck: two accesses to one shared byte by different threads, at least one a write, with
//              no barrier between them (__syncthreads for one block, cluster.sync for a
//              cluster, __syncwarp for the lanes of one warp; shuffles do not order memory).
//   traffic:   global bytes loaded and stored (every access), and the 32-byte sectors each
//              warp-level request touches. The lanes of a warp run as separate fibers, so a
//              "request" is rebuilt afterwards: the n-th execution of one instruction (the call
//              site of the entry point) by each lane of a warp is one request, as on the GPU
//              where the lanes issue it together; its sectors are the distinct 32-byte sectors
//              over those lanes. Counted per cluster of blocks, when the cluster has finished.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <tuple>

#include "fusedloss_sim/device.hpp"
#include "internal.hpp"

extern "C" char __executable_start;
extern "C" char _end;

namespace fusedloss_sim {
namespace internal {
namespace {

constexpr int kMaxFindingsPerLaunch = 8;
constexpr std::uint16_t kNone = 0xffff;

std::mutex g_findings_mutex;
std::vector<std::string> g_findings;

bool env_checks() {
  const char* v = std::getenv("FUSEDLOSS_SIM_CHECKS");
  return v == nullptr || std::strcmp(v, "0") != 0;
}
std::atomic<bool> g_checks{env_checks()};
std::atomic<bool> g_sectors{std::getenv("FUSEDLOSS_SIM_SECTORS") != nullptr && std::strcmp(std::getenv("FUSEDLOSS_SIM_SECTORS"), "0") != 0};

std::string hex(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

Access access_of(const Thread* t) {
  Access a;
  a.tid = static_cast<std::uint16_t>(t->block->rank * kMaxBlockThreads + static_cast<unsigned>(t->linear));
  a.block_epoch = t->block->epoch;
  a.warp_epoch = t->block->warps[static_cast<std::size_t>(t->warp)].epoch;
  a.cluster_epoch = t->block->cluster->epoch;
  return a;
}

/// Is `before` ordered before `now` by a barrier? `any_thread`: `before` may stand for several
/// threads (many readers), so being the same thread proves nothing.
bool ordered(const Access& before, const Access& now, bool any_thread) {
  if (!any_thread && before.tid == now.tid) return true;
  if (before.cluster_epoch != now.cluster_epoch) return true;
  const bool same_block = (before.tid / kMaxBlockThreads) == (now.tid / kMaxBlockThreads);
  if (same_block && before.block_epoch != now.block_epoch) return true;
  const bool same_warp = same_block && (before.tid % kMaxBlockThreads) / 32 == (now.tid % kMaxBlockThreads) / 32;
  return same_warp && before.warp_epoch != now.warp_epoch;
}

std::string who(std::uint16_t tid) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "thread %u of cluster rank %u", tid % kMaxBlockThreads, tid / kMaxBlockThreads);
  return buf;
}

void check_shared(Thread* t, Block* b, std::size_t off, std::size_t n, bool write, const void* addr) {
  if (off + n > b->arena_used || off + n > b->launch->shared_top + ((b->launch->dynamic_smem + 15) / 16 * 16)) {
    report(t, "memcheck",
           std::string(write ? "write" : "read") + " of " + std::to_string(n) + " bytes outside the block's " +
               std::to_string(b->launch->shared_top) + " bytes of shared memory",
           addr, cudaErrorIllegalAddress);
    return;
  }
  const Access now = access_of(t);
  for (std::size_t i = off; i < off + n; ++i) {
    ShadowCell& c = b->shadow[i];
    if (write) {
      if (c.write.tid != kNone && !ordered(c.write, now, false)) {
        report(t, "racecheck",
               "write-after-write hazard on shared memory: written before by " + who(c.write.tid) +
                   " with no barrier between",
               static_cast<const char*>(addr) + (i - off), cudaErrorLaunchFailure);
        return;
      }
      if (c.read.tid != kNone && !ordered(c.read, now, c.many_readers)) {
        report(t, "racecheck",
               "write-after-read hazard on shared memory: read before by " + who(c.read.tid) +
                   (c.many_readers ? " (and others)" : "") + " with no barrier between",
               static_cast<const char*>(addr) + (i - off), cudaErrorLaunchFailure);
        return;
      }
      c.write = now;
      c.read = Access{};
      c.many_readers = false;
    } else {
      if (c.write.tid == kNone) {
        report(t, "initcheck", "read of shared memory never written in this block", static_cast<const char*>(addr) + (i - off),
               cudaErrorLaunchFailure);
        return;
      }
      if (!ordered(c.write, now, false)) {
        report(t, "racecheck",
               "read-after-write hazard on shared memory: written by " + who(c.write.tid) + " with no barrier between",
               static_cast<const char*>(addr) + (i - off), cudaErrorLaunchFailure);
        return;
      }
      if (c.read.tid == kNone || ordered(c.read, now, c.many_readers)) {
        c.many_readers = false;
      } else if (c.read.tid != now.tid) {
        c.many_readers = true;
      }
      c.read = now;
    }
  }
}

Block* shared_block(Thread* t, const void* addr, std::size_t* off) {
  Cluster* c = t->block->cluster;
  const unsigned char* p = static_cast<const unsigned char*>(addr);
  for (int r = 0; r < c->blocks; ++r) {
    Block* b = c->block[r];
    if (p >= b->arena && p < b->arena + kSharedPerBlock) {
      *off = static_cast<std::size_t>(p - b->arena);
      return b;
    }
  }
  return nullptr;
}

/// One sector touched by one lane's access; (warp, write, site, occurrence) names the request.
struct SectorTouch {
  std::uintptr_t site;
  std::uint32_t occurrence;
  std::uint16_t warp;  ///< cluster rank · 32 + warp
  std::uint16_t write;
  std::uint32_t bytes;  ///< bit b: byte b of the sector
  std::uint64_t sector;
  bool operator<(const SectorTouch& o) const {
    return std::tie(warp, write, site, occurrence, sector) < std::tie(o.warp, o.write, o.site, o.occurrence, o.sector);
  }
  bool same_request(const SectorTouch& o) const {
    return warp == o.warp && write == o.write && site == o.site && occurrence == o.occurrence;
  }
};
/// Per OS thread (each runs its own launches): the touches of the running cluster, and per
/// cluster thread the executions of each site so far (a few sites per kernel: a short list).
struct TrafficLog {
  std::vector<SectorTouch> touches;
  std::vector<std::vector<std::pair<std::uintptr_t, std::uint32_t>>> site_counts;
  std::vector<std::size_t> threads_seen;
};
thread_local TrafficLog tl_traffic;

void note_request(const Thread* t, const void* site, const char* p, std::size_t n, bool write) {
  if (site == nullptr || n == 0 || !g_sectors.load(std::memory_order_relaxed)) return;
  TrafficLog& log = tl_traffic;
  const std::size_t tid = t->block->rank * kMaxBlockThreads + static_cast<std::size_t>(t->linear);
  if (log.site_counts.size() <= tid) log.site_counts.resize(static_cast<std::size_t>(kMaxClusterBlocks) * kMaxBlockThreads);
  auto& counts = log.site_counts[tid];
  if (counts.empty()) log.threads_seen.push_back(tid);
  const auto s = reinterpret_cast<std::uintptr_t>(site);
  std::uint32_t occurrence = 0;
  auto it = std::find_if(counts.rbegin(), counts.rend(), [s](const auto& c) { return c.first == s; });
  if (it == counts.rend()) {
    counts.emplace_back(s, 1u);
  } else {
    occurrence = it->second++;
  }
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  const auto warp = static_cast<std::uint16_t>(t->block->rank * (kMaxBlockThreads / 32) + static_cast<unsigned>(t->warp));
  for (std::uint64_t sec = a / kSectorBytes; sec <= (a + n - 1) / kSectorBytes; ++sec) {
    const std::uint64_t lo = std::max<std::uint64_t>(a, sec * kSectorBytes) - sec * kSectorBytes;
    const std::uint64_t hi = std::min<std::uint64_t>(a + n, (sec + 1) * kSectorBytes) - sec * kSectorBytes;
    const std::uint32_t bytes = static_cast<std::uint32_t>(((std::uint64_t{1} << hi) - 1) & ~((std::uint64_t{1} << lo) - 1));
    log.touches.push_back(SectorTouch{s, occurrence, warp, static_cast<std::uint16_t>(write), bytes, sec});
  }
}

/// Every memory access of kernel code lands here. `site`, the instruction that made it: the
/// default argument is evaluated in the calling __tsan_* entry point, so it is that entry
/// point's return address, in the kernel.
void on_access(const void* addr, std::size_t n, bool write, const void* site = __builtin_return_address(0)) {
  Thread* t = tls_thread;
  if (t == nullptr) return;  // host code
  const char* p = static_cast<const char*>(addr);
  if (p >= t->stack_lo && p < t->stack_hi) return;  // locals: most accesses
  Launch& L = *t->block->launch;
  const bool checks = g_checks.load(std::memory_order_relaxed);
  if (in_device_region(p)) {
    Allocation* a = nullptr;
    for (Allocation* h : t->alloc_hint) {
      if (h != nullptr && p >= h->base && p + n <= h->base + h->size && !h->freed.load(std::memory_order_relaxed)) {
        a = h;
        break;
      }
    }
    if (a == nullptr) {
      a = find_allocation(p, n, nullptr);
      if (a != nullptr) t->alloc_hint[t->alloc_next++ & 3u] = a;
    }
    if (write) {
      L.record.bytes_stored += n;
    } else {
      L.record.bytes_loaded += n;
    }
    note_request(t, site, p, n, write);
    if (a == nullptr) {
      if (checks) report(t, "memcheck", std::string("invalid __global__ ") + (write ? "write" : "read") + " of " +
                                            std::to_string(n) + " bytes (outside every live allocation)",
                         addr, cudaErrorIllegalAddress);
      return;
    }
    if (!checks) return;
    const std::size_t off = static_cast<std::size_t>(p - a->base);
    if (write) {
      mark_defined(a, off, n);
    } else {
      std::size_t bad = 0;
      if (!is_defined(a, off, n, &bad))
        report(t, "initcheck", "read of " + std::to_string(n) + " bytes of device memory never written since allocation",
               a->base + bad, cudaErrorLaunchFailure);
    }
    return;
  }
  if (!checks) return;
  std::size_t off = 0;
  if (Block* b = shared_block(t, addr, &off)) {
    check_shared(t, b, off, n, write, addr);
    return;
  }
  const char* args = static_cast<const char*>(L.args);
  if (p >= args && p + n <= args + L.args_bytes) return;  // kernel parameters
  if (p >= &__executable_start && p + n <= &_end) return;  // static data and constants
  if (p >= reinterpret_cast<const char*>(&threadIdx) && p + n <= reinterpret_cast<const char*>(&threadIdx + 1)) return;
  if (p >= reinterpret_cast<const char*>(&blockIdx) && p + n <= reinterpret_cast<const char*>(&blockIdx + 1)) return;
  if (p >= reinterpret_cast<const char*>(&blockDim) && p + n <= reinterpret_cast<const char*>(&blockDim + 1)) return;
  if (p >= reinterpret_cast<const char*>(&gridDim) && p + n <= reinterpret_cast<const char*>(&gridDim + 1)) return;
  if (is_pinned(p, n)) {
    if (write) {
      L.record.bytes_stored += n;
    } else {
      L.record.bytes_loaded += n;
    }
    note_request(t, site, p, n, write);
    return;
  }
  report(t, "memcheck",
         std::string("invalid ") + (write ? "write" : "read") + " of " + std::to_string(n) +
             " bytes: host memory (not device, shared, local or mapped pinned memory)",
         addr, cudaErrorIllegalAddress);
}

void on_atomic(const volatile void* addr, std::size_t n, const void* site = __builtin_return_address(0)) {
  Thread* t = tls_thread;
  if (t == nullptr) return;
  on_access(const_cast<const void*>(addr), n, false, site);
  if (tls_thread == nullptr) return;
  on_access(const_cast<const void*>(addr), n, true, site);
  if (in_device_region(const_cast<const void*>(addr))) ++t->block->launch->record.atomics;
}

}  // namespace

void flush_traffic(Launch& L) {
  TrafficLog& log = tl_traffic;
  std::sort(log.touches.begin(), log.touches.end());
  std::size_t i = 0;
  while (i < log.touches.size()) {
    const SectorTouch& s = log.touches[i];
    const bool new_request = i == 0 || !s.same_request(log.touches[i - 1]);
    std::uint32_t bytes = 0;  // of this sector, over the lanes of the request
    for (; i < log.touches.size() && log.touches[i].same_request(s) && log.touches[i].sector == s.sector; ++i)
      bytes |= log.touches[i].bytes;
    const auto distinct = static_cast<std::uint64_t>(__builtin_popcount(bytes));
    if (s.write) {
      L.record.store_requests += new_request;
      L.record.sectors_stored += 1;
      L.record.request_bytes_stored += distinct;
    } else {
      L.record.load_requests += new_request;
      L.record.sectors_loaded += 1;
      L.record.request_bytes_loaded += distinct;
    }
  }
  log.touches.clear();
  for (std::size_t tid : log.threads_seen) log.site_counts[tid].clear();
  log.threads_seen.clear();
}

void report(Thread* t, const char* checker, const std::string& what, const void* address, cudaError_t error) {
  Launch* L = t != nullptr ? t->block->launch : nullptr;
  std::string line = std::string(checker) + ": " + what;
  if (L != nullptr) line += ", kernel " + (L->record.kernel.empty() ? std::string("?") : L->record.kernel);
  line += ", " + describe_thread(t);
  if (address != nullptr) line += ", address " + hex(address);
  bool print = true;
  if (L != nullptr) {
    print = L->findings++ < kMaxFindingsPerLaunch;
    L->failed = true;
    if (L->error == cudaSuccess) L->error = error;
    abandon_block_of(t);
  }
  if (print) {
    {
      std::lock_guard<std::mutex> lock(g_findings_mutex);
      g_findings.push_back(line);
    }
    if (std::getenv("FUSEDLOSS_SIM_QUIET") == nullptr) std::fprintf(stderr, "[fusedloss emulated device] %s\n", line.c_str());
  }
}

}  // namespace internal

std::vector<std::string> findings() {
  std::lock_guard<std::mutex> lock(internal::g_findings_mutex);
  return internal::g_findings;
}
void clear_findings() {
  std::lock_guard<std::mutex> lock(internal::g_findings_mutex);
  internal::g_findings.clear();
}
bool checks_enabled() { return internal::g_checks.load(); }
void set_sector_accounting(bool on) { internal::g_sectors.store(on); }
bool sector_accounting() { return internal::g_sectors.load(); }
void set_checks_enabled(bool on) { internal::g_checks.store(on); }

}  // namespace fusedloss_sim

// ---- the instrumentation entry points ------------------------------------------------------------------
using fusedloss_sim::internal::on_access;
using fusedloss_sim::internal::on_atomic;

extern "C" {
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_vptr_update(void**, void*) {}
void __tsan_vptr_read(void**) {}

#define FUSEDLOSS_SIM_ACCESS(N)                                                        \
  void __tsan_read##N(void* a) { on_access(a, N, false); }                            \
  void __tsan_write##N(void* a) { on_access(a, N, true); }                            \
  void __tsan_unaligned_read##N(void* a) { on_access(a, N, false); }                  \
  void __tsan_unaligned_write##N(void* a) { on_access(a, N, true); }                  \
  void __tsan_volatile_read##N(void* a) { on_access(a, N, false); }                   \
  void __tsan_volatile_write##N(void* a) { on_access(a, N, true); }                   \
  void __tsan_unaligned_volatile_read##N(void* a) { on_access(a, N, false); }         \
  void __tsan_unaligned_volatile_write##N(void* a) { on_access(a, N, true); }
FUSEDLOSS_SIM_ACCESS(1)
FUSEDLOSS_SIM_ACCESS(2)
FUSEDLOSS_SIM_ACCESS(4)
FUSEDLOSS_SIM_ACCESS(8)
FUSEDLOSS_SIM_ACCESS(16)
#undef FUSEDLOSS_SIM_ACCESS
void __tsan_read_range(void* a, unsigned long n) { on_access(a, n, false); }
void __tsan_write_range(void* a, unsigned long n) { on_access(a, n, true); }

// Atomics: performed here (sequentially consistent), after the checks.
#define FUSEDLOSS_SIM_ATOMIC(N, T)                                                                          \
  T __tsan_atomic##N##_load(const volatile T* a, int) {                                                     \
    on_access(const_cast<const T*>(a), sizeof(T), false);                                                   \
    return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                                            \
  }                                                                                                         \
  void __tsan_atomic##N##_store(volatile T* a, T v, int) {                                                  \
    on_access(const_cast<const T*>(a), sizeof(T), true);                                                    \
    __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                               \
  }                                                                                                         \
  T __tsan_atomic##N##_exchange(volatile T* a, T v, int) {                                                  \
    on_atomic(a, sizeof(T));                                                                                \
    return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);                                                     \
  }                                                                                                         \
  T __tsan_atomic##N##_fetch_add(volatile T* a, T v, int) {                                                 \
    on_atomic(a, sizeof(T));                                                                                \
    return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);                                                      \
  }                                                                                                         \
  T __tsan_atomic##N##_fetch_sub(volatile T* a, T v, int) {                                                 \
    on_atomic(a, sizeof(T));                                                                                \
    return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST);                                                      \
  }                                                                                                         \
  T __tsan_atomic##N##_fetch_and(volatile T* a, T v, int) {                                                 \
    on_atomic(a, sizeof(T));                                                                                \
    return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST);                                                      \
  }                                                                                                         \
  T __tsan_atomic##N##_fetch_or(volatile T* a, T v, int) {                                                  \
    on_atomic(a, sizeof(T));                                                                                \
    return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST);                                                       \
  }                                                                                                         \
  T __tsan_atomic##N##_fetch_xor(volatile T* a, T v, int) {                                                 \
    on_atomic(a, sizeof(T));                                                                                \
    return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST);                                                      \
  }                                                                                                         \
  T __tsan_atomic##N##_fetch_nand(volatile T* a, T v, int) {                                                \
    on_atomic(a, sizeof(T));                                                                                \
    return __atomic_fetch_nand(a, v, __ATOMIC_SEQ_CST);                                                     \
  }                                                                                                         \
  int __tsan_atomic##N##_compare_exchange_strong(volatile T* a, T* c, T v, int, int) {                      \
    on_atomic(a, sizeof(T));                                                                                \
    return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                \
  }                                                                                                         \
  int __tsan_atomic##N##_compare_exchange_weak(volatile T* a, T* c, T v, int, int) {                        \
    on_atomic(a, sizeof(T));                                                                                \
    return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                \
  }                                                                                                         \
  T __tsan_atomic##N##_compare_exchange_val(volatile T* a, T c, T v, int, int) {                            \
    on_atomic(a, sizeof(T));                                                                                \
    __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                      \
    return c;                                                                                               \
  }
FUSEDLOSS_SIM_ATOMIC(8, char)
FUSEDLOSS_SIM_ATOMIC(16, short)
FUSEDLOSS_SIM_ATOMIC(32, int)
FUSEDLOSS_SIM_ATOMIC(64, long)
#undef FUSEDLOSS_SIM_ATOMIC
void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
void __tsan_atomic_signal_fence(int) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
}
