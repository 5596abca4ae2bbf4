// JSON lines parsing (issue 14 §2): one JSON object per line, as nginx (`escape=json`), Caddy,
// Traefik, Envoy and Cloudflare Logpush write access logs, mapped onto a ParsedLine.
//
// A record is read with nlohmann-json's SAX interface into a flat list of (name, value) pairs:
// nested keys are joined with dots ("request.remote_ip"), array elements named by their index
// ("request.headers.User-Agent.0"), numbers kept as written, booleans "true"/"false", nulls
// left out (a null field is an absent one). No DOM is built: no allocation per value once the
// buffers have grown, and nothing recursive for a hostile depth to exhaust.
//
// What rules see (ParsedLine.message), per kind of mapping:
//   access logs   (nginx_json, caddy_json, traefik_json, envoy_json, logpush_http_requests, and
//                 a custom mapping without `message`): the record rendered as a combined line
//                 from the client address on, `ADDR - USER [dd/Mon/yyyy:hh:mm:ss +0000]
//                 "METHOD PATH PROTO" STATUS BYTES "REFERER" "UA"`, so every rule written for
//                 LOG_FORMAT_COMBINED reads it (the engine applies COMBINED rules to these
//                 formats). Client-written text (user, method, path, protocol, referer, user
//                 agent) is escaped as nginx escapes it: `"`, `\`, control bytes and bytes
//                 >= 0x7f become \xHH (uppercase hex); inside user, method, path and protocol a
//                 space too, so a client cannot forge the line's structure or its address, which
//                 comes from the field the server wrote and must be an IPv4/IPv6 address
//                 ("ADDR:PORT" and "[V6]:PORT" are cut to the address). Missing optional text is
//                 "-", as nginx writes it; status and bytes must be numbers.
//   firewall_events  `ADDR ACTION SOURCE RULEID "METHOD PATH PROTO" "HOST" "UA"` (the three
//                 first words escaped like the user above; "-" when absent).
//   custom with `message`: that field's text, as it is.
// ParsedLine.client_address is the address field (cut and validated), ParsedLine.host the host
// field, ParsedLine.record the record's fields (for Rule.field), ParsedLine.time the time field.
// Times: RFC 3339 (nginx $time_iso8601), nginx $time_local ("03/Mar/2026:14:02:01 +0000"), or
// a unix number whose unit is told by its size (s, ms, µs, ns for dates after 1973) unless the
// mapping names it (JsonFormat.time_layout). The first two without an offset are read in the
// parser's zone as the line formats read them (services/formats/line_parser.h: a repeated
// local time is the occurrence nearer the reference, ParsedLine.time_repeated set).
//
// Bytes that are not UTF-8 (nginx's escape=json writes a client's raw bytes >= 0x80 as they
// came) are read as Latin-1 characters, so such a record is still read, not skipped.
// Bounds, so that no client-written text can hide a record's mapped fields or grow memory: the
// caller reads a record whole up to engine.max_record_bytes (8 MiB; Caddy and Traefik log every
// request header, up to Go's 1 MiB of them); past 1,024 fields or 256 KiB of flattened names and
// values only the fields the mapping reads are kept; a value is kept up to 16 KiB; a rendered
// client-written field (path, user agent...) is written up to 8 KiB, so the status after the
// request stays in the rendered line.
// A record that ends early (cut at the caller's cap) is read from the fields it holds in full.
// Malformed (kInvalidArgument, the reason naming the field): not one JSON object (invalid JSON,
// a raw NUL or control byte, trailing text), nesting deeper than 32, a mapped field that is
// missing, appears twice, or has the wrong shape. kOutOfRange: an impossible time.
//
// Lifetime: the views of a ParsedLine filled by a JSON parser (message, host, client_address,
// record) point into that parser's buffers: valid until its next Parse, or its destruction.
//
// Thread-safety: a JsonLineParser (and a JsonRecord it owns) is used by one thread at a time.
#ifndef PALISADE_SERVICES_FORMATS_JSON_PARSER_H_
#define PALISADE_SERVICES_FORMATS_JSON_PARSER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "palisade/v1/config.pb.h"
#include "palisade/v1/rules.pb.h"

namespace palisade {

struct ParsedLine;

// The fields of one record, flattened (see above).
class JsonRecord {
 public:
  // The value of field `name`: false when the record lacks it or holds it more than once (two
  // keys that flatten to the same name are ambiguous: neither is believed).
  bool Find(absl::string_view name, absl::string_view* value) const;
  size_t size() const { return entries_.size(); }
  // The bytes of its names and values.
  size_t bytes() const { return data_.size(); }

 private:
  friend class JsonLineParser;
  friend class JsonSaxHandler;
  struct Entry {
    uint32_t name_at, name_len, value_at, value_len;
  };
  // Names and values, back to back; entries index into it.
  std::string data_;
  std::vector<Entry> entries_;
};

// Whether `format` is a JSON lines format (json, the presets, the Logpush datasets).
bool IsJsonFormat(palisade::v1::LogFormat format);
// Where a line of `format` is cut: a JSON record is read whole up to `max_record_bytes` (Caddy
// and Traefik log a client's headers before the status), any other line at `max_line_bytes`.
size_t LineCapFor(palisade::v1::LogFormat format, size_t max_line_bytes, size_t max_record_bytes);
// Whether records of `format` are rendered as combined access lines, so that rules for
// LOG_FORMAT_COMBINED apply to them (all JSON formats but firewall_events; a custom mapping
// with `message` is the operator's choice of text and reads rules the same way).
bool RendersCombined(palisade::v1::LogFormat format);

// Checks a custom mapping (Config.json_formats): its name, a known time_layout, and `message` or
// `client_address`. The error names the mapping and the field.
absl::Status ValidateJsonFormat(const palisade::v1::JsonFormat& format);

class JsonSaxHandler;

class JsonLineParser {
 public:
  // A preset (a JSON format other than LOG_FORMAT_JSON). `zone` reads times without an offset.
  static absl::StatusOr<std::unique_ptr<JsonLineParser>> ForPreset(palisade::v1::LogFormat format,
                                                                   absl::TimeZone zone);
  // A custom mapping, validated first (ValidateJsonFormat).
  static absl::StatusOr<std::unique_ptr<JsonLineParser>> ForMapping(
      const palisade::v1::JsonFormat& mapping, absl::TimeZone zone);
  ~JsonLineParser();

  // Parses one record into `out` (cleared first). A time without an offset in an hour the zone
  // repeats is the occurrence nearer `reference` (ParsedLine.time_repeated set), as in
  // LineParser::Parse. See the header comment for the errors.
  absl::Status Parse(absl::string_view line, absl::Time reference, ParsedLine* out);

  struct Mapping;  // the fields a format reads (json_parser.cc)

 private:
  JsonLineParser(std::unique_ptr<Mapping> mapping, absl::TimeZone zone);
  absl::Status Flatten(absl::string_view line);
  absl::Status ReadTime(absl::string_view name, absl::string_view value, absl::Time reference,
                        absl::Time* out, bool* repeated) const;

  std::unique_ptr<Mapping> mapping_;
  absl::TimeZone zone_;
  JsonRecord record_;
  std::unique_ptr<JsonSaxHandler> handler_;  // reused: its buffers keep their capacity
  std::string latin1_;  // a record with invalid UTF-8, its stray bytes read as Latin-1
  std::string rendered_;  // the message of a rendered record
  std::string address_;   // the client address, cut from its port
  // The last rendered second and its text ("03/Mar/2026:14:02:01 +0000"): lines of one second
  // share it.
  int64_t cached_second_ = INT64_MIN;
  std::string cached_time_text_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_FORMATS_JSON_PARSER_H_
