#include "services/actions/token_vetter.h"

#include <atomic>
#include <set>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/cloudflare/scripted_transport_for_tests.h"
#include "services/common/clock.h"
#include "services/common/fingerprint.h"

namespace palisade {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;

double CounterValue(prometheus::Registry& registry, const std::string& result) {
  double total = 0;
  for (const auto& family : registry.Collect()) {
    if (family.name != "palisade_token_candidates_total") continue;
    for (const auto& m : family.metric) {
      for (const auto& l : m.label) {
        if (l.name == "result" && l.value == result) total += m.counter.value;
      }
    }
  }
  return total;
}

// 40 random-looking characters, distinct per n.
std::string RandomToken(int n) { return absl::StrCat("Fake", std::string(30, 'x'), 100000 + n); }

Detection Candidate(const std::string& secret) {
  Detection d;
  d.rule_id = "cloudflare-token-leaked";
  d.kind = palisade::v1::TargetKind::TARGET_KIND_TOKEN_FINGERPRINT;
  d.key = Fingerprint(secret);
  d.secret = secret;
  d.evidence.push_back("GET /?cf_token=[token " + d.key + "]");
  return d;
}

class TokenVetterTest : public ::testing::Test {
 protected:
  void Make(TokenVetterOptions options = {}) {
    vetter_ = std::make_unique<TokenVetter>(
        options, clock_,
        [this](const std::string& secret) {
          calls_.push_back(secret);
          if (unavailable_) return TokenVerdict::kUnknown;
          return live_.count(secret) ? TokenVerdict::kLive : TokenVerdict::kNotAToken;
        },
        [this](const std::string& source, std::vector<Detection>& verified) {
          for (Detection& d : verified) decided_.emplace_back(source, std::move(d));
          decided_count_ += static_cast<int>(verified.size());
        },
        registry_);
  }
  void Submit(const std::string& source, const std::vector<std::string>& secrets) {
    std::vector<Detection> ds;
    for (const std::string& s : secrets) ds.push_back(Candidate(s));
    vetter_->Submit(source, ds, nullptr);
  }

  SimulatedClock clock_;
  prometheus::Registry registry_;
  std::set<std::string> live_;
  bool unavailable_ = false;
  std::vector<std::string> calls_;
  std::vector<std::pair<std::string, Detection>> decided_;
  std::atomic<int> decided_count_{0};  // read by the test while the worker decides
  std::unique_ptr<TokenVetter> vetter_;
};

// Issue 12 §2: seventy random token-shaped strings made seventy decisions. Now only the live
// token among them reaches the decision side; the fakes cost one verify each, once.
TEST_F(TokenVetterTest, OnlyAVerifiedTokenBecomesADecision) {
  Make();
  const std::string real = "cfut_LiveLeakedToken000000000000000000000000";
  live_.insert(real);
  std::vector<std::string> lines;
  for (int i = 0; i < 70; ++i) lines.push_back(RandomToken(i));
  lines.insert(lines.begin() + 35, real);
  Submit("access.log", lines);
  EXPECT_EQ(vetter_->RunOnce(), 71);
  ASSERT_THAT(decided_, SizeIs(1));
  EXPECT_EQ(decided_[0].first, "access.log");
  EXPECT_EQ(decided_[0].second.secret, real);
  EXPECT_EQ(CounterValue(registry_, "not_a_token"), 70);
  EXPECT_EQ(CounterValue(registry_, "live"), 1);

  // The same fakes again: the negative cache answers, no call is made.
  calls_.clear();
  lines.erase(lines.begin() + 35);
  Submit("access.log", lines);
  EXPECT_EQ(vetter_->RunOnce(), 0);
  EXPECT_THAT(calls_, IsEmpty());
  EXPECT_EQ(CounterValue(registry_, "cached_not_a_token"), 70);
  // The live token seen again is decided again (its decision is extended) without a call.
  Submit("access.log", {real});
  EXPECT_EQ(vetter_->RunOnce(), 0);
  EXPECT_THAT(decided_, SizeIs(2));
  EXPECT_EQ(CounterValue(registry_, "cached_live"), 1);
}

TEST_F(TokenVetterTest, VerifiesAreRateLimitedPerSource) {
  TokenVetterOptions options;
  options.burst_per_source = 5;
  options.refill_every = absl::Seconds(10);
  Make(options);
  std::vector<std::string> flood;
  for (int i = 0; i < 20; ++i) flood.push_back(RandomToken(i));
  Submit("a", flood);
  EXPECT_EQ(vetter_->RunOnce(), 5);
  EXPECT_EQ(CounterValue(registry_, "rate_limited"), 15);
  // Another source has a budget of its own.
  Submit("b", {RandomToken(100)});
  EXPECT_EQ(vetter_->RunOnce(), 1);
  // Twenty seconds later, two more verifies for "a".
  clock_.Advance(absl::Seconds(20));
  Submit("a", {RandomToken(200), RandomToken(201), RandomToken(202)});
  EXPECT_EQ(vetter_->RunOnce(), 2);
  EXPECT_EQ(CounterValue(registry_, "rate_limited"), 16);
}

// The batch source is the client's to choose: 1024 batches, each with a source of its own of
// 1 MiB and one token-shaped string, made 1024 buckets keyed by the whole source, held for the
// life of the process (1 GiB here, 4 GiB with 4 MiB sources). Each source still has a budget of
// its own, but what the buckets hold is bounded whatever the sources' size.
TEST_F(TokenVetterTest, HugeSourcesHoldAFewBytesOfBucketEach) {
  Make();
  std::string source(1 << 20, 's');
  for (int i = 0; i < 1024; ++i) {
    source.replace(0, 5, absl::StrCat(10000 + i));  // distinct
    Submit(source, {RandomToken(i)});
    EXPECT_EQ(vetter_->RunOnce(), 1);
  }
  EXPECT_EQ(CounterValue(registry_, "not_a_token"), 1024);
  EXPECT_EQ(CounterValue(registry_, "rate_limited"), 0);
  EXPECT_LT(vetter_->memory_bytes(), size_t{256} << 10);
}

// Past max_sources, new sources share one bucket; the sources that have one keep it.
TEST_F(TokenVetterTest, SourcesPastTheCapShareOneBucket) {
  TokenVetterOptions options;
  options.burst_per_source = 1;
  options.max_sources = 2;
  Make(options);
  int n = 0;
  for (const std::string source : {"a", "b", "c", "d", "a"}) {
    Submit(source, {RandomToken(n++)});
    vetter_->RunOnce();
  }
  // a and b have their own verify, c takes the shared one, d finds it spent, as does a again.
  EXPECT_EQ(CounterValue(registry_, "not_a_token"), 3);
  EXPECT_EQ(CounterValue(registry_, "rate_limited"), 2);
  // Ten seconds on, each bucket has one verify again: a, b and the shared one (c or e).
  clock_.Advance(absl::Seconds(10));
  for (const std::string source : {"a", "b", "c", "e"}) Submit(source, {RandomToken(n++)});
  EXPECT_EQ(vetter_->RunOnce(), 3);
  EXPECT_EQ(CounterValue(registry_, "rate_limited"), 3);
}

TEST_F(TokenVetterTest, NoAnswerIsRetriedWithBackoffThenGivenUp) {
  TokenVetterOptions options;
  options.max_attempts = 3;
  options.retry_backoff = absl::Seconds(30);
  Make(options);
  unavailable_ = true;
  Submit("a", {RandomToken(1)});
  EXPECT_EQ(vetter_->RunOnce(), 1);
  EXPECT_EQ(vetter_->pending(), 1u);
  EXPECT_EQ(vetter_->RunOnce(), 0);  // not due yet
  clock_.Advance(absl::Seconds(30));
  EXPECT_EQ(vetter_->RunOnce(), 1);
  clock_.Advance(absl::Seconds(59));
  EXPECT_EQ(vetter_->RunOnce(), 0);  // the backoff doubled
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(vetter_->RunOnce(), 1);
  EXPECT_EQ(vetter_->pending(), 0u);
  EXPECT_EQ(CounterValue(registry_, "gave_up"), 1);
  EXPECT_THAT(decided_, IsEmpty());
  // No verdict was cached: the next sighting is verified again.
  unavailable_ = false;
  live_.insert(RandomToken(1));
  Submit("a", {RandomToken(1)});
  EXPECT_EQ(vetter_->RunOnce(), 1);
  EXPECT_THAT(decided_, SizeIs(1));
}

TEST_F(TokenVetterTest, TheCacheAndTheQueueAreBounded) {
  TokenVetterOptions options;
  options.max_cached = 3;
  options.max_pending = 2;
  Make(options);
  Submit("a", {RandomToken(1), RandomToken(2), RandomToken(3)});
  EXPECT_EQ(CounterValue(registry_, "queue_full"), 1);
  EXPECT_EQ(vetter_->RunOnce(), 2);
  Submit("a", {RandomToken(3), RandomToken(4)});
  EXPECT_EQ(vetter_->RunOnce(), 2);
  // Four verdicts, three kept: the oldest (1) was forgotten and costs a call again; 4 did not.
  calls_.clear();
  Submit("a", {RandomToken(1), RandomToken(4)});
  EXPECT_EQ(vetter_->RunOnce(), 1);
  EXPECT_THAT(calls_, ElementsAre(RandomToken(1)));
}

TEST(TokenVetterNoEdgeTest, WithoutAVerifierNothingIsDecided) {
  SimulatedClock clock;
  prometheus::Registry registry;
  int decided = 0;
  TokenVetter vetter({}, clock, nullptr,
                     [&](const std::string&, std::vector<Detection>& v) { decided += v.size(); },
                     registry);
  std::vector<Detection> ds = {Candidate(RandomToken(1)), Candidate(RandomToken(2))};
  vetter.Submit("a", ds, nullptr);
  EXPECT_EQ(vetter.RunOnce(), 0);
  EXPECT_EQ(decided, 0);
  EXPECT_EQ(vetter.pending(), 0u);
  EXPECT_EQ(CounterValue(registry, "unverifiable"), 2);
}

TEST_F(TokenVetterTest, TheSameTokenTwiceInABatchIsOneCall) {
  Make();
  Submit("a", {RandomToken(1), RandomToken(1)});
  EXPECT_EQ(vetter_->RunOnce(), 1);
  EXPECT_EQ(CounterValue(registry_, "duplicate"), 1);
}

TEST_F(TokenVetterTest, TheWorkerVerifiesInTheBackground) {
  Make();
  live_.insert(RandomToken(7));
  vetter_->Start();
  Submit("a", {RandomToken(7)});
  // Polls with a wide deadline: the worker wakes on the submit.
  for (int i = 0; i < 6000 && decided_count_.load() == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  vetter_->Stop();
  EXPECT_THAT(decided_, SizeIs(1));
}

// Cloudflare's verify answers, as the vetter takes them: a 2xx the client cannot read
// (kInternal: a reply of an unexpected shape) is no answer yet, not "not a token" (a live leaked
// token would be dropped for good); a refusal from both endpoints is "not a token".
TEST(VerifyWithCloudflareTest, AnUnreadableAnswerIsNoAnswerYet) {
  SimulatedClock clock;
  const std::string leaked = "cfut_0123456789abcdefghijABCDEFGHIJ0123456789";
  auto verdict = [&](int status, const std::string& body) {
    prometheus::Registry registry;
    ::palisade::testing::ScriptedTransport transport(status, body);
    ClientOptions options;
    options.account_id = "0123456789abcdef0123456789abcdef";
    CloudflareClient client(transport, clock, options, Credentials{}, registry);
    return VerifyWithCloudflare(client, leaked);
  };
  EXPECT_EQ(verdict(200, R"({"success":"yes","errors":[],"messages":[],"result":{}})"),
            TokenVerdict::kUnknown);
  EXPECT_EQ(verdict(200, R"({"success":true,"errors":[],"messages":[],"result":)"
                         R"({"id":"ed17574386854bf78a67040be0a770b0","status":"active"}})"),
            TokenVerdict::kLive);
  EXPECT_EQ(verdict(401, R"({"success":false,"errors":[{"code":1000,"message":"Invalid API )"
                         R"(Token"}],"messages":[],"result":null})"),
            TokenVerdict::kNotAToken);
}

}  // namespace
}  // namespace palisade
