#include "services/common/huge_pages.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#ifdef PALISADE_WITH_TCMALLOC
#include <gperftools/malloc_extension.h>
#endif

#include "absl/strings/str_cat.h"

namespace palisade {
namespace {

constexpr size_t kHugePage = HugePageRegions::kHugePage;

// A region of at least `size` bytes (a multiple of 2 MiB) starting on a 2 MiB boundary, or 0.
// `extra_flags`: MAP_NORESERVE for the reservation.
uintptr_t MapAligned(size_t size, int extra_flags = 0) {
  void* p = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0);
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

}  // namespace

HugePageRegions::HugePageRegions(size_t reserve_bytes)
    : reserve_bytes_((reserve_bytes + kHugePage - 1) & ~(kHugePage - 1)) {}

HugePageRegions::~HugePageRegions() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  if (end_ > cursor_) munmap(reinterpret_cast<void*>(cursor_), end_ - cursor_);
}

bool HugePageRegions::ReserveLocked() {
  tried_reserve_ = true;
  if (reserve_bytes_ == 0) return false;
  const uintptr_t start = MapAligned(reserve_bytes_, MAP_NORESERVE);
  if (start == 0) return false;
  cursor_ = faulted_ = start;
  end_ = start + reserve_bytes_;
  return true;
}

uintptr_t HugePageRegions::Take(size_t size, size_t* actual_size) {
  if (size > (size_t{1} << 40)) return 0;
  const size_t rounded = std::max(kHugePage, (size + kHugePage - 1) & ~(kHugePage - 1));
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!tried_reserve_) ReserveLocked();
    if (end_ != 0 && end_ - cursor_ >= rounded) {  // reserved, and room left
      const uintptr_t start = cursor_;
      cursor_ += rounded;
      const size_t ahead = faulted_ > start ? std::min(faulted_, cursor_) - start : 0;
      faulted_ = std::max(faulted_, cursor_);
      ++stats_.regions;
      stats_.bytes += rounded;
      stats_.faulted_ahead += ahead;
      const bool wake = ahead_ != 0;
      lock.unlock();
      if (wake) wake_.notify_one();
      if (actual_size != nullptr) *actual_size = rounded;
      return start;
    }
  }
  // The range is used up: a mapping of its own.
  const uintptr_t start = MapAligned(rounded);
  if (start == 0) return 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.regions;
    stats_.bytes += rounded;
  }
  if (actual_size != nullptr) *actual_size = rounded;
  return start;
}

absl::Status HugePageRegions::FaultAhead(size_t bytes) {
  if (bytes == 0 || bytes > kMaxAheadBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("fault-ahead: ", bytes, " bytes; between 1 and ", kMaxAheadBytes));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ahead_ != 0 || thread_.joinable()) {
      return absl::FailedPreconditionError("the heap already faults ahead");
    }
    if (!tried_reserve_) ReserveLocked();
    ahead_ = (bytes + kHugePage - 1) & ~(kHugePage - 1);
  }
  thread_ = std::thread([this] { FaultLoop(); });
  return absl::OkStatus();
}

void HugePageRegions::FaultLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (end_ == 0 || faulted_ >= end_ || faulted_ - cursor_ >= ahead_) {
      wake_.wait(lock);
      continue;
    }
    const uintptr_t chunk = faulted_;
    lock.unlock();
    // Faults in what is not yet (memory tcmalloc may have taken meanwhile included: populating
    // never changes what a page holds). Kernels before 5.14 have no such advice: then nothing
    // is faulted ahead.
    const bool populated =
        madvise(reinterpret_cast<void*>(chunk), kHugePage, MADV_POPULATE_WRITE) == 0;
    lock.lock();
    if (!populated) {
      ahead_ = 0;
      ++stats_.fault_ahead_failures;
      continue;
    }
    faulted_ = std::max(faulted_, chunk + kHugePage);
  }
}

HugePageStats HugePageRegions::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  HugePageStats s = stats_;
  s.ready = faulted_ - cursor_;
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
    if (alignment <= kHugePage) {
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

absl::Status BackHeapWithRegions() {
#ifdef PALISADE_WITH_TCMALLOC
  static std::atomic<bool> installed{false};
  if (installed.exchange(true)) {
    return absl::FailedPreconditionError("the region heap is already installed");
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
      "this build's malloc is not tcmalloc (a sanitizer build): no region heap");
#endif
}

absl::Status FaultHeapAhead(size_t bytes) {
  HugePageRegions* regions = process_regions.load(std::memory_order_acquire);
  if (regions == nullptr) {
    return absl::FailedPreconditionError("fault-ahead: the region heap is not installed");
  }
  return regions->FaultAhead(bytes);
}

HugePageStats RegionHeapStats() {
  HugePageRegions* regions = process_regions.load(std::memory_order_acquire);
  HugePageStats s = regions != nullptr ? regions->Stats() : HugePageStats{};
  s.fallbacks = fallbacks.load(std::memory_order_relaxed);
  return s;
}

}  // namespace palisade
