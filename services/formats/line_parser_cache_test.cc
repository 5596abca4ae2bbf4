// LineParser's caches (the day's midnight, the year's span, the nearest-year shortcut) against
// the zone's rules: every line of the generated corpora and of hostile sequences (offset
// changes, a time zone change mid-file, New Year, a leap day, dates that do not exist) parsed
// by a parser with its caches and one without (DisableCachesForTesting) gives the same status
// and the same fields, in the order the pipeline feeds them (each line's reference the previous
// line's time) and with a fixed "now".
#include <random>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "services/formats/line_parser.h"
#include "tests/corpus/corpus.h"

namespace palisade {
namespace {

using palisade::v1::LogFormat;

absl::TimeZone Zone(const std::string& name) {
  absl::TimeZone tz;
  EXPECT_TRUE(absl::LoadTimeZone(name, &tz)) << name;
  return tz;
}

// Zones with offset changes of every kind: none, an hour at 02:00, half an hour (Lord Howe),
// at midnight (Sao Paulo until 2019: 4 November 2018 had no 00:00), and a fixed offset.
std::vector<absl::TimeZone> Zones() {
  return {absl::UTCTimeZone(), Zone("America/New_York"), Zone("Australia/Lord_Howe"),
          Zone("America/Sao_Paulo"), absl::FixedTimeZone(-(9 * 3600 + 30 * 60))};
}

absl::Time Utc(int y, int m, int d, int hh, int mm, int ss) {
  return absl::FromCivil(absl::CivilSecond(y, m, d, hh, mm, ss), absl::UTCTimeZone());
}

std::string Describe(const absl::Status& s, const ParsedLine& p) {
  if (!s.ok()) return s.ToString();
  return absl::StrCat("message=\"", p.message, "\" host=\"", p.host, "\" program=\"", p.program,
                      "\" pid=\"", p.pid,
                      "\" time=", p.time ? absl::FormatTime(*p.time) : std::string("none"),
                      " year_inferred=", p.year_inferred, " time_repeated=", p.time_repeated);
}

bool Same(const absl::Status& a, const ParsedLine& pa, const absl::Status& b,
          const ParsedLine& pb) {
  if (a != b) return false;
  if (!a.ok()) return true;
  // The views are compared as places in the line, not only as text.
  auto same_view = [](absl::string_view x, absl::string_view y) {
    return x.data() == y.data() && x.size() == y.size();
  };
  return same_view(pa.message, pb.message) && same_view(pa.host, pb.host) &&
         pa.program == pb.program && same_view(pa.pid, pb.pid) && pa.time == pb.time &&
         pa.year_inferred == pb.year_inferred && pa.time_repeated == pb.time_repeated &&
         pa.client_address == pb.client_address && pa.record == pb.record;
}

// How each line's reference is chosen: the pipeline's order (the previous parsed line's time,
// kNearest after the first line), or every line against `now` with either rule.
enum class Mode { kChained, kNowAtMostADayAhead, kNowNearest };

const char* ModeName(Mode m) {
  return m == Mode::kChained      ? "chained"
         : m == Mode::kNowNearest ? "nearest to now"
                                  : "at most a day ahead of now";
}

// Parses `lines` in order with both parsers and counts the lines where they differ (printing
// the first few).
int CountDifferences(LogFormat format, absl::TimeZone zone, const std::vector<std::string>& lines,
                     absl::Time now, Mode mode, const std::string& what) {
  LineParser cached(format, zone);
  LineParser rules(format, zone);
  rules.DisableCachesForTesting();
  const bool chained = mode == Mode::kChained;
  absl::Time reference = now;
  YearRule rule = mode == Mode::kNowNearest ? YearRule::kNearest : YearRule::kAtMostADayAhead;
  int differences = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    ParsedLine a, b;
    const absl::Status sa = cached.Parse(lines[i], reference, &a, rule);
    const absl::Status sb = rules.Parse(lines[i], reference, &b, rule);
    if (!Same(sa, a, sb, b)) {
      if (++differences <= 5) {
        ADD_FAILURE() << what << " (" << FormatName(format) << ", zone " << zone.name() << ", "
                      << ModeName(mode) << ") line " << i << ": " << lines[i].substr(0, 120)
                      << "\n  cached: " << Describe(sa, a) << "\n  rules:  " << Describe(sb, b);
      }
    }
    if (chained && sb.ok() && b.time) {
      reference = *b.time;
      rule = YearRule::kNearest;
    }
  }
  return differences;
}

void ExpectSame(LogFormat format, const std::vector<std::string>& lines, absl::Time now,
                const std::string& what) {
  for (const absl::TimeZone& zone : Zones()) {
    for (Mode mode : {Mode::kChained, Mode::kNowAtMostADayAhead, Mode::kNowNearest}) {
      EXPECT_EQ(CountDifferences(format, zone, lines, now, mode, what), 0)
          << what << " " << FormatName(format) << " " << zone.name() << " " << ModeName(mode);
    }
  }
}

// Starts whose next hours cross what the caches must notice: a day, New Year (both ways of
// reading a yearless date), the offset changes of the zones above (as UTC-written lines read
// in those zones, they also fall in skipped and repeated hours), a leap day, and a common
// year's 28 February.
struct Start {
  std::string what;
  absl::Time start;
  absl::Duration step;
};
std::vector<Start> Starts() {
  return {
      {"a day", Utc(2026, 3, 3, 12, 0, 0), absl::Milliseconds(10)},
      {"a day and midnight", Utc(2026, 3, 3, 22, 0, 0), absl::Seconds(1)},
      {"New Year", Utc(2025, 12, 31, 20, 0, 0), absl::Seconds(1)},
      {"New York springs forward", Utc(2026, 3, 8, 0, 0, 0), absl::Seconds(1)},
      {"New York falls back", Utc(2026, 11, 1, 0, 0, 0), absl::Seconds(1)},
      {"Lord Howe's half hour", Utc(2026, 4, 4, 12, 0, 0), absl::Seconds(2)},
      {"Sao Paulo's missing midnight", Utc(2018, 11, 3, 20, 0, 0), absl::Seconds(1)},
      {"a leap day", Utc(2028, 2, 28, 12, 0, 0), absl::Seconds(10)},
      {"28 February of a common year", Utc(2027, 2, 28, 12, 0, 0), absl::Seconds(10)},
  };
}

constexpr uint64_t kCorpusLines = 20'000;

CorpusOptions Options(const Start& s) {
  CorpusOptions o;
  o.lines = kCorpusLines;
  o.start = s.start;
  o.step = s.step;
  return o;
}

// The same lines with the host's clock moved mid-file: back five hours, then on by nine.
std::vector<std::string> WithClockChanges(Corpus (*generate)(const CorpusOptions&),
                                          const Start& s) {
  CorpusOptions o = Options(s);
  o.lines = kCorpusLines / 3;
  std::vector<std::string> lines = generate(o).lines;
  for (absl::Duration shift : {absl::Hours(-5), absl::Hours(4)}) {
    o.start += o.step * static_cast<double>(o.lines) + shift;
    for (std::string& l : generate(o).lines) lines.push_back(std::move(l));
  }
  return lines;
}

TEST(LineParserCacheTest, SshdCorporaAsSyslog) {
  for (const Start& s : Starts()) {
    ExpectSame(LogFormat::LOG_FORMAT_SYSLOG, GenerateSshd(Options(s)).lines, s.start, s.what);
  }
  const Start new_year = Starts()[2];  // a copy: Starts() returns a temporary
  ExpectSame(LogFormat::LOG_FORMAT_SYSLOG, WithClockChanges(GenerateSshd, new_year), new_year.start,
             "the clock moved mid-file");
}

TEST(LineParserCacheTest, NginxCorporaAsCombined) {
  for (const Start& s : Starts()) {
    const std::vector<std::string> lines = GenerateNginx(Options(s)).lines;
    ExpectSame(LogFormat::LOG_FORMAT_COMBINED, lines, s.start, s.what);
    // A custom log_format without the offset: read in the parser's zone.
    std::vector<std::string> local = lines;
    for (std::string& l : local) l = absl::StrReplaceAll(l, {{" +0000]", "]"}});
    ExpectSame(LogFormat::LOG_FORMAT_COMBINED, local, s.start, s.what + ", no offset");
    // The offset changing mid-file, then line by line, and lines with and without one mixed.
    std::vector<std::string> offsets = lines;
    for (size_t i = 0; i < offsets.size(); ++i) {
      const char* to = i < offsets.size() / 2 ? " +0000]"
                       : i % 3 == 0           ? " -0500]"
                       : i % 3 == 1           ? " +1345]"
                                              : "]";
      offsets[i] = absl::StrReplaceAll(offsets[i], {{" +0000]", to}});
    }
    ExpectSame(LogFormat::LOG_FORMAT_COMBINED, offsets, s.start, s.what + ", offsets changing");
  }
  const Start new_year = Starts()[2];  // a copy: Starts() returns a temporary
  ExpectSame(LogFormat::LOG_FORMAT_COMBINED, WithClockChanges(GenerateNginx, new_year),
             new_year.start, "the clock moved mid-file");
}

// Every format with a time, written for times `step` apart from `start`, as UTC wall clock
// (read in the other zones, they fall in skipped and repeated hours).
std::vector<std::string> Rendered(LogFormat format, const Start& s, int n) {
  std::vector<std::string> lines;
  absl::Time t = s.start;
  for (int i = 0; i < n; ++i, t += s.step) {
    const absl::TimeZone utc = absl::UTCTimeZone();
    switch (format) {
      case LogFormat::LOG_FORMAT_SYSLOG:
        lines.push_back(i % 4 == 3   ? absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E6S", t, utc),
                                                    " h sshd[1]: iso without offset")
                        : i % 4 == 2 ? absl::StrCat(absl::FormatTime("%b %e %Y %H:%M:%S", t, utc),
                                                    " h sshd[1]: the year after the day")
                                     : absl::StrCat(absl::FormatTime("%b %e %H:%M:%S", t, utc),
                                                    " web-1 sshd[", i, "]: line ", i));
        break;
      case LogFormat::LOG_FORMAT_SYSLOG5424:
        lines.push_back(absl::StrCat("<34>1 ", absl::FormatTime("%Y-%m-%dT%H:%M:%E3S%Ez", t, utc),
                                     " h sshd ", i, " - - line"));
        break;
      case LogFormat::LOG_FORMAT_NGINX_ERROR:
        lines.push_back(i % 5 == 4 ? absl::StrCat(absl::FormatTime("%b %e %H:%M:%S", t, utc),
                                                  " web-1 nginx: ",
                                                  absl::FormatTime("%Y/%m/%d %H:%M:%S", t, utc),
                                                  " [error] 12#0: *3 relayed")
                                   : absl::StrCat(absl::FormatTime("%Y/%m/%d %H:%M:%S", t, utc),
                                                  " [error] 1234#0: *", i, " open() failed"));
        break;
      case LogFormat::LOG_FORMAT_APACHE_ERROR:
        lines.push_back(i % 2 == 0
                            ? absl::StrCat(absl::FormatTime("[%a %b %d %H:%M:%E6S %Y]", t, utc),
                                           " [auth_basic:error] [pid 12:tid 3] [client 1.2.3.4:5]"
                                           " denied")
                            : absl::StrCat(absl::FormatTime("[%Y-%m-%d %H:%M:%E6S]", t, utc),
                                           " [core:error] [pid 12] cu time"));
        break;
      default:
        break;
    }
  }
  return lines;
}

TEST(LineParserCacheTest, EveryFormatAcrossTheHostileStarts) {
  for (LogFormat format : {LogFormat::LOG_FORMAT_SYSLOG, LogFormat::LOG_FORMAT_SYSLOG5424,
                           LogFormat::LOG_FORMAT_NGINX_ERROR, LogFormat::LOG_FORMAT_APACHE_ERROR}) {
    for (const Start& s : Starts()) {
      ExpectSame(format, Rendered(format, s, 5'000), s.start, s.what);
    }
  }
}

// The corpora's and rendered lines with digits of their first 40 bytes (the header, the time)
// replaced at random: days, hours and years of every value, possible or not, and a cache that
// keeps meeting a new date.
TEST(LineParserCacheTest, RandomDigitsInTheHeader) {
  std::mt19937_64 rng(18);
  auto mutated = [&rng](std::vector<std::string> lines) {
    for (std::string& l : lines) {
      for (size_t i = 0; i < l.size() && i < 40; ++i) {
        if (absl::ascii_isdigit(l[i]) && rng() % 4 == 0) l[i] = static_cast<char>('0' + rng() % 10);
      }
    }
    return lines;
  };
  const Start s = Starts()[1];
  CorpusOptions o = Options(s);
  o.lines = 5'000;
  ExpectSame(LogFormat::LOG_FORMAT_SYSLOG, mutated(GenerateSshd(o).lines), s.start, "mutated");
  ExpectSame(LogFormat::LOG_FORMAT_COMBINED, mutated(GenerateNginx(o).lines), s.start, "mutated");
  for (LogFormat format : {LogFormat::LOG_FORMAT_SYSLOG, LogFormat::LOG_FORMAT_SYSLOG5424,
                           LogFormat::LOG_FORMAT_NGINX_ERROR, LogFormat::LOG_FORMAT_APACHE_ERROR}) {
    ExpectSame(format, mutated(Rendered(format, s, 2'000)), s.start, "mutated");
  }
}

// Dates that do not exist, fields out of range and yearless dates far from the reference,
// each after a valid line of a nearby day (so a cache holds something close).
TEST(LineParserCacheTest, ImpossibleAndFarDates) {
  const std::vector<std::string> syslog = {
      "Feb 28 12:00:00 h sshd: x",
      "Feb 29 12:00:00 h sshd: leap day or a year away",
      "Feb 28 12:00:00 h sshd: x",
      "Feb 30 12:00:00 h sshd: x",
      "Apr 30 12:00:00 h sshd: x",
      "Apr 31 12:00:00 h sshd: x",
      "Mar  0 12:00:00 h sshd: x",
      "Mar 32 12:00:00 h sshd: x",
      "Mar  3 24:00:00 h sshd: x",
      "Mar  3 23:60:00 h sshd: x",
      "Mar  3 23:59:60 h sshd: a leap second",
      "Mar  4 00:00:00 h sshd: x",
      "Foo  3 12:00:00 h sshd: x",
      "Dec 31 23:59:59 h sshd: x",
      "Jan  1 00:00:00 h sshd: x",
      "Dec 31 23:59:59 h sshd: back",
      "Jun 15 12:00:00 h sshd: half a year on",
      "Dec 15 12:00:00 h sshd: and on",
      "Jun 16 12:00:00 h sshd: x",
      "Feb 29 2025 12:00:00 h sshd: x",
      "Feb 29 2028 12:00:00 h sshd: x",
      "Feb 29 12:00:00 h sshd: x",
      "2026-02-29T12:00:00 h sshd: x",
      "2026-02-28T12:00:00 h sshd: x",
      "2026-02-28T24:00:00 h sshd: x",
      "2026-03-08T02:30:00 h sshd: x",
      "2026-11-01T01:30:00 h sshd: x",
      "Nov  1 01:30:00 h sshd: x",
      "Mar  8 02:30:00 h sshd: x",
      "Nov  4 00:00:00 h sshd: x",
      // A date cached for the reference's year by a line that wrote it, then without a year:
      // 200 to 300 days from most references, so another year may be nearer.
      "Dec 15 2025 10:00:00 h sshd: x",
      "Dec 15 12:00:00 h sshd: x",
      "Sep 20 2026 10:00:00 h sshd: x",
      "Sep 20 12:00:00 h sshd: x",
      "Dec 15 2027 10:00:00 h sshd: x",
      "Dec 15 12:00:00 h sshd: x",
      "Jan 10 2028 10:00:00 h sshd: x",
      "Jan 10 12:00:00 h sshd: x",
      // The same for New Year's first minutes, a year behind or a few minutes ahead of now.
      "Jan  1 2025 00:10:00 h sshd: x",
      "Jan  1 00:10:00 h sshd: x",
      "Jan  1 2026 00:10:00 h sshd: x",
      "Jan  1 00:10:00 h sshd: x",
      "Jan  1 2027 00:10:00 h sshd: x",
      "Jan  1 00:10:00 h sshd: x",
      "Jan  1 2028 00:10:00 h sshd: x",
      "Jan  1 00:10:00 h sshd: x",
      // The previous line's year moving on by years (the year cache must follow it).
      "Mar  3 2025 12:00:00 h sshd: x",
      "Jun  1 12:00:00 h sshd: x",
      "Mar  3 2027 12:00:00 h sshd: x",
      "Jun  1 12:00:00 h sshd: x",
      "Mar  3 2020 12:00:00 h sshd: x",
      "Jun  1 12:00:00 h sshd: x",
  };
  const std::vector<std::string> combined = {
      "1.2.3.4 - - [28/Feb/2025:12:00:00 +0000] \"GET / HTTP/1.1\" 200 1",
      "1.2.3.4 - - [29/Feb/2025:12:00:00 +0000] \"GET / HTTP/1.1\" 200 1",
      "1.2.3.4 - - [29/Feb/2024:12:00:00 +0000] \"GET / HTTP/1.1\" 200 1",
      "1.2.3.4 - - [29/Feb/2024:12:00:00] \"GET / HTTP/1.1\" 200 1",
      "1.2.3.4 - - [29/Feb/2025:12:00:00] \"GET / HTTP/1.1\" 200 1",
      "1.2.3.4 - - [30/Apr/2026:12:00:00 +0000] \"GET / HTTP/1.1\" 200 1",
      "1.2.3.4 - - [31/Apr/2026:12:00:00 +0000] \"GET / HTTP/1.1\" 200 1",
      "1.2.3.4 - - [00/Mar/2026:12:00:00 +0000] \"GET / HTTP/1.1\" 200 1",
      "1.2.3.4 - - [03/Mar/2026:24:00:00 +0000] \"GET / HTTP/1.1\" 200 1",
      "1.2.3.4 - - [03/Mar/2026:23:59:60 +0000] \"GET / HTTP/1.1\" 200 1",
      "1.2.3.4 - - [03/Mar/2026:23:59:60] \"GET / HTTP/1.1\" 200 1",
      "1.2.3.4 - - [03/Mar/2026:12:00:00 +2400] \"GET / HTTP/1.1\" 200 1",
      "1.2.3.4 - - [03/Mar/2026:12:00:00 +0060] \"GET / HTTP/1.1\" 200 1",
      "1.2.3.4 - - [03/Mar/2026:12:00:00 -2359] \"GET / HTTP/1.1\" 200 1",
      "1.2.3.4 - - [08/Mar/2026:02:30:00] \"GET / HTTP/1.1\" 200 1",
      "1.2.3.4 - - [01/Nov/2026:01:30:00] \"GET / HTTP/1.1\" 200 1",
      "1.2.3.4 - - [04/Nov/2018:00:30:00] \"GET / HTTP/1.1\" 200 1",
      "1.2.3.4 - - [31/Dec/9999:23:59:60 +0000] \"GET / HTTP/1.1\" 200 1",
      "1.2.3.4 - - [01/Jan/0000:00:00:00 -2359] \"GET / HTTP/1.1\" 200 1",
  };
  const std::vector<std::string> nginx_error = {
      "2026/02/28 12:00:00 [error] 1#0: x", "2026/02/29 12:00:00 [error] 1#0: x",
      "2028/02/29 12:00:00 [error] 1#0: x", "2026/13/01 12:00:00 [error] 1#0: x",
      "2026/03/08 02:30:00 [error] 1#0: x", "2026/11/01 01:30:00 [error] 1#0: x",
      "2026/04/31 12:00:00 [error] 1#0: x", "2026/04/30 23:59:60 [error] 1#0: x",
  };
  const std::vector<std::string> apache_error = {
      "[Sat Feb 28 12:00:00 2026] [error] x", "[Sun Feb 29 12:00:00 2026] [error] x",
      "[Tue Feb 29 12:00:00 2028] [error] x", "[Sun Mar 08 02:30:00.5 2026] [core:error] x",
      "[2026-02-29 12:00:00] [core:error] x", "[2026-11-01 01:30:00.25] [core:error] x",
  };
  for (absl::Time now :
       {Utc(2025, 3, 3, 12, 0, 0), Utc(2026, 2, 28, 23, 0, 0), Utc(2025, 12, 31, 23, 30, 0),
        Utc(2026, 12, 30, 12, 0, 0), Utc(2027, 12, 31, 23, 30, 0), Utc(2028, 3, 1, 0, 0, 0),
        Utc(1970, 1, 1, 0, 0, 0), Utc(9999, 12, 31, 23, 0, 0)}) {
    const std::string what = absl::StrCat("now ", absl::FormatTime(now));
    ExpectSame(LogFormat::LOG_FORMAT_SYSLOG, syslog, now, what);
    ExpectSame(LogFormat::LOG_FORMAT_COMBINED, combined, now, what);
    ExpectSame(LogFormat::LOG_FORMAT_NGINX_ERROR, nginx_error, now, what);
    ExpectSame(LogFormat::LOG_FORMAT_APACHE_ERROR, apache_error, now, what);
  }
}

// The header scans that read 16 bytes at once (a syslog host and tag, a pid's ']', a combined
// line's first space and " [") and the dates compared as bytes (a syslog "Mmm dd ", a combined
// date and offset), against the byte loops: hosts, tags and client fields of every length
// around the 16-byte edges, with the bytes those scans stop at ('[', ':', ']', spaces) put
// anywhere, and clocks after a cached date with a digit, a colon or the length wrong.
TEST(LineParserCacheTest, HeadersAcrossTheWideScans) {
  std::mt19937_64 rng(23);
  auto pick = [&rng](absl::string_view from) { return from[rng() % from.size()]; };
  auto word = [&](size_t n, absl::string_view from) {
    std::string w;
    for (size_t i = 0; i < n; ++i) w += pick(from);
    return w;
  };
  // A clock after a date the previous line cached: mostly good, else broken in one byte.
  auto clock = [&]() {
    const uint64_t h = rng() % 26;
    std::string c = absl::StrCat(h < 10 ? "0" : "", h, ":", rng() % 6 + 55, ":", rng() % 4 + 58);
    if (c.size() != 8 || rng() % 3 != 0) return std::string("12:34:56");
    if (rng() % 2 == 0) c[rng() % 8] = pick("0a:/ 9\x80");
    return c;
  };
  std::vector<std::string> syslog;
  for (int i = 0; i < 3000; ++i) {
    const std::string date = i % 7 == 6 ? "Mar 04 " : i % 11 == 10 ? "Mar 3 " : "Mar  3 ";
    std::string line = absl::StrCat(date, clock(), i % 13 == 12 ? "  " : " ");
    line += word(rng() % 21, "ab-1.[:] ");
    line += " ";
    line += word(rng() % 51, "sd_h./-[:] ");
    switch (rng() % 5) {
      case 0:
        absl::StrAppend(&line, "[", word(rng() % 24, "0123456789]"), "]: ");
        break;
      case 1:
        line += ": ";
        break;
      case 2:
        line += "[123";
        break;
      default:
        break;
    }
    line += word(rng() % 20, "x :[]");
    if (rng() % 9 == 0) line.resize(rng() % (line.size() + 1));
    syslog.push_back(std::move(line));
  }
  std::vector<std::string> combined;
  for (int i = 0; i < 3000; ++i) {
    std::string line = word(rng() % 41, "0123456789abcdef.: -[");
    if (rng() % 3 == 0) absl::StrAppend(&line, " ", word(rng() % 16, "0123456789.:"));
    std::string offset = rng() % 6 == 0 ? " -0130]" : rng() % 7 == 0 ? "]" : " +0000]";
    if (rng() % 5 == 0) offset[rng() % offset.size()] = pick("0+-] 9x");
    absl::StrAppend(&line, " ", word(rng() % 3, "-[ "), " - [",
                    i % 5 == 4 ? "04/Mar/2026:" : "03/Mar/2026:", clock(), offset,
                    rng() % 8 == 0 ? "" : " \"GET / HTTP/1.1\" 200 1");
    if (rng() % 9 == 0) line.resize(rng() % (line.size() + 1));
    combined.push_back(std::move(line));
  }
  const Start s = Starts()[0];
  ExpectSame(LogFormat::LOG_FORMAT_SYSLOG, syslog, s.start, "wide scans");
  ExpectSame(LogFormat::LOG_FORMAT_COMBINED, combined, s.start, "wide scans");
  ExpectSame(LogFormat::LOG_FORMAT_NGINX_ERROR, syslog, s.start, "wide scans, relayed");
}

}  // namespace
}  // namespace palisade
