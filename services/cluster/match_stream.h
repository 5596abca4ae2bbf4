// The match stream of the cluster (issue 17; docs/ARCHITECTURE.md, "Cluster"): every node parses
// and matches its own lines, and only matches (rule, key, event time, evidence) leave it, on
// subject `<prefix>.<partition>` where the partition is PartitionOf(PartitionKeyOf(key)) (the
// key, or an IPv6 address's /48). The node that owns a partition (LeaseTable) reads it with a
// durable consumer and keeps that partition's windows.
//
// MatchPublisher: a node's way out. Enqueue never blocks the pipeline: matches wait in a queue
// bounded in bytes (past the bound a match is dropped and counted), and one thread publishes them
// in order, each with the id "<node>:<incarnation>:<sequence>", so a publish retried after a lost
// ack is stored once by the stream's de-duplication, and a restarted node (a new incarnation)
// never reuses an id. Matches go out in batches (up to `batch` in flight, libnats' asynchronous
// publish) and leave the queue only when the stream acknowledged every one of the batch; a batch
// with a failure is sent again without the ones the stream acknowledged (sending those again
// would store them twice once the stream's de-duplication window passed, NATS away longer than
// it). So in normal operation a node's matches are stored in its order; after a failure a
// resent match may land after a later one of its batch (the owner counts in event time, which
// does not mind). While
// NATS is away the thread retries with a capped backoff and the queue holds what comes
// meanwhile; when NATS returns it catches up. A match refused for its own size (over NATS'
// payload limit, or the stream's largest message) could never be stored: it is dropped and
// counted (dropped(), last_failure()) and the rest of its batch goes on (MatchRouter cuts a
// match's evidence to fit max_match_bytes(), so only a match with nothing left to cut is).
//
// PartitionConsumer: an owner's way in. A durable pull consumer per partition ("<name>-p<N>",
// filtered on that partition's subject, ack-all), so a new owner resumes after the last
// acknowledged match; a match is acknowledged (with every one before it) only after the callback
// took it, and one not acknowledged is delivered again.
//
// Thread-safe: MatchPublisher's methods may be called from any thread. A PartitionConsumer is
// used by one thread (the partition's owner loop).
#ifndef PALISADE_SERVICES_CLUSTER_MATCH_STREAM_H_
#define PALISADE_SERVICES_CLUSTER_MATCH_STREAM_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/cluster/nats_client.h"

typedef struct __natsSubscription natsSubscription;
typedef struct __natsMsg natsMsg;
typedef struct jsPubAck jsPubAck;
typedef struct jsPubAckErr jsPubAckErr;

namespace palisade::cluster {

// The partition of the match stream a key belongs to: a stable hash (FNV-1a, 64 bits) of the
// key modulo `partitions`, the same on every node and every build (absl::Hash is not stable
// across processes, so it cannot be used here).
uint32_t PartitionOf(absl::string_view key, uint32_t partitions);

// What a match is routed by (MatchRouter::Route; PartitionCounter refuses a match whose
// PartitionOf(PartitionKeyOf(key)) is not its partition): for an IPv6 address that embeds no
// IPv4 one, or a 6to4 one (2002::/16: its /48 is one IPv4 host's), the text of its /48
// ("2001:db8:1::/48"); for anything else (IPv4, a NAT64 or Teredo address: its IPv4 host's,
// routed alone; a user name, a token's fingerprint) the key itself. Why: one client holds a
// whole /64 and may take a new address of it for each try; its owner's engine detects that
// only when every address of the range reaches the same engine (the range window,
// EngineOptions::ipv6_window_prefix). A /48 rather
// than the fold prefix: the fold is 48 or 64 by config and every /64 lies in its /48, so the
// routing holds whichever the nodes use and does not depend on config. The cost: all of one
// /48's matches land on one partition, so a flood from one /48 loads one owner, as one IPv4
// address's does. In a rolling upgrade from a build that routed an IPv6 address by itself,
// an owner of either build refuses (as of another partition) the IPv6 matches a node of the
// other sent elsewhere than its own routing would; IPv4 keys count as before. The rule set gate
// is not used for this: it would refuse every match of the other build's nodes. (PeerLimitKey,
// common/ip.h, is close but takes an embedding address's IPv4 text: a key is routed by its own.)
std::string PartitionKeyOf(absl::string_view key);

struct MatchPublisherOptions {
  std::string node_id;
  std::string subject_prefix = "palisade.matches";
  uint32_t partitions = 16;
  // The queue's bound: the bytes of the matches waiting (plus a fixed cost per match).
  size_t max_queued_bytes = 64u << 20;
  // Matches in flight at once (one acknowledged batch).
  size_t batch = 256;
  // Between attempts while NATS refuses: doubles from `retry_min` up to `retry_max`.
  absl::Duration retry_min = absl::Milliseconds(100);
  absl::Duration retry_max = absl::Seconds(5);
};

class MatchPublisher {
 public:
  static absl::StatusOr<std::unique_ptr<MatchPublisher>> Start(NatsClient& nats,
                                                               MatchPublisherOptions options);
  // Publishes what is queued (NATS permitting: at most `retry_max` more), then stops.
  ~MatchPublisher();

  // Queues `match` (serialized) for the partition of `key`, PartitionOf(key) (MatchRouter
  // gives PartitionKeyOf of the match's key). false: the queue was full and the match was
  // dropped (counted in dropped()).
  bool Enqueue(absl::string_view key, std::string match);

  // The largest match that NATS takes (MaxMessageBytes of the connection, read again before
  // each batch: a reconnection may reach a server with another limit). Cheap: per match.
  size_t max_match_bytes() const { return max_match_bytes_.load(std::memory_order_relaxed); }

  // Waits until every match queued so far is acknowledged by the stream, or `timeout`.
  bool WaitUntilPublished(absl::Duration timeout);

  uint64_t published() const { return published_.load(); }
  // The queue full, stopping while NATS refused, or refused for its size.
  uint64_t dropped() const { return dropped_.load(); }
  uint64_t publish_failures() const { return failures_.load(); }
  // Why the last failed batch failed ("" before any failure): NATS' status or the stream's
  // error, e.g. "No Responders Available For Request" while the stream has no leader.
  std::string last_failure() const;
  size_t queued_bytes() const;

  // A match's cost against max_queued_bytes: its bytes plus the queue's bookkeeping.
  static size_t Cost(size_t match_bytes) { return match_bytes + 64; }

 private:
  struct Item {
    uint32_t partition;
    uint64_t sequence;
    std::string match;
  };
  MatchPublisher(NatsClient& nats, MatchPublisherOptions options);
  void Run();
  // Sends `items` (the queue's front) and waits for the stream's acks: true when every one
  // was acknowledged or refused for its size. Either way the sequences acknowledged are in
  // batch_acked_sequences_, those refused in batch_refused_sequences_.
  bool SendBatch(const std::vector<const Item*>& items);
  // Keeps `why` as the batch's failure unless it has one already.
  void NoteBatchFailure(absl::string_view why);
  static void OnAck(jsCtx* js, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure);

  NatsClient& nats_;
  const MatchPublisherOptions options_;
  const std::string id_prefix_;  // "<node>:<incarnation>:"
  mutable absl::Mutex mu_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t acked_through_ ABSL_GUARDED_BY(mu_) = 0;  // sequences below this are acknowledged
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> published_{0}, dropped_{0}, failures_{0};
  std::atomic<size_t> max_match_bytes_{0};
  // The batch in flight: acknowledgements counted by OnAck (a libnats thread).
  std::atomic<size_t> batch_acked_{0}, batch_failed_{0}, batch_refused_{0};
  mutable absl::Mutex acked_mu_;
  std::vector<uint64_t> batch_acked_sequences_ ABSL_GUARDED_BY(acked_mu_);
  std::vector<uint64_t> batch_refused_sequences_ ABSL_GUARDED_BY(acked_mu_);
  std::string batch_failure_ ABSL_GUARDED_BY(acked_mu_);  // the batch's first failure
  std::string last_failure_ ABSL_GUARDED_BY(acked_mu_);
  jsCtx* js_ = nullptr;  // this publisher's own context, with OnAck
  std::thread thread_;
};

class PartitionConsumer {
 public:
  // Binds (or creates) the durable consumer "<durable_prefix>-p<partition>" on `stream`.
  static absl::StatusOr<std::unique_ptr<PartitionConsumer>> Open(NatsClient& nats,
                                                                 const std::string& stream,
                                                                 const std::string& subject_prefix,
                                                                 const std::string& durable_prefix,
                                                                 uint32_t partition);
  ~PartitionConsumer();

  // Fetches up to `max` matches (waiting at most `wait` for the first) and gives each to `take`
  // in stream order with its stream sequence; acknowledges each one `take` returned OK for. A
  // match `take` refused is not acknowledged (delivered again later) and ends this poll with
  // that status. Returns how many were taken.
  absl::StatusOr<size_t> Poll(
      size_t max, absl::Duration wait,
      const std::function<absl::Status(uint64_t stream_sequence, absl::string_view match)>& take);

 private:
  PartitionConsumer() = default;
  natsSubscription* sub_ = nullptr;
  std::string subject_;
};

}  // namespace palisade::cluster

#endif  // PALISADE_SERVICES_CLUSTER_MATCH_STREAM_H_
