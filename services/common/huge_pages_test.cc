#include "services/common/huge_pages.h"

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace palisade {
namespace {

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

// After BackHeapWithHugePages, tcmalloc takes new memory from the allocator's regions (its
// counts grow by what was allocated), and the kernel was asked for huge pages on them: the
// mapping that holds a new block carries VmFlags "hg", which memory from before does not.
TEST(HugePagesTest, TcmallocTakesItsMemoryFromAdvisedRegions) {
  std::unique_ptr<char[]> before(new char[4096]);
  ASSERT_TRUE(BackHeapWithHugePages().ok());
  EXPECT_EQ(BackHeapWithHugePages().code(), absl::StatusCode::kFailedPrecondition);
  // 64 MiB in 4 KiB blocks: far more than tcmalloc held before, so most of it is new memory.
  std::vector<std::unique_ptr<char[]>> blocks;
  for (int i = 0; i < 16384; ++i) {
    blocks.emplace_back(new char[4096]);
    blocks.back()[0] = 1;
  }
  const HugePageStats stats = HugePageHeapStats();
  EXPECT_GE(stats.bytes, size_t{60} << 20);
  EXPECT_EQ(stats.bytes % (size_t{2} << 20), 0u);
  EXPECT_EQ(stats.fallbacks, 0u);
  EXPECT_GT(stats.regions, 0u);
  // A kernel built without transparent huge pages refuses the advice (then `advised` is 0 and
  // the regions are ordinary memory); this one takes it.
  if (stats.advised > 0) {
    EXPECT_EQ(stats.advised, stats.regions);
    EXPECT_THAT(VmFlagsOf(blocks.back().get()), ::testing::HasSubstr(" hg"));
    const std::string old_flags = VmFlagsOf(before.get());
    ASSERT_FALSE(old_flags.empty());
    EXPECT_THAT(old_flags, ::testing::Not(::testing::HasSubstr(" hg")));
  }
}
#else
TEST(HugePagesTest, ASanitizerBuildSaysItHasNone) {
  EXPECT_EQ(BackHeapWithHugePages().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(HugePageHeapStats().regions, 0u);
}
#endif

}  // namespace
}  // namespace palisade
