#include "services/engine/engine.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/container/inlined_vector.h"
#include "absl/hash/hash.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "services/common/fingerprint.h"

namespace palisade {
namespace {

using palisade::v1::TargetKind;

// absl::ToUnixMillis and absl::ToInt64Milliseconds with absl's own fast path (time.cc: whole
// seconds below 2^53, a non-negative value) written here: Debian's shared absl keeps both out
// of line, a call and ~20 instructions each on every count. Anything else goes to absl.
// EngineMillisTest.TheWindowEdgeIsWhereAbslsMillisecondsPutIt holds them to absl's own.
inline int64_t ToMillis(absl::Time t) {
  const absl::Duration d = absl::time_internal::ToUnixDuration(t);
  const int64_t hi = absl::time_internal::GetRepHi(d);
  if (hi >= 0 && hi >> 53 == 0) return hi * 1000 + absl::time_internal::GetRepLo(d) / 4000000;
  return absl::ToUnixMillis(t);
}
inline int64_t ToMillis(absl::Duration d) {
  const int64_t hi = absl::time_internal::GetRepHi(d);
  if (hi >= 0 && hi >> 53 == 0) return hi * 1000 + absl::time_internal::GetRepLo(d) / 4000000;
  return absl::ToInt64Milliseconds(d);
}

// Whether `rule_index`'s ignore patterns match the line the last CollectCandidates of this
// thread read (`hits`: Scratch::ignore_hits), when `index` (that line's) holds them in its Sets:
// 1 or 0; -1 when it does not (FormatIndex::ignores_in_sets): RE2 decides.
int SetIgnored(const RuleSet::FormatIndex& index, int rule_index, const CompiledRule& rule,
               const std::vector<int>& hits) {
  if (rule.ignores.empty()) return 0;
  if (!index.ignores_in_sets[rule_index]) return -1;
  return std::find(hits.begin(), hits.end(), rule_index) != hits.end() ? 1 : 0;
}

// What malloc (glibc) really takes for a request of n bytes: an 8-byte header, rounded up to
// 16, at least 32. Accounting the request alone would undercount small windows by a third.
size_t HeapBytes(size_t n) {
  if (n == 0) return 0;
  return std::max<size_t>(32, (n + 8 + 15) & ~size_t{15});
}

// The most of `line` that fits in `max` bytes without splitting a UTF-8 sequence (evidence ends
// up in protos, JSON and terminals).
absl::string_view CutUtf8(absl::string_view line, size_t max) {
  if (line.size() <= max) return line;
  size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(line[n]) & 0xc0) == 0x80) --n;
  return line.substr(0, n);
}

// Whether `line` may hold a token shape (services/common/fingerprint.h): every shape holds 40
// bytes of [A-Za-z0-9_-] in a row (cfut_ + 40 alphanumerics, or a 40-byte value after "Bearer"
// and the like). A line without such a run (most lines: RedactTokenShapes's regex costs ~3,000
// instructions on an access-log line) needs no redaction pass. Keep in step with the shapes;
// EngineTest.TokenShapesAreRedactedWhenNoTokenRuleCounted fails if a shape gets shorter.
// Any 40 bytes in a row hold exactly one offset p with p % 40 == 39, so only those bytes are
// looked at first, and the run around one of them is measured only when it is a token byte:
// an access-log line costs about a fifth of a byte-by-byte scan.
constexpr size_t kTokenRun = 40;
struct TokenBytes {
  bool is[256] = {};
  constexpr TokenBytes() {
    for (int c = 0; c < 256; ++c) {
      is[c] = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-';
    }
  }
};
constexpr TokenBytes kTokenBytes;

bool MayHoldTokenShape(absl::string_view line) {
  const auto tok = [&line](size_t i) {
    return kTokenBytes.is[static_cast<unsigned char>(line[i])];
  };
  for (size_t p = kTokenRun - 1; p < line.size(); p += kTokenRun) {
    if (!tok(p)) continue;
    size_t begin = p;
    while (begin > 0 && tok(begin - 1)) --begin;
    size_t end = p + 1;
    while (end < line.size() && end - begin < kTokenRun && tok(end)) ++end;
    if (end - begin >= kTokenRun) return true;
  }
  return false;
}

}  // namespace

Engine::Scratch& Engine::ThreadScratch() {
  static thread_local Scratch scratch;
  return scratch;
}

Engine::Engine(std::shared_ptr<const RuleSet> rules, EngineOptions options)
    : options_(std::move(options)),
      shards_(new Shard[kShards]),
      sessions_(options_.sessions),
      id_(NextId()) {
  options_.allowlist.Add(*Cidr::Parse("127.0.0.0/8"));
  options_.allowlist.Add(*Cidr::Parse("::1/128"));
  if (options_.max_keys_per_rule == 0) options_.max_keys_per_rule = 1'000'000;
  if (options_.max_evidence_bytes == 0) options_.max_evidence_bytes = 2048;
  if (options_.memory_budget_bytes == 0) options_.memory_budget_bytes = uint64_t{1} << 30;
  // Each line gets an equal share of the ring, so a full ring fits in max_evidence_bytes.
  const uint32_t share = options_.max_evidence_bytes / std::max<uint32_t>(1, options_.max_evidence);
  evidence_line_bytes_ = std::max<uint32_t>(
      kMinEvidenceLine, share - std::min<uint32_t>(share, Window::kRecordHeader));
  SetRules(std::move(rules));
}

uint64_t Engine::NextId() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

void Engine::SetAllowlist(CidrSet allowlist) {
  options_.allowlist = std::move(allowlist);
  options_.allowlist.Add(*Cidr::Parse("127.0.0.0/8"));
  options_.allowlist.Add(*Cidr::Parse("::1/128"));
  id_ = NextId();  // no thread's remembered address answers for the old allowlist
}

void Engine::SetRules(std::shared_ptr<const RuleSet> rules) {
  const size_t n_rules = rules->rules().size();
  auto matches = std::make_unique<std::atomic<uint64_t>[]>(n_rules);
  for (size_t i = 0; i < n_rules; ++i) matches[i] = 0;
  // For each new rule, the index of the old rule with the same id (and, for its windows, the
  // same threshold and the same key: kind and capture, else a PATH rule's counts of an
  // attacker-chosen "203.0.113.5" would become an address's, one match from a ban), or -1.
  std::vector<int> keep_matches(n_rules, -1), keep_windows(n_rules, -1);
  if (rules_ != nullptr) {
    const auto& old_rules = rules_->rules();
    for (size_t n = 0; n < n_rules; ++n) {
      const CompiledRule& rule = *rules->rules()[n];
      for (size_t o = 0; o < old_rules.size(); ++o) {
        const CompiledRule& old = *old_rules[o];
        if (old.id() != rule.id()) continue;
        keep_matches[n] = static_cast<int>(o);
        if (old.count == rule.count && old.window == rule.window &&
            old.proto.key_kind() == rule.proto.key_kind() && old.proto.key() == rule.proto.key()) {
          keep_windows[n] = static_cast<int>(o);
        }
        break;
      }
    }
  }
  for (size_t n = 0; n < n_rules; ++n) {
    if (keep_matches[n] >= 0) matches[n] = matches_per_rule_[keep_matches[n]].load();
  }
  auto windows = std::make_unique<std::atomic<int64_t>[]>(n_rules);
  for (size_t i = 0; i < n_rules; ++i) windows[i] = 0;
  // The shard of a window is picked from its rule's index and its key (ShardFor): a kept rule
  // at its old index keeps its tables where they are; one whose index moved (a rule added or
  // removed ahead of it) has each window moved to the shard its new index picks. No line is
  // processed meanwhile (SetRules is called alone).
  std::vector<std::vector<WindowMap>> old_maps(kShards);
  for (size_t s = 0; s < kShards; ++s) {
    ShardMutexLock lock(&shards_[s].mu);
    old_maps[s] = std::move(shards_[s].maps);
    shards_[s].maps.clear();
  }
  std::vector<std::vector<WindowMap>> new_maps(kShards);
  for (auto& maps : new_maps) maps.resize(n_rules);
  for (size_t n = 0; n < n_rules; ++n) {
    const int o = keep_windows[n];
    if (o < 0) continue;
    for (size_t s = 0; s < kShards; ++s) {
      if (static_cast<size_t>(o) >= old_maps[s].size()) continue;
      WindowMap& from = old_maps[s][o];
      windows[n] += static_cast<int64_t>(from.size());
      if (static_cast<size_t>(o) == n) {
        new_maps[s][n] = std::move(from);
        continue;
      }
      for (auto it = from.begin(); it != from.end();) {
        const size_t hash = WindowHash()((*it)->key());
        WindowMap& to = new_maps[&ShardFor(static_cast<int>(n), hash) - &shards_[0]][n];
        to.insert(from.extract(it++));
      }
    }
  }
  for (size_t s = 0; s < kShards; ++s) {
    ShardMutexLock lock(&shards_[s].mu);
    shards_[s].maps = std::move(new_maps[s]);
    RecountLocked(shards_[s]);
  }
  rule_index_.clear();
  for (size_t n = 0; n < n_rules; ++n) rule_index_.emplace(rules->rules()[n]->id(), n);
  rules_ = std::move(rules);
  spread_next_ms_.clear();
  matches_per_rule_ = std::move(matches);
  windows_per_rule_ = std::move(windows);
  rule_count_ = n_rules;
}

Engine::Shard& Engine::ShardFor(int rule_index, size_t key_hash) {
  const size_t h = absl::Hash<std::pair<int, size_t>>()({rule_index, key_hash});
  return shards_[h % kShards];
}

EngineStats Engine::stats() const {
  EngineStats s;
  s.lines = stats_.lines.load();
  s.matched_lines = stats_.matched_lines.load();
  s.detections = stats_.detections.load();
  s.evicted_windows = stats_.evicted_windows.load();
  s.memory_evicted_windows = stats_.memory_evicted_windows.load();
  s.evidence_truncated = stats_.evidence_truncated.load();
  s.memory_bytes = memory_bytes();
  s.expired_windows = stats_.expired_windows.load();
  s.invalid_keys = stats_.invalid_keys.load();
  s.ignored = stats_.ignored.load();
  s.session_misses = stats_.session_misses.load();
  s.sessions = sessions_.stats();
  return s;
}

std::vector<uint64_t> Engine::matches_per_rule() const {
  std::vector<uint64_t> out(rule_count_);
  for (size_t i = 0; i < rule_count_; ++i) out[i] = matches_per_rule_[i].load();
  return out;
}

bool Engine::ConditionsHold(const CompiledRule& rule, int pattern_index) const {
  for (const CompiledCondition& c : rule.conditions) {
    const re2::StringPiece& g = ThreadScratch().groups[c.group[pattern_index]];
    std::optional<IpAddress> ip = IpAddress::Parse(absl::string_view(g.data(), g.size()));
    if (!ip) return false;
    const bool member = c.set != nullptr ? c.set->Contains(*ip)
                        : options_.feeds != nullptr ? options_.feeds->Contains(c.feed, *ip)
                                                    : false;
    if (member != c.inside) return false;
  }
  return true;
}

bool Engine::NormaliseKey(const CompiledRule& rule, absl::string_view captured,
                          absl::string_view* key, bool* allowlisted) const {
  *allowlisted = false;
  if (rule.proto.key_kind() == TargetKind::TARGET_KIND_TOKEN_FINGERPRINT) {
    // Token shapes: 40 characters of [A-Za-z0-9_-], optionally behind cfut_/cfat_/cfk_.
    if (captured.size() < 40 || captured.size() > 80) return false;
    for (char c : captured) {
      if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) {
        return false;
      }
    }
    Scratch& scratch = ThreadScratch();
    scratch.token_key = Fingerprint(captured);
    *key = scratch.token_key;
    return true;
  }
  if (rule.proto.key_kind() == TargetKind::TARGET_KIND_TOKEN_ID) {
    if (captured.size() != 32) return false;
    for (char c : captured) {
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    *key = captured;
    return true;
  }
  if (rule.proto.key_kind() != TargetKind::TARGET_KIND_IP) {
    if (captured.empty()) return false;
    *key = captured;
    return true;
  }
  // The same text as the last address (this engine's: the allowlist is its own) gives the same
  // answer: no parse, no allowlist lookup, no format (inet_ntop: ~3,700 instructions for IPv6).
  Scratch& scratch = ThreadScratch();
  const absl::string_view last(scratch.address_text, scratch.address_text_size);
  if (scratch.address_engine == id_ && captured == last) {
    *allowlisted = scratch.address_allowlisted;
    // A valid address without a key of its own is its own key (a dotted quad, below).
    *key = !scratch.address_valid            ? absl::string_view()
           : scratch.address_key_size == 0 ? last
                                             : absl::string_view(scratch.key_buf,
                                                                 scratch.address_key_size);
    return scratch.address_valid;
  }
  const bool remembered = !captured.empty() && captured.size() <= sizeof(scratch.address_text);
  scratch.address_engine = remembered ? id_ : 0;
  scratch.address_text_size = 0;
  if (remembered) {
    std::memcpy(scratch.address_text, captured.data(), captured.size());
    scratch.address_text_size = static_cast<uint8_t>(captured.size());
  }
  scratch.address_key_size = 0;
  scratch.address_allowlisted = false;
  scratch.address_valid = false;
  std::optional<IpAddress> ip = IpAddress::Parse(captured);
  if (!ip) return false;
  *allowlisted = options_.allowlist.Contains(*ip);
  scratch.address_allowlisted = *allowlisted;
  // Text of at most 15 bytes without ':' parses only as a dotted quad without leading zeros
  // (IpAddress::Parse), which is its own canonical form: no need to format it again, nor to
  // keep it twice (address_key_size stays 0).
  if (ip->is_v4() && captured.size() <= 15 &&
      std::memchr(captured.data(), ':', captured.size()) == nullptr) {
    *key = captured;
    scratch.address_valid = true;
    return true;
  }
  *key = ip->Format(scratch.key_buf);  // key_buf holds it until the next address's Format
  scratch.address_key_size = static_cast<uint8_t>(key->size());
  scratch.address_valid = !key->empty();
  return scratch.address_valid;
}

namespace {

// The stream number in front of a session id, as a varint (prefix-free, so ids of different
// streams never collide): one byte for streams below 128, which keeps a pid id such as sshd's
// (PidSessionId's short form, 14 bytes) within std::string's inline 15 (no heap block per
// session).
void StartSessionId(uint32_t stream, std::string* id) {
  id->clear();
  while (stream >= 0x80) {
    id->push_back(static_cast<char>((stream & 0x7f) | 0x80));
    stream >>= 7;
  }
  id->push_back(static_cast<char>(stream));
}

// The line's host, as 4 bytes of its hash, for a session id: one stream may carry many hosts (a
// syslog input every sender writes to, a central rsyslog file), and pid 4242 of web-1 is not
// pid 4242 of web-2. Fixed width, so the ids stay prefix-free and a pid id short (a collision
// of two hosts of one stream is one in 2^32, and a sender who could aim at it could as well
// write the other host's name).
void AppendHost(absl::string_view host, char* out) {
  const uint32_t h = static_cast<uint32_t>(absl::Hash<absl::string_view>()(host));
  std::memcpy(out, &h, sizeof(h));
}

// `pid` as a number below 10^9 (nine digits at most), the short form of a pid id.
bool ShortPid(absl::string_view pid, uint32_t* out) {
  if (pid.empty() || pid.size() > 9) return false;
  uint32_t v = 0;
  for (char c : pid) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  *out = v;
  return true;
}

}  // namespace

bool Engine::PidSessionId(const ParsedLine& line, uint32_t stream, std::string* id) {
  if (line.pid.empty() || line.program.empty()) return false;
  if (line.program.size() + line.pid.size() + 12 > SessionTable::kMaxIdBytes) return false;
  // The stream first (StartSessionId's varint), then the host (AppendHost). Short form, 'q':
  // the pid as 4 bytes, then the program, which keeps an sshd id within std::string's inline 15
  // bytes (no heap block per session); else 'p', the program and "[pid]". Written in place
  // after one resize: appending piece by piece was five calls into libstdc++, ~200
  // instructions a counted sshd line (every one notes its pid's session).
  size_t varint = 1;
  for (uint32_t s = stream; s >= 0x80; s >>= 7) ++varint;
  uint32_t pid = 0;
  const bool short_pid = ShortPid(line.pid, &pid);
  id->resize(varint + 1 + 4 +
             (short_pid ? 4 + line.program.size() : line.program.size() + line.pid.size() + 2));
  char* out = &(*id)[0];
  for (uint32_t s = stream; s >= 0x80; s >>= 7) *out++ = static_cast<char>((s & 0x7f) | 0x80);
  *out++ = static_cast<char>(stream >> (7 * (varint - 1)));
  *out++ = short_pid ? 'q' : 'p';
  AppendHost(line.host, out);
  out += 4;
  if (short_pid) {
    std::memcpy(out, &pid, sizeof(pid));
    out += sizeof(pid);
    std::memcpy(out, line.program.data(), line.program.size());
    return true;
  }
  std::memcpy(out, line.program.data(), line.program.size());
  out += line.program.size();
  *out++ = '[';
  std::memcpy(out, line.pid.data(), line.pid.size());
  out += line.pid.size();
  *out = ']';
  return true;
}

bool Engine::SessionId(const CompiledRule& rule, int pattern_index, const ParsedLine& line,
                       uint32_t stream, std::string* id) {
  if (rule.session_by_pid) return PidSessionId(line, stream, id);
  const re2::StringPiece& value = ThreadScratch().groups[rule.session_group[pattern_index]];
  const std::string& by = rule.proto.session().by();
  // Session.by_process: the program and pid too, each after its length (no program's name can
  // pass for another's with its pid).
  const bool by_process = rule.proto.session().by_process();
  const size_t process = by_process ? line.program.size() + line.pid.size() + 2 : 0;
  if (value.data() == nullptr || value.empty() ||
      by.size() + value.size() + process + 12 > SessionTable::kMaxIdBytes) {
    return false;
  }
  StartSessionId(stream, id);
  char host[4];
  AppendHost(line.host, host);
  absl::StrAppend(id, by_process ? "d" : "c", absl::string_view(host, 4));
  if (by_process) {
    id->push_back(static_cast<char>(line.program.size()));
    absl::StrAppend(id, line.program);
    id->push_back(static_cast<char>(line.pid.size()));
    absl::StrAppend(id, line.pid);
  }
  absl::StrAppend(id, by, "=", absl::string_view(value.data(), value.size()));
  return true;
}

void Engine::NoteCounted(const CompiledRule& rule, int pattern_index, const ParsedLine& line,
                         absl::string_view key, absl::Time time, uint32_t stream) {
  Scratch& scratch = ThreadScratch();
  std::string& id = scratch.session_id;
  const bool in_session = rule.has_session ? SessionId(rule, pattern_index, line, stream, &id)
                                           : PidSessionId(line, stream, &id);
  if (!in_session) return;
  // The same note twice on one line (two rules counting the line under the same key name)
  // changes nothing the second time: Note is idempotent for equal arguments, and nothing else
  // touched the session in between (a note_only Note or an End clears `noted`).
  if (scratch.noted && scratch.noted_line == scratch.line && scratch.noted_id == id &&
      scratch.noted_name == rule.proto.key() && scratch.noted_key == key) {
    return;
  }
  NoteInSession(id, rule.proto.key(), key, /*failed=*/true, time, stream);
  scratch.noted = true;
  scratch.noted_line = scratch.line;
  scratch.noted_id.assign(id);
  // Compared before they are copied: the name is nearly always the last one ("ip"), and a
  // burst of lines comes from one address (an assign is a call into libstdc++, ~50
  // instructions; the compare a length and a memcmp).
  if (scratch.noted_name != rule.proto.key()) scratch.noted_name.assign(rule.proto.key());
  if (absl::string_view(scratch.noted_key) != key) {
    scratch.noted_key.assign(key.data(), key.size());
  }
}

void Engine::NoteInSession(absl::string_view id, absl::string_view name, absl::string_view value,
                           bool failed, absl::Time time, uint32_t stream) {
  Scratch& scratch = ThreadScratch();
  std::vector<PendingMatch>& back = scratch.released_raw;
  back.clear();
  sessions_.Note(id, name, value, failed, time, stream, &back);
  for (PendingMatch& p : back) {
    // Counted by the rule of its id, found by id: rules may have been swapped since it was kept
    // (SetRules), moving that rule's index. Only if it is still loaded, still keeps matches
    // pending, and still waits for this name, as a reload keeps a kept rule's windows.
    auto kept = rule_index_.find(p.rule_id);
    if (kept == rule_index_.end()) continue;
    const int rule_index = kept->second;
    const CompiledRule& rule = *rules_->rules()[rule_index];
    if (!rule.has_session || !rule.proto.session().pending() || rule.proto.key() != name) {
      continue;
    }
    absl::string_view key;
    bool allowlisted = false;
    if (!NormaliseKey(rule, value, &key, &allowlisted)) {
      stats_.invalid_keys.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (allowlisted) {
      stats_.ignored.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    scratch.released.push_back({rule_index, std::string(key),
                                absl::FromUnixMillis(p.time_ms), std::move(p.evidence)});
  }
}

void Engine::KeepPending(absl::string_view raw, absl::Time time, uint32_t stream) {
  Scratch& scratch = ThreadScratch();
  // The evidence as a window would keep it: tokens redacted (every token rule's find on the
  // line, and the token shapes), cut to the session's share, the cut marked.
  std::string evidence;
  if (options_.max_evidence > 0) {
    const absl::string_view line = Redacted(raw);
    const size_t max = std::min<size_t>(evidence_line_bytes_,
                                        sessions_.options().max_pending_evidence_bytes);
    if (line.size() > max && max > kMarkerRoom) {
      absl::string_view head = CutUtf8(line, max - kMarkerRoom);
      evidence = absl::StrCat(head, " [", line.size() - head.size(), " bytes cut]");
    } else {
      evidence.assign(line.data(), std::min(line.size(), max));
    }
  }
  for (const auto& [rule_index, id] : scratch.pend) {
    PendingMatch m;
    m.name = rules_->rules()[rule_index]->proto.key();
    m.evidence = evidence;
    m.time_ms = absl::ToUnixMillis(time);
    m.rule_id = rules_->rules()[rule_index]->id();
    sessions_.AddPending(id, std::move(m), time, stream);
  }
  scratch.pend.clear();
}

bool Engine::WalksAhead(const RuleSet::SetPart& part, const SetDfa::Cache* cache) const {
  return part.dfa != nullptr && part.gate == nullptr &&
         (cache == nullptr || cache->owner() != part.dfa->id() ||
          cache->mean_walk_bytes() >= options_.walk_ahead_bytes);
}

bool Engine::WalksSideBySide(palisade::v1::LogFormat format) const {
  const RuleSet::FormatIndex* index = rules_->ForFormat(format);
  if (index == nullptr) return false;
  const Scratch& scratch = ThreadScratch();
  for (const RuleSet::SetPart& part : index->parts) {
    if (part.dfa == nullptr) continue;
    const SetDfa::Cache* cache = nullptr;  // looked up without taking a slot
    for (const SetDfa::Cache& c : scratch.dfa_caches) {
      if (c.owner() == part.dfa->id()) cache = &c;
    }
    if (WalksAhead(part, cache)) return true;
  }
  return false;
}

void Engine::WalkSets(const RuleSet::FormatIndex& index,
                      absl::Span<const ParsedLine* const> lines, Scratch& scratch) const {
  using Walked = Scratch::Walked;
  const size_t parts = index.parts.size();
  scratch.parts_per_line = parts;
  scratch.walked.assign(lines.size() * parts, Walked());
  if (scratch.walk_answers.size() < parts) scratch.walk_answers.resize(parts);
  for (size_t part_no = 0; part_no < parts; ++part_no) {
    const RuleSet::SetPart& part = index.parts[part_no];
    if (part.dfa == nullptr || part.gate != nullptr) continue;  // kNotWalked
    // Short walks (an anchored Set whose members die in a line's first bytes) gain less from
    // walking side by side than it costs to hold their answers: CollectCandidates walks them.
    SetDfa::Cache& cache = scratch.DfaCache(*part.dfa);
    if (!WalksAhead(part, &cache)) continue;
    std::vector<absl::string_view>& texts = scratch.walk_texts;
    std::vector<size_t>& which = scratch.walk_lines;
    texts.clear();
    which.clear();
    for (size_t i = 0; i < lines.size(); ++i) {
      const ParsedLine& line = *lines[i];
      Walked& w = scratch.walked[i * parts + part_no];
      w.state = Walked::State::kNoText;
      if (!part.MayMatch(line.program, line.message)) continue;
      texts.push_back(line.message);
      which.push_back(i);
    }
    SetDfa::Answers& answers = scratch.walk_answers[part_no];
    part.dfa->MatchMany(texts, &cache, &answers);
    for (size_t k = 0; k < which.size(); ++k) {
      Walked& w = scratch.walked[which[k] * parts + part_no];
      w.state = answers.answered(k) ? Walked::State::kAnswered : Walked::State::kAsk;
      w.text = static_cast<uint32_t>(k);
    }
  }
}

void Engine::CollectCandidates(const RuleSet::FormatIndex& index, const ParsedLine& line,
                               Scratch& scratch, std::vector<std::pair<int, int>>* candidates,
                               const Scratch::Walked* walked) const {
  using Walked = Scratch::Walked;
  Scratch::HitRates* hit_rates = nullptr;
  for (Scratch::HitRates& slot : scratch.hit_rates) {
    if (slot.index == &index && slot.rates.size() == index.parts.size()) hit_rates = &slot;
  }
  std::vector<int>& ignore_hits = scratch.ignore_hits;
  ignore_hits.clear();
  if (hit_rates == nullptr) {
    hit_rates = &scratch.hit_rates[scratch.hit_rates_next];
    scratch.hit_rates_next = (scratch.hit_rates_next + 1) % scratch.hit_rates.size();
    hit_rates->index = &index;
    hit_rates->rates.assign(index.parts.size(), 0);
  }
  for (size_t part_no = 0; part_no < index.parts.size(); ++part_no) {
    const RuleSet::SetPart& part = index.parts[part_no];
    // Walked ahead by WalkSets: what the part reads and its SetDfa's answer are known.
    const Walked::State ahead =
        walked != nullptr ? walked[part_no].state : Walked::State::kNotWalked;
    if (ahead == Walked::State::kNoText) continue;
    if (ahead == Walked::State::kNotWalked && !part.MayMatch(line.program, line.message)) {
      continue;
    }
    // The gated part: patterns whose required literal occurs are candidates (their capturing
    // regex decides); a line without any of the literals costs one vectorised scan.
    // Candidates are (rule, pattern << 1 | unproven): a Set's hits are known to match.
    if (part.gate != nullptr) {
      const size_t before = candidates->size();
      part.gate->Scan(line.message, part.entries, candidates);
      for (size_t k = before; k < candidates->size(); ++k) {
        (*candidates)[k].second = (*candidates)[k].second << 1 | 1;
      }
      continue;
    }
    // RE2::Set::Match allocates its match set when asked for indices, so ask "any?" first:
    // most lines of a normal log match nothing and then cost one DFA pass and no allocation.
    // Unless this Set matched a share of the recent lines (kProbeAbove: a rule that counts
    // every request, such as web-request-flood, or a log where most lines are failures): then
    // the probe, a pass up to the first match, costs more on the lines that match than the
    // allocation it saves on the others. Either way the hits are the same.
    const absl::string_view text = line.message;
    // SetDfa answers for the lines it reads (ASCII), in one pass with no set-up; RE2's Set for
    // the rest.
    uint16_t& rate = hit_rates->rates[part_no];
    rate -= rate >> 3;
    absl::Span<const int> hits;
    if (ahead == Walked::State::kAnswered) {
      const SetDfa::Answers& answers = scratch.walk_answers[part_no];
      const auto [begin, end] = answers.spans[walked[part_no].text];
      hits = absl::MakeConstSpan(answers.hits.data() + begin, end - begin);
      if (hits.empty()) continue;
    } else if (ahead == Walked::State::kNotWalked && part.dfa != nullptr &&
               part.dfa->Match(text, &scratch.DfaCache(*part.dfa), &scratch.set_hits)) {
      if (scratch.set_hits.empty()) continue;
      hits = scratch.set_hits;
    } else {
      if (rate < kProbeAbove && !part.set->Match(Piece(text), nullptr)) continue;
      if (!part.set->Match(Piece(text), &scratch.set_hits)) continue;
      hits = scratch.set_hits;
    }
    rate += kHitRateOne >> 3;
    const int patterns = static_cast<int>(part.entries.size());
    for (int hit : hits) {
      if (hit >= patterns) {  // an ignore pattern (SetPart::ignore_rules)
        ignore_hits.push_back(part.ignore_rules[hit - patterns]);
        continue;
      }
      candidates->emplace_back(part.entries[hit].first, part.entries[hit].second << 1);
    }
  }
  // Field rules (Rule.field) are candidates on every record of their formats: their patterns
  // run on the field's value, which no Set has scanned.
  for (int r : index.field_rules) {
    const int patterns = rules_->rules()[r]->proto.patterns_size();
    for (int p = 0; p < patterns; ++p) candidates->emplace_back(r, p << 1 | 1);
  }
}

bool Engine::FirstMatch(const CompiledRule& rule, int p, bool proven, bool cut,
                        absl::string_view text, re2::StringPiece* groups,
                        CompiledRule::LeadingRun* run) const {
  const RE2& re = *rule.patterns[p];
  const int group = rule.key_group[p];
  const int n = rule.submatches[p];  // at least 1: group 0 is always asked for
  // A cut line and a pattern that reads the end: RE2 gives the match's end, which the paths
  // below do not (a key split's tail ends in `$`: every match it finds ends at the cut). A
  // pattern pinned to the end is refused unrun (every match of it ends at the cut); the others
  // first find the match alone (a DFA), most often to refuse it, and run the captures, over
  // the whole (~16 KiB) line, only for a match that stands (RE2's match is the same however
  // many groups are asked for).
  if (cut && rule.reads_end[p]) {
    if (rule.anchored_end[p]) return false;
    if (!re.Match(Piece(text), 0, text.size(), RE2::UNANCHORED, groups, 1) ||
        EndsAtCut(cut, rule, p, groups[0], text)) {
      return false;
    }
    return n == 1 || re.Match(Piece(text), 0, text.size(), RE2::UNANCHORED, groups, n);
  }
  // A pattern led by its key, the only capture needed (CompiledRule::LeadingKey), needs no
  // submatch engine: a Set's hit runs no regex at all, a gated candidate a DFA-only test.
  const bool leading = rule.conditions.empty() && !rule.has_session && group >= 1 &&
                       n == group + 1 && rule.leading_key_max[p] != 0;
  // A pattern whose key follows a fixed introducer (CompiledRule::SplitKey), the only capture
  // needed (a pid session needs none): the head's DFA and the tail's capture, unless the split
  // is ambiguous.
  const bool split = !leading && rule.conditions.empty() &&
                     (!rule.has_session || rule.session_by_pid) && group >= 1 && n == group + 1 &&
                     rule.key_split[p] != nullptr;
  absl::string_view key;
  if (split) {
    const int found = rule.SplitKey(p, text, proven, &key);
    if (found == 0 && !proven) return false;
    // Ambiguous (or a Set's hit the split did not find, which cannot happen): RE2 decides.
    if (found != 1) return re.Match(Piece(text), 0, text.size(), RE2::UNANCHORED, groups, n);
  } else if (leading) {
    if ((!proven && !re.Match(Piece(text), 0, text.size(), RE2::UNANCHORED, nullptr, 0)) ||
        !rule.LeadingKey(p, text, &key, run)) {
      return false;
    }
  } else {
    return re.Match(Piece(text), 0, text.size(), RE2::UNANCHORED, groups, n);
  }
  groups[0] = Piece(text);  // not read: such a rule stops at its first match
  for (int i = 1; i < group; ++i) groups[i] = re2::StringPiece();
  groups[group] = Piece(key);
  return true;
}

void Engine::ReadableField(absl::string_view field, DecodedFields* fields,
                           absl::string_view* text) {
  for (size_t i = 0; i < fields->used; ++i) {
    if (fields->values[i].first == field) {
      *text = fields->values[i].second;
      return;
    }
  }
  if (fields->used == fields->values.size()) fields->values.emplace_back();
  auto& [name, value] = fields->values[fields->used];
  if (!DecodeReadableEscapes(*text, &value)) return;
  name.assign(field.data(), field.size());
  ++fields->used;
  *text = value;
}

bool Engine::Ignored(palisade::v1::LogFormat format, const CompiledRule& rule,
                     const ParsedLine& line, DecodedFields* fields) {
  if (rule.ignores.empty()) return false;
  absl::string_view text;
  RuleText(format, rule, line, fields, &text);
  const bool cut = CutEnd(line);
  for (size_t i = 0; i < rule.ignores.size(); ++i) {
    const RE2& ignore = *rule.ignores[i];
    if (cut && rule.ignore_reads_end[i]) {
      // The cut is not the writer's end: an ignore pinned there cannot be known to match, and
      // a match that ends there may have leaned on `$` (as EndsAtCut refuses a pattern's).
      if (rule.ignore_anchored_end[i]) continue;
      re2::StringPiece match;
      if (ignore.Match(Piece(text), 0, text.size(), RE2::UNANCHORED, &match, 1) &&
          match.data() + match.size() != text.data() + text.size()) {
        return true;
      }
      continue;
    }
    // No submatches: RE2 runs its DFA alone (PartialMatch would go through its Arg parsing).
    if (ignore.Match(Piece(text), 0, text.size(), RE2::UNANCHORED, nullptr, 0)) return true;
  }
  return false;
}

bool Engine::IgnoredHere(palisade::v1::LogFormat format, int rule_index, const CompiledRule& rule,
                         const ParsedLine& line, const PrematchedCandidate* found,
                         bool prematched, DecodedFields* fields) const {
  if (found != nullptr) return found->ignored;
  // This thread's CollectCandidates read the line only when no Prematch did.
  const int in_set = prematched ? -1
                                : SetIgnored(*rules_->ForFormat(format), rule_index, rule,
                                             ThreadScratch().ignore_hits);
  // A Set's hit says only that some ignore pattern matches: on a cut line, one that reads the
  // end may have matched at the cut, so RE2 decides which (Ignored). A miss stands.
  if (in_set == 1 && rule.ignores_read_end && CutEnd(line)) {
    return Ignored(format, rule, line, fields);
  }
  return in_set >= 0 ? in_set == 1 : Ignored(format, rule, line, fields);
}

void Engine::Prematch(palisade::v1::LogFormat format, const ParsedLine& line,
                      PrematchBuffer* out) const {
  const RuleSet::FormatIndex* index = rules_->ForFormat(format);
  if (index == nullptr) return;
  Scratch& scratch = ThreadScratch();
  const ParsedLine& read =
      ReadableLine(format, line, &scratch.prematch_decoded, &scratch.prematch_decoded_line);
  const size_t begin = out->candidates.size();
  PrematchLine(format, *index, read, scratch, /*walked=*/nullptr, out);
  if (&read != &line) MarkDecoded(out, begin);
}

void Engine::MarkDecoded(PrematchBuffer* out, size_t begin) {
  for (size_t i = begin; i < out->candidates.size(); ++i) out->candidates[i].decoded = true;
}

void Engine::Prematch(palisade::v1::LogFormat format, absl::Span<const ParsedLine* const> lines,
                      PrematchBuffer* out,
                      std::vector<std::pair<uint32_t, uint32_t>>* spans) const {
  spans->clear();
  const RuleSet::FormatIndex* index = rules_->ForFormat(format);
  Scratch& scratch = ThreadScratch();
  if (scratch.walk_decoded.size() < kWalkLines) {
    scratch.walk_decoded.resize(kWalkLines);
    scratch.walk_decoded_lines.resize(kWalkLines);
  }
  for (size_t first = 0; first < lines.size(); first += kWalkLines) {
    absl::Span<const ParsedLine* const> some = lines.subspan(first, kWalkLines);
    // The lines rules read: an access line's message with escapes of readable characters is
    // decoded (ReadableLine).
    bool decoded = false;
    for (size_t i = 0; i < some.size(); ++i) {
      const ParsedLine& line = *some[i];
      if (!ReadsEscapesDecoded(format, line.message) ||
          !DecodeReadableEscapes(line.message, &scratch.walk_decoded[i])) {
        continue;
      }
      if (!decoded) scratch.walk_views.assign(some.begin(), some.end());
      decoded = true;
      ParsedLine& copy = scratch.walk_decoded_lines[i];
      copy = line;
      copy.message = scratch.walk_decoded[i];
      scratch.walk_views[i] = &copy;
    }
    if (decoded) some = absl::MakeConstSpan(scratch.walk_views);
    if (index != nullptr) WalkSets(*index, some, scratch);
    for (size_t i = 0; i < some.size(); ++i) {
      const uint32_t begin = static_cast<uint32_t>(out->candidates.size());
      if (index != nullptr) {
        PrematchLine(format, *index, *some[i], scratch,
                     scratch.walked.data() + i * scratch.parts_per_line, out);
        if (some[i] != lines[first + i]) MarkDecoded(out, begin);
      }
      spans->emplace_back(begin, static_cast<uint32_t>(out->candidates.size()));
    }
  }
}

void Engine::PrematchLine(palisade::v1::LogFormat format, const RuleSet::FormatIndex& index,
                          const ParsedLine& line, Scratch& scratch,
                          const Scratch::Walked* walked, PrematchBuffer* out) const {
  std::vector<std::pair<int, int>>& found = scratch.prematch;
  found.clear();
  scratch.prematch_fields.used = 0;
  CollectCandidates(index, line, scratch, &found, walked);
  if (found.size() > 1) std::sort(found.begin(), found.end());
  std::vector<re2::StringPiece>& groups = scratch.groups;
  // A rule without a session or conditions counts its first match (Candidates): its later
  // patterns are never reached, so they are not run here either.
  int done_rule = -1;
  // The rules that count one line mostly capture the same key from it (every web rule's
  // `^(?P<ip>...)`): the run of address bytes is read once, and a key captured at the same
  // place as the candidate's before it, by a rule of the same key kind, is that candidate's key
  // (normalised, copied and hashed once).
  CompiledRule::LeadingRun run;
  size_t last_key = SIZE_MAX;  // that candidate's index in out->candidates (which may move)
  absl::string_view last_captured;
  for (const auto& [rule_index, encoded] : found) {
    PrematchedCandidate& c = out->candidates.emplace_back();
    c.rule = rule_index;
    c.pattern = encoded;
    const CompiledRule& rule = *rules_->rules()[rule_index];
    // Token rules report every match on the line, each a secret: Process runs them.
    if (rule.proto.key_kind() == TargetKind::TARGET_KIND_TOKEN_FINGERPRINT ||
        rule_index == done_rule) {
      continue;
    }
    c.state = PrematchedCandidate::State::kNoMatch;
    absl::string_view text;
    if (!rule.AppliesToProgram(format, line.program) ||
        !RuleText(format, rule, line, &scratch.prematch_fields, &text)) {
      continue;
    }
    const int p = encoded >> 1;
    const int n = rule.submatches[p];
    if (groups.size() < static_cast<size_t>(n)) groups.resize(n);
    if (!FirstMatch(rule, p, (encoded & 1) == 0, CutEnd(line), text, groups.data(), &run)) {
      continue;
    }
    c.state = PrematchedCandidate::State::kMatched;
    c.groups = static_cast<uint32_t>(out->groups.size());
    for (int i = 0; i < n; ++i) {
      const re2::StringPiece& g = groups[i];
      out->groups.emplace_back(g.data() == nullptr ? PrematchBuffer::kUnset
                                                   : static_cast<uint32_t>(g.data() - text.data()),
                               static_cast<uint32_t>(g.size()));
    }
    c.ignored = IgnoredHere(format, rule_index, rule, line, /*found=*/nullptr,
                            /*prematched=*/false, &scratch.prematch_fields);
    if (rule.conditions.empty() && !rule.has_session) done_rule = rule_index;
    // The key the capture gave, as Process would normalise it (a note-only rule counts none).
    const int group = rule.key_group[p];
    if (c.ignored || group < 0 || groups[group].data() == nullptr ||
        (rule.has_session && rule.proto.session().note_only())) {
      continue;
    }
    const absl::string_view captured(groups[group].data(), groups[group].size());
    if (last_key != SIZE_MAX && captured.data() == last_captured.data() &&
        captured.size() == last_captured.size()) {
      const PrematchedCandidate& same = out->candidates[last_key];
      if (rules_->rules()[same.rule]->proto.key_kind() == rule.proto.key_kind()) {
        c.key = same.key;
        c.key_at = same.key_at;
        c.key_size = same.key_size;
        c.key_hash = same.key_hash;
        continue;
      }
    }
    last_key = out->candidates.size() - 1;
    last_captured = captured;
    absl::string_view key;
    bool allowlisted = false;
    if (!NormaliseKey(rule, captured, &key, &allowlisted)) {
      c.key = PrematchedCandidate::Key::kInvalid;
    } else if (allowlisted) {
      c.key = PrematchedCandidate::Key::kAllowlisted;
    } else {
      c.key = PrematchedCandidate::Key::kValid;
      c.key_at = static_cast<uint32_t>(out->keys.size());
      c.key_size = static_cast<uint32_t>(key.size());
      out->keys.append(key.data(), key.size());
      c.key_hash = WindowHash()(key);
    }
  }
}

void Engine::MatchStep(palisade::v1::LogFormat format, const ParsedLine& read,
                       absl::string_view raw, absl::Time time, uint32_t stream,
                       const PrematchedLine* prematched, LineResult* result) {
  stats_.lines.fetch_add(1, std::memory_order_relaxed);
  // What counts on this line, and the secrets the evidence must hide: every token on the line,
  // found by any rule, before any window keeps it (Redacted).
  Scratch& scratch = ThreadScratch();
  // The text rules read, decoded where Prematch decoded it (its captures are offsets into it);
  // a line Prematch found no candidate on is not read again.
  const bool decode = prematched == nullptr ||
                      (!prematched->candidates.empty() && prematched->candidates[0].decoded);
  const ParsedLine& line =
      decode ? ReadableLine(format, read, &scratch.decoded, &scratch.decoded_line) : read;
  std::vector<std::pair<int, absl::string_view>>& counted = scratch.counted;
  std::vector<std::pair<absl::string_view, std::optional<size_t>>>& keys = scratch.counted_keys;
  std::vector<absl::string_view>& secrets = scratch.secrets;
  counted.clear();
  keys.clear();
  secrets.clear();
  bool copied = false;  // some key was copied into scratch.keys
  Candidates(
      format, line, time, stream,
      [&](int rule_index, absl::string_view captured, const PrematchedCandidate* pre,
          bool line_key) {
        const CompiledRule& rule = *rules_->rules()[rule_index];
        const bool token = rule.proto.key_kind() == TargetKind::TARGET_KIND_TOKEN_FINGERPRINT;
        // A token rule reports every token on the line; the same token found twice counts once.
        if (token && std::find(counted.begin(), counted.end(),
                               std::make_pair(rule_index, captured)) != counted.end()) {
          return false;
        }
        if (IgnoredHere(format, rule_index, rule, line, pre, prematched != nullptr,
                        &scratch.fields)) {
          ++result->ignored;
          return false;
        }
        // Normalised by Prematch (the key the line's capture gave): a view into its buffer.
        using Key = PrematchedCandidate::Key;
        if (pre != nullptr && line_key && pre->key != Key::kNotRun) {
          if (pre->key == Key::kInvalid) {
            ++result->invalid_keys;
            return false;
          }
          if (pre->key == Key::kAllowlisted) {
            ++result->ignored;
            return false;
          }
          keys.emplace_back(
              absl::string_view(prematched->buffer->keys.data() + pre->key_at, pre->key_size),
              pre->key_hash);
        } else {
          absl::string_view key;
          bool allowlisted = false;
          if (!NormaliseKey(rule, captured, &key, &allowlisted)) {
            ++result->invalid_keys;
            return false;
          }
          if (allowlisted) {
            ++result->ignored;
            return false;
          }
          // The key is copied out: the next rule's NormaliseKey reuses the scratch it points
          // into. Viewed once every match is in (scratch.keys may move as it grows).
          if (scratch.keys.size() <= counted.size()) scratch.keys.emplace_back();
          scratch.keys[counted.size()].assign(key.data(), key.size());
          keys.emplace_back(absl::string_view(), std::nullopt);
          copied = true;
        }
        // `captured` may view a key read from a session (scratch, reused by the next candidate);
        // only token rules, which have no session, use it past this point.
        counted.emplace_back(rule_index, captured);
        if (token) secrets.push_back(captured);
        return true;
      },
      prematched);
  if (!scratch.pend.empty()) KeepPending(raw, time, stream);
  if (copied) {
    for (size_t i = 0; i < keys.size(); ++i) {
      if (!keys[i].second.has_value()) keys[i].first = scratch.keys[i];
    }
  }
}

absl::string_view Engine::Redacted(absl::string_view raw) {
  // Nothing keeps evidence (EngineOptions::max_evidence 0, as palisadectl replay without
  // --json runs): the line needs no redaction.
  if (!KeepsEvidence()) return raw;
  Scratch& scratch = ThreadScratch();
  const std::vector<absl::string_view>& secrets = scratch.secrets;
  // Token shapes (services/common/fingerprint.h) and whatever a token rule captured become
  // "[token sha256:...]" in the evidence of every rule: a token pasted as a user name, or in
  // a URL a web rule counts, reaches no decision, event, sink or store. A line holding escapes
  // of readable characters is redacted decoded: a token behind escapes is no longer in it in
  // any form (the line's other escapes are decoded with it).
  absl::string_view line = raw;
  if (DecodeReadableEscapes(raw, &scratch.decoded_raw)) line = scratch.decoded_raw;
  if ((!secrets.empty() || MayHoldTokenShape(line)) &&
      RedactTokenShapes(line, &scratch.evidence, secrets)) {
    return scratch.evidence;
  }
  return raw;
}

void Engine::FinishLine(LineResult* result) {
  result->matched = result->matches > 0;
  if (result->matched) stats_.matched_lines.fetch_add(1, std::memory_order_relaxed);
  if (result->invalid_keys) stats_.invalid_keys.fetch_add(result->invalid_keys);
  if (result->ignored) stats_.ignored.fetch_add(result->ignored);
}

LineResult Engine::Process(palisade::v1::LogFormat format, const ParsedLine& line,
                           absl::string_view raw, absl::Time time, std::vector<Detection>* out,
                           uint32_t stream, const PrematchedLine* prematched) {
  LineResult result;
  MatchStep(format, line, raw, time, stream, prematched, &result);
  // Then the counting. The line is redacted when the first count keeps it, once for all.
  Scratch& scratch = ThreadScratch();
  std::optional<absl::string_view> redacted;
  const auto evidence = [&]() -> absl::string_view {
    if (!redacted.has_value()) redacted = Redacted(raw);
    return *redacted;
  };
  for (size_t i = 0; i < scratch.counted.size(); ++i) {
    const auto& [rule_index, captured] = scratch.counted[i];
    const CompiledRule& rule = *rules_->rules()[rule_index];
    ++result.matches;
    matches_per_rule_[rule_index].fetch_add(1, std::memory_order_relaxed);
    const bool token = rule.proto.key_kind() == TargetKind::TARGET_KIND_TOKEN_FINGERPRINT;
    const auto& [key, hash] = scratch.counted_keys[i];
    Count(rule_index, key, evidence, time, token ? captured : absl::string_view(), stream, out,
          hash.has_value() ? &*hash : nullptr);
  }
  // Pending matches of earlier lines that this line's session note released (Rule.session.
  // pending): each at its own time, with its own line.
  for (const Scratch::Released& r : scratch.released) {
    ++result.matches;
    matches_per_rule_[r.rule].fetch_add(1, std::memory_order_relaxed);
    Count(
        r.rule, r.key, [&r] { return absl::string_view(r.evidence); }, r.time,
        absl::string_view(), stream, out);
  }
  FinishLine(&result);
  return result;
}

LineResult Engine::MatchLine(palisade::v1::LogFormat format, const ParsedLine& line,
                             absl::string_view raw, absl::Time time, std::vector<EngineMatch>* out,
                             uint32_t stream, const PrematchedLine* prematched) {
  // Process's matching step; the counting is CountMatch's, wherever the match goes.
  LineResult result;
  MatchStep(format, line, raw, time, stream, prematched, &result);
  Scratch& scratch = ThreadScratch();
  const std::vector<std::pair<int, absl::string_view>>& counted = scratch.counted;
  if (!counted.empty()) {
    // Cut as Count cuts: the owner's Count then finds the line within its share and keeps it
    // whole, so the window holds the same record either way.
    std::string kept;
    if (options_.max_evidence > 0) {
      const absl::string_view evidence = Redacted(raw);
      if (evidence.size() > evidence_line_bytes_) {
        absl::string_view head = CutUtf8(evidence, evidence_line_bytes_ - kMarkerRoom);
        kept = absl::StrCat(head, " [", evidence.size() - head.size(), " bytes cut]");
        stats_.evidence_truncated.fetch_add(1, std::memory_order_relaxed);
      } else {
        kept.assign(evidence.data(), evidence.size());
      }
    }
    for (size_t i = 0; i < counted.size(); ++i) {
      const auto& [rule_index, captured] = counted[i];
      const CompiledRule& rule = *rules_->rules()[rule_index];
      ++result.matches;
      EngineMatch& m = out->emplace_back();
      m.rule = &rule;
      m.rule_id = rule.id();
      m.key = std::string(scratch.counted_keys[i].first);
      m.time = time;
      m.evidence = kept;
      if (rule.proto.key_kind() == TargetKind::TARGET_KIND_TOKEN_FINGERPRINT) {
        m.secret = std::string(captured);
      }
      m.stream = stream;
    }
  }
  for (const Scratch::Released& r : scratch.released) {
    ++result.matches;
    EngineMatch& m = out->emplace_back();
    m.rule = rules_->rules()[r.rule].get();
    m.rule_id = m.rule->id();
    m.key = r.key;
    m.time = r.time;
    m.evidence = r.evidence;
    m.stream = stream;
  }
  FinishLine(&result);
  return result;
}

absl::Status Engine::CountMatch(const EngineMatch& match, std::vector<Detection>* out) {
  auto found = rule_index_.find(match.rule_id);
  if (found == rule_index_.end()) {
    return absl::NotFoundError(
        absl::StrCat("engine: a match of rule \"", match.rule_id, "\", which is not loaded"));
  }
  const int rule_index = found->second;
  const CompiledRule& rule = *rules_->rules()[rule_index];
  if (rule.proto.key_kind() == TargetKind::TARGET_KIND_IP) {
    std::optional<IpAddress> ip = IpAddress::Parse(match.key);
    char buf[IpAddress::kMaxTextLength];
    if (!ip || ip->Format(buf) != match.key) {
      return absl::InvalidArgumentError(absl::StrCat(
          "engine: a match of rule \"", match.rule_id, "\" whose key is not a canonical address"));
    }
    if (options_.allowlist.Contains(*ip)) {
      stats_.ignored.fetch_add(1, std::memory_order_relaxed);
      return absl::FailedPreconditionError(absl::StrCat(
          "engine: a match of rule \"", match.rule_id, "\" on an allowlisted address"));
    }
  } else if (match.key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("engine: a match of rule \"", match.rule_id, "\" with an empty key"));
  }
  matches_per_rule_[rule_index].fetch_add(1, std::memory_order_relaxed);
  // And in its IPv6 range's window, as Process counts it: a cluster routes the addresses of one
  // range to one partition (services/cluster/match_stream.h, PartitionKeyOf).
  Count(
      rule_index, match.key, [&match] { return absl::string_view(match.evidence); }, match.time,
      match.secret, match.stream, out);
  return absl::OkStatus();
}

Engine::Window::Window(absl::string_view key) : key_len_(static_cast<uint32_t>(key.size())) {
  if (key.size() <= kInlineKey) {
    if (!key.empty()) std::memcpy(inline_key_, key.data(), key.size());
    return;
  }
  buf_.reset(new char[key.size()]);
  std::memcpy(buf_.get(), key.data(), key.size());
  cap_ = key_len_;
}

// Inline: called twice a count, and only in this file.
inline size_t Engine::Window::Bytes() const {
  // The object fits malloc's 96-byte chunks (HeapBytes): a field more costs 16 bytes a window.
  static_assert(sizeof(Window) <= 88, "Window outgrew its 96-byte chunk");
  return HeapBytes(sizeof(Window)) + HeapBytes(cap_) +
         (times.capacity() > 1 ? HeapBytes(times.capacity() * sizeof(int64_t)) : 0);
}

void Engine::Window::RingWrite(uint32_t at, const char* data, size_t n) {
  char* ring = buf_.get() + RingStart();
  const size_t first = std::min<size_t>(n, RingCap() - at);
  std::memcpy(ring + at, data, first);
  if (first < n) std::memcpy(ring, data + first, n - first);
}

void Engine::Window::RingRead(uint32_t at, char* out, size_t n) const {
  const char* ring = buf_.get() + RingStart();
  const size_t first = std::min<size_t>(n, RingCap() - at);
  std::memcpy(out, ring + at, first);
  if (first < n) std::memcpy(out + first, ring, n - first);
}

void Engine::Window::Grow(size_t bytes, size_t limit) {
  // Grows by half (amortised appends), but never past `limit`: the byte cap is the cap.
  const size_t ring = std::max(bytes, std::min(static_cast<size_t>(RingCap()) * 3 / 2, limit));
  std::unique_ptr<char[]> grown(new char[RingStart() + ring]);
  if (RingStart() > 0) std::memcpy(grown.get(), buf_.get(), RingStart());
  if (live_ > 0) RingRead(head_, grown.get() + RingStart(), live_);
  buf_ = std::move(grown);
  cap_ = static_cast<uint32_t>(RingStart() + ring);
  head_ = 0;
}

void Engine::Window::ReadHeader(uint32_t at, uint32_t* len, int64_t* time) const {
  char header[kRecordHeader];
  if (at + kRecordHeader <= RingCap()) {  // in one piece (most): a load, not a call
    std::memcpy(header, buf_.get() + RingStart() + at, kRecordHeader);
  } else {
    RingRead(at, header, kRecordHeader);
  }
  std::memcpy(len, header, sizeof(*len));
  std::memcpy(time, header + sizeof(*len), sizeof(*time));
}

void Engine::Window::DropOldest() {
  uint32_t len;
  if (head_ + sizeof(len) <= RingCap()) {  // the length in one piece: a load, not a call
    std::memcpy(&len, buf_.get() + RingStart() + head_, sizeof(len));
  } else {
    RingRead(head_, reinterpret_cast<char*>(&len), sizeof(len));
  }
  const uint32_t record = kRecordHeader + len;
  live_ -= record;
  --evidence_count_;
  head_ = evidence_count_ == 0 ? 0 : Wrap(head_ + record);
}

void Engine::Window::AddEvidence(absl::string_view line, absl::string_view marker, int64_t time,
                                 uint32_t max, uint32_t max_bytes) {
  const size_t record = kRecordHeader + line.size() + marker.size();
  if (max == 0 || record > max_bytes) return;
  while (evidence_count_ > 0 && (evidence_count_ >= max || live_ + record > max_bytes)) {
    DropOldest();
  }
  if (live_ + record > RingCap()) Grow(live_ + record, max_bytes);
  const uint32_t len = static_cast<uint32_t>(line.size() + marker.size());
  char header[kRecordHeader];
  std::memcpy(header, &len, sizeof(len));
  std::memcpy(header + sizeof(len), &time, sizeof(time));
  uint32_t at = Wrap(head_ + live_);
  if (at + record <= RingCap()) {  // the record in one piece (most): three plain copies
    char* out = buf_.get() + RingStart() + at;
    std::memcpy(out, header, kRecordHeader);
    if (!line.empty()) std::memcpy(out + kRecordHeader, line.data(), line.size());
    if (!marker.empty()) {
      std::memcpy(out + kRecordHeader + line.size(), marker.data(), marker.size());
    }
    live_ += static_cast<uint32_t>(record);
    ++evidence_count_;
    return;
  }
  RingWrite(at, header, kRecordHeader);
  at = Wrap(at + kRecordHeader);
  // An empty view may have a null data(), which memcpy may not be given even for 0 bytes.
  if (!line.empty()) RingWrite(at, line.data(), line.size());
  if (!marker.empty()) RingWrite(Wrap(at + line.size()), marker.data(), marker.size());
  live_ += static_cast<uint32_t>(record);
  ++evidence_count_;
}

void Engine::Window::InsertEvidence(absl::string_view line, absl::string_view marker,
                                    int64_t time, int64_t span, uint32_t max,
                                    uint32_t max_bytes) {
  const size_t record = kRecordHeader + line.size() + marker.size();
  if (max == 0 || record > max_bytes) return;
  struct Record {
    uint32_t at;    // in the ring
    uint32_t size;  // header included
    int64_t time;
  };
  absl::InlinedVector<Record, 8> records;
  for (uint32_t i = 0, at = head_; i < evidence_count_; ++i) {
    uint32_t len;
    int64_t t;
    ReadHeader(at, &len, &t);
    records.push_back({at, kRecordHeader + len, t});
    at = Wrap(at + kRecordHeader + len);
  }
  // After the records of its time and before: lines of one time stay in the order they came.
  size_t place = records.size();
  while (place > 0 && records[place - 1].time > time) --place;
  // The records kept are [first, last); the new one goes at `place` among them. Room is made
  // by dropping a record at either end: one more than a span from the new one first (the
  // farther end), else the oldest, as AddEvidence drops. Never the new record: a detection on
  // this line shows it.
  size_t first = 0, last = records.size();
  size_t bytes = live_;
  while (last > first && (last - first >= max || bytes + record > max_bytes)) {
    const int64_t to_oldest = std::abs(time - records[first].time);
    const int64_t to_newest = std::abs(records[last - 1].time - time);
    if (to_newest > span && to_newest > to_oldest) {
      bytes -= records[--last].size;
    } else {
      bytes -= records[first++].size;
    }
  }
  place = std::clamp(place, first, last);
  // Rebuilt from the ring's start in a buffer of its own (a late line is rare; a count in
  // order appends in place).
  const size_t live = bytes + record;
  size_t ring = RingCap();
  if (live > ring) ring = std::max(live, std::min(ring * 3 / 2, static_cast<size_t>(max_bytes)));
  std::unique_ptr<char[]> rebuilt(new char[RingStart() + ring]);
  if (RingStart() > 0) std::memcpy(rebuilt.get(), buf_.get(), RingStart());
  char* out = rebuilt.get() + RingStart();
  for (size_t i = first; i < place; ++i) {
    RingRead(records[i].at, out, records[i].size);
    out += records[i].size;
  }
  const uint32_t len = static_cast<uint32_t>(line.size() + marker.size());
  std::memcpy(out, &len, sizeof(len));
  std::memcpy(out + sizeof(len), &time, sizeof(time));
  out += kRecordHeader;
  if (!line.empty()) std::memcpy(out, line.data(), line.size());
  out += line.size();
  if (!marker.empty()) std::memcpy(out, marker.data(), marker.size());
  out += marker.size();
  for (size_t i = place; i < last; ++i) {
    RingRead(records[i].at, out, records[i].size);
    out += records[i].size;
  }
  buf_ = std::move(rebuilt);
  cap_ = static_cast<uint32_t>(RingStart() + ring);
  head_ = 0;
  live_ = static_cast<uint32_t>(live);
  evidence_count_ = static_cast<uint32_t>(last - first + 1);
}

void Engine::Window::TrimEvidence(int64_t from, int64_t to, size_t n) {
  DropEvidenceBefore(from);
  // The newest records, past `to`: the ring is walked to its last record each time (a few
  // records, and only after lines out of order).
  while (evidence_count_ > 0) {
    uint32_t at = head_, len = 0;
    int64_t time = 0;
    for (uint32_t i = 0; i < evidence_count_; ++i) {
      ReadHeader(at, &len, &time);
      if (i + 1 < evidence_count_) at = Wrap(at + kRecordHeader + len);
    }
    if (time <= to) break;
    live_ -= kRecordHeader + len;
    if (--evidence_count_ == 0) head_ = 0;
  }
  while (evidence_count_ > n) DropOldest();
}

void Engine::Window::TakeEvidence(int64_t from, int64_t to, size_t n,
                                  std::vector<std::string>* out, const Evidence* extra) {
  // Two walks over the headers: how many lines lie in [from, to], then the lines, skipping all
  // but the newest `n`. `extra` goes after the records of its time and before the later ones.
  size_t in_range = extra != nullptr ? 1 : 0;
  uint32_t at = head_;
  for (uint32_t i = 0; i < evidence_count_; ++i) {
    uint32_t len;
    int64_t time;
    ReadHeader(at, &len, &time);
    if (time >= from && time <= to) ++in_range;
    at = Wrap(at + kRecordHeader + len);
  }
  size_t skip = in_range > n ? in_range - n : 0;
  out->reserve(out->size() + in_range - skip);
  auto take_extra = [&] {
    if (skip > 0) {
      --skip;
    } else {
      out->push_back(absl::StrCat(extra->line, extra->marker));
    }
    extra = nullptr;
  };
  at = head_;
  for (uint32_t i = 0; i < evidence_count_; ++i) {
    uint32_t len;
    int64_t time;
    ReadHeader(at, &len, &time);
    at = Wrap(at + kRecordHeader);
    if (extra != nullptr && time > extra->time) take_extra();
    if (time >= from && time <= to && skip > 0) {
      --skip;
    } else if (time >= from && time <= to) {
      if (at + len <= RingCap()) {  // in one piece: built from it, not zeroed and copied over
        out->emplace_back(buf_.get() + RingStart() + at, len);
      } else {
        std::string& line = out->emplace_back(len, '\0');
        RingRead(at, line.data(), len);
      }
    }
    at = Wrap(at + len);
  }
  if (extra != nullptr) take_extra();
  head_ = 0;
  live_ = 0;
  evidence_count_ = 0;
}

void Engine::Count(int rule_index, absl::string_view key,
                   absl::FunctionRef<absl::string_view()> line, absl::Time time,
                   absl::string_view secret, uint32_t stream, std::vector<Detection>* out,
                   const size_t* key_hash) {
  const CompiledRule& rule = *rules_->rules()[rule_index];
  const bool full = CountWindow(rule_index, key, rule.proto.key_kind(), /*detect=*/true, line,
                                time, secret, stream, out, key_hash);
  // An IPv4 key has no ':' (and a rule of count 1 detects every match as the address's).
  if (options_.ipv6_window_prefix != 0 && rule.count > 1 &&
      rule.proto.key_kind() == TargetKind::TARGET_KIND_IP && key.find(':') != key.npos) {
    CountRange(rule_index, key, /*detect=*/!full, line, time, stream, out);
  }
}

void Engine::CountRange(int rule_index, absl::string_view key, bool detect,
                        absl::FunctionRef<absl::string_view()> line, absl::Time time,
                        uint32_t stream, std::vector<Detection>* out) {
  std::optional<IpAddress> ip = IpAddress::Parse(key);
  if (!ip || ip->is_v4()) return;
  // A 6to4 address (2002:WWXX:YYZZ::/48, RFC 3056) is one IPv4 host's, and that host holds
  // the whole /48: a new subnet and interface id per try fills no /64's window, so it counts in
  // its /48's, whenever range windows are on, whatever their prefix (never wider: the next /48
  // is another host). The /48 is a range the edge blocks; the IPv4 address would not cover the
  // IPv6 traffic. (DecisionTable folds its addresses into the same /48.)
  const bool six_to_four = Is6to4(*ip);
  // Any other address embedding an IPv4 one (NAT64, IPv4-compatible, Teredo) is that IPv4
  // host's: its "neighbours" are other hosts. Teredo's client IPv4 is in its last 32 bits, under
  // the /64 its server's clients share: no range the edge can block holds one client alone.
  if (!six_to_four && EmbeddedIpv4(*ip).has_value()) return;
  const Cidr range = Cidr::Covering(*ip, six_to_four ? 48 : options_.ipv6_window_prefix);
  // No window at all, not merely no detection: a range decision would cover the neighbour.
  if (TouchesNeverBan(range, options_.allowlist)) return;
  // Cidr::ToString's text, without its allocations.
  char base[IpAddress::kMaxTextLength];
  const absl::string_view b = range.base().Format(base);
  char text[IpAddress::kMaxTextLength + 8];
  std::memcpy(text, b.data(), b.size());
  const int n = std::snprintf(text + b.size(), sizeof(text) - b.size(), "/%d",
                              range.prefix_length());
  CountWindow(rule_index, absl::string_view(text, b.size() + static_cast<size_t>(std::max(n, 0))),
              TargetKind::TARGET_KIND_RANGE, detect, line, time, absl::string_view(), stream,
              out, nullptr);
}

bool Engine::CountWindow(int rule_index, absl::string_view key, TargetKind kind, bool detect,
                         absl::FunctionRef<absl::string_view()> line, absl::Time time,
                         absl::string_view secret, uint32_t stream, std::vector<Detection>* out,
                         const size_t* key_hash) {
  const CompiledRule& rule = *rules_->rules()[rule_index];
  auto detection = [&]() -> Detection& {
    stats_.detections.fetch_add(1, std::memory_order_relaxed);
    Detection& d = out->emplace_back();
    d.rule = &rule;
    d.rule_id = rule.id();
    d.kind = kind;
    d.key = std::string(key);
    d.time = time;
    d.secret = std::string(secret);
    if (options_.feeds != nullptr && d.kind == TargetKind::TARGET_KIND_IP) {
      if (std::optional<IpAddress> ip = IpAddress::Parse(d.key)) {
        d.feeds = options_.feeds->FeedsContaining(*ip);
      }
    }
    return d;
  };
  // The line as a window keeps it, asked for only when one does: its evidence share (a 16 KiB
  // line must not cost 16 KiB per window). The cut keeps the head (the part a log writer puts
  // first: who, what, from where) and says how much went. The line is already redacted, so the
  // cut cannot leave half a token behind.
  char marker_buf[32];
  absl::string_view marker;
  const auto kept = [&]() -> absl::string_view {
    const absl::string_view raw = line();
    if (raw.size() <= evidence_line_bytes_) return raw;
    const absl::string_view head = CutUtf8(raw, evidence_line_bytes_ - kMarkerRoom);
    const int n = std::snprintf(marker_buf, sizeof(marker_buf), " [%zu bytes cut]",
                                raw.size() - head.size());
    marker = absl::string_view(marker_buf, static_cast<size_t>(std::max(n, 0)));
    stats_.evidence_truncated.fetch_add(1, std::memory_order_relaxed);
    return head;
  };
  if (rule.count == 1) {  // no window needed: every match is a detection
    if (!detect) return true;
    Detection& d = detection();
    if (options_.max_evidence > 0) {
      const absl::string_view head = kept();  // sets `marker`: not in one expression with it
      d.evidence.push_back(absl::StrCat(head, marker));
    }
    return true;
  }
  const size_t hash = key_hash != nullptr ? *key_hash : WindowHash()(key);
  Shard& shard = ShardFor(rule_index, hash);
  ShardMutexLock lock(&shard.mu);
  WindowMap& map = shard.maps[rule_index];
  auto it = map.find(key, hash);
  int64_t grown = 0;  // bytes this call adds to the shard
  if (it == map.end()) {
    // The cap is per rule over all shards; the shard taking the new key makes the room.
    if (windows_per_rule_[rule_index].load(std::memory_order_relaxed) >=
        static_cast<int64_t>(options_.max_keys_per_rule)) {
      Evict(shard, map, rule_index);
    }
    const size_t table_before = TableBytes(map);
    it = map.insert(std::make_unique<Window>(key)).first;
    windows_per_rule_[rule_index].fetch_add(1, std::memory_order_relaxed);
    grown = static_cast<int64_t>(TableBytes(map)) - static_cast<int64_t>(table_before);
  } else {
    grown = -static_cast<int64_t>((*it)->Bytes());
  }
  Window& w = **it;
  const int64_t now = ToMillis(time);
  const int64_t span = ToMillis(rule.window);
  const int64_t newest = std::max(now, w.last);
  const size_t n = rule.count;
  // A window counts the matches that fit in one span, whatever order the lines come in (a
  // backlog stream, a pending match released at its own time, a line dated ahead). `times` is
  // in time order. When the window fills, [run_from, run_to] are the times of the run of `n`
  // matches within a span that made it: its evidence.
  bool full = false;
  int64_t run_from = now, run_to = now;
  const bool in_order = w.times.empty() || now >= w.times.back();
  if (in_order && (w.times.empty() || now - w.times.back() <= span)) {
    // In order and within a span of the newest match (nearly always): slide, forgetting the
    // matches a span before this one; every match kept is then in this one's span.
    const int64_t horizon = now - span;
    if (!w.times.empty() && w.times.front() < horizon) {
      w.times.erase(w.times.begin(), std::lower_bound(w.times.begin(), w.times.end(), horizon));
      // Their lines too: a detection's evidence is its run's matches, as after an Expire.
      w.DropEvidenceBefore(horizon);
    }
    w.times.push_back(now);
    full = w.times.size() >= n;
    if (full) run_from = w.times[w.times.size() - n];
  } else {
    // A late line, or one dated more than a span after the newest match (a sender's clock
    // ahead, a live stream beside a backlog of its key): it slides nothing, since the matches
    // behind it still count among themselves (sliding on a line an hour ahead erased the real
    // failures it followed). In its place, and counted with the matches of a span around it.
    const auto at = w.times.insert(std::upper_bound(w.times.begin(), w.times.end(), now), now);
    const size_t p = static_cast<size_t>(at - w.times.begin());
    if (w.times.size() >= n) {
      for (size_t j = p >= n - 1 ? p - (n - 1) : 0; j <= p && j + n - 1 < w.times.size(); ++j) {
        if (w.times[j + n - 1] - w.times[j] <= span) {
          full = true;
          run_from = w.times[j];
          run_to = w.times[j + n - 1];
          break;
        }
      }
    }
    // Lines in no order keep the matches of several spans: at most twice the threshold. Past
    // it the time farthest from this line's goes (at a tie, the older): this line's span is
    // where a detection can come from, and dropping simply the oldest let the lines of a
    // clock an hour fast push out each real failure behind them as it came.
    if (!full && w.times.size() > 2 * n) {
      while (w.times.size() > 2 * n) {
        if (now - w.times.front() >= w.times.back() - now) {
          w.times.erase(w.times.begin());
        } else {
          w.times.pop_back();
        }
      }
      w.TrimEvidence(w.times.front(), w.times.back(), w.times.size());
    }
  }
  // The window ages in the clock of the stream of its newest match (ExpireByStream).
  if (now >= w.last) w.stream = stream;
  w.last = newest;
  w.touched = ++shard.ticks;
  // Only the lines a detection can show are kept: a detection's evidence is the lines of its
  // run's newest max_evidence matches, and a match that leaves its window fewer than
  // count - max_evidence matches can never be one of them when lines come in order (its window
  // needs more than max_evidence matches after it to detect; sliding only lowers the count).
  // So a window of web-request-flood (120 requests) copies 5 of its 120 lines, not all of them:
  // the copy and the ring's turn were a third of an access line's cost with every pack
  // (PERFORMANCE.md, "Seventeenth pass"), and a window under its threshold holds no lines at
  // all. (A late line can make an earlier match one of the newest of a run after that match
  // was not kept: the evidence then shows fewer or older lines of the run, never another's.)
  // A late line that fills the window is not put in the ring, where it could push out a line
  // of the run newer than itself: the detection weighs it with the ring's (TakeEvidence).
  Window::Evidence late;
  const bool late_fills = full && !in_order && options_.max_evidence > 0;
  if (late_fills) {
    late.time = now;
    late.line = kept();  // sets `marker`: not in one expression with it
    late.marker = marker;
  } else if (w.times.size() + options_.max_evidence > n) {
    const absl::string_view head = kept();
    if (in_order) {
      w.AddEvidence(head, marker, now, options_.max_evidence, options_.max_evidence_bytes);
    } else {
      w.InsertEvidence(head, marker, now, span, options_.max_evidence,
                       options_.max_evidence_bytes);
    }
  }
  if (full) {
    if (detect) {
      Detection& d = detection();
      w.TakeEvidence(run_from, run_to, std::min<size_t>(n, options_.max_evidence), &d.evidence,
                     late_fills ? &late : nullptr);
    } else {
      // Another window made this line's detection (CountRange): this one starts over all the
      // same, its lines with it.
      std::vector<std::string> dropped;
      w.TakeEvidence(run_from, run_to, 0, &dropped);
    }
    // Start over: the next detection needs a full threshold of new matches. The times keep
    // their capacity (InlinedVector::clear would free it, and a window that detects again
    // grows it again a doubling at a time: 7 allocations to 120 for web-request-flood); Bytes
    // accounts what is kept, and Expire and the budget free it with the window.
    w.times.erase(w.times.begin(), w.times.end());
  }
  AccountLocked(shard, grown + static_cast<int64_t>(w.Bytes()));
  EnforceBudgetLocked(shard);  // `w` may be gone after this
  return full;
}

size_t Engine::TableBytes(const WindowMap& map) {
  // One slot (a pointer) and one control byte per capacity, plus a group of cloned control
  // bytes: what raw_hash_set allocates, whether the slots are full or not.
  if (map.capacity() == 0) return 0;
  return HeapBytes(map.capacity() * (sizeof(WindowMap::value_type) + 1) + 16);
}

void Engine::AccountLocked(Shard& shard, int64_t delta) {
  shard.bytes = static_cast<size_t>(static_cast<int64_t>(shard.bytes) + delta);
  shard.published_bytes.store(shard.bytes, std::memory_order_relaxed);
}

void Engine::EraseLocked(Shard& shard, WindowMap& map, WindowMap::iterator it) {
  AccountLocked(shard, -static_cast<int64_t>((*it)->Bytes()));
  map.erase(it);
}

void Engine::ShrinkLocked(Shard& shard, WindowMap& map) {
  // A quarter full or less: rebuilt to fit (O(size), rare: after an eviction or an expiry that
  // emptied most of it). An empty table gives back all of its array.
  if (map.capacity() == 0 || map.size() * 4 > map.capacity()) return;
  const size_t before = TableBytes(map);
  map.rehash(0);
  AccountLocked(shard, static_cast<int64_t>(TableBytes(map)) - static_cast<int64_t>(before));
}

void Engine::RecountLocked(Shard& shard) {
  size_t bytes = 0;
  for (const WindowMap& map : shard.maps) {
    bytes += TableBytes(map);
    for (const auto& w : map) bytes += w->Bytes();
  }
  AccountLocked(shard, static_cast<int64_t>(bytes) - static_cast<int64_t>(shard.bytes));
}

void Engine::EnforceBudgetLocked(Shard& shard) {
  // The budget is for resident memory: an eighth of it is left to what the accounting cannot
  // see (the allocator's free lists after evictions, this pass's own vector). memory_bench
  // measured resident growth 12% over the accounted bytes under a flood of short windows.
  const size_t share = options_.memory_budget_bytes / kShards;
  const size_t limit = share - share / 8;
  if (shard.bytes <= limit) return;
  // Drop down to seven eighths of the limit in one go, so the O(n log n) pass below runs once
  // per many inserts (amortised O(log n) each), in BudgetRankOf's order over all rules. Keys
  // spread evenly over shards, so this is close to a global order.
  const size_t target = limit - limit / 8;
  std::vector<std::pair<EvictionRank, size_t>> order;  // (rank, bytes); ticks are unique
  const auto& rules = rules_->rules();
  for (size_t r = 0; r < shard.maps.size(); ++r) {
    const size_t count = rules[r]->count;
    const int64_t span = ToMillis(rules[r]->window);
    for (const auto& w : shard.maps[r]) {
      order.emplace_back(BudgetRankOf(*w, count, span), w->Bytes());
    }
  }
  std::sort(order.begin(), order.end());
  size_t freed = 0;
  EvictionRank cutoff{};
  bool any = false;
  for (const auto& [rank, bytes] : order) {
    if (shard.bytes - freed <= target) break;
    freed += bytes;
    cutoff = rank;
    any = true;
  }
  if (!any) return;
  for (size_t r = 0; r < shard.maps.size(); ++r) {
    WindowMap& map = shard.maps[r];
    const size_t count = rules[r]->count;
    const int64_t span = ToMillis(rules[r]->window);
    size_t dropped = 0;
    for (auto it = map.begin(); it != map.end();) {
      if (BudgetRankOf(**it, count, span) <= cutoff) {
        EraseLocked(shard, map, it++);
        ++dropped;
      } else {
        ++it;
      }
    }
    if (dropped == 0) continue;
    stats_.memory_evicted_windows.fetch_add(dropped, std::memory_order_relaxed);
    windows_per_rule_[r].fetch_sub(static_cast<int64_t>(dropped), std::memory_order_relaxed);
    ShrinkLocked(shard, map);
  }
}

size_t Engine::MostWithinASpan(const Window& w, int64_t span) {
  const auto& t = w.times;
  if (t.empty()) return 0;
  // Differences taken unsigned: times are in order, so each fits, whatever dates a line bore.
  const uint64_t width = static_cast<uint64_t>(std::max<int64_t>(span, 0));
  const auto apart = [&](size_t lo, size_t hi) {
    return static_cast<uint64_t>(t[hi]) - static_cast<uint64_t>(t[lo]);
  };
  if (apart(0, t.size() - 1) <= width) return t.size();  // nearly always: lines in order
  // Two pointers over the times in order: O(size), at most twice the threshold.
  size_t most = 1;
  for (size_t lo = 0, hi = 0; hi < t.size(); ++hi) {
    while (apart(lo, hi) > width) ++lo;
    most = std::max(most, hi - lo + 1);
  }
  return most;
}

void Engine::EvictOldestLocked(Shard& in, WindowMap& from, int rule_index) {
  // In RankOf's order: by matches still missing (one rule: one threshold), then by `touched`,
  // the order lines counted in; not by event time, which the log writer chooses (a backlog's
  // windows would always go first, future-dated ones never).
  const CompiledRule& rule = *rules_->rules()[rule_index];
  const size_t count = rule.count;
  const int64_t span = ToMillis(rule.window);
  std::vector<EvictionRank> ranks;
  ranks.reserve(from.size());
  for (const auto& w : from) ranks.push_back(RankOf(*w, count, span));
  size_t drop = std::max<size_t>(1, from.size() / 10);
  std::nth_element(ranks.begin(), ranks.begin() + (drop - 1), ranks.end());
  const EvictionRank cutoff = ranks[drop - 1];
  size_t dropped = 0;
  for (auto it = from.begin(); it != from.end() && dropped < drop;) {
    if (RankOf(**it, count, span) <= cutoff) {
      EraseLocked(in, from, it++);
      ++dropped;
    } else {
      ++it;
    }
  }
  stats_.evicted_windows.fetch_add(dropped);
  windows_per_rule_[rule_index].fetch_sub(static_cast<int64_t>(dropped));
}

void Engine::Evict(Shard& shard, WindowMap& map, int rule_index) {
  if (!map.empty()) {
    EvictOldestLocked(shard, map, rule_index);
    return;
  }
  // The new key's shard has nothing of this rule (common when max_keys_per_rule is small): make
  // the room in another shard. The caller holds this shard's lock, so the others are only tried
  // (no lock-order deadlock); when every non-empty one is busy the cap is exceeded by this one
  // key, and the next insert there evicts again.
  for (size_t sh = 0; sh < kShards; ++sh) {
    Shard& other = shards_[sh];
    if (&other == &shard) continue;  // `map` is its maps[rule_index], and empty
    if (!other.mu.TryLock()) continue;
    WindowMap& from = other.maps[rule_index];
    const bool found = !from.empty();
    if (found) EvictOldestLocked(other, from, rule_index);
    other.mu.Unlock();
    if (found) return;
  }
}

void Engine::Expire(absl::Time now) { ExpireByStream({}, now); }

void Engine::ExpireByStream(const std::vector<absl::Time>& stream_now, absl::Time other_now) {
  ExpireSelected(stream_now, other_now, nullptr, true);
}

void Engine::ExpireSpread(absl::Time now) {
  const int64_t now_ms = ToMillis(now);
  const auto& rules = rules_->rules();
  spread_next_ms_.resize(rules.size(), std::numeric_limits<int64_t>::min());
  std::vector<char> due(rules.size(), 0);
  bool any = false;
  for (size_t r = 0; r < rules.size(); ++r) {
    if (now_ms < spread_next_ms_[r]) continue;
    due[r] = 1;
    any = true;
    const int64_t eighth = absl::ToInt64Milliseconds(rules[r]->window) / 8;
    spread_next_ms_[r] = now_ms + std::max<int64_t>(eighth, 1);
  }
  const bool sessions = now_ms >= spread_sessions_next_ms_;
  if (sessions) {
    spread_sessions_next_ms_ =
        now_ms + std::max<int64_t>(absl::ToInt64Milliseconds(sessions_.options().ttl) / 4, 1);
  }
  if (any || sessions) ExpireSelected({}, now, &due, sessions);
}

void Engine::ExpireSelected(const std::vector<absl::Time>& stream_now, absl::Time other_now,
                            const std::vector<char>* due, bool sessions) {
  if (sessions) sessions_.ExpireByStream(stream_now, other_now);
  std::vector<int64_t> now_ms(stream_now.size() + 1);
  now_ms[0] = ToMillis(other_now);
  for (size_t s = 1; s < stream_now.size(); ++s) now_ms[s] = ToMillis(stream_now[s]);
  for (size_t sh = 0; sh < kShards; ++sh) {
    ShardMutexLock lock(&shards_[sh].mu);
    for (size_t r = 0; r < shards_[sh].maps.size(); ++r) {
      if (due != nullptr && (r >= due->size() || !(*due)[r])) continue;
      const CompiledRule& rule = *rules_->rules()[r];
      const int64_t span = std::max<int64_t>(absl::ToInt64Milliseconds(rule.window), 0);
      WindowMap& map = shards_[sh].maps[r];
      for (auto it = map.begin(); it != map.end();) {
        const uint32_t s = (*it)->stream;
        const int64_t horizon = (s < stream_now.size() && s > 0 ? now_ms[s] : now_ms[0]) - span;
        const int64_t last =
            s == kRestoredStream ? std::max((*it)->last, restored_at_ms_) : (*it)->last;
        if (last < horizon) {
          EraseLocked(shards_[sh], map, it++);
          stats_.expired_windows.fetch_add(1, std::memory_order_relaxed);
          windows_per_rule_[r].fetch_sub(1, std::memory_order_relaxed);
        } else {
          ++it;
        }
      }
      ShrinkLocked(shards_[sh], map);
    }
  }
}

palisade::v1::EngineSnapshot Engine::Snapshot() const {
  palisade::v1::EngineSnapshot out;
  for (size_t sh = 0; sh < kShards; ++sh) {
    ShardMutexLock lock(&shards_[sh].mu);
    for (size_t r = 0; r < shards_[sh].maps.size(); ++r) {
      for (const auto& w : shards_[sh].maps[r]) {
        if (w->times.empty()) continue;
        const CompiledRule& rule = *rules_->rules()[r];
        auto* s = out.add_windows();
        s->set_rule_id(rule.id());
        s->set_rule_key_kind(rule.proto.key_kind());
        s->set_rule_key(rule.proto.key());
        s->set_key(std::string(w->key()));
        for (int64_t t : w->times) s->add_times_ms(t);
      }
    }
  }
  return out;
}

size_t Engine::Restore(const palisade::v1::EngineSnapshot& snapshot, absl::Time now,
                       UnmarkedWindows unmarked) {
  size_t skipped = 0;
  if (now != absl::InfinitePast()) restored_at_ms_ = ToMillis(now);
  absl::flat_hash_map<std::string, size_t> index;
  for (size_t r = 0; r < rules_->rules().size(); ++r) index[rules_->rules()[r]->id()] = r;
  // Oldest newest match first: the restore order (Window::touched) is the eviction order's
  // tie-break (RankOf, BudgetRankOf), between windows missing as many matches.
  std::vector<std::pair<int64_t, int>> order;
  order.reserve(snapshot.windows_size());
  for (int i = 0; i < snapshot.windows_size(); ++i) {
    const auto& times = snapshot.windows(i).times_ms();
    if (!times.empty()) order.emplace_back(*std::max_element(times.begin(), times.end()), i);
  }
  std::sort(order.begin(), order.end());
  for (const auto& [newest, i] : order) {
    const palisade::v1::EngineSnapshot::Window& s = snapshot.windows(i);
    auto it = index.find(s.rule_id());
    if (it == index.end() || s.times_ms().empty()) continue;
    const int rule = static_cast<int>(it->second);
    // Only into a rule that counts what the window counted, as SetRules keeps windows: a pack
    // that turned the rule's key from a PATH into an address (same id) would else make a path
    // an attacker chose ("203.0.113.5") an address's count, one match from a ban. A window of
    // a snapshot written before it said (the fields absent) is skipped whatever the rule is
    // now: the rule it counted for is unknown, and the dangerous change ends on the default
    // kind (PATH to IP), so keeping default-kind windows would keep exactly those. That costs,
    // once (the first restart on this version), the counts of one window span. Unless the
    // caller knows the snapshot was taken under these very rules (kTrust: a rule set version
    // that fingerprints them, key kind and capture included, is this one).
    const CompiledRule& compiled = *rules_->rules()[rule];
    const bool marked = s.has_rule_key_kind() && s.has_rule_key();
    if (marked ? s.rule_key_kind() != compiled.proto.key_kind() ||
                     s.rule_key() != compiled.proto.key()
               : unmarked != UnmarkedWindows::kTrust) {
      ++skipped;
      continue;
    }
    Shard& shard = ShardFor(rule, WindowHash()(s.key()));
    ShardMutexLock lock(&shard.mu);
    WindowMap& map = shard.maps[rule];
    auto slot = map.find(absl::string_view(s.key()));
    int64_t grown = 0;
    if (slot == map.end()) {
      // The cap as Count keeps it: a state written under a larger one is restored within it.
      if (windows_per_rule_[rule].load(std::memory_order_relaxed) >=
          static_cast<int64_t>(options_.max_keys_per_rule)) {
        Evict(shard, map, rule);
      }
      const size_t table_before = TableBytes(map);
      slot = map.insert(std::make_unique<Window>(s.key())).first;
      windows_per_rule_[rule].fetch_add(1, std::memory_order_relaxed);
      grown = static_cast<int64_t>(TableBytes(map)) - static_cast<int64_t>(table_before);
    } else {
      grown = -static_cast<int64_t>((*slot)->Bytes());
    }
    Window& w = **slot;
    w.times.assign(s.times_ms().begin(), s.times_ms().end());
    std::sort(w.times.begin(), w.times.end());  // Count keeps them in time order
    w.last = *std::max_element(s.times_ms().begin(), s.times_ms().end());
    w.stream = kRestoredStream;
    w.touched = ++shard.ticks;
    AccountLocked(shard, grown + static_cast<int64_t>(w.Bytes()));
    EnforceBudgetLocked(shard);
  }
  return skipped;
}

size_t Engine::memory_bytes() const {
  size_t bytes = 0;
  for (size_t sh = 0; sh < kShards; ++sh) {
    bytes += shards_[sh].published_bytes.load(std::memory_order_relaxed);
  }
  return bytes;
}

size_t Engine::live_windows() const {
  int64_t n = 0;
  for (size_t r = 0; r < rule_count_; ++r) n += windows_per_rule_[r].load();
  return static_cast<size_t>(n);
}

}  // namespace palisade
