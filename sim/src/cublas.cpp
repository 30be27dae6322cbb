// fusedloss emulated device — the cuBLAS calls fusedloss makes, on the CPU (see sim/include/cublas_v2.h).
//
// cublasSgemm checks its arguments as cuBLAS does (CUBLAS_STATUS_INVALID_VALUE, nothing enqueued), then
// checks every matrix against the device allocation table — each operand's whole extent (column-major,
// (cols − 1)·ld + rows elements) must lie in one live allocation (memcheck) and the inputs must have been
// written (initcheck; C only when beta ≠ 0) — and enqueues the product on the handle's stream, where it runs
// as cblas_sgemm (column-major, fp32 accumulation). A finding is reported like a kernel's and is sticky
// (cudaErrorIllegalAddress), as the real GEMM kernel's fault would be. Alpha and beta are read on the host
// or from device memory as the pointer mode says, when the GEMM runs (the device value at that time).
#include <cblas.h>
#include <cublas_v2.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "internal.hpp"

struct cublasContext {
  cudaStream_t stream = nullptr;
  cublasPointerMode_t pointer_mode = CUBLAS_POINTER_MODE_HOST;
  cublasMath_t math_mode = CUBLAS_DEFAULT_MATH;
  cublasAtomicsMode_t atomics = CUBLAS_ATOMICS_NOT_ALLOWED;
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
};

namespace {

using namespace fusedloss_sim::internal;

/// memcheck + (for inputs) initcheck of a column-major rows × cols operand with leading dimension ld.
bool check_operand(const char* name, const float* p, int rows, int cols, int ld, bool read, bool write) {
  if (rows == 0 || cols == 0) return true;
  const std::size_t count = static_cast<std::size_t>(cols - 1) * static_cast<std::size_t>(ld) + static_cast<std::size_t>(rows);
  const std::size_t bytes = count * sizeof(float);
  Allocation* a = find_allocation(p, bytes, nullptr);
  if (a == nullptr) {
    report(nullptr, "memcheck", std::string("cublasSgemm: ") + name + " (" + std::to_string(bytes) +
                                    " bytes) is not inside one live device allocation", p, cudaErrorIllegalAddress);
    set_sticky(cudaErrorIllegalAddress);
    return false;
  }
  const std::size_t offset = static_cast<std::size_t>(reinterpret_cast<const char*>(p) - a->base);
  if (read && fusedloss_sim::checks_enabled()) {
    // Only the elements the GEMM reads: each column's `rows` values (the gap up to ld is not read).
    for (int c = 0; c < cols; ++c) {
      std::size_t first_undefined = 0;
      const std::size_t col = offset + static_cast<std::size_t>(c) * static_cast<std::size_t>(ld) * sizeof(float);
      if (!is_defined(a, col, static_cast<std::size_t>(rows) * sizeof(float), &first_undefined)) {
        report(nullptr, "initcheck", std::string("cublasSgemm reads uninitialised device memory in ") + name,
               a->base + first_undefined, cudaErrorIllegalAddress);
        set_sticky(cudaErrorIllegalAddress);
        return false;
      }
    }
  }
  if (write)
    for (int c = 0; c < cols; ++c)
      mark_defined(a, offset + static_cast<std::size_t>(c) * static_cast<std::size_t>(ld) * sizeof(float),
                   static_cast<std::size_t>(rows) * sizeof(float));
  return true;
}

bool check_scalar(const char* name, const float* p, cublasPointerMode_t mode) {
  if (mode == CUBLAS_POINTER_MODE_HOST) return true;
  return check_operand(name, p, 1, 1, 1, true, false);
}

CBLAS_TRANSPOSE cblas_op(cublasOperation_t op) { return op == CUBLAS_OP_N ? CblasNoTrans : CblasTrans; }

}  // namespace

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasContext();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}
/// As cuBLAS: the workspace must be device memory, 256-byte aligned (the emulated GEMM does not use it).
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace, size_t bytes) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes > 0 && (workspace == nullptr || reinterpret_cast<std::uintptr_t>(workspace) % 256 != 0 ||
                    find_allocation(workspace, bytes, nullptr) == nullptr))
    return CUBLAS_STATUS_INVALID_VALUE;
  handle->workspace = workspace;
  handle->workspace_bytes = bytes;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE) return CUBLAS_STATUS_INVALID_VALUE;
  handle->pointer_mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->math_mode = mode;  // fp32 throughout: every mode computes what PEDANTIC computes
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetAtomicsMode(cublasHandle_t handle, cublasAtomicsMode_t mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->atomics = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                              int k, const float* alpha, const float* A, int lda, const float* B, int ldb,
                              const float* beta, float* C, int ldc) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  const auto valid_op = [](cublasOperation_t op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C; };
  const int a_rows = transa == CUBLAS_OP_N ? m : k, a_cols = transa == CUBLAS_OP_N ? k : m;
  const int b_rows = transb == CUBLAS_OP_N ? k : n, b_cols = transb == CUBLAS_OP_N ? n : k;
  if (!valid_op(transa) || !valid_op(transb) || m < 0 || n < 0 || k < 0 || lda < (a_rows > 1 ? a_rows : 1) ||
      ldb < (b_rows > 1 ? b_rows : 1) || ldc < (m > 1 ? m : 1) || alpha == nullptr || beta == nullptr)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (fusedloss_sim::internal::sticky_error() != cudaSuccess) return CUBLAS_STATUS_EXECUTION_FAILED;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  const cublasPointerMode_t mode = handle->pointer_mode;
  // Host-mode scalars are read at the call, as cuBLAS does; device-mode ones when the GEMM runs.
  const float host_alpha = mode == CUBLAS_POINTER_MODE_HOST ? *alpha : 0.0f;
  const float host_beta = mode == CUBLAS_POINTER_MODE_HOST ? *beta : 0.0f;
  const cudaError_t e = enqueue_host(handle->stream, [=] {
    if (!check_scalar("alpha", alpha, mode) || !check_scalar("beta", beta, mode)) return;
    const float a = mode == CUBLAS_POINTER_MODE_HOST ? host_alpha : *alpha;
    const float b = mode == CUBLAS_POINTER_MODE_HOST ? host_beta : *beta;
    if (k > 0 && a != 0.0f &&
        (!check_operand("A", A, a_rows, a_cols, lda, true, false) ||
         !check_operand("B", B, b_rows, b_cols, ldb, true, false)))
      return;
    if (!check_operand("C", C, m, n, ldc, b != 0.0f, true)) return;
    cblas_sgemm(CblasColMajor, cblas_op(transa), cblas_op(transb), m, n, k, a, A, lda, B, ldb, b, C, ldc);
  });
  return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

}  // extern "C"
