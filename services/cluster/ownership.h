// Who does what in the cluster (issue 17; docs/ARCHITECTURE.md, "Cluster"): each node's share of
// the match stream's partitions, and the one edge writer, kept on the LeaseTable.
//
// Every node calls Tick() every lease term / 3. A tick:
//   1. renews the node's membership lease "node.<id>" (the live ones are the cluster);
//   2. renews the partition leases it holds ("partition.<p>"); one it could not renew (it was
//      late, and another node took it) is lost, and said so;
//   3. computes its fair share, ceil(partitions / live nodes), releases the partitions it holds
//      beyond it (the highest first: a node that joined takes them), and claims free ones up to
//      it, starting at an offset from its id so nodes that start together do not all race for
//      partition 0;
//   4. keeps or claims the "edge-writer" lease: exactly one node writes to Cloudflare.
// A node that may not own partitions (Tick(false): its rule set differs from the cluster's, the
// one the writer published) stays a member and may write, but releases every partition it holds
// and claims none; it holds "gated.<id>" meanwhile, so the others leave it out of the fair share
// and take its partitions between them.
// A node that stops ticking (dead, paused, cut off from NATS) loses everything after the term
// and skew; the others take its partitions and, if it was the writer, the writer lease.
//
// Thread-safety: Tick and the accessors are called from the node's one cluster thread.
#ifndef PALISADE_SERVICES_CLUSTER_OWNERSHIP_H_
#define PALISADE_SERVICES_CLUSTER_OWNERSHIP_H_

#include <cstdint>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "services/cluster/lease_table.h"

namespace palisade::cluster {

class Ownership {
 public:
  // `leases` is this node's table (its node id is the holder written).
  Ownership(LeaseTable& leases, std::string node_id, uint32_t partitions);

  struct Change {
    std::set<uint32_t> gained;  // start consuming these (rebuild their windows first)
    std::set<uint32_t> lost;    // stop consuming these at once (another node has them)
    bool writer_gained = false;
    bool writer_lost = false;
    size_t live_nodes = 0;
  };
  // `may_own_partitions` false: release every partition held, claim none (see above).
  absl::StatusOr<Change> Tick(bool may_own_partitions = true);

  // Before a clean stop: releases every lease this node holds, so others take them at once.
  absl::Status ReleaseAll();

  const std::set<uint32_t>& owned() const { return owned_; }
  bool writer() const { return writer_; }
  bool gated() const { return gated_; }

  static std::string PartitionLease(uint32_t p);
  static constexpr const char* kWriterLease = "edge-writer";

 private:
  LeaseTable& leases_;
  const std::string node_id_;
  const uint32_t partitions_;
  std::set<uint32_t> owned_;
  bool writer_ = false;
  bool gated_ = false;  // holds "gated.<id>"
};

}  // namespace palisade::cluster

#endif  // PALISADE_SERVICES_CLUSTER_OWNERSHIP_H_
