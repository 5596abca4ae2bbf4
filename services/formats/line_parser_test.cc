#include "services/formats/line_parser.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "services/common/status_matchers.h"

namespace palisade {
namespace {

using ::palisade::testing::IsOk;
using ::palisade::testing::IsOkAndHolds;
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
  EXPECT_EQ(out.pid, "4211");
  EXPECT_EQ(out.message, "Failed password for root from 203.0.113.7 port 22 ssh2");
  ASSERT_TRUE(out.time.has_value());
  EXPECT_EQ(*out.time, At("2026-03-03T14:02:01Z"));
}

TEST(Syslog3164Test, ALineWithoutAHostStartsWithItsTag) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine out;
  ASSERT_THAT(p.Parse("Nov 23 21:50:37 sshd[8148]: Invalid user admin from 203.0.113.7 port 22",
                      At("2026-12-01T00:00:00Z"), &out),
              IsOk());
  EXPECT_EQ(out.host, "");
  EXPECT_EQ(out.program, "sshd");
  EXPECT_EQ(out.pid, "8148");
  EXPECT_EQ(out.message, "Invalid user admin from 203.0.113.7 port 22");
  ASSERT_THAT(p.Parse("Nov 23 21:50:37 sshd: Connection closed", At("2026-12-01T00:00:00Z"), &out),
              IsOk());
  EXPECT_EQ(out.program, "sshd");
  EXPECT_EQ(out.message, "Connection closed");
}

// fail2ban's common.conf reads a tag in brackets ("[sshd]: ", "[sshd] "), as some loggers write
// it; its test logs hold both. A pid with no colon after it ("proftpd[12345] ") is no tag: the
// message is the whole body (rules/proftpd.textproto's file rule reads such lines whole).
TEST(Syslog3164Test, BracketedTagsButNoPidWithoutAColon) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine out;
  for (const char* line : {"Mar  3 00:17:22 [sshd]: User root from 203.0.113.7 not allowed",
                           "Jun 25 23:53:34 [sshd] User root from 203.0.113.7 not allowed"}) {
    ASSERT_THAT(p.Parse(line, At("2026-12-01T00:00:00Z"), &out), IsOk()) << line;
    EXPECT_EQ(out.host, "") << line;
    EXPECT_EQ(out.program, "sshd") << line;
    EXPECT_EQ(out.pid, "") << line;
    EXPECT_EQ(out.message, "User root from 203.0.113.7 not allowed") << line;
  }
  ASSERT_THAT(p.Parse("Jan 10 00:00:00 myhost proftpd[12345] myhost.example.com (x[203.0.113.7]): "
                      "USER u: no such user found",
                      At("2026-12-01T00:00:00Z"), &out),
              IsOk());
  EXPECT_EQ(out.host, "myhost");
  EXPECT_EQ(out.program, "");
  EXPECT_EQ(out.message,
            "proftpd[12345] myhost.example.com (x[203.0.113.7]): USER u: no such user found");
  // Not tags: a bracket holding a blank or starting with a digit, a pid that is not a number
  // without its colon; the message is the whole body then.
  for (const char* body : {"[ID 800047 auth.info] x", "[12345.678] x", "prog[a1] x"}) {
    // The parsed line's views point into the line: it must outlive `out`'s reads.
    const std::string line = absl::StrCat("Jan 10 00:00:00 h ", body);
    ASSERT_THAT(p.Parse(line, At("2026-12-01T00:00:00Z"), &out), IsOk());
    EXPECT_EQ(out.program, "") << body;
    EXPECT_EQ(out.message, body);
  }
}

// macOS's syslog writes the year after the day ("Oct 27 2015 12:35:40"), as fail2ban's
// screensharingd test log has it: the year is the line's, not inferred.
TEST(Syslog3164Test, AYearAfterTheDayIsTheLines) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine out;
  ASSERT_THAT(p.Parse("Oct 27 2015 12:35:40 test1.example.net screensharingd[1170]: "
                      "Authentication: FAILED",
                      At("2026-12-01T00:00:00Z"), &out),
              IsOk());
  ASSERT_TRUE(out.time.has_value());
  EXPECT_EQ(*out.time, At("2015-10-27T12:35:40Z"));
  EXPECT_FALSE(out.year_inferred);
  EXPECT_EQ(out.host, "test1.example.net");
  EXPECT_EQ(out.program, "screensharingd");
  EXPECT_EQ(out.message, "Authentication: FAILED");
  EXPECT_THAT(p.Parse("Feb 30 2015 12:35:40 h x: y", At("2026-12-01T00:00:00Z"), &out),
              StatusIs(absl::StatusCode::kOutOfRange));
}

// A yearless time needs a finite reference to take its year from; a line that writes its year
// needs none. (An infinite reference once overflowed the year arithmetic: UBSan in the ASan run.)
TEST(Syslog3164Test, AnInfiniteReferenceGivesNoYear) {
  for (const absl::Time reference : {absl::InfiniteFuture(), absl::InfinitePast()}) {
    for (const YearRule rule : {YearRule::kAtMostADayAhead, YearRule::kNearest}) {
      LineParser p(LogFormat::LOG_FORMAT_SYSLOG);
      ParsedLine out;
      EXPECT_THAT(p.Parse("Mar  3 14:02:01 h sshd[1]: x", reference, &out, rule),
                  StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("reference time")));
      ASSERT_THAT(p.Parse("Oct 27 2015 12:35:40 h x: y", reference, &out, rule), IsOk());
      EXPECT_EQ(*out.time, At("2015-10-27T12:35:40Z"));
    }
  }
}

// Blanks where the host would be ("Mar 11 22:52:12   lighttpd[53690]: ", fail2ban's suhosin
// test log): no host, the tag after them.
TEST(Syslog3164Test, BlanksBeforeTheTagAndNoHost) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine out;
  ASSERT_THAT(p.Parse("Mar 11 22:52:12   lighttpd[53690]: (mod_fastcgi.c.2676) x",
                      At("2026-12-01T00:00:00Z"), &out),
              IsOk());
  EXPECT_EQ(out.host, "");
  EXPECT_EQ(out.program, "lighttpd");
  EXPECT_EQ(out.pid, "53690");
  EXPECT_EQ(out.message, "(mod_fastcgi.c.2676) x");
}

TEST(Syslog3164Test, YearRollsBackAcrossNewYear) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine out;
  ASSERT_THAT(p.Parse("Dec 31 23:59:59 h cron: x", At("2026-01-01T00:00:05Z"), &out), IsOk());
  EXPECT_EQ(*out.time, At("2025-12-31T23:59:59Z"));
}

TEST(Syslog3164Test, NearestYearToThePreviousLineCrossesNewYear) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine out;
  // The previous line was on 31 Dec 2025: "Jan  1" is the next day, not eleven months back.
  ASSERT_THAT(p.Parse("Jan  1 00:00:03 h sshd: x", At("2025-12-31T23:59:58Z"), &out,
                      YearRule::kNearest),
              IsOk());
  EXPECT_EQ(*out.time, At("2026-01-01T00:00:03Z"));
  // And back: a line of 31 Dec after one of 1 Jan stays in the old year.
  ASSERT_THAT(p.Parse("Dec 31 23:59:59 h sshd: x", At("2026-01-01T00:00:03Z"), &out,
                      YearRule::kNearest),
              IsOk());
  EXPECT_EQ(*out.time, At("2025-12-31T23:59:59Z"));
}

TEST(Syslog3164Test, GapOfDaysAfterThePreviousLineKeepsItsYear) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine out;
  // A sparse log: the next line comes three days later. Resolved against the previous line
  // it stays in 2025 (against a "now" of that previous line, the old rule moved it a year back).
  ASSERT_THAT(p.Parse("Mar  6 10:00:00 h sshd: x", At("2025-03-03T10:00:00Z"), &out,
                      YearRule::kNearest),
              IsOk());
  EXPECT_EQ(*out.time, At("2025-03-06T10:00:00Z"));
  // Now as reference: at most a day ahead of it, else the year before.
  ASSERT_THAT(p.Parse("Mar  6 10:00:00 h sshd: x", At("2025-03-03T10:00:00Z"), &out), IsOk());
  EXPECT_EQ(*out.time, At("2024-03-06T10:00:00Z"));
  // Just after New Year's Eve (now 31 Dec, 23:50): "Jan  1 00:10" is twenty minutes ahead.
  ASSERT_THAT(p.Parse("Jan  1 00:10:00 h sshd: x", At("2025-12-31T23:50:00Z"), &out), IsOk());
  EXPECT_EQ(*out.time, At("2026-01-01T00:10:00Z"));
}

TEST(Syslog3164Test, TimesWithoutOffsetAreReadInTheSourceZone) {
  // A host five hours behind UTC (New York in winter, four in summer).
  const absl::TimeZone new_york = [] {
    absl::TimeZone tz;
    EXPECT_TRUE(absl::LoadTimeZone("America/New_York", &tz));
    return tz;
  }();
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG, new_york);
  ParsedLine out;
  ASSERT_THAT(p.Parse("Jan 15 09:00:00 h sshd: x", At("2026-01-15T15:00:00Z"), &out), IsOk());
  EXPECT_EQ(*out.time, At("2026-01-15T14:00:00Z"));
  ASSERT_THAT(p.Parse("Jul 15 09:00:00 h sshd: x", At("2026-07-15T15:00:00Z"), &out), IsOk());
  EXPECT_EQ(*out.time, At("2026-07-15T13:00:00Z"));
  // rsyslog's ISO time without an offset: the zone too; with an offset: the offset.
  ASSERT_THAT(p.Parse("2026-01-15T09:00:00 h sshd: x", absl::Now(), &out), IsOk());
  EXPECT_EQ(*out.time, At("2026-01-15T14:00:00Z"));
  ASSERT_THAT(p.Parse("2026-01-15T09:00:00Z h sshd: x", absl::Now(), &out), IsOk());
  EXPECT_EQ(*out.time, At("2026-01-15T09:00:00Z"));
  // A fixed offset works the same way.
  LineParser fixed(LogFormat::LOG_FORMAT_SYSLOG, absl::FixedTimeZone(-5 * 3600));
  ASSERT_THAT(fixed.Parse("Jul 15 09:00:00 h sshd: x", At("2026-07-15T15:00:00Z"), &out), IsOk());
  EXPECT_EQ(*out.time, At("2026-07-15T14:00:00Z"));
}

absl::TimeZone Zone(const std::string& name) {
  absl::TimeZone tz;
  EXPECT_TRUE(absl::LoadTimeZone(name, &tz)) << name;
  return tz;
}

// The one-day cache (CivilToTime) and the year cache (YearOf) give what the zone's rules give,
// line after line through a day with an offset change, whatever the parser saw before.
TEST(Syslog3164Test, CachedDaysFollowOffsetChanges) {
  struct Case {
    std::string zone;
    absl::CivilSecond local;
  };
  const std::vector<Case> cases = {
      // New York springs forward at 02:00 (02:30 does not exist) and falls back at 02:00.
      {"America/New_York", absl::CivilSecond(2026, 3, 7, 23, 59, 59)},
      {"America/New_York", absl::CivilSecond(2026, 3, 8, 0, 0, 0)},
      {"America/New_York", absl::CivilSecond(2026, 3, 8, 1, 59, 59)},
      {"America/New_York", absl::CivilSecond(2026, 3, 8, 2, 30, 0)},
      {"America/New_York", absl::CivilSecond(2026, 3, 8, 3, 0, 0)},
      {"America/New_York", absl::CivilSecond(2026, 3, 8, 23, 59, 59)},
      {"America/New_York", absl::CivilSecond(2026, 3, 9, 12, 0, 0)},
      {"America/New_York", absl::CivilSecond(2026, 11, 1, 0, 30, 0)},
      {"America/New_York", absl::CivilSecond(2026, 11, 1, 1, 30, 0)},
      {"America/New_York", absl::CivilSecond(2026, 11, 1, 2, 30, 0)},
      {"America/New_York", absl::CivilSecond(2026, 11, 2, 1, 30, 0)},
      // Sao Paulo sprang forward at midnight in 2018: 4 November had no 00:00, and the last
      // second of 3 November (23:59:60) is that missing midnight.
      {"America/Sao_Paulo", absl::CivilSecond(2018, 11, 3, 12, 0, 0)},
      {"America/Sao_Paulo", absl::CivilSecond(2018, 11, 3, 23, 59, 59)},
      {"America/Sao_Paulo", absl::CivilSecond(2018, 11, 4, 0, 30, 0)},
      {"America/Sao_Paulo", absl::CivilSecond(2018, 11, 4, 1, 0, 0)},
      {"America/Sao_Paulo", absl::CivilSecond(2018, 11, 4, 13, 0, 0)},
  };
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  for (const std::string zone_name : {"America/New_York", "America/Sao_Paulo"}) {
    const absl::TimeZone zone = Zone(zone_name);
    // In order, then backwards (each line a cache hit or a refill, from either side).
    for (bool reverse : {false, true}) {
      LineParser p(LogFormat::LOG_FORMAT_SYSLOG, zone);
      std::vector<Case> lines;
      for (const Case& c : cases) {
        if (c.zone == zone_name) lines.push_back(c);
      }
      if (reverse) std::reverse(lines.begin(), lines.end());
      for (const Case& c : lines) {
        // The same second three times: the first fills the cache, the others read it.
        for (int second = 0; second < 3; ++second) {
          const absl::CivilSecond local = c.local + second;
          const std::string line =
              absl::StrFormat("%s %2d %02d:%02d:%02d h sshd: x", kMonths[local.month() - 1],
                              local.day(), local.hour(), local.minute(), local.second());
          ParsedLine out;
          ASSERT_THAT(p.Parse(line, absl::FromCivil(local, zone), &out, YearRule::kNearest),
                      IsOk());
          EXPECT_EQ(*out.time, absl::FromCivil(local, zone)) << zone_name << " " << line;
        }
      }
      // 23:59:60 on the day before Sao Paulo's missing midnight: the zone's own answer.
      if (zone_name == "America/Sao_Paulo") {
        ParsedLine out;
        const absl::CivilSecond noon(2018, 11, 3, 12, 0, 0);
        ASSERT_THAT(p.Parse("Nov  3 12:00:00 h sshd: x", absl::FromCivil(noon, zone), &out,
                            YearRule::kNearest),
                    IsOk());
        ASSERT_THAT(p.Parse("Nov  3 23:59:60 h sshd: x", absl::FromCivil(noon, zone), &out,
                            YearRule::kNearest),
                    IsOk());
        EXPECT_EQ(*out.time, absl::FromCivil(absl::CivilSecond(2018, 11, 3, 23, 59, 60), zone));
      }
    }
  }
}

// New York falls back at 02:00 EDT on 1 November 2026: 01:00-01:59 happens twice, first EDT
// (05:00-05:59Z), then EST (06:00-06:59Z). A time without an offset in that hour is the
// occurrence nearest the reference (now, or the previous line): it was always the first, so
// through the second pass every line was dated an hour early (its bans expired at creation).
TEST(LineParserTest, ARepeatedHourIsTheOccurrenceNearestTheReference) {
  const absl::TimeZone new_york = Zone("America/New_York");
  struct Case {
    LogFormat format;
    std::string line;
  };
  const std::vector<Case> cases = {
      {LogFormat::LOG_FORMAT_SYSLOG, "Nov  1 01:10:00 h sshd: x"},
      {LogFormat::LOG_FORMAT_SYSLOG, "2026-11-01T01:10:00 h sshd: x"},
      {LogFormat::LOG_FORMAT_SYSLOG5424, "<34>1 2026-11-01T01:10:00 h sshd 1 - - x"},
      {LogFormat::LOG_FORMAT_COMBINED,
       "198.51.100.4 - - [01/Nov/2026:01:10:00] \"GET / HTTP/1.1\" 200 1"},
      {LogFormat::LOG_FORMAT_NGINX_ERROR, "2026/11/01 01:10:00 [error] 1#0: *1 m"},
      {LogFormat::LOG_FORMAT_APACHE_ERROR, "[Sun Nov 01 01:10:00 2026] [error] m"},
      {LogFormat::LOG_FORMAT_APACHE_ERROR, "[2026-11-01 01:10:00.000000] [core:error] m"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.line);
    for (bool caching : {true, false}) {
      LineParser p(c.format, new_york);
      if (!caching) p.DisableCachesForTesting();
      ParsedLine out;
      // Now 06:10:30Z (01:10:30 EST, the second pass): the second occurrence.
      ASSERT_THAT(p.Parse(c.line, At("2026-11-01T06:10:30Z"), &out), IsOk());
      EXPECT_EQ(*out.time, At("2026-11-01T06:10:00Z"));
      EXPECT_TRUE(out.time_repeated);
      // Now 05:10:30Z (01:10:30 EDT, the first pass): the first.
      ASSERT_THAT(p.Parse(c.line, At("2026-11-01T05:10:30Z"), &out), IsOk());
      EXPECT_EQ(*out.time, At("2026-11-01T05:10:00Z"));
      EXPECT_TRUE(out.time_repeated);
    }
  }
  // An hour before or after, the time is the zone's one, and said to be so.
  LineParser other(LogFormat::LOG_FORMAT_SYSLOG, new_york);
  ParsedLine once;
  for (absl::string_view line : {"Nov  1 00:10:00 h sshd: x", "Nov  1 02:10:00 h sshd: x"}) {
    ASSERT_THAT(other.Parse(line, At("2026-11-01T06:10:30Z"), &once), IsOk());
    EXPECT_FALSE(once.time_repeated) << line;
  }
  // Line after line (the previous line the reference): 01:59:59 EDT, then 01:00:01 two seconds
  // later (EST), then 01:30 in the second pass.
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG, new_york);
  ParsedLine out;
  ASSERT_THAT(p.Parse("Nov  1 01:59:59 h sshd: x", At("2026-11-01T05:59:59Z"), &out), IsOk());
  EXPECT_EQ(*out.time, At("2026-11-01T05:59:59Z"));
  ASSERT_THAT(p.Parse("Nov  1 01:00:01 h sshd: x", *out.time, &out, YearRule::kNearest), IsOk());
  EXPECT_EQ(*out.time, At("2026-11-01T06:00:01Z"));
  ASSERT_THAT(p.Parse("Nov  1 01:30:00 h sshd: x", *out.time, &out, YearRule::kNearest), IsOk());
  EXPECT_EQ(*out.time, At("2026-11-01T06:30:00Z"));
}

// New York springs forward at 02:00 EST on 8 March 2026: 02:00-02:59 never happens. A time in
// that gap (a clock not yet moved forward, or a forged line) is the instant of the change,
// 07:00Z (03:00 EDT), whatever the reference: after every line before the gap, never after one
// written once the clocks moved.
TEST(LineParserTest, ASkippedTimeIsTheInstantOfTheChange) {
  const absl::TimeZone new_york = Zone("America/New_York");
  for (absl::string_view reference : {"2026-03-08T06:59:00Z", "2026-03-08T07:31:00Z"}) {
    SCOPED_TRACE(reference);
    LineParser p(LogFormat::LOG_FORMAT_SYSLOG, new_york);
    ParsedLine out;
    ASSERT_THAT(p.Parse("Mar  8 02:30:00 h sshd: x", At(reference), &out), IsOk());
    EXPECT_EQ(*out.time, At("2026-03-08T07:00:00Z"));
    EXPECT_FALSE(out.time_repeated);
    ASSERT_THAT(p.Parse("Mar  8 02:30:00 h sshd: x", At(reference), &out, YearRule::kNearest),
                IsOk());
    EXPECT_EQ(*out.time, At("2026-03-08T07:00:00Z"));
  }
}

// The year of the reference, cached per year, moves at the zone's own New Year: in New York,
// 2026-01-01T04:59:59Z is still 31 December 2025.
TEST(Syslog3164Test, CachedYearRollsOverAtTheZonesNewYear) {
  const absl::TimeZone new_york = Zone("America/New_York");
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG, new_york);
  ParsedLine out;
  // Fills the year cache with 2025.
  ASSERT_THAT(p.Parse("Jun  1 12:00:00 h sshd: x", At("2025-06-01T16:00:00Z"), &out,
                      YearRule::kNearest),
              IsOk());
  EXPECT_EQ(*out.time, At("2025-06-01T16:00:00Z"));
  // Now 31 December 2025, 23:50 in New York (04:50 UTC on 1 January): 1 January 00:10 is
  // twenty minutes ahead, in 2026; 31 December 23:59:58 is in 2025.
  ASSERT_THAT(p.Parse("Jan  1 00:10:00 h sshd: x", At("2026-01-01T04:50:00Z"), &out), IsOk());
  EXPECT_EQ(*out.time, At("2026-01-01T05:10:00Z"));
  ASSERT_THAT(p.Parse("Dec 31 23:59:58 h sshd: x", At("2026-01-01T04:50:00Z"), &out), IsOk());
  EXPECT_EQ(*out.time, At("2026-01-01T04:59:58Z"));
  // Exactly at New Year, and one nanosecond before: the previous line's year either side.
  ASSERT_THAT(p.Parse("Dec 31 23:59:58 h sshd: x", At("2026-01-01T05:00:00Z"), &out,
                      YearRule::kNearest),
              IsOk());
  EXPECT_EQ(*out.time, At("2026-01-01T04:59:58Z"));
  ASSERT_THAT(p.Parse("Jan  1 00:00:01 h sshd: x",
                      At("2026-01-01T05:00:00Z") - absl::Nanoseconds(1), &out,
                      YearRule::kNearest),
              IsOk());
  EXPECT_EQ(*out.time, At("2026-01-01T05:00:01Z"));
  // Now 1 January 2026, 00:10 in New York: 2 January 00:05 is within a day, 2 January 10:00 is
  // not (so it is 2025's), 31 December is 2025's.
  ASSERT_THAT(p.Parse("Jan  2 00:05:00 h sshd: x", At("2026-01-01T05:10:00Z"), &out), IsOk());
  EXPECT_EQ(*out.time, At("2026-01-02T05:05:00Z"));
  ASSERT_THAT(p.Parse("Jan  2 10:00:00 h sshd: x", At("2026-01-01T05:10:00Z"), &out), IsOk());
  EXPECT_EQ(*out.time, At("2025-01-02T15:00:00Z"));
  ASSERT_THAT(p.Parse("Dec 31 22:00:00 h sshd: x", At("2026-01-01T05:10:00Z"), &out), IsOk());
  EXPECT_EQ(*out.time, At("2026-01-01T03:00:00Z"));
  // And in UTC (its own day cache, the same year cache): one second either side of New Year.
  LineParser utc(LogFormat::LOG_FORMAT_SYSLOG);
  ASSERT_THAT(utc.Parse("Jun  1 12:00:00 h sshd: x", At("2025-06-01T12:00:00Z"), &out,
                        YearRule::kNearest),
              IsOk());
  ASSERT_THAT(utc.Parse("Jan  1 00:00:01 h sshd: x", At("2025-12-31T23:59:59Z"), &out,
                        YearRule::kNearest),
              IsOk());
  EXPECT_EQ(*out.time, At("2026-01-01T00:00:01Z"));
  ASSERT_THAT(utc.Parse("Dec 31 23:59:58 h sshd: x", At("2026-01-01T00:00:00Z"), &out), IsOk());
  EXPECT_EQ(*out.time, At("2025-12-31T23:59:58Z"));
}

// Whether the year came from the reference: replay reuses a line parsed on another thread
// only when no other reference could change its time.
TEST(LineParserTest, SaysWhenTheYearWasInferred) {
  ParsedLine out;
  LineParser syslog(LogFormat::LOG_FORMAT_SYSLOG);
  ASSERT_THAT(syslog.Parse("Mar  3 14:02:01 h sshd: x", At("2026-06-01T00:00:00Z"), &out), IsOk());
  EXPECT_TRUE(out.year_inferred);
  ASSERT_THAT(syslog.Parse("2026-03-03T14:02:01Z h sshd: x", At("2026-06-01T00:00:00Z"), &out),
              IsOk());
  EXPECT_FALSE(out.year_inferred);
  LineParser combined(LogFormat::LOG_FORMAT_COMBINED);
  ASSERT_THAT(combined.Parse("203.0.113.7 - - [03/Mar/2026:14:02:01 +0000] \"GET / HTTP/1.1\" 200 1",
                             At("2026-06-01T00:00:00Z"), &out),
              IsOk());
  EXPECT_FALSE(out.year_inferred);
  // An nginx error line relayed through syslog with nginx's own time: that time, with its year.
  LineParser nginx(LogFormat::LOG_FORMAT_NGINX_ERROR);
  ASSERT_THAT(nginx.Parse("Mar  3 14:02:01 web-1 nginx: 2026/03/03 14:02:01 [error] 12#0: *5 x",
                          At("2026-06-01T00:00:00Z"), &out),
              IsOk());
  EXPECT_FALSE(out.year_inferred);
}

TEST(Syslog3164Test, TwentyNinthOfFebruaryFindsALeapYear) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine out;
  ASSERT_THAT(p.Parse("Feb 29 12:00:00 h sshd: x", At("2026-03-01T00:00:00Z"), &out), IsOk());
  EXPECT_EQ(*out.time, At("2024-02-29T12:00:00Z"));
}

TEST(Syslog3164Test, AcceptsPriorityAndIsoTimestamps) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine out;
  ASSERT_THAT(p.Parse("<38>2026-03-03T14:02:01.250+01:00 h sshd: hello", absl::Now(), &out),
              IsOk());
  EXPECT_EQ(*out.time, At("2026-03-03T13:02:01.25Z"));
  EXPECT_EQ(out.program, "sshd");
  EXPECT_EQ(out.pid, "");
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

// A ParsedLine is reused from line to line (a batch's parsed lines): Parse leaves nothing of
// the line it held before.
TEST(LineParserTest, ParseLeavesNothingOfThePreviousLine) {
  const JsonRecord* record = reinterpret_cast<const JsonRecord*>(&record);  // only compared
  ParsedLine out;
  out.message = "m";
  out.host = "h";
  out.program = "p";
  out.pid = "1";
  out.time = absl::UnixEpoch();
  out.year_inferred = true;
  out.client_address = "203.0.113.7";
  out.record = record;
  LineParser raw(LogFormat::LOG_FORMAT_RAW);
  ASSERT_THAT(raw.Parse("a raw line", absl::Now(), &out), IsOk());
  EXPECT_EQ(out.message, "a raw line");
  EXPECT_EQ(out.host, "");
  EXPECT_EQ(out.program, "");
  EXPECT_EQ(out.pid, "");
  EXPECT_FALSE(out.time.has_value());
  EXPECT_FALSE(out.year_inferred);
  EXPECT_EQ(out.client_address, "");
  EXPECT_EQ(out.record, nullptr);
}

TEST(Syslog3164Test, MalformedLinesNameTheProblem) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine out;
  EXPECT_THAT(p.Parse("hello world", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no timestamp")));
  // A timestamp's shape with an impossible value: a bad time (kOutOfRange), counted as such.
  EXPECT_THAT(p.Parse("Mar 33 14:02:01 h x: y", absl::Now(), &out),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("bad timestamp")));
  EXPECT_THAT(p.Parse("Mar  3 14:02:01", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("space after")));
  EXPECT_THAT(p.Parse("", absl::Now(), &out), StatusIs(absl::StatusCode::kInvalidArgument));
}

// `journalctl -o short-precise` and syslog-ng's frac-digits() write a fraction after the BSD
// time ("Mar 03 14:02:01.123456"), as fail2ban's default date template reads. Such lines were
// refused as malformed ("expected a space after the timestamp"): nothing in them was detected.
TEST(Syslog3164Test, AFractionAfterTheTimeIsKept) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine out;
  const absl::Time now = At("2026-06-01T00:00:00Z");
  // The second and fourth lines repeat the date before them: the cached date's fast path.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"Mar 03 14:02:01.123456 web-1 sshd[1]: Failed password", "2026-03-03T14:02:01.123456Z"},
      {"Mar 03 14:02:02.5 web-1 sshd[1]: Failed password", "2026-03-03T14:02:02.5Z"},
      {"Mar  3 14:02:03.123456789 web-1 sshd[1]: Failed password",
       "2026-03-03T14:02:03.123456789Z"},
      {"Mar  3 14:02:04.000001 web-1 sshd[1]: Failed password", "2026-03-03T14:02:04.000001Z"},
      {"Mar 3 14:02:05.1 web-1 sshd[1]: Failed password", "2026-03-03T14:02:05.1Z"},
      {"<38>Oct 27 2015 12:35:40.25 web-1 sshd[1]: Failed password", "2015-10-27T12:35:40.25Z"},
  };
  for (const auto& [line, time] : cases) {
    SCOPED_TRACE(line);
    ASSERT_THAT(p.Parse(line, now, &out), IsOk());
    ASSERT_TRUE(out.time.has_value());
    EXPECT_EQ(*out.time, At(time));
    EXPECT_EQ(out.host, "web-1");
    EXPECT_EQ(out.program, "sshd");
    EXPECT_EQ(out.pid, "1");
    EXPECT_EQ(out.message, "Failed password");
  }
  // No digit after the '.', more than nine, or a line cut in or after the fraction.
  EXPECT_THAT(p.Parse("Mar  3 14:02:01. web-1 sshd[1]: x", now, &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("column 16")));
  EXPECT_THAT(p.Parse("Mar  3 14:02:01.a web-1 sshd[1]: x", now, &out),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(p.Parse("Mar  3 14:02:01.1234567890 web-1 sshd[1]: x", now, &out),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("9 digits")));
  for (absl::string_view cut : {"Mar  3 14:02:01.", "Mar  3 14:02:01.12", "Mar 03 14:02:01.123"}) {
    SCOPED_TRACE(cut);
    EXPECT_THAT(p.Parse(cut, now, &out), StatusIs(absl::StatusCode::kInvalidArgument));
  }
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
  EXPECT_EQ(out.pid, "4211");
  EXPECT_EQ(out.message, "Invalid user admin from 2001:db8::7");
  EXPECT_EQ(*out.time, At("2026-03-03T14:02:01.003Z"));
}

// RFC 5424 requires an offset, but some devices leave it out: such a time is read in the
// source's zone, as an RFC 3164 line's ISO time is (it was read as UTC).
TEST(Syslog5424Test, ATimeWithoutOffsetIsReadInTheSourceZone) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG5424, absl::FixedTimeZone(-5 * 3600));
  ParsedLine out;
  ASSERT_THAT(p.Parse("<34>1 2026-01-15T09:00:00 web-1 sshd 4211 - - x", absl::Now(), &out),
              IsOk());
  EXPECT_EQ(*out.time, At("2026-01-15T14:00:00Z"));
  ASSERT_THAT(p.Parse("<34>1 2026-01-15T09:00:00Z web-1 sshd 4211 - - x", absl::Now(), &out),
              IsOk());
  EXPECT_EQ(*out.time, At("2026-01-15T09:00:00Z"));
}

TEST(Syslog5424Test, NilValues) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG5424);
  ParsedLine out;
  ASSERT_THAT(p.Parse("<34>1 - - - - - - msg", absl::Now(), &out), IsOk());
  EXPECT_FALSE(out.time.has_value());
  EXPECT_EQ(out.pid, "");
  EXPECT_EQ(out.message, "msg");
  EXPECT_THAT(p.Parse("<34>2 - - - - - - msg", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("version")));
  EXPECT_THAT(p.Parse("<34>1 yesterday h a - - - msg", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad timestamp")));
}

// A header field left out is "-" (NILVALUE), never empty: an empty TIMESTAMP (two spaces after
// VERSION) was read as a time of 1970; the other fields were taken empty.
TEST(Syslog5424Test, EmptyHeaderFieldsAreMalformed) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG5424);
  ParsedLine out;
  EXPECT_THAT(p.Parse("<13>1  web-1 sshd 1 - - x", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("syslog5424: empty TIMESTAMP at column 7")));
  EXPECT_THAT(p.Parse("<13>1 -  sshd 1 - - x", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("syslog5424: empty HOSTNAME at column 9")));
  EXPECT_THAT(p.Parse("<13>1 - web-1  1 - - x", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("syslog5424: empty APP-NAME at column 15")));
  EXPECT_THAT(p.Parse("<13>1 - web-1 sshd  - - x", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("syslog5424: empty PROCID at column 20")));
  EXPECT_THAT(p.Parse("<13>1 - web-1 sshd 1  - x", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("syslog5424: empty MSGID at column 22")));
  // A line that ends in the header is said to end there.
  for (absl::string_view line : {"<13>1", "<13>1 ", "<13>1 - web-1 sshd", "<13>1 - h a p m"}) {
    EXPECT_THAT(p.Parse(line, absl::Now(), &out),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("line ends before")))
        << line;
  }
  ASSERT_THAT(p.Parse("<13>1 - - - - - - x", absl::Now(), &out), IsOk());
  EXPECT_FALSE(out.time.has_value());
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

// The user field (basic auth's user name) is the client's, and nginx and Apache write its spaces
// and '[' as they come: a " [" in it made the line malformed, so a brute force sent with such a
// user name went unseen. A time written in it is no time field either: no quoted request
// follows it (the servers escape '"' in a user name).
TEST(CombinedTest, AUserNameHoldingABracketIsNotTheTimeField) {
  for (bool caching : {false, true}) {
    LineParser p(LogFormat::LOG_FORMAT_COMBINED);
    if (!caching) p.DisableCachesForTesting();
    for (absl::string_view user : {"admin [x", "a [03/Mar/2030:00:00:00 +0000] b", "[ [", "x ["}) {
      SCOPED_TRACE(user);
      const std::string line = absl::StrCat(
          "198.51.100.4 - ", user, " [03/Mar/2026:14:02:01 -0700] \"POST /login HTTP/1.1\" 401 153 "
          "\"-\" \"curl/8.0\"");
      ParsedLine out;
      ASSERT_THAT(p.Parse(line, absl::Now(), &out), IsOk());
      EXPECT_EQ(out.host, "198.51.100.4");
      EXPECT_EQ(out.message, line);
      EXPECT_EQ(*out.time, At("2026-03-03T21:02:01Z"));
    }
  }
}

TEST(CombinedTest, TimeWithoutOffsetIsReadInTheSourceZone) {
  LineParser p(LogFormat::LOG_FORMAT_COMBINED, absl::FixedTimeZone(-5 * 3600));
  ParsedLine out;
  ASSERT_THAT(p.Parse("198.51.100.4 - - [03/Mar/2026:14:02:01] \"GET / HTTP/1.1\" 200 1",
                      absl::Now(), &out),
              IsOk());
  EXPECT_EQ(*out.time, At("2026-03-03T19:02:01Z"));
  // The offset, when there is one, wins over the zone.
  ASSERT_THAT(p.Parse("198.51.100.4 - - [03/Mar/2026:14:02:01 +0000] \"GET / HTTP/1.1\" 200 1",
                      absl::Now(), &out),
              IsOk());
  EXPECT_EQ(*out.time, At("2026-03-03T14:02:01Z"));
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
  EXPECT_THAT(ParseRfc3339Timestamp("2026-02-31T00:00:00Z", &t),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(ParseRfc3339Timestamp("not a time", &t), IsOkAndHolds(0u));
}

// Forged times: an offset past ±23:59 moved the line by days, and a fraction of any length was
// read (and scanned) digit by digit. Both are impossible times now: kOutOfRange.
TEST(Rfc3339Test, RejectsImpossibleOffsetsAndFractions) {
  absl::Time t;
  EXPECT_THAT(ParseRfc3339Timestamp("2026-03-03T14:02:01+99:99", &t),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("offset")));
  EXPECT_THAT(ParseRfc3339Timestamp("2026-03-03T14:02:01-24:00", &t),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("offset")));
  EXPECT_THAT(ParseRfc3339Timestamp("2026-03-03T14:02:01+23:59", &t), IsOkAndHolds(25u));
  EXPECT_THAT(ParseRfc3339Timestamp(absl::StrCat("2026-03-03T14:02:01.", std::string(5000, '7'),
                                                 "Z"),
                                    &t),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("9 digits")));
  EXPECT_THAT(ParseRfc3339Timestamp("2026-03-03T14:02:01.123456789Z", &t), IsOkAndHolds(30u));
  EXPECT_EQ(t, At("2026-03-03T14:02:01.123456789Z"));
}

// ISO 8601's basic offset (+0530, -0330: Python's %z, Go's Z0700 as Caddy writes it) reads as
// its extended form; it made the whole stamp "no timestamp". A leap second (23:59:60, which
// RFC 3339 allows and the other stamps here accept) is the next midnight, not an impossible date.
TEST(Rfc3339Test, BasicOffsetsAndLeapSecondsAreTimes) {
  absl::Time t;
  EXPECT_THAT(ParseRfc3339Timestamp("2026-03-03T14:02:01+0530 h", &t), IsOkAndHolds(24u));
  EXPECT_EQ(t, At("2026-03-03T08:32:01Z"));
  EXPECT_THAT(ParseRfc3339Timestamp("2026-03-03T14:02:01.5-0330", &t), IsOkAndHolds(26u));
  EXPECT_EQ(t, At("2026-03-03T17:32:01.5Z"));
  EXPECT_THAT(ParseRfc3339Timestamp("2026-03-03T14:02:01+9999", &t),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("offset")));
  EXPECT_THAT(ParseRfc3339Timestamp("2026-03-03T14:02:01+05 h", &t), IsOkAndHolds(0u));
  EXPECT_THAT(ParseRfc3339Timestamp("2016-12-31T23:59:60Z", &t), IsOkAndHolds(20u));
  EXPECT_EQ(t, At("2017-01-01T00:00:00Z"));
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine out;
  ASSERT_THAT(p.Parse("2026-03-03T14:02:01+0530 h sshd[1]: msg", absl::Now(), &out), IsOk());
  EXPECT_EQ(*out.time, At("2026-03-03T08:32:01Z"));
  EXPECT_EQ(out.message, "msg");
  LineParser p5424(LogFormat::LOG_FORMAT_SYSLOG5424);
  ASSERT_THAT(p5424.Parse("<34>1 2016-12-31T23:59:60Z h a - - - x", absl::Now(), &out), IsOk());
  EXPECT_EQ(*out.time, At("2017-01-01T00:00:00Z"));
}

TEST(Syslog5424Test, ImpossibleTimesAreOutOfRange) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG5424);
  ParsedLine out;
  EXPECT_THAT(p.Parse("<34>1 2026-03-03T14:02:01+99:99 h sshd - - - Invalid user a from 1.2.3.4",
                      absl::Now(), &out),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("impossible timestamp")));
  EXPECT_THAT(p.Parse(absl::StrCat("<34>1 2026-03-03T14:02:01.", std::string(5000, '1'),
                                   "Z h sshd - - - msg"),
                      absl::Now(), &out),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("impossible timestamp")));
  ASSERT_THAT(p.Parse("<34>1 2026-03-03T14:02:01-05:30 h sshd - - - msg", absl::Now(), &out),
              IsOk());
  EXPECT_EQ(*out.time, At("2026-03-03T19:32:01Z"));
}

TEST(Syslog3164Test, ImpossibleIsoTimesAreOutOfRange) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine out;
  EXPECT_THAT(p.Parse("2026-03-03T14:02:01+99:99 h sshd[1]: msg", absl::Now(), &out),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("offset")));
}

TEST(CombinedTest, ImpossibleOffsetsAndDatesAreOutOfRange) {
  LineParser p(LogFormat::LOG_FORMAT_COMBINED);
  ParsedLine out;
  EXPECT_THAT(p.Parse("1.2.3.4 - - [03/Mar/2026:14:02:01 +9999] \"GET / HTTP/1.1\" 200 1",
                      absl::Now(), &out),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("out of range")));
  EXPECT_THAT(p.Parse("1.2.3.4 - - [31/Feb/2026:14:02:01 +0000] \"GET / HTTP/1.1\" 200 1",
                      absl::Now(), &out),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("bad date")));
}

}  // namespace
}  // namespace palisade

namespace palisade {
namespace {

TEST(FormatNameTest, RoundTripsAndRejectsUnknown) {
  for (auto f : {palisade::v1::LOG_FORMAT_SYSLOG, palisade::v1::LOG_FORMAT_SYSLOG5424,
                 palisade::v1::LOG_FORMAT_COMBINED, palisade::v1::LOG_FORMAT_RAW,
                 palisade::v1::LOG_FORMAT_DECISIONS, palisade::v1::LOG_FORMAT_JSON,
                 palisade::v1::LOG_FORMAT_NGINX_JSON, palisade::v1::LOG_FORMAT_CADDY_JSON,
                 palisade::v1::LOG_FORMAT_TRAEFIK_JSON, palisade::v1::LOG_FORMAT_ENVOY_JSON,
                 palisade::v1::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS,
                 palisade::v1::LOG_FORMAT_LOGPUSH_FIREWALL_EVENTS,
                 palisade::v1::LOG_FORMAT_COMBINED_VHOST}) {
    EXPECT_EQ(*ParseFormatName(FormatName(f)), f);
  }
  EXPECT_EQ(*ParseFormatName("combined_vhost"), palisade::v1::LOG_FORMAT_COMBINED_VHOST);
  EXPECT_EQ(*ParseFormatName("logpush_http_requests"),
            palisade::v1::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS);
  EXPECT_EQ(*ParseFormatName("logpush_firewall_events"),
            palisade::v1::LOG_FORMAT_LOGPUSH_FIREWALL_EVENTS);
  EXPECT_EQ(FormatName(palisade::v1::LOG_FORMAT_DECISIONS), "decisions");
  EXPECT_THAT(ParseFormatName("apache"),
              palisade::testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                          ::testing::HasSubstr("unknown format \"apache\"")));
}

// Palisade's own decision lines (recidive) are read as raw lines: the whole line, no time.
TEST(LineParserTest, DecisionLinesAreWholeMessagesWithoutTime) {
  LineParser parser(palisade::v1::LOG_FORMAT_DECISIONS);
  ParsedLine parsed;
  const std::string line = "decision rule=sshd-invalid-user kind=ip key=203.0.113.7 action=block";
  ASSERT_TRUE(parser.Parse(line, absl::UnixEpoch(), &parsed).ok());
  EXPECT_EQ(parsed.message, line);
  EXPECT_FALSE(parsed.time.has_value());
  EXPECT_TRUE(parsed.program.empty());
}

// Audit-log records are whole JSON lines, timed by their record. Their format has a name (a
// metric label) that no input or shipper may choose: the records revoke tokens by id.
TEST(LineParserTest, AuditRecordsAreWholeLinesAndNoInputMayNameTheirFormat) {
  LineParser parser(palisade::v1::LOG_FORMAT_CLOUDFLARE_AUDIT);
  ParsedLine parsed;
  const std::string line =
      "2026-03-03T14:02:01Z {\"actor\":{\"ip_address\":\"203.0.113.9\"}}";
  ASSERT_TRUE(parser.Parse(line, absl::UnixEpoch(), &parsed).ok());
  EXPECT_EQ(parsed.message, line);
  EXPECT_FALSE(parsed.time.has_value());
  EXPECT_EQ(FormatName(palisade::v1::LOG_FORMAT_CLOUDFLARE_AUDIT), "cloudflare_audit");
  EXPECT_THAT(ParseFormatName("cloudflare_audit"),
              palisade::testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                          ::testing::HasSubstr("no input or shipper")));
}

}  // namespace
}  // namespace palisade

namespace palisade {
namespace {

using ::palisade::testing::IsOk;
using ::palisade::testing::StatusIs;
using ::palisade::v1::LogFormat;
using ::testing::HasSubstr;

absl::Time Utc(absl::string_view rfc3339) {
  absl::Time t;
  std::string err;
  EXPECT_TRUE(absl::ParseTime(absl::RFC3339_full, std::string(rfc3339), &t, &err)) << err;
  return t;
}

TEST(FormatNameTest, ErrorLogFormatsHaveNames) {
  EXPECT_EQ(FormatName(LogFormat::LOG_FORMAT_NGINX_ERROR), "nginx_error");
  EXPECT_EQ(FormatName(LogFormat::LOG_FORMAT_APACHE_ERROR), "apache_error");
  EXPECT_EQ(*ParseFormatName("nginx_error"), LogFormat::LOG_FORMAT_NGINX_ERROR);
  EXPECT_EQ(*ParseFormatName("apache_error"), LogFormat::LOG_FORMAT_APACHE_ERROR);
}

// proftpd's own log and some relays write the day unpadded: "Feb 1", not "Feb  1".
TEST(Syslog3164Test, UnpaddedDay) {
  LineParser p(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine out;
  ASSERT_THAT(p.Parse("Feb 1 14:02:01 ftp-1 proftpd[1]: msg", Utc("2026-03-01T00:00:00Z"), &out),
              IsOk());
  EXPECT_EQ(*out.time, Utc("2026-02-01T14:02:01Z"));
  EXPECT_EQ(out.host, "ftp-1");
  EXPECT_EQ(out.program, "proftpd");
  EXPECT_EQ(out.pid, "1");
  EXPECT_EQ(out.message, "msg");
  // Zero-padded and space-padded still read the same day.
  ASSERT_THAT(p.Parse("Feb 01 14:02:01 h x: y", Utc("2026-03-01T00:00:00Z"), &out), IsOk());
  EXPECT_EQ(*out.time, Utc("2026-02-01T14:02:01Z"));
  ASSERT_THAT(p.Parse("Feb  1 14:02:01 h x: y", Utc("2026-03-01T00:00:00Z"), &out), IsOk());
  EXPECT_EQ(*out.time, Utc("2026-02-01T14:02:01Z"));
  EXPECT_THAT(p.Parse("Feb 1 14:02:xx h x: y", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad timestamp at column 1")));
  EXPECT_THAT(p.Parse("Feb 1x14:02:01 h x: y", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad timestamp")));
}

TEST(CombinedTest, ALineWhoseSecondFieldIsAnAddressIsRefused) {
  LineParser p(LogFormat::LOG_FORMAT_COMBINED);
  ParsedLine out;
  // A vhost log (nginx's "$host $remote_addr ...") read as combined, the client's Host header
  // "203.0.113.9": neither the vhost nor the address after it may be taken for the client.
  const absl::string_view vhost =
      "203.0.113.9 198.51.100.7 - - [03/Mar/2026:14:02:01 +0000] \"GET /.env HTTP/1.1\" 404 5";
  EXPECT_THAT(p.Parse(vhost, absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("combined_vhost")));
  // The same with $http_host and a Host header "x 203.0.113.9".
  const absl::string_view spaced_host =
      "x 203.0.113.9 198.51.100.7 - - [03/Mar/2026:14:02:01 +0000] \"GET / HTTP/1.1\" 400 5";
  EXPECT_THAT(p.Parse(spaced_host, absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("second field")));
  // Apache with IdentityCheck On: the ident field is the client's identd answer, an address
  // here. Refused too (the client hides this one line; it cannot name another address).
  const absl::string_view ident =
      "198.51.100.7 203.0.113.9 - [03/Mar/2026:14:02:01 +0000] \"GET / HTTP/1.1\" 400 5";
  EXPECT_THAT(p.Parse(ident, absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("second field")));
  // An ident or a user name that is no address changes nothing; nor does a user name holding
  // spaces and an address (the third field on).
  const absl::string_view plain =
      "198.51.100.7 alice - [03/Mar/2026:14:02:01 +0000] \"GET / HTTP/1.1\" 400 5";
  ASSERT_THAT(p.Parse(plain, absl::Now(), &out), IsOk());
  EXPECT_EQ(out.host, "198.51.100.7");
  EXPECT_EQ(out.message, plain);
  EXPECT_EQ(*out.time, Utc("2026-03-03T14:02:01Z"));
  const absl::string_view spaced =
      "203.0.113.7 - 198.51.100.9 x [03/Mar/2026:14:02:01 +0000] \"GET / HTTP/1.1\" 401 5";
  ASSERT_THAT(p.Parse(spaced, absl::Now(), &out), IsOk());
  EXPECT_EQ(out.host, "203.0.113.7");
  EXPECT_EQ(out.message, spaced);
}

TEST(CombinedVhostTest, TheVhostIsTheHostAndTheMessageStartsAtTheClient) {
  LineParser p(LogFormat::LOG_FORMAT_COMBINED_VHOST);
  ParsedLine out;
  const absl::string_view access =
      "203.0.113.7 - - [03/Mar/2026:14:02:01 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"curl/8\"";
  const std::string vhost = absl::StrCat("example.com:443 ", access);
  ASSERT_THAT(p.Parse(vhost, absl::Now(), &out), IsOk());
  EXPECT_EQ(out.host, "example.com:443");
  EXPECT_EQ(out.message, access);
  EXPECT_EQ(*out.time, Utc("2026-03-03T14:02:01Z"));
  // A vhost that is an address (a server_name written as one) is still the vhost.
  const std::string ip_host = absl::StrCat("198.51.100.9 ", access);
  ASSERT_THAT(p.Parse(ip_host, absl::Now(), &out), IsOk());
  EXPECT_EQ(out.host, "198.51.100.9");
  EXPECT_EQ(out.message, access);
  // The second field is the client whatever it holds: a hostname (HostnameLookups On) too.
  ASSERT_THAT(p.Parse("example.com:443 client.example.net - - [03/Mar/2026:14:02:01 +0000] "
                      "\"GET / HTTP/1.1\" 200 5",
                      absl::Now(), &out),
              IsOk());
  EXPECT_EQ(out.message.substr(0, 19), "client.example.net ");
  // IPv6 clients behind a vhost.
  ASSERT_THAT(p.Parse("www.example.org:80 2001:db8::7 - bob [03/Mar/2026:14:02:01 +0000] "
                      "\"GET / HTTP/1.1\" 401 5",
                      absl::Now(), &out),
              IsOk());
  EXPECT_EQ(out.host, "www.example.org:80");
  EXPECT_EQ(out.message.substr(0, 12), "2001:db8::7 ");
  // A user name with a " [" of its own: the time field is still found after it.
  ASSERT_THAT(p.Parse("example.com:443 203.0.113.7 - a [b [03/Mar/2026:14:02:01 +0000] "
                      "\"GET / HTTP/1.1\" 401 5",
                      absl::Now(), &out),
              IsOk());
  EXPECT_EQ(out.message.substr(0, 12), "203.0.113.7 ");
  EXPECT_EQ(*out.time, Utc("2026-03-03T14:02:01Z"));
  EXPECT_THAT(p.Parse("example.com:443 203.0.113.7 - - [03/Mar/2026:14:02:01 +0000] GET",
                      absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no quoted request")));
  // No field between the vhost and the time: no client.
  EXPECT_THAT(p.Parse("example.com:443 [03/Mar/2026:14:02:01 +0000] \"GET / HTTP/1.1\" 200 5",
                      absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("combined_vhost: no client")));
}

TEST(NginxErrorTest, SplitsPidConnectionAndMessage) {
  LineParser p(LogFormat::LOG_FORMAT_NGINX_ERROR);
  ParsedLine out;
  ASSERT_THAT(p.Parse("2026/03/03 14:02:01 [error] 1234#0: *5 user \"x\" was not found in "
                      "\"/etc/nginx/.htpasswd\", client: 203.0.113.7, server: x",
                      absl::Now(), &out),
              IsOk());
  EXPECT_EQ(out.program, "nginx");
  EXPECT_EQ(out.pid, "1234");
  EXPECT_EQ(out.host, "");
  EXPECT_EQ(out.message,
            "user \"x\" was not found in \"/etc/nginx/.htpasswd\", client: 203.0.113.7, server: x");
  EXPECT_EQ(*out.time, Utc("2026-03-03T14:02:01Z"));
  // Without a connection number (a line about the process), and a 64-bit thread id.
  ASSERT_THAT(p.Parse("2026/03/03 14:02:01 [notice] 76952#140123104306944: signal process started",
                      absl::Now(), &out),
              IsOk());
  EXPECT_EQ(out.pid, "76952");
  EXPECT_EQ(out.message, "signal process started");
  // Every level from debug to emerg.
  for (absl::string_view level : {"debug", "info", "notice", "warn", "error", "crit", "alert",
                                  "emerg"}) {
    // The line outlives `out`, which views into it.
    const std::string line = absl::StrCat("2026/03/03 14:02:01 [", level, "] 1#1: *1 m");
    EXPECT_THAT(p.Parse(line, absl::Now(), &out), IsOk()) << level;
    EXPECT_EQ(out.message, "m");
  }
}

TEST(NginxErrorTest, LocalTimeIsReadInTheParsersZone) {
  LineParser p(LogFormat::LOG_FORMAT_NGINX_ERROR, absl::FixedTimeZone(-5 * 3600));
  ParsedLine out;
  ASSERT_THAT(p.Parse("2026/03/03 14:02:01 [error] 1#0: *1 m", absl::Now(), &out), IsOk());
  EXPECT_EQ(*out.time, Utc("2026-03-03T19:02:01Z"));
}

TEST(NginxErrorTest, MalformedLinesNameWhatAndWhere) {
  LineParser p(LogFormat::LOG_FORMAT_NGINX_ERROR);
  ParsedLine out;
  EXPECT_THAT(p.Parse("2026/03/3 14:02:01 [error] 1#0: m", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad time at column 1")));
  EXPECT_THAT(p.Parse("2026/03/03 14:02:01 [fatal] 1#0: m", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no [level] at column 21")));
  EXPECT_THAT(p.Parse("2026/03/03 14:02:01 [error] 1: m", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("no \"PID#TID: \" at column 29")));
  EXPECT_THAT(p.Parse("2026/03/03 14:02:01 [error]", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no [level]")));
  EXPECT_THAT(p.Parse("2026/02/30 14:02:01 [error] 1#0: m", absl::Now(), &out),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("bad date at column 1")));
  EXPECT_THAT(p.Parse("2026/03/03 25:02:01 [error] 1#0: m", absl::Now(), &out),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("out of range")));
  EXPECT_THAT(p.Parse("", absl::Now(), &out), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(NginxErrorTest, RelayedThroughSyslog) {
  LineParser p(LogFormat::LOG_FORMAT_NGINX_ERROR);
  ParsedLine out;
  // error_log syslog:server=...: the syslog header, then nginx's level, pid and message.
  ASSERT_THAT(p.Parse("Mar  3 14:02:01 web-1 nginx: [error] 88#88: *9 limiting requests, excess: "
                      "1.2 by zone \"one\", client: 203.0.113.7, server: x",
                      Utc("2026-03-04T00:00:00Z"), &out),
              IsOk());
  EXPECT_EQ(out.host, "web-1");
  EXPECT_EQ(out.program, "nginx");
  EXPECT_EQ(out.pid, "88");
  EXPECT_EQ(*out.time, Utc("2026-03-03T14:02:01Z"));
  EXPECT_EQ(out.message.substr(0, 18), "limiting requests,");
  // A relay that kept nginx's own time in front of it.
  ASSERT_THAT(p.Parse("Mar  3 14:02:05 web-1 nginx: 2026/03/03 14:02:01 [warn] 88#88: *9 m",
                      Utc("2026-03-04T00:00:00Z"), &out),
              IsOk());
  EXPECT_EQ(*out.time, Utc("2026-03-03T14:02:01Z"));
  EXPECT_EQ(out.message, "m");
  EXPECT_THAT(p.Parse("Mar  3 14:02:01", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("nginx_error: syslog:")));
}

TEST(ApacheErrorTest, Apache24MessageStartsAtTheClientField) {
  LineParser p(LogFormat::LOG_FORMAT_APACHE_ERROR);
  ParsedLine out;
  ASSERT_THAT(p.Parse("[Tue Mar 03 14:02:01.123456 2026] [auth_basic:error] [pid 1234:tid 5] "
                      "[client 203.0.113.7:51234] AH01618: user x not found: /admin",
                      absl::Now(), &out),
              IsOk());
  EXPECT_EQ(out.program, "apache");
  EXPECT_EQ(out.pid, "1234");
  EXPECT_EQ(out.message, "[client 203.0.113.7:51234] AH01618: user x not found: /admin");
  EXPECT_EQ(*out.time, Utc("2026-03-03T14:02:01.123456Z"));
  // No tid, an empty module, an IPv6 client.
  ASSERT_THAT(p.Parse("[Mon Dec 23 07:49:01.981912 2013] [:error] [pid 3790] "
                      "[client [2001:db8::7]:46301] script '/var/www/x.php' not found or unable "
                      "to stat",
                      absl::Now(), &out),
              IsOk());
  EXPECT_EQ(out.pid, "3790");
  EXPECT_EQ(out.message.substr(0, 28), "[client [2001:db8::7]:46301]");
  // trace levels, and ErrorLogFormat's %{cu}t time.
  ASSERT_THAT(p.Parse("[2026-03-03 14:02:01.500000] [ssl:trace3] [pid 7] m", absl::Now(), &out),
              IsOk());
  EXPECT_EQ(*out.time, Utc("2026-03-03T14:02:01.5Z"));
  EXPECT_EQ(out.message, "m");
}

TEST(ApacheErrorTest, Apache22HasNoPid) {
  LineParser p(LogFormat::LOG_FORMAT_APACHE_ERROR, absl::FixedTimeZone(3600));
  ParsedLine out;
  ASSERT_THAT(p.Parse("[Tue Mar 03 14:02:01 2026] [error] [client 203.0.113.7] File does not "
                      "exist: /var/www/x",
                      absl::Now(), &out),
              IsOk());
  EXPECT_EQ(out.pid, "");
  EXPECT_EQ(out.message, "[client 203.0.113.7] File does not exist: /var/www/x");
  EXPECT_EQ(*out.time, Utc("2026-03-03T13:02:01Z"));  // local time, an hour ahead of UTC
}

// A field whose ']' is not where the field can end (the parsers look no further for it) is
// refused at the column where the field starts, whatever closes later in the line.
TEST(ErrorLogTest, UnclosedFieldsAreRefusedWhereTheyStart) {
  const std::string tail(4096, 'x');
  LineParser nginx(LogFormat::LOG_FORMAT_NGINX_ERROR);
  LineParser apache(LogFormat::LOG_FORMAT_APACHE_ERROR);
  ParsedLine out;
  EXPECT_THAT(nginx.Parse(absl::StrCat("2026/03/03 14:02:01 [error ", tail, "]"), absl::Now(),
                          &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no [level] at column 21")));
  EXPECT_THAT(apache.Parse(absl::StrCat("[Tue Mar 03 14:02:01 2026 ", tail, "]"), absl::Now(),
                           &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no [time] at column 1")));
  EXPECT_THAT(apache.Parse(absl::StrCat("[Tue Mar 03 14:02:01 2026] [core:", tail, "]"),
                           absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("no [module:level] at column 28")));
}

TEST(ApacheErrorTest, RelayedThroughSyslog) {
  LineParser p(LogFormat::LOG_FORMAT_APACHE_ERROR);
  ParsedLine out;
  // ErrorLog syslog: no time field of its own.
  ASSERT_THAT(p.Parse("Feb 15 16:23:00 srv httpd[22034]: [authz_core:error] [pid 22035] "
                      "[client 192.0.2.1:58585] AH01630: client denied by server configuration",
                      Utc("2026-03-01T00:00:00Z"), &out),
              IsOk());
  EXPECT_EQ(out.host, "srv");
  EXPECT_EQ(out.program, "apache");
  EXPECT_EQ(out.pid, "22035");
  EXPECT_EQ(*out.time, Utc("2026-02-15T16:23:00Z"));
  EXPECT_EQ(out.message.substr(0, 25), "[client 192.0.2.1:58585] ");
  ASSERT_THAT(p.Parse("Feb 16 22:32:48 srv httpd[22034]: [error] [client 127.0.0.1] user x not "
                      "found: /basic/file",
                      Utc("2026-03-01T00:00:00Z"), &out),
              IsOk());
  EXPECT_EQ(out.pid, "22034");  // the syslog tag's, when Apache wrote none
  EXPECT_EQ(out.message, "[client 127.0.0.1] user x not found: /basic/file");
}

TEST(ApacheErrorTest, MalformedLinesNameWhatAndWhere) {
  LineParser p(LogFormat::LOG_FORMAT_APACHE_ERROR);
  ParsedLine out;
  EXPECT_THAT(p.Parse("[yesterday] [error] m", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no [time] at column 1")));
  EXPECT_THAT(p.Parse("[Tue Mar 03 14:02:01 2026] [core:fatal] m", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("no [module:level] at column 28")));
  EXPECT_THAT(p.Parse("[Tue Mar 03 14:02:01 2026] [core:error] [pid x] m", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("bad [pid] field at column 41")));
  EXPECT_THAT(p.Parse("[Tue Mar 03 14:02:01 2026] [error]x", absl::Now(), &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("space at column 35")));
  EXPECT_THAT(p.Parse("[Tue Feb 31 14:02:01 2026] [error] m", absl::Now(), &out),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("impossible time at column 1")));
  EXPECT_THAT(p.Parse(absl::StrCat("[Tue Mar 03 14:02:01.", std::string(12, '1'),
                                   " 2026] [error] m"),
                      absl::Now(), &out),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("9 digits")));
  EXPECT_THAT(p.Parse("", absl::Now(), &out), StatusIs(absl::StatusCode::kInvalidArgument));
}

// A raw line is matched whole, but a service's own log (vsftpd.log, MySQL's and PostgreSQL's
// error logs, exim's mainlog, Asterisk's messages, ...) starts with the server's time stamp:
// that is the line's time. Without it every line read at a first start (a week of a file read
// from its start) counted at one instant: five typos spread over days made a ban.
struct RawCase {
  std::string line;
  std::string time;  // RFC 3339
};

void ExpectRawTimes(LineParser* p, const std::vector<RawCase>& cases, absl::Time reference) {
  for (const RawCase& c : cases) {
    SCOPED_TRACE(c.line);
    ParsedLine out;
    ASSERT_THAT(p->Parse(c.line, reference, &out), IsOk());
    EXPECT_EQ(out.message, c.line);  // the whole line, stamp and all: no rule changes
    EXPECT_EQ(out.host, "");
    EXPECT_EQ(out.program, "");
    EXPECT_EQ(out.pid, "");
    ASSERT_TRUE(out.time.has_value());
    EXPECT_EQ(*out.time, Utc(c.time));
    EXPECT_FALSE(out.year_inferred);
    EXPECT_FALSE(out.time_repeated);
  }
}

TEST(RawTest, ALeadingTimeStampIsTheLinesTime) {
  const std::vector<RawCase> cases = {
      // vsftpd (ctime, as Apache's error log writes it; vsftpd's use_localtime=NO is UTC).
      {"Tue Mar  3 14:02:01 2026 [pid 2101] CONNECT: Client \"203.0.113.7\"",
       "2026-03-03T14:02:01Z"},
      {"Fri Jan 19 12:20:33 2007 [pid 27202] [anonymous] FAIL LOGIN: Client \"64.106.46.98\"",
       "2007-01-19T12:20:33Z"},
      {"Thu Sep  8 00:39:49 2016 [pid 15019] [guest] FAIL LOGIN: Client \"::ffff:192.0.2.1\"",
       "2016-09-08T00:39:49Z"},
      // exim's mainlog; with log_timezone, its offset after a space.
      {"2026-03-03 14:02:01 [4211] plain authenticator failed for (ylmf-pc) [203.0.113.60]:51234",
       "2026-03-03T14:02:01Z"},
      {"2026-03-03 14:02:01 +0100 [4211] plain authenticator failed", "2026-03-03T13:02:01Z"},
      // MySQL 5.7/8, MariaDB, MySQL 5.1-5.5 (yymmdd, the hour space-padded).
      {"2026-03-03T14:02:01.123456Z 12 [Note] [MY-010926] [Server] Access denied",
       "2026-03-03T14:02:01.123456Z"},
      {"2026-03-03 14:02:02 14 [Warning] Access denied for user 'admin'@'203.0.113.8'",
       "2026-03-03T14:02:02Z"},
      {"260303 14:02:03 [Warning] Access denied for user 'wp'@'2001:db8::8'",
       "2026-03-03T14:02:03Z"},
      {"260303  4:02:03 [Warning] Access denied for user 'wp'@'2001:db8::8'",
       "2026-03-03T04:02:03Z"},
      // PostgreSQL's %m / %t: a zone abbreviation after the time.
      {"2026-03-03 14:02:01.120 UTC [41234] [unknown]@[unknown] 203.0.113.7 LOG:  connection",
       "2026-03-03T14:02:01.120Z"},
      {"2026-03-03 14:02:01 GMT [41234] postgres@postgres FATAL:  password authentication failed",
       "2026-03-03T14:02:01Z"},
      // ISO 8601 with a comma fraction (proftpd, Python's logging), offsets, Z (MongoDB, ...).
      {"2026-03-03 14:40:30,101 ftp1 proftpd[6130] ftp1.example.com", "2026-03-03T14:40:30.101Z"},
      {"2026-03-03T14:02:19.118+0000 I NETWORK  [listener] connection accepted",
       "2026-03-03T14:02:19.118Z"},
      {"2026-03-03T14:02:01.123+01:00 x", "2026-03-03T13:02:01.123Z"},
      {"2026-03-03T14:02:04.667Z: Failed Login: username=root ip=203.0.113.102",
       "2026-03-03T14:02:04.667Z"},
      {"2026-03-03 14:02:08: (mod_auth.c.525) password doesn't match", "2026-03-03T14:02:08Z"},
      {"2026-03-03 14:02:01.123 +01:00 [pid] x", "2026-03-03T13:02:01.123Z"},
      // In brackets: Asterisk, nsd, Vaultwarden; Kerio Connect, Roundcube.
      {"[2026-03-03 14:02:01] NOTICE[19388] res_pjsip/pjsip_distributor.c: Request 'REGISTER'",
       "2026-03-03T14:02:01Z"},
      {"[2026-03-03 14:02:08.123] nsd[911]: info: axfr for example.com. from 203.0.113.10 refused",
       "2026-03-03T14:02:08.123Z"},
      {"[2026-03-03 14:02:01.118][vaultwarden::api::identity][ERROR] Username or password",
       "2026-03-03T14:02:01.118Z"},
      {"[03/Mar/2026 14:02:01] Failed SMTP login from 203.0.113.40 with SASL method LOGIN.",
       "2026-03-03T14:02:01Z"},
      {"[03-Mar-2026 14:02:01 +0100]: <b7c1e9a2> Failed login for admin from 203.0.113.5",
       "2026-03-03T13:02:01Z"},
      // A stamp and nothing else.
      {"2026-03-03 14:02:01", "2026-03-03T14:02:01Z"},
      // Unix seconds, with a fraction or not, in brackets or not: Squid's native access.log,
      // portsentry, nsd.
      {"1386543323.000      4 91.188.124.227 TCP_DENIED/403 4099 GET "
       "http://www.proxy-listen.de/azenv.php - HIER_NONE/- text/html",
       "2013-12-08T22:55:23Z"},
      {"1772546521.118    120 203.0.113.41 TCP_DENIED/403 3722 GET http://198.51.100.71/ - "
       "HIER_NONE/- text/html",
       "2026-03-03T14:02:01.118Z"},
      {"1403884279 - 06/27/2014 17:51:19 Host: 192.168.56.1/192.168.56.1 Port: 1 TCP Blocked",
       "2014-06-27T15:51:19Z"},
      {"[1387288694] nsd[7745]: info: ratelimit block example.com. type any target "
       "192.0.2.0/24 query 192.0.2.105 TYPE255",
       "2013-12-17T13:58:14Z"},
      {"9999999999.999999999 x", "2286-11-20T17:46:39.999999999Z"},
      // TAI64N (daemontools' multilog, runit's and s6's loggers, dovecot through them): the
      // label less 2^62 and TAI's 10 s lead over UTC at 1970, as tai64nlocal reads it.
      {"@400000004c91b044077a9e94 imap-login: Info: Aborted login (auth failed, 1 attempts): "
       "user=<martin@example.com>, method=CRAM-MD5, rip=80.187.101.33, lip=80.254.129.240, TLS",
       "2010-09-16T05:50:50.1254765Z"},
      {"@400000004c91b0443b9ac9ff x", "2010-09-16T05:50:50.999999999Z"},
      // MariaDB 10.x: the hour space-padded after two spaces.
      {"2015-10-07  8:25:38 139817458968320 [Warning] Access denied for user 'root'@'192.0.2.7' "
       "(using password: YES)",
       "2015-10-07T08:25:38Z"},
      {"2015-10-07 18:25:38 139817458968320 [Warning] Access denied", "2015-10-07T18:25:38Z"},
  };
  LineParser p(LogFormat::LOG_FORMAT_RAW);
  ExpectRawTimes(&p, cases, Utc("2026-06-01T00:00:00Z"));
}

// "Mmm dd hh:mm:ss" (dovecot's log_path, older Asterisk in brackets) has no year: it comes
// from the reference as for a syslog line, and the line says so.
TEST(RawTest, ASyslogLikeStampTakesItsYearFromTheReference) {
  LineParser p(LogFormat::LOG_FORMAT_RAW);
  ParsedLine out;
  for (absl::string_view line :
       {"Mar  3 14:04:00 imap-login: Info: Disconnected (auth failed, 1 attempts in 2 secs)",
        "Mar 3 14:04:00 auth-worker(900): Info: pam(admin,203.0.113.65): unknown user",
        "Mar 03 14:04:00 auth: Info: x", "[Mar  3 14:04:00] NOTICE[1234] chan_sip.c: x"}) {
    SCOPED_TRACE(line);
    ASSERT_THAT(p.Parse(line, Utc("2026-06-01T00:00:00Z"), &out), IsOk());
    EXPECT_EQ(out.message, line);
    ASSERT_TRUE(out.time.has_value());
    EXPECT_EQ(*out.time, Utc("2026-03-03T14:04:00Z"));
    EXPECT_TRUE(out.year_inferred);
  }
  // At New Year: now in January, a December line is last year's; the previous line nearest.
  ASSERT_THAT(p.Parse("Dec 31 23:59:59 auth: x", Utc("2026-01-01T00:00:05Z"), &out), IsOk());
  ASSERT_TRUE(out.time.has_value());
  EXPECT_EQ(*out.time, Utc("2025-12-31T23:59:59Z"));
  ASSERT_THAT(p.Parse("Jan  1 00:00:03 auth: x", *out.time, &out, YearRule::kNearest), IsOk());
  ASSERT_TRUE(out.time.has_value());
  EXPECT_EQ(*out.time, Utc("2026-01-01T00:00:03Z"));
  // With no reference to take a year from, no time (the line is still read).
  ASSERT_THAT(p.Parse("Mar  3 14:04:00 auth: x", absl::InfiniteFuture(), &out), IsOk());
  EXPECT_FALSE(out.time.has_value());
  EXPECT_EQ(out.message, "Mar  3 14:04:00 auth: x");
}

// A time without an offset is read in the source's zone (Config.time_zone /
// FileInput.time_zone), as for every other format; an abbreviation after it names which of the
// zone's offsets it is (PostgreSQL's log_timezone writes "CET" / "CEST"), which also settles an
// hour the zone repeats.
TEST(RawTest, ZonelessTimesAreReadInTheSourcesZone) {
  LineParser p(LogFormat::LOG_FORMAT_RAW, Zone("Europe/Berlin"));
  const std::vector<RawCase> cases = {
      {"Thu Jan 15 09:00:00 2026 [pid 1] [u] FAIL LOGIN: Client \"203.0.113.7\"",
       "2026-01-15T08:00:00Z"},
      {"2026-01-15 09:00:00 [4211] x", "2026-01-15T08:00:00Z"},
      {"2026-07-15 09:00:00 [4211] x", "2026-07-15T07:00:00Z"},
      {"[2026-07-15 09:00:00] NOTICE[1] x", "2026-07-15T07:00:00Z"},
      {"260715  9:00:00 [Warning] x", "2026-07-15T07:00:00Z"},
      {"[15/Jul/2026 09:00:00] x", "2026-07-15T07:00:00Z"},
      {"2026-07-15 09:00:00.250 CEST [41234] x", "2026-07-15T07:00:00.250Z"},
      {"2026-01-15 09:00:00.250 CET [41234] x", "2026-01-15T08:00:00.250Z"},
      // UTC is UTC in any zone; an offset is the offset.
      {"2026-07-15 09:00:00.250 UTC [41234] x", "2026-07-15T09:00:00.250Z"},
      {"2026-07-15T09:00:00Z x", "2026-07-15T09:00:00Z"},
      {"2026-07-15 09:00:00 +0000 [1] x", "2026-07-15T09:00:00Z"},
      // 25 October 2026, 02:00-02:59 happens twice in Berlin: the abbreviation says which.
      {"2026-10-25 02:30:00.000 CEST [1] x", "2026-10-25T00:30:00Z"},
      {"2026-10-25 02:30:00.000 CET [1] x", "2026-10-25T01:30:00Z"},
      // An abbreviation the zone does not use is no zone: the time is read in the source's zone.
      {"2026-07-15 09:00:00 PDT [1] x", "2026-07-15T07:00:00Z"},
      // MariaDB's padded hour is local as the ISO stamp is; Unix seconds and TAI64N are UTC.
      {"2026-07-15  9:00:00 139817458968320 [Warning] x", "2026-07-15T07:00:00Z"},
      {"1784106000 - x", "2026-07-15T09:00:00Z"},
      {"@400000006a574c1a00000000 x", "2026-07-15T09:00:00Z"},
  };
  ExpectRawTimes(&p, cases, Utc("2026-11-01T00:00:00Z"));
  ParsedLine out;
  ASSERT_THAT(p.Parse("Jul 15 09:00:00 auth: x", Utc("2026-11-01T00:00:00Z"), &out), IsOk());
  ASSERT_TRUE(out.time.has_value());
  EXPECT_EQ(*out.time, Utc("2026-07-15T07:00:00Z"));
  // Without an abbreviation, a repeated hour is the occurrence nearer the reference, as for
  // every other format.
  ASSERT_THAT(p.Parse("2026-10-25 02:30:00 [1] x", Utc("2026-10-25T01:31:00Z"), &out), IsOk());
  ASSERT_TRUE(out.time.has_value());
  EXPECT_EQ(*out.time, Utc("2026-10-25T01:30:00Z"));
  EXPECT_TRUE(out.time_repeated);
}

// What is not one of those stamps leaves the line without a time, as before: a line that
// starts with digits, a word, a stamp glued to more digits, a stamp whose date cannot be. The
// line is never refused for it: it is matched whole all the same.
TEST(RawTest, ALineWithoutAStampHasNoTime) {
  LineParser p(LogFormat::LOG_FORMAT_RAW);
  for (absl::string_view line : {
           // MariaDB's padded hour cut short (a line truncated mid-stamp): read no further than
           // its end (the shape's check indexed a byte past it).
           "2015-10-07  8:25", "[2015-10-07  8:25", "2015-10-07  8:25:3", "2015-10-07  8:2",
           "12345 something",
           "2026 was a year",
           "123456 12:00:00 [Warning] not a date (month 34)",
           "1234567 12:00:00 x",
           "20260303 14:02:01 x",
           "2026-03-03 14:02:0123 x",
           "2026-03-03 14:02:01x",
           "2026-02-30 14:02:01 x",
           "2026-03-03 25:02:01 x",
           "Tue Mar  3 14:02:01 20265 x",
           "Mar 32 14:02:01 x",
           "March 3 14:02:01 x",
           "Mar  3 14:02 x",
           "Marvin said hello",
           "[2026-03-03] x",
           "[] x",
           "env: CLOUDFLARE_API_TOKEN= NODE_ENV=production",
           "{\"time\":\"2026-03-03T14:02:01Z\"}",
           "hot path /a b",
           "1970-01-01 00:00:12 a clock never set: no time, not a line dropped",
           "Thu Jan  1 00:00:12 1970 x",
           // Not Unix seconds: too few or too many digits, glued to a letter, a fraction of no
           // or too many digits, a leading zero (before 2001), an unclosed bracket.
           "12345 x",
           "123456789 - 06/27/2014 17:51:19 Host: 192.0.2.1",
           "12345678901 - 06/27/2014 17:51:19 Host: 192.0.2.1",
           "1234567890x and more text",
           "1386543323. 4 x TCP_DENIED/403",
           "1386543323.0000000001 4 x TCP_DENIED/403",
           "1386543323.000x 4 x TCP_DENIED/403",
           "1386543323-000 4 x TCP_DENIED/403",
           "0946684800 - a leading zero",
           "[1387288694 nsd[7745]: info: x",
           "1387288694] nsd[7745]: info: x",
           // Not TAI64N: no hex, upper case, nanoseconds past 999999999, too short, glued, a
           // label before 2000 or past TAI64's range.
           "@4000zz004c91b044077a9e94 imap-login: x",
           "@400000004C91B044077A9E94 imap-login: x",
           "@400000004c91b0443b9aca00 imap-login: x",
           "@400000004c91b044077a9e9 imap-login: x",
           "@400000004c91b044077a9e94x imap-login: x",
           "@400000002c91b044077a9e94 imap-login: x",
           "@c00000004c91b044077a9e94 imap-login: x",
           // MariaDB's padded hour out of range or glued.
           "2015-10-07  8:65:38 139817458968320 [Warning] x",
           "2015-10-07  8:25:381 [Warning] x",
           "2015-10-07   8:25:38 [Warning] x",
           "",
       }) {
    SCOPED_TRACE(line);
    ParsedLine out;
    ASSERT_THAT(p.Parse(line, Utc("2026-06-01T00:00:00Z"), &out), IsOk());
    EXPECT_EQ(out.message, line);
    EXPECT_FALSE(out.time.has_value());
  }
}

// The stamps of services whose logs the shipped raw rules read, each with one reading (the
// year first, the month named, or a writer that always puts the month first). Untimed, a
// backlog of such lines (a first start, a file read from its top, `palisadectl ship`) counted
// at one instant: five failures over a month made a ban.
TEST(RawTest, StampsWithOneReadingAreTheLinesTime) {
  const std::vector<RawCase> utc_cases = {
      // stunnel's own log; DirectAdmin's login.log.
      {"2011.11.21 14:29:16 LOG3[28228:140093368055552]: SSL_accept from 10.7.41.61:33454 : x",
       "2011-11-21T14:29:16Z"},
      {"2014:07:02-00:17:45: '3.2.1.4' 2 failed login attempts. Account 'test'",
       "2014-07-02T00:17:45Z"},
      // Half-Life / Source rcon: the month first, always (31 is no month).
      {"L 01/31/2014 - 01:25:17: Bad Rcon: \"rcon 1 \"x\" status\" from \"203.0.113.9:57370\"",
       "2014-01-31T01:25:17Z"},
      // auditd (UTC seconds and milliseconds), with the node= prefix or not.
      {"type=USER_AUTH msg=audit(1373129280.000:9): user pid=1277 uid=0 auid=4294967295",
       "2013-07-06T16:48:00Z"},
      {"node=web-1 type=USER_ERR msg=audit(1373330717.123:4070): user pid=12000 uid=0",
       "2013-07-09T00:45:17.123Z"},
      // ASSP's "Mmm-dd-yy".
      {"Apr-07-13 07:08:36 [SSL-out] 68.171.223.68 SSL negotiation with client failed",
       "2013-04-07T07:08:36Z"},
      // macOS: the year after the day.
      {"Oct 27 2015 12:35:40 test1.example.net screensharingd[1170]: Authentication: FAILED",
       "2015-10-27T12:35:40Z"},
      // An ISO stamp after a fixed prefix: Murmur, Oracle Messaging, Grafana 7, Tine 2.0.
      {"<W>2015-11-29 16:38:01.818 1 => <4:x(-1)> Rejected connection from 192.0.2.1:29530",
       "2015-11-29T16:38:01.818Z"},
      {"<co ts=\"2014-06-02T16:06:33.99\" pi=\"72aa.17f0.25622\" sc=\"tcp_local\" dr=\"+\"",
       "2014-06-02T16:06:33.99Z"},
      {"t=2020-10-19T17:44:33+0200 lvl=eror msg=\"Invalid username or password\"",
       "2020-10-19T15:44:33Z"},
      {"78017 00cff -- none -- - 2014-01-13T05:02:22+00:00 WARN (4): Tinebase_Controller::login",
       "2014-01-13T05:02:22Z"},
  };
  LineParser p(LogFormat::LOG_FORMAT_RAW);
  ExpectRawTimes(&p, utc_cases, Utc("2026-06-01T00:00:00Z"));
  // Without an offset, local: in the source's zone. auditd's seconds and an offset are not.
  const std::vector<RawCase> berlin_cases = {
      {"2026.07.15 09:00:00 LOG3[1]: x", "2026-07-15T07:00:00Z"},
      {"2026:07:15-09:00:00: x", "2026-07-15T07:00:00Z"},
      {"L 07/15/2026 - 09:00:00: x", "2026-07-15T07:00:00Z"},
      {"Jul-15-26 09:00:00 x", "2026-07-15T07:00:00Z"},
      {"Jul 15 2026 09:00:00 h x: y", "2026-07-15T07:00:00Z"},
      {"<W>2026-07-15 09:00:00.000 1 => x", "2026-07-15T07:00:00Z"},
      {"<co ts=\"2026-07-15T09:00:00.00\" x", "2026-07-15T07:00:00Z"},
      {"type=USER_AUTH msg=audit(1784106000.000:1): x", "2026-07-15T09:00:00Z"},
      {"t=2026-07-15T09:00:00+0000 x", "2026-07-15T09:00:00Z"},
  };
  LineParser berlin(LogFormat::LOG_FORMAT_RAW, Zone("Europe/Berlin"));
  ExpectRawTimes(&berlin, berlin_cases, Utc("2026-11-01T00:00:00Z"));
}

// Monit's "[ZONE Mmm dd hh:mm:ss]" has no year (the syslog stamp's rule) but a zone: its offset
// when the source's zone uses it then (or UTC, GMT), else no zone. A yearless stamp may carry a
// fraction (fail2ban's date template), kept as in a syslog line.
TEST(RawTest, AYearlessStampMayCarryAZoneOrAFraction) {
  struct Case {
    std::string zone;
    std::string line;
    std::string time;
  };
  for (const Case& c : std::vector<Case>{
           {"UTC", "[PDT Apr 16 21:05:29] error    : Warning: Client '69.93.127.111' supplied",
            "2026-04-16T21:05:29Z"},
           {"America/Los_Angeles", "[PDT Apr 16 21:05:29] error    : x", "2026-04-17T04:05:29Z"},
           {"America/Los_Angeles", "[UTC Apr 16 21:05:29] error    : x", "2026-04-16T21:05:29Z"},
           {"Europe/Berlin", "[CEST Aug  6 10:14:52] error    : x", "2025-08-06T08:14:52Z"},
           // 26 October 2025, 02:00-02:59 happens twice in Berlin: the abbreviation says which.
           {"Europe/Berlin", "[CEST Oct 26 02:30:00] error    : x", "2025-10-26T00:30:00Z"},
           {"Europe/Berlin", "[CET Oct 26 02:30:00] error    : x", "2025-10-26T01:30:00Z"},
           {"UTC", "Mar  3 14:02:01.123456 auth: Info: x", "2026-03-03T14:02:01.123456Z"},
           {"UTC", "[Mar 3 14:02:01.5] NOTICE[1] x", "2026-03-03T14:02:01.5Z"},
       }) {
    SCOPED_TRACE(c.line);
    LineParser p(LogFormat::LOG_FORMAT_RAW, Zone(c.zone));
    ParsedLine out;
    ASSERT_THAT(p.Parse(c.line, Utc("2026-06-01T00:00:00Z"), &out), IsOk());
    EXPECT_EQ(out.message, c.line);
    ASSERT_TRUE(out.time.has_value());
    EXPECT_EQ(*out.time, Utc(c.time));
    EXPECT_TRUE(out.year_inferred);
  }
}

// Look-alikes of those stamps stay untimed: another order of the fields, a day-first or
// month-first date with nothing to tell which, a month that is none, a user's text before the
// stamp, a stamp glued to a letter.
TEST(RawTest, LookAlikesOfStampsWithOneReadingHaveNoTime) {
  LineParser p(LogFormat::LOG_FORMAT_RAW);
  for (absl::string_view line : {
           "2011.11.21T14:29:16 LOG3[1]: x",
           "2011.13.21 14:29:16 LOG3[1]: x",
           "2011-11.21 14:29:16 LOG3[1]: x",
           "2011.11.21 14.29.16 LOG3[1]: x",
           "2011.11.21 14:29:16x",
           "2014:07:02 00:17:45: x",
           "2014:07:32-00:17:45: x",
           "2014:02:30-00:17:45: x",
           "2014.07:02-00:17:45: x",
           // Bare day-first or month-first dates (SquirrelMail, Domino, 3proxy, FreeSWITCH).
           "10/06/2013 15:50:41 [LOGIN_ERROR] x",
           "03-07-2005 23:07:20   SMTP Server: x",
           "11-06-2013 02:09:40 +0300 PROXY.3128 x",
           "08-03 08:10:21.026299 [WARN] x",
           "L 13/01/2014 - 01:25:17: x",
           "L 01/01/2014 01:25:17: x",
           "L 01/01/14 - 01:25:17: x",
           "L 01-01-2014 - 01:25:17: x",
           "Log 01/01/2014 - 01:25:17: x",
           "Abc-07-13 07:08:36 x",
           "Apr-32-13 07:08:36 x",
           "APR-07-13 07:08:36 x",
           "Apr-07-2013 07:08:36 x",
           "Apr-07-13 07:08 x",
           "Oct 27 20155 12:35:40 h x: y",
           "Oct 27 2015 12:35 h x: y",
           "[PDT Apx 16 21:05:29] x",
           "[P Apr 16 21:05:29] x",
           "[ABCDEF Apr 16 21:05:29] x",
           "PDT Apr 16 21:05:29 x",
           "[PDT Apr 16 21:05] x",
           "type=USER_AUTH msg=audit(137312928.000:9): x",
           "type=USER_AUTH msg=audit(1373129280:9): x",
           "type=USER_AUTH msg=audit(1373129280.00:9): x",
           "type=USER_AUTH msg=audit(1373129280.000:): x",
           "type=USER_AUTH msg=audit(1373129280.000:9 x",
           "type=user_auth msg=audit(1373129280.000:9): x",
           "type=USER_AUTH msg=audit(0373129280.000:9): x",
           "node= type=USER_AUTH msg=audit(1373129280.000:9): x",
           "user x type=USER_AUTH msg=audit(1373129280.000:9): x",
           "<w>2015-11-29 16:38:01.818 1 => x",
           "<W> 2015-11-29 16:38:01.818 1 => x",
           "<WW>2015-11-29 16:38:01.818 1 => x",
           "<W>2015-11-29 16:38:01x",
           "<co tx=\"2014-06-02T16:06:33.99\" x",
           "<CO ts=\"2014-06-02T16:06:33.99\" x",
           "<co ts=\"2014-06-02T16:06:33.99x\" x",
           // Grafana 8 writes t= after the client's uname=: not read.
           "logger=context userId=0 orgId=0 uname=admin t=2026-03-03T14:02:01.118+00:00 x",
           "tt=2020-10-19T17:44:33+0200 x",
           "t=2020-10-19 x",
           "78017 00cff alice - 2014-01-13T05:02:22+00:00 WARN (4): x",
           "78017 00cfg -- none -- - 2014-01-13T05:02:22+00:00 WARN (4): x",
           "Mar  3 14:02:01.1234567890 auth: x",
       }) {
    SCOPED_TRACE(line);
    ParsedLine out;
    ASSERT_THAT(p.Parse(line, Utc("2026-06-01T00:00:00Z"), &out), IsOk());
    EXPECT_EQ(out.message, line);
    EXPECT_FALSE(out.time.has_value());
  }
}

// A copy of `text` at the very end of a readable page, a page that cannot be read after it: a
// parser that reads one byte past the end of the line faults, in any build (the fuzz target
// finds the same under ASan, which this test cannot count on).
class GuardedLine {
 public:
  explicit GuardedLine(absl::string_view text) {
    page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* base =
        mmap(nullptr, 2 * page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT_NE(base, MAP_FAILED);
    base_ = static_cast<char*>(base);
    EXPECT_EQ(mprotect(base_ + page_, page_, PROT_NONE), 0);
    char* const start = base_ + page_ - text.size();
    std::memcpy(start, text.data(), text.size());
    view_ = absl::string_view(start, text.size());
  }
  ~GuardedLine() { munmap(base_, 2 * page_); }
  GuardedLine(const GuardedLine&) = delete;
  GuardedLine& operator=(const GuardedLine&) = delete;
  absl::string_view view() const { return view_; }

 private:
  size_t page_;
  char* base_;
  absl::string_view view_;
};

// A line cut anywhere inside one of those stamps (a partial write, a truncated file) is read no
// further than its end, and before the stamp's seconds it has no time.
TEST(RawTest, ALineCutInsideAStampIsReadNoFurtherThanItsEnd) {
  struct Case {
    std::string line;
    size_t seconds_end;  // where the stamp's seconds end: a shorter cut has no time
  };
  for (const Case& c : std::vector<Case>{
           {"2011.11.21 14:29:16 LOG3[1]: x", 19},
           {"2014:07:02-00:17:45: x", 19},
           {"L 01/31/2014 - 01:25:17: x", 23},
           {"node=web-1 type=USER_AUTH msg=audit(1373129280.000:9): x", 53},
           {"Apr-07-13 07:08:36 x", 18},
           {"Oct 27 2015 12:35:40 h x: y", 20},
           {"[PDT Apr 16 21:05:29] error", 20},
           {"Mar  3 14:02:01.123456 auth: x", 15},
           {"<W>2015-11-29 16:38:01.818 1 => x", 22},
           {"<co ts=\"2014-06-02T16:06:33.99\" x", 27},
           {"t=2020-10-19T17:44:33+0200 x", 21},
           {"78017 00cff -- none -- - 2014-01-13T05:02:22+00:00 WARN", 44},
       }) {
    LineParser p(LogFormat::LOG_FORMAT_RAW);
    for (size_t n = 0; n <= c.line.size(); ++n) {
      const GuardedLine cut(absl::string_view(c.line).substr(0, n));
      SCOPED_TRACE(cut.view());
      ParsedLine out;
      ASSERT_THAT(p.Parse(cut.view(), Utc("2026-06-01T00:00:00Z"), &out), IsOk());
      EXPECT_EQ(out.message, cut.view());
      if (n < c.seconds_end) EXPECT_FALSE(out.time.has_value());
    }
    ParsedLine whole;
    ASSERT_THAT(p.Parse(c.line, Utc("2026-06-01T00:00:00Z"), &whole), IsOk());
    EXPECT_TRUE(whole.time.has_value()) << c.line;
  }
}

}  // namespace
}  // namespace palisade
