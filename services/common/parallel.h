// ParallelFor: one loop's iterations on a few threads, for work that is split in independent
// pieces up front (compiling each rule of a pack, each RE2::Set). Not a pool: the threads live
// for one call. Thread-safe in the sense that matters here: `body` runs concurrently for
// different indices and must only touch what belongs to its index.
#ifndef PALISADE_SERVICES_COMMON_PARALLEL_H_
#define PALISADE_SERVICES_COMMON_PARALLEL_H_

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"

namespace palisade {

// Runs body(i) for every i in [0, n), on `threads` threads at most (the caller's one of them),
// each taking the next index not yet taken; returns when every call has returned. threads <= 1
// (or n <= 1): in order, on the caller's thread. `body` must not throw.
inline void ParallelFor(size_t n, int threads, absl::FunctionRef<void(size_t)> body) {
  const size_t workers = std::min(n, static_cast<size_t>(std::max(threads, 1)));
  if (workers <= 1) {
    for (size_t i = 0; i < n; ++i) body(i);
    return;
  }
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) body(i);
  };
  std::vector<std::thread> others;
  others.reserve(workers - 1);
  for (size_t w = 1; w < workers; ++w) others.emplace_back(work);
  work();
  for (std::thread& t : others) t.join();
}

}  // namespace palisade

#endif  // PALISADE_SERVICES_COMMON_PARALLEL_H_
