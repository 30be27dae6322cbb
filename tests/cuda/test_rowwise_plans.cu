// Row-wise kernels on the emulated device: every strategy provably runs (the launch records name the
// kernel and its cluster size, so a plan that silently fell back would fail here) and matches the
// CPU path under the shared tolerance of `fusedloss validate` (cli/compare.hpp); and the outputs are
// bitwise identical under every scheduling order of the emulated device.
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
  EXPECT_EQ(fusedloss::compute_sync(p, o, cfg), Status::Success);

  Outputs out{HostTensor(DType::Float32, {}), HostTensor(pr.dtype, {pr.N, pr.C})};
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
    if (r.kernel.find("regs_kernel") != std::string::npos || r.kernel.find("stream_kernel") != std::string::npos) {
      found = r;
      ++count;
    }
  }
  EXPECT_EQ(count, 1) << "expected one row kernel launch";
  return found;
}

void expect_plan(const fusedloss_sim::LaunchRecord& r, Family f, Plan plan, int K, DType d) {
  const std::string prefix = std::string(f == Family::SparseCE ? "sparse_ce" : (f == Family::SoftCE ? "soft_ce" : "kl_logits"));
  const std::vector<std::string> a = template_args(r.kernel);
  ASSERT_GE(a.size(), 2u) << r.kernel;
  const std::string vec = a[1];
  switch (plan) {
    case Plan::Warp:
    case Plan::Block:
    case Plan::Cluster: {
      EXPECT_NE(r.kernel.find(prefix + "_regs_kernel"), std::string::npos) << r.kernel;
      ASSERT_GE(a.size(), 4u) << r.kernel;
      const int mode = std::atoi(a[3].c_str());
      EXPECT_EQ(mode, plan == Plan::Warp ? 0 : (plan == Plan::Block ? 1 : 2)) << r.kernel;
      EXPECT_EQ(r.cluster, plan == Plan::Cluster ? static_cast<unsigned>(K) : 1u) << r.kernel;
      if (plan == Plan::Cluster) EXPECT_EQ(r.grid.x % static_cast<unsigned>(K), 0u);
      EXPECT_EQ(vec, d == DType::Float32 ? "4" : "8") << r.kernel;
      break;
    }
    case Plan::Stream:
    case Plan::Scalar:
      EXPECT_NE(r.kernel.find(prefix + "_stream_kernel"), std::string::npos) << r.kernel;
      EXPECT_EQ(r.cluster, 1u);
      EXPECT_EQ(vec, plan == Plan::Scalar ? "1" : (d == DType::Float32 ? "4" : "8")) << r.kernel;
      break;
  }
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
  expect_plan(main_kernel(), c.family, c.plan, c.K, c.dtype);
  const Outputs cpu = run(pr, Backend::CPU);
  expect_close(gpu, cpu, c.dtype, case_name({c, 0}) + " C=" + std::to_string(C));
}

INSTANTIATE_TEST_SUITE_P(EveryStrategy, RowwisePlan, ::testing::ValuesIn(all_cases()), case_name);

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
