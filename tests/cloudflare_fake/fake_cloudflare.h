// A local emulator of the parts of the Cloudflare API v4 that Palisade uses, in memory, on an
// injected clock. It follows ../shared/cloudflare-api.md: the envelope and status codes, bearer
// and legacy credentials with permission-scoped tokens (status, expiry, IP conditions), the
// global rate limit (1,200 requests / 300 s per credential → 429 code 971 with Retry-After),
// page and cursor pagination, asynchronous list operations (pending → running → completed),
// duplicate and not-found codes, plan quotas, rulesets semantics (PUT replaces, POST appends,
// versions as strings), the token life cycle, and an audit-log entry for every mutation.
//
// Where the document marks behaviour as uncertain, Options makes it configurable.
// Faults (5xx, 429, added latency, dropped connections, an answer dropped after the call was
// applied) are scripted with SetFaults or over HTTP at POST /__emulator/faults. All but the last
// fire before any state changes.
//
// FakeCloudflare::Handle is a pure request → response function; EmulatorServer
// (emulator_server.h) puts it on a loopback port.
// Thread-safety: Handle and the admin methods are thread-safe.
#ifndef PALISADE_TESTS_CLOUDFLARE_FAKE_FAKE_CLOUDFLARE_H_
#define PALISADE_TESTS_CLOUDFLARE_FAKE_FAKE_CLOUDFLARE_H_

#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "services/common/clock.h"
#include "services/common/ip.h"

namespace palisade::fake {

using json = nlohmann::json;

struct Request {
  std::string method;
  std::string path;  // without the query, e.g. /client/v4/zones/z/firewall/access_rules/rules
  std::map<std::string, std::string> query;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string remote_ip = "127.0.0.1";
};

struct Response {
  int status = 200;
  std::map<std::string, std::string> headers;
  std::string body;
  // Fault injection: the server closes the connection without answering.
  bool drop_connection = false;
  absl::Duration delay;
};

struct Options {
  std::string account_id = "0123456789abcdef0123456789abcdef";
  std::string zone_id = "fedcba9876543210fedcba9876543210";
  // The zone's plan: "free", "pro", "business" (default) or "enterprise". It sets which rate
  // limiting `period` and `mitigation_timeout` values are accepted (Free: 10 s and 10 s).
  std::string plan = "business";
  // Plan quotas (Business by default).
  int max_lists = 10;
  int max_list_items = 10000;
  int max_access_rules = 50000;
  int max_ratelimit_rules = 5;
  // Global rate limit per credential.
  int rate_limit_requests = 1200;
  absl::Duration rate_limit_window = absl::Seconds(300);
  // How long a list bulk operation stays pending, then running, before it completes.
  absl::Duration operation_pending = absl::Milliseconds(200);
  absl::Duration operation_running = absl::Milliseconds(200);
  // 2025-10 docs: a list write while another is in flight gets 429. Older docs: queued FIFO.
  bool reject_concurrent_list_writes = true;
  // Accept X-Auth-Email + X-Auth-Key with this key (empty: legacy auth always fails).
  std::string legacy_email = "ops@example.com";
  std::string legacy_key;
  // The user behind the tokens and the key (audit logs' actor.id).
  std::string user_id = "f6b5de0326bb5182b8a4840ee01ec774";
  // List items of one IPv4 address are answered as "a.b.c.d/32", as the API has done (the
  // same item as "a.b.c.d"); false answers the bare address.
  bool ipv4_items_as_cidr = true;
};

struct Faults {
  // Probability in [0, 1] that a call fails with `status` (5xx) or 429, or is dropped.
  double error_rate = 0;
  int error_status = 503;
  double throttle_rate = 0;
  double drop_rate = 0;
  // Fail exactly the Nth call from now (1-based) with `error_status`; 0: off.
  int fail_call = 0;
  // Apply exactly the Nth call from now (1-based) that reaches the API (no other fault took
  // it) and whose method is `drop_after_apply_method` (empty: any), then drop the connection
  // instead of answering: the change is made and the caller never hears of it, as after a
  // timeout or a reset once Cloudflare has acted. 0: off.
  int drop_after_apply = 0;
  std::string drop_after_apply_method;
  absl::Duration latency;
};

// A token as the emulator knows it. Permissions are short names:
//   "access_rules" (account access rules: "Account Firewall Access Rules Write" on the account),
//   "firewall_services" (zone access rules: "Firewall Services Write" on the zone),
//   "lists", "rulesets", "tokens", "audit_logs" (each read+write),
//   "tokens.read", "verify" (always allowed),
// or the names of permission groups the API has that no endpoint here needs ("DNS Write",
// "Account Settings Read", "Zone Read"). AddToken turns them into the real policies (permission
// group ids and names on exact resources, see PermissionGroups()); enforcement reads the
// policies, so a token changed over the API is enforced as changed.
struct TokenSpec {
  std::string name = "palisade";
  std::string value;  // the secret; empty: generated
  bool account_owned = false;
  std::string status = "active";
  absl::Time expires_on = absl::InfiniteFuture();
  absl::Time not_before = absl::InfinitePast();
  std::set<std::string> permissions;
  std::vector<std::string> ip_in;      // CIDRs
  std::vector<std::string> ip_not_in;  // CIDRs
  // "exact" (the configured account, zone, user), "all_accounts" (com.cloudflare.api.account.*
  // and com.cloudflare.api.account.zone.*) or "all_zones" (every zone of the account).
  std::string resources = "exact";
};

// The permission groups GET /user/tokens/permission_groups answers: {id, name, scopes, short}
// where `short` is the TokenSpec name the emulator enforces (absent for groups no endpoint needs).
const json& PermissionGroups();

class FakeCloudflare {
 public:
  FakeCloudflare(Clock& clock, Options options = Options());

  Response Handle(const Request& request);

  // --- test and admin surface (never over the API) ---
  // Creates a token; returns {id, value}.
  std::pair<std::string, std::string> AddToken(const TokenSpec& spec);
  void SetFaults(const Faults& faults);
  Options& options() { return options_; }
  // Handles /__emulator/... admin requests (state dump, faults, clock, tokens).
  Response HandleAdmin(const Request& request);

  // Snapshots for assertions.
  json AccessRuleSnapshot() const;                        // all access rules, zone and account
  json ListSnapshot(const std::string& list_name) const;  // ips of a list (empty if no list)
  json RulesetSnapshot(const std::string& phase) const;   // entrypoint or null
  json TokenSnapshot(const std::string& id) const;        // token object or null
  json AuditLog() const;  // v1 shape
  int64_t calls() const;
  // Calls that carried a secret retired by a roll (PUT .../tokens/{id}/value): each was refused.
  int64_t retired_secret_calls() const;
  // Calls that would revoke a token (DELETE .../tokens/{id}, PUT .../tokens/{id}), whether
  // allowed or refused.
  int64_t token_revocation_calls() const;

 private:
  struct AccessRule {
    std::string id, mode, target, value, notes, scope_type, scope_id;
    absl::Time created, modified;
  };
  struct ListItem {
    std::string id, ip, comment;
    absl::Time created, modified;
  };
  struct IpList {
    std::string id, name, kind, description;
    absl::Time created, modified;
    std::map<std::string, ListItem> items;  // by normalised ip
  };
  struct Operation {
    std::string id, list_id, kind;  // kind: add | replace | delete
    json items;
    absl::Time created;
    std::string status = "pending";
    std::string error;
    absl::Time completed;
  };
  struct RulesetState {
    std::string id, phase, name;
    int version = 1;
    absl::Time last_updated;
    std::vector<json> rules;
  };
  struct TokenState {
    std::string id;
    TokenSpec spec;
    absl::Time issued, modified;
    json policies;
  };
  struct Caller {
    std::string id;           // credential id for the rate limit
    const TokenState* token;  // nullptr for legacy key auth
  };

  Response HandleLocked(const Request& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The policies AddToken gives a token of `spec` (one allow policy per scope).
  json PoliciesFor(const TokenSpec& spec) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::pair<std::string, std::string> AddTokenLocked(const TokenSpec& spec)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Auth; on failure fills `error` and returns false.
  bool Authenticate(const Request& r, bool verify_endpoint, Caller* caller, Response* error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether the caller holds `permission` (a TokenSpec short name) on a resource of this
  // emulator; with kAccount or kZone, on a resource that covers the account, or the zone.
  enum class On { kAny, kAccount, kZone };
  bool Allowed(const Caller& c, const std::string& permission, On on = On::kAny) const;
  bool RateLimited(const std::string& credential, Response* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AdvanceOperations() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Audit(const Caller& c, const Request& r, const std::string& action,
             const std::string& resource_type, const std::string& resource_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string NewId() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string Time(absl::Time t) const;

  // Endpoint groups.
  Response AccessRules(const Request& r, const Caller& c, const std::vector<std::string>& parts)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Response Lists(const Request& r, const Caller& c, const std::vector<std::string>& parts)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Response Rulesets(const Request& r, const Caller& c, const std::vector<std::string>& parts)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Response Tokens(const Request& r, const Caller& c, const std::vector<std::string>& parts,
                  bool account) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // v1 (/audit_logs: page style, actor without token id) and v2 (/logs/audit: cursor style,
  // since/before required, actor.token_id).
  Response AuditLogs(const Request& r, const Caller& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Response AuditLogsV2(const Request& r, const Caller& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  json AccessRuleJson(const AccessRule& a) const;
  json ListJson(const IpList& l) const;
  json RulesetJson(const RulesetState& rs) const;
  json TokenJson(const TokenState& t) const;
  int ItemsInUse() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int Referencing(const std::string& list_name) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Clock& clock_;
  Options options_;
  mutable absl::Mutex mu_;
  Faults faults_ ABSL_GUARDED_BY(mu_);
  uint64_t rng_ ABSL_GUARDED_BY(mu_) = 0x9e3779b97f4a7c15ull;
  int64_t calls_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<std::string, AccessRule> access_rules_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, IpList> lists_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Operation> operations_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, RulesetState> rulesets_ ABSL_GUARDED_BY(mu_);  // by phase
  std::map<std::string, TokenState> tokens_ ABSL_GUARDED_BY(mu_);      // by id
  std::map<std::string, std::deque<absl::Time>> requests_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Time> blocked_until_ ABSL_GUARDED_BY(mu_);
  std::vector<json> audit_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> retired_ ABSL_GUARDED_BY(mu_);  // secrets replaced by a roll
  int64_t retired_secret_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t token_revocation_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace palisade::fake

#endif  // PALISADE_TESTS_CLOUDFLARE_FAKE_FAKE_CLOUDFLARE_H_
