// The detection engine: match → window → detection, for one stream of parsed lines.
//
// Process() runs the RuleSet's Set passes over a line (anchored patterns in one Set,
// unanchored ones in another; unanchored patterns with required literals are found by a literal
// prefilter instead; a Set's question answered by SetDfa on lines of ASCII bytes, by RE2::Set
// on the others) over the line's message (an access line's with its escapes of readable
// characters decoded, as the server decoded the path it ran: "/.%65nv" is "/.env";
// services/formats/percent_escapes.h; evidence is the line as written), runs the capturing
// regex of each candidate rule, normalises the
// key (an "ip" must parse as an address: nothing else can become a target), drops allowlisted
// keys, and counts the match in the (rule, key) window in event time (and an IPv6 address's
// also in its range's window, EngineOptions::ipv6_window_prefix). When `count` matches of
// the key fall within its rule's span, whatever order their lines came in (a backlog, a clock
// ahead), it raises a Detection carrying the lines of those matches, and the window starts over.
// Memory bounds what "whatever order" reaches: a line within a span after the window's newest
// match drops the matches more than a span before it, and a window keeps at most twice the
// threshold of matches (past that, those farthest in time from the line counted go first); a
// match no longer kept is not counted.
//
// Memory is bounded: windows idle for longer than their rule's window are dropped by Expire(),
// which takes "now" per stream: each window remembers the stream that last counted in it, and
// ages in that stream's event time (a backlog shipped an hour late still fills its windows);
// and past `max_keys_per_rule` a rule's windows missing the most matches to its threshold
// (in their best span), least recently active first (Engine::RankOf), are evicted (and
// counted). Memory is also bounded in bytes, whatever the lines and keys an attacker writes: a
// window keeps at most `max_evidence_bytes` of evidence (each line cut to an equal share, the
// cut marked and counted; the lines of at most `max_evidence` of the matches it keeps, the
// newest in event time (a line out of order first drops those more than a span from it), and
// only of matches that can be one of a detection's last `max_evidence`), and every byte a
// window holds (its object, its buffer, its table slot, as the allocator hands them out) is
// accounted against `memory_budget_bytes`; a shard past its share of the budget evicts its
// windows over all its rules, those missing the largest share of their rule's threshold first
// (BudgetRankOf: 2 of sshd's 3 go before 20 of a flood rule's 120), counted apart from the key
// cap. Once warmed up, a line that matches nothing allocates nothing.
//
// Sessions (Rule.session, issue 13 §1): a rule with a session ties its lines to the connection
// that wrote them, by the line's program and pid or by a capture (SessionTable). A `note_only`
// rule only notes its key in the session; a rule whose pattern has no key group takes the key an
// earlier line of the session noted; an `after_failure` rule counts only once the session
// failed; a `pending` rule's match whose session has no key yet waits in the session and counts,
// at its own time, when a later line of the session notes the key (a `succeeded` note drops it).
// Every counted match of a session rule notes its key and marks the session failed, and
// when some rule goes by pid, so does every counted match on a line with a pid of a program such
// a rule reads (a failed password names the address a later "Too many authentication failures"
// line leaves out; RuleSet::NotesPidSession). Token rules never touch sessions (their key is a
// secret). Sessions are kept in memory only.
//
// A line cut at the daemon's cap (ParsedLine::cut) ends where the cap fell, not where its writer
// ended it: on every path that runs rule patterns (Process, MatchLine, MatchOnly, Prematch; token
// and session rules alike), a match of a pattern that reads the end of the text (`$`, `\z`:
// CompiledRule::reads_end) is refused when it ends at the cut, so a forged tail placed right
// before the cut is never a key. Other matches, and patterns that read no end, stand; so do
// those on a JSON record, which is read from the fields it holds whole.
//
// The engine does no I/O and reads no clock: time comes with each line.
// Prematch (a line, or many: the Sets of many lines walked side by side) is the stateless first
// half of Process, for threads that match ahead of the one that counts (replay, the file
// inputs).
// Thread-safety: Process, MatchLine, CountMatch, MatchOnly and Prematch may run concurrently
// from any number of threads (matching uses per-thread scratch; windows live in shards, each
// behind its own mutex).
// SetRules, Expire (and ExpireByStream, ExpireSpread), Snapshot and Restore must not overlap a
// Process, MatchLine or CountMatch: callers serialise them.
#ifndef PALISADE_SERVICES_ENGINE_ENGINE_H_
#define PALISADE_SERVICES_ENGINE_ENGINE_H_

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/functional/function_ref.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "palisade/v1/state.pb.h"
#include "services/common/ip.h"
#include "services/engine/rule_set.h"
#include "services/engine/session_table.h"
#include "services/engine/set_dfa.h"
#include "services/engine/shard_mutex.h"
#include "services/feeds/feed_set.h"
#include "services/formats/json_parser.h"
#include "services/formats/line_parser.h"
#include "services/formats/percent_escapes.h"

namespace palisade {

struct EngineOptions {
  uint32_t max_keys_per_rule = 1'000'000;
  uint32_t max_evidence = 5;
  // Evidence bytes a window keeps (records of [4-byte length][8-byte match time][line]). Each
  // line is cut to max_evidence_bytes / max_evidence (less its 12-byte record header, at least
  // 64) so that a full ring fits, and the oldest lines go first if it still would not. A
  // detection's evidence is within it too. 2 KiB keeps five ordinary log lines whole; a 16 KiB
  // line costs ~400 bytes, not 16 KiB.
  uint32_t max_evidence_bytes = 2048;
  // The ceiling on the resident memory the windows take, over all rules. The accounted bytes
  // keep to seven eighths of it (the rest is the allocator's slack, which the accounting cannot
  // see); each of the kShards shards keeps to its share (keys spread evenly over shards), so
  // the total never passes it: past its share a shard drops windows, over all rules those
  // missing the largest share of their rule's threshold and least recently active first
  // (Engine::BudgetRankOf), until an eighth of the share is free.
  // "Least recently active" is the order in which lines counted, not their event time, which the
  // log writer chooses. 0: the default, 1 GiB.
  uint64_t memory_budget_bytes = uint64_t{1} << 30;
  // Ranges whose keys never count (loopback is added by the engine itself).
  CidrSet allowlist;
  // IPv6 range windows: one client holds a whole /64 (or /48) and may take a new address of it
  // for each try, which fills no address's window. With a prefix (48 or 64; the config's
  // decisions_ipv6_folding.prefix_length), a match of an address rule (a threshold above 1) on
  // an IPv6 address that embeds no IPv4 one (EmbeddedIpv4: NAT64 and Teredo are an IPv4
  // host's, whose neighbours are other hosts) counts in the address's window and in the rule's
  // window of the covering range ("2001:db8:1:2::/64"), a window like any other (same caps,
  // same budget); a 6to4 address (Is6to4: its IPv4 host holds the whole /48) counts in its
  // /48's window whatever the prefix. A range window
  // that fills on a line where the address's did not raises a TARGET_KIND_RANGE detection
  // keyed by the range; when both fill on one line, only the address's (one attacker on one
  // address stays an address decision). A range that touches the allowlist or a non-public
  // range (TouchesNeverBan) has no window: an allowlisted neighbour is never covered.
  // Process and CountMatch alike (a cluster routes a range's addresses to one partition).
  // 0: off (default).
  int ipv6_window_prefix = 0;
  // Threat feeds for in_feed / not_in_feed conditions (none: every feed is empty). Not owned.
  const FeedRegistry* feeds = nullptr;
  // The session table's bounds (rules with a session, see below).
  SessionOptions sessions;
  // The Prematch of many lines walks a Set's lines side by side (SetDfa::MatchMany) when its
  // walks read this many bytes of a line on average (SetDfa::Cache::mean_walk_bytes); shorter
  // walks cost less one at a time (docs/PERFORMANCE.md, "Eighteenth pass"). 0: always. Only
  // what a line costs depends on it.
  uint32_t walk_ahead_bytes = 48;
};

// A threshold crossed.
struct Detection {
  const CompiledRule* rule = nullptr;  // valid while the RuleSet it came from is alive
  std::string rule_id;
  palisade::v1::TargetKind kind = palisade::v1::TargetKind::TARGET_KIND_IP;
  // Canonical: "203.0.113.7", "2001:db8::1", a range "2001:db8:1:2::/64" (TARGET_KIND_RANGE,
  // EngineOptions::ipv6_window_prefix), or the raw path.
  std::string key;
  absl::Time time;                    // event time of the line that crossed the threshold
  // Lines of the matches that made it, oldest first in event time: at most max_evidence, the
  // newest (when lines came out of order, some older ones of the run may stand in for them).
  std::vector<std::string> evidence;
  // TARGET_KIND_TOKEN_FINGERPRINT only: the token itself, which the revocation needs. It lives
  // in memory only: never in a decision, a log line, a metric or evidence (which is redacted).
  std::string secret;
  // Address keys only: the threat feeds listing the address when the threshold was crossed.
  std::vector<std::string> feeds;
};

// One match Process would count, taken apart from its counting: the cluster's split (issue 17)
// matches on the node that read the line (MatchLine) and counts on the node that owns the key's
// partition (CountMatch). Everything the count needs travels in it; sessions stay on the
// matching node, which sees a connection's lines in order.
struct EngineMatch {
  const CompiledRule* rule = nullptr;  // valid while the RuleSet it came from is alive
  std::string rule_id;
  std::string key;  // normalised as Process counts it ("203.0.113.7", a fingerprint, a path)
  absl::Time time;  // the line's event time
  // The line as a window keeps it: tokens redacted, cut to the engine's evidence share (with
  // its " [N bytes cut]" marker), so a CountMatch with the same EngineOptions cuts nothing more.
  // Empty when max_evidence is 0.
  std::string evidence;
  // TARGET_KIND_TOKEN_FINGERPRINT only: the token itself (memory only: it never leaves the node,
  // see services/cluster/match_router.h).
  std::string secret;
  uint32_t stream = 0;  // MatchLine's `stream`
};

// One candidate rule pattern of a line as Engine::Prematch hands it to Process (replay on every
// core): the (rule, pattern) a Set pass, a literal gate or a field rule gave, and, when `state`
// is kMatched, the pattern's first match and whether an ignore pattern of the rule matches:
// what depends on nothing but the line, so that the thread that takes lines in order runs no
// regex for it.
struct PrematchedCandidate {
  enum class State : uint8_t {
    kNotRun,   // Process runs the pattern (a token rule's, or one Process never reaches)
    kNoMatch,  // the pattern does not match (or its rule does not apply to the line)
    kMatched,  // PrematchBuffer::groups[groups, + the pattern's submatches) hold its captures
  };
  // kMatched and not ignored, with its key captured from the line (not read from a session):
  // what NormaliseKey makes of that key, which depends on the key and the engine's allowlist
  // alone, so that the ordered thread parses, formats and hashes no address. kNotRun: Process
  // normalises the key itself.
  enum class Key : uint8_t { kNotRun, kValid, kInvalid, kAllowlisted };
  int rule = 0;
  int pattern = 0;  // pattern index << 1, | 1 when no Set proved that it matches
  State state = State::kNotRun;
  bool ignored = false;  // kMatched: one of the rule's ignore patterns matches its text
  // The line's message held escapes of readable characters (Engine::ReadableLine): the
  // captures are offsets into it decoded. The same on each candidate of a line.
  bool decoded = false;
  Key key = Key::kNotRun;
  uint32_t groups = 0;
  // kValid: the normalised key is PrematchBuffer::keys[key_at, key_at + key_size), and
  // key_hash its hash in a window table (Engine::WindowHash).
  uint32_t key_at = 0;
  uint32_t key_size = 0;
  size_t key_hash = 0;
};

// The candidates of a batch of lines, appended line after line by Engine::Prematch.
struct PrematchBuffer {
  std::vector<PrematchedCandidate> candidates;
  // Each capture as (offset, length) in the text its rule reads (the line's message or a field's
  // value: the same bytes however often the line is parsed); kUnset when it took no part.
  static constexpr uint32_t kUnset = UINT32_MAX;
  std::vector<std::pair<uint32_t, uint32_t>> groups;
  // The candidates' normalised keys (PrematchedCandidate::key_at), one after another.
  std::string keys;
  void Clear() {
    candidates.clear();
    groups.clear();
    keys.clear();
  }
};

// One line's candidates in a PrematchBuffer.
struct PrematchedLine {
  absl::Span<const PrematchedCandidate> candidates;
  const PrematchBuffer* buffer = nullptr;
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
  uint64_t evicted_windows = 0;         // by max_keys_per_rule
  uint64_t memory_evicted_windows = 0;  // by memory_budget_bytes
  uint64_t evidence_truncated = 0;      // evidence lines cut to fit max_evidence_bytes
  uint64_t memory_bytes = 0;            // accounted now (see Engine::memory_bytes)
  uint64_t expired_windows = 0;
  uint64_t invalid_keys = 0;
  uint64_t ignored = 0;
  // Session rules' matches that needed a key from their session and found none (no earlier line
  // of the session named one, or it aged out): not counted. A `pending` rule's such match is
  // kept in the session instead (SessionStats::pending), not counted here.
  uint64_t session_misses = 0;
  SessionStats sessions;
};

class Engine {
 public:
  Engine(std::shared_ptr<const RuleSet> rules, EngineOptions options);

  // Swaps in a new RuleSet. Windows of rules that keep their id (and threshold, key kind and
  // key capture) are kept; the others are dropped. Pending matches (Rule.session.pending) are
  // counted by the rule of their id, when one is still loaded. Called alone: no line is
  // processed meanwhile.
  void SetRules(std::shared_ptr<const RuleSet> rules);
  const std::shared_ptr<const RuleSet>& rules() const { return rules_; }
  // Replaces EngineOptions::allowlist (loopback stays in it), for a reload that read a new one.
  // Called alone, as SetRules. Windows already counted for a newly allowlisted key stay (they
  // age out); no new match counts for it.
  void SetAllowlist(CidrSet allowlist);

  // Matches one parsed line of `format`, counts it, and appends any detections to `out`.
  // `raw` is the whole line (kept as evidence); `time` its event time; `stream` the caller's
  // number for the stream the line came from (see ExpireByStream; 0: none).
  // `prematched`, when given, is the line's candidates from Prematch with these rules: Process
  // then runs no Set pass, no literal gate and none of the regexes Prematch ran (the result is
  // the same).
  LineResult Process(palisade::v1::LogFormat format, const ParsedLine& line, absl::string_view raw,
                     absl::Time time, std::vector<Detection>* out, uint32_t stream = 0,
                     const PrematchedLine* prematched = nullptr);

  // The first steps of Process, which depend on nothing but the line and the rules: the
  // RE2::Set passes, the literal gates and the field rules give the rules that may match, and
  // each candidate's pattern is run for its first match (its captures, a key split, a leading
  // key) and the rule's ignore patterns over it; appended to `*out` (see PrematchedCandidate),
  // in the order Process takes them. Keeps no state (but the calling thread's scratch, which
  // changes only the cost): threads may prematch lines ahead of the one thread that then
  // processes them in order with `prematched`, and every window, session and decision is what
  // a Process without it gives (replay on every core).
  void Prematch(palisade::v1::LogFormat format, const ParsedLine& line, PrematchBuffer* out) const;
  // Prematch of each of `lines` in turn, the same candidates appended in the same order:
  // lines[i]'s are out->candidates[(*spans)[i].first, (*spans)[i].second). Faster than one
  // call a line: the Set passes of kWalkLines lines at a time are walked side by side
  // (SetDfa::MatchMany). The lines' views must all be valid together (not a JSON parser's
  // lines, which do not outlive its next one).
  void Prematch(palisade::v1::LogFormat format, absl::Span<const ParsedLine* const> lines,
                PrematchBuffer* out, std::vector<std::pair<uint32_t, uint32_t>>* spans) const;
  static constexpr size_t kWalkLines = 64;
  // Whether the Prematch of many lines of `format` would walk some Set side by side on the
  // calling thread: a Set with a SetDfa whose walks on this thread read walk_ahead_bytes or more
  // on average, or that this thread has not walked yet.
  bool WalksSideBySide(palisade::v1::LogFormat format) const;
  // Whether a match's line is kept as evidence (EngineOptions::max_evidence above 0): without,
  // no line needs redacting.
  bool KeepsEvidence() const { return options_.max_evidence > 0; }

  // The split of Process (the cluster, issue 17): the same matching, sessions, ignore patterns,
  // allowlist and evidence redaction, but the matches are appended to `*out` instead of being
  // counted. Process(line) gives the detections that CountMatch of each of MatchLine(line)'s
  // matches gives, in the same order, on an engine with the same rules and options. Counts the
  // line's stats (lines, matched lines, ignored, invalid keys) here; the matches' per-rule
  // counts and detections are counted where CountMatch runs. Thread-safe as Process.
  LineResult MatchLine(palisade::v1::LogFormat format, const ParsedLine& line,
                       absl::string_view raw, absl::Time time, std::vector<EngineMatch>* out,
                       uint32_t stream = 0, const PrematchedLine* prematched = nullptr);

  // Counts one match from MatchLine (of this engine or of another one with the same rules)
  // into its (rule, key) window, appending any detection to `out` as Process would. The match
  // may come from another node: kNotFound when this engine has no rule of that id; for an
  // address rule, kInvalidArgument when the key is not an address in canonical form and
  // kFailedPrecondition when it is allowlisted here (nothing counted in either case). An IPv6
  // address counts in its range's window too (EngineOptions::ipv6_window_prefix), as Process
  // counts it: the caller sends the matches of one range to one engine (a cluster routes them
  // by PartitionKeyOf, services/cluster/match_stream.h), in the order of their stream.
  // Thread-safe as Process.
  absl::Status CountMatch(const EngineMatch& match, std::vector<Detection>* out);

  // Only the matching step: calls `fn(rule, key)` for each rule whose pattern matches, with
  // the normalised key. Used by Admin.TestRules and `palisadectl rules test`. Sessions are
  // followed as in Process (a test of lines in order sees what their sessions said); `time` is
  // the line's event time, for the sessions' ages.
  template <typename Fn>
  void MatchOnly(palisade::v1::LogFormat format, const ParsedLine& line, Fn fn,
                 absl::Time time = absl::UnixEpoch());

  // Drops windows whose last event is older than their rule's window before `now`.
  void Expire(absl::Time now);
  // The same, with "now" per stream: a window last counted by stream s ages against
  // stream_now[s] (its event time), and against `other_now` when s is 0 or past the vector
  // (windows restored from a snapshot, lines of no stream).
  void ExpireByStream(const std::vector<absl::Time>& stream_now, absl::Time other_now);
  // Expire for a caller that sweeps at short steps of event time (replay: every minute of its
  // lines' time). A rule's windows are walked only once an eighth of its span has passed since
  // their last walk, and the sessions once a quarter of their ttl has: the windows of a
  // 12-hour rule, none of which can age out for hours, are not walked every minute. What ages
  // out is dropped at most that much later than Expire would drop it.
  void ExpireSpread(absl::Time now);

  // The live windows (match times only, and what their rule counted: key kind and capture),
  // and putting them back after a restart: windows of rules that no longer exist, or that now
  // count another key kind or capture (as SetRules drops them), are skipped; so are those of a
  // snapshot written before it said what they counted. A restored window belongs to no stream
  // until a line counts in it: it ages on the clock from `now` (the restart), not from its
  // newest match, so the sweep does not drop it before the inputs resume and read the backlog
  // that continues it (a window nothing continues goes a span after the restart).
  // Restore returns how many windows it skipped for counting another key kind or capture, or
  // for not saying what they counted. With kTrust the caller vouches that the snapshot was
  // taken under these very rules (PartitionCounter: the head's rule set version is this one),
  // and windows that do not say are restored into the rule of their id.
  enum class UnmarkedWindows { kSkip, kTrust };
  palisade::v1::EngineSnapshot Snapshot() const;
  size_t Restore(const palisade::v1::EngineSnapshot& snapshot,
                 absl::Time now = absl::InfinitePast(),
                 UnmarkedWindows unmarked = UnmarkedWindows::kSkip);

  EngineStats stats() const;
  // Live windows over all rules.
  size_t live_windows() const;
  // Bytes the live windows hold: each window's object and buffers and its rules' hash tables
  // (their whole capacity), rounded as malloc rounds them. Never above 7/8 of
  // memory_budget_bytes once a Process, Restore or SetRules has returned.
  size_t memory_bytes() const;
  // Per rule index (same order as rules()->rules()): matches counted so far.
  std::vector<uint64_t> matches_per_rule() const;

 private:
  // A live window: its match times, its last activity, its key and its evidence ring (records
  // of [uint32 length][int64 match time, unix ms][bytes], in the order of their times, oldest
  // at `head_`, wrapping at the buffer's end: dropping the oldest record moves no bytes). A key
  // of up to kInlineKey bytes (an IPv4 address) is held in the object, where the table's lookup
  // compares it without reaching for the buffer; a longer one heads the buffer. Two
  // allocations per window (this object and its ring) and an 8-byte slot in the shard's table:
  // about 200 bytes for an address with one 60-byte line, where a map of strings to vectors of
  // strings cost 350.
  class Window {
   public:
    // Every IPv4 text and the shortest IPv6 ones (2001:db8::17). With it the object is 88
    // bytes, 96 allocated (16 more than with the key in the buffer); 40 bytes (every IPv6
    // text) made it 128 allocated: 19 % fewer windows under memory_bench's 64 MiB flood of
    // IPv4 addresses, where 16 gives up 6 %.
    static constexpr uint32_t kInlineKey = 16;

    explicit Window(absl::string_view key);
    absl::string_view key() const {
      return absl::string_view(key_len_ <= kInlineKey ? inline_key_ : buf_.get(), key_len_);
    }
    static constexpr uint32_t kRecordHeader = sizeof(uint32_t) + sizeof(int64_t);
    // Appends `line` followed by `marker` as one record of a match at `time`, no earlier than
    // any record's (a line in order), dropping the oldest records while `max` are kept or the
    // records would pass `max_bytes` (the ring never grows past `max_bytes`). The caller has
    // cut the line to fit.
    void AddEvidence(absl::string_view line, absl::string_view marker, int64_t time,
                     uint32_t max, uint32_t max_bytes);
    // The same for a match at any time (a late line): the record goes in the place of its
    // time, and the records dropped to make room are those more than `span` from it (the
    // farther end first: a line dated ahead, a backlog's), then the oldest; never this one.
    // Rebuilds the ring: for the lines out of order only.
    void InsertEvidence(absl::string_view line, absl::string_view marker, int64_t time,
                        int64_t span, uint32_t max, uint32_t max_bytes);
    // A line not in the ring: its match's time and its text (the line, then the cut marker).
    struct Evidence {
      int64_t time = 0;
      absl::string_view line, marker;
    };
    // Appends to `out` the lines of the records whose times lie in [from, to], and `extra`
    // when given (it lies there too), the newest `n` of them, oldest first; the ring is
    // emptied.
    void TakeEvidence(int64_t from, int64_t to, size_t n, std::vector<std::string>* out,
                      const Evidence* extra = nullptr);
    // Drops the records of matches before `from`: after they slid out of the window.
    void DropEvidenceBefore(int64_t from) {
      while (evidence_count_ > 0 && HeadTime() < from) DropOldest();
    }
    // Keeps only records with times in [from, to], at most `n` (the newest): after Count
    // dropped times at either end of the window.
    void TrimEvidence(int64_t from, int64_t to, size_t n);

    // What the allocator holds for this window: the object, its buffer, its spilled times.
    size_t Bytes() const;

   private:
    uint32_t key_len_ = 0;  // first: a lookup reads it and the key side by side
    char inline_key_[kInlineKey];

   public:
    // The stream that counted in it last (Process's `stream`); kRestoredStream: restored, none
    // since.
    uint32_t stream = 0;
    absl::InlinedVector<int64_t, 1> times;  // unix ms, of the matches inside the window, in order
    int64_t last = std::numeric_limits<int64_t>::min();  // its newest match (unix ms)
    uint64_t touched = 0;  // its shard's `ticks` when it last counted: the eviction order

   private:
    // Grows the ring to hold at least `bytes` of records, by half its size but never past
    // `limit`; the records are laid out from the ring's start again.
    void Grow(size_t bytes, size_t limit);
    void DropOldest();
    // The length and time of the record at ring offset `at`.
    void ReadHeader(uint32_t at, uint32_t* len, int64_t* time) const;
    int64_t HeadTime() const {
      uint32_t len;
      int64_t time;
      ReadHeader(head_, &len, &time);
      return time;
    }
    // Copies between the ring (from offset `at`, wrapping) and flat memory.
    void RingWrite(uint32_t at, const char* data, size_t n);
    void RingRead(uint32_t at, char* out, size_t n) const;
    // Where the ring starts in the buffer: after the key when the key is there.
    uint32_t RingStart() const { return key_len_ <= kInlineKey ? 0 : key_len_; }
    uint32_t RingCap() const { return cap_ - RingStart(); }
    uint32_t Wrap(uint32_t at) const { return at >= RingCap() ? at - RingCap() : at; }
    std::unique_ptr<char[]> buf_;  // a long key, then the ring
    uint32_t cap_ = 0;             // the buffer's bytes
    uint32_t head_ = 0;            // the oldest record's offset in the ring
    uint32_t live_ = 0;            // the records' bytes
    uint32_t evidence_count_ = 0;
  };
  // Windows are found by key (heterogeneous lookup: no string is built to look one up).
  struct WindowHash {
    using is_transparent = void;
    size_t operator()(absl::string_view key) const { return absl::Hash<absl::string_view>()(key); }
    size_t operator()(const std::unique_ptr<Window>& w) const { return (*this)(w->key()); }
  };
  struct WindowEq {
    using is_transparent = void;
    static absl::string_view Key(absl::string_view k) { return k; }
    static absl::string_view Key(const std::unique_ptr<Window>& w) { return w->key(); }
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      return Key(a) == Key(b);
    }
  };
  using WindowMap = absl::flat_hash_set<std::unique_ptr<Window>, WindowHash, WindowEq>;
  // Windows are spread over shards by (rule, key), so concurrent lines rarely wait. A shard
  // starts a cache line of its own, and a count writes outside its shard only the engine's
  // counters (stats_, the rule's counts): its eviction tick and its bytes are the shard's.
  static constexpr size_t kShards = 16;
  struct alignas(64) Shard {
    ShardMutex mu;
    std::vector<WindowMap> maps ABSL_GUARDED_BY(mu);  // per rule index
    size_t bytes ABSL_GUARDED_BY(mu) = 0;             // accounted: windows and tables
    uint64_t ticks ABSL_GUARDED_BY(mu) = 0;           // once per counted match (Window::touched)
    // `bytes` as of the last change, stored (not added) under `mu`: memory_bytes() sums these
    // without taking the locks.
    std::atomic<size_t> published_bytes{0};
  };
  // The values of the fields a line's field rules read decoded (RuleText), kept for the line;
  // the entries past `used` are reused by the next line.
  struct DecodedFields {
    std::deque<std::pair<std::string, std::string>> values;  // (field, decoded value)
    size_t used = 0;
  };
  // Per-thread scratch reused across lines so the hot path does not allocate.
  struct Scratch {
    std::vector<int> set_hits;
    // The rules whose ignore patterns the Set passes of this thread's last CollectCandidates
    // found in its line (RuleSet::SetPart::ignore_rules): read only right after that call, for
    // the same line (Prematch, and MatchStep when it collected the candidates itself).
    std::vector<int> ignore_hits;
    std::vector<std::pair<int, int>> candidates;  // (rule index, pattern index)
    std::vector<std::pair<int, int>> prematch;    // Prematch's, apart: a caller may hold both
    std::vector<re2::StringPiece> groups;
    char key_buf[IpAddress::kMaxTextLength];
    std::string token_key;
    std::vector<std::pair<int, absl::string_view>> counted;  // (rule index, captured) per line
    // counted[i]'s normalised key: a view into keys[i] (a copy, capacity reused) or into the
    // line's PrematchBuffer::keys, with its WindowHash when Prematch found it (else nullopt).
    std::vector<std::string> keys;
    std::vector<std::pair<absl::string_view, std::optional<size_t>>> counted_keys;
    std::vector<absl::string_view> secrets;                  // token rules' captures per line
    std::string evidence;                                    // the line, tokens redacted
    std::string session_id;
    std::string session_value;  // a key read from a session
    // NormaliseKey's last address key: its text, and what it gave (valid, allowlisted, the
    // canonical key) on the engine `address_engine` (Engine::id_). The rules that count one
    // line mostly capture the same address, and a burst of lines comes from one.
    // The text in a buffer of its own (a std::string assign is a call into libstdc++ on every
    // new address); a longer text is no address and is not remembered. A canonical key that
    // differs from the text is key_buf's first address_key_size bytes (0: the text is the key).
    uint64_t address_engine = 0;
    char address_text[64];
    uint8_t address_text_size = 0;
    uint8_t address_key_size = 0;
    bool address_valid = false;
    bool address_allowlisted = false;
    // The last NoteCounted of this thread (Engine::NoteCounted skips an identical one on the
    // same line): `line` counts Candidates calls; `noted` is cleared by any other session write.
    uint64_t line = 0;
    // Per Set of a FormatIndex: how often it matched of late (see CollectCandidates), an
    // exponentially weighted share of lines, kHitRateOne when every recent line matched. Only
    // the cost depends on it, never a result. Kept for the last few indices matched, not the
    // last one alone: replay feeds its decisions back as lines of their own format between
    // batches.
    struct HitRates {
      const void* index = nullptr;
      std::vector<uint16_t> rates;
    };
    std::array<HitRates, 4> hit_rates;
    size_t hit_rates_next = 0;  // the slot a new index takes (round robin)
    // The states this thread built for the SetDfas it ran of late (RuleSet::SetPart::dfa), one
    // cache per SetDfa (Cache::owner), at most SetDfa::kDefaultCacheBytes each; a SetDfa without
    // one takes the next slot in turn. Four: a format's Sets and those of the format replay
    // feeds its decisions back in.
    std::array<SetDfa::Cache, 4> dfa_caches;
    // The Set passes of Prematch's lines walked ahead (WalkSets): per line, one Walked per
    // Set part of the format (parts_per_line), in the order of FormatIndex::parts.
    struct Walked {
      enum class State : uint8_t {
        kNotWalked,  // CollectCandidates asks as usual (a gated part, a part without SetDfa)
        kNoText,     // the part does not read the line (SetPart::MayMatch)
        kAnswered,   // its SetDfa's hits are walk_answers[part]'s for text `text`
        kAsk,        // its SetDfa gave no answer: the RE2::Set is asked
      };
      State state = State::kNotWalked;
      uint32_t text = 0;  // kAnswered: the line's index among the texts its part walked
    };
    size_t parts_per_line = 0;
    std::vector<Walked> walked;
    std::vector<SetDfa::Answers> walk_answers;  // per part of the format
    std::vector<absl::string_view> walk_texts;  // WalkSets' buffers
    std::vector<size_t> walk_lines;
    size_t dfa_caches_next = 0;
    SetDfa::Cache& DfaCache(const SetDfa& dfa) {
      for (SetDfa::Cache& cache : dfa_caches) {
        if (cache.owner() == dfa.id()) return cache;
      }
      SetDfa::Cache& cache = dfa_caches[dfa_caches_next];
      dfa_caches_next = (dfa_caches_next + 1) % dfa_caches.size();
      return cache;
    }
    bool noted = false;
    uint64_t noted_line = 0;
    std::string noted_id, noted_name, noted_key;
    // Rule.session.pending: this line's matches to keep pending (rule index, session id), kept
    // once the line's evidence is known (KeepPending); and the pending matches of earlier lines
    // that a note of this line released, counted after the line's own (Process, MatchLine).
    std::vector<std::pair<int, std::string>> pend;
    struct Released {
      int rule;
      std::string key;  // normalised
      absl::Time time;  // the pending match's own
      std::string evidence;
    };
    std::vector<Released> released;
    std::vector<PendingMatch> released_raw;  // SessionTable::Note's, before the checks
    // The line rules read when its message holds escapes of readable characters (ReadableLine):
    // a copy whose message is `decoded`, for the line MatchStep or MatchOnly reads; Prematch's
    // apart, per line of a walk (a caller may prematch between a MatchStep and its counts).
    std::string decoded;
    ParsedLine decoded_line;
    std::string decoded_raw;  // Redacted's
    std::string prematch_decoded;
    ParsedLine prematch_decoded_line;
    std::vector<std::string> walk_decoded;
    std::vector<ParsedLine> walk_decoded_lines;
    std::vector<const ParsedLine*> walk_views;
    // The line's decoded field values (RuleText): the MatchStep or MatchOnly line's, and
    // Prematch's apart.
    DecodedFields fields;
    DecodedFields prematch_fields;
  };
  static Scratch& ThreadScratch();
  // A Set's hit rate (Scratch::HitRates) is a share of lines times kHitRateOne; each line moves
  // it 1/8 of the way to kHitRateOne (a match) or 0. At kProbeAbove and more the "any?" probe is
  // skipped (CollectCandidates): measured, the probe costs about a full pass on a line that
  // matches and saves ~475 instructions (the match set's allocation) on one that does not.
  static constexpr uint16_t kHitRateOne = 1024;
  static constexpr uint16_t kProbeAbove = kHitRateOne / 5;

  // Marks out->candidates from `begin` on as those of a decoded line.
  static void MarkDecoded(PrematchBuffer* out, size_t begin);
  // The line whose message rules read: `line`, or when it is an access line whose message holds
  // escapes of readable characters (percent_escapes.h) a copy in `*copy` whose message is
  // decoded into `*decoded`.
  static const ParsedLine& ReadableLine(palisade::v1::LogFormat format, const ParsedLine& line,
                                        std::string* decoded, ParsedLine* copy) {
    if (!ReadsEscapesDecoded(format, line.message) ||
        !DecodeReadableEscapes(line.message, decoded)) {
      return line;
    }
    *copy = line;
    copy->message = *decoded;
    return *copy;
  }

  // The text a rule's patterns and ignore patterns read: the line's message (as ReadableLine
  // gave it), or for a field rule its field of the JSON record, read as the message is: on an
  // access record (ReadsEscapesDecoded) with the escapes of readable characters decoded, into
  // `fields` (a capture views it until the line is counted). False (and empty) when the record
  // lacks the field.
  static bool RuleText(palisade::v1::LogFormat format, const CompiledRule& rule,
                       const ParsedLine& line, DecodedFields* fields, absl::string_view* text) {
    if (rule.proto.field().empty()) {
      *text = line.message;
      return true;
    }
    *text = absl::string_view();
    if (line.record == nullptr || !line.record->Find(rule.proto.field(), text)) return false;
    if (ReadsEscapesDecoded(format, line.message)) ReadableField(rule.proto.field(), fields, text);
    return true;
  }
  // `*text`, the value of `field`, decoded into `fields` when it holds escapes of readable
  // characters (the same field read again on the line is not decoded again).
  static void ReadableField(absl::string_view field, DecodedFields* fields,
                            absl::string_view* text);

  // Runs the candidate rules' captures; calls fn(rule_index, key, pre, line_key) for each match,
  // which returns whether the match counted (`pre`: the match's PrematchedCandidate when
  // Prematch found it, with its ignore answer; else null; `line_key`: the key is the one the
  // line's capture gave, not a session's or the record's client address); follows the rules'
  // sessions (see the header comment).
  // Process's and MatchLine's common first half: counts the line, collects what counts on it
  // into ThreadScratch().counted/keys/secrets (ignores, allowlist and invalid keys noted in
  // `result`).
  void MatchStep(palisade::v1::LogFormat format, const ParsedLine& line, absl::string_view raw,
                 absl::Time time, uint32_t stream, const PrematchedLine* prematched,
                 LineResult* result);
  // The line as evidence after MatchStep: `raw`, or its copy in the scratch with the tokens
  // hidden (every token a rule counted on the line, ThreadScratch().secrets, and the token
  // shapes; a line holding escapes of readable characters is decoded first, so an escaped token
  // is hidden), which the next call overwrites.
  absl::string_view Redacted(absl::string_view raw);
  // Their common end: `result->matched` and the line's stats.
  void FinishLine(LineResult* result);
  template <typename Fn>
  void Candidates(palisade::v1::LogFormat format, const ParsedLine& line, absl::Time time,
                  uint32_t stream, Fn fn, const PrematchedLine* prematched = nullptr);
  // The first match of pattern `p` of `rule` (not a token rule: those report every match) in
  // `text` into groups[0, rule.submatches[p]) (a key split or a leading key sets only groups 0
  // and the key's, the rest empty). `proven`: a Set's hit, known to match. `cut`: the line's
  // CutEnd(line) (a pattern that reads the end then goes through RE2, and its match may not
  // end at the cut: EndsAtCut). `run`: the line's leading address run, shared by its rules
  // (CompiledRule::LeadingKey).
  bool FirstMatch(const CompiledRule& rule, int p, bool proven, bool cut, absl::string_view text,
                  re2::StringPiece* groups, CompiledRule::LeadingRun* run = nullptr) const;
  // Whether `match` (group 0 of pattern `p` of `rule` on `text`) is refused on a line cut at the
  // daemon's cap: the pattern reads the end of the text (CompiledRule::reads_end) and the match
  // ends at the text's end, which is the cut, not the writer's end.
  static bool EndsAtCut(bool cut, const CompiledRule& rule, int p, const re2::StringPiece& match,
                        absl::string_view text) {
    return cut && rule.reads_end[p] && match.data() + match.size() == text.data() + text.size();
  }
  // Whether the texts rules read on `line` may end at the cap's cut: a cut line, but not a JSON
  // record, whose parser reads only the fields the record holds whole (json_parser.h) and whose
  // message is rendered from them, so every text there ends where its writer or renderer ended
  // it.
  static bool CutEnd(const ParsedLine& line) { return line.cut && line.record == nullptr; }
  // Whether one of the rule's ignore patterns matches the text it reads on `line` (RuleText).
  // On a cut line (CutEnd) an ignore's match that ends at the cut, of an ignore that reads the
  // end (CompiledRule::ignore_reads_end), does not count: the line is judged by the patterns.
  static bool Ignored(palisade::v1::LogFormat format, const CompiledRule& rule,
                      const ParsedLine& line, DecodedFields* fields);
  // The line's answer for a match of the rule, wherever the match step stands: Prematch's
  // (`found`, a PrematchedCandidate that Prematch matched), else the Set passes' when this
  // thread's CollectCandidates read the line itself (no Prematch of the line: `prematched`
  // false) and the format's Sets hold the rule's ignore patterns
  // (RuleSetOptions::ignores_in_sets), else RE2's.
  // `fields`: the line's decoded fields (RuleText).
  bool IgnoredHere(palisade::v1::LogFormat format, int rule_index, const CompiledRule& rule,
                   const ParsedLine& line, const PrematchedCandidate* found, bool prematched,
                   DecodedFields* fields) const;
  // The Set passes, gates and field rules of `index` over `line` (see Prematch). `walked`:
  // the line's row of scratch.walked when WalkSets walked its Sets (else null).
  void CollectCandidates(const RuleSet::FormatIndex& index, const ParsedLine& line,
                         Scratch& scratch, std::vector<std::pair<int, int>>* candidates,
                         const Scratch::Walked* walked = nullptr) const;
  // Whether WalkSets walks `part`'s lines side by side on this thread (`cache`: the thread's
  // cache for its SetDfa, null when it has none): a SetDfa part without a gate whose walks read
  // walk_ahead_bytes or more on average, or unknown yet.
  bool WalksAhead(const RuleSet::SetPart& part, const SetDfa::Cache* cache) const;
  // The SetDfa passes of `index`'s parts over `lines`, walked side by side
  // (SetDfa::MatchMany), into scratch.walked (parts_per_line rows per line).
  void WalkSets(const RuleSet::FormatIndex& index, absl::Span<const ParsedLine* const> lines,
                Scratch& scratch) const;
  // Prematch of one line, its Sets walked or not (`walked`, as CollectCandidates).
  void PrematchLine(palisade::v1::LogFormat format, const RuleSet::FormatIndex& index,
                    const ParsedLine& line, Scratch& scratch, const Scratch::Walked* walked,
                    PrematchBuffer* out) const;
  // The session id of a rule's match (its pid's, or its `by` capture's) into `*id`; false when
  // the line has none (no pid, no capture) or it is too long to keep.
  static bool SessionId(const CompiledRule& rule, int pattern_index, const ParsedLine& line,
                        uint32_t stream, std::string* id);
  static bool PidSessionId(const ParsedLine& line, uint32_t stream, std::string* id);
  // Whether a counted match of `rule` on `line` notes a session (NoteCounted): a session rule's,
  // or one on a line with a pid whose program some pid-session rule reads (not an access line's);
  // never a token rule's (a token is a secret: it is kept nowhere but the detection that revokes
  // it). Inline: asked of every counted match.
  bool NotesSession(const CompiledRule& rule, const ParsedLine& line) const {
    if (rule.proto.key_kind() == palisade::v1::TargetKind::TARGET_KIND_TOKEN_FINGERPRINT) {
      return false;
    }
    return rule.has_session || (!line.pid.empty() && rules_->NotesPidSession(line.program));
  }
  // After a counted match that NotesSession: notes its key in its session, marks the session
  // failed.
  void NoteCounted(const CompiledRule& rule, int pattern_index, const ParsedLine& line,
                   absl::string_view key, absl::Time time, uint32_t stream);
  // SessionTable::Note, and the pending matches it releases into ThreadScratch().released
  // (those of the current rules whose key normalises and is not allowlisted).
  void NoteInSession(absl::string_view id, absl::string_view name, absl::string_view value,
                     bool failed, absl::Time time, uint32_t stream);
  // Keeps ThreadScratch().pend in their sessions, with `raw` (redacted, cut) as evidence.
  void KeepPending(absl::string_view raw, absl::Time time, uint32_t stream);

  // The rule's conditions on the other captures of the last match (in the scratch groups).
  bool ConditionsHold(const CompiledRule& rule, int pattern_index) const;
  // Normalises a captured key into the scratch; returns false when invalid. Depends on nothing
  // but its arguments and the allowlist (the scratch is a cache): Prematch calls it too.
  bool NormaliseKey(const CompiledRule& rule, absl::string_view captured, absl::string_view* key,
                    bool* allowlisted) const;
  // `line` gives the line as evidence (redacted), called only when the count keeps it: most
  // counts of a rule with a threshold keep no line (see Count), and then the line is never
  // searched for tokens. `key_hash`, when given, is WindowHash()(key) (Prematch's).
  // Counts in the key's window, and an IPv6 address's in its range's too (CountRange).
  void Count(int rule_index, absl::string_view key,
             absl::FunctionRef<absl::string_view()> line, absl::Time time,
             absl::string_view secret, uint32_t stream, std::vector<Detection>* out,
             const size_t* key_hash = nullptr);
  // The count in one window, whose detection has target kind `kind`; returns whether the window
  // filled. Without `detect`, a window that fills starts over and raises nothing.
  bool CountWindow(int rule_index, absl::string_view key, palisade::v1::TargetKind kind,
                   bool detect, absl::FunctionRef<absl::string_view()> line, absl::Time time,
                   absl::string_view secret, uint32_t stream, std::vector<Detection>* out,
                   const size_t* key_hash);
  // The count of an IPv6 address rule's match (canonical `key`) in the window of its
  // ipv6_window_prefix range (EngineOptions::ipv6_window_prefix); `detect`: false when the
  // address's window filled on this line.
  void CountRange(int rule_index, absl::string_view key, bool detect,
                  absl::FunctionRef<absl::string_view()> line, absl::Time time, uint32_t stream,
                  std::vector<Detection>* out);
  // The eviction orders: nearest to a detection last, then least recently active first
  // (Window::touched, unique in a shard). A window one match short goes after one further from
  // it, however old: else a flood of fresh addresses, each under the threshold, pushed out a
  // slow guesser's window one match short of it, and it never filled. Nearness is the most
  // matches the window holds within any one span (MostWithinASpan): a window of late lines
  // keeps up to twice the threshold spread over many spans, which are no nearer to a detection
  // than its best span's, and one line dated ahead does not make its newest match a lone one.
  // `span`: the rule's window in ms. First: minus the missing amount (ascending order).
  using EvictionRank = std::pair<int64_t, uint64_t>;
  static size_t MostWithinASpan(const Window& w, int64_t span);
  // Within one rule (EvictOldestLocked): by the matches still missing to its threshold.
  static EvictionRank RankOf(const Window& w, size_t count, int64_t span) {
    const size_t held = std::min(MostWithinASpan(w, span), count);
    return {-static_cast<int64_t>(count - held), w.touched};
  }
  // Over the rules of a shard (EnforceBudgetLocked): by the share of its rule's threshold still
  // missing, in 2^-32ths (exact between thresholds under 2^16). Not the count: 20 of
  // web-request-flood's 120 (a real flood at 100) are more than sshd's 2 of 3 (one line of
  // junk), and by the count every high-threshold window went before any junk of a low one.
  static EvictionRank BudgetRankOf(const Window& w, size_t count, int64_t span) {
    if (count == 0) return {0, w.touched};
    const uint64_t held = std::min<uint64_t>(MostWithinASpan(w, span), count);
    const uint64_t missing = ((static_cast<uint64_t>(count) - held) << 32) / count;
    return {-static_cast<int64_t>(missing), w.touched};
  }
  // Makes room for a new key of `rule_index` in `shard`, whose maps[rule_index] is `map`: from
  // `map`, or when it is empty from another shard whose lock is free.
  void Evict(Shard& shard, WindowMap& map, int rule_index)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Drops the first tenth of `from` (a map of `in`, not empty) in RankOf's order in one go, so
  // eviction is amortised O(1) per insert.
  void EvictOldestLocked(Shard& in, WindowMap& from, int rule_index)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(in.mu);
  // The shard of (rule, key), from the key's hash in the rule's table (WindowHash): a count
  // hashes its key once, for both.
  Shard& ShardFor(int rule_index, size_t key_hash);
  // Memory accounting; every change to a shard's windows or tables goes through these.
  void AccountLocked(Shard& shard, int64_t delta) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  void EraseLocked(Shard& shard, WindowMap& map, WindowMap::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Gives back the table memory of a map left mostly empty (tables do not shrink on erase).
  void ShrinkLocked(Shard& shard, WindowMap& map) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Recounts a shard from scratch (after a rule swap).
  void RecountLocked(Shard& shard) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Past the shard's share of memory_budget_bytes: drops its windows in BudgetRankOf's order.
  void EnforceBudgetLocked(Shard& shard) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  static size_t TableBytes(const WindowMap& map);
  // ExpireByStream over the rules whose `due` is set (all of them when `due` is null), and the
  // sessions when `sessions`.
  void ExpireSelected(const std::vector<absl::Time>& stream_now, absl::Time other_now,
                      const std::vector<char>* due, bool sessions);

  std::shared_ptr<const RuleSet> rules_;
  EngineOptions options_;
  std::unique_ptr<Shard[]> shards_;
  SessionTable sessions_;
  std::unique_ptr<std::atomic<uint64_t>[]> matches_per_rule_;
  std::unique_ptr<std::atomic<int64_t>[]> windows_per_rule_;  // live windows, all shards
  absl::flat_hash_map<std::string, int> rule_index_;  // rule id -> index (CountMatch, pending)
  size_t rule_count_ = 0;
  // ExpireSpread's next walk per rule index (empty after SetRules: every rule is due) and the
  // sessions', in Unix milliseconds.
  std::vector<int64_t> spread_next_ms_;
  int64_t spread_sessions_next_ms_ = std::numeric_limits<int64_t>::min();
  // A cut evidence line keeps at most this (its share of the ring, at least kMinEvidenceLine),
  // of which kMarkerRoom is left for " [N bytes cut]".
  static constexpr uint32_t kMinEvidenceLine = 64;
  static constexpr uint32_t kMarkerRoom = 24;
  uint32_t evidence_line_bytes_ = 0;
  // Unique per Engine object and allowlist (never 0): what ThreadScratch's address cache,
  // which remembers whether an address is allowlisted, belongs to.
  uint64_t id_;
  static uint64_t NextId();
  // Window::stream of a window Restore made that no line has counted in since, and when
  // Restore ran (unix ms): such a window ages from then (see Restore).
  static constexpr uint32_t kRestoredStream = UINT32_MAX;
  int64_t restored_at_ms_ = std::numeric_limits<int64_t>::min();
  // On cache lines of their own: the ordered thread adds to them on every line, and a
  // prematching thread reading id_ from the line they shared took it away each time (the
  // increment after was ~7 % of the ordered thread's samples, every pack's nginx replay on two
  // threads).
  struct alignas(64) AtomicStats {
    std::atomic<uint64_t> lines{0}, matched_lines{0}, detections{0}, evicted_windows{0},
        memory_evicted_windows{0}, evidence_truncated{0}, expired_windows{0}, invalid_keys{0},
        ignored{0}, session_misses{0};
  };
  AtomicStats stats_;
};

// --- implementation of the templates ---------------------------------------------------------

// Debian's absl::string_view is Abseil's own class, not std::string_view, so RE2 needs a Piece.
inline re2::StringPiece Piece(absl::string_view s) { return re2::StringPiece(s.data(), s.size()); }

template <typename Fn>
void Engine::Candidates(palisade::v1::LogFormat format, const ParsedLine& line, absl::Time time,
                        uint32_t stream, Fn fn, const PrematchedLine* prematched) {
  const RuleSet::FormatIndex* index = rules_->ForFormat(format);
  if (index == nullptr) return;
  Scratch& scratch = ThreadScratch();
  std::vector<std::pair<int, int>>& candidates = scratch.candidates;
  std::vector<re2::StringPiece>& groups = scratch.groups;
  candidates.clear();
  scratch.pend.clear();
  scratch.released.clear();
  scratch.fields.used = 0;
  ++scratch.line;
  // Prematch's candidates come sorted, each maybe with its first match found already.
  if (prematched == nullptr) {
    CollectCandidates(*index, line, scratch, &candidates);
    if (candidates.size() > 1) std::sort(candidates.begin(), candidates.end());
  }
  const size_t count = prematched != nullptr ? prematched->candidates.size() : candidates.size();
  int last_rule = -1;
  CompiledRule::LeadingRun run;  // this line's, for its rules led by an address
  for (size_t k = 0; k < count; ++k) {
    const PrematchedCandidate* pre = prematched != nullptr ? &prematched->candidates[k] : nullptr;
    const int rule_index = pre != nullptr ? pre->rule : candidates[k].first;
    const int encoded = pre != nullptr ? pre->pattern : candidates[k].second;
    const int pattern_index = encoded >> 1;
    const bool proven = (encoded & 1) == 0;
    const CompiledRule& rule = *rules_->rules()[rule_index];
    // One match per rule per line, except for token rules: every token on a line is a leak of
    // its own (each pattern, each match; the caller drops a token found twice).
    const bool every =
        rule.proto.key_kind() == palisade::v1::TargetKind::TARGET_KIND_TOKEN_FINGERPRINT;
    if (rule_index == last_rule && !every) continue;
    if (pre != nullptr && pre->state == PrematchedCandidate::State::kNoMatch) continue;
    if (!rule.AppliesToProgram(format, line.program)) continue;
    // What the patterns read: the message, or a field rule's field (absent: no match).
    absl::string_view text;
    if (!RuleText(format, rule, line, &scratch.fields, &text)) continue;
    const RE2& re = *rule.patterns[pattern_index];
    const int group = rule.key_group[pattern_index];
    const int n = rule.submatches[pattern_index];
    if (groups.size() < static_cast<size_t>(n)) groups.resize(n);
    // Found by Prematch: its captures, at the same offsets of the same text.
    const bool found = pre != nullptr && pre->state == PrematchedCandidate::State::kMatched;
    size_t start = 0;
    auto next_match = [&]() {
      if (start == 0) {
        if (found) {
          // A rule without conditions or a session reads no capture but its key (and a token
          // rule's are never found here): the others are not copied.
          const bool key_only = rule.conditions.empty() && !rule.has_session && group >= 0;
          for (int i = key_only ? group : 0; i < (key_only ? group + 1 : n); ++i) {
            const auto& [offset, size] = prematched->buffer->groups[pre->groups + i];
            groups[i] = offset == PrematchBuffer::kUnset
                            ? re2::StringPiece()
                            : re2::StringPiece(text.data() + offset, size);
          }
          return true;
        }
        if (!every) {
          return FirstMatch(rule, pattern_index, proven, CutEnd(line), text, groups.data(), &run);
        }
      }
      // A token that ends at the cut may have gone on past it: refused, and it is the last.
      return start <= text.size() &&
             re.Match(Piece(text), start, text.size(), RE2::UNANCHORED, groups.data(), n) &&
             !EndsAtCut(CutEnd(line), rule, pattern_index, groups[0], text);
    };
    while (next_match()) {
      // A session rule's pattern may have no key group, or leave it out of this match.
      const bool has_key = group >= 0 && groups[group].data() != nullptr;
      absl::string_view key =
          has_key ? absl::string_view(groups[group].data(), groups[group].size())
                  : absl::string_view();
      // A field rule without a key group is keyed on the record's client address, the field
      // the server wrote (rules.proto).
      if (!has_key && !rule.proto.field().empty()) key = line.client_address;
      if (rule.conditions.empty() || ConditionsHold(rule, pattern_index)) {
        bool in_session = false;
        bool proceed = true;
        if (rule.has_session) {
          const palisade::v1::Session& session = rule.proto.session();
          in_session = SessionId(rule, pattern_index, line, stream, &scratch.session_id);
          if (session.note_only()) {
            // An ignored line neither notes, drops nor ends (fail2ban reads ignoreregex first).
            if (in_session && !rule.ignores.empty() &&
                IgnoredHere(format, rule_index, rule, line, found ? pre : nullptr,
                            prematched != nullptr, &scratch.fields)) {
              in_session = false;
            }
            // A success: what failed before it in the session was not an attack.
            if (in_session && session.succeeded()) sessions_.DropPending(scratch.session_id);
            if (in_session && has_key) {
              NoteInSession(scratch.session_id, rule.proto.key(), key, /*failed=*/false, time,
                            stream);
              scratch.noted = false;
            }
            proceed = false;
          } else {
            if (!has_key) {
              if (in_session && sessions_.Get(scratch.session_id, rule.proto.key(), time,
                                              &scratch.session_value)) {
                key = scratch.session_value;
              } else if (in_session && session.pending() &&
                         !(session.after_failure() &&
                           !sessions_.Failed(scratch.session_id, time))) {
                // Kept until a later line of the session names the key (KeepPending).
                if (!IgnoredHere(format, rule_index, rule, line, found ? pre : nullptr,
                                 prematched != nullptr, &scratch.fields)) {
                  scratch.pend.emplace_back(rule_index, scratch.session_id);
                }
                last_rule = rule_index;
                proceed = false;
              } else {
                stats_.session_misses.fetch_add(1, std::memory_order_relaxed);
                proceed = false;
              }
            }
            if (proceed && session.after_failure() &&
                !(in_session && sessions_.Failed(scratch.session_id, time))) {
              proceed = false;
            }
          }
        }
        if (proceed) {
          last_rule = rule_index;
          if (fn(rule_index, key, found ? pre : nullptr, has_key) && NotesSession(rule, line)) {
            NoteCounted(rule, pattern_index, line, key, time, stream);
          }
        }
        // Rebuilt: NoteCounted may have reused the scratch id for the line's pid.
        if (in_session && rule.proto.session().ends() &&
            SessionId(rule, pattern_index, line, stream, &scratch.session_id)) {
          // The connection is over: its matches this line kept pending go with it (added
          // after the line, they would wait in a new session of the same id for the next
          // connection to reuse it).
          const size_t pending_before = scratch.pend.size();
          scratch.pend.erase(std::remove_if(scratch.pend.begin(), scratch.pend.end(),
                                            [&](const auto& p) {
                                              return p.second == scratch.session_id;
                                            }),
                             scratch.pend.end());
          sessions_.End(scratch.session_id, pending_before - scratch.pend.size());
          scratch.noted = false;
        }
      }
      if (!every) break;
      // Resume right after the key, not after the match: the separator a match consumed after
      // one token is the one the next token's pattern needs before it.
      const re2::StringPiece& end = has_key ? groups[group] : groups[0];
      const size_t next = static_cast<size_t>(end.data() - text.data()) + end.size();
      start = next > start ? next : start + 1;
    }
  }
}

template <typename Fn>
void Engine::MatchOnly(palisade::v1::LogFormat format, const ParsedLine& read, Fn fn,
                       absl::Time time) {
  Scratch& scratch = ThreadScratch();
  const ParsedLine& line = ReadableLine(format, read, &scratch.decoded, &scratch.decoded_line);
  Candidates(format, line, time, /*stream=*/0,
             [&](int rule_index, absl::string_view captured, const PrematchedCandidate*, bool) {
               const CompiledRule& rule = *rules_->rules()[rule_index];
               if (IgnoredHere(format, rule_index, rule, line, /*found=*/nullptr,
                               /*prematched=*/false, &scratch.fields)) {
                 return false;
               }
               absl::string_view key;
               bool allowlisted = false;
               if (!NormaliseKey(rule, captured, &key, &allowlisted)) return false;
               fn(rule, key);
               return true;
             });
}

}  // namespace palisade

#endif  // PALISADE_SERVICES_ENGINE_ENGINE_H_
