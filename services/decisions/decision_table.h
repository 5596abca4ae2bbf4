// The decision table: turns detections (and manual bans) into decisions, and owns their life
// cycle: creation, extension, escalation, expiry, withdrawal. With a Store (SetStore), every
// change is written, with the outbox operation it implies, before any listener hears of it.
//
// Rules of the table:
//  - one active decision per target: a new detection or manual ban on an actively decided
//    target extends its expiry instead of creating a duplicate;
//  - a different claim on a decided target (another origin, actuator, action or dry run) never
//    weakens it: the active decision is the strongest claim, by enforcement (at the edge > dry
//    run > local only), then the operator's word (a manual decision over any rule or feed
//    claim), then the action (block > challenge > managed challenge > rate limit: a block on a
//    challenged address takes over at once), then precedence (rule > feed). A stronger claim
//    replaces the decision (withdrawn, then the new one created, so the edge ends right); a
//    weaker one waits behind it and is decided when it ends (expiry, a feed dropping the
//    entry), if still due. An operator's withdrawal also ends the waiting rule and manual
//    claims. The waiting rule and manual claims are stored with the change set that changed
//    them and restored at start (a feed's come back with its first sync), only behind the
//    decision they waited behind, and count in the active budget (max_active_bytes) with it.
//    In a cluster they go with the decision log (ClaimsSetListener, MirrorWaiting): a mirror
//    holds the writer's, and drops them when the writer ends that decision (the writer decides
//    what follows; a mirror's own sweep decides nothing, until it writes after a take-over);
//    a waiting extension is written only once its expiry moved on by a tenth of what is left
//    (or a minute), or its offence rose, so a restart may bring a claim back that much shorter
//    (and a rule claim with the rule or reason written with it: only the operator's reason is
//    written when it changes);
//  - the escalation memory runs from the offender's last offence (an extension counts);
//  - a new decision on a target that offended before, within the escalation memory, lasts
//    duration * factor^(offences - 1), capped at max_duration; a rule or manual decision that
//    replaces a feed decision is such a new offence (a feed listing itself is none), and so is
//    a weaker one that begins to wait behind a feed decision: escalated from the offender's
//    count, decided at that offence when the listing ends. One episode behind a feed decision
//    is one offence: while a rule or manual claim is still due behind it, another rule or
//    manual claim there (of any kind, waiting or replacing it) goes on at that offence;
//  - an offender has one count, whichever rules counted it: a rule whose own memory has run
//    out since the last offence starts at offence 1, but the count is never lowered while a
//    longer memory still counts it (Offences::counted_until), so that rule escalates from it.
//    A count restored from the store (OffenceRow::counted_until) or mirrored from a cluster
//    writer (Decision.offence_counted_until, and the last offence it runs from,
//    Decision.offence_last) keeps until when it stands, so a restart or a take-over escalates
//    as without one. One that does not say (a row or a decision written
//    before either existed) stands only while the applying rule's own memory covers the last
//    offence (a rule may then escalate less than it would have, never more);
//  - a decision past its expiry that no sweep (ExpireDue) has ended yet is ended, as the sweep
//    would, when a claim on its target comes: the claim is not an extension of it (but a feed
//    decision that its feed still lists is renewed, not re-created);
//  - decisions start at the detection's event time, so a replayed log yields the decisions it
//    would have yielded live; one whose expiry is already past on the clock is not created
//    (counted as stale), as fail2ban ignores lines older than its find time.
//
// Memory is bounded in bytes (DecisionTableLimits): a rule's new decision is refused, and
// counted, while the active decisions hold max_active_bytes (one per decided target, with up
// to max_evidence lines each); an ended decision (expired, withdrawn) stays for Get and List
// for a retention period, under a count and a byte cap (the store keeps it); an offender's
// history stays until its escalation memory runs out, under a count cap. What is forgotten
// early is counted (palisade_decisions_forgotten_total).
//
// Thread-safety: all methods are thread-safe. Changes are made under the table's lock; a change
// set's store write runs after it, outside the lock (another stream's batch is decided
// meanwhile), the writes one at a time in the order of the changes; then the listeners hear it.
// A changing method returns once its changes are committed (an ingest batch is acknowledged
// after its decisions are in the store), but Get and List may show a change for the time of its
// commit (~0.5 ms for an ingest batch) before it is durable. When the store refuses a write (a
// full disk, an I/O error) the changes stand and are enforced, counted in
// palisade_store_write_failures_total, and wait in memory (palisade_store_changes_unwritten, at
// most 64 MiB) to be written, in their order and before any later change, by the next write
// or sweep that finds the store taking them: enforcement does not stop with the disk, and
// durability catches up.
#ifndef PALISADE_SERVICES_DECISIONS_DECISION_TABLE_H_
#define PALISADE_SERVICES_DECISIONS_DECISION_TABLE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "palisade/v1/palisade.pb.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/common/clock.h"
#include "services/common/ip.h"
#include "services/engine/engine.h"
#include "services/store/store.h"

namespace palisade {

// kForwarded: a detection a cluster node that is not the edge writer handed to the writer
// (SetForward); it changed nothing here and no listener hears it. kRefused: a rule's new
// decision not made because the active decisions hold DecisionTableLimits::max_active_bytes;
// like kStale, nothing was decided (no id, not stored, no edge operation).
enum class DecisionChange {
  kCreated,
  kExtended,
  kExpired,
  kWithdrawn,
  kStale,
  kForwarded,
  kRefused
};

absl::string_view DecisionChangeName(DecisionChange c);

struct DecisionUpdate {
  DecisionChange change;
  palisade::v1::Decision decision;
  // Token revocations only, on kCreated and on kExtended of a token-fingerprint decision: the
  // leaked token, which the actuator needs to learn the token's id (an extension brings it back
  // to a revocation a restart left without it). Never stored in the table.
  std::string secret;
  // The durable outbox operation recorded with this change (0: none, or no store).
  int64_t outbox_seq = 0;
};

struct DecisionFilter {
  std::string target;
  std::string rule_id;
  palisade::v1::Origin origin = palisade::v1::ORIGIN_UNSPECIFIED;
  bool active_only = false;
};

// What the table keeps in memory. Hostile logs can make decisions and offenders by the
// thousand; each bound below is counted when it bites.
struct DecisionTableLimits {
  // Active decisions, in bytes (each counted as its serialized size, evidence included, plus
  // kActiveOverhead for the table's own entries). Past 7/8 of it a rule's new decision on an
  // address, range or path is refused (kRefused); past all of it, a token revocation's too.
  // Extensions, a stronger claim replacing a decision, and manual and feed decisions are
  // always made: an operator's word and the feeds (at most FeedManagerOptions::
  // edge_max_entries) are bounded elsewhere, and refusing an extension would let a banned
  // address go free. The default holds ~120,000 decisions with a full 2 KiB evidence ring
  // (tests/bench/memory_bench), more than a zone's IP access rules or an account's list items.
  size_t max_active_bytes = size_t{512} << 20;
  // How long an ended decision (expired or withdrawn) is kept for Get and List. The store keeps
  // it for good; an operator asking about yesterday's bans still finds them here.
  absl::Duration inactive_retention = absl::Hours(24);
  // At most this many ended decisions, and this many bytes of them (evidence lines make a
  // decision up to tens of KiB), in memory: past either, the one that ended first goes first.
  size_t max_inactive = 50'000;
  size_t max_inactive_bytes = size_t{64} << 20;
  // Offenders remembered for escalation. One is forgotten when its escalation memory has run
  // out (it would start over at offence 1 anyway); past the cap, the one whose memory ends
  // first is forgotten early (its next offence escalates less).
  size_t max_offenders = 200'000;
  // IPv6 folding. One attacker holds a whole /64 and takes a new address for each request: a
  // decision per address filled the budget above, the guard's bans a minute and the edge's
  // rules, and missed its next address anyway. A rule's new decision on an IPv6 address whose
  // /ipv6_fold_prefix already holds ipv6_fold_addresses - 1 active rule decisions on addresses
  // is made on that range instead (TARGET_KIND_RANGE, same rule, spec and escalation, the
  // range's own offences), and while the range's decision is active a rule's detection on any
  // address inside it extends it (or waits behind it, as on any decided target). The address
  // decisions made before stay until they end. Never a range that touches the never-ban set
  // (SetNeverFold: the guard's; NonPublicRanges() always: TouchesNeverBan), and never for an
  // address that embeds an IPv4 one (NAT64, Teredo: EmbeddedIpv4), which is one host's, but
  // for 6to4 (Is6to4): its IPv4 host holds the whole 2002:WWXX:YYZZ::/48, into which its
  // addresses fold whatever the prefix (the range the engine's range window decides, too).
  // 0: never folded. Prefix: 48 or 64 (what Cloudflare's IP access rules take).
  uint32_t ipv6_fold_addresses = 4;
  int ipv6_fold_prefix = 64;
  // Changes the store refused, waiting in memory to be written (decision changes and the
  // waiting-claim snapshots of their targets), in bytes: past it the snapshots of targets with
  // no active decision are dropped first (their rows can never be restored), then the other
  // snapshots (a restart loses those waiting claims, or brings back their last written state),
  // then the oldest decision changes (the last two counted in palisade_store_changes_lost_total):
  // a snapshot lost costs waiting claims, a change lost decisions and their edge operations.
  size_t max_unwritten_bytes = size_t{64} << 20;
};

// One page of List: the decisions, and the token of the next page ("" when this is the last).
struct DecisionPage {
  std::vector<palisade::v1::Decision> decisions;
  std::string next_page_token;
};

class DecisionTable {
 public:
  // Called, outside the table's lock, for every change (the actuators and Watch subscribe).
  // Listeners hear the changes in the order the table made them, one call at a time: a
  // decision's creation always before its extension, expiry or withdrawal. A listener must not
  // call back into the table's changing methods (it would wait for its own turn).
  using Listener = std::function<void(const DecisionUpdate&)>;
  // Called, as a Listener, with a whole change set at once (never an empty one): for a listener
  // that must never show a set half made, such as a replaced decision's withdrawal without its
  // replacement on the same target (the bouncer API). The set listeners hear a set before the
  // per-update listeners hear any of it.
  using SetListener = std::function<void(const std::vector<DecisionUpdate>&)>;
  // Called, as a SetListener, with a change set and the rule and manual claims waiting behind
  // the targets whose claims it changed, as they now are (the snapshots a store writes with
  // it: each replaces the target's claims before it; decision_id "" and no claims: none wait).
  // The set is empty when only claims changed (a claim began to wait, or moved its expiry on);
  // never both. For the cluster's decision log: its mirrors keep the writer's waiting claims
  // (MirrorWaiting), so that a take-over decides them when the decision before them ends.
  using ClaimsSetListener = std::function<void(const std::vector<DecisionUpdate>&,
                                               const std::vector<WaitingClaims>&)>;

  DecisionTable(Clock& clock, uint32_t max_evidence = 5);

  // Replaces the default limits; with a registry, counts what they forget. Call before use.
  void SetLimits(const DecisionTableLimits& limits, prometheus::Registry* registry = nullptr);
  // The ranges IPv6 folding must not touch (DecisionTableLimits::ipv6_fold_addresses): the
  // guard's never-ban set, which would refuse the range at the edge and leave every address
  // in it free. palisaded sets it at start and when a reload changes the allowlist; decisions
  // already folded stay (the reload's WithdrawCovered ends those the allowlist covers).
  void SetNeverFold(CidrSet never_ban);

  // Returns the listener's id, for RemoveListener.
  uint64_t AddListener(Listener listener);
  uint64_t AddSetListener(SetListener listener);
  uint64_t AddClaimsSetListener(ClaimsSetListener listener);
  // After it returns, the listener is not running and is never called again (it waits for a
  // change set being heard). Not from inside a listener.
  void RemoveListener(uint64_t id);

  // While set, an extension's update (DecisionChange::kExtended, from Apply and ApplyAll)
  // carries the decision without its evidence lines; the table's own decision keeps them (Get,
  // List and the store see them). For a caller whose listeners and ApplyAll callbacks read no
  // evidence on extensions (palisaded outside a cluster): an extension then copies no evidence
  // line, which was most of the cost of deciding a detection. Default: unset.
  void SetLeanExtensions(bool lean);
  // While unset, the table's own decisions keep no evidence lines (Get, List, the store and the
  // updates of extensions, expiries and withdrawals see none: SetLeanExtensions is then moot);
  // the update of a created or stale decision still carries the lines its detection gave. For
  // replay, where nothing reads a stored decision's lines: each created decision's lines were
  // copied into the table only to be freed with it. Only before the first decision. Default: set.
  void SetKeepEvidence(bool keep);

  // Makes the table durable: every change is written to `store` (with the outbox operation it
  // implies for the actuators in `edge_actuators`) before listeners hear of it. New offenders
  // are numbered after the store's offence rows (their rows are never written over), Restore
  // or not.
  void SetStore(Store* store, std::set<palisade::v1::Actuator> edge_actuators);
  // Loads the active decisions, the rule and manual claims waiting behind them (the feeds' come
  // back with their first sync) and the offence history after a restart (each address's latest
  // offence row).
  absl::Status Restore();

  // Applies a detection under its rule's decision spec (action, duration, escalation,
  // actuator): creates, extends, or (when already expired) drops it as stale.
  DecisionUpdate Apply(const Detection& detection, const palisade::v1::DecisionSpec& spec);
  // The same for many detections (one ingest batch), written to the store in one transaction.
  // Each detection's spec is its rule's decision spec.
  // `before_notify`, when set, sees the updates (updates[i] for detections[i]) after they are
  // stored and before any listener hears of them: the event stream tells of a detection before
  // the decision it made.
  std::vector<DecisionUpdate> ApplyAll(
      const std::vector<Detection>& detections,
      const std::function<void(const std::vector<DecisionUpdate>&)>& before_notify = nullptr);
  // ApplyAll into `*updates` (resized to one per detection), whose elements are written over:
  // the messages and strings of a decision an earlier call left there are reused, so a caller
  // that keeps the vector (the pipeline, which replay has decide line by line) allocates nothing
  // to hear of an extension. The same updates, store writes and listeners as ApplyAll.
  void ApplyAllInto(
      const std::vector<Detection>& detections, std::vector<DecisionUpdate>* updates,
      const std::function<void(const std::vector<DecisionUpdate>&)>& before_notify = nullptr);

  // Cluster (issue 17): while set (a node that is not the edge writer, whose table mirrors the
  // writer's), ApplyAll decides nothing here: each detection goes to `forward` (which must not
  // block: it queues the detection for the writer) and its update says kForwarded, with the
  // target and rule id only; `before_notify` still sees them (the event stream tells of the
  // detection). A detection carrying a token secret is never forwarded (the secret stays on the
  // node): it is dropped as kStale. Unset (null): decided here.
  using Forward = std::function<void(const Detection&)>;
  // Once it returns, the forward function it replaced is not running (it waits for calls in
  // progress) and is never called again.
  void SetForward(Forward forward);

  // Threat-feed entries as decisions (origin feed): makes the active feed decisions exactly
  // `desired` (by target value). Missing ones are created under `spec`, those expiring before
  // `refresh_before` are extended, and active feed decisions not desired are withdrawn. A target
  // decided by a rule or by hand keeps that decision, the feed's claim waiting behind it, unless
  // the feed acts more strongly (that decision is dry run or local only). One store transaction.
  struct FeedTarget {
    palisade::v1::Target target;
    std::string reason;  // provenance: the feeds and their references
  };
  std::vector<DecisionUpdate> SyncFeed(const std::vector<FeedTarget>& desired,
                                       const palisade::v1::DecisionSpec& spec,
                                       absl::Time refresh_before);

  // A manual ban. kInvalidArgument when the target does not parse or the duration is not > 0.
  // A range of one address (a /32, a /128) is decided as that address (TARGET_KIND_IP): it
  // extends or replaces the address's decision instead of standing beside it.
  absl::StatusOr<palisade::v1::Decision> AddManual(const palisade::v1::AddDecisionRequest& req);

  // A manual unban. kNotFound for an unknown id; kFailedPrecondition when already inactive.
  absl::StatusOr<palisade::v1::Decision> Withdraw(absl::string_view id);

  // An allowlist reloaded (the engine's stops new detections only): withdraws the active rule
  // and feed decisions on an address or range `allowlist` covers (the address in it, or the
  // range overlapping it), and drops the rule and feed claims waiting behind any decision on
  // such a target. Manual decisions and claims stay: an operator's word outranks the
  // allowlist, as AddManual does not consult it either. One store transaction; returns the
  // withdrawals (and any waiting manual claim decided in place of one), heard by listeners.
  // A feed that still lists such a target would decide it again on its next sync: palisaded's
  // reload gives the feed manager the new never-ban set too (FeedManager::SetNeverBan). A mirror
  // (SetForward set) withdraws nothing: the writer's reload does, and the decision log brings it.
  std::vector<DecisionUpdate> WithdrawCovered(const CidrSet& allowlist);

  absl::StatusOr<palisade::v1::Decision> Get(absl::string_view id) const;
  std::vector<palisade::v1::Decision> List(const DecisionFilter& filter) const;
  // One page of List's order (start, then id): at most `page_size` decisions (at least 1) and,
  // past the first, no more than `max_bytes` of them, after the one `page_token` names ("": from
  // the start). A token stays valid while decisions come and go: the next page starts after
  // the last decision returned, wherever it now is. kInvalidArgument for a malformed token.
  absl::StatusOr<DecisionPage> ListPage(const DecisionFilter& filter, size_t page_size,
                                        absl::string_view page_token, size_t max_bytes) const;

  // Marks every active decision whose expiry is at or before the clock's now as expired, and
  // forgets the ended decisions and offenders past their retention. Writes first the changes
  // the store refused before, if it takes them now.
  std::vector<palisade::v1::Decision> ExpireDue();
  // Changes in force that the store refused and that wait to be written.
  size_t unwritten() const;

  // Cluster (issue 17): on a node that is not the edge writer, the table is a mirror of the
  // writer's, read from the decision log (services/cluster/decision_log.h), so the Decisions
  // API, Watch and the bouncer API serve the same decisions on every node.
  // Mirror sets decision `d` (by id) exactly as the writer sent it (precedence, escalation and
  // waiting claims were the writer's to work out), stores it (with no outbox operation unless
  // its actuator is in the edge actuators) and tells the listeners `change`. A copy equal to
  // the one held changes nothing. Another decision this table held active on the same target
  // ends (told as withdrawn): the writer's word stands.
  void Mirror(DecisionChange change, const palisade::v1::Decision& d);
  // A change set of the writer's (the log groups what one call of its table made: a replaced
  // decision's withdrawal and its replacement, say), each update set as by Mirror, in order, in
  // one store transaction and heard by the listeners in one call, as on the writer: a set
  // listener (the bouncer API) never sees the withdrawal without the replacement.
  void MirrorAll(const std::vector<DecisionUpdate>& set);
  // A full state of the writer's table: decisions held active here and absent from `state`
  // end (told as withdrawn), and each of `state` is set as by Mirror (told as created,
  // extended, expired or withdrawn by how it differs from the copy held; not told when equal).
  // `mark_stale`: the rule and manual claims waiting here are marked stale (the writer's follow
  // the state, one snapshot per target, then an end: MirrorWaiting, MirrorWaitingEnd). Not
  // dropped: a writer dying before its last snapshot would leave this table none; a target
  // whose claims emptied while its updates were lost (the log writer's queue overflowed) gets
  // no snapshot, and its claims go at the end.
  void MirrorState(const std::vector<palisade::v1::Decision>& state, bool mark_stale = false);
  // The writer's waiting claims (its ClaimsSetListener's snapshots, read from the decision log):
  // each replaces the rule and manual claims waiting on its target here, if they wait behind
  // the decision this table holds active there, or behind the one this table's own sweep ended
  // before the writer's did (kept for a take-over to decide); else they go: the writer's
  // decision on it comes with the log, and its own snapshot after it. Stored and charged to
  // the active budget as the writer's own claims, and heard by no listener (no decision
  // changed). A mirror does not decide them (ExpireDue ends a decision here without deciding
  // what follows: the writer's word comes with the log); once this table writes
  // (SetForward(nullptr), a take-over), it decides them as its own when the decision they wait
  // behind ends.
  void MirrorWaiting(const std::vector<WaitingClaims>& waiting);
  // The rule and manual claims waiting behind each active decision, a snapshot per target (as
  // a ClaimsSetListener hears them): for a full state of the decision log.
  std::vector<WaitingClaims> Waiting() const;
  // The writer's snapshots after its last full state ended: the claims still marked stale by
  // that state (no snapshot named their target since) go.
  void MirrorWaitingEnd();

  // As of the last change set (no lock: palisaded's gauge reads it on every decision change,
  // and the table's lock there made one stream's batch wait for another's decisions).
  size_t active_count() const;
  // The active decisions' bytes as DecisionTableLimits::max_active_bytes counts them.
  size_t active_bytes() const;
  // The limits in force (SetLimits).
  DecisionTableLimits limits() const;
  // A waiting-claim snapshot's bytes: a refused one's under max_unwritten_bytes, a decision
  // log view's under its cap (DecisionView).
  static size_t WaitingBytes(const WaitingClaims& w);
  // Decisions in memory, active or ended; offenders remembered (tests, memory accounting).
  size_t size() const;
  size_t offenders() const;
  // Entries in the expiry queue: one per active decision, whatever its extensions (tests).
  size_t expiry_entries() const;

 private:
  // (time, decision id or target) entries, ordered as std::pair orders them, and found by a
  // (time, string_view) without building a string.
  struct TimeThenName {
    using is_transparent = void;
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      if (a.first != b.first) return a.first < b.first;
      return absl::string_view(a.second) < absl::string_view(b.second);
    }
  };
  using TimeNameSet = std::set<std::pair<absl::Time, std::string>, TimeThenName>;
  // A target's active decision, and the time of its entry in by_expiry_.
  struct Active {
    std::string id;
    absl::Time queued;
    size_t bytes = 0;  // its share of active_bytes_, given back when it leaves active_
    // A rule's decision on an IPv6 address: counted in fold_counts_ under this range key.
    bool folds = false;
    uint64_t fold_key = 0;
    // The part of `bytes` that is the rule and manual claims waiting behind it (covered_:
    // ChargeClaimsLocked).
    size_t claim_bytes = 0;
  };
  // The IPv6 range a rule's new decision on `address` is made on instead (see
  // DecisionTableLimits::ipv6_fold_addresses), with the reason it carries when the range is
  // folded anew ("": its decision in force at `now` takes it); nullopt: the address.
  std::optional<std::pair<palisade::v1::Target, std::string>> FoldLocked(
      absl::string_view address, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The prefix IPv6 address `ip` folds into: ipv6_fold_prefix, or 48 for a 6to4 address.
  int FoldPrefixLocked(const IpAddress& ip) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The fold_counts_ key of IPv6 address `ip` (its first FoldPrefixLocked bits).
  uint64_t FoldKeyLocked(const IpAddress& ip) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A decision's bytes beyond its serialized size: its entries in by_id_, active_, by_expiry_
  // and offences_, the message's own objects, and the allocator's rounding. memory_bench's
  // decision flood measured 3,785 resident bytes a decision for 2,102 serialized.
  static constexpr size_t kActiveOverhead = 1'700;
  // Makes `d` its target's active decision (active_, by_expiry_, active_bytes_).
  void AddActiveLocked(const palisade::v1::Decision& d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `a`'s decision grew by `bytes` (evidence an extension added).
  void GrowActiveLocked(Active& a, size_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether a rule's new decision on a target of `kind` is refused (max_active_bytes); logs
  // when refusing starts and ends.
  bool OverActiveBudgetLocked(palisade::v1::TargetKind kind) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  struct Offences {
    uint32_t count = 0;
    absl::Time last;
    // When the escalation memory of every rule that counted it has run out: past it the entry
    // means nothing (the next offence is the first again) and is forgotten. For an entry
    // restored or mirrored whose rules' memories are not known, kRestoredMemory's guess.
    absl::Time forget_at = absl::InfinitePast();
    // When the memory of the rules known to have counted it runs out (here, or as a restored
    // row or a mirrored decision says; InfinitePast: none known, a count restored or mirrored
    // from before they said): until then the count is never lowered. Not forget_at, whose
    // 30-day guess kept a 7-day rule's count after a restart (offence 6 for 2). Stored with
    // the offence row, and carried by the decisions made or extended
    // (Decision.offence_counted_until, with `last` as Decision.offence_last).
    absl::Time counted_until = absl::InfinitePast();
    // The time of its entry in offences_by_forget_ (at or before forget_at; InfinitePast: none).
    absl::Time queued_at = absl::InfinitePast();
    // Its row in the store (OffenceRow::id): numbered when the entry is made, in that order.
    int64_t row = 0;
  };
  // The target's offences, created if needed; `memory` extends when they are forgotten, and
  // when `known` (a rule's own memory, not kRestoredMemory's guess) how long the count stands.
  Offences& OffencesLocked(const std::string& target, absl::Time last, absl::Duration memory,
                           bool known) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The same, `hash` being offences_'s hash of `target` (worked out once for several maps).
  Offences& OffencesLocked(const std::string& target, absl::Time last, absl::Duration memory,
                           bool known, size_t hash) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `d` has just ended (expired, withdrawn): it becomes forgettable.
  void EndedLocked(const palisade::v1::Decision& d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets the ended decisions and offenders past their retention (at `now`) or over the caps.
  void ForgetLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Restore's: whether stored claims on `target`, which holds no active decision, wait behind
  // `decision_id` as a mirror kept them when its own sweep ended it (mirror_ended_): if the
  // store holds that decision ended, it is loaded (for ExpireDue to reinstate after) and noted.
  // False if the store holds no such decision; the store's error if it cannot read it.
  absl::StatusOr<bool> RestoreMirrorEndedLocked(const std::string& target,
                                                const std::string& decision_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  DecisionUpdate ApplyLocked(const palisade::v1::Target& target,
                             const palisade::v1::DecisionSpec& spec, absl::Time start,
                             palisade::v1::Origin origin, absl::string_view rule_id,
                             const std::vector<std::string>& evidence, absl::string_view reason,
                             std::vector<DecisionUpdate>* replaced, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The same into `*out`, written over (its memory reused: see ApplyAllInto). `now`: the
  // clock's, read once for the change set.
  void ApplyLocked(const palisade::v1::Target& target, const palisade::v1::DecisionSpec& spec,
                   absl::Time start, palisade::v1::Origin origin, absl::string_view rule_id,
                   const std::vector<std::string>& evidence, absl::string_view reason,
                   std::vector<DecisionUpdate>* replaced, absl::Time now, DecisionUpdate* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A request to act on a target: what one decision would carry, and until when.
  struct Claim {
    palisade::v1::Origin origin;
    palisade::v1::Action action;
    palisade::v1::Actuator actuator;
    bool dry_run;
    absl::Time expiry;
    std::string rule_id;
    std::string reason;
    // The expiry last written to the store (InfinitePast: never): CoverLocked writes an
    // extension only once it has moved the expiry well past it.
    absl::Time stored = absl::InfinitePast();
    // The offence it counted when it began to wait behind a feed's decision (a listing is no
    // offence: ApplyLocked), decided with it; 0: the ended decision's (ReinstateLocked).
    uint32_t offence = 0;
  };
  // The least expiry move of a waiting claim that is written (CoverLocked).
  static constexpr absl::Duration kClaimWriteStep = absl::Minutes(1);
  static Claim ClaimOf(const palisade::v1::Decision& d);
  // Same origin, action, actuator and dry run: one claim, whatever its expiry.
  static bool SameKind(const Claim& a, const Claim& b);
  // A claim's rank: the greater one is the target's active decision, the others wait behind it.
  // In order: enforcement (edge > dry run > local only), the operator's word (manual > rule and
  // feed, whatever their action), the action's strength (block and token revocation >
  // challenge > managed challenge > rate limit), then the origin (rule > feed).
  using ClaimRank = std::tuple<int, int, int, int>;
  static ClaimRank Rank(const Claim& c);
  static ClaimRank Rank(palisade::v1::Origin origin, palisade::v1::Action action,
                        palisade::v1::Actuator actuator, bool dry_run);
  // Keeps `claim` waiting behind the target's active decision (merged with a like one).
  // A claim already over at `now` is dropped.
  void CoverLocked(const std::string& target, Claim claim, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A claim's bytes as the active budget counts them (the vector's element and its strings).
  static size_t ClaimBytes(const Claim& c);
  // Drops the rule and manual claims waiting on `target` (noted: ClaimsChangedLocked); the
  // feeds' stay.
  void DropWaitingLocked(const std::string& target) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `target`'s waiting rule or manual claims changed (covered_): charged to its active
  // decision and, with a store, written with the change set (CommitLocked).
  void ClaimsChangedLocked(absl::string_view target) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    claims_changed_.emplace(target);
  }
  // Charges `target`'s waiting rule and manual claims to its active decision's Active::bytes
  // (the active budget, DecisionTableLimits::max_active_bytes, counts them as the decisions
  // they may become; the feeds' are bounded by their own cap), in place of what it was
  // charged before.
  void ChargeClaimsLocked(const std::string& target) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `*d`'s fields for `claim` on `target` from `start`, its `offence` (no id, evidence or
  // active flag).
  static void FillClaim(const palisade::v1::Target& target, const Claim& claim, absl::Time start,
                        uint32_t offence, palisade::v1::Decision* d);
  // Makes `claim` the target's active decision, with `evidence` (AddEvidence), and `*out` the
  // update of its creation. The decision is built where the table keeps it (without its
  // evidence unless keep_evidence_) and copied field by field into `out` (CopyUpdateLocked),
  // which carries the evidence either way. It carries its offender's offence times
  // (Offences::counted_until and last); `follows`, when set, is the ended decision a waiting
  // claim follows (ReinstateLocked), whose times it carries if the offender was forgotten.
  void InstateLocked(const palisade::v1::Target& target, const Claim& claim, absl::Time start,
                     uint32_t offence, const std::vector<std::string>& evidence,
                     DecisionUpdate* out, const palisade::v1::Decision* follows = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `*out` becomes the update of `d`'s extension, carrying `d` or (SetLeanExtensions) `d`
  // without its evidence.
  void ExtensionLocked(const palisade::v1::Decision& d, DecisionUpdate* out) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `*out` becomes the update of `change` to `d`, carrying `d` (its evidence too unless
  // `evidence` is false), copied field by field into what `out` holds from an earlier use.
  void CopyUpdateLocked(const palisade::v1::Decision& d, DecisionChange change, bool evidence,
                        DecisionUpdate* out) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds `evidence` to `d`, up to max_evidence_ lines in all; returns the bytes added.
  size_t AddEvidence(const std::vector<std::string>& evidence, palisade::v1::Decision* d) const;
  // After `ended` ended: the strongest claim still due that waited behind it is decided.
  void ReinstateLocked(const palisade::v1::Decision& ended, std::vector<DecisionUpdate>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A new decision's id: 16 hex digits, the clock's second then a counter, so that ids sort in
  // the order they were made (within a table, while its clock does not step back; a restart
  // starts the counter anew, at random).
  std::string NewIdLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Mirror's work: sets `d`, and appends what listeners hear (`change`, or worked out when
  // unset) to `out`.
  void MirrorLocked(const palisade::v1::Decision& d, std::optional<DecisionChange> change,
                    std::vector<DecisionUpdate>* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends the decision held active under `id` here (mirroring), told as withdrawn.
  void EndMirroredLocked(const std::string& id, std::vector<DecisionUpdate>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  DecisionUpdate WithdrawLocked(palisade::v1::Decision& d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends active decision `d`, past its expiry, as expired (appended to `*out`), and decides the
  // strongest claim that waited behind it (ReinstateLocked). `d` may move (by_id_ can rehash).
  void ExpireLocked(palisade::v1::Decision& d, std::vector<DecisionUpdate>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes active decision `d` out of active_ and by_expiry_ (its entry found at its
  // Active::queued). A decision that is not its target's active one (a mirrored state can
  // disagree) leaves active_ as it is; its entry, if any, goes when ExpireDue reaches it.
  void EraseActiveLocked(const palisade::v1::Decision& d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A change set's store write, made ready under mu_ (CommitLocked) and done outside it
  // (WriteInTurn), and its turn with the listeners (Notify).
  struct Commit {
    uint64_t ticket = 0;        // the turn with the listeners
    uint64_t write_ticket = 0;  // the turn with the store (with changes only)
    Store* store = nullptr;
    std::vector<Store::Change> changes;     // empty: nothing to write
    std::vector<DecisionUpdate*> recorded;  // recorded[i] is the update changes[i] writes
    // The rule and manual claims waiting behind the targets whose claims changed, as they now
    // are (Store::RecordDecisions writes them after `changes`, in the same transaction; the
    // ClaimsSetListeners hear them with the set). Made only with a store or such a listener.
    std::vector<WaitingClaims> waiting;
  };
  // The store rows of `change_set`, and the waiting claims of the targets whose claims changed
  // (claims_changed_, charged here: ChargeClaimsLocked), into `*commit` (none without a
  // store), with a write ticket.
  void PrepareWriteLocked(std::vector<DecisionUpdate>& change_set, Commit* commit)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends a change set made under mu_: makes its store write ready (PrepareWriteLocked),
  // forgets what is past its retention at `now` (ForgetLocked), and takes its ticket for Notify.
  Commit CommitLocked(std::vector<DecisionUpdate>& change_set, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Called without mu_ (another change set is decided meanwhile): writes `commit`'s changes in
  // one transaction once every change set made before it was written (write tickets are taken
  // under mu_, in the order of the changes, so the store's rows follow the table's changes),
  // and sets their updates' outbox_seq. A change set is heard (Notify) and its caller returns
  // only after this: an ingest batch is acknowledged once its decisions are committed.
  void WriteInTurn(Commit& commit) ABSL_LOCKS_EXCLUDED(mu_);
  // Writes the changes the store refused before, in their order; OK when none are left.
  absl::Status WriteUnwrittenLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Hands `updates` to the listeners once every change set made before it was handed over:
  // each set takes a ticket under mu_ (CommitLocked), in the order of the changes, and sets
  // are heard in ticket order. `before`, when set, runs in the same turn, first. Every ticket
  // taken must be notified (even with no updates), or the later ones would wait forever.
  void Notify(const Commit& commit, const std::vector<DecisionUpdate>& updates,
              const std::function<void(const std::vector<DecisionUpdate>&)>& before = nullptr);

  Clock& clock_;
  const uint32_t max_evidence_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, palisade::v1::Decision> by_id_ ABSL_GUARDED_BY(mu_);
  // Target value -> its active decision.
  absl::flat_hash_map<std::string, Active> active_ ABSL_GUARDED_BY(mu_);
  std::atomic<size_t> active_size_{0};  // active_.size() as of the last change set
  size_t active_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // the sum of active_'s Active::bytes
  // IPv6 folding: range key (FoldKeyLocked) -> active rule decisions on addresses in it.
  absl::flat_hash_map<uint64_t, uint32_t> fold_counts_ ABSL_GUARDED_BY(mu_);
  CidrSet never_fold_ ABSL_GUARDED_BY(mu_);  // SetNeverFold
  prometheus::Counter* folded_ = nullptr;    // palisade_decisions_ipv6_folded_total
  bool refusing_ ABSL_GUARDED_BY(mu_) = false;    // refusing now (logged when it starts, ends)
  uint64_t refused_since_log_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, Offences> offences_ ABSL_GUARDED_BY(mu_);
  int64_t last_offence_row_ ABSL_GUARDED_BY(mu_) = 0;  // the last Offences::row given
  // Offenders by forget_at, so forgetting costs what is forgotten: one entry each, at its
  // Offences::queued_at, moved to its forget_at only when ForgetLocked reaches it.
  TimeNameSet offences_by_forget_ ABSL_GUARDED_BY(mu_);
  // Ended decisions in memory by (end, id), with their size; and the sum of the sizes.
  std::map<std::pair<absl::Time, std::string>, size_t> ended_ ABSL_GUARDED_BY(mu_);
  size_t ended_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  DecisionTableLimits limits_ ABSL_GUARDED_BY(mu_);
  bool lean_extensions_ ABSL_GUARDED_BY(mu_) = false;  // SetLeanExtensions
  bool keep_evidence_ ABSL_GUARDED_BY(mu_) = true;     // SetKeepEvidence
  // ApplyAllInto's target, kept so that its value's buffer is reused from call to call.
  palisade::v1::Target scratch_target_ ABSL_GUARDED_BY(mu_);
  // palisade_decisions_forgotten_total by {what, reason}; null without a registry.
  prometheus::Counter* forgotten_decision_age_ = nullptr;
  prometheus::Counter* forgotten_decision_cap_ = nullptr;
  prometheus::Counter* forgotten_offender_age_ = nullptr;
  prometheus::Counter* forgotten_offender_cap_ = nullptr;
  // Target value -> the claims waiting behind its active decision. The rule and manual ones are
  // stored (Store's waiting claims, written with the change set that changed them) and
  // restored at start; the feeds' come back with the first sync.
  absl::flat_hash_map<std::string, std::vector<Claim>> covered_ ABSL_GUARDED_BY(mu_);
  // A mirror's: target -> the id of its decision this table's sweep ended while claims waited
  // behind it, before the writer's word on it came (its successor, or its claims' snapshot,
  // which erase the entry). Should this table write first (a take-over), its next sweep
  // decides them (ExpireDue), as the writer's would have. The claims are stored behind that
  // decision, and Restore notes it again (RestoreMirrorEndedLocked).
  absl::flat_hash_map<std::string, std::string> mirror_ended_ ABSL_GUARDED_BY(mu_);
  // A mirror's: targets whose waiting claims predate the writer's last full state, and whose
  // snapshot has not come since (MirrorState's mark_stale; MirrorWaitingEnd drops them).
  absl::flat_hash_set<std::string> stale_waiting_ ABSL_GUARDED_BY(mu_);
  // Targets whose covered_ rule or manual claims changed since the last change set was
  // committed (some of them may have changed their feed claims only).
  absl::flat_hash_set<std::string> claims_changed_ ABSL_GUARDED_BY(mu_);
  // Active decisions by expiry, so a sweep costs what expires, not what is active: one entry
  // each, at its Active::queued (its expiry when it was decided), moved to its expiry only when
  // ExpireDue reaches it. An extension moved it on every detection (~10 % of an sshd replay's
  // decision work, a quarter of an nginx one's with every pack: most detections extend).
  TimeNameSet by_expiry_ ABSL_GUARDED_BY(mu_);
  absl::BitGen bitgen_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;  // NewIdLocked's counter (0: not started)
  Store* store_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::set<palisade::v1::Actuator> edge_actuators_ ABSL_GUARDED_BY(mu_);
  uint64_t next_ticket_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_write_ticket_ ABSL_GUARDED_BY(mu_) = 0;
  mutable absl::Mutex write_mu_ ABSL_ACQUIRED_AFTER(mu_);
  uint64_t written_ ABSL_GUARDED_BY(write_mu_) = 0;  // write tickets done so far
  // Changes the store refused, oldest first, waiting to be written (WriteUnwrittenLocked). With
  // unwritten_waiting_, at most max_unwritten_bytes_ (DecisionTableLimits::max_unwritten_bytes):
  // past it the snapshots go first, the empty ones first, then the oldest changes.
  size_t max_unwritten_bytes_ ABSL_GUARDED_BY(write_mu_) =
      DecisionTableLimits{}.max_unwritten_bytes;
  struct Unwritten {
    palisade::v1::Decision decision;
    Store::Change change;  // its decision: the one above
    size_t bytes = 0;
  };
  std::deque<Unwritten> unwritten_ ABSL_GUARDED_BY(write_mu_);
  // Waiting claims the store refused, by target: the latest of each target's (it replaces the
  // ones before it), written after unwritten_ in the same transaction, counted in
  // unwritten_bytes_. A target's with no active decision (an empty snapshot, decision_id "")
  // only deletes rows Restore would never attach: past the cap those go first, then the others,
  // before any change of unwritten_.
  absl::flat_hash_map<std::string, WaitingClaims> unwritten_waiting_ ABSL_GUARDED_BY(write_mu_);
  size_t unwritten_ended_ ABSL_GUARDED_BY(write_mu_) = 0;  // of them, with decision_id ""
  size_t unwritten_bytes_ ABSL_GUARDED_BY(write_mu_) = 0;
  Store* unwritten_store_ ABSL_GUARDED_BY(write_mu_) = nullptr;
  prometheus::Counter* write_failures_ ABSL_GUARDED_BY(write_mu_) = nullptr;
  prometheus::Counter* changes_lost_ ABSL_GUARDED_BY(write_mu_) = nullptr;
  prometheus::Gauge* unwritten_gauge_ ABSL_GUARDED_BY(write_mu_) = nullptr;
  absl::Mutex listeners_mu_;
  std::vector<std::pair<uint64_t, Listener>> listeners_ ABSL_GUARDED_BY(listeners_mu_);
  std::vector<std::pair<uint64_t, SetListener>> set_listeners_ ABSL_GUARDED_BY(listeners_mu_);
  std::vector<std::pair<uint64_t, ClaimsSetListener>> claims_listeners_
      ABSL_GUARDED_BY(listeners_mu_);
  // claims_listeners_.size(), read under mu_: whether a change set's snapshots are made without
  // a store (PrepareWriteLocked).
  std::atomic<size_t> claims_listener_count_{0};
  uint64_t next_listener_id_ ABSL_GUARDED_BY(listeners_mu_) = 1;
  Forward forward_ ABSL_GUARDED_BY(mu_);
  int forwarding_ ABSL_GUARDED_BY(mu_) = 0;  // ApplyAll calls running a copy of forward_
  uint64_t notified_ ABSL_GUARDED_BY(listeners_mu_) = 0;  // tickets handed over so far
};

// Decision timestamps, as absl::Time.
absl::Time DecisionExpiry(const palisade::v1::Decision& d);

}  // namespace palisade

#endif  // PALISADE_SERVICES_DECISIONS_DECISION_TABLE_H_
