// Reliability item 10 on the CPU path: 64-bit indexing past 2^31 and 2^32 elements.
//
// The data are periodic patterns, so the reference needs no second copy of the tensor: the loss of
// the whole call follows in closed form (elementwise) or from the float64 oracle run on one period
// of rows (row-wise), and the rows / windows around element 2^31, 2^32 and the end are checked
// against the oracle value by value. Every row's lse is checked too, so a row that read another
// row's memory shows. These tests need 8.6 GB of host memory each and run serially (label `large`);
// they skip when the machine has less memory available.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "fusedloss/fusedloss.hpp"
#include "oracle/oracle.hpp"

namespace {

using fusedloss::DType;
using fusedloss::Loss;
using fusedloss::Reduction;
using fusedloss::Status;

/// MemAvailable from /proc/meminfo in bytes (0 when unknown).
std::uint64_t available_memory() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  std::uint64_t kb = 0;
  std::string unit;
  while (f >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 0;
}

/// An uninitialised buffer of 16-bit values (std::vector would zero 8.6 GB first).
std::unique_ptr<std::uint16_t[]> alloc16(std::int64_t n) {
  return std::unique_ptr<std::uint16_t[]>(new (std::nothrow) std::uint16_t[static_cast<std::size_t>(n)]);
}

/// Runs body(begin, end) over [0, count) on every hardware thread.
template <class F>
void parallel_ranges(std::int64_t count, const F& body) {
  const std::int64_t t = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (std::int64_t k = 0; k < t; ++k)
    pool.emplace_back([&, k] { body(count * k / t, count * (k + 1) / t); });
  for (std::thread& th : pool) th.join();
}

double half_value(std::uint16_t b) { return fusedloss::to_float(fusedloss::half_t{b}); }
double bf16_value(std::uint16_t b) { return fusedloss::to_float(fusedloss::bfloat16_t{b}); }

/// |have − want| within one unit in the last place of `want` in a format with `mantissa_bits`.
bool within_one_ulp(double have, double want, int mantissa_bits, double min_normal) {
  const double mag = std::max(std::fabs(want), min_normal);
  const double ulp = std::ldexp(1.0, std::ilogb(mag) - mantissa_bits);
  return std::fabs(have - want) <= ulp;
}

// ---- elementwise: mse, fp16, in place, n = 2^31 + 3 -------------------------------------------------
// x has period 1021 and y period 1019 (coprime), so each (i mod 1021, i mod 1019) pair occurs once per
// 1021·1019 elements: the sum over whole periods is closed form, the remainder is summed directly.
// x − y is a multiple of 2^-9 in [−3, 3], so the gradient 2(x − y) is exact in fp16.
double pattern_x(std::int64_t i) { return static_cast<double>(i % 1021) / 512.0 - 1.0; }
double pattern_y(std::int64_t i) { return static_cast<double>(i % 1019) / 256.0 - 2.0; }

TEST(ReliabilityLargeCpu, ElementwiseMseBeyond2Pow31) {
  const std::int64_t n = (std::int64_t(1) << 31) + 3;
  const std::uint64_t need = static_cast<std::uint64_t>(n) * 4;
  if (available_memory() < need + (std::uint64_t(2) << 30))
    GTEST_SKIP() << "needs " << (need >> 20) << " MiB of free host memory";
  auto x = alloc16(n), y = alloc16(n);
  if (!x || !y) GTEST_SKIP() << "host allocation of " << (need >> 20) << " MiB failed";
  std::uint16_t x_period[1021], y_period[1019];
  for (int a = 0; a < 1021; ++a) x_period[a] = fusedloss::to_half(static_cast<float>(pattern_x(a))).bits;
  for (int b = 0; b < 1019; ++b) y_period[b] = fusedloss::to_half(static_cast<float>(pattern_y(b))).bits;
  parallel_ranges(n, [&](std::int64_t b, std::int64_t e) {
    std::int64_t a = b % 1021, c = b % 1019;
    for (std::int64_t i = b; i < e; ++i) {
      x[i] = x_period[a];
      y[i] = y_period[c];
      if (++a == 1021) a = 0;
      if (++c == 1019) c = 0;
    }
  });

  fusedloss::ElementwiseProblem p;
  p.loss = Loss::MSE;
  p.dtype = DType::Float16;
  p.n = n;
  p.input = x.get();
  p.target = y.get();
  p.reduction = Reduction::Sum;
  float loss = -1.0f;
  std::int64_t errors = -1;
  fusedloss::LossOutputs out;
  out.loss = &loss;
  out.grad = x.get();  // in place
  out.error_count = &errors;
  fusedloss::ExecutionConfig cfg;
  cfg.backend = fusedloss::Backend::CPU;
  ASSERT_EQ(fusedloss::compute(p, out, cfg), Status::Success);
  EXPECT_EQ(errors, 0);

  const std::int64_t P = 1021 * 1019;
  long double sx = 0, sxx = 0, sy = 0, syy = 0;
  for (int a = 0; a < 1021; ++a) sx += pattern_x(a), sxx += pattern_x(a) * pattern_x(a);
  for (int b = 0; b < 1019; ++b) sy += pattern_y(b), syy += pattern_y(b) * pattern_y(b);
  long double ref = (1019 * sxx + 1021 * syy - 2 * sx * sy) * static_cast<long double>(n / P);
  for (std::int64_t i = (n / P) * P; i < n; ++i) {
    const long double r = pattern_x(i) - pattern_y(i);
    ref += r * r;
  }
  EXPECT_LE(std::fabs(loss - static_cast<double>(ref)) / static_cast<double>(ref), 1e-6)
      << "loss " << loss << " vs " << static_cast<double>(ref);

  // Every gradient is exact: check windows around 2^31 and at the end, and a stride through the rest.
  std::int64_t wrong = 0, checked = 0;
  auto check = [&](std::int64_t i) {
    ++checked;
    if (half_value(x[i]) != 2.0 * (pattern_x(i) - pattern_y(i))) ++wrong;
  };
  for (std::int64_t i = (std::int64_t(1) << 31) - 4096; i < n; ++i) check(i);
  for (std::int64_t i = 0; i < n; i += 999983) check(i);
  EXPECT_EQ(wrong, 0) << "of " << checked << " gradient values checked";
  ::testing::Test::RecordProperty("elements", std::to_string(n));
}

// ---- row-wise: cross_entropy, bf16, in place, 65536 × 65537 = 2^32 + 2^16 elements ---------------------
// z[n, c] = ((7c + 13n) mod 256 − 128) / 32 is exact in bf16 and depends on n only through n mod 256
// (13 is invertible mod 256): the oracle's lse of rows 0..255 gives every row's lse, and the sum
// reduction is Σ_n lse(n mod 256) − z[n, y_n].
constexpr std::int64_t kPeriod = 256;
double residue_value(std::int64_t k) { return static_cast<double>(k - 128) / 32.0; }
double pattern_z(std::int64_t n, std::int64_t c) { return residue_value((c * 7 + n * 13) % kPeriod); }
std::int64_t pattern_label(std::int64_t n, std::int64_t classes) {
  return static_cast<std::int64_t>((static_cast<std::uint64_t>(n) * 2654435761ull) % static_cast<std::uint64_t>(classes));
}

TEST(ReliabilityLargeCpu, RowwiseCrossEntropyBeyond2Pow32) {
  const std::int64_t rows = 65536, classes = 65537, total = rows * classes;
  ASSERT_GT(total, std::int64_t(1) << 32);
  const std::uint64_t need = static_cast<std::uint64_t>(total) * 2;
  if (available_memory() < need + (std::uint64_t(2) << 30))
    GTEST_SKIP() << "needs " << (need >> 20) << " MiB of free host memory";
  auto z = alloc16(total);
  if (!z) GTEST_SKIP() << "host allocation of " << (need >> 20) << " MiB failed";
  std::vector<std::int64_t> labels(static_cast<std::size_t>(rows));
  std::uint16_t z_period[kPeriod];  // bf16 bits of residue_value(k)
  for (std::int64_t k = 0; k < kPeriod; ++k) z_period[k] = fusedloss::to_bfloat16(static_cast<float>(residue_value(k))).bits;
  parallel_ranges(rows, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t n = b; n < e; ++n) {
      std::uint16_t* row = z.get() + n * classes;
      for (std::int64_t c = 0; c < classes; ++c) row[c] = z_period[(c * 7 + n * 13) % kPeriod];
      labels[static_cast<std::size_t>(n)] = pattern_label(n, classes);
    }
  });

  fusedloss::RowwiseProblem p;
  p.loss = Loss::CrossEntropy;
  p.dtype = DType::BFloat16;
  p.rows = rows;
  p.classes = classes;
  p.input = z.get();
  p.labels = labels.data();
  p.label_dtype = DType::Int64;
  p.reduction = Reduction::Sum;
  float loss = -1.0f;
  std::vector<float> lse(static_cast<std::size_t>(rows), -1.0f);
  std::int64_t errors = -1;
  fusedloss::LossOutputs out;
  out.loss = &loss;
  out.grad = z.get();  // in place: the logits' memory is all there is room for
  out.lse = lse.data();
  out.error_count = &errors;
  fusedloss::ExecutionConfig cfg;
  cfg.backend = fusedloss::Backend::CPU;
  ASSERT_EQ(fusedloss::compute(p, out, cfg), Status::Success);
  EXPECT_EQ(errors, 0);

  // The oracle on one period of rows (their own labels do not matter for lse).
  std::vector<double> period(static_cast<std::size_t>(kPeriod * classes));
  for (std::int64_t n = 0; n < kPeriod; ++n)
    for (std::int64_t c = 0; c < classes; ++c) period[static_cast<std::size_t>(n * classes + c)] = pattern_z(n, c);
  const std::vector<std::int64_t> period_labels(static_cast<std::size_t>(kPeriod), 0);
  const oracle::Result pref = oracle::cross_entropy(kPeriod, classes, period, period_labels, oracle::Red::None);

  long double ref = 0;
  double worst_lse = 0;
  for (std::int64_t n = 0; n < rows; ++n) {
    const double l = pref.lse[static_cast<std::size_t>(n % kPeriod)];
    ref += static_cast<long double>(l) - pattern_z(n, pattern_label(n, classes));
    worst_lse = std::max(worst_lse, std::fabs(lse[static_cast<std::size_t>(n)] - l) / std::fabs(l));
  }
  EXPECT_LE(worst_lse, 1e-6) << "largest relative |lse − oracle lse| over all rows";
  EXPECT_LE(std::fabs(loss - static_cast<double>(ref)) / std::fabs(static_cast<double>(ref)), 1e-6)
      << "loss " << loss << " vs " << static_cast<double>(ref);

  // Gradient rows vs the oracle: the first, the ones holding elements 2^31 and 2^32, the last two.
  for (std::int64_t r : {std::int64_t(0), (std::int64_t(1) << 31) / classes, (std::int64_t(1) << 32) / classes,
                         rows - 2, rows - 1}) {
    SCOPED_TRACE("row " + std::to_string(r));
    std::vector<double> row(static_cast<std::size_t>(classes));
    for (std::int64_t c = 0; c < classes; ++c) row[static_cast<std::size_t>(c)] = pattern_z(r, c);
    const oracle::Result want =
        oracle::cross_entropy(1, classes, row, {pattern_label(r, classes)}, oracle::Red::Sum);
    std::int64_t off = 0;
    for (std::int64_t c = 0; c < classes; ++c)
      if (!within_one_ulp(bf16_value(z[r * classes + c]), want.grad[static_cast<std::size_t>(c)], 7, 0x1p-126)) ++off;
    EXPECT_EQ(off, 0) << "gradient values of the row more than one bf16 ulp from the oracle";
  }
  ::testing::Test::RecordProperty("elements", std::to_string(total));
}

}  // namespace
