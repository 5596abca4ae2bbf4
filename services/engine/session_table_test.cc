#include "services/engine/session_table.h"

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace palisade {
namespace {

absl::Time T(int64_t seconds) { return absl::FromUnixSeconds(1'800'000'000 + seconds); }

// Ids that land in one shard of the table (its shard is the hash's top bits, modulo 16), so that
// a test knows which sessions compete for the same bound.
std::vector<std::string> IdsOfOneShard(size_t n) {
  std::vector<std::string> ids;
  for (int i = 0; ids.size() < n; ++i) {
    std::string id = absl::StrCat("sshd[", i, "]");
    if ((absl::Hash<absl::string_view>()(id) >> 56) % 16 == 0) ids.push_back(std::move(id));
  }
  return ids;
}

// Notes sessions of one shard and keeps the order they were last seen in, least recent first.
class RecencyModel {
 public:
  explicit RecencyModel(SessionTable& table) : table_(table) {}
  void Note(std::string id, absl::string_view value = "203.0.113.7") {  // a copy: order_ moves
    table_.Note(id, "ip", value, false, T(++t_), 1);
    order_.erase(std::remove(order_.begin(), order_.end(), id), order_.end());
    order_.push_back(id);
  }
  const std::vector<std::string>& order() const { return order_; }
  // The live sessions must be the most recently seen ones: a suffix of the order. How many live.
  size_t ExpectLiveAreTheMostRecent() const {
    std::string value;
    size_t first = order_.size();
    for (size_t i = 0; i < order_.size() && first == order_.size(); ++i) {
      if (table_.Get(order_[i], "ip", T(t_), &value)) first = i;
    }
    for (size_t i = first; i < order_.size(); ++i) {
      EXPECT_TRUE(table_.Get(order_[i], "ip", T(t_), &value))
          << order_[i] << " (seen " << i << "th) is gone while " << order_[first] << " (seen "
          << first << "th) is kept";
    }
    return order_.size() - first;
  }

 private:
  SessionTable& table_;
  std::vector<std::string> order_;
  int64_t t_ = 0;
};

TEST(SessionTableTest, NotesAndReadsBackPerSession) {
  SessionTable table;
  table.Note("sshd[1]", "ip", "203.0.113.7", /*failed=*/false, T(0), 1);
  table.Note("sshd[2]", "ip", "198.51.100.9", /*failed=*/true, T(1), 1);
  std::string value;
  ASSERT_TRUE(table.Get("sshd[1]", "ip", T(5), &value));
  EXPECT_EQ(value, "203.0.113.7");
  ASSERT_TRUE(table.Get("sshd[2]", "ip", T(5), &value));
  EXPECT_EQ(value, "198.51.100.9");
  EXPECT_FALSE(table.Get("sshd[3]", "ip", T(5), &value));
  EXPECT_FALSE(table.Get("sshd[1]", "user", T(5), &value));
  EXPECT_FALSE(table.Failed("sshd[1]", T(5)));
  EXPECT_TRUE(table.Failed("sshd[2]", T(5)));
  // A later note replaces the value; failed stays set once set.
  table.Note("sshd[2]", "ip", "198.51.100.10", /*failed=*/false, T(6), 1);
  ASSERT_TRUE(table.Get("sshd[2]", "ip", T(7), &value));
  EXPECT_EQ(value, "198.51.100.10");
  EXPECT_TRUE(table.Failed("sshd[2]", T(7)));
}

TEST(SessionTableTest, IdleSessionsAreAbsentAtOnceAndExpireLater) {
  SessionOptions options;
  options.ttl = absl::Minutes(10);
  SessionTable table(options);
  table.Note("sshd[1]", "ip", "203.0.113.7", true, T(0), 1);
  std::string value;
  EXPECT_TRUE(table.Get("sshd[1]", "ip", T(600), &value));
  // Past ttl a reader sees nothing, even before an Expire ran.
  EXPECT_FALSE(table.Get("sshd[1]", "ip", T(601), &value));
  EXPECT_FALSE(table.Failed("sshd[1]", T(601)));
  // A pid reused after ttl starts a fresh session: nothing of the old one leaks into it.
  table.Note("sshd[1]", "user", "alice", false, T(700), 1);
  EXPECT_FALSE(table.Get("sshd[1]", "ip", T(700), &value));
  EXPECT_FALSE(table.Failed("sshd[1]", T(700)));
  EXPECT_EQ(table.stats().live, 1u);
  table.Expire(T(1301));
  EXPECT_EQ(table.stats().live, 0u);
  EXPECT_EQ(table.stats().expired, 1u);
  EXPECT_EQ(table.stats().bytes, 0u);
}

// A line dated far ahead (a sender's clock a day fast) does not keep its session for a day: a
// later connection reusing the pid at the real time starts a fresh session, not failed and
// without the old address, and a reader at the real time does not see the future one.
TEST(SessionTableTest, ASessionDatedAheadIsStaleToALineAtTheRealTime) {
  SessionOptions options;
  options.ttl = absl::Minutes(10);
  SessionTable table(options);
  table.Note("sshd[1]", "ip", "203.0.113.7", /*failed=*/false, T(0), 1);
  table.Note("sshd[1]", "ip", "203.0.113.7", /*failed=*/true, T(20 * 3600), 1);  // 20 h ahead
  std::string value;
  EXPECT_FALSE(table.Get("sshd[1]", "ip", T(60), &value));
  EXPECT_FALSE(table.Failed("sshd[1]", T(60)));
  // The pid reused by a later connection at the real time.
  table.Note("sshd[1]", "user", "alice", /*failed=*/false, T(120), 1);
  EXPECT_FALSE(table.Failed("sshd[1]", T(120)));
  EXPECT_FALSE(table.Get("sshd[1]", "ip", T(120), &value));
  ASSERT_TRUE(table.Get("sshd[1]", "user", T(120), &value));
  EXPECT_EQ(value, "alice");
  // Within ttl either way the session is the same one.
  EXPECT_TRUE(table.Get("sshd[1]", "user", T(120 - 600), &value));
  EXPECT_TRUE(table.Get("sshd[1]", "user", T(120 + 600), &value));
}

TEST(SessionTableTest, SessionsAgeInTheirOwnStreamsTime) {
  SessionTable table;
  table.Note("a", "ip", "203.0.113.7", false, T(0), 1);     // a live stream
  table.Note("b", "ip", "203.0.113.8", false, T(0), 2);     // a backlog an hour behind
  table.ExpireByStream({T(0), T(3600), T(60)}, T(0));
  std::string value;
  EXPECT_FALSE(table.Get("a", "ip", T(0), &value));
  EXPECT_TRUE(table.Get("b", "ip", T(60), &value));
  EXPECT_EQ(table.stats().expired, 1u);
}

TEST(SessionTableTest, EndForgetsTheSession) {
  SessionTable table;
  table.Note("sshd[1]", "ip", "203.0.113.7", true, T(0), 1);
  table.End("sshd[1]");
  table.End("sshd[404]");  // absent: nothing happens
  std::string value;
  EXPECT_FALSE(table.Get("sshd[1]", "ip", T(0), &value));
  EXPECT_EQ(table.stats().ended, 1u);
  EXPECT_EQ(table.stats().live, 0u);
}

// A pid id ("\x01psshd[12345]", Engine::PidSessionId) and an address sit inside their
// std::strings: an ordinary session is one heap block (the map's node: its id and the Session)
// and the table's slot, and exactly that is accounted, for each session, until it is gone.
TEST(SessionTableTest, AnOrdinarySessionIsOneHeapBlockAndItsSlot) {
  SessionTable table;
  table.Note("\x01psshd[12345]", "ip", "203.0.113.7", true, T(0), 1);
  const uint64_t one = table.stats().bytes;
  // A std::list node beside a map entry of its own (a string_view and an iterator) was 217.
  EXPECT_LE(one, 192u);
  EXPECT_GE(one, 128u);  // the Session itself is in it
  for (int pid = 0; pid < 1000; ++pid) {
    table.Note(absl::StrCat("\x01psshd[", pid, "]"), "ip", "198.51.100.9", pid % 2 == 0, T(1), 1);
  }
  EXPECT_EQ(table.stats().live, 1001u);
  EXPECT_EQ(table.stats().bytes, 1001 * one);
  for (int pid = 0; pid < 1000; pid += 2) table.End(absl::StrCat("\x01psshd[", pid, "]"));
  EXPECT_EQ(table.stats().bytes, 501 * one);
  table.Expire(T(3600));
  EXPECT_EQ(table.stats().live, 0u);
  EXPECT_EQ(table.stats().bytes, 0u);

  // Under a byte ceiling, a flood of ordinary sessions keeps as many as fit, each accounted.
  SessionOptions small;
  small.max_bytes = 64 << 10;
  SessionTable bounded(small);
  for (int pid = 0; pid < 100'000; ++pid) {
    bounded.Note(absl::StrCat("\x01psshd[", pid, "]"), "ip", "203.0.113.7", true, T(pid / 100),
                 1);
  }
  const SessionStats stats = bounded.stats();
  EXPECT_LE(stats.bytes, uint64_t{64} << 10);
  EXPECT_EQ(stats.bytes, stats.live * one);
  EXPECT_GE(stats.live, (uint64_t{48} << 10) / one);  // the ceiling is what binds, not less
  EXPECT_EQ(stats.evicted, 100'000u - stats.live);
}

TEST(SessionTableTest, BoundedInCountAndBytesLeastRecentlySeenFirst) {
  SessionOptions options;
  options.max_sessions = 160;  // 10 per shard
  SessionTable table(options);
  for (int i = 0; i < 100'000; ++i) {
    table.Note(absl::StrCat("sshd[", i, "]"), "ip", "203.0.113.7", false, T(i / 100), 1);
  }
  SessionStats stats = table.stats();
  EXPECT_LE(stats.live, 160u);
  EXPECT_GE(stats.live, 100u);
  EXPECT_EQ(stats.evicted, 100'000u - stats.live);
  // The most recent session is kept; the first ones are gone.
  std::string value;
  EXPECT_TRUE(table.Get("sshd[99999]", "ip", T(1000), &value));
  EXPECT_FALSE(table.Get("sshd[0]", "ip", T(1000), &value));

  // In bytes: long values, under a small byte ceiling.
  SessionOptions small;
  small.max_bytes = 64 << 10;
  small.max_value_bytes = 128;
  SessionTable bytes_table(small);
  const std::string long_value(128, 'x');
  for (int i = 0; i < 10'000; ++i) {
    const std::string id = absl::StrCat("conn=", i);
    for (int v = 0; v < 8; ++v) {  // only max_values (4) are kept
      bytes_table.Note(id, absl::StrCat("v", v), long_value, false, T(0), 1);
    }
  }
  EXPECT_LE(bytes_table.stats().bytes, uint64_t{64} << 10);
  EXPECT_GT(bytes_table.stats().evicted, 0u);
}

TEST(SessionTableTest, EvictionTakesExactlyTheLeastRecentlySeen) {
  std::mt19937 random(7);
  // By count: 64 sessions a shard, 56 kept after an eviction. Older sessions are seen again
  // now and then, so the order of last notes is not the order of creation.
  {
    SessionOptions options;
    options.max_sessions = 64 * 16;
    SessionTable table(options);
    RecencyModel model(table);
    for (const std::string& id : IdsOfOneShard(600)) {
      model.Note(id);
      if (random() % 3 == 0) model.Note(model.order()[random() % model.order().size()]);
      const size_t live = model.ExpectLiveAreTheMostRecent();
      ASSERT_LE(live, 64u);
      if (model.order().size() > 64) {
        ASSERT_GE(live, 56u);
      }
    }
    EXPECT_GT(table.stats().evicted, 0u);
  }
  // By bytes: one session's long values push the shard far past its byte bound, so that far
  // more than an eighth of its sessions must go, still least recently seen first.
  {
    SessionOptions options;
    options.max_bytes = 16 * (16 << 10);  // 16 KiB a shard: ~88 ordinary sessions
    options.max_value_bytes = 2048;
    SessionTable table(options);
    RecencyModel model(table);
    const std::vector<std::string> ids = IdsOfOneShard(81);
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      model.Note(ids[i]);
      if (random() % 3 == 0) model.Note(model.order()[random() % model.order().size()]);
    }
    const size_t before = model.ExpectLiveAreTheMostRecent();
    EXPECT_EQ(before, ids.size() - 1);
    EXPECT_EQ(table.stats().evicted, 0u);
    model.Note(ids.back());
    for (int v = 0; v < 3; ++v) {
      table.Note(ids.back(), absl::StrCat("v", v), std::string(2048, 'x'), false, T(200), 1);
    }
    const size_t after = model.ExpectLiveAreTheMostRecent();
    EXPECT_LT(after, before - before / 4);
    EXPECT_GT(after, 1u);
    EXPECT_LE(table.stats().bytes, uint64_t{16} << 10);
  }
}

TEST(SessionTableTest, RefusesOversizedIdsAndValues) {
  SessionTable table;
  table.Note(std::string(SessionTable::kMaxIdBytes + 1, 'p'), "ip", "203.0.113.7", true, T(0), 1);
  EXPECT_EQ(table.stats().live, 0u);
  table.Note("sshd[1]", "ip", std::string(129, '1'), true, T(0), 1);
  std::string value;
  EXPECT_FALSE(table.Get("sshd[1]", "ip", T(0), &value));
  EXPECT_TRUE(table.Failed("sshd[1]", T(0)));  // the failure still counts
}


PendingMatch Pending(absl::string_view evidence, int64_t seconds) {
  PendingMatch m;
  m.name = "ip";
  m.evidence = std::string(evidence);
  m.time_ms = absl::ToUnixMillis(T(seconds));
  m.rule_id = "ssh-locked";
  return m;
}

TEST(SessionTablePendingTest, ANoteOfTheValueReleasesThePendingMatchesOfItsSessionOnly) {
  SessionTable table;
  table.AddPending("sshd[1]", Pending("locked 1", 0), T(0), 1);
  table.AddPending("sshd[2]", Pending("locked 2", 1), T(1), 1);
  table.AddPending("sshd[1]", Pending("too many 1", 2), T(2), 1);
  EXPECT_TRUE(table.Failed("sshd[1]", T(2)));
  EXPECT_EQ(table.stats().pending, 3u);
  std::vector<PendingMatch> released;
  // A note of another name, or without a value, releases nothing.
  table.Note("sshd[1]", "user", "root", false, T(3), 1, &released);
  table.Note("sshd[1]", "", "", false, T(3), 1, &released);
  EXPECT_TRUE(released.empty());
  table.Note("sshd[1]", "ip", "203.0.113.7", false, T(4), 1, &released);
  ASSERT_EQ(released.size(), 2u);
  EXPECT_EQ(released[0].evidence, "locked 1");  // in the order they came, at their own time
  EXPECT_EQ(released[0].time_ms, absl::ToUnixMillis(T(0)));
  EXPECT_EQ(released[1].evidence, "too many 1");
  EXPECT_EQ(released[1].rule_id, "ssh-locked");
  // Released once: a second note releases nothing more; the other session still waits.
  released.clear();
  table.Note("sshd[1]", "ip", "203.0.113.7", false, T(5), 1, &released);
  EXPECT_TRUE(released.empty());
  const SessionStats s = table.stats();
  EXPECT_EQ(s.pending, 1u);
  EXPECT_EQ(s.pending_released, 2u);
  EXPECT_EQ(s.pending_dropped, 0u);
}

TEST(SessionTablePendingTest, BoundedPerSessionAndGoneWithTheSession) {
  SessionOptions options;
  options.max_pending = 3;
  options.max_pending_evidence_bytes = 32;
  SessionTable table(options);
  for (int i = 0; i < 10; ++i) {
    table.AddPending("sshd[1]", Pending(absl::StrCat("fail ", i, std::string(100, 'x')), i), T(i),
                     1);
  }
  SessionStats s = table.stats();
  EXPECT_EQ(s.pending, 3u);
  EXPECT_EQ(s.pending_dropped, 7u);
  std::vector<PendingMatch> released;
  table.Note("sshd[1]", "ip", "203.0.113.7", false, T(10), 1, &released);
  ASSERT_EQ(released.size(), 3u);
  EXPECT_EQ(released[0].evidence.substr(0, 6), "fail 7");  // the newest kept
  for (const PendingMatch& m : released) EXPECT_LE(m.evidence.size(), 32u);
  // A success drops them; so does the end of the session, its expiry, and a reused pid.
  table.AddPending("sshd[2]", Pending("a", 0), T(0), 1);
  table.DropPending("sshd[2]");
  table.AddPending("sshd[3]", Pending("b", 0), T(0), 1);
  table.End("sshd[3]");
  table.AddPending("sshd[4]", Pending("c", 0), T(0), 1);
  table.Expire(T(3600));
  table.AddPending("sshd[5]", Pending("d", 0), T(0), 1);
  released.clear();
  table.Note("sshd[5]", "ip", "198.51.100.1", false, T(3600), 1, &released);  // idle past ttl
  EXPECT_TRUE(released.empty());
  s = table.stats();
  EXPECT_EQ(s.pending, 0u);
  EXPECT_EQ(s.pending_dropped, 7u + 4u);
}

// stats() takes no lock: it sums what each shard stored at its last change. Every call that
// changes a shard's sessions, bytes or pending matches must store them, or the gauges palisaded
// publishes from stats() would lag behind the table.
TEST(SessionTablePendingTest, StatsAreWhatEachChangeLeft) {
  SessionTable table;
  auto expect = [&](uint64_t live, uint64_t pending, bool bytes, const char* after) {
    const SessionStats s = table.stats();
    EXPECT_EQ(s.live, live) << after;
    EXPECT_EQ(s.pending, pending) << after;
    EXPECT_EQ(s.bytes > 0, bytes) << after;
  };
  table.Note("sshd[1]", "ip", "203.0.113.7", true, T(0), 1);
  const uint64_t one = table.stats().bytes;
  expect(1, 0, true, "Note");
  table.AddPending("sshd[2]", Pending(std::string(200, 'e'), 0), T(0), 1);
  expect(2, 1, true, "AddPending");
  const uint64_t with_pending = table.stats().bytes;
  EXPECT_GT(with_pending, 2 * one);
  table.DropPending("sshd[2]");
  expect(2, 0, true, "DropPending");
  EXPECT_LT(table.stats().bytes, with_pending);
  table.End("sshd[2]");
  expect(1, 0, true, "End");
  EXPECT_EQ(table.stats().bytes, one);
  table.AddPending("sshd[3]", Pending("c", 0), T(0), 1);
  std::vector<PendingMatch> released;
  table.Note("sshd[3]", "ip", "198.51.100.1", false, T(1), 1, &released);
  ASSERT_EQ(released.size(), 1u);
  expect(2, 0, true, "a Note that released");
  table.Expire(T(3600));
  expect(0, 0, false, "Expire");
}

TEST(SessionTablePendingTest, PendingMatchesCountInTheByteBound) {
  SessionOptions options;
  options.max_sessions = 1'000'000;
  options.max_bytes = 64 << 10;
  SessionTable table(options);
  for (int i = 0; i < 20'000; ++i) {
    const std::string id = absl::StrCat("sshd[", i, "]");
    for (int k = 0; k < 4; ++k) {
      table.AddPending(id, Pending(std::string(200, 'e'), k), T(k), 1);
    }
  }
  const SessionStats s = table.stats();
  EXPECT_LE(s.bytes, uint64_t{64} << 10);
  EXPECT_GT(s.evicted, 0u);
  EXPECT_EQ(s.pending, 4 * s.live);
  // Every pending match made is held, released or dropped.
  EXPECT_EQ(s.pending + s.pending_dropped, 80'000u);
}

}  // namespace
}  // namespace palisade
