// The owner's side of the cluster's split (issue 17; docs/ARCHITECTURE.md, "Cluster"): for each
// partition of the match stream this node owns (Ownership), read the partition's matches in
// stream order, count each in that partition's own Engine (Engine::CountMatch) and hand each
// detection to the callback (the edge writer's path); a threshold crossed by matches that
// several nodes read is detected here, once.
//
// Exactly once across a take-over. Per partition, the windows bucket (a JetStream KV bucket,
// default "palisade_windows") holds:
//   p<N>.emitted   the stream sequence through which every detection was handed to the callback
//                  and the callback returned OK (the "ack"), written after each Poll, only
//                  ever forward (compare-and-set: a former owner behind never moves it back);
//   p<N>.head      a snapshot of the partition's windows after counting every match through a
//                  stream sequence S (palisade.v1.PartitionSnapshotHead), its windows in chunks
//                  p<N>.g<generation>.<i> written before it; taken every `snapshot_every`
//                  matches or `snapshot_interval`, and by SnapshotAll before a clean hand-over.
//                  No chunk outlives the head that names it (the bucket has no TTL): a new
//                  head is written by compare-and-set on the one read, and its writer purges
//                  the chunks of the one it replaced (by subject: no marker left); an attempt
//                  whose chunk write fails purges the chunks it wrote, and one whose head write
//                  fails reads the head back (a publish can fail after the server stored it)
//                  and purges its chunks unless the head names them. A purge that fails is
//                  tried again every `stall` (Poll) and at SnapshotAll.
// A node that gains partition N restores the snapshot, then reads the partition from S + 1 in
// stream order (an ordered consumer: no redelivery can reorder it): matches through the emitted
// position are counted without raising their detections again (they were handed over already),
// later ones are counted and raise theirs. Counting is a function of the partition's matches in
// stream order, so the crossing the old owner would have raised is raised by the new one, with
// the same id ("<stream>:<sequence>" of the crossing match): a detection handed over but whose
// emitted position was not yet written comes again with the same id, for the writer to drop.
// Why a snapshot rather than replaying the stream from the rules' longest window: windows of a
// day (recidive) would mean replaying a day of matches at every take-over, and the stream's own
// timestamps are not the matches' event times (a backlog shipped late).
//
// Matches are checked before they count: one whose rule_set_version differs from this node's,
// one of a rule this node does not have, or one whose key is not of this partition (by
// PartitionKeyOf: an IPv6 address's range is routed whole, and its engine counts the range
// window too) or not valid is refused (counted by reason, the last reason kept) and skipped.
// The rule set gate: the edge writer publishes its RuleSetVersion in the bucket (key
// "rule-set", PublishRuleSet); a node whose version differs must not own partitions: Apply
// refuses to open gained partitions with kFailedPrecondition naming both versions, and
// CheckRuleSet says the same before a tick.
//
// Thread-safety: Apply, Poll, SnapshotAll, PublishRuleSet, CheckRuleSet and SetRules are called
// from one thread (the node's cluster loop); stats(), last_refusal() and partitions() from any.
#ifndef PALISADE_SERVICES_CLUSTER_PARTITION_COUNTER_H_
#define PALISADE_SERVICES_CLUSTER_PARTITION_COUNTER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/cluster/match_router.h"
#include "services/cluster/nats_client.h"
#include "services/cluster/ownership.h"
#include "services/common/clock.h"
#include "services/engine/engine.h"
#include "services/engine/rule_set.h"

typedef struct __kvStore kvStore;

namespace palisade::cluster {

// A detection raised by a partition's owner.
struct ClusterDetection {
  // "<stream>:<sequence>" of the match that crossed the threshold: the same whichever node
  // counts the partition, so the writer drops a repeat after a take-over.
  std::string id;
  uint32_t partition = 0;
  uint64_t sequence = 0;
  std::string origin_node;  // the node that matched the crossing line
  // As Engine::Process raises it (rule, key, time, evidence); `rule` is valid while the rules
  // given to the counter (options or SetRules) live. Never a secret (token-fingerprint rules
  // are counted where they matched).
  Detection detection;
};

struct PartitionCounterOptions {
  std::string node_id;
  // The match stream and its subjects (as the MatchPublisher's): "<subject_prefix>.<p>".
  std::string stream = "PALISADE_MATCHES";
  std::string subject_prefix = "palisade.matches";
  uint32_t partitions = 16;
  // The windows bucket (created if missing) and its replicas (3 on a three-server cluster).
  std::string bucket = "palisade_windows";
  int replicas = 1;
  // The counting rules and their RuleSetVersion. Required.
  std::shared_ptr<const RuleSet> rules;
  std::string rule_set_version;
  // Each owned partition has its own Engine with these options, but for its share of the
  // memory budget and of the key cap: memory_budget_bytes / partitions and
  // max_keys_per_rule / partitions (keys spread evenly over partitions), so the windows of all
  // the partitions a node may come to own stay within the budget given here.
  EngineOptions engine;
  // Matches read per partition per Poll.
  size_t max_batch = 512;
  // How long a Poll waits when no owned partition has a match waiting (0: returns at once).
  absl::Duration poll_wait = absl::Milliseconds(50);
  // A partition's windows are snapshotted after this many matches counted, or this long (on the
  // clock) after its last snapshot when it counted any since.
  uint64_t snapshot_every = 10'000;
  absl::Duration snapshot_interval = absl::Seconds(30);
  // Windows per snapshot chunk are added until a chunk is this large (NATS' payload limit is
  // 1 MiB by default).
  size_t snapshot_chunk_bytes = 256 << 10;
  // Windows age: every `expire_every` of the clock, each partition's windows older than their
  // rule's window are dropped, in the event time of the latest match it counted (at most the
  // clock, at least a day behind it).
  absl::Duration expire_every = absl::Seconds(10);
  // A partition's reader silent this long (on the clock) while the stream holds more of its
  // matches is made again after the last match read.
  absl::Duration stall = absl::Seconds(5);
  Clock* clock = nullptr;  // null: the real clock
  // Tests only (null in production): called with each snapshot key (chunk or head) before it
  // is written to the windows bucket, `stored` false: a non-OK status fails the write, nothing
  // stored; and after it was written, `stored` true: a non-OK status is returned as the
  // write's error although the bucket holds the value (as when a publish's ack is lost).
  std::function<absl::Status(const std::string& key, bool stored)> snapshot_write_fault;
};

class PartitionCounter {
 public:
  using DetectionCallback = std::function<absl::Status(const ClusterDetection&)>;

  // Opens (or creates) the windows bucket. `nats` must outlive the counter. kInvalidArgument
  // without rules, a rule set version or a node id.
  static absl::StatusOr<std::unique_ptr<PartitionCounter>> Open(NatsClient& nats,
                                                                PartitionCounterOptions options,
                                                                DetectionCallback on_detection);
  ~PartitionCounter();

  // Ownership changed: a lost partition stops being counted at once (its reader closed, its
  // windows and undelivered detections dropped; its snapshot is the new owner's business); a
  // gained one has its windows restored from its snapshot and is read from there (the replay
  // up to its emitted position happens in the following Polls). kFailedPrecondition (nothing
  // opened) when the cluster's rule set differs from this node's; other errors name the
  // partition. A gained partition not opened stays wanted (unopened()): Poll tries again every
  // `stall` until it opens or is lost. While the rule sets differ its matches wait in the
  // stream: the node should release such partitions (see the header comment).
  absl::Status Apply(const Ownership::Change& change);

  // Partitions gained but not opened yet (rule sets differing, NATS failing).
  std::vector<uint32_t> unopened() const;

  // Reads and counts what is waiting on the owned partitions (at most max_batch each), hands
  // the detections over, records the emitted positions, takes the snapshots that are due and
  // ages the windows. A detection the callback refuses is offered again at the next Poll, and
  // its partition reads nothing more until it is taken (the error is returned, naming the
  // partition; once one was refused, no other is offered in the same Poll: each offer may
  // wait, and the thread that polls renews the leases); but one refused for good (kInvalidArgument, kFailedPrecondition, kNotFound and
  // the like: e.g. its rule is not loaded on the writer, which answers a repeat from memory) is
  // dropped, counted in stats().rejected and last_refusal(), and the partition reads on.
  // Returns the matches read.
  absl::StatusOr<size_t> Poll();

  // Snapshots every owned partition now (before a clean stop and Ownership::ReleaseAll, so the
  // next owner replays nothing).
  absl::Status SnapshotAll();

  // The edge writer: publishes this node's rule set version as the cluster's.
  absl::Status PublishRuleSet();
  // OK when the cluster has no published rule set or the same as this node's;
  // kFailedPrecondition naming both versions (and the node that published the cluster's) when
  // they differ.
  absl::Status CheckRuleSet();

  // A rule reload: each partition's windows of the rules that keep their id are kept
  // (Engine::SetRules); matches carrying another version are refused from now on.
  void SetRules(std::shared_ptr<const RuleSet> rules, std::string rule_set_version);

  struct Stats {
    uint64_t counted = 0;            // matches counted into windows
    uint64_t replayed = 0;           // of which counted again on a take-over (not re-raised)
    uint64_t detections = 0;         // handed to the callback and taken
    uint64_t callback_failures = 0;  // refusals of the callback (offered again, unless for good)
    uint64_t rejected = 0;           // of them, refused for good: dropped (see Poll)
    uint64_t refused_version = 0;    // matches of another rule set version
    uint64_t refused_invalid = 0;    // unreadable, unknown rule, bad key, wrong partition
    uint64_t trimmed = 0;            // take-overs whose replay began where the stream was trimmed
    uint64_t snapshots = 0;          // snapshots written
    uint64_t snapshot_failures = 0;  // not written, or unreadable at a take-over
    uint64_t chunks_purged = 0;      // chunk keys of replaced or failed snapshots purged
    uint64_t chunks_abandoned = 0;   // such keys left in the bucket (kMaxOrphans, below)
    uint64_t resubscribed = 0;       // readers made again (failed, or stalled)
  };
  Stats stats() const;
  std::string last_refusal() const;

  struct PartitionStatus {
    uint32_t partition = 0;
    uint64_t position = 0;    // last stream sequence read
    uint64_t emitted = 0;     // detections handed over through this sequence
    uint64_t snapshot = 0;    // the last snapshot's sequence
    bool rebuilding = false;  // still replaying up to `emitted`
    size_t windows = 0;
    absl::Duration rebuild_time;  // from Apply to the end of the replay (once done)
  };
  std::vector<PartitionStatus> partitions() const;

 private:
  struct Partition;
  PartitionCounter(NatsClient& nats, PartitionCounterOptions options, kvStore* kv,
                   DetectionCallback on_detection);
  absl::Status Open(uint32_t p);
  absl::Status OpenUnopened();
  EngineOptions PartitionEngineOptions() const;
  void PublishStatus();
  absl::Status Subscribe(Partition& part);
  absl::Status Take(Partition& part, uint64_t sequence, absl::string_view data);
  absl::Status Deliver(Partition& part);
  absl::Status Snapshot(Partition& part);
  absl::Status WriteSnapshotKey(const std::string& key, absl::string_view value);
  // The head, by compare-and-set on `revision` (0: the key must not exist); `conflict`: it
  // lost (another wrote the head since `revision`).
  absl::Status WriteSnapshotHead(const std::string& key, const std::string& value,
                                 uint64_t revision, bool* conflict);
  void AddOrphans(uint32_t p, std::string generation, uint32_t chunks, bool unsure);
  absl::Status PurgeOrphans();
  absl::Status WriteEmitted(Partition& part);
  void Refuse(bool version, std::string reason);

  NatsClient& nats_;
  PartitionCounterOptions options_;
  kvStore* kv_;
  Clock* clock_;
  DetectionCallback on_detection_;
  std::map<uint32_t, std::unique_ptr<Partition>> owned_;  // the cluster thread's only
  std::set<uint32_t> unopened_;                           // gained, not opened yet
  // The callback refused a detection (not for good) in this Poll: no other is offered in it.
  bool refused_this_poll_ = false;
  absl::Time last_open_attempt_;
  // Chunks p<p>.g<generation>.<0..chunks-1> that no head names, to purge; `unsure`: the
  // head's write failed and so did reading it back, so it may name them (then they are a
  // snapshot, and not purged). At most kMaxOrphans snapshots' worth: past it, the oldest are
  // given up on (stats().chunks_abandoned).
  struct Orphans {
    uint32_t p = 0;
    std::string generation;
    uint32_t chunks = 0;
    bool unsure = false;
  };
  static constexpr size_t kMaxOrphans = 1024;
  std::deque<Orphans> orphans_;
  absl::Time last_orphan_purge_;
  absl::Time last_expire_;
  mutable absl::Mutex mu_;  // what other threads read
  Stats stats_ ABSL_GUARDED_BY(mu_);
  std::string last_refusal_ ABSL_GUARDED_BY(mu_);
  std::vector<PartitionStatus> status_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> unopened_status_ ABSL_GUARDED_BY(mu_);
};

// Keeps an error repeated at every Poll (the writer away: every 20 ms) from flooding the log:
// the first is logged, then at most one line per `every` on the clock, saying how many came
// since. Not thread-safe (the node's thread's).
class LogThrottle {
 public:
  explicit LogThrottle(Clock& clock, absl::Duration every = absl::Minutes(1))
      : clock_(clock), every_(every) {}
  // What to log for `message` now: the message (with the count of those not logged since the
  // last line), or "" for nothing.
  std::string Note(absl::string_view message);

 private:
  Clock& clock_;
  const absl::Duration every_;
  absl::Time last_ = absl::InfinitePast();
  uint64_t held_ = 0;
};

// A rule reload on a clustered node (SIGHUP, Admin.ReloadRules), on the node's thread (the
// counter's; ClusterNode::RunOnThread): the router's matches carry the new RuleSetVersion from
// now on, each owned partition counts with the new rules (windows of rules that keep their id
// kept), and when this node writes, the new version is published as the cluster's, so the nodes
// with other rules (their reload failed, or not done yet) release their partitions until they
// agree (ClusterNodeOptions::may_own_partitions). Returns the new version; an error of the
// publish (the local rules changed all the same; the writer publishes again when it next gains
// the lease, and an operator reloads again).
absl::StatusOr<std::string> ApplyRuleReload(std::shared_ptr<const RuleSet> rules,
                                            MatchRouter& router, PartitionCounter& counter,
                                            bool writer);

}  // namespace palisade::cluster

#endif  // PALISADE_SERVICES_CLUSTER_PARTITION_COUNTER_H_
