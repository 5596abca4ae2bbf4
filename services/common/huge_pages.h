// Huge pages for the heap of a process whose malloc is tcmalloc (palisadectl's, see
// third_party:tcmalloc). Each page a process touches for the first time costs a fault; on a
// virtual machine a 4 KiB fault measured ~10 us here (docs/PERFORMANCE.md, "Thirteenth pass"),
// and a replay that grows its windows, sessions and decisions to ~85 MiB spent ~0.15 s of its
// 1 s in them. BackHeapWithHugePages gives tcmalloc a system allocator whose regions are 2 MiB
// aligned and advised MADV_HUGEPAGE (taken in order from one reserved range: HugePageRegions),
// so that the kernel backs them with transparent huge pages (one fault per 2 MiB) where it
// allows them (`enabled` = always or madvise); where it does not, the regions are ordinary
// memory and nothing else changes. Memory tcmalloc releases is released as before (madvise on
// its spans).
//
// Even a huge page's fault is the kernel zeroing 2 MiB, and on this VM the host backing it: 0.1
// to several ms each, on the thread that first touches it (docs/PERFORMANCE.md, "Nineteenth
// pass"). FaultHeapAhead moves that work to a thread of its own, which keeps the memory tcmalloc
// will ask for next faulted before it asks: worth it only where a core is idle now and then (a
// replay on two threads), so the processes turn it on themselves.
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
  size_t regions = 0;               // requests served (a region each)
  size_t bytes = 0;                 // their total size
  size_t advised = 0;               // of them, in memory the kernel took MADV_HUGEPAGE for
  size_t fallbacks = 0;             // requests handed to tcmalloc's own allocator (a failed map)
  size_t faulted_ahead = 0;         // bytes handed out already faulted by the fault-ahead thread
  size_t ready = 0;                 // bytes faulted and waiting to be handed out
  size_t fault_ahead_failures = 0;  // the kernel refused to populate (before Linux 5.14)
};

// Installs the allocator. kFailedPrecondition when the process's malloc is not tcmalloc (the
// sanitizer builds, which bring their own) or when already installed.
absl::Status BackHeapWithHugePages();

// Starts the installed allocator's fault-ahead thread, keeping `bytes` (rounded up to 2 MiB, at
// most HugePageRegions::kMaxAheadBytes) faulted ahead of tcmalloc's requests. That much memory
// is resident before it is used. kFailedPrecondition when the allocator is not installed or
// already faults ahead; kInvalidArgument for 0 bytes or more than kMaxAheadBytes.
absl::Status FaultHeapAhead(size_t bytes);

HugePageStats HugePageHeapStats();

// Where the heap's regions come from: a reserved range of address space (kReserveBytes,
// mapped on the first Take, not backed until touched), handed out in order from a cursor, so
// that the memory after the cursor is the memory tcmalloc asks for next. Once FaultAhead is
// called, a thread of its own keeps the range's next `bytes` after the cursor faulted in
// (MADV_POPULATE_WRITE), a request of any size then landing on pages already faulted. When the
// range is used up (or could not be reserved: a strict overcommit policy) each request is a
// fresh mapping, faulted by its first touch. Exposed for its test; a process has the one
// BackHeapWithHugePages installs.
class HugePageRegions {
 public:
  static constexpr size_t kHugePage = size_t{2} << 20;
  static constexpr size_t kReserveBytes = size_t{16} << 30;
  static constexpr size_t kMaxAheadBytes = size_t{128} << 20;

  explicit HugePageRegions(size_t reserve_bytes = kReserveBytes);
  // Stops the thread and unmaps what was not handed out (what was is the caller's).
  ~HugePageRegions();
  HugePageRegions(const HugePageRegions&) = delete;
  HugePageRegions& operator=(const HugePageRegions&) = delete;

  // A region of at least `size` bytes, a multiple of 2 MiB starting on a 2 MiB boundary, advised
  // MADV_HUGEPAGE; *actual_size its size. 0 when no memory can be mapped. Never allocates from
  // the heap.
  uintptr_t Take(size_t size, size_t* actual_size);

  // Starts the thread that keeps `bytes` (rounded up to 2 MiB, at most kMaxAheadBytes) after
  // the cursor faulted. kInvalidArgument for 0 or more than kMaxAheadBytes;
  // kFailedPrecondition when already started.
  absl::Status FaultAhead(size_t bytes);

  HugePageStats Stats() const;

 private:
  // Reserves the range; false when it cannot.
  bool ReserveLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FaultLoop();

  const size_t reserve_bytes_;
  mutable std::mutex mu_;
  std::condition_variable wake_;  // the thread: the cursor moved, or stop
  bool tried_reserve_ ABSL_GUARDED_BY(mu_) = false;
  bool reserved_advised_ ABSL_GUARDED_BY(mu_) = false;  // the kernel took MADV_HUGEPAGE
  uintptr_t end_ ABSL_GUARDED_BY(mu_) = 0;      // what is left of the range: [cursor_, end_)
  uintptr_t cursor_ ABSL_GUARDED_BY(mu_) = 0;   // next region handed out starts here
  uintptr_t faulted_ ABSL_GUARDED_BY(mu_) = 0;  // [cursor_, faulted_) is faulted in
  size_t ahead_ ABSL_GUARDED_BY(mu_) = 0;       // 0: no fault-ahead
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  HugePageStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_COMMON_HUGE_PAGES_H_
