// `fusedloss bench`: the sweep, the CPU timer, the table and the JSON.
#include "cli/bench_linear_ce.hpp"
#include "cli/bench.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/bench_data.hpp"
#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "fusedloss/detail/elementwise_ops.hpp"
#include "fusedloss/detail/rowwise_ops.hpp"

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

double buffer_set_bytes(const BenchCase& c) {
  const double e = static_cast<double>(fusedloss::dtype_size(c.dtype));
  const double n = static_cast<double>(c.n);
  double bytes = n * e;                       // input
  if (!c.inplace) bytes += n * e;             // gradient
  if (c.reduction == Reduction::None) bytes += loss_output_bytes(c);
  if (!c.rowwise) return bytes + n * e * (c.weighted ? 2.0 : 1.0);  // target (+ weight)
  const bool labels = c.loss == Loss::NLL || (c.loss == Loss::CrossEntropy && !c.soft);
  if (labels) return bytes + static_cast<double>(c.rows) * static_cast<double>(fusedloss::dtype_size(c.label_dtype));
  return bytes + n * e;  // dense target
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

// ---------------------------------------------------------------------------------------------
// CPU timer

namespace {

/// A team of persistent threads: run(f) calls f(tid, size) on every member (the caller is 0)
/// and returns when all are done. Used for the STREAM-style copy, the unfused baseline and the
/// data fill, so none of them pays thread start-up per call.
class ThreadTeam {
 public:
  explicit ThreadTeam(int n) : size_(std::max(1, n)) {
    for (int t = 1; t < size_; ++t) workers_.emplace_back([this, t] { loop(t); });
  }
  ~ThreadTeam() {
    {
      std::lock_guard<std::mutex> lock(m_);
      stop_ = true;
      ++generation_;
    }
    start_.notify_all();
    for (std::thread& w : workers_) w.join();
  }
  int size() const { return size_; }
  /// Runs f(tid, active) on `active` = clamp(items / min_items, 1, size()) members: small jobs
  /// run inline on the caller instead of paying thread wake-ups (as STREAM would with big arrays).
  void run(std::int64_t items, std::int64_t min_items, const std::function<void(int, int)>& f) {
    const int active = static_cast<int>(std::clamp<std::int64_t>(items / std::max<std::int64_t>(1, min_items), 1, size_));
    if (active == 1) {
      f(0, 1);
      return;
    }
    const std::function<void(int, int)> part = [&](int tid, int) {
      if (tid < active) f(tid, active);
    };
    run_all(part);
  }

 private:
  void run_all(const std::function<void(int, int)>& f) {
    {
      std::lock_guard<std::mutex> lock(m_);
      job_ = &f;
      pending_ = size_ - 1;
      ++generation_;
    }
    start_.notify_all();
    f(0, size_);
    std::unique_lock<std::mutex> lock(m_);
    done_.wait(lock, [this] { return pending_ == 0; });
    job_ = nullptr;
  }

 public:
  /// [begin, end) of `count` items for member `tid`.
  static std::pair<std::int64_t, std::int64_t> slice(std::int64_t count, int tid, int size) {
    const std::int64_t per = count / size, extra = count % size;
    const std::int64_t begin = tid * per + std::min<std::int64_t>(tid, extra);
    return {begin, begin + per + (tid < extra ? 1 : 0)};
  }

 private:
  void loop(int tid) {
    std::uint64_t seen = 0;
    for (;;) {
      const std::function<void(int, int)>* job = nullptr;
      {
        std::unique_lock<std::mutex> lock(m_);
        start_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_) return;
        job = job_;
      }
      (*job)(tid, size_);
      {
        std::lock_guard<std::mutex> lock(m_);
        if (--pending_ == 0) done_.notify_one();
      }
    }
  }

  int size_;
  std::vector<std::thread> workers_;
  std::mutex m_;
  std::condition_variable start_, done_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

inline float ld(const float* p, std::int64_t i) { return p[i]; }
inline float ld(const fusedloss::half_t* p, std::int64_t i) { return fusedloss::to_float(p[i]); }
inline float ld(const fusedloss::bfloat16_t* p, std::int64_t i) { return fusedloss::to_float(p[i]); }
inline void st(float* p, std::int64_t i, float v) { p[i] = v; }
inline void st(fusedloss::half_t* p, std::int64_t i, float v) { p[i] = fusedloss::to_half(v); }
inline void st(fusedloss::bfloat16_t* p, std::int64_t i, float v) { p[i] = fusedloss::to_bfloat16(v); }

template <class F>
void with_storage(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float16: f(static_cast<fusedloss::half_t*>(nullptr)); return;
    case DType::BFloat16: f(static_cast<fusedloss::bfloat16_t*>(nullptr)); return;
    default: f(static_cast<float*>(nullptr)); return;
  }
}

std::int64_t label_at(const void* labels, DType dtype, std::int64_t i) {
  return dtype == DType::Int32 ? static_cast<const std::int32_t*>(labels)[i] : static_cast<const std::int64_t*>(labels)[i];
}

struct HostSet {
  std::vector<unsigned char> x, y, w, labels, grad, loss;
};

std::int64_t cpu_cache_bytes() {
  std::int64_t best = 0;
  for (int i = 0; i < 8; ++i) {
    std::ifstream f("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/size");
    std::string s;
    if (!(f >> s) || s.empty()) continue;
    std::int64_t mult = 1;
    if (s.back() == 'K') mult = 1024;
    if (s.back() == 'M') mult = 1024 * 1024;
    if (mult != 1) s.pop_back();
    try {
      best = std::max<std::int64_t>(best, static_cast<std::int64_t>(std::stoll(s)) * mult);
    } catch (...) {
    }
  }
  return best;
}

std::string cpu_model_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      const std::size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string name = line.substr(colon + 1);
        while (!name.empty() && name.front() == ' ') name.erase(name.begin());
        return name;
      }
    }
  }
  return "unknown CPU";
}

/// Below these sizes a CPU pass runs on fewer threads (one per this many bytes / items).
constexpr std::int64_t kMinBytesPerThread = 256 * 1024;
constexpr std::int64_t kMinItemsPerThread = 64 * 1024;

class CpuRunner : public BenchRunner {
 public:
  explicit CpuRunner(int threads)
      : threads_(threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency())), team_(threads_) {}

  BenchDevice device() const override {
    BenchDevice d;
    d.backend = "cpu";
    d.name = cpu_model_name();
    d.threads = threads_;
    d.cache_bytes = cpu_cache_bytes();
    return d;
  }

  bool has_baseline(const BenchCase& c) const override { return has_unfused_baseline(c); }

  CaseResult run(const BenchCase& c, const BenchSettings& s) override {
    CaseResult r;
    r.buffer_sets = rotation_sets(s.rotate_bytes, buffer_set_bytes(c));
    std::vector<HostSet> sets(static_cast<std::size_t>(r.buffer_sets));
    for (int k = 0; k < r.buffer_sets; ++k) allocate_and_fill(c, sets[static_cast<std::size_t>(k)], 1000 + k);

    // Fused: the library's CPU path.
    fusedloss::ExecutionConfig cfg;
    cfg.backend = fusedloss::Backend::CPU;
    cfg.cpu_threads = threads_;
    auto fused_once = [&](int i) {
      HostSet& set = sets[static_cast<std::size_t>(i % r.buffer_sets)];
      const fusedloss::Status st = call_fused(c, set, cfg);
      if (st != fusedloss::Status::Success)
        throw RuntimeFailure(std::string("fused call failed: ") + fusedloss::status_string(st));
    };
    r.fused = time_it(fused_once, s);
    if (c.reduction != Reduction::None) {
      float v;
      std::memcpy(&v, sets[0].loss.data(), 4);
      r.fused_loss = v;
    }

    // Copy: a STREAM-style parallel copy of traffic/2 bytes (it moves the same traffic).
    const std::size_t copy_bytes = static_cast<std::size_t>(traffic_bytes(c) / 2);
    const int copy_sets = rotation_sets(s.rotate_bytes, 2.0 * copy_bytes);
    std::vector<std::vector<unsigned char>> src(static_cast<std::size_t>(copy_sets)), dst(src.size());
    for (std::size_t k = 0; k < src.size(); ++k) {
      src[k].assign(copy_bytes, static_cast<unsigned char>(k + 1));
      dst[k].assign(copy_bytes, 0);
    }
    auto copy_once = [&](int i) {
      const std::size_t k = static_cast<std::size_t>(i % copy_sets);
      unsigned char* d = dst[k].data();
      const unsigned char* sp = src[k].data();
      team_.run(static_cast<std::int64_t>(copy_bytes), kMinBytesPerThread, [&](int tid, int nt) {
        const auto range = ThreadTeam::slice(static_cast<std::int64_t>(copy_bytes), tid, nt);
        std::memcpy(d + range.first, sp + range.first, static_cast<std::size_t>(range.second - range.first));
      });
    };
    r.copy = time_it(copy_once, s);
    src.clear();
    dst.clear();

    // Unfused baseline: naive separate passes over the data, same threads.
    if (s.baseline && has_baseline(c)) {
      r.unfused_name = c.rowwise ? "naive multi-pass loops" : "naive two-pass loop (loss pass, gradient pass)";
      auto unfused_once = [&](int i) { unfused(c, sets[static_cast<std::size_t>(i % r.buffer_sets)]); };
      r.unfused = time_it(unfused_once, s);
      r.unfused_loss = unfused(c, sets[0]);
      // With an in-place gradient the inputs were overwritten: the two values are not comparable.
      r.has_loss_values = c.reduction != Reduction::None && !c.inplace;
    }
    return r;
  }

 private:
  template <class F>
  Timing time_it(F&& once, const BenchSettings& s) {
    for (int i = 0; i < s.warmup; ++i) once(i);
    std::vector<double> ms;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < std::max(1, s.repeats); ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      once(s.warmup + i);
      const auto t1 = std::chrono::steady_clock::now();
      ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      const double elapsed = std::chrono::duration<double>(t1 - start).count();
      if (ms.size() >= 3 && elapsed > s.max_case_seconds) break;
    }
    return summarize(std::move(ms));
  }

  void fill_values(std::vector<unsigned char>& buf, DType dtype, std::int64_t n, const bench_data::Fill& f,
                   std::uint64_t seed) {
    buf.assign(static_cast<std::size_t>(n) * fusedloss::dtype_size(dtype), 0);
    unsigned char* base = buf.data();
    team_.run(n, kMinItemsPerThread, [&](int tid, int nt) {
      const auto range = ThreadTeam::slice(n, tid, nt);
      with_storage(dtype, [&](auto* tag) {
        using T = std::remove_pointer_t<decltype(tag)>;
        T* p = reinterpret_cast<T*>(base);
        for (std::int64_t i = range.first; i < range.second; ++i)
          st(p, i, bench_data::fill_value(f, seed, static_cast<std::uint64_t>(i)));
      });
    });
  }

  void allocate_and_fill(const BenchCase& c, HostSet& set, std::uint64_t seed) {
    const std::int64_t n = c.n;
    fill_values(set.x, c.dtype, n, bench_data::input_fill(c.loss), seed);
    const bool labels = c.rowwise && (c.loss == Loss::NLL || (c.loss == Loss::CrossEntropy && !c.soft));
    if (labels) {
      set.labels.assign(static_cast<std::size_t>(c.rows) * fusedloss::dtype_size(c.label_dtype), 0);
      const bench_data::Fill f = bench_data::label_fill(c.classes);
      for (std::int64_t i = 0; i < c.rows; ++i) {
        const std::int64_t v = bench_data::fill_label(f, seed + 7, static_cast<std::uint64_t>(i));
        if (c.label_dtype == DType::Int32) {
          const std::int32_t v32 = static_cast<std::int32_t>(v);
          std::memcpy(set.labels.data() + 4 * i, &v32, 4);
        } else {
          std::memcpy(set.labels.data() + 8 * i, &v, 8);
        }
      }
    } else {
      fill_values(set.y, c.dtype, n, bench_data::target_fill(c.loss, std::max<std::int64_t>(1, c.classes)), seed + 7);
    }
    if (c.weighted && !c.rowwise) fill_values(set.w, c.dtype, n, bench_data::weight_fill(), seed + 13);
    if (!c.inplace) set.grad.assign(static_cast<std::size_t>(n) * fusedloss::dtype_size(c.dtype), 0);
    set.loss.assign(static_cast<std::size_t>(loss_output_bytes(c)), 0);
  }

  static fusedloss::Status call_fused(const BenchCase& c, HostSet& set, const fusedloss::ExecutionConfig& cfg) {
    BenchBuffers b;
    b.x = set.x.data();
    b.y = c.rowwise && set.y.empty() ? nullptr : set.y.data();
    b.w = set.w.data();
    b.labels = set.labels.empty() ? nullptr : set.labels.data();
    b.grad = set.grad.data();
    b.loss = reinterpret_cast<float*>(set.loss.data());
    return with_bench_problem(c, b, [&](const auto& p, const auto& out) { return fusedloss::compute(p, out, cfg); });
  }

  /// Naive unfused reference timing: each stage is its own full pass over the data.
  double unfused(const BenchCase& c, HostSet& set) {
    double value = 0;
    with_storage(c.dtype, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      const T* x = reinterpret_cast<const T*>(set.x.data());
      const T* y = reinterpret_cast<const T*>(set.y.data());
      const T* w = c.weighted ? reinterpret_cast<const T*>(set.w.data()) : nullptr;
      T* g = reinterpret_cast<T*>(c.inplace ? set.x.data() : set.grad.data());
      float* loss_none = reinterpret_cast<float*>(set.loss.data());
      if (!c.rowwise) {
        fusedloss::detail::visit_elementwise_op(c.loss, [&](auto op) {
          value = unfused_elementwise<decltype(op)>(c, x, y, w, g, loss_none);
        });
      } else if (c.loss == Loss::CrossEntropy) {
        value = unfused_cross_entropy(c, x, set.labels.data(), g, loss_none);
      } else if (c.loss == Loss::NLL) {
        value = unfused_nll(c, x, set.labels.data(), g, loss_none);
      } else if (c.loss == Loss::KLDiv) {
        value = unfused_kl_div(c, x, y, g, loss_none);
      }
    });
    return value;
  }

  /// One pass: body(i) for i in [0, count), the range sliced over the team. `work` (the items the
  /// pass touches) sets how many threads run (see ThreadTeam::run).
  template <class Body>
  void parallel_for(std::int64_t work, std::int64_t count, const Body& body) {
    team_.run(work, kMinItemsPerThread, [&](int tid, int nt) {
      const auto range = ThreadTeam::slice(count, tid, nt);
      for (std::int64_t i = range.first; i < range.second; ++i) body(i);
    });
  }

  /// One pass returning Σ term(i) over [0, count): per-thread partial sums in double, added in
  /// thread order.
  template <class Term>
  double parallel_sum(std::int64_t work, std::int64_t count, const Term& term) {
    std::vector<double> partial(static_cast<std::size_t>(team_.size()), 0.0);
    team_.run(work, kMinItemsPerThread, [&](int tid, int nt) {
      const auto range = ThreadTeam::slice(count, tid, nt);
      double sum = 0;
      for (std::int64_t i = range.first; i < range.second; ++i) sum += term(i);
      partial[static_cast<std::size_t>(tid)] = sum;
    });
    double total = 0;
    for (double p : partial) total += p;
    return total;
  }

  template <class Op, class T>
  double unfused_elementwise(const BenchCase& c, const T* x, const T* y, const T* w, T* g, float* loss_none) {
    const fusedloss::detail::ElementwiseOpParams<float> params{};
    const bool none = c.reduction == Reduction::None;
    const double total = parallel_sum(c.n, c.n, [&](std::int64_t i) {  // pass 1: the loss
      float l, d;
      Op::eval(ld(x, i), ld(y, i), params, l, d);
      if (w) l *= ld(w, i);
      if (none) loss_none[i] = l;
      return l;
    });
    float scale = static_cast<float>(1.0 / reduce_divisor(c));
    double value = total / reduce_divisor(c);
    if (c.loss == Loss::RMSE) {
      value = std::sqrt(total / static_cast<double>(c.n));
      scale = value > 0 ? static_cast<float>(1.0 / (2.0 * static_cast<double>(c.n) * value)) : 0.0f;
    }
    parallel_for(c.n, c.n, [&](std::int64_t i) {  // pass 2: the gradient
      float l, d;
      Op::eval(ld(x, i), ld(y, i), params, l, d);
      d *= scale;
      if (w) d *= ld(w, i);
      st(g, i, d);
    });
    return value;
  }

  template <class T>
  double unfused_cross_entropy(const BenchCase& c, const T* z, const void* labels, T* g, float* loss_none) {
    const std::int64_t N = c.rows, C = c.classes;
    std::vector<float> row_max(static_cast<std::size_t>(N)), lse(static_cast<std::size_t>(N));
    parallel_for(N * C, N, [&](std::int64_t n) {  // pass 1: row max
      float m = -INFINITY;
      for (std::int64_t k = 0; k < C; ++k) m = std::max(m, ld(z, n * C + k));
      row_max[static_cast<std::size_t>(n)] = m;
    });
    parallel_for(N * C, N, [&](std::int64_t n) {  // pass 2: logsumexp
      const float m = row_max[static_cast<std::size_t>(n)];
      float s = 0;
      for (std::int64_t k = 0; k < C; ++k) s += std::exp(ld(z, n * C + k) - m);
      lse[static_cast<std::size_t>(n)] = m + std::log(s);
    });
    const double total = parallel_sum(N * C, N, [&](std::int64_t n) {  // pass 3: the loss (nll of log_softmax)
      const std::int64_t y = label_at(labels, c.label_dtype, n);
      const float l = lse[static_cast<std::size_t>(n)] - ld(z, n * C + y);
      if (c.reduction == Reduction::None) loss_none[n] = l;
      return l;
    });
    const float scale = static_cast<float>(1.0 / reduce_divisor(c));
    parallel_for(N * C, N, [&](std::int64_t n) {  // pass 4: the gradient softmax − one-hot
      const std::int64_t y = label_at(labels, c.label_dtype, n);
      const float l = lse[static_cast<std::size_t>(n)];
      for (std::int64_t k = 0; k < C; ++k)
        st(g, n * C + k, (std::exp(ld(z, n * C + k) - l) - (k == y ? 1.0f : 0.0f)) * scale);
    });
    return total / reduce_divisor(c);
  }

  template <class T>
  double unfused_nll(const BenchCase& c, const T* x, const void* labels, T* g, float* loss_none) {
    const std::int64_t N = c.rows, C = c.classes;
    const double total = parallel_sum(N * C, N, [&](std::int64_t n) {  // pass 1: the loss
      const float l = -ld(x, n * C + label_at(labels, c.label_dtype, n));
      if (c.reduction == Reduction::None) loss_none[n] = l;
      return l;
    });
    const float scale = static_cast<float>(1.0 / reduce_divisor(c));
    team_.run(N * C, kMinItemsPerThread, [&](int tid, int nt) {  // pass 2: zero the gradient, pass 3: scatter −scale
      const auto range = ThreadTeam::slice(N, tid, nt);
      for (std::int64_t i = range.first * C; i < range.second * C; ++i) st(g, i, 0.0f);
    });
    parallel_for(N * C, N,
                 [&](std::int64_t n) { st(g, n * C + label_at(labels, c.label_dtype, n), -scale); });
    return total / reduce_divisor(c);
  }

  template <class T>
  double unfused_kl_div(const BenchCase& c, const T* q, const T* p, T* g, float* loss_none) {
    const double total = parallel_sum(c.n, c.n, [&](std::int64_t i) {  // pass 1: the loss
      float dq;
      const float l = fusedloss::detail::kl_div_element(ld(q, i), ld(p, i), false, dq);
      if (c.reduction == Reduction::None) loss_none[i] = l;
      return l;
    });
    const float scale = static_cast<float>(1.0 / reduce_divisor(c));
    parallel_for(c.n, c.n, [&](std::int64_t i) { st(g, i, -ld(p, i) * scale); });  // pass 2: the gradient −p
    return total / reduce_divisor(c);
  }

  int threads_;
  ThreadTeam team_;
};

}  // namespace

std::unique_ptr<BenchRunner> make_cpu_runner(int threads) { return std::make_unique<CpuRunner>(threads); }

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
                                         "written + labels; copy moves the same bytes (bytes/2 copied)"}};
  doc["results"] = json::array();

  // ---- Run.
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  std::string header_line;
  {
    char buf[256];
    std::snprintf(buf, sizeof buf, "%-16s %-5s %-14s %10s %9s %9s %6s %11s %8s", "loss", "dtype", "size", "fused ms",
                  "GB/s", "copy GB/s", "ratio", "unfused ms", "speedup");
    header_line = buf;
    if (peers) header_line += "   torch ms  vs torch";
  }
  std::printf("fusedloss bench on %s (%s%s)\n", device.name.c_str(), device.backend.c_str(),
              device.backend == "cpu" ? (", " + std::to_string(device.threads) + " threads").c_str() : "");
  if (device.emulated)
    std::printf("note: the emulated device runs the CUDA kernels on this CPU (sim/): these times are CPU "
                "emulation times, NOT GPU times; they say nothing about a GPU's speed\n");
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
    std::printf("%-16s %-5s %-14s %10.4f %9.1f %9.1f %6.2f %11s %8s", fusedloss::loss_name(c.loss),
                fusedloss::dtype_name(c.dtype), c.shape_text().c_str(), r.fused.median_ms, fused_bw, copy_bw, ratio,
                unfused_ms, speedup);
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
