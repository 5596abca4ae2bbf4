// Threat feeds across the cluster (issue 17; docs/CLUSTER.md, "Threat feeds"): the edge writer's
// feed versions published in a JetStream KV bucket, and every node following them, so every
// node's in_feed conditions match the same set while only the writer turns feeds into decisions.
//
// The bucket (`palisade_feeds`, the cluster's replicas) holds, per feed:
//   "h.<feed>"        the head: "v1 <version> <generation> <chunks> <bytes>" (text; '.' in the
//                     feed's name written '=', as KV keys want);
//   "c.<gen>.<i>"     chunk i of the version's palisade.v1.FeedState, serialized and cut in
//                     pieces of at most chunk_bytes (under NATS' 1 MiB payload); a generation is
//                     "<node>-<random>", one per publish.
// A publish writes the chunks under a fresh generation, then the head, then purges the chunks of
// the generation it replaced; a reader that finds a chunk gone (replaced meanwhile) or the
// pieces not adding up reads again at its next poll. As the partition counter's windows
// snapshot (partition_counter.cc), kept whole across chunks.
//
// Publish (the writer: FeedManagerOptions::on_version) only queues, the latest version per feed;
// Poll sends what is queued (kept for the next poll when NATS fails) and then reads the heads,
// handing each version newer than the last one read to `apply` (FeedManager::Follow, which
// ignores a version older than or equal to what the node holds). Open reads the current
// versions once before it returns: a node started later matches the cluster's feeds from its
// first line.
//
// Thread-safety: Publish and the accessors from any thread; Poll from one thread at a time (the
// sync's own thread when run_thread).
#ifndef PALISADE_SERVICES_CLUSTER_FEED_SYNC_H_
#define PALISADE_SERVICES_CLUSTER_FEED_SYNC_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "palisade/v1/state.pb.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"
#include "services/cluster/nats_client.h"

namespace palisade::cluster {

struct FeedSyncOptions {
  std::string bucket = "palisade_feeds";
  int replicas = 1;
  std::string node_id;  // names this node's generations
  // The configured feeds (those read by Poll).
  std::vector<std::string> feeds;
  // Under NATS' default max_payload (1 MiB) with room for the message's headers.
  size_t chunk_bytes = 512u << 10;
  // A published version to apply: true applied, false ignored (stale); an error is logged.
  std::function<absl::StatusOr<bool>(absl::string_view feed, const palisade::v1::FeedState&)>
      apply;
  // Poll on a thread of its own this often (false: the caller calls Poll()).
  bool run_thread = true;
  absl::Duration interval = absl::Seconds(1);
  std::function<void(const std::string&)> log;
  // palisade_cluster_feed_versions_total{result=published|applied|stale|failed} (null: none).
  prometheus::Registry* metrics = nullptr;
};

class FeedSync {
 public:
  // Opens (or creates) the bucket and reads the current versions (Poll once: its errors are
  // logged, not returned; only the bucket's are).
  static absl::StatusOr<std::unique_ptr<FeedSync>> Open(NatsClient& nats, FeedSyncOptions options);
  ~FeedSync();

  // Queues `state` as the feed's version to publish (a later one replaces it); never blocks on
  // NATS.
  void Publish(absl::string_view feed, const palisade::v1::FeedState& state);
  // Publishes what is queued, then applies the versions newer than those read before. The first
  // error (the rest still tried).
  absl::Status Poll();

  struct Stats {
    uint64_t published = 0;  // versions written to the bucket
    uint64_t applied = 0;    // versions `apply` took
    uint64_t stale = 0;      // versions `apply` ignored
    uint64_t failures = 0;   // publishes and reads that failed (retried at the next poll)
  };
  Stats stats() const;

 private:
  FeedSync(FeedSyncOptions options, kvStore* kv);
  absl::Status Flush();
  absl::Status Follow();
  absl::Status Write(const std::string& feed, uint64_t version, const std::string& bytes);
  void Log(const std::string& m) const;
  // stats_ and the counters together.
  void Count(uint64_t Stats::*field, prometheus::Counter* counter, uint64_t n = 1)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const FeedSyncOptions options_;
  kvStore* const kv_;
  mutable absl::Mutex mu_;
  // Feed -> (version, serialized FeedState) waiting to be published.
  std::map<std::string, std::pair<uint64_t, std::string>> pending_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);
  prometheus::Counter* published_ = nullptr;
  prometheus::Counter* applied_ = nullptr;
  prometheus::Counter* stale_ = nullptr;
  prometheus::Counter* failed_ = nullptr;
  // Poll's: per feed, the head last handled (version, generation) and the chunks it holds.
  struct Seen {
    uint64_t version = 0;
    std::string generation;
    uint32_t chunks = 0;
  };
  std::map<std::string, Seen> seen_;
  absl::Mutex run_mu_;
  bool stop_ ABSL_GUARDED_BY(run_mu_) = false;
  std::thread thread_;
};

}  // namespace palisade::cluster

#endif  // PALISADE_SERVICES_CLUSTER_FEED_SYNC_H_
