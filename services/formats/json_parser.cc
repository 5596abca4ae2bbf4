#include "services/formats/json_parser.h"

#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/civil_time.h"
#include "nlohmann/json.hpp"
#include "services/formats/line_parser.h"

namespace palisade {

using palisade::v1::LogFormat;

namespace {

// Bounds on what a hostile record may build (the caller's line cap bounds the bytes).
constexpr int kMaxDepth = 32;
// What a record's flattened fields may hold: past 1,024 fields or 256 KiB of names and values,
// only the fields the mapping reads are kept (a client who sends 2,000 headers, or one header
// with a long name and many values, must not push the status out of the record). A value is
// kept up to 16 KiB.
constexpr size_t kMaxFields = 1024;
constexpr size_t kMaxRecordData = 256 * 1024;
constexpr size_t kMaxValueBytes = 16 * 1024;
// A client-written field of a rendered line (path, user agent...) is written up to this many
// bytes, its escapes whole: the status that follows the request stays in reach of every rule.
constexpr size_t kMaxRenderedField = 8 * 1024;

enum class TimeLayout { kAuto, kRfc3339, kUnix, kUnixMs, kUnixNs, kClf };
enum class Render { kCombined, kFirewall, kMessage };

}  // namespace

// One slot of a mapping: the names it may have (the first present wins) and whether a record
// without any of them is malformed.
struct Slot {
  std::vector<std::string> names;
  bool required = false;
  bool set() const { return !names.empty(); }
};

struct JsonLineParser::Mapping {
  std::string label;  // names the format in errors: "nginx_json", "json format \"app\""
  Render render = Render::kCombined;
  TimeLayout layout = TimeLayout::kAuto;
  Slot time, message, client, request, method, path, protocol, status, bytes, referer,
      user_agent, user, host;
  Slot action, source, rule_id;  // firewall_events

  // Whether `name` is one a slot reads (the fields kept in a record past its bounds).
  bool Reads(absl::string_view name) const {
    for (const Slot* slot : {&time, &message, &client, &request, &method, &path, &protocol,
                             &status, &bytes, &referer, &user_agent, &user, &host, &action,
                             &source, &rule_id}) {
      for (const std::string& n : slot->names) {
        if (n == name) return true;
      }
    }
    return false;
  }
};

namespace {

using Mapping = JsonLineParser::Mapping;

Slot Req(std::vector<std::string> names) { return Slot{std::move(names), true}; }
Slot Opt(std::vector<std::string> names) { return Slot{std::move(names), false}; }

// The presets' field names, from the vendors' documentation (see rules.proto's LogFormat).
std::unique_ptr<Mapping> PresetMapping(LogFormat format) {
  auto m = std::make_unique<Mapping>();
  switch (format) {
    case LogFormat::LOG_FORMAT_NGINX_JSON:
      m->time = Req({"time", "time_iso8601", "time_local", "@timestamp", "timestamp"});
      m->client = Req({"remote_addr", "client_ip", "client"});
      // "$request" ("GET /x HTTP/1.1") or its three parts.
      m->request = Opt({"request"});
      m->method = Opt({"request_method", "method"});
      m->path = Opt({"request_uri", "uri", "path"});
      m->protocol = Opt({"server_protocol", "protocol"});
      m->status = Req({"status"});
      m->bytes = Opt({"body_bytes_sent", "bytes_sent"});
      m->referer = Opt({"http_referer", "referer", "referrer"});
      m->user_agent = Opt({"http_user_agent", "user_agent"});
      m->user = Opt({"remote_user", "user"});
      m->host = Opt({"host", "http_host", "server_name"});
      break;
    case LogFormat::LOG_FORMAT_CADDY_JSON:
      m->time = Req({"ts"});
      m->client = Req({"request.client_ip", "request.remote_ip", "request.remote_addr"});
      m->method = Req({"request.method"});
      m->path = Req({"request.uri"});
      m->protocol = Opt({"request.proto"});
      m->status = Req({"status"});
      m->bytes = Opt({"size"});
      m->referer = Opt({"request.headers.Referer.0"});
      m->user_agent = Opt({"request.headers.User-Agent.0"});
      m->user = Opt({"user_id"});
      m->host = Opt({"request.host"});
      break;
    case LogFormat::LOG_FORMAT_TRAEFIK_JSON:
      m->time = Req({"StartUTC", "time", "StartLocal"});
      m->client = Req({"ClientHost", "ClientAddr"});
      m->method = Req({"RequestMethod"});
      m->path = Req({"RequestPath"});
      m->protocol = Opt({"RequestProtocol"});
      m->status = Req({"DownstreamStatus", "OriginStatus"});
      m->bytes = Opt({"DownstreamContentSize"});
      m->referer = Opt({"request_Referer"});
      m->user_agent = Opt({"request_User-Agent"});
      m->user = Opt({"ClientUsername"});
      m->host = Opt({"RequestHost", "RequestAddr"});
      break;
    case LogFormat::LOG_FORMAT_ENVOY_JSON:
      m->time = Req({"start_time"});
      m->client = Req({"downstream_remote_address", "downstream_direct_remote_address"});
      m->method = Req({"method"});
      m->path = Req({"path"});
      m->protocol = Opt({"protocol"});
      m->status = Req({"response_code"});
      m->bytes = Opt({"bytes_sent"});
      m->referer = Opt({"referer"});
      m->user_agent = Opt({"user_agent"});
      m->host = Opt({"authority"});
      break;
    case LogFormat::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS:
      m->time = Req({"EdgeStartTimestamp"});
      m->client = Req({"ClientIP"});
      m->method = Req({"ClientRequestMethod"});
      m->path = Req({"ClientRequestURI", "ClientRequestPath"});
      m->protocol = Opt({"ClientRequestProtocol"});
      m->status = Req({"EdgeResponseStatus"});
      m->bytes = Opt({"EdgeResponseBytes"});
      m->referer = Opt({"ClientRequestReferer"});
      m->user_agent = Opt({"ClientRequestUserAgent"});
      m->host = Opt({"ClientRequestHost"});
      break;
    case LogFormat::LOG_FORMAT_LOGPUSH_FIREWALL_EVENTS:
      m->render = Render::kFirewall;
      m->time = Req({"Datetime"});
      m->client = Req({"ClientIP"});
      m->action = Req({"Action"});
      m->source = Opt({"Source"});
      m->rule_id = Opt({"RuleID"});
      m->method = Opt({"ClientRequestMethod"});
      m->path = Opt({"ClientRequestPath"});
      m->protocol = Opt({"ClientRequestProtocol"});
      m->user_agent = Opt({"ClientRequestUserAgent"});
      m->host = Opt({"ClientRequestHost"});
      break;
    default:
      return nullptr;
  }
  m->label = std::string(FormatName(format));
  return m;
}

bool ParseLayout(absl::string_view name, TimeLayout* out) {
  if (name.empty() || name == "auto") {
    *out = TimeLayout::kAuto;
  } else if (name == "rfc3339") {
    *out = TimeLayout::kRfc3339;
  } else if (name == "unix") {
    *out = TimeLayout::kUnix;
  } else if (name == "unix_ms") {
    *out = TimeLayout::kUnixMs;
  } else if (name == "unix_ns") {
    *out = TimeLayout::kUnixNs;
  } else if (name == "clf") {
    *out = TimeLayout::kClf;
  } else {
    return false;
  }
  return true;
}

bool ValidName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!absl::ascii_islower(c) && !absl::ascii_isdigit(c) && c != '_' && c != '-') return false;
  }
  return true;
}

// The address of "ADDR", "ADDR:PORT" or "[V6]:PORT"; empty when it is none.
absl::string_view CutAddress(absl::string_view v) {
  if (IsIpAddress(v)) return v;
  if (!v.empty() && v[0] == '[') {
    const size_t close = v.find(']');
    if (close == absl::string_view::npos) return {};
    absl::string_view inner = v.substr(1, close - 1);
    return IsIpAddress(inner) ? inner : absl::string_view();
  }
  const size_t colon = v.find(':');
  if (colon != absl::string_view::npos && v.find(':', colon + 1) == absl::string_view::npos) {
    absl::string_view host = v.substr(0, colon);
    return IsIpAddress(host) ? host : absl::string_view();
  }
  return {};
}

constexpr char kHex[] = "0123456789ABCDEF";

// The length of the well-formed UTF-8 sequence at s[i] (1 for ASCII), 0 when the byte there
// starts none (a stray continuation, overlong, surrogate, past U+10FFFF, cut short). By hand, as
// the pipeline's IsValidUtf8 (which formats cannot depend on).
size_t Utf8Length(absl::string_view s, size_t i) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return 1;
  const size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
  if (len == 0 || c > 0xf4 || i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return 0;
  }
  const unsigned char c1 = static_cast<unsigned char>(s[i + 1]);
  if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 > 0x9f) || (c == 0xf0 && c1 < 0x90) ||
      (c == 0xf4 && c1 > 0x8f)) {
    return 0;
  }
  return len;
}

// nginx's escape=json leaves bytes >= 0x80 as the client sent them, so a raw 0xFF in a request
// line makes the record invalid UTF-8, which a strict JSON parser refuses: an attacker would
// hide every request that way. Such bytes are read as Latin-1 instead ("\u00FF"): the record
// parses, the byte stays visible (escaped) to the rules. False when `line` was valid already.
bool Latin1Invalid(absl::string_view line, std::string* out) {
  size_t i = 0;
  while (i < line.size()) {
    const size_t n = Utf8Length(line, i);
    if (n == 0) break;
    i += n;
  }
  if (i == line.size()) return false;
  out->assign(line.data(), i);
  while (i < line.size()) {
    const size_t n = Utf8Length(line, i);
    if (n > 0) {
      out->append(line.data() + i, n);
      i += n;
      continue;
    }
    const unsigned char c = static_cast<unsigned char>(line[i++]);
    const char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
    out->append(esc, 6);
  }
  return true;
}

// nginx's access-log escaping (ngx_http_log_escape): `"`, `\`, control bytes and bytes >= 0x7f
// as \xHH; with `space`, a space too (for the unquoted fields and the request's three parts,
// whose separators are spaces).
// At most kMaxRenderedField bytes are written, each escape whole.
void AppendEscaped(absl::string_view text, bool space, std::string* out) {
  if (text.empty()) {
    out->push_back('-');
    return;
  }
  const size_t limit = out->size() + kMaxRenderedField;
  for (unsigned char c : text) {
    if (c == '"' || c == '\\' || c < 0x20 || c >= 0x7f || (space && c == ' ')) {
      if (out->size() + 4 > limit) break;
      const char esc[4] = {'\\', 'x', kHex[c >> 4], kHex[c & 15]};
      out->append(esc, 4);
    } else {
      if (out->size() + 1 > limit) break;
      out->push_back(static_cast<char>(c));
    }
  }
}

bool AllDigits(absl::string_view v) {
  if (v.empty() || v.size() > 20) return false;
  for (char c : v) {
    if (!absl::ascii_isdigit(c)) return false;
  }
  return true;
}

bool ReadDigits(absl::string_view text, size_t pos, size_t n, int* value) {
  if (pos + n > text.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (!absl::ascii_isdigit(text[i])) return false;
    v = v * 10 + (text[i] - '0');
  }
  *value = v;
  return true;
}

int MonthFromAbbrev(absl::string_view m) {
  static constexpr char kMonths[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
  for (int i = 0; i < 12; ++i) {
    if (m.size() == 3 && std::memcmp(kMonths + 3 * i, m.data(), 3) == 0) return i + 1;
  }
  return 0;
}

// nginx's $time_local: "03/Mar/2026:14:02:01 +0000" (the offset optional: then `zone`, a
// repeated local time the occurrence nearer `reference`, `*repeated` set).
// 1: parsed; 0: not this shape; -1: this shape, impossible values.
int ParseClf(absl::string_view v, absl::TimeZone zone, absl::Time reference, absl::Time* out,
             bool* repeated) {
  int day, year, hour, minute, second, oh = 0, om = 0;
  const int month = v.size() >= 20 ? MonthFromAbbrev(v.substr(3, 3)) : 0;
  if (month == 0 || !ReadDigits(v, 0, 2, &day) || v[2] != '/' || v[6] != '/' ||
      !ReadDigits(v, 7, 4, &year) || v[11] != ':' || !ReadDigits(v, 12, 2, &hour) ||
      v[14] != ':' || !ReadDigits(v, 15, 2, &minute) || v[17] != ':' ||
      !ReadDigits(v, 18, 2, &second)) {
    return 0;
  }
  const bool has_offset = v.size() == 26;
  if (has_offset ? (v[20] != ' ' || (v[21] != '+' && v[21] != '-') ||
                    !ReadDigits(v, 22, 2, &oh) || !ReadDigits(v, 24, 2, &om))
                 : v.size() != 20) {
    return 0;
  }
  if (day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60 || oh > 23 || om > 59) {
    return -1;
  }
  // A leap second (:60) is the second after :59 (built on :59, it cannot carry a valid date
  // past its day), as ParseRfc3339Timestamp reads it.
  const absl::Duration leap = absl::Seconds(second == 60 ? 1 : 0);
  const absl::CivilSecond cs(year, month, day, hour, minute, second == 60 ? 59 : second);
  if (cs.day() != day) return -1;
  if (has_offset) {
    const int offset = (oh * 3600 + om * 60) * (v[21] == '-' ? -1 : 1);
    *out = absl::FromCivil(cs, absl::UTCTimeZone()) - absl::Seconds(offset) + leap;
  } else {
    *out = FromCivilNear(cs, zone, reference, repeated) + leap;
  }
  return 1;
}

// A unix time "SECONDS[.FRACTION]" (or an integer in ms/µs/ns): 1 parsed, 0 not a number,
// -1 out of range.
int ParseUnix(absl::string_view v, TimeLayout layout, absl::Time* out) {
  const size_t dot = v.find('.');
  absl::string_view whole = v.substr(0, dot);
  absl::string_view frac = dot == absl::string_view::npos ? "" : v.substr(dot + 1);
  if (whole.empty() || whole.size() > 19 || !AllDigits(whole)) return 0;
  if (dot != absl::string_view::npos && (frac.empty() || !AllDigits(frac))) return 0;
  uint64_t n = 0;
  for (char c : whole) n = n * 10 + static_cast<uint64_t>(c - '0');
  if (layout == TimeLayout::kAuto) {
    // By size: seconds until the year 5138, then ms, µs, ns (any date after 1973 reads right).
    layout = n < 100'000'000'000ULL         ? TimeLayout::kUnix
             : n < 100'000'000'000'000ULL   ? TimeLayout::kUnixMs
             : n < 100'000'000'000'000'000ULL ? TimeLayout::kRfc3339  // µs (marker, below)
                                                : TimeLayout::kUnixNs;
  }
  // The fraction of a unit of 10^`places` nanoseconds (9: seconds, 6: ms, 3: µs), in
  // nanoseconds; past nanoseconds a fraction means nothing (Caddy's unix_milli_float writes
  // "1772546521123.456").
  const auto frac_nanos = [&frac](int places) {
    int64_t nanos = 0;
    int digits = 0;
    for (char c : frac) {
      if (++digits > places) break;
      nanos = nanos * 10 + (c - '0');
    }
    for (int d = std::min(digits, places); d < places; ++d) nanos *= 10;
    return absl::Nanoseconds(nanos);
  };
  switch (layout) {
    case TimeLayout::kUnix: {
      if (n > 253'402'300'799ULL) return -1;  // past 9999
      *out = absl::FromUnixSeconds(static_cast<int64_t>(n)) + frac_nanos(9);
      return 1;
    }
    case TimeLayout::kUnixMs:
      // Past 9999 as kUnix (and a count past INT64_MAX would wrap to before 1970).
      if (n > 253'402'300'799'999ULL) return -1;
      *out = absl::FromUnixMillis(static_cast<int64_t>(n)) + frac_nanos(6);
      return 1;
    case TimeLayout::kRfc3339:  // microseconds, from kAuto only
      *out = absl::FromUnixMicros(static_cast<int64_t>(n)) + frac_nanos(3);
      return 1;
    case TimeLayout::kUnixNs:
      if (!frac.empty() || n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return frac.empty() ? -1 : 0;
      }
      *out = absl::FromUnixNanos(static_cast<int64_t>(n));
      return 1;
    default:
      return 0;
  }
}

}  // namespace

// Builds the flat field list from nlohmann-json's SAX events (see the header).
class JsonSaxHandler {
 public:
  using number_integer_t = nlohmann::json::number_integer_t;
  using number_unsigned_t = nlohmann::json::number_unsigned_t;
  using number_float_t = nlohmann::json::number_float_t;
  using string_t = nlohmann::json::string_t;
  using binary_t = nlohmann::json::binary_t;

  // Ready for the next record, into `record`; the buffers keep their capacity, so a warmed-up
  // parser allocates nothing per record of its own (nlohmann's lexer still keeps one buffer per
  // call).
  explicit JsonSaxHandler(const Mapping& mapping) : mapping_(mapping) {}

  void Reset(JsonRecord* record) {
    record_ = record;
    levels_.clear();
    path_.clear();
    error_.clear();
    started_ = false;
    syntax_error_at_ = 0;
    last_scalar_ = false;
  }
  // The last value read was a number or a literal (whose end the input's end may have cut).
  bool last_scalar() const { return last_scalar_; }

  bool null() { return Skip(); }
  bool boolean(bool v) { return Scalar(v ? "true" : "false"); }
  bool number_integer(number_integer_t v) {
    char buf[32];
    const int n = snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(v));
    return Scalar(absl::string_view(buf, n));
  }
  bool number_unsigned(number_unsigned_t v) {
    char buf[32];
    const int n = snprintf(buf, sizeof(buf), "%llu", static_cast<unsigned long long>(v));
    return Scalar(absl::string_view(buf, n));
  }
  // As written: "1772546521.123456789" keeps its nanoseconds, which a double would not.
  bool number_float(number_float_t, const string_t& text) { return Scalar(text); }
  bool string(string_t& v) {
    last_scalar_ = false;  // closed by its quote: whole
    return Value(v);
  }
  bool binary(binary_t&) { return Fail("binary value"); }
  bool start_object(std::size_t) {
    if (levels_.empty()) {
      if (started_) return Fail("more than one value");
      started_ = true;
      levels_.push_back(Level{0, false, 0});
      return true;
    }
    return Push(false);
  }
  bool key(string_t& k) {
    key_ = k;
    return true;
  }
  bool end_object() { return Pop(); }
  bool start_array(std::size_t) {
    if (levels_.empty()) return Fail("not a JSON object");
    return Push(true);
  }
  bool end_array() { return Pop(); }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception&) {
    error_ = absl::StrCat("not valid JSON at byte ", position);
    syntax_error_at_ = position;
    return false;
  }
  // Where the JSON syntax broke (nlohmann counts from 1; past the end: the input ended inside
  // the record); 0 when it did not (or the handler refused the record).
  size_t syntax_error_at() const { return syntax_error_at_; }
  bool started() const { return started_; }

  const std::string& error() const { return error_; }
  bool complete() const { return started_ && levels_.empty(); }

 private:
  struct Level {
    size_t path_len;  // of path_ before this level's name
    bool array;
    uint32_t index;   // next element, in an array
  };

  // The name of the value about to be read, into path_ (restored by the caller).
  void AppendName() {
    Level& top = levels_.back();
    if (!path_.empty()) path_.push_back('.');
    if (top.array) {
      absl::StrAppend(&path_, top.index++);
    } else {
      path_.append(key_);
    }
  }
  bool Push(bool array) {
    if (levels_.empty()) return Fail("not a JSON object");
    if (static_cast<int>(levels_.size()) >= kMaxDepth) {
      return Fail(absl::StrCat("nested deeper than ", kMaxDepth));
    }
    const size_t before = path_.size();
    AppendName();
    levels_.push_back(Level{before, array, 0});
    return true;
  }
  bool Pop() {
    path_.resize(levels_.back().path_len);
    levels_.pop_back();
    return true;
  }
  bool Skip() {
    if (levels_.empty()) return Fail("not a JSON object");
    if (levels_.back().array) ++levels_.back().index;
    return true;
  }
  bool Value(absl::string_view v) {
    if (levels_.empty()) return Fail("not a JSON object");
    const size_t before = path_.size();
    AppendName();
    std::string& data = record_->data_;
    v = v.substr(0, kMaxValueBytes);
    if ((record_->entries_.size() >= kMaxFields ||
         data.size() + path_.size() + v.size() > kMaxRecordData) &&
        !mapping_.Reads(path_)) {
      path_.resize(before);
      return true;  // past the bounds, and no field the mapping reads: not kept
    }
    JsonRecord::Entry e;
    e.name_at = static_cast<uint32_t>(data.size());
    e.name_len = static_cast<uint32_t>(path_.size());
    data.append(path_);
    e.value_at = static_cast<uint32_t>(data.size());
    e.value_len = static_cast<uint32_t>(v.size());
    data.append(v.data(), v.size());
    record_->entries_.push_back(e);
    path_.resize(before);
    return true;
  }
  bool Scalar(absl::string_view v) {
    last_scalar_ = true;
    return Value(v);
  }
  bool Fail(std::string why) {
    error_ = std::move(why);
    return false;
  }

  const Mapping& mapping_;
  JsonRecord* record_ = nullptr;
  std::vector<Level> levels_;
  std::string path_;
  std::string key_;
  std::string error_;
  bool started_ = false;
  size_t syntax_error_at_ = 0;
  bool last_scalar_ = false;
};

bool JsonRecord::Find(absl::string_view name, absl::string_view* value) const {
  bool found = false;
  for (const Entry& e : entries_) {
    if (e.name_len != name.size() ||
        std::memcmp(data_.data() + e.name_at, name.data(), name.size()) != 0) {
      continue;
    }
    if (found) return false;  // twice: ambiguous
    found = true;
    *value = absl::string_view(data_.data() + e.value_at, e.value_len);
  }
  return found;
}

bool IsJsonFormat(LogFormat format) {
  return format >= LogFormat::LOG_FORMAT_JSON &&
         format <= LogFormat::LOG_FORMAT_LOGPUSH_FIREWALL_EVENTS;
}

size_t LineCapFor(LogFormat format, size_t max_line_bytes, size_t max_record_bytes) {
  return IsJsonFormat(format) ? max_record_bytes : max_line_bytes;
}

bool RendersCombined(LogFormat format) {
  return IsJsonFormat(format) && format != LogFormat::LOG_FORMAT_LOGPUSH_FIREWALL_EVENTS;
}

absl::Status ValidateJsonFormat(const palisade::v1::JsonFormat& f) {
  const std::string where = absl::StrCat("json_formats \"", f.name(), "\"");
  if (!ValidName(f.name())) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": name must match [a-z0-9_-]{1,64}"));
  }
  TimeLayout layout;
  if (!ParseLayout(f.time_layout(), &layout)) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": time_layout \"", f.time_layout(),
        "\" is not one of auto, rfc3339, unix, unix_ms, unix_ns, clf"));
  }
  if (f.message().empty() && f.client_address().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": set message (the text rules match) or client_address (the record is then "
               "rendered as a combined access line)"));
  }
  return absl::OkStatus();
}

JsonLineParser::JsonLineParser(std::unique_ptr<Mapping> mapping, absl::TimeZone zone)
    : mapping_(std::move(mapping)),
      zone_(zone),
      handler_(std::make_unique<JsonSaxHandler>(*mapping_)) {}

JsonLineParser::~JsonLineParser() = default;

absl::StatusOr<std::unique_ptr<JsonLineParser>> JsonLineParser::ForPreset(LogFormat format,
                                                                          absl::TimeZone zone) {
  std::unique_ptr<Mapping> m = PresetMapping(format);
  if (m == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(FormatName(format), " is not a JSON preset (format json needs a "
                                         "json_format naming a Config.json_formats entry)"));
  }
  return std::unique_ptr<JsonLineParser>(new JsonLineParser(std::move(m), zone));
}

absl::StatusOr<std::unique_ptr<JsonLineParser>> JsonLineParser::ForMapping(
    const palisade::v1::JsonFormat& f, absl::TimeZone zone) {
  if (absl::Status s = ValidateJsonFormat(f); !s.ok()) return s;
  auto m = std::make_unique<Mapping>();
  m->label = absl::StrCat("json format \"", f.name(), "\"");
  ParseLayout(f.time_layout(), &m->layout);
  auto slot = [](const std::string& name) {
    return name.empty() ? Slot() : Slot{{name}, true};
  };
  m->render = f.message().empty() ? Render::kCombined : Render::kMessage;
  m->time = slot(f.time());
  m->message = slot(f.message());
  m->client = slot(f.client_address());
  m->method = slot(f.method());
  m->path = slot(f.path());
  m->protocol = slot(f.protocol());
  m->status = slot(f.status());
  m->bytes = slot(f.bytes());
  m->referer = slot(f.referer());
  m->user_agent = slot(f.user_agent());
  m->user = slot(f.user());
  m->host = slot(f.host());
  return std::unique_ptr<JsonLineParser>(new JsonLineParser(std::move(m), zone));
}

absl::Status JsonLineParser::Flatten(absl::string_view line) {
  record_.data_.clear();
  record_.entries_.clear();
  if (Latin1Invalid(line, &latin1_)) line = latin1_;
  JsonSaxHandler& handler = *handler_;
  handler.Reset(&record_);
  const bool ok = nlohmann::json::sax_parse(line.begin(), line.end(), &handler,
                                            nlohmann::json::input_format_t::json,
                                            /*strict=*/true);
  // A record cut at its end (the pipeline cuts lines past engine.max_line_bytes; a client
  // controls the lengths of the user agent, referer and URI): the fields read in full before the
  // cut are the server's as they were written, and the record is read from them. Else a client
  // could hide any request behind an 8 KB user agent. A mapped field after the cut is missing,
  // as for any record.
  // Only while the top-level object is open: a whole record with a stray byte after it (where
  // the syntax breaks at the last byte too) was not cut, and is no record.
  const bool cut = !ok && handler.started() && !handler.complete() &&
                   handler.syntax_error_at() >= line.size();
  if (cut) {
    // The last value read may itself be cut: a number or literal that ends where the input
    // does ("status":40 of 403) is dropped.
    // A cut inside a string leaves the scalars before it whole (a comma and a quote followed
    // them); outside one, a trailing digit or letter may be the scalar's cut end.
    bool in_string = false;
    for (size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '"') {
        in_string = !in_string;
      } else if (line[i] == '\\' && in_string) {
        ++i;
      }
    }
    const char last = line.back();
    if (handler.last_scalar() && !in_string && !record_.entries_.empty() &&
        (absl::ascii_isalnum(last) || last == '.' || last == '-' || last == '+')) {
      record_.entries_.pop_back();
    }
    return absl::OkStatus();
  }
  if (!ok || !handler.complete()) {
    return absl::InvalidArgumentError(absl::StrCat(
        mapping_->label, ": ",
        handler.error().empty() ? std::string("not one JSON object") : handler.error()));
  }
  return absl::OkStatus();
}

absl::Status JsonLineParser::ReadTime(absl::string_view name, absl::string_view v,
                                      absl::Time reference, absl::Time* out,
                                      bool* repeated) const {
  const TimeLayout layout = mapping_->layout;
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat(mapping_->label, ": field \"", name, "\" is not a time (", why, ")"));
  };
  auto impossible = [&](absl::string_view why) {
    return absl::OutOfRangeError(
        absl::StrCat(mapping_->label, ": field \"", name, "\" is an impossible time: ", why));
  };
  if (layout == TimeLayout::kAuto || layout == TimeLayout::kRfc3339) {
    absl::StatusOr<size_t> used = ParseRfc3339Near(v, out, zone_, reference, repeated);
    if (!used.ok()) return impossible(used.status().message());
    if (*used == v.size() && *used > 0) return absl::OkStatus();
    if (layout == TimeLayout::kRfc3339) return bad("expected RFC 3339");
  }
  if (layout == TimeLayout::kAuto || layout == TimeLayout::kClf) {
    const int r = ParseClf(v, zone_, reference, out, repeated);
    if (r < 0) return impossible("a field out of range");
    if (r > 0) return absl::OkStatus();
    if (layout == TimeLayout::kClf) return bad("expected dd/Mon/yyyy:hh:mm:ss +zzzz");
  }
  const int r = ParseUnix(v, layout, out);
  if (r < 0) return impossible("out of range");
  if (r == 0) return bad("expected RFC 3339, dd/Mon/yyyy:hh:mm:ss +zzzz or a unix time");
  return absl::OkStatus();
}

absl::Status JsonLineParser::Parse(absl::string_view line, absl::Time reference,
                                   ParsedLine* out) {
  out->Clear();
  if (absl::Status s = Flatten(line); !s.ok()) return s;
  const Mapping& m = *mapping_;
  // Reads one slot: found (true), absent (false), or an error (missing required, twice).
  absl::Status error;
  auto read = [&](const Slot& slot, absl::string_view* value) {
    if (!slot.set() || !error.ok()) return false;
    for (const std::string& name : slot.names) {
      if (record_.Find(name, value)) return true;
      // Find is false for a duplicate as for an absent field: tell them apart for the reason.
      int n = 0;
      for (const JsonRecord::Entry& e : record_.entries_) {
        if (absl::string_view(record_.data_.data() + e.name_at, e.name_len) == name && ++n > 1) {
          error = absl::InvalidArgumentError(
              absl::StrCat(m.label, ": field \"", name, "\" appears more than once"));
          return false;
        }
      }
    }
    if (slot.required) {
      error = absl::InvalidArgumentError(absl::StrCat(
          m.label, ": no field \"", absl::StrJoin(slot.names, "\" or \""), "\""));
    }
    value->remove_prefix(value->size());
    return false;
  };

  absl::string_view time_v, client_v, host_v;
  if (read(m.time, &time_v)) {
    absl::Time t;
    bool repeated = false;
    const std::string& name = m.time.names[0];
    if (absl::Status s = ReadTime(name, time_v, reference, &t, &repeated); !s.ok()) return s;
    out->time = t;
    out->time_repeated = repeated;
  }
  if (!error.ok()) return error;
  if (read(m.client, &client_v)) {
    absl::string_view addr = CutAddress(client_v);
    if (addr.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          m.label, ": the client address field is not an IP address (\"",
          client_v.substr(0, 64), "\")"));
    }
    address_.assign(addr.data(), addr.size());
    out->client_address = address_;
  }
  if (!error.ok()) return error;
  if (read(m.host, &host_v)) out->host = host_v;
  if (!error.ok()) return error;
  out->record = &record_;

  if (m.render == Render::kMessage) {
    absl::string_view message;
    read(m.message, &message);
    if (!error.ok()) return error;
    out->message = message;
    return absl::OkStatus();
  }

  absl::string_view request, method, path, protocol, status, bytes, referer, ua, user;
  const bool has_request = read(m.request, &request);
  read(m.method, &method);
  read(m.path, &path);
  read(m.protocol, &protocol);
  read(m.status, &status);
  read(m.bytes, &bytes);
  read(m.referer, &referer);
  read(m.user_agent, &ua);
  read(m.user, &user);
  if (!error.ok()) return error;
  if (m.render == Render::kCombined && !has_request && (method.empty() || path.empty()) &&
      m.request.set()) {
    return absl::InvalidArgumentError(
        absl::StrCat(m.label, ": no \"request\" field, nor a method and a path"));
  }
  if (!status.empty() && !AllDigits(status)) {
    return absl::InvalidArgumentError(
        absl::StrCat(m.label, ": the status field is not a number"));
  }
  if (!bytes.empty() && !AllDigits(bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(m.label, ": the bytes field is not a number"));
  }

  std::string& r = rendered_;
  r.clear();
  r.append(address_);
  if (m.render == Render::kFirewall) {
    absl::string_view action, source, rule_id;
    read(m.action, &action);
    read(m.source, &source);
    read(m.rule_id, &rule_id);
    if (!error.ok()) return error;
    r.push_back(' ');
    AppendEscaped(action, true, &r);
    r.push_back(' ');
    AppendEscaped(source, true, &r);
    r.push_back(' ');
    AppendEscaped(rule_id, true, &r);
    r.append(" \"");
    AppendEscaped(method, true, &r);
    r.push_back(' ');
    AppendEscaped(path, true, &r);
    r.push_back(' ');
    AppendEscaped(protocol, true, &r);
    r.append("\" \"");
    AppendEscaped(host_v, false, &r);
    r.append("\" \"");
    AppendEscaped(ua, false, &r);
    r.push_back('"');
    out->message = r;
    return absl::OkStatus();
  }
  r.append(" - ");
  AppendEscaped(user, true, &r);
  r.append(" [");
  if (out->time) {
    const int64_t second = absl::ToUnixSeconds(*out->time);
    if (second != cached_second_) {
      cached_second_ = second;
      cached_time_text_ =
          absl::FormatTime("%d/%b/%Y:%H:%M:%S +0000", *out->time, absl::UTCTimeZone());
    }
    r.append(cached_time_text_);
  } else {
    r.push_back('-');
  }
  r.append("] \"");
  if (has_request) {
    AppendEscaped(request, false, &r);  // nginx's "$request": the client's line, escaped
  } else {
    AppendEscaped(method, true, &r);
    r.push_back(' ');
    AppendEscaped(path, true, &r);
    r.push_back(' ');
    AppendEscaped(protocol, true, &r);
  }
  r.append("\" ");
  absl::StrAppend(&r, status.empty() ? absl::string_view("-") : status);
  r.push_back(' ');
  absl::StrAppend(&r, bytes.empty() ? absl::string_view("-") : bytes);
  r.append(" \"");
  AppendEscaped(referer, false, &r);
  r.append("\" \"");
  AppendEscaped(ua, false, &r);
  r.push_back('"');
  out->message = r;
  return absl::OkStatus();
}

}  // namespace palisade
