// fusedloss CPU path — the sparse-label bookkeeping of cross_entropy / nll (and of
// linear_cross_entropy, which runs cross_entropy chunk by chunk): the mean's divisor and the
// number of bad labels, from one sequential pass over the labels.
#pragma once

#include <cstdint>

#include "cpu/load_store.hpp"

namespace fusedloss {
namespace detail {
namespace cpu {

inline double class_weight_at(const float* class_weight, std::int64_t c) {
  return class_weight != nullptr ? static_cast<double>(class_weight[c]) : 1.0;
}

/// The divisor of the mean (Σ w[y_n] over valid, non-ignored rows) and the number of bad labels.
struct LabelStats {
  double weight_sum = 0.0;
  std::int64_t bad = 0;
};

inline LabelStats label_stats(const void* labels, DType label_dtype, std::int64_t rows, std::int64_t classes,
                              std::int64_t ignore_index, const float* class_weight) {
  LabelStats s;
  for (std::int64_t n = 0; n < rows; ++n) {
    const std::int64_t y = load_label(labels, label_dtype, n);
    if (y == ignore_index) continue;
    if (y < 0 || y >= classes) {
      ++s.bad;
      continue;
    }
    s.weight_sum += class_weight_at(class_weight, y);
  }
  return s;
}

}  // namespace cpu
}  // namespace detail
}  // namespace fusedloss
