// One palisaded as a node of the cluster (issue 17; docs/ARCHITECTURE.md, "Cluster"): the
// pieces of this package put together around the node's DecisionTable. Built by palisaded when
// the config has `cluster {}` (palisade.v1.ClusterConfig).
//
// A ClusterNode owns the NATS connection, the lease table and the node's Ownership, ticked every
// lease term / 3 on the injected clock (its own thread, or Tick() from a test). On every node it
// runs a DecisionReplica into a DecisionView and into the table (DecisionTable::Mirror, and
// MirrorAll for a change set the writer's log marked as one, heard in one call as on the
// writer): the Decisions API, Watch and the bouncer API read the same decisions everywhere.
// While the node holds `edge-writer` (the lease held and renewed within the term, and its log
// writer not fenced) the table is the writer's, not a mirror:
//   gaining it: a DecisionLogWriter hears the table from then on and publishes the table whole
//   (so every replica ends at it), but only once the table holds all the stream held (the
//   former writer's last words: the replica keeps mirroring into the table until that state is
//   stored, DecisionLogWriterOptions::wait_applied). Once the state is stored (at once, or at a
//   later tick) `writer_started` runs (palisaded starts the dispatcher, outbox and reconciler
//   there; the dispatcher hears edge_update, what the log stored), then the CommandServer
//   answers;
//   losing it (another node took it, ticks failing for a whole term, the log writer fenced):
//   the CommandServer stops answering, `writer_stopped` runs (the edge stops), the log writer
//   publishes what it still holds, and the table mirrors again.
// Manual bans and unbans go from any node, the writer included, through the command channel to
// whichever node writes (AddManual, Withdraw): the answer is the writer's, and the call returns
// once this node's table holds it. Detections go the same way: while this node does not write,
// its table forwards what it detects (DecisionTable::SetForward) to ForwardDetection, a bounded
// queue sent in order, each under its own command id so a retry is carried out once; a
// partition owner's detections use SendDetection with the detection's own id. Partition ownership
// is handed to `partitions_changed` as the set to start and the set to stop counting (H1's
// PartitionCounter::Apply).
//
// One process per node id: Start refuses (kFailedPrecondition naming the id) while another live
// process holds the id's presence in the lease bucket (LeaseTable::ClaimPresence; one that
// crashed is waited out, see wait_out_presence), and a node
// that finds one at a tick (it was paused past the term, and another started meanwhile) stops
// writing and counting and renews nothing more, saying why (Status().last_error, the log).
//
// Thread-safety: the accessors, Status, AddManual and Withdraw may be called from any thread;
// Tick from one thread at a time (the node's own, when run_thread).
#ifndef PALISADE_SERVICES_CLUSTER_CLUSTER_NODE_H_
#define PALISADE_SERVICES_CLUSTER_CLUSTER_NODE_H_

#include <atomic>
#include <deque>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "palisade/v1/palisade.pb.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/cluster/command_channel.h"
#include "services/cluster/decision_log.h"
#include "services/cluster/lease_table.h"
#include "services/cluster/nats_client.h"
#include "services/cluster/ownership.h"
#include "services/common/clock.h"
#include "services/decisions/decision_table.h"
#include "services/engine/rule_set.h"
#include "services/store/store.h"

namespace palisade::cluster {

struct ClusterNodeOptions {
  NatsOptions nats;
  std::string node_id;  // [A-Za-z0-9_-], at most 64 bytes
  uint32_t partitions = 16;
  absl::Duration lease_term = absl::Seconds(15);
  absl::Duration lease_skew = absl::Seconds(2);
  int replicas = 1;  // of the decision stream and the lease bucket
  Clock* clock = nullptr;  // leases and ticks; null: the real clock
  // Tick on a thread of its own every lease_term / 3 (false: the caller calls Tick()).
  bool run_thread = true;
  // How long a manual ban or unban waits for a writer to answer, and for this node's table to
  // hold the answer.
  absl::Duration command_deadline = absl::Seconds(30);
  // On the node's thread, once this node writes (see the header) and when it stops. Both may
  // block (they start and stop the edge).
  std::function<void()> writer_started;
  std::function<void()> writer_stopped;
  // While this node writes: each of its decision updates once the decision log holds it, in
  // order, on the log writer's thread (DecisionLogWriterOptions::published). palisaded's
  // dispatcher hears the table through this, never the table itself: the edge acts only on
  // what every node will read, so a writer that loses NATS, or its lease, before its changes
  // are stored leaves nothing at the edge that its successor would take for an orphan.
  std::function<void(const DecisionUpdate&)> edge_update;
  // On the node's thread before each tick: whether this node may own partitions (the partition
  // counter's CheckRuleSet). kFailedPrecondition: no (its rules differ from the cluster's): the
  // tick releases its partitions and claims none (Ownership::Tick(false)), and the reason is
  // the status' last_error until it agrees; the node still matches, publishes and may write.
  // Another error (NATS failing) changes nothing and is reported. Null: always.
  std::function<absl::Status()> may_own_partitions;
  // On the node's thread: the partitions to start and to stop counting.
  std::function<void(const std::set<uint32_t>& gained, const std::set<uint32_t>& lost)>
      partitions_changed;
  // Once connected (the decision stream and the leases ready), before the first tick: the
  // caller builds what runs on this connection (the match publisher, the partition counter).
  // An error refuses the start.
  std::function<absl::Status(NatsClient&)> on_connected;
  // Called by the node's thread between ticks, in place of its idle wait (the partition
  // counter's Poll, which waits at most its poll_wait): the same thread as partitions_changed
  // and writer_started, as PartitionCounter requires.
  std::function<void()> poll;
  // In Stop, once the node's thread ended and before the leases are released (the partition
  // counter's SnapshotAll, so the next owners replay nothing).
  std::function<void()> stopping;
  // The writer's rules, for the decision spec of a detection another node sent (by rule id).
  std::function<std::shared_ptr<const RuleSet>()> rules;
  // On the writer, after it decided a detection another node sent: the detection (its rule
  // alive for the call) and what it made (palisaded feeds it back for recidive:
  // Pipeline::FeedDecisions). On the command server's thread.
  std::function<void(const Detection&, const DecisionUpdate&)> decided;
  // Detections waiting to be sent to the writer, at most (past it they are dropped, counted);
  // and their bytes at most (a detection's evidence may be up to engine.max_evidence_bytes,
  // 1 MiB: ten thousand of those are not a queue a node can hold).
  size_t max_forward_queue = 10'000;
  size_t max_forward_queue_bytes = 16u << 20;
  // Commands the writer carries out besides decisions.add and decisions.delete (kind, body).
  std::function<absl::StatusOr<std::string>(absl::string_view kind, absl::string_view body)>
      handle_command;
  std::function<void(const std::string&)> log;
  // One process per node id (see the header). A start that finds this id's presence held by
  // another instance waits, with this true, up to lease_term + lease_skew on the clock for it to
  // run out, reading it every second: the process that held it may have crashed, and a
  // supervisor restarts it sooner than that (systemd's RestartSec=2s would otherwise hit its
  // start limit). Start fails at once when the presence is renewed meanwhile (that process is
  // alive), or when it is still held after the wait. false: fails at once.
  bool wait_out_presence = true;
  // The table's store (palisaded's state file; it must outlive the node), or null. The stream
  // sequence the replica applied through is kept there (snapshot "cluster:decision_log", with
  // the stream's creation time), once the table's own writes of what it applied are in; a
  // restart resumes the log after it, over the table Restore gave. Read from the log's oldest
  // state instead, a restart withdrew (told the listeners so) every decision made since that
  // state, then made it again: bouncers and Watch saw them go and come at each restart.
  Store* store = nullptr;
  // Tests only (null in production): called on the node's thread as it comes to write, once it
  // decides its own detections and before its decision log writer starts. What the replica
  // reads meanwhile (a former writer's last words) must reach the table, which the take-over
  // state is taken from.
  std::function<void()> before_log_writer;
};

// What `palisadectl cluster status` shows.
struct ClusterNodeStatus {
  std::string node_id;
  bool nats_connected = false;
  bool writer = false;        // this node writes now
  std::string writer_node;    // the live holder of edge-writer ("" when none)
  std::vector<std::string> live_nodes;
  uint32_t partitions = 0;
  std::map<uint32_t, std::string> partition_owners;  // the live ones
  std::set<uint32_t> owned;                          // this node's
  bool partitions_gated = false;  // may not own partitions (the reason is in last_error)
  uint64_t stream_last_sequence = 0;
  uint64_t applied_through = 0;
  uint64_t replica_lag = 0;
  std::string last_error;  // the last tick's or the replica's ("" when none)
};

class ClusterNode {
 public:
  // Connects (a clear error naming the servers when none answers), makes sure the decision
  // stream exists with Palisade's settings (kFailedPrecondition naming what differs), opens the
  // lease table, starts the replica into `table` and, with run_thread, the ticks. `table` and
  // `registry` must outlive the node. The first tick runs before Start returns.
  static absl::StatusOr<std::unique_ptr<ClusterNode>> Start(ClusterNodeOptions options,
                                                            DecisionTable& table,
                                                            prometheus::Registry& registry);
  // Stop().
  ~ClusterNode();
  // A clean stop: stops writing (writer_stopped), releases every lease so other nodes take over
  // at once, stops the replica. Idempotent.
  void Stop();

  // One tick (see Ownership::Tick), then the writer and the partitions brought in line. Runs
  // what RunOnThread posted first.
  void Tick();

  // Runs `task` on the node's thread (the one that ticks and polls: what the partition counter
  // requires), before its next poll or tick, in the order posted; never blocks. E.g. a rule
  // reload (ApplyRuleReload). Tasks still posted at Stop are dropped.
  void RunOnThread(std::function<void()> task);

  // A manual ban / unban carried out by the writer (its answer, same code and text on error);
  // kUnavailable when no writer answered within command_deadline.
  absl::StatusOr<palisade::v1::Decision> AddManual(const palisade::v1::AddDecisionRequest& req);
  absl::StatusOr<palisade::v1::Decision> Withdraw(const std::string& id);

  // A detection made here, queued for the writer (never blocks; dropped and counted when the
  // queue is full). Here and in SendDetection, a detection over NATS' payload limit goes with
  // its evidence cut to fit (evidence_cut(), palisade_cluster_detection_evidence_cut_total).
  void ForwardDetection(const Detection& detection);
  // Sends one detection to the writer and waits for its answer (kUnavailable when no writer
  // took it within `deadline`, command_deadline when zero): `id` (e.g. a ClusterDetection's)
  // makes a repeat, from this node or another, be carried out once by a writer that answered
  // it before. Called from the node's thread (the partition counter's callback), keep the
  // deadline under a tick (lease_term / 3): the counter offers a refused detection again.
  absl::Status SendDetection(const std::string& id, const Detection& detection,
                             absl::Duration deadline = absl::ZeroDuration());
  uint64_t detections_forwarded() const { return forwarded_.load(); }
  uint64_t detections_dropped() const { return forward_dropped_.load(); }
  // Detections sent with their evidence cut to fit NATS' payload limit.
  uint64_t evidence_cut() const { return evidence_cut_.load(); }

  bool writer() const { return writing_.load(); }
  const std::string& node_id() const { return options_.node_id; }
  DecisionView& view() { return view_; }
  DecisionReplica& replica() { return *replica_; }
  NatsClient& nats() { return *nats_; }
  CommandClient& commands() { return *client_; }
  // Reads the leases and the stream now (NATS requests).
  ClusterNodeStatus Status();

 private:
  ClusterNode(ClusterNodeOptions options, DecisionTable& table, prometheus::Registry& registry);
  void Run();
  void BecomeWriter();
  // writer_started, then the command server: once the take-over state is stored.
  void StartEdge();
  void StepDown(const std::string& why);
  // Another process holds this node id's presence (LeaseTable::ClaimPresence): stops writing and
  // counting, says why, and renews nothing from then on.
  void OnDuplicate(const absl::Status& why);
  // At Start: claims the presence (see ClusterNodeOptions::wait_out_presence); NATS errors are
  // retried for `setup`.
  absl::Status ClaimPresenceAtStart(absl::Duration setup);
  absl::StatusOr<std::string> Handle(absl::string_view kind, absl::string_view body);
  // Waits until this node's replica applied what the stream holds now.
  bool CatchUp(absl::Duration timeout);
  // At Start, with a store: the stream sequence to resume the log after (0: from its start),
  // and the stream's creation time read into log_created_.
  uint64_t ResumePosition();
  // On the replica's thread, once the change at `sequence` is applied: keeps it in the store.
  void KeepPosition(uint64_t sequence);
  void Log(const std::string& m) const;
  void RunPosted();
  void RunForwarder();
  // A detection from any node, decided here; answered once the decision log holds the change
  // (kUnavailable before: the sender offers it again under the same id).
  absl::StatusOr<std::string> ApplyDetection(absl::string_view body);
  // A detection as the command channel carries it, its evidence cut to fit NATS' payload limit
  // when it would not (counted).
  std::string EncodeForWriter(const Detection& detection);

  ClusterNodeOptions options_;
  DecisionTable& table_;
  uint64_t listener_id_ = 0;  // its listener on table_, removed at Stop
  Clock& clock_;
  std::unique_ptr<NatsClient> nats_;
  std::unique_ptr<LeaseTable> leases_;
  std::unique_ptr<Ownership> ownership_;  // the tick's (one thread at a time)
  // Held while a change read from the log is applied (view and table), and while StepDown sets
  // the table to the view: the two never interleave.
  absl::Mutex mirror_mu_;
  DecisionView view_;  // its waiting claims capped at the table's max_active_bytes
  // Whether StepDown found the view's snapshots of the last state overflowed (one refused for
  // the cap): the table, which never had the refused one, keeps its claims stale past that
  // state's end (the end drops none) until the next state. The table took every snapshot read
  // after StepDown, so a view merely pending does not count.
  bool stepped_down_overflowed_ ABSL_GUARDED_BY(mirror_mu_) = false;
  std::unique_ptr<DecisionReplica> replica_;
  // The decision stream's creation time (unix ns; 0: not read, no position kept), set at Start;
  // and whether keeping the position failed last (the replica thread's).
  int64_t log_created_ = 0;
  bool position_failing_ = false;
  // The replica thread's: the sequence of the last change applied; and, from a full state until
  // the end of the writer's snapshots after it (kWaitingEnd, or any other change: no end comes
  // then), the one before that state, which is the position kept meanwhile. The state's stale
  // marks live in the table's memory only: a node restarted after the state would read the end
  // without them (and, not having read the state, the replica hands no end on), keeping claims
  // the writer had dropped. Resumed from before the state, it reads the state again, then the
  // snapshots and their end.
  uint64_t applied_position_ = 0;
  std::optional<uint64_t> before_state_;
  std::unique_ptr<CommandClient> client_;
  // The writer's parts: set and reset by the tick only; the table's listener reads log_writer_.
  absl::Mutex writer_mu_;
  std::shared_ptr<DecisionLogWriter> log_writer_ ABSL_GUARDED_BY(writer_mu_);
  std::unique_ptr<CommandServer> command_server_;
  bool edge_started_ = false;  // the tick's: writer_started ran (and writer_stopped did not)
  // This node writes: set and cleared with log_writer_, under writer_mu_ (read without it).
  std::atomic<bool> writing_{false};
  // The tick's: when the last tick that succeeded started (its leases hold a term from then at
  // least), and the partitions handed to partitions_changed.
  absl::Time last_good_tick_ = absl::InfinitePast();
  std::set<uint32_t> counting_;
  absl::Mutex status_mu_;
  std::string last_error_ ABSL_GUARDED_BY(status_mu_);
  std::set<uint32_t> owned_ ABSL_GUARDED_BY(status_mu_);
  bool gated_ ABSL_GUARDED_BY(status_mu_) = false;
  absl::Mutex stop_mu_;
  bool stopped_ ABSL_GUARDED_BY(stop_mu_) = false;
  // Start returned the node: the `stopping` hook may run (a node that failed half-way, say in
  // NatsClient::Connect, made nothing it would save).
  bool started_ = false;
  // This process claimed its presence at Start (released at a clean Stop); and found another
  // process holding it since (the tick's; read by Stop after the thread ended).
  bool holds_presence_ = false;
  std::atomic<bool> duplicate_{false};
  absl::Notification stopping_;
  std::thread thread_;
  absl::Mutex posted_mu_;
  std::vector<std::function<void()>> posted_ ABSL_GUARDED_BY(posted_mu_);
  // Detections this node applied as the writer whose change the log did not take (their senders
  // were told kUnavailable): by a hash of the detection, the reply. A repeat is not applied again
  // while the table holds a decision on its key. At most kMaxUnconfirmed, oldest dropped.
  static constexpr size_t kMaxUnconfirmed = 1024;
  absl::Mutex unconfirmed_mu_;
  absl::flat_hash_map<size_t, std::string> unconfirmed_ ABSL_GUARDED_BY(unconfirmed_mu_);
  std::deque<size_t> unconfirmed_order_ ABSL_GUARDED_BY(unconfirmed_mu_);
  // Detections waiting for the writer: (command id, body), oldest first.
  absl::Mutex forward_mu_;
  std::deque<std::pair<std::string, std::string>> forward_queue_ ABSL_GUARDED_BY(forward_mu_);
  size_t forward_bytes_ ABSL_GUARDED_BY(forward_mu_) = 0;  // ForwardCost of each queued
  bool forward_stopping_ ABSL_GUARDED_BY(forward_mu_) = false;
  std::string forward_prefix_;  // "<node>:<incarnation>:d"
  uint64_t forward_next_ ABSL_GUARDED_BY(forward_mu_) = 0;
  std::atomic<uint64_t> forwarded_{0}, forward_dropped_{0}, evidence_cut_{0};
  std::thread forwarder_;
  prometheus::Gauge& writer_gauge_;
  prometheus::Gauge& owned_gauge_;
  prometheus::Gauge& partitions_gauge_;
  prometheus::Gauge& live_gauge_;
  prometheus::Gauge& lag_gauge_;
  prometheus::Gauge& connected_gauge_;
  prometheus::Counter& ticks_ok_;
  prometheus::Counter& ticks_failed_;
  prometheus::Family<prometheus::Counter>& forward_family_;  // declared in the order built
  prometheus::Counter& writer_changes_;
  prometheus::Counter& evidence_cut_counter_;
};

}  // namespace palisade::cluster

#endif  // PALISADE_SERVICES_CLUSTER_CLUSTER_NODE_H_
