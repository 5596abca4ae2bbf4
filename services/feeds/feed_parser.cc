#include "services/feeds/feed_parser.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"
#include "re2/re2.h"

namespace palisade {
namespace {

using json = nlohmann::json;
using palisade::v1::FeedFormat;

constexpr size_t kMaxLineLength = 4096;
constexpr size_t kMaxQuotedText = 200;
// A reference is copied into every indicator of its line or object (a STIX pattern may OR
// thousands of addresses under one id and its labels), so it is cut: otherwise the parse would
// hold the labels once per address.
constexpr size_t kMaxRefBytes = 256;

// The length of the valid UTF-8 sequence (RFC 3629: no overlong forms, surrogates or code
// points past U+10FFFF) at the start of `s`, or 0.
size_t Utf8SequenceLength(absl::string_view s) {
  const auto byte = [&s](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = byte(0);
  if (c < 0x80) return 1;
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xbf;  // the range of the second byte
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
  } else {
    return 0;
  }
  if (s.size() < n || byte(1) < lo || byte(1) > hi) return 0;
  for (size_t i = 2; i < n; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xbf) return 0;
  }
  return n;
}

// What a feed server wrote, made safe to keep and show: it reaches proto3 strings (the stored
// version, decision reasons, Feeds.Push replies), which must be UTF-8 or the whole message is
// unreadable, and log lines and terminals. Control characters (C0, DEL, C1) and bytes that are
// not UTF-8 become "\xNN"; the result is cut to `max_bytes` between characters.
std::string Printable(absl::string_view s, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(s.size(), max_bytes));
  while (!s.empty()) {
    const size_t n = Utf8SequenceLength(s);
    const unsigned char c = static_cast<unsigned char>(s[0]);
    const bool c1 = n == 2 && c == 0xc2 && static_cast<unsigned char>(s[1]) < 0xa0;
    if (n == 0 || c < 0x20 || c == 0x7f || c1) {
      if (out.size() + 4 > max_bytes) break;
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
      s.remove_prefix(1);
      continue;
    }
    if (out.size() + n > max_bytes) break;
    out.append(s.data(), n);
    s.remove_prefix(n);
  }
  return out;
}

// What malloc adds to each block it hands out (glibc: an 8-byte header, 16-byte rounding).
constexpr uint64_t kMallocOverhead = 16;

// The heap block a string of `size` bytes takes beyond the string object itself: none while
// it fits the small-string buffer (15 bytes in libstdc++).
uint64_t StringHeapBytes(size_t size) {
  static const size_t kInline = std::string().capacity();
  return size > kInline ? size + 1 + kMallocOverhead : 0;
}
uint64_t HeapBytes(const std::string& s) { return StringHeapBytes(s.capacity()); }

// Collects indicators and rejections for one parse, within FeedParseOptions::max_parsed_bytes:
// each entry is accounted (its vector's growth and its strings' heap blocks) before it is
// kept; the first that does not fit refuses the feed, and nothing is kept after it.
class Collector {
 public:
  // `objects`: entries are the elements of a STIX bundle's "objects", named objects[i].
  explicit Collector(const FeedParseOptions& options, bool objects = false)
      : options_(options), objects_(objects) {}

  // True once the budget ran out: the parse can stop, its result is the refusal.
  bool exhausted() const { return !status_.ok(); }

  void Reject(uint32_t line, absl::string_view text, std::string reason) {
    if (exhausted()) return;
    ++out_.rejected;
    if (out_.rejections.size() < ParsedFeed::kMaxRejections) {
      FeedRejection r{line, Printable(text, kMaxQuotedText),
                      Printable(reason, kMaxQuotedText + kMaxLineLength)};
      if (!Charge(out_.rejections, HeapBytes(r.text) + HeapBytes(r.reason), line)) return;
      out_.rejections.push_back(std::move(r));
    }
  }
  void Ignore() { ++out_.ignored; }

  // Parses `value` as an address or CIDR and keeps it, or rejects the line saying why.
  void Add(uint32_t line, absl::string_view text, absl::string_view value, Indicator base) {
    if (exhausted()) return;
    value = absl::StripAsciiWhitespace(value);
    if (value.empty()) return Reject(line, text, "no address");
    absl::StatusOr<Cidr> cidr = Cidr::Parse(value);
    if (!cidr.ok()) return Reject(line, text, std::string(cidr.status().message()));
    const bool v4 = cidr->base().is_v4();
    const int min_prefix = v4 ? options_.min_prefix_v4 : options_.min_prefix_v6;
    if (cidr->prefix_length() < min_prefix) {
      return Reject(line, text,
                    absl::StrCat("/", cidr->prefix_length(), " is wider than the feed's ",
                                 v4 ? "min_prefix_v4" : "min_prefix_v6", " (/", min_prefix, ")"));
    }
    if (base.confidence > 0 && base.confidence < options_.min_confidence) {
      return Reject(line, text,
                    absl::StrCat("confidence ", base.confidence, " is below the minimum ",
                                 options_.min_confidence));
    }
    base.cidr = *cidr;
    base.ref = Printable(base.ref, kMaxRefBytes);
    if (!Charge(out_.indicators, HeapBytes(base.ref), line)) return;
    out_.indicators.push_back(std::move(base));
  }

  absl::StatusOr<ParsedFeed> Take() {
    if (exhausted()) return status_;
    return std::move(out_);
  }

 private:
  // Accounts one more entry of `v` holding `heap` bytes outside it, growing `v` (by doubling,
  // but never past what the budget has room for) when it is full. False, with the feed
  // refused, when it does not fit.
  template <typename T>
  bool Charge(std::vector<T>& v, uint64_t heap, uint32_t line) {
    const uint64_t budget = options_.max_parsed_bytes;
    size_t capacity = v.capacity();
    uint64_t growth = 0;
    if (v.size() == capacity) {
      const uint64_t used = out_.bytes + heap;
      const uint64_t room = used < budget ? budget - used : 0;
      capacity = static_cast<size_t>(std::min<uint64_t>(std::max<size_t>(16, 2 * v.capacity()),
                                                        v.capacity() + room / sizeof(T)));
      growth = (capacity - v.capacity()) * sizeof(T);
    }
    if (capacity == v.size() || out_.bytes + growth + heap > budget) {
      status_ = absl::ResourceExhaustedError(absl::StrCat(
          "the parsed feed would hold more than ", budget, " bytes (max_parsed_bytes) at ",
          objects_ ? absl::StrCat("objects[", line - 1, "]") : absl::StrCat("line ", line), " (",
          out_.indicators.size(), " indicators and ", out_.rejected,
          " rejections before it); the feed is refused whole"));
      out_ = ParsedFeed{};  // nothing more is kept: free it now
      return false;
    }
    v.reserve(capacity);
    out_.bytes += growth + heap;
    return true;
  }

  const FeedParseOptions& options_;
  const bool objects_;
  ParsedFeed out_;
  absl::Status status_;
};

// Calls fn(line_number, line) for each line, without its "\r\n"; over-long lines are rejected.
template <typename Fn>
void ForEachLine(absl::string_view content, Collector& c, Fn fn) {
  uint32_t number = 0;
  while (!content.empty() && !c.exhausted()) {
    size_t end = content.find('\n');
    absl::string_view line = content.substr(0, end);
    content.remove_prefix(end == absl::string_view::npos ? content.size() : end + 1);
    ++number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > kMaxLineLength) {
      c.Reject(number, line, absl::StrCat("line longer than ", kMaxLineLength, " bytes"));
      continue;
    }
    fn(number, line);
  }
}

// The part of a line before a comment starting with any of `comment_chars`, trimmed.
absl::string_view StripComment(absl::string_view line, absl::string_view comment_chars) {
  size_t cut = line.find_first_of(comment_chars);
  return absl::StripAsciiWhitespace(line.substr(0, cut));
}

absl::StatusOr<ParsedFeed> ParsePlain(absl::string_view content, const FeedParseOptions& options,
                                      absl::string_view comment_chars) {
  Collector c(options);
  ForEachLine(content, c, [&](uint32_t n, absl::string_view line) {
    absl::string_view body = StripComment(line, comment_chars);
    if (body.empty()) return;
    // One address per line; anything after it (a tab-separated note) is not ours to judge.
    size_t space = body.find_first_of(" \t");
    c.Add(n, line, body.substr(0, space), Indicator{});
  });
  return c.Take();
}

absl::StatusOr<ParsedFeed> ParseSpamhaus(absl::string_view content,
                                         const FeedParseOptions& options) {
  Collector c(options);
  ForEachLine(content, c, [&](uint32_t n, absl::string_view line) {
    absl::string_view trimmed = absl::StripAsciiWhitespace(line);
    if (trimmed.empty() || trimmed[0] == ';' || trimmed[0] == '#') return;
    size_t semi = trimmed.find(';');
    Indicator ind;
    if (semi != absl::string_view::npos) {
      ind.ref = std::string(absl::StripAsciiWhitespace(trimmed.substr(semi + 1)));
    }
    c.Add(n, line, trimmed.substr(0, semi), std::move(ind));
  });
  return c.Take();
}

absl::StatusOr<ParsedFeed> ParseSpamhausJson(absl::string_view content,
                                             const FeedParseOptions& options) {
  Collector c(options);
  ForEachLine(content, c, [&](uint32_t n, absl::string_view line) {
    if (absl::StripAsciiWhitespace(line).empty()) return;
    json record = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded() || !record.is_object()) {
      return c.Reject(n, line, "not a JSON object");
    }
    // value("type", "") would throw on a non-string "type" (found by the fuzzer).
    if (record.value("type", json()) == "metadata") return c.Ignore();
    auto cidr = record.find("cidr");
    if (cidr == record.end() || !cidr->is_string()) {
      return c.Reject(n, line, "no \"cidr\" string");
    }
    Indicator ind;
    auto sbl = record.find("sblid");
    if (sbl != record.end() && sbl->is_string()) ind.ref = sbl->get<std::string>();
    c.Add(n, line, cidr->get<std::string>(), std::move(ind));
  });
  return c.Take();
}

// Splits one CSV record (RFC 4180: quoted fields with "" escapes). False when a quote is open.
bool SplitCsv(absl::string_view line, std::vector<std::string>* fields) {
  fields->clear();
  std::string field;
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char ch = line[i];
    if (quoted) {
      if (ch != '"') {
        field.push_back(ch);
      } else if (i + 1 < line.size() && line[i + 1] == '"') {
        field.push_back('"');
        ++i;
      } else {
        quoted = false;
      }
    } else if (ch == '"') {
      quoted = true;
    } else if (ch == ',') {
      fields->push_back(std::move(field));
      field.clear();
    } else {
      field.push_back(ch);
    }
  }
  fields->push_back(std::move(field));
  return !quoted;
}

absl::StatusOr<ParsedFeed> ParseCsv(absl::string_view content, const FeedParseOptions& options) {
  Collector c(options);
  int column = -1, confidence_column = -1;
  bool header_seen = false;
  absl::Status header_error;
  std::vector<std::string> fields;
  ForEachLine(content, c, [&](uint32_t n, absl::string_view line) {
    if (!header_error.ok()) return;
    if (absl::StripAsciiWhitespace(line).empty() || line[0] == '#') return;
    if (!SplitCsv(line, &fields)) return c.Reject(n, line, "unterminated quoted field");
    if (!header_seen) {
      header_seen = true;
      for (size_t i = 0; i < fields.size(); ++i) {
        absl::string_view name = absl::StripAsciiWhitespace(fields[i]);
        if (absl::EqualsIgnoreCase(name, options.csv_column)) column = static_cast<int>(i);
        if (!options.csv_confidence_column.empty() &&
            absl::EqualsIgnoreCase(name, options.csv_confidence_column)) {
          confidence_column = static_cast<int>(i);
        }
      }
      if (column < 0) {
        header_error = absl::InvalidArgumentError(absl::StrCat(
            "CSV line ", n, ": the header has no column \"", options.csv_column,
            "\" (columns: ", Printable(absl::StrJoin(fields, ", "), kMaxQuotedText), ")"));
      } else if (!options.csv_confidence_column.empty() && confidence_column < 0) {
        header_error = absl::InvalidArgumentError(
            absl::StrCat("CSV line ", n, ": the header has no confidence column \"",
                         options.csv_confidence_column, "\""));
      }
      return;
    }
    if (static_cast<int>(fields.size()) <= std::max(column, confidence_column)) {
      return c.Reject(n, line, absl::StrCat("has ", fields.size(), " fields; the header has more"));
    }
    Indicator ind;
    if (confidence_column >= 0) {
      double confidence = 0;
      // Written so that NaN (which SimpleAtod reads, and which fails every comparison) fails.
      if (!absl::SimpleAtod(absl::StripAsciiWhitespace(fields[confidence_column]), &confidence) ||
          !(confidence >= 0 && confidence <= 100)) {
        return c.Reject(n, line, "confidence is not a number in 0..100");
      }
      // A zero score is a real score; keep it distinguishable from "not said".
      ind.confidence = std::max<uint32_t>(1, static_cast<uint32_t>(confidence));
      if (confidence < options.min_confidence) {
        return c.Reject(n, line,
                        absl::StrCat("confidence ", confidence, " is below the minimum ",
                                     options.min_confidence));
      }
    }
    c.Add(n, line, fields[column], std::move(ind));
  });
  if (!header_error.ok()) return header_error;
  if (!header_seen) return absl::InvalidArgumentError("CSV content has no header line");
  return c.Take();
}

absl::StatusOr<absl::Time> ParseStixTime(const json& value) {
  if (!value.is_string()) return absl::InvalidArgumentError("is not a string");
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, value.get<std::string>(), &t, &err)) {
    return absl::InvalidArgumentError(absl::StrCat("is not an RFC 3339 time: ", err));
  }
  return t;
}

// Takes one element of a STIX bundle's "objects" (1-based `index`), built with the members
// IsReadStixMember names.
void TakeStixObject(const json& object, uint32_t index, Collector& c,
                    const FeedParseOptions& options) {
  // One comparison of an address observable; a pattern may OR several. "= 'a'" is the address
  // or range a; "ISSUBSET 'r'" any address in the range r (how STIX 2.1 writes a CIDR), so the
  // range itself: both go through the same checks (Collector::Add: min_prefix_v4/v6).
  static const RE2 kComparison(
      R"re((ipv4-addr|ipv6-addr):value(?:\s*=\s*|\s+ISSUBSET\s+)'((?:[^'\\]|\\.)*)')re");
  // Any address observable: one left once the comparisons taken are cut out is compared some
  // other way (ISSUPERSET, NOT, !=, MATCHES, ...) and is rejected, never ignored.
  static const RE2 kAddressObservable(R"re((ipv4-addr|ipv6-addr):value)re");
  // What may remain once the comparisons are cut out: brackets, parentheses and OR.
  static const RE2 kOnlyOr(R"re([\s\[\]()]*(?:OR[\s\[\]()]*)*)re");

  if (!object.is_object() || object.value("type", json()) != "indicator") return c.Ignore();
  std::string id;
  auto id_it = object.find("id");
  if (id_it != object.end() && id_it->is_string()) id = id_it->get<std::string>();
  auto text_of = [&]() { return id.empty() ? absl::StrCat("objects[", index - 1, "]") : id; };
  auto pattern_it = object.find("pattern");
  if (pattern_it == object.end() || !pattern_it->is_string()) {
    return c.Reject(index, text_of(), "indicator has no \"pattern\" string");
  }
  const json pattern_type = object.value("pattern_type", json("stix"));
  if (pattern_type != "stix") return c.Ignore();  // snort, yara, …: not ours
  const std::string pattern = pattern_it->get<std::string>();
  std::vector<std::string> values;
  re2::StringPiece input(pattern);
  std::string kind, value;
  while (RE2::FindAndConsume(&input, kComparison, &kind, &value)) values.push_back(value);
  if (values.empty() && !RE2::PartialMatch(pattern, kAddressObservable)) {
    return c.Ignore();  // an indicator about files, domains, …
  }
  std::string rest = pattern;
  RE2::GlobalReplace(&rest, kComparison, "");
  if (!RE2::FullMatch(rest, kOnlyOr)) {
    return c.Reject(index, text_of(),
                    "pattern combines addresses with other operators or observables; only '=' "
                    "and ISSUBSET comparisons joined by OR are taken");
  }
  Indicator base;
  if (object.contains("valid_until")) {
    absl::StatusOr<absl::Time> until = ParseStixTime(object["valid_until"]);
    if (!until.ok()) {
      return c.Reject(index, text_of(), absl::StrCat("valid_until ", until.status().message()));
    }
    if (*until <= options.now) {
      return c.Reject(index, text_of(),
                      absl::StrCat("expired: valid_until ", absl::FormatTime(*until)));
    }
    base.valid_until = absl::ToUnixSeconds(*until);
  }
  if (object.contains("valid_from")) {
    absl::StatusOr<absl::Time> from = ParseStixTime(object["valid_from"]);
    if (!from.ok()) {
      return c.Reject(index, text_of(), absl::StrCat("valid_from ", from.status().message()));
    }
    if (*from > options.now && options.now != absl::InfinitePast()) {
      return c.Reject(index, text_of(),
                      absl::StrCat("not yet valid: valid_from ", absl::FormatTime(*from)));
    }
  }
  if (object.contains("confidence")) {
    const json& conf = object["confidence"];
    if (!conf.is_number_integer() || conf.get<int64_t>() < 0 || conf.get<int64_t>() > 100) {
      return c.Reject(index, text_of(), "confidence is not an integer in 0..100");
    }
    base.confidence = std::max<uint32_t>(1, conf.get<uint32_t>());
  }
  base.ref = id;
  auto labels = object.find("labels");
  if (labels != object.end() && labels->is_array()) {
    std::vector<std::string> names;
    for (const json& l : *labels) {
      if (l.is_string()) names.push_back(l.get<std::string>());
    }
    if (!names.empty()) absl::StrAppend(&base.ref, " (", absl::StrJoin(names, ", "), ")");
  }
  base.ref = Printable(base.ref, kMaxRefBytes);  // once, not per address
  for (const std::string& v : values) c.Add(index, text_of(), v, base);
}

// The members of a STIX object that TakeStixObject reads; the others are never built.
bool IsReadStixMember(absl::string_view key) {
  static constexpr absl::string_view kRead[] = {
      "type", "id", "pattern", "pattern_type", "valid_from", "valid_until", "confidence", "labels"};
  return std::find(std::begin(kRead), std::end(kRead), key) != std::end(kRead);
}

// Reads a STIX bundle as nlohmann-json's SAX parser walks it, holding no more than one element
// of "objects" at a time, and of that only the members an indicator needs, within
// FeedParseOptions::max_stix_object_bytes (estimated as nlohmann-json holds them) and
// max_stix_depth. Everything else is validated (it must be JSON) and dropped as it goes.
class StixReader final : public nlohmann::json_sax<json> {
 public:
  StixReader(const FeedParseOptions& options, Collector& c) : options_(options), c_(c) {}

  bool null() override {
    return Scalar(0, [] { return json(); });
  }
  bool boolean(bool v) override {
    return Scalar(0, [v] { return json(v); });
  }
  bool number_integer(number_integer_t v) override {
    return Scalar(0, [v] { return json(v); });
  }
  bool number_unsigned(number_unsigned_t v) override {
    return Scalar(0, [v] { return json(v); });
  }
  bool number_float(number_float_t v, const string_t&) override {
    return Scalar(0, [v] { return json(v); });
  }
  bool string(string_t& v) override {
    const bool type = depth_ == 1 && member_ == TopMember::kType;
    if (!Scalar(sizeof(string_t) + kMallocOverhead + StringHeapBytes(v.size()),
                [&v] { return json(v); })) {
      return false;
    }
    if (type) is_bundle_ = v == "bundle";
    return true;
  }
  // JSON text has no binary values; only CBOR and its kin do.
  bool binary(binary_t&) override {
    return Scalar(0, [] { return json(); });
  }
  bool start_object(std::size_t) override { return Open(json::value_t::object); }
  bool end_object() override { return Close(); }
  bool start_array(std::size_t) override { return Open(json::value_t::array); }
  bool end_array() override { return Close(); }

  bool key(string_t& k) override {
    if (depth_ == 1) {  // a member of the bundle
      member_ = k == "type"      ? TopMember::kType
                : k == "objects" ? TopMember::kObjects
                                 : TopMember::kOther;
      member_name_ = Printable(k, 64);
      return true;
    }
    if (element_ != Element::kBuild) return true;
    if (depth_ == kElementDepth) read_member_ = IsReadStixMember(k);
    if (!read_member_) return true;
    // A member: its map node, the key's string and the key's own heap block.
    if (!Charge(32 + sizeof(string_t) + kMallocOverhead + StringHeapBytes(k.size()))) return true;
    key_ = k;
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const json::exception& e) override {
    // The library quotes the bytes it stopped at as they came.
    error_ = absl::InvalidArgumentError(
        absl::StrCat("STIX bundle is not JSON: ", Printable(e.what(), kMaxLineLength)));
    return false;
  }

  absl::StatusOr<ParsedFeed> Finish() {
    if (!error_.ok()) return error_;
    if (c_.exhausted()) return c_.Take();
    if (!top_is_object_ || !is_bundle_) {
      return absl::InvalidArgumentError("STIX content is not a bundle (no \"type\": \"bundle\")");
    }
    if (objects_ == Objects::kAbsent) return ParsedFeed{};
    if (objects_ == Objects::kNotArray) {
      return absl::InvalidArgumentError("STIX bundle: \"objects\" is not an array");
    }
    return c_.Take();
  }

 private:
  enum class TopMember { kType, kObjects, kOther };
  enum class Objects { kAbsent, kArray, kNotArray };
  // What becomes of the element of "objects" being read.
  enum class Element { kNone, kBuild, kIgnore, kReject };
  // Containers open around an element's own members: the bundle, "objects", the element.
  static constexpr int kElementDepth = 3;

  // Things that happen to every value, scalar or container, before it is read: the bundle's
  // "type" and "objects", and the start of an element of "objects".
  bool Arrive(bool container, json::value_t type) {
    if (depth_ == 0) top_is_object_ = container && type == json::value_t::object;
    if (depth_ == 1 && member_ == TopMember::kType) is_bundle_ = false;  // string() may set it
    if (depth_ == 1 && member_ == TopMember::kObjects) {
      if (objects_ != Objects::kAbsent) {
        error_ = absl::InvalidArgumentError("STIX bundle: it has \"objects\" twice");
        return false;
      }
      objects_ = container && type == json::value_t::array ? Objects::kArray : Objects::kNotArray;
      in_objects_ = objects_ == Objects::kArray;
    }
    if (depth_ == 2 && in_objects_) {
      ++index_;
      if (!container) {
        c_.Ignore();
      } else if (type == json::value_t::object) {
        element_ = Element::kBuild;
        cost_ = 0;
        read_member_ = false;
      } else {
        element_ = Element::kIgnore;
      }
    }
    return true;
  }

  template <typename Make>
  bool Scalar(uint64_t extra, Make make) {
    if (!Arrive(false, json::value_t::null)) return false;
    if (Building() && Charge(sizeof(json) + InArray() + extra)) Place(make());
    return true;
  }

  bool Open(json::value_t type) {
    if (!Arrive(true, type)) return false;
    const bool build = depth_ == 2 ? element_ == Element::kBuild : Building();
    ++depth_;
    if (depth_ > options_.max_stix_depth) {
      if (element_ == Element::kNone) {
        error_ = absl::InvalidArgumentError(absl::StrCat(
            "STIX bundle nests deeper than ", options_.max_stix_depth, " levels (max_stix_depth) ",
            top_is_object_ ? absl::StrCat("in \"", member_name_, "\"") : "at its top level"));
        return false;
      }
      RejectElement(
          absl::StrCat("nests deeper than ", options_.max_stix_depth, " levels (max_stix_depth)"));
      return true;
    }
    if (!build) return true;
    const uint64_t own =
        type == json::value_t::object ? sizeof(json::object_t) : sizeof(json::array_t);
    if (depth_ == kElementDepth) {
      root_ = json(type);
      stack_.push_back(&root_);
      Charge(sizeof(json) + own + kMallocOverhead);
    } else if (Charge(sizeof(json) + InArray() + own + kMallocOverhead)) {
      stack_.push_back(Place(json(type)));
    }
    return true;
  }

  bool Close() {
    if (Building() || (depth_ == kElementDepth && element_ == Element::kBuild)) {
      stack_.pop_back();
    }
    --depth_;
    if (depth_ == 1) in_objects_ = false;  // "objects" (or another member) closed
    if (depth_ == 2 && element_ != Element::kNone) {
      switch (element_) {
        case Element::kBuild:
          TakeStixObject(root_, index_, c_, options_);
          break;
        case Element::kIgnore:
          c_.Ignore();
          break;
        case Element::kReject:
          c_.Reject(index_, reject_text_, reject_reason_);
          break;
        case Element::kNone:
          break;
      }
      element_ = Element::kNone;
      root_ = json();
      stack_.clear();
      if (c_.exhausted()) return false;  // the feed is refused: stop reading
    }
    return true;
  }

  // True while the event at hand is part of the element being built: inside a member it reads.
  bool Building() const {
    return element_ == Element::kBuild && depth_ >= kElementDepth && read_member_;
  }
  // An array's element also holds its share of the array's spare capacity.
  uint64_t InArray() const { return stack_.back()->is_array() ? sizeof(json) : 0; }

  // Puts `value` in the innermost container being built; returns where it went.
  json* Place(json value) {
    json& parent = *stack_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(value));
      return &parent.back();
    }
    json& slot = parent[key_];
    slot = std::move(value);
    return &slot;
  }

  // Accounts `bytes` more for the element being built; past its budget the element is
  // rejected (and what was built of it freed).
  bool Charge(uint64_t bytes) {
    cost_ += bytes;
    if (cost_ <= options_.max_stix_object_bytes) return true;
    RejectElement(absl::StrCat("holds more than ", options_.max_stix_object_bytes,
                               " bytes (max_stix_object_bytes)"));
    return false;
  }

  void RejectElement(const std::string& why) {
    if (element_ == Element::kReject) return;
    std::string id;
    if (element_ == Element::kBuild && root_.is_object()) {
      auto it = root_.find("id");
      if (it != root_.end() && it->is_string()) id = it->get<std::string>();
    }
    const std::string name = absl::StrCat("objects[", index_ - 1, "]");
    reject_text_ = id.empty() ? name : id;
    reject_reason_ = absl::StrCat(name, " ", why);
    element_ = Element::kReject;
    root_ = json();
    stack_.clear();
  }

  const FeedParseOptions& options_;
  Collector& c_;
  absl::Status error_;  // the bundle is refused whole
  int depth_ = 0;       // containers open
  bool top_is_object_ = false;
  bool is_bundle_ = false;
  TopMember member_ = TopMember::kOther;
  std::string member_name_;  // the bundle's member being read, for errors
  Objects objects_ = Objects::kAbsent;
  bool in_objects_ = false;
  // The element of "objects" being read.
  uint32_t index_ = 0;  // 1-based
  Element element_ = Element::kNone;
  bool read_member_ = false;  // its member being read is one TakeStixObject reads
  uint64_t cost_ = 0;
  json root_;
  std::vector<json*> stack_;  // the containers being built, innermost last
  std::string key_;           // the key of the next value placed in an object
  std::string reject_text_, reject_reason_;
};

absl::StatusOr<ParsedFeed> ParseStix(absl::string_view content, const FeedParseOptions& options) {
  Collector c(options, /*objects=*/true);
  StixReader reader(options, c);
  json::sax_parse(content.begin(), content.end(), &reader);
  return reader.Finish();
}

}  // namespace

uint64_t IndicatorBytes(const std::string& ref) { return sizeof(Indicator) + HeapBytes(ref); }

absl::StatusOr<ParsedFeed> ParseFeed(FeedFormat format, absl::string_view content,
                                     const FeedParseOptions& options) {
  switch (format) {
    case palisade::v1::FEED_FORMAT_PLAIN:
      return ParsePlain(content, options, "#;");
    case palisade::v1::FEED_FORMAT_FIREHOL:
      return ParsePlain(content, options, "#");
    case palisade::v1::FEED_FORMAT_SPAMHAUS:
      return ParseSpamhaus(content, options);
    case palisade::v1::FEED_FORMAT_SPAMHAUS_JSON:
      return ParseSpamhausJson(content, options);
    case palisade::v1::FEED_FORMAT_CSV:
      return ParseCsv(content, options);
    case palisade::v1::FEED_FORMAT_STIX:
      return ParseStix(content, options);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("feed format ", palisade::v1::FeedFormat_Name(format), " is not parsable"));
  }
}

absl::StatusOr<palisade::v1::FeedFormat> ParseFeedFormatName(absl::string_view name) {
  static const std::pair<const char*, FeedFormat> kNames[] = {
      {"plain", palisade::v1::FEED_FORMAT_PLAIN},
      {"spamhaus", palisade::v1::FEED_FORMAT_SPAMHAUS},
      {"spamhaus-json", palisade::v1::FEED_FORMAT_SPAMHAUS_JSON},
      {"firehol", palisade::v1::FEED_FORMAT_FIREHOL},
      {"csv", palisade::v1::FEED_FORMAT_CSV},
      {"stix", palisade::v1::FEED_FORMAT_STIX},
  };
  for (const auto& [text, format] : kNames) {
    if (name == text) return format;
  }
  FeedFormat format;
  if (palisade::v1::FeedFormat_Parse(std::string(name), &format) &&
      format != palisade::v1::FEED_FORMAT_UNSPECIFIED) {
    return format;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown feed format \"", name, "\" (plain, spamhaus, spamhaus-json, firehol, csv, stix)"));
}

}  // namespace palisade
