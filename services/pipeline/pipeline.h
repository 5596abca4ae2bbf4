// The detection pipeline, independent of any transport: a batch of log records goes through
// parse → match → window → decide, and comes back as an ack. palisaded's Ingest service, the
// replay tool and the tests all drive this one class, so they make the same decisions.
//
// It owns the Engine and publishes its counters to the prometheus::Registry it is given.
// Batches from different streams run concurrently: matching needs no lock and the engine's
// windows are sharded; only a rule swap waits for the batches in flight. Rule reloads are all or nothing: a pack set that fails to
// compile leaves the running rules in place and returns the error.
//
// Recidive (issue 13 §3): each decision the pipeline makes from a detection (created: not an
// extension of one in force, which is the same ban, nor a stale one, nor manual bans, feed
// syncs or token candidates, which are decided elsewhere) is fed back to the same engine as one LOG_FORMAT_DECISIONS line,
//     decision rule=ID kind=KIND key=KEY action=ACTION
// (KIND and ACTION lower case without their enum prefix: ip, range, path, ...; block,
// challenge, ...; KEY with every byte outside printable ASCII, the space and '%' written as
// %XX, so a path key cannot add a field), at the detection's event time and in the stream of
// the batch that made it, so the rules of that format (rules/recidive.textproto) count
// decisions in windows that age in that stream's event time. Dry-run rules' decisions are fed
// too: a dry-run recidive sees what an enforcing one would. Only when some loaded rule reads
// the format. The line's detections are decided at once (in the daemon, in the same batch;
// in replay, on the same line, so replay decides as the daemon does). Decisions made by rules
// of LOG_FORMAT_DECISIONS are never fed, whatever their patterns say, so a pack that counts
// its own decisions cannot loop. Batches shipped in that format are refused: the stream is
// Palisade's own. Batches of LOG_FORMAT_CLOUDFLARE_AUDIT are refused too unless their sender
// may feed them (BatchSender): those records revoke API tokens by id.
//
// Thread-safety: all methods are thread-safe.
#ifndef PALISADE_SERVICES_PIPELINE_PIPELINE_H_
#define PALISADE_SERVICES_PIPELINE_PIPELINE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/attributes.h"
#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/node_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "palisade/v1/config.pb.h"
#include "palisade/v1/palisade.pb.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "services/common/clock.h"
#include "services/decisions/decision_table.h"
#include "services/engine/engine.h"
#include "services/formats/line_parser.h"

namespace palisade {

struct PipelineOptions {
  EngineOptions engine;
  uint32_t max_line_bytes = 16384;
  // A JSON record is read whole up to this many bytes (not cut at max_line_bytes): a client's
  // long headers, logged before the status (Caddy), must not hide the request. The parser bounds
  // what it keeps of it (services/formats/json_parser.h).
  uint32_t max_record_bytes = 8 << 20;
  // Replay: called, line by line, with the latest event time seen so far whenever it moves on,
  // before that line's detections are decided (they are then decided line by line, not per
  // batch), so a simulated clock follows the log and the result does not depend on how the lines
  // were cut into batches.
  std::function<void(absl::Time)> advance_clock;
  // Replay, with advance_clock: windows and pid sessions idle past their span are dropped
  // (Engine::ExpireSpread at the latest line time) whenever the lines' time has moved on this
  // much since the last such sweep, before the line that moved it is counted. The points are the
  // lines', not the batches': the result does not depend on how lines are cut into batches.
  // InfiniteDuration: never (the daemon sweeps on its own clock, ExpireWindows).
  absl::Duration sweep_in_line_time = absl::InfiniteDuration();
  // A line more than kFutureHorizon ahead of the clock (skew, forgery) is moved to the clock's
  // now and counted there, and is no reference for the year of the yearless lines after it. Live
  // the clock is the wall clock. With advance_clock (replay) it is the clock the lines move, read
  // again each time they move it, and such a line does not move it, so a host whose clock runs
  // days or decades ahead leaves the decisions after it as palisaded makes them. Such a line
  // moves the clock only once confirmed (a log silent for more than a day: its first line after
  // the silence is counted at the clock, the next ones at their own times): by a line within a
  // day of it from another writer (syslog HOSTNAME) when the log has had more than one, else by
  // the next timed line agreeing (one writer: no other clock to be skewed against). The first
  // timed line sets the clock unless it is that far ahead of the clock's start (replay:
  // ReplayOptions::reference, else the wall clock): then it is counted at its own time and
  // held, moving neither the clock nor the year, until a second timed line within a day of it
  // agrees (a log from the future replays as written); a second that does not agree makes it a
  // bad time (clamped) and is taken as the first. A line less than a day ahead moves the clock
  // as any other. False: never (tests of the rest).
  bool clamp_future = true;
  // The zone of the times that carry no UTC offset (RFC 3164, combined logs without one): per
  // batch source, else `time_zone`. The daemon defaults it to the host's local zone. A source
  // "host:/path" (palisadectl ship's default) with no entry of its own takes the entry of its
  // path alone, if any: the default was the bare path before, and configs name it so. A time in
  // the hour a fall-back repeats is the occurrence nearer the stream's previous line (the
  // parser's rule), but in the daemon never one more than a few minutes ahead of the clock, and
  // the later one when it is within minutes of now and the stream is live (pipeline.cc,
  // ChooseRepeatedOccurrence): after a quiet half hour the first pass was nearer.
  absl::TimeZone time_zone = absl::UTCTimeZone();
  std::map<std::string, absl::TimeZone> source_time_zones;
  // Config.json_formats by name: the mappings a LOG_FORMAT_JSON batch names (json_format).
  std::map<std::string, palisade::v1::JsonFormat> json_formats;
  // Called once a batch's detections are decided, before the decision table's listeners hear of
  // the changes: updates[i] is what detections[i] did (for the event stream). `source` is the batch's. The detections are done with: a callee may move
  // from them (their evidence, say).
  std::function<void(absl::string_view source, std::vector<Detection>& detections,
                     const std::vector<DecisionUpdate>& updates)>
      on_detections;
  // When set, detections of token rules (TARGET_KIND_TOKEN_FINGERPRINT) are handed here instead
  // of to the decision table: a token-shaped string is only a candidate until a verify says it
  // is a live token (palisaded: services/actions/token_vetter.h), so random strings in a log make
  // no decision, no store row and use no budget. `rules` keeps each candidate's rule alive. The
  // callee takes the detections (moves from them) and must not block.
  std::function<void(absl::string_view source, std::vector<Detection>& candidates,
                     std::shared_ptr<const RuleSet> rules)>
      token_candidates;
  // Per-source state (the year rule's previous line, the event-time watermark windows age by)
  // is kept for at most this many distinct sources, found by a hash of the source: a source is
  // written by the client, so neither its length nor how many there are may grow memory. Past
  // the cap, new sources share one state whose windows age on the clock (counted). A stream
  // with no batch for longer than a day (the watermark's clamp), plus kFutureHorizon (a line may
  // be dated that far ahead) and the longest rule window and session ttl, has nothing left that
  // ages by it: ExpireWindows frees it, so sources (and senders) that stop give their place,
  // and their id, to new ones.
  uint32_t max_streams = 65536;
  // Of those, the streams of senders (LogBatch.stream: a syslog receiver's peers, which UDP
  // lets anyone forge) at most: past it a sender's lines go in its source's stream, so senders
  // cannot take the places of sources (counted: palisade_ingest_sender_streams_folded_total).
  uint32_t max_sender_streams = 32768;
  // Cluster (issue 17): when set, a line's matches are not counted here (Engine::MatchLine, not
  // Process) but handed to `route_match` (MatchRouter::Route), to be counted by the owner of
  // their key's partition. A match it answers kFailedPrecondition for (a token fingerprint,
  // whose secret stays on the node; no router yet) is counted here as Process would.
  std::function<absl::Status(const EngineMatch&)> route_match;
};

// The source of the lines an input reads in a zone other than its own source's (a syslog
// receiver's sender_time_zones: servers in several zones): "SOURCE@ZONE", a stream of its own,
// which ApplyToPipeline (services/server/config.h) gives that zone in source_time_zones.
inline std::string ZonedSource(absl::string_view source, absl::string_view zone_name) {
  return absl::StrCat(source, "@", zone_name);
}

// How far ahead of the clock a line's time may be before clamp_future moves it to the clock.
inline constexpr absl::Duration kFutureHorizon = absl::Hours(24);

// RFC 3629 UTF-8 validity (no overlongs, surrogates or code points past U+10FFFF).
bool IsValidUtf8(absl::string_view s);
// Each byte of `*s` that starts no valid UTF-8 sequence (IsValidUtf8's) becomes '?': the same
// length, valid UTF-8.
void ReplaceInvalidUtf8(std::string* s);

// A batch of lines as views into the caller's buffer (replay: no protobuf record and no string
// per line), with what LogBatch carries but the per-record event times. Prematch may fill in
// each line's candidates on another thread (see Engine::Prematch) before ProcessLines.
struct LineBatch {
  palisade::v1::LogFormat format = palisade::v1::LOG_FORMAT_UNSPECIFIED;
  std::string source;
  std::string json_format;
  std::string stream;  // LogBatch.stream
  uint64_t sequence = 0;
  std::vector<absl::string_view> lines;
  // Filled by Pipeline::Prematch: line i's candidates are
  // prematch.candidates[spans[i].first, spans[i].second); first == kNotPrematched when the line
  // was not (it did not parse there), and ProcessLines then matches it itself.
  static constexpr uint32_t kNotPrematched = UINT32_MAX;
  PrematchBuffer prematch;
  std::vector<std::pair<uint32_t, uint32_t>> spans;
  // Also filled by Prematch: line i as parsed there, when parsed_kept[i] (its views point into
  // lines[i]: not a line whose NULs were replaced, nor a JSON record). ProcessLines uses it
  // instead of parsing the line again unless its year (an RFC 3164 time) or, in an hour the
  // zone repeats, its occurrence came from a reference that ProcessLines' own, the previous
  // line's time, could change.
  std::vector<ParsedLine> parsed;
  std::vector<bool> parsed_kept;
  // With parsed_kept[i]: lines[i] is the line as Prematch prepared it (its line end dropped,
  // cut to the format's cap, truncated[i] saying whether it was cut; a line with hostile bytes
  // is a copy, never kept), which ProcessLines then takes as it is without looking for them
  // again: the bytes of the line's end, read there from the prematching core's cache, were ~8 %
  // of the ordered thread (every pack's nginx replay on two threads).
  std::vector<bool> truncated;
  // Line i came flagged cut by its shipper (LogRecord.cut, read on the Ingest fast path): its
  // end is the shipper's cap, cut here too whatever this cap. Empty, or shorter, when none was.
  std::vector<bool> cut;
  bool shipped_cut(size_t i) const { return i < cut.size() && cut[i]; }
  const RuleSet* prematched_with = nullptr;  // the rules Prematch used (others: ignored)
  // Prematch's buffers: the parsed lines it hands the engine together, and where they are.
  std::vector<const ParsedLine*> walk;
  std::vector<size_t> walk_at;
  std::vector<std::pair<uint32_t, uint32_t>> walk_spans;
  // Every byte of `lines` is ASCII and none is NUL, as the reader found reading them
  // (LineBuffer::plain): no line need be looked at for hostile bytes (PrepareLine's scan, ~130
  // instructions a line). False: each line is looked at.
  bool plain = false;
  // Empties it, keeping the vectors' capacity. `parsed` keeps its elements: one is read only
  // where parsed_kept says, after LineParser::Parse wrote it whole, so Prematch need not write
  // a batch's worth of empty ones first (~130 KB of stores a batch).
  void Clear() {
    plain = false;
    lines.clear();
    prematch.Clear();
    spans.clear();
    parsed_kept.clear();
    truncated.clear();
    cut.clear();
    prematched_with = nullptr;
  }
};

// Who sent a batch, for the formats only some senders may feed. The default is what any
// ingest client (a shipper host, a syslog peer) may send.
struct BatchSender {
  // May feed LOG_FORMAT_CLOUDFLARE_AUDIT, whose records revoke API tokens by id: the server sets
  // it for its own audit-log poller and for an Ingest.Ship client with the admin role (which
  // Decisions.Add already lets revoke any token); replay (services/replay) sets it too, as its
  // decisions reach no edge. Default false: such a batch is refused (kPermissionDenied), so an
  // ingest client cannot name the token to revoke.
  bool audit_records = false;
};

class Pipeline {
 public:
  Pipeline(std::shared_ptr<const RuleSet> rules, PipelineOptions options, Clock& clock,
           DecisionTable& decisions, prometheus::Registry& registry);

  // Runs one batch through the pipeline. kInvalidArgument for a batch without a format;
  // kPermissionDenied for one in a format `sender` may not feed (BatchSender).
  absl::StatusOr<palisade::v1::BatchAck> ProcessBatch(const palisade::v1::LogBatch& batch,
                                                      BatchSender sender = {});

  // Recidive for decisions made outside a batch: a cluster's writer decides the detections
  // other nodes send (ClusterNodeOptions::decided). Each one created is fed back
  // as in a batch (see the header), in `source`'s stream, and what the fed lines detect is
  // decided at once. `made[i]` made `updates[i]`; their rules must be alive (the caller holds
  // their RuleSet).
  void FeedDecisions(absl::string_view source, const std::vector<Detection>& made,
                     const std::vector<DecisionUpdate>& updates);
  // The same for lines as views; the result is the one ProcessBatch gives for a LogBatch of
  // these lines, whether or not Prematch ran over them first.
  absl::StatusOr<palisade::v1::BatchAck> ProcessLines(const LineBatch& batch,
                                                      BatchSender sender = {});
  // The stateless part of matching, for every line of `batch` (see Engine::Prematch): may run
  // on any thread, concurrently with anything, ahead of the ProcessLines of the batch (which
  // must wait for it). Changes no state of the pipeline.
  void Prematch(LineBatch* batch) const;
  // Whether Prematch would walk some Set of `format`'s lines side by side on the calling thread
  // (Engine::WalksSideBySide; never for JSON records, prematched one at a time): what a thread
  // that prematches only for that gain (replay on one thread) asks first.
  bool WalksSideBySide(palisade::v1::LogFormat format) const;

  // Swaps in a new compiled rule set (compile it first: a failed compile never gets here), and
  // with `allowlist` the engine's allowlist, both at once (no batch sees one without the other).
  // With `allowlist`, the rule and feed decisions already made on what it covers are then
  // withdrawn (DecisionTable::WithdrawCovered).
  void SetRules(std::shared_ptr<const RuleSet> rules,
                std::optional<CidrSet> allowlist = std::nullopt);
  std::shared_ptr<const RuleSet> rules() const;

  // Drops idle windows; the server calls this from its sweep. A window ages in the event time of
  // the stream (batch source, or its sender: LogBatch.stream) that last counted in it: the
  // latest line time seen from it, at most the clock's now and at least a day behind it (so a
  // source that stops does not keep its windows forever). Windows of no known stream age on the
  // clock. Frees the streams idle past what anything could age by (see max_streams).
  void ExpireWindows();
  // How long ExpireWindows keeps a stream with no batch, with the rules loaded now: a day (the
  // watermark's clamp), plus kFutureHorizon, plus the longest rule window or session ttl. A
  // syslog receiver keeps a sender's or host's place at least this long
  // (SyslogReceiverOptions::host_stream_idle), so it never names more streams than it has
  // places. Grows when rules with a longer window are loaded.
  absl::Duration stream_idle_bound() const;

  // Admin.TestRules: runs `rules` (or the loaded ones) over lines, without touching windows.
  // Times written without a UTC offset are read in `time_zone`, the zone the daemon reads them
  // in (PipelineOptions::time_zone; time_zone() below), so each match's event_time is the one
  // a batch of the same lines is counted at. The matches and keys listed stop at about
  // `max_answer_bytes` of answer (then `truncated` is set; the counts go on): lines times
  // matching rules can be far more than the request.
  // Each line is taken as a batch's line is: cut at `max_line_bytes` (a JSON record at
  // `max_record_bytes`: LineCapFor), the daemon's caps (PipelineOptions' defaults unless
  // given), its hostile bytes replaced. A line cut there, or cut by the reader at its own cap
  // (`cut[i]`, as LogRecord.cut), is cut (ParsedLine::cut): a match or an ignore leaning on its
  // end is refused as the daemon refuses it, not reported whole.
  static palisade::v1::TestRulesResponse TestRules(
      std::shared_ptr<const RuleSet> rules, palisade::v1::LogFormat format,
      const std::vector<std::string>& lines, absl::Time reference, absl::TimeZone time_zone,
      size_t max_answer_bytes = std::numeric_limits<size_t>::max(),
      uint32_t max_line_bytes = PipelineOptions().max_line_bytes,
      uint32_t max_record_bytes = PipelineOptions().max_record_bytes,
      const std::vector<bool>& cut = {});
  // The same in UTC, for callers that know no zone (a zoneless time is then read as UTC, which
  // differs from what the daemon reads unless its zone is UTC).
  static palisade::v1::TestRulesResponse TestRules(
      std::shared_ptr<const RuleSet> rules, palisade::v1::LogFormat format,
      const std::vector<std::string>& lines, absl::Time reference,
      size_t max_answer_bytes = std::numeric_limits<size_t>::max()) {
    return TestRules(std::move(rules), format, lines, reference, absl::UTCTimeZone(),
                     max_answer_bytes);
  }
  // The zone batches without a zone of their own source are read in (PipelineOptions::
  // time_zone): what Admin.TestRules passes to TestRules.
  absl::TimeZone time_zone() const { return options_.time_zone; }
  // The caps lines are cut at (PipelineOptions): what Admin.TestRules passes to TestRules.
  uint32_t max_line_bytes() const { return options_.max_line_bytes; }
  uint32_t max_record_bytes() const { return options_.max_record_bytes; }
  // The zone of a batch source's zoneless times (PipelineOptions::source_time_zones).
  absl::TimeZone ZoneOf(const std::string& source) const;

  // The engine's windows, for the store (see Engine::Snapshot), and putting them back.
  palisade::v1::EngineSnapshot SnapshotWindows() const;
  // Returns how many saved windows were skipped (Engine::Restore: their rule's key kind or
  // capture changed, or the snapshot predates saying them).
  size_t RestoreWindows(const palisade::v1::EngineSnapshot& snapshot);

  EngineStats engine_stats() const;
  size_t live_windows() const;  // the engine's windows now (Engine::live_windows)
  std::vector<uint64_t> matches_per_rule() const;
  uint64_t lines_malformed() const;
  // Distinct sources (and senders) with their own stream state, and batches from sources past
  // the cap.
  size_t streams() const;
  uint64_t streams_overflowed() const;
  // Recidive: decision lines fed back that were matched from the memo of an earlier one with
  // the same text, and those matched afresh (see FedMemo).
  uint64_t fed_memo_hits() const { return fed_memo_hits_.load(std::memory_order_relaxed); }
  uint64_t fed_memo_misses() const { return fed_memo_misses_.load(std::memory_order_relaxed); }
  // Memos kept for the next batches (at most FedMemo::kIdleMemos; tests).
  size_t idle_fed_memos() const;

 private:
  struct RuleMetrics {
    prometheus::Counter* matches;
    prometheus::Counter* detections;
    // The engine's total for the rule as last added to `matches` (the counter is cumulative
    // across reloads; the engine's total of a rule removed and added again starts over).
    uint64_t published = 0;
  };
  struct SourceMetrics {
    prometheus::Counter* received;
    prometheus::Counter* malformed;
    prometheus::Counter* truncated;
    prometheus::Counter* sanitized;
    prometheus::Counter* clamped;
    prometheus::Counter* untimed;
  };
  // A batch's source is written by whoever ships: as a metric label it is bounded (see
  // kMaxSourceLabels in pipeline.cc), overflowing into source="other", which is counted.
  SourceMetrics& SourceMetricsFor(const std::string& source, palisade::v1::LogFormat format)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(metrics_mu_);
  void RebuildRuleMetricsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(metrics_mu_);
  void PublishEngineGaugesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(metrics_mu_);

  // Per batch source (or sender of one): what carries over from one batch to the next.
  struct StreamState {
    uint32_t id = 0;                             // Engine's stream number (1, 2, ...)
    bool sender = false;                         // a sender's (LogBatch.stream), not a source's
    absl::Time used = absl::InfinitePast();      // the clock when a batch last took it
    absl::Time last_line = absl::InfinitePast();  // the previous line's own time (year rule)
    // The clock when last_line was read: a stream whose lines arrive within minutes of their
    // times is live (the daemon's choice of a repeated hour's occurrence, pipeline.cc).
    absl::Time last_line_read = absl::InfinitePast();
    absl::Time watermark = absl::InfinitePast();  // the latest event time counted
  };

  // ProcessBatch and ProcessLines: `Batch` is an adapter over a LogBatch or a LineBatch
  // (pipeline.cc).
  template <typename Batch>
  absl::StatusOr<palisade::v1::BatchAck> Run(const Batch& batch, BatchSender sender);
  // The line as matched: the trailing newline and CR dropped, cut at `cap` (LineCap), NULs and
  // invalid UTF-8 replaced, byte for byte (into `*sanitized`). Sets *truncated / *sanitize when
  // it did either.
  static absl::string_view PrepareLine(absl::string_view line, size_t cap, std::string* sanitized,
                                       bool* truncated, bool* sanitize);
  // Its first part: the newline and CR dropped, cut at `cap`.
  ABSL_ATTRIBUTE_ALWAYS_INLINE static absl::string_view TrimLine(absl::string_view line,
                                                                 size_t cap, bool* truncated);
  // Where lines of `format` are cut: max_record_bytes for JSON records, else max_line_bytes.
  size_t LineCap(palisade::v1::LogFormat format) const;

  const PipelineOptions options_;
  Clock& clock_;
  DecisionTable& decisions_;

  // Recidive: appends to `*text` the LOG_FORMAT_DECISIONS line for the decision `change` made
  // from `d` (see the header), or returns false when none is fed (not created; a
  // decisions-format rule's).
  static bool AppendDecisionLine(const Detection& d, DecisionChange change, std::string* text);

  // Recidive: what Engine::Prematch found in each decision line fed back, by the line's text. A
  // line's candidates depend on its text and the rules alone (Engine::Prematch), and a repeat
  // offender's next block by the same rule feeds the same line: from the second time on,
  // Process runs no literal gate and no regex for it (~3,300 instructions of a fed line's
  // ~5,300). At most kFedMemoLines lines, then emptied, of at most kFedMemoLineBytes each (a
  // path key is the client's text: a longer line is matched without the memo), so a memo holds
  // ~1.5 MiB at most.
  // Batches take one each (fed_memos_) while they decide; a rule swap empties the pool, and a
  // memo found with other rules is emptied before use. The pool keeps kIdleMemos: a burst of
  // batches deciding at once (one per ingest stream) does not leave a memo each behind.
  struct FedMemo {
    static constexpr size_t kFedMemoLines = 4096;
    static constexpr size_t kFedMemoLineBytes = 256;
    static constexpr size_t kIdleMemos = 4;
    const RuleSet* rules = nullptr;  // the rules its candidates were found with
    // A line's candidates: buffer.candidates[first, second).
    absl::flat_hash_map<std::string, std::pair<uint32_t, uint32_t>> spans;
    PrematchBuffer buffer;
    void Clear() {
      spans.clear();
      buffer.Clear();
    }
  };
  // Feeds one decision line, at `when`, in `stream`: matched from `memo`, found there first if
  // it is not yet (see FedMemo). Under rules_mu_.
  void FeedLine(absl::string_view line, absl::Time when, uint32_t stream, FedMemo& memo,
                ParsedLine& parsed, std::vector<Detection>* out)
      ABSL_SHARED_LOCKS_REQUIRED(rules_mu_);
  // stream_idle_bound of the engine's rules: at construction and in SetRules, as writer.
  void StoreStreamIdleBound();
  // A memo of the pool (or a new one), emptied unless it was found with `rules`; and back.
  std::unique_ptr<FedMemo> TakeFedMemo(const RuleSet* rules);
  void ReturnFedMemo(std::unique_ptr<FedMemo> memo);
  friend class PipelineFedMemoPeer;  // pipeline_test: takes and returns memos directly
  friend class PipelineRulesLockPeer;  // pipeline_test: holds rules_mu_ as a reload does

  // The per-rule match counters from the engine's totals, the detections of `detected`'s
  // rules, the engine gauges. Under rules_mu_ (the rules in use).
  void PublishRuleMetrics(const std::vector<const CompiledRule*>& detected);

  // The state of the stream of `source`'s `sender` (empty: the source's own; past
  // max_sender_streams, the source's too), taken at `now`; `*key`: what it is kept under in
  // streams_ (see PipelineOptions::max_streams).
  StreamState& StreamFor(absl::string_view source, absl::string_view sender, absl::Time now,
                         uint64_t* key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(streams_mu_);

  mutable absl::Mutex streams_mu_;
  // Keyed by absl::Hash of the source (with the sender, for a sender's stream): 8 bytes
  // whatever their length.
  absl::flat_hash_map<uint64_t, StreamState> streams_ ABSL_GUARDED_BY(streams_mu_);
  // Ids of the streams ExpireWindows freed, given again before new ones; the next new id; how
  // many of streams_ are senders'.
  std::vector<uint32_t> free_stream_ids_ ABSL_GUARDED_BY(streams_mu_);
  uint32_t next_stream_id_ ABSL_GUARDED_BY(streams_mu_) = 1;
  uint32_t sender_streams_ ABSL_GUARDED_BY(streams_mu_) = 0;
  // Sources past max_streams: id 0, so their windows age on the clock.
  StreamState overflow_stream_ ABSL_GUARDED_BY(streams_mu_);
  uint64_t streams_overflowed_ ABSL_GUARDED_BY(streams_mu_) = 0;
  // sweep_in_line_time's next sweep. Touched only with advance_clock set, by replay's one
  // thread that processes (ProcessLines is then never called concurrently).
  absl::Time next_line_sweep_;
  // With advance_clock, likewise: whether some line has moved the clock yet; the latest line
  // more than kFutureHorizon ahead of it that no line has confirmed yet (see
  // PipelineOptions::clamp_future), with its writer and how many lines in a row agreed with it;
  // and the log's writers so far (syslog HOSTNAMEs): the first, and whether there was another.
  struct AheadLine {
    bool pending = false;
    absl::Time time;
    std::string host;
    int run = 0;
  };
  bool line_clock_started_ = false;
  AheadLine ahead_;
  std::string log_host_;
  bool log_hosts_many_ = false;

  // Readers: batches (and sweeps, snapshots). Writer: a rule swap.
  mutable absl::Mutex rules_mu_;
  Engine engine_;  // thread-safe for Process; rule swaps under rules_mu_ as writer
  // stream_idle_bound in nanoseconds, written with the rules (StoreStreamIdleBound): a syslog
  // receiver reads it under its batch lock, per frame of a new host, and a reader of rules_mu_
  // would queue there behind a reload's writer.
  std::atomic<int64_t> stream_idle_bound_ns_{0};
  // Idle memos of fed decision lines: at most FedMemo::kIdleMemos.
  mutable absl::Mutex fed_memos_mu_ ABSL_ACQUIRED_AFTER(rules_mu_);
  std::vector<std::unique_ptr<FedMemo>> fed_memos_ ABSL_GUARDED_BY(fed_memos_mu_);
  // Fed decision lines matched from a memo, and found for one (tests).
  std::atomic<uint64_t> fed_memo_hits_{0};
  std::atomic<uint64_t> fed_memo_misses_{0};
  absl::Mutex metrics_mu_;
  std::vector<RuleMetrics> rule_metrics_ ABSL_GUARDED_BY(metrics_mu_);
  // A loaded rule's place in rule_metrics_ (and in the engine's rules), for the detections'
  // counters: looked up, not searched for among every loaded rule per detection.
  absl::flat_hash_map<const CompiledRule*, size_t> rule_index_ ABSL_GUARDED_BY(metrics_mu_);
  // node_hash_map: batches keep a pointer to their entry while others are added.
  absl::node_hash_map<std::string, SourceMetrics> source_metrics_ ABSL_GUARDED_BY(metrics_mu_);
  // The distinct source labels handed out so far (at most kMaxSourceLabels).
  absl::flat_hash_set<std::string> source_labels_ ABSL_GUARDED_BY(metrics_mu_);
  std::atomic<uint64_t> malformed_{0};
  // palisade_decisions_total's counters by rule id, then action * 8 + change (rule ids come
  // from the loaded packs, "manual" and "feed": as bounded as the family's own series).
  absl::Mutex decision_counters_mu_;
  absl::flat_hash_map<std::string, absl::flat_hash_map<int, prometheus::Counter*>>
      decision_counters_ ABSL_GUARDED_BY(decision_counters_mu_);
  uint64_t evicted_published_ ABSL_GUARDED_BY(metrics_mu_) = 0;
  uint64_t memory_evicted_published_ ABSL_GUARDED_BY(metrics_mu_) = 0;
  uint64_t truncated_published_ ABSL_GUARDED_BY(metrics_mu_) = 0;
  // Registered in the constructor's body (set once, never null after it).
  prometheus::Counter* memory_evicted_counter_ = nullptr;
  prometheus::Gauge* memory_gauge_ = nullptr;
  prometheus::Counter* evidence_truncated_counter_ = nullptr;
  // Batches of a sender whose lines went in their source's stream (StreamFor).
  prometheus::Counter* sender_streams_folded_counter_ = nullptr;
  // The engine's session table (Rule.session).
  prometheus::Gauge* sessions_gauge_ = nullptr;
  prometheus::Gauge* session_bytes_gauge_ = nullptr;
  prometheus::Counter* sessions_evicted_counter_ = nullptr;
  prometheus::Counter* session_misses_counter_ = nullptr;
  uint64_t sessions_evicted_published_ ABSL_GUARDED_BY(metrics_mu_) = 0;
  uint64_t session_misses_published_ ABSL_GUARDED_BY(metrics_mu_) = 0;

  prometheus::Family<prometheus::Counter>& received_family_;
  prometheus::Family<prometheus::Counter>& malformed_family_;
  prometheus::Family<prometheus::Counter>& truncated_family_;
  prometheus::Family<prometheus::Counter>& sanitized_family_;
  prometheus::Family<prometheus::Counter>& clamped_family_;
  prometheus::Family<prometheus::Counter>& untimed_family_;
  prometheus::Family<prometheus::Counter>& matches_family_;
  prometheus::Family<prometheus::Counter>& detections_family_;
  prometheus::Family<prometheus::Counter>& decisions_family_;
  prometheus::Gauge& windows_gauge_;
  prometheus::Counter& evicted_counter_;
  prometheus::Gauge& rules_loaded_gauge_;
  prometheus::Histogram& batch_latency_;
  prometheus::Counter& source_overflow_;
  prometheus::Counter& streams_overflow_counter_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_PIPELINE_PIPELINE_H_
