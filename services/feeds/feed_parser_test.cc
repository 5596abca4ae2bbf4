#include "services/feeds/feed_parser.h"

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/status_matchers.h"

namespace palisade {
namespace {

using palisade::v1::FeedFormat;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::IsOk;
using testing::IsOkAndHolds;
using testing::StatusIs;

std::string ReadTestdata(const std::string& name) {
  std::ifstream in("services/feeds/testdata/" + name, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> Cidrs(const ParsedFeed& feed) {
  std::vector<std::string> out;
  for (const Indicator& i : feed.indicators) out.push_back(i.cidr.ToString());
  return out;
}

ParsedFeed MustParse(FeedFormat format, const std::string& content,
                     FeedParseOptions options = {}) {
  absl::StatusOr<ParsedFeed> parsed = ParseFeed(format, content, options);
  EXPECT_THAT(parsed.status(), IsOk());
  return parsed.ok() ? *std::move(parsed) : ParsedFeed{};
}

TEST(FeedParserTest, PlainListWithCommentsAndBothFamilies) {
  ParsedFeed feed = MustParse(palisade::v1::FEED_FORMAT_PLAIN,
                              "# a list\n"
                              "; also a comment\n"
                              "\n"
                              "203.0.113.7\r\n"
                              "198.51.100.0/24   # a range\n"
                              "2001:db8::/32\n"
                              "2001:db8::1\tnoted by hand\n"
                              "300.1.1.1\n"
                              "10.0.0.1/8\n");
  EXPECT_THAT(Cidrs(feed), ElementsAre("203.0.113.7/32", "198.51.100.0/24", "2001:db8::/32",
                                       "2001:db8::1/128"));
  ASSERT_EQ(feed.rejected, 2u);
  EXPECT_EQ(feed.rejections[0].line, 8u);
  EXPECT_EQ(feed.rejections[0].text, "300.1.1.1");
  EXPECT_THAT(feed.rejections[0].reason, HasSubstr("not an IP address"));
  EXPECT_EQ(feed.rejections[1].line, 9u);
  EXPECT_THAT(feed.rejections[1].reason, HasSubstr("host bits are set; did you mean 10.0.0.0/8"));
}

TEST(FeedParserTest, SpamhausDropText) {
  ParsedFeed feed = MustParse(palisade::v1::FEED_FORMAT_SPAMHAUS, ReadTestdata("drop.txt"));
  EXPECT_THAT(Cidrs(feed), ElementsAre("1.10.16.0/20", "1.19.0.0/16", "1.32.128.0/18",
                                       "2.56.192.0/22", "5.134.128.0/19"));
  EXPECT_EQ(feed.indicators[0].ref, "SBL256894");
  ASSERT_EQ(feed.rejected, 2u);
  EXPECT_EQ(feed.rejections[0].line, 10u);
  EXPECT_EQ(feed.rejections[1].line, 11u);
}

TEST(FeedParserTest, SpamhausJsonLines) {
  ParsedFeed feed =
      MustParse(palisade::v1::FEED_FORMAT_SPAMHAUS_JSON, ReadTestdata("drop_v4.json"));
  EXPECT_THAT(Cidrs(feed), ElementsAre("1.10.16.0/20", "1.19.0.0/16", "2a06:e480::/29"));
  EXPECT_EQ(feed.indicators[2].ref, "SBL301771");
  EXPECT_EQ(feed.ignored, 1u);  // the metadata line
  ASSERT_EQ(feed.rejected, 2u);
  EXPECT_EQ(feed.rejections[0].line, 4u);
  EXPECT_THAT(feed.rejections[0].reason, HasSubstr("no \"cidr\""));
  EXPECT_EQ(feed.rejections[1].line, 5u);
  EXPECT_THAT(feed.rejections[1].reason, HasSubstr("not a JSON object"));
}

TEST(FeedParserTest, SpamhausJsonWithOddTypesDoesNotThrow) {
  // Found by the fuzzer: a non-string "type" made nlohmann-json throw out of the parser.
  ParsedFeed feed = MustParse(palisade::v1::FEED_FORMAT_SPAMHAUS_JSON,
                              "{\"type\": 1, \"cidr\": \"198.51.100.0/24\"}\n"
                              "{\"type\": \"metadata\"}\n"
                              "{\"cidr\": 7, \"sblid\": [1]}\n");
  EXPECT_THAT(Cidrs(feed), ElementsAre("198.51.100.0/24"));
  EXPECT_EQ(feed.ignored, 1u);
  EXPECT_EQ(feed.rejected, 1u);
}

TEST(FeedParserTest, FireholNetset) {
  ParsedFeed feed =
      MustParse(palisade::v1::FEED_FORMAT_FIREHOL, ReadTestdata("firehol_level1.netset"));
  EXPECT_THAT(Cidrs(feed), ElementsAre("1.10.16.0/20", "1.19.0.0/16", "5.188.10.0/23",
                                       "23.94.0.0/15", "185.220.101.7/32"));
  ASSERT_EQ(feed.rejected, 1u);
  EXPECT_EQ(feed.rejections[0].line, 16u);
}

TEST(FeedParserTest, CsvWithConfidenceColumnAndMinimum) {
  FeedParseOptions options;
  options.csv_column = "ipAddress";
  options.csv_confidence_column = "abuseConfidenceScore";
  options.min_confidence = 50;
  ParsedFeed feed = MustParse(palisade::v1::FEED_FORMAT_CSV, ReadTestdata("abuseipdb.csv"), options);
  EXPECT_THAT(Cidrs(feed),
              ElementsAre("185.220.101.7/32", "45.155.205.233/32", "2001:db8:dead::1/128"));
  EXPECT_EQ(feed.indicators[1].confidence, 87u);
  ASSERT_EQ(feed.rejected, 3u);
  EXPECT_EQ(feed.rejections[0].line, 5u);
  EXPECT_THAT(feed.rejections[0].reason, HasSubstr("below the minimum 50"));
  EXPECT_EQ(feed.rejections[1].line, 6u);
  EXPECT_THAT(feed.rejections[1].reason, HasSubstr("not an IP address"));
  EXPECT_EQ(feed.rejections[2].line, 7u);
  EXPECT_THAT(feed.rejections[2].reason, HasSubstr("unterminated quoted field"));
}

// "nan" reads as a number; every comparison with it is false, so it passed the 0..100 check
// and the minimum, and its conversion to an integer was undefined. It is not a score.
TEST(FeedParserTest, CsvConfidenceThatIsNotANumberIsRejected) {
  FeedParseOptions options;
  options.csv_confidence_column = "score";
  options.min_confidence = 50;
  ParsedFeed feed = MustParse(palisade::v1::FEED_FORMAT_CSV,
                              "ip,score\n198.51.100.1,nan\n198.51.100.2,-nan\n198.51.100.3,90\n",
                              options);
  EXPECT_THAT(Cidrs(feed), ElementsAre("198.51.100.3/32"));
  ASSERT_EQ(feed.rejected, 2u);
  EXPECT_THAT(feed.rejections[0].reason, HasSubstr("not a number in 0..100"));
}

TEST(FeedParserTest, CsvWithoutTheColumnIsRefusedWhole) {
  FeedParseOptions options;
  options.csv_column = "address";
  EXPECT_THAT(ParseFeed(palisade::v1::FEED_FORMAT_CSV, ReadTestdata("abuseipdb.csv"), options)
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("no column \"address\" (columns: ipAddress, countryCode")));
  EXPECT_THAT(ParseFeed(palisade::v1::FEED_FORMAT_CSV, "", options).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no header")));
}

TEST(FeedParserTest, StixBundle) {
  FeedParseOptions options;
  options.now = absl::FromUnixSeconds(1795000000);  // 2026-11-18
  ParsedFeed feed = MustParse(palisade::v1::FEED_FORMAT_STIX, ReadTestdata("bundle.json"), options);
  EXPECT_THAT(Cidrs(feed),
              ElementsAre("198.51.100.23/32", "203.0.113.0/24", "2001:db8:bad::/48"));
  const Indicator& first = feed.indicators[0];
  EXPECT_EQ(first.confidence, 85u);
  EXPECT_EQ(first.valid_until, 1798761600);  // 2027-01-01
  EXPECT_EQ(first.ref,
            "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f (malicious-activity, bruteforce)");
  // identity, malware, the domain indicator and the snort one.
  EXPECT_EQ(feed.ignored, 4u);
  ASSERT_EQ(feed.rejected, 2u);
  EXPECT_EQ(feed.rejections[0].line, 4u);
  EXPECT_THAT(feed.rejections[0].reason, HasSubstr("other operators or observables"));
  EXPECT_EQ(feed.rejections[1].line, 5u);
  EXPECT_THAT(feed.rejections[1].reason, HasSubstr("expired"));
}

TEST(FeedParserTest, StixThatIsNotABundleIsRefusedWhole) {
  EXPECT_THAT(ParseFeed(palisade::v1::FEED_FORMAT_STIX, "{\"type\": \"bund", {}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not JSON")));
  EXPECT_THAT(ParseFeed(palisade::v1::FEED_FORMAT_STIX, "[1, 2]", {}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a bundle")));
  EXPECT_THAT(
      ParseFeed(palisade::v1::FEED_FORMAT_STIX, R"({"type":"bundle","objects":{}})", {}).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an array")));
}

TEST(FeedParserTest, HugeInputKeepsGoingAndCapsWhatItQuotes) {
  std::string content;
  for (int i = 0; i < 200000; ++i) {
    absl::StrAppend(&content, 10 + i / 65536, ".", (i / 256) % 256, ".", i % 256, ".1\n");
  }
  content += std::string(1 << 20, 'x') + "\n";  // one 1 MiB line
  for (int i = 0; i < 2000; ++i) content += "garbage\n";
  ParsedFeed feed = MustParse(palisade::v1::FEED_FORMAT_PLAIN, content);
  EXPECT_EQ(feed.indicators.size(), 200000u);
  EXPECT_EQ(feed.rejected, 2001u);
  EXPECT_EQ(feed.rejections.size(), ParsedFeed::kMaxRejections);
  EXPECT_THAT(feed.rejections[0].reason, HasSubstr("longer than 4096"));
  EXPECT_EQ(feed.rejections[0].text.size(), 200u);
}

// A hostile STIX bundle: one indicator with 64 KiB of labels ORs 1,000 addresses. Each address
// copied the whole reference (id and labels), so the parse held 64 MB for 100 KB of content; a
// reference is cut, so what a parse keeps grows with its input, not with its square.
TEST(FeedParserTest, StixReferencesAreBoundedWhateverTheLabels) {
  std::string labels;
  for (int i = 0; i < 64; ++i) {
    absl::StrAppend(&labels, i ? "," : "", "\"", std::string(1024, 'l'), "\"");
  }
  std::string pattern;
  for (int i = 0; i < 1000; ++i) {
    absl::StrAppend(&pattern, i ? " OR " : "", "ipv4-addr:value = '198.51.", i / 250, ".", i % 250,
                    "'");
  }
  const std::string content = absl::StrCat(
      R"({"type":"bundle","objects":[{"type":"indicator","id":"indicator--1","labels":[)", labels,
      R"(],"pattern_type":"stix","pattern":"[)", pattern, R"(]"}]})");
  ParsedFeed feed = MustParse(palisade::v1::FEED_FORMAT_STIX, content);
  ASSERT_EQ(feed.indicators.size(), 1000u);
  size_t ref_bytes = 0;
  for (const Indicator& i : feed.indicators) ref_bytes += i.ref.size();
  EXPECT_LE(ref_bytes, 8 * content.size()) << "references: " << ref_bytes << " bytes";
  EXPECT_TRUE(absl::StartsWith(feed.indicators[0].ref, "indicator--1 (llll"));
}

bool Utf8WithoutControlBytes(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) return false;
    int n = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xe ? 2 : (c >> 3) == 0x1e ? 3 : -1;
    if (n < 0) return false;
    for (int k = 1; k <= n; ++k) {
      if (i + k >= s.size() || (static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    }
    i += static_cast<size_t>(n) + 1;
  }
  return true;
}

// What a feed server writes reaches proto3 string fields (the stored version, decision reasons,
// Feeds.Push replies: a string that is not UTF-8 makes the whole message unreadable, the stored
// copy included, and palisaded refused to start on it), logs and terminals. References and
// quoted lines are valid UTF-8 with control bytes escaped.
TEST(FeedParserTest, ReferencesAndQuotedTextAreUtf8WithoutControlBytes) {
  ParsedFeed feed = MustParse(palisade::v1::FEED_FORMAT_SPAMHAUS,
                              "198.51.100.0/24 ; SBL1\xff\x1b[2J\xc3\xa9\n"
                              "nonsense\xfe\r\x1b]0;owned\x07\n");
  ASSERT_EQ(feed.indicators.size(), 1u);
  EXPECT_TRUE(Utf8WithoutControlBytes(feed.indicators[0].ref)) << feed.indicators[0].ref;
  EXPECT_TRUE(absl::StartsWith(feed.indicators[0].ref, "SBL1"));
  EXPECT_TRUE(absl::EndsWith(feed.indicators[0].ref, "\xc3\xa9"));  // real UTF-8 stays
  ASSERT_EQ(feed.rejections.size(), 1u);
  EXPECT_EQ(feed.rejections[0].line, 2u);
  EXPECT_TRUE(Utf8WithoutControlBytes(feed.rejections[0].text)) << feed.rejections[0].text;
  EXPECT_TRUE(Utf8WithoutControlBytes(feed.rejections[0].reason)) << feed.rejections[0].reason;
  FeedParseOptions options;
  options.csv_column = "ip";
  absl::Status header =
      ParseFeed(palisade::v1::FEED_FORMAT_CSV, "addr\xff,\x1b[31mscore\n", options).status();
  EXPECT_THAT(header, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no column \"ip\"")));
  EXPECT_TRUE(Utf8WithoutControlBytes(std::string(header.message()))) << header.message();
}

// The JSON library quotes the bytes it stopped at, raw: a STIX error holding a byte that is not
// UTF-8 became the feed's last_error (FeedInfo, a proto3 string) and made Feeds.List unreadable.
TEST(FeedParserTest, StixErrorsAreUtf8WithoutControlBytes) {
  absl::Status bad = ParseFeed(palisade::v1::FEED_FORMAT_STIX,
                               "{\"type\":\"bundle\",\"objects\":[\xff\xfe\x1b[2J]}", {})
                         .status();
  EXPECT_THAT(bad, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not JSON")));
  EXPECT_TRUE(Utf8WithoutControlBytes(std::string(bad.message()))) << bad.message();
  FeedParseOptions options;
  options.now = absl::FromUnixSeconds(1795000000);
  ParsedFeed feed = MustParse(palisade::v1::FEED_FORMAT_STIX,
                              R"({"type":"bundle","objects":[{"type":"indicator","id":"i--1",)"
                              R"("pattern":"[ipv4-addr:value = '198.51.100.1']",)"
                              R"("valid_until":"2027-01-01T00:00:00Z\u001b[2J"}]})",
                              options);
  ASSERT_EQ(feed.rejections.size(), 1u);
  EXPECT_TRUE(Utf8WithoutControlBytes(feed.rejections[0].reason)) << feed.rejections[0].reason;
}

TEST(FeedParserTest, FormatNames) {
  EXPECT_THAT(ParseFeedFormatName("spamhaus-json"),
              IsOkAndHolds(palisade::v1::FEED_FORMAT_SPAMHAUS_JSON));
  EXPECT_THAT(ParseFeedFormatName("FEED_FORMAT_STIX"), IsOkAndHolds(palisade::v1::FEED_FORMAT_STIX));
  EXPECT_THAT(ParseFeedFormatName("xml").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown feed format")));
}

}  // namespace
}  // namespace palisade
