// The client against the emulator over real HTTP on loopback. Client and emulator share one
// SimulatedClock: the client's backoff "sleeps" move it, so nothing here sleeps.
#include "services/cloudflare/client.h"

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/cloudflare/scripted_transport_for_tests.h"
#include "services/common/status_matchers.h"
#include "tests/cloudflare_fake/emulator_server.h"
#include "tests/cloudflare_fake/fake_cloudflare.h"

namespace palisade {
namespace {

using ::palisade::testing::IsOk;
using ::palisade::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;

double Count(prometheus::Registry& registry, const std::string& name) {
  double total = 0;
  for (const auto& f : registry.Collect()) {
    if (f.name != name) continue;
    for (const auto& m : f.metric) total += m.counter.value;
  }
  return total;
}

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake::TokenSpec spec;
    // Zone and account access rules both: each scope's group.
    spec.permissions = {"firewall_services", "access_rules", "lists",
                        "rulesets",          "tokens",       "audit_logs"};
    token_ = fake_.AddToken(spec).second;
    ASSERT_THAT(server_.Start(), IsOk());
  }

  std::unique_ptr<CloudflareClient> Client(const std::string& token,
                                           ClientOptions options = ClientOptions()) {
    options.base_url = server_.base_url();
    options.account_id = fake_.options().account_id;
    options.zone_id = fake_.options().zone_id;
    options.poll_interval = absl::Milliseconds(100);
    Credentials creds;
    creds.token = Secret(token);
    return std::make_unique<CloudflareClient>(transport_, clock_, options, creds, registry_);
  }

  SimulatedClock clock_;
  fake::FakeCloudflare fake_{clock_};
  fake::EmulatorServer server_{fake_};
  CurlTransport transport_;
  prometheus::Registry registry_;
  std::string token_;
};

TEST_F(ClientTest, VerifiesItsTokenAndRefusesABadOne) {
  absl::StatusOr<TokenInfo> info = Client(token_)->VerifyToken();
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->status, "active");
  EXPECT_EQ(info->id.size(), 32u);

  const std::string bad = "notarealtoken0123456789abcdefghijklmnopq";
  absl::StatusOr<TokenInfo> refused = Client(bad)->VerifyToken();
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("code 1000")));
  EXPECT_THAT(refused.status().message(), Not(HasSubstr(bad)));
}

TEST_F(ClientTest, AccessRulesAcrossSeveralPages) {
  auto client = Client(token_);
  for (int i = 0; i < 230; ++i) {
    ASSERT_THAT(client->CreateAccessRule(RuleScope::kZone, "block", "ip",
                                         absl::StrCat("198.51.", i / 200, ".", i % 200 + 1),
                                         absl::StrCat("palisade:", i, ";")),
                IsOk());
  }
  absl::StatusOr<std::vector<AccessRule>> all = client->ListAllAccessRules(RuleScope::kZone, {});
  ASSERT_THAT(all, IsOk());
  EXPECT_THAT(*all, SizeIs(230));
  EXPECT_THAT(client->CreateAccessRule(RuleScope::kZone, "block", "ip", "198.51.0.1", "again"),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("10009")));
  AccessRuleFilter f;
  f.notes = "palisade:17;";
  absl::StatusOr<std::vector<AccessRule>> found = client->ListAllAccessRules(RuleScope::kZone, f);
  ASSERT_THAT(found, IsOk());
  ASSERT_THAT(*found, SizeIs(1));
  EXPECT_THAT(client->DeleteAccessRule(RuleScope::kZone, (*found)[0].id), IsOk());
  EXPECT_THAT(client->DeleteAccessRule(RuleScope::kZone, (*found)[0].id),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_GE(Count(registry_, "palisade_cloudflare_requests_total"), 235);
}

TEST_F(ClientTest, PermissionDenied) {
  fake::TokenSpec spec;
  spec.permissions = {"lists"};
  auto client = Client(fake_.AddToken(spec).second);
  EXPECT_THAT(client->CreateAccessRule(RuleScope::kZone, "block", "ip", "203.0.113.1", "n"),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("10000")));
}

// The server's "Ratelimit: r=0;t=N" header makes the client wait before it is refused.
TEST_F(ClientTest, HonoursTheRateLimitHeaderBeforeA429) {
  fake_.options().rate_limit_requests = 3;
  fake_.options().rate_limit_window = absl::Seconds(20);
  auto client = Client(token_);
  const absl::Time start = clock_.TimeNow();
  for (int i = 0; i < 5; ++i) ASSERT_THAT(client->VerifyToken(), IsOk()) << i;
  EXPECT_GE(clock_.TimeNow() - start, absl::Seconds(20));
  for (const auto& f : registry_.Collect()) {
    if (f.name != "palisade_cloudflare_requests_total") continue;
    for (const auto& m : f.metric) {
      for (const auto& l : m.label) EXPECT_FALSE(l.name == "code" && l.value == "429");
    }
  }
}

TEST_F(ClientTest, RetriesA429AfterRetryAfter) {
  fake::Faults f;
  f.fail_call = 1;
  f.error_status = 429;
  fake_.SetFaults(f);
  auto client = Client(token_);
  const absl::Time start = clock_.TimeNow();
  ASSERT_THAT(client->VerifyToken(), IsOk());
  EXPECT_GE(clock_.TimeNow() - start, absl::Seconds(2));  // Retry-After: 2
  EXPECT_EQ(Count(registry_, "palisade_cloudflare_retries_total"), 1);
}

TEST_F(ClientTest, RetriesServerErrorsAndDroppedConnectionsThenGivesUp) {
  fake::Faults f;
  f.fail_call = 1;
  fake_.SetFaults(f);
  auto client = Client(token_);
  EXPECT_THAT(client->VerifyToken(), IsOk());
  EXPECT_EQ(Count(registry_, "palisade_cloudflare_retries_total"), 1);

  f = fake::Faults();
  f.drop_rate = 1.0;
  fake_.SetFaults(f);
  ClientOptions options;
  options.max_attempts = 3;
  EXPECT_THAT(Client(token_, options)->VerifyToken(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("transport")));
  f = fake::Faults();
  f.error_rate = 1.0;
  fake_.SetFaults(f);
  EXPECT_THAT(Client(token_, options)->VerifyToken(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("HTTP 503")));
}

TEST_F(ClientTest, ClientBudgetRefusesInsteadOfFlooding) {
  ClientOptions options;
  options.budget_requests = 2;
  options.budget_window = absl::Seconds(300);
  auto client = Client(token_, options);
  const int64_t before = fake_.calls();
  EXPECT_THAT(client->VerifyToken(), IsOk());
  EXPECT_THAT(client->VerifyToken(), IsOk());
  absl::StatusOr<TokenInfo> third = client->VerifyToken();
  EXPECT_THAT(third, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("budget")));
  ASSERT_TRUE(RetryDelay(third.status()).has_value());
  EXPECT_GT(*RetryDelay(third.status()), absl::Seconds(200));
  EXPECT_EQ(fake_.calls() - before, 2);
}

TEST_F(ClientTest, ListsWithOperationsAndCursorPages) {
  auto client = Client(token_);
  absl::StatusOr<IpList> list = client->CreateList("palisade_block", "test");
  ASSERT_THAT(list, IsOk());
  std::vector<ListItem> items;
  for (int i = 0; i < 600; ++i) {
    items.push_back({"", absl::StrCat("10.", i / 256, ".", i % 256, ".1"), "c"});
  }
  absl::StatusOr<std::string> op = client->AddListItems(list->id, items);
  ASSERT_THAT(op, IsOk());
  EXPECT_THAT(client->WaitForOperation(*op), IsOk());
  absl::StatusOr<std::vector<ListItem>> all = client->ListAllItems(list->id);
  ASSERT_THAT(all, IsOk());
  ASSERT_THAT(*all, SizeIs(600));
  absl::StatusOr<std::string> del = client->DeleteListItems(list->id, {(*all)[0].id, (*all)[1].id});
  ASSERT_THAT(del, IsOk());
  EXPECT_THAT(client->WaitForOperation(*del), IsOk());
  EXPECT_THAT(*client->ListAllItems(list->id), SizeIs(598));
  absl::StatusOr<std::vector<IpList>> lists = client->ListLists();
  ASSERT_THAT(lists, IsOk());
  EXPECT_EQ((*lists)[0].num_items, 598);
  absl::StatusOr<IpList> one = client->GetList(list->id);
  ASSERT_THAT(one, IsOk());
  EXPECT_EQ(one->name, "palisade_block");
  EXPECT_EQ(one->num_items, 598);
  EXPECT_THAT(client->GetList("00000000000000000000000000000000"),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(ClientTest, FailedOperationIsAborted) {
  fake_.options().max_list_items = 1;
  auto client = Client(token_);
  absl::StatusOr<IpList> list = client->CreateList("l", "");
  ASSERT_THAT(list, IsOk());
  absl::StatusOr<std::string> op =
      client->AddListItems(list->id, {{"", "10.0.0.1", ""}, {"", "10.0.0.2", ""}});
  ASSERT_THAT(op, IsOk());
  EXPECT_THAT(client->WaitForOperation(*op),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("maximum number")));
}

TEST_F(ClientTest, RateLimitRulesOnTheEntrypoint) {
  auto client = Client(token_);
  EXPECT_THAT(client->GetEntrypoint("http_ratelimit"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("10003")));
  RulesetRule rule;
  rule.ref = "palisade_login";
  rule.action = "block";
  rule.expression = "(http.request.uri.path eq \"/login\")";
  rule.ratelimit = RateLimit();
  absl::StatusOr<Ruleset> rs = client->PutEntrypoint("http_ratelimit", {rule});
  ASSERT_THAT(rs, IsOk());
  ASSERT_THAT(rs->rules, SizeIs(1));
  rule.ref = "palisade_api";
  absl::StatusOr<Ruleset> added = client->AddRulesetRule(rs->id, rule);
  ASSERT_THAT(added, IsOk());
  EXPECT_EQ(added->version, "2");
  absl::StatusOr<Ruleset> removed = client->DeleteRulesetRule(rs->id, added->rules[0].id);
  ASSERT_THAT(removed, IsOk());
  EXPECT_THAT(removed->rules, SizeIs(1));
  rule.ratelimit->period = 7;
  EXPECT_THAT(client->AddRulesetRule(rs->id, rule),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("/ratelimit/period")));
}

TEST_F(ClientTest, LeakedTokenIsVerifiedThenDisabledAndDeleted) {
  fake::TokenSpec spec;
  spec.name = "ci-deploy";
  spec.permissions = {"lists"};
  auto [id, leaked] = fake_.AddToken(spec);
  auto client = Client(token_);
  absl::StatusOr<TokenInfo> info = client->VerifyOtherToken(Secret(leaked), false);
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->id, id);
  absl::StatusOr<TokenInfo> disabled = client->DisableToken(id, false);
  ASSERT_THAT(disabled, IsOk());
  EXPECT_EQ(disabled->status, "disabled");
  EXPECT_EQ(disabled->name, "ci-deploy");
  EXPECT_THAT(client->VerifyOtherToken(Secret(leaked), false),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(client->DeleteToken(id, false), IsOk());
  EXPECT_THAT(client->GetToken(id, false), StatusIs(absl::StatusCode::kNotFound));
}

// Audit logs v2: the only version whose records name the token a call was made with.
TEST_F(ClientTest, AuditLogsV2AreCursorPagedAndNameTheToken) {
  auto client = Client(token_);
  const std::string own_id = client->VerifyToken()->id;
  const absl::Time since = clock_.TimeNow();
  clock_.Advance(absl::Seconds(1));
  for (int i = 0; i < 3; ++i) {
    ASSERT_THAT(client->CreateAccessRule(RuleScope::kAccount, "challenge", "ip",
                                         absl::StrCat("203.0.113.", i + 1), ""),
                IsOk());
  }
  const absl::Time before = clock_.TimeNow() + absl::Seconds(1);
  absl::StatusOr<AuditLogPage> page = client->ListAuditLogs(since, before, "", 2);
  ASSERT_THAT(page, IsOk());
  ASSERT_THAT(page->items, SizeIs(2));
  EXPECT_FALSE(page->cursor.empty());
  EXPECT_EQ(page->items[0].action_type, "create");
  EXPECT_EQ(page->items[0].resource_type, "firewall.access_rule");
  EXPECT_EQ(page->items[0].actor_ip, "127.0.0.1");
  EXPECT_EQ(page->items[0].actor_token_id, own_id);
  EXPECT_GE(page->items[0].when, since);
  absl::StatusOr<AuditLogPage> next = client->ListAuditLogs(since, before, page->cursor, 2);
  ASSERT_THAT(next, IsOk());
  EXPECT_THAT(next->items, SizeIs(1));
  EXPECT_TRUE(next->cursor.empty());
  // The API filters by whole days; the client keeps only the interval asked for.
  absl::StatusOr<AuditLogPage> none = client->ListAuditLogs(before, before + absl::Seconds(1));
  ASSERT_THAT(none, IsOk());
  EXPECT_THAT(none->items, SizeIs(0));
}

// Newest first, the listing ends at the first record older than `since`: a caller reading back
// to its position does not page through the rest of the day.
TEST_F(ClientTest, AuditLogsNewestFirstEndAtTheFirstRecordBeforeSince) {
  auto client = Client(token_);
  for (int i = 0; i < 6; ++i) {  // the API has three pages of two
    ASSERT_THAT(client->CreateAccessRule(RuleScope::kAccount, "challenge", "ip",
                                         absl::StrCat("203.0.113.", i + 1), ""),
                IsOk());
    clock_.Advance(absl::Seconds(10));
  }
  const absl::Time since = clock_.TimeNow() - absl::Seconds(25);  // the newest two
  const absl::Time before = clock_.TimeNow();
  absl::StatusOr<AuditLogPage> page = client->ListAuditLogs(
      since, before, "", 2, CloudflareClient::AuditOrder::kNewestFirst);
  ASSERT_THAT(page, IsOk());
  ASSERT_THAT(page->items, SizeIs(2));
  EXPECT_GT(page->items[0].when, page->items[1].when);
  EXPECT_FALSE(page->cursor.empty());  // a full page: the next may still hold some
  absl::StatusOr<AuditLogPage> next = client->ListAuditLogs(
      since, before, page->cursor, 2, CloudflareClient::AuditOrder::kNewestFirst);
  ASSERT_THAT(next, IsOk());
  EXPECT_THAT(next->items, SizeIs(0));
  EXPECT_TRUE(next->cursor.empty());  // its first record is older than since: the end, though
                                      // the API has a third page
}

RulesetRule LoginLimit(const std::string& ref) {
  RulesetRule rule;
  rule.ref = ref;
  rule.action = "block";
  rule.expression = "(http.request.uri.path eq \"/login\")";
  rule.ratelimit = RateLimit();
  return rule;
}

// A POST that a repeat would apply twice is not sent again once its answer is lost: the
// emulator makes the change, then drops the connection. It was retried: a second rate-limiting
// rule with the same ref (a plan's quota spent on it), and a list create refused as a
// duplicate (kInvalidArgument: the apply failed for good while the list was there).
TEST_F(ClientTest, ANonIdempotentPostWhoseAnswerIsLostIsNotRepeated) {
  auto client = Client(token_);
  absl::StatusOr<Ruleset> rs = client->PutEntrypoint("http_ratelimit", {LoginLimit("login")});
  ASSERT_THAT(rs, IsOk());
  fake::Faults f;
  f.drop_after_apply = 1;
  f.drop_after_apply_method = "POST";
  fake_.SetFaults(f);
  int64_t before = fake_.calls();
  EXPECT_THAT(client->AddRulesetRule(rs->id, LoginLimit("palisade_d1")),
              StatusIs(absl::StatusCode::kUnknown,
                       AllOf(HasSubstr("POST rulesets/rules/add"), HasSubstr("outcome unknown"))));
  EXPECT_EQ(fake_.calls() - before, 1);
  absl::StatusOr<Ruleset> now = client->GetEntrypoint("http_ratelimit");
  ASSERT_THAT(now, IsOk());
  EXPECT_EQ(std::count_if(now->rules.begin(), now->rules.end(),
                          [](const RulesetRule& r) { return r.ref == "palisade_d1"; }),
            1);

  fake_.SetFaults(f);
  before = fake_.calls();
  EXPECT_THAT(client->CreateList("palisade_block", ""),
              StatusIs(absl::StatusCode::kUnknown,
                       AllOf(HasSubstr("POST lists/create"), HasSubstr("outcome unknown"))));
  EXPECT_EQ(fake_.calls() - before, 1);
  absl::StatusOr<std::vector<IpList>> lists = client->ListLists();
  ASSERT_THAT(lists, IsOk());
  ASSERT_THAT(*lists, SizeIs(1));
  EXPECT_EQ((*lists)[0].name, "palisade_block");
  EXPECT_EQ(Count(registry_, "palisade_cloudflare_outcome_unknown_total"), 2);
}

// A call whose repeat changes nothing more is still retried after a lost answer: a PUT, a POST
// of list items (an upsert), an access rule (a repeat is refused as a duplicate, 10009, which
// the actuator adopts).
TEST_F(ClientTest, ARepeatableCallIsRetriedAfterItsAnswerIsLost) {
  auto client = Client(token_);
  fake::Faults f;
  f.drop_after_apply = 1;
  f.drop_after_apply_method = "PUT";
  fake_.SetFaults(f);
  absl::StatusOr<Ruleset> rs = client->PutEntrypoint("http_ratelimit", {LoginLimit("login")});
  ASSERT_THAT(rs, IsOk());
  EXPECT_THAT(rs->rules, SizeIs(1));

  absl::StatusOr<IpList> list = client->CreateList("palisade_block", "");
  ASSERT_THAT(list, IsOk());
  f.drop_after_apply_method = "POST";
  fake_.SetFaults(f);
  absl::StatusOr<std::string> op = client->AddListItems(list->id, {{"", "192.0.2.1", "c"}});
  ASSERT_THAT(op, IsOk());
  EXPECT_THAT(client->WaitForOperation(*op), IsOk());
  EXPECT_THAT(*client->ListAllItems(list->id), SizeIs(1));

  fake_.SetFaults(f);
  EXPECT_THAT(client->CreateAccessRule(RuleScope::kZone, "block", "ip", "203.0.113.7", "n"),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("10009")));
  EXPECT_THAT(fake_.AccessRuleSnapshot(), SizeIs(1));
  EXPECT_EQ(Count(registry_, "palisade_cloudflare_retries_total"), 3);
  EXPECT_EQ(Count(registry_, "palisade_cloudflare_outcome_unknown_total"), 0);
}

// A connection that was never made sent nothing: a POST that could not connect is retried.
TEST_F(ClientTest, APostThatCouldNotConnectIsRetried) {
  server_.Stop();  // nothing listens on its port now
  ClientOptions options;
  options.max_attempts = 3;
  auto client = Client(token_, options);
  EXPECT_THAT(client->CreateList("palisade_block", ""),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("transport")));
  EXPECT_EQ(Count(registry_, "palisade_cloudflare_retries_total"), 2);
  EXPECT_EQ(Count(registry_, "palisade_cloudflare_outcome_unknown_total"), 0);
}

// HTTP status first, then the code: 10006 on a 400 is a bad request, not "not found".
using ::palisade::testing::ScriptedTransport;

// Newest first, the first record older than `since` ends the listing; one whose time is missing
// or unreadable is skipped instead (it ended the poll, and every older record was lost).
TEST(ClientErrorTest, AnAuditRecordWithoutATimeDoesNotEndANewestFirstListing) {
  SimulatedClock clock;
  prometheus::Registry registry;
  Credentials creds;
  creds.token = Secret("cfut_0123456789abcdefghijABCDEFGHIJ0123456789");
  ScriptedTransport transport(
      200, R"({"success":true,"errors":[],"messages":[],"result":[)"
           R"({"id":"c","action":{"time":"2026-03-03T14:03:00Z"}},)"
           R"({"id":"x","action":{"time":"yesterday"}},)"
           R"({"id":"y","action":{}},)"
           R"({"id":"a","action":{"time":"2026-03-03T14:01:00Z"}}],)"
           R"("result_info":{"cursor":"next"}})");
  ClientOptions options;
  options.account_id = "0123456789abcdef0123456789abcdef";
  CloudflareClient client(transport, clock, options, creds, registry);
  absl::StatusOr<AuditLogPage> page = client.ListAuditLogs(
      absl::FromUnixSeconds(1772546400), absl::FromUnixSeconds(1772550000), "", 4,
      CloudflareClient::AuditOrder::kNewestFirst);  // 14:00 .. 15:00
  ASSERT_THAT(page, IsOk());
  std::vector<std::string> ids;
  for (const AuditLogEntry& e : page->items) ids.push_back(e.id);
  EXPECT_THAT(ids, ::testing::ElementsAre("c", "a"));
  EXPECT_EQ(page->cursor, "next");
}

TEST(ClientErrorTest, DecidedByHttpStatusFirst) {
  SimulatedClock clock;
  prometheus::Registry registry;
  Credentials creds;
  creds.token = Secret("cfut_0123456789abcdefghijABCDEFGHIJ0123456789");
  auto error = [&](int status, int code, const std::string& message) {
    ScriptedTransport transport(
        status, absl::StrCat(R"({"success":false,"result":null,"messages":[],"errors":[{"code":)",
                             code, R"(,"message":")", message, R"("}]})"));
    CloudflareClient client(transport, clock, ClientOptions(), creds, registry);
    return client.DeleteAccessRule(RuleScope::kZone, "0123456789abcdef0123456789abcdef");
  };
  for (int code : {10001, 10003, 10004, 10006}) {
    EXPECT_THAT(error(400, code, "missing or malformed URL parameter"),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << code;
    EXPECT_THAT(error(404, code, "not found"), StatusIs(absl::StatusCode::kNotFound)) << code;
  }
  EXPECT_THAT(error(400, 10009, "duplicate"), StatusIs(absl::StatusCode::kAlreadyExists));
  // A plan's quota is not a throttle (kResourceExhausted is retried as one).
  for (int code : {10024, 10012, 20022, 1002}) {
    EXPECT_THAT(error(400, code, "exceeded"),
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("quota")))
        << code;
  }
  EXPECT_THAT(error(403, 10000, "Authentication error"),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(error(403, 9109, "Invalid access token"),
              StatusIs(absl::StatusCode::kUnauthenticated));
  absl::Status located = error(403, 9109, "Cannot use the access token from location: 192.0.2.1");
  EXPECT_THAT(located, StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_TRUE(IsIpRestricted(located));
  EXPECT_EQ(CloudflareErrorCode(located), 9109);
  EXPECT_FALSE(IsIpRestricted(error(403, 10000, "Authentication error")));
  // A request timeout and a conflict are worth another try, as cloudflare-go v6 has it: they
  // were kInvalidArgument, and an apply that met one failed for good.
  EXPECT_THAT(error(408, 0, "Request Timeout"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(error(409, 10013, "Conflict"), StatusIs(absl::StatusCode::kUnavailable));
}

// Replies in order (the last one again once they run out); counts the calls.
class SequenceTransport final : public HttpTransport {
 public:
  struct Reply {
    int status;
    std::map<std::string, std::string> headers;
    std::string body;
    bool never_sent = false;  // status 0: a failure the transport marks as never sent
  };
  explicit SequenceTransport(std::vector<Reply> replies) : replies_(std::move(replies)) {}
  absl::StatusOr<HttpResponse> Send(const HttpRequest&) override {
    const Reply& next = replies_[std::min<size_t>(calls++, replies_.size() - 1)];
    if (next.status == 0) {
      absl::Status failed = absl::UnavailableError("HTTP transport: " + next.body);
      return next.never_sent ? MarkTransportNeverSent(failed) : failed;
    }
    HttpResponse r;
    r.status = next.status;
    r.headers = next.headers;
    r.body = next.body;
    return r;
  }
  size_t calls = 0;

 private:
  std::vector<Reply> replies_;
};

constexpr char kFailed[] =
    R"({"success":false,"result":null,"errors":[{"code":10000,"message":"x"}]})";
constexpr char kNoLists[] = R"({"success":true,"result":[]})";

// "x-should-retry: true|false" decides over the status, as in cloudflare-go v6: a 400 the API
// says to retry is retried, a 503 it says not to is not.
TEST(ClientErrorTest, TheShouldRetryHeaderDecides) {
  SimulatedClock clock;
  prometheus::Registry registry;
  Credentials creds;
  creds.token = Secret("cfut_0123456789abcdefghijABCDEFGHIJ0123456789");
  SequenceTransport retry({{400, {{"x-should-retry", "true"}}, kFailed}, {200, {}, kNoLists}});
  CloudflareClient retrying(retry, clock, ClientOptions(), creds, registry);
  EXPECT_THAT(retrying.ListLists(), IsOk());
  EXPECT_EQ(retry.calls, 2u);

  SequenceTransport stop({{503, {{"x-should-retry", "false"}}, kFailed}, {200, {}, kNoLists}});
  CloudflareClient stopping(stop, clock, ClientOptions(), creds, registry);
  EXPECT_THAT(stopping.ListLists(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("503")));
  EXPECT_EQ(stop.calls, 1u);

  // Out of tries, a 4xx the API said to retry is still one to retry later.
  SequenceTransport again({{400, {{"x-should-retry", "True"}}, kFailed}});
  ClientOptions options;
  options.max_attempts = 2;
  CloudflareClient giving_up(again, clock, options, creds, registry);
  EXPECT_THAT(giving_up.ListLists(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("400")));
  EXPECT_EQ(again.calls, 2u);
}

// A POST that is not idempotent (a list create) is sent again only after an answer that says
// nothing was done: a 429, 408 or 409, or x-should-retry: true. After a 5xx, a reply cut off
// or a success that cannot be read it may have been applied: kUnknown, naming the call.
TEST(ClientErrorTest, ANonIdempotentPostIsRepeatedOnlyWhenNothingWasDone) {
  const std::string created =
      R"({"success":true,"result":{"id":"2c0fc9fa937b11eaa1b71c4d701ab86e","name":"l"}})";
  const std::string throttled =
      R"({"success":false,"result":null,"errors":[{"code":971,"message":"Please wait"}]})";
  struct Case {
    const char* name;
    std::vector<SequenceTransport::Reply> replies;
    absl::StatusCode code;
    size_t calls;
  };
  const Case cases[] = {
      {"504", {{504, {}, kFailed}}, absl::StatusCode::kUnknown, 1},
      {"500 x-should-retry: false", {{500, {{"x-should-retry", "false"}}, kFailed}},
       absl::StatusCode::kUnknown, 1},
      {"cut off", {{0, {}, "Recv failure: Connection reset by peer"}},
       absl::StatusCode::kUnknown, 1},
      // After sending: not marked never sent by the transport, whatever its text says.
      {"timed out", {{0, {}, "Timeout was reached"}}, absl::StatusCode::kUnknown, 1},
      {"unmarked, in libcurl's words for no connection", {{0, {}, "Couldn't connect to server"}},
       absl::StatusCode::kUnknown, 1},
      // Marked by the transport (libcurl's code): sent again, whatever its text says (libcurl's
      // wording changes between versions: "Couldn't" became "Could not" in 7.87).
      {"no connection", {{0, {}, "Could not connect to server", true}, {200, {}, created}},
       absl::StatusCode::kOk, 2},
      {"no name", {{0, {}, "Could not resolve host: api.cloudflare.com", true}, {200, {}, created}},
       absl::StatusCode::kOk, 2},
      {"200 not JSON", {{200, {}, "<html>"}}, absl::StatusCode::kUnknown, 1},
      {"429", {{429, {{"retry-after", "1"}}, throttled}, {200, {}, created}},
       absl::StatusCode::kOk, 2},
      {"408", {{408, {}, kFailed}, {200, {}, created}}, absl::StatusCode::kOk, 2},
      {"409", {{409, {}, kFailed}, {200, {}, created}}, absl::StatusCode::kOk, 2},
      {"503 x-should-retry: true",
       {{503, {{"x-should-retry", "true"}}, kFailed}, {200, {}, created}},
       absl::StatusCode::kOk, 2},
  };
  for (const Case& c : cases) {
    SimulatedClock clock;
    prometheus::Registry registry;
    Credentials creds;
    creds.token = Secret("cfut_0123456789abcdefghijABCDEFGHIJ0123456789");
    SequenceTransport transport(c.replies);
    CloudflareClient client(transport, clock, ClientOptions(), creds, registry);
    absl::StatusOr<IpList> list = client.CreateList("l", "");
    EXPECT_EQ(list.status().code(), c.code) << c.name << ": " << list.status();
    EXPECT_EQ(transport.calls, c.calls) << c.name;
    if (c.code == absl::StatusCode::kUnknown) {
      EXPECT_THAT(list.status().message(),
                  AllOf(HasSubstr("POST lists/create"), HasSubstr("outcome unknown")))
          << c.name;
      if (c.replies[0].status >= 500) {
        EXPECT_EQ(CloudflareErrorCode(list.status()), 10000) << c.name;
      }
    }
  }
}

// An account token made before the cfat_ prefix: the user verify endpoint refuses it, the
// account one takes it.
TEST_F(ClientTest, UnprefixedAccountTokenIsVerifiedOnTheAccountPath) {
  fake::TokenSpec spec;
  spec.account_owned = true;
  spec.value = "0123456789abcdefghijABCDEFGHIJ0123456789";
  spec.permissions = {"lists"};
  const std::string id = fake_.AddToken(spec).first;
  absl::StatusOr<TokenInfo> own = Client(spec.value)->VerifyToken(false);
  ASSERT_THAT(own, IsOk());
  EXPECT_EQ(own->id, id);
  EXPECT_TRUE(own->account_owned);
  absl::StatusOr<TokenInfo> other = Client(token_)->VerifyOtherToken(Secret(spec.value), false);
  ASSERT_THAT(other, IsOk());
  EXPECT_EQ(other->id, id);
  EXPECT_TRUE(other->account_owned);
  // A user token still answers on the user path first.
  absl::StatusOr<TokenInfo> user = Client(token_)->VerifyToken(false);
  ASSERT_THAT(user, IsOk());
  EXPECT_FALSE(user->account_owned);
}

// A token PUT replaces the whole token: disabling must keep its IP condition and its validity
// window, or re-enabling it later would lift its restrictions.
TEST_F(ClientTest, DisableKeepsConditionAndValidity) {
  fake::TokenSpec spec;
  spec.name = "ci-deploy";
  spec.permissions = {"lists"};
  spec.ip_in = {"192.0.2.0/24"};
  spec.ip_not_in = {"192.0.2.1/32"};
  spec.expires_on = clock_.TimeNow() + absl::Hours(24 * 30);
  spec.not_before = clock_.TimeNow() - absl::Hours(1);
  const std::string id = fake_.AddToken(spec).first;
  const fake::json before = fake_.TokenSnapshot(id);
  absl::StatusOr<TokenInfo> disabled = Client(token_)->DisableToken(id, false);
  ASSERT_THAT(disabled, IsOk());
  const fake::json after = fake_.TokenSnapshot(id);
  EXPECT_EQ(after["status"], "disabled");
  ASSERT_TRUE(before.contains("condition") && before.contains("not_before"));
  // value(): a key the PUT dropped reads as null instead of aborting on a const json.
  EXPECT_EQ(after.value("condition", fake::json()), before["condition"]) << after.dump();
  EXPECT_EQ(after.value("expires_on", fake::json()), before["expires_on"]);
  EXPECT_EQ(after.value("not_before", fake::json()), before["not_before"]);
  EXPECT_EQ(after.value("policies", fake::json()), before["policies"]);
}

TEST_F(ClientTest, ListItemsComeBackCanonical) {
  fake_.options().ipv4_items_as_cidr = true;  // the API has answered "192.0.2.1/32"
  auto client = Client(token_);
  absl::StatusOr<IpList> list = client->CreateList("l", "");
  ASSERT_THAT(list, IsOk());
  absl::StatusOr<std::string> op = client->AddListItems(
      list->id, {{"", "192.0.2.1", ""}, {"", "2001:DB8:0:1::/64", ""}, {"", "10.1.0.0/16", ""}});
  ASSERT_THAT(op, IsOk());
  ASSERT_THAT(client->WaitForOperation(*op), IsOk());
  absl::StatusOr<std::vector<ListItem>> items = client->ListAllItems(list->id);
  ASSERT_THAT(items, IsOk());
  std::set<std::string> ips;
  for (const ListItem& i : *items) ips.insert(i.ip);
  EXPECT_EQ(ips, (std::set<std::string>{"192.0.2.1", "2001:db8:0:1::/64", "10.1.0.0/16"}));
  EXPECT_EQ(CanonicalListIp("192.0.2.1/32"), "192.0.2.1");
  EXPECT_EQ(CanonicalListIp("2001:DB8::1/128"), "2001:db8::1");
}

TEST_F(ClientTest, AccessRuleListRefusesAnIp6TargetFilter) {
  AccessRuleFilter f;
  f.target = "ip6";
  const int64_t calls = fake_.calls();
  EXPECT_THAT(Client(token_)->ListAccessRules(RuleScope::kZone, f, 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ip6")));
  EXPECT_EQ(fake_.calls(), calls);
}

// A peer whose pages never end: every list page answers the same reply, counted. Past 1,000
// calls the test has failed (the client would go on while its budget lasts) and the transport
// answers 400 so that the call ends.
class EndlessPages final : public HttpTransport {
 public:
  explicit EndlessPages(std::string body)
      : body_([body = std::move(body)](int) { return body; }) {}
  // The body of each call (1-based).
  explicit EndlessPages(std::function<std::string(int call)> body) : body_(std::move(body)) {}
  absl::StatusOr<HttpResponse> Send(const HttpRequest&) override {
    HttpResponse r;
    if (++calls > 1000) {
      ADD_FAILURE() << "the client asked for more than 1000 pages";
      r.status = 400;
      r.body = R"({"success":false,"errors":[{"code":10000,"message":"stop"}]})";
      return r;
    }
    r.status = 200;
    r.body = body_(calls);
    return r;
  }
  int calls = 0;

 private:
  std::function<std::string(int)> body_;
};

ClientOptions EndlessOptions() {
  ClientOptions options;
  options.budget_requests = 100000;  // the budget must not be what ends the listing
  return options;
}

// A cursor the API answers again (the same page over and over) ends the listing at once, with
// an error naming it; the client went on until its request budget was spent.
TEST(ClientPagingTest, ARepeatedCursorEndsTheListing) {
  SimulatedClock clock;
  prometheus::Registry registry;
  Credentials creds;
  creds.token = Secret("cfut_0123456789abcdefghijABCDEFGHIJ0123456789");
  EndlessPages transport(
      R"({"success":true,"result":[{"id":"1","ip":"192.0.2.1","comment":"c"}],)"
      R"("result_info":{"cursors":{"after":"Zm9yZXZlcg"}}})");
  CloudflareClient client(transport, clock, EndlessOptions(), creds, registry);
  EXPECT_THAT(client.ListAllItems("0123456789abcdef0123456789abcdef"),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("repeated cursor Zm9yZXZlcg")));
  EXPECT_EQ(transport.calls, 2);
}

// Access-rule pages that never come back empty and give no total_pages: the listing stops at
// its page cap (1,000 by default) instead of going on while the budget lasts.
TEST(ClientPagingTest, AccessRulePagesStopAtTheCap) {
  SimulatedClock clock;
  prometheus::Registry registry;
  Credentials creds;
  creds.token = Secret("cfut_0123456789abcdefghijABCDEFGHIJ0123456789");
  EndlessPages transport(
      R"({"success":true,"result":[{"id":"1","mode":"block","notes":"n",)"
      R"("configuration":{"target":"ip","value":"192.0.2.1"}}],)"
      R"("result_info":{"page":1,"per_page":100,"count":1}})");
  CloudflareClient client(transport, clock, EndlessOptions(), creds, registry);
  EXPECT_THAT(client.ListAllAccessRules(RuleScope::kZone, {}),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("1000 pages")));
  EXPECT_EQ(transport.calls, 1000);
}

// Pages that each move the cursor on but never end: held to the listing's byte cap (64 MiB by
// default, 1 MiB here) in the items kept.
TEST(ClientPagingTest, AListingIsHeldToItsByteCap) {
  SimulatedClock clock;
  prometheus::Registry registry;
  Credentials creds;
  creds.token = Secret("cfut_0123456789abcdefghijABCDEFGHIJ0123456789");
  const std::string comment(10 * 1024, 'c');
  EndlessPages transport([&](int call) {
    return absl::StrCat(R"({"success":true,"result":[{"id":"1","ip":"192.0.2.1","comment":")",
                        comment, R"("}],"result_info":{"cursors":{"after":"c)", call,
                        R"("}}})");
  });
  ClientOptions options = EndlessOptions();
  options.max_listing_bytes = 1024 * 1024;
  CloudflareClient client(transport, clock, options, creds, registry);
  EXPECT_THAT(client.ListAllItems("0123456789abcdef0123456789abcdef"),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("over 1048576 bytes")));
  EXPECT_EQ(transport.calls, 102);  // 10 KiB and a little more per page (the item, its struct)
}

// `n` empty objects, as a page's result.
std::string EmptyItems(int n) {
  std::string out = "[";
  for (int i = 0; i < n; ++i) absl::StrAppend(&out, i ? "," : "", "{}");
  return out + "]";
}

// Items with no strings still cost what the client keeps of them: 100 `{}` access rules a
// page (what it asks for), no total_pages. Only their strings were counted, so such pages
// counted 0 bytes and went on to the page cap: 1,000 calls, 100,000 rules kept.
TEST(ClientPagingTest, ItemsWithoutStringsCountTowardTheByteCap) {
  SimulatedClock clock;
  prometheus::Registry registry;
  Credentials creds;
  creds.token = Secret("cfut_0123456789abcdefghijABCDEFGHIJ0123456789");
  EndlessPages rules(absl::StrCat(R"({"success":true,"result":)", EmptyItems(100),
                                  R"(,"result_info":{"page":1,"per_page":100}})"));
  ClientOptions options = EndlessOptions();
  options.max_listing_bytes = 32 * 1024;  // 100 rules of sizeof(AccessRule) a page: 3 pages
  CloudflareClient client(rules, clock, options, creds, registry);
  EXPECT_THAT(client.ListAllAccessRules(RuleScope::kZone, {}),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("over 32768 bytes")));
  EXPECT_LE(rules.calls, 3);

  // The same for list items, 500 a page, each page moving the cursor on.
  EndlessPages items([](int call) {
    return absl::StrCat(R"({"success":true,"result":)", EmptyItems(500),
                        R"(,"result_info":{"cursors":{"after":"c)", call, R"("}}})");
  });
  options.max_listing_bytes = 64 * 1024;
  CloudflareClient item_client(items, clock, options, creds, registry);
  EXPECT_THAT(item_client.ListAllItems("0123456789abcdef0123456789abcdef"),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("over 65536 bytes")));
  EXPECT_LE(items.calls, 3);
}

// A page holding more items than were asked for is refused whole, naming both counts: 200 `{}`
// access rules on a page of 100, 501 list items on a page of 500.
TEST(ClientPagingTest, APageOverItsPerPageIsRefused) {
  SimulatedClock clock;
  prometheus::Registry registry;
  Credentials creds;
  creds.token = Secret("cfut_0123456789abcdefghijABCDEFGHIJ0123456789");
  EndlessPages rules(absl::StrCat(R"({"success":true,"result":)", EmptyItems(200), "}"));
  CloudflareClient client(rules, clock, EndlessOptions(), creds, registry);
  EXPECT_THAT(client.ListAllAccessRules(RuleScope::kZone, {}),
              StatusIs(absl::StatusCode::kOutOfRange,
                       HasSubstr("200 items on a page of 100 asked for")));
  EXPECT_EQ(rules.calls, 1);

  EndlessPages items([](int call) {
    return absl::StrCat(R"({"success":true,"result":)", EmptyItems(501),
                        R"(,"result_info":{"cursors":{"after":"c)", call, R"("}}})");
  });
  CloudflareClient item_client(items, clock, EndlessOptions(), creds, registry);
  EXPECT_THAT(item_client.ListAllItems("0123456789abcdef0123456789abcdef"),
              StatusIs(absl::StatusCode::kOutOfRange,
                       HasSubstr("501 items on a page of 500 asked for")));
  EXPECT_EQ(items.calls, 1);
}

// A 429 whose body is not JSON (an HTML page from a proxy in front of the API) is still a 429:
// its Retry-After is kept and blocks the shared budget. It was a kUnavailable without a delay,
// and the next call went out into the same 429.
class HtmlThrottle final : public HttpTransport {
 public:
  absl::StatusOr<HttpResponse> Send(const HttpRequest&) override {
    ++calls;
    HttpResponse r;
    r.status = 429;
    r.headers["retry-after"] = "120";
    r.body = "<html><body><h1>429 Too Many Requests</h1></body></html>";
    return r;
  }
  int calls = 0;
};

TEST(ClientThrottleTest, A429WithAnHtmlBodyKeepsItsRetryAfter) {
  SimulatedClock clock;
  prometheus::Registry registry;
  Credentials creds;
  creds.token = Secret("cfut_0123456789abcdefghijABCDEFGHIJ0123456789");
  HtmlThrottle transport;
  CloudflareClient client(transport, clock, ClientOptions(), creds, registry);
  absl::StatusOr<std::vector<IpList>> first = client.ListLists();
  EXPECT_THAT(first, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("HTTP 429")));
  EXPECT_EQ(RetryDelay(first.status()), absl::Seconds(120));
  EXPECT_EQ(transport.calls, 1);
  // The budget is blocked for those 120 s: the next call is refused without being sent.
  clock.Advance(absl::Seconds(30));
  absl::StatusOr<std::vector<IpList>> second = client.ListLists();
  EXPECT_THAT(second, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("budget")));
  EXPECT_EQ(transport.calls, 1);
}

// The first call answers `status` with `headers`; every later one succeeds (a verify or an empty
// list of lists, by the URL).
class FirstReplyThrottles final : public HttpTransport {
 public:
  FirstReplyThrottles(int status, std::map<std::string, std::string> headers)
      : status_(status), headers_(std::move(headers)) {}
  absl::StatusOr<HttpResponse> Send(const HttpRequest& request) override {
    HttpResponse r;
    r.status = ++calls == 1 ? status_ : 200;
    if (calls == 1) r.headers = headers_;
    if (r.status == 429) {
      r.body = R"({"success":false,"errors":[{"code":971,"message":"Please wait"}],"result":null})";
    } else if (absl::StrContains(request.url, "/verify")) {
      r.body = R"({"success":true,"result":{"id":"ed17574386854bf78a67040be0a770b0",)"
               R"("status":"active"}})";
    } else {
      r.body = R"({"success":true,"result":[]})";
    }
    return r;
  }
  int calls = 0;

 private:
  int status_;
  std::map<std::string, std::string> headers_;
};

// A server delay is held to max_server_delay (300 s, Cloudflare's own block): one reply asking
// for a day, 68 years or 1e300 s (absl::Seconds: an infinite duration) blocked the shared budget
// that long, and every later call was refused ("retry in inf") until a restart.
TEST(ClientThrottleTest, AServerDelayIsHeldToItsCap) {
  const std::vector<std::pair<int, std::map<std::string, std::string>>> replies = {
      {429, {{"retry-after", "1e300"}}},
      {429, {{"retry-after", "86400"}}},
      {429, {{"retry-after-ms", "1e300"}}},
      {200, {{"ratelimit", "\"default\";r=0;t=2147483647"}}},
  };
  for (const auto& [status, headers] : replies) {
    const std::string name = absl::StrCat(status, " ", headers.begin()->first, ": ",
                                          headers.begin()->second);
    SimulatedClock clock;
    prometheus::Registry registry;
    Credentials creds;
    creds.token = Secret("cfut_0123456789abcdefghijABCDEFGHIJ0123456789");
    FirstReplyThrottles transport(status, headers);
    CloudflareClient client(transport, clock, ClientOptions(), creds, registry);
    absl::StatusOr<std::vector<IpList>> first = client.ListLists();
    if (status == 429) {
      EXPECT_THAT(first, StatusIs(absl::StatusCode::kResourceExhausted)) << name;
      EXPECT_EQ(RetryDelay(first.status()), absl::Seconds(300)) << name;
    } else {
      EXPECT_THAT(first, IsOk()) << name;
    }
    EXPECT_EQ(Count(registry, "palisade_cloudflare_server_delays_capped_total"), 1) << name;
    clock.Advance(absl::Seconds(301));
    EXPECT_THAT(client.VerifyToken(), IsOk()) << name;
    EXPECT_EQ(transport.calls, 2) << name;
  }
}

// A delay that is no delay (negative, zero, not a number, infinite) is as if none was given:
// the client backs off on its own. "Retry-After: -5" was retried at once, and moved the
// simulated clock back 5 s.
TEST(ClientThrottleTest, AnUnusableServerDelayFallsBackToBackoff) {
  for (const char* value : {"-5", "0", "nan", "inf", "-inf"}) {
    SimulatedClock clock;
    prometheus::Registry registry;
    Credentials creds;
    creds.token = Secret("cfut_0123456789abcdefghijABCDEFGHIJ0123456789");
    FirstReplyThrottles transport(429, {{"retry-after", value}});
    CloudflareClient client(transport, clock, ClientOptions(), creds, registry);
    const absl::Time start = clock.TimeNow();
    EXPECT_THAT(client.ListLists(), IsOk()) << value;
    EXPECT_EQ(transport.calls, 2) << value;
    // initial_backoff (1 s) with jitter: 0.5 s to 1 s.
    EXPECT_GE(clock.TimeNow() - start, absl::Milliseconds(500)) << value;
    EXPECT_LE(clock.TimeNow() - start, absl::Seconds(1)) << value;
  }
  // The same for "Ratelimit: r=0;t=-5": nothing blocked, the next call goes out.
  SimulatedClock clock;
  prometheus::Registry registry;
  Credentials creds;
  creds.token = Secret("cfut_0123456789abcdefghijABCDEFGHIJ0123456789");
  FirstReplyThrottles transport(200, {{"ratelimit", "\"default\";r=0;t=-5"}});
  CloudflareClient client(transport, clock, ClientOptions(), creds, registry);
  const absl::Time start = clock.TimeNow();
  EXPECT_THAT(client.ListLists(), IsOk());
  EXPECT_THAT(client.VerifyToken(), IsOk());
  EXPECT_EQ(clock.TimeNow(), start);
}

// Cloudflare's edge and proxies in front of the API send Retry-After on a 503 (and a 502 or 504)
// too. It was read only on a 429: the 5xx was retried after the client's own 0.5-1 s backoff,
// into the same overload. Any 5xx's Retry-After(-Ms) is now the retry's delay (held to
// max_server_delay) and blocks the shared budget, whatever its body.
TEST(ClientThrottleTest, A5xxWithRetryAfterIsRetriedNoSoonerThanAsked) {
  struct Case {
    int status;
    std::map<std::string, std::string> headers;
    std::string body;
    absl::Duration delay;
  };
  const Case cases[] = {
      {503, {{"retry-after", "20"}}, kFailed, absl::Seconds(20)},
      {502,
       {{"retry-after-ms", "7500"}},
       "<html><h1>502 Bad Gateway</h1></html>",
       absl::Milliseconds(7500)},
      {504, {{"retry-after", "86400"}}, "[]", absl::Seconds(300)},  // held to the cap
  };
  for (const Case& c : cases) {
    const std::string name = absl::StrCat(c.status, " ", c.headers.begin()->first);
    SimulatedClock clock;
    prometheus::Registry registry;
    Credentials creds;
    creds.token = Secret("cfut_0123456789abcdefghijABCDEFGHIJ0123456789");
    SequenceTransport transport({{c.status, c.headers, c.body}, {200, {}, kNoLists}});
    ClientOptions options;
    options.max_wait = absl::Seconds(600);
    CloudflareClient client(transport, clock, options, creds, registry);
    const absl::Time start = clock.TimeNow();
    EXPECT_THAT(client.ListLists(), IsOk()) << name;
    EXPECT_EQ(transport.calls, 2u) << name;
    EXPECT_EQ(clock.TimeNow() - start, c.delay) << name;
  }
  // Longer than max_wait: returned with its delay at once, and the budget blocked meanwhile.
  SimulatedClock clock;
  prometheus::Registry registry;
  Credentials creds;
  creds.token = Secret("cfut_0123456789abcdefghijABCDEFGHIJ0123456789");
  SequenceTransport transport({{503, {{"retry-after", "120"}}, kFailed}, {200, {}, kNoLists}});
  CloudflareClient client(transport, clock, ClientOptions(), creds, registry);
  absl::StatusOr<std::vector<IpList>> first = client.ListLists();
  EXPECT_THAT(first, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("HTTP 503")));
  EXPECT_EQ(RetryDelay(first.status()), absl::Seconds(120));
  EXPECT_EQ(transport.calls, 1u);
  clock.Advance(absl::Seconds(30));
  EXPECT_THAT(client.ListLists(),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("budget")));
  EXPECT_EQ(transport.calls, 1u);
  clock.Advance(absl::Seconds(91));
  EXPECT_THAT(client.ListLists(), IsOk());
  EXPECT_EQ(transport.calls, 2u);
}

// A redirect is not followed (the transport refuses to) and is no reply to read: it was mapped
// as any other status (kInvalidArgument "code 0", or kInternal "not JSON") and said nothing of
// where it pointed. It is kFailedPrecondition naming the target's scheme and host only (its
// user info and query may hold a credential), not retried, and not "outcome unknown".
TEST(ClientErrorTest, ARedirectIsRefusedNamingOnlyItsOrigin) {
  SimulatedClock clock;
  prometheus::Registry registry;
  Credentials creds;
  creds.token = Secret("cfut_0123456789abcdefghijABCDEFGHIJ0123456789");
  SequenceTransport transport(
      {{301,
        {{"location", "https://user:pw-secret@api.cloudflare.com/client/v4/lists?token=secret"}},
        "<html>Moved</html>"}});
  CloudflareClient client(transport, clock, ClientOptions(), creds, registry);
  absl::StatusOr<std::vector<IpList>> listed = client.ListLists();
  EXPECT_THAT(listed, StatusIs(absl::StatusCode::kFailedPrecondition,
                               HasSubstr("HTTP 301 redirect to https://api.cloudflare.com not "
                                         "followed")));
  EXPECT_THAT(listed.status().message(), Not(HasSubstr("secret")));
  EXPECT_EQ(transport.calls, 1u);
  absl::StatusOr<IpList> created = client.CreateList("l", "");
  EXPECT_THAT(created, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("HTTP 301")));
  EXPECT_EQ(transport.calls, 2u);
}

// Runs `hook` once, inside the first SleepFor: what another thread does while a call waits.
class HookedClock final : public Clock {
 public:
  absl::Time TimeNow() override { return clock_.TimeNow(); }
  void SleepFor(absl::Duration d) override {
    clock_.Advance(d);
    if (hook) std::exchange(hook, nullptr)();
  }
  std::function<void()> hook;

 private:
  SimulatedClock clock_;
};

// max_wait holds for the whole wait for the budget, not only its first look: a call waiting
// for a free slot, during which another call's 429 blocks the budget for 200 s, is refused; it
// slept the 200 s too.
TEST(ClientThrottleTest, TheWaitForTheBudgetIsHeldToMaxWaitThroughout) {
  HookedClock clock;
  prometheus::Registry registry;
  Credentials creds;
  creds.token = Secret("cfut_0123456789abcdefghijABCDEFGHIJ0123456789");
  // Call 1 succeeds; call 2 (the other caller's, in the hook) is a 429 asking for 200 s.
  class Script final : public HttpTransport {
   public:
    absl::StatusOr<HttpResponse> Send(const HttpRequest&) override {
      HttpResponse r;
      r.status = ++calls == 2 ? 429 : 200;
      if (r.status == 429) {
        r.headers["retry-after"] = "200";
        r.body = R"({"success":false,"errors":[{"code":971,"message":"Please wait"}]})";
      } else {
        r.body = R"({"success":true,"result":[]})";
      }
      return r;
    }
    int calls = 0;
  } transport;
  ClientOptions options;
  options.budget_requests = 1;
  options.budget_window = absl::Seconds(30);
  CloudflareClient client(transport, clock, options, creds, registry);
  ASSERT_THAT(client.ListLists(), IsOk());
  clock.hook = [&] {
    EXPECT_THAT(client.ListLists(), StatusIs(absl::StatusCode::kResourceExhausted));
  };
  const absl::Time start = clock.TimeNow();
  // Waits 30 s for the window, then finds the budget blocked for 200 s more.
  EXPECT_THAT(client.ListLists(),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("budget")));
  EXPECT_LE(clock.TimeNow() - start, options.max_wait);
  EXPECT_EQ(transport.calls, 2);
}

// A reply over the transport's cap is not asked for again: the same call brings the same reply.
class TooLarge final : public HttpTransport {
 public:
  absl::StatusOr<HttpResponse> Send(const HttpRequest&) override {
    ++calls;
    return absl::OutOfRangeError("HTTP transport: the reply is over the cap of 8 bytes");
  }
  int calls = 0;
};

TEST(ClientPagingTest, AReplyOverTheTransportCapIsNotRetried) {
  SimulatedClock clock;
  prometheus::Registry registry;
  Credentials creds;
  creds.token = Secret("cfut_0123456789abcdefghijABCDEFGHIJ0123456789");
  TooLarge transport;
  CloudflareClient client(transport, clock, ClientOptions(), creds, registry);
  EXPECT_THAT(client.ListLists(),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("over the cap of 8 bytes")));
  EXPECT_EQ(transport.calls, 1);
}

// A reply of an unexpected shape is an error, never a crash (a fuzzer found this one).
class OddTransport final : public HttpTransport {
 public:
  explicit OddTransport(std::string body) : body_(std::move(body)) {}
  absl::StatusOr<HttpResponse> Send(const HttpRequest&) override {
    HttpResponse r;
    r.status = 200;
    r.body = body_;
    return r;
  }

 private:
  std::string body_;
};

TEST(ClientShapeTest, UnexpectedRepliesAreErrors) {
  SimulatedClock clock;
  prometheus::Registry registry;
  Credentials creds;
  creds.token = Secret("cfut_0123456789abcdefghijABCDEFGHIJ0123456789");
  for (const char* body : {R"({"success":true,"result":[1,2,3]})", R"([1,2])", R"("text")",
                           R"({"success":true,"result":{"rules":"nope"}})"}) {
    OddTransport transport(body);
    CloudflareClient client(transport, clock, ClientOptions(), creds, registry);
    EXPECT_THAT(client.VerifyToken(), StatusIs(absl::StatusCode::kInternal)) << body;
    EXPECT_FALSE(client.GetEntrypoint("http_ratelimit").ok()) << body;
  }
}

// Answers each request with `answer`'s reply and keeps every request it was sent.
class FnTransport final : public HttpTransport {
 public:
  using Answer = std::function<absl::StatusOr<HttpResponse>(const HttpRequest&)>;
  explicit FnTransport(Answer answer) : answer_(std::move(answer)) {}
  absl::StatusOr<HttpResponse> Send(const HttpRequest& request) override {
    requests.push_back(request);
    return answer_(request);
  }
  std::vector<HttpRequest> requests;

 private:
  Answer answer_;
};

HttpResponse Reply(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

std::string AuthorizationOf(const HttpRequest& request) {
  for (const auto& [name, value] : request.headers) {
    if (name == "Authorization") return value;
  }
  return "";
}

constexpr char kOldSecret[] = "cfut_0123456789abcdefghijABCDEFGHIJ0123456789";
constexpr char kNewSecret[] = "cfut_9876543210abcdefghijABCDEFGHIJ9876543210";

// Replies whose fields have unexpected types made SendOnce's reads throw; a roll calls it
// directly (not under Guarded), so the exception reached the rotator thread: std::terminate. Each
// is a status now, the old secret kept; a 2xx that does not say "success": true, or whose new
// value is not token-shaped, is kInternal (the roll may have been done), the others keep their
// HTTP status's code.
TEST(ClientShapeTest, AnOddReplyToARollIsAStatusNotACrash) {
  const struct {
    int http;
    const char* body;
    absl::StatusCode code;
  } cases[] = {
      {200, R"({"success":"true","result":"cfut_9876543210abcdefghijABCDEFGHIJ9876543210"})",
       absl::StatusCode::kInternal},
      {200, R"({"success":true,"result":{"value":"x"}})", absl::StatusCode::kInternal},
      // Not a token (TokenShaped's rule): never saved where the next start reads it.
      {200, R"({"success":true,"result":"short"})", absl::StatusCode::kInternal},
      {200, R"({"success":true,"result":"cfut_0123456789abcdefghij ABCDEFGHIJ0123456789\n"})",
       absl::StatusCode::kInternal},
      {200, R"({"success":false,"result":null,"errors":[{"code":1000,"message":"x"}]})",
       absl::StatusCode::kInternal},
      {502, R"({"success":false,"errors":["bad gateway"]})", absl::StatusCode::kUnavailable},
      {429, R"({"success":false,"errors":[{"code":"971","message":"Please wait"}]})",
       absl::StatusCode::kResourceExhausted},
      {400, R"({"success":false,"errors":[{"code":6003,"message":"x","error_chain":["y"]}]})",
       absl::StatusCode::kUnauthenticated},
      {400, R"({"success":false,"errors":[{"code":7003,"error_chain":[{"code":"z"}]}]})",
       absl::StatusCode::kInvalidArgument},
      {400, R"({"success":false,"errors":[{"code":1e300,"message":7,"source":"here"}]})",
       absl::StatusCode::kInvalidArgument},
  };
  for (const auto& c : cases) {
    SimulatedClock clock;
    prometheus::Registry registry;
    Credentials creds;
    creds.token = Secret(kOldSecret);
    FnTransport transport([&](const HttpRequest& r) -> absl::StatusOr<HttpResponse> {
      if (r.method == "PUT") return Reply(c.http, c.body);
      return Reply(200, R"({"success":true,"result":{"id":"0123456789abcdef0123456789abcdef"}})");
    });
    CloudflareClient client(transport, clock, ClientOptions(), creds, registry);
    bool persisted = false;
    absl::StatusOr<CloudflareClient::RolledToken> rolled =
        client.RollToken("0123456789abcdef0123456789abcdef", false, [&](const Secret&) {
          persisted = true;
          return absl::OkStatus();
        });
    EXPECT_EQ(rolled.status().code(), c.code) << c.body << ": " << rolled.status();
    EXPECT_THAT(rolled.status().message(), Not(HasSubstr(kNewSecret))) << c.body;
    EXPECT_FALSE(persisted) << c.body;
    ASSERT_THAT(client.VerifyToken(), IsOk()) << c.body;
    EXPECT_EQ(AuthorizationOf(transport.requests.back()), absl::StrCat("Bearer ", kOldSecret))
        << c.body;
  }
}

// The same bodies on other calls keep their HTTP status's meaning: a 503 whose errors are
// strings is retried as a 503 (it was kInternal, not retried); a 429 whose code is a string is
// a throttle.
TEST(ClientShapeTest, AnOddErrorBodyKeepsItsStatusMeaning) {
  SimulatedClock clock;
  prometheus::Registry registry;
  Credentials creds;
  creds.token = Secret(kOldSecret);
  SequenceTransport gateway(
      {{503, {}, R"({"success":false,"errors":["bad gateway"]})"}, {200, {}, kNoLists}});
  CloudflareClient retried(gateway, clock, ClientOptions(), creds, registry);
  EXPECT_THAT(retried.ListLists(), IsOk());
  EXPECT_EQ(gateway.calls, 2u);

  SequenceTransport throttle(
      {{429, {}, R"({"success":false,"errors":[{"code":"971","message":"Please wait"}]})"}});
  ClientOptions once;
  once.max_attempts = 1;
  CloudflareClient throttled(throttle, clock, once, creds, registry);
  EXPECT_THAT(throttled.ListLists(), StatusIs(absl::StatusCode::kResourceExhausted));
}

// The roll is a PUT, which libcurl takes as idempotent and sends again, unseen, when the kept
// connection it used dies: the resend carries the secret the first one retired. It asks for a
// connection of its own; other calls keep theirs.
TEST(ClientTokenTest, TheRollAsksForAFreshConnection) {
  SimulatedClock clock;
  prometheus::Registry registry;
  Credentials creds;
  creds.token = Secret(kOldSecret);
  FnTransport transport([](const HttpRequest& r) -> absl::StatusOr<HttpResponse> {
    if (r.method == "PUT") {
      return Reply(200, absl::StrCat(R"({"success":true,"result":")", kNewSecret, R"("})"));
    }
    return Reply(200, R"({"success":true,"result":{"id":"0123456789abcdef0123456789abcdef"}})");
  });
  CloudflareClient client(transport, clock, ClientOptions(), creds, registry);
  ASSERT_THAT(client.VerifyToken(), IsOk());
  ASSERT_THAT(client.RollToken("0123456789abcdef0123456789abcdef", false,
                               [](const Secret&) { return absl::OkStatus(); }),
              IsOk());
  ASSERT_THAT(client.VerifyToken(), IsOk());
  ASSERT_EQ(transport.requests.size(), 3u);
  EXPECT_FALSE(transport.requests[0].fresh_connection);
  EXPECT_TRUE(transport.requests[1].fresh_connection);
  EXPECT_FALSE(transport.requests[2].fresh_connection);
  EXPECT_EQ(AuthorizationOf(transport.requests[2]), absl::StrCat("Bearer ", kNewSecret));
}

// A client made without an account id (a cluster node's verify-only client) asked
// /accounts//tokens/verify, whose 404 was taken as the token's refusal: a live account token
// was "not a token". Without an account id the account endpoint is not asked, and a refusal
// from the user endpoint alone is kUnknown (a transient answer), never kUnauthenticated.
TEST(ClientTokenTest, WithoutAnAccountIdTheAccountVerifyIsNotAsked) {
  SimulatedClock clock;
  prometheus::Registry registry;
  FnTransport transport([](const HttpRequest& r) -> absl::StatusOr<HttpResponse> {
    if (absl::StrContains(r.url, "/user/tokens/verify")) {
      return Reply(401,
                   R"({"success":false,"errors":[{"code":1000,"message":"Invalid API Token"}]})");
    }
    return Reply(404, R"({"success":false,"errors":[{"code":7003,"message":"Could not route"}]})");
  });
  CloudflareClient client(transport, clock, ClientOptions(), Credentials{}, registry);
  const Secret leaked("cfat_0123456789abcdefghijABCDEFGHIJ0123456789");
  for (bool account_first : {true, false}) {
    transport.requests.clear();
    absl::StatusOr<TokenInfo> info = client.VerifyOtherToken(leaked, account_first);
    EXPECT_THAT(info, StatusIs(absl::StatusCode::kUnknown, HasSubstr("account id")))
        << account_first;
    EXPECT_THAT(info.status().message(), Not(HasSubstr(leaked.value())));
    ASSERT_EQ(transport.requests.size(), 1u) << account_first;
    EXPECT_THAT(transport.requests[0].url, HasSubstr("/user/tokens/verify"));
  }
}

// Deleting an access rule that is gone may be answered 400 with
// "10001 firewallaccessrules.api.not_found" (cloudflare-api.md 2.5): that is kNotFound (the
// actuator takes it as done), not kInvalidArgument (failed for good). A 400 10001 of another
// endpoint stays a bad request.
TEST(ClientErrorTest, AnAccessRuleNotFoundIsNotFoundOnAnyClientError) {
  SimulatedClock clock;
  prometheus::Registry registry;
  Credentials creds;
  creds.token = Secret(kOldSecret);
  for (int http : {400, 404, 422}) {
    ScriptedTransport transport(http, R"({"success":false,"result":null,"errors":[{"code":10001,)"
                                      R"("message":"firewallaccessrules.api.not_found"}]})");
    CloudflareClient client(transport, clock, ClientOptions(), creds, registry);
    EXPECT_THAT(client.DeleteAccessRule(RuleScope::kZone, "0123456789abcdef0123456789abcdef"),
                StatusIs(absl::StatusCode::kNotFound, HasSubstr("10001")))
        << http;
  }
  ScriptedTransport other(400, R"({"success":false,"errors":[{"code":10001,)"
                               R"("message":"missing or malformed URL parameter"}]})");
  CloudflareClient client(other, clock, ClientOptions(), creds, registry);
  EXPECT_THAT(client.DeleteAccessRule(RuleScope::kZone, "0123456789abcdef0123456789abcdef"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// A token PUT replaces the whole token: its validity is sent back as the GET wrote it. It was
// parsed and written again, so a time the parser did not take was dropped from the PUT (the
// token lost its expiry) and one it took came back in another form.
TEST(ClientTokenTest, DisableSendsTheValidityBackAsTheApiWroteIt) {
  SimulatedClock clock;
  prometheus::Registry registry;
  Credentials creds;
  creds.token = Secret(kOldSecret);
  const std::string token = R"({"id":"0123456789abcdef0123456789abcdef","name":"ci",)"
                            R"("status":"active","policies":[],)"
                            R"("expires_on":"2030-06-01T00:00:00.000Z",)"
                            R"("not_before":"2026-01-01T00:00:00"})";
  FnTransport transport([&](const HttpRequest&) -> absl::StatusOr<HttpResponse> {
    return Reply(200, absl::StrCat(R"({"success":true,"result":)", token, "}"));
  });
  CloudflareClient client(transport, clock, ClientOptions(), creds, registry);
  ASSERT_THAT(client.DisableToken("0123456789abcdef0123456789abcdef", false), IsOk());
  ASSERT_EQ(transport.requests.size(), 2u);
  ASSERT_EQ(transport.requests[1].method, "PUT");
  const nlohmann::json body = nlohmann::json::parse(transport.requests[1].body);
  EXPECT_EQ(body.value("expires_on", ""), "2030-06-01T00:00:00.000Z") << body.dump();
  EXPECT_EQ(body.value("not_before", ""), "2026-01-01T00:00:00") << body.dump();
  EXPECT_EQ(body.value("status", ""), "disabled");
}

}  // namespace
}  // namespace palisade
