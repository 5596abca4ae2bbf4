#include "services/common/huge_pages.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdint>

#ifdef PALISADE_WITH_TCMALLOC
#include <gperftools/malloc_extension.h>
#endif

namespace palisade {
namespace {

constexpr size_t kHugePage = HugePageRegions::kHugePage;
constexpr uintptr_t kAdvisedBit = 1;  // set in a ready region's address (they are 2 MiB aligned)

// A region of at least `size` bytes (a multiple of 2 MiB) starting on a 2 MiB boundary, or 0.
uintptr_t MapAligned(size_t size) {
  void* p =
      mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
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

bool AdviseHuge(uintptr_t start, size_t size) {
  return madvise(reinterpret_cast<void*>(start), size, MADV_HUGEPAGE) == 0;
}

// Faults every page of the region in for writing: the kernel's own walk where it has one
// (Linux 5.14), else a store to each 4 KiB page.
void Populate(uintptr_t start, size_t size) {
  if (madvise(reinterpret_cast<void*>(start), size, MADV_POPULATE_WRITE) == 0) return;
  for (size_t at = 0; at < size; at += 4096) {
    *reinterpret_cast<volatile char*>(start + at) = 0;
  }
}

}  // namespace

HugePageRegions::~HugePageRegions() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < ready_count_; ++i) {
    munmap(reinterpret_cast<void*>(ready_[i] & ~kAdvisedBit), kHugePage);
  }
  ready_count_ = 0;
}

uintptr_t HugePageRegions::Take(size_t size, size_t* actual_size) {
  const size_t rounded = (size + kHugePage - 1) & ~(kHugePage - 1);
  if (rounded == kHugePage) {
    std::unique_lock<std::mutex> lock(mu_);
    if (ready_count_ > 0) {
      const uintptr_t ready = ready_[--ready_count_];
      ++stats_.regions;
      stats_.bytes += kHugePage;
      if (ready & kAdvisedBit) ++stats_.advised;
      ++stats_.faulted_ahead;
      lock.unlock();
      wake_.notify_one();
      if (actual_size != nullptr) *actual_size = kHugePage;
      return ready & ~kAdvisedBit;
    }
  }
  const uintptr_t start = MapAligned(rounded);
  if (start == 0) return 0;
  const bool advised = AdviseHuge(start, rounded);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.regions;
    stats_.bytes += rounded;
    if (advised) ++stats_.advised;
  }
  if (actual_size != nullptr) *actual_size = rounded;
  return start;
}

absl::Status HugePageRegions::FaultAhead(size_t regions) {
  if (regions == 0 || regions > kMaxReady) {
    return absl::InvalidArgumentError("fault-ahead: between 1 and 64 regions of 2 MiB");
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (target_ != 0) return absl::FailedPreconditionError("the heap already faults ahead");
    target_ = regions;
  }
  thread_ = std::thread([this] { FaultLoop(); });
  return absl::OkStatus();
}

void HugePageRegions::FaultLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (ready_count_ >= target_) {
      wake_.wait(lock);
      continue;
    }
    lock.unlock();
    uintptr_t region = MapAligned(kHugePage);
    if (region != 0) {
      if (AdviseHuge(region, kHugePage)) region |= kAdvisedBit;
      Populate(region & ~kAdvisedBit, kHugePage);
    }
    lock.lock();
    if (region == 0) {
      wake_.wait(lock);  // out of address space: try again after the next take
    } else if (stop_ || ready_count_ >= target_) {
      munmap(reinterpret_cast<void*>(region & ~kAdvisedBit), kHugePage);
    } else {
      ready_[ready_count_++] = region;
    }
  }
}

HugePageStats HugePageRegions::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  HugePageStats s = stats_;
  s.ready = ready_count_;
  return s;
}

namespace {

// The process's regions, once installed; never freed (tcmalloc holds the allocator for the
// life of the process).
std::atomic<HugePageRegions*> process_regions{nullptr};
std::atomic<size_t> fallbacks{0};

#ifdef PALISADE_WITH_TCMALLOC
// tcmalloc calls Alloc under its page heap's lock, for >= 1 MiB at a time; a request it could
// not satisfy goes to the allocator tcmalloc had before.
class HugePageAllocator : public SysAllocator {
 public:
  HugePageAllocator(HugePageRegions* regions, SysAllocator* fallback)
      : regions_(regions), fallback_(fallback) {}

  void* Alloc(size_t size, size_t* actual_size, size_t alignment) override {
    if (alignment <= kHugePage && size <= (size_t{1} << 40)) {
      const uintptr_t start = regions_->Take(size, actual_size);
      if (start != 0) return reinterpret_cast<void*>(start);
    }
    fallbacks.fetch_add(1, std::memory_order_relaxed);
    return fallback_ != nullptr ? fallback_->Alloc(size, actual_size, alignment) : nullptr;
  }

 private:
  HugePageRegions* const regions_;
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
  auto* regions = new HugePageRegions();
  extension->SetSystemAllocator(new HugePageAllocator(regions, previous));
  process_regions.store(regions, std::memory_order_release);
  return absl::OkStatus();
#else
  return absl::FailedPreconditionError(
      "this build's malloc is not tcmalloc (a sanitizer build): no huge-page heap");
#endif
}

absl::Status FaultHeapAhead(size_t bytes) {
  HugePageRegions* regions = process_regions.load(std::memory_order_acquire);
  if (regions == nullptr) {
    return absl::FailedPreconditionError("fault-ahead: the huge-page heap is not installed");
  }
  if (bytes == 0) return absl::InvalidArgumentError("fault-ahead: 0 bytes");
  const size_t count = (bytes + kHugePage - 1) / kHugePage;
  return regions->FaultAhead(count < HugePageRegions::kMaxReady ? count
                                                                : HugePageRegions::kMaxReady);
}

HugePageStats HugePageHeapStats() {
  HugePageRegions* regions = process_regions.load(std::memory_order_acquire);
  HugePageStats s = regions != nullptr ? regions->Stats() : HugePageStats{};
  s.fallbacks = fallbacks.load(std::memory_order_relaxed);
  return s;
}

}  // namespace palisade
