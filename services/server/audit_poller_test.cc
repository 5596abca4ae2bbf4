// The audit-log poller against the Cloudflare emulator over loopback HTTP, on one
// SimulatedClock (the emulator's record times, the client's budget, the poller's position).
#include "services/server/audit_poller.h"

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "services/common/proto_time.h"
#include "services/common/metrics_for_tests.h"
#include "services/common/status_matchers.h"
#include "services/decisions/decision_table.h"
#include "services/pipeline/pipeline.h"
#include "tests/cloudflare_fake/emulator_server.h"
#include "tests/cloudflare_fake/fake_cloudflare.h"

namespace palisade {
namespace {

using ::palisade::testing::CounterSum;
using ::palisade::testing::IsOk;
using ::palisade::testing::StatusIs;
using ::palisade::v1::LogBatch;
using ::testing::HasSubstr;
using ::testing::SizeIs;

class AuditPollerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake::TokenSpec spec;
    spec.permissions = {"firewall_services", "audit_logs"};
    std::tie(token_id_, token_) = fake_.AddToken(spec);
    ASSERT_THAT(server_.Start(), IsOk());
    ClientOptions options;
    options.base_url = server_.base_url();
    options.account_id = fake_.options().account_id;
    options.zone_id = fake_.options().zone_id;
    Credentials creds;
    creds.token = Secret(token_);
    client_ = std::make_unique<CloudflareClient>(transport_, clock_, options, creds, registry_);
    store_path_ = absl::StrCat(std::getenv("TEST_TMPDIR"), "/",
                               ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                               ".db");
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(store_path_);
    ASSERT_THAT(store, IsOk());
    store_ = *std::move(store);
  }

  // A call the emulator logs (an audit record of the token's, from 127.0.0.1).
  void Mutate(int i) {
    ASSERT_THAT(client_->CreateAccessRule(RuleScope::kZone, "block", "ip",
                                          absl::StrCat("203.0.113.", i), ""),
                IsOk());
  }

  std::unique_ptr<AuditPoller> Poller(AuditPoller::Feed feed, prometheus::Registry& registry,
                                      std::function<void(AuditPollerOptions&)> tweak = {}) {
    AuditPollerOptions options;
    options.page_limit = 2;  // every poll pages
    if (tweak) tweak(options);
    auto poller = std::make_unique<AuditPoller>(*client_, std::move(feed), store_.get(), clock_,
                                                options, registry);
    EXPECT_THAT(poller->Restore(), IsOk());
    return poller;
  }

  SimulatedClock clock_;
  fake::FakeCloudflare fake_{clock_};
  fake::EmulatorServer server_{fake_};
  CurlTransport transport_;
  prometheus::Registry registry_;
  std::unique_ptr<CloudflareClient> client_;
  std::string token_, token_id_, store_path_;
  std::unique_ptr<Store> store_;
};

// Each record is fed once, in the audit format, over pages, across polls whose windows overlap
// and across a restart that reads the saved position.
TEST_F(AuditPollerTest, FeedsEachRecordOnceAcrossPollsAndARestart) {
  for (int i = 1; i <= 3; ++i) Mutate(i);
  clock_.Advance(absl::Seconds(1));
  std::vector<LogBatch> fed;
  auto feed = [&fed](const LogBatch& b) {
    fed.push_back(b);
    return absl::OkStatus();
  };
  auto poller = Poller(feed, registry_);
  ASSERT_THAT(poller->PollOnce(), IsOk());
  ASSERT_THAT(fed, SizeIs(2));  // 2 + 1 records: two pages
  int records = 0;
  std::set<std::string> first_lines;
  for (const LogBatch& b : fed) {
    for (const auto& r : b.records()) first_lines.insert(r.line());
    EXPECT_EQ(b.format(), palisade::v1::LOG_FORMAT_CLOUDFLARE_AUDIT);
    for (const auto& r : b.records()) {
      ++records;
      EXPECT_THAT(r.line(), HasSubstr(absl::StrCat("\"token_id\":\"", token_id_, "\"")));
      EXPECT_THAT(r.line(), HasSubstr("\"ip_address\":\"127.0.0.1\""));
      EXPECT_THAT(r.line(), ::testing::Not(HasSubstr(token_)));  // never the secret
      EXPECT_TRUE(r.has_event_time());
    }
  }
  EXPECT_EQ(records, 3);
  // The next poll reads the overlap again and skips what it fed.
  clock_.Advance(absl::Seconds(30));
  fed.clear();
  ASSERT_THAT(poller->PollOnce(), IsOk());
  EXPECT_THAT(fed, SizeIs(0));
  // A restart: only the record made meanwhile.
  poller.reset();
  Mutate(4);
  clock_.Advance(absl::Seconds(30));
  prometheus::Registry registry;
  poller = Poller(feed, registry);
  ASSERT_THAT(poller->PollOnce(), IsOk());
  ASSERT_THAT(fed, SizeIs(1));
  ASSERT_THAT(fed[0].records(), SizeIs(1));
  EXPECT_EQ(first_lines.count(fed[0].records(0).line()), 0u);
  EXPECT_THAT(fed[0].records(0).line(),
              HasSubstr(absl::FormatTime(absl::RFC3339_full, clock_.TimeNow() - absl::Seconds(30),
                                         absl::UTCTimeZone())));
}

// A feed that fails leaves the position where it was: the records come again next poll.
TEST_F(AuditPollerTest, RecordsAFailedFeedRefusedAreReadAgain) {
  Mutate(1);
  clock_.Advance(absl::Seconds(1));
  int calls = 0;
  auto poller = Poller(
      [&calls](const LogBatch&) {
        return ++calls == 1 ? absl::UnavailableError("busy") : absl::OkStatus();
      },
      registry_);
  EXPECT_THAT(poller->PollOnce(), StatusIs(absl::StatusCode::kUnavailable));
  clock_.Advance(absl::Seconds(10));
  ASSERT_THAT(poller->PollOnce(), IsOk());
  EXPECT_EQ(calls, 2);
}

// The rendered record is what the shipped pack reads: palisaded's own token used from outside
// the expected range is decided for revocation, through the pipeline as palisaded feeds it.
TEST_F(AuditPollerTest, TheShippedPackRevokesATokenUsedFromOutsideItsRange) {
  absl::StatusOr<LoadedPack> pack = LoadRulePackFile("rules/cloudflare-audit.textproto");
  ASSERT_THAT(pack, IsOk());
  CidrSets sets;
  sets.emplace("cloudflare_token_ips", *CidrSet::Parse({"192.0.2.0/24"}));
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules = RuleSet::Compile({*pack}, sets);
  ASSERT_THAT(rules, IsOk());
  DecisionTable table(clock_);
  prometheus::Registry registry;
  Pipeline pipeline(*rules, PipelineOptions(), clock_, table, registry);
  Mutate(1);
  clock_.Advance(absl::Seconds(1));
  auto poller = Poller(
      [&pipeline](const LogBatch& b) {
        BatchSender poller;
        poller.audit_records = true;
        return pipeline.ProcessBatch(b, poller).status();
      },
      registry);
  ASSERT_THAT(poller->PollOnce(), IsOk());
  std::vector<palisade::v1::Decision> decisions = table.List({});
  ASSERT_THAT(decisions, SizeIs(1));
  EXPECT_EQ(decisions[0].target().value(), token_id_);
  EXPECT_EQ(decisions[0].target().kind(), palisade::v1::TARGET_KIND_TOKEN_ID);
}


// Every record's id, in the order fed.
std::vector<std::string> Ids(const std::vector<LogBatch>& fed) {
  std::vector<std::string> ids;
  for (const LogBatch& b : fed) {
    for (const auto& r : b.records()) {
      nlohmann::json j = nlohmann::json::parse(r.line());
      ids.push_back(j["resource"]["id"].get<std::string>());
    }
  }
  return ids;
}

// A day that already holds many records before the position costs a page or two a poll (newest
// first, stopping at the position), and misuse later that day is still seen. Paging up from the
// day's 00:00 instead spent every page of the poll on old records and never reached the new one.
TEST_F(AuditPollerTest, ABusyDayCostsAPageOrTwoAPollAndNewRecordsAreSeen) {
  clock_.Set(absl::FromUnixSeconds(1'767'225'600) + absl::Hours(10));  // 2026-01-01 10:00 UTC
  for (int i = 1; i <= 20; ++i) {
    Mutate(i);
    clock_.Advance(absl::Seconds(1));
  }
  clock_.Advance(absl::Hours(1));
  std::vector<LogBatch> fed;
  auto poller = Poller(
      [&fed](const LogBatch& b) {
        fed.push_back(b);
        return absl::OkStatus();
      },
      registry_, [](AuditPollerOptions& o) {
        o.first_lookback = absl::Minutes(1);
        o.max_pages = 3;
      });
  int64_t calls = fake_.calls();
  ASSERT_THAT(poller->PollOnce(), IsOk());
  EXPECT_LE(fake_.calls() - calls, 2);
  EXPECT_THAT(fed, SizeIs(0));
  Mutate(99);
  clock_.Advance(absl::Seconds(5));
  calls = fake_.calls();
  ASSERT_THAT(poller->PollOnce(), IsOk());
  EXPECT_LE(fake_.calls() - calls, 2);
  EXPECT_THAT(Ids(fed), SizeIs(1));
  EXPECT_EQ(CounterSum(registry_, "palisade_audit_log_polls_total", {{"result", "ok"}}), 2);
}

// Records on both sides of midnight, over several pages of one poll, are each fed once and
// oldest first: the query (whole dates) stays the same for the whole poll.
TEST_F(AuditPollerTest, RecordsAcrossMidnightAreEachFedOnceOldestFirst) {
  const absl::Time midnight = absl::FromUnixSeconds(1'767'225'600) + absl::Hours(24);
  clock_.Set(midnight - absl::Minutes(15));
  std::vector<LogBatch> fed;
  auto poller = Poller(
      [&fed](const LogBatch& b) {
        fed.push_back(b);
        return absl::OkStatus();
      },
      registry_, [](AuditPollerOptions& o) {
        o.first_lookback = absl::Minutes(5);
        o.overlap = absl::Minutes(2);
      });
  clock_.Set(midnight - absl::Minutes(2));
  Mutate(1);
  for (int i = 2; i <= 6; ++i) {
    clock_.Set(midnight + absl::Minutes(i));
    Mutate(i);
  }
  clock_.Advance(absl::Seconds(10));
  ASSERT_THAT(poller->PollOnce(), IsOk());
  std::vector<std::string> ids = Ids(fed);
  ASSERT_THAT(ids, SizeIs(6));
  std::vector<absl::Time> times;
  for (const LogBatch& b : fed) {
    for (const auto& r : b.records()) times.push_back(FromProtoTime(r.event_time()));
  }
  EXPECT_TRUE(std::is_sorted(times.begin(), times.end()));
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), 6u);
  // A next poll after midnight feeds only the new record.
  fed.clear();
  clock_.Advance(absl::Minutes(1));
  Mutate(7);
  clock_.Advance(absl::Seconds(1));
  ASSERT_THAT(poller->PollOnce(), IsOk());
  EXPECT_THAT(Ids(fed), SizeIs(1));
}

// A burst larger than max_pages x page_limit: the newest are fed (oldest of them first), the poll
// says it is incomplete, and the position moves once to the newest.
TEST_F(AuditPollerTest, ABurstOverMaxPagesFeedsTheNewestAndSaysItIsIncomplete) {
  std::vector<std::string> logged;
  std::vector<LogBatch> fed;
  auto poller = Poller(
      [&fed](const LogBatch& b) {
        fed.push_back(b);
        return absl::OkStatus();
      },
      registry_, [&logged](AuditPollerOptions& o) {
        o.max_pages = 3;
        o.log = [&logged](const std::string& m) { logged.push_back(m); };
      });
  std::vector<absl::Time> made;
  for (int i = 1; i <= 10; ++i) {
    clock_.Advance(absl::Seconds(1));
    made.push_back(clock_.TimeNow());
    Mutate(i);
  }
  clock_.Advance(absl::Seconds(1));
  const int64_t calls = fake_.calls();
  ASSERT_THAT(poller->PollOnce(), IsOk());
  EXPECT_EQ(fake_.calls() - calls, 3);
  std::vector<absl::Time> times;
  for (const LogBatch& b : fed) {
    for (const auto& r : b.records()) times.push_back(FromProtoTime(r.event_time()));
  }
  EXPECT_EQ(times, std::vector<absl::Time>(made.end() - 6, made.end()));
  EXPECT_EQ(CounterSum(registry_, "palisade_audit_log_polls_total", {{"result", "incomplete"}}),
            1);
  EXPECT_EQ(poller->since(), made.back() - AuditPollerOptions().overlap);
  ASSERT_THAT(logged, SizeIs(1));
  EXPECT_THAT(logged[0], HasSubstr("poll incomplete"));
}

// Failures are logged once a run, and the recovery once.
TEST_F(AuditPollerTest, FailuresAreLoggedOnceARunAndTheRecovery) {
  Mutate(1);
  clock_.Advance(absl::Seconds(1));
  std::vector<std::string> logged;
  int calls = 0;
  auto poller = Poller(
      [&calls](const LogBatch&) {
        return ++calls <= 3 ? absl::UnavailableError("busy") : absl::OkStatus();
      },
      registry_,
      [&logged](AuditPollerOptions& o) {
        o.log = [&logged](const std::string& m) { logged.push_back(m); };
      });
  for (int i = 0; i < 3; ++i) {
    EXPECT_THAT(poller->PollOnce(), StatusIs(absl::StatusCode::kUnavailable));
  }
  ASSERT_THAT(poller->PollOnce(), IsOk());
  ASSERT_THAT(poller->PollOnce(), IsOk());
  ASSERT_THAT(logged, SizeIs(2));
  EXPECT_THAT(logged[0], HasSubstr("busy"));
  EXPECT_THAT(logged[1], HasSubstr("recovered"));
  EXPECT_EQ(CounterSum(registry_, "palisade_audit_log_polls_total", {{"result", "failed"}}), 3);
}

// A stopped poller reads no further page (Stop does not wait out a long poll).
TEST_F(AuditPollerTest, AStoppedPollerReadsNoFurtherPage) {
  Mutate(1);
  clock_.Advance(absl::Seconds(1));
  int fed = 0;
  auto poller = Poller(
      [&fed](const LogBatch&) {
        ++fed;
        return absl::OkStatus();
      },
      registry_);
  poller->Stop();
  const int64_t calls = fake_.calls();
  EXPECT_THAT(poller->PollOnce(), StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ(fake_.calls(), calls);
  EXPECT_EQ(fed, 0);
}

}  // namespace
}  // namespace palisade
