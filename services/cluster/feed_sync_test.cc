// FeedSync against a real nats-server, between real FeedManagers: the writer's versions reach
// the other nodes' registries (never their decisions), stale versions are ignored, a big version
// travels in several chunks, and a node started later reads the current versions at start.
#include "services/cluster/feed_sync.h"

#include <nats/nats.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/cluster/nats_server_for_tests.h"
#include "services/common/clock.h"
#include "services/common/status_matchers.h"
#include "services/decisions/decision_table.h"
#include "services/feedmanager/feed_manager.h"

namespace palisade::cluster {
namespace {

using palisade::testing::IsOk;
using palisade::testing::StatusIs;

constexpr auto kReplace = palisade::v1::FEED_PUSH_MODE_REPLACE;

palisade::v1::FeedConfig Plain(const std::string& name, bool to_edge) {
  palisade::v1::FeedConfig c;
  c.set_name(name);
  c.set_format(palisade::v1::FEED_FORMAT_PLAIN);
  c.set_to_edge(to_edge);
  c.set_min_keep_ratio(-1);  // no shrink guard: the tests replace freely
  return c;
}

// The i-th of distinct /32s in 198.18.0.0/15, none adjacent (so the edge's merged union keeps
// one decision per host).
std::string Host(int i) { return absl::StrCat("198.18.", (4 * i) / 256, ".", (4 * i) % 256 + 1); }
std::string Hosts(int from, int to) {
  std::string out;
  for (int i = from; i < to; ++i) absl::StrAppend(&out, Host(i), "\n");
  return out;
}

IpAddress Ip(const std::string& s) { return *IpAddress::Parse(s); }
IpAddress HostIp(int i) { return Ip(Host(i)); }

// One node: its table, its feed manager and its feed sync (polled by the test).
struct Node {
  Node(const std::string& id, NatsClient& nats, SimulatedClock& clock, size_t chunk_bytes)
      : table(clock) {
    FeedManagerOptions fo;
    fo.feeds = {Plain("drop", /*to_edge=*/true), Plain("tor.exits", /*to_edge=*/false)};
    fo.on_version = [this](absl::string_view feed, const palisade::v1::FeedState& state) {
      if (sync != nullptr) sync->Publish(feed, state);
    };
    feeds = std::make_unique<FeedManager>(std::move(fo), clock, metrics, &table, nullptr);
    FeedSyncOptions so;
    so.node_id = id;
    so.feeds = {"drop", "tor.exits"};
    so.chunk_bytes = chunk_bytes;
    so.run_thread = false;
    so.metrics = &metrics;
    so.apply = [this](absl::string_view feed, const palisade::v1::FeedState& state) {
      return feeds->Follow(feed, state);
    };
    absl::StatusOr<std::unique_ptr<FeedSync>> opened = FeedSync::Open(nats, so);
    EXPECT_THAT(opened.status(), IsOk());
    if (opened.ok()) sync = *std::move(opened);
  }
  size_t Decisions() { return table.List(DecisionFilter{}).size(); }
  // palisade_cluster_feed_versions_total{result}.
  double Versions(const std::string& result) {
    for (const auto& family : metrics.Collect()) {
      if (family.name != "palisade_cluster_feed_versions_total") continue;
      for (const auto& m : family.metric) {
        for (const auto& l : m.label) {
          if (l.name == "result" && l.value == result) return m.counter.value;
        }
      }
    }
    return -1;
  }

  prometheus::Registry metrics;
  DecisionTable table;
  std::unique_ptr<FeedManager> feeds;
  std::unique_ptr<FeedSync> sync;
};

class FeedSyncTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = NatsServerForTests::Start();
    ASSERT_THAT(server.status(), IsOk());
    server_ = *std::move(server);
    auto client = NatsClient::Connect({.servers = {server_->url()}, .timeout = absl::Seconds(5)});
    ASSERT_THAT(client.status(), IsOk());
    nats_ = *std::move(client);
  }

  SimulatedClock clock_;
  std::unique_ptr<NatsServerForTests> server_;
  std::unique_ptr<NatsClient> nats_;
};

TEST_F(FeedSyncTest, WriterVersionsReachFollowersRegistriesNotTheirDecisions) {
  Node writer("w", *nats_, clock_, 512u << 10);
  Node follower("f", *nats_, clock_, 512u << 10);
  ASSERT_NE(writer.sync, nullptr);
  ASSERT_NE(follower.sync, nullptr);

  ASSERT_THAT(writer.feeds->PushHere("drop", kReplace, {}, false, Hosts(0, 3)).status(), IsOk());
  ASSERT_THAT(writer.feeds->PushHere("tor.exits", kReplace, {}, false, "203.0.113.9\n").status(),
              IsOk());
  EXPECT_EQ(writer.Decisions(), 3u);  // the writer's edge sync: one per to_edge entry
  EXPECT_FALSE(follower.feeds->registry().Contains("drop", HostIp(1)));

  ASSERT_THAT(writer.sync->Poll(), IsOk());  // publishes both
  EXPECT_EQ(writer.sync->stats().published, 2u);
  ASSERT_THAT(follower.sync->Poll(), IsOk());
  EXPECT_EQ(follower.sync->stats().applied, 2u);
  EXPECT_TRUE(follower.feeds->registry().Contains("drop", HostIp(1)));
  EXPECT_TRUE(follower.feeds->registry().Contains("tor.exits", Ip("203.0.113.9")));
  EXPECT_EQ(*follower.feeds->Version("drop"), 1u);
  EXPECT_EQ(follower.Decisions(), 0u);  // a follower syncs no decisions

  // The writer reads its own head back as already seen: nothing re-applied.
  ASSERT_THAT(writer.sync->Poll(), IsOk());
  EXPECT_EQ(writer.sync->stats().applied, 0u);

  // A later version replaces the set; a poll with nothing new changes nothing.
  clock_.Advance(absl::Minutes(5));
  ASSERT_THAT(writer.feeds->PushHere("drop", kReplace, {}, false, Hosts(10, 12)).status(), IsOk());
  ASSERT_THAT(writer.sync->Poll(), IsOk());
  ASSERT_THAT(follower.sync->Poll(), IsOk());
  ASSERT_THAT(follower.sync->Poll(), IsOk());
  EXPECT_EQ(follower.sync->stats().applied, 3u);
  EXPECT_EQ(follower.Versions("applied"), 3);
  EXPECT_EQ(writer.Versions("published"), 3);
  EXPECT_EQ(follower.Versions("failed"), 0);
  EXPECT_EQ(*follower.feeds->Version("drop"), 2u);
  EXPECT_FALSE(follower.feeds->registry().Contains("drop", HostIp(1)));
  EXPECT_TRUE(follower.feeds->registry().Contains("drop", HostIp(11)));
  EXPECT_EQ(follower.Decisions(), 0u);
}

TEST_F(FeedSyncTest, VersionsOlderOrEqualToTheHeldOneAreIgnored) {
  Node writer("w", *nats_, clock_, 512u << 10);
  Node follower("f", *nats_, clock_, 512u << 10);
  ASSERT_NE(follower.sync, nullptr);
  // The follower already holds version 2 (e.g. from its store, or a former writer's).
  palisade::v1::FeedState held;
  held.set_version(2);
  held.add_entries()->set_cidr("198.18.9.9/32");
  held.mutable_entries(0)->set_expiry(absl::ToUnixSeconds(clock_.TimeNow() + absl::Hours(1)));
  ASSERT_THAT(follower.feeds->Follow("drop", held), IsOk());

  // Versions 1 and then 2 published: neither replaces what it holds.
  ASSERT_THAT(writer.feeds->PushHere("drop", kReplace, {}, false, Hosts(0, 2)).status(), IsOk());
  ASSERT_THAT(writer.sync->Poll(), IsOk());
  ASSERT_THAT(follower.sync->Poll(), IsOk());
  ASSERT_THAT(writer.feeds->PushHere("drop", kReplace, {}, false, Hosts(0, 3)).status(), IsOk());
  ASSERT_THAT(writer.sync->Poll(), IsOk());
  ASSERT_THAT(follower.sync->Poll(), IsOk());
  EXPECT_EQ(follower.sync->stats().stale, 2u);
  EXPECT_EQ(follower.sync->stats().applied, 0u);
  EXPECT_TRUE(follower.feeds->registry().Contains("drop", Ip("198.18.9.9")));
  EXPECT_FALSE(follower.feeds->registry().Contains("drop", HostIp(1)));

  // Version 3 is newer: taken.
  ASSERT_THAT(writer.feeds->PushHere("drop", kReplace, {}, false, Hosts(0, 4)).status(), IsOk());
  ASSERT_THAT(writer.sync->Poll(), IsOk());
  ASSERT_THAT(follower.sync->Poll(), IsOk());
  EXPECT_EQ(follower.sync->stats().applied, 1u);
  EXPECT_EQ(*follower.feeds->Version("drop"), 3u);
  EXPECT_TRUE(follower.feeds->registry().Contains("drop", HostIp(3)));
  EXPECT_FALSE(follower.feeds->registry().Contains("drop", Ip("198.18.9.9")));

  // Follow itself refuses a stale version and names an unknown feed.
  EXPECT_EQ(*follower.feeds->Follow("drop", held), false);
  EXPECT_THAT(follower.feeds->Follow("nope", held).status(),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(FeedSyncTest, BigVersionTravelsInChunksAndOnlyTheLatestChunksRemain) {
  // 4 KiB chunks: 3,000 entries (about 100 KB serialized) take tens of them.
  Node writer("w", *nats_, clock_, 4096);
  Node follower("f", *nats_, clock_, 4096);
  ASSERT_NE(follower.sync, nullptr);
  ASSERT_THAT(writer.feeds->PushHere("tor.exits", kReplace, {}, false, Hosts(0, 3000)).status(),
              IsOk());
  ASSERT_THAT(writer.sync->Poll(), IsOk());
  ASSERT_THAT(follower.sync->Poll(), IsOk());
  EXPECT_EQ(follower.sync->stats().applied, 1u);
  absl::StatusOr<palisade::v1::GetFeedResponse> got = [&] {
    palisade::v1::GetFeedRequest req;
    req.set_name("tor.exits");
    return follower.feeds->Get(req);
  }();
  ASSERT_THAT(got.status(), IsOk());
  EXPECT_EQ(got->info().entries(), 3000u);
  EXPECT_TRUE(follower.feeds->registry().Contains("tor.exits", HostIp(2999)));

  // A second big version: the first one's chunks are purged, the new ones read whole.
  ASSERT_THAT(writer.feeds->PushHere("tor.exits", kReplace, {}, false, Hosts(1000, 4000)).status(),
              IsOk());
  ASSERT_THAT(writer.sync->Poll(), IsOk());
  ASSERT_THAT(follower.sync->Poll(), IsOk());
  EXPECT_EQ(follower.sync->stats().applied, 2u);
  EXPECT_FALSE(follower.feeds->registry().Contains("tor.exits", HostIp(1)));
  EXPECT_TRUE(follower.feeds->registry().Contains("tor.exits", HostIp(3999)));
  absl::StatusOr<kvStore*> kv =
      nats_->OpenKeyValue("palisade_feeds", 1, absl::ZeroDuration(), "feeds bucket");
  ASSERT_THAT(kv.status(), IsOk());
  kvKeysList keys;
  ASSERT_EQ(kvStore_Keys(&keys, *kv, nullptr), NATS_OK);
  size_t chunks = 0;
  for (int i = 0; i < keys.Count; ++i) chunks += absl::StartsWith(keys.Keys[i], "c.") ? 1 : 0;
  kvKeysList_Destroy(&keys);
  kvStore_Destroy(*kv);
  EXPECT_GT(chunks, 10u);  // one version's, in many pieces
  EXPECT_LT(chunks, 60u);  // and not two versions' worth
}

// What the bucket holds is read, not trusted: a head whose size is absurd (written by hand, by a
// node of another version, or by whoever holds NATS credentials) is an unreadable version,
// never an allocation of its size (which threw, and ended the daemon).
TEST_F(FeedSyncTest, AHeadWithAnAbsurdSizeIsUnreadableNotACrash) {
  absl::StatusOr<kvStore*> kv =
      nats_->OpenKeyValue("palisade_feeds", 1, absl::ZeroDuration(), "feeds bucket");
  ASSERT_THAT(kv.status(), IsOk());
  ASSERT_THAT(KvPut(*kv, "c.x-1.0", "abc", "feeds"), IsOk());
  ASSERT_THAT(KvPut(*kv, "h.drop", "v1 2 x-1 1 18446744073709551615", "feeds"), IsOk());
  kvStore_Destroy(*kv);
  Node follower("f", *nats_, clock_, 512u << 10);  // Open polls once: logged, not returned
  ASSERT_NE(follower.sync, nullptr);
  EXPECT_THAT(follower.sync->Poll(), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_EQ(follower.sync->stats().applied, 0u);
  EXPECT_GE(follower.sync->stats().failures, 2u);
}

TEST_F(FeedSyncTest, NodeStartedLaterReadsTheCurrentVersionsAtStart) {
  Node writer("w", *nats_, clock_, 512u << 10);
  ASSERT_NE(writer.sync, nullptr);
  ASSERT_THAT(writer.feeds->PushHere("drop", kReplace, {}, false, Hosts(0, 2)).status(), IsOk());
  ASSERT_THAT(writer.feeds->PushHere("drop", kReplace, {}, false, Hosts(5, 7)).status(), IsOk());
  ASSERT_THAT(writer.sync->Poll(), IsOk());  // the latest queued version only
  EXPECT_EQ(writer.sync->stats().published, 1u);

  Node late("late", *nats_, clock_, 512u << 10);  // Open reads before returning
  ASSERT_NE(late.sync, nullptr);
  EXPECT_EQ(late.sync->stats().applied, 1u);
  EXPECT_EQ(*late.feeds->Version("drop"), 2u);
  EXPECT_TRUE(late.feeds->registry().Contains("drop", HostIp(5)));
  EXPECT_FALSE(late.feeds->registry().Contains("drop", HostIp(1)));
  EXPECT_EQ(late.Decisions(), 0u);
}

TEST_F(FeedSyncTest, PushForwardCarriesTheWholePushAndItsAnswer) {
  Node writer("w", *nats_, clock_, 512u << 10);
  Node follower("f", *nats_, clock_, 512u << 10);
  // What a cluster node does: the push goes to the writer, the answer comes back.
  follower.feeds->SetPushForward([&](const palisade::v1::FeedChunk& push) {
    return writer.feeds->PushHere(push.feed(), push.mode(), push.format(), push.force(),
                                  push.data());
  });
  absl::StatusOr<palisade::v1::PushFeedResponse> r =
      follower.feeds->Push("drop", kReplace, {}, false, Hosts(0, 4));
  ASSERT_THAT(r.status(), IsOk());
  EXPECT_EQ(r->accepted(), 4u);
  EXPECT_EQ(r->version(), 1u);
  EXPECT_EQ(writer.Decisions(), 4u);
  EXPECT_EQ(follower.Decisions(), 0u);
  EXPECT_EQ(*follower.feeds->Version("drop"), 0u);  // until the published version is read
  EXPECT_THAT(follower.feeds->Push("nope", kReplace, {}, false, "").status(),
              StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace palisade::cluster
