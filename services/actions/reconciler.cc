#include "services/actions/reconciler.h"

#include <algorithm>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace palisade {
namespace {

using palisade::v1::Decision;

}  // namespace

Reconciler::Reconciler(CloudflareClient& client, Dispatcher& dispatcher, DecisionTable& table,
                       ReconcilerOptions options, prometheus::Registry& registry)
    : client_(client),
      dispatcher_(dispatcher),
      table_(table),
      options_(std::move(options)),
      items_(client, options_.list, registry),
      drift_(prometheus::BuildCounter()
                 .Name("palisade_reconcile_drift_total")
                 .Help("Drift found at the edge, by actuator and kind (missing: re-applied or "
                       "withdrawn; orphan: removed).")
                 .Register(registry)),
      runs_(prometheus::BuildCounter()
                .Name("palisade_reconcile_runs_total")
                .Help("Reconciler passes, by result.")
                .Register(registry)),
      errors_(prometheus::BuildCounter()
                  .Name("palisade_reconcile_errors_total")
                  .Help("Reconciler checks that failed, by actuator (the run goes on with the "
                        "other kinds, and ends in error).")
                  .Register(registry)) {}

void Reconciler::Missing(const Decision& d, const std::string& actuator, DriftReport* r) {
  ++r->missing;
  drift_.Add({{"actuator", actuator}, {"kind", "missing"}}).Increment();
  if (options_.withdraw_on_missing) {
    dispatcher_.ForgetEdge(d.id());
    (void)table_.Withdraw(d.id());
    std::cerr << "palisaded: reconcile: " << actuator << " for decision " << d.id()
              << " is gone from the edge; decision withdrawn (policy)" << std::endl;
  } else {
    dispatcher_.Reapply(d);
    std::cerr << "palisaded: reconcile: " << actuator << " for decision " << d.id()
              << " is gone from the edge; applying it again" << std::endl;
  }
}

void Reconciler::Snapshot() {
  // After the decisions were listed: a decision created since is queued, so busy, and a busy
  // decision listed as active is not missing; while paused, nothing here goes out.
  edges_ = dispatcher_.edges();
  busy_ = dispatcher_.BusyDecisions();
  failed_ = dispatcher_.FailedForGood();
}

bool Reconciler::FailedForGood(const Decision& d, DriftReport* r) const {
  auto f = failed_.find(d.id());
  if (f == failed_.end() || f->second != Dispatcher::FailureVersion(d)) return false;
  ++r->failed;
  return true;
}

void Reconciler::Orphan(const std::string& actuator, DriftReport* r) {
  ++r->orphans;
  drift_.Add({{"actuator", actuator}, {"kind", "orphan"}}).Increment();
}

absl::StatusOr<DriftReport> Reconciler::Run() {
  DriftReport report;
  // The edge, the decisions and the dispatcher's work are read with the dispatcher paused: an
  // object it adds between two of those reads would look like an orphan, and a decision it
  // applies in between like a missing one. What it has queued meanwhile is busy, not drift.
  Dispatcher::Paused paused(dispatcher_);
  // Every enabled kind is checked whatever became of the others: a read refused for one kind
  // (a permission removed from the token) must not leave the others' drift unrepaired.
  struct Check {
    bool enabled;
    const char* actuator;
    absl::Status (Reconciler::*run)(DriftReport*);
  };
  const Check checks[] = {
      {options_.access_rules, "access_rule", &Reconciler::CheckAccessRules},
      {options_.ip_list, "ip_list", &Reconciler::CheckIpList},
      {options_.rate_limits, "rate_limit", &Reconciler::CheckRateLimits},
  };
  absl::Status first = absl::OkStatus();
  std::string errors;  // "<actuator>: <error>; ..."
  for (const Check& c : checks) {
    if (!c.enabled) continue;
    absl::Status s = (this->*c.run)(&report);
    if (s.ok()) continue;
    errors_.Add({{"actuator", c.actuator}}).Increment();
    if (first.ok()) first = s;
    absl::StrAppend(&errors, errors.empty() ? "" : "; ", c.actuator, ": ", s.message());
  }
  runs_.Add({{"result", first.ok() ? "ok" : "error"}}).Increment();
  if (!first.ok()) return absl::Status(first.code(), errors);  // the first error's code
  return report;
}

absl::Status Reconciler::CheckAccessRules(DriftReport* report) {
  AccessRuleFilter f;
  f.notes = "palisade:";
  absl::StatusOr<std::vector<AccessRule>> rules = client_.ListAllAccessRules(options_.scope, f);
  if (!rules.ok()) return rules.status();
  std::map<std::string, const AccessRule*> at_edge;  // by the decision id in the notes
  std::set<std::string> rule_ids;
  for (const AccessRule& r : *rules) {
    std::string id = MarkedDecisionId(r.notes, options_.instance);
    if (!id.empty()) at_edge[id] = &r;
    rule_ids.insert(r.id);
  }
  DecisionFilter active;
  active.active_only = true;
  std::set<std::string> wanted;
  // Rules an active decision holds by id: its own, or one it adopted (10009) from another
  // Palisade decision, whose notes still name that one.
  std::set<std::string> held_rules;
  // Decisions that adopted (10009) a human's rule, with its id: it has no marker, so it is not
  // in the listing above.
  std::vector<std::pair<const Decision*, std::string>> adopted;
  const std::vector<Decision> decisions = table_.List(active);
  Snapshot();
  for (const Decision& d : decisions) {
    if (d.actuator() != palisade::v1::ACTUATOR_ACCESS_RULE || d.dry_run()) continue;
    wanted.insert(d.id());
    auto e = edges_.find(d.id());
    if (e != edges_.end()) {
      if (e->second.foreign) {
        if (!busy_.count(d.id())) adopted.emplace_back(&d, e->second.id);
        continue;
      }
      if (rule_ids.count(e->second.id)) {
        held_rules.insert(e->second.id);
        continue;
      }
    }
    if (busy_.count(d.id()) || at_edge.count(d.id()) || FailedForGood(d, report)) continue;
    Missing(d, "access_rule", report);
  }
  for (const auto& [id, rule] : at_edge) {
    if (wanted.count(id) || held_rules.count(rule->id) || busy_.count(id)) continue;
    absl::Status s = client_.DeleteAccessRule(options_.scope, rule->id);
    if (!s.ok() && s.code() != absl::StatusCode::kNotFound) return s;
    dispatcher_.ForgetEdge(id);
    Orphan("access_rule", report);
  }
  if (adopted.empty()) return absl::OkStatus();
  // A human's rule that a decision adopted may be deleted by its owner, and the decision is
  // then enforced nowhere: it is looked for by id among every rule (read only when one is held).
  absl::StatusOr<std::vector<AccessRule>> all =
      client_.ListAllAccessRules(options_.scope, AccessRuleFilter());
  if (!all.ok()) return all.status();
  std::set<std::string> all_ids;
  for (const AccessRule& r : *all) all_ids.insert(r.id);
  for (const auto& [d, rule_id] : adopted) {
    if (!all_ids.count(rule_id)) Missing(*d, "access_rule", report);
  }
  return absl::OkStatus();
}

absl::Status Reconciler::CheckIpList(DriftReport* report) {
  absl::StatusOr<std::vector<IpList>> lists = client_.ListLists();
  if (!lists.ok()) return lists.status();
  // The actuator that gauges the account's list items reads them only when it must (its first
  // flush, its cap, a refused add): this read, every run, keeps the quota alert current.
  dispatcher_.ListsRead(*lists);
  std::string list_id;
  for (const auto& l : *lists) {
    if (l.name == options_.list.list_name) list_id = l.id;
  }
  DecisionFilter active;
  active.active_only = true;
  std::vector<Decision> decisions;
  for (Decision& d : table_.List(active)) {
    if (d.actuator() == palisade::v1::ACTUATOR_IP_LIST && !d.dry_run()) {
      decisions.push_back(std::move(d));
    }
  }
  Snapshot();
  if (list_id.empty()) {
    // No list at all: every active list decision that is not on its way is missing.
    for (const Decision& d : decisions) {
      if (!busy_.count(d.id()) && !FailedForGood(d, report)) Missing(d, "ip_list", report);
    }
    return absl::OkStatus();
  }
  // The items block nothing without the custom rule, and the actuator checked it only once: a
  // rule deleted or disabled by hand is put back whatever the policy, as part of the list.
  absl::StatusOr<bool> repaired = items_.EnsureRule();
  if (!repaired.ok()) return repaired.status();
  if (*repaired) {
    ++report->missing;
    drift_.Add({{"actuator", "ip_list"}, {"kind", "missing"}}).Increment();
    std::cerr << "palisaded: reconcile: the custom rule blocking IP list "
              << options_.list.list_name
              << " was missing, disabled or changed at the edge; it is put back" << std::endl;
  }
  absl::StatusOr<std::vector<ListItem>> items = client_.ListAllItems(list_id);
  if (!items.ok()) return items.status();
  std::set<std::string> at_edge;
  std::map<std::string, const ListItem*> marked;  // by ip, Palisade's items
  for (const ListItem& i : *items) {
    at_edge.insert(i.ip);
    if (!MarkedDecisionId(i.comment, options_.instance).empty()) marked[i.ip] = &i;
  }
  std::set<std::string> wanted;
  for (const Decision& d : decisions) {
    absl::StatusOr<std::string> item = items_.ItemFor(d.target());
    if (!item.ok()) continue;
    wanted.insert(*item);
    if (busy_.count(d.id()) || at_edge.count(*item) || FailedForGood(d, report)) continue;
    Missing(d, "ip_list", report);
  }
  // An item the dispatcher still has an operation for is left to it: a queued apply may count
  // on an item already there (shared by a /64), a queued remove will take it when it is the
  // last. The same for an item whose own decision has an operation to run.
  for (const auto& [id, d] : busy_) {
    if (d.actuator() != palisade::v1::ACTUATOR_IP_LIST) continue;
    absl::StatusOr<std::string> item = items_.ItemFor(d.target());
    if (item.ok()) wanted.insert(*item);
  }
  std::vector<std::string> orphans;
  std::set<std::string> gone;  // the decisions whose edge records name an orphan
  for (const auto& [ip, item] : marked) {
    const std::string decision = MarkedDecisionId(item->comment, options_.instance);
    if (wanted.count(ip) || busy_.count(decision)) continue;
    orphans.push_back(item->id);
    gone.insert(decision);
    // Decisions sharing the item (one IPv6 /64) hold it too, and none of them is active.
    for (const auto& [id, ref] : edges_) {
      if (ref.container == list_id && ref.id == ip) gone.insert(id);
    }
  }
  if (!orphans.empty()) {
    absl::StatusOr<std::string> op = client_.DeleteListItems(list_id, orphans);
    absl::Status s = op.ok() ? client_.WaitForOperation(*op) : op.status();
    if (!s.ok()) return s;
    // As for access rules and rate-limit rules: the records go with the items, and the items'
    // counts with them, so a later decision on the same address adds it again.
    for (const std::string& id : gone) dispatcher_.ForgetEdge(id);
    for (size_t i = 0; i < orphans.size(); ++i) Orphan("ip_list", report);
    for (IpList& l : *lists) {
      // Never below 0 (as the actuator's own count): the list's count, read before its items,
      // may lag them.
      if (l.id == list_id) {
        l.num_items = std::max(0, l.num_items - static_cast<int>(orphans.size()));
      }
    }
    dispatcher_.ListsRead(*lists);
  }
  return absl::OkStatus();
}

absl::Status Reconciler::CheckRateLimits(DriftReport* report) {
  absl::StatusOr<Ruleset> rs = client_.GetEntrypoint("http_ratelimit");
  if (!rs.ok() && rs.status().code() != absl::StatusCode::kNotFound) return rs.status();
  std::map<std::string, std::string> at_edge;  // decision id -> rule id
  std::set<std::string> rule_ids;               // every rule of the phase
  if (rs.ok()) {
    for (const RulesetRule& r : rs->rules) {
      rule_ids.insert(r.id);
      std::string id = RefDecisionId(r.ref, options_.instance);
      if (!id.empty()) at_edge[id] = r.id;
    }
  }
  DecisionFilter active;
  active.active_only = true;
  std::set<std::string> wanted;
  const std::vector<Decision> decisions = table_.List(active);
  Snapshot();
  for (const Decision& d : decisions) {
    if (d.actuator() != palisade::v1::ACTUATOR_RATE_LIMIT || d.dry_run()) continue;
    wanted.insert(d.id());
    // Its rule by the id recorded when it was made, whatever its ref says (one made before
    // cloudflare.instance was set carries the untagged ref): found, not missing (before, a
    // second rule was made, and the first outlived the decision).
    auto e = edges_.find(d.id());
    if (e != edges_.end() && !e->second.foreign && rule_ids.count(e->second.id)) continue;
    if (busy_.count(d.id()) || at_edge.count(d.id()) || FailedForGood(d, report)) continue;
    Missing(d, "rate_limit", report);
  }
  for (const auto& [id, rule_id] : at_edge) {
    if (wanted.count(id) || busy_.count(id)) continue;
    absl::Status s = client_.DeleteRulesetRule(rs->id, rule_id).status();
    if (!s.ok() && s.code() != absl::StatusCode::kNotFound) return s;
    dispatcher_.ForgetEdge(id);
    Orphan("rate_limit", report);
  }
  return absl::OkStatus();
}

}  // namespace palisade
