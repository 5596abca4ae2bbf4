// The detection engine: match → window → detection, for one stream of parsed lines.
//
// Process() runs the RuleSet's single RE2::Set pass over a line, runs the capturing regex of
// each candidate rule, normalises the key (an "ip" must parse as an address: nothing else can
// become a target), drops allowlisted keys, and counts the match in the (rule, key) window in
// event time. When a window reaches its rule's threshold it raises a Detection carrying the
// evidence lines, and the window starts over.
//
// Memory is bounded: windows idle for longer than their rule's window are dropped by Expire(),
// and past `max_keys_per_rule` the least recently active windows of a rule are evicted (and
// counted). Once warmed up, a line that matches nothing allocates nothing.
//
// The engine does no I/O and reads no clock: time comes with each line.
// Thread-safety: not thread-safe; callers own one Engine per shard or guard it.
#ifndef PALISADE_SERVICES_ENGINE_ENGINE_H_
#define PALISADE_SERVICES_ENGINE_ENGINE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "palisade/v1/state.pb.h"
#include "services/common/ip.h"
#include "services/engine/rule_set.h"
#include "services/formats/line_parser.h"

namespace palisade {

struct EngineOptions {
  uint32_t max_keys_per_rule = 1'000'000;
  uint32_t max_evidence = 5;
  // Ranges whose keys never count (loopback is added by the engine itself).
  CidrSet allowlist;
};

// A threshold crossed.
struct Detection {
  const CompiledRule* rule = nullptr;  // valid while the RuleSet it came from is alive
  std::string rule_id;
  palisade::v1::TargetKind kind = palisade::v1::TargetKind::TARGET_KIND_IP;
  std::string key;                    // canonical: "203.0.113.7", "2001:db8::1", or the raw path
  absl::Time time;                    // event time of the line that crossed the threshold
  std::vector<std::string> evidence;  // oldest first, at most max_evidence
  // TARGET_KIND_TOKEN_FINGERPRINT only: the token itself, which the revocation needs. It lives
  // in memory only: never in a decision, a log line, a metric or evidence (which is redacted).
  std::string secret;
};

// What one line did; the server turns these into acks and metrics.
struct LineResult {
  bool matched = false;       // at least one rule counted it
  uint32_t matches = 0;       // rules that counted it
  uint32_t ignored = 0;       // rules that matched an allowlisted key or an ignore pattern
  uint32_t invalid_keys = 0;  // rules whose "ip" capture was not an address
};

struct EngineStats {
  uint64_t lines = 0;
  uint64_t matched_lines = 0;
  uint64_t detections = 0;
  uint64_t evicted_windows = 0;
  uint64_t expired_windows = 0;
  uint64_t invalid_keys = 0;
  uint64_t ignored = 0;
};

class Engine {
 public:
  Engine(std::shared_ptr<const RuleSet> rules, EngineOptions options);

  // Swaps in a new RuleSet. Windows of rules that keep their id (and threshold) are kept;
  // the others are dropped.
  void SetRules(std::shared_ptr<const RuleSet> rules);
  const std::shared_ptr<const RuleSet>& rules() const { return rules_; }

  // Matches one parsed line of `format`, counts it, and appends any detections to `out`.
  // `raw` is the whole line (kept as evidence); `time` its event time.
  LineResult Process(palisade::v1::LogFormat format, const ParsedLine& line, absl::string_view raw,
                     absl::Time time, std::vector<Detection>* out);

  // Only the matching step: calls `fn(rule, key)` for each rule whose pattern matches, with
  // the normalised key. Used by Admin.TestRules and `palisadectl rules test`.
  template <typename Fn>
  void MatchOnly(palisade::v1::LogFormat format, const ParsedLine& line, Fn fn);

  // Drops windows whose last event is older than their rule's window before `now`.
  void Expire(absl::Time now);

  // The live windows (match times only), and putting them back after a restart: windows of
  // rules that no longer exist are skipped.
  palisade::v1::EngineSnapshot Snapshot() const;
  void Restore(const palisade::v1::EngineSnapshot& snapshot);

  const EngineStats& stats() const { return stats_; }
  // Live windows over all rules.
  size_t live_windows() const;
  // Per rule index (same order as rules()->rules()): matches counted so far.
  const std::vector<uint64_t>& matches_per_rule() const { return matches_per_rule_; }

 private:
  struct Window {
    absl::InlinedVector<int64_t, 4> times;  // unix ms, of the matches inside the window
    std::vector<std::string> evidence;      // ring of the last max_evidence lines
    uint32_t evidence_next = 0;
    int64_t last = 0;
  };
  using WindowMap = absl::flat_hash_map<std::string, Window>;

  // Runs the candidate rules' captures; calls fn(rule_index, key) for each match.
  template <typename Fn>
  void Candidates(palisade::v1::LogFormat format, const ParsedLine& line, Fn fn);

  // The rule's conditions on the other captures of the last match (in groups_).
  bool ConditionsHold(const CompiledRule& rule, int pattern_index) const;
  // Normalises a captured key into key_buf_; returns false (and counts) when invalid.
  bool NormaliseKey(const CompiledRule& rule, absl::string_view captured, absl::string_view* key,
                    bool* allowlisted);
  void Count(int rule_index, absl::string_view key, absl::string_view raw, absl::Time time,
             absl::string_view secret, std::vector<Detection>* out);
  void Evict(WindowMap& map);

  std::shared_ptr<const RuleSet> rules_;
  EngineOptions options_;
  std::vector<WindowMap> windows_;  // per rule index
  std::vector<uint64_t> matches_per_rule_;
  EngineStats stats_;

  // Scratch reused across lines so the hot path does not allocate.
  std::vector<int> set_hits_;
  std::vector<re2::StringPiece> groups_;
  char key_buf_[IpAddress::kMaxTextLength];
  std::string token_key_;
};

// --- implementation of the templates ---------------------------------------------------------

// Debian's absl::string_view is Abseil's own class, not std::string_view, so RE2 needs a Piece.
inline re2::StringPiece Piece(absl::string_view s) { return re2::StringPiece(s.data(), s.size()); }

template <typename Fn>
void Engine::Candidates(palisade::v1::LogFormat format, const ParsedLine& line, Fn fn) {
  const RuleSet::FormatIndex* index = rules_->ForFormat(format);
  if (index == nullptr) return;
  // RE2::Set::Match allocates its match set when asked for indices, so ask "any?" first: most
  // lines of a normal log match nothing and then cost one DFA pass and no allocation.
  if (!index->set->Match(Piece(line.message), nullptr)) return;
  if (!index->set->Match(Piece(line.message), &set_hits_)) return;
  if (set_hits_.size() > 1) std::sort(set_hits_.begin(), set_hits_.end());
  int last_rule = -1;
  for (int hit : set_hits_) {
    const auto [rule_index, pattern_index] = index->entries[hit];
    if (rule_index == last_rule) continue;  // one match per rule per line
    const CompiledRule& rule = *rules_->rules()[rule_index];
    if (!rule.AppliesToProgram(line.program)) continue;
    const RE2& re = *rule.patterns[pattern_index];
    const int group = rule.key_group[pattern_index];
    const int n = rule.submatches[pattern_index];
    if (groups_.size() < static_cast<size_t>(n)) groups_.resize(n);
    if (!re.Match(Piece(line.message), 0, line.message.size(), RE2::UNANCHORED, groups_.data(),
                  n)) {
      continue;
    }
    if (!ConditionsHold(rule, pattern_index)) continue;
    last_rule = rule_index;
    fn(rule_index, absl::string_view(groups_[group].data(), groups_[group].size()));
  }
}

template <typename Fn>
void Engine::MatchOnly(palisade::v1::LogFormat format, const ParsedLine& line, Fn fn) {
  Candidates(format, line, [&](int rule_index, absl::string_view captured) {
    const CompiledRule& rule = *rules_->rules()[rule_index];
    for (const auto& ignore : rule.ignores) {
      if (RE2::PartialMatch(Piece(line.message), *ignore)) return;
    }
    absl::string_view key;
    bool allowlisted = false;
    if (!NormaliseKey(rule, captured, &key, &allowlisted)) return;
    fn(rule, key);
  });
}

}  // namespace palisade

#endif  // PALISADE_SERVICES_ENGINE_ENGINE_H_
