// GPU reliability suite (issue 6): the invalid-call table on Backend::CUDA, N = 0 without a kernel
// launch, bad labels under the error counter followed by a clean call, 64-bit indexing beyond 2^31
// and 2^32 elements, determinism (repeats, streams, workspace source), 4 host threads × 2 streams,
// CUDA-graph capture + replay of every loss family, in-place == out-of-place.
//
// Every test GTEST_SKIP()s without a device. The large-index tests also skip when the device has
// too little free memory. FUSEDLOSS_RELIABILITY_REPEATS (default 100) sets the repeat count of the
// determinism test (tests/sanitize.sh lowers it: the sanitizers are slow).
//
// Reference results come from the CPU path (Backend::CPU on host copies of the same dtype-rounded
// data), compared under the one tolerance rule of `fusedloss validate` (cli/compare.hpp); results
// that must be bit-identical (repeats, streams, threads, graphs, in-place) are compared bitwise.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "fusedloss/cuda/device_common.cuh"
#include "fusedloss/fusedloss.hpp"
#include "cuda/emulated_scale.hpp"
#include "cuda/validate_tolerance.hpp"
#include "reliability/invalid_calls.hpp"
#include "reliability/reliability_cases.hpp"

namespace {

using fusedloss::Backend;
using fusedloss::DType;
using fusedloss::Loss;
using fusedloss::Reduction;
using fusedloss::Status;
using reltest::Buf;
using reltest::ElemCase;
using reltest::RowCase;
using reltest::RowKind;

bool device_present() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return count > 0 && fusedloss::cuda_available();
}

#define REL_REQUIRE_DEVICE()                                                  \
  do {                                                                        \
    if (!device_present()) GTEST_SKIP() << "no CUDA device present";          \
  } while (0)
#define REL_CUDA_ASSERT(expr) ASSERT_EQ(cudaSuccess, (expr)) << #expr
#define REL_CUDA_EXPECT(expr) EXPECT_EQ(cudaSuccess, (expr)) << #expr

int repeats() {
  if (const char* s = std::getenv("FUSEDLOSS_RELIABILITY_REPEATS")) {
    const int v = std::atoi(s);
    if (v >= 2) return v;
  }
  return fusedloss_test::kRepetitions;
}

// ---- RAII device memory and streams ----------------------------------------------------------------

struct DevMem {
  void* ptr = nullptr;
  std::size_t bytes = 0;
  DevMem() = default;
  explicit DevMem(std::size_t n) : bytes(n) {
    if (n > 0 && cudaMalloc(&ptr, n) != cudaSuccess) {
      cudaGetLastError();
      ptr = nullptr;
      bytes = 0;
    }
  }
  DevMem(const DevMem&) = delete;
  DevMem& operator=(const DevMem&) = delete;
  ~DevMem() {
    if (ptr != nullptr) cudaFree(ptr);
  }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr);
  }
  unsigned char* bytes_ptr() const { return static_cast<unsigned char*>(ptr); }
};
using DevPtr = std::shared_ptr<DevMem>;

DevPtr dev_copy(const void* host, std::size_t bytes) {
  auto d = std::make_shared<DevMem>(std::max<std::size_t>(bytes, 1));
  if (d->ptr != nullptr && bytes > 0) cudaMemcpy(d->ptr, host, bytes, cudaMemcpyHostToDevice);
  return d;
}

struct Stream {
  cudaStream_t s = nullptr;
  Stream() { cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() {
    if (s != nullptr) cudaStreamDestroy(s);
  }
};

std::vector<unsigned char> download(const void* dev, std::size_t bytes) {
  std::vector<unsigned char> h(bytes);
  if (bytes > 0) cudaMemcpy(h.data(), dev, bytes, cudaMemcpyDeviceToHost);
  return h;
}

// ---- a problem whose data lives on the device -----------------------------------------------------

/// One call's inputs on the device (the problem's pointers point into `owned`), plus its shape.
struct DevCall {
  std::string name;
  bool rowwise = false;
  fusedloss::ElementwiseProblem ep{};
  fusedloss::RowwiseProblem rp{};
  std::vector<DevPtr> owned;
  std::size_t loss_count = 1, grad_bytes = 0, lse_count = 0;
  DType dtype = DType::Float32;
};

DevCall to_device(const ElemCase& c) {
  DevCall d;
  d.name = c.tag();
  d.ep = c.problem();
  d.dtype = c.dtype;
  const std::size_t bytes = static_cast<std::size_t>(c.n) * fusedloss::dtype_size(c.dtype);
  auto x = dev_copy(c.x.data(), bytes), y = dev_copy(c.y.data(), bytes);
  d.owned = {x, y};
  d.ep.input = c.n > 0 ? x->ptr : nullptr;
  d.ep.target = c.n > 0 ? y->ptr : nullptr;
  if (c.w.count > 0) {
    auto w = dev_copy(c.w.data(), bytes);
    d.owned.push_back(w);
    d.ep.weight = w->ptr;
  }
  if (!c.pos_col.empty()) {
    auto pc = dev_copy(c.pos_col.data(), c.pos_col.size() * 4);
    d.owned.push_back(pc);
    d.ep.params.pos_weight_per_column = pc->as<float>();
  }
  d.loss_count = static_cast<std::size_t>(reltest::loss_count(d.ep));
  d.grad_bytes = bytes;
  return d;
}

DevCall to_device(RowCase& c) {
  DevCall d;
  d.name = c.tag();
  d.rowwise = true;
  d.rp = c.problem();  // builds the host label buffer in its dtype
  d.dtype = c.dtype;
  const std::size_t bytes = static_cast<std::size_t>(c.rows * c.stride) * fusedloss::dtype_size(c.dtype);
  auto in = dev_copy(c.input.data(), bytes);
  d.owned.push_back(in);
  d.rp.input = c.rows > 0 ? in->ptr : nullptr;
  if (d.rp.target != nullptr) {
    auto t = dev_copy(c.target.data(), bytes);
    d.owned.push_back(t);
    d.rp.target = t->ptr;
  }
  if (d.rp.labels != nullptr) {
    auto l = dev_copy(d.rp.labels, static_cast<std::size_t>(c.rows) * fusedloss::dtype_size(c.label_dtype));
    d.owned.push_back(l);
    d.rp.labels = l->ptr;
  }
  if (!c.class_weight.empty()) {
    auto w = dev_copy(c.class_weight.data(), c.class_weight.size() * 4);
    d.owned.push_back(w);
    d.rp.class_weight = w->as<float>();
  }
  d.loss_count = static_cast<std::size_t>(reltest::loss_count(d.rp));
  d.grad_bytes = bytes;
  d.lse_count = (c.kind == RowKind::CE || c.kind == RowKind::CESoft) ? static_cast<std::size_t>(c.rows) : 0;
  return d;
}

/// One set of device outputs (and a workspace) for a DevCall.
struct DevOut {
  DevPtr loss, grad, lse, err, ws;
  std::size_t ws_bytes = 0;
  fusedloss::LossOutputs out{};
};

constexpr unsigned char kPoison = 0x5A;

DevOut make_outputs(const DevCall& c, bool with_grad = true) {
  DevOut o;
  o.loss = std::make_shared<DevMem>(std::max<std::size_t>(c.loss_count, 1) * 4);
  o.err = std::make_shared<DevMem>(8);
  o.out.loss = o.loss->as<float>();
  o.out.error_count = o.err->as<std::int64_t>();
  if (with_grad && c.grad_bytes > 0) {
    o.grad = std::make_shared<DevMem>(c.grad_bytes);
    o.out.grad = o.grad->ptr;
  }
  if (c.lse_count > 0) {
    o.lse = std::make_shared<DevMem>(c.lse_count * 4);
    o.out.lse = o.lse->as<float>();
  }
  fusedloss::ExecutionConfig cfg;
  cfg.backend = Backend::CUDA;
  std::size_t bytes = 0;
  const Status s = c.rowwise ? fusedloss::workspace_size(c.rp, o.out, cfg, &bytes)
                             : fusedloss::workspace_size(c.ep, o.out, cfg, &bytes);
  if (s == Status::Success && bytes > 0) {
    o.ws = std::make_shared<DevMem>(bytes);
    o.ws_bytes = bytes;
  }
  for (const DevPtr& p : {o.loss, o.grad, o.lse, o.err})
    if (p) cudaMemset(p->ptr, kPoison, p->bytes);
  cudaDeviceSynchronize();
  return o;
}

/// Re-sizes the workspace for the outputs as they are now (e.g. after pointing grad at the input).
void refresh_workspace(const DevCall& c, DevOut& o) {
  fusedloss::ExecutionConfig cfg;
  cfg.backend = Backend::CUDA;
  std::size_t bytes = 0;
  const Status s = c.rowwise ? fusedloss::workspace_size(c.rp, o.out, cfg, &bytes)
                             : fusedloss::workspace_size(c.ep, o.out, cfg, &bytes);
  o.ws.reset();
  o.ws_bytes = 0;
  if (s == Status::Success && bytes > 0) {
    o.ws = std::make_shared<DevMem>(bytes);
    o.ws_bytes = bytes;
  }
}

Status launch(const DevCall& c, const DevOut& o, cudaStream_t stream) {
  fusedloss::ExecutionConfig cfg;
  cfg.backend = Backend::CUDA;
  cfg.stream = stream;
  cfg.workspace = o.ws ? o.ws->ptr : nullptr;
  cfg.workspace_bytes = o.ws_bytes;
  return c.rowwise ? fusedloss::compute(c.rp, o.out, cfg) : fusedloss::compute(c.ep, o.out, cfg);
}

/// Everything a call wrote, as host bytes.
struct Result {
  std::vector<unsigned char> loss, grad, lse;
  std::int64_t errors = -1;
  bool operator==(const Result& o) const {
    return loss == o.loss && grad == o.grad && lse == o.lse && errors == o.errors;
  }
  float loss_at(std::size_t i) const {
    float f;
    std::memcpy(&f, loss.data() + 4 * i, 4);
    return f;
  }
};

Result fetch(const DevOut& o) {
  cudaDeviceSynchronize();
  Result r;
  r.loss = download(o.loss->ptr, o.loss->bytes);
  if (o.grad) r.grad = download(o.grad->ptr, o.grad->bytes);
  if (o.lse) r.lse = download(o.lse->ptr, o.lse->bytes);
  std::memcpy(&r.errors, download(o.err->ptr, 8).data(), 8);
  return r;
}

// ---- workloads: every loss family, several tiles / blocks each ------------------------------------

struct Workload {
  std::shared_ptr<ElemCase> e;
  std::shared_ptr<RowCase> r;
  DevCall dev;
};

std::vector<Workload> make_workloads() {
  using reltest::random_buf;
  std::vector<Workload> w;
  auto add_e = [&](std::shared_ptr<ElemCase> c) {
    Workload k;
    k.e = c;
    k.dev = to_device(*c);
    w.push_back(std::move(k));
  };
  auto add_r = [&](std::shared_ptr<RowCase> c) {
    Workload k;
    k.r = c;
    k.dev = to_device(*c);
    w.push_back(std::move(k));
  };
  {
    auto c = std::make_shared<RowCase>(RowKind::CE, DType::BFloat16, 333, 2049, 2056);
    c->input = random_buf(c->dtype, c->rows * c->stride, -8, 8, 501);
    for (std::int64_t n = 0; n < c->rows; ++n) c->labels[n] = n % 13 == 0 ? -100 : (n * 97) % c->classes;
    c->class_weight.assign(c->classes, 1.0f);
    c->class_weight[3] = 0.25f;
    c->params.label_smoothing = 0.1;
    c->params.z_loss = 1e-4;
    c->params.softcap = 20.0;
    c->reduction = Reduction::Mean;
    add_r(c);
  }
  {
    auto c = std::make_shared<RowCase>(RowKind::CESoft, DType::Float32, 200, 1000);
    c->input = random_buf(c->dtype, c->rows * c->stride, -5, 5, 502);
    c->target = random_buf(c->dtype, c->rows * c->stride, 0, 0.002, 503);
    c->reduction = Reduction::Sum;
    add_r(c);
  }
  {
    auto c = std::make_shared<RowCase>(RowKind::NLL, DType::Float16, 4000, 37);
    c->input = random_buf(c->dtype, c->rows * c->stride, -6, -0.01, 504);
    for (std::int64_t n = 0; n < c->rows; ++n) c->labels[n] = n % 7 == 0 ? -100 : (n * 5) % c->classes;
    c->label_dtype = DType::Int32;
    c->reduction = Reduction::Mean;
    add_r(c);
  }
  {
    auto c = std::make_shared<RowCase>(RowKind::KL, DType::Float32, 300, 513);
    c->input = random_buf(c->dtype, c->rows * c->stride, -7, -0.01, 505);
    c->target = random_buf(c->dtype, c->rows * c->stride, 0, 0.004, 506);
    c->reduction = Reduction::BatchMean;
    add_r(c);
  }
  {
    auto c = std::make_shared<RowCase>(RowKind::KLLogits, DType::Float16, 257, 3001);
    c->input = random_buf(c->dtype, c->rows * c->stride, -5, 5, 507);
    c->target = random_buf(c->dtype, c->rows * c->stride, -5, 5, 508);
    c->params.temperature = 2.0;
    add_r(c);
  }
  {
    auto c = std::make_shared<ElemCase>(Loss::Huber, DType::BFloat16, 1000003);
    c->x = random_buf(c->dtype, c->n, -3, 3, 509);
    c->y = random_buf(c->dtype, c->n, -3, 3, 510);
    c->w = random_buf(c->dtype, c->n, 0, 2, 511);
    c->reduction = Reduction::Mean;
    add_e(c);
  }
  {
    auto c = std::make_shared<ElemCase>(Loss::RMSE, DType::Float32, 777777);
    c->x = random_buf(c->dtype, c->n, -2, 2, 512);
    c->y = random_buf(c->dtype, c->n, -2, 2, 513);
    add_e(c);
  }
  {
    auto c = std::make_shared<ElemCase>(Loss::BCEWithLogits, DType::Float16, 7 * 99999);
    c->x = random_buf(c->dtype, c->n, -8, 8, 514);
    c->y = random_buf(c->dtype, c->n, 0, 1, 515);
    c->pos_col = {0.5f, 1.f, 2.f, 3.f, 0.25f, 1.5f, 4.f};
    c->reduction = Reduction::Sum;
    add_e(c);
  }
  {
    auto c = std::make_shared<ElemCase>(Loss::LogCosh, DType::Float32, 123457);
    c->x = random_buf(c->dtype, c->n, -30, 30, 516);
    c->y = random_buf(c->dtype, c->n, -30, 30, 517);
    c->reduction = Reduction::None;
    add_e(c);
  }
  return w;
}

// =====================================================================================================
// 1. The invalid-call table on Backend::CUDA (device arena): right status, nothing written, no
//    sticky CUDA error; plus the workspace rules (too small, missing, misaligned).
// =====================================================================================================
struct DeviceArena {
  DevMem mem{reliability::Arena::kBytes};
  reliability::Arena arena;
  std::vector<unsigned char> image = reliability::Arena::initial_image();
  DeviceArena() { arena.base = mem.bytes_ptr(); }
  void reset() {
    cudaMemcpy(mem.ptr, image.data(), image.size(), cudaMemcpyHostToDevice);
    cudaDeviceSynchronize();
  }
  bool untouched() {
    cudaDeviceSynchronize();
    return download(mem.ptr, image.size()) == image;
  }
};

Status call_ws(const reliability::Call& c, std::size_t* b) {
  return c.rowwise ? fusedloss::workspace_size(c.rp, c.out, c.cfg, b) : fusedloss::workspace_size(c.ep, c.out, c.cfg, b);
}
Status call_compute(const reliability::Call& c) {
  return c.rowwise ? fusedloss::compute(c.rp, c.out, c.cfg) : fusedloss::compute(c.ep, c.out, c.cfg);
}
Status call_sync(const reliability::Call& c) {
  return c.rowwise ? fusedloss::compute_sync(c.rp, c.out, c.cfg) : fusedloss::compute_sync(c.ep, c.out, c.cfg);
}

TEST(ReliabilityCuda, InvalidCallTableNothingWritten) {
  REL_REQUIRE_DEVICE();
  DeviceArena d;
  ASSERT_NE(d.mem.ptr, nullptr);
  std::vector<float> host_weights(256, 1.0f);
  int tried = 0;
  for (Backend backend : {Backend::CUDA, Backend::Auto}) {
    const auto calls = reliability::invalid_calls(d.arena, backend, /*device_arena=*/true, host_weights.data());
    ASSERT_GE(calls.size(), 60u);
    for (const reliability::Call& c : calls) {
      SCOPED_TRACE(std::string(fusedloss::backend_name(backend)) + " | " + c.name);
      d.reset();
      std::size_t bytes = 0xC0FFEE;
      const Status ws = call_ws(c, &bytes);
      EXPECT_EQ(ws, c.expected_workspace) << fusedloss::status_string(ws);
      if (ws != Status::Success) {
        EXPECT_EQ(bytes, 0xC0FFEEu);
      }
      if (ws == Status::Success && c.expected != Status::Success) {
        ADD_FAILURE() << "accepted by validation; compute() not attempted";
        continue;
      }
      EXPECT_EQ(call_compute(c), c.expected);
      EXPECT_TRUE(d.untouched()) << "compute() wrote into the arena";
      EXPECT_EQ(call_sync(c), c.expected);
      EXPECT_TRUE(d.untouched()) << "compute_sync() wrote into the arena";
      EXPECT_EQ(cudaGetLastError(), cudaSuccess);
      tried += 3;
    }
  }
  RecordProperty("invalid_calls_tried", tried);
  std::printf("[ reliability ] %d invalid calls tried on the CUDA path\n", tried);
}

TEST(ReliabilityCuda, TableBaseCallsSucceedAndWorkspaceRules) {
  REL_REQUIRE_DEVICE();
  DeviceArena d;
  ASSERT_NE(d.mem.ptr, nullptr);
  int workspace_cases = 0;
  for (const reliability::Call& base : reliability::valid_calls(d.arena, Backend::CUDA)) {
    SCOPED_TRACE(base.name);
    d.reset();
    std::size_t need = 0;
    ASSERT_EQ(call_ws(base, &need), Status::Success);
    DevMem ws(need + 512);
    reliability::Call c = base;
    c.cfg.workspace = ws.ptr;
    c.cfg.workspace_bytes = need;
    EXPECT_EQ(call_compute(c), Status::Success);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_FALSE(d.untouched()) << "a valid call wrote nothing";
    // Misaligned workspace (even when none is needed): InvalidArgument, nothing written.
    d.reset();
    c.cfg.workspace = ws.bytes_ptr() + 8;
    c.cfg.workspace_bytes = need + 256;
    EXPECT_EQ(call_compute(c), Status::InvalidArgument);
    EXPECT_TRUE(d.untouched());
    ++workspace_cases;
    if (need == 0) continue;
    // Too small / missing: WorkspaceTooSmall, nothing written; workspace_size itself succeeds.
    d.reset();
    c.cfg.workspace = ws.ptr;
    c.cfg.workspace_bytes = need - 1;
    EXPECT_EQ(call_compute(c), Status::WorkspaceTooSmall);
    EXPECT_TRUE(d.untouched());
    c.cfg.workspace = nullptr;
    c.cfg.workspace_bytes = need;
    EXPECT_EQ(call_compute(c), Status::WorkspaceTooSmall);
    EXPECT_TRUE(d.untouched());
    // ... unless a stream-ordered allocation is allowed.
    c.cfg.allow_stream_ordered_alloc = true;
    EXPECT_EQ(call_compute(c), Status::Success);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    workspace_cases += 2;
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  RecordProperty("workspace_cases", workspace_cases);
}

// =====================================================================================================
// 2. N = 0: the documented result (sum 0, mean/batchmean NaN, none nothing) and no kernel launch,
//    checked by capturing the call into a CUDA graph and counting its kernel nodes.
// =====================================================================================================
struct CaptureCount {
  std::size_t nodes = 0, kernels = 0;
};

/// Captures `enqueue(stream)` into a graph; returns its node counts, replays it once, synchronises.
template <class F>
::testing::AssertionResult capture_and_replay(cudaStream_t stream, F&& enqueue, CaptureCount* count,
                                              Status* status) {
  cudaGraph_t graph = nullptr;
  if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) != cudaSuccess)
    return ::testing::AssertionFailure() << "begin capture";
  *status = enqueue(stream);
  const cudaError_t end = cudaStreamEndCapture(stream, &graph);
  if (end != cudaSuccess || graph == nullptr)
    return ::testing::AssertionFailure() << "end capture: " << cudaGetErrorString(end);
  std::size_t n = 0;
  cudaGraphGetNodes(graph, nullptr, &n);
  std::vector<cudaGraphNode_t> nodes(n);
  if (n > 0) cudaGraphGetNodes(graph, nodes.data(), &n);
  count->nodes = n;
  count->kernels = 0;
  for (cudaGraphNode_t node : nodes) {
    cudaGraphNodeType type;
    if (cudaGraphNodeGetType(node, &type) == cudaSuccess && type == cudaGraphNodeTypeKernel) ++count->kernels;
  }
  if (n > 0) {
    cudaGraphExec_t exec = nullptr;
    if (cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) {
      cudaGraphDestroy(graph);
      return ::testing::AssertionFailure() << "instantiate";
    }
    cudaGraphLaunch(exec, stream);
    cudaStreamSynchronize(stream);
    cudaGraphExecDestroy(exec);
  }
  cudaGraphDestroy(graph);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return ::testing::AssertionFailure() << cudaGetErrorString(e);
  return ::testing::AssertionSuccess();
}

TEST(ReliabilityCuda, EmptyProblemsNoKernelLaunch) {
  REL_REQUIRE_DEVICE();
  Stream stream;
  DevMem loss(16), grad(64), lse(16), err(8);
  const std::vector<unsigned char> poison(64, kPoison);
  int calls = 0;
  auto check = [&](bool rowwise, const fusedloss::ElementwiseProblem& ep, const fusedloss::RowwiseProblem& rp,
                   bool with_lse, Reduction resolved, const std::string& what) {
    SCOPED_TRACE(what);
    cudaMemset(loss.ptr, kPoison, 16);
    cudaMemset(grad.ptr, kPoison, 64);
    cudaMemset(lse.ptr, kPoison, 16);
    cudaMemset(err.ptr, 0x7F, 8);
    cudaDeviceSynchronize();
    fusedloss::LossOutputs out;
    out.loss = loss.as<float>();
    out.grad = grad.ptr;
    out.error_count = err.as<std::int64_t>();
    if (with_lse) out.lse = lse.as<float>();
    fusedloss::ExecutionConfig cfg;
    cfg.backend = Backend::CUDA;
    std::size_t need = 0;
    ASSERT_EQ(rowwise ? fusedloss::workspace_size(rp, out, cfg, &need) : fusedloss::workspace_size(ep, out, cfg, &need),
              Status::Success);
    DevMem ws(need);
    cfg.workspace = ws.ptr;
    cfg.workspace_bytes = need;
    CaptureCount count;
    Status st = Status::CudaError;
    ASSERT_TRUE(capture_and_replay(
        stream.s,
        [&](cudaStream_t s) {
          cfg.stream = s;
          return rowwise ? fusedloss::compute(rp, out, cfg) : fusedloss::compute(ep, out, cfg);
        },
        &count, &st));
    ASSERT_EQ(st, Status::Success);
    EXPECT_EQ(count.kernels, 0u) << "N = 0 launched " << count.kernels << " kernel(s) (" << count.nodes
                                 << " graph nodes)";
    std::int64_t errors = -1;
    std::memcpy(&errors, download(err.ptr, 8).data(), 8);
    EXPECT_EQ(errors, 0);
    EXPECT_EQ(download(grad.ptr, 64), poison) << "grad written for N = 0";
    EXPECT_EQ(download(lse.ptr, 16), std::vector<unsigned char>(16, kPoison)) << "lse written for N = 0";
    const std::vector<unsigned char> l = download(loss.ptr, 16);
    float v;
    std::memcpy(&v, l.data(), 4);
    if (resolved == Reduction::None) {
      EXPECT_EQ(l, std::vector<unsigned char>(16, kPoison));
    } else if (resolved == Reduction::Sum) {
      EXPECT_EQ(v, 0.0f);
    } else {
      EXPECT_TRUE(std::isnan(v)) << v;
    }
    ++calls;
  };
  for (Loss l : reliability::elementwise_losses())
    for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum, Reduction::Default}) {
      if (l == Loss::RMSE && (r == Reduction::None || r == Reduction::Sum)) continue;
      fusedloss::ElementwiseProblem p;
      p.loss = l;
      p.dtype = DType::Float16;
      p.n = 0;
      p.reduction = r;
      check(false, p, {}, false, r == Reduction::Default ? Reduction::Mean : r,
            std::string(fusedloss::loss_name(l)) + "/" + reltest::red_tag(r));
    }
  for (reliability::RowKind k : reliability::row_kinds()) {
    const Loss loss = k == reliability::RowKind::NLL           ? Loss::NLL
                      : k == reliability::RowKind::KLDiv       ? Loss::KLDiv
                      : k == reliability::RowKind::KLDivLogits ? Loss::KLDivLogits
                                                               : Loss::CrossEntropy;
    const bool kl = loss == Loss::KLDiv || loss == Loss::KLDivLogits;
    for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum, Reduction::BatchMean, Reduction::Default}) {
      if (r == Reduction::BatchMean && !kl) continue;
      fusedloss::RowwiseProblem p;
      p.loss = loss;
      p.dtype = DType::BFloat16;
      p.rows = 0;
      p.classes = 50257;
      p.reduction = r;
      const Reduction resolved =
          r == Reduction::Default ? (loss == Loss::KLDivLogits ? Reduction::BatchMean : Reduction::Mean) : r;
      check(true, {}, p, loss == Loss::CrossEntropy, resolved,
            std::string(reliability::row_kind_tag(k)) + "/" + reltest::red_tag(r));
    }
  }
  RecordProperty("calls", calls);
}

// =====================================================================================================
// 4. Out-of-range labels / invalid BCE probabilities under the error counter: counted, loss NaN and
//    gradient 0 in that row, the rest right; then the next call on the same context is clean.
//    (Run under compute-sanitizer memcheck by tests/sanitize.sh: no out-of-bounds access.)
// =====================================================================================================
/// T of cli/compare.hpp for a case (its host problem: labels and class weights readable).
double term_scale(ElemCase& c) { return fusedloss_cli::elementwise_term_scale(c.problem()); }
double term_scale(RowCase& c) { return fusedloss_cli::rowwise_term_scale(c.problem()); }

/// The device result against the CPU path under cli/compare.hpp's rule: the loss, and the gradient
/// (row padding included: poison on both sides) with the problem's term scale T.
void expect_close_to_cpu(const DevCall& dev, const Result& got, const reltest::Outcome& cpu, double terms) {
  using validate_tolerance::f32_tensor;
  using validate_tolerance::raw_tensor;
  using validate_tolerance::within_tolerance;
  const auto count = static_cast<std::int64_t>(cpu.loss.size());
  ASSERT_EQ(got.loss.size(), cpu.loss.size() * 4);
  EXPECT_TRUE(within_tolerance(raw_tensor(DType::Float32, got.loss.data(), count), f32_tensor(cpu.loss),
                               fusedloss_cli::CompareKind::Loss, dev.dtype))
      << dev.name;
  ASSERT_EQ(got.grad.size(), dev.grad_bytes);
  ASSERT_EQ(cpu.grad.bytes(), dev.grad_bytes);
  const auto elems = static_cast<std::int64_t>(dev.grad_bytes / fusedloss::dtype_size(dev.dtype));
  EXPECT_TRUE(within_tolerance(raw_tensor(dev.dtype, got.grad.data(), elems), raw_tensor(dev.dtype, cpu.grad.data(), elems),
                               fusedloss_cli::CompareKind::Grad, dev.dtype, terms))
      << dev.name;
}

TEST(ReliabilityCuda, BadLabelsCountedThenNextCallClean) {
  REL_REQUIRE_DEVICE();
  Stream stream;
  const std::int64_t C = 1000;
  // −1 on the first row and C on the last: an unchecked read z[n·C + y] would land one element
  // outside the allocation, where compute-sanitizer memcheck (tests/sanitize.sh) sees it.
  const std::vector<std::int64_t> labels = {-1,   C,  0,   3, 1000000, std::numeric_limits<std::int64_t>::min(),
                                            -100, 999, std::numeric_limits<std::int64_t>::max(), -101, 2, C};
  const std::int64_t N = static_cast<std::int64_t>(labels.size());
  for (RowKind k : {RowKind::CE, RowKind::NLL})
    for (DType ld : {DType::Int32, DType::Int64})
      for (Reduction r : {Reduction::None, Reduction::Mean}) {
        RowCase c(k, DType::Float32, N, C);
        c.input = reltest::random_buf(DType::Float32, N * C, -3, 3, 601);
        c.labels = labels;
        if (ld == DType::Int32)
          for (auto& y : c.labels) y = static_cast<std::int32_t>(std::max<std::int64_t>(
                                       std::min<std::int64_t>(y, INT32_MAX), INT32_MIN));
        c.label_dtype = ld;
        c.reduction = r;
        SCOPED_TRACE(c.tag() + " labels " + reltest::dtype_tag(ld));
        const reltest::Outcome cpu = reltest::run(c.problem(), true, k == RowKind::CE);
        ASSERT_EQ(cpu.status, Status::InvalidValue);
        DevCall dev = to_device(c);
        DevOut o = make_outputs(dev);
        ASSERT_EQ(launch(dev, o, stream.s), Status::Success);  // asynchronous: reported through the counter
        REL_CUDA_ASSERT(cudaStreamSynchronize(stream.s));
        const Result got = fetch(o);
        EXPECT_EQ(got.errors, cpu.errors);
        expect_close_to_cpu(dev, got, cpu, term_scale(c));
        // compute_sync turns the count into InvalidValue.
        fusedloss::ExecutionConfig cfg;
        cfg.backend = Backend::CUDA;
        cfg.stream = stream.s;
        EXPECT_EQ(fusedloss::compute_sync(dev.rp, o.out, cfg), Status::InvalidValue);
        // Same context, next call with valid labels: clean.
        for (auto& y : c.labels)
          if (!(y == -100 || (y >= 0 && y < C))) y = 7;
        const reltest::Outcome cpu2 = reltest::run(c.problem(), true, k == RowKind::CE);
        DevCall dev2 = to_device(c);
        DevOut o2 = make_outputs(dev2);
        EXPECT_EQ(launch(dev2, o2, stream.s), Status::Success);
        const Result got2 = fetch(o2);
        EXPECT_EQ(got2.errors, 0);
        expect_close_to_cpu(dev2, got2, cpu2, term_scale(c));
        EXPECT_EQ(fusedloss::compute_sync(dev2.rp, o2.out, cfg), Status::Success);
        EXPECT_EQ(cudaGetLastError(), cudaSuccess);
      }
  // BCE probabilities outside [0, 1].
  ElemCase b(Loss::BCE, DType::Float16, 20000);
  b.x = reltest::random_buf(DType::Float16, b.n, 0.01, 0.99, 602);
  b.y = reltest::random_buf(DType::Float16, b.n, 0, 1, 603);
  const double bad[] = {-0.5, 1.5, reltest::kNaN, reltest::kInf, -reltest::kInf};
  for (int i = 0; i < 5; ++i) b.x.set(1 + i * 4001, bad[i]);
  b.reduction = Reduction::None;
  const reltest::Outcome cpu = reltest::run(b.problem());
  ASSERT_EQ(cpu.errors, 5);
  DevCall dev = to_device(b);
  DevOut o = make_outputs(dev);
  ASSERT_EQ(launch(dev, o, stream.s), Status::Success);
  const Result got = fetch(o);
  EXPECT_EQ(got.errors, 5);
  expect_close_to_cpu(dev, got, cpu, term_scale(b));
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// =====================================================================================================
// 10. 64-bit indexing: N·C ≥ 2^31 + 1 and ≥ 2^32 + 1 elements; the loss against a float64 reference
//     built from the CPU path, the last rows (and the rows around 2^31 / 2^32) against the CPU path.
// =====================================================================================================
// GPU only: 2^31..2^32 elements do not fit the emulated device's budget (memory and time); there
// RowwiseCuda.RowOffsetsBeyond2Pow32ThroughTheRowStride reaches 64-bit row offsets with 3 rows.
#if !defined(FUSEDLOSS_EMULATED_DEVICE)
__global__ void fill_elementwise(__half* x, __half* y, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    x[i] = __float2half_rn(static_cast<float>(i % 1021) * (1.0f / 512.0f) - 1.0f);
    y[i] = __float2half_rn(static_cast<float>(i % 1019) * (1.0f / 256.0f) - 2.0f);
  }
}
double host_x(std::int64_t i) { return static_cast<double>(i % 1021) / 512.0 - 1.0; }
double host_y(std::int64_t i) { return static_cast<double>(i % 1019) / 256.0 - 2.0; }

__global__ void fill_rowwise(__half* z, std::int64_t* labels, std::int64_t rows, std::int64_t classes) {
  const std::int64_t total = rows * classes;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t n = i / classes, c = i % classes;
    z[i] = __float2half_rn(static_cast<float>((c * 7 + n * 13) % 1024) * (1.0f / 128.0f) - 4.0f);
    if (c == 0) labels[n] = static_cast<std::int64_t>((static_cast<std::uint64_t>(n) * 2654435761ull) % classes);
  }
}
double host_z(std::int64_t n, std::int64_t c) { return static_cast<double>((c * 7 + n * 13) % 1024) / 128.0 - 4.0; }
std::int64_t host_label(std::int64_t n, std::int64_t classes) {
  return static_cast<std::int64_t>((static_cast<std::uint64_t>(n) * 2654435761ull) % classes);
}

bool enough_memory(std::size_t need) {
  std::size_t free_b = 0, total = 0;
  if (cudaMemGetInfo(&free_b, &total) != cudaSuccess) return false;
  return free_b > need + (std::size_t(1) << 30);
}

void run_large_elementwise(std::int64_t n) {
  const std::size_t bytes = static_cast<std::size_t>(n) * 2;
  if (!enough_memory(2 * bytes)) GTEST_SKIP() << "needs " << 2 * bytes / (1 << 20) << " MiB of free device memory";
  DevMem x(bytes), y(bytes), loss(4), err(8);
  ASSERT_TRUE(x.ptr && y.ptr);
  ::fusedloss::cuda::triple_chevron(4096, 256).doit(fill_elementwise, x.as<__half>(), y.as<__half>(), n);
  REL_CUDA_ASSERT(cudaDeviceSynchronize());
  // Windows of elements checked against the CPU path: the end, and around 2^31 and 2^32.
  const std::int64_t W = 4096;
  std::vector<std::int64_t> starts = {n - W};
  for (std::int64_t b : {std::int64_t(1) << 31, std::int64_t(1) << 32})
    if (b + W / 2 <= n) starts.push_back(b - W / 2);
  std::vector<Buf> xs, ys;
  for (std::int64_t s : starts) {
    Buf hx(DType::Float16, W), hy(DType::Float16, W);
    cudaMemcpy(hx.data(), x.bytes_ptr() + 2 * s, 2 * W, cudaMemcpyDeviceToHost);
    cudaMemcpy(hy.data(), y.bytes_ptr() + 2 * s, 2 * W, cudaMemcpyDeviceToHost);
    for (std::int64_t i = 0; i < W; i += 97) {
      ASSERT_EQ(hx.get(i), host_x(s + i));
      ASSERT_EQ(hy.get(i), host_y(s + i));
    }
    xs.push_back(hx);
    ys.push_back(hy);
  }
  fusedloss::ElementwiseProblem p;
  p.loss = Loss::MSE;
  p.dtype = DType::Float16;
  p.n = n;
  p.input = x.ptr;
  p.target = y.ptr;
  p.reduction = Reduction::Sum;
  fusedloss::LossOutputs out;
  out.loss = loss.as<float>();
  out.grad = x.ptr;  // in place: the input's memory is all there is room for
  out.error_count = err.as<std::int64_t>();
  fusedloss::ExecutionConfig cfg;
  cfg.backend = Backend::CUDA;
  ASSERT_EQ(fusedloss::compute_sync(p, out, cfg), Status::Success);
  float got = 0;
  cudaMemcpy(&got, loss.ptr, 4, cudaMemcpyDeviceToHost);
  // Reference: x has period 1021, y period 1019 (coprime), so every (i mod 1021, i mod 1019) pair occurs
  // once per 1021·1019 elements; whole periods in closed form, the remainder element by element.
  const std::int64_t P = 1021 * 1019;
  long double sx = 0, sxx = 0, sy = 0, syy = 0;
  for (int a = 0; a < 1021; ++a) {
    sx += host_x(a);
    sxx += host_x(a) * host_x(a);
  }
  for (int b = 0; b < 1019; ++b) {
    sy += host_y(b);
    syy += host_y(b) * host_y(b);
  }
  const long double period = 1019 * sxx + 1021 * syy - 2 * sx * sy;
  long double ref = period * static_cast<long double>(n / P);
  for (std::int64_t i = (n / P) * P; i < n; ++i) {
    const long double r = host_x(i) - host_y(i);
    ref += r * r;
  }
  EXPECT_TRUE(validate_tolerance::within_tolerance(validate_tolerance::f32_tensor({got}),
                                                  validate_tolerance::rounded_tensor(DType::Float32, {static_cast<double>(ref)}),
                                                  fusedloss_cli::CompareKind::Loss, DType::Float16));
  // Gradient windows vs the CPU path on the same elements.
  for (std::size_t k = 0; k < starts.size(); ++k) {
    SCOPED_TRACE("window at element " + std::to_string(starts[k]));
    ElemCase c(Loss::MSE, DType::Float16, W);
    c.x = xs[k];
    c.y = ys[k];
    c.reduction = Reduction::Sum;
    const reltest::Outcome cpu = reltest::run(c.problem());
    Buf g(DType::Float16, W);
    cudaMemcpy(g.data(), x.bytes_ptr() + 2 * starts[k], 2 * W, cudaMemcpyDeviceToHost);
    EXPECT_TRUE(g.same_bytes(cpu.grad)) << "gradient differs from the CPU path";
  }
  ::testing::Test::RecordProperty("elements", std::to_string(n));
}

void run_large_rowwise(std::int64_t rows, std::int64_t classes) {
  const std::size_t bytes = static_cast<std::size_t>(rows * classes) * 2;
  if (!enough_memory(bytes + static_cast<std::size_t>(rows) * 16))
    GTEST_SKIP() << "needs " << bytes / (1 << 20) << " MiB of free device memory";
  DevMem z(bytes), labels(static_cast<std::size_t>(rows) * 8), lse(static_cast<std::size_t>(rows) * 4), loss(4),
      err(8);
  ASSERT_TRUE(z.ptr && labels.ptr && lse.ptr);
  ::fusedloss::cuda::triple_chevron(4096, 256).doit(fill_rowwise, z.as<__half>(), labels.as<std::int64_t>(), rows, classes);
  REL_CUDA_ASSERT(cudaDeviceSynchronize());
  // Rows checked against the CPU path: the last two and the ones holding elements 2^31 and 2^32.
  std::vector<std::int64_t> check_rows = {rows - 2, rows - 1};
  for (std::int64_t b : {std::int64_t(1) << 31, std::int64_t(1) << 32})
    if (b < rows * classes) check_rows.push_back(b / classes);
  std::vector<Buf> saved;
  for (std::int64_t r : check_rows) {
    Buf h(DType::Float16, classes);
    cudaMemcpy(h.data(), z.bytes_ptr() + 2 * r * classes, 2 * classes, cudaMemcpyDeviceToHost);
    for (std::int64_t c = 0; c < classes; c += 101) ASSERT_EQ(h.get(c), host_z(r, c));
    saved.push_back(h);
  }
  fusedloss::RowwiseProblem p;
  p.loss = Loss::CrossEntropy;
  p.dtype = DType::Float16;
  p.rows = rows;
  p.classes = classes;
  p.input = z.ptr;
  p.labels = labels.ptr;
  p.label_dtype = DType::Int64;
  p.reduction = Reduction::Sum;
  fusedloss::LossOutputs out;
  out.loss = loss.as<float>();
  out.grad = z.ptr;  // in place
  out.lse = lse.as<float>();
  out.error_count = err.as<std::int64_t>();
  fusedloss::ExecutionConfig cfg;
  cfg.backend = Backend::CUDA;
  ASSERT_EQ(fusedloss::compute_sync(p, out, cfg), Status::Success);
  float got = 0;
  cudaMemcpy(&got, loss.ptr, 4, cudaMemcpyDeviceToHost);
  std::vector<float> lse_h(static_cast<std::size_t>(rows));
  cudaMemcpy(lse_h.data(), lse.ptr, lse_h.size() * 4, cudaMemcpyDeviceToHost);
  // A row's logits depend on n only through 13·n mod 1024, i.e. n mod 1024: the CPU path's lse of
  // rows 0..1023 gives every row's lse, and the loss is Σ_n lse(n mod 1024) − z[n, y_n].
  const std::int64_t K = std::min<std::int64_t>(1024, rows);
  RowCase pattern(RowKind::CE, DType::Float16, K, classes);
  for (std::int64_t n = 0; n < K; ++n) {
    for (std::int64_t c = 0; c < classes; ++c) pattern.input.set(n * classes + c, host_z(n, c));
    pattern.labels[n] = host_label(n, classes);
  }
  pattern.reduction = Reduction::None;
  const reltest::Outcome pcpu = reltest::run(pattern.problem(), false, true);
  ASSERT_EQ(pcpu.status, Status::Success);
  long double ref = 0;
  std::vector<float> ref_lse(static_cast<std::size_t>(rows));
  for (std::int64_t n = 0; n < rows; ++n) {
    const double l = pcpu.lse[static_cast<std::size_t>(n % 1024)];
    ref_lse[static_cast<std::size_t>(n)] = static_cast<float>(l);
    ref += static_cast<long double>(l) - host_z(n, host_label(n, classes));
  }
  using validate_tolerance::f32_tensor;
  using validate_tolerance::within_tolerance;
  EXPECT_TRUE(within_tolerance(f32_tensor(lse_h), f32_tensor(ref_lse), fusedloss_cli::CompareKind::Loss,
                               DType::Float16, fusedloss_cli::kLseTermScale, "lse"));
  EXPECT_TRUE(within_tolerance(f32_tensor({got}), validate_tolerance::rounded_tensor(DType::Float32, {static_cast<double>(ref)}),
                               fusedloss_cli::CompareKind::Loss, DType::Float16));
  for (std::size_t k = 0; k < check_rows.size(); ++k) {
    const std::int64_t r = check_rows[k];
    SCOPED_TRACE("row " + std::to_string(r));
    RowCase one(RowKind::CE, DType::Float16, 1, classes);
    one.input = saved[k];
    one.labels[0] = host_label(r, classes);
    one.reduction = Reduction::Sum;
    const reltest::Outcome cpu = reltest::run(one.problem(), true, true);
    Buf g(DType::Float16, classes);
    cudaMemcpy(g.data(), z.bytes_ptr() + 2 * r * classes, 2 * classes, cudaMemcpyDeviceToHost);
    // The row's gradient of the Sum over all rows is the row's own gradient (factor 1).
    EXPECT_TRUE(within_tolerance(validate_tolerance::raw_tensor(DType::Float16, g.data(), classes),
                                 validate_tolerance::raw_tensor(DType::Float16, cpu.grad.data(), classes),
                                 fusedloss_cli::CompareKind::Grad, DType::Float16, term_scale(one)));
  }
  ::testing::Test::RecordProperty("elements", std::to_string(rows * classes));
}

TEST(ReliabilityCuda, LargeIndexElementwiseBeyond2Pow31) {
  REL_REQUIRE_DEVICE();
  run_large_elementwise((std::int64_t(1) << 31) + 1);
}
TEST(ReliabilityCuda, LargeIndexElementwiseBeyond2Pow32) {
  REL_REQUIRE_DEVICE();
  run_large_elementwise((std::int64_t(1) << 32) + 1);
}
TEST(ReliabilityCuda, LargeIndexRowwiseBeyond2Pow31) {
  REL_REQUIRE_DEVICE();
  run_large_rowwise(65536, 32769);  // 2^31 + 2^16 elements
}
TEST(ReliabilityCuda, LargeIndexRowwiseBeyond2Pow32) {
  REL_REQUIRE_DEVICE();
  run_large_rowwise(65536, 65537);  // 2^32 + 2^16 elements
}
#endif  // !FUSEDLOSS_EMULATED_DEVICE

// =====================================================================================================
// 11. Determinism: repeats on one stream, other streams (incl. the legacy default stream), and a
//     stream-ordered workspace instead of the caller's → bitwise identical loss, lse, gradient.
// =====================================================================================================
TEST(ReliabilityCuda, DeterministicRepeatsAndStreams) {
  REL_REQUIRE_DEVICE();
  const int R = repeats();
  Stream a, b;
  int runs = 0;
  for (Workload& w : make_workloads()) {
    SCOPED_TRACE(w.dev.name);
    DevOut o = make_outputs(w.dev);
    ASSERT_EQ(launch(w.dev, o, a.s), Status::Success);
    const Result ref = fetch(o);
    EXPECT_EQ(ref.errors, 0);
    for (int i = 1; i < R; ++i) {
      ASSERT_EQ(launch(w.dev, o, a.s), Status::Success);
      ASSERT_TRUE(fetch(o) == ref) << "repeat " << i;
      ++runs;
    }
    for (cudaStream_t s : {b.s, static_cast<cudaStream_t>(nullptr), cudaStreamPerThread}) {
      DevOut o2 = make_outputs(w.dev);
      ASSERT_EQ(launch(w.dev, o2, s), Status::Success);
      EXPECT_TRUE(fetch(o2) == ref) << "different stream";
    }
    // Stream-ordered workspace (no caller workspace).
    DevOut o3 = make_outputs(w.dev);
    fusedloss::ExecutionConfig cfg;
    cfg.backend = Backend::CUDA;
    cfg.stream = b.s;
    cfg.allow_stream_ordered_alloc = true;
    ASSERT_EQ(w.dev.rowwise ? fusedloss::compute(w.dev.rp, o3.out, cfg) : fusedloss::compute(w.dev.ep, o3.out, cfg),
              Status::Success);
    EXPECT_TRUE(fetch(o3) == ref) << "stream-ordered workspace";
    // And the result agrees with the CPU path.
    const reltest::Outcome cpu =
        w.e ? reltest::run(w.e->problem()) : reltest::run(w.r->problem(), true, w.dev.lse_count > 0);
    expect_close_to_cpu(w.dev, ref, cpu, w.e ? term_scale(*w.e) : term_scale(*w.r));
  }
  RecordProperty("repeated_runs", runs);
}

// =====================================================================================================
// 12. Concurrency: 4 host threads × 2 streams each, different losses at once → bitwise equal to serial.
// =====================================================================================================
TEST(ReliabilityCuda, FourHostThreadsTwoStreamsEach) {
  REL_REQUIRE_DEVICE();
  std::vector<Workload> wls = make_workloads();
  std::vector<Result> serial;
  for (Workload& w : wls) {
    DevOut o = make_outputs(w.dev);
    EXPECT_EQ(launch(w.dev, o, nullptr), Status::Success);
    serial.push_back(fetch(o));
  }
  const int kThreads = 4, kIters = 5;
  std::vector<int> mismatches(kThreads, 0), failures(kThreads, 0);
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t) {
    pool.emplace_back([&, t] {
      Stream s[2];
      // Each stream of each thread runs a different workload, with its own outputs and workspace.
      const std::size_t k0 = static_cast<std::size_t>(2 * t) % wls.size(), k1 = static_cast<std::size_t>(2 * t + 1) % wls.size();
      DevOut o0 = make_outputs(wls[k0].dev), o1 = make_outputs(wls[k1].dev);
      for (int i = 0; i < kIters; ++i) {
        if (launch(wls[k0].dev, o0, s[0].s) != Status::Success) ++failures[t];
        if (launch(wls[k1].dev, o1, s[1].s) != Status::Success) ++failures[t];
      }
      cudaStreamSynchronize(s[0].s);
      cudaStreamSynchronize(s[1].s);
      if (!(fetch(o0) == serial[k0])) ++mismatches[t];
      if (!(fetch(o1) == serial[k1])) ++mismatches[t];
    });
  }
  for (std::thread& th : pool) th.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(failures[t], 0) << "thread " << t;
    EXPECT_EQ(mismatches[t], 0) << "thread " << t;
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// =====================================================================================================
// 13. CUDA-graph capture and replay of every loss family: the replay computes on the data present
//     at replay time, bitwise equal to a direct call on that data.
// =====================================================================================================
TEST(ReliabilityCuda, GraphCaptureReplayEveryFamily) {
  REL_REQUIRE_DEVICE();
  Stream stream;
  for (Workload& w : make_workloads()) {
    SCOPED_TRACE(w.dev.name);
    DevOut o = make_outputs(w.dev);
    cudaGraph_t graph = nullptr;
    REL_CUDA_ASSERT(cudaStreamBeginCapture(stream.s, cudaStreamCaptureModeGlobal));
    const Status st = launch(w.dev, o, stream.s);
    REL_CUDA_ASSERT(cudaStreamEndCapture(stream.s, &graph));
    ASSERT_EQ(st, Status::Success);
    cudaGraphExec_t exec = nullptr;
    REL_CUDA_ASSERT(cudaGraphInstantiate(&exec, graph, 0));
    void* input = w.dev.rowwise ? const_cast<void*>(w.dev.rp.input) : const_cast<void*>(w.dev.ep.input);
    const std::vector<unsigned char> original = download(input, w.dev.grad_bytes);
    for (int replay = 0; replay < 3; ++replay) {
      // New input data (a permutation of the original elements keeps every value valid for its loss).
      std::vector<unsigned char> data = original;
      const std::size_t es = fusedloss::dtype_size(w.dev.dtype), count = data.size() / es;
      for (std::size_t i = 0; i + 1 < count; i += 2 + replay)
        std::swap_ranges(data.begin() + i * es, data.begin() + (i + 1) * es, data.begin() + (i + 1) * es);
      REL_CUDA_ASSERT(cudaMemcpy(input, data.data(), data.size(), cudaMemcpyHostToDevice));
      REL_CUDA_ASSERT(cudaGraphLaunch(exec, stream.s));
      REL_CUDA_ASSERT(cudaStreamSynchronize(stream.s));
      const Result from_graph = fetch(o);
      DevOut direct = make_outputs(w.dev);
      ASSERT_EQ(launch(w.dev, direct, stream.s), Status::Success);
      EXPECT_TRUE(fetch(direct) == from_graph) << "replay " << replay;
    }
    REL_CUDA_ASSERT(cudaMemcpy(input, original.data(), original.size(), cudaMemcpyHostToDevice));
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// =====================================================================================================
// 14. In-place gradient (grad == input) equals the out-of-place result; row padding untouched.
// =====================================================================================================
TEST(ReliabilityCuda, InPlaceEqualsOutOfPlace) {
  REL_REQUIRE_DEVICE();
  Stream stream;
  int compared = 0;
  auto compare = [&](DevCall& dev) {
    SCOPED_TRACE(dev.name);
    DevOut o = make_outputs(dev);
    ASSERT_EQ(launch(dev, o, stream.s), Status::Success);
    const Result ref = fetch(o);
    void* input = dev.rowwise ? const_cast<void*>(dev.rp.input) : const_cast<void*>(dev.ep.input);
    const std::vector<unsigned char> original = download(input, dev.grad_bytes);
    DevOut ip = make_outputs(dev, /*with_grad=*/false);
    ip.out.grad = input;
    refresh_workspace(dev, ip);
    ASSERT_EQ(launch(dev, ip, stream.s), Status::Success);
    Result got = fetch(ip);
    got.grad = download(input, dev.grad_bytes);
    EXPECT_EQ(got.loss, ref.loss);
    EXPECT_EQ(got.lse, ref.lse);
    if (!dev.rowwise || dev.rp.row_stride == 0) {
      EXPECT_EQ(got.grad, ref.grad);
    } else {
      const std::size_t es = fusedloss::dtype_size(dev.dtype);
      const std::size_t row = static_cast<std::size_t>(dev.rp.row_stride) * es,
                        used = static_cast<std::size_t>(dev.rp.classes) * es;
      for (std::int64_t n = 0; n < dev.rp.rows; ++n) {
        const std::size_t at = static_cast<std::size_t>(n) * row;
        ASSERT_EQ(std::memcmp(got.grad.data() + at, ref.grad.data() + at, used), 0) << "row " << n;
        ASSERT_EQ(std::memcmp(got.grad.data() + at + used, original.data() + at + used, row - used), 0)
            << "padding of row " << n;
      }
    }
    cudaMemcpy(input, original.data(), original.size(), cudaMemcpyHostToDevice);
    ++compared;
  };
  for (Loss l : reliability::elementwise_losses())
    for (DType d : {DType::Float32, DType::Float16, DType::BFloat16})
      for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
        if (l == Loss::RMSE && r != Reduction::Mean) continue;
        ElemCase c(l, d, 3 * 4096 + 77);
        const bool prob = l == Loss::BCE;
        c.x = reltest::random_buf(d, c.n, prob ? 0.0 : -3, prob ? 1.0 : 3, 701);
        c.y = reltest::random_buf(d, c.n, 0, 1, 702);
        if (r == Reduction::Sum) c.w = reltest::random_buf(d, c.n, 0, 2, 703);
        c.reduction = r;
        c.grad_scale = 8.0;
        DevCall dev = to_device(c);
        compare(dev);
      }
  for (RowKind k : {RowKind::CE, RowKind::CESoft, RowKind::NLL, RowKind::KL, RowKind::KLLogits})
    for (DType d : {DType::Float32, DType::Float16, DType::BFloat16})
      for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
        RowCase c(k, d, 67, 4099, 4104);
        const bool logprob = k == RowKind::NLL || k == RowKind::KL;
        c.input = reltest::random_buf(d, c.rows * c.stride, logprob ? -9 : -5, logprob ? -0.01 : 5, 704);
        c.target = reltest::random_buf(d, c.rows * c.stride, k == RowKind::KLLogits ? -5 : 0,
                                       k == RowKind::KLLogits ? 5 : 0.0005, 705);
        for (std::int64_t n = 0; n < c.rows; ++n)
          if (reltest::has_labels(k)) c.labels[n] = n % 9 == 0 ? -100 : (n * 31) % c.classes;
        if (k == RowKind::CE) {
          c.params.label_smoothing = 0.05;
          c.params.softcap = 15.0;
          c.params.z_loss = 1e-4;
        }
        c.reduction = r;
        DevCall dev = to_device(c);
        compare(dev);
      }
  RecordProperty("compared", compared);
}


// =====================================================================================================
// 5–9 on the GPU, against the CPU path: NaN isolation, −inf logits and all −inf ignored rows, extreme
// finite inputs, BCE / bce_with_logits at their limits, 10^6 half-precision rows of loss ≈ 10; plus
// the infinite-input contract (+inf logit rows NaN, weight-0 target rows exactly 0, hinge at ±inf).
// =====================================================================================================
/// Runs c on both backends and compares (lse too for cross_entropy). Case: ElemCase or RowCase.
template <class Case>
void expect_gpu_matches_cpu(Case& c) {
  SCOPED_TRACE(c.tag());
  bool lse = false;
  if constexpr (std::is_same<Case, RowCase>::value) lse = c.kind == RowKind::CE || c.kind == RowKind::CESoft;
  reltest::Outcome cpu;
  if constexpr (std::is_same<Case, RowCase>::value) {
    cpu = reltest::run(c.problem(), true, lse);
  } else {
    cpu = reltest::run(c.problem());
  }
  DevCall dev = to_device(c);
  DevOut o = make_outputs(dev);
  ASSERT_EQ(launch(dev, o, nullptr), Status::Success);
  const Result got = fetch(o);
  EXPECT_EQ(got.errors, cpu.errors);
  expect_close_to_cpu(dev, got, cpu, term_scale(c));
  if (!lse) return;
  ASSERT_EQ(got.lse.size(), cpu.lse.size() * 4);
  EXPECT_TRUE(validate_tolerance::within_tolerance(
      validate_tolerance::raw_tensor(DType::Float32, got.lse.data(), static_cast<std::int64_t>(cpu.lse.size())),
      validate_tolerance::f32_tensor(cpu.lse), fusedloss_cli::CompareKind::Loss, dev.dtype, fusedloss_cli::kLseTermScale, "lse"));
}

TEST(ReliabilityCuda, EdgeValuesMatchTheCpuPath) {
  REL_REQUIRE_DEVICE();
  const double inf = reltest::kInf, nan = reltest::kNaN;
  // 5. A NaN element stays in its element (reduction none), every elementwise loss and dtype.
  for (Loss l : {Loss::MSE, Loss::MAE, Loss::MSLE, Loss::Huber, Loss::SmoothL1, Loss::PseudoHuber, Loss::LogCosh,
                 Loss::Hinge, Loss::SquaredHinge, Loss::BCEWithLogits})
    for (DType d : {DType::Float32, DType::Float16, DType::BFloat16}) {
      ElemCase c(l, d, 1001);
      c.x = reltest::random_buf(d, c.n, l == Loss::MSLE ? 0 : -3, 3, 801);
      c.y = reltest::random_buf(d, c.n, 0, 1, 802);
      c.x.set(17, nan);
      c.y.set(500, nan);
      c.reduction = Reduction::None;
      expect_gpu_matches_cpu(c);
    }
  // 6. −inf non-target logits; an all −inf ignored row (loss 0, gradient 0); 5 NaN-free rows around it.
  for (DType d : {DType::Float32, DType::BFloat16})
    for (bool soft : {false, true}) {
      RowCase c(soft ? RowKind::CESoft : RowKind::CE, d, 6, 1000);
      c.input = reltest::random_buf(d, c.rows * c.stride, -5, 5, 803);
      if (soft) {
        c.target = reltest::random_buf(d, c.rows * c.stride, 0, 0.002, 804);
      } else {
        for (std::int64_t n = 0; n < c.rows; ++n) c.labels[n] = (n * 37) % c.classes;
        c.labels[3] = -100;
      }
      for (std::int64_t i = 0; i < c.rows * c.stride; i += 3)
        if (soft || i % c.classes != c.labels[i / c.classes]) c.input.set(i, -inf);
      if (!soft)
        for (std::int64_t k = 0; k < c.classes; ++k) c.input.set(3 * c.classes + k, -inf);
      for (Reduction r : {Reduction::None, Reduction::Mean}) {
        c.reduction = r;
        expect_gpu_matches_cpu(c);
      }
    }
  // 7. Extreme finite inputs: logits ±6e4 (fp16), ±3e38 (fp32); |r| up to 1e30 for log_cosh / pseudo_huber.
  for (DType d : {DType::Float16, DType::Float32}) {
    const double big = d == DType::Float16 ? 6e4 : 3e38;
    RowCase c(RowKind::CE, d, 5, 333);
    c.input = reltest::random_buf(d, c.rows * c.stride, -big, big, 805);
    for (std::int64_t n = 0; n < c.rows; ++n) c.labels[n] = (n * 71) % c.classes;
    c.reduction = Reduction::Sum;
    expect_gpu_matches_cpu(c);
  }
  for (Loss l : {Loss::LogCosh, Loss::PseudoHuber}) {
    ElemCase c(l, DType::Float32, 6);
    const double xs[] = {1e30, -1e30, 3e29, -7e20, 1e-30, 0};
    for (int i = 0; i < 6; ++i) c.x.set(i, xs[i]), c.y.set(i, 0.0);
    c.reduction = Reduction::None;
    expect_gpu_matches_cpu(c);
  }
  // 8. BCE at p ∈ {0, 1}; bce_with_logits at |x| = 100 and 1e4.
  {
    ElemCase c(Loss::BCE, DType::Float32, 8);
    const double ps[] = {0, 1, 0, 1, 1e-8, 1 - 1e-7, 0.5, 0}, ys[] = {0, 1, 1, 0, 0, 1, 0.3, 0.5};
    for (int i = 0; i < 8; ++i) c.x.set(i, ps[i]), c.y.set(i, ys[i]);
    c.reduction = Reduction::None;
    expect_gpu_matches_cpu(c);
    ElemCase b(Loss::BCEWithLogits, DType::Float32, 8);
    const double xs[] = {100, -100, 1e4, -1e4, 100, -1e4, 1e4, -100};
    for (int i = 0; i < 8; ++i) b.x.set(i, xs[i]), b.y.set(i, i % 2 == 0 ? 1.0 : 0.25);
    b.reduction = Reduction::None;
    expect_gpu_matches_cpu(b);
  }
  // 9. 10^6 half-precision rows of loss ≈ 10 summed: no inf, within 1e-5 of the CPU's float64 sum.
  //    Emulated: 100003 rows, whose sum (10^6) still overflows fp16 and spans 7 reduction partials.
  for (DType d : {DType::Float16, DType::BFloat16}) {
    RowCase c(RowKind::CE, d, fusedloss_test::gpu_or_emulated<std::int64_t>(1000000, 100003), 2);
    for (std::int64_t n = 0; n < c.rows; ++n) {
      c.input.set(2 * n, 0.0);
      c.input.set(2 * n + 1, -10.0);
      c.labels[n] = 1;  // loss log(1 + e^10) ≈ 10.00005
    }
    c.reduction = Reduction::Sum;
    expect_gpu_matches_cpu(c);
  }
  // Infinite inputs: +inf logit rows are NaN, weight-0 target rows exactly 0, hinge/pseudo_huber at ±inf.
  for (DType d : {DType::Float32, DType::Float16, DType::BFloat16})
    for (bool soft : {false, true}) {
      RowCase c(soft ? RowKind::CESoft : RowKind::CE, d, 5, 77);
      c.input = reltest::random_buf(d, c.rows * c.stride, -4, 4, 806);
      if (soft) c.target = reltest::random_buf(d, c.rows * c.stride, 0, 0.02, 807);
      c.input.set(1 * 77 + 5, inf);
      c.input.set(3 * 77 + 0, inf);
      c.input.set(3 * 77 + 76, inf);
      if (!soft) {
        for (std::int64_t n = 0; n < c.rows; ++n) c.labels[n] = (n * 13) % 77;
        c.class_weight.assign(77, 1.0f);
        c.class_weight[c.labels[4]] = 0.0f;
        c.input.set(4 * 77 + 9, nan);  // a weight-0 target: the row stays exactly 0
      }
      for (Reduction r : {Reduction::None, Reduction::Sum}) {
        c.reduction = r;
        expect_gpu_matches_cpu(c);
      }
    }
  for (Loss l : {Loss::Hinge, Loss::SquaredHinge, Loss::PseudoHuber})
    for (DType d : {DType::Float32, DType::Float16}) {
      ElemCase c(l, d, 4);
      const double xs[] = {inf, -inf, inf, -inf}, ys[] = {1, 0, 0, 1};
      for (int i = 0; i < 4; ++i) c.x.set(i, xs[i]), c.y.set(i, ys[i]);
      c.reduction = Reduction::None;
      expect_gpu_matches_cpu(c);
    }
}

}  // namespace
