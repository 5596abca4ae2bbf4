#include "services/engine/session_table.h"

#include <algorithm>
#include <vector>

namespace palisade {
namespace {

// What malloc (glibc) takes for n bytes (see engine.cc): an 8-byte header, rounded up to 16.
size_t HeapBytes(size_t n) {
  if (n == 0) return 0;
  return std::max<size_t>(32, (n + 8 + 15) & ~size_t{15});
}

// A std::string keeps up to 15 bytes inside itself; past that it allocates its capacity.
size_t StringHeap(const std::string& s) { return s.capacity() > 15 ? HeapBytes(s.capacity() + 1) : 0; }

}  // namespace

SessionTable::SessionTable(SessionOptions options)
    : options_(options), shards_(new Shard[kShards]) {
  const SessionOptions defaults;
  if (options_.max_sessions == 0) options_.max_sessions = defaults.max_sessions;
  if (options_.max_bytes == 0) options_.max_bytes = defaults.max_bytes;
  if (options_.ttl <= absl::ZeroDuration()) options_.ttl = defaults.ttl;
  if (options_.max_pending == 0) options_.max_pending = defaults.max_pending;
  if (options_.max_pending_evidence_bytes == 0) {
    options_.max_pending_evidence_bytes = defaults.max_pending_evidence_bytes;
  }
  max_per_shard_ = std::max<size_t>(1, options_.max_sessions / kShards);
  max_bytes_per_shard_ = std::max<size_t>(1024, options_.max_bytes / kShards);
  ttl_ms_ = absl::ToInt64Milliseconds(options_.ttl);
}

size_t SessionTable::SessionBytes(const Map::value_type& entry) {
  const Session& s = entry.second;
  // The map's node (the id and the Session), its slot (a pointer and a control byte), and the
  // strings' heap.
  size_t bytes = HeapBytes(sizeof(Map::value_type)) + sizeof(void*) + 1 + StringHeap(entry.first);
  if (s.values.size() > 1) {
    bytes += HeapBytes(s.values.capacity() * sizeof(std::pair<std::string, std::string>));
  }
  for (const auto& [name, value] : s.values) bytes += StringHeap(name) + StringHeap(value);
  if (s.pending.capacity() > 0) bytes += HeapBytes(s.pending.capacity() * sizeof(PendingMatch));
  for (const PendingMatch& p : s.pending) {
    bytes += StringHeap(p.name) + StringHeap(p.evidence) + StringHeap(p.rule_id);
  }
  return bytes;
}

const SessionTable::Session* SessionTable::FindLocked(const Shard& shard, const IdKey& key,
                                                      int64_t time_ms) const {
  auto it = shard.sessions.find(key);
  if (it == shard.sessions.end()) return nullptr;
  const Session& s = it->second;
  if (StaleAt(s, time_ms)) return nullptr;
  return &s;
}

void SessionTable::EraseLocked(Shard& shard, Map::iterator it) {
  const Session& s = it->second;
  shard.bytes -= s.bytes;
  shard.pending -= s.pending.size();
  pending_dropped_.fetch_add(s.pending.size(), std::memory_order_relaxed);
  shard.sessions.erase(it);  // by its slot: no second hash, no other iterator invalidated
}

SessionTable::Map::iterator SessionTable::TouchLocked(Shard& shard, const IdKey& key,
                                                      int64_t time_ms, uint32_t stream) {
  // One probe finds the session or the slot for a new one, with the caller's hash; a new
  // node is built in place, its id from `key.id` (one heap block, the node).
  bool created = false;
  auto it = shard.sessions.lazy_emplace(key, [&](const auto& ctor) {
    created = true;
    ctor(std::piecewise_construct, std::forward_as_tuple(key.id.data(), key.id.size()),
         std::forward_as_tuple());
  });
  if (!created) {
    Session& old = it->second;
    // A session idle past ttl is a new one (a pid reused by a later connection); so is one
    // whose last line is dated more than ttl after this one (a clock ahead must not keep it).
    if (StaleAt(old, time_ms)) {
      old.last_ms = time_ms;  // started over: its time is this line's, not the one ahead
      old.values.clear();
      old.failed = false;
      shard.pending -= old.pending.size();
      pending_dropped_.fetch_add(old.pending.size(), std::memory_order_relaxed);
      old.pending.clear();
    }
  }
  Session& s = it->second;
  // Most recently seen: the highest tick. No list to reorder: moving a node to the end touched
  // its two neighbours, two cache misses per note with tens of thousands of live sessions.
  s.tick = ++shard.clock;
  s.last_ms = std::max(s.last_ms, time_ms);
  s.stream = stream;
  return it;
}

void SessionTable::SettleLocked(Shard& shard, Map::iterator it) {
  Session& s = it->second;
  shard.bytes -= s.bytes;
  s.bytes = SessionBytes(*it);
  shard.bytes += s.bytes;
  // Past the shard's share of either bound: the least recently seen go (never the one just
  // written, which has the highest tick).
  if (shard.sessions.size() > max_per_shard_ || shard.bytes > max_bytes_per_shard_) {
    EvictLocked(shard);
  }
  PublishLocked(shard);
}

void SessionTable::PublishLocked(Shard& shard) {
  shard.published_live.store(shard.sessions.size(), std::memory_order_relaxed);
  shard.published_bytes.store(shard.bytes, std::memory_order_relaxed);
  shard.published_pending.store(shard.pending, std::memory_order_relaxed);
}

void SessionTable::Note(absl::string_view id, absl::string_view name, absl::string_view value,
                        bool failed, absl::Time time, uint32_t stream,
                        std::vector<PendingMatch>* released) {
  if (id.empty() || id.size() > kMaxIdBytes) return;
  const bool keep_value = !name.empty() && value.size() <= options_.max_value_bytes;
  // One hash for the shard and the lookup in it (IdKey).
  const IdKey key = KeyOf(id);
  Shard& shard = ShardFor(key);
  ShardMutexLock lock(&shard.mu);
  const Map::iterator it = TouchLocked(shard, key, absl::ToUnixMillis(time), stream);
  Session& s = it->second;
  s.failed = s.failed || failed;
  if (keep_value) {
    auto v = std::find_if(s.values.begin(), s.values.end(),
                          [&](const auto& p) { return p.first == name; });
    if (v != s.values.end()) {
      v->second.assign(value.data(), value.size());
    } else if (s.values.size() < options_.max_values) {
      s.values.emplace_back(std::piecewise_construct,
                            std::forward_as_tuple(name.data(), name.size()),
                            std::forward_as_tuple(value.data(), value.size()));
    }
    // The value the pending matches waited for: handed back, in the order they came.
    if (released != nullptr && !s.pending.empty()) {
      auto waiting = std::stable_partition(s.pending.begin(), s.pending.end(),
                                           [&](const PendingMatch& p) { return p.name != name; });
      const size_t n = static_cast<size_t>(s.pending.end() - waiting);
      for (auto p = waiting; p != s.pending.end(); ++p) released->push_back(std::move(*p));
      s.pending.erase(waiting, s.pending.end());
      if (s.pending.empty()) s.pending.shrink_to_fit();
      shard.pending -= n;
      pending_released_.fetch_add(n, std::memory_order_relaxed);
    }
  }
  SettleLocked(shard, it);
}

void SessionTable::AddPending(absl::string_view id, PendingMatch match, absl::Time time,
                              uint32_t stream) {
  if (id.empty() || id.size() > kMaxIdBytes) return;
  if (match.evidence.size() > options_.max_pending_evidence_bytes) {
    match.evidence.resize(options_.max_pending_evidence_bytes);  // the caller cuts it first
  }
  if (match.name.size() > options_.max_value_bytes) return;
  const IdKey key = KeyOf(id);
  Shard& shard = ShardFor(key);
  ShardMutexLock lock(&shard.mu);
  const Map::iterator it = TouchLocked(shard, key, absl::ToUnixMillis(time), stream);
  Session& s = it->second;
  s.failed = true;
  if (s.pending.size() >= options_.max_pending) {
    s.pending.erase(s.pending.begin());
    --shard.pending;
    pending_dropped_.fetch_add(1, std::memory_order_relaxed);
  }
  s.pending.push_back(std::move(match));
  ++shard.pending;
  SettleLocked(shard, it);
}

void SessionTable::DropPending(absl::string_view id) {
  const IdKey key = KeyOf(id);
  Shard& shard = ShardFor(key);
  ShardMutexLock lock(&shard.mu);
  auto it = shard.sessions.find(key);
  if (it == shard.sessions.end() || it->second.pending.empty()) return;
  Session& s = it->second;
  shard.pending -= s.pending.size();
  pending_dropped_.fetch_add(s.pending.size(), std::memory_order_relaxed);
  s.pending.clear();
  s.pending.shrink_to_fit();
  shard.bytes -= s.bytes;
  s.bytes = SessionBytes(*it);
  shard.bytes += s.bytes;
  PublishLocked(shard);
}

void SessionTable::EvictLocked(Shard& shard) {
  // Down to seven eighths of the shard's bounds in one pass over its sessions, least recently
  // seen first: O(n) once per n/8 evictions, amortised O(1) per note.
  const size_t keep_count = max_per_shard_ - max_per_shard_ / 8;
  const size_t keep_bytes = max_bytes_per_shard_ - max_bytes_per_shard_ / 8;
  // Erasing by iterator never rehashes, so the other iterators in `order` stay valid.
  std::vector<std::pair<uint64_t, Map::iterator>> order;
  order.reserve(shard.sessions.size());
  for (auto it = shard.sessions.begin(); it != shard.sessions.end(); ++it) {
    order.emplace_back(it->second.tick, it);
  }
  // Ticks are unique in a shard, so the order is one. Only its head is sorted: the sessions the
  // count bound takes, an eighth at least (nth_element, then those few; a whole sort was 3 % of
  // an sshd replay's time). The rest is sorted only if the bytes bound wants more of it.
  const auto older = [](const auto& a, const auto& b) { return a.first < b.first; };
  const size_t n = order.size();
  size_t sorted = std::min(n, std::max(n > keep_count ? n - keep_count : 0, n / 8) + 1);
  std::nth_element(order.begin(), order.begin() + (sorted - 1), order.end(), older);
  std::sort(order.begin(), order.begin() + (sorted - 1), older);
  // The last one (the session just written, the highest tick) always stays.
  for (size_t i = 0; i + 1 < n; ++i) {
    if (shard.sessions.size() <= keep_count && shard.bytes <= keep_bytes) break;
    if (i == sorted) {
      std::sort(order.begin() + i, order.end(), older);
      sorted = n;
    }
    EraseLocked(shard, order[i].second);
    evicted_.fetch_add(1, std::memory_order_relaxed);
  }
}

bool SessionTable::Get(absl::string_view id, absl::string_view name, absl::Time time,
                       std::string* value) const {
  const IdKey key = KeyOf(id);
  const Shard& shard = ShardFor(key);
  ShardMutexLock lock(&shard.mu);
  const Session* s = FindLocked(shard, key, absl::ToUnixMillis(time));
  if (s == nullptr) return false;
  for (const auto& [n, v] : s->values) {
    if (n == name) {
      *value = v;
      return true;
    }
  }
  return false;
}

bool SessionTable::Failed(absl::string_view id, absl::Time time) const {
  const IdKey key = KeyOf(id);
  const Shard& shard = ShardFor(key);
  ShardMutexLock lock(&shard.mu);
  const Session* s = FindLocked(shard, key, absl::ToUnixMillis(time));
  return s != nullptr && s->failed;
}

void SessionTable::End(absl::string_view id, size_t unheld_pending) {
  pending_dropped_.fetch_add(unheld_pending, std::memory_order_relaxed);
  const IdKey key = KeyOf(id);
  Shard& shard = ShardFor(key);
  ShardMutexLock lock(&shard.mu);
  auto it = shard.sessions.find(key);
  if (it == shard.sessions.end()) return;
  EraseLocked(shard, it);
  ended_.fetch_add(1, std::memory_order_relaxed);
  PublishLocked(shard);
}

void SessionTable::Expire(absl::Time now) { ExpireByStream({}, now); }

void SessionTable::ExpireByStream(const std::vector<absl::Time>& stream_now,
                                  absl::Time other_now) {
  // The horizon per stream, converted once (not once per session): a session last written by
  // stream s goes when its last line is older than horizon[s] (horizon[0]: other_now's).
  std::vector<int64_t> horizon(std::max<size_t>(stream_now.size(), 1));
  horizon[0] = absl::ToUnixMillis(other_now - options_.ttl);
  for (size_t s = 1; s < stream_now.size(); ++s) {
    horizon[s] = absl::ToUnixMillis(stream_now[s] - options_.ttl);
  }
  for (size_t i = 0; i < kShards; ++i) {
    Shard& shard = shards_[i];
    ShardMutexLock lock(&shard.mu);
    for (auto it = shard.sessions.begin(); it != shard.sessions.end();) {
      auto next = std::next(it);  // valid after erasing `it` (no rehash on erase)
      const uint32_t s = it->second.stream;
      if (it->second.last_ms < horizon[s < horizon.size() ? s : 0]) {
        EraseLocked(shard, it);
        expired_.fetch_add(1, std::memory_order_relaxed);
      }
      it = next;
    }
    PublishLocked(shard);
  }
}

SessionStats SessionTable::stats() const {
  SessionStats s;
  for (size_t i = 0; i < kShards; ++i) {
    s.live += shards_[i].published_live.load(std::memory_order_relaxed);
    s.bytes += shards_[i].published_bytes.load(std::memory_order_relaxed);
    s.pending += shards_[i].published_pending.load(std::memory_order_relaxed);
  }
  s.evicted = evicted_.load();
  s.expired = expired_.load();
  s.ended = ended_.load();
  s.pending_released = pending_released_.load();
  s.pending_dropped = pending_dropped_.load();
  return s;
}

}  // namespace palisade
