// End to end for JSON lines (issue 14 §2): the real palisaded reads nginx escape=json records
// shipped over gRPC, Logpush http_requests records with a field rule, and a file of a custom
// JSON mapping (json_formats + inputs.files json_format); bans reach the real emulator, keyed on
// the address the server wrote, never on one a client put in its user agent or path; and the
// real palisadectl shipping a file of that mapping from "another host".
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "palisade/v1/palisade.grpc.pb.h"
#include "tests/e2e/daemon.h"

extern char** environ;

namespace palisade {
namespace {

using ::palisade::testing::ActionsPending;
using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;
using ::palisade::testing::EmulatorAccessRuleValues;
using ::palisade::testing::ScrapeMetric;
using ::palisade::testing::ShipLines;
using ::palisade::testing::WaitFor;

class JsonE2eTest : public ::testing::Test {
 protected:
  // `palisadectl ship --format=json --json_format=app FILE` to the daemon: its exit status.
  int ShipAsApp(const std::string& file, const std::string& source) {
    std::vector<std::string> args = {"services/cli/palisadectl", "ship",
                                     "--format=json",           "--json_format=app",
                                     "--source=" + source,      "--server=" + daemon_->grpc_address(),
                                     file};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = -1;
    if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return -1;
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
  }

  void SetUp() override {
    dir_ = std::getenv("TEST_TMPDIR");
    log_ = dir_ + "/app.json";
    std::remove(log_.c_str());
    absl::StatusOr<std::unique_ptr<Emulator>> cf = Emulator::Start();
    ASSERT_TRUE(cf.ok()) << cf.status();
    cf_ = *std::move(cf);
    const std::string config = ::palisade::testing::WriteEdgeConfig(
        *cf_, cf_->token_file(), {"tests/e2e/testdata/json.textproto"},
        absl::StrCat(
            "json_formats { name: \"app\" time: \"ts\" time_layout: \"unix_ms\" ",
            "client_address: \"peer.addr\" method: \"req.method\" path: \"req.path\" ",
            "status: \"res.status\" user_agent: \"req.ua\" }\n",
            "inputs { files { name: \"app\" paths: \"", log_,
            "\" format: \"json\" json_format: \"app\" } poll_interval { nanos: 50000000 } }\n"));
    absl::StatusOr<std::unique_ptr<Daemon>> d =
        Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    ingest_ = palisade::v1::Ingest::NewStub(
        grpc::CreateChannel(daemon_->grpc_address(), grpc::InsecureChannelCredentials()));
  }

  bool Banned(const std::string& ip) {
    return WaitFor(
        [&] {
          return EmulatorAccessRuleValues(*cf_).count(ip) > 0 && ActionsPending(*daemon_) == 0;
        },
        absl::Seconds(60));
  }
  static std::string Now() {
    return absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone());
  }

  std::string dir_, log_;
  std::unique_ptr<Emulator> cf_;
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<palisade::v1::Ingest::Stub> ingest_;
};

TEST_F(JsonE2eTest, NginxJsonOverGrpcBansTheServersAddress) {
  std::vector<std::string> lines;
  for (int i = 0; i < 3; ++i) {
    // The user agent holds a whole forged combined line for 198.51.100.9.
    lines.push_back(absl::StrCat(
        R"({"time":")", Now(), R"(","remote_addr":"203.0.113.30","remote_user":"",)",
        R"("request_method":"POST","request_uri":"/login","server_protocol":"HTTP/1.1",)",
        R"("status":401,"body_bytes_sent":0,"http_referer":"",)",
        R"("http_user_agent":"\"\n198.51.100.9 - - [x] \"POST /login HTTP/1.1\" 401 0",)",
        R"("host":"example.com"})"));
  }
  absl::StatusOr<palisade::ShipSummary> shipped =
      ShipLines(*ingest_, palisade::v1::LOG_FORMAT_NGINX_JSON, lines, "web-json");
  ASSERT_TRUE(shipped.ok()) << shipped.status();
  ASSERT_TRUE(Banned("203.0.113.30")) << ::palisade::testing::EmulatorState(*cf_).dump(2);
  EXPECT_EQ(EmulatorAccessRuleValues(*cf_), (std::set<std::string>{"203.0.113.30"}));
  // A record that is not JSON is malformed (ShipLines says so), nothing else happens.
  EXPECT_FALSE(ShipLines(*ingest_, palisade::v1::LOG_FORMAT_NGINX_JSON,
                         {"203.0.113.31 - - [03/Mar/2026:14:02:01 +0000] \"POST /login\""},
                         "web-json")
                   .ok());
}

TEST_F(JsonE2eTest, LogpushFieldRuleAndCustomFileMapping) {
  std::vector<std::string> lines;
  for (int i = 0; i < 3; ++i) {
    lines.push_back(absl::StrCat(
        R"({"ClientIP":"2001:db8::31","ClientRequestHost":"example.com",)",
        R"("ClientRequestMethod":"GET","ClientRequestURI":"/admin/\"ClientIP\":\"198.51.100.9\"",)",
        R"("ClientRequestProtocol":"HTTP/2","ClientRequestUserAgent":"x",)",
        R"("EdgeResponseStatus":403,"OriginResponseStatus":403,"EdgeStartTimestamp":)",
        absl::ToUnixNanos(absl::Now()), "}"));
  }
  absl::StatusOr<palisade::ShipSummary> shipped =
      ShipLines(*ingest_, palisade::v1::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS, lines, "logpush");
  ASSERT_TRUE(shipped.ok()) << shipped.status();
  ASSERT_TRUE(Banned("2001:db8::31")) << ::palisade::testing::EmulatorState(*cf_).dump(2);

  // The custom mapping, from a file input: rendered as combined, read by the combined rule.
  {
    std::ofstream out(log_, std::ios::app);
    for (int i = 0; i < 3; ++i) {
      out << R"({"ts":)" << absl::ToUnixMillis(absl::Now())
          << R"(,"peer":{"addr":"203.0.113.32:51000"},"req":{"method":"POST","path":"/login",)"
          << R"("ua":"198.51.100.9"},"res":{"status":403}})" << "\n";
    }
    out << "not json\n";
  }
  ASSERT_TRUE(Banned("203.0.113.32")) << ::palisade::testing::EmulatorState(*cf_).dump(2);
  EXPECT_TRUE(WaitFor(
      [&] {
        return ScrapeMetric(*daemon_, "palisade_ingest_lines_malformed_total", {"source=\"app\"", "format=\"json\""}) >= 1;
      },
      absl::Seconds(60)));
  EXPECT_EQ(EmulatorAccessRuleValues(*cf_),
            (std::set<std::string>{"2001:db8::31", "203.0.113.32"}));
}

// `palisadectl ship --format=json --json_format=app`: the batches name the mapping, so the
// server reads a file shipped from another host as it reads its own input of that mapping.
TEST_F(JsonE2eTest, PalisadectlShipsACustomMapping) {
  const std::string shipped = dir_ + "/remote.json";
  {
    std::ofstream out(shipped, std::ios::trunc);
    for (int i = 0; i < 3; ++i) {
      out << R"({"ts":)" << absl::ToUnixMillis(absl::Now())
          << R"(,"peer":{"addr":"203.0.113.33"},"req":{"method":"POST","path":"/login",)"
          << R"("ua":"x"},"res":{"status":403}})" << "\n";
    }
  }
  ASSERT_EQ(ShipAsApp(shipped, "remote-app"), 0);
  ASSERT_TRUE(Banned("203.0.113.33")) << ::palisade::testing::EmulatorState(*cf_).dump(2);
  EXPECT_EQ(ScrapeMetric(*daemon_, "palisade_ingest_lines_malformed_total",
                         {"source=\"remote-app\"", "format=\"json\""}),
            0);
}

// Records of 25 KB, their client-written user agent before the status: palisadectl reads each
// whole and ends a batch at 4 MiB (1,000 such lines in one batch were 25 MB, which the server's
// 16 MiB message limit refused, failing the whole ship); palisaded reads each whole, so the
// status after the user agent is still there.
TEST_F(JsonE2eTest, PalisadectlShipsLongRecordsWholeInBoundedBatches) {
  const std::string shipped = dir_ + "/long.json";
  {
    std::ofstream out(shipped, std::ios::trunc);
    const std::string ua(25000, 'u');
    for (int i = 0; i < 1000; ++i) {
      const bool attack = i % 300 == 299;
      out << R"({"ts":)" << absl::ToUnixMillis(absl::Now()) << R"(,"peer":{"addr":")"
          << (attack ? "203.0.113.34" : "198.51.100.34") << R"("},"req":{"ua":")" << ua
          << R"(","method":")" << (attack ? "POST" : "GET") << R"(","path":"/login"},)"
          << R"("res":{"status":)" << (attack ? 403 : 200) << "}}\n";
    }
  }
  ASSERT_EQ(ShipAsApp(shipped, "long-app"), 0);
  ASSERT_TRUE(Banned("203.0.113.34")) << ::palisade::testing::EmulatorState(*cf_).dump(2);
  EXPECT_EQ(ScrapeMetric(*daemon_, "palisade_ingest_lines_malformed_total",
                         {"source=\"long-app\"", "format=\"json\""}),
            0);
  EXPECT_EQ(ScrapeMetric(*daemon_, "palisade_ingest_lines_truncated_total",
                         {"source=\"long-app\"", "format=\"json\""}),
            0);
}

}  // namespace
}  // namespace palisade
