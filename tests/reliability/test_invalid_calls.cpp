// Reliability item 1 on the CPU path: the table of invalid calls (tests/reliability/invalid_calls.hpp)
// → the right status from workspace_size(), compute() and compute_sync(), and not one byte written.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "fusedloss/fusedloss.hpp"
#include "reliability/invalid_calls.hpp"

namespace {

using fusedloss::Backend;
using fusedloss::Status;
using reliability::Arena;
using reliability::Call;

/// The arena in host memory (8-byte aligned: it holds int64 labels and counters).
struct HostArena {
  std::vector<std::uint64_t> words = std::vector<std::uint64_t>(Arena::kBytes / 8);
  Arena arena;
  HostArena() { arena.base = reinterpret_cast<unsigned char*>(words.data()); }
  void reset() {
    const std::vector<unsigned char> img = Arena::initial_image();
    std::memcpy(arena.base, img.data(), img.size());
  }
  std::vector<unsigned char> snapshot() const { return {arena.base, arena.base + Arena::kBytes}; }
};

Status call_workspace(const Call& c, std::size_t* bytes) {
  return c.rowwise ? fusedloss::workspace_size(c.rp, c.out, c.cfg, bytes)
                   : fusedloss::workspace_size(c.ep, c.out, c.cfg, bytes);
}
Status call_compute(const Call& c) {
  return c.rowwise ? fusedloss::compute(c.rp, c.out, c.cfg) : fusedloss::compute(c.ep, c.out, c.cfg);
}
Status call_compute_sync(const Call& c) {
  return c.rowwise ? fusedloss::compute_sync(c.rp, c.out, c.cfg) : fusedloss::compute_sync(c.ep, c.out, c.cfg);
}

/// First differing byte offset, or -1.
long first_difference(const std::vector<unsigned char>& a, const std::vector<unsigned char>& b) {
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return static_cast<long>(i);
  return -1;
}

TEST(ReliabilityInvalidCalls, EveryBaseCallOfTheTableSucceeds) {
  HostArena h;
  for (Backend backend : {Backend::CPU, Backend::Auto}) {
    for (const Call& c : reliability::valid_calls(h.arena, backend)) {
      SCOPED_TRACE(c.name);
      h.reset();
      std::size_t bytes = 12345;
      EXPECT_EQ(call_workspace(c, &bytes), Status::Success);
      EXPECT_EQ(bytes, 0u) << "the CPU path needs no workspace";
      const std::vector<unsigned char> before = h.snapshot();
      EXPECT_EQ(call_compute(c), Status::Success);
      EXPECT_NE(first_difference(before, h.snapshot()), -1) << "a valid call wrote nothing";
      std::int64_t errors = -1;
      std::memcpy(&errors, h.arena.at(Arena::Err), sizeof errors);
      EXPECT_EQ(errors, 0) << "error_count must be written (0) by a valid call on valid data";
    }
  }
}

TEST(ReliabilityInvalidCalls, TableRejectedWithNothingWrittenOnCpu) {
  HostArena h;
  int tried = 0;
  for (Backend backend : {Backend::CPU, Backend::Auto}) {
    const std::vector<Call> calls = reliability::invalid_calls(h.arena, backend, /*device_arena=*/false);
    ASSERT_GE(calls.size(), 60u);
    for (const Call& c : calls) {
      SCOPED_TRACE(std::string(fusedloss::backend_name(backend)) + " | " + c.name);
      h.reset();
      const std::vector<unsigned char> before = h.snapshot();

      std::size_t bytes = 0xC0FFEE;
      const Status ws = call_workspace(c, &bytes);
      EXPECT_EQ(ws, c.expected_workspace) << fusedloss::status_string(ws);
      if (ws != Status::Success) {
        EXPECT_EQ(bytes, 0xC0FFEEu) << "workspace_size wrote *bytes on failure";
      }

      if (ws == Status::Success && c.expected != Status::Success) {
        // Validation let it through: running it could read or write far outside the arena.
        ADD_FAILURE() << "accepted by validation; compute() not attempted";
        continue;
      }
      const Status s = call_compute(c);
      EXPECT_EQ(s, c.expected) << fusedloss::status_string(s);
      EXPECT_EQ(first_difference(before, h.snapshot()), -1) << "compute() wrote into the arena";

      const Status ss = call_compute_sync(c);
      EXPECT_EQ(ss, c.expected) << fusedloss::status_string(ss);
      EXPECT_EQ(first_difference(before, h.snapshot()), -1) << "compute_sync() wrote into the arena";
      tried += 3;
    }
  }
  RecordProperty("invalid_calls_tried", tried);
  std::printf("[ reliability ] %d invalid calls tried on the CPU path (workspace_size, compute, compute_sync)\n",
              tried);
}

TEST(ReliabilityInvalidCalls, WorkspaceSizeWithNullBytesPointer) {
  HostArena h;
  h.reset();
  const Call e = reliability::valid_elementwise(h.arena, fusedloss::Loss::MSE, Backend::CPU);
  EXPECT_EQ(fusedloss::workspace_size(e.ep, e.out, e.cfg, nullptr), Status::InvalidArgument);
  const Call r = reliability::valid_rowwise(h.arena, reliability::RowKind::CrossEntropy, Backend::CPU);
  EXPECT_EQ(fusedloss::workspace_size(r.rp, r.out, r.cfg, nullptr), Status::InvalidArgument);
}

TEST(ReliabilityInvalidCalls, StatusStringsAreStaticAndDistinct) {
  const Status all[] = {Status::Success, Status::InvalidArgument, Status::InvalidValue, Status::WorkspaceTooSmall,
                        Status::NotSupported, Status::CudaError};
  for (Status a : all) {
    ASSERT_NE(fusedloss::status_string(a), nullptr);
    for (Status b : all)
      if (a != b) {
        EXPECT_STRNE(fusedloss::status_string(a), fusedloss::status_string(b));
      }
  }
  EXPECT_NE(fusedloss::status_string(static_cast<Status>(42)), nullptr);
  EXPECT_NE(fusedloss::status_string(static_cast<Status>(-1)), nullptr);
}

}  // namespace
