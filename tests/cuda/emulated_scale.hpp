// Sizes for the GPU suite on the emulated device (sim/). There every CUDA thread is a fiber on a
// 2-core CPU, about four orders of magnitude slower than an H100, so the few tests sized for a GPU's
// throughput (hundreds of repetitions, 10^8-element batches) take a smaller size there. Each use
// keeps what the test is about reachable: the same kernels, strategies and code paths, fewer rows
// or repetitions. The full sizes run on real GPUs (bench/gpu_session.sh).
#pragma once

#include <cstdint>

namespace fusedloss_test {

#if defined(FUSEDLOSS_EMULATED_DEVICE)
constexpr bool kEmulatedDevice = true;
#else
constexpr bool kEmulatedDevice = false;
#endif

template <class T>
constexpr T gpu_or_emulated(T gpu, T emulated) {
  return kEmulatedDevice ? emulated : gpu;
}

/// Repetitions of a determinism loop: 100 on a GPU, 4 emulated (the emulated device's schedules
/// vary the order far more than repetitions on one GPU do).
constexpr int kRepetitions = gpu_or_emulated(100, 4);

/// Rows of an [N, C] problem: N on a GPU; emulated, at most ~2^20 elements but at least 3 rows.
/// The strategy depends on C alone, so every plan is still reached.
constexpr std::int64_t rows_for(std::int64_t N, std::int64_t C) {
  if (!kEmulatedDevice) return N;
  const std::int64_t cap = (std::int64_t{1} << 20) / (C > 0 ? C : 1);
  const std::int64_t rows = N < cap ? N : cap;
  return rows < 3 ? (N < 3 ? N : 3) : rows;
}

}  // namespace fusedloss_test
