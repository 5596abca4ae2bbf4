// Replay: the whole pipeline offline, at full speed, in event time — parse, match, window,
// decide — with nothing sent anywhere. The clock follows the lines, so a month-old log yields
// the decisions living through it would have: the tool to tune thresholds on last month's logs,
// and the one the benchmarks compare with fail2ban-regex.
// Thread-safety: one Replay at a time per object.
#ifndef PALISADE_SERVICES_REPLAY_REPLAY_H_
#define PALISADE_SERVICES_REPLAY_REPLAY_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "palisade/v1/palisade.pb.h"
#include "services/engine/rule_set.h"

namespace palisade {

struct ReplaySummary {
  uint64_t lines = 0;
  uint64_t malformed = 0;
  uint64_t matched = 0;
  uint64_t detections = 0;
  std::map<std::string, uint64_t> matches_per_rule;
  // Every decision made (created), in order.
  std::vector<palisade::v1::Decision> decisions;
  absl::Duration wall;
};

// Replays `lines` of `format` through `rules`. `batch_lines` only changes how often decisions
// are expired; the result does not depend on it.
absl::StatusOr<ReplaySummary> Replay(std::shared_ptr<const RuleSet> rules,
                                     palisade::v1::LogFormat format,
                                     const std::vector<std::string>& lines,
                                     uint32_t batch_lines = 1000);

}  // namespace palisade

#endif  // PALISADE_SERVICES_REPLAY_REPLAY_H_
