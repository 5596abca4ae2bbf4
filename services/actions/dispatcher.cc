#include "services/actions/dispatcher.h"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <iterator>
#include <set>

#include "absl/strings/str_cat.h"

namespace palisade {
namespace {

const char* OpName(ActionOp::Kind k) { return k == ActionOp::Kind::kApply ? "apply" : "remove"; }

// A target as the order rules compare it: kind and value.
std::string TargetKey(const palisade::v1::Target& t) {
  return absl::StrCat(static_cast<int>(t.kind()), "/", t.value());
}

// The order rule for an actuator that adopts existing objects (AdoptsExisting): an apply waits
// while a remove of the same target (kind and value) for another decision is anywhere in the
// queue; otherwise a retried remove would delete what the apply adopted (one access rule per
// target at the edge). The whole queue counts, not only the ops before the apply: a remove that
// failed goes back to the end of the queue, behind an apply that was waiting for it, and must
// still go first. The target stays blocked meanwhile by the object that remove has not deleted
// yet. The decision's own remove is no reason to wait: it must go after the apply, not before.
class RemoveBarrier {
 public:
  RemoveBarrier(const Actuator& actuator, const std::deque<ActionOp>& queue)
      : ordered_(actuator.AdoptsExisting()) {
    if (!ordered_) return;
    for (const ActionOp& op : queue) {
      if (op.kind == ActionOp::Kind::kRemove) removing_[Key(op)].insert(op.decision.id());
    }
  }
  // True when `op` must wait for a remove.
  bool Waits(const ActionOp& op) const {
    if (!ordered_ || op.kind != ActionOp::Kind::kApply) return false;
    auto it = removing_.find(Key(op));
    if (it == removing_.end()) return false;
    const std::set<std::string>& ids = it->second;
    return ids.size() > 1 || ids.count(op.decision.id()) == 0;
  }

 private:
  static std::string Key(const ActionOp& op) { return TargetKey(op.decision.target()); }
  const bool ordered_;
  std::map<std::string, std::set<std::string>> removing_;  // target -> decision ids
};

}  // namespace

Dispatcher::Dispatcher(Clock& clock, DispatcherOptions options, prometheus::Registry& registry)
    : clock_(clock),
      options_(std::move(options)),
      actions_(prometheus::BuildCounter()
                   .Name("palisade_actions_total")
                   .Help("Edge actions by actuator, op (apply, remove) and result (applied, "
                         "failed, retried, cancelled, dry_run).")
                   .Register(registry)),
      pending_family_(prometheus::BuildGauge()
                          .Name("palisade_actions_pending")
                          .Help("Edge actions queued, by actuator.")
                          .Register(registry)),
      latency_(prometheus::BuildHistogram()
                   .Name("palisade_actions_apply_latency_seconds")
                   .Help("From a decision's creation to its confirmation at the edge.")
                   .Register(registry)
                   .Add({}, prometheus::Histogram::BucketBoundaries{0.005, 0.01, 0.025, 0.05, 0.1,
                                                                    0.25, 0.5, 1, 2.5, 5, 10, 30})),
      guard_refused_(prometheus::BuildCounter()
                         .Name("palisade_guard_refused_total")
                         .Help("Applies refused by the safety guard, by reason.")
                         .Register(registry)),
      held_gauge_(prometheus::BuildGauge()
                      .Name("palisade_guard_held")
                      .Help("Applies held by the blast-radius limit until an operator "
                            "releases them.")
                      .Register(registry)
                      .Add({})),
      own_token_misuse_(prometheus::BuildCounter()
                            .Name("palisade_cloudflare_own_token_misuse_total")
                            .Help("Revocations of palisaded's own API token asked for (its use "
                                  "from an unexpected address, by the audit log): alerted on, "
                                  "never sent.")
                            .Register(registry)
                            .Add({})) {}

void Dispatcher::SetStore(Store* store) {
  absl::MutexLock lock(&mu_);
  store_ = store;
}

void Dispatcher::Drop(int64_t seq) {
  if (store_ == nullptr || seq == 0) return;
  absl::Status s = store_->DropOperation(seq);
  if (!s.ok()) std::cerr << "palisaded: " << s.message() << std::endl;
}

namespace {

// A dry run's "object" is none: it counts toward no cap (Guard's max_active_per_actuator).
bool IsObject(const EdgeRef& ref) { return ref.id != Dispatcher::kDryRunObject; }

}  // namespace

void Dispatcher::RememberEdge(const std::string& id, int kind, const EdgeRef& ref,
                              const std::string& target) {
  if (auto old = edges_.find(id); old != edges_.end() && IsObject(old->second.ref)) {
    --active_[old->second.kind];
  }
  edges_.insert_or_assign(id, Made{kind, ref, target});
  if (IsObject(ref)) ++active_[kind];
  // The remove of the decision it replaced may go now (its worker may be waiting): also when
  // it waited for a replacement in flight that this one succeeds (successor_heard_).
  if (awaited_.erase(id) > 0) wake_.SignalAll();
  successor_heard_.erase(id);
  for (auto s = successor_heard_.begin(); s != successor_heard_.end();) {
    if (s->second.id != id) {
      ++s;
      continue;
    }
    if (awaited_.erase(s->first) > 0) wake_.SignalAll();
    s = successor_heard_.erase(s);
  }
  // The apply succeeded after all (a changed decision tried again): in the store, the edge
  // record has replaced the failure record (one row per decision).
  failed_.erase(id);
  retry_with_secret_.erase(id);
  refused_never_ban_.erase(id);
}

void Dispatcher::ForgetEdgeLocked(const std::string& id) {
  // A failure record goes too: every caller deletes the decision's row in the store, whichever
  // kind it is.
  failed_.erase(id);
  retry_with_secret_.erase(id);
  refused_never_ban_.erase(id);
  auto it = edges_.find(id);
  if (it == edges_.end()) return;
  if (IsObject(it->second.ref)) --active_[it->second.kind];
  edges_.erase(it);
}

std::string Dispatcher::FailureVersion(const palisade::v1::Decision& decision) {
  return absl::StrCat(decision.expiry().seconds(), ".", decision.expiry().nanos());
}

void Dispatcher::RememberFailure(int kind, const ActionOp& op, bool lacked_secret) {
  const std::string& id = op.decision.id();
  const std::string version = FailureVersion(op.decision);
  failed_[id] = version;
  takes_over_rows_.erase(id);    // its hand-over record, if any, is replaced below
  refused_never_ban_.erase(id);  // the caller refusing it as never-ban says so after
  if (lacked_secret) {
    retry_with_secret_.insert(id);
  } else {
    retry_with_secret_.erase(id);
  }
  if (store_ == nullptr) return;
  // In the edges table, in the same transaction that deletes the operation: a restart then
  // neither runs the apply again nor forgets that it failed.
  absl::Status s = store_->CompleteApply(op.seq, {id, kind, version, kFailedContainer, true});
  if (!s.ok()) std::cerr << "palisaded: " << s.message() << std::endl;
}

bool Dispatcher::ForgetFailure(const std::string& id) {
  retry_with_secret_.erase(id);
  refused_never_ban_.erase(id);
  if (failed_.erase(id) == 0) return false;
  if (store_ != nullptr) {
    absl::Status s = store_->ForgetEdge(id);
    if (!s.ok()) std::cerr << "palisaded: " << s.message() << std::endl;
  }
  return true;
}

void Dispatcher::RecordTakeOvers(const palisade::v1::Decision& removed) {
  if (store_ == nullptr) return;
  const std::string target = TargetKey(removed.target());
  const auto record = [&](int kind, const ActionOp& o) {
    if (o.kind != ActionOp::Kind::kApply || o.replaces.empty() ||
        o.decision.id() == removed.id() || TargetKey(o.decision.target()) != target) {
      return;
    }
    // Taking over from another object still at the edge, the restart knows it (Restore).
    auto was = edges_.find(o.replaces);
    if (o.replaces != removed.id() && was != edges_.end() && IsObject(was->second.ref)) return;
    if (!takes_over_rows_.insert(o.decision.id()).second) return;
    absl::Status s =
        store_->CompleteApply(0, {o.decision.id(), kind, o.replaces, kTakesOverContainer, true});
    if (!s.ok()) std::cerr << "palisaded: " << s.message() << std::endl;
  };
  for (const auto& [kind, q] : queues_) {
    for (const ActionOp& o : q.ops) record(kind, o);
  }
  for (const auto& [kind, o] : held_) record(kind, o);
}

std::map<std::string, std::string> Dispatcher::FailedForGood() const {
  absl::MutexLock lock(&mu_);
  return failed_;
}

absl::Status Dispatcher::Restore() {
  absl::MutexLock lock(&mu_);
  if (store_ == nullptr) return absl::OkStatus();
  absl::StatusOr<std::vector<EdgeRow>> edges = store_->LoadEdges();
  if (!edges.ok()) return edges.status();
  std::map<int, std::vector<EdgeRef>> made;
  std::map<std::string, std::string> taking_over;  // hand-over records: decision id -> record id
  for (const EdgeRow& e : *edges) {
    if (e.container == kTakesOverContainer) {  // no object: see kTakesOverContainer
      taking_over[e.decision_id] = e.id;
      continue;
    }
    if (e.container == kFailedContainer) {  // no object: an apply that failed for good
      failed_[e.decision_id] = e.id;
      // Whatever the reason, a fingerprint's secret went with the process that held it.
      if (e.actuator == palisade::v1::ACTUATOR_TOKEN_REVOCATION) {
        retry_with_secret_.insert(e.decision_id);
      }
      continue;
    }
    RememberEdge(e.decision_id, e.actuator, {e.id, e.container, e.foreign}, "");
    if (!e.foreign) made[e.actuator].push_back({e.id, e.container, e.foreign});
  }
  // Actuators that keep counts (decisions per list item) start from the edge records.
  for (auto& [kind, q] : queues_) q.actuator->Restore(made[kind]);
  absl::StatusOr<std::vector<OutboxRow>> outbox = store_->LoadOutbox();
  if (!outbox.ok()) return outbox.status();
  std::map<std::string, int64_t> removed_at;  // decision id -> its last remove's seq
  // The applies still to do of decisions that stand (an ended one's is cancelled below, or its
  // remove follows it): decision id -> actuator. A remove waits only for one of these.
  std::map<std::string, int> standing_applies;
  // The same rows by the decision each replaces (Decision.replaces).
  std::multimap<std::string, const OutboxRow*> standing_by_replaced;
  for (const OutboxRow& row : *outbox) {
    if (!row.apply) {
      removed_at[row.decision.id()] = row.seq;
    } else if (row.decision.active()) {
      standing_applies[row.decision.id()] = row.decision.actuator();
      if (!row.decision.replaces().empty()) {
        standing_by_replaced.emplace(row.decision.replaces(), &row);
      }
    }
  }
  // A hand-over record whose decision has no apply left to take over with: nothing to keep.
  for (auto it = taking_over.begin(); it != taking_over.end();) {
    if (standing_applies.count(it->first) > 0) {
      takes_over_rows_.insert(it->first);
      ++it;
      continue;
    }
    absl::Status s = store_->ForgetEdge(it->first);
    if (!s.ok()) std::cerr << "palisaded: " << s.message() << std::endl;
    it = taking_over.erase(it);  // nor does an ended decision's apply take over by it, below
  }
  // A hand-over (OnDecision: a replacement cancelled before it went out, replaced in turn) is
  // kept in memory only: its apply row is gone, and the rows, joined to the stored decisions,
  // still name it (the replaced decision's remove by replaced_by, the next replacement by
  // replaces). A remove whose successor has neither an apply still to do nor an edge record
  // follows it on to the standing apply that replaced it, on its own target: that one takes over
  // from the decision still at the edge (not charged) and the remove waits for it, as before the
  // restart. A chain of cancelled replacements (b, then c, each replaced in turn) leaves no row
  // naming the link from one to the next: it is followed through the stored decisions (each
  // cancelled one's replaced_by, as the table wrote it when withdrawing it), read one link at a
  // time (never all of them: the ended ones are kept for the retention, with their evidence).
  std::map<std::string, std::string> successor_of;  // remove's decision id -> followed on
  std::map<std::string, std::string> takes_over;    // that apply's decision id -> the remove's
  for (const OutboxRow& row : *outbox) {
    const std::string& id = row.decision.id();
    const std::string target = TargetKey(row.decision.target());
    auto was = edges_.find(id);
    if (row.apply || row.decision.replaced_by().empty() || was == edges_.end() ||
        !IsObject(was->second.ref)) {
      continue;
    }
    // `next` was cancelled (no apply still to do, nothing at the edge, no failure record): the
    // standing apply naming it took over, or, none, the one that replaced it in turn did.
    std::set<std::string> seen;  // a chain the table wrote never loops; a store might
    for (std::string next = row.decision.replaced_by();
         !next.empty() && standing_applies.count(next) == 0 && edges_.count(next) == 0 &&
         failed_.count(next) == 0 && seen.insert(next).second;) {
      const auto [first, last] = standing_by_replaced.equal_range(next);
      for (auto it = first; it != last; ++it) {
        const palisade::v1::Decision& r = it->second->decision;
        if (removed_at.count(r.id()) == 0 && TargetKey(r.target()) == target) {
          successor_of[id] = r.id();
          takes_over[r.id()] = id;
          break;
        }
      }
      if (successor_of.count(id) > 0) break;
      // A link that cannot be read (pruned, corrupt) ends the walk, not the restart: the remove
      // then goes at once, as it did before chains were followed.
      absl::StatusOr<palisade::v1::Decision> link = store_->LoadDecision(next);
      if (!link.ok()) {
        std::cerr << "palisaded: restore: the hand-over from " << id << " is not followed past "
                  << next << ": " << link.status().message() << std::endl;
        break;
      }
      if (link->active() || TargetKey(link->target()) != target) break;
      next = link->replaced_by();
    }
  }
  for (OutboxRow& row : *outbox) {
    auto q = queues_.find(row.decision.actuator());
    auto p = parked_.find(row.decision.actuator());
    if (q == queues_.end() && p == parked_.end()) {
      Drop(row.seq);  // its actuator is gone from the config
      continue;
    }
    // The row says the target the edge row does not (see Made::target), before any
    // replacement's row (later): also one kept for a parked actuator, whose object stands.
    if (auto edge = edges_.find(row.decision.id()); edge != edges_.end()) {
      edge->second.target = TargetKey(row.decision.target());
    }
    if (q == queues_.end()) {
      LogParked(p->second);  // kept for the start that adds its actuator
      continue;
    }
    ActionOp op;
    op.kind = row.apply ? ActionOp::Kind::kApply : ActionOp::Kind::kRemove;
    op.decision = std::move(row.decision);
    op.seq = row.seq;
    op.attempts = row.attempts;
    op.not_before = row.not_before;
    // The rows carry the decisions, and so the table's pairing (Decision.replaces): as in
    // OnDecision, a replacement of what still stands at the edge. (Of an object whose remove
    // has completed since, in the same actuator: that remove left a kTakesOverContainer
    // record, below.)
    if (row.apply && !op.decision.replaces().empty()) {
      auto was = edges_.find(op.decision.replaces());
      if (was != edges_.end() && IsObject(was->second.ref) &&
          was->second.target == TargetKey(op.decision.target())) {
        op.replaces = op.decision.replaces();
      }
      // Handed over (see above): it takes over from the decision at the edge (same target).
      if (auto t = takes_over.find(op.decision.id()); t != takes_over.end()) {
        op.replaces = t->second;
      }
    }
    // Taking over from a decision whose remove completed before it (kTakesOverContainer).
    if (auto t = taking_over.find(op.decision.id());
        row.apply && op.replaces.empty() && t != taking_over.end()) {
      op.replaces = t->second;
    }
    auto removed = removed_at.find(op.decision.id());
    const bool removed_after = removed != removed_at.end() && removed->second > row.seq;
    if (row.apply && !op.decision.active() && !removed_after) {
      // Its decision has ended and no remove follows: an apply written late after a store
      // outage (the store refused its decision's creation, so it ran with no outbox row; its
      // decision's remove then completed on a row of its own). Run, it would put an ended
      // decision's object back at the edge, with nothing after it to take it down.
      Report(static_cast<palisade::v1::Actuator>(q->first), q->second.actuator->name(), op,
             "cancelled", "the decision has ended and no remove follows its apply");
      Drop(op.seq);
      continue;
    }
    if (row.apply && removed_after && q->second.actuator->AdoptsExisting()) {
      // Its decision ended before the apply was confirmed: the remove alone runs, and finds any
      // object the apply made by the decision's marker. Run, the apply would make (or adopt) an
      // object for a decision that has ended. (Other actuators run both, in order: an IP list
      // item may be another decision's too, which a remove without its apply would delete.)
      Report(static_cast<palisade::v1::Actuator>(q->first), q->second.actuator->name(), op,
             "cancelled", "the decision ended before its apply was confirmed");
      Drop(op.seq);
      continue;
    }
    if (!row.apply) {
      // Without an edge record, the remove finds its object by the decision's marker.
      auto edge = edges_.find(op.decision.id());
      op.edge = edge == edges_.end() ? EdgeRef() : edge->second.ref;
      // It waits again for its replacement only while that one's apply is still to do in
      // another started actuator and that decision stands (no remove of it follows): never
      // for one that has ended, whose end would not be heard again. One whose apply failed
      // for good has no row left, and nothing here says whether it stands: the remove runs.
      if (auto f = successor_of.find(op.decision.id()); f != successor_of.end()) {
        op.decision.set_replaced_by(f->second);  // handed over (see above)
      }
      const std::string& successor = op.decision.replaced_by();
      auto s = standing_applies.find(successor);
      if (!successor.empty() && IsObject(op.edge) && s != standing_applies.end() &&
          removed_at.count(successor) == 0 && s->second != q->first &&
          queues_.count(s->second) > 0) {
        awaited_.emplace(successor, q->first);
      }
    }
    q->second.ops.push_back(std::move(op));
  }
  for (auto& [kind, q] : queues_) q.pending->Set(static_cast<double>(q.ops.size()));
  return absl::OkStatus();
}

void Dispatcher::SetGuard(std::unique_ptr<Guard> guard) {
  absl::MutexLock lock(&mu_);
  guard_ = std::move(guard);
}

void Dispatcher::SetNeverBan(CidrSet never_ban) {
  absl::MutexLock lock(&mu_);
  if (guard_ == nullptr) return;
  guard_->SetNeverBan(std::move(never_ban));
  std::vector<NeverBanRefusal> freed;
  for (const auto& [id, refusal] : refused_never_ban_) {
    if (!guard_->NeverBan(refusal.decision.target())) freed.push_back(refusal);
  }
  for (NeverBanRefusal& refusal : freed) {
    const std::string id = refusal.decision.id();
    auto q = queues_.find(refusal.kind);
    if (q == queues_.end()) continue;
    ActionOp op;
    op.kind = ActionOp::Kind::kApply;
    op.decision = std::move(refusal.decision);
    if (store_ != nullptr) {
      // Recorded before the failure record goes: a crash between them leaves both, and the op,
      // run, replaces the failure record (or makes it again if the set is back).
      absl::StatusOr<int64_t> seq = store_->AddOperation(id, true);
      if (seq.ok()) {
        op.seq = *seq;
      } else {
        std::cerr << "palisaded: " << seq.status().message() << std::endl;
      }
    }
    ForgetFailure(id);
    std::cerr << "palisaded: guard: decision " << id << " on " << op.decision.target().value()
              << ", refused as never-ban, is no longer protected by the reloaded set; queued again"
              << std::endl;
    queued_at_[id] = clock_.TimeNow();
    q->second.ops.push_back(std::move(op));
    q->second.pending->Set(static_cast<double>(q->second.ops.size()));
  }
  wake_.SignalAll();
}

int Dispatcher::ReleaseHeld(int max) {
  absl::MutexLock lock(&mu_);
  int n = 0;
  while (!held_.empty() && n < max) {
    auto [kind, op] = std::move(held_.front());
    held_.pop_front();
    op.released = true;
    queues_[kind].ops.push_back(std::move(op));
    ++n;
  }
  held_gauge_.Set(static_cast<double>(held_.size()));
  if (n > 0) wake_.SignalAll();
  return n;
}

size_t Dispatcher::held() const {
  absl::MutexLock lock(&mu_);
  return held_.size();
}

Dispatcher::~Dispatcher() { Stop(); }

void Dispatcher::AddActuator(palisade::v1::Actuator kind, std::unique_ptr<Actuator> actuator) {
  absl::MutexLock lock(&mu_);
  Queue& q = queues_[kind];
  q.pending = &pending_family_.Add({{"actuator", actuator->name()}});
  q.actuator = std::move(actuator);
}

void Dispatcher::ParkActuator(palisade::v1::Actuator kind, const std::string& name) {
  absl::MutexLock lock(&mu_);
  parked_[kind].name = name;
}

void Dispatcher::LogParked(Parked& parked) {
  if (parked.logged) return;
  parked.logged = true;
  std::cerr << "palisaded: " << parked.name << " is not started (the credentials check): "
            << (store_ != nullptr ? "its operations are kept in the outbox until a start with "
                                    "the permission runs them"
                                  : "its operations are not kept (no store)")
            << std::endl;
}

void Dispatcher::Count(const std::string& actuator, ActionOp::Kind kind,
                       const std::string& result) {
  actions_.Add({{"actuator", actuator}, {"op", OpName(kind)}, {"result", result}}).Increment();
}

void Dispatcher::SetObserver(Observer observer) {
  absl::MutexLock lock(&mu_);
  observer_ = std::move(observer);
}

void Dispatcher::Report(palisade::v1::Actuator kind, const std::string& actuator,
                        const ActionOp& op, const std::string& result, absl::string_view detail,
                        absl::string_view alert) {
  Count(actuator, op.kind, result);
  if (!observer_) return;
  ActionOutcome outcome;
  outcome.outcome = result;
  outcome.actuator = kind;
  outcome.operation = OpName(op.kind);
  outcome.decision = op.decision;
  outcome.attempt = op.attempts;
  outcome.detail = std::string(detail);
  outcome.alert = std::string(alert);
  observer_(outcome);
}

void Dispatcher::OnDecision(const DecisionUpdate& update) {
  const palisade::v1::Decision& d = update.decision;
  absl::MutexLock lock(&mu_);
  const bool ends =
      update.change == DecisionChange::kExpired || update.change == DecisionChange::kWithdrawn;
  auto q = queues_.find(d.actuator());
  // A remove waiting for this decision (it replaced that one's, Decision.replaced_by) waits no
  // more once it has ended (in a started actuator, once its own op is settled below: a
  // cancelled replacement may hand the wait over), or once it is heard created for the same
  // queue (the order rules stand there: RemoveBarrier) or for an actuator not started here (it
  // reaches no edge here). Before any return below: whatever its actuator.
  if (auto w = awaited_.find(d.id()); w != awaited_.end()) {
    if ((ends && q == queues_.end()) || (update.change == DecisionChange::kCreated &&
                                         (w->second == d.actuator() || q == queues_.end()))) {
      awaited_.erase(w);
      wake_.SignalAll();
    }
  }
  // Ended, it takes over no wait from a replacement in flight (successor_heard_): that apply
  // settling without landing releases the remove. Before any return below. Unless withdrawn
  // for another while its own apply is in flight: that apply may yet land (RememberEdge then
  // releases the remove) and, should it not, its settling passes the wait on to its own
  // successor, or releases it (PassOnWait). Dropped here, the remove went as the first
  // replacement failed, and the target was bare until this one landed.
  const bool withdrawn_in_flight =
      q != queues_.end() && in_flight_.count(d.id()) > 0 && !d.replaced_by().empty();
  if (ends && !withdrawn_in_flight) {
    for (auto s = successor_heard_.begin(); s != successor_heard_.end();) {
      s = s->second.id == d.id() ? successor_heard_.erase(s) : std::next(s);
    }
  }
  // The decision this one replaced: a cancelled replacement's hand-over names the decision
  // that one replaced, still standing (handed_over_).
  std::string replaced = d.replaces();
  if (update.change == DecisionChange::kCreated && !replaced.empty()) {
    if (auto h = handed_over_.find(replaced); h != handed_over_.end()) {
      replaced = h->second;
      handed_over_.erase(h);
    }
  }
  if (q == queues_.end()) {
    if (auto p = parked_.find(d.actuator()); p != parked_.end()) {
      // Its remove stays in the outbox, its object at the edge meanwhile: a restored record
      // learns its target (see Made::target), so the replacement heard next takes over from it.
      if (auto edge = edges_.find(d.id()); ends && edge != edges_.end()) {
        edge->second.target = TargetKey(d.target());
      }
      LogParked(p->second);  // its operation stays in the outbox for the next start
      return;
    }
    Drop(update.outbox_seq);  // ACTUATOR_NONE, or Cloudflare not configured
    return;
  }
  if (update.change == DecisionChange::kCreated) {
    ActionOp op;
    op.kind = ActionOp::Kind::kApply;
    op.decision = d;
    op.secret = update.secret;
    op.seq = update.outbox_seq;
    // The table says which decision this one replaced (its stronger-claim path only): a
    // replacement of what stands at the edge, or of an apply in flight (charged already),
    // restricts no new target. One of what never got there (cancelled, held, dry run) does.
    // An apply in flight counts only when it goes out (a shadow rule's sends nothing, and was
    // never charged): its decision was withdrawn for this one (remove_after_).
    if (!replaced.empty()) {
      // On its own target only (defence in depth: the table pairs no other).
      const std::string target = TargetKey(d.target());
      auto was = edges_.find(replaced);
      auto after = remove_after_.find(replaced);
      if ((was != edges_.end() && IsObject(was->second.ref) && was->second.target == target) ||
          (in_flight_.count(replaced) > 0 && after != remove_after_.end() && after->second.sent &&
           after->second.target == target)) {
        op.replaces = replaced;
      }
      // It replaced one withdrawn while its apply is in flight (remove_after_), for which the
      // remove of the decision that one replaced waits: should that apply not land, the remove
      // waits for this one instead (PassOnWait). Recorded with its queue whatever that queue:
      // PassOnWait lets the remove go rather than wait in its own queue, where this apply would
      // wait behind the remove (RemoveBarrier) and the remove for it, for ever. Not recorded
      // in that remove's queue, the entry that `replaced` itself took over (from the remove of
      // an earlier replacement in flight, in another queue) was lost as its apply failed, and
      // that remove went, the target bare until this one landed.
      auto w = awaited_.find(replaced);
      if (after != remove_after_.end() && after->second.replaced_by == d.id() &&
          after->second.target == target && w != awaited_.end()) {
        successor_heard_[replaced] = {d.id(), q->first};
      }
    }
    q->second.ops.push_back(std::move(op));
    queued_at_[d.id()] = clock_.TimeNow();
  } else if (ends) {
    counted_.erase(d.id());
    // Its hand-over record (kTakesOverContainer) takes over nothing now; an apply in flight
    // landing after replaces it with its object's, which its remove then takes down.
    if (takes_over_rows_.erase(d.id()) > 0 && edges_.count(d.id()) == 0 &&
        failed_.count(d.id()) == 0 && store_ != nullptr) {
      absl::Status s = store_->ForgetEdge(d.id());
      if (!s.ok()) std::cerr << "palisaded: " << s.message() << std::endl;
    }
    // Withdrawn for a stronger decision (Decision.replaced_by): its remove waits for that one
    // (AwaitsSuccessor), from now, before that creation is even heard (a worker may run in
    // between); OnDecision lets it go at once if that one is in the same queue. Never after an
    // expiry or an operator's withdrawal: they name no replacement.
    const auto await_replacement = [&] {
      if (!d.replaced_by().empty()) awaited_.emplace(d.replaced_by(), q->first);
    };
    // An apply cancelled here (queued or held) never went out: the decision it replaced
    // (ActionOp::replaces) still stands, its remove waiting for this one. When the table
    // replaced this one in turn, the next replacement takes over from that decision (not
    // charged: handed_over_) and that remove waits for it instead. Without this, the remove
    // went as this one ended, and the next, naming one never at the edge, was charged and could
    // be held: the target bare. False when nothing is handed over.
    const auto hand_over = [&](const ActionOp& cancelled) {
      const std::string& was_id = cancelled.replaces;
      const std::string& next = d.replaced_by();
      if (was_id.empty() || next.empty()) return false;
      int remove_kind = 0;
      if (auto after = remove_after_.find(was_id); after != remove_after_.end()) {
        after->second.replaced_by = next;  // its remove, made once its apply settles
        remove_kind = after->second.kind;
      } else if (auto was = edges_.find(was_id); was != edges_.end() && IsObject(was->second.ref)) {
        remove_kind = was->second.kind;
        if (auto rq = queues_.find(remove_kind); rq != queues_.end()) {
          for (ActionOp& o : rq->second.ops) {
            if (o.kind == ActionOp::Kind::kRemove && o.decision.id() == was_id) {
              o.decision.set_replaced_by(next);
            }
          }
        }
      } else {
        return false;  // its remove has gone out: nothing stands to take over from
      }
      handed_over_[d.id()] = was_id;
      awaited_.erase(d.id());
      awaited_.insert_or_assign(next, remove_kind);
      return true;
    };
    bool handed_over = false;
    bool in_flight = false;
    auto& ops = q->second.ops;
    auto queued = std::find_if(ops.begin(), ops.end(), [&](const ActionOp& op) {
      return op.kind == ActionOp::Kind::kApply && op.decision.id() == d.id();
    });
    auto held = std::find_if(held_.begin(), held_.end(),
                             [&](const auto& h) { return h.second.decision.id() == d.id(); });
    if (queued != ops.end()) {  // never went out: nothing to undo
      handed_over = hand_over(*queued);
      queued_at_.erase(d.id());
      Drop(queued->seq);
      Drop(update.outbox_seq);
      Report(static_cast<palisade::v1::Actuator>(q->first), q->second.actuator->name(), *queued,
             "cancelled", "the decision ended before it was sent");
      ops.erase(queued);
    } else if (held != held_.end()) {
      handed_over = hand_over(held->second);
      queued_at_.erase(d.id());
      Drop(held->second.seq);
      Drop(update.outbox_seq);
      Report(static_cast<palisade::v1::Actuator>(q->first), q->second.actuator->name(),
             held->second, "cancelled", "the decision ended while held by the guard");
      held_.erase(held);
      held_gauge_.Set(static_cast<double>(held_.size()));
    } else if (in_flight_.count(d.id())) {
      ActionOp apply;
      apply.kind = ActionOp::Kind::kApply;
      apply.decision = d;
      remove_after_[d.id()] = {update.outbox_seq, d.replaced_by(), q->first, TargetKey(d.target()),
                               Sends(apply)};
      await_replacement();
      // Withdrawn for a stronger decision, its apply may yet fail to land, and the target be
      // bare until that one does: the remove waiting for this one keeps waiting until the apply
      // settles (landed: RememberEdge; not: PassOnWait, to the successor if heard by then).
      // Withdrawn naming none (an expiry, an operator's withdrawal), the remove goes now.
      in_flight = !d.replaced_by().empty();
    } else if (auto edge = edges_.find(d.id()); edge != edges_.end()) {
      if (IsObject(edge->second.ref)) await_replacement();
      edge->second.target = TargetKey(d.target());  // a restored record's (see Made::target)
      ActionOp op;
      op.kind = ActionOp::Kind::kRemove;
      op.decision = d;
      op.edge = edge->second.ref;
      op.seq = update.outbox_seq;
      ops.push_back(std::move(op));
    } else {
      // Nothing at the edge to remove; an apply that failed for good need not be remembered
      // past its decision.
      ForgetFailure(d.id());
      Drop(update.outbox_seq);
    }
    // The remove waiting for this decision goes now, unless handed over or in flight above.
    if (!handed_over && !in_flight && awaited_.erase(d.id()) > 0) wake_.SignalAll();
  } else if (update.change == DecisionChange::kExtended && !update.secret.empty()) {
    // A fingerprint's token seen again, with its secret (memory only: see ActionOp::secret). An
    // apply queued or held without it (restored after a restart) gets it; one that failed for
    // good for want of it is applied again, durably.
    const auto lacks = [&d](const ActionOp& op) {
      return op.kind == ActionOp::Kind::kApply && op.decision.id() == d.id() && op.secret.empty();
    };
    auto& ops = q->second.ops;
    auto queued = std::find_if(ops.begin(), ops.end(), lacks);
    auto held =
        std::find_if(held_.begin(), held_.end(), [&](const auto& h) { return lacks(h.second); });
    if (queued != ops.end()) {
      queued->secret = update.secret;
    } else if (held != held_.end()) {
      held->second.secret = update.secret;
    } else if (failed_.count(d.id()) && retry_with_secret_.count(d.id())) {
      ActionOp op;
      op.kind = ActionOp::Kind::kApply;
      op.decision = d;
      op.secret = update.secret;
      if (store_ != nullptr) {
        // Recorded before the failure record goes: a crash between them leaves both, and the
        // op, run without its secret, makes the failure record again.
        absl::StatusOr<int64_t> seq = store_->AddOperation(d.id(), true);
        if (seq.ok()) {
          op.seq = *seq;
        } else {
          std::cerr << "palisaded: " << seq.status().message() << std::endl;
        }
      }
      ForgetFailure(d.id());
      std::cerr << "palisaded: " << q->second.actuator->name() << " for decision " << d.id()
                << " on " << d.target().value() << ": the token was seen again with its secret; "
                << "its revocation, failed for good, is tried again" << std::endl;
      ops.push_back(std::move(op));
    } else {
      return;
    }
  } else {
    return;
  }
  q->second.pending->Set(static_cast<double>(q->second.ops.size()));
  wake_.SignalAll();
}

int Dispatcher::RunOnce() {
  std::vector<int> kinds;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [kind, q] : queues_) kinds.push_back(kind);
  }
  int ran = 0;
  for (int kind : kinds) ran += RunQueue(kind);
  return ran;
}

bool Dispatcher::WaitsForCredentials(int kind, absl::Time now) const {
  auto w = credential_wait_.find(kind);
  return w != credential_wait_.end() && w->second.until > now;
}

bool Dispatcher::HasDue(int kind, absl::Time now) const {
  auto qi = queues_.find(kind);
  if (qi == queues_.end() || WaitsForCredentials(kind, now)) return false;
  const RemoveBarrier barrier(*qi->second.actuator, qi->second.ops);
  for (const ActionOp& op : qi->second.ops) {
    if (!barrier.Waits(op) && !AwaitsSuccessor(op) && op.not_before <= now) return true;
  }
  return false;
}

std::vector<ActionOp> Dispatcher::TakeDue(int kind, absl::Time now) {
  std::vector<ActionOp> batch;
  auto qi = queues_.find(kind);
  if (qi == queues_.end() || WaitsForCredentials(kind, now)) return batch;
  Queue& q = qi->second;
  // An apply whose decision ended while it was in flight, put back in the queue unsent (the
  // ops after a refusal of the credentials, or at a stop): cancelled with its remove, as in the
  // batch (RunQueue), before the guard could refuse it (a reload's never-ban set) and keep its
  // remove_after_ entry, and a remove waiting for it (awaited_), for ever. A backstop: RunQueue
  // cancels it as it puts it back. A pass of its own, before the loop below moves ops out:
  // the cancel's PassOnWait may rewrite a remove of this very queue.
  for (auto it = q.ops.begin(); it != q.ops.end();) {
    if (CancelEndedApply(static_cast<palisade::v1::Actuator>(kind), q.actuator->name(), *it)) {
      it = q.ops.erase(it);
    } else {
      ++it;
    }
  }
  const RemoveBarrier barrier(*q.actuator, q.ops);
  std::deque<ActionOp> keep;
  for (ActionOp& op : q.ops) {
    if (barrier.Waits(op) || AwaitsSuccessor(op) || op.not_before > now) {
      keep.push_back(std::move(op));
      continue;
    }
    if (op.kind == ActionOp::Kind::kApply && guard_ != nullptr) {
      if (guard_->OwnToken(op.decision.target())) {
        // Its own token misused (or so an audit record says): revoking it would cut palisaded
        // off the edge, which is what someone who stole it might want. An operator decides.
        queued_at_.erase(op.decision.id());
        guard_refused_.Add({{"reason", "own_token"}}).Increment();
        own_token_misuse_.Increment();
        RememberFailure(kind, op);
        Report(static_cast<palisade::v1::Actuator>(kind), q.actuator->name(), op, "refused",
               "palisaded's own API token: never revoked automatically; an alert is raised",
               "own_token_misuse");
        std::cerr << "palisaded: ALERT: cloudflare: palisaded's own API token "
                  << op.decision.target().value() << " was used from an unexpected address "
                  << "(rule " << op.decision.rule_id() << ", decision " << op.decision.id()
                  << "); not revoked: check the token's IP filter and roll it "
                  << "(palisadectl cloudflare rotate) if it was not palisaded" << std::endl;
        continue;
      }
      if (guard_->NeverBan(op.decision.target())) {
        queued_at_.erase(op.decision.id());
        guard_refused_.Add({{"reason", "never_ban"}}).Increment();
        RememberFailure(kind, op);
        refused_never_ban_[op.decision.id()] = {kind, op.decision};
        Report(static_cast<palisade::v1::Actuator>(kind), q.actuator->name(), op, "refused",
               "the target is in the never-ban set");
        std::cerr << "palisaded: guard: decision " << op.decision.id() << " on "
                  << op.decision.target().value() << " targets a never-ban address; not sent"
                  << std::endl;
        continue;
      }
      // The budget counts new bans: an op spends it on its first pass only, not again at each
      // retry (an outage would otherwise spend max_attempts slots on one ban, and hold the
      // bans behind it, or its own retry), nor a decision's repair (counted_). An apply that
      // sends nothing (dry run) is no ban, nor one that takes over a target from a decision
      // standing at the edge (ActionOp::replaces): held, it left the target bare once that
      // decision's remove (never held) went out.
      if (!op.counted && counted_.count(op.decision.id()) == 0 && Sends(op)) {
        const bool replaces = !op.replaces.empty();
        int active = active_[kind];
        auto was = edges_.find(op.replaces);
        if (replaces && was != edges_.end() && was->second.kind == kind &&
            IsObject(was->second.ref)) {
          --active;  // the target's object until its remove settles: the cap counts it once
        }
        if (op.released) {
          if (!replaces) guard_->Record(op.decision, now);
        } else if (guard_->Check(op.decision, now, active, replaces) == Guard::Verdict::kHeld) {
          Report(static_cast<palisade::v1::Actuator>(kind), q.actuator->name(), op, "held",
                 "over the blast-radius limit; release with palisadectl actions release");
          held_.emplace_back(kind, std::move(op));
          // One line for the first held action and one per thousand after, not one each.
          if (held_.size() == 1 || held_.size() % 1000 == 0) {
            std::cerr << "palisaded: guard: " << held_.size()
                      << " action(s) held by the blast-radius limit; release with "
                         "palisadectl actions release"
                      << std::endl;
          }
          continue;
        }
        op.counted = true;
        counted_.insert(op.decision.id());
      }
    }
    if (op.kind == ActionOp::Kind::kApply) in_flight_.insert(op.decision.id());
    batch.push_back(std::move(op));
  }
  q.ops = std::move(keep);
  q.pending->Set(static_cast<double>(q.ops.size()));
  held_gauge_.Set(static_cast<double>(held_.size()));
  return batch;
}

int Dispatcher::RunQueue(int kind) {
  std::vector<ActionOp> batch;
  Actuator* actuator = nullptr;
  {
    absl::MutexLock lock(&mu_);
    if (paused_ > 0) return 0;
    auto q = queues_.find(kind);
    if (q == queues_.end()) return 0;
    actuator = q->second.actuator.get();
    batch = TakeDue(kind, clock_.TimeNow());
    if (batch.empty()) return 0;
    ++running_;
  }
  // An actuator that makes one bulk operation of the batch gets it whole; any other gets one op
  // at a time, and each outcome is recorded before the next op goes out.
  std::vector<std::vector<ActionOp*>> chunks;
  for (ActionOp& op : batch) {
    if (chunks.empty() || !actuator->RunsInBatches()) chunks.emplace_back();
    chunks.back().push_back(&op);
  }
  int ran = 0;
  for (size_t c = 0; c < chunks.size(); ++c) {
    {
      absl::MutexLock lock(&mu_);
      // An apply whose decision ended since the batch was taken (while the ops before it ran)
      // never goes out: cancelled with its remove, as in the queue.
      std::vector<ActionOp*> go;
      for (ActionOp* op : chunks[c]) {
        if (CancelEndedApply(static_cast<palisade::v1::Actuator>(kind), actuator->name(), *op)) {
          in_flight_.erase(op->decision.id());
          continue;
        }
        go.push_back(op);
      }
      chunks[c] = std::move(go);
    }
    if (chunks[c].empty()) continue;
    if (c > 0) {
      absl::MutexLock lock(&mu_);
      if (stopping_ || WaitsForCredentials(kind, clock_.TimeNow())) {
        // Shutting down, or Cloudflare has just refused palisaded's credentials for this
        // actuator (each op after would be refused too, one request each): what has not gone
        // out goes back to the queue (and is in the outbox).
        // An apply whose decision ended while it was in flight is cancelled here, not at its
        // turn (TakeDue), which comes only once the credential wait ends (up to max_backoff):
        // the remove waiting for it (awaited_) waited as long, the replaced object standing
        // past its decision.
        Queue& q = queues_[kind];
        for (size_t rest = chunks.size(); rest-- > c;) {
          for (auto it = chunks[rest].rbegin(); it != chunks[rest].rend(); ++it) {
            if ((*it)->kind == ActionOp::Kind::kApply) in_flight_.erase((*it)->decision.id());
            if (CancelEndedApply(static_cast<palisade::v1::Actuator>(kind), actuator->name(),
                                 **it)) {
              continue;
            }
            q.ops.push_front(std::move(**it));
          }
        }
        q.pending->Set(static_cast<double>(q.ops.size()));
        break;
      }
    }
    // Fingerprint revocations going out without their secret (a restart lost it): a failure
    // for good of one of them may be put right by the secret (OnDecision, kExtended).
    std::set<const ActionOp*> secretless;
    for (const ActionOp* op : chunks[c]) {
      if (op->kind == ActionOp::Kind::kApply && op->secret.empty() &&
          op->decision.target().kind() == palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT) {
        secretless.insert(op);
      }
    }
    // Shadow mode (global or per rule): record and count, send nothing (but the remove of a
    // real object: see Sends).
    std::vector<ActionOp*> live;
    std::set<const ActionOp*> unsent;
    for (ActionOp* op : chunks[c]) {
      if (Sends(*op)) {
        live.push_back(op);
        continue;
      }
      unsent.insert(op);
      op->result = absl::OkStatus();
      op->edge = {kDryRunObject, "", true};
      std::cerr << "palisaded: dry run: would " << OpName(op->kind) << " " << actuator->name()
                << " for decision " << op->decision.id() << " on " << op->decision.target().value()
                << std::endl;
    }
    if (!live.empty()) actuator->Run(live);
    ran += static_cast<int>(chunks[c].size());
    absl::MutexLock lock(&mu_);
    Settle(kind, *actuator, chunks[c], secretless, unsent);
  }
  absl::MutexLock lock(&mu_);
  --running_;
  return ran;
}

bool Dispatcher::Sends(const ActionOp& op) const {
  if (!options_.dry_run && !op.decision.dry_run()) return true;
  return op.kind == ActionOp::Kind::kRemove && !op.edge.id.empty() && IsObject(op.edge);
}

void Dispatcher::Settle(int kind, Actuator& actuator, std::vector<ActionOp*>& ops,
                        const std::set<const ActionOp*>& secretless,
                        const std::set<const ActionOp*>& unsent) {
  Queue& q = queues_[kind];
  const absl::Time done = clock_.TimeNow();
  bool refused = false;   // an op was refused for palisaded's credentials
  bool accepted = false;  // an op went through: the credentials work (or need none)
  std::string refusal;
  for (ActionOp* settled : ops) {
    ActionOp& op = *settled;
    const std::string id = op.decision.id();
    if (op.kind == ActionOp::Kind::kApply) in_flight_.erase(id);
    if (IsCredentialError(op.result) && refusal.empty()) {
      refusal = std::string(op.result.message());
    }
    if (op.result.ok()) {
      const bool sent = unsent.count(settled) == 0;
      accepted |= sent;  // a dry run sent nothing
      Report(static_cast<palisade::v1::Actuator>(kind), actuator.name(), op,
             sent ? "applied" : "dry_run");
      if (op.kind == ActionOp::Kind::kApply) {
        // Its record replaces the hand-over record, if any. Without an outbox row (seq 0: the
        // store refused its decision) it writes none, and the hand-over record would stay until
        // its decision's end: gone now.
        if (takes_over_rows_.erase(id) > 0 && op.seq == 0 && store_ != nullptr) {
          absl::Status s = store_->ForgetEdge(id);
          if (!s.ok()) std::cerr << "palisaded: " << s.message() << std::endl;
        }
      } else if (IsObject(op.edge)) {
        RecordTakeOvers(op.decision);  // before the remove's record goes
      }
      if (store_ != nullptr && op.seq != 0) {
        absl::Status s = op.kind == ActionOp::Kind::kApply
                             ? store_->CompleteApply(op.seq, {id, kind, op.edge.id,
                                                              op.edge.container, op.edge.foreign})
                             : store_->CompleteRemove(op.seq, id);
        if (!s.ok()) std::cerr << "palisaded: " << s.message() << std::endl;
      }
      if (op.kind == ActionOp::Kind::kApply) {
        RememberEdge(id, kind, op.edge, TargetKey(op.decision.target()));
        if (auto t = queued_at_.find(id); t != queued_at_.end()) {
          latency_.Observe(absl::ToDoubleSeconds(done - t->second));
          queued_at_.erase(t);
        }
        if (auto after = remove_after_.find(id); after != remove_after_.end()) {
          ActionOp remove;
          remove.kind = ActionOp::Kind::kRemove;
          remove.decision = op.decision;
          remove.decision.set_active(false);
          // Waits for the decision that replaced it, as one made in OnDecision.
          remove.decision.set_replaced_by(after->second.replaced_by);
          remove.edge = op.edge;
          remove.seq = after->second.seq;
          remove_after_.erase(after);
          q.ops.push_back(std::move(remove));
        }
      } else {
        ForgetEdgeLocked(id);
      }
      continue;
    }
    if (IsCredentialError(op.result)) {
      // Palisaded's token was refused: not the decision's fault, and not an attempt that
      // counts. The op keeps its place in the outbox as it is (a restart runs it at once) and
      // the actuator's queue waits (see the end of Settle).
      refused = true;
      Report(static_cast<palisade::v1::Actuator>(kind), actuator.name(), op, "retried",
             absl::StrCat(op.result.message(), "; waits until the credentials work again"));
      if (CancelEndedApply(static_cast<palisade::v1::Actuator>(kind), actuator.name(), op)) {
        continue;
      }
      q.ops.push_back(std::move(op));
      continue;
    }
    ++op.attempts;
    // A revocation is never given up on while its failures are transient: nothing else would
    // try it again (the reconciler does not look at tokens), and a leaked token stays live until
    // it is revoked. A fingerprint's op keeps the secret, its only way to the token, in memory.
    const bool revocation = kind == palisade::v1::ACTUATOR_TOKEN_REVOCATION &&
                            op.kind == ActionOp::Kind::kApply;
    if (IsTransient(op.result) && (op.attempts < options_.max_attempts || revocation)) {
      // The exponent is capped so that a revocation retried for days stays at max_backoff.
      const absl::Duration backoff =
          std::min(options_.max_backoff,
                   options_.initial_backoff * std::pow(2.0, std::min(op.attempts - 1, 30)));
      op.not_before = done + backoff;
      if (revocation && op.attempts == options_.max_attempts) {
        std::cerr << "palisaded: " << actuator.name() << " for decision " << id << " on "
                  << op.decision.target().value() << " still failing after " << op.attempts
                  << " attempt(s) (" << op.result.message() << "); kept, and tried again every "
                  << absl::FormatDuration(options_.max_backoff) << " at most" << std::endl;
      }
      Report(static_cast<palisade::v1::Actuator>(kind), actuator.name(), op, "retried",
             op.result.message());
      if (CancelEndedApply(static_cast<palisade::v1::Actuator>(kind), actuator.name(), op)) {
        continue;
      }
      if (store_ != nullptr && op.seq != 0) {
        absl::Status s = store_->Reschedule(op.seq, op.attempts, op.not_before);
        if (!s.ok()) std::cerr << "palisaded: " << s.message() << std::endl;
      }
      q.ops.push_back(std::move(op));
      continue;
    }
    Report(static_cast<palisade::v1::Actuator>(kind), actuator.name(), op, "failed",
           op.result.message());
    bool ended = false;
    if (auto after = remove_after_.find(id); after != remove_after_.end()) {
      if (op.kind == ActionOp::Kind::kApply) PassOnWait(id);
      Drop(after->second.seq);
      remove_after_.erase(after);
      ended = true;
    }
    // A permanent error will not go away by applying the same decision again: remembered, so
    // the reconciler does not. Retries that ran out are not: the outage may end, and the
    // reconciler's repair is what applies them then.
    if (op.kind == ActionOp::Kind::kApply && !ended && !IsTransient(op.result)) {
      RememberFailure(kind, op, secretless.count(settled) > 0);
    } else {
      Drop(op.seq);
    }
    queued_at_.erase(id);
    std::cerr << "palisaded: " << actuator.name() << " " << OpName(op.kind) << " for decision "
              << id << " on " << op.decision.target().value() << " failed after " << op.attempts
              << " attempt(s): " << op.result.message() << std::endl;
  }
  CredentialWait& wait = credential_wait_[kind];
  if (refused) {
    // One probe per wait, the wait doubling up to max_backoff: with the token refused, the
    // whole queue going out again would spend one request per op, each refused.
    ++wait.strikes;
    wait.until = done + std::min(options_.max_backoff,
                                 options_.initial_backoff *
                                     std::pow(2.0, std::min(wait.strikes - 1, 30)));
    if (wait.strikes == 1) {
      std::cerr << "palisaded: " << actuator.name() << ": Cloudflare refused palisaded's "
                << "credentials (" << refusal << "); its operations wait in the outbox and "
                << "are tried again every " << absl::FormatDuration(options_.max_backoff)
                << " at most, or when the credentials check finds the permission again"
                << std::endl;
    }
  } else if (accepted) {
    wait = CredentialWait();
  }
  q.pending->Set(static_cast<double>(q.ops.size()));
}

bool Dispatcher::CancelEndedApply(palisade::v1::Actuator kind, const std::string& actuator,
                                  const ActionOp& op) {
  const std::string& id = op.decision.id();
  auto after = remove_after_.find(id);
  if (op.kind != ActionOp::Kind::kApply || after == remove_after_.end()) return false;
  queued_at_.erase(id);
  Report(kind, actuator, op, "cancelled", "the decision ended before it was sent");
  PassOnWait(id);
  Drop(op.seq);
  Drop(after->second.seq);
  remove_after_.erase(after);
  return true;
}

void Dispatcher::PassOnWait(const std::string& id) {
  Successor heard;
  if (auto s = successor_heard_.find(id); s != successor_heard_.end()) {
    heard = s->second;
    successor_heard_.erase(s);
  }
  // `id` may itself have taken over the wait of an earlier replacement still in flight (its
  // successor_heard_ names `id`): that one, should it not land either, passes it on to `id`'s
  // successor now, or releases it; never to `id`, which will not land.
  for (auto s = successor_heard_.begin(); s != successor_heard_.end();) {
    if (s->second.id != id) {
      ++s;
    } else if (!heard.id.empty()) {
      s->second = heard;
      ++s;
    } else {
      s = successor_heard_.erase(s);
    }
  }
  auto w = awaited_.find(id);
  if (w == awaited_.end()) return;
  const int remove_kind = w->second;
  awaited_.erase(w);
  wake_.SignalAll();
  // None heard (or ended), or in the remove's queue, where its apply waits behind the remove
  // (RemoveBarrier): the remove goes now. The queue is checked here, not only as the successor
  // was heard: the wait may have been passed on since, from another remove's queue.
  if (heard.id.empty() || heard.kind == remove_kind) return;
  const std::string& next = heard.id;
  // Handed over, as for a replacement cancelled before it went out (OnDecision): the remove,
  // queued or still to be made once its own apply settles, waits for `next`, and `next` takes
  // over from its decision, still standing (ActionOp::replaces: should `next` be cancelled
  // before it goes out and replaced in turn, the hand-over goes on from there).
  std::string was_id;
  if (auto rq = queues_.find(remove_kind); rq != queues_.end()) {
    for (ActionOp& o : rq->second.ops) {
      if (o.kind == ActionOp::Kind::kRemove && o.decision.replaced_by() == id) {
        o.decision.set_replaced_by(next);
        was_id = o.decision.id();
      }
    }
  }
  for (auto& [after_id, after] : remove_after_) {
    if (after.replaced_by != id) continue;
    after.replaced_by = next;
    was_id = after_id;
  }
  awaited_.insert_or_assign(next, remove_kind);
  if (was_id.empty()) return;
  for (auto& [kind, q] : queues_) {
    for (ActionOp& o : q.ops) {
      if (o.kind == ActionOp::Kind::kApply && o.decision.id() == next) o.replaces = was_id;
    }
  }
  for (auto& [kind, o] : held_) {
    if (o.decision.id() == next) o.replaces = was_id;
  }
}

void Dispatcher::CredentialsRestored(const std::string& actuator) {
  absl::MutexLock lock(&mu_);
  for (auto& [kind, q] : queues_) {
    if (!actuator.empty() && q.actuator->name() != actuator) continue;
    credential_wait_.erase(kind);
  }
  wake_.SignalAll();
}

void Dispatcher::Start() {
  // One worker per actuator: a slow list operation never delays an access rule.
  std::vector<int> kinds;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [kind, q] : queues_) kinds.push_back(kind);
  }
  for (int kind : kinds) {
    workers_.emplace_back([this, kind] {
      for (;;) {
        {
          absl::MutexLock lock(&mu_);
          if (stopping_) return;
          if (paused_ > 0 || !HasDue(kind, clock_.TimeNow())) {
            wake_.WaitWithTimeout(&mu_, options_.flush_interval);
          }
          if (stopping_) return;
        }
        RunQueue(kind);
      }
    });
  }
}

void Dispatcher::Pause() {
  absl::MutexLock lock(&mu_);
  ++paused_;
  mu_.Await(absl::Condition(this, &Dispatcher::Idle));
}

void Dispatcher::Resume() {
  absl::MutexLock lock(&mu_);
  --paused_;
  wake_.SignalAll();
}

void Dispatcher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    wake_.SignalAll();
  }
  for (std::thread& t : workers_) {
    if (t.joinable()) t.join();
  }
  workers_.clear();
}

bool Dispatcher::Busy(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  if (in_flight_.count(id)) return true;
  for (const auto& [kind, q] : queues_) {
    for (const ActionOp& op : q.ops) {
      if (op.decision.id() == id) return true;
    }
  }
  for (const auto& [kind, op] : held_) {
    if (op.decision.id() == id) return true;
  }
  return false;
}

std::map<std::string, palisade::v1::Decision> Dispatcher::BusyDecisions() const {
  absl::MutexLock lock(&mu_);
  std::map<std::string, palisade::v1::Decision> out;
  for (const std::string& id : in_flight_) out[id].set_id(id);
  for (const auto& [kind, q] : queues_) {
    for (const ActionOp& op : q.ops) out.emplace(op.decision.id(), op.decision);
  }
  for (const auto& [kind, op] : held_) out.emplace(op.decision.id(), op.decision);
  return out;
}

void Dispatcher::ForgetEdge(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto edge = edges_.find(id);
  if (edge == edges_.end()) {
    ForgetFailure(id);
    return;
  }
  // An actuator that counts decisions per object (IP list items) counts this one no more, or a
  // later decision on the object would be taken as already there.
  if (auto q = queues_.find(edge->second.kind); q != queues_.end()) {
    q->second.actuator->Forget(edge->second.ref);
  }
  ForgetEdgeLocked(id);
  if (store_ != nullptr) {
    absl::Status s = store_->ForgetEdge(id);
    if (!s.ok()) std::cerr << "palisaded: " << s.message() << std::endl;
  }
}

void Dispatcher::ListsRead(const std::vector<IpList>& lists) {
  absl::MutexLock lock(&mu_);
  if (auto q = queues_.find(palisade::v1::ACTUATOR_IP_LIST); q != queues_.end()) {
    q->second.actuator->ListsRead(lists);
  }
}

void Dispatcher::Reapply(const palisade::v1::Decision& decision) {
  absl::MutexLock lock(&mu_);
  auto q = queues_.find(decision.actuator());
  if (q == queues_.end()) return;
  if (edges_.count(decision.id())) {
    ForgetEdgeLocked(decision.id());
    if (store_ != nullptr) (void)store_->ForgetEdge(decision.id());
  }
  // A decision that changed since its apply failed for good is tried once more.
  ForgetFailure(decision.id());
  ActionOp op;
  op.kind = ActionOp::Kind::kApply;
  op.decision = decision;
  op.repair = true;
  if (store_ != nullptr) {
    absl::StatusOr<int64_t> seq = store_->AddOperation(decision.id(), true);
    if (seq.ok()) op.seq = *seq;
  }
  q->second.ops.push_back(std::move(op));
  q->second.pending->Set(static_cast<double>(q->second.ops.size()));
  wake_.SignalAll();
}

size_t Dispatcher::pending() const {
  absl::MutexLock lock(&mu_);
  size_t n = in_flight_.size();
  for (const auto& [kind, q] : queues_) n += q.ops.size();
  return n;
}

size_t Dispatcher::latency_tracked() const {
  absl::MutexLock lock(&mu_);
  return queued_at_.size();
}

std::map<std::string, EdgeRef> Dispatcher::edges() const {
  absl::MutexLock lock(&mu_);
  std::map<std::string, EdgeRef> out;
  for (const auto& [id, made] : edges_) out.emplace(id, made.ref);
  return out;
}

}  // namespace palisade
