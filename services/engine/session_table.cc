#include "services/engine/session_table.h"

#include <algorithm>
#include <vector>

#include "absl/hash/hash.h"

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
}

SessionTable::Shard& SessionTable::ShardFor(absl::string_view id) const {
  return shards_[absl::Hash<absl::string_view>()(id) % kShards];
}

size_t SessionTable::SessionBytes(const Session& s) {
  // The list node (two pointers and the Session), the map slot, and the strings' heap.
  size_t bytes = HeapBytes(sizeof(Session) + 2 * sizeof(void*)) +
                 sizeof(std::pair<absl::string_view, List::iterator>) + 1 + StringHeap(s.id);
  if (s.values.size() > 1) {
    bytes += HeapBytes(s.values.capacity() * sizeof(std::pair<std::string, std::string>));
  }
  for (const auto& [name, value] : s.values) bytes += StringHeap(name) + StringHeap(value);
  if (s.pending.capacity() > 0) bytes += HeapBytes(s.pending.capacity() * sizeof(PendingMatch));
  for (const PendingMatch& p : s.pending) bytes += StringHeap(p.name) + StringHeap(p.evidence);
  return bytes;
}

const SessionTable::Session* SessionTable::FindLocked(const Shard& shard, absl::string_view id,
                                                      int64_t time_ms) const {
  auto it = shard.by_id.find(id);
  if (it == shard.by_id.end()) return nullptr;
  const Session& s = *it->second;
  if (time_ms - s.last_ms > absl::ToInt64Milliseconds(options_.ttl)) return nullptr;
  return &s;
}

void SessionTable::EraseLocked(Shard& shard, List::iterator it) {
  shard.bytes -= it->bytes;
  shard.pending -= it->pending.size();
  pending_dropped_.fetch_add(it->pending.size(), std::memory_order_relaxed);
  shard.by_id.erase(absl::string_view(it->id));
  shard.lru.erase(it);
}

SessionTable::Session& SessionTable::TouchLocked(Shard& shard, absl::string_view id,
                                                 size_t hash, int64_t time_ms, uint32_t stream) {
  auto found = shard.by_id.find(id, hash);
  List::iterator it;
  if (found == shard.by_id.end()) {
    shard.lru.emplace_back();
    it = std::prev(shard.lru.end());
    it->id.assign(id.data(), id.size());
    shard.by_id.emplace(absl::string_view(it->id), it);
  } else {
    it = found->second;
    // A session idle past ttl is a new one (a pid reused by a later connection).
    if (time_ms - it->last_ms > absl::ToInt64Milliseconds(options_.ttl)) {
      it->values.clear();
      it->failed = false;
      shard.pending -= it->pending.size();
      pending_dropped_.fetch_add(it->pending.size(), std::memory_order_relaxed);
      it->pending.clear();
    }
  }
  Session& s = *it;
  // Most recently seen: the highest tick. No list to reorder: moving a node to the end touched
  // its two neighbours, two cache misses per note with tens of thousands of live sessions.
  s.tick = ++shard.clock;
  s.last_ms = std::max(s.last_ms, time_ms);
  s.stream = stream;
  return s;
}

void SessionTable::SettleLocked(Shard& shard, Session& s) {
  shard.bytes -= s.bytes;
  s.bytes = SessionBytes(s);
  shard.bytes += s.bytes;
  // Past the shard's share of either bound: the least recently seen go (never the one just
  // written, which has the highest tick).
  if (shard.lru.size() > max_per_shard_ || shard.bytes > max_bytes_per_shard_) {
    EvictLocked(shard);
  }
}

void SessionTable::Note(absl::string_view id, absl::string_view name, absl::string_view value,
                        bool failed, absl::Time time, uint32_t stream,
                        std::vector<PendingMatch>* released) {
  if (id.empty() || id.size() > kMaxIdBytes) return;
  const bool keep_value = !name.empty() && value.size() <= options_.max_value_bytes;
  // One hash for the shard and the lookup in it (the map hashes with the same absl::Hash).
  const size_t hash = absl::Hash<absl::string_view>()(id);
  Shard& shard = shards_[hash % kShards];
  ShardMutexLock lock(&shard.mu);
  Session& s = TouchLocked(shard, id, hash, absl::ToUnixMillis(time), stream);
  s.failed = s.failed || failed;
  if (keep_value) {
    auto v = std::find_if(s.values.begin(), s.values.end(),
                          [&](const auto& p) { return p.first == name; });
    if (v != s.values.end()) {
      v->second.assign(value.data(), value.size());
    } else if (s.values.size() < options_.max_values) {
      s.values.emplace_back(std::string(name), std::string(value));
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
  SettleLocked(shard, s);
}

void SessionTable::AddPending(absl::string_view id, PendingMatch match, absl::Time time,
                              uint32_t stream) {
  if (id.empty() || id.size() > kMaxIdBytes) return;
  if (match.evidence.size() > options_.max_pending_evidence_bytes) {
    match.evidence.resize(options_.max_pending_evidence_bytes);  // the caller cuts it first
  }
  if (match.name.size() > options_.max_value_bytes) return;
  const size_t hash = absl::Hash<absl::string_view>()(id);
  Shard& shard = shards_[hash % kShards];
  ShardMutexLock lock(&shard.mu);
  Session& s = TouchLocked(shard, id, hash, absl::ToUnixMillis(time), stream);
  s.failed = true;
  if (s.pending.size() >= options_.max_pending) {
    s.pending.erase(s.pending.begin());
    --shard.pending;
    pending_dropped_.fetch_add(1, std::memory_order_relaxed);
  }
  s.pending.push_back(std::move(match));
  ++shard.pending;
  SettleLocked(shard, s);
}

void SessionTable::DropPending(absl::string_view id) {
  Shard& shard = ShardFor(id);
  ShardMutexLock lock(&shard.mu);
  auto it = shard.by_id.find(id);
  if (it == shard.by_id.end() || it->second->pending.empty()) return;
  Session& s = *it->second;
  shard.pending -= s.pending.size();
  pending_dropped_.fetch_add(s.pending.size(), std::memory_order_relaxed);
  s.pending.clear();
  s.pending.shrink_to_fit();
  shard.bytes -= s.bytes;
  s.bytes = SessionBytes(s);
  shard.bytes += s.bytes;
}

void SessionTable::EvictLocked(Shard& shard) {
  // Down to seven eighths of the shard's bounds in one pass over its sessions, least recently
  // seen first: O(n) once per n/8 evictions, amortised O(1) per note.
  const size_t keep_count = max_per_shard_ - max_per_shard_ / 8;
  const size_t keep_bytes = max_bytes_per_shard_ - max_bytes_per_shard_ / 8;
  std::vector<std::pair<uint64_t, List::iterator>> order;
  order.reserve(shard.lru.size());
  for (auto it = shard.lru.begin(); it != shard.lru.end(); ++it) order.emplace_back(it->tick, it);
  std::sort(order.begin(), order.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  // The last one (the session just written) always stays.
  for (size_t i = 0; i + 1 < order.size(); ++i) {
    if (shard.lru.size() <= keep_count && shard.bytes <= keep_bytes) break;
    EraseLocked(shard, order[i].second);
    evicted_.fetch_add(1, std::memory_order_relaxed);
  }
}

bool SessionTable::Get(absl::string_view id, absl::string_view name, absl::Time time,
                       std::string* value) const {
  const Shard& shard = ShardFor(id);
  ShardMutexLock lock(&shard.mu);
  const Session* s = FindLocked(shard, id, absl::ToUnixMillis(time));
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
  const Shard& shard = ShardFor(id);
  ShardMutexLock lock(&shard.mu);
  const Session* s = FindLocked(shard, id, absl::ToUnixMillis(time));
  return s != nullptr && s->failed;
}

void SessionTable::End(absl::string_view id) {
  Shard& shard = ShardFor(id);
  ShardMutexLock lock(&shard.mu);
  auto it = shard.by_id.find(id);
  if (it == shard.by_id.end()) return;
  EraseLocked(shard, it->second);
  ended_.fetch_add(1, std::memory_order_relaxed);
}

template <typename NowFn>
void SessionTable::ExpireIf(NowFn now_for) {
  const int64_t ttl_ms = absl::ToInt64Milliseconds(options_.ttl);
  for (size_t i = 0; i < kShards; ++i) {
    Shard& shard = shards_[i];
    ShardMutexLock lock(&shard.mu);
    for (auto it = shard.lru.begin(); it != shard.lru.end();) {
      auto next = std::next(it);
      if (absl::ToUnixMillis(now_for(it->stream)) - it->last_ms > ttl_ms) {
        EraseLocked(shard, it);
        expired_.fetch_add(1, std::memory_order_relaxed);
      }
      it = next;
    }
  }
}

void SessionTable::Expire(absl::Time now) {
  ExpireIf([now](uint32_t) { return now; });
}

void SessionTable::ExpireByStream(const std::vector<absl::Time>& stream_now,
                                  absl::Time other_now) {
  ExpireIf([&](uint32_t stream) {
    return stream != 0 && stream < stream_now.size() ? stream_now[stream] : other_now;
  });
}

SessionStats SessionTable::stats() const {
  SessionStats s;
  for (size_t i = 0; i < kShards; ++i) {
    ShardMutexLock lock(&shards_[i].mu);
    s.live += shards_[i].lru.size();
    s.bytes += shards_[i].bytes;
    s.pending += shards_[i].pending;
  }
  s.evicted = evicted_.load();
  s.expired = expired_.load();
  s.ended = ended_.load();
  s.pending_released = pending_released_.load();
  s.pending_dropped = pending_dropped_.load();
  return s;
}

}  // namespace palisade
