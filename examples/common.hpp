// Shared pieces of the fusedloss training examples: a tiny command-line parser, a
// deterministic random generator, and a small "engine" that runs the handful of dense
// operations a 2-layer MLP needs — either with plain loops on the CPU, or with cuBLAS plus
// three tiny kernels on the GPU. The loss and its gradient always come from fusedloss.
//
// The CUDA half is compiled only when CMake defines FUSEDLOSS_EXAMPLES_WITH_CUDA (the library
// was built with its CUDA path); the example sources are then compiled as CUDA, so the kernels
// below can live next to the code that launches them. Without it everything here is plain C++17.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "fusedloss/fusedloss.hpp"

#if defined(FUSEDLOSS_EXAMPLES_WITH_CUDA)
#if !defined(__CUDACC__)
#error "FUSEDLOSS_EXAMPLES_WITH_CUDA needs the example compiled as CUDA (see examples/CMakeLists.txt)"
#endif
#include <cublas_v2.h>
#include <cuda_runtime.h>
#endif

namespace example {

// ---------------------------------------------------------------------------------------
// Errors: an example just reports and exits.

[[noreturn]] inline void die(const std::string& what) {
  std::fprintf(stderr, "error: %s\n", what.c_str());
  std::exit(2);
}

inline void check(fusedloss::Status s, const char* what) {
  if (s != fusedloss::Status::Success) die(std::string(what) + ": " + fusedloss::status_string(s));
}

#if defined(FUSEDLOSS_EXAMPLES_WITH_CUDA)
inline void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) die(std::string(what) + ": " + cudaGetErrorString(e));
}
inline void cublas_check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) die(std::string(what) + ": cuBLAS status " + std::to_string(static_cast<int>(s)));
}
#endif

// ---------------------------------------------------------------------------------------
// Command line: --name value pairs, plus --help.

class ArgParser {
 public:
  explicit ArgParser(std::string program, std::string about) : program_(std::move(program)), about_(std::move(about)) {}

  void add(const char* name, long* v, const char* help) {
    add_raw(name, std::to_string(*v), help, [v](const char* s) {
      char* end = nullptr;
      *v = std::strtol(s, &end, 10);
      return end != s && *end == '\0';
    });
  }
  void add(const char* name, std::uint64_t* v, const char* help) {
    add_raw(name, std::to_string(*v), help, [v](const char* s) {
      char* end = nullptr;
      *v = std::strtoull(s, &end, 10);
      return end != s && *end == '\0';
    });
  }
  void add(const char* name, double* v, const char* help) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", *v);
    add_raw(name, buf, help, [v](const char* s) {
      char* end = nullptr;
      *v = std::strtod(s, &end);
      return end != s && *end == '\0';
    });
  }
  void add(const char* name, std::string* v, const char* help) {
    add_raw(name, *v, help, [v](const char* s) {
      *v = s;
      return true;
    });
  }

  void parse(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        usage(stdout);
        std::exit(0);
      }
      const Opt* o = find(a);
      if (o == nullptr || i + 1 >= argc) {
        std::fprintf(stderr, "%s: %s '%s'\n", program_.c_str(), o ? "missing value for" : "unknown option", a.c_str());
        usage(stderr);
        std::exit(2);
      }
      if (!o->set(argv[++i])) die("bad value '" + std::string(argv[i]) + "' for " + a);
    }
  }

 private:
  struct Opt {
    std::string name, def, help;
    std::function<bool(const char*)> set;
  };
  void add_raw(const char* name, std::string def, const char* help, std::function<bool(const char*)> set) {
    opts_.push_back(Opt{std::string("--") + name, std::move(def), help, std::move(set)});
  }
  const Opt* find(const std::string& a) const {
    for (const Opt& o : opts_)
      if (o.name == a) return &o;
    return nullptr;
  }
  void usage(std::FILE* f) const {
    std::fprintf(f, "usage: %s [options]\n%s\n\noptions:\n", program_.c_str(), about_.c_str());
    for (const Opt& o : opts_) std::fprintf(f, "  %-18s %s (default: %s)\n", o.name.c_str(), o.help.c_str(), o.def.c_str());
  }
  std::string program_, about_;
  std::vector<Opt> opts_;
};

// ---------------------------------------------------------------------------------------
// Randomness: std::mt19937_64 is specified bit for bit by the standard; the conversions to
// uniform / normal below are our own, so a seed gives the same data on every platform.

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : gen_(seed) {}
  double uniform() { return static_cast<double>(gen_() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  double normal() {  // Box–Muller
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = 1.0 - uniform();  // (0, 1]
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double t = 6.283185307179586 * u2;
    spare_ = r * std::sin(t);
    has_spare_ = true;
    return r * std::cos(t);
  }
  std::uint64_t below(std::uint64_t n) { return static_cast<std::uint64_t>(uniform() * static_cast<double>(n)); }
  template <class T>
  void shuffle(std::vector<T>& v) {  // Fisher–Yates
    for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }

 private:
  std::mt19937_64 gen_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

// ---------------------------------------------------------------------------------------
// Device choice.

inline bool built_with_cuda() {
#if defined(FUSEDLOSS_EXAMPLES_WITH_CUDA)
  return true;
#else
  return false;
#endif
}

/// "cpu" | "cuda" | "auto" → true for the GPU. "cuda" without a usable GPU is an error.
inline bool choose_gpu(const std::string& device) {
  if (device == "cpu") return false;
  const bool can = built_with_cuda() && fusedloss::cuda_available();
  if (device == "cuda") {
    if (!built_with_cuda()) die("--device cuda: this build has no CUDA path (FUSEDLOSS_WITH_CUDA is OFF)");
    if (!can) die("--device cuda: no usable CUDA device");
    return true;
  }
  if (device == "auto") return can;
  die("--device must be cpu, cuda or auto");
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// ---------------------------------------------------------------------------------------
// The engine: buffers + the dense operations of an MLP. All matrices are row-major float32.
// Buffers are owned by the engine and live as long as it does.

class Engine {
 public:
  virtual ~Engine() = default;
  virtual bool gpu() const = 0;
  virtual const char* describe() const = 0;

  virtual void* alloc_bytes(std::size_t bytes) = 0;
  float* alloc(std::size_t n) { return static_cast<float*>(alloc_bytes(n * sizeof(float))); }
  std::int32_t* alloc_i32(std::size_t n) { return static_cast<std::int32_t*>(alloc_bytes(n * sizeof(std::int32_t))); }
  virtual void upload(void* dst, const void* src, std::size_t bytes) = 0;
  /// Waits for all queued work, then copies.
  virtual void download(void* dst, const void* src, std::size_t bytes) = 0;

  /// C[m×n] = op(A)·op(B), op(A) is m×k and op(B) is k×n; `ta`/`tb` transpose A/B.
  virtual void gemm(bool ta, bool tb, int m, int n, int k, const float* A, const float* B, float* C) = 0;
  /// Z[r, c] += b[c], then ReLU when `relu`.
  virtual void bias_act(float* Z, const float* b, int rows, int cols, bool relu) = 0;
  /// dH[i] = 0 where H[i] <= 0 (H is the ReLU output).
  virtual void relu_backward(float* dH, const float* H, std::size_t n) = 0;
  /// out[c] = Σ_r G[r, c].
  virtual void col_sum(const float* G, int rows, int cols, float* out) = 0;
  /// One Adam step over n parameters. `step_size` already holds the bias corrections.
  virtual void adam(float* p, const float* g, float* m, float* v, std::size_t n, float step_size, float beta1,
                    float beta2, float eps) = 0;

  /// The fusedloss configuration that matches this engine's memory space (and stream).
  virtual fusedloss::ExecutionConfig loss_config() const = 0;
};

class CpuEngine final : public Engine {
 public:
  bool gpu() const override { return false; }
  const char* describe() const override { return "cpu (plain loops; fusedloss CPU path)"; }

  void* alloc_bytes(std::size_t bytes) override {
    blocks_.emplace_back(new double[(bytes + sizeof(double) - 1) / sizeof(double)]());  // zeroed, aligned
    return blocks_.back().get();
  }
  void upload(void* dst, const void* src, std::size_t bytes) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, std::size_t bytes) override { std::memcpy(dst, src, bytes); }

  void gemm(bool ta, bool tb, int m, int n, int k, const float* A, const float* B, float* C) override {
    // i-p-j order: the inner loop runs along a row of C (and of B when it is not transposed).
    for (int i = 0; i < m; ++i) {
      float* c = C + static_cast<std::size_t>(i) * n;
      std::fill(c, c + n, 0.0f);
      for (int p = 0; p < k; ++p) {
        const float a = ta ? A[static_cast<std::size_t>(p) * m + i] : A[static_cast<std::size_t>(i) * k + p];
        if (a == 0.0f) continue;  // ReLU zeros and dead units are common
        if (tb) {
          for (int j = 0; j < n; ++j) c[j] += a * B[static_cast<std::size_t>(j) * k + p];
        } else {
          const float* b = B + static_cast<std::size_t>(p) * n;
          for (int j = 0; j < n; ++j) c[j] += a * b[j];
        }
      }
    }
  }
  void bias_act(float* Z, const float* b, int rows, int cols, bool relu) override {
    for (int r = 0; r < rows; ++r) {
      float* z = Z + static_cast<std::size_t>(r) * cols;
      for (int c = 0; c < cols; ++c) {
        const float t = z[c] + b[c];
        z[c] = relu ? std::max(t, 0.0f) : t;
      }
    }
  }
  void relu_backward(float* dH, const float* H, std::size_t n) override {
    for (std::size_t i = 0; i < n; ++i)
      if (!(H[i] > 0.0f)) dH[i] = 0.0f;
  }
  void col_sum(const float* G, int rows, int cols, float* out) override {
    std::fill(out, out + cols, 0.0f);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) out[c] += G[static_cast<std::size_t>(r) * cols + c];
  }
  void adam(float* p, const float* g, float* m, float* v, std::size_t n, float step_size, float beta1, float beta2,
            float eps) override {
    for (std::size_t i = 0; i < n; ++i) {
      m[i] = beta1 * m[i] + (1.0f - beta1) * g[i];
      v[i] = beta2 * v[i] + (1.0f - beta2) * g[i] * g[i];
      p[i] -= step_size * m[i] / (std::sqrt(v[i]) + eps);
    }
  }
  fusedloss::ExecutionConfig loss_config() const override {
    fusedloss::ExecutionConfig c;
    c.backend = fusedloss::Backend::CPU;  // host pointers; Backend::Auto would pick the same
    return c;
  }

 private:
  std::vector<std::unique_ptr<double[]>> blocks_;
};

#if defined(FUSEDLOSS_EXAMPLES_WITH_CUDA)
namespace kernels {

__global__ void bias_act(float* Z, const float* b, long long rows, int cols, bool relu) {
  const long long n = rows * cols;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const float t = Z[i] + b[i % cols];
    Z[i] = relu ? fmaxf(t, 0.0f) : t;
  }
}

__global__ void relu_backward(float* dH, const float* H, long long n) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x)
    if (!(H[i] > 0.0f)) dH[i] = 0.0f;
}

__global__ void adam(float* p, const float* g, float* m, float* v, long long n, float step_size, float beta1,
                     float beta2, float eps) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const float gi = g[i];
    const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] -= step_size * mi / (sqrtf(vi) + eps);
  }
}

}  // namespace kernels

/// cuBLAS for the matmuls (and, through a ones vector, the column sums); three small kernels for
/// the elementwise parts. Everything runs on one stream; only download() synchronises.
class CudaEngine final : public Engine {
 public:
  CudaEngine() {
    cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    cublas_check(cublasCreate(&handle_), "cublasCreate");
    cublas_check(cublasSetStream(handle_, stream_), "cublasSetStream");
    // The default math mode: cublasSgemm stays in FP32 (TF32 only when asked for).
  }
  ~CudaEngine() override {
    cudaStreamSynchronize(stream_);
    for (void* p : blocks_) cudaFree(p);
    cublasDestroy(handle_);
    cudaStreamDestroy(stream_);
  }
  bool gpu() const override { return true; }
  const char* describe() const override { return "cuda (cuBLAS + fusedloss CUDA path)"; }

  void* alloc_bytes(std::size_t bytes) override {
    void* p = nullptr;
    cuda_check(cudaMalloc(&p, std::max<std::size_t>(bytes, 1)), "cudaMalloc");
    cuda_check(cudaMemsetAsync(p, 0, bytes, stream_), "cudaMemset");
    blocks_.push_back(p);
    return p;
  }
  void upload(void* dst, const void* src, std::size_t bytes) override {
    cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_), "upload");
    cuda_check(cudaStreamSynchronize(stream_), "upload sync");  // `src` may be a temporary
  }
  void download(void* dst, const void* src, std::size_t bytes) override {
    cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "download");
    cuda_check(cudaStreamSynchronize(stream_), "download sync");
  }

  void gemm(bool ta, bool tb, int m, int n, int k, const float* A, const float* B, float* C) override {
    // cuBLAS is column-major: a row-major X is the column-major Xᵀ, so C = op(A)·op(B) is
    // computed as Cᵀ = op(B)ᵀ·op(A)ᵀ on the same memory.
    const float one = 1.0f, zero = 0.0f;
    cublas_check(cublasSgemm(handle_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &one,
                             B, tb ? k : n, A, ta ? m : k, &zero, C, n),
                 "cublasSgemm");
  }
  void bias_act(float* Z, const float* b, int rows, int cols, bool relu) override {
    kernels::bias_act<<<blocks_for(static_cast<std::size_t>(rows) * cols), 256, 0, stream_>>>(Z, b, rows, cols, relu);
    cuda_check(cudaGetLastError(), "bias_act");
  }
  void relu_backward(float* dH, const float* H, std::size_t n) override {
    kernels::relu_backward<<<blocks_for(n), 256, 0, stream_>>>(dH, H, static_cast<long long>(n));
    cuda_check(cudaGetLastError(), "relu_backward");
  }
  void col_sum(const float* G, int rows, int cols, float* out) override {
    // Row-major G[rows×cols] is the column-major matrix Gᵀ[cols×rows]; out = Gᵀ·1.
    const float* ones = ones_of(rows);
    const float one = 1.0f, zero = 0.0f;
    cublas_check(cublasSgemv(handle_, CUBLAS_OP_N, cols, rows, &one, G, cols, ones, 1, &zero, out, 1), "cublasSgemv");
  }
  void adam(float* p, const float* g, float* m, float* v, std::size_t n, float step_size, float beta1, float beta2,
            float eps) override {
    kernels::adam<<<blocks_for(n), 256, 0, stream_>>>(p, g, m, v, static_cast<long long>(n), step_size, beta1, beta2,
                                                      eps);
    cuda_check(cudaGetLastError(), "adam");
  }
  fusedloss::ExecutionConfig loss_config() const override {
    fusedloss::ExecutionConfig c;
    c.backend = fusedloss::Backend::CUDA;
    c.stream = stream_;
    return c;
  }

 private:
  static unsigned blocks_for(std::size_t n) {
    return static_cast<unsigned>(std::min<std::size_t>((n + 255) / 256, 4096));
  }
  const float* ones_of(int n) {
    if (n > ones_n_) {
      std::vector<float> h(static_cast<std::size_t>(n), 1.0f);
      ones_ = alloc(h.size());
      upload(ones_, h.data(), h.size() * sizeof(float));
      ones_n_ = n;
    }
    return ones_;
  }
  cudaStream_t stream_ = nullptr;
  cublasHandle_t handle_ = nullptr;
  std::vector<void*> blocks_;
  float* ones_ = nullptr;
  int ones_n_ = 0;
};
#endif

inline std::unique_ptr<Engine> make_engine(bool gpu) {
#if defined(FUSEDLOSS_EXAMPLES_WITH_CUDA)
  if (gpu) return std::make_unique<CudaEngine>();
#endif
  if (gpu) die("internal: GPU requested in a CPU-only build");
  return std::make_unique<CpuEngine>();
}

// ---------------------------------------------------------------------------------------
// A 2-layer MLP: in → hidden (ReLU) → out, trained with Adam. All parameters live in one
// flat buffer [W1 | b1 | W2 | b2] (and so do their gradients and Adam moments), so one Adam
// launch updates everything.

class Mlp {
 public:
  Mlp(Engine& e, int in, int hidden, int out, int batch, Rng& rng)
      : e_(e), in_(in), hidden_(hidden), out_(out), batch_(batch) {
    count_ = static_cast<std::size_t>(in) * hidden + hidden + static_cast<std::size_t>(hidden) * out + out;
    params_ = e.alloc(count_);
    grads_ = e.alloc(count_);
    m_ = e.alloc(count_);  // zeroed by alloc
    v_ = e.alloc(count_);
    h_ = e.alloc(static_cast<std::size_t>(batch) * hidden);
    dh_ = e.alloc(static_cast<std::size_t>(batch) * hidden);
    z_ = e.alloc(static_cast<std::size_t>(batch) * out);
    // He initialisation for the ReLU layer, LeCun for the output layer; biases 0.
    std::vector<float> host(count_, 0.0f);
    const double s1 = std::sqrt(2.0 / in), s2 = std::sqrt(1.0 / hidden);
    for (std::size_t i = 0; i < static_cast<std::size_t>(in) * hidden; ++i) host[i] = static_cast<float>(s1 * rng.normal());
    float* w2 = host.data() + w2_offset();
    for (std::size_t i = 0; i < static_cast<std::size_t>(hidden) * out; ++i) w2[i] = static_cast<float>(s2 * rng.normal());
    e.upload(params_, host.data(), count_ * sizeof(float));
  }

  std::size_t parameter_count() const { return count_; }
  /// The training batch's output buffer [batch × out]: forward() writes the model output here,
  /// the loss overwrites it with the gradient (in place), backward() reads it.
  float* output() const { return z_; }

  /// Forward pass of `rows` rows of X into H[rows×hidden] and Z[rows×out] (defaults: the batch buffers).
  void forward(const float* X, int rows, float* H = nullptr, float* Z = nullptr) {
    H = H ? H : h_;
    Z = Z ? Z : z_;
    e_.gemm(false, false, rows, hidden_, in_, X, w1(), H);
    e_.bias_act(H, b1(), rows, hidden_, true);
    e_.gemm(false, false, rows, out_, hidden_, H, w2(), Z);
    e_.bias_act(Z, b2(), rows, out_, false);
  }

  /// Backward pass of the last training-batch forward(X, batch): output() holds dLoss/dZ.
  void backward(const float* X) {
    const float* G = z_;
    e_.gemm(true, false, hidden_, out_, batch_, h_, G, grads_ + w2_offset());  // dW2 = Hᵀ·G
    e_.col_sum(G, batch_, out_, grads_ + b2_offset());                        // db2 = Σ_rows G
    e_.gemm(false, true, batch_, hidden_, out_, G, w2(), dh_);                 // dH = G·W2ᵀ
    e_.relu_backward(dh_, h_, static_cast<std::size_t>(batch_) * hidden_);     // through the ReLU
    e_.gemm(true, false, in_, hidden_, batch_, X, dh_, grads_);                // dW1 = Xᵀ·dH
    e_.col_sum(dh_, batch_, hidden_, grads_ + b1_offset());                   // db1 = Σ_rows dH
  }

  void adam_step(long t, double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8) {
    const double step_size = lr * std::sqrt(1.0 - std::pow(beta2, t)) / (1.0 - std::pow(beta1, t));
    e_.adam(params_, grads_, m_, v_, count_, static_cast<float>(step_size), static_cast<float>(beta1),
            static_cast<float>(beta2), static_cast<float>(eps));
  }

 private:
  std::size_t b1_offset() const { return static_cast<std::size_t>(in_) * hidden_; }
  std::size_t w2_offset() const { return b1_offset() + hidden_; }
  std::size_t b2_offset() const { return w2_offset() + static_cast<std::size_t>(hidden_) * out_; }
  const float* w1() const { return params_; }
  const float* b1() const { return params_ + b1_offset(); }
  const float* w2() const { return params_ + w2_offset(); }
  const float* b2() const { return params_ + b2_offset(); }

  Engine& e_;
  int in_, hidden_, out_, batch_;
  std::size_t count_ = 0;
  float *params_ = nullptr, *grads_ = nullptr, *m_ = nullptr, *v_ = nullptr;
  float *h_ = nullptr, *dh_ = nullptr, *z_ = nullptr;
};

/// Learning-rate schedule: constant, then a linear decay to 5% over the last half of training.
inline double lr_at(long step, long steps, double lr) {
  const double half = 0.5 * static_cast<double>(steps);
  if (static_cast<double>(step) <= half) return lr;
  const double f = (static_cast<double>(step) - half) / std::max(1.0, static_cast<double>(steps) - half);
  return lr * (1.0 - 0.95 * f);
}

// ---------------------------------------------------------------------------------------
// The training loop the examples share: data on the engine's side, the workspace, and the
// steps themselves. Each example states only its data, its loss call and its evaluation.

/// The training set on the engine's side. It is re-shuffled (on the host) every epoch; batches
/// are consecutive slices of it, so a step copies no data.
template <class Label>
class ShuffledSet {
 public:
  ShuffledSet(Engine& e, Rng& rng, const std::vector<float>& x, const std::vector<Label>& y, long features)
      : e_(e), rng_(rng), x_(x), y_(y), features_(features), rows_(static_cast<long>(y.size())),
        d_x_(e.alloc(x.size())), d_y_(static_cast<Label*>(e.alloc_bytes(y.size() * sizeof(Label)))),
        perm_(y.size()), xs_(x.size()), ys_(y.size()) {
    for (long i = 0; i < rows_; ++i) perm_[static_cast<std::size_t>(i)] = i;
  }

  void shuffle_and_upload() {
    rng_.shuffle(perm_);
    for (long i = 0; i < rows_; ++i) {
      const long src = perm_[static_cast<std::size_t>(i)];
      std::copy_n(x_.data() + src * features_, features_, xs_.data() + i * features_);
      ys_[static_cast<std::size_t>(i)] = y_[static_cast<std::size_t>(src)];
    }
    e_.upload(d_x_, xs_.data(), xs_.size() * sizeof(float));
    e_.upload(d_y_, ys_.data(), ys_.size() * sizeof(Label));
  }

  long rows() const { return rows_; }
  long features() const { return features_; }
  const float* d_x() const { return d_x_; }
  const Label* d_y() const { return d_y_; }
  /// The shuffled labels / targets on the host, in the order of d_y().
  const std::vector<Label>& y() const { return ys_; }

 private:
  Engine& e_;
  Rng& rng_;
  const std::vector<float>& x_;
  const std::vector<Label>& y_;
  long features_, rows_;
  float* d_x_;
  Label* d_y_;
  std::vector<long> perm_;
  std::vector<float> xs_;
  std::vector<Label> ys_;
};

/// Phase 1, once, before the loop: the workspace depends on the shapes only. One buffer serves
/// both the training step's loss call and the loss-only call over the whole training set (they
/// are ordered on the same stream).
template <class Problem>
fusedloss::ExecutionConfig loss_config_with_workspace(Engine& e, const Problem& step,
                                                      const fusedloss::LossOutputs& step_out, const Problem& full,
                                                      const fusedloss::LossOutputs& full_out) {
  fusedloss::ExecutionConfig config = e.loss_config();
  std::size_t ws_step = 0, ws_full = 0;
  check(fusedloss::workspace_size(step, step_out, config, &ws_step), "fusedloss::workspace_size");
  check(fusedloss::workspace_size(full, full_out, config, &ws_full), "fusedloss::workspace_size");
  config.workspace_bytes = std::max(ws_step, ws_full);
  config.workspace = config.workspace_bytes ? e.alloc_bytes(config.workspace_bytes) : nullptr;
  return config;
}

struct TrainOptions {
  long steps, batch, print_every;
  double lr;
};

/// Trains for opt.steps steps on batches of `train`: forward → fusedloss::compute(problem), which
/// writes the step's loss into its slot of d_loss (print_every slots) and the gradient in place over
/// model.output() → backward → Adam. set_batch_targets(y) points the problem at the batch's labels
/// or targets. Every print_every steps (and after the last) calls report(step, batch_loss) with the
/// mean batch loss since the previous report. Returns the seconds the loop took.
template <class Label, class Problem, class SetBatchTargets, class Report>
double run_training(Engine& e, Mlp& model, ShuffledSet<Label>& train, Problem& problem,
                    fusedloss::LossOutputs& outputs, const fusedloss::ExecutionConfig& config, const TrainOptions& opt,
                    float* d_loss, SetBatchTargets set_batch_targets, Report report) {
  const long batches_per_epoch = train.rows() / opt.batch;
  std::vector<float> loss_slots(static_cast<std::size_t>(opt.print_every));
  const auto t0 = std::chrono::steady_clock::now();
  long last_print = 0;
  for (long step = 1; step <= opt.steps; ++step) {
    const long b = (step - 1) % batches_per_epoch;
    if (b == 0 && step > 1) train.shuffle_and_upload();  // a new epoch
    const float* d_x = train.d_x() + b * opt.batch * train.features();

    model.forward(d_x, static_cast<int>(opt.batch));
    set_batch_targets(train.d_y() + b * opt.batch);
    outputs.loss = d_loss + (step - 1) % opt.print_every;
    check(fusedloss::compute(problem, outputs, config), "fusedloss::compute");  // async on the GPU
    model.backward(d_x);
    model.adam_step(step, lr_at(step, opt.steps, opt.lr));

    if (step % opt.print_every == 0 || step == opt.steps) {
      e.download(loss_slots.data(), d_loss, loss_slots.size() * sizeof(float));  // waits for the stream
      double sum = 0.0;
      for (long s = last_print + 1; s <= step; ++s)
        sum += loss_slots[static_cast<std::size_t>((s - 1) % opt.print_every)];
      const double batch_loss = sum / static_cast<double>(step - last_print);
      last_print = step;
      report(step, batch_loss);
    }
  }
  return seconds_since(t0);
}

}  // namespace example
