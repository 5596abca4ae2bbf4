// The credentials check kept true while palisaded runs (issue 15): CheckCredentials at start,
// then again every `interval` (config cloudflare.check_interval, default 1 h), so the metrics
// and Admin.Status follow a token whose expiry approaches or whose permissions are changed in
// the dashboard after the start.
//
// What the start's check decided stays decided: an actuator the token could not drive at start
// was not built, and one that was built keeps running. A later check changes what is reported:
//  - a permission LOST while running: the actuator stays in place (Cloudflare refuses its
//    operations with 403; the dispatcher keeps them in the outbox, counted as retried, and its
//    queue waits, one operation tried per wait), and it is reported disabled:
//    palisade_actuator_enabled 0 (the PalisadeActuatorDisabled alert fires),
//    palisade_cloudflare_permission_changes_total{actuator, change="lost"}, one log line, and
//    Status names the reason. When the permission comes back, it is reported enabled again
//    (change="gained", and options.on_gained is called): nothing needs a restart.
//  - a permission GAINED by an actuator that was not started: counted and logged the same way,
//    and Status says a restart starts it (it is still not running: palisade_actuator_enabled
//    stays 0). Starting an actuator mid-run would leave the decisions made while it was off
//    unenforced; a restart restores them from the outbox.
// A check that cannot be made (Cloudflare unreachable, the token refused) keeps the last report,
// is counted (result="failed") and its reason is in Status; nothing changes state on it.
//
// Metrics: palisade_cloudflare_token_findings{kind}, palisade_actuator_enabled{actuator},
// palisade_cloudflare_token_expiry_timestamp_seconds, palisade_cloudflare_credentials_checks_total
// {result}, palisade_cloudflare_credentials_checked_timestamp_seconds,
// palisade_cloudflare_permission_changes_total{actuator,change}. Never the secret anywhere.
// Thread-safety: every method may be called from any thread; checks are serialised.
#ifndef PALISADE_SERVICES_CLOUDFLARE_CREDENTIAL_MONITOR_H_
#define PALISADE_SERVICES_CLOUDFLARE_CREDENTIAL_MONITOR_H_

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/cloudflare/client.h"
#include "services/cloudflare/token_check.h"
#include "services/common/clock.h"

namespace palisade {

struct CredentialMonitorOptions {
  TokenNeeds needs;
  bool account_owned = false;
  absl::Duration interval = absl::Hours(1);
  // How often the background thread looks at the schedule.
  absl::Duration poll = absl::Seconds(1);
  // Called (outside the monitor's lock, from the checking thread) with each actuator whose
  // permission a check found again after an earlier check found it lost: palisaded hands it
  // to Dispatcher::CredentialsRestored, so operations waiting after Cloudflare refused the
  // token go out now. May be empty.
  std::function<void(const std::string& actuator)> on_gained;
};

// What Status shows (a copy, taken under the monitor's lock).
struct CredentialStatus {
  std::optional<CredentialReport> report;  // the last check made (none yet: nullopt)
  // Per needed actuator: whether it runs with the token now, and why not. After the start these
  // differ from report->actuators where the start decided otherwise (see the header comment).
  std::vector<ActuatorState> actuators;
  std::optional<absl::Time> checked;  // when `report` was made
  std::string error;                  // why the last attempt failed; empty when it was made
};

class CredentialMonitor {
 public:
  CredentialMonitor(CloudflareClient& client, Clock& clock, CredentialMonitorOptions options,
                    prometheus::Registry& registry);
  ~CredentialMonitor();  // stops the thread

  // The check at start: its report decides which actuators are built (Started). The token's
  // expiry is `known_expiry` (from verify) until a check reads it.
  absl::StatusOr<CredentialReport> CheckAtStart(std::optional<absl::Time> known_expiry);
  // Which actuators were built (Edge calls this once, after CheckAtStart); an actuator not
  // named is taken as not started. Without a call, every needed actuator counts as started.
  void Started(const std::vector<std::string>& actuators);

  // Checks now; updates the report, metrics and states. The check's error when it could not be
  // made (the last report is kept).
  absl::Status CheckNow();
  // Checks when the schedule says so; returns whether a check was made. For tests on a
  // SimulatedClock; the thread calls it every `poll`.
  bool Tick();
  absl::Time next_check() const;

  CredentialStatus status() const;

  void Start();
  void Stop();

 private:
  // Applies a report: states, metrics; with `compare`, counts and logs the permissions that
  // changed since the last report.
  // Returns the actuators whose permission came back since the last report.
  std::vector<std::string> Apply(const CredentialReport& report, absl::Time now, bool compare)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetExpiry(std::optional<absl::Time> expires_on);

  CloudflareClient& client_;
  Clock& clock_;
  const CredentialMonitorOptions options_;
  absl::Mutex check_mu_;  // one check at a time
  mutable absl::Mutex mu_;
  std::optional<CredentialReport> report_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Time> checked_ ABSL_GUARDED_BY(mu_);
  std::string error_ ABSL_GUARDED_BY(mu_);
  std::optional<std::map<std::string, bool>> started_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, ActuatorState> states_ ABSL_GUARDED_BY(mu_);  // by actuator
  absl::Time next_check_ ABSL_GUARDED_BY(mu_);
  prometheus::Family<prometheus::Gauge>& findings_;
  prometheus::Family<prometheus::Gauge>& enabled_;
  prometheus::Gauge& expiry_;
  prometheus::Family<prometheus::Counter>& checks_;
  prometheus::Gauge& checked_at_;
  prometheus::Family<prometheus::Counter>& changes_;
  absl::Notification stopping_;
  std::thread thread_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_CLOUDFLARE_CREDENTIAL_MONITOR_H_
