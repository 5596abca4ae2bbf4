#include "services/server/metrics_https.h"

#include <memory>
#include <string>

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

}  // namespace
}  // namespace palisade
