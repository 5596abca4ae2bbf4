// End to end for the syslog receiver with Debian's rsyslog as the sender (issue 14 §1): one
// rsyslogd (`-n -f CONF -i PIDFILE`, imfile inputs, no system socket, its work directory in
// TEST_TMPDIR) forwards sshd failures with omfwd to the real palisaded four ways: TCP with
// octet counting, TCP with newline framing (RFC 5424), UDP, and TLS (RFC 5425, rsyslog's "ossl"
// netstream driver, mutual TLS with a client certificate). Each way's address is banned at the
// Cloudflare emulator. A plain-text connection to the TLS port fails its handshake (counted)
// and the TLS sender goes on. A port in use and an unreadable TLS key stop the start with an
// error naming the input.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/daemon.h"

extern char** environ;

namespace palisade {
namespace {

using ::palisade::testing::ActionsPending;
using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;
using ::palisade::testing::EmulatorAccessRuleValues;
using ::palisade::testing::FreeLoopbackPort;
using ::palisade::testing::HeldLoopbackPort;
using ::palisade::testing::RunToExit;
using ::palisade::testing::ScrapeMetric;
using ::palisade::testing::WaitFor;
using ::testing::HasSubstr;

std::string TmpDir() { return std::getenv("TEST_TMPDIR"); }

// The test PKI (services/inputs/testdata/make_certs.sh): a CA, the server's certificate for
// 127.0.0.1 and server.palisade.test, a client certificate for rsyslog.
std::string Pki() {
  static const std::string* dir = [] {
    auto* d = new std::string(TmpDir() + "/pki");
    EXPECT_EQ(std::system(("services/inputs/testdata/make_certs.sh " + *d).c_str()), 0);
    return d;
  }();
  return *dir;
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::trunc) << content;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// rsyslogd in the foreground with `conf`; stopped (SIGTERM) when this goes.
class Rsyslogd {
 public:
  explicit Rsyslogd(const std::string& conf) {
    const std::string dir = TmpDir() + "/rsyslog";
    std::system(("mkdir -p " + dir + "/work").c_str());
    const std::string conf_file = dir + "/rsyslog.conf";
    WriteFile(conf_file, conf);
    log_ = dir + "/rsyslogd.out";
    std::vector<std::string> args = {"/usr/sbin/rsyslogd", "-n", "-f", conf_file, "-i",
                                     dir + "/rsyslogd.pid"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    if (posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~Rsyslogd() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  bool running() const { return pid_ > 0; }
  // What rsyslogd said (its errors go to stderr with -n).
  std::string output() const { return ReadFile(log_); }

 private:
  pid_t pid_ = -1;
  std::string log_;
};

std::string Failures(const std::string& ip, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) {
    absl::StrAppend(&out, "Failed password for root from ", ip, " port ", 40000 + i, " ssh2\n");
  }
  return out;
}

TEST(RsyslogE2eTest, OmfwdOverTcpUdpAndTlsBans) {
  absl::StatusOr<std::unique_ptr<Emulator>> cf = Emulator::Start();
  ASSERT_TRUE(cf.ok()) << cf.status();
  const int port = FreeLoopbackPort();
  const int tls_port = FreeLoopbackPort();
  ASSERT_GT(port, 0);
  ASSERT_GT(tls_port, 0);
  const std::string pki = Pki();
  const std::string config = ::palisade::testing::WriteEdgeConfig(
      **cf, (*cf)->token_file(), {"tests/e2e/testdata/file_input.textproto"},
      absl::StrCat("inputs { syslog { name: \"rsyslog\" tcp_listen: \"127.0.0.1:", port,
                   "\" udp_listen: \"127.0.0.1:", port, "\" tls_listen: \"127.0.0.1:", tls_port,
                   "\" tls_cert_file: \"", pki, "/server.pem\" tls_key_file: \"", pki,
                   "/server.key\" tls_client_ca_file: \"", pki, "/ca.pem\" } }\n",
                   "time_zone: \"UTC\"\n"));
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();

  // Plain text on the TLS port: a failed handshake, counted; the TLS sender below is not hurt.
  ASSERT_EQ(std::system(absl::StrCat("printf '<13>Mar  3 14:02:01 h sshd[9]: ", "not tls\\n' | ",
                                     "timeout 5 bash -c 'cat > /dev/tcp/127.0.0.1/", tls_port, "'")
                            .c_str()),
            0);
  ASSERT_TRUE(WaitFor(
      [&] {
        return ScrapeMetric(**daemon, "palisade_syslog_tls_handshake_failures_total",
                            {"input=\"rsyslog\""}) >= 1;
      },
      absl::Seconds(60)));

  // Four files, one per way, each with four failures from its own address (the pack bans at 4).
  const std::string dir = TmpDir() + "/rsyslog";
  std::system(("mkdir -p " + dir).c_str());
  const std::vector<std::pair<std::string, std::string>> ways = {{"octet", "203.0.113.41"},
                                                                 {"newline", "203.0.113.42"},
                                                                 {"udp", "203.0.113.43"},
                                                                 {"tls", "203.0.113.44"}};
  for (const auto& [way, ip] : ways)
    WriteFile(absl::StrCat(dir, "/", way, ".log"), Failures(ip, 4));
  const std::string target = absl::StrCat("Target=\"127.0.0.1\" Port=\"", port, "\"");
  std::string conf = absl::StrCat(
      // No module reads the system socket (/dev/log) or the kernel log: imfile only. This is
      // what `$OmitLocalLogging on` asks of imuxsock, which is simply not loaded here.
      "global(workDirectory=\"", dir, "/work\"\n", "       DefaultNetstreamDriverCAFile=\"", pki,
      "/ca.pem\"\n", "       DefaultNetstreamDriverCertFile=\"", pki, "/client.pem\"\n",
      "       DefaultNetstreamDriverKeyFile=\"", pki, "/client.key\")\n",
      "module(load=\"imfile\")\n");
  for (const auto& [way, ip] : ways) {
    absl::StrAppend(&conf, "input(type=\"imfile\" File=\"", dir, "/", way, ".log\" Tag=\"sshd[4",
                    way.size(), "]:\" Ruleset=\"", way, "\")\n");
  }
  absl::StrAppend(
      &conf, "ruleset(name=\"octet\") { action(type=\"omfwd\" ", target,
      " Protocol=\"tcp\" TCP_Framing=\"octet-counted\") }\n",
      "ruleset(name=\"newline\") { action(type=\"omfwd\" ", target,
      " Protocol=\"tcp\" Template=\"RSYSLOG_SyslogProtocol23Format\") }\n",
      "ruleset(name=\"udp\") { action(type=\"omfwd\" ", target, " Protocol=\"udp\") }\n",
      "ruleset(name=\"tls\") { action(type=\"omfwd\" Target=\"127.0.0.1\" Port=\"", tls_port,
      "\" Protocol=\"tcp\" TCP_Framing=\"octet-counted\" StreamDriver=\"ossl\" "
      "StreamDriverMode=\"1\" StreamDriverAuthMode=\"x509/name\" "
      "StreamDriverPermittedPeers=\"server.palisade.test\") }\n");
  Rsyslogd rsyslogd(conf);
  ASSERT_TRUE(rsyslogd.running());

  const std::set<std::string> expected = {"203.0.113.41", "203.0.113.42", "203.0.113.43",
                                          "203.0.113.44"};
  ASSERT_TRUE(WaitFor(
      [&] { return EmulatorAccessRuleValues(**cf) == expected && ActionsPending(**daemon) == 0; },
      absl::Seconds(60)))
      << ::palisade::testing::EmulatorState(**cf).dump(2) << "\nrsyslogd said:\n"
      << rsyslogd.output();
  const auto frames = [&](const char* transport) {
    return ScrapeMetric(**daemon, "palisade_syslog_frames_total",
                        {"input=\"rsyslog\"", absl::StrCat("transport=\"", transport, "\"")});
  };
  EXPECT_EQ(frames("tcp"), 8);
  EXPECT_EQ(frames("udp"), 4);
  EXPECT_EQ(frames("tls"), 4);
  EXPECT_EQ(
      ScrapeMetric(**daemon, "palisade_syslog_tls_handshake_failures_total", {"input=\"rsyslog\""}),
      1);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_syslog_malformed_frames_total", {"input=\"rsyslog\""}),
            0);
}

TEST(RsyslogE2eTest, APortInUseOrAnUnreadableKeyStopsTheStartNamingTheInput) {
  absl::StatusOr<std::unique_ptr<Emulator>> cf = Emulator::Start();
  ASSERT_TRUE(cf.ok()) << cf.status();
  HeldLoopbackPort held;  // a port in use
  const int port = held.port();
  ASSERT_GT(port, 0);
  const std::string pki = Pki();

  const std::string busy_config = ::palisade::testing::WriteEdgeConfig(
      **cf, (*cf)->token_file(), {"tests/e2e/testdata/file_input.textproto"},
      absl::StrCat("inputs { syslog { name: \"busy\" tls_listen: \"127.0.0.1:", port,
                   "\" tls_cert_file: \"", pki, "/server.pem\" tls_key_file: \"", pki,
                   "/server.key\" } }\n"));
  const auto [busy_status, busy] = RunToExit({"--config=" + busy_config});
  EXPECT_EQ(busy_status, 2) << busy;
  EXPECT_THAT(busy, HasSubstr(absl::StrCat("inputs.syslog \"busy\": cannot listen on 127.0.0.1:",
                                           port, ": Address already in use")));

  const std::string keyless_config = ::palisade::testing::WriteEdgeConfig(
      **cf, (*cf)->token_file(), {"tests/e2e/testdata/file_input.textproto"},
      absl::StrCat("inputs { syslog { name: \"keyless\" tls_listen: \"127.0.0.1:0\" "
                   "tls_cert_file: \"",
                   pki, "/server.pem\" tls_key_file: \"", pki, "/missing.key\" } }\n"));
  const auto [keyless_status, keyless] = RunToExit({"--config=" + keyless_config});
  EXPECT_EQ(keyless_status, 2) << keyless;
  EXPECT_THAT(keyless,
              HasSubstr(absl::StrCat("inputs.syslog \"keyless\": cannot read tls_key_file \"", pki,
                                     "/missing.key\": No such file or directory")));
}

}  // namespace
}  // namespace palisade
