// `fusedloss bench` on the CPU: the harness (bench_harness.hpp) over host memory and a team of
// persistent threads. The fused call is the library's CPU path; the copy ceiling is a
// STREAM-style parallel memcpy; the baselines' passes are plain loops sliced over the team; the
// clock is steady_clock around each call.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cli/bench.hpp"
#include "cli/bench_harness.hpp"

namespace fusedloss_cli {
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

/// A host allocation (nullptr for 0 bytes).
class HostBuffer {
 public:
  HostBuffer() = default;
  explicit HostBuffer(std::size_t bytes) : data_(bytes ? std::make_unique<unsigned char[]>(bytes) : nullptr) {}
  void* get() const { return data_.get(); }
  template <class T>
  T* as() const {
    return reinterpret_cast<T*>(data_.get());
  }

 private:
  std::unique_ptr<unsigned char[]> data_;
};

/// The CPU device of the harness (see bench_harness.hpp for the policy's members).
class CpuDevice {
 public:
  using Buffer = HostBuffer;
  static constexpr int kMinWarmup = 0;
  static constexpr int kTimingBatch = 1;  // each call is timed on its own
  static constexpr bool kGpu = false;
  static constexpr bool kOpPerLoss = true;  // inlined, vectorised loops per loss

  explicit CpuDevice(int threads)
      : threads_(threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))),
        team_(threads_) {}

  BenchDevice describe() const {
    BenchDevice d;
    d.backend = "cpu";
    d.name = cpu_model_name();
    d.threads = threads_;
    d.cache_bytes = cpu_cache_bytes();
    return d;
  }
  fusedloss::ExecutionConfig config() const {
    fusedloss::ExecutionConfig cfg;
    cfg.backend = fusedloss::Backend::CPU;
    cfg.cpu_threads = threads_;
    return cfg;
  }
  double memory_budget() const { return 1e300; }  // the host's allocator reports its own failure
  bool measures_traffic() const { return false; }

  Buffer alloc(std::size_t bytes) { return Buffer(bytes); }
  void copy(void* dst, const void* src, std::size_t bytes) {
    team_.run(static_cast<std::int64_t>(bytes), kMinBytesPerThread, [&](int tid, int nt) {
      const auto range = ThreadTeam::slice(static_cast<std::int64_t>(bytes), tid, nt);
      std::memcpy(static_cast<unsigned char*>(dst) + range.first, static_cast<const unsigned char*>(src) + range.first,
                  static_cast<std::size_t>(range.second - range.first));
    });
  }
  void zero(void* p, std::size_t bytes) {
    team_.run(static_cast<std::int64_t>(bytes), kMinBytesPerThread, [&](int tid, int nt) {
      const auto range = ThreadTeam::slice(static_cast<std::int64_t>(bytes), tid, nt);
      std::memset(static_cast<unsigned char*>(p) + range.first, 0, static_cast<std::size_t>(range.second - range.first));
    });
  }
  void to_host(void* dst, const void* src, std::size_t bytes) { std::memcpy(dst, src, bytes); }
  void sync() {}

  /// f(i) for i in [0, count), sliced over the team; `work` (the items the pass touches) sets how
  /// many threads run (see ThreadTeam::run).
  template <class F>
  void for_each(std::int64_t count, std::int64_t work, const F& f) {
    team_.run(work, kMinItemsPerThread, [&](int tid, int nt) {
      const auto range = ThreadTeam::slice(count, tid, nt);
      const F body = f;  // a private copy: its pointers cannot alias the stores, so the loop vectorises
      for (std::int64_t i = range.first; i < range.second; ++i) body(i);
    });
  }
  /// f(r, c) row by row, rows sliced over the team.
  template <class F>
  void for_each_2d(std::int64_t rows, std::int64_t cols, const F& f) {
    team_.run(rows * cols, kMinItemsPerThread, [&](int tid, int nt) {
      const auto range = ThreadTeam::slice(rows, tid, nt);
      const F body = f;
      for (std::int64_t r = range.first; r < range.second; ++r)
        for (std::int64_t c = 0; c < cols; ++c) body(r, c);
    });
  }
  /// Σ term(i): per-thread partial sums in double, added in thread order.
  template <class F>
  double sum(std::int64_t count, std::int64_t work, const F& term) {
    std::vector<double> partial(static_cast<std::size_t>(team_.size()), 0.0);
    team_.run(work, kMinItemsPerThread, [&](int tid, int nt) {
      const auto range = ThreadTeam::slice(count, tid, nt);
      const F body = term;
      double s = 0;
      for (std::int64_t i = range.first; i < range.second; ++i) s += body(i);
      partial[static_cast<std::size_t>(tid)] = s;
    });
    double total = 0;
    for (double p : partial) total += p;
    return total;
  }
  /// finish(r, max or sum over c of map(r, c)), one row per iteration.
  template <class M, class F>
  void row_reduce(std::int64_t rows, std::int64_t cols, bool max, const M& map, const F& finish) {
    for_each(rows, rows * cols, [&](std::int64_t r) {
      float v = max ? -INFINITY : 0.0f;
      for (std::int64_t c = 0; c < cols; ++c) v = max ? std::max(v, map(r, c)) : v + map(r, c);
      finish(r, v);
    });
  }

  void begin_batch(bool) {}
  void mark(int slot) {
    if (static_cast<std::size_t>(slot) >= stamps_.size()) stamps_.resize(static_cast<std::size_t>(slot) + 1);
    stamps_[static_cast<std::size_t>(slot)] = std::chrono::steady_clock::now();
  }
  double elapsed_ms(int from, int to) const {
    return std::chrono::duration<double, std::milli>(stamps_[static_cast<std::size_t>(to)] -
                                                     stamps_[static_cast<std::size_t>(from)])
        .count();
  }
  void end_batch(bool, bool) {}

 private:
  int threads_;
  ThreadTeam team_;
  std::vector<std::chrono::steady_clock::time_point> stamps_;
};

}  // namespace

std::unique_ptr<BenchRunner> make_cpu_runner(int threads) {
  return std::make_unique<bench_harness::BenchHarness<CpuDevice>>(threads);
}

}  // namespace fusedloss_cli
