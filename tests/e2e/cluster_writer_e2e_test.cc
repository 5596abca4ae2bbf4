// Decisions a cluster's writer makes for a node that does not write (issue 17). A leaked API
// token: the line that leaks it reaches a node that does not write to Cloudflare. That node verifies the token itself (the verify needs only the token),
// sends the writer a detection by the token's id, never the secret, and the writer revokes it.
// Recidive: blocks the writer decides for another node count as its own. Real processes: one
// nats-server, two palisaded nodes, the Cloudflare emulator. No timing is
// asserted: every wait is for a condition, with a deadline of minutes.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "palisade/v1/palisade.grpc.pb.h"
#include "services/cluster/nats_server_for_tests.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::nlohmann::json;
using ::palisade::cluster::NatsServerForTests;
using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;
using ::palisade::testing::HttpGet;
using ::palisade::testing::HttpPost;
using ::palisade::testing::MetricValue;
using ::palisade::testing::WaitFor;

constexpr absl::Duration kLong = absl::Minutes(3);

// Node i's metrics say it holds the edge-writer lease.
bool Writes(const Daemon& node) {
  absl::StatusOr<std::string> metrics = HttpGet(node.metrics_port(), "/metrics");
  return metrics.ok() && MetricValue(*metrics, "palisade_cluster_writer_held") == 1;
}

// n1 starts alone and writes; n2 joins and does not. Empty when a node failed to start.
std::vector<std::unique_ptr<Daemon>> StartTwoNodes(const NatsServerForTests& nats,
                                                   const Emulator& cf,
                                                   const std::vector<std::string>& packs) {
  std::vector<std::unique_ptr<Daemon>> nodes;
  for (int i = 1; i <= 2; ++i) {
    const std::string top = absl::StrCat("cluster {\n  nats { servers: \"", nats.url(),
                                         "\" }\n  node_id: \"n", i, "\"\n  partitions: 4\n}\n");
    const std::string config =
        ::palisade::testing::WriteEdgeConfig(cf, cf.token_file(), packs, top);
    absl::StatusOr<std::unique_ptr<Daemon>> d =
        Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
    EXPECT_TRUE(d.ok()) << "node " << i << ": " << d.status();
    if (!d.ok()) return {};
    nodes.push_back(*std::move(d));
    if (i == 1 && !WaitFor([&] { return Writes(*nodes[0]); }, kLong)) return {};
  }
  EXPECT_FALSE(Writes(*nodes[1]));
  return nodes;
}

TEST(ClusterWriterE2eTest, ATokenLeakedToANodeThatDoesNotWriteIsRevokedByIdWithoutItsSecret) {
  absl::StatusOr<std::unique_ptr<NatsServerForTests>> nats = NatsServerForTests::Start();
  ASSERT_TRUE(nats.ok()) << nats.status();
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  absl::StatusOr<std::string> seeded =
      HttpPost(cf.port(), "/__emulator/tokens", R"({"name":"ci-deploy","permissions":["lists"]})");
  ASSERT_TRUE(seeded.ok()) << seeded.status();
  const json leaked = json::parse(*seeded)["result"];
  const std::string secret = leaked["value"].get<std::string>();

  std::vector<std::unique_ptr<Daemon>> nodes =
      StartTwoNodes(**nats, cf, {"rules/cloudflare-tokens.textproto"});
  ASSERT_EQ(nodes.size(), 2u);

  auto ingest = palisade::v1::Ingest::NewStub(
      grpc::CreateChannel(nodes[1]->grpc_address(), grpc::InsecureChannelCredentials()));
  absl::StatusOr<ShipSummary> shipped = ::palisade::testing::ShipLines(
      *ingest, palisade::v1::LOG_FORMAT_SYSLOG,
      {"Mar  3 14:02:01 ci deploy[9]: curl -H 'Authorization: Bearer " + secret +
       "' https://api.example.com"});
  ASSERT_TRUE(shipped.ok()) << shipped.status();

  // The writer revoked it (disabled: the pack's default).
  json state;
  EXPECT_TRUE(WaitFor(
      [&] {
        state = ::palisade::testing::EmulatorState(cf);
        for (const auto& t : state["tokens"]) {
          if (t["id"] == leaked["id"]) return t["status"] == "disabled";
        }
        return false;
      },
      kLong))
      << state.dump(2);
  // One decision, by the token's id, on both nodes; the secret in neither.
  for (int i = 0; i < 2; ++i) {
    auto decisions = palisade::v1::Decisions::NewStub(
        grpc::CreateChannel(nodes[i]->grpc_address(), grpc::InsecureChannelCredentials()));
    palisade::v1::ListDecisionsResponse list;
    EXPECT_TRUE(WaitFor(
        [&] {
          palisade::v1::ListDecisionsRequest req;
          req.set_target(leaked["id"].get<std::string>());
          grpc::ClientContext context;
          return decisions->List(&context, req, &list).ok() && list.decisions_size() == 1;
        },
        kLong))
        << "node " << i << ": " << list.DebugString();
    ASSERT_EQ(list.decisions_size(), 1) << "node " << i;
    EXPECT_EQ(list.decisions(0).target().kind(), palisade::v1::TARGET_KIND_TOKEN_ID);
    EXPECT_EQ(list.decisions(0).rule_id(), "cloudflare-token-leaked");
    EXPECT_EQ(list.decisions(0).DebugString().find(secret), std::string::npos);
  }
  EXPECT_TRUE(Writes(*nodes[0])) << "the writer changed: the revocation was not n1's";
}

// Recidive in a cluster: an address blocked three times in a day on a node that does not write
// (the writer decides each, outside any batch) is blocked for a week, as by a single daemon. A
// block counts when it starts anew (a renewal is the same ban): each of the first two is
// withdrawn by hand before the next probe.
TEST(ClusterWriterE2eTest, RecidiveCountsTheBlocksTheWriterDecidesForOtherNodes) {
  absl::StatusOr<std::unique_ptr<NatsServerForTests>> nats = NatsServerForTests::Start();
  ASSERT_TRUE(nats.ok()) << nats.status();
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  std::vector<std::unique_ptr<Daemon>> nodes = StartTwoNodes(
      **nats, **emulator, {"tests/e2e/testdata/cluster.textproto", "rules/recidive.textproto"});
  ASSERT_EQ(nodes.size(), 2u);
  auto ingest = palisade::v1::Ingest::NewStub(
      grpc::CreateChannel(nodes[1]->grpc_address(), grpc::InsecureChannelCredentials()));
  auto decisions = palisade::v1::Decisions::NewStub(
      grpc::CreateChannel(nodes[1]->grpc_address(), grpc::InsecureChannelCredentials()));
  const std::string ip = "203.0.113.77";
  auto decided = [&]() -> palisade::v1::ListDecisionsResponse {
    palisade::v1::ListDecisionsRequest req;
    req.set_target(ip);
    req.set_active_only(true);
    palisade::v1::ListDecisionsResponse list;
    grpc::ClientContext context;
    if (!decisions->List(&context, req, &list).ok()) return {};
    return list;
  };
  // Three probes, each shipped once the block before was made and withdrawn.
  for (uint32_t i = 0; i < 3; ++i) {
    const std::string line =
        absl::StrCat(absl::FormatTime("%b %e %H:%M:%S", absl::Now(), absl::UTCTimeZone()),
                     " web-2 sshd[1]: Did not receive identification string from ", ip);
    absl::StatusOr<ShipSummary> shipped = ::palisade::testing::ShipLines(
        *ingest, palisade::v1::LOG_FORMAT_SYSLOG, {line}, "web-2:/var/log/auth.log");
    ASSERT_TRUE(shipped.ok()) << shipped.status();
    palisade::v1::ListDecisionsResponse made;
    ASSERT_TRUE(WaitFor(
        [&] {
          made = decided();
          return made.decisions_size() == 1;
        },
        kLong))
        << "probe " << i << ": " << decided().DebugString();
    if (i == 2) break;
    grpc::ClientContext context;
    palisade::v1::DeleteDecisionRequest req;
    req.set_id(made.decisions(0).id());
    palisade::v1::Decision withdrawn;
    ASSERT_TRUE(decisions->Delete(&context, req, &withdrawn).ok()) << "probe " << i;
    ASSERT_TRUE(WaitFor([&] { return decided().decisions_size() == 0; }, kLong))
        << "probe " << i << ": " << decided().DebugString();
  }
  // The third block is recidive's third: the decision lasts a week from then, not an hour.
  palisade::v1::ListDecisionsResponse list;
  EXPECT_TRUE(WaitFor(
      [&] {
        list = decided();
        return list.decisions_size() == 1 &&
               list.decisions(0).expiry().seconds() - list.decisions(0).start().seconds() >
                   6 * 24 * 3600;
      },
      kLong))
      << list.DebugString();
}

}  // namespace
}  // namespace palisade
