#include "services/engine/engine.h"

#include <algorithm>
#include <cstring>

#include "absl/hash/hash.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "services/common/fingerprint.h"

namespace palisade {
namespace {

using palisade::v1::TargetKind;

int64_t ToMillis(absl::Time t) { return absl::ToUnixMillis(t); }

}  // namespace

Engine::Scratch& Engine::ThreadScratch() {
  static thread_local Scratch scratch;
  return scratch;
}

Engine::Engine(std::shared_ptr<const RuleSet> rules, EngineOptions options)
    : options_(std::move(options)), shards_(new Shard[kShards]) {
  options_.allowlist.Add(*Cidr::Parse("127.0.0.0/8"));
  options_.allowlist.Add(*Cidr::Parse("::1/128"));
  if (options_.max_keys_per_rule == 0) options_.max_keys_per_rule = 1'000'000;
  SetRules(std::move(rules));
}

void Engine::SetRules(std::shared_ptr<const RuleSet> rules) {
  const size_t n_rules = rules->rules().size();
  auto matches = std::make_unique<std::atomic<uint64_t>[]>(n_rules);
  for (size_t i = 0; i < n_rules; ++i) matches[i] = 0;
  // For each new rule, the index of the old rule with the same id (and, for its windows, the
  // same threshold), or -1.
  std::vector<int> keep_matches(n_rules, -1), keep_windows(n_rules, -1);
  if (rules_ != nullptr) {
    const auto& old_rules = rules_->rules();
    for (size_t n = 0; n < n_rules; ++n) {
      const CompiledRule& rule = *rules->rules()[n];
      for (size_t o = 0; o < old_rules.size(); ++o) {
        const CompiledRule& old = *old_rules[o];
        if (old.id() != rule.id()) continue;
        keep_matches[n] = static_cast<int>(o);
        if (old.count == rule.count && old.window == rule.window) {
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
  for (size_t s = 0; s < kShards; ++s) {
    absl::MutexLock lock(&shards_[s].mu);
    std::vector<WindowMap> maps(n_rules);
    for (size_t n = 0; n < n_rules; ++n) {
      if (keep_windows[n] >= 0) maps[n] = std::move(shards_[s].maps[keep_windows[n]]);
      windows[n] += static_cast<int64_t>(maps[n].size());
    }
    shards_[s].maps = std::move(maps);
  }
  rules_ = std::move(rules);
  matches_per_rule_ = std::move(matches);
  windows_per_rule_ = std::move(windows);
  rule_count_ = n_rules;
}

Engine::Shard& Engine::ShardFor(int rule_index, absl::string_view key) {
  const size_t h = absl::Hash<std::pair<int, absl::string_view>>()({rule_index, key});
  return shards_[h % kShards];
}

EngineStats Engine::stats() const {
  EngineStats s;
  s.lines = stats_.lines.load();
  s.matched_lines = stats_.matched_lines.load();
  s.detections = stats_.detections.load();
  s.evicted_windows = stats_.evicted_windows.load();
  s.expired_windows = stats_.expired_windows.load();
  s.invalid_keys = stats_.invalid_keys.load();
  s.ignored = stats_.ignored.load();
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
                          absl::string_view* key, bool* allowlisted) {
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
  std::optional<IpAddress> ip = IpAddress::Parse(captured);
  if (!ip) return false;
  *allowlisted = options_.allowlist.Contains(*ip);
  *key = ip->Format(ThreadScratch().key_buf);
  return !key->empty();
}

LineResult Engine::Process(palisade::v1::LogFormat format, const ParsedLine& line,
                           absl::string_view raw, absl::Time time, std::vector<Detection>* out,
                           uint32_t stream) {
  LineResult result;
  stats_.lines.fetch_add(1, std::memory_order_relaxed);
  Candidates(format, line, [&](int rule_index, absl::string_view captured) {
    const CompiledRule& rule = *rules_->rules()[rule_index];
    for (const auto& ignore : rule.ignores) {
      if (RE2::PartialMatch(Piece(line.message), *ignore)) {
        ++result.ignored;
        return;
      }
    }
    absl::string_view key;
    bool allowlisted = false;
    if (!NormaliseKey(rule, captured, &key, &allowlisted)) {
      ++result.invalid_keys;
      return;
    }
    if (allowlisted) {
      ++result.ignored;
      return;
    }
    ++result.matches;
    matches_per_rule_[rule_index].fetch_add(1, std::memory_order_relaxed);
    if (rule.proto.key_kind() == TargetKind::TARGET_KIND_TOKEN_FINGERPRINT) {
      // Evidence must not carry the token: replace it with its fingerprint.
      const std::string redacted =
          absl::StrReplaceAll(raw, {{captured, absl::StrCat("[token ", key, "]")}});
      Count(rule_index, key, redacted, time, captured, stream, out);
      return;
    }
    Count(rule_index, key, raw, time, {}, stream, out);
  });
  result.matched = result.matches > 0;
  if (result.matched) stats_.matched_lines.fetch_add(1, std::memory_order_relaxed);
  if (result.invalid_keys) stats_.invalid_keys.fetch_add(result.invalid_keys);
  if (result.ignored) stats_.ignored.fetch_add(result.ignored);
  return result;
}

Engine::Window::Window(absl::string_view key) : key_len_(static_cast<uint32_t>(key.size())) {
  Reserve(key.size());
  std::memcpy(buf_.get(), key.data(), key.size());
  used_ = key_len_;
}

void Engine::Window::Reserve(size_t bytes) {
  if (bytes <= cap_) return;
  const size_t cap = std::max(bytes, static_cast<size_t>(cap_) + cap_ / 2);
  std::unique_ptr<char[]> grown(new char[cap]);
  if (used_ > 0) std::memcpy(grown.get(), buf_.get(), used_);
  buf_ = std::move(grown);
  cap_ = static_cast<uint32_t>(cap);
}

void Engine::Window::AddEvidence(absl::string_view line, uint32_t max) {
  if (max == 0) return;
  if (evidence_count_ >= max) {  // drop the oldest record
    uint32_t len;
    std::memcpy(&len, buf_.get() + key_len_, sizeof(len));
    const uint32_t record = sizeof(len) + len;
    std::memmove(buf_.get() + key_len_, buf_.get() + key_len_ + record,
                 used_ - key_len_ - record);
    used_ -= record;
    --evidence_count_;
  }
  const uint32_t len = static_cast<uint32_t>(line.size());
  Reserve(used_ + sizeof(len) + len);
  std::memcpy(buf_.get() + used_, &len, sizeof(len));
  std::memcpy(buf_.get() + used_ + sizeof(len), line.data(), len);
  used_ += sizeof(len) + len;
  ++evidence_count_;
}

void Engine::Window::TakeEvidence(std::vector<std::string>* out) {
  out->reserve(out->size() + evidence_count_);
  uint32_t at = key_len_;
  while (at < used_) {
    uint32_t len;
    std::memcpy(&len, buf_.get() + at, sizeof(len));
    out->emplace_back(buf_.get() + at + sizeof(len), len);
    at += sizeof(len) + len;
  }
  used_ = key_len_;
  evidence_count_ = 0;
}

void Engine::Count(int rule_index, absl::string_view key, absl::string_view raw, absl::Time time,
                   absl::string_view secret, uint32_t stream, std::vector<Detection>* out) {
  const CompiledRule& rule = *rules_->rules()[rule_index];
  auto detection = [&]() -> Detection& {
    stats_.detections.fetch_add(1, std::memory_order_relaxed);
    Detection& d = out->emplace_back();
    d.rule = &rule;
    d.rule_id = rule.id();
    d.kind = rule.proto.key_kind();
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
  if (rule.count == 1) {  // no window needed: every match is a detection
    Detection& d = detection();
    if (options_.max_evidence > 0) d.evidence.emplace_back(raw);
    return;
  }
  Shard& shard = ShardFor(rule_index, key);
  absl::MutexLock lock(&shard.mu);
  WindowMap& map = shard.maps[rule_index];
  auto it = map.find(key);
  if (it == map.end()) {
    // The cap is per rule over all shards; the shard taking the new key makes the room.
    if (windows_per_rule_[rule_index].load(std::memory_order_relaxed) >=
        static_cast<int64_t>(options_.max_keys_per_rule)) {
      Evict(map, rule_index);
    }
    it = map.insert(std::make_unique<Window>(key)).first;
    windows_per_rule_[rule_index].fetch_add(1, std::memory_order_relaxed);
  }
  Window& w = **it;
  const int64_t now = ToMillis(time);
  const int64_t horizon = now - absl::ToInt64Milliseconds(rule.window);
  // Slide: forget matches that fell out of the window (lines may arrive slightly out of order,
  // so filter rather than pop from the front).
  if (!w.times.empty() && w.times.front() < horizon) {
    w.times.erase(std::remove_if(w.times.begin(), w.times.end(),
                                 [horizon](int64_t t) { return t < horizon; }),
                  w.times.end());
  }
  w.times.push_back(now);
  w.last = std::max(w.last, now);
  w.stream = stream;
  w.AddEvidence(raw, options_.max_evidence);
  if (w.times.size() < rule.count) return;

  Detection& d = detection();
  w.TakeEvidence(&d.evidence);
  // Start over: the next detection needs a full threshold of new matches.
  w.times.clear();
}

void Engine::Evict(WindowMap& map, int rule_index) {
  // Drops the least recently active tenth of `from` in one go, so eviction is amortised O(1)
  // per insert. `from` must not be empty.
  auto evict_from = [this, rule_index](WindowMap& from) {
    std::vector<int64_t> lasts;
    lasts.reserve(from.size());
    for (const auto& w : from) lasts.push_back(w->last);
    size_t drop = std::max<size_t>(1, from.size() / 10);
    std::nth_element(lasts.begin(), lasts.begin() + (drop - 1), lasts.end());
    const int64_t cutoff = lasts[drop - 1];
    size_t dropped = 0;
    for (auto it = from.begin(); it != from.end() && dropped < drop;) {
      if ((*it)->last <= cutoff) {
        from.erase(it++);
        ++dropped;
      } else {
        ++it;
      }
    }
    stats_.evicted_windows.fetch_add(dropped);
    windows_per_rule_[rule_index].fetch_sub(static_cast<int64_t>(dropped));
  };
  if (!map.empty()) {
    evict_from(map);
    return;
  }
  // The new key's shard has nothing of this rule (common when max_keys_per_rule is small): make
  // the room in another shard. The caller holds this shard's lock, so the others are only tried
  // (no lock-order deadlock); when every non-empty one is busy the cap is exceeded by this one
  // key, and the next insert there evicts again.
  for (size_t sh = 0; sh < kShards; ++sh) {
    Shard& other = shards_[sh];
    if (&other.maps[rule_index] == &map || !other.mu.TryLock()) continue;
    WindowMap& from = other.maps[rule_index];
    const bool found = !from.empty();
    if (found) evict_from(from);
    other.mu.Unlock();
    if (found) return;
  }
}

void Engine::Expire(absl::Time now) { ExpireByStream({}, now); }

void Engine::ExpireByStream(const std::vector<absl::Time>& stream_now, absl::Time other_now) {
  std::vector<int64_t> now_ms(stream_now.size() + 1);
  now_ms[0] = ToMillis(other_now);
  for (size_t s = 1; s < stream_now.size(); ++s) now_ms[s] = ToMillis(stream_now[s]);
  for (size_t sh = 0; sh < kShards; ++sh) {
    absl::MutexLock lock(&shards_[sh].mu);
    for (size_t r = 0; r < shards_[sh].maps.size(); ++r) {
      const CompiledRule& rule = *rules_->rules()[r];
      const int64_t span = std::max<int64_t>(absl::ToInt64Milliseconds(rule.window), 0);
      WindowMap& map = shards_[sh].maps[r];
      for (auto it = map.begin(); it != map.end();) {
        const uint32_t s = (*it)->stream;
        const int64_t horizon = (s < stream_now.size() && s > 0 ? now_ms[s] : now_ms[0]) - span;
        if ((*it)->last < horizon) {
          map.erase(it++);
          stats_.expired_windows.fetch_add(1, std::memory_order_relaxed);
          windows_per_rule_[r].fetch_sub(1, std::memory_order_relaxed);
        } else {
          ++it;
        }
      }
    }
  }
}

palisade::v1::EngineSnapshot Engine::Snapshot() const {
  palisade::v1::EngineSnapshot out;
  for (size_t sh = 0; sh < kShards; ++sh) {
    absl::MutexLock lock(&shards_[sh].mu);
    for (size_t r = 0; r < shards_[sh].maps.size(); ++r) {
      for (const auto& w : shards_[sh].maps[r]) {
        if (w->times.empty()) continue;
        auto* s = out.add_windows();
        s->set_rule_id(rules_->rules()[r]->id());
        s->set_key(std::string(w->key()));
        for (int64_t t : w->times) s->add_times_ms(t);
      }
    }
  }
  return out;
}

void Engine::Restore(const palisade::v1::EngineSnapshot& snapshot) {
  absl::flat_hash_map<std::string, size_t> index;
  for (size_t r = 0; r < rules_->rules().size(); ++r) index[rules_->rules()[r]->id()] = r;
  for (const auto& s : snapshot.windows()) {
    auto it = index.find(s.rule_id());
    if (it == index.end() || s.times_ms().empty()) continue;
    const int rule = static_cast<int>(it->second);
    Shard& shard = ShardFor(rule, s.key());
    absl::MutexLock lock(&shard.mu);
    WindowMap& map = shard.maps[rule];
    auto slot = map.find(absl::string_view(s.key()));
    if (slot == map.end()) {
      slot = map.insert(std::make_unique<Window>(s.key())).first;
      windows_per_rule_[rule].fetch_add(1, std::memory_order_relaxed);
    }
    Window& w = **slot;
    w.times.assign(s.times_ms().begin(), s.times_ms().end());
    w.last = *std::max_element(s.times_ms().begin(), s.times_ms().end());
  }
}

size_t Engine::live_windows() const {
  int64_t n = 0;
  for (size_t r = 0; r < rule_count_; ++r) n += windows_per_rule_[r].load();
  return static_cast<size_t>(n);
}

}  // namespace palisade
