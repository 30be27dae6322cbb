/*
fusedloss CUDA path — the row-wise losses over an [N, C] matrix: cross_entropy (sparse labels or
soft targets), nll, kl_div, kl_div_logits. Loss AND gradient in one fused call.

The kernels live in include/fusedloss/cuda/rowwise/ (primitives, one policy per loss, the
register-resident and the streaming row driver, the reductions); this file sizes the workspace,
plans the call (plan_rowwise, cuda/rowwise_plan.hpp: one instantiation and a per-row strategy,
chosen at run time; tests assert the same plan) and enqueues everything on the caller's stream.

The algorithm (sparse cross_entropy; the others are variations)
-------------------------------------------------------------
For a row z[0..C) with label y:  lse = log Σ e^z,  p_c = e^{z_c − lse},
  ℓ = (1−ε)·w_y·(lse − z_y) + (ε/C)·(W·lse − Σ w_c z_c) + s·lse²
  ∂ℓ/∂z_c = F·[p_c·a − b·[c = y] − e·w_c]   (a, b, e from detail::sparse_ce_grad_coeffs; F = grad_scale/divisor)
The gradient of column c needs the row's lse, i.e. a reduction over the whole row, so a naive
implementation reads the row twice (once for max/Σexp, once for the gradient) or three times
(max, Σexp, gradient). The traffic floor is one read and one write of N×C; we reach it whenever
the row fits on chip:

  label pass (sparse CE / nll only; tiny): label_stats_kernel reads the N labels once and
      reduces, in a fixed order and in double, divisor = Σ w[y_n] over valid non-ignored rows,
      the bad-label count and W = Σ w_c (only for label smoothing with class weights). For
      N > 16K deterministic_reduce.cuh's combine kernel adds the per-block partials. The
      result (a RowStats with the gradient factor F = grad_scale/divisor) lands in the
      workspace; the main kernel reads it. No host synchronisation: the mean's divisor is
      known before any gradient is written.

  main kernel, one row per group of threads (warp / block / cluster of blocks):
      1. load the row ONCE into registers (16-byte vectors, evict-first), track the max
      2. group max → R;  Σ exp2((z − R)·log2e) from registers (+ Σ w(z − R) with smoothing)
      3. group sum → lse; the group leader writes lse[n] and the row loss
      4. gradient from registers, rounded once to the dtype, written ONCE (evict-first stores);
         the target column is written by the loop without the −b term and then overwritten by
         its owner thread (the same thread, so program order makes the patch win) — no compare
         per element.
  loss reduction (mean/sum): loss_partial_kernel (+ the combine kernel for N > 16K) sums the
      per-row float losses in a fixed order in double and divides on the device.

Memory traffic per row (b = bytes of the dtype):  read C·b, write C·b (+ 4 bytes of row loss,
4 of lse, 8 of label). In place (grad == input) needs no extra buffer: every element of the row
is consumed into registers before the group barrier that precedes the first store, and input[y]
is read by the leader and broadcast (shuffle / shared memory) before any store. Soft targets
and kl_div_logits also read the [N, C] target once; kl_div and nll are one streaming pass.

Per-row strategies (chosen from C, the dtype and pointer alignment at run time; V = 16/b
elements per 16-byte vector, nvec ≈ C/V vectors per row; "items" = vectors each thread holds in
registers: 8 for the logits alone, 4 with per-element class weights (weighted label smoothing),
and for two-row losses (soft CE: logits + target; kl_div_logits: student + teacher) 4 in fp32 /
2 in fp16/bf16 (2 in all dtypes when soft targets are weighted) — the largest values for which
no instantiation spills, see rowwise_kernels.cuh):
  warp     nvec ≤ 32·items: one row per warp, 4 rows per 128-thread block, shuffles only, no
           barriers.                     (logits alone: fp32 C ≤ 1024, fp16/bf16 C ≤ 2048)
  block    nvec ≤ 512·items: one row per block of T = roundup32(nvec/items) ≤ 512 threads, the
           row in registers.             (logits alone: fp32 C ≤ 16K, fp16/bf16 C ≤ 32K)
  cluster  sm_90 only, nvec ≤ 8·512·items: the row split over a thread-block cluster of
           K = ⌈nvec/(512·items)⌉ ≤ 8 blocks, each holding its slice in registers; the max and
           the sums are exchanged through distributed shared memory and combined in rank order
           (identical in every block). Still one read + one write.
                                         (logits alone: fp32 C ≤ 128K, fp16/bf16 C ≤ 256K;
                                          e.g. bf16 C = 128256 → K = 4, 262144 → K = 8)
           Used only when the device, the kernel binary (sm_90 SASS) and the occupancy
           calculator all agree the cluster fits (queried once per kernel/device/size, cached).
  stream   anything larger, sm_80 beyond the block limit:
           one row per 512-thread block, online softmax (running max + rescaled Σexp) in pass 1,
           pass 2 re-reads the row (from L2 when it is still there) and writes the gradient:
           2 reads + 1 write. (fp32 C = 262144 lands here.)
  scalar   the stream kernel with one element per access, when input / target / gradient are not
           congruent mod 16 (e.g. a gradient buffer offset by one element). Correct for any
           element-aligned pointers.
  nll and kl_div need no row statistics before writing: the streaming driver's single pass (warp
  per row for nvec ≤ 128, else a 256-thread block per row: their "stream" strategy).
  Rows that are not 16-byte aligned (odd C, row strides) still use 16-byte accesses: the vector
  grid is aligned down and the two edge vectors are accessed element by element.
  FUSEDLOSS_ROWWISE_STRATEGY=warp|block|cluster|stream|scalar|nocluster forces a strategy for every
  row-wise loss (testing, diagnosis); one that cannot run the call is Status::NotSupported, never a
  silent fallback (nocluster: auto without the cluster path).

Not done yet (measure on the H100 first): keeping the row in shared memory instead of registers
(≈ 227 KB per SM vs the ~64 KB of registers the row may use without spills) would put a whole
bf16 row of 100K classes in one block and every issue shape in ≤ 3-block clusters; a TMA bulk
copy (cp.async.bulk) would load it without register round trips. The register path is what
ships because it is simple and spill-free; see the benchmark before changing it.

Cheap math: exp2 of (z − R)·log2e (one FADD + FMUL + EX2). We deliberately do NOT fold the shift
into one FMA, fma(z, log2e, −R·log2e): R·log2e is rounded to the ulp of |R| (1e-3 at |R| = 1e4),
which would put a relative error of 1e-3 into every probability of a ±1e4-logit row. Every
per-row constant (1/Σe, F, 1/k, 1/T) is a reciprocal multiplied in. Features that are off are
compiled out of the hot loops: SOFTCAP and SMOOTH (label smoothing) are template flags; class
weights, z-loss, lse output, ignore_index are per-row scalars (no per-element cost); "no
gradient" skips the whole write pass (a uniform per-row branch).

Numerics: everything in float32 with the max shift applied before any product, so ±1e4 logits
keep full relative precision (the loss uses lse − R = log Σe and z_y − R, never lse − z_y of
two large numbers). Rows of all −inf give lse = −inf, a +inf logit gives lse = +inf, NaN stays
in its row. A term whose coefficient is exactly 0 is skipped (never 0·inf), as in the contract.

Determinism: every reduction has a fixed order (per-thread sequential, fixed shuffle trees,
warp partials in warp order, cluster partials in rank order, row losses and label partials in
fixed chunks summed in double). No atomics at all. The strategy — hence the summation order —
depends only on (C, dtype, pointer alignment classes, device), so the same call is bitwise
reproducible run to run, in a CUDA graph, and on concurrent streams. One exception: a cluster
launch that the driver refuses although the occupancy query allowed it (a partitioned device)
falls back to the streaming kernel for that call and every later one in the process (unless the
cluster strategy was forced: then NotSupported), so the calls before the first refusal can differ
from later ones in the last bits.

No host synchronisation, no allocation, no memset of the workspace (every slot is written
before it is read), everything on `stream`: graph-capturable. The only host-side CUDA calls
besides the launches are cudaGetDevice, cudaMemsetAsync of error_count for losses without
labels, and the cached cluster capability queries.
*/
#include <cuda_runtime.h>

#include <mutex>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "fusedloss/cuda/device_common.cuh"
#include "fusedloss/cuda/rowwise_kernels.cuh"
#include "cuda/rowwise_plan.hpp"
#include "src/backend.hpp"

namespace fusedloss {
namespace detail {
namespace {

namespace rw = ::fusedloss::cuda::rowwise;

constexpr long long kLabelsPerBlock = 16384;  ///< label statistics: labels per partial
constexpr long long kRowsPerLossBlock = 16384;  ///< loss reduction: row losses per partial
constexpr int kMaxPartials = 1024;
constexpr long long kMaxGrid = 1LL << 30;  ///< grid.x cap; kernels grid-stride over rows beyond it

std::size_t align_region(std::size_t v) { return ::fusedloss::cuda::align_up(v, ::fusedloss::cuda::kWorkspaceRegionAlign); }

bool has_labels(const RowwiseProblem& p) {
  return p.loss == Loss::NLL || (p.loss == Loss::CrossEntropy && p.labels != nullptr);
}

int partial_blocks(long long n, long long per_block) {
  long long g = (n + per_block - 1) / per_block;
  if (g < 1) g = 1;
  if (g > kMaxPartials) g = kMaxPartials;
  return static_cast<int>(g);
}

using DoubleLayout = ::fusedloss::cuda::BasicPartialsLayout<double>;

/// Workspace regions (byte offsets, each 256-byte aligned). Depends only on the problem. The two
/// partials regions (deterministic_reduce.cuh's layout, double values) exist only when their pass
/// runs more than one block; a one-block pass finishes its result itself.
struct Layout {
  std::size_t stats = 0, label_part = 0, loss_part = 0, rows = 0, total = 0;
  int label_parts = 0;  ///< blocks of the label pass (sparse losses)
  int loss_parts = 0;   ///< blocks of the loss reduction (mean / sum / batchmean)
  /// label pass: values Σ w[y], Σ w_c; counts: bad labels.
  DoubleLayout label_layout() const { return {label_parts > 1 ? label_parts : 0, 2, true, 0}; }
  /// loss pass: values Σ row loss.
  DoubleLayout loss_layout() const { return {loss_parts > 1 ? loss_parts : 0, 1, false, 0}; }
};

Layout make_layout(const RowwiseProblem& p) {
  Layout L;
  if (p.rows <= 0) return L;
  const long long N = p.rows;
  std::size_t off = 0;
  if (has_labels(p)) {
    L.stats = off;
    off += align_region(sizeof(rw::RowStats));
    L.label_parts = partial_blocks(N, kLabelsPerBlock);
    L.label_part = off;
    off += L.label_layout().bytes();
  }
  if (p.reduction != Reduction::None) {
    L.loss_parts = partial_blocks(N, kRowsPerLossBlock);
    L.loss_part = off;
    off += L.loss_layout().bytes();
    L.rows = off;
    off += align_region(static_cast<std::size_t>(N) * sizeof(float));
  }
  L.total = off;
  return L;
}

// ---- the kernel sets ----------------------------------------------------------------------------------

using RowKernel = void (*)(rw::RowArgs);

/// The kernels of one loss × dtype × flags instantiation, one per strategy (nullptr: none).
struct KernelSet {
  RowKernel warp, block, cluster, stream, scalar;
  RowKernel scalar_warp;  ///< one-pass losses: the scalar kernel for short rows
  int items;              ///< register-resident strategies: 16-byte vectors per thread (0: none)
  bool one_pass;          ///< nll, kl_div: no row statistics, no register strategies
};

template <class S>
constexpr int vec_of() {
  return 16 / static_cast<int>(sizeof(S));
}

/// SM: 0 no label smoothing, 1 smoothing without class weights, 2 smoothing with class weights.
template <class S, bool SC, int SM>
const KernelSet& sparse_ce_kernels() {
  constexpr int V = vec_of<S>();
  constexpr int I = rw::items_per_thread<S>(SM == 2 ? 2 : 1);
  static const KernelSet ks = {&rw::sparse_ce_regs_kernel<S, V, I, rw::kWarp, SC, SM>,
                               &rw::sparse_ce_regs_kernel<S, V, I, rw::kBlock, SC, SM>,
                               &rw::sparse_ce_regs_kernel<S, V, I, rw::kCluster, SC, SM>,
                               &rw::sparse_ce_stream_kernel<S, V, SC, SM>,
                               &rw::sparse_ce_stream_kernel<S, 1, SC, SM>,
                               nullptr,
                               I,
                               false};
  return ks;
}

template <class S, bool SC, bool WT>
const KernelSet& soft_ce_kernels() {
  constexpr int V = vec_of<S>();
  // 16-bit rows: the smaller budget (ptxas spills the warp kernel on sm_80 otherwise).
  constexpr int I = rw::items_per_thread<S>(WT || sizeof(S) == 2 ? 3 : 2);
  static const KernelSet ks = {&rw::soft_ce_regs_kernel<S, V, I, rw::kWarp, SC, WT>,
                               &rw::soft_ce_regs_kernel<S, V, I, rw::kBlock, SC, WT>,
                               &rw::soft_ce_regs_kernel<S, V, I, rw::kCluster, SC, WT>,
                               &rw::soft_ce_stream_kernel<S, V, SC, WT>,
                               &rw::soft_ce_stream_kernel<S, 1, SC, WT>,
                               nullptr,
                               I,
                               false};
  return ks;
}

template <class S>
const KernelSet& kl_logits_kernels() {
  constexpr int V = vec_of<S>();
  // Two exps per element (student and teacher): 16-bit rows need the smaller budget.
  constexpr int I = rw::items_per_thread<S>(sizeof(S) == 4 ? 2 : 3);
  static const KernelSet ks = {&rw::kl_logits_regs_kernel<S, V, I, rw::kWarp>,
                               &rw::kl_logits_regs_kernel<S, V, I, rw::kBlock>,
                               &rw::kl_logits_regs_kernel<S, V, I, rw::kCluster>,
                               &rw::kl_logits_stream_kernel<S, V>,
                               &rw::kl_logits_stream_kernel<S, 1>,
                               nullptr,
                               I,
                               false};
  return ks;
}

/// nll and kl_div: one streaming pass; a warp per short row, a 256-thread block else.
template <class S, bool NLL>
const KernelSet& one_pass_kernels() {
  constexpr int V = vec_of<S>();
  static const KernelSet ks =
      NLL ? KernelSet{&rw::nll_kernel<S, V, rw::kWarp>, nullptr, nullptr, &rw::nll_kernel<S, V, rw::kBlock>,
                      &rw::nll_kernel<S, 1, rw::kBlock>, &rw::nll_kernel<S, 1, rw::kWarp>, 0, true}
          : KernelSet{&rw::kl_div_kernel<S, V, rw::kWarp>, nullptr, nullptr, &rw::kl_div_kernel<S, V, rw::kBlock>,
                      &rw::kl_div_kernel<S, 1, rw::kBlock>, &rw::kl_div_kernel<S, 1, rw::kWarp>, 0, true};
  return ks;
}

template <class S>
const KernelSet& kernels_of(const RowwiseProblem& p) {
  const bool softcap = p.params.softcap > 0.0;
  switch (p.loss) {
    case Loss::CrossEntropy:
      if (has_labels(p)) {
        const int smooth = p.params.label_smoothing > 0.0 ? (p.class_weight != nullptr ? 2 : 1) : 0;
        if (softcap) {
          if (smooth == 2) return sparse_ce_kernels<S, true, 2>();
          return smooth == 1 ? sparse_ce_kernels<S, true, 1>() : sparse_ce_kernels<S, true, 0>();
        }
        if (smooth == 2) return sparse_ce_kernels<S, false, 2>();
        return smooth == 1 ? sparse_ce_kernels<S, false, 1>() : sparse_ce_kernels<S, false, 0>();
      }
      if (softcap) return p.class_weight != nullptr ? soft_ce_kernels<S, true, true>() : soft_ce_kernels<S, true, false>();
      return p.class_weight != nullptr ? soft_ce_kernels<S, false, true>() : soft_ce_kernels<S, false, false>();
    case Loss::KLDivLogits: return kl_logits_kernels<S>();
    case Loss::NLL: return one_pass_kernels<S, true>();
    default: return one_pass_kernels<S, false>();  // KLDiv
  }
}

const KernelSet* kernels_of(const RowwiseProblem& p) {
  switch (p.dtype) {
    case DType::Float32: return &kernels_of<float>(p);
    case DType::Float16: return &kernels_of<__half>(p);
    case DType::BFloat16: return &kernels_of<__nv_bfloat16>(p);
    default: return nullptr;
  }
}

// ---- the per-device capability cache ---------------------------------------------------------------

/// What the device and the driver can do, asked once per device (and per cluster kernel and
/// size): the compute capability, cluster launch support, and whether a cluster of K blocks of
/// one kernel fits (the occupancy calculator). A driver refusal at launch time is recorded too.
/// One process-wide table behind a mutex: it is consulted only when a cluster plan is possible.
class CapabilityCache {
 public:
  static CapabilityCache& get() {
    static CapabilityCache cache;
    return cache;
  }
  bool cluster_fits(RowKernel kernel, int device, int K) {
    std::lock_guard<std::mutex> lock(mu_);
    if (device < 0 || device >= kMaxDevices) return query(kernel, device, K);
    Entry* e = find(kernel, device, K);
    if (e != nullptr) return e->ok;
    const bool ok = query(kernel, device, K);
    if (used_ < kEntries) entries_[used_++] = {kernel, device, K, ok};
    return ok;
  }
  /// The driver refused a cluster launch the occupancy query allowed (e.g. a partitioned device).
  void cluster_refused(RowKernel kernel, int device, int K) {
    std::lock_guard<std::mutex> lock(mu_);
    Entry* e = find(kernel, device, K);
    if (e != nullptr) e->ok = false;
  }

 private:
  static constexpr int kMaxDevices = 64;
  static constexpr int kEntries = 1024;
  struct Entry {
    RowKernel kernel;
    int device, K;
    bool ok;
  };
  struct Arch {
    int state = 0;  ///< 0 not asked, 1 asked
    int major = 0;
    int cluster_launch = 0;
  };
  Entry* find(RowKernel kernel, int device, int K) {
    for (int i = 0; i < used_; ++i)
      if (entries_[i].kernel == kernel && entries_[i].device == device && entries_[i].K == K) return &entries_[i];
    return nullptr;
  }
  const Arch& arch(int device) {
    Arch& a = arch_[device];
    if (a.state == 0) {
      if (cudaDeviceGetAttribute(&a.major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
          cudaDeviceGetAttribute(&a.cluster_launch, cudaDevAttrClusterLaunch, device) != cudaSuccess) {
        cudaGetLastError();  // a failed query must not surface as the next launch's error
        a.major = 0;
        a.cluster_launch = 0;
      }
      a.state = 1;
    }
    return a;
  }
  bool query(RowKernel kernel, int device, int K) {
    if (kernel == nullptr || device < 0 || device >= kMaxDevices) return false;
    const Arch& a = arch(device);
    if (a.major < 9 || a.cluster_launch == 0) return false;
    cudaFuncAttributes fa{};
    if (cudaFuncGetAttributes(&fa, kernel) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    // The cluster kernel's body exists only when compiled for sm_90+: a PTX JIT of compute_80
    // code reports binaryVersion 90 but ptxVersion 80 and would run the empty stub.
    if (fa.binaryVersion < 90 || fa.ptxVersion < 90) return false;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(static_cast<unsigned>(K), 1, 1);
    cfg.blockDim = dim3(rw::kMaxBlockThreads, 1, 1);
    cfg.dynamicSmemBytes = 0;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = static_cast<unsigned>(K);
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    int clusters = 0;
    if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return clusters > 0;
  }
  std::mutex mu_;
  Arch arch_[kMaxDevices];
  Entry entries_[kEntries];
  int used_ = 0;
};

// ---- the plan ------------------------------------------------------------------------------------------

enum class Force { Auto, Warp, Block, Cluster, Stream, Scalar, NoCluster, Unknown };

Force forced_strategy() {
  const char* v = std::getenv("FUSEDLOSS_ROWWISE_STRATEGY");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "auto") == 0) return Force::Auto;
  static const struct {
    const char* name;
    Force force;
  } kNames[] = {{"warp", Force::Warp},       {"block", Force::Block},   {"cluster", Force::Cluster},
                {"stream", Force::Stream},   {"scalar", Force::Scalar}, {"nocluster", Force::NoCluster}};
  for (const auto& n : kNames)
    if (std::strcmp(v, n.name) == 0) return n.force;
  return Force::Unknown;
}

long long ceil_div(long long a, long long b) { return (a + b - 1) / b; }
int round_up32(long long v) { return static_cast<int>((v + 31) / 32 * 32); }

bool congruent16(const void* a, const void* b) {
  return b == nullptr || ((reinterpret_cast<std::uintptr_t>(a) ^ reinterpret_cast<std::uintptr_t>(b)) & 15u) == 0;
}

}  // namespace

const char* rowwise_strategy_name(RowwiseStrategy s) noexcept {
  switch (s) {
    case RowwiseStrategy::Warp: return "warp";
    case RowwiseStrategy::Block: return "block";
    case RowwiseStrategy::Cluster: return "cluster";
    case RowwiseStrategy::Stream: return "stream";
    case RowwiseStrategy::Scalar: return "scalar";
  }
  return "unknown";
}

Status plan_rowwise(const RowwiseProblem& p, const LossOutputs& o, int device, RowwisePlan* plan) noexcept {
  const KernelSet* ks = kernels_of(p);
  if (ks == nullptr || plan == nullptr) return Status::InvalidArgument;
  const Force force = forced_strategy();
  if (force == Force::Unknown) return Status::InvalidArgument;
  const long long C = p.classes;
  const long long stride = p.row_stride > 0 ? p.row_stride : C;
  const int elem = static_cast<int>(dtype_size(p.dtype));
  const int V = 16 / elem;
  const auto aligned_rows = [&](const void* base) {
    return (reinterpret_cast<std::uintptr_t>(base) & 15u) == 0 && (stride * elem) % 16 == 0;
  };
  // Vector accesses need every [N, C] pointer of the row congruent mod 16 with the one that
  // defines the vector grid: the input — or, for nll (which reads only input[y]), the gradient.
  const void* grid_base = p.loss == Loss::NLL ? static_cast<const void*>(o.grad) : p.input;
  bool vec_ok = true;
  if (p.loss != Loss::NLL) {
    vec_ok = congruent16(p.input, o.grad) && (has_labels(p) || congruent16(p.input, p.target));
  }
  const bool rows_aligned = aligned_rows(grid_base);  // no gradient (nll): nothing to align

  RowwisePlan r;
  auto set = [&](RowwiseStrategy s, RowKernel k, int threads, int vec) {
    r.strategy = s;
    r.kernel = reinterpret_cast<const void*>(k);
    r.threads = threads;
    r.vec = vec;
    r.rows_per_block = 1;
    r.cluster = 1;
    r.items = 0;
  };
  const int warp_threads = cuda::kWarpSize * rw::kWarpRowsPerBlock;

  if (ks->one_pass) {
    // nll / kl_div: warp (≤ 4 vectors per lane) or a block per row ("stream"), scalar when the
    // pointers are not congruent.
    if (force == Force::Cluster || force == Force::Block) return Status::NotSupported;
    const bool scalar = force == Force::Scalar || !vec_ok;
    if (scalar && force != Force::Auto && force != Force::NoCluster && force != Force::Scalar) return Status::NotSupported;
    const long long hmax = (scalar || rows_aligned) ? 0 : V - 1;
    const int vec = scalar ? 1 : V;
    const long long nvec = (C + hmax + vec - 1) / vec;
    const bool fits_warp = nvec <= static_cast<long long>(cuda::kWarpSize) * 4;
    if (force == Force::Warp && !fits_warp) return Status::NotSupported;
    const bool warp = force == Force::Warp || (force != Force::Stream && fits_warp);
    if (warp) {
      set(scalar ? RowwiseStrategy::Scalar : RowwiseStrategy::Warp, scalar ? ks->scalar_warp : ks->warp, warp_threads, vec);
      r.rows_per_block = rw::kWarpRowsPerBlock;
    } else {
      set(scalar ? RowwiseStrategy::Scalar : RowwiseStrategy::Stream, scalar ? ks->scalar : ks->stream, rw::kSimpleThreads, vec);
    }
    *plan = r;
    return Status::Success;
  }

  if (force == Force::Scalar || (!vec_ok && (force == Force::Auto || force == Force::NoCluster))) {
    set(RowwiseStrategy::Scalar, ks->scalar, rw::kStreamThreads, 1);
    *plan = r;
    return Status::Success;
  }
  if (!vec_ok) return Status::NotSupported;  // a vectorised strategy was forced
  if (force == Force::Stream) {
    set(RowwiseStrategy::Stream, ks->stream, rw::kStreamThreads, V);
    *plan = r;
    return Status::Success;
  }
  const long long hmax = rows_aligned ? 0 : V - 1;
  const long long nvec = (C + hmax + V - 1) / V;
  const long long per_warp = static_cast<long long>(cuda::kWarpSize) * ks->items;
  const long long per_block = static_cast<long long>(rw::kMaxBlockThreads) * ks->items;
  const long long K = ceil_div(nvec, per_block);
  const bool auto_ = force == Force::Auto || force == Force::NoCluster;
  if ((auto_ && nvec <= per_warp) || force == Force::Warp) {
    if (nvec > per_warp) return Status::NotSupported;
    set(RowwiseStrategy::Warp, ks->warp, warp_threads, V);
    r.rows_per_block = rw::kWarpRowsPerBlock;
    r.items = ks->items;
  } else if ((auto_ && nvec <= per_block) || force == Force::Block) {
    if (nvec > per_block) return Status::NotSupported;
    set(RowwiseStrategy::Block, ks->block, round_up32(ceil_div(nvec, ks->items)), V);
    r.items = ks->items;
  } else if ((force == Force::Auto || force == Force::Cluster) && K <= rw::kMaxClusterSize &&
             CapabilityCache::get().cluster_fits(ks->cluster, device, static_cast<int>(K))) {
    set(RowwiseStrategy::Cluster, ks->cluster, round_up32(ceil_div(nvec, K * ks->items)), V);
    r.cluster = static_cast<int>(K);
    r.items = ks->items;
  } else if (force == Force::Cluster) {
    return Status::NotSupported;
  } else {
    set(RowwiseStrategy::Stream, ks->stream, rw::kStreamThreads, V);
  }
  *plan = r;
  return Status::Success;
}

namespace {

Status launch_plan(const RowwisePlan& plan, const RowwiseProblem& p, const rw::RowArgs& a, int device,
                   cudaStream_t stream) {
  const RowKernel kernel = reinterpret_cast<RowKernel>(const_cast<void*>(plan.kernel));
  const long long blocks = ceil_div(a.N, plan.rows_per_block);
  if (plan.strategy == RowwiseStrategy::Cluster) {
    const long long max_rows = kMaxGrid / plan.cluster;
    const long long rows = blocks < max_rows ? blocks : max_rows;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(static_cast<unsigned>(rows * plan.cluster), 1, 1);
    cfg.blockDim = dim3(static_cast<unsigned>(plan.threads), 1, 1);
    cfg.dynamicSmemBytes = 0;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = static_cast<unsigned>(plan.cluster);
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    if (cudaLaunchKernelEx(&cfg, kernel, a) == cudaSuccess) return Status::Success;
    // Refused despite the occupancy query (e.g. a partitioned device). Forced: an error. Auto:
    // the streaming kernel computes the same values with a second read of the row, in another
    // summation order, so the refusal is remembered and every later call of this shape streams.
    cudaGetLastError();
    CapabilityCache::get().cluster_refused(kernel, device, plan.cluster);
    if (forced_strategy() == Force::Cluster) return Status::NotSupported;
    const KernelSet* ks = kernels_of(p);
    ::fusedloss::cuda::triple_chevron(static_cast<unsigned>(a.N < kMaxGrid ? a.N : kMaxGrid), rw::kStreamThreads, 0, stream).doit(ks->stream, a);
  } else {
    ::fusedloss::cuda::triple_chevron(static_cast<unsigned>(blocks < kMaxGrid ? blocks : kMaxGrid), plan.threads, 0, stream).doit(kernel, a);
  }
  FUSEDLOSS_CUDA_CHECK_LAUNCH();
  return Status::Success;
}

// ---- one call -----------------------------------------------------------------------------------------

Status run(const RowwiseProblem& p, const LossOutputs& o, const Layout& L, char* ws, int device, cudaStream_t stream) {
  RowwisePlan plan;
  const Status planned = plan_rowwise(p, o, device, &plan);  // before anything is enqueued
  if (planned != Status::Success) return planned;
  const long long N = p.rows, C = p.classes;
  const long long stride = p.row_stride > 0 ? p.row_stride : C;
  const bool none = p.reduction == Reduction::None;
  const bool mean = p.reduction == Reduction::Mean || p.reduction == Reduction::BatchMean;
  const bool labels = has_labels(p);
  const bool ce = p.loss == Loss::CrossEntropy;

  rw::RowArgs a{};
  a.x = p.input;
  a.t = labels ? nullptr : p.target;
  a.grad = o.grad;
  a.labels = labels ? p.labels : nullptr;
  a.w = (p.loss == Loss::CrossEntropy || p.loss == Loss::NLL) ? p.class_weight : nullptr;
  a.N = N;
  a.C = C;
  a.stride = stride;
  a.ignore_index = p.params.ignore_index;
  a.labels64 = p.label_dtype == DType::Int64 ? 1 : 0;
  a.inv_c = static_cast<float>(1.0 / static_cast<double>(C));
  if (ce) {
    a.eps = static_cast<float>(p.params.label_smoothing);
    a.z_loss = static_cast<float>(p.params.z_loss);
    a.cap = static_cast<float>(p.params.softcap);
    a.inv_cap = p.params.softcap > 0.0 ? static_cast<float>(1.0 / p.params.softcap) : 0.f;
    a.lse = o.lse;
  }
  a.temp = static_cast<float>(p.params.temperature);
  a.inv_temp = p.params.temperature > 0.0 ? static_cast<float>(1.0 / p.params.temperature) : 1.f;
  a.log_target = p.params.log_target ? 1 : 0;
  float* rows = none ? o.loss : reinterpret_cast<float*>(ws + L.rows);
  a.row_loss = rows;
  a.dense_loss = (p.loss == Loss::KLDiv && none) ? o.loss : nullptr;

  // The mean's divisor when it does not come from the labels.
  double divisor = 1.0;
  if (mean) {
    if (p.loss == Loss::KLDiv || p.loss == Loss::KLDivLogits) {
      divisor = p.reduction == Reduction::BatchMean ? static_cast<double>(N)
                                                    : static_cast<double>(N) * static_cast<double>(C);
    } else {
      divisor = static_cast<double>(N);  // soft-target cross_entropy
    }
  }
  a.factor = static_cast<float>(p.grad_scale / divisor);

  // 1. label statistics (divisor, W, bad count → RowStats, *error_count) before the main kernel
  rw::RowStats* stats = nullptr;
  if (labels) {
    stats = reinterpret_cast<rw::RowStats*>(ws + L.stats);
    rw::LabelArgs la{};
    la.labels = p.labels;
    la.w = a.w;
    la.N = N;
    la.C = C;
    la.ignore_index = p.params.ignore_index;
    la.chunk = ceil_div(N, L.label_parts);
    la.cchunk = ceil_div(C, L.label_parts);
    la.labels64 = a.labels64;
    la.finish.stats = stats;
    la.finish.error_count = reinterpret_cast<long long*>(o.error_count);
    la.finish.C = C;
    la.finish.grad_scale = p.grad_scale;
    la.finish.need_wsum = (ce && a.eps > 0.f && a.w != nullptr) ? 1 : 0;
    la.finish.mean = p.reduction == Reduction::Mean ? 1 : 0;
    const rw::DoublePartials part = ::fusedloss::cuda::make_partials_view(ws + L.label_part, L.label_layout());
    ::fusedloss::cuda::triple_chevron(L.label_parts, rw::kStatsThreads, 0, stream).doit(rw::label_stats_kernel, la, part);
    FUSEDLOSS_CUDA_CHECK_LAUNCH();
    if (L.label_parts > 1) FUSEDLOSS_CUDA_TRY((::fusedloss::cuda::launch_combine<2, true>(part, la.finish, stream)));
    a.stats = stats;
  } else if (o.error_count != nullptr) {
    FUSEDLOSS_CUDA_TRY(cudaMemsetAsync(o.error_count, 0, sizeof(std::int64_t), stream));
  }

  // 2. the row kernel, as planned
  const Status s = launch_plan(plan, p, a, device, stream);
  if (s != Status::Success) return s;

  // 3. the scalar loss: fixed-order sum of the row losses, divided on the device
  if (!none) {
    rw::LossArgs f{};
    f.rows = rows;
    f.N = N;
    f.chunk = ceil_div(N, L.loss_parts);
    f.finish.out = o.loss;
    f.finish.stats = (labels && p.reduction == Reduction::Mean) ? stats : nullptr;
    f.finish.divisor = divisor;
    const rw::DoublePartials part = ::fusedloss::cuda::make_partials_view(ws + L.loss_part, L.loss_layout());
    ::fusedloss::cuda::triple_chevron(L.loss_parts, rw::kStatsThreads, 0, stream).doit(rw::loss_partial_kernel, f, part);
    FUSEDLOSS_CUDA_CHECK_LAUNCH();
    if (L.loss_parts > 1) FUSEDLOSS_CUDA_TRY((::fusedloss::cuda::launch_combine<1, false>(part, f.finish, stream)));
  }
  return Status::Success;
}

}  // namespace

std::size_t cuda_workspace_size(const RowwiseProblem& problem) noexcept { return make_layout(problem).total; }

Status cuda_compute(const RowwiseProblem& problem, const LossOutputs& outputs, void* d_workspace,
                    std::size_t workspace_bytes, CUstream_st* stream_handle) noexcept {
  const cudaStream_t stream = stream_handle;
  const Layout L = make_layout(problem);
  if (L.total > workspace_bytes || (L.total > 0 && d_workspace == nullptr)) return Status::WorkspaceTooSmall;

  if (problem.rows <= 0) {  // N == 0: sum → 0, mean / batchmean → NaN, none → nothing
    if (problem.reduction != Reduction::None) {
      const float v = problem.reduction == Reduction::Sum ? 0.f : std::numeric_limits<float>::quiet_NaN();
      ::fusedloss::cuda::triple_chevron(1, 1, 0, stream).doit(cuda::rowwise::write_scalar_kernel, outputs.loss, v);
      FUSEDLOSS_CUDA_CHECK_LAUNCH();
    }
    if (outputs.error_count != nullptr)
      FUSEDLOSS_CUDA_TRY(cudaMemsetAsync(outputs.error_count, 0, sizeof(std::int64_t), stream));
    return Status::Success;
  }

  int device = 0;
  FUSEDLOSS_CUDA_TRY(cudaGetDevice(&device));
  return run(problem, outputs, L, static_cast<char*>(d_workspace), device, stream);
}

}  // namespace detail
}  // namespace fusedloss
