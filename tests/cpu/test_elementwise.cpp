// The elementwise CPU path's two ways of writing outputs give the same bits. Calls of the
// memory-bound losses that touch more than 32 MiB stream their outputs past the cache
// (non-temporal stores, cpu/elementwise.cpp) when the output is aligned to the SIMD vector;
// smaller calls, misaligned outputs and the compute-bound losses store normally.
// Per-element values never depend on how they were stored, so a big call's gradient and
// per-element loss must equal, bit for bit, the same elements computed in small slices — in
// 64-byte-aligned buffers (streamed), one element off alignment (stored), and in place.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/test_util.hpp"

namespace {

using namespace tu;
namespace fl = ::fusedloss;

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using Aligned = std::unique_ptr<unsigned char, FreeDeleter>;

/// `bytes` (+ 64 of slack) at a 64-byte boundary, every byte set to `fill`.
Aligned aligned_bytes(std::size_t bytes, unsigned char fill) {
  const std::size_t size = (bytes + 64 + 63) / 64 * 64;
  Aligned p(static_cast<unsigned char*>(std::aligned_alloc(64, size)));
  if (p) std::memset(p.get(), fill, size);
  return p;
}

fl::ExecutionConfig cpu_threads(int threads) {
  fl::ExecutionConfig c;
  c.backend = fl::Backend::CPU;
  c.cpu_threads = threads;
  return c;
}

struct StreamCase {
  Loss loss;
  DType dtype;
  Reduction reduction;  // None (per-element loss written too) or Sum (gradient factor = grad_scale)
};

class CpuElementwiseStreaming : public ::testing::TestWithParam<StreamCase> {};

TEST_P(CpuElementwiseStreaming, StreamedOutputsEqualStoredOutputs) {
  const StreamCase& c = GetParam();
  FL_SEEDED_RNG(rng);
  // > 32 MiB touched for every dtype (16-bit: 3 arrays × 2 B × n = 37.7 MB), not a multiple of any vector.
  const std::int64_t n = 6 * (std::int64_t(1) << 20) + 37;
  const std::size_t un = static_cast<std::size_t>(n), esize = fl::dtype_size(c.dtype);
  Vec x, y;
  elementwise_data(rng, c.loss, un, x, y);
  const Buffer bx = Buffer::from(c.dtype, x), by = Buffer::from(c.dtype, y);
  Aligned ax = aligned_bytes(un * esize, 0), ay = aligned_bytes(un * esize, 0);
  ASSERT_TRUE(ax && ay);
  std::memcpy(ax.get(), bx.data(), un * esize);
  std::memcpy(ay.get(), by.data(), un * esize);

  fl::ElementwiseProblem p;
  p.loss = c.loss;
  p.dtype = c.dtype;
  p.reduction = c.reduction;
  p.grad_scale = -1.5;
  const bool per_element = c.reduction == Reduction::None;

  // Writes the call's outputs for elements [begin, begin + count) at grad / loss (elementwise
  // arrays indexed from `begin`), reading x from `input` (the in-place call passes grad).
  auto call = [&](std::int64_t begin, std::int64_t count, const void* input, void* grad, float* loss) {
    fl::ElementwiseProblem q = p;
    q.n = count;
    q.input = static_cast<const unsigned char*>(input) + static_cast<std::size_t>(begin) * esize;
    q.target = ay.get() + static_cast<std::size_t>(begin) * esize;
    std::vector<float> total(1, poison_float());
    std::int64_t errors = poison_i64();
    fl::LossOutputs o;
    o.grad = static_cast<unsigned char*>(grad) + static_cast<std::size_t>(begin) * esize;
    o.loss = per_element ? loss + begin : total.data();
    o.error_count = &errors;
    const Status s = fl::compute(q, o, cpu_threads(2));
    EXPECT_EQ(s, Status::Success) << fl::status_string(s);
    EXPECT_EQ(errors, 0);
  };

  // The reference: slices of 2^18 elements (3 MiB touched at most), stored normally. Poisoned
  // with 0xA5 bytes, the outputs under test with 0x5A: an element neither call writes differs.
  Aligned ref_grad = aligned_bytes(un * esize, 0xA5), ref_loss = aligned_bytes(un * 4, 0xA5);
  ASSERT_TRUE(ref_grad && ref_loss);
  float* ref_loss_f = reinterpret_cast<float*>(ref_loss.get());
  for (std::int64_t b = 0; b < n; b += std::int64_t(1) << 18)
    call(b, std::min(std::int64_t(1) << 18, n - b), ax.get(), ref_grad.get(), ref_loss_f);

  auto expect_same = [&](const unsigned char* grad, const float* loss, const std::string& what) {
    EXPECT_EQ(std::memcmp(grad, ref_grad.get(), un * esize), 0) << what << ": gradient differs";
    if (per_element) {
      EXPECT_EQ(std::memcmp(loss, ref_loss_f, un * 4), 0) << what << ": per-element loss differs";
    }
  };
  {  // aligned outputs: streamed
    Aligned g = aligned_bytes(un * esize, 0x5A), l = aligned_bytes(un * 4, 0x5A);
    ASSERT_TRUE(g && l);
    call(0, n, ax.get(), g.get(), reinterpret_cast<float*>(l.get()));
    expect_same(g.get(), reinterpret_cast<const float*>(l.get()), "aligned (streamed)");
  }
  {  // outputs one element off the vector alignment: stored
    Aligned g = aligned_bytes(un * esize + esize, 0x5A), l = aligned_bytes(un * 4 + 4, 0x5A);
    ASSERT_TRUE(g && l);
    call(0, n, ax.get(), g.get() + esize, reinterpret_cast<float*>(l.get() + 4));
    expect_same(g.get() + esize, reinterpret_cast<const float*>(l.get() + 4), "misaligned (stored)");
  }
  {  // in place: the gradient streamed over the input it reads
    Aligned io = aligned_bytes(un * esize, 0), l = aligned_bytes(un * 4, 0x5A);
    ASSERT_TRUE(io && l);
    std::memcpy(io.get(), ax.get(), un * esize);
    call(0, n, io.get(), io.get(), reinterpret_cast<float*>(l.get()));
    expect_same(io.get(), reinterpret_cast<const float*>(l.get()), "in place (streamed)");
  }
}

std::vector<StreamCase> stream_cases() {
  std::vector<StreamCase> v;
  for (Loss loss : {Loss::MSE, Loss::Huber})  // memory-bound: these stream
    for (DType d : {DType::Float32, DType::Float16, DType::BFloat16})
      for (Reduction r : {Reduction::None, Reduction::Sum}) v.push_back({loss, d, r});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Cases, CpuElementwiseStreaming, ::testing::ValuesIn(stream_cases()),
                         [](const ::testing::TestParamInfo<StreamCase>& i) {
                           return std::string(fl::loss_name(i.param.loss)) + "_" + fl::dtype_name(i.param.dtype) +
                                  "_" + (i.param.reduction == Reduction::None ? "none" : "sum");
                         });

}  // namespace
