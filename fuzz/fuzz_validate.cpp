// libFuzzer harness over the argument validator and the CPU path (built by scripts/fuzz.sh with
// clang -fsanitize=fuzzer,address,undefined).
//
// The input bytes decode into an ElementwiseProblem or RowwiseProblem whose pointers all point into
// one small host "arena" (or are null), with options drawn from a table of interesting values
// (0, −0, ±1, ±inf, NaN, 1 ± ε, huge, tiny) or raw bits, sizes either small or wild (negative,
// INT64_MAX, 2^31, 2^61, 2^62 ...), and enum values in and out of range. The rest of the input fills
// the arena, so the data itself is arbitrary too (NaN, ±inf, labels anywhere).
//
// Oracle: an independent model of the API's rules, written from include/fusedloss/api.hpp (not from
// src/validate.cpp), decides whether the call is valid. The harness traps when
//   * workspace_size() or compute() disagrees with the model (a Success for an invalid call, or an
//     InvalidArgument for a valid one);
//   * a rejected call writes anything, or an accepted call writes outside its declared outputs;
//   * an accepted call reports an error count inconsistent with its status.
// compute() runs only when every region the model says the call touches lies inside the arena
// (a valid call with wild sizes is checked through workspace_size(), which reads no data). ASan and
// UBSan catch any out-of-bounds access or undefined behaviour on the way.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "fusedloss/fusedloss.hpp"

namespace {

using fusedloss::Backend;
using fusedloss::DType;
using fusedloss::Loss;
using fusedloss::Reduction;
using fusedloss::Status;

constexpr std::size_t kArenaBytes = 2048;
constexpr std::int64_t kI64Max = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kI64Min = std::numeric_limits<std::int64_t>::min();

[[noreturn]] void fail(const char* what, int got, int want) {
  std::fprintf(stderr, "fuzz_validate: %s (status %d, model %d)\n", what, got, want);
  std::fflush(stderr);
  __builtin_trap();
}

/// Reads the fuzz input front to back; returns zeros once it runs out.
struct Reader {
  const std::uint8_t* data;
  std::size_t size, pos = 0;
  std::uint8_t u8() { return pos < size ? data[pos++] : 0; }
  std::uint64_t u64() {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | u8();
    return v;
  }
  double f64() {
    static const double table[] = {0.0,   -0.0,  1.0,     -1.0,   0.5,     2.0,    1e-300, 1e300,
                                   std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
                                   std::numeric_limits<double>::quiet_NaN(), 1.0 + 1e-12, -1e-9, 100.0, 1e-12};
    const std::uint8_t sel = u8() % 16;
    if (sel < sizeof table / sizeof table[0]) return table[sel];
    const std::uint64_t bits = u64();
    double d;
    std::memcpy(&d, &bits, 8);
    return d;
  }
  /// A size: mostly small (0..small_max), sometimes negative or wild.
  std::int64_t size_value(std::int64_t small_max) {
    static const std::int64_t wild[] = {kI64Max,
                                        kI64Min,
                                        (std::int64_t(1) << 31) + 1,
                                        (std::int64_t(1) << 32) + 1,
                                        std::int64_t(1) << 61,
                                        (std::int64_t(1) << 61) + 1,
                                        std::int64_t(1) << 62,
                                        (std::int64_t(1) << 62) - 1,
                                        std::int64_t(1) << 40,
                                        kI64Max / 2,
                                        kI64Max / 4 + 1,
                                        -(std::int64_t(1) << 62)};
    const std::uint8_t sel = u8() % 16;
    if (sel < 11) return static_cast<std::int64_t>(u8() % (small_max + 1));
    if (sel < 13) return -1 - static_cast<std::int64_t>(u8() % 4);
    if (sel < 15) return wild[u8() % (sizeof wild / sizeof wild[0])];
    return static_cast<std::int64_t>(u64());
  }
  /// An enum value: mostly in range [0, count), sometimes just outside or anywhere.
  int enum_value(int count) {
    const std::uint8_t sel = u8();
    if (sel < 224) return sel % count;
    if (sel < 240) return sel % 2 == 0 ? -1 : count + (sel % 3);
    return static_cast<int>(static_cast<std::int32_t>(u64()));
  }
};

struct Arena {
  std::vector<std::uint64_t> words = std::vector<std::uint64_t>(kArenaBytes / 8);
  unsigned char* base() { return reinterpret_cast<unsigned char*>(words.data()); }
};

/// Null (≈ 1 in 6) or an 8-byte aligned pointer into the arena; `same_as` lets a pointer repeat
/// an earlier one (in-place gradient, deliberate aliasing).
const void* pick_pointer(Reader& r, Arena& a, const std::vector<const void*>& earlier) {
  const std::uint8_t sel = r.u8();
  if (sel % 6 == 0) return nullptr;
  if (sel % 6 == 1 && !earlier.empty()) return earlier[r.u8() % earlier.size()];
  return a.base() + 8 * (r.u8() % (kArenaBytes / 8));
}

// ---- the model: the rules of include/fusedloss/api.hpp --------------------------------------------

bool mul_fits(std::int64_t a, std::int64_t b, std::int64_t* out) { return !__builtin_mul_overflow(a, b, out); }

struct Region {
  const void* ptr;
  std::int64_t bytes;
  bool output;
};

/// Outputs overlap nothing else, except grad == input with the same extent (indices 0 and `grad`).
bool disjoint(const std::vector<Region>& rs, std::size_t grad_index) {
  for (std::size_t i = 0; i < rs.size(); ++i)
    for (std::size_t j = i + 1; j < rs.size(); ++j) {
      const Region &a = rs[i], &b = rs[j];
      if (!a.output && !b.output) continue;
      if (a.ptr == nullptr || b.ptr == nullptr || a.bytes == 0 || b.bytes == 0) continue;
      const auto a0 = reinterpret_cast<std::uintptr_t>(a.ptr), b0 = reinterpret_cast<std::uintptr_t>(b.ptr);
      const bool overlap = a0 < b0 + static_cast<std::uintptr_t>(b.bytes) && b0 < a0 + static_cast<std::uintptr_t>(a.bytes);
      if (!overlap) continue;
      const bool in_place = i == 0 && j == grad_index && a.ptr == b.ptr && a.bytes == b.bytes;
      if (!in_place) return false;
    }
  return true;
}

bool value_dtype(int d) { return d >= 0 && d <= 2; }
std::int64_t esize(int d) { return d == 0 ? 4 : 2; }
// Options must survive float32 (the CUDA path's precision): positive ones in [FLT_MIN, FLT_MAX].
bool pos_f(double v) { return v >= std::numeric_limits<float>::min() && v <= std::numeric_limits<float>::max(); }
bool zpos_f(double v) { return v == 0 || pos_f(v); }
// grad_scale: 0, or a magnitude in [FLT_MIN, FLT_MAX].
bool grad_scale_f(double v) { return v == 0 || pos_f(std::fabs(v)); }

struct Model {
  bool valid = false;
  std::vector<Region> regions;
};

Model model(const fusedloss::ElementwiseProblem& p, const fusedloss::LossOutputs& o) {
  Model m;
  const int loss = static_cast<int>(p.loss), red = static_cast<int>(p.reduction);
  if (loss < 0 || loss > 11 || !value_dtype(static_cast<int>(p.dtype)) || red < 0 || red > 4) return m;
  const Reduction r = p.reduction == Reduction::Default ? Reduction::Mean : p.reduction;
  if (r == Reduction::BatchMean) return m;
  if (p.loss == Loss::RMSE && r != Reduction::Mean) return m;
  if (!grad_scale_f(p.grad_scale)) return m;
  std::int64_t data = 0, loss_bytes = 0, pos_bytes = 0;
  if (p.n < 0 || !mul_fits(p.n, esize(static_cast<int>(p.dtype)), &data)) return m;
  if (p.n > 0 && (p.input == nullptr || p.target == nullptr)) return m;
  const auto& k = p.params;
  if ((p.loss == Loss::Huber || p.loss == Loss::PseudoHuber) && !pos_f(k.delta)) return m;
  if (p.loss == Loss::SmoothL1 && !zpos_f(k.beta)) return m;
  if (p.loss == Loss::BCEWithLogits && !pos_f(k.pos_weight)) return m;
  if (k.columns < 0) return m;
  if ((k.pos_weight_per_column != nullptr) != (k.columns > 0)) return m;
  if (k.pos_weight_per_column != nullptr && (p.loss != Loss::BCEWithLogits || p.n % k.columns != 0)) return m;
  if (!mul_fits(k.columns, 4, &pos_bytes)) return m;  // the per-column vector's size must fit too
  const std::int64_t count = r == Reduction::None ? p.n : 1;
  if (!mul_fits(count, 4, &loss_bytes)) return m;  // so must the float32 [n] loss output's
  if (count > 0 && o.loss == nullptr) return m;
  if (o.lse != nullptr) return m;
  m.regions = {{p.input, data, false},
               {p.target, data, false},
               {p.weight, p.weight ? data : 0, false},
               {k.pos_weight_per_column, pos_bytes, false},
               {o.grad, o.grad ? data : 0, true},
               {o.loss, o.loss ? loss_bytes : 0, true},
               {o.error_count, o.error_count ? 8 : 0, true}};
  if (!disjoint(m.regions, 4)) return m;
  m.valid = true;
  return m;
}

Model model(const fusedloss::RowwiseProblem& p, const fusedloss::LossOutputs& o) {
  Model m;
  const int loss = static_cast<int>(p.loss), red = static_cast<int>(p.reduction);
  if (loss < 12 || loss > 15 || !value_dtype(static_cast<int>(p.dtype)) || red < 0 || red > 4) return m;
  const bool ce = p.loss == Loss::CrossEntropy, nll = p.loss == Loss::NLL, kl = p.loss == Loss::KLDiv,
             kll = p.loss == Loss::KLDivLogits;
  const Reduction r = p.reduction == Reduction::Default ? (kll ? Reduction::BatchMean : Reduction::Mean) : p.reduction;
  if (r == Reduction::BatchMean && !(kl || kll)) return m;
  if (!grad_scale_f(p.grad_scale)) return m;
  if (p.rows < 0 || p.classes < 1 || p.row_stride < 0) return m;
  const std::int64_t stride = p.row_stride == 0 ? p.classes : p.row_stride;
  if (stride < p.classes) return m;
  std::int64_t span = 0, span_bytes = 0, numel = 0, numel_bytes = 0;
  if (p.rows > 0) {
    if (!mul_fits(p.rows - 1, stride, &span) || __builtin_add_overflow(span, p.classes, &span)) return m;
  }
  if (!mul_fits(span, esize(static_cast<int>(p.dtype)), &span_bytes)) return m;
  if (!mul_fits(p.rows, p.classes, &numel) || !mul_fits(numel, 4, &numel_bytes)) return m;  // [N*C] float32
  const bool data = p.rows > 0;
  if (data && p.input == nullptr) return m;
  if (ce) {
    if (p.labels != nullptr && p.target != nullptr) return m;
    if (data && p.labels == nullptr && p.target == nullptr) return m;
  } else if (nll) {
    if (p.target != nullptr || (data && p.labels == nullptr)) return m;
  } else {
    if (p.labels != nullptr || p.class_weight != nullptr) return m;
    if (data && p.target == nullptr) return m;
  }
  const int ld = static_cast<int>(p.label_dtype);
  if (p.labels != nullptr && ld != 3 && ld != 4) return m;
  const auto& k = p.params;
  if (ce && !(zpos_f(k.label_smoothing) && k.label_smoothing <= 1)) return m;
  if (ce && !zpos_f(k.z_loss)) return m;
  if (ce && !zpos_f(k.softcap)) return m;
  if (kll && !pos_f(k.temperature)) return m;
  const std::int64_t count = r != Reduction::None ? 1 : (kl ? numel : p.rows);
  if (count > 0 && o.loss == nullptr) return m;
  if (o.lse != nullptr && !ce) return m;
  std::int64_t label_bytes = 0, weight_bytes = 0;
  if (p.labels != nullptr && !mul_fits(p.rows, ld == 3 ? 4 : 8, &label_bytes)) return m;
  // The class-weight vector's C·4 bytes must fit even with N = 0 (where N·C·4 says nothing about C).
  if (p.class_weight != nullptr && !mul_fits(p.classes, 4, &weight_bytes)) return m;
  m.regions = {{p.input, span_bytes, false},
               {p.target, p.target ? span_bytes : 0, false},
               {p.labels, label_bytes, false},
               {p.class_weight, weight_bytes, false},
               {o.grad, o.grad ? span_bytes : 0, true},
               {o.loss, o.loss ? count * 4 : 0, true},
               {o.lse, o.lse ? p.rows * 4 : 0, true},
               {o.error_count, o.error_count ? 8 : 0, true}};
  if (!disjoint(m.regions, 4)) return m;
  m.valid = true;
  return m;
}

/// Expected status of a call the model considers valid/invalid, given the backend.
Status expected_status(bool valid, Backend backend) {
  if (!valid) return Status::InvalidArgument;
  const int b = static_cast<int>(backend);
  if (b < 0 || b > 2) return Status::InvalidArgument;
  if (backend == Backend::CUDA) return Status::NotSupported;  // this build has no CUDA path
  return Status::Success;
}

bool inside_arena(Arena& a, const Region& r) {
  if (r.ptr == nullptr || r.bytes == 0) return true;
  const auto p = reinterpret_cast<std::uintptr_t>(r.ptr), b = reinterpret_cast<std::uintptr_t>(a.base());
  return p >= b && r.bytes <= static_cast<std::int64_t>(kArenaBytes) &&
         p + static_cast<std::uintptr_t>(r.bytes) <= b + kArenaBytes;
}

template <class Problem>
void exercise(const Problem& p, const fusedloss::LossOutputs& o, const fusedloss::ExecutionConfig& cfg, Arena& a,
              bool use_sync, bool null_bytes) {
  const Model m = model(p, o);
  const Status want = expected_status(m.valid, cfg.backend);

  // Phase 1: workspace_size reads no data, so any sizes are safe to try.
  std::size_t bytes = 0xABCDEF;
  const Status ws = fusedloss::workspace_size(p, o, cfg, null_bytes ? nullptr : &bytes);
  if (null_bytes) {
    if (ws != Status::InvalidArgument) fail("workspace_size accepted bytes == nullptr", int(ws), 1);
  } else {
    if (ws != want) fail("workspace_size status differs from the model", int(ws), int(want));
    if (ws == Status::Success && bytes != 0) fail("the CPU path asked for a workspace", int(ws), 0);
    if (ws != Status::Success && bytes != 0xABCDEF) fail("workspace_size wrote *bytes on failure", int(ws), 0);
  }

  // Phase 2: compute, when it cannot touch memory outside the arena (or must touch nothing).
  bool fits = true;
  for (const Region& r : m.regions) fits = fits && inside_arena(a, r);
  if (want == Status::Success && !fits) return;
  std::vector<unsigned char> before(a.base(), a.base() + kArenaBytes);
  const Status s = use_sync ? fusedloss::compute_sync(p, o, cfg) : fusedloss::compute(p, o, cfg);
  const unsigned char* after = a.base();
  if (want != Status::Success) {
    if (s != want) fail("compute status differs from the model", int(s), int(want));
    if (std::memcmp(before.data(), after, kArenaBytes) != 0) fail("a rejected call wrote memory", int(s), int(want));
    return;
  }
  if (s != Status::Success && s != Status::InvalidValue) fail("a valid call was not computed", int(s), 0);
  // Nothing outside the declared outputs may change.
  std::vector<bool> writable(kArenaBytes, false);
  for (const Region& r : m.regions) {
    if (!r.output || r.ptr == nullptr) continue;
    const std::size_t off = static_cast<const unsigned char*>(r.ptr) - a.base();
    for (std::int64_t i = 0; i < r.bytes; ++i) writable[off + static_cast<std::size_t>(i)] = true;
  }
  for (std::size_t i = 0; i < kArenaBytes; ++i)
    if (!writable[i] && before[i] != after[i]) fail("a valid call wrote outside its outputs", int(s), 0);
  if (o.error_count != nullptr) {
    std::int64_t errors;
    std::memcpy(&errors, o.error_count, 8);
    if (errors < 0) fail("negative error count", int(s), 0);
    if ((errors > 0) != (s == Status::InvalidValue)) fail("error count and status disagree", int(s), int(errors));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Reader r{data, size};
  Arena a;
  const std::uint8_t head = r.u8();
  const bool rowwise = head & 1, use_sync = head & 2, null_bytes = (head & 0x7c) == 0x7c;

  fusedloss::ExecutionConfig cfg;
  const std::uint8_t b = r.u8();
  cfg.backend = b < 200 ? Backend::CPU : (b < 240 ? Backend::Auto : static_cast<Backend>(r.enum_value(3)));
  cfg.cpu_threads = 1 + r.u8() % 3;

  std::vector<const void*> ptrs;
  auto ptr = [&] {
    const void* p = pick_pointer(r, a, ptrs);
    ptrs.push_back(p);
    return p;
  };
  fusedloss::LossOutputs o;

  if (!rowwise) {
    fusedloss::ElementwiseProblem p;
    p.loss = static_cast<Loss>(r.enum_value(12));
    p.dtype = static_cast<DType>(r.enum_value(5));
    p.n = r.size_value(64);
    p.reduction = static_cast<Reduction>(r.enum_value(5));
    if (r.u8() % 4 == 0) p.grad_scale = r.f64();
    p.input = ptr();
    p.target = ptr();
    p.weight = r.u8() % 2 ? ptr() : nullptr;
    const std::uint8_t opt = r.u8();
    if (opt & 1) p.params.delta = r.f64();
    if (opt & 2) p.params.beta = r.f64();
    if (opt & 4) p.params.pos_weight = r.f64();
    if (opt & 8) {
      p.params.pos_weight_per_column = static_cast<const float*>(ptr());
      p.params.columns = r.size_value(16);
    } else if (opt & 16) {
      p.params.columns = r.size_value(16);
    }
    o.loss = static_cast<float*>(const_cast<void*>(ptr()));
    o.grad = r.u8() % 2 ? const_cast<void*>(ptr()) : nullptr;
    o.lse = r.u8() % 16 == 0 ? static_cast<float*>(const_cast<void*>(ptr())) : nullptr;
    o.error_count = r.u8() % 2 ? static_cast<std::int64_t*>(const_cast<void*>(ptr())) : nullptr;
    // The remaining input is the data.
    for (std::size_t i = 0; i < kArenaBytes && r.pos < r.size; ++i) a.base()[i] = r.u8();
    exercise(p, o, cfg, a, use_sync, null_bytes);
  } else {
    fusedloss::RowwiseProblem p;
    {
      // Mostly a row-wise loss (12..15), sometimes an elementwise one or a value out of range.
      const int v = r.enum_value(4);
      const bool elementwise = r.u8() % 8 == 0;
      p.loss = static_cast<Loss>(v >= 0 && v < 4 ? (elementwise ? v : 12 + v) : v);
    }
    p.dtype = static_cast<DType>(r.enum_value(5));
    p.rows = r.size_value(8);
    p.classes = r.size_value(16);
    p.row_stride = r.u8() % 2 ? r.size_value(20) : 0;
    p.reduction = static_cast<Reduction>(r.enum_value(5));
    if (r.u8() % 4 == 0) p.grad_scale = r.f64();
    p.input = ptr();
    const std::uint8_t which = r.u8();
    if (which & 1) p.labels = ptr();
    if (which & 2) p.target = ptr();
    if (which & 4) p.class_weight = static_cast<const float*>(ptr());
    p.label_dtype = static_cast<DType>(r.enum_value(5));
    const std::uint8_t opt = r.u8();
    if (opt & 1) p.params.ignore_index = static_cast<std::int64_t>(r.u64());
    if (opt & 2) p.params.label_smoothing = r.f64();
    if (opt & 4) p.params.z_loss = r.f64();
    if (opt & 8) p.params.softcap = r.f64();
    if (opt & 16) p.params.log_target = true;
    if (opt & 32) p.params.temperature = r.f64();
    o.loss = static_cast<float*>(const_cast<void*>(ptr()));
    o.grad = r.u8() % 2 ? const_cast<void*>(ptr()) : nullptr;
    o.lse = r.u8() % 2 ? static_cast<float*>(const_cast<void*>(ptr())) : nullptr;
    o.error_count = r.u8() % 2 ? static_cast<std::int64_t*>(const_cast<void*>(ptr())) : nullptr;
    for (std::size_t i = 0; i < kArenaBytes && r.pos < r.size; ++i) a.base()[i] = r.u8();
    exercise(p, o, cfg, a, use_sync, null_bytes);
  }
  return 0;
}
