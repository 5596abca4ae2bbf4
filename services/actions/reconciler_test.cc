// The reconciler against the emulator over HTTP, with the real dispatcher, actuators and
// decision table (shared SimulatedClock, no sleeping). A transport hook lets the dispatcher act
// in the middle of the reconciler's reads, where the races were.
#include "services/actions/reconciler.h"

#include <functional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/metrics_for_tests.h"
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

// CurlTransport with a hook called once, before or after the first request that matches.
class HookTransport final : public HttpTransport {
 public:
  struct Hook {
    std::string method;
    std::string url_part;
    bool after_reply = false;
    std::function<void()> run;
  };
  void Arm(Hook hook) { hook_ = std::move(hook); }
  absl::StatusOr<HttpResponse> Send(const HttpRequest& request) override {
    const bool match = hook_.run && request.method == hook_.method &&
                       absl::StrContains(request.url, hook_.url_part);
    std::function<void()> run;
    if (match) std::swap(run, hook_.run);  // once; the hook's own requests pass through
    if (run && !hook_.after_reply) run();
    absl::StatusOr<HttpResponse> reply = curl_.Send(request);
    if (run && hook_.after_reply) run();
    return reply;
  }

 private:
  CurlTransport curl_;
  Hook hook_;
};

class ReconcilerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake::TokenSpec spec;
    spec.permissions = {"firewall_services", "lists", "rulesets"};
    const std::string token = fake_.AddToken(spec).second;
    ASSERT_THAT(server_.Start(), IsOk());
    client_ = MakeClient(token, registry_);
    dispatcher_ = std::make_unique<Dispatcher>(clock_, DispatcherOptions(), registry_);
    dispatcher_->AddActuator(palisade::v1::ACTUATOR_ACCESS_RULE,
                             std::make_unique<AccessRuleActuator>(*client_, RuleScope::kZone));
    dispatcher_->AddActuator(palisade::v1::ACTUATOR_IP_LIST,
                             std::make_unique<IpListActuator>(*client_, IpListOptions(),
                                                              registry_));
    table_.AddListener([this](const DecisionUpdate& u) { dispatcher_->OnDecision(u); });
  }

  std::unique_ptr<CloudflareClient> MakeClient(const std::string& token,
                                               prometheus::Registry& registry) {
    ClientOptions options;
    options.base_url = server_.base_url();
    options.account_id = fake_.options().account_id;
    options.zone_id = fake_.options().zone_id;
    options.poll_interval = absl::Milliseconds(100);
    Credentials creds;
    creds.token = Secret(token);
    return std::make_unique<CloudflareClient>(transport_, clock_, options, creds, registry);
  }

  std::unique_ptr<Reconciler> MakeReconciler(bool withdraw_on_missing,
                                             const std::string& instance = "") {
    ReconcilerOptions options;
    options.withdraw_on_missing = withdraw_on_missing;
    options.instance = instance;
    return std::make_unique<Reconciler>(*client_, *dispatcher_, table_, options,
                                        reconciler_registry_);
  }

  palisade::v1::Decision Ban(const std::string& ip, palisade::v1::Actuator actuator) {
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_kind(palisade::v1::TARGET_KIND_IP);
    req.mutable_target()->set_value(ip);
    *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
    req.set_actuator(actuator);
    absl::StatusOr<palisade::v1::Decision> d = table_.AddManual(req);
    EXPECT_THAT(d.status(), IsOk());
    return d.ok() ? *d : palisade::v1::Decision();
  }

  // An access-rule decision on a range the access rules do not take (IPv4 /16 and /24 only):
  // its apply fails for good (kInvalidArgument).
  palisade::v1::Decision BanRange(const std::string& range) {
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_kind(palisade::v1::TARGET_KIND_RANGE);
    req.mutable_target()->set_value(range);
    *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
    req.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
    absl::StatusOr<palisade::v1::Decision> d = table_.AddManual(req);
    EXPECT_THAT(d.status(), IsOk());
    return d.ok() ? *d : palisade::v1::Decision();
  }

  // palisade_actions_total{result} over every actuator and op.
  double Actions(const std::string& result) {
    return ::palisade::testing::CounterSum(registry_, "palisade_actions_total",
                                           {{"result", result}});
  }

  SimulatedClock clock_;
  fake::FakeCloudflare fake_{clock_};
  fake::EmulatorServer server_{fake_};
  HookTransport transport_;
  prometheus::Registry registry_;
  prometheus::Registry reconciler_registry_;
  prometheus::Registry other_client_registry_;
  std::unique_ptr<CloudflareClient> client_;
  DecisionTable table_{clock_};
  std::unique_ptr<Dispatcher> dispatcher_;
};

// The reconciler lists the decisions, then the list items. A decision made and applied between
// the two reads must not have its item deleted as an orphan.
TEST_F(ReconcilerTest, AnItemAddedBetweenItsReadsIsNotAnOrphan) {
  Ban("198.51.100.1", palisade::v1::ACTUATOR_IP_LIST);
  EXPECT_EQ(dispatcher_->RunOnce(), 1);
  ASSERT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(1));
  std::unique_ptr<Reconciler> reconciler = MakeReconciler(false);
  transport_.Arm({"GET", "/items", false, [&] {
                    Ban("198.51.100.2", palisade::v1::ACTUATOR_IP_LIST);
                    dispatcher_->RunOnce();  // the dispatcher's worker, racing the reconciler
                  }});
  absl::StatusOr<DriftReport> report = reconciler->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->orphans, 0);
  dispatcher_->RunOnce();  // whatever waited for the reconciler
  EXPECT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(2));
  EXPECT_EQ(dispatcher_->pending(), 0u);
}

// The reconciler reads the access rules, then the decisions. A decision made and applied
// between the two reads is neither missing nor (policy "withdraw") withdrawn.
TEST_F(ReconcilerTest, ADecisionAppliedBetweenItsReadsIsNotWithdrawn) {
  std::unique_ptr<Reconciler> reconciler = MakeReconciler(true);
  palisade::v1::Decision late;
  transport_.Arm({"GET", "/access_rules/rules", true, [&] {
                    late = Ban("203.0.113.9", palisade::v1::ACTUATOR_ACCESS_RULE);
                    dispatcher_->RunOnce();
                  }});
  absl::StatusOr<DriftReport> report = reconciler->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->missing, 0);
  EXPECT_TRUE(table_.Get(late.id())->active());
  dispatcher_->RunOnce();
  EXPECT_THAT(fake_.AccessRuleSnapshot(), SizeIs(1));
}

// A decision that adopted (10009) the rule of an earlier Palisade decision holds it: the rule's
// notes name the earlier decision, but it is not an orphan, and the decision is not missing.
TEST_F(ReconcilerTest, AnAdoptedPalisadeRuleIsNeitherOrphanNorMissing) {
  ASSERT_THAT(client_->CreateAccessRule(RuleScope::kZone, "block", "ip", "203.0.113.9",
                                        "palisade:00000000000000fe manual"),
              IsOk());
  palisade::v1::Decision d = Ban("203.0.113.9", palisade::v1::ACTUATOR_ACCESS_RULE);
  EXPECT_EQ(dispatcher_->RunOnce(), 1);
  ASSERT_FALSE(dispatcher_->edges().at(d.id()).foreign);
  absl::StatusOr<DriftReport> report = MakeReconciler(false)->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->orphans, 0);
  EXPECT_EQ(report->missing, 0);
  EXPECT_THAT(fake_.AccessRuleSnapshot(), SizeIs(1));
}

// Orphans and missing objects are still found (the pause does not hide drift).
TEST_F(ReconcilerTest, DriftIsStillRepaired) {
  palisade::v1::Decision d = Ban("203.0.113.7", palisade::v1::ACTUATOR_ACCESS_RULE);
  EXPECT_EQ(dispatcher_->RunOnce(), 1);
  ASSERT_THAT(client_->CreateAccessRule(RuleScope::kZone, "block", "ip", "203.0.113.8",
                                        "palisade:00000000000000ff manual"),
              IsOk());
  ASSERT_THAT(client_->DeleteAccessRule(RuleScope::kZone, dispatcher_->edges().at(d.id()).id),
              IsOk());
  absl::StatusOr<DriftReport> report = MakeReconciler(false)->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->orphans, 1);
  EXPECT_EQ(report->missing, 1);
  dispatcher_->RunOnce();
  fake::json rules = fake_.AccessRuleSnapshot();
  ASSERT_THAT(rules, SizeIs(1));
  EXPECT_EQ(rules[0]["configuration"]["value"], "203.0.113.7");
}

// Only a marker naming a decision id (16 lowercase hex, as DecisionTable makes them) is
// Palisade's: a human's access rule noted "palisade:office", a list item commented so and a
// rate-limit rule with ref "palisade_office" were deleted as orphans on every run.
TEST_F(ReconcilerTest, AMarkerWithoutADecisionIdIsNotPalisades) {
  Ban("198.51.100.1", palisade::v1::ACTUATOR_IP_LIST);  // makes the list
  EXPECT_EQ(dispatcher_->RunOnce(), 1);
  ASSERT_THAT(client_->CreateAccessRule(RuleScope::kZone, "block", "ip", "203.0.113.50",
                                        "palisade:office"),
              IsOk());
  absl::StatusOr<std::vector<IpList>> lists = client_->ListLists();
  ASSERT_THAT(lists.status(), IsOk());
  ASSERT_THAT(*lists, SizeIs(1));
  absl::StatusOr<std::string> op =
      client_->AddListItems((*lists)[0].id, {{"", "198.51.100.50", "palisade:office"}});
  ASSERT_THAT(op.status(), IsOk());
  ASSERT_THAT(client_->WaitForOperation(*op), IsOk());
  RulesetRule human;
  human.ref = "palisade_office";
  human.expression = "(http.request.uri.path eq \"/office\")";
  human.action = "block";
  human.ratelimit = RateLimit();
  human.ratelimit->period = 10;  // valid on every plan
  human.ratelimit->mitigation_timeout = 10;
  ASSERT_THAT(client_->PutEntrypoint("http_ratelimit", {human}).status(), IsOk());

  absl::StatusOr<DriftReport> report = MakeReconciler(false)->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->orphans, 0);
  EXPECT_THAT(fake_.AccessRuleSnapshot(), SizeIs(1));
  EXPECT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(2));
  EXPECT_THAT(fake_.RulesetSnapshot("http_ratelimit")["rules"], SizeIs(1));
}

// Two palisaded on one zone (or one account), no cluster: each deleted the other's rules and
// items as orphans on every run, and applied its own again as missing: bans flapped for ever.
// With CloudflareConfig.instance, a reconciler takes as its own only the markers with its tag
// (none for an empty instance): another's, and the untagged ones, are kept.
TEST_F(ReconcilerTest, OnlyTheInstancesOwnTagIsAnOrphan) {
  absl::StatusOr<IpList> list = client_->CreateList("palisade_block", "shared");
  ASSERT_THAT(list.status(), IsOk());
  std::vector<ListItem> items;
  std::vector<RulesetRule> limits;
  const std::pair<const char*, const char*> tags[] = {{"a", "@a"}, {"b", "@b"}, {"c", ""}};
  int n = 0;
  for (const auto& [name, tag] : tags) {
    const std::string id = absl::StrCat("00000000000000", name, "1");
    const std::string mark = absl::StrCat("palisade:", id, tag);
    ++n;
    ASSERT_THAT(client_->CreateAccessRule(RuleScope::kZone, "block", "ip",
                                          absl::StrCat("203.0.113.", n), mark + " manual"),
                IsOk());
    items.push_back({"", absl::StrCat("198.51.100.", n), mark});
    RulesetRule rule;
    rule.ref = absl::StrCat("palisade_", id, *tag ? "_" : "", *tag ? tag + 1 : "");
    rule.expression = absl::StrCat("(http.request.uri.path eq \"/", name, "\")");
    rule.action = "block";
    rule.ratelimit = RateLimit();
    limits.push_back(rule);
  }
  absl::StatusOr<std::string> op = client_->AddListItems(list->id, items);
  ASSERT_THAT(op.status(), IsOk());
  ASSERT_THAT(client_->WaitForOperation(*op), IsOk());
  ASSERT_THAT(client_->PutEntrypoint("http_ratelimit", limits).status(), IsOk());

  absl::StatusOr<DriftReport> report = MakeReconciler(false, "a")->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->orphans, 3);  // one of each kind, tagged "a"
  auto notes = [&] {
    std::set<std::string> out;
    for (const fake::json& r : fake_.AccessRuleSnapshot()) out.insert(r.value("notes", ""));
    return out;
  };
  auto comments = [&] {
    std::set<std::string> out;
    for (const fake::json& i : fake_.ListSnapshot("palisade_block")) {
      out.insert(i.value("comment", ""));
    }
    return out;
  };
  auto refs = [&] {
    std::set<std::string> out;
    const fake::json rs = fake_.RulesetSnapshot("http_ratelimit");
    for (const fake::json& r : rs["rules"]) out.insert(r.value("ref", ""));
    return out;
  };
  using ::testing::UnorderedElementsAre;
  EXPECT_THAT(notes(), UnorderedElementsAre("palisade:00000000000000b1@b manual",
                                            "palisade:00000000000000c1 manual"));
  EXPECT_THAT(comments(),
              UnorderedElementsAre("palisade:00000000000000b1@b", "palisade:00000000000000c1"));
  EXPECT_THAT(refs(),
              UnorderedElementsAre("palisade_00000000000000b1_b", "palisade_00000000000000c1"));

  // Untagged (an empty instance): only the untagged markers are its own.
  report = MakeReconciler(false)->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->orphans, 3);
  EXPECT_THAT(notes(), UnorderedElementsAre("palisade:00000000000000b1@b manual"));
  EXPECT_THAT(comments(), UnorderedElementsAre("palisade:00000000000000b1@b"));
  EXPECT_THAT(refs(), UnorderedElementsAre("palisade_00000000000000b1_b"));
}

// A list item whose remove failed for good stays at the edge with its decision's edge record.
// The reconciler removes it as an orphan and forgets the record, and the item's count with it:
// a later decision on the same address is added again, not taken as already there.
TEST_F(ReconcilerTest, AnOrphanListItemIsForgottenWhenRemoved) {
  palisade::v1::Decision old = Ban("198.51.100.7", palisade::v1::ACTUATOR_IP_LIST);
  EXPECT_EQ(dispatcher_->RunOnce(), 1);
  ASSERT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(1));
  fake::Faults faults;
  // The remove's read of the items: a 400, which is not retried (a 403 would be: it refuses
  // palisaded's credentials, not the operation).
  faults.fail_call = 1;
  faults.error_status = 400;
  fake_.SetFaults(faults);
  ASSERT_THAT(table_.Withdraw(old.id()).status(), IsOk());
  EXPECT_EQ(dispatcher_->RunOnce(), 1);
  ASSERT_EQ(dispatcher_->pending(), 0u);
  ASSERT_EQ(dispatcher_->edges().count(old.id()), 1u);
  ASSERT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(1));

  absl::StatusOr<DriftReport> report = MakeReconciler(false)->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->orphans, 1);
  EXPECT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(0));
  EXPECT_EQ(dispatcher_->edges().count(old.id()), 0u);

  palisade::v1::Decision again = Ban("198.51.100.7", palisade::v1::ACTUATOR_IP_LIST);
  EXPECT_EQ(dispatcher_->RunOnce(), 1);
  EXPECT_THAT(fake_.ListSnapshot("palisade_block"), SizeIs(1));
  EXPECT_EQ(dispatcher_->edges().count(again.id()), 1u);
}

// The account's list items are gauged against its quota for an alert
// (PalisadeAccountListQuotaNearFull). The actuator reads the lists only when it must (its first
// flush, at its cap, a bulk add refused), so the gauge stood still for hours while another list
// of the account filled up; the reconciler reads them on every run, and now feeds that read to
// the actuator that owns the gauge (registry_, not the reconciler's): its later flushes count
// from the fresh read, not from its own stale one. An orphan it deletes is counted out.
TEST_F(ReconcilerTest, ARunRefreshesTheAccountsListItemsGauge) {
  auto gauge = [&](prometheus::Registry& registry) {
    for (const auto& family : registry.Collect()) {
      if (family.name != "palisade_cloudflare_account_list_items") continue;
      for (const auto& m : family.metric) return m.gauge.value;
    }
    return -1.0;
  };
  Ban("198.51.100.1", palisade::v1::ACTUATOR_IP_LIST);
  EXPECT_EQ(dispatcher_->RunOnce(), 1);
  ASSERT_EQ(gauge(registry_), 1);
  // Another list of the account fills up behind palisaded.
  absl::StatusOr<IpList> office = client_->CreateList("office", "the office's addresses");
  ASSERT_THAT(office, IsOk());
  absl::StatusOr<std::string> operation = client_->AddListItems(
      office->id, {{"", "192.0.2.1", ""}, {"", "192.0.2.2", ""}, {"", "192.0.2.3", ""}});
  ASSERT_THAT(operation, IsOk());
  ASSERT_THAT(client_->WaitForOperation(*operation), IsOk());
  // An item of Palisade's whose decision is gone: the run deletes it as an orphan.
  absl::StatusOr<std::vector<IpList>> lists = client_->ListLists();
  ASSERT_THAT(lists, IsOk());
  for (const IpList& l : *lists) {
    if (l.name != "palisade_block") continue;
    operation = client_->AddListItems(l.id, {{"", "198.51.100.9", "palisade:00000000000000e9"}});
    ASSERT_THAT(operation, IsOk());
    ASSERT_THAT(client_->WaitForOperation(*operation), IsOk());
  }
  EXPECT_EQ(gauge(registry_), 1);  // nothing read them yet

  absl::StatusOr<DriftReport> report = MakeReconciler(false)->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->orphans, 1);
  EXPECT_EQ(gauge(registry_), 4);  // 3 in the office list, Palisade's 1 (its orphan deleted)
  // The actuator counts on from that read: one more item is 5 (its own stale read said 2).
  Ban("198.51.100.2", palisade::v1::ACTUATOR_IP_LIST);
  EXPECT_EQ(dispatcher_->RunOnce(), 1);
  EXPECT_EQ(gauge(registry_), 5);
}

// A decision whose apply failed for good (a /20 access rule: kInvalidArgument) has no object at
// the edge, and never will: it is not missing. Applying it again on every run spent the guard's
// budget, counted drift and logged each time, forever.
TEST_F(ReconcilerTest, ADecisionWhoseApplyFailedForGoodIsNotMissing) {
  palisade::v1::Decision d = BanRange("198.51.96.0/20");
  EXPECT_EQ(dispatcher_->RunOnce(), 1);
  ASSERT_EQ(Actions("failed"), 1);
  std::unique_ptr<Reconciler> reconciler = MakeReconciler(false);
  for (int run = 1; run <= 2; ++run) {
    absl::StatusOr<DriftReport> report = reconciler->Run();
    ASSERT_THAT(report.status(), IsOk());
    EXPECT_EQ(report->missing, 0) << "run " << run;
    EXPECT_EQ(report->failed, 1) << "run " << run;
    EXPECT_EQ(dispatcher_->RunOnce(), 0) << "run " << run;  // nothing applied again
  }
  EXPECT_EQ(Actions("failed"), 1);
  EXPECT_THAT(fake_.AccessRuleSnapshot(), SizeIs(0));
  EXPECT_TRUE(table_.Get(d.id())->active());
}

// A 403 (a permission removed for a few minutes, an expired token, an IP filter) says nothing
// about the decision: it was remembered as "failed for good", durably, and the reconciler never
// applied the decision again, even once the permission was back. The apply is kept in the
// outbox instead, and goes out once the credentials work again.
TEST_F(ReconcilerTest, ADecisionRefusedForItsCredentialsIsAppliedOnceTheyWork) {
  palisade::v1::Decision d = Ban("203.0.113.7", palisade::v1::ACTUATOR_ACCESS_RULE);
  fake::Faults faults;
  faults.fail_call = 1;  // the apply's create: refused
  faults.error_status = 403;
  fake_.SetFaults(faults);
  EXPECT_EQ(dispatcher_->RunOnce(), 1);
  ASSERT_THAT(fake_.AccessRuleSnapshot(), SizeIs(0));
  fake_.SetFaults(fake::Faults());
  absl::StatusOr<DriftReport> report = MakeReconciler(false)->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->failed, 0);
  EXPECT_EQ(report->missing, 0);
  EXPECT_TRUE(dispatcher_->Busy(d.id()));  // still in the outbox: left to the dispatcher
  EXPECT_THAT(dispatcher_->FailedForGood(), ::testing::IsEmpty());
  clock_.Advance(absl::Minutes(5));
  dispatcher_->RunOnce();
  fake::json rules = fake_.AccessRuleSnapshot();
  ASSERT_THAT(rules, SizeIs(1));
  EXPECT_EQ(rules[0]["configuration"]["value"], "203.0.113.7");
  EXPECT_EQ(dispatcher_->edges().count(d.id()), 1u);
  EXPECT_EQ(dispatcher_->pending(), 0u);
}

// A plan's quota (20022: one rate limiting rule on Free) is not a throttle: it was retried as
// one (kResourceExhausted) for minutes, dropped, then applied again by every reconcile. It is
// about the decision (one too many for the plan): failed for good, once, and not missing.
TEST_F(ReconcilerTest, ARuleOverThePlansQuotaFailsForGoodOnce) {
  fake_.options().plan = "free";
  fake_.options().max_ratelimit_rules = 1;
  dispatcher_->AddActuator(palisade::v1::ACTUATOR_RATE_LIMIT,
                           std::make_unique<RateLimitActuator>(*client_, RateLimitOptions()));
  auto path = [&](const std::string& value) {
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_kind(palisade::v1::TARGET_KIND_PATH);
    req.mutable_target()->set_value(value);
    *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
    absl::StatusOr<palisade::v1::Decision> d = table_.AddManual(req);
    EXPECT_THAT(d.status(), IsOk());
    return d.ok() ? *d : palisade::v1::Decision();
  };
  path("/login");
  palisade::v1::Decision second = path("/wp-login.php");
  EXPECT_EQ(dispatcher_->RunOnce(), 2);
  EXPECT_EQ(Actions("applied"), 1);
  EXPECT_EQ(Actions("failed"), 1);
  EXPECT_EQ(Actions("retried"), 0);
  EXPECT_EQ(dispatcher_->FailedForGood().count(second.id()), 1u);
  std::unique_ptr<Reconciler> reconciler = MakeReconciler(false);
  for (int run = 1; run <= 2; ++run) {
    clock_.Advance(absl::Minutes(10));
    absl::StatusOr<DriftReport> report = reconciler->Run();
    ASSERT_THAT(report.status(), IsOk());
    EXPECT_EQ(report->failed, 1) << "run " << run;
    EXPECT_EQ(report->missing, 0) << "run " << run;
    EXPECT_EQ(dispatcher_->RunOnce(), 0) << "run " << run;
  }
  EXPECT_EQ(Actions("failed"), 1);
}

// A rate-limit rule made before cloudflare.instance was set carries the untagged ref: the
// reconciler finds it by the id recorded when it was made, not as missing. Before, it made a
// second rule and the first outlived the decision (found by a review).
TEST_F(ReconcilerTest, ARateLimitRuleMadeBeforeTheInstanceTagIsFoundByItsRecordedId) {
  dispatcher_->AddActuator(palisade::v1::ACTUATOR_RATE_LIMIT,
                           std::make_unique<RateLimitActuator>(*client_, RateLimitOptions()));
  palisade::v1::AddDecisionRequest req;
  req.mutable_target()->set_kind(palisade::v1::TARGET_KIND_PATH);
  req.mutable_target()->set_value("/login");
  *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
  absl::StatusOr<palisade::v1::Decision> d = table_.AddManual(req);
  ASSERT_THAT(d.status(), IsOk());
  EXPECT_EQ(dispatcher_->RunOnce(), 1);
  EXPECT_EQ(Actions("applied"), 1);
  absl::StatusOr<DriftReport> report = MakeReconciler(false, "a")->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->missing, 0);
  EXPECT_EQ(report->orphans, 0);
  EXPECT_EQ(dispatcher_->RunOnce(), 0);  // nothing re-applied
  absl::StatusOr<Ruleset> rs = client_->GetEntrypoint("http_ratelimit");
  ASSERT_THAT(rs.status(), IsOk());
  EXPECT_EQ(rs->rules.size(), 1u);
}

// Two palisaded instances on one zone, each with its own list: each keeps its own blocking rule
// (a ref per instance). Before, both rewrote the one "palisade_blocklist" rule to their own
// list at each reconcile, and the other list blocked nothing meanwhile.
TEST_F(ReconcilerTest, TwoInstancesOnOneZoneKeepTheirOwnBlockingRules) {
  IpListOptions a, b;
  a.instance = "a";
  a.list_name = "block_a";
  b.instance = "b";
  b.list_name = "block_b";
  prometheus::Registry ra, rb;
  IpListActuator list_a(*client_, a, ra), list_b(*client_, b, rb);
  for (IpListActuator* list : {&list_a, &list_b}) {
    ActionOp op;
    op.kind = ActionOp::Kind::kApply;
    op.decision.set_id(list == &list_a ? "00000000000000a1" : "00000000000000b1");
    op.decision.mutable_target()->set_kind(palisade::v1::TARGET_KIND_IP);
    op.decision.mutable_target()->set_value(list == &list_a ? "203.0.113.1" : "203.0.113.2");
    std::vector<ActionOp*> ops = {&op};
    list->Run(ops);
    ASSERT_THAT(op.result, IsOk());
  }
  // Each put its rule in once: a second pass repairs nothing.
  EXPECT_THAT(list_a.EnsureRule(), IsOkAndHolds(false));
  EXPECT_THAT(list_b.EnsureRule(), IsOkAndHolds(false));
  absl::StatusOr<Ruleset> rs = client_->GetEntrypoint("http_request_firewall_custom");
  ASSERT_THAT(rs.status(), IsOk());
  std::set<std::string> expressions;
  for (const RulesetRule& r : rs->rules) {
    if (r.enabled) expressions.insert(r.expression);
  }
  EXPECT_EQ(expressions, (std::set<std::string>{"ip.src in $block_a", "ip.src in $block_b"}));
}

// Under the "withdraw" policy, such a decision is not withdrawn as missing either: it stays, as
// the record of what was decided.
TEST_F(ReconcilerTest, ADecisionWhoseApplyFailedForGoodIsNotWithdrawn) {
  palisade::v1::Decision d = BanRange("198.51.96.0/20");
  EXPECT_EQ(dispatcher_->RunOnce(), 1);
  absl::StatusOr<DriftReport> report = MakeReconciler(true)->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->missing, 0);
  EXPECT_TRUE(table_.Get(d.id())->active());
}

// A decision that changed since its apply failed (extended by a new ban) is tried once more.
TEST_F(ReconcilerTest, AnExtendedDecisionIsTriedOnceMore) {
  palisade::v1::Decision d = BanRange("198.51.96.0/20");
  EXPECT_EQ(dispatcher_->RunOnce(), 1);
  clock_.Advance(absl::Minutes(1));
  palisade::v1::Decision extended = BanRange("198.51.96.0/20");
  ASSERT_EQ(extended.id(), d.id());
  std::unique_ptr<Reconciler> reconciler = MakeReconciler(false);
  absl::StatusOr<DriftReport> report = reconciler->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->missing, 1);
  EXPECT_EQ(dispatcher_->RunOnce(), 1);
  EXPECT_EQ(Actions("failed"), 2);
  report = reconciler->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->missing, 0);
  EXPECT_EQ(dispatcher_->RunOnce(), 0);
}

// The custom rule that blocks the IP list, as the emulator has it ("" when it is not there):
// "enabled" or "disabled".
std::string BlocklistRule(fake::FakeCloudflare& cf) {
  fake::json rs = cf.RulesetSnapshot("http_request_firewall_custom");
  if (rs.is_null()) return "";
  for (const fake::json& r : rs["rules"]) {
    if (r.value("ref", "") != "palisade_blocklist") continue;
    if (r.value("expression", "") != "ip.src in $palisade_block") return "changed";
    return r.value("enabled", true) ? "enabled" : "disabled";
  }
  return "";
}

// The list items block nothing without the custom rule: deleted by hand, it is drift, and it
// is put back (the IP-list actuator made it once, and would not look again until a restart).
TEST_F(ReconcilerTest, ADeletedBlocklistRuleIsPutBack) {
  Ban("198.51.100.7", palisade::v1::ACTUATOR_IP_LIST);
  EXPECT_EQ(dispatcher_->RunOnce(), 1);
  ASSERT_EQ(BlocklistRule(fake_), "enabled");
  absl::StatusOr<Ruleset> rs = client_->GetEntrypoint("http_request_firewall_custom");
  ASSERT_THAT(rs.status(), IsOk());
  ASSERT_THAT(rs->rules, SizeIs(1));
  ASSERT_THAT(client_->DeleteRulesetRule(rs->id, rs->rules[0].id).status(), IsOk());
  ASSERT_EQ(BlocklistRule(fake_), "");

  absl::StatusOr<DriftReport> report = MakeReconciler(false)->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->missing, 1);
  EXPECT_EQ(BlocklistRule(fake_), "enabled");
  // Put back once: the next run finds nothing to do.
  report = MakeReconciler(false)->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->missing, 0);
}

// The same for the rule disabled, or its expression changed, by hand.
TEST_F(ReconcilerTest, ADisabledOrChangedBlocklistRuleIsPutRight) {
  Ban("198.51.100.7", palisade::v1::ACTUATOR_IP_LIST);
  EXPECT_EQ(dispatcher_->RunOnce(), 1);
  absl::StatusOr<Ruleset> rs = client_->GetEntrypoint("http_request_firewall_custom");
  ASSERT_THAT(rs.status(), IsOk());
  ASSERT_THAT(rs->rules, SizeIs(1));
  RulesetRule rule = rs->rules[0];
  rule.enabled = false;
  ASSERT_THAT(client_->PutEntrypoint("http_request_firewall_custom", {rule}).status(), IsOk());
  ASSERT_EQ(BlocklistRule(fake_), "disabled");
  absl::StatusOr<DriftReport> report = MakeReconciler(false)->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->missing, 1);
  EXPECT_EQ(BlocklistRule(fake_), "enabled");

  rule.enabled = true;
  rule.expression = "ip.src in $palisade_block and http.host eq \"nowhere.example\"";
  ASSERT_THAT(client_->PutEntrypoint("http_request_firewall_custom", {rule}).status(), IsOk());
  ASSERT_EQ(BlocklistRule(fake_), "changed");
  report = MakeReconciler(false)->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->missing, 1);
  EXPECT_EQ(BlocklistRule(fake_), "enabled");
}

// "Firewall Services Write" removed from the token while palisaded runs: the access rules'
// read is refused (403) on every run. It stopped the run there, and the checks after it never
// ran: a deleted blocklist rule was never put back. Every enabled check runs; the run still
// fails, naming the refused kind.
TEST_F(ReconcilerTest, ARefusedCheckDoesNotStopTheOthers) {
  Ban("198.51.100.7", palisade::v1::ACTUATOR_IP_LIST);
  EXPECT_EQ(dispatcher_->RunOnce(), 1);
  ASSERT_EQ(BlocklistRule(fake_), "enabled");
  absl::StatusOr<Ruleset> rs = client_->GetEntrypoint("http_request_firewall_custom");
  ASSERT_THAT(rs.status(), IsOk());
  ASSERT_THAT(rs->rules, SizeIs(1));
  ASSERT_THAT(client_->DeleteRulesetRule(rs->id, rs->rules[0].id).status(), IsOk());
  ASSERT_EQ(BlocklistRule(fake_), "");

  fake::TokenSpec spec;
  spec.permissions = {"lists", "rulesets"};
  std::unique_ptr<CloudflareClient> client =
      MakeClient(fake_.AddToken(spec).second, other_client_registry_);
  ReconcilerOptions options;
  options.access_rules = true;
  Reconciler reconciler(*client, *dispatcher_, table_, options, reconciler_registry_);
  absl::StatusOr<DriftReport> report = reconciler.Run();
  EXPECT_THAT(report.status(),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("access_rule: ")));
  EXPECT_EQ(BlocklistRule(fake_), "enabled");
  EXPECT_EQ(::palisade::testing::CounterSum(reconciler_registry_, "palisade_reconcile_errors_total",
                                            {{"actuator", "access_rule"}}),
            1);
  EXPECT_EQ(::palisade::testing::CounterSum(reconciler_registry_, "palisade_reconcile_errors_total",
                                            {{"actuator", "ip_list"}}),
            0);
  EXPECT_EQ(::palisade::testing::CounterSum(reconciler_registry_, "palisade_reconcile_runs_total",
                                            {{"result", "error"}}),
            1);
}

// A decision that adopted (10009) a human's rule holds no rule of its own: when the human
// deletes theirs, the decision is enforced nowhere. The reconciler looks for the adopted rule
// by its id, and applies the decision again when it is gone.
TEST_F(ReconcilerTest, AnAdoptedHumanRuleDeletedIsMissing) {
  absl::StatusOr<AccessRule> human =
      client_->CreateAccessRule(RuleScope::kZone, "block", "ip", "203.0.113.9", "added by a human");
  ASSERT_THAT(human.status(), IsOk());
  palisade::v1::Decision d = Ban("203.0.113.9", palisade::v1::ACTUATOR_ACCESS_RULE);
  EXPECT_EQ(dispatcher_->RunOnce(), 1);
  ASSERT_TRUE(dispatcher_->edges().at(d.id()).foreign);
  std::unique_ptr<Reconciler> reconciler = MakeReconciler(false);
  // Still there: nothing to do, and the human's rule is left alone.
  absl::StatusOr<DriftReport> report = reconciler->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->missing, 0);
  EXPECT_EQ(report->orphans, 0);
  EXPECT_EQ(dispatcher_->RunOnce(), 0);

  ASSERT_THAT(client_->DeleteAccessRule(RuleScope::kZone, human->id), IsOk());
  report = reconciler->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->missing, 1);
  EXPECT_EQ(dispatcher_->RunOnce(), 1);
  fake::json rules = fake_.AccessRuleSnapshot();
  ASSERT_THAT(rules, SizeIs(1));
  EXPECT_EQ(rules[0]["configuration"]["value"], "203.0.113.9");
  EXPECT_TRUE(absl::StartsWith(rules[0].value("notes", ""), "palisade:" + d.id()));
  EXPECT_FALSE(dispatcher_->edges().at(d.id()).foreign);
  // Put back once: the next run finds nothing to do.
  report = reconciler->Run();
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_EQ(report->missing, 0);
}

}  // namespace
}  // namespace palisade
