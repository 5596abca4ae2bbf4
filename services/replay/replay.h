// Replay: the whole pipeline offline, at full speed, in event time — parse, match, window,
// decide — with nothing sent anywhere. The clock follows the lines, so a month-old log yields
// the decisions living through it would have: the tool to tune thresholds on last month's logs,
// and the one the benchmarks compare with fail2ban-regex.
//
// Event time, line by line: before each line is decided, the simulated clock moves to the latest
// line time seen so far and the decisions due by then expire; the line's detections are then
// decided at that clock. Nothing depends on where batches are cut, and nothing a line decided
// depends on the lines after it: the decisions over any prefix of a log are a subset of those
// over the whole log, and `batch_lines` changes only the batch size, not the result. A yearless
// time takes the year nearest to the previous line's (the first line: at most a day after
// ReplayOptions::reference, else now).
// Times are not clamped to the wall clock (a log from the future replays as written), but to
// the replay's clock as palisaded clamps them to its now (PipelineOptions::clamp_future): a
// line more than a day ahead of the latest line time is counted at that time, and neither moves
// the clock nor gives the next yearless line its year, so a host whose clock runs days or
// decades ahead, even in bursts, does not make every later decision stale. Such a line is taken
// as the log moving on after a silence, and sets the clock, once a line within a day of it from
// another host (syslog HOSTNAME) agrees, or, in a log with one writer so far, the next line
// (the first line after a silence of more than a day is counted at the clock). The first line
// sets the clock unless it is more than a day ahead of the start (ReplayOptions::reference,
// else the wall clock): then it is held, counted at its own time, until a second line within a
// day of it agrees. A line less than a day ahead moves the clock as any other: a replay cannot
// tell it from the log's own time, where the daemon's clock would not have followed it.
//
// Lines go to the pipeline as views into one buffer per batch, the file read straight into it
// (LineSource::NextBatch: no copy, string or protobuf record per line), and matching runs on
// every core (ReplayOptions::threads) with the one-thread result.
//
// State ages in event time as palisaded's sweep ages it in wall time: every
// ReplayOptions::sweep_interval of line time, windows idle past their rule's window and pid
// sessions idle past their ttl are dropped (a rule's windows walked once an eighth of its span,
// the sessions once a quarter of their ttl: Engine::ExpireSpread), so memory follows the keys
// active within a window's span rather than every key the log ever held, and the caps
// (max_keys_per_rule, the memory budget, max_sessions) evict only what a daemon reading the same
// log would have had to.
//
// Thread-safety: Replay and ReplayOptionsFromConfig are pure functions of their arguments (each
// Replay has its own pipeline and threads, joined before it returns).
#ifndef PALISADE_SERVICES_REPLAY_REPLAY_H_
#define PALISADE_SERVICES_REPLAY_REPLAY_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "palisade/v1/config.pb.h"
#include "palisade/v1/palisade.pb.h"
#include "services/common/ip.h"
#include "services/decisions/decision_table.h"
#include "services/engine/engine.h"
#include "services/engine/rule_set.h"
#include "services/inputs/line_reader.h"

namespace palisade {

struct ReplaySummary {
  uint64_t lines = 0;
  uint64_t malformed = 0;
  uint64_t truncated = 0;  // lines cut at max_line_bytes (JSON records: max_record_bytes)
  // Lines whose time was absurd: more than a day ahead of the replay's clock (counted at the
  // clock, as palisaded counts them at its now; a held first line no second line agreed with,
  // at its own time; see the header) or before 2000 (refused, and counted in `malformed` too).
  uint64_t clamped = 0;
  // Lines with no time of their own (no stamp their format reads): counted at the replay's
  // clock, the latest line time before them or, before the first timed line, the replay's start
  // (BatchAck.untimed).
  uint64_t untimed = 0;
  uint64_t matched = 0;
  uint64_t detections = 0;
  std::map<std::string, uint64_t> matches_per_rule;
  // Every decision made (created), in order; empty with ReplayOptions::on_decision.
  std::vector<palisade::v1::Decision> decisions;
  // How many decisions were made (created), with on_decision or not.
  uint64_t decisions_created = 0;
  // Detections that made no decision because it would already have been over at the replay's
  // clock (a line far older than the latest one before it): not enforced, but told.
  std::vector<palisade::v1::Decision> stale;
  // What the sweeps dropped (idle windows and sessions), what the caps evicted while it was still
  // live (a count past zero means the caps bound: a larger budget could detect more), and the
  // windows left at the end.
  uint64_t windows_expired = 0;
  uint64_t windows_evicted = 0;
  uint64_t sessions_expired = 0;
  uint64_t sessions_evicted = 0;
  size_t live_windows = 0;
  absl::Duration wall;
};

struct ReplayOptions {
  // Lines per batch given to the pipeline. The result does not depend on it.
  uint32_t batch_lines = 1000;
  // The engine's options, as palisaded sets them from its config (ReplayOptionsFromConfig): the
  // allowlist (loopback is always added), the caps (max_keys_per_rule, memory_budget_bytes,
  // max_sessions, max_session_bytes), the session ttl, the evidence kept. engine.max_evidence
  // is also the evidence lines kept per decision; 0: none, for a caller that prints no
  // decision's lines (palisadectl replay without --json): windows then copy no line, and the
  // decisions made are the same, without their evidence. engine.feeds: none (a replay reads no
  // feed: every feed is empty). engine.ipv6_window_prefix: the daemon's default (its config's
  // decisions_ipv6_folding unset), as ipv6_fold_prefix below.
  EngineOptions engine = [] {
    EngineOptions defaults;
    defaults.ipv6_window_prefix = DecisionTableLimits().ipv6_fold_prefix;
    return defaults;
  }();
  // IPv6 folding, as palisaded's decisions_ipv6_folding sets it (DecisionTableLimits): 0 never.
  // The ranges spared are engine.allowlist's (the daemon's guard also spares its own addresses
  // and Cloudflare's, which no log line of a replay is from).
  uint32_t ipv6_fold_addresses = DecisionTableLimits().ipv6_fold_addresses;
  int ipv6_fold_prefix = DecisionTableLimits().ipv6_fold_prefix;
  // Lines longer than this (JSON records: max_record_bytes) are cut before matching, as
  // engine.max_line_bytes and max_record_bytes cut them in the daemon.
  uint32_t max_line_bytes = 16384;
  uint32_t max_record_bytes = 8 << 20;
  // The zone of times written without a UTC offset (RFC 3164, combined logs without one): the
  // zone of `source` in source_time_zones, else time_zone.
  absl::TimeZone time_zone = absl::UTCTimeZone();
  std::map<std::string, absl::TimeZone> source_time_zones;
  // The time the first line's missing year is taken from (the latest year that puts it at most
  // a day after it) and that a first line more than a day ahead of is held (see the header):
  // the time the log was written up to, for a yearless log more than a year old, whose year
  // the wall clock gets wrong (29 February then does not exist, and a DST zone's changes fall
  // on the wrong days). Unset: the wall clock's now.
  std::optional<absl::Time> reference;
  // The source every batch is from (the daemon's batch source or file input's source).
  std::string source;
  // Format json: the mapping the lines are read with (json_format, one of json_formats).
  std::map<std::string, palisade::v1::JsonFormat> json_formats;
  std::string json_format;
  // When set, called with each decision made (created), in order, before Replay returns, from
  // the thread that decides; ReplaySummary::decisions then stays empty. For a caller that only
  // counts or prints them: a month of logs makes decisions by the hundred thousand, each copied
  // into the summary with its evidence.
  std::function<void(const palisade::v1::Decision&)> on_decision;
  // Threads that match: 0 for one per core. With more than one, the stateless part of matching
  // (parse, RE2::Set passes, literal gates: Engine::Prematch) runs on every thread over the
  // batches ahead, while one thread takes the batches in order through the rest (captures,
  // sessions, windows, decisions) exactly as a one-thread replay does: the result is the same
  // whatever the count. Memory: at most 2 batches per thread are read ahead, each bounded by
  // batch_lines and kMaxReplayBatchBytes.
  uint32_t threads = 0;
  // With one thread: a batch goes through Engine::Prematch first, as with more, when its Sets
  // are then walked side by side (SetDfa::MatchMany; Pipeline::WalksSideBySide), then through
  // the rest. False: the pipeline takes each line whole, the reference the tests hold the
  // other ways to. The result is the same.
  bool prematch = true;
  // How often, in line time, idle windows and sessions are dropped (see the header): before the
  // first line at or past the next sweep (PipelineOptions::sweep_in_line_time), so the result
  // still does not depend on batches or threads. Dropping an idle window or session changes
  // nothing a later line could see, except a line more than its window's span older than the
  // latest one before it (it then counts from nothing, as the daemon would count it).
  // InfiniteDuration: never.
  absl::Duration sweep_interval = absl::Minutes(1);
};

// A batch is cut at this many bytes of lines too (a file of long lines reads ahead no more):
// at most 7 MiB are read into a batch's buffer (LineReader::NextBatch: these bytes, two lines of
// at most 1 MiB, a 1 MiB read and the newlines), whose capacity doubles from 64 KiB to at most
// 8 MiB, so a replay holds at most 2 x threads x 8 MiB of lines, threads at most
// kMaxReplayThreads.
inline constexpr size_t kMaxReplayBatchBytes = size_t{4} << 20;
inline constexpr uint32_t kMaxReplayThreads = 64;

// ReplayOptions holding what palisaded's pipeline takes from `config` (services/server/
// palisaded.cc): the engine's caps, session ttl, evidence and allowlist, the line and record
// caps, the time zones (the config's, per source, per file input) and the json_formats. A
// config as LoadConfigFile returns it (its defaults filled in). kInvalidArgument naming the
// field for an allowlist or a zone that does not parse.
absl::StatusOr<ReplayOptions> ReplayOptionsFromConfig(const palisade::v1::Config& config);

// How a replay reads files of `format` (palisadectl replay and ship): each line kept up to one
// byte past the cap the pipeline cuts it at (max_line_bytes; a JSON record, max_record_bytes),
// and at least 1 MiB. The file inputs keep that byte too: a line the reader cut and a whole
// one of the cap's length then differ (ParsedLine::cut), whatever the cap; a reader that
// stopped at the cap handed the pipeline a cut line it took for whole.
LineReaderOptions ReplayReaderOptions(palisade::v1::LogFormat format, size_t max_line_bytes,
                                      size_t max_record_bytes);

// Replays the lines of `source` (a file streamed through a LineReader: memory bounded by one
// batch, whatever the file's size) of `format` through `rules`. The source's error, if any, ends
// the replay with it.
absl::StatusOr<ReplaySummary> Replay(std::shared_ptr<const RuleSet> rules,
                                     palisade::v1::LogFormat format, LineSource& source,
                                     const ReplayOptions& options);
// Replays `lines` of `format` through `rules`.
absl::StatusOr<ReplaySummary> Replay(std::shared_ptr<const RuleSet> rules,
                                     palisade::v1::LogFormat format,
                                     const std::vector<std::string>& lines,
                                     const ReplayOptions& options);
// The same with the default options and `batch_lines` lines per batch.
absl::StatusOr<ReplaySummary> Replay(std::shared_ptr<const RuleSet> rules,
                                     palisade::v1::LogFormat format,
                                     const std::vector<std::string>& lines,
                                     uint32_t batch_lines = 1000);

}  // namespace palisade

#endif  // PALISADE_SERVICES_REPLAY_REPLAY_H_
