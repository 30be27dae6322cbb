// Reliability items 2–8 on the CPU path: N = 0, all-ignored batches, out-of-range labels, NaN
// isolation, −inf logits, extreme finite inputs, BCE / bce_with_logits at their limits.
// Expected values come from the contract (hand-computed) or the independent float64 oracle.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "reliability/reliability_cases.hpp"

namespace {

using namespace reltest;

const DType kValueTypes[] = {DType::Float32, DType::Float16, DType::BFloat16};

std::vector<Loss> elementwise_losses() {
  return {Loss::MSE,         Loss::MAE,     Loss::RMSE,  Loss::MSLE,         Loss::Huber, Loss::SmoothL1,
          Loss::PseudoHuber, Loss::LogCosh, Loss::Hinge, Loss::SquaredHinge, Loss::BCE,   Loss::BCEWithLogits};
}
std::vector<Reduction> reductions_for(Loss l) {
  if (l == Loss::RMSE) return {Reduction::Mean, Reduction::Default};
  if (l == Loss::KLDiv || l == Loss::KLDivLogits)
    return {Reduction::None, Reduction::Mean, Reduction::Sum, Reduction::BatchMean, Reduction::Default};
  return {Reduction::None, Reduction::Mean, Reduction::Sum, Reduction::Default};
}

std::uint32_t bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
constexpr std::uint32_t kPoisonBits = 0x5A5A5A5Au;

// ---------------------------------------------------------------------------------------------------
// 2. N = 0: sum → 0, mean/batchmean → NaN, none → nothing written; grad/lse untouched; error count 0.
// ---------------------------------------------------------------------------------------------------
TEST(ReliabilityEmpty, ElementwiseEveryLossAndReduction) {
  int calls = 0;
  for (Loss l : elementwise_losses())
    for (Reduction r : reductions_for(l))
      for (DType d : kValueTypes)
        for (bool null_data : {true, false}) {
          SCOPED_TRACE(std::string(fusedloss::loss_name(l)) + "/" + red_tag(r) + "/" + dtype_tag(d) +
                       (null_data ? "/null data" : "/dangling data"));
          Buf x(d, 4), y(d, 4), g(d, 4);
          g.fill_bytes(kPoison);
          std::vector<float> loss(4);
          fill_poison(loss);
          std::int64_t errors = 99;
          fusedloss::ElementwiseProblem p;
          p.loss = l;
          p.dtype = d;
          p.n = 0;
          p.input = null_data ? nullptr : x.data();
          p.target = null_data ? nullptr : y.data();
          p.reduction = r;
          fusedloss::LossOutputs out;
          out.loss = loss.data();
          out.grad = g.data();
          out.error_count = &errors;
          fusedloss::ExecutionConfig cfg;
          cfg.backend = fusedloss::Backend::CPU;
          ASSERT_EQ(fusedloss::compute(p, out, cfg), Status::Success);
          ++calls;
          EXPECT_EQ(errors, 0);
          for (int i = 0; i < 4; ++i) EXPECT_EQ(g.raw()[i], kPoison) << "grad written for n = 0";
          if (r == Reduction::None) {
            for (float v : loss) EXPECT_EQ(bits(v), kPoisonBits) << "none with n = 0 wrote a loss value";
            // And the loss pointer may be null then.
            out.loss = nullptr;
            EXPECT_EQ(fusedloss::compute(p, out, cfg), Status::Success);
          } else if (r == Reduction::Sum) {
            EXPECT_EQ(loss[0], 0.0f);
          } else {
            EXPECT_TRUE(std::isnan(loss[0])) << loss[0];
          }
          for (int i = 1; i < 4; ++i) EXPECT_EQ(bits(loss[i]), kPoisonBits) << "wrote past the scalar loss";
        }
  RecordProperty("calls", calls);
}

TEST(ReliabilityEmpty, RowwiseEveryLossAndReduction) {
  for (RowKind k : {RowKind::CE, RowKind::CESoft, RowKind::NLL, RowKind::KL, RowKind::KLLogits})
    for (Reduction r : reductions_for(row_loss(k)))
      for (DType d : kValueTypes) {
        SCOPED_TRACE(std::string(row_tag(k)) + "/" + red_tag(r) + "/" + dtype_tag(d));
        std::vector<float> loss(4), lse(4);
        fill_poison(loss);
        fill_poison(lse);
        Buf g(d, 8);
        g.fill_bytes(kPoison);
        std::int64_t errors = 99;
        fusedloss::RowwiseProblem p;
        p.loss = row_loss(k);
        p.dtype = d;
        p.rows = 0;
        p.classes = 5;
        p.reduction = r;
        fusedloss::LossOutputs out;
        out.loss = loss.data();
        out.grad = g.data();
        out.error_count = &errors;
        if (k == RowKind::CE || k == RowKind::CESoft) out.lse = lse.data();
        fusedloss::ExecutionConfig cfg;
        cfg.backend = fusedloss::Backend::CPU;
        ASSERT_EQ(fusedloss::compute(p, out, cfg), Status::Success);
        EXPECT_EQ(errors, 0);
        for (float v : lse) EXPECT_EQ(bits(v), kPoisonBits) << "lse written for N = 0";
        for (int i = 0; i < 16; ++i) EXPECT_EQ(g.raw()[i], kPoison) << "grad written for N = 0";
        if (r == Reduction::None) {
          for (float v : loss) EXPECT_EQ(bits(v), kPoisonBits);
        } else if (r == Reduction::Sum) {
          EXPECT_EQ(loss[0], 0.0f);
        } else {
          EXPECT_TRUE(std::isnan(loss[0])) << loss[0];
        }
      }
}

// ---------------------------------------------------------------------------------------------------
// 3. All-ignored batch: mean → NaN, sum → 0, none → zeros, gradient exactly 0 everywhere, padding
//    untouched, lse still reported for every row. Same when the weighted divisor is 0.
// ---------------------------------------------------------------------------------------------------
TEST(ReliabilityIgnored, AllRowsIgnored) {
  const std::int64_t N = 37, C = 11, stride = 13;
  for (RowKind k : {RowKind::CE, RowKind::NLL})
    for (DType d : kValueTypes)
      for (DType ld : {DType::Int32, DType::Int64})
        for (std::int64_t ignore : {std::int64_t(-100), std::int64_t(2)})
          for (bool options : {false, true})
            for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
              RowCase c(k, d, N, C, stride);
              c.input = random_buf(d, N * stride, -4, 4, 11);
              c.labels.assign(N, ignore);
              c.label_dtype = ld;
              c.params.ignore_index = ignore;
              c.reduction = r;
              if (options) {
                c.class_weight.assign(C, 0.5f);
                if (k == RowKind::CE) {
                  c.params.label_smoothing = 0.1;
                  c.params.z_loss = 1e-3;
                  c.params.softcap = 5.0;
                }
              }
              SCOPED_TRACE(c.tag() + (options ? "/options" : "") + " ignore=" + std::to_string(ignore));
              const bool lse = k == RowKind::CE;
              const Outcome o = run(c.problem(), true, lse);
              ASSERT_EQ(o.status, Status::Success);
              EXPECT_EQ(o.errors, 0);
              if (r == Reduction::Mean) {
                EXPECT_TRUE(std::isnan(o.loss[0])) << o.loss[0];
              } else {
                for (float v : o.loss) EXPECT_EQ(v, 0.0f);
              }
              for (std::int64_t n = 0; n < N; ++n)
                for (std::int64_t j = 0; j < stride; ++j) {
                  if (j < C) {
                    ASSERT_EQ(o.grad.get(n * stride + j), 0.0) << "row " << n << " col " << j;
                  } else {
                    ASSERT_EQ(o.grad.raw()[(n * stride + j) * fusedloss::dtype_size(d)], kPoison)
                        << "padding written, row " << n;
                  }
                }
              if (lse) {
                const oracle::Result want = c.oracle();
                for (std::int64_t n = 0; n < N; ++n)
                  EXPECT_TRUE(close_in_dtype(o.lse[n], want.lse[n], 2e-7, 0, 3.4e38)) << "lse row " << n;
              }
            }
}

TEST(ReliabilityIgnored, ZeroWeightedDivisor) {
  // Every label's class has weight 0 (the others 1): Σ w[y_n] = 0 → mean NaN, gradient all 0.
  const std::int64_t N = 9, C = 6;
  for (RowKind k : {RowKind::CE, RowKind::NLL})
    for (DType d : kValueTypes) {
      RowCase c(k, d, N, C);
      c.input = random_buf(d, N * C, -3, 3, 5);
      for (std::int64_t n = 0; n < N; ++n) c.labels[n] = n % 2;  // classes 0 and 1
      c.class_weight = {0.f, 0.f, 1.f, 1.f, 1.f, 1.f};
      c.reduction = Reduction::Mean;
      SCOPED_TRACE(c.tag());
      const Outcome o = run(c.problem());
      ASSERT_EQ(o.status, Status::Success);
      EXPECT_TRUE(std::isnan(o.loss[0]));
      for (std::int64_t i = 0; i < N * C; ++i) ASSERT_EQ(o.grad.get(i), 0.0) << i;
    }
}

// ---------------------------------------------------------------------------------------------------
// 4. Out-of-range labels and invalid BCE probabilities: counted, row/element loss NaN, gradient 0,
//    the other rows exact, and the next call on the same buffers is clean.
// ---------------------------------------------------------------------------------------------------
TEST(ReliabilityBadData, OutOfRangeLabels) {
  const std::int64_t C = 5;
  for (RowKind k : {RowKind::CE, RowKind::NLL})
    for (DType ld : {DType::Int32, DType::Int64})
      for (DType d : kValueTypes)
        for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
          const std::int64_t lowest = ld == DType::Int32 ? std::numeric_limits<std::int32_t>::min()
                                                         : std::numeric_limits<std::int64_t>::min();
          const std::int64_t highest = ld == DType::Int32 ? std::numeric_limits<std::int32_t>::max()
                                                          : std::numeric_limits<std::int64_t>::max();
          const std::vector<std::int64_t> labels = {0, C, -1, 3, 1000000, lowest, -100, 4, highest, -101, 2};
          const std::int64_t N = static_cast<std::int64_t>(labels.size());
          RowCase c(k, d, N, C);
          c.input = random_buf(d, N * C, -3, 3, 17);
          c.labels = labels;
          c.label_dtype = ld;
          c.reduction = r;
          if (k == RowKind::CE) c.params.label_smoothing = 0.05;
          SCOPED_TRACE(c.tag() + " labels " + dtype_tag(ld));
          const oracle::Result want = c.oracle();
          ASSERT_EQ(want.bad, 6);  // C, -1, 1e6, lowest, highest, -101 (and not -100, the ignore_index)
          const Outcome o = run(c.problem(), true, k == RowKind::CE);
          EXPECT_EQ(o.status, Status::InvalidValue);
          EXPECT_EQ(o.errors, want.bad);
          expect_matches_oracle(c, o, want);
          for (std::int64_t n = 0; n < N; ++n) {
            const std::int64_t y = labels[n];
            if (y == -100 || (y >= 0 && y < C)) continue;
            if (r == Reduction::None) {
              EXPECT_TRUE(std::isnan(o.loss[n])) << "bad row " << n;
            }
            for (std::int64_t j = 0; j < C; ++j) EXPECT_EQ(o.grad.get(n * C + j), 0.0) << "bad row " << n;
          }
          // The next call, same buffers, valid labels: clean status and a count of 0.
          for (auto& y : c.labels)
            if (!(y == -100 || (y >= 0 && y < C))) y = 1;
          const Outcome again = run(c.problem(), true, k == RowKind::CE);
          EXPECT_EQ(again.status, Status::Success);
          EXPECT_EQ(again.errors, 0);
          expect_matches_oracle(c, again, c.oracle());
        }
}

TEST(ReliabilityBadData, BceProbabilitiesOutsideUnitInterval) {
  for (DType d : kValueTypes)
    for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
      const std::vector<double> p = {0.3, -0.1, 1.5, kNaN, 0.0, kInf, -kInf, 1.0, 0.7, -1e-30 /* rounds to -0 or tiny */};
      const std::int64_t n = static_cast<std::int64_t>(p.size());
      ElemCase c(Loss::BCE, d, n);
      for (std::int64_t i = 0; i < n; ++i) {
        c.x.set(i, p[i]);
        c.y.set(i, (i % 3) / 2.0);
      }
      c.reduction = r;
      SCOPED_TRACE(c.tag());
      const oracle::Result want = c.oracle();
      const Outcome o = run(c.problem());
      EXPECT_EQ(o.errors, want.bad);
      EXPECT_EQ(o.status, want.bad > 0 ? Status::InvalidValue : Status::Success);
      expect_matches_oracle(c, o, want);
      for (std::int64_t i = 0; i < n; ++i) {
        const double v = c.x.get(i);
        if (!(v >= 0 && v <= 1)) {
          EXPECT_EQ(o.grad.get(i), 0.0) << i;
          if (r == Reduction::None) {
            EXPECT_TRUE(std::isnan(o.loss[i])) << i;
          }
        }
      }
      // Next call with valid probabilities: clean.
      for (std::int64_t i = 0; i < n; ++i)
        if (!(c.x.get(i) >= 0 && c.x.get(i) <= 1)) c.x.set(i, 0.5);
      const Outcome again = run(c.problem());
      EXPECT_EQ(again.status, Status::Success);
      EXPECT_EQ(again.errors, 0);
    }
}

// ---------------------------------------------------------------------------------------------------
// 5. NaN isolation with reduction none: a NaN in one element / row changes that element / row only;
//    every other loss value and gradient is bitwise identical to a run without the NaN.
// ---------------------------------------------------------------------------------------------------
TEST(ReliabilityNaN, ElementwiseIsolatedWithNone) {
  const std::int64_t n = 41, bad = 17;
  for (Loss l : elementwise_losses()) {
    if (l == Loss::RMSE) continue;  // a single scalar: nothing to isolate
    for (DType d : kValueTypes)
      for (bool in_target : {false, true}) {
        ElemCase c(l, d, n);
        const bool prob = l == Loss::BCE;
        c.x = random_buf(d, n, prob ? 0.01 : -3, prob ? 0.99 : 3, 3);
        c.y = random_buf(d, n, prob ? 0.0 : -3, prob ? 1.0 : 3, 4);
        c.reduction = Reduction::None;
        SCOPED_TRACE(c.tag() + (in_target ? " NaN target" : " NaN input"));
        const Outcome clean = run(c.problem());
        (in_target ? c.y : c.x).set(bad, kNaN);
        const Outcome o = run(c.problem());
        if (l == Loss::BCE && !in_target) {
          EXPECT_EQ(o.status, Status::InvalidValue);
          EXPECT_EQ(o.errors, 1);
          EXPECT_EQ(o.grad.get(bad), 0.0);
        } else {
          EXPECT_EQ(o.status, Status::Success);
          EXPECT_EQ(o.errors, 0);
        }
        for (std::int64_t i = 0; i < n; ++i) {
          if (i == bad) continue;
          ASSERT_EQ(bits(o.loss[i]), bits(clean.loss[i])) << "element " << i;
          ASSERT_EQ(o.grad.get(i), clean.grad.get(i)) << "element " << i;
        }
      }
  }
}

TEST(ReliabilityNaN, ElementwiseNaNInputOrTargetGivesNaNLoss) {
  // The oracle's (and the contract's) NaN policy: a NaN prediction or target makes that element's
  // loss NaN — never a silently finite value (e.g. msle's clamp max(x, 0) or hinge's t = y > 0 ? 1 : −1
  // must not swallow it).
  for (Loss l : elementwise_losses())
    for (DType d : kValueTypes)
      for (bool in_target : {false, true}) {
        if (l == Loss::RMSE) continue;  // mean only: covered by the scalar check below
        ElemCase c(l, d, 3);
        for (int i = 0; i < 3; ++i) {
          c.x.set(i, l == Loss::BCE ? 0.25 : 0.5 + i);
          c.y.set(i, l == Loss::BCE ? 1.0 : -0.5 * i);
        }
        (in_target ? c.y : c.x).set(1, kNaN);
        c.reduction = Reduction::None;
        SCOPED_TRACE(c.tag() + (in_target ? " NaN target" : " NaN input"));
        const Outcome o = run(c.problem());
        EXPECT_TRUE(std::isnan(o.loss[1])) << "loss " << o.loss[1];
        if (!(l == Loss::BCE && !in_target)) {
          EXPECT_TRUE(std::isnan(o.grad.get(1))) << "grad " << o.grad.get(1);
        }
        EXPECT_TRUE(std::isfinite(o.loss[0]) && std::isfinite(o.loss[2]));
      }
}

TEST(ReliabilityNaN, RowwiseIsolatedWithNone) {
  const std::int64_t N = 7, C = 9, bad_row = 3;
  for (RowKind k : {RowKind::CE, RowKind::CESoft, RowKind::NLL, RowKind::KL, RowKind::KLLogits})
    for (DType d : kValueTypes)
      for (bool in_target : {false, true}) {
        if (in_target && has_labels(k)) continue;
        RowCase c(k, d, N, C);
        c.input = random_buf(d, N * C, k == RowKind::KL || k == RowKind::NLL ? -5 : -3, k == RowKind::KL || k == RowKind::NLL ? -0.1 : 3, 8);
        c.target = random_buf(d, N * C, k == RowKind::KLLogits ? -3 : 0.0, k == RowKind::KLLogits ? 3 : 0.3, 9);
        for (std::int64_t n = 0; n < N; ++n)
          if (has_labels(k)) c.labels[n] = (n * 4) % C;
        c.reduction = Reduction::None;
        if (k == RowKind::CE) c.params.z_loss = 1e-2;
        SCOPED_TRACE(c.tag() + (in_target ? " NaN target" : " NaN input"));
        const bool lse = k == RowKind::CE || k == RowKind::CESoft;
        const Outcome clean = run(c.problem(), true, lse);
        // NLL reads only the target column; put the NaN there (other kinds: any column).
        const std::int64_t col = has_labels(k) ? c.labels[bad_row] : 5;
        (in_target ? c.target : c.input).set(bad_row * C + col, kNaN);
        const Outcome o = run(c.problem(), true, lse);
        EXPECT_EQ(o.status, Status::Success);
        const bool elementwise_out = k == RowKind::KL;  // none is [N*C] for kl_div
        if (elementwise_out) {
          EXPECT_TRUE(std::isnan(o.loss[bad_row * C + col]));
        } else {
          EXPECT_TRUE(std::isnan(o.loss[bad_row]));
        }
        for (std::size_t i = 0; i < o.loss.size(); ++i) {
          const bool isolated = elementwise_out ? i == static_cast<std::size_t>(bad_row * C + col)
                                                : i == static_cast<std::size_t>(bad_row);
          if (!isolated) {
            ASSERT_EQ(bits(o.loss[i]), bits(clean.loss[i])) << "loss " << i;
          }
        }
        for (std::int64_t n = 0; n < N; ++n) {
          if (n == bad_row) continue;
          for (std::int64_t j = 0; j < C; ++j) ASSERT_EQ(o.grad.get(n * C + j), clean.grad.get(n * C + j)) << n;
          if (lse) {
            ASSERT_EQ(bits(o.lse[n]), bits(clean.lse[n])) << "lse row " << n;
          }
        }
      }
}

// ---------------------------------------------------------------------------------------------------
// 6. −inf logits: finite loss and zero gradient where the probability is 0; an ignored all −inf row
//    contributes loss 0 and gradient 0.
// ---------------------------------------------------------------------------------------------------
TEST(ReliabilityNegInf, NonTargetLogits) {
  const std::int64_t N = 6, C = 8;
  for (DType d : kValueTypes)
    for (int variant = 0; variant < 4; ++variant)
      for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
        RowCase c(RowKind::CE, d, N, C);
        c.input = random_buf(d, N * C, -2, 2, 21);
        for (std::int64_t n = 0; n < N; ++n) {
          c.labels[n] = n % C;
          for (std::int64_t j = 0; j < C; ++j)
            if (j != c.labels[n] && (j + n) % 3 == 0) c.input.set(n * C + j, -kInf);
        }
        c.reduction = r;
        if (variant == 1) c.class_weight = {1.f, 2.f, 0.5f, 1.f, 1.f, 3.f, 1.f, 0.25f};
        if (variant == 2) c.params.z_loss = 1e-2;
        if (variant == 3) c.params.softcap = 4.0;
        SCOPED_TRACE(c.tag() + " variant " + std::to_string(variant));
        const Outcome o = run(c.problem(), true, true);
        ASSERT_EQ(o.status, Status::Success);
        for (float v : o.loss) EXPECT_TRUE(std::isfinite(v)) << v;
        expect_matches_oracle(c, o, c.oracle());
        for (std::int64_t i = 0; i < N * C; ++i) {
          if (std::isinf(c.input.get(i))) {
            EXPECT_EQ(o.grad.get(i), 0.0) << i;
          } else {
            EXPECT_TRUE(std::isfinite(o.grad.get(i))) << i;
          }
        }
      }
}

TEST(ReliabilityNegInf, OtherRowwiseLosses) {
  const std::int64_t N = 5, C = 7;
  for (DType d : kValueTypes)
    for (RowKind k : {RowKind::CESoft, RowKind::NLL, RowKind::KL, RowKind::KLLogits})
      for (bool log_target : {false, true}) {
        if (log_target && k != RowKind::KL) continue;
        RowCase c(k, d, N, C);
        c.reduction = Reduction::Sum;
        c.params.log_target = log_target;
        std::mt19937_64 rng(31);
        std::uniform_real_distribution<double> u(-2, 2), pu(0.05, 1.0);
        for (std::int64_t n = 0; n < N; ++n) {
          if (has_labels(k)) c.labels[n] = (n * 3) % C;
          for (std::int64_t j = 0; j < C; ++j) {
            const bool zero_prob = (j + n) % 3 == 0 && !(has_labels(k) && j == c.labels[n]);
            const std::int64_t i = n * C + j;
            switch (k) {
              case RowKind::CESoft:  // −inf logit where the target probability is 0
                c.input.set(i, zero_prob ? -kInf : u(rng));
                c.target.set(i, zero_prob ? 0.0 : pu(rng));
                break;
              case RowKind::NLL:  // −inf log-probability away from the label
                c.input.set(i, zero_prob ? -kInf : -pu(rng));
                break;
              case RowKind::KL:  // q = −inf where p = 0 (t = −inf with log_target)
                c.input.set(i, zero_prob ? -kInf : -pu(rng));
                c.target.set(i, zero_prob ? (log_target ? -kInf : 0.0) : (log_target ? -pu(rng) : pu(rng)));
                break;
              case RowKind::KLLogits:  // both student and teacher −inf: p = q = 0
                c.input.set(i, zero_prob ? -kInf : u(rng));
                c.target.set(i, zero_prob ? -kInf : u(rng));
                break;
              default: break;
            }
          }
        }
        SCOPED_TRACE(c.tag() + (log_target ? " log_target" : ""));
        const Outcome o = run(c.problem(), true, k == RowKind::CESoft);
        ASSERT_EQ(o.status, Status::Success);
        EXPECT_TRUE(std::isfinite(o.loss[0])) << o.loss[0];
        expect_matches_oracle(c, o, c.oracle());
        for (std::int64_t i = 0; i < N * C; ++i)
          if (std::isinf(c.input.get(i))) {
            EXPECT_EQ(o.grad.get(i), 0.0) << i;
          }
      }
}

TEST(ReliabilityNegInf, IgnoredAllNegInfRow) {
  const std::int64_t N = 5, C = 6, dead = 2;
  for (DType d : kValueTypes)
    for (bool zloss : {false, true})
      for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
        RowCase c(RowKind::CE, d, N, C);
        c.input = random_buf(d, N * C, -2, 2, 41);
        for (std::int64_t n = 0; n < N; ++n) c.labels[n] = (n + 1) % C;
        for (std::int64_t j = 0; j < C; ++j) c.input.set(dead * C + j, -kInf);
        c.labels[dead] = -100;
        c.reduction = r;
        if (zloss) c.params.z_loss = 1e-3;
        SCOPED_TRACE(c.tag() + (zloss ? " z_loss" : ""));
        const Outcome o = run(c.problem(), true, true);
        ASSERT_EQ(o.status, Status::Success);
        EXPECT_EQ(o.errors, 0);
        if (r == Reduction::None) {
          EXPECT_EQ(o.loss[dead], 0.0f);
        }
        for (float v : o.loss) EXPECT_TRUE(std::isfinite(v)) << v;
        for (std::int64_t j = 0; j < C; ++j) EXPECT_EQ(o.grad.get(dead * C + j), 0.0);
        // The other rows: exactly what the oracle says (the dead row contributes nothing).
        const oracle::Result want = c.oracle();
        for (std::size_t i = 0; i < want.loss.size(); ++i)
          EXPECT_TRUE(close_in_dtype(o.loss[i], want.loss[i], 2e-6, 1e-30, 3.4e38)) << i;
        for (std::int64_t i = 0; i < N * C; ++i)
          EXPECT_TRUE(close_in_dtype(o.grad.get(i), want.grad[i], dtype_eps(d), 1e-7, dtype_max(d))) << i;
      }
}

// ---------------------------------------------------------------------------------------------------
// 7. Extreme finite inputs: no overflow where the math has a finite (representable) answer.
// ---------------------------------------------------------------------------------------------------
TEST(ReliabilityExtreme, RowwiseHugeLogits) {
  // fp16: logits drawn (with ties) from ±6e4 … 0. fp32 / bf16: each row a permutation of distinct
  // values up to ±3.3e38, so its maximum is unique and every other class is ≥ 1e37 below it; there
  // lse = max exactly and the float64 oracle stays exact (with tied maxima near 3e38 it could not
  // carry the log 2 either: its ulp there is ~1e19).
  struct Setup {
    DType d;
    bool permute;
    std::vector<double> values;
  };
  const Setup setups[] = {
      {DType::Float16, false, {6e4, -6e4, 3e4, -3e4, 0.0, 1.0, 65504.0, -65504.0}},
      {DType::Float32, true, {3.4e38, 3e38, 2e38, 1e38, 0.0, -1e38, -2e38, -3e38, -3.4e38}},
      {DType::BFloat16, true, {3.3e38, 3e38, 2e38, 1e38, 0.0, -1e38, -2e38, -3e38, -3.3e38}},
  };
  const std::int64_t N = 24, C = 9;
  for (const Setup& s : setups)
    for (RowKind k : {RowKind::CE, RowKind::CESoft, RowKind::KLLogits})
      for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
        RowCase c(k, s.d, N, C);
        std::mt19937_64 rng(77);
        for (std::int64_t n = 0; n < N; ++n) {
          std::vector<double> row = s.values, teacher = s.values;
          if (s.permute) {
            std::shuffle(row.begin(), row.end(), rng);
            std::shuffle(teacher.begin(), teacher.end(), rng);
          }
          for (std::int64_t j = 0; j < C; ++j) {
            const std::int64_t i = n * C + j;
            c.input.set(i, s.permute ? row[j] : s.values[rng() % s.values.size()]);
            if (k == RowKind::KLLogits) {
              c.target.set(i, s.permute ? teacher[j] : s.values[rng() % s.values.size()]);
            } else {
              c.target.set(i, (rng() % 4) / 8.0);
            }
          }
          if (has_labels(k)) c.labels[n] = static_cast<std::int64_t>(rng() % C);
        }
        c.reduction = r;
        SCOPED_TRACE(c.tag());
        const Outcome o = run(c.problem(), true, k != RowKind::KLLogits);
        ASSERT_EQ(o.status, Status::Success);
        const oracle::Result want = c.oracle();
        expect_matches_oracle(c, o, want);
        // Every gradient is a difference of probabilities (times T): always finite here.
        for (std::int64_t i = 0; i < N * C; ++i) ASSERT_TRUE(std::isfinite(o.grad.get(i))) << i;
      }
}

TEST(ReliabilityExtreme, ElementwiseHugeResiduals) {
  // |r| up to 2e30 (fp32 / bf16) and 1.2e5 (fp16 inputs ±6e4): every loss whose value and gradient
  // are representable must come back finite and right; where the true value overflows the output
  // dtype (mse's r² in float32, its 2r in fp16) ±inf is the correctly rounded answer.
  struct Setup {
    DType d;
    std::vector<double> values;
  };
  const Setup setups[] = {
      {DType::Float32, {1e30, -1e30, 5e29, -7e29, 1e20, -3.0, 0.5, 0.0}},
      {DType::BFloat16, {1e30, -1e30, 5e29, -7e29, 1e20, -3.0, 0.5, 0.0}},
      {DType::Float16, {6e4, -6e4, 3e4, -5e4, 100.0, -3.0, 0.5, 0.0}},
  };
  const std::int64_t n = 64;
  for (const Setup& s : setups)
    for (Loss l : {Loss::LogCosh, Loss::PseudoHuber, Loss::Huber, Loss::SmoothL1, Loss::MAE, Loss::Hinge,
                   Loss::SquaredHinge, Loss::BCEWithLogits, Loss::MSE, Loss::MSLE})
      for (Reduction r : {Reduction::None, Reduction::Sum}) {
        ElemCase c(l, s.d, n);
        std::mt19937_64 rng(5);
        for (std::int64_t i = 0; i < n; ++i) {
          c.x.set(i, s.values[rng() % s.values.size()]);
          c.y.set(i, l == Loss::BCEWithLogits ? (rng() % 3) / 2.0 : s.values[rng() % s.values.size()]);
        }
        c.reduction = r;
        if (l == Loss::PseudoHuber || l == Loss::Huber) c.params.delta = 2.5;
        SCOPED_TRACE(c.tag());
        const Outcome o = run(c.problem());
        ASSERT_EQ(o.status, Status::Success);
        expect_matches_oracle(c, o, c.oracle());
        if (l == Loss::LogCosh || l == Loss::PseudoHuber) {
          for (float v : o.loss) EXPECT_TRUE(std::isfinite(v)) << v;
          for (std::int64_t i = 0; i < n; ++i) EXPECT_TRUE(std::isfinite(o.grad.get(i))) << i;
        }
      }
}

// ---------------------------------------------------------------------------------------------------
// 8. BCE at p ∈ {0, 1}; bce_with_logits at |x| = 100 and 1e4: finite, hand-computed from the contract.
// ---------------------------------------------------------------------------------------------------
TEST(ReliabilityLimits, BceAtZeroAndOne) {
  struct Point {
    double p, y, loss, grad;
  };
  const Point pts[] = {
      {0, 0, 0, 0}, {0, 1, 100, -1e12}, {0, 0.5, 50, -0.5e12},
      {1, 0, 100, 1e12}, {1, 1, 0, 0}, {1, 0.5, 50, 0.5e12},
  };
  for (DType d : kValueTypes) {
    ElemCase c(Loss::BCE, d, 6);
    for (int i = 0; i < 6; ++i) {
      c.x.set(i, pts[i].p);
      c.y.set(i, pts[i].y);
    }
    c.reduction = Reduction::None;
    SCOPED_TRACE(c.tag());
    const Outcome o = run(c.problem());
    ASSERT_EQ(o.status, Status::Success);
    for (int i = 0; i < 6; ++i) {
      EXPECT_TRUE(close_in_dtype(o.loss[i], pts[i].loss, 1e-6, 1e-6, 3.4e38)) << i;
      // ±1e12 does not fit in fp16: there the correctly rounded gradient is ±inf.
      EXPECT_TRUE(close_in_dtype(o.grad.get(i), pts[i].grad, dtype_eps(d), 0, dtype_max(d))) << i;
    }
    c.reduction = Reduction::Sum;
    const Outcome s = run(c.problem());
    EXPECT_FLOAT_EQ(s.loss[0], 300.0f);
    c.reduction = Reduction::Mean;
    const Outcome m = run(c.problem());
    EXPECT_FLOAT_EQ(m.loss[0], 50.0f);
  }
}

TEST(ReliabilityLimits, BceWithLogitsLargeMagnitudes) {
  struct Point {
    double x, y, pw, loss, grad;
  };
  const double tiny = std::log1p(std::exp(-100.0));  // 3.72e-44: subnormal in float32
  const Point pts[] = {
      {100, 1, 1, tiny, -tiny},  {100, 0, 1, 100, 1},   {-100, 1, 1, 100, -1},  {-100, 0, 1, tiny, tiny},
      {1e4, 0, 1, 1e4, 1},       {1e4, 1, 1, 0, 0},     {-1e4, 1, 1, 1e4, -1},  {-1e4, 0, 1, 0, 0},
      {1e4, 0.5, 1, 5e3, 0.5},   {-1e4, 0.5, 1, 5e3, -0.5}, {-100, 1, 3, 300, -3}, {-1e4, 1, 3, 3e4, -3},
      {1e4, 0, 3, 1e4, 1},       {100, 0.25, 3, 75, 0.75},
  };
  for (DType d : kValueTypes) {
    for (const Point& pt : pts) {
      ElemCase c(Loss::BCEWithLogits, d, 1);
      c.x.set(0, pt.x);
      c.y.set(0, pt.y);
      c.params.pos_weight = pt.pw;
      c.reduction = Reduction::None;
      SCOPED_TRACE(c.tag() + " x=" + std::to_string(pt.x) + " y=" + std::to_string(pt.y) + " pw=" +
                   std::to_string(pt.pw));
      const Outcome o = run(c.problem());
      ASSERT_EQ(o.status, Status::Success);
      if (c.x.get(0) == pt.x) {  // exact in this dtype (1e4 is not in bf16): the hand-computed value
        EXPECT_TRUE(close_in_dtype(o.loss[0], pt.loss, 1e-6, 1e-40, 3.4e38));
        EXPECT_TRUE(close_in_dtype(o.grad.get(0), pt.grad, dtype_eps(d), 1e-40, dtype_max(d)));
      }
      expect_matches_oracle(c, o, c.oracle());
      EXPECT_TRUE(std::isfinite(o.loss[0]));
      EXPECT_TRUE(std::isfinite(o.grad.get(0)));
    }
  }
}

}  // namespace
