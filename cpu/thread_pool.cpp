// fusedloss CPU path — the helper thread pool (see cpu/thread_pool.hpp).
//
// Hand-off: every worker owns one slot, a 32-bit state word. A caller claims free slots (CAS),
// posts its task in them, runs the task itself, then closes each slot it posted:
//   Free → Claimed (caller) → Posted (caller) → Running (worker) → Done (worker) → Free (caller)
//                                      └── Free (caller withdraws a task the worker never started)
// The caller owns a slot from claim to release, so a worker can only ever run the task it was
// posted, and the caller only waits for a worker that is already running its task (at most the
// rest of one chunk) — never for one the OS has not scheduled: that one is withdrawn.
// Waiting: a worker spins kSpin after its last task (back-to-back calls find it awake; a woken
// futex sleeper takes tens of µs to run here) and then sleeps on the state word; the caller spins
// kSpin for a running worker's Done, then sleeps. A sleeper sets an Asleep flag in the word so the
// other side knows to FUTEX_WAKE it; without one nobody enters the kernel.
//
// Placement: a worker that starts a task on its caller's core moves itself off it (leave_cpu),
// since Linux tends to queue new and woken threads on the core of the thread that made them run.
//
// Lifetime: the pool is a constant-initialised static with a trivial destructor, so exit() runs no
// destructor that could join (or deadlock on) a worker, and LeakSanitizer sees no heap: slots are
// static, thread stacks are glibc's, and no operator new is ever called (so the memory accounting
// of tests/cpu/test_linear_ce_memory.cpp sees nothing either). Workers block all signals (they
// belong to the application's threads), are detached, and end with the process; like OpenMP's
// pool they need the library to stay loaded (Python never unloads extension modules). A forked
// child has none of them: a pthread_atfork child handler empties the pool, and the next call
// starts workers again.
#include "cpu/thread_pool.hpp"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <thread>

namespace fusedloss {
namespace detail {
namespace cpu {
namespace {

// How long either side spins before it sleeps. Measured on the 2-core VM, two 28 µs chunks per
// call: back to back, 1 thread 0.058 ms, 2 threads 0.0295 ms with a 20 or 50 µs spin; a worker
// woken from the futex instead joins ~22 µs late. 50 µs also spans a short serial step between
// two parallel passes (cpu/rowwise.cpp's split path). The spin yields every few µs, so a core
// shared with other processes (ctest -j2 on 2 cores) loses little to it.
constexpr std::chrono::microseconds kSpin{50};

// State word: the phase in the low bits, plus who sleeps on the word.
constexpr std::uint32_t kFree = 0, kClaimed = 1, kPosted = 2, kRunning = 3, kDone = 4, kPhaseMask = 7;
constexpr std::uint32_t kWorkerAsleep = 8;   // the worker waits (any phase but Posted/Running)
constexpr std::uint32_t kCallerAsleep = 16;  // the caller waits for Running → Done

struct alignas(64) Slot {  // one cache line each: callers and workers of other slots don't share it
  std::atomic<std::uint32_t> state{kFree};
  const PoolTask* task = nullptr;  // written by the owning caller before Posted, read after Running
  int caller_cpu = -1;             // the core the caller posted from (same rules as task)
  cpu_set_t allowed;               // the worker's affinity: its creator's (written before it starts)
};

struct Pool {
  Slot slots[kMaxPoolWorkers];
  std::atomic<int> workers{0};         // slots [0, workers) have a live thread
  std::atomic<bool> growing{false};    // one caller at a time starts threads; others don't wait
  bool fork_handler_registered = false;  // written only by the grower
};
Pool g_pool;  // constant-initialised, trivially destructible: never torn down (see above)

std::uint32_t phase(std::uint32_t state) { return state & kPhaseMask; }

void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected) {
  // Returns at once when the word no longer holds `expected`; spurious returns are re-checked.
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}

void futex_wake(std::atomic<std::uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

/// Spins (with a pause) until done() or kSpin has passed; returns done()'s last value. Yields
/// every few µs: on a busy machine the thread we wait for may share our core (a woken worker is
/// often placed on its waker's), and a plain spin would hold that core for the whole kSpin.
template <class Done>
bool spin_until(const Done& done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 32; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return done();
    sched_yield();
  }
}

/// Sleeps on `word` while its phase is not `until`, after setting `flag` so that whoever changes
/// the phase wakes us. Returns the state seen with the wanted phase.
std::uint32_t sleep_until_phase(std::atomic<std::uint32_t>& word, std::uint32_t until, std::uint32_t flag) {
  for (;;) {
    std::uint32_t s = word.load(std::memory_order_acquire);
    if (phase(s) == until) return s;
    if ((s & flag) == 0 && !word.compare_exchange_weak(s, s | flag, std::memory_order_relaxed)) continue;
    futex_wait(word, s | flag);
  }
}

/// Moves the calling worker off `cpu` when it runs there, leaving its allowed set as it was.
/// Why: Linux queues a new thread on its creator's core and a woken one often on its waker's
/// (measured on the 2-core VM: a worker stayed on the caller's core for whole runs of 20 calls
/// while the other core idled), and a worker sharing the caller's core only time-shares with it.
/// Narrowing the affinity for a moment migrates it now; restoring it keeps it where it landed.
void leave_cpu(int cpu, const cpu_set_t& allowed) {
  if (cpu < 0 || cpu >= CPU_SETSIZE || sched_getcpu() != cpu || !CPU_ISSET(cpu, &allowed) || CPU_COUNT(&allowed) < 2)
    return;
  cpu_set_t others = allowed;
  CPU_CLR(cpu, &others);
  if (sched_setaffinity(0, sizeof others, &others) == 0) sched_setaffinity(0, sizeof allowed, &allowed);
}

void* worker_main(void* arg) {
  Slot& slot = *static_cast<Slot*>(arg);
  pthread_setname_np(pthread_self(), "fusedloss-cpu");  // what top -H and debuggers show
  const cpu_set_t allowed = slot.allowed;
  if (CPU_COUNT(&allowed) > 0) sched_setaffinity(0, sizeof allowed, &allowed);  // started off-core
  for (;;) {
    std::uint32_t s = slot.state.load(std::memory_order_acquire);
    if (phase(s) != kPosted) {
      if (!spin_until([&] { return phase(slot.state.load(std::memory_order_relaxed)) == kPosted; }))
        sleep_until_phase(slot.state, kPosted, kWorkerAsleep);
      continue;
    }
    // Posted never carries kWorkerAsleep (posting clears it); a failed CAS means withdrawn.
    if (!slot.state.compare_exchange_strong(s, kRunning, std::memory_order_acquire)) continue;
    const PoolTask* task = slot.task;
    leave_cpu(slot.caller_cpu, allowed);
    task->fn(task->ctx);
    if (slot.state.exchange(kDone, std::memory_order_acq_rel) & kCallerAsleep) futex_wake(slot.state);
  }
  return nullptr;
}

/// The child of fork() has only the forking thread: forget the parent's workers.
void reset_after_fork() {
  for (Slot& s : g_pool.slots) {
    s.state.store(kFree, std::memory_order_relaxed);
    s.task = nullptr;
  }
  g_pool.workers.store(0, std::memory_order_relaxed);
  g_pool.growing.store(false, std::memory_order_relaxed);
}

int max_workers() {
  const unsigned hw = std::thread::hardware_concurrency();  // 0: unknown — trust the caller
  if (hw == 0) return kMaxPoolWorkers;
  // At least one worker, so the hand-off also runs (and is tested) on a 1-CPU machine.
  return std::clamp(static_cast<int>(std::min<unsigned>(hw, INT_MAX)) - 1, 1, kMaxPoolWorkers);
}

/// Starts up to `want` new workers, each with its slot already Claimed for the caller; writes their
/// slot indices to `out` and returns how many. Does nothing while another caller is starting some.
int grow(int want, int* out) {
  static const int cap = max_workers();
  if (g_pool.workers.load(std::memory_order_relaxed) >= cap) return 0;  // the usual case once grown
  if (g_pool.growing.exchange(true, std::memory_order_acquire)) return 0;
  if (!g_pool.fork_handler_registered)
    g_pool.fork_handler_registered = pthread_atfork(nullptr, nullptr, reset_after_fork) == 0;
  int got = 0;
  if (g_pool.fork_handler_registered) {  // without it a forked child could not start afresh
    int live = g_pool.workers.load(std::memory_order_relaxed);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);  // the workers inherit a mask that blocks every signal
    // Start the workers off this core (they restore the creator's affinity when they start): a
    // new thread queued behind its busy creator may wait milliseconds to run (see leave_cpu).
    pthread_attr_t attr;
    const bool have_attr = pthread_attr_init(&attr) == 0;
    cpu_set_t others;
    const int cpu = sched_getcpu();
    CPU_ZERO(&others);
    if (sched_getaffinity(0, sizeof others, &others) != 0) CPU_ZERO(&others);
    const cpu_set_t allowed = others;
    if (cpu >= 0 && cpu < CPU_SETSIZE) CPU_CLR(cpu, &others);
    if (have_attr && CPU_COUNT(&others) > 0) pthread_attr_setaffinity_np(&attr, sizeof others, &others);
    while (got < want && live < cap) {
      Slot& slot = g_pool.slots[live];
      slot.state.store(kClaimed, std::memory_order_relaxed);
      slot.allowed = allowed;
      pthread_t thread;
      if (pthread_create(&thread, have_attr ? &attr : nullptr, worker_main, &slot) != 0) {
        slot.state.store(kFree, std::memory_order_relaxed);
        break;  // no more threads now: carry on with the workers there are
      }
      pthread_detach(thread);
      out[got++] = live++;
      g_pool.workers.store(live, std::memory_order_release);
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (have_attr) pthread_attr_destroy(&attr);
  }
  g_pool.growing.store(false, std::memory_order_release);
  return got;
}

}  // namespace

void run_with_helpers(int helpers, PoolTask task) noexcept {
  int mine[kMaxPoolWorkers];
  int n = 0;
  helpers = std::min(helpers, kMaxPoolWorkers);
  if (helpers > 0) {
    // 1. Claim free workers (keeping a sleeper's flag, so posting wakes it).
    const int live = g_pool.workers.load(std::memory_order_acquire);
    for (int i = 0; i < live && n < helpers; ++i) {
      std::atomic<std::uint32_t>& word = g_pool.slots[i].state;
      std::uint32_t s = word.load(std::memory_order_relaxed);
      while (phase(s) == kFree) {
        if (word.compare_exchange_weak(s, kClaimed | (s & kWorkerAsleep), std::memory_order_acquire)) {
          mine[n++] = i;
          break;
        }
      }
    }
    // 2. Too few free: start more (the first calls; later only when a larger count is asked for).
    if (n < helpers) n += grow(helpers - n, mine + n);
    // 3. Post.
    const int cpu = sched_getcpu();
    for (int k = 0; k < n; ++k) {
      Slot& slot = g_pool.slots[mine[k]];
      slot.task = &task;
      slot.caller_cpu = cpu;
      if (slot.state.exchange(kPosted, std::memory_order_release) & kWorkerAsleep) futex_wake(slot.state);
    }
  }
  task.fn(task.ctx);
  // 4. Close: withdraw what no worker started, wait for the workers that did, release the slots.
  for (int k = 0; k < n; ++k) {
    std::atomic<std::uint32_t>& word = g_pool.slots[mine[k]].state;
    std::uint32_t s = kPosted;
    if (word.compare_exchange_strong(s, kFree, std::memory_order_relaxed)) continue;
    if (!spin_until([&] { return phase(word.load(std::memory_order_acquire)) == kDone; }))
      sleep_until_phase(word, kDone, kCallerAsleep);
    s = word.load(std::memory_order_acquire);  // Done, perhaps with the worker asleep on it
    while (!word.compare_exchange_weak(s, kFree | (s & kWorkerAsleep), std::memory_order_relaxed)) {
    }
  }
}

int pool_worker_count() noexcept { return g_pool.workers.load(std::memory_order_acquire); }

}  // namespace cpu
}  // namespace detail
}  // namespace fusedloss
