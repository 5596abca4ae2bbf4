// SetDfa answers an RE2::Set's question (which of its patterns match a text, anchored at the
// start or anywhere) for texts of ASCII bytes, with a DFA of its own: a lazily built subset
// automaton whose loop reads a byte in six instructions with one load on the path from byte to
// byte, where RE2 20220601's DFA takes sixteen, and whose pass has no set-up (RE2's costs ~600
// instructions before the first byte and ~500 more to allocate the match set;
// docs/PERFORMANCE.md, "Tenth pass" and "Sixteenth pass"). RE2 has no API to
// reach its own automaton, so this is written here; RE2 stays the reference and the fallback:
// - the patterns are read by ParseRegex (regex_tree.h), and what each one-character piece
//   matches among the 128 ASCII bytes is asked of RE2 itself (ReNode::atom), so the language of
//   each pattern over ASCII is RE2's;
// - a text holding a byte >= 0x80, or whose walk fills the cache more than twice, gets no
//   answer (Match returns false) and the caller asks the RE2::Set; so do the next lines of a
//   cache whose recent lines each built many transitions (Cache::resting_);
// - Build refuses patterns with syntax it does not model (\b, \B, (?m)^ and $), and the caller
//   keeps the RE2::Set for that Set.
// Membership is all a Set answers (which patterns have some match), so there are no priorities,
// captures or match positions: a pattern is a language, and the DFA's state is the set of
// automaton positions still alive plus the patterns already matched (their positions dropped:
// a state with none left ends the walk early, as RE2's dead state does).
//
// MatchMany answers many texts in one call, walking four side by side (the walks' loads wait for
// memory together), each answer the one Match gives.
//
// Thread-safety: a SetDfa is immutable once built and may be shared; each thread brings its own
// Cache (the states it has built), which must not be used by two threads at once.
#ifndef PALISADE_SERVICES_ENGINE_SET_DFA_H_
#define PALISADE_SERVICES_ENGINE_SET_DFA_H_

#include <array>
#include <bitset>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace palisade {

class SetDfa {
 public:
  // Built states a Cache may hold, in bytes, before it starts over.
  static constexpr size_t kDefaultCacheBytes = 2 << 20;

  // The automaton of `patterns` (RE2 syntax, as added to the RE2::Set, in its order: a hit is
  // an index into it). `anchored`: matches must start at the text's start (RE2::ANCHOR_START).
  // kInvalidArgument, naming the pattern, for syntax it does not model; kResourceExhausted when
  // the patterns need more than `max_positions` automaton positions (repetition counts unrolled).
  static absl::StatusOr<std::unique_ptr<const SetDfa>> Build(
      const std::vector<std::string>& patterns, bool anchored, size_t max_positions = 100000);

  // One thread's built states for one SetDfa: reused from line to line, bounded in bytes.
  class Cache {
   public:
    explicit Cache(size_t max_bytes = kDefaultCacheBytes) : max_bytes_(max_bytes) {}
    size_t states() const { return states_.size(); }
    size_t resets() const { return resets_; }
    // The SetDfa (id) whose states it holds; 0: none yet.
    uint64_t owner() const { return owner_; }
    // Lines Match left to RE2 because this cache was resting (see resting_ below).
    uint64_t rested() const { return rested_; }
    // The bytes its recent walks read before their answer was known (the text's end, or no
    // pattern left alive): a moving mean, each walk moving it 1/16 of the way to its own.
    size_t mean_walk_bytes() const { return mean_walk_ >> 4; }

   private:
    friend class SetDfa;
    struct State {
      std::vector<int32_t> positions;  // sorted: Byte and End positions alive
      std::vector<int32_t> matched;    // sorted: patterns matched so far
      bool end_known = false;
      std::vector<int32_t> at_end;     // patterns matched once the text ends here (sorted)
    };
    // A state's row: one entry per byte class, saying where a byte of that class leads: the
    // address of the next state's row, or kUnknownEntry (not built yet), kBailEntry (a byte
    // past ASCII), or a row's address | kDoneBit for a state with no position left (the walk
    // can stop). The entry before a row holds its state's index. Rows live in blocks that never
    // move, so a walk goes from row to row with one load a byte and no arithmetic (SetDfa::Match).
    using Entry = uintptr_t;
    std::vector<std::unique_ptr<Entry[]>> blocks_;
    size_t block_rows_ = 0;  // rows used in the last block
    std::vector<Entry*> rows_;  // per state
    std::vector<State> states_;
    absl::flat_hash_map<std::string, int32_t> index_;  // positions + matched -> state index
    int32_t start_state_ = -1;
    size_t bytes_ = 0;
    size_t max_bytes_;
    size_t resets_ = 0;
    uint64_t owner_ = 0;  // the SetDfa (id) whose states these are
    std::vector<uint32_t> marks_;
    uint32_t generation_ = 0;
    // Buffers a Step reuses (no allocation per built transition).
    std::vector<int32_t> from_, positions_, matched_;
    std::string key_;
    // Lines whose walks build states all along (bytes a writer chose so that each line meets
    // new states: the cost is then building them, which RE2's DFA does faster) send the next
    // lines to RE2: over each kWindowLines lines Match counts the automaton positions its new
    // transitions visited (`visited_`), and past kWindowLines * kVisitsPerLine the cache rests
    // for `rest_` lines: kRestLines, doubled (up to kMaxRestLines) each time the window after
    // a rest finds the same, back to kRestLines when it does not. Only what a line costs
    // depends on it, never its answer.
    uint64_t visited_ = 0;
    uint32_t window_lines_ = 0;
    uint64_t window_visits_ = 0;
    uint32_t resting_ = 0;  // lines still to send to RE2
    uint32_t rest_ = 0;     // the last rest's length (0: the last window did not rest)
    uint64_t rested_ = 0;   // lines sent to RE2 that way, in all
    std::vector<int> hits_;  // MatchMany's, per text
    uint32_t mean_walk_ = 0;  // mean_walk_bytes() * 16
  };

  // Fills `hits` with the patterns that match `text`, in ascending order, and returns true; or
  // returns false (and `hits` is unspecified) when the text holds a byte >= 0x80 or the cache
  // filled up more than twice on its way: the caller asks RE2.
  bool Match(absl::string_view text, Cache* cache, std::vector<int>* hits) const;

  // Match's answers for many texts: the hits of texts[i] are hits[spans[i].first,
  // spans[i].second), or spans[i].first is kNoAnswer where Match returns false.
  struct Answers {
    static constexpr uint32_t kNoAnswer = UINT32_MAX;
    std::vector<std::pair<uint32_t, uint32_t>> spans;
    std::vector<int> hits;
    bool answered(size_t i) const { return spans[i].first != kNoAnswer; }
  };
  // What Match answers for each of `texts`, in one call that walks kLanes texts side by side. A
  // walk waits on one load a byte (the next state's row), so a text alone takes that latency
  // for each of its bytes; the loads of kLanes walks are independent and wait together
  // (docs/PERFORMANCE.md, "Eighteenth pass"). The answers are Match's, text by text: only what
  // the cache holds afterwards, and so what the next texts cost, may differ.
  void MatchMany(absl::Span<const absl::string_view> texts, Cache* cache,
                 Answers* answers) const;

  // What the process keeps of RE2's answers about one-character pieces (shared by every Build;
  // at most 1 MiB, pieces of more than 256 bytes never kept).
  static size_t AtomMemoryBytes();

  // Unique per SetDfa built in this process (never 0): what a Cache belongs to.
  uint64_t id() const { return id_; }
  size_t positions() const { return nodes_.size(); }
  int classes() const { return classes_; }

 private:
  friend class SetDfaBuilder;
  static constexpr Cache::Entry kUnknownEntry = 1;
  static constexpr Cache::Entry kBailEntry = 3;
  static constexpr Cache::Entry kDoneBit = 2;
  static constexpr size_t kRowsPerBlock = 16;
  static constexpr uint32_t kWindowLines = 256;
  static constexpr uint32_t kMaxRestLines = 1u << 20;
  static constexpr uint64_t kVisitsPerLine = 1000;
  static constexpr uint32_t kRestLines = 4096;

  enum class Kind : uint8_t { kByte, kSplit, kBegin, kEnd, kMatch };
  struct Node {
    Kind kind = Kind::kSplit;
    int32_t owner = 0;              // the pattern this position belongs to
    int32_t out = -1;               // kByte, kBegin, kEnd: the next position; kMatch: unused
    std::vector<int32_t> outs;      // kSplit
    std::bitset<128> bytes;         // kByte
  };

  // Walks side by side in MatchMany: four rows and four texts stay in x86-64's registers with
  // the loop's other values (as arrays, the compiler kept them on the stack, and each load
  // then waited on a store as well: docs/PERFORMANCE.md, "Eighteenth pass").
  static constexpr size_t kLanes = 4;

  // One text's walk: the next byte to read and the row of the state before it.
  struct Walk {
    static constexpr size_t kIdle = SIZE_MAX;
    const unsigned char* begin = nullptr;
    const unsigned char* p = nullptr;
    const unsigned char* end = nullptr;
    const Cache::Entry* row = nullptr;
    bool done = false;    // the state has no position left: no later byte changes the answer
    size_t resets = 0;    // the cache's resets when the walk began (TakeByte)
    size_t text = kIdle;  // MatchMany: the text's index; kIdle: no text
  };

  SetDfa() = default;
  // Adds the positions reached from `from` by empty moves to `positions` and the patterns
  // matched on the way to `matched` (neither deduplicated nor sorted).
  void Closure(const std::vector<int32_t>& from, bool at_start, bool at_end, Cache* cache,
               std::vector<int32_t>* positions, std::vector<int32_t>* matched) const;
  // The index of the state (positions, matched) after dropping the positions of matched
  // patterns, built if new (after starting the cache over when it is full).
  // `positions` and `matched` are sorted in place (the cache's buffers, or the caller's).
  int32_t Intern(std::vector<int32_t>& positions, std::vector<int32_t>& matched,
                 Cache* cache) const;
  // Builds the entry of `state`'s row for `cls` and returns it; the entry is not kept when the
  // cache started over on the way (the row is gone), but the state it leads to is valid.
  Cache::Entry Step(int32_t state, int cls, Cache* cache) const;
  void Reset(Cache* cache) const;
  // The start state's row, built if the cache has none (which may start the cache over).
  const Cache::Entry* StartRow(Cache* cache) const;
  // Puts `w` back at its text's first byte, in the start state.
  void Restart(Walk* w, Cache* cache) const;
  // Takes the byte at w->p, whose entry `to` is not a built state's row: builds the state it
  // leads to, or marks the walk done. False when the text gets no answer (a byte past ASCII;
  // the cache filled more than twice since the walk began).
  bool TakeByte(Walk* w, Cache::Entry to, Cache* cache) const;
  // Walks `w` to its text's end or until it is done; false as TakeByte.
  bool Run(Walk* w, Cache* cache) const;
  // The hits of a walk that ended (done, or at its text's end).
  void Answer(const Walk& w, Cache* cache, std::vector<int>* hits) const;
  // Counts one line and the automaton positions its walk visited towards the cache's rest, and
  // the bytes it read towards the cache's mean_walk_bytes.
  void CountLine(uint64_t visits, const Walk& w, Cache* cache) const;
  const std::vector<int32_t>& AtEnd(int32_t state, Cache* cache) const;

  std::vector<Node> nodes_;
  int32_t start_ = 0;  // the position every pattern starts from (a kSplit)
  int patterns_ = 0;
  bool anchored_ = true;
  int classes_ = 0;                          // byte classes; the last is every byte >= 0x80
  std::array<uint8_t, 256> class_of_{};      // byte -> class
  std::vector<uint8_t> representative_;      // class -> an ASCII byte of it
  uint64_t id_ = 0;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_ENGINE_SET_DFA_H_
