// The cluster end to end (issue 17): three nats-servers in a JetStream cluster, three palisaded
// nodes on loopback ports and the Cloudflare emulator, all real processes. A ban added on a node
// that does not write is the writer's, visible on every node, and reaches the edge once; the
// writer killed with SIGKILL in the middle of a run of bans is replaced by another node and the
// edge still ends exact: one access rule and one create per decision, none lost.
// No timing is asserted: every wait is for a condition, with deadlines of minutes.
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "grpcpp/grpcpp.h"
#include "palisade/v1/palisade.grpc.pb.h"
#include "services/cluster/match_stream.h"
#include "services/cluster/nats_server_for_tests.h"
#include "services/common/proto_time.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::palisade::cluster::NatsServerForTests;
using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;
using ::palisade::testing::HttpGet;
using ::palisade::testing::MetricValue;
using ::palisade::testing::WaitFor;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr absl::Duration kLong = absl::Minutes(3);

class ClusterE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::vector<std::unique_ptr<NatsServerForTests>>> servers =
        NatsServerForTests::StartCluster();
    ASSERT_TRUE(servers.ok()) << servers.status();
    nats_ = *std::move(servers);
    absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
    ASSERT_TRUE(emulator.ok()) << emulator.status();
    cf_ = *std::move(emulator);
    std::vector<std::string> urls;
    for (const std::string& u : cluster::UrlsOf(nats_)) urls.push_back("\"" + u + "\"");
    // Node 1 names its servers with a user and password in the URLs (the servers require none
    // and ignore them): they must not reach its log.
    std::vector<std::string> with_password;
    for (const std::string& u : cluster::UrlsOf(nats_)) {
      with_password.push_back(
          "\"" + absl::StrReplaceAll(u, {{"nats://", "nats://palisade:" + std::string(kPassword) + "@"}}) + "\"");
    }
    node1_log_ = absl::StrCat(std::getenv("TEST_TMPDIR"), "/node1-", ++runs_, ".log");
    for (int i = 1; i <= 3; ++i) {
      // A term that outlasts a busy machine's slow ticks (as in cluster_failures_e2e_test: 3 s
      // let the writer lease change hands while the test looked): a dead writer is replaced
      // after ~10 s, within the waits' minutes.
      const std::string top = absl::StrCat(
          "cluster {\n  nats { servers: [", absl::StrJoin(i == 1 ? with_password : urls, ", "),
          "] }\n  node_id: \"n", i,
          "\"\n  partitions: 4\n  lease_term { seconds: 10 }\n}\n"
          "feeds { name: \"blocklist\" format: FEED_FORMAT_PLAIN to_edge: true }\n");
      const std::string config = ::palisade::testing::WriteEdgeConfig(
          *cf_, cf_->token_file(), {"tests/e2e/testdata/cluster.textproto"}, top);
      absl::StatusOr<std::unique_ptr<Daemon>> d = Daemon::Start(
          {"--config=" + config, "--shutdown_grace=200ms"}, "", i == 1 ? node1_log_ : "");
      ASSERT_TRUE(d.ok()) << "node " << i << ": " << d.status();
      nodes_.push_back(*std::move(d));
    }
  }

  // The node whose metrics say it writes (-1: none, or none answers), among the live ones.
  int Writer() {
    int writer = -1;
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (nodes_[i] == nullptr) continue;
      absl::StatusOr<std::string> metrics = HttpGet(nodes_[i]->metrics_port(), "/metrics");
      if (metrics.ok() && MetricValue(*metrics, "palisade_cluster_writer_held") == 1) {
        if (writer != -1) return -2;  // two at once: the caller waits for it to settle
        writer = static_cast<int>(i);
      }
    }
    return writer;
  }
  // Feeds.Push to node i of feed "blocklist", one message per element of `data` (stopping at
  // the first the server refuses), the last one marked so: its status, and its answer in *pushed.
  grpc::Status PushFeed(int i, const std::vector<std::string>& data,
                        palisade::v1::PushFeedResponse* pushed) {
    auto feeds = palisade::v1::Feeds::NewStub(
        grpc::CreateChannel(nodes_[i]->grpc_address(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(2));
    auto stream = feeds->Push(&context, pushed);
    palisade::v1::FeedChunk chunk;
    chunk.set_feed("blocklist");
    for (size_t j = 0; j < data.size(); ++j) {
      chunk.set_data(data[j]);
      chunk.set_last(j + 1 == data.size());
      if (!stream->Write(chunk)) break;
      chunk.clear_feed();  // named in the first message
    }
    stream->WritesDone();
    return stream->Finish();
  }

  int WaitForWriter() {
    int writer = -1;
    WaitFor([&] { return (writer = Writer()) >= 0; }, kLong);
    return writer;
  }

  std::unique_ptr<palisade::v1::Decisions::Stub> DecisionsOf(int i) {
    return palisade::v1::Decisions::NewStub(
        grpc::CreateChannel(nodes_[i]->grpc_address(), grpc::InsecureChannelCredentials()));
  }

  // Decisions.Add on node i: a one-hour block of `ip` (an access rule).
  absl::StatusOr<palisade::v1::Decision> Ban(int i, const std::string& ip) {
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_value(ip);
    *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
    req.set_reason("cluster e2e");
    palisade::v1::Decision d;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(2));
    grpc::Status s = DecisionsOf(i)->Add(&context, req, &d);
    if (!s.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
    }
    return d;
  }

  // Decisions.Get of `id` on node i is active.
  bool ActiveOn(int i, const std::string& id) {
    palisade::v1::GetDecisionRequest req;
    req.set_id(id);
    palisade::v1::Decision d;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return DecisionsOf(i)->Get(&context, req, &d).ok() && d.active();
  }

  // The id of the active decision on `target` that node i lists ("" when none).
  std::string ActiveIdOf(int i, const std::string& target) {
    palisade::v1::ListDecisionsRequest req;
    req.set_target(target);
    req.set_active_only(true);
    palisade::v1::ListDecisionsResponse resp;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (!DecisionsOf(i)->List(&context, req, &resp).ok() || resp.decisions_size() != 1) return "";
    return resp.decisions(0).id();
  }

  // The emulator's access rules by value (how many of each), and its audit log's creates.
  std::map<std::string, int> AccessRules() {
    return ::palisade::testing::EmulatorAccessRuleCounts(*cf_);
  }
  int CreateCount() { return ::palisade::testing::EmulatorAccessRuleCreates(*cf_); }

  std::vector<std::unique_ptr<NatsServerForTests>> nats_;
  static constexpr char kPassword[] = "nats-s3cret-pw";
  static inline int runs_ = 0;
  std::string node1_log_;  // node 1's stdout and stderr
  std::unique_ptr<Emulator> cf_;
  std::vector<std::unique_ptr<Daemon>> nodes_;
};

// A NATS password in the config's server URLs is a secret: node 1's log names its servers with
// the credentials redacted, and never holds the password.
TEST_F(ClusterE2eTest, ANodesLogNamesItsServersWithoutTheirPassword) {
  std::string log;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (!absl::StrContains(log, "cluster: node n1 on") && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(100));
    std::ifstream in(node1_log_);
    log.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  ASSERT_THAT(log, HasSubstr("cluster: node n1 on nats://***@127.0.0.1:"));
  EXPECT_THAT(log, Not(HasSubstr(kPassword)));
}

TEST_F(ClusterE2eTest, ABanAddedOnAnyNodeIsEverywhereAndTheEdgeStaysExactWhenTheWriterDies) {
  ASSERT_EQ(nodes_.size(), 3u);
  const int writer = WaitForWriter();
  ASSERT_GE(writer, 0) << "no node took the edge-writer lease";
  const int other = (writer + 1) % 3;

  // A ban added on a node that does not write: the writer's, on every node, at the edge once.
  absl::StatusOr<palisade::v1::Decision> first = Ban(other, "203.0.113.1");
  ASSERT_TRUE(first.ok()) << first.status();
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(WaitFor([&] { return ActiveOn(i, first->id()); }, kLong)) << "node " << i;
  }
  EXPECT_TRUE(WaitFor([&] { return AccessRules().count("203.0.113.1") == 1; }, kLong));
  EXPECT_TRUE(WaitFor([&] { return CreateCount() == 1; }, kLong));

  // A feed pushed to a node that does not write: the writer applies it (its answer comes
  // back), every node holds one decision per entry, the edge's list one item per entry.
  const std::set<std::string> listed = {"198.51.100.0/28", "198.51.100.64/28", "203.0.113.200"};
  {
    palisade::v1::PushFeedResponse pushed;
    grpc::Status s =
        PushFeed(other, {"198.51.100.0/28\n198.51.100.64/28\n203.0.113.200\n"}, &pushed);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(pushed.accepted(), 3u);
    EXPECT_EQ(pushed.version(), 1u);
  }
  // Over one NATS message: a node that does not write refuses it, naming the limit.
  {
    std::vector<std::string> data(20);
    for (size_t i = 0; i < data.size(); ++i) {
      while (data[i].size() < (64u << 10)) {
        absl::StrAppend(&data[i], "198.18.", i, ".", data[i].size() % 250, "\n");
      }
    }
    palisade::v1::PushFeedResponse pushed;
    grpc::Status s = PushFeed(other, data, &pushed);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
    EXPECT_NE(s.error_message().find("1044480 bytes a node forwards"), std::string::npos)
        << s.error_message();
  }
  std::map<std::string, std::string> feed_ids;  // entry -> decision id (the writer's)
  for (const std::string& entry : listed) {
    ASSERT_TRUE(WaitFor([&] { return !(feed_ids[entry] = ActiveIdOf(writer, entry)).empty(); },
                        kLong))
        << entry;
    for (int i = 0; i < 3; ++i) {
      EXPECT_TRUE(WaitFor([&] { return ActiveIdOf(i, entry) == feed_ids[entry]; }, kLong))
          << "node " << i << ": " << entry;
    }
  }
  std::map<std::string, int> items;  // the list's items by value (a value twice: two items)
  EXPECT_TRUE(WaitFor(
      [&] {
        items.clear();
        nlohmann::json state = ::palisade::testing::EmulatorState(*cf_);
        if (!state.is_object() || !state.contains("lists") ||
            !state["lists"].contains("palisade_block")) {
          return false;
        }
        for (const auto& item : state["lists"]["palisade_block"]) {
          ++items[item["ip"].get<std::string>()];
        }
        return items.size() == listed.size();
      },
      kLong))
      << ::palisade::testing::EmulatorState(*cf_).dump();
  for (const std::string& entry : listed) EXPECT_EQ(items[entry], 1) << entry;

  // The feed's version reached the third node (it follows, it does not write): one line from an
  // address it lists is enough for the in_feed rule there.
  {
    const int third = (writer + 2) % 3;
    auto ingest_third = palisade::v1::Ingest::NewStub(
        grpc::CreateChannel(nodes_[third]->grpc_address(), grpc::InsecureChannelCredentials()));
    std::string listed_id;
    // Shipped again until detected: the follower reads the version within a second or so.
    ASSERT_TRUE(WaitFor(
        [&] {
          const std::string line =
              "Mar  3 14:02:01 web-3 sshd[9]: Invalid user admin from 198.51.100.7 port 40022";
          if (!::palisade::testing::ShipLines(*ingest_third, palisade::v1::LOG_FORMAT_SYSLOG,
                                              {line})
                   .ok()) {
            return false;
          }
          return !(listed_id = ActiveIdOf(writer, "198.51.100.7")).empty();
        },
        kLong))
        << "the in_feed rule did not detect on node " << third;
    EXPECT_TRUE(WaitFor([&] { return AccessRules().count("198.51.100.7") == 1; }, kLong));
    EXPECT_TRUE(WaitFor([&] { return CreateCount() == 2; }, kLong));
  }

  // A detection on a node that does not write is the writer's to decide: on every node, at the
  // edge once.
  auto ingest = palisade::v1::Ingest::NewStub(
      grpc::CreateChannel(nodes_[other]->grpc_address(), grpc::InsecureChannelCredentials()));
  ASSERT_TRUE(::palisade::testing::ShipLines(
                  *ingest, palisade::v1::LOG_FORMAT_SYSLOG,
                  {"Mar  3 14:02:01 web-1 sshd[1]: Did not receive identification string from "
                   "203.0.113.100"})
                  .ok());
  std::string detected;
  ASSERT_TRUE(WaitFor([&] { return !(detected = ActiveIdOf(writer, "203.0.113.100")).empty(); },
                      kLong));
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(WaitFor([&] { return ActiveIdOf(i, "203.0.113.100") == detected; }, kLong))
        << "node " << i;
  }
  EXPECT_TRUE(WaitFor([&] { return AccessRules().count("203.0.113.100") == 1; }, kLong));

  // An attack split across two nodes, each seeing fewer failures than the threshold (3): the
  // owner of the address's partition counts them all and the writer decides once.
  const int third = (writer + 2) % 3;
  auto ingest_third = palisade::v1::Ingest::NewStub(
      grpc::CreateChannel(nodes_[third]->grpc_address(), grpc::InsecureChannelCredentials()));
  const std::string failure =
      "Mar  3 14:02:01 web-1 sshd[7]: Failed password for root from 203.0.113.150 port 22 ssh2";
  ASSERT_TRUE(::palisade::testing::ShipLines(*ingest, palisade::v1::LOG_FORMAT_SYSLOG,
                                             {failure, failure}, "web-1:/var/log/auth.log")
                  .ok());
  ASSERT_TRUE(::palisade::testing::ShipLines(*ingest_third, palisade::v1::LOG_FORMAT_SYSLOG,
                                             {failure}, "web-2:/var/log/auth.log")
                  .ok());
  std::string split;
  ASSERT_TRUE(
      WaitFor([&] { return !(split = ActiveIdOf(writer, "203.0.113.150")).empty(); }, kLong))
      << "the split attack was not detected";
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(WaitFor([&] { return ActiveIdOf(i, "203.0.113.150") == split; }, kLong))
        << "node " << i;
  }
  EXPECT_TRUE(WaitFor([&] { return AccessRules().count("203.0.113.150") == 1; }, kLong));

  // The same split by an IPv6 attacker taking a new address of its /64 for each try (two read
  // by one node, one by another): no address fails twice, but the range's matches reach one
  // owner (PartitionKeyOf: its /48), which counts the /64's window: one range rule at the edge.
  // What the owners' partitions read, summed over the nodes (-1: a node did not answer).
  auto taken = [&](const std::string& result) {
    double sum = 0;
    for (const auto& node : nodes_) {
      absl::StatusOr<std::string> metrics = HttpGet(node->metrics_port(), "/metrics");
      if (!metrics.ok()) return -1.0;
      sum += MetricValue(*metrics, "palisade_cluster_matches_taken_total",
                         {absl::StrCat("result=\"", result, "\"")});
    }
    return sum;
  };
  double counted_before = 0;  // the split's three, at least (synced after each poll)
  ASSERT_TRUE(WaitFor([&] { return (counted_before = taken("counted")) >= 3; }, kLong))
      << counted_before;
  const std::string range = "2001:db8:79:1::/64";
  auto rotated = [](absl::string_view address) {
    return absl::StrCat("Mar  3 14:02:01 web-1 sshd[8]: Failed password for root from ", address,
                        " port 22 ssh2");
  };
  ASSERT_TRUE(
      ::palisade::testing::ShipLines(*ingest, palisade::v1::LOG_FORMAT_SYSLOG,
                                     {rotated("2001:db8:79:1::1"), rotated("2001:db8:79:1::2")},
                                     "web-1:/var/log/auth.log")
          .ok());
  ASSERT_TRUE(::palisade::testing::ShipLines(*ingest_third, palisade::v1::LOG_FORMAT_SYSLOG,
                                             {rotated("2001:db8:79:1::3")},
                                             "web-2:/var/log/auth.log")
                  .ok());
  std::string rotation;
  ASSERT_TRUE(WaitFor([&] { return !(rotation = ActiveIdOf(writer, range)).empty(); }, kLong))
      << "the IPv6 rotation was not detected as its /64";
  EXPECT_TRUE(WaitFor([&] { return AccessRules().count(range) == 1; }, kLong));
  // The owners say what their partitions read: the rotation's three matches counted, none
  // refused (one rule set; no other routing).
  EXPECT_TRUE(WaitFor([&] { return taken("counted") >= counted_before + 3; }, kLong))
      << counted_before << " then " << taken("counted");
  EXPECT_EQ(taken("refused_version"), 0);
  EXPECT_EQ(taken("refused_invalid"), 0);

  // Bans from both other nodes, the writer killed with SIGKILL half-way.
  std::set<std::string> ips = {"203.0.113.1", "198.51.100.7", "203.0.113.100", "203.0.113.150",
                               range};
  std::vector<std::string> ids = {first->id(), detected, split, rotation};
  for (int n = 2; n <= 12; ++n) {
    if (n == 7) {
      nodes_[writer]->Kill();
      nodes_[writer].reset();
    }
    const int on = n % 2 == 0 ? (writer + 1) % 3 : (writer + 2) % 3;
    const std::string ip = absl::StrCat("203.0.113.", n);
    // While no node holds the lease the call waits; it may still fail after its deadline (the
    // take-over outlasting it): tried again, as a client would.
    absl::StatusOr<palisade::v1::Decision> d;
    ASSERT_TRUE(WaitFor([&] { return (d = Ban(on, ip)).ok(); }, kLong)) << ip << ": " << d.status();
    ips.insert(ip);
    ids.push_back(d->id());
  }
  const int successor = WaitForWriter();
  ASSERT_GE(successor, 0);
  EXPECT_NE(successor, writer);

  // Status on a node that does not write: the successor writes, two nodes live (once the dead
  // one's membership ran out), every partition owned by one of them; palisadectl prints it.
  const int survivor = 3 - writer - successor;
  palisade::v1::ClusterStatus cluster;
  EXPECT_TRUE(WaitFor(
      [&] {
        auto admin = palisade::v1::Admin::NewStub(grpc::CreateChannel(
            nodes_[survivor]->grpc_address(), grpc::InsecureChannelCredentials()));
        palisade::v1::StatusResponse status;
        grpc::ClientContext context;
        if (!admin->Status(&context, {}, &status).ok()) return false;
        cluster = status.cluster();
        return cluster.live_nodes_size() == 2 && cluster.partition_owners_size() == 4 &&
               cluster.writer_node() == absl::StrCat("n", successor + 1);
      },
      kLong))
      << cluster.DebugString();
  EXPECT_EQ(cluster.node_id(), absl::StrCat("n", survivor + 1));
  EXPECT_FALSE(cluster.writer());
  EXPECT_TRUE(cluster.nats_connected());
  EXPECT_EQ(cluster.partitions(), 4u);
  for (const auto& p : cluster.partition_owners()) {
    EXPECT_NE(p.node(), absl::StrCat("n", writer + 1)) << "partition " << p.partition();
  }
  int exit_code = -1;
  const std::string printed = ::palisade::testing::RunShell(
      absl::StrCat("services/cli/palisadectl --server=", nodes_[survivor]->grpc_address(),
                   " cluster status 2>&1"),
      &exit_code);
  EXPECT_EQ(exit_code, 0) << printed;
  EXPECT_NE(printed.find(absl::StrCat("writer:     n", successor + 1)), std::string::npos)
      << printed;
  EXPECT_NE(printed.find("nodes:      2 live"), std::string::npos) << printed;

  // Every decision on both live nodes, every address at the edge once, one create each.
  for (int i = 0; i < 3; ++i) {
    if (nodes_[i] == nullptr) continue;
    for (const std::string& id : ids) {
      EXPECT_TRUE(WaitFor([&] { return ActiveOn(i, id); }, kLong)) << "node " << i << ": " << id;
    }
  }
  std::map<std::string, int> rules;
  EXPECT_TRUE(WaitFor(
      [&] {
        rules = AccessRules();
        std::set<std::string> values;
        for (const auto& [v, n] : rules) values.insert(v);
        return values == ips;
      },
      kLong));
  for (const auto& [value, count] : rules) EXPECT_EQ(count, 1) << value << " duplicated";
  EXPECT_EQ(CreateCount(), static_cast<int>(ips.size()));
}

// The owner of an address's partition killed (SIGKILL) between the attack's failures: another
// node takes the partition, rebuilds its windows from the match stream, and the threshold is
// crossed once: one decision, one access rule.
TEST_F(ClusterE2eTest, AThresholdCrossedAcrossTheDeathOfThePartitionOwnerIsDetectedOnce) {
  ASSERT_EQ(nodes_.size(), 3u);
  ASSERT_GE(WaitForWriter(), 0);
  const std::string ip = "203.0.113.160";
  const uint32_t partition = cluster::PartitionOf(ip, 4);
  // Its owner, once every partition has one.
  int owner = -1;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto admin = palisade::v1::Admin::NewStub(
            grpc::CreateChannel(nodes_[0]->grpc_address(), grpc::InsecureChannelCredentials()));
        palisade::v1::StatusResponse status;
        grpc::ClientContext context;
        if (!admin->Status(&context, {}, &status).ok()) return false;
        if (status.cluster().partition_owners_size() != 4) return false;
        for (const auto& p : status.cluster().partition_owners()) {
          if (p.partition() == partition) owner = std::stoi(p.node().substr(1)) - 1;
        }
        return owner >= 0;
      },
      kLong));
  const int a = (owner + 1) % 3, b = (owner + 2) % 3;
  auto ship = [&](int i, int count, const std::string& source) {
    auto ingest = palisade::v1::Ingest::NewStub(
        grpc::CreateChannel(nodes_[i]->grpc_address(), grpc::InsecureChannelCredentials()));
    std::vector<std::string> lines(
        count, "Mar  3 14:02:01 web-1 sshd[7]: Failed password for root from " + ip +
                   " port 22 ssh2");
    return ::palisade::testing::ShipLines(*ingest, palisade::v1::LOG_FORMAT_SYSLOG, lines, source)
        .ok();
  };
  ASSERT_TRUE(ship(a, 2, "web-1:/var/log/auth.log"));
  nodes_[owner]->Kill();
  nodes_[owner].reset();
  ASSERT_TRUE(ship(b, 1, "web-2:/var/log/auth.log"));

  std::string id;
  ASSERT_TRUE(WaitFor([&] { return !(id = ActiveIdOf(a, ip)).empty(); }, kLong))
      << "the crossing was lost with the owner";
  EXPECT_TRUE(WaitFor([&] { return ActiveIdOf(b, ip) == id; }, kLong));
  EXPECT_TRUE(WaitFor([&] { return AccessRules().count(ip) == 1; }, kLong));
  // Once: one decision on the target (active or not), one create at the edge.
  palisade::v1::ListDecisionsRequest req;
  req.set_target(ip);
  palisade::v1::ListDecisionsResponse all;
  grpc::ClientContext context;
  ASSERT_TRUE(DecisionsOf(a)->List(&context, req, &all).ok());
  EXPECT_EQ(all.decisions_size(), 1);
  EXPECT_EQ(all.decisions(0).extensions(), 0u) << "the crossing was raised again";
  EXPECT_EQ(AccessRules().at(ip), 1);
  EXPECT_EQ(CreateCount(), 1);
}

}  // namespace
}  // namespace palisade
