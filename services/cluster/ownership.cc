#include "services/cluster/ownership.h"

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "services/cluster/match_stream.h"

namespace palisade::cluster {

Ownership::Ownership(LeaseTable& leases, std::string node_id, uint32_t partitions)
    : leases_(leases), node_id_(std::move(node_id)), partitions_(partitions) {}

std::string Ownership::PartitionLease(uint32_t p) { return absl::StrCat("partition.", p); }

absl::StatusOr<Ownership::Change> Ownership::Tick(bool may_own_partitions) {
  Change change;
  absl::StatusOr<bool> member = leases_.Claim(absl::StrCat("node.", node_id_));
  if (!member.ok()) return member.status();
  const std::string gate = absl::StrCat("gated.", node_id_);
  if (!may_own_partitions) {
    absl::StatusOr<bool> g = leases_.Claim(gate);
    if (!g.ok()) return g.status();
    gated_ = true;
  } else if (gated_) {
    absl::Status s = leases_.Release(gate);
    if (!s.ok()) return s;
    gated_ = false;
  }
  absl::StatusOr<std::map<std::string, LeaseTable::Holder>> nodes = leases_.LiveWithPrefix("node.");
  if (!nodes.ok()) return nodes.status();
  absl::StatusOr<std::map<std::string, LeaseTable::Holder>> gated = leases_.LiveWithPrefix("gated.");
  if (!gated.ok()) return gated.status();
  change.live_nodes = std::max<size_t>(nodes->size(), 1);
  // The share is among the nodes that may own partitions.
  size_t owners = 0;
  for (const auto& [name, holder] : *nodes) {
    owners += gated->count(absl::StrCat("gated.", holder.node)) == 0 ? 1 : 0;
  }
  owners = std::max<size_t>(owners, 1);

  // Renew what we hold; what we could not renew is another node's now.
  for (auto it = owned_.begin(); it != owned_.end();) {
    absl::StatusOr<bool> kept = leases_.Claim(PartitionLease(*it));
    if (!kept.ok()) return kept.status();
    if (*kept) {
      ++it;
    } else {
      change.lost.insert(*it);
      it = owned_.erase(it);
    }
  }
  const size_t share = may_own_partitions ? (partitions_ + owners - 1) / owners : 0;
  // Beyond the share: give back the highest, for the nodes that joined.
  while (owned_.size() > share) {
    const uint32_t p = *owned_.rbegin();
    absl::Status released = leases_.Release(PartitionLease(p));
    if (!released.ok()) return released;
    owned_.erase(p);
    change.lost.insert(p);
  }
  // Below it: claim free ones, from an offset of our own.
  const uint32_t start = partitions_ == 0 ? 0 : PartitionOf(node_id_, partitions_);
  for (uint32_t i = 0; i < partitions_ && owned_.size() < share; ++i) {
    const uint32_t p = (start + i) % partitions_;
    if (owned_.count(p) != 0) continue;
    absl::StatusOr<bool> won = leases_.Claim(PartitionLease(p));
    if (!won.ok()) return won.status();
    if (*won) {
      owned_.insert(p);
      change.gained.insert(p);
    }
  }
  absl::StatusOr<bool> writer = leases_.Claim(kWriterLease);
  if (!writer.ok()) return writer.status();
  change.writer_gained = *writer && !writer_;
  change.writer_lost = !*writer && writer_;
  writer_ = *writer;
  return change;
}

absl::Status Ownership::ReleaseAll() {
  for (uint32_t p : owned_) {
    absl::Status s = leases_.Release(PartitionLease(p));
    if (!s.ok()) return s;
  }
  owned_.clear();
  if (writer_) {
    absl::Status s = leases_.Release(kWriterLease);
    if (!s.ok()) return s;
    writer_ = false;
  }
  if (gated_) {
    absl::Status s = leases_.Release(absl::StrCat("gated.", node_id_));
    if (!s.ok()) return s;
    gated_ = false;
  }
  return leases_.Release(absl::StrCat("node.", node_id_));
}

}  // namespace palisade::cluster
