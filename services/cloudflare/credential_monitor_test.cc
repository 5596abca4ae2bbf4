// The credentials check kept true while running: against the emulator over loopback HTTP, on a
// SimulatedClock (the schedule is driven by Tick, nothing sleeps).
#include "services/cloudflare/credential_monitor.h"

#include <functional>
#include <set>
#include <sstream>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "services/common/status_matchers.h"
#include "tests/cloudflare_fake/emulator_server.h"
#include "tests/cloudflare_fake/fake_cloudflare.h"

namespace palisade {
namespace {

using ::palisade::testing::IsOk;
using ::palisade::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;

class CredentialMonitorTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_THAT(server_.Start(), IsOk()); }

  void AddToken(std::set<std::string> permissions, absl::Duration expires_in) {
    fake::TokenSpec spec;
    spec.permissions = std::move(permissions);
    spec.ip_in = {"127.0.0.1/32"};
    spec.expires_on = clock_.TimeNow() + expires_in;
    std::tie(id_, secret_) = fake_.AddToken(spec);
    ClientOptions options;
    options.base_url = server_.base_url();
    options.account_id = fake_.options().account_id;
    options.zone_id = fake_.options().zone_id;
    Credentials creds;
    creds.token = Secret(secret_);
    client_ = std::make_unique<CloudflareClient>(transport_, clock_, options, creds, registry_);
  }

  CredentialMonitorOptions Options() {
    CredentialMonitorOptions o;
    o.needs.account_id = fake_.options().account_id;
    o.needs.zone_id = fake_.options().zone_id;
    o.interval = absl::Hours(1);
    return o;
  }

  // Changes the token's policies as an operator would in the dashboard (PUT .../tokens/{id},
  // as the token itself: it holds API Tokens Write), keeping the groups `keep` says.
  void KeepGroups(const std::function<bool(const std::string& name)>& keep) {
    json token = fake_.TokenSnapshot(id_);
    for (auto& policy : token["policies"]) {
      json groups = json::array();
      for (const auto& g : policy["permission_groups"]) {
        if (keep(g.value("name", ""))) groups.push_back(g);
      }
      policy["permission_groups"] = groups;
    }
    PutToken(token);
  }

  void PutToken(const json& token) {
    fake::Request r;
    r.method = "PUT";
    r.path = absl::StrCat("/client/v4/user/tokens/", id_);
    r.headers["authorization"] = "Bearer " + secret_;
    r.headers["content-type"] = "application/json";
    r.body = token.dump();
    fake::Response resp = fake_.Handle(r);
    ASSERT_EQ(resp.status, 200) << resp.body;
  }

  std::string Metrics() {
    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, registry_.Collect());
    return out.str();
  }

  static const ActuatorState* State(const CredentialStatus& s, const std::string& actuator) {
    for (const ActuatorState& a : s.actuators) {
      if (a.actuator == actuator) return &a;
    }
    return nullptr;
  }

  SimulatedClock clock_;
  fake::FakeCloudflare fake_{clock_};
  fake::EmulatorServer server_{fake_};
  CurlTransport transport_;
  prometheus::Registry registry_;
  std::string id_, secret_;
  std::unique_ptr<CloudflareClient> client_;
};

TEST_F(CredentialMonitorTest, APermissionLostWhileRunningIsReportedAndItsReturnToo) {
  AddToken({"firewall_services", "lists", "rulesets", "tokens"}, absl::Hours(24 * 30));
  CredentialMonitorOptions options = Options();
  // The dispatcher's CredentialsRestored: a queue waiting after Cloudflare refused the token
  // goes out as soon as the permission is back.
  std::vector<std::string> gained;
  options.on_gained = [&](const std::string& actuator) { gained.push_back(actuator); };
  CredentialMonitor monitor(*client_, clock_, options, registry_);
  absl::StatusOr<CredentialReport> start = monitor.CheckAtStart(std::nullopt);
  ASSERT_THAT(start, IsOk());
  EXPECT_TRUE(start->Enabled(kIpListActuator));
  monitor.Started(
      {kAccessRuleActuator, kIpListActuator, kRateLimitActuator, kTokenRevocationActuator});
  EXPECT_THAT(Metrics(), HasSubstr("palisade_actuator_enabled{actuator=\"ip_list\"} 1"));

  // Removed in the dashboard after the start: seen at the next check, not before.
  const json original = fake_.TokenSnapshot(id_);
  KeepGroups([](const std::string& name) { return name != "Account Filter Lists Edit"; });
  EXPECT_FALSE(monitor.Tick());
  EXPECT_TRUE(State(monitor.status(), kIpListActuator)->enabled);
  clock_.Advance(absl::Hours(1));
  EXPECT_TRUE(monitor.Tick());
  CredentialStatus s = monitor.status();
  const ActuatorState* list = State(s, kIpListActuator);
  ASSERT_NE(list, nullptr);
  EXPECT_FALSE(list->enabled);
  EXPECT_THAT(list->reason, HasSubstr("Account Filter Lists Edit"));
  EXPECT_THAT(list->reason, HasSubstr("still runs"));
  EXPECT_TRUE(State(s, kAccessRuleActuator)->enabled);
  EXPECT_EQ(s.checked, clock_.TimeNow());
  EXPECT_EQ(s.report->Count("missing_permission"), 1);
  std::string m = Metrics();
  EXPECT_THAT(m, HasSubstr("palisade_actuator_enabled{actuator=\"ip_list\"} 0"));
  EXPECT_THAT(m, HasSubstr("palisade_cloudflare_permission_changes_total{actuator=\"ip_list\","
                           "change=\"lost\"} 1"));
  EXPECT_THAT(m, HasSubstr("palisade_cloudflare_token_findings{kind=\"missing_permission\"} 1"));
  EXPECT_THAT(m, HasSubstr("palisade_cloudflare_credentials_checks_total{result=\"ok\"} 2"));
  EXPECT_THAT(m, Not(HasSubstr(secret_)));
  EXPECT_TRUE(gained.empty());

  // Given back: enabled again, nothing to restart (the actuator never stopped).
  PutToken(original);
  clock_.Advance(absl::Hours(1));
  ASSERT_TRUE(monitor.Tick());
  EXPECT_TRUE(State(monitor.status(), kIpListActuator)->enabled);
  EXPECT_EQ(gained, std::vector<std::string>{kIpListActuator});
  m = Metrics();
  EXPECT_THAT(m, HasSubstr("palisade_actuator_enabled{actuator=\"ip_list\"} 1"));
  EXPECT_THAT(m, HasSubstr("palisade_cloudflare_permission_changes_total{actuator=\"ip_list\","
                           "change=\"gained\"} 1"));
}

TEST_F(CredentialMonitorTest, AnApproachingExpiryAndAFailedCheckAreShown) {
  AddToken({"firewall_services", "lists", "rulesets", "tokens"}, absl::Hours(24 * 20));
  CredentialMonitor monitor(*client_, clock_, Options(), registry_);
  ASSERT_THAT(monitor.CheckAtStart(std::nullopt), IsOk());
  EXPECT_EQ(monitor.status().report->Count("expiring_soon"), 0);
  const double expiry =
      static_cast<double>(absl::ToUnixSeconds(clock_.TimeNow() + absl::Hours(24 * 20)));
  EXPECT_THAT(Metrics(),
              HasSubstr(absl::StrCat("palisade_cloudflare_token_expiry_timestamp_seconds ",
                                     static_cast<int64_t>(expiry))));

  // Seven days on, the expiry is within 14 days: the periodic check says so.
  clock_.Advance(absl::Hours(24 * 7));
  ASSERT_TRUE(monitor.Tick());
  EXPECT_EQ(monitor.status().report->Count("expiring_soon"), 1);
  EXPECT_THAT(Metrics(), HasSubstr("palisade_cloudflare_token_findings{kind=\"expiring_soon\"} 1"));

  // Cloudflare down: the check is not made, the last report stands, the reason is shown.
  fake::Faults faults;
  faults.error_rate = 1.0;
  faults.error_status = 503;
  fake_.SetFaults(faults);
  clock_.Advance(absl::Hours(1));
  ASSERT_TRUE(monitor.Tick());
  CredentialStatus s = monitor.status();
  EXPECT_FALSE(s.error.empty());
  EXPECT_EQ(s.report->Count("expiring_soon"), 1);
  EXPECT_TRUE(State(s, kIpListActuator)->enabled);
  EXPECT_THAT(Metrics(),
              HasSubstr("palisade_cloudflare_credentials_checks_total{result=\"failed\"} 1"));
  fake_.SetFaults(fake::Faults());
  clock_.Advance(absl::Hours(1));
  ASSERT_TRUE(monitor.Tick());
  EXPECT_TRUE(monitor.status().error.empty());
}

TEST_F(CredentialMonitorTest, APermissionGainedByAnActuatorNotStartedAsksForARestart) {
  AddToken({"firewall_services", "rulesets", "tokens"}, absl::Hours(24 * 30));  // no lists
  CredentialMonitor monitor(*client_, clock_, Options(), registry_);
  absl::StatusOr<CredentialReport> start = monitor.CheckAtStart(std::nullopt);
  ASSERT_THAT(start, IsOk());
  ASSERT_FALSE(start->Enabled(kIpListActuator));
  monitor.Started({kAccessRuleActuator, kRateLimitActuator, kTokenRevocationActuator});
  EXPECT_FALSE(State(monitor.status(), kIpListActuator)->enabled);

  // The operator adds Account Filter Lists Edit: a policy on the account (the token's others are
  // on the zone and the user), with the group as the group list names it.
  json token = fake_.TokenSnapshot(id_);
  json groups = json::array();
  for (const auto& g : fake::PermissionGroups()) {
    if (g.value("name", "") == "Account Filter Lists Edit") {
      groups.push_back({{"id", g["id"]}, {"name", g["name"]}});
    }
  }
  ASSERT_EQ(groups.size(), 1u);
  token["policies"].push_back(
      {{"effect", "allow"},
       {"resources",
        {{absl::StrCat("com.cloudflare.api.account.", fake_.options().account_id), "*"}}},
       {"permission_groups", groups}});
  PutToken(token);

  clock_.Advance(absl::Hours(1));
  ASSERT_TRUE(monitor.Tick());
  CredentialStatus s = monitor.status();
  ASSERT_TRUE(s.report->Enabled(kIpListActuator));  // the token can now
  const ActuatorState* list = State(s, kIpListActuator);
  EXPECT_FALSE(list->enabled);  // but it is not running
  EXPECT_THAT(list->reason, HasSubstr("restart palisaded"));
  std::string m = Metrics();
  EXPECT_THAT(m, HasSubstr("palisade_actuator_enabled{actuator=\"ip_list\"} 0"));
  EXPECT_THAT(m, HasSubstr("palisade_cloudflare_permission_changes_total{actuator=\"ip_list\","
                           "change=\"gained\"} 1"));
}

TEST_F(CredentialMonitorTest, ATokenRefusedAtStartIsAnError) {
  AddToken({"firewall_services"}, absl::Hours(24));
  // Expired: verify refuses it.
  clock_.Advance(absl::Hours(25));
  CredentialMonitor monitor(*client_, clock_, Options(), registry_);
  EXPECT_THAT(monitor.CheckAtStart(std::nullopt), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_FALSE(monitor.status().report.has_value());
  EXPECT_FALSE(monitor.status().error.empty());
}

}  // namespace
}  // namespace palisade
