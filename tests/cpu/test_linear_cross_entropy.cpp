// linear_cross_entropy on the CPU path: against the float64 oracle (matmul, then cross_entropy, written
// independently in tests/oracle/oracle.hpp), gradient accumulation, run-to-run bit identity, the memory budget.
#include <gtest/gtest.h>

#include <cblas.h>

#include <cstdio>
#include <cstring>

#include "common/linear_ce_check.hpp"
#include "common/test_util.hpp"

namespace {

namespace fl = ::fusedloss;
using fl::DType;
using fl::Reduction;
using fl::Status;
using lce::Case;
using tu::Buffer;

/// Output buffers of one call, poisoned (or holding `old_*` for an accumulating call).
struct Outputs {
  std::vector<float> loss, lse;
  Buffer grad_hidden, grad_weight, grad_bias;
  std::int64_t error_count = tu::poison_i64();
};

Outputs make_outputs(const Case& c) {
  Outputs o;
  o.loss = tu::poisoned_floats(size_t(c.reduction == Reduction::None ? c.N : 1));
  o.lse = tu::poisoned_floats(size_t(c.N));
  o.grad_hidden = Buffer(c.dtype, size_t(c.N * lce::stride_of(c)));
  o.grad_hidden.poison();
  o.grad_weight = Buffer(c.dtype, size_t(c.V * c.H));
  o.grad_weight.poison();
  o.grad_bias = Buffer(c.dtype, size_t(c.V));
  o.grad_bias.poison();
  return o;
}

fl::LinearCrossEntropyOutputs outputs_of(const Case& c, Outputs& o, bool accumulate = false) {
  fl::LinearCrossEntropyOutputs out;
  out.loss = o.loss.data();
  out.lse = o.lse.data();
  out.grad_hidden = o.grad_hidden.data();
  out.grad_weight = o.grad_weight.data();
  out.grad_bias = c.bias ? o.grad_bias.data() : nullptr;
  out.accumulate = accumulate;
  out.error_count = &o.error_count;
  return out;
}

lce::Got read_back(const Case& c, const Outputs& o) {
  lce::Got g;
  g.loss.assign(o.loss.begin(), o.loss.end());
  g.lse.assign(o.lse.begin(), o.lse.end());
  const std::int64_t ld = lce::stride_of(c);
  g.grad_hidden.resize(size_t(c.N * c.H));
  for (std::int64_t n = 0; n < c.N; ++n)
    for (std::int64_t k = 0; k < c.H; ++k) g.grad_hidden[size_t(n * c.H + k)] = o.grad_hidden.get(size_t(n * ld + k));
  g.grad_weight = o.grad_weight.to_double();
  if (c.bias) g.grad_bias = o.grad_bias.to_double();
  g.error_count = o.error_count;
  return g;
}

/// The budget of the "V32003_everything_budget" case: what a plan capped at 6 rows needs.
void resolve_budget(Case& c, const lce::Data& d, Outputs& o) {
  if (c.budget != 0) return;
  Case capped = c;
  capped.budget = std::size_t(1) << 40;
  capped.max_chunk_rows = 6;
  fl::LinearCrossEntropyPlan plan;
  ASSERT_EQ(fl::linear_cross_entropy_plan(lce::problem_of(capped, d), outputs_of(c, o), {}, &plan), Status::Success);
  c.budget = plan.workspace_bytes + plan.internal_bytes;
}

class LinearCeCpu : public ::testing::TestWithParam<Case> {};

TEST_P(LinearCeCpu, MatchesOracle) {
  FL_SEEDED_RNG(rng);
  Case c = GetParam();
  const lce::Data d = lce::make_data(c, rng);
  Outputs o = make_outputs(c);
  resolve_budget(c, d, o);
  const fl::LinearCrossEntropyProblem p = lce::problem_of(c, d);
  fl::LinearCrossEntropyPlan plan;
  ASSERT_EQ(fl::linear_cross_entropy_plan(p, outputs_of(c, o), {}, &plan), Status::Success);
  EXPECT_LE(plan.workspace_bytes, c.budget);
  if (c.max_chunk_rows > 0) {
    EXPECT_EQ(plan.chunk_rows, std::min(c.max_chunk_rows, c.N));
  }
  if (c.name.rfind("V32003", 0) == 0) {
    EXPECT_GE(plan.chunk_rows, 1);
    EXPECT_LE(plan.chunk_rows, 6);
  }
  const Status s = fl::compute(p, outputs_of(c, o));
  ASSERT_EQ(s, Status::Success);
  const oracle::LinearResult ref = oracle::linear_cross_entropy(c.N, c.H, c.V, d.hidden_d, d.weight_d, d.bias_d,
                                                                d.labels_v, lce::red_of(c.reduction), d.params);
  lce::check(c, d, ref, read_back(c, o));
  // The stride gap of grad_hidden is not written.
  const std::int64_t ld = lce::stride_of(c);
  for (std::int64_t n = 0; n < c.N; ++n)
    for (std::int64_t k = c.H; k < ld; ++k)
      ASSERT_EQ(o.grad_hidden.bits(size_t(n * ld + k)), o.grad_hidden.poison_bits()) << n << "," << k;
}

TEST_P(LinearCeCpu, BitwiseReproducibleRunToRun) {
  FL_SEEDED_RNG(rng);
  Case c = GetParam();
  const lce::Data d = lce::make_data(c, rng);
  Outputs a = make_outputs(c), b = make_outputs(c);
  resolve_budget(c, d, a);
  const fl::LinearCrossEntropyProblem p = lce::problem_of(c, d);
  ASSERT_EQ(fl::compute(p, outputs_of(c, a)), Status::Success);
  fl::ExecutionConfig other;
  other.cpu_threads = 1;  // the cross_entropy's thread count does not matter either
  ASSERT_EQ(fl::compute(p, outputs_of(c, b), other), Status::Success);
  EXPECT_EQ(std::memcmp(a.loss.data(), b.loss.data(), a.loss.size() * 4), 0);
  EXPECT_EQ(std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * 4), 0);
  EXPECT_EQ(std::memcmp(a.grad_hidden.data(), b.grad_hidden.data(), a.grad_hidden.bytes()), 0);
  EXPECT_EQ(std::memcmp(a.grad_weight.data(), b.grad_weight.data(), a.grad_weight.bytes()), 0);
  if (c.bias) {
    EXPECT_EQ(std::memcmp(a.grad_bias.data(), b.grad_bias.data(), a.grad_bias.bytes()), 0);
  }
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) { return info.param.name; }
INSTANTIATE_TEST_SUITE_P(All, LinearCeCpu, ::testing::ValuesIn(lce::cases()), case_name);

/// Two calls with accumulate add exactly what one call over both batches gives (sum reduction: the batches'
/// losses add too), and for fp32 the second call adds exactly its own gradient to the first's.
TEST(LinearCeCpuAccumulate, SecondCallAddsItsGradient) {
  FL_SEEDED_RNG(rng);
  for (DType dt : {DType::Float32, DType::BFloat16}) {
    SCOPED_TRACE(fl::dtype_name(dt));
    Case c;
    c.dtype = dt;
    c.reduction = Reduction::Sum;
    c.max_chunk_rows = 8;
    const lce::Data d1 = lce::make_data(c, rng), d2_src = lce::make_data(c, rng);
    // Second batch: new hidden and labels, the same weight and bias.
    lce::Data d2 = d2_src;
    d2.weight = d1.weight;
    d2.weight_d = d1.weight_d;
    d2.bias = d1.bias;
    d2.bias_d = d1.bias_d;
    Outputs acc = make_outputs(c), fresh = make_outputs(c);
    ASSERT_EQ(fl::compute(lce::problem_of(c, d1), outputs_of(c, acc)), Status::Success);
    const Buffer first_w = acc.grad_weight, first_b = acc.grad_bias;
    ASSERT_EQ(fl::compute(lce::problem_of(c, d2), outputs_of(c, acc, /*accumulate=*/true)), Status::Success);
    ASSERT_EQ(fl::compute(lce::problem_of(c, d2), outputs_of(c, fresh)), Status::Success);
    // The accumulated result is the old value plus this call's gradient, rounded once: bit for bit
    // round(first + fresh) for fp32 (fresh is exactly this call's fp32 gradient); for bf16 fresh is itself
    // rounded, so the two differ by at most that rounding (half an ulp) plus the sum's (half an ulp).
    const auto expect_added = [&](const char* what, const Buffer& got, const Buffer& first, const Buffer& fresh_) {
      for (std::size_t i = 0; i < got.size(); ++i) {
        const double want = tu::round_to(dt, first.get(i) + fresh_.get(i));
        if (dt == DType::Float32) {
          ASSERT_EQ(got.get(i), want) << what << "[" << i << "]";
        } else {
          ASSERT_LE(std::fabs(got.get(i) - want), tu::ulp(dt, want) + tu::ulp(dt, fresh_.get(i)) / 2)
              << what << "[" << i << "]";
        }
      }
    };
    expect_added("grad_weight", acc.grad_weight, first_w, fresh.grad_weight);
    expect_added("grad_bias", acc.grad_bias, first_b, fresh.grad_bias);
    // And against the oracle of the two batches together (sum: Σ over 74 rows).
    Case both = c;
    both.N = 2 * c.N;
    tu::Vec h = d1.hidden_d;
    h.insert(h.end(), d2.hidden_d.begin(), d2.hidden_d.end());
    std::vector<std::int64_t> y = d1.labels_v;
    y.insert(y.end(), d2.labels_v.begin(), d2.labels_v.end());
    const oracle::LinearResult ref = oracle::linear_cross_entropy(both.N, c.H, c.V, h, d1.weight_d, d1.bias_d, y,
                                                                  oracle::Red::Sum, d1.params);
    lce::Data dboth = d1;
    dboth.hidden_d = h;
    dboth.labels_v = y;
    lce::Bounds b = lce::bounds(both, dboth, ref);
    // Each call rounded its own result to the dtype once (the first call's is the accumulator's old value).
    if (dt != DType::Float32) {
      for (std::size_t i = 0; i < b.grad_weight.size(); ++i)
        b.grad_weight[i] += tu::ulp(dt, first_w.get(i)) / 2 + tu::ulp(dt, fresh.grad_weight.get(i)) / 2;
      for (std::size_t i = 0; i < b.grad_bias.size(); ++i)
        b.grad_bias[i] += tu::ulp(dt, first_b.get(i)) / 2 + tu::ulp(dt, fresh.grad_bias.get(i)) / 2;
    }
    lce::expect_within("accumulated grad_weight", acc.grad_weight.to_double(), ref.grad_weight, b.grad_weight, dt,
                       false);
    lce::expect_within("accumulated grad_bias", acc.grad_bias.to_double(), ref.grad_bias, b.grad_bias, dt, false);
  }
}

/// An fp32 accumulate call whose old value is exactly 0 gives bit for bit the non-accumulating result.
TEST(LinearCeCpuAccumulate, IntoZerosIsBitIdentical) {
  FL_SEEDED_RNG(rng);
  Case c;
  c.max_chunk_rows = 7;
  const lce::Data d = lce::make_data(c, rng);
  Outputs a = make_outputs(c), b = make_outputs(c);
  std::memset(b.grad_weight.data(), 0, b.grad_weight.bytes());
  std::memset(b.grad_bias.data(), 0, b.grad_bias.bytes());
  ASSERT_EQ(fl::compute(lce::problem_of(c, d), outputs_of(c, a)), Status::Success);
  ASSERT_EQ(fl::compute(lce::problem_of(c, d), outputs_of(c, b, true)), Status::Success);
  EXPECT_EQ(std::memcmp(a.grad_weight.data(), b.grad_weight.data(), a.grad_weight.bytes()), 0);
  EXPECT_EQ(std::memcmp(a.grad_bias.data(), b.grad_bias.data(), a.grad_bias.bytes()), 0);
}

/// OpenBLAS's GEMM result depends on its thread count (its partition of the output changes which kernel computes
/// an element), so the library leaves OpenBLAS's global thread setting alone and promises bit identity for a
/// fixed OpenBLAS thread count (OPENBLAS_NUM_THREADS / openblas_set_num_threads): checked here for 1, 2 and 3
/// threads, three runs each. Which counts agree with each other is printed, not asserted.
TEST(LinearCeCpuDeterminism, BitIdenticalAtEachBlasThreadCount) {
  FL_SEEDED_RNG(rng);
  Case c;
  c.V = 4099;
  c.H = 129;
  c.N = 61;
  c.max_chunk_rows = 23;
  const lce::Data d = lce::make_data(c, rng);
  const int saved = openblas_get_num_threads();
  std::vector<Outputs> firsts;
  for (int t : {1, 2, 3}) {
    openblas_set_num_threads(t);
    std::vector<Outputs> runs;
    for (int r = 0; r < 3; ++r) {
      runs.push_back(make_outputs(c));
      ASSERT_EQ(fl::compute(lce::problem_of(c, d), outputs_of(c, runs.back())), Status::Success);
    }
    for (std::size_t r = 1; r < runs.size(); ++r) {
      EXPECT_EQ(std::memcmp(runs[0].loss.data(), runs[r].loss.data(), 4), 0) << t << " threads";
      EXPECT_EQ(std::memcmp(runs[0].grad_hidden.data(), runs[r].grad_hidden.data(), runs[0].grad_hidden.bytes()), 0)
          << t << " threads";
      EXPECT_EQ(std::memcmp(runs[0].grad_weight.data(), runs[r].grad_weight.data(), runs[0].grad_weight.bytes()), 0)
          << t << " threads";
      EXPECT_EQ(std::memcmp(runs[0].grad_bias.data(), runs[r].grad_bias.data(), runs[0].grad_bias.bytes()), 0)
          << t << " threads";
    }
    firsts.push_back(runs[0]);
  }
  openblas_set_num_threads(saved);
  for (std::size_t t = 1; t < firsts.size(); ++t) {
    const bool same = std::memcmp(firsts[0].grad_weight.data(), firsts[t].grad_weight.data(),
                                  firsts[0].grad_weight.bytes()) == 0 &&
                      std::memcmp(firsts[0].grad_hidden.data(), firsts[t].grad_hidden.data(),
                                  firsts[0].grad_hidden.bytes()) == 0;
    std::printf("OpenBLAS 1 thread vs %zu threads: %s\n", t + 1, same ? "bit-identical" : "different bits");
  }
}

/// Edge cases: no rows (zero gradients, or the old ones when accumulating), every row ignored (mean → NaN,
/// zero gradient), a bad label (InvalidValue, counted, NaN loss for that row only), a caller workspace.
TEST(LinearCeCpuEdges, EmptyIgnoredBadLabelAndWorkspace) {
  FL_SEEDED_RNG(rng);
  Case c;
  c.N = 9;
  c.V = 31;
  c.H = 5;
  lce::Data d = lce::make_data(c, rng);
  {  // N = 0
    Case e = c;
    e.N = 0;
    Outputs o = make_outputs(e);
    o.loss.assign(1, tu::poison_float());
    fl::LinearCrossEntropyProblem p = lce::problem_of(e, d);
    ASSERT_EQ(fl::compute(p, outputs_of(e, o)), Status::Success);
    EXPECT_TRUE(std::isnan(o.loss[0]));  // mean over nothing
    for (std::size_t i = 0; i < o.grad_weight.size(); ++i) ASSERT_EQ(o.grad_weight.get(i), 0.0);
    for (std::size_t i = 0; i < o.grad_bias.size(); ++i) ASSERT_EQ(o.grad_bias.get(i), 0.0);
    EXPECT_EQ(o.error_count, 0);
  }
  {  // every row ignored
    lce::Data di = d;
    for (std::size_t n = 0; n < di.labels_v.size(); ++n) {
      di.labels_v[n] = c.ignore_index;
      di.labels.set_int(n, c.ignore_index);
    }
    Outputs o = make_outputs(c);
    ASSERT_EQ(fl::compute(lce::problem_of(c, di), outputs_of(c, o)), Status::Success);
    EXPECT_TRUE(std::isnan(o.loss[0]));
    for (std::size_t i = 0; i < o.grad_weight.size(); ++i) ASSERT_EQ(o.grad_weight.get(i), 0.0);
    for (std::int64_t n = 0; n < c.N; ++n)
      for (std::int64_t k = 0; k < c.H; ++k) ASSERT_EQ(o.grad_hidden.get(size_t(n * c.H + k)), 0.0);
  }
  {  // a bad label, reduction none, in a caller workspace
    lce::Data db = d;
    db.labels_v[3] = c.V + 5;
    db.labels.set_int(3, c.V + 5);
    Case cn = c;
    cn.reduction = Reduction::None;
    Outputs o = make_outputs(cn);
    const fl::LinearCrossEntropyProblem p = lce::problem_of(cn, db);
    std::size_t bytes = 0;
    ASSERT_EQ(fl::workspace_size(p, outputs_of(cn, o), {}, &bytes), Status::Success);
    void* ws = nullptr;
    ASSERT_EQ(posix_memalign(&ws, 256, bytes), 0);
    fl::ExecutionConfig cfg;
    cfg.workspace = ws;
    cfg.workspace_bytes = bytes - 1;
    EXPECT_EQ(fl::compute(p, outputs_of(cn, o), cfg), Status::WorkspaceTooSmall);
    cfg.workspace_bytes = bytes;
    EXPECT_EQ(fl::compute(p, outputs_of(cn, o), cfg), Status::InvalidValue);
    std::free(ws);
    EXPECT_EQ(o.error_count, 1);
    const oracle::LinearResult ref = oracle::linear_cross_entropy(c.N, c.H, c.V, db.hidden_d, db.weight_d, db.bias_d,
                                                                  db.labels_v, oracle::Red::None, db.params);
    lce::check(cn, db, ref, read_back(cn, o));
  }
}

/// The budget sets the chunk, and the workspace never exceeds it; a budget below one row is InvalidArgument.
TEST(LinearCeCpuBudget, ChunkFollowsBudget) {
  FL_SEEDED_RNG(rng);
  Case c;
  c.N = 4096;
  c.H = 8;
  c.V = 1000;
  fl::LinearCrossEntropyProblem p;
  p.rows = c.N;
  p.hidden_size = c.H;
  p.classes = c.V;
  float dummy_in[4] = {}, loss = 0;
  std::int64_t labels[1] = {};
  p.hidden = dummy_in;
  p.weight = dummy_in;
  p.labels = labels;
  fl::LinearCrossEntropyOutputs out;
  out.loss = &loss;
  for (std::size_t budget : {std::size_t(128) << 10, std::size_t(1) << 20, std::size_t(16) << 20}) {
    p.memory_budget_bytes = budget;
    fl::LinearCrossEntropyPlan plan;
    ASSERT_EQ(fl::linear_cross_entropy_plan(p, out, {}, &plan), Status::Success);
    EXPECT_LE(plan.workspace_bytes + plan.internal_bytes, budget);
    EXPECT_GE(plan.chunk_rows, 1);
    EXPECT_LE(plan.chunk_rows * c.V * 4, std::int64_t(budget));
    // Nearly all of the budget is used (at most one row's worth plus alignment left over) unless N fits.
    if (plan.chunk_rows < c.N) {
      EXPECT_GT(plan.workspace_bytes + plan.internal_bytes + std::size_t(c.V + 2) * 4 + 2048, budget);
    }
  }
  p.memory_budget_bytes = std::size_t(c.V) * 4;  // less than one row plus a loss
  fl::LinearCrossEntropyPlan plan;
  EXPECT_EQ(fl::linear_cross_entropy_plan(p, out, {}, &plan), Status::InvalidArgument);
  EXPECT_EQ(fl::compute(p, out), Status::InvalidArgument);
}

}  // namespace
