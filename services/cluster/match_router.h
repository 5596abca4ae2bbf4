// The matching node's side of the cluster's split (issue 17; docs/ARCHITECTURE.md, "Cluster"):
// every node parses and matches its own lines (Engine::MatchLine) and hands each match to
// Route, which writes it as a palisade.v1.ClusterMatch (rule, key, event time, evidence, the
// node's rule set version and id) and queues it on the MatchPublisher for the partition of its
// key, PartitionOf(PartitionKeyOf(key)): an IPv6 address goes by its /48, so the addresses of
// one range reach one owner, which counts the range window too. The partition's owner counts
// it (PartitionCounter).
//
// Never blocks: the publisher's queue is bounded in bytes, and a match that does not fit is
// dropped and counted (dropped()). A token-fingerprint match is not routed: its detection needs
// the token itself, which never leaves the node that read it (no stream, no snapshot holds a
// secret); Route refuses it and the caller counts it in its own engine (Engine::CountMatch).
//
// Thread-safe: Route and the accessors may be called from any thread (the pipeline's batches
// run on several); SetRuleSetVersion may run concurrently with them.
#ifndef PALISADE_SERVICES_CLUSTER_MATCH_ROUTER_H_
#define PALISADE_SERVICES_CLUSTER_MATCH_ROUTER_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "services/cluster/match_stream.h"
#include "services/engine/engine.h"
#include "services/engine/rule_set.h"

namespace palisade::cluster {

// A rule set's version as the cluster compares them: "sha256:" + 16 hex characters of the
// SHA-256 over every compiled rule's definition (deterministically serialised, in load order).
// Two nodes that loaded the same packs have the same version; any change to a rule changes it.
// (The CIDR sets a deployment defines for conditions are configuration, not part of it.)
std::string RuleSetVersion(const RuleSet& rules);

struct MatchRouterOptions {
  std::string node_id;
  std::string rule_set_version;  // RuleSetVersion of the rules the node matches with
};

class MatchRouter {
 public:
  // `publisher` must outlive the router.
  MatchRouter(MatchPublisher& publisher, MatchRouterOptions options);

  // Serialises `match` (its evidence cut to fit NATS' payload limit when it would not:
  // counted in evidence_cut(), see message_size.h) and queues it for its partition. OK: queued.
  // kResourceExhausted: the queue was full, the match dropped (counted). kFailedPrecondition: a
  // token-fingerprint match, to be counted on this node (counted in kept_local()).
  // kInvalidArgument: an empty key or rule id (nothing a MatchLine gives).
  absl::Status Route(const EngineMatch& match);

  // After a rule reload: the version the next matches carry.
  void SetRuleSetVersion(std::string version);

  uint64_t routed() const { return routed_.load(); }
  uint64_t dropped() const { return dropped_.load(); }
  uint64_t kept_local() const { return kept_local_.load(); }
  // Matches whose evidence was cut to fit NATS' payload limit.
  uint64_t evidence_cut() const { return evidence_cut_.load(); }

 private:
  MatchPublisher& publisher_;
  const std::string node_id_;
  mutable absl::Mutex mu_;
  std::string version_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> routed_{0}, dropped_{0}, kept_local_{0}, evidence_cut_{0};
};

}  // namespace palisade::cluster

#endif  // PALISADE_SERVICES_CLUSTER_MATCH_ROUTER_H_
