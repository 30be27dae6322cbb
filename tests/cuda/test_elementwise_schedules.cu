// Elementwise kernels under every scheduling order of the emulated device: the same bits (the
// deterministic tile reduction must not depend on which block or warp runs first).
// Emulated-device only (on a GPU the order is not a parameter).
#if defined(FUSEDLOSS_EMULATED_DEVICE)

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "fusedloss/api.hpp"
#include "fusedloss/float16.hpp"
#include "fusedloss_sim/sim.hpp"

namespace {

using fusedloss::DType;
using fusedloss::Loss;
using fusedloss::Reduction;

struct Out {
  std::vector<unsigned char> loss, grad;
  std::int64_t errors = -1;
};

Out run(Loss loss, DType d, Reduction red, std::int64_t n, bool weights) {
  const std::size_t es = d == DType::Float32 ? 4 : 2;
  std::vector<unsigned char> hx(static_cast<std::size_t>(n) * es), hy(hx.size()), hw(hx.size());
  std::uint64_t z = 12345;
  auto next = [&] {
    z = z * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<float>(static_cast<double>(z >> 11) / 9007199254740992.0);
  };
  auto put = [&](std::vector<unsigned char>& b, std::int64_t i, float v) {
    if (d == DType::Float32) {
      std::memcpy(b.data() + 4 * i, &v, 4);
    } else {
      const std::uint16_t bits = d == DType::Float16 ? fusedloss::to_half(v).bits : fusedloss::to_bfloat16(v).bits;
      std::memcpy(b.data() + 2 * i, &bits, 2);
    }
  };
  const bool probabilities = loss == Loss::BCE;
  for (std::int64_t i = 0; i < n; ++i) {
    put(hx, i, probabilities ? next() : 6.f * next() - 3.f);
    put(hy, i, loss == Loss::BCE || loss == Loss::BCEWithLogits ? (next() < 0.5f ? 0.f : 1.f) : 6.f * next() - 3.f);
    put(hw, i, 0.5f + next());
  }
  void *x = nullptr, *y = nullptr, *w = nullptr, *g = nullptr, *l = nullptr, *e = nullptr;
  const std::size_t loss_bytes = red == Reduction::None ? static_cast<std::size_t>(n) * 4 : 4;
  EXPECT_EQ(cudaMalloc(&x, hx.size()), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&y, hx.size()), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&w, hx.size()), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&g, hx.size()), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&l, loss_bytes), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&e, 8), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(x, hx.data(), hx.size(), cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(y, hy.data(), hy.size(), cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(w, hw.data(), hw.size(), cudaMemcpyHostToDevice), cudaSuccess);
  fusedloss::ElementwiseProblem p;
  p.loss = loss;
  p.dtype = d;
  p.n = n;
  p.input = x;
  p.target = y;
  p.weight = weights ? w : nullptr;
  p.reduction = red;
  fusedloss::LossOutputs o;
  o.loss = static_cast<float*>(l);
  o.grad = g;
  o.error_count = static_cast<std::int64_t*>(e);
  fusedloss::ExecutionConfig cfg;
  cfg.backend = fusedloss::Backend::CUDA;
  EXPECT_EQ(fusedloss::compute_sync(p, o, cfg), fusedloss::Status::Success);
  Out out;
  out.loss.resize(loss_bytes);
  out.grad.resize(hx.size());
  EXPECT_EQ(cudaMemcpy(out.loss.data(), l, loss_bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(out.grad.data(), g, hx.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(&out.errors, e, 8, cudaMemcpyDeviceToHost), cudaSuccess);
  for (void* b : {x, y, w, g, l, e}) cudaFree(b);
  return out;
}

TEST(ElementwiseSchedules, OutputsAreBitwiseIdenticalUnderEverySchedule) {
  struct Case {
    Loss loss;
    DType dtype;
    Reduction red;
    bool weights;
  };
  // 300007 elements: 74 tiles, every block of the grid busy, a partial last tile.
  for (const Case c : {Case{Loss::MSE, DType::Float32, Reduction::Mean, true},
                       Case{Loss::Huber, DType::BFloat16, Reduction::Sum, false},
                       Case{Loss::BCEWithLogits, DType::Float16, Reduction::Mean, true},
                       Case{Loss::BCE, DType::Float32, Reduction::Sum, false},
                       Case{Loss::RMSE, DType::BFloat16, Reduction::Mean, true},
                       Case{Loss::LogCosh, DType::Float32, Reduction::None, false}}) {
    std::vector<Out> outs;
    for (auto s : {fusedloss_sim::Schedule::RoundRobin, fusedloss_sim::Schedule::Reversed,
                   fusedloss_sim::Schedule::Random, fusedloss_sim::Schedule::WarpGreedy}) {
      fusedloss_sim::set_schedule({s, 99});
      outs.push_back(run(c.loss, c.dtype, c.red, 300007, c.weights));
    }
    fusedloss_sim::set_schedule({});
    for (std::size_t k = 1; k < outs.size(); ++k) {
      EXPECT_EQ(outs[k].loss, outs[0].loss) << fusedloss::loss_name(c.loss) << " schedule " << k << ": loss";
      EXPECT_EQ(outs[k].grad, outs[0].grad) << fusedloss::loss_name(c.loss) << " schedule " << k << ": gradient";
      EXPECT_EQ(outs[k].errors, outs[0].errors) << fusedloss::loss_name(c.loss) << " schedule " << k;
    }
  }
}

}  // namespace

#endif  // FUSEDLOSS_EMULATED_DEVICE
