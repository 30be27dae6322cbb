// Public API odds and ends: status strings, names and parsing, dtype sizes, the host float16 / bfloat16
// conversions (exhaustive round trips, rounding ties, NaN/inf/subnormals against independent references),
// backend selection on host pointers, workspace_size on the CPU path.
#include <gtest/gtest.h>

#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "common/test_util.hpp"

namespace {

using namespace tu;
namespace fl = ::fusedloss;

// ---------------------------------------------------------------------------------------------------------
// Names, strings, sizes
// ---------------------------------------------------------------------------------------------------------

TEST(ApiStatus, EveryStatusHasADistinctNonEmptyString) {
  const Status all[] = {Status::Success,      Status::InvalidArgument, Status::InvalidValue, Status::WorkspaceTooSmall,
                        Status::NotSupported, Status::CudaError,       Status::OutOfMemory};
  std::set<std::string> seen;
  for (Status s : all) {
    const char* str = fl::status_string(s);
    ASSERT_NE(str, nullptr);
    EXPECT_GT(std::strlen(str), 0u);
    EXPECT_TRUE(seen.insert(str).second) << "duplicate status string " << str;
  }
  EXPECT_STREQ(fl::status_string(Status::Success), "success");
  EXPECT_STREQ(fl::status_string(Status::InvalidArgument), "invalid argument");
  // An out-of-range value still yields a valid string (never null, never a crash).
  const char* unknown = fl::status_string(static_cast<Status>(12345));
  ASSERT_NE(unknown, nullptr);
  EXPECT_GT(std::strlen(unknown), 0u);
  EXPECT_EQ(seen.count(unknown), 0u);
}

TEST(ApiNames, DtypeSizesAndNames) {
  EXPECT_EQ(fl::dtype_size(DType::Float32), 4u);
  EXPECT_EQ(fl::dtype_size(DType::Float16), 2u);
  EXPECT_EQ(fl::dtype_size(DType::BFloat16), 2u);
  EXPECT_EQ(fl::dtype_size(DType::Int32), 4u);
  EXPECT_EQ(fl::dtype_size(DType::Int64), 8u);
  EXPECT_EQ(fl::dtype_size(static_cast<DType>(99)), 0u);
  EXPECT_EQ(fl::dtype_size(static_cast<DType>(-1)), 0u);
  EXPECT_EQ(sizeof(fl::half_t), 2u);
  EXPECT_EQ(sizeof(fl::bfloat16_t), 2u);
  EXPECT_STREQ(fl::dtype_name(DType::Float32), "f32");
  EXPECT_STREQ(fl::dtype_name(DType::Float16), "f16");
  EXPECT_STREQ(fl::dtype_name(DType::BFloat16), "bf16");
  EXPECT_STREQ(fl::dtype_name(DType::Int32), "i32");
  EXPECT_STREQ(fl::dtype_name(DType::Int64), "i64");
  EXPECT_STREQ(fl::dtype_name(static_cast<DType>(99)), "unknown");
}

TEST(ApiNames, BackendNames) {
  EXPECT_STREQ(fl::backend_name(fl::Backend::Auto), "auto");
  EXPECT_STREQ(fl::backend_name(fl::Backend::CPU), "cpu");
  EXPECT_STREQ(fl::backend_name(fl::Backend::CUDA), "cuda");
  EXPECT_STREQ(fl::backend_name(static_cast<fl::Backend>(42)), "unknown");
}

TEST(ApiNames, LossNamesRoundTripThroughParseLoss) {
  const char* expected[] = {"mse",       "mae",           "rmse", "msle",           "huber",         "smooth_l1",
                            "pseudo_huber", "log_cosh",   "hinge", "squared_hinge", "bce",           "bce_with_logits",
                            "cross_entropy", "nll",       "kl_div", "kl_div_logits"};
  for (int v = 0; v <= static_cast<int>(Loss::KLDivLogits); ++v) {
    const Loss loss = static_cast<Loss>(v);
    const char* name = fl::loss_name(loss);
    ASSERT_NE(name, nullptr);
    EXPECT_STREQ(name, expected[v]) << "loss value " << v;
    Loss parsed = Loss::KLDivLogits;
    if (v == static_cast<int>(Loss::KLDivLogits)) parsed = Loss::MSE;
    ASSERT_TRUE(fl::parse_loss(name, &parsed)) << name;
    EXPECT_EQ(parsed, loss) << name;
    EXPECT_EQ(fl::is_elementwise(loss), v <= static_cast<int>(Loss::BCEWithLogits)) << name;
  }
  EXPECT_STREQ(fl::loss_name(static_cast<Loss>(77)), "unknown");
  EXPECT_FALSE(fl::is_elementwise(static_cast<Loss>(77)));
  EXPECT_FALSE(fl::is_elementwise(static_cast<Loss>(-1)));
}

TEST(ApiNames, ParseLossAliasAndRejects) {
  Loss out = Loss::Huber;
  ASSERT_TRUE(fl::parse_loss("l1", &out));
  EXPECT_EQ(out, Loss::MAE);
  EXPECT_EQ(Loss::L1, Loss::MAE);
  EXPECT_STREQ(fl::loss_name(Loss::L1), "mae");  // the canonical name, not the alias

  for (const char* bad : {"", "MSE", "mse ", " mse", "cross-entropy", "crossentropy", "kl", "unknown", "l2",
                          "huber\n", "smooth_l1_"}) {
    Loss untouched = Loss::Hinge;
    EXPECT_FALSE(fl::parse_loss(bad, &untouched)) << "'" << bad << "'";
    EXPECT_EQ(untouched, Loss::Hinge) << "parse_loss wrote *out for '" << bad << "'";
  }
  Loss untouched = Loss::Hinge;
  EXPECT_FALSE(fl::parse_loss(nullptr, &untouched));
  EXPECT_EQ(untouched, Loss::Hinge);
  EXPECT_FALSE(fl::parse_loss("mse", nullptr));
}

// ---------------------------------------------------------------------------------------------------------
// float16 / bfloat16 conversions
// ---------------------------------------------------------------------------------------------------------

std::uint32_t fbits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float bitsf(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// Independent reference: round the float `f` to a binary format with `p` significand bits (incl. the
/// implicit one), minimum normal exponent `emin` and largest finite value `maxf`, to nearest, ties to even.
/// Works in double, where every step below is exact.
double ref_round(float f, int p, int emin, double maxf) {
  const double v = f;
  if (std::isnan(v) || std::isinf(v) || v == 0) return v;
  const double a = std::fabs(v);
  const int e = std::max(std::ilogb(a), emin);   // exponent of the binade (subnormals share emin's spacing)
  const double q = std::ldexp(1.0, e - (p - 1));  // spacing of representable values there
  const int saved = std::fegetround();
  std::fesetround(FE_TONEAREST);
  double r = std::nearbyint(a / q) * q;  // a / q is exact (power-of-two scaling); nearbyint ties to even
  std::fesetround(saved);
  // Overflow: the format rounds to inf when a >= maxf + half a spacing of the top binade.
  const double top_q = std::ldexp(1.0, std::ilogb(maxf) - (p - 1));
  if (a >= maxf + top_q / 2) r = std::numeric_limits<double>::infinity();
  return std::copysign(r, v);
}
double ref_half(float f) { return ref_round(f, 11, -14, 65504.0); }
double ref_bf16(float f) { return ref_round(f, 8, -126, std::ldexp(255.0 / 128.0, 127)); }

void expect_half_matches_reference(float f) {
  const fl::half_t h = fl::to_half(f);
  const double got = fl::to_float(h);
  const double want = ref_half(f);
  if (std::isnan(want)) {
    EXPECT_TRUE(std::isnan(got)) << "f=" << f;
    return;
  }
  ASSERT_TRUE(same_value(got, want)) << "to_half(" << f << " / 0x" << std::hex << fbits(f) << ") = 0x" << h.bits
                                     << std::dec << " = " << got << ", expected " << want;
  EXPECT_EQ(std::signbit(got), std::signbit(want)) << "sign of zero for f=" << f;
#ifdef __FLT16_MAX__
  // A second, compiler-provided reference (libgcc's IEEE binary16 conversion).
  const _Float16 c = static_cast<_Float16>(f);
  std::uint16_t cb;
  std::memcpy(&cb, &c, 2);
  ASSERT_EQ(h.bits, cb) << "to_half(" << f << ") differs from _Float16 conversion";
#endif
}

void expect_bf16_matches_reference(float f) {
  const fl::bfloat16_t b = fl::to_bfloat16(f);
  const double got = fl::to_float(b);
  const double want = ref_bf16(f);
  if (std::isnan(want)) {
    EXPECT_TRUE(std::isnan(got)) << "f=" << f;
    return;
  }
  ASSERT_TRUE(same_value(got, want)) << "to_bfloat16(" << f << " / 0x" << std::hex << fbits(f) << ") = 0x"
                                     << b.bits << std::dec << " = " << got << ", expected " << want;
  EXPECT_EQ(std::signbit(got), std::signbit(want)) << "sign of zero for f=" << f;
}

TEST(Float16, EveryHalfRoundTripsExactly) {
  for (std::uint32_t bits = 0; bits <= 0xFFFFu; ++bits) {
    const fl::half_t h{static_cast<std::uint16_t>(bits)};
    const float f = fl::to_float(h);
    const bool is_nan = (bits & 0x7C00u) == 0x7C00u && (bits & 0x03FFu) != 0;
    if (is_nan) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << bits;
      const fl::half_t back = fl::to_half(f);
      ASSERT_EQ(back.bits & 0x7C00u, 0x7C00u) << std::hex << bits;
      ASSERT_NE(back.bits & 0x03FFu, 0u) << "NaN became inf: " << std::hex << bits;
      ASSERT_EQ(back.bits & 0x8000u, bits & 0x8000u) << "NaN sign lost: " << std::hex << bits;
      continue;
    }
    ASSERT_EQ(fl::to_half(f).bits, bits) << "half 0x" << std::hex << bits << " -> " << f;
#ifdef __FLT16_MAX__
    _Float16 c;
    const std::uint16_t b16 = static_cast<std::uint16_t>(bits);
    std::memcpy(&c, &b16, 2);
    ASSERT_EQ(fbits(f), fbits(static_cast<float>(c))) << "to_float(half 0x" << std::hex << bits << ")";
#endif
  }
}

TEST(Float16, EveryBFloat16RoundTripsExactly) {
  for (std::uint32_t bits = 0; bits <= 0xFFFFu; ++bits) {
    const fl::bfloat16_t b{static_cast<std::uint16_t>(bits)};
    const float f = fl::to_float(b);
    ASSERT_EQ(fbits(f), bits << 16);  // bf16 is the top half of a float
    const bool is_nan = (bits & 0x7F80u) == 0x7F80u && (bits & 0x007Fu) != 0;
    if (is_nan) {
      ASSERT_TRUE(std::isnan(f));
      const fl::bfloat16_t back = fl::to_bfloat16(f);
      ASSERT_EQ(back.bits & 0x7F80u, 0x7F80u);
      ASSERT_NE(back.bits & 0x007Fu, 0u) << "NaN became inf: " << std::hex << bits;
      ASSERT_EQ(back.bits & 0x8000u, bits & 0x8000u);
      continue;
    }
    ASSERT_EQ(fl::to_bfloat16(f).bits, bits) << std::hex << bits;
  }
}

TEST(Float16, HalfRoundingTiesToEven) {
  // Between 1 and 1 + 2^-10: the midpoint 1 + 2^-11 goes to the even neighbour 1.
  EXPECT_EQ(fl::to_half(1.0f + std::ldexp(1.0f, -11)).bits, 0x3C00u);
  // Between 1 + 2^-10 (odd) and 1 + 2^-9 (even): the midpoint goes up.
  EXPECT_EQ(fl::to_half(1.0f + 3 * std::ldexp(1.0f, -11)).bits, 0x3C02u);
  // Just above / below a midpoint rounds to the nearer value.
  EXPECT_EQ(fl::to_half(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)).bits, 0x3C01u);
  EXPECT_EQ(fl::to_half(std::nextafter(1.0f + 3 * std::ldexp(1.0f, -11), 0.0f)).bits, 0x3C01u);
  // Negative ties mirror positive ones.
  EXPECT_EQ(fl::to_half(-1.0f - std::ldexp(1.0f, -11)).bits, 0xBC00u);
  EXPECT_EQ(fl::to_half(-1.0f - 3 * std::ldexp(1.0f, -11)).bits, 0xBC02u);
  // A tie that carries into the exponent: 2 − 2^-11 is the midpoint of 2 − 2^-10 (odd mantissa) and 2.
  EXPECT_EQ(fl::to_half(2.0f - std::ldexp(1.0f, -11)).bits, 0x4000u);
  EXPECT_EQ(fl::to_half(std::nextafter(2.0f - std::ldexp(1.0f, -11), 0.0f)).bits, 0x3FFFu);  // 2 − 2^-10
  // Ties in the subnormal range (spacing 2^-24): 0.5 unit → 0, 1.5 units → 2, 2.5 units → 2.
  EXPECT_EQ(fl::to_half(std::ldexp(1.0f, -25)).bits, 0x0000u);
  EXPECT_EQ(fl::to_half(3 * std::ldexp(1.0f, -25)).bits, 0x0002u);
  EXPECT_EQ(fl::to_half(5 * std::ldexp(1.0f, -25)).bits, 0x0002u);
  EXPECT_EQ(fl::to_half(std::nextafter(std::ldexp(1.0f, -25), 1.0f)).bits, 0x0001u);
  // The largest subnormal rounding up into the smallest normal.
  EXPECT_EQ(fl::to_half(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -25)).bits, 0x0400u);
}

TEST(Float16, HalfSpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(fl::to_half(0.0f).bits, 0x0000u);
  EXPECT_EQ(fl::to_half(-0.0f).bits, 0x8000u);
  EXPECT_EQ(fl::to_half(inf).bits, 0x7C00u);
  EXPECT_EQ(fl::to_half(-inf).bits, 0xFC00u);
  EXPECT_EQ(fl::to_half(65504.0f).bits, 0x7BFFu);                // max finite
  EXPECT_EQ(fl::to_half(65519.99f).bits, 0x7BFFu);               // below the overflow midpoint
  EXPECT_EQ(fl::to_half(65520.0f).bits, 0x7C00u);                // the midpoint overflows (ties to even = inf)
  EXPECT_EQ(fl::to_half(-65520.0f).bits, 0xFC00u);
  EXPECT_EQ(fl::to_half(1e30f).bits, 0x7C00u);
  EXPECT_EQ(fl::to_half(std::numeric_limits<float>::max()).bits, 0x7C00u);
  EXPECT_EQ(fl::to_half(std::ldexp(1.0f, -14)).bits, 0x0400u);  // min normal
  EXPECT_EQ(fl::to_half(std::ldexp(1.0f, -24)).bits, 0x0001u);  // min subnormal
  EXPECT_EQ(fl::to_half(-std::ldexp(1.0f, -24)).bits, 0x8001u);
  EXPECT_EQ(fl::to_half(std::numeric_limits<float>::denorm_min()).bits, 0x0000u);  // float subnormal → +0
  EXPECT_EQ(fl::to_half(-std::numeric_limits<float>::denorm_min()).bits, 0x8000u);
  EXPECT_EQ(fl::to_half(1.0f).bits, 0x3C00u);
  EXPECT_EQ(fl::to_half(-2.0f).bits, 0xC000u);
  EXPECT_EQ(fl::to_half(0.1f).bits, 0x2E66u);
  EXPECT_EQ(fl::to_half(10000.0f).bits, 0x70E2u);

  for (float nan : {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
                    std::numeric_limits<float>::signaling_NaN(), bitsf(0x7F800001u), bitsf(0xFFFFFFFFu)}) {
    const fl::half_t h = fl::to_half(nan);
    EXPECT_EQ(h.bits & 0x7C00u, 0x7C00u);
    EXPECT_NE(h.bits & 0x03FFu, 0u) << "NaN 0x" << std::hex << fbits(nan) << " became inf";
    EXPECT_EQ((h.bits & 0x8000u) != 0, std::signbit(nan));
    EXPECT_TRUE(std::isnan(fl::to_float(h)));
  }
  EXPECT_TRUE(std::isinf(fl::to_float(fl::half_t{0x7C00u})));
  EXPECT_EQ(fl::to_float(fl::half_t{0x0001u}), std::ldexp(1.0f, -24));
  EXPECT_EQ(fl::to_float(fl::half_t{0x03FFu}), std::ldexp(1023.0f, -24));
  EXPECT_EQ(fl::to_float(fl::half_t{0x8000u}), 0.0f);
  EXPECT_TRUE(std::signbit(fl::to_float(fl::half_t{0x8000u})));
}

TEST(Float16, BFloat16RoundingAndSpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  // Ties to even at 1: spacing 2^-7.
  EXPECT_EQ(fl::to_bfloat16(1.0f + std::ldexp(1.0f, -8)).bits, 0x3F80u);
  EXPECT_EQ(fl::to_bfloat16(1.0f + 3 * std::ldexp(1.0f, -8)).bits, 0x3F82u);
  EXPECT_EQ(fl::to_bfloat16(std::nextafter(1.0f + std::ldexp(1.0f, -8), 2.0f)).bits, 0x3F81u);
  EXPECT_EQ(fl::to_bfloat16(-1.0f - 3 * std::ldexp(1.0f, -8)).bits, 0xBF82u);
  EXPECT_EQ(fl::to_bfloat16(0.0f).bits, 0x0000u);
  EXPECT_EQ(fl::to_bfloat16(-0.0f).bits, 0x8000u);
  EXPECT_EQ(fl::to_bfloat16(inf).bits, 0x7F80u);
  EXPECT_EQ(fl::to_bfloat16(-inf).bits, 0xFF80u);
  EXPECT_EQ(fl::to_bfloat16(std::numeric_limits<float>::max()).bits, 0x7F80u);  // rounds up to inf
  EXPECT_EQ(fl::to_bfloat16(bitsf(0x7F7F7FFFu)).bits, 0x7F7Fu);                // below the midpoint
  EXPECT_EQ(fl::to_bfloat16(bitsf(0x7F7F8000u)).bits, 0x7F80u);                // the midpoint → inf (even)
  // Subnormals keep their top bits; a tie among subnormals goes to even.
  EXPECT_EQ(fl::to_bfloat16(bitsf(0x00010000u)).bits, 0x0001u);
  EXPECT_EQ(fl::to_bfloat16(bitsf(0x00008000u)).bits, 0x0000u);
  EXPECT_EQ(fl::to_bfloat16(bitsf(0x00018000u)).bits, 0x0002u);
  EXPECT_EQ(fl::to_bfloat16(bitsf(0x007FFFFFu)).bits, 0x0080u);  // largest float subnormal → min normal
  for (float nan : {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
                    bitsf(0x7F800001u), bitsf(0x7FFFFFFFu), bitsf(0xFF800001u)}) {
    const fl::bfloat16_t b = fl::to_bfloat16(nan);
    EXPECT_EQ(b.bits & 0x7F80u, 0x7F80u);
    EXPECT_NE(b.bits & 0x007Fu, 0u) << "NaN 0x" << std::hex << fbits(nan) << " became inf";
    EXPECT_EQ((b.bits & 0x8000u) != 0, std::signbit(nan));
  }
}

TEST(Float16, SampledFloatsMatchIndependentReferences) {
  // Every 2039th float bit pattern (all signs, exponents and NaNs get visited) ...
  for (std::uint64_t u = 0; u <= 0xFFFFFFFFull; u += 2039) {
    const float f = bitsf(static_cast<std::uint32_t>(u));
    expect_half_matches_reference(f);
    expect_bf16_matches_reference(f);
    if (HasFatalFailure()) return;
  }
  // ... plus exact ties and their neighbours at every half / bf16 exponent (normal and subnormal ranges).
  for (int e = -30; e <= 17; ++e) {
    for (std::uint32_t m = 0; m < 64; ++m) {
      const float base = std::ldexp(1.0f + m / 64.0f, e);
      const float tie_h = base + std::ldexp(1.0f, std::max(e, -14) - 11);
      for (float f : {tie_h, std::nextafter(tie_h, 0.0f), std::nextafter(tie_h, 1e30f), -tie_h}) {
        expect_half_matches_reference(f);
        if (HasFatalFailure()) return;
      }
    }
  }
  for (int e = -135; e <= 127; ++e) {
    for (std::uint32_t m = 0; m < 16; ++m) {
      const float base = std::ldexp(1.0f + m / 16.0f, e);
      const float tie_b = base + std::ldexp(1.0f, std::max(e, -126) - 8);
      for (float f : {tie_b, std::nextafter(tie_b, 0.0f), std::nextafter(tie_b, 3e38f), -tie_b}) {
        expect_bf16_matches_reference(f);
        if (HasFatalFailure()) return;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Backends and workspace
// ---------------------------------------------------------------------------------------------------------

struct SmallCalls {
  Buffer x = Buffer::from(DType::Float32, {0.5, -1.0, 2.0, 0.25});
  Buffer y = Buffer::from(DType::Float32, {0.0, 1.0, 1.0, -0.75});
  Buffer logits = Buffer::from(DType::Float32, {0.0, 1.0, 2.0, -1.0, 0.5, 0.5});
  Buffer labels = Buffer::labels(DType::Int64, {2, 0});

  fl::ElementwiseProblem elem() {
    fl::ElementwiseProblem p;
    p.loss = Loss::MSE;
    p.n = 4;
    p.input = x.data();
    p.target = y.data();
    p.reduction = Reduction::Sum;
    return p;
  }
  fl::RowwiseProblem rows() {
    fl::RowwiseProblem p;
    p.loss = Loss::CrossEntropy;
    p.rows = 2;
    p.classes = 3;
    p.input = logits.data();
    p.labels = labels.data();
    p.reduction = Reduction::Sum;
    return p;
  }
};

TEST(ApiBackend, AutoOnHostPointersRunsTheCpuPath) {
  SmallCalls c;
  fl::ExecutionConfig cfg;
  cfg.backend = fl::Backend::Auto;
  const RunResult r = run(c.elem(), true, cfg);
  ASSERT_EQ(r.status, Status::Success) << fl::status_string(r.status);
  EXPECT_DOUBLE_EQ(r.loss[0], 0.25 + 4.0 + 1.0 + 1.0);
  EXPECT_TRUE(close_vec(r.grad_dense, {1.0, -4.0, 2.0, 2.0}, 0, 0));
  EXPECT_EQ(r.error_count, 0);

  cfg.backend = fl::Backend::CPU;
  const RunResult cpu = run(c.elem(), true, cfg);
  ASSERT_EQ(cpu.status, Status::Success);
  EXPECT_TRUE(cpu.grad.same_bits(r.grad));
  EXPECT_EQ(cpu.loss_raw, r.loss_raw);

  const RunResult rows = run(c.rows(), true, true, fl::ExecutionConfig{});
  ASSERT_EQ(rows.status, Status::Success);
  const oracle::Result o = oracle::cross_entropy(2, 3, c.logits.to_double(), {2, 0}, oracle::Red::Sum);
  EXPECT_TRUE(close_vec(rows.loss, o.loss, 1e-6, 0));
  EXPECT_TRUE(close_vec(rows.lse, o.lse, 1e-6, 0));
}

TEST(ApiBackend, CudaOnHostPointersIsNotSupportedAndWritesNothing) {
  // On a CPU-only build (or without a device) CUDA is unavailable; with a device, host pointers are out of the
  // kernels' reach. Either way: NotSupported, nothing written.
  SmallCalls c;
  fl::ExecutionConfig cfg;
  cfg.backend = fl::Backend::CUDA;
  const RunResult e = run(c.elem(), true, cfg);
  EXPECT_EQ(e.status, Status::NotSupported) << fl::status_string(e.status);
  EXPECT_TRUE(all_poison(e.loss_raw));
  EXPECT_TRUE(e.grad.all_poison());
  EXPECT_EQ(e.error_count, poison_i64());

  const RunResult r = run(c.rows(), true, true, cfg);
  EXPECT_EQ(r.status, Status::NotSupported);
  EXPECT_TRUE(all_poison(r.loss_raw));
  EXPECT_TRUE(r.grad.all_poison());
  EXPECT_EQ(r.error_count, poison_i64());

  std::size_t bytes = 12345;
  fl::LossOutputs out;
  float loss = 0;
  out.loss = &loss;
  EXPECT_EQ(fl::workspace_size(c.elem(), out, cfg, &bytes), Status::NotSupported);
  EXPECT_EQ(fl::compute_sync(c.elem(), out, cfg), Status::NotSupported);
}

TEST(ApiBackend, CudaAvailabilityIsStable) {
  // This suite runs on machines with and without a GPU: only check that the query is callable and stable.
  const bool a = fl::cuda_available();
  EXPECT_EQ(a, fl::cuda_available());
}

TEST(ApiBackend, UnknownBackendIsInvalidArgument) {
  SmallCalls c;
  fl::ExecutionConfig cfg;
  cfg.backend = static_cast<fl::Backend>(3);
  const RunResult r = run(c.elem(), true, cfg);
  EXPECT_EQ(r.status, Status::InvalidArgument);
  EXPECT_TRUE(all_poison(r.loss_raw));
  EXPECT_TRUE(r.grad.all_poison());
  cfg.backend = static_cast<fl::Backend>(-1);
  EXPECT_EQ(run(c.rows(), true, false, cfg).status, Status::InvalidArgument);
}

TEST(ApiWorkspace, CpuPathNeedsNoWorkspace) {
  SmallCalls c;
  float loss = 0;
  std::vector<float> grad(6);
  fl::LossOutputs out;
  out.loss = &loss;
  out.grad = grad.data();
  for (fl::Backend b : {fl::Backend::Auto, fl::Backend::CPU}) {
    fl::ExecutionConfig cfg;
    cfg.backend = b;
    std::size_t bytes = 999;
    EXPECT_EQ(fl::workspace_size(c.elem(), out, cfg, &bytes), Status::Success);
    EXPECT_EQ(bytes, 0u);
    bytes = 999;
    EXPECT_EQ(fl::workspace_size(c.rows(), out, cfg, &bytes), Status::Success);
    EXPECT_EQ(bytes, 0u);
  }
  // workspace_size validates like compute(): an invalid problem is rejected and *bytes left alone.
  fl::ElementwiseProblem bad = c.elem();
  bad.n = -1;
  std::size_t bytes = 999;
  EXPECT_EQ(fl::workspace_size(bad, out, fl::ExecutionConfig{}, &bytes), Status::InvalidArgument);
  EXPECT_EQ(bytes, 999u);
  EXPECT_EQ(fl::workspace_size(c.elem(), out, fl::ExecutionConfig{}, nullptr), Status::InvalidArgument);
  EXPECT_EQ(fl::workspace_size(c.rows(), out, fl::ExecutionConfig{}, nullptr), Status::InvalidArgument);
  // The CPU path ignores the workspace fields entirely.
  fl::ExecutionConfig cfg;
  cfg.workspace = reinterpret_cast<void*>(0x1);  // never dereferenced on the CPU path
  cfg.workspace_bytes = 0;
  EXPECT_EQ(run(c.elem(), true, cfg).status, Status::Success);
}

TEST(ApiSync, ComputeSyncOnTheCpuPathEqualsCompute) {
  SmallCalls c;
  std::vector<float> g1(6), g2(6);
  float l1 = 0, l2 = 0;
  std::int64_t e1 = -1, e2 = -1;
  fl::LossOutputs o1, o2;
  o1.loss = &l1;
  o1.grad = g1.data();
  o1.error_count = &e1;
  o2.loss = &l2;
  o2.grad = g2.data();
  o2.error_count = &e2;
  ASSERT_EQ(fl::compute(c.rows(), o1), Status::Success);
  ASSERT_EQ(fl::compute_sync(c.rows(), o2), Status::Success);
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(g1, g2);
  EXPECT_EQ(e1, 0);
  EXPECT_EQ(e2, 0);

  // Invalid data: both report InvalidValue synchronously on the CPU path, and count it.
  Buffer bad_labels = Buffer::labels(DType::Int64, {7, 0});
  fl::RowwiseProblem p = c.rows();
  p.labels = bad_labels.data();
  EXPECT_EQ(fl::compute(p, o1), Status::InvalidValue);
  EXPECT_EQ(e1, 1);
  EXPECT_EQ(fl::compute_sync(p, o2), Status::InvalidValue);
  EXPECT_EQ(e2, 1);
  // ... also when the caller does not ask for the count.
  o1.error_count = nullptr;
  EXPECT_EQ(fl::compute(p, o1), Status::InvalidValue);
}

TEST(ApiSync, CpuThreadsSettingIsAccepted) {
  SmallCalls c;
  for (int threads : {0, 1, 2, 3, 64}) {
    fl::ExecutionConfig cfg;
    cfg.cpu_threads = threads;
    const RunResult r = run(c.elem(), true, cfg);
    ASSERT_EQ(r.status, Status::Success) << threads;
    EXPECT_DOUBLE_EQ(r.loss[0], 6.25);
  }
}

}  // namespace
