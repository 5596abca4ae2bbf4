#include "services/cluster/ownership.h"

#include <map>
#include <set>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/cluster/nats_server_for_tests.h"

namespace palisade::cluster {
namespace {

constexpr uint32_t kPartitions = 12;

// Several nodes in one process, each with its own NATS connection and lease table, on one
// simulated clock: ticks run in turn, so every outcome is exact.
class OwnershipTest : public ::testing::Test {
 protected:
  struct Node {
    std::unique_ptr<NatsClient> nats;
    std::unique_ptr<LeaseTable> leases;
    std::unique_ptr<Ownership> ownership;
  };
  void SetUp() override {
    auto server = NatsServerForTests::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }
  Node& Add(const std::string& id) {
    Node n;
    auto nats = NatsClient::Connect({.servers = {server_->url()}, .name = id});
    EXPECT_TRUE(nats.ok()) << nats.status();
    n.nats = *std::move(nats);
    auto leases = LeaseTable::Open(
        *n.nats,
        {.node_id = id, .term = absl::Seconds(15), .skew = absl::Seconds(2), .clock = &clock_});
    EXPECT_TRUE(leases.ok()) << leases.status();
    n.leases = *std::move(leases);
    n.ownership = std::make_unique<Ownership>(*n.leases, id, kPartitions);
    return nodes_[id] = std::move(n);
  }
  // One round: every node in `ids` ticks once, then the clock moves a third of a term.
  void Round(const std::vector<std::string>& ids) {
    for (const std::string& id : ids) {
      auto change = nodes_[id].ownership->Tick(gated_.count(id) == 0);
      ASSERT_TRUE(change.ok()) << id << ": " << change.status();
    }
    clock_.Advance(absl::Seconds(5));
  }
  // Every partition has exactly one owner among `ids`, and there is exactly one writer.
  void ExpectPartitioned(const std::vector<std::string>& ids, size_t each) {
    std::map<uint32_t, std::string> owner;
    int writers = 0;
    for (const std::string& id : ids) {
      const Ownership& o = *nodes_[id].ownership;
      EXPECT_EQ(o.owned().size(), each) << id;
      for (uint32_t p : o.owned()) {
        EXPECT_TRUE(owner.emplace(p, id).second) << "partition " << p << " owned twice";
      }
      writers += o.writer() ? 1 : 0;
    }
    EXPECT_EQ(owner.size(), kPartitions);
    EXPECT_EQ(writers, 1);
  }
  SimulatedClock clock_;
  std::unique_ptr<NatsServerForTests> server_;
  std::map<std::string, Node> nodes_;
  std::set<std::string> gated_;  // nodes that may not own partitions (Tick(false))
};

TEST_F(OwnershipTest, NodesSharePartitionsAndOneWritesThroughJoinsAndDeaths) {
  Add("a");
  for (int i = 0; i < 2; ++i) Round({"a"});
  ExpectPartitioned({"a"}, 12);

  // Two join: a gives back what is beyond its share, they take it.
  Add("b");
  Add("c");
  for (int i = 0; i < 3; ++i) Round({"a", "b", "c"});
  ExpectPartitioned({"a", "b", "c"}, 4);
  EXPECT_TRUE(nodes_["a"].ownership->writer()) << "the writer stays where it was";

  // a dies (stops ticking): after the term and the skew, b and c hold everything, one writes.
  for (int i = 0; i < 5; ++i) Round({"b", "c"});
  ExpectPartitioned({"b", "c"}, 6);

  // a comes back from a long pause: its first tick learns it lost all it had.
  auto back = nodes_["a"].ownership->Tick();
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->lost.size(), 4u);
  EXPECT_TRUE(back->writer_lost);
  for (int i = 0; i < 3; ++i) Round({"a", "b", "c"});
  ExpectPartitioned({"a", "b", "c"}, 4);
}

TEST_F(OwnershipTest, ACleanStopHandsOverAtOnce) {
  Add("a");
  Add("b");
  for (int i = 0; i < 3; ++i) Round({"a", "b"});
  ExpectPartitioned({"a", "b"}, 6);
  const bool a_wrote = nodes_["a"].ownership->writer();
  ASSERT_TRUE(nodes_[a_wrote ? "a" : "b"].ownership->ReleaseAll().ok());
  const std::string left = a_wrote ? "b" : "a";
  // No term to wait for: the next tick of the other node takes everything.
  clock_.Advance(absl::Seconds(1));
  auto change = nodes_[left].ownership->Tick();
  ASSERT_TRUE(change.ok()) << change.status();
  EXPECT_EQ(change->gained.size(), 6u);
  EXPECT_TRUE(change->writer_gained);
  EXPECT_EQ(change->live_nodes, 1u);
  ExpectPartitioned({left}, 12);
}

// A node whose rules differ from the cluster's (issue 17): it stays a member and may write, but
// holds no partition; the others share its partitions, and it takes its share back once its
// rules agree.
TEST_F(OwnershipTest, ANodeThatMayNotOwnPartitionsReleasesThemAndTheOthersTakeThem) {
  Add("a");
  Add("b");
  Add("c");
  for (int i = 0; i < 3; ++i) Round({"a", "b", "c"});
  ExpectPartitioned({"a", "b", "c"}, 4);
  const std::string writer =
      nodes_["a"].ownership->writer() ? "a" : nodes_["b"].ownership->writer() ? "b" : "c";
  const std::string other = writer == "a" ? "b" : "a";

  // A node that does not write is gated: its first tick gives back all it held.
  gated_ = {other};
  auto change = nodes_[other].ownership->Tick(false);
  ASSERT_TRUE(change.ok()) << change.status();
  EXPECT_EQ(change->lost.size(), 4u);
  EXPECT_TRUE(change->gained.empty());
  EXPECT_EQ(change->live_nodes, 3u) << "it stays a member";
  EXPECT_TRUE(nodes_[other].ownership->owned().empty());
  EXPECT_TRUE(nodes_[other].ownership->gated());
  // The two others share all the partitions (not a third each, leaving a third unowned).
  std::vector<std::string> owners;
  for (const std::string id : {"a", "b", "c"}) {
    if (id != other) owners.push_back(id);
  }
  for (int i = 0; i < 3; ++i) Round({"a", "b", "c"});
  ExpectPartitioned(owners, 6);
  EXPECT_TRUE(nodes_[other].ownership->owned().empty());

  // The writer gated too keeps writing (the writer's rules are the cluster's: it publishes
  // them), and gives its partitions to the one node left.
  gated_ = {other, writer};
  for (int i = 0; i < 3; ++i) Round({"a", "b", "c"});
  std::string last;
  for (const std::string id : {"a", "b", "c"}) {
    if (id != other && id != writer) last = id;
  }
  EXPECT_EQ(nodes_[last].ownership->owned().size(), kPartitions);
  EXPECT_TRUE(nodes_[writer].ownership->writer());
  EXPECT_TRUE(nodes_[writer].ownership->owned().empty());

  // Rules agreeing again: back to a third each.
  gated_.clear();
  for (int i = 0; i < 3; ++i) Round({"a", "b", "c"});
  ExpectPartitioned({"a", "b", "c"}, 4);
  EXPECT_FALSE(nodes_[other].ownership->gated());
}

}  // namespace
}  // namespace palisade::cluster
