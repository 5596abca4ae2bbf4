// The credentials check: what Palisade's own API token may do, compared with what the configured
// actuators need (least privilege, as the guide Palisade follows asks of every token).
//
// CheckCredentials reads the token's own details (verify gives the id, then GET .../tokens/{id})
// and CompareToken judges them: each missing permission disables its actuator with a reason (the
// others run), and findings name what is wider than needed (all accounts or all zones where one
// is used), a missing condition.request.ip, a missing or far expiry (> 90 days), an expiry within
// 14 days, and permissions no actuator uses. When the token may not read itself, the check says
// so and falls back to one harmless read (a list call) per actuator.
//
// Nothing in a report ever holds the secret: only the token id, permission-group names, resources
// and the API's error messages (which never echo the credential).
// Thread-safety: the functions are stateless; CheckCredentials uses the (thread-safe) client.
#ifndef PALISADE_SERVICES_CLOUDFLARE_TOKEN_CHECK_H_
#define PALISADE_SERVICES_CLOUDFLARE_TOKEN_CHECK_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "services/cloudflare/client.h"

namespace palisade {

// The actuators a check can judge, by the names metrics and palisadectl use.
inline constexpr char kAccessRuleActuator[] = "access_rule";
inline constexpr char kIpListActuator[] = "ip_list";
inline constexpr char kRateLimitActuator[] = "rate_limit";
inline constexpr char kTokenRevocationActuator[] = "token_revocation";
inline constexpr char kAuditLogActuator[] = "audit_log";

struct TokenNeeds {
  std::string account_id;
  std::string zone_id;
  bool access_rules = true;
  // Access rules on the account ("Account Firewall Access Rules Write" on the account), not on
  // the zone ("Firewall Services Write" on the zone).
  bool access_rules_account_scope = false;
  bool ip_list = true;
  bool rate_limit = true;
  bool token_revocation = true;
  bool audit_log = false;  // the misuse rule reads the account's audit logs
};

struct CredentialFinding {
  // missing_permission, too_broad, no_ip_condition, no_expiry, expiry_far, expiring_soon,
  // expired, unused_permission, cannot_read_self, probe_failed.
  std::string kind;
  std::string actuator;  // the actuator concerned, empty when none
  std::string detail;    // for people; never the secret
};

struct ActuatorState {
  std::string actuator;
  bool enabled = true;
  std::string reason;  // why it is disabled (empty when enabled)
};

struct CredentialReport {
  std::string token_id;
  std::string status;
  std::optional<absl::Time> expires_on;
  bool read_self = false;  // the token's policies were read (else: probes)
  std::vector<CredentialFinding> findings;
  std::vector<ActuatorState> actuators;  // one per needed actuator

  bool Enabled(const std::string& actuator) const;
  int Count(const std::string& kind) const;
  nlohmann::json ToJson() const;
  std::string ToText() const;
};

// The kinds a report can hold, for metrics that show every kind (zero when absent).
const std::vector<std::string>& CredentialFindingKinds();

// Judges a token object (GET .../tokens/{id}: policies, condition, expires_on, status) at `now`.
CredentialReport CompareToken(const nlohmann::json& token, const TokenNeeds& needs, absl::Time now);

// The same, from the client's TokenInfo.
CredentialReport CompareToken(const TokenInfo& token, const TokenNeeds& needs, absl::Time now);

// Verifies the token, reads its details and compares them; when it may not read itself (403),
// probes each needed actuator with one list call. An error only when the token cannot be
// verified at all.
absl::StatusOr<CredentialReport> CheckCredentials(CloudflareClient& client, const TokenNeeds& needs,
                                                  absl::Time now, bool account_owned = false);

}  // namespace palisade

#endif  // PALISADE_SERVICES_CLOUDFLARE_TOKEN_CHECK_H_
