#include "services/actions/dispatcher.h"

#include <map>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/metrics_for_tests.h"
#include "services/common/proto_time.h"
#include "services/store/sql_for_tests.h"

namespace palisade {
namespace {

using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::SizeIs;

// A scriptable actuator that records what it was asked to do.
class FakeActuator final : public Actuator {
 public:
  std::string name() const override { return label; }
  bool AdoptsExisting() const override { return adopts; }
  void Restore(const std::vector<EdgeRef>& made) override {
    for (const EdgeRef& r : made) restored.push_back(r.id);
  }
  void Run(std::vector<ActionOp*>& ops) override {
    for (ActionOp* op : ops) {
      calls.push_back(std::string(op->kind == ActionOp::Kind::kApply ? "apply " : "remove ") +
                      op->decision.id() + (op->edge.id.empty() ? "" : " " + op->edge.id));
      secrets.push_back(op->secret);
      if (during_run) {
        // Run a copy: a hook may clear or replace during_run, which would destroy the closure
        // running (and its captures) under it.
        const std::function<void()> hook = during_run;
        hook();
      }
      if (needs_secret && op->kind == ActionOp::Kind::kApply && op->secret.empty()) {
        // As TokenActuator: a fingerprint's token is reached only through its secret.
        op->result = absl::FailedPreconditionError("the secret is no longer in memory");
        continue;
      }
      if (!failures.empty()) {
        op->result = failures.front();
        failures.pop_front();
        continue;
      }
      op->result = absl::OkStatus();
      const std::string& target = op->decision.target().value();
      if (op->kind == ActionOp::Kind::kRemove) {
        if (auto it = objects.find(target); it != objects.end() && it->second == op->edge.id) {
          objects.erase(it);
        }
        continue;
      }
      // Like the edge's 10009: an adopting actuator takes over the object already there.
      auto it = objects.find(target);
      if (adopts && it != objects.end()) {
        op->edge = {it->second, "", false};
        continue;
      }
      op->edge = {"edge-" + op->decision.id(), "", false};
      objects[target] = op->edge.id;
    }
  }
  std::string label = "fake";
  bool adopts = false;
  bool needs_secret = false;
  // What is at the edge: object id by target value.
  std::map<std::string, std::string> objects;
  std::vector<std::string> restored;
  std::vector<std::string> calls;
  std::vector<std::string> secrets;  // each call's op.secret
  std::deque<absl::Status> failures;
  std::function<void()> during_run;
};

class DispatcherTest : public ::testing::Test {
 protected:
  DispatcherTest() : dispatcher_(clock_, Options(), registry_) {
    auto fake = std::make_unique<FakeActuator>();
    fake_ = fake.get();
    dispatcher_.AddActuator(palisade::v1::ACTUATOR_ACCESS_RULE, std::move(fake));
  }
  static DispatcherOptions Options() {
    DispatcherOptions o;
    o.max_attempts = 3;
    return o;
  }
  DecisionUpdate Update(DecisionChange change, const std::string& id) {
    DecisionUpdate u;
    u.change = change;
    u.decision.set_id(id);
    u.decision.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
    u.decision.mutable_target()->set_value("203.0.113.7");
    return u;
  }
  // The revocation of a leaked token known by its fingerprint, with the secret that reaches it.
  DecisionUpdate LeakedTokenRevocation() {
    DecisionUpdate u = Update(DecisionChange::kCreated, "leak");
    u.decision.set_actuator(palisade::v1::ACTUATOR_TOKEN_REVOCATION);
    u.decision.mutable_target()->set_kind(palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT);
    u.decision.mutable_target()->set_value("fp:0123456789abcdef");
    u.secret = "cfut_leakedleakedleakedleakedleakedleaked";
    return u;
  }
  // The table's stronger-claim path: the withdrawn decision names its replacement, the new one
  // the decision it replaced.
  static DecisionUpdate Replaced(DecisionUpdate u, const std::string& replacing) {
    u.decision.set_replaced_by(replacing);
    return u;
  }
  static DecisionUpdate Replacing(DecisionUpdate u, const std::string& replaced) {
    u.decision.set_replaces(replaced);
    return u;
  }
  double Actions(const std::string& result) {
    return ::palisade::testing::CounterSum(registry_, "palisade_actions_total",
                                           {{"result", result}});
  }

  SimulatedClock clock_;
  prometheus::Registry registry_;
  // A store in a new file, the dispatcher's from now on.
  absl::StatusOr<std::unique_ptr<Store>> FreshStore(const std::string& name) {
    const std::string path = absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
    std::remove(path.c_str());
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(path);
    if (store.ok()) dispatcher_.SetStore(store->get());
    return store;
  }

  // A second dispatcher over `store`, as palisaded after a restart: its own fake access-rule
  // actuator, not restored yet.
  struct Restarted {
    Restarted(Clock& clock, Store* store) : dispatcher(clock, Options(), registry) {
      auto fake = std::make_unique<FakeActuator>();
      actuator = fake.get();
      dispatcher.AddActuator(palisade::v1::ACTUATOR_ACCESS_RULE, std::move(fake));
      dispatcher.SetStore(store);
    }
    prometheus::Registry registry;
    Dispatcher dispatcher;
    FakeActuator* actuator;
  };
  std::unique_ptr<Restarted> Restart(Store* store) {
    return std::make_unique<Restarted>(clock_, store);
  }
  // The chain of AHandOverThroughTwoCancelledReplacementsSurvivesARestart, in `store`, up to
  // the process's "death": a challenge a at the edge replaced by b, b by c, c by d (a block on
  // the IP list, capped at one item), each of b, c cancelled while held; d held, and "fresh"
  // (another target) recorded but not heard.
  void RecordTwoCancelledReplacements(Store* store) {
    GuardOptions options;
    options.max_active_per_actuator = 1;
    dispatcher_.SetGuard(std::make_unique<Guard>(options));
    dispatcher_.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::make_unique<FakeActuator>());
    auto record = [&](DecisionChange change, const std::string& id, palisade::v1::Actuator kind,
                      const std::string& target, const std::string& replaces = "",
                      const std::string& replaced_by = "") {
      DecisionUpdate u = Update(change, id);
      u.decision.set_actuator(kind);
      u.decision.mutable_target()->set_value(target);
      u.decision.set_active(change == DecisionChange::kCreated);
      u.decision.set_replaces(replaces);
      u.decision.set_replaced_by(replaced_by);
      u.outbox_seq =
          *store->RecordDecision(u.decision, nullptr, change == DecisionChange::kCreated);
      return u;
    };
    constexpr auto kList = palisade::v1::ACTUATOR_IP_LIST;
    constexpr auto kRule = palisade::v1::ACTUATOR_ACCESS_RULE;
    dispatcher_.OnDecision(record(DecisionChange::kCreated, "full", kList, "203.0.113.9"));
    dispatcher_.OnDecision(record(DecisionChange::kCreated, "a", kRule, "203.0.113.7"));
    dispatcher_.RunOnce();
    dispatcher_.OnDecision(record(DecisionChange::kWithdrawn, "a", kRule, "203.0.113.7", "", "b"));
    dispatcher_.OnDecision(record(DecisionChange::kCreated, "b", kList, "203.0.113.7", "a"));
    dispatcher_.RunOnce();
    ASSERT_EQ(dispatcher_.held(), 1u);  // b, over the list's cap
    dispatcher_.OnDecision(
        record(DecisionChange::kWithdrawn, "b", kList, "203.0.113.7", "a", "c"));
    dispatcher_.OnDecision(record(DecisionChange::kCreated, "c", kList, "203.0.113.7", "b"));
    dispatcher_.RunOnce();
    ASSERT_EQ(dispatcher_.held(), 1u);  // c
    dispatcher_.OnDecision(
        record(DecisionChange::kWithdrawn, "c", kList, "203.0.113.7", "b", "d"));
    // Recorded, not heard before the process "dies": an unrelated block on another target.
    record(DecisionChange::kCreated, "fresh", kList, "203.0.113.1");
    dispatcher_.OnDecision(record(DecisionChange::kCreated, "d", kList, "203.0.113.7", "c"));
    dispatcher_.RunOnce();
    dispatcher_.RunOnce();
    ASSERT_EQ(dispatcher_.held(), 1u);  // d
    ASSERT_THAT(fake_->calls, ElementsAre("apply a"));
  }
  // The restart after it, with the list's cap raised and a budget of one a minute; `lists` is
  // set to its IP list actuator.
  std::unique_ptr<Restarted> RestartWithABudgetOfOne(Store* store, FakeActuator** lists) {
    std::unique_ptr<Restarted> r = Restart(store);
    GuardOptions restarted;
    restarted.max_new_per_minute = 1;
    r->dispatcher.SetGuard(std::make_unique<Guard>(restarted));
    auto list = std::make_unique<FakeActuator>();
    *lists = list.get();
    (*lists)->label = "list";
    r->dispatcher.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::move(list));
    return r;
  }
  DecisionUpdate RemoveBeforeItsSuccessor(Store* store, bool c_row);
  // A leaked token's revocation, durable in `store`, still being retried through an outage
  // (three attempts, its op in the outbox): a restart now loses its secret. Returns its update.
  DecisionUpdate RevocationPendingThroughAnOutage(Store* store) {
    auto tokens = std::make_unique<FakeActuator>();
    FakeActuator* revoker = tokens.get();
    revoker->needs_secret = true;
    dispatcher_.AddActuator(palisade::v1::ACTUATOR_TOKEN_REVOCATION, std::move(tokens));
    revoker->failures = {absl::UnavailableError("1"), absl::UnavailableError("2"),
                         absl::UnavailableError("3")};
    DecisionUpdate u = LeakedTokenRevocation();
    u.decision.set_active(true);
    *u.decision.mutable_expiry() = ToProtoTime(clock_.TimeNow() + absl::Hours(24));
    u.outbox_seq = *store->RecordDecision(u.decision, nullptr, true);
    dispatcher_.OnDecision(u);
    for (int i = 0; i < 3; ++i) {
      dispatcher_.RunOnce();
      clock_.Advance(absl::Minutes(10));
    }
    EXPECT_THAT(revoker->calls, SizeIs(3));
    EXPECT_THAT(*store->LoadOutbox(), SizeIs(1));  // still to do
    return u;
  }
  // The token seen again: its decision extended (a later expiry), with the secret.
  DecisionUpdate SeenAgain(const DecisionUpdate& created) {
    DecisionUpdate u = created;
    u.change = DecisionChange::kExtended;
    u.outbox_seq = 0;
    *u.decision.mutable_expiry() = ToProtoTime(clock_.TimeNow() + absl::Hours(24));
    u.decision.set_extensions(created.decision.extensions() + 1);
    return u;
  }

  Dispatcher dispatcher_;
  FakeActuator* fake_;
};

TEST_F(DispatcherTest, ApplyThenRemoveWhatWasMade) {
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "d1"));
  EXPECT_EQ(dispatcher_.pending(), 1u);
  EXPECT_EQ(dispatcher_.RunOnce(), 1);
  EXPECT_EQ(dispatcher_.edges().at("d1").id, "edge-d1");
  dispatcher_.OnDecision(Update(DecisionChange::kExtended, "d1"));
  dispatcher_.OnDecision(Update(DecisionChange::kExpired, "d1"));
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply d1", "remove d1 edge-d1"));
  EXPECT_THAT(dispatcher_.edges(), IsEmpty());
  EXPECT_EQ(Actions("applied"), 2);
}

TEST_F(DispatcherTest, TransientFailuresAreRetriedWithBackoff) {
  fake_->failures = {absl::UnavailableError("503"), absl::ResourceExhaustedError("429")};
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "d1"));
  dispatcher_.RunOnce();
  EXPECT_EQ(dispatcher_.RunOnce(), 0);  // not due yet
  clock_.Advance(absl::Seconds(1));
  dispatcher_.RunOnce();
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(dispatcher_.RunOnce(), 0);  // second backoff is 2 s
  clock_.Advance(absl::Seconds(1));
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, SizeIs(3));
  EXPECT_EQ(Actions("retried"), 2);
  EXPECT_EQ(Actions("applied"), 1);
  EXPECT_EQ(dispatcher_.pending(), 0u);
}

// A reply over the client's byte caps (kOutOfRange: a listing that would not end, a body too
// large) is the API misbehaving, not the decision: retried from the outbox like an outage,
// never remembered as failed for good.
TEST_F(DispatcherTest, AReplyOverTheCapsIsRetried) {
  fake_->failures = {absl::OutOfRangeError("the reply is over the cap of 8388608 bytes")};
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "d1"));
  dispatcher_.RunOnce();
  clock_.Advance(absl::Seconds(1));
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, SizeIs(2));
  EXPECT_EQ(Actions("retried"), 1);
  EXPECT_EQ(dispatcher_.edges().count("d1"), 1u);
  EXPECT_THAT(dispatcher_.FailedForGood(), IsEmpty());
}

TEST_F(DispatcherTest, RetriesAreBounded) {
  fake_->failures = {absl::UnavailableError("1"), absl::UnavailableError("2"),
                     absl::UnavailableError("3"), absl::UnavailableError("4")};
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "d1"));
  for (int i = 0; i < 10; ++i) {
    dispatcher_.RunOnce();
    clock_.Advance(absl::Minutes(10));
  }
  EXPECT_THAT(fake_->calls, SizeIs(3));
  EXPECT_EQ(Actions("failed"), 1);
  EXPECT_EQ(dispatcher_.pending(), 0u);
}

// A revocation is never given up on while its failures are transient: a leaked token stays live
// until it is revoked, and nothing else tries again (the reconciler does not look at tokens).
// It was dropped after max_attempts, with no failure record.
TEST_F(DispatcherTest, ARevocationOutlivesItsAttemptsWhileFailuresAreTransient) {
  auto tokens = std::make_unique<FakeActuator>();
  FakeActuator* revoker = tokens.get();
  dispatcher_.AddActuator(palisade::v1::ACTUATOR_TOKEN_REVOCATION, std::move(tokens));
  revoker->failures = {absl::UnavailableError("1"), absl::UnavailableError("2"),
                       absl::UnavailableError("3")};
  DecisionUpdate u = LeakedTokenRevocation();
  dispatcher_.OnDecision(u);
  for (int i = 0; i < 10; ++i) {
    dispatcher_.RunOnce();
    clock_.Advance(absl::Minutes(10));
  }
  EXPECT_THAT(revoker->calls, SizeIs(4));
  // The secret is the only way to a fingerprint's token: it is still there on the last try.
  EXPECT_THAT(revoker->secrets, Each(u.secret));
  EXPECT_EQ(dispatcher_.edges().count("leak"), 1u);
  EXPECT_EQ(dispatcher_.pending(), 0u);
  EXPECT_EQ(Actions("failed"), 0);
  EXPECT_THAT(dispatcher_.FailedForGood(), IsEmpty());
}

// The secret lives in memory only: a restart while the revocation is still being retried loses
// it. The restored op then fails for good, and that is kept as a failure record naming the
// decision (with a "failed" outcome and a log line), never dropped in silence.
TEST_F(DispatcherTest, ARevocationWhoseSecretARestartLostIsAFailureRecord) {
  auto store = FreshStore("revoke.db");
  ASSERT_TRUE(store.ok());
  RevocationPendingThroughAnOutage(store->get());
  ASSERT_FALSE(HasFailure());

  Restarted r(clock_, store->get());
  auto restored = std::make_unique<FakeActuator>();
  FakeActuator* after = restored.get();
  after->needs_secret = true;
  r.dispatcher.AddActuator(palisade::v1::ACTUATOR_TOKEN_REVOCATION, std::move(restored));
  std::vector<ActionOutcome> outcomes;
  r.dispatcher.SetObserver([&](const ActionOutcome& o) { outcomes.push_back(o); });
  ASSERT_TRUE(r.dispatcher.Restore().ok());
  r.dispatcher.RunOnce();
  EXPECT_THAT(after->calls, ElementsAre("apply leak"));
  EXPECT_THAT(r.dispatcher.FailedForGood(), ElementsAre(Pair("leak", ::testing::_)));
  ASSERT_THAT(outcomes, SizeIs(1));
  EXPECT_EQ(outcomes[0].outcome, "failed");
  EXPECT_THAT(*(*store)->LoadOutbox(), IsEmpty());
  std::vector<EdgeRow> edges = *(*store)->LoadEdges();
  ASSERT_THAT(edges, SizeIs(1));
  EXPECT_EQ(edges[0].decision_id, "leak");
  EXPECT_EQ(edges[0].container, Dispatcher::kFailedContainer);
}

// The revocation a restart failed for lack of its secret was never tried again, even when the
// live token was seen again with its secret: the extension carried none, and the dispatcher
// ignored extensions. Now an extension bringing the secret queues a durable apply in place of
// the failure record; the secret stays in memory (not in the outbox, not in a log line).
TEST_F(DispatcherTest, ARevocationFailedForLackOfItsSecretIsTriedAgainWhenTheTokenIsSeenAgain) {
  auto store = FreshStore("revoke_again.db");
  ASSERT_TRUE(store.ok());
  const DecisionUpdate created = RevocationPendingThroughAnOutage(store->get());
  ASSERT_FALSE(HasFailure());
  Restarted r(clock_, store->get());
  auto restored = std::make_unique<FakeActuator>();
  FakeActuator* after = restored.get();
  after->needs_secret = true;
  r.dispatcher.AddActuator(palisade::v1::ACTUATOR_TOKEN_REVOCATION, std::move(restored));
  ASSERT_TRUE(r.dispatcher.Restore().ok());
  r.dispatcher.RunOnce();
  ASSERT_THAT(r.dispatcher.FailedForGood(), ElementsAre(Pair("leak", ::testing::_)));

  // An extension without the secret changes nothing.
  DecisionUpdate bare = SeenAgain(created);
  bare.secret.clear();
  r.dispatcher.OnDecision(bare);
  EXPECT_EQ(r.dispatcher.pending(), 0u);
  EXPECT_THAT(r.dispatcher.FailedForGood(), SizeIs(1));

  clock_.Advance(absl::Minutes(1));
  const DecisionUpdate seen = SeenAgain(created);
  ::testing::internal::CaptureStderr();
  r.dispatcher.OnDecision(seen);
  EXPECT_THAT(r.dispatcher.FailedForGood(), IsEmpty());
  EXPECT_EQ(r.dispatcher.pending(), 1u);
  r.dispatcher.OnDecision(seen);  // seen once more while queued: still one apply
  EXPECT_EQ(r.dispatcher.pending(), 1u);
  std::vector<OutboxRow> outbox = *(*store)->LoadOutbox();  // durable, without the secret
  ASSERT_THAT(outbox, SizeIs(1));
  EXPECT_TRUE(outbox[0].apply);
  EXPECT_EQ(outbox[0].decision.DebugString().find("cfut_"), std::string::npos);
  EXPECT_THAT(*(*store)->LoadEdges(), IsEmpty());  // the failure record is gone

  r.dispatcher.RunOnce();
  const std::string logged = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(logged.find("cfut_"), std::string::npos) << logged;
  EXPECT_THAT(after->calls, ElementsAre("apply leak", "apply leak"));
  ASSERT_THAT(after->secrets, SizeIs(2));
  EXPECT_EQ(after->secrets[1], created.secret);
  EXPECT_THAT(r.dispatcher.FailedForGood(), IsEmpty());
  EXPECT_EQ(r.dispatcher.edges().count("leak"), 1u);
  EXPECT_THAT(*(*store)->LoadOutbox(), IsEmpty());
  std::vector<EdgeRow> edges = *(*store)->LoadEdges();
  ASSERT_THAT(edges, SizeIs(1));
  EXPECT_NE(edges[0].container, Dispatcher::kFailedContainer);
}

// After a restart, a revocation still queued, or held by the guard's budget, has lost its secret:
// an extension that brings it back gives it to that apply, which then revokes the token instead
// of failing for good.
class SecretFromAnExtensionTest : public DispatcherTest,
                                  public ::testing::WithParamInterface<bool> {};

TEST_P(SecretFromAnExtensionTest, AQueuedOrHeldRevocationLackingItsSecretGetsItFromAnExtension) {
  const bool held = GetParam();
  auto store = FreshStore(held ? "revoke_held.db" : "revoke_queued.db");
  ASSERT_TRUE(store.ok());
  const DecisionUpdate created = RevocationPendingThroughAnOutage(store->get());
  ASSERT_FALSE(HasFailure());
  Restarted r(clock_, store->get());
  auto restored = std::make_unique<FakeActuator>();
  FakeActuator* after = restored.get();
  after->needs_secret = true;
  r.dispatcher.AddActuator(palisade::v1::ACTUATOR_TOKEN_REVOCATION, std::move(restored));
  if (held) {
    GuardOptions options;
    options.max_revocations_per_minute = 0;
    r.dispatcher.SetGuard(std::make_unique<Guard>(options));
  }
  ASSERT_TRUE(r.dispatcher.Restore().ok());
  if (held) {
    r.dispatcher.RunOnce();
    ASSERT_EQ(r.dispatcher.held(), 1u);
  }
  r.dispatcher.OnDecision(SeenAgain(created));
  EXPECT_EQ(r.dispatcher.held(), held ? 1u : 0u);  // given the secret, not queued twice
  EXPECT_EQ(r.dispatcher.pending(), held ? 0u : 1u);
  if (held) {
    EXPECT_EQ(r.dispatcher.ReleaseHeld(1), 1);
  }
  r.dispatcher.RunOnce();
  EXPECT_THAT(after->calls, ElementsAre("apply leak"));
  EXPECT_THAT(after->secrets, ElementsAre(created.secret));
  EXPECT_THAT(r.dispatcher.FailedForGood(), IsEmpty());
  EXPECT_EQ(r.dispatcher.edges().count("leak"), 1u);
  EXPECT_THAT(*(*store)->LoadOutbox(), IsEmpty());
}

INSTANTIATE_TEST_SUITE_P(QueuedOrHeld, SecretFromAnExtensionTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Held" : "Queued";
                         });

// A revocation that failed for good with its secret in hand (the token is IP-restricted, or is
// palisaded's own) is not tried again at each sighting of the token: only one whose secret may
// have been missing (restored from the store, its secret gone with the process) is, once.
TEST_F(DispatcherTest, ARevocationThatFailedWithItsSecretIsNotTriedAgainAtEachSighting) {
  auto store = FreshStore("revoke_restricted.db");
  ASSERT_TRUE(store.ok());
  auto tokens = std::make_unique<FakeActuator>();
  FakeActuator* revoker = tokens.get();
  dispatcher_.AddActuator(palisade::v1::ACTUATOR_TOKEN_REVOCATION, std::move(tokens));
  const absl::Status restricted = absl::FailedPreconditionError("LIVE but IP-restricted");
  revoker->failures = {restricted};
  DecisionUpdate created = LeakedTokenRevocation();
  created.decision.set_active(true);
  created.outbox_seq = *(*store)->RecordDecision(created.decision, nullptr, true);
  dispatcher_.OnDecision(created);
  dispatcher_.RunOnce();
  ASSERT_THAT(dispatcher_.FailedForGood(), SizeIs(1));
  dispatcher_.OnDecision(SeenAgain(created));
  EXPECT_EQ(dispatcher_.pending(), 0u);
  dispatcher_.RunOnce();
  EXPECT_THAT(revoker->calls, SizeIs(1));
  EXPECT_THAT(dispatcher_.FailedForGood(), SizeIs(1));

  Restarted r(clock_, store->get());
  auto restored = std::make_unique<FakeActuator>();
  FakeActuator* after = restored.get();
  after->failures = {restricted};
  r.dispatcher.AddActuator(palisade::v1::ACTUATOR_TOKEN_REVOCATION, std::move(restored));
  ASSERT_TRUE(r.dispatcher.Restore().ok());
  ASSERT_THAT(r.dispatcher.FailedForGood(), SizeIs(1));
  r.dispatcher.OnDecision(SeenAgain(created));  // restored: tried once more, with the secret
  r.dispatcher.RunOnce();
  EXPECT_THAT(after->calls, ElementsAre("apply leak"));
  EXPECT_THAT(r.dispatcher.FailedForGood(), SizeIs(1));
  clock_.Advance(absl::Minutes(1));
  r.dispatcher.OnDecision(SeenAgain(created));  // failed with it: not again
  r.dispatcher.RunOnce();
  EXPECT_THAT(after->calls, SizeIs(1));
  EXPECT_THAT(r.dispatcher.FailedForGood(), SizeIs(1));
}

// Cloudflare refusing palisaded's own credentials (401/403) says nothing about the decisions:
// their ops stay in the outbox, however many times they are refused (never a failure record),
// and while the token is refused the queue sends one op per wait, not every op each time. The
// wait ends at max_backoff at most, when the credentials check finds the permission again, or
// at a restart.
TEST_F(DispatcherTest, OpsRefusedForTheCredentialsWaitInTheOutbox) {
  auto store = FreshStore("refused.db");
  ASSERT_TRUE(store.ok());
  for (const char* id : {"d1", "d2", "d3"}) {
    DecisionUpdate u = Update(DecisionChange::kCreated, id);
    u.decision.mutable_target()->set_value(absl::StrCat("203.0.113.", id[1] - '0'));
    u.decision.set_active(true);
    u.outbox_seq = *(*store)->RecordDecision(u.decision, nullptr, true);
    dispatcher_.OnDecision(u);
  }
  for (int i = 0; i < 12; ++i) {
    fake_->failures.push_back(absl::PermissionDeniedError("HTTP 403 code 10000"));
  }
  fake_->failures.push_back(absl::UnauthenticatedError("HTTP 401 code 1000"));
  EXPECT_EQ(dispatcher_.RunOnce(), 1);  // d1 refused: d2 and d3 are not sent after it
  EXPECT_THAT(fake_->calls, ElementsAre("apply d1"));
  EXPECT_EQ(dispatcher_.RunOnce(), 0);  // the queue waits 1 s
  // 13 refusals in a row, far past max_attempts (3): each wait doubles, up to max_backoff.
  for (int i = 0; i < 12; ++i) {
    clock_.Advance(absl::Minutes(5));
    EXPECT_EQ(dispatcher_.RunOnce(), 1) << i;
  }
  EXPECT_EQ(fake_->failures.size(), 0u);
  EXPECT_EQ(Actions("failed"), 0);
  EXPECT_EQ(Actions("retried"), 13);
  EXPECT_THAT(dispatcher_.FailedForGood(), IsEmpty());
  EXPECT_THAT(*(*store)->LoadOutbox(), SizeIs(3));
  EXPECT_THAT(*(*store)->LoadEdges(), IsEmpty());
  EXPECT_EQ(dispatcher_.pending(), 3u);

  // The credentials check found the permission again: the queue goes now, all of it.
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(dispatcher_.RunOnce(), 0);
  dispatcher_.CredentialsRestored("fake");
  EXPECT_EQ(dispatcher_.RunOnce(), 3);
  EXPECT_EQ(dispatcher_.edges().size(), 3u);
  EXPECT_THAT(*(*store)->LoadOutbox(), IsEmpty());
}

// The wait is memory only: after a restart (which checked the credentials) the refused ops go
// out at once, and their attempts are not spent.
TEST_F(DispatcherTest, ARestartEndsTheWaitForTheCredentials) {
  auto store = FreshStore("refused-restart.db");
  ASSERT_TRUE(store.ok());
  DecisionUpdate u = Update(DecisionChange::kCreated, "d1");
  u.decision.set_active(true);
  u.outbox_seq = *(*store)->RecordDecision(u.decision, nullptr, true);
  dispatcher_.OnDecision(u);
  fake_->failures = {absl::PermissionDeniedError("HTTP 403 code 10000")};
  EXPECT_EQ(dispatcher_.RunOnce(), 1);
  std::unique_ptr<Restarted> r = Restart(store->get());
  ASSERT_TRUE(r->dispatcher.Restore().ok());
  r->actuator->failures = {absl::UnavailableError("1"), absl::UnavailableError("2")};
  EXPECT_EQ(r->dispatcher.RunOnce(), 1);
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(r->dispatcher.RunOnce(), 1);
  clock_.Advance(absl::Seconds(2));
  EXPECT_EQ(r->dispatcher.RunOnce(), 1);  // the third attempt: the refusal did not count
  EXPECT_EQ(r->dispatcher.edges().count("d1"), 1u);
}

TEST_F(DispatcherTest, PermanentFailureIsNotRetriedAndLeavesNothingToRemove) {
  fake_->failures = {absl::InvalidArgumentError("bad")};
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "d1"));
  dispatcher_.RunOnce();
  dispatcher_.OnDecision(Update(DecisionChange::kExpired, "d1"));
  clock_.Advance(absl::Hours(1));
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply d1"));
  EXPECT_EQ(Actions("failed"), 1);
}

TEST_F(DispatcherTest, EndingBeforeTheApplyWentOutCancelsBoth) {
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "d1"));
  dispatcher_.OnDecision(Update(DecisionChange::kWithdrawn, "d1"));
  EXPECT_EQ(dispatcher_.RunOnce(), 0);
  EXPECT_THAT(fake_->calls, IsEmpty());
  EXPECT_EQ(Actions("cancelled"), 1);
}

// queued_at_ (the latency histogram's start times) grew by one entry per apply that never
// settled: cancelled while queued or held, refused by the never-ban set, or ended while being
// retried. Every way an apply ends now forgets it.
TEST_F(DispatcherTest, LatencyStartTimesDoNotOutliveTheirApplies) {
  GuardOptions options;
  options.max_new_per_minute = 1;
  dispatcher_.SetGuard(std::make_unique<Guard>(options));
  // Cancelled while queued.
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "queued"));
  dispatcher_.OnDecision(Update(DecisionChange::kWithdrawn, "queued"));
  // Refused by the never-ban set.
  DecisionUpdate never = Update(DecisionChange::kCreated, "never");
  never.decision.mutable_target()->set_value("10.0.0.1");
  dispatcher_.OnDecision(never);
  // Retried, then ended before it reached the edge.
  fake_->failures = {absl::UnavailableError("503")};
  fake_->during_run = [this] {
    fake_->during_run = nullptr;
    dispatcher_.OnDecision(Update(DecisionChange::kExpired, "retried"));
  };
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "retried"));
  // Held by the blast-radius limit (one per minute, taken by "retried"), then ended.
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "held"));
  dispatcher_.RunOnce();
  ASSERT_EQ(dispatcher_.held(), 1u);
  dispatcher_.OnDecision(Update(DecisionChange::kExpired, "held"));
  EXPECT_EQ(dispatcher_.held(), 0u);
  EXPECT_EQ(dispatcher_.pending(), 0u);
  EXPECT_EQ(Actions("cancelled"), 3);
  EXPECT_EQ(Actions("refused"), 1);
  EXPECT_EQ(dispatcher_.latency_tracked(), 0u);
}

TEST_F(DispatcherTest, RemovalDuringTheApplyIsQueuedAfterIt) {
  fake_->during_run = [this] {
    fake_->during_run = nullptr;
    dispatcher_.OnDecision(Update(DecisionChange::kExpired, "d1"));
  };
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "d1"));
  dispatcher_.RunOnce();
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply d1", "remove d1 edge-d1"));
  EXPECT_THAT(dispatcher_.edges(), IsEmpty());
}

TEST_F(DispatcherTest, DryRunSendsNothing) {
  DispatcherOptions o;
  o.dry_run = true;
  prometheus::Registry registry;
  Dispatcher dry(clock_, o, registry);
  auto fake = std::make_unique<FakeActuator>();
  FakeActuator* f = fake.get();
  dry.AddActuator(palisade::v1::ACTUATOR_ACCESS_RULE, std::move(fake));
  dry.OnDecision(Update(DecisionChange::kCreated, "d1"));
  EXPECT_EQ(dry.RunOnce(), 1);
  EXPECT_THAT(f->calls, IsEmpty());
}

TEST_F(DispatcherTest, GuardRefusesNeverBanAndHoldsPastTheLimitUntilReleased) {
  GuardOptions options;
  options.max_new_per_minute = 2;
  dispatcher_.SetGuard(std::make_unique<Guard>(options));
  DecisionUpdate never = Update(DecisionChange::kCreated, "d0");
  never.decision.mutable_target()->set_value("10.0.0.1");
  dispatcher_.OnDecision(never);
  for (int i = 1; i <= 4; ++i)
    dispatcher_.OnDecision(Update(DecisionChange::kCreated, absl::StrCat("d", i)));
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply d1", "apply d2"));
  EXPECT_EQ(dispatcher_.held(), 2u);
  EXPECT_EQ(Actions("refused"), 1);
  EXPECT_EQ(Actions("held"), 2);
  // Held stays held, even after the minute: an operator decides.
  clock_.Advance(absl::Minutes(5));
  dispatcher_.RunOnce();
  EXPECT_EQ(dispatcher_.held(), 2u);
  // An expired held decision just goes away.
  dispatcher_.OnDecision(Update(DecisionChange::kExpired, "d4"));
  EXPECT_EQ(dispatcher_.held(), 1u);
  EXPECT_EQ(dispatcher_.ReleaseHeld(10), 1);
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply d1", "apply d2", "apply d3"));
  EXPECT_EQ(dispatcher_.held(), 0u);
}

// The blast-radius budget counts new bans, not attempts: an apply retried through an outage
// spent one slot per attempt, and the bans after it (or its own retry) were held.
TEST_F(DispatcherTest, ARetriedApplyIsCountedByTheGuardOnce) {
  GuardOptions options;
  options.max_new_per_minute = 2;
  dispatcher_.SetGuard(std::make_unique<Guard>(options));
  fake_->failures = {absl::UnavailableError("503")};
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "a"));
  dispatcher_.RunOnce();  // fails, retried in 1 s
  clock_.Advance(absl::Seconds(1));
  dispatcher_.RunOnce();
  ASSERT_EQ(dispatcher_.edges().count("a"), 1u);
  DecisionUpdate b = Update(DecisionChange::kCreated, "b");
  b.decision.mutable_target()->set_value("203.0.113.8");
  dispatcher_.OnDecision(b);
  dispatcher_.RunOnce();
  EXPECT_EQ(dispatcher_.held(), 0u);
  EXPECT_EQ(Actions("held"), 0);
  EXPECT_THAT(fake_->calls, ElementsAre("apply a", "apply a", "apply b"));
}

// The same for an apply an operator released past the limit: it is recorded once, when it
// first goes out, not again at each retry.
TEST_F(DispatcherTest, ARetriedReleasedApplyIsRecordedByTheGuardOnce) {
  GuardOptions options;
  options.max_new_per_minute = 1;
  dispatcher_.SetGuard(std::make_unique<Guard>(options));
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "a"));
  DecisionUpdate b = Update(DecisionChange::kCreated, "b");
  b.decision.mutable_target()->set_value("203.0.113.8");
  dispatcher_.OnDecision(b);
  dispatcher_.RunOnce();  // a goes, b is held
  ASSERT_EQ(dispatcher_.held(), 1u);
  ASSERT_EQ(dispatcher_.ReleaseHeld(1), 1);
  fake_->failures = {absl::UnavailableError("503")};
  dispatcher_.RunOnce();  // b goes (recorded now), fails, retried in 1 s
  clock_.Advance(absl::Seconds(1));
  dispatcher_.RunOnce();
  ASSERT_EQ(dispatcher_.edges().count("b"), 1u);
  // A minute after a and b first went out, their slots are free again.
  clock_.Advance(absl::Seconds(59) + absl::Milliseconds(500));
  DecisionUpdate c = Update(DecisionChange::kCreated, "c");
  c.decision.mutable_target()->set_value("203.0.113.9");
  dispatcher_.OnDecision(c);
  dispatcher_.RunOnce();
  EXPECT_EQ(dispatcher_.held(), 0u);
  EXPECT_EQ(dispatcher_.edges().count("c"), 1u);
}

// `decisions add` is an operator's deliberate act, as a feed version is: it spent the rules'
// per-minute budget, so in a flood it was held behind the flood's bans, and ReleaseHeld (oldest
// first) freed it only after them. It spends none now (the active cap still holds it).
TEST_F(DispatcherTest, AManualBanIsNotHeldBehindAFlood) {
  GuardOptions options;
  options.max_new_per_minute = 1;
  dispatcher_.SetGuard(std::make_unique<Guard>(options));
  for (int i = 1; i <= 2; ++i) {
    DecisionUpdate flood = Update(DecisionChange::kCreated, absl::StrCat("flood", i));
    flood.decision.set_origin(palisade::v1::ORIGIN_RULE);
    flood.decision.mutable_target()->set_value(absl::StrCat("203.0.113.", i));
    dispatcher_.OnDecision(flood);
  }
  DecisionUpdate manual = Update(DecisionChange::kCreated, "manual");
  manual.decision.set_origin(palisade::v1::ORIGIN_MANUAL);
  manual.decision.mutable_target()->set_value("198.51.100.9");
  dispatcher_.OnDecision(manual);
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply flood1", "apply manual"));
  EXPECT_EQ(dispatcher_.held(), 1u);  // flood2
  EXPECT_EQ(dispatcher_.edges().count("manual"), 1u);
}

// An apply whose transient retries ran out is dropped, and the reconciler's repair (Reapply)
// applies it again once the outage ends. The repair spent a second slot of the budget: after a
// 20-minute API incident the repairs came back as a burst held past the limit. The decision
// was counted once; its repair is the same ban.
TEST_F(DispatcherTest, ARepairOfAnApplyOutOfRetriesSpendsNoSecondSlot) {
  GuardOptions options;
  options.max_new_per_minute = 1;
  dispatcher_.SetGuard(std::make_unique<Guard>(options));
  fake_->failures = {absl::UnavailableError("1"), absl::UnavailableError("2"),
                     absl::UnavailableError("3")};
  DecisionUpdate a = Update(DecisionChange::kCreated, "a");
  dispatcher_.OnDecision(a);
  for (int i = 0; i < 3; ++i) {  // attempts at 0 s, 1 s and 3 s: then given up
    dispatcher_.RunOnce();
    clock_.Advance(absl::Seconds(2));
  }
  ASSERT_THAT(fake_->calls, SizeIs(3));
  ASSERT_EQ(dispatcher_.pending(), 0u);
  ASSERT_EQ(Actions("failed"), 1);
  // Within the minute of its first pass: the repair goes out, not held.
  dispatcher_.Reapply(a.decision);
  dispatcher_.RunOnce();
  EXPECT_EQ(dispatcher_.held(), 0u);
  EXPECT_EQ(dispatcher_.edges().count("a"), 1u);
  // A new ban in that minute is still held: the budget is not lifted, only not spent twice.
  DecisionUpdate b = Update(DecisionChange::kCreated, "b");
  b.decision.mutable_target()->set_value("203.0.113.8");
  dispatcher_.OnDecision(b);
  dispatcher_.RunOnce();
  EXPECT_EQ(dispatcher_.held(), 1u);
  EXPECT_THAT(fake_->calls, ElementsAre("apply a", "apply a", "apply a", "apply a"));
}

// The table replaces a challenge (an access rule) with a block (the shipped packs block
// through the IP list) when a blocking rule matches a challenged address: the challenge is
// withdrawn naming the block (Decision.replaced_by), then the block created naming the
// challenge (Decision.replaces). The block restricts no new target (its target was charged
// when the challenge went out), so it spends no budget; it was held past the limit while the
// challenge's remove went out, and the address was left bare until an operator acted.
TEST_F(DispatcherTest, ABlockReplacingAChallengeAtTheEdgeIsNotHeld) {
  GuardOptions options;
  options.max_new_per_minute = 1;
  dispatcher_.SetGuard(std::make_unique<Guard>(options));
  auto list = std::make_unique<FakeActuator>();
  FakeActuator* lists = list.get();
  lists->label = "list";
  dispatcher_.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::move(list));
  const auto block = [&](const std::string& id, const std::string& target) {
    DecisionUpdate u = Update(DecisionChange::kCreated, id);
    u.decision.set_actuator(palisade::v1::ACTUATOR_IP_LIST);
    u.decision.mutable_target()->set_value(target);
    return u;
  };
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "challenge"));
  dispatcher_.RunOnce();  // spends the minute's one slot
  ASSERT_EQ(dispatcher_.edges().count("challenge"), 1u);
  dispatcher_.OnDecision(Replaced(Update(DecisionChange::kWithdrawn, "challenge"), "block"));
  dispatcher_.OnDecision(Replacing(block("block", "203.0.113.7"), "challenge"));
  // A block on a target nothing restricts is a new ban: still held.
  dispatcher_.OnDecision(block("fresh", "203.0.113.9"));
  dispatcher_.RunOnce();
  EXPECT_THAT(lists->calls, ElementsAre("apply block"));
  EXPECT_EQ(dispatcher_.edges().count("block"), 1u);
  EXPECT_EQ(dispatcher_.held(), 1u);  // fresh
  EXPECT_EQ(Actions("held"), 1);
  dispatcher_.RunOnce();  // the challenge's remove, once the block is at the edge
  EXPECT_THAT(fake_->calls, ElementsAre("apply challenge", "remove challenge edge-challenge"));
}

// The challenge's remove and the block's apply are in two actuators' queues, and the order
// rules (RemoveBarrier) hold within one queue only: the remove went out even when the block's
// apply failed for good (the list at its cap), and the address was left unrestricted. The
// remove now waits until the block is at the edge, or the block has ended; a block that
// failed for good leaves the challenge standing until the block ends.
TEST_F(DispatcherTest, AChallengesRemoveWaitsForTheBlockReplacingItInAnotherActuator) {
  auto list = std::make_unique<FakeActuator>();
  FakeActuator* lists = list.get();
  lists->label = "list";
  dispatcher_.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::move(list));
  const auto challenge = [&](DecisionChange change, const std::string& id,
                             const std::string& target) {
    DecisionUpdate u = Update(change, id);
    u.decision.mutable_target()->set_value(target);
    return u;
  };
  const auto block = [&](DecisionChange change, const std::string& id, const std::string& target) {
    DecisionUpdate u = challenge(change, id, target);
    u.decision.set_actuator(palisade::v1::ACTUATOR_IP_LIST);
    return u;
  };
  // The list is full: the block fails for good; the challenge stays until the block ends.
  lists->failures = {absl::FailedPreconditionError("the list is at max_items")};
  dispatcher_.OnDecision(challenge(DecisionChange::kCreated, "c1", "203.0.113.7"));
  dispatcher_.RunOnce();
  dispatcher_.OnDecision(
      Replaced(challenge(DecisionChange::kWithdrawn, "c1", "203.0.113.7"), "b1"));
  dispatcher_.OnDecision(Replacing(block(DecisionChange::kCreated, "b1", "203.0.113.7"), "c1"));
  dispatcher_.RunOnce();
  dispatcher_.RunOnce();
  EXPECT_THAT(lists->calls, ElementsAre("apply b1"));
  EXPECT_THAT(dispatcher_.FailedForGood(), ElementsAre(Pair("b1", "0.0")));
  EXPECT_THAT(fake_->calls, ElementsAre("apply c1"));
  EXPECT_EQ(dispatcher_.edges().count("c1"), 1u);
  EXPECT_TRUE(dispatcher_.Busy("c1"));  // the reconciler leaves its object alone
  dispatcher_.OnDecision(Replacing(block(DecisionChange::kExpired, "b1", "203.0.113.7"), "c1"));
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply c1", "remove c1 edge-c1"));
  EXPECT_THAT(dispatcher_.edges(), IsEmpty());

  // The block goes out: the challenge's remove follows it, not before.
  dispatcher_.OnDecision(challenge(DecisionChange::kCreated, "c2", "203.0.113.8"));
  dispatcher_.RunOnce();
  dispatcher_.OnDecision(
      Replaced(challenge(DecisionChange::kWithdrawn, "c2", "203.0.113.8"), "b2"));
  dispatcher_.OnDecision(Replacing(block(DecisionChange::kCreated, "b2", "203.0.113.8"), "c2"));
  dispatcher_.RunOnce();  // the access rules' queue runs first: its remove waits
  EXPECT_THAT(lists->calls, ElementsAre("apply b1", "apply b2"));
  EXPECT_THAT(fake_->calls, ElementsAre("apply c1", "remove c1 edge-c1", "apply c2"));
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls,
              ElementsAre("apply c1", "remove c1 edge-c1", "apply c2", "remove c2 edge-c2"));
  EXPECT_EQ(dispatcher_.pending(), 0u);
}

// The withdrawal and the creation are two updates: OnDecision releases the lock between them
// and wakes the workers, which could take the challenge's remove before the block was heard.
// The withdrawn decision names its replacement itself, so the remove waits from the start.
TEST_F(DispatcherTest, AChallengesRemoveWaitsThoughTheBlockIsHeardAfterAWorkerRan) {
  auto list = std::make_unique<FakeActuator>();
  FakeActuator* lists = list.get();
  lists->label = "list";
  dispatcher_.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::move(list));
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "c"));
  dispatcher_.RunOnce();
  dispatcher_.OnDecision(Replaced(Update(DecisionChange::kWithdrawn, "c"), "b"));
  dispatcher_.RunOnce();  // a worker between the two updates
  EXPECT_THAT(fake_->calls, ElementsAre("apply c"));
  DecisionUpdate block = Replacing(Update(DecisionChange::kCreated, "b"), "c");
  block.decision.set_actuator(palisade::v1::ACTUATOR_IP_LIST);
  dispatcher_.OnDecision(block);
  dispatcher_.RunOnce();
  dispatcher_.RunOnce();
  EXPECT_THAT(lists->calls, ElementsAre("apply b"));
  EXPECT_THAT(fake_->calls, ElementsAre("apply c", "remove c edge-c"));
  EXPECT_EQ(dispatcher_.pending(), 0u);
}

// A remove after an expiry or an operator's withdrawal names no replacement: it never waits,
// whatever the table creates next on the target (an unban is not delayed).
TEST_F(DispatcherTest, ARemoveAfterAnExpiryOrAWithdrawalNeverWaits) {
  auto list = std::make_unique<FakeActuator>();
  FakeActuator* lists = list.get();
  lists->label = "list";
  lists->failures = {absl::FailedPreconditionError("the list is at max_items")};
  dispatcher_.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::move(list));
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "a"));
  dispatcher_.RunOnce();
  dispatcher_.OnDecision(Update(DecisionChange::kExpired, "a"));
  DecisionUpdate next = Update(DecisionChange::kCreated, "next");  // a waiting claim's
  next.decision.set_actuator(palisade::v1::ACTUATOR_IP_LIST);
  dispatcher_.OnDecision(next);
  dispatcher_.RunOnce();  // next fails for good
  EXPECT_THAT(fake_->calls, ElementsAre("apply a", "remove a edge-a"));
  EXPECT_THAT(lists->calls, ElementsAre("apply next"));
}

// An expiry followed by a creation on the same target is no replacement (the creation names
// none): a new restriction, charged. Pairing by adjacency let a bad rule re-ban expired
// targets past the budget; and a creation heard later, in another change set, is never paired.
TEST_F(DispatcherTest, AnExpiryThenAnUnrelatedCreationOnTheTargetIsCharged) {
  GuardOptions options;
  options.max_new_per_minute = 1;
  dispatcher_.SetGuard(std::make_unique<Guard>(options));
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "a"));
  dispatcher_.RunOnce();  // spends the slot
  dispatcher_.OnDecision(Update(DecisionChange::kExpired, "a"));
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "b"));
  dispatcher_.RunOnce();
  EXPECT_EQ(dispatcher_.held(), 1u);
  EXPECT_THAT(fake_->calls, ElementsAre("apply a", "remove a edge-a"));
}

// A challenge withdrawn while its apply is in flight (taken with a batch, not settled) was
// charged: the block replacing it is not charged again, and the challenge's remove, made once
// its apply settles, still waits for the block.
TEST_F(DispatcherTest, ABlockReplacingAChallengeInFlightIsNotChargedAndItsRemoveWaits) {
  GuardOptions options;
  options.max_new_per_minute = 1;
  dispatcher_.SetGuard(std::make_unique<Guard>(options));
  auto list = std::make_unique<FakeActuator>();
  FakeActuator* lists = list.get();
  lists->label = "list";
  dispatcher_.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::move(list));
  fake_->during_run = [&] {
    fake_->during_run = nullptr;
    dispatcher_.OnDecision(Replaced(Update(DecisionChange::kWithdrawn, "c"), "b"));
    DecisionUpdate block = Replacing(Update(DecisionChange::kCreated, "b"), "c");
    block.decision.set_actuator(palisade::v1::ACTUATOR_IP_LIST);
    dispatcher_.OnDecision(block);
  };
  lists->failures = {absl::UnavailableError("the list operation timed out")};
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "c"));
  dispatcher_.RunOnce();  // c goes out (spending the slot); b, queued meanwhile, is retried
  EXPECT_EQ(dispatcher_.held(), 0u);
  EXPECT_THAT(lists->calls, ElementsAre("apply b"));
  dispatcher_.RunOnce();  // c's remove, made as c's apply settled, waits for b
  EXPECT_THAT(fake_->calls, ElementsAre("apply c"));
  clock_.Advance(absl::Minutes(1));
  dispatcher_.RunOnce();
  dispatcher_.RunOnce();
  EXPECT_THAT(lists->calls, ElementsAre("apply b", "apply b"));
  EXPECT_THAT(fake_->calls, ElementsAre("apply c", "remove c edge-c"));
  EXPECT_EQ(dispatcher_.pending(), 0u);
}

// The active cap counts objects per actuator: a rule's ban replacing a feed's on the same
// target with the same actuator is one target, not a second object, while the feed's remove
// has not settled.
TEST_F(DispatcherTest, AReplacementInTheSameActuatorIsNotCountedTwiceByTheActiveCap) {
  GuardOptions options;
  options.max_active_per_actuator = 1;
  dispatcher_.SetGuard(std::make_unique<Guard>(options));
  DecisionUpdate feed = Update(DecisionChange::kCreated, "feed");
  feed.decision.set_origin(palisade::v1::ORIGIN_FEED);
  dispatcher_.OnDecision(feed);
  dispatcher_.RunOnce();
  ASSERT_EQ(dispatcher_.edges().count("feed"), 1u);
  feed.change = DecisionChange::kWithdrawn;
  dispatcher_.OnDecision(Replaced(feed, "rule"));
  dispatcher_.OnDecision(Replacing(Update(DecisionChange::kCreated, "rule"), "feed"));
  dispatcher_.RunOnce();
  EXPECT_EQ(dispatcher_.held(), 0u);
  EXPECT_THAT(fake_->calls, ElementsAre("apply feed", "remove feed edge-feed", "apply rule"));
}

// What the replaced decision never put at the edge (held, dry run) restricted nothing: its
// successor is a new restriction and spends the budget as any other.
TEST_F(DispatcherTest, ABlockReplacingAChallengeThatNeverReachedTheEdgeIsCharged) {
  GuardOptions options;
  options.max_new_per_minute = 1;
  dispatcher_.SetGuard(std::make_unique<Guard>(options));
  auto list = std::make_unique<FakeActuator>();
  FakeActuator* lists = list.get();
  lists->label = "list";
  dispatcher_.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::move(list));
  DecisionUpdate first = Update(DecisionChange::kCreated, "first");
  first.decision.mutable_target()->set_value("203.0.113.1");
  dispatcher_.OnDecision(first);
  DecisionUpdate shadow = Update(DecisionChange::kCreated, "shadow");
  shadow.decision.mutable_target()->set_value("203.0.113.2");
  shadow.decision.set_dry_run(true);
  dispatcher_.OnDecision(shadow);
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "challenge"));
  dispatcher_.RunOnce();  // first spends the slot, shadow sends nothing, challenge is held
  ASSERT_EQ(dispatcher_.held(), 1u);
  ASSERT_EQ(dispatcher_.edges().count("shadow"), 1u);
  for (const char* ended : {"challenge", "shadow"}) {
    const std::string replacing = absl::StrCat(ended, "-block");
    DecisionUpdate withdrawn = Replaced(Update(DecisionChange::kWithdrawn, ended), replacing);
    DecisionUpdate block = Replacing(Update(DecisionChange::kCreated, replacing), ended);
    if (std::string(ended) == "shadow") {
      withdrawn.decision.mutable_target()->set_value("203.0.113.2");
      withdrawn.decision.set_dry_run(true);
      block.decision.mutable_target()->set_value("203.0.113.2");
    }
    block.decision.set_actuator(palisade::v1::ACTUATOR_IP_LIST);
    dispatcher_.OnDecision(withdrawn);
    dispatcher_.OnDecision(block);
  }
  dispatcher_.RunOnce();
  EXPECT_THAT(lists->calls, IsEmpty());
  EXPECT_EQ(dispatcher_.held(), 2u);  // challenge-block, shadow-block
}

// A block B replacing a challenge A at the edge is cancelled while queued (the table replaced it
// at once with a still stronger C): A still stands, and C takes over from it. A's remove waits
// for C, also when a worker runs between the updates (it went out as B ended, and C, naming a
// B never at the edge, was charged and held: the target bare); C is not charged.
TEST_F(DispatcherTest, AReplacementCancelledBeforeItWentOutHandsOverWhatItReplaced) {
  GuardOptions options;
  options.max_new_per_minute = 1;
  dispatcher_.SetGuard(std::make_unique<Guard>(options));
  auto list = std::make_unique<FakeActuator>();
  FakeActuator* lists = list.get();
  lists->label = "list";
  dispatcher_.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::move(list));
  const auto listed = [&](DecisionChange change, const std::string& id) {
    DecisionUpdate u = Update(change, id);
    u.decision.set_actuator(palisade::v1::ACTUATOR_IP_LIST);
    return u;
  };
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "a"));
  dispatcher_.RunOnce();  // a spends the slot
  ASSERT_EQ(dispatcher_.edges().count("a"), 1u);
  dispatcher_.OnDecision(Replaced(Update(DecisionChange::kWithdrawn, "a"), "b"));
  DecisionUpdate b = Replacing(listed(DecisionChange::kCreated, "b"), "a");
  b.decision.set_origin(palisade::v1::ORIGIN_FEED);
  dispatcher_.OnDecision(b);
  b.change = DecisionChange::kWithdrawn;
  dispatcher_.OnDecision(Replaced(b, "c"));  // cancelled while queued (behind a feed sync)
  dispatcher_.RunOnce();                     // a worker between the two updates
  EXPECT_THAT(fake_->calls, ElementsAre("apply a"));
  dispatcher_.OnDecision(Replacing(listed(DecisionChange::kCreated, "c"), "b"));
  dispatcher_.RunOnce();
  EXPECT_EQ(dispatcher_.held(), 0u);
  EXPECT_THAT(lists->calls, ElementsAre("apply c"));
  EXPECT_THAT(fake_->calls, ElementsAre("apply a"));  // c had not been heard: a's remove waits
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply a", "remove a edge-a"));
  EXPECT_EQ(dispatcher_.pending(), 0u);
}

// The same while the block is held (the list at its cap): cancelled, it hands over to the next
// replacement, held too; the challenge stays until one reaches the edge or ends.
TEST_F(DispatcherTest, AReplacementCancelledWhileHeldHandsOverWhatItReplaced) {
  GuardOptions options;
  options.max_active_per_actuator = 1;
  dispatcher_.SetGuard(std::make_unique<Guard>(options));
  auto list = std::make_unique<FakeActuator>();
  FakeActuator* lists = list.get();
  lists->label = "list";
  dispatcher_.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::move(list));
  const auto listed = [&](DecisionChange change, const std::string& id) {
    DecisionUpdate u = Update(change, id);
    u.decision.set_actuator(palisade::v1::ACTUATOR_IP_LIST);
    return u;
  };
  DecisionUpdate full = listed(DecisionChange::kCreated, "full");
  full.decision.mutable_target()->set_value("203.0.113.9");
  dispatcher_.OnDecision(full);
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "a"));
  dispatcher_.RunOnce();
  dispatcher_.OnDecision(Replaced(Update(DecisionChange::kWithdrawn, "a"), "b"));
  dispatcher_.OnDecision(Replacing(listed(DecisionChange::kCreated, "b"), "a"));
  dispatcher_.RunOnce();
  ASSERT_EQ(dispatcher_.held(), 1u);  // b, over the list's cap
  dispatcher_.OnDecision(Replaced(listed(DecisionChange::kWithdrawn, "b"), "c"));
  dispatcher_.RunOnce();  // a worker between the two updates
  EXPECT_THAT(fake_->calls, ElementsAre("apply a"));
  dispatcher_.OnDecision(Replacing(listed(DecisionChange::kCreated, "c"), "b"));
  dispatcher_.RunOnce();
  dispatcher_.RunOnce();
  EXPECT_EQ(dispatcher_.held(), 1u);  // c
  EXPECT_THAT(fake_->calls, ElementsAre("apply a"));
  dispatcher_.OnDecision(Replacing(listed(DecisionChange::kExpired, "c"), "b"));
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply a", "remove a edge-a"));
  EXPECT_EQ(dispatcher_.held(), 0u);
}

// A block b replacing a challenge a at the edge is withdrawn for a still stronger c while b's
// apply is in flight: b may yet fail to land (failed for good, a transient failure that ends
// it, or cancelled at its turn in the batch, never sent). a's remove went as b was withdrawn,
// and the target was bare until c landed. c, heard naming b, takes over the wait: a's remove
// waits for b while its apply is in flight, then, b not at the edge, for c.
enum class InFlightEnd { kFailsForGood, kFailsTransiently, kCancelledAtItsTurn };

class InFlightReplacementTest : public DispatcherTest,
                                public ::testing::WithParamInterface<InFlightEnd> {};

TEST_P(InFlightReplacementTest, ARemoveWaitsForAReplacementInFlightUntilItOrItsSuccessorLands) {
  auto list = std::make_unique<FakeActuator>();
  FakeActuator* lists = list.get();
  lists->label = "list";
  dispatcher_.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::move(list));
  const auto listed = [&](DecisionChange change, const std::string& id) {
    DecisionUpdate u = Update(change, id);
    u.decision.set_actuator(palisade::v1::ACTUATOR_IP_LIST);
    return u;
  };
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "a"));
  dispatcher_.RunOnce();
  ASSERT_EQ(dispatcher_.edges().count("a"), 1u);
  DecisionUpdate other = listed(DecisionChange::kCreated, "x");
  other.decision.mutable_target()->set_value("203.0.113.1");
  dispatcher_.OnDecision(other);  // taken in the same batch, before b
  dispatcher_.OnDecision(Replaced(Update(DecisionChange::kWithdrawn, "a"), "b"));
  dispatcher_.OnDecision(Replacing(listed(DecisionChange::kCreated, "b"), "a"));
  const InFlightEnd end = GetParam();
  bool withdrawn = false;
  lists->during_run = [&] {
    const std::string withdrawn_during =
        end == InFlightEnd::kCancelledAtItsTurn ? "apply x" : "apply b";
    if (withdrawn || lists->calls.back() != withdrawn_during) return;
    withdrawn = true;
    if (end == InFlightEnd::kFailsForGood) {
      lists->failures = {absl::FailedPreconditionError("the list is at max_items")};
    } else if (end == InFlightEnd::kFailsTransiently) {
      lists->failures = {absl::UnavailableError("the list operation timed out")};
    }
    dispatcher_.OnDecision(Replaced(listed(DecisionChange::kWithdrawn, "b"), "c"));
    dispatcher_.OnDecision(Replacing(listed(DecisionChange::kCreated, "c"), "b"));
  };
  dispatcher_.RunOnce();  // b goes out (or is cancelled at its turn) and does not land
  EXPECT_EQ(dispatcher_.edges().count("b"), 0u);
  EXPECT_THAT(fake_->calls, ElementsAre("apply a"));
  dispatcher_.RunOnce();  // the access rules' queue first: a's remove waits for c
  EXPECT_THAT(fake_->calls, ElementsAre("apply a"));
  ASSERT_FALSE(lists->calls.empty());
  EXPECT_EQ(lists->calls.back(), "apply c");
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply a", "remove a edge-a"));
  EXPECT_EQ(dispatcher_.pending(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Ends, InFlightReplacementTest,
                         ::testing::Values(InFlightEnd::kFailsForGood,
                                           InFlightEnd::kFailsTransiently,
                                           InFlightEnd::kCancelledAtItsTurn),
                         [](const ::testing::TestParamInfo<InFlightEnd>& info) {
                           switch (info.param) {
                             case InFlightEnd::kFailsForGood:
                               return "FailsForGood";
                             case InFlightEnd::kFailsTransiently:
                               return "FailsTransiently";
                             case InFlightEnd::kCancelledAtItsTurn:
                               return "CancelledAtItsTurn";
                           }
                           return "";
                         });

// The same hand-over never makes a remove wait for ever. A first fix passed the wait on as b's
// apply settled, to whatever b's withdrawal named: a's remove then waited with no end for a c
// in its own access-rule queue (c's apply waits behind that remove: RemoveBarrier), for a c
// that had already ended, or for a c never heard. The hand-over is settled when c is heard;
// without one, b's apply settling releases the remove.
enum class Successor { kInTheRemovesQueue, kEndedBeforeTheApplySettled, kNeverHeard };

class InFlightHandOverTest : public DispatcherTest,
                             public ::testing::WithParamInterface<Successor> {};

TEST_P(InFlightHandOverTest, ARemoveNeverWaitsForeverForTheSuccessorOfAReplacementInFlight) {
  fake_->adopts = true;  // as access rules: an apply waits behind a remove of its target
  auto list = std::make_unique<FakeActuator>();
  FakeActuator* lists = list.get();
  lists->label = "list";
  dispatcher_.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::move(list));
  const auto listed = [&](DecisionChange change, const std::string& id) {
    DecisionUpdate u = Update(change, id);
    u.decision.set_actuator(palisade::v1::ACTUATOR_IP_LIST);
    return u;
  };
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "a"));
  dispatcher_.RunOnce();
  dispatcher_.OnDecision(Replaced(Update(DecisionChange::kWithdrawn, "a"), "b"));
  dispatcher_.OnDecision(Replacing(listed(DecisionChange::kCreated, "b"), "a"));
  const Successor successor = GetParam();
  bool withdrawn = false;
  lists->during_run = [&] {
    if (withdrawn) return;
    withdrawn = true;
    lists->failures = {absl::FailedPreconditionError("the list is at max_items")};
    dispatcher_.OnDecision(Replaced(listed(DecisionChange::kWithdrawn, "b"), "c"));
    if (successor == Successor::kInTheRemovesQueue) {
      dispatcher_.OnDecision(Replacing(Update(DecisionChange::kCreated, "c"), "b"));
    } else if (successor == Successor::kEndedBeforeTheApplySettled) {
      dispatcher_.OnDecision(Replacing(listed(DecisionChange::kCreated, "c"), "b"));
      dispatcher_.OnDecision(Replacing(listed(DecisionChange::kExpired, "c"), "b"));
    }
  };
  dispatcher_.RunOnce();  // b goes out and fails for good
  ASSERT_THAT(lists->calls, ElementsAre("apply b"));
  for (int i = 0; i < 3; ++i) dispatcher_.RunOnce();
  if (successor == Successor::kInTheRemovesQueue) {
    EXPECT_THAT(fake_->calls, ElementsAre("apply a", "remove a edge-a", "apply c"));
  } else {
    EXPECT_THAT(fake_->calls, ElementsAre("apply a", "remove a edge-a"));
  }
  EXPECT_THAT(lists->calls, ElementsAre("apply b"));
  EXPECT_EQ(dispatcher_.pending(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Successors, InFlightHandOverTest,
                         ::testing::Values(Successor::kInTheRemovesQueue,
                                           Successor::kEndedBeforeTheApplySettled,
                                           Successor::kNeverHeard),
                         [](const ::testing::TestParamInfo<Successor>& info) {
                           switch (info.param) {
                             case Successor::kInTheRemovesQueue:
                               return "InTheRemovesQueue";
                             case Successor::kEndedBeforeTheApplySettled:
                               return "EndedBeforeTheApplySettled";
                             case Successor::kNeverHeard:
                               return "NeverHeard";
                           }
                           return "";
                         });

// The hand-over of a remove's wait across replacements in flight (successor_heard_), in three
// queues on one target: a challenge `a` in the access rules (whose remove waits), and its
// replacements in other actuators.
class HandOverInFlightTest : public DispatcherTest {
 protected:
  FakeActuator* Add(palisade::v1::Actuator kind, const std::string& label) {
    auto actuator = std::make_unique<FakeActuator>();
    FakeActuator* added = actuator.get();
    added->label = label;
    dispatcher_.AddActuator(kind, std::move(actuator));
    return added;
  }
  DecisionUpdate In(palisade::v1::Actuator kind, DecisionChange change, const std::string& id) {
    DecisionUpdate u = Update(change, id);
    u.decision.set_actuator(kind);
    return u;
  }
  // `a` at the edge, withdrawn for `b` in the IP list (queued behind `w` and `v`, on other
  // targets: a refusal of w's credentials puts v and b back in the queue).
  void ChallengeReplacedByAListedBlock() {
    dispatcher_.OnDecision(Update(DecisionChange::kCreated, "a"));
    dispatcher_.RunOnce();
    ASSERT_EQ(dispatcher_.edges().count("a"), 1u);
    for (const char* id : {"w", "v"}) {
      DecisionUpdate u = In(kList, DecisionChange::kCreated, id);
      u.decision.mutable_target()->set_value(absl::StrCat("198.51.100.", id[0] - 'a'));
      dispatcher_.OnDecision(u);
    }
    dispatcher_.OnDecision(Replaced(Update(DecisionChange::kWithdrawn, "a"), "b"));
    dispatcher_.OnDecision(Replacing(In(kList, DecisionChange::kCreated, "b"), "a"));
  }
  static constexpr auto kList = palisade::v1::ACTUATOR_IP_LIST;
  static constexpr auto kRate = palisade::v1::ACTUATOR_RATE_LIMIT;
  static constexpr auto kTokens = palisade::v1::ACTUATOR_TOKEN_REVOCATION;
};

// b in flight is withdrawn for c (heard in the rate limits), and c in turn, while its own apply
// is in flight, for d: b settles without landing (here: pushed back by a credential refusal,
// and cancelled as it is, before c goes out). a's remove waits for c, then goes as c lands.
// (b settling after c was withdrawn, the hand-over b -> c was dropped, a's remove went, and the
// target was bare until c landed: see SuccessorFailsFirstTest, where b settles after c.)
TEST_F(HandOverInFlightTest, ARemoveWaitsForASuccessorWithdrawnWhileItsOwnApplyIsInFlight) {
  FakeActuator* lists = Add(kList, "list");
  FakeActuator* rates = Add(kRate, "rate");
  ChallengeReplacedByAListedBlock();
  bool listed = false;  // each hook runs once
  bool rated = false;
  lists->during_run = [&] {
    if (std::exchange(listed, true)) return;  // at w's apply, b in flight behind it
    lists->failures = {absl::UnauthenticatedError("HTTP 401 code 1000")};
    dispatcher_.OnDecision(Replaced(In(kList, DecisionChange::kWithdrawn, "b"), "c"));
    dispatcher_.OnDecision(Replacing(In(kRate, DecisionChange::kCreated, "c"), "b"));
  };
  rates->during_run = [&] {
    if (std::exchange(rated, true)) return;  // at c's apply
    dispatcher_.OnDecision(Replaced(In(kRate, DecisionChange::kWithdrawn, "c"), "d"));
    dispatcher_.CredentialsRestored("list");
    dispatcher_.RunOnce();
    dispatcher_.RunOnce();
    EXPECT_THAT(fake_->calls, ElementsAre("apply a"));  // a's remove waits for c
    EXPECT_EQ(dispatcher_.edges().count("b"), 0u);
  };
  dispatcher_.RunOnce();  // w refused (b cancelled as it is put back), then c lands
  EXPECT_THAT(rates->calls, ElementsAre("apply c"));
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply a", "remove a edge-a"));
  // d, heard now, lands; c's remove, which waited for it, goes.
  dispatcher_.OnDecision(Replacing(In(kList, DecisionChange::kCreated, "d"), "c"));
  dispatcher_.RunOnce();
  EXPECT_THAT(lists->calls, ElementsAre("apply w", "apply v", "apply w", "apply d"));
  EXPECT_THAT(rates->calls, ElementsAre("apply c", "remove c edge-c"));
  EXPECT_EQ(dispatcher_.pending(), 0u);
}

// c's apply failing before b's settles (b goes out while c, heard meanwhile, is withdrawn for d
// and fails for good): a's remove must not then wait for c (which will never land) for ever. It
// waits for d when d was heard in a queue other than the remove's (the hand-over goes on, also
// when d is in c's own remove's queue: the IP list), and goes when d was not heard or is in the
// remove's own queue (d's apply waits there behind the remove: RemoveBarrier).
enum class AfterC { kNotHeard, kInTheRemovesQueue, kElsewhere, kInTheIpList };

class SuccessorFailsFirstTest : public HandOverInFlightTest,
                                public ::testing::WithParamInterface<AfterC> {};

TEST_P(SuccessorFailsFirstTest, ARemoveNeverWaitsForASuccessorWhoseApplyFailed) {
  fake_->adopts = true;  // as access rules
  FakeActuator* lists = Add(kList, "list");
  FakeActuator* rates = Add(kRate, "rate");
  FakeActuator* tokens = Add(kTokens, "tokens");
  const AfterC after = GetParam();
  ChallengeReplacedByAListedBlock();
  lists->during_run = [&] {
    if (lists->calls.back() != "apply b") return;  // b goes out once
    dispatcher_.OnDecision(Replaced(In(kList, DecisionChange::kWithdrawn, "b"), "c"));
    dispatcher_.OnDecision(Replacing(In(kRate, DecisionChange::kCreated, "c"), "b"));
    dispatcher_.RunOnce();  // c goes out, and fails for good
    lists->failures.push_front(absl::FailedPreconditionError("the list is at max_items"));
  };
  bool rated = false;  // the hook runs once
  rates->during_run = [&] {
    if (std::exchange(rated, true)) return;
    rates->failures = {absl::FailedPreconditionError("the plan's quota of rules")};
    dispatcher_.OnDecision(Replaced(In(kRate, DecisionChange::kWithdrawn, "c"), "d"));
    if (after == AfterC::kInTheRemovesQueue) {
      dispatcher_.OnDecision(Replacing(Update(DecisionChange::kCreated, "d"), "c"));
    } else if (after == AfterC::kElsewhere) {
      tokens->failures = {absl::UnavailableError("503")};  // d lands one backoff later
      dispatcher_.OnDecision(Replacing(In(kTokens, DecisionChange::kCreated, "d"), "c"));
    } else if (after == AfterC::kInTheIpList) {
      lists->failures = {absl::UnavailableError("503")};  // d lands one backoff later
      dispatcher_.OnDecision(Replacing(In(kList, DecisionChange::kCreated, "d"), "c"));
    }
  };
  dispatcher_.RunOnce();  // b goes out; c fails for good, then b
  ASSERT_THAT(rates->calls, ElementsAre("apply c"));
  ASSERT_THAT(lists->calls, ElementsAre("apply w", "apply v", "apply b"));
  dispatcher_.RunOnce();
  if (after == AfterC::kElsewhere || after == AfterC::kInTheIpList) {
    EXPECT_THAT(fake_->calls, ElementsAre("apply a"));  // waits for d
    clock_.Advance(absl::Minutes(1));
    dispatcher_.RunOnce();
    if (after == AfterC::kElsewhere) {
      EXPECT_THAT(tokens->calls, ElementsAre("apply d", "apply d"));
    } else {
      EXPECT_THAT(lists->calls,
                  ElementsAre("apply w", "apply v", "apply b", "apply d", "apply d"));
    }
  }
  for (int i = 0; i < 3; ++i) dispatcher_.RunOnce();
  if (after == AfterC::kInTheRemovesQueue) {
    EXPECT_THAT(fake_->calls, ElementsAre("apply a", "remove a edge-a", "apply d"));
  } else {
    EXPECT_THAT(fake_->calls, ElementsAre("apply a", "remove a edge-a"));
  }
  EXPECT_EQ(dispatcher_.pending(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Successors, SuccessorFailsFirstTest,
                         ::testing::Values(AfterC::kNotHeard, AfterC::kInTheRemovesQueue,
                                           AfterC::kElsewhere, AfterC::kInTheIpList),
                         [](const ::testing::TestParamInfo<AfterC>& info) {
                           switch (info.param) {
                             case AfterC::kNotHeard:
                               return "NotHeard";
                             case AfterC::kInTheRemovesQueue:
                               return "InTheRemovesQueue";
                             case AfterC::kElsewhere:
                               return "Elsewhere";
                             case AfterC::kInTheIpList:
                               return "InTheIpList";
                           }
                           return "";
                         });

// c lands while b is still in flight: a's remove goes at once (RememberEdge releases the wait
// that b's hand-over would have passed to c), not when b settles.
TEST_F(HandOverInFlightTest, ASuccessorLandingFirstReleasesTheRemoveAtOnce) {
  FakeActuator* lists = Add(kList, "list");
  FakeActuator* rates = Add(kRate, "rate");
  ChallengeReplacedByAListedBlock();
  bool listed = false;  // each hook runs once
  lists->during_run = [&] {
    if (lists->calls.back() != "apply b") return;
    if (std::exchange(listed, true)) return;
    lists->failures = {absl::FailedPreconditionError("the list is at max_items")};
    dispatcher_.OnDecision(Replaced(In(kList, DecisionChange::kWithdrawn, "b"), "c"));
    dispatcher_.OnDecision(Replacing(In(kRate, DecisionChange::kCreated, "c"), "b"));
    dispatcher_.RunOnce();  // c lands
    ASSERT_EQ(dispatcher_.edges().count("c"), 1u);
    dispatcher_.RunOnce();
    EXPECT_THAT(fake_->calls, ElementsAre("apply a", "remove a edge-a"));
  };
  dispatcher_.RunOnce();  // b goes out, and fails for good after c landed
  EXPECT_THAT(lists->calls, ElementsAre("apply w", "apply v", "apply b"));
  EXPECT_THAT(rates->calls, ElementsAre("apply c"));
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply a", "remove a edge-a"));
  EXPECT_EQ(dispatcher_.pending(), 0u);
}

// c, heard while b is in flight, is cancelled while still queued and replaced by d: the
// hand-over to c is gone with c, and is made again to d as d is heard (naming c, which handed
// over to b: handed_over_). b failing, a's remove waits for d.
TEST_F(HandOverInFlightTest, ASuccessorCancelledBeforeItWentOutHandsOverToItsOwnReplacement) {
  FakeActuator* lists = Add(kList, "list");
  FakeActuator* rates = Add(kRate, "rate");
  FakeActuator* tokens = Add(kTokens, "tokens");
  ChallengeReplacedByAListedBlock();
  bool listed = false;  // each hook runs once
  lists->during_run = [&] {
    if (lists->calls.back() != "apply b") return;
    if (std::exchange(listed, true)) return;
    lists->failures = {absl::FailedPreconditionError("the list is at max_items")};
    dispatcher_.OnDecision(Replaced(In(kList, DecisionChange::kWithdrawn, "b"), "c"));
    dispatcher_.OnDecision(Replacing(In(kRate, DecisionChange::kCreated, "c"), "b"));
    dispatcher_.OnDecision(Replaced(In(kRate, DecisionChange::kWithdrawn, "c"), "d"));
    tokens->failures = {absl::UnavailableError("503")};  // d lands one backoff later
    dispatcher_.OnDecision(Replacing(In(kTokens, DecisionChange::kCreated, "d"), "c"));
  };
  dispatcher_.RunOnce();  // b fails for good; d's first try fails
  EXPECT_THAT(lists->calls, ElementsAre("apply w", "apply v", "apply b"));
  EXPECT_THAT(tokens->calls, ElementsAre("apply d"));
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply a"));  // waits for d
  clock_.Advance(absl::Minutes(1));
  dispatcher_.RunOnce();
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply a", "remove a edge-a"));
  EXPECT_THAT(rates->calls, IsEmpty());
  EXPECT_EQ(dispatcher_.pending(), 0u);
}

// An ended replacement b that a credential refusal (of the op before it, in a batch of an
// actuator sent one op at a time) put back in the queue kept its remove_after_ entry, and a's
// remove waited for it; a reload then put b's target in the never-ban set, and the guard
// refused b before it reached its turn: a's remove waited for ever. b is cancelled, never
// refused, and a's remove goes.
TEST_F(HandOverInFlightTest, AnEndedApplyPutBackByACredentialRefusalIsCancelledNotRefused) {
  dispatcher_.SetGuard(std::make_unique<Guard>(GuardOptions()));
  FakeActuator* lists = Add(kList, "list");
  ChallengeReplacedByAListedBlock();
  bool listed = false;  // each hook runs once
  lists->during_run = [&] {
    if (std::exchange(listed, true)) return;  // at w's apply, b in flight behind it
    lists->failures = {absl::UnauthenticatedError("HTTP 401 code 1000")};
    dispatcher_.OnDecision(Replaced(In(kList, DecisionChange::kWithdrawn, "b"), "c"));
  };
  dispatcher_.RunOnce();  // w refused: b goes back to the queue
  EXPECT_THAT(lists->calls, ElementsAre("apply w"));
  dispatcher_.SetNeverBan(*CidrSet::Parse({"203.0.113.0/24"}));
  dispatcher_.CredentialsRestored("list");
  dispatcher_.RunOnce();
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply a", "remove a edge-a"));
  EXPECT_THAT(lists->calls, ElementsAre("apply w", "apply v", "apply w"));
  EXPECT_EQ(Actions("refused"), 0);
  EXPECT_THAT(dispatcher_.FailedForGood(), IsEmpty());
  EXPECT_EQ(dispatcher_.pending(), 0u);
}

// b, withdrawn for c while in flight, is put back unsent by a refusal of the credentials (of w,
// the op before it): cancelled only at its turn, once the credential wait ended, it kept a's
// remove waiting until then (up to max_backoff), and c, in a's own queue, behind that remove:
// a stood past its decision. b is cancelled as it is put back, and a's remove goes, then c;
// the list's queue alone waits for its credentials.
TEST_F(HandOverInFlightTest, AnEndedApplyPutBackByACredentialRefusalReleasesTheRemoveAtOnce) {
  fake_->adopts = true;  // as access rules
  FakeActuator* lists = Add(kList, "list");
  ChallengeReplacedByAListedBlock();
  bool listed = false;  // the hook runs once
  lists->during_run = [&] {
    if (std::exchange(listed, true)) return;  // at w's apply, b in flight behind it
    lists->failures = {absl::UnauthenticatedError("HTTP 401 code 1000")};
    dispatcher_.OnDecision(Replaced(In(kList, DecisionChange::kWithdrawn, "b"), "c"));
    dispatcher_.OnDecision(Replacing(Update(DecisionChange::kCreated, "c"), "b"));
  };
  dispatcher_.RunOnce();  // w refused: v and b go back to the queue
  EXPECT_EQ(Actions("cancelled"), 1);
  dispatcher_.RunOnce();
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply a", "remove a edge-a", "apply c"));
  EXPECT_THAT(lists->calls, ElementsAre("apply w"));
  dispatcher_.CredentialsRestored("list");
  dispatcher_.RunOnce();
  EXPECT_THAT(lists->calls, ElementsAre("apply w", "apply v", "apply w"));
  EXPECT_EQ(dispatcher_.pending(), 0u);
}

// A shadow decision's apply in flight was never charged (dry run sends nothing): an enforcing
// block replacing it is a new restriction, charged as any other, not taken for the replacement
// of something the edge already restricts.
TEST_F(DispatcherTest, ABlockReplacingAShadowDecisionInFlightIsCharged) {
  GuardOptions options;
  options.max_new_per_minute = 1;
  dispatcher_.SetGuard(std::make_unique<Guard>(options));
  auto list = std::make_unique<FakeActuator>();
  FakeActuator* lists = list.get();
  lists->label = "list";
  dispatcher_.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::move(list));
  DecisionUpdate first = Update(DecisionChange::kCreated, "first");
  first.decision.mutable_target()->set_value("203.0.113.1");
  dispatcher_.OnDecision(first);
  DecisionUpdate shadow = Update(DecisionChange::kCreated, "shadow");
  shadow.decision.set_dry_run(true);
  dispatcher_.OnDecision(shadow);
  // While first goes out, shadow is in flight with it (taken with the batch, not settled).
  fake_->during_run = [&] {
    // Copied first: clearing during_run destroys this closure, and its captures with it.
    DecisionUpdate withdrawn = shadow;
    DecisionUpdate block = Replacing(Update(DecisionChange::kCreated, "block"), "shadow");
    Dispatcher& dispatcher = dispatcher_;
    fake_->during_run = nullptr;
    withdrawn.change = DecisionChange::kWithdrawn;
    dispatcher.OnDecision(Replaced(withdrawn, "block"));
    block.decision.set_actuator(palisade::v1::ACTUATOR_IP_LIST);
    dispatcher.OnDecision(block);
  };
  dispatcher_.RunOnce();  // first spends the slot
  dispatcher_.RunOnce();
  EXPECT_EQ(dispatcher_.held(), 1u);  // block
  EXPECT_THAT(lists->calls, IsEmpty());
}

// Through the table itself (its stronger-claim path names both ends of the replacement): a
// rule's managed challenge at the edge, then a block rule's hit on the same address with the
// minute's budget spent. The block goes out, and the challenge's remove after it.
TEST_F(DispatcherTest, ATablesBlockReplacingAManagedChallengeGoesOutBeforeItsRemove) {
  GuardOptions options;
  options.max_new_per_minute = 1;
  dispatcher_.SetGuard(std::make_unique<Guard>(options));
  auto list = std::make_unique<FakeActuator>();
  FakeActuator* lists = list.get();
  lists->label = "list";
  dispatcher_.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::move(list));
  DecisionTable table(clock_);
  table.AddListener([this](const DecisionUpdate& u) { dispatcher_.OnDecision(u); });
  const auto hit = [&](const std::string& rule, palisade::v1::Action action,
                       palisade::v1::Actuator actuator) {
    palisade::v1::DecisionSpec spec;
    spec.set_action(action);
    *spec.mutable_duration() = ToProtoDuration(absl::Hours(1));
    spec.set_actuator(actuator);
    Detection detection;
    detection.rule_id = rule;
    detection.key = "203.0.113.7";
    detection.time = clock_.TimeNow();
    return table.Apply(detection, spec);
  };
  const DecisionUpdate challenge =
      hit("probe", palisade::v1::ACTION_MANAGED_CHALLENGE, palisade::v1::ACTUATOR_ACCESS_RULE);
  ASSERT_EQ(challenge.change, DecisionChange::kCreated);
  const std::string c = challenge.decision.id();
  dispatcher_.RunOnce();  // spends the minute's one slot
  const DecisionUpdate block =
      hit("exploit", palisade::v1::ACTION_BLOCK, palisade::v1::ACTUATOR_IP_LIST);
  ASSERT_EQ(block.change, DecisionChange::kCreated);
  ASSERT_EQ(block.decision.replaces(), c);
  const std::string b = block.decision.id();
  dispatcher_.RunOnce();  // the access rules' queue first: the challenge's remove waits
  EXPECT_EQ(dispatcher_.held(), 0u);
  EXPECT_THAT(lists->calls, ElementsAre("apply " + b));
  EXPECT_THAT(fake_->calls, ElementsAre("apply " + c));
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply " + c, "remove " + c + " edge-" + c));
  EXPECT_EQ(dispatcher_.pending(), 0u);
}

// A replacement takes over only from a decision on its own target: one naming a decision that
// stands elsewhere (the table pairs none such; defence in depth) is a new restriction, charged.
TEST_F(DispatcherTest, AReplacementNamingADecisionOnAnotherTargetIsCharged) {
  GuardOptions options;
  options.max_new_per_minute = 1;
  dispatcher_.SetGuard(std::make_unique<Guard>(options));
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "a"));
  dispatcher_.RunOnce();  // spends the slot
  ASSERT_EQ(dispatcher_.edges().count("a"), 1u);
  DecisionUpdate elsewhere = Replacing(Update(DecisionChange::kCreated, "b"), "a");
  elsewhere.decision.mutable_target()->set_value("203.0.113.9");
  dispatcher_.OnDecision(elsewhere);
  dispatcher_.RunOnce();
  EXPECT_EQ(dispatcher_.held(), 1u);
  EXPECT_THAT(fake_->calls, ElementsAre("apply a"));
}

// After a restart, the outbox rows carry the decisions, and so the fields that pair them.
TEST_F(DispatcherTest, AfterARestartABlockReplacingAChallengeIsStillNotHeld) {
  auto store = FreshStore("replace.db");
  ASSERT_TRUE(store.ok());
  auto record = [&](DecisionChange change, const std::string& id, palisade::v1::Actuator kind,
                    const std::string& target, const std::string& replaces = "",
                    const std::string& replaced_by = "") {
    DecisionUpdate u = Update(change, id);
    u.decision.set_actuator(kind);
    u.decision.mutable_target()->set_value(target);
    u.decision.set_active(change == DecisionChange::kCreated);
    u.decision.set_replaces(replaces);
    u.decision.set_replaced_by(replaced_by);
    u.outbox_seq =
        *(*store)->RecordDecision(u.decision, nullptr, change == DecisionChange::kCreated);
    return u;
  };
  dispatcher_.OnDecision(record(DecisionChange::kCreated, "challenge",
                                palisade::v1::ACTUATOR_ACCESS_RULE, "203.0.113.7"));
  dispatcher_.RunOnce();
  ASSERT_EQ(dispatcher_.edges().count("challenge"), 1u);
  // Recorded, then the process "dies" before sending: a fresh block, then the replacement.
  record(DecisionChange::kCreated, "fresh", palisade::v1::ACTUATOR_IP_LIST, "203.0.113.9");
  record(DecisionChange::kWithdrawn, "challenge", palisade::v1::ACTUATOR_ACCESS_RULE,
         "203.0.113.7", "", "block");
  record(DecisionChange::kCreated, "block", palisade::v1::ACTUATOR_IP_LIST, "203.0.113.7",
         "challenge");

  std::unique_ptr<Restarted> r = Restart(store->get());
  GuardOptions options;
  options.max_new_per_minute = 1;
  r->dispatcher.SetGuard(std::make_unique<Guard>(options));
  auto list = std::make_unique<FakeActuator>();
  FakeActuator* lists = list.get();
  lists->label = "list";
  r->dispatcher.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::move(list));
  ASSERT_TRUE(r->dispatcher.Restore().ok());
  r->dispatcher.RunOnce();
  EXPECT_THAT(lists->calls, ElementsAre("apply fresh", "apply block"));  // fresh spent the slot
  EXPECT_EQ(r->dispatcher.held(), 0u);
  // The challenge's remove waited for the block (its queue ran first), and follows it now.
  EXPECT_THAT(r->actuator->calls, IsEmpty());
  r->dispatcher.RunOnce();
  EXPECT_THAT(r->actuator->calls, ElementsAre("remove challenge edge-challenge"));
  EXPECT_THAT(*(*store)->LoadOutbox(), IsEmpty());
}

// A restart whose outbox holds [remove c (replaced by b), apply b, remove b]: b has ended, so
// c's remove waits for nothing. It waited for ever when b's apply then failed for good.
TEST_F(DispatcherTest, AfterARestartARemoveNeverWaitsForAReplacementThatHasEnded) {
  auto store = FreshStore("replace_ended.db");
  ASSERT_TRUE(store.ok());
  DecisionUpdate c = Update(DecisionChange::kCreated, "c");
  c.decision.set_active(true);
  c.outbox_seq = *(*store)->RecordDecision(c.decision, nullptr, true);
  dispatcher_.OnDecision(c);
  dispatcher_.RunOnce();
  ASSERT_EQ(dispatcher_.edges().count("c"), 1u);
  c.decision.set_active(false);
  c.decision.set_replaced_by("b");
  ASSERT_TRUE((*store)->RecordDecision(c.decision, nullptr, false).ok());
  palisade::v1::Decision b = Update(DecisionChange::kCreated, "b").decision;
  b.set_actuator(palisade::v1::ACTUATOR_IP_LIST);
  b.set_replaces("c");
  b.set_active(true);
  ASSERT_TRUE((*store)->RecordDecision(b, nullptr, true).ok());
  b.set_active(false);
  ASSERT_TRUE((*store)->RecordDecision(b, nullptr, false).ok());

  std::unique_ptr<Restarted> r = Restart(store->get());
  auto list = std::make_unique<FakeActuator>();
  FakeActuator* lists = list.get();
  lists->label = "list";
  lists->failures = {absl::FailedPreconditionError("the list is at max_items")};
  r->dispatcher.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::move(list));
  ASSERT_TRUE(r->dispatcher.Restore().ok());
  r->dispatcher.RunOnce();
  r->dispatcher.RunOnce();
  EXPECT_THAT(r->actuator->calls, ElementsAre("remove c edge-c"));
  EXPECT_EQ(r->dispatcher.edges().count("c"), 0u);
}

// Live, a block that failed for good leaves the challenge standing until the block ends (see
// dispatcher.h). After a restart, the outbox no longer holds the block's apply (its failure
// record took its place) and cannot tell whether the block still stands: the challenge's
// remove runs rather than risk a wait with no end.
TEST_F(DispatcherTest, AfterARestartARemoveDoesNotWaitForAReplacementThatFailedForGood) {
  auto store = FreshStore("replace_failed.db");
  ASSERT_TRUE(store.ok());
  auto list = std::make_unique<FakeActuator>();
  FakeActuator* lists = list.get();
  lists->label = "list";
  lists->failures = {absl::FailedPreconditionError("the list is at max_items")};
  dispatcher_.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::move(list));
  DecisionUpdate c = Update(DecisionChange::kCreated, "c");
  c.decision.set_active(true);
  c.outbox_seq = *(*store)->RecordDecision(c.decision, nullptr, true);
  dispatcher_.OnDecision(c);
  dispatcher_.RunOnce();
  c.change = DecisionChange::kWithdrawn;
  c.decision.set_active(false);
  c.decision.set_replaced_by("b");
  c.outbox_seq = *(*store)->RecordDecision(c.decision, nullptr, false);
  DecisionUpdate b = Replacing(Update(DecisionChange::kCreated, "b"), "c");
  b.decision.set_actuator(palisade::v1::ACTUATOR_IP_LIST);
  b.decision.set_active(true);
  b.outbox_seq = *(*store)->RecordDecision(b.decision, nullptr, true);
  dispatcher_.OnDecision(c);
  dispatcher_.OnDecision(b);
  dispatcher_.RunOnce();
  dispatcher_.RunOnce();
  ASSERT_THAT(dispatcher_.FailedForGood(), ElementsAre(Pair("b", "0.0")));
  ASSERT_THAT(fake_->calls, ElementsAre("apply c"));  // live: the challenge stays

  std::unique_ptr<Restarted> r = Restart(store->get());
  r->dispatcher.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::make_unique<FakeActuator>());
  ASSERT_TRUE(r->dispatcher.Restore().ok());
  EXPECT_THAT(r->dispatcher.FailedForGood(), ElementsAre(Pair("b", "0.0")));
  r->dispatcher.RunOnce();
  EXPECT_THAT(r->actuator->calls, ElementsAre("remove c edge-c"));
  EXPECT_THAT(*(*store)->LoadOutbox(), IsEmpty());
}

// The hand-over of a replacement cancelled while held (see
// AReplacementCancelledWhileHeldHandsOverWhatItReplaced) survives a restart: the cancelled
// block's row is gone, the challenge's row still names it (replaced_by) and the next block's
// row too (replaces). Restored, the challenge's remove waits for the next block, which takes
// over from the challenge (not charged). It went at once, and the block, naming one never at
// the edge, spent the budget: held, the target bare.
TEST_F(DispatcherTest, AHandOverSurvivesARestart) {
  auto store = FreshStore("hand_over.db");
  ASSERT_TRUE(store.ok());
  GuardOptions options;
  options.max_active_per_actuator = 1;
  dispatcher_.SetGuard(std::make_unique<Guard>(options));
  dispatcher_.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::make_unique<FakeActuator>());
  auto record = [&](DecisionChange change, const std::string& id, palisade::v1::Actuator kind,
                    const std::string& target, const std::string& replaces = "",
                    const std::string& replaced_by = "") {
    DecisionUpdate u = Update(change, id);
    u.decision.set_actuator(kind);
    u.decision.mutable_target()->set_value(target);
    u.decision.set_active(change == DecisionChange::kCreated);
    u.decision.set_replaces(replaces);
    u.decision.set_replaced_by(replaced_by);
    u.outbox_seq =
        *(*store)->RecordDecision(u.decision, nullptr, change == DecisionChange::kCreated);
    return u;
  };
  constexpr auto kList = palisade::v1::ACTUATOR_IP_LIST;
  constexpr auto kRule = palisade::v1::ACTUATOR_ACCESS_RULE;
  dispatcher_.OnDecision(record(DecisionChange::kCreated, "full", kList, "203.0.113.9"));
  dispatcher_.OnDecision(record(DecisionChange::kCreated, "a", kRule, "203.0.113.7"));
  dispatcher_.RunOnce();
  dispatcher_.OnDecision(record(DecisionChange::kWithdrawn, "a", kRule, "203.0.113.7", "", "b"));
  dispatcher_.OnDecision(record(DecisionChange::kCreated, "b", kList, "203.0.113.7", "a"));
  dispatcher_.RunOnce();
  ASSERT_EQ(dispatcher_.held(), 1u);  // b, over the list's cap
  dispatcher_.OnDecision(record(DecisionChange::kWithdrawn, "b", kList, "203.0.113.7", "a", "c"));
  // Recorded, not heard before the process "dies": an unrelated block on another target.
  record(DecisionChange::kCreated, "fresh", kList, "203.0.113.1");
  dispatcher_.OnDecision(record(DecisionChange::kCreated, "c", kList, "203.0.113.7", "b"));
  dispatcher_.RunOnce();
  dispatcher_.RunOnce();
  ASSERT_EQ(dispatcher_.held(), 1u);  // c
  ASSERT_THAT(fake_->calls, ElementsAre("apply a"));

  // The restart comes with the list's cap raised, and a budget of one a minute.
  std::unique_ptr<Restarted> r = Restart(store->get());
  GuardOptions restarted;
  restarted.max_new_per_minute = 1;
  r->dispatcher.SetGuard(std::make_unique<Guard>(restarted));
  auto list = std::make_unique<FakeActuator>();
  FakeActuator* lists = list.get();
  lists->label = "list";
  r->dispatcher.AddActuator(kList, std::move(list));
  ASSERT_TRUE(r->dispatcher.Restore().ok());
  r->dispatcher.RunOnce();
  EXPECT_EQ(r->dispatcher.held(), 0u);
  EXPECT_THAT(lists->calls, ElementsAre("apply fresh", "apply c"));  // fresh spent the slot
  EXPECT_THAT(r->actuator->calls, IsEmpty());  // the challenge's remove waited for c
  r->dispatcher.RunOnce();
  EXPECT_THAT(r->actuator->calls, ElementsAre("remove a edge-a"));
  EXPECT_THAT(*(*store)->LoadOutbox(), IsEmpty());
}

// The same through a chain of two cancelled replacements: b, then c, each cancelled while held
// and replaced in turn, d takes over from the challenge a. No outbox row names c's link to b
// (b's and c's applies are gone; a's remove names b, d's apply names c): the restart follows
// the chain through the stored decisions (b replaced by c, c by d). It followed one level only:
// a's remove went at once, and d, naming a c never at the edge, spent the budget: held, the
// target bare.
TEST_F(DispatcherTest, AHandOverThroughTwoCancelledReplacementsSurvivesARestart) {
  auto store = FreshStore("hand_over_chain.db");
  ASSERT_TRUE(store.ok());
  RecordTwoCancelledReplacements(store->get());
  ASSERT_FALSE(HasFailure());

  FakeActuator* lists = nullptr;
  std::unique_ptr<Restarted> r = RestartWithABudgetOfOne(store->get(), &lists);
  ASSERT_TRUE(r->dispatcher.Restore().ok());
  r->dispatcher.RunOnce();
  EXPECT_EQ(r->dispatcher.held(), 0u);
  EXPECT_THAT(lists->calls, ElementsAre("apply fresh", "apply d"));  // fresh spent the slot
  EXPECT_THAT(r->actuator->calls, IsEmpty());  // the challenge's remove waited for d
  r->dispatcher.RunOnce();
  EXPECT_THAT(r->actuator->calls, ElementsAre("remove a edge-a"));
  EXPECT_THAT(*(*store)->LoadOutbox(), IsEmpty());
}

// The chain is read link by link (Store::LoadDecision), never all the stored decisions at once:
// those include every ended one kept for the retention, with its evidence, and one corrupt row
// among them made Restore fail, and palisaded not start.
TEST_F(DispatcherTest, ACorruptUnrelatedDecisionDoesNotStopARestore) {
  auto store = FreshStore("hand_over_chain_corrupt_other.db");
  ASSERT_TRUE(store.ok());
  RecordTwoCancelledReplacements(store->get());
  ASSERT_FALSE(HasFailure());
  DecisionUpdate old = Update(DecisionChange::kExpired, "old");
  old.decision.set_active(false);
  ASSERT_TRUE((*store)->RecordDecision(old.decision, nullptr, std::nullopt).ok());
  ::palisade::testing::ExecSql(
      absl::StrCat(std::getenv("TEST_TMPDIR"), "/hand_over_chain_corrupt_other.db"),
      "UPDATE decisions SET proto = x'ffffffff' WHERE CAST(id AS TEXT) = 'old';");
  ASSERT_FALSE(HasFailure());

  FakeActuator* lists = nullptr;
  std::unique_ptr<Restarted> r = RestartWithABudgetOfOne(store->get(), &lists);
  ASSERT_TRUE(r->dispatcher.Restore().ok());
  r->dispatcher.RunOnce();
  EXPECT_EQ(r->dispatcher.held(), 0u);
  EXPECT_THAT(lists->calls, ElementsAre("apply fresh", "apply d"));
  EXPECT_THAT(r->actuator->calls, IsEmpty());  // the hand-over was still followed
  r->dispatcher.RunOnce();
  EXPECT_THAT(r->actuator->calls, ElementsAre("remove a edge-a"));
}

// A link of the chain that cannot be read (corrupt) ends the walk, and Restore goes on: the
// remove goes at once, as it did before chains were followed (d is then charged).
TEST_F(DispatcherTest, ACorruptLinkEndsTheWalkAndTheRemoveGoes) {
  auto store = FreshStore("hand_over_chain_corrupt_link.db");
  ASSERT_TRUE(store.ok());
  RecordTwoCancelledReplacements(store->get());
  ASSERT_FALSE(HasFailure());
  ::palisade::testing::ExecSql(
      absl::StrCat(std::getenv("TEST_TMPDIR"), "/hand_over_chain_corrupt_link.db"),
      "UPDATE decisions SET proto = x'ffffffff' WHERE CAST(id AS TEXT) = 'b';");
  ASSERT_FALSE(HasFailure());

  FakeActuator* lists = nullptr;
  std::unique_ptr<Restarted> r = RestartWithABudgetOfOne(store->get(), &lists);
  ASSERT_TRUE(r->dispatcher.Restore().ok());
  r->dispatcher.RunOnce();
  EXPECT_THAT(r->actuator->calls, ElementsAre("remove a edge-a"));
  EXPECT_THAT(lists->calls, ElementsAre("apply fresh"));
  EXPECT_EQ(r->dispatcher.held(), 1u);  // d, charged
}

// A challenge a's remove released for its successor c in a's own queue (b, the block between,
// withdrawn for c while in flight, failed): a's remove goes first, then c (RemoveBarrier), not
// charged (it took over from b in flight, sent). A crash between the two leaves c's apply,
// naming b (no row, nothing at the edge), and nothing of a: restored, c was charged as a new
// restriction and held behind the minute's budget, the target bare (a gone) until an operator
// released it. a's remove leaves a record that c takes over (kTakesOverContainer).
TEST_F(DispatcherTest, ASuccessorInTheRemovesQueueIsNotChargedAfterACrashBetweenThem) {
  auto store = FreshStore("hand_over_same_queue.db");
  ASSERT_TRUE(store.ok());
  fake_->adopts = true;  // as access rules: c's apply waits behind a's remove
  auto list = std::make_unique<FakeActuator>();
  FakeActuator* lists = list.get();
  lists->label = "list";
  dispatcher_.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::move(list));
  auto record = [&](DecisionChange change, const std::string& id, palisade::v1::Actuator kind,
                    const std::string& target, const std::string& replaces = "",
                    const std::string& replaced_by = "") {
    DecisionUpdate u = Update(change, id);
    u.decision.set_actuator(kind);
    u.decision.mutable_target()->set_value(target);
    u.decision.set_active(change == DecisionChange::kCreated);
    u.decision.set_replaces(replaces);
    u.decision.set_replaced_by(replaced_by);
    u.outbox_seq = *(*store)->RecordDecision(u.decision, nullptr, true);
    return u;
  };
  constexpr auto kList = palisade::v1::ACTUATOR_IP_LIST;
  constexpr auto kRule = palisade::v1::ACTUATOR_ACCESS_RULE;
  dispatcher_.OnDecision(record(DecisionChange::kCreated, "a", kRule, "203.0.113.7"));
  dispatcher_.RunOnce();
  dispatcher_.OnDecision(record(DecisionChange::kWithdrawn, "a", kRule, "203.0.113.7", "", "b"));
  dispatcher_.OnDecision(record(DecisionChange::kCreated, "b", kList, "203.0.113.7", "a"));
  bool withdrawn = false;  // the hook runs once
  lists->during_run = [&] {
    if (std::exchange(withdrawn, true)) return;
    lists->failures = {absl::FailedPreconditionError("the list is at max_items")};
    dispatcher_.OnDecision(
        record(DecisionChange::kWithdrawn, "b", kList, "203.0.113.7", "a", "c"));
    // Recorded, not heard before the process "dies": an unrelated block on another target.
    record(DecisionChange::kCreated, "fresh", kRule, "203.0.113.1");
    dispatcher_.OnDecision(record(DecisionChange::kCreated, "c", kRule, "203.0.113.7", "b"));
  };
  dispatcher_.RunOnce();  // b goes out and fails for good: a's remove may go, c behind it
  dispatcher_.RunOnce();  // a's remove; the process dies before c goes out
  ASSERT_THAT(fake_->calls, ElementsAre("apply a", "remove a edge-a"));
  ASSERT_THAT(lists->calls, ElementsAre("apply b"));

  std::unique_ptr<Restarted> r = Restart(store->get());
  r->actuator->adopts = true;
  GuardOptions restarted;
  restarted.max_new_per_minute = 1;
  r->dispatcher.SetGuard(std::make_unique<Guard>(restarted));
  r->dispatcher.AddActuator(kList, std::make_unique<FakeActuator>());
  ASSERT_TRUE(r->dispatcher.Restore().ok());
  r->dispatcher.RunOnce();
  EXPECT_EQ(r->dispatcher.held(), 0u);
  EXPECT_THAT(r->actuator->calls, ElementsAre("apply fresh", "apply c"));  // fresh spent the slot
  EXPECT_THAT(*(*store)->LoadOutbox(), IsEmpty());
  // The record went with c's apply: the edges table holds c's object and fresh's.
  EXPECT_THAT(r->dispatcher.edges(),
              ElementsAre(Pair("c", ::testing::_), Pair("fresh", ::testing::_)));
  std::unique_ptr<Restarted> again = Restart(store->get());
  ASSERT_TRUE(again->dispatcher.Restore().ok());
  EXPECT_THAT(again->dispatcher.edges(), SizeIs(2));
}

// ASuccessorInTheRemovesQueueIsNotChargedAfterACrashBetweenThem up to a's remove, in `store`:
// c's apply, taking over from a, still to do. `c_row`: c's apply has an outbox row (false: the
// store refused it, seq 0). Returns c's creation.
DecisionUpdate DispatcherTest::RemoveBeforeItsSuccessor(Store* store, bool c_row) {
  fake_->adopts = true;
  auto list = std::make_unique<FakeActuator>();
  FakeActuator* lists = list.get();
  dispatcher_.AddActuator(palisade::v1::ACTUATOR_IP_LIST, std::move(list));
  auto record = [&](DecisionChange change, const std::string& id, palisade::v1::Actuator kind,
                    const std::string& replaces = "", const std::string& replaced_by = "",
                    bool outbox = true) {
    DecisionUpdate u = Update(change, id);
    u.decision.set_actuator(kind);
    u.decision.mutable_target()->set_value("203.0.113.7");
    u.decision.set_active(change == DecisionChange::kCreated);
    u.decision.set_replaces(replaces);
    u.decision.set_replaced_by(replaced_by);
    u.outbox_seq = *store->RecordDecision(u.decision, nullptr,
                                          outbox ? std::optional<bool>(true) : std::nullopt);
    return u;
  };
  constexpr auto kList = palisade::v1::ACTUATOR_IP_LIST;
  constexpr auto kRule = palisade::v1::ACTUATOR_ACCESS_RULE;
  dispatcher_.OnDecision(record(DecisionChange::kCreated, "a", kRule));
  dispatcher_.RunOnce();
  dispatcher_.OnDecision(record(DecisionChange::kWithdrawn, "a", kRule, "", "b"));
  dispatcher_.OnDecision(record(DecisionChange::kCreated, "b", kList, "a"));
  DecisionUpdate c;
  bool withdrawn = false;  // the hook runs once
  lists->during_run = [&] {
    if (std::exchange(withdrawn, true)) return;
    lists->failures = {absl::FailedPreconditionError("the list is at max_items")};
    dispatcher_.OnDecision(record(DecisionChange::kWithdrawn, "b", kList, "a", "c"));
    c = record(DecisionChange::kCreated, "c", kRule, "b", "", c_row);
    dispatcher_.OnDecision(c);
  };
  dispatcher_.RunOnce();  // b goes out and fails for good: a's remove may go, c behind it
  dispatcher_.RunOnce();  // a's remove
  lists->during_run = nullptr;  // its captures end here
  EXPECT_THAT(fake_->calls, ElementsAre("apply a", "remove a edge-a"));
  return c;
}

// The hand-over records in the store (kTakesOverContainer), by decision id.
std::vector<std::string> TakeOverRecords(Store* store) {
  std::vector<std::string> ids;
  absl::StatusOr<std::vector<EdgeRow>> edges = store->LoadEdges();
  EXPECT_TRUE(edges.ok()) << edges.status();
  if (!edges.ok()) return ids;
  for (const EdgeRow& e : *edges) {
    if (e.container == Dispatcher::kTakesOverContainer) ids.push_back(e.decision_id);
  }
  return ids;
}

// c's hand-over record goes with c's end (before its apply went out): kept, a restart would
// find it for nothing.
TEST_F(DispatcherTest, AHandOverRecordIsDeletedWhenItsDecisionEnds) {
  auto store = FreshStore("take_over_ends.db");
  ASSERT_TRUE(store.ok());
  DecisionUpdate c = RemoveBeforeItsSuccessor(store->get(), true);
  ASSERT_FALSE(HasFailure());
  ASSERT_THAT(TakeOverRecords(store->get()), ElementsAre("c"));
  DecisionUpdate ended = c;
  ended.change = DecisionChange::kExpired;
  ended.decision.set_active(false);
  ended.outbox_seq = *(*store)->RecordDecision(ended.decision, nullptr, false);
  dispatcher_.OnDecision(ended);
  EXPECT_THAT(TakeOverRecords(store->get()), IsEmpty());
}

// An apply with no outbox row (seq 0) writes no edge record to replace its hand-over record:
// it is deleted as the apply lands, not left until its decision's end.
TEST_F(DispatcherTest, AHandOverRecordGoesWithAnApplyThatHasNoRow) {
  auto store = FreshStore("take_over_no_row.db");
  ASSERT_TRUE(store.ok());
  RemoveBeforeItsSuccessor(store->get(), false);
  ASSERT_FALSE(HasFailure());
  ASSERT_THAT(TakeOverRecords(store->get()), ElementsAre("c"));
  dispatcher_.RunOnce();
  ASSERT_THAT(fake_->calls, ElementsAre("apply a", "remove a edge-a", "apply c"));
  EXPECT_THAT(TakeOverRecords(store->get()), IsEmpty());
}

// Restore deletes a hand-over record whose decision has no apply left to take over with.
TEST_F(DispatcherTest, RestoreDeletesAHandOverRecordWithNoApplyLeft) {
  auto store = FreshStore("take_over_orphan.db");
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)
                  ->CompleteApply(0, {"gone", palisade::v1::ACTUATOR_ACCESS_RULE, "a",
                                      Dispatcher::kTakesOverContainer, true})
                  .ok());
  ASSERT_THAT(TakeOverRecords(store->get()), ElementsAre("gone"));
  std::unique_ptr<Restarted> r = Restart(store->get());
  ASSERT_TRUE(r->dispatcher.Restore().ok());
  EXPECT_THAT(TakeOverRecords(store->get()), IsEmpty());
  EXPECT_THAT(r->dispatcher.edges(), IsEmpty());
}

// Audit of itself: a revocation of palisaded's own token (the audit-log misuse rule) never
// reaches the actuator; it is refused with an alert, counted, and other tokens still go.
TEST_F(DispatcherTest, TheOwnTokenIsNeverRevokedButAlertedOn) {
  auto tokens = std::make_unique<FakeActuator>();
  FakeActuator* revoker = tokens.get();
  dispatcher_.AddActuator(palisade::v1::ACTUATOR_TOKEN_REVOCATION, std::move(tokens));
  GuardOptions options;
  options.own_token_id = "0123456789abcdef0123456789abcdef";
  dispatcher_.SetGuard(std::make_unique<Guard>(options));
  std::vector<ActionOutcome> outcomes;
  dispatcher_.SetObserver([&](const ActionOutcome& o) { outcomes.push_back(o); });
  auto revoke = [&](const std::string& id, const std::string& token) {
    DecisionUpdate u = Update(DecisionChange::kCreated, id);
    u.decision.set_actuator(palisade::v1::ACTUATOR_TOKEN_REVOCATION);
    u.decision.mutable_target()->set_kind(palisade::v1::TARGET_KIND_TOKEN_ID);
    u.decision.mutable_target()->set_value(token);
    u.decision.set_rule_id("cloudflare-token-misuse");
    u.decision.add_evidence("{\"actor\":{\"ip_address\":\"203.0.113.50\"}}");
    dispatcher_.OnDecision(u);
  };
  revoke("own", "0123456789abcdef0123456789abcdef");
  revoke("other", "ed17574386854bf78a67040be0a770b0");
  dispatcher_.RunOnce();
  EXPECT_THAT(revoker->calls, ElementsAre("apply other"));
  ASSERT_THAT(outcomes, SizeIs(2));
  EXPECT_EQ(outcomes[0].decision.id(), "own");
  EXPECT_EQ(outcomes[0].outcome, "refused");
  EXPECT_EQ(outcomes[0].alert, "own_token_misuse");
  EXPECT_EQ(outcomes[1].outcome, "applied");
  EXPECT_EQ(outcomes[1].alert, "");
  EXPECT_EQ(dispatcher_.pending(), 0u);
  EXPECT_THAT(dispatcher_.edges(), SizeIs(1));
  double misuse = 0;
  for (const auto& f : registry_.Collect()) {
    if (f.name == "palisade_cloudflare_own_token_misuse_total") misuse = f.metric[0].counter.value;
  }
  EXPECT_EQ(misuse, 1);
  // The same target as an IP, or a fingerprint with the same text, is not the own token.
  Guard guard(options);
  palisade::v1::Target t;
  t.set_kind(palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT);
  t.set_value(options.own_token_id);
  EXPECT_FALSE(guard.OwnToken(t));
  t.set_kind(palisade::v1::TARGET_KIND_TOKEN_ID);
  EXPECT_TRUE(guard.OwnToken(t));
  EXPECT_FALSE(Guard(GuardOptions()).OwnToken(t));  // unknown id: nothing is "own"
}

TEST_F(DispatcherTest, PerRuleShadowMode) {
  DecisionUpdate u = Update(DecisionChange::kCreated, "d1");
  u.decision.set_dry_run(true);
  dispatcher_.OnDecision(u);
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "d2"));
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply d2"));
  EXPECT_EQ(Actions("dry_run"), 1);
  EXPECT_EQ(Actions("applied"), 1);
}

// A shadow decision (the rule's dry_run) sends nothing: it must spend none of the guard's
// per-minute budget and count as no object at the edge. It did both, so a noisy rule in shadow
// mode held every real ban behind it.
TEST_F(DispatcherTest, AShadowDecisionSpendsNoBudgetAndCountsAsNoObject) {
  GuardOptions options;
  options.max_new_per_minute = 1;
  dispatcher_.SetGuard(std::make_unique<Guard>(options));
  DecisionUpdate shadow = Update(DecisionChange::kCreated, "d1");
  shadow.decision.set_dry_run(true);
  dispatcher_.OnDecision(shadow);
  DecisionUpdate real = Update(DecisionChange::kCreated, "d2");
  real.decision.mutable_target()->set_value("203.0.113.8");
  dispatcher_.OnDecision(real);
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply d2"));
  EXPECT_EQ(dispatcher_.held(), 0u);
  EXPECT_EQ(Actions("dry_run"), 1);

  // The active cap counts objects at the edge: the shadow decision's "would apply" is none.
  prometheus::Registry registry;
  Dispatcher capped(clock_, Options(), registry);
  auto fake = std::make_unique<FakeActuator>();
  FakeActuator* f = fake.get();
  capped.AddActuator(palisade::v1::ACTUATOR_ACCESS_RULE, std::move(fake));
  options.max_new_per_minute = 60;
  options.max_active_per_actuator = 1;
  capped.SetGuard(std::make_unique<Guard>(options));
  capped.OnDecision(shadow);
  capped.RunOnce();
  capped.OnDecision(real);
  capped.RunOnce();
  EXPECT_THAT(f->calls, ElementsAre("apply d2"));
  EXPECT_EQ(capped.held(), 0u);
  // And the cap still holds real objects to it.
  DecisionUpdate third = Update(DecisionChange::kCreated, "d3");
  third.decision.mutable_target()->set_value("203.0.113.9");
  capped.OnDecision(third);
  capped.RunOnce();
  EXPECT_THAT(f->calls, ElementsAre("apply d2"));
  EXPECT_EQ(capped.held(), 1u);
}

// A reload that changes the allowlist swaps the never-ban set the guard judges by (it was fixed
// at start): a target taken off it is sent, one put on it is refused, and an apply refused only
// as never-ban is tried again, durably, once the new set no longer protects its target.
TEST_F(DispatcherTest, ANeverBanSetSwappedByAReloadReachesTheGuardAndRetriesItsRefusals) {
  auto store = FreshStore("never.db");
  ASSERT_TRUE(store.ok());
  GuardOptions options;
  options.never_ban = *CidrSet::Parse({"203.0.113.0/24"});
  dispatcher_.SetGuard(std::make_unique<Guard>(options));
  auto record = [&](const std::string& id, const std::string& target) {
    DecisionUpdate u = Update(DecisionChange::kCreated, id);
    u.decision.mutable_target()->set_value(target);
    u.decision.mutable_expiry()->set_seconds(1000);
    u.decision.set_active(true);
    u.outbox_seq = *(*store)->RecordDecision(u.decision, nullptr, true);
    return u;
  };
  dispatcher_.OnDecision(record("d1", "203.0.113.7"));
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, IsEmpty());
  EXPECT_THAT(dispatcher_.FailedForGood(), ElementsAre(Pair("d1", "1000.0")));

  dispatcher_.SetNeverBan(*CidrSet::Parse({"198.51.100.0/24"}));
  EXPECT_EQ(dispatcher_.pending(), 1u);
  EXPECT_THAT(*(*store)->LoadOutbox(), SizeIs(1));  // the retry is durable
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply d1"));
  EXPECT_THAT(dispatcher_.FailedForGood(), IsEmpty());
  dispatcher_.OnDecision(record("d2", "203.0.113.8"));
  dispatcher_.OnDecision(record("d3", "198.51.100.9"));  // newly protected
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply d1", "apply d2"));
  EXPECT_THAT(dispatcher_.FailedForGood(), ElementsAre(Pair("d3", "1000.0")));
  EXPECT_EQ(Actions("refused"), 2);
  EXPECT_THAT(*(*store)->LoadOutbox(), IsEmpty());

  // A refusal the new set still covers stays a failure record, and is not sent.
  dispatcher_.SetNeverBan(*CidrSet::Parse({"198.51.100.0/25"}));
  EXPECT_EQ(dispatcher_.RunOnce(), 0);
  EXPECT_THAT(dispatcher_.FailedForGood(), ElementsAre(Pair("d3", "1000.0")));
}

// Global dry run sends nothing new, but an object already at the edge (made before the switch)
// must still be removed when its decision ends: answered "would remove", its edge record went
// and nothing would ever take it down (the reconciler does not run in dry run).
TEST_F(DispatcherTest, InDryRunTheRemoveOfARealObjectStillGoesOut) {
  auto store = FreshStore("dry.db");
  ASSERT_TRUE(store.ok());
  auto record = [&](DecisionChange change, const std::string& id) {
    DecisionUpdate u = Update(change, id);
    u.decision.set_active(change == DecisionChange::kCreated);
    u.outbox_seq =
        *(*store)->RecordDecision(u.decision, nullptr, change == DecisionChange::kCreated);
    return u;
  };
  dispatcher_.OnDecision(record(DecisionChange::kCreated, "d1"));
  dispatcher_.RunOnce();
  ASSERT_THAT(*(*store)->LoadEdges(), SizeIs(1));

  // Restarted with cloudflare.dry_run.
  DispatcherOptions o = Options();
  o.dry_run = true;
  prometheus::Registry registry;
  Dispatcher dry(clock_, o, registry);
  auto fake = std::make_unique<FakeActuator>();
  FakeActuator* f = fake.get();
  dry.AddActuator(palisade::v1::ACTUATOR_ACCESS_RULE, std::move(fake));
  dry.SetStore(store->get());
  ASSERT_TRUE(dry.Restore().ok());
  dry.OnDecision(record(DecisionChange::kCreated, "d2"));  // new: only "would apply"
  dry.RunOnce();
  dry.OnDecision(record(DecisionChange::kExpired, "d1"));
  dry.OnDecision(record(DecisionChange::kExpired, "d2"));  // its "object" is the marker
  dry.RunOnce();
  EXPECT_THAT(f->calls, ElementsAre("remove d1 edge-d1"));
  EXPECT_THAT(*(*store)->LoadEdges(), IsEmpty());
  EXPECT_THAT(*(*store)->LoadOutbox(), IsEmpty());
  EXPECT_EQ(::palisade::testing::CounterSum(registry, "palisade_actions_total",
                                            {{"op", "remove"}, {"result", "applied"}}),
            1);
}

TEST_F(DispatcherTest, DurableQueueSurvivesARestart) {
  auto store = FreshStore("dispatch.db");
  ASSERT_TRUE(store.ok());
  auto record = [&](DecisionChange change, const std::string& id) {
    DecisionUpdate u = Update(change, id);
    u.decision.set_active(change == DecisionChange::kCreated);
    u.outbox_seq =
        *(*store)->RecordDecision(u.decision, nullptr, change == DecisionChange::kCreated);
    return u;
  };
  dispatcher_.OnDecision(record(DecisionChange::kCreated, "d1"));
  dispatcher_.RunOnce();                   // d1 reaches the edge
  record(DecisionChange::kCreated, "d2");  // recorded, then the process "dies" before sending
  EXPECT_THAT(*(*store)->LoadOutbox(), SizeIs(1));
  EXPECT_THAT(*(*store)->LoadEdges(), SizeIs(1));

  std::unique_ptr<Restarted> r = Restart(store->get());
  ASSERT_TRUE(r->dispatcher.Restore().ok());
  Dispatcher& restarted = r->dispatcher;
  FakeActuator* f = r->actuator;
  EXPECT_EQ(restarted.edges().at("d1").id, "edge-d1");
  EXPECT_THAT(f->restored, ElementsAre("edge-d1"));  // the actuator hears what it made
  restarted.RunOnce();
  EXPECT_THAT(f->calls, ElementsAre("apply d2"));  // d1 is not sent again
  restarted.OnDecision(record(DecisionChange::kExpired, "d1"));
  restarted.RunOnce();
  EXPECT_THAT(f->calls, ElementsAre("apply d2", "remove d1 edge-d1"));
  EXPECT_THAT(*(*store)->LoadOutbox(), SizeIs(0));
  EXPECT_THAT(*(*store)->LoadEdges(), SizeIs(1));  // d2's
}

// An apply that failed for good is remembered (so the reconciler does not apply it again on
// every run), with the edge records: across a restart, never as an object, and forgotten with
// its decision.
TEST_F(DispatcherTest, AFailureForGoodIsRememberedAcrossARestartUntilItsDecisionEnds) {
  auto store = FreshStore("failed.db");
  ASSERT_TRUE(store.ok());
  GuardOptions guard;
  dispatcher_.SetGuard(std::make_unique<Guard>(guard));
  auto record = [&](DecisionChange change, const std::string& id, const std::string& target) {
    DecisionUpdate u = Update(change, id);
    u.decision.mutable_target()->set_value(target);
    u.decision.mutable_expiry()->set_seconds(1000);
    u.decision.set_active(change == DecisionChange::kCreated);
    u.outbox_seq = *(*store)->RecordDecision(u.decision, nullptr, true);
    return u;
  };
  fake_->failures = {absl::InvalidArgumentError("bad")};
  dispatcher_.OnDecision(record(DecisionChange::kCreated, "bad", "203.0.113.7"));
  dispatcher_.OnDecision(record(DecisionChange::kCreated, "never", "10.0.0.1"));  // refused
  dispatcher_.RunOnce();
  EXPECT_THAT(dispatcher_.FailedForGood(),
              ElementsAre(Pair("bad", "1000.0"), Pair("never", "1000.0")));
  EXPECT_THAT(dispatcher_.edges(), IsEmpty());
  EXPECT_THAT(*(*store)->LoadOutbox(), IsEmpty());

  std::unique_ptr<Restarted> r = Restart(store->get());
  ASSERT_TRUE(r->dispatcher.Restore().ok());
  Dispatcher& restarted = r->dispatcher;
  FakeActuator* f = r->actuator;
  EXPECT_THAT(restarted.FailedForGood(),
              ElementsAre(Pair("bad", "1000.0"), Pair("never", "1000.0")));
  EXPECT_THAT(restarted.edges(), IsEmpty());
  EXPECT_THAT(f->restored, IsEmpty());  // no object to count
  EXPECT_EQ(restarted.RunOnce(), 0);

  restarted.OnDecision(record(DecisionChange::kExpired, "bad", "203.0.113.7"));
  EXPECT_EQ(restarted.RunOnce(), 0);  // nothing to remove
  EXPECT_THAT(restarted.FailedForGood(), ElementsAre(Pair("never", "1000.0")));
  EXPECT_THAT(*(*store)->LoadOutbox(), IsEmpty());
  EXPECT_THAT(*(*store)->LoadEdges(), SizeIs(1));  // never's
}

// A daemon killed in the middle of a long queue must not redo what the edge confirmed: each
// operation is recorded as it completes, not when the whole batch ends.
TEST_F(DispatcherTest, EachConfirmedOperationIsRecordedAsItCompletes) {
  auto store = FreshStore("each.db");
  ASSERT_TRUE(store.ok());
  for (const char* id : {"d1", "d2", "d3"}) {
    DecisionUpdate u = Update(DecisionChange::kCreated, id);
    u.decision.set_active(true);
    u.outbox_seq = *(*store)->RecordDecision(u.decision, nullptr, true);
    dispatcher_.OnDecision(u);
  }
  // What a crash at each call would leave: the outbox still to do, the edge records made.
  std::vector<std::pair<size_t, size_t>> seen;
  fake_->during_run = [&] {
    seen.emplace_back((*store)->LoadOutbox()->size(), (*store)->LoadEdges()->size());
  };
  EXPECT_EQ(dispatcher_.RunOnce(), 3);
  EXPECT_THAT(seen, ElementsAre(std::pair<size_t, size_t>{3, 0}, std::pair<size_t, size_t>{2, 1},
                                std::pair<size_t, size_t>{1, 2}));
  EXPECT_THAT(*(*store)->LoadOutbox(), IsEmpty());
}

// An access rule is one per target at the edge, and an apply adopts the one there (10009): it
// must not run while an earlier remove of the same target is still to be retried, or the retry
// would delete the rule the new decision adopted.
TEST_F(DispatcherTest, AnApplyWaitsForAnEarlierRemoveOfTheSameTarget) {
  fake_->adopts = true;
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "d1"));
  dispatcher_.RunOnce();
  fake_->failures = {absl::UnavailableError("503")};
  dispatcher_.OnDecision(Update(DecisionChange::kExpired, "d1"));
  dispatcher_.RunOnce();  // the remove fails and waits 1 s
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "d2"));
  DecisionUpdate other = Update(DecisionChange::kCreated, "d3");
  other.decision.mutable_target()->set_value("203.0.113.8");
  dispatcher_.OnDecision(other);
  dispatcher_.RunOnce();  // d3 goes; d2 waits for d1's remove
  EXPECT_THAT(fake_->calls, ElementsAre("apply d1", "remove d1 edge-d1", "apply d3"));
  EXPECT_TRUE(dispatcher_.Busy("d2"));
  clock_.Advance(absl::Seconds(1));
  dispatcher_.RunOnce();
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply d1", "remove d1 edge-d1", "apply d3",
                                        "remove d1 edge-d1", "apply d2"));
  EXPECT_EQ(dispatcher_.pending(), 0u);
}

// The remove is queued before the apply and fails: its retry must still go before the apply, or
// the apply adopts the old rule (10009) and the retried remove deletes it under the new decision.
TEST_F(DispatcherTest, ARetriedRemoveKeepsItsPlaceBeforeAnApplyOfTheSameTarget) {
  fake_->adopts = true;
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "d1"));
  dispatcher_.RunOnce();
  dispatcher_.OnDecision(Update(DecisionChange::kExpired, "d1"));
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "d2"));
  fake_->failures = {absl::UnavailableError("503")};
  dispatcher_.RunOnce();  // the remove fails and waits 1 s; d2 waits behind it
  clock_.Advance(absl::Seconds(1));
  dispatcher_.RunOnce();
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls,
              ElementsAre("apply d1", "remove d1 edge-d1", "remove d1 edge-d1", "apply d2"));
  EXPECT_EQ(dispatcher_.pending(), 0u);
  EXPECT_EQ(dispatcher_.edges().at("d2").id, "edge-d2");
  EXPECT_THAT(fake_->objects, ElementsAre(Pair("203.0.113.7", "edge-d2")));
}

TEST_F(DispatcherTest, NothingStartsWhilePaused) {
  dispatcher_.Pause();
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "d1"));
  EXPECT_EQ(dispatcher_.RunOnce(), 0);
  EXPECT_TRUE(dispatcher_.Busy("d1"));
  EXPECT_EQ(dispatcher_.BusyDecisions().count("d1"), 1u);
  dispatcher_.Resume();
  EXPECT_EQ(dispatcher_.RunOnce(), 1);
  EXPECT_THAT(fake_->calls, ElementsAre("apply d1"));
}

// Pause returns only once the operations running have settled.
TEST_F(DispatcherTest, PauseWaitsForTheRunningBatch) {
  absl::Notification running, paused;
  fake_->during_run = [&] {
    running.Notify();
    // Pause cannot return while this op runs.
    EXPECT_FALSE(paused.WaitForNotificationWithTimeout(absl::Milliseconds(200)));
  };
  dispatcher_.OnDecision(Update(DecisionChange::kCreated, "d1"));
  std::thread worker([&] { dispatcher_.RunOnce(); });
  running.WaitForNotification();
  dispatcher_.Pause();
  paused.Notify();
  EXPECT_EQ(dispatcher_.edges().count("d1"), 1u);  // settled before Pause returned
  dispatcher_.Resume();
  worker.join();
}

// The credentials check left the revocation actuator out at start (the token lacked "API Tokens
// Write"): a revocation decided meanwhile was deleted from the outbox, and the restart that
// started the actuator revoked nothing. A parked actuator's operations stay in the outbox,
// through restarts still without the permission, until a start that runs them.
TEST_F(DispatcherTest, AParkedActuatorsOperationsWaitInTheOutboxForTheRestartThatStartsIt) {
  auto store = FreshStore("parked.db");
  ASSERT_TRUE(store.ok());
  dispatcher_.ParkActuator(palisade::v1::ACTUATOR_TOKEN_REVOCATION, "token_revocation");
  DecisionUpdate u = Update(DecisionChange::kCreated, "revoke");
  u.decision.set_actuator(palisade::v1::ACTUATOR_TOKEN_REVOCATION);
  u.decision.mutable_target()->set_kind(palisade::v1::TARGET_KIND_TOKEN_ID);
  u.decision.mutable_target()->set_value("ed17574386854bf78a67040be0a770b0");
  u.decision.set_active(true);
  u.outbox_seq = *(*store)->RecordDecision(u.decision, nullptr, true);
  dispatcher_.OnDecision(u);
  EXPECT_EQ(dispatcher_.RunOnce(), 0);
  EXPECT_EQ(dispatcher_.pending(), 0u);
  EXPECT_THAT(*(*store)->LoadOutbox(), SizeIs(1));

  {  // A restart with the permission still missing keeps it too.
    std::unique_ptr<Restarted> still = Restart(store->get());
    still->dispatcher.ParkActuator(palisade::v1::ACTUATOR_TOKEN_REVOCATION, "token_revocation");
    ASSERT_TRUE(still->dispatcher.Restore().ok());
    EXPECT_EQ(still->dispatcher.RunOnce(), 0);
    EXPECT_THAT(*(*store)->LoadOutbox(), SizeIs(1));
  }

  // The operator grants the permission and restarts.
  std::unique_ptr<Restarted> r = Restart(store->get());
  auto tokens = std::make_unique<FakeActuator>();
  FakeActuator* revoker = tokens.get();
  r->dispatcher.AddActuator(palisade::v1::ACTUATOR_TOKEN_REVOCATION, std::move(tokens));
  ASSERT_TRUE(r->dispatcher.Restore().ok());
  EXPECT_EQ(r->dispatcher.RunOnce(), 1);
  EXPECT_THAT(revoker->calls, ElementsAre("apply revoke"));
  EXPECT_EQ(r->dispatcher.edges().count("revoke"), 1u);
  EXPECT_THAT(*(*store)->LoadOutbox(), IsEmpty());
}

// A challenge at the edge whose actuator a restart left parked (the credentials check): its
// edge record, restored, said no target (the edge rows keep none, and its rows stay in the
// outbox, never queued), so a block replacing it was charged as a new restriction and could be
// held, though the challenge stands (its remove waits in the outbox). Its target is known from
// its withdrawal, heard or restored: the block spends no budget. `heard`: the withdrawal and
// the block are heard after the restart; otherwise they are in the outbox it restores.
class ParkedReplacementTest : public DispatcherTest, public ::testing::WithParamInterface<bool> {};

TEST_P(ParkedReplacementTest, ABlockReplacingAChallengeInAParkedActuatorIsNotCharged) {
  auto store = FreshStore("parked_replaced.db");
  ASSERT_TRUE(store.ok());
  constexpr auto kList = palisade::v1::ACTUATOR_IP_LIST;
  constexpr auto kRule = palisade::v1::ACTUATOR_ACCESS_RULE;
  auto record = [&](DecisionChange change, const std::string& id, palisade::v1::Actuator kind,
                    const std::string& target, const std::string& replaces = "",
                    const std::string& replaced_by = "") {
    DecisionUpdate u = Update(change, id);
    u.decision.set_actuator(kind);
    u.decision.mutable_target()->set_value(target);
    u.decision.set_active(change == DecisionChange::kCreated);
    u.decision.set_replaces(replaces);
    u.decision.set_replaced_by(replaced_by);
    u.outbox_seq =
        *(*store)->RecordDecision(u.decision, nullptr, change == DecisionChange::kCreated);
    return u;
  };
  dispatcher_.OnDecision(record(DecisionChange::kCreated, "challenge", kRule, "203.0.113.7"));
  dispatcher_.RunOnce();
  ASSERT_EQ(dispatcher_.edges().count("challenge"), 1u);
  const bool heard = GetParam();
  const auto decide = [&] {
    return std::vector<DecisionUpdate>{
        record(DecisionChange::kCreated, "fresh", kList, "203.0.113.9"),
        record(DecisionChange::kWithdrawn, "challenge", kRule, "203.0.113.7", "", "block"),
        record(DecisionChange::kCreated, "block", kList, "203.0.113.7", "challenge")};
  };
  if (!heard) decide();  // recorded, then the process "dies" before they are heard

  // The restart: the access rules parked, the list started, a budget of one a minute.
  prometheus::Registry registry;
  Dispatcher restarted(clock_, Options(), registry);
  restarted.SetStore(store->get());
  restarted.ParkActuator(kRule, "access_rule");
  auto list = std::make_unique<FakeActuator>();
  FakeActuator* lists = list.get();
  lists->label = "list";
  restarted.AddActuator(kList, std::move(list));
  GuardOptions options;
  options.max_new_per_minute = 1;
  restarted.SetGuard(std::make_unique<Guard>(options));
  ASSERT_TRUE(restarted.Restore().ok());
  ASSERT_EQ(restarted.edges().count("challenge"), 1u);
  if (heard) {
    for (const DecisionUpdate& u : decide()) restarted.OnDecision(u);
  }
  restarted.RunOnce();
  EXPECT_EQ(restarted.held(), 0u);
  EXPECT_THAT(lists->calls, ElementsAre("apply fresh", "apply block"));  // fresh spent the slot
  // The challenge's remove waits in the outbox for the start that adds its actuator.
  EXPECT_THAT(*(*store)->LoadOutbox(), SizeIs(1));
}

INSTANTIATE_TEST_SUITE_P(HeardOrRestored, ParkedReplacementTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Heard" : "Restored";
                         });

// An edge record whose actuator left the config (neither started nor parked at the restart):
// its outbox rows are dropped, never restored, so its target stays unknown (see Made::target),
// and a block replacing it in another actuator is charged as a new restriction. The target was
// set from the row before it was dropped, and the block spent no budget.
TEST_F(DispatcherTest, AReplacementOfAnEdgeRecordWhoseActuatorLeftTheConfigIsCharged) {
  auto store = FreshStore("left_the_config.db");
  ASSERT_TRUE(store.ok());
  constexpr auto kRate = palisade::v1::ACTUATOR_RATE_LIMIT;
  auto rates = std::make_unique<FakeActuator>();
  rates->label = "rate";
  dispatcher_.AddActuator(kRate, std::move(rates));
  auto record = [&](DecisionChange change, const std::string& id, palisade::v1::Actuator kind,
                    const std::string& target, const std::string& replaces = "",
                    const std::string& replaced_by = "") {
    DecisionUpdate u = Update(change, id);
    u.decision.set_actuator(kind);
    u.decision.mutable_target()->set_value(target);
    u.decision.set_active(change == DecisionChange::kCreated);
    u.decision.set_replaces(replaces);
    u.decision.set_replaced_by(replaced_by);
    u.outbox_seq =
        *(*store)->RecordDecision(u.decision, nullptr, change == DecisionChange::kCreated);
    return u;
  };
  dispatcher_.OnDecision(record(DecisionChange::kCreated, "challenge", kRate, "203.0.113.7"));
  dispatcher_.RunOnce();
  ASSERT_EQ(dispatcher_.edges().count("challenge"), 1u);
  constexpr auto kRule = palisade::v1::ACTUATOR_ACCESS_RULE;
  record(DecisionChange::kCreated, "fresh", kRule, "203.0.113.9");
  record(DecisionChange::kWithdrawn, "challenge", kRate, "203.0.113.7", "", "block");
  record(DecisionChange::kCreated, "block", kRule, "203.0.113.7", "challenge");

  // The restart: the rate limits gone from the config, a budget of one a minute.
  std::unique_ptr<Restarted> r = Restart(store->get());
  GuardOptions options;
  options.max_new_per_minute = 1;
  r->dispatcher.SetGuard(std::make_unique<Guard>(options));
  ASSERT_TRUE(r->dispatcher.Restore().ok());
  ASSERT_EQ(r->dispatcher.edges().count("challenge"), 1u);
  r->dispatcher.RunOnce();
  EXPECT_THAT(r->actuator->calls, ElementsAre("apply fresh"));  // fresh spent the slot
  EXPECT_EQ(r->dispatcher.held(), 1u);
}

// An actuator neither started nor parked is not configured: its operations leave the outbox, when
// heard and at a restart.
TEST_F(DispatcherTest, ANotConfiguredActuatorsOperationsAreDropped) {
  auto store = FreshStore("unconfigured.db");
  ASSERT_TRUE(store.ok());
  auto record = [&](const std::string& id) {
    DecisionUpdate u = Update(DecisionChange::kCreated, id);
    u.decision.set_actuator(palisade::v1::ACTUATOR_RATE_LIMIT);
    u.decision.set_active(true);
    u.outbox_seq = *(*store)->RecordDecision(u.decision, nullptr, true);
    return u;
  };
  dispatcher_.OnDecision(record("heard"));
  EXPECT_THAT(*(*store)->LoadOutbox(), IsEmpty());
  record("unheard");  // recorded, then the process dies before the dispatcher hears it
  ASSERT_THAT(*(*store)->LoadOutbox(), SizeIs(1));
  std::unique_ptr<Restarted> r = Restart(store->get());
  ASSERT_TRUE(r->dispatcher.Restore().ok());
  EXPECT_EQ(r->dispatcher.RunOnce(), 0);
  EXPECT_THAT(*(*store)->LoadOutbox(), IsEmpty());
}

// Killed with [apply d1, remove d1] in the outbox: after the restart, the remove waited for
// nothing but the apply waited behind its own decision's remove, so the remove ran first (found
// nothing) and the apply then made the rule of a decision that had ended; it stayed at the edge
// until a reconcile. Only the remove runs now (it finds any object the apply made by its marker).
TEST_F(DispatcherTest, AfterARestartAnEndedDecisionIsNotAppliedBehindItsRemove) {
  auto store = FreshStore("ended.db");
  ASSERT_TRUE(store.ok());
  for (DecisionChange change : {DecisionChange::kCreated, DecisionChange::kExpired}) {
    DecisionUpdate u = Update(change, "d1");
    u.decision.set_active(change == DecisionChange::kCreated);
    (void)*(*store)->RecordDecision(u.decision, nullptr, change == DecisionChange::kCreated);
  }
  ASSERT_THAT(*(*store)->LoadOutbox(), SizeIs(2));
  std::unique_ptr<Restarted> r = Restart(store->get());
  r->actuator->adopts = true;
  ASSERT_TRUE(r->dispatcher.Restore().ok());
  r->dispatcher.RunOnce();
  r->dispatcher.RunOnce();
  EXPECT_THAT(r->actuator->objects, IsEmpty());
  EXPECT_THAT(r->actuator->calls, ElementsAre("remove d1"));
  EXPECT_THAT(r->dispatcher.edges(), IsEmpty());
  EXPECT_THAT(*(*store)->LoadOutbox(), IsEmpty());
  EXPECT_EQ(r->dispatcher.pending(), 0u);
}

// After a store outage a restart put an ended decision's ban back. The store refused D's
// creation, so its apply ran with no outbox row (and left no edge row); once the store took
// writes again, the apply was written late, and nothing deletes that row: D's remove completed
// on a row of its own. Restore ran the apply, alone, for a decision no longer active (a ban
// back until the next reconcile). It is cancelled now.
TEST_F(DispatcherTest, ARestartDoesNotApplyAnEndedDecisionWhoseApplyWasWrittenLate) {
  const std::string path = absl::StrCat(std::getenv("TEST_TMPDIR"), "/late.db");
  auto store = FreshStore("late.db");
  ASSERT_TRUE(store.ok());
  DecisionTable table(clock_);
  table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  table.AddListener([this](const DecisionUpdate& u) { dispatcher_.OnDecision(u); });
  ::palisade::testing::ExecSql(path,
                               "CREATE TRIGGER refuse BEFORE INSERT ON decisions "
                               "BEGIN SELECT RAISE(ABORT, 'full'); END;");
  palisade::v1::DecisionSpec spec;
  spec.set_action(palisade::v1::ACTION_BLOCK);
  *spec.mutable_duration() = ToProtoDuration(absl::Hours(1));
  spec.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
  Detection detection;
  detection.rule_id = "ssh";
  detection.key = "203.0.113.7";
  detection.time = clock_.TimeNow();
  const DecisionUpdate created = table.Apply(detection, spec);
  ASSERT_EQ(created.change, DecisionChange::kCreated);
  const std::string id = created.decision.id();
  ASSERT_EQ(table.unwritten(), 1u);
  dispatcher_.RunOnce();
  ::palisade::testing::ExecSql(path, "DROP TRIGGER refuse;");
  table.ExpireDue();  // the store takes D now, and its apply: late
  ASSERT_EQ(table.unwritten(), 0u);
  ASSERT_THAT(*(*store)->LoadOutbox(), SizeIs(1));
  clock_.Advance(absl::Hours(1));
  ASSERT_THAT(table.ExpireDue(), SizeIs(1));
  dispatcher_.RunOnce();
  ASSERT_THAT(fake_->calls, ElementsAre("apply " + id, "remove " + id + " edge-" + id));
  ASSERT_THAT(*(*store)->LoadOutbox(), SizeIs(1));  // the late apply

  std::unique_ptr<Restarted> r = Restart(store->get());
  std::vector<ActionOutcome> outcomes;
  r->dispatcher.SetObserver([&](const ActionOutcome& o) { outcomes.push_back(o); });
  ASSERT_TRUE(r->dispatcher.Restore().ok());
  EXPECT_EQ(r->dispatcher.pending(), 0u);
  r->dispatcher.RunOnce();
  EXPECT_THAT(r->actuator->calls, IsEmpty());
  EXPECT_THAT(r->dispatcher.edges(), IsEmpty());
  EXPECT_THAT(*(*store)->LoadOutbox(), IsEmpty());
  ASSERT_THAT(outcomes, SizeIs(1));
  EXPECT_EQ(outcomes[0].outcome, "cancelled");
  EXPECT_EQ(outcomes[0].decision.id(), id);
}

// A decision that ends while an earlier op of its batch runs: its apply, taken with the batch but
// not sent, was sent all the same and then removed (a ban that should never have reached the
// edge). It is cancelled with its remove, as while queued.
TEST_F(DispatcherTest, AnApplyWhoseDecisionEndsWhileItsBatchRunsIsCancelled) {
  auto store = FreshStore("batch-ended.db");
  ASSERT_TRUE(store.ok());
  auto record = [&](DecisionChange change, const std::string& id) {
    DecisionUpdate u = Update(change, id);
    u.decision.mutable_target()->set_value(absl::StrCat("203.0.113.", id[1] - '0'));
    u.decision.set_active(change == DecisionChange::kCreated);
    u.outbox_seq =
        *(*store)->RecordDecision(u.decision, nullptr, change == DecisionChange::kCreated);
    return u;
  };
  std::vector<ActionOutcome> outcomes;
  dispatcher_.SetObserver([&](const ActionOutcome& o) { outcomes.push_back(o); });
  fake_->during_run = [&] {
    fake_->during_run = nullptr;
    dispatcher_.OnDecision(record(DecisionChange::kExpired, "d2"));
  };
  dispatcher_.OnDecision(record(DecisionChange::kCreated, "d1"));
  dispatcher_.OnDecision(record(DecisionChange::kCreated, "d2"));
  EXPECT_EQ(dispatcher_.RunOnce(), 1);
  EXPECT_THAT(fake_->calls, ElementsAre("apply d1"));
  ASSERT_THAT(outcomes, SizeIs(2));
  EXPECT_EQ(outcomes[1].decision.id(), "d2");
  EXPECT_EQ(outcomes[1].outcome, "cancelled");
  dispatcher_.RunOnce();
  EXPECT_THAT(fake_->calls, ElementsAre("apply d1"));
  EXPECT_THAT(dispatcher_.edges(), ElementsAre(Pair("d1", ::testing::_)));
  EXPECT_EQ(dispatcher_.pending(), 0u);
  EXPECT_EQ(dispatcher_.latency_tracked(), 0u);
  EXPECT_THAT(*(*store)->LoadOutbox(), IsEmpty());
}

TEST_F(DispatcherTest, DecisionsForOtherActuatorsAreIgnored) {
  DecisionUpdate u = Update(DecisionChange::kCreated, "d1");
  u.decision.set_actuator(palisade::v1::ACTUATOR_NONE);
  dispatcher_.OnDecision(u);
  EXPECT_EQ(dispatcher_.pending(), 0u);
}

}  // namespace
}  // namespace palisade
