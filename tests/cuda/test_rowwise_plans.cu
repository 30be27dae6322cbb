// Row-wise kernels on the emulated device: every strategy provably runs — the plan the launcher uses
// (detail::plan_rowwise) is asserted for each shape, and the launch records (kernel name, block
// size, cluster size) must match it, so a plan that silently fell back would fail here — and
// matches the CPU path under the shared tolerance of `fusedloss validate` (cli/compare.hpp); a
// forced strategy that cannot run is an error; and the outputs are bitwise identical under every
// scheduling order of the emulated device.
//
// Emulated-device only: a real GPU does not report which kernel ran (tests/cuda/test_rowwise_cuda.cu
// covers the same strategies there by result).
#if defined(FUSEDLOSS_EMULATED_DEVICE)

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cli/compare.hpp"
#include "cli/tensor.hpp"
#include "cuda/rowwise_plan.hpp"
#include "fusedloss/api.hpp"
#include "fusedloss/float16.hpp"
#include "fusedloss_sim/sim.hpp"

namespace {

using fusedloss::Backend;
using fusedloss::DType;
using fusedloss::Loss;
using fusedloss::Reduction;
using fusedloss::Status;
using fusedloss_cli::HostTensor;

enum class Family { SparseCE, SoftCE, KLLogits };
enum class Plan { Warp, Block, Cluster, Stream, Scalar };

const char* family_name(Family f) {
  return f == Family::SparseCE ? "sparse_ce" : (f == Family::SoftCE ? "soft_ce" : "kl_logits");
}
const char* plan_name(Plan p) {
  switch (p) {
    case Plan::Warp: return "warp";
    case Plan::Block: return "block";
    case Plan::Cluster: return "cluster";
    case Plan::Stream: return "stream";
    default: return "scalar";
  }
}

/// Columns that put a row of `family` × `dtype` into `plan` (cluster: K blocks). Mirrors the
/// register budgets of cuda/rowwise.cu (16-byte vectors, items per thread, 32 lanes / 512 threads
/// per block, at most 8 blocks per cluster): if those change, the kernel names below tell.
std::int64_t columns_for(Family f, DType d, Plan p, int K) {
  const std::int64_t vec = d == DType::Float32 ? 4 : 8;
  const std::int64_t items = f == Family::SparseCE ? 8 : (d == DType::Float32 ? 4 : 2);
  const std::int64_t per_block = 512 * items * vec;
  switch (p) {
    case Plan::Warp: return 32 * items * vec - 4 * vec;
    case Plan::Block: return per_block / 2 + 8;
    case Plan::Cluster: return per_block * (K - 1) + 16;
    case Plan::Stream: return per_block * 8 + 64;
    default: return 999;  // any size: the scalar plan is chosen by misalignment
  }
}

struct Problem {
  Family family;
  DType dtype;
  std::int64_t N, C;
  HostTensor x, t;             // input [N, C]; dense target (soft CE, kl_logits)
  std::vector<std::int64_t> labels;
};

void fill(HostTensor& h, std::mt19937_64& rng, bool probabilities) {
  std::normal_distribution<double> normal(0.0, 3.0);
  const std::int64_t C = h.shape[1];
  for (std::int64_t n = 0; n < h.shape[0]; ++n) {
    std::vector<double> row(static_cast<std::size_t>(C));
    double m = -1e300, s = 0;
    for (auto& v : row) m = std::max(m, v = normal(rng));
    if (probabilities) {
      for (auto& v : row) s += (v = std::exp(v - m));
      for (auto& v : row) v /= s;
    }
    for (std::int64_t c = 0; c < C; ++c) fusedloss_cli::set_value(h, n * C + c, row[static_cast<std::size_t>(c)]);
  }
}

Problem make_problem(Family f, DType d, std::int64_t N, std::int64_t C, std::uint64_t seed) {
  Problem p{f, d, N, C, HostTensor(d, {N, C}), HostTensor(), {}};
  std::mt19937_64 rng(seed);
  fill(p.x, rng, false);
  if (f == Family::SparseCE) {
    for (std::int64_t n = 0; n < N; ++n) p.labels.push_back(static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(C)));
  } else {
    p.t = HostTensor(d, {N, C});
    fill(p.t, rng, f == Family::SoftCE);
  }
  return p;
}

struct Outputs {
  HostTensor loss, grad;
  Status status = Status::Success;
  fusedloss::detail::RowwisePlan plan;  ///< what plan_rowwise chose for the call (CUDA only)
  Status plan_status = Status::Success;
};

/// Runs the problem on `backend`. offset_elems shifts the gradient buffer by that many elements:
/// 1 makes it incongruent (mod 16 bytes) with the input, which only the scalar plan can serve.
Outputs run(const Problem& pr, Backend backend, int offset_elems = 0) {
  const std::size_t es = pr.dtype == DType::Float32 ? 4 : 2;
  const std::size_t bytes = static_cast<std::size_t>(pr.N * pr.C) * es;
  const std::size_t off = static_cast<std::size_t>(offset_elems) * es;
  const bool cuda = backend == Backend::CUDA;
  auto alloc = [&](std::size_t n) -> unsigned char* {
    void* p = nullptr;
    if (cuda) {
      EXPECT_EQ(cudaMalloc(&p, n + 64), cudaSuccess);
      EXPECT_EQ(cudaMemset(p, 0x5A, n + 64), cudaSuccess);
    } else {
      p = std::malloc(n + 64);
      std::memset(p, 0x5A, n + 64);
    }
    return static_cast<unsigned char*>(p);
  };
  auto put = [&](unsigned char* dst, const void* src, std::size_t n) {
    if (cuda) {
      EXPECT_EQ(cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice), cudaSuccess);
    } else {
      std::memcpy(dst, src, n);
    }
  };
  auto get = [&](void* dst, const unsigned char* src, std::size_t n) {
    if (cuda) {
      EXPECT_EQ(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost), cudaSuccess);
    } else {
      std::memcpy(dst, src, n);
    }
  };
  unsigned char* x = alloc(bytes);
  unsigned char* t = pr.t.bytes.empty() ? nullptr : alloc(bytes);
  unsigned char* g = alloc(bytes);
  unsigned char* y = alloc(static_cast<std::size_t>(pr.N) * 8);
  unsigned char* l = alloc(4);
  put(x, pr.x.data(), bytes);
  if (t != nullptr) put(t, pr.t.data(), bytes);
  if (!pr.labels.empty()) put(y, pr.labels.data(), pr.labels.size() * 8);

  fusedloss::RowwiseProblem p;
  p.loss = pr.family == Family::KLLogits ? Loss::KLDivLogits : Loss::CrossEntropy;
  p.dtype = pr.dtype;
  p.rows = pr.N;
  p.classes = pr.C;
  p.input = x;
  p.target = t;
  p.labels = pr.labels.empty() ? nullptr : y;
  p.label_dtype = DType::Int64;
  p.reduction = Reduction::Sum;
  fusedloss::LossOutputs o;
  o.loss = reinterpret_cast<float*>(l);
  o.grad = g + off;
  fusedloss::ExecutionConfig cfg;
  cfg.backend = backend;
  cfg.allow_stream_ordered_alloc = true;
  Outputs out{HostTensor(DType::Float32, {}), HostTensor(pr.dtype, {pr.N, pr.C})};
  if (cuda) out.plan_status = fusedloss::detail::plan_rowwise(p, o, 0, &out.plan);
  out.status = fusedloss::compute_sync(p, o, cfg);
  EXPECT_EQ(out.status, out.plan_status);
  get(out.loss.data(), l, 4);
  get(out.grad.data(), g + off, bytes);
  for (unsigned char* b : {x, t, g, y, l}) {
    if (b == nullptr) continue;
    if (cuda) {
      cudaFree(b);
    } else {
      std::free(b);
    }
  }
  return out;
}

/// The template arguments of a demangled kernel name: "k<float, 4, 8, 2, false, 0>(...)" → {float, 4, ...}.
std::vector<std::string> template_args(const std::string& name) {
  std::vector<std::string> args;
  const std::size_t open = name.find('<');
  if (open == std::string::npos) return args;
  int depth = 0;
  std::string cur;
  for (std::size_t i = open + 1; i < name.size(); ++i) {
    const char c = name[i];
    if (c == '<' || c == '(') ++depth;
    if ((c == '>' || c == ')') && depth-- == 0) break;
    if (c == ',' && depth == 0) {
      args.push_back(cur);
      cur.clear();
      continue;
    }
    if (c != ' ' || !cur.empty()) cur += c;
  }
  args.push_back(cur);
  return args;
}

/// The one main (row) kernel of the call: its name and cluster size.
fusedloss_sim::LaunchRecord main_kernel() {
  fusedloss_sim::LaunchRecord found;
  int count = 0;
  for (const auto& r : fusedloss_sim::launches()) {
    if (r.kernel.find("regs_kernel") != std::string::npos || r.kernel.find("stream_kernel") != std::string::npos ||
        r.kernel.find("nll_kernel") != std::string::npos || r.kernel.find("kl_div_kernel") != std::string::npos) {
      found = r;
      ++count;
    }
  }
  EXPECT_EQ(count, 1) << "expected one row kernel launch";
  return found;
}

namespace fd = fusedloss::detail;
using fusedloss::detail::RowwiseStrategy;

RowwiseStrategy strategy_of(Plan p) { return static_cast<RowwiseStrategy>(static_cast<int>(p)); }

/// The launch record is the plan: kernel family and group mode, vector width, block and cluster size.
void expect_launch_is_plan(const fusedloss_sim::LaunchRecord& r, const fd::RowwisePlan& plan) {
  const std::vector<std::string> a = template_args(r.kernel);
  ASSERT_GE(a.size(), 2u) << r.kernel;
  EXPECT_EQ(std::atoi(a[1].c_str()), plan.vec) << r.kernel;
  EXPECT_EQ(r.block.x, static_cast<unsigned>(plan.threads)) << r.kernel;
  EXPECT_EQ(r.cluster, static_cast<unsigned>(plan.cluster)) << r.kernel;
  const bool regs = r.kernel.find("_regs_kernel") != std::string::npos;
  const bool one_pass = r.kernel.find("nll_kernel") != std::string::npos || r.kernel.find("kl_div_kernel") != std::string::npos;
  switch (plan.strategy) {
    case RowwiseStrategy::Warp:
    case RowwiseStrategy::Block:
    case RowwiseStrategy::Cluster:
      if (!one_pass) {
        EXPECT_TRUE(regs) << r.kernel;
        ASSERT_GE(a.size(), 4u) << r.kernel;
        EXPECT_EQ(std::atoi(a[3].c_str()), static_cast<int>(plan.strategy)) << r.kernel;
      } else {
        EXPECT_EQ(plan.strategy, RowwiseStrategy::Warp);
        EXPECT_EQ(a[2], "0") << r.kernel;  // group mode: warp
      }
      if (plan.strategy == RowwiseStrategy::Cluster) EXPECT_EQ(r.grid.x % static_cast<unsigned>(plan.cluster), 0u);
      break;
    case RowwiseStrategy::Stream:
    case RowwiseStrategy::Scalar:
      EXPECT_FALSE(regs) << r.kernel;
      EXPECT_EQ(plan.vec == 1, plan.strategy == RowwiseStrategy::Scalar) << r.kernel;
      break;
  }
}

void expect_plan(const Outputs& out, Family f, Plan plan, int K, DType d) {
  const std::string prefix = std::string(f == Family::SparseCE ? "sparse_ce" : (f == Family::SoftCE ? "soft_ce" : "kl_logits"));
  ASSERT_EQ(out.plan_status, Status::Success);
  EXPECT_EQ(out.plan.strategy, strategy_of(plan)) << rowwise_strategy_name(out.plan.strategy);
  EXPECT_EQ(out.plan.cluster, plan == Plan::Cluster ? K : 1);
  EXPECT_EQ(out.plan.vec, plan == Plan::Scalar ? 1 : (d == DType::Float32 ? 4 : 8));
  const fusedloss_sim::LaunchRecord r = main_kernel();
  EXPECT_NE(r.kernel.find(prefix + (plan == Plan::Stream || plan == Plan::Scalar ? "_stream_kernel" : "_regs_kernel")),
            std::string::npos)
      << r.kernel;
  expect_launch_is_plan(r, out.plan);
}

void expect_close(const Outputs& gpu, const Outputs& cpu, DType d, const std::string& what) {
  const fusedloss_cli::Tolerance tol = fusedloss_cli::tolerance_for(d);
  const auto l = fusedloss_cli::compare(gpu.loss, cpu.loss, fusedloss_cli::CompareKind::Loss, tol);
  const auto g = fusedloss_cli::compare(gpu.grad, cpu.grad, fusedloss_cli::CompareKind::Grad, tol);
  EXPECT_TRUE(l.pass()) << what << ": loss " << l.worst_got << " vs " << l.worst_ref;
  EXPECT_TRUE(g.pass()) << what << ": " << g.failures << " gradient elements outside the tolerance, worst at "
                        << g.worst << ": " << g.worst_got << " vs " << g.worst_ref;
}

struct PlanCase {
  Family family;
  DType dtype;
  Plan plan;
  int K;
};

std::string case_name(const ::testing::TestParamInfo<PlanCase>& info) {
  const PlanCase& c = info.param;
  std::string s = std::string(family_name(c.family)) + "_" + (c.dtype == DType::Float32 ? "f32" : "bf16") + "_" +
                  plan_name(c.plan);
  if (c.plan == Plan::Cluster) s += std::to_string(c.K);
  return s;
}

std::vector<PlanCase> all_cases() {
  std::vector<PlanCase> v;
  for (Family f : {Family::SparseCE, Family::SoftCE, Family::KLLogits})
    for (DType d : {DType::Float32, DType::BFloat16}) {
      v.push_back({f, d, Plan::Warp, 1});
      v.push_back({f, d, Plan::Block, 1});
      for (int K = 2; K <= 8; ++K)
        if (f == Family::SparseCE || K == 2 || K == 8) v.push_back({f, d, Plan::Cluster, K});
      v.push_back({f, d, Plan::Stream, 1});
      v.push_back({f, d, Plan::Scalar, 1});
    }
  return v;
}

class RowwisePlan : public ::testing::TestWithParam<PlanCase> {};

TEST_P(RowwisePlan, RunsThePlanAndMatchesCpuPath) {
  const PlanCase c = GetParam();
  const std::int64_t C = columns_for(c.family, c.dtype, c.plan, c.K);
  const Problem pr = make_problem(c.family, c.dtype, 3, C, 42 + static_cast<std::uint64_t>(C));
  fusedloss_sim::clear_launches();
  const Outputs gpu = run(pr, Backend::CUDA, c.plan == Plan::Scalar ? 1 : 0);
  expect_plan(gpu, c.family, c.plan, c.K, c.dtype);
  const Outputs cpu = run(pr, Backend::CPU);
  expect_close(gpu, cpu, c.dtype, case_name({c, 0}) + " C=" + std::to_string(C));
}

INSTANTIATE_TEST_SUITE_P(EveryStrategy, RowwisePlan, ::testing::ValuesIn(all_cases()), case_name);

/// Scoped FUSEDLOSS_ROWWISE_STRATEGY (unset when null).
struct ForceScope {
  explicit ForceScope(const char* v) {
    if (v != nullptr) setenv("FUSEDLOSS_ROWWISE_STRATEGY", v, 1);
  }
  ~ForceScope() { unsetenv("FUSEDLOSS_ROWWISE_STRATEGY"); }
};

struct Forced {
  Status plan_status, status;
  fd::RowwisePlan plan;
};

/// One call of `loss` on a [3, C] problem of zeros (labels 0) under FUSEDLOSS_ROWWISE_STRATEGY=force:
/// the plan, the call's status, and (when it ran) the launch record checked against the plan.
Forced run_forced(Loss loss, DType d, std::int64_t C, const char* force, int grad_offset_elems = 0) {
  ForceScope scope(force);
  const std::int64_t N = 3;
  const std::size_t es = d == DType::Float32 ? 4 : 2;
  const std::size_t bytes = static_cast<std::size_t>(N * C) * es + 64;
  void *x = nullptr, *t = nullptr, *g = nullptr, *y = nullptr, *l = nullptr;
  EXPECT_EQ(cudaMalloc(&x, bytes), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&t, bytes), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&g, bytes), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&y, N * 8), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&l, 4), cudaSuccess);
  for (void* b : {x, t, g}) EXPECT_EQ(cudaMemset(b, 0, bytes), cudaSuccess);
  EXPECT_EQ(cudaMemset(y, 0, N * 8), cudaSuccess);
  fusedloss::RowwiseProblem p;
  p.loss = loss;
  p.dtype = d;
  p.rows = N;
  p.classes = C;
  p.input = x;
  const bool labels = loss == Loss::NLL || loss == Loss::CrossEntropy;
  p.labels = labels ? y : nullptr;
  p.target = labels ? nullptr : t;
  p.reduction = Reduction::Sum;
  fusedloss::LossOutputs o;
  o.loss = static_cast<float*>(l);
  o.grad = static_cast<unsigned char*>(g) + grad_offset_elems * es;
  fusedloss::ExecutionConfig cfg;
  cfg.backend = Backend::CUDA;
  cfg.allow_stream_ordered_alloc = true;
  Forced f{};
  f.plan_status = fusedloss::detail::plan_rowwise(p, o, 0, &f.plan);
  fusedloss_sim::clear_launches();
  f.status = fusedloss::compute_sync(p, o, cfg);
  EXPECT_EQ(f.status, f.plan_status) << (force ? force : "auto");
  if (f.status == Status::Success) {
    expect_launch_is_plan(main_kernel(), f.plan);
  } else {
    for (const auto& r : fusedloss_sim::launches()) ADD_FAILURE() << "a refused plan launched " << r.kernel;
  }
  for (void* b : {x, t, g, y, l}) cudaFree(b);
  return f;
}

// Every row-wise loss honours the forced strategy, and one that cannot run is an error.
TEST(RowwisePlanForced, EveryLossHonoursTheForcedStrategy) {
  for (DType d : {DType::Float32, DType::BFloat16}) {
    // Sparse cross_entropy: C = 3000 fits a warp only in bf16 (items 8 · 32 lanes · 8 = 2048: no).
    EXPECT_EQ(run_forced(Loss::CrossEntropy, d, 100, "block").plan.strategy, RowwiseStrategy::Block);
    EXPECT_EQ(run_forced(Loss::CrossEntropy, d, 100, "stream").plan.strategy, RowwiseStrategy::Stream);
    EXPECT_EQ(run_forced(Loss::CrossEntropy, d, 100, "scalar").plan.strategy, RowwiseStrategy::Scalar);
    const Forced cl = run_forced(Loss::CrossEntropy, d, 100, "cluster");
    EXPECT_EQ(cl.plan.strategy, RowwiseStrategy::Cluster);
    EXPECT_EQ(cl.plan.cluster, 1);
    EXPECT_EQ(run_forced(Loss::CrossEntropy, d, 5000, "warp").status, Status::NotSupported);
    EXPECT_EQ(run_forced(Loss::CrossEntropy, d, 100, "stream", 1).status, Status::NotSupported);
    EXPECT_EQ(run_forced(Loss::CrossEntropy, d, 100, nullptr, 1).plan.strategy, RowwiseStrategy::Scalar);
    // nll and kl_div: warp for short rows, a block per row ("stream"), scalar; no register plans.
    for (Loss loss : {Loss::NLL, Loss::KLDiv}) {
      EXPECT_EQ(run_forced(loss, d, 100, nullptr).plan.strategy, RowwiseStrategy::Warp);
      EXPECT_EQ(run_forced(loss, d, 5000, nullptr).plan.strategy, RowwiseStrategy::Stream);
      EXPECT_EQ(run_forced(loss, d, 100, "stream").plan.strategy, RowwiseStrategy::Stream);
      EXPECT_EQ(run_forced(loss, d, 100, "warp").plan.strategy, RowwiseStrategy::Warp);
      EXPECT_EQ(run_forced(loss, d, 100, "nocluster").plan.strategy, RowwiseStrategy::Warp);
      const Forced sc = run_forced(loss, d, 100, "scalar");
      EXPECT_EQ(sc.plan.strategy, RowwiseStrategy::Scalar);
      EXPECT_EQ(sc.plan.vec, 1);
      EXPECT_EQ(run_forced(loss, d, 5000, "warp").status, Status::NotSupported);
      EXPECT_EQ(run_forced(loss, d, 100, "block").status, Status::NotSupported);
      EXPECT_EQ(run_forced(loss, d, 100, "cluster").status, Status::NotSupported);
    }
    EXPECT_EQ(run_forced(Loss::KLDiv, d, 100, "stream", 1).status, Status::NotSupported);
    EXPECT_EQ(run_forced(Loss::KLDiv, d, 100, nullptr, 1).plan.strategy, RowwiseStrategy::Scalar);
  }
  EXPECT_EQ(run_forced(Loss::KLDivLogits, DType::Float32, 100, "no-such-strategy").status, Status::InvalidArgument);
}

/// The same calls under every scheduling order of the emulated device: bitwise identical outputs
/// (a difference would be an order dependence that real hardware could show too).
TEST(RowwiseSchedules, OutputsAreBitwiseIdenticalUnderEverySchedule) {
  for (const PlanCase& c : all_cases()) {
    if (c.plan == Plan::Cluster && c.K != 3) continue;
    const std::int64_t C = columns_for(c.family, c.dtype, c.plan, c.K);
    const Problem pr = make_problem(c.family, c.dtype, 3, C, 7);
    std::vector<Outputs> outs;
    for (auto s : {fusedloss_sim::Schedule::RoundRobin, fusedloss_sim::Schedule::Reversed,
                   fusedloss_sim::Schedule::Random, fusedloss_sim::Schedule::WarpGreedy}) {
      fusedloss_sim::set_schedule({s, 2024});
      outs.push_back(run(pr, Backend::CUDA, c.plan == Plan::Scalar ? 1 : 0));
    }
    fusedloss_sim::set_schedule({});
    for (std::size_t k = 1; k < outs.size(); ++k) {
      EXPECT_EQ(outs[k].loss.bytes, outs[0].loss.bytes) << case_name({c, 0}) << " schedule " << k << ": loss";
      EXPECT_EQ(outs[k].grad.bytes, outs[0].grad.bytes) << case_name({c, 0}) << " schedule " << k << ": gradient";
    }
  }
}

}  // namespace

#endif  // FUSEDLOSS_EMULATED_DEVICE
