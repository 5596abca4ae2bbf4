// Line parsers for the log formats of palisade.v1.LogFormat. A parser splits one raw line into
// its event time, host, program and the message that rules match, without copying: every view
// in ParsedLine points into the input line (but the error formats' program, a constant).
//
// RFC 3164 lines carry no year, and neither they nor some access logs carry a UTC offset. The
// year comes from a reference time (see YearRule): the previous line of the same stream, when
// there is one, picks the nearest year (a log crossing 31 Dec -> 1 Jan moves on to the next
// year; a gap of days or up to six months changes nothing; after a longer silence the nearest
// year can be the one before, which only a replay meets: the daemon starts a stream silent for
// 30 days again from now); otherwise "now" picks the year that puts the line at most a day
// ahead of it, as syslog daemons do at New Year. Times without an offset are read in the
// parser's zone (palisade.v1.Config.time_zone, default the host's local zone, which is how
// syslog writes them). Where the zone changes its offset, a local time can be:
//   repeated  the hour after a fall-back (01:00-01:59 twice in New York on the first Sunday of
//             November): the occurrence nearer the reference the year comes from (the previous
//             line, or now; the earlier on a tie), so the second pass is not dated an hour
//             early (its bans over at creation, its windows behind the stream).
//             ParsedLine.time_repeated says so.
//   skipped   the hour a spring-forward jumps over (02:00-02:59 in New York in March), which
//             no clock that changed can write: the instant of the change (03:00 local, as
//             absl::FromCivil gives it), whatever the reference. Such a time comes from a
//             clock not yet moved forward, or is forged; dated at the change, it is never
//             ahead of the lines written after the change, nor behind those before it.
//
// What `message` is, per format (rules anchor on its start, which the server writes):
//   syslog, syslog5424  the MSG after the header and tag. An RFC 3164 time may carry a fraction
//                       ("Mar  3 14:02:01.123456": journalctl -o short-precise, syslog-ng's
//                       frac-digits()), kept in the time.
//   combined            the whole line: its first field is the client address, always.
//   combined_vhost      the line from the second field, the client address, on: the first is
//                       the server's virtual host ("example.com:443 203.0.113.7 - - [...] ...",
//                       Apache's vhost_combined "%v:%p", nginx's "$server_name:$server_port"),
//                       `host`. The message is what combined gives without the vhost, so one
//                       set of web rules reads both. The vhost must be the server's, never
//                       nginx's $host or $http_host (the client's Host header, which may hold a
//                       space and so name the "client" field). Neither format guesses from a
//                       line whether it has a vhost: the fields that would tell are the client's.
//   nginx_error         "2026/03/03 14:02:01 [error] 1234#0: *5 MESSAGE, client: ..., ...":
//                       the text after "PID#TID: " and the optional "*CID " (connection
//                       number); `pid` is PID, `program` "nginx". The time is local (the
//                       parser's zone). The "[level]" is not in the message.
//   apache_error        "[Tue Mar 03 14:02:01.123456 2026] [auth_basic:error] [pid 1234:tid 5]
//                       MESSAGE" (2.4) or "[Tue Mar 03 14:02:01 2026] [error] MESSAGE" (2.2):
//                       the text after the time, "[module:level]" and "[pid ...]" fields, so a
//                       message about a client begins with the server's "[client ADDR:PORT] "
//                       (2.2: "[client ADDR] ") and rules anchor the address at ^\[client .
//                       Lines with an APR error ("(13)Permission denied: [client ...") keep it
//                       in front. `pid` is P, `program` "apache"; local time; the time field
//                       may also be ErrorLogFormat's %{cu}t ("[2026-03-03 14:02:01.123456]").
//   raw                 the whole line. A service's own log (vsftpd, MySQL, PostgreSQL, exim,
//                       dovecot's log_path, Asterisk, Squid, ...) starts with the server's
//                       time: a leading stamp, in "[...]" or not, is the line's time:
//                         "Tue Mar  3 14:02:01 2026"          ctime (vsftpd)
//                         "2026-03-03 14:02:01[.,fff]"        ISO 8601, "T" or a space, with
//                             an offset ("Z", "+01:00", "+0100") or, after a space, an offset
//                             or a zone abbreviation (PostgreSQL's "UTC", "CEST": UTC, GMT or
//                             one the parser's zone uses then; another is no zone)
//                         "2015-10-07  8:25:38"               MariaDB 10.x, the hour padded
//                         "260303 14:02:01", "260303  4:02:01"    MySQL before 5.6
//                         "03/Mar/2026 14:02:01", "03-Mar-2026 14:02:01 +0100"  Kerio, Roundcube
//                         "Mar  3 14:02:01[.fff]"             no year: see YearRule
//                         "Oct 27 2015 12:35:40"              macOS, the year after the day
//                         "[PDT Apr 16 21:05:29]"             Monit: no year; the zone as
//                             PostgreSQL's abbreviation above
//                         "2011.11.21 14:29:16"               stunnel
//                         "2014:07:02-00:17:45"               DirectAdmin's login.log
//                         "L 01/31/2014 - 01:25:17"           Half-Life / Source (rcon): the
//                             month first, as the engine always writes it
//                         "Apr-07-13 07:08:36"                ASSP
//                         "<W>2015-11-29 16:38:01.818"        Murmur; and after other fixed
//                             prefixes an ISO stamp: Oracle Messaging's '<co ts="...', a
//                             leading Grafana "t=...", Tine 2.0's "78017 00cff -- none -- - ..."
//                         "1386543323[.fff] "                 Unix seconds (Squid, portsentry,
//                             "[1387288694] " nsd): exactly ten digits (2001-2286), UTC
//                         "@400000004c91b044077a9e94 "        TAI64N (multilog, svlogd, s6-log),
//                             lowercase hex, UTC as tai64nlocal reads it (TAI 10 s ahead;
//                             s6-log's may read up to 27 s late)
//                         "type=USER_AUTH msg=audit(1373129280.000:9)"  auditd ("node=NAME "
//                             before it or not): Unix seconds and milliseconds, UTC
//                       Unix seconds and TAI64N only before a space (in brackets: the "]"); the
//                       others, without an offset, in the parser's zone. A date with no
//                       single reading (a bare "10/06/2013" or "03-07-2005": dd/mm or mm/dd by
//                       the writer's settings) is read as none. Any other start, or such a
//                       stamp with an impossible value, before 2000, or running into a letter
//                       or digit, gives no time (the line is still read: a raw line is never
//                       refused).
//   decisions           the whole line; no time.
//   json formats        services/formats/json_parser.h: the access-log records rendered as a
//                       combined line from the client address on (so combined rules read
//                       them), firewall events as "ADDR ACTION SOURCE RULEID ...". Their views
//                       point into the parser's buffers, valid until its next Parse.
// Both error formats also read lines relayed through syslog (nginx `error_log syslog:...`,
// Apache `ErrorLog syslog`): "Mar  3 14:02:01 web-1 httpd[1234]: [core:error] [pid 1234] ..."
// gives the same message, with the syslog host and time (nginx's own time, when the relay
// kept it, wins).
//
// Thread-safety: a LineParser keeps a small date cache; use one per thread or stream.
#ifndef PALISADE_SERVICES_FORMATS_LINE_PARSER_H_
#define PALISADE_SERVICES_FORMATS_LINE_PARSER_H_

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/base/attributes.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "palisade/v1/config.pb.h"
#include "palisade/v1/rules.pb.h"

namespace palisade {

class JsonRecord;
class JsonLineParser;

// Whether `token` is an IPv4 or IPv6 address as written: no port, no brackets (the access
// formats, plain and JSON, tell their client field by it).
bool IsIpAddress(absl::string_view token);

struct ParsedLine {
  // The text rules match (see the table above): the syslog MSG, an access line from the client
  // address on, an error log's message, or the whole line for raw lines.
  absl::string_view message;
  // Syslog HOSTNAME; an access line's first field (the client; combined_vhost: the vhost).
  absl::string_view host;
  // Syslog APP-NAME / TAG without the pid, e.g. "sshd"; "nginx" or "apache" for error logs.
  // Empty for access logs.
  absl::string_view program;
  // Syslog PID / PROCID, e.g. "1234" from "sshd[1234]:", or an error log's process id. Empty
  // when the line has none. Rules tie a connection's lines together by program and pid
  // (Rule.session).
  absl::string_view pid;
  // Event time from the line, when it has one.
  std::optional<absl::Time> time;
  // The time's year was not in the line (RFC 3164): it came from the reference (YearRule), so
  // another reference may give another year.
  bool year_inferred = false;
  // The time, without an offset, is in an hour the zone repeats (after a fall-back): which of
  // its two occurrences came from the reference, so another reference may give the other.
  bool time_repeated = false;
  // The line was cut at the daemon's cap (max_line_bytes): its end is not the writer's. The
  // parser never sets it (it sees only the bytes it is given): the caller that cut the line
  // does. The engine lets no pattern that reads the end of the text (`$`, `\z`) match at the
  // cut end (services/engine/engine.h), but on a JSON record (`record` set), which is read from
  // the fields it holds whole.
  bool cut = false;
  // JSON lines formats (services/formats/json_parser.h): the client address field, cut from its
  // port and checked to be an address, and the record's fields (Rule.field). Empty / null for
  // the other formats. Like the other views of a JSON record, valid until the parser's next
  // Parse.
  absl::string_view client_address;
  const JsonRecord* record = nullptr;

  // Back to a default-constructed ParsedLine, field by field. `*out = ParsedLine()` built a
  // temporary on the stack and copied it with loads wider than its stores: each load waited for
  // the stores to reach the cache (no store-to-load forwarding), ~55 % of Parse's time on the
  // sshd corpus.
  void Clear() {
    message = {};
    host = {};
    program = {};
    pid = {};
    time.reset();
    year_inferred = false;
    time_repeated = false;
    cut = false;
    client_address = {};
    record = nullptr;
  }
};
// A field added to ParsedLine is cleared in Clear too (then this size is updated).
static_assert(sizeof(ParsedLine) == 120, "ParsedLine::Clear must clear every field");

// How `reference` resolves a missing year.
enum class YearRule {
  // `reference` is now: the latest year that puts the line at most a day after it.
  kAtMostADayAhead,
  // `reference` is the previous line's time: the year that puts the line nearest to it.
  kNearest,
};

class LineParser {
 public:
  // `zone` reads the times that carry no UTC offset.
  explicit LineParser(palisade::v1::LogFormat format, absl::TimeZone zone = absl::UTCTimeZone());
  ~LineParser();
  LineParser(LineParser&&);
  LineParser& operator=(LineParser&&);

  // For LOG_FORMAT_JSON: the custom mapping its records are read with (Config.json_formats).
  // Without one, every line of that format is malformed. kInvalidArgument for a mapping that
  // ValidateJsonFormat refuses.
  absl::Status SetJsonFormat(const palisade::v1::JsonFormat& mapping);

  // Parses `line`. `reference` and `rule` resolve the missing year of RFC 3164 timestamps;
  // `reference` also picks the occurrence of a local time the zone repeats (see above).
  // Returns kInvalidArgument naming what was wrong (and where) for a malformed line, and
  // kOutOfRange for a line whose timestamp has the right shape but an impossible value (a field
  // out of range, a date that does not exist, a UTC offset past ±23:59, a fraction of more than
  // nine digits): the pipeline counts those as bad times as well as malformed. Neither for raw
  // and decision lines, which take any text (a raw line's impossible stamp is no time).
  absl::Status Parse(absl::string_view line, absl::Time reference, ParsedLine* out,
                     YearRule rule = YearRule::kAtMostADayAhead);

  palisade::v1::LogFormat format() const { return format_; }

  // Tests only: every time goes through the zone's rules (absl::FromCivil, absl::ToCivilYear)
  // and no cache or shortcut is used, nor the 16-bytes-at-a-time scans of the syslog and
  // combined headers: what the caches and scans must give line for line
  // (services/formats/line_parser_cache_test.cc compares the two).
  void DisableCachesForTesting() { caching_ = false; }

 private:
  // The two formats of nearly every line are inlined in Parse (a call and its saved registers
  // were ~40 instructions of a line's ~300).
  ABSL_ATTRIBUTE_ALWAYS_INLINE absl::Status ParseSyslog3164(absl::string_view line,
                                                            absl::Time reference, YearRule rule,
                                                            ParsedLine* out);
  absl::Status ParseSyslog5424(absl::string_view line, absl::Time reference, ParsedLine* out);
  // `vhost`: LOG_FORMAT_COMBINED_VHOST, the first field the server's virtual host.
  ABSL_ATTRIBUTE_ALWAYS_INLINE absl::Status ParseCombined(absl::string_view line,
                                                          absl::Time reference, bool vhost,
                                                          ParsedLine* out);
  // The time at the " [" at `open` (and the quoted request after it) into out->time.
  absl::Status CombinedTimeAt(absl::string_view line, size_t open, absl::Time reference,
                              ParsedLine* out);
  absl::Status ParseNginxError(absl::string_view line, absl::Time reference, YearRule rule,
                               ParsedLine* out);
  absl::Status ParseApacheError(absl::string_view line, absl::Time reference, YearRule rule,
                                ParsedLine* out);
  // The inside of Apache's "[...]" time field, read in the parser's zone (a repeated time: the
  // occurrence nearer `reference`, `*repeated` set): true when it is a time, false when it is
  // not (a "[module:level]" field), kOutOfRange when impossible.
  absl::StatusOr<bool> ParseApacheTime(absl::string_view field, absl::Time reference,
                                       absl::Time* out, bool* repeated);
  // The whole line as the message, and the time of a leading stamp (see the table above).
  absl::Status ParseRaw(absl::string_view line, absl::Time reference, YearRule rule,
                        ParsedLine* out);
  // A zone abbreviation at `pos` after a time without an offset (PostgreSQL's "UTC", "CEST"),
  // the time's civil fields read as if UTC in `as_utc`: where it ends, and its UTC offset in
  // *offset, when it is UTC, GMT or one the parser's zone uses at that civil time; else 0.
  size_t ZoneAbbreviation(absl::string_view text, size_t pos, absl::Time as_utc, int* offset) const;

  // Midnight UTC of a civil date in Unix seconds, cached since consecutive lines share their
  // date (a year of 0 to 9999). False when the date does not exist.
  ABSL_ATTRIBUTE_ALWAYS_INLINE bool UtcDayStart(int64_t year, int month, int day, int64_t* start) {
    if (year != cached_year_ || month != cached_month_ || day != cached_day_) {
      return FillUtcDayStart(year, month, day, start);
    }
    *start = cached_day_start_;
    return true;
  }
  // UtcDayStart for a date that is not the cached one: checks it exists and caches it.
  bool FillUtcDayStart(int64_t year, int month, int day, int64_t* start);
  // The cached midnight of a date in the parser's zone in Unix seconds, when that date is the
  // cached one and its UTC offset holds all day: then its seconds are the midnight plus them.
  // (Here, as YearOf, to be inlined in the parsers.)
  ABSL_ATTRIBUTE_ALWAYS_INLINE bool CachedDayStart(int64_t year, int month, int day,
                                                   int64_t* start) const {
    if (zone_is_utc_) {
      if (year != cached_year_ || month != cached_month_ || day != cached_day_) return false;
      *start = cached_day_start_;
      return true;
    }
    if (year != local_year_ || month != local_month_ || day != local_day_ || !local_day_uniform_) {
      return false;
    }
    *start = local_day_start_;
    return true;
  }
  // A civil time in the parser's zone. False when the date does not exist (29 February of a
  // common year). Through a one-day cache: a day whose UTC offset holds from its midnight to the
  // next (no DST change within it) is its midnight plus the seconds; a day with a change goes to
  // the zone's rules each time, where a repeated time is the occurrence nearer `reference`
  // (`*repeated` then set) and a skipped one the instant of the change.
  bool CivilToTime(int64_t year, int month, int day, int seconds_of_day, absl::Time reference,
                   absl::Time* out, bool* repeated);
  // The civil year of `t` in the parser's zone (the reference's, for a yearless timestamp),
  // cached as the span of time that year covers: a line costs two compares.
  ABSL_ATTRIBUTE_ALWAYS_INLINE int64_t YearOf(absl::Time t) {
    if (caching_ && t >= year_begin_ && t < year_end_) return year_of_span_;
    return YearOfByRules(t);
  }
  // YearOf outside the cached span: the zone's rules, and the span of the year found.
  int64_t YearOfByRules(absl::Time t);

  palisade::v1::LogFormat format_;
  // JSON lines formats: the record parser (made at the first line of a preset).
  std::unique_ptr<JsonLineParser> json_;
  absl::TimeZone zone_;
  bool zone_is_utc_;
  // False: DisableCachesForTesting.
  bool caching_ = true;
  // UtcDayStart's day (month 0: none yet) and its midnight, Unix seconds.
  int64_t cached_year_ = 0;
  int cached_month_ = 0;
  int cached_day_ = 0;
  int64_t cached_day_start_ = 0;
  // CivilToTime's day, and its local midnight (Unix seconds) when its offset holds all day
  // (`uniform`).
  int64_t local_year_ = 0;
  int local_month_ = 0;
  int local_day_ = 0;
  bool local_day_uniform_ = false;
  int64_t local_day_start_ = 0;
  // The last syslog "Mmm dd " date read the long way (its 7 bytes, little-endian), and its
  // month (0: none yet) and day: the next lines of the day compare 7 bytes instead.
  uint64_t syslog_date_key_ = 0;
  int syslog_date_month_ = 0;
  int syslog_date_day_ = 0;
  // The last combined "dd/Mon/yyyy:" date and " +zzzz]" offset read the long way (their bytes),
  // the date's UTC midnight and the offset in seconds (valid: combined_date_valid_).
  bool combined_date_valid_ = false;
  uint64_t combined_date_key_ = 0;
  uint32_t combined_date_key_end_ = 0;
  uint64_t combined_offset_key_ = 0;
  int64_t combined_day_start_ = 0;
  int combined_offset_ = 0;
  // YearOf: times in [year_begin_, year_end_) are in year_of_span_ (empty at first).
  int64_t year_of_span_ = 0;
  absl::Time year_begin_ = absl::InfiniteFuture();
  absl::Time year_end_ = absl::InfinitePast();
};

// "syslog", "syslog5424", "combined", "combined_vhost", "raw", "nginx_error", "apache_error",
// "decisions", "json", "nginx_json", "caddy_json", "traefik_json", "envoy_json",
// "logpush_http_requests", "logpush_firewall_events" <-> LogFormat. The names are also metric
// labels and the values of palisadectl's --format.
// FormatName also names LOG_FORMAT_CLOUDFLARE_AUDIT ("cloudflare_audit"), which ParseFormatName
// refuses (kInvalidArgument): its records revoke tokens, and no input or shipper may claim them.
absl::StatusOr<palisade::v1::LogFormat> ParseFormatName(absl::string_view name);
// ParseFormatName for tools that reach no edge (palisadectl rules test and replay, the pack
// tests): "cloudflare_audit" too, to test the audit pack over saved records.
absl::StatusOr<palisade::v1::LogFormat> ParseOfflineFormatName(absl::string_view name);
absl::string_view FormatName(palisade::v1::LogFormat format);

// Parses RFC 3339 / ISO 8601 "2026-03-03T14:02:01.123+01:00" (fraction and offset optional,
// space allowed for T; without an offset the time is read in `zone`: with no reference here, a
// repeated local time is its first occurrence, a skipped one the instant of the change).
// Returns the number of characters consumed, 0 when `text` does not start with such a timestamp.
size_t ParseRfc3339Prefix(absl::string_view text, absl::Time* out,
                          absl::TimeZone zone = absl::UTCTimeZone());
// The same, telling an impossible timestamp from text that is none: kOutOfRange when `text`
// starts with a timestamp's shape but a field is out of range, the date does not exist, the
// offset is past ±23:59 or the fraction has more than nine digits; 0 when it is no timestamp.
absl::StatusOr<size_t> ParseRfc3339Timestamp(absl::string_view text, absl::Time* out,
                                             absl::TimeZone zone = absl::UTCTimeZone());
// The same, but a time without an offset in an hour `zone` repeats is the occurrence nearer
// `reference` (FromCivilNear), `*repeated` then set (when not null).
absl::StatusOr<size_t> ParseRfc3339Near(absl::string_view text, absl::Time* out,
                                        absl::TimeZone zone, absl::Time reference, bool* repeated);
// `civil` in `zone`, as absl::FromCivil reads it but for a time the zone repeats (the hour
// after a fall-back): of its two occurrences, the one nearer `reference` (the earlier on a tie,
// and so with an infinite reference), and `*repeated` set (when not null). A time the zone
// skips (the hour a spring-forward jumps over) is the instant of the change, as FromCivil gives
// it.
absl::Time FromCivilNear(const absl::CivilSecond& civil, absl::TimeZone zone, absl::Time reference,
                         bool* repeated);

}  // namespace palisade

#endif  // PALISADE_SERVICES_FORMATS_LINE_PARSER_H_
