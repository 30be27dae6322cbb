// fusedloss CLI — memory traffic of one call on the emulated device (see traffic.hpp).
#include "cli/traffic.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <cstdlib>

#include "cli/commands.hpp"
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

#if defined(FUSEDLOSS_EMULATED_DEVICE)
/// The demangled name without its parameter list (template arguments may hold parentheses).
std::string without_parameters(const std::string& name) {
  int depth = 0;
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '<') ++depth;
    if (name[i] == '>') --depth;
    if (name[i] == '(' && depth == 0) return name.substr(0, i);
  }
  return name;
}

std::string role_of_kernel(const std::string& k) {
  if (k.find("regs_kernel") != std::string::npos || k.find("stream_kernel") != std::string::npos ||
      k.find("nll_kernel") != std::string::npos || k.find("kl_div_kernel") != std::string::npos)
    return "row kernel";
  if (k.find("elementwise_kernel") != std::string::npos) return "elementwise";
  if (k.find("label_") != std::string::npos) return "label pass";
  return "reduction";
}
#endif

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

TrafficMeasurement measure_call(const std::function<void()>& call, const TrafficFloor& floor) {
#if defined(FUSEDLOSS_EMULATED_DEVICE)
  TrafficMeasurement m;
  m.floor = floor;
  fusedloss_sim::clear_launches();
  const bool was_counting = fusedloss_sim::sector_accounting();
  fusedloss_sim::set_sector_accounting(true);
  call();
  fusedloss_sim::set_sector_accounting(was_counting);
  for (const fusedloss_sim::LaunchRecord& r : fusedloss_sim::launches()) {
    if (r.result != cudaSuccess) throw RuntimeFailure("kernel " + r.kernel + " failed on the emulated device");
    KernelTraffic k;
    k.kernel = without_parameters(r.kernel);
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
  (void)call;
  (void)floor;
  throw NoGpuError("traffic needs the emulated device: this build runs kernels on a real GPU (or none), which "
                   "does not report each memory access");
#endif
}

TrafficMeasurement measure_traffic(const HostProblem& problem, bool want_grad) {
  return measure_call([&] { run_problem(problem, fusedloss::Backend::CUDA, 0, want_grad); },
                      traffic_floor(problem, want_grad));
}

namespace {

/// Elementwise problems larger than this are emulated on a prefix of this many elements (whole
/// 4096-element tiles) and scaled: every tile does the same work.
constexpr std::int64_t kElementSample = std::int64_t{1} << 20;

/// "fusedloss::cuda::rowwise::sparse_ce_regs_kernel<__nv_bfloat16, 8, 8, 2, false, 0>" → the
/// name after the last namespace, with its template arguments.
std::string short_name(const std::string& kernel) {
  const std::size_t open = kernel.find('<');
  const std::size_t colons = kernel.rfind("::", open);
  return colons == std::string::npos ? kernel : kernel.substr(colons + 2);
}

double mb(double bytes) { return bytes / 1e6; }

}  // namespace

int run_traffic(const TrafficOptions& o) {
  const LossSpec spec = make_spec(o.loss, o.reduction, o.dtype, o.params);
  std::vector<std::int64_t> shape = data_shape(o, spec);
  if (o.sample_rows < 1) throw UsageError("--sample-rows must be >= 1");
  if (!(o.bandwidth_tbs > 0)) throw UsageError("--bandwidth must be > 0");
  if (!traffic_measurable())
    throw NoGpuError("traffic needs the emulated device: this build runs kernels on a GPU, which does not report "
                     "each memory access");
  const bool from_files = shape.empty();
  // Rows (row-wise) and tiles (elementwise) are independent: emulate a sample, scale linearly.
  double scale = 1.0;
  std::int64_t full = 0, run = 0;
  if (!from_files) {
    const bool rowwise = !fusedloss::is_elementwise(spec.loss);
    std::int64_t inner = 1;  // elements per index of the first dimension
    for (std::size_t d = 1; d < shape.size(); ++d) inner *= std::max<std::int64_t>(shape[d], 1);
    full = shape[0];
    const std::int64_t cap = rowwise ? o.sample_rows : std::max<std::int64_t>(1, kElementSample / inner);
    run = std::min(full, cap);
    scale = static_cast<double>(full) / static_cast<double>(run);
    shape[0] = run;
  }
  const HostProblem problem =
      from_files ? load_problem(spec, o.files) : generate_problem(spec, shape, o.seed, o.soft, o.weighted);
  const TrafficMeasurement m = measure_traffic(problem, true);
  const double bw = o.bandwidth_tbs * 1e12;
  const double moved = 32.0 * static_cast<double>(m.total.sectors_read + m.total.sectors_written) * scale;
  const double floor = static_cast<double>(m.floor.read + m.floor.write) * scale;
  std::string sample_note;
  if (scale != 1.0) {
    sample_note = "emulated on " + std::to_string(run) + " of " + std::to_string(full) +
                  (shape.size() > 1 ? " rows" : " elements") + " and scaled x" + std::to_string(scale).substr(0, 8) +
                  (problem.rowwise ? " (rows are independent)" : " (tiles are independent)");
  }
  const std::string model = "MODEL, not a measurement: bytes moved (whole 32-byte sectors) / " +
                            std::to_string(o.bandwidth_tbs).substr(0, 4) +
                            " TB/s (an H100 SXM's measured device-to-device copy); a re-read served by L2 costs less";

  if (o.json) {
    nlohmann::json j;
    j["problem"] = problem.describe();
    j["scale"] = scale;
    if (scale != 1.0) j["sample"] = sample_note;
    for (const KernelTraffic& k : m.kernels) {
      j["kernels"].push_back({{"kernel", k.kernel},
                              {"role", k.role},
                              {"plan", k.plan},
                              {"grid", k.grid},
                              {"block", k.block},
                              {"cluster", k.cluster},
                              {"bytes_read", static_cast<double>(k.requested_read) * scale},
                              {"bytes_written", static_cast<double>(k.requested_written) * scale},
                              {"sectors_read", static_cast<double>(k.sectors_read) * scale},
                              {"sectors_written", static_cast<double>(k.sectors_written) * scale},
                              {"read_requests", static_cast<double>(k.read_requests) * scale},
                              {"write_requests", static_cast<double>(k.write_requests) * scale},
                              {"read_sector_efficiency", k.read_efficiency()},
                              {"write_sector_efficiency", k.write_efficiency()},
                              {"atomics", static_cast<double>(k.atomics) * scale}});
    }
    j["total"] = {{"bytes_read", static_cast<double>(m.total.requested_read) * scale},
                  {"bytes_written", static_cast<double>(m.total.requested_written) * scale},
                  {"bytes_moved", moved},
                  {"read_sector_efficiency", m.total.read_efficiency()},
                  {"write_sector_efficiency", m.total.write_efficiency()}};
    j["floor"] = {{"bytes_read", static_cast<double>(m.floor.read) * scale},
                  {"bytes_written", static_cast<double>(m.floor.write) * scale}};
    j["model"] = {{"bandwidth_tb_s", o.bandwidth_tbs},
                  {"time_us", moved / bw * 1e6},
                  {"floor_time_us", floor / bw * 1e6},
                  {"note", model}};
    std::printf("%s\n", j.dump(2).c_str());
    return kExitOk;
  }

  std::printf("traffic %s on the emulated device%s\n", problem.describe().c_str(),
              from_files ? "" : (" (generated, seed " + std::to_string(o.seed) + ")").c_str());
  if (!sample_note.empty()) std::printf("%s\n", sample_note.c_str());
  std::printf("%-12s %-13s %-26s %11s %11s %8s %8s %7s  %s\n", "role", "plan", "sample grid x block (K)", "read MB",
              "written MB", "eff rd", "eff wr", "atomics", "kernel");
  for (const KernelTraffic& k : m.kernels) {
    const std::string geometry = std::to_string(k.grid) + " x " + std::to_string(k.block) +
                                 (k.cluster > 1 ? " (" + std::to_string(k.cluster) + ")" : "");
    std::printf("%-12s %-13s %-26s %11.3f %11.3f %8.3f %8.3f %7.0f  %s\n", k.role.c_str(),
                k.plan.empty() ? "-" : k.plan.c_str(), geometry.c_str(), mb(static_cast<double>(k.requested_read) * scale),
                mb(static_cast<double>(k.requested_written) * scale), k.read_efficiency(), k.write_efficiency(),
                static_cast<double>(k.atomics) * scale, short_name(k.kernel).c_str());
  }
  const double rd = static_cast<double>(m.total.requested_read) * scale;
  const double wr = static_cast<double>(m.total.requested_written) * scale;
  const double frd = static_cast<double>(m.floor.read) * scale;
  const double fwr = static_cast<double>(m.floor.write) * scale;
  std::printf("total: read %.3f MB = %.4fx the minimum %.3f MB (input once, target, labels, weights); written %.3f MB "
              "= %.4fx the minimum %.3f MB (gradient once, loss, lse)\n",
              mb(rd), rd / frd, mb(frd), mb(wr), wr / fwr, mb(fwr));
  std::printf("sector efficiency: read %.3f, write %.3f; bytes moved in whole sectors %.3f MB\n",
              m.total.read_efficiency(), m.total.write_efficiency(), mb(moved));
  std::printf("time at %.1f TB/s: %.1f us (the minimum traffic: %.1f us)  [%s]\n", o.bandwidth_tbs, moved / bw * 1e6,
              floor / bw * 1e6, model.c_str());
  return kExitOk;
}

}  // namespace fusedloss_cli
