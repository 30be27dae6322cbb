// Properties of the CPU path that hold whatever the data:
//  * cross_entropy gradient rows sum to 0 (no weights, no smoothing) — and the other row-wise losses whose
//    gradient is a difference of two distributions;
//  * the loss is unchanged by adding a constant to a row of logits (cross_entropy, soft targets, kl_div_logits);
//  * grad(α·scale) = α·grad(scale), loss independent of grad_scale;
//  * in-place gradient (grad == input) equals out-of-place, for every loss family, dtype and a padded stride;
//  * results independent of the CPU thread count; none / sum / mean consistent; loss-only calls; int32 and
//    int64 labels; row_stride > C equals the dense layout; ignored rows contribute nothing.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "common/test_util.hpp"

namespace {

using namespace tu;
namespace fl = ::fusedloss;

fl::ExecutionConfig cpu(int threads = 0) {
  fl::ExecutionConfig c;
  c.backend = fl::Backend::CPU;
  c.cpu_threads = threads;
  return c;
}

const DType kDtypes[] = {DType::Float32, DType::Float16, DType::BFloat16};

std::string dtype_param_name(const ::testing::TestParamInfo<DType>& i) { return fl::dtype_name(i.param); }

// =========================================================================================================
// Gradient rows sum to zero
// =========================================================================================================

struct RowSumCase {
  Family fam;
  bool weights, smoothing;
  DType dtype;
  Reduction red;
  std::int64_t C;
  friend void PrintTo(const RowSumCase& c, std::ostream* os) {
    *os << family_name(c.fam) << (c.weights ? " weighted" : "") << (c.smoothing ? " smoothed" : "") << " "
        << fl::dtype_name(c.dtype) << " " << red_name(c.red) << " C=" << c.C;
  }
};

std::vector<RowSumCase> row_sum_cases() {
  std::vector<RowSumCase> v;
  for (DType d : kDtypes)
    for (Reduction red : {Reduction::None, Reduction::Mean, Reduction::Sum})
      for (std::int64_t C : {2, 33, 1000}) {
        v.push_back({{Loss::CrossEntropy, false}, false, false, d, red, C});  // the property of the issue
        v.push_back({{Loss::CrossEntropy, false}, false, true, d, red, C});   // unweighted smoothing keeps it
        v.push_back({{Loss::CrossEntropy, true}, true, true, d, red, C});     // soft: Σ_c (S·p_c − w_c t'_c) = 0
        v.push_back({{Loss::KLDivLogits, false}, false, false, d, red, C});   // T·Σ_c (q_c − p_c) = 0
      }
  return v;
}

class CpuPropertyGradientRowsSumToZero : public ::testing::TestWithParam<RowSumCase> {};

TEST_P(CpuPropertyGradientRowsSumToZero, ForEveryRow) {
  const RowSumCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  const std::int64_t N = 64;
  Instance in = make_instance(rng, c.fam, c.dtype, N, c.C, false, 0, c.red);
  if (c.weights) {
    in.class_weight.resize(static_cast<std::size_t>(c.C));
    for (float& w : in.class_weight) w = static_cast<float>(rng.uniform(0.2, 3));
  }
  if (c.smoothing) in.r.params.label_smoothing = 0.15;
  in.r.grad_scale = 1.5;
  in.materialise();
  const RunResult r = in.run();
  ASSERT_EQ(r.status, Status::Success);
  // Each g_c is one rounding of a double into the dtype: |Σ_c g_c| <= Σ_c ulp(g_c) (+ double residue).
  // A row whose gradient underflows to all zeros in fp16 (student ≈ teacher at C = 2, say)
  // checks nothing; allow a few, but most rows must carry a real gradient.
  std::int64_t zero_rows = 0;
  for (std::int64_t n = 0; n < N; ++n) {
    double s = 0, bound = 0, mag = 0;
    for (std::int64_t col = 0; col < c.C; ++col) {
      const double g = r.grad_dense[n * c.C + col];
      s += g;
      bound += ulp(c.dtype, g);
      mag += std::fabs(g);
    }
    if (mag == 0) {
      ++zero_rows;
      continue;
    }
    ASSERT_LE(std::fabs(s), bound + 1e-12 * mag) << "row " << n << ": Σ_c grad = " << s << " (Σ|g| = " << mag << ")";
  }
  ASSERT_LE(zero_rows, N / 8) << "too many all-zero gradient rows: the property was barely checked";
}

INSTANTIATE_TEST_SUITE_P(All, CpuPropertyGradientRowsSumToZero, ::testing::ValuesIn(row_sum_cases()),
                         [](const ::testing::TestParamInfo<RowSumCase>& i) {
                           const RowSumCase& c = i.param;
                           return family_name(c.fam) + (c.weights ? "_weighted" : "") +
                                  (c.smoothing ? "_smoothed" : "") + "_" + fl::dtype_name(c.dtype) + "_" +
                                  red_name(c.red) + "_C" + std::to_string(c.C);
                         });

// =========================================================================================================
// Shift invariance
// =========================================================================================================

class CpuPropertyShiftInvariance : public ::testing::TestWithParam<DType> {};

TEST_P(CpuPropertyShiftInvariance, AddingAConstantToARowChangesNothing) {
  const DType d = GetParam();
  FL_SEEDED_RNG(rng);
  const std::int64_t N = 12, C = 37;
  // Logits on a grid coarse enough that z + shift is exact in the dtype: f32 2^-10 in [-8, 8] shifted by
  // up to ±40; f16 / bf16 2^-2 in [-4, 4] shifted by ±4 (at most 5 significant bits either way).
  const bool half = d != DType::Float32;
  const double grid = half ? 0.25 : 1.0 / 1024, range = half ? 4 : 8;
  auto grid_logits = [&] {
    Vec z(static_cast<std::size_t>(N * C));
    for (double& v : z) v = std::round(rng.uniform(-range, range) / grid) * grid;
    return z;
  };
  Vec shift(static_cast<std::size_t>(N));
  for (double& s : shift) s = half ? 4.0 * double(rng.integer(-1, 1)) : double(rng.integer(-40, 40)) + 0.5;

  for (Family fam : {Family{Loss::CrossEntropy, false}, Family{Loss::CrossEntropy, true},
                     Family{Loss::KLDivLogits, false}}) {
    for (bool options : {false, true}) {
      for (int which = 0; which < (fam.loss == Loss::KLDivLogits ? 2 : 1); ++which) {  // student, teacher
        SCOPED_TRACE(family_name(fam) + (options ? " with options" : "") + (which ? " teacher shifted" : ""));
        Instance in = make_instance(rng, fam, d, N, C, options, 0, Reduction::None);
        in.r.params.softcap = 0;  // softcap and z_loss are not shift invariant
        in.r.params.z_loss = 0;
        in.x = grid_logits();
        if (fam.loss == Loss::KLDivLogits) in.y = grid_logits();
        in.materialise();
        const RunResult base = in.run(true, true);
        ASSERT_EQ(base.status, Status::Success);
        Vec& shifted = which == 0 ? in.x : in.y;
        for (std::int64_t n = 0; n < N; ++n)
          for (std::int64_t c = 0; c < C; ++c) shifted[n * C + c] += shift[n];
        ASSERT_TRUE(close_vec(round_to(d, shifted), shifted, 0, 0)) << "test bug: the shift is not exact";
        in.materialise();
        const RunResult moved = in.run(true, true);
        ASSERT_EQ(moved.status, Status::Success);
        EXPECT_TRUE(close_vec(moved.loss, base.loss, 1e-6, 1e-6, "row loss"));
        EXPECT_TRUE(within_ulps(moved.grad_dense, base.grad_dense, d, 1.0, 1e-12));
        if (fam.loss == Loss::CrossEntropy) {
          Vec expected_lse = base.lse;
          for (std::int64_t n = 0; n < N; ++n) expected_lse[n] += shift[n];
          EXPECT_TRUE(close_vec(moved.lse, expected_lse, 1e-6, 1e-5, "lse"));  // lse moves with the row
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, CpuPropertyShiftInvariance, ::testing::ValuesIn(kDtypes), dtype_param_name);

// =========================================================================================================
// Per-family properties: grad_scale linearity, in place, thread count, reductions, loss-only
// =========================================================================================================

struct FamCase {
  Family fam;
  DType dtype;
  friend void PrintTo(const FamCase& c, std::ostream* os) {
    *os << family_name(c.fam) << " " << fl::dtype_name(c.dtype);
  }
};
/// Every family × dtype for which `applies(family)` holds: a property that does not apply to a loss is
/// not instantiated for it (a skipped test means "could not run here", never "not applicable").
template <class Pred>
std::vector<FamCase> fam_cases_where(Pred applies) {
  std::vector<FamCase> v;
  for (const Family& f : all_families())
    if (applies(f))
      for (DType d : kDtypes) v.push_back({f, d});
  return v;
}
std::vector<FamCase> fam_cases() {
  return fam_cases_where([](const Family&) { return true; });
}
std::string fam_case_name(const ::testing::TestParamInfo<FamCase>& i) {
  return family_name(i.param.fam) + "_" + fl::dtype_name(i.param.dtype);
}

/// The divisor of Reduction::Mean for an instance, from the contract.
double mean_divisor(const Instance& in) {
  if (!in.rowwise()) return double(in.n);
  switch (in.fam.loss) {
    case Loss::CrossEntropy:
    case Loss::NLL:
      if (in.fam.soft) return double(in.N);
      {
        double d = 0;
        for (std::int64_t y : in.labels) {
          if (y == in.r.params.ignore_index || y < 0 || y >= in.C) continue;
          d += in.class_weight.empty() ? 1.0 : double(in.class_weight[y]);
        }
        return d;
      }
    default: return double(in.N) * double(in.C);  // kl_div, kl_div_logits
  }
}

class CpuPropertyPerFamily : public ::testing::TestWithParam<FamCase> {
 protected:
  Instance make(Rng& rng, bool options, Reduction red, std::int64_t extra_stride = 0) {
    const FamCase& c = GetParam();
    if (!family_rowwise(c.fam)) return make_instance(rng, c.fam, c.dtype, 1000, 0, options, 0, red);
    return make_instance(rng, c.fam, c.dtype, 37, 29, options, extra_stride, red);
  }
  std::vector<Reduction> reductions() const {
    const Loss l = GetParam().fam.loss;
    if (l == Loss::RMSE) return {Reduction::Mean};
    if (l == Loss::KLDiv || l == Loss::KLDivLogits)
      return {Reduction::None, Reduction::Mean, Reduction::Sum, Reduction::BatchMean};
    return {Reduction::None, Reduction::Mean, Reduction::Sum};
  }
};

TEST_P(CpuPropertyPerFamily, GradientIsLinearInGradScale) {
  const DType d = GetParam().dtype;
  FL_SEEDED_RNG(rng);
  for (bool options : {false, true}) {
    for (Reduction red : reductions()) {
      SCOPED_TRACE(std::string(red_name(red)) + (options ? " with options" : ""));
      Instance in = make(rng, options, red);
      in.set_grad_scale(1.0);
      const RunResult base = in.run();
      ASSERT_EQ(base.status, Status::Success);
      for (double alpha : {2.0, -0.5, 1024.0, 3.0, -7.25, 0.0}) {
        in.set_grad_scale(alpha);
        const RunResult r = in.run();
        ASSERT_EQ(r.status, Status::Success);
        EXPECT_EQ(std::memcmp(r.loss_raw.data(), base.loss_raw.data(), base.loss_raw.size() * sizeof(float)), 0)
            << "the loss depends on grad_scale " << alpha;
        Vec expected = base.grad_dense;
        for (double& g : expected) g *= alpha;
        const bool power_of_two = alpha != 0 && std::fabs(std::log2(std::fabs(alpha)) - std::round(std::log2(std::fabs(alpha)))) == 0;
        if (d == DType::Float32 && power_of_two) {
          EXPECT_TRUE(close_vec(r.grad_dense, expected, 0, 0)) << "α = " << alpha << " (exact for a power of two)";
        } else {
          // round(α·g) vs α·round(g): at most 0.5 ulp(αg) + |α|·0.5 ulp(g), i.e. <= 1.25 ulp(αg) in the normal
          // range; among subnormals (fixed spacing u) up to (0.5 + 0.5|α|)·u.
          const double u = ulp(d, 0.0);
          EXPECT_TRUE(within_ulps(r.grad_dense, expected, d, 1.5, (0.5 + 0.5 * std::fabs(alpha)) * u)) << "α = " << alpha;
        }
        if (alpha == 0.0) {
          for (double g : r.grad_dense) ASSERT_EQ(g, 0.0) << "grad_scale 0 must give a zero gradient";
        }
      }
    }
  }
}

TEST_P(CpuPropertyPerFamily, InPlaceGradientEqualsOutOfPlace) {
  const FamCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  for (bool options : {false, true}) {
    for (std::int64_t extra : {std::int64_t(0), std::int64_t(3)}) {
      if (extra > 0 && !family_rowwise(c.fam)) continue;
      for (Reduction red : reductions()) {
        SCOPED_TRACE(std::string(red_name(red)) + (options ? " with options" : "") + " stride +" + std::to_string(extra));
        Instance in = make(rng, options, red, extra);
        in.set_grad_scale(-1.25);
        const RunResult out_of_place = in.run();
        ASSERT_TRUE(out_of_place.status == Status::Success) << fl::status_string(out_of_place.status);

        // The same call with grad pointing at (a copy of) the input buffer.
        Buffer io = in.bx;
        std::vector<float> loss = poisoned_floats(out_of_place.loss_raw.size());
        std::int64_t errors = poison_i64();
        fl::LossOutputs o;
        o.loss = loss.data();
        o.grad = io.data();
        o.error_count = &errors;
        Status s;
        if (in.rowwise()) {
          fl::RowwiseProblem p = in.r;
          p.input = io.data();
          s = fl::compute(p, o, cpu());
        } else {
          fl::ElementwiseProblem p = in.e;
          p.input = io.data();
          s = fl::compute(p, o, cpu());
        }
        ASSERT_EQ(s, Status::Success);
        EXPECT_EQ(errors, 0);
        EXPECT_EQ(std::memcmp(loss.data(), out_of_place.loss_raw.data(), loss.size() * sizeof(float)), 0)
            << "in-place loss differs";
        // Bitwise equal, padding included (the out-of-place gradient's padding is poison; the in-place
        // buffer's padding is the input's padding, also poison — neither may be written).
        EXPECT_TRUE(io.same_bits(out_of_place.grad)) << "in-place gradient differs from out-of-place";
      }
    }
  }
}

TEST_P(CpuPropertyPerFamily, ResultIndependentOfThreadCount) {
  const FamCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  // Big enough for several chunks of work (the CPU path cuts fixed-size chunks).
  Instance in = family_rowwise(c.fam) ? make_instance(rng, c.fam, c.dtype, 3000, 97, true, 0, Reduction::Mean)
                                      : make_instance(rng, c.fam, c.dtype, 200003, 0, true, 0, Reduction::Mean);
  const RunResult one = in.run(true, true, cpu(1));
  ASSERT_EQ(one.status, Status::Success);
  for (int threads : {2, 3, 8, 0}) {
    const RunResult r = in.run(true, true, cpu(threads));
    ASSERT_EQ(r.status, Status::Success);
    EXPECT_EQ(std::memcmp(r.loss_raw.data(), one.loss_raw.data(), one.loss_raw.size() * sizeof(float)), 0)
        << threads << " threads: loss " << r.loss[0] << " vs " << one.loss[0];
    EXPECT_TRUE(r.grad.same_bits(one.grad)) << threads << " threads: gradient differs";
    EXPECT_TRUE(close_vec(r.lse, one.lse, 0, 0, "lse"));
  }
}

// Losses with more than one reduction (rmse has only mean).
class CpuPropertyReductions : public CpuPropertyPerFamily {};

TEST_P(CpuPropertyReductions, ReductionsAreConsistent) {
  const FamCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  for (bool options : {false, true}) {
    SCOPED_TRACE(options ? "with options" : "defaults");
    Instance in = make(rng, options, Reduction::None);
    const RunResult none = in.run();
    in.set_reduction(Reduction::Sum);
    const RunResult sum_r = in.run();
    in.set_reduction(Reduction::Mean);
    const RunResult mean_r = in.run();
    ASSERT_EQ(none.status, Status::Success);
    ASSERT_EQ(sum_r.status, Status::Success);
    ASSERT_EQ(mean_r.status, Status::Success);
    // none's gradient is the gradient of the sum.
    EXPECT_TRUE(none.grad.same_bits(sum_r.grad)) << "gradient(none) != gradient(sum)";
    // Σ none == sum (each none value carries one float rounding).
    double total = 0, bound = 0;
    for (double v : none.loss) {
      total += v;
      bound += ulp(DType::Float32, v);
    }
    EXPECT_NEAR(sum_r.loss[0], total, bound + ulp(DType::Float32, total));
    // mean == sum / divisor, and the gradient scales the same way.
    const double divisor = mean_divisor(in);
    EXPECT_NEAR(mean_r.loss[0], sum_r.loss[0] / divisor, 3e-7 * std::fabs(mean_r.loss[0]));
    Vec scaled = sum_r.grad_dense;
    for (double& g : scaled) g /= divisor;
    EXPECT_TRUE(within_ulps(mean_r.grad_dense, scaled, c.dtype, 1.5, ulp(c.dtype, 0.0)));
    // The default reduction is mean (batchmean for kl_div_logits).
    in.set_reduction(Reduction::Default);
    const RunResult dflt = in.run();
    if (c.fam.loss == Loss::KLDivLogits) {
      in.set_reduction(Reduction::BatchMean);
      const RunResult bm = in.run();
      EXPECT_EQ(dflt.loss_raw, bm.loss_raw);
      EXPECT_TRUE(dflt.grad.same_bits(bm.grad));
    } else {
      EXPECT_EQ(dflt.loss_raw, mean_r.loss_raw);
      EXPECT_TRUE(dflt.grad.same_bits(mean_r.grad));
    }
  }
}

TEST_P(CpuPropertyPerFamily, LossOnlyCallGivesTheSameLoss) {
  FL_SEEDED_RNG(rng);
  for (Reduction red : reductions()) {
    Instance in = make(rng, true, red);
    const RunResult with = in.run(true, true);
    const RunResult without = in.run(false, false);
    ASSERT_EQ(with.status, Status::Success);
    ASSERT_EQ(without.status, Status::Success);
    EXPECT_EQ(with.loss_raw, without.loss_raw) << red_name(red);
    EXPECT_TRUE(without.grad.all_poison()) << "a loss-only call wrote a gradient";
  }
}

// Losses that take weights (the KL losses take none).
class CpuPropertyWeights : public CpuPropertyPerFamily {};

TEST_P(CpuPropertyWeights, UnitWeightsEqualNoWeights) {
  const FamCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  for (Reduction red : reductions()) {
    Instance in = make(rng, false, red);
    const RunResult plain = in.run();
    if (in.rowwise())
      in.class_weight.assign(static_cast<std::size_t>(in.C), 1.0f);
    else
      in.w.assign(static_cast<std::size_t>(in.n), 1.0);
    in.materialise();
    const RunResult ones = in.run();
    ASSERT_EQ(plain.status, Status::Success);
    EXPECT_TRUE(close_vec(ones.loss, plain.loss, 2e-7, 0, "loss")) << red_name(red);
    EXPECT_TRUE(within_ulps(ones.grad_dense, plain.grad_dense, c.dtype, 1.0, 0)) << red_name(red);
  }
}

INSTANTIATE_TEST_SUITE_P(All, CpuPropertyPerFamily, ::testing::ValuesIn(fam_cases()), fam_case_name);
INSTANTIATE_TEST_SUITE_P(All, CpuPropertyReductions,
                         ::testing::ValuesIn(fam_cases_where([](const Family& f) { return f.loss != Loss::RMSE; })),
                         fam_case_name);
INSTANTIATE_TEST_SUITE_P(All, CpuPropertyWeights, ::testing::ValuesIn(fam_cases_where([](const Family& f) {
                           return f.loss != Loss::KLDiv && f.loss != Loss::KLDivLogits;
                         })),
                         fam_case_name);

// =========================================================================================================
// Layout and label properties (row-wise)
// =========================================================================================================

struct LayoutCase {
  Family fam;
  DType dtype;
  friend void PrintTo(const LayoutCase& c, std::ostream* os) {
    *os << family_name(c.fam) << " " << fl::dtype_name(c.dtype);
  }
};
std::vector<LayoutCase> layout_cases(bool labels_only) {
  std::vector<LayoutCase> v;
  for (const Family& f : all_families())
    if (family_rowwise(f) && (!labels_only || family_has_labels(f)))
      for (DType d : kDtypes) v.push_back({f, d});
  return v;
}
std::string layout_case_name(const ::testing::TestParamInfo<LayoutCase>& i) {
  return family_name(i.param.fam) + "_" + fl::dtype_name(i.param.dtype);
}

class CpuPropertyLayout : public ::testing::TestWithParam<LayoutCase> {};
// The label properties: sparse cross_entropy and nll only.
class CpuPropertyLabels : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(CpuPropertyLayout, PaddedRowStrideEqualsDenseAndPaddingIsUntouched) {
  const LayoutCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  Instance in = make_instance(rng, c.fam, c.dtype, 41, 19, true, 0, Reduction::Sum);
  const RunResult dense = in.run(true, true);
  ASSERT_EQ(dense.status, Status::Success);
  for (std::int64_t stride : {20, 32, 64}) {
    in.stride = stride;
    in.materialise();  // rebuilds input/target with poisoned (NaN) padding
    const RunResult padded = in.run(true, true);
    ASSERT_EQ(padded.status, Status::Success) << "stride " << stride;
    EXPECT_EQ(padded.loss_raw, dense.loss_raw) << "stride " << stride;
    EXPECT_TRUE(close_vec(padded.grad_dense, dense.grad_dense, 0, 0)) << "stride " << stride;
    EXPECT_TRUE(close_vec(padded.lse, dense.lse, 0, 0, "lse")) << "stride " << stride;
    EXPECT_TRUE(padding_untouched(padded.grad, in.N, in.C, stride)) << "stride " << stride;
  }
}

TEST_P(CpuPropertyLabels, Int32AndInt64LabelsAgree) {
  const LayoutCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  for (Reduction red : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
    Instance in = make_instance(rng, c.fam, c.dtype, 57, 23, true, 0, red);
    in.label_dtype = DType::Int64;
    in.materialise();
    const RunResult r64 = in.run(true, true);
    in.label_dtype = DType::Int32;
    in.materialise();
    const RunResult r32 = in.run(true, true);
    ASSERT_EQ(r64.status, Status::Success);
    ASSERT_EQ(r32.status, Status::Success);
    EXPECT_EQ(r32.loss_raw, r64.loss_raw);
    EXPECT_TRUE(r32.grad.same_bits(r64.grad));
  }
}

TEST_P(CpuPropertyLabels, IgnoredRowsContributeNothing) {
  const LayoutCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  const std::int64_t N = 40, C = 17;
  Instance in = make_instance(rng, c.fam, c.dtype, N, C, false, 0, Reduction::Sum);
  in.class_weight.resize(C);
  for (float& w : in.class_weight) w = static_cast<float>(rng.uniform(0.5, 2));
  in.r.params.ignore_index = 5;  // a valid class index used as the ignore marker
  std::vector<std::int64_t> kept;
  for (std::int64_t n = 0; n < N; ++n) {
    if (n % 3 == 0) in.labels[n] = 5;
    if (in.labels[n] != 5) kept.push_back(n);
  }
  in.materialise();
  for (Reduction red : {Reduction::Sum, Reduction::Mean}) {
    in.r.reduction = red;
    const RunResult all = in.run(true, true);
    ASSERT_EQ(all.status, Status::Success);
    // The same call on the kept rows only.
    Instance sub = make_instance(rng, c.fam, c.dtype, static_cast<std::int64_t>(kept.size()), C, false, 0, red);
    sub.class_weight = in.class_weight;
    sub.r.params.ignore_index = 5;
    for (std::size_t k = 0; k < kept.size(); ++k) {
      sub.labels[k] = in.labels[kept[k]];
      for (std::int64_t col = 0; col < C; ++col) sub.x[k * C + col] = in.x[kept[k] * C + col];
    }
    sub.materialise();
    const RunResult part = sub.run(true, true);
    ASSERT_EQ(part.status, Status::Success);
    EXPECT_TRUE(close_vec(all.loss, part.loss, 1e-6, 0, "loss")) << red_name(red);
    std::size_t k = 0;
    for (std::int64_t n = 0; n < N; ++n) {
      for (std::int64_t col = 0; col < C; ++col) {
        const double g = all.grad_dense[n * C + col];
        if (in.labels[n] == 5) {
          ASSERT_EQ(g, 0.0) << "ignored row " << n << " has a gradient";
        } else {
          ASSERT_TRUE(same_value(g, part.grad_dense[k * C + col])) << "row " << n << " class " << col;
        }
      }
      if (in.labels[n] != 5) {
        if (c.fam.loss == Loss::CrossEntropy) {
          EXPECT_EQ(all.lse[n], part.lse[k]);
        }
        ++k;
      } else if (c.fam.loss == Loss::CrossEntropy) {
        EXPECT_TRUE(std::isfinite(all.lse[n])) << "ignored rows still report their lse";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, CpuPropertyLayout, ::testing::ValuesIn(layout_cases(false)), layout_case_name);
INSTANTIATE_TEST_SUITE_P(All, CpuPropertyLabels, ::testing::ValuesIn(layout_cases(true)), layout_case_name);

}  // namespace
