/*
fusedloss CUDA path — the row-wise losses over an [N, C] matrix: cross_entropy (sparse labels or
soft targets), nll, kl_div, kl_div_logits. Loss AND gradient in one fused call.

The kernels live in include/fusedloss/cuda/rowwise_kernels.cuh; this file sizes the workspace,
picks one instantiation and a per-row strategy at run time, and enqueues everything on the
caller's stream.

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
      N > 16K a second one-block kernel combines the per-block partials. The result (a RowStats
      with the gradient factor F = grad_scale/divisor) lands in the workspace; the main kernel
      reads it. No host synchronisation: the mean's divisor is known before any gradient is
      written.

  main kernel, one row per group of threads (warp / block / cluster of blocks):
      1. load the row ONCE into registers (16-byte vectors, evict-first), track the max
      2. group max → R;  Σ exp2((z − R)·log2e) from registers (+ Σ w(z − R) with smoothing)
      3. group sum → lse; the group leader writes lse[n] and the row loss
      4. gradient from registers, rounded once to the dtype, written ONCE (evict-first stores);
         the target column is written by the loop without the −b term and then overwritten by
         its owner thread (the same thread, so program order makes the patch win) — no compare
         per element.
  loss reduction (mean/sum): loss_partial_kernel (+ loss_final_kernel for N > 16K) sums the
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
  stream   anything larger, sm_80 beyond the block limit, or FUSEDLOSS_ROWWISE_STRATEGY=stream:
           one row per 512-thread block, online softmax (running max + rescaled Σexp) in pass 1,
           pass 2 re-reads the row (from L2 when it is still there) and writes the gradient:
           2 reads + 1 write. (fp32 C = 262144 lands here.)
  scalar   the stream kernel with one element per access, when input / target / gradient are not
           congruent mod 16 (e.g. a gradient buffer offset by one element) or
           FUSEDLOSS_ROWWISE_STRATEGY=scalar. Correct for any element-aligned pointers.
  nll and kl_div need no row statistics before writing: one streaming pass (warp per row for
  nvec ≤ 128, else a 256-thread block per row).
  Rows that are not 16-byte aligned (odd C, row strides) still use 16-byte accesses: the vector
  grid is aligned down and the two edge vectors are accessed element by element.
  FUSEDLOSS_ROWWISE_STRATEGY=nocluster disables the cluster path (testing).

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
falls back to the streaming kernel for that call and every later one in the process, so the
calls before the first refusal can differ from later ones in the last bits.

No host synchronisation, no allocation, no memset of the workspace (every slot is written
before it is read), everything on `stream`: graph-capturable. The only host-side CUDA calls
besides the launches are cudaGetDevice, cudaMemsetAsync of error_count for losses without
labels, and the cached cluster capability queries.
*/
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "fusedloss/cuda/device_common.cuh"
#include "fusedloss/cuda/rowwise_kernels.cuh"
#include "src/backend.hpp"

namespace fusedloss {
namespace detail {
namespace {

namespace rw = ::fusedloss::cuda::rowwise;

constexpr std::size_t kRegionAlign = 256;
constexpr long long kLabelsPerBlock = 16384;  ///< label statistics: labels per partial
constexpr long long kRowsPerLossBlock = 16384;  ///< loss reduction: row losses per partial
constexpr int kMaxPartials = 1024;
constexpr long long kMaxGrid = 1LL << 30;  ///< grid.x cap; kernels grid-stride over rows beyond it

std::size_t align_region(std::size_t v) { return (v + kRegionAlign - 1) / kRegionAlign * kRegionAlign; }

bool has_labels(const RowwiseProblem& p) {
  return p.loss == Loss::NLL || (p.loss == Loss::CrossEntropy && p.labels != nullptr);
}

int partial_blocks(long long n, long long per_block) {
  long long g = (n + per_block - 1) / per_block;
  if (g < 1) g = 1;
  if (g > kMaxPartials) g = kMaxPartials;
  return static_cast<int>(g);
}

/// Workspace regions (byte offsets, each 256-byte aligned). Depends only on the problem.
struct Layout {
  std::size_t stats = 0, part_div = 0, part_wsum = 0, part_bad = 0, part_loss = 0, rows = 0, total = 0;
  int label_parts = 0;  ///< blocks of the label pass (sparse losses)
  int loss_parts = 0;   ///< blocks of the loss reduction (mean / sum / batchmean)
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
    if (L.label_parts > 1) {
      const std::size_t part = align_region(static_cast<std::size_t>(L.label_parts) * 8);
      L.part_div = off;
      off += part;
      L.part_wsum = off;
      off += part;
      L.part_bad = off;
      off += part;
    }
  }
  if (p.reduction != Reduction::None) {
    L.loss_parts = partial_blocks(N, kRowsPerLossBlock);
    if (L.loss_parts > 1) {
      L.part_loss = off;
      off += align_region(static_cast<std::size_t>(L.loss_parts) * 8);
    }
    L.rows = off;
    off += align_region(static_cast<std::size_t>(N) * sizeof(float));
  }
  L.total = off;
  return L;
}

// ---- strategy selection ----------------------------------------------------------------------------

/// FUSEDLOSS_ROWWISE_STRATEGY (testing / diagnosis): auto (default) | stream | scalar | nocluster.
enum class Force { Auto, Stream, Scalar, NoCluster };

Force forced_strategy() {
  const char* v = std::getenv("FUSEDLOSS_ROWWISE_STRATEGY");
  if (v == nullptr) return Force::Auto;
  if (std::strcmp(v, "stream") == 0) return Force::Stream;
  if (std::strcmp(v, "scalar") == 0) return Force::Scalar;
  if (std::strcmp(v, "nocluster") == 0) return Force::NoCluster;
  return Force::Auto;
}

using RowKernel = void (*)(rw::RowArgs);

constexpr int kMaxDevices = 64;
/// Per kernel instantiation: can a cluster of K blocks of 1024 threads run on device d?
/// 0 = not asked yet, 1 = yes, 2 = no. Zero-initialised static storage; benign races (every
/// thread computes the same answer).
struct ClusterCache {
  std::atomic<int> state[kMaxDevices][rw::kMaxClusterSize + 1];
};

bool query_cluster(RowKernel kernel, int device, int K) {
  int major = 0, cluster_launch = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&cluster_launch, cudaDevAttrClusterLaunch, device) != cudaSuccess) return false;
  if (major < 9 || cluster_launch == 0) return false;
  cudaFuncAttributes fa{};
  if (cudaFuncGetAttributes(&fa, kernel) != cudaSuccess) return false;
  // The cluster kernel's body exists only when compiled for sm_90+: a PTX JIT of compute_80 code
  // reports binaryVersion 90 but ptxVersion 80 and would run the empty stub.
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
  if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) != cudaSuccess) return false;
  return clusters > 0;
}

bool cluster_ok(RowKernel kernel, ClusterCache* cache, int K) {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  const bool cacheable = device >= 0 && device < kMaxDevices;
  if (cacheable) {
    const int s = cache->state[device][K].load(std::memory_order_relaxed);
    if (s != 0) return s == 1;
  }
  const bool ok = query_cluster(kernel, device, K);
  if (!ok) cudaGetLastError();  // a failed query must not surface as the next launch's error
  if (cacheable) cache->state[device][K].store(ok ? 1 : 2, std::memory_order_relaxed);
  return ok;
}

/// Records that the driver refused a cluster launch of size K on the current device.
void cluster_refused(ClusterCache* cache, int K) {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  if (device >= 0 && device < kMaxDevices) cache->state[device][K].store(2, std::memory_order_relaxed);
}

enum class Strategy { Warp, Block, Cluster, Stream, Scalar };

struct Plan {
  Strategy strategy;
  int threads;
  int cluster;
};

/// The kernels of one loss × dtype × flags instantiation, one per strategy.
struct KernelSet {
  RowKernel warp, block, cluster, stream, scalar;
  int items_warp, items_block;
  ClusterCache* cache;
};

long long ceil_div(long long a, long long b) { return (a + b - 1) / b; }
int round_up32(long long v) { return static_cast<int>((v + 31) / 32 * 32); }

bool congruent16(const void* a, const void* b) {
  return b == nullptr || ((reinterpret_cast<std::uintptr_t>(a) ^ reinterpret_cast<std::uintptr_t>(b)) & 15u) == 0;
}

/// vec_ok: every pointer of the row is congruent mod 16 with the input; rows_aligned: every row
/// starts on a 16-byte boundary (then no edge vectors exist).
Plan choose_plan(const KernelSet& ks, long long C, int elem_bytes, bool vec_ok, bool rows_aligned) {
  const Force force = forced_strategy();
  if (!vec_ok || force == Force::Scalar) return {Strategy::Scalar, rw::kStreamThreads, 1};
  if (force == Force::Stream) return {Strategy::Stream, rw::kStreamThreads, 1};
  const long long V = 16 / elem_bytes;
  const long long hmax = rows_aligned ? 0 : V - 1;
  const long long nvec = (C + hmax + V - 1) / V;
  if (nvec <= static_cast<long long>(cuda::kWarpSize) * ks.items_warp)
    return {Strategy::Warp, cuda::kWarpSize * rw::kWarpRowsPerBlock, 1};
  const long long per_block = static_cast<long long>(rw::kMaxBlockThreads) * ks.items_block;
  if (nvec <= per_block) return {Strategy::Block, round_up32(ceil_div(nvec, ks.items_block)), 1};
  const long long K = ceil_div(nvec, per_block);
  if (force != Force::NoCluster && K <= rw::kMaxClusterSize && cluster_ok(ks.cluster, ks.cache, static_cast<int>(K)))
    return {Strategy::Cluster, round_up32(ceil_div(nvec, K * ks.items_block)), static_cast<int>(K)};
  return {Strategy::Stream, rw::kStreamThreads, 1};
}

Status launch_plan(const KernelSet& ks, const Plan& plan, const rw::RowArgs& a, cudaStream_t stream) {
  const long long N = a.N;
  switch (plan.strategy) {
    case Strategy::Warp: {
      const long long grid = ceil_div(N, rw::kWarpRowsPerBlock);
      ::fusedloss::cuda::triple_chevron(static_cast<unsigned>(grid < kMaxGrid ? grid : kMaxGrid), plan.threads, 0, stream).doit(ks.warp, a);
      break;
    }
    case Strategy::Block:
      ::fusedloss::cuda::triple_chevron(static_cast<unsigned>(N < kMaxGrid ? N : kMaxGrid), plan.threads, 0, stream).doit(ks.block, a);
      break;
    case Strategy::Cluster: {
      const long long max_rows = kMaxGrid / plan.cluster;
      const long long rows = N < max_rows ? N : max_rows;
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
      if (cudaLaunchKernelEx(&cfg, ks.cluster, a) != cudaSuccess) {
        // Refused despite the occupancy query (e.g. a partitioned device): the streaming kernel
        // computes the same values with a second read of the row, in another summation order,
        // so the refusal is remembered and every later call of this shape streams too.
        cudaGetLastError();
        cluster_refused(ks.cache, plan.cluster);
        ::fusedloss::cuda::triple_chevron(static_cast<unsigned>(N < kMaxGrid ? N : kMaxGrid), rw::kStreamThreads, 0, stream).doit(ks.stream, a);
      }
      break;
    }
    case Strategy::Stream:
      ::fusedloss::cuda::triple_chevron(static_cast<unsigned>(N < kMaxGrid ? N : kMaxGrid), plan.threads, 0, stream).doit(ks.stream, a);
      break;
    case Strategy::Scalar:
      ::fusedloss::cuda::triple_chevron(static_cast<unsigned>(N < kMaxGrid ? N : kMaxGrid), plan.threads, 0, stream).doit(ks.scalar, a);
      break;
  }
  FUSEDLOSS_CUDA_CHECK_LAUNCH();
  return Status::Success;
}

// ---- the kernel sets ----------------------------------------------------------------------------------

template <class S>
constexpr int vec_of() {
  return 16 / static_cast<int>(sizeof(S));
}

/// SM: 0 no label smoothing, 1 smoothing without class weights, 2 smoothing with class weights.
template <class S, bool SC, int SM>
const KernelSet& sparse_ce_kernels() {
  constexpr int V = vec_of<S>();
  constexpr int I = rw::items_per_thread<S>(SM == 2 ? 2 : 1);
  static ClusterCache cache;
  static const KernelSet ks = {&rw::sparse_ce_regs_kernel<S, V, I, rw::kWarp, SC, SM>,
                               &rw::sparse_ce_regs_kernel<S, V, I, rw::kBlock, SC, SM>,
                               &rw::sparse_ce_regs_kernel<S, V, I, rw::kCluster, SC, SM>,
                               &rw::sparse_ce_stream_kernel<S, V, SC, SM>,
                               &rw::sparse_ce_stream_kernel<S, 1, SC, SM>,
                               I,
                               I,
                               &cache};
  return ks;
}

template <class S, bool SC, bool WT>
const KernelSet& soft_ce_kernels() {
  constexpr int V = vec_of<S>();
  // 16-bit rows: the smaller budget (ptxas spills the warp kernel on sm_80 otherwise).
  constexpr int I = rw::items_per_thread<S>(WT || sizeof(S) == 2 ? 3 : 2);
  static ClusterCache cache;
  static const KernelSet ks = {&rw::soft_ce_regs_kernel<S, V, I, rw::kWarp, SC, WT>,
                               &rw::soft_ce_regs_kernel<S, V, I, rw::kBlock, SC, WT>,
                               &rw::soft_ce_regs_kernel<S, V, I, rw::kCluster, SC, WT>,
                               &rw::soft_ce_stream_kernel<S, V, SC, WT>,
                               &rw::soft_ce_stream_kernel<S, 1, SC, WT>,
                               I,
                               I,
                               &cache};
  return ks;
}

template <class S>
const KernelSet& kl_logits_kernels() {
  constexpr int V = vec_of<S>();
  // Two exps per element (student and teacher): 16-bit rows need the smaller budget.
  constexpr int I = rw::items_per_thread<S>(sizeof(S) == 4 ? 2 : 3);
  static ClusterCache cache;
  static const KernelSet ks = {&rw::kl_logits_regs_kernel<S, V, I, rw::kWarp>,
                               &rw::kl_logits_regs_kernel<S, V, I, rw::kBlock>,
                               &rw::kl_logits_regs_kernel<S, V, I, rw::kCluster>,
                               &rw::kl_logits_stream_kernel<S, V>,
                               &rw::kl_logits_stream_kernel<S, 1>,
                               I,
                               I,
                               &cache};
  return ks;
}

template <class S>
const KernelSet& sparse_ce_kernels(bool softcap, int smooth) {
  if (softcap) {
    if (smooth == 2) return sparse_ce_kernels<S, true, 2>();
    return smooth == 1 ? sparse_ce_kernels<S, true, 1>() : sparse_ce_kernels<S, true, 0>();
  }
  if (smooth == 2) return sparse_ce_kernels<S, false, 2>();
  return smooth == 1 ? sparse_ce_kernels<S, false, 1>() : sparse_ce_kernels<S, false, 0>();
}

template <class S>
const KernelSet& soft_ce_kernels(bool softcap, bool weighted) {
  if (softcap) return weighted ? soft_ce_kernels<S, true, true>() : soft_ce_kernels<S, true, false>();
  return weighted ? soft_ce_kernels<S, false, true>() : soft_ce_kernels<S, false, false>();
}

/// nll and kl_div: single streaming pass; warp per row for short rows, a 256-thread block else.
template <class S, int VEC>
Status launch_simple(bool nll, const rw::RowArgs& a, bool rows_aligned, cudaStream_t stream) {
  const long long hmax = (VEC == 1 || rows_aligned) ? 0 : VEC - 1;
  const long long nvec = (a.C + hmax + VEC - 1) / VEC;
  const long long N = a.N;
  if (nvec <= static_cast<long long>(cuda::kWarpSize) * 4) {
    const long long grid = ceil_div(N, rw::kWarpRowsPerBlock);
    const unsigned g = static_cast<unsigned>(grid < kMaxGrid ? grid : kMaxGrid);
    const int threads = cuda::kWarpSize * rw::kWarpRowsPerBlock;
    if (nll) {
      ::fusedloss::cuda::triple_chevron(g, threads, 0, stream).doit(rw::nll_kernel<S, VEC, rw::kWarp>, a);
    } else {
      ::fusedloss::cuda::triple_chevron(g, threads, 0, stream).doit(rw::kl_div_kernel<S, VEC, rw::kWarp>, a);
    }
  } else {
    const unsigned g = static_cast<unsigned>(N < kMaxGrid ? N : kMaxGrid);
    if (nll) {
      ::fusedloss::cuda::triple_chevron(g, rw::kSimpleThreads, 0, stream).doit(rw::nll_kernel<S, VEC, rw::kBlock>, a);
    } else {
      ::fusedloss::cuda::triple_chevron(g, rw::kSimpleThreads, 0, stream).doit(rw::kl_div_kernel<S, VEC, rw::kBlock>, a);
    }
  }
  FUSEDLOSS_CUDA_CHECK_LAUNCH();
  return Status::Success;
}

// ---- one call -----------------------------------------------------------------------------------------

template <class S>
Status run_typed(const RowwiseProblem& p, const LossOutputs& o, const Layout& L, char* ws, cudaStream_t stream) {
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
    la.part_div = reinterpret_cast<double*>(ws + L.part_div);
    la.part_wsum = reinterpret_cast<double*>(ws + L.part_wsum);
    la.part_bad = reinterpret_cast<long long*>(ws + L.part_bad);
    la.stats = stats;
    la.error_count = reinterpret_cast<long long*>(o.error_count);
    la.N = N;
    la.C = C;
    la.ignore_index = p.params.ignore_index;
    la.chunk = ceil_div(N, L.label_parts);
    la.cchunk = ceil_div(C, L.label_parts);
    la.grad_scale = p.grad_scale;
    la.labels64 = a.labels64;
    la.need_wsum = (ce && a.eps > 0.f && a.w != nullptr) ? 1 : 0;
    la.mean = p.reduction == Reduction::Mean ? 1 : 0;
    ::fusedloss::cuda::triple_chevron(L.label_parts, rw::kStatsThreads, 0, stream).doit(rw::label_stats_kernel, la);
    FUSEDLOSS_CUDA_CHECK_LAUNCH();
    if (L.label_parts > 1) {
      ::fusedloss::cuda::triple_chevron(1, rw::kStatsThreads, 0, stream).doit(rw::label_final_kernel, la, L.label_parts);
      FUSEDLOSS_CUDA_CHECK_LAUNCH();
    }
    a.stats = stats;
  } else if (o.error_count != nullptr) {
    FUSEDLOSS_CUDA_TRY(cudaMemsetAsync(o.error_count, 0, sizeof(std::int64_t), stream));
  }

  // 2. the main kernel
  constexpr int kElem = static_cast<int>(sizeof(S));
  const bool rows_aligned =
      (reinterpret_cast<std::uintptr_t>(p.input) & 15u) == 0 && (stride * kElem) % 16 == 0;
  const bool grad_congruent = congruent16(p.input, o.grad);
  Status s = Status::Success;
  switch (p.loss) {
    case Loss::CrossEntropy:
      if (labels) {
        const int smooth = a.eps > 0.f ? (a.w != nullptr ? 2 : 1) : 0;
        const KernelSet& ks = sparse_ce_kernels<S>(a.cap > 0.f, smooth);
        s = launch_plan(ks, choose_plan(ks, C, kElem, grad_congruent, rows_aligned), a, stream);
      } else {
        const KernelSet& ks = soft_ce_kernels<S>(a.cap > 0.f, a.w != nullptr);
        const bool vec_ok = grad_congruent && congruent16(p.input, p.target);
        s = launch_plan(ks, choose_plan(ks, C, kElem, vec_ok, rows_aligned), a, stream);
      }
      break;
    case Loss::KLDivLogits: {
      const KernelSet& ks = kl_logits_kernels<S>();
      const bool vec_ok = grad_congruent && congruent16(p.input, p.target);
      s = launch_plan(ks, choose_plan(ks, C, kElem, vec_ok, rows_aligned), a, stream);
      break;
    }
    case Loss::NLL: {
      // Only the gradient row is accessed by vectors (input[y] is one scalar read), so its own
      // alignment is all that matters.
      const bool grad_rows_aligned =
          (reinterpret_cast<std::uintptr_t>(o.grad) & 15u) == 0 && (stride * kElem) % 16 == 0;
      s = launch_simple<S, vec_of<S>()>(true, a, grad_rows_aligned, stream);
      break;
    }
    case Loss::KLDiv: {
      const bool vec_ok = grad_congruent && congruent16(p.input, p.target) && forced_strategy() != Force::Scalar;
      s = vec_ok ? launch_simple<S, vec_of<S>()>(false, a, rows_aligned, stream)
                 : launch_simple<S, 1>(false, a, rows_aligned, stream);
      break;
    }
    default:
      return Status::InvalidArgument;  // not a row-wise loss (validate() never passes one)
  }
  if (s != Status::Success) return s;

  // 3. the scalar loss: fixed-order sum of the row losses, divided on the device
  if (!none) {
    rw::LossArgs f{};
    f.rows = rows;
    f.part = reinterpret_cast<double*>(ws + L.part_loss);
    f.out = o.loss;
    f.stats = (labels && p.reduction == Reduction::Mean) ? stats : nullptr;
    f.N = N;
    f.chunk = ceil_div(N, L.loss_parts);
    f.divisor = divisor;
    ::fusedloss::cuda::triple_chevron(L.loss_parts, rw::kStatsThreads, 0, stream).doit(rw::loss_partial_kernel, f);
    FUSEDLOSS_CUDA_CHECK_LAUNCH();
    if (L.loss_parts > 1) {
      ::fusedloss::cuda::triple_chevron(1, rw::kStatsThreads, 0, stream).doit(rw::loss_final_kernel, f, L.loss_parts);
      FUSEDLOSS_CUDA_CHECK_LAUNCH();
    }
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

  char* ws = static_cast<char*>(d_workspace);
  switch (problem.dtype) {
    case DType::Float32: return run_typed<float>(problem, outputs, L, ws, stream);
    case DType::Float16: return run_typed<__half>(problem, outputs, L, ws, stream);
    case DType::BFloat16: return run_typed<__nv_bfloat16>(problem, outputs, L, ws, stream);
    default: return Status::InvalidArgument;  // validate() never passes another dtype
  }
}

}  // namespace detail
}  // namespace fusedloss
