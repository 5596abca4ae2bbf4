// End to end for the Logpush HTTP destination (issue 14 §2): the real palisaded with the
// Cloudflare emulator, and curl posting gzipped Logpush http_requests files (made with gzip) as a
// Logpush job does (`Content-Encoding: gzip`, the job's `header_Authorization`). A multi-file push
// with one file refused (503) and sent again counts every file once: an address one refusal
// short of a ban stays unbanned, one with four is banned at the emulator. A wrong secret is 401
// and counts nothing, a decompression bomb 413, Cloudflare's check upload 200; over HTTPS too; a
// port in use or unreadable TLS files stop the start naming the input; and the shipped
// cloudflare-edge pack bans from both datasets, each pushed by its own job.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/e2e/daemon.h"

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

constexpr char kSecret[] = "Bearer e2e-logpush-7f3a9c";

std::string Tmp(const std::string& name) {
  return absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
}

// Owner-only, as palisaded wants a secret file (the config and the rule packs too: harmless).
std::string Write(const std::string& name, const std::string& content) {
  const std::string path = Tmp(name);
  std::ofstream(path, std::ios::binary) << content;
  ::chmod(path.c_str(), 0600);
  return path;
}

// One Logpush http_requests record, stamped now (the edge saw it a moment ago).
std::string Record(const std::string& ip, int origin_status) {
  return absl::StrCat(
      R"({"ClientIP":")", ip,
      R"(","ClientRequestHost":"shop.example.com","ClientRequestMethod":"POST",)"
      R"("ClientRequestPath":"/login","ClientRequestURI":"/login","ClientRequestProtocol":)"
      R"("HTTP/2","ClientRequestUserAgent":"python-requests/2.31","EdgeResponseStatus":)",
      origin_status, R"(,"EdgeResponseBytes":512,"OriginResponseStatus":)", origin_status,
      R"(,"EdgeStartTimestamp":)", absl::ToUnixSeconds(absl::Now()),
      R"(,"RayID":"8a1b2c3d4e5f6a7b"})");
}

// Writes `lines` as NDJSON to NAME and gzips it (gzip(1), as Logpush's files are): NAME.gz.
std::string GzipFile(const std::string& name, const std::vector<std::string>& lines) {
  const std::string path = Write(name, absl::StrJoin(lines, "\n") + "\n");
  EXPECT_EQ(std::system(("gzip -f " + path).c_str()), 0);
  return path + ".gz";
}

// curl --data-binary @FILE as a Logpush job posts; returns the HTTP status (0: no answer).
int Curl(const std::string& url, const std::string& file, const std::string& authorization,
         const std::string& extra = "") {
  const std::string cmd = absl::StrCat(
      "curl -s -o /dev/null -w '%{http_code}' --max-time 60 -X POST --data-binary @", file,
      " -H 'Content-Encoding: gzip' -H 'Content-Type: application/x-ndjson' ",
      authorization.empty() ? "" : absl::StrCat("-H 'Authorization: ", authorization, "' "), extra,
      " '", url, "'");
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return 0;
  char buf[16] = {0};
  const size_t n = std::fread(buf, 1, sizeof(buf) - 1, p);
  ::pclose(p);
  int code = 0;
  (void)absl::SimpleAtoi(std::string(buf, n), &code);
  return code;
}

std::string LogpushConfig(const Emulator& cf, int port, const std::string& extra = "") {
  return ::palisade::testing::WriteEdgeConfig(
      cf, cf.token_file(), {"tests/e2e/testdata/logpush/logpush.textproto"},
      absl::StrCat("inputs { logpush { name: \"cf\" listen: \"127.0.0.1:", port,
                   "\" path: \"/logpush/http_requests\" format: \"logpush_http_requests\" "
                   "secret_file: \"",
                   Write("secret", std::string(kSecret) + "\n"), "\" max_inflated_bytes: 4194304 ",
                   extra, " } }\n"));
}

double Outcome(const Daemon& d, const std::string& outcome) {
  return ScrapeMetric(d, "palisade_logpush_requests_total",
                      {"input=\"cf\"", absl::StrCat("outcome=\"", outcome, "\"")});
}

// An upload whose headers (with the secret) and first body bytes are sent, and whose rest never
// comes until Close(): it holds one of the receiver's in-flight slots.
class HeldUpload {
 public:
  explicit HeldUpload(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    ok_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    const std::string head = absl::StrCat(
        "POST /logpush/http_requests HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ", kSecret,
        "\r\nContent-Type: application/x-ndjson\r\nContent-Length: 100000\r\n\r\n{\"ClientIP\"");
    ok_ = ok_ &&
          ::send(fd_, head.data(), head.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(head.size());
  }
  ~HeldUpload() { Close(); }
  bool ok() const { return ok_; }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  bool ok_ = false;
};

TEST(LogpushE2eTest, AMultiFilePushWithARetriedFileCountsEveryFileOnce) {
  absl::StatusOr<std::unique_ptr<Emulator>> cf = Emulator::Start();
  ASSERT_TRUE(cf.ok()) << cf.status();
  const int port = FreeLoopbackPort();
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + LogpushConfig(**cf, port), "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  const std::string url = absl::StrCat("http://127.0.0.1:", port, "/logpush/http_requests");

  // The job is created: Cloudflare checks the destination with a small upload.
  const std::string check = Write("check.json", R"({"content":"test","filename":"test.txt"})");
  ASSERT_EQ(std::system(("gzip -f " + check).c_str()), 0);
  EXPECT_EQ(Curl(url, check + ".gz", kSecret), 200);

  // .41: 2 + 1 origin refusals (one short of the threshold; 4 if the retried file counted
  // twice). .42: 1 + 1 + 2 = 4, banned. .43: only successes.
  const std::string a = "203.0.113.41", b = "203.0.113.42", c = "203.0.113.43";
  const std::string f1 = GzipFile("push-1.log", {Record(a, 401), Record(b, 403), Record(c, 200),
                                                 Record(a, 401), Record(c, 200)});
  const std::string f2 = GzipFile("push-2.log", {Record(a, 403), Record(b, 401)});
  const std::string f3 = GzipFile("push-3.log", {Record(b, 403), Record(c, 200), Record(b, 401)});
  EXPECT_EQ(Curl(url, f1, kSecret), 200);

  // Every in-flight slot (4) taken by uploads that stall: the next file is refused with 503
  // before it is read, as when the daemon cannot take it; Logpush sends it again later.
  {
    std::vector<std::unique_ptr<HeldUpload>> held;
    for (int i = 0; i < 4; ++i) {
      held.push_back(std::make_unique<HeldUpload>(port));
      ASSERT_TRUE(held.back()->ok());
    }
    ASSERT_TRUE(WaitFor(
        [&] { return ScrapeMetric(**daemon, "palisade_logpush_in_flight", {"input=\"cf\""}) == 4; },
        absl::Seconds(60)));
    EXPECT_EQ(Curl(url, f2, kSecret), 503);
  }  // the stalled uploads end: their bodies never came whole, nothing of them is taken
  ASSERT_TRUE(WaitFor(
      [&] { return ScrapeMetric(**daemon, "palisade_logpush_in_flight", {"input=\"cf\""}) == 0; },
      absl::Seconds(60)));
  EXPECT_EQ(Curl(url, f2, kSecret), 200);  // the retry
  EXPECT_EQ(Curl(url, f3, kSecret), 200);

  ASSERT_TRUE(WaitFor(
      [&] {
        return EmulatorAccessRuleValues(**cf) == std::set<std::string>{b} &&
               ActionsPending(**daemon) == 0;
      },
      absl::Seconds(60)))
      << ::palisade::testing::EmulatorState(**cf).dump(2);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_logpush_lines_total", {"input=\"cf\""}), 10);
  EXPECT_EQ(Outcome(**daemon, "ok"), 3);
  EXPECT_EQ(Outcome(**daemon, "busy"), 1);
  EXPECT_EQ(Outcome(**daemon, "check"), 1);
  EXPECT_EQ(Outcome(**daemon, "read_error"), 4);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_logpush_malformed_total", {"input=\"cf\""}), 0);
  // .41 was not banned: its three refusals were counted once each.
  EXPECT_EQ(EmulatorAccessRuleValues(**cf).count(a), 0u);
}

TEST(LogpushE2eTest, AWrongSecretABombAndGarbageCountNothing) {
  absl::StatusOr<std::unique_ptr<Emulator>> cf = Emulator::Start();
  ASSERT_TRUE(cf.ok()) << cf.status();
  const int port = FreeLoopbackPort();
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + LogpushConfig(**cf, port), "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  const std::string url = absl::StrCat("http://127.0.0.1:", port, "/logpush/http_requests");
  const std::string file =
      GzipFile("denied.log", {Record("203.0.113.51", 401), Record("203.0.113.51", 401),
                              Record("203.0.113.51", 401), Record("203.0.113.51", 401)});

  EXPECT_EQ(Curl(url, file, "Bearer e2e-logpush-7f3a9"), 401);
  EXPECT_EQ(Curl(url, file, ""), 401);
  // 64 MiB of zeros in ~64 KB: refused at the 4 MiB inflated cap.
  ASSERT_EQ(std::system(("head -c 67108864 /dev/zero | gzip -9 > " + Tmp("bomb.gz")).c_str()), 0);
  EXPECT_EQ(Curl(url, Tmp("bomb.gz"), kSecret), 413);
  // Said gzip, is not.
  EXPECT_EQ(Curl(url, Write("plain.log", Record("203.0.113.51", 401)), kSecret), 400);
  // Anywhere else: 404.
  EXPECT_EQ(Curl(absl::StrCat("http://127.0.0.1:", port, "/other"), file, kSecret), 404);

  EXPECT_EQ(Outcome(**daemon, "unauthorized"), 2);
  EXPECT_EQ(Outcome(**daemon, "inflated_too_large"), 1);
  EXPECT_EQ(Outcome(**daemon, "malformed"), 1);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_logpush_lines_total", {"input=\"cf\""}), 0);
  // The daemon is unharmed: the right secret is taken, and the four refusals ban.
  EXPECT_EQ(Curl(url, file, kSecret), 200);
  ASSERT_TRUE(WaitFor(
      [&] {
        return EmulatorAccessRuleValues(**cf) == std::set<std::string>{"203.0.113.51"} &&
               ActionsPending(**daemon) == 0;
      },
      absl::Seconds(60)))
      << ::palisade::testing::EmulatorState(**cf).dump(2);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_logpush_lines_total", {"input=\"cf\""}), 4);
}

TEST(LogpushE2eTest, OverHttps) {
  const std::string cert = Tmp("lp-cert.pem"), key = Tmp("lp-key.pem");
  ASSERT_EQ(std::system(absl::StrCat("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "
                                     "/CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout ",
                                     key, " -out ", cert, " 2>/dev/null")
                            .c_str()),
            0);
  absl::StatusOr<std::unique_ptr<Emulator>> cf = Emulator::Start();
  ASSERT_TRUE(cf.ok()) << cf.status();
  const int port = FreeLoopbackPort();
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + LogpushConfig(**cf, port,
                                                 absl::StrCat("tls_cert_file: \"", cert,
                                                              "\" tls_key_file: \"", key, "\"")),
                     "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  const std::string file = GzipFile("tls.log", {Record("203.0.113.61", 403)});
  EXPECT_EQ(Curl(absl::StrCat("https://127.0.0.1:", port, "/logpush/http_requests"), file, kSecret,
                 "--cacert " + cert),
            200);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_logpush_lines_total", {"input=\"cf\""}), 1);
  // Plain HTTP to the HTTPS port gets no answer from the receiver.
  EXPECT_NE(Curl(absl::StrCat("http://127.0.0.1:", port, "/logpush/http_requests"), file, kSecret),
            200);
}

// One Logpush firewall_events record, stamped now.
std::string FirewallEvent(const std::string& ip, const std::string& action) {
  return absl::StrCat(
      R"({"Action":")", action, R"(","ClientIP":")", ip,
      R"(","ClientRequestHost":"shop.example.com","ClientRequestMethod":"GET",)"
      R"("ClientRequestPath":"/xmlrpc.php","ClientRequestProtocol":"HTTP/1.1",)"
      R"("ClientRequestUserAgent":"Mozilla/5.0","Datetime":")",
      absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone()),
      R"(","EdgeResponseStatus":403,"RayName":"8a1b2c3d4e5f6a7b","RuleID":"r1","Source":"waf"})");
}

// The shipped pack rules/cloudflare-edge.textproto, fed by two Logpush jobs (one per dataset,
// each its own destination): credential stuffing on a log-in path seen at the edge, and WAF
// actions repeated by one address, both banned at the emulator; look-alikes below the
// thresholds are not.
TEST(LogpushE2eTest, TheShippedEdgePackBansFromBothDatasets) {
  absl::StatusOr<std::unique_ptr<Emulator>> cf = Emulator::Start();
  ASSERT_TRUE(cf.ok()) << cf.status();
  const int http_port = FreeLoopbackPort();
  int fw_port = FreeLoopbackPort();
  while (fw_port == http_port) fw_port = FreeLoopbackPort();
  const std::string secret = Write("secret-edge", std::string(kSecret) + "\n");
  const std::string config = ::palisade::testing::WriteEdgeConfig(
      **cf, (*cf)->token_file(), {"rules/cloudflare-edge.textproto"},
      absl::StrCat("inputs {\n  logpush { name: \"cf-http\" listen: \"127.0.0.1:", http_port,
                   "\" path: \"/logpush\" format: \"logpush_http_requests\" secret_file: \"",
                   secret, "\" }\n  logpush { name: \"cf-fw\" listen: \"127.0.0.1:", fw_port,
                   "\" path: \"/logpush\" format: \"logpush_firewall_events\" secret_file: \"",
                   secret, "\" }\n}\n"));
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();

  // cf-edge-credential-stuffing: 20 POSTs to a log-in path within a minute. .71 makes 20 (in
  // two uploads), .72 makes 19.
  std::vector<std::string> first, second;
  for (int i = 0; i < 10; ++i) first.push_back(Record("203.0.113.71", 401));
  for (int i = 0; i < 10; ++i) second.push_back(Record("203.0.113.71", 401));
  for (int i = 0; i < 19; ++i) second.push_back(Record("203.0.113.72", 200));
  const std::string http_url = absl::StrCat("http://127.0.0.1:", http_port, "/logpush");
  EXPECT_EQ(Curl(http_url, GzipFile("edge-1.log", first), kSecret), 200);
  EXPECT_EQ(Curl(http_url, GzipFile("edge-2.log", second), kSecret), 200);
  // cf-edge-waf-repeated: 10 WAF actions in 10 minutes. .81 is blocked 10 times, .82 is
  // challenged 5 times and allowed 5 times (an allow is no WAF action).
  std::vector<std::string> events;
  for (int i = 0; i < 10; ++i) events.push_back(FirewallEvent("203.0.113.81", "block"));
  for (int i = 0; i < 5; ++i) events.push_back(FirewallEvent("203.0.113.82", "managed_challenge"));
  for (int i = 0; i < 5; ++i) events.push_back(FirewallEvent("203.0.113.82", "allow"));
  EXPECT_EQ(Curl(absl::StrCat("http://127.0.0.1:", fw_port, "/logpush"),
                 GzipFile("fw-1.log", events), kSecret),
            200);

  const std::set<std::string> expected = {"203.0.113.71", "203.0.113.81"};
  ASSERT_TRUE(WaitFor(
      [&] { return EmulatorAccessRuleValues(**cf) == expected && ActionsPending(**daemon) == 0; },
      absl::Seconds(60)))
      << ::palisade::testing::EmulatorState(**cf).dump(2);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_logpush_lines_total", {"input=\"cf-http\""}), 39);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_logpush_lines_total", {"input=\"cf-fw\""}), 20);
}

TEST(LogpushE2eTest, APortInUseOrUnreadableTlsFilesStopTheStartNamingTheInput) {
  absl::StatusOr<std::unique_ptr<Emulator>> cf = Emulator::Start();
  ASSERT_TRUE(cf.ok()) << cf.status();
  HeldLoopbackPort held;
  ASSERT_GT(held.port(), 0);
  const auto [busy_status, busy] = RunToExit({"--config=" + LogpushConfig(**cf, held.port())});
  EXPECT_EQ(busy_status, 2) << busy;
  EXPECT_NE(busy.find("inputs.logpush \"cf\": cannot listen on"), std::string::npos) << busy;

  const auto [rc, out] =
      RunToExit({"--config=" + LogpushConfig(**cf, FreeLoopbackPort(),
                                             "tls_cert_file: \"/nonexistent/cert.pem\" "
                                             "tls_key_file: \"/nonexistent/k\"")});
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find("inputs.logpush \"cf\": cannot read \"/nonexistent/cert.pem\""),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("e2e-logpush-7f3a9c"), std::string::npos) << "the secret leaked: " << out;
}

}  // namespace
}  // namespace palisade
