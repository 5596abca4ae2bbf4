// The credentials check against the emulator's permission-scoped tokens over loopback HTTP (the
// policies are what the emulator makes of a TokenSpec, with the API's group names and
// resources), plus a few token objects written by hand.
#include "services/cloudflare/token_check.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/status_matchers.h"
#include "tests/cloudflare_fake/emulator_server.h"
#include "tests/cloudflare_fake/fake_cloudflare.h"

namespace palisade {
namespace {

using ::palisade::testing::IsOk;
using ::testing::HasSubstr;
using ::testing::Not;

class TokenCheckTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_THAT(server_.Start(), IsOk()); }

  // An exact token: what the actuators need, from 127.0.0.1, for 30 days.
  fake::TokenSpec Exact() {
    fake::TokenSpec spec;
    spec.permissions = {"firewall_services", "lists", "rulesets", "tokens", "audit_logs"};
    spec.ip_in = {"127.0.0.1/32"};
    spec.expires_on = clock_.TimeNow() + absl::Hours(24 * 30);
    return spec;
  }

  TokenNeeds Needs() {
    TokenNeeds n;
    n.account_id = fake_.options().account_id;
    n.zone_id = fake_.options().zone_id;
    n.audit_log = true;
    return n;
  }
  // What the access-rule actuator alone needs, its rules on the zone or on the account.
  TokenNeeds AccessRulesOnly(bool account_scope) {
    TokenNeeds n = Needs();
    n.ip_list = n.rate_limit = n.token_revocation = n.audit_log = false;
    n.access_rules_account_scope = account_scope;
    return n;
  }

  CredentialReport Check(const fake::TokenSpec& spec) { return Check(spec, Needs()); }

  CredentialReport Check(const fake::TokenSpec& spec, const TokenNeeds& needs) {
    secret_ = fake_.AddToken(spec).second;
    ClientOptions options;
    options.base_url = server_.base_url();
    options.account_id = fake_.options().account_id;
    options.zone_id = fake_.options().zone_id;
    Credentials creds;
    creds.token = Secret(secret_);
    CloudflareClient client(transport_, clock_, options, creds, registry_);
    absl::StatusOr<CredentialReport> r = CheckCredentials(client, needs, clock_.TimeNow());
    EXPECT_THAT(r, IsOk());
    if (!r.ok()) return CredentialReport();
    // Whatever it says, it never says the secret.
    EXPECT_THAT(r->ToJson().dump(), Not(HasSubstr(secret_)));
    EXPECT_THAT(r->ToText(), Not(HasSubstr(secret_)));
    return *r;
  }

  SimulatedClock clock_;
  fake::FakeCloudflare fake_{clock_};
  fake::EmulatorServer server_{fake_};
  CurlTransport transport_;
  prometheus::Registry registry_;
  std::string secret_;
};

TEST_F(TokenCheckTest, ExactTokenHasNoFindings) {
  CredentialReport r = Check(Exact());
  EXPECT_TRUE(r.read_self);
  EXPECT_TRUE(r.findings.empty()) << r.ToText();
  ASSERT_EQ(r.actuators.size(), 5u);
  for (const ActuatorState& a : r.actuators) EXPECT_TRUE(a.enabled) << a.actuator;
}

TEST_F(TokenCheckTest, TooBroadResourcesAreNamedAndEverythingRuns) {
  fake::TokenSpec spec = Exact();
  spec.resources = "all_accounts";
  CredentialReport r = Check(spec);
  EXPECT_GE(r.Count("too_broad"), 3) << r.ToText();
  EXPECT_THAT(r.ToText(), HasSubstr("com.cloudflare.api.account.*"));
  EXPECT_THAT(r.ToText(), HasSubstr("com.cloudflare.api.account.zone.*"));
  EXPECT_EQ(r.Count("missing_permission"), 0);
  for (const ActuatorState& a : r.actuators) EXPECT_TRUE(a.enabled) << a.actuator;

  spec.resources = "all_zones";
  r = Check(spec);
  EXPECT_THAT(r.ToText(), HasSubstr("every zone of account"));
  EXPECT_EQ(r.Count("missing_permission"), 0);
}

TEST_F(TokenCheckTest, MissingOnePermissionDisablesOnlyItsActuator) {
  fake::TokenSpec spec = Exact();
  spec.permissions.erase("lists");
  CredentialReport r = Check(spec);
  EXPECT_EQ(r.Count("missing_permission"), 1) << r.ToText();
  EXPECT_FALSE(r.Enabled(kIpListActuator));
  EXPECT_TRUE(r.Enabled(kAccessRuleActuator));
  EXPECT_TRUE(r.Enabled(kRateLimitActuator));
  EXPECT_TRUE(r.Enabled(kTokenRevocationActuator));
  EXPECT_TRUE(r.Enabled(kAuditLogActuator));
  for (const ActuatorState& a : r.actuators) {
    if (a.actuator == kIpListActuator) {
      EXPECT_THAT(a.reason, HasSubstr("Account Filter Lists Edit"));
    }
  }
}

TEST_F(TokenCheckTest, MissingWafWriteDisablesBothActuatorsThatWriteRules) {
  fake::TokenSpec spec = Exact();
  spec.permissions.erase("rulesets");
  CredentialReport r = Check(spec);
  EXPECT_FALSE(r.Enabled(kRateLimitActuator));
  EXPECT_FALSE(r.Enabled(kIpListActuator));  // its custom rule is a ruleset too
  EXPECT_TRUE(r.Enabled(kAccessRuleActuator));
}

// Zone access rules (the default) take the zone group "Firewall Services Write" on the zone
// (cloudflare-api.md §2.1); the account group alone would be refused by the API on the zone path.
TEST_F(TokenCheckTest, ZoneAccessRulesNeedFirewallServicesOnTheZone) {
  fake::TokenSpec spec = Exact();
  spec.permissions = {"firewall_services", "tokens.read"};  // it may read itself
  const TokenNeeds needs = AccessRulesOnly(/*account_scope=*/false);
  CredentialReport r = Check(spec, needs);
  EXPECT_TRUE(r.Enabled(kAccessRuleActuator)) << r.ToText();
  EXPECT_EQ(r.Count("missing_permission"), 0);
  EXPECT_EQ(r.Count("unused_permission"), 0);

  spec.permissions = {"access_rules", "tokens.read"};
  r = Check(spec, needs);
  EXPECT_FALSE(r.Enabled(kAccessRuleActuator));
  EXPECT_EQ(r.Count("missing_permission"), 1) << r.ToText();
  ASSERT_EQ(r.actuators.size(), 1u);
  EXPECT_THAT(r.actuators[0].reason,
              HasSubstr("\"Firewall Services Write\" on zone " + fake_.options().zone_id));
  // And the account group it holds is of no use here.
  EXPECT_EQ(r.Count("unused_permission"), 1);
  EXPECT_THAT(r.ToText(), HasSubstr("\"Account Firewall Access Rules Write\" is granted but"));
}

// Account access rules take the account group on the account; the zone group is not enough.
TEST_F(TokenCheckTest, AccountAccessRulesNeedTheAccountGroupOnTheAccount) {
  fake::TokenSpec spec = Exact();
  spec.permissions = {"access_rules", "tokens.read"};
  const TokenNeeds needs = AccessRulesOnly(/*account_scope=*/true);
  CredentialReport r = Check(spec, needs);
  EXPECT_TRUE(r.Enabled(kAccessRuleActuator)) << r.ToText();
  EXPECT_EQ(r.Count("missing_permission"), 0);
  EXPECT_EQ(r.Count("unused_permission"), 0);

  spec.permissions = {"firewall_services", "tokens.read"};  // it may read itself
  r = Check(spec, needs);
  EXPECT_FALSE(r.Enabled(kAccessRuleActuator));
  EXPECT_EQ(r.Count("missing_permission"), 1) << r.ToText();
  ASSERT_EQ(r.actuators.size(), 1u);
  EXPECT_THAT(r.actuators[0].reason,
              HasSubstr("\"Account Firewall Access Rules Write\" on account " +
                        fake_.options().account_id));
}

TEST_F(TokenCheckTest, NoIpConditionAndUnusedPermissions) {
  fake::TokenSpec spec = Exact();
  spec.ip_in.clear();
  spec.permissions.insert("DNS Write");
  CredentialReport r = Check(spec);
  EXPECT_EQ(r.Count("no_ip_condition"), 1) << r.ToText();
  EXPECT_EQ(r.Count("unused_permission"), 1);
  EXPECT_THAT(r.ToText(), HasSubstr("DNS Write"));
  for (const ActuatorState& a : r.actuators) EXPECT_TRUE(a.enabled) << a.actuator;
}

TEST_F(TokenCheckTest, ExpiryTomorrowNeverAndFar) {
  fake::TokenSpec spec = Exact();
  spec.expires_on = clock_.TimeNow() + absl::Hours(24);
  EXPECT_EQ(Check(spec).Count("expiring_soon"), 1);
  spec.expires_on = absl::InfiniteFuture();
  EXPECT_EQ(Check(spec).Count("no_expiry"), 1);
  spec.expires_on = clock_.TimeNow() + absl::Hours(24 * 365);
  EXPECT_EQ(Check(spec).Count("expiry_far"), 1);
}

TEST_F(TokenCheckTest, MayNotReadItselfFallsBackToProbes) {
  fake::TokenSpec spec = Exact();
  // No token or audit-log permission, no lists.
  spec.permissions = {"firewall_services", "rulesets"};
  CredentialReport r = Check(spec);
  EXPECT_FALSE(r.read_self);
  EXPECT_EQ(r.Count("cannot_read_self"), 1) << r.ToText();
  EXPECT_TRUE(r.Enabled(kAccessRuleActuator));
  EXPECT_TRUE(r.Enabled(kRateLimitActuator));
  EXPECT_FALSE(r.Enabled(kIpListActuator));
  EXPECT_FALSE(r.Enabled(kTokenRevocationActuator));
  EXPECT_FALSE(r.Enabled(kAuditLogActuator));
  // What verify still says: the expiry.
  ASSERT_TRUE(r.expires_on.has_value());
  EXPECT_EQ(r.Count("expiring_soon") + r.Count("no_expiry") + r.Count("expiry_far"), 0);
}

// The emulator side the check relies on: permission groups listed, enforcement from policies.
TEST_F(TokenCheckTest, EmulatorListsGroupsAndEnforcesPolicies) {
  fake::TokenSpec spec = Exact();
  spec.permissions = {"lists"};
  const std::string secret = fake_.AddToken(spec).second;
  fake::Request r;
  r.method = "GET";
  r.path = "/client/v4/user/tokens/permission_groups";
  r.headers["authorization"] = "Bearer " + secret;
  fake::Response resp = fake_.Handle(r);
  EXPECT_EQ(resp.status, 200);
  EXPECT_THAT(resp.body, HasSubstr("Account Filter Lists Edit"));
  EXPECT_THAT(resp.body, HasSubstr("Zone WAF Write"));
  EXPECT_THAT(resp.body, HasSubstr("Firewall Services Write"));

  r.path = "/client/v4/zones/" + fake_.options().zone_id + "/rulesets/phases/http_ratelimit/entrypoint";
  resp = fake_.Handle(r);
  EXPECT_EQ(resp.status, 403);
  EXPECT_THAT(resp.body, HasSubstr("10000"));
  r.path = "/client/v4/accounts/" + fake_.options().account_id + "/rules/lists";
  EXPECT_EQ(fake_.Handle(r).status, 200);
}

TEST(CompareTokenTest, IdsOnlyAndDenyPolicies) {
  TokenNeeds n;
  n.account_id = "0123456789abcdef0123456789abcdef";
  n.zone_id = "fedcba9876543210fedcba9876543210";
  n.ip_list = false;
  n.rate_limit = false;
  n.token_revocation = false;
  n.access_rules_account_scope = true;  // the account group on the account is what is needed
  const nlohmann::json token = nlohmann::json::parse(R"({
    "id": "ed17574386854bf78a67040be0a770b0", "status": "active",
    "expires_on": "2027-01-20T00:00:00Z",
    "policies": [
      {"effect": "allow",
       "resources": {"com.cloudflare.api.account.0123456789abcdef0123456789abcdef": "*"},
       "permission_groups": [{"id": "a416acf9ef5a4af19fb11ed3b96b1fe6"}]},
      {"effect": "deny",
       "resources": {"com.cloudflare.api.account.*": "*"},
       "permission_groups": [{"id": "a416acf9ef5a4af19fb11ed3b96b1fe6"}]}],
    "condition": {"request_ip": {"in": ["192.0.2.0/24"]}}})");
  absl::Time now;
  std::string err;
  ASSERT_TRUE(absl::ParseTime(absl::RFC3339_full, "2027-01-01T00:00:00Z", &now, &err));
  CredentialReport r = CompareToken(token, n, now);
  EXPECT_FALSE(r.Enabled(kAccessRuleActuator));
  EXPECT_THAT(r.ToText(), HasSubstr("deny policy"));
  EXPECT_EQ(r.Count("no_ip_condition"), 0);  // request_ip, as the SDKs write it
  EXPECT_EQ(r.Count("expiring_soon"), 0);    // 19 days
  EXPECT_EQ(r.actuators.size(), 1u);
}

// Policies that name groups by id only: the zone group's id is "Firewall Services Write", which
// zone access rules need on the zone; the account group's id on the account does not stand in.
TEST(CompareTokenTest, ZoneAccessRulesByGroupIdOnly) {
  TokenNeeds n;
  n.account_id = "0123456789abcdef0123456789abcdef";
  n.zone_id = "fedcba9876543210fedcba9876543210";
  n.ip_list = false;
  n.rate_limit = false;
  n.token_revocation = false;
  auto token = [](const std::string& resource, const std::string& group) {
    nlohmann::json t = {{"id", "ed17574386854bf78a67040be0a770b0"}, {"status", "active"}};
    t["policies"] =
        nlohmann::json::array({{{"effect", "allow"},
                                {"resources", {{resource, "*"}}},
                                {"permission_groups", nlohmann::json::array({{{"id", group}}})}}});
    return t;
  };
  const std::string zone = "com.cloudflare.api.account.zone.fedcba9876543210fedcba9876543210";
  const std::string account = "com.cloudflare.api.account.0123456789abcdef0123456789abcdef";
  const absl::Time now = absl::FromUnixSeconds(1798761600);  // 2027-01-01
  CredentialReport r = CompareToken(token(zone, "43137f8d07884d3198dc0ee77ca6e79b"), n, now);
  EXPECT_TRUE(r.Enabled(kAccessRuleActuator)) << r.ToText();
  EXPECT_EQ(r.Count("missing_permission"), 0);
  EXPECT_EQ(r.Count("unused_permission"), 0);

  r = CompareToken(token(account, "a416acf9ef5a4af19fb11ed3b96b1fe6"), n, now);
  EXPECT_FALSE(r.Enabled(kAccessRuleActuator));
  EXPECT_THAT(r.ToText(), HasSubstr("lacks \"Firewall Services Write\" on zone"));

  n.access_rules_account_scope = true;
  EXPECT_TRUE(CompareToken(token(account, "a416acf9ef5a4af19fb11ed3b96b1fe6"), n, now)
                  .Enabled(kAccessRuleActuator));
  r = CompareToken(token(zone, "43137f8d07884d3198dc0ee77ca6e79b"), n, now);
  EXPECT_FALSE(r.Enabled(kAccessRuleActuator));
  EXPECT_THAT(r.ToText(), HasSubstr("lacks \"Account Firewall Access Rules Write\" on account"));
}

// Verify names the token; its details (GET /user/tokens/{id}) carry `policies` as given.
class OddPolicies final : public HttpTransport {
 public:
  explicit OddPolicies(std::string policies) : policies_(std::move(policies)) {}
  absl::StatusOr<HttpResponse> Send(const HttpRequest& request) override {
    HttpResponse r;
    r.status = 200;
    r.body = absl::StrCat(
        R"({"success":true,"result":{"id":"ed17574386854bf78a67040be0a770b0","status":"active")",
        absl::StrContains(request.url, "/verify") ? "" : absl::StrCat(R"(,"policies":)", policies_),
        "}}");
    return r;
  }

 private:
  std::string policies_;
};

// A policy of an unexpected shape grants nothing and never throws: nlohmann's value() threw
// type_error out of CheckCredentials for a null effect, a policy that is not an object or a
// group id that is not a string, which aborted palisaded at start and in the monitor's thread.
TEST(CheckCredentialsTest, PoliciesOfAnUnexpectedShapeGrantNothing) {
  TokenNeeds n;
  n.account_id = "0123456789abcdef0123456789abcdef";
  n.zone_id = "fedcba9876543210fedcba9876543210";
  n.ip_list = n.rate_limit = n.token_revocation = false;  // zone access rules only
  const std::string zone = R"("com.cloudflare.api.account.zone.fedcba9876543210fedcba9876543210")";
  const std::string firewall = R"({"id":"43137f8d07884d3198dc0ee77ca6e79b"})";
  const std::string good =
      absl::StrCat(R"({"effect":"allow","resources":{)", zone, R"(:"*"},"permission_groups":[)",
                   firewall, "]}");
  // Each would grant zone access rules, were it readable.
  const std::vector<std::string> odd = {
      absl::StrCat(R"({"effect":null,"resources":{)", zone, R"(:"*"},"permission_groups":[)",
                   firewall, "]}"),
      absl::StrCat(R"({"effect":7,"resources":{)", zone, R"(:"*"},"permission_groups":[)",
                   firewall, "]}"),
      absl::StrCat(R"({"resources":{)", zone, R"(:"*"},"permission_groups":[{"id":5}]})"),
      absl::StrCat(R"({"resources":{)", zone, R"(:"*"},"permission_groups":[{"name":5,"id":[]}]})"),
      absl::StrCat(R"({"resources":{)", zone, R"(:"*"},"permission_groups":["x",7,null]})"),
      absl::StrCat(R"({"resources":{)", zone, R"(:"*"},"permission_groups":{"id":5}})"),
      R"("x")",
      "null",
  };
  Credentials creds;
  creds.token = Secret("cfut_0123456789abcdefghijABCDEFGHIJ0123456789");
  for (const std::string& policy : odd) {
    for (const std::string& policies :
         {absl::StrCat("[", policy, "]"), absl::StrCat("[", policy, ",", good, "]"), policy}) {
      SimulatedClock clock;
      prometheus::Registry registry;
      OddPolicies transport(policies);
      CloudflareClient client(transport, clock, ClientOptions(), creds, registry);
      absl::StatusOr<CredentialReport> r;
      EXPECT_NO_THROW(r = CheckCredentials(client, n, clock.TimeNow())) << policies;
      ASSERT_THAT(r, IsOk()) << policies;
      EXPECT_TRUE(r->read_self) << policies;
      // The readable policy alongside still counts; the odd one alone grants nothing.
      const bool with_good = absl::StrContains(policies, good);
      EXPECT_EQ(r->Enabled(kAccessRuleActuator), with_good) << policies << "\n" << r->ToText();
    }
  }
}

}  // namespace
}  // namespace palisade
