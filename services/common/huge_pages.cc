#include "services/common/huge_pages.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdint>

#ifdef PALISADE_WITH_TCMALLOC
#include <gperftools/malloc_extension.h>
#endif

namespace palisade {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;

std::atomic<size_t> regions{0};
std::atomic<size_t> bytes{0};
std::atomic<size_t> advised{0};
std::atomic<size_t> fallbacks{0};

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
        regions.fetch_add(1, std::memory_order_relaxed);
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

}  // namespace palisade
