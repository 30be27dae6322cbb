// fusedloss — CUDA kernels of the row-wise losses (cross_entropy sparse / soft, nll, kl_div,
// kl_div_logits). Header-only, CUDA-only; cuda/rowwise.cu plans and launches them (the algorithm,
// the memory traffic and the strategy table are explained there). Split by job:
//   rowwise/primitives.cuh  the row grid of 16-byte vectors (vector_io.cuh), the thread groups
//                           that own a row, online softmax
//   rowwise/policies.cuh    one policy per loss: loads, row statistics, loss, gradient
//   rowwise/drivers.cuh     the register-resident and the streaming row driver, the kernels
//   rowwise/reductions.cuh  the label pass and the loss reduction around the row kernel
#pragma once

#include "fusedloss/cuda/rowwise/drivers.cuh"
#include "fusedloss/cuda/rowwise/reductions.cuh"
