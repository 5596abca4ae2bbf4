// The session table: what earlier lines of one connection established, for the lines after
// them (issue 13 §1; fail2ban's <F-MLFID>/<F-NOFAIL>). A daemon writes the lines of one
// connection under one pid (sshd[1234]) or one id of its own (a mail queue id); a later line may
// name no address ("Disconnecting: Too many authentication failures [preauth]") or mean an
// attack only after a failure ("Connection closed by 203.0.113.7 port 22 [preauth]"). The
// engine (engine.h) notes in the session the key a line yielded and whether it counted
// (failed); a later line of the session reads them back. A match that needs the session's
// address before any line named it is kept pending in the session (AddPending) and handed back
// by the Note that first names it (fail2ban's "pending failure", Rule.session.pending).
//
// A session is found by an opaque id the engine builds (stream and the line's host, then program
// and pid, or the capture's name and value: one stream may carry many hosts). Each holds up to
// `max_values` named values of at most `max_value_bytes` each (longer ones are not noted), whether
// the session failed, the event time of its last line, and up to `max_pending` pending matches
// (each with its evidence line, which the caller cuts to `max_pending_evidence_bytes`; past the cap
// the oldest is dropped and counted in `pending_dropped`).
// Bounded, whatever the lines an attacker makes a server write:
//   - a session idle for longer than `ttl` in event time is absent to a reader at once (so is
//     one whose last line is dated more than `ttl` after the reader's: a clock ahead), and its
//     memory is taken back by Expire / ExpireByStream (each session ages in the time of the
//     stream that last wrote it, as the engine's windows do);
//   - past `max_sessions`, or past `max_bytes` of accounted memory, the least recently seen
//     sessions are dropped (counted in `evicted`), an eighth of the shard's bound at once.
// Ids longer than kMaxIdBytes are refused by the caller (the engine builds no session for them).
//
// Thread-safety: every method may be called from any thread (sessions live in shards, each
// behind its own mutex).
#ifndef PALISADE_SERVICES_ENGINE_SESSION_TABLE_H_
#define PALISADE_SERVICES_ENGINE_SESSION_TABLE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/node_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "services/engine/shard_mutex.h"

namespace palisade {

struct SessionOptions {
  // Sessions kept at most, over all streams. 0: the default.
  uint32_t max_sessions = 65'536;
  // Accounted bytes at most (each session's node, its slot in the table, and the heap blocks
  // of its id and values, as malloc rounds them). A full session is under 1 KiB; an ordinary
  // one (a pid id and an address noted: one heap block) 185 bytes. 0: the default.
  uint64_t max_bytes = uint64_t{16} << 20;
  // How long a session outlives its last line, in event time. fail2ban keeps a pid's lines for
  // `maxlines`; a connection's lines come within seconds, a slow login within minutes.
  absl::Duration ttl = absl::Minutes(10);
  uint32_t max_values = 4;
  uint32_t max_value_bytes = 128;
  // Pending matches kept per session (Rule.session.pending): an sshd connection fails a few
  // times before its disconnect names the address; a 4th keeps the newest. 0: the default.
  uint32_t max_pending = 4;
  // A pending match's evidence line at most (the engine cuts it, marked, before AddPending).
  uint32_t max_pending_evidence_bytes = 256;
};

struct SessionStats {
  uint64_t live = 0;
  uint64_t bytes = 0;
  uint64_t evicted = 0;  // by max_sessions or max_bytes
  uint64_t expired = 0;  // idle past ttl
  uint64_t ended = 0;    // by a rule's session.ends
  uint64_t pending = 0;           // pending matches held now
  uint64_t pending_released = 0;  // handed back by a Note that named their session's value
  // Pending matches never counted: past max_pending, dropped (a session that succeeded), or
  // gone with their session (ended, expired, evicted).
  uint64_t pending_dropped = 0;
};

// A match kept in its session until a later line names the value it needs (AddPending).
struct PendingMatch {
  std::string name;      // the value it waits for (the rule's key name)
  std::string evidence;  // its line, already cut and redacted by the caller
  int64_t time_ms = 0;   // its event time
  // The rule that kept it (the engine finds it by this id when the match is released).
  std::string rule_id;
};

class SessionTable {
 public:
  static constexpr size_t kMaxIdBytes = 160;

  explicit SessionTable(SessionOptions options = {});

  // Notes `name` = `value` in the session (creating it), and marks it failed when `failed`.
  // The session's time becomes `time` (event time) and its stream `stream`.
  // When a value is noted and `released` is given, the session's pending matches waiting for
  // `name` are moved into `*released` (appended; their session keeps none of them).
  void Note(absl::string_view id, absl::string_view name, absl::string_view value, bool failed,
            absl::Time time, uint32_t stream, std::vector<PendingMatch>* released = nullptr);
  // Keeps `match` pending in the session (creating it) and marks the session failed; its time
  // becomes the session's as Note's does. Past max_pending the oldest pending match goes.
  void AddPending(absl::string_view id, PendingMatch match, absl::Time time, uint32_t stream);
  // Drops the session's pending matches (counted in pending_dropped).
  void DropPending(absl::string_view id);
  // The session's value for `name` into `*value`; false when the session or the value is
  // absent, or the session's last line is more than ttl before or after `time`.
  bool Get(absl::string_view id, absl::string_view name, absl::Time time,
           std::string* value) const;
  // Whether the session failed (a line of it counted), under the same rule as Get.
  bool Failed(absl::string_view id, absl::Time time) const;
  // Forgets the session. `unheld_pending`: matches of it its caller had yet to add with
  // AddPending, dropped with it (counted in pending_dropped).
  void End(absl::string_view id, size_t unheld_pending = 0);

  // Drops sessions idle for longer than ttl before `now`.
  void Expire(absl::Time now);
  // The same with "now" per stream (as Engine::ExpireByStream): a session last written by stream
  // s ages against stream_now[s], and against other_now when s is 0 or past the vector.
  void ExpireByStream(const std::vector<absl::Time>& stream_now, absl::Time other_now);

  // Takes no lock: each shard's live, bytes and pending as of its last change (a call racing
  // changes sums some shards before theirs and some after), and the counters.
  SessionStats stats() const;
  const SessionOptions& options() const { return options_; }

 private:
  struct Session {
    absl::InlinedVector<std::pair<std::string, std::string>, 1> values;
    std::vector<PendingMatch> pending;  // oldest first
    bool failed = false;
    int64_t last_ms = 0;
    uint64_t tick = 0;  // Shard::clock when last noted: the eviction order
    uint32_t stream = 0;
    size_t bytes = 0;  // accounted
  };
  // A session's id with its hash, computed once a call: it picks the shard (from the top bits)
  // and the slot in the shard's table (find and lazy_emplace take it as their key, and the
  // table hashes an IdKey by returning its hash).
  struct IdKey {
    absl::string_view id;
    size_t hash;
  };
  struct IdHash {
    using is_transparent = void;
    size_t operator()(absl::string_view id) const { return absl::Hash<absl::string_view>()(id); }
    size_t operator()(const IdKey& key) const { return key.hash; }
  };
  struct IdEq {
    using is_transparent = void;
    bool operator()(absl::string_view a, absl::string_view b) const { return a == b; }
    bool operator()(absl::string_view a, const IdKey& b) const { return a == b.id; }
    bool operator()(const IdKey& a, absl::string_view b) const { return a.id == b; }
  };
  // A session is one heap block: the map's node holds its id (inline up to 15 bytes, which a
  // pid id is) beside the Session, and the table's slot points to it. Nodes never move.
  // In no particular order (see Session::tick).
  using Map = absl::node_hash_map<std::string, Session, IdHash, IdEq>;
  static constexpr size_t kShards = 16;
  struct Shard {
    mutable ShardMutex mu;
    Map sessions ABSL_GUARDED_BY(mu);
    size_t bytes ABSL_GUARDED_BY(mu) = 0;
    uint64_t clock ABSL_GUARDED_BY(mu) = 0;  // ticks once per Note
    size_t pending ABSL_GUARDED_BY(mu) = 0;   // pending matches held by its sessions
    // sessions.size(), bytes and pending as of the shard's last change, stored (not added)
    // under `mu` by PublishLocked: stats() sums them without taking the locks, which palisaded's
    // gauges did after every batch, contending with the other stream's notes.
    std::atomic<size_t> published_live{0}, published_bytes{0}, published_pending{0};
  };

  static IdKey KeyOf(absl::string_view id) {
    return {id, absl::Hash<absl::string_view>()(id)};
  }
  // The shard from the hash's top bits: the table takes its slot from the low bits and a
  // control byte from the lowest 7, which the shard's bits would leave the same for all of a
  // shard's sessions (8 values of 128: more false candidates to compare on every lookup).
  Shard& ShardFor(const IdKey& key) const { return shards_[(key.hash >> 56) % kShards]; }
  // A session is stale to a line at `time_ms` more than ttl from its last line, either way: a
  // line dated ahead (a sender's clock a day fast) must not keep a pid's session, its address
  // and failed mark, for a later connection reusing the pid.
  bool StaleAt(const Session& s, int64_t time_ms) const {
    return time_ms - s.last_ms > ttl_ms_ || s.last_ms - time_ms > ttl_ms_;
  }
  // The live session with `id`, or nullptr (absent, or stale at time_ms: StaleAt).
  const Session* FindLocked(const Shard& shard, const IdKey& key, int64_t time_ms) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // The session with `id` (created, or started over when idle past ttl), touched at `time_ms`
  // by `stream`: the most recently seen of its shard.
  Map::iterator TouchLocked(Shard& shard, const IdKey& key, int64_t time_ms, uint32_t stream)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Accounts the session's bytes again and evicts past the shard's bounds.
  void SettleLocked(Shard& shard, Map::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  void EraseLocked(Shard& shard, Map::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Drops the least recently seen sessions of a shard past its bounds, down to 7/8 of them.
  void EvictLocked(Shard& shard) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  static size_t SessionBytes(const Map::value_type& entry);
  // Stores the shard's counts for stats(): the last thing each call that changes them does.
  static void PublishLocked(Shard& shard) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);

  SessionOptions options_;
  size_t max_per_shard_ = 0;
  size_t max_bytes_per_shard_ = 0;
  int64_t ttl_ms_ = 0;  // options_.ttl, converted once
  std::unique_ptr<Shard[]> shards_;
  mutable std::atomic<uint64_t> evicted_{0}, expired_{0}, ended_{0}, pending_released_{0},
      pending_dropped_{0};
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_ENGINE_SESSION_TABLE_H_
