// linear_cross_entropy: invalid calls. Each entry starts from a valid call (checked to succeed) and breaks one
// rule of include/fusedloss/api.hpp; the call must return its status and write nothing: every buffer (inputs
// and outputs) lives in one arena that is compared byte for byte before and after.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "fusedloss/fusedloss.hpp"

namespace {

namespace fl = ::fusedloss;
using fl::Status;

constexpr std::int64_t kN = 5, kH = 3, kV = 7;

/// One block of memory for every buffer of a call (256-byte aligned slots).
struct Arena {
  static constexpr std::size_t kSlot = 1024;
  enum Slot { Hidden, Weight, Bias, Labels, ClassW, Loss, Lse, GradH, GradW, GradB, Err, kSlots };
  std::vector<unsigned char> bytes = std::vector<unsigned char>(kSlot * kSlots + 256);
  unsigned char* base() {
    const auto p = reinterpret_cast<std::uintptr_t>(bytes.data());
    return bytes.data() + ((256 - p % 256) % 256);
  }
  void* at(Slot s, std::size_t offset = 0) { return base() + s * kSlot + offset; }
  Arena() {
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = 0xA5;
    float* h = static_cast<float*>(at(Hidden));
    for (int i = 0; i < 64; ++i) h[i] = 0.1f * float(i % 7) - 0.3f;
    float* w = static_cast<float*>(at(Weight));
    for (int i = 0; i < 64; ++i) w[i] = 0.05f * float(i % 5) - 0.1f;
    float* b = static_cast<float*>(at(Bias));
    for (int i = 0; i < 16; ++i) b[i] = 0.01f * float(i);
    std::int64_t* y = static_cast<std::int64_t*>(at(Labels));
    for (int i = 0; i < 16; ++i) y[i] = i % kV;
    float* cw = static_cast<float*>(at(ClassW));
    for (int i = 0; i < 16; ++i) cw[i] = 1.0f;
  }
};

struct Call {
  fl::LinearCrossEntropyProblem p;
  fl::LinearCrossEntropyOutputs o;
  fl::ExecutionConfig cfg;
};

Call valid_call(Arena& a) {
  Call c;
  c.p.rows = kN;
  c.p.hidden_size = kH;
  c.p.classes = kV;
  c.p.hidden = a.at(Arena::Hidden);
  c.p.weight = a.at(Arena::Weight);
  c.p.bias = a.at(Arena::Bias);
  c.p.labels = a.at(Arena::Labels);
  c.p.class_weight = static_cast<const float*>(a.at(Arena::ClassW));
  c.p.memory_budget_bytes = 1 << 16;
  c.o.loss = static_cast<float*>(a.at(Arena::Loss));
  c.o.lse = static_cast<float*>(a.at(Arena::Lse));
  c.o.grad_hidden = a.at(Arena::GradH);
  c.o.grad_weight = a.at(Arena::GradW);
  c.o.grad_bias = a.at(Arena::GradB);
  c.o.error_count = static_cast<std::int64_t*>(a.at(Arena::Err));
  return c;
}

struct Bad {
  std::string name;
  std::function<void(Call&, Arena&)> breaks;
  Status expected = Status::InvalidArgument;
};

std::vector<Bad> bad_calls() {
  return {
      {"unknown_dtype", [](Call& c, Arena&) { c.p.dtype = static_cast<fl::DType>(9); }},
      {"label_dtype_as_value", [](Call& c, Arena&) { c.p.dtype = fl::DType::Int32; }},
      {"float_label_dtype", [](Call& c, Arena&) { c.p.label_dtype = fl::DType::Float32; }},
      {"batchmean", [](Call& c, Arena&) { c.p.reduction = fl::Reduction::BatchMean; }},
      {"unknown_reduction", [](Call& c, Arena&) { c.p.reduction = static_cast<fl::Reduction>(17); }},
      {"negative_rows", [](Call& c, Arena&) { c.p.rows = -1; }},
      {"zero_hidden_size", [](Call& c, Arena&) { c.p.hidden_size = 0; }},
      {"zero_classes", [](Call& c, Arena&) { c.p.classes = 0; }},
      {"stride_below_h", [](Call& c, Arena&) { c.p.hidden_stride = kH - 1; }},
      {"negative_stride", [](Call& c, Arena&) { c.p.hidden_stride = -3; }},
      {"classes_over_int", [](Call& c, Arena&) { c.p.classes = std::int64_t(1) << 31; }},
      {"size_overflow", [](Call& c, Arena&) { c.p.hidden_stride = std::numeric_limits<std::int64_t>::max() / 2; }},
      {"null_hidden", [](Call& c, Arena&) { c.p.hidden = nullptr; }},
      {"null_weight", [](Call& c, Arena&) { c.p.weight = nullptr; }},
      {"null_labels", [](Call& c, Arena&) { c.p.labels = nullptr; }},
      {"null_loss", [](Call& c, Arena&) { c.o.loss = nullptr; }},
      {"grad_bias_without_bias", [](Call& c, Arena&) { c.p.bias = nullptr; }},
      {"negative_max_chunk_rows", [](Call& c, Arena&) { c.p.max_chunk_rows = -1; }},
      {"budget_below_one_row", [](Call& c, Arena&) { c.p.memory_budget_bytes = kV * 4; }},
      {"smoothing_above_one", [](Call& c, Arena&) { c.p.params.label_smoothing = 1.5; }},
      {"negative_z_loss", [](Call& c, Arena&) { c.p.params.z_loss = -1e-4; }},
      {"nan_softcap", [](Call& c, Arena&) { c.p.params.softcap = std::numeric_limits<double>::quiet_NaN(); }},
      {"kl_option_log_target", [](Call& c, Arena&) { c.p.params.log_target = true; }},
      {"kl_option_temperature", [](Call& c, Arena&) { c.p.params.temperature = 2.0; }},
      {"inf_grad_scale", [](Call& c, Arena&) { c.p.grad_scale = std::numeric_limits<double>::infinity(); }},
      {"misaligned_weight", [](Call& c, Arena& a) { c.p.weight = a.at(Arena::Weight, 2); }},
      {"misaligned_labels", [](Call& c, Arena& a) { c.p.labels = a.at(Arena::Labels, 4); }},
      {"grad_hidden_overlaps_hidden", [](Call& c, Arena& a) { c.o.grad_hidden = a.at(Arena::Hidden, 8); }},
      {"grad_hidden_is_hidden", [](Call& c, Arena& a) { c.o.grad_hidden = a.at(Arena::Hidden); }},
      {"grad_weight_is_weight", [](Call& c, Arena& a) { c.o.grad_weight = a.at(Arena::Weight); }},
      {"grad_weight_overlaps_grad_hidden", [](Call& c, Arena& a) { c.o.grad_weight = a.at(Arena::GradH, 16); }},
      {"loss_overlaps_lse", [](Call& c, Arena& a) { c.o.loss = static_cast<float*>(a.at(Arena::Lse, 4)); }},
      {"grad_bias_overlaps_labels", [](Call& c, Arena& a) { c.o.grad_bias = a.at(Arena::Labels, 8); }},
      {"misaligned_workspace",
       [](Call& c, Arena& a) {
         c.cfg.workspace = a.at(Arena::Err, 8);
         c.cfg.workspace_bytes = 1 << 20;
       }},
      {"small_workspace",
       [](Call& c, Arena& a) {
         c.cfg.workspace = a.at(Arena::Err);
         c.cfg.workspace_bytes = 16;
       },
       Status::WorkspaceTooSmall},
  };
}

TEST(LinearCeArguments, BaseCallSucceeds) {
  Arena a;
  Call c = valid_call(a);
  EXPECT_EQ(fl::compute(c.p, c.o, c.cfg), Status::Success);
  std::size_t bytes = 0;
  EXPECT_EQ(fl::workspace_size(c.p, c.o, c.cfg, &bytes), Status::Success);
  EXPECT_GT(bytes, 0u);
  EXPECT_EQ(fl::workspace_size(c.p, c.o, c.cfg, nullptr), Status::InvalidArgument);
  EXPECT_EQ(fl::linear_cross_entropy_plan(c.p, c.o, c.cfg, nullptr), Status::InvalidArgument);
}

TEST(LinearCeArguments, EachBrokenRuleIsRejectedWithNothingWritten) {
  const std::vector<Bad> table = bad_calls();
  EXPECT_GE(table.size(), 30u);
  for (const Bad& bad : table) {
    SCOPED_TRACE(bad.name);
    Arena a;
    Call c = valid_call(a);
    bad.breaks(c, a);
    const std::vector<unsigned char> before = a.bytes;
    EXPECT_EQ(fl::compute(c.p, c.o, c.cfg), bad.expected);
    EXPECT_EQ(fl::compute_sync(c.p, c.o, c.cfg), bad.expected);
    if (bad.name.find("workspace") == std::string::npos) {  // workspace_size does not look at the workspace
      std::size_t bytes = 0;
      EXPECT_EQ(fl::workspace_size(c.p, c.o, c.cfg, &bytes), Status::InvalidArgument);
    }
    EXPECT_TRUE(before == a.bytes) << "an invalid call wrote memory";
  }
}

}  // namespace
