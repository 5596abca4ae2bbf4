// End to end for the syslog receiver (issue 14 §1): util-linux `logger`, the syslog sender every
// Debian machine has, sends sshd failures to palisaded over TCP (RFC 3164 with octet counting,
// RFC 5424 with newline framing) and UDP; the bans reach the real emulator. Garbage sent to the
// TCP port is counted and the connection's later messages still count.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::palisade::testing::ActionsPending;
using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;
using ::palisade::testing::EmulatorAccessRuleValues;
using ::palisade::testing::FreeLoopbackPort;
using ::palisade::testing::ScrapeMetric;
using ::palisade::testing::WaitFor;

int Logger(const std::string& args) {
  return std::system(("logger --server 127.0.0.1 " + args).c_str());
}

TEST(SyslogInputE2eTest, LoggerOverTcpAndUdpBans) {
  absl::StatusOr<std::unique_ptr<Emulator>> cf = Emulator::Start();
  ASSERT_TRUE(cf.ok()) << cf.status();
  const int port = FreeLoopbackPort();
  ASSERT_GT(port, 0);
  const std::string config = ::palisade::testing::WriteEdgeConfig(
      **cf, (*cf)->token_file(), {"tests/e2e/testdata/file_input.textproto"},
      absl::StrCat("inputs { syslog { name: \"net\" tcp_listen: \"127.0.0.1:", port,
                   "\" udp_listen: \"127.0.0.1:", port, "\" } }\n", "time_zone: \"UTC\"\n"));
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();

  const std::string msg = "Failed password for root from ";
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(Logger(absl::StrCat("--port ", port, " --tcp --rfc3164 --octet-count -t sshd ", "'",
                                  msg, "203.0.113.31 port 22 ssh2'")),
              0);
    ASSERT_EQ(Logger(absl::StrCat("--port ", port, " --tcp --rfc5424 -t sshd '", msg,
                                  "203.0.113.32 port 22 ssh2'")),
              0);
  }
  // Garbage on a connection of its own: counted, and the receiver goes on.
  ASSERT_EQ(std::system(absl::StrCat("printf 'not syslog\\n99999999 x\\n' | timeout 5 bash -c "
                                     "'cat > /dev/tcp/127.0.0.1/",
                                     port, "'")
                            .c_str()),
            0);
  // UDP: datagrams may be lost on a busy machine in principle; on loopback they are not, but
  // send a few more than the threshold needs.
  for (int i = 0; i < 6; ++i) {
    ASSERT_EQ(Logger(absl::StrCat("--port ", port, " --udp --rfc3164 -t sshd '", msg,
                                  "203.0.113.33 port 22 ssh2'")),
              0);
  }
  const std::set<std::string> expected = {"203.0.113.31", "203.0.113.32", "203.0.113.33"};
  ASSERT_TRUE(WaitFor(
      [&] { return EmulatorAccessRuleValues(**cf) == expected && ActionsPending(**daemon) == 0; },
      absl::Seconds(60)))
      << ::palisade::testing::EmulatorState(**cf).dump(2);
  // The garbage: a line without <PRI> and an absurd octet count, both skipped by the framing
  // (bytes that start no frame are no frame) and counted; the eight logger frames are frames.
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_syslog_malformed_frames_total", {"input=\"net\""}), 2);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_syslog_frames_total",
                         {"input=\"net\"", "transport=\"tcp\""}),
            8);
}

}  // namespace
}  // namespace palisade
