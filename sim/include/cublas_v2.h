// fusedloss emulated device — stands in for the CUDA toolkit's cublas_v2.h when the project is built with
// -DFUSEDLOSS_DEVICE=emulated (this folder comes ahead of the toolkit's include folder).
//
// The declarations are the toolkit's own (cublas_api.h: the real handle, enum and status types); the
// subset of cuBLAS that fusedloss calls is implemented on the CPU in sim/src/cublas.cpp, through OpenBLAS's
// CBLAS: handle create/destroy, stream, workspace, pointer / math / atomics modes and cublasSgemm, each
// ordered on its stream like the emulated runtime's other stream operations, with memcheck and initcheck on
// the device memory a GEMM touches. Any other cuBLAS function is left undefined: using one is a link error.
#pragma once

#include_next <cublas_v2.h>
