#include "services/server/metrics_https.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"
#include "services/common/header_flood_for_tests.h"
#include "services/common/status_matchers.h"
#include "services/server/auth.h"

namespace palisade {
namespace {

using ::palisade::testing::FloodHeaders;
using ::palisade::testing::IsOk;
using ::palisade::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

// /metrics beyond loopback is exactly where strangers connect: before the bearer token is
// checked, a scrape's headers were read whatever their size (httplib 0.11 bounds each line, not
// their count). A request is read up to 16 KiB; past that the connection is closed.
TEST(MetricsHttpsTest, AScrapesHeadersAreBoundedInBytesBeforeTheTokenIsChecked) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter().Name("palisade_test_total").Help("test").Register(*registry).Add({});
  palisade::v1::MetricsAuthConfig auth;
  auth.add_token_sha256(Authorizer::HashToken("scrape-token"));
  absl::StatusOr<std::unique_ptr<MetricsHttpsServer>> server =
      MetricsHttpsServer::Start("127.0.0.1:0", palisade::v1::TlsConfig(), auth, registry);
  ASSERT_THAT(server, IsOk());
  constexpr size_t kFlood = size_t{48} << 20;
  EXPECT_LT(FloodHeaders((*server)->port(), "/metrics", kFlood), kFlood);
  httplib::Client client("127.0.0.1", (*server)->port());
  client.set_keep_alive(true);
  for (int i = 0; i < 2; ++i) {
    httplib::Result r = client.Get("/metrics", {{"Authorization", "Bearer scrape-token"}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_THAT(r->body, HasSubstr("palisade_test_total"));
  }
  httplib::Result refused = client.Get("/metrics", {{"Authorization", "Bearer wrong"}});
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 401);
}

// The sockets this process holds open.
int OpenSockets() {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code error;
    const std::filesystem::path target = std::filesystem::read_symlink(entry.path(), error);
    if (!error && absl::StartsWith(target.string(), "socket:")) ++n;
  }
  return n;
}

// Connections that send nothing each hold a worker until their keep-alive wait ends (5 s); the
// ones accepted meanwhile were queued without a bound (httplib's own pool). At most the workers
// and the bounded queue are taken, and one the accepting thread holds: the others wait in the
// kernel's listen backlog (httplib's: 5, which takes the 5 more made here without a retry).
TEST(MetricsHttpsTest, IdleConnectionsAreNotAllAccepted) {
  auto registry = std::make_shared<prometheus::Registry>();
  palisade::v1::MetricsAuthConfig auth;
  auth.add_token_sha256(Authorizer::HashToken("scrape-token"));
  absl::StatusOr<std::unique_ptr<MetricsHttpsServer>> server =
      MetricsHttpsServer::Start("127.0.0.1:0", palisade::v1::TlsConfig(), auth, registry);
  ASSERT_THAT(server, IsOk());
  const int taken = MetricsHttpsServer::kThreads + MetricsHttpsServer::kQueuedConnections + 1;
  const int idle_count = taken + 5;
  const int before = OpenSockets();
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>((*server)->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::vector<int> idle;
  for (int i = 0; i < idle_count; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    idle.push_back(fd);
    ASSERT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0) << i;
  }
  // The queue fills, and from then on the accepting thread waits for room.
  const size_t queue = MetricsHttpsServer::kQueuedConnections;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while ((*server)->most_queued() < queue && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ((*server)->most_queued(), queue) << "no bounded queue";
  const int accepted = OpenSockets() - before - idle_count;
  EXPECT_LE(accepted, taken);
  for (int fd : idle) ::close(fd);
}

// A certificate for 127.0.0.1 and its key, by openssl, in the test's directory.
void MakeCertificate(const std::string& cert, const std::string& key) {
  ASSERT_EQ(std::system(absl::StrCat("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "
                                     "/CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout ",
                                     key, " -out ", cert, " 2>/dev/null")
                            .c_str()),
            0);
}

// httplib ignores whether the client CA loads: a missing or unreadable client_ca_file was taken
// at start, and then every scrape failed its handshake. Start refuses it, naming the file.
TEST(MetricsHttpsTest, AClientCaThatHoldsNoCertificateRefusesTheStart) {
  const std::string dir = ::testing::TempDir();
  const std::string cert = dir + "/m-cert.pem", key = dir + "/m-key.pem";
  MakeCertificate(cert, key);
  {
    std::ofstream(dir + "/not-a-ca.pem") << "not a certificate\n";
  }
  auto registry = std::make_shared<prometheus::Registry>();
  palisade::v1::TlsConfig tls;
  tls.set_cert_file(cert);
  tls.set_key_file(key);
  tls.set_client_ca_file(cert);  // a self-signed certificate is its own CA
  {
    absl::StatusOr<std::unique_ptr<MetricsHttpsServer>> ok = MetricsHttpsServer::Start(
        "127.0.0.1:0", tls, palisade::v1::MetricsAuthConfig(), registry);
    EXPECT_THAT(ok, IsOk());
    EXPECT_THAT(CheckMetricsTls(tls), IsOk());
  }
  tls.set_client_ca_file(dir + "/no-such-ca.pem");
  EXPECT_THAT(MetricsHttpsServer::Start("127.0.0.1:0", tls, palisade::v1::MetricsAuthConfig(),
                                        std::make_shared<prometheus::Registry>()),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("metrics_tls.client_ca_file"),
                             HasSubstr("no-such-ca.pem"))));
  tls.set_client_ca_file(dir + "/not-a-ca.pem");
  EXPECT_THAT(MetricsHttpsServer::Start("127.0.0.1:0", tls, palisade::v1::MetricsAuthConfig(),
                                        std::make_shared<prometheus::Registry>()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("metrics_tls.client_ca_file"), HasSubstr("not-a-ca.pem"),
                             HasSubstr("no certificate"))));
  // The certificate and key are checked too (palisaded does so before its first listener).
  tls.set_client_ca_file("");
  tls.set_key_file(dir + "/not-a-ca.pem");
  EXPECT_THAT(CheckMetricsTls(tls), StatusIs(absl::StatusCode::kInvalidArgument,
                                             HasSubstr("metrics_tls")));
}

}  // namespace
}  // namespace palisade
