// Reliability items 9, 11, 12 and 14 on the CPU path: fp16/bf16 sums over 10^6 items, bitwise
// determinism (repeats and thread counts), concurrent host threads, in-place gradients.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "reliability/reliability_cases.hpp"

namespace {

using namespace reltest;

// ---------------------------------------------------------------------------------------------------
// 9. Half-precision inputs, 10^6 items with a loss of about 10 each: the float32 loss (≈ 1e7 for sum)
//    must not overflow and must be within 1e-5 (relative) of the float64 sum of the same values.
// ---------------------------------------------------------------------------------------------------
TEST(ReliabilityPrecision, HalfPrecisionElementwiseMillion) {
  const std::int64_t n = 1000000;
  for (DType d : {DType::Float16, DType::BFloat16})
    for (Loss l : {Loss::MSE, Loss::BCEWithLogits}) {
      ElemCase c(l, d, n);
      std::mt19937_64 rng(1);
      std::uniform_real_distribution<double> u(-0.25, 0.25);
      long double ref = 0;
      for (std::int64_t i = 0; i < n; ++i) {
        if (l == Loss::MSE) {  // r ≈ sqrt(10)
          c.x.set(i, 3.1623 + u(rng));
          c.y.set(i, 0.0);
          const long double r = c.x.get(i);
          ref += r * r;
        } else {  // −log σ(x) at x ≈ −10, y = 1
          c.x.set(i, -10.0 + u(rng));
          c.y.set(i, 1.0);
          const long double x = c.x.get(i);
          ref += -x + std::log1p(std::exp(x));  // softplus(−x) for x < 0
        }
      }
      for (Reduction r : {Reduction::Sum, Reduction::Mean}) {
        c.reduction = r;
        SCOPED_TRACE(c.tag());
        const Outcome o = run(c.problem(), /*with_grad=*/true);
        ASSERT_EQ(o.status, Status::Success);
        const double want = static_cast<double>(r == Reduction::Sum ? ref : ref / n);
        ASSERT_TRUE(std::isfinite(o.loss[0]));
        EXPECT_LE(std::fabs(o.loss[0] - want) / want, 1e-5) << o.loss[0] << " vs " << want;
        for (std::int64_t i = 0; i < n; i += 9973) ASSERT_TRUE(std::isfinite(o.grad.get(i))) << i;
      }
    }
}

TEST(ReliabilityPrecision, HalfPrecisionCrossEntropyMillionRows) {
  const std::int64_t N = 1000000, C = 4;
  for (DType d : {DType::Float16, DType::BFloat16}) {
    RowCase c(RowKind::CE, d, N, C);
    std::mt19937_64 rng(2);
    std::uniform_real_distribution<double> u(-0.5, 0.5);
    long double ref = 0;
    for (std::int64_t n = 0; n < N; ++n) {
      // Target logit ≈ −10 below three logits ≈ 0: loss ≈ 10 + log 3.
      for (std::int64_t j = 0; j < C; ++j) c.input.set(n * C + j, j == C - 1 ? -10.0 + u(rng) : u(rng));
      c.labels[n] = C - 1;
      long double m = -1e30L, s = 0;
      for (std::int64_t j = 0; j < C; ++j) m = std::max<long double>(m, c.input.get(n * C + j));
      for (std::int64_t j = 0; j < C; ++j) s += std::exp(static_cast<long double>(c.input.get(n * C + j)) - m);
      ref += m + std::log(s) - static_cast<long double>(c.input.get(n * C + C - 1));
    }
    for (Reduction r : {Reduction::Sum, Reduction::Mean}) {
      c.reduction = r;
      SCOPED_TRACE(c.tag());
      const Outcome o = run(c.problem(), /*with_grad=*/false, /*with_lse=*/false);
      ASSERT_EQ(o.status, Status::Success);
      const double want = static_cast<double>(r == Reduction::Sum ? ref : ref / N);
      ASSERT_TRUE(std::isfinite(o.loss[0]));
      EXPECT_LE(std::fabs(o.loss[0] - want) / want, 1e-5) << o.loss[0] << " vs " << want;
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// The workloads of the determinism and concurrency tests: several chunks each, every output on.
// ---------------------------------------------------------------------------------------------------
// Each workload's problem is built once (RowCase::problem() rebuilds the label buffer, so it must not
// run concurrently); the shared_ptr keeps the data alive, the threads only read it.
struct Workload {
  std::string name;
  std::function<Outcome(int threads)> run;
};

std::vector<Workload> workloads() {
  std::vector<Workload> w;
  {
    auto c = std::make_shared<RowCase>(RowKind::CE, DType::Float32, 600, 257);
    c->input = random_buf(DType::Float32, 600 * 257, -6, 6, 101);
    for (std::int64_t n = 0; n < 600; ++n) c->labels[n] = n % 17 == 0 ? -100 : (n * 31) % 257;
    c->class_weight.assign(257, 1.0f);
    for (int j = 0; j < 257; j += 5) c->class_weight[j] = 0.5f;
    c->params.label_smoothing = 0.1;
    c->params.z_loss = 1e-4;
    c->reduction = Reduction::Mean;
    w.push_back({"cross_entropy f32 600x257 mean", [c, p = c->problem()](int t) { return run(p, true, true, t); }});
  }
  {
    // Few long rows: each row is split into segments across threads (cpu/rowwise.cpp).
    auto c = std::make_shared<RowCase>(RowKind::CE, DType::BFloat16, 5, 70001);
    c->input = random_buf(DType::BFloat16, 5 * 70001, -6, 6, 111);
    for (std::int64_t n = 0; n < 5; ++n) c->labels[n] = n == 3 ? -100 : (n * 13577) % 70001;
    c->class_weight.assign(70001, 1.0f);
    for (int j = 0; j < 70001; j += 7) c->class_weight[j] = 0.25f;
    c->params.label_smoothing = 0.05;
    c->reduction = Reduction::Mean;
    w.push_back({"cross_entropy bf16 5x70001 mean (split rows)", [c, p = c->problem()](int t) { return run(p, true, true, t); }});
  }
  {
    auto c = std::make_shared<ElemCase>(Loss::Huber, DType::BFloat16, 3 * 32768 + 5);
    c->x = random_buf(DType::BFloat16, c->n, -3, 3, 102);
    c->y = random_buf(DType::BFloat16, c->n, -3, 3, 103);
    c->w = random_buf(DType::BFloat16, c->n, 0, 2, 104);
    c->reduction = Reduction::Mean;
    w.push_back({"huber bf16 98309 mean weighted", [c, p = c->problem()](int t) { return run(p, true, t); }});
  }
  {
    auto c = std::make_shared<RowCase>(RowKind::KLLogits, DType::Float16, 130, 1000);
    c->input = random_buf(DType::Float16, 130 * 1000, -5, 5, 105);
    c->target = random_buf(DType::Float16, 130 * 1000, -5, 5, 106);
    c->params.temperature = 2.0;
    w.push_back({"kl_div_logits f16 130x1000 batchmean", [c, p = c->problem()](int t) { return run(p, true, false, t); }});
  }
  {
    auto c = std::make_shared<ElemCase>(Loss::RMSE, DType::Float32, 100003);
    c->x = random_buf(DType::Float32, c->n, -2, 2, 107);
    c->y = random_buf(DType::Float32, c->n, -2, 2, 108);
    w.push_back({"rmse f32 100003", [c, p = c->problem()](int t) { return run(p, true, t); }});
  }
  {
    auto c = std::make_shared<ElemCase>(Loss::BCEWithLogits, DType::Float32, 64 * 1031);
    c->x = random_buf(DType::Float32, c->n, -8, 8, 109);
    c->y = random_buf(DType::Float32, c->n, 0, 1, 110);
    c->pos_col.assign(64, 1.5f);
    c->reduction = Reduction::Sum;
    w.push_back({"bce_with_logits f32 per-column sum", [c, p = c->problem()](int t) { return run(p, true, t); }});
  }
  return w;
}

// ---------------------------------------------------------------------------------------------------
// 11. Determinism: 100 repeated calls → bitwise identical loss, lse and gradient; and the same
//     bits for cpu_threads = 1, 2, 3, 7 (and 0 = hardware concurrency).
// ---------------------------------------------------------------------------------------------------
TEST(ReliabilityDeterminism, HundredRepeatsBitwiseIdentical) {
  int runs = 0;
  for (const Workload& wl : workloads()) {
    SCOPED_TRACE(wl.name);
    const Outcome first = wl.run(0);
    ASSERT_EQ(first.status, Status::Success);
    for (int i = 1; i < 100; ++i) {
      ASSERT_TRUE(wl.run(0).bitwise_equal(first)) << "repeat " << i;
      ++runs;
    }
  }
  RecordProperty("repeated_runs", runs);
}

TEST(ReliabilityDeterminism, IndependentOfThreadCount) {
  for (const Workload& wl : workloads()) {
    SCOPED_TRACE(wl.name);
    const Outcome ref = wl.run(1);
    ASSERT_EQ(ref.status, Status::Success);
    for (int t : {2, 3, 7, 0}) EXPECT_TRUE(wl.run(t).bitwise_equal(ref)) << "cpu_threads = " << t;
  }
}

// ---------------------------------------------------------------------------------------------------
// 12. Concurrency: 4 host threads run different losses at the same time (each with its own CPU
//     worker pool) → every result bitwise equal to the serial run. The CPU path is thread-safe.
// ---------------------------------------------------------------------------------------------------
TEST(ReliabilityConcurrency, FourHostThreadsDifferentLosses) {
  const std::vector<Workload> wls = workloads();
  std::vector<Outcome> serial;
  for (const Workload& wl : wls) serial.push_back(wl.run(2));
  const int kThreads = 4, kIters = 6;
  std::vector<int> mismatches(kThreads, 0), statuses(kThreads, 0);
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < kIters; ++i) {
        const std::size_t k = static_cast<std::size_t>(t + i) % wls.size();  // rotate: all workloads overlap
        const Outcome o = wls[k].run(1 + (t + i) % 3);
        if (o.status != Status::Success) ++statuses[t];
        if (!o.bitwise_equal(serial[k])) ++mismatches[t];
      }
    });
  }
  for (std::thread& th : pool) th.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(statuses[t], 0) << "thread " << t;
    EXPECT_EQ(mismatches[t], 0) << "thread " << t;
  }
}

// ---------------------------------------------------------------------------------------------------
// 14. In-place gradient (grad aliases the input exactly) equals the out-of-place result, for every
//     loss, dtype and reduction; with a row stride the padding keeps the input's values.
// ---------------------------------------------------------------------------------------------------
Outcome run_in_place(fusedloss::ElementwiseProblem p, Buf& io) {
  Outcome o;
  o.loss.assign(static_cast<std::size_t>(std::max<std::int64_t>(loss_count(p), 1)), 0.0f);
  fill_poison(o.loss);
  p.input = io.data();
  fusedloss::LossOutputs out;
  out.loss = o.loss.data();
  out.grad = io.data();
  out.error_count = &o.errors;
  fusedloss::ExecutionConfig cfg;
  cfg.backend = fusedloss::Backend::CPU;
  o.status = fusedloss::compute(p, out, cfg);
  o.grad = io;
  return o;
}

Outcome run_in_place(fusedloss::RowwiseProblem p, Buf& io, bool with_lse) {
  Outcome o;
  o.loss.assign(static_cast<std::size_t>(std::max<std::int64_t>(loss_count(p), 1)), 0.0f);
  fill_poison(o.loss);
  p.input = io.data();
  fusedloss::LossOutputs out;
  out.loss = o.loss.data();
  out.grad = io.data();
  if (with_lse) {
    o.lse.assign(static_cast<std::size_t>(p.rows), 0.0f);
    fill_poison(o.lse);
    out.lse = o.lse.data();
  }
  out.error_count = &o.errors;
  fusedloss::ExecutionConfig cfg;
  cfg.backend = fusedloss::Backend::CPU;
  o.status = fusedloss::compute(p, out, cfg);
  o.grad = io;
  return o;
}

TEST(ReliabilityInPlace, ElementwiseEveryLoss) {
  const std::int64_t n = 2 * 32768 + 4466;  // three chunks; 70002 = 6 · 11667
  int compared = 0;
  for (Loss l : {Loss::MSE, Loss::MAE, Loss::RMSE, Loss::MSLE, Loss::Huber, Loss::SmoothL1, Loss::PseudoHuber,
                 Loss::LogCosh, Loss::Hinge, Loss::SquaredHinge, Loss::BCE, Loss::BCEWithLogits})
    for (DType d : {DType::Float32, DType::Float16, DType::BFloat16})
      for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
        if (l == Loss::RMSE && r != Reduction::Mean) continue;
        ElemCase c(l, d, n);
        const bool prob = l == Loss::BCE;
        c.x = random_buf(d, n, prob ? 0.0 : -3, prob ? 1.0 : 3, 201);
        c.y = random_buf(d, n, prob ? 0.0 : -3, prob ? 1.0 : 3, 202);
        if (l == Loss::Hinge || l == Loss::SquaredHinge || l == Loss::BCEWithLogits)
          c.y = random_buf(d, n, 0, 1, 203);
        if (r == Reduction::Sum) c.w = random_buf(d, n, 0, 2, 204);
        if (l == Loss::BCEWithLogits && r == Reduction::Mean) c.pos_col = {0.5f, 2.0f, 1.0f, 3.0f, 1.5f, 0.25f};  // 6 columns
        c.reduction = r;
        c.grad_scale = r == Reduction::None ? 0.5 : 1024.0;
        SCOPED_TRACE(c.tag());
        const Outcome ref = run(c.problem());
        ASSERT_EQ(ref.status, Status::Success);
        Buf io = c.x;
        const Outcome in_place = run_in_place(c.problem(), io);
        EXPECT_TRUE(in_place.bitwise_equal(ref));
        ++compared;
      }
  RecordProperty("compared", compared);
}

/// The row-wise call `c` with its gradient written over (a copy of) its input gives the loss, lse
/// (`with_lse`) and gradient rows of the out-of-place call bit for bit, and leaves each row's
/// padding holding the input.
void expect_in_place_equals_out_of_place(RowCase& c, bool with_lse) {
  const Outcome ref = run(c.problem(), true, with_lse);
  ASSERT_EQ(ref.status, Status::Success);
  Buf io = c.input;
  const Outcome in_place = run_in_place(c.problem(), io, with_lse);
  ASSERT_EQ(in_place.status, Status::Success);
  EXPECT_EQ(std::memcmp(in_place.loss.data(), ref.loss.data(), ref.loss.size() * 4), 0);
  if (with_lse) {
    EXPECT_EQ(std::memcmp(in_place.lse.data(), ref.lse.data(), ref.lse.size() * 4), 0);
  }
  const std::int64_t N = c.rows, C = c.classes, stride = c.stride;
  const std::size_t es = fusedloss::dtype_size(c.dtype);
  for (std::int64_t n = 0; n < N; ++n) {
    ASSERT_EQ(std::memcmp(io.raw() + n * stride * es, ref.grad.raw() + n * stride * es, C * es), 0) << "row " << n;
    ASSERT_EQ(std::memcmp(io.raw() + (n * stride + C) * es, c.input.raw() + (n * stride + C) * es, (stride - C) * es), 0)
        << "padding of row " << n;
  }
}

TEST(ReliabilityInPlace, RowwiseEveryLoss) {
  const std::int64_t N = 70, C = 1031, stride = 1034;  // 32 rows per chunk: three chunks; padded rows
  for (RowKind k : {RowKind::CE, RowKind::CESoft, RowKind::NLL, RowKind::KL, RowKind::KLLogits})
    for (DType d : {DType::Float32, DType::Float16, DType::BFloat16})
      for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum, Reduction::BatchMean}) {
        if (r == Reduction::BatchMean && !(k == RowKind::KL || k == RowKind::KLLogits)) continue;
        RowCase c(k, d, N, C, stride);
        const bool logprob_input = k == RowKind::NLL || k == RowKind::KL;
        c.input = random_buf(d, N * stride, logprob_input ? -9 : -5, logprob_input ? -0.01 : 5, 301);
        c.target = random_buf(d, N * stride, k == RowKind::KLLogits ? -5 : 0, k == RowKind::KLLogits ? 5 : 0.002, 302);
        for (std::int64_t n = 0; n < N; ++n)
          if (has_labels(k)) c.labels[n] = n % 11 == 0 ? -100 : (n * 37) % C;
        if (k == RowKind::CE || k == RowKind::CESoft || k == RowKind::NLL) {
          c.class_weight.assign(C, 1.0f);
          for (std::int64_t j = 0; j < C; j += 3) c.class_weight[j] = 2.0f;
        }
        if (k == RowKind::CE || k == RowKind::CESoft) {
          c.params.label_smoothing = 0.1;
          c.params.z_loss = 1e-4;
          c.params.softcap = 30.0;
        }
        if (k == RowKind::KL) c.params.log_target = (r == Reduction::Sum);
        if (k == RowKind::KL && c.params.log_target)
          c.target = random_buf(d, N * stride, -9, -0.01, 303);
        if (k == RowKind::KLLogits) c.params.temperature = 1.5;
        c.reduction = r;
        c.grad_scale = 2.0;
        SCOPED_TRACE(c.tag());
        expect_in_place_equals_out_of_place(c, k == RowKind::CE || k == RowKind::CESoft);
      }
}

// bf16 cross_entropy without smoothing, z-loss or softcap takes the float-lane softmax
// (cpu/rowwise.cpp), whose vectors with logits far below the row maximum, last partial vector and
// target column re-read the input in double: in place it must still read each logit before
// overwriting it. One-row pass (N = 40) and split rows (N = 3, C ≥ 16384), padded rows.
TEST(ReliabilityInPlace, Bf16CrossEntropyFloatLaneSoftmax) {
  for (const auto& shape : {std::array<std::int64_t, 3>{40, 1031, 1037}, std::array<std::int64_t, 3>{3, 20011, 20019}}) {
    const std::int64_t N = shape[0], C = shape[1], stride = shape[2];
    for (Reduction r : {Reduction::None, Reduction::Sum}) {
      RowCase c(RowKind::CE, DType::BFloat16, N, C, stride);
      c.input = random_buf(DType::BFloat16, N * stride, -120, 5, 304);  // many logits > 86.5 below the max
      for (std::int64_t n = 0; n < N; ++n) c.labels[n] = n % 11 == 0 ? -100 : (n * 37) % C;
      c.reduction = r;
      c.grad_scale = 2.0;
      SCOPED_TRACE(c.tag());
      expect_in_place_equals_out_of_place(c, true);
    }
  }
}

}  // namespace
