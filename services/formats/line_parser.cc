#include "services/formats/line_parser.h"

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"

namespace palisade {
namespace {

using palisade::v1::LogFormat;

bool ReadDigits(absl::string_view text, size_t pos, size_t n, int* value) {
  if (pos + n > text.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    char c = text[i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *value = v;
  return true;
}

int MonthFromAbbrev(absl::string_view m) {
  static constexpr char kMonths[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
  if (m.size() != 3) return 0;
  for (int i = 0; i < 12; ++i) {
    if (std::memcmp(kMonths + 3 * i, m.data(), 3) == 0) return i + 1;
  }
  return 0;
}

// Splits "prog[pid]: msg" / "prog: msg" into program and message. Returns false when there is
// no tag, in which case the whole text is the message.
bool SplitTag(absl::string_view text, absl::string_view* program, absl::string_view* pid,
              absl::string_view* message) {
  size_t i = 0;
  // A tag is at most 48 chars of [A-Za-z0-9_./-] (RFC 3164 says 32; real daemons exceed it).
  while (i < text.size() && i < 48) {
    char c = text[i];
    if (c == '[' || c == ':') break;
    if (c == ' ') return false;
    ++i;
  }
  if (i == 0 || i >= text.size()) return false;
  *program = text.substr(0, i);
  if (text[i] == '[') {
    size_t close = text.find(']', i);
    if (close == absl::string_view::npos) return false;
    *pid = text.substr(i + 1, close - i - 1);
    i = close + 1;
  }
  if (i >= text.size() || text[i] != ':') return false;
  ++i;
  if (i < text.size() && text[i] == ' ') ++i;
  *message = text.substr(i);
  return true;
}

absl::string_view NextToken(absl::string_view text, size_t* pos) {
  size_t start = *pos;
  size_t end = text.find(' ', start);
  if (end == absl::string_view::npos) end = text.size();
  *pos = end < text.size() ? end + 1 : end;
  return text.substr(start, end - start);
}

}  // namespace

absl::StatusOr<LogFormat> ParseFormatName(absl::string_view name) {
  for (LogFormat f : {LogFormat::LOG_FORMAT_SYSLOG, LogFormat::LOG_FORMAT_SYSLOG5424,
                      LogFormat::LOG_FORMAT_COMBINED, LogFormat::LOG_FORMAT_RAW,
                      LogFormat::LOG_FORMAT_DECISIONS}) {
    if (FormatName(f) == name) return f;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown format \"", name,
                   "\" (expected syslog, syslog5424, combined, raw or decisions)"));
}

absl::string_view FormatName(LogFormat format) {
  switch (format) {
    case LogFormat::LOG_FORMAT_SYSLOG:
      return "syslog";
    case LogFormat::LOG_FORMAT_SYSLOG5424:
      return "syslog5424";
    case LogFormat::LOG_FORMAT_COMBINED:
      return "combined";
    case LogFormat::LOG_FORMAT_RAW:
      return "raw";
    case LogFormat::LOG_FORMAT_DECISIONS:
      return "decisions";
    default:
      return "unspecified";
  }
}

absl::StatusOr<size_t> ParseRfc3339Timestamp(absl::string_view text, absl::Time* out,
                                              absl::TimeZone zone) {
  int year, month, day, hour, minute, second;
  if (!ReadDigits(text, 0, 4, &year) || text.size() < 19 || text[4] != '-' ||
      !ReadDigits(text, 5, 2, &month) || text[7] != '-' || !ReadDigits(text, 8, 2, &day) ||
      (text[10] != 'T' && text[10] != 't' && text[10] != ' ') || !ReadDigits(text, 11, 2, &hour) ||
      text[13] != ':' || !ReadDigits(text, 14, 2, &minute) || text[16] != ':' ||
      !ReadDigits(text, 17, 2, &second)) {
    return 0;
  }
  // From here on the text has a timestamp's shape: what is wrong with it is an impossible time.
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
    return absl::OutOfRangeError("a date or time field out of range");
  }
  size_t pos = 19;
  absl::Duration frac;
  if (pos < text.size() && (text[pos] == '.' || text[pos] == ',')) {
    ++pos;
    int64_t nanos = 0;
    int digits = 0;
    while (pos < text.size() && absl::ascii_isdigit(text[pos])) {
      // Past nanoseconds a fraction means nothing (RFC 5424 allows six digits): a longer one is
      // forged, and scanning thousands of digits per line would be the attacker's to choose.
      if (++digits > 9) return absl::OutOfRangeError("a fraction of more than 9 digits");
      nanos = nanos * 10 + (text[pos] - '0');
      ++pos;
    }
    if (digits == 0) return 0;
    for (int d = digits; d < 9; ++d) nanos *= 10;
    frac = absl::Nanoseconds(nanos);
  }
  int offset_seconds = 0;
  bool has_offset = true;
  if (pos < text.size() && (text[pos] == 'Z' || text[pos] == 'z')) {
    ++pos;
  } else if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
    int oh, om;
    if (!ReadDigits(text, pos + 1, 2, &oh) || pos + 3 >= text.size() || text[pos + 3] != ':' ||
        !ReadDigits(text, pos + 4, 2, &om)) {
      return 0;
    }
    // RFC 3339's time-numoffset: hours 00-23, minutes 00-59 (+99:99 would move the line by
    // four days).
    if (oh > 23 || om > 59) return absl::OutOfRangeError("a UTC offset out of range");
    offset_seconds = (oh * 3600 + om * 60) * (text[pos] == '-' ? -1 : 1);
    pos += 6;
  } else {
    has_offset = false;
  }
  absl::CivilSecond cs(year, month, day, hour, minute, second);
  if (cs.day() != day) {  // e.g. February 31st normalised away
    return absl::OutOfRangeError("a date that does not exist");
  }
  *out = absl::FromCivil(cs, has_offset ? absl::UTCTimeZone() : zone) + frac -
         absl::Seconds(offset_seconds);
  return pos;
}

size_t ParseRfc3339Prefix(absl::string_view text, absl::Time* out, absl::TimeZone zone) {
  absl::StatusOr<size_t> used = ParseRfc3339Timestamp(text, out, zone);
  return used.ok() ? *used : 0;
}

absl::Time LineParser::DayStart(int64_t year, int month, int day) {
  if (year != cached_year_ || month != cached_month_ || day != cached_day_) {
    cached_year_ = year;
    cached_month_ = month;
    cached_day_ = day;
    cached_day_start_ = absl::FromCivil(absl::CivilDay(year, month, day), absl::UTCTimeZone());
  }
  return cached_day_start_;
}

bool LineParser::CivilToTime(int64_t year, int month, int day, int seconds_of_day,
                             absl::Time* out) {
  if (zone_is_utc_) {
    const absl::CivilDay civil(year, month, day);
    if (civil.day() != day) return false;
    *out = DayStart(year, month, day) + absl::Seconds(seconds_of_day);
    return true;
  }
  // A zone with daylight saving: the offset may change within the day, so no day cache.
  const absl::CivilSecond civil(year, month, day, seconds_of_day / 3600,
                                (seconds_of_day / 60) % 60, seconds_of_day % 60);
  if (civil.day() != day) return false;
  *out = absl::FromCivil(civil, zone_);
  return true;
}

absl::Status LineParser::Parse(absl::string_view line, absl::Time reference, ParsedLine* out,
                               YearRule rule) {
  *out = ParsedLine();
  switch (format_) {
    case LogFormat::LOG_FORMAT_SYSLOG:
      return ParseSyslog3164(line, reference, rule, out);
    case LogFormat::LOG_FORMAT_SYSLOG5424:
      return ParseSyslog5424(line, out);
    case LogFormat::LOG_FORMAT_COMBINED:
      return ParseCombined(line, out);
    case LogFormat::LOG_FORMAT_RAW:
    case LogFormat::LOG_FORMAT_DECISIONS:  // Palisade's own lines: no header, no time
      out->message = line;
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unsupported log format ", palisade::v1::LogFormat_Name(format_)));
  }
}

absl::Status LineParser::ParseSyslog3164(absl::string_view line, absl::Time reference,
                                         YearRule rule, ParsedLine* out) {
  size_t pos = 0;
  // Optional <PRI>.
  if (!line.empty() && line[0] == '<') {
    size_t close = line.find('>');
    if (close == absl::string_view::npos || close > 4) {
      return absl::InvalidArgumentError("syslog: unterminated <PRI> at column 1");
    }
    pos = close + 1;
  }
  absl::string_view rest = line.substr(pos);
  absl::Time t;
  // rsyslog's high-precision timestamps.
  absl::StatusOr<size_t> used = ParseRfc3339Timestamp(rest, &t, zone_);
  if (!used.ok()) {
    return absl::OutOfRangeError(absl::StrCat("syslog: impossible timestamp at column ", pos + 1,
                                              ": ", used.status().message()));
  }
  if (*used > 0) {
    out->time = t;
    pos += *used;
  } else {
    // "Mmm dd hh:mm:ss": the day space-padded ("Mar  3", as syslogd writes it), zero-padded
    // ("Mar 03") or unpadded ("Feb 1", as proftpd's own log and some relays write it).
    int day, hour, minute, second;
    int month = rest.size() >= 14 ? MonthFromAbbrev(rest.substr(0, 3)) : 0;
    if (month == 0 || rest[3] != ' ') {
      return absl::InvalidArgumentError(absl::StrCat("syslog: no timestamp at column ", pos + 1,
                                                     " (expected \"Mmm dd hh:mm:ss\")"));
    }
    bool day_ok;
    size_t at = 6;  // the space before hh:mm:ss
    if (rest[4] == ' ') {
      day_ok = ReadDigits(rest, 5, 1, &day);
    } else if (rest[5] == ' ') {
      day_ok = ReadDigits(rest, 4, 1, &day);
      at = 5;
    } else {
      day_ok = ReadDigits(rest, 4, 2, &day);
    }
    if (!day_ok || rest.size() < at + 9 || rest[at] != ' ' || !ReadDigits(rest, at + 1, 2, &hour) ||
        rest[at + 3] != ':' || !ReadDigits(rest, at + 4, 2, &minute) || rest[at + 6] != ':' ||
        !ReadDigits(rest, at + 7, 2, &second)) {
      return absl::InvalidArgumentError(absl::StrCat("syslog: bad timestamp at column ", pos + 1));
    }
    if (day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
      return absl::OutOfRangeError(
          absl::StrCat("syslog: bad timestamp at column ", pos + 1, ": a field out of range"));
    }
    const int64_t year = absl::ToCivilYear(reference, zone_).year();
    const int tod = hour * 3600 + minute * 60 + second;
    bool found = false;
    if (rule == YearRule::kNearest) {
      // The previous line's year, or the one before or after: whichever is nearest to it.
      // Less than 182 days away, the previous line's year wins outright (the others are at
      // least a year less an hour from it), which is every line but those around New Year:
      // stopping there keeps the one-day cache warm instead of refilling it three times a line.
      absl::Duration best = absl::InfiniteDuration();
      for (int64_t y : {year, year + 1, year - 1}) {
        absl::Time candidate;
        if (!CivilToTime(y, month, day, tod, &candidate)) continue;
        const absl::Duration distance = absl::AbsDuration(candidate - reference);
        if (distance < best) {
          best = distance;
          t = candidate;
          found = true;
        }
        if (best < absl::Hours(24 * 182)) break;
      }
    } else {
      // The latest year that is at most a day ahead of now (29 February: up to 8 years back).
      for (int64_t y = year + 1; y >= year - 8 && !found; --y) {
        absl::Time candidate;
        if (CivilToTime(y, month, day, tod, &candidate) &&
            candidate <= reference + absl::Hours(24)) {
          t = candidate;
          found = true;
        }
      }
    }
    if (!found) {
      return absl::OutOfRangeError(absl::StrCat("syslog: bad date at column ", pos + 1));
    }
    out->time = t;
    pos += at + 9;
  }
  if (pos >= line.size() || line[pos] != ' ') {
    return absl::InvalidArgumentError(
        absl::StrCat("syslog: expected a space after the timestamp at column ", pos + 1));
  }
  ++pos;
  out->host = NextToken(line, &pos);
  if (out->host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("syslog: no host at column ", pos + 1));
  }
  absl::string_view body = line.substr(pos);
  if (!SplitTag(body, &out->program, &out->pid, &out->message)) {
    out->program = {};
    out->pid = {};
    out->message = body;
  }
  return absl::OkStatus();
}

absl::Status LineParser::ParseSyslog5424(absl::string_view line, ParsedLine* out) {
  // <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]
  if (line.empty() || line[0] != '<') {
    return absl::InvalidArgumentError("syslog5424: line does not start with <PRI>");
  }
  size_t close = line.find('>');
  if (close == absl::string_view::npos || close > 4) {
    return absl::InvalidArgumentError("syslog5424: unterminated <PRI>");
  }
  size_t pos = close + 1;
  absl::string_view version = NextToken(line, &pos);
  if (version != "1") {
    return absl::InvalidArgumentError(
        absl::StrCat("syslog5424: unsupported version at column ", close + 2));
  }
  size_t ts_col = pos;
  absl::string_view ts = NextToken(line, &pos);
  if (ts != "-") {
    absl::Time t;
    absl::StatusOr<size_t> used = ParseRfc3339Timestamp(ts, &t);
    if (!used.ok()) {
      return absl::OutOfRangeError(absl::StrCat("syslog5424: impossible timestamp at column ",
                                                ts_col + 1, ": ", used.status().message()));
    }
    if (*used != ts.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("syslog5424: bad timestamp at column ", ts_col + 1));
    }
    out->time = t;
  }
  out->host = NextToken(line, &pos);
  absl::string_view app = NextToken(line, &pos);
  absl::string_view procid = NextToken(line, &pos);
  NextToken(line, &pos);  // MSGID
  if (pos >= line.size()) {
    return absl::InvalidArgumentError("syslog5424: line ends before STRUCTURED-DATA");
  }
  if (out->host == "-") out->host = {};
  if (app != "-") out->program = app;
  if (procid != "-") out->pid = procid;
  if (line[pos] == '-') {
    ++pos;
  } else if (line[pos] == '[') {
    // Skip SD-ELEMENTs; values are quoted and may escape '"', '\' and ']'.
    bool in_quotes = false;
    while (pos < line.size()) {
      char c = line[pos];
      if (in_quotes) {
        if (c == '\\') {
          ++pos;
        } else if (c == '"') {
          in_quotes = false;
        }
      } else if (c == '"') {
        in_quotes = true;
      } else if (c == ']' && (pos + 1 >= line.size() || line[pos + 1] != '[')) {
        ++pos;
        break;
      }
      ++pos;
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("syslog5424: bad STRUCTURED-DATA at column ", pos + 1));
  }
  if (pos < line.size() && line[pos] == ' ') ++pos;
  absl::string_view msg = line.substr(std::min(pos, line.size()));
  if (msg.size() >= 3 && msg.substr(0, 3) == "\xEF\xBB\xBF") msg.remove_prefix(3);  // BOM
  out->message = msg;
  return absl::OkStatus();
}

absl::Status LineParser::ParseCombined(absl::string_view line, ParsedLine* out) {
  // host ident user [dd/Mon/yyyy:hh:mm:ss +zzzz] "request" status bytes ["referer" "agent"]
  size_t open = line.find(" [");
  if (open == absl::string_view::npos || open == 0) {
    return absl::InvalidArgumentError("combined: no \"[time]\" field");
  }
  out->host = line.substr(0, line.find(' '));
  size_t ts = open + 2;
  int day, year, hour, minute, second, oh = 0, om = 0;
  int month = line.size() > ts + 21 ? MonthFromAbbrev(line.substr(ts + 3, 3)) : 0;
  if (month == 0 || !ReadDigits(line, ts, 2, &day) || line[ts + 2] != '/' || line[ts + 6] != '/' ||
      !ReadDigits(line, ts + 7, 4, &year) || line[ts + 11] != ':' ||
      !ReadDigits(line, ts + 12, 2, &hour) || line[ts + 14] != ':' ||
      !ReadDigits(line, ts + 15, 2, &minute) || line[ts + 17] != ':' ||
      !ReadDigits(line, ts + 18, 2, &second)) {
    return absl::InvalidArgumentError(absl::StrCat("combined: bad time at column ", ts + 1,
                                                   " (expected dd/Mon/yyyy:hh:mm:ss +zzzz)"));
  }
  // "[dd/Mon/yyyy:hh:mm:ss +zzzz]", or without the offset (a custom log_format writing
  // $time_local's fields by hand): then the time is read in the parser's zone.
  const bool has_offset = line.size() > ts + 27 && line[ts + 20] == ' ';
  if (has_offset ? ((line[ts + 21] != '+' && line[ts + 21] != '-') ||
                    !ReadDigits(line, ts + 22, 2, &oh) || !ReadDigits(line, ts + 24, 2, &om) ||
                    line[ts + 26] != ']')
                 : line[ts + 20] != ']') {
    return absl::InvalidArgumentError(absl::StrCat("combined: bad time at column ", ts + 1,
                                                   " (expected dd/Mon/yyyy:hh:mm:ss +zzzz)"));
  }
  // The offset is +hhmm with hours 00-23 and minutes 00-59, as RFC 3339's.
  if (day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60 || oh > 23 || om > 59) {
    return absl::OutOfRangeError(
        absl::StrCat("combined: bad time at column ", ts + 1, ": a field out of range"));
  }
  const int tod = hour * 3600 + minute * 60 + second;
  if (has_offset) {
    if (absl::CivilDay(year, month, day).day() != day) {  // 31 February, normalised away
      return absl::OutOfRangeError(absl::StrCat("combined: bad date at column ", ts + 1));
    }
    const int offset = (oh * 3600 + om * 60) * (line[ts + 21] == '-' ? -1 : 1);
    out->time = DayStart(year, month, day) + absl::Seconds(tod) - absl::Seconds(offset);
  } else {
    absl::Time t;
    if (!CivilToTime(year, month, day, tod, &t)) {
      return absl::OutOfRangeError(absl::StrCat("combined: bad date at column ", ts + 1));
    }
    out->time = t;
  }
  size_t req = has_offset ? ts + 27 : ts + 21;
  if (req + 2 > line.size() || line[req] != ' ' || line[req + 1] != '"') {
    return absl::InvalidArgumentError(
        absl::StrCat("combined: no quoted request at column ", req + 2));
  }
  out->message = line;
  return absl::OkStatus();
}

}  // namespace palisade
