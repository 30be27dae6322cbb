// `fusedloss bench`: the sweep, the table and the JSON (the runners: bench_harness.hpp).
#include "cli/bench_linear_ce.hpp"
#include "cli/bench.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/traffic.hpp"

#ifndef FUSEDLOSS_CLI_VERSION
#define FUSEDLOSS_CLI_VERSION "unknown"
#endif

namespace fusedloss_cli {

using fusedloss::DType;
using fusedloss::Loss;
using fusedloss::Reduction;
using json = nlohmann::ordered_json;

// ---------------------------------------------------------------------------------------------
// Cases, traffic, statistics

std::vector<std::int64_t> BenchCase::shape() const {
  if (rowwise) return {rows, classes};
  return {n};
}

std::string BenchCase::shape_text() const {
  if (rowwise) return std::to_string(rows) + "x" + std::to_string(classes);
  return std::to_string(n);
}

namespace {
double loss_output_bytes(const BenchCase& c) {
  if (c.reduction != Reduction::None) return 4.0;
  if (!c.rowwise || c.loss == Loss::KLDiv) return 4.0 * static_cast<double>(c.n);
  return 4.0 * static_cast<double>(c.rows);
}
}  // namespace

double traffic_bytes(const BenchCase& c) {
  const double e = static_cast<double>(fusedloss::dtype_size(c.dtype));
  const double n = static_cast<double>(c.n);
  const double none_loss = c.reduction == Reduction::None ? loss_output_bytes(c) : 0.0;
  if (!c.rowwise) return (c.weighted ? 4.0 : 3.0) * n * e + none_loss;
  const double rows = static_cast<double>(c.rows);
  const double label = static_cast<double>(fusedloss::dtype_size(c.label_dtype));
  switch (c.loss) {
    case Loss::CrossEntropy: return (c.soft ? 3.0 : 2.0) * n * e + (c.soft ? 0.0 : rows * label) + none_loss;
    case Loss::NLL: return n * e + rows * (label + e) + none_loss;
    default: return 3.0 * n * e + none_loss;  // kl_div, kl_div_logits
  }
}

double reduce_divisor(const BenchCase& c) {
  switch (c.reduction) {
    case Reduction::Mean:
      if (c.rowwise && (c.loss == Loss::KLDiv || c.loss == Loss::KLDivLogits)) return static_cast<double>(c.n);
      return static_cast<double>(c.rowwise ? c.rows : c.n);  // CE/nll: no ignored rows, unit weights
    case Reduction::BatchMean: return static_cast<double>(c.rows);
    default: return 1.0;
  }
}

int rotation_sets(double rotate_bytes, double set_bytes) {
  return static_cast<int>(std::clamp(std::ceil(rotate_bytes / std::max(1.0, set_bytes)), 1.0, 64.0));
}

bool has_unfused_baseline(const BenchCase& c) {
  if (!c.rowwise) return true;
  return (c.loss == Loss::CrossEntropy && !c.soft) || c.loss == Loss::NLL || c.loss == Loss::KLDiv;
}

Timing summarize(std::vector<double> ms) {
  Timing t;
  if (ms.empty()) return t;
  std::sort(ms.begin(), ms.end());
  t.valid = true;
  t.samples = static_cast<int>(ms.size());
  t.min_ms = ms.front();
  t.max_ms = ms.back();
  const std::size_t m = ms.size() / 2;
  t.median_ms = ms.size() % 2 ? ms[m] : 0.5 * (ms[m - 1] + ms[m]);
  double sum = 0;
  for (double v : ms) sum += v;
  t.mean_ms = sum / static_cast<double>(ms.size());
  return t;
}

CallTraffic measure_call_traffic(const std::function<void()>& call) {
  const TrafficMeasurement m = measure_call(call, TrafficFloor{});
  CallTraffic t;
  t.measured = true;
  t.bytes_read = static_cast<double>(m.total.requested_read);
  t.bytes_written = static_cast<double>(m.total.requested_written);
  t.sector_bytes = 32.0 * static_cast<double>(m.total.sectors_read + m.total.sectors_written);
  t.launches = static_cast<int>(m.kernels.size());
  return t;
}

#if !FUSEDLOSS_CLI_WITH_CUDA
std::unique_ptr<BenchRunner> make_cuda_runner() { throw NoGpuError("--device cuda: this build of fusedloss has no CUDA path"); }
#endif

// ---------------------------------------------------------------------------------------------
// The sweep, the table and the JSON

namespace {

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string commit_id(const std::string& given) {
  if (!given.empty()) return given;
  for (const char* var : {"FUSEDLOSS_COMMIT", "GIT_COMMIT", "GITHUB_SHA"}) {
    const char* v = std::getenv(var);
    if (v != nullptr && *v != '\0') return v;
  }
  return "";
}

std::vector<std::string> list_or_default(const std::string& text, const std::vector<std::string>& fallback) {
  if (text.empty()) return fallback;
  std::vector<std::string> out;
  for (const std::string& part : split(text, ',')) {
    std::string p = part;
    p.erase(0, p.find_first_not_of(' '));
    p.erase(p.find_last_not_of(' ') + 1);
    if (p.empty()) throw UsageError("empty item in the list '" + text + "'");
    out.push_back(p);
  }
  return out;
}

double gbps(double bytes, const Timing& t) { return t.valid && t.median_ms > 0 ? bytes / (t.median_ms * 1e-3) / 1e9 : 0.0; }

json timing_json(const Timing& t) {
  return json{{"median_ms", t.median_ms}, {"min_ms", t.min_ms}, {"mean_ms", t.mean_ms}, {"max_ms", t.max_ms},
              {"samples", t.samples}};
}

/// Writes `text` to `path` through a temporary file and a rename.
void write_text_atomically(const std::string& path, const std::string& text) {
  const std::string temp = path + ".tmp-" + std::to_string(static_cast<long>(::getpid()));
  {
    std::ofstream f(temp, std::ios::binary | std::ios::trunc);
    if (!f) throw UsageError("--json " + path + ": cannot create " + temp);
    f << text;
    f.flush();
    if (!f) {
      std::remove(temp.c_str());
      throw UsageError("--json " + path + ": write error");
    }
  }
  std::error_code ec;
  std::filesystem::rename(temp, path, ec);
  if (ec) {
    std::remove(temp.c_str());
    throw UsageError("--json " + path + ": " + ec.message());
  }
}

/// PyTorch eager's forward + backward on the CPU for one case: bench/peers/torch_peers.py in a
/// child process right after the fused timing, so both run under the same machine load. The
/// script's records (torch_eager, and its own copy) come back as JSON; an empty array when
/// python3 or torch is missing or the script fails.
json torch_peer_records(const BenchCase& c, const BenchSettings& s, int threads) {
  const char* script_env = std::getenv("FUSEDLOSS_TORCH_PEERS");
  const char* python_env = std::getenv("FUSEDLOSS_PYTHON");
  const std::string script = script_env != nullptr ? script_env : FUSEDLOSS_SOURCE_DIR "/bench/peers/torch_peers.py";
  const std::string python = python_env != nullptr ? python_env : "python3";
  const std::string out = (std::filesystem::temp_directory_path() /
                           ("fusedloss-torch-peer-" + std::to_string(static_cast<long>(::getpid())) + ".json"))
                              .string();
  std::string cmd = quote_arg(python) + " " + quote_arg(script) + " --device cpu --impl torch_eager" +
                    " --threads " + std::to_string(threads) + " --loss " + fusedloss::loss_name(c.loss) +
                    " --dtype " + fusedloss::dtype_name(c.dtype) + (c.rowwise ? " --shapes " : " --sizes ") +
                    c.shape_text() + " --repeats " + std::to_string(s.repeats) + " --warmup " +
                    std::to_string(s.warmup) + " --max-time " + std::to_string(s.max_case_seconds) + " --json " +
                    quote_arg(out) + " >/dev/null 2>&1";
  json records = json::array();
  if (std::system(cmd.c_str()) == 0) {
    std::ifstream f(out);
    const json doc = json::parse(f, nullptr, /*allow_exceptions=*/false);
    if (doc.is_object() && doc.contains("results") && doc["results"].is_array()) records = doc["results"];
  }
  std::remove(out.c_str());
  return records;
}

/// The peers' comparison applies to what the script times: default reduction, no weights, a
/// separate gradient, labels for cross_entropy.
bool torch_peer_applies(const BenchCase& c) {
  return !c.weighted && !c.inplace && !c.soft && c.reduction == default_reduction(c.loss);
}

}  // namespace

int run_bench(const BenchOptions& o, const std::string& command_line) {
  if (lower(o.losses) == "linear_cross_entropy") return run_linear_ce_bench(o);  // its own harness
  // ---- Parse everything first: a usage error must come before any work.
  if (o.threads < 0) throw UsageError("--threads must be >= 0");
  if (o.repeats < 0) throw UsageError("--repeats must be >= 1");
  if (o.max_case_seconds < 0) throw UsageError("--max-time must be > 0");
  const std::string dev = lower(o.device);
  if (!(dev.empty() || dev == "auto" || dev == "cpu" || dev == "cuda" || dev == "gpu"))
    throw UsageError("--device: unknown device '" + o.device + "' (use cpu or cuda)");
  const bool want_cuda = dev == "cuda" || dev == "gpu" || ((dev.empty() || dev == "auto") && fusedloss::cuda_available());

  std::vector<Loss> losses;
  {
    const std::vector<std::string> names =
        lower(o.losses) == "all" ? all_loss_names()
                                 : list_or_default(o.losses, {"mse", "huber", "bce_with_logits", "cross_entropy"});
    for (const std::string& name : names) {
      const Loss l = parse_loss_name(name);
      if (std::find(losses.begin(), losses.end(), l) == losses.end()) losses.push_back(l);
    }
  }
  std::vector<DType> dtypes;
  for (const std::string& d : list_or_default(o.dtypes, {"f32", "bf16"})) dtypes.push_back(parse_value_dtype(d));

#if defined(FUSEDLOSS_EMULATED_DEVICE)
  const bool gpu_sizes = false;  // the emulated device runs kernels on the CPU: CPU-sized defaults
#else
  const bool gpu_sizes = want_cuda;
#endif
  const std::vector<std::string> default_sizes =
      gpu_sizes ? std::vector<std::string>{"2^20", "2^22", "2^24", "2^26", "2^28"}
                : std::vector<std::string>{"2^16", "2^18", "2^20", "2^22"};
  const std::vector<std::string> default_shapes =
      gpu_sizes ? std::vector<std::string>{"32768x4096", "32768x32768", "16384x128256", "8192x262144"}
                : std::vector<std::string>{"256x4096", "64x32000"};
  std::vector<std::int64_t> sizes;
  for (const std::string& s : list_or_default(o.sizes, default_sizes)) sizes.push_back(parse_size(s, "--sizes"));
  std::vector<std::pair<std::int64_t, std::int64_t>> shapes;
  for (const std::string& s : list_or_default(o.shapes, default_shapes)) {
    const std::vector<std::int64_t> sh = parse_shape(s, "--shapes");
    if (sh.size() != 2) throw UsageError("--shapes: '" + s + "' is not N x C (e.g. 16384x128256)");
    shapes.emplace_back(sh[0], sh[1]);
  }
  const Reduction requested = parse_reduction(o.reduction);
  if (!o.json.empty()) {
    const std::filesystem::path parent = std::filesystem::path(o.json).parent_path();
    std::error_code ec;
    if (!parent.empty() && !std::filesystem::is_directory(parent, ec))
      throw UsageError("--json " + o.json + ": directory " + parent.string() + " does not exist");
  }

  std::vector<BenchCase> cases;
  for (Loss loss : losses) {
    const bool rowwise = !fusedloss::is_elementwise(loss);
    Reduction red = requested == Reduction::Default ? default_reduction(loss) : requested;
    if (red == Reduction::BatchMean && !(loss == Loss::KLDiv || loss == Loss::KLDivLogits)) red = Reduction::Mean;
    if (loss == Loss::RMSE) red = Reduction::Mean;
    for (DType dtype : dtypes) {
      if (!rowwise) {
        for (std::int64_t n : sizes) {
          BenchCase c;
          c.loss = loss;
          c.dtype = dtype;
          c.n = n;
          c.reduction = red;
          c.weighted = o.weighted;
          c.inplace = o.inplace;
          cases.push_back(c);
        }
      } else {
        for (const auto& sh : shapes) {
          BenchCase c;
          c.loss = loss;
          c.dtype = dtype;
          c.rowwise = true;
          c.rows = sh.first;
          c.classes = sh.second;
          if (__builtin_mul_overflow(sh.first, sh.second, &c.n)) throw UsageError("--shapes: shape too large");
          c.reduction = red;
          c.inplace = o.inplace;
          c.soft = o.soft && loss == Loss::CrossEntropy;
          cases.push_back(c);
        }
      }
    }
  }
  if (cases.empty()) throw UsageError("nothing to benchmark");

  // ---- The runner (a GPU check comes after the usage checks).
  std::unique_ptr<BenchRunner> runner;
  if (want_cuda) {
    if (!fusedloss::cuda_available()) {
      make_cuda_runner();  // throws the precise NoGpuError for a CPU-only build
      throw NoGpuError("--device cuda: no usable CUDA device on this machine");
    }
    runner = make_cuda_runner();
  } else {
    runner = make_cpu_runner(o.threads);
  }
  const BenchDevice device = runner->device();
  bool peers = !want_cuda && !o.no_peers;  // the PyTorch column of the CPU table

  BenchSettings settings;
  if (want_cuda) {
    settings.warmup = 5;
    settings.repeats = 50;
    settings.max_case_seconds = 2.0;
    settings.rotate_bytes = 4.0 * static_cast<double>(std::max<std::int64_t>(device.cache_bytes, 50 << 20));
  } else {
    settings.warmup = 1;
    settings.repeats = 15;
    settings.max_case_seconds = 0.4;
    settings.rotate_bytes = 2.0 * static_cast<double>(std::max<std::int64_t>(device.cache_bytes, 16 << 20));
  }
  if (o.repeats > 0) settings.repeats = o.repeats;
  if (o.warmup >= 0) settings.warmup = o.warmup;
  if (o.max_case_seconds > 0) settings.max_case_seconds = o.max_case_seconds;
  settings.threads = o.threads;
  settings.baseline = !o.no_baseline;

  json doc;
  doc["schema"] = "fusedloss-bench/1";
  doc["generator"] = "fusedloss bench";
  doc["fusedloss_version"] = FUSEDLOSS_CLI_VERSION;
  doc["date"] = utc_now();
  doc["command"] = command_line;
  doc["commit"] = commit_id(o.commit);
  json jd;
  jd["backend"] = device.backend;
  jd["name"] = device.name;
  if (device.backend == "cuda") {
    jd["driver_version"] = device.driver_version;
    jd["runtime_version"] = device.runtime_version;
    jd["compute_capability"] = device.compute_capability;
    jd["sm_count"] = device.sm_count;
    jd["memory_bytes"] = device.memory_bytes;
    jd["l2_bytes"] = device.cache_bytes;
    if (device.emulated) jd["emulated"] = true;
  } else {
    jd["threads"] = device.threads;
    jd["cache_bytes"] = device.cache_bytes;
  }
  doc["device"] = jd;
  doc["settings"] = json{{"warmup", settings.warmup},
                         {"repeats", settings.repeats},
                         {"max_case_seconds", settings.max_case_seconds},
                         {"rotate_bytes", settings.rotate_bytes},
                         {"timer", want_cuda ? "cuda events, one pair per call" : "steady_clock per call"},
                         {"bytes_model", "elementwise: x+y(+w) read + grad written; cross_entropy: N*C read + N*C "
                                         "written + labels; copy moves the same bytes (bytes/2 copied)"},
                         {"bytes_moved", runner->measures_traffic()
                                             ? "counted per fused call on the emulated device (bytes each warp request "
                                               "asked for; sector_bytes_moved: in whole 32-byte sectors)"
                                             : "model: the minimum (bytes); not counted on this device"}};
  doc["results"] = json::array();

  // ---- Run.
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  std::string header_line;
  {
    char buf[256];
    std::snprintf(buf, sizeof buf, "%-16s %-5s %-14s %10s %9s %9s %9s %6s %11s %8s", "loss", "dtype", "size",
                  "fused ms", "GB/s", "moved/min", "copy GB/s", "ratio", "unfused ms", "speedup");
    header_line = buf;
    if (peers) header_line += "   torch ms  vs torch";
  }
  std::printf("fusedloss bench on %s (%s%s)\n", device.name.c_str(), device.backend.c_str(),
              device.backend == "cpu" ? (", " + std::to_string(device.threads) + " threads").c_str() : "");
  if (device.emulated)
    std::printf("note: the emulated device runs the CUDA kernels on this CPU (sim/): these times are CPU "
                "emulation times, NOT GPU times; they say nothing about a GPU's speed\n");
  std::printf("moved/min: the bytes one fused call moved / the minimum it must move (the GB/s numerator); %s\n",
              runner->measures_traffic() ? "counted on the emulated device, every access of every kernel"
                                         : "'-': this device does not count accesses (the JSON gives the model)");
  std::printf("%s\n", header_line.c_str());
  std::fflush(stdout);
  int failures = 0;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const BenchCase& c = cases[i];
    char progress[256];
    std::snprintf(progress, sizeof progress, "[%zu/%zu] %s %s %s %s ...", i + 1, cases.size(),
                  device.backend.c_str(), fusedloss::loss_name(c.loss), fusedloss::dtype_name(c.dtype),
                  c.shape_text().c_str());
    std::fprintf(stderr, tty ? "\r\033[K%s" : "%s\n", progress);
    std::fflush(stderr);

    CaseResult r;
    try {
      r = runner->run(c, settings);
    } catch (const RuntimeFailure& e) {
      if (tty) std::fprintf(stderr, "\r\033[K");
      std::fprintf(stderr, "fusedloss bench: skipped %s %s %s: %s\n", fusedloss::loss_name(c.loss),
                   fusedloss::dtype_name(c.dtype), c.shape_text().c_str(), one_line(e.what()).c_str());
      ++failures;
      continue;
    }
    if (tty) std::fprintf(stderr, "\r\033[K");
    const double bytes = traffic_bytes(c);
    const double fused_bw = gbps(bytes, r.fused), copy_bw = gbps(bytes, r.copy);
    const double ratio = copy_bw > 0 ? fused_bw / copy_bw : 0.0;
    char unfused_ms[32] = "-", speedup[32] = "-";
    if (r.unfused.valid) {
      std::snprintf(unfused_ms, sizeof unfused_ms, "%.4f", r.unfused.median_ms);
      std::snprintf(speedup, sizeof speedup, "%.2fx", r.unfused.median_ms / r.fused.median_ms);
    }
    json peer_records = json::array();
    char torch_ms[32] = "-", vs_torch[32] = "-";
    if (peers && torch_peer_applies(c)) {
      if (tty) std::fprintf(stderr, "\r\033[K%s torch ...", progress);
      peer_records = torch_peer_records(c, settings, device.threads);
      if (tty) std::fprintf(stderr, "\r\033[K");
      if (peer_records.empty()) {
        std::fprintf(stderr, "fusedloss bench: no PyTorch column: bench/peers/torch_peers.py failed (it needs python3 "
                             "with torch; FUSEDLOSS_PYTHON picks the interpreter)\n");
        peers = false;
      }
      for (json& rec : peer_records) {
        if (rec.value("impl", "") != "torch_eager") continue;
        const double ms = rec.value("median_ms", 0.0);
        std::snprintf(torch_ms, sizeof torch_ms, "%.4f", ms);
        std::snprintf(vs_torch, sizeof vs_torch, "%.2fx", ms / r.fused.median_ms);
        rec["fused_speedup"] = ms / r.fused.median_ms;  // > 1: the fused call is faster
      }
    }
    const double moved = r.traffic.measured ? r.traffic.bytes_read + r.traffic.bytes_written : bytes;
    char moved_ratio[32] = "-";
    if (r.traffic.measured) std::snprintf(moved_ratio, sizeof moved_ratio, "%.3f", moved / bytes);
    std::printf("%-16s %-5s %-14s %10.4f %9.1f %9s %9.1f %6.2f %11s %8s", fusedloss::loss_name(c.loss),
                fusedloss::dtype_name(c.dtype), c.shape_text().c_str(), r.fused.median_ms, fused_bw, moved_ratio,
                copy_bw, ratio, unfused_ms, speedup);
    if (!want_cuda && !o.no_peers) std::printf(" %10s %9s", torch_ms, vs_torch);
    std::printf("\n");
    std::fflush(stdout);
    if (r.has_loss_values) {
      const double diff = std::fabs(r.fused_loss - r.unfused_loss);
      if (!(diff <= 1e-3 * std::max(1.0, std::fabs(r.unfused_loss))))
        std::fprintf(stderr, "fusedloss bench: warning: %s %s %s: fused loss %.9g and unfused baseline %.9g disagree\n",
                     fusedloss::loss_name(c.loss), fusedloss::dtype_name(c.dtype), c.shape_text().c_str(),
                     r.fused_loss, r.unfused_loss);
    }

    json base;
    base["loss"] = fusedloss::loss_name(c.loss);
    base["dtype"] = fusedloss::dtype_name(c.dtype);
    base["shape"] = c.shape();
    base["elements"] = c.n;
    base["reduction"] = reduction_name(c.reduction);
    base["weighted"] = c.weighted;
    base["inplace"] = c.inplace;
    if (c.loss == Loss::CrossEntropy) base["targets"] = c.soft ? "soft" : "labels";
    base["bytes"] = bytes;
    base["buffer_sets"] = r.buffer_sets;
    base["copy_bandwidth_gbps"] = copy_bw;
    auto record = [&](const char* impl, const Timing& t) {
      json j = base;
      j["impl"] = impl;
      j.update(timing_json(t));
      j["bandwidth_gbps"] = gbps(bytes, t);
      j["ratio_to_copy"] = copy_bw > 0 ? gbps(bytes, t) / copy_bw : 0.0;
      return j;
    };
    json fused = record("fused", r.fused);
    // Bytes moved next to the minimum: counted by the emulated device, else the model (= the minimum).
    fused["bytes_moved"] = moved;
    fused["bytes_moved_to_minimum"] = moved / bytes;
    if (r.traffic.measured) {
      fused["bytes_moved_source"] = "measured: emulated-device accounting of one call (" +
                                    std::to_string(r.traffic.launches) + " launches, every access)";
      fused["bytes_read"] = r.traffic.bytes_read;
      fused["bytes_written"] = r.traffic.bytes_written;
      fused["sector_bytes_moved"] = r.traffic.sector_bytes;
    } else {
      fused["bytes_moved_source"] = "model: the minimum bytes (this device does not count accesses)";
    }
    if (c.reduction != Reduction::None) fused["loss_value"] = r.fused_loss;
    doc["results"].push_back(fused);
    if (r.unfused.valid) {
      json unfused = record("unfused", r.unfused);
      unfused["baseline"] = r.unfused_name;
      unfused["fused_speedup"] = r.unfused.median_ms / r.fused.median_ms;
      if (r.has_loss_values) unfused["loss_value"] = r.unfused_loss;
      doc["results"].push_back(unfused);
    }
    doc["results"].push_back(record("copy", r.copy));
    for (const json& rec : peer_records)
      if (rec.value("impl", "") == "torch_eager") doc["results"].push_back(rec);
    if (!o.json.empty()) write_text_atomically(o.json, doc.dump(2) + "\n");
  }
  if (!o.json.empty()) {
    write_text_atomically(o.json, doc.dump(2) + "\n");
    std::fprintf(stderr, "fusedloss bench: wrote %s\n", o.json.c_str());
  }
  if (failures > 0) {
    std::fprintf(stderr, "fusedloss bench: %d case(s) skipped\n", failures);
    return kExitRuntime;
  }
  return kExitOk;
}

}  // namespace fusedloss_cli
