// fusedloss CLI — synthetic benchmark data, the same on the host and the device: a counter-based
// hash turns (seed, index) into a value, so the CPU and GPU timers fill identical buffers
// without moving data across PCIe. Values are in ranges that keep each loss on its common
// path (probabilities for bce, {-1, +1} for hinge, labels in [0, C), ...).
#pragma once

#include <cstdint>

#include "fusedloss/float16.hpp"  // FUSEDLOSS_HD
#include "fusedloss/types.hpp"

namespace fusedloss_cli {
namespace bench_data {

enum class FillMode : int { Uniform = 0, Sign = 1, Label = 2 };

/// How to fill one buffer: Uniform in [lo, hi), Sign (±1), Label (integers in [0, classes)).
struct Fill {
  FillMode mode = FillMode::Uniform;
  float lo = 0, hi = 1;
  std::int64_t classes = 1;
};

FUSEDLOSS_HD inline std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/// Uniform in [0, 1) with 24 random bits.
FUSEDLOSS_HD inline float uniform01(std::uint64_t seed, std::uint64_t i) {
  return static_cast<float>(mix64(seed * 0x2545f4914f6cdd1dull + i) >> 40) * (1.0f / 16777216.0f);
}

FUSEDLOSS_HD inline float fill_value(const Fill& f, std::uint64_t seed, std::uint64_t i) {
  const float u = uniform01(seed, i);
  if (f.mode == FillMode::Sign) return u < 0.5f ? -1.0f : 1.0f;
  return f.lo + (f.hi - f.lo) * u;
}

FUSEDLOSS_HD inline std::int64_t fill_label(const Fill& f, std::uint64_t seed, std::uint64_t i) {
  return static_cast<std::int64_t>(mix64(seed * 0x2545f4914f6cdd1dull + i) % static_cast<std::uint64_t>(f.classes));
}

/// The fill of the input (prediction / logits / log-probabilities) of a loss.
inline Fill input_fill(fusedloss::Loss loss) {
  using fusedloss::Loss;
  switch (loss) {
    case Loss::MSLE: return {FillMode::Uniform, 0.0f, 4.0f, 1};
    case Loss::BCE: return {FillMode::Uniform, 0.01f, 0.99f, 1};
    case Loss::BCEWithLogits: return {FillMode::Uniform, -4.0f, 4.0f, 1};
    case Loss::NLL:
    case Loss::KLDiv: return {FillMode::Uniform, -12.0f, -0.1f, 1};
    case Loss::CrossEntropy:
    case Loss::KLDivLogits: return {FillMode::Uniform, -4.0f, 4.0f, 1};
    default: return {FillMode::Uniform, -2.0f, 2.0f, 1};
  }
}

/// The fill of the dense target (elementwise target, soft CE target, KL target).
inline Fill target_fill(fusedloss::Loss loss, std::int64_t classes) {
  using fusedloss::Loss;
  switch (loss) {
    case Loss::MSLE: return {FillMode::Uniform, 0.0f, 4.0f, 1};
    case Loss::Hinge:
    case Loss::SquaredHinge: return {FillMode::Sign, -1.0f, 1.0f, 1};
    case Loss::BCE:
    case Loss::BCEWithLogits: return {FillMode::Uniform, 0.0f, 1.0f, 1};
    case Loss::CrossEntropy:
    case Loss::KLDiv: return {FillMode::Uniform, 0.0f, 2.0f / static_cast<float>(classes), 1};
    case Loss::KLDivLogits: return {FillMode::Uniform, -4.0f, 4.0f, 1};
    default: return {FillMode::Uniform, -1.0f, 1.0f, 1};
  }
}

inline Fill weight_fill() { return {FillMode::Uniform, 0.0f, 2.0f, 1}; }
inline Fill label_fill(std::int64_t classes) { return {FillMode::Label, 0.0f, 0.0f, classes}; }

}  // namespace bench_data
}  // namespace fusedloss_cli
