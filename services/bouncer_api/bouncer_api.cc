#include "services/bouncer_api/bouncer_api.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <optional>
#include <set>

#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "httplib.h"
#include "services/common/bounded_http_server.h"
#include "services/common/bounded_task_queue.h"
#include "services/common/ip.h"

namespace palisade {
namespace {

using ::palisade::v1::Decision;

constexpr char kForbidden[] = "{\"message\":\"access forbidden\"}";
constexpr size_t kMaxUserAgent = 128;
constexpr size_t kMaxScenario = 256;
// A request's headers, and the rest of its request line (BoundedStream).
constexpr size_t kMaxHeaderBytes = 16 << 10;
// A stream answer is handed to httplib in pieces of this size (see Start).
constexpr size_t kAnswerPieceBytes = 64 << 10;
// The real time a pull's wait for its bouncer's previous answer sleeps before it looks at the
// API's clock and the stop again (as the bounded HTTP server's waits do).
constexpr absl::Duration kWaitSlice = absl::Milliseconds(100);

// Whether an Accept-Encoding value takes gzip (a q of 0 refuses it).
bool AcceptsGzip(absl::string_view accept) {
  for (absl::string_view part : absl::StrSplit(accept, ',')) {
    std::vector<absl::string_view> fields = absl::StrSplit(part, ';');
    if (!absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(fields[0]), "gzip")) continue;
    for (size_t i = 1; i < fields.size(); ++i) {
      absl::string_view q = absl::StripAsciiWhitespace(fields[i]);
      double v = 1;
      if (absl::ConsumePrefix(&q, "q=") && absl::SimpleAtod(q, &v) && v <= 0) return false;
    }
    return true;
  }
  return false;
}

std::string Sha256(absl::string_view s) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), md);
  return std::string(reinterpret_cast<const char*>(md), sizeof(md));
}

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

// Times in the log are kept as the store keeps them, in milliseconds: a row read back after a
// restart must compare equal to the one made from the same decision (else it is served again).
absl::Time Millis(absl::Time t) { return absl::FromUnixMillis(absl::ToUnixMillis(t)); }

absl::Time ExpiryOf(const Decision& d) {
  return Millis(absl::FromUnixSeconds(d.expiry().seconds()) +
                absl::Nanoseconds(d.expiry().nanos()));
}

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '@' &&
        c != '-') {
      return false;
    }
  }
  return true;
}

// Printable ASCII only, cut: the User-Agent is the sender's to write and ends up in a table and
// on an operator's terminal.
std::string Printable(absl::string_view s, size_t max) {
  std::string out;
  for (char c : s.substr(0, max)) {
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  return out;
}

// The decision as bouncers see it, or nullopt when they must not see it (see the header).
std::optional<BouncerChangeRow> Visible(const Decision& d) {
  if (!d.active() || d.dry_run()) return std::nullopt;
  BouncerChangeRow r;
  switch (d.target().kind()) {
    case palisade::v1::TARGET_KIND_IP:
      r.scope = "Ip";
      break;
    case palisade::v1::TARGET_KIND_RANGE:
      r.scope = "Range";
      break;
    default:
      return std::nullopt;
  }
  switch (d.action()) {
    case palisade::v1::ACTION_BLOCK:
      r.type = "ban";
      break;
    case palisade::v1::ACTION_CHALLENGE:
    case palisade::v1::ACTION_MANAGED_CHALLENGE:
      r.type = "captcha";
      break;
    default:
      return std::nullopt;
  }
  switch (d.origin()) {
    case palisade::v1::ORIGIN_MANUAL:
      r.origin = "cscli";
      break;
    case palisade::v1::ORIGIN_FEED:
      r.origin = "lists";
      break;
    default:
      r.origin = "crowdsec";
  }
  if (!d.rule_id().empty()) {
    r.scenario = d.rule_id();
  } else if (!d.reason().empty()) {
    r.scenario = d.reason();
  } else {
    r.scenario = d.origin() == palisade::v1::ORIGIN_FEED ? "feed" : "manual";
  }
  if (r.scenario.size() > kMaxScenario) r.scenario.resize(kMaxScenario);
  r.decision_id = d.id();
  r.value = d.target().value();
  r.until = ExpiryOf(d);
  return r;
}

// Whether live row `r` is served as new or live at `now`: not once its end has passed, though
// the table's sweep has not expired it yet (up to a sweep interval; after a restart, what ended
// while palisaded was down), as CrowdSec serves only until > now. Its deletion comes with the
// sweep.
bool Current(const BouncerChangeRow& r, absl::Time now) { return r.until > now; }

// The memory a row holds: itself and its strings' buffers (those past the inline ones).
size_t RowBytes(const BouncerChangeRow& r) {
  size_t bytes = sizeof(r);
  for (const std::string* s :
       {&r.decision_id, &r.scope, &r.value, &r.type, &r.origin, &r.scenario}) {
    if (s->capacity() > std::string().capacity()) bytes += s->capacity() + 1;
  }
  return bytes;
}

// A decision id no decision has (ids are the table's own): the key of a reissue's deletion row,
// which must not replace the decision's live row (the store keeps one row per key).
constexpr char kReissueSuffix[] = "#reissued";

// Whether `next`, a live row of the decision `served` was, must be served as a deletion of
// `served` and a new entry (see the header): a bouncer would skip it as "already" held.
// A sooner end needs none: the deletion at that end takes the value out.
bool NeedsReissue(const BouncerChangeRow& served, const BouncerChangeRow& next) {
  return next.until > served.until || next.type != served.type || next.value != served.value ||
         next.scope != served.scope;
}

// Whether what a row decides on (DecidedRange) is withheld from bouncers: what the edge's guard
// refuses (TouchesNeverBan: `never_ban` or a non-public range, directly or through the IPv4 an
// IPv6 address or range embeds). Non-public too: a host's firewall bouncer behind a load
// balancer or proxy on a private network would drop it, and every visitor it carries, once a
// rule took its address for the client's; CrowdSec's default whitelist never decides on those
// ranges either. A value that does not parse decides on nothing and is not withheld.
bool Withheld(const CidrSet& never_ban, const std::optional<Cidr>& decided) {
  return decided && TouchesNeverBan(*decided, never_ban);
}

// The deletion of `served` that goes before a reissue's new entry: its own row, same id.
BouncerChangeRow ReissueDeletion(const BouncerChangeRow& served, absl::Time now) {
  BouncerChangeRow r = served;
  r.decision_id += kReissueSuffix;
  r.deleted = true;
  r.until = std::min(r.until, Millis(now));
  return r;
}

// The deletion of `served`, a decision that ended (or is no longer visible) at `now`.
BouncerChangeRow Ended(const BouncerChangeRow& served, absl::Time now) {
  BouncerChangeRow ended = served;
  ended.deleted = true;
  ended.until = std::min(ended.until, Millis(now));
  return ended;
}

// Whether an update may change what bouncers see of its decision: one that lives (Lives) is
// what Visible makes of it, another one ended.
bool Changes(const DecisionUpdate& update) {
  switch (update.change) {
    case DecisionChange::kCreated:
    case DecisionChange::kExtended:
    case DecisionChange::kExpired:
    case DecisionChange::kWithdrawn:
      return true;
    case DecisionChange::kStale:
    case DecisionChange::kForwarded:
    case DecisionChange::kRefused:
      return false;
  }
  return false;
}

bool Lives(const DecisionUpdate& update) {
  return update.change == DecisionChange::kCreated || update.change == DecisionChange::kExtended;
}

bool SameServed(const BouncerChangeRow& a, const BouncerChangeRow& b) {
  return a.deleted == b.deleted && a.scope == b.scope && a.value == b.value && a.type == b.type &&
         a.origin == b.origin && a.scenario == b.scenario && a.until == b.until;
}

// JSON string escaping as Go's encoding/json writes it (HTML-safe: <, >, & escaped too).
void AppendJsonString(absl::string_view s, std::string* out) {
  static const char kHex[] = "0123456789abcdef";
  out->push_back('"');
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (c < 0x20 || c == '<' || c == '>' || c == '&') {
          out->append("\\u00");
          out->push_back(kHex[c >> 4]);
          out->push_back(kHex[c & 15]);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

// One decision, its keys in the order Go writes models.Decision's fields.
void AppendDecision(const BouncerChangeRow& r, absl::Time now, std::string* out) {
  out->append("{\"duration\":");
  AppendJsonString(GoDuration(r.until - now), out);
  absl::StrAppend(out, ",\"id\":", r.num, ",\"origin\":");
  AppendJsonString(r.origin, out);
  out->append(",\"scenario\":");
  AppendJsonString(r.scenario, out);
  out->append(",\"scope\":");
  AppendJsonString(r.scope, out);
  out->append(",\"type\":");
  AppendJsonString(r.type, out);
  out->append(",\"value\":");
  AppendJsonString(r.value, out);
  out->push_back('}');
}

// A list as CrowdSec 1.4.6 writes it: `null` when empty (a nil Go slice), else an array.
void AppendList(const std::vector<const BouncerChangeRow*>& rows, absl::Time now,
                std::string* out) {
  if (rows.empty()) {
    out->append("null");
    return;
  }
  out->push_back('[');
  for (size_t i = 0; i < rows.size(); ++i) {
    if (i > 0) out->push_back(',');
    AppendDecision(*rows[i], now, out);
  }
  out->push_back(']');
}

BouncerReply Forbidden() {
  BouncerReply r;
  r.status = 403;
  r.body = kForbidden;
  return r;
}

BouncerReply JsonError(int status, absl::string_view message) {
  BouncerReply r;
  r.status = status;
  r.body = "{\"message\":";
  AppendJsonString(message, &r.body);
  r.body += "}";
  return r;
}

// What a row decides on: its address as a /32 or /128, or its range; nullopt when the value
// does not parse (then it answers no ip or range question).
std::optional<Cidr> DecidedRange(const BouncerChangeRow& r) {
  if (r.scope == "Ip") {
    std::optional<IpAddress> a = IpAddress::Parse(r.value);
    if (a) return Cidr::Covering(*a, a->bit_length());
    return std::nullopt;
  }
  absl::StatusOr<Cidr> c = Cidr::Parse(r.value);
  if (c.ok()) return *c;
  return std::nullopt;
}

// The filters of a request, parsed; `error` set when one is not understood.
struct Filters {
  std::optional<std::set<std::string>> scopes;  // lowercase
  std::optional<std::set<std::string>> origins;
  std::vector<std::string> scenarios_containing;
  std::vector<std::string> scenarios_not_containing;
  std::optional<std::string> type;
  std::optional<IpAddress> ip;
  std::optional<Cidr> range;
  std::optional<std::string> scope;  // lowercase
  std::optional<std::string> value;
  bool contains = true;
  bool startup = false;
  std::string error;

  // `decided`: what `r` decides on (DecidedRange), read only for an ip or range question.
  bool Matches(const BouncerChangeRow& r, const std::optional<Cidr>& decided) const {
    const std::string scope_lower = absl::AsciiStrToLower(r.scope);
    if (scopes && !scopes->count(scope_lower)) return false;
    if (scope && *scope != scope_lower) return false;
    if (origins && !origins->count(r.origin)) return false;
    if (type && *type != r.type) return false;
    if (value && *value != r.value) return false;
    if (!scenarios_containing.empty() &&
        std::none_of(scenarios_containing.begin(), scenarios_containing.end(),
                     [&](const std::string& s) { return absl::StrContains(r.scenario, s); })) {
      return false;
    }
    for (const std::string& s : scenarios_not_containing) {
      if (absl::StrContains(r.scenario, s)) return false;
    }
    if (ip || range) {
      if (!decided) return false;
      if (ip && !decided->Contains(*ip)) return false;
      if (range) {
        // contains (the default): decisions covering the whole range; else those inside it.
        const Cidr& outer = contains ? *decided : *range;
        const Cidr& inner = contains ? *range : *decided;
        if (outer.base().is_v4() != inner.base().is_v4() ||
            outer.prefix_length() > inner.prefix_length() || !outer.Contains(inner.base())) {
          return false;
        }
      }
    }
    return true;
  }
  // A row read from the log (parsed here, and only for an ip or range question).
  bool MatchesLogged(const BouncerChangeRow& r) const {
    return Matches(r, ip || range ? DecidedRange(r) : std::nullopt);
  }
};

// CrowdSec's scopes (types.Ip, Range, Country, AS, Username): the others name nothing. Only Ip
// and Range decisions exist here; a filter on the rest is valid and matches none.
const std::set<std::string>& KnownScopes() {
  static const auto* s = new std::set<std::string>{"ip", "range", "country", "as", "username"};
  return *s;
}
// CrowdSec 1.4's origins.
const std::set<std::string>& KnownOrigins() {
  static const auto* s =
      new std::set<std::string>{"crowdsec", "cscli", "CAPI", "lists", "cscli-import", "console"};
  return *s;
}

std::vector<std::string> CommaList(const std::string& v) {
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(v, ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (!part.empty()) out.emplace_back(part);
  }
  return out;
}

Filters ParseFilters(const std::multimap<std::string, std::string>& params,
                     const std::set<std::string>& allowed) {
  Filters f;
  std::set<std::string> seen;
  for (const auto& [key, value] : params) {
    if (!allowed.count(key)) {
      f.error = absl::StrCat("unknown parameter '", Printable(key, 64), "'");
      return f;
    }
    if (!seen.insert(key).second) {
      f.error = absl::StrCat("parameter '", key, "' is given twice");
      return f;
    }
    auto bad = [&](absl::string_view why) { f.error = absl::StrCat("'", key, "': ", why); };
    if (key == "startup") {
      if (value != "true" && value != "false") return bad("must be true or false"), f;
      f.startup = value == "true";
    } else if (key == "contains") {
      if (value != "true" && value != "false") return bad("must be true or false"), f;
      f.contains = value == "true";
    } else if (key == "scopes") {
      f.scopes.emplace();
      for (const std::string& s : CommaList(value)) {
        const std::string lower = absl::AsciiStrToLower(s);
        if (!KnownScopes().count(lower)) {
          return bad(absl::StrCat("unknown scope '", Printable(s, 64),
                                  "' (ip, range, country, as, username)")),
                 f;
        }
        f.scopes->insert(lower);
      }
      if (f.scopes->empty()) return bad("no scope given"), f;
    } else if (key == "scope") {
      const std::string lower = absl::AsciiStrToLower(value);
      if (!KnownScopes().count(lower)) {
        return bad(absl::StrCat("unknown scope '", Printable(value, 64), "'")), f;
      }
      f.scope = lower;
    } else if (key == "origins") {
      f.origins.emplace();
      for (const std::string& o : CommaList(value)) {
        if (!KnownOrigins().count(o)) {
          return bad(absl::StrCat("unknown origin '", Printable(o, 64),
                                  "' (crowdsec, cscli, CAPI, lists, cscli-import, console)")),
                 f;
        }
        f.origins->insert(o);
      }
      if (f.origins->empty()) return bad("no origin given"), f;
    } else if (key == "scenarios_containing" || key == "scenarios_not_containing") {
      std::vector<std::string> list = CommaList(value);
      if (list.empty()) return bad("no scenario given"), f;
      (key == "scenarios_containing" ? f.scenarios_containing : f.scenarios_not_containing) =
          std::move(list);
    } else if (key == "type") {
      if (value != "ban" && value != "captcha") {
        return bad(absl::StrCat("unknown type '", Printable(value, 64), "' (ban, captcha)")), f;
      }
      f.type = value;
    } else if (key == "ip") {
      f.ip = IpAddress::Parse(value);
      if (!f.ip) return bad(absl::StrCat("'", Printable(value, 64), "' is not an address")), f;
    } else if (key == "range") {
      absl::StatusOr<Cidr> c = Cidr::Parse(value);
      if (!c.ok()) return bad(absl::StrCat("'", Printable(value, 64), "' is not a range")), f;
      f.range = *c;
    } else if (key == "value") {
      f.value = value;
    }
  }
  return f;
}

const std::set<std::string>& StreamParams() {
  static const auto* s = new std::set<std::string>{
      "startup", "scopes", "origins", "scenarios_containing", "scenarios_not_containing"};
  return *s;
}
const std::set<std::string>& LiveParams() {
  static const auto* s = new std::set<std::string>{"ip",
                                                   "range",
                                                   "scope",
                                                   "value",
                                                   "type",
                                                   "contains",
                                                   "origins",
                                                   "scopes",
                                                   "scenarios_containing",
                                                   "scenarios_not_containing"};
  return *s;
}

// CrowdSec 1.4.6 lists decisions by their end, soonest first (its recordings show it).
bool ByUntil(const BouncerChangeRow* a, const BouncerChangeRow* b) {
  return a->until != b->until ? a->until < b->until : a->num < b->num;
}

}  // namespace

bool IsLoopbackPeer(absl::string_view address) {
  static const CidrSet* const loopback = new CidrSet(
      *CidrSet::Parse({"127.0.0.0/8", "::1/128", "::ffff:127.0.0.0/104"}));
  std::optional<IpAddress> ip = IpAddress::Parse(address);
  return ip.has_value() && loopback->Contains(*ip);
}

// `text` as a gzip member (zlib, windowBits 15 + 16).
absl::StatusOr<std::string> GzipAnswer(absl::string_view text) {
  z_stream z{};
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    return absl::InternalError("deflateInit2 failed");
  }
  // In pieces rather than into a buffer of deflateBound (the text's size and more): the text is
  // alive meanwhile, and the answer is kept for as long as its reader takes (shrunk to its
  // bytes, a tenth of the text's or less).
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  z.avail_in = static_cast<uInt>(text.size());
  std::string out;
  char piece[64 * 1024];
  int r = Z_OK;
  while (r == Z_OK) {
    z.next_out = reinterpret_cast<Bytef*>(piece);
    z.avail_out = sizeof(piece);
    r = deflate(&z, Z_FINISH);
    out.append(piece, sizeof(piece) - z.avail_out);
  }
  deflateEnd(&z);
  if (r != Z_STREAM_END) return absl::InternalError("deflate did not finish");
  out.shrink_to_fit();
  return out;
}

// The range is parsed once, when the row is logged: a startup pull and a live question other
// than ip= match every active row, and with 100,000 feed ranges parsing each per question was
// most of its time; the live index is keyed by it.
struct BouncerApi::ActiveRow {
  BouncerChangeRow row;
  std::optional<Cidr> decided;  // DecidedRange(row)
};

// The active rows by what they decide on (ActiveRow::decided), so that a live ip= question reads
// the rows on its address instead of matching every active row. With 100,000 feed decisions
// that scan, and the fold of the changes into a new snapshot it needed first, took 47 ms a
// question while decisions changed and 29 ms alone; from the index, 15 us and 4 us (medians of
// `bazel run -c opt //tests/bench:bouncer_live_bench -- --benchmark_repetitions=3`, 2 shared
// cores). An address's row decides on its /32 or /128, so one map keyed by (family, prefix
// length, masked base) holds the Ip and the Range rows alike, and a question looks its address
// up once per prefix length some row uses, masked to that length. A row that decides on nothing
// (a value that does not parse) is not held: it answers no ip question. Not thread-safe:
// BouncerApi keeps it under mu_.
class BouncerApi::LiveIndex {
 public:
  void Add(const std::shared_ptr<const ActiveRow>& row) {
    if (!row->decided) return;
    const Cidr& c = *row->decided;
    rows_[KeyOf(c)].push_back(row);
    ++per_length_[c.base().is_v4()][c.prefix_length()];
  }
  // `row` is the pointer Add was given.
  void Remove(const std::shared_ptr<const ActiveRow>& row) {
    if (!row->decided) return;
    const Cidr& c = *row->decided;
    auto it = rows_.find(KeyOf(c));
    if (it == rows_.end()) return;
    auto& on_key = it->second;
    auto held = std::find(on_key.begin(), on_key.end(), row);
    if (held == on_key.end()) return;
    on_key.erase(held);
    if (on_key.empty()) rows_.erase(it);
    --per_length_[c.base().is_v4()][c.prefix_length()];
  }
  // Appends the rows whose address or range holds `ip`, in no particular order.
  void Find(const IpAddress& ip, std::vector<std::shared_ptr<const ActiveRow>>* out) const {
    const auto& lengths = per_length_[ip.is_v4()];
    for (int length = 0; length <= ip.bit_length(); ++length) {
      if (lengths[length] == 0) continue;
      auto it = rows_.find(KeyOf(Cidr::Covering(ip, length)));
      if (it != rows_.end()) out->insert(out->end(), it->second.begin(), it->second.end());
    }
  }

 private:
  struct Key {
    std::array<uint8_t, 16> base;  // host bits clear; for IPv4 the first 4 bytes only
    int length;
    bool v4;
    friend bool operator==(const Key& a, const Key& b) {
      return a.v4 == b.v4 && a.length == b.length && a.base == b.base;
    }
    template <typename H>
    friend H AbslHashValue(H h, const Key& k) {
      return H::combine(std::move(h), k.base, k.length, k.v4);
    }
  };
  static Key KeyOf(const Cidr& c) {
    Key k{c.base().bytes(), c.prefix_length(), c.base().is_v4()};
    if (k.v4) std::fill(k.base.begin() + 4, k.base.end(), 0);
    return k;
  }

  // Several decisions may decide on one address or range (an operator's ban beside a feed's, a
  // captcha beside a ban): mostly one each, held inline.
  absl::flat_hash_map<Key, absl::InlinedVector<std::shared_ptr<const ActiveRow>, 1>> rows_;
  // Rows held per prefix length, IPv6 ([0], 0..128) and IPv4 ([1], 0..32).
  std::array<std::array<uint32_t, 129>, 2> per_length_{};
};

absl::StatusOr<std::unique_ptr<BouncerApi>> BouncerApi::Create(
    const palisade::v1::BouncerApiConfig& config, Clock& clock, Store* store,
    prometheus::Registry& registry, std::function<void(const std::string&)> log) {
  if (store == nullptr) return absl::FailedPreconditionError("bouncer_api: needs the state store");
  absl::StatusOr<palisade::v1::BouncerApiConfig> c = BouncerApiConfigWithDefaults(config);
  if (!c.ok()) return c.status();
  std::unique_ptr<BouncerApi> api(
      new BouncerApi(*std::move(c), clock, store, registry, std::move(log)));
  absl::StatusOr<std::vector<BouncerRow>> rows = store->LoadBouncers();
  if (!rows.ok()) return rows.status();
  absl::StatusOr<BouncerLogMeta> meta = store->LoadBouncerLogMeta();
  if (!meta.ok()) return meta.status();
  absl::MutexLock lock(&api->mu_);
  api->last_seq_ = meta->last_seq;
  api->trimmed_through_ = meta->trimmed_through;
  for (BouncerRow& row : *rows) {
    auto b = std::make_shared<Bouncer>();
    b->row = std::move(row);
    b->stored_pull = b->row.last_pull;
    api->AddMetricsLocked(*b);
    api->bouncers_[b->row.name] = std::move(b);
  }
  api->registered_->Set(static_cast<double>(api->bouncers_.size()));
  return api;
}

BouncerApi::BouncerApi(palisade::v1::BouncerApiConfig config, Clock& clock, Store* store,
                       prometheus::Registry& registry, std::function<void(const std::string&)> log)
    : config_(std::move(config)),
      clock_(clock),
      store_(store),
      registry_(registry),
      log_(std::move(log)),
      index_(std::make_unique<LiveIndex>()) {
  pulls_ = &prometheus::BuildCounter()
                .Name("palisade_bouncer_pulls_total")
                .Help(
                    "Pulls by CrowdSec bouncers (bouncer_api), by bouncer and kind: startup "
                    "(everything active), stream (changes since the last pull), live (one "
                    "address).")
                .Register(registry);
  served_ = &prometheus::BuildCounter()
                 .Name("palisade_bouncer_decisions_served_total")
                 .Help(
                     "Decisions served to CrowdSec bouncers, by bouncer and list (new, "
                     "deleted).")
                 .Register(registry);
  last_pull_ = &prometheus::BuildGauge()
                    .Name("palisade_bouncer_last_pull_timestamp_seconds")
                    .Help(
                        "When a registered bouncer last pulled (unix seconds); its "
                        "registration time until its first pull.")
                    .Register(registry);
  since_last_pull_ = &prometheus::BuildGauge()
                          .Name("palisade_bouncer_seconds_since_last_pull")
                          .Help(
                              "Seconds since a registered bouncer last pulled (since its "
                              "registration until its first pull); refreshed every second.")
                          .Register(registry);
  pull_record_failures_ =
      &prometheus::BuildCounter()
           .Name("palisade_bouncer_pull_record_failures_total")
           .Help(
               "Pulls by CrowdSec bouncers answered but not recorded because the store "
               "refused (a full disk), by bouncer: they are counted as pulls all the same, "
               "and recorded again every second.")
           .Register(registry);
  registered_ = &prometheus::BuildGauge()
                     .Name("palisade_bouncers_registered")
                     .Help("CrowdSec bouncers registered (palisadectl bouncers add).")
                     .Register(registry)
                     .Add({});
  write_failures_ = &prometheus::BuildCounter()
                         .Name("palisade_bouncer_log_write_failures_total")
                         .Help(
                             "Writes of the bouncers' decision log the store refused (retried "
                             "every second and at each pull; pulls are refused meanwhile).")
                         .Register(registry)
                         .Add({});
  overflows_ = &prometheus::BuildCounter()
                    .Name("palisade_bouncer_log_overflows_total")
                    .Help(
                        "Times the decision changes waiting for a refusing store passed their "
                        "cap in bytes and were dropped (bouncers then get every active "
                        "decision at their next pull).")
                    .Register(registry)
                    .Add({});
  withheld_total_ = &prometheus::BuildCounter()
                         .Name("palisade_bouncer_decisions_withheld_total")
                         .Help(
                             "Decisions withheld from CrowdSec bouncers because they decide on a "
                             "never-ban address (Cloudflare's ranges, this host's addresses, the "
                             "allowlist) or a non-public one, each once when withheld.")
                         .Register(registry)
                         .Add({});
  refused_ = &prometheus::BuildCounter()
                  .Name("palisade_bouncer_requests_refused_total")
                  .Help(
                      "Bouncer API requests refused, by reason: auth (no or an unknown "
                      "X-Api-Key), bad_request (a parameter not understood), too_long (the "
                      "request target past max_query_bytes), not_found (another path), timeout "
                      "(not arrived whole within the request deadline: answered 408), "
                      "address_busy (a connection closed unread: its address, not a loopback "
                      "one, already held max_connections_per_address workers).")
                  .Register(registry);
}

BouncerApi::~BouncerApi() { Stop(); }

void BouncerApi::Log(const std::string& message) const {
  if (log_) log_(message);
}

void BouncerApi::AddMetricsLocked(Bouncer& b) {
  const std::string& name = b.row.name;
  b.pulls_startup = &pulls_->Add({{"bouncer", name}, {"kind", "startup"}});
  b.pulls_stream = &pulls_->Add({{"bouncer", name}, {"kind", "stream"}});
  b.pulls_live = &pulls_->Add({{"bouncer", name}, {"kind", "live"}});
  b.served_new = &served_->Add({{"bouncer", name}, {"list", "new"}});
  b.served_deleted = &served_->Add({{"bouncer", name}, {"list", "deleted"}});
  b.last_pull = &last_pull_->Add({{"bouncer", name}});
  b.since_last_pull = &since_last_pull_->Add({{"bouncer", name}});
  b.pull_record_failures = &pull_record_failures_->Add({{"bouncer", name}});
  const absl::Time last = b.row.last_pull == absl::InfinitePast() ? b.row.created : b.row.last_pull;
  b.last_pull->Set(absl::ToDoubleSeconds(last - absl::UnixEpoch()));
  b.since_last_pull->Set(absl::ToDoubleSeconds(clock_.TimeNow() - last));
}

void BouncerApi::RemoveMetricsLocked(Bouncer& b) {
  for (prometheus::Counter* c :
       {b.pulls_startup, b.pulls_stream, b.pulls_live, b.served_new, b.served_deleted}) {
    if (c == nullptr) continue;
    if (c == b.served_new || c == b.served_deleted) {
      served_->Remove(c);
    } else {
      pulls_->Remove(c);
    }
  }
  last_pull_->Remove(b.last_pull);
  since_last_pull_->Remove(b.since_last_pull);
  pull_record_failures_->Remove(b.pull_record_failures);
}

void BouncerApi::AppendLocked(std::vector<BouncerChangeRow> rows) {
  const absl::Time now = clock_.TimeNow();
  for (BouncerChangeRow& r : rows) {
    r.seq = ++last_seq_;
    if (r.num == 0) r.num = r.seq;
    r.at = Millis(now);
    r.until = Millis(r.until);
    // The row it replaces leaves the index (that of a deletion too), the new one enters it.
    if (std::shared_ptr<const ActiveRow> old = FindLocked(r.decision_id); old != nullptr) {
      index_->Remove(old);
    }
    if (r.deleted) {
      // Marked only where an older layer still holds the row: otherwise no snapshot has it.
      if (FindOlderLocked(r.decision_id) != nullptr) {
        changes_[r.decision_id] = nullptr;
      } else {
        changes_.erase(r.decision_id);
      }
    } else {
      auto row = std::make_shared<const ActiveRow>(ActiveRow{r, DecidedRange(r)});
      index_->Add(row);
      changes_[r.decision_id] = std::move(row);
    }
    pending_bytes_ += RowBytes(r);
    pending_.push_back(std::move(r));
    // A feed sync of 100,000 decisions is 100,000 changes: written one transaction each, they
    // took 12.6 s of the table's listener time; batched, one. Not while the store refuses the
    // log: the ticker and pulls retry it, and a failing write of the whole backlog per change
    // held up the listener (and logged a line each).
    if (pending_.size() < kMaxPending && pending_bytes_ < max_pending_bytes_) continue;
    if (!write_failing_) (void)FlushLocked();
    if (pending_bytes_ >= max_pending_bytes_) DropPendingLocked();
  }
}

void BouncerApi::DropPendingLocked() {
  pending_.clear();
  pending_.shrink_to_fit();
  pending_bytes_ = 0;
  // Every bouncer that pulled is now behind what the store holds: it gets a startup-style
  // answer (every active decision, from memory), as one behind what Trim forgot does. The
  // store's log is brought in line with the active rows once it takes writes again (CatchUp).
  trimmed_through_ = last_seq_;
  rebuild_ = true;
  ++drops_;
  overflows_->Increment();
  if (overflow_logged_) return;
  overflow_logged_ = true;
  Log(absl::StrCat("bouncer_api: more than ", max_pending_bytes_,
                   " bytes of decision changes wait for the store: dropped; bouncers get every "
                   "active decision at their next pull once the store takes the log again"));
}

void BouncerApi::RecordUnrecordedLocked() {
  for (auto& [name, b] : bouncers_) {
    if (!b->unrecorded_served.has_value()) continue;
    BouncerRow& row = b->row;
    const int64_t position = std::max(row.position, *b->unrecorded_served);
    if (!store_->RecordPull(row.name, row.last_pull, row.address, row.user_agent, position).ok()) {
      continue;  // counted and logged when the pull was refused; tried again next second
    }
    row.position = position;
    b->unrecorded_served.reset();
    b->stored_pull = row.last_pull;
    b->pull_unstored = false;
    b->pull_store_failing = false;
  }
}

absl::Status BouncerApi::FlushLocked() {
  if (pending_.empty()) return absl::OkStatus();
  absl::Status s = store_->RecordBouncerChanges(pending_, last_seq_);
  if (!s.ok()) {
    // Kept, and written with the next flush (the ticker's or a pull's); no bouncer is served
    // past them meanwhile (Stream flushes first and answers 500 when it cannot). Logged once
    // until a write goes through, counted each time.
    write_failures_->Increment();
    if (!write_failing_) {
      Log(
          absl::StrCat("bouncer_api: the decision log cannot be written (retried every second "
                       "and at each pull; pulls are refused meanwhile): ",
                       s.message()));
    }
    write_failing_ = true;
    return s;
  }
  if (write_failing_) Log("bouncer_api: the decision log is written again");
  write_failing_ = false;
  overflow_logged_ = false;
  pending_.clear();
  pending_bytes_ = 0;
  if (pending_.capacity() > kMaxPending) pending_.shrink_to_fit();
  return absl::OkStatus();
}

absl::Status BouncerApi::CatchUp() {
  uint64_t drops = 0;  // drops_ as of the snapshot's rows
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = FlushLocked(); !s.ok()) return s;
    if (!rebuild_) return absl::OkStatus();
    drops = drops_;
    // Nothing was waiting to tell whether the store takes writes again: an empty write says.
    if (write_failing_) {
      if (absl::Status s = store_->RecordBouncerChanges({}, last_seq_); !s.ok()) {
        write_failures_->Increment();
        return s;
      }
      Log("bouncer_api: the decision log is written again");
      write_failing_ = false;
      overflow_logged_ = false;
    }
  }
  // Changes were dropped: the store's live rows are brought in line with the active rows, as
  // Attach does at start. Read and compared outside mu_ (the listener goes on); a decision
  // changed since the snapshot has that change logged already, and is left as it is.
  absl::StatusOr<std::vector<BouncerChangeRow>> stored =
      store_->LoadBouncerChanges(0, /*live_only=*/true);
  if (!stored.ok()) return stored.status();
  const Snapshot active = TakeSnapshot();
  // A row to log, and the active row it takes to be current (null: none).
  std::vector<std::pair<BouncerChangeRow, std::shared_ptr<const ActiveRow>>> fixes;
  absl::flat_hash_map<absl::string_view, const BouncerChangeRow*> by_id;
  for (const BouncerChangeRow& r : *stored) by_id[r.decision_id] = &r;
  for (const auto& [id, a] : *active.rows) {
    auto it = by_id.find(id);
    if (it != by_id.end() && SameServed(*it->second, a->row)) continue;
    fixes.emplace_back(a->row, a);  // its num kept
  }
  const absl::Time now = Millis(clock_.TimeNow());
  for (const BouncerChangeRow& r : *stored) {
    if (active.rows->contains(r.decision_id)) continue;
    BouncerChangeRow ended = r;
    ended.deleted = true;
    ended.until = std::min(ended.until, now);
    fixes.emplace_back(std::move(ended), nullptr);
  }
  absl::MutexLock lock(&mu_);
  std::vector<BouncerChangeRow> rows;
  for (auto& [row, current] : fixes) {
    if (FindLocked(row.decision_id) == current) rows.push_back(std::move(row));
  }
  // Rebuilt, unless changes made after the snapshot were dropped meanwhile (the next CatchUp's).
  rebuild_ = drops_ != drops;
  Log(absl::StrCat("bouncer_api: the decision log is rebuilt after dropped changes (", rows.size(),
                   " change(s) logged again)"));
  AppendLocked(std::move(rows));
  return FlushLocked();
}

absl::Status BouncerApi::Attach(DecisionTable& table) {
  absl::StatusOr<std::vector<BouncerChangeRow>> live = store_->LoadBouncerChanges(0, true);
  if (!live.ok()) return live.status();
  std::vector<BouncerChangeRow> changes;
  {
    auto loaded = std::make_shared<ActiveRows>();
    for (BouncerChangeRow& r : *live) {
      std::string id = r.decision_id;
      std::optional<Cidr> decided = DecidedRange(r);
      (*loaded)[id] = std::make_shared<const ActiveRow>(ActiveRow{std::move(r), decided});
    }
    absl::MutexLock lock(&mu_);
    active_ = loaded;
    merging_ = nullptr;
    changes_.clear();
    index_ = std::make_unique<LiveIndex>();
    for (const auto& [id, row] : *loaded) index_->Add(row);
    DecisionFilter active;
    active.active_only = true;
    std::set<std::string> visible;
    const absl::Time now = clock_.TimeNow();
    held_.clear();
    held_by_due_.clear();
    withheld_.clear();
    std::vector<std::pair<std::string, BouncerChangeRow>> rows;
    for (const Decision& d : table.List(active)) {
      std::optional<BouncerChangeRow> row = Visible(d);
      if (!row) continue;
      visible.insert(d.id());
      rows.emplace_back(d.id(), *std::move(row));
    }
    // Holds are not stored: a replacement held when the daemon stopped (or made while the log
    // was behind) is one again. A loaded row no longer visible and logged less than
    // kReissueHold before keeps its value covered: a visible decision new to bouncers on its
    // scope and value is held until then, and logged with its deletion (ReleaseDueLocked), as
    // OnUpdates holds a set's replacement. Before, the deletion and the new row went at once.
    for (const auto& [id, active] : *loaded) {
      if (visible.count(id)) continue;
      const absl::Time due = std::min(active->row.at + kReissueHold, active->row.until);
      if (now < due) replacing_[{active->row.scope, active->row.value}] = Replaced{id, due};
    }
    // Each against its loaded row (ChangeLocked finds it: `changes` is logged after the loop), as
    // the listener would have logged the change: reissued, held or withheld alike.
    for (auto& [id, row] : rows) ChangeLocked(id, std::move(row), now, &changes);
    replacing_.clear();
    std::set<std::string> held_back;  // replaced rows a held replacement keeps served
    for (const auto& [id, held] : held_) {
      if (!held.replaces.empty()) held_back.insert(held.replaces);
    }
    for (const auto& [id, active] : *loaded) {
      if (visible.count(id) || held_back.count(id)) continue;
      changes.push_back(Ended(active->row, now));
    }
    const size_t n = changes.size();
    AppendLocked(std::move(changes));
    if (absl::Status s = FlushLocked(); !s.ok()) return s;
    if (n > 0) {
      Log(absl::StrCat("bouncer_api: ", n,
                       " decision change(s) logged at start (made while the log was behind)"));
    }
  }
  table.AddSetListener([this](const std::vector<DecisionUpdate>& set) { OnUpdates(set); });
  return absl::OkStatus();
}

void BouncerApi::OnUpdates(const std::vector<DecisionUpdate>& updates) {
  // One lock for the set: a pull takes its position (last_seq_) under mu_, so it never lands
  // between a replaced decision's deletion and its replacement's creation.
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_.TimeNow();
  FindReplacementsLocked(updates, now);
  for (const DecisionUpdate& u : updates) OnUpdateLocked(u, now);
  replacing_.clear();
}

void BouncerApi::OnUpdateLocked(const DecisionUpdate& update, absl::Time now) {
  if (!Changes(update)) return;
  const Decision& d = update.decision;
  std::optional<BouncerChangeRow> row;
  if (Lives(update)) row = Visible(d);
  std::vector<BouncerChangeRow> rows;
  ChangeLocked(d.id(), std::move(row), now, &rows);
  if (!rows.empty()) AppendLocked(std::move(rows));
}

void BouncerApi::FindReplacementsLocked(const std::vector<DecisionUpdate>& updates,
                                        absl::Time now) {
  // What the set ends that was logged less than kReissueHold ago (or whose held replacement
  // it ends: the row it replaced is still served). Found first, from what is served or held (a
  // lookup each): a feed's sync (100,000 decisions new or logged long ago) ends none of those,
  // and then no update is judged (Visible, the never-ban set) twice under mu_.
  absl::flat_hash_map<std::pair<std::string, std::string>, Replaced> ending;
  for (const DecisionUpdate& u : updates) {
    if (!Changes(u)) continue;
    const std::string& id = u.decision.id();
    Replaced replaced{id, absl::InfinitePast()};
    std::shared_ptr<const ActiveRow> served = FindLocked(id);
    if (served != nullptr) {
      replaced.due = std::min(served->row.at + kReissueHold, served->row.until);
    } else if (auto held = held_.find(id); held != held_.end() && !held->second.replaces.empty()) {
      replaced = Replaced{held->second.replaces, held->second.due};
      served = FindLocked(replaced.id);
    }
    if (served == nullptr || now >= replaced.due) continue;
    if (Lives(u)) {
      std::optional<BouncerChangeRow> row = Visible(u.decision);
      if (row && !NeverBanLocked(DecidedRange(*row))) continue;  // still served: not ending
    }
    ending[{served->row.scope, served->row.value}] = std::move(replaced);
  }
  if (ending.empty()) return;
  // And what the set makes new to bouncers on one of those values.
  for (const DecisionUpdate& u : updates) {
    if (!Changes(u) || !Lives(u)) continue;
    const std::string& id = u.decision.id();
    if (FindLocked(id) != nullptr) continue;
    std::optional<BouncerChangeRow> row = Visible(u.decision);
    if (!row || NeverBanLocked(DecidedRange(*row))) continue;
    auto it = ending.find(std::make_pair(row->scope, row->value));
    if (it != ending.end() && it->second.id != id) replacing_[it->first] = it->second;
  }
}

void BouncerApi::ChangeLocked(const std::string& id, std::optional<BouncerChangeRow> row,
                              absl::Time now, std::vector<BouncerChangeRow>* out) {
  // A held replacement changed again goes on replacing (below), if it still decides on the
  // value of the row it replaces.
  std::optional<Replaced> replacing;
  if (auto held = held_.find(id); held != held_.end()) {
    if (!held->second.replaces.empty()) {
      replacing = Replaced{held->second.replaces, held->second.due};
    }
    held_by_due_.erase({held->second.due, id});
    held_.erase(held);
  }
  if (row && NeverBanLocked(DecidedRange(*row))) {
    if (withheld_.insert_or_assign(id, *std::move(row)).second) withheld_total_->Increment();
    row.reset();  // and what was served of it is taken back
  } else {
    withheld_.erase(id);
  }
  std::shared_ptr<const ActiveRow> served = FindLocked(id);
  if (!row) {
    if (served != nullptr) {
      // Replaced in this set: served until the replacement is logged with its deletion.
      auto r = replacing_.find({served->row.scope, served->row.value});
      if (r != replacing_.end() && r->second.id == id) return;
      out->push_back(Ended(served->row, now));
      return;
    }
    // A held replacement that ended: the row it replaced ends now, unless this set replaces
    // it again.
    if (replacing) {
      std::shared_ptr<const ActiveRow> replaced = FindLocked(replacing->id);
      if (replaced == nullptr) return;
      auto r = replacing_.find({replaced->row.scope, replaced->row.value});
      if (r != replacing_.end() && r->second.id == replacing->id) return;
      out->push_back(Ended(replaced->row, now));
    }
    return;  // else never served: nothing to take back
  }
  if (served != nullptr) {
    if (SameServed(served->row, *row)) return;
    row->num = served->row.num;
    if (NeedsReissue(served->row, *row)) {
      // Not before kReissueHold after the served row was logged (nor past its end: the
      // bouncer's timeout has taken it out by then).
      const absl::Time due = std::min(served->row.at + kReissueHold, served->row.until);
      if (now < due) {
        held_by_due_.insert({due, id});
        held_[id] = Held{*std::move(row), due, ""};
        return;
      }
      out->push_back(ReissueDeletion(served->row, now));
    }
  } else {
    // New to bouncers on the value of a row another decision, ended, still serves: both wait
    // until kReissueHold after that row was logged, then go together (ReleaseDueLocked).
    if (!replacing) {
      if (auto r = replacing_.find({row->scope, row->value}); r != replacing_.end()) {
        replacing = r->second;
      }
    }
    if (replacing) {
      if (std::shared_ptr<const ActiveRow> replaced = FindLocked(replacing->id);
          replaced != nullptr) {
        const bool same_value =
            replaced->row.scope == row->scope && replaced->row.value == row->value;
        if (same_value && now < replacing->due) {
          held_by_due_.insert({replacing->due, id});
          held_[id] = Held{*std::move(row), replacing->due, replacing->id};
          return;
        }
        out->push_back(Ended(replaced->row, now));
      }
    }
  }
  out->push_back(*std::move(row));
}

void BouncerApi::ReleaseDueLocked() {
  if (held_by_due_.empty()) return;
  const absl::Time now = clock_.TimeNow();
  std::vector<BouncerChangeRow> rows;
  while (!held_by_due_.empty() && held_by_due_.begin()->first <= now) {
    const std::string id = held_by_due_.begin()->second;
    held_by_due_.erase(held_by_due_.begin());
    auto held = held_.find(id);
    if (held == held_.end()) continue;
    BouncerChangeRow row = std::move(held->second.row);
    const std::string replaces = std::move(held->second.replaces);
    held_.erase(held);
    if (!replaces.empty()) {
      // A replacement: the row it replaced goes (unless taken back meanwhile, SetNeverBan),
      // and the new one comes, unless the never-ban set now covers it.
      if (std::shared_ptr<const ActiveRow> replaced = FindLocked(replaces); replaced != nullptr) {
        rows.push_back(Ended(replaced->row, now));
      }
      if (NeverBanLocked(DecidedRange(row))) {
        if (withheld_.insert_or_assign(id, std::move(row)).second) withheld_total_->Increment();
        continue;
      }
      rows.push_back(std::move(row));
      continue;
    }
    // Any change of the decision since dropped its hold (ChangeLocked): what is served of it is
    // still the row the hold was made against.
    std::shared_ptr<const ActiveRow> served = FindLocked(id);
    if (served != nullptr) rows.push_back(ReissueDeletion(served->row, now));
    rows.push_back(std::move(row));
  }
  if (!rows.empty()) AppendLocked(std::move(rows));
}

bool BouncerApi::NeverBanLocked(const std::optional<Cidr>& decided) const {
  return Withheld(never_ban_, decided);
}

void BouncerApi::SetNeverBan(CidrSet never_ban) {
  const CidrSet set = never_ban;  // for the scan outside mu_
  {
    absl::MutexLock lock(&mu_);
    never_ban_ = std::move(never_ban);
    // Those withheld that it no longer covers are served (few: see withheld_). From here on
    // the listener judges every change by the new set.
    std::vector<BouncerChangeRow> rows;
    for (auto it = withheld_.begin(); it != withheld_.end();) {
      if (NeverBanLocked(DecidedRange(it->second))) {
        ++it;
        continue;
      }
      rows.push_back(std::move(it->second));
      withheld_.erase(it++);
    }
    if (!rows.empty()) AppendLocked(std::move(rows));
  }
  // Those served that it now covers: found in a snapshot outside mu_ (the listener goes on), and
  // taken back unless changed since (the listener judged that change by the new set already).
  const Snapshot active = TakeSnapshot();
  std::vector<std::shared_ptr<const ActiveRow>> covered;
  for (const auto& [id, a] : *active.rows) {
    if (Withheld(set, a->decided)) covered.push_back(a);
  }
  if (covered.empty()) return;
  const absl::Time now = clock_.TimeNow();
  absl::MutexLock lock(&mu_);
  // Rows a held replacement keeps served (few: see held_): their decisions ended, so there is
  // nothing to withhold, only the row to take back. Withheld, one was served again once the set
  // no longer covered it, though the table had no such decision.
  std::set<std::string> replaced;
  for (const auto& [id, held] : held_) {
    if (!held.replaces.empty()) replaced.insert(held.replaces);
  }
  std::vector<BouncerChangeRow> rows;
  for (const std::shared_ptr<const ActiveRow>& a : covered) {
    const std::string& id = a->row.decision_id;
    if (FindLocked(id) != a) continue;
    if (replaced.count(id)) {
      rows.push_back(Ended(a->row, now));
      continue;
    }
    // What it is now: a held reissue's row, else the row served.
    auto held = held_.find(id);
    BouncerChangeRow current = held != held_.end() ? held->second.row : a->row;
    ChangeLocked(id, std::move(current), now, &rows);
  }
  if (!rows.empty()) AppendLocked(std::move(rows));
}

absl::StatusOr<std::string> BouncerApi::AddBouncer(const std::string& name) {
  if (!ValidName(name)) {
    return absl::InvalidArgumentError("a bouncer's name is 1 to 64 characters of [A-Za-z0-9._@-]");
  }
  unsigned char raw[32];
  if (RAND_bytes(raw, sizeof(raw)) != 1) {
    return absl::InternalError("bouncer_api: the random generator failed");
  }
  static const char kHex[] = "0123456789abcdef";
  std::string key;
  for (unsigned char c : raw) {
    key.push_back(kHex[c >> 4]);
    key.push_back(kHex[c & 15]);
  }
  OPENSSL_cleanse(raw, sizeof(raw));
  auto b = std::make_shared<Bouncer>();
  b->row.name = name;
  b->row.key_hash = Sha256(key);
  b->row.created = clock_.TimeNow();
  absl::MutexLock lock(&mu_);
  if (bouncers_.count(name)) {
    return absl::AlreadyExistsError(absl::StrCat("bouncer \"", name, "\" exists"));
  }
  if (absl::Status s = store_->AddBouncer(b->row); !s.ok()) return s;
  AddMetricsLocked(*b);
  bouncers_[name] = std::move(b);
  registered_->Set(static_cast<double>(bouncers_.size()));
  Log(absl::StrCat("bouncer_api: bouncer \"", name, "\" added"));
  return key;
}

absl::Status BouncerApi::DeleteBouncer(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = bouncers_.find(name);
  if (it == bouncers_.end()) {
    return absl::NotFoundError(absl::StrCat("no bouncer \"", Printable(name, 64), "\""));
  }
  if (absl::Status s = store_->DeleteBouncer(name); !s.ok()) return s;
  RemoveMetricsLocked(*it->second);
  bouncers_.erase(it);
  registered_->Set(static_cast<double>(bouncers_.size()));
  Log(absl::StrCat("bouncer_api: bouncer \"", name, "\" deleted"));
  return absl::OkStatus();
}

std::vector<BouncerInfo> BouncerApi::ListBouncers() {
  const absl::Time now = clock_.TimeNow();
  const absl::Duration stale = FromProto(config_.stale_after());
  absl::MutexLock lock(&mu_);
  std::vector<BouncerInfo> out;
  for (const auto& [name, b] : bouncers_) {
    BouncerInfo info;
    info.name = name;
    info.created = b->row.created;
    info.last_pull = b->row.last_pull;
    info.address = b->row.address;
    info.user_agent = b->row.user_agent;
    const absl::Time last =
        b->row.last_pull == absl::InfinitePast() ? b->row.created : b->row.last_pull;
    info.stale = now - last > stale;
    out.push_back(std::move(info));
  }
  return out;
}

std::pair<uint32_t, uint32_t> BouncerApi::BouncerCounts() {
  uint32_t stale = 0;
  std::vector<BouncerInfo> all = ListBouncers();
  for (const BouncerInfo& b : all) stale += b.stale ? 1 : 0;
  return {static_cast<uint32_t>(all.size()), stale};
}

int64_t BouncerApi::last_seq() {
  absl::MutexLock lock(&mu_);
  return last_seq_;
}

absl::Status BouncerApi::Flush() {
  absl::MutexLock lock(&mu_);
  return FlushLocked();
}

bool BouncerApi::WaitForAnswersForTesting(absl::Duration timeout, int left) {
  absl::MutexLock lock(&mu_);
  auto settled = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return answers_in_flight_ <= left; };
  return mu_.AwaitWithTimeout(absl::Condition(&settled), timeout);
}

size_t BouncerApi::pending_bytes() {
  absl::MutexLock lock(&mu_);
  return pending_bytes_;
}

std::shared_ptr<BouncerApi::Bouncer> BouncerApi::Authenticate(const std::string& key) {
  if (key.empty()) return nullptr;
  const std::string hash = Sha256(key);
  std::shared_ptr<Bouncer> found;
  // Every hash is compared, whichever matches: the time taken says nothing about the keys.
  for (auto& [name, b] : bouncers_) {
    const bool same = b->row.key_hash.size() == hash.size() &&
                      CRYPTO_memcmp(b->row.key_hash.data(), hash.data(), hash.size()) == 0;
    if (same) found = b;
  }
  return found;
}

bool BouncerApi::RegisteredLocked(const std::shared_ptr<Bouncer>& b) {
  auto it = bouncers_.find(b->row.name);
  return it != bouncers_.end() && it->second == b;
}

std::shared_ptr<const BouncerApi::ActiveRow> BouncerApi::FindOlderLocked(const std::string& id) {
  if (merging_ != nullptr) {
    auto it = merging_->find(id);
    if (it != merging_->end()) return it->second;
  }
  auto it = active_->find(id);
  return it != active_->end() ? it->second : nullptr;
}

std::shared_ptr<const BouncerApi::ActiveRow> BouncerApi::FindLocked(const std::string& id) {
  auto it = changes_.find(id);
  if (it != changes_.end()) return it->second;
  return FindOlderLocked(id);
}

BouncerApi::Snapshot BouncerApi::TakeSnapshot() {
  // One fold at a time: the merging_ layer is one, and a second reader would only fold the
  // same rows again (it waits here, and then takes the first one's snapshot).
  absl::MutexLock fold(&fold_mu_);
  std::shared_ptr<const ActiveRows> base;
  std::shared_ptr<const ActiveRows> changes;
  Snapshot snapshot;
  {
    absl::MutexLock lock(&mu_);
    snapshot.seq = last_seq_;
    if (changes_.empty()) {
      snapshot.rows = active_;
      return snapshot;
    }
    // Moving the layer aside is a pointer swap; the listener goes on writing a new changes_,
    // and finds the rows being folded in merging_ meanwhile (FindLocked).
    base = active_;
    changes = merging_ = std::make_shared<const ActiveRows>(std::move(changes_));
    changes_.clear();
  }
  // The copy is of pointers (the rows are shared), and outside mu_: the listener does not wait
  // for it, however many rows there are.
  auto folded = std::make_shared<ActiveRows>(*base);
  for (const auto& [id, row] : *changes) {
    if (row != nullptr) {
      (*folded)[id] = row;
    } else {
      folded->erase(id);
    }
  }
  snapshot.rows = folded;
  absl::MutexLock lock(&mu_);
  active_ = std::move(folded);
  merging_ = nullptr;
  return snapshot;  // `base` (the old snapshot, if no reader holds it) is freed after mu_
}

void BouncerApi::FoldIfLarge() {
  {
    absl::MutexLock lock(&mu_);
    if (changes_.empty() || changes_.size() < active_->size() / 4) return;
  }
  (void)TakeSnapshot();
}

BouncerReply BouncerApi::Handle(const BouncerRequest& request) {
  PendingReply answer = Answer(request);
  if (answer.settle) {
    if (absl::Status s = answer.settle(true); !s.ok()) {
      return JsonError(500, "the pull cannot be recorded");
    }
  }
  return std::move(answer.reply);
}

BouncerApi::PendingReply BouncerApi::Answer(const BouncerRequest& request) {
  if (request.target_bytes > config_.max_query_bytes()) {
    refused_->Add({{"reason", "too_long"}}).Increment();
    BouncerReply r = JsonError(414, absl::StrCat("the request target is longer than ",
                                                 config_.max_query_bytes(), " bytes"));
    return {std::move(r), nullptr};
  }
  if (request.ranged) {
    // httplib would serve any range asked of an answer written in pieces, past its end too.
    refused_->Add({{"reason", "bad_request"}}).Increment();
    return {JsonError(416, "byte ranges are not served"), nullptr};
  }
  const bool stream = request.path == "/v1/decisions/stream";
  const bool live = request.path == "/v1/decisions";
  if ((!stream && !live) || !(request.method == "GET" || (live && request.method == "HEAD"))) {
    // As CrowdSec 1.4.6 answers any other route or method: 405, no body.
    refused_->Add({{"reason", "not_found"}}).Increment();
    BouncerReply r;
    r.status = 405;
    r.content_type.clear();
    return {std::move(r), nullptr};
  }
  std::shared_ptr<Bouncer> bouncer;
  {
    absl::MutexLock lock(&mu_);
    bouncer = Authenticate(request.api_key);
  }
  if (bouncer == nullptr) {
    refused_->Add({{"reason", "auth"}}).Increment();
    return {Forbidden(), nullptr};
  }
  if (stream) return Stream(std::move(bouncer), request);
  return {Live(std::move(bouncer), request), nullptr};
}

// Held by Stream and then by its settle function, so that the claim is given back on every
// way out: an early answer, settle, or anything that throws once the claim is taken (bad_alloc
// building the settle function, the gzip, the provider): the settle function is then dropped
// unrun and this, its last holder, gives the claim back as not delivered. Before 2026-12-07 a
// cleanup that stood down once the answer was handed to settle let such a throw keep the claim:
// every later pull of the key waited kAnswerInFlightWait for an answer no one was writing.
class BouncerApi::PullClaim {
 public:
  PullClaim(BouncerApi* api, std::shared_ptr<Bouncer> bouncer)
      : api_(api), bouncer_(std::move(bouncer)) {}
  PullClaim(const PullClaim&) = delete;
  PullClaim& operator=(const PullClaim&) = delete;
  ~PullClaim() {
    if (!taken_) return;
    absl::MutexLock lock(&api_->mu_);
    GiveBackLocked();
  }
  // The turn (the wait for the previous answer ended): allocates nothing, so never throws.
  void TakeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(api_->mu_) {
    ++bouncer_->pulls_in_flight;
    taken_ = true;
  }
  // The position the answer serves, once chosen (Trim keeps the deletions above it).
  void ServeLocked(int64_t served) ABSL_EXCLUSIVE_LOCKS_REQUIRED(api_->mu_) {
    bouncer_->in_flight_served.insert(served);  // may throw: then nothing to give back for it
    served_ = served;
    ++api_->answers_in_flight_;
  }
  // Gives the claim back (settle; the destructor); once.
  void GiveBackLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(api_->mu_) {
    if (!taken_) return;
    taken_ = false;
    --bouncer_->pulls_in_flight;
    if (served_.has_value()) {
      bouncer_->in_flight_served.erase(bouncer_->in_flight_served.find(*served_));
      --api_->answers_in_flight_;
      served_.reset();
    }
  }

 private:
  BouncerApi* const api_;
  const std::shared_ptr<Bouncer> bouncer_;
  bool taken_ = false;
  std::optional<int64_t> served_;
};

BouncerApi::PendingReply BouncerApi::Stream(std::shared_ptr<Bouncer> bouncer,
                                            const BouncerRequest& request) {
  Filters f = ParseFilters(request.params, StreamParams());
  if (!f.error.empty()) {
    refused_->Add({{"reason", "bad_request"}}).Increment();
    return {JsonError(400, f.error), nullptr};
  }
  // The bouncer's previous answer first: its position moves once that is written, and a pull
  // served before it would serve its changes again. The wait ends and this pull counts itself
  // in flight in one step under mu_: two pulls of one key at once (hosts sharing a key) both went
  // past a wait that counted nothing, and both were served the same rows (before 2026-12-07).
  // On the API's clock, in slices of real time (a simulated clock's moves are seen within one);
  // a stop ends it.
  // Made before the wait: taking it then allocates nothing.
  auto claim = std::make_shared<PullClaim>(this, bouncer);
  {
    Bouncer* b = bouncer.get();
    const absl::Time give_up = clock_.TimeNow() + kAnswerInFlightWait;
    absl::MutexLock lock(&mu_);
    if (b->pulls_in_flight > 0 && pull_wait_hook_) pull_wait_hook_();
    while (b->pulls_in_flight > 0 && clock_.TimeNow() < give_up && !stopping_.HasBeenNotified()) {
      mu_.AwaitWithTimeout(
          absl::Condition(
              +[](Bouncer* b) ABSL_NO_THREAD_SAFETY_ANALYSIS { return b->pulls_in_flight == 0; },
              b),
          kWaitSlice);
    }
    claim->TakeLocked();
  }
  // Pulls one at a time (as when they ran under mu_), and none while Trim runs: the position
  // read here is the one the pull moves from, and the log read below still holds what lies
  // above it.
  absl::MutexLock pull(&pull_mu_);
  // What the log holds in memory goes to the store first (and after dropped changes, the log is
  // rebuilt): the position served must never pass a change the store does not have.
  if (absl::Status s = CatchUp(); !s.ok()) {
    return {JsonError(500, "the decision log cannot be written"), nullptr};
  }
  int64_t position = 0;
  bool behind = false;
  bool beside = false;      // another answer of this bouncer's is in flight
  bool unrecorded = false;  // an answer of this bouncer's was delivered but not recorded
  absl::Time registered = absl::InfinitePast();
  {
    absl::MutexLock lock(&mu_);
    // The reissues due now are this pull's (the ticker logs them too, within a second).
    ReleaseDueLocked();
    if (!RegisteredLocked(bouncer)) return {Forbidden(), nullptr};
    position = bouncer->row.position;
    // A bouncer whose position lies below what age or count trimmed missed deletions: it gets
    // every active decision, as at startup, and the deletions still held.
    behind = position < trimmed_through_ && position > 0;
    beside = bouncer->pulls_in_flight > 1;  // this pull counts too
    unrecorded = bouncer->unrecorded_served.has_value();
    registered = bouncer->row.created;
  }
  // The active rows at the position served (`served`): what changes after it is the next
  // pull's, so nothing is served twice or missed however long this answer takes.
  Snapshot active;
  if (f.startup || behind) active = TakeSnapshot();
  int64_t served = 0;
  {
    absl::MutexLock lock(&mu_);
    // Changes logged since CatchUp, written too (and none dropped meanwhile).
    if (absl::Status flushed = FlushLocked(); !flushed.ok() || rebuild_) {
      return {JsonError(500, "the decision log cannot be written"), nullptr};
    }
    served = active.rows != nullptr ? active.seq : last_seq_;
  }
  // The answer is chosen and written outside mu_: with 100,000 feed ranges a startup answer is
  // long to make, and the decision table's listener takes mu_.
  const absl::Time now = clock_.TimeNow();
  std::vector<BouncerChangeRow> logged;  // rows read from the log (they own their data)
  std::vector<const BouncerChangeRow*> added, deleted;
  if (active.rows != nullptr) {
    for (const auto& [id, a] : *active.rows) {
      if (Current(a->row, now) && f.Matches(a->row, a->decided)) added.push_back(&a->row);
    }
  }
  // startup=true lists deletions too, as CrowdSec's does (it sends the expired decisions it
  // still holds): here those the bouncer was not told of yet, so a restarted bouncer drops what
  // ended while it was away. A bouncer that never pulled had nothing to drop: its first pull
  // with startup reads no deletion (without: see record_lost below). Unless
  // an answer of its key is in flight beside this one (a pull went on past
  // kAnswerInFlightWait): that answer may bring rows whose deletions come after it, so this one
  // reads every deletion held (Trim keeps those above what that answer served): a replay of
  // some, never a loss (before 2026-12-07, one lost). Nor when an answer of its was written
  // whole but the store refused its pull (Bouncer::unrecorded_served): the position is 0, yet
  // the bouncer holds what that answer brought (before 2026-12-07 their deletions were lost).
  const bool first = position == 0 && !beside && !unrecorded;
  // A first pull without startup, though: CrowdSec's bouncers ask startup=true first (and
  // after their own restart), so this one most likely holds an answer whose record was lost
  // (palisaded died while the store refused it: unrecorded_served is memory only; before
  // 2026-12-07 its deletions were lost). It reads the deletions logged after its registration,
  // since any answer it holds came after that: a fresh bouncer (or one asking so by mistake) is
  // not sent the deletions held from before it existed. The store leaves those out: read and
  // dropped here, they were the whole log (up to max_deletions rows) under the store's lock
  // and pull_mu_, again at each such pull. Trim keeps the ones after the registration of a
  // bouncer never recorded.
  const bool record_lost = first && !f.startup;
  if (!f.startup || !first) {
    absl::StatusOr<std::vector<BouncerChangeRow>> rows =
        store_->LoadBouncerChanges(position, record_lost ? registered : absl::InfinitePast());
    if (!rows.ok()) {
      Log(absl::StrCat("bouncer_api: ", rows.status().message()));
      return {JsonError(500, "the decision log cannot be read"), nullptr};
    }
    logged = *std::move(rows);
    // A decision reissued and then ended has two deletion rows (the reissue's and its own):
    // served once.
    absl::flat_hash_set<int64_t> deleted_nums;
    for (const BouncerChangeRow& r : logged) {
      // Logged after the position served (the ticker writes on meanwhile): the next pull's.
      // A row it replaced is not lost: the next pull serves the decision's latest change.
      if (r.seq > served) continue;
      if (!f.MatchesLogged(r)) continue;
      if (r.deleted) {
        if (deleted_nums.insert(r.num).second) deleted.push_back(&r);
      } else if (!behind && !f.startup && Current(r, now)) {  // else in `added` already
        added.push_back(&r);
      }
    }
  }
  if (answer_hook_) answer_hook_();
  std::sort(added.begin(), added.end(), ByUntil);
  std::sort(deleted.begin(), deleted.end(), ByUntil);
  BouncerReply reply;
  reply.body.reserve(32 + 160 * (added.size() + deleted.size()));
  reply.body = "{\"deleted\":";
  AppendList(deleted, now, &reply.body);
  reply.body += ",\"new\":";
  AppendList(added, now, &reply.body);
  reply.body += "}";

  // The position moves to the one served once the answer was written whole (settle): what was
  // filtered out is not served later either (as CrowdSec's time-based pulls).
  std::string address = Printable(request.address, 64);
  std::string user_agent = Printable(request.user_agent, kMaxUserAgent);
  {
    absl::MutexLock lock(&mu_);
    if (!RegisteredLocked(bouncer)) return {Forbidden(), nullptr};  // deleted meanwhile
    claim->ServeLocked(served);
  }
  const bool startup_kind = f.startup || behind;
  const size_t new_count = added.size();
  const size_t deleted_count = deleted.size();
  auto settle = [this, bouncer, claim, served, now, address = std::move(address),
                 user_agent = std::move(user_agent), startup_kind, new_count,
                 deleted_count](bool delivered) mutable -> absl::Status {
    absl::MutexLock lock(&mu_);
    claim->GiveBackLocked();
    // Not written whole: nothing moves, the next pull serves these changes again. A bouncer
    // deleted meanwhile has no row (nor metrics) left.
    if (!delivered || !RegisteredLocked(bouncer)) return absl::OkStatus();
    BouncerRow& row = bouncer->row;
    // Only ever up: a pull that waited past kAnswerInFlightWait may settle after a later one.
    const int64_t position = std::max(row.position, served);
    absl::Status s = store_->RecordPull(row.name, now, address, user_agent, position);
    // Delivered, recorded or not: the bouncer asked and was told, so it is counted and its
    // last pull is now (a store that refuses is no stale bouncer; it has its own counter).
    row.last_pull = now;
    row.address = std::move(address);
    row.user_agent = std::move(user_agent);
    (startup_kind ? bouncer->pulls_startup : bouncer->pulls_stream)->Increment();
    bouncer->served_new->Increment(static_cast<double>(new_count));
    bouncer->served_deleted->Increment(static_cast<double>(deleted_count));
    bouncer->last_pull->Set(absl::ToDoubleSeconds(now - absl::UnixEpoch()));
    bouncer->since_last_pull->Set(0);
    if (!s.ok()) {
      // The position in memory stays where it was: the next pull is served these changes
      // again. But the bouncer holds this answer's rows: the deletions after what it served
      // are its next pull's, even from position 0, and Trim keeps them (unrecorded_served).
      if (!bouncer->unrecorded_served.has_value() || served < *bouncer->unrecorded_served) {
        bouncer->unrecorded_served = served;
      }
      bouncer->pull_unstored = true;
      bouncer->pull_record_failures->Increment();
      // Logged once until the store records a pull again: a full disk refuses every pull.
      if (!bouncer->pull_store_failing) {
        bouncer->pull_store_failing = true;
        Log(absl::StrCat("bouncer_api: ", s.message(), " (logged once until a pull is recorded)"));
      }
      return s;
    }
    row.position = position;
    // A recorded position at or past it serves what that answer's deletions need.
    if (bouncer->unrecorded_served.has_value() && position >= *bouncer->unrecorded_served) {
      bouncer->unrecorded_served.reset();
    }
    bouncer->stored_pull = now;
    bouncer->pull_unstored = false;
    bouncer->pull_store_failing = false;
    return absl::OkStatus();
  };
  return {std::move(reply), std::move(settle)};
}

BouncerReply BouncerApi::Live(std::shared_ptr<Bouncer> bouncer, const BouncerRequest& request) {
  Filters f = ParseFilters(request.params, LiveParams());
  if (!f.error.empty()) {
    refused_->Add({{"reason", "bad_request"}}).Increment();
    return JsonError(400, f.error);
  }
  // A live-mode bouncer asks once per request its server takes, so traffic to the protected
  // site sets how often this runs, and the decision table's listener takes mu_: an ip= question
  // (what nginx's and HAProxy's bouncers ask) takes the rows on its address from the index under
  // mu_, a lookup per prefix length in use; any other, the snapshot (and its fold, when
  // decisions changed since the last one), every row of it. Both are filtered and written out
  // after mu_, by the same rules.
  std::vector<std::shared_ptr<const ActiveRow>> on_address;
  Snapshot active;
  if (f.ip && !live_scan_for_testing_) {
    absl::MutexLock lock(&mu_);
    index_->Find(*f.ip, &on_address);
  } else {
    active = TakeSnapshot();
  }
  const absl::Time now = clock_.TimeNow();
  std::vector<const BouncerChangeRow*> found;
  auto consider = [&](const ActiveRow& a) {
    if (Current(a.row, now) && f.Matches(a.row, a.decided)) found.push_back(&a.row);
  };
  if (active.rows != nullptr) {
    for (const auto& [id, a] : *active.rows) consider(*a);
  } else {
    for (const std::shared_ptr<const ActiveRow>& a : on_address) consider(*a);
  }
  if (answer_hook_) answer_hook_();
  std::sort(found.begin(), found.end(), ByUntil);
  BouncerReply reply;
  if (request.method != "HEAD") AppendList(found, now, &reply.body);
  absl::MutexLock lock(&mu_);
  if (!RegisteredLocked(bouncer)) return Forbidden();  // deleted while its answer was written
  bouncer->pulls_live->Increment();
  bouncer->served_new->Increment(static_cast<double>(found.size()));
  // A live bouncer's last pull is its last question (its position does not move).
  bouncer->row.last_pull = now;
  bouncer->row.address = Printable(request.address, 64);
  bouncer->row.user_agent = Printable(request.user_agent, kMaxUserAgent);
  // Stored at most every kLivePullStoreInterval: the pace of these questions is set by whoever
  // sends requests to the bouncer's server, and a store write (under mu_) each would hold up
  // the table's listener.
  // A write the store refused (a full disk) waits as long, and is logged once until one goes
  // through: else every question retried it under mu_, and logged a line.
  bouncer->pull_unstored = true;
  if (now - std::max(bouncer->stored_pull, bouncer->pull_store_tried) >= kLivePullStoreInterval) {
    bouncer->pull_store_tried = now;
    absl::Status s = store_->RecordPull(bouncer->row.name, now, bouncer->row.address,
                                        bouncer->row.user_agent, bouncer->row.position);
    if (s.ok()) {
      bouncer->stored_pull = now;
      bouncer->pull_unstored = false;
      bouncer->pull_store_failing = false;
    } else {
      bouncer->pull_record_failures->Increment();
    }
    if (!s.ok() && !bouncer->pull_store_failing) {
      bouncer->pull_store_failing = true;
      Log(absl::StrCat("bouncer_api: ", s.message(), " (retried every minute; logged once)"));
    }
  }
  bouncer->last_pull->Set(absl::ToDoubleSeconds(now - absl::UnixEpoch()));
  bouncer->since_last_pull->Set(0);
  return reply;
}

absl::StatusOr<int64_t> BouncerApi::Trim() {
  // Not while a pull reads the log (Stream). A position moves outside pull_mu_ (once its
  // answer was written), but only up: the bound taken below stays safe if one moves meanwhile,
  // so the store's trim runs outside mu_ (a bulk delete, which every key check, live question
  // and decision change would wait for).
  absl::MutexLock pull(&pull_mu_);
  if (absl::Status s = CatchUp(); !s.ok()) return s;
  int64_t served_through = 0;
  // The earliest registration of a bouncer never pulled (InfiniteFuture: none).
  absl::Time never_pulled = absl::InfiniteFuture();
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = FlushLocked(); !s.ok()) return s;
    // A bouncer at position 0 was served nothing (live mode, or no pull yet) as far as its
    // record goes: it holds no deletion back. But one with no pull recorded nor made in this
    // process may hold a first answer whose record a crash lost: its next pull without startup
    // reads the deletions logged after its registration (Stream: record_lost), so those stay
    // (age and count still trim them; before 2026-12-07 the first trim after a restart could
    // drop them before its pull). One added meanwhile holds nothing: what is logged after it
    // is above the bound taken here.
    // And one whose first answer is being written moves to what that served once it is: the
    // deletions after it are its next pull's (before 2026-12-07 they were trimmed, and the host
    // kept a withdrawn ban until its timeout). With two in flight (one went on past
    // kAnswerInFlightWait), those after the lower: either may be the one written. And one whose
    // answer was written whole but not recorded (unrecorded_served) holds back what that
    // answer brought, though its position stayed.
    served_through = last_seq_;
    for (const auto& [name, b] : bouncers_) {
      if (b->row.position > 0) {
        served_through = std::min(served_through, b->row.position);
      } else if (!b->in_flight_served.empty()) {
        served_through = std::min(served_through, *b->in_flight_served.begin());
      } else if (b->row.last_pull == absl::InfinitePast()) {
        // A pull made in this process sets last_pull, recorded or not.
        never_pulled = std::min(never_pulled, b->row.created);
      }
      if (b->unrecorded_served.has_value()) {
        served_through = std::min(served_through, *b->unrecorded_served);
      }
    }
  }
  if (never_pulled != absl::InfiniteFuture()) {
    absl::StatusOr<int64_t> first = store_->FirstBouncerDeletionAfter(never_pulled);
    if (!first.ok()) return first.status();
    if (*first > 0) served_through = std::min(served_through, *first - 1);
  }
  if (trim_hook_) trim_hook_();
  absl::StatusOr<int64_t> forgotten = store_->TrimBouncerChanges(
      served_through, clock_.TimeNow() - FromProto(config_.deletion_retention()),
      static_cast<int64_t>(config_.max_deletions()));
  if (!forgotten.ok()) return forgotten;
  absl::StatusOr<BouncerLogMeta> meta = store_->LoadBouncerLogMeta();
  absl::MutexLock lock(&mu_);
  // Never lowered: dropped changes raised it in memory only (and may have meanwhile).
  if (meta.ok()) trimmed_through_ = std::max(trimmed_through_, meta->trimmed_through);
  return forgotten;
}

void BouncerApi::RefreshStaleness() {
  const absl::Time now = clock_.TimeNow();
  absl::MutexLock lock(&mu_);
  for (const auto& [name, b] : bouncers_) {
    const absl::Time last =
        b->row.last_pull == absl::InfinitePast() ? b->row.created : b->row.last_pull;
    b->since_last_pull->Set(absl::ToDoubleSeconds(now - last));
  }
}

absl::Status BouncerApi::Start() {
  const std::string& listen = config_.listen();
  const size_t colon = listen.rfind(':');
  int port = 0;
  (void)absl::SimpleAtoi(listen.substr(colon + 1), &port);  // validated at Create
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  const palisade::v1::TlsConfig& tls = config_.tls();
  // What one request may send: its target, and headers as bouncers send them with room to
  // spare (BoundedStream). It must arrive whole by its deadline, on the API's clock: past it
  // the server answers 408, counted as refused (reason "timeout").
  BoundedHttpOptions options;
  options.request_budget = config_.max_query_bytes() + kMaxHeaderBytes;
  options.now = [this] { return clock_.TimeNow(); };
  prometheus::Counter* timeouts = &refused_->Add({{"reason", "timeout"}});
  options.on_deadline = [timeouts] { timeouts->Increment(); };
  // One peer address (an IPv6 /64) served on max_connections_per_address workers at most: a
  // worker waits for a silent connection's first byte (the keep-alive wait) and a request sent
  // a byte at a time until its deadline, so any peer that reaches the listener, with no key,
  // could otherwise hold every worker and the queue behind them, and no bouncer would get a
  // block or a withdrawal. The default (half the workers) leaves a live-mode bouncer's parallel
  // ?ip= questions room. Loopback peers are not limited: every local user connects from any
  // 127.x.y.z, so a limit per address stops none of them and only lets one starve the
  // co-located bouncers (2 silent connections from 127.0.0.1 closed every local pull unread).
  const size_t threads = config_.max_concurrent_requests();
  prometheus::Counter* address_busy = &refused_->Add({{"reason", "address_busy"}});
  if (config_.max_connections_per_address() > 0) {
    options.max_connections_per_address = config_.max_connections_per_address();
    options.on_address_refused = [address_busy] { address_busy->Increment(); };
    options.exempt_from_address_limit = loopback_peer_ ? loopback_peer_ : IsLoopbackPeer;
  }
  if (!tls.cert_file().empty()) {
    for (const std::string* f : {&tls.cert_file(), &tls.key_file(), &tls.client_ca_file()}) {
      if (!f->empty() && !std::ifstream(*f)) {
        return absl::NotFoundError(absl::StrCat("bouncer_api.tls: cannot read \"", *f, "\""));
      }
    }
    server_ = MakeBoundedHttpsServer(
        std::move(options), tls.cert_file().c_str(), tls.key_file().c_str(),
        tls.client_ca_file().empty() ? nullptr : tls.client_ca_file().c_str());
    if (!server_->is_valid()) {
      return absl::InvalidArgumentError("bouncer_api.tls: the certificate or key does not load");
    }
  } else {
    server_ = MakeBoundedHttpServer(std::move(options));
  }
  // A bounded backlog (httplib 0.11's own pool queues connections without a bound): past
  // four waiting connections per worker, further ones wait in the kernel's listen backlog.
  server_->new_task_queue = [threads] { return new BoundedTaskQueue(threads, 4 * threads); };
  server_->set_read_timeout(10, 0);
  server_->set_write_timeout(10, 0);
  server_->set_keep_alive_timeout(30);
  // One request a connection: a worker waits for a connection's next request in between (the
  // keep-alive wait), so idle connections kept alive held every worker, with no key needed.
  // Stream bouncers pull every 10 s; a live one opens a connection per question.
  server_->set_keep_alive_max_count(1);
  server_->set_tcp_nodelay(true);
  server_->set_payload_max_length(1024);  // bouncers send no body
  BouncerApi* self = this;
  // Every request is answered here, before httplib routes it or reads a body.
  server_->set_pre_routing_handler([self](const httplib::Request& req, httplib::Response& res) {
    BouncerRequest r;
    r.method = req.method;
    r.path = req.path;
    r.target_bytes = req.target.size();
    r.params.insert(req.params.begin(), req.params.end());
    r.api_key = req.get_header_value("X-Api-Key");
    r.address = req.remote_addr;
    r.user_agent = req.get_header_value("User-Agent");
    r.ranged = req.has_header("Range");
    PendingReply answer = self->Answer(r);
    BouncerReply& reply = answer.reply;
    res.status = reply.status;
    if (answer.settle) {
      // A pull is recorded only once its answer was written whole: httplib calls the releaser
      // when the response is done with, `success` false when a write failed. Its loop over the
      // provider also ends once the server is stopping, which it may take for a success: so
      // the bytes handed over are counted too. An answer cut off is served again next pull.
      // Gzipped here when asked (Go's client asks by default): httplib compresses set_content
      // answers, not those of a content provider with a length. (Its chunked provider would be
      // compressed and never ranged, but answers without the Content-Length that CrowdSec's
      // recorded answers carry, tests/e2e/testdata/crowdsec.)
      if (AcceptsGzip(req.get_header_value("Accept-Encoding")) && reply.body.size() > 1024) {
        if (absl::StatusOr<std::string> gz = GzipAnswer(reply.body); gz.ok()) {
          reply.body = *std::move(gz);
          res.set_header("Content-Encoding", "gzip");
        }
      }
      auto body = std::make_shared<const std::string>(std::move(reply.body));
      auto written = std::make_shared<size_t>(0);
      auto settle = std::make_shared<std::function<absl::Status(bool)>>(std::move(answer.settle));
      res.set_content_provider(
          body->size(), reply.content_type,
          [body, written](size_t offset, size_t length, httplib::DataSink& sink) {
            // In pieces: a stop is seen between two (a piece waits at most the write timeout).
            // Never past the answer, whatever is asked.
            if (offset >= body->size()) return false;
            const size_t n = std::min({length, kAnswerPieceBytes, body->size() - offset});
            if (!sink.write(body->data() + offset, n)) return false;
            *written = offset + n;
            return true;
          },
          [body, written, settle](bool success) {
            if (*settle == nullptr) return;  // settled once (a copied Response calls it again)
            (void)(*settle)(success && *written == body->size());
            *settle = nullptr;
          });
    } else if (!reply.body.empty()) {
      res.set_content(std::move(reply.body), reply.content_type.c_str());
    } else if (!reply.content_type.empty()) {
      res.set_header("Content-Type", reply.content_type);
    }
    return httplib::Server::HandlerResponse::Handled;
  });
  port_ =
      port == 0 ? server_->bind_to_any_port(host) : (server_->bind_to_port(host, port) ? port : -1);
  if (port_ <= 0) {
    return absl::UnavailableError(absl::StrCat("bouncer_api: cannot listen on ", listen));
  }
  httplib::Server* server = server_.get();
  server_thread_ = std::thread([server] { server->listen_after_bind(); });
  ticker_ = std::thread([this] {
    int ticks = 0;
    while (!stopping_.WaitForNotificationWithTimeout(absl::Seconds(1))) {
      RefreshStaleness();
      bool rebuild = false;
      {
        absl::MutexLock lock(&mu_);
        ReleaseDueLocked();
        (void)FlushLocked();  // at most a second of changes waits in memory
        RecordUnrecordedLocked();
        rebuild = rebuild_;
      }
      if (rebuild) {
        absl::MutexLock pull(&pull_mu_);
        (void)CatchUp();
      }
      FoldIfLarge();
      if (++ticks % 60 == 0) {
        absl::StatusOr<int64_t> trimmed = Trim();
        if (!trimmed.ok()) Log(absl::StrCat("bouncer_api: ", trimmed.status().message()));
      }
    }
  });
  return absl::OkStatus();
}

void BouncerApi::Stop() {
  if (!stopping_.HasBeenNotified()) stopping_.Notify();
  if (server_ != nullptr) server_->stop();
  if (server_thread_.joinable()) server_thread_.join();
  if (ticker_.joinable()) ticker_.join();
  absl::MutexLock lock(&mu_);
  (void)FlushLocked();
  RecordUnrecordedLocked();
  // The live questions' last pulls not stored yet (and the refused pulls still refused).
  for (auto& [name, b] : bouncers_) {
    if (!b->pull_unstored) continue;
    const BouncerRow& row = b->row;
    absl::Status s =
        store_->RecordPull(row.name, row.last_pull, row.address, row.user_agent, row.position);
    if (s.ok()) {
      b->stored_pull = row.last_pull;
      b->pull_unstored = false;
    } else {
      Log(absl::StrCat("bouncer_api: ", s.message()));
    }
  }
}

}  // namespace palisade
