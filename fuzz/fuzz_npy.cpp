// libFuzzer harness over the CLI's .npy reader (cli/npy.hpp), built by scripts/fuzz.sh with clang
// -fsanitize=fuzzer,address,undefined.
//
// Contract checked (cli/npy.hpp): parse_npy() either returns an array or throws NpyError — any
// other exception (std::bad_alloc, std::length_error, std::out_of_range ...) escapes and aborts,
// which libFuzzer reports as a crash, as do ASan/UBSan findings. An accepted array must be
// self-consistent (data.size() == numel · itemsize, non-negative dimensions) and must survive a
// serialize_npy() → parse_npy() round trip unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdio>

#include "cli/npy.hpp"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_npy: %s\n", what);
  std::fflush(stderr);
  __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace fusedloss_cli;
  NpyArray a;
  try {
    a = parse_npy(data, size, "fuzz.npy");
  } catch (const NpyError&) {
    return 0;  // the documented way to reject a file
  }
  std::int64_t numel = 1;
  for (std::int64_t d : a.shape) {
    if (d < 0) fail("negative dimension accepted");
    if (__builtin_mul_overflow(numel, d, &numel)) fail("accepted a shape whose element count overflows");
  }
  if (a.numel() != numel) fail("numel() disagrees with the shape");
  if (a.data.size() != static_cast<std::size_t>(numel) * npy_itemsize(a.type)) fail("data size != numel * itemsize");
  if (a.data.size() > size) fail("more data than input bytes");
  // Round trip through the writer.
  const std::vector<unsigned char> image = serialize_npy(a.type, a.shape, a.data.data());
  NpyArray b;
  try {
    b = parse_npy(image.data(), image.size(), "roundtrip.npy");
  } catch (const NpyError&) {
    fail("the reader rejects what the writer wrote");
  }
  if (b.type != a.type || b.shape != a.shape || b.data != a.data) fail("round trip changed the array");
  return 0;
}
