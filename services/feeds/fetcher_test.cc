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
  EXPECT_EQ(RedactUrl("https://feeds.example?key=abc"), "https://feeds.example");
}

// A password with '/', '?' or '#' left unencoded (a config mistake, but the secret is the
// operator's): the authority was cut at that character, so no '@' was found and the user and
// (part of) the password were shown, in logs, errors and Feeds.List (read role).
TEST(FetcherTest, RedactUrlDropsCredentialsHoldingDelimiters) {
  for (const char* url : {"https://feeduser:Zq7/Wx4@feeds.example/v2/list",
                          "https://feeduser:Zq7?Wx4@feeds.example/v2/list?key=abc",
                          "https://feeduser:Zq7#Wx4@feeds.example/v2/list"}) {
    const std::string shown = RedactUrl(url);
    EXPECT_THAT(shown, ::testing::Not(::testing::HasSubstr("feeduser"))) << url;
    EXPECT_THAT(shown, ::testing::Not(::testing::HasSubstr("Zq7"))) << url;
    EXPECT_THAT(shown, ::testing::Not(::testing::HasSubstr("Wx4"))) << url;
    EXPECT_EQ(shown, "https://(address not shown: it holds '@')") << url;
  }
}

// An https feed redirected to http would hand its content (and any credentials a redirected
// URL carries) to whoever sits on the path, and let them write the feed: from https:// a
// redirect may only go to https.
TEST(FetcherTest, AnHttpsFeedIsRedirectedOnlyToHttps) {
  EXPECT_STREQ(RedirectProtocols("https://feeds.example/drop.txt"), "https");
  EXPECT_STREQ(RedirectProtocols("https://user:pw@feeds.example/x?key=1"), "https");
  EXPECT_STREQ(RedirectProtocols("http://feeds.example/drop.txt"), "http,https");
  EXPECT_STREQ(RedirectProtocols("file:///var/lib/feeds/drop.txt"), "http,https");
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
