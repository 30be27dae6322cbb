// GPU tests of the fused elementwise losses (cuda/elementwise.cu) against the CPU path.
//
// Every test that needs a device GTEST_SKIP()s when cudaGetDeviceCount reports none. Outputs and
// workspaces are poisoned (0x5A bytes: a finite value in f32, f16 and bf16) before every call, and every
// device buffer has guard elements on both sides that must still be poison afterwards, so an
// unwritten element or an out-of-bounds write shows.
//
// Tolerance: the one rule of `fusedloss validate` (cli/compare.hpp, through cuda/validate_tolerance.hpp)
// for loss and gradient (an elementwise gradient has no term scale: T = 0).
// Results that must be bit-identical (same kernel, different alignment / in-place / grid /
// repetition / graph replay) are compared bitwise.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "fusedloss/api.hpp"
#include "fusedloss/cuda/elementwise_kernels.cuh"
#include "fusedloss/float16.hpp"
#include "fusedloss/types.hpp"
#include "src/backend.hpp"
#include "cuda/emulated_scale.hpp"
#include "cuda/validate_tolerance.hpp"

namespace {

/// Outputs and guard bytes are filled with this before a call: 0x5A5A… is a finite value in f32,
/// f16 and bf16, so an output the call failed to write can never pass for an expected NaN.
constexpr unsigned char kPoisonFill = 0x5A;

using fusedloss::DType;
using fusedloss::ElementwiseProblem;
using fusedloss::Loss;
using fusedloss::LossOutputs;
using fusedloss::Reduction;
using fusedloss::Status;
namespace ew = fusedloss::cuda::elementwise;

bool device_present() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return count > 0;
}

#define FL_REQUIRE_DEVICE()                                         \
  do {                                                              \
    if (!device_present()) GTEST_SKIP() << "no CUDA device present"; \
  } while (0)

#define FL_CUDA_EXPECT(expr) EXPECT_EQ(cudaSuccess, (expr)) << #expr
#define FL_CUDA_ASSERT(expr) ASSERT_EQ(cudaSuccess, (expr)) << #expr

/// A device array with the vector operations the tests need. Every byte goes through
/// cudaMalloc / cudaMemcpy, so the emulated device's initcheck sees what was written.
template <class T>
class DeviceVec {
 public:
  DeviceVec() = default;
  explicit DeviceVec(std::size_t n, T value = T()) { assign(std::vector<T>(n, value)); }
  explicit DeviceVec(const std::vector<T>& host) { assign(host); }
  ~DeviceVec() { cudaFree(p_); }
  DeviceVec(const DeviceVec&) = delete;
  DeviceVec& operator=(const DeviceVec&) = delete;
  void assign(const std::vector<T>& host) {
    cudaFree(p_);
    p_ = nullptr;
    n_ = host.size();
    if (n_ == 0) return;
    FL_CUDA_EXPECT(cudaMalloc(&p_, n_ * sizeof(T)));
    FL_CUDA_EXPECT(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  void resize(std::size_t n, T value = T()) { assign(std::vector<T>(n, value)); }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    if (n_ > 0) FL_CUDA_EXPECT(cudaMemcpy(host.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
  T operator[](std::size_t i) const {
    T v{};
    FL_CUDA_EXPECT(cudaMemcpy(&v, p_ + i, sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
  T* data() const { return p_; }
  std::size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

int cpu_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

// ---- host-side values ----------------------------------------------------------------------

std::size_t esize(DType d) { return d == DType::Float32 ? 4 : 2; }

float load_value(const unsigned char* bytes, DType d, std::int64_t i) {
  if (d == DType::Float32) {
    float f;
    std::memcpy(&f, bytes + 4 * i, 4);
    return f;
  }
  std::uint16_t b;
  std::memcpy(&b, bytes + 2 * i, 2);
  return d == DType::Float16 ? fusedloss::to_float(fusedloss::half_t{b}) : fusedloss::to_float(fusedloss::bfloat16_t{b});
}

void store_value(unsigned char* bytes, DType d, std::int64_t i, float v) {
  if (d == DType::Float32) {
    std::memcpy(bytes + 4 * i, &v, 4);
    return;
  }
  const std::uint16_t b = d == DType::Float16 ? fusedloss::to_half(v).bits : fusedloss::to_bfloat16(v).bits;
  std::memcpy(bytes + 2 * i, &b, 2);
}

// ---- deterministic pseudo-random data ------------------------------------------------------

__host__ __device__ inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/// Uniform in [0, 1) from (seed, stream, index).
__host__ __device__ inline double uniform01(std::uint64_t seed, int stream, std::int64_t i) {
  const std::uint64_t h = splitmix64(seed * 0x100000001b3ull + static_cast<std::uint64_t>(stream) * 0x9e3779b9ull +
                                     splitmix64(static_cast<std::uint64_t>(i)));
  return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);
}

struct Variant {
  Loss loss;
  bool pos_col;
  const char* name;
};

const Variant kVariants[] = {
    {Loss::MSE, false, "mse"},
    {Loss::MAE, false, "mae"},
    {Loss::RMSE, false, "rmse"},
    {Loss::MSLE, false, "msle"},
    {Loss::Huber, false, "huber"},
    {Loss::SmoothL1, false, "smooth_l1"},
    {Loss::PseudoHuber, false, "pseudo_huber"},
    {Loss::LogCosh, false, "log_cosh"},
    {Loss::Hinge, false, "hinge"},
    {Loss::SquaredHinge, false, "squared_hinge"},
    {Loss::BCE, false, "bce"},
    {Loss::BCEWithLogits, false, "bce_with_logits"},
    {Loss::BCEWithLogits, true, "bce_with_logits_per_column"},
};
constexpr int kNumVariants = static_cast<int>(sizeof(kVariants) / sizeof(kVariants[0]));

constexpr std::int64_t kPosColumns = 7;

/// Host copies of one problem's data, in its dtype.
struct HostData {
  DType dtype = DType::Float32;
  Loss loss = Loss::MSE;
  bool pos_col = false;
  std::int64_t n = 0;
  std::vector<unsigned char> x, y, w;
  std::vector<float> pos_weight;  // per column
  std::int64_t columns = 0;
  double delta = 1.0, beta = 1.0, pw = 1.0;
};

HostData make_data(const Variant& v, DType dt, std::int64_t n, std::uint64_t seed) {
  HostData h;
  h.dtype = dt;
  h.loss = v.loss;
  h.pos_col = v.pos_col;
  if (v.pos_col) {
    h.columns = n >= kPosColumns ? kPosColumns : 1;
    n -= n % h.columns;  // the per-column vector must tile n
    h.pos_weight.resize(static_cast<std::size_t>(h.columns));
    for (std::int64_t c = 0; c < h.columns; ++c)
      h.pos_weight[static_cast<std::size_t>(c)] = static_cast<float>(0.5 + 2.0 * uniform01(seed, 9, c));
  }
  h.n = n;
  const std::size_t bytes = static_cast<std::size_t>(n) * esize(dt);
  h.x.resize(bytes);
  h.y.resize(bytes);
  h.w.resize(bytes);
  switch (v.loss) {
    case Loss::Huber: h.delta = 0.75; break;
    case Loss::PseudoHuber: h.delta = 1.5; break;
    case Loss::SmoothL1: h.beta = 0.5; break;
    case Loss::BCEWithLogits: h.pw = 1.5; break;
    default: break;
  }
  const bool minus_one_labels = (seed & 1) != 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const double u0 = uniform01(seed, 0, i), u1 = uniform01(seed, 1, i), u2 = uniform01(seed, 2, i);
    double x, y;
    switch (v.loss) {
      case Loss::MSLE:
        x = -0.5 + 6.5 * u0;
        y = -0.2 + 6.2 * u1;
        break;
      case Loss::Hinge:
      case Loss::SquaredHinge:
        x = -2.5 + 5.0 * u0;
        y = u1 < 0.5 ? (minus_one_labels ? -1.0 : 0.0) : 1.0;
        break;
      case Loss::BCE:
        x = u0;                                           // a probability in [0, 1)
        if (u2 < 0.005) x = 0.0;                          // exact endpoints: clamped logs
        if (u2 > 0.995) x = 1.0;
        y = u1;
        break;
      case Loss::BCEWithLogits:
        x = -8.0 + 16.0 * u0;
        y = u1;
        break;
      case Loss::LogCosh:
        x = -6.0 + 12.0 * u0;  // both branches (|r| < 1 and >= 1)
        y = -2.0 + 4.0 * u1;
        break;
      default:
        x = -3.0 + 6.0 * u0;
        y = -3.0 + 6.0 * u1;
        break;
    }
    store_value(h.x.data(), dt, i, static_cast<float>(x));
    store_value(h.y.data(), dt, i, static_cast<float>(y));
    store_value(h.w.data(), dt, i, static_cast<float>(0.25 + 1.75 * u2));
  }
  return h;
}

ElementwiseProblem make_problem(const HostData& h, Reduction red, double grad_scale) {
  ElementwiseProblem p;
  p.loss = h.loss;
  p.dtype = h.dtype;
  p.n = h.n;
  p.reduction = red;
  p.grad_scale = grad_scale;
  p.params.delta = h.delta;
  p.params.beta = h.beta;
  p.params.pos_weight = h.pw;
  return p;
}

/// What one call produced (host copies).
struct Result {
  Status status = Status::Success;
  std::vector<float> loss;           // n values for none, else 1
  std::vector<unsigned char> grad;   // n values in the dtype (empty without gradient)
  std::int64_t errors = -12345;
};

// ---- the CPU reference -----------------------------------------------------------------------

/// The problem over the host copies.
ElementwiseProblem host_problem(const HostData& h, Reduction red, bool weights, double grad_scale) {
  ElementwiseProblem p = make_problem(h, red, grad_scale);
  p.input = h.x.data();
  p.target = h.y.data();
  p.weight = weights ? h.w.data() : nullptr;
  if (h.pos_col) {
    p.params.pos_weight_per_column = h.pos_weight.data();
    p.params.columns = h.columns;
  }
  return p;
}

/// T of cli/compare.hpp for the problem's gradient.
double term_scale(const HostData& h, Reduction red, bool weights, double grad_scale) {
  return fusedloss_cli::elementwise_term_scale(host_problem(h, red, weights, grad_scale));
}

Result cpu_run(const HostData& h, Reduction red, bool weights, double grad_scale, bool with_grad = true) {
  const ElementwiseProblem p = host_problem(h, red, weights, grad_scale);
  Result r;
  r.loss.assign(red == Reduction::None ? static_cast<std::size_t>(h.n) : 1u, std::nanf(""));
  if (with_grad) r.grad.assign(h.x.size(), kPoisonFill);
  LossOutputs out;
  out.loss = r.loss.data();
  out.grad = with_grad ? r.grad.data() : nullptr;
  out.error_count = &r.errors;
  r.status = fusedloss::detail::cpu_compute(p, out, cpu_threads());
  return r;
}

// ---- the GPU run -------------------------------------------------------------------------------

constexpr std::int64_t kGuard = 16;  // guard elements on each side of every device buffer

/// A device buffer of `elems` + 2·kGuard elements of `es` bytes, filled with 0xFF.
struct Guarded {
  DeviceVec<unsigned char> mem;
  std::size_t es = 1;
  std::int64_t elems = 0;
  std::int64_t off = 0;  // extra element offset of the data (misalignment)
  Guarded(std::int64_t n, std::size_t elem_size, std::int64_t offset)
      : mem(static_cast<std::size_t>(n + 2 * kGuard + 1) * elem_size, kPoisonFill), es(elem_size), elems(n), off(offset) {}
  unsigned char* data() { return mem.data() + (kGuard + off) * es; }
  void upload(const std::vector<unsigned char>& host) {
    if (!host.empty()) FL_CUDA_EXPECT(cudaMemcpy(data(), host.data(), host.size(), cudaMemcpyHostToDevice));
  }
  std::vector<unsigned char> download() {
    std::vector<unsigned char> host(static_cast<std::size_t>(elems) * es);
    if (!host.empty()) FL_CUDA_EXPECT(cudaMemcpy(host.data(), data(), host.size(), cudaMemcpyDeviceToHost));
    return host;
  }
  /// Every byte outside [off, off + elems) is still 0xFF.
  bool guards_intact() {
    std::vector<unsigned char> all(mem.size());
    FL_CUDA_EXPECT(cudaMemcpy(all.data(), mem.data(), all.size(), cudaMemcpyDeviceToHost));
    const std::size_t lo = static_cast<std::size_t>(kGuard + off) * es;
    const std::size_t hi = lo + static_cast<std::size_t>(elems) * es;
    for (std::size_t b = 0; b < all.size(); ++b)
      if ((b < lo || b >= hi) && all[b] != kPoisonFill) return false;
    return true;
  }
};

struct GpuOptions {
  std::int64_t off_x = 0, off_y = 0, off_w = 0, off_grad = 0, off_loss = 0;
  bool in_place = false;
  bool with_grad = true;
  bool with_error_count = true;
  cudaStream_t stream = nullptr;
};

GpuOptions misaligned_all() {
  GpuOptions o;
  o.off_x = o.off_y = o.off_w = o.off_grad = o.off_loss = 1;
  return o;
}

Result gpu_run(const HostData& h, Reduction red, bool weights, double grad_scale, const GpuOptions& o = {}) {
  const std::size_t es = esize(h.dtype);
  const std::int64_t n = h.n;
  Guarded dx(n, es, o.off_x), dy(n, es, o.off_y), dw(n, es, o.off_w), dgrad(n, es, o.off_grad);
  const std::int64_t loss_elems = red == Reduction::None ? n : 1;
  Guarded dloss(loss_elems, sizeof(float), o.off_loss);
  DeviceVec<float> dpos(h.pos_weight);
  DeviceVec<std::int64_t> derr(1, -1);
  dx.upload(h.x);
  dy.upload(h.y);
  if (weights) dw.upload(h.w);

  ElementwiseProblem p = make_problem(h, red, grad_scale);
  p.input = dx.data();
  p.target = dy.data();
  p.weight = weights ? dw.data() : nullptr;
  if (h.pos_col) {
    p.params.pos_weight_per_column = dpos.data();
    p.params.columns = h.columns;
  }
  LossOutputs out;
  out.loss = reinterpret_cast<float*>(dloss.data());
  out.grad = o.with_grad ? (o.in_place ? static_cast<void*>(dx.data()) : static_cast<void*>(dgrad.data())) : nullptr;
  out.error_count = o.with_error_count ? derr.data() : nullptr;

  const std::size_t ws_bytes = fusedloss::detail::cuda_workspace_size(p);
  DeviceVec<unsigned char> ws(ws_bytes > 0 ? ws_bytes : 1, kPoisonFill);
  Result r;
  r.status = fusedloss::detail::cuda_compute(p, out, ws_bytes > 0 ? ws.data() : nullptr,
                                             ws_bytes, o.stream);
  FL_CUDA_EXPECT(cudaStreamSynchronize(o.stream));
  FL_CUDA_EXPECT(cudaGetLastError());
  const std::vector<unsigned char> lb = dloss.download();
  r.loss.resize(static_cast<std::size_t>(loss_elems));
  if (!lb.empty()) std::memcpy(r.loss.data(), lb.data(), lb.size());
  if (o.with_grad) r.grad = o.in_place ? dx.download() : dgrad.download();
  if (o.with_error_count) {
    std::int64_t e = 0;
    FL_CUDA_EXPECT(cudaMemcpy(&e, derr.data(), sizeof e, cudaMemcpyDeviceToHost));
    r.errors = e;
  }
  EXPECT_TRUE(dloss.guards_intact()) << "loss written outside its range";
  if (o.with_grad) EXPECT_TRUE((o.in_place ? dx : dgrad).guards_intact()) << "gradient written outside its range";
  if (!o.with_grad || o.in_place) EXPECT_TRUE(dgrad.guards_intact() && dgrad.download() == std::vector<unsigned char>(static_cast<std::size_t>(n) * es, kPoisonFill))
      << "gradient buffer touched although no (separate) gradient was requested";
  EXPECT_TRUE(dy.guards_intact());
  return r;
}

// ---- comparisons ---------------------------------------------------------------------------

void expect_loss_close(const Result& gpu, const Result& ref, const std::string& what) {
  EXPECT_TRUE(validate_tolerance::within_tolerance(validate_tolerance::f32_tensor(gpu.loss),
                                                   validate_tolerance::f32_tensor(ref.loss),
                                                   fusedloss_cli::CompareKind::Loss, DType::Float32))
      << what;
}

void expect_grad_close(const Result& gpu, const Result& ref, DType dt, double term_scale, const std::string& what) {
  ASSERT_EQ(gpu.grad.size(), ref.grad.size()) << what;
  const auto n = static_cast<std::int64_t>(ref.grad.size() / esize(dt));
  EXPECT_TRUE(validate_tolerance::within_tolerance(validate_tolerance::raw_tensor(dt, gpu.grad.data(), n),
                                                   validate_tolerance::raw_tensor(dt, ref.grad.data(), n),
                                                   fusedloss_cli::CompareKind::Grad, dt, term_scale))
      << what;
}

void expect_bitwise(const Result& a, const Result& b, const std::string& what) {
  ASSERT_EQ(a.loss.size(), b.loss.size()) << what;
  EXPECT_EQ(0, std::memcmp(a.loss.data(), b.loss.data(), a.loss.size() * sizeof(float))) << what << ": loss bits differ";
  EXPECT_EQ(a.grad, b.grad) << what << ": gradient bits differ";
  EXPECT_EQ(a.errors, b.errors) << what;
}

std::string describe(const HostData& h, Reduction red, bool weights) {
  std::ostringstream s;
  s << fusedloss::loss_name(h.loss) << (h.pos_col ? "[per-column]" : "") << " " << fusedloss::dtype_name(h.dtype)
    << " n=" << h.n << " red=" << static_cast<int>(red) << " weights=" << weights;
  return s.str();
}

std::vector<Reduction> reductions_for(Loss loss) {
  if (loss == Loss::RMSE) return {Reduction::Mean};
  return {Reduction::None, Reduction::Mean, Reduction::Sum};
}

// ---- the matrix: every loss × reduction × dtype × weights × n ---------------------------------

using MatrixParam = std::tuple<int, DType, std::int64_t>;

class ElementwiseVsCpu : public ::testing::TestWithParam<MatrixParam> {};

TEST_P(ElementwiseVsCpu, LossAndGradientMatchCpu) {
  FL_REQUIRE_DEVICE();
  const Variant& v = kVariants[std::get<0>(GetParam())];
  const DType dt = std::get<1>(GetParam());
  const std::int64_t n_req = std::get<2>(GetParam());
  const HostData h = make_data(v, dt, n_req, 0x5eed0000ull + static_cast<std::uint64_t>(n_req) * 131u +
                                                  static_cast<std::uint64_t>(std::get<0>(GetParam())));
  const bool big = h.n > 1000000;
  for (Reduction red : reductions_for(v.loss)) {
    for (bool weights : {false, true}) {
      // Keep the large size affordable: a representative subset of reduction × weights.
      if (big && v.loss != Loss::RMSE && !((red == Reduction::Mean && weights) || (red == Reduction::None && !weights) ||
                                           (red == Reduction::Sum && !weights)))
        continue;
      const std::string what = describe(h, red, weights);
      SCOPED_TRACE(what);
      const double grad_scale = weights ? 0.5 : 1.0;
      const Result ref = cpu_run(h, red, weights, grad_scale);
      ASSERT_TRUE(ref.status == Status::Success) << "CPU reference failed: " << static_cast<int>(ref.status);
      const Result gpu = gpu_run(h, red, weights, grad_scale);
      ASSERT_TRUE(gpu.status == Status::Success) << static_cast<int>(gpu.status);
      EXPECT_EQ(gpu.errors, 0);
      expect_loss_close(gpu, ref, what);
      expect_grad_close(gpu, ref, dt, term_scale(h, red, weights, grad_scale), what);
      if (big) continue;

      // Misaligned pointers (every pointer offset by one element: the scalar path) give the
      // very same bits as the aligned (vector) path — one mapping, one arithmetic code path.
      expect_bitwise(gpu_run(h, red, weights, grad_scale, misaligned_all()), gpu, what + " misaligned");
      // In-place gradient (grad == input).
      GpuOptions in_place;
      in_place.in_place = true;
      expect_bitwise(gpu_run(h, red, weights, grad_scale, in_place), gpu, what + " in-place");
      // Loss only: no gradient written anywhere, the loss still right.
      GpuOptions no_grad;
      no_grad.with_grad = false;
      const Result loss_only = gpu_run(h, red, weights, grad_scale, no_grad);
      EXPECT_TRUE(loss_only.status == Status::Success);
      expect_loss_close(loss_only, ref, what + " loss only");
    }
  }
}

/// The long case: 2^24 + 3 elements (4097 tiles: blocks loop over tiles, fp32 sums of 10^7 terms).
/// Emulated: 2^22 + 2^18 + 3 (1088 tiles, still more than the 1056 resident blocks).
constexpr std::int64_t kBigN =
    fusedloss_test::gpu_or_emulated((std::int64_t{1} << 24) + 3, (std::int64_t{1} << 22) + (std::int64_t{1} << 18) + 3);

std::string matrix_name(const ::testing::TestParamInfo<MatrixParam>& info) {
  std::string s = kVariants[std::get<0>(info.param)].name;
  s += "_";
  s += fusedloss::dtype_name(std::get<1>(info.param));
  s += "_n" + std::to_string(std::get<2>(info.param));
  return s;
}

INSTANTIATE_TEST_SUITE_P(AllLosses, ElementwiseVsCpu,
                         ::testing::Combine(::testing::Range(0, kNumVariants),
                                            ::testing::Values(DType::Float32, DType::Float16, DType::BFloat16),
                                            ::testing::Values(std::int64_t{1}, std::int64_t{7}, std::int64_t{1000},
                                                              std::int64_t{100003}, kBigN)),
                         matrix_name);

// ---- alignment of each pointer on its own ----------------------------------------------------

TEST(ElementwiseCuda, EachPointerMisalignedAloneGivesSameBits) {
  FL_REQUIRE_DEVICE();
  for (DType dt : {DType::Float32, DType::BFloat16}) {
    const HostData h = make_data(kVariants[4] /*huber*/, dt, 3 * ew::kTileElements + 77, 42);
    const Result aligned = gpu_run(h, Reduction::None, true, 1.0);
    const Result aligned_mean = gpu_run(h, Reduction::Mean, true, 1.0);
    for (int which = 0; which < 5; ++which) {
      GpuOptions o;
      (which == 0 ? o.off_x : which == 1 ? o.off_y : which == 2 ? o.off_w : which == 3 ? o.off_grad : o.off_loss) = 1;
      expect_bitwise(gpu_run(h, Reduction::None, true, 1.0, o), aligned, "none, pointer " + std::to_string(which));
      expect_bitwise(gpu_run(h, Reduction::Mean, true, 1.0, o), aligned_mean, "mean, pointer " + std::to_string(which));
    }
  }
}

// ---- smooth_l1 with beta = 0 (plain L1) ---------------------------------------------------------

TEST(ElementwiseCuda, SmoothL1BetaZeroIsL1) {
  FL_REQUIRE_DEVICE();
  HostData h = make_data(kVariants[5], DType::Float32, 10007, 7);
  h.beta = 0.0;
  for (Reduction red : {Reduction::None, Reduction::Mean}) {
    const Result ref = cpu_run(h, red, false, 1.0);
    const Result gpu = gpu_run(h, red, false, 1.0);
    ASSERT_TRUE(gpu.status == Status::Success);
    expect_loss_close(gpu, ref, "smooth_l1 beta=0");
    expect_grad_close(gpu, ref, DType::Float32, term_scale(h, red, false, 1.0), "smooth_l1 beta=0");
  }
}

// ---- determinism ---------------------------------------------------------------------------------

/// Device-resident outputs of repeated calls.
struct DeviceOutputs {
  DeviceVec<unsigned char> x, y, w, grad, ws, pos;
  DeviceVec<float> loss;
  DeviceVec<std::int64_t> err;
  ElementwiseProblem p;
  LossOutputs out;
  std::size_t ws_bytes = 0;

  DeviceOutputs(const HostData& h, Reduction red, bool weights, double grad_scale)
      : x(h.x), y(h.y), w(weights ? h.w : std::vector<unsigned char>()), grad(h.x.size(), kPoisonFill),
        loss(red == Reduction::None ? static_cast<std::size_t>(h.n) : 1u), err(1, -1) {
    p = make_problem(h, red, grad_scale);
    p.input = x.data();
    p.target = y.data();
    p.weight = weights ? w.data() : nullptr;
    if (h.pos_col) {
      pos.resize(h.pos_weight.size() * sizeof(float));
      FL_CUDA_EXPECT(cudaMemcpy(pos.data(), h.pos_weight.data(), pos.size(),
                                cudaMemcpyHostToDevice));
      p.params.pos_weight_per_column = reinterpret_cast<const float*>(pos.data());
      p.params.columns = h.columns;
    }
    out.loss = loss.data();
    out.grad = grad.data();
    out.error_count = err.data();
    ws_bytes = fusedloss::detail::cuda_workspace_size(p);
    ws.resize(ws_bytes > 0 ? ws_bytes : 1, kPoisonFill);
  }
  void* workspace() { return ws_bytes > 0 ? ws.data() : nullptr; }
  Status run(cudaStream_t stream = nullptr) {
    return fusedloss::detail::cuda_compute(p, out, workspace(), ws_bytes, stream);
  }
  void poison(cudaStream_t stream = nullptr) {
    FL_CUDA_EXPECT(cudaMemsetAsync(grad.data(), kPoisonFill, grad.size(), stream));
    FL_CUDA_EXPECT(cudaMemsetAsync(loss.data(), kPoisonFill, loss.size() * sizeof(float), stream));
    FL_CUDA_EXPECT(cudaMemsetAsync(err.data(), kPoisonFill, sizeof(std::int64_t), stream));
    FL_CUDA_EXPECT(cudaMemsetAsync(workspace(), kPoisonFill, ws.size(), stream));
  }
};

bool device_equal(const DeviceVec<unsigned char>& a, const DeviceVec<unsigned char>& b) {
  return a.size() == b.size() && a.download() == b.download();
}
bool device_equal_bits(const DeviceVec<float>& a, const DeviceVec<float>& b) {
  const std::vector<float> ha = a.download(), hb = b.download();
  return ha.size() == hb.size() && (ha.empty() || std::memcmp(ha.data(), hb.data(), ha.size() * sizeof(float)) == 0);
}

TEST(ElementwiseCuda, HundredRunsAreBitwiseIdentical) {
  FL_REQUIRE_DEVICE();
  struct Case {
    int variant;
    DType dt;
    Reduction red;
  };
  for (const Case c : {Case{0, DType::Float32, Reduction::Mean}, Case{4, DType::BFloat16, Reduction::Sum},
                       Case{11, DType::Float16, Reduction::Mean}, Case{2, DType::Float32, Reduction::Mean}}) {
    const HostData h = make_data(kVariants[c.variant], c.dt, kBigN, 99);
    SCOPED_TRACE(describe(h, c.red, true));
    DeviceOutputs first(h, c.red, true, 1.0), again(h, c.red, true, 1.0);
    ASSERT_TRUE(first.run() == Status::Success);
    for (int rep = 0; rep < fusedloss_test::kRepetitions; ++rep) {
      again.poison();
      ASSERT_TRUE(again.run() == Status::Success);
      FL_CUDA_ASSERT(cudaDeviceSynchronize());
      ASSERT_TRUE(device_equal_bits(first.loss, again.loss)) << "loss differs on repetition " << rep;
      ASSERT_TRUE(device_equal(first.grad, again.grad)) << "gradient differs on repetition " << rep;
    }
  }
}

/// The grid only decides which block processes which tile: forcing other grid sizes through the
/// kernel header's launcher must give the same bits.
template <class Op, class S, bool kW, ew::Mode kMode>
void expect_grid_independent(const HostData& h, Reduction red) {
  DeviceOutputs base(h, red, kW, 1.0);
  ASSERT_TRUE(base.run() == Status::Success);
  for (int grid : {1, 2, 3, 7, 64, 131, 1000, 100000}) {
    DeviceOutputs other(h, red, kW, 1.0);
    other.poison();
    FL_CUDA_ASSERT((ew::enqueue<Op, S, kW, true, kMode, false>(other.p, other.out, other.workspace(), nullptr, grid)));
    FL_CUDA_ASSERT(cudaDeviceSynchronize());
    EXPECT_TRUE(device_equal_bits(base.loss, other.loss)) << "grid " << grid << ": loss differs";
    EXPECT_TRUE(device_equal(base.grad, other.grad)) << "grid " << grid << ": gradient differs";
  }
}

TEST(ElementwiseCuda, ResultDoesNotDependOnGridSize) {
  FL_REQUIRE_DEVICE();
  {
    const HostData h = make_data(kVariants[4] /*huber*/, DType::BFloat16, 1000003, 5);
    expect_grid_independent<fusedloss::detail::ElementwiseOp<Loss::Huber>, __nv_bfloat16, true, ew::Mode::Reduce>(
        h, Reduction::Mean);
  }
  {
    const HostData h = make_data(kVariants[7] /*log_cosh*/, DType::Float32, 777777, 6);
    expect_grid_independent<fusedloss::detail::ElementwiseOp<Loss::LogCosh>, float, false, ew::Mode::Reduce>(
        h, Reduction::Sum);
  }
  {
    const HostData h = make_data(kVariants[10] /*bce*/, DType::Float16, 300001, 8);
    expect_grid_independent<fusedloss::detail::ElementwiseOp<Loss::BCE>, __half, true, ew::Mode::PerElement>(
        h, Reduction::None);
  }
}

// ---- CUDA graph capture -------------------------------------------------------------------------

TEST(ElementwiseCuda, GraphCaptureReplayEqualsDirectCall) {
  FL_REQUIRE_DEVICE();
  cudaStream_t stream = nullptr;
  FL_CUDA_ASSERT(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  struct Case {
    int variant;
    DType dt;
    Reduction red;
    bool weights;
  };
  for (const Case c : {Case{0, DType::Float32, Reduction::Mean, true}, Case{2, DType::BFloat16, Reduction::Mean, true},
                       Case{10, DType::Float16, Reduction::None, false}, Case{12, DType::Float32, Reduction::Sum, true},
                       Case{10, DType::Float32, Reduction::Mean, true}}) {
    HostData h = make_data(kVariants[c.variant], c.dt, 250007, 11);
    if (h.loss == Loss::BCE) {  // some invalid probabilities: the count must be replayed too
      for (std::int64_t i : {std::int64_t{3}, std::int64_t{4097}, h.n - 1}) store_value(h.x.data(), c.dt, i, 1.5f);
    }
    SCOPED_TRACE(describe(h, c.red, c.weights));
    DeviceOutputs direct(h, c.red, c.weights, 2.0), graphed(h, c.red, c.weights, 2.0);
    FL_CUDA_ASSERT(cudaDeviceSynchronize());  // the buffers were filled on the legacy stream
    ASSERT_TRUE(direct.run(stream) == Status::Success);
    FL_CUDA_ASSERT(cudaStreamSynchronize(stream));

    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    FL_CUDA_ASSERT(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    const Status captured = graphed.run(stream);
    FL_CUDA_ASSERT(cudaStreamEndCapture(stream, &graph));
    ASSERT_TRUE(captured == Status::Success);
    FL_CUDA_ASSERT(cudaGraphInstantiate(&exec, graph, 0));
    for (int replay = 0; replay < 2; ++replay) {
      graphed.poison(stream);
      FL_CUDA_ASSERT(cudaGraphLaunch(exec, stream));
      FL_CUDA_ASSERT(cudaStreamSynchronize(stream));
      EXPECT_TRUE(device_equal_bits(direct.loss, graphed.loss)) << "replay " << replay << ": loss differs";
      EXPECT_TRUE(device_equal(direct.grad, graphed.grad)) << "replay " << replay << ": gradient differs";
      const std::int64_t e_direct = direct.err[0], e_graphed = graphed.err[0];
      EXPECT_EQ(e_direct, e_graphed) << "replay " << replay << ": error count differs";
    }
    if (h.loss == Loss::BCE) {
      std::int64_t e = direct.err[0];
      EXPECT_EQ(e, 3);
    }
    FL_CUDA_EXPECT(cudaGraphExecDestroy(exec));
    FL_CUDA_EXPECT(cudaGraphDestroy(graph));
  }
  FL_CUDA_EXPECT(cudaStreamDestroy(stream));
}

// Capturing a configuration's very first call (no warm-up: the occupancy query and lazy module
// loading happen inside the capture). Under ctest every test runs in its own process, so this
// really is the first call there.
TEST(ElementwiseCuda, GraphCaptureOfAFirstCall) {
  FL_REQUIRE_DEVICE();
  cudaStream_t stream = nullptr;
  FL_CUDA_ASSERT(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const HostData h = make_data(kVariants[9] /*squared_hinge*/, DType::BFloat16, 54321, 13);
  DeviceOutputs graphed(h, Reduction::Sum, false, 1.0);
  FL_CUDA_ASSERT(cudaDeviceSynchronize());
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  FL_CUDA_ASSERT(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  const Status captured = graphed.run(stream);
  FL_CUDA_ASSERT(cudaStreamEndCapture(stream, &graph));
  ASSERT_TRUE(captured == Status::Success);
  FL_CUDA_ASSERT(cudaGraphInstantiate(&exec, graph, 0));
  graphed.poison(stream);
  FL_CUDA_ASSERT(cudaGraphLaunch(exec, stream));
  FL_CUDA_ASSERT(cudaStreamSynchronize(stream));
  DeviceOutputs direct(h, Reduction::Sum, false, 1.0);
  ASSERT_TRUE(direct.run() == Status::Success);
  FL_CUDA_ASSERT(cudaDeviceSynchronize());
  EXPECT_TRUE(device_equal_bits(direct.loss, graphed.loss));
  EXPECT_TRUE(device_equal(direct.grad, graphed.grad));
  FL_CUDA_EXPECT(cudaGraphExecDestroy(exec));
  FL_CUDA_EXPECT(cudaGraphDestroy(graph));
  FL_CUDA_EXPECT(cudaStreamDestroy(stream));
}

// ---- BCE invalid probabilities ------------------------------------------------------------------

TEST(ElementwiseCuda, BceBadProbabilitiesAreCountedAndIsolated) {
  FL_REQUIRE_DEVICE();
  for (DType dt : {DType::Float32, DType::Float16}) {
    HostData h = make_data(kVariants[10], dt, 100003, 21);
    const std::int64_t bad_idx[] = {0, 17, 4095, 4096, 50000, 100002};
    const float bad_val[] = {-0.25f, 1.5f, std::nanf(""), -std::numeric_limits<float>::infinity(),
                             std::numeric_limits<float>::infinity(), 2.0f};
    for (int k = 0; k < 6; ++k) store_value(h.x.data(), dt, bad_idx[k], bad_val[k]);
    for (Reduction red : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
      for (bool weights : {false, true}) {
        const std::string what = describe(h, red, weights) + " with bad probabilities";
        SCOPED_TRACE(what);
        const Result ref = cpu_run(h, red, weights, 1.0);
        EXPECT_TRUE(ref.status == Status::InvalidValue);
        EXPECT_EQ(ref.errors, 6);
        const Result gpu = gpu_run(h, red, weights, 1.0);
        ASSERT_TRUE(gpu.status == Status::Success);  // asynchronous path: reported via the counter
        EXPECT_EQ(gpu.errors, 6);
        if (red == Reduction::None) {
          for (std::int64_t i : bad_idx) EXPECT_TRUE(std::isnan(gpu.loss[static_cast<std::size_t>(i)])) << i;
        } else {
          EXPECT_TRUE(std::isnan(gpu.loss[0]));
        }
        for (std::int64_t i : bad_idx) EXPECT_EQ(load_value(gpu.grad.data(), dt, i), 0.0f) << i;
        expect_loss_close(gpu, ref, what);
        expect_grad_close(gpu, ref, dt, term_scale(h, red, weights, 1.0), what);
      }
    }
    // A following call on valid data works and reports no error.
    const HostData good = make_data(kVariants[10], dt, 100003, 22);
    const Result ref = cpu_run(good, Reduction::Mean, false, 1.0);
    const Result gpu = gpu_run(good, Reduction::Mean, false, 1.0);
    ASSERT_TRUE(gpu.status == Status::Success);
    EXPECT_EQ(gpu.errors, 0);
    EXPECT_FALSE(std::isnan(gpu.loss[0]));
    expect_loss_close(gpu, ref, "bce after bad call");
    expect_grad_close(gpu, ref, dt, term_scale(good, Reduction::Mean, false, 1.0), "bce after bad call");
  }
}

// ---- n == 0 -----------------------------------------------------------------------------------------

TEST(ElementwiseCuda, EmptyProblem) {
  FL_REQUIRE_DEVICE();
  for (const Variant& v : kVariants) {
    HostData h = make_data(v, DType::Float32, 0, 1);
    for (Reduction red : reductions_for(v.loss)) {
      SCOPED_TRACE(describe(h, red, false));
      const Result gpu = gpu_run(h, red, false, 1.0);  // poisoned loss: none must leave it alone
      ASSERT_TRUE(gpu.status == Status::Success);
      EXPECT_EQ(gpu.errors, 0);
      if (red == Reduction::Sum) {
        ASSERT_EQ(gpu.loss.size(), 1u);
        EXPECT_EQ(gpu.loss[0], 0.0f);
      } else if (red == Reduction::Mean) {
        ASSERT_EQ(gpu.loss.size(), 1u);
        EXPECT_TRUE(std::isnan(gpu.loss[0]));
      } else {
        EXPECT_TRUE(gpu.loss.empty());
      }
    }
  }
}

// ---- workspace ------------------------------------------------------------------------------------

TEST(ElementwiseCuda, WorkspaceSizeAndTooSmall) {  // host-only: runs without a device
  ElementwiseProblem p;
  p.loss = Loss::MSE;
  p.n = 0;
  p.reduction = Reduction::Mean;
  EXPECT_EQ(fusedloss::detail::cuda_workspace_size(p), 0u);
  p.n = 1;
  EXPECT_GE(fusedloss::detail::cuda_workspace_size(p), sizeof(float));
  p.reduction = Reduction::None;
  EXPECT_EQ(fusedloss::detail::cuda_workspace_size(p), 0u);  // none: nothing to reduce
  p.loss = Loss::BCE;
  EXPECT_GE(fusedloss::detail::cuda_workspace_size(p), sizeof(std::int64_t));  // the error counts
  p.loss = Loss::MSE;
  p.reduction = Reduction::Sum;
  p.n = (std::int64_t{1} << 33) + 5;
  const std::size_t big = fusedloss::detail::cuda_workspace_size(p);
  EXPECT_GE(big, static_cast<std::size_t>(ew::tile_count(p.n)) * sizeof(float));
  EXPECT_EQ(big % 256, 0u);

  // Too small a workspace: refused before anything is enqueued (no device needed).
  p.n = 100000;
  p.reduction = Reduction::Mean;
  float loss = 0.0f;
  LossOutputs out;
  out.loss = &loss;
  p.input = &loss;
  p.target = &loss;
  const std::size_t need = fusedloss::detail::cuda_workspace_size(p);
  ASSERT_GT(need, 0u);
  EXPECT_TRUE(fusedloss::detail::cuda_compute(p, out, nullptr, need, nullptr) == Status::WorkspaceTooSmall);
  alignas(256) static unsigned char fake[256];
  EXPECT_TRUE(fusedloss::detail::cuda_compute(p, out, fake, need - 1, nullptr) == Status::WorkspaceTooSmall);
}

// ---- through the public API -----------------------------------------------------------------------

TEST(ElementwiseCuda, PublicApiCudaBackendMatchesCpuBackend) {
  FL_REQUIRE_DEVICE();
  const HostData h = make_data(kVariants[11], DType::BFloat16, 65537, 3);
  const Result ref = cpu_run(h, Reduction::Mean, true, 1.0);
  DeviceOutputs d(h, Reduction::Mean, true, 1.0);
  fusedloss::ExecutionConfig cfg;
  cfg.backend = fusedloss::Backend::CUDA;
  std::size_t bytes = 0;
  ASSERT_TRUE(fusedloss::workspace_size(d.p, d.out, cfg, &bytes) == Status::Success);
  DeviceVec<unsigned char> ws(bytes > 0 ? bytes : 1);
  cfg.workspace = ws.data();
  cfg.workspace_bytes = bytes;
  ASSERT_TRUE(fusedloss::compute(d.p, d.out, cfg) == Status::Success);
  FL_CUDA_ASSERT(cudaDeviceSynchronize());
  Result gpu;
  const float gpu_loss = d.loss[0];
  gpu.loss = {gpu_loss};
  gpu.grad = d.grad.download();
  expect_loss_close(gpu, ref, "public api");
  expect_grad_close(gpu, ref, DType::BFloat16, term_scale(h, Reduction::Mean, true, 1.0), "public api");
}

// ---- n > 2^31 (fp16) ----------------------------------------------------------------------------
// GPU only: 2^31 elements (13 GB, ~10 minutes) do not fit the emulated device's budget, and the
// elementwise API has no stride through which fewer elements could reach 64-bit offsets. The CPU
// path's large test and review cover the index arithmetic there.
#if !defined(FUSEDLOSS_EMULATED_DEVICE)

__global__ void fill_uniform_half(__half* p, std::int64_t n, std::uint64_t seed, int stream) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    p[i] = __float2half_rn(static_cast<float>(-3.0 + 6.0 * uniform01(seed, stream, i)));
}

struct DeviceMem {
  void* p = nullptr;
  explicit DeviceMem(std::size_t bytes) {
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
      cudaGetLastError();
      p = nullptr;
    }
  }
  ~DeviceMem() { reset(); }
  void reset() {
    if (p != nullptr) cudaFree(p);
    p = nullptr;
  }
  DeviceMem(const DeviceMem&) = delete;
  DeviceMem& operator=(const DeviceMem&) = delete;
};

TEST(ElementwiseCuda, MoreThanTwoToThe31ElementsFp16) {
  FL_REQUIRE_DEVICE();
  const std::int64_t n = (std::int64_t{1} << 31) + 3 * ew::kTileElements + 5;  // last tile partial
  const std::size_t bytes = static_cast<std::size_t>(n) * 2;
  std::size_t free_b = 0, total_b = 0;
  FL_CUDA_ASSERT(cudaMemGetInfo(&free_b, &total_b));
  const std::size_t need = 3 * bytes + (std::size_t{1} << 30);
  if (free_b < need) GTEST_SKIP() << "needs " << (need >> 20) << " MiB of device memory, " << (free_b >> 20) << " free";
  const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0 && static_cast<double>(pages) * page < 3.0 * bytes)
    GTEST_SKIP() << "not enough host memory for the reference";

  DeviceMem dx(bytes), dy(bytes), dg(bytes);
  if (dx.p == nullptr || dy.p == nullptr || dg.p == nullptr) GTEST_SKIP() << "device allocation failed";
  fusedloss::cuda::triple_chevron(4096, 256).doit(fill_uniform_half, static_cast<__half*>(dx.p), n, std::uint64_t{77}, 0);
  fusedloss::cuda::triple_chevron(4096, 256).doit(fill_uniform_half, static_cast<__half*>(dy.p), n, std::uint64_t{77}, 1);
  FL_CUDA_ASSERT(cudaGetLastError());
  FL_CUDA_ASSERT(cudaMemset(dg.p, kPoisonFill, bytes));

  ElementwiseProblem p;
  p.loss = Loss::Huber;
  p.dtype = DType::Float16;
  p.n = n;
  p.input = dx.p;
  p.target = dy.p;
  p.reduction = Reduction::Mean;
  p.grad_scale = static_cast<double>(n);  // gradient factor exactly 1: fp16 gradients of O(1)
  DeviceVec<float> dloss(1, std::nanf(""));
  DeviceVec<std::int64_t> derr(1, -1);
  LossOutputs out;
  out.loss = dloss.data();
  out.grad = dg.p;
  out.error_count = derr.data();
  const std::size_t ws_bytes = fusedloss::detail::cuda_workspace_size(p);
  DeviceVec<unsigned char> ws(ws_bytes, kPoisonFill);
  ASSERT_TRUE(fusedloss::detail::cuda_compute(p, out, ws.data(), ws_bytes, nullptr) ==
              Status::Success);
  FL_CUDA_ASSERT(cudaDeviceSynchronize());
  EXPECT_EQ(static_cast<std::int64_t>(derr[0]), 0);

  // CPU reference of the loss over all n elements.
  std::unique_ptr<std::uint16_t[]> hx(new std::uint16_t[static_cast<std::size_t>(n)]);
  std::unique_ptr<std::uint16_t[]> hy(new std::uint16_t[static_cast<std::size_t>(n)]);
  FL_CUDA_ASSERT(cudaMemcpy(hx.get(), dx.p, bytes, cudaMemcpyDeviceToHost));
  FL_CUDA_ASSERT(cudaMemcpy(hy.get(), dy.p, bytes, cudaMemcpyDeviceToHost));
  {
    ElementwiseProblem hp = p;
    hp.input = hx.get();
    hp.target = hy.get();
    float ref_loss = 0.0f;
    LossOutputs hout;
    hout.loss = &ref_loss;
    ASSERT_TRUE(fusedloss::detail::cpu_compute(hp, hout, cpu_threads()) == Status::Success);
    Result gpu, ref;
    gpu.loss = {static_cast<float>(dloss[0])};
    ref.loss = {ref_loss};
    expect_loss_close(gpu, ref, "n > 2^31 mean");
  }

  // Gradient windows (start, around 2^31, end) against the CPU path on the same windows
  // (reduction sum with factor 1 = mean with grad_scale n).
  const std::int64_t win = std::int64_t{1} << 20;
  for (std::int64_t start : {std::int64_t{0}, (std::int64_t{1} << 31) - win / 2, n - win}) {
    SCOPED_TRACE("window at " + std::to_string(start));
    ElementwiseProblem hp = p;
    hp.n = win;
    hp.input = hx.get() + start;
    hp.target = hy.get() + start;
    hp.reduction = Reduction::Sum;
    hp.grad_scale = 1.0;
    Result ref;
    ref.grad.resize(static_cast<std::size_t>(win) * 2);
    float ref_sum = 0.0f;
    LossOutputs hout;
    hout.loss = &ref_sum;
    hout.grad = ref.grad.data();
    ASSERT_TRUE(fusedloss::detail::cpu_compute(hp, hout, cpu_threads()) == Status::Success);
    Result gpu;
    gpu.grad.resize(ref.grad.size());
    FL_CUDA_ASSERT(cudaMemcpy(gpu.grad.data(), static_cast<const std::uint16_t*>(dg.p) + start, gpu.grad.size(),
                              cudaMemcpyDeviceToHost));
    expect_grad_close(gpu, ref, DType::Float16, 0.0, "n > 2^31 gradient window");  // huber: T = 0
  }

  // Reduction none (loss only) into an [n] float32 buffer, when memory allows: check windows.
  dg.reset();
  DeviceMem dl(static_cast<std::size_t>(n) * sizeof(float));
  if (dl.p == nullptr) return;  // not enough memory for this part: the rest was checked
  p.reduction = Reduction::None;
  out.loss = static_cast<float*>(dl.p);
  out.grad = nullptr;
  ASSERT_EQ(fusedloss::detail::cuda_workspace_size(p), 0u);
  ASSERT_TRUE(fusedloss::detail::cuda_compute(p, out, nullptr, 0, nullptr) == Status::Success);
  FL_CUDA_ASSERT(cudaDeviceSynchronize());
  for (std::int64_t start : {std::int64_t{0}, (std::int64_t{1} << 31) - win / 2, n - win}) {
    SCOPED_TRACE("none window at " + std::to_string(start));
    ElementwiseProblem hp = p;
    hp.n = win;
    hp.input = hx.get() + start;
    hp.target = hy.get() + start;
    Result ref;
    ref.loss.resize(static_cast<std::size_t>(win));
    LossOutputs hout;
    hout.loss = ref.loss.data();
    ASSERT_TRUE(fusedloss::detail::cpu_compute(hp, hout, cpu_threads()) == Status::Success);
    Result gpu;
    gpu.loss.resize(ref.loss.size());
    FL_CUDA_ASSERT(cudaMemcpy(gpu.loss.data(), static_cast<const float*>(dl.p) + start, gpu.loss.size() * sizeof(float),
                              cudaMemcpyDeviceToHost));
    expect_loss_close(gpu, ref, "n > 2^31 none window");
  }
}
#endif  // !FUSEDLOSS_EMULATED_DEVICE

}  // namespace
