#include "tests/cloudflare_fake/fake_cloudflare.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace palisade::fake {
namespace {

constexpr char kPrefix[] = "/client/v4/";

Response Envelope(json result, json result_info = nullptr, json messages = json::array()) {
  json body = {{"success", true},
               {"errors", json::array()},
               {"messages", messages},
               {"result", std::move(result)}};
  if (!result_info.is_null()) body["result_info"] = std::move(result_info);
  Response r;
  r.headers["content-type"] = "application/json";
  r.body = body.dump();
  return r;
}

Response Error(int status, int code, const std::string& message, json chain = nullptr,
               const std::string& pointer = "") {
  json err = {{"code", code}, {"message", message}};
  if (!chain.is_null()) err["error_chain"] = std::move(chain);
  if (!pointer.empty()) err["source"] = {{"pointer", pointer}};
  json body = {{"success", false},
               {"errors", json::array({err})},
               {"messages", json::array()},
               {"result", nullptr}};
  Response r;
  r.status = status;
  r.headers["content-type"] = "application/json";
  r.body = body.dump();
  return r;
}

Response NoRoute() { return Error(404, 7000, "No route for that URI"); }

Response BadObject(const std::string& what) {
  return Error(
      404, 7003,
      absl::StrCat("Could not route to ", what, ", perhaps your object identifier is invalid?"));
}

int QueryInt(const Request& r, const std::string& key, int dflt) {
  auto it = r.query.find(key);
  int v = dflt;
  if (it != r.query.end() && !absl::SimpleAtoi(it->second, &v)) return -1;
  return v;
}

std::string Query(const Request& r, const std::string& key) {
  auto it = r.query.find(key);
  return it == r.query.end() ? "" : it->second;
}

// Page-style pagination: returns false (and an error) on bad bounds.
bool Paginate(const Request& r, int max_per_page, int default_per_page, size_t total, size_t* begin,
              size_t* end, json* info, Response* error) {
  const int page = QueryInt(r, "page", 1);
  const int per_page = QueryInt(r, "per_page", default_per_page);
  if (page < 1 || per_page < 1 || per_page > max_per_page) {
    *error = Error(400, 1004, absl::StrCat("page must be >= 1 and per_page in 1..", max_per_page));
    return false;
  }
  *begin = std::min(total, static_cast<size_t>(page - 1) * per_page);
  *end = std::min(total, *begin + per_page);
  *info = {{"page", page},
           {"per_page", per_page},
           {"count", *end - *begin},
           {"total_count", total},
           {"total_pages", (total + per_page - 1) / per_page}};
  return true;
}

bool ParseBody(const Request& r, json* out, Response* error) {
  try {
    *out = json::parse(r.body.empty() ? "null" : r.body);
    return true;
  } catch (const json::exception& e) {
    *error = Error(400, 6007, "Malformed JSON in request body");
    return false;
  }
}

std::string Str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

// Normalises a list item IP: bare IPv4 ≡ /32, lower-case IPv6. Empty when invalid.
std::string NormaliseListIp(const std::string& ip) {
  absl::StatusOr<Cidr> c = Cidr::Parse(ip);
  if (!c.ok()) return "";
  const int len = c->prefix_length();
  if (c->base().is_v4()) {
    if (len < 8) return "";
    return len == 32 ? c->base().ToString() : c->ToString();
  }
  // IPv6 items are /64 or wider (cloudflare-api.md, corrections 8); /12 the widest.
  if (len < 12 || len > 64) return "";
  return c->ToString();
}

// An item's ip as the API answers it: one IPv4 address optionally as ".../32".
std::string ItemIpForApi(const std::string& ip, bool ipv4_as_cidr) {
  if (ipv4_as_cidr && ip.find('/') == std::string::npos) return ip + "/32";
  return ip;
}

// What the access-rule list's configuration.value search is documented for.
bool SearchableAccessValue(const std::string& value) {
  if (value.size() == 2 && absl::ascii_isalpha(value[0]) && absl::ascii_isalpha(value[1])) {
    return true;  // a country
  }
  if (absl::StartsWith(value, "AS") && value.size() > 2 &&
      std::all_of(value.begin() + 2, value.end(), [](char c) { return absl::ascii_isdigit(c); })) {
    return true;
  }
  if (value.find('/') == std::string::npos) {
    auto ip = IpAddress::Parse(value);
    return ip && ip->is_v4();
  }
  absl::StatusOr<Cidr> c = Cidr::Parse(value);
  return c.ok() && c->base().is_v4() && (c->prefix_length() == 16 || c->prefix_length() == 24);
}

bool ValidAccessValue(const std::string& target, const std::string& value) {
  if (target == "ip") {
    auto ip = IpAddress::Parse(value);
    return ip && ip->is_v4() && value.find('/') == std::string::npos;
  }
  if (target == "ip6") {
    auto ip = IpAddress::Parse(value);
    return ip && !ip->is_v4() && value.find('/') == std::string::npos;
  }
  if (target == "ip_range") {
    absl::StatusOr<Cidr> c = Cidr::Parse(value);
    if (!c.ok()) return false;
    const int len = c->prefix_length();
    return c->base().is_v4() ? (len == 16 || len == 24) : (len == 32 || len == 48 || len == 64);
  }
  if (target == "asn") return absl::StartsWith(value, "AS") && value.size() > 2;
  if (target == "country") return value.size() == 2;
  return false;
}

// Why the plan refuses a rate limiting rule's period and mitigation timeout (empty: it does not).
// cloudflare-api.md §4.3 and corrections 6.
std::string PlanRefuses(const std::string& plan, const std::string& action, int period,
                        int timeout) {
  const bool challenge = action == "challenge" || action == "js_challenge" ||
                         action == "managed_challenge";
  if (plan == "enterprise") return "";
  if (challenge && timeout != 0) {
    return absl::StrCat("ratelimit.mitigation_timeout must be 0 for ", action, " on the ", plan,
                        " plan");
  }
  if (plan == "free") {
    if (period != 10) return "ratelimit.period must be 10 on the free plan";
    if (!challenge && timeout != 10) {
      return "ratelimit.mitigation_timeout must be 10 on the free plan";
    }
    return "";
  }
  const bool pro = plan == "pro";
  const int max_period = pro ? 60 : 600;
  const int max_timeout = pro ? 3600 : 86400;
  if (period > max_period) {
    return absl::StrCat("ratelimit.period over ", max_period, " s on the ", plan, " plan");
  }
  if (timeout > max_timeout) {
    return absl::StrCat("ratelimit.mitigation_timeout over ", max_timeout, " s on the ", plan,
                        " plan");
  }
  return "";
}

// A v1 audit record: the stored one without what only v2 shows.
json AuditV1(const json& e) {
  json out = e;
  out.erase("_v2");
  return out;
}

// "YYYY-MM-DD" (midnight UTC) or an RFC 3339 date-time.
bool ParseDate(const std::string& s, absl::Time* out) {
  std::string err;
  if (s.empty()) return false;
  if (absl::ParseTime("%Y-%m-%d", s, absl::UTCTimeZone(), out, &err)) return true;
  return absl::ParseTime(absl::RFC3339_full, s, out, &err);
}

const std::set<std::string>& RuleActions() {
  static const auto* s = new std::set<std::string>{
      "block", "challenge", "js_challenge", "managed_challenge", "log", "skip"};
  return *s;
}

}  // namespace

// The ids are from memory of the public permission-group list (Terraform examples, the API
// docs); only "Zone Read" is confirmed by cloudflare-api.md. Tests compare names and ids from
// this one table, so a wrong id cannot make them pass for the wrong reason.
const json& PermissionGroups() {
  static const json* groups = new json(json::array({
      {{"id", "a416acf9ef5a4af19fb11ed3b96b1fe6"},
       {"name", "Account Firewall Access Rules Write"},
       {"scopes", {"com.cloudflare.api.account"}},
       {"short", "access_rules"}},
      {{"id", "43137f8d07884d3198dc0ee77ca6e79b"},
       {"name", "Firewall Services Write"},
       {"scopes", {"com.cloudflare.api.account.zone"}},
       {"short", "firewall_services"}},
      {{"id", "2edbf20661fd4661b0fe10e9e12f485c"},
       {"name", "Account Filter Lists Edit"},
       {"scopes", {"com.cloudflare.api.account"}},
       {"short", "lists"}},
      {{"id", "fb6778dc191143babbfaa57993f1d275"},
       {"name", "Zone WAF Write"},
       {"scopes", {"com.cloudflare.api.account.zone"}},
       {"short", "rulesets"}},
      {{"id", "686d18d5ac6c441c867cbf6771e58a0a"},
       {"name", "API Tokens Write"},
       {"scopes", {"com.cloudflare.api.user"}},
       {"short", "tokens"}},
      {{"id", "0cc3a61731504c89b99ec1be78b77aa0"},
       {"name", "API Tokens Read"},
       {"scopes", {"com.cloudflare.api.user"}},
       {"short", "tokens.read"}},
      {{"id", "b05b28e839c54467a7d6cba5d3abb5a3"},
       {"name", "Access: Audit Logs Read"},
       {"scopes", {"com.cloudflare.api.account"}},
       {"short", "audit_logs"}},
      {{"id", "c1fde68c7bcc44588cbb6ddbc16d6480"},
       {"name", "Account Settings Read"},
       {"scopes", {"com.cloudflare.api.account"}}},
      {{"id", "4755a26eedb94da69e1066d98aa820be"},
       {"name", "DNS Write"},
       {"scopes", {"com.cloudflare.api.account.zone"}}},
      {{"id", "c8fed203ed3043cba015a93ad1616f1f"},
       {"name", "Zone Read"},
       {"scopes", {"com.cloudflare.api.account.zone"}}},
  }));
  return *groups;
}

namespace {

// The table's entry for a permission given by short name, group name or group id; null if none.
const json* FindGroup(const std::string& key) {
  for (const json& g : PermissionGroups()) {
    if (g.value("short", "") == key || g["name"] == key || g["id"] == key) return &g;
  }
  return nullptr;
}

}  // namespace

FakeCloudflare::FakeCloudflare(Clock& clock, Options options)
    : clock_(clock), options_(std::move(options)) {}

std::string FakeCloudflare::NewId() {
  const uint64_t n = next_id_++;
  uint64_t h = n * 0x9e3779b97f4a7c15ull;
  h ^= h >> 29;
  return absl::StrFormat("%016x%016x", n, h);
}

std::string FakeCloudflare::Time(absl::Time t) const {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", t, absl::UTCTimeZone());
}

std::pair<std::string, std::string> FakeCloudflare::AddToken(const TokenSpec& spec) {
  absl::MutexLock lock(&mu_);
  return AddTokenLocked(spec);
}

json FakeCloudflare::PoliciesFor(const TokenSpec& spec) {
  // One allow policy per scope (account, zone, user), as the dashboard makes them.
  std::map<std::string, json> by_scope;
  for (const auto& p : spec.permissions) {
    const json* g = FindGroup(p);
    json group = g ? json{{"id", (*g)["id"]}, {"name", (*g)["name"]}} : json{{"id", p}, {"name", p}};
    const std::string scope = g ? (*g)["scopes"][0].get<std::string>() : "com.cloudflare.api.account";
    by_scope[scope].push_back(group);
  }
  const std::string account = "com.cloudflare.api.account." + options_.account_id;
  const std::string zone = "com.cloudflare.api.account.zone." + options_.zone_id;
  json policies = json::array();
  for (const auto& [scope, groups] : by_scope) {
    json resources;
    if (scope == "com.cloudflare.api.user") {
      resources = {{"com.cloudflare.api.user." + options_.user_id, "*"}};
    } else if (spec.resources == "all_accounts") {
      resources = {{scope == "com.cloudflare.api.account" ? "com.cloudflare.api.account.*"
                                                          : "com.cloudflare.api.account.zone.*",
                    "*"}};
    } else if (spec.resources == "all_zones" && scope != "com.cloudflare.api.account") {
      resources = {{account, {{"com.cloudflare.api.account.zone.*", "*"}}}};
    } else {
      resources = {{scope == "com.cloudflare.api.account" ? account : zone, "*"}};
    }
    policies.push_back({{"id", NewId()},
                          {"effect", "allow"},
                          {"resources", resources},
                          {"permission_groups", groups}});
  }
  return policies;
}

std::pair<std::string, std::string> FakeCloudflare::AddTokenLocked(const TokenSpec& spec) {
  TokenState t;
  t.id = NewId();
  t.spec = spec;
  if (t.spec.value.empty()) {
    // The 2026 prefixed form: cfut_/cfat_ + 40 characters (+ checksum, not modelled).
    std::string body = NewId() + NewId();
    t.spec.value = absl::StrCat(spec.account_owned ? "cfat_" : "cfut_", body.substr(0, 40));
  }
  t.issued = t.modified = clock_.TimeNow();
  t.policies = PoliciesFor(spec);
  tokens_[t.id] = t;
  return {t.id, t.spec.value};
}

void FakeCloudflare::SetFaults(const Faults& faults) {
  absl::MutexLock lock(&mu_);
  faults_ = faults;
}

int64_t FakeCloudflare::retired_secret_calls() const {
  absl::MutexLock lock(&mu_);
  return retired_secret_calls_;
}

int64_t FakeCloudflare::token_revocation_calls() const {
  absl::MutexLock lock(&mu_);
  return token_revocation_calls_;
}

int64_t FakeCloudflare::calls() const {
  absl::MutexLock lock(&mu_);
  return calls_;
}

Response FakeCloudflare::Handle(const Request& request) {
  absl::MutexLock lock(&mu_);
  ++calls_;
  // Faults first: they stand for the network and the service, before any state changes
  // (drop_after_apply, after it, stands for an answer lost once the change was made).
  Response fault;
  fault.delay = faults_.latency;
  auto roll = [this](double p) {
    rng_ ^= rng_ << 13;
    rng_ ^= rng_ >> 7;
    rng_ ^= rng_ << 17;
    return p > 0 && static_cast<double>(rng_ % 1000000) / 1e6 < p;
  };
  if (faults_.fail_call > 0 && --faults_.fail_call == 0) {
    if (faults_.error_status == 429) {
      fault = Error(429, 971, "Please wait and consider throttling your request speed");
      fault.headers["retry-after"] = "2";
    } else {
      fault = Error(faults_.error_status, 10500 + faults_.error_status % 100, "Internal error");
    }
    fault.delay = faults_.latency;
    return fault;
  }
  if (roll(faults_.drop_rate)) {
    fault.drop_connection = true;
    return fault;
  }
  if (roll(faults_.error_rate)) {
    fault = Error(faults_.error_status, 10000 + faults_.error_status, "Service unavailable");
    fault.delay = faults_.latency;
    return fault;
  }
  if (roll(faults_.throttle_rate)) {
    fault = Error(429, 971, "Please wait and consider throttling your request speed");
    fault.headers["retry-after"] = "1";
    fault.delay = faults_.latency;
    return fault;
  }
  Response r = HandleLocked(request);
  r.delay = faults_.latency;
  const bool counted =
      faults_.drop_after_apply_method.empty() || faults_.drop_after_apply_method == request.method;
  if (faults_.drop_after_apply > 0 && counted && --faults_.drop_after_apply == 0) {
    // Whatever the call did stays done; only its answer is lost.
    r.drop_connection = true;
  }
  return r;
}

bool FakeCloudflare::RateLimited(const std::string& credential, Response* out) {
  const absl::Time now = clock_.TimeNow();
  auto& window = requests_[credential];
  while (!window.empty() && window.front() <= now - options_.rate_limit_window) window.pop_front();
  auto blocked = blocked_until_.find(credential);
  const bool is_blocked = blocked != blocked_until_.end() && blocked->second > now;
  if (!is_blocked && static_cast<int>(window.size()) >= options_.rate_limit_requests) {
    // Past the global limit every call is refused for the next window.
    blocked_until_[credential] = now + options_.rate_limit_window;
  }
  auto until = blocked_until_.find(credential);
  if (until != blocked_until_.end() && until->second > now) {
    *out = Error(429, 971, "Please wait and consider throttling your request speed");
    const double secs = absl::ToDoubleSeconds(until->second - now);
    out->headers["retry-after"] = std::to_string(static_cast<int64_t>(std::ceil(secs)));
    return true;
  }
  window.push_back(now);
  const int remaining = options_.rate_limit_requests - static_cast<int>(window.size());
  const int64_t reset = absl::ToInt64Seconds(window.front() + options_.rate_limit_window - now);
  out->headers["ratelimit"] = absl::StrCat("\"default\";r=", remaining, ";t=", reset);
  out->headers["ratelimit-policy"] =
      absl::StrCat("\"default\";q=", options_.rate_limit_requests,
                   ";w=", absl::ToInt64Seconds(options_.rate_limit_window));
  return false;
}

bool FakeCloudflare::Authenticate(const Request& r, bool verify_endpoint, Caller* caller,
                                  Response* error) {
  auto auth = r.headers.find("authorization");
  if (auth != r.headers.end()) {
    absl::string_view v = auth->second;
    if (!absl::ConsumePrefix(&v, "Bearer ") || v.empty() ||
        !std::all_of(v.begin(), v.end(), [](char c) {
          return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
        })) {
      *error = Error(
          400, 6003, "Invalid request headers",
          json::array({{{"code", 6111}, {"message", "Invalid format for Authorization header"}}}));
      return false;
    }
    const TokenState* found = nullptr;
    for (const auto& [id, t] : tokens_) {
      if (t.spec.value == v) found = &t;
    }
    if (found == nullptr && retired_.count(std::string(v)) > 0) ++retired_secret_calls_;
    const absl::Time now = clock_.TimeNow();
    const bool usable = found != nullptr && found->spec.status == "active" &&
                        found->spec.expires_on > now && found->spec.not_before <= now &&
                        !(verify_endpoint && found->spec.account_owned &&
                          absl::StartsWith(r.path, "/client/v4/user/"));
    if (!usable) {
      *error = verify_endpoint ? Error(401, 1000, "Invalid API Token")
                               : Error(403, 9109, "Invalid access token");
      return false;
    }
    auto ip = IpAddress::Parse(r.remote_ip);
    bool ip_ok = found->spec.ip_in.empty();
    for (const auto& c : found->spec.ip_in) {
      auto cidr = Cidr::Parse(c);
      if (ip && cidr.ok() && cidr->Contains(*ip)) ip_ok = true;
    }
    for (const auto& c : found->spec.ip_not_in) {
      auto cidr = Cidr::Parse(c);
      if (ip && cidr.ok() && cidr->Contains(*ip)) ip_ok = false;
    }
    if (!ip_ok) {
      *error = Error(403, 9109,
                     absl::StrCat("Cannot use the access token from location: ", r.remote_ip));
      return false;
    }
    caller->id = found->id;
    caller->token = found;
    return true;
  }
  auto email = r.headers.find("x-auth-email");
  auto key = r.headers.find("x-auth-key");
  if (key == r.headers.end() && email == r.headers.end()) {
    *error = Error(400, 9106, "Missing X-Auth-Email header");
    return false;
  }
  if (email == r.headers.end()) {
    *error = Error(400, 9106, "Missing X-Auth-Email header");
    return false;
  }
  if (key == r.headers.end()) {
    *error = Error(400, 9107, "Missing X-Auth-Key header");
    return false;
  }
  const std::string& k = key->second;
  if (k.size() < 37 || k.size() > 45 ||
      !std::all_of(k.begin(), k.end(), [](char c) { return absl::ascii_isxdigit(c); })) {
    *error =
        Error(400, 6003, "Invalid request headers",
              json::array({{{"code", 6103}, {"message", "Invalid format for X-Auth-Key header"}}}));
    return false;
  }
  if (options_.legacy_key.empty() || k != options_.legacy_key ||
      email->second != options_.legacy_email) {
    *error = Error(403, 9103, "Unknown X-Auth-Key or X-Auth-Email");
    return false;
  }
  caller->id = "legacy:" + email->second;
  caller->token = nullptr;
  return true;
}

bool FakeCloudflare::Allowed(const Caller& c, const std::string& permission, On on) const {
  if (c.token == nullptr) return true;  // the Global API Key can do anything
  // From the token's policies: explicit deny, then explicit allow, else deny. A resource counts
  // when it names this emulator's account, zone or user, or a wildcard over them; with `on`,
  // only when it names (or is a wildcard over) the account, or the zone.
  const std::string account = "com.cloudflare.api.account." + options_.account_id;
  const std::string zone = "com.cloudflare.api.account.zone." + options_.zone_id;
  auto names_account = [&](const std::string& key) {
    return key == account || key == "com.cloudflare.api.account.*";
  };
  auto names_zone = [&](const std::string& key) {
    return key == zone || key == "com.cloudflare.api.account.zone.*";
  };
  auto covers = [&](const json& resources) {
    if (!resources.is_object()) return false;
    for (const auto& [key, value] : resources.items()) {
      switch (on) {
        case On::kAny:
          if (names_account(key) || names_zone(key) ||
              absl::StartsWith(key, "com.cloudflare.api.user.")) {
            return true;
          }
          break;
        case On::kAccount:
          if (names_account(key)) return true;
          break;
        case On::kZone:
          // The zone, every zone, or the zones of the account: all of them (a plain "*") or
          // those its nested object names.
          if (names_zone(key)) return true;
          if (names_account(key)) {
            if (!value.is_object()) return true;
            for (const auto& [nested, v] : value.items()) {
              if (names_zone(nested)) return true;
            }
          }
          break;
      }
    }
    return false;
  };
  bool allowed = false;
  for (const json& policy : c.token->policies) {
    if (!covers(policy.value("resources", json()))) continue;
    for (const json& g : policy.value("permission_groups", json::array())) {
      const json* known = FindGroup(Str(g, "id"));
      if (known == nullptr) known = FindGroup(Str(g, "name"));
      const std::string short_name =
          known ? known->value("short", "") : (Str(g, "name").empty() ? Str(g, "id") : Str(g, "name"));
      // Write groups include reading.
      if (short_name == permission || (permission == "tokens.read" && short_name == "tokens")) {
        if (Str(policy, "effect") == "deny") return false;
        allowed = true;
      }
    }
  }
  return allowed;
}

void FakeCloudflare::Audit(const Caller& c, const Request& r, const std::string& action,
                           const std::string& resource_type, const std::string& resource_id) {
  // The v1 record; what only v2 shows (the token used, the raw request) is kept beside it under
  // "_v2" and never shown by v1.
  json actor = {{"id", options_.user_id},
                {"email", options_.legacy_email},
                {"ip", r.remote_ip},
                {"type", "user"}};
  json v2 = {{"token_id", c.token ? c.token->id : ""},
             {"token_name", c.token ? c.token->spec.name : ""},
             {"context", c.token ? "api_token" : "api_key"},
             {"method", r.method},
             {"uri", r.path}};
  audit_.push_back({{"id", NewId()},
                    {"action", {{"type", action}, {"result", true}}},
                    {"actor", actor},
                    {"interface", "API"},
                    {"metadata", json::object()},
                    {"owner", {{"id", options_.account_id}}},
                    {"resource", {{"id", resource_id}, {"type", resource_type}}},
                    {"when", Time(clock_.TimeNow())},
                    {"_v2", v2}});
}

Response FakeCloudflare::HandleLocked(const Request& r) {
  absl::string_view path = r.path;
  if (!absl::ConsumePrefix(&path, kPrefix)) return NoRoute();
  std::vector<std::string> parts = absl::StrSplit(path, '/', absl::SkipEmpty());
  if (parts.empty()) return NoRoute();

  const bool verify = parts.back() == "verify";
  Caller caller;
  Response error;
  if (!Authenticate(r, verify, &caller, &error)) return error;
  Response limited;
  if (RateLimited(caller.id, &limited)) return limited;
  auto with_headers = [&limited](Response resp) {
    for (const auto& [k, v] : limited.headers) resp.headers.emplace(k, v);
    return resp;
  };

  const std::string& scope = parts[0];
  if (scope == "user" && parts.size() >= 2 && parts[1] == "tokens") {
    return with_headers(Tokens(r, caller, {parts.begin() + 2, parts.end()}, false));
  }
  if (scope != "zones" && scope != "accounts") return NoRoute();
  if (parts.size() < 3) return NoRoute();
  const std::string& id = parts[1];
  if ((scope == "zones" && id != options_.zone_id) ||
      (scope == "accounts" && id != options_.account_id)) {
    return BadObject(scope == "zones" ? "zone" : "account");
  }
  if (parts.size() >= 5 && parts[2] == "firewall" && parts[3] == "access_rules" &&
      parts[4] == "rules") {
    return with_headers(AccessRules(r, caller, parts));
  }
  if (scope == "accounts" && parts[2] == "rules" && parts.size() >= 4 && parts[3] == "lists") {
    return with_headers(Lists(r, caller, {parts.begin() + 4, parts.end()}));
  }
  if (scope == "zones" && parts[2] == "rulesets") {
    return with_headers(Rulesets(r, caller, {parts.begin() + 3, parts.end()}));
  }
  if (scope == "accounts" && parts[2] == "tokens") {
    return with_headers(Tokens(r, caller, {parts.begin() + 3, parts.end()}, true));
  }
  if (scope == "accounts" && parts[2] == "audit_logs" && parts.size() == 3) {
    return with_headers(AuditLogs(r, caller));
  }
  if (scope == "accounts" && parts[2] == "logs" && parts.size() == 4 && parts[3] == "audit") {
    return with_headers(AuditLogsV2(r, caller));
  }
  return NoRoute();
}

// ---------------------------------------------------------------------------------------------
// IP access rules

json FakeCloudflare::AccessRuleJson(const AccessRule& a) const {
  return {
      {"id", a.id},
      {"mode", a.mode},
      {"notes", a.notes},
      {"allowed_modes", {"whitelist", "block", "challenge", "js_challenge", "managed_challenge"}},
      {"configuration", {{"target", a.target}, {"value", a.value}}},
      {"scope", {{"id", a.scope_id}, {"type", a.scope_type == "zone" ? "zone" : "account"}}},
      {"created_on", Time(a.created)},
      {"modified_on", Time(a.modified)}};
}

Response FakeCloudflare::AccessRules(const Request& r, const Caller& c,
                                     const std::vector<std::string>& parts) {
  // Each scope has its own group (cloudflare-api.md §2.1), granted on that scope's resource.
  const std::string scope_type = parts[0] == "zones" ? "zone" : "account";
  if (!(scope_type == "zone" ? Allowed(c, "firewall_services", On::kZone)
                             : Allowed(c, "access_rules", On::kAccount))) {
    return Error(403, 10000, "Authentication error");
  }
  const std::string& scope_id = parts[1];
  if (parts.size() == 5 && r.method == "GET") {
    const std::string mode = Query(r, "mode");
    const std::string target = Query(r, "configuration.target");
    const std::string value = Query(r, "configuration.value");
    const std::string notes = absl::AsciiStrToLower(Query(r, "notes"));
    const bool any = Query(r, "match") == "any";
    // The list filters take what the schema documents, no more (cloudflare-api.md, corrections
    // 1): no "ip6" target, and the value search is for IPv4, IPv4 /16 and /24, countries (and
    // ASNs). Anything else is refused, so a client cannot rely on it.
    static const std::set<std::string> kFilterTargets = {"ip", "ip_range", "asn", "country"};
    if (!target.empty() && !kFilterTargets.count(target)) {
      return Error(400, 10013,
                   absl::StrCat("firewallaccessrules.api.validation_error:invalid "
                                "configuration.target filter: ",
                                target));
    }
    if (!value.empty() && !SearchableAccessValue(value)) {
      return Error(400, 10013,
                   absl::StrCat("firewallaccessrules.api.validation_error:configuration.value "
                                "search takes an IPv4 address, an IPv4 /16 or /24 range, an ASN "
                                "or a country code, not ",
                                value));
    }
    std::vector<const AccessRule*> hits;
    for (const auto& [id, a] : access_rules_) {
      if (a.scope_type != scope_type) continue;
      std::vector<bool> checks;
      if (!mode.empty()) checks.push_back(a.mode == mode);
      if (!target.empty()) checks.push_back(a.target == target);
      if (!value.empty()) checks.push_back(a.value == value);
      if (!notes.empty())
        checks.push_back(absl::StrContains(absl::AsciiStrToLower(a.notes), notes));
      bool ok = checks.empty() ||
                (any ? std::any_of(checks.begin(), checks.end(), [](bool b) { return b; })
                     : std::all_of(checks.begin(), checks.end(), [](bool b) { return b; }));
      if (ok) hits.push_back(&a);
    }
    size_t begin, end;
    json info;
    Response error;
    if (!Paginate(r, 1000, 20, hits.size(), &begin, &end, &info, &error)) return error;
    json result = json::array();
    for (size_t i = begin; i < end; ++i) result.push_back(AccessRuleJson(*hits[i]));
    return Envelope(result, info);
  }
  if (parts.size() == 5 && r.method == "POST") {
    json body;
    Response error;
    if (!ParseBody(r, &body, &error)) return error;
    if (!body.is_object()) return Error(400, 10013, "firewallaccessrules.api.validation_error");
    const std::string mode = Str(body, "mode");
    json conf = body.value("configuration", json::object());
    const std::string target = conf.is_object() ? Str(conf, "target") : "";
    const std::string value = conf.is_object() ? Str(conf, "value") : "";
    std::string problems;
    static const std::set<std::string> kModes = {"block", "challenge", "whitelist", "js_challenge",
                                                 "managed_challenge"};
    if (!kModes.count(mode)) absl::StrAppend(&problems, "invalid mode received: ", mode);
    if (!ValidAccessValue(target, value)) {
      absl::StrAppend(&problems, problems.empty() ? "" : ",",
                      "unsupported target received: ", target, " ", value);
    }
    if (scope_type == "zone" && !body.contains("notes")) {
      absl::StrAppend(&problems, problems.empty() ? "" : ",", "notes is required");
    }
    if (!problems.empty()) {
      return Error(400, 10013, "firewallaccessrules.api.validation_error:" + problems);
    }
    for (const auto& [id, a] : access_rules_) {
      if (a.scope_type == scope_type && a.target == target && a.value == value) {
        return Error(400, 10009, "firewallaccessrules.api.duplicate_of_existing");
      }
    }
    if (static_cast<int>(access_rules_.size()) >= options_.max_access_rules) {
      return Error(400, 10024, "firewallaccessrules.api.quota_exceeded");
    }
    AccessRule a;
    a.id = NewId();
    a.mode = mode;
    a.target = target;
    a.value = value;
    a.notes = Str(body, "notes");
    a.scope_type = scope_type;
    a.scope_id = scope_id;
    a.created = a.modified = clock_.TimeNow();
    access_rules_[a.id] = a;
    Audit(c, r, "create", "firewall.access_rule", a.id);
    return Envelope(AccessRuleJson(a));
  }
  if (parts.size() == 6) {
    auto it = access_rules_.find(parts[5]);
    if (it == access_rules_.end() || it->second.scope_type != scope_type) {
      return Error(404, 10001, "firewallaccessrules.api.not_found");
    }
    if (r.method == "GET") return Envelope(AccessRuleJson(it->second));
    if (r.method == "DELETE") {
      access_rules_.erase(it);
      Audit(c, r, "delete", "firewall.access_rule", parts[5]);
      return Envelope({{"id", parts[5]}});
    }
    if (r.method == "PATCH") {
      json body;
      Response error;
      if (!ParseBody(r, &body, &error)) return error;
      if (body.contains("mode")) it->second.mode = Str(body, "mode");
      if (body.contains("notes")) it->second.notes = Str(body, "notes");
      it->second.modified = clock_.TimeNow();
      Audit(c, r, "update", "firewall.access_rule", parts[5]);
      return Envelope(AccessRuleJson(it->second));
    }
  }
  return NoRoute();
}

// ---------------------------------------------------------------------------------------------
// Lists

json FakeCloudflare::ListJson(const IpList& l) const {
  return {{"id", l.id},
          {"name", l.name},
          {"description", l.description},
          {"kind", l.kind},
          {"num_items", l.items.size()},
          {"num_referencing_filters", Referencing(l.name)},
          {"created_on", Time(l.created)},
          {"modified_on", Time(l.modified)}};
}

int FakeCloudflare::ItemsInUse() const {
  int n = 0;
  for (const auto& [id, l] : lists_) n += static_cast<int>(l.items.size());
  return n;
}

int FakeCloudflare::Referencing(const std::string& list_name) const {
  int n = 0;
  for (const auto& [phase, rs] : rulesets_) {
    for (const json& rule : rs.rules) {
      const std::string expr = Str(rule, "expression");
      size_t pos = expr.find("$" + list_name);
      if (pos == std::string::npos) continue;
      size_t end = pos + 1 + list_name.size();
      if (end == expr.size() || !(absl::ascii_isalnum(expr[end]) || expr[end] == '_')) ++n;
    }
  }
  return n;
}

void FakeCloudflare::AdvanceOperations() {
  const absl::Time now = clock_.TimeNow();
  for (auto& [id, op] : operations_) {  // ids sort in creation order: FIFO
    if (op.status == "completed" || op.status == "failed") continue;
    if (now < op.created + options_.operation_pending) continue;
    op.status = "running";
    if (now < op.created + options_.operation_pending + options_.operation_running) continue;
    auto list = lists_.find(op.list_id);
    if (list == lists_.end()) {
      op.status = "failed";
      op.error = "list was deleted";
      continue;
    }
    std::map<std::string, ListItem> items = list->second.items;
    if (op.kind == "replace") items.clear();
    if (op.kind == "delete") {
      for (const json& it : op.items) {
        const std::string item_id = Str(it, "id");
        for (auto i = items.begin(); i != items.end(); ++i) {
          if (i->second.id == item_id) {
            items.erase(i);
            break;
          }
        }
      }
    } else {
      for (const json& it : op.items) {
        const std::string ip = NormaliseListIp(Str(it, "ip"));
        auto existing = items.find(ip);
        if (existing != items.end()) {  // POST upserts: the comment is overwritten
          existing->second.comment = Str(it, "comment");
          existing->second.modified = now;
          continue;
        }
        items[ip] = ListItem{NewId(), ip, Str(it, "comment"), now, now};
      }
    }
    const int others = ItemsInUse() - static_cast<int>(list->second.items.size());
    if (others + static_cast<int>(items.size()) > options_.max_list_items) {
      op.status = "failed";
      op.error =
          absl::StrCat("exceeded maximum number of list items (", options_.max_list_items, ")");
      continue;
    }
    list->second.items = std::move(items);
    list->second.modified = now;
    op.status = "completed";
    op.completed = now;
  }
}

Response FakeCloudflare::Lists(const Request& r, const Caller& c,
                               const std::vector<std::string>& parts) {
  if (!Allowed(c, "lists")) return Error(403, 10000, "Authentication error");
  AdvanceOperations();
  if (parts.empty()) {
    if (r.method == "GET") {
      json result = json::array();
      for (const auto& [id, l] : lists_) result.push_back(ListJson(l));
      return Envelope(result);
    }
    if (r.method == "POST") {
      json body;
      Response error;
      if (!ParseBody(r, &body, &error)) return error;
      const std::string name = Str(body, "name");
      if (name.empty() || name.size() > 50 || !std::all_of(name.begin(), name.end(), [](char ch) {
            return absl::ascii_isalnum(ch) || ch == '_';
          })) {
        return Error(400, 10003, "list name must match ^[a-zA-Z0-9_]+$ and be at most 50 long",
                     nullptr, "/name");
      }
      if (Str(body, "kind") != "ip") {
        return Error(400, 10005, "only kind \"ip\" is available on this plan", nullptr, "/kind");
      }
      for (const auto& [id, l] : lists_) {
        if (l.name == name) return Error(400, 10004, "a list with this name already exists");
      }
      if (static_cast<int>(lists_.size()) >= options_.max_lists) {
        return Error(400, 10012, "exceeded maximum number of lists");
      }
      IpList l;
      l.id = NewId();
      l.name = name;
      l.kind = "ip";
      l.description = Str(body, "description");
      l.created = l.modified = clock_.TimeNow();
      lists_[l.id] = l;
      Audit(c, r, "create", "filters.list", l.id);
      return Envelope(ListJson(l));
    }
    return NoRoute();
  }
  if (parts[0] == "bulk_operations" && parts.size() == 2 && r.method == "GET") {
    auto op = operations_.find(parts[1]);
    if (op == operations_.end()) return Error(404, 10006, "operation not found");
    json result = {{"id", op->second.id}, {"status", op->second.status}};
    if (op->second.status == "completed") result["completed"] = Time(op->second.completed);
    if (op->second.status == "failed") result["error"] = op->second.error;
    return Envelope(result);
  }
  auto list = lists_.find(parts[0]);
  if (list == lists_.end()) return Error(404, 10006, "list not found");
  IpList& l = list->second;
  if (parts.size() == 1) {
    if (r.method == "GET") return Envelope(ListJson(l));
    if (r.method == "DELETE") {
      if (Referencing(l.name) > 0) return Error(400, 10031, "filters.api.ip_list_in_use");
      const std::string id = l.id;
      lists_.erase(list);
      Audit(c, r, "delete", "filters.list", id);
      return Envelope({{"id", id}});
    }
    if (r.method == "PUT") {
      json body;
      Response error;
      if (!ParseBody(r, &body, &error)) return error;
      l.description = Str(body, "description");
      l.modified = clock_.TimeNow();
      Audit(c, r, "update", "filters.list", l.id);
      return Envelope(ListJson(l));
    }
    return NoRoute();
  }
  if (parts[1] != "items") return NoRoute();
  if (parts.size() == 3 && r.method == "GET") {
    for (const auto& [ip, item] : l.items) {
      if (item.id == parts[2]) {
        return Envelope({{"id", item.id},
                         {"ip", ItemIpForApi(item.ip, options_.ipv4_items_as_cidr)},
                         {"comment", item.comment},
                         {"created_on", Time(item.created)},
                         {"modified_on", Time(item.modified)}});
      }
    }
    return Error(404, 10006, "item not found");
  }
  if (parts.size() != 2) return NoRoute();
  if (r.method == "GET") {
    const int per_page = QueryInt(r, "per_page", 25);
    if (per_page < 1 || per_page > 500) {
      return Error(400, 10026, "per_page must be between 1 and 500");
    }
    // Items sorted ascending by address then mask; the cursor is the hex of the next key.
    std::vector<std::pair<std::string, const ListItem*>> sorted;
    const std::string search = Query(r, "search");
    for (const auto& [ip, item] : l.items) {
      if (!search.empty() && !absl::StartsWith(ip, search)) continue;
      absl::StatusOr<Cidr> cidr = Cidr::Parse(ip);
      std::string key(reinterpret_cast<const char*>(cidr->base().bytes().data()), 16);
      key.insert(0, 1, cidr->base().is_v4() ? '4' : '6');
      key.push_back(static_cast<char>(cidr->prefix_length()));
      sorted.emplace_back(key, &item);
    }
    std::sort(sorted.begin(), sorted.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    size_t start = 0;
    const std::string cursor = Query(r, "cursor");
    if (!cursor.empty()) {
      std::string raw = absl::HexStringToBytes(cursor);
      start = std::lower_bound(sorted.begin(), sorted.end(), raw,
                               [](const auto& a, const std::string& k) { return a.first < k; }) -
              sorted.begin();
    }
    json result = json::array();
    size_t i = start;
    for (; i < sorted.size() && i < start + per_page; ++i) {
      const ListItem& item = *sorted[i].second;
      result.push_back({{"id", item.id},
                        {"ip", ItemIpForApi(item.ip, options_.ipv4_items_as_cidr)},
                        {"comment", item.comment},
                        {"created_on", Time(item.created)},
                        {"modified_on", Time(item.modified)}});
    }
    json cursors = json::object();
    if (i < sorted.size()) cursors["after"] = absl::BytesToHexString(sorted[i].first);
    if (start > 0) cursors["before"] = absl::BytesToHexString(sorted[start - 1].first);
    return Envelope(result, {{"cursors", cursors}});
  }
  if (r.method != "POST" && r.method != "PUT" && r.method != "DELETE") return NoRoute();
  json body;
  Response error;
  if (!ParseBody(r, &body, &error)) return error;
  for (const auto& [id, op] : operations_) {
    if (op.list_id == l.id && op.status != "completed" && op.status != "failed" &&
        options_.reject_concurrent_list_writes) {
      return Error(429, 10055, "a list operation is still in progress; retry when it completes");
    }
  }
  Operation op;
  op.list_id = l.id;
  op.created = clock_.TimeNow();
  if (r.method == "DELETE") {
    if (!body.is_object() || !body.contains("items") || !body["items"].is_array()) {
      return Error(400, 10021, "body must be {\"items\":[{\"id\":...}]}", nullptr, "/items");
    }
    op.kind = "delete";
    op.items = body["items"];
  } else {
    if (!body.is_array()) return Error(400, 10021, "body must be an array of items");
    std::set<std::string> seen;
    for (size_t i = 0; i < body.size(); ++i) {
      const std::string ip = NormaliseListIp(Str(body[i], "ip"));
      if (ip.empty()) {
        return Error(400, 10021, absl::StrCat("invalid ip in item ", i), nullptr,
                     absl::StrCat("/", i, "/ip"));
      }
      if (!seen.insert(ip).second) {
        return Error(400, 10028, "add operation contains duplicate items");
      }
      if (Str(body[i], "comment").size() > 500) {
        return Error(400, 10021, "comment too long", nullptr, absl::StrCat("/", i, "/comment"));
      }
    }
    op.kind = r.method == "PUT" ? "replace" : "add";
    op.items = body;
  }
  op.id = NewId();
  operations_[op.id] = op;
  Audit(c, r, op.kind == "delete" ? "delete" : "update", "filters.list.items", l.id);
  AdvanceOperations();  // a zero delay completes at once
  return Envelope({{"operation_id", op.id}});
}

// ---------------------------------------------------------------------------------------------
// Rulesets

json FakeCloudflare::RulesetJson(const RulesetState& rs) const {
  return {{"id", rs.id},
          {"name", rs.name},
          {"description", ""},
          {"kind", "zone"},
          {"phase", rs.phase},
          {"version", std::to_string(rs.version)},
          {"last_updated", Time(rs.last_updated)},
          {"rules", rs.rules}};
}

Response FakeCloudflare::Rulesets(const Request& r, const Caller& c,
                                  const std::vector<std::string>& parts) {
  if (!Allowed(c, "rulesets")) return Error(403, 10000, "Authentication error");
  auto validate = [&](const std::string& phase, json& rule, size_t index, Response* error) -> bool {
    const std::string ptr = absl::StrCat("/rules/", index);
    if (!rule.is_object()) {
      *error = Error(400, 20021, "rule must be an object", nullptr, ptr);
      return false;
    }
    if (!RuleActions().count(Str(rule, "action"))) {
      *error = Error(400, 20021, "invalid action", nullptr, ptr + "/action");
      return false;
    }
    const std::string expr = Str(rule, "expression");
    if (expr.empty()) {
      *error = Error(400, 20021, "expression is required", nullptr, ptr + "/expression");
      return false;
    }
    // Every $name must be an existing list.
    for (size_t pos = expr.find('$'); pos != std::string::npos; pos = expr.find('$', pos + 1)) {
      size_t end = pos + 1;
      while (end < expr.size() && (absl::ascii_isalnum(expr[end]) || expr[end] == '_')) ++end;
      const std::string name = expr.substr(pos + 1, end - pos - 1);
      bool found = false;
      for (const auto& [id, l] : lists_) found |= l.name == name;
      if (!found) {
        *error = Error(400, 20021, absl::StrCat("referenced list '", name, "' not found"), nullptr,
                       ptr + "/expression");
        return false;
      }
    }
    if (phase == "http_ratelimit") {
      const json rl = rule.value("ratelimit", json());
      static const std::set<int> kPeriods = {10, 60, 120, 300, 600, 3600};
      static const std::set<int> kTimeouts = {0, 10, 60, 120, 300, 600, 3600, 86400};
      bool colo = false;
      if (rl.is_object() && rl.contains("characteristics") && rl["characteristics"].is_array()) {
        for (const auto& ch : rl["characteristics"]) colo |= ch == "cf.colo.id";
      }
      if (!colo) {
        *error = Error(400, 20021, "ratelimit.characteristics must include cf.colo.id", nullptr,
                       ptr + "/ratelimit/characteristics");
        return false;
      }
      if (!kPeriods.count(rl.value("period", 0))) {
        *error = Error(400, 20021, "ratelimit.period is not an allowed value", nullptr,
                       ptr + "/ratelimit/period");
        return false;
      }
      if (rl.value("requests_per_period", 0) < 1) {
        *error = Error(400, 20021, "ratelimit.requests_per_period must be >= 1", nullptr,
                       ptr + "/ratelimit/requests_per_period");
        return false;
      }
      if (!kTimeouts.count(rl.value("mitigation_timeout", 0))) {
        *error = Error(400, 20021, "ratelimit.mitigation_timeout is not an allowed value", nullptr,
                       ptr + "/ratelimit/mitigation_timeout");
        return false;
      }
      std::string refused = PlanRefuses(options_.plan, Str(rule, "action"),
                                        rl.value("period", 0), rl.value("mitigation_timeout", 0));
      if (!refused.empty()) {
        *error = Error(400, 20021, refused, nullptr, ptr + "/ratelimit");
        return false;
      }
    }
    if (!rule.contains("id")) rule["id"] = NewId();
    if (!rule.contains("ref")) rule["ref"] = rule["id"];
    if (!rule.contains("enabled")) rule["enabled"] = true;
    if (!rule.contains("description")) rule["description"] = "";
    rule["last_updated"] = Time(clock_.TimeNow());
    return true;
  };
  auto check_quota = [&](const std::string& phase, size_t count, Response* error) {
    if (phase == "http_ratelimit" && static_cast<int>(count) > options_.max_ratelimit_rules) {
      *error = Error(400, 20022,
                     absl::StrCat("exceeded the plan's limit of ", options_.max_ratelimit_rules,
                                  " rate limiting rules"),
                     nullptr, "/rules");
      return false;
    }
    return true;
  };
  auto bump = [&](RulesetState& rs) {
    ++rs.version;
    rs.last_updated = clock_.TimeNow();
    for (json& rule : rs.rules) rule["version"] = std::to_string(rs.version);
  };

  // phases/{phase}/entrypoint
  if (parts.size() == 3 && parts[0] == "phases" && parts[2] == "entrypoint") {
    const std::string& phase = parts[1];
    if (phase != "http_request_firewall_custom" && phase != "http_ratelimit") {
      return Error(400, 20001, absl::StrCat("unsupported phase ", phase));
    }
    auto it = rulesets_.find(phase);
    if (r.method == "GET") {
      if (it == rulesets_.end()) {
        return Error(404, 10003,
                     absl::StrCat("could not find entrypoint ruleset in the ", phase, " phase"));
      }
      return Envelope(RulesetJson(it->second));
    }
    if (r.method == "PUT") {
      json body;
      Response error;
      if (!ParseBody(r, &body, &error)) return error;
      if (!body.is_object() || !body.contains("rules") || !body["rules"].is_array()) {
        return Error(400, 20021, "rules is required", nullptr, "/rules");
      }
      std::vector<json> rules;
      for (size_t i = 0; i < body["rules"].size(); ++i) {
        json rule = body["rules"][i];
        if (!validate(phase, rule, i, &error)) return error;
        rules.push_back(rule);
      }
      if (!check_quota(phase, rules.size(), &error)) return error;
      if (it == rulesets_.end()) {
        RulesetState rs;
        rs.id = NewId();
        rs.phase = phase;
        rs.name = "default";
        rs.version = 0;
        it = rulesets_.emplace(phase, rs).first;
      }
      it->second.rules = rules;  // PUT replaces the whole list: omitted rules are gone
      bump(it->second);
      Audit(c, r, "update", "ruleset", it->second.id);
      return Envelope(RulesetJson(it->second));
    }
    return NoRoute();
  }
  // {ruleset_id}[/rules[/{rule_id}]]
  RulesetState* rs = nullptr;
  for (auto& [phase, s] : rulesets_) {
    if (s.id == parts[0]) rs = &s;
  }
  if (rs == nullptr) return Error(404, 10003, "ruleset not found");
  if (parts.size() == 1 && r.method == "GET") return Envelope(RulesetJson(*rs));
  if (parts.size() < 2 || parts[1] != "rules") return NoRoute();
  if (parts.size() == 2 && r.method == "POST") {
    json rule;
    Response error;
    if (!ParseBody(r, &rule, &error)) return error;
    json position = rule.is_object() ? rule.value("position", json()) : json();
    if (rule.is_object()) rule.erase("position");
    if (!validate(rs->phase, rule, rs->rules.size(), &error)) return error;
    if (!check_quota(rs->phase, rs->rules.size() + 1, &error)) return error;
    size_t at = rs->rules.size();
    if (position.is_object()) {
      auto find = [&](const std::string& id) -> size_t {
        for (size_t i = 0; i < rs->rules.size(); ++i) {
          if (Str(rs->rules[i], "id") == id) return i;
        }
        return std::string::npos;
      };
      if (position.contains("index")) {
        at = std::min(rs->rules.size(),
                      static_cast<size_t>(std::max(1, position.value("index", 1)) - 1));
      } else if (position.contains("before") || position.contains("after")) {
        const bool before = position.contains("before");
        size_t i = find(Str(position, before ? "before" : "after"));
        if (i == std::string::npos) return Error(400, 20021, "position refers to an unknown rule");
        at = before ? i : i + 1;
      }
    }
    rs->rules.insert(rs->rules.begin() + at, rule);
    bump(*rs);
    Audit(c, r, "update", "ruleset", rs->id);
    return Envelope(RulesetJson(*rs));
  }
  if (parts.size() == 3) {
    auto it = std::find_if(rs->rules.begin(), rs->rules.end(),
                           [&](const json& rule) { return Str(rule, "id") == parts[2]; });
    if (it == rs->rules.end()) return Error(404, 10004, "rule not found");
    if (r.method == "DELETE") {
      rs->rules.erase(it);
      bump(*rs);
      Audit(c, r, "update", "ruleset", rs->id);
      return Envelope(RulesetJson(*rs));
    }
    if (r.method == "PATCH") {
      json patch;
      Response error;
      if (!ParseBody(r, &patch, &error)) return error;
      json updated = *it;
      for (auto& [k, v] : patch.items()) {
        if (k != "id" && k != "position") updated[k] = v;
      }
      if (!validate(rs->phase, updated, it - rs->rules.begin(), &error)) return error;
      *it = updated;
      bump(*rs);
      Audit(c, r, "update", "ruleset", rs->id);
      return Envelope(RulesetJson(*rs));
    }
  }
  return NoRoute();
}

// ---------------------------------------------------------------------------------------------
// Tokens

json FakeCloudflare::TokenJson(const TokenState& t) const {
  json j = {{"id", t.id},
            {"name", t.spec.name},
            {"status", t.spec.expires_on <= clock_.TimeNow() ? "expired" : t.spec.status},
            {"issued_on", Time(t.issued)},
            {"modified_on", Time(t.modified)},
            {"policies", t.policies}};
  if (t.spec.expires_on != absl::InfiniteFuture()) j["expires_on"] = Time(t.spec.expires_on);
  if (t.spec.not_before != absl::InfinitePast()) j["not_before"] = Time(t.spec.not_before);
  if (!t.spec.ip_in.empty() || !t.spec.ip_not_in.empty()) {
    json cond = json::object();
    if (!t.spec.ip_in.empty()) cond["in"] = t.spec.ip_in;
    if (!t.spec.ip_not_in.empty()) cond["not_in"] = t.spec.ip_not_in;
    j["condition"] = {{"request.ip", cond}};
  }
  return j;
}

Response FakeCloudflare::Tokens(const Request& r, const Caller& c,
                                const std::vector<std::string>& parts, bool account) {
  if (parts.size() == 1 && parts[0] == "verify" && r.method == "GET") {
    if (c.token == nullptr) return Error(401, 1000, "Invalid API Token");
    if (c.token->spec.account_owned != account) return Error(401, 1000, "Invalid API Token");
    json result = {{"id", c.token->id}, {"status", c.token->spec.status}};
    if (c.token->spec.expires_on != absl::InfiniteFuture()) {
      result["expires_on"] = Time(c.token->spec.expires_on);
    }
    return Envelope(result, nullptr,
                    json::array({{{"code", 10000},
                                  {"message", "This API Token is valid and active"},
                                  {"type", nullptr}}}));
  }
  if (parts.size() == 1 && parts[0] == "permission_groups" && r.method == "GET") {
    json result = json::array();
    for (const json& g : PermissionGroups()) {
      result.push_back({{"id", g["id"]}, {"name", g["name"]}, {"scopes", g["scopes"]}});
    }
    return Envelope(result);
  }
  if (parts.size() == 1 && (r.method == "DELETE" || r.method == "PUT")) {
    ++token_revocation_calls_;  // counted before the permission check: an attempt is a call
  }
  if (!Allowed(c, r.method == "GET" ? "tokens.read" : "tokens")) {
    return Error(403, 10000, "Authentication error");
  }
  if (parts.empty()) {
    if (r.method == "GET") {
      std::vector<const TokenState*> owned;
      for (const auto& [id, t] : tokens_) {
        if (t.spec.account_owned == account) owned.push_back(&t);
      }
      size_t begin, end;
      json info;
      Response error;
      if (!Paginate(r, 50, 20, owned.size(), &begin, &end, &info, &error)) return error;
      json result = json::array();
      for (size_t i = begin; i < end; ++i) result.push_back(TokenJson(*owned[i]));
      return Envelope(result, info);
    }
    if (r.method == "POST") {
      json body;
      Response error;
      if (!ParseBody(r, &body, &error)) return error;
      if (Str(body, "name").empty() || !body.contains("policies")) {
        return Error(400, 1001, "name and policies are required");
      }
      int owned = 0;
      for (const auto& [id, t] : tokens_) owned += t.spec.account_owned == account;
      if (owned >= (account ? 500 : 50)) return Error(400, 1002, "token quota exceeded");
      TokenSpec spec;
      spec.name = Str(body, "name");
      spec.account_owned = account;
      for (const auto& p : body["policies"]) {
        for (const auto& g : p.value("permission_groups", json::array())) {
          spec.permissions.insert(Str(g, "name").empty() ? Str(g, "id") : Str(g, "name"));
        }
      }
      auto [id, value] = AddTokenLocked(spec);
      tokens_[id].policies = body["policies"];
      Audit(c, r, "create", "token", id);
      json result = TokenJson(tokens_[id]);
      result["value"] = value;  // shown once
      return Envelope(result);
    }
    return NoRoute();
  }
  auto it = tokens_.find(parts[0]);
  if (it == tokens_.end() || it->second.spec.account_owned != account) {
    return Error(404, 1003, "token not found");
  }
  TokenState& t = it->second;
  if (parts.size() == 2 && parts[1] == "value" && r.method == "PUT") {
    std::string body = NewId() + NewId();
    retired_.insert(t.spec.value);  // refused from now on, and counted when used
    t.spec.value = absl::StrCat(account ? "cfat_" : "cfut_", body.substr(0, 40));
    t.modified = clock_.TimeNow();
    Audit(c, r, "roll", "token", t.id);
    return Envelope(t.spec.value);
  }
  if (parts.size() != 1) return NoRoute();
  if (r.method == "GET") return Envelope(TokenJson(t));
  if (r.method == "DELETE") {
    const std::string id = t.id;
    tokens_.erase(it);
    Audit(c, r, "delete", "token", id);
    return Envelope({{"id", id}});
  }
  if (r.method == "PUT") {
    json body;
    Response error;
    if (!ParseBody(r, &body, &error)) return error;
    if (Str(body, "name").empty() || !body.contains("policies")) {
      return Error(400, 1001, "name and policies are required");
    }
    const std::string status = Str(body, "status").empty() ? "active" : Str(body, "status");
    if (status != "active" && status != "disabled") {
      return Error(400, 1001, "status must be active or disabled");
    }
    // A full replacement: whatever is omitted is dropped (policies, condition, not_before,
    // expires_on), as the API does.
    absl::Time expires_on = absl::InfiniteFuture(), not_before = absl::InfinitePast();
    std::string err;
    if (body.contains("expires_on") &&
        !absl::ParseTime(absl::RFC3339_full, Str(body, "expires_on"), &expires_on, &err)) {
      return Error(400, 1001, "expires_on must be an RFC 3339 time");
    }
    if (body.contains("not_before") &&
        !absl::ParseTime(absl::RFC3339_full, Str(body, "not_before"), &not_before, &err)) {
      return Error(400, 1001, "not_before must be an RFC 3339 time");
    }
    std::vector<std::string> ip_in, ip_not_in;
    if (body.contains("condition") && body["condition"].is_object()) {
      // The docs write "request.ip", the generated SDKs "request_ip": both are taken.
      const json& cond = body["condition"];
      json ip = cond.contains("request.ip") ? cond["request.ip"] : cond.value("request_ip", json());
      if (ip.is_object()) {
        for (const auto& c : ip.value("in", json::array())) ip_in.push_back(c);
        for (const auto& c : ip.value("not_in", json::array())) ip_not_in.push_back(c);
      }
    }
    t.spec.name = Str(body, "name");
    t.spec.status = status;
    t.spec.expires_on = expires_on;
    t.spec.not_before = not_before;
    t.spec.ip_in = std::move(ip_in);
    t.spec.ip_not_in = std::move(ip_not_in);
    t.policies = body["policies"];
    t.modified = clock_.TimeNow();
    Audit(c, r, "update", "token", t.id);
    return Envelope(TokenJson(t));
  }
  return NoRoute();
}

// ---------------------------------------------------------------------------------------------
// Audit logs

Response FakeCloudflare::AuditLogs(const Request& r, const Caller& c) {
  if (!Allowed(c, "audit_logs")) return Error(403, 10000, "Authentication error");
  if (r.method != "GET") return NoRoute();
  const std::string since = Query(r, "since");
  std::vector<const json*> hits;
  for (const json& e : audit_) {
    if (!since.empty() && e["when"].get<std::string>() < since) continue;
    hits.push_back(&e);
  }
  if (Query(r, "direction") != "asc") std::reverse(hits.begin(), hits.end());
  size_t begin, end;
  json info;
  Response error;
  if (!Paginate(r, 1000, 100, hits.size(), &begin, &end, &info, &error)) return error;
  json result = json::array();
  for (size_t i = begin; i < end; ++i) result.push_back(AuditV1(*hits[i]));
  return Envelope(result, info);
}

Response FakeCloudflare::AuditLogsV2(const Request& r, const Caller& c) {
  if (!Allowed(c, "audit_logs")) return Error(403, 10000, "Authentication error");
  if (r.method != "GET") return NoRoute();
  // since and before are required full dates (RFC 3339 full-date; a date-time is taken too).
  absl::Time since, before;
  if (!ParseDate(Query(r, "since"), &since) || !ParseDate(Query(r, "before"), &before)) {
    return Error(400, 10400, "since and before are required dates (YYYY-MM-DD)");
  }
  const int limit = QueryInt(r, "limit", 100);
  if (limit < 1 || limit > 1000) return Error(400, 10400, "limit must be in 1..1000");
  const std::string token_id = Query(r, "actor_token_id");
  std::vector<std::pair<absl::Time, const json*>> hits;
  for (const json& e : audit_) {
    absl::Time when;
    std::string err;
    if (!absl::ParseTime(absl::RFC3339_full, e["when"].get<std::string>(), &when, &err)) continue;
    if (when < since || when >= before) continue;
    if (!token_id.empty() && e["_v2"]["token_id"] != token_id) continue;
    hits.emplace_back(when, &e);
  }
  // The API lists by record time, not in the order it indexed the records: one indexed late
  // comes below newer ones listed before it (what a newest-first reader stopping at records it
  // has seen may not reach). Records of the same time keep the order they were written.
  std::stable_sort(hits.begin(), hits.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  if (Query(r, "direction") != "asc") std::reverse(hits.begin(), hits.end());
  // The cursor is opaque to clients; here it is the offset of the next record.
  size_t begin = 0;
  const std::string cursor = Query(r, "cursor");
  if (!cursor.empty() && !absl::SimpleAtoi(absl::HexStringToBytes(cursor), &begin)) {
    return Error(400, 10400, "invalid cursor");
  }
  begin = std::min(begin, hits.size());
  const size_t end = std::min(hits.size(), begin + limit);
  json result = json::array();
  for (size_t i = begin; i < end; ++i) {
    const json& e = *hits[i].second;
    const json& v2 = e["_v2"];
    json actor = {{"id", e["actor"]["id"]},
                  {"context", v2["context"]},
                  {"email", e["actor"]["email"]},
                  {"ip_address", e["actor"]["ip"]},
                  {"type", "user"}};
    if (!v2["token_id"].get<std::string>().empty()) {
      actor["token_id"] = v2["token_id"];
      actor["token_name"] = v2["token_name"];
    }
    result.push_back(
        {{"id", e["id"]},
         {"account", {{"id", options_.account_id}, {"name", "Emulated account"}}},
         {"action",
          {{"description", e["action"]["type"]},
           {"result", "success"},
           {"time", e["when"]},
           {"type", e["action"]["type"]}}},
         {"actor", actor},
         {"raw",
          {{"cf_ray_id", e["id"].get<std::string>().substr(0, 16)},
           {"method", v2["method"]},
           {"status_code", 200},
           {"uri", v2["uri"]},
           {"user_agent", ""}}},
         {"resource", {{"id", e["resource"]["id"]}, {"type", e["resource"]["type"]}}},
         {"zone", json::object()}});
  }
  json info = {{"count", std::to_string(end - begin)}};
  if (end < hits.size()) info["cursor"] = absl::BytesToHexString(std::to_string(end));
  return Envelope(result, info);
}

// ---------------------------------------------------------------------------------------------
// Snapshots and admin

json FakeCloudflare::AccessRuleSnapshot() const {
  absl::MutexLock lock(&mu_);
  json out = json::array();
  for (const auto& [id, a] : access_rules_) out.push_back(AccessRuleJson(a));
  return out;
}

json FakeCloudflare::ListSnapshot(const std::string& list_name) const {
  absl::MutexLock lock(&mu_);
  const_cast<FakeCloudflare*>(this)->AdvanceOperations();
  json out = json::array();
  for (const auto& [id, l] : lists_) {
    if (l.name != list_name) continue;
    for (const auto& [ip, item] : l.items) out.push_back({{"ip", ip}, {"comment", item.comment}});
  }
  return out;
}

json FakeCloudflare::RulesetSnapshot(const std::string& phase) const {
  absl::MutexLock lock(&mu_);
  auto it = rulesets_.find(phase);
  return it == rulesets_.end() ? json() : RulesetJson(it->second);
}

json FakeCloudflare::TokenSnapshot(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = tokens_.find(id);
  return it == tokens_.end() ? json() : TokenJson(it->second);
}

json FakeCloudflare::AuditLog() const {
  absl::MutexLock lock(&mu_);
  json out = json::array();
  for (const json& e : audit_) out.push_back(AuditV1(e));
  return out;
}

Response FakeCloudflare::HandleAdmin(const Request& r) {
  if (r.path == "/__emulator/state" && r.method == "GET") {
    json lists = json::object();
    {
      absl::MutexLock lock(&mu_);
      for (const auto& [id, l] : lists_) lists[l.name] = json::array();
    }
    for (auto& [name, items] : lists.items()) items = ListSnapshot(name);
    json tokens = json::array();
    {
      absl::MutexLock lock(&mu_);
      for (const auto& [id, t] : tokens_) tokens.push_back(TokenJson(t));
    }
    json state = {
        {"access_rules", AccessRuleSnapshot()},
        {"lists", lists},
        {"rulesets",
         {{"http_request_firewall_custom", RulesetSnapshot("http_request_firewall_custom")},
          {"http_ratelimit", RulesetSnapshot("http_ratelimit")}}},
        {"tokens", tokens},
        {"audit_log_entries", AuditLog().size()},
        {"calls", calls()},
        {"retired_secret_calls", retired_secret_calls()},
        {"token_revocation_calls", token_revocation_calls()}};
    return Envelope(state);
  }
  json body;
  Response error;
  if (!ParseBody(r, &body, &error)) return error;
  if (r.path == "/__emulator/faults" && r.method == "POST") {
    Faults f;
    f.error_rate = body.value("error_rate", 0.0);
    f.error_status = body.value("error_status", 503);
    f.throttle_rate = body.value("throttle_rate", 0.0);
    f.drop_rate = body.value("drop_rate", 0.0);
    f.fail_call = body.value("fail_call", 0);
    f.drop_after_apply = body.value("drop_after_apply", 0);
    f.drop_after_apply_method = body.value("drop_after_apply_method", "");
    f.latency = absl::Milliseconds(body.value("latency_ms", 0));
    SetFaults(f);
    return Envelope({{"ok", true}});
  }
  if (r.path == "/__emulator/token_permissions" && r.method == "POST") {
    // What an operator does in the dashboard: the token's permissions replaced (its policies
    // rebuilt as AddToken builds them; the secret, status, expiry and IP filter kept).
    absl::MutexLock lock(&mu_);
    auto it = tokens_.find(body.value("id", ""));
    if (it == tokens_.end()) return Error(404, 1003, "token not found");
    it->second.spec.permissions.clear();
    for (const auto& p : body.value("permissions", json::array())) {
      it->second.spec.permissions.insert(p.get<std::string>());
    }
    it->second.policies = PoliciesFor(it->second.spec);
    it->second.modified = clock_.TimeNow();
    return Envelope(TokenJson(it->second));
  }
  if (r.path == "/__emulator/tokens" && r.method == "POST") {
    TokenSpec spec;
    spec.name = body.value("name", "palisade");
    spec.value = body.value("value", "");
    spec.account_owned = body.value("account_owned", false);
    for (const auto& p : body.value("permissions", json::array())) spec.permissions.insert(p);
    for (const auto& c : body.value("ip_in", json::array())) spec.ip_in.push_back(c);
    for (const auto& c : body.value("ip_not_in", json::array())) spec.ip_not_in.push_back(c);
    spec.resources = body.value("resources", "exact");
    if (body.contains("expires_in_seconds")) {
      spec.expires_on = clock_.TimeNow() + absl::Seconds(body["expires_in_seconds"].get<int64_t>());
    }
    auto [id, value] = AddToken(spec);
    return Envelope({{"id", id}, {"value", value}});
  }
  return NoRoute();
}

}  // namespace palisade::fake
