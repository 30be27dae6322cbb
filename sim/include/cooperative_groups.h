// fusedloss emulated device — the part of cooperative_groups that fusedloss uses: the thread block
// and the thread-block cluster (sm_90), with distributed shared memory.
#pragma once

#include "fusedloss_sim/device.hpp"

namespace fusedloss_sim {
unsigned cluster_block_rank();
unsigned cluster_num_blocks();
void cluster_sync(const void* site);
/// The address in block `rank` of the cluster that corresponds to `p` in the calling block's
/// shared memory (nullptr, with a memcheck finding, when p is not shared memory).
void* map_shared_rank(const void* p, unsigned rank);
}  // namespace fusedloss_sim

namespace cooperative_groups {

class thread_block {
 public:
  void sync() const { ::fusedloss_sim::sync_threads("cooperative_groups::thread_block::sync"); }
  unsigned size() const { return blockDim.x * blockDim.y * blockDim.z; }
  unsigned thread_rank() const { return (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x; }
};
inline thread_block this_thread_block() { return thread_block(); }

class cluster_group {
 public:
  unsigned block_rank() const { return ::fusedloss_sim::cluster_block_rank(); }
  unsigned num_blocks() const { return ::fusedloss_sim::cluster_num_blocks(); }
  void sync() const { ::fusedloss_sim::cluster_sync("cooperative_groups::cluster_group::sync"); }
  template <class T>
  T* map_shared_rank(T* p, unsigned rank) const {
    return static_cast<T*>(::fusedloss_sim::map_shared_rank(p, rank));
  }
};
inline cluster_group this_cluster() { return cluster_group(); }

}  // namespace cooperative_groups
