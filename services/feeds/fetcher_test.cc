#include "services/feeds/fetcher.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace palisade {
namespace {

TEST(FetcherTest, RedactUrlDropsCredentialsAndQuery) {
  EXPECT_EQ(RedactUrl("https://user:s3cret@feeds.example/v2/list?key=abc#x"),
            "https://feeds.example/v2/list");
  EXPECT_EQ(RedactUrl("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
  EXPECT_EQ(RedactUrl("file:///var/lib/feeds/drop.txt"), "file:///var/lib/feeds/drop.txt");
  EXPECT_EQ(RedactUrl("no scheme"), "(url)");
}

TEST(FetcherTest, OtherSchemesAndDeadServersAreErrorsThatHideSecrets) {
  FetchRequest req;
  req.url = "ftp://user:pw@host/list";
  absl::StatusOr<FetchResult> r = Fetch(req);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), ::testing::Not(::testing::HasSubstr("pw")));
  // Port 1 on loopback: nothing listens there.
  req.url = "http://127.0.0.1:1/list?token=topsecret";
  req.timeout = absl::Seconds(5);
  r = Fetch(req);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(r.status().message()),
              ::testing::Not(::testing::HasSubstr("topsecret")));
  req.url = "file:///nonexistent/feed.txt";
  EXPECT_EQ(Fetch(req).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace palisade
