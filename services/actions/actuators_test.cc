// The four actuators against the emulator over HTTP (shared SimulatedClock, no sleeping).
#include "services/actions/actuators.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/proto_time.h"
#include "services/common/status_matchers.h"
#include "tests/cloudflare_fake/emulator_server.h"
#include "tests/cloudflare_fake/fake_cloudflare.h"

namespace palisade {
namespace {

using ::palisade::testing::IsOk;
using ::palisade::testing::IsOkAndHolds;
using ::palisade::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::SizeIs;

class ActuatorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake::TokenSpec spec;
    spec.permissions = {"firewall_services", "lists", "rulesets", "tokens", "audit_logs"};
    token_ = fake_.AddToken(spec).second;
    ASSERT_THAT(server_.Start(), IsOk());
    ClientOptions options;
    options.base_url = server_.base_url();
    options.account_id = fake_.options().account_id;
    options.zone_id = fake_.options().zone_id;
    options.poll_interval = absl::Milliseconds(100);
    Credentials creds;
    creds.token = Secret(token_);
    client_ = std::make_unique<CloudflareClient>(transport_, clock_, options, creds, registry_);
  }

  static ActionOp Op(ActionOp::Kind kind, const std::string& id, palisade::v1::TargetKind tk,
                     const std::string& value,
                     palisade::v1::Action action = palisade::v1::ACTION_BLOCK) {
    ActionOp op;
    op.kind = kind;
    op.decision.set_id(id);
    op.decision.set_rule_id("test-rule");
    op.decision.set_action(action);
    op.decision.mutable_target()->set_kind(tk);
    op.decision.mutable_target()->set_value(value);
    return op;
  }
  // The apply that revokes the leaked token `secret` (its fingerprint is not looked at).
  static ActionOp Revoke(const std::string& id, const std::string& secret) {
    ActionOp op = Op(ActionOp::Kind::kApply, id, palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT,
                     "sha256:x", palisade::v1::ACTION_REVOKE_TOKEN);
    op.secret = secret;
    return op;
  }
  static void Run(Actuator& a, std::vector<ActionOp>& ops) {
    std::vector<ActionOp*> ptrs;
    for (auto& op : ops) ptrs.push_back(&op);
    a.Run(ptrs);
  }

  SimulatedClock clock_;
  fake::FakeCloudflare fake_{clock_};
  fake::EmulatorServer server_{fake_};
  CurlTransport transport_;
  prometheus::Registry registry_;
  std::string token_;
  std::unique_ptr<CloudflareClient> client_;
};

TEST_F(ActuatorsTest, AccessRulesAreMadeAndRemovedWithTheirNotes) {
  AccessRuleActuator actuator(*client_, RuleScope::kZone);
  std::vector<ActionOp> ops = {
      Op(ActionOp::Kind::kApply, "d1", palisade::v1::TARGET_KIND_IP, "203.0.113.7"),
      Op(ActionOp::Kind::kApply, "d2", palisade::v1::TARGET_KIND_IP, "2001:db8::7",
         palisade::v1::ACTION_MANAGED_CHALLENGE),
      Op(ActionOp::Kind::kApply, "d3", palisade::v1::TARGET_KIND_RANGE, "198.51.100.0/24"),
      Op(ActionOp::Kind::kApply, "d4", palisade::v1::TARGET_KIND_RANGE, "198.51.0.0/20")};
  Run(actuator, ops);
  EXPECT_THAT(ops[0].result, IsOk());
  EXPECT_THAT(ops[1].result, IsOk());
  EXPECT_THAT(ops[2].result, IsOk());
  EXPECT_THAT(ops[3].result, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("/20")));
  fake::json rules = fake_.AccessRuleSnapshot();
  ASSERT_THAT(rules, SizeIs(3));
  EXPECT_EQ(rules[1]["mode"], "managed_challenge");
  EXPECT_EQ(rules[1]["configuration"]["target"], "ip6");
  EXPECT_EQ(rules[0]["notes"], "palisade:d1 test-rule");

  // Removal with the edge id, and without it (found again by its notes).
  std::vector<ActionOp> removes = {
      Op(ActionOp::Kind::kRemove, "d1", palisade::v1::TARGET_KIND_IP, "203.0.113.7"),
      Op(ActionOp::Kind::kRemove, "d2", palisade::v1::TARGET_KIND_IP, "2001:db8::7")};
  removes[0].edge = ops[0].edge;
  Run(actuator, removes);
  EXPECT_THAT(removes[0].result, IsOk());
  EXPECT_THAT(removes[1].result, IsOk());
  EXPECT_THAT(fake_.AccessRuleSnapshot(), SizeIs(1));
}

// 10009 on an IPv6 target: the rule already there is found without the "ip6" target filter or
// an IPv6 value search, which the API refuses: by Palisade's notes, else by paging.
TEST_F(ActuatorsTest, AnExistingIpv6RuleIsAdoptedWithFiltersTheApiTakes) {
  for (int i = 0; i < 150; ++i) {  // more than one page of rules before the ones that matter
    ASSERT_THAT(client_->CreateAccessRule(RuleScope::kZone, "block", "ip",
                                          absl::StrCat("198.51.100.", i + 1), "someone's"),
                IsOk());
  }
  absl::StatusOr<AccessRule> human = client_->CreateAccessRule(
      RuleScope::kZone, "block", "ip6", "2001:db8::9", "added by a human");
  ASSERT_THAT(human, IsOk());
  absl::StatusOr<AccessRule> older = client_->CreateAccessRule(
      RuleScope::kZone, "block", "ip6", "2001:db8::a", "palisade:00000000000000aa test-rule");
  ASSERT_THAT(older, IsOk());
  absl::StatusOr<AccessRule> range = client_->CreateAccessRule(
      RuleScope::kZone, "block", "ip_range", "2001:db8:1:2::/64", "a human's range");
  ASSERT_THAT(range, IsOk());
  AccessRuleActuator actuator(*client_, RuleScope::kZone);
  std::vector<ActionOp> ops = {
      Op(ActionOp::Kind::kApply, "d1", palisade::v1::TARGET_KIND_IP, "2001:DB8:0::9"),
      Op(ActionOp::Kind::kApply, "d2", palisade::v1::TARGET_KIND_IP, "2001:db8::a"),
      Op(ActionOp::Kind::kApply, "d3", palisade::v1::TARGET_KIND_RANGE, "2001:db8:1:2::/64")};
  Run(actuator, ops);
  ASSERT_THAT(ops[0].result, IsOk());
  EXPECT_EQ(ops[0].edge.id, human->id);
  EXPECT_TRUE(ops[0].edge.foreign);
  ASSERT_THAT(ops[1].result, IsOk());
  EXPECT_EQ(ops[1].edge.id, older->id);
  EXPECT_FALSE(ops[1].edge.foreign);
  ASSERT_THAT(ops[2].result, IsOk());
  EXPECT_EQ(ops[2].edge.id, range->id);
  EXPECT_TRUE(ops[2].edge.foreign);
  EXPECT_THAT(fake_.AccessRuleSnapshot(), SizeIs(153));
}

TEST_F(ActuatorsTest, ADuplicateIsAdoptedAndAForeignRuleIsNeverDeleted) {
  ASSERT_THAT(
      client_->CreateAccessRule(RuleScope::kZone, "block", "ip", "203.0.113.9", "added by a human"),
      IsOk());
  AccessRuleActuator actuator(*client_, RuleScope::kZone);
  std::vector<ActionOp> ops = {
      Op(ActionOp::Kind::kApply, "d1", palisade::v1::TARGET_KIND_IP, "203.0.113.9")};
  Run(actuator, ops);
  ASSERT_THAT(ops[0].result, IsOk());
  EXPECT_TRUE(ops[0].edge.foreign);
  std::vector<ActionOp> removes = {
      Op(ActionOp::Kind::kRemove, "d1", palisade::v1::TARGET_KIND_IP, "203.0.113.9")};
  removes[0].edge = ops[0].edge;
  Run(actuator, removes);
  EXPECT_THAT(removes[0].result, IsOk());
  EXPECT_THAT(fake_.AccessRuleSnapshot(), SizeIs(1));
}

// 10009 on a rule whose notes start "palisade:" but name no decision id (a human's
// "palisade:office"): it was taken as Palisade's own, and deleted when the decision ended.
TEST_F(ActuatorsTest, ARuleNotedPalisadeWithoutADecisionIdIsForeign) {
  ASSERT_THAT(
      client_->CreateAccessRule(RuleScope::kZone, "block", "ip", "203.0.113.9", "palisade:office"),
      IsOk());
  AccessRuleActuator actuator(*client_, RuleScope::kZone);
  std::vector<ActionOp> ops = {
      Op(ActionOp::Kind::kApply, "00000000000000d1", palisade::v1::TARGET_KIND_IP, "203.0.113.9")};
  Run(actuator, ops);
  ASSERT_THAT(ops[0].result, IsOk());
  EXPECT_TRUE(ops[0].edge.foreign);
  std::vector<ActionOp> removes = {Op(ActionOp::Kind::kRemove, "00000000000000d1",
                                      palisade::v1::TARGET_KIND_IP, "203.0.113.9")};
  removes[0].edge = ops[0].edge;
  Run(actuator, removes);
  EXPECT_THAT(removes[0].result, IsOk());
  EXPECT_THAT(fake_.AccessRuleSnapshot(), SizeIs(1));
}

// Two palisaded sharing a zone or an account tell their objects apart by CloudflareConfig.instance:
// what one writes carries its tag (access-rule notes, list-item comments, rate-limit refs), and
// finds it again by it.
TEST_F(ActuatorsTest, WhatAnInstanceWritesCarriesItsTag) {
  AccessRuleActuator rules(*client_, RuleScope::kZone, "edge-a");
  std::vector<ActionOp> ops = {
      Op(ActionOp::Kind::kApply, "00000000000000d1", palisade::v1::TARGET_KIND_IP, "203.0.113.7")};
  Run(rules, ops);
  ASSERT_THAT(ops[0].result, IsOk());
  ASSERT_THAT(fake_.AccessRuleSnapshot(), SizeIs(1));
  EXPECT_EQ(fake_.AccessRuleSnapshot()[0]["notes"], "palisade:00000000000000d1@edge-a test-rule");
  std::vector<ActionOp> removes = {Op(ActionOp::Kind::kRemove, "00000000000000d1",
                                      palisade::v1::TARGET_KIND_IP, "203.0.113.7")};
  Run(rules, removes);  // no edge id: found again by its notes
  EXPECT_THAT(removes[0].result, IsOk());
  EXPECT_THAT(fake_.AccessRuleSnapshot(), SizeIs(0));

  IpListOptions list;
  list.instance = "edge-a";
  IpListActuator items(*client_, list, registry_);
  ops = {Op(ActionOp::Kind::kApply, "00000000000000d2", palisade::v1::TARGET_KIND_IP,
            "198.51.100.2")};
  Run(items, ops);
  ASSERT_THAT(ops[0].result, IsOk());
  fake::json snapshot = fake_.ListSnapshot("palisade_block");
  ASSERT_THAT(snapshot, SizeIs(1));
  EXPECT_EQ(snapshot[0]["comment"], "palisade:00000000000000d2@edge-a");

  RateLimitOptions rl;
  rl.instance = "edge-a";
  RateLimitActuator limits(*client_, rl);
  ops = {Op(ActionOp::Kind::kApply, "00000000000000d3", palisade::v1::TARGET_KIND_PATH, "/login",
            palisade::v1::ACTION_RATE_LIMIT)};
  Run(limits, ops);
  ASSERT_THAT(ops[0].result, IsOk());
  ASSERT_THAT(fake_.RulesetSnapshot("http_ratelimit")["rules"], SizeIs(1));
  EXPECT_EQ(fake_.RulesetSnapshot("http_ratelimit")["rules"][0]["ref"],
            "palisade_00000000000000d3_edge-a");
  removes = {Op(ActionOp::Kind::kRemove, "00000000000000d3", palisade::v1::TARGET_KIND_PATH,
                "/login")};
  Run(limits, removes);  // no edge id: found again by its ref
  EXPECT_THAT(removes[0].result, IsOk());
  EXPECT_THAT(fake_.RulesetSnapshot("http_ratelimit")["rules"], SizeIs(0));
}

// 10009 on another instance's rule (or an untagged one, under a tag): adopted as foreign, so
// never deleted by this instance; its own tag's rule is adopted as its own.
TEST_F(ActuatorsTest, AnotherInstancesRuleIsAdoptedAsForeign) {
  ASSERT_THAT(client_->CreateAccessRule(RuleScope::kZone, "block", "ip", "203.0.113.1",
                                        "palisade:00000000000000b1@b manual"),
              IsOk());
  ASSERT_THAT(client_->CreateAccessRule(RuleScope::kZone, "block", "ip", "203.0.113.2",
                                        "palisade:00000000000000c1 manual"),
              IsOk());
  ASSERT_THAT(client_->CreateAccessRule(RuleScope::kZone, "block", "ip", "203.0.113.3",
                                        "palisade:00000000000000a1@a manual"),
              IsOk());
  AccessRuleActuator actuator(*client_, RuleScope::kZone, "a");
  std::vector<ActionOp> ops = {
      Op(ActionOp::Kind::kApply, "00000000000000d1", palisade::v1::TARGET_KIND_IP, "203.0.113.1"),
      Op(ActionOp::Kind::kApply, "00000000000000d2", palisade::v1::TARGET_KIND_IP, "203.0.113.2"),
      Op(ActionOp::Kind::kApply, "00000000000000d3", palisade::v1::TARGET_KIND_IP, "203.0.113.3")};
  Run(actuator, ops);
  for (const ActionOp& op : ops) ASSERT_THAT(op.result, IsOk());
  EXPECT_TRUE(ops[0].edge.foreign);
  EXPECT_TRUE(ops[1].edge.foreign);
  EXPECT_FALSE(ops[2].edge.foreign);
}

// 10009 on an address whose rule has another mode (a human's whitelist or challenge): adopting
// it reported the block "applied" while the edge let the address in. Not adopted: a failure
// naming the rule, for an operator to choose.
TEST_F(ActuatorsTest, AnExistingRuleWithAnotherModeIsNotAdopted) {
  absl::StatusOr<AccessRule> allowed = client_->CreateAccessRule(
      RuleScope::kZone, "whitelist", "ip", "203.0.113.9", "added by a human");
  ASSERT_THAT(allowed, IsOk());
  absl::StatusOr<AccessRule> challenged = client_->CreateAccessRule(
      RuleScope::kZone, "challenge", "ip6", "2001:db8::9", "added by a human");
  ASSERT_THAT(challenged, IsOk());
  AccessRuleActuator actuator(*client_, RuleScope::kZone);
  std::vector<ActionOp> ops = {
      Op(ActionOp::Kind::kApply, "d1", palisade::v1::TARGET_KIND_IP, "203.0.113.9"),
      Op(ActionOp::Kind::kApply, "d2", palisade::v1::TARGET_KIND_IP, "2001:db8::9")};
  Run(actuator, ops);
  EXPECT_THAT(ops[0].result,
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("whitelist")));
  EXPECT_THAT(ops[0].result.message(), HasSubstr(allowed->id));
  EXPECT_THAT(ops[1].result,
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("challenge")));
  EXPECT_THAT(ops[1].result.message(), HasSubstr(challenged->id));
  EXPECT_TRUE(ops[0].edge.id.empty());
  EXPECT_TRUE(ops[1].edge.id.empty());
  fake::json rules = fake_.AccessRuleSnapshot();
  ASSERT_THAT(rules, SizeIs(2));
  EXPECT_EQ(rules[0]["mode"], "whitelist");
  EXPECT_EQ(rules[1]["mode"], "challenge");
}

TEST_F(ActuatorsTest, IpListBatchesCreatesListAndRuleAndCollapsesIpv6) {
  IpListOptions options;
  options.max_items = 5;
  IpListActuator actuator(*client_, options, registry_);
  std::vector<ActionOp> ops;
  for (int i = 1; i <= 4; ++i) {
    ops.push_back(Op(ActionOp::Kind::kApply, absl::StrCat("d", i), palisade::v1::TARGET_KIND_IP,
                     absl::StrCat("203.0.113.", i)));
  }
  ops.push_back(Op(ActionOp::Kind::kApply, "d5", palisade::v1::TARGET_KIND_IP, "2001:db8:1:2::7"));
  ops.push_back(Op(ActionOp::Kind::kApply, "d6", palisade::v1::TARGET_KIND_IP, "2001:db8:1:2::8"));
  ops.push_back(Op(ActionOp::Kind::kApply, "d7", palisade::v1::TARGET_KIND_IP, "203.0.113.99"));
  const int64_t before = fake_.calls();
  Run(actuator, ops);
  for (int i = 0; i < 6; ++i) EXPECT_THAT(ops[i].result, IsOk()) << i;
  EXPECT_THAT(ops[6].result, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("cap")));
  fake::json items = fake_.ListSnapshot("palisade_block");
  ASSERT_THAT(items, SizeIs(5));
  EXPECT_EQ(items[0]["ip"], "2001:db8:1:2::/64");  // both addresses of that /64, one item
  fake::json rs = fake_.RulesetSnapshot("http_request_firewall_custom");
  ASSERT_THAT(rs["rules"], SizeIs(1));
  EXPECT_EQ(rs["rules"][0]["expression"], "ip.src in $palisade_block");
  // Find/create the list (2), find/create the rule (2), one bulk add (1) and its polls while the
  // operation is pending then running (0.4 s at 0.1 s): not one request per ban.
  EXPECT_LE(fake_.calls() - before, 10);

  // The /64 stays while one of its two decisions is active.
  std::vector<ActionOp> removes = {
      Op(ActionOp::Kind::kRemove, "d5", palisade::v1::TARGET_KIND_IP, "2001:db8:1:2::7"),
      Op(ActionOp::Kind::kRemove, "d1", palisade::v1::TARGET_KIND_IP, "203.0.113.1")};
  removes[0].edge = ops[4].edge;
  removes[1].edge = ops[0].edge;
  Run(actuator, removes);
  EXPECT_THAT(removes[0].result, IsOk());
  EXPECT_THAT(removes[1].result, IsOk());
  items = fake_.ListSnapshot("palisade_block");
  ASSERT_THAT(items, SizeIs(4));
  std::vector<ActionOp> last = {
      Op(ActionOp::Kind::kRemove, "d6", palisade::v1::TARGET_KIND_IP, "2001:db8:1:2::8")};
  last[0].edge = ops[5].edge;
  Run(actuator, last);
  EXPECT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(3));
}

// Two decisions on one /64 in one flush: the second is in the same bulk operation, so it fails
// with it, and the first's retry still sends the item (it was never counted as there).
TEST_F(ActuatorsTest, IpListOpsOnOneItemFailWithTheirBulkOperation) {
  ClientOptions options = client_->options();
  options.max_attempts = 1;  // the client does not retry: the dispatcher would
  Credentials creds;
  creds.token = Secret(token_);
  CloudflareClient client(transport_, clock_, options, creds, registry_);
  IpListActuator actuator(client, IpListOptions(), registry_);
  std::vector<ActionOp> first = {
      Op(ActionOp::Kind::kApply, "d0", palisade::v1::TARGET_KIND_IP, "203.0.113.50")};
  Run(actuator, first);  // the list and its rule exist from here on
  ASSERT_THAT(first[0].result, IsOk());

  fake::Faults faults;
  faults.fail_call = 1;  // the bulk add
  faults.error_status = 503;
  fake_.SetFaults(faults);
  std::vector<ActionOp> ops = {
      Op(ActionOp::Kind::kApply, "d5", palisade::v1::TARGET_KIND_IP, "2001:db8:1:2::7"),
      Op(ActionOp::Kind::kApply, "d6", palisade::v1::TARGET_KIND_IP, "2001:db8:1:2::8")};
  Run(actuator, ops);
  EXPECT_THAT(ops[0].result, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(ops[1].result, StatusIs(absl::StatusCode::kUnavailable));
  fake_.SetFaults(fake::Faults());

  std::vector<ActionOp> retry = {ops[0]};
  Run(actuator, retry);
  ASSERT_THAT(retry[0].result, IsOk());
  fake::json items = fake_.ListSnapshot("palisade_block");
  ASSERT_THAT(items, SizeIs(2));
  EXPECT_EQ(items[0]["ip"], "2001:db8:1:2::/64");
}

// In dry run only the removes of what an earlier run made go out (Dispatcher::Sends): a flush
// of removes takes the items out and makes or mends nothing, so a blocking rule an operator
// switched off stays off (putting it back would enforce every item in the list again).
TEST_F(ActuatorsTest, AFlushOfRemovesNeverPutsTheListsRuleBack) {
  EdgeRef made;
  {
    IpListActuator first(*client_, IpListOptions(), registry_);
    std::vector<ActionOp> ops = {
        Op(ActionOp::Kind::kApply, "d1", palisade::v1::TARGET_KIND_IP, "203.0.113.1")};
    Run(first, ops);
    ASSERT_THAT(ops[0].result, IsOk());
    made = ops[0].edge;
  }
  absl::StatusOr<Ruleset> rs = client_->GetEntrypoint("http_request_firewall_custom");
  ASSERT_THAT(rs, IsOk());
  ASSERT_THAT(rs->rules, SizeIs(1));
  RulesetRule off = rs->rules[0];
  off.enabled = false;
  ASSERT_THAT(client_->UpdateRulesetRule(rs->id, off.id, off), IsOk());
  // A new actuator, as after a restart into dry run: it has not looked at the rule yet.
  prometheus::Registry registry;
  IpListActuator second(*client_, IpListOptions(), registry);
  std::vector<ActionOp> removes = {
      Op(ActionOp::Kind::kRemove, "d1", palisade::v1::TARGET_KIND_IP, "203.0.113.1")};
  removes[0].edge = made;
  Run(second, removes);
  EXPECT_THAT(removes[0].result, IsOk());
  EXPECT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(0));
  fake::json rules = fake_.RulesetSnapshot("http_request_firewall_custom")["rules"];
  ASSERT_THAT(rules, SizeIs(1));
  EXPECT_EQ(rules[0]["enabled"], false);
}

// A list deleted by hand while a decision's item was counted in it: the remove is done (the
// item went with the list), and a new decision on the same address makes the list and adds
// the item, not "already there".
TEST_F(ActuatorsTest, AnItemCountedInAListThatIsGoneIsAddedAgain) {
  IpListActuator actuator(*client_, IpListOptions(), registry_);
  actuator.Restore({{"203.0.113.1", "gone", false}});
  std::vector<ActionOp> removes = {
      Op(ActionOp::Kind::kRemove, "d1", palisade::v1::TARGET_KIND_IP, "203.0.113.1")};
  removes[0].edge = {"203.0.113.1", "gone", false};
  Run(actuator, removes);
  EXPECT_THAT(removes[0].result, IsOk());
  std::vector<ActionOp> ops = {
      Op(ActionOp::Kind::kApply, "d2", palisade::v1::TARGET_KIND_IP, "203.0.113.1")};
  Run(actuator, ops);
  EXPECT_THAT(ops[0].result, IsOk());
  EXPECT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(1));
}

// After a restart the counts of decisions per item come back from the edge records: ending one
// of two decisions on a /64 leaves the item.
TEST_F(ActuatorsTest, IpListCountsAreRestoredFromTheEdgeRecords) {
  std::vector<ActionOp> ops = {
      Op(ActionOp::Kind::kApply, "d5", palisade::v1::TARGET_KIND_IP, "2001:db8:1:2::7"),
      Op(ActionOp::Kind::kApply, "d6", palisade::v1::TARGET_KIND_IP, "2001:db8:1:2::8")};
  {
    IpListActuator before(*client_, IpListOptions(), registry_);
    Run(before, ops);
    ASSERT_THAT(ops[0].result, IsOk());
    ASSERT_THAT(ops[1].result, IsOk());
  }
  IpListActuator after(*client_, IpListOptions(), registry_);
  after.Restore({ops[0].edge, ops[1].edge});
  std::vector<ActionOp> removes = {
      Op(ActionOp::Kind::kRemove, "d5", palisade::v1::TARGET_KIND_IP, "2001:db8:1:2::7")};
  removes[0].edge = ops[0].edge;
  Run(after, removes);
  ASSERT_THAT(removes[0].result, IsOk());
  EXPECT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(1));
  removes = {Op(ActionOp::Kind::kRemove, "d6", palisade::v1::TARGET_KIND_IP, "2001:db8:1:2::8")};
  removes[0].edge = ops[1].edge;
  Run(after, removes);
  ASSERT_THAT(removes[0].result, IsOk());
  EXPECT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(0));
}

// The list judges its items by the set the guard holds, swapped whole by a reload that changes
// the allowlist (Dispatcher::SetNeverBan): every copy of the options (the reconciler keeps one
// for ItemFor) sees the new set, not the one of the start.
TEST_F(ActuatorsTest, IpListJudgesByTheNeverBanSetAsAReloadLeftIt) {
  IpListOptions options;
  IpListActuator actuator(*client_, options, registry_);
  const IpListOptions copy = options;
  IpListActuator reconcilers(*client_, copy, registry_);
  palisade::v1::Target neighbour;
  neighbour.set_kind(palisade::v1::TARGET_KIND_IP);
  neighbour.set_value("2a01:4f8:1:2::6");
  ASSERT_THAT(actuator.ItemFor(neighbour), IsOkAndHolds("2a01:4f8:1:2::/64"));
  options.never_ban.Set(*CidrSet::Parse({"2a01:4f8:1:2::5"}));
  EXPECT_THAT(actuator.ItemFor(neighbour), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(reconcilers.ItemFor(neighbour), StatusIs(absl::StatusCode::kFailedPrecondition));
  options.never_ban.Set(CidrSet());
  EXPECT_THAT(reconcilers.ItemFor(neighbour), IsOkAndHolds("2a01:4f8:1:2::/64"));
}

// The guard passes 2a01:4f8:1:2::6 (not allowlisted), but its /64 item would block the
// allowlisted 2a01:4f8:1:2::5: the list judges the item it sends, narrows it when a longer
// prefix spares the protected host, and refuses it when even the /64 holds one.
TEST_F(ActuatorsTest, IpListNeverWidensOverANeverBanAddress) {
  IpListOptions options;
  options.ipv6_prefix = 48;
  options.never_ban = *CidrSet::Parse({"2a01:4f8:1:2::5"});
  IpListActuator actuator(*client_, options, registry_);
  using palisade::v1::TARGET_KIND_IP;
  using palisade::v1::TARGET_KIND_RANGE;
  EXPECT_THAT(actuator.ItemFor(Op(ActionOp::Kind::kApply, "x", TARGET_KIND_IP, "2a01:4f8:1:2::6")
                                   .decision.target()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("never-ban")));
  std::vector<ActionOp> ops = {
      Op(ActionOp::Kind::kApply, "n1", TARGET_KIND_IP, "2a01:4f8:1:2::6"),       // same /64
      Op(ActionOp::Kind::kApply, "n2", TARGET_KIND_RANGE, "2a01:4f8:1:2::/80"),  // same /64
      Op(ActionOp::Kind::kApply, "n3", TARGET_KIND_IP, "2a01:4f8:1:8000::1"),    // same /48
      Op(ActionOp::Kind::kApply, "n4", TARGET_KIND_IP, "2a01:4f8:2::1"),         // elsewhere
      Op(ActionOp::Kind::kApply, "n5", TARGET_KIND_IP, "64:ff9b::a00:1")};       // 10.0.0.1
  Run(actuator, ops);
  EXPECT_THAT(ops[0].result, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(ops[1].result, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(ops[2].result, IsOk());
  EXPECT_THAT(ops[3].result, IsOk());
  EXPECT_THAT(ops[4].result, StatusIs(absl::StatusCode::kFailedPrecondition));
  std::set<std::string> sent;
  for (const auto& item : fake_.ListSnapshot("palisade_block")) sent.insert(item["ip"]);
  // The /48 around 2a01:4f8:1:8000::1 holds ::5; its /49 does not.
  EXPECT_EQ(sent, (std::set<std::string>{"2a01:4f8:1:8000::/49", "2a01:4f8:2::/48"}));
  EXPECT_EQ(ops[2].edge.id, "2a01:4f8:1:8000::/49");
  auto counted = [&](const std::string& reason) {
    for (const auto& family : registry_.Collect()) {
      if (family.name != "palisade_actions_list_never_ban_total") continue;
      for (const auto& m : family.metric) {
        for (const auto& l : m.label) {
          if (l.name == "reason" && l.value == reason) return m.counter.value;
        }
      }
    }
    return -1.0;
  };
  EXPECT_EQ(counted("narrowed"), 1);
  EXPECT_EQ(counted("refused"), 3);
}

// The count of items only grew: a repair re-adds an item (an upsert) and counted it again, and
// an item the reconciler deleted as an orphan was never taken off. Past max_items by count, new
// decisions were refused "at its cap" while the list had room. The list's own count decides.
TEST_F(ActuatorsTest, IpListCapIsJudgedOnTheItemsTheListHolds) {
  IpListOptions options;
  options.max_items = 3;
  IpListActuator actuator(*client_, options, registry_);
  std::vector<ActionOp> ops = {
      Op(ActionOp::Kind::kApply, "d1", palisade::v1::TARGET_KIND_IP, "203.0.113.1"),
      Op(ActionOp::Kind::kApply, "d2", palisade::v1::TARGET_KIND_IP, "203.0.113.2")};
  Run(actuator, ops);
  ASSERT_THAT(ops[0].result, IsOk());
  ASSERT_THAT(ops[1].result, IsOk());
  for (int round = 0; round < 3; ++round) {  // the reconciler's repairs, items already there
    std::vector<ActionOp> repair = {ops[round % 2]};
    repair[0].repair = true;
    Run(actuator, repair);
    ASSERT_THAT(repair[0].result, IsOk());
  }
  ASSERT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(2));
  std::vector<ActionOp> more = {
      Op(ActionOp::Kind::kApply, "d3", palisade::v1::TARGET_KIND_IP, "203.0.113.3")};
  Run(actuator, more);
  EXPECT_THAT(more[0].result, IsOk());
  ASSERT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(3));

  // Full for real: refused.
  std::vector<ActionOp> full = {
      Op(ActionOp::Kind::kApply, "d4", palisade::v1::TARGET_KIND_IP, "203.0.113.4")};
  Run(actuator, full);
  EXPECT_THAT(full[0].result, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("cap")));

  // An item deleted behind the actuator (the reconciler's orphan sweep) makes room again.
  absl::StatusOr<std::vector<IpList>> lists = client_->ListLists();
  ASSERT_THAT(lists, IsOk());
  std::string list_id;
  for (const IpList& l : *lists) {
    if (l.name == "palisade_block") list_id = l.id;
  }
  absl::StatusOr<std::vector<ListItem>> items = client_->ListAllItems(list_id);
  ASSERT_THAT(items, IsOk());
  std::vector<std::string> doomed;
  for (const ListItem& i : *items) {
    if (i.ip == "203.0.113.3") doomed.push_back(i.id);
  }
  ASSERT_THAT(doomed, SizeIs(1));
  ASSERT_THAT(client_->WaitForOperation(*client_->DeleteListItems(list_id, doomed)), IsOk());
  actuator.Forget(more[0].edge);
  full[0].result = absl::UnknownError("");
  Run(actuator, full);
  EXPECT_THAT(full[0].result, IsOk());
  EXPECT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(3));
}

// The account's item quota spans all its lists (cloudflare-api.md 3.5), but the cap counted only
// Palisade's list: a flush past the quota went out as one bulk operation, which failed (kAborted,
// retried for ever) with every decision in it, those that fitted included.
class IpListQuotaTest : public ActuatorsTest {
 protected:
  // Another list of the account ("office") holding `n` items.
  void OfficeListHolds(int n) {
    absl::StatusOr<IpList> office = client_->CreateList("office", "the office's addresses");
    ASSERT_THAT(office, IsOk());
    std::vector<ListItem> items;
    for (int i = 1; i <= n; ++i) items.push_back({"", absl::StrCat("198.51.100.", i), ""});
    absl::StatusOr<std::string> operation = client_->AddListItems(office->id, items);
    ASSERT_THAT(operation, IsOk());
    ASSERT_THAT(client_->WaitForOperation(*operation), IsOk());
  }
  static std::vector<ActionOp> Applies(int from, int to) {
    std::vector<ActionOp> ops;
    for (int i = from; i < to; ++i) {
      ops.push_back(Op(ActionOp::Kind::kApply, absl::StrCat("d", i), palisade::v1::TARGET_KIND_IP,
                       absl::StrCat("203.0.113.", i)));
    }
    return ops;
  }
};

// The account's quota (5) is shared with an "office" list of 3: a bulk add of 4 fails on it.
// The 2 that fit go in; the other 2 wait as a transient failure (before 2026-12-07 the whole
// batch was re-sent and failed for ever), and go in once the office list makes room.
TEST_F(IpListQuotaTest, ABulkAddOverTheAccountsQuotaPutsInWhatFitsAndRetriesTheRest) {
  fake_.options().max_list_items = 5;
  OfficeListHolds(3);
  IpListOptions options;
  options.max_items = 5;
  IpListActuator actuator(*client_, options, registry_);
  std::vector<ActionOp> ops = Applies(1, 5);
  Run(actuator, ops);
  EXPECT_THAT(ops[0].result, IsOk());
  EXPECT_THAT(ops[1].result, IsOk());
  EXPECT_THAT(ops[2].result, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("quota")));
  EXPECT_THAT(ops[3].result, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("quota")));
  EXPECT_TRUE(IsTransient(ops[2].result));
  EXPECT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(2));
  // The office list shrinks: the retry puts the rest in.
  absl::StatusOr<std::vector<IpList>> lists = client_->ListLists();
  ASSERT_THAT(lists, IsOk());
  for (const IpList& l : *lists) {
    if (l.name != "office") continue;
    absl::StatusOr<std::vector<ListItem>> items = client_->ListAllItems(l.id);
    ASSERT_THAT(items, IsOk());
    std::vector<std::string> ids;
    for (const ListItem& i : *items) ids.push_back(i.id);
    ASSERT_THAT(client_->WaitForOperation(*client_->DeleteListItems(l.id, ids)), IsOk());
  }
  std::vector<ActionOp> retry = {ops[2], ops[3]};
  Run(actuator, retry);
  EXPECT_THAT(retry[0].result, IsOk());
  EXPECT_THAT(retry[1].result, IsOk());
  EXPECT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(4));
}

// The cap is this list's: other lists of an account whose quota is larger (Enterprise) take
// nothing from it. Before (2026-12-07, for a few hours), 12 items elsewhere refused every add.
TEST_F(IpListQuotaTest, OtherListsDoNotCountAgainstThisListsCap) {
  fake_.options().max_list_items = 1000;
  OfficeListHolds(12);
  IpListOptions options;
  options.max_items = 10;
  IpListActuator actuator(*client_, options, registry_);
  std::vector<ActionOp> ops = Applies(1, 5);
  Run(actuator, ops);
  for (const ActionOp& op : ops) EXPECT_THAT(op.result, IsOk());
  EXPECT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(4));
}

// An Enterprise account: a quota (20) larger than this list's cap (10), and other lists holding
// more than the cap. The room max_items leaves is none, yet 8 fit: half the batch is tried, and
// the retries put in what fits (before, none went in until the other lists shrank).
TEST_F(IpListQuotaTest, AnAccountWhoseQuotaIsLargerThanTheCapFillsItsRoom) {
  fake_.options().max_list_items = 20;
  OfficeListHolds(12);
  IpListOptions options;
  options.max_items = 10;
  IpListActuator actuator(*client_, options, registry_);
  std::vector<ActionOp> ops = Applies(1, 10);
  for (int round = 0; round < 6; ++round) {
    std::vector<ActionOp*> waiting;
    for (ActionOp& op : ops) {
      if (round == 0 || op.result.code() == absl::StatusCode::kResourceExhausted) {
        waiting.push_back(&op);
      }
    }
    if (waiting.empty()) break;
    actuator.Run(waiting);
  }
  int in = 0;
  for (const ActionOp& op : ops) in += op.result.ok();
  EXPECT_EQ(in, 8);
  EXPECT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(8));
}

// With room for one, an operator's ban goes in before a feed's (a feed fills the account's
// last room otherwise, and every ban behind it waits).
TEST_F(IpListQuotaTest, AnOperatorsBanGoesInBeforeAFeedsWhenRoomIsShort) {
  fake_.options().max_list_items = 5;
  OfficeListHolds(4);
  IpListOptions options;
  options.max_items = 5;
  IpListActuator actuator(*client_, options, registry_);
  std::vector<ActionOp> ops = Applies(1, 3);
  ops[0].decision.set_origin(palisade::v1::ORIGIN_FEED);
  ops[1].decision.set_origin(palisade::v1::ORIGIN_MANUAL);
  Run(actuator, ops);
  EXPECT_THAT(ops[0].result, StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(ops[1].result, IsOk());
}

// The other list grew after the actuator last read the counts: the bulk operation fails on the
// quota. The items that fit go in again on their own; the rest wait (retried).
TEST_F(IpListQuotaTest, ABulkAddFailedOnTheQuotaIsSplitAndTheRestRetried) {
  fake_.options().max_list_items = 5;
  IpListOptions options;
  options.max_items = 5;
  IpListActuator actuator(*client_, options, registry_);
  std::vector<ActionOp> first = Applies(1, 2);
  Run(actuator, first);
  ASSERT_THAT(first[0].result, IsOk());
  OfficeListHolds(3);
  std::vector<ActionOp> ops = Applies(2, 5);
  Run(actuator, ops);
  EXPECT_THAT(ops[0].result, IsOk());
  EXPECT_THAT(ops[1].result, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("quota")));
  EXPECT_THAT(ops[2].result, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("quota")));
  EXPECT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(2));
}

// What the account's lists hold together, against the quota they share, is gauged so an alert
// can fire before a bulk add is split on it: as last read (the first flush, a flush at the cap,
// a bulk add refused; no read of its own) and moved by what the actuator adds and removes since.
TEST_F(IpListQuotaTest, TheAccountsListItemsAreGaugedAgainstItsQuota) {
  auto gauge = [&](const std::string& name) {
    for (const auto& family : registry_.Collect()) {
      if (family.name != name) continue;
      for (const auto& m : family.metric) {
        if (m.label.empty()) return m.gauge.value;  // no label: one account per palisaded
      }
    }
    return -1.0;
  };
  fake_.options().max_list_items = 10;
  OfficeListHolds(3);
  IpListOptions options;
  options.max_items = 10;
  IpListActuator actuator(*client_, options, registry_);
  EXPECT_EQ(gauge("palisade_cloudflare_account_list_items_limit"), 10);
  std::vector<ActionOp> first = Applies(1, 3);
  Run(actuator, first);
  ASSERT_THAT(first[1].result, IsOk());
  EXPECT_EQ(gauge("palisade_cloudflare_account_list_items"), 5);  // 3 + the 2 just added
  // The office list grows behind the actuator: seen when the quota refuses the next bulk add
  // (3 + 3 + 2, room for 2 of these 4).
  absl::StatusOr<std::vector<IpList>> lists = client_->ListLists();
  ASSERT_THAT(lists, IsOk());
  for (const IpList& l : *lists) {
    if (l.name != "office") continue;
    absl::StatusOr<std::string> operation = client_->AddListItems(
        l.id, {{"", "198.51.100.4", ""}, {"", "198.51.100.5", ""}, {"", "198.51.100.6", ""}});
    ASSERT_THAT(operation, IsOk());
    ASSERT_THAT(client_->WaitForOperation(*operation), IsOk());
  }
  std::vector<ActionOp> ops = Applies(3, 7);
  Run(actuator, ops);
  ASSERT_THAT(ops[3].result, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("quota")));
  EXPECT_EQ(gauge("palisade_cloudflare_account_list_items"), 10);
  // A removal frees one.
  std::vector<ActionOp> removes = {first[0]};
  removes[0].kind = ActionOp::Kind::kRemove;
  Run(actuator, removes);
  ASSERT_THAT(removes[0].result, IsOk());
  EXPECT_EQ(gauge("palisade_cloudflare_account_list_items"), 9);
  EXPECT_EQ(gauge("palisade_cloudflare_account_list_items_limit"), 10);
}

// Every removal flush listed the whole list to find its items' ids: with 5,000 items, 10 page
// GETs a flush against the shared request budget. The ids are kept from the last listing.
TEST_F(ActuatorsTest, IpListRemovalsDoNotListTheWholeListEachTime) {
  ClientOptions options = client_->options();
  options.poll_interval = ClientOptions().poll_interval;  // the daemon's: one poll a removal
  Credentials creds;
  creds.token = Secret(token_);
  CloudflareClient client(transport_, clock_, options, creds, registry_);
  IpListActuator actuator(client, IpListOptions(), registry_);
  std::vector<ActionOp> ops;
  for (int i = 0; i < 5000; ++i) {
    ops.push_back(Op(ActionOp::Kind::kApply, absl::StrCat("d", i), palisade::v1::TARGET_KIND_IP,
                     absl::StrCat("45.", 1 + i / 250, ".", i % 250, ".", 7)));
  }
  Run(actuator, ops);
  for (const ActionOp& op : ops) ASSERT_THAT(op.result, IsOk());
  ASSERT_EQ(fake_.ListSnapshot("palisade_block").size(), 5000u);
  // The first removal after the adds lists the items once (their ids are not known yet); each
  // later one is its DELETE and the polls of its operation only.
  const int64_t before = fake_.calls();
  for (int i = 0; i < 10; ++i) {
    std::vector<ActionOp> removes = {Op(ActionOp::Kind::kRemove, ops[i].decision.id(),
                                        palisade::v1::TARGET_KIND_IP,
                                        ops[i].decision.target().value())};
    removes[0].edge = ops[i].edge;
    const int64_t at = fake_.calls();
    Run(actuator, removes);
    ASSERT_THAT(removes[0].result, IsOk());
    if (i > 0) EXPECT_LE(fake_.calls() - at, 5) << i;
  }
  EXPECT_LE(fake_.calls() - before, 10 * 5 + 10);
  EXPECT_EQ(fake_.ListSnapshot("palisade_block").size(), 4990u);

  // An item deleted by hand and put back by a repair has a new id: the kept one is not used.
  std::string list_id = ops[20].edge.container;
  absl::StatusOr<std::vector<ListItem>> items = client.ListAllItems(list_id);
  ASSERT_THAT(items, IsOk());
  std::vector<std::string> by_hand;
  for (const ListItem& i : *items) {
    if (i.ip == ops[20].edge.id) by_hand.push_back(i.id);
  }
  ASSERT_THAT(by_hand, SizeIs(1));
  ASSERT_THAT(client.WaitForOperation(*client.DeleteListItems(list_id, by_hand)), IsOk());
  std::vector<ActionOp> repair = {ops[20]};
  repair[0].repair = true;
  Run(actuator, repair);
  ASSERT_THAT(repair[0].result, IsOk());
  std::vector<ActionOp> removes = {Op(ActionOp::Kind::kRemove, ops[20].decision.id(),
                                      palisade::v1::TARGET_KIND_IP,
                                      ops[20].decision.target().value())};
  removes[0].edge = ops[20].edge;
  Run(actuator, removes);
  ASSERT_THAT(removes[0].result, IsOk());
  EXPECT_EQ(fake_.ListSnapshot("palisade_block").size(), 4989u);
}

TEST_F(ActuatorsTest, RateLimitRuleForAPath) {
  RateLimitActuator actuator(*client_, RateLimitOptions());
  std::vector<ActionOp> ops = {Op(ActionOp::Kind::kApply, "d1", palisade::v1::TARGET_KIND_PATH,
                                  "/login", palisade::v1::ACTION_RATE_LIMIT),
                               Op(ActionOp::Kind::kApply, "d2", palisade::v1::TARGET_KIND_PATH,
                                  "/api/v1/token", palisade::v1::ACTION_RATE_LIMIT),
                               Op(ActionOp::Kind::kApply, "d3", palisade::v1::TARGET_KIND_PATH,
                                  "/x\") or (ip.src ne 1.1.1.1", palisade::v1::ACTION_RATE_LIMIT)};
  Run(actuator, ops);
  EXPECT_THAT(ops[0].result, IsOk());
  EXPECT_THAT(ops[1].result, IsOk());
  EXPECT_THAT(ops[2].result, StatusIs(absl::StatusCode::kInvalidArgument));
  fake::json rs = fake_.RulesetSnapshot("http_ratelimit");
  ASSERT_THAT(rs["rules"], SizeIs(2));
  EXPECT_EQ(rs["rules"][0]["expression"], "(http.request.uri.path eq \"/login\")");
  // The defaults are the Free plan's, valid on every plan.
  EXPECT_EQ(rs["rules"][0]["ratelimit"]["period"], 10);
  EXPECT_EQ(rs["rules"][0]["ratelimit"]["mitigation_timeout"], 10);
  EXPECT_EQ(rs["rules"][0]["ref"], "palisade_d1");
  std::vector<ActionOp> removes = {
      Op(ActionOp::Kind::kRemove, "d1", palisade::v1::TARGET_KIND_PATH, "/login"),
      Op(ActionOp::Kind::kRemove, "d2", palisade::v1::TARGET_KIND_PATH, "/api/v1/token")};
  removes[0].edge = ops[0].edge;  // the second is found by its ref
  Run(actuator, removes);
  EXPECT_THAT(removes[0].result, IsOk());
  EXPECT_THAT(removes[1].result, IsOk());
  EXPECT_THAT(fake_.RulesetSnapshot("http_ratelimit")["rules"], SizeIs(0));
}

// A create whose answer is lost after Cloudflare made it: the client does not send it again
// (outcome unknown), the dispatcher retries the op as transient, and the retry finds what the
// lost call made (the rule by its ref, the list by its name) instead of making a second one.
TEST_F(ActuatorsTest, ACreateWhoseAnswerWasLostIsFoundByTheRetryNotMadeTwice) {
  RateLimitActuator rate(*client_, RateLimitOptions());
  // The first rule makes the phase's ruleset (a PUT, which is sent again safely); the second
  // is added to it by a POST.
  std::vector<ActionOp> ops = {Op(ActionOp::Kind::kApply, "d0", palisade::v1::TARGET_KIND_PATH,
                                  "/api", palisade::v1::ACTION_RATE_LIMIT)};
  Run(rate, ops);
  ASSERT_THAT(ops[0].result, IsOk());
  fake::Faults faults;
  faults.drop_after_apply = 1;
  faults.drop_after_apply_method = "POST";
  fake_.SetFaults(faults);
  ops = {Op(ActionOp::Kind::kApply, "d1", palisade::v1::TARGET_KIND_PATH, "/login",
            palisade::v1::ACTION_RATE_LIMIT)};
  Run(rate, ops);
  EXPECT_THAT(ops[0].result, StatusIs(absl::StatusCode::kUnknown)) << ops[0].result;
  EXPECT_TRUE(IsTransient(ops[0].result));
  fake_.SetFaults(fake::Faults());
  Run(rate, ops);
  EXPECT_THAT(ops[0].result, IsOk());
  fake::json rs = fake_.RulesetSnapshot("http_ratelimit");
  ASSERT_THAT(rs["rules"], SizeIs(2));
  EXPECT_EQ(rs["rules"][1]["ref"], "palisade_d1");

  IpListActuator list(*client_, IpListOptions(), registry_);
  fake_.SetFaults(faults);  // the list's create
  ops = {Op(ActionOp::Kind::kApply, "d2", palisade::v1::TARGET_KIND_IP, "203.0.113.2")};
  Run(list, ops);
  EXPECT_THAT(ops[0].result, StatusIs(absl::StatusCode::kUnknown));
  EXPECT_TRUE(IsTransient(ops[0].result));
  fake_.SetFaults(fake::Faults());
  Run(list, ops);
  EXPECT_THAT(ops[0].result, IsOk());
  EXPECT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(1));
}

TEST_F(ActuatorsTest, LeakedTokenIsDisabledOrDeleted) {
  fake::TokenSpec leaked;
  leaked.name = "ci";
  leaked.permissions = {"lists"};
  auto [id1, value1] = fake_.AddToken(leaked);
  auto [id2, value2] = fake_.AddToken(leaked);
  TokenActuator disable(*client_, false);
  std::vector<ActionOp> ops = {
      Op(ActionOp::Kind::kApply, "d1", palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT, "sha256:x",
         palisade::v1::ACTION_REVOKE_TOKEN),
      Op(ActionOp::Kind::kApply, "d2", palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT, "sha256:y",
         palisade::v1::ACTION_REVOKE_TOKEN)};
  ops[0].secret = value1;
  Run(disable, ops);
  EXPECT_THAT(ops[0].result, IsOk());
  EXPECT_EQ(ops[0].edge.id, id1);
  EXPECT_TRUE(ops[0].secret.empty());
  EXPECT_EQ(fake_.TokenSnapshot(id1)["status"], "disabled");
  EXPECT_THAT(ops[1].result,
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no longer in memory")));

  TokenActuator del(*client_, true);
  std::vector<ActionOp> more = {Op(ActionOp::Kind::kApply, "d3",
                                   palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT, "sha256:z",
                                   palisade::v1::ACTION_REVOKE_TOKEN)};
  more[0].secret = value2;
  Run(del, more);
  EXPECT_THAT(more[0].result, IsOk());
  EXPECT_TRUE(fake_.TokenSnapshot(id2).is_null());
  // Seen again after revocation: already invalid, nothing to do.
  more[0].secret = value2;
  more[0].result = absl::UnknownError("");
  Run(del, more);
  EXPECT_THAT(more[0].result, IsOk());
}

// A leaked token that Cloudflare refuses from here as IP-restricted (9109 "from location") is
// live: it is never counted as revoked, and the failure says so.
TEST_F(ActuatorsTest, AnIpRestrictedLeakedTokenIsReportedLiveNotRevoked) {
  fake::TokenSpec leaked;
  leaked.name = "ci";
  leaked.permissions = {"lists"};
  leaked.ip_in = {"192.0.2.0/24"};  // the emulator sees calls from 127.0.0.1
  auto [id, value] = fake_.AddToken(leaked);
  TokenActuator actuator(*client_, false);
  std::vector<ActionOp> ops = {Revoke("d1", value)};
  Run(actuator, ops);
  EXPECT_THAT(ops[0].result,
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("NOT revoked")));
  EXPECT_EQ(fake_.TokenSnapshot(id)["status"], "active");

  // Known by id (from the audit log), it is revoked through palisaded's own token, and keeps
  // its IP condition.
  std::vector<ActionOp> by_id = {Op(ActionOp::Kind::kApply, "d2",
                                    palisade::v1::TARGET_KIND_TOKEN_ID, id,
                                    palisade::v1::ACTION_REVOKE_TOKEN)};
  Run(actuator, by_id);
  EXPECT_THAT(by_id[0].result, IsOk());
  EXPECT_EQ(fake_.TokenSnapshot(id)["status"], "disabled");
  EXPECT_EQ(fake_.TokenSnapshot(id)["condition"]["request.ip"]["in"][0], "192.0.2.0/24");
}

// An account token made before the cfat_ prefix is still found (account verify) and revoked.
TEST_F(ActuatorsTest, AnUnprefixedAccountTokenIsRevoked) {
  fake::TokenSpec leaked;
  leaked.name = "old-account-token";
  leaked.account_owned = true;
  leaked.value = "Zz0123456789abcdefghijABCDEFGHIJ01234567";
  leaked.permissions = {"lists"};
  const std::string id = fake_.AddToken(leaked).first;
  TokenActuator actuator(*client_, false);
  std::vector<ActionOp> ops = {Revoke("d1", leaked.value)};
  Run(actuator, ops);
  EXPECT_THAT(ops[0].result, IsOk());
  EXPECT_EQ(ops[0].edge.id, id);
  EXPECT_EQ(ops[0].edge.container, "account");
  EXPECT_EQ(fake_.TokenSnapshot(id)["status"], "disabled");
}

TEST_F(ActuatorsTest, TokenByIdAndNeverOurOwn) {
  fake::TokenSpec spec;
  spec.permissions = {"lists"};
  auto [id, value] = fake_.AddToken(spec);
  const std::string own = client_->VerifyToken()->id;
  TokenActuator actuator(*client_, false, own);
  std::vector<ActionOp> ops = {
      Op(ActionOp::Kind::kApply, "d1", palisade::v1::TARGET_KIND_TOKEN_ID, id,
         palisade::v1::ACTION_REVOKE_TOKEN),
      Op(ActionOp::Kind::kApply, "d2", palisade::v1::TARGET_KIND_TOKEN_ID, own,
         palisade::v1::ACTION_REVOKE_TOKEN),
      Op(ActionOp::Kind::kApply, "d3", palisade::v1::TARGET_KIND_TOKEN_ID,
         "00000000000000000000000000000000", palisade::v1::ACTION_REVOKE_TOKEN)};
  ops[1].secret = token_;
  Run(actuator, ops);
  EXPECT_THAT(ops[0].result, IsOk());
  EXPECT_EQ(fake_.TokenSnapshot(id)["status"], "disabled");
  EXPECT_THAT(ops[1].result, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("own")));
  EXPECT_EQ(fake_.TokenSnapshot(own)["status"], "active");
  // Not found by either endpoint: gone already, or another member's user token that palisaded's
  // own cannot see. Which one cannot be told from here, so it is never counted as revoked.
  EXPECT_THAT(ops[2].result, StatusIs(absl::StatusCode::kNotFound, HasSubstr("NOT revoked")));
  EXPECT_TRUE(ops[2].edge.id.empty());
}

// palisaded's own token id is learnt at start, but left empty when that verify failed (network
// not up, a 5xx). A revocation of the own token (an audit record naming its id, or its secret
// leaked into a log) then went out. The actuator learns the id before any revocation, and holds
// the op (retried, nothing sent) while it cannot.
TEST_F(ActuatorsTest, TheOwnTokenIsNeverRevokedWhenItsIdWasNotLearntAtStart) {
  const std::string own = client_->VerifyToken()->id;
  for (bool del : {true, false}) {
    SCOPED_TRACE(del ? "delete" : "disable");
    TokenActuator actuator(*client_, del, /*own_token_id=*/"");
    std::vector<ActionOp> ops = {Op(ActionOp::Kind::kApply, "d1",
                                    palisade::v1::TARGET_KIND_TOKEN_ID, own,
                                    palisade::v1::ACTION_REVOKE_TOKEN),
                                 Revoke("d2", token_)};
    const int64_t before = fake_.token_revocation_calls();
    Run(actuator, ops);
    EXPECT_THAT(ops[0].result, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("own")));
    EXPECT_THAT(ops[1].result, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("own")));
    EXPECT_EQ(fake_.token_revocation_calls(), before);
    ASSERT_EQ(fake_.TokenSnapshot(own)["status"], "active");
  }

  // The id cannot be learnt now either: nothing is sent, and the op is retried.
  ClientOptions options = client_->options();
  options.max_attempts = 1;
  Credentials creds;
  creds.token = Secret(token_);
  CloudflareClient client(transport_, clock_, options, creds, registry_);
  TokenActuator actuator(client, /*delete_token=*/true, /*own_token_id=*/"");
  std::vector<ActionOp> ops = {Op(ActionOp::Kind::kApply, "d3",
                                  palisade::v1::TARGET_KIND_TOKEN_ID, own,
                                  palisade::v1::ACTION_REVOKE_TOKEN)};
  fake::Faults faults;
  faults.fail_call = 1;
  faults.error_status = 503;
  fake_.SetFaults(faults);
  const int64_t before = fake_.token_revocation_calls();
  Run(actuator, ops);
  EXPECT_THAT(ops[0].result, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("own")));
  fake_.SetFaults(fake::Faults());
  Run(actuator, ops);  // the dispatcher's retry
  EXPECT_THAT(ops[0].result, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("own")));
  EXPECT_EQ(fake_.token_revocation_calls(), before);
  EXPECT_EQ(fake_.TokenSnapshot(own)["status"], "active");
}

// In front of the emulator: the first DELETE of a token reaches the emulator (the token is
// deleted) but its answer is lost on the way back, as when a connection drops mid-reply.
class LosesTheFirstDeleteAnswer final : public HttpTransport {
 public:
  explicit LosesTheFirstDeleteAnswer(HttpTransport& next) : next_(next) {}
  absl::StatusOr<HttpResponse> Send(const HttpRequest& request) override {
    absl::StatusOr<HttpResponse> reply = next_.Send(request);
    if (!lost_ && request.method == "DELETE" &&
        request.url.find("/tokens/") != std::string::npos) {
      lost_ = true;
      return absl::UnavailableError("HTTP transport: connection reset by peer");
    }
    return reply;
  }

 private:
  HttpTransport& next_;
  bool lost_ = false;
};

// A revoking DELETE whose answer was lost is asked again, and the second answer is a 404: the
// first one worked. It was reported as NOT revoked (by id: "not found by either endpoint"; by
// secret: "LIVE but could not be revoked"), a false alarm an operator had to chase. Both for a
// retry inside the client and for the dispatcher's retry of the op.
TEST_F(ActuatorsTest, ARevocationWhoseAnswerWasLostIsRevoked) {
  for (int client_attempts : {6, 1}) {
    for (bool by_id : {true, false}) {
      SCOPED_TRACE(absl::StrCat(by_id ? "by id" : "by secret", ", client attempts ",
                                client_attempts));
      fake::TokenSpec leaked;
      leaked.name = "ci";
      leaked.permissions = {"lists"};
      auto [id, value] = fake_.AddToken(leaked);
      LosesTheFirstDeleteAnswer losing(transport_);
      Credentials creds;
      creds.token = Secret(token_);
      ClientOptions options = client_->options();
      options.max_attempts = client_attempts;
      CloudflareClient client(losing, clock_, options, creds, registry_);
      TokenActuator actuator(client, /*delete_token=*/true);
      std::vector<ActionOp> ops = {
          by_id ? Op(ActionOp::Kind::kApply, "d1", palisade::v1::TARGET_KIND_TOKEN_ID, id,
                     palisade::v1::ACTION_REVOKE_TOKEN)
                : Revoke("d1", value)};
      Run(actuator, ops);
      if (client_attempts == 1) {
        // The client gave up on the lost answer: the dispatcher retries the same op.
        ASSERT_THAT(ops[0].result, StatusIs(absl::StatusCode::kUnavailable));
        Run(actuator, ops);
      }
      EXPECT_THAT(ops[0].result, IsOk());
      EXPECT_TRUE(fake_.TokenSnapshot(id).is_null());  // deleted
      if (by_id) EXPECT_EQ(ops[0].edge.id, id);
    }
  }
}

// In front of the emulator: token revocations (DELETE, and the GET and PUT of a disable) go to
// an id that does not exist, so the edge answers 404 for a token that verify just found live,
// as it does for a token palisaded's own cannot see (another member's user token).
class HidesTokens final : public HttpTransport {
 public:
  explicit HidesTokens(HttpTransport& next) : next_(next) {}
  absl::StatusOr<HttpResponse> Send(const HttpRequest& request) override {
    HttpRequest r = request;
    const size_t at = r.url.find("/tokens/");
    if (r.method != "POST" && at != std::string::npos &&
        r.url.find("/verify") == std::string::npos) {
      r.url = r.url.substr(0, at) + "/tokens/00000000000000000000000000000000";
    }
    return next_.Send(r);
  }

 private:
  HttpTransport& next_;
};

// verify says the leaked token is live; the revocation then finds no such token: it was not
// revoked, and the result says so (without the secret).
TEST_F(ActuatorsTest, ALiveTokenThatCannotBeRevokedIsAFailure) {
  fake::TokenSpec leaked;
  leaked.name = "ci";
  leaked.permissions = {"lists"};
  auto [id, value] = fake_.AddToken(leaked);
  HidesTokens hiding(transport_);
  Credentials creds;
  creds.token = Secret(token_);
  CloudflareClient client(hiding, clock_, client_->options(), creds, registry_);
  for (bool del : {true, false}) {
    TokenActuator actuator(client, del);
    std::vector<ActionOp> ops = {Revoke("d1", value)};
    Run(actuator, ops);
    EXPECT_THAT(ops[0].result,
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("could not be revoked")))
        << (del ? "delete" : "disable");
    EXPECT_THAT(ops[0].result.message(), HasSubstr(id));
    EXPECT_THAT(ops[0].result.message(), ::testing::Not(HasSubstr(value)));
    EXPECT_EQ(fake_.TokenSnapshot(id)["status"], "active");
  }
}

}  // namespace
}  // namespace palisade
