// fusedloss CPU path — a tiny deterministic parallel-for over fixed-size chunks.
//
// Determinism rule of the CPU path: the work is cut into chunks whose boundaries depend only
// on the problem size, each chunk writes its own outputs and its own partial result slot, and
// the caller combines the partials in chunk order. Which thread runs which chunk (chunks are
// handed out dynamically through an atomic counter) therefore never changes a result, and
// neither does the number of threads.
//
// No global state: every call starts its helper threads, and returns once every chunk has run
// and no helper is still inside the call. A helper the OS has not scheduled by then (a busy
// machine) is not waited for: it finds the call closed and exits without touching it, so a
// call never idles for a scheduler tick. Never throws: a thread that cannot be created
// (std::system_error) just means fewer workers — the calling thread always participates and
// drains every chunk that is left.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
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
  // What a late helper may still touch after the call returned lives here, shared with it.
  struct Shared {
    std::atomic<bool> closed{false};
    std::atomic<int> inside{0};  // helpers between entering and leaving the call
    std::mutex m;
    std::condition_variable left;
  };
  std::shared_ptr<Shared> shared;
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
  if (wanted > 1) {
    try {
      shared = std::make_shared<Shared>();
      for (std::int64_t t = 1; t < wanted; ++t) {
        std::thread([shared, &drain] {
          // Enter, then look again: a helper that enters after the call closed leaves untouched.
          shared->inside.fetch_add(1);
          if (!shared->closed.load()) drain();
          std::lock_guard<std::mutex> lock(shared->m);
          shared->inside.fetch_sub(1);
          shared->left.notify_all();
        }).detach();
      }
    } catch (...) {
      // std::system_error (no more threads) or std::bad_alloc: carry on with the workers we have.
    }
  }
  drain();
  if (shared != nullptr) {
    // Close the call, then wait for the helpers that entered before it closed (the mutex makes
    // their writes visible here).
    shared->closed.store(true);
    std::unique_lock<std::mutex> lock(shared->m);
    shared->left.wait(lock, [&] { return shared->inside.load() == 0; });
  }
  return !failed.load(std::memory_order_relaxed);
}

}  // namespace cpu
}  // namespace detail
}  // namespace fusedloss
