// Named leases in a JetStream key-value bucket: which node owns a partition of the match stream,
// which node is the edge writer (issue 17; docs/ARCHITECTURE.md, "Cluster").
//
// A lease is one key whose value says {holder, until}. Every change is a compare-and-set on the
// key's revision (kvStore_Create for a key never held, kvStore_Update with the revision read),
// so when two nodes race for a free or run-out lease exactly one wins and the other learns it
// lost. `until` is written from the claiming node's injected clock: a lease counts as run out
// only when `until + skew` has passed on the reader's clock, so nodes whose clocks agree within
// `skew` (as NTP keeps them) never see two live holders. The bucket's TTL (a few terms) only
// cleans up keys of nodes gone for good; liveness is `until`, which tests drive with a
// SimulatedClock.
//
// Thread-safe: each call is one or two JetStream requests; concurrent calls on one table or on
// tables of different nodes are what the compare-and-set is for.
#ifndef PALISADE_SERVICES_CLUSTER_LEASE_TABLE_H_
#define PALISADE_SERVICES_CLUSTER_LEASE_TABLE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "services/cluster/nats_client.h"
#include "services/common/clock.h"

typedef struct __kvStore kvStore;

namespace palisade::cluster {

struct LeaseOptions {
  std::string bucket = "palisade_leases";
  int replicas = 1;
  // This node's id, written as the holder. [A-Za-z0-9_-], at most 64 bytes.
  std::string node_id;
  // How long a claim or renewal holds. A holder renews well before (a third of it, say).
  absl::Duration term = absl::Seconds(15);
  // The clock difference between nodes the leases tolerate.
  absl::Duration skew = absl::Seconds(2);
  Clock* clock = nullptr;  // null: the real clock
};

class LeaseTable {
 public:
  // Opens (or creates) the bucket.
  static absl::StatusOr<std::unique_ptr<LeaseTable>> Open(NatsClient& nats, LeaseOptions options);
  ~LeaseTable();

  // Takes lease `name` when it is free, released or run out, or renews it when this node holds
  // it. true: this node holds it until now + term. false: another node holds it (or won the race
  // for it). `name`: [A-Za-z0-9_-.] (a KV key), e.g. "partition.7", "edge-writer".
  absl::StatusOr<bool> Claim(absl::string_view name);

  // Gives up lease `name` if this node holds it (so another takes it at once, not after the
  // term). OK when it was not held by this node.
  absl::Status Release(absl::string_view name);

  struct Holder {
    std::string node;
    absl::Time until;
  };
  // The live holder of `name` (nullopt: free, released or run out).
  absl::StatusOr<std::optional<Holder>> HolderOf(absl::string_view name);

  // The live leases whose name starts with `prefix`: name -> holder.
  absl::StatusOr<std::map<std::string, Holder>> LiveWithPrefix(absl::string_view prefix);

  // One process per node id. Leases are held by node id, so two processes started with the
  // same one would both renew them. Each table has a random instance id; the key
  // "presence.<node id>" is a lease held by the instance (claimed and renewed with
  // compare-and-set, for the term). ClaimPresence takes it when it is free, released or run
  // out, and renews it when this instance holds it; kFailedPrecondition naming the node id when
  // another instance holds it live (another process uses this node id, or did less than a term
  // and the skew ago). Call it at start and at every renewal of the node's leases.
  absl::Status ClaimPresence();
  // Gives the presence up if this instance holds it (a clean stop: a restart may start at once).
  absl::Status ReleasePresence();
  // The live holder of this node id's presence: an instance id (nullopt: free or run out).
  absl::StatusOr<std::optional<Holder>> PresenceHolder();
  const std::string& instance() const { return instance_; }

 private:
  LeaseTable(kvStore* kv, LeaseOptions options);
  // Claim and Release of `key` for `holder` (the node id; the instance for the presence).
  absl::StatusOr<bool> ClaimAs(const std::string& key, const std::string& holder);
  absl::Status ReleaseAs(const std::string& key, const std::string& holder);
  struct Entry {
    bool exists = false;
    uint64_t revision = 0;
    std::string node;  // "" when released
    absl::Time until = absl::InfinitePast();
  };
  absl::StatusOr<Entry> Read(const std::string& key);
  bool Live(const Entry& e) const;

  kvStore* kv_;
  LeaseOptions options_;
  Clock* clock_;
  const std::string instance_;  // random, per table (per process)
};

}  // namespace palisade::cluster

#endif  // PALISADE_SERVICES_CLUSTER_LEASE_TABLE_H_
