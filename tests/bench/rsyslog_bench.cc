// Syslog receiver figure (issue 14 §4): lines/s into the real palisaded over TCP (or TLS) with
// Debian's rsyslogd as the sender, as a site would run it. rsyslogd reads a pre-written file of
// sshd messages (imfile) and forwards it with omfwd (octet-counted framing); palisaded runs the
// shipped sshd pack against the Cloudflare emulator (1 line in 100 a failed password from one of
// 200 attackers, so bans reach the edge while it runs). The rate is taken between the first
// frame counted and the last one (palisade_syslog_frames_total, polled every 20 ms): it
// includes rsyslog's own reading and sending, i.e. it is the sender-to-pipeline rate, not the
// receiver alone. Needs rsyslog and rsyslog-openssl (tools/setup.sh).
//
//   bazel run -c opt //tests/bench:rsyslog_bench -- --lines=1000000 --transport=tcp
//   bazel run -c opt //tests/bench:rsyslog_bench -- --lines=1000000 --transport=tls
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/e2e/daemon.h"

ABSL_FLAG(int, lines, 1'000'000, "sshd lines rsyslogd sends");
ABSL_FLAG(std::string, transport, "tcp", "tcp (octet-counted) or tls (RFC 5425, ossl driver)");

extern char** environ;

namespace palisade {
namespace {

using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;
using ::palisade::testing::ScrapeMetric;

int FreePort() {
  const int t = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  socklen_t len = sizeof(a);
  ::bind(t, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  ::getsockname(t, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(t);
  return ntohs(a.sin_port);
}

// CPU seconds (user + system) a process has used so far, from /proc/PID/stat.
double CpuSeconds(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return -1;
  std::istringstream fields(stat.substr(paren + 2));
  std::string f;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) utime = std::stod(f);
    if (i == 15) stime = std::stod(f);
  }
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

int Run() {
  // daemon.h reads the test environment; give it one under /tmp.
  char tmpl[] = "/tmp/palisade-rsyslog-bench-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  ::setenv("TEST_TMPDIR", dir.c_str(), 1);
  if (std::getenv("TEST_SRCDIR") == nullptr) {
    char cwd[4096];
    ::setenv("TEST_SRCDIR", absl::StrCat(::getcwd(cwd, sizeof(cwd)), "/..").c_str(), 1);
  }
  const int lines = absl::GetFlag(FLAGS_lines);
  const bool tls = absl::GetFlag(FLAGS_transport) == "tls";
  const std::string pki = dir + "/pki";
  if (std::system(("services/inputs/testdata/make_certs.sh " + pki).c_str()) != 0) return 1;
  {
    std::ofstream out(dir + "/sshd.log");
    for (int i = 0; i < lines; ++i) {
      if (i % 100 == 0) {
        out << "Failed password for root from 198.51.100." << (i / 100) % 200 << " port "
            << 30000 + i % 30000 << " ssh2\n";
      } else if (i % 3 == 0) {
        out << "Connection closed by 10.0." << (i / 250) % 250 << "." << i % 250 << " port "
            << 30000 + i % 30000 << " [preauth]\n";
      } else {
        out << "Accepted publickey for deploy from 10.1." << (i / 250) % 250 << "." << i % 250
            << " port " << 30000 + i % 30000 << " ssh2: ED25519 SHA256:abcdefghijklmnop\n";
      }
    }
  }
  absl::StatusOr<std::unique_ptr<Emulator>> cf = Emulator::Start();
  if (!cf.ok()) return std::fprintf(stderr, "%s\n", cf.status().ToString().c_str()), 1;
  const int port = FreePort();
  const std::string listen = absl::StrCat("127.0.0.1:", port);
  const std::string config = ::palisade::testing::WriteEdgeConfig(
      **cf, (*cf)->token_file(), {"rules/sshd.textproto"},
      absl::StrCat("inputs { syslog { name: \"bench\" ",
                   tls ? absl::StrCat("tls_listen: \"", listen, "\" tls_cert_file: \"", pki,
                                      "/server.pem\" tls_key_file: \"", pki,
                                      "/server.key\" tls_client_ca_file: \"", pki, "/ca.pem\"")
                       : absl::StrCat("tcp_listen: \"", listen, "\""),
                   " } }\ntime_zone: \"UTC\"\n"));
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
  if (!daemon.ok()) return std::fprintf(stderr, "%s\n", daemon.status().ToString().c_str()), 1;

  const std::string conf_file = dir + "/rsyslog.conf";
  if (std::system(("mkdir -p " + dir + "/work").c_str()) != 0) return 1;
  std::ofstream(conf_file) << absl::StrCat(
      "global(workDirectory=\"", dir, "/work\" DefaultNetstreamDriverCAFile=\"", pki,
      "/ca.pem\" DefaultNetstreamDriverCertFile=\"", pki,
      "/client.pem\" DefaultNetstreamDriverKeyFile=\"", pki, "/client.key\")\n",
      "module(load=\"imfile\")\n", "input(type=\"imfile\" File=\"", dir,
      "/sshd.log\" Tag=\"sshd[4242]:\" Ruleset=\"fwd\")\n",
      "ruleset(name=\"fwd\") { action(type=\"omfwd\" Target=\"127.0.0.1\" Port=\"", port,
      "\" Protocol=\"tcp\" TCP_Framing=\"octet-counted\"",
      tls ? " StreamDriver=\"ossl\" StreamDriverMode=\"1\" StreamDriverAuthMode=\"x509/name\" "
            "StreamDriverPermittedPeers=\"server.palisade.test\""
          : "",
      ") }\n");
  std::vector<std::string> args = {"/usr/sbin/rsyslogd", "-n", "-f", conf_file, "-i",
                                   dir + "/rsyslogd.pid"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return 1;

  const std::vector<std::string> labels = {"input=\"bench\"",
                                           tls ? "transport=\"tls\"" : "transport=\"tcp\""};
  double first = 0;
  absl::Time t0, t1;
  const absl::Time deadline = absl::Now() + absl::Minutes(10);
  while (absl::Now() < deadline) {
    const double n = ScrapeMetric(**daemon, "palisade_syslog_frames_total", labels);
    const absl::Time now = absl::Now();
    if (first == 0 && n > 0) {
      first = n;
      t0 = now;
    }
    if (n >= lines) {
      t1 = now;
      break;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  const double rsyslog_cpu = CpuSeconds(pid);
  const double palisaded_cpu = CpuSeconds((*daemon)->pid());
  ::kill(pid, SIGTERM);
  ::waitpid(pid, nullptr, 0);
  if (t1 == absl::Time()) {
    std::fprintf(stderr, "not all lines arrived within 10 minutes\n");
    return 1;
  }
  const double seconds = absl::ToDoubleSeconds(t1 - t0);
  std::printf(
      "rsyslog -> palisaded over %s: %d lines, %.0f counted at the first poll; "
      "%.0f lines in %.2f s = %.0f lines/s; batches refused: %.0f\n",
      tls ? "TLS" : "TCP", lines, first, lines - first, seconds, (lines - first) / seconds,
      ScrapeMetric(**daemon, "palisade_syslog_batch_errors_total", {"input=\"bench\""}));
  // Over the whole run (the daemon's start and rsyslogd's reading of the file included).
  std::printf("CPU seconds: rsyslogd %.2f, palisaded %.2f\n", rsyslog_cpu, palisaded_cpu);
  return 0;
}

}  // namespace
}  // namespace palisade

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return palisade::Run();
}
