#include "services/engine/rule_set.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bitset>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define PALISADE_GATE_AVX2 1
#endif

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/time_util.h"
#include "services/common/parallel.h"
#include "services/engine/regex_tree.h"
#include "services/formats/json_parser.h"
#include "services/formats/line_parser.h"
#include "services/formats/percent_escapes.h"

namespace palisade {

// A pack's patterns compiled and parsed once each for the checks LoadRulePackFile runs
// (CheckKeyAnchoring, CheckExamplesMatch): a pattern used to be compiled by RE2 in each, and
// parsed once per key it was analysed for. Same options, same pattern: the same answers. The
// compiled regexes and the trees then go with the pack to RuleSet::Compile (LoadedPack::checked).
// Thread-safety: Regex and Tree build lazily (one load uses them); Compiled and ParsedTree only
// read, from any thread, once the load is over.
class PackPatterns {
 public:
  // `pattern` compiled with PalisadeRe2Options() (ok() or not).
  const RE2& Regex(const std::string& pattern) {
    std::shared_ptr<const RE2>& re = regexes_[pattern];
    if (re == nullptr) re = std::make_shared<const RE2>(pattern, PalisadeRe2Options());
    return *re;
  }
  // The regex Regex compiled for `pattern`, or null.
  std::shared_ptr<const RE2> Compiled(const std::string& pattern) const {
    auto it = regexes_.find(pattern);
    return it != regexes_.end() ? it->second : nullptr;
  }
  // ParseRegex's tree of `pattern`, or why it has none.
  const absl::StatusOr<retree::ReNode>& Tree(const std::string& pattern) {
    std::unique_ptr<absl::StatusOr<retree::ReNode>>& tree = trees_[pattern];
    if (tree == nullptr) {
      tree = std::make_unique<absl::StatusOr<retree::ReNode>>(retree::ParseRegex(pattern));
    }
    return *tree;
  }
  // The tree Tree parsed for `pattern`, or null.
  const absl::StatusOr<retree::ReNode>* ParsedTree(const std::string& pattern) const {
    auto it = trees_.find(pattern);
    return it != trees_.end() ? it->second.get() : nullptr;
  }

 private:
  absl::flat_hash_map<std::string, std::shared_ptr<const RE2>> regexes_;
  absl::flat_hash_map<std::string, std::unique_ptr<absl::StatusOr<retree::ReNode>>> trees_;
};

namespace {

using palisade::v1::LogFormat;
using palisade::v1::Rule;
using palisade::v1::TargetKind;
using retree::All;
using retree::CharSet;
using retree::Digits;
using retree::Fold;
using retree::ParseRegex;
using retree::Range;
using retree::ReNode;
using retree::Spaces;
using retree::Word;

class CollectingErrors : public google::protobuf::io::ErrorCollector {
 public:
  explicit CollectingErrors(absl::string_view file) : file_(file) {}
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (first_.empty()) first_ = absl::StrCat(file_, ":", line + 1, ":", column + 1, ": ", message);
  }
  void AddWarning(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
  const std::string& first() const { return first_; }

 private:
  std::string file_;
  std::string first_;
};

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

bool ValidId(absl::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  }
  return true;
}

std::string BaseName(absl::string_view path) {
  size_t slash = path.rfind('/');
  absl::string_view base = slash == absl::string_view::npos ? path : path.substr(slash + 1);
  size_t dot = base.find('.');
  return std::string(dot == absl::string_view::npos ? base : base.substr(0, dot));
}

absl::Status RuleError(const LoadedPack& pack, absl::string_view rule_id, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(pack.file, ": rule \"", rule_id, "\": ", why));
}

// From one parse of a pattern of `out` (defined with the parser below): appends its
// CompiledRule::leading_key_* and key_split entries and, with `literals`, its required
// literals (RequiredLiterals; empty when it has none).
void AddPatternAnalyses(const std::string& pattern, bool has_key, const PackPatterns* checked,
                        CompiledRule* out, std::vector<std::vector<std::string>>* literals);
// Appends the CompiledRule::ignore_reads_end and ignore_anchored_end of ignore pattern `pattern`.
void AddIgnoreAnalyses(const std::string& pattern, const PackPatterns* checked, CompiledRule* out);

// `literals`, when given, receives each pattern's required literals (RequiredLiterals), from
// the parse tree the leading key and the key split are read from: each pattern is parsed once.
absl::StatusOr<std::unique_ptr<CompiledRule>> CompileRule(
    const LoadedPack& pack, const Rule& rule, const CidrSets& sets,
    std::vector<std::vector<std::string>>* literals) {
  auto out = std::make_unique<CompiledRule>();
  out->proto = rule;
  out->pack = pack.pack.name();
  if (out->proto.key().empty()) out->proto.set_key("ip");
  if (out->proto.key_kind() == TargetKind::TARGET_KIND_UNSPECIFIED) {
    out->proto.set_key_kind(TargetKind::TARGET_KIND_IP);
  }
  const TargetKind kind = out->proto.key_kind();
  if (kind != TargetKind::TARGET_KIND_IP && kind != TargetKind::TARGET_KIND_PATH &&
      kind != TargetKind::TARGET_KIND_TOKEN_FINGERPRINT &&
      kind != TargetKind::TARGET_KIND_TOKEN_ID) {
    return RuleError(pack, rule.id(),
                     "key_kind must be TARGET_KIND_IP, TARGET_KIND_PATH, "
                     "TARGET_KIND_TOKEN_FINGERPRINT or TARGET_KIND_TOKEN_ID");
  }
  // The actuator follows from the key unless the rule names one; the pair must make sense.
  using palisade::v1::Actuator;
  auto* decision = out->proto.mutable_decision();
  if (decision->actuator() == Actuator::ACTUATOR_UNSPECIFIED) {
    decision->set_actuator(kind == TargetKind::TARGET_KIND_IP ? Actuator::ACTUATOR_ACCESS_RULE
                           : kind == TargetKind::TARGET_KIND_PATH
                               ? Actuator::ACTUATOR_RATE_LIMIT
                               : Actuator::ACTUATOR_TOKEN_REVOCATION);
  }
  const Actuator actuator = decision->actuator();
  const bool fits =
      actuator == Actuator::ACTUATOR_NONE ||
      ((actuator == Actuator::ACTUATOR_ACCESS_RULE || actuator == Actuator::ACTUATOR_IP_LIST) &&
       kind == TargetKind::TARGET_KIND_IP) ||
      (actuator == Actuator::ACTUATOR_RATE_LIMIT && kind == TargetKind::TARGET_KIND_PATH) ||
      (actuator == Actuator::ACTUATOR_TOKEN_REVOCATION &&
       (kind == TargetKind::TARGET_KIND_TOKEN_FINGERPRINT ||
        kind == TargetKind::TARGET_KIND_TOKEN_ID));
  if (!fits) {
    return RuleError(
        pack, rule.id(),
        absl::StrCat("decision.actuator ", palisade::v1::Actuator_Name(actuator),
                     " cannot act on a ", palisade::v1::TargetKind_Name(kind), " key"));
  }
  if (rule.formats().empty()) return RuleError(pack, rule.id(), "no formats");
  for (int f : rule.formats()) {
    if (f == LogFormat::LOG_FORMAT_UNSPECIFIED) {
      return RuleError(pack, rule.id(), "format LOG_FORMAT_UNSPECIFIED is not a format");
    }
    // A token id revokes whatever token it names: only the audit records' own path (palisaded's
    // poller, an admin's Ship) may name it, never a line that a shipper or a client wrote.
    if (kind == TargetKind::TARGET_KIND_TOKEN_ID && f != LogFormat::LOG_FORMAT_CLOUDFLARE_AUDIT) {
      return RuleError(
          pack, rule.id(),
          absl::StrCat("a TARGET_KIND_TOKEN_ID rule revokes the token it names, so it reads "
                       "LOG_FORMAT_CLOUDFLARE_AUDIT only (the audit records palisaded reads "
                       "itself), not ",
                       palisade::v1::LogFormat_Name(static_cast<LogFormat>(f))));
    }
  }
  if (rule.patterns().empty()) return RuleError(pack, rule.id(), "no patterns");
  // Rule.field: the patterns read one field of a JSON record, which only JSON formats have.
  if (!rule.field().empty()) {
    for (int f : rule.formats()) {
      if (!IsJsonFormat(static_cast<LogFormat>(f))) {
        return RuleError(pack, rule.id(),
                         absl::StrCat("field \"", rule.field(), "\" is for JSON lines formats; ",
                                      palisade::v1::LogFormat_Name(f), " has no fields"));
      }
    }
    if (rule.has_session()) {
      return RuleError(pack, rule.id(), "a field rule cannot have a session");
    }
  }
  if (rule.has_session()) {
    const palisade::v1::Session& session = rule.session();
    out->has_session = true;
    out->session_by_pid = session.by().empty() || session.by() == "pid";
    if (kind == TargetKind::TARGET_KIND_TOKEN_FINGERPRINT) {
      return RuleError(pack, rule.id(), "a token rule cannot have a session");
    }
    if (session.note_only() && session.after_failure()) {
      return RuleError(pack, rule.id(),
                       "session.note_only and session.after_failure exclude each other: a "
                       "note never counts");
    }
    if (session.note_only() && session.pending()) {
      return RuleError(pack, rule.id(),
                       "session.pending is for a rule that counts: a note_only rule's matches "
                       "never count, so none can wait for the session's address");
    }
    if (session.succeeded() && !session.note_only()) {
      return RuleError(pack, rule.id(),
                       "session.succeeded needs session.note_only: the line that says a "
                       "session succeeded notes it, and is never counted");
    }
    if (!out->session_by_pid && session.by() == out->proto.key()) {
      return RuleError(pack, rule.id(), "session.by cannot be the key group");
    }
    if (out->session_by_pid && session.by_process()) {
      return RuleError(pack, rule.id(),
                       "session.by_process needs session.by to name a group: a pid session is "
                       "already the process's");
    }
  }

  const RE2::Options options = PalisadeRe2Options();
  for (int i = 0; i < rule.patterns_size(); ++i) {
    std::shared_ptr<const RE2> re =
        pack.checked != nullptr ? pack.checked->Compiled(rule.patterns(i)) : nullptr;
    if (re == nullptr) re = std::make_shared<const RE2>(rule.patterns(i), options);
    if (!re->ok()) {
      return RuleError(pack, rule.id(),
                       absl::StrCat("pattern ", i + 1, " does not compile: ", re->error()));
    }
    const auto& groups = re->NamedCapturingGroups();
    auto it = groups.find(out->proto.key());
    // A session rule that counts may take its key from the session instead (rules.proto).
    const bool key_from_session = rule.has_session() && !rule.session().note_only();
    // A field rule on an address may take the record's client address (rules.proto).
    const bool key_from_record = !rule.field().empty() && kind == TargetKind::TARGET_KIND_IP;
    if (it == groups.end() && !key_from_session && !key_from_record) {
      return RuleError(pack, rule.id(),
                       absl::StrCat("pattern ", i + 1, " has no (?P<", out->proto.key(),
                                    ">...) group for the key"));
    }
    out->key_group.push_back(it == groups.end() ? -1 : it->second);
    out->submatches.push_back(it == groups.end() ? 1 : it->second + 1);
    if (rule.has_session() && out->session_by_pid == false) {
      const std::string& by = rule.session().by();
      if (!by.empty() && by != "pid") {
        auto g = groups.find(by);
        if (g == groups.end()) {
          return RuleError(
              pack, rule.id(),
              absl::StrCat("pattern ", i + 1, " has no (?P<", by, ">...) group for session.by"));
        }
        out->session_group.push_back(g->second);
        out->submatches.back() = std::max(out->submatches.back(), g->second + 1);
      }
    }
    out->patterns.push_back(std::move(re));
    AddPatternAnalyses(rule.patterns(i), it != groups.end(), pack.checked.get(), out.get(),
                       literals);
  }
  for (int c = 0; c < rule.conditions_size(); ++c) {
    const palisade::v1::Condition& cond = rule.conditions(c);
    const int kinds = !cond.in_set().empty() + !cond.not_in_set().empty() +
                      !cond.in_feed().empty() + !cond.not_in_feed().empty();
    if (kinds != 1) {
      return RuleError(pack, rule.id(),
                       absl::StrCat("condition ", c + 1,
                                    ": set exactly one of in_set, not_in_set, in_feed, "
                                    "not_in_feed"));
    }
    CompiledCondition compiled;
    if (!cond.in_feed().empty() || !cond.not_in_feed().empty()) {
      // Feeds come and go at run time; an unknown feed is simply empty.
      compiled.feed = cond.in_feed().empty() ? cond.not_in_feed() : cond.in_feed();
      compiled.inside = !cond.in_feed().empty();
    } else {
      const std::string& set_name = cond.in_set().empty() ? cond.not_in_set() : cond.in_set();
      auto set = sets.find(set_name);
      if (set == sets.end()) {
        return RuleError(pack, rule.id(),
                         absl::StrCat("condition ", c + 1, ": CIDR set \"", set_name,
                                      "\" is not defined (add it to the config's cidr_sets)"));
      }
      compiled.set = &set->second;
      compiled.inside = !cond.in_set().empty();
    }
    for (size_t p = 0; p < out->patterns.size(); ++p) {
      const auto& groups = out->patterns[p]->NamedCapturingGroups();
      auto g = groups.find(cond.group());
      if (g == groups.end()) {
        return RuleError(pack, rule.id(),
                         absl::StrCat("condition ", c + 1, ": pattern ", p + 1, " has no (?P<",
                                      cond.group(), ">...) group"));
      }
      compiled.group.push_back(g->second);
      out->submatches[p] = std::max(out->submatches[p], g->second + 1);
    }
    out->conditions.push_back(compiled);
  }
  for (int i = 0; i < rule.ignore_patterns_size(); ++i) {
    auto re = std::make_unique<RE2>(rule.ignore_patterns(i), options);
    if (!re->ok()) {
      return RuleError(pack, rule.id(),
                       absl::StrCat("ignore pattern ", i + 1, " does not compile: ", re->error()));
    }
    out->ignores.push_back(std::move(re));
    AddIgnoreAnalyses(rule.ignore_patterns(i), pack.checked.get(), out.get());
  }

  if (rule.session().note_only()) {
    // A note never counts: it has no threshold and makes no decision.
    if (rule.has_threshold() || rule.has_decision()) {
      return RuleError(pack, rule.id(),
                       "a session.note_only rule never counts: leave out threshold and decision");
    }
    return out;
  }
  out->count = rule.threshold().count();
  if (out->count == 0) return RuleError(pack, rule.id(), "threshold.count must be >= 1");
  out->window = FromProto(rule.threshold().window());
  if (out->count > 1 && out->window <= absl::ZeroDuration()) {
    return RuleError(pack, rule.id(), "threshold.window must be > 0 when count > 1");
  }
  if (out->count > 10000) return RuleError(pack, rule.id(), "threshold.count must be <= 10000");
  if (rule.decision().action() == palisade::v1::Action::ACTION_UNSPECIFIED) {
    return RuleError(pack, rule.id(), "decision.action is required");
  }
  out->duration = FromProto(rule.decision().duration());
  if (out->duration <= absl::ZeroDuration()) {
    return RuleError(pack, rule.id(), "decision.duration must be > 0: every decision expires");
  }
  // Past ten years an expiry is no longer a time the store and the edge can hold (a manual
  // decision is held to the same, services/decisions).
  constexpr absl::Duration kMaxDecision = absl::Hours(24 * 3653);
  if (out->duration > kMaxDecision) {
    return RuleError(pack, rule.id(), "decision.duration must be at most 10 years (3653 days)");
  }
  const auto& esc = rule.decision().escalation();
  if (esc.has_max_duration() && FromProto(esc.max_duration()) > kMaxDecision) {
    return RuleError(pack, rule.id(),
                     "decision.escalation.max_duration must be at most 10 years (3653 days)");
  }
  if (!(esc.factor() >= 0 && esc.factor() <= 100)) {  // a NaN fails both compares
    return RuleError(pack, rule.id(), "decision.escalation.factor must be in [0, 100]");
  }
  // An offender is remembered for a bounded time; a cluster's mirrors bound what the writer's
  // decisions say of it by the same year (services/decisions, kMaxMemory).
  if (esc.has_memory() && FromProto(esc.memory()) > absl::Hours(24 * 365)) {
    return RuleError(pack, rule.id(), "decision.escalation.memory must be at most 365 days");
  }
  return out;
}


bool IsVariableRepeat(const ReNode& n) {
  return n.kind == ReNode::kRepeat && (n.max == -1 || (n.max > 1 && n.max != n.min));
}
bool IsMultiRepeat(const ReNode& n) {
  return n.kind == ReNode::kRepeat && (n.max == -1 || n.max > 1);
}

// Every byte any piece of `n` can match.
CharSet Reach(const ReNode& n) {
  if (n.kind == ReNode::kChars) return n.chars;
  CharSet out;
  for (const ReNode& s : n.subs) out |= Reach(s);
  return out;
}

// Whether every match of `n` starts (at_start) or ends (!at_start) at the edge of the text.
bool Anchored(const ReNode& n, bool at_start) {
  switch (n.kind) {
    case ReNode::kBeginText:
      return at_start;
    case ReNode::kEndText:
      return !at_start;
    case ReNode::kConcat:
      return !n.subs.empty() && Anchored(at_start ? n.subs.front() : n.subs.back(), at_start);
    case ReNode::kGroup:
      return Anchored(n.subs[0], at_start);
    case ReNode::kAlternate:
      for (const ReNode& s : n.subs) {
        if (!Anchored(s, at_start)) return false;
      }
      return true;
    default:
      return false;
  }
}

// Depth-first: the first repetition inside `n` for which `pred` holds, or nullptr.
template <typename Pred>
const ReNode* FindRepeat(const ReNode& n, const Pred& pred, const ReNode* skip = nullptr) {
  if (&n == skip) return nullptr;
  if (n.kind == ReNode::kRepeat && pred(n)) return &n;
  for (const ReNode& s : n.subs) {
    if (const ReNode* found = FindRepeat(s, pred, skip)) return found;
  }
  return nullptr;
}

// Whether `n` holds a class that can take free text: one of more than 32 bytes, or of more than
// two with a letter (`\w`, `[a-z]`; not a literal word, nor digits, signs and dots).
bool HoldsFreeClass(const ReNode& n) {
  if (n.kind == ReNode::kChars) {
    const size_t size = n.chars.count();
    return size > 32 || (size > 2 && (n.chars & (Range('a', 'z') | Range('A', 'Z'))).any());
  }
  for (const ReNode& s : n.subs) {
    if (HoldsFreeClass(s)) return true;
  }
  return false;
}

// How many optional copies of a piece holding a free class `n` holds: copies add up to a field
// of variable width, as `.{0,16}` is one (`.?.?.?`, `(?:.?){16}`, `(?:\w)?(?:\w)?`), which
// no one repetition shows. An optional literal word, or a time's optional fraction and offset,
// counts nothing.
int FreeOptionalCopies(const ReNode& n) {
  int count = 0;
  for (const ReNode& s : n.subs) count += FreeOptionalCopies(s);
  if (n.kind != ReNode::kRepeat) return count;
  if (n.min != n.max && HoldsFreeClass(n)) count += 1;
  if (n.max == -1) return count + 2;  // unbounded: a field whatever it holds
  return count * std::max(n.max, 1);
}

// A nondeterministic automaton over byte sets, built from parsed pattern pieces: for the
// question whether a client's copy of a key can win (AnalyzeKeyPlacement).
class ByteNfa {
 public:
  int NewState() {
    edges_.emplace_back();
    eps_.emplace_back();
    return static_cast<int>(edges_.size()) - 1;
  }
  void Edge(int from, int to, const CharSet& bytes) { edges_[from].push_back({to, bytes}); }
  void Eps(int from, int to) { eps_[from].push_back(to); }
  // Adds `n` from state `from`; returns the state its matches end in. Zero-width pieces (`$`,
  // `\b`) match nothing and are passed over, so the language only grows: what it is used to
  // prove impossible stays impossible.
  int Add(const ReNode& n, int from) {
    switch (n.kind) {
      case ReNode::kChars: {
        const int to = NewState();
        Edge(from, to, n.chars);
        return to;
      }
      case ReNode::kConcat:
        for (const ReNode& sub : n.subs) from = Add(sub, from);
        return from;
      case ReNode::kGroup:
        return Add(n.subs[0], from);
      case ReNode::kAlternate: {
        const int end = NewState();
        for (const ReNode& sub : n.subs) Eps(Add(sub, from), end);
        return end;
      }
      case ReNode::kRepeat: {
        constexpr int kUnrollAtMost = 32;  // beyond: as if unbounded (a larger language)
        for (int i = 0; i < n.min && i < kUnrollAtMost; ++i) from = Add(n.subs[0], from);
        if (n.max == -1 || n.max > kUnrollAtMost || n.min >= kUnrollAtMost) {
          const int loop = NewState();
          Eps(from, loop);
          Eps(Add(n.subs[0], loop), loop);
          return loop;
        }
        const int end = NewState();
        Eps(from, end);
        for (int i = n.min; i < n.max; ++i) {
          from = Add(n.subs[0], from);
          Eps(from, end);
        }
        return end;
      }
      default:
        return from;
    }
  }
  size_t size() const { return edges_.size(); }
  // Closure(s) for every state, computed once, on the first Walk (the automaton is complete by
  // then: the analysis walks each one many times, once per state of another in one place).
  const std::vector<std::vector<int>>& Closures() const {
    if (closures_.size() != size()) {
      closures_.resize(size());
      // One mark per state for all of them (mark[t] == s: t seen from s), not a cleared
      // vector per state: that was quadratic in the automaton's size.
      std::vector<int> mark(size(), -1);
      for (size_t i = 0; i < size(); ++i) closures_[i] = Closure(static_cast<int>(i), mark);
    }
    return closures_;
  }
  // The states reachable from `s` by empty moves (s included), in breadth-first order.
  // `mark` holds no entry equal to s on entry.
  std::vector<int> Closure(int s, std::vector<int>& mark) const {
    std::vector<int> out = {s};
    mark[s] = s;
    for (size_t i = 0; i < out.size(); ++i) {
      for (int t : eps_[out[i]]) {
        if (mark[t] != s) {
          mark[t] = s;
          out.push_back(t);
        }
      }
    }
    return out;
  }
  const std::vector<std::pair<int, CharSet>>& edges(int s) const { return edges_[s]; }

  // The state pairs (i, j) some string takes `a` and `b` to together from one of `starts`
  // (closed under empty moves). At most `max_pairs` pairs (a.size() * b.size()) are allowed;
  // past that, nullopt (the caller answers cautiously).
  static std::optional<std::vector<std::pair<int, int>>> Walk(
      const ByteNfa& a, const ByteNfa& b, const std::vector<std::pair<int, int>>& starts,
      size_t max_pairs = 1u << 20) {
    if (a.size() * b.size() > max_pairs) return std::nullopt;
    const std::vector<std::vector<int>>& ca = a.Closures();
    const std::vector<std::vector<int>>& cb = b.Closures();
    std::vector<bool> seen(a.size() * b.size(), false);
    std::vector<std::pair<int, int>> out;
    auto visit = [&](int i, int j) {
      for (int x : ca[i]) {
        for (int y : cb[j]) {
          const size_t k = static_cast<size_t>(x) * b.size() + static_cast<size_t>(y);
          if (!seen[k]) {
            seen[k] = true;
            out.emplace_back(x, y);
          }
        }
      }
    };
    for (const auto& [i, j] : starts) visit(i, j);
    for (size_t n = 0; n < out.size(); ++n) {
      const auto [i, j] = out[n];
      for (const auto& [ti, bytes_a] : a.edges(i)) {
        for (const auto& [tj, bytes_b] : b.edges(j)) {
          if ((bytes_a & bytes_b).any()) visit(ti, tj);
        }
      }
    }
    return out;
  }

 private:
  std::vector<std::vector<std::pair<int, CharSet>>> edges_;
  std::vector<std::vector<int>> eps_;
  mutable std::vector<std::vector<int>> closures_;  // see Closures()
};

// The chain of (node, child index) from the root down to the capture named `key`.
bool FindKey(const ReNode& n, absl::string_view key,
             std::vector<std::pair<const ReNode*, size_t>>& path, const ReNode** group) {
  if (n.kind == ReNode::kGroup && n.capture && n.name == key) {
    *group = &n;
    return true;
  }
  for (size_t i = 0; i < n.subs.size(); ++i) {
    path.emplace_back(&n, i);
    if (FindKey(n.subs[i], key, path, group)) return true;
    path.pop_back();
  }
  return false;
}

bool IsSingleString(const ReNode& n) {
  switch (n.kind) {
    case ReNode::kChars:
      return n.chars.count() == 1;
    case ReNode::kConcat:
    case ReNode::kGroup:
      for (const ReNode& s : n.subs) {
        if (!IsSingleString(s)) return false;
      }
      return true;
    case ReNode::kRepeat:
      return n.min == n.max && IsSingleString(n.subs[0]);
    default:
      return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Required literals (the prefilter, issue 13 §4): from the same parse tree, the strings every
// match of a piece must contain one of. Letters are kept lowercased (the gate compares without
// case, a superset of what a case-sensitive pattern matches). RE2 folds `k` and `s` under (?i)
// to U+212A (KELVIN SIGN) and U+017F (LATIN SMALL LETTER LONG S) too: a set holding both cases
// of those letters also stands for their UTF-8 bytes. A set with a byte past ASCII (whose UTF-8
// meaning and folding the byte-level tree does not model) stands for nothing exact.

constexpr size_t kMaxExactStrings = 16;  // cross products of exact pieces
constexpr size_t kMaxRequired = 64;      // alternatives in a required set
constexpr size_t kMaxSetExpansion = 4;   // a one-byte piece expands to at most this many strings

struct LitInfo {
  bool exact = false;
  std::vector<std::string> strings;   // exact: every string the piece can match
  std::vector<std::string> required;  // every match contains one of them (empty: none known)
};

// Higher is a better filter: longer shortest string, then fewer strings. -1: no filter.
int LiteralScore(const std::vector<std::string>& set) {
  if (set.empty() || set.size() > kMaxRequired) return -1;
  size_t shortest = SIZE_MAX;
  for (const std::string& s : set) shortest = std::min(shortest, s.size());
  if (shortest == 0) return -1;
  return static_cast<int>(std::min<size_t>(shortest, 16)) * 1000 - static_cast<int>(set.size());
}

void Dedupe(std::vector<std::string>* v) {
  std::sort(v->begin(), v->end());
  v->erase(std::unique(v->begin(), v->end()), v->end());
}

// The strings a one-byte piece stands for, or false when not a small exact set.
bool ExpandChars(const CharSet& chars, std::vector<std::string>* out) {
  out->clear();
  // Each string below comes from at most two bytes (a letter's two cases): more bytes than
  // that make more than kMaxSetExpansion strings (`.`, `\S`, `[^ ]`: most classes).
  if (chars.count() > 2 * kMaxSetExpansion) return false;
  // The set bits only, in increasing order (libstdc++'s _Find_first/_Find_next): a byte past
  // ASCII stands for nothing exact.
  for (size_t c = chars._Find_first(); c < chars.size(); c = chars._Find_next(c)) {
    if (c >= 0x80) {
      out->clear();
      return false;
    }
    out->push_back(std::string(1, absl::ascii_tolower(static_cast<char>(c))));
  }
  Dedupe(out);
  if (chars['k'] && chars['K']) out->push_back("\xE2\x84\xAA");
  if (chars['s'] && chars['S']) out->push_back("\xC5\xBF");
  return !out->empty() && out->size() <= kMaxSetExpansion;
}

// Every a + b, or false when there would be more than kMaxExactStrings.
bool Cross(const std::vector<std::string>& a, const std::vector<std::string>& b,
           std::vector<std::string>* out) {
  if (a.size() * b.size() > kMaxExactStrings) return false;
  std::vector<std::string> product;
  for (const std::string& x : a) {
    for (const std::string& y : b) product.push_back(x + y);
  }
  Dedupe(&product);
  *out = std::move(product);
  return true;
}

// The better of the piece's exact strings and its required set.
const std::vector<std::string>& BestOf(const LitInfo& info) {
  if (info.exact && LiteralScore(info.strings) >= LiteralScore(info.required)) return info.strings;
  return info.required;
}

LitInfo Literals(const ReNode& n) {
  LitInfo out;
  auto consider = [&out](const std::vector<std::string>& set) {
    if (LiteralScore(set) > LiteralScore(out.required)) out.required = set;
  };
  switch (n.kind) {
    case ReNode::kChars:
      out.exact = ExpandChars(n.chars, &out.strings);
      if (!out.exact) out.strings.clear();
      break;
    case ReNode::kBeginText:
    case ReNode::kEndText:
    case ReNode::kEmptyWidth:
      out.exact = true;
      out.strings = {""};
      break;
    case ReNode::kGroup:
      return Literals(n.subs[0]);
    case ReNode::kConcat: {
      // Runs of adjacent exact pieces make longer strings; any one run, or any piece's required
      // set, is required of the whole.
      std::vector<std::string> run = {""};
      bool all_exact = true;
      std::vector<std::string> bytes;  // a one-byte piece's strings
      for (const ReNode& sub : n.subs) {
        // A one-byte piece (most of a pattern) is expanded here, and one that stands for one
        // string extends the run in place: what Literals(sub) and Cross would compute, without
        // the copies (every string of the run, for every byte of a literal word).
        if (sub.kind == ReNode::kChars && ExpandChars(sub.chars, &bytes)) {
          if (bytes.size() == 1) {
            // Distinct strings stay distinct with the same byte after each: no Dedupe.
            for (std::string& s : run) s += bytes[0];
            continue;
          }
          std::vector<std::string> product;
          if (Cross(run, bytes, &product)) {
            run = std::move(product);
          } else {
            all_exact = false;
            consider(run);
            run = bytes;
          }
          continue;
        }
        LitInfo info = Literals(sub);
        if (info.exact) {
          std::vector<std::string> product;
          if (Cross(run, info.strings, &product)) {
            run = std::move(product);
          } else {
            all_exact = false;
            consider(run);
            run = info.strings;
          }
        } else {
          all_exact = false;
          consider(run);
          run = {""};
          consider(info.required);
        }
      }
      consider(run);
      if (all_exact) {
        out.exact = true;
        out.strings = std::move(run);
      }
      break;
    }
    case ReNode::kAlternate: {
      bool all_exact = true;
      bool all_required = true;
      std::vector<std::string> exact, required;
      for (const ReNode& sub : n.subs) {
        LitInfo info = Literals(sub);
        if (info.exact) {
          exact.insert(exact.end(), info.strings.begin(), info.strings.end());
        } else {
          all_exact = false;
        }
        const std::vector<std::string>& best = BestOf(info);
        if (LiteralScore(best) < 0) {
          all_required = false;
        } else {
          required.insert(required.end(), best.begin(), best.end());
        }
      }
      Dedupe(&exact);
      Dedupe(&required);
      if (all_exact && exact.size() <= kMaxExactStrings) {
        out.exact = true;
        out.strings = std::move(exact);
      }
      if (all_required) consider(required);
      break;
    }
    case ReNode::kRepeat: {
      LitInfo info = Literals(n.subs[0]);
      if (info.exact && n.min == n.max && n.min <= 4) {
        std::vector<std::string> power = {""};
        bool fits = true;
        for (int i = 0; i < n.min && fits; ++i) fits = Cross(power, info.strings, &power);
        if (fits) {
          out.exact = true;
          out.strings = std::move(power);
        }
      } else if (info.exact && n.min == 0 && n.max == 1 && info.strings.size() < kMaxExactStrings) {
        out.exact = true;
        out.strings = info.strings;
        out.strings.push_back("");
        Dedupe(&out.strings);
      }
      if (n.min >= 1) consider(BestOf(info));
      break;
    }
  }
  if (out.exact) consider(out.strings);
  return out;
}

// RequiredLiterals from a pattern's parse tree (of a pattern known to compile).
absl::StatusOr<std::vector<std::string>> LiteralsOfTree(const absl::StatusOr<ReNode>& root) {
  if (!root.ok()) return root.status();
  LitInfo info = Literals(*root);
  std::vector<std::string> best = BestOf(info);
  if (LiteralScore(best) < 0) return std::vector<std::string>();
  return best;
}

// A pattern `^(?P<key>[S]{min,max}) c...`: the key group right after the start, holding a
// repetition of one class S of ASCII bytes, followed by a piece c whose bytes are ASCII and
// outside S. Any match then has the key = the longest run of S bytes at the start (the byte
// after the run cannot be in S, and c needs a byte outside S). False for anything else.
const ReNode& Unwrap(const ReNode& n) {
  if (n.kind == ReNode::kConcat && n.subs.size() == 1) return Unwrap(n.subs[0]);
  return n;
}
bool AsciiOnly(const CharSet& s) {
  for (int c = 0x80; c < 256; ++c) {
    if (s[c]) return false;
  }
  return true;
}
// Whether RE2 may take a byte past ASCII where the class `s` shows none: (?i)k also matches
// U+212A and (?i)s U+017F (see WidenToRe2), and a class of both cases may be such a fold.
bool FoldsPastAscii(const CharSet& s) { return (s['k'] && s['K']) || (s['s'] && s['S']); }
bool LeadingKeyOf(const ReNode& root, absl::string_view key, CharSet* set, int* min, int* max) {
  const ReNode& top = Unwrap(root);
  if (top.kind != ReNode::kConcat || top.subs.size() < 3) return false;
  if (top.subs[0].kind != ReNode::kBeginText) return false;
  const ReNode& group = top.subs[1];
  if (group.kind != ReNode::kGroup || !group.capture || group.name != key) return false;
  const ReNode& rep = Unwrap(group.subs[0]);
  if (rep.kind != ReNode::kRepeat || rep.min < 1) return false;
  const ReNode& chars = Unwrap(rep.subs[0]);
  if (chars.kind != ReNode::kChars || !AsciiOnly(chars.chars) || FoldsPastAscii(chars.chars)) {
    return false;
  }
  const ReNode& next = top.subs[2];
  if (next.kind != ReNode::kChars || !AsciiOnly(next.chars) || (next.chars & chars.chars).any()) {
    return false;
  }
  *set = chars.chars;
  *min = rep.min;
  *max = rep.max;
  return true;
}

void AddLeadingKey(const absl::StatusOr<ReNode>& root, bool has_key, CompiledRule* out) {
  out->leading_key_bytes.emplace_back();
  out->leading_key_bytes.back().fill(false);
  out->leading_key_min.push_back(0);
  out->leading_key_max.push_back(0);
  out->leading_key_address.push_back(0);
  if (!has_key) return;
  CharSet set;
  int min = 0, max = 0;
  if (!root.ok() || !LeadingKeyOf(*root, out->proto.key(), &set, &min, &max)) return;
  for (int b = 0; b < 256; ++b) out->leading_key_bytes.back()[b] = set[b];
  out->leading_key_min.back() = static_cast<uint32_t>(min);
  out->leading_key_max.back() = max < 0 ? UINT32_MAX : static_cast<uint32_t>(max);
  CharSet address;
  for (int b = '0'; b <= '9'; ++b) address.set(b);
  for (int b = 'a'; b <= 'f'; ++b) address.set(b), address.set(b - 'a' + 'A');
  address.set(':');
  address.set('.');
  out->leading_key_address.back() = set == address;
}

// Whether the tree holds an empty-width piece other than `allowed_begin` / `allowed_end`.
bool HasOtherEmptyWidth(const ReNode& n, const ReNode* allowed_begin, const ReNode* allowed_end) {
  switch (n.kind) {
    case ReNode::kEmptyWidth:
      return true;
    case ReNode::kBeginText:
      return &n != allowed_begin;
    case ReNode::kEndText:
      return &n != allowed_end;
    default:
      for (const ReNode& sub : n.subs) {
        if (HasOtherEmptyWidth(sub, allowed_begin, allowed_end)) return true;
      }
      return false;
  }
}

// The bytes a match of `n` can start with (`*first`), and whether it can be empty
// (`*nullable`; the end of the text counts as empty: no byte follows). False when `n` holds an
// empty-width piece but the end of the text, whose first byte this does not follow. With
// `at_start` (a match that starts the text: an anchored Set's), the start of the text counts as
// empty too: wherever it stands, taking it as empty can only add bytes, never drop one.
bool FirstBytes(const ReNode& n, CharSet* first, bool* nullable, bool at_start = false) {
  switch (n.kind) {
    case ReNode::kChars:
      *first |= n.chars;
      *nullable = false;
      return true;
    case ReNode::kEndText:
      *nullable = true;
      return true;
    case ReNode::kBeginText:
      *nullable = true;
      return at_start;
    case ReNode::kEmptyWidth:
      return false;
    case ReNode::kGroup:
      return n.subs.size() == 1 && FirstBytes(n.subs[0], first, nullable, at_start);
    case ReNode::kRepeat:
      if (n.subs.size() != 1 || !FirstBytes(n.subs[0], first, nullable, at_start)) return false;
      *nullable = *nullable || n.min == 0;
      return true;
    case ReNode::kAlternate: {
      bool any = n.subs.empty();
      for (const ReNode& sub : n.subs) {
        bool sub_nullable = false;
        if (!FirstBytes(sub, first, &sub_nullable, at_start)) return false;
        any = any || sub_nullable;
      }
      *nullable = any;
      return true;
    }
    case ReNode::kConcat:
      for (const ReNode& sub : n.subs) {
        bool sub_nullable = false;
        if (!FirstBytes(sub, first, &sub_nullable, at_start)) return false;
        if (!sub_nullable) {
          *nullable = false;
          return true;
        }
      }
      *nullable = true;
      return true;
  }
  return false;
}

// The bytes a match of `root`, anchored at the start of the text, can start with: false when
// the parse does not tell or a match can be empty (CompiledRule::start_bytes).
bool StartBytes(const ReNode& root, CharSet* first) {
  bool nullable = false;
  return FirstBytes(root, first, &nullable, /*at_start=*/true) && !nullable;
}

// SetPart::first_bytes from its members' start bytes: the parser reads bytes; RE2 reads UTF-8
// and folds case. (?i)k and (?i)s also match U+212A and U+017F (ExpandChars), and a letter past
// ASCII may fold to one with another lead byte: so every lead byte, when any is there.
void WidenToRe2(CharSet* first) {
  if ((*first)['k'] && (*first)['K']) first->set(0xE2);
  if ((*first)['s'] && (*first)['S']) first->set(0xC5);
  for (int c = 0x80; c < 256; ++c) {
    if ((*first)[c]) {
      for (int d = 0x80; d < 256; ++d) first->set(d);
      return;
    }
  }
}

// KeySplit's run: when `group` (the key's) is a run of one ASCII class and no byte of that
// class can start what follows it (`rest`), the key's end is where the run ends.
void AddKeyRun(const ReNode& group, absl::Span<const ReNode> rest, CompiledRule::KeySplit* split) {
  if (group.subs.size() != 1) return;
  const ReNode& rep = Unwrap(group.subs[0]);
  if (rep.kind != ReNode::kRepeat || rep.min < 1 || rep.subs.size() != 1) return;
  const ReNode& chars = Unwrap(rep.subs[0]);
  if (chars.kind != ReNode::kChars || !AsciiOnly(chars.chars)) return;
  CharSet follow;
  bool rest_nullable = true;
  for (const ReNode& n : rest) {
    bool nullable = false;
    if (!FirstBytes(n, &follow, &nullable)) return;
    if (!nullable) {
      rest_nullable = false;
      break;
    }
  }
  if ((follow & chars.chars).any()) return;
  for (int b = 0; b < 256; ++b) {
    split->run_bytes[b] = chars.chars[b];
    split->follow[b] = follow[b];
  }
  split->follow_end = rest_nullable;
  for (const ReNode& n : rest) {
    if (n.kind != ReNode::kChars || n.chars.count() != 1) break;
    for (int b = 0; b < 256; ++b) {
      if (n.chars[b]) split->follow_literal.push_back(static_cast<char>(b));
    }
  }
  split->run_min = static_cast<uint32_t>(rep.min);
  split->run_max = rep.max < 0 ? UINT32_MAX : static_cast<uint32_t>(rep.max);
}

void AddKeySplit(const std::string& pattern, const absl::StatusOr<ReNode>& root, bool has_key,
                 CompiledRule* out) {
  out->key_split.emplace_back();
  if (!has_key) return;
  // No flag group anywhere ("(?i)", "(?s:...)", "(?U)"): the head and tail are cut out of the
  // pattern's text and must mean what they meant in it. Only "(?:" and named groups pass; an
  // escaped "\(?" is refused too (conservative: the pattern keeps RE2's path).
  for (size_t at = pattern.find("(?"); at != std::string::npos; at = pattern.find("(?", at + 2)) {
    const char c = at + 2 < pattern.size() ? pattern[at + 2] : '\0';
    if (c != ':' && c != 'P' && c != '<') return;
  }
  if (!root.ok()) return;
  const ReNode& top = Unwrap(*root);
  if (top.kind != ReNode::kConcat || top.subs.size() < 4) return;
  if (top.subs.front().kind != ReNode::kBeginText || top.subs.back().kind != ReNode::kEndText) {
    return;
  }
  if (HasOtherEmptyWidth(top, &top.subs.front(), &top.subs.back())) return;
  size_t g = 0;
  for (size_t i = 1; i + 1 < top.subs.size(); ++i) {
    const ReNode& n = top.subs[i];
    if (n.kind == ReNode::kGroup && n.capture && n.name == out->proto.key()) {
      g = i;
      break;
    }
  }
  if (g < 2) return;
  std::string intro;
  for (size_t j = g; j-- > 1;) {
    const ReNode& prev = top.subs[j];
    if (prev.kind != ReNode::kChars || prev.chars.count() != 1) break;
    for (int b = 0; b < 256; ++b) {
      if (prev.chars[b]) intro.insert(intro.begin(), static_cast<char>(b));
    }
  }
  if (intro.empty()) return;
  auto split = std::make_unique<CompiledRule::KeySplit>();
  split->intro = std::move(intro);
  const size_t cut = top.subs[g].begin;
  split->head = std::make_unique<RE2>(pattern.substr(0, cut), PalisadeRe2Options());
  split->tail = std::make_unique<RE2>(pattern.substr(cut), PalisadeRe2Options());
  if (!split->head->ok() || !split->tail->ok()) return;
  // The tail's group 1 must be the key group (the cut is at its parenthesis).
  const auto& names = split->tail->NamedCapturingGroups();
  auto named = names.find(out->proto.key());
  if (named == names.end() || named->second != 1) return;
  AddKeyRun(top.subs[g], absl::MakeConstSpan(top.subs).subspan(g + 1), split.get());
  out->key_split.back() = std::move(split);
}

// Whether `n` holds an assertion that reads the text's end: `$` (kEndText, or kEmptyWidth under
// (?m)), `\z`, `\b` or `\B` (CompiledRule::reads_end).
bool HasEndAssertion(const ReNode& n, absl::string_view pattern) {
  if (n.kind == ReNode::kEndText) return true;
  // `$`, and `\b` or `\B`: at the text's end a word boundary holds after any word byte, so at a
  // cut it holds where the writer went on with a word ("user=monitor" of "user=monitorx").
  if (n.kind == ReNode::kEmptyWidth) {
    return n.begin < pattern.size() && (pattern[n.begin] == '$' || pattern[n.begin] == '\\');
  }
  for (const ReNode& sub : n.subs) {
    if (HasEndAssertion(sub, pattern)) return true;
  }
  return false;
}

// Whether `pattern` (parsed as `root`) reads the end of the text, and whether every match of it
// ends there (CompiledRule::reads_end, anchored_end).
std::pair<bool, bool> EndAnalysis(const absl::StatusOr<ReNode>& root, absl::string_view pattern) {
  // A tree the parser does not take: any `$`, `\z`, `\b` or `\B` in the text counts (an escaped
  // `\$` too).
  const bool reads_end = root.ok() ? HasEndAssertion(*root, pattern)
                                   : pattern.find('$') != absl::string_view::npos ||
                                         pattern.find("\\z") != absl::string_view::npos ||
                                         pattern.find("\\b") != absl::string_view::npos ||
                                         pattern.find("\\B") != absl::string_view::npos;
  return {reads_end, root.ok() && Anchored(*root, /*at_start=*/false)};
}

void AddIgnoreAnalyses(const std::string& pattern, const PackPatterns* checked, CompiledRule* out) {
  const absl::StatusOr<ReNode>* tree = checked != nullptr ? checked->ParsedTree(pattern) : nullptr;
  absl::StatusOr<ReNode> parsed;
  if (tree == nullptr) {
    parsed = ParseRegex(pattern);
    tree = &parsed;
  }
  const auto [reads_end, anchored_end] = EndAnalysis(*tree, pattern);
  out->ignore_reads_end.push_back(reads_end);
  out->ignore_anchored_end.push_back(anchored_end);
  out->ignores_read_end = out->ignores_read_end || reads_end;
}

void AddPatternAnalyses(const std::string& pattern, bool has_key, const PackPatterns* checked,
                        CompiledRule* out, std::vector<std::vector<std::string>>* literals) {
  // The tree the load's checks parsed, when they parsed this pattern.
  const absl::StatusOr<ReNode>* tree = checked != nullptr ? checked->ParsedTree(pattern) : nullptr;
  absl::StatusOr<ReNode> parsed;
  if (tree == nullptr) {
    parsed = ParseRegex(pattern);
    tree = &parsed;
  }
  const absl::StatusOr<ReNode>& root = *tree;
  const auto [reads_end, anchored_end] = EndAnalysis(root, pattern);
  out->reads_end.push_back(reads_end);
  out->anchored_end.push_back(anchored_end);
  auto& start = out->start_bytes.emplace_back(false, CharSet());
  const bool anchored = root.ok() && Anchored(*root, /*at_start=*/true);
  out->anchored_start.push_back(anchored);
  if (anchored) start.first = StartBytes(*root, &start.second);
  AddLeadingKey(root, has_key, out);
  AddKeySplit(pattern, root, has_key, out);
  if (literals == nullptr) return;
  absl::StatusOr<std::vector<std::string>> required = LiteralsOfTree(root);
  literals->push_back(required.ok() ? *std::move(required) : std::vector<std::string>());
}

}  // namespace

// Where `intro` next occurs in `text` at or after `from` (memchr for one byte). Longer ones:
// 16 starts at a time, those where the introducer's first two bytes stand (" f" of " from ": a
// pair rarer than any one byte of it in sshd's messages), then the rest compared. glibc's
// memmem cost ~500 instructions a call on an sshd message, most of it setting up.
size_t FindIntro(absl::string_view text, size_t from, absl::string_view intro) {
  const size_t n = text.size(), m = intro.size();
  if (from > n || n - from < m) return absl::string_view::npos;
  const char* p = text.data();
  if (m == 0) return from;
  if (m == 1) {
    const void* hit = memchr(p + from, intro[0], n - from);
    return hit == nullptr ? absl::string_view::npos
                          : static_cast<size_t>(static_cast<const char*>(hit) - p);
  }
  const size_t last = n - m;  // the last start that leaves room for the introducer
  auto rest_at = [&](size_t s) { return memcmp(p + s + 2, intro.data() + 2, m - 2) == 0; };
  size_t s = from;
#if defined(__SSE2__)
  if (n >= 17) {
    const __m128i first = _mm_set1_epi8(intro[0]), second = _mm_set1_epi8(intro[1]);
    // Bit i: the introducer's first two bytes at b + i (reads [b, b + 17)).
    auto pairs = [&](size_t b) {
      const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + b));
      const __m128i y = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + b + 1));
      return static_cast<uint32_t>(
          _mm_movemask_epi8(_mm_and_si128(_mm_cmpeq_epi8(x, first), _mm_cmpeq_epi8(y, second))));
    };
    auto first_of = [&](size_t b, uint32_t mask) {
      for (; mask != 0; mask &= mask - 1) {
        const size_t at = b + static_cast<size_t>(__builtin_ctz(mask));
        if (at > last) return absl::string_view::npos;
        if (rest_at(at)) return at;
      }
      return absl::string_view::npos;
    };
    for (; s + 17 <= n; s += 16) {
      if (const size_t at = first_of(s, pairs(s)); at != absl::string_view::npos) return at;
    }
    // The starts left, in one block that ends where the text does (the ones before masked off).
    if (s > last) return absl::string_view::npos;
    const size_t b = n - 17;
    return first_of(s, pairs(b) >> (s - b));
  }
#endif
  for (; s <= last; ++s) {
    if (p[s] == intro[0] && p[s + 1] == intro[1] && rest_at(s)) return s;
  }
  return absl::string_view::npos;
}

bool CompiledRule::KeySplit::RunAt(absl::string_view message, size_t s,
                                    absl::string_view* run) const {
  size_t n = 0;
  while (s + n < message.size() && run_bytes[static_cast<unsigned char>(message[s + n])]) ++n;
  if (n < run_min || n > run_max) return false;
  const bool ends = !follow_literal.empty() ? absl::StartsWith(message.substr(s + n), follow_literal)
                    : s + n == message.size() ? follow_end
                                              : follow[static_cast<unsigned char>(message[s + n])];
  if (ends) *run = message.substr(s, n);
  return ends;
}

int CompiledRule::SplitKey(int p, absl::string_view message, bool proven,
                           absl::string_view* key) const {
  const KeySplit* split = key_split[p].get();
  if (split == nullptr) return -1;
  // Every split ends an occurrence of the introducer; with a key run, only an occurrence that
  // RunAt passes can be one. Bounded: a line with more occurrences than that, or more candidate
  // splits than kMaxTails, costs RE2's one pass instead (each tail match is bounded by the line,
  // so a hostile line could make this quadratic; a run test reads only the run).
  constexpr int kMaxOccurrences = 64;
  constexpr int kMaxTails = 8;
  const bool runs = split->run_max != 0;
  size_t starts[kMaxTails];
  absl::string_view run;
  int candidates = 0, occurrences = 0;
  for (size_t at = FindIntro(message, 0, split->intro); at != absl::string_view::npos;
       at = FindIntro(message, at + 1, split->intro)) {
    if (++occurrences > (runs ? kMaxOccurrences : kMaxTails)) return -1;
    const size_t s = at + split->intro.size();
    if (runs && !split->RunAt(message, s, &run)) continue;
    if (candidates == kMaxTails) return -1;
    starts[candidates++] = s;
  }
  // A match known to exist has its split among the candidates: when the run test leaves one,
  // its run is the key (no byte of the run's class can start T, so the key is the whole run).
  if (proven && runs && candidates == 1) {
    *key = run;
    return 1;
  }
  // The candidates whose tail matches: (key start, key).
  const re2::StringPiece text(message.data(), message.size());
  std::pair<size_t, re2::StringPiece> passed[kMaxTails];
  int n_passed = 0;
  for (int i = 0; i < candidates; ++i) {
    re2::StringPiece groups[2];
    if (!split->tail->Match(text, starts[i], message.size(), RE2::ANCHOR_BOTH, groups, 2)) {
      continue;
    }
    if (groups[1].data() == nullptr) return -1;
    passed[n_passed++] = {starts[i], groups[1]};
  }
  // Likewise, when one passes the tail it is the split, and the head needs no test.
  int found = 0;
  for (int i = 0; i < n_passed; ++i) {
    if (!(proven && n_passed == 1) &&
        !split->head->Match(text, 0, passed[i].first, RE2::ANCHOR_BOTH, nullptr, 0)) {
      continue;
    }
    if (++found > 1) return -1;
    *key = absl::string_view(passed[i].second.data(), passed[i].second.size());
  }
  return found;
}

namespace {

absl::StatusOr<KeyPlacement> AnalyzeParsed(absl::string_view pattern, const ReNode& root,
                                           absl::string_view key);

// AnalyzeKeyPlacement with the pattern's regex and tree from `patterns`.
absl::StatusOr<KeyPlacement> AnalyzeCached(PackPatterns& patterns, const std::string& pattern,
                                           absl::string_view key) {
  const RE2& re = patterns.Regex(pattern);
  if (!re.ok()) return absl::InvalidArgumentError(absl::StrCat("does not compile: ", re.error()));
  const absl::StatusOr<ReNode>& root = patterns.Tree(pattern);
  if (!root.ok()) return root.status();
  return AnalyzeParsed(pattern, *root, key);
}

}  // namespace

absl::StatusOr<KeyPlacement> AnalyzeKeyPlacement(absl::string_view pattern, absl::string_view key) {
  RE2 re(re2::StringPiece(pattern.data(), pattern.size()), PalisadeRe2Options());
  if (!re.ok()) return absl::InvalidArgumentError(absl::StrCat("does not compile: ", re.error()));
  absl::StatusOr<ReNode> root = ParseRegex(pattern);
  if (!root.ok()) return root.status();
  return AnalyzeParsed(pattern, *root, key);
}

namespace {

// AnalyzeKeyPlacement of a pattern that compiled, from its parse tree `root`.
absl::StatusOr<KeyPlacement> AnalyzeParsed(absl::string_view pattern, const ReNode& root_node,
                                           absl::string_view key) {
  const ReNode* root = &root_node;
  std::vector<std::pair<const ReNode*, size_t>> path;
  const ReNode* group = nullptr;
  if (!FindKey(*root, key, path, &group)) {
    return absl::InvalidArgumentError(absl::StrCat("has no (?P<", key, ">...) group"));
  }
  KeyPlacement out;
  out.literal_key = IsSingleString(group->subs[0]);
  out.has_free_text_field =
      FindRepeat(
          *root,
          [](const ReNode& r) {
            return IsVariableRepeat(r) && (Reach(r) & ~(Digits() | Spaces())).any();
          },
          group) != nullptr;

  // Before the key: the pieces that precede it in every sequence that holds it, and any
  // repetition that holds it (its earlier rounds come first).
  auto quote = [&](const ReNode& n) {
    return absl::StrCat("`", pattern.substr(n.begin, n.end - n.begin), "`");
  };
  if (!Anchored(*root, /*at_start=*/true)) {
    out.follows_field = true;
    out.field = "an unanchored start (the match may begin anywhere in the line)";
  }
  for (const auto& [node, index] : path) {
    if (out.follows_field) break;
    if (node->kind == ReNode::kConcat) {
      for (size_t j = 0; j < index && !out.follows_field; ++j) {
        if (const ReNode* r = FindRepeat(node->subs[j], IsVariableRepeat)) {
          out.follows_field = true;
          out.field = quote(*r);
        }
      }
    } else if (IsMultiRepeat(*node)) {
      out.follows_field = true;
      out.field = quote(*node);
    }
  }
  if (!out.follows_field) {
    int copies = 0;
    const ReNode* first = nullptr;
    for (const auto& [node, index] : path) {
      if (node->kind != ReNode::kConcat) continue;
      for (size_t j = 0; j < index; ++j) {
        const int c = FreeOptionalCopies(node->subs[j]);
        if (c > 0 && first == nullptr) first = &node->subs[j];
        copies += c;
      }
    }
    if (copies >= 2) {
      out.follows_field = true;
      out.field = absl::StrCat("optional pieces that together hold a field of free text (",
                               quote(*first), " and those after it)");
    }
  }

  // The text that introduces the key: the one-byte pieces right before it, walking out through
  // groups and alternations (not repetitions) while the key starts its sequence.
  std::vector<CharSet> introducer;
  bool stopped = false;
  for (size_t k = path.size(); k-- > 0 && !stopped;) {
    const auto& [node, index] = path[k];
    if (node->kind == ReNode::kRepeat) break;
    if (node->kind != ReNode::kConcat) continue;
    for (size_t j = index; j-- > 0;) {
      const ReNode& prev = node->subs[j];
      if (prev.kind != ReNode::kChars || prev.chars.count() > 2) {
        stopped = true;
        break;
      }
      introducer.insert(introducer.begin(), prev.chars);
    }
  }
  auto crosses = [&](const ReNode& r) {
    if (!IsMultiRepeat(r)) return false;
    const CharSet reach = Reach(r);
    for (const CharSet& c : introducer) {
      if ((reach & c).none()) return false;
    }
    return true;  // an empty introducer: every repetition counts
  };
  // After the key: the pieces that follow it in every sequence that holds it, innermost first,
  // up to the first that ends at `$`.
  bool crossing = false;
  std::vector<const ReNode*> after;  // those pieces, in order
  for (size_t k = path.size(); k-- > 0 && !out.pinned_to_end && !crossing;) {
    const auto& [node, index] = path[k];
    if (IsMultiRepeat(*node)) {
      crossing = true;  // later rounds of a repetition that holds the key
      break;
    }
    if (node->kind != ReNode::kConcat) continue;
    for (size_t j = index + 1; j < node->subs.size(); ++j) {
      after.push_back(&node->subs[j]);
      if (FindRepeat(node->subs[j], crosses) != nullptr) {
        crossing = true;
        break;
      }
      if (Anchored(node->subs[j], /*at_start=*/false)) {
        out.pinned_to_end = true;
        break;
      }
    }
  }
  // No one repetition re-crosses the introducer, but pieces together may: bounded copies such
  // as "(?: \S+)?(?: \S+)?" take " from <attacker>" whole though neither takes a space and a
  // letter. So, whether a line exists that the pattern matches twice: once as the server wrote
  // it (P INTRO K S: P the pieces before the introducer, which end in the client's text w), and
  // once with a client's copy of introducer and key inside that text (the pieces after the
  // copy then take w, the server's introducer, its key and its tail). With automata for P and
  // S: some string runs P through "anything, INTRO, K" and on through w, where P, reading the
  // server's INTRO, ends; and S reads the same w, then INTRO, K, and reaches its end exactly
  // when a second copy of S does. The search over-approximates (zero-width pieces pass, long
  // bounded repetitions count as unbounded, the client's first text is any): a key it calls
  // pinned is.
  if (out.pinned_to_end && !crossing && !introducer.empty()) {
    const ReNode& key_node = group->subs[0];
    // P: everything before the key, the introducer included at its end.
    ByteNfa p;
    const int p_start = p.NewState();
    int p_end = p_start;
    if (!Anchored(*root, /*at_start=*/true)) p.Edge(p_start, p_start, All());
    for (const auto& [node, index] : path) {
      if (node->kind != ReNode::kConcat) continue;
      for (size_t j = 0; j < index; ++j) p_end = p.Add(node->subs[j], p_end);
    }
    // Q: anything, the introducer, a key (the client's copy). R: the introducer, a key, S.
    ByteNfa q;
    const int q_start = q.NewState();
    q.Edge(q_start, q_start, All());
    int q_end = q_start;
    for (const CharSet& c : introducer) {
      const int next = q.NewState();
      q.Edge(q_end, next, c);
      q_end = next;
    }
    q_end = q.Add(key_node, q_end);
    ByteNfa sa;  // S, reading w then the rest
    const int s_start = sa.NewState();
    int s_end = s_start;
    for (const ReNode* n : after) s_end = sa.Add(*n, s_end);
    ByteNfa r;
    const int r_start = r.NewState();
    int r_end = r_start;
    for (const CharSet& c : introducer) {
      const int next = r.NewState();
      r.Edge(r_end, next, c);
      r_end = next;
    }
    r_end = r.Add(key_node, r_end);
    for (const ReNode* n : after) r_end = r.Add(*n, r_end);

    bool smuggled = true;  // the cautious answer, should a search grow too large
    // 1. P's states after "anything, INTRO, K".
    auto pq = ByteNfa::Walk(p, q, {{p_start, q_start}});
    if (pq) {
      std::vector<std::pair<int, int>> w_starts;
      for (const auto& [i, j] : *pq) {
        if (j == q_end) w_starts.emplace_back(i, s_start);
      }
      // 2. w, read by P and S together; then 3. the server's INTRO: P ends, S goes on.
      auto ps = ByteNfa::Walk(p, sa, w_starts);
      if (ps) {
        // P must now read exactly the introducer to its end: the pairs (P state, S state)
        // from which P's INTRO run ends at p_end, and S's runs through the same INTRO.
        ByteNfa intro;
        const int i_start = intro.NewState();
        int i_end = i_start;
        for (const CharSet& c : introducer) {
          const int next = intro.NewState();
          intro.Edge(i_end, next, c);
          i_end = next;
        }
        std::vector<std::pair<int, int>> r_starts;
        std::vector<int> ends_after_intro(p.size(), -1);  // per P state: unknown, no, yes
        for (const auto& [i, j] : *ps) {
          if (ends_after_intro[i] < 0) {  // P from i reads INTRO to its end?
            auto pi = ByteNfa::Walk(p, intro, {{i, i_start}});
            bool ends = !pi;  // too large: cautious
            if (pi) {
              for (const auto& [x, y] : *pi) ends = ends || (x == p_end && y == i_end);
            }
            ends_after_intro[i] = ends ? 1 : 0;
          }
          if (ends_after_intro[i] == 1) r_starts.emplace_back(j, r_start);
        }
        // 4. S from there reads INTRO K S and ends where a whole S does.
        auto sr = ByteNfa::Walk(sa, r, r_starts);
        if (sr) {
          smuggled = false;
          for (const auto& [i, j] : *sr) smuggled = smuggled || (i == s_end && j == r_end);
        }
      }
    }
    if (smuggled) out.pinned_to_end = false;
  }
  return out;
}

absl::Status CheckKeyAnchoringWith(const LoadedPack& pack, PackPatterns& patterns);
absl::Status CheckExamplesMatchWith(const LoadedPack& pack, PackPatterns& patterns);

}  // namespace

absl::Status CheckKeyAnchoring(const LoadedPack& pack) {
  PackPatterns patterns;
  return CheckKeyAnchoringWith(pack, patterns);
}

absl::Status CheckExamplesMatch(const LoadedPack& pack) {
  PackPatterns patterns;
  return CheckExamplesMatchWith(pack, patterns);
}

namespace {

absl::Status CheckKeyAnchoringWith(const LoadedPack& pack, PackPatterns& patterns) {
  for (const Rule& rule : pack.pack.rules()) {
    const std::string key = rule.key().empty() ? "ip" : rule.key();
    const bool address = rule.key_kind() == TargetKind::TARGET_KIND_UNSPECIFIED ||
                         rule.key_kind() == TargetKind::TARGET_KIND_IP;
    const std::string where =
        absl::StrCat(pack.file, ": pack \"", pack.pack.name(), "\": rule \"", rule.id(), "\": ");
    // A session's id is a key of its own: a client who chose it could write into another
    // connection's session (its address, its failure).
    const std::string& by = rule.session().by();
    if (rule.has_session() && !by.empty() && by != "pid") {
      for (int i = 0; i < rule.patterns_size(); ++i) {
        absl::StatusOr<KeyPlacement> placement = AnalyzeCached(patterns, rule.patterns(i), by);
        if (!placement.ok()) {
          const RE2& re = patterns.Regex(rule.patterns(i));
          if (!re.ok() || re.NamedCapturingGroups().count(by) == 0) continue;  // Compile says
          return absl::InvalidArgumentError(absl::StrCat(where, "pattern ", i + 1, " `",
                                                         rule.patterns(i),
                                                         "`: ", placement.status().message()));
        }
        if (placement->safe()) continue;
        return absl::InvalidArgumentError(absl::StrCat(
            where, "pattern ", i + 1, " `", rule.patterns(i), "`: the session group (?P<", by,
            ">...) follows ", placement->field,
            " and nothing pins it to the end of the line, so whoever writes that field chooses "
            "the session; anchor it as a key group is anchored"));
      }
    }
    if (!rule.unanchored_key_reason().empty()) {
      if (address) {
        return absl::InvalidArgumentError(
            absl::StrCat(where,
                         "unanchored_key_reason is refused on an address key: a client writes text "
                         "next to every address a server logs; anchor the pattern instead"));
      }
      continue;
    }
    for (int i = 0; i < rule.patterns_size(); ++i) {
      absl::StatusOr<KeyPlacement> placement = AnalyzeCached(patterns, rule.patterns(i), key);
      if (!placement.ok()) {
        // Compile names RE2's errors and missing groups; refuse only what it would accept.
        const RE2& re = patterns.Regex(rule.patterns(i));
        if (!re.ok() || re.NamedCapturingGroups().count(key) == 0) continue;
        return absl::InvalidArgumentError(absl::StrCat(
            where, "pattern ", i + 1, " `", rule.patterns(i), "`: ", placement.status().message()));
      }
      if (placement->safe()) continue;
      return absl::InvalidArgumentError(absl::StrCat(
          where, "pattern ", i + 1, " `", rule.patterns(i), "`: the key group (?P<", key,
          ">...) follows ", placement->field,
          " and nothing pins it to the end of the line, so whoever writes that field chooses "
          "the key (a user name \"x from <victim> port 22\" bans the victim). Anchor the whole "
          "line (^...$) or match the fixed tail the server appends after the key (... from "
          "(?P<ip>...) port \\d+ ssh2$)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<std::string>> RequiredLiterals(absl::string_view pattern) {
  RE2 re(re2::StringPiece(pattern.data(), pattern.size()), PalisadeRe2Options());
  if (!re.ok()) return absl::InvalidArgumentError(absl::StrCat("does not compile: ", re.error()));
  return LiteralsOfTree(ParseRegex(pattern));
}

namespace {

// How often a byte turns up in log text, roughly (higher: more often). A guess that only
// steers which byte of a literal the gate looks for first; never what it finds.
int ByteCost(unsigned char c) {
  static const int kLetters[26] = {
      // a  b  c  d  e  f  g  h  i  j  k  l  m  n  o  p  q  r  s  t  u  v  w  x  y  z
      8, 3, 5, 6, 9, 4, 4, 6, 8, 1, 2, 6, 5, 8, 8, 4, 1, 7, 7, 8, 5, 2, 4, 2, 3, 1};
  if (c >= 'a' && c <= 'z') return kLetters[c - 'a'] + 2;  // both cases are looked for
  if (c >= '0' && c <= '9') return 9;
  switch (c) {
    case ' ':
      return 12;
    case '.':
    case '/':
    case ':':
    case '-':
      return 8;
    case '"':
    case '=':
    case '[':
    case ']':
    case '(':
    case ')':
    case ',':
    case ';':
      return 5;
    case '_':
    case '?':
    case '&':
    case '%':
    case '+':
      return 3;
    default:
      return 1;
  }
}

unsigned char Lower(unsigned char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<unsigned char>(c + 32) : c;
}

// The byte with bit 0x20 set, as LiteralGate compares: a letter's two cases are one byte (and
// one compare), other bytes share theirs with one other byte ('[' with '{'), which only makes
// the gate look closer at a few more places.
unsigned char Fold(unsigned char c) { return static_cast<unsigned char>(c | 0x20); }

}  // namespace

LiteralGate::LiteralGate(const std::vector<std::pair<std::string, int>>& literals,
                         Width width) {
#if defined(PALISADE_GATE_AVX2)
  // Asked once: whether this CPU runs AVX2 (the build targets plain x86-64).
  static const bool kAvx2 = __builtin_cpu_supports("avx2");
  wide_ = width == Width::kWidest && kAvx2;
#else
  (void)width;
#endif
  // Each literal is looked for by its least common byte (ByteCost) but its last. Where a literal
  // has several such bytes, the one most literals can take: each distinct byte (as Fold makes
  // it) is one more compare per 16 bytes of every line, so "&cf_token=" and "cf_api_token="
  // share '_' rather than adding '&', which is also common in query strings.
  std::vector<std::string> lowered;
  int takers[256] = {};
  for (const auto& [text, entry] : literals) {
    lowered.push_back(absl::AsciiStrToLower(text));
    const std::string& t = lowered.back();
    int least = INT_MAX;
    for (char c : t) least = std::min(least, ByteCost(c));
    bool seen[256] = {};
    for (char c : t) {
      const unsigned char b = static_cast<unsigned char>(c);
      if (ByteCost(c) == least && !seen[b]) ++takers[b], seen[b] = true;
    }
  }
  for (size_t k = 0; k < literals.size(); ++k) {
    const int entry = literals[k].second;
    if (lowered[k].empty()) continue;  // would pass every line: the caller keeps such out
    Literal lit;
    lit.text = std::move(lowered[k]);
    lit.entry = entry;
    // The looked-for byte is never the last when there are two: the byte after it is checked
    // (next_) before the literal is.
    const size_t last = lit.text.size() > 1 ? lit.text.size() - 1 : 1;
    size_t best = 0;
    for (size_t i = 1; i < last; ++i) {
      const int cost = ByteCost(lit.text[i]), best_cost = ByteCost(lit.text[best]);
      const auto is_letter = [](unsigned char c) { return c >= 'a' && c <= 'z'; };
      const unsigned char b = lit.text[i], a = lit.text[best];
      if (cost < best_cost ||
          (cost == best_cost && (takers[b] > takers[a] ||
                                 (takers[b] == takers[a] && is_letter(a) && !is_letter(b))))) {
        best = i;
      }
    }
    lit.offset = static_cast<uint32_t>(best);
    literals_.push_back(std::move(lit));
  }
  // A literal moves to a byte as many literals or more look for, if it holds one (its last too:
  // the byte before it is then checked first, prev_) that is rare in logs (ByteCost): when the
  // last one leaves a byte, Scan compares each 16 bytes of every line with one byte fewer. The
  // token pack's "cfut_" and "cfat_" would look for 'f' together; they share '_' with its five
  // other literals instead.
  int looked_for[256] = {};
  for (const Literal& lit : literals_) ++looked_for[Fold(lit.text[lit.offset])];
  // Rare punctuation ('_', '?', '=', '"') and letters (j, k, q, v, x, z); not 'f', '.' or ' '.
  constexpr int kCheapShared = 5;
  for (Literal& lit : literals_) {
    for (size_t i = 0; i < lit.text.size(); ++i) {
      const unsigned char b = Fold(lit.text[i]);
      const unsigned char now = Fold(lit.text[lit.offset]);
      if (b == now || looked_for[b] < looked_for[now] || ByteCost(lit.text[i]) > kCheapShared) {
        continue;
      }
      --looked_for[now];
      ++looked_for[b];
      lit.offset = static_cast<uint32_t>(i);
      break;
    }
  }
  for (size_t k = 0; k < literals_.size(); ++k) {
    const Literal& lit = literals_[k];
    const unsigned char a = Fold(lit.text[lit.offset]);
    if (lit.offset + 1 < lit.text.size()) {
      next_[a].set(Fold(lit.text[lit.offset + 1]));
    } else if (lit.offset > 0) {
      prev_[a].set(Fold(lit.text[lit.offset - 1]));
    } else {
      next_[a].set();
    }
    by_byte_[a].push_back(static_cast<uint32_t>(k));
  }
  for (int c = 0; c < 256; ++c) {
    if (by_byte_[c].empty()) continue;
    anchors_.push_back(static_cast<char>(c));
    std::array<char, 16> v;
    v.fill(static_cast<char>(c));
    vectors_.push_back(v);
  }
}

bool LiteralGate::At(absl::string_view text, size_t pos,
                     const std::vector<std::pair<int, int>>& entries,
                     std::vector<std::pair<int, int>>* out, size_t first) const {
  const unsigned char a = Fold(static_cast<unsigned char>(text[pos]));
  if (pos + 1 < text.size() && !next_[a][Fold(static_cast<unsigned char>(text[pos + 1]))] &&
      !(pos > 0 && prev_[a][Fold(static_cast<unsigned char>(text[pos - 1]))])) {
    return false;
  }
  bool found = false;
  for (uint32_t index : by_byte_[a]) {
    const Literal& lit = literals_[index];
    if (pos < lit.offset) continue;
    const size_t start = pos - lit.offset;
    if (text.size() - start < lit.text.size()) continue;
    bool equal = true;
    for (size_t i = 0; i < lit.text.size() && equal; ++i) {
      equal = Lower(static_cast<unsigned char>(text[start + i])) ==
              static_cast<unsigned char>(lit.text[i]);
    }
    if (!equal) continue;
    found = true;
    if (out == nullptr) return true;
    const std::pair<int, int>& candidate = entries[lit.entry];
    if (std::find(out->begin() + first, out->end(), candidate) == out->end()) {
      out->push_back(candidate);
    }
  }
  return found;
}

namespace {
#if defined(__SSE2__)
// Bit b of the result: byte b of the 16 at `p` is one of the anchors. K > 0: the first K of
// `anchors`, held in registers (the loop over them unrolled); K == 0: all `count`.
template <int K>
struct AnchorMatcher {
  explicit AnchorMatcher(const std::array<char, 16>* anchors, size_t count)
      : anchors(anchors), count(count) {
    for (int j = 0; j < K; ++j) {
      in_registers[j] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(anchors[j].data()));
    }
  }
  uint32_t operator()(const char* p) const {
    const __m128i block =
        _mm_or_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), _mm_set1_epi8(0x20));
    __m128i eq = _mm_setzero_si128();
    if constexpr (K > 0) {
#pragma GCC unroll 8
      for (int j = 0; j < K; ++j) eq = _mm_or_si128(eq, _mm_cmpeq_epi8(block, in_registers[j]));
    } else {
      for (size_t j = 0; j < count; ++j) {
        const __m128i anchor =
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(anchors[j].data()));
        eq = _mm_or_si128(eq, _mm_cmpeq_epi8(block, anchor));
      }
    }
    return static_cast<uint32_t>(_mm_movemask_epi8(eq));
  }
  const std::array<char, 16>* anchors;
  size_t count;
  __m128i in_registers[K > 0 ? K : 1];
};

// Calls `at(base + b)` for each bit b of `mask`, lowest first, until it returns true (then true).
template <typename At>
bool VisitMask(size_t base, uint32_t mask, At& at) {
  for (; mask != 0; mask &= mask - 1) {
    if (at(base + static_cast<size_t>(__builtin_ctz(mask)))) return true;
  }
  return false;
}

// Calls `at(pos)` for each position of `text` (at least 16 bytes) holding an anchor, in order,
// until it returns true (then true). 16 bytes at a time; the last block overlaps the one before
// it, with the positions already seen masked off.
template <int K, typename At>
bool ScanAnchors(absl::string_view text, const std::array<char, 16>* anchors, size_t count,
                 At& at) {
  const AnchorMatcher<K> match(anchors, count);
  const size_t n = text.size();
  auto visit = [&at](size_t base, uint32_t mask) { return VisitMask(base, mask, at); };
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    if (visit(i, match(text.data() + i))) return true;
  }
  if (i < n) {
    const size_t last = n - 16;
    return visit(i, match(text.data() + last) >> (i - last));
  }
  return false;
}
#endif

#if defined(PALISADE_GATE_AVX2)
// ScanAnchors 32 bytes at a time, for CPUs with AVX2 (`text` at least 32 bytes): the same
// compares, half the blocks. No lambda holds an intrinsic: a lambda's body does not take the
// function's target, and the intrinsic would not compile there.
template <int K, typename At>
__attribute__((target("avx2"))) bool ScanAnchors32(absl::string_view text, const char* anchors,
                                                   size_t count, At& at) {
  __m256i in_registers[K > 0 ? K : 1];
  for (int j = 0; j < K; ++j) in_registers[j] = _mm256_set1_epi8(anchors[j]);
  const __m256i case_bit = _mm256_set1_epi8(0x20);
  const size_t n = text.size();
  auto visit = [&at](size_t base, uint32_t mask) { return VisitMask(base, mask, at); };
  size_t i = 0;
  const size_t last = n - 32;
  while (true) {
    const size_t at_byte = i + 32 <= n ? i : last;
    const __m256i block = _mm256_or_si256(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(text.data() + at_byte)), case_bit);
    __m256i eq = _mm256_setzero_si256();
    if constexpr (K > 0) {
#pragma GCC unroll 8
      for (int j = 0; j < K; ++j) eq = _mm256_or_si256(eq, _mm256_cmpeq_epi8(block, in_registers[j]));
    } else {
      for (size_t j = 0; j < count; ++j) {
        eq = _mm256_or_si256(eq, _mm256_cmpeq_epi8(block, _mm256_set1_epi8(anchors[j])));
      }
    }
    const uint32_t mask = static_cast<uint32_t>(_mm256_movemask_epi8(eq));
    if (at_byte == i) {
      if (visit(i, mask)) return true;
      i += 32;
      if (i == n) return false;
    } else {  // the last, overlapping block: the positions before `i` were seen
      return visit(i, mask >> (i - last));
    }
  }
}
#endif
}  // namespace

bool LiteralGate::Scan(absl::string_view text, const std::vector<std::pair<int, int>>& entries,
                       std::vector<std::pair<int, int>>* out) const {
  const size_t first = out == nullptr ? 0 : out->size();
  bool found = false;
  // True to stop: a literal found and nothing to collect.
  auto at = [&](size_t pos) {
    if (!At(text, pos, entries, out, first)) return false;
    found = true;
    return out == nullptr;
  };
  // `scan` called with K (std::integral_constant) for `count` anchors: the scans keep up to six
  // in registers, more in memory (K 0).
  const auto by_count = [](size_t count, auto scan) {
    switch (count) {
      case 1: scan(std::integral_constant<int, 1>()); break;
      case 2: scan(std::integral_constant<int, 2>()); break;
      case 3: scan(std::integral_constant<int, 3>()); break;
      case 4: scan(std::integral_constant<int, 4>()); break;
      case 5: scan(std::integral_constant<int, 5>()); break;
      case 6: scan(std::integral_constant<int, 6>()); break;
      default: scan(std::integral_constant<int, 0>()); break;
    }
  };
#if defined(PALISADE_GATE_AVX2)
  if (wide_ && text.size() >= 32 && !anchors_.empty()) {
    by_count(anchors_.size(), [&](auto k) {
      ScanAnchors32<decltype(k)::value>(text, anchors_.data(), anchors_.size(), at);
    });
    return found;
  }
#endif
#if defined(__SSE2__)
  if (text.size() >= 16 && !vectors_.empty()) {
    by_count(vectors_.size(), [&](auto k) {
      ScanAnchors<decltype(k)::value>(text, vectors_.data(), vectors_.size(), at);
    });
    return found;
  }
#endif
  for (size_t i = 0; i < text.size(); ++i) {
    if (by_byte_[Fold(static_cast<unsigned char>(text[i]))].empty()) continue;
    if (at(i)) break;
  }
  return found;
}

RE2::Options PalisadeRe2Options() {
  RE2::Options options;
  options.set_log_errors(false);
  options.set_max_mem(8 << 20);
  return options;
}

namespace {
#if defined(__SSE2__)
// Bit i: byte i of the 16 at `p` is one of an address's, [0-9A-Fa-f:.]. '0' to ':' are
// contiguous (0x30-0x3a); a byte | 0x20 is in 'a'-'f' only for the hex letters of either case.
uint32_t AddressBytes16(const unsigned char* p) {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  // v in [lo, lo + span], unsigned: v - lo (wrapping) is at most span.
  const auto in_range = [](__m128i v, char lo, char span) {
    const __m128i d = _mm_sub_epi8(v, _mm_set1_epi8(lo));
    return _mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(span)), d);
  };
  const __m128i digit_or_colon = in_range(x, '0', ':' - '0');
  const __m128i hex_letter = in_range(_mm_or_si128(x, _mm_set1_epi8(0x20)), 'a', 'f' - 'a');
  const __m128i dot = _mm_cmpeq_epi8(x, _mm_set1_epi8('.'));
  return static_cast<uint32_t>(
      _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(digit_or_colon, hex_letter), dot)));
}
#endif
}  // namespace

bool CompiledRule::LeadingKey(int p, absl::string_view message, absl::string_view* key,
                              LeadingRun* run) const {
  if (leading_key_max[p] == 0) return false;
  const std::array<bool, 256>& in = leading_key_bytes[p];
  const unsigned char* const s = reinterpret_cast<const unsigned char*>(message.data());
  const size_t size = message.size();
  size_t n = 0;
  // The run of `n` class bytes is the key, if its length can be a match's.
  const auto key_of_length = [&](size_t n) {
    if (n < leading_key_min[p] || n > leading_key_max[p]) return false;
    *key = message.substr(0, n);
    return true;
  };
  const bool address = leading_key_address[p];
  if (address && run != nullptr && run->text == message.data() && run->size == size) {
    return key_of_length(run->run);
  }
  const auto address_run = [&](size_t n) {
    if (run != nullptr) *run = LeadingRun{message.data(), size, n};
    return key_of_length(n);
  };
#if defined(__SSE2__)
  // An address's bytes, 16 a step while 16 remain (an IPv4 address ends in the first block).
  if (address) {
    for (; n + 16 <= size; n += 16) {
      const uint32_t outside = ~AddressBytes16(s + n) & 0xffff;
      if (outside != 0) return address_run(n + static_cast<size_t>(__builtin_ctz(outside)));
    }
    // Fewer than 16 bytes left, all of the class so far: the loops below read on.
  }
#endif
  // Four bytes a step while all four are key bytes (an address is 7 to 39 of them), then one.
  while (n + 4 <= size && in[s[n]] & in[s[n + 1]] & in[s[n + 2]] & in[s[n + 3]]) n += 4;
  while (n < size && in[s[n]]) ++n;
  return address ? address_run(n) : key_of_length(n);
}

absl::StatusOr<LoadedPack> ParseRulePack(absl::string_view text, absl::string_view file) {
  LoadedPack out;
  out.file = std::string(file);
  google::protobuf::TextFormat::Parser parser;
  CollectingErrors errors(file);
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(text), &out.pack)) {
    return absl::InvalidArgumentError(errors.first().empty() ? absl::StrCat(file, ": parse error")
                                                             : errors.first());
  }
  if (out.pack.name().empty()) out.pack.set_name(BaseName(file));
  return out;
}

namespace {

// The whole of a regular file. An ifstream opens a directory and reads it as 0 bytes, and a read
// error mid-file looked like its end: either parsed as an empty (or cut) pack. O_NONBLOCK: a FIFO
// is refused by fstat instead of blocking the open until a writer comes.
absl::StatusOr<std::string> ReadPackFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open rule pack (", std::strerror(errno), ")"));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": rule pack is not a regular file"));
  }
  std::string text;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return absl::UnavailableError(
          absl::StrCat(path, ": cannot read rule pack (", std::strerror(err), ")"));
    }
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return text;
}

}  // namespace

absl::StatusOr<LoadedPack> LoadRulePackFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadPackFile(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<LoadedPack> pack = ParseRulePack(*text, path);
  if (!pack.ok()) return pack;
  // A pack file is there for its rules: one with none is a file caught mid-write (truncated, not
  // yet written) or emptied by mistake, and a reload that took it would drop that pack's rules
  // and their windows. Refused, so the reload is and the running rules stay.
  if (pack->pack.rules().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": pack has no rules"));
  }
  // Both checks on one compile and one parse of each pattern; the compiled patterns go on with
  // the pack, for Compile.
  auto patterns = std::make_shared<PackPatterns>();
  if (absl::Status s = CheckKeyAnchoringWith(*pack, *patterns); !s.ok()) return s;
  if (absl::Status s = CheckExamplesMatchWith(*pack, *patterns); !s.ok()) return s;
  pack->checked = std::move(patterns);
  return pack;
}

namespace {
absl::Status CheckExamplesMatchWith(const LoadedPack& pack, PackPatterns& compiled) {
  const absl::Time reference = absl::FromUnixSeconds(1'772'000'000);  // 2026-02-25
  for (const Rule& rule : pack.pack.rules()) {
    if (rule.formats().empty()) continue;  // Compile names it
    std::vector<const RE2*> patterns;
    for (const std::string& p : rule.patterns()) {
      const RE2& re = compiled.Regex(p);
      if (!re.ok()) return absl::OkStatus();  // Compile names the RE2 error
      patterns.push_back(&re);
    }
    for (int e = 0; e < rule.examples_size(); ++e) {
      const palisade::v1::Example& example = rule.examples(e);
      const LogFormat format = example.format() != LogFormat::LOG_FORMAT_UNSPECIFIED
                                   ? example.format()
                                   : static_cast<LogFormat>(rule.formats(0));
      // A session example holds the connection's lines; its last is the one that matches.
      absl::string_view line = example.line();
      if (size_t nl = line.rfind('\n'); nl != absl::string_view::npos) line = line.substr(nl + 1);
      const std::string where = absl::StrCat(pack.file, ": pack \"", pack.pack.name(),
                                             "\": rule \"", rule.id(), "\": example ", e + 1);
      LineParser parser(format);
      ParsedLine parsed;
      if (absl::Status s = parser.Parse(line, reference, &parsed); !s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, " is not a ", FormatName(format), " line: ", s.message()));
      }
      bool any = false;
      // The message as the engine hands it to the rules: an access line's escapes of readable
      // characters decoded.
      std::string decoded;
      absl::string_view text = parsed.message;
      if (ReadsEscapesDecoded(format, text) && DecodeReadableEscapes(text, &decoded)) {
        text = decoded;
      }
      if (!rule.field().empty()) {
        if (parsed.record == nullptr || !parsed.record->Find(rule.field(), &text)) {
          return absl::InvalidArgumentError(absl::StrCat(where, ": the record has no field \"",
                                                         rule.field(), "\" (or has it twice)"));
        }
        // An access record's field is read decoded too (Engine::RuleText).
        std::string field;
        if (ReadsEscapesDecoded(format, parsed.message) && DecodeReadableEscapes(text, &field)) {
          decoded = std::move(field);
          text = decoded;
        }
      }
      const re2::StringPiece message(text.data(), text.size());
      for (const RE2* re : patterns) any = any || RE2::PartialMatch(message, *re);
      if (!any) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": no pattern matches it, as ", FormatName(format),
            " hands it to the rules (message: \"", parsed.message.substr(0, 120),
            "\"); a pattern anchored at a part the parser strips (a syslog header, a time "
            "stamp) can never match"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<const RuleSet>> RuleSet::Compile(
    const std::vector<LoadedPack>& packs, const CidrSets& sets, const RuleSetOptions& options) {
  std::shared_ptr<RuleSet> set(new RuleSet());
  set->sets_ = sets;
  absl::flat_hash_set<std::string> ids;
  absl::flat_hash_set<std::string> pack_names;
  // Each rule compiled on its own (CompileRule reads nothing but its pack and the CIDR sets), on
  // options.threads threads, then taken in order below: the first error is the one a compile in
  // order meets. Per rule (as rules_), per pattern: its required literals, from CompileRule's
  // parse.
  std::vector<std::pair<const LoadedPack*, const Rule*>> all_rules;
  for (const LoadedPack& pack : packs) {
    for (const Rule& rule : pack.pack.rules()) all_rules.emplace_back(&pack, &rule);
  }
  std::vector<absl::StatusOr<std::unique_ptr<CompiledRule>>> compiled_rules(all_rules.size());
  std::vector<std::vector<std::vector<std::string>>> literals(all_rules.size());
  ParallelFor(all_rules.size(), options.threads, [&](size_t k) {
    compiled_rules[k] = CompileRule(*all_rules[k].first, *all_rules[k].second, set->sets_,
                                    options.prefilter ? &literals[k] : nullptr);
  });
  size_t next_rule = 0;
  for (const LoadedPack& pack : packs) {
    if (!pack_names.insert(pack.pack.name()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(pack.file, ": pack name \"", pack.pack.name(), "\" is loaded twice"));
    }
    set->pack_names_.push_back(pack.pack.name());
    for (int i = 0; i < pack.pack.rules_size(); ++i) {
      const Rule& rule = pack.pack.rules(i);
      if (!ValidId(rule.id())) {
        return absl::InvalidArgumentError(absl::StrCat(
            pack.file, ": rule ", i + 1, ": id \"", rule.id(), "\" must match [a-z0-9_-]{1,64}"));
      }
      if (!ids.insert(rule.id()).second) {
        return RuleError(pack, rule.id(), "duplicate rule id");
      }
      absl::StatusOr<std::unique_ptr<CompiledRule>>& compiled = compiled_rules[next_rule++];
      if (!compiled.ok()) return compiled.status();
      if ((*compiled)->has_session && (*compiled)->session_by_pid) {
        set->uses_pid_sessions_ = true;
        // The programs whose pid sessions this rule reads (AppliesToProgram): all of them when
        // it names none or applies to a format whose lines are not filtered by program.
        bool any = rule.programs().empty();
        for (int f : rule.formats()) {
          any = any || (f != LogFormat::LOG_FORMAT_SYSLOG && f != LogFormat::LOG_FORMAT_SYSLOG5424);
        }
        set->pid_session_any_program_ = set->pid_session_any_program_ || any;
        for (const std::string& program : rule.programs()) {
          if (std::find(set->pid_session_programs_.begin(), set->pid_session_programs_.end(),
                        program) == set->pid_session_programs_.end()) {
            set->pid_session_programs_.push_back(program);
          }
        }
      }
      if (!options.leading_keys) {
        for (uint32_t& max : (*compiled)->leading_key_max) max = 0;
        for (auto& split : (*compiled)->key_split) split.reset();
      }
      set->rules_.push_back(*std::move(compiled));
    }
  }

  // Per format: the gated part (patterns with good required literals) and up to two Sets over
  // the other patterns that apply to it.
  const int max_format = palisade::v1::LogFormat_MAX;
  set->by_format_.resize(max_format + 1);
  RE2::Options set_options = PalisadeRe2Options();
  set_options.set_max_mem(64 << 20);
  // Required literals per (rule, pattern), computed once; empty: the pattern stays in a Set.
  std::vector<std::vector<std::vector<std::string>>> gated(set->rules_.size());
  for (size_t r = 0; r < set->rules_.size(); ++r) {
    const Rule& proto = set->rules_[r]->proto;
    gated[r].resize(proto.patterns_size());
    if (!options.prefilter) continue;
    for (int p = 0; p < proto.patterns_size(); ++p) {
      std::vector<std::string>& required = literals[r][p];
      if (required.empty()) continue;
      const size_t min_length = set->rules_[r]->anchored_start[p]
                                    ? options.min_literal_anchored
                                    : options.min_literal_unanchored;
      bool long_enough = true;
      for (const std::string& l : required) long_enough &= l.size() >= min_length;
      if (long_enough) gated[r][p] = std::move(required);
    }
  }
  // Start bytes of the anchored ignore patterns, parsed once (SetPart::first_bytes).
  std::map<std::string, std::pair<bool, CharSet>> ignore_starts;
  // Whether an ignore pattern is anchored at the start in every alternative (as
  // CompiledRule::anchored_start), parsed once.
  std::map<std::string, bool> ignore_anchors;
  auto ignore_anchored = [&ignore_anchors](const std::string& pattern) {
    auto [known, added] = ignore_anchors.try_emplace(pattern, false);
    if (added) {
      const absl::StatusOr<ReNode> root = ParseRegex(pattern);
      known->second = root.ok() && Anchored(*root, /*at_start=*/true);
    }
    return known->second;
  };
  // Every Set compiled so far, by its anchoring and its patterns in order (see below).
  using SetKey = std::pair<bool, std::vector<std::string>>;
  std::map<SetKey, std::shared_ptr<const RE2::Set>> built_sets;
  std::map<SetKey, std::shared_ptr<const SetDfa>> built_dfas;  // null: SetDfa refused them
  // The Sets are the costly part of a load (RE2::Set::Compile: ~320 M instructions of the ~1 G
  // with every pack). With options.threads > 1, a first pass over the formats only notes the
  // Sets it would build (`planning`, `planned`); they are compiled on the threads, and the pass
  // that builds the indexes finds them built. One that failed is built again in order, where
  // the error is what a load in order gives.
  bool planning = false;
  std::set<SetKey> planned;
  auto index_formats = [&]() -> absl::Status {
    for (int f = 1; f <= max_format; ++f) {
      if (!options.formats.empty() &&
          std::find(options.formats.begin(), options.formats.end(), f) == options.formats.end()) {
        continue;
      }
      auto index = std::make_unique<FormatIndex>();
      // Rules for COMBINED read the JSON access logs too: their records are rendered as combined
      // lines (services/formats/json_parser.h). And the vhost-prefixed access log, whose message
      // is the combined line without the vhost. Field rules go by the field, not in the Sets.
      const bool combined_too = RendersCombined(static_cast<LogFormat>(f)) ||
                                f == LogFormat::LOG_FORMAT_COMBINED_VHOST;
      auto applies = [f, combined_too](const CompiledRule& rule) {
        if (!rule.proto.field().empty()) return false;
        for (int rf : rule.proto.formats()) {
          if (rf == f || (combined_too && rf == LogFormat::LOG_FORMAT_COMBINED)) return true;
        }
        return false;
      };
      for (size_t r = 0; r < set->rules_.size(); ++r) {
        const Rule& proto = set->rules_[r]->proto;
        if (proto.field().empty()) continue;
        for (int rf : proto.formats()) {
          if (rf == f) {
            index->field_rules.push_back(static_cast<int>(r));
            break;
          }
        }
      }
      // SetPart::programs: on syslog formats, the programs every rule behind the part's members
      // names, when all of them name some.
      const bool by_program =
          f == LogFormat::LOG_FORMAT_SYSLOG || f == LogFormat::LOG_FORMAT_SYSLOG5424;
      auto programs_of = [&](const SetPart& part) {
        std::vector<std::string> programs;
        if (!options.skip_parts || !by_program) return programs;
        std::vector<int> behind = part.ignore_rules;
        for (const auto& [r, p] : part.entries) behind.push_back(r);
        for (int r : behind) {
          const auto& named = set->rules_[r]->proto.programs();
          if (named.empty()) return std::vector<std::string>();
          programs.insert(programs.end(), named.begin(), named.end());
        }
        std::sort(programs.begin(), programs.end());
        programs.erase(std::unique(programs.begin(), programs.end()), programs.end());
        return programs;
      };
      SetPart gate_part;
      std::vector<std::pair<std::string, int>> literals;
      for (size_t r = 0; r < set->rules_.size(); ++r) {
        if (!applies(*set->rules_[r])) continue;
        for (size_t p = 0; p < gated[r].size(); ++p) {
          if (gated[r][p].empty()) continue;
          const int entry = static_cast<int>(gate_part.entries.size());
          gate_part.entries.emplace_back(static_cast<int>(r), static_cast<int>(p));
          for (const std::string& l : gated[r][p]) literals.emplace_back(l, entry);
        }
      }
      if (!gate_part.entries.empty()) {
        gate_part.gate = std::make_unique<LiteralGate>(literals);
        gate_part.programs = programs_of(gate_part);
        index->parts.push_back(std::move(gate_part));
      }
      std::vector<bool> ignores_outside(set->rules_.size());
      for (bool anchored : {true, false}) {
        SetPart part;
        // The Set's patterns in the order they are added (their indices), and how an error in
        // each is named.
        std::vector<std::string> members;
        std::vector<std::string> member_names;
        // SetPart::first_bytes: the members' start bytes (CompiledRule::start_bytes).
        bool starts_known = anchored;
        CharSet starts;
        for (size_t r = 0; r < set->rules_.size(); ++r) {
          const CompiledRule& rule = *set->rules_[r];
          if (!applies(rule)) continue;
          for (int p = 0; p < rule.proto.patterns_size(); ++p) {
            if (!gated[r][p].empty()) continue;
            const std::string& pattern = rule.proto.patterns(p);
            if (static_cast<bool>(rule.anchored_start[p]) != anchored) continue;
            members.push_back(pattern);
            member_names.push_back(absl::StrCat("rule \"", rule.id(), "\": pattern ", p + 1));
            part.entries.emplace_back(static_cast<int>(r), p);
            starts_known = starts_known && rule.start_bytes[p].first;
            starts |= rule.start_bytes[p].second;
          }
        }
        // The ignore patterns after the rules' patterns (SetPart::ignore_rules), each in the Set
        // of its own anchoring, whichever part holds the rule's patterns; none in a Set that holds
        // no rule's pattern (FormatIndex::ignores_in_sets).
        for (size_t r = 0; r < set->rules_.size() && options.ignores_in_sets; ++r) {
          const CompiledRule& rule = *set->rules_[r];
          if (!applies(rule)) continue;
          for (int i = 0; i < rule.proto.ignore_patterns_size(); ++i) {
            const std::string& pattern = rule.proto.ignore_patterns(i);
            if (ignore_anchored(pattern) != anchored) continue;
            if (part.entries.empty()) {
              ignores_outside[r] = true;
              continue;
            }
            members.push_back(pattern);
            member_names.push_back(absl::StrCat("rule \"", rule.id(), "\": ignore pattern ", i + 1));
            part.ignore_rules.push_back(static_cast<int>(r));
            if (anchored && options.skip_parts) {
              auto known = ignore_starts.try_emplace(pattern, false, CharSet());
              if (known.second) {
                const absl::StatusOr<ReNode> root = ParseRegex(pattern);
                known.first->second.first =
                    root.ok() && StartBytes(*root, &known.first->second.second);
              }
              starts_known = starts_known && known.first->second.first;
              starts |= known.first->second.second;
            }
          }
        }
        if (part.entries.empty() && part.ignore_rules.empty()) continue;
        // A Set with the same anchoring and the same patterns in the same order as one built for
        // an earlier format is that Set: the JSON access-log formats read the combined rules, and
        // their Sets were compiled again for each (5 of the 13 Sets with every pack).
        auto build = [&](const std::vector<std::string>& texts)
            -> absl::StatusOr<std::shared_ptr<const RE2::Set>> {
          std::shared_ptr<const RE2::Set>& same = built_sets[{anchored, texts}];
          if (same != nullptr) return same;
          if (planning) {
            planned.emplace(anchored, texts);
            return std::shared_ptr<const RE2::Set>();
          }
          auto compiled = std::make_shared<RE2::Set>(
              set_options, anchored ? RE2::ANCHOR_START : RE2::UNANCHORED);
          for (size_t m = 0; m < texts.size(); ++m) {
            std::string error;
            if (compiled->Add(texts[m], &error) < 0) {
              return absl::InvalidArgumentError(
                  absl::StrCat(member_names[m], " rejected by RE2::Set: ", error));
            }
          }
          if (!compiled->Compile()) {
            return absl::ResourceExhaustedError(
                absl::StrCat("the patterns for ", palisade::v1::LogFormat_Name(f),
                             " do not fit the regex memory budget; split or simplify them"));
          }
          same = std::move(compiled);
          return same;
        };
        absl::StatusOr<std::shared_ptr<const RE2::Set>> built = build(members);
        if (!built.ok()) return built.status();
        part.set = *std::move(built);
        if (options.own_dfa && !planning) {
          const SetKey key{anchored, members};
          auto [known, added] = built_dfas.try_emplace(key);
          if (added) {
            absl::StatusOr<std::unique_ptr<const SetDfa>> dfa = SetDfa::Build(key.second, anchored);
            if (dfa.ok()) known->second = *std::move(dfa);
          }
          part.dfa = known->second;
        }
        part.programs = programs_of(part);
        if (anchored && options.skip_parts && starts_known) {
          WidenToRe2(&starts);
          part.first_bytes_known = true;
          part.first_bytes = starts;
        }
        index->parts.push_back(std::move(part));
      }
      index->ignores_in_sets.resize(set->rules_.size());
      for (size_t r = 0; r < set->rules_.size(); ++r) {
        index->ignores_in_sets[r] = options.ignores_in_sets && applies(*set->rules_[r]) &&
                                    !set->rules_[r]->ignores.empty() && !ignores_outside[r];
      }
      if (!index->parts.empty() || !index->field_rules.empty()) {
        set->by_format_[f] = std::move(index);
      }
    }
    return absl::OkStatus();
  };
  if (options.threads > 1) {
    planning = true;
    absl::Status planned_ok = index_formats();
    if (!planned_ok.ok()) return planned_ok;
    planning = false;
    const std::vector<SetKey> keys(planned.begin(), planned.end());
    std::vector<std::shared_ptr<RE2::Set>> compiled(keys.size());
    ParallelFor(keys.size(), options.threads, [&](size_t k) {
      auto one = std::make_shared<RE2::Set>(
          set_options, keys[k].first ? RE2::ANCHOR_START : RE2::UNANCHORED);
      std::string error;  // named by the pass in order, if it fails there too
      for (const std::string& text : keys[k].second) {
        if (one->Add(text, &error) < 0) return;
      }
      if (one->Compile()) compiled[k] = std::move(one);
    });
    for (size_t k = 0; k < keys.size(); ++k) {
      if (compiled[k] != nullptr) built_sets[keys[k]] = std::move(compiled[k]);
    }
    for (auto& format : set->by_format_) format.reset();
  }
  absl::Status indexed = index_formats();
  if (!indexed.ok()) return indexed;
  return std::shared_ptr<const RuleSet>(std::move(set));
}

const RuleSet::FormatIndex* RuleSet::ForFormat(palisade::v1::LogFormat format) const {
  int f = static_cast<int>(format);
  if (f <= 0 || f >= static_cast<int>(by_format_.size())) return nullptr;
  return by_format_[f].get();
}

}  // namespace palisade
