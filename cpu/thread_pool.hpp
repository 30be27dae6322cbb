// fusedloss CPU path — the process-wide pool of helper threads behind parallel_for_chunks.
//
// Why a pool: starting a thread costs about as much as a 32768-element chunk, so a pool started
// per call gave small problems nothing from the second thread. Workers are started lazily, grow
// to the largest helper count asked for (at most hardware_concurrency() − 1, and kMaxWorkers),
// and live for the process. See cpu/thread_pool.cpp for the hand-off protocol.
#pragma once

namespace fusedloss {
namespace detail {
namespace cpu {

/// What every participating thread runs: fn(ctx), once per thread. fn must not throw.
struct PoolTask {
  void (*fn)(void* ctx) noexcept;
  void* ctx;
};

/// The most pool workers there ever are (64 threads with the caller): beyond that the loss loops
/// are bound by memory bandwidth, and the worker slots live in a fixed static array.
constexpr int kMaxPoolWorkers = 63;

/// Runs task on the calling thread and on up to `helpers` pool workers that are free now (starting
/// workers when the pool has fewer than wanted; busy workers or a thread that cannot be created just
/// mean fewer helpers). Returns once the calling thread's run returned and every worker that started
/// the task has finished it; a worker that had not started by then is withdrawn and never touches
/// the task, so the call never waits for a thread the OS has not scheduled. Safe to call from several
/// threads at once, from inside a task (nested), and in a forked child. Never allocates with
/// operator new, never throws.
void run_with_helpers(int helpers, PoolTask task) noexcept;

/// Number of pool worker threads alive in this process now (for tests).
int pool_worker_count() noexcept;

}  // namespace cpu
}  // namespace detail
}  // namespace fusedloss
