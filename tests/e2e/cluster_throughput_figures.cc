// Figures for docs/PERFORMANCE.md "Cluster" (issue 17), not a test: nothing about time is
// asserted. Real processes on loopback: three nats-servers (a JetStream cluster), palisaded nodes
// and the Cloudflare emulator.
//   - Lines/s through one palisaded without cluster {}, and through 1, 2 and 3 clustered nodes:
//     tests/bench:load_client (2 streams of generated sshd lines) against every node at once,
//     the shipped sshd pack; the figure is every node's lines over the wall time of the whole.
//     The nodes, the nats-servers and the load clients share this machine's two cores.
//   - Partition take-over: the owner of an attacked address's partition killed (SIGKILL) after
//     two of three failures; the time until a survivor owns the partition, and until the third
//     failure, shipped right after the kill to another node, is detected (windows rebuilt from
//     the snapshot and the stream, counting resumed).
// Run: bazel test //tests/e2e:cluster_throughput_figures --test_output=streamed (tagged manual).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "palisade/v1/palisade.grpc.pb.h"
#include "services/cluster/match_stream.h"
#include "services/cluster/nats_server_for_tests.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::palisade::cluster::NatsServerForTests;
using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;

constexpr int kLinesPerStream = 100000;
constexpr int kStreams = 2;

std::string ClusterTop(const std::vector<std::unique_ptr<NatsServerForTests>>& nats, int node,
                       int partitions) {
  std::vector<std::string> urls;
  for (const std::string& u : cluster::UrlsOf(nats)) urls.push_back("\"" + u + "\"");
  return absl::StrCat("guard { max_new_bans_per_minute: 100000 }\ncluster {\n  nats { servers: [",
                      absl::StrJoin(urls, ", "), "] }\n  node_id: \"n", node,
                      "\"\n  partitions: ", partitions, "\n  lease_term { seconds: 3 }\n}\n");
}

// load_client against every node at once; every node's lines over the wall time.
double LinesPerSecond(const std::vector<std::unique_ptr<Daemon>>& nodes) {
  std::vector<std::string> commands;
  for (const auto& n : nodes) {
    commands.push_back(absl::StrCat("tests/bench/load_client --server=", n->grpc_address(),
                                    " --streams=", kStreams, " --lines=", kLinesPerStream,
                                    " --kind=sshd"));
  }
  const std::string all = absl::StrCat("( ", absl::StrJoin(commands, " & "), " & wait ) 2>&1");
  int exit_code = -1;
  const absl::Time t0 = absl::Now();
  const std::string out = ::palisade::testing::RunShell(all, &exit_code);
  const absl::Duration took = absl::Now() - t0;
  std::printf("%s", out.c_str());
  EXPECT_EQ(exit_code, 0) << out;
  const double lines = static_cast<double>(nodes.size()) * kStreams * kLinesPerStream;
  return lines / absl::ToDoubleSeconds(took);
}

TEST(ClusterThroughputFigures, LinesPerSecondThroughOneTwoAndThreeNodes) {
  absl::StatusOr<std::unique_ptr<Emulator>> cf = Emulator::Start();
  ASSERT_TRUE(cf.ok()) << cf.status();
  const std::vector<std::string> packs = {"rules/sshd.textproto"};
  {
    const std::string config = ::palisade::testing::WriteEdgeConfig(
        **cf, (*cf)->token_file(), packs, "guard { max_new_bans_per_minute: 100000 }\n");
    absl::StatusOr<std::unique_ptr<Daemon>> d =
        Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
    ASSERT_TRUE(d.ok()) << d.status();
    std::vector<std::unique_ptr<Daemon>> one;
    one.push_back(*std::move(d));
    std::printf("FIGURE lines/s, one palisaded without cluster {}: %.0f\n", LinesPerSecond(one));
  }
  for (int n = 1; n <= 3; ++n) {
    // A fresh NATS cluster each time: no matches of the previous run in the streams.
    absl::StatusOr<std::vector<std::unique_ptr<NatsServerForTests>>> nats =
        NatsServerForTests::StartCluster();
    ASSERT_TRUE(nats.ok()) << nats.status();
    std::vector<std::unique_ptr<Daemon>> nodes;
    for (int i = 1; i <= n; ++i) {
      const std::string config = ::palisade::testing::WriteEdgeConfig(
          **cf, (*cf)->token_file(), packs, ClusterTop(*nats, i, 16));
      absl::StatusOr<std::unique_ptr<Daemon>> d =
          Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
      ASSERT_TRUE(d.ok()) << d.status();
      nodes.push_back(*std::move(d));
    }
    // Every partition owned before the load starts.
    ASSERT_TRUE(::palisade::testing::WaitFor(
        [&] {
          auto admin = palisade::v1::Admin::NewStub(grpc::CreateChannel(
              nodes[0]->grpc_address(), grpc::InsecureChannelCredentials()));
          palisade::v1::StatusResponse status;
          grpc::ClientContext context;
          return admin->Status(&context, {}, &status).ok() &&
                 status.cluster().partition_owners_size() == 16 &&
                 !status.cluster().writer_node().empty();
        },
        absl::Minutes(3)));
    std::printf("FIGURE lines/s, %d clustered node%s (16 partitions, R3): %.0f\n", n,
                n == 1 ? "" : "s", LinesPerSecond(nodes));
  }
}

TEST(ClusterThroughputFigures, PartitionTakeOverAfterTheOwnerIsKilled) {
  absl::StatusOr<std::vector<std::unique_ptr<NatsServerForTests>>> nats =
      NatsServerForTests::StartCluster();
  ASSERT_TRUE(nats.ok()) << nats.status();
  absl::StatusOr<std::unique_ptr<Emulator>> cf = Emulator::Start();
  ASSERT_TRUE(cf.ok()) << cf.status();
  std::vector<std::string> configs, states;
  std::vector<std::unique_ptr<Daemon>> nodes;
  for (int i = 1; i <= 3; ++i) {
    configs.push_back(::palisade::testing::WriteEdgeConfig(
        **cf, (*cf)->token_file(), {"tests/e2e/testdata/cluster.textproto"},
        ClusterTop(*nats, i, 4)));
    states.push_back(absl::StrCat(std::getenv("TEST_TMPDIR"), "/node", i, ".db"));
    absl::StatusOr<std::unique_ptr<Daemon>> d =
        Daemon::Start({"--config=" + configs.back(), "--shutdown_grace=200ms"}, states.back());
    ASSERT_TRUE(d.ok()) << d.status();
    nodes.push_back(*std::move(d));
  }
  // The owner of `partition` seen from node `asker` (-1: none, or it does not answer).
  auto owner_of = [&](int asker, uint32_t partition) {
    auto admin = palisade::v1::Admin::NewStub(
        grpc::CreateChannel(nodes[asker]->grpc_address(), grpc::InsecureChannelCredentials()));
    palisade::v1::StatusResponse status;
    grpc::ClientContext context;
    if (!admin->Status(&context, {}, &status).ok()) return -1;
    if (status.cluster().writer_node().empty()) return -1;
    for (const auto& p : status.cluster().partition_owners()) {
      if (p.partition() == partition) return std::stoi(p.node().substr(1)) - 1;
    }
    return -1;
  };
  auto ship = [&](int i, int count, const std::string& ip) {
    auto ingest = palisade::v1::Ingest::NewStub(
        grpc::CreateChannel(nodes[i]->grpc_address(), grpc::InsecureChannelCredentials()));
    std::vector<std::string> lines(
        count, "Mar  3 14:02:01 web-1 sshd[7]: Failed password for root from " + ip +
                   " port 22 ssh2");
    return ::palisade::testing::ShipLines(*ingest, palisade::v1::LOG_FORMAT_SYSLOG, lines).ok();
  };
  auto decided = [&](int i, const std::string& ip) {
    auto stub = palisade::v1::Decisions::NewStub(
        grpc::CreateChannel(nodes[i]->grpc_address(), grpc::InsecureChannelCredentials()));
    palisade::v1::ListDecisionsRequest req;
    req.set_target(ip);
    palisade::v1::ListDecisionsResponse resp;
    grpc::ClientContext context;
    return stub->List(&context, req, &resp).ok() && resp.decisions_size() > 0;
  };
  std::vector<absl::Duration> owned, detected;
  for (int round = 0; round < 5; ++round) {
    const std::string ip = absl::StrCat("198.18.7.", round + 1);
    const uint32_t partition = cluster::PartitionOf(ip, 4);
    int owner = -1;
    ASSERT_TRUE(::palisade::testing::WaitFor(
        [&] {
          return (owner = owner_of(0, partition)) >= 0 && owner_of(1, partition) == owner &&
                 owner_of(2, partition) == owner;
        },
        absl::Minutes(3)));
    const int a = (owner + 1) % 3, b = (owner + 2) % 3;
    ASSERT_TRUE(ship(a, 2, ip));
    nodes[owner]->Kill();
    const absl::Time t0 = absl::Now();
    nodes[owner].reset();
    ASSERT_TRUE(ship(b, 1, ip));
    bool have_owner = false, have_decision = false;
    while (!(have_owner && have_decision) && absl::Now() - t0 < absl::Minutes(3)) {
      if (!have_owner) {
        const int o = owner_of(a, partition);
        if (o >= 0 && o != owner) {
          have_owner = true;
          owned.push_back(absl::Now() - t0);
        }
      }
      if (!have_decision && decided(a, ip)) {
        have_decision = true;
        detected.push_back(absl::Now() - t0);
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    std::printf("round %d: n%d killed: %s\n", round, owner + 1,
                have_decision ? absl::FormatDuration(detected.back()).c_str() : "not detected");
    absl::StatusOr<std::unique_ptr<Daemon>> back =
        Daemon::Start({"--config=" + configs[owner], "--shutdown_grace=200ms"}, states[owner]);
    ASSERT_TRUE(back.ok()) << back.status();
    nodes[owner] = *std::move(back);
  }
  auto percentiles = [](std::vector<absl::Duration> d) {
    if (d.empty()) return std::string("none");
    std::sort(d.begin(), d.end());
    auto at = [&](double q) {
      return absl::FormatDuration(absl::Trunc(
          d[std::min(d.size() - 1, static_cast<size_t>(q * d.size()))], absl::Milliseconds(10)));
    };
    return absl::StrCat("min ", absl::FormatDuration(absl::Trunc(d[0], absl::Milliseconds(10))),
                        ", p50 ", at(0.5), ", max ", at(1.0), " (n=", d.size(), ")");
  };
  std::printf("FIGURE partition owner SIGKILL -> a survivor owns it (lease_term 3 s): %s\n",
              percentiles(owned).c_str());
  std::printf("FIGURE partition owner SIGKILL -> the crossing after it is detected: %s\n",
              percentiles(detected).c_str());
}

}  // namespace
}  // namespace palisade
