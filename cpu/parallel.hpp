// fusedloss CPU path — a tiny deterministic parallel-for over fixed-size chunks.
//
// Determinism rule of the CPU path: the work is cut into chunks whose boundaries depend only
// on the problem size, each chunk writes its own outputs and its own partial result slot, and
// the caller combines the partials in chunk order. Which thread runs which chunk (chunks are
// handed out dynamically through an atomic counter) therefore never changes a result, and
// neither does the number of threads.
//
// The helpers come from a persistent process-wide pool (cpu/thread_pool.hpp): starting threads
// per call cost as much as a chunk, which left small problems no faster on two threads than on
// one. The calling thread always participates and drains every chunk that is left; a helper that
// has not started by then is withdrawn, not waited for, so a call never idles for a scheduler
// tick. Never throws: busy workers, or a thread that cannot be created, just mean fewer helpers.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "cpu/thread_pool.hpp"

namespace fusedloss {
namespace detail {
namespace cpu {

/// Number of chunks of `chunk` items needed to cover `count` items (count >= 0, chunk >= 1).
inline std::int64_t chunk_count(std::int64_t count, std::int64_t chunk) {
  return count <= 0 ? 0 : (count - 1) / chunk + 1;
}

/// Runs work for chunk indices 0 .. chunks-1 on at most min(threads, chunks) threads (the calling
/// thread included; inline when that is 1).
///
/// `make_worker()` is called once per participating thread, on that thread, and returns the
/// callable `worker(std::int64_t chunk)` that thread then uses for each chunk it takes; per-thread
/// scratch (e.g. a row buffer) lives in that callable. An exception thrown by make_worker or a
/// worker (e.g. std::bad_alloc for scratch) is caught; the remaining chunks are abandoned and the
/// function returns false. Returns true when every chunk ran. May be called from several threads at
/// once and from inside a worker (a nested call finds the pool busy and runs on fewer threads).
template <class MakeWorker>
bool parallel_for_chunks(std::int64_t chunks, int threads, const MakeWorker& make_worker) noexcept {
  if (chunks <= 0) return true;
  struct Job {
    const MakeWorker& make_worker;
    std::int64_t chunks;
    std::atomic<std::int64_t> next{0};
    std::atomic<bool> failed{false};

    static void drain(void* ctx) noexcept {
      Job& job = *static_cast<Job*>(ctx);
      try {
        auto worker = job.make_worker();
        for (;;) {
          if (job.failed.load(std::memory_order_relaxed)) return;
          const std::int64_t c = job.next.fetch_add(1, std::memory_order_relaxed);
          if (c >= job.chunks) return;
          worker(c);
        }
      } catch (...) {
        job.failed.store(true, std::memory_order_relaxed);
      }
    }
  };
  Job job{make_worker, chunks};
  const std::int64_t wanted = std::min<std::int64_t>(std::max(threads, 1), chunks);
  const int helpers = static_cast<int>(std::min<std::int64_t>(wanted - 1, kMaxPoolWorkers));
  run_with_helpers(helpers, PoolTask{&Job::drain, &job});
  return !job.failed.load(std::memory_order_relaxed);
}

}  // namespace cpu
}  // namespace detail
}  // namespace fusedloss
