#include "services/feedmanager/feed_manager.h"

#include <atomic>
#include <cstdio>
#include <fstream>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "services/common/proto_time.h"
#include "services/common/metrics_for_tests.h"
#include "services/common/status_matchers.h"
#include "services/store/sql_for_tests.h"

namespace palisade {
namespace {

using palisade::v1::Decision;
using palisade::v1::FeedConfig;
using palisade::v1::PushFeedResponse;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::SizeIs;
using testing::IsOk;
using testing::IsOkAndHolds;
using testing::StatusIs;

constexpr auto kReplace = palisade::v1::FEED_PUSH_MODE_REPLACE;
constexpr auto kPlain = palisade::v1::FEED_FORMAT_PLAIN;

FeedConfig Plain(const std::string& name, bool to_edge = false) {
  FeedConfig c;
  c.set_name(name);
  c.set_format(kPlain);
  c.set_to_edge(to_edge);
  return c;
}

IpAddress Ip(const std::string& s) { return *IpAddress::Parse(s); }

// n distinct /32s in 203.0.113.0/24 and 198.51.100.0/24 (documentation ranges are public
// enough for the never-ban set: only non-public ranges, Cloudflare's and the allowlist are in).
std::string Hosts(int from, int to) {
  std::string out;
  for (int i = from; i < to; ++i) absl::StrAppend(&out, "198.18.", i / 256, ".", i % 256, "\n");
  return out;
}

class FeedManagerTest : public ::testing::Test {
 protected:
  std::unique_ptr<FeedManager> Make(std::vector<FeedConfig> feeds, DecisionTable* table = nullptr,
                                    Store* store = nullptr, size_t edge_max = 10000) {
    FeedManagerOptions options;
    options.feeds = std::move(feeds);
    options.edge_max_entries = edge_max;
    options.never_ban = *CidrSet::Parse({"192.0.2.0/24"});  // the allowlist
    return std::make_unique<FeedManager>(std::move(options), clock_, metrics_, table, store);
  }

  // palisade_feed_fetch_errors_total{feed, reason}.
  double Errors(const std::string& feed, const std::string& reason) {
    return ::palisade::testing::CounterSum(metrics_, "palisade_feed_fetch_errors_total",
                                           {{"feed", feed}, {"reason", reason}});
  }

  SimulatedClock clock_;
  prometheus::Registry metrics_;
};

TEST_F(FeedManagerTest, PushReplaceAddRemoveKeepProvenance) {
  auto feeds = Make({Plain("drop")});
  absl::StatusOr<PushFeedResponse> r =
      feeds->Push("drop", kReplace, {}, false, "203.0.113.0/24\n198.51.100.7\nnonsense\n");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->accepted(), 2u);
  EXPECT_EQ(r->rejected(), 1u);
  ASSERT_THAT(r->rejections(), SizeIs(1));
  EXPECT_EQ(r->rejections(0).line(), 3u);
  EXPECT_EQ(r->added(), 2u);
  EXPECT_EQ(r->version(), 1u);
  EXPECT_TRUE(feeds->registry().Contains("drop", Ip("203.0.113.77")));

  clock_.Advance(absl::Hours(1));
  r = feeds->Push("drop", palisade::v1::FEED_PUSH_MODE_ADD, {}, false, "198.51.100.8\n");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->added(), 1u);
  EXPECT_EQ(r->removed(), 0u);
  r = feeds->Push("drop", palisade::v1::FEED_PUSH_MODE_REMOVE, {}, false, "198.51.100.7\n");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->removed(), 1u);
  EXPECT_FALSE(feeds->registry().Contains("drop", Ip("198.51.100.7")));
  EXPECT_TRUE(feeds->registry().Contains("drop", Ip("198.51.100.8")));

  // A new full version: the range seen since the start keeps its first_seen.
  clock_.Advance(absl::Hours(1));
  r = feeds->Push("drop", kReplace, {}, false, "203.0.113.0/24\n198.51.100.8\n");
  ASSERT_THAT(r, IsOk());
  palisade::v1::GetFeedRequest get;
  get.set_name("drop");
  get.set_lookup("203.0.113.1");
  absl::StatusOr<palisade::v1::GetFeedResponse> got = feeds->Get(get);
  ASSERT_THAT(got, IsOk());
  ASSERT_THAT(got->entries(), SizeIs(1));
  const auto& entry = got->entries(0);
  EXPECT_EQ(entry.cidr(), "203.0.113.0/24");
  EXPECT_EQ(entry.last_seen().seconds() - entry.first_seen().seconds(), 7200);
  EXPECT_EQ(entry.expiry().seconds() - entry.last_seen().seconds(), 7 * 86400);
  EXPECT_EQ(got->info().version(), 4u);

  EXPECT_THAT(feeds->Push("nope", kReplace, {}, false, "").status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("not configured")));
  EXPECT_THAT(
      feeds->Push("drop", kReplace, palisade::v1::FEED_FORMAT_STIX, false, "{").status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not JSON")));
  // The failed push changed nothing.
  EXPECT_TRUE(feeds->registry().Contains("drop", Ip("198.51.100.8")));
}

// A push past the feed's parse cap is this server's limit, not the client's mistake: it answers
// RESOURCE_EXHAUSTED (it answered INVALID_ARGUMENT, as for a malformed feed, which it still
// does), naming the feed; the feed keeps the version it has, and the error and its count say
// which it was.
TEST_F(FeedManagerTest, APushPastTheFeedsParseCapIsResourceExhaustedNotInvalid) {
  FeedConfig c = Plain("tor.exits");
  c.set_max_parsed_bytes(uint64_t{1} << 20);
  auto feeds = Make({c});
  ASSERT_THAT(feeds->Push("tor.exits", kReplace, {}, false, Hosts(0, 100)), IsOk());

  EXPECT_THAT(feeds->Push("tor.exits", kReplace, {}, false, Hosts(0, 20000)).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("feed \"tor.exits\""),
                             HasSubstr("1048576 bytes (max_parsed_bytes)"))));
  EXPECT_THAT(feeds->Version("tor.exits"), IsOkAndHolds(1u));
  EXPECT_TRUE(feeds->registry().Contains("tor.exits", Ip("198.18.0.99")));
  EXPECT_FALSE(feeds->registry().Contains("tor.exits", Ip("198.18.78.0")));
  EXPECT_THAT(feeds->List().feeds(0).last_error(), HasSubstr("max_parsed_bytes"));
  EXPECT_EQ(Errors("tor.exits", "max_parsed_bytes"), 1);

  EXPECT_THAT(
      feeds->Push("tor.exits", kReplace, palisade::v1::FEED_FORMAT_STIX, false, "{").status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("feed \"tor.exits\""), HasSubstr("not JSON"))));
  EXPECT_THAT(feeds->Version("tor.exits"), IsOkAndHolds(1u));
  EXPECT_EQ(Errors("tor.exits", "unreadable"), 1);
  EXPECT_EQ(Errors("tor.exits", "max_parsed_bytes"), 1);

  // A good push clears the error.
  ASSERT_THAT(feeds->Push("tor.exits", kReplace, {}, false, Hosts(0, 200)), IsOk());
  EXPECT_EQ(feeds->List().feeds(0).last_error(), "");
}

TEST_F(FeedManagerTest, NeverBanEntriesAreDropped) {
  auto feeds = Make({Plain("f")});
  absl::StatusOr<PushFeedResponse> r = feeds->Push(
      "f", kReplace, {}, false, "10.1.0.0/16\n192.0.2.5\n192.0.0.0/16\n198.51.100.9\n");
  ASSERT_THAT(r, IsOk());
  // Private, allowlisted, and a range covering the allowlist. (0.0.0.0/0, which covers them all,
  // is rejected before: wider than the feed's minimum prefix.)
  EXPECT_EQ(r->never_ban(), 3u);
  EXPECT_EQ(r->accepted(), 1u);
  EXPECT_FALSE(feeds->registry().Contains("f", Ip("192.0.2.5")));
}

// A broken or hostile feed must not put a provider's whole space in front of the sites: a range
// wider than the feed's minimum prefix (/12 for IPv4, /24 for IPv6 unless configured) is
// rejected, with its line and why; the feed's other entries apply.
TEST_F(FeedManagerTest, ARangeWiderThanTheFeedsMinimumPrefixIsRejected) {
  auto feeds = Make({Plain("f")});
  absl::StatusOr<PushFeedResponse> r = feeds->Push(
      "f", kReplace, {}, false, "8.0.0.0/8\n198.51.100.0/24\n2001::/20\n2001:db8::/32\n");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->accepted(), 2u);
  EXPECT_EQ(r->rejected(), 2u);
  ASSERT_THAT(r->rejections(), SizeIs(2));
  EXPECT_EQ(r->rejections(0).line(), 1u);
  EXPECT_THAT(r->rejections(0).reason(), HasSubstr("wider than the feed's min_prefix_v4 (/12)"));
  EXPECT_EQ(r->rejections(1).line(), 3u);
  EXPECT_THAT(r->rejections(1).reason(), HasSubstr("wider than the feed's min_prefix_v6 (/24)"));
  EXPECT_FALSE(feeds->registry().Contains("f", Ip("8.8.8.8")));
  EXPECT_TRUE(feeds->registry().Contains("f", Ip("198.51.100.7")));

  FeedConfig wide = Plain("wide");
  wide.set_min_prefix_v4(8);
  auto trusted = Make({wide});
  r = trusted->Push("wide", kReplace, {}, false, "8.0.0.0/8\n7.0.0.0/7\n");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->accepted(), 1u);
  EXPECT_EQ(r->rejected(), 1u);
}

TEST_F(FeedManagerTest, ShrinkGuardHoldsAVersionThatLosesNinetyPercent) {
  auto feeds = Make({Plain("f")});
  ASSERT_THAT(feeds->Push("f", kReplace, {}, false, Hosts(0, 1000)), IsOk());
  absl::StatusOr<PushFeedResponse> r = feeds->Push("f", kReplace, {}, false, Hosts(0, 99));
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
  EXPECT_THAT(r->held_reason(), HasSubstr("99 entries, fewer than 10% of the current 1000"));
  EXPECT_TRUE(feeds->registry().Contains("f", Ip("198.18.3.200")));  // still the old version
  palisade::v1::ListFeedsResponse list = feeds->List();
  EXPECT_TRUE(list.feeds(0).held());
  EXPECT_EQ(list.feeds(0).held_entries(), 99u);
  EXPECT_EQ(list.feeds(0).version(), 1u);
  // An empty version is the extreme case.
  EXPECT_TRUE(feeds->Push("f", kReplace, {}, false, "")->held());
  // 100 of 1000 is allowed; so is anything with force.
  EXPECT_FALSE(feeds->Push("f", kReplace, {}, false, Hosts(0, 100))->held());
  r = feeds->Push("f", kReplace, {}, true, Hosts(0, 1));
  EXPECT_FALSE(r->held());
  EXPECT_EQ(r->removed(), 99u);
  EXPECT_FALSE(feeds->List().feeds(0).held());
}

TEST_F(FeedManagerTest, EdgeGetsTheMergedUnionAndOnlyTheDifference) {
  DecisionTable table(clock_);
  auto feeds = Make({Plain("a", true), Plain("b", true), Plain("local")}, &table);
  ASSERT_THAT(feeds->Push("a", kReplace, {}, false, "198.51.100.0/25\n203.0.113.9\n"), IsOk());
  ASSERT_THAT(feeds->Push("b", kReplace, {}, false, "198.51.100.128/25\n"), IsOk());
  ASSERT_THAT(feeds->Push("local", kReplace, {}, false, "198.18.0.1\n"), IsOk());  // not to_edge
  DecisionFilter active;
  active.active_only = true;
  active.origin = palisade::v1::ORIGIN_FEED;
  auto targets = [&] {
    std::map<std::string, std::string> out;
    for (const auto& d : table.List(active)) out[d.target().value()] = d.reason();
    return out;
  };
  auto now = targets();
  ASSERT_THAT(now, SizeIs(2));
  EXPECT_EQ(now["198.51.100.0/24"], "feed: a; b");  // the two halves merged
  EXPECT_EQ(now["203.0.113.9"], "feed: a");
  const std::string id = table.List(active)[0].id();

  // b leaves: the /24 becomes the /25 a still lists; 203.0.113.9 is not touched.
  ASSERT_THAT(feeds->Push("b", kReplace, {}, true, ""), IsOk());
  now = targets();
  EXPECT_THAT(now, SizeIs(2));
  EXPECT_TRUE(now.count("198.51.100.0/25"));
  EXPECT_TRUE(now.count("203.0.113.9"));

  // Over the edge cap nothing changes at the edge.
  auto capped = Make({Plain("big", true)}, &table, nullptr, /*edge_max=*/5);
  ASSERT_THAT(capped->Push("big", kReplace, {}, false, Hosts(0, 10)), IsOk());
  EXPECT_THAT(targets(), SizeIs(2));
}

double Counter(prometheus::Registry& registry, const std::string& name) {
  for (const prometheus::MetricFamily& f : registry.Collect()) {
    if (f.name == name && !f.metric.empty()) return f.metric[0].counter.value;
  }
  return -1;
}

// Over feed_edge_max_entries the edge keeps the set it has, refreshed so it does not lapse, and
// the sync is held once per refresh, not resynced every second.
TEST_F(FeedManagerTest, OverTheEdgeCapTheCurrentEdgeSetIsHeldAndRefreshed) {
  DecisionTable table(clock_);
  FeedConfig config = Plain("big", true);
  *config.mutable_entry_ttl() = ToProtoDuration(absl::Hours(4));
  auto feeds = Make({config}, &table, nullptr, /*edge_max=*/5);
  auto spread = [](int n) {  // n hosts that do not merge into ranges
    std::string out;
    for (int i = 0; i < n; ++i) absl::StrAppend(&out, "198.18.0.", 2 * i, "\n");
    return out;
  };
  ASSERT_THAT(feeds->Push("big", kReplace, {}, false, spread(3)), IsOk());
  DecisionFilter active;
  active.active_only = true;
  active.origin = palisade::v1::ORIGIN_FEED;
  ASSERT_THAT(table.List(active), SizeIs(3));
  ASSERT_THAT(feeds->Push("big", kReplace, {}, false, spread(10)), IsOk());  // over the cap
  EXPECT_THAT(table.List(active), SizeIs(3));
  const double held_after_push = Counter(metrics_, "palisade_feed_edge_held_total");
  EXPECT_EQ(held_after_push, 1);
  // A day of ticks, one a second, the feed still over the cap in every hourly version: the
  // three decisions never lapse, and the held sync is counted per version and per refresh (a
  // quarter of the entry TTL), not once a second.
  for (int i = 0; i < 24 * 3600; ++i) {
    if (i % 3600 == 0) {
      ASSERT_THAT(feeds->Push("big", kReplace, {}, false, spread(10)), IsOk());
    }
    clock_.Advance(absl::Seconds(1));
    feeds->Tick();
    table.ExpireDue();
  }
  std::vector<Decision> still = table.List(active);
  ASSERT_THAT(still, SizeIs(3));
  for (const Decision& d : still) EXPECT_GT(DecisionExpiry(d), clock_.TimeNow());
  EXPECT_LE(Counter(metrics_, "palisade_feed_edge_held_total"), held_after_push + 24 + 24);
  // Back under the cap: the feed's set goes to the edge again.
  ASSERT_THAT(feeds->Push("big", kReplace, {}, true, spread(4)), IsOk());
  EXPECT_THAT(table.List(active), SizeIs(4));
}

// Over the cap the edge held every removal and expiry too: a delisted address stayed blocked
// for as long as the feed stayed over its cap. Only additions wait; removals only shrink the
// set, so they cannot threaten the cap.
TEST_F(FeedManagerTest, OverTheEdgeCapADelistedAddressLeavesTheEdge) {
  DecisionTable table(clock_);
  auto feeds = Make({Plain("f", true)}, &table, nullptr, /*edge_max=*/2);
  ASSERT_THAT(feeds->Push("f", kReplace, {}, false, "198.51.100.1\n198.51.100.3\n"), IsOk());
  // 198.51.100.3 is delisted while three new addresses come: over the cap, the additions wait.
  ASSERT_THAT(feeds->Push("f", kReplace, {}, false,
                          "198.51.100.1\n198.51.100.5\n198.51.100.7\n198.51.100.9\n"),
              IsOk());
  DecisionFilter active;
  active.active_only = true;
  active.origin = palisade::v1::ORIGIN_FEED;
  auto targets = [&] {
    std::vector<std::string> out;
    for (const Decision& d : table.List(active)) out.push_back(d.target().value());
    return out;
  };
  EXPECT_THAT(targets(), ::testing::ElementsAre("198.51.100.1"));
  for (int i = 0; i < 24; ++i) {
    clock_.Advance(absl::Hours(1));
    feeds->Tick();
    table.ExpireDue();
  }
  EXPECT_THAT(targets(), ::testing::ElementsAre("198.51.100.1"));
  // Relisted while still over the cap, it is an addition again: it waits.
  ASSERT_THAT(feeds->Push("f", kReplace, {}, false,
                          "198.51.100.1\n198.51.100.3\n198.51.100.5\n198.51.100.7\n"),
              IsOk());
  EXPECT_THAT(targets(), ::testing::ElementsAre("198.51.100.1"));
}

// A merged range held over the cap, now partly delisted, is cut down to the pieces still listed
// when they fit under the cap, and dropped when they do not.
TEST_F(FeedManagerTest, OverTheEdgeCapAPartlyDelistedRangeIsSplitOrDropped) {
  DecisionTable table(clock_);
  auto feeds = Make({Plain("f", true)}, &table, nullptr, /*edge_max=*/2);
  ASSERT_THAT(
      feeds->Push("f", kReplace, {}, false, "198.51.100.0/25\n198.51.100.128/25\n203.0.113.9\n"),
      IsOk());
  DecisionFilter active;
  active.active_only = true;
  active.origin = palisade::v1::ORIGIN_FEED;
  auto targets = [&] {
    std::vector<std::string> out;
    for (const Decision& d : table.List(active)) out.push_back(d.target().value());
    return out;
  };
  ASSERT_THAT(targets(), ::testing::UnorderedElementsAre("198.51.100.0/24", "203.0.113.9"));
  // The upper half is delisted, new addresses come: over the cap. The /24 becomes its /25.
  ASSERT_THAT(feeds->Push("f", kReplace, {}, false,
                          "198.51.100.0/25\n203.0.113.9\n203.0.113.20\n203.0.113.40\n"),
              IsOk());
  EXPECT_THAT(targets(), ::testing::UnorderedElementsAre("198.51.100.0/25", "203.0.113.9"));
  // Now the /25 loses a quarter: its pieces still listed (a /26 and a /27) and 203.0.113.9
  // would be three, over the cap of two: the range leaves the edge, 203.0.113.9 stays.
  ASSERT_THAT(feeds->Push("f", kReplace, {}, false,
                          "198.51.100.0/26\n198.51.100.64/27\n203.0.113.9\n203.0.113.20\n"
                          "203.0.113.40\n"),
              IsOk());
  EXPECT_THAT(targets(), ::testing::ElementsAre("203.0.113.9"));
}

// Over the cap the held set was read back from the table's active feed decisions: a restart
// with an address newly in the never-ban set kept (and refreshed) its restored decision, which
// the feed itself no longer held; and the feed claims waiting behind other decisions were
// dropped, so the address left the edge when that decision ended. The held set is the one last
// decided, judged by the never-ban set and the feeds' minimum prefixes when read from the table.
TEST_F(FeedManagerTest, OverTheEdgeCapTheHeldSetKeepsOutTheNeverBanSet) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/held_never_ban.db");
  std::remove(path.c_str());
  const FeedConfig c = Plain("f", true);
  const std::string five = "198.51.100.1\n198.51.100.3\n198.51.100.5\n198.51.100.7\n198.51.100.9\n";
  DecisionFilter active;
  active.active_only = true;
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    DecisionTable table(clock_);
    table.SetStore(store->get(), {palisade::v1::ACTUATOR_IP_LIST});
    auto feeds = Make({c}, &table, store->get(), /*edge_max=*/2);
    ASSERT_THAT(feeds->Push("f", kReplace, {}, false, "198.51.100.1\n198.51.100.3\n"), IsOk());
    ASSERT_THAT(feeds->Push("f", kReplace, {}, false, five), IsOk());  // over the cap: held
    ASSERT_THAT(table.List(active), SizeIs(2));
  }
  // The operator allowlists 198.51.100.1 and restarts.
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  DecisionTable table(clock_);
  table.SetStore(store->get(), {palisade::v1::ACTUATOR_IP_LIST});
  ASSERT_THAT(table.Restore(), IsOk());
  FeedManagerOptions options;
  options.feeds = {c};
  options.edge_max_entries = 2;
  options.never_ban = *CidrSet::Parse({"198.51.100.1"});
  prometheus::Registry metrics;
  FeedManager feeds(options, clock_, metrics, &table, store->get());
  ASSERT_THAT(feeds.Restore(), IsOk());
  feeds.Start();
  feeds.Stop();
  std::vector<std::string> targets;
  for (const Decision& d : table.List(active)) targets.push_back(d.target().value());
  EXPECT_THAT(targets, ::testing::ElementsAre("198.51.100.3"));
}

// An allowlist reloaded withdraws the feed decisions it covers (DecisionTable::WithdrawCovered),
// but the feed manager's never-ban set was the one built at start: the next edge sync (a push,
// or the refresh) made the decision again, until a restart. SetNeverBan takes the new set.
TEST_F(FeedManagerTest, ANeverBanSetReloadedKeepsItsAddressesOffTheEdge) {
  DecisionTable table(clock_);
  auto feeds = Make({Plain("f", true)}, &table);
  feeds->Start();
  ASSERT_THAT(feeds->Push("f", kReplace, {}, false, "198.51.100.1\n198.51.100.3\n"), IsOk());
  DecisionFilter active;
  active.active_only = true;
  ASSERT_THAT(table.List(active), SizeIs(2));
  // The operator allowlists 198.51.100.1 and reloads.
  const CidrSet allowlist = *CidrSet::Parse({"198.51.100.1"});
  table.WithdrawCovered(allowlist);
  feeds->SetNeverBan(*CidrSet::Parse({"192.0.2.0/24", "198.51.100.1"}));
  // Another version of another entry syncs the edge again; so does the refresh, days on.
  ASSERT_THAT(feeds->Push("f", palisade::v1::FEED_PUSH_MODE_ADD, {}, false, "198.51.100.5\n"),
              IsOk());
  for (int i = 0; i < 4; ++i) {
    clock_.Advance(absl::Hours(12));
    feeds->Tick();
  }
  feeds->Stop();
  std::vector<std::string> targets;
  for (const Decision& d : table.List(active)) targets.push_back(d.target().value());
  EXPECT_THAT(targets, ::testing::UnorderedElementsAre("198.51.100.3", "198.51.100.5"));
}

TEST_F(FeedManagerTest, OverTheEdgeCapAFeedClaimWaitingBehindAManualBanIsKept) {
  DecisionTable table(clock_);
  palisade::v1::AddDecisionRequest req;
  req.mutable_target()->set_kind(palisade::v1::TARGET_KIND_IP);
  req.mutable_target()->set_value("198.51.100.1");
  *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
  req.set_actuator(palisade::v1::ACTUATOR_IP_LIST);
  ASSERT_THAT(table.AddManual(req), IsOk());
  auto feeds = Make({Plain("f", true)}, &table, nullptr, /*edge_max=*/2);
  // 198.51.100.1's feed claim waits behind the manual ban.
  ASSERT_THAT(feeds->Push("f", kReplace, {}, false, "198.51.100.1\n198.51.100.3\n"), IsOk());
  ASSERT_THAT(feeds->Push("f", kReplace, {}, false,
                          "198.51.100.1\n198.51.100.3\n198.51.100.5\n198.51.100.7\n"),
              IsOk());  // over the cap: held
  clock_.Advance(absl::Hours(2));
  table.ExpireDue();  // the manual ban ends: the feed's claim takes over
  DecisionFilter active;
  active.active_only = true;
  std::map<std::string, palisade::v1::Origin> decided;
  for (const Decision& d : table.List(active)) decided[d.target().value()] = d.origin();
  EXPECT_EQ(decided.size(), 2u);
  EXPECT_EQ(decided["198.51.100.1"], palisade::v1::ORIGIN_FEED);
}

// With no to_edge feed the edge refresh period (a quarter of the longest to_edge entry_ttl)
// was zero: every Tick ran DecisionTable::SyncFeed, walking every active decision.
TEST_F(FeedManagerTest, WithoutAToEdgeFeedTheEdgeIsSyncedOnceNotEverySecond) {
  DecisionTable table(clock_);
  auto feeds = Make({Plain("local")}, &table);
  ASSERT_THAT(feeds->Push("local", kReplace, {}, false, "198.51.100.7\n"), IsOk());
  feeds->Start();  // its sync withdraws what a feed no longer to_edge left at the edge
  feeds->Stop();
  for (int i = 0; i < 3600; ++i) {
    clock_.Advance(absl::Seconds(1));
    feeds->Tick();
  }
  EXPECT_EQ(Counter(metrics_, "palisade_feed_edge_syncs_total"), 1);
  EXPECT_EQ(table.active_count(), 0u);
}

TEST_F(FeedManagerTest, ExpiredEntriesLeaveTheFeedAndTheEdge) {
  DecisionTable table(clock_);
  FeedConfig c = Plain("f", true);
  c.mutable_entry_ttl()->set_seconds(3600);
  auto feeds = Make({c}, &table);
  ASSERT_THAT(feeds->Push("f", kReplace, {}, false, "198.51.100.7\n"), IsOk());
  clock_.Advance(absl::Minutes(59));
  feeds->Tick();
  EXPECT_TRUE(feeds->registry().Contains("f", Ip("198.51.100.7")));
  clock_.Advance(absl::Minutes(2));
  feeds->Tick();
  EXPECT_FALSE(feeds->registry().Contains("f", Ip("198.51.100.7")));
  EXPECT_EQ(table.active_count(), 0u);
}

// A restart restored entries past their expiry (the daemon was down when they ended) and
// Start's edge sync decided them again before the first sweep took them out.
TEST_F(FeedManagerTest, RestoreLeavesOutEntriesPastTheirExpiry) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/restore_expired.db");
  std::remove(path.c_str());
  FeedConfig c = Plain("f", true);
  c.mutable_entry_ttl()->set_seconds(3600);
  DecisionTable table(clock_);
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    auto feeds = Make({c}, &table, store->get());
    ASSERT_THAT(feeds->Push("f", kReplace, {}, false, "198.51.100.7\n"), IsOk());
    clock_.Advance(absl::Minutes(30));
    ASSERT_THAT(feeds->Push("f", palisade::v1::FEED_PUSH_MODE_ADD, {}, false, "203.0.113.9\n"),
                IsOk());  // ends 30 minutes after the other
  }
  clock_.Advance(absl::Minutes(45));  // 198.51.100.7 ended 15 minutes ago
  table.ExpireDue();
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  prometheus::Registry metrics;
  FeedManagerOptions options;
  options.feeds = {c};
  FeedManager feeds(options, clock_, metrics, &table, store->get());
  ASSERT_THAT(feeds.Restore(), IsOk());
  EXPECT_FALSE(feeds.registry().Contains("f", Ip("198.51.100.7")));
  EXPECT_TRUE(feeds.registry().Contains("f", Ip("203.0.113.9")));
  feeds.Start();
  feeds.Stop();
  EXPECT_EQ(::palisade::testing::CounterSum(metrics, "palisade_feed_edge_changes_total",
                                            {{"change", "added"}}),
            0);
  EXPECT_EQ(table.active_count(), 1u);
}

TEST_F(FeedManagerTest, RestartResumesFromTheStore) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/feeds.db");
  std::remove(path.c_str());
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    auto feeds = Make({Plain("f")}, nullptr, store->get());
    ASSERT_THAT(feeds->Push("f", kReplace, {}, false, "198.51.100.0/24\n"), IsOk());
  }
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  auto feeds = Make({Plain("f")}, nullptr, store->get());
  EXPECT_FALSE(feeds->registry().Contains("f", Ip("198.51.100.1")));
  ASSERT_THAT(feeds->Restore(), IsOk());
  EXPECT_TRUE(feeds->registry().Contains("f", Ip("198.51.100.1")));
  EXPECT_EQ(feeds->List().feeds(0).version(), 1u);
}

// A version the store refused was only logged: the push answered OK, nothing wrote it again,
// and a restart restored the version before it (a removed address banned again). The feed says
// so (last_error, palisade_feed_store_errors_total) and Tick writes it once the store takes it.
TEST_F(FeedManagerTest, AVersionTheStoreRefusedIsWrittenAgainAndSurvivesARestart) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/refused_snapshot.db");
  std::remove(path.c_str());
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    DecisionTable table(clock_);
    auto feeds = Make({Plain("f", true)}, &table, store->get());
    ASSERT_THAT(feeds->Push("f", kReplace, {}, false, "198.51.100.1\n198.51.100.2\n"), IsOk());
    ::palisade::testing::ExecSql(path, "CREATE TRIGGER full BEFORE INSERT ON snapshots "
                                       "BEGIN SELECT RAISE(ABORT, 'full'); END;");
    ASSERT_THAT(feeds->Push("f", palisade::v1::FEED_PUSH_MODE_REMOVE, {}, false, "198.51.100.2\n"),
                IsOk());
    EXPECT_FALSE(feeds->registry().Contains("f", Ip("198.51.100.2")));
    EXPECT_THAT(feeds->List().feeds(0).last_error(),
                AllOf(HasSubstr("version 2 not stored"), HasSubstr("full")));
    EXPECT_EQ(::palisade::testing::CounterSum(metrics_, "palisade_feed_store_errors_total",
                                              {{"feed", "f"}}),
              1);
    feeds->Tick();  // still refused: still pending
    EXPECT_THAT(feeds->List().feeds(0).last_error(), HasSubstr("not stored"));
    ::palisade::testing::ExecSql(path, "DROP TRIGGER full;");
    clock_.Advance(absl::Seconds(1));
    feeds->Tick();
    EXPECT_EQ(feeds->List().feeds(0).last_error(), "");
  }
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  prometheus::Registry metrics;
  FeedManagerOptions options;
  options.feeds = {Plain("f", true)};
  FeedManager feeds(options, clock_, metrics, nullptr, store->get());
  ASSERT_THAT(feeds.Restore(), IsOk());
  EXPECT_THAT(feeds.Version("f"), IsOkAndHolds(2u));
  EXPECT_FALSE(feeds.registry().Contains("f", Ip("198.51.100.2")));
  EXPECT_TRUE(feeds.registry().Contains("f", Ip("198.51.100.1")));
}

// In a cluster (docs/CLUSTER.md, "Threat feeds"): each version made here goes to on_version,
// push or expiry; a followed version goes to the registry and the store only, never to the
// decisions nor back to on_version; older or equal ones are ignored.
TEST_F(FeedManagerTest, VersionsMadeHereArePublishedFollowedOnesOnlyHeld) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/follow.db");
  std::remove(path.c_str());
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  DecisionTable table(clock_);
  FeedConfig c = Plain("f", true);
  c.mutable_entry_ttl()->set_seconds(3600);
  std::vector<palisade::v1::FeedState> made;
  FeedManagerOptions options;
  options.feeds = {c};
  options.never_ban = *CidrSet::Parse({"192.0.2.0/24"});
  options.on_version = [&made](absl::string_view feed, const palisade::v1::FeedState& state) {
    EXPECT_EQ(feed, "f");
    made.push_back(state);
  };
  FeedManager writer(options, clock_, metrics_, &table, nullptr);
  ASSERT_THAT(writer.Push("f", kReplace, {}, false, "198.51.100.7\n203.0.113.9\n"), IsOk());
  ASSERT_THAT(made, SizeIs(1));
  EXPECT_EQ(made[0].version(), 1u);
  EXPECT_THAT(made[0].entries(), SizeIs(2));
  clock_.Advance(absl::Minutes(61));  // both entries expire: version 2, empty
  writer.Tick();
  ASSERT_THAT(made, SizeIs(2));
  EXPECT_EQ(made[1].version(), 2u);
  EXPECT_THAT(made[1].entries(), SizeIs(0));

  // A follower (its own table and store) takes version 1 and holds it durably, decides nothing.
  prometheus::Registry follower_metrics;
  DecisionTable follower_table(clock_);
  FeedManagerOptions fo;
  fo.feeds = {c};
  int follower_made = 0;
  fo.on_version = [&follower_made](absl::string_view, const palisade::v1::FeedState&) {
    ++follower_made;
  };
  {
    FeedManager follower(fo, clock_, follower_metrics, &follower_table, store->get());
    EXPECT_THAT(follower.Follow("f", made[0]), IsOkAndHolds(true));
    EXPECT_TRUE(follower.registry().Contains("f", Ip("198.51.100.7")));
    EXPECT_EQ(follower_table.active_count(), 0u);
    EXPECT_EQ(follower_made, 0);
    EXPECT_THAT(follower.Follow("f", made[0]), IsOkAndHolds(false));  // equal: ignored
  }
  prometheus::Registry restarted_metrics;
  FeedManager restarted(fo, clock_, restarted_metrics, &follower_table, store->get());
  ASSERT_THAT(restarted.Restore(), IsOk());
  EXPECT_THAT(restarted.Version("f"), IsOkAndHolds(1u));
  // Version 1's entries ended at minute 60: the restart leaves them out.
  EXPECT_FALSE(restarted.registry().Contains("f", Ip("203.0.113.9")));
  EXPECT_THAT(restarted.Follow("f", made[1]), IsOkAndHolds(true));
  EXPECT_FALSE(restarted.registry().Contains("f", Ip("203.0.113.9")));
  EXPECT_THAT(restarted.Follow("f", made[0]), IsOkAndHolds(false));  // older: ignored
  EXPECT_THAT(restarted.Version("f"), IsOkAndHolds(2u));
  EXPECT_EQ(follower_made, 0);
}

// The writer lease comes and goes: Start after Stop runs again (and syncs the edge with what the
// feeds hold then); Stop twice is harmless.
TEST_F(FeedManagerTest, StartsAgainAfterStop) {
  DecisionTable table(clock_);
  auto feeds = Make({Plain("f", true)}, &table);
  palisade::v1::FeedState state;
  state.set_version(3);
  auto* e = state.add_entries();
  e->set_cidr("198.51.100.7/32");
  e->set_expiry(absl::ToUnixSeconds(clock_.TimeNow() + absl::Hours(1)));
  feeds->Start();
  feeds->Stop();
  ASSERT_THAT(feeds->Follow("f", state), IsOkAndHolds(true));
  EXPECT_EQ(table.active_count(), 0u);  // followed: no decision
  feeds->Start();                       // this node writes now: the edge gets the feed
  EXPECT_EQ(table.active_count(), 1u);
  feeds->Start();  // already running: nothing
  // While it runs (it writes), a version followed late (a former writer's) reaches the edge.
  state.set_version(4);
  auto* more = state.add_entries();
  more->set_cidr("203.0.113.9/32");
  more->set_expiry(absl::ToUnixSeconds(clock_.TimeNow() + absl::Hours(1)));
  ASSERT_THAT(feeds->Follow("f", state), IsOkAndHolds(true));
  EXPECT_EQ(table.active_count(), 2u);
  feeds->Stop();
  feeds->Stop();
  state.set_version(5);
  state.mutable_entries()->RemoveLast();
  ASSERT_THAT(feeds->Follow("f", state), IsOkAndHolds(true));
  EXPECT_EQ(table.active_count(), 2u);  // stopped: followed, not synced
}

// A followed version's entry that does not parse (a writer of another version, a damaged
// message) is skipped and counted as the feed's rejected entries, as a pull's would be.
TEST_F(FeedManagerTest, AFollowedEntryThatDoesNotParseIsCounted) {
  auto feeds = Make({Plain("f", false)}, nullptr);
  palisade::v1::FeedState state;
  state.set_version(1);
  state.add_entries()->set_cidr("198.51.100.0/24");
  state.add_entries()->set_cidr("not a range");
  ASSERT_THAT(feeds->Follow("f", state), IsOkAndHolds(true));
  palisade::v1::ListFeedsResponse listed = feeds->List();
  ASSERT_EQ(listed.feeds_size(), 1);
  EXPECT_EQ(listed.feeds(0).entries(), 1u);
  EXPECT_EQ(listed.feeds(0).rejected(), 1u);
}

// The never-ban set is the operator's: an address allowlisted after a version was stored (or
// published by the cluster's writer) must not come back from the store at a restart, nor from
// a followed version, and so reach the edge or the bouncers as a decision.
TEST_F(FeedManagerTest, RestoredAndFollowedEntriesThatTouchTheNeverBanSetAreDropped) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/never_ban_restore.db");
  std::remove(path.c_str());
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    auto feeds = Make({Plain("f", true)}, nullptr, store->get());
    ASSERT_THAT(feeds->Push("f", kReplace, {}, false, "198.51.100.7\n203.0.113.0/24\n"), IsOk());
  }
  // The operator allowlists 198.51.100.7 and 203.0.113.9, and restarts.
  FeedManagerOptions options;
  options.feeds = {Plain("f", true)};
  options.never_ban = *CidrSet::Parse({"198.51.100.7", "203.0.113.9"});
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  DecisionTable table(clock_);
  prometheus::Registry metrics;
  FeedManager feeds(options, clock_, metrics, &table, store->get());
  ASSERT_THAT(feeds.Restore(), IsOk());
  EXPECT_FALSE(feeds.registry().Contains("f", Ip("198.51.100.7")));
  EXPECT_FALSE(feeds.registry().Contains("f", Ip("203.0.113.1")));
  EXPECT_EQ(feeds.List().feeds(0).never_ban(), 2u);
  feeds.Start();
  feeds.Stop();
  EXPECT_EQ(table.active_count(), 0u);

  palisade::v1::FeedState state;
  state.set_version(7);
  for (const char* cidr : {"198.51.100.7/32", "203.0.113.0/24", "198.51.100.8/32"}) {
    auto* e = state.add_entries();
    e->set_cidr(cidr);
    e->set_expiry(absl::ToUnixSeconds(clock_.TimeNow() + absl::Hours(1)));
  }
  ASSERT_THAT(feeds.Follow("f", state), IsOkAndHolds(true));
  EXPECT_FALSE(feeds.registry().Contains("f", Ip("198.51.100.7")));
  EXPECT_FALSE(feeds.registry().Contains("f", Ip("203.0.113.1")));
  EXPECT_TRUE(feeds.registry().Contains("f", Ip("198.51.100.8")));
  EXPECT_EQ(feeds.List().feeds(0).never_ban(), 2u);
}

// A stored version from before the feed's minimum prefix was raised, and a version followed
// from a writer with a wider one, are judged by this node's feed config.
TEST_F(FeedManagerTest, RestoredAndFollowedRangesWiderThanTheMinimumPrefixAreDropped) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/min_prefix_restore.db");
  std::remove(path.c_str());
  {
    FeedConfig wide = Plain("f");
    wide.set_min_prefix_v4(8);
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    auto feeds = Make({wide}, nullptr, store->get());
    ASSERT_THAT(feeds->Push("f", kReplace, {}, false, "8.0.0.0/8\n198.51.100.0/24\n"), IsOk());
    ASSERT_TRUE(feeds->registry().Contains("f", Ip("8.8.8.8")));
  }
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  auto feeds = Make({Plain("f")}, nullptr, store->get());  // the default /12
  ASSERT_THAT(feeds->Restore(), IsOk());
  EXPECT_FALSE(feeds->registry().Contains("f", Ip("8.8.8.8")));
  EXPECT_TRUE(feeds->registry().Contains("f", Ip("198.51.100.7")));

  palisade::v1::FeedState state;
  state.set_version(9);
  for (const char* cidr : {"9.0.0.0/8", "203.0.113.0/24"}) {
    auto* e = state.add_entries();
    e->set_cidr(cidr);
    e->set_expiry(absl::ToUnixSeconds(clock_.TimeNow() + absl::Hours(1)));
  }
  ASSERT_THAT(feeds->Follow("f", state), IsOkAndHolds(true));
  EXPECT_FALSE(feeds->registry().Contains("f", Ip("9.9.9.9")));
  EXPECT_TRUE(feeds->registry().Contains("f", Ip("203.0.113.1")));
}

// A feed server writes the references and the ETag, and proto3 strings must be UTF-8: a stored
// version holding a stray byte could not be read back, and palisaded refused to start.
TEST_F(FeedManagerTest, WhatTheFeedServerWroteNeverMakesTheStoredVersionUnreadable) {
  httplib::Server server;
  server.Get("/drop.txt", [](const httplib::Request&, httplib::Response& res) {
    res.set_header("ETag", "\"v\xff\xfe\"");
    res.set_header("Last-Modified", "Fri, 04 Dec 2026 05:00:00 GMT\xff");
    res.set_content("198.51.100.0/24 ; SBL1\xff\n", "text/plain");
  });
  const int port = server.bind_to_any_port("127.0.0.1");
  std::thread thread([&server] { server.listen_after_bind(); });
  const std::string path = absl::StrCat(::testing::TempDir(), "/stray_bytes.db");
  std::remove(path.c_str());
  FeedConfig pulled = Plain("pulled");
  pulled.set_format(palisade::v1::FEED_FORMAT_SPAMHAUS);
  pulled.set_url(absl::StrCat("http://127.0.0.1:", port, "/drop.txt"));
  FeedConfig pushed = Plain("pushed");
  pushed.set_format(palisade::v1::FEED_FORMAT_SPAMHAUS);
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    auto feeds = Make({pulled, pushed}, nullptr, store->get());
    ASSERT_THAT(feeds->FetchNow("pulled"), IsOk());
    ASSERT_THAT(feeds->Push("pushed", kReplace, {}, false, "203.0.113.0/24 ; SBL2\x80\x1b[2J\n"),
                IsOk());
  }
  server.stop();
  thread.join();
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  auto feeds = Make({pulled, pushed}, nullptr, store->get());
  ASSERT_THAT(feeds->Restore(), IsOk());
  EXPECT_TRUE(feeds->registry().Contains("pulled", Ip("198.51.100.1")));
  EXPECT_TRUE(feeds->registry().Contains("pushed", Ip("203.0.113.1")));
}

// Feeds.Get is a read-role call: max_entries is the client's, and a big feed (64 MiB of
// addresses is millions of entries) was copied whole into one reply. The reply is bounded in
// bytes, as a Decisions.List page is; info.entries says how many there are.
TEST_F(FeedManagerTest, AGetReplyIsBoundedInBytes) {
  std::string content;
  for (int i = 0; i < 131072; ++i) {
    absl::StrAppend(&content, "198.", 18 + i / 65536, ".", (i / 256) % 256, ".", i % 256, "\n");
  }
  auto feeds = Make({Plain("big")});
  ASSERT_THAT(feeds->Push("big", kReplace, {}, false, content), IsOk());
  palisade::v1::GetFeedRequest get;
  get.set_name("big");
  get.set_max_entries(std::numeric_limits<uint32_t>::max());
  absl::StatusOr<palisade::v1::GetFeedResponse> got = feeds->Get(get);
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->info().entries(), 131072u);
  EXPECT_GT(got->entries_size(), 1000);
  EXPECT_LE(got->ByteSizeLong(), size_t{3} << 20);
  get.set_max_entries(10);
  EXPECT_THAT(feeds->Get(get)->entries(), SizeIs(10));
}

// A feed server on loopback that honours If-None-Match like a real one.
class FeedServer {
 public:
  FeedServer() {
    server_.Get("/feed.txt", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard<std::mutex> lock(mu_);
      ++requests_;
      last_if_none_match_ = req.get_header_value("If-None-Match");
      if (status_ != 200) {
        res.status = status_;
        return;
      }
      const std::string etag = "\"v" + std::to_string(version_) + "\"";
      if (last_if_none_match_ == etag) {
        res.status = 304;
        return;
      }
      res.set_header("ETag", etag);
      res.set_content(body_, "text/plain");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~FeedServer() {
    server_.stop();
    thread_.join();
  }
  void Serve(std::string body) {
    std::lock_guard<std::mutex> lock(mu_);
    body_ = std::move(body);
    ++version_;
  }
  void Fail(int status) {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = status;
  }
  std::string url() const { return absl::StrCat("http://127.0.0.1:", port_, "/feed.txt"); }
  int requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  std::string last_if_none_match() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_if_none_match_;
  }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  std::string body_;
  int version_ = 0, status_ = 200, requests_ = 0;
  std::string last_if_none_match_;
};

TEST_F(FeedManagerTest, PullHonoursETagAndKeepsTheLastGoodCopy) {
  FeedServer server;
  server.Serve("198.51.100.1\n198.51.100.2\n");
  FeedConfig c = Plain("pulled");
  c.set_url(server.url());
  c.mutable_interval()->set_seconds(600);
  auto feeds = Make({c});

  absl::StatusOr<PushFeedResponse> r = feeds->FetchNow("pulled");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->version(), 1u);
  EXPECT_EQ(r->added(), 2u);
  EXPECT_EQ(server.last_if_none_match(), "");

  // Unchanged: a conditional request answered 304, same version.
  r = feeds->FetchNow("pulled");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(server.last_if_none_match(), "\"v1\"");
  EXPECT_EQ(r->version(), 1u);

  // Changed: the new ETag's content is applied.
  server.Serve("198.51.100.2\n198.51.100.3\n");
  r = feeds->FetchNow("pulled");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->version(), 2u);
  EXPECT_EQ(r->added(), 1u);
  EXPECT_EQ(r->removed(), 1u);

  // The server fails: the error is kept and reported, the version stays.
  server.Fail(503);
  EXPECT_THAT(feeds->FetchNow("pulled").status(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("HTTP 503")));
  palisade::v1::FeedInfo info = feeds->List().feeds(0);
  EXPECT_EQ(info.version(), 2u);
  EXPECT_THAT(info.last_error(), HasSubstr("HTTP 503"));
  EXPECT_EQ(Errors("pulled", "fetch"), 1);
  EXPECT_TRUE(feeds->registry().Contains("pulled", Ip("198.51.100.3")));

  // The puller: due at once (never fetched in this manager? it was: next is in 600 s or the
  // backoff after the failure), so advancing past the backoff fetches again.
  server.Fail(200);
  const int before = server.requests();
  clock_.Advance(absl::Seconds(31));
  feeds->Tick();
  EXPECT_EQ(server.requests(), before + 1);
  EXPECT_EQ(feeds->List().feeds(0).last_error(), "");
}

// A pulled version was handed to on_version (and stored) twice: first without its ETag, then
// with it. Followers take the first and ignore the second (same version), so a node that
// later writes sent the previous version's validators; and a big feed was stored twice.
TEST_F(FeedManagerTest, APulledVersionIsPublishedOnceWithItsValidators) {
  FeedServer server;
  server.Serve("198.51.100.1\n");
  FeedConfig c = Plain("pulled");
  c.set_url(server.url());
  std::vector<palisade::v1::FeedState> made;
  FeedManagerOptions options;
  options.feeds = {c};
  options.on_version = [&made](absl::string_view, const palisade::v1::FeedState& state) {
    made.push_back(state);
  };
  FeedManager feeds(options, clock_, metrics_, nullptr, nullptr);
  ASSERT_THAT(feeds.FetchNow("pulled"), IsOk());
  ASSERT_THAT(made, SizeIs(1));
  EXPECT_EQ(made[0].version(), 1u);
  EXPECT_EQ(made[0].etag(), "\"v1\"");
  // A held version keeps the validators of the applied one: the next pull asks for it whole.
  server.Serve("");
  absl::StatusOr<PushFeedResponse> held = feeds.FetchNow("pulled");
  ASSERT_THAT(held, IsOk());
  EXPECT_TRUE(held->held());
  EXPECT_THAT(made, SizeIs(1));
  ASSERT_THAT(feeds.FetchNow("pulled"), IsOk());
  EXPECT_EQ(server.last_if_none_match(), "\"v1\"");
}

// A push to a pulled feed kept the pulled version's ETag: the next pull sent it, the server
// answered 304, and the pushed version was renewed as the server's, the entries the push took
// out gone until the server's content changed. A push clears the validators.
TEST_F(FeedManagerTest, APushToAPulledFeedMakesTheNextPullAskForTheWholeContent) {
  FeedServer server;
  server.Serve("198.51.100.1\n198.51.100.2\n");
  FeedConfig c = Plain("drop");
  c.set_url(server.url());
  auto feeds = Make({c});
  ASSERT_THAT(feeds->FetchNow("drop"), IsOk());
  ASSERT_THAT(feeds->Push("drop", kReplace, {}, false, "198.51.100.1\n"), IsOk());
  EXPECT_FALSE(feeds->registry().Contains("drop", Ip("198.51.100.2")));
  ASSERT_THAT(feeds->FetchNow("drop"), IsOk());  // the server's content is unchanged
  EXPECT_EQ(server.last_if_none_match(), "");
  EXPECT_TRUE(feeds->registry().Contains("drop", Ip("198.51.100.2")));
}

// "Not modified" is only an answer to a conditional request: a server that answers 304 to a
// feed with no version yet (no validators sent) gave nothing, and the feed must not look
// fresh (last success now, age 0) while it holds nothing.
TEST_F(FeedManagerTest, NotModifiedWithoutAVersionIsAFailure) {
  httplib::Server server;
  server.Get("/feed.txt",
             [](const httplib::Request&, httplib::Response& res) { res.status = 304; });
  const int port = server.bind_to_any_port("127.0.0.1");
  std::thread thread([&server] { server.listen_after_bind(); });
  FeedConfig c = Plain("pulled");
  c.set_url(absl::StrCat("http://127.0.0.1:", port, "/feed.txt"));
  auto feeds = Make({c});
  EXPECT_THAT(feeds->FetchNow("pulled").status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("304")));
  palisade::v1::FeedInfo info = feeds->List().feeds(0);
  EXPECT_EQ(info.version(), 0u);
  EXPECT_FALSE(info.has_last_success());
  EXPECT_THAT(info.last_error(), HasSubstr("304"));
  server.stop();
  thread.join();
}

// What a parse may hold is the feed's own cap (max_parsed_bytes): a feed configured with 1 MiB
// refuses, whole, a version that a feed with the default (256 MiB) takes, and keeps the one it
// has. 20,000 addresses are ~260 KB of text, ~1.4 MiB parsed (72 bytes an indicator).
TEST_F(FeedManagerTest, AFeedsMaxParsedBytesRefusesAVersionTheDefaultTakes) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/max_parsed_bytes.txt");
  auto write = [&path](const std::string& content) {
    std::ofstream out(path, std::ios::trunc);
    out << content;
  };
  write(Hosts(0, 100));
  FeedConfig small = Plain("small");
  small.set_url("file://" + path);
  small.set_max_parsed_bytes(uint64_t{1} << 20);
  FeedConfig standard = Plain("standard");
  standard.set_url("file://" + path);
  auto feeds = Make({small, standard});
  ASSERT_THAT(feeds->FetchNow("small"), IsOk());

  write(Hosts(0, 20000));
  EXPECT_THAT(feeds->FetchNow("small").status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("feed \"small\""), HasSubstr("1048576 bytes (max_parsed_bytes)"),
                             HasSubstr("at line "))));
  EXPECT_THAT(feeds->Version("small"), IsOkAndHolds(1u));
  EXPECT_TRUE(feeds->registry().Contains("small", Ip("198.18.0.99")));
  EXPECT_FALSE(feeds->registry().Contains("small", Ip("198.18.78.0")));
  EXPECT_THAT(feeds->List().feeds(0).last_error(), HasSubstr("max_parsed_bytes"));
  EXPECT_EQ(Errors("small", "max_parsed_bytes"), 1);
  EXPECT_EQ(Errors("small", "fetch"), 0);

  absl::StatusOr<PushFeedResponse> taken = feeds->FetchNow("standard");
  ASSERT_THAT(taken, IsOk());
  EXPECT_EQ(taken->accepted(), 20000u);
  EXPECT_TRUE(feeds->registry().Contains("standard", Ip("198.18.78.0")));
}

// A 304 says the version held is still the feed's: its entries are listed by it now, so those
// without their own valid_until expire entry_ttl after this pull. A 304 renewed nothing: the
// feed emptied entry_ttl after its last 200 (the edge withdrew it) and, the server answering
// 304 to the same ETag ever after, stayed empty, across restarts too.
TEST_F(FeedManagerTest, APullAnsweredNotModifiedKeepsTheEntriesListed) {
  FeedServer server;
  server.Serve("198.51.100.7\n");
  FeedConfig c = Plain("pulled", true);
  c.set_url(server.url());
  c.mutable_interval()->set_seconds(3600);
  c.mutable_entry_ttl()->set_seconds(2 * 3600);
  const std::string path = absl::StrCat(::testing::TempDir(), "/not_modified.db");
  std::remove(path.c_str());
  DecisionTable table(clock_);
  DecisionFilter active;
  active.active_only = true;
  active.origin = palisade::v1::ORIGIN_FEED;
  auto removed = [](prometheus::Registry& metrics) {
    return ::palisade::testing::CounterSum(metrics, "palisade_feed_edge_changes_total",
                                           {{"change", "removed"}});
  };
  std::string id;
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    auto feeds = Make({c}, &table, store->get());
    ASSERT_THAT(feeds->FetchNow("pulled"), IsOk());
    ASSERT_THAT(table.List(active), SizeIs(1));
    id = table.List(active)[0].id();
    for (int hour = 1; hour <= 3; ++hour) {
      SCOPED_TRACE(absl::StrCat("hour ", hour));
      clock_.Advance(absl::Hours(1));
      feeds->Tick();
      table.ExpireDue();
      EXPECT_EQ(server.last_if_none_match(), "\"v1\"");  // answered 304
      EXPECT_TRUE(feeds->registry().Contains("pulled", Ip("198.51.100.7")));
      std::vector<Decision> listed = table.List(active);
      ASSERT_THAT(listed, SizeIs(1));
      EXPECT_EQ(listed[0].id(), id);  // the same decision, never withdrawn
    }
    EXPECT_EQ(removed(metrics_), 0);
  }
  // A restart resumes with the renewed entries; its first pull asks for the whole content (the
  // stored version does not say which entries had a valid_until of their own), and the 304s
  // after it renew them again.
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  prometheus::Registry restarted_metrics;
  FeedManagerOptions options;
  options.feeds = {c};
  FeedManager feeds(options, clock_, restarted_metrics, &table, store->get());
  ASSERT_THAT(feeds.Restore(), IsOk());
  feeds.Tick();
  EXPECT_EQ(server.last_if_none_match(), "");
  for (int hour = 1; hour <= 3; ++hour) {
    SCOPED_TRACE(absl::StrCat("hour ", hour, " after the restart"));
    clock_.Advance(absl::Hours(1));
    feeds.Tick();
    table.ExpireDue();
    EXPECT_EQ(server.last_if_none_match(), "\"v1\"");
    EXPECT_TRUE(feeds.registry().Contains("pulled", Ip("198.51.100.7")));
    std::vector<Decision> listed = table.List(active);
    ASSERT_THAT(listed, SizeIs(1));
    EXPECT_EQ(listed[0].id(), id);
  }
  EXPECT_EQ(removed(restarted_metrics), 0);
}

// A 304 renews only the entries that expire by the feed's entry_ttl: one with its own
// valid_until (STIX) keeps it and leaves at it. When entries leave a pulled feed, the next pull
// asks for the whole content: the server's "not modified" would otherwise keep a version that
// no longer holds what the server's does.
TEST_F(FeedManagerTest, NotModifiedRenewsOnlyEntriesWithoutTheirOwnValidUntil) {
  const absl::Time start = clock_.TimeNow();
  const std::string valid_until = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ",
                                                   start + absl::Minutes(90), absl::UTCTimeZone());
  FeedServer server;
  server.Serve(absl::StrCat(
      R"({"type": "bundle", "id": "bundle--1", "objects": [)",
      R"({"type": "indicator", "id": "indicator--1", "pattern_type": "stix",)",
      R"( "pattern": "[ipv4-addr:value = '198.51.100.1']", "valid_until": ")", valid_until,
      R"("}, {"type": "indicator", "id": "indicator--2", "pattern_type": "stix",)",
      R"( "pattern": "[ipv4-addr:value = '198.51.100.2']"}]})"));
  FeedConfig c = Plain("stix");
  c.set_format(palisade::v1::FEED_FORMAT_STIX);
  c.set_url(server.url());
  c.mutable_interval()->set_seconds(3600);
  c.mutable_entry_ttl()->set_seconds(2 * 3600);
  auto feeds = Make({c});
  ASSERT_THAT(feeds->FetchNow("stix"), IsOk());
  auto expiry = [&feeds](const std::string& ip) -> absl::Time {
    palisade::v1::GetFeedRequest get;
    get.set_name("stix");
    get.set_lookup(ip);
    absl::StatusOr<palisade::v1::GetFeedResponse> got = feeds->Get(get);
    if (!got.ok() || got->entries_size() != 1) return absl::InfinitePast();
    return FromProtoTime(got->entries(0).expiry());
  };
  EXPECT_EQ(expiry("198.51.100.1"), start + absl::Minutes(90));
  EXPECT_EQ(expiry("198.51.100.2"), start + absl::Hours(2));

  clock_.Advance(absl::Hours(1));
  feeds->Tick();
  EXPECT_EQ(server.last_if_none_match(), "\"v1\"");  // answered 304
  EXPECT_EQ(expiry("198.51.100.1"), start + absl::Minutes(90));
  EXPECT_EQ(expiry("198.51.100.2"), start + absl::Hours(3));

  // 198.51.100.1 reaches its valid_until and leaves: the pull that follows is unconditional
  // (the feed's content, read again, no longer gives it: it has expired).
  clock_.Advance(absl::Hours(1));
  feeds->Tick();
  EXPECT_EQ(server.last_if_none_match(), "");
  EXPECT_FALSE(feeds->registry().Contains("stix", Ip("198.51.100.1")));
  EXPECT_TRUE(feeds->registry().Contains("stix", Ip("198.51.100.2")));
  EXPECT_EQ(expiry("198.51.100.2"), start + absl::Hours(4));
}

// Stop used to wait for every due pull in turn, each up to its whole timeout: a SIGTERM during
// pulls outlived systemd's stop timeout, and a cluster node stepping down held its tick thread.
// Stop cancels the pull in flight and the due ones not begun are not started. Whether Stop
// returns before the server answers is checked with a wide margin (a minute), not a timing.
TEST_F(FeedManagerTest, StopCancelsThePullInFlightAndStartsNoOther) {
  httplib::Server server;
  absl::Notification first_request, release;
  std::atomic<int> requests{0};
  server.Get("/feed.txt", [&](const httplib::Request&, httplib::Response& res) {
    if (requests.fetch_add(1) == 0) first_request.Notify();
    release.WaitForNotification();
    res.set_content("198.51.100.1\n", "text/plain");
  });
  const int port = server.bind_to_any_port("127.0.0.1");
  std::thread thread([&server] { server.listen_after_bind(); });
  // "a" (pulled first) waits on the server; "b" is a file, read at once were it begun.
  FeedConfig a = Plain("a");
  a.set_url(absl::StrCat("http://127.0.0.1:", port, "/feed.txt"));
  a.mutable_timeout()->set_seconds(600);
  const std::string path = absl::StrCat(::testing::TempDir(), "/stop_b.txt");
  {
    std::ofstream out(path, std::ios::trunc);
    out << "198.51.100.2\n";
  }
  FeedConfig b = Plain("b");
  b.set_url("file://" + path);
  auto feeds = Make({a, b});
  feeds->Start();
  // Not ASSERT: the server and its thread must be stopped whatever happens.
  EXPECT_TRUE(first_request.WaitForNotificationWithTimeout(absl::Minutes(1)));
  absl::Notification stopped;
  std::thread stopper([&] {
    feeds->Stop();
    stopped.Notify();
  });
  const bool stopped_before_the_answer = stopped.WaitForNotificationWithTimeout(absl::Minutes(1));
  release.Notify();
  stopper.join();
  server.stop();
  thread.join();
  EXPECT_TRUE(stopped_before_the_answer);
  EXPECT_EQ(requests.load(), 1);
  EXPECT_THAT(feeds->Version("a"), IsOkAndHolds(0u));
  EXPECT_THAT(feeds->Version("b"), IsOkAndHolds(0u));  // never begun
  // A cancelled pull is not the feed's failure: no error is recorded nor counted.
  palisade::v1::ListFeedsResponse list = feeds->List();
  ASSERT_EQ(list.feeds_size(), 2);
  EXPECT_EQ(list.feeds(0).last_error(), "");
  EXPECT_EQ(Errors("a", "fetch"), 0);
}

// The edge union merged adjacent ranges with no floor: a feed listing the 16 /12s of 8.0.0.0/8
// reached the edge as 8.0.0.0/8, wider than the feed may list; two /8s became a /7, which the IP
// list refuses (items are /8 or longer), so neither was enforced.
TEST_F(FeedManagerTest, TheEdgeUnionIsNeverWiderThanTheFeedsMayList) {
  DecisionFilter active;
  active.active_only = true;
  active.origin = palisade::v1::ORIGIN_FEED;
  auto targets = [&active](DecisionTable& table) {
    std::vector<std::string> out;
    for (const Decision& d : table.List(active)) out.push_back(d.target().value());
    std::sort(out.begin(), out.end());
    return out;
  };
  {
    DecisionTable table(clock_);
    FeedConfig wide = Plain("wide", true);
    wide.set_min_prefix_v4(8);
    auto feeds = Make({wide}, &table);
    ASSERT_THAT(feeds->Push("wide", kReplace, {}, false, "2.0.0.0/8\n3.0.0.0/8\n"), IsOk());
    EXPECT_THAT(targets(table), ::testing::ElementsAre("2.0.0.0/8", "3.0.0.0/8"));
  }
  {
    DecisionTable table(clock_);
    auto feeds = Make({Plain("default", true)}, &table);
    std::string twelves;
    for (int i = 0; i < 16; ++i) absl::StrAppend(&twelves, "8.", 16 * i, ".0.0/12\n");
    ASSERT_THAT(feeds->Push("default", kReplace, {}, false, twelves), IsOk());
    std::vector<std::string> sent = targets(table);
    EXPECT_THAT(sent, SizeIs(16));
    for (const std::string& t : sent) {
      absl::StatusOr<Cidr> cidr = Cidr::Parse(t);
      ASSERT_THAT(cidr, IsOk());
      EXPECT_GE(cidr->prefix_length(), 12) << t;
    }
  }
}

// min_keep_ratio -1 turns the shrink guard off (0 is the default, 0.1, as an unset field).
TEST_F(FeedManagerTest, AMinKeepRatioOfMinusOneTurnsTheShrinkGuardOff) {
  FeedConfig off = Plain("off");
  off.set_min_keep_ratio(-1);
  FeedConfig zero = Plain("zero");
  zero.set_min_keep_ratio(0);
  auto feeds = Make({off, zero});
  for (const char* name : {"off", "zero"}) {
    ASSERT_THAT(feeds->Push(name, kReplace, {}, false, Hosts(0, 1000)), IsOk());
  }
  absl::StatusOr<PushFeedResponse> r = feeds->Push("off", kReplace, {}, false, Hosts(0, 1));
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->held());
  EXPECT_EQ(r->removed(), 999u);
  r = feeds->Push("zero", kReplace, {}, false, Hosts(0, 1));
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
}

// Each distinct expiry second made a version of its own (stored whole and, in a cluster,
// published): a feed whose entries end a second apart made one a second. Expired entries leave
// on a one-minute grid: at most a minute past their expiry, in one version.
TEST_F(FeedManagerTest, EntriesExpiringSecondsApartLeaveInOneVersion) {
  const absl::Time start = clock_.TimeNow();  // on a whole minute
  std::string objects;
  for (int i = 0; i < 10; ++i) {
    absl::StrAppend(&objects, i == 0 ? "" : ", ", R"({"type": "indicator", "id": "indicator--)",
                    i, R"(", "pattern_type": "stix", "pattern": "[ipv4-addr:value = '198.51.100.)",
                    i + 1, R"(']", "valid_until": ")",
                    absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", start + absl::Seconds(61 + i),
                                     absl::UTCTimeZone()),
                    R"("})");
  }
  auto feeds = Make({Plain("stix")});
  ASSERT_THAT(feeds->Push("stix", kReplace, palisade::v1::FEED_FORMAT_STIX, false,
                          absl::StrCat(R"({"type": "bundle", "id": "bundle--1", "objects": [)",
                                       objects, "]}")),
              IsOk());
  ASSERT_EQ(feeds->List().feeds(0).entries(), 10u);
  for (int second = 1; second <= 180; ++second) {
    clock_.Advance(absl::Seconds(1));
    feeds->Tick();
  }
  EXPECT_EQ(feeds->List().feeds(0).entries(), 0u);
  EXPECT_THAT(feeds->Version("stix"), IsOkAndHolds(2u));
}

TEST_F(FeedManagerTest, PullRefusesOversizedContentAndReadsFiles) {
  FeedServer server;
  server.Serve(Hosts(0, 5000));  // ~60 KB
  FeedConfig c = Plain("big");
  c.set_url(server.url());
  c.set_max_bytes(10000);
  const std::string path = absl::StrCat(::testing::TempDir(), "/list.netset");
  {
    std::ofstream out(path);
    out << "# firehol\n198.51.100.0/24\n";
  }
  FeedConfig f = Plain("file");
  f.set_format(palisade::v1::FEED_FORMAT_FIREHOL);
  f.set_url("file://" + path);
  auto feeds = Make({c, f});
  EXPECT_THAT(feeds->FetchNow("big").status(),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("cap of 10000 bytes")));
  ASSERT_THAT(feeds->FetchNow("file"), IsOk());
  EXPECT_TRUE(feeds->registry().Contains("file", Ip("198.51.100.200")));
}

// A gauge's value for one feed (-1: no such series).
double FeedGauge(prometheus::Registry& registry, const std::string& name, const std::string& feed) {
  for (const prometheus::MetricFamily& f : registry.Collect()) {
    if (f.name != name) continue;
    for (const prometheus::ClientMetric& m : f.metric) {
      for (const prometheus::ClientMetric::Label& l : m.label) {
        if (l.name == "feed" && l.value == feed) return m.gauge.value;
      }
    }
  }
  return -1;
}

// PalisadeFeedStale compares a feed's age to its pull interval, which no metric gave: the
// alert used a fixed 3 h, firing for healthy daily and pushed feeds, then also required a
// failing pull, missing a pull that stopped without an error. The interval is exported from
// the start, before any pull: a pulled feed's (its default 1 h when unset), 0 for a pushed one.
TEST_F(FeedManagerTest, EachFeedsPullIntervalIsExportedZeroForAPushedFeed) {
  FeedConfig daily = Plain("daily");
  daily.set_url("http://127.0.0.1:1/daily");
  daily.mutable_interval()->set_seconds(86400);
  FeedConfig hourly = Plain("hourly");
  hourly.set_url("http://127.0.0.1:1/hourly");
  auto feeds = Make({daily, hourly, Plain("pushed")});

  EXPECT_EQ(FeedGauge(metrics_, "palisade_feed_interval_seconds", "daily"), 86400);
  EXPECT_EQ(FeedGauge(metrics_, "palisade_feed_interval_seconds", "hourly"), 3600);
  EXPECT_EQ(FeedGauge(metrics_, "palisade_feed_interval_seconds", "pushed"), 0);
}


// Each ADD push was bounded by the feed's parse cap, but ADD keeps every entry the feed holds:
// an ingest client pushing fresh addresses again and again grew the feed (and the copy, store
// write and publication each push makes) without bound, until the daemon ran out of memory. A
// push whose resulting set would pass the feed's max_parsed_bytes is refused whole, naming the
// feed and the sizes; entries already held count once (adding them again renews them).
TEST_F(FeedManagerTest, RepeatedAddPushesCannotGrowAFeedPastItsParseCap) {
  FeedConfig c = Plain("ingest");
  c.set_max_parsed_bytes(uint64_t{1} << 20);  // ~14,500 bare addresses
  auto feeds = Make({c});
  constexpr auto kAdd = palisade::v1::FEED_PUSH_MODE_ADD;
  ASSERT_THAT(feeds->Push("ingest", kAdd, {}, false, Hosts(0, 10000)), IsOk());
  ASSERT_THAT(feeds->Version("ingest"), IsOkAndHolds(1u));

  EXPECT_THAT(feeds->Push("ingest", kAdd, {}, false, Hosts(10000, 20000)).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("feed \"ingest\""), HasSubstr("10000 entries held"),
                             HasSubstr("10000 new"),
                             HasSubstr("1048576 bytes (max_parsed_bytes)"))));
  EXPECT_THAT(feeds->Version("ingest"), IsOkAndHolds(1u));
  EXPECT_FALSE(feeds->registry().Contains("ingest", Ip("198.18.39.16")));  // the 10,000th
  EXPECT_EQ(feeds->List().feeds(0).entries(), 10000u);
  EXPECT_THAT(feeds->List().feeds(0).last_error(), HasSubstr("max_parsed_bytes"));
  EXPECT_EQ(Errors("ingest", "max_parsed_bytes"), 1);

  // What the feed holds already is no growth: pushed again, it is renewed, and the room left
  // still takes new addresses.
  ASSERT_THAT(feeds->Push("ingest", kAdd, {}, false, Hosts(0, 10000)), IsOk());
  absl::StatusOr<PushFeedResponse> r = feeds->Push("ingest", kAdd, {}, false, Hosts(5000, 12000));
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->added(), 2000u);
  EXPECT_THAT(feeds->Version("ingest"), IsOkAndHolds(3u));
  EXPECT_EQ(feeds->List().feeds(0).last_error(), "");
  // A whole version is bounded by its parse alone, as before.
  ASSERT_THAT(feeds->Push("ingest", kReplace, {}, false, Hosts(12000, 24000)), IsOk());
  EXPECT_EQ(feeds->List().feeds(0).entries(), 12000u);
}

// The never-ban filter ran on a push's list before its mode: a REMOVE of an entry that came to
// touch the never-ban set (an allowlist reloaded after the entry was added) dropped it from the
// list of what to remove, so the entry could not be taken out of the feed (it matched in_feed
// conditions until a whole version left it out). REMOVE takes out whatever it lists.
TEST_F(FeedManagerTest, ARemovePushRemovesAnEntryNowInTheNeverBanSet) {
  auto feeds = Make({Plain("f")});
  ASSERT_THAT(feeds->Push("f", kReplace, {}, false, "198.51.100.9\n198.51.100.10\n"), IsOk());
  feeds->SetNeverBan(*CidrSet::Parse({"192.0.2.0/24", "198.51.100.9"}));
  absl::StatusOr<PushFeedResponse> r =
      feeds->Push("f", palisade::v1::FEED_PUSH_MODE_REMOVE, {}, false, "198.51.100.9\n");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->removed(), 1u);
  EXPECT_EQ(r->never_ban(), 0u);
  EXPECT_FALSE(feeds->registry().Contains("f", Ip("198.51.100.9")));
  EXPECT_TRUE(feeds->registry().Contains("f", Ip("198.51.100.10")));
}

// A delta push overwrote the feed's rejected and never_ban counts (Feeds.List) with its own: an
// ADD of one clean line zeroed what the whole version had dropped. They count what was dropped
// since the last whole version: a whole version sets them, an ADD or REMOVE adds its own.
TEST_F(FeedManagerTest, DeltaPushesAddToTheFeedsDroppedCounts) {
  auto feeds = Make({Plain("f")});
  ASSERT_THAT(feeds->Push("f", kReplace, {}, false, "nonsense\n192.0.2.5\n198.51.100.1\n"),
              IsOk());
  EXPECT_EQ(feeds->List().feeds(0).rejected(), 1u);
  EXPECT_EQ(feeds->List().feeds(0).never_ban(), 1u);
  ASSERT_THAT(feeds->Push("f", palisade::v1::FEED_PUSH_MODE_ADD, {}, false, "junk\n198.51.100.2\n"),
              IsOk());
  EXPECT_EQ(feeds->List().feeds(0).rejected(), 2u);
  EXPECT_EQ(feeds->List().feeds(0).never_ban(), 1u);
  ASSERT_THAT(feeds->Push("f", palisade::v1::FEED_PUSH_MODE_ADD, {}, false, "192.0.2.6\n"),
              IsOk());
  EXPECT_EQ(feeds->List().feeds(0).rejected(), 2u);
  EXPECT_EQ(feeds->List().feeds(0).never_ban(), 2u);
  ASSERT_THAT(feeds->Push("f", kReplace, {}, false, "198.51.100.1\n"), IsOk());
  EXPECT_EQ(feeds->List().feeds(0).rejected(), 0u);
  EXPECT_EQ(feeds->List().feeds(0).never_ban(), 0u);
}

// Every 304 made a new version (each entry's last_seen moved to the pull's time): a big feed
// pulled every minute was copied, stored whole and (in a cluster) published each minute. A 304
// makes a version only when it moves the entries' expiry by a step (here an hour, an eighth of
// the ttl); the entries still never expire while the server keeps answering 304.
TEST_F(FeedManagerTest, NotModifiedMakesAVersionOnlyWhenTheRenewalMovesTheExpiryByAStep) {
  FeedServer server;
  server.Serve("198.51.100.7\n198.51.100.8\n");
  FeedConfig c = Plain("pulled");
  c.set_url(server.url());
  c.mutable_interval()->set_seconds(60);
  c.mutable_entry_ttl()->set_seconds(8 * 3600);
  auto feeds = Make({c});
  ASSERT_THAT(feeds->FetchNow("pulled"), IsOk());
  ASSERT_THAT(feeds->Version("pulled"), IsOkAndHolds(1u));

  clock_.Advance(absl::Seconds(60));
  feeds->Tick();
  EXPECT_EQ(server.last_if_none_match(), "\"v1\"");  // answered 304
  EXPECT_THAT(feeds->Version("pulled"), IsOkAndHolds(1u));

  // Five hours of 304s, a pull a minute: the entries stay, renewed about once an hour.
  for (int minute = 2; minute <= 300; ++minute) {
    clock_.Advance(absl::Seconds(60));
    feeds->Tick();
    ASSERT_EQ(server.last_if_none_match(), "\"v1\"") << "minute " << minute;
    ASSERT_TRUE(feeds->registry().Contains("pulled", Ip("198.51.100.7"))) << "minute " << minute;
    ASSERT_TRUE(feeds->registry().Contains("pulled", Ip("198.51.100.8"))) << "minute " << minute;
  }
  absl::StatusOr<uint64_t> version = feeds->Version("pulled");
  ASSERT_THAT(version, IsOk());
  EXPECT_GE(*version, 5u);
  EXPECT_LE(*version, 7u);
  palisade::v1::GetFeedRequest get;
  get.set_name("pulled");
  get.set_lookup("198.51.100.7");
  absl::StatusOr<palisade::v1::GetFeedResponse> got = feeds->Get(get);
  ASSERT_THAT(got, IsOk());
  ASSERT_THAT(got->entries(), SizeIs(1));
  // Renewed at most a step ago: more than entry_ttl less the step left.
  EXPECT_GT(FromProtoTime(got->entries(0).expiry()), clock_.TimeNow() + absl::Hours(7));
  EXPECT_EQ(got->entries(0).expiry().seconds() - got->entries(0).last_seen().seconds(), 8 * 3600);
}

// The step is less than an hour when entry_ttl leaves no room for it: an entry not renewed by a
// 304 must outlive the next pull. With an hour's ttl and a step of an hour, the entries lapsed
// at each hour's sweep, and the pull after it asked for the whole content.
TEST_F(FeedManagerTest, NotModifiedRenewsBeforeAShortTtlLapses) {
  FeedServer server;
  server.Serve("198.51.100.7\n");
  FeedConfig c = Plain("pulled");
  c.set_url(server.url());
  c.mutable_interval()->set_seconds(60);
  c.mutable_entry_ttl()->set_seconds(3600);
  auto feeds = Make({c});
  ASSERT_THAT(feeds->FetchNow("pulled"), IsOk());
  for (int minute = 1; minute <= 180; ++minute) {
    clock_.Advance(absl::Seconds(60));
    feeds->Tick();
    ASSERT_EQ(server.last_if_none_match(), "\"v1\"") << "minute " << minute;
    ASSERT_TRUE(feeds->registry().Contains("pulled", Ip("198.51.100.7"))) << "minute " << minute;
  }
  // Renewed about every 7.5 minutes (the step: an eighth of the ttl), every 8th pull.
  absl::StatusOr<uint64_t> version = feeds->Version("pulled");
  ASSERT_THAT(version, IsOk());
  EXPECT_GE(*version, 21u);
  EXPECT_LE(*version, 25u);
}


// An ADD that only renewed entries was refused once the feed held more than its
// max_parsed_bytes (the check compared the whole feed with the budget even when the push added
// nothing): after a restart with a lowered max_parsed_bytes, the client's re-pushes keeping its
// entries alive were refused and the entries lapsed. Only a push that grows the feed is refused.
TEST_F(FeedManagerTest, AnAddThatOnlyRenewsEntriesIsTakenOverALoweredParseCap) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/lowered_parse_cap.db");
  std::remove(path.c_str());
  constexpr auto kAdd = palisade::v1::FEED_PUSH_MODE_ADD;
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    auto feeds = Make({Plain("ingest")}, nullptr, store->get());
    ASSERT_THAT(feeds->Push("ingest", kAdd, {}, false, Hosts(0, 20000)), IsOk());  // ~1.4 MB
  }
  FeedConfig c = Plain("ingest");
  c.set_max_parsed_bytes(uint64_t{1} << 20);
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  auto feeds = Make({c}, nullptr, store->get());
  ASSERT_THAT(feeds->Restore(), IsOk());
  ASSERT_EQ(feeds->List().feeds(0).entries(), 20000u);

  clock_.Advance(absl::Hours(24));
  absl::StatusOr<PushFeedResponse> r = feeds->Push("ingest", kAdd, {}, false, Hosts(0, 5000));
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->added(), 0u);
  EXPECT_EQ(feeds->List().feeds(0).last_error(), "");
  palisade::v1::GetFeedRequest get;
  get.set_name("ingest");
  get.set_lookup("198.18.0.1");
  absl::StatusOr<palisade::v1::GetFeedResponse> got = feeds->Get(get);
  ASSERT_THAT(got, IsOk());
  ASSERT_THAT(got->entries(), SizeIs(1));
  EXPECT_EQ(FromProtoTime(got->entries(0).expiry()), clock_.TimeNow() + absl::Hours(24 * 7));
  // What grows it is still refused; what shrinks it is taken.
  EXPECT_THAT(feeds->Push("ingest", kAdd, {}, false, Hosts(20000, 20001)).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("max_parsed_bytes")));
  ASSERT_THAT(feeds->Push("ingest", palisade::v1::FEED_PUSH_MODE_REMOVE, {}, false,
                          Hosts(19000, 20000)),
              IsOk());
  EXPECT_EQ(feeds->List().feeds(0).entries(), 19000u);
}

// 198.18.x.y lines in the Spamhaus format, each with a reference of `ref_bytes` bytes.
std::string HostsWithRefs(int from, int to, size_t ref_bytes) {
  std::string out;
  const std::string ref(ref_bytes, 'r');
  for (int i = from; i < to; ++i) {
    absl::StrAppend(&out, "198.18.", i / 256, ".", i % 256, " ; ", ref, "\n");
  }
  return out;
}

// An ADD charged only the entries not held yet: re-adding held addresses with 256-byte
// references (which the merge could keep) grew the feed ~4.8x past its max_parsed_bytes,
// unbounded by the check. A held entry's new reference replaces its own, and the feed as built
// is what is charged: a push that leaves it past the budget and larger than before is refused.
TEST_F(FeedManagerTest, LongerReferencesOnHeldEntriesCountAgainstTheAddBudget) {
  FeedConfig c = Plain("ingest");
  c.set_max_parsed_bytes(uint64_t{1} << 20);
  auto feeds = Make({c});
  constexpr auto kAdd = palisade::v1::FEED_PUSH_MODE_ADD;
  constexpr auto kSpamhaus = palisade::v1::FEED_FORMAT_SPAMHAUS;
  ASSERT_THAT(feeds->Push("ingest", kReplace, {}, false, Hosts(0, 10000)), IsOk());  // 720 KB

  // 2,000 of them with 256-byte references: ~550 KB more.
  EXPECT_THAT(feeds->Push("ingest", kAdd, kSpamhaus, false, HostsWithRefs(0, 2000, 256)).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("0 new entries"), HasSubstr("longer references"),
                             HasSubstr("1048576 bytes (max_parsed_bytes)"))));
  EXPECT_THAT(feeds->Version("ingest"), IsOkAndHolds(1u));
  EXPECT_EQ(Errors("ingest", "max_parsed_bytes"), 1);

  // What fits is taken, and the entries carry the references pushed.
  ASSERT_THAT(feeds->Push("ingest", kAdd, kSpamhaus, false, HostsWithRefs(0, 500, 256)), IsOk());
  palisade::v1::GetFeedRequest get;
  get.set_name("ingest");
  get.set_lookup("198.18.0.1");
  absl::StatusOr<palisade::v1::GetFeedResponse> got = feeds->Get(get);
  ASSERT_THAT(got, IsOk());
  ASSERT_THAT(got->entries(), SizeIs(1));
  EXPECT_EQ(got->entries(0).ref(), std::string(256, 'r'));
  // Pushed again and again, references never take the feed past the budget: at most ~1,200
  // entries can carry one.
  int taken = 0;
  for (int from = 0; from < 10000; from += 500) {
    if (feeds->Push("ingest", kAdd, kSpamhaus, false, HostsWithRefs(from, from + 500, 256)).ok()) {
      ++taken;
    }
  }
  EXPECT_LE(taken, 2);
  EXPECT_GE(taken, 1);
  // A plain ADD (no reference) renews an entry and keeps the reference it has.
  ASSERT_THAT(feeds->Push("ingest", kAdd, {}, false, "198.18.0.1\n"), IsOk());
  got = feeds->Get(get);
  ASSERT_THAT(got, IsOk());
  ASSERT_THAT(got->entries(), SizeIs(1));
  EXPECT_EQ(got->entries(0).ref(), std::string(256, 'r'));
}

// A REMOVE was parsed as a version is: a CSV line below the feed's min_confidence, or a STIX
// indicator withdrawn with valid_until now ("expired"), was rejected, so the entry it named
// stayed in the feed. What a REMOVE lists is only what to take out.
TEST_F(FeedManagerTest, ARemoveTakesOutWhatAVersionWouldRejectAsLowConfidenceOrExpired) {
  constexpr auto kRemove = palisade::v1::FEED_PUSH_MODE_REMOVE;
  FeedConfig csv = Plain("csv");
  csv.set_format(palisade::v1::FEED_FORMAT_CSV);
  csv.set_csv_confidence_column("score");
  csv.set_min_confidence(50);
  auto feeds = Make({csv, Plain("stix")});
  ASSERT_THAT(
      feeds->Push("csv", kReplace, {}, false, "ip,score\n198.51.100.1,90\n198.51.100.2,90\n"),
      IsOk());
  absl::StatusOr<PushFeedResponse> r =
      feeds->Push("csv", kRemove, {}, false, "ip,score\n198.51.100.1,10\n");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->rejected(), 0u);
  EXPECT_EQ(r->removed(), 1u);
  EXPECT_FALSE(feeds->registry().Contains("csv", Ip("198.51.100.1")));
  EXPECT_TRUE(feeds->registry().Contains("csv", Ip("198.51.100.2")));

  auto bundle = [](const std::string& extra) {
    return absl::StrCat(R"({"type": "bundle", "id": "bundle--1", "objects": [)",
                        R"({"type": "indicator", "id": "indicator--1", "pattern_type": "stix",)",
                        R"( "pattern": "[ipv4-addr:value = '198.51.100.7']")", extra, "}]}");
  };
  constexpr auto kStix = palisade::v1::FEED_FORMAT_STIX;
  ASSERT_THAT(feeds->Push("stix", kReplace, kStix, false, bundle("")), IsOk());
  ASSERT_THAT(feeds->Push("stix", palisade::v1::FEED_PUSH_MODE_ADD, {}, false, "198.51.100.8\n"),
              IsOk());  // not the feed's only entry: the shrink guard lets it go
  ASSERT_TRUE(feeds->registry().Contains("stix", Ip("198.51.100.7")));
  const std::string now =
      absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", clock_.TimeNow(), absl::UTCTimeZone());
  r = feeds->Push("stix", kRemove, kStix, false,
                  bundle(absl::StrCat(R"(, "valid_until": ")", now, R"(")")));
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->rejected(), 0u);
  EXPECT_EQ(r->removed(), 1u);
  EXPECT_FALSE(r->held());
  EXPECT_FALSE(feeds->registry().Contains("stix", Ip("198.51.100.7")));
}

// The 304 renewal step could be most of a short entry_ttl (up to (ttl - interval) / 2): when
// the last 304 before an outage did not renew, the entries had only ttl less the step to live,
// barely over half the ttl. The step is at most an eighth of the ttl: an outage starting at any
// pull leaves the entries at least 7/8 of their ttl.
TEST_F(FeedManagerTest, AnOutageAfterA304LeavesTheEntriesSevenEighthsOfTheirTtl) {
  FeedServer server;
  server.Serve("198.51.100.7\n");
  FeedConfig c = Plain("pulled");
  c.set_url(server.url());
  c.mutable_interval()->set_seconds(60);
  c.mutable_entry_ttl()->set_seconds(2 * 3600);
  auto feeds = Make({c});
  ASSERT_THAT(feeds->FetchNow("pulled"), IsOk());
  // 304s a minute apart until the first renewal, then 50 minutes more of them.
  int minute = 0;
  for (; minute < 180 && *feeds->Version("pulled") == 1u; ++minute) {
    clock_.Advance(absl::Seconds(60));
    feeds->Tick();
  }
  ASSERT_THAT(feeds->Version("pulled"), IsOkAndHolds(2u));
  for (int i = 0; i < 50; ++i) {
    clock_.Advance(absl::Seconds(60));
    feeds->Tick();
    ASSERT_EQ(server.last_if_none_match(), "\"v1\"");
  }
  // The outage: the entry outlives 7/8 of its ttl past the last pull answered.
  server.Fail(503);
  const absl::Time last_answer = clock_.TimeNow();
  while (clock_.TimeNow() < last_answer + absl::Minutes(105)) {
    clock_.Advance(absl::Seconds(60));
    feeds->Tick();
    ASSERT_TRUE(feeds->registry().Contains("pulled", Ip("198.51.100.7")))
        << absl::FormatDuration(clock_.TimeNow() - last_answer) << " into the outage";
  }
}

// `n` public IPv4 /12s, from 44.0.0.0/12 on (16 per /8).
std::string Twelves(int n) {
  std::string out;
  for (int i = 0; i < n; ++i) absl::StrAppend(&out, 44 + i / 16, ".", 16 * (i % 16), ".0.0/12\n");
  return out;
}

// Nothing bounded how much address space a version could cover: the shrink guard looks only at
// shrinking, and edge_max_entries counts ranges. A compromised (or, over http://, intercepted)
// to_edge feed swapping its 1,000 addresses for 1,000 /12s put a billion addresses in front of
// the sites past every guard (here 100 addresses become 16 /12s). A version covering more than
// max_growth_ratio (10) times the current one's addresses in a family is held, as a shrinking
// one is.
TEST_F(FeedManagerTest, GrowthGuardHoldsAVersionCoveringTenTimesTheAddresses) {
  FeedServer server;
  server.Serve(Hosts(0, 100));
  DecisionTable table(clock_);
  FeedConfig c = Plain("pulled", /*to_edge=*/true);
  c.set_url(server.url());
  c.mutable_interval()->set_seconds(600);
  auto feeds = Make({c}, &table, nullptr, /*edge_max=*/2000);
  ASSERT_THAT(feeds->FetchNow("pulled"), IsOk());
  ASSERT_EQ(feeds->List().feeds(0).entries(), 100u);

  server.Serve(Twelves(16));  // 16.8 M addresses for 100
  absl::StatusOr<PushFeedResponse> r = feeds->FetchNow("pulled");
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
  EXPECT_THAT(r->held_reason(),
              AllOf(HasSubstr("16777216 IPv4 addresses"), HasSubstr("10 times the current 100 "),
                    HasSubstr("max_growth_ratio")));
  palisade::v1::FeedInfo info = feeds->List().feeds(0);
  EXPECT_TRUE(info.held());
  EXPECT_EQ(info.held_entries(), 16u);
  EXPECT_EQ(info.version(), 1u);
  EXPECT_EQ(Counter(metrics_, "palisade_feed_held_total"), 1);
  EXPECT_FALSE(feeds->registry().Contains("pulled", Ip("44.1.2.3")));
  EXPECT_TRUE(feeds->registry().Contains("pulled", Ip("198.18.0.99")));
  DecisionFilter active;
  active.active_only = true;
  active.origin = palisade::v1::ORIGIN_FEED;
  for (const Decision& d : table.List(active)) {
    EXPECT_EQ(d.target().value().rfind("198.18.", 0), 0u) << d.target().value();
  }
  // Held, the next pull gets the whole content again (the validators are the version's held)
  // and holds it again.
  clock_.Advance(absl::Seconds(600));
  feeds->Tick();
  EXPECT_EQ(server.last_if_none_match(), "\"v1\"");
  EXPECT_EQ(Counter(metrics_, "palisade_feed_held_total"), 2);
  EXPECT_EQ(feeds->List().feeds(0).version(), 1u);

  // Force applies it; within the ratio a version applies (65,536 -> 524,288 addresses).
  r = feeds->Push("pulled", kReplace, {}, true, "44.0.0.0/16\n");
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->held());
  r = feeds->Push("pulled", kReplace, {}, false, "44.0.0.0/13\n");
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->held());
  r = feeds->Push("pulled", kReplace, {}, true, Twelves(16));
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->held());
  EXPECT_TRUE(feeds->registry().Contains("pulled", Ip("44.1.2.3")));
  EXPECT_FALSE(feeds->List().feeds(0).held());
}

// A first version, and a version covering fewer than 65,536 addresses in a family, are not
// held; IPv6 counts /64 networks (a family not covered before is held past the floor); -1
// turns the guard off; an ADD is judged as the version it makes.
TEST_F(FeedManagerTest, GrowthGuardSparesFirstVersionsAndSmallFeeds) {
  FeedConfig off = Plain("off");
  off.set_max_growth_ratio(-1);
  auto feeds = Make({Plain("f"), Plain("v6"), off});
  ASSERT_THAT(feeds->Push("f", kReplace, {}, false, Twelves(16)), IsOk());  // a first version
  EXPECT_FALSE(feeds->List().feeds(0).held());
  ASSERT_THAT(feeds->Push("f", kReplace, {}, true, "198.18.0.1\n"), IsOk());
  // 1 -> 32,768 + 1 addresses: under the floor.
  absl::StatusOr<PushFeedResponse> r =
      feeds->Push("f", palisade::v1::FEED_PUSH_MODE_ADD, {}, false, "44.0.0.0/17\n");
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->held());
  // 32,769 -> 557,057: past 10x.
  r = feeds->Push("f", palisade::v1::FEED_PUSH_MODE_ADD, {}, false, "45.0.0.0/13\n");
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
  EXPECT_THAT(r->held_reason(), HasSubstr("557057 IPv4 addresses"));

  ASSERT_THAT(feeds->Push("v6", kReplace, {}, false, "2001:db8::1\n2001:db8:0:1::1\n"), IsOk());
  // Two /64s -> a /48 (65,536 of them).
  r = feeds->Push("v6", kReplace, {}, false, "2001:db8::1\n2001:db8:1::/48\n");
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
  EXPECT_THAT(r->held_reason(), HasSubstr("65537 IPv6 /64 networks"));
  // IPv4 not covered before: held past the floor.
  r = feeds->Push("v6", palisade::v1::FEED_PUSH_MODE_ADD, {}, false, "44.0.0.0/15\n");
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
  EXPECT_THAT(r->held_reason(), HasSubstr("131072 IPv4 addresses"));

  ASSERT_THAT(feeds->Push("off", kReplace, {}, false, "198.18.0.1\n"), IsOk());
  r = feeds->Push("off", kReplace, {}, false, Twelves(16));
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->held());
}

// The guards ran only while the feed held entries: while a version was held, each pull got it
// again (200, held again) and no 304 renewed the entries held, so after entry_ttl the sweep
// emptied the feed and the next pull applied the held version (16 /12s to the edge, no force).
// The guards compare an empty feed with its last non-empty version, stored with it: a restart
// after a long downtime (every entry expired) holds it too.
TEST_F(FeedManagerTest, AHeldVersionStaysHeldOnceTheCurrentEntriesExpire) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/held_past_ttl.db");
  std::remove(path.c_str());
  FeedServer grows, shrinks;
  grows.Serve(Hosts(0, 100));
  shrinks.Serve(Hosts(0, 100));
  auto pulled = [](const std::string& name, const std::string& url) {
    FeedConfig c = Plain(name);
    c.set_url(url);
    c.mutable_interval()->set_seconds(600);
    c.mutable_entry_ttl()->set_seconds(2 * 3600);
    return c;
  };
  const std::vector<FeedConfig> configs = {pulled("grows", grows.url()),
                                           pulled("shrinks", shrinks.url())};
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    auto feeds = Make(configs, nullptr, store->get());
    ASSERT_THAT(feeds->FetchNow("grows"), IsOk());
    ASSERT_THAT(feeds->FetchNow("shrinks"), IsOk());
    grows.Serve(Twelves(16));
    shrinks.Serve(Hosts(0, 5));
    for (int i = 0; i < 3 * 6; ++i) {  // 3 hours of pulls, 10 minutes apart
      clock_.Advance(absl::Seconds(600));
      feeds->Tick();
    }
    const palisade::v1::ListFeedsResponse list = feeds->List();
    ASSERT_THAT(list.feeds(), SizeIs(2));
    for (const palisade::v1::FeedInfo& info : list.feeds()) {
      EXPECT_EQ(info.entries(), 0u) << info.name();  // the held-back version's entries expired
      EXPECT_TRUE(info.held()) << info.name();
    }
    EXPECT_FALSE(feeds->registry().Contains("grows", Ip("44.1.2.3")));
    EXPECT_FALSE(feeds->registry().Contains("shrinks", Ip("198.18.0.1")));
  }
  clock_.Advance(absl::Hours(24 * 30));
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  auto feeds = Make(configs, nullptr, store->get());
  ASSERT_THAT(feeds->Restore(), IsOk());
  absl::StatusOr<PushFeedResponse> r = feeds->FetchNow("grows");
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
  EXPECT_THAT(r->held_reason(), HasSubstr("16777216 IPv4 addresses"));
  EXPECT_FALSE(feeds->registry().Contains("grows", Ip("44.1.2.3")));
  r = feeds->FetchNow("shrinks");
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
  // Force applies it, and what was forced is the next baseline.
  ASSERT_THAT(feeds->Push("grows", kReplace, {}, true, Twelves(16)), IsOk());
  EXPECT_TRUE(feeds->registry().Contains("grows", Ip("44.1.2.3")));
  r = feeds->Push("grows", kReplace, {}, false, Twelves(20));
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->held());
}

// A delta shrinks nothing: an ADD to a pushed feed whose entries all expired is not judged
// against the entries it had (the growth guard still judges what it covers).
TEST_F(FeedManagerTest, AnAddToAFeedWhoseEntriesExpiredIsNoShrink) {
  FeedConfig c = Plain("pushed");
  c.mutable_entry_ttl()->set_seconds(3600);
  auto feeds = Make({c});
  ASSERT_THAT(feeds->Push("pushed", kReplace, {}, false, Hosts(0, 100)), IsOk());
  clock_.Advance(absl::Hours(2));
  feeds->Tick();
  ASSERT_EQ(feeds->List().feeds(0).entries(), 0u);
  absl::StatusOr<PushFeedResponse> r =
      feeds->Push("pushed", palisade::v1::FEED_PUSH_MODE_ADD, {}, false, "198.51.100.7\n");
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->held());
  r = feeds->Push("pushed", palisade::v1::FEED_PUSH_MODE_ADD, {}, false, Twelves(1));
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
}

// `n` public IPv4 /16s, from 60.0.0.0/16 on.
std::string Sixteens(int n) {
  std::string out;
  for (int i = 0; i < n; ++i) absl::StrAppend(&out, 60 + i / 256, ".", i % 256, ".0.0/16\n");
  return out;
}

// Each version was judged against the one before it only: growing just under 10x per version
// took 100 addresses to 930 M in seven pulls. Growth is judged against the least the feed
// covered within the last 24 h: a day's growth is bounded by max_growth_ratio.
TEST_F(FeedManagerTest, GrowthGuardBoundsADaysGrowth) {
  auto feeds = Make({Plain("f")});
  ASSERT_THAT(feeds->Push("f", kReplace, {}, false, Sixteens(1)), IsOk());
  clock_.Advance(absl::Hours(2));
  absl::StatusOr<PushFeedResponse> r = feeds->Push("f", kReplace, {}, false, Sixteens(9));
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->held());
  clock_.Advance(absl::Hours(2));
  r = feeds->Push("f", kReplace, {}, false, Sixteens(81));  // 9x the current, 81x the day's least
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
  EXPECT_THAT(r->held_reason(), AllOf(HasSubstr("5308416 IPv4 addresses"),
                                      HasSubstr("65536"), HasSubstr("24 h")));
  clock_.Advance(absl::Hours(20));
  // 24 h on: the 1 /16 replaced at +2 h is 22 h old, still the day's least.
  r = feeds->Push("f", kReplace, {}, false, Sixteens(81));
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
  clock_.Advance(absl::Hours(2));  // it is a day old: the least is the current 9 /16s
  r = feeds->Push("f", kReplace, {}, false, Sixteens(81));
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->held());
  EXPECT_EQ(*feeds->Version("f"), 3u);
}

// An ADD renewing an entry took the pushed reference but kept the longer expiry and the higher
// confidence of the entry held: `feeds show` cited indicator--B (a day, confidence 20) for a
// year's listing at 90. The listing pushed is the entry: its reference with its own expiry and
// confidence.
TEST_F(FeedManagerTest, AnAddRenewalTakesThePushedEntryWhole) {
  auto feeds = Make({Plain("stix")});
  constexpr auto kStix = palisade::v1::FEED_FORMAT_STIX;
  auto bundle = [this](const std::string& id, absl::Duration valid, int confidence) {
    const std::string until =
        absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", clock_.TimeNow() + valid, absl::UTCTimeZone());
    return absl::StrCat(R"({"type": "bundle", "id": "bundle--1", "objects": [)",
                        R"({"type": "indicator", "id": ")", id, R"(", "pattern_type": "stix",)",
                        R"( "pattern": "[ipv4-addr:value = '198.51.100.7']", "valid_until": ")",
                        until, R"(", "confidence": )", confidence, "}]}");
  };
  const absl::Time start = clock_.TimeNow();
  ASSERT_THAT(feeds->Push("stix", kReplace, kStix, false,
                          bundle("indicator--A", absl::Hours(24 * 365), 90)),
              IsOk());
  clock_.Advance(absl::Hours(1));
  ASSERT_THAT(feeds->Push("stix", palisade::v1::FEED_PUSH_MODE_ADD, kStix, false,
                          bundle("indicator--B", absl::Hours(24), 20)),
              IsOk());
  palisade::v1::GetFeedRequest get;
  get.set_name("stix");
  get.set_lookup("198.51.100.7");
  absl::StatusOr<palisade::v1::GetFeedResponse> got = feeds->Get(get);
  ASSERT_THAT(got, IsOk());
  ASSERT_THAT(got->entries(), SizeIs(1));
  EXPECT_EQ(got->entries(0).ref(), "indicator--B");
  EXPECT_EQ(got->entries(0).confidence(), 20u);
  EXPECT_EQ(got->entries(0).expiry().seconds(), absl::ToUnixSeconds(clock_.TimeNow()) + 86400);
  EXPECT_EQ(got->entries(0).first_seen().seconds(), absl::ToUnixSeconds(start));
  // A plain ADD (no reference, no expiry of its own) renews it and keeps what it has, with at
  // least entry_ttl from now.
  clock_.Advance(absl::Hours(1));
  ASSERT_THAT(feeds->Push("stix", palisade::v1::FEED_PUSH_MODE_ADD, {}, false, "198.51.100.7\n"),
              IsOk());
  got = feeds->Get(get);
  ASSERT_THAT(got, IsOk());
  ASSERT_THAT(got->entries(), SizeIs(1));
  EXPECT_EQ(got->entries(0).ref(), "indicator--B");
  EXPECT_EQ(got->entries(0).confidence(), 20u);
  EXPECT_EQ(got->entries(0).expiry().seconds(), absl::ToUnixSeconds(clock_.TimeNow()) + 7 * 86400);
}

// A to_edge feed pulled over plain http:// lets whoever sits on the path write the edge: said
// at start.
TEST_F(FeedManagerTest, AToEdgeFeedPulledOverHttpIsWarnedOfAtStart) {
  FeedConfig plain_http = Plain("edge-http", /*to_edge=*/true);
  plain_http.set_url("http://feeds.example/drop.txt");
  FeedConfig local = Plain("local-http");
  local.set_url("http://feeds.example/local.txt");
  FeedConfig tls = Plain("edge-https", /*to_edge=*/true);
  tls.set_url("https://feeds.example/drop.txt");
  ::testing::internal::CaptureStderr();
  auto feeds = Make({plain_http, local, tls});
  const std::string logged = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(logged, AllOf(HasSubstr("edge-http"), HasSubstr("http://")));
  EXPECT_THAT(logged, ::testing::Not(HasSubstr("local-http")));
  EXPECT_THAT(logged, ::testing::Not(HasSubstr("edge-https")));
}

// A version as a writer stores and publishes it: entries Hosts(from, to) ending at `expiry`,
// and `guard` (none when null).
palisade::v1::FeedState StateOf(uint64_t version, int from, int to, int64_t expiry,
                                const palisade::v1::FeedState::Guard* guard) {
  palisade::v1::FeedState state;
  state.set_version(version);
  for (int i = from; i < to; ++i) {
    auto* e = state.add_entries();
    e->set_cidr(absl::StrCat("198.18.", i / 256, ".", i % 256, "/32"));
    e->set_expiry(expiry);
  }
  if (guard != nullptr) *state.mutable_guard() = *guard;
  return state;
}

// Follow rebuilt the guards' baseline from the versions it saw, never reading the writer's
// (FeedState.guard): a node that joined when the writer's sweep had emptied the feed (a version
// held, its pulls renewing nothing) got only that empty version, was unguarded, and applied the
// held content once it came to write.
TEST_F(FeedManagerTest, ANodeJoiningAfterTheEntriesExpiredKeepsTheWritersBaseline) {
  FeedServer server;
  server.Serve(Twelves(16));  // what the writer holds
  FeedConfig c = Plain("f");
  c.set_url(server.url());
  c.mutable_interval()->set_seconds(600);
  c.mutable_entry_ttl()->set_seconds(3600);
  std::vector<palisade::v1::FeedState> made;
  FeedManagerOptions options;
  options.feeds = {c};
  options.on_version = [&made](absl::string_view, const palisade::v1::FeedState& state) {
    made.push_back(state);
  };
  FeedManager writer(options, clock_, metrics_, nullptr, nullptr);
  ASSERT_THAT(writer.Push("f", kReplace, {}, false, Hosts(0, 100)), IsOk());
  clock_.Advance(absl::Minutes(61));
  writer.Tick();  // the entries expire (a version, empty); the pull is held
  EXPECT_TRUE(writer.List().feeds(0).held());
  ASSERT_THAT(made, SizeIs(2));
  ASSERT_THAT(made[1].entries(), SizeIs(0));
  EXPECT_TRUE(made[1].guard().guarded());

  prometheus::Registry joined_metrics;
  FeedManagerOptions fo;
  fo.feeds = {c};
  FeedManager joined(fo, clock_, joined_metrics, nullptr, nullptr);
  ASSERT_THAT(joined.Follow("f", made[1]), IsOkAndHolds(true));
  absl::StatusOr<PushFeedResponse> r = joined.FetchNow("f");  // the writer gone, it writes
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
  EXPECT_THAT(r->held_reason(), HasSubstr("16777216 IPv4 addresses"));
  EXPECT_FALSE(joined.registry().Contains("f", Ip("44.1.2.3")));
}

// A follower took each of the writer's versions as applied: a sweep that left 5 of 100 entries
// made 5 its baseline, so a truncated version the writer held against 100 applied there.
TEST_F(FeedManagerTest, AFollowerKeepsTheBaselineThroughPartialSweeps) {
  const int64_t now = absl::ToUnixSeconds(clock_.TimeNow());
  palisade::v1::FeedState::Guard guard;
  guard.set_guarded(true);
  guard.set_entries(100);
  guard.set_v4(100);
  prometheus::Registry follower_metrics;
  FeedManagerOptions fo;
  fo.feeds = {Plain("f")};
  FeedManager follower(fo, clock_, follower_metrics, nullptr, nullptr);
  ASSERT_THAT(follower.Follow("f", StateOf(1, 0, 100, now + 3600, &guard)), IsOkAndHolds(true));
  ASSERT_THAT(follower.Follow("f", StateOf(2, 0, 5, now + 3600, &guard)), IsOkAndHolds(true));
  absl::StatusOr<PushFeedResponse> r =
      follower.Push("f", kReplace, {}, false, Hosts(0, 9));  // it came to write
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
  EXPECT_THAT(r->held_reason(), HasSubstr("its last version applied (entries expired since) 100"));
  // A version from a writer older than FeedState.guard is taken as applied.
  ASSERT_THAT(follower.Follow("f", StateOf(10, 0, 50, now + 3600, nullptr)), IsOkAndHolds(true));
  r = follower.Push("f", kReplace, {}, false, Hosts(0, 9));
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->held());
}

// A follower kept its own samples of the day: a writer's force (its baseline started afresh)
// never cleared them, so the node judged the next version against what the force had ended.
TEST_F(FeedManagerTest, AWritersForceClearsItsFollowersSamples) {
  std::vector<palisade::v1::FeedState> made;
  FeedManagerOptions options;
  options.feeds = {Plain("f")};
  options.on_version = [&made](absl::string_view, const palisade::v1::FeedState& state) {
    made.push_back(state);
  };
  FeedManager writer(options, clock_, metrics_, nullptr, nullptr);
  ASSERT_THAT(writer.Push("f", kReplace, {}, false, Sixteens(1)), IsOk());
  clock_.Advance(absl::Hours(1));
  ASSERT_THAT(writer.Push("f", kReplace, {}, true, Sixteens(81)), IsOk());
  ASSERT_THAT(made, SizeIs(2));
  prometheus::Registry follower_metrics;
  FeedManagerOptions fo;
  fo.feeds = {Plain("f")};
  FeedManager follower(fo, clock_, follower_metrics, nullptr, nullptr);
  ASSERT_THAT(follower.Follow("f", made[0]), IsOkAndHolds(true));
  ASSERT_THAT(follower.Follow("f", made[1]), IsOkAndHolds(true));
  clock_.Advance(absl::Hours(1));
  // 100 /16s: within 10x the forced 81, as the writer judges it.
  absl::StatusOr<PushFeedResponse> r = follower.Push("f", kReplace, {}, false, Sixteens(100));
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->held()) << r->held_reason();
}

// The shrink guard judged a whole version against the entries left whenever any were: a
// truncated version held against 105 entries applied once sweeps had left fewer than 10 times
// its size.
TEST_F(FeedManagerTest, AShrunkVersionIsJudgedAgainstTheBaselineWhileEntriesExpire) {
  FeedConfig c = Plain("f");
  c.mutable_entry_ttl()->set_seconds(2 * 3600);
  auto feeds = Make({c});
  ASSERT_THAT(feeds->Push("f", kReplace, {}, false, Hosts(0, 100)), IsOk());
  clock_.Advance(absl::Hours(1));
  ASSERT_THAT(feeds->Push("f", palisade::v1::FEED_PUSH_MODE_ADD, {}, false, Hosts(100, 105)),
              IsOk());
  absl::StatusOr<PushFeedResponse> r = feeds->Push("f", kReplace, {}, false, Hosts(0, 9));
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
  clock_.Advance(absl::Minutes(61));
  feeds->Tick();  // the first 100 expire
  ASSERT_EQ(feeds->List().feeds(0).entries(), 5u);
  r = feeds->Push("f", kReplace, {}, false, Hosts(0, 9));
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
  EXPECT_THAT(r->held_reason(), HasSubstr("fewer than 10% of its last version applied"));
  // A delta is still judged against the entries it changes.
  r = feeds->Push("f", palisade::v1::FEED_PUSH_MODE_REMOVE, {}, false, Hosts(100, 101));
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->held());
}

// A store written before FeedState.guard: the version's entries, expired ones included, are the
// baseline; an empty one has none, which Restore says.
TEST_F(FeedManagerTest, AVersionStoredBeforeTheBaselineIsItsOwnBaseline) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/no_guard.db");
  std::remove(path.c_str());
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  const int64_t now = absl::ToUnixSeconds(clock_.TimeNow());
  ASSERT_THAT((*store)->SaveSnapshot("feed:had",
                                     StateOf(7, 0, 100, now - 60, nullptr).SerializeAsString()),
              IsOk());
  ASSERT_THAT((*store)->SaveSnapshot("feed:empty",
                                     StateOf(3, 0, 0, now - 60, nullptr).SerializeAsString()),
              IsOk());
  auto feeds = Make({Plain("had"), Plain("empty")}, nullptr, store->get());
  ::testing::internal::CaptureStderr();
  ASSERT_THAT(feeds->Restore(), IsOk());
  const std::string logged = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(logged, AllOf(HasSubstr("empty: the version stored"),
                            HasSubstr("do not judge the feed's next version")));
  EXPECT_THAT(logged, ::testing::Not(HasSubstr("had: the version stored")));
  EXPECT_EQ(feeds->List().feeds(1).entries(), 0u);  // "had": expired
  absl::StatusOr<PushFeedResponse> r = feeds->Push("had", kReplace, {}, false, Hosts(0, 5));
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
  EXPECT_THAT(r->held_reason(), HasSubstr("its last version with entries (they expired) 100"));
  r = feeds->Push("had", kReplace, {}, false, Hosts(0, 100) + Twelves(1));
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
  EXPECT_THAT(r->held_reason(), HasSubstr("1048676 IPv4 addresses"));
  r = feeds->Push("empty", kReplace, {}, false, Twelves(16));
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->held());
}

// A never-ban range added over most of a feed, then a restart: the entries it holds out are no
// longer the feed's, so they leave the guards' baseline too; else the next whole version of
// what is left was held as a shrink against entries no version may hold, until forced.
TEST_F(FeedManagerTest, EntriesTheNeverBanSetTakesAtARestartLeaveTheBaseline) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/never_ban_baseline.db");
  std::remove(path.c_str());
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  {
    auto feeds = Make({Plain("f")}, nullptr, store->get());
    ASSERT_THAT(feeds->Push("f", kReplace, {}, false, Hosts(0, 100)), IsOk());
  }
  FeedManagerOptions options;
  options.feeds = {Plain("f")};
  options.edge_max_entries = 10000;
  // Hosts 0..95 of the 100 allowlisted since.
  options.never_ban = *CidrSet::Parse({"192.0.2.0/24", "198.18.0.0/26", "198.18.0.64/27"});
  FeedManager feeds(std::move(options), clock_, metrics_, nullptr, store->get());
  ASSERT_THAT(feeds.Restore(), IsOk());
  EXPECT_EQ(feeds.List().feeds(0).entries(), 4u);
  absl::StatusOr<PushFeedResponse> r = feeds.Push("f", kReplace, {}, false, Hosts(96, 100));
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->held()) << r->held_reason();
  // The baseline still guards what is left.
  r = feeds.Push("f", kReplace, {}, false, std::string());
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
}

// The day's samples: one an hour, the least of the baselines replaced within it, stored with
// the version; the growth guard judges against the least.
TEST_F(FeedManagerTest, BaselinesReplacedWithinAnHourMergeIntoOneSample) {
  const int64_t start = absl::ToUnixSeconds(clock_.TimeNow());
  ASSERT_EQ(start % 3600, 0);
  std::vector<palisade::v1::FeedState> made;
  FeedManagerOptions options;
  options.feeds = {Plain("f")};
  options.on_version = [&made](absl::string_view, const palisade::v1::FeedState& state) {
    made.push_back(state);
  };
  FeedManager feeds(options, clock_, metrics_, nullptr, nullptr);
  ASSERT_THAT(feeds.Push("f", kReplace, {}, false, Sixteens(1)), IsOk());
  clock_.Advance(absl::Minutes(10));
  ASSERT_THAT(feeds.Push("f", kReplace, {}, false, Sixteens(9)), IsOk());
  clock_.Advance(absl::Minutes(10));
  ASSERT_THAT(feeds.Push("f", kReplace, {}, false, Sixteens(2)), IsOk());
  ASSERT_THAT(made, SizeIs(3));
  ASSERT_THAT(made[2].guard().replaced(), SizeIs(1));
  EXPECT_EQ(made[2].guard().replaced(0).at(), start + 1200);
  EXPECT_EQ(made[2].guard().replaced(0).v4(), 65536u);  // 1 /16 and 9: the least
  EXPECT_EQ(made[2].guard().v4(), 2u * 65536);
  clock_.Advance(absl::Minutes(10));
  // 7.5x the current 2 /16s, 15x the 1 of the hour's sample.
  absl::StatusOr<PushFeedResponse> r = feeds.Push("f", kReplace, {}, false, Sixteens(15));
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
  EXPECT_THAT(r->held_reason(), HasSubstr("the 65536 it covered within the last 24 h"));
  clock_.Advance(absl::Minutes(40));  // the next hour (+70 min): a sample of its own
  ASSERT_THAT(feeds.Push("f", kReplace, {}, false, Sixteens(3)), IsOk());
  ASSERT_THAT(made, SizeIs(4));
  ASSERT_THAT(made[3].guard().replaced(), SizeIs(2));
  EXPECT_EQ(made[3].guard().replaced(1).at(), start + 4200);
  EXPECT_EQ(made[3].guard().replaced(1).v4(), 2u * 65536);
}

// The cluster's KV bucket is only semi-trusted: a followed (or restored) baseline keeps at most
// 25 samples, the newest, whatever the version carries.
TEST_F(FeedManagerTest, AFollowedBaselineKeepsAtMostTwentyFiveSamples) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/guard_cap.db");
  std::remove(path.c_str());
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  const int64_t now = absl::ToUnixSeconds(clock_.TimeNow());
  palisade::v1::FeedState::Guard guard;
  guard.set_guarded(true);
  guard.set_entries(10);
  guard.set_v4(10);
  for (int i = 0; i < 1000; ++i) {
    auto* sample = guard.add_replaced();
    sample->set_at(now - 1000 + i);
    sample->set_v4(static_cast<uint64_t>(i) + 1);
  }
  FeedManagerOptions fo;
  fo.feeds = {Plain("f")};
  FeedManager follower(fo, clock_, metrics_, nullptr, store->get());
  ASSERT_THAT(follower.Follow("f", StateOf(1, 0, 10, now + 3600, &guard)), IsOkAndHolds(true));
  absl::StatusOr<std::string> blob = (*store)->LoadSnapshot("feed:f");
  ASSERT_THAT(blob, IsOk());
  palisade::v1::FeedState stored;
  ASSERT_TRUE(stored.ParseFromString(*blob));
  ASSERT_THAT(stored.guard().replaced(), SizeIs(25));
  EXPECT_EQ(stored.guard().replaced(0).at(), now - 25);
  EXPECT_EQ(stored.guard().replaced(24).v4(), 1000u);
}


// After a partial sweep (the feed's older entries expired, a later ADD's left), a whole version
// was judged for growth against what was left: the feed's usual 10 /16s, listed again, were
// held as 655,360 addresses for 1 until the rest expired. Growth is judged against the larger
// of what is left and the baseline (the last version applied); real growth is still held.
TEST_F(FeedManagerTest, AVersionBackAtItsSizeAfterAPartialSweepIsNoGrowth) {
  FeedConfig c = Plain("f");
  c.mutable_entry_ttl()->set_seconds(2 * 3600);
  auto feeds = Make({c});
  ASSERT_THAT(feeds->Push("f", kReplace, {}, false, Sixteens(10)), IsOk());
  clock_.Advance(absl::Hours(1));
  ASSERT_THAT(feeds->Push("f", palisade::v1::FEED_PUSH_MODE_ADD, {}, false, Hosts(0, 1)),
              IsOk());
  clock_.Advance(absl::Minutes(61));
  feeds->Tick();  // the 10 /16s expire, the host stays
  ASSERT_EQ(feeds->List().feeds(0).entries(), 1u);
  absl::StatusOr<PushFeedResponse> r = feeds->Push("f", kReplace, {}, false, Sixteens(200));
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
  EXPECT_THAT(r->held_reason(),
              AllOf(HasSubstr("13107200 IPv4 addresses"),
                    HasSubstr("the 655360 it covered within the last 24 h")));
  r = feeds->Push("f", kReplace, {}, false, Sixteens(10));
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->held()) << r->held_reason();
  EXPECT_TRUE(feeds->registry().Contains("f", Ip("60.9.1.2")));
}

// A guard sample read from the cluster's KV bucket (or the store) dated ahead of the clock
// never aged out: one small sample a year ahead held every version past 10x it for that year.
// A sample's time is at most now: it ages out a day after it was read.
TEST_F(FeedManagerTest, AFollowedSampleDatedAheadOfTheClockAgesOut) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/future_sample.db");
  std::remove(path.c_str());
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  const int64_t now = absl::ToUnixSeconds(clock_.TimeNow());
  palisade::v1::FeedState state;
  state.set_version(1);
  for (int i = 0; i < 10; ++i) {
    auto* e = state.add_entries();
    e->set_cidr(absl::StrCat("60.", i, ".0.0/16"));
    e->set_expiry(now + 30 * 86400);
  }
  auto* guard = state.mutable_guard();
  guard->set_guarded(true);
  guard->set_entries(10);
  guard->set_v4(10 * 65536);
  auto* sample = guard->add_replaced();
  sample->set_at(now + 365 * 86400);
  sample->set_v4(65536);
  FeedManagerOptions fo;
  fo.feeds = {Plain("f")};
  FeedManager follower(fo, clock_, metrics_, nullptr, store->get());
  ASSERT_THAT(follower.Follow("f", state), IsOkAndHolds(true));
  absl::StatusOr<std::string> blob = (*store)->LoadSnapshot("feed:f");
  ASSERT_THAT(blob, IsOk());
  palisade::v1::FeedState stored;
  ASSERT_TRUE(stored.ParseFromString(*blob));
  ASSERT_THAT(stored.guard().replaced(), SizeIs(1));
  EXPECT_EQ(stored.guard().replaced(0).at(), now);
  // Within the day the sample is the least (50 /16s: 50x it).
  absl::StatusOr<PushFeedResponse> r = follower.Push("f", kReplace, {}, false, Sixteens(50));
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
  clock_.Advance(absl::Hours(25));
  r = follower.Push("f", kReplace, {}, false, Sixteens(50));  // 5x the 10 held
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->held()) << r->held_reason();
}

// Restore takes the entries this node's never-ban set holds out of the guards' baseline; Follow
// did not: a follower allowlisting 96 of the writer's 100 entries kept 100 as its baseline, so
// once it came to write, the next whole version (4 entries after its never-ban set) was held as
// a shrink until forced.
TEST_F(FeedManagerTest, EntriesAFollowersNeverBanSetTakesLeaveTheBaseline) {
  std::vector<palisade::v1::FeedState> made;
  FeedManagerOptions options;
  options.feeds = {Plain("f")};
  options.on_version = [&made](absl::string_view, const palisade::v1::FeedState& state) {
    made.push_back(state);
  };
  FeedManager writer(options, clock_, metrics_, nullptr, nullptr);
  ASSERT_THAT(writer.Push("f", kReplace, {}, false, Hosts(0, 100)), IsOk());
  ASSERT_THAT(made, SizeIs(1));
  ASSERT_EQ(made[0].guard().entries(), 100u);

  prometheus::Registry follower_metrics;
  FeedManagerOptions fo;
  fo.feeds = {Plain("f")};
  // Hosts 0..95 of the 100 allowlisted on this node.
  fo.never_ban = *CidrSet::Parse({"192.0.2.0/24", "198.18.0.0/26", "198.18.0.64/27"});
  FeedManager follower(fo, clock_, follower_metrics, nullptr, nullptr);
  ASSERT_THAT(follower.Follow("f", made[0]), IsOkAndHolds(true));
  EXPECT_EQ(follower.List().feeds(0).entries(), 4u);
  absl::StatusOr<PushFeedResponse> r =
      follower.Push("f", kReplace, {}, false, Hosts(0, 100));  // it came to write
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->held()) << r->held_reason();
  // The baseline still guards what is left.
  r = follower.Push("f", kReplace, {}, false, std::string());
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->held());
}

// A version the store refused was serialized (the whole feed) and written again every second
// for as long as the store refused it. The retries back off (1 s, 2 s, 4 s, 8 s, ... at most
// 5 min): a store back after 11 s takes the version at the retry 15 s after the refusal.
TEST_F(FeedManagerTest, AVersionTheStoreRefusesIsRetriedWithBackoff) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/refused_backoff.db");
  std::remove(path.c_str());
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  auto feeds = Make({Plain("f")}, nullptr, store->get());
  ::palisade::testing::ExecSql(path, "CREATE TRIGGER full BEFORE INSERT ON snapshots "
                                     "BEGIN SELECT RAISE(ABORT, 'full'); END;");
  ASSERT_THAT(feeds->Push("f", kReplace, {}, false, "198.51.100.1\n"), IsOk());
  EXPECT_THAT(feeds->List().feeds(0).last_error(), HasSubstr("version 1 not stored"));
  for (int i = 0; i < 10; ++i) {
    clock_.Advance(absl::Seconds(1));
    feeds->Tick();
  }
  ::palisade::testing::ExecSql(path, "DROP TRIGGER full;");
  clock_.Advance(absl::Seconds(1));
  feeds->Tick();  // +11 s: the retries were at +1, +3 and +7 s; the next is at +15 s
  EXPECT_THAT(feeds->List().feeds(0).last_error(), HasSubstr("not stored"));
  for (int i = 0; i < 4; ++i) {
    clock_.Advance(absl::Seconds(1));
    feeds->Tick();
  }
  EXPECT_EQ(feeds->List().feeds(0).last_error(), "");
  absl::StatusOr<std::string> blob = (*store)->LoadSnapshot("feed:f");
  ASSERT_THAT(blob, IsOk());
  palisade::v1::FeedState stored;
  ASSERT_TRUE(stored.ParseFromString(*blob));
  EXPECT_EQ(stored.version(), 1u);
}

// A push that crossed a pull: the pull's request carried the validators of the version before
// the push, the server answered 304, and the pushed entries were renewed (a new version) as
// the server's content. A 304 renews only the version its request named.
TEST_F(FeedManagerTest, APushCrossingAPullIsNotRenewedByItsNotModified) {
  absl::Notification asked, pushed;
  httplib::Server server;
  server.Get("/feed.txt", [&](const httplib::Request& req, httplib::Response& res) {
    if (req.get_header_value("If-None-Match") == "\"v1\"") {
      asked.Notify();
      pushed.WaitForNotificationWithTimeout(absl::Seconds(60));
      res.status = 304;
      return;
    }
    res.set_header("ETag", "\"v1\"");
    res.set_content("198.51.100.1\n", "text/plain");
  });
  const int port = server.bind_to_any_port("127.0.0.1");
  std::thread thread([&server] { server.listen_after_bind(); });
  FeedConfig c = Plain("drop");
  c.set_url(absl::StrCat("http://127.0.0.1:", port, "/feed.txt"));
  c.mutable_interval()->set_seconds(600);
  auto feeds = Make({c});
  ASSERT_THAT(feeds->FetchNow("drop"), IsOk());

  absl::StatusOr<PushFeedResponse> pulled = absl::UnknownError("not run");
  std::thread pull([&] { pulled = feeds->FetchNow("drop"); });
  ASSERT_TRUE(asked.WaitForNotificationWithTimeout(absl::Seconds(60)));
  ASSERT_THAT(feeds->Push("drop", kReplace, {}, false, "198.51.100.9\n"), IsOk());
  const int64_t pushed_expiry = absl::ToUnixSeconds(clock_.TimeNow()) + 7 * 86400;
  clock_.Advance(absl::Hours(2));  // a 304 now would move the pushed entry's expiry by a step
  pushed.Notify();
  pull.join();
  ASSERT_THAT(pulled, IsOk());
  EXPECT_EQ(pulled->version(), 2u);
  EXPECT_THAT(feeds->Version("drop"), IsOkAndHolds(2u));
  palisade::v1::GetFeedRequest get;
  get.set_name("drop");
  get.set_lookup("198.51.100.9");
  absl::StatusOr<palisade::v1::GetFeedResponse> got = feeds->Get(get);
  ASSERT_THAT(got, IsOk());
  ASSERT_THAT(got->entries(), SizeIs(1));
  EXPECT_EQ(got->entries(0).expiry().seconds(), pushed_expiry);
  server.stop();
  thread.join();
}

}  // namespace
}  // namespace palisade
