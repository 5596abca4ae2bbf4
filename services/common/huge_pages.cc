#include "services/common/huge_pages.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#ifdef PALISADE_WITH_TCMALLOC
#include <gperftools/malloc_extension.h>
#endif

namespace palisade {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;
// Regions remembered for InHugePageHeap; past this many, later ones are still used and
// counted, only not found by InHugePageHeap (tcmalloc asks for >= 1 MiB at a time, so 4,096
// regions are >= 8 GiB).
constexpr size_t kMaxRegions = 4096;

std::atomic<size_t> regions{0};
std::atomic<size_t> bytes{0};
std::atomic<size_t> advised{0};
std::atomic<size_t> fallbacks{0};
std::atomic<uintptr_t> starts[kMaxRegions];
std::atomic<uintptr_t> ends[kMaxRegions];

#ifdef PALISADE_WITH_TCMALLOC
// A region of at least `size` bytes (a multiple of 2 MiB) starting on a 2 MiB boundary, or 0.
uintptr_t MapAligned(size_t size) {
  void* p = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
  if (p == MAP_FAILED) return 0;
  const uintptr_t raw = reinterpret_cast<uintptr_t>(p);
  const uintptr_t start = (raw + kHugePage - 1) & ~(kHugePage - 1);
  // The unaligned head and the tail past the region go back.
  if (start > raw) munmap(p, start - raw);
  const uintptr_t tail = start + size;
  const uintptr_t mapped_end = raw + size + kHugePage;
  if (mapped_end > tail) munmap(reinterpret_cast<void*>(tail), mapped_end - tail);
  return start;
}

// tcmalloc calls Alloc under its page heap's lock, for >= 1 MiB at a time; a request it could
// not satisfy goes to the allocator tcmalloc had before.
class HugePageAllocator : public SysAllocator {
 public:
  explicit HugePageAllocator(SysAllocator* fallback) : fallback_(fallback) {}

  void* Alloc(size_t size, size_t* actual_size, size_t alignment) override {
    if (alignment <= kHugePage && size <= (size_t{1} << 40)) {
      const size_t rounded = (size + kHugePage - 1) & ~(kHugePage - 1);
      const uintptr_t start = MapAligned(rounded);
      if (start != 0) {
        if (madvise(reinterpret_cast<void*>(start), rounded, MADV_HUGEPAGE) == 0) {
          advised.fetch_add(1, std::memory_order_relaxed);
        }
        const size_t i = regions.fetch_add(1, std::memory_order_relaxed);
        if (i < kMaxRegions) {
          ends[i].store(start + rounded, std::memory_order_relaxed);
          starts[i].store(start, std::memory_order_release);
        }
        bytes.fetch_add(rounded, std::memory_order_relaxed);
        if (actual_size != nullptr) *actual_size = rounded;
        return reinterpret_cast<void*>(start);
      }
    }
    fallbacks.fetch_add(1, std::memory_order_relaxed);
    return fallback_ != nullptr ? fallback_->Alloc(size, actual_size, alignment) : nullptr;
  }

 private:
  SysAllocator* const fallback_;
};
#endif

}  // namespace

absl::Status BackHeapWithHugePages() {
#ifdef PALISADE_WITH_TCMALLOC
  static std::atomic<bool> installed{false};
  if (installed.exchange(true)) {
    return absl::FailedPreconditionError("the huge-page heap is already installed");
  }
  MallocExtension* extension = MallocExtension::instance();
  SysAllocator* previous = extension->GetSystemAllocator();
  if (previous == nullptr) {
    return absl::FailedPreconditionError("malloc takes no system allocator (not tcmalloc)");
  }
  // Never freed: tcmalloc holds it for the life of the process.
  extension->SetSystemAllocator(new HugePageAllocator(previous));
  return absl::OkStatus();
#else
  return absl::FailedPreconditionError(
      "this build's malloc is not tcmalloc (a sanitizer build): no huge-page heap");
#endif
}

HugePageStats HugePageHeapStats() {
  HugePageStats s;
  s.regions = regions.load(std::memory_order_relaxed);
  s.bytes = bytes.load(std::memory_order_relaxed);
  s.advised = advised.load(std::memory_order_relaxed);
  s.fallbacks = fallbacks.load(std::memory_order_relaxed);
  return s;
}

bool InHugePageHeap(const void* p) {
  const uintptr_t at = reinterpret_cast<uintptr_t>(p);
  const size_t n = std::min(regions.load(std::memory_order_acquire), kMaxRegions);
  for (size_t i = 0; i < n; ++i) {
    const uintptr_t start = starts[i].load(std::memory_order_acquire);
    if (start != 0 && at >= start && at < ends[i].load(std::memory_order_relaxed)) return true;
  }
  return false;
}

}  // namespace palisade
