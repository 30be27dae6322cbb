// The emulated device itself: each checker proven on a deliberately broken kernel, the schedules,
// clusters with distributed shared memory, warp operations, graphs, and the launch records.
#include <cooperative_groups.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fusedloss/cuda/device_common.cuh"
#include "fusedloss_sim/sim.hpp"

// Kernels live in a named namespace: the launch records name kernels by their exported symbols.
namespace sim_test {

using fusedloss::cuda::triple_chevron;

/// Each test starts from a healthy device with empty logs, and leaves one behind (a checker
/// finding is sticky, as a real fault is, until cudaDeviceReset).
class Sim : public ::testing::Test {
 protected:
  void SetUp() override { reset(); }
  void TearDown() override {
    reset();
    fusedloss_sim::set_schedule({});
    fusedloss_sim::set_sector_accounting(false);
  }
  static void reset() {
    cudaDeviceReset();
    fusedloss_sim::clear_findings();
    fusedloss_sim::clear_launches();
  }
  static bool found(const char* checker, const char* what) {
    for (const std::string& f : fusedloss_sim::findings())
      if (f.rfind(checker, 0) == 0 && f.find(what) != std::string::npos) return true;
    return false;
  }
  static std::string all_findings() {
    std::string s;
    for (const std::string& f : fusedloss_sim::findings()) s += f + "\n";
    return s;
  }
};

template <class T>
T* device_array(std::size_t n, int fill_byte = 0) {
  T* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemset(p, fill_byte, n * sizeof(T)), cudaSuccess);
  return p;
}
template <class T>
std::vector<T> download(const T* p, std::size_t n) {
  std::vector<T> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

// ---- correct kernels --------------------------------------------------------------------------------

/// Block sum through shared memory, the barriers where they belong.
__global__ void block_sum_kernel(const float* x, float* out, int n) {
  FUSEDLOSS_SHARED(float[32], partial);
  float v = 0.f;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) v += x[i];
  v = fusedloss::cuda::block_sum(v, partial);
  if (threadIdx.x == 0) out[blockIdx.x] = v;
}

TEST_F(Sim, BlockReductionIsCorrectAndIdenticalUnderEverySchedule) {
  const int n = 100003;
  std::vector<float> h(n);
  for (int i = 0; i < n; ++i) h[static_cast<std::size_t>(i)] = static_cast<float>((i * 37) % 101) - 50.f;
  float* x = device_array<float>(n);
  ASSERT_EQ(cudaMemcpy(x, h.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  float* out = device_array<float>(7);
  std::vector<std::vector<float>> results;
  for (auto order : {fusedloss_sim::Schedule::RoundRobin, fusedloss_sim::Schedule::Reversed,
                     fusedloss_sim::Schedule::Random, fusedloss_sim::Schedule::WarpGreedy}) {
    fusedloss_sim::set_schedule({order, 12345});
    triple_chevron(7, 256).doit(block_sum_kernel, x, out, n);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << fusedloss_sim::schedule_name(order) << "\n" << all_findings();
    results.push_back(download(out, 7));
  }
  double expect = 0;
  for (float v : h) expect += v;
  double got = 0;
  for (float v : results[0]) got += v;
  EXPECT_NEAR(got, expect, 1e-3);
  for (const auto& r : results) EXPECT_EQ(0, std::memcmp(r.data(), results[0].data(), 7 * sizeof(float)));
  cudaFree(x);
  cudaFree(out);
}

/// Records the order in which threads pass a point: differs between schedules by design.
__global__ void arrival_order_kernel(int* counter, int* order) {
  order[blockIdx.x * blockDim.x + threadIdx.x] = atomicAdd(counter, 1);
}

TEST_F(Sim, SchedulesRunThreadsInDifferentOrders) {
  int* counter = device_array<int>(1);
  int* order = device_array<int>(4 * 64);
  std::vector<std::vector<int>> seen;
  for (auto s : {fusedloss_sim::Schedule::RoundRobin, fusedloss_sim::Schedule::Reversed,
                 fusedloss_sim::Schedule::Random}) {
    fusedloss_sim::set_schedule({s, 7});
    ASSERT_EQ(cudaMemset(counter, 0, sizeof(int)), cudaSuccess);
    triple_chevron(4, 64).doit(arrival_order_kernel, counter, order);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    seen.push_back(download(order, 4 * 64));
  }
  EXPECT_EQ(seen[0][0], 0);      // round-robin: block 0 thread 0 first
  EXPECT_EQ(seen[1][4 * 64 - 1], 0);  // reversed: the last thread first
  EXPECT_NE(seen[2], seen[0]);
  EXPECT_NE(seen[2], seen[1]);
  const auto records = fusedloss_sim::launches();
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].atomics, 4u * 64u);
  cudaFree(counter);
  cudaFree(order);
}

__global__ void shuffle_kernel(int* out) {
  const int lane = threadIdx.x;
  out[lane] = __shfl_xor_sync(0xffffffffu, lane * 10, 1);
  out[32 + lane] = __shfl_down_sync(0xffffffffu, lane, 3);
  out[64 + lane] = __shfl_up_sync(0xffffffffu, lane, 2);
  out[96 + lane] = __shfl_sync(0xffffffffu, lane + 100, 5);
  out[128 + lane] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 3 == 0));
  out[160 + lane] = __shfl_xor_sync(0xffffffffu, lane, 4, 8);  // 8-lane segments
}

TEST_F(Sim, WarpShufflesAndVotesFollowCudaSemantics) {
  int* out = device_array<int>(192);
  triple_chevron(1, 32).doit(shuffle_kernel, out);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << all_findings();
  const std::vector<int> h = download(out, 192);
  unsigned ballot = 0;
  for (int l = 0; l < 32; l += 3) ballot |= 1u << l;
  for (int l = 0; l < 32; ++l) {
    EXPECT_EQ(h[static_cast<std::size_t>(l)], (l ^ 1) * 10);
    EXPECT_EQ(h[static_cast<std::size_t>(32 + l)], l + 3 < 32 ? l + 3 : l);
    EXPECT_EQ(h[static_cast<std::size_t>(64 + l)], l >= 2 ? l - 2 : l);
    EXPECT_EQ(h[static_cast<std::size_t>(96 + l)], 105);
    EXPECT_EQ(static_cast<unsigned>(h[static_cast<std::size_t>(128 + l)]), ballot);
    EXPECT_EQ(h[static_cast<std::size_t>(160 + l)], l ^ 4);
  }
  cudaFree(out);
}

/// One row per cluster: each block sums its part, the blocks exchange partials through
/// distributed shared memory.
__global__ void cluster_sum_kernel(const float* x, float* out, int per_block) {
  FUSEDLOSS_SHARED(float[32], partial);
  FUSEDLOSS_SHARED(float, block_total);
  cooperative_groups::cluster_group cl = cooperative_groups::this_cluster();
  const unsigned rank = cl.block_rank();
  float v = x[(blockIdx.x) * per_block + threadIdx.x];
  v = fusedloss::cuda::block_sum(v, partial);
  if (threadIdx.x == 0) block_total = v;
  cl.sync();
  if (threadIdx.x == 0) {
    float total = 0.f;
    for (unsigned r = 0; r < cl.num_blocks(); ++r) total += *cl.map_shared_rank(&block_total, r);
    out[blockIdx.x] = total + 0.f * static_cast<float>(rank);
  }
  cl.sync();  // no block leaves while another may still read its shared memory
}

cudaError_t launch_cluster(int K, int clusters, const float* x, float* out, int per_block) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(K * clusters));
  cfg.blockDim = dim3(static_cast<unsigned>(per_block));
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = static_cast<unsigned>(K);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, cluster_sum_kernel, x, out, per_block);
}

TEST_F(Sim, ClustersShareDistributedSharedMemory) {
  for (int K : {2, 3, 8}) {
    const int per_block = 64, clusters = 3, n = K * clusters * per_block;
    std::vector<float> h(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) h[static_cast<std::size_t>(i)] = static_cast<float>(i % 7);
    float* x = device_array<float>(static_cast<std::size_t>(n));
    ASSERT_EQ(cudaMemcpy(x, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    float* out = device_array<float>(static_cast<std::size_t>(K * clusters));
    ASSERT_EQ(launch_cluster(K, clusters, x, out, per_block), cudaSuccess) << all_findings();
    const std::vector<float> got = download(out, static_cast<std::size_t>(K * clusters));
    for (int c = 0; c < clusters; ++c) {
      float expect = 0;
      for (int i = c * K * per_block; i < (c + 1) * K * per_block; ++i) expect += h[static_cast<std::size_t>(i)];
      for (int r = 0; r < K; ++r) EXPECT_EQ(got[static_cast<std::size_t>(c * K + r)], expect) << "K " << K;
    }
    const auto rec = fusedloss_sim::launches();
    ASSERT_FALSE(rec.empty());
    EXPECT_EQ(rec.back().cluster, static_cast<unsigned>(K));
    EXPECT_NE(rec.back().kernel.find("cluster_sum_kernel"), std::string::npos) << rec.back().kernel;
    cudaFree(x);
    cudaFree(out);
  }
}

__global__ void copy_kernel(const float* in, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = in[i] * 2.f;
}

TEST_F(Sim, LaunchRecordsCountTheTraffic) {
  const int n = 1000;
  float* in = device_array<float>(n);
  float* out = device_array<float>(n);
  triple_chevron(4, 256).doit(copy_kernel, in, out, n);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto rec = fusedloss_sim::launches();
  ASSERT_EQ(rec.size(), 1u);
  EXPECT_EQ(rec[0].bytes_loaded, n * sizeof(float));
  EXPECT_EQ(rec[0].bytes_stored, n * sizeof(float));
  EXPECT_EQ(rec[0].grid.x, 4u);
  EXPECT_EQ(rec[0].block.x, 256u);
  EXPECT_NE(rec[0].kernel.find("copy_kernel"), std::string::npos) << rec[0].kernel;
  cudaFree(in);
  cudaFree(out);
}

// Sector accounting: one warp-level request per instruction per warp, its distinct 32-byte sectors.
__global__ void load_store_stride_kernel(const float* in, float* out, int stride, int offset) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i * stride + offset] = in[i * stride + offset];
}
__global__ void vector_copy_kernel(const uint4* in, uint4* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = __ldcs(in + i);
}
__global__ void broadcast_kernel(const float* in, float* out) {
  out[blockIdx.x * blockDim.x + threadIdx.x] = in[0];  // every lane the same 4 bytes
}
__global__ void half_warp_kernel(const float* in, float* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  for (int k = 0; k < 3; ++k)
    if (threadIdx.x % 32 < 16) out[k * 64 + i] = in[k * 64 + i];  // 16 lanes: 2 sectors, 3 times
}

fusedloss_sim::LaunchRecord only_launch() {
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto rec = fusedloss_sim::launches();
  EXPECT_EQ(rec.size(), 1u);
  fusedloss_sim::clear_launches();
  return rec.empty() ? fusedloss_sim::LaunchRecord{} : rec[0];
}

TEST_F(Sim, LaunchRecordsCountSectorsPerWarpRequest) {
  fusedloss_sim::set_sector_accounting(true);  // off by default (TearDown turns it off again)
  float* in = device_array<float>(4096);
  float* out = device_array<float>(4096);
  struct Case {
    int stride, offset;
    std::uint64_t sectors_per_request;
  };
  // 64 threads = 2 warps = 2 requests each way; allocations are 64 KB aligned.
  for (const Case c : {Case{1, 0, 4}, Case{2, 0, 8}, Case{1, 1, 5}, Case{32, 0, 32}}) {
    SCOPED_TRACE("stride " + std::to_string(c.stride) + " offset " + std::to_string(c.offset));
    triple_chevron(1, 64).doit(load_store_stride_kernel, in, out, c.stride, c.offset);
    const auto r = only_launch();
    EXPECT_EQ(r.load_requests, 2u);
    EXPECT_EQ(r.store_requests, 2u);
    EXPECT_EQ(r.sectors_loaded, 2 * c.sectors_per_request);
    EXPECT_EQ(r.sectors_stored, 2 * c.sectors_per_request);
    EXPECT_EQ(r.request_bytes_loaded, 2u * 128u);  // sector efficiency 128 / (32 · sectors per request)
  }
  // 16-byte vectors: 512 bytes per warp = 16 sectors, every byte used.
  triple_chevron(2, 64).doit(vector_copy_kernel, reinterpret_cast<const uint4*>(in), reinterpret_cast<uint4*>(out));
  const auto v = only_launch();
  EXPECT_EQ(v.load_requests, 4u);
  EXPECT_EQ(v.sectors_loaded, 4u * 16u);
  EXPECT_EQ(v.sectors_stored, 4u * 16u);
  EXPECT_EQ(v.request_bytes_loaded, 32u * v.sectors_loaded);  // efficiency 1
  EXPECT_EQ(v.request_bytes_stored, 32u * v.sectors_stored);
  // Repeated executions of one instruction are separate requests; inactive lanes fetch nothing.
  triple_chevron(1, 64).doit(half_warp_kernel, in, out);
  const auto h = only_launch();
  EXPECT_EQ(h.load_requests, 2u * 3u);
  EXPECT_EQ(h.sectors_loaded, 2u * 3u * 2u);
  // A broadcast: 32 lanes × 4 bytes counted as accesses, 4 distinct bytes asked for, 1 sector.
  triple_chevron(1, 32).doit(broadcast_kernel, in, out);
  const auto b = only_launch();
  EXPECT_EQ(b.bytes_loaded, 32u * 4u);
  EXPECT_EQ(b.request_bytes_loaded, 4u);
  EXPECT_EQ(b.sectors_loaded, 1u);
  EXPECT_EQ(b.request_bytes_stored, 128u);
  cudaFree(in);
  cudaFree(out);
}

TEST_F(Sim, GraphsReplayCapturedWork) {
  const int n = 300;
  float* in = device_array<float>(n);
  float* out = device_array<float>(n);
  std::vector<float> h(n, 1.5f);
  ASSERT_EQ(cudaMemcpy(in, h.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  cudaGraph_t g = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  EXPECT_EQ(cudaMemsetAsync(out, 0, n * sizeof(float), s), cudaSuccess);
  triple_chevron(2, 256, 0, s).doit(copy_kernel, in, out, n);
  EXPECT_EQ(cudaMemset(out, 0, 4), cudaErrorStreamCaptureUnsupported);  // synchronous call during capture
  ASSERT_EQ(cudaStreamEndCapture(s, &g), cudaSuccess);
  EXPECT_TRUE(fusedloss_sim::launches().empty());  // captured, not run
  std::size_t nodes = 0;
  ASSERT_EQ(cudaGraphGetNodes(g, nullptr, &nodes), cudaSuccess);
  EXPECT_EQ(nodes, 2u);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, g, 0), cudaSuccess);
  for (int replay = 0; replay < 3; ++replay) ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  EXPECT_EQ(fusedloss_sim::launches().size(), 3u);
  EXPECT_EQ(download(out, n), std::vector<float>(n, 3.f));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(g);
  cudaStreamDestroy(s);
  cudaFree(in);
  cudaFree(out);
}

TEST_F(Sim, MemoryKindsAreToldApart) {
  float* d = device_array<float>(16);
  std::vector<float> h(16);
  cudaPointerAttributes a{};
  ASSERT_EQ(cudaPointerGetAttributes(&a, d + 3), cudaSuccess);
  EXPECT_EQ(a.type, cudaMemoryTypeDevice);
  ASSERT_EQ(cudaPointerGetAttributes(&a, h.data()), cudaSuccess);
  EXPECT_EQ(a.type, cudaMemoryTypeUnregistered);
  EXPECT_EQ(cudaMemcpy(d, h.data(), 64, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);  // wrong direction
  EXPECT_EQ(cudaMemcpy(d, h.data(), 68, cudaMemcpyHostToDevice), cudaErrorInvalidValue);  // past the end
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // not sticky
  cudaFree(d);
  ASSERT_EQ(cudaPointerGetAttributes(&a, d), cudaSuccess);
  EXPECT_NE(a.type, cudaMemoryTypeDevice);  // freed
}

// ---- each checker on a deliberately broken kernel ---------------------------------------------------

__global__ void off_by_one_kernel(float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) out[i] = 1.f;  // BUG: <= writes out[n]
}

TEST_F(Sim, MemcheckReportsAnOutOfBoundsWriteAndTheFaultIsSticky) {
  const int n = 100;
  float* out = device_array<float>(n);
  triple_chevron(1, 128).doit(off_by_one_kernel, out, n);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorIllegalAddress);
  EXPECT_TRUE(found("memcheck", "invalid __global__ write of 4 bytes")) << all_findings();
  EXPECT_TRUE(found("memcheck", "off_by_one_kernel")) << all_findings();
  EXPECT_TRUE(found("memcheck", "thread (100,0,0)")) << all_findings();
  EXPECT_EQ(cudaMemset(out, 0, 4), cudaErrorIllegalAddress);  // sticky: every later call fails
  EXPECT_EQ(cudaGetLastError(), cudaErrorIllegalAddress);
  reset();
  EXPECT_EQ(cudaFree(out), cudaSuccess);
}

__global__ void read_kernel(const float* in, float* out) { out[threadIdx.x] = in[threadIdx.x]; }

TEST_F(Sim, MemcheckReportsAHostPointerAndAUseAfterFree) {
  float* out = device_array<float>(32);
  std::vector<float> host(32, 1.f);
  triple_chevron(1, 32).doit(read_kernel, static_cast<const float*>(host.data()), out);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorIllegalAddress);
  EXPECT_TRUE(found("memcheck", "host memory")) << all_findings();
  reset();
  float* stale = device_array<float>(32);
  ASSERT_EQ(cudaFree(stale), cudaSuccess);
  triple_chevron(1, 32).doit(read_kernel, static_cast<const float*>(stale), out);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorIllegalAddress);
  EXPECT_TRUE(found("memcheck", "outside every live allocation")) << all_findings();
  reset();
  cudaFree(out);
}

/// BUG: no barrier between the writes to `partial` and the reads of other threads' entries.
__global__ void racy_sum_kernel(const float* x, float* out) {
  FUSEDLOSS_SHARED(float[256], partial);
  partial[threadIdx.x] = x[threadIdx.x];
  if (threadIdx.x == 0) {
    float s = 0.f;
    for (int i = 0; i < 256; ++i) s += partial[i];
    out[0] = s;
  }
}

TEST_F(Sim, RacecheckReportsAMissingBarrier) {
  float* x = device_array<float>(256);
  float* out = device_array<float>(1);
  for (auto s : {fusedloss_sim::Schedule::RoundRobin, fusedloss_sim::Schedule::WarpGreedy,
                 fusedloss_sim::Schedule::Reversed}) {
    reset();
    fusedloss_sim::set_schedule({s, 1});
    triple_chevron(1, 256).doit(racy_sum_kernel, static_cast<const float*>(x), out);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure) << fusedloss_sim::schedule_name(s);
    // Round-robin runs thread 0 first: it reads entries nobody wrote yet (initcheck, and a race
    // once they are written); reversed runs it last: read-after-write without a barrier.
    EXPECT_TRUE(found("racecheck", "hazard on shared memory") || found("initcheck", "shared memory never written"))
        << fusedloss_sim::schedule_name(s) << "\n" << all_findings();
  }
  reset();
  fusedloss_sim::set_schedule({fusedloss_sim::Schedule::Reversed, 1});
  triple_chevron(1, 256).doit(racy_sum_kernel, static_cast<const float*>(x), out);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
  EXPECT_TRUE(found("racecheck", "read-after-write hazard")) << all_findings();
  reset();
  cudaFree(x);
  cudaFree(out);
}

/// BUG: the two halves of the block wait at different barriers.
__global__ void divergent_barrier_kernel(float* out) {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 0.f;
}

/// BUG: lanes 16..31 leave before the shuffle that names them.
__global__ void early_exit_shuffle_kernel(int* out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);
}

/// BUG: half the warp waits at a barrier, the other half at a shuffle that names the first half.
__global__ void deadlock_kernel(int* out) {
  int v = static_cast<int>(threadIdx.x);
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  }
  out[threadIdx.x] = v;
}

TEST_F(Sim, SynccheckReportsDivergentBarriersAndShuffles) {
  float* f = device_array<float>(64);
  int* o = device_array<int>(64);
  triple_chevron(1, 64).doit(divergent_barrier_kernel, f);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
  EXPECT_TRUE(found("synccheck", "divergent __syncthreads")) << all_findings();
  reset();
  triple_chevron(1, 32).doit(early_exit_shuffle_kernel, o);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
  EXPECT_TRUE(found("synccheck", "exited")) << all_findings();
  reset();
  triple_chevron(1, 32).doit(deadlock_kernel, o);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
  EXPECT_TRUE(found("synccheck", "deadlock")) << all_findings();
  reset();
  cudaFree(f);
  cudaFree(o);
}

TEST_F(Sim, InitcheckReportsAReadOfUnwrittenDeviceMemory) {
  float* in = nullptr;
  ASSERT_EQ(cudaMalloc(&in, 32 * sizeof(float)), cudaSuccess);
  float* out = device_array<float>(32);
  ASSERT_EQ(cudaMemset(in, 0, 16 * sizeof(float)), cudaSuccess);  // BUG: only half written
  triple_chevron(1, 32).doit(read_kernel, static_cast<const float*>(in), out);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
  EXPECT_TRUE(found("initcheck", "never written since allocation")) << all_findings();
  EXPECT_TRUE(found("initcheck", "thread (16,0,0)") || found("initcheck", "thread (31,0,0)")) << all_findings();
  reset();
  cudaFree(in);
  cudaFree(out);
}

TEST_F(Sim, BadLaunchConfigurationsAreRefusedWithoutRunning) {
  float* out = device_array<float>(4);
  triple_chevron(1, 2048).doit(copy_kernel, static_cast<const float*>(out), out, 4);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  triple_chevron(0, 32).doit(copy_kernel, static_cast<const float*>(out), out, 4);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_TRUE(fusedloss_sim::launches().empty());
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // not sticky
  cudaFree(out);
}

/// The emulated cuBLAS (sim/src/cublas.cpp): the product itself, device-pointer scalars, graph capture, and
/// memcheck / initcheck on the operands' extents.
TEST_F(Sim, CublasSgemmComputesChecksOperandsAndIsCaptured) {
  cublasHandle_t h = nullptr;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  // Column-major A [2 x 3], B [3 x 2]: C = A·B [2 x 2].
  const float a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {1, 0, -1, 2, 1, 0}, scalars[2] = {2.0f, 0.0f};
  float* d_a = device_array<float>(6);
  float* d_b = device_array<float>(6);
  float* d_s = device_array<float>(2);
  float* d_c = nullptr;
  ASSERT_EQ(cudaMalloc(&d_c, 4 * sizeof(float)), cudaSuccess);  // never written: beta = 0 must not read it
  ASSERT_EQ(cudaMemcpy(d_a, a, sizeof a, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_b, b, sizeof b, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_s, scalars, sizeof scalars, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_DEVICE), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, d_s, d_a, 2, d_b, 3, d_s + 1, d_c, 2),
            CUBLAS_STATUS_SUCCESS);
  // C = 2·A·B: column 0 = 2·(1·a0 + 0·a1 − 1·a2) = 2·((1,2) − (5,6)), column 1 = 2·(2·(1,2) + 1·(3,4)) = (10, 16).
  EXPECT_EQ(download(d_c, 4), (std::vector<float>{-8, -8, 10, 16})) << all_findings();

  // Captured into a graph: nothing runs at capture, the replay computes (with the scalars of replay time).
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  ASSERT_EQ(cublasSetStream(h, stream), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, d_s, d_a, 2, d_b, 3, d_s + 1, d_c, 2),
            CUBLAS_STATUS_SUCCESS);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  const float three = 3.0f;
  ASSERT_EQ(cudaMemcpy(d_s, &three, sizeof three, cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(download(d_c, 4), (std::vector<float>{-8, -8, 10, 16}));
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(download(d_c, 4), (std::vector<float>{-12, -12, 15, 24}));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  ASSERT_EQ(cublasSetStream(h, nullptr), CUBLAS_STATUS_SUCCESS);
  cudaStreamDestroy(stream);

  // Bad arguments are refused before anything runs; an operand reaching past its allocation is a fault.
  EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, d_s, d_a, 1, d_b, 3, d_s + 1, d_c, 2),
            CUBLAS_STATUS_INVALID_VALUE);  // lda < m
  EXPECT_TRUE(fusedloss_sim::findings().empty()) << all_findings();
  EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, d_s, d_a, 2, d_b, 3, d_s + 1, d_c, 3),
            CUBLAS_STATUS_SUCCESS);  // ldc = 3: C's extent is 5 floats of a 4-float allocation
  EXPECT_TRUE(found("memcheck", "cublasSgemm: C")) << all_findings();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorIllegalAddress);  // sticky
  reset();

  // Reading memory never written (B) is an initcheck finding.
  float* d_a2 = device_array<float>(6);
  float* d_b2 = nullptr;
  float* d_c2 = device_array<float>(4);
  ASSERT_EQ(cudaMalloc(&d_b2, 6 * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST), CUBLAS_STATUS_SUCCESS);
  const float one = 1.0f, zero = 0.0f;
  EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, d_a2, 2, d_b2, 3, &zero, d_c2, 2),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_TRUE(found("initcheck", "cublasSgemm reads uninitialised device memory in B")) << all_findings();
  reset();
  EXPECT_EQ(cublasDestroy(h), CUBLAS_STATUS_SUCCESS);
}

}  // namespace sim_test
