// Figures for docs/PERFORMANCE.md (issue 17), not a test: nothing about time is asserted.
// Three nats-servers (a JetStream cluster), three palisaded (lease_term 3 s) and the Cloudflare
// emulator, real processes on loopback:
//   - a manual ban added on a node that does not write: the call's round trip (the writer's
//     answer, back once that node's table holds it) and the time until a third node lists it;
//   - the writer killed with SIGKILL: the time until another node reports holding the writer
//     lease, and until a ban added on a survivor is answered; the killed node is restarted
//     (same config and state file) before the next round.
// Run: bazel test //tests/e2e:cluster_figures --test_output=streamed (tagged manual). Two cores
// shared by everything on the machine: the figures are what this machine gave, noisy.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "palisade/v1/palisade.grpc.pb.h"
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

std::string Percentiles(std::vector<absl::Duration> d) {
  if (d.empty()) return "none";
  std::sort(d.begin(), d.end());
  auto at = [&](double q) {
    return absl::FormatDuration(
        absl::Trunc(d[std::min(d.size() - 1, static_cast<size_t>(q * d.size()))],
                    absl::Microseconds(100)));
  };
  return absl::StrCat("p50 ", at(0.5), ", p99 ", at(0.99), ", max ", at(1.0), " (n=", d.size(),
                      ")");
}

TEST(ClusterFigures, VisibilityAndTakeOver) {
  absl::StatusOr<std::vector<std::unique_ptr<NatsServerForTests>>> nats =
      NatsServerForTests::StartCluster();
  ASSERT_TRUE(nats.ok()) << nats.status();
  absl::StatusOr<std::unique_ptr<Emulator>> cf = Emulator::Start();
  ASSERT_TRUE(cf.ok()) << cf.status();
  std::vector<std::string> urls;
  for (const std::string& u : cluster::UrlsOf(*nats)) urls.push_back("\"" + u + "\"");
  std::vector<std::string> configs, states;
  std::vector<std::unique_ptr<Daemon>> nodes;
  for (int i = 1; i <= 3; ++i) {
    const std::string top =
        absl::StrCat("guard { max_new_bans_per_minute: 100000 }\ncluster {\n  nats { servers: [",
                     absl::StrJoin(urls, ", "), "] }\n  node_id: \"n", i,
                     "\"\n  partitions: 4\n  lease_term { seconds: 3 }\n}\n");
    configs.push_back(::palisade::testing::WriteEdgeConfig(
        **cf, (*cf)->token_file(), {"tests/e2e/testdata/cluster.textproto"}, top));
    states.push_back(absl::StrCat(std::getenv("TEST_TMPDIR"), "/node", i, ".db"));
    absl::StatusOr<std::unique_ptr<Daemon>> d =
        Daemon::Start({"--config=" + configs.back(), "--shutdown_grace=200ms"}, states.back());
    ASSERT_TRUE(d.ok()) << d.status();
    nodes.push_back(*std::move(d));
  }
  auto writer = [&]() {
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (nodes[i] == nullptr) continue;
      absl::StatusOr<std::string> m = HttpGet(nodes[i]->metrics_port(), "/metrics");
      if (m.ok() && MetricValue(*m, "palisade_cluster_writer_held") == 1) return static_cast<int>(i);
    }
    return -1;
  };
  auto stub = [&](int i) {
    return palisade::v1::Decisions::NewStub(
        grpc::CreateChannel(nodes[i]->grpc_address(), grpc::InsecureChannelCredentials()));
  };
  int ip = 0;
  auto ban = [&](palisade::v1::Decisions::Stub& s, palisade::v1::Decision* out) {
    palisade::v1::AddDecisionRequest req;
    ++ip;
    req.mutable_target()->set_value(absl::StrCat("198.18.", ip / 250, ".", ip % 250 + 1));
    *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(2));
    return s.Add(&context, req, out).ok();
  };
  ASSERT_TRUE(::palisade::testing::WaitFor([&] { return writer() >= 0; }, absl::Minutes(3)));

  // Visibility: add on a node that does not write, read on the third.
  {
    const int w = writer();
    auto on = stub((w + 1) % 3);
    auto third = stub((w + 2) % 3);
    std::vector<absl::Duration> round_trip, visible;
    for (int n = 0; n < 200; ++n) {
      palisade::v1::Decision d;
      const absl::Time t0 = absl::Now();
      if (!ban(*on, &d)) continue;
      round_trip.push_back(absl::Now() - t0);
      for (;;) {
        palisade::v1::GetDecisionRequest get;
        get.set_id(d.id());
        palisade::v1::Decision got;
        grpc::ClientContext context;
        if (third->Get(&context, get, &got).ok() && got.active()) break;
        if (absl::Now() - t0 > absl::Minutes(1)) break;
        absl::SleepFor(absl::Microseconds(200));
      }
      visible.push_back(absl::Now() - t0);
    }
    std::printf("FIGURE decisions.add on a node that does not write, round trip: %s\n",
                Percentiles(round_trip).c_str());
    std::printf("FIGURE decisions.add start -> active on a third node: %s\n",
                Percentiles(visible).c_str());
  }

  // Take-over after SIGKILL of the writer.
  std::vector<absl::Duration> lease, answered;
  for (int round = 0; round < 5; ++round) {
    const int w = writer();
    ASSERT_GE(w, 0);
    nodes[w]->Kill();
    const absl::Time t0 = absl::Now();
    nodes[w].reset();
    int successor = -1;
    while ((successor = writer()) < 0 && absl::Now() - t0 < absl::Minutes(3)) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    lease.push_back(absl::Now() - t0);
    auto s = stub((w + 1) % 3);
    palisade::v1::Decision d;
    while (!ban(*s, &d) && absl::Now() - t0 < absl::Minutes(3)) {
    }
    answered.push_back(absl::Now() - t0);
    absl::StatusOr<std::unique_ptr<Daemon>> back =
        Daemon::Start({"--config=" + configs[w], "--shutdown_grace=200ms"}, states[w]);
    ASSERT_TRUE(back.ok()) << back.status();
    nodes[w] = *std::move(back);
    std::printf("round %d: n%d killed, n%d writes after %s\n", round, w + 1, successor + 1,
                absl::FormatDuration(absl::Trunc(lease.back(), absl::Milliseconds(10))).c_str());
  }
  std::printf("FIGURE writer SIGKILL -> another node holds edge-writer (lease_term 3 s, skew 2 s): "
              "%s\n",
              Percentiles(lease).c_str());
  std::printf("FIGURE writer SIGKILL -> a ban added on a survivor is answered: %s\n",
              Percentiles(answered).c_str());
}

}  // namespace
}  // namespace palisade
