#include "services/server/config.h"

#include <algorithm>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>
#include <vector>

#include <unistd.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "services/bouncer_api/bouncer_api_config.h"
#include "services/cluster/nats_client.h"
#include "services/common/fingerprint.h"
#include "services/common/ip.h"
#include "services/common/parallel.h"
#include "services/common/proto_time.h"
#include "services/decisions/decision_table.h"
#include "services/formats/json_parser.h"
#include "services/formats/line_parser.h"
#include "services/server/auth.h"
#include "services/server/metrics_https.h"

namespace palisade {
namespace {

std::string RedactSecretWords(absl::string_view message);

class FirstError : public google::protobuf::io::ErrorCollector {
 public:
  explicit FirstError(std::string file) : file_(std::move(file)) {}
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (first_.empty()) {
      first_ = absl::StrCat(file_, ":", line + 1, ":", column + 1, ": ",
                            RedactSecretWords(message));
    }
  }
  const std::string& first() const { return first_; }

 private:
  std::string file_;
  std::string first_;
};

absl::Status CheckListen(const std::string& file, const std::string& field,
                         const std::string& value) {
  if (value == "off" && field == "metrics_listen") return absl::OkStatus();
  size_t colon = value.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(value.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": ", field, ": \"", value,
                                                   "\" is not host:port (e.g. 127.0.0.1:50051)"));
  }
  return absl::OkStatus();
}

// `size` lowercase hex characters: Cloudflare ids (32), token SHA-256 hashes (64).
bool LowerHex(const std::string& s, size_t size) {
  if (s.size() != size) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

constexpr uint64_t kMinMaxParsedBytes = uint64_t{1} << 20;

// A journal input's name is unique among the file, syslog and journal inputs (its metrics and
// cursor are keyed by it); a Logpush input's among the Logpush inputs.
absl::Status CheckInputNames(const std::string& file, const palisade::v1::InputsConfig& inputs) {
  std::set<std::string> names;
  for (const auto& f : inputs.files()) names.insert(f.name());
  for (const auto& s : inputs.syslog()) names.insert(s.name());
  for (int i = 0; i < inputs.journal_size(); ++i) {
    if (!names.insert(inputs.journal(i).name()).second) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": inputs.journal[", i, "] (\"",
                                                     inputs.journal(i).name(),
                                                     "\"): the name is used by another input"));
    }
  }
  std::set<std::string> logpush;
  for (const auto& l : inputs.logpush()) {
    if (!logpush.insert(l.name()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": inputs.logpush \"", l.name(), "\": the name is used twice"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateFeeds(const std::string& file, palisade::v1::Config* config) {
  std::set<std::string> names;
  for (int i = 0; i < config->feeds_size(); ++i) {
    const palisade::v1::FeedConfig& feed = config->feeds(i);
    auto error = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": feeds[", i, "] (\"", feed.name(),
                                                     "\"): ", why));
    };
    if (feed.name().empty() || !std::all_of(feed.name().begin(), feed.name().end(), [](char c) {
          return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_' || c == '-' ||
                 c == '.';
        })) {
      return error("name must be [a-z0-9_.-]+");
    }
    if (!names.insert(feed.name()).second) return error("name is used twice");
    if (feed.format() == palisade::v1::FEED_FORMAT_UNSPECIFIED) return error("format is required");
    if (!feed.url().empty() && !absl::StartsWith(feed.url(), "http://") &&
        !absl::StartsWith(feed.url(), "https://") && !absl::StartsWith(feed.url(), "file://")) {
      return error("url must be http://, https:// or file:// (or empty for a pushed feed)");
    }
    // 0 cannot mean "off": proto3 reads a config that leaves the field out as 0, and such configs
    // mean the default (0.1). -1 says "off"; another negative is taken for a mistake.
    if (feed.min_keep_ratio() != -1 && (feed.min_keep_ratio() < 0 || feed.min_keep_ratio() > 1)) {
      return error(absl::StrCat("min_keep_ratio ", feed.min_keep_ratio(),
                                " is not in 0..1 (0 takes the default, 0.1); -1 turns the shrink "
                                "guard off"));
    }
    // The same convention; a ratio under 1 would hold every version past the guard's floor.
    if (const double r = feed.max_growth_ratio(); r != -1 && r != 0 && r < 1) {
      return error(absl::StrCat("max_growth_ratio ", r,
                                " is under 1 (0 takes the default, 10); -1 turns the growth "
                                "guard off"));
    }
    if (feed.has_interval() && feed.interval().seconds() < 10) {
      return error("interval must be >= 10s");
    }
    if (feed.min_confidence() > 100) return error("min_confidence must be <= 100");
    if (feed.min_prefix_v4() > 32) return error("min_prefix_v4 must be <= 32");
    if (feed.min_prefix_v6() > 128) return error("min_prefix_v6 must be <= 128");
    // 0 is the feed manager's default (FeedParseOptions::kDefaultMaxParsedBytes). Under 1 MiB
    // (~14,000 addresses) is taken for a unit mistake (MiB written as bytes), which would refuse
    // every version the feed sends.
    if (feed.max_parsed_bytes() != 0 && feed.max_parsed_bytes() < kMinMaxParsedBytes) {
      return error(absl::StrCat("max_parsed_bytes ", feed.max_parsed_bytes(), " is under 1 MiB (",
                                kMinMaxParsedBytes, "); 0 takes the default, 256 MiB"));
    }
    // Stated here, not only in the manager: Feeds.Push refuses a push past it while it streams.
    if (feed.max_bytes() == 0) config->mutable_feeds(i)->set_max_bytes(64ull << 20);
  }
  // (feed_edge_max_entries' default is set by ValidateFeedEdgeRoom, once the list's is known.)
  return absl::OkStatus();
}

// The IP list is shared: rule and manual bans of the IP-list actuator go in beside the feeds'
// ranges, first come first served (services/actions/actuators.cc), and a ban refused at the
// list's cap fails for good. When feed ranges reach the list (Cloudflare on, a to_edge feed),
// the feeds may take it only up to a reserve for those bans: a tenth of list_max_items (at
// least 1). With the defaults that is 1,000 items, over a quarter of an hour of new bans at
// the guard's full default rate (60 a minute); a fraction, not a count, so that a small list
// keeps room for both. Unset, feed_edge_max_entries takes the room there is. Where
// no feed range reaches the list it bounds only the bouncers' set: default 10000, no ceiling.
absl::Status ValidateFeedEdgeRoom(const std::string& file, palisade::v1::Config* config) {
  const palisade::v1::CloudflareConfig& cf = config->cloudflare();
  const bool to_list =
      cf.enabled() && std::any_of(config->feeds().begin(), config->feeds().end(),
                                  [](const palisade::v1::FeedConfig& f) { return f.to_edge(); });
  if (!to_list) {
    if (config->feed_edge_max_entries() == 0) config->set_feed_edge_max_entries(10000);
    return absl::OkStatus();
  }
  const uint32_t reserve = std::max<uint32_t>(1, cf.list_max_items() / 10);
  const uint32_t room = cf.list_max_items() > reserve ? cf.list_max_items() - reserve : 0;
  if (room == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": cloudflare.list_max_items ", cf.list_max_items(),
        " leaves the to_edge feeds no room (feed_edge_max_entries) beside the reserve of ",
        reserve, " kept for rule and manual bans; raise it, or take to_edge off the feeds"));
  }
  if (config->feed_edge_max_entries() == 0) {
    config->set_feed_edge_max_entries(room);
  } else if (config->feed_edge_max_entries() > room) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": feed_edge_max_entries ", config->feed_edge_max_entries(),
        " leaves too little of cloudflare.list_max_items ", cf.list_max_items(),
        " for rule and manual bans, which a full list refuses for good: at most ", room,
        " (list_max_items less a tenth kept for them)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateSinks(const std::string& file, palisade::v1::Config* config) {
  std::set<std::string> names;
  for (int i = 0; i < config->sinks_size(); ++i) {
    const palisade::v1::SinkConfig& sink = config->sinks(i);
    auto error = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": sinks[", i, "] (\"", sink.name(), "\"): ", why));
    };
    if (sink.name().empty() || !names.insert(sink.name()).second) {
      return error("every sink needs a name of its own");
    }
    if (sink.kind_case() == palisade::v1::SinkConfig::KIND_NOT_SET) {
      return error("set ecs_file or cef_syslog");
    }
    if (sink.has_ecs_file() && sink.ecs_file().path().empty()) return error("ecs_file.path is required");
    if (sink.has_cef_syslog() && sink.cef_syslog().address().empty()) {
      return error("cef_syslog.address is required");
    }
    for (const std::string& k : sink.kinds()) {
      if (k != "detection" && k != "decision" && k != "action" && k != "alert") {
        return error(
            absl::StrCat("kinds: \"", k, "\" is not detection, decision, action or alert"));
      }
    }
  }
  return absl::OkStatus();
}

// An https:// URL, or an http:// one whose host is localhost or a loopback address: the token
// goes in clear only on this machine. The host is read from the URL's authority (a prefix match
// took "http://localhost.example" and "http://127.0.0.1@proxy.example"); user-info is refused.
bool ApiBaseAllowed(absl::string_view url) {
  absl::string_view rest = url;
  const bool https = absl::ConsumePrefix(&rest, "https://");
  if (!https && !absl::ConsumePrefix(&rest, "http://")) return false;
  absl::string_view host = rest.substr(0, rest.find_first_of("/?#"));
  if (host.empty() || absl::StrContains(host, '@')) return false;
  if (https) return true;
  absl::string_view port;
  if (absl::ConsumePrefix(&host, "[")) {
    const size_t close = host.find(']');
    if (close == absl::string_view::npos) return false;
    port = host.substr(close + 1);
    host = host.substr(0, close);
    if (!port.empty() && !absl::ConsumePrefix(&port, ":")) return false;
  } else if (const size_t colon = host.rfind(':'); colon != absl::string_view::npos) {
    port = host.substr(colon + 1);
    host = host.substr(0, colon);
  }
  int port_number = 0;
  if (!port.empty() && (!std::all_of(port.begin(), port.end(), absl::ascii_isdigit) ||
                        !absl::SimpleAtoi(port, &port_number) || port_number < 1 ||
                        port_number > 65535)) {
    return false;
  }
  if (absl::EqualsIgnoreCase(host, "localhost")) return true;
  const std::optional<IpAddress> ip = IpAddress::Parse(host);
  static const Cidr kLoopbackV4 = *Cidr::Parse("127.0.0.0/8");
  static const Cidr kLoopbackV6 = *Cidr::Parse("::1/128");
  return ip && (kLoopbackV4.Contains(*ip) || kLoopbackV6.Contains(*ip));
}

// Whether a value written where a secret's file or variable goes looks like the secret itself:
// a token shape the engine redacts (FindTokenShapes: cfut_/cfat_ tokens, a value after
// "Bearer"), a classic API token (40 of [A-Za-z0-9_-], unprefixed: upper and lower case and
// digits, which no file or variable name mixes at that length), or a Global API Key (37 hex).
// Past the token shapes, a value with a '.' in it is taken for a path, and one with a '/' too
// unless it also has a '+' or an '=': 32+ characters of base64 (a Logpush secret made with
// `openssl rand -base64 32`), which file and variable names of that length do not hold.
bool LooksLikeSecret(absl::string_view value) {
  if (!FindTokenShapes(value).empty()) return true;
  // The Authorization header value Logpush sends ("Bearer <secret>").
  if (value.size() > 7 && absl::StartsWithIgnoreCase(value, "bearer") &&
      absl::ascii_isspace(static_cast<unsigned char>(value[6]))) {
    return true;
  }
  if (value.size() < 32 || value.size() > 120) return false;
  if (value.find_first_of("+=") != absl::string_view::npos &&
      std::all_of(value.begin(), value.end(), [](char c) {
        return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' ||
               c == '=' || c == '_' || c == '-';
      })) {
    return true;
  }
  bool upper_case = false, lower_case = false, digit = false, hex = true;
  for (char c : value) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (!absl::ascii_isalnum(u) && c != '_' && c != '-') return false;
    upper_case |= absl::ascii_isupper(u);
    lower_case |= absl::ascii_islower(u);
    digit |= absl::ascii_isdigit(u);
    hex &= absl::ascii_isxdigit(u) != 0;
  }
  return (upper_case && lower_case && digit) || (hex && digit && (upper_case || lower_case));
}

// The text parser quotes the token it stopped at ("Expected string, got: X", "has no field named
// \"X\""): a secret typed unquoted where its file goes, or on a line of its own, would reach the
// log and the Admin reload reply, and CheckSecretReference would never see it. The token shapes,
// and every word (a run of [A-Za-z0-9_+/=-], or a '/'-separated part of one) LooksLikeSecret
// flags, are shown as their fingerprints; the rest (a misspelt field name) is kept for the
// operator. (A token the tokenizer cuts, at a '-' or a '+', is quoted up to the cut only.)
std::string RedactSecretWords(absl::string_view message) {
  std::string text;
  if (!RedactTokenShapes(message, &text)) text = std::string(message);
  auto shown = [](absl::string_view word) {
    return LooksLikeSecret(word) ? absl::StrCat("[token ", Fingerprint(word), "]")
                                 : std::string(word);
  };
  auto in_word = [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' ||
           c == '+' || c == '/' || c == '=';
  };
  std::string out;
  for (size_t i = 0; i < text.size();) {
    if (!in_word(text[i])) {
      out.push_back(text[i++]);
      continue;
    }
    size_t end = i;
    while (end < text.size() && in_word(text[end])) ++end;
    const absl::string_view word = absl::string_view(text).substr(i, end - i);
    if (LooksLikeSecret(word)) {
      absl::StrAppend(&out, shown(word));
    } else {
      std::vector<std::string> parts = absl::StrSplit(word, '/');
      for (std::string& part : parts) part = shown(part);
      absl::StrAppend(&out, absl::StrJoin(parts, "/"));
    }
    i = end;
  }
  return out;
}

// token_env is a variable's name, and the *_file fields paths: an operator who writes the token
// there would see it in the next message that names the field's value ("token file PATH cannot
// be read", "environment variable NAME is not set"), in the log. Refused here, naming the field
// and never the value.
absl::Status CheckSecretReference(const std::string& file, absl::string_view field,
                                  absl::string_view value, bool env_name) {
  if (value.empty()) return absl::OkStatus();
  if (env_name) {
    const bool name = (absl::ascii_isalpha(static_cast<unsigned char>(value[0])) ||
                       value[0] == '_') &&
                      std::all_of(value.begin(), value.end(), [](char c) {
                        return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_';
                      });
    if (!name || LooksLikeSecret(value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          file, ": ", field,
          ": must be the name of an environment variable ([A-Za-z_][A-Za-z0-9_]*) that holds the "
          "token; the value is not shown, as it may be the token itself"));
    }
    return absl::OkStatus();
  }
  if (LooksLikeSecret(value)) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": ", field,
        ": looks like the secret itself, not the path of a file that holds it (the value is not "
        "shown); write the secret to a file only its owner reads (chmod 600) and name the file "
        "here (a file name of that shape: write it as ./NAME)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateCloudflare(const std::string& file, palisade::v1::CloudflareConfig* cf) {
  // Before the enabled check: a block that is off still has the value in the config file.
  for (const auto& [field, value, env] :
       {std::tuple<const char*, const std::string&, bool>{"cloudflare.token_env",
                                                          cf->token_env(), true},
        {"cloudflare.token_file", cf->token_file(), false},
        {"cloudflare.api_key_file", cf->api_key_file(), false}}) {
    if (absl::Status s = CheckSecretReference(file, field, value, env); !s.ok()) return s;
  }
  if (!cf->enabled()) return absl::OkStatus();
  auto error = [&file](absl::string_view field, absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": cloudflare.", field, ": ", why));
  };
  if (cf->api_base().empty()) cf->set_api_base("https://api.cloudflare.com/client/v4");
  // (Not echoed: a URL may hold a user and password.)
  if (!ApiBaseAllowed(cf->api_base())) {
    return error("api_base", "must be https://, or http:// to localhost or a loopback address "
                             "(the emulator), with no user@ before the host");
  }
  if (!LowerHex(cf->account_id(), 32)) return error("account_id", "must be 32 lowercase hex characters");
  if (!LowerHex(cf->zone_id(), 32)) return error("zone_id", "must be 32 lowercase hex characters");
  // Which credential (LoadCredentials' rules): checked here, as Edge::Start runs in a cluster
  // only once the node holds the edge-writer lease.
  const bool token = !cf->token_file().empty() || !cf->token_env().empty();
  if (!cf->email().empty() || !cf->api_key_file().empty()) {
    if (!cf->allow_global_api_key()) {
      return error("allow_global_api_key",
                   "the Global API Key (email + api_key_file) is refused; use an API token "
                   "(token_file or token_env), or set allow_global_api_key: true to accept the "
                   "risk");
    }
    if (cf->email().empty() || cf->api_key_file().empty()) {
      return error(cf->email().empty() ? "email" : "api_key_file",
                   "the Global API Key needs both email and api_key_file");
    }
    if (token) {
      return error(cf->token_file().empty() ? "token_env" : "token_file",
                   "set an API token or the Global API Key, not both");
    }
  }
  if (!token && cf->api_key_file().empty()) {
    return error("token_file", "set token_file or token_env (the token is never in this file)");
  }
  // Checked here, not first by Edge::Start: in a cluster that runs only once the node wins the
  // edge-writer lease, and a refusal then left the cluster writing with no edge.
  if (cf->has_rotation()) {
    if (cf->token_file().empty()) {
      return error("rotation", "needs the token from token_file (a rolled secret is written "
                               "back there; one from token_env or a global key cannot be)");
    }
    if (FromProtoDuration(cf->rotation().interval()) < absl::Seconds(1)) {
      return error("rotation.interval", "must be at least 1s");
    }
  }
  if (cf->has_check_interval()) {
    const absl::Duration d = FromProtoDuration(cf->check_interval());
    if (d != absl::ZeroDuration() && d < absl::Seconds(1)) {
      return error("check_interval",
                   absl::StrCat("must be 0s (off) or at least 1s, not ", absl::FormatDuration(d)));
    }
  }
  if (cf->access_rule_scope().empty()) cf->set_access_rule_scope("zone");
  if (cf->access_rule_scope() != "zone" && cf->access_rule_scope() != "account") {
    return error("access_rule_scope", "must be \"zone\" or \"account\"");
  }
  if (cf->list_name().empty()) cf->set_list_name("palisade_block");
  for (char c : cf->list_name()) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_')) {
      return error("list_name", "must match [A-Za-z0-9_]+");
    }
  }
  // The tag goes into notes, comments and ruleset refs, after an '@' or a '_': no '_' or '@' in
  // it, or "palisade_<id>_<instance>" would parse ambiguously.
  if (cf->instance().size() > 32) {
    return error("instance", absl::StrCat("must be at most 32 characters, not ",
                                          cf->instance().size()));
  }
  for (char c : cf->instance()) {
    if (!(absl::ascii_islower(static_cast<unsigned char>(c)) ||
          absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '-')) {
      return error("instance", "must match [a-z0-9-]* (empty: untagged)");
    }
  }
  if (cf->list_max_items() == 0) cf->set_list_max_items(10000);
  if (cf->list_ipv6_prefix() == 0) cf->set_list_ipv6_prefix(64);
  // IPv6 list items are limited to /64 or wider (cloudflare-api.md, corrections 8).
  if (cf->list_ipv6_prefix() < 12 || cf->list_ipv6_prefix() > 64) {
    return error("list_ipv6_prefix", "must be 12..64 (IPv6 list items are /64 or wider)");
  }
  if (cf->budget_requests() == 0) cf->set_budget_requests(1200);
  if (!cf->has_budget_window()) cf->mutable_budget_window()->set_seconds(300);
  if (!cf->has_request_timeout()) cf->mutable_request_timeout()->set_seconds(10);
  if (!cf->has_flush_interval()) cf->mutable_flush_interval()->set_seconds(1);
  if (!cf->has_reconcile_interval()) cf->mutable_reconcile_interval()->set_seconds(300);
  if (!cf->has_retry_initial_backoff()) cf->mutable_retry_initial_backoff()->set_seconds(1);
  if (!cf->has_audit_logs_interval()) cf->mutable_audit_logs_interval()->set_seconds(60);
  // The client takes the budget as an int.
  if (cf->budget_requests() > static_cast<uint32_t>(std::numeric_limits<int>::max())) {
    return error("budget_requests", absl::StrCat(cf->budget_requests(), " is more than ",
                                                 std::numeric_limits<int>::max()));
  }
  // A set duration of 0 is no default: a request timeout of 0 is curl's "never", flush and
  // reconcile intervals of 0 loop without a pause, a budget window of 0 is no budget. (The
  // reconcile floor admits the e2e tests' 300 ms.)
  struct Bounds {
    const char* field;
    const google::protobuf::Duration& value;
    absl::Duration least, most;
  };
  for (const Bounds& b : {
           Bounds{"request_timeout", cf->request_timeout(), absl::Seconds(1), absl::Minutes(5)},
           Bounds{"flush_interval", cf->flush_interval(), absl::Milliseconds(10), absl::Minutes(1)},
           Bounds{"reconcile_interval", cf->reconcile_interval(), absl::Milliseconds(100),
                  absl::Hours(24)},
           Bounds{"budget_window", cf->budget_window(), absl::Seconds(1), absl::Hours(24)},
           Bounds{"retry_initial_backoff", cf->retry_initial_backoff(), absl::Milliseconds(10),
                  absl::Seconds(30)},
           // The floor admits the e2e tests' quick polls; each poll is at least one API call.
           Bounds{"audit_logs_interval", cf->audit_logs_interval(), absl::Milliseconds(100),
                  absl::Hours(1)},
       }) {
    const absl::Duration d = FromProtoDuration(b.value);
    if (d < b.least || d > b.most) {
      return error(b.field, absl::StrCat(absl::FormatDuration(d), " is not within ",
                                         absl::FormatDuration(b.least), "..",
                                         absl::FormatDuration(b.most)));
    }
  }
  if (cf->drift_policy().empty()) cf->set_drift_policy("recreate");
  if (cf->drift_policy() != "recreate" && cf->drift_policy() != "withdraw") {
    return error("drift_policy", "must be \"recreate\" or \"withdraw\"");
  }
  // Rate limiting by plan (cloudflare-api.md §4.3, corrections 6): Free takes only a 10 s period
  // and a 10 s timeout; Pro up to 60 s / 1 h; Business 600 s / 1 day; Enterprise any allowed
  // value. Rules are made with action "block", so a timeout of 0 (throttle) is allowed above Free.
  if (cf->plan().empty()) cf->set_plan("free");
  const std::string& plan = cf->plan();
  if (plan != "free" && plan != "pro" && plan != "business" && plan != "enterprise") {
    return error("plan", "must be \"free\", \"pro\", \"business\" or \"enterprise\"");
  }
  const bool free = plan == "free";
  if (cf->ratelimit_period() == 0) cf->set_ratelimit_period(free ? 10 : 60);
  if (cf->ratelimit_requests_per_period() == 0) cf->set_ratelimit_requests_per_period(10);
  if (!cf->has_ratelimit_mitigation_timeout()) {
    cf->set_ratelimit_mitigation_timeout(free ? 10 : 600);
  }
  static const std::set<uint32_t> kPeriods = {10, 60, 120, 300, 600, 3600};
  static const std::set<uint32_t> kTimeouts = {0, 10, 60, 120, 300, 600, 3600, 86400};
  if (!kPeriods.count(cf->ratelimit_period())) {
    return error("ratelimit_period", "must be one of 10, 60, 120, 300, 600, 3600");
  }
  if (!kTimeouts.count(cf->ratelimit_mitigation_timeout())) {
    return error("ratelimit_mitigation_timeout",
                 "must be one of 0, 10, 60, 120, 300, 600, 3600, 86400");
  }
  const uint32_t max_period = free ? 10 : plan == "pro" ? 60 : plan == "business" ? 600 : 3600;
  const uint32_t max_timeout = free ? 10 : plan == "pro" ? 3600 : 86400;
  if (free && cf->ratelimit_period() != 10) {
    return error("ratelimit_period", "must be 10 on the free plan (set cloudflare.plan if the "
                                     "zone is on another)");
  }
  if (free && cf->ratelimit_mitigation_timeout() != 10) {
    return error("ratelimit_mitigation_timeout",
                 "must be 10 on the free plan (set cloudflare.plan if the zone is on another)");
  }
  if (cf->ratelimit_period() > max_period) {
    return error("ratelimit_period", absl::StrCat("must be at most ", max_period, " on the ",
                                                  plan, " plan"));
  }
  if (cf->ratelimit_mitigation_timeout() > max_timeout) {
    return error("ratelimit_mitigation_timeout",
                 absl::StrCat("must be at most ", max_timeout, " on the ", plan, " plan"));
  }
  return absl::OkStatus();
}

// The ingress caps (api.max_*) and the /metrics tokens: defaults and ranges.
absl::Status ValidateIngress(const std::string& file, palisade::v1::Config* config) {
  palisade::v1::ApiConfig* api = config->mutable_api();
  auto error = [&file](absl::string_view field, absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": ", field, ": ", why));
  };
  if (api->max_records_per_batch() == 0) api->set_max_records_per_batch(10'000);
  if (api->max_message_bytes() == 0) api->set_max_message_bytes(16u << 20);
  if (api->max_streams_per_connection() == 0) api->set_max_streams_per_connection(16);
  if (api->max_streams() == 0) api->set_max_streams(64);
  if (api->max_records_per_batch() > 1'000'000) {
    return error("api.max_records_per_batch", "must be at most 1,000,000");
  }
  if (api->max_message_bytes() < (64u << 10) || api->max_message_bytes() > (64u << 20)) {
    return error("api.max_message_bytes", "must be 64 KiB..64 MiB (65536..67108864)");
  }
  if (api->max_streams_per_connection() > 1000) {
    return error("api.max_streams_per_connection", "must be at most 1000");
  }
  if (api->max_streams() > 10'000) return error("api.max_streams", "must be at most 10,000");
  // Who may call: checked here with the rest, not first when the gRPC server is built (after
  // the other listeners opened), and named by the file.
  // A token listed twice would take the roles of whichever entry the authorizer meets last: a
  // copy-pasted entry silently promoting or demoting it.
  std::map<std::string, int> client_of_token;
  for (int i = 0; i < api->clients_size(); ++i) {
    const palisade::v1::ApiClient& c = api->clients(i);
    const std::string field = absl::StrCat("api.clients[", i, "] (\"", c.name(), "\")");
    // The name is whose shipped positions and stream share a call uses; "" is the anonymous
    // client's (no api.clients). Entries of one name are one client (an old and a new token
    // during a rotation), so a name may repeat.
    if (c.name().empty()) {
      return error(absl::StrCat("api.clients[", i, "]"),
                   "name is required (whose shipped positions and stream share its calls use)");
    }
    if (!LowerHex(c.token_sha256(), 64)) {
      return error(field, "token_sha256 must be 64 lowercase hex characters (palisadectl "
                          "hash-token)");
    }
    if (auto [it, fresh] = client_of_token.emplace(c.token_sha256(), i); !fresh) {
      return error(field, absl::StrCat("token_sha256 is also api.clients[", it->second, "] (\"",
                                       api->clients(it->second).name(),
                                       "\")'s: one token, one client and its roles"));
    }
    if (std::none_of(c.roles().begin(), c.roles().end(), [](int r) {
          return r == palisade::v1::API_ROLE_INGEST || r == palisade::v1::API_ROLE_READ ||
                 r == palisade::v1::API_ROLE_ADMIN;
        })) {
      return error(field, "roles: at least one of API_ROLE_INGEST, API_ROLE_READ, API_ROLE_ADMIN");
    }
  }
  // A TLS block that cannot serve TLS is refused: served as it was, a key or a client CA
  // without a certificate left the listener in plain text and client certificates unasked for.
  for (const auto& [field, tls] : {std::pair<const char*, const palisade::v1::TlsConfig*>{
                                       "api.tls", &api->tls()},
                                   {"metrics_tls", &config->metrics_tls()}}) {
    if (tls->cert_file().empty() != tls->key_file().empty()) {
      return error(field, "cert_file and key_file go together");
    }
    if (!tls->client_ca_file().empty() && tls->cert_file().empty()) {
      return error(absl::StrCat(field, ".client_ca_file"),
                   "needs cert_file and key_file (mutual TLS is TLS)");
    }
  }
  const auto& tokens = config->metrics_auth().token_sha256();
  for (int i = 0; i < tokens.size(); ++i) {
    if (!LowerHex(tokens[i], 64)) {
      return error(absl::StrCat("metrics_auth.token_sha256[", i, "]"),
                   "must be 64 lowercase hex characters (palisadectl hash-token)");
    }
  }
  return absl::OkStatus();
}

// ParseConfig's work after the parse: defaults, checks (each error names `file` and the field),
// paths resolved against `base_dir`. DefaultConfig's too.
absl::StatusOr<palisade::v1::Config> CompleteConfig(palisade::v1::Config config,
                                                    const std::string& file,
                                                    const std::string& base_dir);

}  // namespace

palisade::v1::Config DefaultConfig(const std::string& rules_dir) {
  palisade::v1::Config config;
  config.add_rule_files(absl::StrCat(rules_dir, "/sshd.textproto"));
  config.add_rule_files(absl::StrCat(rules_dir, "/nginx.textproto"));
  config.add_rule_files(absl::StrCat(rules_dir, "/cloudflare-tokens.textproto"));
  // Through the defaults and checks a config file gets, so that the two never differ (they
  // did: the embedded defaults had no state_retention, and the hourly prune deleted every
  // ended decision). They are valid: config_test loads them.
  absl::StatusOr<palisade::v1::Config> completed =
      CompleteConfig(std::move(config), "the embedded defaults", "");
  return completed.ok() ? *std::move(completed) : palisade::v1::Config();
}

namespace {

// A cluster node id: [A-Za-z0-9_-], 1..64 bytes (it is a lease holder and a KV key part).
bool ValidNodeId(absl::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  }
  return true;
}

absl::Status ValidateCluster(const std::string& file, palisade::v1::ClusterConfig* cluster) {
  auto bad = [&file](const std::string& field, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": cluster.", field, ": ", why));
  };
  const auto& servers = cluster->nats().servers();
  if (servers.empty()) {
    return bad("nats.servers", "at least one NATS server is required (nats://host:port)");
  }
  for (int i = 0; i < servers.size(); ++i) {
    const std::string& url = servers[i];
    const bool scheme = absl::StartsWith(url, "nats://") || absl::StartsWith(url, "tls://");
    const size_t host = url.find("://");
    if (!scheme || host == std::string::npos || url.size() == host + 3 ||
        url.find_first_of(" \t\n,") != std::string::npos) {
      return bad(absl::StrCat("nats.servers[", i, "]"),
                 absl::StrCat("\"", cluster::RedactedServerUrl(url),
                              "\" is not a nats://host:port or tls://host:port URL"));
    }
  }
  if (cluster->node_id().empty()) cluster->set_node_id(DefaultNodeId());
  if (!ValidNodeId(cluster->node_id())) {
    return bad("node_id", absl::StrCat("\"", cluster->node_id(),
                                       "\" must be 1..64 characters of [A-Za-z0-9_-]"));
  }
  if (cluster->partitions() == 0) cluster->set_partitions(16);
  if (cluster->partitions() > 1024) {
    return bad("partitions", absl::StrCat(cluster->partitions(), " is more than 1024"));
  }
  if (!cluster->has_lease_term()) {
    *cluster->mutable_lease_term() = ToProtoDuration(absl::Seconds(15));
  }
  const absl::Duration term = FromProtoDuration(cluster->lease_term());
  if (term < absl::Seconds(3) || term > absl::Minutes(5)) {
    return bad("lease_term", absl::StrCat(absl::FormatDuration(term), " is not within 3s..5m"));
  }
  if (!cluster->has_matches_max_age()) {
    *cluster->mutable_matches_max_age() = ToProtoDuration(absl::Hours(24));
  }
  const absl::Duration max_age = FromProtoDuration(cluster->matches_max_age());
  if (max_age < absl::Hours(1) || max_age > absl::Hours(24 * 30)) {
    return bad("matches_max_age",
               absl::StrCat(absl::FormatDuration(max_age), " is not within 1h..30d"));
  }
  if (cluster->matches_max_bytes() == 0) cluster->set_matches_max_bytes(uint64_t{1} << 30);
  if (cluster->matches_max_bytes() < (uint64_t{64} << 20) ||
      cluster->matches_max_bytes() > (uint64_t{1} << 40)) {
    return bad("matches_max_bytes",
               absl::StrCat(cluster->matches_max_bytes(), " is not within 64 MiB..1 TiB"));
  }
  if (cluster->replicas() == 0) cluster->set_replicas(servers.size() >= 3 ? 3 : 1);
  if (cluster->replicas() != 1 && cluster->replicas() != 3) {
    return bad("replicas", absl::StrCat(cluster->replicas(), " is neither 1 nor 3"));
  }
  return absl::OkStatus();
}

}  // namespace

std::string DefaultNodeId() {
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') return "node";
  std::string id(host);
  id = id.substr(0, id.find('.'));
  for (char& c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') c = '-';
  }
  if (id.size() > 64) id.resize(64);
  return id.empty() ? "node" : id;
}

absl::StatusOr<palisade::v1::Config> ParseConfig(const std::string& text, const std::string& file,
                                                 const std::string& base_dir) {
  palisade::v1::Config config;
  google::protobuf::TextFormat::Parser parser;
  FirstError errors(file);
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &config)) {
    return absl::InvalidArgumentError(errors.first().empty() ? file + ": parse error"
                                                             : errors.first());
  }
  return CompleteConfig(std::move(config), file, base_dir);
}

namespace {

absl::StatusOr<palisade::v1::Config> CompleteConfig(palisade::v1::Config config,
                                                    const std::string& file,
                                                    const std::string& base_dir) {
  if (config.grpc_listen().empty()) config.set_grpc_listen("127.0.0.1:50051");
  if (config.metrics_listen().empty()) config.set_metrics_listen("127.0.0.1:9464");
  auto* engine = config.mutable_engine();
  if (engine->max_keys_per_rule() == 0) engine->set_max_keys_per_rule(1'000'000);
  if (engine->max_evidence() == 0) engine->set_max_evidence(5);
  if (engine->max_line_bytes() == 0) engine->set_max_line_bytes(16384);
  if (engine->max_evidence() > 100) {
    return absl::InvalidArgumentError(file + ": engine.max_evidence must be <= 100");
  }
  if (engine->max_line_bytes() < 64) {
    return absl::InvalidArgumentError(file + ": engine.max_line_bytes must be >= 64");
  }
  if (engine->max_record_bytes() == 0) {
    engine->set_max_record_bytes(std::max<uint32_t>(8 << 20, engine->max_line_bytes()));
  }
  if (engine->max_record_bytes() < engine->max_line_bytes() ||
      engine->max_record_bytes() > (64u << 20)) {
    return absl::InvalidArgumentError(
        file + ": engine.max_record_bytes must be engine.max_line_bytes..67108864");
  }
  if (engine->max_evidence_bytes() == 0) engine->set_max_evidence_bytes(2048);
  if (engine->max_evidence_bytes() < 256 || engine->max_evidence_bytes() > (1u << 20)) {
    return absl::InvalidArgumentError(file +
                                      ": engine.max_evidence_bytes must be 256..1048576");
  }
  if (engine->memory_budget_bytes() == 0) engine->set_memory_budget_bytes(uint64_t{1} << 30);
  if (engine->memory_budget_bytes() < (uint64_t{1} << 20)) {
    return absl::InvalidArgumentError(file +
                                      ": engine.memory_budget_bytes must be >= 1048576 (1 MiB)");
  }
  if (engine->max_sessions() == 0) engine->set_max_sessions(65'536);
  if (engine->max_sessions() > (1u << 24)) {
    return absl::InvalidArgumentError(file + ": engine.max_sessions must be <= 16777216");
  }
  if (engine->max_session_bytes() == 0) engine->set_max_session_bytes(uint64_t{16} << 20);
  if (engine->max_session_bytes() < (uint64_t{64} << 10)) {
    return absl::InvalidArgumentError(file +
                                      ": engine.max_session_bytes must be >= 65536 (64 KiB)");
  }
  if (!engine->has_session_ttl()) engine->mutable_session_ttl()->set_seconds(600);
  if (engine->session_ttl().seconds() < 1 || engine->session_ttl().seconds() > 86'400) {
    return absl::InvalidArgumentError(file + ": engine.session_ttl must be 1s..1d");
  }
  if (config.decisions_memory_budget_bytes() == 0) {
    config.set_decisions_memory_budget_bytes(DecisionTableLimits().max_active_bytes);
  }
  if (config.decisions_memory_budget_bytes() < (uint64_t{1} << 20)) {
    return absl::InvalidArgumentError(
        file + ": decisions_memory_budget_bytes must be >= 1048576 (1 MiB)");
  }
  palisade::v1::Ipv6FoldingConfig* fold = config.mutable_decisions_ipv6_folding();
  if (fold->addresses() == 0) fold->set_addresses(DecisionTableLimits().ipv6_fold_addresses);
  if (fold->addresses() < 2 || fold->addresses() > 1000) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": decisions_ipv6_folding.addresses must be 2..1000, not ",
                     fold->addresses()));
  }
  if (fold->prefix_length() == 0) fold->set_prefix_length(DecisionTableLimits().ipv6_fold_prefix);
  if (fold->prefix_length() != 48 && fold->prefix_length() != 64) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": decisions_ipv6_folding.prefix_length must be 48 or 64 (what "
                           "Cloudflare's IP access rules take), not ",
                     fold->prefix_length()));
  }
  if (!config.has_state_retention()) {
    *config.mutable_state_retention() = ToProtoDuration(absl::Hours(24 * 90));
  }
  if (const absl::Duration d = FromProtoDuration(config.state_retention());
      d < absl::Hours(24 * 30) || d > absl::Hours(24 * 3650)) {
    return absl::InvalidArgumentError(file + ": state_retention must be 30 days..10 years");
  }
  if (config.has_snapshot_interval()) {
    const absl::Duration d = FromProtoDuration(config.snapshot_interval());
    if (d < absl::Milliseconds(100) || d > absl::Hours(24)) {
      return absl::InvalidArgumentError(file + ": snapshot_interval must be 100ms..24h");
    }
  }
  if (config.inputs().has_poll_interval()) {
    const absl::Duration d = FromProtoDuration(config.inputs().poll_interval());
    if (d < absl::Milliseconds(10) || d > absl::Seconds(10)) {
      return absl::InvalidArgumentError(file + ": inputs.poll_interval must be 10ms..10s");
    }
  }
  if (config.inputs().batch_lines() > 100'000) {
    return absl::InvalidArgumentError(file + ": inputs.batch_lines must be <= 100000");
  }
  if (config.inputs().threads() > 4) {
    return absl::InvalidArgumentError(
        file + ": inputs.threads must be 0..4 (0: 2 on a machine with more than one core)");
  }
  if (!config.has_sweep_interval()) config.mutable_sweep_interval()->set_seconds(1);
  // Past a minute, bans would end that late and snapshots wait for the sweep.
  if (const absl::Duration d = FromProtoDuration(config.sweep_interval());
      d < absl::Milliseconds(1) || d > absl::Seconds(60)) {
    return absl::InvalidArgumentError(file + ": sweep_interval must be 1ms..60s");
  }
  for (int i = 0; i < config.allowlist_size(); ++i) {
    absl::StatusOr<Cidr> c = Cidr::Parse(config.allowlist(i));
    if (!c.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": allowlist[", i, "]: ", c.status().message()));
    }
  }
  for (const auto& [name, list] : config.cidr_sets()) {
    for (int i = 0; i < list.cidrs_size(); ++i) {
      absl::StatusOr<Cidr> c = Cidr::Parse(list.cidrs(i));
      if (!c.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(file, ": cidr_sets[\"", name, "\"][", i, "]: ", c.status().message()));
      }
    }
  }
  if (absl::StatusOr<absl::TimeZone> z = TimeZoneNamed(config.time_zone()); !z.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": time_zone: ", z.status().message()));
  }
  for (const auto& [source, zone] : config.source_time_zones()) {
    if (absl::StatusOr<absl::TimeZone> z = TimeZoneNamed(zone); !z.ok() || zone.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          file, ": source_time_zones[\"", source, "\"]: ",
          z.ok() ? "a zone name is required" : z.status().message()));
    }
  }
  // JSON lines mappings, and the file inputs that name one (issue 14 §2).
  std::set<std::string> json_formats;
  for (int i = 0; i < config.json_formats_size(); ++i) {
    if (absl::Status j = ValidateJsonFormat(config.json_formats(i)); !j.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": ", j.message()));
    }
    if (!json_formats.insert(config.json_formats(i).name()).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          file, ": json_formats \"", config.json_formats(i).name(), "\" is defined twice"));
    }
  }
  // Each file input's zone is its source's (Pipeline's source_time_zones): a name that loads,
  // and one zone per source among the file inputs and source_time_zones.
  std::map<std::string, std::pair<std::string, std::string>> source_zones;  // zone, who set it
  for (const auto& [source, zone] : config.source_time_zones()) {
    source_zones[source] = {zone, absl::StrCat("source_time_zones[\"", source, "\"]")};
  }
  for (const palisade::v1::FileInput& f : config.inputs().files()) {
    if (f.time_zone().empty()) continue;
    const std::string where = absl::StrCat(file, ": inputs.files \"", f.name(), "\": ");
    if (absl::StatusOr<absl::TimeZone> z = TimeZoneNamed(f.time_zone()); !z.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "time_zone: ", z.status().message()));
    }
    const std::string source = f.source().empty() ? f.name() : f.source();
    auto [it, added] = source_zones.try_emplace(
        source, f.time_zone(), absl::StrCat("inputs.files \"", f.name(), "\""));
    if (!added && it->second.first != f.time_zone()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "time_zone \"", f.time_zone(), "\" for source \"", source, "\", which ",
          it->second.second, " reads in \"", it->second.first, "\" (one zone per source)"));
    }
  }
  // A syslog input's senders in zones of their own: the receiver sends each entry's frames as
  // ZonedSource(source, zone), a source read in that zone (ApplyToPipeline). An entry names a
  // zone that loads and one sender: a HOSTNAME (one zone each) or a peer range (one zone each,
  // told by its canonical form: ::ffff:10.1.0.0/112 is 10.1.0.0/16; the receiver keeps the
  // first of equal ranges, so a second zone would be ignored silently).
  for (const palisade::v1::SyslogInput& in : config.inputs().syslog()) {
    std::map<std::string, std::string> host_zones;   // lower-case HOSTNAME -> zone
    std::map<std::string, std::string> range_zones;  // Cidr::ToString -> zone
    const std::string source = in.source().empty() ? in.name() : in.source();
    for (int i = 0; i < in.sender_time_zones_size(); ++i) {
      const palisade::v1::SyslogSenderZone& z = in.sender_time_zones(i);
      const std::string where = absl::StrCat(file, ": inputs.syslog \"", in.name(),
                                             "\": sender_time_zones[", i, "]: ");
      if (z.time_zone().empty()) {
        return absl::InvalidArgumentError(where + "time_zone is required");
      }
      if (absl::StatusOr<absl::TimeZone> zone = TimeZoneNamed(z.time_zone()); !zone.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(where, zone.status().message()));
      }
      if (z.hostname().empty() == z.peer_cidr().empty()) {
        return absl::InvalidArgumentError(where + "set hostname or peer_cidr (one of them)");
      }
      if (!z.hostname().empty()) {
        auto [it, added] = host_zones.try_emplace(absl::AsciiStrToLower(z.hostname()),
                                                  z.time_zone());
        if (!added && it->second != z.time_zone()) {
          return absl::InvalidArgumentError(absl::StrCat(where, "hostname \"", z.hostname(),
                                                         "\" has another zone already"));
        }
      } else if (absl::StatusOr<Cidr> c = Cidr::Parse(z.peer_cidr()); !c.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(where, "peer_cidr: ", c.status().message()));
      } else if (auto [it, added] = range_zones.try_emplace(c->ToString(), z.time_zone());
                 !added && it->second != z.time_zone()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "peer_cidr \"", z.peer_cidr(), "\"",
                         it->first == z.peer_cidr() ? "" : absl::StrCat(" (", it->first, ")"),
                         " has another zone already"));
      }
      const std::string zoned = ZonedSource(source, z.time_zone());
      auto [it, added] = source_zones.try_emplace(
          zoned, z.time_zone(), absl::StrCat("inputs.syslog \"", in.name(), "\""));
      if (!added && it->second.first != z.time_zone()) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, "source \"", zoned, "\", which ", it->second.second, " reads in \"",
            it->second.first, "\" (one zone per source)"));
      }
    }
  }
  for (const palisade::v1::FileInput& f : config.inputs().files()) {
    const bool json = f.format() == FormatName(palisade::v1::LOG_FORMAT_JSON);
    if (json && f.json_format().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          file, ": inputs.files \"", f.name(),
          "\": format json needs json_format, naming a json_formats entry"));
    }
    if (!f.json_format().empty() && (!json || json_formats.count(f.json_format()) == 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          file, ": inputs.files \"", f.name(), "\": json_format \"", f.json_format(), "\" ",
          json ? "is not defined in json_formats" : "is only for format json"));
    }
  }
  for (const palisade::v1::SyslogInput& in : config.inputs().syslog()) {
    // A per-address cap over max_connections (64 when unset) would cap nothing: refused, so
    // the config says what it does.
    const uint32_t max_connections = in.max_connections() > 0 ? in.max_connections() : 64;
    if (in.max_connections_per_address() > max_connections) {
      return absl::InvalidArgumentError(absl::StrCat(
          file, ": inputs.syslog \"", in.name(), "\": max_connections_per_address ",
          in.max_connections_per_address(), " is over max_connections ", max_connections));
    }
    if (in.per_address_ipv6_prefix() != 0 &&
        (in.per_address_ipv6_prefix() < 48 || in.per_address_ipv6_prefix() > 128)) {
      return absl::InvalidArgumentError(absl::StrCat(
          file, ": inputs.syslog \"", in.name(),
          "\": per_address_ipv6_prefix must be 48..128, not ", in.per_address_ipv6_prefix()));
    }
    // A peer's hosts with a stream of their own: at most the 8,192 host streams its transport
    // has in all (SyslogReceiverOptions::max_host_streams), which one peer may take whole.
    if (in.max_host_streams_per_peer() > 8192) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": inputs.syslog \"", in.name(),
                       "\": max_host_streams_per_peer must be at most 8192, not ",
                       in.max_host_streams_per_peer()));
    }
    if (!in.has_idle_timeout()) continue;
    const absl::Duration d = FromProtoDuration(in.idle_timeout());
    if (d < absl::Seconds(1) || d > absl::Hours(24)) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": inputs.syslog \"", in.name(),
                                                     "\": idle_timeout must be 1s..24h, not ",
                                                     absl::FormatDuration(d)));
    }
  }
  absl::Status s = CheckInputNames(file, config.inputs());
  if (!s.ok()) return s;
  for (const palisade::v1::LogpushInput& in : config.inputs().logpush()) {
    s = CheckSecretReference(file, absl::StrCat("inputs.logpush \"", in.name(), "\": secret_file"),
                             in.secret_file(), /*env_name=*/false);
    if (!s.ok()) return s;
  }
  // libnats names the file in its connect errors (NatsClient::Connect does too).
  s = CheckSecretReference(file, "cluster.nats.credentials_file",
                           config.cluster().nats().credentials_file(), /*env_name=*/false);
  if (!s.ok()) return s;
  auto* guard = config.mutable_guard();
  for (int i = 0; i < guard->never_ban_size(); ++i) {
    absl::StatusOr<Cidr> c = Cidr::Parse(guard->never_ban(i));
    if (!c.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": guard.never_ban[", i, "]: ", c.status().message()));
    }
  }
  s = ValidateFeeds(file, &config);
  if (!s.ok()) return s;
  s = ValidateSinks(file, &config);
  if (!s.ok()) return s;
  s = ValidateIngress(file, &config);
  if (!s.ok()) return s;
  s = CheckListeners(config, file);
  if (!s.ok()) return s;
  if (config.has_bouncer_api()) {
    absl::StatusOr<palisade::v1::BouncerApiConfig> bouncer_api =
        BouncerApiConfigWithDefaults(config.bouncer_api());
    if (!bouncer_api.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": ", bouncer_api.status().message()));
    }
    *config.mutable_bouncer_api() = *std::move(bouncer_api);
  }
  if (guard->max_new_bans_per_minute() == 0) guard->set_max_new_bans_per_minute(60);
  if (guard->max_active_per_actuator() == 0) guard->set_max_active_per_actuator(10000);
  s = ValidateCloudflare(file, config.mutable_cloudflare());
  if (!s.ok()) return s;
  s = ValidateFeedEdgeRoom(file, &config);
  if (!s.ok()) return s;
  // A rolled secret is written to the edge writer's own token file only: after a failover the
  // next writer's edge would read the dead token and not start.
  if (config.cloudflare().enabled() && config.cloudflare().has_rotation() && config.has_cluster()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file,
                     ": cloudflare.rotation: cannot be used with cluster: a rolled secret "
                     "reaches only the edge writer's own token file, so after a failover "
                     "the next writer would read the dead token and its edge would not "
                     "start; remove cloudflare.rotation (rotate by hand, then copy the "
                     "token file to every node) or the cluster block"));
  }
  if (config.has_cluster()) {
    s = ValidateCluster(file, config.mutable_cluster());
    if (!s.ok()) return s;
  }
  if (config.rule_files().empty()) {
    return absl::InvalidArgumentError(file + ": rule_files: at least one rule pack is required");
  }
  auto resolve = [&base_dir](std::string* f) {
    if (!f->empty() && (*f)[0] != '/' && !base_dir.empty()) *f = absl::StrCat(base_dir, "/", *f);
  };
  for (std::string& f : *config.mutable_rule_files()) resolve(&f);
  for (auto* tls : {config.mutable_api()->mutable_tls(), config.mutable_metrics_tls()}) {
    resolve(tls->mutable_cert_file());
    resolve(tls->mutable_key_file());
    resolve(tls->mutable_client_ca_file());
  }
  for (auto& sink : *config.mutable_sinks()) {
    if (sink.has_ecs_file()) resolve(sink.mutable_ecs_file()->mutable_path());
  }
  for (auto& feed : *config.mutable_feeds()) {
    // file://relative/path is relative to the config, like the other files.
    if (absl::StartsWith(feed.url(), "file://") && feed.url().size() > 7 && feed.url()[7] != '/') {
      std::string path = feed.url().substr(7);
      resolve(&path);
      feed.set_url("file://" + path);
    }
  }
  // (inputs.files paths must be absolute: FileInputs refuses others.)
  for (auto& in : *config.mutable_inputs()->mutable_syslog()) {
    resolve(in.mutable_tls_cert_file());
    resolve(in.mutable_tls_key_file());
    resolve(in.mutable_tls_client_ca_file());
  }
  for (auto& in : *config.mutable_inputs()->mutable_logpush()) {
    resolve(in.mutable_secret_file());
    resolve(in.mutable_tls_cert_file());
    resolve(in.mutable_tls_key_file());
  }
  for (auto& in : *config.mutable_inputs()->mutable_journal()) {
    resolve(in.mutable_directory());
    for (std::string& f : *in.mutable_files()) resolve(&f);
  }
  resolve(config.mutable_cloudflare()->mutable_token_file());
  resolve(config.mutable_cloudflare()->mutable_api_key_file());
  resolve(config.mutable_guard()->mutable_cloudflare_ranges_file());
  if (config.has_cluster()) {
    resolve(config.mutable_cluster()->mutable_nats()->mutable_tls()->mutable_ca_file());
    resolve(config.mutable_cluster()->mutable_nats()->mutable_credentials_file());
  }
  if (config.has_bouncer_api()) {  // (mutable_bouncer_api() alone would turn it on)
    palisade::v1::TlsConfig* tls = config.mutable_bouncer_api()->mutable_tls();
    resolve(tls->mutable_cert_file());
    resolve(tls->mutable_key_file());
    resolve(tls->mutable_client_ca_file());
  }
  if (config.state_file().empty()) config.set_state_file("palisade.db");
  if (config.state_file() != ":memory:") resolve(config.mutable_state_file());
  return config;
}

}  // namespace

namespace {

// Collects the top-level field of each difference MessageDifferencer reports.
class TopLevelFields : public google::protobuf::util::MessageDifferencer::Reporter {
 public:
  using Path = std::vector<google::protobuf::util::MessageDifferencer::SpecificField>;
  void ReportAdded(const google::protobuf::Message&, const google::protobuf::Message&,
                   const Path& path) override {
    Note(path);
  }
  void ReportDeleted(const google::protobuf::Message&, const google::protobuf::Message&,
                     const Path& path) override {
    Note(path);
  }
  void ReportModified(const google::protobuf::Message&, const google::protobuf::Message&,
                      const Path& path) override {
    Note(path);
  }
  std::set<std::string> names;

 private:
  void Note(const Path& path) {
    if (!path.empty() && path[0].field != nullptr) names.insert(path[0].field->name());
  }
};

}  // namespace

std::vector<std::string> FieldsNeedingRestart(const palisade::v1::Config& running,
                                              const palisade::v1::Config& next) {
  google::protobuf::util::MessageDifferencer differ;
  const google::protobuf::Descriptor* d = palisade::v1::Config::descriptor();
  for (const char* live : {"rule_files", "cidr_sets", "allowlist"}) {
    differ.IgnoreField(d->FindFieldByName(live));
  }
  TopLevelFields fields;
  differ.ReportDifferencesTo(&fields);
  differ.Compare(running, next);
  return std::vector<std::string>(fields.names.begin(), fields.names.end());
}

absl::StatusOr<palisade::v1::Config> LoadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open config file"));
  std::stringstream buf;
  buf << in.rdbuf();
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  return ParseConfig(buf.str(), path, dir);
}

absl::Status CheckListeners(const palisade::v1::Config& config, const std::string& file) {
  absl::Status s = CheckListen(file, "grpc_listen", config.grpc_listen());
  if (!s.ok()) return s;
  s = CheckListen(file, "metrics_listen", config.metrics_listen());
  if (!s.ok()) return s;
  if (config.api().clients().empty() && !IsLoopbackListen(config.grpc_listen())) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": grpc_listen ", config.grpc_listen(),
        " is not a loopback address and api.clients is empty: anyone could ban and unban; "
        "configure bearer tokens (palisadectl hash-token) first"));
  }
  // The same rule for /metrics: the metrics name the rules, the log sources and how much is
  // being detected.
  if (config.metrics_listen() != "off" && !IsLoopbackListen(config.metrics_listen()) &&
      !MetricsProtected(config.metrics_tls(), config.metrics_auth())) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": metrics_listen ", config.metrics_listen(),
        " is not a loopback address and /metrics is not protected: anyone who reaches it reads "
        "the rules, the sources and the detection counts; set metrics_auth { token_sha256 } "
        "(bearer tokens, palisadectl hash-token) or metrics_tls with client_ca_file, or listen "
        "on 127.0.0.1"));
  }
  return absl::OkStatus();
}

absl::Status ApplyToPipeline(const palisade::v1::Config& config, PipelineOptions* options) {
  absl::StatusOr<CidrSet> allowlist = CidrSet::Parse(
      std::vector<std::string>(config.allowlist().begin(), config.allowlist().end()));
  if (!allowlist.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("allowlist: ", allowlist.status().message()));
  }
  const palisade::v1::EngineConfig& engine = config.engine();
  options->engine.allowlist = *std::move(allowlist);
  options->engine.max_keys_per_rule = engine.max_keys_per_rule();
  options->engine.max_evidence = engine.max_evidence();
  options->engine.max_evidence_bytes = engine.max_evidence_bytes();
  options->engine.memory_budget_bytes = engine.memory_budget_bytes();
  options->engine.sessions.max_sessions = engine.max_sessions();
  options->engine.sessions.max_bytes = engine.max_session_bytes();
  options->engine.sessions.ttl = absl::Seconds(engine.session_ttl().seconds());
  // One knob folds IPv6 in the windows and in the decisions: an attacker taking a new address
  // of its /64 for each try fills no address's window, so the decisions' folding alone, which
  // needs decisions first, never saw it.
  const palisade::v1::Ipv6FoldingConfig& fold = config.decisions_ipv6_folding();
  options->engine.ipv6_window_prefix =
      fold.disabled()              ? 0
      : fold.prefix_length() != 0 ? static_cast<int>(fold.prefix_length())
                                  : DecisionTableLimits().ipv6_fold_prefix;
  options->max_line_bytes = engine.max_line_bytes();
  options->max_record_bytes = engine.max_record_bytes();
  // Times without an offset: the config's zone, else the host's.
  absl::StatusOr<absl::TimeZone> zone = TimeZoneNamed(config.time_zone());
  if (!zone.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("time_zone: ", zone.status().message()));
  }
  options->time_zone = *zone;
  for (const auto& [source, name] : config.source_time_zones()) {
    zone = TimeZoneNamed(name);
    if (!zone.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("source_time_zones \"", source, "\": ", zone.status().message()));
    }
    options->source_time_zones[source] = *zone;
  }
  // JSON lines mappings, for files and batches of format json.
  for (const auto& mapping : config.json_formats()) options->json_formats[mapping.name()] = mapping;
  // Each file input's zone, per its source, as for a remote source.
  for (const auto& input : config.inputs().files()) {
    if (input.time_zone().empty()) continue;
    zone = TimeZoneNamed(input.time_zone());
    if (!zone.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("inputs \"", input.name(), "\": ", zone.status().message()));
    }
    options->source_time_zones[input.source().empty() ? input.name() : input.source()] = *zone;
  }
  // A syslog input's senders in zones of their own: their frames come as ZonedSource.
  for (const auto& input : config.inputs().syslog()) {
    const std::string source = input.source().empty() ? input.name() : input.source();
    for (const palisade::v1::SyslogSenderZone& z : input.sender_time_zones()) {
      zone = TimeZoneNamed(z.time_zone());
      if (!zone.ok() || z.time_zone().empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "inputs \"", input.name(), "\": sender_time_zones: ",
            zone.ok() ? "a zone name is required" : zone.status().message()));
      }
      options->source_time_zones[ZonedSource(source, z.time_zone())] = *zone;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::TimeZone> TimeZoneNamed(const std::string& name) {
  if (name.empty()) return absl::LocalTimeZone();
  absl::TimeZone zone;
  if (!absl::LoadTimeZone(name, &zone)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown time zone \"", name, "\" (expected an IANA name such as America/New_York, or UTC)"));
  }
  return zone;
}

namespace {

// Refuses the first rule, in the packs' order, whose in_feed or not_in_feed names a feed the
// config does not configure ("*", any feed, always loads). Feeds are fixed for the daemon's life
// (a reload applies rule_files, cidr_sets and the allowlist only), and the engine takes an
// unknown name for an empty feed: a typo in not_in_feed would match every address.
absl::Status CheckFeedNames(const palisade::v1::Config& config,
                            const std::vector<LoadedPack>& packs) {
  std::set<std::string> configured;
  std::string names;
  for (const palisade::v1::FeedConfig& feed : config.feeds()) {
    configured.insert(feed.name());
    absl::StrAppend(&names, names.empty() ? "" : ", ", feed.name());
  }
  for (const LoadedPack& pack : packs) {
    for (const palisade::v1::Rule& rule : pack.pack.rules()) {
      for (int i = 0; i < rule.conditions_size(); ++i) {
        const palisade::v1::Condition& c = rule.conditions(i);
        for (const auto& [field, feed] : {std::pair<const char*, const std::string*>{
                                              "in_feed", &c.in_feed()},
                                          {"not_in_feed", &c.not_in_feed()}}) {
          if (feed->empty() || *feed == "*" || configured.count(*feed) > 0) continue;
          return absl::InvalidArgumentError(absl::StrCat(
              pack.file, ": rule \"", rule.id(), "\": conditions[", i, "] ", field, ": \"",
              *feed, "\" names a feed that is not configured (feeds: ",
              names.empty() ? "none" : names, "; or \"*\" for any)"));
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<const RuleSet>> LoadRules(
    const palisade::v1::Config& config, int threads,
    const std::vector<palisade::v1::LogFormat>& formats, FeedNames feeds) {
  // Each file read and checked on its own, then taken in order: the first error is the first
  // bad file's.
  const auto& files = config.rule_files();
  std::vector<absl::StatusOr<LoadedPack>> loaded(files.size());
  ParallelFor(files.size(), threads, [&](size_t i) { loaded[i] = LoadRulePackFile(files[i]); });
  std::vector<LoadedPack> packs;
  for (absl::StatusOr<LoadedPack>& pack : loaded) {
    if (!pack.ok()) return pack.status();
    packs.push_back(*std::move(pack));
  }
  if (feeds == FeedNames::kConfigured) {
    if (absl::Status s = CheckFeedNames(config, packs); !s.ok()) return s;
  }
  CidrSets sets;
  for (const auto& [name, list] : config.cidr_sets()) {
    absl::StatusOr<CidrSet> set =
        CidrSet::Parse(std::vector<std::string>(list.cidrs().begin(), list.cidrs().end()));
    if (!set.ok()) return set.status();
    sets.emplace(name, *std::move(set));
  }
  RuleSetOptions options;
  options.threads = threads;
  options.formats = formats;
  return RuleSet::Compile(packs, sets, options);
}

}  // namespace palisade
