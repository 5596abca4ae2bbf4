// The typed Cloudflare API v4 client: one method per call Palisade needs, results and errors as
// absl::StatusOr, every request through one RequestBudget, retries with jittered exponential
// backoff on 429/408/409/5xx/transport failures (honouring Retry-After), and metrics per
// endpoint. A reply's "x-should-retry: true|false" decides over its status, as in cloudflare-go
// v6: true is retried (and kUnavailable when the tries run out), false is not retried here.
//
// Retries and idempotence: a call that a repeat cannot apply twice (GET, PUT, DELETE; a PATCH
// that sets fields; POSTs of list items, which upsert, and of access rules, which a repeat
// finds as duplicates, 10009) is retried after any of those. A POST that a repeat would apply
// twice (CreateList, AddRulesetRule) is retried only when nothing was done: no connection was
// made (as the transport marks it, TransportNeverSent), the API refused it for now (429, 408,
// 409), or it said to retry. After a 5xx, a
// timeout, a reply cut off or over the byte caps, or a success that cannot be read it may have
// been applied, so it is not sent again: kUnknown, "outcome unknown", naming the call (and
// counted); the caller reads the state back (the ruleset by rule ref, the list by name) before
// sending it again. (No 5xx is documented as "not applied", cloudflare-api.md §1.2.)
//
// Error mapping: by HTTP status first, then by the Cloudflare code, because the same code means
// different things on different endpoints (10001/10003/10004/10006 are "not found" on some,
// "malformed URL parameter" on others: only a 404 is "not found"). The code and message are kept
// in the status message, and the code in a payload (CloudflareErrorCode).
//   429 (971/10100/10055)                     → kResourceExhausted (Retry-After attached and
//                                               blocking the budget, whatever the body is;
//                                               at most max_server_delay)
//   5xx, 408, 409, transport failures,        → kUnavailable (but kUnknown, above, for a call
//   timeouts                                    that a repeat would apply twice); a 5xx's
//                                               Retry-After is attached and blocks the budget
//                                               as a 429's does
//   404 (10001/10006/1003/7000/7003/...),     → kNotFound
//   or any 4xx + 10001 firewallaccessrules.api.not_found
//   401; 9109/1000/9103/9106/9107/6003        → kUnauthenticated
//   403 + 9109 "Cannot use the access token from location"
//                                             → kPermissionDenied: the token is valid but
//                                               IP-restricted (IsIpRestricted)
//   other 403 (10000)                         → kPermissionDenied
//   3xx (never followed)                      → kFailedPrecondition naming the target's scheme
//                                               and host only; not retried
//   4xx + 10009 duplicate                     → kAlreadyExists
//   4xx + 10031 list in use                   → kFailedPrecondition
//   4xx + quota codes (10024/10012/20022/1002)→ kFailedPrecondition, naming the plan's quota:
//                                               not a throttle, no retry frees it
//   other 4xx                                 → kInvalidArgument
//   a 2xx without "success": true, or whose   → kInternal (may have been applied; kUnknown
//   fields are of unexpected types              for a call that a repeat would apply twice)
//   a reply over the transport's byte caps    → kOutOfRange (not retried: the same call would
//                                               bring the same reply; kUnknown for a call that
//                                               a repeat would apply twice)
// A listing whose pages do not end (a cursor answered again, more than max_pages pages, more
// than max_listing_bytes) is kOutOfRange too, as is a page holding more items than asked for.
// No status message, log line or metric label ever contains a credential.
//
// The client knows nothing of rules or decisions (services/actions drives it).
// Thread-safety: thread-safe.
#ifndef PALISADE_SERVICES_CLOUDFLARE_CLIENT_H_
#define PALISADE_SERVICES_CLOUDFLARE_CLIENT_H_

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "services/cloudflare/http_transport.h"
#include "services/cloudflare/request_budget.h"
#include "services/cloudflare/secret.h"
#include "services/common/clock.h"

namespace palisade {

// Whether `t` has an API token's shape: 40 to 120 characters of [A-Za-z0-9_-]. The rule a token
// file must meet (LoadCredentials) and a roll's new value before it is saved.
bool TokenShaped(absl::string_view t);

struct Credentials {
  // API token (preferred): "Authorization: Bearer".
  Secret token;
  // The legacy Global API Key, only when the config allows it explicitly.
  std::string email;
  Secret api_key;
};

struct ClientOptions {
  std::string base_url = "https://api.cloudflare.com/client/v4";
  std::string account_id;
  std::string zone_id;
  absl::Duration timeout = absl::Seconds(10);
  int max_attempts = 6;
  absl::Duration initial_backoff = absl::Seconds(1);
  absl::Duration max_backoff = absl::Seconds(30);
  // Waits longer than this (budget spent, long Retry-After) are returned as kResourceExhausted
  // instead of slept through.
  absl::Duration max_wait = absl::Seconds(60);
  // The longest delay taken from the server (Retry-After, Retry-After-Ms, "Ratelimit: r=0;t=N"):
  // longer ones are cut to it and counted, so one reply cannot stop every call for a day or for
  // ever. 300 s is Cloudflare's own block (the budget's window). A delay that is no delay (not a
  // number, infinite, zero or negative) is ignored: the client backs off on its own.
  absl::Duration max_server_delay = absl::Seconds(300);
  int budget_requests = 1200;
  absl::Duration budget_window = absl::Seconds(300);
  // List bulk operations: poll interval and give-up time.
  absl::Duration poll_interval = absl::Seconds(1);
  absl::Duration poll_timeout = absl::Seconds(60);
  // What a whole listing (ListAllItems, ListAllAccessRules) may take from the API: pages, and
  // bytes of the items kept (each item's struct and its strings: an item of no strings still
  // costs its struct). 1,000 pages are 100,000 access rules (twice an account's limit) or
  // 500,000 list items (Enterprise's limit); over either, kOutOfRange.
  int max_pages = 1000;
  size_t max_listing_bytes = 64 * 1024 * 1024;
};

enum class RuleScope { kZone, kAccount };

struct AccessRule {
  std::string id, mode, target, value, notes;
};

struct AccessRuleFilter {
  std::string mode, target, value, notes;
};

struct IpList {
  std::string id, name, kind, description;
  int num_items = 0;
  int num_referencing_filters = 0;
};

struct ListItem {
  std::string id;
  std::string ip;  // canonical (CanonicalListIp) in what the client returns
  std::string comment;
};

struct RateLimit {
  std::vector<std::string> characteristics = {"cf.colo.id", "ip.src"};
  int period = 60;
  int requests_per_period = 10;
  int mitigation_timeout = 600;
};

struct RulesetRule {
  std::string id, ref, description, expression, action;
  bool enabled = true;
  std::optional<RateLimit> ratelimit;
};

struct Ruleset {
  std::string id, phase, version;
  std::vector<RulesetRule> rules;
};

struct TokenInfo {
  std::string id, name, status;
  std::optional<absl::Time> expires_on;
  std::optional<absl::Time> not_before;
  // The same as the API wrote them (empty when absent), sent back unchanged on update: a time
  // parsed and formatted again would be dropped when the parser does not take it.
  std::string expires_on_text, not_before_text;
  // Opaque, sent back unchanged on update: a token PUT replaces the whole token, so what is not
  // resent is dropped (an IP condition lost on disable would be gone on re-enable).
  nlohmann::json policies;
  nlohmann::json condition;  // null when the token has none
  // Which verify endpoint accepted the token (set by VerifyToken / VerifyOtherToken).
  bool account_owned = false;
};

// One record of audit logs v2 (GET /accounts/{id}/logs/audit): v1 has no actor.token_id.
struct AuditLogEntry {
  std::string id, action_type, action_result, actor_email, actor_ip, actor_token_id,
      actor_token_name, resource_type, resource_id;
  absl::Time when;
};

// One page of audit logs v2; `cursor` is empty on the last page.
struct AuditLogPage {
  std::vector<AuditLogEntry> items;
  std::string cursor;
};

template <typename T>
struct Page {
  std::vector<T> items;
  int total_pages = 0;
  int total_count = 0;
};

// The retry delay a status carries, when the server gave one: a 429's (kResourceExhausted) or a
// 5xx's (kUnavailable, or kUnknown for a call a repeat would apply twice).
std::optional<absl::Duration> RetryDelay(const absl::Status& status);

// The canonical form of a list item's ip, as Palisade writes items: one IPv4 address bare
// ("192.0.2.1", which the API may answer as "192.0.2.1/32": the same item), a range as
// "base/len" with the address in its shortest lower-case form. Unparsable text is returned as is.
std::string CanonicalListIp(const std::string& ip);

// The Cloudflare error code a status from the client carries (errors[0].code), 0 when none.
int CloudflareErrorCode(const absl::Status& status);

// True when Cloudflare refused a call because the token may not be used from the caller's
// address (403, 9109 "Cannot use the access token from location"): the token itself is valid.
bool IsIpRestricted(const absl::Status& status);

class CloudflareClient {
 public:
  CloudflareClient(HttpTransport& transport, Clock& clock, ClientOptions options,
                   Credentials credentials, prometheus::Registry& registry);

  // --- tokens ---
  // Verifies the client's own token. `account_owned` picks the endpoint tried first (a cfat_
  // prefix says so, but account tokens made before 2026 have no prefix): when it refuses the
  // token, the other one (user or account) is tried. TokenInfo.account_owned tells which took it.
  absl::StatusOr<TokenInfo> VerifyToken(bool account_owned = false);
  // The same for another token, e.g. one found leaked in a log, using it as the credential.
  absl::StatusOr<TokenInfo> VerifyOtherToken(const Secret& token, bool account_owned);
  absl::StatusOr<TokenInfo> GetToken(const std::string& id, bool account_owned);
  // PUT with status "disabled", resending everything else the token has (name, policies,
  // condition, not_before, expires_on): the PUT is a full replacement.
  absl::StatusOr<TokenInfo> DisableToken(const std::string& id, bool account_owned);
  absl::Status DeleteToken(const std::string& id, bool account_owned);
  // Rolls the client's own token's secret (PUT .../tokens/{id}/value). The old secret stops
  // working the moment the roll succeeds, so the roll runs behind a writer gate: calls in flight
  // finish first, new calls wait, and none goes out with the old value afterwards. Once the new
  // value is known `persist` runs (still behind the gate: write it where the next start reads
  // it), then every later call uses it. A failed roll keeps the old secret and returns the
  // error. A roll that succeeded returns the new secret even when persist failed (in
  // RolledToken::persisted): the client uses it, the old one is dead, and the caller must keep
  // it and save it again, never roll over it.
  // Never retried here: a roll whose answer was lost may have happened. Sent on a connection of
  // its own (a resend on a dead kept one would carry the retired secret). A failure that never
  // left is marked so (TransportNeverSent); a reply of an unexpected shape is kInternal.
  struct RolledToken {
    Secret secret;           // in use from now on
    absl::Status persisted;  // what `persist` returned
  };
  absl::StatusOr<RolledToken> RollToken(const std::string& id, bool account_owned,
                                        const std::function<absl::Status(const Secret&)>& persist);
  // Switches the client to another secret (a roll-forward at start), behind the same gate.
  void SetToken(Secret token);

  // --- IP access rules ---
  absl::StatusOr<Page<AccessRule>> ListAccessRules(RuleScope scope, const AccessRuleFilter& f,
                                                   int page, int per_page = 100);
  absl::StatusOr<std::vector<AccessRule>> ListAllAccessRules(RuleScope scope,
                                                             const AccessRuleFilter& f);
  absl::StatusOr<AccessRule> CreateAccessRule(RuleScope scope, const std::string& mode,
                                              const std::string& target, const std::string& value,
                                              const std::string& notes);
  absl::Status DeleteAccessRule(RuleScope scope, const std::string& id);

  // --- IP lists ---
  absl::StatusOr<std::vector<IpList>> ListLists();
  absl::StatusOr<IpList> CreateList(const std::string& name, const std::string& description);
  absl::StatusOr<IpList> GetList(const std::string& list_id);
  // One page of items; `next_cursor` is empty on the last page.
  absl::StatusOr<std::vector<ListItem>> ListItems(const std::string& list_id,
                                                  const std::string& cursor, int per_page,
                                                  std::string* next_cursor);
  absl::StatusOr<std::vector<ListItem>> ListAllItems(const std::string& list_id);
  // Asynchronous writes: each returns the bulk operation id.
  absl::StatusOr<std::string> AddListItems(const std::string& list_id,
                                           const std::vector<ListItem>& items);
  absl::StatusOr<std::string> ReplaceListItems(const std::string& list_id,
                                               const std::vector<ListItem>& items);
  absl::StatusOr<std::string> DeleteListItems(const std::string& list_id,
                                              const std::vector<std::string>& item_ids);
  // Polls until completed (OK), failed (kAborted with the operation's error), or poll_timeout
  // (kDeadlineExceeded).
  absl::Status WaitForOperation(const std::string& operation_id);

  // --- rulesets (zone phase entrypoints) ---
  // kNotFound when the phase has no entrypoint yet.
  absl::StatusOr<Ruleset> GetEntrypoint(const std::string& phase);
  absl::StatusOr<Ruleset> PutEntrypoint(const std::string& phase,
                                        const std::vector<RulesetRule>& rules);
  absl::StatusOr<Ruleset> AddRulesetRule(const std::string& ruleset_id, const RulesetRule& rule);
  absl::StatusOr<Ruleset> DeleteRulesetRule(const std::string& ruleset_id,
                                            const std::string& rule_id);
  // PATCH: sets the rule's fields to `rule`'s (its id is taken from `rule_id`); returns the whole
  // ruleset.
  absl::StatusOr<Ruleset> UpdateRulesetRule(const std::string& ruleset_id,
                                            const std::string& rule_id, const RulesetRule& rule);

  // --- audit logs (v2: the only version that names the token used for a call) ---
  // Records from `since` (inclusive) to `before` (exclusive), in `order`, one page of at most
  // `limit`; pass the previous page's cursor, with the same since, before and order, for the next
  // one. The API filters by whole days (`since`/`before` are dates); the rest is filtered here.
  // Newest first, a record older than `since` ends the listing (the page's cursor is empty): the
  // rest of that day is older still, so a poller reading back to a position pays only for the
  // pages after it, however busy the day was before it.
  enum class AuditOrder { kOldestFirst, kNewestFirst };
  absl::StatusOr<AuditLogPage> ListAuditLogs(absl::Time since, absl::Time before,
                                             const std::string& cursor = "", int limit = 100,
                                             AuditOrder order = AuditOrder::kOldestFirst);

  int BudgetRemaining();
  const ClientOptions& options() const { return options_; }

 private:
  struct Call {
    std::string method;
    std::string path;   // after base_url, with ids filled in
    std::string label;  // endpoint template, the metric label
    std::vector<std::pair<std::string, std::string>> query;
    std::optional<nlohmann::json> body;
    const Secret* as_token = nullptr;  // another credential (token verification)
    bool gate_held = false;            // the caller holds cred_mu_ as writer (the roll)
    // A POST or PATCH that a repeat cannot apply twice (GET, PUT and DELETE are so by method):
    // it is retried after an answer that may follow a change, as those are.
    bool repeat_safe = false;
    // Never on a kept connection (HttpRequest::fresh_connection): a PUT a repeat would undo.
    bool fresh_connection = false;
  };
  // Waits for a slot in the budget: zero once one is reserved, or the wait still ahead when
  // waiting on would take longer than max_wait in all (nothing reserved then).
  absl::Duration AwaitBudget();
  // A delay the server gave, as the client takes it (see max_server_delay); counts a cut one.
  std::optional<absl::Duration> ServerDelay(double seconds, const std::string& label);
  // What one attempt learnt beyond its result.
  struct Attempt {
    int http = 0;                      // the reply's status; 0 when none came
    std::optional<bool> should_retry;  // the reply's x-should-retry, when it had one
    bool unsent = false;               // no reply: the request never left (TransportNeverSent)
  };
  // Sends with budget, retries and error mapping; returns the whole envelope.
  absl::StatusOr<nlohmann::json> Send(const Call& call);
  absl::StatusOr<nlohmann::json> SendOnce(const Call& call, Attempt* attempt);
  // POST/PUT/DELETE on a list's items: the asynchronous operation's id.
  absl::StatusOr<std::string> WriteListItems(const std::string& method, const std::string& label,
                                             const std::string& list_id, nlohmann::json body);
  // Verify on the preferred endpoint, then the other one when the first refuses the token.
  absl::StatusOr<TokenInfo> Verify(const Secret* as_token, bool account_first);
  std::string ScopePath(RuleScope scope) const;
  std::string TokenPath(bool account_owned) const;

  HttpTransport& transport_;
  Clock& clock_;
  const ClientOptions options_;
  // The credential gate: every call holds it shared while it reads the secret and sends; a roll
  // holds it exclusively. Guards credentials_ (not annotated: SendOnce reads it under either).
  absl::Mutex cred_mu_;
  Credentials credentials_;
  RequestBudget budget_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& retries_;
  prometheus::Family<prometheus::Counter>& outcome_unknown_;
  prometheus::Family<prometheus::Counter>& delays_capped_;
  prometheus::Family<prometheus::Histogram>& latency_;
  prometheus::Gauge& budget_gauge_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_CLOUDFLARE_CLIENT_H_
