#include "services/engine/set_dfa.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <map>
#include <set>
#include <utility>

#include "absl/base/optimization.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "re2/re2.h"
#include "services/engine/regex_tree.h"

namespace palisade {
namespace {

using retree::CharSet;
using retree::ReNode;

std::atomic<uint64_t> next_id{1};

// What a one-character piece matches among the ASCII bytes, asked of RE2 (ReNode::atom): a
// compile and 128 matches per distinct atom, remembered for the process (the Sets of one load,
// and of the next, share most of their atoms: `\S`, `\d`, `[0-9A-Fa-f:.]`). Bounded in bytes,
// as packs come from clients too (Admin.TestRules): an atom longer than kMaxAtomBytes is asked
// of RE2 each time and not kept, and past kMaxBytes the memory starts over.
class AsciiAtoms {
 public:
  static constexpr size_t kMaxAtomBytes = 256;
  static constexpr size_t kMaxBytes = size_t{1} << 20;
  static constexpr size_t kEntryBytes = 96;  // a map node and its bitset, beside the key

  static absl::StatusOr<std::bitset<128>> Of(const ReNode& n) {
    const bool keep = n.atom.size() <= kMaxAtomBytes;
    if (keep) {
      absl::MutexLock lock(&mu_);
      auto it = known().find(n.atom);
      if (it != known().end()) return it->second;
    }
    RE2::Options options;
    options.set_log_errors(false);
    const RE2 re(n.atom, options);
    std::bitset<128> set;
    if (!re.ok()) {
      // A byte of a multi-byte character spelled alone (`é` is two pieces): no ASCII byte.
      bool ascii = false;
      for (int b = 0; b < 128; ++b) ascii = ascii || n.chars[b];
      if (ascii) {
        return absl::InvalidArgumentError(
            absl::StrCat("RE2 cannot read the piece ", n.atom, " alone: ", re.error()));
      }
    } else {
      for (int b = 0; b < 128; ++b) {
        const char c = static_cast<char>(b);
        if (RE2::FullMatch(re2::StringPiece(&c, 1), re)) set.set(b);
      }
    }
    if (!keep) return set;
    absl::MutexLock lock(&mu_);
    const size_t bytes = n.atom.size() + kEntryBytes;
    if (bytes_ + bytes > kMaxBytes) {
      known().clear();
      bytes_ = 0;
    }
    if (known().emplace(n.atom, set).second) bytes_ += bytes;
    return set;
  }

  static size_t Bytes() {
    absl::MutexLock lock(&mu_);
    return bytes_;
  }

 private:
  static std::map<std::string, std::bitset<128>>& known() {
    static auto* map = new std::map<std::string, std::bitset<128>>();
    return *map;
  }
  static absl::Mutex mu_;
  static size_t bytes_ ABSL_GUARDED_BY(mu_);
};
absl::Mutex AsciiAtoms::mu_(absl::kConstInit);
size_t AsciiAtoms::bytes_ = 0;

void SortUnique(std::vector<int32_t>* v) {
  std::sort(v->begin(), v->end());
  v->erase(std::unique(v->begin(), v->end()), v->end());
}

}  // namespace

// Builds the positions of one pattern right to left: Add(n, next) is where a match of `n`
// followed by whatever `next` starts begins.
class SetDfaBuilder {
 public:
  SetDfaBuilder(std::vector<SetDfa::Node>* nodes, size_t max_positions)
      : nodes_(*nodes), max_positions_(max_positions) {}

  absl::StatusOr<int32_t> Add(const ReNode& n, int32_t next, int32_t owner) {
    if (nodes_.size() > max_positions_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("more than ", max_positions_, " automaton positions"));
    }
    switch (n.kind) {
      case ReNode::kChars: {
        absl::StatusOr<std::bitset<128>> bytes = AsciiAtoms::Of(n);
        if (!bytes.ok()) return bytes.status();
        const int32_t at = New(SetDfa::Kind::kByte, owner);
        nodes_[at].bytes = *bytes;
        nodes_[at].out = next;
        return at;
      }
      case ReNode::kBeginText:
      case ReNode::kEndText: {
        const int32_t at = New(
            n.kind == ReNode::kBeginText ? SetDfa::Kind::kBegin : SetDfa::Kind::kEnd, owner);
        nodes_[at].out = next;
        return at;
      }
      case ReNode::kEmptyWidth:
        return absl::InvalidArgumentError("\\b, \\B and (?m)^ $ are not modelled");
      case ReNode::kConcat:
        for (auto sub = n.subs.rbegin(); sub != n.subs.rend(); ++sub) {
          absl::StatusOr<int32_t> at = Add(*sub, next, owner);
          if (!at.ok()) return at;
          next = *at;
        }
        return next;
      case ReNode::kGroup:
        return Add(n.subs[0], next, owner);
      case ReNode::kAlternate: {
        std::vector<int32_t> outs;
        for (const ReNode& sub : n.subs) {
          absl::StatusOr<int32_t> at = Add(sub, next, owner);
          if (!at.ok()) return at;
          outs.push_back(*at);
        }
        return Split(std::move(outs), owner);
      }
      case ReNode::kRepeat: {
        const ReNode& sub = n.subs[0];
        if (n.max == -1) {
          // x{min,}: min copies, then a loop that takes x again or goes on.
          const int32_t loop = New(SetDfa::Kind::kSplit, owner);
          absl::StatusOr<int32_t> body = Add(sub, loop, owner);
          if (!body.ok()) return body;
          nodes_[loop].outs = {*body, next};
          next = loop;
        } else {
          // x{min,max}: min copies, then max - min optional ones, each a choice to go on.
          const int32_t after = next;
          for (int i = n.min; i < n.max; ++i) {
            absl::StatusOr<int32_t> body = Add(sub, next, owner);
            if (!body.ok()) return body;
            next = Split({*body, after}, owner);
          }
        }
        for (int i = 0; i < n.min; ++i) {
          absl::StatusOr<int32_t> body = Add(sub, next, owner);
          if (!body.ok()) return body;
          next = *body;
        }
        return next;
      }
    }
    return absl::InvalidArgumentError("unknown piece");
  }

  int32_t New(SetDfa::Kind kind, int32_t owner) {
    nodes_.emplace_back();
    nodes_.back().kind = kind;
    nodes_.back().owner = owner;
    return static_cast<int32_t>(nodes_.size() - 1);
  }

 private:
  int32_t Split(std::vector<int32_t> outs, int32_t owner) {
    const int32_t at = New(SetDfa::Kind::kSplit, owner);
    nodes_[at].outs = std::move(outs);
    return at;
  }

  std::vector<SetDfa::Node>& nodes_;
  const size_t max_positions_;
};

size_t SetDfa::AtomMemoryBytes() { return AsciiAtoms::Bytes(); }

absl::StatusOr<std::unique_ptr<const SetDfa>> SetDfa::Build(
    const std::vector<std::string>& patterns, bool anchored, size_t max_positions) {
  std::unique_ptr<SetDfa> dfa(new SetDfa());
  dfa->anchored_ = anchored;
  dfa->patterns_ = static_cast<int>(patterns.size());
  SetDfaBuilder builder(&dfa->nodes_, max_positions);
  dfa->start_ = builder.New(Kind::kSplit, -1);
  for (size_t i = 0; i < patterns.size(); ++i) {
    const int32_t owner = static_cast<int32_t>(i);
    absl::StatusOr<ReNode> tree = retree::ParseRegex(patterns[i]);
    absl::StatusOr<int32_t> entry = absl::UnknownError("");
    if (tree.ok()) {
      const int32_t match = builder.New(Kind::kMatch, owner);
      entry = builder.Add(*tree, match, owner);
    } else {
      entry = tree.status();
    }
    if (!entry.ok()) {
      return absl::Status(entry.status().code(),
                          absl::StrCat("pattern ", i + 1, " (", patterns[i],
                                       "): ", entry.status().message()));
    }
    dfa->nodes_[dfa->start_].outs.push_back(*entry);
  }
  // Byte classes: ASCII bytes no position tells apart share one; every byte >= 0x80 is the last.
  // Refined one distinct byte set at a time: a class splits where the set splits it.
  std::set<std::pair<uint64_t, uint64_t>> distinct;
  for (const Node& n : dfa->nodes_) {
    if (n.kind != Kind::kByte) continue;
    std::pair<uint64_t, uint64_t> words{0, 0};
    for (int b = 0; b < 64; ++b) {
      words.first |= uint64_t{n.bytes[b]} << b;
      words.second |= uint64_t{n.bytes[b + 64]} << b;
    }
    distinct.insert(words);
  }
  std::array<int, 128> class_of{};
  int classes = 1;
  for (const auto& [low, high] : distinct) {
    std::array<int, 256> split;
    split.fill(-1);
    int next = 0;
    for (int b = 0; b < 128; ++b) {
      const int in = static_cast<int>(((b < 64 ? low >> b : high >> (b - 64))) & 1);
      int& to = split[class_of[b] * 2 + in];
      if (to < 0) to = next++;
      class_of[b] = to;
    }
    classes = next;
  }
  dfa->representative_.assign(classes, 0);
  for (int b = 127; b >= 0; --b) {
    dfa->class_of_[b] = static_cast<uint8_t>(class_of[b]);
    dfa->representative_[class_of[b]] = static_cast<uint8_t>(b);
  }
  dfa->classes_ = classes + 1;
  for (int b = 128; b < 256; ++b) dfa->class_of_[b] = static_cast<uint8_t>(dfa->classes_ - 1);
  dfa->id_ = next_id.fetch_add(1);
  return std::unique_ptr<const SetDfa>(std::move(dfa));
}

void SetDfa::Closure(const std::vector<int32_t>& from, bool at_start, bool at_end, Cache* cache,
                     std::vector<int32_t>* positions, std::vector<int32_t>* matched) const {
  if (++cache->generation_ == 0) {
    std::fill(cache->marks_.begin(), cache->marks_.end(), 0);
    cache->generation_ = 1;
  }
  const uint32_t mark = cache->generation_;
  std::vector<int32_t> stack(from.rbegin(), from.rend());
  while (!stack.empty()) {
    const int32_t at = stack.back();
    stack.pop_back();
    if (cache->marks_[at] == mark) continue;
    cache->marks_[at] = mark;
    ++cache->visited_;
    const Node& n = nodes_[at];
    switch (n.kind) {
      case Kind::kByte:
        positions->push_back(at);
        break;
      case Kind::kSplit:
        for (auto out = n.outs.rbegin(); out != n.outs.rend(); ++out) stack.push_back(*out);
        break;
      case Kind::kBegin:
        if (at_start) stack.push_back(n.out);
        break;
      case Kind::kEnd:
        if (at_end) {
          stack.push_back(n.out);
        } else {
          positions->push_back(at);  // waits for the text's end (AtEnd)
        }
        break;
      case Kind::kMatch:
        matched->push_back(n.owner);
        break;
    }
  }
}

void SetDfa::Reset(Cache* cache) const {
  if (cache->owner_ == id_) {
    ++cache->resets_;
  } else {
    cache->window_lines_ = cache->resting_ = cache->rest_ = 0;
    cache->window_visits_ = 0;
  }
  cache->owner_ = id_;
  cache->blocks_.clear();
  cache->block_rows_ = 0;
  cache->rows_.clear();
  cache->states_.clear();
  cache->index_.clear();
  cache->start_state_ = -1;
  cache->bytes_ = 0;
  cache->marks_.assign(nodes_.size(), 0);
  cache->generation_ = 0;
}

int32_t SetDfa::Intern(std::vector<int32_t>& positions, std::vector<int32_t>& matched,
                       Cache* cache) const {
  SortUnique(&matched);
  if (!matched.empty()) {
    positions.erase(std::remove_if(positions.begin(), positions.end(),
                                   [&](int32_t p) {
                                     return std::binary_search(matched.begin(), matched.end(),
                                                               nodes_[p].owner);
                                   }),
                    positions.end());
  }
  SortUnique(&positions);
  std::string& key = cache->key_;
  key.assign(reinterpret_cast<const char*>(positions.data()), positions.size() * sizeof(int32_t));
  key.push_back('\xff');  // no position is -1: positions and matched cannot run together
  key.append(reinterpret_cast<const char*>(matched.data()), matched.size() * sizeof(int32_t));
  auto it = cache->index_.find(key);
  if (it != cache->index_.end()) return it->second;
  const size_t row_entries = static_cast<size_t>(classes_) + 1;
  const size_t bytes = row_entries * sizeof(Cache::Entry) + 2 * key.size() +
                       (positions.size() + matched.size()) * sizeof(int32_t) +
                       sizeof(Cache::State) + sizeof(Cache::Entry*) + 64;
  if (cache->bytes_ + bytes > cache->max_bytes_ && !cache->states_.empty()) Reset(cache);
  if (cache->blocks_.empty() || cache->block_rows_ == kRowsPerBlock) {
    cache->blocks_.emplace_back(new Cache::Entry[kRowsPerBlock * row_entries]);
    cache->block_rows_ = 0;
    cache->bytes_ += kRowsPerBlock * row_entries * sizeof(Cache::Entry);
  }
  cache->bytes_ += bytes - row_entries * sizeof(Cache::Entry);
  const int32_t state = static_cast<int32_t>(cache->states_.size());
  Cache::Entry* row = cache->blocks_.back().get() + cache->block_rows_++ * row_entries + 1;
  row[-1] = static_cast<Cache::Entry>(state);
  std::fill(row, row + classes_ - 1, kUnknownEntry);
  row[classes_ - 1] = kBailEntry;
  cache->rows_.push_back(row);
  cache->states_.push_back(Cache::State{positions, matched});
  cache->index_.emplace(key, state);
  return state;
}

SetDfa::Cache::Entry SetDfa::Step(int32_t state, int cls, Cache* cache) const {
  const uint8_t byte = representative_[cls];
  std::vector<int32_t>& from = cache->from_;
  std::vector<int32_t>& positions = cache->positions_;
  std::vector<int32_t>& matched = cache->matched_;
  from.clear();
  positions.clear();
  {
    const Cache::State& s = cache->states_[state];
    for (int32_t p : s.positions) {
      const Node& n = nodes_[p];
      if (n.kind == Kind::kByte && n.bytes[byte]) from.push_back(n.out);
    }
    matched = s.matched;
  }
  if (!anchored_) from.push_back(start_);  // a match may also start after this byte
  Closure(from, /*at_start=*/false, /*at_end=*/false, cache, &positions, &matched);
  const size_t resets = cache->resets_;
  const int32_t to = Intern(positions, matched, cache);
  const Cache::Entry entry = reinterpret_cast<Cache::Entry>(cache->rows_[to]) |
                             (cache->states_[to].positions.empty() ? kDoneBit : 0);
  if (cache->resets_ == resets) cache->rows_[state][cls] = entry;
  return entry;
}

const std::vector<int32_t>& SetDfa::AtEnd(int32_t state, Cache* cache) const {
  Cache::State& s = cache->states_[state];
  if (!s.end_known) {
    std::vector<int32_t> ends;
    for (int32_t p : s.positions) {
      if (nodes_[p].kind == Kind::kEnd) ends.push_back(p);
    }
    std::vector<int32_t> positions;
    if (!ends.empty()) {
      Closure(ends, /*at_start=*/false, /*at_end=*/true, cache, &positions, &s.at_end);
    }
    SortUnique(&s.at_end);
    s.end_known = true;
  }
  return s.at_end;
}

void SetDfa::CountLine(uint64_t visits, const Walk& w, Cache* cache) const {
  // The mean, in sixteenths of a byte, moves 1/16 of the way to this walk's length.
  const uint32_t bytes = static_cast<uint32_t>(std::min<ptrdiff_t>(w.p - w.begin, 1 << 20));
  cache->mean_walk_ = cache->mean_walk_ - (cache->mean_walk_ >> 4) + bytes;
  cache->window_visits_ += visits;
  if (++cache->window_lines_ < kWindowLines) return;
  if (cache->window_visits_ > kWindowLines * kVisitsPerLine) {
    cache->rest_ = cache->rest_ == 0 ? kRestLines : std::min(2 * cache->rest_, kMaxRestLines);
    cache->resting_ = cache->rest_;
  } else {
    cache->rest_ = 0;
  }
  cache->window_lines_ = 0;
  cache->window_visits_ = 0;
}

const SetDfa::Cache::Entry* SetDfa::StartRow(Cache* cache) const {
  if (cache->start_state_ < 0) {
    std::vector<int32_t> positions;
    std::vector<int32_t> matched;
    Closure({start_}, /*at_start=*/true, /*at_end=*/false, cache, &positions, &matched);
    cache->start_state_ = Intern(positions, matched, cache);
  }
  return cache->rows_[cache->start_state_];
}

void SetDfa::Restart(Walk* w, Cache* cache) const {
  w->p = w->begin;
  w->row = StartRow(cache);
  w->done = cache->states_[cache->start_state_].positions.empty();
}

bool SetDfa::TakeByte(Walk* w, Cache::Entry to, Cache* cache) const {
  const unsigned char byte = *w->p++;
  if (to == kBailEntry) return false;
  if (to == kUnknownEntry) {
    to = Step(static_cast<int32_t>(w->row[-1]), class_of_[byte], cache);
    if (cache->resets_ > w->resets + 2) return false;  // thrashing: RE2 does better
  }
  w->row = reinterpret_cast<const Cache::Entry*>(to & ~Cache::Entry{3});
  w->done = (to & kDoneBit) != 0;
  return true;
}

bool SetDfa::Run(Walk* w, Cache* cache) const {
  using Entry = Cache::Entry;
  const Entry* row = w->row;
  const unsigned char* p = w->p;
  const unsigned char* const end = w->end;
  const uint8_t* const class_of = class_of_.data();
  bool done = w->done;
  while (!done && p < end) {
    // Four bytes at a time while each leads to a built state: a byte costs its class and one
    // load, the next row's address (the only step the next byte waits for), and a bit test. A
    // byte that does not (a state to build, a byte past ASCII, the end of the walk) is taken
    // below, one at a time.
    while (end - p >= 4) {
      const Entry a = row[class_of[p[0]]];
      if (a & 3) break;
      const Entry b = reinterpret_cast<const Entry*>(a)[class_of[p[1]]];
      if (b & 3) {
        row = reinterpret_cast<const Entry*>(a);
        p += 1;
        break;
      }
      const Entry c = reinterpret_cast<const Entry*>(b)[class_of[p[2]]];
      if (c & 3) {
        row = reinterpret_cast<const Entry*>(b);
        p += 2;
        break;
      }
      const Entry d = reinterpret_cast<const Entry*>(c)[class_of[p[3]]];
      if (d & 3) {
        row = reinterpret_cast<const Entry*>(c);
        p += 3;
        break;
      }
      row = reinterpret_cast<const Entry*>(d);
      p += 4;
    }
    if (p == end) break;
    const Entry to = row[class_of[*p]];
    if (ABSL_PREDICT_FALSE(to & 3)) {
      w->row = row;
      w->p = p;
      if (!TakeByte(w, to, cache)) return false;
      row = w->row;
      p = w->p;
      done = w->done;
      continue;
    }
    row = reinterpret_cast<const Entry*>(to);
    ++p;
  }
  w->row = row;
  w->p = p;
  return true;
}

void SetDfa::Answer(const Walk& w, Cache* cache, std::vector<int>* hits) const {
  const int32_t state = static_cast<int32_t>(w.row[-1]);
  const std::vector<int32_t>& matched = cache->states_[state].matched;
  hits->assign(matched.begin(), matched.end());
  if (w.done) return;
  const std::vector<int32_t>& at_end = AtEnd(state, cache);
  if (!at_end.empty()) {
    const std::vector<int32_t>& so_far = cache->states_[state].matched;
    hits->clear();
    std::set_union(so_far.begin(), so_far.end(), at_end.begin(), at_end.end(),
                   std::back_inserter(*hits));
  }
}

bool SetDfa::Match(absl::string_view text, Cache* cache, std::vector<int>* hits) const {
  hits->clear();
  if (cache->owner_ != id_) Reset(cache);
  if (text.empty()) {
    // Both the start and the end hold at once: no state of the cache stands for that.
    std::vector<int32_t> positions;
    std::vector<int32_t> matched;
    Closure({start_}, /*at_start=*/true, /*at_end=*/true, cache, &positions, &matched);
    SortUnique(&matched);
    hits->assign(matched.begin(), matched.end());
    return true;
  }
  if (cache->resting_ > 0) {
    --cache->resting_;
    ++cache->rested_;
    return false;
  }
  // Counted per line in the window (Cache::resting_), whatever the line's end.
  const uint64_t visited = cache->visited_;
  Walk w;
  w.begin = w.p = reinterpret_cast<const unsigned char*>(text.data());
  w.end = w.p + text.size();
  w.resets = cache->resets_;
  Restart(&w, cache);
  const bool answered = Run(&w, cache);
  CountLine(cache->visited_ - visited, w, cache);
  if (answered) Answer(w, cache, hits);
  return answered;
}

void SetDfa::MatchMany(absl::Span<const absl::string_view> texts, Cache* cache,
                       Answers* answers) const {
  using Entry = Cache::Entry;
  answers->spans.assign(texts.size(), {Answers::kNoAnswer, 0});
  answers->hits.clear();
  if (texts.empty()) return;
  if (cache->owner_ != id_) Reset(cache);
  std::vector<int>& hits = cache->hits_;
  auto keep = [&](size_t text) {
    answers->spans[text] = {static_cast<uint32_t>(answers->hits.size()),
                            static_cast<uint32_t>(answers->hits.size() + hits.size())};
    answers->hits.insert(answers->hits.end(), hits.begin(), hits.end());
  };
  // The cache's visits are counted to each line as its walk ends (CountLine): the walks share
  // them, so a line is counted what was built since the walk before it ended; a window's sum
  // is the same as Match's.
  uint64_t counted = cache->visited_;
  Walk lanes[kLanes];
  size_t live = 0;
  auto end_walk = [&](Walk* w, bool answered) {
    CountLine(cache->visited_ - counted, *w, cache);
    counted = cache->visited_;
    if (answered) {
      Answer(*w, cache, &hits);
      keep(w->text);
    }
    w->text = Walk::kIdle;
    --live;
  };
  // The cache started over: the rows of the live walks are gone, but that of `kept` (null:
  // none), whose row was built after. Each live walk is finished alone, from its text's start
  // (but `kept`), as Match walks a text: walks side by side in a cache too small for them
  // would start each other's texts over at each reset.
  auto drain = [&](Walk* kept) {
    if (kept != nullptr) end_walk(kept, Run(kept, cache));
    for (Walk& w : lanes) {
      if (w.text == Walk::kIdle) continue;
      w.resets = cache->resets_;
      Restart(&w, cache);
      end_walk(&w, Run(&w, cache));
    }
  };
  // Starts the next text in the idle `w`. An empty text, or one met while the cache rests, is
  // answered here as Match answers it, and `w` stays idle.
  size_t next = 0;
  auto start = [&](Walk* w) {
    const size_t i = next++;
    const absl::string_view text = texts[i];
    if (text.empty() || cache->resting_ > 0) {
      if (Match(text, cache, &hits)) keep(i);
      return;
    }
    w->text = i;
    w->begin = reinterpret_cast<const unsigned char*>(text.data());
    w->end = w->begin + text.size();
    w->resets = cache->resets_;
    ++live;
    Restart(w, cache);  // may build the start state, and so start the cache over
    if (cache->resets_ != w->resets) drain(w);
  };
  const uint8_t* const class_of = class_of_.data();
  while (true) {
    while (live < kLanes && next < texts.size()) {
      for (Walk& w : lanes) {
        if (w.text == Walk::kIdle) {
          start(&w);
          break;
        }
      }
    }
    if (live < kLanes) break;
    // Rounds of one byte per walk while every walk's byte leads to a built state: the loads of
    // a round are independent, so they wait for memory together. Written out for four walks,
    // in registers (as arrays, the compiler kept them on the stack, and each load then waited
    // on a store as well).
    static_assert(kLanes == 4, "the rounds below take four walks");
    ptrdiff_t rounds = PTRDIFF_MAX;
    for (const Walk& w : lanes) rounds = std::min(rounds, w.done ? ptrdiff_t{0} : w.end - w.p);
    const unsigned char* const p0 = lanes[0].p;
    const unsigned char* const p1 = lanes[1].p;
    const unsigned char* const p2 = lanes[2].p;
    const unsigned char* const p3 = lanes[3].p;
    const Entry* r0 = lanes[0].row;
    const Entry* r1 = lanes[1].row;
    const Entry* r2 = lanes[2].row;
    const Entry* r3 = lanes[3].row;
    ptrdiff_t i = 0;
    for (; i < rounds; ++i) {
      const Entry t0 = r0[class_of[p0[i]]];
      const Entry t1 = r1[class_of[p1[i]]];
      const Entry t2 = r2[class_of[p2[i]]];
      const Entry t3 = r3[class_of[p3[i]]];
      if (ABSL_PREDICT_FALSE((t0 | t1 | t2 | t3) & 3)) break;
      r0 = reinterpret_cast<const Entry*>(t0);
      r1 = reinterpret_cast<const Entry*>(t1);
      r2 = reinterpret_cast<const Entry*>(t2);
      r3 = reinterpret_cast<const Entry*>(t3);
    }
    lanes[0].row = r0;
    lanes[1].row = r1;
    lanes[2].row = r2;
    lanes[3].row = r3;
    for (Walk& w : lanes) w.p += i;
    // Then one byte per walk, each on its own: a state to build, a walk's end.
    for (Walk& w : lanes) {
      if (w.text == Walk::kIdle) continue;  // drained
      if (!w.done && w.p < w.end) {
        const Entry to = w.row[class_of[*w.p]];
        if (!(to & 3)) {
          w.row = reinterpret_cast<const Entry*>(to);
          ++w.p;
          continue;
        }
        const size_t resets = cache->resets_;
        const bool answered = TakeByte(&w, to, cache);
        if (cache->resets_ != resets) {
          if (!answered) end_walk(&w, false);
          drain(answered ? &w : nullptr);
          break;
        }
        if (answered && !w.done && w.p < w.end) continue;
        end_walk(&w, answered);
      } else {
        end_walk(&w, true);
      }
    }
  }
  // Fewer walks than lanes are left (the last texts): each alone.
  for (Walk& w : lanes) {
    if (w.text == Walk::kIdle) continue;
    const size_t resets = cache->resets_;
    end_walk(&w, Run(&w, cache));
    if (cache->resets_ != resets) {
      drain(nullptr);
      break;
    }
  }
}

}  // namespace palisade
