// fusedloss emulated device — its own API: launching a typed kernel, the scheduling orders, the
// checkers' findings and the record of what ran (kernels, geometry, memory traffic).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace fusedloss_sim {

/// The order in which blocks (and clusters) and the threads inside them are run. Deterministic
/// for a given value; FUSEDLOSS_SIM_SCHEDULE=round-robin|reversed|random[:seed]|warp-greedy
/// chooses it for the whole process (default round-robin).
enum class Schedule { RoundRobin, Reversed, Random, WarpGreedy };
struct ScheduleChoice {
  Schedule order = Schedule::RoundRobin;
  std::uint64_t seed = 1;
};
ScheduleChoice schedule();
void set_schedule(ScheduleChoice s);
const char* schedule_name(Schedule s);

/// The per-request sector accounting (LaunchRecord's requests, sectors and request bytes) costs
/// about a third of the emulated time, so it runs only while enabled: by this call, or for the
/// whole process with FUSEDLOSS_SIM_SECTORS=1. Bytes loaded and stored and atomics are always counted.
void set_sector_accounting(bool on);
bool sector_accounting();

/// Bytes in a 32-byte sector; the traffic accounting counts whole sectors per warp request.
constexpr int kSectorBytes = 32;

/// One kernel launch as the emulated device saw it.
struct LaunchRecord {
  std::string kernel;       ///< demangled name ("" when the symbol is not exported)
  dim3 grid, block;
  unsigned cluster = 1;     ///< blocks per cluster (x)
  std::size_t dynamic_smem = 0;
  std::size_t static_smem = 0;  ///< shared memory the blocks declared
  std::uint64_t bytes_loaded = 0, bytes_stored = 0;  ///< global memory, every access counted
  /// Warp-level memory instructions (the n-th execution of one instruction by the lanes of a
  /// warp; atomics count a load and a store), the distinct 32-byte sectors each touched and the
  /// distinct bytes each asked for (a broadcast counts once), summed over the requests:
  /// sectors/requests is Nsight Compute's "sectors per request", and
  /// request_bytes / (32 · sectors) the sector efficiency (1: every byte fetched was asked for).
  std::uint64_t load_requests = 0, store_requests = 0;
  std::uint64_t sectors_loaded = 0, sectors_stored = 0;
  std::uint64_t request_bytes_loaded = 0, request_bytes_stored = 0;
  std::uint64_t atomics = 0;
  cudaError_t result = cudaSuccess;
};
/// Launches since the last clear, in order (on every host thread).
std::vector<LaunchRecord> launches();
void clear_launches();

/// Checker findings (memcheck, racecheck, synccheck, initcheck) since the last clear, one line
/// each: "checker: what, kernel K, block (x,y,z), thread (x,y,z), address A".
std::vector<std::string> findings();
void clear_findings();
/// FUSEDLOSS_SIM_CHECKS=0 turns every checker off (timing runs); default on.
bool checks_enabled();
void set_checks_enabled(bool on);


namespace detail {
using Invoker = void (*)(const void* args);
cudaError_t launch(const void* kernel, Invoker invoke, const void* args, std::size_t args_bytes,
                   void (*destroy)(void*), void* (*clone)(const void*), dim3 grid, dim3 block,
                   std::size_t smem, cudaStream_t stream, unsigned cluster);
}  // namespace detail

/// Enqueues kernel(args...) on the stream: what `kernel<<<grid, block, smem, stream>>>(args...)`
/// does under nvcc. The arguments are converted to the parameter types and copied, as the CUDA
/// runtime copies them into the launch.
template <class... P, class... A>
cudaError_t launch(void (*kernel)(P...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream,
                   unsigned cluster, A&&... args) {
  using Params = std::tuple<std::decay_t<P>...>;
  static_assert(sizeof...(P) == sizeof...(A), "a kernel launch passes one argument per parameter");
  struct Pack {
    void (*kernel)(P...);
    Params params;
  };
  Pack pack{kernel, Params(static_cast<std::decay_t<P>>(std::forward<A>(args))...)};
  auto invoke = [](const void* p) {
    const Pack& k = *static_cast<const Pack*>(p);
    std::apply([&](const auto&... a) { k.kernel(a...); }, k.params);
  };
  auto destroy = [](void* p) { delete static_cast<Pack*>(p); };
  auto clone = [](const void* p) -> void* { return new Pack(*static_cast<const Pack*>(p)); };
  return detail::launch(reinterpret_cast<const void*>(kernel), invoke, &pack, sizeof(Pack), destroy, clone, grid,
                        block, smem, stream, cluster);
}

}  // namespace fusedloss_sim
