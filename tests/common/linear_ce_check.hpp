// tests/common/linear_ce_check.hpp — linear_cross_entropy test cases, their random data, and the comparison of
// a library result with the float64 oracle (oracle::linear_cross_entropy), shared by the CPU-path tests and the
// CUDA-path tests (which run on the emulated device in CI).
//
// The error bound. The library forms z in fp32 GEMMs, runs cross_entropy on z, and forms the gradients in fp32
// GEMMs; the oracle does it all in long double from the same (dtype-rounded) inputs. With u = 2⁻²⁴ (fp32 unit
// roundoff) and the standard GEMM bound |fl(A·B) − A·B| ≤ K·u·(|A|·|B|) (Higham, §3.5; K = the reduction length):
//   * logits:  δz_n = (H + 1)·u·max_v (Σ_k |h_nk||W_vk| + |b_v|)
//   * ∂L/∂z:   G_nv is a difference of terms of size |G|⁺_nv = F·[(1−ε)w_y(p_v + [v=y]) + ε/V·(Σw·p_v + w_v)
//              + 2s(|lse|+1)p_v]·chain_v (F = grad_scale / divisor). Its error is its fp32 rounding plus the effect of
//              δz through the softmax Hessian (Σ_j |∂G_v/∂z_j| ≤ 2·|G|⁺_v·(1 + 1/softcap)):
//              |ΔG_nv| ≤ (2u + 4(1 + 1/k)·δz_n)·|G|⁺_nv
//   * grad_hidden = G·W (K = V), grad_weight = Gᵀ·h (K = N): |Δ| ≤ (K·u + 2u + 4(1+1/k)·max δz)·(|G|⁺·|B|)
//   * grad_bias = Σ_n G_nv (summed in double / fp32 over N rows): |Δ| ≤ (N·u + 2u + 4(1+1/k)·max δz)·Σ_n |G|⁺_nv
//   * loss_n:  |Δℓ_n| ≤ δz_n·Σ_v |G|⁺_nv / F; lse_n: |Δlse_n| ≤ δz_n; plus, for both, compare.hpp's loss rule
//              (the cross_entropy's own fp32 output rounding: loss_rel · max(|ref|, mean|ref|)).
//   * fp16 / bf16 outputs are rounded once more: + compare.hpp's grad_ulp ulps of the dtype at the reference.
// Bugs (a wrong chunk, a missed bias, a wrong scale, a skipped row) are O(1) relative errors; the bound is a
// worst case, and every check reports how much of it the worst element used.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cli/compare.hpp"
#include "common/test_util.hpp"
#include "oracle/oracle.hpp"

namespace lce {

namespace fl = ::fusedloss;
using fl::DType;
using fl::Reduction;
using tu::Buffer;
using tu::Vec;

constexpr double kU = 0x1p-24;  // fp32 unit roundoff (a property of the format, not a tolerance)

struct Case {
  DType dtype = DType::Float32;
  std::int64_t N = 37, H = 65, V = 1003;
  std::int64_t stride = 0;  // hidden / grad_hidden row stride (0 = H)
  bool bias = true;
  bool class_weight = false;
  Reduction reduction = Reduction::Mean;
  double label_smoothing = 0, z_loss = 0, softcap = 0, grad_scale = 1;
  std::int64_t ignore_index = -100;
  double ignore_fraction = 0.2;
  DType label_dtype = DType::Int64;
  std::int64_t max_chunk_rows = 0;  // 0: from the budget
  std::size_t budget = std::size_t(256) << 20;
  std::string name;
};

inline oracle::Red red_of(Reduction r) {
  return r == Reduction::None ? oracle::Red::None : r == Reduction::Sum ? oracle::Red::Sum : oracle::Red::Mean;
}

/// Host data of one case: buffers in the case's dtype, and the same values as doubles for the oracle.
struct Data {
  Buffer hidden, weight, bias, labels;
  std::vector<float> class_weight;
  Vec hidden_d, weight_d, bias_d;  // dense, exactly the stored values
  std::vector<std::int64_t> labels_v;
  oracle::RowParams params;
};

inline std::int64_t stride_of(const Case& c) { return c.stride > 0 ? c.stride : c.H; }

/// Logits of a few units (hidden ~ N(0,1), weight ~ N(0, 2/sqrt(H))), a few rows ignored, class weights in [0.5, 2].
inline Data make_data(const Case& c, tu::Rng& rng) {
  Data d;
  const std::int64_t ld = stride_of(c);
  d.hidden = Buffer(c.dtype, static_cast<std::size_t>(c.N * ld));
  d.hidden.poison();  // the gap between H and the stride must never be read into a result
  d.hidden_d.resize(static_cast<std::size_t>(c.N * c.H));
  for (std::int64_t n = 0; n < c.N; ++n)
    for (std::int64_t k = 0; k < c.H; ++k) {
      const std::size_t i = static_cast<std::size_t>(n * ld + k);
      d.hidden.set(i, rng.normal(0, 1));
      d.hidden_d[static_cast<std::size_t>(n * c.H + k)] = d.hidden.get(i);
    }
  d.weight = Buffer::from(c.dtype, rng.normal_vec(static_cast<std::size_t>(c.V * c.H), 0, 2.0 / std::sqrt(double(c.H))));
  d.weight_d = d.weight.to_double();
  if (c.bias) {
    d.bias = Buffer::from(c.dtype, rng.uniform_vec(static_cast<std::size_t>(c.V), -1, 1));
    d.bias_d = d.bias.to_double();
  }
  d.labels_v.resize(static_cast<std::size_t>(c.N));
  for (auto& y : d.labels_v) y = rng.bernoulli(c.ignore_fraction) ? c.ignore_index : rng.integer(0, c.V - 1);
  d.labels = Buffer::labels(c.label_dtype, d.labels_v);
  d.params.ignore_index = c.ignore_index;
  d.params.label_smoothing = c.label_smoothing;
  d.params.z_loss = c.z_loss;
  d.params.softcap = c.softcap;
  d.params.grad_scale = c.grad_scale;
  if (c.class_weight) {
    d.class_weight.resize(static_cast<std::size_t>(c.V));
    for (auto& w : d.class_weight) w = static_cast<float>(rng.uniform(0.5, 2));
    d.params.class_weight.assign(d.class_weight.begin(), d.class_weight.end());
  }
  return d;
}

inline fl::LinearCrossEntropyProblem problem_of(const Case& c, const Data& d) {
  fl::LinearCrossEntropyProblem p;
  p.dtype = c.dtype;
  p.rows = c.N;
  p.hidden_size = c.H;
  p.classes = c.V;
  p.hidden_stride = c.stride;
  p.hidden = d.hidden.data();
  p.weight = d.weight.data();
  p.bias = c.bias ? d.bias.data() : nullptr;
  p.labels = d.labels.data();
  p.label_dtype = c.label_dtype;
  p.class_weight = c.class_weight ? d.class_weight.data() : nullptr;
  p.reduction = c.reduction;
  p.grad_scale = c.grad_scale;
  p.params.ignore_index = c.ignore_index;
  p.params.label_smoothing = c.label_smoothing;
  p.params.z_loss = c.z_loss;
  p.params.softcap = c.softcap;
  p.memory_budget_bytes = c.budget;
  p.max_chunk_rows = c.max_chunk_rows;
  return p;
}

/// What a call produced, read back as doubles (grad_hidden dense [N, H]).
struct Got {
  Vec loss, lse, grad_hidden, grad_weight, grad_bias;
  std::int64_t error_count = -1;
};

/// The bound of the header comment, per output element.
struct Bounds {
  Vec loss, lse, grad_hidden, grad_weight, grad_bias;
};

inline Bounds bounds(const Case& c, const Data& d, const oracle::LinearResult& ref) {
  using real = long double;
  const std::int64_t N = c.N, H = c.H, V = c.V;
  const oracle::RowParams& prm = d.params;
  const real k_inv = prm.softcap > 0 ? 1 / real(prm.softcap) : 0;
  // Divisor and factor F.
  real divisor = 0, wsum = 0;
  for (std::int64_t v = 0; v < V; ++v) wsum += c.class_weight ? real(d.class_weight[size_t(v)]) : 1;
  for (std::int64_t n = 0; n < N; ++n) {
    const auto y = d.labels_v[size_t(n)];
    if (y != c.ignore_index && y >= 0 && y < V) divisor += c.class_weight ? real(d.class_weight[size_t(y)]) : 1;
  }
  const real F = std::fabs(real(c.grad_scale)) / (c.reduction == Reduction::Mean ? divisor : real(1));
  // δz_n and |G|⁺.
  std::vector<real> dz(size_t(N), 0), Gp(size_t(N * V), 0);
  real dz_max = 0;
  for (std::int64_t n = 0; n < N; ++n) {
    real a_max = 0;
    for (std::int64_t v = 0; v < V; ++v) {
      real a = d.bias_d.empty() ? 0 : std::fabs(real(d.bias_d[size_t(v)]));
      for (std::int64_t k = 0; k < H; ++k)
        a += std::fabs(real(d.hidden_d[size_t(n * H + k)]) * real(d.weight_d[size_t(v * H + k)]));
      a_max = std::max(a_max, a);
    }
    dz[size_t(n)] = real(H + 1) * kU * a_max;
    dz_max = std::max(dz_max, dz[size_t(n)]);
    const auto y = d.labels_v[size_t(n)];
    if (y == c.ignore_index || y < 0 || y >= V) continue;  // G row exactly 0
    const real lse = ref.ce.lse[size_t(n)];
    const real wy = c.class_weight ? real(d.class_weight[size_t(y)]) : 1;
    const real eps = prm.label_smoothing;
    for (std::int64_t v = 0; v < V; ++v) {
      real z = ref.logits[size_t(n * V + v)], chain = 1;
      if (prm.softcap > 0) {
        const real ch = std::cosh(z / real(prm.softcap));
        z = real(prm.softcap) * std::tanh(z / real(prm.softcap));
        chain = 1 / (ch * ch);
      }
      const real p = std::exp(z - lse);
      const real wv = c.class_weight ? real(d.class_weight[size_t(v)]) : 1;
      Gp[size_t(n * V + v)] = F * chain *
                              ((1 - eps) * wy * (p + (v == y ? 1 : 0)) + eps / real(V) * (wsum * p + wv) +
                               2 * real(prm.z_loss) * (std::fabs(lse) + 1) * p);
    }
  }
  const real g_rel = 2 * kU + 4 * (1 + k_inv) * dz_max;
  Bounds b;
  b.grad_hidden.assign(size_t(N * H), 0);
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t k = 0; k < H; ++k) {
      real s = 0;
      for (std::int64_t v = 0; v < V; ++v) s += Gp[size_t(n * V + v)] * std::fabs(real(d.weight_d[size_t(v * H + k)]));
      b.grad_hidden[size_t(n * H + k)] = double((real(V) * kU + g_rel) * s);
    }
  b.grad_weight.assign(size_t(V * H), 0);
  for (std::int64_t v = 0; v < V; ++v)
    for (std::int64_t k = 0; k < H; ++k) {
      real s = 0;
      for (std::int64_t n = 0; n < N; ++n) s += Gp[size_t(n * V + v)] * std::fabs(real(d.hidden_d[size_t(n * H + k)]));
      b.grad_weight[size_t(v * H + k)] = double((real(N) * kU + g_rel) * s);
    }
  if (c.bias) {
    b.grad_bias.assign(size_t(V), 0);
    for (std::int64_t v = 0; v < V; ++v) {
      real s = 0;
      for (std::int64_t n = 0; n < N; ++n) s += Gp[size_t(n * V + v)];
      b.grad_bias[size_t(v)] = double((real(N) * kU + g_rel) * s);
    }
  }
  // Loss: first-order effect of δz (Σ_v |∂ℓ_n/∂z_v| ≤ Σ_v |G|⁺_nv / F).
  std::vector<real> row(size_t(N), 0);
  for (std::int64_t n = 0; n < N; ++n) {
    real s = 0;
    for (std::int64_t v = 0; v < V; ++v) s += Gp[size_t(n * V + v)];
    row[size_t(n)] = F > 0 ? dz[size_t(n)] * s / F : 0;
  }
  b.lse.assign(size_t(N), 0);
  for (std::int64_t n = 0; n < N; ++n) b.lse[size_t(n)] = double(dz[size_t(n)]);
  if (c.reduction == Reduction::None) {
    b.loss.assign(row.begin(), row.end());
  } else {
    real s = 0;
    for (real r : row) s += r;
    b.loss.assign(1, double(c.reduction == Reduction::Mean ? s / divisor : s));
  }
  return b;
}

/// |got − ref| ≤ bound + (for loss / lse) compare.hpp's loss rule or (for fp16/bf16 gradients) its ulp rule.
/// NaN matches NaN. Returns the largest fraction of the allowance used.
inline double expect_within(const char* what, const Vec& got, const Vec& ref, const Vec& bound, DType dtype,
                            bool is_loss) {
  const fusedloss_cli::Tolerance tol = fusedloss_cli::tolerance_for(dtype);
  EXPECT_EQ(got.size(), ref.size()) << what;
  double mean_abs = 0;
  for (double r : ref) mean_abs += std::isfinite(r) ? std::fabs(r) : 0;
  if (!ref.empty()) mean_abs /= double(ref.size());
  double worst = 0;
  int failures = 0;
  for (std::size_t i = 0; i < std::min(got.size(), ref.size()); ++i) {
    const double g = got[i], r = ref[i];
    if (std::isnan(r) || std::isnan(g)) {
      if (!(std::isnan(r) && std::isnan(g)) && failures++ < 5)
        ADD_FAILURE() << what << "[" << i << "]: got " << g << ", oracle " << r;
      continue;
    }
    double allowed = bound[i];
    if (is_loss) allowed += tol.loss_rel * std::max(std::fabs(r), mean_abs);
    else if (dtype != DType::Float32) allowed += tol.grad_ulp * tu::ulp(dtype, r);
    const double err = std::fabs(g - r);
    if (err > allowed) {
      if (failures++ < 5)
        ADD_FAILURE() << what << "[" << i << "]: got " << g << ", oracle " << r << ", |diff| " << err << " > allowed "
                      << allowed;
    } else if (allowed > 0) {
      worst = std::max(worst, err / allowed);
    }
  }
  return worst;
}

/// Every output of `got` against the oracle (grad_* only where `got` has them).
inline void check(const Case& c, const Data& d, const oracle::LinearResult& ref, const Got& got) {
  const Bounds b = bounds(c, d, ref);
  std::string report;
  const auto note = [&](const char* what, double used) { report += std::string(" ") + what + " " + std::to_string(used); };
  note("loss", expect_within("loss", got.loss, ref.ce.loss, b.loss, c.dtype, true));
  if (!got.lse.empty()) note("lse", expect_within("lse", got.lse, ref.ce.lse, b.lse, c.dtype, true));
  if (!got.grad_hidden.empty())
    note("grad_hidden", expect_within("grad_hidden", got.grad_hidden, ref.grad_hidden, b.grad_hidden, c.dtype, false));
  if (!got.grad_weight.empty())
    note("grad_weight", expect_within("grad_weight", got.grad_weight, ref.grad_weight, b.grad_weight, c.dtype, false));
  if (!got.grad_bias.empty())
    note("grad_bias", expect_within("grad_bias", got.grad_bias, ref.grad_bias, b.grad_bias, c.dtype, false));
  EXPECT_EQ(got.error_count, ref.ce.bad);
  ::testing::Test::RecordProperty("bound_used", report);
}

/// A spread of cases over every option, both vocabulary sizes, each dtype, chunk sizes that do not divide N.
inline std::vector<Case> cases() {
  std::vector<Case> out;
  const auto add = [&](Case c, const std::string& name) {
    for (DType dt : {DType::Float32, DType::Float16, DType::BFloat16}) {
      c.dtype = dt;
      c.name = name + "_" + fl::dtype_name(dt);
      out.push_back(c);
    }
  };
  Case c;
  c.max_chunk_rows = 5;  // 37 = 7·5 + 2
  add(c, "mean_chunk5");
  c.max_chunk_rows = 16;
  c.stride = 70;
  c.reduction = Reduction::Sum;
  add(c, "sum_stride70_chunk16");
  c.stride = 0;
  c.reduction = Reduction::None;
  c.max_chunk_rows = 0;  // one chunk
  add(c, "none_onechunk");
  c.reduction = Reduction::Mean;
  c.max_chunk_rows = 11;
  c.class_weight = true;
  c.label_smoothing = 0.1;
  add(c, "mean_weights_smoothing_chunk11");
  c.class_weight = false;
  c.label_smoothing = 0;
  c.z_loss = 1e-3;
  c.softcap = 3.0;
  c.bias = false;
  c.label_dtype = DType::Int32;
  add(c, "mean_zloss_softcap_nobias_i32");
  // Every option at once, V = 32003, the chunk from a budget holding 6 rows of logits.
  Case big;
  big.V = 32003;
  big.class_weight = true;
  big.label_smoothing = 0.05;
  big.z_loss = 1e-4;
  big.softcap = 15.0;
  big.grad_scale = 0.5;
  big.ignore_index = 7;
  big.stride = 66;
  big.budget = 0;  // set per dtype by the test from linear_cross_entropy_plan
  add(big, "V32003_everything_budget");
  return out;
}

}  // namespace lce
