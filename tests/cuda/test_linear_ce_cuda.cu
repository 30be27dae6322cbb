// linear_cross_entropy on the CUDA path (cuBLAS GEMMs + the row-wise cross_entropy kernel in place), against
// the float64 oracle with the bound of tests/common/linear_ce_check.hpp; bitwise reproducibility; gradient
// accumulation; the caller's workspace bound; no host-side surprises (the result equals a stream-captured
// graph's). Runs on the emulated device in CI (its cuBLAS is sim/src/cublas.cpp). Skips without a device.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "common/linear_ce_check.hpp"
#include "common/test_util.hpp"
#include "cuda/emulated_scale.hpp"

namespace {

namespace fl = ::fusedloss;
using fl::DType;
using fl::Reduction;
using fl::Status;
using lce::Case;
using tu::Buffer;

#define SKIP_WITHOUT_DEVICE()                                        \
  do {                                                               \
    if (!fl::cuda_available()) GTEST_SKIP() << "no CUDA device";     \
  } while (0)

/// A device copy of a host buffer (nullptr for an empty one), freed at scope exit.
struct Dev {
  void* p = nullptr;
  std::size_t bytes = 0;
  Dev() = default;
  explicit Dev(std::size_t n) : bytes(n) {
    if (n > 0) EXPECT_EQ(cudaMalloc(&p, n), cudaSuccess);
  }
  Dev(const void* host, std::size_t n) : Dev(n) {
    if (n > 0) EXPECT_EQ(cudaMemcpy(p, host, n, cudaMemcpyHostToDevice), cudaSuccess);
  }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  ~Dev() {
    if (p != nullptr) cudaFree(p);
  }
  void to_host(void* host) const { ASSERT_EQ(cudaMemcpy(host, p, bytes, cudaMemcpyDeviceToHost), cudaSuccess); }
};

/// One call's device inputs and (poisoned, or preset for accumulation) outputs.
struct DeviceCall {
  Dev hidden, weight, bias, labels, class_weight, loss, lse, grad_hidden, grad_weight, grad_bias, error_count;
  fl::LinearCrossEntropyProblem p;
  fl::LinearCrossEntropyOutputs o;

  DeviceCall(const Case& c, const lce::Data& d, const Buffer* old_weight = nullptr, const Buffer* old_bias = nullptr)
      : hidden(d.hidden.data(), d.hidden.bytes()),
        weight(d.weight.data(), d.weight.bytes()),
        bias(c.bias ? d.bias.data() : nullptr, c.bias ? d.bias.bytes() : 0),
        labels(d.labels.data(), d.labels.bytes()),
        class_weight(c.class_weight ? d.class_weight.data() : nullptr, c.class_weight ? d.class_weight.size() * 4 : 0),
        loss(tu::poisoned_floats(size_t(c.reduction == Reduction::None ? c.N : 1)).data(),
             4 * size_t(c.reduction == Reduction::None ? c.N : 1)),
        lse(tu::poisoned_floats(size_t(c.N)).data(), 4 * size_t(c.N)),
        grad_hidden(poisoned(c.dtype, size_t(c.N * lce::stride_of(c))).data(), size_t(c.N * lce::stride_of(c)) * fl::dtype_size(c.dtype)),
        grad_weight(old_weight ? old_weight->data() : poisoned(c.dtype, size_t(c.V * c.H)).data(),
                    size_t(c.V * c.H) * fl::dtype_size(c.dtype)),
        grad_bias(old_bias ? old_bias->data() : poisoned(c.dtype, size_t(c.V)).data(),
                  c.bias ? size_t(c.V) * fl::dtype_size(c.dtype) : 0),
        error_count(sizeof(std::int64_t)) {
    p = lce::problem_of(c, d);
    p.hidden = hidden.p;
    p.weight = weight.p;
    p.bias = bias.p;
    p.labels = labels.p;
    p.class_weight = static_cast<const float*>(class_weight.p);
    o.loss = static_cast<float*>(loss.p);
    o.lse = static_cast<float*>(lse.p);
    o.grad_hidden = grad_hidden.p;
    o.grad_weight = grad_weight.p;
    o.grad_bias = bias.p != nullptr ? grad_bias.p : nullptr;
    o.error_count = static_cast<std::int64_t*>(error_count.p);
    o.accumulate = old_weight != nullptr;
  }
  static std::vector<unsigned char> poisoned(DType dt, std::size_t n) {
    Buffer b(dt, n);
    b.poison();
    const auto* bytes = static_cast<const unsigned char*>(b.data());
    return std::vector<unsigned char>(bytes, bytes + b.bytes());
  }
  /// Results as doubles, and the raw output buffers for bit comparisons.
  lce::Got read(const Case& c, Buffer* gh_raw = nullptr, Buffer* gw_raw = nullptr, Buffer* gb_raw = nullptr) const {
    lce::Got g;
    std::vector<float> lv(loss.bytes / 4), sv(size_t(c.N));
    loss.to_host(lv.data());
    lse.to_host(sv.data());
    g.loss.assign(lv.begin(), lv.end());
    g.lse.assign(sv.begin(), sv.end());
    Buffer gh(c.dtype, size_t(c.N * lce::stride_of(c))), gw(c.dtype, size_t(c.V * c.H)), gb(c.dtype, size_t(c.V));
    grad_hidden.to_host(gh.data());
    grad_weight.to_host(gw.data());
    if (c.bias) grad_bias.to_host(gb.data());
    const std::int64_t ld = lce::stride_of(c);
    g.grad_hidden.resize(size_t(c.N * c.H));
    for (std::int64_t n = 0; n < c.N; ++n)
      for (std::int64_t k = 0; k < c.H; ++k) g.grad_hidden[size_t(n * c.H + k)] = gh.get(size_t(n * ld + k));
    g.grad_weight = gw.to_double();
    if (c.bias) g.grad_bias = gb.to_double();
    std::int64_t err = 0;
    error_count.to_host(&err);
    g.error_count = err;
    if (gh_raw) *gh_raw = gh;
    if (gw_raw) *gw_raw = gw;
    if (gb_raw) *gb_raw = gb;
    return g;
  }
};

/// Runs the call with a workspace of exactly workspace_size() bytes on `stream`.
Status run(DeviceCall& call, cudaStream_t stream = nullptr) {
  fl::ExecutionConfig cfg;
  cfg.backend = fl::Backend::CUDA;
  cfg.stream = stream;
  std::size_t bytes = 0;
  const Status s = fl::workspace_size(call.p, call.o, cfg, &bytes);
  if (s != Status::Success) return s;
  EXPECT_LE(bytes, call.p.memory_budget_bytes);
  Dev ws(bytes);
  cfg.workspace = ws.p;
  cfg.workspace_bytes = bytes;
  const Status r = fl::compute(call.p, call.o, cfg);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  return r;
}

/// The emulated device runs the cross_entropy kernel thread by thread: the V = 32003 case in one dtype there.
std::vector<Case> device_cases() {
  std::vector<Case> out;
  for (const Case& c : lce::cases()) {
    if (fusedloss_test::kEmulatedDevice && c.V > 4096 && c.dtype != DType::BFloat16) continue;
    out.push_back(c);
  }
  return out;
}

void resolve_budget(Case& c, DeviceCall& call) {
  if (c.budget != 0) return;
  fl::LinearCrossEntropyProblem capped = call.p;
  capped.memory_budget_bytes = std::size_t(1) << 40;
  capped.max_chunk_rows = 6;
  fl::ExecutionConfig cfg;
  cfg.backend = fl::Backend::CUDA;
  fl::LinearCrossEntropyPlan plan;
  ASSERT_EQ(fl::linear_cross_entropy_plan(capped, call.o, cfg, &plan), Status::Success);
  c.budget = plan.workspace_bytes;
  call.p.memory_budget_bytes = c.budget;
}

class LinearCeCuda : public ::testing::TestWithParam<Case> {};

TEST_P(LinearCeCuda, MatchesOracle) {
  SKIP_WITHOUT_DEVICE();
  FL_SEEDED_RNG(rng);
  Case c = GetParam();
  const lce::Data d = lce::make_data(c, rng);
  DeviceCall call(c, d);
  resolve_budget(c, call);
  ASSERT_EQ(run(call), Status::Success);
  const oracle::LinearResult ref = oracle::linear_cross_entropy(c.N, c.H, c.V, d.hidden_d, d.weight_d, d.bias_d,
                                                                d.labels_v, lce::red_of(c.reduction), d.params);
  Buffer gh;
  lce::check(c, d, ref, call.read(c, &gh));
  const std::int64_t ld = lce::stride_of(c);  // the stride gap of grad_hidden is not written
  for (std::int64_t n = 0; n < c.N; ++n)
    for (std::int64_t k = c.H; k < ld; ++k) ASSERT_EQ(gh.bits(size_t(n * ld + k)), gh.poison_bits());
}

TEST_P(LinearCeCuda, BitwiseReproducibleRunToRun) {
  SKIP_WITHOUT_DEVICE();
  FL_SEEDED_RNG(rng);
  Case c = GetParam();
  if (fusedloss_test::kEmulatedDevice && c.V > 4096) GTEST_SKIP() << "MatchesOracle covers this case emulated";
  const lce::Data d = lce::make_data(c, rng);
  DeviceCall a(c, d), b(c, d);
  resolve_budget(c, a);
  b.p.memory_budget_bytes = a.p.memory_budget_bytes;
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  ASSERT_EQ(run(a), Status::Success);
  ASSERT_EQ(run(b, stream), Status::Success);  // another stream, another workspace
  cudaStreamDestroy(stream);
  Buffer gha, gwa, gba, ghb, gwb, gbb;
  const lce::Got ra = a.read(c, &gha, &gwa, &gba), rb = b.read(c, &ghb, &gwb, &gbb);
  EXPECT_EQ(std::memcmp(ra.loss.data(), rb.loss.data(), ra.loss.size() * sizeof(double)), 0);
  EXPECT_EQ(std::memcmp(ra.lse.data(), rb.lse.data(), ra.lse.size() * sizeof(double)), 0);
  EXPECT_EQ(std::memcmp(gha.data(), ghb.data(), gha.bytes()), 0);
  EXPECT_EQ(std::memcmp(gwa.data(), gwb.data(), gwa.bytes()), 0);
  if (c.bias) {
    EXPECT_EQ(std::memcmp(gba.data(), gbb.data(), gba.bytes()), 0);
  }
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) { return info.param.name; }
INSTANTIATE_TEST_SUITE_P(All, LinearCeCuda, ::testing::ValuesIn(device_cases()), case_name);

/// accumulate: round(old + this call's fp32 gradient) — bit for bit old + (a fresh call's result) in fp32.
TEST(LinearCeCudaAccumulate, AddsExactlyInFp32) {
  SKIP_WITHOUT_DEVICE();
  FL_SEEDED_RNG(rng);
  Case c;
  c.reduction = Reduction::Sum;
  c.max_chunk_rows = 8;
  const lce::Data d = lce::make_data(c, rng);
  Buffer old_w = Buffer::from(DType::Float32, rng.normal_vec(size_t(c.V * c.H), 0, 0.1));
  Buffer old_b = Buffer::from(DType::Float32, rng.normal_vec(size_t(c.V), 0, 0.1));
  DeviceCall fresh(c, d), acc(c, d, &old_w, &old_b);
  ASSERT_EQ(run(fresh), Status::Success);
  ASSERT_EQ(run(acc), Status::Success);
  const lce::Got f = fresh.read(c), a = acc.read(c);
  for (std::size_t i = 0; i < a.grad_weight.size(); ++i)
    ASSERT_EQ(a.grad_weight[i], double(float(old_w.get(i)) + float(f.grad_weight[i]))) << i;
  for (std::size_t i = 0; i < a.grad_bias.size(); ++i)
    ASSERT_EQ(a.grad_bias[i], double(float(old_b.get(i)) + float(f.grad_bias[i]))) << i;
}

}  // namespace
