// fusedloss CLI — memory traffic of one call on the emulated device (see traffic.hpp).
#include "cli/traffic.hpp"

#include <cstdlib>

#include "cli/common.hpp"

#if defined(FUSEDLOSS_EMULATED_DEVICE)
#include "fusedloss_sim/sim.hpp"
#endif

namespace fusedloss_cli {
namespace {

double sector_efficiency(std::uint64_t bytes, std::uint64_t sectors) {
  return sectors == 0 ? 1.0 : static_cast<double>(bytes) / (32.0 * static_cast<double>(sectors));
}

/// "ns::k<float, 4, 8>(float const*, ...)" → the top-level template arguments {"float", "4", "8"}.
std::vector<std::string> top_level_args(const std::string& name) {
  std::vector<std::string> out;
  const std::size_t open = name.find('<');
  if (open == std::string::npos) return out;
  int depth = 0;
  std::size_t start = open + 1;
  for (std::size_t i = open + 1; i < name.size() && depth >= 0; ++i) {
    const char c = name[i];
    if (c == '<' || c == '(') {
      ++depth;
    } else if (c == '>' || c == ')') {
      --depth;
    }
    if ((c == ',' && depth == 0) || depth < 0) {
      std::string a = name.substr(start, i - start);
      a.erase(0, a.find_first_not_of(' '));
      out.push_back(a);
      start = i + 1;
    }
  }
  return out;
}

std::string role_of_kernel(const std::string& k) {
  if (k.find("regs_kernel") != std::string::npos || k.find("stream_kernel") != std::string::npos ||
      k.find("nll_kernel") != std::string::npos || k.find("kl_div_kernel") != std::string::npos)
    return "row kernel";
  if (k.find("elementwise_kernel") != std::string::npos) return "elementwise";
  if (k.find("label_") != std::string::npos) return "label pass";
  return "reduction";
}

}  // namespace

double KernelTraffic::read_efficiency() const { return sector_efficiency(requested_read, sectors_read); }
double KernelTraffic::write_efficiency() const { return sector_efficiency(requested_written, sectors_written); }

void KernelTraffic::add(const KernelTraffic& k) {
  bytes_read += k.bytes_read;
  bytes_written += k.bytes_written;
  requested_read += k.requested_read;
  requested_written += k.requested_written;
  read_requests += k.read_requests;
  write_requests += k.write_requests;
  sectors_read += k.sectors_read;
  sectors_written += k.sectors_written;
  atomics += k.atomics;
}

std::string plan_of_kernel(const std::string& kernel, unsigned cluster) {
  const std::vector<std::string> a = top_level_args(kernel);
  if (kernel.find("regs_kernel") != std::string::npos && a.size() >= 4) {
    const int mode = std::atoi(a[3].c_str());
    if (mode == 0) return "warp";
    if (mode == 1) return "block";
    return "cluster K=" + std::to_string(cluster);
  }
  if (kernel.find("stream_kernel") != std::string::npos && a.size() >= 2) return a[1] == "1" ? "scalar" : "stream";
  if (kernel.find("nll_kernel") != std::string::npos || kernel.find("kl_div_kernel") != std::string::npos)
    return "one pass";
  return "";
}

TrafficFloor traffic_floor(const HostProblem& h, bool want_grad) {
  TrafficFloor f;
  // nll's loss and gradient need only the labelled element of each row.
  f.input = h.spec.loss == fusedloss::Loss::NLL ? static_cast<std::uint64_t>(h.rows) * fusedloss::dtype_size(h.dtype)
                                                : h.input.bytes.size();
  f.target = h.has_target ? h.target.bytes.size() : 0;
  f.read = f.input + f.target;
  if (h.has_weight) f.read += h.weight.bytes.size();
  if (h.has_labels) f.read += h.labels.bytes.size();
  if (h.has_class_weight) f.read += h.class_weight.bytes.size();
  if (h.has_pos_weight) f.read += h.pos_weight.bytes.size();
  f.grad = want_grad ? h.input.bytes.size() : 0;
  f.write = f.grad + 4 * static_cast<std::uint64_t>(h.loss_count()) +
            (h.has_lse() ? 4 * static_cast<std::uint64_t>(h.rows) : 0);
  return f;
}

bool traffic_measurable() {
#if defined(FUSEDLOSS_EMULATED_DEVICE)
  return true;
#else
  return false;
#endif
}

TrafficMeasurement measure_traffic(const HostProblem& problem, bool want_grad) {
#if defined(FUSEDLOSS_EMULATED_DEVICE)
  TrafficMeasurement m;
  m.floor = traffic_floor(problem, want_grad);
  fusedloss_sim::clear_launches();
  run_problem(problem, fusedloss::Backend::CUDA, 0, want_grad);
  for (const fusedloss_sim::LaunchRecord& r : fusedloss_sim::launches()) {
    if (r.result != cudaSuccess) throw RuntimeFailure("kernel " + r.kernel + " failed on the emulated device");
    KernelTraffic k;
    k.kernel = r.kernel.substr(0, r.kernel.find('('));
    k.role = role_of_kernel(k.kernel);
    k.plan = plan_of_kernel(k.kernel, r.cluster);
    k.grid = r.grid.x * r.grid.y * r.grid.z;
    k.block = r.block.x * r.block.y * r.block.z;
    k.cluster = r.cluster;
    k.bytes_read = r.bytes_loaded;
    k.bytes_written = r.bytes_stored;
    k.requested_read = r.request_bytes_loaded;
    k.requested_written = r.request_bytes_stored;
    k.read_requests = r.load_requests;
    k.write_requests = r.store_requests;
    k.sectors_read = r.sectors_loaded;
    k.sectors_written = r.sectors_stored;
    k.atomics = r.atomics;
    m.total.add(k);
    m.kernels.push_back(k);
  }
  fusedloss_sim::clear_launches();
  return m;
#else
  (void)problem;
  (void)want_grad;
  throw NoGpuError("traffic needs the emulated device: this build runs kernels on a real GPU (or none), which "
                   "does not report each memory access");
#endif
}

}  // namespace fusedloss_cli
