// fusedloss CLI — `fusedloss bench`: the cases, the runner interface and the pieces the sweep
// (bench.cpp) and the runners share. The runners are one harness (bench_harness.hpp) over a CPU
// device (bench_cpu.cpp) and a CUDA device (bench_cuda.cu, compiled only with the CUDA path, also
// for the emulated device). Kept free of nlohmann-json and CLI11 so the .cu file stays a plain
// nvcc translation unit.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fusedloss/api.hpp"

namespace fusedloss_cli {

/// One point of the sweep.
struct BenchCase {
  fusedloss::Loss loss = fusedloss::Loss::MSE;
  fusedloss::DType dtype = fusedloss::DType::Float32;
  bool rowwise = false;
  std::int64_t n = 0;  ///< elements: n (elementwise) or rows × classes
  std::int64_t rows = 0, classes = 0;
  fusedloss::Reduction reduction = fusedloss::Reduction::Mean;  ///< resolved
  bool weighted = false;  ///< per-element weights (elementwise only)
  bool inplace = false;   ///< gradient written over the input
  bool soft = false;      ///< cross_entropy with dense targets
  fusedloss::DType label_dtype = fusedloss::DType::Int64;

  std::vector<std::int64_t> shape() const;  ///< {n} or {rows, classes}
  std::string shape_text() const;           ///< "1048576" or "16384x128256"
};

/// Bytes the fused call must move at the least (the "effective bandwidth" numerator):
///   elementwise: x + y (+ w) read, gradient written (+ the per-element loss for `none`);
///   cross_entropy: logits read once, gradient written once, labels read (soft: + targets);
///   nll: gradient written, the N label entries and N picked inputs read;
///   kl_div / kl_div_logits: input and target read, gradient written.
double traffic_bytes(const BenchCase& c);
/// The divisor of the case's reduction (1 for sum / none).
double reduce_divisor(const BenchCase& c);
/// How many sets of `set_bytes` to rotate through so that at least `rotate_bytes` are touched (1 to 64).
int rotation_sets(double rotate_bytes, double set_bytes);
/// Whether the timers have an unfused baseline for a case (the same on the CPU and the GPU).
bool has_unfused_baseline(const BenchCase& c);

/// One buffer set's pointers, as the fused call sees them.
struct BenchBuffers {
  void* x = nullptr;
  const void* y = nullptr;       ///< target (elementwise, dense row-wise targets)
  const void* w = nullptr;       ///< per-element weights: used only when the case is weighted
  const void* labels = nullptr;  ///< row-wise class indices
  void* grad = nullptr;          ///< not used for an in-place case: the gradient goes over x
  float* loss = nullptr;
  std::int64_t* error_count = nullptr;
};

/// Calls f(problem, outputs) with the case's ElementwiseProblem or RowwiseProblem over `b`.
template <class F>
fusedloss::Status with_bench_problem(const BenchCase& c, const BenchBuffers& b, F&& f) {
  fusedloss::LossOutputs out;
  out.loss = b.loss;
  out.grad = c.inplace ? b.x : b.grad;
  out.error_count = b.error_count;
  if (!c.rowwise) {
    fusedloss::ElementwiseProblem p;
    p.loss = c.loss;
    p.dtype = c.dtype;
    p.n = c.n;
    p.input = b.x;
    p.target = b.y;
    p.weight = c.weighted ? b.w : nullptr;
    p.reduction = c.reduction;
    return f(p, out);
  }
  fusedloss::RowwiseProblem p;
  p.loss = c.loss;
  p.dtype = c.dtype;
  p.rows = c.rows;
  p.classes = c.classes;
  p.input = b.x;
  p.labels = b.labels;
  p.label_dtype = c.label_dtype;
  p.target = b.y;
  p.reduction = c.reduction;
  return f(p, out);
}

struct Timing {
  bool valid = false;
  double median_ms = 0, min_ms = 0, mean_ms = 0, max_ms = 0;
  int samples = 0;
};
/// Summary statistics of samples in milliseconds.
Timing summarize(std::vector<double> samples_ms);

struct BenchSettings {
  int warmup = 3;
  int repeats = 20;               ///< samples per measurement (at most)
  double max_case_seconds = 1.0;  ///< stop sampling a measurement after this long (at least 3 samples)
  int threads = 0;                ///< CPU: threads of the fused call, the copy and the baseline
  bool baseline = true;
  double rotate_bytes = 0;        ///< rotate buffer sets until at least this many bytes are touched
};

/// What one fused call moved, where the device counts every access (the emulated device).
struct CallTraffic {
  bool measured = false;
  double bytes_read = 0, bytes_written = 0;  ///< distinct bytes each warp-level request asked for
  double sector_bytes = 0;                   ///< in whole 32-byte sectors (what DRAM would move)
  int launches = 0;
};
/// Runs `call` (library calls on the CUDA path) on the emulated device and sums its launches'
/// traffic; throws NoGpuError outside the emulated build.
CallTraffic measure_call_traffic(const std::function<void()>& call);

struct CaseResult {
  Timing fused, unfused, copy;
  double fused_loss = 0, unfused_loss = 0;  ///< the first set's loss value, reduced cases only
  bool has_loss_values = false;
  std::string unfused_name;  ///< e.g. "thrust transform_reduce + transform"; empty: no baseline
  int buffer_sets = 1;
  CallTraffic traffic;  ///< not measured: the JSON reports the model (traffic_bytes)
};

struct BenchDevice {
  std::string backend;  ///< "cuda" or "cpu"
  std::string name;
  int threads = 0;                       ///< CPU
  std::string driver_version, runtime_version;  ///< CUDA
  std::string compute_capability;
  int sm_count = 0;
  std::int64_t memory_bytes = 0, cache_bytes = 0;  ///< device memory / L2 (GPU), LLC (CPU)
  bool emulated = false;  ///< the emulated device (sim/): its times are CPU times, not GPU times
};

class BenchRunner {
 public:
  virtual ~BenchRunner() = default;
  virtual BenchDevice device() const = 0;
  /// Times one case; throws RuntimeFailure on an error (out of memory: the message says so).
  virtual CaseResult run(const BenchCase& c, const BenchSettings& s) = 0;
  /// Whether the unfused baseline exists for a case.
  virtual bool has_baseline(const BenchCase& c) const = 0;
  /// Whether run() counts the bytes a fused call moves (CaseResult::traffic).
  virtual bool measures_traffic() const = 0;
};

std::unique_ptr<BenchRunner> make_cpu_runner(int threads);
/// The CUDA timer; throws NoGpuError when this build has no CUDA path or no GPU is usable.
std::unique_ptr<BenchRunner> make_cuda_runner();

}  // namespace fusedloss_cli
