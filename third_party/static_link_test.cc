// Abseil, Protobuf, gRPC and RE2 are linked from their static archives (third_party/BUILD.bazel):
// a binary that uses them maps none of their shared libraries. Loading them again would cost
// palisadectl ~10 ms of start-up and ~5 % of a one-pack replay (docs/PERFORMANCE.md,
// "Twenty-fifth pass"). The test reads its own /proc/self/maps: it uses one symbol of each.
#include <fstream>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/stubs/common.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "re2/re2.h"

namespace {

TEST(StaticLinkTest, NoSharedAbseilProtobufGrpcOrRe2IsMapped) {
  // One call into each, so that each is linked in whichever way the linkopts say.
  EXPECT_EQ(absl::StrCat("a", 1), "a1");
  EXPECT_FALSE(google::protobuf::internal::VersionString(3021012).empty());
  EXPECT_FALSE(grpc::Version().empty());
  EXPECT_TRUE(RE2::FullMatch("abc", "a.c"));

  std::ifstream maps("/proc/self/maps");
  ASSERT_TRUE(maps.good());
  std::set<std::string> shared;  // each file once, not once per mapped segment
  for (std::string line; std::getline(maps, line);) {
    for (const char* name : {"libabsl_", "libprotobuf.so", "libgrpc", "libgpr.so", "libupb.so",
                             "libre2.so"}) {
      if (line.find(name) != std::string::npos) shared.insert(line.substr(line.rfind(' ') + 1));
    }
  }
  EXPECT_TRUE(shared.empty()) << "mapped: " << absl::StrJoin(shared, ", ");
}

}  // namespace
