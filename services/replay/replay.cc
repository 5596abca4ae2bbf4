#include "services/replay/replay.h"

#include <algorithm>

#include "absl/time/clock.h"
#include "prometheus/registry.h"
#include "services/common/clock.h"
#include "services/decisions/decision_table.h"
#include "services/pipeline/pipeline.h"

namespace palisade {

absl::StatusOr<ReplaySummary> Replay(std::shared_ptr<const RuleSet> rules,
                                     palisade::v1::LogFormat format,
                                     const std::vector<std::string>& lines,
                                     uint32_t batch_lines) {
  ReplayOptions options;
  options.batch_lines = batch_lines;
  return Replay(std::move(rules), format, lines, options);
}

absl::StatusOr<ReplaySummary> Replay(std::shared_ptr<const RuleSet> rules,
                                     palisade::v1::LogFormat format,
                                     const std::vector<std::string>& lines,
                                     const ReplayOptions& replay) {
  VectorLineSource source(lines);
  return Replay(std::move(rules), format, source, replay);
}

absl::StatusOr<ReplaySummary> Replay(std::shared_ptr<const RuleSet> rules,
                                     palisade::v1::LogFormat format, LineSource& source,
                                     const ReplayOptions& replay) {
  const absl::Time start = absl::Now();
  ReplaySummary summary;
  // Before the first line the clock reads the wall clock's now: the reference for the first
  // yearless time, as for a log written up to today. From the first line on it follows the
  // lines (PipelineOptions::advance_clock): each line is decided at the latest line time seen so
  // far, after what expired by then.
  SimulatedClock clock(start);
  bool started = false;
  prometheus::Registry registry;
  DecisionTable table(clock, replay.max_evidence);
  table.AddListener([&summary](const DecisionUpdate& u) {
    if (u.change == DecisionChange::kCreated) summary.decisions.push_back(u.decision);
    if (u.change == DecisionChange::kStale) summary.stale.push_back(u.decision);
  });
  PipelineOptions options;
  options.engine.allowlist = replay.allowlist;
  options.engine.max_evidence = replay.max_evidence;
  options.clamp_future = false;
  options.time_zone = replay.time_zone;
  options.advance_clock = [&clock, &table, &started](absl::Time t) {
    if (started && t <= clock.TimeNow()) return;
    started = true;
    clock.Set(t);
    table.ExpireDue();
  };
  Pipeline pipeline(rules, options, clock, table, registry);
  const uint32_t n = std::max<uint32_t>(1, replay.batch_lines);
  palisade::v1::LogBatch batch;
  bool more = true;
  while (more) {
    batch.Clear();
    batch.set_format(format);
    absl::string_view line;
    while (static_cast<uint32_t>(batch.records_size()) < n) {
      absl::StatusOr<bool> next = source.Next(&line);
      if (!next.ok()) return next.status();
      if (!*next) {
        more = false;
        break;
      }
      batch.add_records()->set_line(line.data(), line.size());
    }
    if (batch.records_size() == 0) break;
    absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessBatch(batch);
    if (!ack.ok()) return ack.status();
    summary.lines += batch.records_size();
    summary.malformed += ack->malformed();
    summary.matched += ack->matched();
    summary.detections += ack->detections();
  }
  const auto& per_rule = pipeline.matches_per_rule();
  for (size_t i = 0; i < rules->rules().size() && i < per_rule.size(); ++i) {
    summary.matches_per_rule[rules->rules()[i]->id()] = per_rule[i];
  }
  summary.wall = absl::Now() - start;
  return summary;
}

}  // namespace palisade
