#include "services/formats/line_parser.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/status_matchers.h"

namespace palisade {
namespace {

using ::palisade::testing::IsOk;
using ::palisade::testing::StatusIs;
using ::palisade::v1::LogFormat;
using ::testing::HasSubstr;

absl::Time At(absl::string_view rfc3339) {
  absl::Time t;
  std::string err;
  EXPECT_TRUE(absl::ParseTime(absl::RFC3339_full, std::string(rfc3339), &t, &err)) << err;
  return t;
}

TEST(Syslog3164Test, SplitsHostProgramAndMessage) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine out;
  ASSERT_THAT(p.Parse("Mar  3 14:02:01 web-1 sshd[4211]: Failed password for root from "
                      "203.0.113.7 port 22 ssh2",
                      At("2026-06-01T00:00:00Z"), &out),
              IsOk());
  EXPECT_EQ(out.host, "web-1");
  EXPECT_EQ(out.program, "sshd");
  EXPECT_EQ(out.message, "Failed password for root from 203.0.113.7 port 22 ssh2");
  ASSERT_TRUE(out.time.has_value());
  EXPECT_EQ(*out.time, At("2026-03-03T14:02:01Z"));
}

TEST(Syslog3164Test, YearRollsBackAcrossNewYear) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine out;
  ASSERT_THAT(p.Parse("Dec 31 23:59:59 h cron: x", At("2026-01-01T00:00:05Z"), &out), IsOk());
  EXPECT_EQ(*out.time, At("2025-12-31T23:59:59Z"));
}

TEST(Syslog3164Test, AcceptsPriorityAndIsoTimestamps) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine out;
  ASSERT_THAT(p.Parse("<38>2026-03-03T14:02:01.250+01:00 h sshd: hello", absl::Now(), &out),
              IsOk());
  EXPECT_EQ(*out.time, At("2026-03-03T13:02:01.25Z"));
  EXPECT_EQ(out.program, "sshd");
  EXPECT_EQ(out.message, "hello");
}

TEST(Syslog3164Test, MessageWithoutTagIsWholeBody) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine out;
  ASSERT_THAT(p.Parse("Mar  3 14:02:01 h last message repeated 3 times", absl::Now(), &out),
              IsOk());
  EXPECT_EQ(out.program, "");
  EXPECT_EQ(out.message, "last message repeated 3 times");
}

TEST(Syslog3164Test, MalformedLinesNameTheProblem) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine out;
  EXPECT_THAT(p.Parse("hello world", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no timestamp")));
  EXPECT_THAT(p.Parse("Mar 33 14:02:01 h x: y", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad timestamp")));
  EXPECT_THAT(p.Parse("Mar  3 14:02:01", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("space after")));
  EXPECT_THAT(p.Parse("", absl::Now(), &out), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(Syslog5424Test, ParsesAllFields) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG5424);
  ParsedLine out;
  ASSERT_THAT(p.Parse("<34>1 2026-03-03T14:02:01.003Z web-1 sshd 4211 - "
                      "[meta x=\"a]\\\"b\"][o y=\"1\"] Invalid user admin from 2001:db8::7",
                      absl::Now(), &out),
              IsOk());
  EXPECT_EQ(out.host, "web-1");
  EXPECT_EQ(out.program, "sshd");
  EXPECT_EQ(out.message, "Invalid user admin from 2001:db8::7");
  EXPECT_EQ(*out.time, At("2026-03-03T14:02:01.003Z"));
}

TEST(Syslog5424Test, NilValues) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG5424);
  ParsedLine out;
  ASSERT_THAT(p.Parse("<34>1 - - - - - - msg", absl::Now(), &out), IsOk());
  EXPECT_FALSE(out.time.has_value());
  EXPECT_EQ(out.message, "msg");
  EXPECT_THAT(p.Parse("<34>2 - - - - - - msg", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("version")));
  EXPECT_THAT(p.Parse("<34>1 yesterday h a - - - msg", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad timestamp")));
}

TEST(CombinedTest, ParsesTimeWithOffset) {
  LineParser p(LogFormat::LOG_FORMAT_COMBINED);
  ParsedLine out;
  absl::string_view line =
      "198.51.100.4 - - [03/Mar/2026:14:02:01 -0700] \"GET /wp-login.php HTTP/1.1\" 404 153 "
      "\"-\" \"curl/8.0\"";
  ASSERT_THAT(p.Parse(line, absl::Now(), &out), IsOk());
  EXPECT_EQ(out.host, "198.51.100.4");
  EXPECT_EQ(out.message, line);
  EXPECT_EQ(*out.time, At("2026-03-03T21:02:01Z"));
}

TEST(CombinedTest, Malformed) {
  LineParser p(LogFormat::LOG_FORMAT_COMBINED);
  ParsedLine out;
  EXPECT_THAT(p.Parse("198.51.100.4 GET /", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no \"[time]\"")));
  EXPECT_THAT(p.Parse("1.2.3.4 - - [03/Foo/2026:14:02:01 -0700] \"GET / HTTP/1.1\" 200 1",
                      absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad time at column 14")));
  EXPECT_THAT(p.Parse("1.2.3.4 - - [03/Mar/2026:14:02:01 -0700] GET", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no quoted request")));
}

TEST(Rfc3339Test, RejectsImpossibleDates) {
  absl::Time t;
  EXPECT_EQ(ParseRfc3339Prefix("2026-02-31T00:00:00Z", &t), 0u);
  EXPECT_EQ(ParseRfc3339Prefix("2026-02-28T00:00:00Z rest", &t), 20u);
}

}  // namespace
}  // namespace palisade

namespace palisade {
namespace {

TEST(FormatNameTest, RoundTripsAndRejectsUnknown) {
  for (auto f : {palisade::v1::LOG_FORMAT_SYSLOG, palisade::v1::LOG_FORMAT_SYSLOG5424,
                 palisade::v1::LOG_FORMAT_COMBINED, palisade::v1::LOG_FORMAT_RAW}) {
    EXPECT_EQ(*ParseFormatName(FormatName(f)), f);
  }
  EXPECT_THAT(ParseFormatName("apache"),
              palisade::testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                          ::testing::HasSubstr("unknown format \"apache\"")));
}

}  // namespace
}  // namespace palisade
