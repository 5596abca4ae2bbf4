// The edge side of palisaded: builds the Cloudflare client, verifies the token at start, and
// wires the dispatcher and the four actuators to the decision table. Only built when the
// config enables Cloudflare.
#ifndef PALISADE_SERVICES_SERVER_EDGE_H_
#define PALISADE_SERVICES_SERVER_EDGE_H_

#include <functional>
#include <memory>
#include <optional>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "palisade/v1/config.pb.h"
#include "palisade/v1/palisade.pb.h"
#include "prometheus/registry.h"
#include "services/actions/dispatcher.h"
#include "services/actions/reconciler.h"
#include "services/cloudflare/client.h"
#include "services/cloudflare/credential_monitor.h"
#include "services/cloudflare/rotation.h"
#include "services/cloudflare/token_check.h"
#include "services/common/clock.h"
#include "services/decisions/decision_table.h"
#include "services/engine/rule_set.h"
#include "services/store/store.h"

namespace palisade {

// What the guard never acts on, on top of NonPublicRanges(): the allowlist, guard.never_ban,
// Cloudflare's ranges (built in, or guard.cloudflare_ranges_file) and this host's addresses.
// Threat feeds drop indicators touching it too.
absl::StatusOr<CidrSet> NeverBanSet(const palisade::v1::Config& config);

// What the configured actuators need of the token (for the credentials check). `audit_logs`:
// the loaded rules read Cloudflare audit-log records (ReadsAuditLogs): the token must then
// read the account's audit logs too.
TokenNeeds TokenNeedsFor(const palisade::v1::CloudflareConfig& config, bool audit_logs = false);

// True when a rule is keyed by an API token id: the cloudflare-audit pack's misuse rule, whose
// input is the account's audit logs (read with the service's token).
bool ReadsAuditLogs(const RuleSet& rules);

class Edge {
 public:
  // Loads the credential and verifies it: kUnauthenticated / kFailedPrecondition for an
  // invalid, disabled or expired token (the daemon refuses to start). Logs the token's id,
  // status and expiry, never its value; warns when it expires within 14 days. Then checks the
  // token's permissions (CheckCredentials): an actuator the token cannot drive is not started
  // (logged with the reason, palisade_actuator_enabled 0; parked in the dispatcher: its
  // operations stay in the outbox for a start with the permission), the others run.
  // The check is made again every cloudflare.check_interval (default 1 h; see
  // services/cloudflare/credential_monitor.h for what a permission lost or gained then does).
  // `audit_logs`: the rules read audit-log records, so the token must read the audit logs.
  // The guard is built from config.guard, config.allowlist and this host's addresses (its set
  // shared with the IP list and the reconciler; SetNeverBan replaces it), and never lets
  // palisaded's own token (its id, once verified) be revoked.
  // With a store, the dispatcher's queue is durable and restored before it starts.
  // `attach` hands over the dispatcher's table listener (null: table.AddListener). A cluster's
  // node starts and stops its edge as it gains and loses the writer lease; its listener slot
  // must stop calling the dispatcher before the Edge is destroyed.
  using AttachListener = std::function<void(DecisionTable::Listener)>;
  static absl::StatusOr<std::unique_ptr<Edge>> Start(const palisade::v1::Config& full_config,
                                                     Clock& clock, prometheus::Registry& registry,
                                                     DecisionTable& table, Store* store,
                                                     bool audit_logs = false,
                                                     AttachListener attach = nullptr);
  ~Edge();

  Dispatcher& dispatcher() { return *dispatcher_; }
  // A reload changed the allowlist: the guard, the IP list and the reconciler judge by
  // `never_ban` (NeverBanSet of the new config) from now on, and the applies refused as
  // never-ban that it leaves free are sent (Dispatcher::SetNeverBan). Thread-safe.
  void SetNeverBan(CidrSet never_ban) { dispatcher_->SetNeverBan(std::move(never_ban)); }
  // The verified client (thread-safe), for the token-candidate stage's verify calls.
  CloudflareClient& client() { return *client_; }
  // The token rotator when cloudflare.rotation is on (and the token's id is known), else null.
  TokenRotator* rotator() { return rotator_.get(); }
  // The credentials check made at start (none when the token could not be read or verified).
  // Actuators it found the token unable to drive were not started.
  const std::optional<CredentialReport>& credential_report() const { return credential_report_; }
  // What Admin.Status says of the credentials: the last check's findings and expiry, each
  // actuator's state now, when the check ran and why the last one could not be made. Nothing
  // when no check was ever made. Thread-safe.
  void FillCredentialStatus(palisade::v1::StatusResponse* status) const;
  // One roll of the token now (Admin.RotateToken). kFailedPrecondition naming why there is no
  // rotation (not configured; the token comes from an environment variable; its id unknown);
  // kAborted while a roll runs. Thread-safe.
  absl::StatusOr<RollReport> RotateToken();

 private:
  Edge() = default;
  std::unique_ptr<Reconciler> reconciler_;
  std::thread reconcile_thread_;
  absl::Notification stopping_;
  std::unique_ptr<CurlTransport> transport_;
  std::unique_ptr<CloudflareClient> client_;
  std::unique_ptr<TokenRotator> rotator_;       // after client_: stopped before it goes
  std::unique_ptr<CredentialMonitor> monitor_;  // after client_: stopped before it goes
  std::string no_rotation_;                     // why there is no rotator (empty when there is one)
  std::unique_ptr<Dispatcher> dispatcher_;
  std::optional<CredentialReport> credential_report_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_SERVER_EDGE_H_
