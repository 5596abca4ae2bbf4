#include "services/formats/line_parser.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <string>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "absl/base/attributes.h"
#include "absl/base/config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "services/formats/json_parser.h"

namespace palisade {
namespace {

using palisade::v1::LogFormat;

// Inlined and unrolled: with its constant `n` a time field's read is a compare a digit (as a
// call it was a sixth of the combined parser's cost).
ABSL_ATTRIBUTE_ALWAYS_INLINE inline bool ReadDigits(absl::string_view text, size_t pos, size_t n,
                                                    int* value) {
  if (pos + n > text.size()) return false;
  const unsigned char* const p = reinterpret_cast<const unsigned char*>(text.data()) + pos;
  unsigned v = 0;
#pragma GCC unroll 4
  for (size_t i = 0; i < n; ++i) {
    const unsigned digit = p[i] - unsigned{'0'};  // a byte below '0' wraps past 9
    if (digit > 9) return false;
    v = v * 10 + digit;
  }
  *value = static_cast<int>(v);
  return true;
}

// "Jan" -> 1 ... "Dec" -> 12, 0 for anything else: by the first letter, then the two others
// (the twelve three-byte compares in turn cost a syslog line ~20 instructions).
ABSL_ATTRIBUTE_ALWAYS_INLINE inline int MonthFromAbbrev(absl::string_view m) {
  if (m.size() != 3) return 0;
  const char a = m[1], b = m[2];
  switch (m[0]) {
    case 'J':
      if (a == 'a' && b == 'n') return 1;
      if (a == 'u' && b == 'n') return 6;
      if (a == 'u' && b == 'l') return 7;
      return 0;
    case 'F':
      return a == 'e' && b == 'b' ? 2 : 0;
    case 'M':
      if (a == 'a' && b == 'r') return 3;
      if (a == 'a' && b == 'y') return 5;
      return 0;
    case 'A':
      if (a == 'p' && b == 'r') return 4;
      if (a == 'u' && b == 'g') return 8;
      return 0;
    case 'S':
      return a == 'e' && b == 'p' ? 9 : 0;
    case 'O':
      return a == 'c' && b == 't' ? 10 : 0;
    case 'N':
      return a == 'o' && b == 'v' ? 11 : 0;
    case 'D':
      return a == 'e' && b == 'c' ? 12 : 0;
    default:
      return 0;
  }
}

// The first `c` in `text` at or after `pos`, or npos: an inlined loop for the short fields of a
// header, where absl::string_view::find is a call into a shared library and then memchr's.
inline size_t FindChar(absl::string_view text, char c, size_t pos = 0) {
  const char* const data = text.data();
  for (size_t i = pos; i < text.size(); ++i) {
    if (data[i] == c) return i;
  }
  return absl::string_view::npos;
}

// The same through memchr, for a search that may run to the end of a long line.
inline size_t MemChr(absl::string_view text, char c, size_t pos) {
  if (pos >= text.size()) return absl::string_view::npos;
  const void* at = std::memchr(text.data() + pos, c, text.size() - pos);
  return at == nullptr ? absl::string_view::npos
                       : static_cast<size_t>(static_cast<const char*>(at) - text.data());
}

#if defined(__SSE2__)
// The fast paths below read 16 (or 8) bytes at once where at least that many are left: one
// compare finds the byte a loop looked for one at a time (a header's host and tag cost a syslog
// line ~130 instructions that way), and an x86 load is little-endian.

// Bit i set where byte i of the 16 at `p` is `c`.
ABSL_ATTRIBUTE_ALWAYS_INLINE inline unsigned Eq16(__m128i v, char c) {
  return static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(c))));
}
ABSL_ATTRIBUTE_ALWAYS_INLINE inline __m128i Load16(const char* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}
#endif

// The 8-byte words below are read as x86 writes them (byte 0 lowest).
#if defined(ABSL_IS_LITTLE_ENDIAN)
constexpr bool kLittleEndian = true;
#else
constexpr bool kLittleEndian = false;
#endif

// The low 7 bytes of such a word: a syslog "Mmm dd " date, a combined " +zzzz]" offset.
constexpr uint64_t kLow7Bytes = 0x00FFFFFFFFFFFFFFULL;

// The quoted request a combined line must have at `req` (after its time), or the error naming
// the column.
absl::Status QuotedRequestAt(absl::string_view line, size_t req) {
  if (req + 2 > line.size() || line[req] != ' ' || line[req + 1] != '"') {
    return absl::InvalidArgumentError(
        absl::StrCat("combined: no quoted request at column ", req + 2));
  }
  return absl::OkStatus();
}

ABSL_ATTRIBUTE_ALWAYS_INLINE inline uint64_t Load8(const char* p) {
  uint64_t x;
  std::memcpy(&x, p, 8);
  return x;
}

// "hh:mm:ss" in the 8 bytes at `p` (read as one little-endian word): true with its three fields
// when each is two digits and the separators colons, as ReadDigits would read them. No range
// check.
ABSL_ATTRIBUTE_ALWAYS_INLINE inline bool ReadClock8(const char* p, int* hour, int* minute,
                                                    int* second) {
  const uint64_t x = Load8(p);
  // Bytes 2 and 5 are ':'; bytes 0, 1, 3, 4, 6, 7 are 0x30 + n with n + 6 below 16 (0-9).
  if ((x & 0x0000FF0000FF0000ULL) != 0x00003A00003A0000ULL ||
      (x & 0xF0F000F0F000F0F0ULL) != 0x3030003030003030ULL ||
      (((x & 0x0F0F000F0F000F0FULL) + 0x0606000606000606ULL) & 0x1010001010001010ULL) != 0) {
    return false;
  }
  *hour = static_cast<int>((x & 0xF) * 10 + ((x >> 8) & 0xF));
  *minute = static_cast<int>(((x >> 24) & 0xF) * 10 + ((x >> 32) & 0xF));
  *second = static_cast<int>(((x >> 48) & 0xF) * 10 + ((x >> 56) & 0xF));
  return true;
}

// Splits "prog[pid]: msg" / "prog: msg" into program and message. Returns false when there is
// no tag, in which case the whole text is the message. `wide`: the 16-byte scans may be used.
ABSL_ATTRIBUTE_ALWAYS_INLINE inline bool SplitTag(absl::string_view text,
                                                 absl::string_view* program,
                                                 absl::string_view* pid,
                                                 absl::string_view* message, bool wide) {
  size_t i = 0;
  // "[sshd]: " or "[sshd] ": a tag in brackets, a name only (fail2ban's common.conf reads it;
  // some loggers write it). Not "[ID 800047 auth.info]" nor "[12345.678]": a letter first, no
  // blank.
  if (!text.empty() && text[0] == '[') {
    // Past column 49 the answer is no: look no further.
    const size_t close = FindChar(text.substr(0, 50), ']');
    if (close == absl::string_view::npos || close < 2 || close > 49) return false;
    absl::string_view name = text.substr(1, close - 1);
    if (!absl::ascii_isalpha(name[0])) return false;
    for (char c : name) {
      if (!absl::ascii_isalnum(c) && c != '_' && c != '.' && c != '/' && c != '-') return false;
    }
    i = close + 1;
    if (i < text.size() && text[i] == ':') ++i;
    if (i >= text.size() || text[i] != ' ') return false;
    *program = name;
    *pid = {};
    *message = text.substr(i + 1);
    return true;
  }
  // A tag is at most 48 chars of [A-Za-z0-9_./-] (RFC 3164 says 32; real daemons exceed it).
  bool found = false;
#if defined(__SSE2__)
  if (wide && text.size() >= 16) {
    // The first '[', ':' or ' ' of the first 16 bytes is where the loop below would stop.
    const __m128i v = Load16(text.data());
    const unsigned stops = Eq16(v, '[') | Eq16(v, ':') | Eq16(v, ' ');
    if (stops != 0) {
      i = static_cast<size_t>(__builtin_ctz(stops));
      if (text[i] == ' ') return false;
      found = true;
    } else {
      i = 16;
    }
  }
#endif
  while (!found && i < text.size() && i < 48) {
    char c = text[i];
    if (c == '[' || c == ':') break;
    if (c == ' ') return false;
    ++i;
  }
  if (i == 0 || i >= text.size()) return false;
  // Views made directly (substr's bounds check is a call once Parse has inlined this much).
  *program = absl::string_view(text.data(), i);
  if (text[i] == '[') {
    size_t close = absl::string_view::npos;
#if defined(__SSE2__)
    if (wide && text.size() - i >= 16) {
      const unsigned closes = Eq16(Load16(text.data() + i), ']');
      close = closes != 0 ? i + static_cast<size_t>(__builtin_ctz(closes)) : MemChr(text, ']', i + 16);
    } else {
      close = MemChr(text, ']', i);
    }
#else
    close = MemChr(text, ']', i);
#endif
    if (close == absl::string_view::npos) return false;
    *pid = absl::string_view(text.data() + i + 1, close - i - 1);
    i = close + 1;
    // No colon after the pid ("proftpd[12345] message", which fail2ban's __prefix_line allows):
    // no tag; the message is the whole body (rules/proftpd.textproto reads such lines whole).
  }
  if (i >= text.size() || text[i] != ':') return false;
  ++i;
  if (i < text.size() && text[i] == ' ') ++i;
  *message = absl::string_view(text.data() + i, text.size() - i);
  return true;
}

inline absl::string_view NextToken(absl::string_view text, size_t* pos) {
  size_t start = *pos;
  size_t end = FindChar(text, ' ', start);
  if (end == absl::string_view::npos) end = text.size();
  *pos = end < text.size() ? end + 1 : end;
  return text.substr(start, end - start);
}

// Reads digits from `pos` up to `max` of them; at least one. Advances `pos`.
bool ReadNumber(absl::string_view text, size_t* pos, size_t max, absl::string_view* out) {
  size_t i = *pos;
  while (i < text.size() && i - *pos < max && absl::ascii_isdigit(text[i])) ++i;
  if (i == *pos || (i < text.size() && absl::ascii_isdigit(text[i]))) return false;
  *out = text.substr(*pos, i - *pos);
  *pos = i;
  return true;
}

bool IsNginxLevel(absl::string_view level) {
  for (absl::string_view l : {"debug", "info", "notice", "warn", "error", "crit", "alert",
                              "emerg"}) {
    if (level == l) return true;
  }
  return false;
}

// Apache's LogLevel names: 2.2's eight and 2.4's trace1..trace8.
bool IsApacheLevel(absl::string_view level) {
  if (level.size() == 6 && level.substr(0, 5) == "trace" && level[5] >= '1' && level[5] <= '8') {
    return true;
  }
  return IsNginxLevel(level);  // the same eight syslog levels
}

// "hh:mm:ss" at `pos` (no range check).
bool ReadClock(absl::string_view text, size_t pos, int* hour, int* minute, int* second) {
  return ReadDigits(text, pos, 2, hour) && pos + 5 < text.size() && text[pos + 2] == ':' &&
         ReadDigits(text, pos + 3, 2, minute) && text[pos + 5] == ':' &&
         ReadDigits(text, pos + 6, 2, second);
}

// A UTC offset "+hh:mm", "+hhmm" or "+hh" at `pos`: its seconds east of UTC in *seconds, and
// where it ends; 0 when there is none there, or one past +-23:59.
size_t ReadUtcOffset(absl::string_view text, size_t pos, int* seconds) {
  int oh, om = 0;
  if (pos >= text.size() || (text[pos] != '+' && text[pos] != '-') ||
      !ReadDigits(text, pos + 1, 2, &oh)) {
    return 0;
  }
  size_t end = pos + 3;
  if (end < text.size() && text[end] == ':') {
    if (!ReadDigits(text, end + 1, 2, &om)) return 0;
    end += 3;
  } else if (ReadDigits(text, end, 2, &om)) {
    end += 2;
  }
  if (oh > 23 || om > 59) return 0;
  *seconds = (oh * 3600 + om * 60) * (text[pos] == '-' ? -1 : 1);
  return end;
}

// A count of seconds at the start of a raw line's `text` (after its "[", when `bracketed`):
// its length and its time in *out, when the server's separator follows it (a space, or the "]"
// that closes the bracket); 0 when there is none. These count from 1970 in UTC, whatever the
// source's zone:
//   "uuuuuuuuuu[.fff]"     Unix seconds (Squid's access.log, portsentry, nsd): exactly ten
//                          digits, the first not 0 (2001-09-09 to 2286-11-20: fewer or more is
//                          a counter or an id sooner than a time), the fraction 1-9 digits.
//   "@" + 24 lowercase hex  TAI64N (daemontools' multilog, runit's svlogd, s6-log): a 16-digit
//                          TAI64 label, then 8 digits of nanoseconds (up to 999999999).
size_t ReadCountedStamp(absl::string_view text, bool bracketed, absl::Time* out) {
  size_t end;
  if (text.size() > 25 && text[0] == '@') {
    uint64_t label = 0;
    uint32_t nanos = 0;
    for (size_t i = 1; i <= 24; ++i) {
      const char c = text[i];
      uint32_t nibble;
      if (c >= '0' && c <= '9') {
        nibble = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        nibble = c - 'a' + 10;
      } else {
        return 0;  // the writers use lower case only
      }
      if (i <= 16) {
        label = label << 4 | nibble;
      } else {
        nanos = nanos << 4 | nibble;
      }
    }
    // A label is 2^62 + TAI seconds since 1970. libtai's convention has TAI 10 s ahead of UTC at
    // that epoch (the leap seconds since not counted): the writers put 2^62 + 10 + the Unix time
    // in it (daemontools' multilog, runit's svlogd), and tai64nlocal takes the same off, as here;
    // s6-log may count the leap seconds since 1972 too (skalibs' TAI), and so read up to 27 s
    // late here, nothing to windows of minutes. Below that is before 1970; past year
    // 9999 is a time no other stamp can write (and from 2^63 a label TAI64 reserves).
    constexpr uint64_t kLabelOfUnixZero = (uint64_t{1} << 62) + 10;
    constexpr uint64_t kUnixSecondsOfYear10000 = 253'402'300'800;
    if (label < kLabelOfUnixZero || label - kLabelOfUnixZero >= kUnixSecondsOfYear10000 ||
        nanos > 999'999'999) {
      return 0;
    }
    *out = absl::FromUnixSeconds(static_cast<int64_t>(label - kLabelOfUnixZero)) +
           absl::Nanoseconds(nanos);
    end = 25;
  } else if (text.size() > 10 && text[0] >= '1' && text[0] <= '9') {
    int64_t seconds = 0;
    for (size_t i = 0; i < 10; ++i) {
      if (!absl::ascii_isdigit(text[i])) return 0;
      seconds = seconds * 10 + (text[i] - '0');
    }
    end = 10;
    int64_t nanos = 0;
    if (text[10] == '.') {
      int digits = 0;
      for (end = 11; end < text.size() && absl::ascii_isdigit(text[end]); ++end) {
        if (++digits > 9) return 0;  // past nanoseconds: no time, and no long scan
        nanos = nanos * 10 + (text[end] - '0');
      }
      if (digits == 0) return 0;
      for (; digits < 9; ++digits) nanos *= 10;
    }
    *out = absl::FromUnixSeconds(seconds) + absl::Nanoseconds(nanos);
  } else {
    return 0;
  }
  // A bare number is a weak shape: only where the server ends it is it a stamp.
  if (end >= text.size() || text[end] != (bracketed ? ']' : ' ')) return 0;
  return end;
}

// Whether `text` holds `word` at `pos` (false, not a throw, where `pos` is past its end).
inline bool HasAt(absl::string_view text, size_t pos, absl::string_view word) {
  return pos <= text.size() && text.size() - pos >= word.size() &&
         std::memcmp(text.data() + pos, word.data(), word.size()) == 0;
}

// auditd's record header at the start of a raw line, "[node=NAME ]type=TYPE
// msg=audit(SECONDS.mmm:SERIAL)" (audit.log): its length and its time in *out (Unix seconds and
// milliseconds, so UTC); 0 when there is none. The seconds are ten digits, the first not 0, as
// ReadCountedStamp's. What the audited program wrote comes after the header, so it cannot
// date the line.
size_t ReadAuditStamp(absl::string_view text, absl::Time* out) {
  size_t pos = 0;
  if (HasAt(text, 0, "node=")) {
    // A host name is at most 253 bytes: look no further for its end.
    pos = FindChar(text.substr(0, 5 + 254), ' ', 5);
    if (pos == absl::string_view::npos || pos == 5) return 0;
    ++pos;
  }
  if (!HasAt(text, pos, "type=")) return 0;
  pos += 5;
  const size_t type = pos;  // "USER_AUTH", "AVC", ...: at most 32 of [A-Z0-9_]
  while (pos < text.size() && pos - type < 32 &&
         (absl::ascii_isupper(text[pos]) || absl::ascii_isdigit(text[pos]) || text[pos] == '_')) {
    ++pos;
  }
  if (pos == type || !HasAt(text, pos, " msg=audit(")) return 0;
  pos += 11;
  int high, low, millis;  // the seconds as 5 + 5 digits (10 overflow an int)
  if (pos >= text.size() || text[pos] == '0' || !ReadDigits(text, pos, 5, &high) ||
      !ReadDigits(text, pos + 5, 5, &low) || !HasAt(text, pos + 10, ".") ||
      !ReadDigits(text, pos + 11, 3, &millis) || !HasAt(text, pos + 14, ":")) {
    return 0;
  }
  const int64_t seconds = int64_t{high} * 100'000 + low;
  size_t end = pos + 15;  // the serial number: 1-20 digits, then ')'
  while (end < text.size() && end - (pos + 15) < 20 && absl::ascii_isdigit(text[end])) ++end;
  if (end == pos + 15 || !HasAt(text, end, ")")) return 0;
  *out = absl::FromUnixSeconds(seconds) + absl::Milliseconds(millis);
  return end + 1;
}

// Where an ISO 8601 stamp starts after a raw line's fixed prefix, when the line has one of these
// (the stamp is then read as a leading one; the prefix is the server's, so it holds no text a
// client wrote); 0 when not:
//   "<W>2015-11-29 16:38:01.818 1 => ..."        Murmur (mumble-server.log): a level letter
//   "<co ts=\"2014-06-02T16:06:33.99\" ..."       Oracle Communications Messaging Server's XML
//                                                records (LOG_FORMAT=4): a lower-case tag
//   "t=2020-10-19T17:44:33+0200 lvl=eror ..."     Grafana 7's logfmt, when t= leads (Grafana 8
//                                                writes it after the client's uname=: no time)
//   "78017 00cff -- none -- - 2014-01-13T05:..."   Tine 2.0's tine20.log: two 5-hex-digit ids
//                                                and no user (a failed log-in has none; a user
//                                                name is not read past)
size_t IsoStampAfterPrefix(absl::string_view text) {
  if (text.size() < 3) return 0;
  if (text[0] == '<') {
    if (absl::ascii_isupper(text[1]) && text[2] == '>') return 3;
    size_t tag = 1;
    while (tag < text.size() && tag < 9 && absl::ascii_islower(text[tag])) ++tag;
    return tag > 1 && HasAt(text, tag, " ts=\"") ? tag + 5 : 0;
  }
  if (text[0] == 't' && text[1] == '=') return 2;
  if (text.size() > 25 && text[5] == ' ' && HasAt(text, 11, " -- none -- - ")) {
    for (size_t i : {0, 1, 2, 3, 4, 6, 7, 8, 9, 10}) {
      if (!absl::ascii_isdigit(text[i]) && (text[i] < 'a' || text[i] > 'f')) return 0;
    }
    return 25;
  }
  return 0;
}

// Whether `text` starts a syslog header (<PRI>, "Mmm " or an ISO date): a daemon logging
// through syslog (nginx's `error_log syslog:`, Apache's `ErrorLog syslog`).
bool LooksLikeSyslog(absl::string_view text) {
  if (text.empty()) return false;
  if (text[0] == '<') return true;
  if (text.size() >= 4 && text[3] == ' ' && MonthFromAbbrev(text.substr(0, 3)) != 0) return true;
  return text.size() >= 11 && text[4] == '-' && text[7] == '-' &&
         (text[10] == 'T' || text[10] == ' ') && absl::ascii_isdigit(text[0]);
}

}  // namespace

absl::Time FromCivilNear(const absl::CivilSecond& civil, absl::TimeZone zone, absl::Time reference,
                         bool* repeated) {
  const absl::TimeZone::TimeInfo info = zone.At(civil);
  switch (info.kind) {
    case absl::TimeZone::TimeInfo::UNIQUE:
      return info.pre;
    case absl::TimeZone::TimeInfo::SKIPPED:
      return info.trans;
    case absl::TimeZone::TimeInfo::REPEATED:
      break;
  }
  if (repeated != nullptr) *repeated = true;
  return absl::AbsDuration(info.post - reference) < absl::AbsDuration(info.pre - reference)
             ? info.post
             : info.pre;
}

namespace {

// A civil date and second of the day (up to 86,400: 23:59:60 is the next midnight) in `zone`,
// through the zone's rules (FromCivilNear): what every cache of LineParser must give. False
// when the date does not exist (29 February of a common year).
bool CivilToTimeByRules(int64_t year, int month, int day, int seconds_of_day, absl::TimeZone zone,
                        absl::Time reference, absl::Time* out, bool* repeated) {
  const absl::CivilDay civil(year, month, day);
  if (civil.day() != day) return false;
  *out = FromCivilNear(absl::CivilSecond(year, month, day, seconds_of_day / 3600,
                                         (seconds_of_day / 60) % 60, seconds_of_day % 60),
                       zone, reference, repeated);
  return true;
}

}  // namespace

bool IsIpAddress(absl::string_view token) {
  if (token.empty() || token.size() > 45) return false;
  for (char c : token) {
    if (!absl::ascii_isxdigit(c) && c != ':' && c != '.') return false;
  }
  char buf[46];
  std::memcpy(buf, token.data(), token.size());
  buf[token.size()] = '\0';
  unsigned char addr[16];
  return inet_pton(AF_INET, buf, addr) == 1 || inet_pton(AF_INET6, buf, addr) == 1;
}

absl::StatusOr<LogFormat> ParseFormatName(absl::string_view name) {
  for (LogFormat f : {LogFormat::LOG_FORMAT_SYSLOG, LogFormat::LOG_FORMAT_SYSLOG5424,
                      LogFormat::LOG_FORMAT_COMBINED, LogFormat::LOG_FORMAT_RAW,
                      LogFormat::LOG_FORMAT_NGINX_ERROR, LogFormat::LOG_FORMAT_APACHE_ERROR,
                      LogFormat::LOG_FORMAT_DECISIONS, LogFormat::LOG_FORMAT_JSON,
                      LogFormat::LOG_FORMAT_NGINX_JSON, LogFormat::LOG_FORMAT_CADDY_JSON,
                      LogFormat::LOG_FORMAT_TRAEFIK_JSON, LogFormat::LOG_FORMAT_ENVOY_JSON,
                      LogFormat::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS,
                      LogFormat::LOG_FORMAT_LOGPUSH_FIREWALL_EVENTS,
                      LogFormat::LOG_FORMAT_COMBINED_VHOST}) {
    if (FormatName(f) == name) return f;
  }
  // Audit records revoke API tokens by id: they come from palisaded's own poller (or an admin's
  // Ship), never from an input or a shipper that names a format (rules.proto).
  if (name == FormatName(LogFormat::LOG_FORMAT_CLOUDFLARE_AUDIT)) {
    return absl::InvalidArgumentError(
        "format cloudflare_audit is read by palisaded itself from Cloudflare's audit log API "
        "(cloudflare.audit_logs_interval); no input or shipper may name it");
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown format \"", name,
      "\" (expected syslog, syslog5424, combined, combined_vhost, raw, nginx_error, apache_error, "
      "decisions, json, nginx_json, caddy_json, traefik_json, envoy_json, logpush_http_requests or "
      "logpush_firewall_events)"));
}

absl::StatusOr<LogFormat> ParseOfflineFormatName(absl::string_view name) {
  if (name == FormatName(LogFormat::LOG_FORMAT_CLOUDFLARE_AUDIT)) {
    return LogFormat::LOG_FORMAT_CLOUDFLARE_AUDIT;
  }
  return ParseFormatName(name);
}

absl::string_view FormatName(LogFormat format) {
  switch (format) {
    case LogFormat::LOG_FORMAT_SYSLOG:
      return "syslog";
    case LogFormat::LOG_FORMAT_SYSLOG5424:
      return "syslog5424";
    case LogFormat::LOG_FORMAT_COMBINED:
      return "combined";
    case LogFormat::LOG_FORMAT_COMBINED_VHOST:
      return "combined_vhost";
    case LogFormat::LOG_FORMAT_RAW:
      return "raw";
    case LogFormat::LOG_FORMAT_NGINX_ERROR:
      return "nginx_error";
    case LogFormat::LOG_FORMAT_APACHE_ERROR:
      return "apache_error";
    case LogFormat::LOG_FORMAT_DECISIONS:
      return "decisions";
    case LogFormat::LOG_FORMAT_JSON:
      return "json";
    case LogFormat::LOG_FORMAT_NGINX_JSON:
      return "nginx_json";
    case LogFormat::LOG_FORMAT_CADDY_JSON:
      return "caddy_json";
    case LogFormat::LOG_FORMAT_TRAEFIK_JSON:
      return "traefik_json";
    case LogFormat::LOG_FORMAT_ENVOY_JSON:
      return "envoy_json";
    case LogFormat::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS:
      return "logpush_http_requests";
    case LogFormat::LOG_FORMAT_LOGPUSH_FIREWALL_EVENTS:
      return "logpush_firewall_events";
    case LogFormat::LOG_FORMAT_CLOUDFLARE_AUDIT:
      return "cloudflare_audit";
    default:
      return "unspecified";
  }
}

absl::StatusOr<size_t> ParseRfc3339Timestamp(absl::string_view text, absl::Time* out,
                                              absl::TimeZone zone) {
  return ParseRfc3339Near(text, out, zone, absl::InfinitePast(), nullptr);
}

absl::StatusOr<size_t> ParseRfc3339Near(absl::string_view text, absl::Time* out,
                                        absl::TimeZone zone, absl::Time reference, bool* repeated) {
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
    // RFC 3339's +05:30, or ISO 8601's basic +0530 (Python's %z, Go's Z0700).
    int oh, om;
    size_t end = 0;
    if (ReadDigits(text, pos + 1, 2, &oh)) {
      if (pos + 3 < text.size() && text[pos + 3] == ':' && ReadDigits(text, pos + 4, 2, &om)) {
        end = pos + 6;
      } else if (ReadDigits(text, pos + 3, 2, &om)) {
        end = pos + 5;
      }
    }
    if (end == 0) return 0;
    // RFC 3339's time-numoffset: hours 00-23, minutes 00-59 (+99:99 would move the line by
    // four days).
    if (oh > 23 || om > 59) return absl::OutOfRangeError("a UTC offset out of range");
    offset_seconds = (oh * 3600 + om * 60) * (text[pos] == '-' ? -1 : 1);
    pos = end;
  } else {
    has_offset = false;
  }
  // A leap second (:60) is the second after :59, as the other stamps here read it: built on
  // :59, it cannot carry a valid date past its day (23:59:60 on the 31st of December).
  const bool leap = second == 60;
  absl::CivilSecond cs(year, month, day, hour, minute, leap ? 59 : second);
  if (cs.day() != day) {  // e.g. February 31st normalised away
    return absl::OutOfRangeError("a date that does not exist");
  }
  *out = (has_offset ? absl::FromCivil(cs, absl::UTCTimeZone())
                     : FromCivilNear(cs, zone, reference, repeated)) +
         frac - absl::Seconds(offset_seconds - (leap ? 1 : 0));
  return pos;
}

size_t ParseRfc3339Prefix(absl::string_view text, absl::Time* out, absl::TimeZone zone) {
  absl::StatusOr<size_t> used = ParseRfc3339Timestamp(text, out, zone);
  return used.ok() ? *used : 0;
}

// The caches hold days of years 0 to 9999 (what a line writes in four digits), whose seconds
// are far from int64's ends: their times are computed in Unix seconds, which absl::Time's
// arithmetic (Duration::operator+=, out of line in a shared library) would cost more than the
// parse. Any other year goes to the zone's rules.
constexpr int64_t kMaxCachedYear = 9999;

bool LineParser::FillUtcDayStart(int64_t year, int month, int day, int64_t* start) {
  // The date's existence is checked once, when it comes in (a cached date exists).
  const absl::CivilDay civil(year, month, day);
  if (civil.day() != day) return false;  // 31 February, normalised away
  cached_year_ = year;
  cached_month_ = month;
  cached_day_ = day;
  cached_day_start_ = absl::ToUnixSeconds(absl::FromCivil(civil, absl::UTCTimeZone()));
  *start = cached_day_start_;
  return true;
}

bool LineParser::CivilToTime(int64_t year, int month, int day, int seconds_of_day,
                             absl::Time reference, absl::Time* out, bool* repeated) {
  if (!caching_ || year < 0 || year > kMaxCachedYear) {
    return CivilToTimeByRules(year, month, day, seconds_of_day, zone_, reference, out, repeated);
  }
  if (zone_is_utc_) {
    int64_t start;
    if (!UtcDayStart(year, month, day, &start)) return false;
    *out = absl::FromUnixSeconds(start + seconds_of_day);
    return true;
  }
  // Consecutive lines share their date: one compare (a cached day exists and has one offset).
  const bool cached = year == local_year_ && month == local_month_ && day == local_day_;
  if (cached && local_day_uniform_) {
    *out = absl::FromUnixSeconds(local_day_start_ + seconds_of_day);
    return true;
  }
  if (!CivilToTimeByRules(year, month, day, seconds_of_day, zone_, reference, out, repeated)) {
    return false;
  }
  if (cached) return true;  // a day with an offset change, known as such
  const absl::CivilDay civil(year, month, day);
  local_year_ = year;
  local_month_ = month;
  local_day_ = day;
  local_day_uniform_ = false;
  // The day is cached when its midnight exists once and no offset change comes before the next
  // midnight, nor at it (23:59:60 is the next midnight): then every second of it, up to
  // 86,400, is its midnight plus the seconds, as the zone's rules say. The offsets at both
  // midnights are compared as well, in case the zone's transitions are not all listed.
  const absl::TimeZone::TimeInfo midnight = zone_.At(absl::CivilSecond(civil));
  if (midnight.kind != absl::TimeZone::TimeInfo::UNIQUE) return true;
  const absl::Time start = midnight.pre;
  const absl::Time end = start + absl::Hours(24);
  absl::TimeZone::CivilTransition change;
  if (zone_.NextTransition(start, &change) && zone_.At(change.to).trans <= end) return true;
  if (zone_.At(start).offset != zone_.At(end).offset) return true;
  local_day_uniform_ = true;
  local_day_start_ = absl::ToUnixSeconds(start);
  return true;
}

int64_t LineParser::YearOfByRules(absl::Time t) {
  if (!caching_) return absl::ToCivilYear(t, zone_).year();
  const int64_t year = absl::ToCivilYear(t, zone_).year();
  // Cached as [its 1 January 00:00, the next one): when both midnights exist exactly once,
  // every time between them is in the year (an offset change crossing either midnight would
  // make it skipped or repeated).
  const absl::TimeZone::TimeInfo begin = zone_.At(absl::CivilSecond(year, 1, 1, 0, 0, 0));
  const absl::TimeZone::TimeInfo end = zone_.At(absl::CivilSecond(year + 1, 1, 1, 0, 0, 0));
  if (begin.kind == absl::TimeZone::TimeInfo::UNIQUE &&
      end.kind == absl::TimeZone::TimeInfo::UNIQUE && t >= begin.pre && t < end.pre) {
    year_of_span_ = year;
    year_begin_ = begin.pre;
    year_end_ = end.pre;
  }
  return year;
}

LineParser::LineParser(LogFormat format, absl::TimeZone zone)
    : format_(format), zone_(zone), zone_is_utc_(zone == absl::UTCTimeZone()) {}
LineParser::~LineParser() = default;
LineParser::LineParser(LineParser&&) = default;
LineParser& LineParser::operator=(LineParser&&) = default;

absl::Status LineParser::SetJsonFormat(const palisade::v1::JsonFormat& mapping) {
  absl::StatusOr<std::unique_ptr<JsonLineParser>> parser =
      JsonLineParser::ForMapping(mapping, zone_);
  if (!parser.ok()) return parser.status();
  json_ = *std::move(parser);
  return absl::OkStatus();
}

absl::Status LineParser::Parse(absl::string_view line, absl::Time reference, ParsedLine* out,
                               YearRule rule) {
  out->Clear();
  switch (format_) {
    case LogFormat::LOG_FORMAT_SYSLOG:
      return ParseSyslog3164(line, reference, rule, out);
    case LogFormat::LOG_FORMAT_SYSLOG5424:
      return ParseSyslog5424(line, reference, out);
    case LogFormat::LOG_FORMAT_COMBINED:
      return ParseCombined(line, reference, /*vhost=*/false, out);
    case LogFormat::LOG_FORMAT_COMBINED_VHOST:
      return ParseCombined(line, reference, /*vhost=*/true, out);
    case LogFormat::LOG_FORMAT_NGINX_ERROR:
      return ParseNginxError(line, reference, rule, out);
    case LogFormat::LOG_FORMAT_APACHE_ERROR:
      return ParseApacheError(line, reference, rule, out);
    case LogFormat::LOG_FORMAT_RAW:
      return ParseRaw(line, reference, rule, out);
    case LogFormat::LOG_FORMAT_DECISIONS:  // Palisade's own lines: no header, no time
    // One JSON record a line, whose fields come in any order: the rules read it whole; its time
    // is the record's (the poller's LogRecord.event_time).
    case LogFormat::LOG_FORMAT_CLOUDFLARE_AUDIT:
      out->message = line;
      return absl::OkStatus();
    default:
      break;
  }
  if (IsJsonFormat(format_)) {
    if (json_ == nullptr) {
      if (format_ == LogFormat::LOG_FORMAT_JSON) {
        return absl::InvalidArgumentError(
            "json: no json_format names the mapping of these records (Config.json_formats)");
      }
      absl::StatusOr<std::unique_ptr<JsonLineParser>> preset =
          JsonLineParser::ForPreset(format_, zone_);
      if (!preset.ok()) return preset.status();
      json_ = *std::move(preset);
    }
    return json_->Parse(line, reference, out);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported log format ", palisade::v1::LogFormat_Name(format_)));
}

inline absl::Status LineParser::ParseSyslog3164(absl::string_view line, absl::Time reference,
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
  bool repeated = false;
  // rsyslog's high-precision timestamps (a digit first: a "Mmm" line skips the call).
  size_t used = 0;
  if (!rest.empty() && absl::ascii_isdigit(rest[0])) {
    absl::StatusOr<size_t> iso = ParseRfc3339Near(rest, &t, zone_, reference, &repeated);
    if (!iso.ok()) {
      return absl::OutOfRangeError(absl::StrCat("syslog: impossible timestamp at column ", pos + 1,
                                                ": ", iso.status().message()));
    }
    used = *iso;
  }
  if (used > 0) {
    out->time = t;
    out->time_repeated = repeated;
    pos += used;
  } else {
    // "Mmm dd hh:mm:ss": the day space-padded ("Mar  3", as syslogd writes it), zero-padded
    // ("Mar 03") or unpadded ("Feb 1", as proftpd's own log and some relays write it).
    int month, day, hour, minute, second;
    size_t at = 6;  // the space before hh:mm:ss
    int line_year = 0;
    // The usual line: the "Mmm dd " of the last line read below (7 bytes compared), then
    // "hh:mm:ss" in one 8-byte word; anything else is read below, as it was.
    if (kLittleEndian && caching_ && syslog_date_month_ != 0 && rest.size() >= 16 &&
        (Load8(rest.data()) & kLow7Bytes) == syslog_date_key_ &&
        ReadClock8(rest.data() + 7, &hour, &minute, &second) && hour <= 23 && minute <= 59 &&
        second <= 60) {
      month = syslog_date_month_;
      day = syslog_date_day_;
    } else {
      month = rest.size() >= 14 ? MonthFromAbbrev(rest.substr(0, 3)) : 0;
      if (month == 0 || rest[3] != ' ') {
        return absl::InvalidArgumentError(absl::StrCat("syslog: no timestamp at column ", pos + 1,
                                                       " (expected \"Mmm dd hh:mm:ss\")"));
      }
      bool day_ok;
      if (rest[4] == ' ') {
        day_ok = ReadDigits(rest, 5, 1, &day);
      } else if (rest[5] == ' ') {
        day_ok = ReadDigits(rest, 4, 1, &day);
        at = 5;
      } else {
        day_ok = ReadDigits(rest, 4, 2, &day);
      }
      // "Oct 27 2015 12:35:40": macOS's syslog writes the year after the day.
      if (day_ok && rest.size() > at + 5 && rest[at] == ' ' && rest[at + 5] == ' ' &&
          ReadDigits(rest, at + 1, 4, &line_year)) {
        at += 5;
      }
      if (!day_ok || rest.size() < at + 9 || rest[at] != ' ' ||
          !ReadDigits(rest, at + 1, 2, &hour) || rest[at + 3] != ':' ||
          !ReadDigits(rest, at + 4, 2, &minute) || rest[at + 6] != ':' ||
          !ReadDigits(rest, at + 7, 2, &second)) {
        return absl::InvalidArgumentError(
            absl::StrCat("syslog: bad timestamp at column ", pos + 1));
      }
      if (day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
        return absl::OutOfRangeError(
            absl::StrCat("syslog: bad timestamp at column ", pos + 1, ": a field out of range"));
      }
      // "Mmm dd " (the day's two bytes, then the space at 6; no year): the next lines' key.
      if (at == 6 && line_year == 0) {
        syslog_date_key_ = Load8(rest.data()) & kLow7Bytes;  // rest holds 15 bytes and more
        syslog_date_month_ = month;
        syslog_date_day_ = day;
      }
    }
    const int tod = hour * 3600 + minute * 60 + second;
    bool found = false;
    if (line_year == 0 &&
        (reference == absl::InfiniteFuture() || reference == absl::InfinitePast())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "syslog: no year at column ", pos + 1, " and an infinite reference time to take it from"));
    }
    const int64_t year = line_year > 0 ? line_year : YearOf(reference);
    if (line_year > 0) {
      found = CivilToTime(line_year, month, day, tod, reference, &t, &repeated);
    } else if (rule == YearRule::kNearest) {
      // The previous line's year, or the one before or after: whichever is nearest to it.
      // Less than 182 days away, the previous line's year wins outright (the others are at
      // least a year less an hour from it), which is every line but those around New Year:
      // stopping there keeps the one-day cache warm instead of refilling it three times a line.
      // The usual line, on the cached day: that test in Unix seconds, |at - reference| < 182
      // days being at - 182 days < reference < at + 182 days (absl::Time compares inline).
      constexpr int64_t kHalfYear = int64_t{24 * 3600} * 182;
      int64_t start;
      bool near = false;
      if (caching_ && CachedDayStart(year, month, day, &start)) {
        const int64_t at = start + tod;
        if (absl::FromUnixSeconds(at - kHalfYear) < reference &&
            reference < absl::FromUnixSeconds(at + kHalfYear)) {
          t = absl::FromUnixSeconds(at);
          found = near = true;
        }
      }
      absl::Duration best = absl::InfiniteDuration();
      for (int64_t y : {year, year + 1, year - 1}) {
        if (near) break;
        absl::Time candidate;
        bool candidate_repeated = false;
        if (!CivilToTime(y, month, day, tod, reference, &candidate, &candidate_repeated)) {
          continue;
        }
        const absl::Duration distance = absl::AbsDuration(candidate - reference);
        if (distance < best) {
          best = distance;
          t = candidate;
          repeated = candidate_repeated;
          found = true;
        }
        if (best < absl::Hours(24 * 182)) break;
      }
    } else {
      // The latest year that is at most a day ahead of now (29 February: up to 8 years back).
      // The usual line, on the cached day of now's year, at most a day ahead of now and less
      // than 359 days behind it: that year, as the loop finds (the same date a year on is 365
      // days later, less the difference of two UTC offsets, under two days: more than a day
      // ahead of now), but in Unix seconds and without converting the next year's date (which
      // refilled the one-day cache twice a line).
      constexpr int64_t kDay = 24 * 3600;
      int64_t start;
      if (caching_ && CachedDayStart(year, month, day, &start)) {
        const int64_t at = start + tod;
        if (absl::FromUnixSeconds(at - kDay) <= reference &&
            reference < absl::FromUnixSeconds(at + 359 * kDay)) {
          t = absl::FromUnixSeconds(at);
          found = true;
        }
      }
      for (int64_t y = year + 1; y >= year - 8 && !found; --y) {
        absl::Time candidate;
        bool candidate_repeated = false;
        if (CivilToTime(y, month, day, tod, reference, &candidate, &candidate_repeated) &&
            candidate <= reference + absl::Hours(24)) {
          t = candidate;
          repeated = candidate_repeated;
          found = true;
        }
      }
    }
    if (!found) {
      return absl::OutOfRangeError(absl::StrCat("syslog: bad date at column ", pos + 1));
    }
    out->time = t;
    out->year_inferred = line_year == 0;
    out->time_repeated = repeated;
    pos += at + 9;
    // A fraction of the second, "hh:mm:ss.123456" (journalctl -o short-precise, syslog-ng's
    // frac-digits()), read here after both ways in: '.' and 1-9 digits, kept in the time.
    if (pos < line.size() && line[pos] == '.') {
      const size_t dot = pos;
      int64_t nanos = 0;
      int digits = 0;
      while (++pos < line.size() && absl::ascii_isdigit(line[pos])) {
        // Past nanoseconds a fraction means nothing: no longer scan (as ParseRfc3339Near).
        if (++digits > 9) {
          return absl::OutOfRangeError(absl::StrCat("syslog: bad timestamp at column ", dot + 1,
                                                    ": a fraction of more than 9 digits"));
        }
        nanos = nanos * 10 + (line[pos] - '0');
      }
      if (digits == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("syslog: no digit after the timestamp's '.' at column ", dot + 1));
      }
      for (; digits < 9; ++digits) nanos *= 10;
      *out->time += absl::Nanoseconds(nanos);
    }
  }
  if (pos >= line.size() || line[pos] != ' ') {
    return absl::InvalidArgumentError(
        absl::StrCat("syslog: expected a space after the timestamp at column ", pos + 1));
  }
  ++pos;
  // More blanks where the host would be ("22:52:12   lighttpd[53690]: "): no host.
  while (pos < line.size() && line[pos] == ' ') ++pos;
  const size_t host_at = pos;
  bool host_has_bracket = false;
  bool host_read = false;
#if defined(__SSE2__)
  if (caching_ && line.size() - pos >= 16) {
    // The host ends at the first space of the 16 bytes (line[pos] is none), as NextToken reads.
    const __m128i v = Load16(line.data() + pos);
    const unsigned spaces = Eq16(v, ' ');
    if (spaces != 0) {
      const size_t len = static_cast<size_t>(__builtin_ctz(spaces));
      out->host = absl::string_view(line.data() + pos, len);
      host_has_bracket = (Eq16(v, '[') & ((1u << len) - 1)) != 0;
      pos += len + 1;
      host_read = true;
    }
  }
#endif
  if (!host_read) {
    out->host = NextToken(line, &pos);
    host_has_bracket =
        !out->host.empty() && FindChar(out->host, '[') != absl::string_view::npos;
  }
  if (out->host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("syslog: no host at column ", pos + 1));
  }
  // No host at all: the token after the time is already the tag ("sshd[8148]:", "sshd:"), as
  // some local loggers write. A host name never ends with ':' nor holds a '['.
  if (out->host.back() == ':' || host_has_bracket) {
    out->host = {};
    pos = host_at;
  }
  absl::string_view body(line.data() + pos, line.size() - pos);  // pos <= line.size()
  if (!SplitTag(body, &out->program, &out->pid, &out->message, caching_)) {
    out->program = {};
    out->pid = {};
    out->message = body;
  }
  return absl::OkStatus();
}

absl::Status LineParser::ParseSyslog5424(absl::string_view line, absl::Time reference,
                                         ParsedLine* out) {
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
  // A header field: "-" when left out (NILVALUE), never empty (two spaces in a row; an empty
  // TIMESTAMP was read as 1970).
  absl::Status bad_field;
  auto field = [&](absl::string_view name) {
    const size_t at = pos;
    const absl::string_view token = NextToken(line, &pos);
    if (token.empty() && bad_field.ok()) {
      bad_field = absl::InvalidArgumentError(
          at >= line.size()
              ? std::string("syslog5424: line ends before STRUCTURED-DATA")
              : absl::StrCat("syslog5424: empty ", name, " at column ", at + 1,
                             " (a field left out is \"-\")"));
    }
    return token;
  };
  size_t ts_col = pos;
  absl::string_view ts = field("TIMESTAMP");
  if (!bad_field.ok()) return bad_field;
  if (ts != "-") {
    absl::Time t;
    bool repeated = false;
    absl::StatusOr<size_t> used = ParseRfc3339Near(ts, &t, zone_, reference, &repeated);
    if (!used.ok()) {
      return absl::OutOfRangeError(absl::StrCat("syslog5424: impossible timestamp at column ",
                                                ts_col + 1, ": ", used.status().message()));
    }
    if (*used != ts.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("syslog5424: bad timestamp at column ", ts_col + 1));
    }
    out->time = t;
    out->time_repeated = repeated;
  }
  out->host = field("HOSTNAME");
  absl::string_view app = field("APP-NAME");
  absl::string_view procid = field("PROCID");
  field("MSGID");
  if (!bad_field.ok()) return bad_field;
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

inline absl::Status LineParser::ParseCombined(absl::string_view line, absl::Time reference,
                                              bool vhost, ParsedLine* out) {
  // [vhost] client ident user [dd/Mon/yyyy:hh:mm:ss +zzzz] "request" status bytes [...]
  // The first " [": the first '[' with a space before it (memchr, with no call through absl's
  // shared library nor a two-byte search).
  size_t open = absl::string_view::npos;
  size_t first_space = absl::string_view::npos;
  size_t from = 1;  // where memchr looks for the '[' (the wide scan below looked before it)
#if defined(__SSE2__)
  if (caching_) {
    // 16 bytes at a time: a '[' with a space before it (the previous block's last byte for the
    // first), and the first space.
    unsigned space_before = 0;
    size_t b = 0;
    for (; b + 16 <= line.size(); b += 16) {
      const __m128i v = Load16(line.data() + b);
      const unsigned spaces = Eq16(v, ' ');
      if (first_space == absl::string_view::npos && spaces != 0) {
        first_space = b + static_cast<size_t>(__builtin_ctz(spaces));
      }
      const unsigned opens = Eq16(v, '[') & ((spaces << 1) | space_before);
      if (opens != 0) {
        open = b + static_cast<size_t>(__builtin_ctz(opens)) - 1;
        break;
      }
      space_before = spaces >> 15;
    }
    from = open != absl::string_view::npos ? line.size() : std::max<size_t>(b, 1);
  }
#endif
  for (size_t at = MemChr(line, '[', from); at != absl::string_view::npos;
       at = MemChr(line, '[', at + 1)) {
    if (line[at - 1] == ' ') {
      open = at - 1;
      break;
    }
  }
  if (open == absl::string_view::npos || open == 0) {
    return absl::InvalidArgumentError("combined: no \"[time]\" field");
  }
  // The spaces below are found before `open`, itself a space (the first one through memchr:
  // the client address is a dozen bytes and more).
  if (first_space == absl::string_view::npos) first_space = MemChr(line, ' ', 0);
  out->host = line.substr(0, first_space);
  out->message = line;
  // COMBINED_VHOST: the server's virtual host in front (Apache's vhost_combined "%v:%p", nginx's
  // "$server_name"), the client address second. Only the format says so: the line cannot, since
  // the fields that would tell a vhost line from a plain one are the client's (nginx's
  // $http_host, an identd answer with IdentityCheck On) and a guess lets the client choose the
  // address keyed.
  if (vhost) {
    if (first_space + 1 >= open) {
      return absl::InvalidArgumentError("combined_vhost: no client field after the vhost");
    }
    out->message = line.substr(first_space + 1);
  } else if (first_space + 1 < open) {
    // A second field that is an address: a vhost log read as combined (nginx's "$host
    // $remote_addr ...", which this parser used to guess), where the first field is the
    // client's Host header and the web rules would key it; or an identd answer (IdentityCheck
    // On) holding an address. Neither of the two fields can be trusted: the line is refused.
    const size_t second_end = FindChar(line, ' ', first_space + 1);
    const char second = line[first_space + 1];
    if ((absl::ascii_isxdigit(second) || second == ':') &&
        IsIpAddress(line.substr(first_space + 1, second_end - first_space - 1))) {
      return absl::InvalidArgumentError(
          "combined: the second field is an address (a log with a virtual host in front? read "
          "it as combined_vhost)");
    }
  }
  absl::Status status = CombinedTimeAt(line, open, reference, out);
  if (ABSL_PREDICT_TRUE(status.ok())) return status;
  // The user field before the time is the client's (basic auth's user name), written with its
  // spaces and '[' as they come: its " [" is not the time field. The time field is the first
  // " [" holding a time followed by a quoted request (whose '"' both servers escape in a user
  // name, so the client cannot forge one).
  for (size_t at = MemChr(line, '[', open + 2); at != absl::string_view::npos;
       at = MemChr(line, '[', at + 1)) {
    if (line[at - 1] == ' ' && CombinedTimeAt(line, at - 1, reference, out).ok()) {
      return absl::OkStatus();
    }
  }
  return status;
}

inline absl::Status LineParser::CombinedTimeAt(absl::string_view line, size_t open,
                                               absl::Time reference, ParsedLine* out) {
  size_t ts = open + 2;
  // The usual line: the date and offset of the last line read below (12 and 7 bytes compared),
  // "hh:mm:ss" in one 8-byte word.
  {
    int hour, minute, second;
    uint32_t date_end;
    if (kLittleEndian && combined_date_valid_ && caching_ && line.size() > ts + 27 &&
        Load8(line.data() + ts) == combined_date_key_ &&
        (std::memcpy(&date_end, line.data() + ts + 8, 4), date_end == combined_date_key_end_) &&
        (Load8(line.data() + ts + 20) & kLow7Bytes) == combined_offset_key_ &&
        ReadClock8(line.data() + ts + 12, &hour, &minute, &second) && hour <= 23 &&
        minute <= 59 && second <= 60) {
      out->time = absl::FromUnixSeconds(combined_day_start_ + hour * 3600 + minute * 60 + second -
                                        combined_offset_);
      return QuotedRequestAt(line, ts + 27);
    }
  }
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
    const int offset = (oh * 3600 + om * 60) * (line[ts + 21] == '-' ? -1 : 1);
    if (caching_) {
      int64_t start;
      if (!UtcDayStart(year, month, day, &start)) {
        return absl::OutOfRangeError(absl::StrCat("combined: bad date at column ", ts + 1));
      }
      out->time = absl::FromUnixSeconds(start + tod - offset);
      // This date and offset (read, in range, the date existing): the next lines' keys.
      if (kLittleEndian) {
        combined_date_key_ = Load8(line.data() + ts);  // line holds ts + 28 bytes and more
        std::memcpy(&combined_date_key_end_, line.data() + ts + 8, 4);
        combined_offset_key_ = Load8(line.data() + ts + 20) & kLow7Bytes;
        combined_day_start_ = start;
        combined_offset_ = offset;
        combined_date_valid_ = true;
      }
    } else {
      absl::Time t;
      if (!CivilToTimeByRules(year, month, day, tod, absl::UTCTimeZone(), reference, &t, nullptr)) {
        return absl::OutOfRangeError(absl::StrCat("combined: bad date at column ", ts + 1));
      }
      out->time = t - absl::Seconds(offset);
    }
  } else {
    absl::Time t;
    bool repeated = false;
    if (!CivilToTime(year, month, day, tod, reference, &t, &repeated)) {
      return absl::OutOfRangeError(absl::StrCat("combined: bad date at column ", ts + 1));
    }
    out->time = t;
    out->time_repeated = repeated;
  }
  return QuotedRequestAt(line, has_offset ? ts + 27 : ts + 21);
}

namespace {

// A syslog parser's error, said as the error-log format's own.
absl::Status Within(absl::string_view format, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat(format, ": ", s.message()));
}

}  // namespace

absl::Status LineParser::ParseNginxError(absl::string_view line, absl::Time reference,
                                         YearRule rule, ParsedLine* out) {
  // [syslog header] yyyy/mm/dd hh:mm:ss [level] PID#TID: [*CID ]message
  size_t pos = 0;
  const bool wrapped = LooksLikeSyslog(line);
  if (wrapped) {
    if (absl::Status s = ParseSyslog3164(line, reference, rule, out); !s.ok()) {
      return Within("nginx_error", s);
    }
    pos = static_cast<size_t>(out->message.data() - line.data());
  }
  // Its own time: always in the file, and kept by some relays in front of the syslog message.
  if (!wrapped || (line.size() > pos + 4 && line[pos + 4] == '/')) {
    int year, month, day, hour, minute, second;
    if (line.size() < pos + 20 || !ReadDigits(line, pos, 4, &year) || line[pos + 4] != '/' ||
        !ReadDigits(line, pos + 5, 2, &month) || line[pos + 7] != '/' ||
        !ReadDigits(line, pos + 8, 2, &day) || line[pos + 10] != ' ' ||
        !ReadDigits(line, pos + 11, 2, &hour) || line[pos + 13] != ':' ||
        !ReadDigits(line, pos + 14, 2, &minute) || line[pos + 16] != ':' ||
        !ReadDigits(line, pos + 17, 2, &second) || line[pos + 19] != ' ') {
      return absl::InvalidArgumentError(absl::StrCat("nginx_error: bad time at column ", pos + 1,
                                                     " (expected yyyy/mm/dd hh:mm:ss)"));
    }
    if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 ||
        second > 60) {
      return absl::OutOfRangeError(
          absl::StrCat("nginx_error: bad time at column ", pos + 1, ": a field out of range"));
    }
    absl::Time t;
    bool repeated = false;
    if (!CivilToTime(year, month, day, hour * 3600 + minute * 60 + second, reference, &t,
                     &repeated)) {
      return absl::OutOfRangeError(absl::StrCat("nginx_error: bad date at column ", pos + 1));
    }
    out->time = t;
    out->year_inferred = false;
    out->time_repeated = repeated;
    pos += 20;
  }
  // "[level] "
  // The longest level is 6 letters: look no further for the ']' (the line is the client's too).
  const size_t close = pos < line.size() && line[pos] == '[' ? line.substr(pos, 8).find(']') : 0;
  if (close == absl::string_view::npos || close == 0 ||
      !IsNginxLevel(line.substr(pos + 1, close - 1)) || pos + close + 1 >= line.size() ||
      line[pos + close + 1] != ' ') {
    return absl::InvalidArgumentError(absl::StrCat(
        "nginx_error: no [level] at column ", pos + 1, " (expected [debug] ... [emerg])"));
  }
  pos += close + 2;
  // "PID#TID: "
  absl::string_view pid, tid;
  const size_t pid_col = pos + 1;
  bool ok = ReadNumber(line, &pos, 10, &pid) && pos < line.size() && line[pos] == '#';
  if (ok) {
    ++pos;
    ok = ReadNumber(line, &pos, 20, &tid) && pos < line.size() && line[pos] == ':';
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("nginx_error: no \"PID#TID: \" at column ", pid_col));
  }
  ++pos;
  if (pos < line.size() && line[pos] == ' ') ++pos;
  // "*CID ": the connection number, when the line is about one.
  if (pos < line.size() && line[pos] == '*') {
    size_t after = pos + 1;
    absl::string_view cid;
    if (ReadNumber(line, &after, 20, &cid) && after < line.size() && line[after] == ' ') {
      pos = after + 1;
    }
  }
  out->program = "nginx";
  out->pid = pid;
  out->message = line.substr(pos);
  return absl::OkStatus();
}

absl::StatusOr<bool> LineParser::ParseApacheTime(absl::string_view f, absl::Time reference,
                                                 absl::Time* out, bool* repeated) {
  // "Www Mmm dd hh:mm:ss[.ffffff] yyyy" (ErrorLogFormat %t / %{u}t, the default).
  if (f.size() >= 24 && absl::ascii_isalpha(f[0]) && f[3] == ' ' && f[7] == ' ') {
    const int month = MonthFromAbbrev(f.substr(4, 3));
    int day, hour, minute, second, year;
    const bool day_ok = f[8] == ' ' ? ReadDigits(f, 9, 1, &day) : ReadDigits(f, 8, 2, &day);
    if (month == 0 || !day_ok || f[10] != ' ' || !ReadDigits(f, 11, 2, &hour) || f[13] != ':' ||
        !ReadDigits(f, 14, 2, &minute) || f[16] != ':' || !ReadDigits(f, 17, 2, &second)) {
      return false;
    }
    size_t pos = 19;
    int64_t nanos = 0;
    if (f[pos] == '.') {
      int digits = 0;
      while (++pos < f.size() && absl::ascii_isdigit(f[pos])) {
        if (++digits > 9) return absl::OutOfRangeError("a fraction of more than 9 digits");
        nanos = nanos * 10 + (f[pos] - '0');
      }
      if (digits == 0) return false;
      for (int d = digits; d < 9; ++d) nanos *= 10;
    }
    if (pos + 5 != f.size() || f[pos] != ' ' || !ReadDigits(f, pos + 1, 4, &year)) return false;
    if (day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
      return absl::OutOfRangeError("a field out of range");
    }
    absl::Time t;
    if (!CivilToTime(year, month, day, hour * 3600 + minute * 60 + second, reference, &t,
                     repeated)) {
      return absl::OutOfRangeError("a date that does not exist");
    }
    *out = t + absl::Nanoseconds(nanos);
    return true;
  }
  // "yyyy-mm-dd hh:mm:ss[.ffffff]" (ErrorLogFormat %{cu}t).
  absl::StatusOr<size_t> used = ParseRfc3339Near(f, out, zone_, reference, repeated);
  if (!used.ok()) return used.status();
  return *used > 0 && *used == f.size();
}

absl::Status LineParser::ParseApacheError(absl::string_view line, absl::Time reference,
                                          YearRule rule, ParsedLine* out) {
  // [syslog header] [time] [module:level] [pid P:tid T] message   (2.4)
  //                 [time] [level] message                         (2.2)
  size_t pos = 0;
  const bool wrapped = LooksLikeSyslog(line);
  if (wrapped) {
    if (absl::Status s = ParseSyslog3164(line, reference, rule, out); !s.ok()) {
      return Within("apache_error", s);
    }
    pos = static_cast<size_t>(out->message.data() - line.data());
  }
  // "[time] ": required in the file; `ErrorLog syslog` leaves it to the syslog header.
  bool has_time = false;
  if (pos < line.size() && line[pos] == '[') {
    // The longest time field is 40 bytes ("Www Mmm dd hh:mm:ss.fffffffff yyyy" and brackets).
    const size_t close = line.substr(0, pos + 40).find(']', pos);
    if (close != absl::string_view::npos) {
      absl::Time t;
      bool repeated = false;
      absl::StatusOr<bool> is_time =
          ParseApacheTime(line.substr(pos + 1, close - pos - 1), reference, &t, &repeated);
      if (!is_time.ok()) {
        return absl::OutOfRangeError(absl::StrCat("apache_error: impossible time at column ",
                                                  pos + 1, ": ", is_time.status().message()));
      }
      if (*is_time) {
        out->time = t;
        out->year_inferred = false;
        out->time_repeated = repeated;
        has_time = true;
        pos = close + 1;
        if (pos < line.size() && line[pos] == ' ') ++pos;
      }
    }
  }
  if (!has_time && !wrapped) {
    return absl::InvalidArgumentError(
        "apache_error: no [time] at column 1 (expected [Www Mmm dd hh:mm:ss yyyy])");
  }
  // "[module:level]" (2.4; the module may be empty) or "[level]" (2.2).
  const size_t close =
      pos < line.size() && line[pos] == '[' ? line.substr(0, pos + 66).find(']', pos) : pos;
  bool level_ok = close != absl::string_view::npos && close > pos;
  if (level_ok) {
    absl::string_view field = line.substr(pos + 1, close - pos - 1);
    const size_t colon = field.rfind(':');
    if (colon != absl::string_view::npos) {
      for (char c : field.substr(0, colon)) {
        level_ok &= absl::ascii_isalnum(c) || c == '_';
      }
      field.remove_prefix(colon + 1);
    }
    level_ok &= IsApacheLevel(field);
  }
  if (!level_ok) {
    return absl::InvalidArgumentError(absl::StrCat("apache_error: no [module:level] at column ",
                                                   pos + 1, " (expected e.g. [core:error])"));
  }
  pos = close + 1;
  // " [pid P]" / " [pid P:tid T]" (2.4).
  absl::string_view pid = out->pid;
  if (line.substr(pos, 6) == " [pid ") {
    const size_t field_col = pos + 2;
    pos += 6;
    absl::string_view tid;
    bool ok = ReadNumber(line, &pos, 10, &pid);
    if (ok && line.substr(pos, 5) == ":tid ") {
      pos += 5;
      ok = ReadNumber(line, &pos, 20, &tid);
    }
    if (!ok || pos >= line.size() || line[pos] != ']') {
      return absl::InvalidArgumentError(
          absl::StrCat("apache_error: bad [pid] field at column ", field_col));
    }
    ++pos;
  }
  if (pos < line.size()) {
    if (line[pos] != ' ') {
      return absl::InvalidArgumentError(
          absl::StrCat("apache_error: expected a space at column ", pos + 1));
    }
    ++pos;
  }
  out->program = "apache";
  out->pid = pid;
  out->message = line.substr(pos);
  return absl::OkStatus();
}

absl::Status LineParser::ParseRaw(absl::string_view line, absl::Time reference, YearRule rule,
                                  ParsedLine* out) {
  out->message = line;
  // The stamp may be in brackets ("[2026-03-03 14:02:01] NOTICE[...]", Asterisk).
  const bool bracketed = !line.empty() && line[0] == '[';
  const absl::string_view text = bracketed ? line.substr(1) : line;
  absl::Time t;
  bool repeated = false;
  bool inferred = false;
  size_t end = 0;  // the stamp's length in `text`; 0: none
  // The shapes read into civil fields here, then into a time below.
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  bool fields = false;  // read into those
  bool may_have_offset = false;
  if (const size_t counted = ReadCountedStamp(text, bracketed, &t); counted > 0) {
    end = counted;  // Unix seconds or TAI64N
  } else if (text.size() < 14) {
    return absl::OkStatus();  // "Mmm d hh:mm:ss", the shortest of the stamps below
  } else if (const size_t audit = ReadAuditStamp(text, &t); audit > 0) {
    end = audit;  // auditd's "type=... msg=audit(SECONDS.mmm:SERIAL)"
  } else if (const size_t at = IsoStampAfterPrefix(text); at > 0) {
    // An ISO stamp after a fixed prefix (Murmur, Oracle Messaging, Grafana, Tine 2.0).
    absl::StatusOr<size_t> iso = ParseRfc3339Near(text.substr(at), &t, zone_, reference, &repeated);
    if (!iso.ok() || *iso == 0) return absl::OkStatus();
    end = at + *iso;
  } else if (absl::ascii_isdigit(text[0])) {
    // ISO 8601 "yyyy-mm-dd[T ]hh:mm:ss[.,fff][Z|+hh:mm]": exim, MySQL 5.7+, PostgreSQL, ...
    absl::StatusOr<size_t> iso = ParseRfc3339Near(text, &t, zone_, reference, &repeated);
    if (!iso.ok()) return absl::OkStatus();  // a stamp's shape, an impossible time: none
    end = *iso;
    int yymmdd;
    if (end > 0) {
      // No offset of its own, then a space and a zone: an offset (exim's log_timezone,
      // "+0100") or an abbreviation (PostgreSQL's "UTC", "CEST").
      size_t zoneless_end = 19;
      if (text.size() > 19 && (text[19] == '.' || text[19] == ',')) {
        zoneless_end = 20;
        while (zoneless_end < text.size() && absl::ascii_isdigit(text[zoneless_end])) {
          ++zoneless_end;
        }
      }
      if (end == zoneless_end && end + 2 < text.size() && text[end] == ' ' &&
          (text[end + 1] == '+' || text[end + 1] == '-' || absl::ascii_isupper(text[end + 1]))) {
        absl::Time as_utc;  // the civil time read as if in UTC
        (void)ParseRfc3339Near(text, &as_utc, absl::UTCTimeZone(), reference, nullptr);
        int offset = 0;
        size_t zone_end = ReadUtcOffset(text, end + 1, &offset);
        if (zone_end == 0) zone_end = ZoneAbbreviation(text, end + 1, as_utc, &offset);
        if (zone_end > 0) {
          t = as_utc - absl::Seconds(offset);
          repeated = false;
          end = zone_end;
        }
      }
    } else if (text.size() >= 19 && text[4] == '-' && text[7] == '-' && text[10] == ' ' &&
               text[11] == ' ' &&
               ReadDigits(text, 0, 4, &year) && ReadDigits(text, 5, 2, &month) &&
               ReadDigits(text, 8, 2, &day) && ReadDigits(text, 12, 1, &hour) && text[13] == ':' &&
               ReadDigits(text, 14, 2, &minute) && text[16] == ':' &&
               ReadDigits(text, 17, 2, &second)) {
      // MariaDB 10.x: "yyyy-mm-dd  h:mm:ss", a 1-digit hour space-padded (as MySQL's yymmdd
      // below); no offset, so in the source's zone as the ISO stamp without one.
      end = 19;
      fields = true;
    } else if (ReadDigits(text, 0, 6, &yymmdd) && text[6] == ' ') {
      // MySQL before 5.6: "yymmdd hh:mm:ss", the hour space-padded ("260303  4:02:03").
      const bool padded = text[7] == ' ';
      if ((padded ? ReadDigits(text, 8, 1, &hour) : ReadDigits(text, 7, 2, &hour)) &&
          text[9] == ':' && ReadDigits(text, 10, 2, &minute) && text[12] == ':' &&
          ReadDigits(text, 13, 2, &second)) {
        year = 2000 + yymmdd / 10000;
        month = yymmdd / 100 % 100;
        day = yymmdd % 100;
        end = 15;
        fields = true;
      }
    } else if ((text[4] == '.' || text[4] == ':') && text[7] == text[4] &&
               text[10] == (text[4] == '.' ? ' ' : '-') && ReadDigits(text, 0, 4, &year) &&
               ReadDigits(text, 5, 2, &month) && ReadDigits(text, 8, 2, &day) &&
               ReadClock(text, 11, &hour, &minute, &second)) {
      // stunnel's "yyyy.mm.dd hh:mm:ss", DirectAdmin's login.log "yyyy:mm:dd-hh:mm:ss": the
      // year first, so one reading (a day-first or month-first date is read by none of these).
      end = 19;
      fields = true;
    } else if ((text[2] == '/' || text[2] == '-') && text[6] == text[2] &&
               (text[11] == ' ' || text[11] == ':') && ReadDigits(text, 0, 2, &day) &&
               ReadDigits(text, 7, 4, &year) && ReadClock(text, 12, &hour, &minute, &second)) {
      // "dd/Mon/yyyy hh:mm:ss" (Kerio Connect), "dd-Mon-yyyy hh:mm:ss +zzzz" (Roundcube).
      month = MonthFromAbbrev(text.substr(3, 3));
      end = 20;
      fields = true;
      may_have_offset = true;
    }
  } else if (text[0] == 'L' && text[1] == ' ') {
    // Half-Life and Source engine servers (rcon): "L mm/dd/yyyy - hh:mm:ss:", the month first
    // as the engine always writes it (unlike a bare "dd/mm/yyyy" or "mm/dd/yyyy", read by none).
    if (ReadDigits(text, 2, 2, &month) && text[4] == '/' && ReadDigits(text, 5, 2, &day) &&
        text[7] == '/' && ReadDigits(text, 8, 4, &year) && HasAt(text, 12, " - ") &&
        ReadClock(text, 15, &hour, &minute, &second)) {
      end = 23;
      fields = true;
    }
  } else if (absl::ascii_isupper(text[0]) && text[3] == '-' && text[6] == '-' && text[9] == ' ') {
    // ASSP's "Mmm-dd-yy hh:mm:ss" (its default LogDateFormat): the month named, so one reading.
    int yy;
    if (ReadDigits(text, 4, 2, &day) && ReadDigits(text, 7, 2, &yy) &&
        ReadClock(text, 10, &hour, &minute, &second)) {
      month = MonthFromAbbrev(text.substr(0, 3));  // 0, refused below, for another word
      year = 2000 + yy;
      end = 18;
      fields = true;
    }
  } else if (absl::ascii_isupper(text[0])) {
    // Monit's own log: "[ZONE Mmm dd hh:mm:ss]", a zone abbreviation (2-5 capitals) before the
    // syslog stamp, which `from` skips.
    size_t from = 0;
    if (bracketed) {
      size_t n = 0;
      while (n < 6 && absl::ascii_isupper(text[n])) ++n;
      if (n >= 2 && n <= 5 && text[n] == ' ' && MonthFromAbbrev(text.substr(n + 1, 3)) != 0) {
        from = n + 1;
      }
    }
    const absl::string_view stamp = text.substr(from);
    if (stamp.size() >= 14 && stamp[3] == ' ' && MonthFromAbbrev(stamp.substr(0, 3)) != 0) {
      // "Mmm dd hh:mm:ss", no year (dovecot's log_path, older Asterisk): the day space-padded,
      // zero-padded or unpadded, as syslog writes it; the year as a syslog line's. macOS writes
      // the year after the day ("Oct 27 2015 12:35:40"), as the syslog reader also takes it.
      size_t at = 6;  // the space before hh:mm:ss
      bool day_ok;
      if (stamp[4] == ' ') {
        day_ok = ReadDigits(stamp, 5, 1, &day);
      } else if (stamp[5] == ' ') {
        day_ok = ReadDigits(stamp, 4, 1, &day);
        at = 5;
      } else {
        day_ok = ReadDigits(stamp, 4, 2, &day);
      }
      int line_year;
      if (day_ok && stamp[at] == ' ' && stamp.size() > at + 5 && stamp[at + 5] == ' ' &&
          ReadDigits(stamp, at + 1, 4, &line_year)) {
        at += 5;
      }
      if (day_ok && stamp[at] == ' ' && ReadClock(stamp, at + 1, &hour, &minute, &second)) {
        size_t stamp_end = at + 9;
        // A fraction ("14:02:01.123456", fail2ban's date template): taken with up to ten
        // digits, so that more than nine is no time here as it is out of range in syslog.
        if (stamp_end + 1 < stamp.size() && stamp[stamp_end] == '.' &&
            absl::ascii_isdigit(stamp[stamp_end + 1])) {
          const size_t first_digit = ++stamp_end;
          while (stamp_end < stamp.size() && stamp_end - first_digit < 10 &&
                 absl::ascii_isdigit(stamp[stamp_end])) {
            ++stamp_end;
          }
        }
        // The syslog reader's time (its year rule and caches) of the stamp alone, as the
        // header of a line "STAMP h x" (the reader wants a host after it).
        char header[11 + 9 + 11 + 4];
        std::memcpy(header, stamp.data(), stamp_end);
        std::memcpy(header + stamp_end, " h x", 4);
        ParsedLine parsed;
        if (ParseSyslog3164(absl::string_view(header, stamp_end + 4), reference, rule, &parsed)
                .ok() &&
            parsed.time.has_value()) {
          t = *parsed.time;
          repeated = parsed.time_repeated;
          inferred = parsed.year_inferred;
          end = from + stamp_end;
        }  // else a field out of range, no such date, no reference to take a year from
      }
      if (from > 0 && end > 0) {
        // Monit's zone: when it is UTC, GMT or one the parser's zone uses then, its offset
        // (which also settles a repeated hour); another is no zone, as after an ISO stamp.
        const absl::Time whole = absl::FromUnixSeconds(absl::ToUnixSeconds(t));
        const absl::Time as_utc =
            absl::FromCivil(absl::ToCivilSecond(whole, zone_), absl::UTCTimeZone()) + (t - whole);
        int offset = 0;
        if (ZoneAbbreviation(text, 0, as_utc, &offset) == from - 1) {
          t = as_utc - absl::Seconds(offset);
          repeated = false;
        }
      }
    } else if (from == 0 && text[3] == ' ' && MonthFromAbbrev(text.substr(4, 3)) != 0) {
      // ctime "Www Mmm dd hh:mm:ss[.ffffff] yyyy" (vsftpd): read as Apache's error log's.
      size_t field_end = 19;
      if (text.size() > 19 && text[19] == '.') {
        field_end = 20;
        while (field_end < text.size() && absl::ascii_isdigit(text[field_end])) ++field_end;
      }
      field_end += 5;  // " yyyy"
      if (field_end <= text.size()) {
        absl::StatusOr<bool> is_time =
            ParseApacheTime(text.substr(0, field_end), reference, &t, &repeated);
        if (is_time.ok() && *is_time) end = field_end;
      }
    }
  }
  if (fields) {
    // The fields read above: in range, then at the offset after them or in the source's zone.
    if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
      return absl::OkStatus();
    }
    const int tod = hour * 3600 + minute * 60 + second;
    int offset = 0;
    const size_t offset_end = may_have_offset && end + 1 < text.size() && text[end] == ' '
                                  ? ReadUtcOffset(text, end + 1, &offset)
                                  : 0;
    if (offset_end > 0) {
      if (!CivilToTimeByRules(year, month, day, tod, absl::UTCTimeZone(), reference, &t, nullptr)) {
        return absl::OkStatus();
      }
      t -= absl::Seconds(offset);
      end = offset_end;
    } else if (!CivilToTime(year, month, day, tod, reference, &t, &repeated)) {
      return absl::OkStatus();
    }
  }
  // A stamp runs into no letter or digit ("2026-03-03 14:02:0123" is none).
  if (end == 0 || (end < text.size() && absl::ascii_isalnum(text[end]))) return absl::OkStatus();
  // A stamp before 2000 is a clock that was never set (1970 after a reset): the pipeline drops
  // a line whose own time is that old, and a raw line's stamp is only a hint, so the line keeps
  // no time and is counted as before (at the record's time or the clock).
  if (t < absl::FromUnixSeconds(946'684'800)) return absl::OkStatus();
  out->time = t;
  out->time_repeated = repeated;
  out->year_inferred = inferred;
  return absl::OkStatus();
}

size_t LineParser::ZoneAbbreviation(absl::string_view text, size_t pos, absl::Time as_utc,
                                    int* offset) const {
  size_t end = pos;
  while (end < text.size() && end - pos < 6 && absl::ascii_isupper(text[end])) ++end;
  const absl::string_view abbr = text.substr(pos, end - pos);
  if (abbr.size() < 2) return 0;
  if (abbr == "UTC" || abbr == "GMT") {
    *offset = 0;
    return end;
  }
  // The zone's abbreviations around that civil time (before and after a change, for an hour
  // the zone repeats or skips): the one written names the offset.
  const absl::TimeZone::TimeInfo info = zone_.At(absl::ToCivilSecond(as_utc, absl::UTCTimeZone()));
  for (absl::Time candidate : {info.pre, info.post}) {
    const absl::TimeZone::CivilInfo at = zone_.At(candidate);
    if (abbr == at.zone_abbr) {
      *offset = at.offset;
      return end;
    }
  }
  return 0;
}

}  // namespace palisade
