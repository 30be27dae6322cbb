// linear_cross_entropy's memory bound on the CPU path: the workspace plus everything else the call
// allocates (LinearCrossEntropyPlan::internal_bytes) stays within memory_budget_bytes, the chunk does
// not depend on the thread count, and the heap memory a call really takes (counted by the global
// operator new below, with a caller-given workspace) never exceeds internal_bytes.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "common/linear_ce_check.hpp"
#include "common/test_util.hpp"

namespace {

// Live and peak bytes of operator new while counting is on (every thread of the process).
std::atomic<bool> g_counting{false};
std::atomic<long long> g_live{0}, g_peak{0};
constexpr std::size_t kHeader = 16;  // keeps the default new alignment

void* counted_new(std::size_t n) {
  void* raw = std::malloc(n + kHeader);
  if (raw == nullptr) throw std::bad_alloc();
  std::memcpy(raw, &n, sizeof n);
  if (g_counting.load(std::memory_order_relaxed)) {
    const long long live = g_live.fetch_add(static_cast<long long>(n)) + static_cast<long long>(n);
    long long peak = g_peak.load();
    while (live > peak && !g_peak.compare_exchange_weak(peak, live)) {
    }
  }
  return static_cast<unsigned char*>(raw) + kHeader;
}

void counted_delete(void* p) noexcept {
  if (p == nullptr) return;
  void* raw = static_cast<unsigned char*>(p) - kHeader;
  std::size_t n = 0;
  std::memcpy(&n, raw, sizeof n);
  if (g_counting.load(std::memory_order_relaxed)) g_live.fetch_sub(static_cast<long long>(n));
  std::free(raw);
}

}  // namespace

void* operator new(std::size_t n) { return counted_new(n); }
void* operator new[](std::size_t n) { return counted_new(n); }
void operator delete(void* p) noexcept { counted_delete(p); }
void operator delete[](void* p) noexcept { counted_delete(p); }
void operator delete(void* p, std::size_t) noexcept { counted_delete(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_delete(p); }

namespace {

namespace fl = ::fusedloss;
using fl::Status;
using lce::Case;
using tu::Buffer;

struct Shape {
  std::int64_t N, V;
  double softcap;
  std::size_t budget;
};

/// For several shapes (split and unsplit row-wise paths, softcap's second row buffer) and thread counts:
/// workspace + internal ≤ budget, the same chunk at every thread count, and a call's peak heap use (the
/// workspace passed in) ≤ internal_bytes.
TEST(LinearCeCpuMemory, PlanTotalWithinBudgetAndCallWithinPlan) {
  FL_SEEDED_RNG(rng);
  const Shape shapes[] = {{37, 1003, 0.0, std::size_t(192) << 10},
                          {53, 20011, 0.0, std::size_t(3) << 20},  // chunks of < 16 rows: the split path
                          {53, 20011, 30.0, std::size_t(4) << 20},
                          {301, 4099, 0.0, std::size_t(2) << 20}};
  for (const Shape& s : shapes) {
    Case c;
    c.N = s.N;
    c.H = 17;
    c.V = s.V;
    c.softcap = s.softcap;
    c.budget = s.budget;
    const lce::Data d = lce::make_data(c, rng);
    const fl::LinearCrossEntropyProblem p = lce::problem_of(c, d);
    std::vector<float> loss(1), gh(static_cast<std::size_t>(c.N * c.H)), gw(static_cast<std::size_t>(c.V * c.H)),
        gb(static_cast<std::size_t>(c.V));
    fl::LinearCrossEntropyOutputs out;
    out.loss = loss.data();
    out.grad_hidden = gh.data();
    out.grad_weight = gw.data();
    out.grad_bias = gb.data();
    std::int64_t chunk = -1;
    for (int threads : {1, 3, 8, 64}) {
      SCOPED_TRACE(testing::Message() << "N=" << c.N << " V=" << c.V << " softcap=" << c.softcap << " threads=" << threads);
      fl::ExecutionConfig cfg;
      cfg.backend = fl::Backend::CPU;
      cfg.cpu_threads = threads;
      fl::LinearCrossEntropyPlan plan;
      ASSERT_EQ(fl::linear_cross_entropy_plan(p, out, cfg, &plan), Status::Success);
      EXPECT_GT(plan.internal_bytes, 0u);
      EXPECT_LE(plan.workspace_bytes + plan.internal_bytes, s.budget);
      EXPECT_LT(plan.chunk_rows, c.N);  // the budget, not N, sets the chunk
      if (chunk < 0) chunk = plan.chunk_rows;
      EXPECT_EQ(plan.chunk_rows, chunk);

      void* ws = nullptr;
      ASSERT_EQ(posix_memalign(&ws, 256, plan.workspace_bytes), 0);
      cfg.workspace = ws;
      cfg.workspace_bytes = plan.workspace_bytes;
      g_live = 0;
      g_peak = 0;
      g_counting = true;
      const Status st = fl::compute(p, out, cfg);
      g_counting = false;
      std::free(ws);
      ASSERT_EQ(st, Status::Success);
      EXPECT_LE(static_cast<std::size_t>(g_peak.load()), plan.internal_bytes);
      EXPECT_GT(g_peak.load(), 0);  // the counter saw the row scratch
    }
  }
}

}  // namespace
