#include "services/common/huge_pages.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace palisade {
namespace {

constexpr size_t kHuge = HugePageRegions::kHugePage;

// How many of the region's 4 KiB pages are resident (mincore), without touching any.
size_t ResidentPages(uintptr_t start, size_t size) {
  std::vector<unsigned char> in(size / 4096);
  if (mincore(reinterpret_cast<void*>(start), size, in.data()) != 0) return 0;
  size_t resident = 0;
  for (unsigned char c : in) resident += c & 1;
  return resident;
}

// Waits, without a deadline that a busy machine could miss, for `ready()` (bytes faulted
// ahead) to reach `bytes`, and asserts it did.
void AwaitReady(const std::function<size_t()>& ready, size_t bytes) {
  const absl::Time give_up = absl::Now() + absl::Minutes(2);
  while (ready() < bytes && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(ready(), bytes);
}
void AwaitReady(const HugePageRegions& regions, size_t bytes) {
  AwaitReady([&] { return regions.Stats().ready; }, bytes);
}

// Without fault-ahead, a region is handed out mapped, and nothing of it is resident
// until it is touched: the first touch pays the fault. With it, the memory after the cursor is
// resident before the taker touches a byte of it, whatever the size of the request, up to what
// the thread keeps ahead; past that, pages are faulted on touch as before.
TEST(HugePageRegionsTest, FaultAheadHandsOutMemoryAlreadyResident) {
  HugePageRegions regions;
  size_t actual = 0;
  const uintptr_t fresh = regions.Take(kHuge / 2, &actual);
  ASSERT_NE(fresh, 0u);
  EXPECT_EQ(actual, kHuge);
  EXPECT_EQ(fresh % kHuge, 0u);
  EXPECT_EQ(ResidentPages(fresh, kHuge), 0u);

  EXPECT_EQ(regions.FaultAhead(0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(regions.FaultAhead(HugePageRegions::kMaxAheadBytes + 1).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(regions.FaultAhead(2 * kHuge).ok());
  EXPECT_EQ(regions.FaultAhead(2 * kHuge).code(), absl::StatusCode::kFailedPrecondition);
  AwaitReady(regions, 2 * kHuge);
  const uintptr_t ahead = regions.Take(kHuge / 2, &actual);
  ASSERT_EQ(ahead, fresh + kHuge);  // in order from the range
  EXPECT_EQ(actual, kHuge);
  EXPECT_EQ(ResidentPages(ahead, kHuge), kHuge / 4096);
  EXPECT_EQ(regions.Stats().faulted_ahead, kHuge);

  // A request of two regions: both already faulted.
  AwaitReady(regions, 2 * kHuge);
  const uintptr_t two = regions.Take(2 * kHuge, &actual);
  EXPECT_EQ(actual, 2 * kHuge);
  EXPECT_EQ(ResidentPages(two, 2 * kHuge), 2 * kHuge / 4096);
  // Four: the first two faulted ahead, the rest on touch.
  AwaitReady(regions, 2 * kHuge);
  const uintptr_t four = regions.Take(4 * kHuge - 1, &actual);
  EXPECT_EQ(actual, 4 * kHuge);
  EXPECT_EQ(ResidentPages(four, 4 * kHuge), 2 * kHuge / 4096);
  HugePageStats stats = regions.Stats();
  EXPECT_EQ(stats.faulted_ahead, 5 * kHuge);
  EXPECT_EQ(stats.regions, 4u);
  EXPECT_EQ(stats.bytes, 8 * kHuge);
  EXPECT_EQ(stats.fault_ahead_failures, 0u);
  AwaitReady(regions, 2 * kHuge);
  munmap(reinterpret_cast<void*>(fresh), 8 * kHuge);
}

// Past its reserved range, each request is a mapping of its own.
TEST(HugePageRegionsTest, ARangeUsedUpGivesWayToMappingsOfTheirOwn) {
  HugePageRegions regions(4 * kHuge);
  size_t actual = 0;
  const uintptr_t first = regions.Take(3 * kHuge, &actual);
  ASSERT_NE(first, 0u);
  const uintptr_t second = regions.Take(2 * kHuge, &actual);
  ASSERT_NE(second, 0u);
  EXPECT_EQ(actual, 2 * kHuge);
  EXPECT_EQ(second % kHuge, 0u);
  EXPECT_NE(second, first + 3 * kHuge);  // not in the range's last region
  const uintptr_t third = regions.Take(kHuge, &actual);
  EXPECT_EQ(third, first + 3 * kHuge);  // which a request that fits still gets
  EXPECT_EQ(regions.Stats().bytes, 6 * kHuge);
  EXPECT_EQ(regions.Stats().regions, 3u);
  munmap(reinterpret_cast<void*>(first), 4 * kHuge);
  munmap(reinterpret_cast<void*>(second), 2 * kHuge);
}

#ifdef PALISADE_WITH_TCMALLOC
// The VmFlags line of the mapping that holds `p`, from /proc/self/smaps ("" when not found).
std::string VmFlagsOf(const void* p) {
  const uintptr_t at = reinterpret_cast<uintptr_t>(p);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    const std::vector<std::string> fields = absl::StrSplit(line, ' ');
    const std::vector<std::string> range = absl::StrSplit(fields[0], '-');
    if (range.size() == 2 && line.find(':') > fields[0].size()) {
      const uintptr_t lo = std::stoull(range[0], nullptr, 16);
      const uintptr_t hi = std::stoull(range[1], nullptr, 16);
      inside = at >= lo && at < hi;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line;
    }
  }
  return "";
}

// After BackHeapWithRegions, tcmalloc takes new memory from the allocator's regions (its
// counts grow by what was allocated, in whole 2 MiB regions). The regions are not advised
// MADV_HUGEPAGE: the mapping that holds a new block carries no VmFlags "hg", so the kernel backs
// it as its own policy says (transparent_hugepage/enabled), and no first touch waits for a whole
// 2 MiB page (docs/PERFORMANCE.md, "Twenty-first pass": on this VM an advised region's first
// touch ran at 0.11 GB/s, a 4 KiB page's at 2.5 GB/s).
TEST(HugePagesTest, TcmallocTakesItsMemoryFromRegionsTheKernelBacksByItsOwnPolicy) {
  ASSERT_TRUE(BackHeapWithRegions().ok());
  EXPECT_EQ(BackHeapWithRegions().code(), absl::StatusCode::kFailedPrecondition);
  // 64 MiB in 4 KiB blocks: far more than tcmalloc held before, so most of it is new memory.
  std::vector<std::unique_ptr<char[]>> blocks;
  for (int i = 0; i < 16384; ++i) {
    blocks.emplace_back(new char[4096]);
    blocks.back()[0] = 1;
  }
  const HugePageStats stats = RegionHeapStats();
  EXPECT_GE(stats.bytes, size_t{60} << 20);
  EXPECT_EQ(stats.bytes % (size_t{2} << 20), 0u);
  EXPECT_EQ(stats.fallbacks, 0u);
  EXPECT_GT(stats.regions, 0u);
  const std::string flags = VmFlagsOf(blocks.back().get());
  ASSERT_FALSE(flags.empty());
  EXPECT_THAT(flags, ::testing::Not(::testing::HasSubstr(" hg")));
}

// With the fault-ahead thread on, tcmalloc's new memory comes from regions faulted before it
// asked for them.
TEST(HugePagesTest, TcmallocTakesRegionsFaultedAhead) {
  const absl::Status installed = BackHeapWithRegions();  // the test above may have done it
  ASSERT_TRUE(installed.ok() || installed.code() == absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(FaultHeapAhead(0).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(FaultHeapAhead(8 << 20).ok());
  EXPECT_EQ(FaultHeapAhead(8 << 20).code(), absl::StatusCode::kFailedPrecondition);
  AwaitReady([] { return RegionHeapStats().ready; }, size_t{8} << 20);
  const HugePageStats before = RegionHeapStats();
  // Until tcmalloc has asked for four more regions (what it freed before is used first).
  std::vector<std::unique_ptr<char[]>> blocks;
  while (RegionHeapStats().regions < before.regions + 4 && blocks.size() < (1 << 18)) {
    blocks.emplace_back(new char[4096]);
  }
  ASSERT_GE(RegionHeapStats().regions, before.regions + 4);
  EXPECT_GT(RegionHeapStats().faulted_ahead, before.faulted_ahead);
  EXPECT_EQ(RegionHeapStats().fallbacks, 0u);
}
#else
TEST(HugePagesTest, ASanitizerBuildSaysItHasNone) {
  EXPECT_EQ(BackHeapWithRegions().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(FaultHeapAhead(8 << 20).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(RegionHeapStats().regions, 0u);
}
#endif

}  // namespace
}  // namespace palisade
