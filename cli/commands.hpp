// fusedloss CLI — the subcommands. Each returns the process exit status and throws
// UsageError / NoGpuError / RuntimeFailure for the caller (main) to report as one line.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "cli/compare.hpp"
#include "cli/problem.hpp"

namespace fusedloss_cli {

struct CommonLossOptions {
  std::string loss;
  std::string reduction;  ///< empty: the loss's default
  std::string dtype;      ///< empty: from the input file (f2 → f16, else f32) / f32 for generated data
  std::vector<std::string> params;
  InputFiles files;
  int threads = 0;  ///< CPU path threads (0 = all cores)
};

struct EvalOptions : CommonLossOptions {
  std::string device;  ///< "cpu", "cuda" or empty (cuda when available, else cpu)
  std::string out;
  bool no_grad = false;
  bool allow_invalid = false;
  bool quiet = false;
};

struct ValidateOptions : CommonLossOptions {
  std::string shape;  ///< for generated data
  std::uint64_t seed = 1;
  bool soft = false;
  bool weighted = false;
};

struct TrafficOptions : ValidateOptions {
  bool json = false;              ///< JSON on stdout instead of the table
  std::int64_t sample_rows = 16;  ///< row-wise: rows emulated (rows are independent: scaled to N)
  double bandwidth_tbs = 3.0;     ///< the model's memory bandwidth (H100 SXM's measured D2D copy)
};

struct BenchOptions {
  std::string losses;  ///< comma list or "all"; empty: the default set
  std::string dtypes;  ///< comma list; empty: f32,bf16
  std::string sizes;   ///< elementwise sizes, comma list; empty: the device's default sweep
  std::string shapes;  ///< row-wise N x C shapes, comma list; empty: the device's default sweep
  std::string device;  ///< "cpu", "cuda" or empty
  std::string reduction;
  std::string json;
  std::string commit;
  int repeats = 0;  ///< 0: the device's default
  int warmup = -1;  ///< -1: the device's default
  double max_case_seconds = 0;  ///< 0: the device's default
  int threads = 0;
  bool weighted = false;
  bool inplace = false;
  bool soft = false;
  bool no_baseline = false;
  bool no_peers = false;  ///< CPU: skip the PyTorch eager column (bench/peers/torch_peers.py)
  bool quick = false;
};

/// Resolves --device: "cuda" requires a usable GPU (NoGpuError), "" picks cuda when available.
fusedloss::Backend resolve_device(const std::string& device);
/// What a user without a GPU can run instead of `command` (eval, validate, bench): appended to
/// every NoGpuError line.
std::string no_gpu_advice(const std::string& command);

/// The data shape of validate / traffic (--shape or the default); empty with --input. Checks that
/// --input, --target, --shape, --soft and --weighted fit together (UsageError).
std::vector<std::int64_t> data_shape(const ValidateOptions& options, const LossSpec& spec);

int run_eval(const EvalOptions& options);
/// `fusedloss eval --loss linear_cross_entropy` (cli/linear_ce_eval.cpp).
int run_linear_ce_eval(const EvalOptions& options);
/// One row of validate's table (name padded to name_width), and the failing values when it fails.
void print_validate_row(const char* name, int name_width, const Comparison& c, const std::vector<std::int64_t>& shape,
                        fusedloss::DType ulp_dtype, const std::string& tol);
/// Prints the invalid-value counts and the verdict; kExitOk when everything passed and the counts match.
int finish_validate(bool pass, std::int64_t cuda_invalid, std::int64_t cpu_invalid);
/// Throws NoGpuError without a usable CUDA device; else prints which device validate runs on.
void print_validate_device();
/// `validate --loss linear_cross_entropy` (cli/linear_ce_validate.cpp).
int run_linear_ce_validate(const ValidateOptions& options);
/// Writes every (name, array) under `dir` as a set (nothing left behind on failure); UsageError.
void write_outputs(const std::string& dir, const std::vector<std::pair<std::string, NpyArray>>& files);
/// A value as eval prints it ("nan" for any NaN, else %.9g).
std::string format_value(double v);
int run_validate(const ValidateOptions& options);
int run_bench(const BenchOptions& options, const std::string& command_line);
/// `fusedloss traffic` (cli/traffic.cpp): the call's memory traffic on the emulated device.
int run_traffic(const TrafficOptions& options);

}  // namespace fusedloss_cli
