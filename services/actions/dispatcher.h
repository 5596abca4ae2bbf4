// The dispatcher: the only way a decision reaches the edge. It listens to the DecisionTable,
// turns each change into ActionOps (created → apply; expired or withdrawn → remove what the
// apply made), queues them per actuator, and a worker runs them: transient failures are retried
// with exponential backoff (bounded attempts; a token revocation's are not bounded, its backoff
// capped at max_backoff, since nothing else would revoke the token: a fingerprint's secret stays
// in memory with its op until a definite outcome, and after a restart, the secret lost, the
// revocation fails for good with a failure record naming the decision, until the token is seen
// again with its secret: see below), permanent ones are counted and logged, and a removal for a
// decision whose apply has not gone out yet (queued, held, or taken with a batch but not sent)
// cancels both.
// Cloudflare refusing palisaded's own credentials (IsCredentialError: 401, 403) is neither: the
// op keeps its row in the outbox and its attempts, and the actuator's queue waits (1 s, doubling
// up to max_backoff; one op tried per wait) until an op goes through, CredentialsRestored is
// called (the credentials check found the permission again) or palisaded restarts.
// An apply that failed for good (a permanent error about the decision: invalid, a plan's
// quota, the list's cap; or refused by the guard's never-ban set or own-token check) is
// remembered with the decision's expiry (FailedForGood), so the reconciler
// does not take the decision as missing and apply it again on every run; a decision that
// changed since (extended: a new expiry) may be tried once more, and one refused only as
// never-ban is applied again when a reload's set (SetNeverBan) no longer protects its target.
// A fingerprint's revocation that failed for want of its secret (lost with a restart) is
// applied again, durably, when an extension brings the secret (the token seen again:
// DecisionUpdate::secret), and a queued or held apply without it gets it. The memory goes when
// the decision ends or an apply of it succeeds. With a store it is kept in the edges table, as
// a row whose container is kFailedContainer and whose id is the expiry it failed with, so it
// survives a restart with the edge records; it names no object, and is never counted or
// removed as one.
//
// With a Store (SetStore), the queue is the durable outbox: every operation was recorded with
// its decision, and is deleted only once the edge confirmed it (see services/store/store.h).
// Each confirmed operation is recorded as soon as the edge confirms it (not when its whole batch
// ends), so a daemon killed again and again still moves forward. The operations of an actuator
// the credentials check left out (ParkActuator) stay in the outbox for the start that adds it.
// Order: ops run in the order they were queued (a retried op goes to the back); for an actuator
// that adopts existing objects (AccessRule), an apply waits while a remove of the same target
// for another decision is queued (a retried one included), so it never adopts an object that
// remove is about to delete. After a restart, such an actuator's apply followed in the outbox by
// its own decision's remove is dropped: the remove alone runs (it finds any object the apply
// made by the decision's marker). And any actuator's apply of a decision that has ended, with
// no remove of it after it in the outbox, is cancelled (an apply the table wrote late, after a
// store outage, behind a remove that has completed).
// Across queues, the remove of a decision the table withdrew for a stronger one of another
// actuator (a block in the IP list replacing a challenge's access rule; the withdrawn decision
// names it: Decision.replaced_by) waits until that decision's apply has reached the edge, or
// that decision has ended: a replacement held by the guard, or failing for good (the list
// full), leaves the challenge standing until it ends, not the target bare (both standing for a
// moment is harmless; the challenge is what the table last had there). The wait starts with
// the withdrawal itself, before the creation is heard. A remove after an expiry or an
// operator's withdrawal names no replacement and never waits. A replacement cancelled before it
// went out (queued or held), itself replaced by the table, hands over: the next replacement
// takes over from the decision still standing (not charged) and that decision's remove waits
// for it (a chain of replacements never leaves the target bare). A replacement withdrawn for
// another while its apply is in flight keeps the remove waiting until that apply settles:
// landed, the remove goes; not (failed, or cancelled at its turn), the remove waits for the
// decision that replaced it, when that one was heard by then in another started queue than the
// remove's and has not ended (settled as it is heard: successor_heard_), and goes otherwise;
// that one withdrawn in turn while its own apply is in flight passes the wait on the same way.
// After a restart the wait is known again while the replacement's apply is in the outbox and
// its decision stands; not for one whose apply failed for good (its row gone, the restart
// cannot tell that it stands): that remove runs. A hand-over is known again too: a remove
// whose replacement has no row left follows it to the standing apply that names it
// (Decision.replaces) on its target, which takes over; through a chain of cancelled replacements,
// by the stored decisions' replaced_by (see Restore).
// Pause / Resume let the reconciler compare the edge with the decisions while nothing changes
// the edge: ops are still queued, none starts.
// Dry run (cloudflare.dry_run, or the decision's rule in shadow mode): an op is recorded and
// counted as "dry_run", and nothing is sent; it spends none of the guard's budget, and what it
// "made" (kDryRunObject) counts toward no cap. One exception: the remove of an object really at
// the edge (made before a switch to global dry run) goes out, since it only lessens enforcement
// and nothing else would take the object down (no reconciler runs in dry run).
// Thread-safety: OnDecision is called from any thread; each actuator's queue is run by one
// worker thread (Start), or by RunOnce from one thread at a time in tests.
#ifndef PALISADE_SERVICES_ACTIONS_DISPATCHER_H_
#define PALISADE_SERVICES_ACTIONS_DISPATCHER_H_

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "services/actions/actuator.h"
#include "services/actions/guard.h"
#include "services/common/clock.h"
#include "services/decisions/decision_table.h"
#include "services/store/store.h"

namespace palisade {

struct DispatcherOptions {
  // How long the worker waits for new work before it looks again (it also wakes on new work).
  absl::Duration flush_interval = absl::Seconds(1);
  bool dry_run = false;
  int max_attempts = 10;
  absl::Duration initial_backoff = absl::Seconds(1);
  absl::Duration max_backoff = absl::Minutes(5);
};

// What became of one edge operation, for the event stream.
struct ActionOutcome {
  std::string outcome;  // applied, dry_run, failed, retried, held, refused, cancelled
  palisade::v1::Actuator actuator = palisade::v1::ACTUATOR_UNSPECIFIED;
  std::string operation;  // apply, remove
  palisade::v1::Decision decision;
  int attempt = 0;
  std::string detail;  // the error, for failed / retried / refused
  // Set when the outcome is also an alert for an operator: "own_token_misuse" (a revocation of
  // palisaded's own token, refused by the guard: alerted on, never sent).
  std::string alert;
};

class Dispatcher {
 public:
  // Called with every outcome, under the dispatcher's lock: it must not block or call back.
  using Observer = std::function<void(const ActionOutcome&)>;
  void SetObserver(Observer observer);

  Dispatcher(Clock& clock, DispatcherOptions options, prometheus::Registry& registry);
  ~Dispatcher();

  void AddActuator(palisade::v1::Actuator kind, std::unique_ptr<Actuator> actuator);
  // A configured actuator that is not started: the credentials check found the token unable to
  // drive it (`name`: its Actuator::name). Its operations are kept in the outbox, not queued
  // (logged once); the next start that adds the actuator runs them (Restore). Those of a kind
  // neither added nor parked (ACTUATOR_NONE; Cloudflare not configured) leave the outbox.
  void ParkActuator(palisade::v1::Actuator kind, const std::string& name);
  // Checked before every apply (see guard.h). Without one, nothing is held or refused here. The
  // per-minute budget counts targets newly restricted: a decision's apply spends it once, on
  // its first pass: its retries, and a repair (Reapply) after its retries ran out or its object
  // went missing, are the same ban. One that sends nothing (dry run) spends none, nor one that
  // the table made to replace a decision (Decision.replaces: a block replacing a challenge)
  // whose object stands at the edge, or whose apply is in flight and sent (charged already),
  // on the same target, when the replacement is heard (ActionOp::replaces), nor one naming a
  // replacement cancelled before it went out that took over from such a decision (handed
  // over); a replacement of one that never reached the edge (held, cancelled, dry run, local
  // only) is a new restriction and spends it, as any creation that names none (one after an
  // expiry or an operator's withdrawal).
  void SetGuard(std::unique_ptr<Guard> guard);
  // A reload changed the allowlist: the guard, and every actuator sharing its set (the IP list,
  // the reconciler's copy of it; see SharedNeverBan), judge by `never_ban` from now on. Swapped
  // under the lock, so no apply is judged by a mix of the two. The applies the guard refused as
  // never-ban (since this process started) whose targets the new set leaves free are queued
  // again, durably with a store: they were refused for the set, not for themselves. Without a
  // guard, nothing.
  void SetNeverBan(CidrSet never_ban);
  // Makes the queue durable: completions, retries and drops are written to `store`.
  void SetStore(Store* store);
  // After a restart: loads what is at the edge and the operations still to do.
  absl::Status Restore();

  // Moves up to `max` held applies (oldest first) back to the queue, past the blast-radius
  // limit (the never-ban set still applies). Returns how many.
  int ReleaseHeld(int max);
  size_t held() const;
  // The DecisionTable listener.
  void OnDecision(const DecisionUpdate& update);

  // Runs every op that is due, once. Returns the number of ops run.
  int RunOnce();
  // Starts one worker thread per actuator.
  void Start();
  void Stop();

  size_t pending() const;
  // Applies whose queueing time is kept for the latency histogram (tests: it must not outlive
  // the applies).
  size_t latency_tracked() const;
  // True while an operation for the decision is queued, held or in flight.
  bool Busy(const std::string& decision_id) const;
  // Every decision with an operation queued, held or in flight, by id (for an op in flight, only
  // its id is filled in: none is in flight while paused).
  std::map<std::string, palisade::v1::Decision> BusyDecisions() const;

  // No operation starts until the matching Resume; returns once those running have settled.
  // Pauses nest. While paused, the edge changes only by the caller's (or a human's) hand.
  void Pause();
  void Resume();
  // Pause for the lifetime of the object.
  class Paused {
   public:
    explicit Paused(Dispatcher& d) : d_(d) { d_.Pause(); }
    ~Paused() { d_.Resume(); }
    Paused(const Paused&) = delete;
    Paused& operator=(const Paused&) = delete;

   private:
    Dispatcher& d_;
  };
  // The reconciler found the decision's object missing at the edge: forget the old edge record
  // and apply again (durably, when there is a store).
  void Reapply(const palisade::v1::Decision& decision);
  // The reconciler removed an orphan, or found an object gone: forget the edge record, and tell
  // its actuator (Actuator::Forget). Call it with the dispatcher paused, as the reconciler does.
  void ForgetEdge(const std::string& decision_id);
  // The reconciler read the account's IP lists: the IP list actuator takes their counts
  // (Actuator::ListsRead), so the gauge of the account's items is as fresh as the last run.
  // Call it with the dispatcher paused, as the reconciler does.
  void ListsRead(const std::vector<IpList>& lists);
  // What Palisade made at the edge, by decision id.
  std::map<std::string, EdgeRef> edges() const;

  // The credentials check found the token able to drive `actuator` again (an Actuator::name;
  // empty: every actuator): its queue, waiting after Cloudflare refused palisaded's
  // credentials, goes out now instead of at the end of the wait.
  void CredentialsRestored(const std::string& actuator);

  // The edge record's container that marks a failure record, not an object (see above).
  static constexpr char kFailedContainer[] = "(failed for good)";
  // The edge record's container that marks a hand-over, not an object: the decision's apply,
  // still to do, takes over (not charged: ActionOp::replaces) from the decision the record's id
  // names, whose remove has completed before it (in the same queue: RemoveBarrier). Written as
  // that remove completes, since nothing the store keeps says it after: a restart charged the
  // apply as a new restriction (held, the target bare). Replaced by the apply's own record (an
  // object or a failure), deleted when its decision ends, or by Restore when no apply is left.
  static constexpr char kTakesOverContainer[] = "(takes over)";
  // The edge record's id of what an op made in dry run: no object.
  static constexpr char kDryRunObject[] = "dry-run";
  // The version of a decision a failure record is for: its expiry, which an extension moves.
  static std::string FailureVersion(const palisade::v1::Decision& decision);
  // The decisions whose apply failed for good: decision id -> FailureVersion when it failed.
  std::map<std::string, std::string> FailedForGood() const;

 private:
  struct Queue {
    std::unique_ptr<Actuator> actuator;
    std::deque<ActionOp> ops;
    prometheus::Gauge* pending = nullptr;
  };
  // An actuator configured but not started (ParkActuator).
  struct Parked {
    std::string name;
    bool logged = false;  // that its operations are kept
  };
  int RunQueue(int kind);
  // Is an op of queue `kind` due and free to go (not waiting behind a remove, nor for the apply
  // of the decision that replaced it)?
  bool HasDue(int kind, absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Does `op` (a remove) wait for the apply of the decision that replaced it (awaited_)?
  bool AwaitsSuccessor(const ActionOp& op) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return op.kind == ActionOp::Kind::kRemove && !op.decision.replaced_by().empty() &&
           awaited_.count(op.decision.replaced_by()) > 0;
  }
  // Is queue `kind` waiting after a refusal of palisaded's credentials?
  bool WaitsForCredentials(int kind, absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Idle() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ == 0; }
  // Takes the due ops of queue `kind` out (guard checks, order rules); marks applies in flight.
  // An apply whose decision ended while it was in flight, put back unsent, is cancelled
  // (CancelEndedApply) before any check: a backstop, RunQueue cancelling it as it puts it back.
  std::vector<ActionOp> TakeDue(int kind, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records what became of `ops` (just run): store, edges, metrics, retries.
  // `secretless`: the fingerprint revocations among `ops` that went out without their secret.
  // `unsent`: the ops among `ops` that dry run kept from the edge (see Sends).
  void Settle(int kind, Actuator& actuator, std::vector<ActionOp*>& ops,
              const std::set<const ActionOp*>& secretless,
              const std::set<const ActionOp*>& unsent) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // False when dry run (global or the decision's) keeps `op` from the edge: any op but the
  // remove of a real object (see the header comment).
  bool Sends(const ActionOp& op) const;
  void Count(const std::string& actuator, ActionOp::Kind kind, const std::string& result);
  // Counts and tells the observer (`alert`: see ActionOutcome::alert).
  void Report(palisade::v1::Actuator kind, const std::string& actuator, const ActionOp& op,
              const std::string& result, absl::string_view detail = "",
              absl::string_view alert = "");
  void Drop(int64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Once per parked actuator: says that its operations are kept.
  void LogParked(Parked& parked) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // An apply that did not reach the edge, whose decision ended meanwhile (a remove waits behind
  // it, remove_after_): both leave the outbox, reported cancelled. False, nothing done, for any
  // other op.
  bool CancelEndedApply(palisade::v1::Actuator kind, const std::string& actuator,
                        const ActionOp& op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The apply of `id`, a replacement withdrawn while in flight, settled without reaching the
  // edge: the remove waiting for it (awaited_) waits for its successor_heard_ instead, or goes
  // now when there is none.
  void PassOnWait(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The only writers of edges_ (and so of active_, which counts no kDryRunObject). `target`:
  // the decision's TargetKey, empty when unknown (restored).
  void RememberEdge(const std::string& id, int kind, const EdgeRef& ref, const std::string& target)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ForgetEdgeLocked(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // An apply ended for good without reaching the edge: drops its outbox operation and keeps a
  // failure record in its place (durably, with a store). `lacked_secret`: a fingerprint's
  // revocation that went out without its secret (see retry_with_secret_).
  void RememberFailure(int kind, const ActionOp& op, bool lacked_secret = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets a failure record, in memory and in the store (the decision ended, or is applied
  // again). Returns false when there was none.
  bool ForgetFailure(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The remove of `removed`'s object is about to complete: each apply still to do (queued or
  // held) that takes over on its target (ActionOp::replaces) from a decision that will have no
  // object at the edge gets a hand-over record (kTakesOverContainer), before the remove's.
  void RecordTakeOvers(const palisade::v1::Decision& removed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Clock& clock_;
  const DispatcherOptions options_;
  mutable absl::Mutex mu_;
  absl::CondVar wake_;
  std::map<int, Queue> queues_ ABSL_GUARDED_BY(mu_);  // by palisade.v1.Actuator
  // What is at the edge, by decision id, and (kept with it) how many objects per actuator.
  struct Made {
    int kind;
    EdgeRef ref;
    // Its decision's target (TargetKey): a replacement (Decision.replaces) takes over only from
    // a decision on its own target. Empty for an edge record restored from the store until an
    // outbox row of its decision is restored, or its end heard (Restore, OnDecision; a parked
    // actuator's too): the edge rows keep no target.
    std::string target;
  };
  std::map<std::string, Made> edges_ ABSL_GUARDED_BY(mu_);
  // Per queue, after Cloudflare refused palisaded's credentials (IsCredentialError): nothing of
  // the queue goes out before `until`; `strikes` refusals in a row double the wait up to
  // max_backoff. Memory only: a restart, having checked the credentials, tries at once.
  struct CredentialWait {
    absl::Time until = absl::InfinitePast();
    int strikes = 0;
  };
  std::map<int, CredentialWait> credential_wait_ ABSL_GUARDED_BY(mu_);
  // Decisions whose apply failed for good: id -> FailureVersion. Never in edges_.
  std::map<std::string, std::string> failed_ ABSL_GUARDED_BY(mu_);
  // The failure records (ids in failed_) that a fingerprint's secret may put right: the apply
  // went out without it, or the record was restored from the store (the secret gone with the
  // process). An extension bringing the secret applies those again; not one that failed with
  // its secret (an IP-restricted token, palisaded's own), at each sighting of the token.
  std::set<std::string> retry_with_secret_ ABSL_GUARDED_BY(mu_);
  // The failure records (ids in failed_) that the guard's never-ban set made, with the actuator
  // and decision: SetNeverBan applies again those its new set leaves free. Memory only: after a
  // restart they are failure records like the others (tried again when their decision changes).
  struct NeverBanRefusal {
    int kind;
    palisade::v1::Decision decision;
  };
  std::map<std::string, NeverBanRefusal> refused_never_ban_ ABSL_GUARDED_BY(mu_);
  // Actuators configured but not started (ParkActuator), by palisade.v1.Actuator.
  std::map<int, Parked> parked_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> in_flight_ ABSL_GUARDED_BY(mu_);              // decision ids being applied
  // Decisions whose apply the guard has counted toward the per-minute budget (checked, or
  // recorded on release): a repair of one (Reapply) is the same ban and spends nothing; it
  // spent a second slot, and an API incident's repairs came back as a burst past the limit.
  // An id goes when its decision ends: at most the active decisions. Memory only, as the
  // guard's own count.
  std::set<std::string> counted_ ABSL_GUARDED_BY(mu_);
  // The remove of a decision withdrawn while its apply was in flight, made once the apply
  // settles: its outbox row, and the decision that replaced it (Decision.replaced_by).
  struct RemoveAfter {
    int64_t seq = 0;
    std::string replaced_by;
    int kind = 0;        // the queue the remove goes to (the apply's)
    std::string target;  // its decision's TargetKey (see Made::target)
    // The apply goes out to the edge (not dry run): a replacement of it restricts no new
    // target. One that sends nothing was never charged, and its replacement is.
    bool sent = false;
  };
  std::map<std::string, RemoveAfter> remove_after_ ABSL_GUARDED_BY(mu_);  // by decision id
  // A replacement cancelled before it went out (queued or held), itself replaced by the table
  // (Decision.replaced_by), by id -> the decision it replaced, which still stands: the next
  // replacement, naming the cancelled one (Decision.replaces), takes over from that one. Gone
  // when that replacement is heard: at most one per change set of the table.
  std::map<std::string, std::string> handed_over_ ABSL_GUARDED_BY(mu_);
  // Replacing decisions (a withdrawn decision's Decision.replaced_by) whose apply has not
  // reached the edge, by id -> the actuator of the replaced decision's remove, which waits
  // (AwaitsSuccessor; an index by the awaited id: no queue is scanned). Added when that
  // decision is withdrawn with an object at the edge (or its apply in flight); gone when the
  // replacement is heard in the same queue or an actuator not started, reaches the edge
  // (RememberEdge), or ends (cancelled before it went out and replaced in turn, it hands the
  // wait over to its own replacement: handed_over_; withdrawn for another while its apply is
  // in flight, once that apply settles without landing: PassOnWait): at most one per active
  // decision. An apply failing for good keeps its id until its decision ends. Rebuilt by
  // Restore from the outbox.
  std::map<std::string, int> awaited_ ABSL_GUARDED_BY(mu_);
  // A replacement withdrawn while its apply is in flight (remove_after_), whose replaced
  // decision's remove waits for it (awaited_), by id -> the decision that replaced it in turn,
  // heard created (naming it, directly or through handed_over_) in a started queue, and that
  // queue: the remove waits for that one if the apply does not land (PassOnWait), unless it is
  // the remove's own queue, where the successor's apply waits behind the remove (RemoveBarrier):
  // the remove goes then. Recorded whatever the queue: the entry is passed on to the removes
  // that `id` took over (PassOnWait), each checking the queue against its own. Settled when the
  // successor is heard, not when the apply settles: one ended or never heard would never
  // release the remove. Gone when the apply settles, the successor lands (RememberEdge,
  // which releases the remove at once) or ends; not when the successor is withdrawn for
  // another while its own apply is in flight: its apply settling without landing passes the
  // entry on to its own successor, or ends it (PassOnWait). At most one per apply in flight.
  // Memory only.
  struct Successor {
    std::string id;
    int kind = 0;  // the queue of its apply (PassOnWait checks it against the remove's)
  };
  std::map<std::string, Successor> successor_heard_ ABSL_GUARDED_BY(mu_);
  // Decisions with a hand-over record in the store (kTakesOverContainer) not yet replaced by
  // their apply's own record: their end deletes it. At most one per apply queued or held.
  std::set<std::string> takes_over_rows_ ABSL_GUARDED_BY(mu_);
  Store* store_ ABSL_GUARDED_BY(mu_) = nullptr;
  // When each apply was queued, for the latency histogram. An entry lives exactly as long as
  // its apply: erased when it settles, fails, is refused or is cancelled (queued or held), so
  // the map never holds more than the queues, the held list and the ops in flight.
  std::map<std::string, absl::Time> queued_at_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Guard> guard_ ABSL_GUARDED_BY(mu_);
  Observer observer_ ABSL_GUARDED_BY(mu_);
  std::deque<std::pair<int, ActionOp>> held_ ABSL_GUARDED_BY(mu_);  // (actuator kind, op)
  std::map<int, int> active_ ABSL_GUARDED_BY(mu_);  // objects in edges_, per actuator
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int paused_ ABSL_GUARDED_BY(mu_) = 0;   // nested Pause calls
  int running_ ABSL_GUARDED_BY(mu_) = 0;  // RunQueue calls between TakeDue and their last Settle
  std::vector<std::thread> workers_;

  prometheus::Family<prometheus::Counter>& actions_;
  prometheus::Family<prometheus::Gauge>& pending_family_;
  prometheus::Histogram& latency_;
  prometheus::Family<prometheus::Counter>& guard_refused_;
  prometheus::Gauge& held_gauge_;
  prometheus::Counter& own_token_misuse_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_ACTIONS_DISPATCHER_H_
