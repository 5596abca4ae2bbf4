#include "services/engine/session_table.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace palisade {
namespace {

absl::Time T(int64_t seconds) { return absl::FromUnixSeconds(1'800'000'000 + seconds); }

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

TEST(SessionTableTest, RefusesOversizedIdsAndValues) {
  SessionTable table;
  table.Note(std::string(SessionTable::kMaxIdBytes + 1, 'p'), "ip", "203.0.113.7", true, T(0), 1);
  EXPECT_EQ(table.stats().live, 0u);
  table.Note("sshd[1]", "ip", std::string(129, '1'), true, T(0), 1);
  std::string value;
  EXPECT_FALSE(table.Get("sshd[1]", "ip", T(0), &value));
  EXPECT_TRUE(table.Failed("sshd[1]", T(0)));  // the failure still counts
}

}  // namespace
}  // namespace palisade
