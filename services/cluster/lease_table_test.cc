#include "services/cluster/lease_table.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/cluster/nats_server_for_tests.h"

namespace palisade::cluster {
namespace {

class LeaseTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = NatsServerForTests::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    auto client = NatsClient::Connect({.servers = {server_->url()}});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }
  std::unique_ptr<LeaseTable> Node(const std::string& id) {
    auto t = LeaseTable::Open(
        *client_,
        {.node_id = id, .term = absl::Seconds(15), .skew = absl::Seconds(2), .clock = &clock_});
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *std::move(t) : nullptr;
  }
  SimulatedClock clock_;
  std::unique_ptr<NatsServerForTests> server_;
  std::unique_ptr<NatsClient> client_;
};

TEST_F(LeaseTableTest, OneHolderUntilItsTermAndSkewRunOut) {
  auto a = Node("node-a");
  auto b = Node("node-b");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(*a->Claim("partition.3"), true);
  EXPECT_EQ(*b->Claim("partition.3"), false);
  auto holder = b->HolderOf("partition.3");
  ASSERT_TRUE(holder.ok() && holder->has_value());
  EXPECT_EQ((*holder)->node, "node-a");
  // a renews within its term: b still cannot take it.
  clock_.Advance(absl::Seconds(10));
  EXPECT_EQ(*a->Claim("partition.3"), true);
  clock_.Advance(absl::Seconds(10));
  EXPECT_EQ(*b->Claim("partition.3"), false);
  // a stops renewing (it died): past term + skew, b takes over and a's late renewal loses.
  clock_.Advance(absl::Seconds(6));
  EXPECT_EQ(*b->Claim("partition.3"), false) << "within the skew margin";
  clock_.Advance(absl::Seconds(2));
  EXPECT_EQ(*b->Claim("partition.3"), true);
  EXPECT_EQ(*a->Claim("partition.3"), false);
  EXPECT_EQ((*b->HolderOf("partition.3"))->node, "node-b");
}

// Two tables of one node id (two processes): one presence, held by one instance until it is
// released or runs out; the other's claims fail naming the id, and leave the node's leases alone.
TEST_F(LeaseTableTest, APresenceIsOneInstancesUntilReleasedOrRunOut) {
  auto first = Node("node-a");
  auto second = Node("node-a");
  ASSERT_TRUE(first && second);
  ASSERT_NE(first->instance(), second->instance());
  EXPECT_TRUE(first->ClaimPresence().ok());
  absl::Status refused = second->ClaimPresence();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "node_id \"node-a\"")) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), first->instance())) << refused;
  auto holder = second->PresenceHolder();
  ASSERT_TRUE(holder.ok() && holder->has_value());
  EXPECT_EQ((*holder)->node, first->instance());
  // Renewed within the term: still the first's.
  clock_.Advance(absl::Seconds(10));
  EXPECT_TRUE(first->ClaimPresence().ok());
  clock_.Advance(absl::Seconds(10));
  EXPECT_EQ(second->ClaimPresence().code(), absl::StatusCode::kFailedPrecondition);
  // Released: the second's at once, and the first's claims fail from then on.
  EXPECT_TRUE(first->ReleasePresence().ok());
  EXPECT_TRUE(second->ClaimPresence().ok());
  EXPECT_EQ(first->ClaimPresence().code(), absl::StatusCode::kFailedPrecondition);
  // Run out (no renewal for the term and skew): the first's again.
  clock_.Advance(absl::Seconds(15 + 2 + 1));
  EXPECT_TRUE(first->ClaimPresence().ok());
  // The presence is no lease of the node's.
  auto members = first->LiveWithPrefix("node.");
  ASSERT_TRUE(members.ok());
  EXPECT_TRUE(members->empty());
}

TEST_F(LeaseTableTest, AReleasedLeaseIsFreeAtOnce) {
  auto a = Node("node-a");
  auto b = Node("node-b");
  ASSERT_TRUE(a && b);
  ASSERT_EQ(*a->Claim("edge-writer"), true);
  ASSERT_TRUE(b->Release("edge-writer").ok());  // not b's: changes nothing
  EXPECT_EQ(*b->Claim("edge-writer"), false);
  ASSERT_TRUE(a->Release("edge-writer").ok());
  EXPECT_FALSE(a->HolderOf("edge-writer")->has_value());
  EXPECT_EQ(*b->Claim("edge-writer"), true);
}

// Many nodes race for one free lease, and then for it again once it ran out: one wins each time.
TEST_F(LeaseTableTest, RacingNodesGetExactlyOneWinner) {
  std::vector<std::unique_ptr<LeaseTable>> nodes;
  for (int i = 0; i < 8; ++i) nodes.push_back(Node(absl::StrCat("node-", i)));
  for (int round = 0; round < 2; ++round) {
    std::atomic<int> winners{0}, errors{0};
    std::vector<std::thread> threads;
    for (auto& n : nodes) {
      threads.emplace_back([&, t = n.get()] {
        absl::StatusOr<bool> won = t->Claim("partition.0");
        if (!won.ok()) ++errors;
        if (won.ok() && *won) ++winners;
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(errors.load(), 0);
    EXPECT_EQ(winners.load(), 1) << "round " << round;
    clock_.Advance(absl::Seconds(18));  // the winner never renews
  }
}

TEST_F(LeaseTableTest, BadNamesAreRefused) {
  EXPECT_FALSE(LeaseTable::Open(*client_, {.node_id = "a b"}).ok());
  EXPECT_FALSE(LeaseTable::Open(*client_, {.node_id = ""}).ok());
  auto a = Node("node-a");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->Claim("partition 1").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a->Claim("x>").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace palisade::cluster
