// The emulator's own tests: the behaviours of ../shared/cloudflare-api.md §8 that Palisade's
// tests rely on, asserted through FakeCloudflare::Handle.
#include "tests/cloudflare_fake/fake_cloudflare.h"

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace palisade::fake {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

class FakeCloudflareTest : public ::testing::Test {
 protected:
  FakeCloudflareTest() : fake_(clock_) {
    TokenSpec spec;
    spec.permissions = {"firewall_services", "lists", "rulesets", "tokens", "audit_logs"};
    token_ = fake_.AddToken(spec).second;
  }

  Response Call(const std::string& method, const std::string& path, const std::string& body = "",
                std::map<std::string, std::string> query = {}, const std::string& token = "") {
    Request r;
    r.method = method;
    r.path = "/client/v4" + path;
    r.query = std::move(query);
    r.body = body;
    r.headers["authorization"] = "Bearer " + (token.empty() ? token_ : token);
    return fake_.Handle(r);
  }
  static json Body(const Response& r) { return json::parse(r.body); }
  static int Code(const Response& r) { return Body(r)["errors"][0]["code"].get<int>(); }

  std::string Zone() { return "/zones/" + fake_.options().zone_id; }
  std::string Account() { return "/accounts/" + fake_.options().account_id; }

  SimulatedClock clock_;
  FakeCloudflare fake_;
  std::string token_;
};

TEST_F(FakeCloudflareTest, EnvelopeOnSuccessAndFailure) {
  Response ok = Call("GET", Zone() + "/firewall/access_rules/rules");
  ASSERT_EQ(ok.status, 200);
  json b = Body(ok);
  EXPECT_TRUE(b["success"]);
  EXPECT_TRUE(b["errors"].empty());
  EXPECT_TRUE(b["result"].is_array());
  EXPECT_EQ(b["result_info"]["total_pages"], 0);
  EXPECT_THAT(ok.headers["ratelimit"], HasSubstr("r=1199"));

  Response bad = Call("GET", "/zones/00000000000000000000000000000000/firewall/access_rules/rules");
  EXPECT_EQ(bad.status, 404);
  EXPECT_FALSE(Body(bad)["success"]);
  EXPECT_TRUE(Body(bad)["result"].is_null());
  EXPECT_EQ(Code(bad), 7003);
}

TEST_F(FakeCloudflareTest, CredentialErrors) {
  Request r;
  r.method = "GET";
  r.path = "/client/v4" + Zone() + "/firewall/access_rules/rules";
  r.headers["authorization"] = "Token abc";
  Response malformed = fake_.Handle(r);
  EXPECT_EQ(malformed.status, 400);
  EXPECT_EQ(Code(malformed), 6003);
  EXPECT_EQ(Body(malformed)["errors"][0]["error_chain"][0]["code"], 6111);

  EXPECT_EQ(Code(Call("GET", Zone() + "/firewall/access_rules/rules", "", {}, "unknowntoken")),
            9109);
  EXPECT_EQ(Code(Call("GET", "/user/tokens/verify", "", {}, "unknowntoken")), 1000);

  r.headers.clear();
  r.headers["x-auth-email"] = "ops@example.com";
  EXPECT_EQ(Code(fake_.Handle(r)), 9107);
  r.headers["x-auth-key"] = "0123456789abcdef0123456789abcdef01234";
  EXPECT_EQ(Code(fake_.Handle(r)), 9103);
  r.headers["x-auth-key"] = "not-hex";
  EXPECT_EQ(Body(fake_.Handle(r))["errors"][0]["error_chain"][0]["code"], 6103);
}

TEST_F(FakeCloudflareTest, PermissionsAndIpConditions) {
  TokenSpec reader;
  reader.permissions = {"lists"};
  reader.ip_in = {"192.0.2.0/24"};
  std::string value = fake_.AddToken(reader).second;
  Request r;
  r.method = "GET";
  r.path = "/client/v4" + Zone() + "/firewall/access_rules/rules";
  r.headers["authorization"] = "Bearer " + value;
  r.remote_ip = "192.0.2.10";
  Response denied = fake_.Handle(r);
  EXPECT_EQ(denied.status, 403);
  EXPECT_EQ(Code(denied), 10000);
  r.remote_ip = "198.51.100.1";
  Response location = fake_.Handle(r);
  EXPECT_EQ(Code(location), 9109);
  EXPECT_THAT(Body(location)["errors"][0]["message"].get<std::string>(),
              HasSubstr("from location: 198.51.100.1"));
}

// Access rules take a different group per scope (cloudflare-api.md §2.1): the account group
// "Account Firewall Access Rules Write" on the account path, the zone group "Firewall Services
// Write" on the zone path; neither stands in for the other.
TEST_F(FakeCloudflareTest, AccessRulePermissionFollowsTheRuleScope) {
  const std::string rule = R"({"mode":"block","configuration":{"target":"ip","value":"203.0.113.)";
  auto create = [&](const std::string& scope, const std::string& token, int n) {
    return Call("POST", scope + "/firewall/access_rules/rules",
                absl::StrCat(rule, n, R"("},"notes":"n"})"), {}, token)
        .status;
  };
  TokenSpec account_group;
  account_group.permissions = {"access_rules"};
  const std::string account_only = fake_.AddToken(account_group).second;
  EXPECT_EQ(create(Zone(), account_only, 1), 403);
  EXPECT_EQ(Call("GET", Zone() + "/firewall/access_rules/rules", "", {}, account_only).status, 403);
  EXPECT_EQ(create(Account(), account_only, 2), 200);

  TokenSpec zone_group;
  zone_group.permissions = {"firewall_services"};
  const std::string zone_only = fake_.AddToken(zone_group).second;
  EXPECT_EQ(create(Zone(), zone_only, 3), 200);
  EXPECT_EQ(create(Account(), zone_only, 4), 403);
  EXPECT_EQ(Call("GET", Account() + "/firewall/access_rules/rules", "", {}, zone_only).status, 403);

  // The zone group through a wildcard over zones covers the zone too.
  zone_group.resources = "all_zones";
  EXPECT_EQ(create(Zone(), fake_.AddToken(zone_group).second, 5), 200);
  zone_group.resources = "all_accounts";
  EXPECT_EQ(create(Zone(), fake_.AddToken(zone_group).second, 6), 200);

  // The group is listed with its zone scope.
  const json groups = Body(Call("GET", "/user/tokens/permission_groups"))["result"];
  bool listed = false;
  for (const json& g : groups) {
    listed |= g["name"] == "Firewall Services Write" &&
              g["scopes"] == json::array({"com.cloudflare.api.account.zone"});
  }
  EXPECT_TRUE(listed);
}

TEST_F(FakeCloudflareTest, GlobalRateLimitBlocksForTheWindow) {
  fake_.options().rate_limit_requests = 5;
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Call("GET", "/user/tokens/verify").status, 200);
  Response limited = Call("GET", "/user/tokens/verify");
  EXPECT_EQ(limited.status, 429);
  EXPECT_EQ(Code(limited), 971);
  EXPECT_EQ(limited.headers["retry-after"], "300");
  clock_.Advance(absl::Seconds(299));
  EXPECT_EQ(Call("GET", "/user/tokens/verify").status, 429);
  clock_.Advance(absl::Seconds(2));
  EXPECT_EQ(Call("GET", "/user/tokens/verify").status, 200);
}

TEST_F(FakeCloudflareTest, AccessRulesCreateDuplicateFilterPageDelete) {
  const std::string rules = Zone() + "/firewall/access_rules/rules";
  for (int i = 1; i <= 5; ++i) {
    Response r =
        Call("POST", rules,
             absl::StrCat(R"({"mode":"block","configuration":{"target":"ip","value":"203.0.113.)",
                          i, R"("},"notes":"palisade:d)", i, R"("})"));
    ASSERT_EQ(r.status, 200) << r.body;
  }
  Response dup = Call(
      "POST", rules,
      R"({"mode":"challenge","configuration":{"target":"ip","value":"203.0.113.1"},"notes":"x"})");
  EXPECT_EQ(dup.status, 400);
  EXPECT_EQ(Code(dup), 10009);
  Response bad =
      Call("POST", rules,
           R"({"mode":"block","configuration":{"target":"ip","value":"2001:db8::1"},"notes":"x"})");
  EXPECT_EQ(Code(bad), 10013);
  EXPECT_EQ(
      Call(
          "POST", rules,
          R"({"mode":"block","configuration":{"target":"ip_range","value":"2001:db8::/48"},"notes":"x"})")
          .status,
      200);

  json page2 = Body(Call("GET", rules, "", {{"page", "2"}, {"per_page", "2"}}));
  EXPECT_THAT(page2["result"], SizeIs(2));
  EXPECT_EQ(page2["result_info"]["total_count"], 6);
  EXPECT_EQ(page2["result_info"]["total_pages"], 3);
  EXPECT_THAT(Body(Call("GET", rules, "", {{"page", "9"}}))["result"], SizeIs(0));
  EXPECT_EQ(Call("GET", rules, "", {{"per_page", "5000"}}).status, 400);

  json found = Body(Call("GET", rules, "", {{"notes", "PALISADE:D3"}}))["result"];
  ASSERT_THAT(found, SizeIs(1));
  EXPECT_EQ(found[0]["configuration"]["value"], "203.0.113.3");
  json by_value = Body(Call("GET", rules, "", {{"configuration.value", "203.0.113.4"}}))["result"];
  ASSERT_THAT(by_value, SizeIs(1));

  const std::string id = found[0]["id"];
  EXPECT_EQ(Body(Call("DELETE", rules + "/" + id))["result"]["id"], id);
  EXPECT_EQ(Code(Call("DELETE", rules + "/" + id)), 10001);
  EXPECT_THAT(fake_.AuditLog(), SizeIs(7));  // 6 creates + 1 delete
}

TEST_F(FakeCloudflareTest, ListOperationsAreAsynchronous) {
  const std::string lists = Account() + "/rules/lists";
  json list = Body(Call("POST", lists, R"({"name":"palisade_block","kind":"ip"})"))["result"];
  const std::string items = lists + "/" + list["id"].get<std::string>() + "/items";
  Response add =
      Call("POST", items, R"([{"ip":"203.0.113.7","comment":"a"},{"ip":"2001:DB8::/64"}])");
  ASSERT_EQ(add.status, 200) << add.body;
  const std::string op = Body(add)["result"]["operation_id"];
  EXPECT_EQ(Body(Call("GET", lists + "/bulk_operations/" + op))["result"]["status"], "pending");
  EXPECT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(0));  // items change on completion
  // A second write while one is in flight is refused.
  EXPECT_EQ(Call("POST", items, R"([{"ip":"198.51.100.1"}])").status, 429);
  clock_.Advance(absl::Milliseconds(250));
  EXPECT_EQ(Body(Call("GET", lists + "/bulk_operations/" + op))["result"]["status"], "running");
  clock_.Advance(absl::Milliseconds(250));
  EXPECT_EQ(Body(Call("GET", lists + "/bulk_operations/" + op))["result"]["status"], "completed");
  json snapshot = fake_.ListSnapshot("palisade_block");
  ASSERT_THAT(snapshot, SizeIs(2));
  EXPECT_EQ(Code(Call("POST", items, R"([{"ip":"198.51.100.1"},{"ip":"198.51.100.1/32"}])")),
            10028);
}

TEST_F(FakeCloudflareTest, ListItemsUseCursorPaginationInAddressOrder) {
  fake_.options().operation_pending = fake_.options().operation_running = absl::ZeroDuration();
  const std::string lists = Account() + "/rules/lists";
  json list = Body(Call("POST", lists, R"({"name":"l","kind":"ip"})"))["result"];
  const std::string items = lists + "/" + list["id"].get<std::string>() + "/items";
  json body = json::array();
  for (int i = 20; i >= 1; --i) body.push_back({{"ip", absl::StrCat("10.0.0.", i)}});
  ASSERT_EQ(Call("POST", items, body.dump()).status, 200);
  std::vector<std::string> seen;
  std::string cursor;
  int pages = 0;
  do {
    std::map<std::string, std::string> q = {{"per_page", "7"}};
    if (!cursor.empty()) q["cursor"] = cursor;
    json page = Body(Call("GET", items, "", q));
    for (const auto& it : page["result"]) seen.push_back(it["ip"]);
    json after = page["result_info"]["cursors"].value("after", json());
    cursor = after.is_string() ? after.get<std::string>() : "";
    ++pages;
  } while (!cursor.empty());
  EXPECT_EQ(pages, 3);
  ASSERT_THAT(seen, SizeIs(20));
  // One address is answered as a /32, as the API has done.
  EXPECT_EQ(seen.front(), "10.0.0.1/32");
  EXPECT_EQ(seen[1], "10.0.0.2/32");
  EXPECT_EQ(seen.back(), "10.0.0.20/32");
}

TEST_F(FakeCloudflareTest, ListItemQuotaFailsTheOperation) {
  fake_.options().operation_pending = fake_.options().operation_running = absl::ZeroDuration();
  fake_.options().max_list_items = 2;
  const std::string lists = Account() + "/rules/lists";
  json list = Body(Call("POST", lists, R"({"name":"l","kind":"ip"})"))["result"];
  const std::string items = lists + "/" + list["id"].get<std::string>() + "/items";
  json op = Body(Call("POST", items, R"([{"ip":"10.0.0.1"},{"ip":"10.0.0.2"},{"ip":"10.0.0.3"}])"));
  json status = Body(
      Call("GET", lists + "/bulk_operations/" + op["result"]["operation_id"].get<std::string>()));
  EXPECT_EQ(status["result"]["status"], "failed");
  EXPECT_THAT(status["result"]["error"].get<std::string>(), HasSubstr("maximum number"));
}

TEST_F(FakeCloudflareTest, RulesetsEntrypointSemantics) {
  const std::string ep = Zone() + "/rulesets/phases/http_ratelimit/entrypoint";
  Response missing = Call("GET", ep);
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(Code(missing), 10003);

  Response no_colo = Call("PUT", ep, R"({"rules":[{"action":"block","expression":"true",
      "ratelimit":{"characteristics":["ip.src"],"period":60,"requests_per_period":10,"mitigation_timeout":600}}]})");
  EXPECT_EQ(no_colo.status, 400);
  EXPECT_EQ(Body(no_colo)["errors"][0]["source"]["pointer"], "/rules/0/ratelimit/characteristics");

  json rs = Body(Call(
      "PUT", ep,
      R"J({"rules":[{"ref":"a","action":"block","expression":"(http.request.uri.path eq \"/login\")",
      "ratelimit":{"characteristics":["cf.colo.id","ip.src"],"period":60,"requests_per_period":10,"mitigation_timeout":600}}]})J"))
      ["result"];
  EXPECT_EQ(rs["version"], "1");
  ASSERT_THAT(rs["rules"], SizeIs(1));
  const std::string id = rs["id"];
  json rule = {{"ref", "b"},
               {"action", "block"},
               {"expression", "true"},
               {"ratelimit",
                {{"characteristics", {"cf.colo.id", "ip.src"}},
                 {"period", 10},
                 {"requests_per_period", 5},
                 {"mitigation_timeout", 60}}},
               {"position", {{"index", 1}}}};
  json after_post =
      Body(Call("POST", Zone() + "/rulesets/" + id + "/rules", rule.dump()))["result"];
  EXPECT_EQ(after_post["version"], "2");
  EXPECT_EQ(after_post["rules"][0]["ref"], "b");
  const std::string rule_id = after_post["rules"][0]["id"];
  json after_delete =
      Body(Call("DELETE", Zone() + "/rulesets/" + id + "/rules/" + rule_id))["result"];
  EXPECT_EQ(after_delete["version"], "3");
  EXPECT_THAT(after_delete["rules"], SizeIs(1));

  fake_.options().max_ratelimit_rules = 1;
  EXPECT_EQ(Code(Call("POST", Zone() + "/rulesets/" + id + "/rules", rule.dump())), 20022);
}

TEST_F(FakeCloudflareTest, ReferencedListCannotBeDeleted) {
  const std::string lists = Account() + "/rules/lists";
  json list = Body(Call("POST", lists, R"({"name":"palisade_block","kind":"ip"})"))["result"];
  ASSERT_EQ(Call("PUT", Zone() + "/rulesets/phases/http_request_firewall_custom/entrypoint",
                 R"({"rules":[{"action":"block","expression":"ip.src in $palisade_block"}]})")
                .status,
            200);
  EXPECT_EQ(Code(Call("DELETE", lists + "/" + list["id"].get<std::string>())), 10031);
  EXPECT_EQ(Code(Call("PUT", Zone() + "/rulesets/phases/http_request_firewall_custom/entrypoint",
                      R"({"rules":[{"action":"block","expression":"ip.src in $nope"}]})")),
            20021);
}

TEST_F(FakeCloudflareTest, TokenLifecycle) {
  TokenSpec leaked;
  leaked.name = "ci";
  leaked.permissions = {"lists"};
  auto [id, value] = fake_.AddToken(leaked);
  json verify = Body(Call("GET", "/user/tokens/verify", "", {}, value));
  EXPECT_EQ(verify["result"]["id"], id);
  EXPECT_EQ(verify["messages"][0]["code"], 10000);

  json got = Body(Call("GET", "/user/tokens/" + id))["result"];
  EXPECT_FALSE(got.contains("value"));
  got["status"] = "disabled";
  ASSERT_EQ(Call("PUT", "/user/tokens/" + id, got.dump()).status, 200);
  EXPECT_EQ(Code(Call("GET", "/user/tokens/verify", "", {}, value)), 1000);
  EXPECT_EQ(fake_.TokenSnapshot(id)["status"], "disabled");

  std::string rolled = Body(Call("PUT", "/user/tokens/" + id + "/value", "{}"))["result"];
  EXPECT_NE(rolled, value);
  EXPECT_EQ(Body(Call("DELETE", "/user/tokens/" + id))["result"]["id"], id);
  EXPECT_TRUE(fake_.TokenSnapshot(id).is_null());
}

TEST_F(FakeCloudflareTest, AccountTokensVerifyOnTheAccountPath) {
  TokenSpec account;
  account.account_owned = true;
  std::string value = fake_.AddToken(account).second;
  EXPECT_EQ(value.substr(0, 5), "cfat_");
  EXPECT_EQ(Code(Call("GET", "/user/tokens/verify", "", {}, value)), 1000);
  EXPECT_EQ(Call("GET", Account() + "/tokens/verify", "", {}, value).status, 200);
}

TEST_F(FakeCloudflareTest, AuditLogRecordsMutationsNewestFirst) {
  Call("POST", Zone() + "/firewall/access_rules/rules",
       R"({"mode":"block","configuration":{"target":"ip","value":"203.0.113.9"},"notes":"n"})");
  Call("POST", Account() + "/rules/lists", R"({"name":"l","kind":"ip"})");
  json logs = Body(Call("GET", Account() + "/audit_logs"));
  ASSERT_THAT(logs["result"], SizeIs(2));
  EXPECT_EQ(logs["result"][0]["resource"]["type"], "filters.list");
  EXPECT_EQ(logs["result"][1]["action"]["type"], "create");
  EXPECT_EQ(logs["result"][1]["interface"], "API");
}

// The list filters take what the schema documents: no ip6 target, no IPv6 value search.
TEST_F(FakeCloudflareTest, AccessRuleListRefusesUndocumentedFilters) {
  const std::string rules = Zone() + "/firewall/access_rules/rules";
  ASSERT_EQ(Call("POST", rules,
                 R"({"mode":"block","configuration":{"target":"ip6","value":"2001:db8::1"},"notes":"n"})")
                .status,
            200);
  EXPECT_EQ(Call("GET", rules, "", {{"configuration.target", "ip6"}}).status, 400);
  EXPECT_EQ(Call("GET", rules, "", {{"configuration.value", "2001:db8::1"}}).status, 400);
  EXPECT_EQ(Call("GET", rules, "", {{"configuration.value", "2001:db8::/64"}}).status, 400);
  EXPECT_EQ(Call("GET", rules, "", {{"configuration.value", "198.51.100.0/25"}}).status, 400);
  for (const char* ok : {"198.51.100.7", "198.51.0.0/16", "198.51.100.0/24", "NL", "AS13335"}) {
    EXPECT_EQ(Call("GET", rules, "", {{"configuration.value", ok}}).status, 200) << ok;
  }
  EXPECT_EQ(Call("GET", rules, "", {{"configuration.target", "ip"}}).status, 200);
  // The IPv6 rule is found again by its notes.
  EXPECT_THAT(Body(Call("GET", rules, "", {{"notes", "N"}}))["result"], SizeIs(1));
}

// PUT replaces the whole token: what is not resent is dropped.
TEST_F(FakeCloudflareTest, TokenPutDropsWhatItOmits) {
  TokenSpec spec;
  spec.name = "ci";
  spec.permissions = {"lists"};
  spec.ip_in = {"192.0.2.0/24"};
  spec.expires_on = clock_.TimeNow() + absl::Hours(48);
  auto [id, value] = fake_.AddToken(spec);
  json got = Body(Call("GET", "/user/tokens/" + id))["result"];
  ASSERT_TRUE(got.contains("condition"));
  ASSERT_TRUE(got.contains("expires_on"));
  json kept = got;
  kept["status"] = "disabled";
  json put = Body(Call("PUT", "/user/tokens/" + id, kept.dump()))["result"];
  EXPECT_EQ(put["condition"], got["condition"]);
  EXPECT_EQ(put["expires_on"], got["expires_on"]);
  json bare = {{"name", "ci"}, {"policies", got["policies"]}, {"status", "active"}};
  json stripped = Body(Call("PUT", "/user/tokens/" + id, bare.dump()))["result"];
  EXPECT_FALSE(stripped.contains("condition"));
  EXPECT_FALSE(stripped.contains("expires_on"));
  // Condition keys: the docs' "request.ip" and the SDKs' "request_ip".
  bare["condition"] = {{"request_ip", {{"in", {"198.51.100.0/24"}}}}};
  json sdk = Body(Call("PUT", "/user/tokens/" + id, bare.dump()))["result"];
  EXPECT_EQ(sdk["condition"]["request.ip"]["in"][0], "198.51.100.0/24");
  // The token is now refused from 127.0.0.1 as IP-restricted, not as invalid.
  Response located = Call("GET", "/user/tokens/verify", "", {}, value);
  EXPECT_EQ(located.status, 403);
  EXPECT_EQ(Code(located), 9109);
  EXPECT_THAT(Body(located)["errors"][0]["message"].get<std::string>(),
              HasSubstr("from location"));
}

// Rate limiting by plan: Free takes only period 10 and mitigation_timeout 10.
TEST_F(FakeCloudflareTest, RateLimitValuesFollowThePlan) {
  const std::string ep = Zone() + "/rulesets/phases/http_ratelimit/entrypoint";
  auto put = [&](int period, int timeout, const std::string& action = "block") {
    json body = {{"rules",
                  {{{"action", action},
                    {"expression", "(http.request.uri.path eq \"/login\")"},
                    {"ratelimit",
                     {{"characteristics", {"cf.colo.id", "ip.src"}},
                      {"period", period},
                      {"requests_per_period", 10},
                      {"mitigation_timeout", timeout}}}}}}};
    return Call("PUT", ep, body.dump()).status;
  };
  fake_.options().plan = "free";
  EXPECT_EQ(put(60, 600), 400);
  EXPECT_EQ(put(10, 600), 400);
  EXPECT_EQ(put(10, 0), 400);
  EXPECT_EQ(put(10, 10), 200);
  EXPECT_EQ(put(10, 0, "managed_challenge"), 200);
  fake_.options().plan = "pro";
  EXPECT_EQ(put(120, 600), 400);
  EXPECT_EQ(put(60, 86400), 400);
  EXPECT_EQ(put(60, 0), 200);
  EXPECT_EQ(put(60, 600, "challenge"), 400);
  fake_.options().plan = "business";
  EXPECT_EQ(put(600, 86400), 200);
  fake_.options().plan = "enterprise";
  EXPECT_EQ(put(3600, 600, "challenge"), 200);
}

// v1 has no token id; v2 names the token, needs since and before, and pages by cursor.
TEST_F(FakeCloudflareTest, AuditLogsV1AndV2Shapes) {
  const std::string own_id = Body(Call("GET", "/user/tokens/verify"))["result"]["id"];
  for (int i = 0; i < 3; ++i) {
    Call("POST", Zone() + "/firewall/access_rules/rules",
         absl::StrCat(R"({"mode":"block","configuration":{"target":"ip","value":"203.0.113.)", i,
                      R"("},"notes":"n"})"));
  }
  json v1 = Body(Call("GET", Account() + "/audit_logs"))["result"];
  ASSERT_THAT(v1, SizeIs(3));
  EXPECT_FALSE(v1[0]["actor"].contains("token_id")) << v1[0].dump();
  EXPECT_NE(v1[0]["actor"]["id"], own_id);
  EXPECT_TRUE(v1[0]["actor"].contains("ip"));

  const std::string v2 = Account() + "/logs/audit";
  EXPECT_EQ(Call("GET", v2).status, 400);
  EXPECT_EQ(Call("GET", v2, "", {{"since", "2000-01-01"}}).status, 400);
  std::map<std::string, std::string> q = {
      {"since", "2000-01-01"}, {"before", "2100-01-01"}, {"limit", "2"}, {"direction", "asc"}};
  json page = Body(Call("GET", v2, "", q));
  ASSERT_THAT(page["result"], SizeIs(2));
  const json& e = page["result"][0];
  EXPECT_EQ(e["actor"]["token_id"], own_id);
  EXPECT_EQ(e["actor"]["ip_address"], "127.0.0.1");
  EXPECT_EQ(e["actor"]["context"], "api_token");
  EXPECT_EQ(e["action"]["type"], "create");
  EXPECT_EQ(e["action"]["result"], "success");
  EXPECT_TRUE(e["action"].contains("time"));
  EXPECT_EQ(e["resource"]["type"], "firewall.access_rule");
  ASSERT_TRUE(page["result_info"].contains("cursor"));
  q["cursor"] = page["result_info"]["cursor"];
  json last = Body(Call("GET", v2, "", q));
  EXPECT_THAT(last["result"], SizeIs(1));
  EXPECT_FALSE(last["result_info"].contains("cursor"));
  q.erase("cursor");
  q["actor_token_id"] = "00000000000000000000000000000000";
  EXPECT_THAT(Body(Call("GET", v2, "", q))["result"], SizeIs(0));
}

// v2 lists by record time, as the API does, not in the order records were written: one written
// late (its time older than records listed before it) comes below the newer ones, newest first.
TEST_F(FakeCloudflareTest, AuditLogsV2ListByRecordTime) {
  auto rule = [this](int i) {
    Response r = Call(
        "POST", Zone() + "/firewall/access_rules/rules",
        absl::StrCat(R"({"mode":"block","configuration":{"target":"ip","value":"203.0.113.)", i,
                     R"("},"notes":"n"})"));
    EXPECT_EQ(r.status, 200) << r.body;
  };
  const absl::Time start = clock_.TimeNow();
  rule(1);
  clock_.Advance(absl::Minutes(2));
  rule(2);
  clock_.Set(start + absl::Minutes(1));  // written after 2, between 1 and 2 by time
  rule(3);
  clock_.Set(start + absl::Minutes(3));
  auto values = [this](const std::string& direction) {
    std::map<std::string, std::string> q = {
        {"since", "2000-01-01"}, {"before", "2100-01-01"}, {"direction", direction}};
    std::vector<absl::Time> times;
    Response r = Call("GET", Account() + "/logs/audit", "", q);
    EXPECT_EQ(r.status, 200) << r.body;
    const json body = Body(r);
    for (const json& e : body["result"]) {
      absl::Time t;
      std::string err;
      EXPECT_TRUE(absl::ParseTime(absl::RFC3339_full, e["action"]["time"].get<std::string>(),
                                  &t, &err));
      times.push_back(t);
    }
    return times;
  };
  const std::vector<absl::Time> by_time = {start + absl::Minutes(2), start + absl::Minutes(1),
                                           start};
  EXPECT_EQ(values("desc"), by_time);
  EXPECT_EQ(values("asc"), std::vector<absl::Time>(by_time.rbegin(), by_time.rend()));
}

// List items: one IPv4 address is the same item bare or as /32; IPv6 items are /64 or wider.
TEST_F(FakeCloudflareTest, ListItemsCanonicalAndIpv6AtMost64) {
  const std::string lists = Account() + "/rules/lists";
  const std::string id = Body(Call("POST", lists, R"({"name":"l","kind":"ip"})"))["result"]["id"];
  const std::string items = lists + "/" + id + "/items";
  EXPECT_EQ(Call("POST", items, R"([{"ip":"2001:db8::1"}])").status, 400);
  EXPECT_EQ(Call("POST", items, R"([{"ip":"2001:db8::/96"}])").status, 400);
  EXPECT_EQ(Call("POST", items, R"([{"ip":"192.0.2.1"},{"ip":"192.0.2.1/32"}])").status, 400);
  ASSERT_EQ(Call("POST", items, R"([{"ip":"192.0.2.1"},{"ip":"2001:DB8::/64"}])").status, 200);
  clock_.Advance(absl::Seconds(1));
  json got = Body(Call("GET", items))["result"];
  ASSERT_THAT(got, SizeIs(2));
  EXPECT_EQ(got[0]["ip"], "192.0.2.1/32");
  EXPECT_EQ(got[1]["ip"], "2001:db8::/64");
}

TEST_F(FakeCloudflareTest, ScriptedFaults) {
  Faults f;
  f.fail_call = 2;
  f.error_status = 502;
  fake_.SetFaults(f);
  EXPECT_EQ(Call("GET", "/user/tokens/verify").status, 200);
  EXPECT_EQ(Call("GET", "/user/tokens/verify").status, 502);
  EXPECT_EQ(Call("GET", "/user/tokens/verify").status, 200);
  f = Faults();
  f.drop_rate = 1.0;
  fake_.SetFaults(f);
  EXPECT_TRUE(Call("GET", "/user/tokens/verify").drop_connection);
}

// drop_after_apply: the call takes effect and only its answer is lost; GETs do not count when
// the fault names POST.
TEST_F(FakeCloudflareTest, DropAfterApplyMakesTheChangeAndLosesTheAnswer) {
  Faults f;
  f.drop_after_apply = 1;
  f.drop_after_apply_method = "POST";
  fake_.SetFaults(f);
  const std::string lists = Account() + "/rules/lists";
  EXPECT_FALSE(Call("GET", lists).drop_connection);
  EXPECT_TRUE(Call("POST", lists, R"({"name":"l","kind":"ip"})").drop_connection);
  EXPECT_THAT(Body(Call("GET", lists))["result"], SizeIs(1));
  EXPECT_EQ(Call("POST", lists, R"({"name":"l","kind":"ip"})").status, 400);  // once only
}

}  // namespace
}  // namespace palisade::fake
