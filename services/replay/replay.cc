#include "services/replay/replay.h"

#include <algorithm>
#include <deque>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "prometheus/registry.h"
#include "services/common/clock.h"
#include "services/decisions/decision_table.h"
#include "services/formats/json_parser.h"
#include "services/pipeline/pipeline.h"
#include "services/server/config.h"

namespace palisade {
namespace {

// One batch read ahead: the buffer its lines were read into (reused), the views into it.
struct Slot {
  enum class State { kFree, kFilled, kClaimed, kReady };
  LineBuffer bytes;
  LineBatch batch;
  State state = State::kFree;
};

// Reads the next batch of `source` into `slot` (up to `n` lines or kMaxReplayBatchBytes): how
// many lines, 0 when the source ended.
absl::StatusOr<size_t> Fill(LineSource& source, uint32_t n, Slot& slot) {
  slot.batch.Clear();
  absl::StatusOr<size_t> filled =
      source.NextBatch(n, kMaxReplayBatchBytes, &slot.bytes, &slot.batch.lines);
  slot.batch.plain = filled.ok() && slot.bytes.plain();
  return filled;
}

}  // namespace

LineReaderOptions ReplayReaderOptions(palisade::v1::LogFormat format, size_t max_line_bytes,
                                      size_t max_record_bytes) {
  LineReaderOptions options;
  // The byte past the cap tells the pipeline the line went on (Pipeline::TrimLine).
  options.max_line_bytes =
      std::max(options.max_line_bytes, LineCapFor(format, max_line_bytes, max_record_bytes) + 1);
  return options;
}

absl::StatusOr<ReplayOptions> ReplayOptionsFromConfig(const palisade::v1::Config& config) {
  // As palisaded maps it (ApplyToPipeline), less what a replay has none of (feeds, the token
  // vetter, a cluster's router).
  PipelineOptions daemon;
  if (absl::Status s = ApplyToPipeline(config, &daemon); !s.ok()) return s;
  ReplayOptions replay;
  replay.engine = daemon.engine;
  replay.max_line_bytes = daemon.max_line_bytes;
  replay.max_record_bytes = daemon.max_record_bytes;
  replay.time_zone = daemon.time_zone;
  replay.source_time_zones = daemon.source_time_zones;
  replay.json_formats = daemon.json_formats;
  const palisade::v1::Ipv6FoldingConfig& fold = config.decisions_ipv6_folding();
  replay.ipv6_fold_addresses = fold.disabled() ? 0 : fold.addresses();
  replay.ipv6_fold_prefix = static_cast<int>(fold.prefix_length());
  return replay;
}

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
  // Before the first line the clock reads ReplayOptions::reference, else the wall clock's now:
  // the reference for the first yearless time, as for a log written up to then. From the first
  // line on it follows the lines (PipelineOptions::advance_clock): each line is decided at the
  // latest line time seen so far, after what expired by then.
  SimulatedClock clock(replay.reference.value_or(start));
  bool started = false;
  prometheus::Registry registry;
  DecisionTable table(clock, replay.engine.max_evidence);
  // Nothing here reads a stored decision's evidence, nor an extension's: the summary keeps
  // created and stale decisions (which carry their lines), the pipeline's listener counts
  // changes by rule and action, and there is no on_detections. A table that keeps no lines
  // hands none out on an extension either.
  table.SetKeepEvidence(false);
  DecisionTableLimits limits;
  limits.ipv6_fold_addresses = replay.ipv6_fold_addresses;
  limits.ipv6_fold_prefix = replay.ipv6_fold_prefix;
  table.SetLimits(limits);
  table.SetNeverFold(replay.engine.allowlist);
  table.AddListener([&summary, &replay](const DecisionUpdate& u) {
    if (u.change == DecisionChange::kCreated) {
      ++summary.decisions_created;
      if (replay.on_decision) {
        replay.on_decision(u.decision);
      } else {
        summary.decisions.push_back(u.decision);
      }
    }
    if (u.change == DecisionChange::kStale) summary.stale.push_back(u.decision);
  });
  PipelineOptions options;
  options.engine = replay.engine;
  // As the daemon clamps a line more than a day ahead of its now, against the replay's clock
  // (PipelineOptions::clamp_future): one line from a host whose clock runs ahead must not move
  // the clock, and with it every later decision, as palisaded's now is never moved by a line.
  options.clamp_future = true;
  options.sweep_in_line_time = replay.sweep_interval;
  options.time_zone = replay.time_zone;
  options.source_time_zones = replay.source_time_zones;
  options.json_formats = replay.json_formats;
  options.max_line_bytes = replay.max_line_bytes;
  options.max_record_bytes = replay.max_record_bytes;
  options.advance_clock = [&clock, &table, &started](absl::Time t) {
    if (started && t <= clock.TimeNow()) return;
    started = true;
    clock.Set(t);
    table.ExpireDue();
  };
  Pipeline pipeline(rules, options, clock, table, registry);
  const uint32_t n = std::max<uint32_t>(1, replay.batch_lines);
  auto process = [&](const LineBatch& batch) -> absl::Status {
    // Offline: audit records (which only palisaded's own poller may feed a daemon) decide
    // nothing that reaches an edge here.
    BatchSender offline;
    offline.audit_records = true;
    absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessLines(batch, offline);
    if (!ack.ok()) return ack.status();
    summary.lines += batch.lines.size();
    summary.malformed += ack->malformed();
    summary.truncated += ack->truncated();
    summary.clamped += ack->clamped();
    summary.untimed += ack->untimed();
    summary.matched += ack->matched();
    summary.detections += ack->detections();
    return absl::OkStatus();
  };
  // At most kMaxReplayThreads: each reads two batches ahead, so memory is bounded by the count.
  const uint32_t threads = std::min(
      kMaxReplayThreads,
      replay.threads != 0 ? replay.threads : std::max(1u, std::thread::hardware_concurrency()));
  if (threads == 1) {
    Slot slot;
    slot.batch.format = format;
    slot.batch.source = replay.source;
    slot.batch.json_format = replay.json_format;
    while (true) {
      absl::StatusOr<size_t> filled = Fill(source, n, slot);
      if (!filled.ok()) return filled.status();
      if (*filled == 0) break;
      // Prematched first, on this thread too, when its Sets are then walked side by side
      // (Engine::Prematch of many lines), where ProcessLines alone walks them line by line; not
      // otherwise, which would cost the candidates' hand-over and gain nothing.
      if (replay.prematch && pipeline.WalksSideBySide(format)) pipeline.Prematch(&slot.batch);
      if (absl::Status s = process(slot.batch); !s.ok()) return s;
    }
  } else {
    // Batches in a ring, read in order into free slots by whichever thread has nothing else to
    // do (one at a time: a worker with nothing to prematch, or this thread), prematched by any
    // thread, and processed in order by this thread once prematched (it prematches the next
    // itself when no worker has taken it yet, and, while a worker has it, reads the next batch
    // or prematches the oldest batch no thread has taken rather than wait). Reading was ~140
    // (sshd) to ~190 (nginx) instructions a line of the thread every other one waits for.
    const size_t k = 2 * static_cast<size_t>(threads);
    std::vector<Slot> slots(k);
    for (Slot& slot : slots) {
      slot.batch.format = format;
      slot.batch.source = replay.source;
      slot.batch.json_format = replay.json_format;
    }
    absl::Mutex mu;
    // All under mu.
    std::deque<size_t> queued;  // filled slots no thread has taken, oldest first
    uint64_t next_fill = 0, next_process = 0;
    bool reading = false;      // a thread is reading batch next_fill
    bool more = true;          // the source may hold more lines
    absl::Status read_status;  // the source's error, which ends the replay
    bool stop = false;
    // Whether batch next_fill may be read now.
    auto can_read = [&]() { return !reading && more && next_fill - next_process < k; };
    // Reads batch next_fill (can_read()): mu held on entry and return, not while reading.
    auto read = [&]() {
      reading = true;
      const size_t at = next_fill % k;
      mu.Unlock();
      absl::StatusOr<size_t> filled = Fill(source, n, slots[at]);
      mu.Lock();
      reading = false;
      if (!filled.ok()) {
        read_status = filled.status();
        more = false;
      } else if (*filled == 0) {
        more = false;
      } else {
        slots[at].state = Slot::State::kFilled;
        queued.push_back(at);
        ++next_fill;
      }
    };
    // Prematches the oldest batch no thread took (queued not empty): mu held on entry and
    // return, not while matching.
    auto prematch_oldest = [&]() {
      const size_t i = queued.front();
      queued.pop_front();
      slots[i].state = Slot::State::kClaimed;
      mu.Unlock();
      pipeline.Prematch(&slots[i].batch);
      mu.Lock();
      slots[i].state = Slot::State::kReady;
    };
    std::vector<std::thread> workers;
    for (uint32_t t = 1; t < threads; ++t) {
      workers.emplace_back([&]() {
        absl::MutexLock lock(&mu);
        while (true) {
          auto work = [&]() { return stop || !queued.empty() || can_read(); };
          mu.Await(absl::Condition(&work));
          if (stop) return;
          if (queued.empty()) {
            read();
            continue;
          }
          prematch_oldest();
        }
      });
    }
    absl::Status status;
    {
      absl::MutexLock lock(&mu);
      while (status.ok()) {
        if (next_process == next_fill) {
          if (can_read()) {
            read();
            continue;
          }
          if (!reading) break;  // the source ended, or failed (read_status)
          auto progress = [&]() { return next_process != next_fill || !reading; };
          mu.Await(absl::Condition(&progress));
          continue;
        }
        const size_t i = next_process % k;
        Slot& slot = slots[i];
        if (slot.state == Slot::State::kFilled || slot.state == Slot::State::kReady) {
          const bool mine = slot.state == Slot::State::kFilled;
          if (mine) {
            queued.erase(std::find(queued.begin(), queued.end(), i));
            slot.state = Slot::State::kClaimed;
          }
          mu.Unlock();
          if (mine) pipeline.Prematch(&slot.batch);
          status = process(slot.batch);
          mu.Lock();
          slot.state = Slot::State::kFree;
          ++next_process;
        } else if (!queued.empty()) {
          // A worker has the next batch: do work that is needed anyway, the oldest batch no
          // thread took.
          prematch_oldest();
        } else if (can_read()) {
          read();
        } else {
          auto next = [&]() {
            return slot.state == Slot::State::kReady || !queued.empty() || can_read();
          };
          mu.Await(absl::Condition(&next));
        }
      }
      if (status.ok()) status = read_status;
      stop = true;
    }
    for (std::thread& w : workers) w.join();
    if (!status.ok()) return status;
  }
  const auto& per_rule = pipeline.matches_per_rule();
  for (size_t i = 0; i < rules->rules().size() && i < per_rule.size(); ++i) {
    summary.matches_per_rule[rules->rules()[i]->id()] = per_rule[i];
  }
  const EngineStats stats = pipeline.engine_stats();
  summary.windows_expired = stats.expired_windows;
  summary.windows_evicted = stats.evicted_windows + stats.memory_evicted_windows;
  summary.sessions_expired = stats.sessions.expired;
  summary.sessions_evicted = stats.sessions.evicted;
  summary.live_windows = pipeline.live_windows();
  summary.wall = absl::Now() - start;
  return summary;
}

}  // namespace palisade
