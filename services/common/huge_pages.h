// Huge pages for the heap of a process whose malloc is tcmalloc (palisadectl's, see
// third_party:tcmalloc). Each page a process touches for the first time costs a fault; on a
// virtual machine a 4 KiB fault measured ~10 us here (docs/PERFORMANCE.md, "Thirteenth pass"),
// and a replay that grows its windows, sessions and decisions to ~85 MiB spent ~0.15 s of its
// 1 s in them. BackHeapWithHugePages gives tcmalloc a system allocator that maps its memory in
// 2 MiB-aligned regions advised MADV_HUGEPAGE, so that the kernel backs them with transparent
// huge pages (one fault per 2 MiB) where it allows them (`enabled` = always or madvise); where
// it does not, the regions are ordinary memory and nothing else changes. Memory tcmalloc
// releases is released as before (madvise on its spans).
//
// Even a huge page's fault is the kernel zeroing 2 MiB, and on this VM the host backing it: 0.1
// to several ms each, on the thread that first touches it (docs/PERFORMANCE.md, "Nineteenth
// pass"). FaultHeapAhead moves that work to a thread of its own, which keeps a few regions
// mapped and faulted before tcmalloc asks for them: worth it only where a core is idle now and
// then (a replay on two threads), so the processes turn it on themselves.
//
// Thread-safety: call BackHeapWithHugePages once, early (first thing in main), and
// FaultHeapAhead at most once after it; HugePageHeapStats may be called from any thread.
// HugePageRegions is thread-safe; Take never allocates (tcmalloc calls it under its lock).
#ifndef PALISADE_SERVICES_COMMON_HUGE_PAGES_H_
#define PALISADE_SERVICES_COMMON_HUGE_PAGES_H_

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"

namespace palisade {

struct HugePageStats {
  size_t regions = 0;        // regions mapped for tcmalloc
  size_t bytes = 0;          // their total size
  size_t advised = 0;        // regions the kernel took MADV_HUGEPAGE for
  size_t fallbacks = 0;      // requests handed to tcmalloc's own allocator (a failed map)
  size_t faulted_ahead = 0;  // regions handed out already faulted by the fault-ahead thread
  size_t ready = 0;          // regions faulted and waiting to be handed out
};

// Installs the allocator. kFailedPrecondition when the process's malloc is not tcmalloc (the
// sanitizer builds, which bring their own) or when already installed.
absl::Status BackHeapWithHugePages();

// Starts the installed allocator's fault-ahead thread, keeping `bytes` (rounded up to whole
// 2 MiB regions, at most HugePageRegions::kMaxReady of them) faulted ahead. That much memory
// is resident before it is used. kFailedPrecondition when the allocator is not installed or
// already faults ahead; kInvalidArgument for 0 bytes.
absl::Status FaultHeapAhead(size_t bytes);

HugePageStats HugePageHeapStats();

// Where the heap's regions come from: fresh mappings, and once FaultAhead is called, regions
// its thread mapped and faulted beforehand. Exposed for its test; a process has the one
// BackHeapWithHugePages installs.
class HugePageRegions {
 public:
  static constexpr size_t kHugePage = size_t{2} << 20;
  static constexpr size_t kMaxReady = 64;  // 128 MiB

  HugePageRegions() = default;
  // Stops the thread and unmaps the regions not handed out (those handed out are the caller's).
  ~HugePageRegions();
  HugePageRegions(const HugePageRegions&) = delete;
  HugePageRegions& operator=(const HugePageRegions&) = delete;

  // A region of at least `size` bytes, a multiple of 2 MiB starting on a 2 MiB boundary, advised
  // MADV_HUGEPAGE; *actual_size its size. A request of one region takes a faulted one when one
  // is ready (and wakes the thread to fault the next); larger ones are mapped fresh. 0 when the
  // mapping fails. Never allocates from the heap.
  uintptr_t Take(size_t size, size_t* actual_size);

  // Starts the thread that keeps `regions` (1..kMaxReady) faulted ahead.
  absl::Status FaultAhead(size_t regions);

  HugePageStats Stats() const;

 private:
  void FaultLoop();

  mutable std::mutex mu_;
  std::condition_variable wake_;  // the thread: a region was taken, or stop
  uintptr_t ready_[kMaxReady] ABSL_GUARDED_BY(mu_) = {};
  size_t ready_count_ ABSL_GUARDED_BY(mu_) = 0;
  size_t target_ ABSL_GUARDED_BY(mu_) = 0;  // 0: no fault-ahead
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  HugePageStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_COMMON_HUGE_PAGES_H_
