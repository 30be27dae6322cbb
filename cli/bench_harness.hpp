// fusedloss CLI — `fusedloss bench`: the harness every device shares.
//
// A runner is BenchHarness<Device>. The harness owns the method: buffer sets rotated until the
// cache is overrun, the copy ceiling on its own buffers, warm-up then timed calls in batches, the
// fused call with its two-phase workspace, the unfused baselines and the traffic of one call. The
// Device policy supplies only what a device does differently (cli/bench_cpu.cpp: host memory and
// a thread team; cli/bench_cuda.cu: device memory, a stream, CUDA events, kernels and Thrust, also
// built for the emulated device):
//
//   struct Device {
//     using Buffer = ...;                      // owning allocation: get(), as<T>()
//     static constexpr int kMinWarmup;         // calls always made before timing
//     static constexpr int kTimingBatch;       // calls enqueued between two synchronisations
//     static constexpr bool kGpu;              // names the baselines (kernels / loops)
//     static constexpr bool kOpPerLoss;        // baselines compile one loop per elementwise loss
//     BenchDevice describe() const;
//     fusedloss::ExecutionConfig config() const;
//     double memory_budget() const;            // bytes the harness may allocate at once
//     bool measures_traffic() const;           // every access of a call can be counted
//     Buffer alloc(std::size_t bytes);
//     void copy(void* dst, const void* src, std::size_t bytes);     // on the device, enqueued
//     void zero(void* p, std::size_t bytes);                        // enqueued
//     void to_host(void* dst, const void* src, std::size_t bytes);  // synchronous
//     void sync();
//     template <class F> void for_each(std::int64_t count, std::int64_t work, const F& f);     // f(i)
//     template <class F> void for_each_2d(std::int64_t rows, std::int64_t cols, const F& f);  // f(r, c)
//     template <class F> double sum(std::int64_t count, std::int64_t work, const F& term);     // Σ term(i)
//     template <class M, class F> void row_reduce(std::int64_t rows, std::int64_t cols, bool max,
//                                                 const M& map, const F& finish);  // finish(r, ⊕_c map(r, c))
//     void begin_batch(bool hold);  void mark(int slot);  double elapsed_ms(int from, int to);
//     void end_batch(bool hold, bool check);  // releases the hold, waits for the batch
//   };
//
// Functors handed to for_each / sum / row_reduce are FUSEDLOSS_HD structs: the CPU calls them in
// loops, the GPU in kernels or Thrust.
//
// The losses: loss_runners<Device>() is a table of LossRunner entries (the buffers a case needs,
// the fused call, the baseline); the first entry that handles a case times it. A new family of
// losses adds one entry, in its own file.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

#include "cli/bench.hpp"
#include "cli/bench_data.hpp"
#include "cli/common.hpp"
#include "fusedloss/detail/elementwise_ops.hpp"
#include "fusedloss/detail/rowwise_ops.hpp"
#include "fusedloss/float16.hpp"

namespace fusedloss_cli {
namespace bench_harness {

using fusedloss::DType;
using fusedloss::Loss;
using fusedloss::Reduction;

// ---- storage: one element type per dtype on every device ---------------------------------------

FUSEDLOSS_HD inline float load(const float* p, std::int64_t i) { return p[i]; }
FUSEDLOSS_HD inline void store(float* p, std::int64_t i, float v) { p[i] = v; }
// On a GPU the conversions are the hardware's (same rounding: to nearest, ties to even).
FUSEDLOSS_HD inline float load(const fusedloss::half_t* p, std::int64_t i) {
#if defined(__CUDA_ARCH__)
  return __half2float(reinterpret_cast<const __half*>(p)[i]);
#else
  return fusedloss::to_float(p[i]);
#endif
}
FUSEDLOSS_HD inline void store(fusedloss::half_t* p, std::int64_t i, float v) {
#if defined(__CUDA_ARCH__)
  reinterpret_cast<__half*>(p)[i] = __float2half_rn(v);
#else
  p[i] = fusedloss::to_half(v);
#endif
}
FUSEDLOSS_HD inline float load(const fusedloss::bfloat16_t* p, std::int64_t i) {
#if defined(__CUDA_ARCH__)
  return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(p)[i]);
#else
  return fusedloss::to_float(p[i]);
#endif
}
FUSEDLOSS_HD inline void store(fusedloss::bfloat16_t* p, std::int64_t i, float v) {
#if defined(__CUDA_ARCH__)
  reinterpret_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
#else
  p[i] = fusedloss::to_bfloat16(v);
#endif
}

/// f(S*) with a null pointer of the dtype's element type.
template <class F>
void with_storage(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float16: f(static_cast<fusedloss::half_t*>(nullptr)); return;
    case DType::BFloat16: f(static_cast<fusedloss::bfloat16_t*>(nullptr)); return;
    default: f(static_cast<float*>(nullptr)); return;
  }
}

/// f(L*) with a null pointer of the label type.
template <class F>
void with_labels(DType dtype, F&& f) {
  if (dtype == DType::Int32) f(static_cast<std::int32_t*>(nullptr));
  else f(static_cast<std::int64_t*>(nullptr));
}

// ---- buffers -------------------------------------------------------------------------------------

/// What each buffer of a set holds. Extra* are for loss families with more operands.
enum class Role : int { Input, Target, Weight, Labels, Grad, Loss, ErrorCount, Extra0, Extra1, Extra2, Extra3, Count };
constexpr int kRoles = static_cast<int>(Role::Count);

/// One buffer of a case and how it starts: filled with values, labels, or zeros.
struct BufferSpec {
  enum class Init { Zero, Values, Labels };
  Role role = Role::Input;
  Init init = Init::Zero;
  DType dtype = DType::Float32;  ///< element type (values: the loss dtype; labels: int32 / int64)
  std::int64_t count = 0;        ///< elements
  bench_data::Fill fill;
  std::uint64_t seed_offset = 0;  ///< added to the set's seed: each buffer gets its own stream
  std::size_t bytes() const { return static_cast<std::size_t>(count) * fusedloss::dtype_size(dtype); }
};

/// One set's device pointers, by role (nullptr: the case has no such buffer).
struct BufferSet {
  std::array<void*, kRoles> ptr{};
  void* operator[](Role r) const { return ptr[static_cast<std::size_t>(r)]; }
  template <class T>
  T* as(Role r) const {
    return static_cast<T*>(ptr[static_cast<std::size_t>(r)]);
  }
};

template <class S>
struct FillValues {
  S* p;
  bench_data::Fill f;
  std::uint64_t seed;
  FUSEDLOSS_HD void operator()(std::int64_t i) const {
    store(p, i, bench_data::fill_value(f, seed, static_cast<std::uint64_t>(i)));
  }
};

template <class L>
struct FillLabels {
  L* p;
  bench_data::Fill f;
  std::uint64_t seed;
  FUSEDLOSS_HD void operator()(std::int64_t i) const {
    p[i] = static_cast<L>(bench_data::fill_label(f, seed, static_cast<std::uint64_t>(i)));
  }
};

/// Allocates and fills `specs` on `dev`; `owned` keeps the allocations.
template <class Device>
BufferSet make_buffer_set(Device& dev, const std::vector<BufferSpec>& specs, std::uint64_t seed,
                          std::vector<typename Device::Buffer>& owned) {
  BufferSet set;
  for (const BufferSpec& b : specs) {
    owned.push_back(dev.alloc(b.bytes()));
    void* p = owned.back().get();
    set.ptr[static_cast<std::size_t>(b.role)] = p;
    if (b.count == 0) continue;
    const std::uint64_t s = seed + b.seed_offset;
    if (b.init == BufferSpec::Init::Values) {
      with_storage(b.dtype, [&](auto* tag) {
        using S = std::remove_pointer_t<decltype(tag)>;
        dev.for_each(b.count, b.count, FillValues<S>{static_cast<S*>(p), b.fill, s});
      });
    } else if (b.init == BufferSpec::Init::Labels) {
      with_labels(b.dtype, [&](auto* tag) {
        using L = std::remove_pointer_t<decltype(tag)>;
        dev.for_each(b.count, b.count, FillLabels<L>{static_cast<L*>(p), b.fill, s});
      });
    } else {
      dev.zero(p, b.bytes());
    }
  }
  return set;
}

// ---- the unfused baselines: one algorithm per loss over the device's primitives --------------

/// Any elementwise loss, chosen at run time: on a GPU one instantiation per dtype instead of one
/// per loss and dtype (the branch is uniform, so it costs nothing measurable there).
struct AnyElementwiseOp {
  Loss loss;
  FUSEDLOSS_HD void operator()(float x, float y, float& l, float& d) const {
    using fusedloss::detail::ElementwiseOp;
    const fusedloss::detail::ElementwiseOpParams<float> p{};
    switch (loss) {
      case Loss::MSE:
      case Loss::RMSE: ElementwiseOp<Loss::MSE>::eval(x, y, p, l, d); return;
      case Loss::MAE: ElementwiseOp<Loss::MAE>::eval(x, y, p, l, d); return;
      case Loss::MSLE: ElementwiseOp<Loss::MSLE>::eval(x, y, p, l, d); return;
      case Loss::Huber: ElementwiseOp<Loss::Huber>::eval(x, y, p, l, d); return;
      case Loss::SmoothL1: ElementwiseOp<Loss::SmoothL1>::eval(x, y, p, l, d); return;
      case Loss::PseudoHuber: ElementwiseOp<Loss::PseudoHuber>::eval(x, y, p, l, d); return;
      case Loss::LogCosh: ElementwiseOp<Loss::LogCosh>::eval(x, y, p, l, d); return;
      case Loss::Hinge: ElementwiseOp<Loss::Hinge>::eval(x, y, p, l, d); return;
      case Loss::SquaredHinge: ElementwiseOp<Loss::SquaredHinge>::eval(x, y, p, l, d); return;
      case Loss::BCE: ElementwiseOp<Loss::BCE>::eval(x, y, p, l, d); return;
      case Loss::BCEWithLogits: ElementwiseOp<Loss::BCEWithLogits>::eval(x, y, p, l, d); return;
      default: l = 0; d = 0; return;
    }
  }
};

/// One elementwise loss known at compile time: on a CPU the loop then inlines and vectorises the
/// math, as a hand-written loop would (a per-element switch would not).
template <class Op>
struct StaticElementwiseOp {
  FUSEDLOSS_HD void operator()(float x, float y, float& l, float& d) const {
    Op::eval(x, y, fusedloss::detail::ElementwiseOpParams<float>{}, l, d);
  }
};

/// Elementwise pass 1: the (weighted) loss of element i, stored too for reduction none.
template <class S, class Eval>
struct ElementLoss {
  Eval eval;
  const S *x, *y, *w;
  float* loss_none;
  FUSEDLOSS_HD float operator()(std::int64_t i) const {
    float l, d;
    eval(load(x, i), load(y, i), l, d);
    if (w != nullptr) l *= load(w, i);
    if (loss_none != nullptr) loss_none[i] = l;
    return l;
  }
};

/// Elementwise pass 2: the gradient of element i.
template <class S, class Eval>
struct ElementGrad {
  Eval eval;
  const S *x, *y, *w;
  float scale;
  S* g;
  FUSEDLOSS_HD void operator()(std::int64_t i) const {
    float l, d;
    eval(load(x, i), load(y, i), l, d);
    d *= scale;
    if (w != nullptr) d *= load(w, i);
    store(g, i, d);
  }
};

template <class S>
struct LogitAt {
  const S* z;
  std::int64_t C;
  FUSEDLOSS_HD float operator()(std::int64_t n, std::int64_t k) const { return load(z, n * C + k); }
};
struct StoreRow {
  float* out;
  FUSEDLOSS_HD void operator()(std::int64_t n, float v) const { out[n] = v; }
};
template <class S>
struct ExpShifted {
  const S* z;
  std::int64_t C;
  const float* row_max;
  FUSEDLOSS_HD float operator()(std::int64_t n, std::int64_t k) const { return expf(load(z, n * C + k) - row_max[n]); }
};
struct StoreLse {
  const float* row_max;
  float* lse;
  FUSEDLOSS_HD void operator()(std::int64_t n, float sum_exp) const { lse[n] = row_max[n] + logf(sum_exp); }
};
template <class S, class L>
struct CeRowLoss {
  const S* z;
  const L* labels;
  const float* lse;
  std::int64_t C;
  float* loss_none;
  FUSEDLOSS_HD float operator()(std::int64_t n) const {
    const float l = lse[n] - load(z, n * C + static_cast<std::int64_t>(labels[n]));
    if (loss_none != nullptr) loss_none[n] = l;
    return l;
  }
};
/// softmax − one-hot, scaled.
template <class S, class L>
struct CeGrad {
  const S* z;
  const L* labels;
  const float* lse;
  std::int64_t C;
  float scale;
  S* g;
  FUSEDLOSS_HD void operator()(std::int64_t n, std::int64_t k) const {
    const std::int64_t i = n * C + k;
    store(g, i, (expf(load(z, i) - lse[n]) - (k == static_cast<std::int64_t>(labels[n]) ? 1.0f : 0.0f)) * scale);
  }
};
template <class S, class L>
struct NllRowLoss {
  const S* x;
  const L* labels;
  std::int64_t C;
  float* loss_none;
  FUSEDLOSS_HD float operator()(std::int64_t n) const {
    const float l = -load(x, n * C + static_cast<std::int64_t>(labels[n]));
    if (loss_none != nullptr) loss_none[n] = l;
    return l;
  }
};
template <class S, class L>
struct NllScatter {
  S* g;
  const L* labels;
  std::int64_t C;
  float value;
  FUSEDLOSS_HD void operator()(std::int64_t n) const { store(g, n * C + static_cast<std::int64_t>(labels[n]), value); }
};
template <class S>
struct KlLoss {
  const S *q, *p;
  float* loss_none;
  FUSEDLOSS_HD float operator()(std::int64_t i) const {
    float dq;
    const float l = fusedloss::detail::kl_div_element(load(q, i), load(p, i), false, dq);
    if (loss_none != nullptr) loss_none[i] = l;
    return l;
  }
};
template <class S>
struct KlGrad {
  const S* p;
  float scale;
  S* g;
  FUSEDLOSS_HD void operator()(std::int64_t i) const { store(g, i, -load(p, i) * scale); }
};

/// The gradient's destination: over the input for an in-place case.
template <class S>
S* grad_of(const BenchCase& c, const BufferSet& b) {
  return c.inplace ? b.as<S>(Role::Input) : b.as<S>(Role::Grad);
}
inline float* loss_none_of(const BenchCase& c, const BufferSet& b) {
  return c.reduction == Reduction::None ? b.as<float>(Role::Loss) : nullptr;
}

/// Elementwise: a gradient pass and a loss pass. The gradient's scale is known up front (except
/// for rmse), so on a GPU only the final reduction waits; with an in-place gradient the loss is
/// read before the input is overwritten.
template <class Device, class S, class Eval>
double elementwise_passes(Device& dev, const BenchCase& c, const BufferSet& b, Eval eval) {
  const S* x = b.as<S>(Role::Input);
  const S* y = b.as<S>(Role::Target);
  const S* w = c.weighted ? b.as<S>(Role::Weight) : nullptr;
  S* g = grad_of<S>(c, b);
  const double divisor = reduce_divisor(c);
  const float scale = static_cast<float>(1.0 / divisor);
  const bool grad_first = c.loss != Loss::RMSE && !c.inplace;
  if (grad_first) dev.for_each(c.n, c.n, ElementGrad<S, Eval>{eval, x, y, w, scale, g});
  const double total = dev.sum(c.n, c.n, ElementLoss<S, Eval>{eval, x, y, w, loss_none_of(c, b)});
  if (grad_first) return total / divisor;
  double value = total / divisor;
  float grad_scale = scale;
  if (c.loss == Loss::RMSE) {
    value = std::sqrt(total / static_cast<double>(c.n));
    grad_scale = value > 0 ? static_cast<float>(1.0 / (2.0 * static_cast<double>(c.n) * value)) : 0.0f;
  }
  dev.for_each(c.n, c.n, ElementGrad<S, Eval>{eval, x, y, w, grad_scale, g});
  return value;
}

/// Elementwise: a gradient pass and a loss pass. The gradient's scale is known up front (except
/// for rmse), so on a GPU only the final reduction waits; with an in-place gradient the loss is
/// read before the input is overwritten. The loss is a template argument where the device
/// compiles one loop per loss (Device::kOpPerLoss), else chosen per element.
template <class Device>
double elementwise_baseline(Device& dev, const BenchCase& c, const BufferSet& b) {
  double value = 0;
  with_storage(c.dtype, [&](auto* tag) {
    using S = std::remove_pointer_t<decltype(tag)>;
    if constexpr (Device::kOpPerLoss) {
      fusedloss::detail::visit_elementwise_op(c.loss, [&](auto op) {
        value = elementwise_passes<Device, S>(dev, c, b, StaticElementwiseOp<decltype(op)>{});
      });
    } else {
      value = elementwise_passes<Device, S>(dev, c, b, AnyElementwiseOp{c.loss});
    }
  });
  return value;
}

/// cross_entropy with labels, the PyTorch-eager shape of the computation: row max, logsumexp,
/// the nll gather, then softmax − one-hot; `scratch` holds 2 × rows floats.
template <class Device>
double cross_entropy_baseline(Device& dev, const BenchCase& c, const BufferSet& b) {
  double value = 0;
  const std::int64_t N = c.rows, C = c.classes;
  float* row_max = b.as<float>(Role::Extra0);
  float* lse = row_max + N;
  with_storage(c.dtype, [&](auto* stag) {
    using S = std::remove_pointer_t<decltype(stag)>;
    with_labels(c.label_dtype, [&](auto* ltag) {
      using L = std::remove_pointer_t<decltype(ltag)>;
      const S* z = b.as<S>(Role::Input);
      const L* labels = b.as<L>(Role::Labels);
      S* g = grad_of<S>(c, b);
      dev.row_reduce(N, C, true, LogitAt<S>{z, C}, StoreRow{row_max});
      dev.row_reduce(N, C, false, ExpShifted<S>{z, C, row_max}, StoreLse{row_max, lse});
      const double total = dev.sum(N, N * C, CeRowLoss<S, L>{z, labels, lse, C, loss_none_of(c, b)});
      value = total / reduce_divisor(c);
      dev.for_each_2d(N, C, CeGrad<S, L>{z, labels, lse, C, static_cast<float>(1.0 / reduce_divisor(c)), g});
    });
  });
  return value;
}

/// nll: the loss gather, a zeroed gradient, the −scale scatter.
template <class Device>
double nll_baseline(Device& dev, const BenchCase& c, const BufferSet& b) {
  double value = 0;
  with_storage(c.dtype, [&](auto* stag) {
    using S = std::remove_pointer_t<decltype(stag)>;
    with_labels(c.label_dtype, [&](auto* ltag) {
      using L = std::remove_pointer_t<decltype(ltag)>;
      const S* x = b.as<S>(Role::Input);
      const L* labels = b.as<L>(Role::Labels);
      S* g = grad_of<S>(c, b);
      const double total = dev.sum(c.rows, c.n, NllRowLoss<S, L>{x, labels, c.classes, loss_none_of(c, b)});
      value = total / reduce_divisor(c);
      dev.zero(g, static_cast<std::size_t>(c.n) * sizeof(S));
      dev.for_each(c.rows, c.n, NllScatter<S, L>{g, labels, c.classes, static_cast<float>(-1.0 / reduce_divisor(c))});
    });
  });
  return value;
}

/// kl_div: the loss pass, then the gradient −target.
template <class Device>
double kl_div_baseline(Device& dev, const BenchCase& c, const BufferSet& b) {
  double value = 0;
  with_storage(c.dtype, [&](auto* tag) {
    using S = std::remove_pointer_t<decltype(tag)>;
    const S* q = b.as<S>(Role::Input);
    const S* p = b.as<S>(Role::Target);
    const double total = dev.sum(c.n, c.n, KlLoss<S>{q, p, loss_none_of(c, b)});
    value = total / reduce_divisor(c);
    dev.for_each(c.n, c.n, KlGrad<S>{p, static_cast<float>(1.0 / reduce_divisor(c)), grad_of<S>(c, b)});
  });
  return value;
}

// ---- the loss runners -----------------------------------------------------------------------

/// How the harness times one family of losses.
template <class Device>
struct LossRunner {
  bool (*handles)(const BenchCase&);
  /// The buffers of one set (the baseline's scratch included).
  std::vector<BufferSpec> (*buffers)(const BenchCase&);
  /// Calls `f(problem, outputs)` for the case over a set: the harness passes workspace_size, then compute.
  fusedloss::Status (*call)(const BenchCase&, const BufferSet&, const fusedloss::ExecutionConfig&, std::size_t* workspace_query);
  /// The baseline's name on a GPU / a CPU; nullptr: no baseline for this case.
  const char* (*baseline_name)(const BenchCase&, bool gpu);
  double (*baseline)(Device&, const BenchCase&, const BufferSet&);
};

/// The standard layout: input, target or labels, weights, gradient (unless in place), loss, and the
/// cross_entropy baseline's per-row scratch.
inline std::vector<BufferSpec> standard_buffers(const BenchCase& c) {
  using Init = BufferSpec::Init;
  std::vector<BufferSpec> v;
  v.push_back({Role::Input, Init::Values, c.dtype, c.n, bench_data::input_fill(c.loss), 0});
  const bool labels = c.rowwise && (c.loss == Loss::NLL || (c.loss == Loss::CrossEntropy && !c.soft));
  if (labels) {
    v.push_back({Role::Labels, Init::Labels, c.label_dtype, c.rows, bench_data::label_fill(c.classes), 7});
  } else {
    v.push_back({Role::Target, Init::Values, c.dtype, c.n,
                 bench_data::target_fill(c.loss, std::max<std::int64_t>(1, c.classes)), 7});
  }
  if (c.weighted && !c.rowwise) v.push_back({Role::Weight, Init::Values, c.dtype, c.n, bench_data::weight_fill(), 13});
  if (!c.inplace) v.push_back({Role::Grad, Init::Zero, c.dtype, c.n, {}, 0});
  const std::int64_t losses = c.reduction != Reduction::None ? 1 : (!c.rowwise || c.loss == Loss::KLDiv ? c.n : c.rows);
  v.push_back({Role::Loss, Init::Zero, DType::Float32, losses, {}, 0});
  if (c.rowwise && c.loss == Loss::CrossEntropy && !c.soft)
    v.push_back({Role::Extra0, Init::Zero, DType::Float32, 2 * c.rows, {}, 0});
  return v;
}

inline fusedloss::Status standard_call(const BenchCase& c, const BufferSet& s, const fusedloss::ExecutionConfig& cfg,
                                       std::size_t* workspace_query) {
  BenchBuffers b;
  b.x = s[Role::Input];
  b.y = s[Role::Target];
  b.w = s[Role::Weight];
  b.labels = s[Role::Labels];
  b.grad = s[Role::Grad];
  b.loss = s.as<float>(Role::Loss);
  b.error_count = s.as<std::int64_t>(Role::ErrorCount);
  return with_bench_problem(c, b, [&](const auto& p, const auto& out) {
    return workspace_query != nullptr ? fusedloss::workspace_size(p, out, cfg, workspace_query)
                                      : fusedloss::compute(p, out, cfg);
  });
}

template <class Device>
double standard_baseline(Device& dev, const BenchCase& c, const BufferSet& b) {
  if (!c.rowwise) return elementwise_baseline(dev, c, b);
  if (c.loss == Loss::CrossEntropy) return cross_entropy_baseline(dev, c, b);
  if (c.loss == Loss::NLL) return nll_baseline(dev, c, b);
  return kl_div_baseline(dev, c, b);
}

inline const char* standard_baseline_name(const BenchCase& c, bool gpu) {
  if (!has_unfused_baseline(c)) return nullptr;
  if (!c.rowwise)
    return gpu ? "thrust transform_reduce (loss) + thrust transform (gradient)"
               : "naive two-pass loop (gradient pass, loss pass)";
  if (!gpu) return "naive multi-pass loops";
  return c.loss == Loss::CrossEntropy ? "separate kernels: row max, logsumexp, nll gather (thrust), "
                                        "softmax-minus-one-hot gradient"
                                      : "thrust transform_reduce + gradient pass";
}

/// Every loss family `fusedloss bench` times; the first entry that handles a case times it.
template <class Device>
const std::vector<LossRunner<Device>>& loss_runners() {
  static const std::vector<LossRunner<Device>> table = {
      // elementwise losses, cross_entropy (labels / soft targets), nll, kl_div, kl_div_logits
      {[](const BenchCase&) { return true; }, standard_buffers, standard_call, standard_baseline_name,
       standard_baseline<Device>},
  };
  return table;
}

// ---- the harness ------------------------------------------------------------------------------

template <class Device>
class BenchHarness : public BenchRunner {
 public:
  template <class... Args>
  explicit BenchHarness(Args&&... args) : dev_(std::forward<Args>(args)...) {}

  BenchDevice device() const override { return dev_.describe(); }

  bool measures_traffic() const override { return dev_.measures_traffic(); }

  bool has_baseline(const BenchCase& c) const override { return runner_for(c).baseline_name(c, Device::kGpu) != nullptr; }

  CaseResult run(const BenchCase& c, const BenchSettings& s) override {
    const LossRunner<Device>& lr = runner_for(c);
    const std::vector<BufferSpec> specs = lr.buffers(c);
    CaseResult r;
    const double budget = dev_.memory_budget();

    // 1. The copy ceiling, on its own buffers (freed before the problem's are allocated): a
    //    device-to-device copy of half the bytes moves the bytes the fused call must move.
    {
      const std::size_t copy_bytes = static_cast<std::size_t>(traffic_bytes(c) / 2);
      int sets = rotation_sets(s.rotate_bytes, 2.0 * copy_bytes);
      while (sets > 1 && 2.0 * copy_bytes * sets > budget) --sets;
      if (2.0 * copy_bytes * sets > budget)
        throw RuntimeFailure("not enough device memory for the copy (" + std::to_string(2 * copy_bytes) + " bytes)");
      std::vector<typename Device::Buffer> src, dst;
      for (int k = 0; k < sets; ++k) {
        src.push_back(dev_.alloc(copy_bytes));
        dst.push_back(dev_.alloc(copy_bytes));
        dev_.zero(src.back().get(), copy_bytes);  // any contents: the copy does not look at them
      }
      r.copy = time_calls(
          [&](int i) {
            const std::size_t k = static_cast<std::size_t>(i % sets);
            dev_.copy(dst[k].get(), src[k].get(), copy_bytes);
          },
          s, true);
    }

    // 2. The problem's buffer sets, rotated.
    double set_bytes = 0;
    for (const BufferSpec& b : specs) set_bytes += static_cast<double>(b.bytes());
    set_bytes = std::max(1.0, set_bytes);
    int sets = rotation_sets(s.rotate_bytes, set_bytes);
    while (sets > 1 && set_bytes * sets > budget) --sets;
    if (set_bytes > budget)
      throw RuntimeFailure("not enough device memory: one buffer set needs " +
                           std::to_string(static_cast<long long>(set_bytes)) + " bytes, " +
                           std::to_string(static_cast<long long>(budget / 0.85)) + " free");
    r.buffer_sets = sets;
    std::vector<typename Device::Buffer> owned;
    std::vector<BufferSet> bufs;
    std::vector<BufferSpec> with_errors = specs;
    with_errors.push_back({Role::ErrorCount, BufferSpec::Init::Zero, DType::Int64, 1, {}, 0});
    for (int k = 0; k < sets; ++k) bufs.push_back(make_buffer_set(dev_, with_errors, 1000 + k, owned));
    dev_.sync();

    // 3. Fused, with its workspace (phase 1: the size; phase 2: the calls).
    fusedloss::ExecutionConfig cfg = dev_.config();
    std::size_t ws_bytes = 0;
    check_status(lr.call(c, bufs[0], cfg, &ws_bytes), "workspace_size");
    typename Device::Buffer workspace = dev_.alloc(ws_bytes);
    cfg.workspace = workspace.get();
    cfg.workspace_bytes = ws_bytes;
    auto fused_once = [&](int i) {
      check_status(lr.call(c, bufs[static_cast<std::size_t>(i % sets)], cfg, nullptr), "fused call");
    };
    r.fused = time_calls(fused_once, s, true);
    if (c.reduction != Reduction::None) {
      float v = 0;
      dev_.to_host(&v, bufs[0][Role::Loss], sizeof v);
      r.fused_loss = v;
    }

    // 4. What one fused call moves: counted where the device sees every access, else the model.
    if (dev_.measures_traffic()) r.traffic = measure_call_traffic([&] { fused_once(0); });

    // 5. The unfused baseline.
    const char* baseline = s.baseline ? lr.baseline_name(c, Device::kGpu) : nullptr;
    if (baseline != nullptr) {
      r.unfused_name = baseline;
      r.unfused = time_calls([&](int i) { lr.baseline(dev_, c, bufs[static_cast<std::size_t>(i % sets)]); }, s, false);
      r.unfused_loss = lr.baseline(dev_, c, bufs[0]);
      dev_.sync();
      // With an in-place gradient the inputs were overwritten: the two values are not comparable.
      r.has_loss_values = c.reduction != Reduction::None && !c.inplace;
    }
    return r;
  }

 private:
  const LossRunner<Device>& runner_for(const BenchCase& c) const {
    for (const LossRunner<Device>& lr : loss_runners<Device>())
      if (lr.handles(c)) return lr;
    throw RuntimeFailure(std::string("no bench runner for ") + fusedloss::loss_name(c.loss));
  }

  static void check_status(fusedloss::Status st, const char* what) {
    if (st != fusedloss::Status::Success)
      throw RuntimeFailure(std::string(what) + " failed: " + fusedloss::status_string(st));
  }

  /// Warm-up calls, then up to `repeats` timed calls in batches of Device::kTimingBatch (fewer
  /// when the warm-up says they would take longer than max_case_seconds); `hold`: the device may
  /// hold its queue until a batch is enqueued, so launch overhead never idles it between stamps.
  template <class F>
  Timing time_calls(F&& once, const BenchSettings& s, bool hold) {
    using clock = std::chrono::steady_clock;
    const int warmup = std::max(Device::kMinWarmup, s.warmup);
    const auto w0 = clock::now();
    for (int i = 0; i < warmup; ++i) once(i);
    dev_.sync();
    int reps = std::max(1, s.repeats);
    if (warmup > 0) {
      const double per_call = std::chrono::duration<double>(clock::now() - w0).count() / warmup;
      if (per_call * reps > s.max_case_seconds)
        reps = std::min(reps, std::max(3, static_cast<int>(s.max_case_seconds / std::max(per_call, 1e-12))));
    }
    std::vector<double> ms;
    const auto start = clock::now();
    for (int b0 = 0; b0 < reps; b0 += Device::kTimingBatch) {
      const int b1 = std::min(reps, b0 + Device::kTimingBatch);
      dev_.begin_batch(hold);
      try {
        for (int r = b0; r < b1; ++r) {
          dev_.mark(2 * (r - b0));
          once(warmup + r);
          dev_.mark(2 * (r - b0) + 1);
        }
      } catch (...) {
        dev_.end_batch(hold, false);
        throw;
      }
      dev_.end_batch(hold, true);
      for (int r = b0; r < b1; ++r) ms.push_back(dev_.elapsed_ms(2 * (r - b0), 2 * (r - b0) + 1));
      if (ms.size() >= 3 && std::chrono::duration<double>(clock::now() - start).count() > s.max_case_seconds) break;
    }
    return summarize(std::move(ms));
  }

  Device dev_;
};

}  // namespace bench_harness
}  // namespace fusedloss_cli
