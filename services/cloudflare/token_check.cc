#include "services/cloudflare/token_check.h"

#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace palisade {
namespace {

using json = nlohmann::json;

constexpr char kAccountPrefix[] = "com.cloudflare.api.account.";
constexpr char kZonePrefix[] = "com.cloudflare.api.account.zone.";
constexpr char kUserPrefix[] = "com.cloudflare.api.user.";

// Permission-group names by id, for policies that carry only the id (the API needs no more).
// From memory of Cloudflare's published list; the names are what the check compares.
const std::map<std::string, std::string>& GroupNames() {
  static const auto* names = new std::map<std::string, std::string>{
      {"a416acf9ef5a4af19fb11ed3b96b1fe6", "Account Firewall Access Rules Write"},
      {"43137f8d07884d3198dc0ee77ca6e79b", "Firewall Services Write"},
      {"2edbf20661fd4661b0fe10e9e12f485c", "Account Filter Lists Edit"},
      {"fb6778dc191143babbfaa57993f1d275", "Zone WAF Write"},
      {"686d18d5ac6c441c867cbf6771e58a0a", "API Tokens Write"},
      {"0cc3a61731504c89b99ec1be78b77aa0", "API Tokens Read"},
      {"b05b28e839c54467a7d6cba5d3abb5a3", "Access: Audit Logs Read"},
  };
  return *names;
}

enum class Level { kAccount, kZone, kUser };

struct Need {
  std::string actuator;
  std::string group;
  Level level;
};

std::vector<Need> NeedsOf(const TokenNeeds& n) {
  std::vector<Need> out;
  if (n.access_rules) {
    // Each scope has its own group (cloudflare-api.md §2.1): the account group does not reach
    // zone rules (POST /zones/{id}/firewall/access_rules/rules), nor the zone group account ones.
    if (n.access_rules_account_scope) {
      out.push_back({kAccessRuleActuator, "Account Firewall Access Rules Write", Level::kAccount});
    } else {
      out.push_back({kAccessRuleActuator, "Firewall Services Write", Level::kZone});
    }
  }
  if (n.ip_list) {
    // The list, and the custom rule that blocks what is on it.
    out.push_back({kIpListActuator, "Account Filter Lists Edit", Level::kAccount});
    out.push_back({kIpListActuator, "Zone WAF Write", Level::kZone});
  }
  if (n.rate_limit) out.push_back({kRateLimitActuator, "Zone WAF Write", Level::kZone});
  if (n.token_revocation) {
    out.push_back({kTokenRevocationActuator, "API Tokens Write", Level::kUser});
  }
  if (n.audit_log) out.push_back({kAuditLogActuator, "Access: Audit Logs Read", Level::kAccount});
  return out;
}

std::vector<std::string> ActuatorsOf(const TokenNeeds& n) {
  std::vector<std::string> out;
  if (n.access_rules) out.push_back(kAccessRuleActuator);
  if (n.ip_list) out.push_back(kIpListActuator);
  if (n.rate_limit) out.push_back(kRateLimitActuator);
  if (n.token_revocation) out.push_back(kTokenRevocationActuator);
  if (n.audit_log) out.push_back(kAuditLogActuator);
  return out;
}

// The policies are the API's text: every member is read only when it has the expected type
// (nlohmann's value() throws on another one). What cannot be read grants nothing.
std::string Str(const json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

// A permission group's name, by its id when it has none; nullopt when it has neither.
std::optional<std::string> GroupName(const json& g) {
  if (const std::string name = Str(g, "name"); !name.empty()) return name;
  const std::string id = Str(g, "id");
  if (id.empty()) return std::nullopt;
  auto it = GroupNames().find(id);
  return it == GroupNames().end() ? absl::StrCat("permission group ", id) : it->second;
}

// The names of a policy's readable permission groups.
std::vector<std::string> GroupsOf(const json& policy) {
  std::vector<std::string> out;
  auto it = policy.find("permission_groups");
  if (it == policy.end() || !it->is_array()) return out;
  for (const json& g : *it) {
    if (std::optional<std::string> name = GroupName(g)) out.push_back(*name);
  }
  return out;
}

// A policy's effect: "allow" (also when it gives none) or "deny"; nullopt when the policy is
// not an object or its effect is anything else (it is then skipped: it grants nothing).
std::optional<std::string> EffectOf(const json& policy) {
  if (!policy.is_object()) return std::nullopt;
  auto it = policy.find("effect");
  if (it == policy.end()) return "allow";
  if (!it->is_string()) return std::nullopt;
  const std::string effect = it->get<std::string>();
  if (effect != "allow" && effect != "deny") return std::nullopt;
  return effect;
}

// How a policy's resource key covers a need: 0 not at all, 1 exactly, 2 wider than needed.
// `nested` is the value under the key (an object: zones within one account).
int Covers(const std::string& key, const json& nested, const Need& need, const TokenNeeds& n,
           std::string* wide) {
  const std::string account = kAccountPrefix + n.account_id;
  switch (need.level) {
    case Level::kAccount:
      if (key == account) return 1;
      if (key == "com.cloudflare.api.account.*") {
        *wide = "every account (com.cloudflare.api.account.*) where one is used";
        return 2;
      }
      return 0;
    case Level::kZone:
      if (key == kZonePrefix + n.zone_id) return 1;
      if (key == "com.cloudflare.api.account.zone.*") {
        *wide = "every zone of every account (com.cloudflare.api.account.zone.*) where one is used";
        return 2;
      }
      if (key == account) {
        if (nested.is_object()) {
          for (const auto& [zone, v] : nested.items()) {
            if (zone == kZonePrefix + n.zone_id) return 1;
            if (zone == "com.cloudflare.api.account.zone.*") {
              *wide = absl::StrCat("every zone of account ", n.account_id, " where one is used");
              return 2;
            }
          }
          return 0;
        }
        *wide = absl::StrCat("every zone of account ", n.account_id, " where one is used");
        return 2;
      }
      if (key == "com.cloudflare.api.account.*") {
        *wide = "every zone of every account (com.cloudflare.api.account.*) where one is used";
        return 2;
      }
      return 0;
    case Level::kUser:
      // User tokens hold token permissions on the user; account tokens on the account.
      if (absl::StartsWith(key, kUserPrefix) || key == account) return 1;
      if (key == "com.cloudflare.api.account.*") {
        *wide = "every account (com.cloudflare.api.account.*)";
        return 2;
      }
      return 0;
  }
  return 0;
}

void SetDisabled(CredentialReport& r, const std::string& actuator, const std::string& reason) {
  for (ActuatorState& a : r.actuators) {
    if (a.actuator == actuator && a.enabled) {
      a.enabled = false;
      a.reason = reason;
    }
  }
}

void CheckExpiry(CredentialReport& r, absl::Time now) {
  if (!r.expires_on) {
    r.findings.push_back({"no_expiry", "", "the token never expires: give it an expiry (<= 90 days) "
                                           "and roll it before then"});
    return;
  }
  const std::string when = absl::FormatTime(absl::RFC3339_sec, *r.expires_on, absl::UTCTimeZone());
  if (*r.expires_on <= now) {
    r.findings.push_back({"expired", "", absl::StrCat("the token expired at ", when)});
  } else if (*r.expires_on - now < absl::Hours(24 * 14)) {
    r.findings.push_back(
        {"expiring_soon", "", absl::StrCat("the token expires within 14 days (", when, "): roll it")});
  } else if (*r.expires_on - now > absl::Hours(24 * 90)) {
    r.findings.push_back({"expiry_far", "",
                          absl::StrCat("the token expires more than 90 days ahead (", when,
                                       "): a shorter life limits what a leak costs")});
  }
}

}  // namespace

const std::vector<std::string>& CredentialFindingKinds() {
  static const auto* kinds = new std::vector<std::string>{
      "missing_permission", "too_broad",       "no_ip_condition",  "no_expiry",
      "expiry_far",         "expiring_soon",   "expired",          "unused_permission",
      "cannot_read_self",   "probe_failed"};
  return *kinds;
}

bool CredentialReport::Enabled(const std::string& actuator) const {
  for (const ActuatorState& a : actuators) {
    if (a.actuator == actuator) return a.enabled;
  }
  return false;
}

int CredentialReport::Count(const std::string& kind) const {
  int n = 0;
  for (const CredentialFinding& f : findings) n += f.kind == kind;
  return n;
}

json CredentialReport::ToJson() const {
  json j = {{"token_id", token_id},
            {"status", status},
            {"read_self", read_self},
            {"expires_on", expires_on ? json(absl::FormatTime(absl::RFC3339_sec, *expires_on,
                                                              absl::UTCTimeZone()))
                                      : json()},
            {"actuators", json::array()},
            {"findings", json::array()}};
  for (const ActuatorState& a : actuators) {
    j["actuators"].push_back(
        {{"actuator", a.actuator}, {"enabled", a.enabled}, {"reason", a.reason}});
  }
  for (const CredentialFinding& f : findings) {
    j["findings"].push_back({{"kind", f.kind}, {"actuator", f.actuator}, {"detail", f.detail}});
  }
  return j;
}

std::string CredentialReport::ToText() const {
  std::ostringstream out;
  out << "token " << token_id << " (" << status << "), expires "
      << (expires_on ? absl::FormatTime(absl::RFC3339_sec, *expires_on, absl::UTCTimeZone())
                     : std::string("never"))
      << (read_self ? "" : "; its policies could not be read (one probe per actuator)") << "\n";
  out << "actuators:\n";
  for (const ActuatorState& a : actuators) {
    out << "  " << a.actuator << ": " << (a.enabled ? "enabled" : "DISABLED: " + a.reason) << "\n";
  }
  if (findings.empty()) {
    out << "findings: none\n";
  } else {
    out << "findings:\n";
    for (const CredentialFinding& f : findings) {
      out << "  " << f.kind << (f.actuator.empty() ? "" : " (" + f.actuator + ")") << ": "
          << f.detail << "\n";
    }
  }
  return out.str();
}

CredentialReport CompareToken(const json& token, const TokenNeeds& needs, absl::Time now) {
  CredentialReport r;
  r.read_self = true;
  r.token_id = Str(token, "id");
  r.status = Str(token, "status");
  for (const std::string& a : ActuatorsOf(needs)) r.actuators.push_back({a, true, ""});
  if (token.contains("expires_on") && token["expires_on"].is_string()) {
    absl::Time t;
    std::string err;
    if (absl::ParseTime(absl::RFC3339_full, token["expires_on"].get<std::string>(), &t, &err)) {
      r.expires_on = t;
    }
  }
  json policies = json::array();
  if (token.is_object() && token.contains("policies") && token["policies"].is_array()) {
    policies = token["policies"];
  }

  // Each need: granted (an allow that covers, no deny that covers), and how wide.
  std::set<std::string> needed_groups = {"API Tokens Read"};  // the check reads the token itself
  std::set<std::string> reported_wide;
  for (const Need& need : NeedsOf(needs)) {
    needed_groups.insert(need.group);
    bool allowed = false, denied = false, exact = false;
    std::string wide;
    for (const json& p : policies) {
      const std::optional<std::string> effect = EffectOf(p);
      if (!effect) continue;
      bool has_group = false;
      for (const std::string& g : GroupsOf(p)) has_group |= g == need.group;
      if (!has_group || !p.contains("resources") || !p["resources"].is_object()) continue;
      for (const auto& [key, nested] : p["resources"].items()) {
        std::string w;
        const int c = Covers(key, nested, need, needs, &w);
        if (c == 0) continue;
        if (*effect == "deny") {
          denied = true;
        } else {
          allowed = true;
          if (c == 1) exact = true;
          if (c == 2 && wide.empty()) wide = w;
        }
      }
    }
    if (!allowed || denied) {
      const std::string where =
          need.level == Level::kZone      ? absl::StrCat(" on zone ", needs.zone_id)
          : need.level == Level::kAccount ? absl::StrCat(" on account ", needs.account_id)
                                          : std::string(" (user)");
      const std::string reason = absl::StrCat("the token lacks \"", need.group, "\"", where,
                                              denied ? " (a deny policy removes it)" : "");
      r.findings.push_back({"missing_permission", need.actuator, reason});
      SetDisabled(r, need.actuator, reason);
    } else if (!exact && !wide.empty() && reported_wide.insert(need.group + wide).second) {
      r.findings.push_back({"too_broad", need.actuator,
                            absl::StrCat("\"", need.group, "\" is granted on ", wide)});
    }
  }
  // What the token may do that nothing here uses.
  std::set<std::string> unused;
  for (const json& p : policies) {
    if (EffectOf(p) != "allow") continue;
    for (const std::string& name : GroupsOf(p)) {
      if (!needed_groups.count(name)) unused.insert(name);
    }
  }
  for (const std::string& name : unused) {
    r.findings.push_back({"unused_permission", "",
                          absl::StrCat("\"", name, "\" is granted but no configured actuator "
                                                   "uses it: remove it")});
  }
  // The IP filter: "request.ip" in the docs, "request_ip" in the generated SDKs.
  json ip;
  if (token.contains("condition") && token["condition"].is_object()) {
    const json& cond = token["condition"];
    ip = cond.contains("request.ip") ? cond["request.ip"] : cond.value("request_ip", json());
  }
  if (!ip.is_object() || !ip.contains("in") || !ip["in"].is_array() || ip["in"].empty()) {
    r.findings.push_back({"no_ip_condition", "",
                          "the token has no condition.request.ip: it works from any address; "
                          "restrict it to the addresses palisaded runs from"});
  }
  CheckExpiry(r, now);
  return r;
}

CredentialReport CompareToken(const TokenInfo& token, const TokenNeeds& needs, absl::Time now) {
  json j = {{"id", token.id}, {"status", token.status}, {"policies", token.policies}};
  if (!token.condition.is_null()) j["condition"] = token.condition;
  if (token.expires_on) {
    j["expires_on"] = absl::FormatTime(absl::RFC3339_full, *token.expires_on, absl::UTCTimeZone());
  }
  if (j["policies"].is_null()) j["policies"] = json::array();
  return CompareToken(j, needs, now);
}

absl::StatusOr<CredentialReport> CheckCredentials(CloudflareClient& client,
                                                  const TokenNeeds& needs, absl::Time now,
                                                  bool account_owned) {
  absl::StatusOr<TokenInfo> verified = client.VerifyToken(account_owned);
  if (!verified.ok()) return verified.status();
  absl::StatusOr<TokenInfo> details = client.GetToken(verified->id, verified->account_owned);
  if (details.ok()) {
    // CompareToken reads members only when typed as expected; this keeps any miss a status, as
    // the client's calls do, rather than an exception through palisaded's start or monitor.
    try {
      return CompareToken(*details, needs, now);
    } catch (const json::exception& e) {
      return absl::InternalError(absl::StrCat(
          "cloudflare: the token's policies had an unexpected shape (", e.what(), ")"));
    }
  }
  if (details.status().code() != absl::StatusCode::kPermissionDenied ||
      IsIpRestricted(details.status())) {
    return details.status();
  }

  // The token may not read itself: what verify said, and one harmless read per actuator.
  CredentialReport r;
  r.token_id = verified->id;
  r.status = verified->status;
  r.expires_on = verified->expires_on;
  r.read_self = false;
  r.findings.push_back(
      {"cannot_read_self", "",
       absl::StrCat("the token may not read its own details (", details.status().message(),
                    "): its permissions, resources and IP filter are unknown; probed each "
                    "actuator with one read instead")});
  CheckExpiry(r, now);
  for (const std::string& a : ActuatorsOf(needs)) r.actuators.push_back({a, true, ""});
  auto judge = [&r](const std::string& actuator, const std::string& call, const absl::Status& s) {
    if (s.ok() || s.code() == absl::StatusCode::kNotFound) return;
    if (s.code() == absl::StatusCode::kPermissionDenied) {
      const std::string reason = absl::StrCat(call, " was refused: ", s.message());
      r.findings.push_back({"missing_permission", actuator, reason});
      SetDisabled(r, actuator, reason);
    } else {
      r.findings.push_back(
          {"probe_failed", actuator, absl::StrCat(call, " failed: ", s.message())});
    }
  };
  if (needs.access_rules) {
    judge(kAccessRuleActuator, "listing access rules",
          client
              .ListAccessRules(needs.access_rules_account_scope ? RuleScope::kAccount
                                                                : RuleScope::kZone,
                               AccessRuleFilter(), 1, 5)
              .status());
  }
  if (needs.ip_list) {
    judge(kIpListActuator, "listing IP lists", client.ListLists().status());
    judge(kIpListActuator, "reading the custom rules",
          client.GetEntrypoint("http_request_firewall_custom").status());
  }
  if (needs.rate_limit) {
    judge(kRateLimitActuator, "reading the rate limiting rules",
          client.GetEntrypoint("http_ratelimit").status());
  }
  if (needs.token_revocation) {
    // Revocation reads and disables tokens: the refused read of this very token is its probe.
    judge(kTokenRevocationActuator, "reading a token", details.status());
  }
  if (needs.audit_log) {
    judge(kAuditLogActuator, "reading the audit logs",
          client.ListAuditLogs(now - absl::Hours(1), now, "", 1).status());
  }
  return r;
}

}  // namespace palisade
