#include "services/replay/replay.h"

#include <algorithm>

#include "absl/time/clock.h"
#include "prometheus/registry.h"
#include "services/common/clock.h"
#include "services/decisions/decision_table.h"
#include "services/formats/line_parser.h"
#include "services/pipeline/pipeline.h"

namespace palisade {

absl::StatusOr<ReplaySummary> Replay(std::shared_ptr<const RuleSet> rules,
                                     palisade::v1::LogFormat format,
                                     const std::vector<std::string>& lines,
                                     uint32_t batch_lines) {
  const absl::Time start = absl::Now();
  ReplaySummary summary;
  // The clock follows the lines: it starts at the first line's time and moves to the latest
  // time seen before each batch, so windows, expiry and staleness all run in event time.
  SimulatedClock clock(absl::Now());
  LineParser probe(format);
  ParsedLine parsed;
  absl::Time reference = absl::Now();
  for (const std::string& l : lines) {
    if (probe.Parse(l, reference, &parsed).ok() && parsed.time) {
      clock.Set(*parsed.time);
      break;
    }
  }
  prometheus::Registry registry;
  DecisionTable table(clock);
  table.AddListener([&summary](const DecisionUpdate& u) {
    if (u.change == DecisionChange::kCreated) summary.decisions.push_back(u.decision);
  });
  PipelineOptions options;
  options.advance_clock = [&clock](absl::Time t) {
    if (t > clock.TimeNow()) clock.Set(t);
  };
  Pipeline pipeline(rules, options, clock, table, registry);
  const uint32_t n = std::max<uint32_t>(1, batch_lines);
  for (size_t begin = 0; begin < lines.size(); begin += n) {
    palisade::v1::LogBatch batch;
    batch.set_format(format);
    const size_t end = std::min(lines.size(), begin + n);
    for (size_t i = begin; i < end; ++i) batch.add_records()->set_line(lines[i]);
    absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessBatch(batch);
    if (!ack.ok()) return ack.status();
    summary.lines += end - begin;
    summary.malformed += ack->malformed();
    summary.matched += ack->matched();
    summary.detections += ack->detections();
    table.ExpireDue();
  }
  const auto& per_rule = pipeline.matches_per_rule();
  for (size_t i = 0; i < rules->rules().size() && i < per_rule.size(); ++i) {
    summary.matches_per_rule[rules->rules()[i]->id()] = per_rule[i];
  }
  summary.wall = absl::Now() - start;
  return summary;
}

}  // namespace palisade
