// The heap of a process whose malloc is tcmalloc (palisadectl's and palisaded's, see
// third_party:tcmalloc). BackHeapWithRegions gives tcmalloc a system allocator whose regions are
// 2 MiB aligned and whole multiples of 2 MiB, handed out in order from one reserved range of
// address space (HugePageRegions): the memory after the range's cursor is the memory tcmalloc
// asks for next.
//
// Huge pages. The regions are laid out so that the kernel can back them with transparent huge
// pages, but they are not advised MADV_HUGEPAGE: the kernel backs them as its own policy says
// (/sys/kernel/mm/transparent_hugepage/enabled: `always` gives them huge pages, `madvise` and
// `never` 4 KiB pages). An advised region's first touch waits for the kernel to find, compact or
// have its host back a whole 2 MiB page. On this VM that ran at 0.11 GB/s against 2.5 GB/s for
// 4 KiB pages whenever the host had taken freed memory back. A replay then took up to 1.7 times
// as long, and gRPC ingest's batch-ack p99 was 34-39 ms instead of 5 ms
// (docs/PERFORMANCE.md, "Twenty-first pass").
//
// FaultHeapAhead moves the first touch's cost, the kernel zeroing new pages, to a thread of its
// own, which keeps the memory tcmalloc will ask for next faulted before it asks. That is worth it
// only where a core is idle now and then (a replay on two threads), so the processes turn it on
// themselves.
//
// Thread-safety: call BackHeapWithRegions once, early (first thing in main), and FaultHeapAhead
// at most once after it; RegionHeapStats may be called from any thread. HugePageRegions is
// thread-safe; Take never allocates (tcmalloc calls it under its lock).
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
  size_t fallbacks = 0;             // requests handed to tcmalloc's own allocator (a failed map)
  size_t faulted_ahead = 0;         // bytes handed out already faulted by the fault-ahead thread
  size_t ready = 0;                 // bytes faulted and waiting to be handed out
  size_t fault_ahead_failures = 0;  // the kernel refused to populate (before Linux 5.14)
};

// Installs the allocator. kFailedPrecondition when the process's malloc is not tcmalloc (the
// sanitizer builds, which bring their own) or when already installed.
absl::Status BackHeapWithRegions();

// Starts the installed allocator's fault-ahead thread, keeping `bytes` (rounded up to 2 MiB, at
// most HugePageRegions::kMaxAheadBytes) faulted ahead of tcmalloc's requests. That much memory
// is resident before it is used. kFailedPrecondition when the allocator is not installed or
// already faults ahead; kInvalidArgument for 0 bytes or more than kMaxAheadBytes.
absl::Status FaultHeapAhead(size_t bytes);

HugePageStats RegionHeapStats();

// Where the heap's regions come from: a reserved range of address space (kReserveBytes,
// mapped on the first Take, not backed until touched), handed out in order from a cursor, so
// that the memory after the cursor is the memory tcmalloc asks for next. Once FaultAhead is
// called, a thread of its own keeps the range's next `bytes` after the cursor faulted in
// (MADV_POPULATE_WRITE), a request of any size then landing on pages already faulted. When the
// range is used up (or could not be reserved: a strict overcommit policy) each request is a
// fresh mapping, faulted by its first touch. Exposed for its test; a process has the one
// BackHeapWithRegions installs.
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

  // A region of at least `size` bytes, a multiple of 2 MiB starting on a 2 MiB boundary (not
  // advised: see the top of this file); *actual_size its size. 0 when no memory can be mapped.
  // Never allocates from the heap.
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
