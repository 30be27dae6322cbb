// tests/common/oracle_cases.hpp — the cases that hold a path of the library to the independent float64
// oracle (tests/oracle/oracle.hpp), shared by the CPU path's test (tests/cpu/test_oracle_vs_cpu.cpp) and
// the CUDA path's (tests/cuda/test_oracle_vs_cuda.cu): every loss × reduction × option set × dtype on fresh
// random data (tu::Rng), each turned into a tu::Instance (host buffers and the library's problem over them)
// and the oracle's answer on exactly the values the library reads (inputs rounded to the dtype first;
// tu::oracle_for). Each test runs the problem on its own backend and applies its own tolerance.
#pragma once

#include <algorithm>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "common/test_util.hpp"

namespace oracle_cases {

namespace fl = ::fusedloss;
using fl::DType;
using fl::Loss;
using fl::Reduction;
using tu::Vec;

// =========================================================================================================
// Elementwise
// =========================================================================================================

struct ElemCase {
  Loss loss;
  Reduction red;
  std::int64_t n;
  DType dtype;
  int variant;  // 0: defaults; 1: weights + non-default option + grad_scale; 2: a second option set
};

inline void PrintTo(const ElemCase& c, std::ostream* os) {
  *os << fl::loss_name(c.loss) << " v" << c.variant << " " << tu::red_name(c.red) << " n=" << c.n << " "
      << fl::dtype_name(c.dtype);
}

inline std::string elem_case_name(const ::testing::TestParamInfo<ElemCase>& info) {
  const ElemCase& c = info.param;
  return std::string(fl::loss_name(c.loss)) + "_v" + std::to_string(c.variant) + "_" + tu::red_name(c.red) + "_n" +
         std::to_string(c.n) + "_" + fl::dtype_name(c.dtype);
}

inline bool has_variant2(Loss l) { return l == Loss::SmoothL1 || l == Loss::BCEWithLogits || l == Loss::Huber; }

/// Every elementwise loss × reduction × option set × dtype, at each of `sizes` elements.
inline std::vector<ElemCase> elem_cases(const std::vector<std::int64_t>& sizes) {
  std::vector<ElemCase> v;
  for (Loss loss : tu::elementwise_losses()) {
    for (Reduction red : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
      if (loss == Loss::RMSE && red != Reduction::Mean) continue;
      for (int variant = 0; variant < 3; ++variant) {
        if (variant == 2 && !has_variant2(loss)) continue;
        for (std::int64_t n : sizes)
          for (DType d : {DType::Float32, DType::Float16, DType::BFloat16}) v.push_back({loss, red, n, d, variant});
      }
    }
  }
  return v;
}

/// One case made concrete: the call (tu::Instance: dense values, host buffers, the problem over them)
/// and the oracle's answer for it (tu::oracle_for).
struct OracleCase {
  tu::Instance in;
  oracle::Result expected;
};

inline OracleCase make_elem(const ElemCase& c, tu::Rng& rng) {
  OracleCase s;
  tu::Instance& in = s.in;
  const std::size_t n = static_cast<std::size_t>(c.n);
  in.fam = {c.loss, false};
  in.dtype = c.dtype;
  in.n = c.n;
  tu::elementwise_data(rng, c.loss, n, in.x, in.y);
  in.x = tu::round_to(c.dtype, in.x);
  in.y = tu::round_to(c.dtype, in.y);
  fl::ElementwiseProblem& p = in.e;
  p.loss = c.loss;
  p.dtype = c.dtype;
  p.n = c.n;
  p.reduction = c.red;
  if (c.variant >= 1) {
    in.w = tu::round_to(c.dtype, rng.uniform_vec(n, 0, 2));
    p.grad_scale = c.variant == 1 ? -0.375 : 96.0;
  }
  if (c.variant == 1) {
    p.params.delta = 0.35;
    p.params.beta = 0.3;
    p.params.pos_weight = 2.75;
    if (c.loss == Loss::PseudoHuber) p.params.delta = 2.5;
  } else if (c.variant == 2) {
    p.params.delta = 3.0;
    p.params.beta = 0.0;
    // bce_with_logits as an [n / columns, columns] multi-label matrix with one pos_weight per column.
    std::vector<float> pos_col(static_cast<std::size_t>(c.n == 1000 ? 40 : c.n));
    for (float& v : pos_col) v = static_cast<float>(rng.uniform(0.25, 4));
    if (c.loss == Loss::BCEWithLogits) {
      p.params.pos_weight = 1e30;  // must be ignored when the vector is given
      in.pos_col = pos_col;
    }
  }
  in.materialise();
  s.expected = tu::oracle_for(in);
  return s;
}

// =========================================================================================================
// Row-wise
// =========================================================================================================

enum class RowKind { SparseCE, SoftCE, NLL, KLDiv, KLDivLogits };

inline const char* kind_name(RowKind k) {
  switch (k) {
    case RowKind::SparseCE: return "ce";
    case RowKind::SoftCE: return "soft_ce";
    case RowKind::NLL: return "nll";
    case RowKind::KLDiv: return "kl_div";
    case RowKind::KLDivLogits: return "kl_div_logits";
  }
  return "?";
}

struct RowCase {
  RowKind kind;
  Reduction red;
  std::int64_t N, C;
  DType dtype;
  int variant;
};

inline void PrintTo(const RowCase& c, std::ostream* os) {
  *os << kind_name(c.kind) << " v" << c.variant << " " << tu::red_name(c.red) << " N=" << c.N << " C=" << c.C << " "
      << fl::dtype_name(c.dtype);
}

inline std::string row_case_name(const ::testing::TestParamInfo<RowCase>& info) {
  const RowCase& c = info.param;
  return std::string(kind_name(c.kind)) + "_v" + std::to_string(c.variant) + "_" + tu::red_name(c.red) + "_N" +
         std::to_string(c.N) + "_C" + std::to_string(c.C) + "_" + fl::dtype_name(c.dtype);
}

/// Option sets per loss. Sparse CE: 0 defaults; 1 ignore_index −1, class weights, int32 labels,
/// grad_scale; 2 label smoothing + z-loss; 3 softcap + smoothing + class weights + a row stride.
inline int variants(RowKind k) { return k == RowKind::SparseCE ? 4 : 2; }

struct Shape {
  std::int64_t N, C;
};

/// Every row-wise loss × option set × reduction × dtype, over `f32_shapes` (float32) and
/// `half_shapes` (float16, bfloat16).
inline std::vector<RowCase> row_cases(const std::vector<Shape>& f32_shapes, const std::vector<Shape>& half_shapes) {
  std::vector<RowCase> v;
  for (RowKind k : {RowKind::SparseCE, RowKind::SoftCE, RowKind::NLL, RowKind::KLDiv, RowKind::KLDivLogits}) {
    const bool kl = k == RowKind::KLDiv || k == RowKind::KLDivLogits;
    std::vector<Reduction> reds = {Reduction::None, Reduction::Mean, Reduction::Sum};
    if (kl) reds.push_back(Reduction::BatchMean);
    for (DType d : {DType::Float32, DType::Float16, DType::BFloat16})
      for (const Shape& s : d == DType::Float32 ? f32_shapes : half_shapes)
        for (int variant = 0; variant < variants(k); ++variant)
          for (Reduction red : reds) v.push_back({k, red, s.N, s.C, d, variant});
  }
  return v;
}

inline OracleCase make_row(const RowCase& c, tu::Rng& rng) {
  OracleCase s;
  tu::Instance& in = s.in;
  const std::int64_t N = c.N, C = c.C;
  const std::size_t NC = static_cast<std::size_t>(N * C);
  const bool v1 = c.variant == 1, v2 = c.variant == 2, v3 = c.variant == 3;
  in.fam = {c.kind == RowKind::NLL           ? Loss::NLL
            : c.kind == RowKind::KLDiv       ? Loss::KLDiv
            : c.kind == RowKind::KLDivLogits ? Loss::KLDivLogits
                                             : Loss::CrossEntropy,
            c.kind == RowKind::SoftCE};
  in.dtype = c.dtype;
  in.N = N;
  in.C = C;
  fl::RowwiseProblem& p = in.r;
  p.loss = in.fam.loss;
  p.dtype = c.dtype;
  p.rows = N;
  p.classes = C;
  p.reduction = c.red;
  std::int64_t stride = C;

  auto random_labels = [&](std::int64_t ignore, double ignore_fraction) {
    in.labels.resize(static_cast<std::size_t>(N));
    for (auto& l : in.labels) l = rng.bernoulli(ignore_fraction) ? ignore : rng.integer(0, C - 1);
  };
  auto random_class_weight = [&]() {
    in.class_weight.resize(static_cast<std::size_t>(C));
    for (float& w : in.class_weight) w = static_cast<float>(rng.uniform(0.2, 3));
  };
  auto random_probs = [&]() { return tu::random_prob_rows(rng, N, C); };

  switch (c.kind) {
    case RowKind::SparseCE:
      in.x = rng.normal_vec(NC, 0, 3);
      if (c.variant == 0) random_labels(-100, 0);
      if (v1) {
        p.params.ignore_index = -1;
        random_labels(-1, 0.15);
        random_class_weight();
        in.label_dtype = DType::Int32;
        p.grad_scale = 0.5;
      }
      if (v2) {
        random_labels(-100, 0.1);
        p.params.label_smoothing = 0.1;
        p.params.z_loss = 1e-3;
        p.grad_scale = -3;
      }
      if (v3) {
        random_labels(-100, 0.1);
        random_class_weight();
        p.params.softcap = 4;
        p.params.label_smoothing = 0.2;
        stride = C + 5;
      }
      break;
    case RowKind::SoftCE:
      in.x = rng.normal_vec(NC, 0, 3);
      in.y = random_probs();
      if (v1) {
        random_class_weight();
        p.params.label_smoothing = 0.15;
        p.params.z_loss = 1e-2;
        p.params.softcap = 6;
        p.grad_scale = 2;
        stride = C + 3;
      }
      break;
    case RowKind::NLL:
      in.x = tu::log_softmax_rows(rng.normal_vec(NC, 0, 2), N, C);
      random_labels(-100, 0);
      if (v1) {
        random_labels(-100, 0.15);
        random_class_weight();
        in.label_dtype = DType::Int32;
        stride = 2 * C + 1;
      }
      break;
    case RowKind::KLDiv:
      in.x = tu::log_softmax_rows(rng.normal_vec(NC, 0, 2), N, C);
      if (!v1) {
        in.y = random_probs();
      } else {
        p.params.log_target = true;
        in.y = tu::log_softmax_rows(rng.normal_vec(NC, 0, 2), N, C);
        stride = C + 1;
        p.grad_scale = 1.5;
      }
      break;
    case RowKind::KLDivLogits:
      in.x = rng.normal_vec(NC, 0, 3);
      in.y = rng.normal_vec(NC, 0, 3);
      if (v1) {
        p.params.temperature = 2.5;
        stride = C + 7;
        p.grad_scale = -0.25;
      }
      break;
  }
  in.x = tu::round_to(c.dtype, in.x);
  in.y = tu::round_to(c.dtype, in.y);
  in.stride = stride;
  in.materialise();
  s.expected = tu::oracle_for(in);
  return s;
}

}  // namespace oracle_cases
