// The cluster's decision log (issue 17; docs/ARCHITECTURE.md, "Cluster"): a ban decided anywhere
// is known everywhere. One node, the edge writer (it holds the `edge-writer` lease), owns the
// authoritative DecisionTable; every change it makes is published, in order, to a replicated
// stream (`PALISADE_DECISIONS`, R1 or R3), and every node reads that stream into a local
// read-only view that the Decisions API, Watch and the bouncer API can serve from.
//
// The stream (subjects `palisade.decisions.>`) holds two kinds of message (DecisionLogStreamSpec):
//   - an update, on `palisade.decisions.update`: one DecisionUpdate (created, extended, expired,
//     withdrawn) with the whole decision as it now is. Its de-duplication id is derived from the
//     change itself, "<decision id>:c" (created), ":x<extensions>" (extended: the count grows
//     with each extension), ":e" (expired), ":w" (withdrawn), so the same change published twice
//     (a writer killed between publish and ack, then its retry, or a new writer re-publishing
//     what it adopted) is stored once within the stream's duplicate window. The token secret a
//     revocation carries is never published (it stays with the writer's actuators).
//     The updates on one target that one call of the writer's table made one after the other
//     to end a decision and create its successor (a decision replaced by a stronger claim is
//     its withdrawal, then the new one; an ended decision, then the claim reinstated behind it:
//     a run from a withdrawal or expiry to the next creation) are consecutive messages, each
//     with the NATS header `Palisade-Set: <set id> <i> <n>` (DecisionLogWriter::SetListener),
//     so that replicas hand them on whole. The table's other updates of that call (a creation
//     and its extensions in a burst from one address, an ingest batch's other addresses, a
//     sweep's other expiries) go alone: a mirror does not hold them until a burst's or a whole
//     batch's last message.
//     A header, not the first line: a replica of an older build reads each update as before.
//   - a waiting-claims snapshot, on `palisade.decisions.waiting`: the rule and manual claims
//     one target's active decision keeps waiting (a rule's challenge behind a block: decided
//     when the block ends), as the writer's table now has them, replacing the ones before
//     (none: none wait). The writer publishes a target's after the updates of the change set
//     that changed them (DecisionTable::ClaimsSetListener, the snapshots its store writes), and
//     every target's after each full state, then "W1 end <state id>" (a mirror drops the
//     claims it held from before the state only for targets none named, and only then: a
//     writer dying in between leaves them), so that a mirror's table holds the writer's claims
//     (DecisionTable::MirrorWaiting) and a take-over decides them when their decision ends. A
//     replica of an older build counts them malformed and skips them (its node keeps no claims).
//   - a full state, on `palisade.decisions.state`: every decision the writer's table holds, in
//     consecutive chunks (each under NATS' 1 MiB payload limit) whose header says "i of n". The
//     writer publishes one on take-over (DecisionLogWriter::PublishState), after its queue
//     overflowed (the updates it dropped are then covered), and every `state_every` updates, so
//     stream limits that trim old updates always leave a state within reach. Once a state is
//     stored the writer purges what came before its previous one (`compact`): the stream stays
//     bounded by two states and the updates between them.
// Applying is idempotent and by decision id (a decision is replaced by its newer copy), and a
// state replaces the view whole. So a state followed by updates that were made before it but
// heard after it still ends at the writer's table: the updates come in the table's order.
//
// DecisionLogWriter: fed by DecisionTable::AddSetListener (SetListener(): a change set's runs
// from an ended decision to its successor on one target marked as one) or AddListener
// (Listener(): each update alone). Updates wait in a queue bounded in bytes; one thread
// publishes them in order and counts one published only when the stream acknowledged it; while
// NATS is away it retries with a capped backoff. Past the bound the queue is emptied (what it
// held is counted dropped) and a full state is published instead once NATS answers: replicas
// never miss a change silently.
// A decision over NATS' payload limit (up to engine.max_evidence lines of evidence, each up to
// engine.max_evidence_bytes) goes with its evidence cut to fit, in an update or a state
// (message_size.h; counted, evidence_cut()); one that does not fit even so (its other fields
// are over the limit) could never be stored: it is skipped and counted (refused()), and the
// rest goes on. Retried, it held back every change after it, for good.
//
// Fencing: only one writer may append. Each publish expects the stream's last sequence to be
// the one this writer last saw (JetStream's expected-last-sequence check; de-duplication is
// checked first, so a retry after a lost ack is still answered "duplicate"). A new writer reads
// the stream's last sequence and takes over with its first publish (its full state), retrying
// until no other publish slips in between; from then on, a publish refused because the stream
// moved means another writer took over: this one is fenced (fenced(), last_error()), drops what
// it holds (counted) and publishes nothing more, so a former writer's late changes never land
// after its successor's state.
//
// DecisionReplica: every node's reader. An ordered consumer (libnats recreates it after a gap
// or a lost server, from the last sequence seen) from the start of the stream, or from the
// position the caller kept with its own copy of the view (`start_after`). It hands each update
// and each complete state to a callback, in stream order, with its stream sequence. A replica
// that finds the sequence it needs already gone (stream limits, a purge) says so (fell_behind(),
// last_error()) and rebuilds from the last full state: it reads the stream again from that
// state's first chunk. When no state is within reach it keeps saying so and retries until the
// writer publishes one.
// The updates of a change set (the Palisade-Set header) are held from the first to the last
// and handed on as one kSet change, so a mirror's listeners hear the set as the writer's did
// (never a replaced decision's withdrawal without its replacement: a bouncer pull between the
// two served the address unbanned). A set cut off (its writer died or was fenced mid-set, or a
// message of it refused for its size) is handed on as far as it goes when a message outside it
// comes, when a WaitUntilApplied caller waits for it and the stream gives nothing for a
// moment, after `stall` without a message, or before the consumer is made again; one past
// `max_held_set_bytes` is handed on in parts. A held update is not applied yet:
// applied_through() and WaitUntilApplied count it only once it is.
// A state is held from its first chunk to its last under bounds in bytes, in decisions and in
// time waiting for its next chunk (DecisionReplicaOptions): a state forged on the state
// subject that never ends is dropped, counted and logged without its content.
//
// DecisionView: a ready-made callback target, the read-only view by id. It keeps ended decisions
// too (Get of yesterday's ban), until the next full state replaces it with the writer's table,
// which forgets by its own limits: so the view holds at most the table plus `state_every`
// updates' decisions. It keeps the writer's waiting-claims snapshots too, which a node stepping
// down takes into its table (DecisionView::Waiting): one per target, only behind the target's
// active decision in the view and dropped when that decision ends, its claims merged by kind
// (as a table merges them), all of them under a cap in bytes (`max_waiting_bytes`: anyone who
// can publish on the subject can forge one maximal snapshot per active decision, ~220 KB
// each). A snapshot past the cap is refused, and the view says its snapshots are incomplete
// until a later state's end without one refused.
//
// Thread-safe: DecisionLogWriter's and DecisionView's methods may be called from any thread. A
// DecisionReplica calls its callback from its own thread, one call at a time.
#ifndef PALISADE_SERVICES_CLUSTER_DECISION_LOG_H_
#define PALISADE_SERVICES_CLUSTER_DECISION_LOG_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "palisade/v1/palisade.pb.h"
#include "services/cluster/nats_client.h"
#include "services/common/clock.h"
#include "services/decisions/decision_table.h"

typedef struct __natsSubscription natsSubscription;

namespace palisade::cluster {

inline constexpr char kDecisionStream[] = "PALISADE_DECISIONS";
inline constexpr char kDecisionSubjects[] = "palisade.decisions.>";
inline constexpr char kDecisionSubject[] = "palisade.decisions.update";
inline constexpr char kDecisionStateSubject[] = "palisade.decisions.state";
inline constexpr char kDecisionWaitingSubject[] = "palisade.decisions.waiting";

// The stream the log needs: both subjects, `replicas` (1 or 3), file storage, a duplicate window
// long enough for a writer's retries and a take-over.
StreamSpec DecisionLogStreamSpec(int replicas, absl::Duration duplicate_window = absl::Minutes(2));

// One change as replicas see it.
struct ReplicatedChange {
  enum class Kind { kUpdate, kState, kSet, kWaiting, kWaitingEnd };
  Kind kind = Kind::kUpdate;
  uint64_t sequence = 0;  // in the stream; for a state or a set, its last message's
  // kUpdate: the change and the decision as it now is.
  DecisionChange change = DecisionChange::kCreated;
  palisade::v1::Decision decision;
  // kSet: two or more updates on one target of one change set of the writer's table, in order
  // (each its change and decision; no secret, no outbox_seq), to be applied and heard as one.
  std::vector<DecisionUpdate> set;
  // kState: every decision the writer held; the view becomes exactly this. The writer's
  // waiting claims follow it (kWaiting, then kWaitingEnd): a mirror marks its own stale
  // (MirrorState's mark_stale) and drops those no snapshot replaced at the end.
  std::vector<palisade::v1::Decision> state;
  // kWaiting: one target's waiting rule and manual claims as the writer has them.
  // kWaitingEnd: the writer's snapshots after the last state this replica applied ended
  // ("W1 end <state id>"; one naming another state is not handed on).
  WaitingClaims waiting;
};

// The NATS header that marks an update as one of a change set: "<set id> <i> <n>" (1-based).
inline constexpr char kSetHeader[] = "Palisade-Set";

// The message of one update (exposed for tests and the command transport's replies).
std::string EncodeUpdate(const DecisionUpdate& update);
// The de-duplication id of an update; "" for a change that is not published (stale).
std::string UpdateId(const DecisionUpdate& update);
// The message of one target's waiting-claims snapshot, and back (false: it does not parse).
std::string EncodeWaiting(const WaitingClaims& waiting);
bool DecodeWaiting(absl::string_view message, WaitingClaims* out);

struct DecisionLogWriterOptions {
  std::string node_id;
  std::string stream = kDecisionStream;
  // The queue's bound: the bytes of the updates waiting (serialized, plus a fixed cost each).
  size_t max_queued_bytes = 64u << 20;
  // Chunks of a full state stay under this (NATS' default max_payload is 1 MiB).
  size_t max_chunk_bytes = 512u << 10;
  // A full state after this many updates (0: only on take-over and after an overflow).
  uint64_t state_every = 10'000;
  // After each full state is stored, the stream is purged of what came before the state this
  // writer published before it: a replica never needs that (a state replaces its view whole),
  // so the log holds at most two states and the updates since the older one, whatever the
  // number of decisions ever made (an attacker's addresses grow it otherwise).
  bool compact = true;
  // Every decision the writer's table holds (DecisionTable::List({})): for the states the
  // writer publishes by itself. Called from the writer's thread, outside its lock.
  std::function<std::vector<palisade::v1::Decision>()> state;
  // The rule and manual claims waiting behind the table's decisions (DecisionTable::Waiting):
  // published after each full state, one snapshot per target. Null: none.
  std::function<std::vector<WaitingClaims>()> waiting;
  absl::Duration retry_min = absl::Milliseconds(100);
  absl::Duration retry_max = absl::Seconds(5);
  // Each update once the stream holds it (acknowledged, or answered duplicate), in the order
  // queued, on the writer's thread: the edge hears the table through this (palisaded's
  // dispatcher), so it never acts on a change the log may still lose. An update an overflow
  // dropped is not heard (the reconciler's next pass repairs the edge from the table); one
  // given up on (stopping while NATS refuses, or fenced) or refused for its size is not either.
  // The update is held whole (its token secret included) until heard: its bytes count in the
  // queue's bound.
  std::function<void(const DecisionUpdate&)> published;
  // Taking over, before the full state is taken: the stream holds changes up to `sequence` (a
  // former writer's last words). Returns once the table `state` reads holds them (the node's
  // replica mirrors into it until this writer's first publish is stored, took_over()); false
  // when it could not in its own time: then it is asked again (the stream's end read again),
  // for a state taken before would erase what the node has not read. Null: not waited for.
  std::function<bool(uint64_t sequence)> wait_applied;
};

class DecisionLogWriter {
 public:
  static absl::StatusOr<std::unique_ptr<DecisionLogWriter>> Start(NatsClient& nats,
                                                                  DecisionLogWriterOptions options);
  // Publishes what is queued (NATS permitting: at most `retry_max` more), then stops.
  ~DecisionLogWriter();

  // For DecisionTable::AddListener: Enqueue for each update.
  DecisionTable::Listener Listener();
  // For DecisionTable::AddSetListener: EnqueueSet for each change set.
  DecisionTable::SetListener SetListener();
  // For DecisionTable::AddClaimsSetListener: EnqueueSet for each change set and its snapshots.
  DecisionTable::ClaimsSetListener ClaimsSetListener();
  // Queues one update (stale ones are ignored). false: the queue was full; it was emptied and
  // a full state will be published in its place.
  bool Enqueue(const DecisionUpdate& update);
  // Queues a change set's updates (stale ones are ignored) at once, each run on one target from
  // a withdrawal or expiry to the next creation marked as one set (see the header) when it
  // holds more than one; extensions go alone; then `waiting`'s snapshots, one message each,
  // in the queue's bound as updates are. false as Enqueue (the whole change set, and the
  // claims, in the state).
  bool EnqueueSet(const std::vector<DecisionUpdate>& set,
                  const std::vector<WaitingClaims>& waiting = {});
  // Queues a full state (options.state()) after what is queued: on take-over.
  void PublishState();

  // Waits until everything queued so far is acknowledged by the stream (or refused for its
  // size, see refused()), or `timeout`. false at once when this writer gave up (fenced, or
  // stopped while NATS refused): what it held will never be published.
  bool WaitUntilPublished(absl::Duration timeout);

  uint64_t published() const { return published_.load(); }    // updates acknowledged
  // Waiting-claims snapshots acknowledged (after a change set or a state).
  uint64_t waiting_published() const { return waiting_published_.load(); }
  uint64_t duplicates() const { return duplicates_.load(); }  // of them, already stored
  uint64_t states_published() const { return states_.load(); }
  uint64_t compactions() const { return compactions_.load(); }  // purges made (options.compact)
  uint64_t dropped() const { return dropped_.load(); }
  uint64_t publish_failures() const { return failures_.load(); }
  // Updates and states' decisions whose evidence was cut to fit NATS' payload limit.
  uint64_t evidence_cut() const { return evidence_cut_.load(); }
  // Updates, states and states' decisions refused for good (too large even so): skipped.
  uint64_t refused() const { return refused_.load(); }
  // Another writer appended after this one's last publish: it publishes nothing more.
  bool fenced() const { return fenced_.load(); }
  // One of this writer's publishes was stored: it has taken over, and from then on no other
  // writer's change can land without fencing it.
  bool took_over() const { return took_over_.load(); }
  std::string last_error() const;
  size_t queued_bytes() const;

  static size_t Cost(size_t bytes) { return bytes + 64; }

 private:
  DecisionLogWriter(NatsClient& nats, DecisionLogWriterOptions options);
  void Run();
  struct Item {
    bool state = false;  // a full state, taken when its turn comes
    bool waiting = false;  // a waiting-claims snapshot (id and data), not an update
    std::string id;      // de-duplication id (updates)
    std::string data;    // the message (updates)
    DecisionUpdate update;  // the update, for options.published (when set)
    std::string set;        // its kSetHeader value ("": not one of a set of several)
    size_t cost = 0;        // in queued_bytes_
    uint64_t ticket = 0;
  };
  enum class Outcome { kStored, kGaveUp, kMoved, kRefused };
  // Publishes a full state taken now; OK when every chunk is acknowledged, kResourceExhausted
  // when one was refused for its size (the state skipped). Taking over, it is taken once the
  // table holds what the stream held (options.wait_applied), again if the stream moved
  // meanwhile.
  absl::Status PublishStateNow();
  // `start`: the stored first chunk's sequence.
  Outcome PublishStateTaken(bool taking_over, uint64_t* start);
  // options.compact: purges what came before the previous state; `state_start` is the new one's.
  void Compact(uint64_t state_start);
  // An update's item (its evidence cut to fit NATS' payload limit); false for a change that is
  // not published (stale).
  bool MakeItem(const DecisionUpdate& update, Item* item);
  // Queues `items` at once (tickets given here); false when they did not fit (see Enqueue).
  bool Push(std::vector<Item> items);
  // Publishes with retries until acknowledged (kStored); kGaveUp when stopping or fenced;
  // kMoved when the stream moved before this writer took over (`retake`: the caller takes its
  // message again, else it is published as it is after the new last sequence); kRefused when
  // refused for its size (RefusedForItsSize), which no retry changes.
  // `set`, when not empty, is sent as the kSetHeader header.
  Outcome PublishWithRetry(const std::string& subject, const std::string& data,
                           const std::string& id, NatsClient::Ack* ack, bool retake = false,
                           const std::string& set = "");
  // The stream's last sequence, read until NATS answers; false when stopping.
  bool ReadLastSequence();
  // Waits out a retry's backoff (doubling it); false when stopping.
  bool Backoff(absl::Duration* backoff, const absl::Status& failed);

  NatsClient& nats_;
  const DecisionLogWriterOptions options_;
  const std::string id_prefix_;  // "<node>:<incarnation>:" for the states' chunks
  mutable absl::Mutex mu_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_ticket_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t done_through_ ABSL_GUARDED_BY(mu_) = 0;  // tickets below this are published
  uint64_t since_state_ ABSL_GUARDED_BY(mu_) = 0;
  size_t states_queued_ ABSL_GUARDED_BY(mu_) = 0;  // full states waiting in queue_
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool gave_up_ ABSL_GUARDED_BY(mu_) = false;  // the writer thread ended with items unpublished
  uint64_t state_count_ = 0;  // the writer thread's
  uint64_t set_count_ ABSL_GUARDED_BY(mu_) = 0;  // sets marked so far (their ids)
  // The writer thread's: the first chunk's sequence of the last state it published (0: none
  // yet), the point the next compaction purges before.
  uint64_t last_state_start_ = 0;
  std::atomic<uint64_t> compactions_{0};
  // The writer thread's: the stream's last sequence as this writer knows it (read once, then
  // each ack's), and whether one of its publishes was stored (it has taken over).
  bool last_known_ = false;
  uint64_t last_sequence_ = 0;
  std::atomic<bool> took_over_{false};
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> fenced_{false};
  std::atomic<uint64_t> published_{0}, duplicates_{0}, states_{0}, dropped_{0}, failures_{0};
  std::atomic<uint64_t> evidence_cut_{0}, refused_{0}, waiting_published_{0};
  uint64_t waiting_count_ ABSL_GUARDED_BY(mu_) = 0;  // snapshots queued so far (their ids)
  std::thread thread_;
};

struct DecisionReplicaOptions {
  std::string stream = kDecisionStream;
  // The last stream sequence the caller's view already holds (0: read from the start).
  uint64_t start_after = 0;
  // Each update and each complete state, in stream order. Called from the replica's thread.
  std::function<void(const ReplicatedChange&)> apply;
  // While no state is within reach after a gap, or NATS refuses: between attempts.
  absl::Duration retry = absl::Milliseconds(500);
  // No message for this long while the stream holds more than was read: the consumer is taken
  // for lost (its server died and libnats did not recreate it) and made again from the last
  // sequence read.
  absl::Duration stall = absl::Seconds(5);
  // A full state is held in memory from its first chunk until its last, and anyone who can
  // publish on `palisade.decisions.state` can start one that never ends. One held past
  // `max_pending_state_bytes` (its decisions as held in memory) or
  // `max_pending_state_decisions`, or waiting longer than `max_pending_state_age` (on `clock`)
  // for its next chunk, is dropped: counted (pending_states_dropped()), its reason in
  // last_refusal() and `log` (never its content), and the rest of its chunks skipped. A
  // writer's state aged out (NATS away mid-publish) is read again from its first chunk when its
  // next chunk comes. The bounds must hold the writer's largest table (a state over them is
  // never applied, and last_refusal() says so).
  size_t max_pending_state_bytes = size_t{256} << 20;
  size_t max_pending_state_decisions = 2'000'000;
  absl::Duration max_pending_state_age = absl::Minutes(2);
  Clock* clock = nullptr;  // null: the real clock
  // A change set's updates are held until its last (see the header); past this many bytes
  // (their decisions as held in memory, as max_pending_state_bytes counts them, plus 64 each:
  // serialized, a member of empty evidence lines held ~20x its wire bytes) what is held is
  // handed on and the rest of the set follows as one more call: anyone who can publish on the
  // update subject can start a set that never ends.
  size_t max_held_set_bytes = size_t{64} << 20;
  // Each state dropped, with its reason. Null: not logged (last_refusal() still says).
  std::function<void(const std::string&)> log;
};

class DecisionReplica {
 public:
  static absl::StatusOr<std::unique_ptr<DecisionReplica>> Start(NatsClient& nats,
                                                                DecisionReplicaOptions options);
  ~DecisionReplica();  // stops reading (the view keeps what it has)

  // The last stream sequence applied: what to keep with a snapshot of the view.
  uint64_t applied_through() const { return applied_through_.load(); }
  // Waits until the replica applied all it can through `sequence` (or beyond), or `timeout`:
  // it read that far. A change set held for its next update is handed on once the stream gives
  // nothing more for a moment (its writer was cut off mid-set). A state whose chunks the
  // stream does not all hold yet (or never will:
  // its writer died or was fenced after the first ones) holds nothing to apply, so a replica
  // whose position is inside one has applied the stream through it; applied_through() stays
  // before it (a replica resumed from there reads the state whole).
  bool WaitUntilApplied(uint64_t sequence, absl::Duration timeout);
  uint64_t updates_applied() const { return updates_.load(); }
  uint64_t states_applied() const { return states_.load(); }
  // Times the sequence it needed was gone from the stream (then it rebuilt from a state).
  uint64_t fell_behind() const { return fell_behind_.load(); }
  // Messages it could not read (counted and skipped: a writer of another version).
  uint64_t malformed() const { return malformed_.load(); }
  // Consumers made again after a stall (see DecisionReplicaOptions::stall).
  uint64_t resubscribed() const { return resubscribed_.load(); }
  // What went wrong last ("" when reading normally), e.g. why it waits for a state.
  std::string last_error() const;
  // It fell behind and no full state is within reach (a purge): only a writer's next state
  // lets it read on, so a node taking over must not wait for it (see wait_applied).
  bool awaiting_state() const { return awaiting_state_.load(); }
  // The state being read (chunks held until its last): its decisions' bytes in memory, and
  // their count; and the states dropped for their bounds (see DecisionReplicaOptions).
  size_t pending_state_bytes() const { return pending_bytes_.load(); }
  size_t pending_state_decisions() const { return pending_count_.load(); }
  uint64_t pending_states_dropped() const { return pending_dropped_.load(); }
  // Why the last state was dropped ("" when none was).
  std::string last_refusal() const;

 private:
  DecisionReplica(NatsClient& nats, DecisionReplicaOptions options);
  void Run();
  // Subscribes so that the next message is the one after `after`.
  absl::Status Subscribe(uint64_t after);
  // After a gap: the sequence before the last state's first chunk, or an error naming why none
  // is within reach.
  absl::StatusOr<uint64_t> FindState();
  void SetError(std::string e);

  NatsClient& nats_;
  const DecisionReplicaOptions options_;
  natsSubscription* sub_ = nullptr;  // the replica thread's
  std::atomic<bool> stopping_{false};
  std::atomic<bool> awaiting_state_{false};
  std::atomic<uint64_t> applied_through_{0}, updates_{0}, states_{0}, fell_behind_{0},
      malformed_{0}, resubscribed_{0}, pending_dropped_{0};
  std::atomic<size_t> pending_bytes_{0}, pending_count_{0};
  std::atomic<uint64_t> read_through_{0};  // the furthest sequence read (WaitUntilApplied)
  // The furthest sequence a WaitUntilApplied caller waits for: a set held past it is handed on
  // when the stream gives nothing more.
  std::atomic<uint64_t> wanted_{0};
  mutable absl::Mutex mu_;
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  std::string last_refusal_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// A read-only copy of the writer's decisions, by id, fed by a DecisionReplica.
class DecisionView {
 public:
  // `max_waiting_bytes`: the cap on the waiting-claims snapshots held (DecisionTable::
  // WaitingBytes each). A node's is its table's max_active_bytes, which charges the same claims
  // (the writer's own are charged to its budget, under which it refuses new decisions).
  // `clock`: a snapshot's claims expired by it are dropped before they are merged.
  explicit DecisionView(size_t max_waiting_bytes = DecisionTableLimits().max_active_bytes,
                        Clock& clock = RealClock::Get())
      : max_waiting_bytes_(max_waiting_bytes), clock_(clock) {}
  void Apply(const ReplicatedChange& change);
  std::function<void(const ReplicatedChange&)> Callback() {
    return [this](const ReplicatedChange& c) { Apply(c); };
  }
  absl::StatusOr<palisade::v1::Decision> Get(absl::string_view id) const;
  // All decisions, or only the active ones, ordered by start then id (as DecisionTable::List).
  std::vector<palisade::v1::Decision> List(bool active_only = false) const;
  size_t active_count() const;
  // The writer's waiting-claims snapshots (kWaiting) named since its last full state, behind
  // the active decisions of the view: for a table that stops writing to take the new writer's
  // claims (DecisionTable::MirrorWaiting), which its replica read while skipping them.
  // `*complete`: the snapshots of the last state read here ended (kWaitingEnd) and none since
  // that state was refused for the cap, so these are all the writer's; else (a state's
  // snapshots still coming, none read since this view began, or one refused) other targets may
  // hold claims the writer has, and the caller must drop none it holds itself.
  std::vector<WaitingClaims> Waiting(bool* complete) const;
  // The bytes of the snapshots held (at most max_waiting_bytes).
  size_t waiting_bytes() const;
  // Whether a snapshot was refused for the cap since the last state: its target's claims are
  // unknown here until a later state's (the end of this state's names no claim for it).
  bool waiting_overflow() const;

 private:
  // Drops `target`'s snapshot (waiting_, waiting_bytes_).
  void EraseWaitingLocked(const std::string& target) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops the snapshot behind `d` if `d` is no longer active.
  void EndWaitingLocked(const palisade::v1::Decision& d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t max_waiting_bytes_;
  Clock& clock_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, palisade::v1::Decision> by_id_ ABSL_GUARDED_BY(mu_);
  // Target -> its snapshot named since the last state, and their bytes; whether that state's
  // snapshots are still coming; whether any state's have ended; whether one was refused for
  // the cap since the last state.
  absl::flat_hash_map<std::string, WaitingClaims> waiting_ ABSL_GUARDED_BY(mu_);
  size_t waiting_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool waiting_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool waiting_known_ ABSL_GUARDED_BY(mu_) = false;
  bool waiting_overflow_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace palisade::cluster

#endif  // PALISADE_SERVICES_CLUSTER_DECISION_LOG_H_
