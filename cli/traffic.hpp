// fusedloss CLI — memory traffic of one call, measured on the emulated device: what each kernel
// read and wrote, in how many 32-byte sectors, against the least the problem needs. Used by
// `fusedloss traffic` and by the traffic invariants (tests/cuda/test_traffic.cu).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cli/problem.hpp"

namespace fusedloss_cli {

/// One kernel launch of the call.
struct KernelTraffic {
  std::string kernel;  ///< demangled name, without the parameter list
  std::string role;    ///< "row kernel", "elementwise", "label pass", "reduction"
  std::string plan;    ///< row kernels: warp, block, cluster K=4, stream, scalar, one pass
  unsigned grid = 0, block = 0, cluster = 1;
  std::uint64_t bytes_read = 0, bytes_written = 0;  ///< every lane's access counted
  /// Distinct bytes per warp-level request (a value all lanes load counts once per request):
  /// what the memory system is asked for.
  std::uint64_t requested_read = 0, requested_written = 0;
  std::uint64_t read_requests = 0, write_requests = 0;
  std::uint64_t sectors_read = 0, sectors_written = 0;
  std::uint64_t atomics = 0;
  /// Bytes asked for / bytes in the 32-byte sectors fetched (1: none wasted).
  double read_efficiency() const;
  double write_efficiency() const;
  void add(const KernelTraffic& k);  ///< sums the counters
};

/// The least traffic the problem needs: every input read once, every output written once.
struct TrafficFloor {
  std::uint64_t read = 0;   ///< input (nll: its label column), dense target, weights, labels, class / pos weights
  std::uint64_t write = 0;  ///< gradient, loss (one value or one per row / element), lse
  std::uint64_t input = 0, target = 0, grad = 0;  ///< the [N, C] (or n) parts of the above
};
TrafficFloor traffic_floor(const HostProblem& problem, bool want_grad);

struct TrafficMeasurement {
  std::vector<KernelTraffic> kernels;  ///< in launch order
  KernelTraffic total;                 ///< every launch of the call, summed
  TrafficFloor floor;
};

/// True in the emulated build (-DFUSEDLOSS_DEVICE=emulated), where every access is seen.
bool traffic_measurable();
/// Runs `call` (library calls on the CUDA path) on the emulated device and collects its launches.
/// Throws NoGpuError outside the emulated build, RuntimeFailure when a kernel fails.
TrafficMeasurement measure_call(const std::function<void()>& call, const TrafficFloor& floor);
/// Runs the problem on the CUDA path of the emulated device and collects its launches.
/// Throws NoGpuError outside the emulated build, RuntimeFailure when the call fails.
TrafficMeasurement measure_traffic(const HostProblem& problem, bool want_grad);
/// The plan a row-wise kernel name stands for (see cuda/rowwise.cu), "" for other kernels.
std::string plan_of_kernel(const std::string& kernel, unsigned cluster);

}  // namespace fusedloss_cli
