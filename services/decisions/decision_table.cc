#include "services/decisions/decision_table.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <type_traits>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "services/common/ip.h"
#include "services/common/proto_time.h"

namespace palisade {
namespace {

using palisade::v1::Decision;
using palisade::v1::TargetKind;

constexpr absl::Duration kDefaultMaxDuration = absl::Hours(24 * 30);
constexpr absl::Duration kDefaultMemory = absl::Hours(24 * 7);
// Offences restored from the store, or mirrored, whose rows or decisions do not say until when
// their count stands (OffenceRow::counted_until, Decision.offence_counted_until: written before
// either existed): they are kept as long as the longest default, but their count stands only
// within the applying rule's own memory, so a rule escalates from it no more than without a
// restart (one with a longer memory than another's may escalate less). Those that say are
// restored as they were (Offences::counted_until).
constexpr absl::Duration kRestoredMemory = absl::Hours(24 * 30);
// The longest escalation memory a rule can have (RuleSet refuses a longer escalation.memory at
// load, services/engine/rule_set.cc): a mirrored decision's word on until when its offender's
// count stands is bounded by it.
constexpr absl::Duration kMaxMemory = absl::Hours(24 * 365);
// How far after this node's clock a mirrored decision's last offence may be: the writer's clock
// may run a little ahead. Any further is not believed (a forged start or offence_last would
// keep the count standing, and be carried on, for as long as it says).
constexpr absl::Duration kMirrorSkew = absl::Minutes(5);

absl::Duration Escalated(absl::Duration base, const palisade::v1::Escalation& esc,
                         uint32_t offence) {
  absl::Duration cap =
      esc.has_max_duration() ? FromProtoDuration(esc.max_duration()) : kDefaultMaxDuration;
  // Not `factor <= 1`: a NaN factor would pass it and escalate to the cap.
  if (!(esc.factor() > 1.0) || offence <= 1) return base;
  double scale = std::pow(esc.factor(), static_cast<double>(offence - 1));
  // In whole milliseconds: a factor that is not a power of two gives fractions of a nanosecond,
  // which a decision's stored expiry (whole nanoseconds) would drop.
  absl::Duration grown = scale > 1e6 ? cap : absl::Trunc(base * scale, absl::Milliseconds(1));
  return std::min(grown, std::max(cap, base));
}

// How strongly a claim acts: at the edge > dry run (recorded, not sent) > local only.
int Enforcement(palisade::v1::Actuator actuator, bool dry_run) {
  if (actuator == palisade::v1::ACTUATOR_NONE) return 0;
  return dry_run ? 1 : 2;
}

// How strongly an action keeps a target from the zone: a block refuses every request; a legacy
// challenge puts an interactive one in front of every request, a managed challenge only the
// one Cloudflare chooses (often none for a browser); a rate limit lets requests under its rate
// through. A token revocation refuses every use of the token, as a block (it only ever meets
// claims on a token, which no other action targets).
int Strength(palisade::v1::Action action) {
  switch (action) {
    case palisade::v1::ACTION_BLOCK:
    case palisade::v1::ACTION_REVOKE_TOKEN:
      return 4;
    case palisade::v1::ACTION_CHALLENGE:
      return 3;
    case palisade::v1::ACTION_MANAGED_CHALLENGE:
      return 2;
    case palisade::v1::ACTION_RATE_LIMIT:
      return 1;
    default:
      return 0;
  }
}

// Which origin prevails among claims that act alike: manual > rule > feed (Rank puts a manual
// claim before any action, and a rule or feed claim after the stronger action).
int Precedence(palisade::v1::Origin origin) {
  switch (origin) {
    case palisade::v1::ORIGIN_MANUAL:
      return 3;
    case palisade::v1::ORIGIN_RULE:
      return 2;
    case palisade::v1::ORIGIN_FEED:
      return 1;
    default:
      return 0;
  }
}

// `*out` becomes the update of `change` to `d`.
void SetUpdate(DecisionChange change, Decision&& d, DecisionUpdate* out) {
  out->change = change;
  out->decision = std::move(d);
  out->secret.clear();
  out->outbox_seq = 0;
}

// Does `u` carry its detection's secret (memory only, never stored or logged)? A creation, and
// an extension of a token-fingerprint decision: a restart loses the secret a pending revocation
// held, and the token seen again is how the dispatcher gets it back.
bool CarriesSecret(const DecisionUpdate& u) {
  return u.change == DecisionChange::kCreated ||
         (u.change == DecisionChange::kExtended &&
          u.decision.target().kind() == palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT);
}

}  // namespace

absl::string_view DecisionChangeName(DecisionChange c) {
  switch (c) {
    case DecisionChange::kCreated:
      return "created";
    case DecisionChange::kExtended:
      return "extended";
    case DecisionChange::kExpired:
      return "expired";
    case DecisionChange::kWithdrawn:
      return "withdrawn";
    case DecisionChange::kStale:
      return "stale";
    case DecisionChange::kForwarded:
      return "forwarded";
    case DecisionChange::kRefused:
      return "refused";
  }
  return "unknown";
}

absl::Time DecisionExpiry(const Decision& d) { return FromProtoTime(d.expiry()); }

DecisionTable::DecisionTable(Clock& clock, uint32_t max_evidence)
    : clock_(clock), max_evidence_(max_evidence) {}

void DecisionTable::SetLimits(const DecisionTableLimits& limits, prometheus::Registry* registry) {
  absl::MutexLock lock(&mu_);
  limits_ = limits;
  {
    absl::MutexLock write_lock(&write_mu_);
    max_unwritten_bytes_ = limits.max_unwritten_bytes;
  }
  if (registry == nullptr) return;
  auto& family = prometheus::BuildCounter()
                     .Name("palisade_decisions_forgotten_total")
                     .Help("Ended decisions and offenders dropped from memory, by what and "
                           "reason (age: past their retention or escalation memory; cap: "
                           "early, over the decisions.limits caps).")
                     .Register(*registry);
  forgotten_decision_age_ = &family.Add({{"what", "decision"}, {"reason", "age"}});
  forgotten_decision_cap_ = &family.Add({{"what", "decision"}, {"reason", "cap"}});
  forgotten_offender_age_ = &family.Add({{"what", "offender"}, {"reason", "age"}});
  forgotten_offender_cap_ = &family.Add({{"what", "offender"}, {"reason", "cap"}});
  folded_ = &prometheus::BuildCounter()
                 .Name("palisade_decisions_ipv6_folded_total")
                 .Help("Rule decisions made on an IPv6 range instead of an address: the range "
                       "already held decisions on several of its addresses (decisions."
                       "ipv6_folding).")
                 .Register(*registry)
                 .Add({});
  absl::MutexLock write_lock(&write_mu_);
  write_failures_ = &prometheus::BuildCounter()
                         .Name("palisade_store_write_failures_total")
                         .Help("Decision writes the store refused (their changes wait in memory "
                               "and are written once it takes them again).")
                         .Register(*registry)
                         .Add({});
  changes_lost_ = &prometheus::BuildCounter()
                       .Name("palisade_store_changes_lost_total")
                       .Help("Decision changes, and targets' waiting-claim snapshots, given up "
                             "unwritten: the store refused them for longer than 64 MiB of them "
                             "could wait.")
                       .Register(*registry)
                       .Add({});
  unwritten_gauge_ = &prometheus::BuildGauge()
                          .Name("palisade_store_changes_unwritten")
                          .Help("Decision changes, and targets' waiting-claim snapshots, in force "
                                "but not in the store yet (it refused them; retried at every "
                                "write and sweep).")
                          .Register(*registry)
                          .Add({});
}

DecisionTable::Offences& DecisionTable::OffencesLocked(const std::string& target, absl::Time last,
                                                       absl::Duration memory, bool known) {
  return OffencesLocked(target, last, memory, known, offences_.hash_function()(target));
}

DecisionTable::Offences& DecisionTable::OffencesLocked(const std::string& target, absl::Time last,
                                                       absl::Duration memory, bool known,
                                                       size_t hash) {
  auto it = offences_.find(target, hash);
  if (it == offences_.end()) {
    it = offences_.emplace(target, Offences()).first;
    it->second.row = ++last_offence_row_;
  }
  Offences& off = it->second;
  off.forget_at = std::max(off.forget_at, last + memory);
  if (known) off.counted_until = std::max(off.counted_until, last + memory);
  // Queued once, at its first forget_at; a later one moves the entry only when ForgetLocked
  // reaches it (it moved on every detection: ~220 instructions in a set keyed by strings).
  if (off.queued_at == absl::InfinitePast()) {
    offences_by_forget_.emplace(off.forget_at, target);
    off.queued_at = off.forget_at;
  }
  return off;
}

void DecisionTable::EndedLocked(const Decision& d) {
  const size_t bytes = d.ByteSizeLong();
  if (ended_.emplace(std::make_pair(DecisionExpiry(d), d.id()), bytes).second) {
    ended_bytes_ += bytes;
  }
}

void DecisionTable::ForgetLocked(absl::Time now) {
  auto count = [](prometheus::Counter* c) {
    if (c != nullptr) c->Increment();
  };
  while (!ended_.empty()) {
    const bool old = ended_.begin()->first.first + limits_.inactive_retention <= now;
    const bool over =
        ended_.size() > limits_.max_inactive || ended_bytes_ > limits_.max_inactive_bytes;
    if (!old && !over) break;
    count(old ? forgotten_decision_age_ : forgotten_decision_cap_);
    by_id_.erase(ended_.begin()->first.second);
    ended_bytes_ -= ended_.begin()->second;
    ended_.erase(ended_.begin());
  }
  // An entry's time is at or before its offender's forget_at (queued_at): one found early is
  // moved to the forget_at first, so the first entry whose time is its offender's is the one
  // whose memory ends first, as if every entry had moved at once.
  while (!offences_by_forget_.empty()) {
    const auto first = offences_by_forget_.begin();
    const bool old = first->first <= now;
    if (!old && offences_.size() <= limits_.max_offenders) break;
    auto it = offences_.find(first->second);
    if (it != offences_.end() && it->second.forget_at > first->first) {
      it->second.queued_at = it->second.forget_at;
      TimeNameSet::node_type node = offences_by_forget_.extract(first);
      node.value().first = it->second.forget_at;
      offences_by_forget_.insert(std::move(node));
      continue;
    }
    count(old ? forgotten_offender_age_ : forgotten_offender_cap_);
    if (it != offences_.end()) offences_.erase(it);
    offences_by_forget_.erase(first);
  }
}

void DecisionTable::SetStore(Store* store, std::set<palisade::v1::Actuator> edge_actuators) {
  absl::MutexLock lock(&mu_);
  store_ = store;
  edge_actuators_ = std::move(edge_actuators);
  if (store_ == nullptr) return;
  // A store that cannot say fails Restore, and its writes, with the same error.
  if (absl::StatusOr<int64_t> last = store_->LastOffenceId(); last.ok()) {
    last_offence_row_ = std::max(last_offence_row_, *last);
  }
}

absl::Status DecisionTable::Restore() {
  absl::MutexLock lock(&mu_);
  if (store_ == nullptr) return absl::OkStatus();
  absl::StatusOr<std::vector<Decision>> decisions = store_->LoadDecisions(/*active_only=*/true);
  if (!decisions.ok()) return decisions.status();
  for (Decision& d : *decisions) {
    // Restored whatever the budget: they were decided, and the edge holds them.
    AddActiveLocked(d);
    by_id_[d.id()] = std::move(d);
  }
  // The rule and manual claims that waited behind them, still due (a claim behind a decision
  // past its expiry takes over at the first sweep, as it would have). Only behind the very
  // decision they waited behind: a row naming another is stale (a claim waits only behind one
  // decision). A row behind a decision no longer active is a mirror's (the writer's claims
  // behind a decision its own sweep ended first, MirrorWaiting): restored only behind one the
  // store holds ended (RestoreMirrorEndedLocked).
  absl::StatusOr<std::vector<WaitingClaimRow>> waiting =
      store_->LoadWaitingClaims(clock_.TimeNow());
  if (!waiting.ok()) return waiting.status();
  for (WaitingClaimRow& w : *waiting) {
    auto a = active_.find(w.target);
    if (a == active_.end()) {
      absl::StatusOr<bool> kept = RestoreMirrorEndedLocked(w.target, w.decision_id);
      if (!kept.ok()) return kept.status();
      if (!*kept) continue;
    } else if (a->second.id != w.decision_id) {
      continue;
    }
    CoverLocked(w.target,
                Claim{static_cast<palisade::v1::Origin>(w.origin),
                      static_cast<palisade::v1::Action>(w.action),
                      static_cast<palisade::v1::Actuator>(w.actuator), w.dry_run, w.expiry,
                      std::move(w.rule_id), std::move(w.reason), /*stored=*/w.expiry, w.offence},
                clock_.TimeNow());
  }
  // Charged to their decisions; not written again (they are the store's rows).
  for (const std::string& target : claims_changed_) ChargeClaimsLocked(target);
  claims_changed_.clear();
  active_size_.store(active_.size(), std::memory_order_relaxed);
  // Only what escalation can still use: the offenders of the restored memory and those whose
  // rules' memories (up to a year) still count them, the latest first, under the cap (the store
  // keeps the whole history).
  absl::StatusOr<std::vector<OffenceRow>> offences = store_->LoadOffences(
      clock_.TimeNow() - kRestoredMemory, limits_.max_offenders, clock_.TimeNow());
  if (!offences.ok()) return offences.status();
  absl::StatusOr<int64_t> last_row = store_->LastOffenceId();
  if (!last_row.ok()) return last_row.status();
  absl::flat_hash_set<absl::string_view> restored;
  const int64_t numbered = last_offence_row_;  // the loop's new entries take numbers; given back
  for (const OffenceRow& o : *offences) {
    // A target's older rows (an offender forgotten, then back in a row of its own) come after
    // its latest.
    if (!restored.insert(o.target).second) continue;
    // Until when the rules that counted it remember it, when the row says (schema version 4):
    // the count stands until then, as it did before the restart.
    const bool known = o.counted_until > o.last;
    Offences& off = OffencesLocked(o.target, o.last,
                                   known ? o.counted_until - o.last : kRestoredMemory, known);
    off.count = o.count;
    off.last = o.last;
    off.row = o.id;
  }
  // New offenders are numbered after every row stored, the ones not loaded too (SetStore saw
  // to it if it could read the store; the read above fails the restore if it cannot).
  last_offence_row_ = std::max(numbered, *last_row);
  ForgetLocked(clock_.TimeNow());
  return absl::OkStatus();
}

absl::StatusOr<bool> DecisionTable::RestoreMirrorEndedLocked(const std::string& target,
                                                             const std::string& decision_id) {
  if (auto e = mirror_ended_.find(target); e != mirror_ended_.end()) {
    return e->second == decision_id;
  }
  // Rows behind an ended decision are a mirror's, kept for a take-over (PrepareWriteLocked):
  // only behind one the store holds ended (a writer never leaves claims behind an ended one).
  // A decision the store cannot read (busy, failing, corrupt) fails the restore, as any other
  // row would: taken for "not ended", the claims were dropped, and the target's next write
  // deleted their rows.
  absl::StatusOr<Decision> ended = store_->LoadDecision(decision_id);
  if (absl::IsNotFound(ended.status())) return false;
  if (!ended.ok()) return ended.status();
  if (ended->active() || ended->target().value() != target) return false;
  if (!by_id_.contains(decision_id)) {
    EndedLocked(*ended);
    by_id_[decision_id] = *std::move(ended);
  }
  mirror_ended_[target] = decision_id;
  return true;
}

namespace {
// A turn taken in ticket order: the holder of `ticket` goes when `*done` reaches it.
struct Turn {
  const uint64_t* done;
  uint64_t ticket;
};
bool IsTurn(Turn* t) { return *t->done == t->ticket; }
}  // namespace

void DecisionTable::PrepareWriteLocked(std::vector<DecisionUpdate>& change_set, Commit* commit) {
  // The targets whose waiting claims changed: charged anew, and their rule and manual claims
  // written as they now are (the feeds' come back with the first sync after a restart).
  // Snapshots for the store and for the claims listeners (the decision log's).
  const bool snapshots = store_ != nullptr || claims_listener_count_.load() > 0;
  for (const std::string& target : claims_changed_) {
    ChargeClaimsLocked(target);
    WaitingClaims* w = nullptr;
    if (snapshots) {
      w = &commit->waiting.emplace_back();
      w->target = target;
    }
    // Behind the decision active now; none active: none wait, and the rows go. But a mirror's
    // claims behind a decision its own sweep ended first (mirror_ended_) are kept for a
    // take-over to decide: written behind that decision (Restore brings them back), not as
    // claims behind none, which deleted their rows and lost them at a restart.
    auto a = active_.find(target);
    auto e = a == active_.end() ? mirror_ended_.find(target) : mirror_ended_.end();
    if (a == active_.end() && e == mirror_ended_.end()) continue;
    if (w != nullptr) w->decision_id = a != active_.end() ? a->second.id : e->second;
    if (auto it = covered_.find(target); it != covered_.end()) {
      for (Claim& c : it->second) {
        if (c.origin == palisade::v1::ORIGIN_FEED) continue;
        c.stored = c.expiry;  // written now (CoverLocked writes an extension past it again)
        if (w == nullptr) continue;
        w->claims.push_back({target, w->decision_id, c.origin, c.action, c.actuator, c.dry_run,
                             c.expiry, c.rule_id, c.reason, c.offence});
      }
    }
  }
  claims_changed_.clear();
  if (store_ == nullptr) return;
  std::vector<Store::Change>& changes = commit->changes;
  std::vector<DecisionUpdate*>& recorded = commit->recorded;
  // A decision changed again later in the batch is written once, as it ends up: its last change
  // writes the row whole (from an extension too, when the row is not there), and the transaction
  // hides what came between. An earlier change is written only when it adds an outbox operation,
  // or an offence row its last change does not write again (creations and extensions write the
  // target's row as it stands now, so any of them writes what an earlier one would have). What
  // this spares is an extension's serialization and rows, and a creation's when no actuator
  // applies it (extended in the same batch: a burst past the threshold).
  absl::flat_hash_map<absl::string_view, size_t> last;
  for (size_t i = 0; i < change_set.size(); ++i) last[change_set[i].decision.id()] = i;
  const auto writes_offence = [](DecisionChange change) {
    return change == DecisionChange::kCreated || change == DecisionChange::kExtended;
  };
  const auto outbox = [this](const DecisionUpdate& u)
                          ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> std::optional<bool> {
    if (!edge_actuators_.count(u.decision.actuator())) return std::nullopt;
    if (u.change == DecisionChange::kCreated) return true;
    if (u.change == DecisionChange::kExpired || u.change == DecisionChange::kWithdrawn) {
      return false;
    }
    return std::nullopt;
  };
  for (size_t i = 0; i < change_set.size(); ++i) {
    DecisionUpdate* update = &change_set[i];
    if (update->change == DecisionChange::kStale || update->change == DecisionChange::kRefused) {
      continue;
    }
    const size_t final = last[update->decision.id()];
    const std::optional<bool> op = outbox(*update);
    if (final != i && !op.has_value() &&
        (!writes_offence(update->change) || writes_offence(change_set[final].change))) {
      continue;
    }
    const Decision& d = update->decision;
    Store::Change c{&d, std::nullopt, std::nullopt};
    // Its rows are most likely stored as they were (the store checks): updated in place.
    c.extension = update->change == DecisionChange::kExtended;
    if (c.extension && lean_extensions_) {
      // A lean extension's update carries no evidence: the store gets the table's own
      // decision, serialized here (once the lock is let go, another batch may change it).
      auto own = by_id_.find(d.id());
      if (own != by_id_.end()) c.proto = own->second.SerializeAsString();
    }
    c.outbox = op;
    if (writes_offence(update->change)) {
      auto it = offences_.find(d.target().value());
      if (it != offences_.end()) {
        c.offence = OffenceRow{d.target().value(), it->second.count, it->second.last,
                               it->second.row, it->second.counted_until};
      }
    }
    changes.push_back(std::move(c));
    recorded.push_back(update);
  }
  if (changes.empty() && commit->waiting.empty()) return;
  commit->store = store_;
  commit->write_ticket = next_write_ticket_++;
}

void DecisionTable::WriteInTurn(Commit& commit) {
  if (commit.store == nullptr) return;  // nothing to write (no store, or no change)
  absl::MutexLock lock(&write_mu_);
  // In the order the changes were made: the store's rows are the table's history.
  Turn turn{&written_, commit.write_ticket};
  write_mu_.Await(absl::Condition(&IsTurn, &turn));
  ++written_;
  // Changes the store refused before go first; while they cannot be written, these wait
  // behind them (the rows must stay in the table's order).
  absl::Status failed = WriteUnwrittenLocked();
  if (failed.ok()) {
    absl::StatusOr<std::vector<int64_t>> seqs =
        commit.store->RecordDecisions(commit.changes, commit.waiting);
    if (seqs.ok()) {
      for (size_t i = 0; i < commit.recorded.size(); ++i) {
        commit.recorded[i]->outbox_seq = (*seqs)[i];
      }
      return;
    }
    failed = seqs.status();
    if (write_failures_ != nullptr) write_failures_->Increment();
  }
  // The decisions stand in memory and are enforced (their outbox operations run unrecorded);
  // their rows are written by the next write or sweep that finds the store taking them.
  if (unwritten_.empty() && unwritten_waiting_.empty()) unwritten_store_ = commit.store;
  // A target's waiting claims as they now are replace any refused before (the later state is
  // the one to write).
  for (WaitingClaims& w : commit.waiting) {
    auto [it, added] = unwritten_waiting_.try_emplace(w.target);
    if (!added) {
      unwritten_bytes_ -= std::min(unwritten_bytes_, WaitingBytes(it->second));
      if (it->second.decision_id.empty()) --unwritten_ended_;
    }
    unwritten_bytes_ += WaitingBytes(w);
    if (w.decision_id.empty()) ++unwritten_ended_;
    it->second = w;  // a copy: the claims listeners hear `commit.waiting` after this
  }
  for (Store::Change& c : commit.changes) {
    // The change points into its caller's update: the copy owns its decision (a deque's
    // elements stay where they are as it grows and shrinks at its ends).
    Unwritten& u = unwritten_.emplace_back();
    u.decision = *c.decision;
    u.change = std::move(c);
    u.change.decision = &u.decision;
    u.bytes = u.decision.ByteSizeLong() + (u.change.proto ? u.change.proto->size() : 0);
    unwritten_bytes_ += u.bytes;
  }
  // Bounded: past max_unwritten_bytes_, first the claim snapshots of targets with no active
  // decision (they only delete rows that name an ended decision, which Restore never attaches:
  // Prune deletes them once over), then the other snapshots (a snapshot lost costs waiting
  // claims a restart would have brought back; a change lost, decisions and their edge
  // operations), counted, then the oldest changes, counted.
  for (const bool ended_only : {true, false}) {
    // (The ended ones are looked for only while some are left.)
    for (auto it = unwritten_waiting_.begin();
         unwritten_bytes_ > max_unwritten_bytes_ && it != unwritten_waiting_.end() &&
         !(ended_only && unwritten_ended_ == 0);) {
      const bool ended = it->second.decision_id.empty();
      if (ended_only && !ended) {
        ++it;
        continue;
      }
      unwritten_bytes_ -= std::min(unwritten_bytes_, WaitingBytes(it->second));
      if (ended) {
        --unwritten_ended_;
      } else if (changes_lost_ != nullptr) {
        changes_lost_->Increment();
      }
      unwritten_waiting_.erase(it++);
    }
  }
  while (unwritten_bytes_ > max_unwritten_bytes_ && !unwritten_.empty()) {
    unwritten_bytes_ -= std::min(unwritten_bytes_, unwritten_.front().bytes);
    unwritten_.pop_front();
    if (changes_lost_ != nullptr) changes_lost_->Increment();
  }
  const size_t waiting = unwritten_.size() + unwritten_waiting_.size();
  if (unwritten_gauge_ != nullptr) unwritten_gauge_->Set(static_cast<double>(waiting));
  std::cerr << "palisaded: store: decision changes not persisted yet (" << waiting
            << " waiting, written when the store takes them): " << failed.message() << std::endl;
}

absl::Status DecisionTable::WriteUnwrittenLocked() {
  if (unwritten_.empty() && unwritten_waiting_.empty()) return absl::OkStatus();
  std::vector<Store::Change> changes;
  changes.reserve(unwritten_.size());
  for (const Unwritten& u : unwritten_) changes.push_back(u.change);
  std::vector<WaitingClaims> waiting;
  waiting.reserve(unwritten_waiting_.size());
  for (const auto& [target, w] : unwritten_waiting_) waiting.push_back(w);
  absl::StatusOr<std::vector<int64_t>> seqs = unwritten_store_->RecordDecisions(changes, waiting);
  if (!seqs.ok()) {
    if (write_failures_ != nullptr) write_failures_->Increment();
    return seqs.status();
  }
  // Their listeners heard them without an outbox sequence: the operations stay in the outbox
  // and run again after a restart, which every actuator takes as a no-op, but for an apply of
  // a decision that has ended since (its remove completed on its own row): the dispatcher's
  // Restore cancels that one.
  unwritten_.clear();
  unwritten_waiting_.clear();
  unwritten_ended_ = 0;
  unwritten_bytes_ = 0;
  if (unwritten_gauge_ != nullptr) unwritten_gauge_->Set(0);
  std::cerr << "palisaded: store: the decision changes waiting are persisted" << std::endl;
  return absl::OkStatus();
}

size_t DecisionTable::unwritten() const {
  absl::MutexLock lock(&write_mu_);
  return unwritten_.size() + unwritten_waiting_.size();
}

DecisionTable::Commit DecisionTable::CommitLocked(std::vector<DecisionUpdate>& change_set,
                                                  absl::Time now) {
  Commit commit;
  PrepareWriteLocked(change_set, &commit);
  ForgetLocked(now);
  active_size_.store(active_.size(), std::memory_order_relaxed);
  commit.ticket = next_ticket_++;
  return commit;
}

void DecisionTable::SetForward(Forward forward) {
  absl::MutexLock lock(&mu_);
  forward_ = std::move(forward);
  // The one replaced may still run in an ApplyAll that copied it: its owner may go once this
  // returns (a cluster node stopping).
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return forwarding_ == 0; };
  mu_.Await(absl::Condition(&idle));
}

uint64_t DecisionTable::AddListener(Listener listener) {
  absl::MutexLock lock(&listeners_mu_);
  const uint64_t id = next_listener_id_++;
  listeners_.emplace_back(id, std::move(listener));
  return id;
}

uint64_t DecisionTable::AddSetListener(SetListener listener) {
  absl::MutexLock lock(&listeners_mu_);
  const uint64_t id = next_listener_id_++;
  set_listeners_.emplace_back(id, std::move(listener));
  return id;
}

void DecisionTable::RemoveListener(uint64_t id) {
  // Listeners are called under listeners_mu_: holding it, none is running.
  absl::MutexLock lock(&listeners_mu_);
  listeners_.erase(std::remove_if(listeners_.begin(), listeners_.end(),
                                  [id](const auto& l) { return l.first == id; }),
                   listeners_.end());
  set_listeners_.erase(std::remove_if(set_listeners_.begin(), set_listeners_.end(),
                                      [id](const auto& l) { return l.first == id; }),
                       set_listeners_.end());
  claims_listeners_.erase(std::remove_if(claims_listeners_.begin(), claims_listeners_.end(),
                                         [id](const auto& l) { return l.first == id; }),
                          claims_listeners_.end());
  claims_listener_count_.store(claims_listeners_.size());
}

uint64_t DecisionTable::AddClaimsSetListener(ClaimsSetListener listener) {
  absl::MutexLock lock(&listeners_mu_);
  const uint64_t id = next_listener_id_++;
  claims_listeners_.emplace_back(id, std::move(listener));
  claims_listener_count_.store(claims_listeners_.size());
  return id;
}

void DecisionTable::Notify(const Commit& commit, const std::vector<DecisionUpdate>& updates,
                           const std::function<void(const std::vector<DecisionUpdate>&)>& before) {
  absl::MutexLock lock(&listeners_mu_);
  // Changes are made under mu_ but heard outside it (listeners do I/O); without the turn, a
  // thread that expired a decision could reach the dispatcher before the one that created it.
  Turn turn{&notified_, commit.ticket};
  listeners_mu_.Await(absl::Condition(&IsTurn, &turn));
  if (before) before(updates);
  // The whole set first: a per-update listener that looks at a set listener's state (a pull of
  // the bouncer API made from it) finds the set whole there, never half of it.
  if (!updates.empty()) {
    for (const auto& l : set_listeners_) l.second(updates);
  }
  if (!updates.empty() || !commit.waiting.empty()) {
    for (const auto& l : claims_listeners_) l.second(updates, commit.waiting);
  }
  for (const DecisionUpdate& u : updates) {
    for (const auto& l : listeners_) l.second(u);
  }
  ++notified_;
}

std::string DecisionTable::NewIdLocked() {
  // The clock's second (36 bits, past 1970, saturated) and a counter of this table's ids (28
  // bits, from a random start): ids made one after another sort one after another, so the
  // store's index on them grows at its end (a random id put each creation of an ingest batch
  // on a page of its own: a third of the WAL's pages, "Twenty-third pass").
  constexpr uint64_t kCounterBits = 28;
  const int64_t secs = std::clamp<int64_t>(absl::ToUnixSeconds(clock_.TimeNow()), 0,
                                           (int64_t{1} << (64 - kCounterBits)) - 1);
  if (next_id_ == 0) next_id_ = absl::Uniform<uint64_t>(bitgen_, 1, uint64_t{1} << 27);
  for (;;) {
    const uint64_t counter = next_id_++ & ((uint64_t{1} << kCounterBits) - 1);
    std::string id =
        absl::StrFormat("%016x", (static_cast<uint64_t>(secs) << kCounterBits) | counter);
    if (!by_id_.contains(id)) return id;
  }
}

size_t DecisionTable::AddEvidence(const std::vector<std::string>& evidence, Decision* d) const {
  size_t added = 0;
  for (const std::string& line : evidence) {
    if (d->evidence_size() >= static_cast<int>(max_evidence_)) break;
    d->add_evidence(line);
    added += line.size();
  }
  return added;
}

void DecisionTable::SetNeverFold(CidrSet never_ban) {
  absl::MutexLock lock(&mu_);
  never_fold_ = std::move(never_ban);
}

int DecisionTable::FoldPrefixLocked(const IpAddress& ip) const {
  // A 6to4 address's /48 is its IPv4 host's, whatever the prefix (never wider: the next /48
  // is another host).
  return Is6to4(ip) ? 48 : limits_.ipv6_fold_prefix;
}

uint64_t DecisionTable::FoldKeyLocked(const IpAddress& ip) const {
  uint64_t high = 0;
  for (int i = 0; i < 8; ++i) high = (high << 8) | ip.bytes()[i];
  const int prefix = std::clamp(FoldPrefixLocked(ip), 1, 64);
  return prefix == 64 ? high : high & ~((uint64_t{1} << (64 - prefix)) - 1);
}

void DecisionTable::AddActiveLocked(const Decision& d) {
  const size_t bytes = d.ByteSizeLong() + kActiveOverhead;
  // Keyed by the expiry as stored: an escalated duration (a factor that is not a power of two)
  // has fractions of a nanosecond the stored time drops, and the entry is found by that.
  Active& a = active_[d.target().value()];
  active_bytes_ -= a.bytes;  // 0 unless it held another (a restored or mirrored state's)
  if (a.folds && --fold_counts_[a.fold_key] == 0) fold_counts_.erase(a.fold_key);
  a = {d.id(), DecisionExpiry(d), bytes};
  by_expiry_.emplace(DecisionExpiry(d), d.id());
  active_bytes_ += bytes;
  // A rule's decision on an IPv6 address counts toward folding its range (a ':' first: IPv4
  // targets are never parsed here).
  if (d.origin() == palisade::v1::ORIGIN_RULE &&
      d.target().kind() == palisade::v1::TARGET_KIND_IP &&
      d.target().value().find(':') != std::string::npos) {
    if (std::optional<IpAddress> ip = IpAddress::Parse(d.target().value()); ip && !ip->is_v4()) {
      a.folds = true;
      a.fold_key = FoldKeyLocked(*ip);
      ++fold_counts_[a.fold_key];
    }
  }
}

std::optional<std::pair<palisade::v1::Target, std::string>> DecisionTable::FoldLocked(
    absl::string_view address, absl::Time now) {
  if (limits_.ipv6_fold_addresses == 0 || address.find(':') == absl::string_view::npos) {
    return std::nullopt;
  }
  std::optional<IpAddress> ip = IpAddress::Parse(address);
  if (!ip || ip->is_v4()) return std::nullopt;
  // An address that carries an IPv4 one (NAT64, Teredo) is that host's, not a /64's; but a
  // 6to4 host holds its whole /48 (2002:WWXX:YYZZ::/48) and may take a new /64 of it per try:
  // folded into that /48 (FoldPrefixLocked), which is also the range the engine decides for it
  // (its range window), so an address inside that decision extends it.
  if (!Is6to4(*ip) && EmbeddedIpv4(*ip)) return std::nullopt;
  const Cidr range = Cidr::Covering(*ip, FoldPrefixLocked(*ip));
  std::pair<palisade::v1::Target, std::string> fold;
  fold.first.set_kind(palisade::v1::TARGET_KIND_RANGE);
  fold.first.set_value(range.ToString());
  // Already folded: the range's decision takes the detection (whatever the count is now). A
  // range decided by hand or by a feed is not a fold: the address is decided as before. (One
  // past its end that no sweep has ended yet is folded again, as anew.)
  if (auto a = active_.find(fold.first.value()); a != active_.end()) {
    const Decision& d = by_id_[a->second.id];
    if (d.origin() == palisade::v1::ORIGIN_RULE && DecisionExpiry(d) > now) return fold;
  }
  auto count = fold_counts_.find(FoldKeyLocked(*ip));
  if (count == fold_counts_.end() || count->second + 1 < limits_.ipv6_fold_addresses) {
    return std::nullopt;
  }
  if (TouchesNeverBan(range, never_fold_)) return std::nullopt;
  fold.second = absl::StrCat("ipv6 folding: ", count->second + 1, " addresses of ",
                             fold.first.value(), " decided (the last ", address, ")");
  return fold;
}

void DecisionTable::GrowActiveLocked(Active& a, size_t bytes) {
  a.bytes += bytes;
  active_bytes_ += bytes;
}

bool DecisionTable::OverActiveBudgetLocked(palisade::v1::TargetKind kind) {
  const bool token = kind == palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT ||
                     kind == palisade::v1::TARGET_KIND_TOKEN_ID;
  const size_t budget = token ? limits_.max_active_bytes
                              : limits_.max_active_bytes - limits_.max_active_bytes / 8;
  const bool over = active_bytes_ >= budget;
  if (over) {
    if (!refusing_) {
      std::cerr << "palisaded: decisions: the active decisions hold " << active_bytes_
                << " bytes (decision limit " << limits_.max_active_bytes
                << "): new rule decisions are refused until some end "
                   "(palisade_decisions_total{change=\"refused\"})"
                << std::endl;
    }
    refusing_ = true;
    ++refused_since_log_;
  } else if (refusing_ && !token) {
    std::cerr << "palisaded: decisions: new rule decisions are made again (" << refused_since_log_
              << " refused meanwhile)" << std::endl;
    refusing_ = false;
    refused_since_log_ = 0;
  }
  return over;
}

void DecisionTable::SetLeanExtensions(bool lean) {
  absl::MutexLock lock(&mu_);
  lean_extensions_ = lean;
}

void DecisionTable::SetKeepEvidence(bool keep) {
  absl::MutexLock lock(&mu_);
  keep_evidence_ = keep;
}

void DecisionTable::ExtensionLocked(const Decision& d, DecisionUpdate* out) const {
  CopyUpdateLocked(d, DecisionChange::kExtended, /*evidence=*/!lean_extensions_, out);
}

void DecisionTable::CopyUpdateLocked(const Decision& d, DecisionChange change, bool evidence,
                                     DecisionUpdate* out) const {
  out->change = change;
  out->secret.clear();
  out->outbox_seq = 0;
  // Field by field into the strings and messages `out` holds from an earlier use (ApplyAllInto):
  // an assignment reuses a string's buffer, where CopyFrom's Clear deletes the target and the
  // times (proto3) to allocate them again, and its generic walk cost ~500 instructions more.
  // DecisionTableTest.AnExtensionCarriesEveryFieldOfTheDecision sets every field Decision has
  // (by reflection): a field added to Decision and not copied here fails it.
  Decision& o = out->decision;
  // A string is written only when it differs (an out-of-line call of ~100 instructions each):
  // the update is often the last one of the same decision.
#define PALISADE_COPY_STRING(from, to, field) \
  if ((to).field() != (from).field()) (to).set_##field((from).field())
  PALISADE_COPY_STRING(d, o, id);
  if (d.has_target()) {
    palisade::v1::Target* t = o.mutable_target();
    t->set_kind(d.target().kind());
    PALISADE_COPY_STRING(d.target(), *t, value);
  } else {
    o.clear_target();
  }
  o.set_action(d.action());
  PALISADE_COPY_STRING(d, o, scope);
  auto copy_time = [](const google::protobuf::Timestamp& from, google::protobuf::Timestamp* to) {
    to->set_seconds(from.seconds());
    to->set_nanos(from.nanos());
  };
  if (d.has_start()) {
    copy_time(d.start(), o.mutable_start());
  } else {
    o.clear_start();
  }
  if (d.has_expiry()) {
    copy_time(d.expiry(), o.mutable_expiry());
  } else {
    o.clear_expiry();
  }
  PALISADE_COPY_STRING(d, o, rule_id);
  o.set_origin(d.origin());
  // Lean: no evidence line copied.
  if (!evidence) {
    o.clear_evidence();
  } else {
    *o.mutable_evidence() = d.evidence();
  }
  o.set_offence(d.offence());
  o.set_active(d.active());
  o.set_extensions(d.extensions());
  PALISADE_COPY_STRING(d, o, reason);
  PALISADE_COPY_STRING(d, o, replaces);
  PALISADE_COPY_STRING(d, o, replaced_by);
#undef PALISADE_COPY_STRING
  o.set_dry_run(d.dry_run());
  o.set_actuator(d.actuator());
  // Rule decisions name no feed: the assignment (an out-of-line call) only when either does.
  if (d.feeds_size() != 0 || o.feeds_size() != 0) *o.mutable_feeds() = d.feeds();
  if (d.has_offence_counted_until()) {
    copy_time(d.offence_counted_until(), o.mutable_offence_counted_until());
  } else {
    o.clear_offence_counted_until();
  }
  if (d.has_offence_last()) {
    copy_time(d.offence_last(), o.mutable_offence_last());
  } else {
    o.clear_offence_last();
  }
  // Fields a newer writer sent (a mirrored decision): kept as CopyFrom keeps them.
  static const google::protobuf::Reflection* const reflection = Decision::GetReflection();
  if (!reflection->GetUnknownFields(d).empty() || !reflection->GetUnknownFields(o).empty()) {
    google::protobuf::UnknownFieldSet* unknown = reflection->MutableUnknownFields(&o);
    unknown->Clear();
    unknown->MergeFrom(reflection->GetUnknownFields(d));
  }
}

DecisionTable::Claim DecisionTable::ClaimOf(const Decision& d) {
  return {d.origin(), d.action(),  d.actuator(), d.dry_run(),
          DecisionExpiry(d), d.rule_id(), d.reason()};
}

bool DecisionTable::SameKind(const Claim& a, const Claim& b) {
  return a.origin == b.origin && a.action == b.action && a.actuator == b.actuator &&
         a.dry_run == b.dry_run;
}

DecisionTable::ClaimRank DecisionTable::Rank(palisade::v1::Origin origin,
                                             palisade::v1::Action action,
                                             palisade::v1::Actuator actuator, bool dry_run) {
  // The operator's word comes before any rule's or feed's action (a manual challenge is what
  // the operator chose for that address); among rule and feed claims the stronger action wins
  // (a scanner challenged for a probe and then matched by a blocking rule is blocked at once,
  // not when the challenge ends), and then the origin.
  return {Enforcement(actuator, dry_run), origin == palisade::v1::ORIGIN_MANUAL ? 1 : 0,
          Strength(action), Precedence(origin)};
}

DecisionTable::ClaimRank DecisionTable::Rank(const Claim& c) {
  return Rank(c.origin, c.action, c.actuator, c.dry_run);
}

void DecisionTable::CoverLocked(const std::string& target, Claim claim, absl::Time now) {
  if (claim.expiry <= now) return;
  // A feed's claim is neither stored nor charged (its sync brings it back, and the feeds are
  // bounded by their own cap): refreshed at every sync, it would write its target each time.
  const bool stored = claim.origin != palisade::v1::ORIGIN_FEED;
  std::vector<Claim>& claims = covered_[target];
  for (Claim& c : claims) {
    if (SameKind(c, claim)) {
      // Every match of a rule on a target decided more strongly lands here: writing the
      // target's claims each time (a DELETE and INSERTs in every batch) only to move an expiry
      // on would cost more than the match. The claim is written when its offence rises, or
      // once its expiry has moved past the stored one by a tenth of what is left (or a
      // minute): a restart loses at most that much of it. A rule claim's rule or reason may
      // change on every match (two rules taking turns; a folded range's "the last ADDR" an
      // attacker rotates): written with the next step only, and a restart may bring back the
      // one before. The operator's reason is written at once (it changes when they say so).
      const bool manual = claim.origin == palisade::v1::ORIGIN_MANUAL;
      if (stored &&
          ((manual && (c.rule_id != claim.rule_id || c.reason != claim.reason)) ||
           claim.offence > c.offence ||
           claim.expiry - c.stored > std::max(kClaimWriteStep, (claim.expiry - now) / 10))) {
        ClaimsChangedLocked(target);
      }
      c.expiry = std::max(c.expiry, claim.expiry);
      c.offence = std::max(c.offence, claim.offence);
      c.rule_id = std::move(claim.rule_id);
      c.reason = std::move(claim.reason);
      return;
    }
  }
  if (stored) ClaimsChangedLocked(target);
  claims.push_back(std::move(claim));
}

void DecisionTable::DropWaitingLocked(const std::string& target) {
  auto it = covered_.find(target);
  if (it == covered_.end()) return;
  std::vector<Claim>& claims = it->second;
  const size_t before = claims.size();
  claims.erase(std::remove_if(claims.begin(), claims.end(),
                              [](const Claim& c) { return c.origin != palisade::v1::ORIGIN_FEED; }),
               claims.end());
  if (claims.size() != before) ClaimsChangedLocked(target);
  if (claims.empty()) covered_.erase(it);
}

size_t DecisionTable::WaitingBytes(const WaitingClaims& w) {
  size_t bytes = sizeof(WaitingClaims) + w.target.size() + w.decision_id.size();
  for (const WaitingClaimRow& c : w.claims) {
    bytes += sizeof(WaitingClaimRow) + c.target.size() + c.decision_id.size() + c.rule_id.size() +
             c.reason.size();
  }
  return bytes;
}

size_t DecisionTable::ClaimBytes(const Claim& c) {
  return sizeof(Claim) + c.rule_id.size() + c.reason.size();
}

void DecisionTable::ChargeClaimsLocked(const std::string& target) {
  auto a = active_.find(target);
  if (a == active_.end()) return;  // none wait: a claim waits only behind an active decision
  size_t bytes = 0;
  if (auto it = covered_.find(target); it != covered_.end()) {
    for (const Claim& c : it->second) {
      if (c.origin != palisade::v1::ORIGIN_FEED) bytes += ClaimBytes(c);
    }
  }
  active_bytes_ = active_bytes_ - a->second.claim_bytes + bytes;
  a->second.bytes = a->second.bytes - a->second.claim_bytes + bytes;
  a->second.claim_bytes = bytes;
}

void DecisionTable::FillClaim(const palisade::v1::Target& target, const Claim& claim,
                              absl::Time start, uint32_t offence, Decision* d) {
  *d->mutable_target() = target;
  d->set_action(claim.action);
  d->set_actuator(claim.actuator);
  d->set_dry_run(claim.dry_run);
  *d->mutable_start() = ToProtoTime(start);
  *d->mutable_expiry() = ToProtoTime(claim.expiry);
  d->set_rule_id(claim.rule_id);
  d->set_origin(claim.origin);
  d->set_offence(offence);
  d->set_reason(claim.reason);
}

void DecisionTable::InstateLocked(const palisade::v1::Target& target, const Claim& claim,
                                  absl::Time start, uint32_t offence,
                                  const std::vector<std::string>& evidence, DecisionUpdate* out,
                                  const Decision* follows) {
  // Built where the table keeps it and copied field by field into the update (whose strings
  // and times an earlier use left: ApplyAllInto), not built, copied whole and moved.
  std::string id = NewIdLocked();
  Decision& d = by_id_[id];
  FillClaim(target, claim, start, offence, &d);
  d.set_id(std::move(id));
  // Until when its offender's count stands, and its last offence (a reinstated claim's is the
  // ended decision's offender's, not now), for a mirror that may write next (MirrorLocked).
  if (claim.origin != palisade::v1::ORIGIN_FEED) {
    if (auto o = offences_.find(target.value()); o != offences_.end()) {
      if (o->second.counted_until != absl::InfinitePast()) {
        *d.mutable_offence_counted_until() = ToProtoTime(o->second.counted_until);
      }
      *d.mutable_offence_last() = ToProtoTime(o->second.last);
    } else if (follows != nullptr) {
      // The offender was forgotten (its memory shorter than the decisions, or the cap) while
      // the decision it follows stood: that decision's times are still the offender's, and a
      // mirror reading none would guess kRestoredMemory's 30 days.
      if (follows->has_offence_counted_until()) {
        *d.mutable_offence_counted_until() = follows->offence_counted_until();
      }
      if (follows->has_offence_last()) *d.mutable_offence_last() = follows->offence_last();
    }
  }
  if (keep_evidence_) AddEvidence(evidence, &d);
  d.set_active(true);
  AddActiveLocked(d);
  CopyUpdateLocked(d, DecisionChange::kCreated, /*evidence=*/true, out);
  // A creation carries its evidence even when the table keeps none.
  if (!keep_evidence_) AddEvidence(evidence, &out->decision);
}

void DecisionTable::ReinstateLocked(const Decision& ended_decision,
                                    std::vector<DecisionUpdate>* out) {
  auto it = covered_.find(ended_decision.target().value());
  if (it == covered_.end()) return;
  // Taken, expired, or left behind the next decision: written again if any is stored (the
  // feeds' are not).
  if (std::any_of(it->second.begin(), it->second.end(),
                  [](const Claim& c) { return c.origin != palisade::v1::ORIGIN_FEED; })) {
    ClaimsChangedLocked(it->first);
  }
  // A copy: `ended_decision` may live in by_id_, which deciding the next claim can rehash.
  const Decision ended = ended_decision;
  std::vector<Claim> claims = std::move(it->second);
  covered_.erase(it);
  const absl::Time now = clock_.TimeNow();
  claims.erase(std::remove_if(claims.begin(), claims.end(),
                              [now](const Claim& c) { return c.expiry <= now; }),
               claims.end());
  if (claims.empty()) return;
  auto best = std::max_element(claims.begin(), claims.end(), [](const Claim& a, const Claim& b) {
    return std::make_pair(Rank(a), a.expiry) < std::make_pair(Rank(b), b.expiry);
  });
  Claim next = std::move(*best);
  claims.erase(best);
  // The same episode goes on under the next claim: no new offence (one that waited behind a
  // feed's decision counted its own: ApplyLocked), and never a lower one than the decision
  // it follows.
  const uint32_t offence = std::max({uint32_t{1}, next.offence, ended.offence()});
  InstateLocked(ended.target(), next, now, offence, {}, &out->emplace_back(), &ended);
  if (!claims.empty()) covered_[ended.target().value()] = std::move(claims);
}

DecisionUpdate DecisionTable::ApplyLocked(const palisade::v1::Target& target,
                                          const palisade::v1::DecisionSpec& spec, absl::Time start,
                                          palisade::v1::Origin origin, absl::string_view rule_id,
                                          const std::vector<std::string>& evidence,
                                          absl::string_view reason,
                                          std::vector<DecisionUpdate>* replaced, absl::Time now) {
  DecisionUpdate update;
  ApplyLocked(target, spec, start, origin, rule_id, evidence, reason, replaced, now, &update);
  return update;
}

void DecisionTable::ApplyLocked(const palisade::v1::Target& target,
                                const palisade::v1::DecisionSpec& spec, absl::Time start,
                                palisade::v1::Origin origin, absl::string_view rule_id,
                                const std::vector<std::string>& evidence, absl::string_view reason,
                                std::vector<DecisionUpdate>* replaced, absl::Time now,
                                DecisionUpdate* out) {
  const absl::Duration base = FromProtoDuration(spec.duration());
  const palisade::v1::Escalation& escalation = spec.escalation();
  // The target's hash, once for active_ and offences_ (both hash strings with the same
  // function): hashing it for each was ~100 instructions a detection.
  static_assert(std::is_same_v<decltype(active_)::hasher, decltype(offences_)::hasher>);
  const size_t hash = active_.hash_function()(target.value());
  const absl::Duration memory =
      escalation.has_memory() ? FromProtoDuration(escalation.memory()) : kDefaultMemory;
  auto active = active_.find(target.value(), hash);
  Decision* decided = active != active_.end() ? &by_id_[active->second.id] : nullptr;
  if (decided != nullptr && DecisionExpiry(*decided) <= now &&
      !(decided->origin() == palisade::v1::ORIGIN_FEED && origin == palisade::v1::ORIGIN_FEED)) {
    // Past its expiry and not swept yet (within the sweep interval, or restored after a
    // restart): it ends here as ExpireDue would end it, heard first, and the claim is decided
    // as on an undecided target, or against a waiting claim that took over. (But a feed that
    // still lists its target renews its own decision: a feed listing is no offence to count
    // anew, and ending it would withdraw and re-create its edge object.)
    ExpireLocked(*decided, replaced);
    active = active_.find(target.value(), hash);
    decided = active != active_.end() ? &by_id_[active->second.id] : nullptr;
  }
  if (decided != nullptr) {
    Decision& d = *decided;
    // Rank(ClaimOf(d)), without copying its strings on every extension.
    const ClaimRank current_rank = Rank(d.origin(), d.action(), d.actuator(), d.dry_run());
    // A rule's or manual claim that replaces a feed decision is a new offence, escalated from
    // the offender's count as on an undecided target: the feed decision's offence is not the
    // offender's (a feed listing is not an offence). Otherwise the same episode goes on.
    uint32_t offence = d.offence();
    bool remembered = false;  // as below, on an undecided target
    const bool over_feed =
        d.origin() == palisade::v1::ORIGIN_FEED && origin != palisade::v1::ORIGIN_FEED;
    const bool replaces_feed =
        over_feed && Rank(origin, spec.action(), spec.actuator(), spec.dry_run()) > current_rank;
    // A weaker one (a rule's challenge on an address a feed blocks) waits behind the feed's
    // decision, but is an offence all the same: counted when it begins to wait, escalated from
    // the offender's count, and decided at that offence when the listing ends (Claim::offence).
    // One episode behind a feed's decision is one offence, whatever kinds of claims it makes:
    // while a rule or manual claim is still due behind it, another claim (of its kind or not,
    // waiting or replacing the feed's decision) goes on at that claim's offence. Otherwise
    // whoever can write log lines about a feed-listed address would escalate it once per kind
    // of rule that matches them.
    bool episode = false;          // a rule or manual claim still due behind the feed's decision
    uint32_t episode_offence = 0;  // its offence (0: the decision's, ReinstateLocked)
    if (over_feed) {
      if (auto c = covered_.find(target.value()); c != covered_.end()) {
        for (const Claim& w : c->second) {
          if (w.origin == palisade::v1::ORIGIN_FEED || w.expiry <= now) continue;
          episode = true;
          episode_offence = std::max(episode_offence, w.offence);
        }
      }
      if (episode_offence != 0) offence = episode_offence;
    }
    const bool behind_feed = over_feed && !replaces_feed && !episode;
    if ((replaces_feed && !episode) || behind_feed) {
      uint32_t previous = 0;
      if (auto it = offences_.find(target.value(), hash); it != offences_.end()) {
        if (start - it->second.last <= memory) previous = it->second.count;
        remembered = start < it->second.counted_until;
      }
      offence = previous + 1;
    }
    const absl::Duration duration = Escalated(base, escalation, offence);
    // The escalation memory runs from the offender's last offence, not from the decision's
    // creation: a decision extended for days is remembered from its last detection. (A feed
    // listing is not an offence.)
    Offences* off = nullptr;
    if (origin != palisade::v1::ORIGIN_FEED) {
      off = &OffencesLocked(target.value(), start, memory, /*known=*/true, hash);
      off->last = std::max(off->last, start);
      // Forgotten meanwhile (its memory shorter than the decision, or the cap): counted again
      // from the decision's offence, not from nothing.
      off->count = std::max(off->count, d.offence());
      // The memory grew with this offence, and runs from it: a mirror learns both with the
      // extension (the decision's start is not the offender's last offence any more).
      if (off->counted_until != absl::InfinitePast()) {
        *d.mutable_offence_counted_until() = ToProtoTime(off->counted_until);
      }
      *d.mutable_offence_last() = ToProtoTime(off->last);
    }
    // SameKind(incoming, current), read from the spec and the decision: the claims (and their
    // strings) are built only for another kind of claim, not on every extension.
    if (origin != d.origin() || spec.action() != d.action() || spec.actuator() != d.actuator() ||
        spec.dry_run() != d.dry_run()) {
      Claim incoming{origin, spec.action(), spec.actuator(), spec.dry_run(), start + duration,
                     std::string(rule_id), std::string(reason)};
      // Another kind of claim on a decided target. The active decision is the strongest claim
      // (Rank: enforcement first, then manual, then the stronger action, then rule > feed);
      // the others wait, and the strongest of them still due takes over when it ends
      // (ReinstateLocked).
      if (incoming.expiry > now && Rank(incoming) > current_rank) {
        // Stronger: the current decision is withdrawn (its edge object removed, a queued apply
        // cancelled) and the new claim decided, in this order, for the same offence (a new
        // one over a feed decision, unless a claim waiting behind it counted the episode's).
        if (replaces_feed && !episode) {
          off->count = remembered ? std::max(off->count, offence) : offence;
        }
        const Claim current = ClaimOf(d);
        const std::string replaced_id = d.id();
        replaced->push_back(WithdrawLocked(d));
        CoverLocked(target.value(), current, now);
        InstateLocked(target, incoming, start, offence, evidence, out);
        // The rule and manual claims that waited behind it wait behind the new decision now:
        // their rows are written again naming it (a restart restores a row only behind the
        // decision it names), and charged to it (InstateLocked charged it nothing). CoverLocked
        // notes the target only for `current`'s own claim, not for a feed's.
        if (auto c = covered_.find(target.value());
            c != covered_.end() &&
            std::any_of(c->second.begin(), c->second.end(),
                        [](const Claim& w) { return w.origin != palisade::v1::ORIGIN_FEED; })) {
          ClaimsChangedLocked(target.value());
        }
        // Each names the other (durably: the outbox rows carry the decisions), so the
        // dispatcher spends no guard budget on a replacement of what stood at the edge and
        // keeps the replaced object until the replacement stands. `d` may have moved.
        const std::string& replacing_id = out->decision.id();
        replaced->back().decision.set_replaced_by(replacing_id);
        out->decision.set_replaces(replaced_id);
        if (auto it = by_id_.find(replaced_id); it != by_id_.end()) {
          it->second.set_replaced_by(replacing_id);
        }
        if (auto it = by_id_.find(replacing_id); it != by_id_.end()) {
          it->second.set_replaces(replaced_id);
        }
        return;
      }
      if (behind_feed && incoming.expiry > now) {
        off->count = remembered ? std::max(off->count, offence) : offence;
        incoming.offence = offence;
      } else if (over_feed) {
        incoming.offence = episode_offence;  // the episode's, for a claim of another kind
      }
      CoverLocked(target.value(), std::move(incoming), now);
      d.set_extensions(d.extensions() + 1);
      if (keep_evidence_) GrowActiveLocked(active->second, AddEvidence(evidence, &d));
      return ExtensionLocked(d, out);
    }
    // Later only: its by_expiry_ entry stays where it is (ExpireDue moves it when it comes).
    const absl::Time current = DecisionExpiry(d);
    if (start + duration > current) *d.mutable_expiry() = ToProtoTime(start + duration);
    d.set_extensions(d.extensions() + 1);
    if (keep_evidence_) GrowActiveLocked(active->second, AddEvidence(evidence, &d));
    return ExtensionLocked(d, out);
  }

  // An IPv6 address whose range holds several rule decisions already: the range is decided.
  if (origin == palisade::v1::ORIGIN_RULE && target.kind() == palisade::v1::TARGET_KIND_IP) {
    if (auto fold = FoldLocked(target.value(), now)) {
      ApplyLocked(fold->first, spec, start, origin, rule_id, evidence,
                  fold->second.empty() ? reason : fold->second, replaced, now, out);
      if (folded_ != nullptr && out->change == DecisionChange::kCreated && !fold->second.empty()) {
        folded_->Increment();
      }
      return;
    }
  }
  // A feed listing is not an offence: it neither counts nor escalates (its duration is the
  // feed's), and a feed's many entries never take an offender's place under the cap.
  const bool offence_counts = origin != palisade::v1::ORIGIN_FEED;
  uint32_t previous = 0;
  // Some rule's memory still counts the offender's entry: one known to have counted it here
  // (a restored count stands only within this rule's memory, which `previous` covers).
  bool remembered = false;
  if (auto it = offences_.find(target.value(), hash);
      offence_counts && it != offences_.end()) {
    if (start - it->second.last <= memory) previous = it->second.count;
    remembered = start < it->second.counted_until;
  }
  const uint32_t offence = previous + 1;
  const absl::Duration duration = Escalated(base, escalation, offence);

  const Claim claim{origin,           spec.action(),        spec.actuator(),    spec.dry_run(),
                    start + duration, std::string(rule_id), std::string(reason)};
  if (claim.expiry <= now) {
    Decision d;
    FillClaim(target, claim, start, offence, &d);
    AddEvidence(evidence, &d);
    d.set_active(false);
    return SetUpdate(DecisionChange::kStale, std::move(d), out);  // no offence: nothing kept
  }
  if (origin == palisade::v1::ORIGIN_RULE && OverActiveBudgetLocked(target.kind())) {
    Decision d;
    FillClaim(target, claim, start, offence, &d);
    AddEvidence(evidence, &d);
    d.set_active(false);
    return SetUpdate(DecisionChange::kRefused, std::move(d), out);  // nothing kept, as stale
  }
  if (offence_counts) {
    Offences& off = OffencesLocked(target.value(), start, memory, /*known=*/true, hash);
    // Never lowered while a memory still counts it: a rule whose own memory lapsed starts at
    // offence 1, and a longer memory still escalates from the count it relies on.
    off.count = remembered ? std::max(off.count, offence) : offence;
    off.last = std::max(off.last, start);  // a late line does not move it back
  }
  InstateLocked(target, claim, start, offence, evidence, out);
}

DecisionUpdate DecisionTable::Apply(const Detection& detection,
                                    const palisade::v1::DecisionSpec& spec) {
  palisade::v1::Target target;
  target.set_kind(detection.kind);
  target.set_value(detection.key);
  std::vector<DecisionUpdate> all;  // a replaced decision's withdrawal, then this one
  Commit commit;  // this change set's store write and turn with the listeners
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_.TimeNow();
    DecisionUpdate update = ApplyLocked(target, spec, detection.time, palisade::v1::ORIGIN_RULE,
                                        detection.rule_id, detection.evidence, "", &all, now);
    if (CarriesSecret(update)) update.secret = detection.secret;
    all.push_back(std::move(update));
    commit = CommitLocked(all, now);
  }
  WriteInTurn(commit);
  Notify(commit, all);
  return all.back();
}

std::vector<DecisionUpdate> DecisionTable::ApplyAll(
    const std::vector<Detection>& detections,
    const std::function<void(const std::vector<DecisionUpdate>&)>& before_notify) {
  std::vector<DecisionUpdate> updates;
  ApplyAllInto(detections, &updates, before_notify);
  return updates;
}

void DecisionTable::ApplyAllInto(
    const std::vector<Detection>& detections, std::vector<DecisionUpdate>* into,
    const std::function<void(const std::vector<DecisionUpdate>&)>& before_notify) {
  // updates[i] for detections[i], written over what an earlier call left (its memory reused).
  std::vector<DecisionUpdate>& updates = *into;
  updates.resize(detections.size());
  // One lock for the whole batch: the forward check (a cluster node's) is made under it, and
  // only a node that forwards copies the function and lets go.
  absl::ReleasableMutexLock lock(&mu_);
  if (forward_) {
    const Forward forward = forward_;
    ++forwarding_;  // SetForward waits for this call to end
    lock.Release();
    for (size_t k = 0; k < detections.size(); ++k) {
      const Detection& detection = detections[k];
      DecisionUpdate u{detection.secret.empty() ? DecisionChange::kForwarded
                                                : DecisionChange::kStale,
                       Decision()};
      u.decision.mutable_target()->set_kind(detection.kind);
      u.decision.mutable_target()->set_value(detection.key);
      u.decision.set_rule_id(detection.rule_id);
      u.decision.set_origin(palisade::v1::ORIGIN_RULE);
      *u.decision.mutable_start() = ToProtoTime(detection.time);
      if (detection.secret.empty()) forward(detection);
      updates[k] = std::move(u);
    }
    {
      absl::MutexLock relock(&mu_);
      --forwarding_;
    }
    if (before_notify) before_notify(updates);
    return;
  }
  // What listeners hear, in order: `updates`, with the withdrawal of each decision a stronger
  // claim replaced (or the expiry of one found past its end) just before what followed it.
  // Without one (nearly always) that is `updates` itself; `all` is built, with a copy of each
  // update, only from the first one on.
  std::vector<DecisionUpdate> all;
  std::vector<DecisionUpdate> withdrawn;
  std::vector<size_t> in_all;  // all[in_all[i]] is updates[i], once `all` is built
  bool interleaved = false;
  Commit commit;  // this change set's store write and turn with the listeners
  {
    const absl::Time now = clock_.TimeNow();  // one reading for the batch
    palisade::v1::Target& target = scratch_target_;
    for (size_t k = 0; k < detections.size(); ++k) {
      const Detection& detection = detections[k];
      DecisionUpdate& update = updates[k];
      target.set_kind(detection.kind);
      target.set_value(detection.key);
      withdrawn.clear();
      ApplyLocked(target, detection.rule->proto.decision(), detection.time,
                  palisade::v1::ORIGIN_RULE, detection.rule_id, detection.evidence, "",
                  &withdrawn, now, &update);
      if (CarriesSecret(update)) update.secret = detection.secret;
      if (update.change == DecisionChange::kCreated) {
        if (!detection.feeds.empty()) {
          Decision& d = by_id_[update.decision.id()];
          for (const std::string& f : detection.feeds) d.add_feeds(f);
          *update.decision.mutable_feeds() = d.feeds();
        }
      }
      if (!withdrawn.empty() && !interleaved) {
        interleaved = true;
        in_all.reserve(detections.size());
        for (size_t i = 0; i < k; ++i) {
          in_all.push_back(all.size());
          all.push_back(updates[i]);
        }
      }
      if (interleaved) {
        for (DecisionUpdate& w : withdrawn) all.push_back(std::move(w));
        in_all.push_back(all.size());
        all.push_back(update);
      }
    }
    commit = CommitLocked(interleaved ? all : updates, now);
    lock.Release();
  }
  // The store write outside the lock: another stream's batch is decided meanwhile (its write
  // waits for this one's turn).
  WriteInTurn(commit);
  // Hand the recorded outbox operations back to the per-detection view.
  for (size_t i = 0; interleaved && i < updates.size(); ++i) {
    updates[i].outbox_seq = all[in_all[i]].outbox_seq;
  }
  Notify(commit, interleaved ? all : updates, [&](const std::vector<DecisionUpdate>&) {
    if (before_notify) before_notify(updates);
  });
}

absl::StatusOr<Decision> DecisionTable::AddManual(const palisade::v1::AddDecisionRequest& req) {
  palisade::v1::Target target = req.target();
  switch (target.kind()) {
    case TargetKind::TARGET_KIND_UNSPECIFIED:
    case TargetKind::TARGET_KIND_IP: {
      std::optional<IpAddress> ip = IpAddress::Parse(target.value());
      if (!ip) {
        return absl::InvalidArgumentError(
            absl::StrCat("target.value \"", target.value(), "\" is not an IP address"));
      }
      target.set_kind(TargetKind::TARGET_KIND_IP);
      target.set_value(ip->ToString());
      break;
    }
    case TargetKind::TARGET_KIND_RANGE: {
      absl::StatusOr<Cidr> cidr = Cidr::Parse(target.value());
      if (!cidr.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("target.value: ", cidr.status().message()));
      }
      // A range of one address is that address (as the feed manager folds feed entries): one
      // decision on it, not a second one keyed by "a.b.c.d/32" that a bouncer's ipset (hash:net)
      // takes for the same entry and removes when the other ends.
      if (cidr->prefix_length() == cidr->base().bit_length()) {
        target.set_kind(TargetKind::TARGET_KIND_IP);
        target.set_value(cidr->base().ToString());
      } else {
        target.set_value(cidr->ToString());
      }
      break;
    }
    case TargetKind::TARGET_KIND_PATH:
      if (target.value().empty() || target.value()[0] != '/') {
        return absl::InvalidArgumentError("target.value: a path must start with '/'");
      }
      break;
    case TargetKind::TARGET_KIND_TOKEN_ID: {
      const std::string& v = target.value();
      if (v.size() != 32 || !std::all_of(v.begin(), v.end(), [](char c) {
            return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
          })) {
        return absl::InvalidArgumentError("target.value: a token id is 32 lowercase hex");
      }
      break;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("target.kind ",
                                                     palisade::v1::TargetKind_Name(target.kind()),
                                                     " cannot be added by hand"));
  }
  const absl::Duration duration = FromProtoDuration(req.duration());
  if (duration <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("duration must be > 0: every decision expires");
  }
  // As a rule's (rule_set.cc): past ten years an expiry is no longer a time the store and the
  // edge can hold (an infinite one overflowed the store's milliseconds).
  if (duration > absl::Hours(24 * 3653)) {
    return absl::InvalidArgumentError("duration must be at most 10 years (3653 days)");
  }
  palisade::v1::DecisionSpec spec;
  spec.set_action(req.action() == palisade::v1::ACTION_UNSPECIFIED ? palisade::v1::ACTION_BLOCK
                                                                   : req.action());
  *spec.mutable_duration() = req.duration();
  palisade::v1::Actuator actuator = req.actuator();
  const bool path = target.kind() == TargetKind::TARGET_KIND_PATH;
  const bool token = target.kind() == TargetKind::TARGET_KIND_TOKEN_ID;
  if (actuator == palisade::v1::ACTUATOR_UNSPECIFIED) {
    actuator = path    ? palisade::v1::ACTUATOR_RATE_LIMIT
               : token ? palisade::v1::ACTUATOR_TOKEN_REVOCATION
                       : palisade::v1::ACTUATOR_ACCESS_RULE;
  }
  if (token && req.action() == palisade::v1::ACTION_UNSPECIFIED) {
    spec.set_action(palisade::v1::ACTION_REVOKE_TOKEN);
  }
  if (actuator != palisade::v1::ACTUATOR_NONE &&
      ((path && actuator != palisade::v1::ACTUATOR_RATE_LIMIT) ||
       (token && actuator != palisade::v1::ACTUATOR_TOKEN_REVOCATION) ||
       (!path && !token &&
        (actuator == palisade::v1::ACTUATOR_RATE_LIMIT ||
         actuator == palisade::v1::ACTUATOR_TOKEN_REVOCATION)))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "actuator ", palisade::v1::Actuator_Name(actuator), " cannot act on this target"));
  }
  spec.set_actuator(actuator);
  std::vector<DecisionUpdate> all;  // a replaced decision's withdrawal, then this one
  Commit commit;  // this change set's store write and turn with the listeners
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_.TimeNow();
    DecisionUpdate update = ApplyLocked(target, spec, now, palisade::v1::ORIGIN_MANUAL, "", {},
                                        req.reason(), &all, now);
    all.push_back(std::move(update));
    commit = CommitLocked(all, now);
  }
  WriteInTurn(commit);
  Notify(commit, all);
  return all.back().decision;
}

void DecisionTable::EraseActiveLocked(const Decision& d) {
  auto a = active_.find(d.target().value());
  if (a == active_.end() || a->second.id != d.id()) return;
  by_expiry_.erase({a->second.queued, d.id()});
  active_bytes_ -= a->second.bytes;
  if (a->second.folds && --fold_counts_[a->second.fold_key] == 0) {
    fold_counts_.erase(a->second.fold_key);
  }
  active_.erase(a);
}

void DecisionTable::ExpireLocked(Decision& d, std::vector<DecisionUpdate>* out) {
  EraseActiveLocked(d);
  d.set_active(false);
  EndedLocked(d);
  out->push_back({DecisionChange::kExpired, d});
  if (forward_ != nullptr) {
    // A mirror: what follows is the writer's to decide (its successor and the claims' snapshot
    // come with the log); decided here only should this table write first (ExpireDue).
    // Even with no claims held here yet: the writer's snapshot naming it may still come.
    mirror_ended_[d.target().value()] = d.id();
    return;
  }
  ReinstateLocked(d, out);  // a claim that waited behind it takes over
}

DecisionUpdate DecisionTable::WithdrawLocked(Decision& d) {
  d.set_active(false);
  EraseActiveLocked(d);
  *d.mutable_expiry() = ToProtoTime(clock_.TimeNow());
  EndedLocked(d);
  return {DecisionChange::kWithdrawn, d};
}

std::vector<DecisionUpdate> DecisionTable::SyncFeed(const std::vector<FeedTarget>& desired,
                                                    const palisade::v1::DecisionSpec& spec,
                                                    absl::Time refresh_before) {
  std::vector<DecisionUpdate> updates;
  Commit commit;  // this change set's store write and turn with the listeners
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_.TimeNow();
    absl::flat_hash_set<absl::string_view> wanted;
    wanted.reserve(desired.size());
    for (const FeedTarget& f : desired) {
      wanted.insert(f.target.value());
      auto active = active_.find(f.target.value());
      if (active != active_.end()) {
        const Decision& d = by_id_[active->second.id];
        if (d.origin() == palisade::v1::ORIGIN_FEED) {
          if (DecisionExpiry(d) >= refresh_before) continue;
        } else {
          // Decided by a rule or by hand: the feed's claim waits behind it (refreshed here) and
          // takes over when that decision ends; or replaces it if it acts more strongly (a
          // dry-run or local-only decision).
          Claim claim{palisade::v1::ORIGIN_FEED, spec.action(),
                      spec.actuator(),           spec.dry_run(),
                      now + FromProtoDuration(spec.duration()), "feed",
                      f.reason};
          if (Rank(claim) <= Rank(ClaimOf(d))) {
            CoverLocked(f.target.value(), std::move(claim), now);
            continue;
          }
        }
      }
      DecisionUpdate u = ApplyLocked(f.target, spec, now, palisade::v1::ORIGIN_FEED, "feed", {},
                                     f.reason, &updates, now);
      updates.push_back(std::move(u));
    }
    // Targets the feeds no longer list lose their waiting feed claims...
    for (auto it = covered_.begin(); it != covered_.end();) {
      if (!wanted.contains(it->first)) {
        std::vector<Claim>& claims = it->second;
        claims.erase(std::remove_if(claims.begin(), claims.end(),
                                    [](const Claim& c) {
                                      return c.origin == palisade::v1::ORIGIN_FEED;
                                    }),
                     claims.end());
      }
      if (it->second.empty()) {
        covered_.erase(it++);
      } else {
        ++it;
      }
    }
    // ...and their feed decisions (a claim that waited behind one takes over).
    std::vector<std::string> leaving;
    for (const auto& [target, active] : active_) {
      if (!wanted.contains(target) && by_id_[active.id].origin() == palisade::v1::ORIGIN_FEED) {
        leaving.push_back(active.id);
      }
    }
    for (const std::string& id : leaving) {
      updates.push_back(WithdrawLocked(by_id_[id]));
      ReinstateLocked(by_id_[id], &updates);
    }
    commit = CommitLocked(updates, now);
  }
  WriteInTurn(commit);
  Notify(commit, updates);
  return updates;
}

absl::StatusOr<Decision> DecisionTable::Withdraw(absl::string_view id) {
  DecisionUpdate update;
  std::vector<DecisionUpdate> all;  // the withdrawal, then a feed claim taking over
  Commit commit;  // this change set's store write and turn with the listeners
  {
    absl::MutexLock lock(&mu_);
    auto it = by_id_.find(id);
    if (it == by_id_.end()) {
      return absl::NotFoundError(absl::StrCat("no decision with id \"", id, "\""));
    }
    Decision& d = it->second;
    if (!d.active()) {
      return absl::FailedPreconditionError(absl::StrCat("decision ", id, " is not active"));
    }
    update = WithdrawLocked(d);
    all.push_back(update);
    // An operator's unban ends the waiting rule and manual claims too; a feed's claim would be
    // decided again by the next sync anyway, so it takes over now.
    DropWaitingLocked(d.target().value());
    ReinstateLocked(d, &all);
    commit = CommitLocked(all, clock_.TimeNow());
  }
  WriteInTurn(commit);
  Notify(commit, all);
  return update.decision;
}

namespace {

// Whether `allowlist` covers target value `value`: an address in it, or a range overlapping it.
// Other targets (paths, token ids) are never covered.
bool AllowlistCovers(const CidrSet& allowlist, const std::string& value) {
  if (std::optional<IpAddress> ip = IpAddress::Parse(value)) {
    return allowlist.Contains(*ip);
  }
  if (value.empty() || value[0] == '/') return false;  // a path
  absl::StatusOr<Cidr> range = Cidr::Parse(value);
  return range.ok() && allowlist.ContainsAnyIn(*range);
}

}  // namespace

std::vector<DecisionUpdate> DecisionTable::WithdrawCovered(const CidrSet& allowlist) {
  std::vector<DecisionUpdate> updates;
  Commit commit;  // this change set's store write and turn with the listeners
  {
    absl::MutexLock lock(&mu_);
    // A mirror (a cluster node that is not the writer) changes nothing of its own: the writer's
    // reload withdraws them, and the mirror hears it from the decision log.
    if (forward_) return updates;
    const auto automatic = [](const Claim& c) { return c.origin != palisade::v1::ORIGIN_MANUAL; };
    // The waiting rule and feed claims first, so that a withdrawal below reinstates none.
    for (auto it = covered_.begin(); it != covered_.end();) {
      std::vector<Claim>& claims = it->second;
      if (AllowlistCovers(allowlist, it->first)) {
        const size_t before = claims.size();
        claims.erase(std::remove_if(claims.begin(), claims.end(), automatic), claims.end());
        if (claims.size() != before) ClaimsChangedLocked(it->first);
      }
      if (claims.empty()) {
        covered_.erase(it++);
      } else {
        ++it;
      }
    }
    std::vector<std::string> leaving;
    for (const auto& [target, active] : active_) {
      if (by_id_[active.id].origin() != palisade::v1::ORIGIN_MANUAL &&
          AllowlistCovers(allowlist, target)) {
        leaving.push_back(active.id);
      }
    }
    for (const std::string& id : leaving) {
      updates.push_back(WithdrawLocked(by_id_[id]));
      ReinstateLocked(by_id_[id], &updates);  // a waiting manual claim only
    }
    commit = CommitLocked(updates, clock_.TimeNow());
  }
  WriteInTurn(commit);
  Notify(commit, updates);
  return updates;
}

absl::StatusOr<Decision> DecisionTable::Get(absl::string_view id) const {
  absl::MutexLock lock(&mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) {
    return absl::NotFoundError(absl::StrCat("no decision with id \"", id, "\""));
  }
  return it->second;
}

std::vector<Decision> DecisionTable::List(const DecisionFilter& filter) const {
  std::vector<Decision> out;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, d] : by_id_) {
    if (!filter.target.empty() && d.target().value() != filter.target) continue;
    if (!filter.rule_id.empty() && d.rule_id() != filter.rule_id) continue;
    if (filter.origin != palisade::v1::ORIGIN_UNSPECIFIED && d.origin() != filter.origin) continue;
    if (filter.active_only && !d.active()) continue;
    out.push_back(d);
  }
  std::sort(out.begin(), out.end(), [](const Decision& a, const Decision& b) {
    if (a.start().seconds() != b.start().seconds())
      return a.start().seconds() < b.start().seconds();
    return a.id() < b.id();
  });
  return out;
}

namespace {

// List's order: start (seconds), then id. A page token is the key of the last decision a page
// returned: "<start seconds>/<id>".
using ListKey = std::pair<int64_t, absl::string_view>;
ListKey KeyOf(const Decision& d) { return {d.start().seconds(), d.id()}; }

}  // namespace

absl::StatusOr<DecisionPage> DecisionTable::ListPage(const DecisionFilter& filter,
                                                     size_t page_size,
                                                     absl::string_view page_token,
                                                     size_t max_bytes) const {
  std::optional<ListKey> after;
  if (!page_token.empty()) {
    const size_t slash = page_token.find('/');
    int64_t seconds = 0;
    if (slash == absl::string_view::npos || slash + 1 == page_token.size() ||
        !absl::SimpleAtoi(page_token.substr(0, slash), &seconds)) {
      return absl::InvalidArgumentError("page_token: not a token a previous page returned");
    }
    after = ListKey{seconds, page_token.substr(slash + 1)};
  }
  page_size = std::max<size_t>(page_size, 1);
  DecisionPage page;
  absl::MutexLock lock(&mu_);
  std::vector<const Decision*> matching;
  for (const auto& [id, d] : by_id_) {
    if (!filter.target.empty() && d.target().value() != filter.target) continue;
    if (!filter.rule_id.empty() && d.rule_id() != filter.rule_id) continue;
    if (filter.origin != palisade::v1::ORIGIN_UNSPECIFIED && d.origin() != filter.origin) continue;
    if (filter.active_only && !d.active()) continue;
    if (after && !(*after < KeyOf(d))) continue;
    matching.push_back(&d);
  }
  // Only the page needs ordering: the first page_size + 1 (one more tells whether a next page
  // exists).
  const size_t want = std::min(matching.size(), page_size + 1);
  auto by_key = [](const Decision* a, const Decision* b) { return KeyOf(*a) < KeyOf(*b); };
  std::partial_sort(matching.begin(), matching.begin() + want, matching.end(), by_key);
  size_t bytes = 0;
  size_t taken = 0;
  for (; taken < want && taken < page_size; ++taken) {
    const size_t size = matching[taken]->ByteSizeLong();
    if (taken > 0 && bytes + size > max_bytes) break;
    bytes += size;
    page.decisions.push_back(*matching[taken]);
  }
  if (taken < matching.size()) {
    const Decision& last = page.decisions.back();
    page.next_page_token = absl::StrCat(last.start().seconds(), "/", last.id());
  }
  return page;
}

size_t DecisionTable::size() const {
  absl::MutexLock lock(&mu_);
  return by_id_.size();
}

size_t DecisionTable::offenders() const {
  absl::MutexLock lock(&mu_);
  return offences_.size();
}

size_t DecisionTable::expiry_entries() const {
  absl::MutexLock lock(&mu_);
  return by_expiry_.size();
}

std::vector<Decision> DecisionTable::ExpireDue() {
  {
    // The sweep also writes what the store refused before (its order kept: no change set waits
    // for its turn without being after these).
    absl::MutexLock lock(&write_mu_);
    (void)WriteUnwrittenLocked();
  }
  std::vector<DecisionUpdate> updates;
  Commit commit;  // this change set's store write and turn with the listeners
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_.TimeNow();
    if (forward_ == nullptr && !mirror_ended_.empty()) {
      // Ended while this table mirrored, the writer's word on what follows never came: this
      // table writes now, and decides it.
      for (const auto& [target, id] : std::exchange(mirror_ended_, {})) {
        auto it = by_id_.find(id);
        if (active_.contains(target) || it == by_id_.end()) continue;
        ReinstateLocked(it->second, &updates);
      }
    }
    while (!by_expiry_.empty() && by_expiry_.begin()->first <= now) {
      auto it = by_id_.find(by_expiry_.begin()->second);
      if (it == by_id_.end() || !it->second.active()) {  // no entry outlives its decision
        by_expiry_.erase(by_expiry_.begin());
        continue;
      }
      Decision& d = it->second;
      // Extended since it was queued: its entry moves to its expiry (once per sweep that
      // reaches it, not once per extension).
      if (const absl::Time expiry = DecisionExpiry(d); expiry > now) {
        auto node = by_expiry_.extract(by_expiry_.begin());
        node.value().first = expiry;
        by_expiry_.insert(std::move(node));
        auto a = active_.find(d.target().value());
        if (a != active_.end() && a->second.id == d.id()) a->second.queued = expiry;
        continue;
      }
      ExpireLocked(d, &updates);
    }
    commit = CommitLocked(updates, now);
  }
  WriteInTurn(commit);
  Notify(commit, updates);
  std::vector<Decision> out;
  out.reserve(updates.size());
  for (DecisionUpdate& u : updates) {
    if (u.change == DecisionChange::kExpired) out.push_back(std::move(u.decision));
  }
  return out;
}

void DecisionTable::EndMirroredLocked(const std::string& id, std::vector<DecisionUpdate>* out) {
  auto it = by_id_.find(id);
  if (it == by_id_.end() || !it->second.active()) return;
  Decision& d = it->second;
  EraseActiveLocked(d);
  d.set_active(false);
  EndedLocked(d);
  // The writer decides what comes next on the target (and this table hears it): a claim that
  // waited here behind the ended decision is not the writer's, and left waiting it would come
  // back behind whatever the writer decides next.
  DropWaitingLocked(d.target().value());
  out->push_back({DecisionChange::kWithdrawn, d});
}

void DecisionTable::MirrorLocked(const Decision& d, std::optional<DecisionChange> change,
                                 std::vector<DecisionUpdate>* out) {
  auto it = by_id_.find(d.id());
  const bool held = it != by_id_.end();
  const bool was_active = held && it->second.active();
  // The writer's end of a decision this table's own sweep ended first (usually the same copy),
  // after every snapshot naming it: its word on what follows (a successor) came with it, or none
  // follows, so the claims kept for a take-over and the note of the end go (else the note stayed
  // for good, one per such target).
  if (!d.active() && !was_active) {
    if (auto e = mirror_ended_.find(d.target().value());
        e != mirror_ended_.end() && e->second == d.id()) {
      DropWaitingLocked(d.target().value());
      mirror_ended_.erase(e);
    }
  }
  if (held) {
    if (it->second.SerializeAsString() == d.SerializeAsString()) return;
    Decision& old = it->second;
    if (was_active) {
      EraseActiveLocked(old);
    } else if (auto e = ended_.find({DecisionExpiry(old), old.id()}); e != ended_.end()) {
      ended_bytes_ -= e->second;
      ended_.erase(e);
    }
  }
  if (d.active()) {
    mirror_ended_.erase(d.target().value());  // the writer's word on what follows
    if (auto a = active_.find(d.target().value()); a != active_.end() && a->second.id != d.id()) {
      EndMirroredLocked(std::string(a->second.id), out);
    }
    AddActiveLocked(d);
    // Charged to it again: a change of the same decision leaves the claims behind it waiting.
    ChargeClaimsLocked(d.target().value());
  } else if (was_active) {
    DropWaitingLocked(d.target().value());  // ended by the writer: as in EndMirroredLocked
  }
  by_id_[d.id()] = d;
  if (!d.active()) EndedLocked(d);
  // The writer's offences are this table's too, should it write next (a take-over): a repeat
  // offender escalates as it would have. Its count stands until the writer's table said
  // (offence_counted_until: the memories of the rules that counted it), and memories run from
  // the offender's last offence as the writer held it (offence_last: an extension moved it, a
  // claim reinstated behind an ended decision did not), never from the decision's start (a
  // reinstatement is no offence). A decision that does not say (a writer of an older build) is
  // guessed at, as for offences restored from old rows, from its start. A count the writer
  // said stands no longer is not made to stand (not clamped up to the last offence).
  // The log is trusted only as far as it can be right: a time no Timestamp holds (a forged or
  // corrupt decision; past year 9999 it breaks JSON printing) is not known (a start not known:
  // the offence is not counted), a last offence is never more than kMirrorSkew after now, and
  // a count stands at most kMaxMemory after it (else an offender's count could stand for good
  // and be carried on by the next decisions).
  absl::StatusOr<absl::Time> start = CheckedProtoTime(d.start());
  if (d.origin() != palisade::v1::ORIGIN_FEED && d.offence() > 0 && start.ok()) {
    const absl::Time latest = clock_.TimeNow() + kMirrorSkew;
    absl::Time last = std::min(*start, latest);
    if (d.has_offence_last()) {
      if (absl::StatusOr<absl::Time> t = CheckedProtoTime(d.offence_last()); t.ok()) {
        last = std::min(*t, latest);
      }
    }
    absl::Time counted_until = absl::InfinitePast();
    if (d.has_offence_counted_until()) {
      if (absl::StatusOr<absl::Time> t = CheckedProtoTime(d.offence_counted_until()); t.ok()) {
        counted_until = std::min(*t, last + kMaxMemory);
      }
    }
    const bool known = counted_until > last;
    Offences& off = OffencesLocked(d.target().value(), last,
                                   known ? counted_until - last : kRestoredMemory, known);
    if (last >= off.last) {
      off.count = std::max(off.count, d.offence());
      off.last = last;
    }
  }
  if (!change) {
    if (d.active()) {
      change = was_active ? DecisionChange::kExtended : DecisionChange::kCreated;
    } else if (was_active) {
      change = DecisionExpiry(d) <= clock_.TimeNow() ? DecisionChange::kExpired
                                                     : DecisionChange::kWithdrawn;
    } else {
      return;  // an ended decision, kept for Get: nothing for the listeners
    }
  }
  out->push_back({*change, d});
}

void DecisionTable::Mirror(DecisionChange change, const Decision& d) {
  std::vector<DecisionUpdate> updates;
  Commit commit;
  {
    absl::MutexLock lock(&mu_);
    MirrorLocked(d, change, &updates);
    commit = CommitLocked(updates, clock_.TimeNow());
  }
  WriteInTurn(commit);
  Notify(commit, updates);
}

void DecisionTable::MirrorAll(const std::vector<DecisionUpdate>& set) {
  std::vector<DecisionUpdate> updates;
  Commit commit;
  {
    absl::MutexLock lock(&mu_);
    for (const DecisionUpdate& u : set) MirrorLocked(u.decision, u.change, &updates);
    commit = CommitLocked(updates, clock_.TimeNow());
  }
  WriteInTurn(commit);
  Notify(commit, updates);
}

void DecisionTable::MirrorState(const std::vector<Decision>& state, bool mark_stale) {
  std::vector<DecisionUpdate> updates;
  Commit commit;
  {
    absl::MutexLock lock(&mu_);
    if (mark_stale) {
      // Not dropped: the writer's snapshots follow the state one message per target, and a
      // writer dying before its last would leave this table none. Slightly old claims beat
      // none: each snapshot that comes replaces its target's, and only the ones still marked
      // when the writer says its snapshots ended go (MirrorWaitingEnd).
      for (const auto& [target, claims] : covered_) {
        for (const Claim& c : claims) {
          if (c.origin == palisade::v1::ORIGIN_FEED) continue;
          stale_waiting_.insert(target);
          break;
        }
      }
    }
    absl::flat_hash_set<std::string> in_state;
    for (const Decision& d : state) in_state.insert(d.id());
    std::vector<std::string> gone;
    for (const auto& [target, active] : active_) {
      if (!in_state.contains(active.id)) gone.push_back(active.id);
    }
    for (const std::string& id : gone) EndMirroredLocked(id, &updates);
    for (const Decision& d : state) MirrorLocked(d, std::nullopt, &updates);
    commit = CommitLocked(updates, clock_.TimeNow());
  }
  WriteInTurn(commit);
  Notify(commit, updates);
}

void DecisionTable::MirrorWaiting(const std::vector<WaitingClaims>& waiting) {
  std::vector<DecisionUpdate> updates;  // none: no decision changes
  Commit commit;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_.TimeNow();
    for (const WaitingClaims& w : waiting) {
      stale_waiting_.erase(w.target);  // the writer's word on them
      auto e = mirror_ended_.find(w.target);
      // Behind a decision this table's sweep ended first (its clock ahead of the writer's):
      // the writer's claims behind it, kept (and the entry with them) for a take-over to
      // decide. Otherwise the writer's word on what follows.
      const bool ended_here = e != mirror_ended_.end() && e->second == w.decision_id;
      if (!ended_here && e != mirror_ended_.end()) mirror_ended_.erase(e);
      DropWaitingLocked(w.target);
      auto a = active_.find(w.target);
      if (!ended_here && (a == active_.end() || a->second.id != w.decision_id)) continue;
      for (const WaitingClaimRow& r : w.claims) {
        const auto origin = static_cast<palisade::v1::Origin>(r.origin);
        // The writer sends none of the feeds' (they come back with its syncs).
        if (origin != palisade::v1::ORIGIN_RULE && origin != palisade::v1::ORIGIN_MANUAL) {
          continue;
        }
        // Merged with a like one (CoverLocked): a forged snapshot holds no more claims than
        // the kinds of claim there are.
        CoverLocked(w.target,
                    Claim{origin, static_cast<palisade::v1::Action>(r.action),
                          static_cast<palisade::v1::Actuator>(r.actuator), r.dry_run, r.expiry,
                          r.rule_id, r.reason, /*stored=*/absl::InfinitePast(), r.offence},
                    now);
      }
      // Written to this table's store, and charged, as they now are (PrepareWriteLocked).
      ClaimsChangedLocked(w.target);
    }
    commit = CommitLocked(updates, now);
  }
  WriteInTurn(commit);
  Notify(commit, updates);
}

void DecisionTable::MirrorWaitingEnd() {
  std::vector<DecisionUpdate> updates;  // none: no decision changes
  Commit commit;
  {
    absl::MutexLock lock(&mu_);
    // Targets no snapshot named since the state: the writer holds no claims waiting there.
    for (const std::string& target : std::exchange(stale_waiting_, {})) {
      DropWaitingLocked(target);
      mirror_ended_.erase(target);
    }
    commit = CommitLocked(updates, clock_.TimeNow());
  }
  WriteInTurn(commit);
  Notify(commit, updates);
}

std::vector<WaitingClaims> DecisionTable::Waiting() const {
  absl::MutexLock lock(&mu_);
  std::vector<WaitingClaims> out;
  for (const auto& [target, claims] : covered_) {
    auto a = active_.find(target);
    if (a == active_.end()) continue;
    WaitingClaims* w = nullptr;
    for (const Claim& c : claims) {
      if (c.origin == palisade::v1::ORIGIN_FEED) continue;
      if (w == nullptr) {
        w = &out.emplace_back();
        w->target = target;
        w->decision_id = a->second.id;
      }
      w->claims.push_back({target, w->decision_id, c.origin, c.action, c.actuator, c.dry_run,
                           c.expiry, c.rule_id, c.reason, c.offence});
    }
  }
  return out;
}

size_t DecisionTable::active_count() const {
  return active_size_.load(std::memory_order_relaxed);
}

size_t DecisionTable::active_bytes() const {
  absl::MutexLock lock(&mu_);
  return active_bytes_;
}

DecisionTableLimits DecisionTable::limits() const {
  absl::MutexLock lock(&mu_);
  return limits_;
}

}  // namespace palisade
