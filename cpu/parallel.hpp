// fusedloss CPU path — a tiny deterministic parallel-for over fixed-size chunks.
//
// Determinism rule of the CPU path: the work is cut into chunks whose boundaries depend only
// on the problem size, each chunk writes its own outputs and its own partial result slot, and
// the caller combines the partials in chunk order. Which thread runs which chunk (chunks are
// handed out dynamically through an atomic counter) therefore never changes a result, and
// neither does the number of threads.
//
// No global state: every call creates its workers and joins them before returning. Never
// throws: a thread that cannot be created (std::system_error) just means fewer workers — the
// calling thread always participates and drains every chunk that is left.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace fusedloss {
namespace detail {
namespace cpu {

/// Number of chunks of `chunk` items needed to cover `count` items (count >= 0, chunk >= 1).
inline std::int64_t chunk_count(std::int64_t count, std::int64_t chunk) {
  return count <= 0 ? 0 : (count - 1) / chunk + 1;
}

/// Runs work for chunk indices 0 .. chunks-1 on min(threads, chunks) threads (the calling
/// thread included; inline when that is 1).
///
/// `make_worker()` is called once per participating thread, on that thread, and returns the
/// callable `worker(std::int64_t chunk)` that thread then uses for each chunk it takes; per-thread
/// scratch (e.g. a row buffer) lives in that callable. An exception thrown by make_worker or a
/// worker (e.g. std::bad_alloc for scratch) is caught; the remaining chunks are abandoned and the
/// function returns false. Returns true when every chunk ran.
template <class MakeWorker>
bool parallel_for_chunks(std::int64_t chunks, int threads, const MakeWorker& make_worker) noexcept {
  if (chunks <= 0) return true;
  std::atomic<std::int64_t> next{0};
  std::atomic<bool> failed{false};
  auto drain = [&]() noexcept {
    try {
      auto worker = make_worker();
      for (;;) {
        if (failed.load(std::memory_order_relaxed)) return;
        const std::int64_t c = next.fetch_add(1, std::memory_order_relaxed);
        if (c >= chunks) return;
        worker(c);
      }
    } catch (...) {
      failed.store(true, std::memory_order_relaxed);
    }
  };

  const std::int64_t wanted = std::min<std::int64_t>(std::max(threads, 1), chunks);
  std::vector<std::thread> pool;
  if (wanted > 1) {
    try {
      pool.reserve(static_cast<std::size_t>(wanted - 1));
      for (std::int64_t t = 1; t < wanted; ++t) pool.emplace_back(drain);
    } catch (...) {
      // std::system_error (no more threads) or std::bad_alloc: carry on with the workers we have.
    }
  }
  drain();
  for (std::thread& t : pool) t.join();  // join() synchronises: the workers' writes are visible
  return !failed.load(std::memory_order_relaxed);
}

}  // namespace cpu
}  // namespace detail
}  // namespace fusedloss
