// tests/reliability/invalid_calls.hpp — the table of invalid calls (issue 6, item 1), shared by the CPU
// reliability tests (tests/reliability/test_invalid_calls.cpp) and the GPU ones
// (tests/cuda/test_reliability_cuda.cu), so both backends face exactly the same calls.
//
// Every buffer of every call lives in one block of memory, the Arena (host memory for the CPU
// run, device memory for the GPU run). The runner fills the arena (valid data in the input
// slots, a poison pattern in the output slots), snapshots all of it, makes the call, and then
// compares the whole arena byte for byte: an invalid call must write nothing anywhere — not in
// the outputs, and not in an input that an overlapping output points into.
//
// Each entry starts from a valid call (the same one valid_calls() lists, and which the tests
// check succeeds) and breaks exactly one rule of include/fusedloss/api.hpp, so the status it
// gets can only come from that rule.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "fusedloss/api.hpp"

namespace reliability {

/// The memory every call of the table uses: fixed slots of kSlotBytes each.
struct Arena {
  enum Slot : int { X = 0, Y, W, PosCol, Labels, ClassW, Grad, LossOut, Lse, Err, kSlots };
  static constexpr std::size_t kSlotBytes = 1024;
  static constexpr std::size_t kBytes = kSlotBytes * kSlots;
  /// Shapes of the table's calls: elementwise n, row-wise N × C (row stride up to kMaxStride).
  static constexpr std::int64_t kN = 12, kRows = 3, kClasses = 4, kMaxStride = 6;

  unsigned char* base = nullptr;  ///< kBytes bytes, host or device

  void* at(Slot s, std::size_t byte_offset = 0) const {
    return base + static_cast<std::size_t>(s) * kSlotBytes + byte_offset;
  }
  float* f(Slot s, std::size_t byte_offset = 0) const { return static_cast<float*>(at(s, byte_offset)); }
  static bool is_output(int s) { return s >= Grad; }

  /// The initial image of the arena: valid data in the input slots (float32 values in (0, 1) so
  /// that bce sees valid probabilities, int64 labels in [0, C), weights 1, pos weights 2), the
  /// poison byte 0xA5 in the output slots.
  static std::vector<unsigned char> initial_image() {
    std::vector<unsigned char> img(kBytes, 0);
    auto put_f = [&](Slot s, std::size_t i, float v) {
      std::memcpy(img.data() + static_cast<std::size_t>(s) * kSlotBytes + 4 * i, &v, 4);
    };
    const std::size_t floats = kSlotBytes / 4;
    for (std::size_t i = 0; i < floats; ++i) {
      put_f(X, i, 0.05f + 0.9f * static_cast<float>((i * 7) % 17) / 17.0f);
      put_f(Y, i, static_cast<float>((i * 5) % 11) / 10.0f);
      put_f(W, i, 1.0f);
      put_f(PosCol, i, 2.0f);
      put_f(ClassW, i, 1.0f);
    }
    for (std::size_t i = 0; i < kSlotBytes / 8; ++i) {
      const std::int64_t label = static_cast<std::int64_t>(i % kClasses);
      std::memcpy(img.data() + static_cast<std::size_t>(Labels) * kSlotBytes + 8 * i, &label, 8);
    }
    for (int s = Grad; s < kSlots; ++s)
      std::memset(img.data() + static_cast<std::size_t>(s) * kSlotBytes, 0xA5, kSlotBytes);
    return img;
  }
};

/// One call of the table.
struct Call {
  std::string name;
  bool rowwise = false;
  fusedloss::ElementwiseProblem ep{};
  fusedloss::RowwiseProblem rp{};
  fusedloss::LossOutputs out{};
  fusedloss::ExecutionConfig cfg{};
  fusedloss::Status expected = fusedloss::Status::InvalidArgument;            ///< from compute()
  fusedloss::Status expected_workspace = fusedloss::Status::InvalidArgument;  ///< from workspace_size()
};

inline const char* loss_tag(fusedloss::Loss l) { return fusedloss::loss_name(l); }

/// A valid elementwise call of `loss` on the arena: n = kN float32 values, mean, grad and error count.
inline Call valid_elementwise(const Arena& a, fusedloss::Loss loss, fusedloss::Backend backend) {
  Call c;
  c.name = std::string("valid ") + loss_tag(loss);
  c.rowwise = false;
  c.ep.loss = loss;
  c.ep.dtype = fusedloss::DType::Float32;
  c.ep.n = Arena::kN;
  c.ep.input = a.at(Arena::X);
  c.ep.target = a.at(Arena::Y);
  c.ep.weight = a.at(Arena::W);
  c.ep.reduction = fusedloss::Reduction::Mean;
  c.out.loss = a.f(Arena::LossOut);
  c.out.grad = a.at(Arena::Grad);
  c.out.error_count = static_cast<std::int64_t*>(a.at(Arena::Err));
  c.cfg.backend = backend;
  c.expected = c.expected_workspace = fusedloss::Status::Success;
  return c;
}

/// The row-wise flavours the table exercises.
enum class RowKind { CrossEntropy, CrossEntropySoft, NLL, KLDiv, KLDivLogits };

inline const char* row_kind_tag(RowKind k) {
  switch (k) {
    case RowKind::CrossEntropy: return "cross_entropy";
    case RowKind::CrossEntropySoft: return "cross_entropy(soft)";
    case RowKind::NLL: return "nll";
    case RowKind::KLDiv: return "kl_div";
    case RowKind::KLDivLogits: return "kl_div_logits";
  }
  return "?";
}

/// A valid row-wise call on the arena: N = kRows, C = kClasses, float32, default reduction.
inline Call valid_rowwise(const Arena& a, RowKind kind, fusedloss::Backend backend) {
  Call c;
  c.name = std::string("valid ") + row_kind_tag(kind);
  c.rowwise = true;
  fusedloss::RowwiseProblem& p = c.rp;
  p.dtype = fusedloss::DType::Float32;
  p.rows = Arena::kRows;
  p.classes = Arena::kClasses;
  p.input = a.at(Arena::X);
  p.reduction = fusedloss::Reduction::Default;
  c.out.loss = a.f(Arena::LossOut);
  c.out.grad = a.at(Arena::Grad);
  c.out.error_count = static_cast<std::int64_t*>(a.at(Arena::Err));
  switch (kind) {
    case RowKind::CrossEntropy:
      p.loss = fusedloss::Loss::CrossEntropy;
      p.labels = a.at(Arena::Labels);
      p.label_dtype = fusedloss::DType::Int64;
      p.class_weight = a.f(Arena::ClassW);
      c.out.lse = a.f(Arena::Lse);
      break;
    case RowKind::CrossEntropySoft:
      p.loss = fusedloss::Loss::CrossEntropy;
      p.target = a.at(Arena::Y);
      p.class_weight = a.f(Arena::ClassW);
      c.out.lse = a.f(Arena::Lse);
      break;
    case RowKind::NLL:
      p.loss = fusedloss::Loss::NLL;
      p.labels = a.at(Arena::Labels);
      p.label_dtype = fusedloss::DType::Int64;
      p.class_weight = a.f(Arena::ClassW);
      break;
    case RowKind::KLDiv:
      p.loss = fusedloss::Loss::KLDiv;
      p.target = a.at(Arena::Y);
      break;
    case RowKind::KLDivLogits:
      p.loss = fusedloss::Loss::KLDivLogits;
      p.target = a.at(Arena::Y);
      break;
  }
  c.cfg.backend = backend;
  c.expected = c.expected_workspace = fusedloss::Status::Success;
  return c;
}

inline std::vector<fusedloss::Loss> elementwise_losses() {
  using L = fusedloss::Loss;
  return {L::MSE,         L::MAE,   L::RMSE,         L::MSLE,  L::Huber, L::SmoothL1,
          L::PseudoHuber, L::LogCosh, L::Hinge, L::SquaredHinge, L::BCE, L::BCEWithLogits};
}

inline std::vector<RowKind> row_kinds() {
  return {RowKind::CrossEntropy, RowKind::CrossEntropySoft, RowKind::NLL, RowKind::KLDiv, RowKind::KLDivLogits};
}

/// The valid calls every table entry is derived from; each must succeed.
inline std::vector<Call> valid_calls(const Arena& a, fusedloss::Backend backend) {
  std::vector<Call> calls;
  for (fusedloss::Loss l : elementwise_losses()) calls.push_back(valid_elementwise(a, l, backend));
  for (RowKind k : row_kinds()) calls.push_back(valid_rowwise(a, k, backend));
  // A few valid edge shapes, to show the table's rules are not over-eager.
  {
    Call c = valid_elementwise(a, fusedloss::Loss::MSE, backend);
    c.name = "valid in-place gradient (grad == input)";
    c.out.grad = const_cast<void*>(c.ep.input);
    calls.push_back(c);
  }
  {
    Call c = valid_elementwise(a, fusedloss::Loss::BCEWithLogits, backend);
    c.name = "valid bce_with_logits per-column pos_weight (columns 4 divides 12)";
    c.ep.params.pos_weight_per_column = a.f(Arena::PosCol);
    c.ep.params.columns = 4;
    calls.push_back(c);
  }
  {
    Call c = valid_elementwise(a, fusedloss::Loss::SmoothL1, backend);
    c.name = "valid smooth_l1 beta 0";
    c.ep.params.beta = 0.0;
    calls.push_back(c);
  }
  {
    Call c = valid_rowwise(a, RowKind::CrossEntropy, backend);
    c.name = "valid cross_entropy row_stride 6, label_smoothing 1, in-place gradient";
    c.rp.row_stride = Arena::kMaxStride;
    c.rp.params.label_smoothing = 1.0;
    c.out.grad = const_cast<void*>(c.rp.input);
    calls.push_back(c);
  }
  {
    Call c = valid_elementwise(a, fusedloss::Loss::MSE, backend);
    c.name = "valid n = 0 with null data pointers";
    c.ep.n = 0;
    c.ep.input = c.ep.target = c.ep.weight = nullptr;
    c.ep.reduction = fusedloss::Reduction::Sum;
    calls.push_back(c);
  }
  return calls;
}

/// The invalid calls. `backend` is the backend every call names (unless the entry is about the
/// backend); `device_arena` says whether the arena is device memory. `foreign` (device arena only)
/// is a host pointer to 64 floats, used for the mixed-memory-space entries; nullptr leaves them out.
inline std::vector<Call> invalid_calls(const Arena& a, fusedloss::Backend backend, bool device_arena,
                                       const void* foreign = nullptr) {
  using fusedloss::Backend;
  using fusedloss::DType;
  using fusedloss::Loss;
  using fusedloss::Reduction;
  using fusedloss::Status;
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  constexpr double kInf = std::numeric_limits<double>::infinity();
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();

  std::vector<Call> calls;
  auto E = [&](Loss loss, const std::string& what) -> Call& {
    calls.push_back(valid_elementwise(a, loss, backend));
    Call& c = calls.back();
    c.name = std::string(loss_tag(loss)) + ": " + what;
    c.expected = c.expected_workspace = Status::InvalidArgument;
    return c;
  };
  auto R = [&](RowKind kind, const std::string& what) -> Call& {
    calls.push_back(valid_rowwise(a, kind, backend));
    Call& c = calls.back();
    c.name = std::string(row_kind_tag(kind)) + ": " + what;
    c.expected = c.expected_workspace = Status::InvalidArgument;
    return c;
  };

  // ---- elementwise: enum values ---------------------------------------------------------------
  E(Loss::MSE, "unknown loss 99").ep.loss = static_cast<Loss>(99);
  E(Loss::MSE, "unknown loss -1").ep.loss = static_cast<Loss>(-1);
  E(Loss::MSE, "row-wise loss cross_entropy in an ElementwiseProblem").ep.loss = Loss::CrossEntropy;
  E(Loss::MSE, "row-wise loss kl_div in an ElementwiseProblem").ep.loss = Loss::KLDiv;
  E(Loss::MSE, "dtype int32").ep.dtype = DType::Int32;
  E(Loss::Huber, "dtype int64").ep.dtype = DType::Int64;
  E(Loss::MSE, "unknown dtype 7").ep.dtype = static_cast<DType>(7);
  E(Loss::BCE, "unknown dtype -1").ep.dtype = static_cast<DType>(-1);
  E(Loss::MSE, "unknown reduction 5").ep.reduction = static_cast<Reduction>(5);
  E(Loss::LogCosh, "unknown reduction -1").ep.reduction = static_cast<Reduction>(-1);
  E(Loss::MSE, "batchmean on a non-KL loss").ep.reduction = Reduction::BatchMean;
  E(Loss::BCEWithLogits, "batchmean on a non-KL loss").ep.reduction = Reduction::BatchMean;
  E(Loss::RMSE, "rmse with reduction none").ep.reduction = Reduction::None;
  E(Loss::RMSE, "rmse with reduction sum").ep.reduction = Reduction::Sum;
  E(Loss::RMSE, "rmse with reduction batchmean").ep.reduction = Reduction::BatchMean;
  E(Loss::MSE, "unknown backend 3").cfg.backend = static_cast<Backend>(3);
  E(Loss::MAE, "unknown backend -1").cfg.backend = static_cast<Backend>(-1);
  E(Loss::MSE, "grad_scale NaN").ep.grad_scale = kNaN;
  E(Loss::Hinge, "grad_scale +inf").ep.grad_scale = kInf;
  E(Loss::SquaredHinge, "grad_scale -inf").ep.grad_scale = -kInf;
  E(Loss::MSE, "grad_scale 1e-40 (0 < |s| < FLT_MIN)").ep.grad_scale = 1e-40;
  E(Loss::Huber, "grad_scale -1e-40 (0 < |s| < FLT_MIN)").ep.grad_scale = -1e-40;
  E(Loss::BCEWithLogits, "grad_scale 3.5e38 (> FLT_MAX)").ep.grad_scale = 3.5e38;

  // ---- elementwise: sizes and pointers ----------------------------------------------------------
  E(Loss::MSE, "n = -1").ep.n = -1;
  E(Loss::MSE, "n = INT64_MIN").ep.n = kMin;
  E(Loss::MSE, "n = INT64_MAX (n * 4 bytes overflows)").ep.n = kMax;
  E(Loss::MSLE, "n = 2^62 float32 (bytes overflow int64)").ep.n = std::int64_t(1) << 62;
  {
    Call& c = E(Loss::MSE, "n = 2^62 float16 (bytes = 2^63 overflow int64)");
    c.ep.n = std::int64_t(1) << 62;
    c.ep.dtype = DType::Float16;
  }
  {
    Call& c = E(Loss::MSE, "n = 2^62 - 1 float16, none (data fits, the float32 [n] loss output's n*4 bytes do not)");
    c.ep.n = (std::int64_t(1) << 62) - 1;
    c.ep.dtype = DType::Float16;
    c.ep.reduction = Reduction::None;
  }
  {
    Call& c = E(Loss::BCEWithLogits, "columns 2^61 dividing n = 2^61 bfloat16 (columns*4 bytes overflow)");
    c.ep.n = std::int64_t(1) << 61;
    c.ep.dtype = DType::BFloat16;
    c.ep.params.pos_weight_per_column = a.f(Arena::PosCol);
    c.ep.params.columns = std::int64_t(1) << 61;
  }
  E(Loss::MSE, "input null with n > 0").ep.input = nullptr;
  E(Loss::MSE, "target null with n > 0").ep.target = nullptr;
  E(Loss::BCE, "input null with n > 0").ep.input = nullptr;
  E(Loss::Huber, "loss output null (mean)").out.loss = nullptr;
  {
    Call& c = E(Loss::MAE, "loss output null (none, n > 0)");
    c.ep.reduction = Reduction::None;
    c.out.loss = nullptr;
  }
  E(Loss::MSE, "lse output on an elementwise loss").out.lse = a.f(Arena::Lse);

  // ---- elementwise: options -------------------------------------------------------------------
  E(Loss::Huber, "delta 0").ep.params.delta = 0.0;
  E(Loss::Huber, "delta -1").ep.params.delta = -1.0;
  E(Loss::Huber, "delta NaN").ep.params.delta = kNaN;
  E(Loss::Huber, "delta +inf").ep.params.delta = kInf;
  E(Loss::PseudoHuber, "delta 0").ep.params.delta = 0.0;
  E(Loss::PseudoHuber, "delta -0.5").ep.params.delta = -0.5;
  E(Loss::PseudoHuber, "delta NaN").ep.params.delta = kNaN;
  E(Loss::SmoothL1, "beta -1e-9").ep.params.beta = -1e-9;
  E(Loss::SmoothL1, "beta NaN").ep.params.beta = kNaN;
  E(Loss::SmoothL1, "beta +inf").ep.params.beta = kInf;
  E(Loss::BCEWithLogits, "pos_weight 0").ep.params.pos_weight = 0.0;
  E(Loss::BCEWithLogits, "pos_weight -2").ep.params.pos_weight = -2.0;
  E(Loss::BCEWithLogits, "pos_weight NaN").ep.params.pos_weight = kNaN;
  E(Loss::BCEWithLogits, "pos_weight +inf").ep.params.pos_weight = kInf;
  E(Loss::BCEWithLogits, "columns -1").ep.params.columns = -1;
  E(Loss::MSE, "columns -4 on mse").ep.params.columns = -4;
  E(Loss::BCEWithLogits, "pos_weight_per_column with columns 0").ep.params.pos_weight_per_column =
      a.f(Arena::PosCol);
  E(Loss::BCEWithLogits, "columns 4 without pos_weight_per_column").ep.params.columns = 4;
  {
    Call& c = E(Loss::BCEWithLogits, "columns 5 does not divide n = 12");
    c.ep.params.pos_weight_per_column = a.f(Arena::PosCol);
    c.ep.params.columns = 5;
  }
  {
    Call& c = E(Loss::BCEWithLogits, "columns 24 > n = 12");
    c.ep.params.pos_weight_per_column = a.f(Arena::PosCol);
    c.ep.params.columns = 24;
  }
  {
    Call& c = E(Loss::MSE, "pos_weight_per_column on mse");
    c.ep.params.pos_weight_per_column = a.f(Arena::PosCol);
    c.ep.params.columns = 4;
  }
  {
    Call& c = E(Loss::BCE, "pos_weight_per_column on bce");
    c.ep.params.pos_weight_per_column = a.f(Arena::PosCol);
    c.ep.params.columns = 3;
  }

  // ---- elementwise: overlapping buffers --------------------------------------------------------
  E(Loss::MSE, "grad == target").out.grad = a.at(Arena::Y);
  E(Loss::MSE, "grad == weight").out.grad = a.at(Arena::W);
  E(Loss::Huber, "grad overlaps input by all but one element (input + 4 bytes)").out.grad = a.at(Arena::X, 4);
  E(Loss::Huber, "grad starts 8 bytes before target and runs into it").out.grad =
      static_cast<unsigned char*>(a.at(Arena::Y)) - 8;
  {
    Call& c = E(Loss::BCEWithLogits, "grad overlaps pos_weight_per_column");
    c.ep.params.pos_weight_per_column = a.f(Arena::PosCol);
    c.ep.params.columns = 4;
    c.out.grad = a.at(Arena::PosCol, 8);
  }
  E(Loss::MSE, "loss output inside input").out.loss = a.f(Arena::X, 16);
  E(Loss::MSE, "loss output inside target").out.loss = a.f(Arena::Y);
  {
    Call& c = E(Loss::LogCosh, "none loss output overlapping grad");
    c.ep.reduction = Reduction::None;
    c.out.loss = a.f(Arena::Grad, 8);
  }
  E(Loss::MSE, "error_count inside the loss output").out.error_count =
      static_cast<std::int64_t*>(static_cast<void*>(a.f(Arena::LossOut)));
  E(Loss::BCE, "error_count inside grad").out.error_count =
      static_cast<std::int64_t*>(a.at(Arena::Grad, 16));
  E(Loss::BCE, "error_count inside input").out.error_count = static_cast<std::int64_t*>(a.at(Arena::X, 8));

  // ---- row-wise: enum values -------------------------------------------------------------------
  R(RowKind::CrossEntropy, "elementwise loss mse in a RowwiseProblem").rp.loss = Loss::MSE;
  R(RowKind::CrossEntropy, "unknown loss 16").rp.loss = static_cast<Loss>(16);
  R(RowKind::NLL, "unknown loss -3").rp.loss = static_cast<Loss>(-3);
  R(RowKind::CrossEntropy, "dtype int64").rp.dtype = DType::Int64;
  R(RowKind::KLDiv, "unknown dtype 5").rp.dtype = static_cast<DType>(5);
  R(RowKind::CrossEntropy, "unknown reduction 9").rp.reduction = static_cast<Reduction>(9);
  R(RowKind::KLDivLogits, "unknown reduction -2").rp.reduction = static_cast<Reduction>(-2);
  R(RowKind::CrossEntropy, "batchmean on cross_entropy").rp.reduction = Reduction::BatchMean;
  R(RowKind::CrossEntropySoft, "batchmean on soft cross_entropy").rp.reduction = Reduction::BatchMean;
  R(RowKind::NLL, "batchmean on nll").rp.reduction = Reduction::BatchMean;
  R(RowKind::CrossEntropy, "label dtype float32").rp.label_dtype = DType::Float32;
  R(RowKind::NLL, "unknown label dtype 9").rp.label_dtype = static_cast<DType>(9);
  R(RowKind::CrossEntropy, "unknown backend 7").cfg.backend = static_cast<Backend>(7);
  R(RowKind::CrossEntropy, "grad_scale NaN").rp.grad_scale = kNaN;
  R(RowKind::KLDiv, "grad_scale +inf").rp.grad_scale = kInf;
  R(RowKind::CrossEntropy, "grad_scale 1e-40 (0 < |s| < FLT_MIN)").rp.grad_scale = 1e-40;
  R(RowKind::NLL, "grad_scale -3.5e38 (> FLT_MAX)").rp.grad_scale = -3.5e38;

  // ---- row-wise: shapes --------------------------------------------------------------------------
  R(RowKind::CrossEntropy, "rows -1").rp.rows = -1;
  R(RowKind::KLDiv, "rows INT64_MIN").rp.rows = kMin;
  R(RowKind::CrossEntropy, "classes 0").rp.classes = 0;
  R(RowKind::NLL, "classes -3").rp.classes = -3;
  {
    Call& c = R(RowKind::KLDivLogits, "classes 0 with rows 0");
    c.rp.rows = 0;
    c.rp.classes = 0;
  }
  R(RowKind::CrossEntropy, "row_stride -1").rp.row_stride = -1;
  R(RowKind::CrossEntropy, "row_stride 3 < classes 4").rp.row_stride = 3;
  R(RowKind::KLDiv, "row_stride 1 < classes 4").rp.row_stride = 1;
  R(RowKind::CrossEntropy, "rows 2^62 x classes 4 (elements overflow int64)").rp.rows = std::int64_t(1) << 62;
  {
    Call& c = R(RowKind::NLL, "rows INT64_MAX x classes 2 overflows");
    c.rp.rows = kMax;
    c.rp.classes = 2;
  }
  {
    Call& c = R(RowKind::CrossEntropy, "rows 2^40 x classes 2^40 overflows");
    c.rp.rows = std::int64_t(1) << 40;
    c.rp.classes = std::int64_t(1) << 40;
  }
  {
    Call& c = R(RowKind::KLDiv, "rows 1 x classes INT64_MAX (bytes overflow)");
    c.rp.rows = 1;
    c.rp.classes = kMax;
  }
  {
    Call& c = R(RowKind::CrossEntropy, "rows 2 x row_stride INT64_MAX overflows");
    c.rp.rows = 2;
    c.rp.row_stride = kMax;
  }
  {
    Call& c = R(RowKind::CrossEntropy, "rows 0, classes 2^61 with class_weight (C*4 bytes overflow)");
    c.rp.rows = 0;
    c.rp.classes = std::int64_t(1) << 61;
  }
  {
    Call& c = R(RowKind::NLL, "rows 0, classes INT64_MAX with class_weight");
    c.rp.rows = 0;
    c.rp.classes = kMax;
  }
  {
    Call& c = R(RowKind::CrossEntropySoft, "rows 2^61 x classes 4 float32 (bytes = 2^65)");
    c.rp.rows = std::int64_t(1) << 61;
  }

  // ---- row-wise: which inputs each loss takes ---------------------------------------------------
  R(RowKind::CrossEntropy, "input null").rp.input = nullptr;
  R(RowKind::KLDivLogits, "input null").rp.input = nullptr;
  R(RowKind::CrossEntropy, "labels and a dense target both given").rp.target = a.at(Arena::Y);
  R(RowKind::CrossEntropy, "neither labels nor target").rp.labels = nullptr;
  R(RowKind::NLL, "dense target given").rp.target = a.at(Arena::Y);
  R(RowKind::NLL, "labels null").rp.labels = nullptr;
  R(RowKind::KLDiv, "labels given").rp.labels = a.at(Arena::Labels);
  R(RowKind::KLDiv, "class_weight given").rp.class_weight = a.f(Arena::ClassW);
  R(RowKind::KLDiv, "target null").rp.target = nullptr;
  R(RowKind::KLDivLogits, "target (teacher) null").rp.target = nullptr;
  R(RowKind::KLDivLogits, "labels given").rp.labels = a.at(Arena::Labels);
  R(RowKind::KLDivLogits, "class_weight given").rp.class_weight = a.f(Arena::ClassW);

  // ---- row-wise: options ------------------------------------------------------------------------
  R(RowKind::CrossEntropy, "label_smoothing -0.1").rp.params.label_smoothing = -0.1;
  R(RowKind::CrossEntropy, "label_smoothing 1.5").rp.params.label_smoothing = 1.5;
  R(RowKind::CrossEntropy, "label_smoothing NaN").rp.params.label_smoothing = kNaN;
  R(RowKind::CrossEntropySoft, "label_smoothing 1 + 1e-12").rp.params.label_smoothing = 1.0 + 1e-12;
  R(RowKind::CrossEntropy, "label_smoothing 1e-46 (0 in float32)").rp.params.label_smoothing = 1e-46;
  R(RowKind::CrossEntropy, "z_loss -1").rp.params.z_loss = -1.0;
  R(RowKind::CrossEntropy, "z_loss +inf").rp.params.z_loss = kInf;
  R(RowKind::CrossEntropySoft, "z_loss NaN").rp.params.z_loss = kNaN;
  R(RowKind::CrossEntropy, "softcap -1").rp.params.softcap = -1.0;
  R(RowKind::CrossEntropy, "softcap NaN").rp.params.softcap = kNaN;
  R(RowKind::CrossEntropy, "softcap +inf").rp.params.softcap = kInf;
  R(RowKind::KLDivLogits, "temperature 0").rp.params.temperature = 0.0;
  R(RowKind::KLDivLogits, "temperature -1").rp.params.temperature = -1.0;
  R(RowKind::KLDivLogits, "temperature NaN").rp.params.temperature = kNaN;
  R(RowKind::KLDivLogits, "temperature +inf").rp.params.temperature = kInf;

  // ---- row-wise: outputs -------------------------------------------------------------------------
  R(RowKind::CrossEntropy, "loss output null").out.loss = nullptr;
  {
    Call& c = R(RowKind::KLDiv, "loss output null (none)");
    c.rp.reduction = Reduction::None;
    c.out.loss = nullptr;
  }
  R(RowKind::NLL, "lse output on nll").out.lse = a.f(Arena::Lse);
  R(RowKind::KLDiv, "lse output on kl_div").out.lse = a.f(Arena::Lse);
  R(RowKind::KLDivLogits, "lse output on kl_div_logits").out.lse = a.f(Arena::Lse);

  // ---- row-wise: overlapping buffers -------------------------------------------------------------
  R(RowKind::CrossEntropy, "grad overlaps input (input + 4 bytes)").out.grad = a.at(Arena::X, 4);
  R(RowKind::CrossEntropy, "grad starts one row into input (rows 1..2 overlap)").out.grad = a.at(Arena::X, 16);
  R(RowKind::KLDiv, "grad == target").out.grad = a.at(Arena::Y);
  R(RowKind::KLDivLogits, "grad overlaps teacher logits").out.grad = a.at(Arena::Y, 12);
  R(RowKind::CrossEntropy, "grad overlaps labels").out.grad = a.at(Arena::Labels, 8);
  R(RowKind::NLL, "grad overlaps class_weight").out.grad = a.at(Arena::ClassW);
  R(RowKind::CrossEntropy, "loss output inside labels").out.loss = a.f(Arena::Labels, 4);
  R(RowKind::CrossEntropy, "lse overlaps the loss output").out.lse = a.f(Arena::LossOut);
  R(RowKind::CrossEntropy, "lse overlaps grad").out.lse = a.f(Arena::Grad, 40);
  R(RowKind::CrossEntropySoft, "lse inside the dense target").out.lse = a.f(Arena::Y, 4);
  {
    Call& c = R(RowKind::KLDiv, "none loss output [N*C] overlapping grad");
    c.rp.reduction = Reduction::None;
    c.out.loss = a.f(Arena::Grad, 44);
  }
  R(RowKind::NLL, "error_count inside grad").out.error_count = static_cast<std::int64_t*>(a.at(Arena::Grad, 8));
  R(RowKind::CrossEntropy, "error_count == lse").out.error_count =
      static_cast<std::int64_t*>(static_cast<void*>(a.f(Arena::Lse)));

  // ---- memory spaces -------------------------------------------------------------------------------
  auto expect = [&](Status s) { calls.back().expected = calls.back().expected_workspace = s; };
  if (!device_arena) {
    // Host buffers with the CUDA backend: NotSupported whether or not a device exists.
    E(Loss::MSE, "host buffers with Backend::CUDA").cfg.backend = Backend::CUDA;
    expect(Status::NotSupported);
    R(RowKind::CrossEntropy, "host buffers with Backend::CUDA").cfg.backend = Backend::CUDA;
    expect(Status::NotSupported);
  } else {
    E(Loss::MSE, "device buffers with Backend::CPU").cfg.backend = Backend::CPU;
    expect(Status::NotSupported);
    R(RowKind::KLDiv, "device buffers with Backend::CPU").cfg.backend = Backend::CPU;
    expect(Status::NotSupported);
    if (foreign != nullptr) {
      // A host weight vector among device buffers: the CUDA path cannot read it.
      R(RowKind::CrossEntropy, "host class_weight with device data, Backend::CUDA").rp.class_weight =
          static_cast<const float*>(foreign);
      calls.back().cfg.backend = Backend::CUDA;
      expect(Status::NotSupported);
      R(RowKind::CrossEntropy, "host class_weight with device data, Backend::Auto (mixed)").rp.class_weight =
          static_cast<const float*>(foreign);
      calls.back().cfg.backend = Backend::Auto;
      E(Loss::BCEWithLogits, "host pos_weight_per_column with device data, Backend::Auto (mixed)")
          .ep.params.pos_weight_per_column = static_cast<const float*>(foreign);
      calls.back().ep.params.columns = 4;
      calls.back().cfg.backend = Backend::Auto;
    }
  }
  return calls;
}

}  // namespace reliability
