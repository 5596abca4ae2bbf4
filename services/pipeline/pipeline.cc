#include "services/pipeline/pipeline.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "services/common/proto_time.h"
#include "services/formats/json_parser.h"
#include "services/formats/line_parser.h"

namespace palisade {
namespace {

using palisade::v1::BatchAck;
using palisade::v1::LogBatch;
using palisade::v1::LogFormat;

constexpr char kEvictedHelp[] =
    "Windows evicted, by reason: key_cap (a rule hit engine.max_keys_per_rule), memory_budget "
    "(the engine reached engine.memory_budget_bytes; least recently active first).";

std::string ActionLabel(palisade::v1::Action a) {
  std::string name = palisade::v1::Action_Name(a);
  absl::string_view v = name;
  if (absl::ConsumePrefix(&v, "ACTION_")) name = std::string(v);
  std::transform(name.begin(), name.end(), name.begin(), ::tolower);
  return name;
}

// ActionLabel and the target kind's label likewise ("ip", "path"), made once per enum value
// (values out of range, which no rule holds, are ""): a fed decision line (recidive) named both
// through Action_Name / TargetKind_Name, a strip and a lower-casing each time, ~600 instructions.
absl::string_view CachedActionLabel(palisade::v1::Action a) {
  static const auto* const labels = [] {
    auto* v = new std::vector<std::string>;
    for (int i = 0; i <= palisade::v1::Action_MAX; ++i) {
      v->push_back(palisade::v1::Action_IsValid(i) ? ActionLabel(static_cast<palisade::v1::Action>(i))
                                                   : std::string());
    }
    return v;
  }();
  const int i = static_cast<int>(a);
  return i >= 0 && static_cast<size_t>(i) < labels->size() ? absl::string_view((*labels)[i])
                                                           : absl::string_view();
}

absl::string_view KindLabel(palisade::v1::TargetKind k) {
  static const auto* const labels = [] {
    auto* v = new std::vector<std::string>;
    for (int i = 0; i <= palisade::v1::TargetKind_MAX; ++i) {
      std::string name;
      if (palisade::v1::TargetKind_IsValid(i)) {
        name = palisade::v1::TargetKind_Name(static_cast<palisade::v1::TargetKind>(i));
        absl::string_view n = name;
        if (absl::ConsumePrefix(&n, "TARGET_KIND_")) name = std::string(n);
        absl::AsciiStrToLower(&name);
      }
      v->push_back(std::move(name));
    }
    return v;
  }();
  const int i = static_cast<int>(k);
  return i >= 0 && static_cast<size_t>(i) < labels->size() ? absl::string_view((*labels)[i])
                                                           : absl::string_view();
}

// Source labels (LogBatch.source is chosen by the shipper): distinct labels kept, and bytes per
// label. Enough for every log file of a fleet of tens of hosts; more go to source="other".
constexpr size_t kMaxSourceLabels = 100;
constexpr size_t kMaxSourceLabelBytes = 64;

prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1};
}

// The daemon's choice between the two occurrences of a local time the zone repeats (the hour
// after a fall-back), which the parser made nearest to the previous line: after a quiet half
// hour the first pass is nearer, though a live stream's line can only be the second.
//   kRepeatedSkew  an occurrence later than now plus this, plus how far ahead the stream's
//                  previous line was of its reading (a sender's clock that runs fast: its lines
//                  are that far ahead all along), has not happened yet: the earlier is taken.
//   kLiveWithin    the later occurrence is taken when it is within this of now (and of that
//                  skew) and the stream is live: its previous line was read no more than this
//                  after its own time. A backlog (lines read long after they were written)
//                  keeps nearest-to-previous, and so does replay, which has no wall clock to
//                  tell a live stream by.
constexpr absl::Duration kRepeatedSkew = absl::Minutes(5);
constexpr absl::Duration kLiveWithin = absl::Minutes(5);
// The most skew a stream's previous line lends: a clock minutes fast, never half the hour the
// fall-back repeats (a stream is a source's, and one line far ahead, from another host of a
// central log or forged, would otherwise carry the first pass's lines into the second).
constexpr absl::Duration kMaxSkew = absl::Minutes(15);

// `t`, an occurrence of a local time `zone` repeats, moved to the other occurrence when the
// rules above say so; else `t`.
absl::Time ChooseRepeatedOccurrence(absl::Time t, absl::TimeZone zone, absl::Time now,
                                    absl::Duration skew, bool live) {
  const absl::TimeZone::TimeInfo info = zone.At(absl::ToCivilSecond(t, zone));
  if (info.kind != absl::TimeZone::TimeInfo::REPEATED || info.post <= info.pre) return t;
  // pre and post are whole seconds; `t` may carry a fraction.
  const absl::Duration shift = info.post - info.pre;
  const bool later = t >= info.post;
  const absl::Time early = later ? t - shift : t;
  const absl::Time late = early + shift;
  if (later && late > now + skew + kRepeatedSkew) return early;
  if (!later && live && late <= now + skew + kRepeatedSkew && late >= now - kLiveWithin) {
    return late;
  }
  return t;
}

// Replay: a far-ahead line moves the clock once confirmed: by a line of another writer (the log
// moved on after a silence, not one host's clock), by this many in a row of a log with one
// writer so far, or by a run of agreeing lines spanning kAheadSpan of their own time (a host
// that alone came back after a silence: a skewed host's burst, a connection's few lines, spans
// seconds).
constexpr int kAheadRun = 2;
constexpr absl::Duration kAheadSpan = absl::Minutes(10);

// The writer of a line whose clock stamped it, when the format names one (the syslog
// HOSTNAME); else empty: the log has one writer (an access log's host is its client).
absl::string_view WriterOf(LogFormat format, const ParsedLine& parsed) {
  if (format != LogFormat::LOG_FORMAT_SYSLOG && format != LogFormat::LOG_FORMAT_SYSLOG5424) {
    return {};
  }
  return parsed.host == "-" ? absl::string_view() : parsed.host;
}

// Moves `counter` up to the engine's running total `total`; `published` is what it has had.
void CatchUp(prometheus::Counter& counter, uint64_t total, uint64_t& published) {
  if (total <= published) return;
  counter.Increment(static_cast<double>(total - published));
  published = total;
}

}  // namespace

namespace {

// The length of the valid UTF-8 sequence (RFC 3629: no overlongs, surrogates or code points
// past U+10FFFF) that starts at non-ASCII byte s[i]; 0 when none does.
int Utf8SequenceAt(absl::string_view s, size_t i) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  const int len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
  if (len == 0 || c > 0xf4 || i + len > s.size()) return 0;
  for (int k = 1; k < len; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return 0;
  }
  const unsigned char c1 = static_cast<unsigned char>(s[i + 1]);
  if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 > 0x9f) || (c == 0xf0 && c1 < 0x90) ||
      (c == 0xf4 && c1 > 0x8f)) {
    return 0;  // overlong, surrogate, or past U+10FFFF
  }
  return len;
}

}  // namespace

bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    // Eight ASCII bytes at a time: log lines are nearly all ASCII (a byte at a time was ~3 %
    // of a file input's instructions per line).
    while (i + 8 <= n) {
      uint64_t word;
      std::memcpy(&word, s.data() + i, 8);
      if ((word & 0x8080808080808080ULL) != 0) break;
      i += 8;
    }
    if (i >= n) break;
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const int len = Utf8SequenceAt(s, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

void ReplaceInvalidUtf8(std::string* s) {
  for (size_t i = 0; i < s->size();) {
    if (static_cast<unsigned char>((*s)[i]) < 0x80) {
      ++i;
      continue;
    }
    const int len = Utf8SequenceAt(*s, i);
    if (len == 0) {
      (*s)[i++] = '?';
    } else {
      i += len;
    }
  }
}

Pipeline::Pipeline(std::shared_ptr<const RuleSet> rules, PipelineOptions options, Clock& clock,
                   DecisionTable& decisions, prometheus::Registry& registry)
    : options_(std::move(options)),
      clock_(clock),
      decisions_(decisions),
      next_line_sweep_(options_.sweep_in_line_time == absl::InfiniteDuration()
                           ? absl::InfiniteFuture()
                           : absl::InfinitePast()),
      engine_(rules, options_.engine),
      received_family_(prometheus::BuildCounter()
                           .Name("palisade_ingest_lines_received_total")
                           .Help("Log lines received, by source and format.")
                           .Register(registry)),
      malformed_family_(prometheus::BuildCounter()
                            .Name("palisade_ingest_lines_malformed_total")
                            .Help("Lines that did not parse in their format; counted and skipped.")
                            .Register(registry)),
      truncated_family_(prometheus::BuildCounter()
                            .Name("palisade_ingest_lines_truncated_total")
                            .Help("Lines longer than engine.max_line_bytes (JSON records: "
                                  "engine.max_record_bytes), cut before matching; also "
                                  "lines their shipper flagged cut at its own cap.")
                            .Register(registry)),
      sanitized_family_(prometheus::BuildCounter()
                            .Name("palisade_ingest_lines_sanitized_total")
                            .Help("Lines holding NUL bytes (replaced) or invalid UTF-8.")
                            .Register(registry)),
      clamped_family_(prometheus::BuildCounter()
                          .Name("palisade_ingest_lines_bad_time_total")
                          .Help("Lines with an absurd time: future ones clamped to now; ones "
                                "before 2000, impossible ones (a field or offset out of range, "
                                "a fraction past nanoseconds, bad event_time nanos) rejected.")
                          .Register(registry)),
      untimed_family_(prometheus::BuildCounter()
                          .Name("palisade_ingest_lines_untimed_total")
                          .Help("Lines with no time of their own (no stamp their format reads, "
                                "no event_time): counted at the clock's now.")
                          .Register(registry)),
      matches_family_(prometheus::BuildCounter()
                          .Name("palisade_engine_rule_matches_total")
                          .Help("Lines a rule matched and counted, by rule.")
                          .Register(registry)),
      detections_family_(prometheus::BuildCounter()
                             .Name("palisade_engine_detections_total")
                             .Help("Thresholds crossed, by rule.")
                             .Register(registry)),
      decisions_family_(prometheus::BuildCounter()
                            .Name("palisade_decisions_total")
                            .Help("Decision changes, by rule, action and change "
                                  "(created, extended, expired, withdrawn, stale).")
                            .Register(registry)),
      windows_gauge_(prometheus::BuildGauge()
                         .Name("palisade_engine_windows")
                         .Help("Live (rule, key) windows.")
                         .Register(registry)
                         .Add({})),
      evicted_counter_(prometheus::BuildCounter()
                           .Name("palisade_engine_windows_evicted_total")
                           .Help(kEvictedHelp)
                           .Register(registry)
                           .Add({{"reason", "key_cap"}})),
      rules_loaded_gauge_(prometheus::BuildGauge()
                              .Name("palisade_rules_loaded")
                              .Help("Rules currently loaded.")
                              .Register(registry)
                              .Add({})),
      batch_latency_(prometheus::BuildHistogram()
                         .Name("palisade_ingest_batch_duration_seconds")
                         .Help("Time to run one batch through parse, match, window and decide.")
                         .Register(registry)
                         .Add({}, LatencyBuckets())),
      source_overflow_(prometheus::BuildCounter()
                           .Name("palisade_ingest_source_label_overflow_total")
                           .Help("Batches counted under source=\"other\": their source was a new "
                                 "one past the 100 distinct source labels kept.")
                           .Register(registry)
                           .Add({})),
      streams_overflow_counter_(prometheus::BuildCounter()
                                    .Name("palisade_ingest_streams_overflow_total")
                                    .Help("Batches from sources past the per-source state cap "
                                          "(they share one state; windows age on the clock).")
                                    .Register(registry)
                                    .Add({})) {
  // The same family (the registry merges by name): evictions by the engine's memory ceiling.
  memory_evicted_counter_ = &prometheus::BuildCounter()
                                 .Name("palisade_engine_windows_evicted_total")
                                 .Help(kEvictedHelp)
                                 .Register(registry)
                                 .Add({{"reason", "memory_budget"}});
  memory_gauge_ = &prometheus::BuildGauge()
                       .Name("palisade_engine_memory_bytes")
                       .Help("Bytes the engine's windows hold (objects, evidence, tables), as "
                             "accounted against engine.memory_budget_bytes.")
                       .Register(registry)
                       .Add({});
  prometheus::BuildGauge()
      .Name("palisade_engine_memory_budget_bytes")
      .Help("engine.memory_budget_bytes: the ceiling on palisade_engine_memory_bytes.")
      .Register(registry)
      .Add({})
      .Set(static_cast<double>(options_.engine.memory_budget_bytes != 0
                                   ? options_.engine.memory_budget_bytes
                                   : EngineOptions().memory_budget_bytes));
  sender_streams_folded_counter_ =
      &prometheus::BuildCounter()
           .Name("palisade_ingest_sender_streams_folded_total")
           .Help("Batches whose sender (LogBatch.stream, a syslog receiver's peer) had no stream "
                 "of its own, past max_sender_streams or max_streams, and went in their "
                 "source's: their windows age by the source's other senders' times.")
           .Register(registry)
           .Add({});
  evidence_truncated_counter_ =
      &prometheus::BuildCounter()
           .Name("palisade_engine_evidence_truncated_total")
           .Help("Evidence lines cut to their share of engine.max_evidence_bytes.")
           .Register(registry)
           .Add({});
  sessions_gauge_ = &prometheus::BuildGauge()
                         .Name("palisade_engine_sessions")
                         .Help("Live sessions (a connection's lines tied by pid or id, for rules "
                               "with a session).")
                         .Register(registry)
                         .Add({});
  session_bytes_gauge_ = &prometheus::BuildGauge()
                              .Name("palisade_engine_session_bytes")
                              .Help("Bytes the sessions hold, against engine.max_session_bytes.")
                              .Register(registry)
                              .Add({});
  sessions_evicted_counter_ =
      &prometheus::BuildCounter()
           .Name("palisade_engine_sessions_evicted_total")
           .Help("Sessions dropped past engine.max_sessions or engine.max_session_bytes, least "
                 "recently seen first.")
           .Register(registry)
           .Add({});
  session_misses_counter_ =
      &prometheus::BuildCounter()
           .Name("palisade_engine_session_misses_total")
           .Help("Matches of session rules that needed a key from their session and found none "
                 "(not counted).")
           .Register(registry)
           .Add({});
  auto& active = prometheus::BuildGauge()
                     .Name("palisade_decisions_active")
                     .Help("Decisions currently active.")
                     .Register(registry)
                     .Add({});
  // What a restart restored (the listener below moves it with each change after).
  active.Set(static_cast<double>(decisions_.active_count()));
  decisions_.AddListener([this, &active](const DecisionUpdate& u) {
    static const std::string kManual = "manual", kFeed = "feed";
    const std::string& rule =
        u.decision.origin() == palisade::v1::ORIGIN_RULE
            ? u.decision.rule_id()
            : (u.decision.origin() == palisade::v1::ORIGIN_MANUAL ? kManual : kFeed);
    // The counter of (rule, action, change) is looked up in the family once: its label lookup
    // (a std::map of label strings built and hashed per call) was ~1,400 instructions per
    // decision change, on the replay's and the daemon's paths alike.
    const int slot = static_cast<int>(u.decision.action()) * 8 + static_cast<int>(u.change);
    prometheus::Counter* counter;
    {
      absl::MutexLock lock(&decision_counters_mu_);
      prometheus::Counter*& cached = decision_counters_[rule][slot];
      if (cached == nullptr) {
        cached = &decisions_family_.Add({{"rule", rule},
                                         {"action", ActionLabel(u.decision.action())},
                                         {"change", std::string(DecisionChangeName(u.change))}});
      }
      counter = cached;
    }
    counter->Increment();
    active.Set(static_cast<double>(decisions_.active_count()));
  });
  StoreStreamIdleBound();
  absl::MutexLock lock(&metrics_mu_);
  RebuildRuleMetricsLocked();
}

void Pipeline::RebuildRuleMetricsLocked() {
  rule_metrics_.clear();
  rule_index_.clear();
  const std::vector<uint64_t> totals = engine_.matches_per_rule();
  for (const auto& rule : engine_.rules()->rules()) {
    const size_t i = rule_metrics_.size();
    rule_index_.emplace(rule.get(), i);
    rule_metrics_.push_back({&matches_family_.Add({{"rule", rule->id()}}),
                             &detections_family_.Add({{"rule", rule->id()}}),
                             i < totals.size() ? totals[i] : 0});
  }
  rules_loaded_gauge_.Set(static_cast<double>(engine_.rules()->rules().size()));
}

Pipeline::SourceMetrics& Pipeline::SourceMetricsFor(const std::string& source, LogFormat format) {
  // The label: at most kMaxSourceLabelBytes of [A-Za-z0-9._:/@-] (anything else becomes '_'),
  // so a megabyte or a newline in a source cannot reach the exposition; past kMaxSourceLabels
  // distinct labels, "other". 80,000 sources made 400,000 series before.
  std::string label = source.substr(0, kMaxSourceLabelBytes);
  for (char& c : label) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' ||
          c == ':' || c == '/' || c == '@' || c == '-')) {
      c = '_';
    }
  }
  if (!source_labels_.contains(label)) {
    if (source_labels_.size() < kMaxSourceLabels) {
      source_labels_.insert(label);
    } else {
      label = "other";
      source_overflow_.Increment();
    }
  }
  std::string key = absl::StrCat(label, "\t", static_cast<int>(format));
  auto it = source_metrics_.find(key);
  if (it != source_metrics_.end()) return it->second;
  const prometheus::Labels labels = {{"source", label},
                                     {"format", std::string(FormatName(format))}};
  SourceMetrics m{&received_family_.Add(labels), &malformed_family_.Add(labels),
                  &truncated_family_.Add(labels), &sanitized_family_.Add(labels),
                  &clamped_family_.Add(labels), &untimed_family_.Add(labels)};
  return source_metrics_.emplace(std::move(key), m).first->second;
}

namespace {

// What Pipeline::Run reads of a batch, over either representation.
class ProtoBatch {
 public:
  explicit ProtoBatch(const LogBatch& b) : b_(b) {}
  LogFormat format() const { return b_.format(); }
  uint64_t sequence() const { return b_.sequence(); }
  const std::string& source() const { return b_.source(); }
  const std::string& stream() const { return b_.stream(); }
  const std::string& json_format() const { return b_.json_format(); }
  int size() const { return b_.records_size(); }
  absl::string_view line(int i) const { return b_.records(i).line(); }
  const google::protobuf::Timestamp* event_time(int i) const {
    return b_.records(i).has_event_time() ? &b_.records(i).event_time() : nullptr;
  }
  bool prematched(int, const RuleSet*, PrematchedLine*) const { return false; }
  const ParsedLine* preparsed(int) const { return nullptr; }
  bool prepared(int, bool*) const { return false; }
  bool plain() const { return false; }
  // The shipper cut record i at its own cap (LogRecord.cut).
  bool shipped_cut(int i) const { return b_.records(i).cut(); }

 private:
  const LogBatch& b_;
};

class ViewBatch {
 public:
  explicit ViewBatch(const LineBatch& b) : b_(b) {}
  LogFormat format() const { return b_.format; }
  uint64_t sequence() const { return b_.sequence; }
  const std::string& source() const { return b_.source; }
  const std::string& stream() const { return b_.stream; }
  const std::string& json_format() const { return b_.json_format; }
  int size() const { return static_cast<int>(b_.lines.size()); }
  absl::string_view line(int i) const { return b_.lines[i]; }
  // Every line is plain ASCII without a NUL (LineBatch::plain).
  bool plain() const { return b_.plain; }
  const google::protobuf::Timestamp* event_time(int) const { return nullptr; }
  // Line i's candidates, when Prematch found them with `rules` (the rules in use).
  bool prematched(int i, const RuleSet* rules, PrematchedLine* out) const {
    if (b_.prematched_with == nullptr || b_.prematched_with != rules ||
        static_cast<size_t>(i) >= b_.spans.size() ||
        b_.spans[i].first == LineBatch::kNotPrematched || b_.spans[i].first > b_.spans[i].second ||
        b_.spans[i].second > b_.prematch.candidates.size()) {
      return false;
    }
    out->candidates = absl::MakeConstSpan(b_.prematch.candidates.data() + b_.spans[i].first,
                                          b_.spans[i].second - b_.spans[i].first);
    out->buffer = &b_.prematch;
    return true;
  }
  // Whether Prematch prepared line i as it stands in the batch (no hostile byte to replace:
  // such a line is a copy, never kept; its line end dropped and cut, LineBatch::truncated), and
  // then whether it was cut.
  bool prepared(int i, bool* truncated) const {
    if (static_cast<size_t>(i) >= b_.parsed_kept.size() || !b_.parsed_kept[i] ||
        static_cast<size_t>(i) >= b_.truncated.size()) {
      return false;
    }
    *truncated = b_.truncated[i];
    return true;
  }
  // The shipper cut line i at its own cap (LineBatch::cut).
  bool shipped_cut(int i) const { return b_.shipped_cut(static_cast<size_t>(i)); }
  // Line i as Prematch parsed it, when it kept it (read only with prematched()'s candidates).
  const ParsedLine* preparsed(int i) const {
    return static_cast<size_t>(i) < b_.parsed_kept.size() && b_.parsed_kept[i] &&
                   static_cast<size_t>(i) < b_.parsed.size()
               ? &b_.parsed[i]
               : nullptr;
  }

 private:
  const LineBatch& b_;
};

}  // namespace

inline absl::string_view Pipeline::TrimLine(absl::string_view line, size_t cap,
                                            bool* truncated) {
  size_t end = line.size();
  while (end > 0 && line[end - 1] == '\n') --end;
  // Longer than the cap before a CR is dropped: a reader that kept one byte past the cap
  // (services/inputs) may have kept a CR there, and the line without it would look whole, its
  // cut end taken for its writer's (ParsedLine::cut). A whole line of exactly the cap ending in
  // CR LF is flagged too: the safe side.
  *truncated = end > cap;
  line = line.substr(0, end);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  if (line.size() > cap) line = line.substr(0, cap);
  return line;
}

size_t Pipeline::LineCap(palisade::v1::LogFormat format) const {
  return LineCapFor(format, options_.max_line_bytes, options_.max_record_bytes);
}

namespace {

// A prefix of `s` whose bytes are all ASCII and none NUL, read 16 bytes at a time (SSE2), then 8
// (nearly always the whole line). It holds no hostile byte, and the UTF-8 of what follows it is
// valid when the whole is. One pass for both questions where PrepareLine made two (memchr for a
// NUL, then IsValidUtf8): PrepareLine went from 258 to 130 instructions a line (sshd corpus).
size_t PlainAsciiPrefix(absl::string_view s) {
  const char* p = s.data();
  const size_t n = s.size();
  size_t i = 0;
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128();
  // Whether the 16 bytes at `at` hold a byte with its high bit set (non-ASCII) or (after the
  // compare) a NUL.
  auto hostile = [&](size_t at) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + at));
    return _mm_movemask_epi8(_mm_or_si128(v, _mm_cmpeq_epi8(v, zero))) != 0;
  };
  while (i + 16 <= n) {
    if (hostile(i)) return i;
    i += 16;
  }
  // The tail, as the last 16 bytes (overlapping the blocks read): plain, so is the whole line.
  if (i < n && n >= 16 && !hostile(n - 16)) return n;
#endif
  while (i + 8 <= n) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    // High bits of non-ASCII bytes, and of zero bytes (the classic has-a-zero-byte test).
    if (((w | ((w - 0x0101010101010101ULL) & ~w)) & 0x8080808080808080ULL) != 0) break;
    i += 8;
  }
  return i;
}

// A decision line's key byte written as it is: printable ASCII but the space and '%' (the others
// are written %XX, see the header).
bool PlainKeyByte(unsigned char c) { return c > 0x20 && c < 0x7f && c != '%'; }

// Whether every byte of `s` is a PlainKeyByte, 16 at a time (SSE2): a byte at a time was ~13
// instructions a byte of every fed line's key.
bool AllPlainKeyBytes(absl::string_view s) {
  size_t i = 0;
#if defined(__SSE2__)
  const __m128i space = _mm_set1_epi8(0x20), del = _mm_set1_epi8(0x7f);
  const __m128i percent = _mm_set1_epi8('%');
  // The plain bytes' bits. Signed compares: a byte of 0x80 or more is negative, not above 0x20.
  auto plain = [&](const char* p) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i in_range = _mm_and_si128(_mm_cmpgt_epi8(v, space), _mm_cmplt_epi8(v, del));
    return _mm_movemask_epi8(_mm_andnot_si128(_mm_cmpeq_epi8(v, percent), in_range));
  };
  for (; i + 16 <= s.size(); i += 16) {
    if (plain(s.data() + i) != 0xffff) return false;
  }
  if (i < s.size()) {
    char tail[16];
    std::memset(tail, 'a', sizeof(tail));  // plain padding
    std::memcpy(tail, s.data() + i, s.size() - i);
    return plain(tail) == 0xffff;
  }
  return true;
#else
  for (; i < s.size(); ++i) {
    if (!PlainKeyByte(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
#endif
}

}  // namespace

absl::string_view Pipeline::PrepareLine(absl::string_view line, size_t cap,
                                        std::string* sanitized, bool* truncated,
                                        bool* sanitize) {
  *sanitize = false;
  line = TrimLine(line, cap, truncated);
  // Hostile bytes, replaced in a copy and counted: NULs by a space (they would cut evidence and
  // log lines short), each byte of invalid UTF-8 by '?' (RE2 matches no class, not even `.`,
  // against such a byte: a client that got one into a user name or a header before the address
  // made the line match no rule, and a token next to one was neither revoked nor redacted).
  // One byte for one, so the line keeps its length and its captures their places. Looked for
  // past the plain prefix only (nearly always all but the last few bytes).
  const absl::string_view rest = line.substr(PlainAsciiPrefix(line));
  if (rest.empty()) return line;
  const bool nul = rest.find('\0') != absl::string_view::npos;
  const bool invalid = !IsValidUtf8(rest);
  if (nul || invalid) {
    *sanitize = true;
    sanitized->assign(line.data(), line.size());
    if (nul) std::replace(sanitized->begin(), sanitized->end(), '\0', ' ');
    if (invalid) ReplaceInvalidUtf8(sanitized);
    line = *sanitized;
  }
  return line;
}

absl::StatusOr<BatchAck> Pipeline::ProcessBatch(const LogBatch& batch, BatchSender sender) {
  return Run(ProtoBatch(batch), sender);
}

absl::StatusOr<BatchAck> Pipeline::ProcessLines(const LineBatch& batch, BatchSender sender) {
  return Run(ViewBatch(batch), sender);
}

bool Pipeline::WalksSideBySide(palisade::v1::LogFormat format) const {
  if (IsJsonFormat(format)) return false;
  absl::ReaderMutexLock rules_lock(&rules_mu_);
  return engine_.WalksSideBySide(format);
}

absl::TimeZone Pipeline::ZoneOf(const std::string& source) const {
  if (options_.source_time_zones.empty()) return options_.time_zone;
  if (auto zone = options_.source_time_zones.find(source);
      zone != options_.source_time_zones.end()) {
    return zone->second;
  }
  // "host:/path" without an entry: the path's own (the bare path was ship's default source).
  if (const size_t colon = source.find(":/"); colon != std::string::npos && colon > 0) {
    if (auto zone = options_.source_time_zones.find(source.substr(colon + 1));
        zone != options_.source_time_zones.end()) {
      return zone->second;
    }
  }
  return options_.time_zone;
}

void Pipeline::Prematch(LineBatch* batch) const {
  batch->prematch.Clear();
  batch->spans.assign(batch->lines.size(), {LineBatch::kNotPrematched, 0});
  batch->parsed.resize(batch->lines.size());
  batch->parsed_kept.assign(batch->lines.size(), false);
  batch->truncated.assign(batch->lines.size(), false);
  absl::ReaderMutexLock rules_lock(&rules_mu_);
  batch->prematched_with = engine_.rules().get();
  const std::string source = batch->source.empty() ? "-" : batch->source;
  LineParser parser(batch->format, ZoneOf(source));
  if (batch->format == palisade::v1::LOG_FORMAT_JSON) {
    auto mapping = options_.json_formats.find(batch->json_format);
    if (mapping == options_.json_formats.end() || !parser.SetJsonFormat(mapping->second).ok()) {
      return;  // ProcessLines refuses the batch, naming why
    }
  }
  // The candidates depend on the message alone, which no reference time changes: the year
  // only moves the time. A line that does not parse here is left to ProcessLines.
  absl::Time reference = clock_.TimeNow();
  YearRule rule = YearRule::kAtMostADayAhead;
  // Views into the parser's buffers (JSON records) do not outlive the next line.
  const bool keep = !IsJsonFormat(batch->format);
  const size_t cap = LineCap(batch->format);
  std::string sanitized;
  // The lines parsed into views of the batch's own lines are prematched together (their Sets
  // walked side by side, Engine::Prematch of many lines); the candidates come in line order.
  batch->walk.clear();
  batch->walk_at.clear();
  auto prematch_walk = [&]() {
    if (batch->walk.empty()) return;
    engine_.Prematch(batch->format, batch->walk, &batch->prematch, &batch->walk_spans);
    for (size_t k = 0; k < batch->walk_at.size(); ++k) {
      const size_t i = batch->walk_at[k];
      batch->spans[i] = batch->walk_spans[k];
    }
    batch->walk.clear();
    batch->walk_at.clear();
  };
  for (size_t i = 0; i < batch->lines.size(); ++i) {
    bool truncated, sanitize = false;
    absl::string_view line =
        batch->plain ? TrimLine(batch->lines[i], cap, &truncated)
                     : PrepareLine(batch->lines[i], cap, &sanitized, &truncated, &sanitize);
    truncated = truncated || batch->shipped_cut(i);  // as Run takes it (LineBatch::cut)
    ParsedLine& parsed = batch->parsed[i];
    if (!parser.Parse(line, reference, &parsed, rule).ok()) continue;
    parsed.cut = truncated;  // its end is the cap's, not its writer's (ParsedLine::cut)
    if (parsed.time) {
      reference = *parsed.time;
      rule = YearRule::kNearest;
    }
    // Kept when its views are into the batch's own line (not a copy with its hostile bytes
    // replaced).
    batch->parsed_kept[i] = keep && line.data() == batch->lines[i].data();
    if (batch->parsed_kept[i]) {
      batch->lines[i] = line;
      batch->truncated[i] = truncated;
      batch->walk.push_back(&parsed);
      batch->walk_at.push_back(i);
      continue;
    }
    // Its views do not outlive the next line: prematched now, after the lines before it.
    prematch_walk();
    const uint32_t begin = static_cast<uint32_t>(batch->prematch.candidates.size());
    engine_.Prematch(batch->format, parsed, &batch->prematch);
    batch->spans[i] = {begin, static_cast<uint32_t>(batch->prematch.candidates.size())};
  }
  prematch_walk();
}

template <typename Batch>
absl::StatusOr<BatchAck> Pipeline::Run(const Batch& batch, BatchSender sender) {
  if (batch.format() == palisade::v1::LOG_FORMAT_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch ", batch.sequence(), ": format is required"));
  }
  // What the server can mend (a newer client's format, a json_format its config lacks) is a
  // precondition, which a shipper waits out; an invalid argument ends `ship --follow`.
  if (!palisade::v1::LogFormat_IsValid(batch.format())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "batch ", batch.sequence(), ": format ", static_cast<int>(batch.format()),
        " is not one this server knows (a newer client than palisaded?)"));
  }
  if (batch.format() == palisade::v1::LOG_FORMAT_DECISIONS) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch ", batch.sequence(),
        ": format decisions is Palisade's own stream of decisions; it cannot be shipped"));
  }
  // Audit records name the API token a rule revokes: whoever writes one chooses the victim.
  if (batch.format() == palisade::v1::LOG_FORMAT_CLOUDFLARE_AUDIT && !sender.audit_records) {
    return absl::PermissionDeniedError(absl::StrCat(
        "batch ", batch.sequence(),
        ": format cloudflare_audit revokes API tokens; only palisaded's own audit-log poller "
        "and clients with the admin role may send it"));
  }
  const absl::Time started = clock_.TimeNow();
  // The clock's now: for the daemon the batch's; replay's lines move the clock, and it is read
  // again each time they do (below).
  absl::Time now = started;
  // The bounds a line's time is compared with, computed once a batch (replay: once the clock
  // moves): absl::Time arithmetic (a Duration added, a difference taken) was ~40 instructions
  // of a line's own ~200 here. `previous < stale_before` is `now - previous > 30 days` (finite
  // times, exact arithmetic).
  const absl::Time stale_before = now - absl::Hours(24 * 30);
  absl::Time future_after = now + kFutureHorizon;
  const absl::Time too_old = absl::FromUnixSeconds(946'684'800);  // before 2000
  BatchAck ack;
  ack.set_sequence(batch.sequence());
  const std::string source = batch.source().empty() ? "-" : batch.source();
  StreamState stream;
  // Where the stream is kept (streams_), for what the batch leaves in it at the end; `overflow`:
  // the shared state of sources past the cap.
  uint64_t stream_key = 0;
  bool overflow = false;
  {
    absl::MutexLock lock(&streams_mu_);
    StreamState& s = StreamFor(source, batch.stream(), started, &stream_key);
    overflow = &s == &overflow_stream_;
    if (overflow) {
      ++streams_overflowed_;
      streams_overflow_counter_.Increment();
    }
    stream = s;
  }
  const absl::TimeZone zone = ZoneOf(source);
  LineParser parser(batch.format(), zone);
  if (batch.format() == palisade::v1::LOG_FORMAT_JSON) {
    auto mapping = options_.json_formats.find(batch.json_format());
    if (batch.json_format().empty()) {  // the client's omission: nothing to wait for
      return absl::InvalidArgumentError(absl::StrCat(
          "batch ", batch.sequence(), ": format json needs json_format naming one of the "
          "config's json_formats"));
    }
    if (mapping == options_.json_formats.end()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "batch ", batch.sequence(), ": format json needs json_format naming one of the "
          "config's json_formats (\"", batch.json_format().substr(0, 64), "\" is none)"));
    }
    if (absl::Status s = parser.SetJsonFormat(mapping->second); !s.ok()) return s;
  }
  ParsedLine parsed;
  // The previous line's time resolves a missing year (nearest year); the first line of a
  // stream has only the clock.
  absl::Time previous = stream.last_line;
  // When `previous` was read (the daemon: whether the stream is live, see kLiveWithin).
  absl::Time previous_read = stream.last_line_read;
  absl::Time latest = absl::InfinitePast();
  std::vector<Detection> detections;
  std::vector<EngineMatch> routed;  // a line's matches, when they are counted elsewhere
  // Replay decides line by line, in event time; the daemon per batch (one store transaction).
  const bool line_by_line = static_cast<bool>(options_.advance_clock);
  uint32_t detection_count = 0;
  std::vector<const CompiledRule*> detected;
  // Recidive: the decision lines a round of decisions feeds back (see the header), one after
  // another in `fed_text`, as (where each ends there, its event time); built before
  // on_detections, which may move from the detections. Kept across rounds and lines (a string
  // per line was two or three allocations of it).
  std::string fed_text;
  std::vector<std::pair<size_t, absl::Time>> fed;
  ParsedLine fed_parsed;
  // Taken from the pool at the first line fed, given back at the end of the batch.
  std::unique_ptr<FedMemo> fed_memo;
  // Set under rules_mu_ (below): whether a loaded rule reads the decisions format.
  bool feed = false;
  // A round's detections. Kept across rounds and lines with `detections` (swapped), so deciding
  // a line (replay decides line by line) allocates neither vector again.
  std::vector<Detection> fresh;
  // Their updates, kept likewise: ApplyAllInto writes over the decisions in them (no allocation
  // to hear of an extension).
  std::vector<DecisionUpdate> decided;
  // What ApplyAll hands its updates to, when anything reads them: built once per batch, not per
  // round (a std::function of this lambda allocates).
  const std::function<void(const std::vector<DecisionUpdate>&)> on_decided =
      [&](const std::vector<DecisionUpdate>& updates) {
        for (size_t i = 0; feed && i < fresh.size() && i < updates.size(); ++i) {
          if (AppendDecisionLine(fresh[i], updates[i].change, &fed_text)) {
            fed.emplace_back(fed_text.size(), fresh[i].time);
          }
        }
        if (options_.on_detections) options_.on_detections(batch.source(), fresh, updates);
      };
  const std::function<void(const std::vector<DecisionUpdate>&)> no_callback;
  // Decides `detections`, then feeds the decisions made back as LOG_FORMAT_DECISIONS lines,
  // whose own detections are decided in the next round. Decisions of decisions-format rules are
  // never fed, so there are at most two rounds, whatever the packs say.
  auto decide = [&]() {
    rules_mu_.AssertReaderHeld();  // called under rules_lock, below
    while (!detections.empty()) {
      for (const Detection& d : detections) detected.push_back(d.rule);
      detection_count += static_cast<uint32_t>(detections.size());
      fresh.clear();
      fresh.swap(detections);
      if (options_.token_candidates) {
        std::vector<Detection> tokens;
        auto is_token = [](const Detection& d) {
          return d.kind == palisade::v1::TargetKind::TARGET_KIND_TOKEN_FINGERPRINT;
        };
        for (Detection& d : fresh) {
          if (is_token(d)) tokens.push_back(std::move(d));
        }
        if (!tokens.empty()) {
          fresh.erase(std::remove_if(fresh.begin(), fresh.end(), is_token), fresh.end());
          options_.token_candidates(batch.source(), tokens, engine_.rules());
          if (fresh.empty()) continue;
        }
      }
      fed.clear();
      fed_text.clear();
      // Decided while the rules cannot be swapped (a detection points into its RuleSet), and
      // written to the store in one transaction.
      decisions_.ApplyAllInto(fresh, &decided,
                              feed || options_.on_detections ? on_decided : no_callback);
      if (!fed.empty() && fed_memo == nullptr) fed_memo = TakeFedMemo(engine_.rules().get());
      size_t begin = 0;
      for (const auto& [end, when] : fed) {
        FeedLine(absl::string_view(fed_text).substr(begin, end - begin), when, stream.id, *fed_memo,
                 fed_parsed, &detections);
        begin = end;
      }
    }
  };
  std::string sanitized;
  {
    // Batches run concurrently (one per stream); only a rule swap waits for them.
    absl::ReaderMutexLock rules_lock(&rules_mu_);
    feed = engine_.rules()->ForFormat(palisade::v1::LogFormat::LOG_FORMAT_DECISIONS) != nullptr;
    SourceMetrics* sm;
    {
      absl::MutexLock lock(&metrics_mu_);
      sm = &SourceMetricsFor(source, batch.format());
    }
    const RuleSet* rules_in_use = engine_.rules().get();
    const int records = batch.size();
    const bool plain = batch.plain();
    const size_t cap = LineCap(batch.format());
    PrematchedLine prematched;
    for (int record = 0; record < records; ++record) {
      bool truncated = false, sanitize = false;
      // Looked at for hostile bytes once: by Prematch when it ran (another thread), by the reader
      // for the whole batch, else here.
      absl::string_view line =
          batch.prepared(record, &truncated) ? batch.line(record)
          : plain ? TrimLine(batch.line(record), cap, &truncated)
                  : PrepareLine(batch.line(record), cap, &sanitized, &truncated, &sanitize);
      // Cut by the shipper at its own cap: cut here too, whatever this cap (a line the
      // shipper cut to a cap at or below ours would otherwise look whole).
      truncated = truncated || batch.shipped_cut(record);
      if (truncated) ack.set_truncated(ack.truncated() + 1);
      if (sanitize) ack.set_sanitized(ack.sanitized() + 1);
      // In the daemon, a stream silent for a month starts over from now: the nearest year to a
      // line half a year old could be the wrong one, and live lines are recent. (Not in replay,
      // whose clock is the log's own.)
      const bool first = previous == absl::InfinitePast() ||
                         (options_.clamp_future && !line_by_line && previous < stale_before);
      // Parsed already by Prematch (replay on several threads): the same line, so the same
      // result, but for a year read from Prematch's reference. That year is the one the
      // previous line gives when the time is within 180 days of it (a year apart, no other
      // candidate is that near); else, and for a stream's first line, the line is parsed again.
      // So is a time in an hour the zone repeats (after a fall-back): which occurrence it is
      // comes from the reference too, and the two are an hour apart.
      const ParsedLine* pre = batch.preparsed(record);
      absl::Status s;
      if (pre != nullptr && !pre->time_repeated &&
          (!pre->year_inferred ||
           (!first && pre->time.has_value() &&
            absl::AbsDuration(*pre->time - previous) < absl::Hours(24 * 180)))) {
        parsed = *pre;
      } else {
        s = parser.Parse(line, first ? now : previous, &parsed,
                         first ? YearRule::kAtMostADayAhead : YearRule::kNearest);
      }
      if (!s.ok()) {
        // An impossible time in the line (an offset past ±23:59, a 5,000-digit fraction) is a
        // bad time as well as a malformed line.
        if (s.code() == absl::StatusCode::kOutOfRange) ack.set_clamped(ack.clamped() + 1);
        ack.set_malformed(ack.malformed() + 1);
        continue;
      }
      // A rule pinned to the line's end must not take the cap's end for it: a client's field
      // cut right after a forged tail would choose the key (ParsedLine::cut).
      parsed.cut = truncated;
      // The daemon: a time in the hour the zone repeats is not taken ahead of the clock, and is
      // the second pass when a live stream's line can be nothing else (ChooseRepeatedOccurrence).
      if (parsed.time_repeated && !line_by_line && parsed.time.has_value()) {
        // How far ahead of its reading the stream's previous line was (a fast clock), and
        // whether it was read as it was written.
        const absl::Duration ahead = first ? absl::ZeroDuration() : previous - previous_read;
        const bool live = !first && ahead >= -kLiveWithin && ahead <= kMaxSkew;
        const absl::Duration skew =
            live ? std::max(absl::ZeroDuration(), ahead) : absl::ZeroDuration();
        parsed.time = ChooseRepeatedOccurrence(*parsed.time, zone, now, skew, live);
      }
      absl::Time when = parsed.time.value_or(now);
      // A line without a time of its own (RFC 5424's "-") happens at the clock's time: in
      // replay it must not move the clock (first in last year's log, it set the clock to today,
      // and every decision after it was stale on creation).
      bool timed = parsed.time.has_value();
      if (const google::protobuf::Timestamp* event_time = batch.event_time(record)) {
        // The client's Timestamp is checked as the line's is: nanos outside 0..999,999,999 or
        // a year past 9999 is refused, not normalised into some other time.
        absl::StatusOr<absl::Time> t = CheckedProtoTime(*event_time);
        if (!t.ok()) {
          ack.set_clamped(ack.clamped() + 1);
          ack.set_malformed(ack.malformed() + 1);
          continue;
        }
        when = *t;
        timed = true;
      }
      if (!timed) ack.set_untimed(ack.untimed() + 1);
      // Absurd times: from the future (clock skew, forged lines) are clamped to now; from
      // before 2000 are rejected. Either is no reference for the year of the next yearless line
      // (one sender with its clock in 2099 would have set every later line's), nor is a line's
      // own absurd time when the client's event time stands in for it. In replay a line that
      // sets the clock is not clamped: the first, once confirmed, or a far-ahead line another
      // host confirms (the log moved on after a silence; see PipelineOptions::clamp_future).
      bool sets_clock = false;
      // Replay: a first line far ahead of the start, counted at its own time but moving neither
      // the clock nor the year until a second line agrees.
      bool held_first = false;
      if (line_by_line && timed) {
        const absl::string_view host = WriterOf(batch.format(), parsed);
        if (!host.empty() && !log_hosts_many_) {
          if (log_host_.empty()) {
            log_host_ = std::string(host);
          } else {
            log_hosts_many_ = host != log_host_;
          }
        }
        const bool ahead = options_.clamp_future && when > future_after;
        const bool agrees =
            ahead_.pending && absl::AbsDuration(when - ahead_.time) <= kFutureHorizon;
        bool confirmed = false;
        if (ahead && agrees) {
          ++ahead_.run;
          const bool other_writer = !host.empty() && !ahead_.host.empty() && host != ahead_.host;
          // One writer: a log without HOSTNAMEs (its writer is the file's), or one host so far
          // (after the clock started; at the start a first burst of one host is no proof).
          const bool one_writer = host.empty() || (line_clock_started_ && !log_hosts_many_);
          confirmed = other_writer || when - ahead_.time >= kAheadSpan ||
                      (one_writer && ahead_.run >= kAheadRun);
        }
        if (!ahead) {
          sets_clock = !line_clock_started_;
          // A held first line no line agreed with: its time was absurd.
          if (ahead_.pending && !line_clock_started_) ack.set_clamped(ack.clamped() + 1);
          ahead_.pending = false;
        } else if (confirmed) {
          sets_clock = true;
          ahead_.pending = false;
        } else if (!line_clock_started_) {
          // Held: the first line far ahead, and the lines that agree with it until confirmed.
          if (!agrees) {
            if (ahead_.pending) ack.set_clamped(ack.clamped() + 1);
            ahead_ = {true, when, std::string(host), 1};
          }
          held_first = true;
        } else if (!agrees) {
          ahead_ = {true, when, std::string(host), 1};
        }
      }
      if (options_.clamp_future && when > future_after && !sets_clock && !held_first) {
        when = now;
        timed = false;  // replay: it does not move the clock
        ack.set_clamped(ack.clamped() + 1);
      } else if (when < too_old) {
        ack.set_clamped(ack.clamped() + 1);
        ack.set_malformed(ack.malformed() + 1);
        continue;
      } else if (parsed.time && *parsed.time >= too_old &&
                 (sets_clock || !(options_.clamp_future && *parsed.time > future_after))) {
        previous = *parsed.time;
        previous_read = now;
      }
      if (held_first) timed = false;  // counted at its own time, but moves nothing
      if (line_by_line && timed && when > latest) {
        options_.advance_clock(when);
        line_clock_started_ = true;
        now = clock_.TimeNow();
        future_after = now + kFutureHorizon;
        // The first line at or past the next sweep is the latest so far (an earlier line past
        // it would have swept), so `when` is the clock.
        if (when >= next_line_sweep_) {
          engine_.ExpireSpread(when);
          next_line_sweep_ = when + options_.sweep_in_line_time;
        }
      }
      if (timed || !line_by_line) latest = std::max(latest, when);
      const PrematchedLine* candidates =
          batch.prematched(record, rules_in_use, &prematched) ? &prematched : nullptr;
      LineResult r;
      if (options_.route_match) {
        routed.clear();
        r = engine_.MatchLine(batch.format(), parsed, line, when, &routed, stream.id, candidates);
        for (const EngineMatch& m : routed) {
          if (options_.route_match(m).code() == absl::StatusCode::kFailedPrecondition) {
            (void)engine_.CountMatch(m, &detections);  // counted on this node
          }
        }
      } else {
        r = engine_.Process(batch.format(), parsed, line, when, &detections, stream.id,
                            candidates);
      }
      // (Most lines detect nothing: no call for them, decide() would find nothing to do.)
      if (line_by_line && !detections.empty()) decide();
      ack.set_accepted(ack.accepted() + 1);
      if (r.matched) ack.set_matched(ack.matched() + 1);
      ack.set_ignored(ack.ignored() + r.ignored);
    }
    malformed_.fetch_add(ack.malformed(), std::memory_order_relaxed);
    sm->received->Increment(records);
    if (ack.malformed() > 0) sm->malformed->Increment(ack.malformed());
    if (ack.truncated() > 0) sm->truncated->Increment(ack.truncated());
    if (ack.sanitized() > 0) sm->sanitized->Increment(ack.sanitized());
    if (ack.clamped() > 0) sm->clamped->Increment(ack.clamped());
    if (ack.untimed() > 0) sm->untimed->Increment(ack.untimed());
    // The daemon decides the batch here (replay has, line by line); decision lines fed back
    // count in the metrics below.
    decide();
    if (fed_memo != nullptr) ReturnFedMemo(std::move(fed_memo));
    PublishRuleMetrics(detected);
    ack.set_detections(detection_count);
  }
  {
    absl::MutexLock lock(&streams_mu_);
    // Not freed meanwhile: a batch takes its stream's place for a day and more (`used`).
    auto it = streams_.find(stream_key);
    StreamState* s = overflow ? &overflow_stream_ : it != streams_.end() ? &it->second : nullptr;
    if (s != nullptr && previous != absl::InfinitePast()) {
      s->last_line = previous;
      s->last_line_read = previous_read;
    }
    if (s != nullptr) s->watermark = std::max(s->watermark, latest);
  }
  batch_latency_.Observe(absl::ToDoubleSeconds(clock_.TimeNow() - started));
  return ack;
}

Pipeline::StreamState& Pipeline::StreamFor(absl::string_view source, absl::string_view sender,
                                           absl::Time now, uint64_t* key) {
  if (!sender.empty()) {
    *key = absl::Hash<std::pair<absl::string_view, absl::string_view>>()({source, sender});
    auto it = streams_.find(*key);
    if (it != streams_.end()) {
      it->second.used = now;
      return it->second;
    }
    // Past the senders' share, or the cap: the source's stream, as before senders had theirs.
    if (sender_streams_ >= options_.max_sender_streams ||
        streams_.size() >= options_.max_streams) {
      sender_streams_folded_counter_->Increment();
      return StreamFor(source, absl::string_view(), now, key);
    }
  } else {
    *key = absl::Hash<absl::string_view>()(source);
    auto it = streams_.find(*key);
    if (it != streams_.end()) {
      it->second.used = now;
      return it->second;
    }
    if (streams_.size() >= options_.max_streams) return overflow_stream_;
  }
  StreamState& s = streams_[*key];
  if (!free_stream_ids_.empty()) {
    s.id = free_stream_ids_.back();
    free_stream_ids_.pop_back();
  } else {
    s.id = next_stream_id_++;
  }
  s.sender = !sender.empty();
  if (s.sender) ++sender_streams_;
  s.used = now;
  return s;
}

void Pipeline::PublishRuleMetrics(const std::vector<const CompiledRule*>& detected) {
  absl::MutexLock lock(&metrics_mu_);
  // Per-rule match counters from the engine's running totals.
  const std::vector<uint64_t> totals = engine_.matches_per_rule();
  for (size_t i = 0; i < rule_metrics_.size() && i < totals.size(); ++i) {
    RuleMetrics& m = rule_metrics_[i];
    if (totals[i] > m.published) {
      m.matches->Increment(static_cast<double>(totals[i] - m.published));
      m.published = totals[i];
    }
  }
  for (const CompiledRule* rule : detected) {
    auto it = rule_index_.find(rule);
    if (it != rule_index_.end()) rule_metrics_[it->second].detections->Increment();
  }
  PublishEngineGaugesLocked();
}

void Pipeline::FeedDecisions(absl::string_view source, const std::vector<Detection>& made,
                             const std::vector<DecisionUpdate>& updates) {
  absl::ReaderMutexLock rules_lock(&rules_mu_);
  if (engine_.rules()->ForFormat(palisade::v1::LogFormat::LOG_FORMAT_DECISIONS) == nullptr) return;
  uint32_t stream_id = 0;
  {
    absl::MutexLock lock(&streams_mu_);
    uint64_t key;
    stream_id = StreamFor(source, absl::string_view(), clock_.TimeNow(), &key).id;
  }
  std::vector<Detection> detections;
  ParsedLine parsed;
  std::unique_ptr<FedMemo> memo = TakeFedMemo(engine_.rules().get());
  std::string line;
  for (size_t i = 0; i < made.size() && i < updates.size(); ++i) {
    line.clear();
    if (!AppendDecisionLine(made[i], updates[i].change, &line)) continue;
    FeedLine(line, made[i].time, stream_id, *memo, parsed, &detections);
  }
  ReturnFedMemo(std::move(memo));
  std::vector<const CompiledRule*> detected;
  for (const Detection& d : detections) detected.push_back(d.rule);
  if (!detections.empty()) {
    // Decisions of decisions-format rules are not fed again: one round.
    const std::string from(source);
    decisions_.ApplyAll(detections, [&](const std::vector<DecisionUpdate>& decided) {
      if (options_.on_detections) options_.on_detections(from, detections, decided);
    });
  }
  PublishRuleMetrics(detected);
}

bool Pipeline::AppendDecisionLine(const Detection& d, DecisionChange change, std::string* text) {
  // A block that starts anew, as fail2ban's recidive counts its "Ban" lines: a renewal of one in
  // force is the same ban (ten failures in two minutes renewed one twice: a week's block).
  if (change != DecisionChange::kCreated) return false;
  for (int f : d.rule->proto.formats()) {
    if (f == palisade::v1::LogFormat::LOG_FORMAT_DECISIONS) return false;
  }
  // The key as printable ASCII without spaces: a path key is the client's text, and must not
  // add a field ("/x kind=ip key=192.0.2.1") or a line: every other byte, and '%', as %XX.
  const absl::string_view key = d.key;
  size_t escaped = 0;
  if (!AllPlainKeyBytes(key)) {
    for (unsigned char c : key) escaped += PlainKeyByte(c) ? 0 : 1;
  }
  const absl::string_view kind = KindLabel(d.kind);
  const absl::string_view action = CachedActionLabel(d.rule->proto.decision().action());
  constexpr absl::string_view kRule = "decision rule=", kKind = " kind=", kKey = " key=",
                              kAction = " action=";
  // One resize of a string the caller keeps (no allocation once it has grown), then the pieces
  // copied in: appending them one by one cost ~45 instructions each.
  const size_t at = text->size();
  text->resize(at + kRule.size() + d.rule_id.size() + kKind.size() + kind.size() + kKey.size() +
               key.size() + 2 * escaped + kAction.size() + action.size());
  char* out = &(*text)[at];
  auto put = [&out](absl::string_view piece) {
    std::memcpy(out, piece.data(), piece.size());
    out += piece.size();
  };
  put(kRule);
  put(d.rule_id);
  put(kKind);
  put(kind);
  put(kKey);
  if (escaped == 0) {
    put(key);
  } else {
    static constexpr char kHex[] = "0123456789ABCDEF";
    for (unsigned char c : key) {
      if (PlainKeyByte(c)) {
        *out++ = static_cast<char>(c);
      } else {
        *out++ = '%';
        *out++ = kHex[c >> 4];
        *out++ = kHex[c & 0xf];
      }
    }
  }
  put(kAction);
  put(action);
  return true;
}

void Pipeline::FeedLine(absl::string_view line, absl::Time when, uint32_t stream, FedMemo& memo,
                        ParsedLine& parsed, std::vector<Detection>* out) {
  constexpr palisade::v1::LogFormat kDecisions = palisade::v1::LogFormat::LOG_FORMAT_DECISIONS;
  parsed.message = line;
  if (line.size() > FedMemo::kFedMemoLineBytes) {
    fed_memo_misses_.fetch_add(1, std::memory_order_relaxed);
    engine_.Process(kDecisions, parsed, line, when, out, stream);
    return;
  }
  auto it = memo.spans.find(line);
  if (it == memo.spans.end()) {
    if (memo.spans.size() >= FedMemo::kFedMemoLines) memo.Clear();
    const auto begin = static_cast<uint32_t>(memo.buffer.candidates.size());
    engine_.Prematch(kDecisions, parsed, &memo.buffer);
    it = memo.spans
             .emplace(std::string(line),
                      std::make_pair(begin, static_cast<uint32_t>(memo.buffer.candidates.size())))
             .first;
    fed_memo_misses_.fetch_add(1, std::memory_order_relaxed);
  } else {
    fed_memo_hits_.fetch_add(1, std::memory_order_relaxed);
  }
  PrematchedLine prematched;
  prematched.candidates = absl::MakeConstSpan(memo.buffer.candidates.data() + it->second.first,
                                              it->second.second - it->second.first);
  prematched.buffer = &memo.buffer;
  engine_.Process(kDecisions, parsed, line, when, out, stream, &prematched);
}

std::unique_ptr<Pipeline::FedMemo> Pipeline::TakeFedMemo(const RuleSet* rules) {
  std::unique_ptr<FedMemo> memo;
  {
    absl::MutexLock lock(&fed_memos_mu_);
    if (!fed_memos_.empty()) {
      memo = std::move(fed_memos_.back());
      fed_memos_.pop_back();
    }
  }
  if (memo == nullptr) memo = std::make_unique<FedMemo>();
  if (memo->rules != rules) {
    memo->Clear();
    memo->rules = rules;
  }
  return memo;
}

void Pipeline::ReturnFedMemo(std::unique_ptr<FedMemo> memo) {
  {
    absl::MutexLock lock(&fed_memos_mu_);
    if (fed_memos_.size() < FedMemo::kIdleMemos) {
      fed_memos_.push_back(std::move(memo));
      return;
    }
  }
  memo.reset();  // freed outside the lock
}

size_t Pipeline::idle_fed_memos() const {
  absl::MutexLock lock(&fed_memos_mu_);
  return fed_memos_.size();
}

size_t Pipeline::streams() const {
  absl::MutexLock lock(&streams_mu_);
  return streams_.size();
}

uint64_t Pipeline::streams_overflowed() const {
  absl::MutexLock lock(&streams_mu_);
  return streams_overflowed_;
}

void Pipeline::PublishEngineGaugesLocked() {
  windows_gauge_.Set(static_cast<double>(engine_.live_windows()));
  const EngineStats stats = engine_.stats();
  memory_gauge_->Set(static_cast<double>(stats.memory_bytes));
  CatchUp(evicted_counter_, stats.evicted_windows, evicted_published_);
  CatchUp(*memory_evicted_counter_, stats.memory_evicted_windows, memory_evicted_published_);
  CatchUp(*evidence_truncated_counter_, stats.evidence_truncated, truncated_published_);
  sessions_gauge_->Set(static_cast<double>(stats.sessions.live));
  session_bytes_gauge_->Set(static_cast<double>(stats.sessions.bytes));
  CatchUp(*sessions_evicted_counter_, stats.sessions.evicted, sessions_evicted_published_);
  CatchUp(*session_misses_counter_, stats.session_misses, session_misses_published_);
}

void Pipeline::SetRules(std::shared_ptr<const RuleSet> rules,
                        std::optional<CidrSet> allowlist) {
  std::optional<CidrSet> allowed = allowlist;  // for the decisions, once the engine has it
  {
    absl::MutexLock rules_lock(&rules_mu_);
    if (allowlist.has_value()) engine_.SetAllowlist(*std::move(allowlist));
    engine_.SetRules(std::move(rules));
    StoreStreamIdleBound();
    {
      // No batch holds a memo now (they do under rules_mu_): the idle ones were found with the
      // old rules, whose address a new RuleSet could take.
      absl::MutexLock lock(&fed_memos_mu_);
      fed_memos_.clear();
    }
    absl::MutexLock lock(&metrics_mu_);
    RebuildRuleMetricsLocked();
  }
  // The decisions already made on what the allowlist now holds end (the engine's allowlist
  // stops new detections only). Outside rules_mu_: the listeners run meanwhile, and no batch
  // decided after the swap detects on those addresses.
  if (allowed.has_value()) decisions_.WithdrawCovered(*allowed);
}

std::shared_ptr<const RuleSet> Pipeline::rules() const {
  absl::ReaderMutexLock lock(&rules_mu_);
  return engine_.rules();
}

void Pipeline::StoreStreamIdleBound() {
  absl::Duration longest = options_.engine.sessions.ttl;
  for (const auto& rule : engine_.rules()->rules()) longest = std::max(longest, rule->window);
  stream_idle_bound_ns_.store(
      absl::ToInt64Nanoseconds(absl::Hours(24) + kFutureHorizon + longest),
      std::memory_order_relaxed);
}

absl::Duration Pipeline::stream_idle_bound() const {
  // No lock (see stream_idle_bound_ns_): a reload's new bound is seen by the next read.
  return absl::Nanoseconds(stream_idle_bound_ns_.load(std::memory_order_relaxed));
}

void Pipeline::ExpireWindows() {
  const absl::Time now = clock_.TimeNow();
  std::vector<absl::Time> stream_now;
  absl::ReaderMutexLock rules_lock(&rules_mu_);
  // A stream none of whose windows or sessions can be left: a line is counted at most
  // kFutureHorizon past the batch's clock, its stream's now (below) reaches at least a day
  // behind the clock, and the longest window (or session ttl) after that it has aged out.
  // Its place and id go to new streams (a freed id's windows, if any, would age by the new
  // stream's time: the safe side of never).
  const absl::Time idle_before = now - stream_idle_bound();
  {
    absl::MutexLock lock(&streams_mu_);
    for (auto it = streams_.begin(); it != streams_.end();) {
      if (it->second.used >= idle_before) {
        ++it;
        continue;
      }
      free_stream_ids_.push_back(it->second.id);
      if (it->second.sender) --sender_streams_;
      streams_.erase(it++);
    }
    stream_now.assign(next_stream_id_, now);
    for (const auto& [key, s] : streams_) {
      stream_now[s.id] = std::clamp(s.watermark, now - absl::Hours(24), now);
    }
  }
  engine_.ExpireByStream(stream_now, now);
  absl::MutexLock lock(&metrics_mu_);
  PublishEngineGaugesLocked();
}

palisade::v1::EngineSnapshot Pipeline::SnapshotWindows() const {
  absl::ReaderMutexLock lock(&rules_mu_);
  return engine_.Snapshot();
}

size_t Pipeline::RestoreWindows(const palisade::v1::EngineSnapshot& snapshot) {
  absl::ReaderMutexLock rules_lock(&rules_mu_);
  const size_t skipped = engine_.Restore(snapshot, clock_.TimeNow());
  absl::MutexLock lock(&metrics_mu_);
  PublishEngineGaugesLocked();
  return skipped;
}

std::vector<uint64_t> Pipeline::matches_per_rule() const {
  absl::ReaderMutexLock lock(&rules_mu_);
  return engine_.matches_per_rule();
}

EngineStats Pipeline::engine_stats() const { return engine_.stats(); }

size_t Pipeline::live_windows() const { return engine_.live_windows(); }

uint64_t Pipeline::lines_malformed() const { return malformed_.load(); }

palisade::v1::TestRulesResponse Pipeline::TestRules(std::shared_ptr<const RuleSet> rules,
                                                    LogFormat format,
                                                    const std::vector<std::string>& lines,
                                                    absl::Time reference,
                                                    absl::TimeZone time_zone,
                                                    size_t max_answer_bytes,
                                                    uint32_t max_line_bytes,
                                                    uint32_t max_record_bytes,
                                                    const std::vector<bool>& cut) {
  palisade::v1::TestRulesResponse out;
  // What a listed match or key adds to the answer, about (its bytes and the fields' framing).
  size_t answer_bytes = 0;
  auto fits = [&](size_t bytes) {
    if (out.truncated() || answer_bytes + bytes > max_answer_bytes) {
      out.set_truncated(true);
      return false;
    }
    answer_bytes += bytes;
    return true;
  };
  Engine engine(rules, EngineOptions());
  LineParser parser(format, time_zone);
  ParsedLine parsed;
  std::map<std::string, palisade::v1::RuleSummary> summary;
  for (const auto& rule : rules->rules()) summary[rule->id()].set_rule_id(rule->id());
  // As in a batch: the first yearless time against `reference` (now), the next ones against
  // the previous line.
  YearRule rule = YearRule::kAtMostADayAhead;
  const size_t cap = LineCapFor(format, max_line_bytes, max_record_bytes);
  std::string sanitized;
  for (size_t i = 0; i < lines.size(); ++i) {
    out.set_lines(out.lines() + 1);
    // As Run prepares a batch's line: a line judged whole here that the daemon cuts would
    // report the key of a forged tail the daemon refuses.
    bool truncated = false, sanitize = false;
    const absl::string_view line = PrepareLine(lines[i], cap, &sanitized, &truncated, &sanitize);
    if (!parser.Parse(line, reference, &parsed, rule).ok()) {
      out.set_malformed(out.malformed() + 1);
      continue;
    }
    parsed.cut = truncated || (i < cut.size() && cut[i]);
    if (parsed.time) {
      reference = *parsed.time;
      rule = YearRule::kNearest;
    }
    bool any = false;
    // Sessions follow the lines' own times (a line without one: the previous line's).
    engine.MatchOnly(
        format, parsed,
        [&](const CompiledRule& rule, absl::string_view key) {
      any = true;
      if (fits(rule.id().size() + key.size() + 32)) {
        palisade::v1::LineMatch* m = out.add_matches();
        m->set_line_number(static_cast<uint32_t>(i + 1));
        m->set_rule_id(rule.id());
        m->set_key(std::string(key));
        if (parsed.time) *m->mutable_event_time() = ToProtoTime(*parsed.time);
      }
      palisade::v1::RuleSummary& s = summary[rule.id()];
      s.set_matches(s.matches() + 1);
      if (s.keys_size() < 20 &&
          std::find(s.keys().begin(), s.keys().end(), key) == s.keys().end() &&
          fits(key.size() + 8)) {
        s.add_keys(std::string(key));
      }
        },
        parsed.time.value_or(reference));
    if (any) out.set_matched_lines(out.matched_lines() + 1);
  }
  for (auto& [id, s] : summary) *out.add_rules() = std::move(s);
  return out;
}

}  // namespace palisade
