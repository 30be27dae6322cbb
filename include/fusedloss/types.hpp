// fusedloss — vocabulary types shared by every entry point.
//
// Nothing in this header needs a CUDA compiler or CUDA headers: the public API speaks in
// raw pointers + sizes + dtype tags + an opaque stream handle, so that it can be wrapped
// by DLPack-style bindings and used from translation units compiled by a plain C++ compiler.
#pragma once

#include <cstddef>
#include <cstdint>

// cudaStream_t is `CUstream_st*`; forward-declaring the struct lets callers pass a real
// cudaStream_t without this header pulling in cuda_runtime.h.
struct CUstream_st;

namespace fusedloss {

/// Result of every entry point. Library code never aborts, exits or prints.
enum class Status : int {
  Success = 0,
  /// The call itself is wrong (null pointer with n > 0, n < 0, C <= 0, size overflow, unknown
  /// enum value, option out of range, unsupported combination such as rmse with reduction sum).
  /// Detected before any work starts; no output is written.
  InvalidArgument = 1,
  /// The call was well formed but some data values are invalid (a class label outside [0, C)
  /// that is not ignore_index, a BCE probability outside [0, 1] or NaN). The rest of the batch
  /// is computed; the offending elements/rows get loss NaN and gradient 0, and their number is
  /// written to LossOutputs::error_count. Returned synchronously by the CPU path and by
  /// compute_sync(); the asynchronous CUDA path reports it only through error_count.
  InvalidValue = 2,
  /// ExecutionConfig::workspace is smaller than workspace_size() asked for. Nothing written.
  WorkspaceTooSmall = 3,
  /// The requested backend is not available (CUDA asked for on a CPU-only build or on a
  /// machine without a usable device), or pointers live in memory the backend cannot reach.
  NotSupported = 4,
  /// A CUDA runtime call failed (launch failure, out of device memory for an opted-in
  /// stream-ordered allocation, ...), or the runtime is in an error state (e.g. after a kernel
  /// fault) in which a pointer's memory space cannot be told; nothing is written then.
  CudaError = 5,
  /// Host memory for the CPU path's scratch, or an opted-in stream-ordered device allocation,
  /// could not be had. Outputs may be partly written.
  OutOfMemory = 6,
};

/// A short, static, human-readable description ("success", "invalid argument", ...).
const char* status_string(Status status) noexcept;

/// Element types. Values (predictions, logits, targets, per-element weights, gradients) are
/// Float32/Float16/BFloat16; class labels are Int32/Int64.
enum class DType : int { Float32 = 0, Float16 = 1, BFloat16 = 2, Int32 = 3, Int64 = 4 };

/// Size in bytes of one element of `dtype`; 0 for an unknown value.
std::size_t dtype_size(DType dtype) noexcept;
/// "f32", "f16", "bf16", "i32", "i64"; "unknown" otherwise.
const char* dtype_name(DType dtype) noexcept;

enum class Reduction : int {
  /// Per element (elementwise losses and kl_div, shape [N] / [N*C]) or per row (cross_entropy,
  /// nll, kl_div_logits, shape [N]). The gradient is that of the sum (an upstream gradient of ones).
  None = 0,
  Mean = 1,
  Sum = 2,
  /// KL losses only: divide the sum by the number of rows N (PyTorch's rule).
  BatchMean = 3,
  /// The loss's own default: BatchMean for kl_div_logits, Mean for everything else.
  Default = 4,
};

enum class Loss : int {
  // Elementwise (regression).
  MSE = 0,
  MAE = 1,
  L1 = MAE,  ///< alias of MAE
  RMSE = 2,
  MSLE = 3,
  Huber = 4,
  SmoothL1 = 5,
  PseudoHuber = 6,
  LogCosh = 7,
  // Elementwise (binary classification).
  Hinge = 8,
  SquaredHinge = 9,
  BCE = 10,
  BCEWithLogits = 11,
  // Row-wise over [N, C].
  CrossEntropy = 12,
  NLL = 13,
  KLDiv = 14,
  KLDivLogits = 15,
};

/// Canonical lower-case name ("mse", "smooth_l1", "cross_entropy", ...); "unknown" otherwise.
const char* loss_name(Loss loss) noexcept;
/// Parses a canonical name or an alias ("l1"). Returns false (and leaves *out alone) when unknown.
bool parse_loss(const char* name, Loss* out) noexcept;
/// True for the elementwise losses (MSE … BCEWithLogits), false for the row-wise ones.
bool is_elementwise(Loss loss) noexcept;

/// Which implementation runs the call.
enum class Backend : int {
  /// Look at where the pointers live: all host memory → CPU path, all device (or managed)
  /// memory → CUDA path, a mix → InvalidArgument.
  Auto = 0,
  CPU = 1,
  CUDA = 2,
};

const char* backend_name(Backend backend) noexcept;

/// True when the library was built with its CUDA path *and* a CUDA device is usable now.
bool cuda_available() noexcept;

}  // namespace fusedloss
