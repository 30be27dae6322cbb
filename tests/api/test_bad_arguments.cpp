// Table-driven invalid calls: every entry starts from a call that is valid (checked by the Baseline tests),
// breaks exactly one rule, and must return InvalidArgument from compute(), compute_sync() and workspace_size()
// with NOTHING written: all inputs and outputs live in one arena whose every byte is compared before/after.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

#include "common/test_util.hpp"

namespace {

using namespace tu;
namespace fl = ::fusedloss;

constexpr std::int64_t kMax64 = std::numeric_limits<std::int64_t>::max();
constexpr double kDNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kDInf = std::numeric_limits<double>::infinity();

/// One block of host memory holding every input and output of a call, so overlapping arguments can be built
/// and "nothing written" is one memcmp.
struct Arena {
  std::vector<std::uint64_t> words = std::vector<std::uint64_t>(256);
  unsigned char* bytes() { return reinterpret_cast<unsigned char*>(words.data()); }
  float* f(std::size_t i) { return reinterpret_cast<float*>(bytes()) + i; }
  void* at_byte(std::size_t b) { return bytes() + b; }
  std::size_t size() const { return words.size() * 8; }
};

// Elementwise layout (float indices): input [0,8) target [8,16) weight [16,24) loss [24,32) grad [32,40)
// error_count at float 40 (8-byte aligned) pos_weight_per_column [48,56).
// Row-wise layout (float indices): input [0,20) (N=4, C=5) target [32,52) labels int64 at byte 256 (floats
// [64,72)) class_weight [80,85) loss [96,100) grad [112,132) lse [136,140) error_count at float 144.
struct Call {
  Arena arena;
  bool rowwise = false;
  fl::ElementwiseProblem e;
  fl::RowwiseProblem r;
  fl::LossOutputs out;
  fl::ExecutionConfig cfg;

  explicit Call(bool rows) : rowwise(rows) {
    // Inputs: valid values everywhere; outputs: poison.
    for (std::size_t i = 0; i < 256 * 2; ++i) *arena.f(i) = poison_float();
    if (!rows) {
      for (int i = 0; i < 8; ++i) {
        *arena.f(i) = 0.125f * float(i) - 0.3f;      // input (also a valid probability range for most)
        *arena.f(8 + i) = 0.5f * float(i % 2);      // target in {0, 0.5}
        *arena.f(16 + i) = 1.0f + 0.25f * float(i);  // weight
        *arena.f(48 + i) = 2.0f;                     // pos_weight_per_column
      }
      e.loss = Loss::MSE;
      e.dtype = DType::Float32;
      e.n = 8;
      e.input = arena.f(0);
      e.target = arena.f(8);
      e.weight = arena.f(16);
      e.reduction = Reduction::Mean;
      out.loss = arena.f(24);
      out.grad = arena.f(32);
      out.error_count = reinterpret_cast<std::int64_t*>(arena.f(40));
    } else {
      for (int i = 0; i < 20; ++i) {
        *arena.f(i) = 0.25f * float(i % 7) - 0.5f;  // logits / log-probabilities
        *arena.f(32 + i) = 0.2f;                   // dense target (probabilities)
      }
      const std::int64_t labels[4] = {0, 4, 2, 1};
      std::memcpy(arena.at_byte(256), labels, sizeof labels);
      for (int c = 0; c < 5; ++c) *arena.f(80 + c) = 1.0f + float(c);
      r.loss = Loss::CrossEntropy;
      r.dtype = DType::Float32;
      r.rows = 4;
      r.classes = 5;
      r.row_stride = 5;
      r.input = arena.f(0);
      r.labels = arena.at_byte(256);
      r.label_dtype = DType::Int64;
      r.class_weight = arena.f(80);
      r.reduction = Reduction::Mean;
      out.loss = arena.f(96);
      out.grad = arena.f(112);
      out.lse = arena.f(136);
      out.error_count = reinterpret_cast<std::int64_t*>(arena.f(144));
    }
  }
  /// Switch the row-wise baseline to a loss that takes a dense target.
  void dense(Loss loss) {
    r.loss = loss;
    r.labels = nullptr;
    r.class_weight = nullptr;
    r.target = arena.f(32);
    out.lse = nullptr;
    r.reduction = Reduction::Default;
  }
  Status compute() { return rowwise ? fl::compute(r, out, cfg) : fl::compute(e, out, cfg); }
  Status compute_sync() { return rowwise ? fl::compute_sync(r, out, cfg) : fl::compute_sync(e, out, cfg); }
  Status workspace(std::size_t* bytes) {
    return rowwise ? fl::workspace_size(r, out, cfg, bytes) : fl::workspace_size(e, out, cfg, bytes);
  }
};

struct BadCase {
  const char* name;
  bool rowwise;
  std::function<void(Call&)> breaks;
  friend void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }
};

std::vector<BadCase> bad_cases() {
  std::vector<BadCase> v;
  auto E = [&v](const char* name, std::function<void(Call&)> f) { v.push_back({name, false, std::move(f)}); };
  auto R = [&v](const char* name, std::function<void(Call&)> f) { v.push_back({name, true, std::move(f)}); };

  // ---- elementwise: pointers and sizes
  E("elem_null_input", [](Call& c) { c.e.input = nullptr; });
  E("elem_null_target", [](Call& c) { c.e.target = nullptr; });
  E("elem_null_loss_output", [](Call& c) { c.out.loss = nullptr; });
  E("elem_null_loss_output_none", [](Call& c) { c.e.reduction = Reduction::None; c.out.loss = nullptr; });
  E("elem_negative_n", [](Call& c) { c.e.n = -1; });
  E("elem_int64_min_n", [](Call& c) { c.e.n = std::numeric_limits<std::int64_t>::min(); });
  E("elem_byte_size_overflow", [](Call& c) { c.e.n = kMax64 / 2; });
  E("elem_byte_size_overflow_f16", [](Call& c) { c.e.dtype = DType::Float16; c.e.n = kMax64 / 2 + 7; });
  // ---- elementwise: enums
  E("elem_unknown_loss", [](Call& c) { c.e.loss = static_cast<Loss>(99); });
  E("elem_negative_loss_enum", [](Call& c) { c.e.loss = static_cast<Loss>(-3); });
  E("elem_rowwise_loss", [](Call& c) { c.e.loss = Loss::CrossEntropy; });
  E("elem_kl_div_loss", [](Call& c) { c.e.loss = Loss::KLDiv; });
  E("elem_unknown_dtype", [](Call& c) { c.e.dtype = static_cast<DType>(7); });
  E("elem_label_dtype_as_values", [](Call& c) { c.e.dtype = DType::Int32; });
  E("elem_unknown_reduction", [](Call& c) { c.e.reduction = static_cast<Reduction>(9); });
  E("elem_negative_reduction", [](Call& c) { c.e.reduction = static_cast<Reduction>(-1); });
  E("elem_batchmean", [](Call& c) { c.e.reduction = Reduction::BatchMean; });
  E("elem_unknown_backend", [](Call& c) { c.cfg.backend = static_cast<fl::Backend>(5); });
  // ---- elementwise: options
  E("elem_rmse_sum", [](Call& c) { c.e.loss = Loss::RMSE; c.e.reduction = Reduction::Sum; });
  E("elem_rmse_none", [](Call& c) { c.e.loss = Loss::RMSE; c.e.reduction = Reduction::None; });
  E("elem_huber_delta_zero", [](Call& c) { c.e.loss = Loss::Huber; c.e.params.delta = 0; });
  E("elem_huber_delta_negative", [](Call& c) { c.e.loss = Loss::Huber; c.e.params.delta = -1; });
  E("elem_huber_delta_nan", [](Call& c) { c.e.loss = Loss::Huber; c.e.params.delta = kDNaN; });
  E("elem_pseudo_huber_delta_zero", [](Call& c) { c.e.loss = Loss::PseudoHuber; c.e.params.delta = 0; });
  E("elem_pseudo_huber_delta_inf", [](Call& c) { c.e.loss = Loss::PseudoHuber; c.e.params.delta = kDInf; });
  E("elem_smooth_l1_beta_negative", [](Call& c) { c.e.loss = Loss::SmoothL1; c.e.params.beta = -0.5; });
  E("elem_smooth_l1_beta_nan", [](Call& c) { c.e.loss = Loss::SmoothL1; c.e.params.beta = kDNaN; });
  E("elem_pos_weight_zero", [](Call& c) { c.e.loss = Loss::BCEWithLogits; c.e.params.pos_weight = 0; });
  E("elem_pos_weight_negative", [](Call& c) { c.e.loss = Loss::BCEWithLogits; c.e.params.pos_weight = -2; });
  E("elem_pos_weight_nan", [](Call& c) { c.e.loss = Loss::BCEWithLogits; c.e.params.pos_weight = kDNaN; });
  E("elem_pos_weight_column_without_columns", [](Call& c) {
    c.e.loss = Loss::BCEWithLogits;
    c.e.params.pos_weight_per_column = c.arena.f(48);
    c.e.params.columns = 0;
  });
  E("elem_columns_without_pos_weight_column", [](Call& c) {
    c.e.loss = Loss::BCEWithLogits;
    c.e.params.columns = 4;
  });
  E("elem_columns_not_dividing_n", [](Call& c) {
    c.e.loss = Loss::BCEWithLogits;
    c.e.params.pos_weight_per_column = c.arena.f(48);
    c.e.params.columns = 3;
  });
  E("elem_columns_negative", [](Call& c) { c.e.loss = Loss::BCEWithLogits; c.e.params.columns = -4; });
  E("elem_pos_weight_column_on_mse", [](Call& c) {
    c.e.params.pos_weight_per_column = c.arena.f(48);
    c.e.params.columns = 4;
  });
  E("elem_grad_scale_nan", [](Call& c) { c.e.grad_scale = kDNaN; });
  E("elem_grad_scale_inf", [](Call& c) { c.e.grad_scale = kDInf; });
  E("elem_grad_scale_neg_inf", [](Call& c) { c.e.grad_scale = -kDInf; });
  E("elem_grad_scale_below_float_min", [](Call& c) { c.e.grad_scale = 1e-40; });
  E("elem_grad_scale_above_float_max", [](Call& c) { c.e.grad_scale = 3.5e38; });
  E("elem_lse_output", [](Call& c) { c.out.lse = c.arena.f(64); });
  // ---- elementwise: overlapping buffers (only grad == input exactly is allowed)
  E("elem_grad_is_target", [](Call& c) { c.out.grad = c.arena.f(8); });
  E("elem_grad_is_weight", [](Call& c) { c.out.grad = c.arena.f(16); });
  E("elem_grad_offset_into_input", [](Call& c) { c.out.grad = c.arena.f(1); });
  E("elem_grad_straddles_input_target", [](Call& c) { c.out.grad = c.arena.f(4); });
  E("elem_loss_is_input", [](Call& c) { c.out.loss = c.arena.f(3); });
  E("elem_loss_none_overlaps_target", [](Call& c) {
    c.e.reduction = Reduction::None;
    c.out.loss = c.arena.f(12);
  });
  E("elem_loss_inside_grad", [](Call& c) { c.out.loss = c.arena.f(35); });
  E("elem_error_count_is_loss", [](Call& c) { c.out.error_count = reinterpret_cast<std::int64_t*>(c.arena.f(24)); });
  E("elem_grad_overlaps_pos_weight_column", [](Call& c) {
    c.e.loss = Loss::BCEWithLogits;
    c.e.params.pos_weight_per_column = c.arena.f(48);
    c.e.params.columns = 4;
    c.out.grad = c.arena.f(44);
  });

  // ---- row-wise: shapes and sizes
  R("rows_negative_rows", [](Call& c) { c.r.rows = -1; });
  R("rows_zero_classes", [](Call& c) { c.r.classes = 0; c.r.row_stride = 0; });
  R("rows_negative_classes", [](Call& c) { c.r.classes = -5; c.r.row_stride = 0; });
  R("rows_stride_below_classes", [](Call& c) { c.r.row_stride = 3; });
  R("rows_negative_stride", [](Call& c) { c.r.row_stride = -5; });
  R("rows_size_overflow", [](Call& c) {
    c.r.rows = std::int64_t(1) << 40;
    c.r.classes = std::int64_t(1) << 30;
    c.r.row_stride = 0;
  });
  R("rows_stride_overflow", [](Call& c) { c.r.row_stride = kMax64 - 2; });
  R("rows_byte_size_overflow", [](Call& c) {
    c.r.rows = kMax64 / 5;  // rows·C fits in int64, the bytes do not
    c.r.row_stride = 5;
  });
  // ---- row-wise: pointers and which inputs each loss takes
  R("rows_null_input", [](Call& c) { c.r.input = nullptr; });
  R("rows_null_loss_output", [](Call& c) { c.out.loss = nullptr; });
  R("rows_null_loss_output_none", [](Call& c) { c.r.reduction = Reduction::None; c.out.loss = nullptr; });
  R("rows_ce_without_labels_or_target", [](Call& c) { c.r.labels = nullptr; });
  R("rows_ce_labels_and_target", [](Call& c) { c.r.target = c.arena.f(32); });
  R("rows_nll_with_target", [](Call& c) { c.r.loss = Loss::NLL; c.out.lse = nullptr; c.r.target = c.arena.f(32); });
  R("rows_nll_without_labels", [](Call& c) { c.r.loss = Loss::NLL; c.out.lse = nullptr; c.r.labels = nullptr; });
  R("rows_kl_div_with_labels", [](Call& c) { c.dense(Loss::KLDiv); c.r.labels = c.arena.at_byte(256); });
  R("rows_kl_div_without_target", [](Call& c) { c.dense(Loss::KLDiv); c.r.target = nullptr; });
  R("rows_kl_div_with_class_weight", [](Call& c) { c.dense(Loss::KLDiv); c.r.class_weight = c.arena.f(80); });
  R("rows_kl_logits_with_labels", [](Call& c) { c.dense(Loss::KLDivLogits); c.r.labels = c.arena.at_byte(256); });
  R("rows_kl_logits_without_target", [](Call& c) { c.dense(Loss::KLDivLogits); c.r.target = nullptr; });
  R("rows_label_dtype_float", [](Call& c) { c.r.label_dtype = DType::Float32; });
  R("rows_label_dtype_unknown", [](Call& c) { c.r.label_dtype = static_cast<DType>(11); });
  // ---- row-wise: enums
  R("rows_unknown_loss", [](Call& c) { c.r.loss = static_cast<Loss>(16); });
  R("rows_elementwise_loss", [](Call& c) { c.r.loss = Loss::MSE; });
  R("rows_unknown_dtype", [](Call& c) { c.r.dtype = static_cast<DType>(-2); });
  R("rows_int_dtype_values", [](Call& c) { c.r.dtype = DType::Int64; });
  R("rows_unknown_reduction", [](Call& c) { c.r.reduction = static_cast<Reduction>(5); });
  R("rows_batchmean_cross_entropy", [](Call& c) { c.r.reduction = Reduction::BatchMean; });
  R("rows_batchmean_nll", [](Call& c) {
    c.r.loss = Loss::NLL;
    c.out.lse = nullptr;
    c.r.reduction = Reduction::BatchMean;
  });
  R("rows_batchmean_soft_cross_entropy", [](Call& c) {
    c.dense(Loss::CrossEntropy);
    c.r.reduction = Reduction::BatchMean;
  });
  R("rows_unknown_backend", [](Call& c) { c.cfg.backend = static_cast<fl::Backend>(9); });
  // ---- row-wise: options
  R("rows_label_smoothing_negative", [](Call& c) { c.r.params.label_smoothing = -0.1; });
  R("rows_label_smoothing_above_one", [](Call& c) { c.r.params.label_smoothing = 1.5; });
  R("rows_label_smoothing_nan", [](Call& c) { c.r.params.label_smoothing = kDNaN; });
  R("rows_z_loss_negative", [](Call& c) { c.r.params.z_loss = -1e-4; });
  R("rows_z_loss_inf", [](Call& c) { c.r.params.z_loss = kDInf; });
  R("rows_softcap_negative", [](Call& c) { c.r.params.softcap = -30; });
  R("rows_softcap_nan", [](Call& c) { c.r.params.softcap = kDNaN; });
  R("rows_temperature_zero", [](Call& c) { c.dense(Loss::KLDivLogits); c.r.params.temperature = 0; });
  R("rows_temperature_negative", [](Call& c) { c.dense(Loss::KLDivLogits); c.r.params.temperature = -2; });
  R("rows_temperature_inf", [](Call& c) { c.dense(Loss::KLDivLogits); c.r.params.temperature = kDInf; });
  R("rows_temperature_nan", [](Call& c) { c.dense(Loss::KLDivLogits); c.r.params.temperature = kDNaN; });
  R("rows_grad_scale_nan", [](Call& c) { c.r.grad_scale = kDNaN; });
  R("rows_grad_scale_inf", [](Call& c) { c.r.grad_scale = -kDInf; });
  R("rows_grad_scale_below_float_min", [](Call& c) { c.r.grad_scale = -1e-40; });
  R("rows_grad_scale_above_float_max", [](Call& c) { c.r.grad_scale = -3.5e38; });
  R("rows_lse_with_nll", [](Call& c) { c.r.loss = Loss::NLL; });
  R("rows_lse_with_kl_div", [](Call& c) { c.dense(Loss::KLDiv); c.out.lse = c.arena.f(136); });
  R("rows_lse_with_kl_logits", [](Call& c) { c.dense(Loss::KLDivLogits); c.out.lse = c.arena.f(136); });
  // ---- row-wise: overlapping buffers
  R("rows_grad_overlaps_labels", [](Call& c) { c.out.grad = c.arena.f(60); });
  R("rows_grad_offset_one_row", [](Call& c) { c.out.grad = c.arena.f(5); });
  R("rows_grad_offset_one_element", [](Call& c) { c.out.grad = c.arena.f(1); });
  R("rows_grad_is_target", [](Call& c) { c.dense(Loss::KLDiv); c.out.grad = c.arena.f(32); });
  R("rows_grad_is_teacher", [](Call& c) { c.dense(Loss::KLDivLogits); c.out.grad = c.arena.f(32); });
  R("rows_grad_overlaps_class_weight", [](Call& c) { c.out.grad = c.arena.f(70); });
  R("rows_loss_is_lse", [](Call& c) { c.out.loss = c.arena.f(137); });
  R("rows_lse_overlaps_input", [](Call& c) { c.out.lse = c.arena.f(18); });
  R("rows_lse_overlaps_grad", [](Call& c) { c.out.lse = c.arena.f(128); });
  R("rows_loss_none_overlaps_grad", [](Call& c) {
    c.r.reduction = Reduction::None;
    c.out.loss = c.arena.f(110);
  });
  R("rows_error_count_inside_grad", [](Call& c) {
    c.out.error_count = reinterpret_cast<std::int64_t*>(c.arena.f(114));
  });
  R("rows_loss_kl_none_overlaps_lse", [](Call& c) {
    // kl_div none writes N·C = 20 floats from 96: runs into the grad region at 112.
    c.dense(Loss::KLDiv);
    c.r.reduction = Reduction::None;
  });
  return v;
}

class BadArguments : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadArguments, ReturnsInvalidArgumentAndWritesNothing) {
  const BadCase& bc = GetParam();
  Call c(bc.rowwise);
  bc.breaks(c);
  const std::vector<std::uint64_t> before = c.arena.words;

  EXPECT_EQ(c.compute(), Status::InvalidArgument);
  EXPECT_TRUE(c.arena.words == before) << "compute() wrote to memory on an invalid call";

  EXPECT_EQ(c.compute_sync(), Status::InvalidArgument);
  EXPECT_TRUE(c.arena.words == before) << "compute_sync() wrote to memory on an invalid call";

  std::size_t bytes = 4242;
  EXPECT_EQ(c.workspace(&bytes), Status::InvalidArgument);
  EXPECT_EQ(bytes, 4242u) << "workspace_size() wrote *bytes on an invalid call";
  EXPECT_TRUE(c.arena.words == before);
}

INSTANTIATE_TEST_SUITE_P(Table, BadArguments, ::testing::ValuesIn(bad_cases()),
                         [](const ::testing::TestParamInfo<BadCase>& info) { return std::string(info.param.name); });

TEST(BadArgumentsTable, HasAtLeastThirtyDistinctCases) {
  const auto cases = bad_cases();
  EXPECT_GE(cases.size(), 30u);
  std::vector<std::string> names;
  for (const auto& c : cases) names.emplace_back(c.name);
  std::sort(names.begin(), names.end());
  EXPECT_TRUE(std::adjacent_find(names.begin(), names.end()) == names.end());
}

// The baselines the table breaks must themselves be valid calls — otherwise every entry would pass trivially.
TEST(BadArgumentsBaseline, ElementwiseBaselineIsValid) {
  for (Loss loss : {Loss::MSE, Loss::Huber, Loss::PseudoHuber, Loss::SmoothL1, Loss::BCEWithLogits, Loss::RMSE}) {
    Call c(false);
    c.e.loss = loss;
    EXPECT_EQ(c.compute(), Status::Success) << fl::loss_name(loss);
    EXPECT_FALSE(is_poison(*c.arena.f(24)));
    EXPECT_FALSE(is_poison(*c.arena.f(32)));
  }
  Call c(false);
  c.e.loss = Loss::BCEWithLogits;
  c.e.params.pos_weight_per_column = c.arena.f(48);
  c.e.params.columns = 4;
  EXPECT_EQ(c.compute(), Status::Success);
  // The one allowed overlap: an in-place gradient.
  Call in_place(false);
  in_place.out.grad = in_place.arena.f(0);
  EXPECT_EQ(in_place.compute(), Status::Success);
  // none with n floats at the loss region.
  Call none(false);
  none.e.reduction = Reduction::None;
  EXPECT_EQ(none.compute(), Status::Success);
  for (int i = 24; i < 32; ++i) EXPECT_FALSE(is_poison(*none.arena.f(i)));
}

TEST(BadArgumentsBaseline, RowwiseBaselineIsValid) {
  {
    Call c(true);
    EXPECT_EQ(c.compute(), Status::Success);
    EXPECT_FALSE(is_poison(*c.arena.f(96)));
    EXPECT_FALSE(is_poison(*c.arena.f(112)));
    EXPECT_FALSE(is_poison(*c.arena.f(136)));
    EXPECT_EQ(*reinterpret_cast<std::int64_t*>(c.arena.f(144)), 0);
  }
  for (Loss loss : {Loss::CrossEntropy, Loss::KLDiv, Loss::KLDivLogits}) {
    Call c(true);
    c.dense(loss);
    EXPECT_EQ(c.compute(), Status::Success) << fl::loss_name(loss);
  }
  {
    Call c(true);
    c.r.loss = Loss::NLL;
    c.out.lse = nullptr;
    EXPECT_EQ(c.compute(), Status::Success);
  }
  {
    Call c(true);  // none: N floats of loss fit between 96 and the grad at 112
    c.r.reduction = Reduction::None;
    EXPECT_EQ(c.compute(), Status::Success);
  }
  {
    Call c(true);  // in-place gradient
    c.out.grad = c.arena.f(0);
    EXPECT_EQ(c.compute(), Status::Success);
  }
  {
    Call c(true);  // row_stride 0 means C
    c.r.row_stride = 0;
    EXPECT_EQ(c.compute(), Status::Success);
  }
  {
    Call c(true);  // N = 0 with null pointers is fine
    c.r.rows = 0;
    c.r.input = nullptr;
    c.r.labels = nullptr;
    EXPECT_EQ(c.compute(), Status::Success);
  }
}

// The edges of the grad_scale rule that are valid: 0 (loss only: the gradient is exactly zero) and
// |grad_scale| = FLT_MIN or FLT_MAX. The table above holds the invalid neighbours (1e-40, 3.5e38).
TEST(BadArgumentsBaseline, GradScaleEdgesAreValid) {
  constexpr double kMin = std::numeric_limits<float>::min(), kMax = std::numeric_limits<float>::max();
  for (bool rows : {false, true}) {
    for (double scale : {0.0, kMin, -kMin, kMax, -kMax}) {
      SCOPED_TRACE(std::string(rows ? "row-wise" : "elementwise") + ", grad_scale " + std::to_string(scale));
      Call c(rows);
      (rows ? c.r.grad_scale : c.e.grad_scale) = scale;
      std::size_t bytes = 4242;
      EXPECT_EQ(c.workspace(&bytes), Status::Success);
      ASSERT_EQ(c.compute(), Status::Success);
      const std::size_t loss_at = rows ? 96 : 24, grad_at = rows ? 112 : 32, grad_count = rows ? 20 : 8;
      EXPECT_TRUE(std::isfinite(*c.arena.f(loss_at))) << "the loss does not depend on grad_scale";
      for (std::size_t i = 0; i < grad_count; ++i) {
        const float g = *c.arena.f(grad_at + i);
        EXPECT_FALSE(is_poison(g)) << "gradient " << i << " not written";
        if (scale == 0.0) {
          EXPECT_EQ(g, 0.0f) << "gradient " << i << ": grad_scale 0 gives an exactly zero gradient";
        }
      }
    }
  }
}

}  // namespace
