// fusedloss emulated device — the engine: every CUDA thread a fiber (Boost.Context), one block (or
// one cluster of blocks) live at a time, threads switched only where CUDA threads synchronise
// (barriers, warp shuffles/votes, cluster barriers, exit). The order in which blocks and ready
// threads run follows the chosen Schedule; a result that changes with it depends on an order
// the hardware does not promise either.
#include <boost/context/fiber.hpp>
#include <boost/context/protected_fixedsize_stack.hpp>
#include <cxxabi.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <random>

#include "fusedloss_sim/device.hpp"
#include "internal.hpp"

namespace ctx = boost::context;

thread_local uint3 threadIdx{0, 0, 0};
thread_local uint3 blockIdx{0, 0, 0};
thread_local uint3 blockDim{1, 1, 1};
thread_local uint3 gridDim{1, 1, 1};

namespace fusedloss_sim {
namespace internal {

thread_local Thread* tls_thread = nullptr;

namespace {

constexpr std::size_t kStackBytes = 128 * 1024;

/// Thrown inside an abandoned thread's fiber at its next switch: unwinds the kernel's frames.
struct AbortThread {};

/// Boost.Context stack allocator that remembers where the stack is (the checkers accept a
/// thread's accesses to its own stack).
class RecordingStack {
 public:
  explicit RecordingStack(Worker* w) : w_(w) {}
  ctx::stack_context allocate();
  void deallocate(ctx::stack_context& sc) { inner_.deallocate(sc); }

 private:
  Worker* w_;
  ctx::protected_fixedsize_stack inner_{kStackBytes};
};

}  // namespace

struct Worker {
  ctx::fiber self;  ///< resumes the worker (held by the scheduler)
  ctx::fiber back;  ///< returns to the scheduler (held inside the worker)
  Thread* thread = nullptr;
  const char* stack_lo = nullptr;
  const char* stack_hi = nullptr;
};

namespace {

ctx::stack_context RecordingStack::allocate() {
  ctx::stack_context sc = inner_.allocate();
  w_->stack_hi = static_cast<const char*>(sc.sp);
  w_->stack_lo = static_cast<const char*>(sc.sp) - sc.size;
  return sc;
}

/// Ready threads, taken in the schedule's order.
class ReadyQueue {
 public:
  void reset(Schedule order, std::uint64_t seed, int warps) {
    order_ = order;
    fifo_.clear();
    head_ = 0;
    rng_.seed(seed);
    per_warp_.assign(static_cast<std::size_t>(warps), {});
    warp_cursor_ = 0;
    size_ = 0;
  }
  void push(Thread* t, int global_warp) {
    ++size_;
    if (order_ == Schedule::WarpGreedy) {
      per_warp_[static_cast<std::size_t>(global_warp)].push_back(t);
    } else {
      fifo_.push_back(t);
    }
  }
  Thread* pop() {
    if (size_ == 0) return nullptr;
    --size_;
    if (order_ == Schedule::WarpGreedy) {
      // Stay on the current warp while it has ready lanes: a warp runs until all of it blocks.
      const std::size_t n = per_warp_.size();
      for (std::size_t k = 0; k < n; ++k) {
        auto& q = per_warp_[(warp_cursor_ + k) % n];
        if (!q.empty()) {
          warp_cursor_ = (warp_cursor_ + k) % n;
          Thread* t = q.front();
          q.pop_front();
          return t;
        }
      }
      return nullptr;
    }
    if (order_ == Schedule::Random) {
      std::uniform_int_distribution<std::size_t> pick(head_, fifo_.size() - 1);
      std::swap(fifo_[head_], fifo_[pick(rng_)]);
    }
    Thread* t = fifo_[head_++];
    if (head_ > 4096 && head_ * 2 > fifo_.size()) {
      fifo_.erase(fifo_.begin(), fifo_.begin() + static_cast<long>(head_));
      head_ = 0;
    }
    return t;
  }

 private:
  Schedule order_ = Schedule::RoundRobin;
  std::vector<Thread*> fifo_;
  std::size_t head_ = 0;
  std::vector<std::deque<Thread*>> per_warp_;
  std::size_t warp_cursor_ = 0;
  std::size_t size_ = 0;
  std::mt19937_64 rng_;
};

/// The emulated device's execution state of one OS thread.
struct Engine {
  std::vector<std::unique_ptr<Worker>> workers;
  Cluster cluster;
  Block blocks[kMaxClusterBlocks];
  std::vector<unsigned char> arenas;     ///< kMaxClusterBlocks × kSharedPerBlock
  std::vector<ShadowCell> shadows;       ///< one cell per arena byte
  ReadyQueue ready;
  Schedule order = Schedule::RoundRobin;
  Launch* launch = nullptr;

  Engine() : arenas(kMaxClusterBlocks * kSharedPerBlock), shadows(kMaxClusterBlocks * kSharedPerBlock) {
    for (int r = 0; r < kMaxClusterBlocks; ++r) {
      blocks[r].arena = arenas.data() + static_cast<std::size_t>(r) * kSharedPerBlock;
      blocks[r].shadow = shadows.data() + static_cast<std::size_t>(r) * kSharedPerBlock;
    }
  }
};

/// Engines outlive the OS threads that used them: a finished thread's engine (fibers, stacks)
/// serves the next thread instead of being torn down with suspended fibers in it.
std::mutex g_engine_mutex;
std::vector<Engine*> g_free_engines;

struct EngineHandle {
  Engine* engine = nullptr;
  ~EngineHandle() {
    if (engine != nullptr) {
      std::lock_guard<std::mutex> lock(g_engine_mutex);
      g_free_engines.push_back(engine);
    }
  }
};
thread_local EngineHandle tls_engine;

Engine& engine() {
  if (tls_engine.engine == nullptr) {
    std::lock_guard<std::mutex> lock(g_engine_mutex);
    if (!g_free_engines.empty()) {
      tls_engine.engine = g_free_engines.back();
      g_free_engines.pop_back();
    } else {
      tls_engine.engine = new Engine();
    }
  }
  return *tls_engine.engine;
}

int global_warp(const Thread* t) { return static_cast<int>(t->block->rank) * (kMaxBlockThreads / 32) + t->warp; }

void make_ready(Engine& E, Thread* t) {
  t->state = ThreadState::Ready;
  E.ready.push(t, global_warp(t));
}

/// Called inside a thread's fiber: back to the scheduler until the thread is made ready again.
void suspend(Thread* t) {
  Worker* w = t->worker;
  tls_thread = nullptr;
  w->back = std::move(w->back).resume();
  tls_thread = t;
  if (t->abort) throw AbortThread{};
}

bool same_site(const void* a, const void* b) {
  return a == b || (a != nullptr && b != nullptr && std::strcmp(static_cast<const char*>(a), static_cast<const char*>(b)) == 0);
}
const char* site_text(const void* s) { return s != nullptr ? static_cast<const char*>(s) : "?"; }

void release_block_barrier(Engine& E, Block* b, Thread* self) {
  ++b->epoch;
  b->arrived = 0;
  b->count_result = b->count_sum;
  b->count_sum = 0;
  const bool reversed = E.order == Schedule::Reversed;
  for (int k = 0; k < b->threads; ++k) {
    Thread* t = &b->thread[static_cast<std::size_t>(reversed ? b->threads - 1 - k : k)];
    if (t->state == ThreadState::Barrier && t != self) make_ready(E, t);
  }
  if (self != nullptr) self->state = ThreadState::Ready;
}

void release_cluster_barrier(Engine& E, Cluster* c, Thread* self) {
  ++c->epoch;
  c->arrived = 0;
  const bool reversed = E.order == Schedule::Reversed;
  for (int rr = 0; rr < c->blocks; ++rr) {
    Block* b = c->block[reversed ? c->blocks - 1 - rr : rr];
    ++b->epoch;
    for (int k = 0; k < b->threads; ++k) {
      Thread* t = &b->thread[static_cast<std::size_t>(reversed ? b->threads - 1 - k : k)];
      if (t->state == ThreadState::ClusterBarrier && t != self) make_ready(E, t);
    }
  }
  if (self != nullptr) self->state = ThreadState::Ready;
}

int src_lane(int op, int lane, int arg, int width) {
  const int seg = lane & ~(width - 1);
  switch (op) {
    case 0:
      return seg + (arg & (width - 1));
    case 1:
      return lane - arg >= seg ? lane - arg : lane;
    case 2:
      return lane + arg < seg + width ? lane + arg : lane;
    default: {
      const int s = lane ^ arg;
      return (s & ~(width - 1)) == seg ? s : lane;
    }
  }
}

void complete_warp_op(Engine& E, Block* b, Warp& w, Thread* self) {
  const unsigned mask = w.op_mask;
  if (w.op == 4) {
    unsigned bits = 0;
    for (int l = 0; l < 32; ++l)
      if ((mask >> l) & 1u) bits |= (w.value[l] != 0 ? 1u : 0u) << l;
    for (int l = 0; l < 32; ++l) w.result[l] = bits;
  } else if (w.op == 5) {
    ++w.epoch;
  } else {
    for (int l = 0; l < 32; ++l) {
      if (!((mask >> l) & 1u)) continue;
      const int s = src_lane(w.op, l, w.arg[l], w.width[l]);
      if (!((mask >> s) & 1u)) {
        report(self, "synccheck",
               "shuffle of lane " + std::to_string(l) + " reads lane " + std::to_string(s) +
                   ", which its mask does not name (undefined on the hardware)",
               nullptr, cudaErrorLaunchFailure);
      }
      w.result[l] = w.value[s];
    }
  }
  w.arrived = 0;
  w.op = -1;
  const bool reversed = E.order == Schedule::Reversed;
  const int base = (self->warp) * 32;
  for (int k = 0; k < 32; ++k) {
    const int l = reversed ? 31 - k : k;
    if (!((mask >> l) & 1u)) continue;
    Thread* t = &b->thread[static_cast<std::size_t>(base + l)];
    if (t != self && t->state == ThreadState::WarpOp) make_ready(E, t);
  }
  self->state = ThreadState::Ready;
}

/// One warp-level operation by the calling lane; returns once every lane of `mask` took part.
std::uint64_t warp_op(int op, unsigned mask, std::uint64_t value, int arg, int width, const void* site) {
  Thread* t = tls_thread;
  if (t == nullptr) return value;
  Engine& E = engine();
  Block* b = t->block;
  Warp& w = b->warps[static_cast<std::size_t>(t->warp)];
  const unsigned bit = 1u << t->lane;
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0) {
    report(t, "synccheck", "shuffle width " + std::to_string(width) + " is not a power of two in [1, 32]", nullptr,
           cudaErrorLaunchFailure);
    width = 32;
  }
  if (!(mask & bit)) {
    report(t, "synccheck", std::string("warp operation at ") + site_text(site) + " by a lane its mask does not name",
           nullptr, cudaErrorLaunchFailure);
    return value;
  }
  if (mask & ~w.live) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "mask 0x%08x names lanes 0x%08x that are absent or have exited", mask, mask & ~w.live);
    report(t, "synccheck", std::string("warp operation at ") + site_text(site) + ": " + buf, nullptr,
           cudaErrorLaunchFailure);
    return value;
  }
  if (w.arrived == 0) {
    w.op = op;
    w.op_mask = mask;
    w.site = site;
  } else if (w.op != op || w.op_mask != mask || !same_site(w.site, site)) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "divergent warp operations: %s (mask 0x%08x) and %s (mask 0x%08x)", site_text(w.site),
                  w.op_mask, site_text(site), mask);
    report(t, "synccheck", buf, nullptr, cudaErrorLaunchFailure);
    if (t->abort) throw AbortThread{};
  }
  w.value[t->lane] = value;
  w.arg[t->lane] = arg;
  w.width[t->lane] = width;
  w.arrived |= bit;
  t->state = ThreadState::WarpOp;
  if (w.arrived == w.op_mask) {
    complete_warp_op(E, b, w, t);
  } else {
    suspend(t);
  }
  return w.result[t->lane];
}

/// A thread's kernel function returned (or was unwound).
void thread_exited(Engine& E, Thread* t) {
  Block* b = t->block;
  t->state = ThreadState::Done;
  --b->live;
  Warp& w = b->warps[static_cast<std::size_t>(t->warp)];
  const unsigned bit = 1u << t->lane;
  w.live &= ~bit;
  if (!t->abort) {
    if (w.arrived != 0 && (w.op_mask & bit)) {
      report(t, "synccheck",
             std::string("lane exited while named in the mask of the warp operation at ") + site_text(w.site), nullptr,
             cudaErrorLaunchFailure);
    }
  }
  // Barriers count the threads that have not exited.
  if (b->arrived > 0 && b->arrived == b->live) release_block_barrier(E, b, nullptr);
  Cluster* c = b->cluster;
  --c->live;
  if (c->arrived > 0 && c->arrived == c->live) release_cluster_barrier(E, c, nullptr);
}

void run_worker(Thread* t) {
  Worker* w = t->worker;
  const Launch& L = *t->block->launch;
  threadIdx = t->idx;
  blockIdx = t->block->idx;
  blockDim = uint3{L.block.x, L.block.y, L.block.z};
  gridDim = uint3{L.grid.x, L.grid.y, L.grid.z};
  tls_thread = t;
  w->self = std::move(w->self).resume();
  tls_thread = nullptr;
}

void setup_block(Engine& E, Launch& L, Block& b, unsigned rank, long long linear) {
  const dim3 g = L.grid, d = L.block;
  b.launch = &L;
  b.cluster = &E.cluster;
  b.rank = rank;
  b.idx.x = static_cast<unsigned>(linear % g.x);
  b.idx.y = static_cast<unsigned>((linear / g.x) % g.y);
  b.idx.z = static_cast<unsigned>(linear / (static_cast<long long>(g.x) * g.y));
  b.threads = static_cast<int>(d.x * d.y * d.z);
  b.live = b.threads;
  b.arrived = 0;
  b.count_sum = b.count_result = 0;
  b.barrier_site = nullptr;
  b.epoch = 0;
  b.arena_used = 0;
  const int warps = (b.threads + 31) / 32;
  b.warps.assign(static_cast<std::size_t>(warps), Warp{});
  for (int k = 0; k < warps; ++k) {
    const int lanes = std::min(32, b.threads - 32 * k);
    b.warps[static_cast<std::size_t>(k)].live = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
  }
  b.thread.resize(static_cast<std::size_t>(b.threads));
  for (int k = 0; k < b.threads; ++k) {
    Thread& t = b.thread[static_cast<std::size_t>(k)];
    t = Thread{};
    t.block = &b;
    t.linear = k;
    t.lane = k % 32;
    t.warp = k / 32;
    t.idx.x = static_cast<unsigned>(k % static_cast<int>(d.x));
    t.idx.y = static_cast<unsigned>((k / static_cast<int>(d.x)) % static_cast<int>(d.y));
    t.idx.z = static_cast<unsigned>(k / static_cast<int>(d.x * d.y));
    Worker* w = E.workers[static_cast<std::size_t>(rank) * kMaxBlockThreads + static_cast<std::size_t>(k)].get();
    t.worker = w;
    w->thread = &t;
    t.stack_lo = w->stack_lo;
    t.stack_hi = w->stack_hi;
  }
}

void abandon_all(Cluster& c) {
  for (int r = 0; r < c.blocks; ++r)
    for (Thread& t : c.block[r]->thread) t.abort = true;
}

std::string blocked_summary(const Cluster& c) {
  std::string s;
  int shown = 0;
  for (int r = 0; r < c.blocks && shown < 4; ++r) {
    for (const Thread& t : c.block[r]->thread) {
      if (t.state == ThreadState::Done || t.state == ThreadState::Ready) continue;
      const char* what = t.state == ThreadState::Barrier ? "__syncthreads"
                         : t.state == ThreadState::WarpOp ? "a warp operation"
                                                          : "a cluster barrier";
      s += (shown ? "; " : "") + describe_thread(&t) + " waits at " + what + " " + site_text(t.site);
      if (++shown == 4) break;
    }
  }
  return s;
}

void run_cluster(Engine& E, Launch& L) {
  Cluster& c = E.cluster;
  std::vector<Thread*> order;
  for (int r = 0; r < c.blocks; ++r)
    for (Thread& t : c.block[r]->thread) order.push_back(&t);
  if (E.order == Schedule::Reversed) std::reverse(order.begin(), order.end());
  for (Thread* t : order) E.ready.push(t, global_warp(t));
  for (;;) {
    while (Thread* t = E.ready.pop()) {
      if (L.failed) t->abort = true;
      run_worker(t);
    }
    bool pending = false;
    for (int r = 0; r < c.blocks; ++r)
      for (Thread& t : c.block[r]->thread) pending = pending || t.state != ThreadState::Done;
    if (!pending) break;
    // Nothing can run but threads are waiting: a barrier or warp operation that can never complete.
    if (!L.failed) {
      Thread* first = nullptr;
      for (int r = 0; r < c.blocks && first == nullptr; ++r)
        for (Thread& t : c.block[r]->thread)
          if (t.state != ThreadState::Done) {
            first = &t;
            break;
          }
      report(first, "synccheck", "deadlock: " + blocked_summary(c), nullptr, cudaErrorLaunchFailure);
    }
    abandon_all(c);
    for (int r = 0; r < c.blocks; ++r)
      for (Thread& t : c.block[r]->thread)
        if (t.state != ThreadState::Done) make_ready(E, &t);
  }
}

std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

ScheduleChoice env_schedule() {
  ScheduleChoice s;
  const char* v = std::getenv("FUSEDLOSS_SIM_SCHEDULE");
  if (v == nullptr || *v == 0) return s;
  std::string str(v);
  if (str == "reversed") {
    s.order = Schedule::Reversed;
  } else if (str == "warp-greedy") {
    s.order = Schedule::WarpGreedy;
  } else if (str.rfind("random", 0) == 0) {
    s.order = Schedule::Random;
    if (str.size() > 7 && str[6] == ':') s.seed = std::strtoull(str.c_str() + 7, nullptr, 10);
  }
  return s;
}

std::mutex g_schedule_mutex;
ScheduleChoice g_schedule = env_schedule();

}  // namespace

std::string describe_thread(const Thread* t) {
  if (t == nullptr) return "host";
  char buf[128];
  std::snprintf(buf, sizeof buf, "block (%u,%u,%u), thread (%u,%u,%u)", t->block->idx.x, t->block->idx.y,
                t->block->idx.z, t->idx.x, t->idx.y, t->idx.z);
  return buf;
}

void execute(Launch& L) {
  Engine& E = engine();
  const ScheduleChoice sched = schedule();
  E.order = sched.order;
  E.launch = &L;
  const long long blocks = static_cast<long long>(L.grid.x) * L.grid.y * L.grid.z;
  const int per_block = static_cast<int>(L.block.x * L.block.y * L.block.z);
  const unsigned K = L.cluster;
  // Workers: slot rank·1024 + thread, so each cluster rank has its own stacks.
  E.workers.resize(std::max<std::size_t>(E.workers.size(), static_cast<std::size_t>(K) * kMaxBlockThreads));
  for (unsigned r = 0; r < K; ++r)
    for (int k = 0; k < per_block; ++k) {
      auto& w = E.workers[static_cast<std::size_t>(r) * kMaxBlockThreads + static_cast<std::size_t>(k)];
      if (!w) w = std::make_unique<Worker>();
      if (w->stack_lo == nullptr) {
        // The stack is made when the fiber is; make it now so the thread knows its bounds.
        Worker* wp = w.get();
        wp->self = ctx::fiber(std::allocator_arg, RecordingStack(wp), [wp, &E](ctx::fiber&& back) {
          wp->back = std::move(back);
          wp->back = std::move(wp->back).resume();  // parked until the first real run
          for (;;) {
            Thread* th = wp->thread;
            try {
              if (!th->abort) th->block->launch->invoke(th->block->launch->args);
            } catch (AbortThread&) {
            }
            tls_thread = nullptr;
            thread_exited(E, th);
            wp->back = std::move(wp->back).resume();
          }
          return std::move(wp->back);
        });
        wp->self = std::move(wp->self).resume();  // runs to the park point
      }
    }
  const long long clusters = blocks / K;
  std::vector<long long> order(static_cast<std::size_t>(clusters));
  for (long long i = 0; i < clusters; ++i) order[static_cast<std::size_t>(i)] = i;
  const std::uint64_t seed =
      mix(sched.seed ^ mix((static_cast<std::uint64_t>(L.grid.x) << 32) ^ (static_cast<std::uint64_t>(L.block.x) << 8) ^ K));
  if (sched.order == Schedule::Reversed) std::reverse(order.begin(), order.end());
  if (sched.order == Schedule::Random) {
    std::mt19937_64 rng(seed);
    std::shuffle(order.begin(), order.end(), rng);
  }
  const int warps_per_cluster = static_cast<int>(K) * (kMaxBlockThreads / 32);
  for (long long ci = 0; ci < clusters && !L.failed; ++ci) {
    const long long cidx = order[static_cast<std::size_t>(ci)];
    Cluster& c = E.cluster;
    c.blocks = static_cast<int>(K);
    c.arrived = 0;
    c.epoch = 0;
    c.live = static_cast<int>(K) * per_block;
    for (unsigned r = 0; r < K; ++r) {
      c.block[r] = &E.blocks[r];
      setup_block(E, L, E.blocks[r], r, cidx * K + r);
    }
    E.ready.reset(sched.order, mix(seed ^ static_cast<std::uint64_t>(cidx)), warps_per_cluster);
    run_cluster(E, L);
    flush_traffic(L);
  }
  E.launch = nullptr;
}

void abandon_block_of(Thread* t) {
  if (t != nullptr) abandon_all(*t->block->cluster);
}

std::string kernel_name(const void* kernel) {
  static std::mutex m;
  static std::map<const void*, std::string> cache;
  std::lock_guard<std::mutex> lock(m);
  auto it = cache.find(kernel);
  if (it != cache.end()) return it->second;
  std::string name;
  Dl_info info{};
  if (dladdr(kernel, &info) != 0 && info.dli_sname != nullptr) {
    int status = 0;
    char* d = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
    name = (status == 0 && d != nullptr) ? d : info.dli_sname;
    std::free(d);
  }
  cache.emplace(kernel, name);
  return name;
}

}  // namespace internal

// ---- the device language ------------------------------------------------------------------------------
using internal::Thread;
using internal::tls_thread;


int sync_threads_count(int predicate, const void* site) {
  Thread* t = tls_thread;
  if (t == nullptr) return predicate != 0;
  internal::Engine& E = internal::engine();
  internal::Block* b = t->block;
  if (b->arrived == 0) {
    b->barrier_site = site;
  } else if (!internal::same_site(b->barrier_site, site)) {
    internal::report(t, "synccheck",
                     std::string("divergent __syncthreads: threads wait at ") + internal::site_text(b->barrier_site) +
                         " and at " + internal::site_text(site),
                     nullptr, cudaErrorLaunchFailure);
    if (t->abort) throw internal::AbortThread{};
  }
  t->site = site;
  t->state = internal::ThreadState::Barrier;
  b->count_sum += predicate != 0 ? 1 : 0;
  ++b->arrived;
  if (b->arrived == b->live) {
    internal::release_block_barrier(E, b, t);
  } else {
    internal::suspend(t);
  }
  return b->count_result;
}

void sync_threads(const void* site) { sync_threads_count(0, site); }

void sync_warp(unsigned mask, const void* site) { internal::warp_op(5, mask, 0, 0, 32, site); }

std::uint64_t shuffle(unsigned mask, std::uint64_t bits, int mode, int arg, int width, const void* site) {
  return internal::warp_op(mode, mask, bits, arg, width, site);
}

unsigned ballot(unsigned mask, int predicate, const void* site) {
  return static_cast<unsigned>(internal::warp_op(4, mask, predicate != 0 ? 1 : 0, 0, 32, site));
}

unsigned active_mask() {
  Thread* t = tls_thread;
  return t != nullptr ? t->block->warps[static_cast<std::size_t>(t->warp)].live : 1u;
}

void nanosleep(unsigned) {}

std::uint64_t global_timer_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

unsigned cluster_block_rank() { return tls_thread != nullptr ? tls_thread->block->rank : 0; }
unsigned cluster_num_blocks() {
  return tls_thread != nullptr ? static_cast<unsigned>(tls_thread->block->cluster->blocks) : 1;
}

void cluster_sync(const void* site) {
  Thread* t = tls_thread;
  if (t == nullptr) return;
  internal::Engine& E = internal::engine();
  internal::Cluster* c = t->block->cluster;
  t->site = site;
  t->state = internal::ThreadState::ClusterBarrier;
  ++c->arrived;
  if (c->arrived == c->live) {
    internal::release_cluster_barrier(E, c, t);
  } else {
    internal::suspend(t);
  }
}

// ---- shared memory ---------------------------------------------------------------------------------------
namespace {
std::mutex g_slot_mutex;
struct SlotSpec {
  std::size_t bytes, align;
};
std::vector<SlotSpec> g_slots;
constexpr unsigned char kSharedPoison = 0xff;

/// Makes [arena_used, top) of block b fresh: poisoned, and never written as far as racecheck and
/// initcheck are concerned.
void grow_arena(internal::Block* b, std::size_t top) {
  if (b->arena_used >= top) return;
  std::memset(b->arena + b->arena_used, kSharedPoison, top - b->arena_used);
  std::fill(b->shadow + b->arena_used, b->shadow + top, internal::ShadowCell{});
  b->arena_used = top;
}
}  // namespace

int new_shared_slot(std::size_t bytes, std::size_t align) {
  std::lock_guard<std::mutex> lock(g_slot_mutex);
  g_slots.push_back({bytes, align});
  return static_cast<int>(g_slots.size() - 1);
}

void* shared_slot(int slot) {
  Thread* t = tls_thread;
  if (t == nullptr) return nullptr;
  internal::Launch& L = *t->block->launch;
  if (static_cast<std::size_t>(slot) >= L.slot_offset.size()) L.slot_offset.resize(static_cast<std::size_t>(slot) + 1, -1);
  long& off = L.slot_offset[static_cast<std::size_t>(slot)];
  if (off < 0) {
    SlotSpec spec;
    {
      std::lock_guard<std::mutex> lock(g_slot_mutex);
      spec = g_slots[static_cast<std::size_t>(slot)];
    }
    const std::size_t dyn_end = (L.dynamic_smem + 15) / 16 * 16;
    std::size_t top = std::max(L.shared_top, dyn_end);
    top = (top + spec.align - 1) / spec.align * spec.align;
    if (top + spec.bytes - dyn_end > internal::kStaticSharedLimit || top + spec.bytes > internal::kSharedPerBlock) {
      internal::report(t, "memcheck", "static shared memory over the 48 KB limit", nullptr, cudaErrorLaunchOutOfResources);
      return t->block->arena;
    }
    off = static_cast<long>(top);
    L.shared_top = top + spec.bytes;
    L.record.static_smem = L.shared_top - dyn_end;
  }
  grow_arena(t->block, L.shared_top);
  return t->block->arena + off;
}

void* dynamic_shared() {
  Thread* t = tls_thread;
  if (t == nullptr) return nullptr;
  grow_arena(t->block, std::max(t->block->launch->shared_top, t->block->launch->dynamic_smem));
  return t->block->arena;
}

void* map_shared_rank(const void* p, unsigned rank) {
  Thread* t = tls_thread;
  if (t == nullptr) return const_cast<void*>(p);
  internal::Block* b = t->block;
  const unsigned char* q = static_cast<const unsigned char*>(p);
  if (q < b->arena || q >= b->arena + internal::kSharedPerBlock) {
    internal::report(t, "memcheck", "map_shared_rank of an address that is not this block's shared memory", p,
                     cudaErrorIllegalAddress);
    return const_cast<void*>(p);
  }
  internal::Cluster* c = b->cluster;
  if (rank >= static_cast<unsigned>(c->blocks)) {
    internal::report(t, "memcheck",
                     "map_shared_rank to rank " + std::to_string(rank) + " of a cluster of " + std::to_string(c->blocks),
                     p, cudaErrorIllegalAddress);
    return const_cast<void*>(p);
  }
  internal::Block* other = c->block[rank];
  grow_arena(other, b->launch->shared_top);
  return other->arena + (q - b->arena);
}

// ---- schedule -------------------------------------------------------------------------------------------
ScheduleChoice schedule() {
  std::lock_guard<std::mutex> lock(internal::g_schedule_mutex);
  return internal::g_schedule;
}
void set_schedule(ScheduleChoice s) {
  std::lock_guard<std::mutex> lock(internal::g_schedule_mutex);
  internal::g_schedule = s;
}
const char* schedule_name(Schedule s) {
  switch (s) {
    case Schedule::RoundRobin:
      return "round-robin";
    case Schedule::Reversed:
      return "reversed";
    case Schedule::Random:
      return "random";
    case Schedule::WarpGreedy:
      return "warp-greedy";
  }
  return "?";
}

}  // namespace fusedloss_sim
