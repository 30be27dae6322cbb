// tests/reliability/reliability_cases.hpp — a complete description of one elementwise or row-wise
// call (data included) that can build the library's problem and run the independent float64
// oracle (tests/oracle/oracle.hpp) on exactly the same (dtype-rounded) values.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "oracle/oracle.hpp"
#include "reliability/reliability_util.hpp"

namespace reltest {

inline oracle::Red to_oracle(Reduction r, Loss loss) {
  switch (r) {
    case Reduction::None: return oracle::Red::None;
    case Reduction::Mean: return oracle::Red::Mean;
    case Reduction::Sum: return oracle::Red::Sum;
    case Reduction::BatchMean: return oracle::Red::BatchMean;
    case Reduction::Default: return loss == Loss::KLDivLogits ? oracle::Red::BatchMean : oracle::Red::Mean;
  }
  return oracle::Red::Mean;
}

struct ElemCase {
  Loss loss = Loss::MSE;
  DType dtype = DType::Float32;
  std::int64_t n = 0;
  Buf x, y, w;  // w.count == 0: no weights
  Reduction reduction = Reduction::Mean;
  double grad_scale = 1.0;
  fusedloss::ElementwiseParams params{};
  std::vector<float> pos_col;  // per-column pos weights (bce_with_logits), empty: none

  ElemCase() = default;
  ElemCase(Loss l, DType d, std::int64_t count) : loss(l), dtype(d), n(count), x(d, count), y(d, count) {}

  std::string tag() const {
    return std::string(fusedloss::loss_name(loss)) + "/" + dtype_tag(dtype) + "/" + red_tag(reduction) +
           "/n=" + std::to_string(n);
  }
  fusedloss::ElementwiseProblem problem() const {
    fusedloss::ElementwiseProblem p;
    p.loss = loss;
    p.dtype = dtype;
    p.n = n;
    p.input = n > 0 ? x.data() : nullptr;
    p.target = n > 0 ? y.data() : nullptr;
    p.weight = w.count > 0 ? w.data() : nullptr;
    p.reduction = reduction;
    p.grad_scale = grad_scale;
    p.params = params;
    if (!pos_col.empty()) {
      p.params.pos_weight_per_column = pos_col.data();
      p.params.columns = static_cast<std::int64_t>(pos_col.size());
    }
    return p;
  }
  oracle::Result oracle() const {
    oracle::ElemParams op;
    op.delta = params.delta;
    op.beta = params.beta;
    op.pos_weight = params.pos_weight;
    op.grad_scale = grad_scale;
    for (float v : pos_col) op.pos_weight_col.push_back(v);
    return oracle::elementwise(fusedloss::loss_name(loss), x.values(), y.values(),
                               w.count > 0 ? w.values() : std::vector<double>{}, to_oracle(reduction, loss), op);
  }
};

enum class RowKind { CE, CESoft, NLL, KL, KLLogits };

inline const char* row_tag(RowKind k) {
  switch (k) {
    case RowKind::CE: return "cross_entropy";
    case RowKind::CESoft: return "cross_entropy_soft";
    case RowKind::NLL: return "nll";
    case RowKind::KL: return "kl_div";
    case RowKind::KLLogits: return "kl_div_logits";
  }
  return "?";
}

inline Loss row_loss(RowKind k) {
  switch (k) {
    case RowKind::CE:
    case RowKind::CESoft: return Loss::CrossEntropy;
    case RowKind::NLL: return Loss::NLL;
    case RowKind::KL: return Loss::KLDiv;
    case RowKind::KLLogits: return Loss::KLDivLogits;
  }
  return Loss::CrossEntropy;
}

inline bool has_labels(RowKind k) { return k == RowKind::CE || k == RowKind::NLL; }

struct RowCase {
  RowKind kind = RowKind::CE;
  DType dtype = DType::Float32;
  std::int64_t rows = 0, classes = 1, stride = 1;
  Buf input, target;                 // rows * stride values
  std::vector<std::int64_t> labels;  // sparse kinds
  DType label_dtype = DType::Int64;
  std::vector<float> class_weight;  // empty: none
  Reduction reduction = Reduction::Default;
  double grad_scale = 1.0;
  fusedloss::RowwiseParams params{};

  LabelBuf label_buf{DType::Int64, {}};

  RowCase() = default;
  RowCase(RowKind k, DType d, std::int64_t n, std::int64_t c, std::int64_t row_stride = 0)
      : kind(k), dtype(d), rows(n), classes(c), stride(row_stride > 0 ? row_stride : c),
        input(d, n * (row_stride > 0 ? row_stride : c)), target(d, n * (row_stride > 0 ? row_stride : c)) {
    if (has_labels(k)) labels.assign(static_cast<std::size_t>(n), 0);
  }

  std::string tag() const {
    return std::string(row_tag(kind)) + "/" + dtype_tag(dtype) + "/" + red_tag(reduction) + "/N=" +
           std::to_string(rows) + ",C=" + std::to_string(classes) + ",stride=" + std::to_string(stride);
  }
  /// The library's problem. Builds the label buffer in label_dtype (so call it before running).
  fusedloss::RowwiseProblem problem() {
    fusedloss::RowwiseProblem p;
    p.loss = row_loss(kind);
    p.dtype = dtype;
    p.rows = rows;
    p.classes = classes;
    p.row_stride = stride == classes ? 0 : stride;
    p.input = rows > 0 ? input.data() : nullptr;
    if (has_labels(kind)) {
      label_buf = LabelBuf(label_dtype, labels);
      p.labels = rows > 0 ? label_buf.data() : nullptr;
      p.label_dtype = label_dtype;
    } else {
      p.target = rows > 0 ? target.data() : nullptr;
    }
    if (!class_weight.empty()) p.class_weight = class_weight.data();
    p.reduction = reduction;
    p.grad_scale = grad_scale;
    p.params = params;
    return p;
  }
  /// Row-major dense [rows, classes] values of a strided buffer.
  std::vector<double> dense(const Buf& b) const {
    std::vector<double> v(static_cast<std::size_t>(rows * classes));
    for (std::int64_t n = 0; n < rows; ++n)
      for (std::int64_t c = 0; c < classes; ++c) v[static_cast<std::size_t>(n * classes + c)] = b.get(n * stride + c);
    return v;
  }
  oracle::Result oracle() const {
    oracle::RowParams op;
    op.ignore_index = params.ignore_index;
    for (float w : class_weight) op.class_weight.push_back(w);
    op.label_smoothing = params.label_smoothing;
    op.z_loss = params.z_loss;
    op.softcap = params.softcap;
    op.log_target = params.log_target;
    op.temperature = params.temperature;
    op.grad_scale = grad_scale;
    const oracle::Red red = to_oracle(reduction, row_loss(kind));
    switch (kind) {
      case RowKind::CE: return oracle::cross_entropy(rows, classes, dense(input), labels, red, op);
      case RowKind::CESoft: return oracle::cross_entropy_soft(rows, classes, dense(input), dense(target), red, op);
      case RowKind::NLL: return oracle::nll(rows, classes, dense(input), labels, red, op);
      case RowKind::KL: return oracle::kl_div(rows, classes, dense(input), dense(target), red, op);
      case RowKind::KLLogits: return oracle::kl_div_logits(rows, classes, dense(input), dense(target), red, op);
    }
    return {};
  }
};

/// Compares every output of `got` with the oracle (loss and lse are float32 outputs; the gradient
/// is in the case's dtype). Returns the number of mismatches (each also reported).
template <class Case>
int expect_matches_oracle(const Case& c, const Outcome& got, const oracle::Result& want, bool check_grad = true,
                          double loss_rel = 2e-6) {
  int bad = 0;
  const double fmax = dtype_max(DType::Float32);
  EXPECT_EQ(got.loss.size(), want.loss.size()) << c.tag();
  for (std::size_t i = 0; i < std::min(got.loss.size(), want.loss.size()); ++i) {
    const auto r = close_in_dtype(got.loss[i], want.loss[i], loss_rel, 1e-30, fmax);
    if (!r) {
      ++bad;
      ADD_FAILURE() << c.tag() << " loss[" << i << "]: " << r.message();
    }
  }
  if (!got.lse.empty()) {
    for (std::size_t i = 0; i < want.lse.size(); ++i) {
      const auto r = close_in_dtype(got.lse[i], want.lse[i], 2e-7, 1e-30, fmax);
      if (!r) {
        ++bad;
        ADD_FAILURE() << c.tag() << " lse[" << i << "]: " << r.message();
      }
    }
  }
  if (check_grad && got.grad.count > 0) {
    const double eps = c.dtype == DType::Float32 ? 2e-6 : dtype_eps(c.dtype);
    const double abs = c.dtype == DType::Float16 ? 6e-8 : 1e-12;
    const std::int64_t per_row = [&] {
      if constexpr (std::is_same<Case, RowCase>::value) return c.classes;
      return std::int64_t(1);
    }();
    const std::int64_t stride = [&] {
      if constexpr (std::is_same<Case, RowCase>::value) return c.stride;
      return std::int64_t(1);
    }();
    const std::int64_t count = static_cast<std::int64_t>(want.grad.size());
    for (std::int64_t k = 0; k < count && bad < 20; ++k) {
      const std::int64_t at = (k / per_row) * stride + k % per_row;
      const auto r = close_in_dtype(got.grad.get(at), want.grad[static_cast<std::size_t>(k)], eps, abs,
                                    dtype_max(c.dtype));
      if (!r) {
        ++bad;
        ADD_FAILURE() << c.tag() << " grad[" << k << "]: " << r.message();
      }
    }
  }
  return bad;
}

}  // namespace reltest
