#include "services/cloudflare/client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "services/common/ip.h"

namespace palisade {
namespace {

using json = nlohmann::json;

constexpr char kRetryDelayUrl[] = "type.palisade.dev/cloudflare.retry_delay_ms";
constexpr char kErrorCodeUrl[] = "type.palisade.dev/cloudflare.error_code";

std::string Escape(const std::string& s) {
  char* e = curl_easy_escape(nullptr, s.c_str(), static_cast<int>(s.size()));
  std::string out = e ? e : "";
  curl_free(e);
  return out;
}

std::string Str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

std::optional<absl::Time> ParseTime(const std::string& s) {
  absl::Time t;
  std::string err;
  if (s.empty() || !absl::ParseTime(absl::RFC3339_full, s, &t, &err)) return std::nullopt;
  return t;
}

// An error's "code" when it is an integer an int holds, else 0 (none): a reply's fields are
// read only with the type the API gives them, as the JSON library throws on any other.
int ErrorCode(const json& e) {
  auto it = e.find("code");  // end() on a value that is not an object
  if (it == e.end() || !it->is_number_integer()) return 0;
  if (it->is_number_unsigned()) {
    const uint64_t v = it->get<uint64_t>();
    return v <= static_cast<uint64_t>(std::numeric_limits<int>::max()) ? static_cast<int>(v) : 0;
  }
  const int64_t v = it->get<int64_t>();
  return v >= 0 && v <= std::numeric_limits<int>::max() ? static_cast<int>(v) : 0;
}

// A quota of the account's plan is full (access rules, lists, rate limiting rules, tokens).
bool IsQuotaCode(int cf_code) {
  return cf_code == 10024 || cf_code == 10012 || cf_code == 20022 || cf_code == 1002;
}

// Statuses worth another try whatever the body says, as cloudflare-go v6 retries them (with
// 429, cloudflare-api.md §1.2): a request timeout, a conflict, a server error.
bool TransientHttp(int http) { return http == 408 || http == 409 || http >= 500; }

// "x-should-retry: true|false", which cloudflare-go v6 obeys over the status; absent or any
// other value: the status decides.
std::optional<bool> ShouldRetry(const HttpResponse& r) {
  auto it = r.headers.find("x-should-retry");
  if (it == r.headers.end()) return std::nullopt;
  const absl::string_view v = absl::StripAsciiWhitespace(it->second);
  if (absl::EqualsIgnoreCase(v, "true")) return true;
  if (absl::EqualsIgnoreCase(v, "false")) return false;
  return std::nullopt;
}

// HTTP status first, then the code (cloudflare-api.md, corrections 2 and 3): the same code means
// different things on different endpoints, so a code alone never makes a 400 "not found".
absl::StatusCode CodeFor(int http, int cf_code, absl::string_view message) {
  if (http == 429) return absl::StatusCode::kResourceExhausted;
  if (TransientHttp(http)) return absl::StatusCode::kUnavailable;
  if (http == 404) return absl::StatusCode::kNotFound;
  // The access rules endpoints answer an unknown rule id with this message on a 400 as well as a
  // 404 (cloudflare-api.md 2.5): the message, not the code alone (10001 is "malformed URL
  // parameter" elsewhere), says "not found". A delete of a rule already gone is then done.
  if (cf_code == 10001 && http >= 400 && http < 500 &&
      absl::StrContains(absl::AsciiStrToLower(message), "firewallaccessrules.api.not_found")) {
    return absl::StatusCode::kNotFound;
  }
  if (http == 401) return absl::StatusCode::kUnauthenticated;
  // A valid token used from outside its condition.request.ip: not an invalid credential.
  if (cf_code == 9109 && absl::StrContains(absl::AsciiStrToLower(message), "from location")) {
    return absl::StatusCode::kPermissionDenied;
  }
  switch (cf_code) {
    case 9109:
    case 1000:
    case 9103:
    case 9106:
    case 9107:
    case 6003:
      return absl::StatusCode::kUnauthenticated;
    default:
      break;
  }
  if (http == 403) return absl::StatusCode::kPermissionDenied;
  switch (cf_code) {
    case 10009:
      return absl::StatusCode::kAlreadyExists;
    case 10031:
      return absl::StatusCode::kFailedPrecondition;
    default:
      break;
  }
  // A plan's quota is full: no retry frees it (kResourceExhausted is a throttle, retried).
  if (IsQuotaCode(cf_code)) return absl::StatusCode::kFailedPrecondition;
  return absl::StatusCode::kInvalidArgument;
}

bool Retryable(const absl::Status& s, int http) {
  if (s.code() == absl::StatusCode::kUnavailable) return true;
  return s.code() == absl::StatusCode::kResourceExhausted && http == 429;
}

// Seconds from "Retry-After-Ms: N" or "Retry-After: N" (or an HTTP date, which Cloudflare does
// not send: ignored), as the server wrote them: SimpleAtod takes "1e300", "inf" and "nan" too.
std::optional<double> RetryAfter(const HttpResponse& r) {
  auto it = r.headers.find("retry-after-ms");
  double v = 0;
  if (it != r.headers.end() && absl::SimpleAtod(it->second, &v)) return v / 1000;
  it = r.headers.find("retry-after");
  if (it != r.headers.end() && absl::SimpleAtod(it->second, &v)) return v;
  return std::nullopt;
}

// A redirect's target as scheme and host only ("https://api.cloudflare.com"): its user info,
// path and query may hold anything, a credential included.
std::string Origin(absl::string_view url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == absl::string_view::npos) return "a path on the same host";
  absl::string_view host = url.substr(scheme_end + 3);
  host = host.substr(0, host.find_first_of("/?#"));
  if (const size_t at = host.rfind('@'); at != absl::string_view::npos) host.remove_prefix(at + 1);
  return absl::StrCat(url.substr(0, scheme_end), "://", host);
}

// "Ratelimit: "default";r=50;t=30": when r reaches 0, nothing before t seconds.
std::optional<double> ExhaustedFor(const HttpResponse& r) {
  auto it = r.headers.find("ratelimit");
  if (it == r.headers.end()) return std::nullopt;
  int remaining = -1, reset = 0;
  for (absl::string_view part : absl::StrSplit(it->second, ';')) {
    if (absl::ConsumePrefix(&part, "r=")) (void)absl::SimpleAtoi(part, &remaining);
    if (absl::ConsumePrefix(&part, "t=")) (void)absl::SimpleAtoi(part, &reset);
  }
  if (remaining == 0) return reset;
  return std::nullopt;
}

AccessRule ToAccessRule(const json& j) {
  AccessRule a;
  a.id = Str(j, "id");
  a.mode = Str(j, "mode");
  a.notes = Str(j, "notes");
  if (j.contains("configuration")) {
    a.target = Str(j["configuration"], "target");
    a.value = Str(j["configuration"], "value");
  }
  return a;
}

IpList ToList(const json& j) {
  IpList l;
  l.id = Str(j, "id");
  l.name = Str(j, "name");
  l.kind = Str(j, "kind");
  l.description = Str(j, "description");
  l.num_items = j.value("num_items", 0);
  l.num_referencing_filters = j.value("num_referencing_filters", 0);
  return l;
}

json FromRule(const RulesetRule& r) {
  json j = {{"action", r.action},
            {"expression", r.expression},
            {"description", r.description},
            {"enabled", r.enabled}};
  if (!r.id.empty()) j["id"] = r.id;
  if (!r.ref.empty()) j["ref"] = r.ref;
  if (r.ratelimit) {
    j["ratelimit"] = {{"characteristics", r.ratelimit->characteristics},
                      {"period", r.ratelimit->period},
                      {"requests_per_period", r.ratelimit->requests_per_period},
                      {"mitigation_timeout", r.ratelimit->mitigation_timeout}};
  }
  return j;
}

Ruleset ToRuleset(const json& j) {
  Ruleset rs;
  rs.id = Str(j, "id");
  rs.phase = Str(j, "phase");
  rs.version = Str(j, "version");
  for (const json& r : j.value("rules", json::array())) {
    RulesetRule rule;
    rule.id = Str(r, "id");
    rule.ref = Str(r, "ref");
    rule.description = Str(r, "description");
    rule.expression = Str(r, "expression");
    rule.action = Str(r, "action");
    rule.enabled = r.value("enabled", true);
    if (r.contains("ratelimit") && r["ratelimit"].is_object()) {
      const json& rl = r["ratelimit"];
      RateLimit limit;
      limit.characteristics = rl.value("characteristics", std::vector<std::string>{});
      limit.period = rl.value("period", 0);
      limit.requests_per_period = rl.value("requests_per_period", 0);
      limit.mitigation_timeout = rl.value("mitigation_timeout", 0);
      rule.ratelimit = limit;
    }
    rs.rules.push_back(std::move(rule));
  }
  return rs;
}

TokenInfo ToToken(const json& j) {
  TokenInfo t;
  t.id = Str(j, "id");
  t.name = Str(j, "name");
  t.status = Str(j, "status");
  t.expires_on_text = Str(j, "expires_on");
  t.not_before_text = Str(j, "not_before");
  t.expires_on = ParseTime(t.expires_on_text);
  t.not_before = ParseTime(t.not_before_text);
  t.policies = j.value("policies", json::array());
  if (j.contains("condition") && j["condition"].is_object()) t.condition = j["condition"];
  return t;
}

// The Cloudflare API is outside Palisade's control: a reply of an unexpected shape makes the
// JSON library throw, and no exception may leave the client. (Found by
// tests/fuzz/cloudflare_response_fuzz.)
template <typename R, typename Fn>
R Guarded(Fn fn) {
  try {
    return fn();
  } catch (const json::exception& e) {
    return absl::InternalError(
        absl::StrCat("cloudflare: a reply had an unexpected shape (", e.what(), ")"));
  }
}

absl::Status TooManyPages(absl::string_view label, const ClientOptions& options) {
  return absl::OutOfRangeError(absl::StrCat("cloudflare GET ", label, ": more than ",
                                            options.max_pages,
                                            " pages (the cap); the listing would not end"));
}

// A page holding more items than the per_page asked for is no page of this listing.
absl::Status TooManyItems(absl::string_view label, size_t items, int per_page) {
  return absl::OutOfRangeError(absl::StrCat("cloudflare GET ", label, ": ", items,
                                            " items on a page of ", per_page, " asked for"));
}

// What the client keeps of an item, for max_listing_bytes: its struct and its strings.
size_t KeptBytes(const AccessRule& r) {
  return sizeof(AccessRule) + r.id.size() + r.mode.size() + r.target.size() + r.value.size() +
         r.notes.size();
}

size_t KeptBytes(const ListItem& i) {
  return sizeof(ListItem) + i.id.size() + i.ip.size() + i.comment.size();
}

absl::Status TooManyBytes(absl::string_view label, const ClientOptions& options) {
  return absl::OutOfRangeError(absl::StrCat("cloudflare GET ", label, ": over ",
                                            options.max_listing_bytes,
                                            " bytes of results (the cap)"));
}

}  // namespace

bool TokenShaped(absl::string_view t) {
  if (t.size() < 40 || t.size() > 120) return false;
  return std::all_of(t.begin(), t.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

std::optional<absl::Duration> RetryDelay(const absl::Status& status) {
  absl::optional<absl::Cord> p = status.GetPayload(kRetryDelayUrl);
  int64_t ms = 0;
  if (!p || !absl::SimpleAtoi(std::string(*p), &ms)) return std::nullopt;
  return absl::Milliseconds(ms);
}

std::string CanonicalListIp(const std::string& ip) {
  absl::StatusOr<Cidr> c = Cidr::Parse(ip);
  if (!c.ok()) return ip;
  return c->prefix_length() == c->base().bit_length() ? c->base().ToString() : c->ToString();
}

int CloudflareErrorCode(const absl::Status& status) {
  absl::optional<absl::Cord> p = status.GetPayload(kErrorCodeUrl);
  int code = 0;
  if (!p || !absl::SimpleAtoi(std::string(*p), &code)) return 0;
  return code;
}

bool IsIpRestricted(const absl::Status& status) {
  return status.code() == absl::StatusCode::kPermissionDenied &&
         CloudflareErrorCode(status) == 9109;
}

CloudflareClient::CloudflareClient(HttpTransport& transport, Clock& clock, ClientOptions options,
                                   Credentials credentials, prometheus::Registry& registry)
    : transport_(transport),
      clock_(clock),
      options_(std::move(options)),
      credentials_(std::move(credentials)),
      budget_(options_.budget_requests, options_.budget_window),
      requests_(prometheus::BuildCounter()
                    .Name("palisade_cloudflare_requests_total")
                    .Help("Cloudflare API requests, by endpoint and HTTP status "
                          "(\"transport\" when no answer came).")
                    .Register(registry)),
      retries_(prometheus::BuildCounter()
                   .Name("palisade_cloudflare_retries_total")
                   .Help("Cloudflare API requests retried after 429, 408, 409, 5xx, a transport "
                         "failure or x-should-retry: true.")
                   .Register(registry)),
      outcome_unknown_(prometheus::BuildCounter()
                           .Name("palisade_cloudflare_outcome_unknown_total")
                           .Help("Cloudflare API calls that are not idempotent whose answer was "
                                 "lost after they may have been applied (a 5xx, a timeout, a "
                                 "reply cut off): not repeated, returned as outcome unknown, by "
                                 "endpoint.")
                           .Register(registry)),
      delays_capped_(prometheus::BuildCounter()
                         .Name("palisade_cloudflare_server_delays_capped_total")
                         .Help("Delays the Cloudflare API asked for (Retry-After, Ratelimit) "
                               "longer than max_server_delay, cut to it, by endpoint.")
                         .Register(registry)),
      latency_(prometheus::BuildHistogram()
                   .Name("palisade_cloudflare_request_duration_seconds")
                   .Help("Cloudflare API request latency, by endpoint.")
                   .Register(registry)),
      budget_gauge_(prometheus::BuildGauge()
                        .Name("palisade_cloudflare_budget_remaining")
                        .Help("Requests left in the client's sliding rate-limit window.")
                        .Register(registry)
                        .Add({})) {
  budget_gauge_.Set(options_.budget_requests);
}

int CloudflareClient::BudgetRemaining() { return budget_.Remaining(clock_.TimeNow()); }

std::optional<absl::Duration> CloudflareClient::ServerDelay(double seconds,
                                                            const std::string& label) {
  if (!std::isfinite(seconds) || seconds <= 0) return std::nullopt;
  // Compared as a double: absl::Seconds(1e300) is already an infinite duration.
  if (seconds > absl::ToDoubleSeconds(options_.max_server_delay)) {
    delays_capped_.Add({{"endpoint", label}}).Increment();
    return options_.max_server_delay;
  }
  return absl::Seconds(seconds);
}

absl::Duration CloudflareClient::AwaitBudget() {
  // max_wait holds for the whole wait: another call's 429 may block the budget meanwhile.
  absl::Duration waited = absl::ZeroDuration();
  for (;;) {
    const absl::Duration wait = budget_.Acquire(clock_.TimeNow());
    if (wait <= absl::ZeroDuration()) return absl::ZeroDuration();
    if (waited + wait > options_.max_wait) return wait;
    clock_.SleepFor(wait);
    waited += wait;
  }
}

absl::StatusOr<json> CloudflareClient::SendOnce(const Call& call, Attempt* attempt) {
  HttpRequest req;
  req.method = call.method;
  req.url = options_.base_url + call.path;
  for (size_t i = 0; i < call.query.size(); ++i) {
    absl::StrAppend(&req.url, i == 0 ? "?" : "&", Escape(call.query[i].first), "=",
                    Escape(call.query[i].second));
  }
  req.timeout = options_.timeout;
  req.fresh_connection = call.fresh_connection;
  req.headers.emplace_back("Content-Type", "application/json");
  // Shared hold of the credential gate from reading the secret until the answer is in: a roll
  // (exclusive) waits for this call, and this call never carries a secret the roll retired.
  std::optional<absl::ReaderMutexLock> gate;
  if (call.as_token == nullptr && !call.gate_held) gate.emplace(&cred_mu_);
  if (call.as_token != nullptr) {
    req.headers.emplace_back("Authorization", "Bearer " + call.as_token->value());
  } else if (!credentials_.token.empty()) {
    req.headers.emplace_back("Authorization", "Bearer " + credentials_.token.value());
  } else {
    req.headers.emplace_back("X-Auth-Email", credentials_.email);
    req.headers.emplace_back("X-Auth-Key", credentials_.api_key.value());
  }
  if (call.body) req.body = call.body->dump();

  const absl::Time start = clock_.TimeNow();
  absl::StatusOr<HttpResponse> resp = transport_.Send(req);
  gate.reset();
  const std::string where = absl::StrCat("cloudflare ", call.method, " ", call.label);
  latency_
      .Add({{"endpoint", call.label}},
           prometheus::Histogram::BucketBoundaries{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                                   5, 10})
      .Observe(absl::ToDoubleSeconds(clock_.TimeNow() - start));
  *attempt = Attempt();
  if (!resp.ok()) {
    requests_.Add({{"endpoint", call.label}, {"code", "transport"}}).Increment();
    // A reply over the transport's caps keeps its code, as does a URL of a scheme the transport
    // refuses: asking again would bring the same.
    const absl::StatusCode failed = resp.status().code();
    const absl::StatusCode code =
        failed == absl::StatusCode::kOutOfRange || failed == absl::StatusCode::kFailedPrecondition
            ? failed
            : absl::StatusCode::kUnavailable;
    // Marked by the transport (libcurl's code): its text changes between libcurl versions.
    attempt->unsent = TransportNeverSent(resp.status());
    return absl::Status(code, absl::StrCat(where, ": ", resp.status().message()));
  }
  attempt->http = resp->status;
  attempt->should_retry = ShouldRetry(*resp);
  // Whether the reply says another try may succeed: by its status, or by the API's own word.
  const bool transient = TransientHttp(resp->status) || attempt->should_retry == true;
  requests_.Add({{"endpoint", call.label}, {"code", std::to_string(resp->status)}}).Increment();
  if (call.as_token == nullptr) {
    std::optional<double> reset = ExhaustedFor(*resp);
    std::optional<absl::Duration> wait;
    if (reset) wait = ServerDelay(*reset, call.label);
    if (wait) budget_.BlockUntil(clock_.TimeNow() + *wait);
  }
  // A 429's delay is in its headers, whatever the body is (a proxy's HTML page included): read
  // before the body, so that it is kept and blocks the shared budget either way. So is a 5xx's:
  // Cloudflare's edge and proxies send Retry-After on a 503 (and 502, 504) too, and a retry
  // sooner than asked only adds to the overload.
  std::optional<absl::Duration> retry_after;
  if (resp->status == 429 || resp->status >= 500) {
    if (std::optional<double> seconds = RetryAfter(*resp)) {
      retry_after = ServerDelay(*seconds, call.label);
    }
    if (retry_after && call.as_token == nullptr) {
      budget_.BlockUntil(clock_.TimeNow() + *retry_after);
    }
  }
  // No redirect is followed (the transport refuses to): the API sends none, so one comes from a
  // wrong api_base (http:// moved to https://) or something in between. Not retried.
  if (resp->status >= 300 && resp->status < 400) {
    const auto location = resp->headers.find("location");
    return absl::FailedPreconditionError(
        absl::StrCat(where, ": HTTP ", resp->status, " redirect",
                     location == resp->headers.end() ? "" : " to " + Origin(location->second),
                     " not followed (check cloudflare.api_base)"));
  }
  auto throttled = [&](absl::Status status) {
    if (retry_after) {
      status.SetPayload(kRetryDelayUrl,
                        absl::Cord(std::to_string(absl::ToInt64Milliseconds(*retry_after))));
    }
    return status;
  };
  json body;
  try {
    body = json::parse(resp->body);
  } catch (const json::exception&) {
    if (resp->status == 429) {
      return throttled(absl::ResourceExhaustedError(
          absl::StrCat(where, ": HTTP 429 with a body that is not JSON")));
    }
    if (transient) {
      return throttled(absl::UnavailableError(absl::StrCat(where, ": HTTP ", resp->status)));
    }
    return absl::InternalError(
        absl::StrCat(where, ": HTTP ", resp->status, " with a body that is not JSON"));
  }
  if (!body.is_object()) {
    if (resp->status == 429) {
      return throttled(absl::ResourceExhaustedError(
          absl::StrCat(where, ": HTTP 429 with a body that is not a JSON object")));
    }
    if (transient) {
      return throttled(absl::UnavailableError(absl::StrCat(where, ": HTTP ", resp->status)));
    }
    return absl::InternalError(
        absl::StrCat(where, ": HTTP ", resp->status, " with a body that is not a JSON object"));
  }
  // Every field below is read only with the type the API gives it (find, is_*, Str, ErrorCode):
  // the JSON library throws on another, and a roll reads this reply outside Guarded.
  const bool answered_ok = resp->status >= 200 && resp->status < 300;
  const auto success = body.find("success");
  if (answered_ok && success != body.end() && success->is_boolean() && success->get<bool>()) {
    return body;
  }

  int cf_code = 0;
  std::string message = "no error detail";
  const auto errors = body.find("errors");
  if (errors != body.end() && errors->is_array() && !errors->empty()) {
    const json& e = (*errors)[0];
    cf_code = ErrorCode(e);
    message = e.is_string() ? e.get<std::string>() : Str(e, "message");
    const auto chain = e.find("error_chain");
    if (chain != e.end() && chain->is_array() && !chain->empty()) {
      absl::StrAppend(&message, " (", ErrorCode((*chain)[0]), " ", Str((*chain)[0], "message"),
                      ")");
    }
    if (const auto source = e.find("source"); source != e.end()) {
      absl::StrAppend(&message, " at ", Str(*source, "pointer"));
    }
  }
  // A 2xx that does not say "success": true says neither "done" nor "refused": read as a
  // success that cannot be read (a call that changes state may have been applied).
  absl::StatusCode code =
      answered_ok ? absl::StatusCode::kInternal : CodeFor(resp->status, cf_code, message);
  // A refusal the API says to try again is one to retry, later if not here.
  if (transient && code != absl::StatusCode::kResourceExhausted) {
    code = absl::StatusCode::kUnavailable;
  }
  absl::Status status(
      code, absl::StrCat(where, ": HTTP ", resp->status, " code ", cf_code, " ", message,
                         code == absl::StatusCode::kFailedPrecondition && IsQuotaCode(cf_code)
                             ? " (a quota of the account's plan: not retried)"
                         : answered_ok ? " (a reply that does not say \"success\": true)"
                                       : ""));
  if (cf_code != 0) status.SetPayload(kErrorCodeUrl, absl::Cord(std::to_string(cf_code)));
  return throttled(std::move(status));  // only a 429 or a 5xx has a delay to carry
}

absl::StatusOr<json> CloudflareClient::Send(const Call& call) {
  static thread_local std::mt19937_64 jitter(std::random_device{}());
  absl::Status last;
  for (int attempt = 1; attempt <= options_.max_attempts; ++attempt) {
    if (call.as_token == nullptr) {
      const absl::Duration wait = AwaitBudget();
      if (wait > absl::ZeroDuration()) {
        absl::Status s = absl::ResourceExhaustedError(absl::StrCat(
            "cloudflare ", call.method, " ", call.label, ": request budget spent; retry in ",
            absl::FormatDuration(absl::Ceil(wait, absl::Seconds(1)))));
        s.SetPayload(kRetryDelayUrl, absl::Cord(std::to_string(absl::ToInt64Milliseconds(wait))));
        return s;
      }
      budget_gauge_.Set(budget_.Remaining(clock_.TimeNow()));
    }
    Attempt sent;
    absl::StatusOr<json> result = SendOnce(call, &sent);
    if (result.ok()) return result;
    last = result.status();
    // The API's x-should-retry, when it sent one, decides over the status.
    const bool retry = sent.should_retry.value_or(Retryable(last, sent.http));
    // A call a repeat would apply twice goes again only when this attempt did nothing: it never
    // left, it was refused (4xx: 429, 408 and 409 among them), or the API says to retry it.
    // After a 5xx, no answer, or a success that cannot be read, it may have been applied:
    // the caller must read the state back before sending it again.
    const bool idempotent =
        call.method == "GET" || call.method == "PUT" || call.method == "DELETE" || call.repeat_safe;
    const bool answered_ok = sent.http >= 200 && sent.http < 300;
    const bool may_have_acted = sent.should_retry != true &&
                                (sent.http == 0 ? !sent.unsent : (sent.http >= 500 || answered_ok));
    if (!idempotent && may_have_acted) {
      outcome_unknown_.Add({{"endpoint", call.label}}).Increment();
      absl::Status unknown(absl::StatusCode::kUnknown,
                           absl::StrCat(last.message(),
                                        "; outcome unknown: it may have been applied and a "
                                        "repeat could apply it twice, so it was not sent again "
                                        "(read the state back first)"));
      // The Cloudflare code, when the reply had one, stays readable (CloudflareErrorCode).
      last.ForEachPayload([&unknown](absl::string_view url, const absl::Cord& payload) {
        unknown.SetPayload(url, payload);
      });
      return unknown;
    }
    if (!retry || attempt == options_.max_attempts) break;
    // Backoff: the server's Retry-After when it gave one, else 1s·2^n capped, with jitter.
    absl::Duration delay;
    if (std::optional<absl::Duration> server = RetryDelay(last)) {
      delay = *server;
    } else {
      const absl::Duration base =
          std::min(options_.max_backoff, options_.initial_backoff * std::pow(2.0, attempt - 1));
      delay = base * (0.5 + 0.5 * std::uniform_real_distribution<double>(0, 1)(jitter));
    }
    if (delay > options_.max_wait) break;
    retries_.Add({{"endpoint", call.label}}).Increment();
    clock_.SleepFor(delay);
  }
  return last;
}

std::string CloudflareClient::ScopePath(RuleScope scope) const {
  return scope == RuleScope::kZone ? "/zones/" + options_.zone_id
                                   : "/accounts/" + options_.account_id;
}

std::string CloudflareClient::TokenPath(bool account_owned) const {
  return account_owned ? "/accounts/" + options_.account_id + "/tokens" : "/user/tokens";
}

// --- tokens ----------------------------------------------------------------------------------

absl::StatusOr<TokenInfo> CloudflareClient::Verify(const Secret* as_token, bool account_first) {
  return Guarded<absl::StatusOr<TokenInfo>>([&]() -> absl::StatusOr<TokenInfo> {
    absl::Status first;
    bool account_unasked = false;
    for (bool account : {account_first, !account_first}) {
      // No account id, no account endpoint: /accounts//tokens/verify answers 404 or 400, which
      // says nothing of the token (a verify-only client of a cluster node may lack one).
      if (account && options_.account_id.empty()) {
        account_unasked = true;
        continue;
      }
      Call call{"GET", TokenPath(account) + "/verify", "tokens/verify"};
      call.as_token = as_token;
      absl::StatusOr<json> r = Send(call);
      if (!r.ok()) {
        // The user endpoint refuses an account token (and the reverse) as "Invalid API Token";
        // only a refusal from both says the token is invalid. The first refusal is the one
        // reported: it comes from the endpoint the caller named.
        if (r.status().code() != absl::StatusCode::kUnauthenticated) return r.status();
        if (first.ok()) first = r.status();
        continue;
      }
      TokenInfo info = ToToken((*r)["result"]);
      if (info.id.empty()) return absl::InternalError("cloudflare tokens/verify: reply has no id");
      info.account_owned = account;
      return info;
    }
    // Refused by the user endpoint only: an account token would be refused there too.
    if (account_unasked) {
      return absl::UnknownError(
          absl::StrCat(first.message(),
                       "; the account endpoint was not asked (no account id is configured), "
                       "so whether it is a live account token is unknown"));
    }
    return first;
  });
}

absl::StatusOr<TokenInfo> CloudflareClient::VerifyToken(bool account_owned) {
  return Verify(nullptr, account_owned);
}

absl::StatusOr<TokenInfo> CloudflareClient::VerifyOtherToken(const Secret& token,
                                                             bool account_owned) {
  return Verify(&token, account_owned);
}

absl::StatusOr<TokenInfo> CloudflareClient::GetToken(const std::string& id, bool account_owned) {
  return Guarded<absl::StatusOr<TokenInfo>>([&]() -> absl::StatusOr<TokenInfo> {
    absl::StatusOr<json> r = Send({"GET", TokenPath(account_owned) + "/" + id, "tokens/get"});
    if (!r.ok()) return r.status();
    return ToToken((*r)["result"]);
  });
}

absl::StatusOr<TokenInfo> CloudflareClient::DisableToken(const std::string& id,
                                                         bool account_owned) {
  return Guarded<absl::StatusOr<TokenInfo>>([&]() -> absl::StatusOr<TokenInfo> {
    absl::StatusOr<TokenInfo> current = GetToken(id, account_owned);
    if (!current.ok()) return current.status();
    Call call{"PUT", TokenPath(account_owned) + "/" + id, "tokens/update"};
    json body{{"name", current->name}, {"policies", current->policies}, {"status", "disabled"}};
    if (!current->condition.is_null()) body["condition"] = current->condition;
    // As the GET wrote them: a time parsed and written again would drop one the parser does not
    // take (the token would lose its expiry) and change the form of the others.
    if (!current->expires_on_text.empty()) body["expires_on"] = current->expires_on_text;
    if (!current->not_before_text.empty()) body["not_before"] = current->not_before_text;
    call.body = std::move(body);
    absl::StatusOr<json> r = Send(call);
    if (!r.ok()) return r.status();
    return ToToken((*r)["result"]);
  });
}

absl::StatusOr<CloudflareClient::RolledToken> CloudflareClient::RollToken(
    const std::string& id, bool account_owned,
    const std::function<absl::Status(const Secret&)>& persist) {
  // The budget before the gate: a roll must not hold every other call while it waits for it.
  if (AwaitBudget() > absl::ZeroDuration()) {
    return absl::ResourceExhaustedError("cloudflare PUT tokens/roll: request budget spent");
  }
  // Guarded as every call is: a reply of an unexpected shape is kInternal (a roll that may
  // have been done, which the rotator checks), never an exception on the rotator's thread.
  return Guarded<absl::StatusOr<RolledToken>>([&]() -> absl::StatusOr<RolledToken> {
    absl::WriterMutexLock lock(&cred_mu_);
    Call call{"PUT", TokenPath(account_owned) + "/" + id + "/value", "tokens/roll"};
    call.body = json::object();
    call.gate_held = true;
    // A PUT, yet a repeat retires the secret the first one returned: never on a kept connection,
    // which libcurl would send it on again, unseen, if it died before the answer.
    call.fresh_connection = true;
    Attempt sent;
    absl::StatusOr<json> r = SendOnce(call, &sent);
    if (!r.ok()) {
      // SendOnce's status does not carry the transport's mark: kept, so that a roll that never
      // left is not taken for one that may have been done.
      return sent.unsent ? MarkTransportNeverSent(r.status()) : r.status();
    }
    const json& result = (*r)["result"];
    if (!result.is_string() || result.get<std::string>().empty()) {
      return absl::InternalError("cloudflare PUT tokens/roll: the reply has no new value");
    }
    // Saved as is, a value of another shape would be refused by the next start (and the
    // secret it replaced is dead): a reply that cannot be read, which the rotator checks. The
    // value itself is never in the message.
    if (!TokenShaped(result.get<std::string>())) {
      return absl::InternalError(
          absl::StrCat("cloudflare PUT tokens/roll: the reply's new value is not token-shaped (",
                       result.get<std::string>().size(), " characters)"));
    }
    Secret fresh(result.get<std::string>());
    absl::Status persisted = persist(fresh);
    credentials_.token = fresh;
    // Whether it was saved or not, the new secret is the only live one: the caller gets it
    // either way, so it can save it again instead of taking the roll as failed.
    return RolledToken{std::move(fresh), std::move(persisted)};
  });
}

void CloudflareClient::SetToken(Secret token) {
  absl::WriterMutexLock lock(&cred_mu_);
  credentials_.token = std::move(token);
}

absl::Status CloudflareClient::DeleteToken(const std::string& id, bool account_owned) {
  return Guarded<absl::Status>([&]() -> absl::Status {
    return Send({"DELETE", TokenPath(account_owned) + "/" + id, "tokens/delete"}).status();
  });
}

// --- access rules ----------------------------------------------------------------------------

absl::StatusOr<Page<AccessRule>> CloudflareClient::ListAccessRules(RuleScope scope,
                                                                   const AccessRuleFilter& f,
                                                                   int page, int per_page) {
  return Guarded<absl::StatusOr<Page<AccessRule>>>([&]() -> absl::StatusOr<Page<AccessRule>> {
    // The filter takes only these targets (no "ip6": an IPv6 rule is found by notes or paging).
    if (!f.target.empty() && f.target != "ip" && f.target != "ip_range" && f.target != "asn" &&
        f.target != "country") {
      return absl::InvalidArgumentError(absl::StrCat(
          "cloudflare access_rules/list: configuration.target cannot be \"", f.target, "\""));
    }
    Call call{"GET", ScopePath(scope) + "/firewall/access_rules/rules", "access_rules/list"};
    call.query = {{"page", std::to_string(page)}, {"per_page", std::to_string(per_page)}};
    if (!f.mode.empty()) call.query.emplace_back("mode", f.mode);
    if (!f.target.empty()) call.query.emplace_back("configuration.target", f.target);
    if (!f.value.empty()) call.query.emplace_back("configuration.value", f.value);
    if (!f.notes.empty()) call.query.emplace_back("notes", f.notes);
    absl::StatusOr<json> r = Send(call);
    if (!r.ok()) return r.status();
    const json& result = (*r)["result"];
    if (result.size() > static_cast<size_t>(per_page)) {
      return TooManyItems("access_rules/list", result.size(), per_page);
    }
    Page<AccessRule> out;
    for (const json& j : result) out.items.push_back(ToAccessRule(j));
    if (r->contains("result_info")) {
      out.total_pages = (*r)["result_info"].value("total_pages", 0);
      out.total_count = (*r)["result_info"].value("total_count", 0);
    }
    return out;
  });
}

absl::StatusOr<std::vector<AccessRule>> CloudflareClient::ListAllAccessRules(
    RuleScope scope, const AccessRuleFilter& f) {
  return Guarded<absl::StatusOr<std::vector<AccessRule>>>(
      [&]() -> absl::StatusOr<std::vector<AccessRule>> {
        std::vector<AccessRule> all;
        size_t bytes = 0;
        for (int page = 1;; ++page) {
          if (page > options_.max_pages) return TooManyPages("access_rules/list", options_);
          absl::StatusOr<Page<AccessRule>> p = ListAccessRules(scope, f, page);
          if (!p.ok()) return p.status();
          // Stop on an empty page (past the end answers 200 with []), as the SDK does.
          if (p->items.empty()) break;
          for (const AccessRule& r : p->items) bytes += KeptBytes(r);
          if (bytes > options_.max_listing_bytes) {
            return TooManyBytes("access_rules/list", options_);
          }
          all.insert(all.end(), p->items.begin(), p->items.end());
          if (p->total_pages > 0 && page >= p->total_pages) break;
        }
        return all;
      });
}

absl::StatusOr<AccessRule> CloudflareClient::CreateAccessRule(RuleScope scope,
                                                              const std::string& mode,
                                                              const std::string& target,
                                                              const std::string& value,
                                                              const std::string& notes) {
  return Guarded<absl::StatusOr<AccessRule>>([&]() -> absl::StatusOr<AccessRule> {
    Call call{"POST", ScopePath(scope) + "/firewall/access_rules/rules", "access_rules/create"};
    // A repeat is refused as a duplicate of the rule (10009), which the caller adopts.
    call.repeat_safe = true;
    call.body = json{{"mode", mode},
                     {"configuration", {{"target", target}, {"value", value}}},
                     {"notes", notes}};
    absl::StatusOr<json> r = Send(call);
    if (!r.ok()) return r.status();
    return ToAccessRule((*r)["result"]);
  });
}

absl::Status CloudflareClient::DeleteAccessRule(RuleScope scope, const std::string& id) {
  return Guarded<absl::Status>([&]() -> absl::Status {
    return Send({"DELETE", ScopePath(scope) + "/firewall/access_rules/rules/" + id,
                 "access_rules/delete"})
        .status();
  });
}

// --- lists -----------------------------------------------------------------------------------

absl::StatusOr<std::vector<IpList>> CloudflareClient::ListLists() {
  return Guarded<absl::StatusOr<std::vector<IpList>>>([&]() -> absl::StatusOr<std::vector<IpList>> {
    absl::StatusOr<json> r =
        Send({"GET", "/accounts/" + options_.account_id + "/rules/lists", "lists/list"});
    if (!r.ok()) return r.status();
    std::vector<IpList> out;
    for (const json& j : (*r)["result"]) out.push_back(ToList(j));
    return out;
  });
}

absl::StatusOr<IpList> CloudflareClient::CreateList(const std::string& name,
                                                    const std::string& description) {
  return Guarded<absl::StatusOr<IpList>>([&]() -> absl::StatusOr<IpList> {
    Call call{"POST", "/accounts/" + options_.account_id + "/rules/lists", "lists/create"};
    call.body = json{{"name", name}, {"kind", "ip"}, {"description", description}};
    absl::StatusOr<json> r = Send(call);
    if (!r.ok()) return r.status();
    return ToList((*r)["result"]);
  });
}

absl::StatusOr<IpList> CloudflareClient::GetList(const std::string& list_id) {
  return Guarded<absl::StatusOr<IpList>>([&]() -> absl::StatusOr<IpList> {
    absl::StatusOr<json> r =
        Send({"GET", "/accounts/" + options_.account_id + "/rules/lists/" + list_id, "lists/get"});
    if (!r.ok()) return r.status();
    return ToList((*r)["result"]);
  });
}

absl::StatusOr<std::vector<ListItem>> CloudflareClient::ListItems(const std::string& list_id,
                                                                  const std::string& cursor,
                                                                  int per_page,
                                                                  std::string* next_cursor) {
  return Guarded<absl::StatusOr<std::vector<ListItem>>>(
      [&]() -> absl::StatusOr<std::vector<ListItem>> {
        Call call{"GET", "/accounts/" + options_.account_id + "/rules/lists/" + list_id + "/items",
                  "lists/items/list"};
        call.query = {{"per_page", std::to_string(per_page)}};
        if (!cursor.empty()) call.query.emplace_back("cursor", cursor);
        absl::StatusOr<json> r = Send(call);
        if (!r.ok()) return r.status();
        const json& result = (*r)["result"];
        if (result.size() > static_cast<size_t>(per_page)) {
          return TooManyItems("lists/items/list", result.size(), per_page);
        }
        std::vector<ListItem> out;
        for (const json& j : result)
          out.push_back({Str(j, "id"), CanonicalListIp(Str(j, "ip")), Str(j, "comment")});
        next_cursor->clear();
        if (r->contains("result_info") && (*r)["result_info"].contains("cursors")) {
          *next_cursor = Str((*r)["result_info"]["cursors"], "after");
        }
        return out;
      });
}

absl::StatusOr<std::vector<ListItem>> CloudflareClient::ListAllItems(const std::string& list_id) {
  return Guarded<absl::StatusOr<std::vector<ListItem>>>(
      [&]() -> absl::StatusOr<std::vector<ListItem>> {
        std::vector<ListItem> all;
        std::string cursor;
        // Every cursor given so far: one given again would go round for ever. They count
        // toward the listing's bytes.
        std::set<std::string> seen;
        size_t bytes = 0;
        int pages = 0;
        do {
          if (++pages > options_.max_pages) return TooManyPages("lists/items/list", options_);
          std::string next;
          absl::StatusOr<std::vector<ListItem>> page = ListItems(list_id, cursor, 500, &next);
          if (!page.ok()) return page.status();
          for (const ListItem& i : *page) bytes += KeptBytes(i);
          bytes += next.size();
          if (bytes > options_.max_listing_bytes) {
            return TooManyBytes("lists/items/list", options_);
          }
          if (!next.empty() && !seen.insert(next).second) {
            // The cursor is opaque API text, not a credential; shown cut short.
            return absl::OutOfRangeError(absl::StrCat(
                "cloudflare GET lists/items/list: the API answered the repeated cursor ",
                next.substr(0, 64), next.size() > 64 ? "..." : "", " after ", pages,
                " page(s); the listing would not end"));
          }
          all.insert(all.end(), page->begin(), page->end());
          cursor = next;
        } while (!cursor.empty());
        return all;
      });
}

namespace {
json ItemsJson(const std::vector<ListItem>& items) {
  json out = json::array();
  for (const ListItem& i : items) {
    json j = {{"ip", i.ip}};
    if (!i.comment.empty()) j["comment"] = i.comment;
    out.push_back(j);
  }
  return out;
}
}  // namespace

absl::StatusOr<std::string> CloudflareClient::WriteListItems(const std::string& method,
                                                             const std::string& label,
                                                             const std::string& list_id,
                                                             nlohmann::json body) {
  return Guarded<absl::StatusOr<std::string>>([&]() -> absl::StatusOr<std::string> {
    Call call{method, "/accounts/" + options_.account_id + "/rules/lists/" + list_id + "/items",
              label};
    // POST upserts: an item added again keeps one entry (its comment rewritten).
    call.repeat_safe = true;
    call.body = std::move(body);
    absl::StatusOr<json> r = Send(call);
    if (!r.ok()) return r.status();
    return Str((*r)["result"], "operation_id");
  });
}

absl::StatusOr<std::string> CloudflareClient::AddListItems(const std::string& list_id,
                                                           const std::vector<ListItem>& items) {
  return WriteListItems("POST", "lists/items/add", list_id, ItemsJson(items));
}

absl::StatusOr<std::string> CloudflareClient::ReplaceListItems(const std::string& list_id,
                                                               const std::vector<ListItem>& items) {
  return WriteListItems("PUT", "lists/items/replace", list_id, ItemsJson(items));
}

absl::StatusOr<std::string> CloudflareClient::DeleteListItems(
    const std::string& list_id, const std::vector<std::string>& item_ids) {
  json items = json::array();
  for (const std::string& id : item_ids) items.push_back({{"id", id}});
  return WriteListItems("DELETE", "lists/items/delete", list_id, json{{"items", items}});
}

absl::Status CloudflareClient::WaitForOperation(const std::string& operation_id) {
  return Guarded<absl::Status>([&]() -> absl::Status {
    const absl::Time deadline = clock_.TimeNow() + options_.poll_timeout;
    for (;;) {
      absl::StatusOr<json> r =
          Send({"GET",
                "/accounts/" + options_.account_id + "/rules/lists/bulk_operations/" + operation_id,
                "lists/bulk_operations/get"});
      if (!r.ok()) return r.status();
      const std::string status = Str((*r)["result"], "status");
      if (status == "completed") return absl::OkStatus();
      if (status == "failed") {
        return absl::AbortedError(absl::StrCat("list operation ", operation_id,
                                               " failed: ", Str((*r)["result"], "error")));
      }
      if (status != "pending" && status != "running") {
        return absl::InternalError(
            absl::StrCat("list operation ", operation_id, ": unknown status \"", status, "\""));
      }
      if (clock_.TimeNow() >= deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("list operation ", operation_id, " still ", status, " after ",
                         absl::FormatDuration(options_.poll_timeout)));
      }
      clock_.SleepFor(options_.poll_interval);
    }
  });
}

// --- rulesets --------------------------------------------------------------------------------

absl::StatusOr<Ruleset> CloudflareClient::GetEntrypoint(const std::string& phase) {
  return Guarded<absl::StatusOr<Ruleset>>([&]() -> absl::StatusOr<Ruleset> {
    absl::StatusOr<json> r =
        Send({"GET", "/zones/" + options_.zone_id + "/rulesets/phases/" + phase + "/entrypoint",
              "rulesets/entrypoint/get"});
    if (!r.ok()) return r.status();
    return ToRuleset((*r)["result"]);
  });
}

absl::StatusOr<Ruleset> CloudflareClient::PutEntrypoint(const std::string& phase,
                                                        const std::vector<RulesetRule>& rules) {
  return Guarded<absl::StatusOr<Ruleset>>([&]() -> absl::StatusOr<Ruleset> {
    Call call{"PUT", "/zones/" + options_.zone_id + "/rulesets/phases/" + phase + "/entrypoint",
              "rulesets/entrypoint/put"};
    json arr = json::array();
    for (const RulesetRule& r : rules) arr.push_back(FromRule(r));
    call.body = json{{"rules", arr}};
    absl::StatusOr<json> r = Send(call);
    if (!r.ok()) return r.status();
    return ToRuleset((*r)["result"]);
  });
}

absl::StatusOr<Ruleset> CloudflareClient::AddRulesetRule(const std::string& ruleset_id,
                                                         const RulesetRule& rule) {
  return Guarded<absl::StatusOr<Ruleset>>([&]() -> absl::StatusOr<Ruleset> {
    Call call{"POST", "/zones/" + options_.zone_id + "/rulesets/" + ruleset_id + "/rules",
              "rulesets/rules/add"};
    call.body = FromRule(rule);
    absl::StatusOr<json> r = Send(call);
    if (!r.ok()) return r.status();
    return ToRuleset((*r)["result"]);
  });
}

absl::StatusOr<Ruleset> CloudflareClient::DeleteRulesetRule(const std::string& ruleset_id,
                                                            const std::string& rule_id) {
  return Guarded<absl::StatusOr<Ruleset>>([&]() -> absl::StatusOr<Ruleset> {
    absl::StatusOr<json> r = Send(
        {"DELETE", "/zones/" + options_.zone_id + "/rulesets/" + ruleset_id + "/rules/" + rule_id,
         "rulesets/rules/delete"});
    if (!r.ok()) return r.status();
    return ToRuleset((*r)["result"]);
  });
}

absl::StatusOr<Ruleset> CloudflareClient::UpdateRulesetRule(const std::string& ruleset_id,
                                                            const std::string& rule_id,
                                                            const RulesetRule& rule) {
  return Guarded<absl::StatusOr<Ruleset>>([&]() -> absl::StatusOr<Ruleset> {
    Call call{"PATCH",
              "/zones/" + options_.zone_id + "/rulesets/" + ruleset_id + "/rules/" + rule_id,
              "rulesets/rules/update"};
    // Sets the rule's fields: a repeat sets them again.
    call.repeat_safe = true;
    json body = FromRule(rule);
    body.erase("id");  // the path names the rule
    call.body = std::move(body);
    absl::StatusOr<json> r = Send(call);
    if (!r.ok()) return r.status();
    return ToRuleset((*r)["result"]);
  });
}

// --- audit logs ------------------------------------------------------------------------------

absl::StatusOr<AuditLogPage> CloudflareClient::ListAuditLogs(absl::Time since, absl::Time before,
                                                             const std::string& cursor,
                                                             int limit, AuditOrder order) {
  return Guarded<absl::StatusOr<AuditLogPage>>([&]() -> absl::StatusOr<AuditLogPage> {
    Call call{"GET", "/accounts/" + options_.account_id + "/logs/audit", "logs/audit/list"};
    // `since` and `before` are required and are full dates: ask for the whole days around the
    // interval and keep only what falls in it.
    const absl::TimeZone utc = absl::UTCTimeZone();
    call.query = {{"since", absl::FormatTime("%Y-%m-%d", since, utc)},
                  {"before", absl::FormatTime("%Y-%m-%d", before + absl::Hours(24), utc)},
                  {"limit", std::to_string(limit)},
                  {"direction", order == AuditOrder::kNewestFirst ? "desc" : "asc"}};
    if (!cursor.empty()) call.query.emplace_back("cursor", cursor);
    absl::StatusOr<json> r = Send(call);
    if (!r.ok()) return r.status();
    AuditLogPage out;
    bool reached_since = false;
    for (const json& j : (*r)["result"]) {
      AuditLogEntry e;
      e.id = Str(j, "id");
      if (j.contains("action") && j["action"].is_object()) {
        e.action_type = Str(j["action"], "type");
        e.action_result = Str(j["action"], "result");
        e.when = ParseTime(Str(j["action"], "time")).value_or(absl::InfinitePast());
      }
      if (j.contains("actor") && j["actor"].is_object()) {
        const json& actor = j["actor"];
        e.actor_email = Str(actor, "email");
        e.actor_ip = Str(actor, "ip_address");
        e.actor_token_id = Str(actor, "token_id");
        e.actor_token_name = Str(actor, "token_name");
      }
      if (j.contains("resource") && j["resource"].is_object()) {
        e.resource_type = Str(j["resource"], "type");
        e.resource_id = Str(j["resource"], "id");
      }
      // A record whose time is missing or unreadable is skipped, never taken for the end of a
      // newest-first listing (that dropped every older record of the poll).
      if (e.when == absl::InfinitePast()) continue;
      if (e.when < since && order == AuditOrder::kNewestFirst) {
        reached_since = true;  // the rest is older: no need for the next page
        break;
      }
      if (e.when < since || e.when >= before) continue;
      out.items.push_back(std::move(e));
    }
    if (!reached_since && r->contains("result_info") && (*r)["result_info"].is_object()) {
      out.cursor = Str((*r)["result_info"], "cursor");
    }
    return out;
  });
}

}  // namespace palisade
