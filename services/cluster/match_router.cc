#include "services/cluster/match_router.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "palisade/v1/cluster.pb.h"
#include "services/cluster/message_size.h"
#include "services/common/fingerprint.h"

namespace palisade::cluster {

std::string RuleSetVersion(const RuleSet& rules) {
  std::string all;
  for (const auto& rule : rules.rules()) {
    std::string one;
    {
      google::protobuf::io::StringOutputStream out(&one);
      google::protobuf::io::CodedOutputStream coded(&out);
      coded.SetSerializationDeterministic(true);
      rule->proto.SerializeToCodedStream(&coded);
    }
    // Length-prefixed, so no two different sets of rules concatenate to the same bytes.
    absl::StrAppend(&all, one.size(), ":", one);
  }
  return Fingerprint(all);
}

MatchRouter::MatchRouter(MatchPublisher& publisher, MatchRouterOptions options)
    : publisher_(publisher),
      node_id_(std::move(options.node_id)),
      version_(std::move(options.rule_set_version)) {}

void MatchRouter::SetRuleSetVersion(std::string version) {
  absl::MutexLock lock(&mu_);
  version_ = std::move(version);
}

absl::Status MatchRouter::Route(const EngineMatch& match) {
  if (match.rule != nullptr &&
      match.rule->proto.key_kind() == palisade::v1::TargetKind::TARGET_KIND_TOKEN_FINGERPRINT) {
    kept_local_.fetch_add(1, std::memory_order_relaxed);
    return absl::FailedPreconditionError(
        absl::StrCat("cluster: a match of token rule \"", match.rule_id,
                     "\" is counted on the node that read it (its token never leaves it)"));
  }
  if (match.key.empty() || match.rule_id.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cluster: a match of rule \"", match.rule_id, "\" with no key"));
  }
  palisade::v1::ClusterMatch m;
  m.set_rule_id(match.rule_id);
  m.set_key(match.key);
  m.set_time_unix_nanos(absl::ToUnixNanos(match.time));
  m.set_evidence(match.evidence);
  {
    absl::MutexLock lock(&mu_);
    m.set_rule_set_version(version_);
  }
  m.set_origin_node(node_id_);
  std::string data = m.SerializeAsString();
  // A match NATS cannot take (a line of up to engine.max_evidence_bytes, 1 MiB) goes with its
  // evidence cut to fit: the match still counts. Cutting `over` bytes of it shortens the
  // message by at least as much.
  const size_t limit = publisher_.max_match_bytes();
  if (data.size() > limit) {
    const size_t over = data.size() - limit;
    const size_t kept = m.evidence().size() > over ? m.evidence().size() - over : 0;
    if (CutEvidence({m.mutable_evidence()}, kept) > 0) {
      evidence_cut_.fetch_add(1, std::memory_order_relaxed);
      data = m.SerializeAsString();
    }
  }
  // The message carries the key itself; only the partition is the range's (PartitionKeyOf).
  if (!publisher_.Enqueue(PartitionKeyOf(match.key), std::move(data))) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return absl::ResourceExhaustedError(absl::StrCat(
        "cluster: the match queue is full; a match of rule \"", match.rule_id, "\" dropped"));
  }
  routed_.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

}  // namespace palisade::cluster
