#include "services/cluster/match_stream.h"

#include <nats/nats.h>

#include <map>
#include <set>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/cluster/nats_server_for_tests.h"

namespace palisade::cluster {
namespace {

constexpr uint32_t kPartitions = 4;

class MatchStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = NatsServerForTests::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    auto client = NatsClient::Connect({.servers = {server_->url()}, .timeout = absl::Seconds(2)});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
    ASSERT_TRUE(client_
                    ->EnsureStream({.name = "MATCHES",
                                    .subjects = {"palisade.matches.*"},
                                    .duplicate_window = absl::Minutes(2)})
                    .ok());
  }
  std::unique_ptr<MatchPublisher> Publisher(const std::string& node, size_t max_bytes = 1 << 20) {
    auto p = MatchPublisher::Start(*client_, {.node_id = node,
                                              .partitions = kPartitions,
                                              .max_queued_bytes = max_bytes,
                                              .retry_min = absl::Milliseconds(20),
                                              .retry_max = absl::Milliseconds(200)});
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? *std::move(p) : nullptr;
  }
  // Everything partition `p` holds now, in order, through a consumer named `durable`: as many
  // as the consumer has to deliver when opened (waited for up to a minute, so a loaded machine
  // whose first fetch is slow does not end the drain early), then whatever else comes at once.
  std::vector<std::string> Drain(uint32_t p, const std::string& durable = "owner") {
    auto c = PartitionConsumer::Open(*client_, "MATCHES", "palisade.matches", durable, p);
    EXPECT_TRUE(c.ok()) << c.status();
    std::vector<std::string> got;
    if (!c.ok()) return got;
    jsConsumerInfo* ci = nullptr;
    jsErrCode err = static_cast<jsErrCode>(0);
    const std::string name = absl::StrCat(durable, "-p", p);
    EXPECT_EQ(js_GetConsumerInfo(&ci, client_->jetstream(), "MATCHES", name.c_str(), nullptr,
                                 &err),
              NATS_OK);
    const size_t expected = ci == nullptr ? 0 : ci->NumPending + ci->NumAckPending;
    if (ci != nullptr) jsConsumerInfo_Destroy(ci);
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (true) {
      absl::StatusOr<size_t> n =
          (*c)->Poll(100, absl::Milliseconds(300), [&](uint64_t, absl::string_view m) {
            got.emplace_back(m);
            return absl::OkStatus();
          });
      EXPECT_TRUE(n.ok()) << n.status();
      if (!n.ok() || (*n == 0 && (got.size() >= expected || absl::Now() >= deadline))) break;
    }
    return got;
  }
  std::unique_ptr<NatsServerForTests> server_;
  std::unique_ptr<NatsClient> client_;
};

// Two nodes publish matches for many keys: each partition holds exactly its keys' matches, each
// once, in each node's order.
TEST_F(MatchStreamTest, MatchesLandInTheirKeysPartitionOnceInOrder) {
  auto a = Publisher("web-1");
  auto b = Publisher("web-2");
  ASSERT_TRUE(a && b);
  for (int i = 0; i < 200; ++i) {
    const std::string key = absl::StrCat("198.51.100.", i % 50);
    ASSERT_TRUE(a->Enqueue(key, absl::StrCat(key, " web-1 ", i)));
    ASSERT_TRUE(b->Enqueue(key, absl::StrCat(key, " web-2 ", i)));
  }
  ASSERT_TRUE(a->WaitUntilPublished(absl::Seconds(60)));
  ASSERT_TRUE(b->WaitUntilPublished(absl::Seconds(60)));
  EXPECT_EQ(a->published() + b->published(), 400u);
  size_t total = 0;
  for (uint32_t p = 0; p < kPartitions; ++p) {
    std::map<std::string, int> last_of_node;
    for (const std::string& m : Drain(p)) {
      std::vector<std::string> f = absl::StrSplit(m, ' ');
      ASSERT_EQ(f.size(), 3u);
      EXPECT_EQ(PartitionOf(f[0], kPartitions), p) << m;
      int i = 0;
      ASSERT_TRUE(absl::SimpleAtoi(f[2], &i));
      auto it = last_of_node.find(f[1]);
      if (it != last_of_node.end()) {
        EXPECT_LT(it->second, i) << "out of order: " << m;
      }
      last_of_node[f[1]] = i;
      ++total;
    }
  }
  EXPECT_EQ(total, 400u);
}

// A batch in which some matches were stored and others refused is sent again: only what the
// stream did not acknowledge goes again. Sending the stored ones again would store them twice
// once the stream's de-duplication window passed (NATS away longer than it, a match refused
// for longer), and their owner would count them twice.
TEST_F(MatchStreamTest, AStoredMatchIsNotSentAgainWithItsBatchsFailures) {
  std::string a, b;  // keys of two partitions; the stream takes only a's
  for (int i = 0; a.empty() || b.empty(); ++i) {
    const std::string key = absl::StrCat("203.0.113.", i);
    if (PartitionOf(key, kPartitions) == 0 && a.empty()) a = key;
    if (PartitionOf(key, kPartitions) == 1 && b.empty()) b = key;
  }
  ASSERT_TRUE(client_
                  ->EnsureStream({.name = "SOME",
                                  .subjects = {"some.0"},
                                  .duplicate_window = absl::Milliseconds(500)})
                  .ok());
  auto p = MatchPublisher::Start(*client_, {.node_id = "web-1",
                                            .subject_prefix = "some",
                                            .partitions = kPartitions,
                                            .retry_min = absl::Milliseconds(20),
                                            .retry_max = absl::Milliseconds(100)});
  ASSERT_TRUE(p.ok()) << p.status();
  // b's first: refused each time, it keeps a in its batch from the second attempt on.
  ASSERT_TRUE((*p)->Enqueue(b, "refused"));
  ASSERT_TRUE((*p)->Enqueue(a, "stored"));
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while ((*p)->publish_failures() < 20 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_GE((*p)->publish_failures(), 20u);  // 20 attempts, each at least 20 ms apart: > 500 ms
  absl::StatusOr<NatsClient::StreamState> st = client_->State("SOME");
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->messages, 1u);
  EXPECT_EQ((*p)->published(), 1u);
}

// A new owner resumes after the last acknowledged match: what the old owner took is not seen
// again, what it refused (not acknowledged) is.
TEST_F(MatchStreamTest, ANewOwnerResumesAfterTheLastAcknowledgedMatch) {
  auto a = Publisher("web-1");
  ASSERT_TRUE(a);
  std::string key;  // a key of partition 0
  for (int i = 0; PartitionOf(key, kPartitions) != 0 || key.empty(); ++i) {
    key = absl::StrCat("203.0.113.", i);
  }
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(a->Enqueue(key, absl::StrCat("m", i)));
  ASSERT_TRUE(a->WaitUntilPublished(absl::Seconds(60)));
  {
    auto first = PartitionConsumer::Open(*client_, "MATCHES", "palisade.matches", "owner", 0);
    ASSERT_TRUE(first.ok()) << first.status();
    int seen = 0;
    absl::StatusOr<size_t> n = (*first)->Poll(10, absl::Seconds(5), [&](uint64_t seq, auto) {
      ++seen;
      EXPECT_GT(seq, 0u);
      return seen <= 4 ? absl::OkStatus() : absl::UnavailableError("owner lost its lease");
    });
    EXPECT_EQ(n.status().code(), absl::StatusCode::kUnavailable);
  }  // the first owner is gone
  EXPECT_THAT(Drain(0), ::testing::ElementsAre("m4", "m5", "m6", "m7", "m8", "m9"));
}

// NATS goes away: the node keeps queueing (within its bound), and catches up when NATS is back;
// nothing is published twice.
TEST_F(MatchStreamTest, WhileNatsIsAwayMatchesWaitAndCatchUp) {
  auto a = Publisher("web-1");
  ASSERT_TRUE(a);
  ASSERT_TRUE(a->Enqueue("k", "before"));
  ASSERT_TRUE(a->WaitUntilPublished(absl::Seconds(60)));
  EXPECT_EQ(a->last_failure(), "");
  server_->Kill();
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(a->Enqueue("k", absl::StrCat("during ", i)));
  EXPECT_FALSE(a->WaitUntilPublished(absl::Milliseconds(300)));
  EXPECT_GT(a->queued_bytes(), 0u);
  ASSERT_TRUE(server_->Restart().ok());
  ASSERT_TRUE(a->WaitUntilPublished(absl::Seconds(60)));
  EXPECT_EQ(a->published(), 51u);
  EXPECT_GT(a->publish_failures(), 0u);
  EXPECT_NE(a->last_failure(), "");  // why: NATS' own words (no server, or no ack in time)
  EXPECT_EQ(a->dropped(), 0u);
  EXPECT_EQ(Drain(PartitionOf("k", kPartitions)).size(), 51u);
}

// The queue is bounded in bytes: past it a match is dropped and counted, never blocking.
TEST_F(MatchStreamTest, TheQueueIsBoundedInBytes) {
  server_->Kill();  // nothing drains the queue
  const std::string match(1000, 'x');
  auto a = Publisher("web-1", /*max_bytes=*/10 * MatchPublisher::Cost(match.size()));
  ASSERT_TRUE(a);
  int accepted = 0;
  for (int i = 0; i < 25; ++i) accepted += a->Enqueue("k", match) ? 1 : 0;
  EXPECT_EQ(accepted, 10);
  EXPECT_EQ(a->dropped(), 15u);
  EXPECT_LE(a->queued_bytes(), 10 * MatchPublisher::Cost(match.size()));
}

// A match over NATS' payload limit can never be sent: libnats refuses it before it leaves. It is
// dropped and counted, and the matches after it go out; it stayed at the queue's front, sent
// again for ever, and the node published nothing more.
TEST_F(MatchStreamTest, AMatchOverThePayloadLimitIsDroppedAndTheRestGoOut) {
  auto a = Publisher("web-1", /*max_bytes=*/4 << 20);
  ASSERT_TRUE(a);
  const int64_t limit = natsConnection_GetMaxPayload(client_->connection());
  ASSERT_GT(limit, 0);
  ASSERT_TRUE(a->Enqueue("k", std::string(static_cast<size_t>(limit) + 1, 'x')));
  ASSERT_TRUE(a->Enqueue("k", "small"));
  // Generous: a loaded machine's publish takes milliseconds, the old behaviour forever.
  ASSERT_TRUE(a->WaitUntilPublished(absl::Seconds(60)))
      << "published " << a->published() << ", last failure: " << a->last_failure();
  EXPECT_EQ(a->published(), 1u);
  EXPECT_EQ(a->dropped(), 1u);
  EXPECT_EQ(a->queued_bytes(), 0u);
  EXPECT_THAT(a->last_failure(), ::testing::HasSubstr("Maximum Payload"));
  EXPECT_THAT(Drain(PartitionOf("k", kPartitions)), ::testing::ElementsAre("small"));
}

// The same for a match the stream refuses for its size (a stream made with a smaller largest
// message than the servers' payload limit): JetStream answers the publish with an error, and
// sending it again would be answered the same.
TEST_F(MatchStreamTest, AMatchTheStreamRefusesForItsSizeIsDroppedAndTheRestGoOut) {
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = "SMALL";
  const char* subjects[] = {"small.*"};
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.MaxMsgSize = 1000;
  cfg.Storage = js_FileStorage;
  jsStreamInfo* info = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  ASSERT_EQ(js_AddStream(&info, client_->jetstream(), &cfg, nullptr, &err), NATS_OK) << err;
  jsStreamInfo_Destroy(info);
  auto p = MatchPublisher::Start(*client_, {.node_id = "web-1",
                                            .subject_prefix = "small",
                                            .partitions = 1,
                                            .retry_min = absl::Milliseconds(20),
                                            .retry_max = absl::Milliseconds(200)});
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE((*p)->Enqueue("k", std::string(2000, 'x')));
  ASSERT_TRUE((*p)->Enqueue("k", "small"));
  ASSERT_TRUE((*p)->WaitUntilPublished(absl::Seconds(60)))
      << "published " << (*p)->published() << ", last failure: " << (*p)->last_failure();
  EXPECT_EQ((*p)->published(), 1u);
  EXPECT_EQ((*p)->dropped(), 1u);
  EXPECT_THAT((*p)->last_failure(), ::testing::HasSubstr("10054"));
  absl::StatusOr<NatsClient::StreamState> st = client_->State("SMALL");
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->messages, 1u);
}

// Three NATS servers, a stream replicated on all three: one server is killed (-9) in the middle
// of a node's publishing; every match is stored exactly once.
TEST(MatchStreamClusterTest, AServerKilledMidStreamLosesAndRepeatsNothing) {
  auto servers = NatsServerForTests::StartCluster();
  ASSERT_TRUE(servers.ok()) << servers.status();
  auto client = NatsClient::Connect({.servers = UrlsOf(*servers), .timeout = absl::Seconds(5)});
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE(EnsureStreamOnceElected(
                  **client, {.name = "MATCHES", .subjects = {"palisade.matches.*"}, .replicas = 3})
                  .ok());
  auto a = MatchPublisher::Start(**client, {.node_id = "web-1",
                                            .partitions = 1,
                                            .retry_min = absl::Milliseconds(50),
                                            .retry_max = absl::Milliseconds(500)});
  ASSERT_TRUE(a.ok()) << a.status();
  for (int i = 0; i < 100; ++i) ASSERT_TRUE((*a)->Enqueue("k", absl::StrCat(i)));
  ASSERT_TRUE((*a)->WaitUntilPublished(absl::Seconds(60)));
  (*servers)[0]->Kill();
  for (int i = 100; i < 300; ++i) ASSERT_TRUE((*a)->Enqueue("k", absl::StrCat(i)));
  ASSERT_TRUE((*a)->WaitUntilPublished(absl::Seconds(120)))
      << "published " << (*a)->published() << ", failed batches " << (*a)->publish_failures()
      << ", queued bytes " << (*a)->queued_bytes() << ", last failure: " << (*a)->last_failure()
      << LogTails(*servers);
  EXPECT_EQ((*a)->dropped(), 0u);
  // The stream holds each match once (asked until the stream's new leader answers).
  absl::StatusOr<NatsClient::StreamState> state;
  for (absl::Time end = absl::Now() + absl::Seconds(60); absl::Now() < end;) {
    state = (*client)->State("MATCHES");
    if (state.ok()) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  ASSERT_TRUE(state.ok()) << state.status() << LogTails(*servers);
  EXPECT_EQ(state->messages, 300u);
  // With a server gone, the consumer's replicas are placed after an election: the owner retries,
  // and its first fetches may come back empty until the consumer has a leader. It reads until it
  // has every match (or a minute passed), then once more to see that nothing else comes.
  absl::StatusOr<std::unique_ptr<PartitionConsumer>> c;
  for (int i = 0; i < 12; ++i) {
    c = PartitionConsumer::Open(**client, "MATCHES", "palisade.matches", "owner", 0);
    if (c.ok()) break;
  }
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<std::string> got;
  auto poll = [&] {
    absl::StatusOr<size_t> n =
        (*c)->Poll(100, absl::Seconds(1), [&](uint64_t, absl::string_view m) {
          got.emplace_back(m);
          return absl::OkStatus();
        });
    return n.ok() ? absl::OkStatus() : n.status();
  };
  absl::Status polled;
  for (absl::Time end = absl::Now() + absl::Seconds(60); got.size() < 300 && absl::Now() < end;) {
    polled = poll();
    if (!polled.ok()) absl::SleepFor(absl::Milliseconds(200));  // no consumer leader yet
  }
  ASSERT_TRUE(poll().ok()) << "and before it: " << polled;
  // Each exactly once; in order up to the kill (a batch sent again after it may land a resent
  // match after a later one of its batch).
  ASSERT_EQ(got.size(), 300u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(got[i], absl::StrCat(i));
  std::set<std::string> distinct(got.begin(), got.end());
  EXPECT_EQ(distinct.size(), 300u);
  for (int i = 0; i < 300; ++i) EXPECT_EQ(distinct.count(absl::StrCat(i)), 1u) << i;
}

// The partition of a key is the same on every node and build: fixed values, and keys spread.
TEST(PartitionOfTest, StableAndSpread) {
  EXPECT_EQ(PartitionOf("", 16), 14695981039346656037ull % 16);
  EXPECT_EQ(PartitionOf("203.0.113.7", 1), 0u);
  // Fixed values: a change of hash (or of its constants) would move every key's owner.
  EXPECT_EQ(PartitionOf("203.0.113.7", 1u << 31), 1308839264u);
  EXPECT_EQ(PartitionOf("2001:db8::1", 1000), 127u);
  std::vector<int> counts(16, 0);
  for (int i = 0; i < 16000; ++i)
    ++counts[PartitionOf(absl::StrCat("10.0.", i / 256, ".", i % 256), 16)];
  for (int c : counts) {
    EXPECT_GT(c, 700);
    EXPECT_LT(c, 1300);
  }
}

// The key a match is routed by: an IPv6 address's /48 (so one client rotating through the
// addresses of its /64, or of its /48, lands on one owner, whose engine counts its range
// window), anything else itself.
TEST(PartitionKeyOfTest, AnIpv6AddressGoesByItsSlash48) {
  EXPECT_EQ(PartitionKeyOf("203.0.113.7"), "203.0.113.7");
  EXPECT_EQ(PartitionKeyOf("2001:db8:1:2::1"), "2001:db8:1::/48");
  // Two addresses of one /48 (and of two different /64s in it): one key, one partition.
  EXPECT_EQ(PartitionKeyOf("2001:db8:1:2::1"), PartitionKeyOf("2001:db8:1:ffff:abcd::9"));
  EXPECT_EQ(PartitionOf(PartitionKeyOf("2001:db8:1:2::1"), kPartitions),
            PartitionOf(PartitionKeyOf("2001:db8:1:3::2"), kPartitions));
  // Another /48: another key.
  EXPECT_NE(PartitionKeyOf("2001:db8:1:2::1"), PartitionKeyOf("2001:db8:2:2::1"));
  // A NAT64 or Teredo address is its IPv4 host's, and its /48 holds other hosts: itself.
  EXPECT_EQ(PartitionKeyOf("64:ff9b::198.51.100.7"), "64:ff9b::198.51.100.7");
  EXPECT_EQ(PartitionKeyOf("64:ff9b::c633:6407"), "64:ff9b::c633:6407");
  EXPECT_EQ(PartitionKeyOf("2001:0:4136:e378:8000:63bf:3fff:fdd2"),
            "2001:0:4136:e378:8000:63bf:3fff:fdd2");
  // A 6to4 address: its /48 is one IPv4 host's whole range, which the owner's engine counts in
  // one window (Engine's range window), so every address of it goes to one owner.
  EXPECT_EQ(PartitionKeyOf("2002:c633:6407::1"), "2002:c633:6407::/48");
  EXPECT_EQ(PartitionKeyOf("2002:c633:6407:1::9"), PartitionKeyOf("2002:c633:6407:ffff::2"));
  // Not an address (a user name, a token's fingerprint): itself.
  EXPECT_EQ(PartitionKeyOf("alice"), "alice");
  EXPECT_EQ(PartitionKeyOf(""), "");
}

}  // namespace
}  // namespace palisade::cluster
