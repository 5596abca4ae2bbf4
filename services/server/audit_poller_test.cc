// The audit-log poller against the Cloudflare emulator over loopback HTTP, on one
// SimulatedClock (the emulator's record times, the client's budget, the poller's position).
#include "services/server/audit_poller.h"

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <map>
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

// The resource id of the emulator's newest audit record (what Ids reads from a fed line).
std::string NewestResourceId(const fake::FakeCloudflare& fake) {
  return fake.AuditLog().back()["resource"]["id"].get<std::string>();
}

// A busy account at steady state: its overlap holds many records already fed. A poll reads the
// new records' pages and one page of records fed before, not the whole overlap again; a quiet
// poll costs one call. (Before: every poll re-read the whole overlap, 21 calls here.)
TEST_F(AuditPollerTest, ASteadyPollReadsItsNewRecordsAndOnePageOfFedOnes) {
  std::vector<LogBatch> fed;
  auto poller = Poller(
      [&fed](const LogBatch& b) {
        fed.push_back(b);
        return absl::OkStatus();
      },
      registry_, [](AuditPollerOptions& o) { o.first_lookback = absl::Minutes(15); });
  for (int i = 1; i <= 40; ++i) {  // 40 records over the 10 minutes of the overlap: 20 pages
    Mutate(i);
    clock_.Advance(absl::Seconds(15));
  }
  ASSERT_THAT(poller->PollOnce(), IsOk());
  ASSERT_THAT(Ids(fed), SizeIs(40));
  for (int round = 0; round < 3; ++round) {
    fed.clear();
    std::vector<std::string> made;
    for (int i = 0; i < 2; ++i) {
      Mutate(100 + 2 * round + i);
      made.push_back(NewestResourceId(fake_));
    }
    clock_.Advance(absl::Seconds(30));
    const int64_t calls = fake_.calls();
    ASSERT_THAT(poller->PollOnce(), IsOk());
    EXPECT_EQ(fake_.calls() - calls, 2) << "round " << round;  // the new page, one page fed
    EXPECT_EQ(Ids(fed), made);
  }
  fed.clear();
  clock_.Advance(absl::Seconds(30));
  const int64_t calls = fake_.calls();
  ASSERT_THAT(poller->PollOnce(), IsOk());
  EXPECT_EQ(fake_.calls() - calls, 1);  // quiet
  EXPECT_THAT(fed, SizeIs(0));
  EXPECT_EQ(CounterSum(registry_, "palisade_audit_log_polls_total", {{"result", "ok"}}), 5);
}

// Polls whose pages (max_pages) run out inside the overlap's records already fed read every new
// record: they are not "incomplete". The one that reads the whole overlap again and runs out of
// pages in it says so ("overlap_truncated", one line).
TEST_F(AuditPollerTest, APollEndingInsideTheOverlapIsNotIncomplete) {
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
  int made = 0;
  for (int round = 0; round < 20; ++round) {  // 20 s a round: past full_read_every (5 min)
    for (int i = 0; i < 2; ++i) {
      Mutate(++made);
      clock_.Advance(absl::Seconds(10));
    }
    ASSERT_THAT(poller->PollOnce(), IsOk());
  }
  std::vector<std::string> ids = Ids(fed);
  EXPECT_THAT(ids, SizeIs(40));
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), 40u);
  EXPECT_EQ(CounterSum(registry_, "palisade_audit_log_polls_total", {{"result", "incomplete"}}),
            0);
  EXPECT_EQ(CounterSum(registry_, "palisade_audit_log_polls_total",
                       {{"result", "overlap_truncated"}}),
            1);
  EXPECT_EQ(CounterSum(registry_, "palisade_audit_log_polls_total", {{"result", "ok"}}), 19);
  ASSERT_THAT(logged, SizeIs(1));
  EXPECT_THAT(logged[0], HasSubstr("full read of the overlap truncated"));
}

// A full read of the overlap that runs out of pages before the position (late records deeper
// in it not read) is counted "overlap_truncated", not "ok", and logged once an episode: again
// only after a full read has reached the position. (Before: counted "ok", never logged.)
TEST_F(AuditPollerTest, AFullReadCutShortInsideTheOverlapIsCountedAndLoggedOnceAnEpisode) {
  std::vector<std::string> logged;
  std::vector<LogBatch> fed;
  auto poller = Poller(
      [&fed](const LogBatch& b) {
        fed.push_back(b);
        return absl::OkStatus();
      },
      registry_, [&logged](AuditPollerOptions& o) {
        o.max_pages = 3;  // 6 records a poll
        o.full_read_every = absl::ZeroDuration();  // every poll a full read
        o.log = [&logged](const std::string& m) { logged.push_back(m); };
      });
  int made = 0;
  std::vector<std::string> results;
  auto poll = [&](int records) {
    for (int i = 0; i < records; ++i) Mutate(++made);
    clock_.Advance(absl::Seconds(10));
    const std::map<std::string, double> before = {
        {"ok", CounterSum(registry_, "palisade_audit_log_polls_total", {{"result", "ok"}})},
        {"overlap_truncated", CounterSum(registry_, "palisade_audit_log_polls_total",
                                         {{"result", "overlap_truncated"}})}};
    ASSERT_THAT(poller->PollOnce(), IsOk());
    for (const auto& [result, count] : before) {
      if (CounterSum(registry_, "palisade_audit_log_polls_total", {{"result", result}}) > count) {
        results.push_back(result);
      }
    }
  };
  for (int i = 0; i < 5; ++i) poll(2);  // 2, 4, 6 records in the overlap: read; 8, 10: not
  EXPECT_THAT(logged, SizeIs(1));
  clock_.Advance(absl::Minutes(11));
  poll(2);  // 12 records, the position moves past the first 10
  poll(0);  // 2 records: the position reached
  poll(2);
  poll(2);  // 6 above the position, the page after them not read
  EXPECT_EQ(results, (std::vector<std::string>{"ok", "ok", "ok", "overlap_truncated",
                                               "overlap_truncated", "overlap_truncated", "ok",
                                               "ok", "overlap_truncated"}));
  ASSERT_THAT(logged, SizeIs(2));
  EXPECT_THAT(logged[0], HasSubstr("full read of the overlap truncated"));
  std::vector<std::string> ids = Ids(fed);
  EXPECT_THAT(ids, SizeIs(made));
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), ids.size());
}

// A record the API lists late (after others newer than it), inside the overlap, lies below
// records already fed (the API lists by time): the polls that stop at a page of fed records do
// not reach it; the next full read feeds it, once. (Before, the emulator listed in insertion
// order, the late record on top, and a plain poll fed it.)
TEST_F(AuditPollerTest, ALateRecordInsideTheOverlapIsFedByTheFullReadExactlyOnce) {
  std::vector<LogBatch> fed;
  auto poller = Poller(
      [&fed](const LogBatch& b) {
        fed.push_back(b);
        return absl::OkStatus();
      },
      registry_);
  for (int i = 1; i <= 10; ++i) {
    Mutate(i);
    clock_.Advance(absl::Seconds(20));
  }
  ASSERT_THAT(poller->PollOnce(), IsOk());  // a full read (the first)
  ASSERT_THAT(Ids(fed), SizeIs(10));
  const absl::Time now = clock_.TimeNow();
  clock_.Set(now - absl::Minutes(2));  // older than the newest fed, inside the overlap
  Mutate(50);
  const std::string late = NewestResourceId(fake_);
  clock_.Set(now);
  // Polls every interval (a minute): a page each, then the full read, 5 minutes after the last
  // one at the latest (4m30s here: the next poll would be 5m30s after it), then a page again.
  std::vector<int64_t> calls;
  std::vector<std::vector<std::string>> fed_by_poll;
  for (const absl::Duration wait : {absl::Seconds(30), absl::Seconds(60), absl::Seconds(60),
                                    absl::Seconds(60), absl::Seconds(60), absl::Seconds(60)}) {
    clock_.Advance(wait);
    fed.clear();
    const int64_t before = fake_.calls();
    ASSERT_THAT(poller->PollOnce(), IsOk());
    calls.push_back(fake_.calls() - before);
    fed_by_poll.push_back(Ids(fed));
  }
  EXPECT_EQ(calls, (std::vector<int64_t>{1, 1, 1, 1, 6, 1}));  // 11 records: 6 pages
  const std::vector<std::string> none;
  EXPECT_EQ(fed_by_poll, (std::vector<std::vector<std::string>>{none, none, none, none,
                                                                {late}, none}));
}

// The documented tolerance: a record listed up to overlap - full_read_every + interval after its
// time, below records fed, is fed by the next full read; one listed later is not (its time is
// below the position by then). Here 10m - 5m + 1m = 6m: listed 5m55s late, fed; 6m10s, missed.
TEST_F(AuditPollerTest, ARecordListedLaterThanTheToleranceIsMissed) {
  std::vector<LogBatch> fed;
  auto poller = Poller(
      [&fed](const LogBatch& b) {
        fed.push_back(b);
        return absl::OkStatus();
      },
      registry_);
  for (int i = 1; i <= 10; ++i) {
    Mutate(i);
    clock_.Advance(absl::Seconds(20));
  }
  ASSERT_THAT(poller->PollOnce(), IsOk());  // a full read
  const absl::Time full_read = clock_.TimeNow();
  clock_.Set(full_read - absl::Seconds(355));
  Mutate(50);
  const std::string in_time = NewestResourceId(fake_);
  clock_.Set(full_read - absl::Seconds(370));
  Mutate(51);
  clock_.Set(full_read);
  fed.clear();
  // A poll a minute, each with a record made just before it (the position follows it); the
  // fifth, 5 minutes after the last full read, reads the overlap again.
  for (int i = 1; i <= 6; ++i) {
    clock_.Set(full_read + i * absl::Minutes(1) - absl::Seconds(1));
    Mutate(60 + i);
    clock_.Set(full_read + i * absl::Minutes(1));
    ASSERT_THAT(poller->PollOnce(), IsOk());
  }
  std::vector<std::string> ids = Ids(fed);
  EXPECT_THAT(ids, SizeIs(7));  // the 6 new records and the one listed in time
  EXPECT_EQ(std::count(ids.begin(), ids.end(), in_time), 1);
}

// Full reads are never further apart than full_read_every, whatever the interval: at 4m59s
// every poll is one (">=" made them 9m58s apart, and a record listed 5m10s late, below records
// fed, fell below the position before the next full read).
TEST_F(AuditPollerTest, FullReadsAreNeverFurtherApartThanFullReadEvery) {
  std::vector<LogBatch> fed;
  auto poller = Poller(
      [&fed](const LogBatch& b) {
        fed.push_back(b);
        return absl::OkStatus();
      },
      registry_, [](AuditPollerOptions& o) { o.interval = absl::Minutes(5) - absl::Seconds(1); });
  for (int i = 1; i <= 10; ++i) {
    Mutate(i);
    clock_.Advance(absl::Seconds(20));
  }
  ASSERT_THAT(poller->PollOnce(), IsOk());  // a full read
  const absl::Time full_read = clock_.TimeNow();
  clock_.Set(full_read - absl::Seconds(310));  // below every record fed
  Mutate(50);
  const std::string late = NewestResourceId(fake_);
  fed.clear();
  for (int i = 1; i <= 3; ++i) {
    clock_.Set(full_read + i * absl::Seconds(299) - absl::Seconds(1));
    Mutate(60 + i);
    clock_.Set(full_read + i * absl::Seconds(299));
    ASSERT_THAT(poller->PollOnce(), IsOk());
  }
  std::vector<std::string> ids = Ids(fed);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), late), 1);
}

// A clock stepped back (the time since the last full read negative) reads the overlap at once,
// rather than no full read until the clock has caught up.
TEST_F(AuditPollerTest, AClockSteppedBackForcesAFullRead) {
  std::vector<LogBatch> fed;
  auto poller = Poller(
      [&fed](const LogBatch& b) {
        fed.push_back(b);
        return absl::OkStatus();
      },
      registry_);
  for (int i = 1; i <= 10; ++i) {
    Mutate(i);
    clock_.Advance(absl::Seconds(20));
  }
  ASSERT_THAT(poller->PollOnce(), IsOk());  // a full read
  const absl::Time full_read = clock_.TimeNow();
  clock_.Set(full_read - absl::Seconds(100));  // below a page of records fed
  Mutate(50);
  const std::string late = NewestResourceId(fake_);
  clock_.Set(full_read - absl::Seconds(10));
  fed.clear();
  ASSERT_THAT(poller->PollOnce(), IsOk());
  EXPECT_EQ(Ids(fed), std::vector<std::string>{late});
}

// After a failed poll (a page read or the feed) the next poll reads the whole overlap: a record
// it read but did not feed may lie below records fed before (listed late), where the next poll,
// stopping at the first page of fed records, would not reach it once new records shift the
// pages.
TEST_F(AuditPollerTest, AFailedPollIsFollowedByAFullRead) {
  std::vector<LogBatch> fed;
  bool refuse = false;
  auto poller = Poller(
      [&](const LogBatch& b) {
        if (refuse) return absl::UnavailableError("busy");
        fed.push_back(b);
        return absl::OkStatus();
      },
      registry_);
  const absl::Time start = clock_.TimeNow();
  for (int i = 1; i <= 10; ++i) {  // start + 0s .. start + 180s
    Mutate(i);
    clock_.Advance(absl::Seconds(20));
  }
  ASSERT_THAT(poller->PollOnce(), IsOk());  // a full read at start + 200s
  fed.clear();
  clock_.Set(start + absl::Seconds(150));  // between the 8th and 9th records, listed late
  Mutate(50);
  const std::string late = NewestResourceId(fake_);
  clock_.Set(start + absl::Seconds(210));
  Mutate(51);
  const std::string first = NewestResourceId(fake_);
  // Pages (newest first, 2 a page): [51, 10] [9, late] [8, 7]: read up to the page of fed
  // records, the late one among them, then the feed refuses.
  clock_.Set(start + absl::Seconds(230));
  refuse = true;
  EXPECT_THAT(poller->PollOnce(), StatusIs(absl::StatusCode::kUnavailable));
  refuse = false;
  clock_.Set(start + absl::Seconds(240));
  Mutate(52);
  const std::string second = NewestResourceId(fake_);
  // Now [52, 51] [10, 9] [late, 8]: a poll stopping at [10, 9] would miss the late one.
  clock_.Set(start + absl::Seconds(260));
  int64_t calls = fake_.calls();
  ASSERT_THAT(poller->PollOnce(), IsOk());
  EXPECT_EQ(fake_.calls() - calls, 7);  // 13 records: the whole overlap
  EXPECT_EQ(Ids(fed), (std::vector<std::string>{late, first, second}));
  clock_.Advance(absl::Seconds(30));
  calls = fake_.calls();
  ASSERT_THAT(poller->PollOnce(), IsOk());
  EXPECT_EQ(fake_.calls() - calls, 1);  // a full read done: a page again
}

// A restart reads the overlap once (records the API may have listed late while it was down),
// feeding only the record made meanwhile; the polls after it read a page.
TEST_F(AuditPollerTest, ARestartReadsTheOverlapOnceThenAPage) {
  std::vector<LogBatch> fed;
  auto feed = [&fed](const LogBatch& b) {
    fed.push_back(b);
    return absl::OkStatus();
  };
  auto poller = Poller(feed, registry_);
  for (int i = 1; i <= 10; ++i) {
    Mutate(i);
    clock_.Advance(absl::Seconds(20));
  }
  ASSERT_THAT(poller->PollOnce(), IsOk());
  ASSERT_THAT(Ids(fed), SizeIs(10));
  fed.clear();
  Mutate(11);
  const std::string meanwhile = NewestResourceId(fake_);
  clock_.Advance(absl::Seconds(30));
  // Restored by the poller that just read the overlap (a new one starts with none read): its
  // next poll reads the overlap again only because Restore forgot that read.
  ASSERT_THAT(poller->Restore(), IsOk());
  int64_t calls = fake_.calls();
  ASSERT_THAT(poller->PollOnce(), IsOk());
  EXPECT_EQ(fake_.calls() - calls, 6);  // 11 records: the overlap, once
  EXPECT_EQ(Ids(fed), std::vector<std::string>{meanwhile});
  fed.clear();
  clock_.Advance(absl::Seconds(60));
  calls = fake_.calls();
  ASSERT_THAT(poller->PollOnce(), IsOk());
  EXPECT_EQ(fake_.calls() - calls, 1);
  EXPECT_THAT(fed, SizeIs(0));
}

}  // namespace
}  // namespace palisade
