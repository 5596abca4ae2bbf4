// What touching fresh memory costs, by page size: the figure behind services/common/huge_pages
// (docs/PERFORMANCE.md, "Thirteenth pass"). Each iteration maps 64 MiB of anonymous memory
// (2 MiB-aligned), optionally advises MADV_HUGEPAGE, writes one byte per 4 KiB page, and unmaps
// it; the time is per 4 KiB page. With 4 KiB pages that is one fault a page; with huge pages,
// where the kernel grants them (/sys/kernel/mm/transparent_hugepage/enabled: always or
// madvise), one fault per 2 MiB and the zeroing of 2 MiB.
//
//   bazel run -c opt //tests/bench:page_fault_bench
#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>

#include "benchmark/benchmark.h"

namespace {

constexpr size_t kBytes = size_t{64} << 20;
constexpr size_t kHuge = size_t{2} << 20;
constexpr size_t kPage = 4096;

void BM_FirstTouch(benchmark::State& state) {
  const bool huge = state.range(0) != 0;
  for (auto _ : state) {
    void* raw = mmap(nullptr, kBytes + kHuge, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
      state.SkipWithError("mmap failed");
      return;
    }
    const uintptr_t aligned = (reinterpret_cast<uintptr_t>(raw) + kHuge - 1) & ~(kHuge - 1);
    char* p = reinterpret_cast<char*>(aligned);
    if (huge && madvise(p, kBytes, MADV_HUGEPAGE) != 0) {
      munmap(raw, kBytes + kHuge);
      state.SkipWithError("madvise(MADV_HUGEPAGE) refused: no transparent huge pages");
      return;
    }
    for (size_t i = 0; i < kBytes; i += kPage) p[i] = 1;
    benchmark::DoNotOptimize(p);
    benchmark::ClobberMemory();
    state.PauseTiming();
    munmap(raw, kBytes + kHuge);
    state.ResumeTiming();
  }
  state.counters["per_4k_page"] = benchmark::Counter(
      static_cast<double>(state.iterations() * (kBytes / kPage)),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_FirstTouch)->Arg(0)->Arg(1)->ArgName("huge")->Unit(benchmark::kMillisecond);

}  // namespace
