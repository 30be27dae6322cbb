// fusedloss emulated device — device memory: one reserved address range that only device
// allocations live in (so a device pointer is told from a host pointer by its address, as on a
// real GPU), never reused after a free (so a stale pointer stays stale), with a gap after every
// allocation (an overrun lands in the gap, where memcheck sees it, not in a neighbour), and one
// "written" bit per byte for initcheck.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "internal.hpp"

namespace fusedloss_sim {
namespace internal {
namespace {

constexpr std::size_t kRegionBytes = std::size_t{1} << 45;  ///< 32 TiB of address space, reserved only
constexpr std::size_t kGap = std::size_t{1} << 16;           ///< after each allocation
constexpr std::size_t kMaxAllocations = std::size_t{1} << 19;

struct Region {
  char* base = nullptr;
  std::size_t cursor = kGap;
  std::mutex mutex;
  Allocation* table = nullptr;           ///< in address order (addresses only grow)
  std::atomic<std::size_t> count{0};
  std::atomic<std::size_t> in_use{0};
  std::vector<Allocation*> pinned;
  std::mutex pinned_mutex;

  Region() {
    void* p = mmap(nullptr, kRegionBytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) {
      base = static_cast<char*>(p);
      g_region_lo = base;
      g_region_hi = base + kRegionBytes;
    }
    table = new Allocation[kMaxAllocations];
  }
};

Region& region() {
  static Region* r = new Region();  // never destroyed: device memory outlives static destructors
  return *r;
}

std::size_t round_up(std::size_t v, std::size_t a) { return (v + a - 1) / a * a; }

}  // namespace

const char* g_region_lo = nullptr;
const char* g_region_hi = nullptr;

void* device_alloc(std::size_t bytes) {
  Region& R = region();
  if (R.base == nullptr || bytes == 0) return nullptr;
  std::lock_guard<std::mutex> lock(R.mutex);
  const std::size_t n = R.count.load(std::memory_order_relaxed);
  const std::size_t span = round_up(bytes, kGap) + kGap;
  if (n >= kMaxAllocations || R.cursor + span > kRegionBytes) return nullptr;
  char* p = R.base + R.cursor;
  // The allocation and the gap behind it are readable and writable (an overrun must not crash
  // the process before memcheck has reported it); pages are committed only when touched.
  if (mprotect(p, span, PROT_READ | PROT_WRITE) != 0) return nullptr;
  const std::size_t defined_bytes = round_up((bytes + 7) / 8 + 8, 4096);  // + 8: whole-word reads at the end
  void* bits = mmap(nullptr, defined_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (bits == MAP_FAILED) {
    mprotect(p, span, PROT_NONE);
    return nullptr;
  }
  R.cursor += span;
  Allocation& a = R.table[n];
  a.base = p;
  a.size = bytes;
  a.defined = static_cast<std::uint8_t*>(bits);
  a.defined_bytes = defined_bytes;
  a.freed.store(false, std::memory_order_relaxed);
  R.count.store(n + 1, std::memory_order_release);
  R.in_use += bytes;
  return p;
}

namespace {
Allocation* lookup(const void* p) {
  Region& R = region();
  const char* c = static_cast<const char*>(p);
  const std::size_t n = R.count.load(std::memory_order_acquire);
  std::size_t lo = 0, hi = n;
  while (lo < hi) {  // last allocation whose base <= c
    const std::size_t mid = (lo + hi) / 2;
    if (R.table[mid].base <= c) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo == 0 ? nullptr : &R.table[lo - 1];
}
}  // namespace

bool device_free(void* p) {
  Region& R = region();
  std::lock_guard<std::mutex> lock(R.mutex);
  Allocation* a = lookup(p);
  if (a == nullptr || a->base != p || a->freed.load()) return false;
  a->freed.store(true, std::memory_order_release);
  R.in_use -= a->size;
  // Give the memory back but keep the addresses reserved: a stale pointer reads zeros, and
  // memcheck reports the use after free.
  madvise(a->base, round_up(a->size, kGap), MADV_DONTNEED);
  munmap(a->defined, a->defined_bytes);
  a->defined = nullptr;
  return true;
}

Allocation* find_allocation(const void* p, std::size_t n, bool* inside_region) {
  region();  // reserves the range on first use
  if (inside_region != nullptr) *inside_region = in_device_region(p);
  if (!in_device_region(p)) return nullptr;
  Allocation* a = lookup(p);
  if (a == nullptr || a->freed.load(std::memory_order_acquire)) return nullptr;
  const char* c = static_cast<const char*>(p);
  if (c + n > a->base + a->size || c + n < c) return nullptr;
  return a;
}

namespace {
/// The bits of [offset, offset + n) for n ≤ 56, as a mask over the 64-bit word at byte offset / 8.
std::uint64_t small_mask(std::size_t offset, std::size_t n) { return ((std::uint64_t{1} << n) - 1) << (offset & 7); }
}  // namespace

void mark_defined(Allocation* a, std::size_t offset, std::size_t n) {
  if (a == nullptr || a->defined == nullptr || n == 0) return;
  if (n <= 56) {
    std::uint64_t w;
    std::memcpy(&w, a->defined + (offset >> 3), 8);
    w |= small_mask(offset, n);
    std::memcpy(a->defined + (offset >> 3), &w, 8);
    return;
  }
  std::size_t i = offset;
  const std::size_t end = offset + n;
  while (i < end && (i & 7) != 0) {
    a->defined[i >> 3] |= static_cast<std::uint8_t>(1u << (i & 7));
    ++i;
  }
  if (end - i >= 8) {
    const std::size_t whole = (end - i) / 8;
    std::memset(a->defined + (i >> 3), 0xff, whole);
    i += whole * 8;
  }
  while (i < end) {
    a->defined[i >> 3] |= static_cast<std::uint8_t>(1u << (i & 7));
    ++i;
  }
}

bool is_defined(const Allocation* a, std::size_t offset, std::size_t n, std::size_t* first_undefined) {
  if (a == nullptr || a->defined == nullptr) return true;
  if (n <= 56) {
    std::uint64_t w;
    std::memcpy(&w, a->defined + (offset >> 3), 8);
    const std::uint64_t m = small_mask(offset, n);
    if ((w & m) == m) return true;
  }
  for (std::size_t i = offset; i < offset + n; ++i) {
    if ((i & 7) == 0 && i + 8 <= offset + n && a->defined[i >> 3] == 0xff) {
      i += 7;
      continue;
    }
    if (!((a->defined[i >> 3] >> (i & 7)) & 1u)) {
      if (first_undefined != nullptr) *first_undefined = i;
      return false;
    }
  }
  return true;
}

std::size_t device_bytes_in_use() { return region().in_use.load(); }

void* pinned_alloc(std::size_t bytes) {
  Region& R = region();
  void* p = nullptr;
  if (posix_memalign(&p, 4096, bytes == 0 ? 1 : bytes) != 0) return nullptr;
  auto* a = new Allocation();
  a->base = static_cast<char*>(p);
  a->size = bytes;
  a->pinned_host = true;
  std::lock_guard<std::mutex> lock(R.pinned_mutex);
  R.pinned.push_back(a);
  return p;
}

bool pinned_free(void* p) {
  Region& R = region();
  std::lock_guard<std::mutex> lock(R.pinned_mutex);
  for (std::size_t i = 0; i < R.pinned.size(); ++i) {
    if (R.pinned[i]->base == p) {
      std::free(p);
      delete R.pinned[i];
      R.pinned.erase(R.pinned.begin() + static_cast<long>(i));
      return true;
    }
  }
  return false;
}

bool is_pinned(const void* p, std::size_t n) {
  Region& R = region();
  const char* c = static_cast<const char*>(p);
  std::lock_guard<std::mutex> lock(R.pinned_mutex);
  for (const Allocation* a : R.pinned)
    if (c >= a->base && c + n <= a->base + a->size) return true;
  return false;
}

}  // namespace internal
}  // namespace fusedloss_sim
