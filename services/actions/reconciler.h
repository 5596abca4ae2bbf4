// The reconciler: compares what Palisade's markers say is at the edge with the active
// decisions, and repairs drift both ways. Run at start and periodically.
//  - missing: a decision is active but its object is gone (deleted by hand). Policy "recreate"
//    (default) applies it again; policy "withdraw" withdraws the decision instead.
//  - orphan: an object carries this palisaded's marker but no active decision wants it (its
//    decision expired while palisaded was down, or never existed). It is removed.
//  - the custom rule that blocks Palisade's IP list (IpListActuator::EnsureRule), when the list
//    exists: deleted, disabled or edited by hand, it is put back under either policy and
//    counted as missing (actuator "ip_list"); without it no list item blocks anything.
//  - the account's lists as read here are handed to the IP list actuator (Dispatcher::ListsRead,
//    less the orphans deleted), which owns the gauge of their items against the account's quota:
//    without this, it moved only when the actuator read the lists itself, hours apart.
// Markers: access rules with notes "palisade:<decision id> ...", list items with comment
// "palisade:<decision id>", rate-limit rules with ref "palisade_<decision id>", each with this
// instance's tag when ReconcilerOptions::instance is set (actuators.h: Mark). Only a marker
// whose id has a decision id's shape and whose tag is this instance's (none for an empty one)
// is its own: objects without one (a human's rules, one noted "palisade:office", another
// palisaded's on a shared zone or account) are never touched. A human's access rule (or
// another instance's) that a decision adopted (10009) is looked for by its id among every
// rule: deleted by its owner, the decision is missing. Decisions with an operation queued,
// held or in flight are left to the dispatcher, and so are those whose apply failed for good
// (Dispatcher::FailedForGood: a /20 access rule, a never-ban target, a full IP list, a plan's
// quota; never a refusal of palisaded's credentials, which waits in the outbox): they have no
// object and are not missing, since applying them again would fail again on every run. One
// that changed since (extended) is missing once more, and tried again.
// Run pauses the dispatcher (Dispatcher::Paused) while it reads the edge and the decisions and
// removes orphans, so no operation lands between those reads; operations are still queued
// meanwhile, and run once it returns.
// Thread-safety: Run from one thread at a time (never a dispatcher worker).
#ifndef PALISADE_SERVICES_ACTIONS_RECONCILER_H_
#define PALISADE_SERVICES_ACTIONS_RECONCILER_H_

#include <map>
#include <string>

#include "absl/status/status.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/registry.h"
#include "services/actions/actuators.h"
#include "services/actions/dispatcher.h"
#include "services/cloudflare/client.h"
#include "services/decisions/decision_table.h"

namespace palisade {

struct ReconcilerOptions {
  RuleScope scope = RuleScope::kZone;
  IpListOptions list;
  bool withdraw_on_missing = false;  // policy "withdraw"; default "recreate"
  // CloudflareConfig.instance: only markers with this tag are this palisaded's ("" for none).
  std::string instance;
  // Which kinds are checked: an actuator the credentials check disabled is not (its reads would
  // be refused on every run, and fail every run).
  bool access_rules = true;
  bool ip_list = true;
  bool rate_limits = true;
};

struct DriftReport {
  int missing = 0;
  int orphans = 0;
  // Active decisions whose apply failed for good (Dispatcher::FailedForGood): not drift, and
  // not applied again until they change.
  int failed = 0;
};

class Reconciler {
 public:
  Reconciler(CloudflareClient& client, Dispatcher& dispatcher, DecisionTable& table,
             ReconcilerOptions options, prometheus::Registry& registry);

  // Runs every enabled check, even after one failed (each failure counted by actuator in
  // palisade_reconcile_errors_total); fails when any did, with the first error's code and each
  // failed kind's error, "<actuator>: <error>", in the message.
  absl::StatusOr<DriftReport> Run();

 private:
  absl::Status CheckAccessRules(DriftReport* report);
  absl::Status CheckIpList(DriftReport* report);
  absl::Status CheckRateLimits(DriftReport* report);
  void Missing(const palisade::v1::Decision& d, const std::string& actuator, DriftReport* r);
  void Orphan(const std::string& actuator, DriftReport* r);
  // Reads the dispatcher's edge records, busy decisions and failures into edges_, busy_ and
  // failed_.
  void Snapshot();
  // True (and counted in r->failed) when d's apply failed for good, as d is now.
  bool FailedForGood(const palisade::v1::Decision& d, DriftReport* r) const;

  CloudflareClient& client_;
  Dispatcher& dispatcher_;
  DecisionTable& table_;
  const ReconcilerOptions options_;
  IpListActuator items_;  // only for ItemFor: the list item a target becomes
  // Taken by Snapshot, with the dispatcher paused.
  std::map<std::string, EdgeRef> edges_;
  std::map<std::string, palisade::v1::Decision> busy_;
  std::map<std::string, std::string> failed_;  // Dispatcher::FailedForGood
  prometheus::Family<prometheus::Counter>& drift_;
  prometheus::Family<prometheus::Counter>& runs_;
  prometheus::Family<prometheus::Counter>& errors_;  // by actuator
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_ACTIONS_RECONCILER_H_
