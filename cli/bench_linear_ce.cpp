// fusedloss CLI — `fusedloss bench --loss linear_cross_entropy`: the fused LM head + loss against the
// unfused baseline and PyTorch, on the CPU: median time of one forward + backward call and its PEAK EXTRA
// MEMORY (what the call adds to the process's resident set at its peak).
//
//   fused     fusedloss::compute(LinearCrossEntropyProblem): chunked, workspace ≤ the memory budget
//   unfused   the same math without chunking: sgemm → [N, V] fp32 logits → fusedloss cross_entropy (gradient
//             in place) → sgemm (grad_hidden) → sgemm (grad_weight) → column sums (grad_bias)
//   torch_*   F.cross_entropy(h @ W.T + b, y).backward(), eager and torch.compile (bench/peers/torch_linear_ce.py)
// Peak extra memory: VmHWM after the call minus VmRSS before it, with the peak reset just before the call
// (/proc/self/clear_refs = 5). Inputs and outputs are allocated and touched first, and one warm-up call lets
// OpenBLAS allocate its persistent buffers, so neither is counted. Everything is fp32 (the dtype option only
// changes the fused call's inputs).
#include "cli/bench_linear_ce.hpp"

#include <cblas.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/common.hpp"
#include "fusedloss/fusedloss.hpp"

namespace fusedloss_cli {
namespace {

namespace fl = ::fusedloss;
using json = nlohmann::json;

struct Memory {
  std::int64_t rss = 0, hwm = 0;
};
Memory read_memory() {
  Memory m;
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) m.rss = std::stoll(line.substr(6)) * 1024;
    if (line.rfind("VmHWM:", 0) == 0) m.hwm = std::stoll(line.substr(6)) * 1024;
  }
  return m;
}
void reset_peak() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
}
std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

struct Measurement {
  std::string impl;
  double time_ms = 0;
  std::int64_t peak_extra = 0;
  double loss = 0;
  std::string note;
};

/// Median time and largest peak extra memory of `repeats` calls of f (after one warm-up call).
template <class F>
Measurement measure(const std::string& impl, int repeats, F&& f) {
  Measurement m;
  m.impl = impl;
  m.loss = f();
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    malloc_trim(0);
    reset_peak();
    const Memory before = read_memory();
    const auto t0 = std::chrono::steady_clock::now();
    m.loss = f();
    const auto t1 = std::chrono::steady_clock::now();
    const Memory after = read_memory();
    times.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    m.peak_extra = std::max(m.peak_extra, after.hwm - before.rss);
  }
  std::sort(times.begin(), times.end());
  m.time_ms = times[times.size() / 2];
  return m;
}

/// Fills v with a cheap deterministic pseudo-random sequence in [-scale, scale].
void fill(std::vector<float>& v, std::uint64_t seed, float scale) {
  std::uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = scale * (static_cast<float>(static_cast<double>(s >> 40) / double(1ull << 24)) * 2.0f - 1.0f);
  }
}

}  // namespace

int run_linear_ce_bench(const BenchOptions& o) {
  const std::string dev = lower(o.device);
  if (!(dev.empty() || dev == "auto" || dev == "cpu"))
    throw UsageError("--loss linear_cross_entropy: only the CPU benchmark exists so far (use --device cpu)");
  if (o.threads < 0) throw UsageError("--threads must be >= 0");
  const std::string shape = o.shapes.empty() ? "4096x1024x128256" : o.shapes;
  std::int64_t N = 0, H = 0, V = 0;
  {
    std::string s = lower(shape);
    std::replace(s.begin(), s.end(), 'x', ' ');
    std::istringstream in(s);
    if (!(in >> N >> H >> V) || N < 1 || H < 1 || V < 1)
      throw UsageError("--shapes: linear_cross_entropy takes one N x H x V shape, e.g. 4096x1024x128256");
  }
  const int repeats = o.repeats > 0 ? o.repeats : 3;
  const int threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  openblas_set_num_threads(threads);
  const std::size_t budget = std::size_t(256) << 20;

  // Inputs and outputs: allocated and touched before anything is measured.
  std::vector<float> hidden(static_cast<std::size_t>(N * H)), weight(static_cast<std::size_t>(V * H)),
      bias(static_cast<std::size_t>(V));
  fill(hidden, 1, 1.7f);
  fill(weight, 2, 3.4f / std::sqrt(static_cast<float>(H)));
  fill(bias, 3, 1.0f);
  std::vector<std::int64_t> labels(static_cast<std::size_t>(N));
  for (std::int64_t n = 0; n < N; ++n) labels[static_cast<std::size_t>(n)] = (n * 7919) % V;
  std::vector<float> grad_hidden(hidden.size()), grad_weight(weight.size()), grad_bias(bias.size());
  float loss = 0;

  fl::LinearCrossEntropyProblem p;
  p.rows = N;
  p.hidden_size = H;
  p.classes = V;
  p.hidden = hidden.data();
  p.weight = weight.data();
  p.bias = bias.data();
  p.labels = labels.data();
  p.memory_budget_bytes = budget;
  fl::LinearCrossEntropyOutputs out;
  out.loss = &loss;
  out.grad_hidden = grad_hidden.data();
  out.grad_weight = grad_weight.data();
  out.grad_bias = grad_bias.data();
  fl::ExecutionConfig cfg;
  cfg.backend = fl::Backend::CPU;
  cfg.cpu_threads = threads;
  fl::LinearCrossEntropyPlan plan;
  if (fl::linear_cross_entropy_plan(p, out, cfg, &plan) != fl::Status::Success)
    throw UsageError("linear_cross_entropy: the shape does not fit the 256 MiB budget");

  const std::string load_before = load_average();
  std::vector<Measurement> rows;
  rows.push_back(measure("fused", repeats, [&] {
    if (fl::compute(p, out, cfg) != fl::Status::Success) throw RuntimeFailure("linear_cross_entropy failed");
    return static_cast<double>(loss);
  }));
  char note[128];
  std::snprintf(note, sizeof note, "chunk %lld rows, workspace %.1f MiB + internal %.1f MiB",
                static_cast<long long>(plan.chunk_rows), static_cast<double>(plan.workspace_bytes) / (1 << 20),
                static_cast<double>(plan.internal_bytes) / (1 << 20));
  rows.back().note = note;

  // The unfused baseline: the whole [N, V] logits at once.
  if (!o.no_baseline) rows.push_back(measure("unfused", repeats, [&] {
    std::vector<float> logits(static_cast<std::size_t>(N * V));
    for (std::int64_t n = 0; n < N; ++n) std::memcpy(&logits[static_cast<std::size_t>(n * V)], bias.data(), 4 * V);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(N), int(V), int(H), 1.0f, hidden.data(), int(H),
                weight.data(), int(H), 1.0f, logits.data(), int(V));
    fl::RowwiseProblem ce;
    ce.loss = fl::Loss::CrossEntropy;
    ce.rows = N;
    ce.classes = V;
    ce.input = logits.data();
    ce.labels = labels.data();
    fl::LossOutputs ce_out;
    ce_out.loss = &loss;
    ce_out.grad = logits.data();
    if (fl::compute(ce, ce_out, cfg) != fl::Status::Success) throw RuntimeFailure("cross_entropy failed");
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(N), int(H), int(V), 1.0f, logits.data(), int(V),
                weight.data(), int(H), 0.0f, grad_hidden.data(), int(H));
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(V), int(H), int(N), 1.0f, logits.data(), int(V),
                hidden.data(), int(H), 0.0f, grad_weight.data(), int(H));
    std::vector<double> colsum(static_cast<std::size_t>(V), 0.0);
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t v = 0; v < V; ++v) colsum[static_cast<std::size_t>(v)] += logits[static_cast<std::size_t>(n * V + v)];
    for (std::int64_t v = 0; v < V; ++v) grad_bias[static_cast<std::size_t>(v)] = static_cast<float>(colsum[static_cast<std::size_t>(v)]);
    return static_cast<double>(loss);
  }));
  if (!o.no_baseline) rows.back().note = "[N, V] fp32 logits: " + std::to_string((N * V * 4) >> 20) + " MiB";

  // PyTorch, in a child process (its own resident set), right after, under the same load.
  if (!o.no_peers) {
    const char* python_env = std::getenv("FUSEDLOSS_PYTHON");
    const std::string python = python_env != nullptr ? python_env : "python3";
    const std::string cmd = python + " " FUSEDLOSS_SOURCE_DIR "/bench/peers/torch_linear_ce.py --shape " +
                            std::to_string(N) + "x" + std::to_string(H) + "x" + std::to_string(V) + " --threads " +
                            std::to_string(threads) + " --repeats " + std::to_string(repeats) + " 2>/dev/null";
    if (FILE* pipe = popen(cmd.c_str(), "r")) {
      char line[512];
      while (std::fgets(line, sizeof line, pipe) != nullptr) {
        std::istringstream in(line);
        Measurement m;
        std::string key1, key2;
        if (in >> m.impl >> key1) {
          if (key1 == "time_ms" && in >> m.time_ms >> key2 >> m.peak_extra) {
            m.loss = std::nan("");
            m.note = "F.cross_entropy(h @ W.T + b, y).backward()";
            rows.push_back(m);
          } else {
            std::fprintf(stderr, "fusedloss bench: %s", line);
          }
        }
      }
      pclose(pipe);
    }
  }
  const std::string load_after = load_average();

  std::printf("linear_cross_entropy, CPU, fp32, N=%lld H=%lld V=%lld, mean reduction, bias, %d threads "
              "(OpenBLAS %d), budget %zu MiB\n",
              static_cast<long long>(N), static_cast<long long>(H), static_cast<long long>(V), threads,
              openblas_get_num_threads(), budget >> 20);
  std::printf("load average before: %s, after: %s\n", load_before.c_str(), load_after.c_str());
  std::printf("%-14s %12s %18s %12s  %s\n", "impl", "time ms", "peak extra MiB", "loss", "note");
  json results = json::array();
  for (const Measurement& m : rows) {
    std::printf("%-14s %12.1f %18.1f %12.6f  %s\n", m.impl.c_str(), m.time_ms, double(m.peak_extra) / (1 << 20),
                m.loss, m.note.c_str());
    results.push_back({{"impl", m.impl}, {"time_ms", m.time_ms}, {"peak_extra_bytes", m.peak_extra},
                       {"note", m.note}});
  }
  if (!o.json.empty()) {
    json doc = {{"loss", "linear_cross_entropy"}, {"device", "cpu"}, {"dtype", "f32"},
                {"shape", {N, H, V}}, {"threads", threads}, {"budget_bytes", budget},
                {"load_before", load_before}, {"load_after", load_after}, {"commit", o.commit},
                {"results", results}};
    std::ofstream f(o.json);
    f << doc.dump(2) << "\n";
  }
  return 0;
}

}  // namespace fusedloss_cli
