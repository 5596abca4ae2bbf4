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
// Thread-safety: call BackHeapWithHugePages once, early (first thing in main); HugePageStats
// may be called from any thread.
#ifndef PALISADE_SERVICES_COMMON_HUGE_PAGES_H_
#define PALISADE_SERVICES_COMMON_HUGE_PAGES_H_

#include <cstddef>

#include "absl/status/status.h"

namespace palisade {

// Installs the allocator. kFailedPrecondition when the process's malloc is not tcmalloc (the
// sanitizer builds, which bring their own) or when already installed.
absl::Status BackHeapWithHugePages();

struct HugePageStats {
  size_t regions = 0;           // regions mapped for tcmalloc
  size_t bytes = 0;             // their total size
  size_t advised = 0;           // regions the kernel took MADV_HUGEPAGE for
  size_t fallbacks = 0;         // requests handed to tcmalloc's own allocator (a failed map)
};
HugePageStats HugePageHeapStats();

}  // namespace palisade

#endif  // PALISADE_SERVICES_COMMON_HUGE_PAGES_H_
