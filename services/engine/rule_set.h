// Rule packs, loaded and compiled. A RuleSet is the immutable, compiled form of every loaded
// pack: per log format, RE2::Sets over the patterns of all rules for that format (anchored
// patterns in an anchored Set, the rest in an unanchored one: the passes each line gets), a
// literal prefilter for the unanchored patterns that have required literals (they skip the
// Sets: see SetPart), plus each rule's capturing regexes, run only for the candidates.
//
// Loading is all or nothing: an invalid regex, a missing key group, an unknown field or a
// duplicate id refuses the whole set, with an error naming the file, the rule id and the reason.
//
// Key anchoring (issue 12, "choosing the victim"): a pack read from a file (LoadRulePackFile: the
// daemon's config and reloads, palisadectl, the pack test) is also refused when a rule lets the
// writer of a line choose its key. `Failed password for x from V port 22 from A port 1 ssh2` is
// what sshd writes when A tries the user name "x from V port 22"; a pattern that takes the user
// lazily (`for (?P<user>.*?) from (?P<ip>...) port`) with nothing pinning the end bans V. The
// criterion, per pattern (see KeyPlacement):
//   refused  when the key group follows a variable-length field (a repetition of unbounded or
//            variable length, such as `.*`, `.+?`, `\S+`, `[^ ]*`, `\w{1,32}`, or an unanchored
//            start, which RE2 runs as a leading `.*?`), a client can write that field, and so
//            can write a copy of the text that introduces the key;
//   unless   the pattern is pinned to the end after the key: a `$` (or `\z`, outside (?m)) that
//            the match must reach through pieces that cannot re-cross the text introducing the
//            key (for ` from (?P<ip>...) port \d+ ssh2$`: `\d+` cannot take the space of
//            " from "), so the key is the one in the fixed tail the server appends; or the key
//            group matches a single string (`(?P<path>/login)`), which no writer can vary; or the
//            rule sets `unanchored_key_reason` (never for an address key).
// A field before the key that cannot be written by a client (a pid, a timestamp) is refused all
// the same: the check reads syntax, not intent, and anchoring such a rule costs nothing.
// The analysis parses RE2 syntax here (libre2-dev 20220601 in Debian does not ship re2/regexp.h,
// so RE2's own parse tree is not reachable); patterns are first compiled by RE2, and anything
// the parser does not understand is refused, never waved through.
// Packs built in memory (ParseRulePack, e.g. test fixtures, Admin.TestRules) are not checked
// unless the caller runs CheckKeyAnchoring.
// The running rules are untouched by a failed load; the server swaps a new RuleSet in only after
// Compile succeeded.
//
// Thread-safety: a RuleSet is immutable once built; share it through shared_ptr<const RuleSet>.
#ifndef PALISADE_SERVICES_ENGINE_RULE_SET_H_
#define PALISADE_SERVICES_ENGINE_RULE_SET_H_

#include <array>
#include <bitset>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "palisade/v1/rules.pb.h"
#include "re2/re2.h"
#include "re2/set.h"
#include "services/common/ip.h"
#include "services/engine/set_dfa.h"


namespace palisade {

class PackPatterns;  // rule_set.cc: a pack's patterns, compiled and parsed once for its checks

// A pack and the file it came from (for error messages).
struct LoadedPack {
  std::string file;
  palisade::v1::RulePack pack;
  // The pack's patterns as LoadRulePackFile's checks compiled (RE2) and parsed (regex_tree)
  // them: RuleSet::Compile takes these instead of compiling and parsing each pattern again (a
  // fifth of loading every pack). Null for a pack only parsed: Compile then does it all.
  std::shared_ptr<const PackPatterns> checked;
};

// Parses a textproto RulePack strictly: unknown fields and syntax errors are refused with
// "file:line:column: reason". The pack name defaults to the file's base name.
absl::StatusOr<LoadedPack> ParseRulePack(absl::string_view text, absl::string_view file);
// ParseRulePack on the file's contents, then CheckKeyAnchoring. The file must be a regular one
// that reads whole (kInvalidArgument naming it otherwise: a directory, or a FIFO, opened without
// blocking; kUnavailable: a read error) and hold at least one rule ("FILE: pack has no rules"):
// an empty (or ruleless) file is one caught mid-write, and a reload that took it would drop the
// pack's rules.
absl::StatusOr<LoadedPack> LoadRulePackFile(const std::string& path);

// Where a pattern's key group sits relative to the fields a line's writer controls.
struct KeyPlacement {
  // The key group follows a variable-length field or an unanchored start; `field` quotes the
  // first such piece of the pattern (e.g. ".*?") or says "an unanchored start".
  bool follows_field = false;
  std::string field;
  // After the key the match must reach `$`/`\z` through pieces that cannot re-cross the
  // literal text that introduces the key (for a key with no literal before it: through no
  // repetition at all).
  bool pinned_to_end = false;
  // The key group matches exactly one string.
  bool literal_key = false;
  // Some repetition outside the key group can take more than digits and whitespace: a field a
  // client may write (user name, path, header, reason). The pack test asks such rules for an
  // injection example (Example.smuggled_key).
  bool has_free_text_field = false;

  // Whether the writer of a line cannot choose the key.
  bool safe() const { return !follows_field || pinned_to_end || literal_key; }
};

// Analyses `pattern` for the capture group named `key`. kInvalidArgument when the pattern does
// not compile, has no such group, or uses syntax the analysis does not understand.
absl::StatusOr<KeyPlacement> AnalyzeKeyPlacement(absl::string_view pattern,
                                                 absl::string_view key);

// Refuses (kInvalidArgument, naming the file, the pack, the rule id and the pattern) the first
// rule with a pattern whose KeyPlacement is not safe(), unless the rule sets
// unanchored_key_reason; refuses that field on an address key. Patterns that do not compile are
// left to RuleSet::Compile, which names the RE2 error.
absl::Status CheckKeyAnchoring(const LoadedPack& pack);

// The prefilter (issue 13 §4). Strings every match of `pattern` contains one of, ASCII letters
// lowercased (compare without case: a superset of what a case-sensitive pattern matches); empty
// when no such set is known (an alternative could be empty, or a piece is a wide class).
// kInvalidArgument when the pattern does not compile or uses syntax the parse tree does not
// model; the caller then treats the pattern as having no literals.
absl::StatusOr<std::vector<std::string>> RequiredLiterals(absl::string_view pattern);

// Finds which of a set of literals occur in a text, without case, in one pass that compares
// 32 bytes at a time (16 without AVX2), with bit 0x20 set in each (a letter's two cases one byte), against one byte
// of each literal (the one least common in log text, as ByteCost guesses, but its last, unless
// another literal already looks for a rare byte it holds), and checks the literals of that byte
// only where it stands before a byte one of them has next (or after one a literal ending there
// has before it).
// Allocates nothing.
// Immutable once built: Scan may run concurrently.
class LiteralGate {
 public:
  // How many bytes Scan compares at a time: 32 where the CPU has AVX2 (kWidest), else 16
  // (kSse2: the gate a CPU without AVX2 runs, which tests build to compare the two).
  enum class Width { kWidest, kSse2 };
  // (literal, entry): entry indexes the `entries` Scan is given. Empty literals are skipped.
  explicit LiteralGate(const std::vector<std::pair<std::string, int>>& literals,
                       Width width = Width::kWidest);

  // Whether some literal occurs in `text`. With `out`, appends entries[e] for every literal
  // found (once each: an entry already appended since the call began is not appended again).
  bool Scan(absl::string_view text, const std::vector<std::pair<int, int>>& entries,
            std::vector<std::pair<int, int>>* out) const;
  size_t literal_count() const { return literals_.size(); }
  // The distinct bytes Scan compares each block of a text with.
  size_t anchor_count() const { return anchors_.size(); }

 private:
  struct Literal {
    std::string text;  // lowercased
    int entry = 0;
    uint32_t offset = 0;  // of the byte looked for
  };
  bool At(absl::string_view text, size_t pos, const std::vector<std::pair<int, int>>& entries,
          std::vector<std::pair<int, int>>* out, size_t first) const;
  std::vector<Literal> literals_;
  std::vector<uint32_t> by_byte_[256];  // byte | 0x20 -> literals looked up
  std::bitset<256> next_[256];          // byte | 0x20 -> the bytes | 0x20 after it in those
  std::bitset<256> prev_[256];          // ... and before it in those it ends
  std::vector<char> anchors_;           // the bytes looked for
  std::vector<std::array<char, 16>> vectors_;  // each anchor repeated 16 times
  bool wide_ = false;  // Scan compares 32 bytes at a time (AVX2)
};

// Where `intro` (a key split's introducer, CompiledRule::KeySplit) next occurs in `text` at or
// after `from`; npos when it does not. Exposed for its test.
size_t FindIntro(absl::string_view text, size_t from, absl::string_view intro);

// Refuses (kInvalidArgument, naming the file, the pack, the rule and the example) a rule with an
// example that does not parse in its format or that none of its patterns matches as that format
// hands lines to the rules: such a rule can never match (e.g. a pattern anchored at the syslog
// header, which the parser strips). Only that a pattern matches is checked here; keys, ignore
// patterns and counter-examples are the pack test's (rules/pack_test.cc). LoadRulePackFile runs
// it, so a reload with such a pack is refused and the running rules stay.
absl::Status CheckExamplesMatch(const LoadedPack& pack);

// CIDR sets by name (from the config), for rule conditions.
using CidrSets = std::map<std::string, CidrSet>;

struct CompiledCondition {
  std::vector<int> group;  // per pattern
  const CidrSet* set = nullptr;  // a CIDR set condition, or
  std::string feed;              // a feed condition ("*": any feed)
  bool inside = false;           // in_set / in_feed (true) or not_in_set / not_in_feed (false)
};

struct CompiledRule {
  palisade::v1::Rule proto;
  std::string pack;
  // One capturing regex per pattern (shared with the load's checks and with other rules of the
  // pack that have the same pattern), and the index of the key group in each.
  std::vector<std::shared_ptr<const RE2>> patterns;
  std::vector<int> key_group;
  // Per pattern: how many submatches the captures and conditions need.
  std::vector<int> submatches;
  std::vector<CompiledCondition> conditions;
  std::vector<std::unique_ptr<RE2>> ignores;
  // Per ignore pattern: reads_end and anchored_end, as for the patterns below. On a line cut at
  // the daemon's cap an ignore match that ends at the cut may have leaned on `$` or `\z` there,
  // where the writer did not end the line (a name cut right after a forged "user=monitor"):
  // the engine does not apply it, and the line is judged by the rule's patterns.
  std::vector<char> ignore_reads_end;
  std::vector<char> ignore_anchored_end;
  bool ignores_read_end = false;  // some ignore_reads_end
  // Per pattern: when the key is the pattern's only capture the engine needs and leads it
  // (`^(?P<ip>[0-9A-Fa-f:.]+) ...`: a repetition of one ASCII class, followed by a byte outside
  // that class), the key of any match is the longest run of class bytes at the start, so a
  // match known from a Set needs no submatch engine (RE2's can cost microseconds on a long
  // line with a large pattern). `leading_key_bytes[b]`: b is in the class; empty: not such a
  // pattern. See LeadingKey().
  std::vector<std::array<bool, 256>> leading_key_bytes;
  std::vector<uint32_t> leading_key_min;
  std::vector<uint32_t> leading_key_max;  // UINT32_MAX: unbounded
  // Per pattern: the class is exactly an address's bytes, [0-9A-Fa-f:.] (every shipped web
  // rule's), which LeadingKey reads 16 bytes a step with SSE2 instead of a table lookup a byte.
  std::vector<char> leading_key_address;
  // Per pattern: whether every match starts at the start of the text, as its parse tree says
  // (`^` in every top-level alternative; false when the parser does not take it). Those go in
  // the anchored Set; `^a|b` does not.
  std::vector<char> anchored_start;
  // Per pattern: whether it holds an assertion that reads the end of the text, `$` (in any mode:
  // a (?m)$ matches at the end of the text too), `\z`, or `\b`/`\B` (true at the end after a
  // word byte), from its parse tree (or, when the tree does not take it, from its text: any of
  // them, the cautious side). A match that ends at the end of the
  // text may have leaned on one there; on a line cut at the daemon's cap (ParsedLine::cut) that
  // end is the cut, not the writer's, so the engine refuses such a pattern's match that ends
  // there (a forged ` ip=V` right before the cut is no key of `... ip=(?P<ip>...)$`). A match
  // ending before the text's end used no such assertion at the end, and stands.
  std::vector<char> reads_end;
  // Per pattern: whether every top-level alternative ends in `$` (not under (?m)) or `\z`
  // (false when the parser does not take it), so that every match ends at the text's end: on a
  // cut line every match would be refused, so the engine refuses it without running it.
  std::vector<char> anchored_end;
  // Per pattern anchored at the start (anchored_start): the bytes a match can start with, when
  // the parse tells and no match is empty (`first` true); for RuleSet::SetPart::first_bytes.
  std::vector<std::pair<bool, std::bitset<256>>> start_bytes;
  // The key of a match of pattern `p` known to exist, when that pattern has a leading key
  // (see above); false otherwise. `run`, when given, keeps the run of address bytes read at the
  // start of `message` (leading_key_address patterns), so that the next rule led by an address
  // reads none of it on the same text: the caller's, for one line (a buffer reused for another
  // line of the same length must not meet it).
  struct LeadingRun {
    const char* text = nullptr;
    size_t size = 0;
    size_t run = 0;
  };
  bool LeadingKey(int p, absl::string_view message, absl::string_view* key,
                  LeadingRun* run = nullptr) const;

  // Per pattern: a pattern `^H I(?P<key>...)T$` whose key group is a piece of the top-level
  // sequence right after fixed bytes I (the introducer: " from ", "rhost=", with no case
  // folding), with no flag group and no empty-width assertion but the outer ^ and $ (RuleSet
  // options: leading_keys). Every match then splits the line at a key start s that ends an
  // occurrence of I, with `^H I` matching [0, s) and `(?P<key>...)T$` matching [s, end). When
  // exactly one occurrence passes both, every parse has that split, and the key RE2 would report
  // for the whole pattern is the one the tail's own (leftmost-first) parse reports: found by a
  // DFA-only test of the head and an anchored capture of the tail (a one-pass regex, usually),
  // instead of RE2's submatch engine over the whole line (BitState with `.*?` user fields: about
  // 7,000 instructions per sshd line). See SplitKey(). Null: not such a pattern.
  struct KeySplit {
    std::string intro;
    std::unique_ptr<RE2> head;  // `^H I`, no captures needed
    std::unique_ptr<RE2> tail;  // `(?P<key>...)T$`: the key is its group 1
    // When the key group is a run of one ASCII class (`[0-9A-Fa-f:.]+`) and no byte of that
    // class can start T: the key of a split is the class's run at s, and the byte after the
    // run is one T can start with (`follow`; or the line ends there and T can be empty:
    // `follow_end`), or T's fixed first bytes when it has some (`follow_literal`, " port ":
    // the sharper test, used instead). Every split passes this test (RunAt), so the others are
    // never tried; a match known to exist (`proven`) with one occurrence of the introducer
    // that passes it has its split there, found with no regex at all. `run_max` 0: not such a
    // key.
    std::array<bool, 256> run_bytes{};
    std::array<bool, 256> follow{};
    bool follow_end = false;
    std::string follow_literal;
    uint32_t run_min = 0;
    uint32_t run_max = 0;
    // Whether the key run test above passes at key start `s`, and the run if so.
    bool RunAt(absl::string_view message, size_t s, absl::string_view* run) const;
  };
  std::vector<std::unique_ptr<KeySplit>> key_split;
  // With pattern `p`'s KeySplit: 1 and the key when exactly one split passes, 0 when none does
  // (the pattern does not match), -1 when more than one does, or too many occurrences of the
  // introducer or candidate splits to try (a hostile line): the caller asks RE2. `proven`: the caller knows the
  // pattern matches (a Set's hit), so a split that alone passes the tail needs no head test.
  int SplitKey(int p, absl::string_view message, bool proven, absl::string_view* key) const;

  // Rule.session (see rules.proto): whether the rule has one, whether it goes by the line's
  // program and pid, and otherwise the index of the `by` group in each pattern. A pattern of a
  // session rule may have no key group (key_group -1): its key comes from the session.
  bool has_session = false;
  bool session_by_pid = false;
  std::vector<int> session_group;
  uint32_t count = 1;
  absl::Duration window;
  absl::Duration duration;

  const std::string& id() const { return proto.id(); }
  // Rule.programs: checked on syslog lines only (RFC 3164, 5424), the formats whose lines name
  // their program; a rule for access logs and their syslog-relayed form lists "nginx" and still
  // matches the plain access log.
  // Inline: asked of every candidate, twice (Prematch, then the ordered step), and most rules
  // name no program.
  bool AppliesToProgram(palisade::v1::LogFormat format, absl::string_view program) const {
    if (proto.programs().empty()) return true;
    if (format != palisade::v1::LogFormat::LOG_FORMAT_SYSLOG &&
        format != palisade::v1::LogFormat::LOG_FORMAT_SYSLOG5424) {
      return true;
    }
    for (const std::string& p : proto.programs()) {
      if (p == program) return true;
    }
    return false;
  }
};

struct RuleSetOptions {
  // Patterns with good required literals skip the Sets: a LiteralGate finds their literals and
  // only the patterns whose literal occurs become candidates (see RuleSet::SetPart). false: every
  // pattern in a Set, as before the prefilter (kept for the test that compares both paths).
  bool prefilter = true;
  // CompiledRule::LeadingKey: the key of a pattern it leads is read without a submatch engine;
  // CompiledRule::SplitKey: the key after a fixed introducer through the pattern's head and
  // tail. false: every capture through RE2 (kept for the same test).
  bool leading_keys = true;
  // The shortest literal a pattern may be gated by, by whether it is anchored at the start
  // (CompiledRule::anchored_start) or not. Unanchored patterns each cost a Set pass over the
  // whole line, which a 3-byte literal absent from most lines saves. Anchored patterns stay in
  // their Set by default: its DFA stops at the first byte no pattern takes, while gating one
  // runs its regex on every line holding its literal, and the literals of anchored patterns
  // (`" 404 `, ` from `) are common in the very logs they are written for (measured: 3x slower
  // on nginx with 4).
  size_t min_literal_unanchored = 3;
  size_t min_literal_anchored = SIZE_MAX;
  // Rule.ignore_patterns of the rules a format's Sets serve (not field rules) join those Sets
  // (SetPart::ignore_rules): the pass that finds a line's candidates also says which rules'
  // ignore patterns match it, instead of one RE2 run per ignore pattern per counted match
  // (web-request-flood's static-asset pattern on every access line). false: every ignore
  // pattern through RE2 (kept for the test that compares both paths).
  bool ignores_in_sets = true;
  // SetPart::programs and SetPart::first_bytes: a part skips the lines it cannot match (a sudo
  // line with the sshd pack's Sets). false: every part runs on every line (kept for the test
  // that compares both paths).
  bool skip_parts = true;
  // SetPart::dfa: a Set whose members SetDfa models is also run by SetDfa on ASCII lines (RE2's
  // Set answers the others). false: RE2's Set alone (kept for the test that compares both
  // paths).
  bool own_dfa = true;
  // Threads a load may use (the caller's one of them): the rules, then the Sets, are compiled
  // side by side. The result, and the first error of a bad pack, are the same whatever the
  // count.
  int threads = 1;
  // The formats whose indexes (Sets, gates, field rules) are built; empty: every format. A
  // caller that reads one format (`palisadectl replay --format=F`) names it: the Sets of the
  // others are the larger part of a load with every pack. Every rule is still compiled and
  // checked whatever its formats; ForFormat answers nullptr for a format not built.
  std::vector<palisade::v1::LogFormat> formats;
};

class RuleSet {
 public:
  // Compiles every rule of every pack. Fails whole on the first error.
  static absl::StatusOr<std::shared_ptr<const RuleSet>> Compile(
      const std::vector<LoadedPack>& packs, const CidrSets& sets = {},
      const RuleSetOptions& options = RuleSetOptions());

  const std::vector<std::unique_ptr<CompiledRule>>& rules() const { return rules_; }
  const std::vector<std::string>& pack_names() const { return pack_names_; }
  // Some rule has a session by pid: then every counted match on a line with a pid notes its
  // key in that pid's session and marks it failed (see Engine::Process).
  bool uses_pid_sessions() const { return uses_pid_sessions_; }
  // Whether a counted match on a line of `program` must note its key in the line's pid session:
  // some rule with a session by pid could read that session back (it applies to `program` in
  // one of its formats; a session id names the program, so no other program's line reads it).
  // Computed at load: the sshd pack's session rules make every counted nginx or postfix line
  // with a pid skip the session table.
  bool NotesPidSession(absl::string_view program) const {
    if (!uses_pid_sessions_) return false;
    if (pid_session_any_program_) return true;
    for (const std::string& p : pid_session_programs_) {
      if (p == program) return true;
    }
    return false;
  }

  // The Sets for a format and, for each Set index, the (rule, pattern) it stands for.
  // Returns nullptr when no rule applies to the format.
  // Up to two Sets per format: the patterns anchored at the start in every alternative
  // (CompiledRule::anchored_start; `^a|b` is not) in an anchored Set, whose DFA gives up at the
  // first byte no pattern can take, and the others unanchored.
  // Plus at most one gated part (no Set, a LiteralGate): the patterns that have required
  // literals (RequiredLiterals, RuleSetOptions) become candidates when one of their literals
  // occurs in the message, and their capturing regex decides. A line that holds none of the
  // literals costs one vectorised scan instead of a Set pass (the token-leak pack's unanchored
  // patterns, the web-attack probes).
  struct SetPart {
    // Null for the gated part. Formats whose Sets would hold the same patterns share one (and
    // its DFA cache): the JSON access-log formats, COMBINED and COMBINED_VHOST.
    std::shared_ptr<const RE2::Set> set;
    // The same question as `set` (the same members in the same order, the same anchoring),
    // answered by SetDfa for a line of ASCII bytes; null when a member uses syntax SetDfa does
    // not model (RuleSetOptions::own_dfa). Shared like `set`.
    std::shared_ptr<const SetDfa> dfa;
    std::unique_ptr<LiteralGate> gate;         // the gated part only
    std::vector<std::pair<int, int>> entries;  // set (or gate) index -> (rule, pattern index)
    // Set indices from entries.size() on are ignore patterns (RuleSetOptions::ignores_in_sets):
    // index entries.size() + i is one of rule ignore_rules[i]'s. A hit means that rule's ignore
    // pattern matches the message, exactly as RE2 would say.
    std::vector<int> ignore_rules;
    // Lines the part cannot match, told before its pass (RuleSetOptions::skip_parts), since a
    // Set's pass costs ~650 instructions of RE2's set-up (~1,200 asking for the indices) even on
    // a line it rejects at once (docs/PERFORMANCE.md, "Tenth pass").
    // Both cover every member, the ignore patterns too, so a skipped part has no hits at all.
    // `programs`, on syslog formats: when every rule behind the part names programs
    // (Rule.programs), all of them, sorted; a line of any other program matches none of those
    // rules (CompiledRule::AppliesToProgram). Empty: lines of every program.
    std::vector<std::string> programs;
    // Anchored Sets: the bytes some member's match can start with (from each pattern's parse),
    // when every member is understood and none can match the empty message; a message starting
    // with another byte, or empty, cannot match. Not set (`first_bytes_known` false): any.
    bool first_bytes_known = false;
    std::bitset<256> first_bytes;
    // Whether a line of `program` with `message` may match a member (false: skip the part).
    bool MayMatch(absl::string_view program, absl::string_view message) const {
      if (first_bytes_known &&
          (message.empty() || !first_bytes[static_cast<unsigned char>(message[0])])) {
        return false;
      }
      if (programs.empty()) return true;
      for (const std::string& p : programs) {
        if (p == program) return true;
      }
      return false;
    }
  };
  struct FormatIndex {
    std::vector<SetPart> parts;
    // Per rule index: every ignore pattern of the rule is in these Sets (ignore_rules), so
    // whether a line is ignored is known from the Set passes over its message. Not for a rule
    // whose ignore pattern would need a Set of its own (an anchored ignore pattern where no
    // anchored pattern is in a Set: another pass over every line): RE2 runs those.
    std::vector<bool> ignores_in_sets;
    // Rules with Rule.field (JSON formats): their patterns run on the field's value, for every
    // record that has it, outside the Sets (which scan the message).
    std::vector<int> field_rules;
  };
  const FormatIndex* ForFormat(palisade::v1::LogFormat format) const;

 private:
  RuleSet() = default;
  std::vector<std::unique_ptr<CompiledRule>> rules_;
  std::vector<std::string> pack_names_;
  bool uses_pid_sessions_ = false;
  bool pid_session_any_program_ = false;          // see NotesPidSession
  std::vector<std::string> pid_session_programs_;
  std::vector<std::unique_ptr<FormatIndex>> by_format_;  // indexed by LogFormat value
  CidrSets sets_;                                        // owned here: conditions point into it
};

// RE2 options every Palisade regex is compiled with: bounded memory, no logging.
RE2::Options PalisadeRe2Options();

}  // namespace palisade

#endif  // PALISADE_SERVICES_ENGINE_RULE_SET_H_
