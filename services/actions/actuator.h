// What an actuator is: the piece that makes one kind of decision true at the edge, and undoes
// it when the decision ends. The Dispatcher (dispatcher.h) hands actuators batches of ActionOps;
// an actuator fills in each op's result and, for applies, the EdgeRef that its remove will need.
// Thread-safety: Run is called from the dispatcher's single worker thread.
#ifndef PALISADE_SERVICES_ACTIONS_ACTUATOR_H_
#define PALISADE_SERVICES_ACTIONS_ACTUATOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "palisade/v1/palisade.pb.h"
#include "services/cloudflare/client.h"

namespace palisade {

// What an actuator made at the edge, so it can find it again.
struct EdgeRef {
  std::string id;         // access rule id, list item ip, ruleset rule id, token id
  std::string container;  // ruleset id / list id, when the id lives inside one
  // The edge object existed before Palisade (an adopted duplicate): it is not Palisade's to
  // delete.
  bool foreign = false;
};

struct ActionOp {
  enum class Kind { kApply, kRemove };
  Kind kind = Kind::kApply;
  palisade::v1::Decision decision;
  // Token revocation only (memory only, never logged).
  std::string secret;
  // In for removes, out for applies.
  EdgeRef edge;
  // Out: the outcome of this attempt.
  absl::Status result;
  // Dispatcher bookkeeping.
  int attempts = 0;
  absl::Time not_before = absl::InfinitePast();
  // An operator released it past the blast-radius limit.
  bool released = false;
  // The guard has counted it toward the per-minute budget (on its first pass): a retry is the
  // same ban, not a new one, and is not counted again. Memory only: the guard's own count does
  // not survive a restart either.
  bool counted = false;
  // An apply only: the decision it replaces (Decision.replaces, set by the table when a
  // stronger claim replaced it), when that one's object stood at the edge, or its apply was in
  // flight, as this was heard. This restricts no new target, so the guard charges it no
  // budget. Empty: a new restriction. (A remove's wait for the decision replacing it is read
  // from its own Decision.replaced_by: see Dispatcher.)
  std::string replaces;
  // Its row in the durable outbox (0: not persisted).
  int64_t seq = 0;
  // Re-applied by the reconciler: the object is known to be missing, whatever the actuator
  // remembers.
  bool repair = false;
};

class Actuator {
 public:
  virtual ~Actuator() = default;
  // Stable, bounded: used as a metric label ("access_rule", "ip_list", ...).
  virtual std::string name() const = 0;
  // Carries out `ops` (applies and removes, in order) and sets each op's result.
  virtual void Run(std::vector<ActionOp*>& ops) = 0;

  // True when Run needs every due op at once (one bulk API operation for all of them). When
  // false, the dispatcher hands ops over one at a time and records each outcome as soon as it
  // is known, so a daemon killed in the middle of a long queue redoes nothing it confirmed.
  virtual bool RunsInBatches() const { return false; }
  // True when an apply can adopt an object already at the edge (10009) that a queued remove,
  // for the same target, is about to delete: the dispatcher then runs the apply only once that
  // remove has settled.
  virtual bool AdoptsExisting() const { return false; }
  // After a restart, before any Run: what the store says this actuator made at the edge, one
  // entry per decision that still has an edge record (foreign and dry-run objects left out).
  virtual void Restore(const std::vector<EdgeRef>& made) { (void)made; }
  // One decision no longer holds `made` (the reconciler found it gone from the edge, or removed
  // it as an orphan): an actuator that keeps counts stops counting it for that decision. Called
  // with the dispatcher paused, so never while Run runs.
  virtual void Forget(const EdgeRef& made) { (void)made; }
  // The reconciler read the account's IP lists (every run): an actuator that counts their items
  // (the IP list, for its cap and the account's quota gauge) takes this fresher read. Called
  // with the dispatcher paused, so never while Run runs.
  virtual void ListsRead(const std::vector<IpList>& lists) { (void)lists; }
};

// Retry an op that failed with this status? (transient: unavailable, throttled, timed out,
// an aborted list operation, a reply over the client's byte caps).
bool IsTransient(const absl::Status& s);

// Did Cloudflare refuse palisaded's own credentials (401, 403: a token expired, an IP filter, a
// permission removed)? That says nothing about the decision, and ends when the token is put
// right: the op waits in the outbox, it is neither dropped nor remembered as failed for good.
bool IsCredentialError(const absl::Status& s);

}  // namespace palisade

#endif  // PALISADE_SERVICES_ACTIONS_ACTUATOR_H_
