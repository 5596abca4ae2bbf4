// End to end for session correlation (issue 13 §1): the real palisaded with a pack of session
// rules (tests/e2e/testdata/sessions.textproto), sshd lines of many connections interleaved and
// shipped over gRPC from two hosts that reuse the same pids, and the access rules that reach the
// real emulator. Only connections that failed are banned, each under its own address, though
// the lines that trigger the bans name no address or mean nothing without the failure.
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "palisade/v1/palisade.grpc.pb.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::palisade::testing::ActionsPending;
using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;
using ::palisade::testing::EmulatorAccessRuleValues;
using ::palisade::testing::ScrapeMetric;
using ::palisade::testing::ShipLines;
using ::palisade::testing::WaitFor;

TEST(SessionE2eTest, InterleavedConnectionsAreBannedByTheirOwnSessions) {
  absl::StatusOr<std::unique_ptr<Emulator>> cf = Emulator::Start();
  ASSERT_TRUE(cf.ok()) << cf.status();
  const std::string config = ::palisade::testing::WriteEdgeConfig(
      **cf, (*cf)->token_file(), {"tests/e2e/testdata/sessions.textproto"});
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel =
      grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto ingest = palisade::v1::Ingest::NewStub(channel);

  // Per host, 30 connections on pids 2000..2029: a third hit "Too many authentication
  // failures" (banned from the session's "Connection from"), a third fail a password and close
  // twice (two reconnects on the same pid: banned at the second close), a third connect and
  // close without failing (scanners: never banned). The hosts reuse the pids with other
  // addresses; lines of all connections are shuffled, each connection's own kept in order.
  std::set<std::string> expected;
  for (int host = 0; host < 2; ++host) {
    struct Conn {
      std::vector<std::string> lines;
      size_t next = 0;
    };
    std::vector<Conn> conns(30);
    const std::string stamp =
        absl::FormatTime("%b %e %H:%M:%S", absl::Now(), absl::UTCTimeZone());
    for (int i = 0; i < 30; ++i) {
      const std::string ip = absl::StrCat("203.0.", 110 + host, ".", i + 1);
      const std::string head = absl::StrCat(stamp, " web-", host, " sshd[", 2000 + i, "]: ");
      std::vector<std::string>& l = conns[i].lines;
      l.push_back(head + "Connection from " + ip + " port 5000 on 10.0.0.1 port 22");
      switch (i % 3) {
        case 0:
          l.push_back(head + "Disconnecting: Too many authentication failures [preauth]");
          expected.insert(ip);
          break;
        case 1:
          for (int attempt = 0; attempt < 2; ++attempt) {
            l.push_back(head + "Failed password for root from " + ip + " port 5000 ssh2");
            l.push_back(head + "Connection closed by " + ip + " port 5000 [preauth]");
          }
          expected.insert(ip);
          break;
        default:
          l.push_back(head + "Connection closed by " + ip + " port 5000 [preauth]");
      }
    }
    std::mt19937 rng(11 + host);
    std::vector<std::string> shuffled;
    std::vector<int> order;
    for (int i = 0; i < 30; ++i) order.insert(order.end(), conns[i].lines.size(), i);
    std::shuffle(order.begin(), order.end(), rng);
    for (int i : order) shuffled.push_back(conns[i].lines[conns[i].next++]);
    absl::StatusOr<ShipSummary> shipped = ShipLines(*ingest, palisade::v1::LOG_FORMAT_SYSLOG,
                                                    shuffled, absl::StrCat("web-", host));
    ASSERT_TRUE(shipped.ok()) << shipped.status();
  }
  ASSERT_EQ(expected.size(), 40u);  // under the guard's 60 new bans a minute
  ASSERT_TRUE(WaitFor(
      [&] {
        return EmulatorAccessRuleValues(**cf).size() >= expected.size() &&
               ActionsPending(**daemon) == 0;
      },
      absl::Seconds(60)))
      << ::palisade::testing::EmulatorState(**cf).dump(2);
  EXPECT_EQ(EmulatorAccessRuleValues(**cf), expected);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_engine_session_misses_total"), 0);
}

}  // namespace
}  // namespace palisade
