// parallel_for_chunks (cpu/parallel.hpp) and the worker pool under it (cpu/thread_pool.cpp): every
// chunk runs exactly once for any (chunks, threads), make_worker once per participating thread and
// on that thread, exceptions become `false`, and the pool's workers are reused across calls, shared
// by concurrent callers, safe to re-enter from a worker, and started afresh in a forked child.
#include <gtest/gtest.h>

#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>
#include <new>

#include "cpu/parallel.hpp"

namespace {

using fusedloss::detail::cpu::kMaxPoolWorkers;
using fusedloss::detail::cpu::parallel_for_chunks;
using fusedloss::detail::cpu::pool_worker_count;

long tid() { return static_cast<long>(syscall(SYS_gettid)); }  // kernel ids: not reused at once

/// The pool's size limit on this machine (cpu/thread_pool.cpp: hardware_concurrency() − 1, at least 1).
int pool_cap() {
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? kMaxPoolWorkers : std::clamp(static_cast<int>(hw) - 1, 1, kMaxPoolWorkers);
}

/// One call's record: how often each chunk ran, and which threads made a worker.
struct Record {
  std::vector<std::atomic<int>> runs;
  std::mutex m;
  std::vector<long> makers;
  std::atomic<int> wrong_thread{0};  // a worker used on a thread other than the one that made it

  explicit Record(std::int64_t chunks) : runs(static_cast<std::size_t>(chunks)) {}

  /// The make_worker of a call whose worker(c) also runs extra(c).
  template <class Extra>
  auto maker(Extra& extra) {
    return [this, &extra] {
      const long me = tid();
      {
        std::lock_guard<std::mutex> lock(m);
        makers.push_back(me);
      }
      return [this, me, &extra](std::int64_t c) {
        if (tid() != me) ++wrong_thread;
        ++runs[static_cast<std::size_t>(c)];
        extra(c);
      };
    };
  }
  auto maker() {
    static const auto nothing = [](std::int64_t) {};
    return maker(nothing);
  }

  ::testing::AssertionResult each_chunk_once() const {
    for (std::size_t c = 0; c < runs.size(); ++c)
      if (runs[c].load() != 1) return ::testing::AssertionFailure() << "chunk " << c << " ran " << runs[c].load() << " times";
    return ::testing::AssertionSuccess();
  }
  ::testing::AssertionResult one_worker_per_thread(std::int64_t most) const {
    const std::set<long> distinct(makers.begin(), makers.end());
    if (distinct.size() != makers.size()) return ::testing::AssertionFailure() << "a thread made two workers";
    if (makers.empty() || static_cast<std::int64_t>(makers.size()) > most)
      return ::testing::AssertionFailure() << makers.size() << " threads took part, expected 1.." << most;
    if (wrong_thread.load() != 0) return ::testing::AssertionFailure() << "a worker ran on another thread";
    return ::testing::AssertionSuccess();
  }
};

/// Chunk 0 waits (up to 10 s) until another thread has started a chunk: a call that runs it proves
/// that a helper took part, without depending on how fast the helper was scheduled.
struct Rendezvous {
  std::atomic<long> holder{0};
  std::atomic<bool> other_started{false};

  void operator()(std::int64_t c) {
    if (c == 0) {
      holder = tid();
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (!other_started.load() && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    } else if (tid() != holder.load()) {
      other_started = true;
    }
  }
};

TEST(CpuParallel, EveryChunkRunsOnceForAnyChunkAndThreadCount) {
  for (std::int64_t chunks : {1, 2, 3, 5, 17, 64, 1000}) {
    for (int threads : {-3, 0, 1, 2, 3, 4, 8, 64, 1000}) {  // 64 and 1000: more than the machine has
      SCOPED_TRACE(testing::Message() << "chunks=" << chunks << " threads=" << threads);
      Record r(chunks);
      ASSERT_TRUE(parallel_for_chunks(chunks, threads, r.maker()));
      EXPECT_TRUE(r.each_chunk_once());
      EXPECT_TRUE(r.one_worker_per_thread(std::min<std::int64_t>(std::max(threads, 1), chunks)));
    }
  }
  EXPECT_LE(pool_worker_count(), pool_cap());
}

TEST(CpuParallel, NoChunksCallsNothing) {
  int made = 0;
  for (std::int64_t chunks : {0, -5})
    EXPECT_TRUE(parallel_for_chunks(chunks, 4, [&] {
      ++made;
      return [](std::int64_t) {};
    }));
  EXPECT_EQ(made, 0);
}

TEST(CpuParallel, ExceptionInMakeWorkerOrWorkerReturnsFalse) {
  // Every make_worker throws (std::bad_alloc, as scratch allocation would): nothing runs.
  EXPECT_FALSE(parallel_for_chunks(64, 4, [&]() -> std::function<void(std::int64_t)> { throw std::bad_alloc(); }));
  // Only a helper's make_worker throws: false exactly when a helper took part; no chunk runs twice.
  for (int rep = 0; rep < 20; ++rep) {
    const long caller = tid();
    std::atomic<bool> helper_came{false};
    std::vector<std::atomic<int>> runs(64);
    const bool ok = parallel_for_chunks(64, 2, [&] {
      if (tid() != caller) {
        helper_came = true;
        throw std::runtime_error("helper scratch");
      }
      return [&](std::int64_t c) { ++runs[static_cast<std::size_t>(c)]; };
    });
    EXPECT_EQ(ok, !helper_came.load());
    for (auto& n : runs) {
      EXPECT_LE(n.load(), 1);
      if (ok) {
        EXPECT_EQ(n.load(), 1);
      }
    }
  }
  // A worker throws on one chunk: false, the rest abandoned, nothing twice; the pool still works.
  Record r(1000);
  const auto throw_on_7 = [](std::int64_t c) {
    if (c == 7) throw std::runtime_error("chunk 7");
  };
  EXPECT_FALSE(parallel_for_chunks(1000, 3, r.maker(throw_on_7)));
  for (const auto& n : r.runs) EXPECT_LE(n.load(), 1);
  EXPECT_GE(r.runs[7].load(), 1);
  Record after(100);
  EXPECT_TRUE(parallel_for_chunks(100, 3, after.maker()));
  EXPECT_TRUE(after.each_chunk_once());
}

TEST(CpuParallel, AHelperFromThePoolTakesPart) {
  Record r(16);
  Rendezvous meet;
  ASSERT_TRUE(parallel_for_chunks(16, 2, r.maker(meet)));
  EXPECT_TRUE(r.each_chunk_once());
  EXPECT_TRUE(meet.other_started.load()) << "no helper joined within 10 s";
  EXPECT_GE(pool_worker_count(), 1);
}

TEST(CpuParallel, BackToBackCallsReuseThePoolsThreads) {
  std::set<long> threads_seen;
  for (int call = 0; call < 2000; ++call) {
    const std::int64_t chunks = 1 + call % 9;
    Record r(chunks);
    ASSERT_TRUE(parallel_for_chunks(chunks, 1 + call % 4, r.maker()));
    ASSERT_TRUE(r.each_chunk_once()) << "call " << call;
    ASSERT_TRUE(r.one_worker_per_thread(chunks)) << "call " << call;
    threads_seen.insert(r.makers.begin(), r.makers.end());
  }
  // A thread started per call would show up as up to 2000 kernel thread ids.
  EXPECT_LE(static_cast<int>(threads_seen.size()), 1 + pool_worker_count());
  EXPECT_LE(pool_worker_count(), pool_cap());
}

TEST(CpuParallel, ConcurrentCallersEachGetTheirOwnJob) {
  std::atomic<int> failures{0};
  std::vector<std::thread> callers;
  for (int u = 0; u < 4; ++u) {
    callers.emplace_back([u, &failures] {
      for (int call = 0; call < 300; ++call) {
        const std::int64_t chunks = 1 + (call * 7 + u * 13) % 50;
        const int threads = 2 + (call + u) % 7;
        Record r(chunks);
        if (!parallel_for_chunks(chunks, threads, r.maker()) || !r.each_chunk_once() ||
            !r.one_worker_per_thread(std::min<std::int64_t>(threads, chunks)))
          ++failures;
      }
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST(CpuParallel, NestedCallFromAWorkerDoesNotDeadlock) {
  constexpr std::int64_t kOuter = 8, kInner = 16;
  std::vector<std::atomic<int>> runs(kOuter * kInner);
  std::atomic<int> inner_failed{0};
  std::atomic<bool> nested_on_helper{false};
  const long caller = tid();
  Rendezvous meet;  // makes sure a pool worker runs some of the outer chunks
  const auto nested = [&](std::int64_t outer) {
    meet(outer);
    if (tid() != caller) nested_on_helper = true;
    const bool ok = parallel_for_chunks(kInner, 4, [&] {
      return [&, outer](std::int64_t inner) { ++runs[static_cast<std::size_t>(outer * kInner + inner)]; };
    });
    if (!ok) ++inner_failed;
  };
  Record r(kOuter);
  ASSERT_TRUE(parallel_for_chunks(kOuter, 4, r.maker(nested)));
  EXPECT_TRUE(r.each_chunk_once());
  EXPECT_EQ(inner_failed.load(), 0);
  for (auto& n : runs) EXPECT_EQ(n.load(), 1);
  EXPECT_TRUE(nested_on_helper.load()) << "no nested call ran on a pool worker";
}

TEST(CpuParallel, ForkedChildStartsItsOwnWorkers) {
  {  // the parent has live workers when it forks
    Record r(16);
    Rendezvous meet;
    ASSERT_TRUE(parallel_for_chunks(16, 2, r.maker(meet)));
    ASSERT_TRUE(meet.other_started.load());
  }
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    alarm(60);  // a hang fails the test instead of stalling it
    int code = 0;
    Record r(16);
    Rendezvous meet;  // a helper must join: the parent's workers do not exist here
    if (!parallel_for_chunks(16, 2, r.maker(meet)) || !r.each_chunk_once()) code = 1;
    if (!meet.other_started.load()) code = 2;
    for (int call = 0; call < 200 && code == 0; ++call) {
      Record b(5);
      if (!parallel_for_chunks(5, 3, b.maker()) || !b.each_chunk_once()) code = 3;
    }
    _exit(code);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: chunks wrong, 2: no helper joined, 3: back-to-back calls failed";
  Record r(32);  // and the parent's pool is untouched
  EXPECT_TRUE(parallel_for_chunks(32, 2, r.maker()));
  EXPECT_TRUE(r.each_chunk_once());
}

}  // namespace
