// The independent float64 oracle (tests/oracle/oracle.hpp, which shares no code with detail/*_ops.hpp)
// against the CUDA path: the cases of tests/common/oracle_cases.hpp — every loss × option set × reduction ×
// dtype on fresh random data, the ones tests/cpu/test_oracle_vs_cpu.cpp holds the CPU path to — at small,
// odd sizes, run through the public API on device copies whose outputs are poisoned first. The tolerance is `fusedloss validate`'s
// (cli/compare.hpp), with the oracle's values rounded once to the output dtype where the CPU path's
// would stand. Every test GTEST_SKIP()s without a device.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "common/oracle_cases.hpp"
#include "cuda/validate_tolerance.hpp"

namespace {

using namespace oracle_cases;
using fusedloss_cli::CompareKind;
using validate_tolerance::f32_tensor;
using validate_tolerance::raw_tensor;
using validate_tolerance::rounded_tensor;
using validate_tolerance::within_tolerance;

/// Outputs are filled with this before a call: 0x5A5A… is finite in f32, f16 and bf16, so an output
/// the call failed to write cannot pass for an expected NaN (a mean over only ignored rows).
constexpr unsigned char kPoison = 0x5A;

bool device_usable() {
  int n = 0;
  const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0 && fl::cuda_available();
  cudaGetLastError();
  return ok;
}

/// A device copy of host bytes (or `bytes` of kPoison when src is null); at least 64 bytes allocated.
struct DeviceCopy {
  void* p = nullptr;
  std::size_t bytes = 0;
  DeviceCopy(const void* src, std::size_t n) : bytes(n) {
    if (cudaMalloc(&p, n > 64 ? n : 64) != cudaSuccess) {
      cudaGetLastError();
      p = nullptr;
      return;
    }
    if (n == 0) return;
    if (src != nullptr) {
      cudaMemcpy(p, src, n, cudaMemcpyHostToDevice);
    } else {
      cudaMemset(p, kPoison, n);
    }
  }
  DeviceCopy(const DeviceCopy&) = delete;
  DeviceCopy& operator=(const DeviceCopy&) = delete;
  ~DeviceCopy() {
    if (p != nullptr) cudaFree(p);
  }
  void download(void* dst) const {
    if (bytes > 0) cudaMemcpy(dst, p, bytes, cudaMemcpyDeviceToHost);
  }
};

fl::ExecutionConfig cuda_config() {
  fl::ExecutionConfig cfg;
  cfg.backend = fl::Backend::CUDA;
  return cfg;
}

/// What one CUDA call wrote, in host memory: loss (and lse), the gradient as stored (row padding too).
struct DeviceRun {
  fl::Status status = fl::Status::Success;
  std::vector<float> loss, lse;
  std::vector<unsigned char> grad;
  std::int64_t errors = -1;
};

/// Calls compute_sync on the device copies (problem `p` and outputs `out` point at them), then reads
/// the outputs back.
template <class Problem>
void finish(const Problem& p, fl::LossOutputs out, const DeviceCopy& loss, const DeviceCopy& grad,
            const DeviceCopy* lse, const DeviceCopy& errors, DeviceRun& r) {
  r.status = fl::compute_sync(p, out, cuda_config());
  if (r.status != fl::Status::Success && r.status != fl::Status::InvalidValue) return;
  r.loss.resize(loss.bytes / 4);
  loss.download(r.loss.data());
  r.grad.resize(grad.bytes);
  grad.download(r.grad.data());
  if (lse != nullptr) {
    r.lse.resize(lse->bytes / 4);
    lse->download(r.lse.data());
  }
  errors.download(&r.errors);
}

DeviceRun run_cuda(const tu::Instance& in) {
  DeviceRun r;
  if (!in.rowwise()) {
    const fl::ElementwiseProblem& h = in.e;
    const std::size_t bytes = in.bx.bytes();
    DeviceCopy x(in.bx.data(), bytes), y(in.by.data(), bytes), w(in.bw.data(), in.w.empty() ? 0 : bytes),
        pos(in.pos_col.data(), in.pos_col.size() * 4);
    DeviceCopy loss(nullptr, static_cast<std::size_t>(tu::loss_count(h)) * 4), grad(nullptr, bytes),
        errors(nullptr, 8);
    fl::ElementwiseProblem p = h;
    p.input = x.p;
    p.target = y.p;
    p.weight = h.weight != nullptr ? w.p : nullptr;
    if (h.params.pos_weight_per_column != nullptr) p.params.pos_weight_per_column = static_cast<const float*>(pos.p);
    fl::LossOutputs out;
    out.loss = static_cast<float*>(loss.p);
    out.grad = grad.p;
    out.error_count = static_cast<std::int64_t*>(errors.p);
    finish(p, out, loss, grad, nullptr, errors, r);
    return r;
  }
  const fl::RowwiseProblem& h = in.r;
  const bool ce = h.loss == fl::Loss::CrossEntropy;
  DeviceCopy x(in.bx.data(), in.bx.bytes()), t(in.by.data(), in.by.bytes()), labels(in.blabels.data(), in.blabels.bytes()),
      weights(in.class_weight.data(), in.class_weight.size() * 4);
  DeviceCopy loss(nullptr, static_cast<std::size_t>(tu::loss_count(h)) * 4), grad(nullptr, in.bx.bytes()),
      lse(nullptr, static_cast<std::size_t>(h.rows) * 4), errors(nullptr, 8);
  fl::RowwiseProblem p = h;
  p.input = x.p;
  p.target = h.target != nullptr ? t.p : nullptr;
  p.labels = h.labels != nullptr ? labels.p : nullptr;
  p.class_weight = h.class_weight != nullptr ? static_cast<const float*>(weights.p) : nullptr;
  fl::LossOutputs out;
  out.loss = static_cast<float*>(loss.p);
  out.grad = grad.p;
  out.lse = ce ? static_cast<float*>(lse.p) : nullptr;
  out.error_count = static_cast<std::int64_t*>(errors.p);
  finish(p, out, loss, grad, ce ? &lse : nullptr, errors, r);
  return r;
}

/// Runs a case on the device; a failed call leaves the outputs empty (the comparisons then fail).
DeviceRun run_checked(const OracleCase& s) {
  EXPECT_EQ(s.expected.bad, 0);
  DeviceRun r = run_cuda(s.in);
  EXPECT_EQ(r.status, fl::Status::Success) << fl::status_string(r.status);
  EXPECT_EQ(r.errors, 0);
  return r;
}

/// T for a loss: the size of the terms it is a difference of (oracle::Result::loss_terms: lse and z_y
/// of a cross_entropy row, p·log p and p·q of a KL, the log1p terms of msle), their mean over the
/// values of a `none` result like the rule's mean|ref| floor; 0 where nothing cancels.
double loss_term_scale(const oracle::Result& expected) {
  double t = 0;
  for (double v : expected.loss_terms) t += v / static_cast<double>(expected.loss_terms.size());
  return t;
}

/// A float32 output (loss, lse) against the oracle's values; T: its term scale (cli/compare.hpp).
::testing::AssertionResult f32_output_matches(const std::vector<float>& got, const std::vector<double>& want,
                                              DType dtype, double T, const char* what) {
  return within_tolerance(f32_tensor(got), rounded_tensor(DType::Float32, want), CompareKind::Loss, dtype, T, what);
}

// =========================================================================================================
// Elementwise: 1, 7, 1000 and 4099 elements (one partial tile, several tiles with a partial one).
// =========================================================================================================

class OracleVsCudaElementwise : public ::testing::TestWithParam<ElemCase> {};

TEST_P(OracleVsCudaElementwise, LossAndGradientMatch) {
  if (!device_usable()) GTEST_SKIP() << "no usable CUDA device";
  const ElemCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  const OracleCase s = make_elem(c, rng);
  const DeviceRun r = run_checked(s);
  EXPECT_TRUE(f32_output_matches(r.loss, s.expected.loss, c.dtype, loss_term_scale(s.expected), "loss"));
  EXPECT_TRUE(within_tolerance(raw_tensor(c.dtype, r.grad.data(), c.n), rounded_tensor(c.dtype, s.expected.grad),
                               CompareKind::Grad, c.dtype, fusedloss_cli::elementwise_term_scale(s.in.e)));
}

INSTANTIATE_TEST_SUITE_P(All, OracleVsCudaElementwise, ::testing::ValuesIn(elem_cases({1, 7, 1000, 4099})),
                         elem_case_name);

// =========================================================================================================
// Row-wise: C from 1 (a gradient of exact zeros) to 50257 (a vocabulary-sized row), odd N.
// =========================================================================================================

std::vector<RowCase> cuda_row_cases() {
  return row_cases({{1, 1}, {7, 1}, {1, 2}, {67, 2}, {7, 33}, {5, 1000}, {3, 4099}, {2, 50257}},
                   {{1, 1}, {7, 2}, {5, 33}, {3, 4099}, {2, 50257}});
}

class OracleVsCudaRowwise : public ::testing::TestWithParam<RowCase> {};

TEST_P(OracleVsCudaRowwise, LossGradientAndLseMatch) {
  if (!device_usable()) GTEST_SKIP() << "no usable CUDA device";
  const RowCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  const OracleCase s = make_row(c, rng);
  const DeviceRun r = run_checked(s);
  EXPECT_TRUE(f32_output_matches(r.loss, s.expected.loss, c.dtype, loss_term_scale(s.expected), "loss"));
  if (s.in.r.loss == fl::Loss::CrossEntropy) {
    EXPECT_TRUE(f32_output_matches(r.lse, s.expected.lse, c.dtype, fusedloss_cli::kLseTermScale, "lse"));
  }
  // The gradient's rows without their padding, which must still hold the poison.
  const std::size_t es = fl::dtype_size(c.dtype);
  std::vector<unsigned char> dense(static_cast<std::size_t>(c.N * c.C) * es);
  std::int64_t padding_written = 0;
  for (std::int64_t n = 0; n < c.N; ++n) {
    const unsigned char* row = r.grad.data() + static_cast<std::size_t>(n * s.in.stride) * es;
    std::memcpy(dense.data() + static_cast<std::size_t>(n * c.C) * es, row, static_cast<std::size_t>(c.C) * es);
    if (n + 1 == c.N) break;  // the buffer ends with the last row's classes
    for (std::size_t b = static_cast<std::size_t>(c.C) * es; b < static_cast<std::size_t>(s.in.stride) * es; ++b)
      padding_written += row[b] != kPoison;
  }
  EXPECT_EQ(padding_written, 0) << "bytes of the gradient's row padding were written";
  EXPECT_TRUE(within_tolerance(raw_tensor(c.dtype, dense.data(), c.N * c.C), rounded_tensor(c.dtype, s.expected.grad),
                               CompareKind::Grad, c.dtype, fusedloss_cli::rowwise_term_scale(s.in.r)));
}

INSTANTIATE_TEST_SUITE_P(All, OracleVsCudaRowwise, ::testing::ValuesIn(cuda_row_cases()), row_case_name);

}  // namespace
