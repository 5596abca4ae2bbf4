// ClusterNode against a real nats-server: nodes on one simulated clock, each with its own
// DecisionTable, ticked by the test.
#include "services/cluster/cluster_node.h"

#include <atomic>
#include <cstdlib>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/cluster/decision_log.h"
#include "services/cluster/nats_client.h"
#include "services/cluster/nats_server_for_tests.h"
#include "services/common/clock.h"
#include "services/common/proto_time.h"
#include "services/common/status_matchers.h"
#include "services/store/store.h"

namespace palisade::cluster {
namespace {

using ::palisade::testing::IsOk;
using ::palisade::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr uint32_t kPartitions = 8;

constexpr char kPack[] = R"pb(
  name: "t"
  rules {
    id: "probe"
    formats: LOG_FORMAT_SYSLOG
    patterns: "^probe from (?P<ip>[0-9.]+)$"
    threshold { count: 1 }
    decision { action: ACTION_BLOCK duration { seconds: 3600 } }
    examples { line: "Mar  3 14:02:01 h sshd[1]: probe from 203.0.113.7" key: "203.0.113.7" }
  }
)pb";

std::shared_ptr<const RuleSet> Rules() {
  static std::shared_ptr<const RuleSet> rules = [] {
    absl::StatusOr<LoadedPack> pack = ParseRulePack(kPack, "t.textproto");
    EXPECT_THAT(pack, IsOk());
    absl::StatusOr<std::shared_ptr<const RuleSet>> set = RuleSet::Compile({*pack});
    EXPECT_THAT(set, IsOk());
    return *set;
  }();
  return rules;
}

// One node: its table, what its callbacks heard.
struct TestNode {
  explicit TestNode(SimulatedClock& clock) : table(clock) {
    table.AddListener([this](const DecisionUpdate& u) {
      absl::MutexLock lock(&edge_mu);
      table_heard.push_back(absl::StrCat(DecisionChangeName(u.change), " ", u.decision.id()));
    });
  }
  DecisionTable table;
  prometheus::Registry registry;
  int started = 0;
  int stopped = 0;
  std::set<uint32_t> counting;
  // What its edge heard (edge_update): "<change> <decision id>".
  absl::Mutex edge_mu;
  std::vector<std::string> edge ABSL_GUARDED_BY(edge_mu);
  std::vector<std::string> decided ABSL_GUARDED_BY(edge_mu);  // the `decided` hook's
  // What its table's listeners heard: "<change> <decision id>".
  std::vector<std::string> table_heard ABSL_GUARDED_BY(edge_mu);
  std::vector<std::string> Edge() {
    absl::MutexLock lock(&edge_mu);
    return edge;
  }
  std::vector<std::string> TableHeard() {
    absl::MutexLock lock(&edge_mu);
    return table_heard;
  }
  std::unique_ptr<ClusterNode> node;
};

class ClusterNodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<NatsServerForTests>> server = NatsServerForTests::Start();
    ASSERT_THAT(server, IsOk());
    server_ = *std::move(server);
  }

  std::unique_ptr<TestNode> StartNode(const std::string& id,
                                      std::function<absl::Status()> may_own = nullptr,
                                      size_t max_forward_queue_bytes = 16u << 20,
                                      absl::Status* start_status = nullptr,
                                      std::function<void()> before_log_writer = nullptr,
                                      Store* store = nullptr) {
    auto n = std::make_unique<TestNode>(clock_);
    if (max_active_bytes_ > 0) {
      DecisionTableLimits limits;
      limits.max_active_bytes = max_active_bytes_;
      n->table.SetLimits(limits);
    }
    if (store != nullptr) {
      // As palisaded: the table durable in the store, restored, before the node starts.
      n->table.SetStore(store, {});
      EXPECT_THAT(n->table.Restore(), IsOk());
    }
    ClusterNodeOptions o;
    o.store = store;
    o.before_log_writer = std::move(before_log_writer);
    o.max_forward_queue_bytes = max_forward_queue_bytes;
    o.may_own_partitions = std::move(may_own);
    o.nats.servers = {server_->url()};
    o.nats.timeout = nats_timeout_;
    o.node_id = id;
    o.partitions = kPartitions;
    o.lease_term = absl::Seconds(15);
    o.clock = node_clock_ != nullptr ? node_clock_ : &clock_;
    o.run_thread = false;
    TestNode* t = n.get();
    o.writer_started = [t] { ++t->started; };
    o.writer_stopped = [t] { ++t->stopped; };
    o.decided = [t](const Detection& d, const DecisionUpdate& u) {
      EXPECT_NE(d.rule, nullptr);
      absl::MutexLock lock(&t->edge_mu);
      t->decided.push_back(absl::StrCat(DecisionChangeName(u.change), " ", u.decision.id()));
    };
    o.edge_update = [t](const DecisionUpdate& u) {
      absl::MutexLock lock(&t->edge_mu);
      t->edge.push_back(absl::StrCat(DecisionChangeName(u.change), " ", u.decision.id()));
    };
    o.partitions_changed = [t](const std::set<uint32_t>& gained, const std::set<uint32_t>& lost) {
      for (uint32_t p : gained) EXPECT_TRUE(t->counting.insert(p).second) << p;
      for (uint32_t p : lost) EXPECT_EQ(t->counting.erase(p), 1u) << p;
    };
    o.log = [](const std::string&) {};
    o.rules = [] { return Rules(); };
    absl::StatusOr<std::unique_ptr<ClusterNode>> node =
        ClusterNode::Start(std::move(o), n->table, n->registry);
    if (start_status != nullptr) {
      *start_status = node.status();
    } else {
      EXPECT_THAT(node, IsOk());
    }
    if (node.ok()) n->node = *std::move(node);
    return n;
  }

  static palisade::v1::AddDecisionRequest Ban(const std::string& ip) {
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_value(ip);
    *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
    req.set_reason("operator");
    return req;
  }

  // The pack's probe rule detecting `ip` now.
  Detection Probe(const std::string& ip) {
    Detection d;
    d.rule = Rules()->rules()[0].get();
    d.rule_id = "probe";
    d.key = ip;
    d.time = clock_.TimeNow();
    d.evidence = {"probe from " + ip};
    return d;
  }

  // Waits until `n`'s replica applied the decision log as it is now.
  void CaughtUp(TestNode& n) {
    absl::StatusOr<NatsClient::StreamState> st = n.node->nats().State(kDecisionStream);
    ASSERT_THAT(st, IsOk());
    ASSERT_TRUE(n.node->replica().WaitUntilApplied(st->last_sequence, absl::Minutes(1)));
  }

  SimulatedClock clock_;
  Clock* node_clock_ = nullptr;  // the nodes' (leases and ticks) when set, else clock_
  absl::Duration nats_timeout_ = absl::Seconds(5);
  size_t max_active_bytes_ = 0;  // the nodes' tables' (and so their views' caps) when set
  std::unique_ptr<NatsServerForTests> server_;
};

// clock_, moved forward by `step` at each read: a tick whose NATS requests are slow.
class SlowClock : public Clock {
 public:
  explicit SlowClock(SimulatedClock& base) : base_(base) {}
  absl::Time TimeNow() override {
    base_.Advance(absl::Nanoseconds(step_ns.load()));
    return base_.TimeNow();
  }
  void SleepFor(absl::Duration d) override { base_.Advance(d); }
  std::atomic<int64_t> step_ns{0};

 private:
  SimulatedClock& base_;
};

TEST_F(ClusterNodeTest, ABanMadeAnywhereIsTheWritersAndKnownEverywhereAndSurvivesATakeOver) {
  std::unique_ptr<TestNode> a = StartNode("a");
  ASSERT_NE(a->node, nullptr);
  EXPECT_TRUE(a->node->writer());  // alone: it writes
  EXPECT_EQ(a->started, 1);
  std::unique_ptr<TestNode> b = StartNode("b");
  ASSERT_NE(b->node, nullptr);
  EXPECT_FALSE(b->node->writer());
  EXPECT_EQ(b->started, 0);

  // A ban added on b is made by a (the writer) and mirrored by b before the call returns.
  absl::StatusOr<palisade::v1::Decision> d = b->node->AddManual(Ban("192.0.2.7"));
  ASSERT_THAT(d, IsOk());
  absl::StatusOr<palisade::v1::Decision> at_a = a->table.Get(d->id());
  ASSERT_THAT(at_a, IsOk());
  EXPECT_TRUE(at_a->active());
  absl::StatusOr<palisade::v1::Decision> at_b = b->table.Get(d->id());
  ASSERT_THAT(at_b, IsOk());
  EXPECT_EQ(at_b->SerializeAsString(), at_a->SerializeAsString());
  EXPECT_THAT(b->node->view().Get(d->id()), IsOk());
  // The writer's edge heard it, once the log held it (b's reply came after that); b's did not.
  EXPECT_THAT(a->Edge(), ElementsAre(absl::StrCat("created ", d->id())));
  EXPECT_THAT(b->Edge(), ::testing::IsEmpty());
  // The writer's answer, errors included.
  EXPECT_THAT(b->node->AddManual(Ban("not an address")),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(b->node->Withdraw("0000000000000000"), StatusIs(absl::StatusCode::kNotFound));

  // Partitions: after a few ticks each is counted by exactly one node.
  for (int i = 0; i < 3; ++i) {
    a->node->Tick();
    b->node->Tick();
  }
  std::set<uint32_t> all = a->counting;
  for (uint32_t p : b->counting) EXPECT_TRUE(all.insert(p).second) << "partition " << p << " twice";
  EXPECT_EQ(all.size(), kPartitions);
  EXPECT_FALSE(a->counting.empty());
  EXPECT_FALSE(b->counting.empty());

  ClusterNodeStatus status = b->node->Status();
  EXPECT_EQ(status.node_id, "b");
  EXPECT_EQ(status.writer_node, "a");
  EXPECT_FALSE(status.writer);
  EXPECT_THAT(status.live_nodes, ElementsAre("a", "b"));
  EXPECT_EQ(status.partition_owners.size(), kPartitions);
  EXPECT_TRUE(status.nats_connected);
  EXPECT_EQ(status.owned, b->counting);

  // a stops ticking (paused, cut off): after the term and skew, b takes the writer lease, with
  // the table it mirrored.
  clock_.Advance(absl::Seconds(15 + 2 + 1));
  b->node->Tick();
  EXPECT_TRUE(b->node->writer());
  EXPECT_EQ(b->started, 1);
  EXPECT_EQ(b->counting.size(), kPartitions);  // a's run out: b counts them all
  a->node->Tick();  // a learns it lost the lease
  EXPECT_FALSE(a->node->writer());
  EXPECT_EQ(a->stopped, 1);

  // b's table is the writer's now: an unban from a goes to b, and a mirrors it.
  absl::StatusOr<palisade::v1::Decision> w = a->node->Withdraw(d->id());
  ASSERT_THAT(w, IsOk());
  EXPECT_FALSE(w->active());
  EXPECT_FALSE(b->table.Get(d->id())->active());
  EXPECT_FALSE(a->table.Get(d->id())->active());
  absl::StatusOr<palisade::v1::Decision> d2 = a->node->AddManual(Ban("192.0.2.8"));
  ASSERT_THAT(d2, IsOk());
  EXPECT_TRUE(a->table.Get(d2->id())->active());
  EXPECT_EQ(a->table.active_count(), 1u);
  EXPECT_EQ(b->table.active_count(), 1u);

  // A clean stop hands over at once: a takes the writer lease on its next tick.
  b->node->Stop();
  EXPECT_EQ(b->stopped, 1);
  EXPECT_TRUE(b->counting.empty());
  a->node->Tick();
  EXPECT_TRUE(a->node->writer());
  EXPECT_EQ(a->started, 2);
  EXPECT_TRUE(a->table.Get(d2->id())->active());
}

// clock_, with `slept` called at each SleepFor after it moved time forward.
class ClockCallingBack : public Clock {
 public:
  explicit ClockCallingBack(SimulatedClock& base) : base_(base) {}
  absl::Time TimeNow() override { return base_.TimeNow(); }
  void SleepFor(absl::Duration d) override {
    base_.Advance(d);
    if (slept) slept();
  }
  std::function<void()> slept;

 private:
  SimulatedClock& base_;
};

// Two processes started with the same cluster.node_id would both renew its leases (they are
// held by node id): the second refuses to start, naming the id, as soon as the first renews
// its presence (the second waits for a crashed one to run out), and the first goes on. Once
// the first stopped cleanly, the id is free at once.
TEST_F(ClusterNodeTest, ASecondProcessWithTheSameNodeIdRefusesToStart) {
  std::unique_ptr<TestNode> a = StartNode("a");
  ASSERT_NE(a->node, nullptr);
  ClockCallingBack ticking(clock_);
  int ticks = 0;
  ticking.slept = [&] {
    ++ticks;
    a->node->Tick();  // the first process renews its leases meanwhile
  };
  node_clock_ = &ticking;
  absl::Status second;
  std::unique_ptr<TestNode> again = StartNode("a", nullptr, 16u << 20, &second);
  node_clock_ = nullptr;
  EXPECT_THAT(second, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(second.message(), HasSubstr("node_id \"a\""));
  EXPECT_EQ(again->node, nullptr);
  EXPECT_EQ(ticks, 1);  // refused at the first renewal seen, not after the whole wait
  again.reset();
  a->node->Tick();
  EXPECT_TRUE(a->node->writer());
  EXPECT_EQ(a->counting.size(), kPartitions);
  EXPECT_EQ(a->node->Status().last_error, "");
  a->node->Stop();
  std::unique_ptr<TestNode> restarted = StartNode("a");
  ASSERT_NE(restarted->node, nullptr);
  EXPECT_TRUE(restarted->node->writer());
}

// A node paused past its term (a stopped VM; as a crashed one, it renews nothing) while another
// process started with its id: that start waits the paused one's presence out (at most the
// term and skew), then the paused one, at its next renewal, finds the other, stops renewing
// the leases and acting on them (no writing, no partitions), and says why; its stop releases
// nothing, for the leases are the other's.
TEST_F(ClusterNodeTest, ANodeThatFindsAnotherProcessWithItsIdStopsRenewingItsLeases) {
  std::unique_ptr<TestNode> a = StartNode("a");
  ASSERT_NE(a->node, nullptr);
  ASSERT_TRUE(a->node->writer());
  const absl::Time paused = clock_.TimeNow();
  std::unique_ptr<TestNode> other = StartNode("a");
  EXPECT_GE(clock_.TimeNow() - paused, absl::Seconds(15));  // waited on the clock
  EXPECT_LE(clock_.TimeNow() - paused, absl::Seconds(15 + 2 + 1));
  ASSERT_NE(other->node, nullptr);
  EXPECT_TRUE(other->node->writer());
  EXPECT_EQ(other->counting.size(), kPartitions);

  a->node->Tick();
  EXPECT_FALSE(a->node->writer());
  EXPECT_EQ(a->stopped, 1);
  EXPECT_TRUE(a->counting.empty());
  EXPECT_THAT(a->node->Status().last_error, HasSubstr("node_id \"a\""));
  clock_.Advance(absl::Seconds(5));
  a->node->Tick();
  EXPECT_FALSE(a->node->writer());
  EXPECT_TRUE(a->counting.empty());
  a->node->Stop();

  other->node->Tick();
  EXPECT_TRUE(other->node->writer());
  EXPECT_EQ(other->started, 1);  // never lost it
  EXPECT_EQ(other->stopped, 0);
  EXPECT_EQ(other->counting.size(), kPartitions);
  const ClusterNodeStatus status = other->node->Status();
  EXPECT_EQ(status.writer_node, "a");
  EXPECT_EQ(status.partition_owners.size(), kPartitions);
}

// A node acts on its leases only while they hold: from the start of the tick that renewed
// them, not from its end. Its leases' `until` is the time of each claim plus the term; a tick
// whose requests took seconds (a slow server) ended well after its first claims, and counted
// from its end the node kept counting partitions (and writing) after the other nodes were free
// to take them, when its next ticks failed.
TEST_F(ClusterNodeTest, LeasesHeldAreCountedFromTheStartOfTheTickThatRenewedThem) {
  SlowClock slow(clock_);
  node_clock_ = &slow;
  nats_timeout_ = absl::Seconds(1);  // NATS will be away: its requests fail sooner
  std::unique_ptr<TestNode> a = StartNode("a");
  ASSERT_TRUE(a->node != nullptr);
  ASSERT_TRUE(a->node->writer());
  ASSERT_EQ(a->counting.size(), kPartitions);
  // A slow tick: each read of the clock 300 ms later (about 7 s in all, first claims early).
  const absl::Time start = clock_.TimeNow();
  slow.step_ns = absl::ToInt64Nanoseconds(absl::Milliseconds(300));
  a->node->Tick();
  slow.step_ns = 0;
  ASSERT_GT(clock_.TimeNow() - start, absl::Seconds(5));
  ASSERT_EQ(a->counting.size(), kPartitions);
  // The first partitions renewed in it were claimed within 3 s of its start: past their term
  // and skew, another node may hold them. This node's ticks fail from then on (NATS away).
  clock_.Set(start + absl::Seconds(3) + absl::Seconds(15) + absl::Seconds(2));
  server_->Kill();
  a->node->Tick();
  EXPECT_TRUE(a->counting.empty());
  EXPECT_FALSE(a->node->writer());
  EXPECT_TRUE(server_->Restart().ok());  // a quicker stop
}

// While no writer answers, the detections a node waits to forward are bounded in bytes, not
// only in count: each may carry up to engine.max_evidence_bytes (1 MiB) of evidence.
TEST_F(ClusterNodeTest, DetectionsWaitingForAWriterAreBoundedInBytes) {
  // Another node holds the writer lease and answers nothing.
  absl::StatusOr<std::unique_ptr<NatsClient>> nats =
      NatsClient::Connect({.servers = {server_->url()}});
  ASSERT_THAT(nats, IsOk());
  absl::StatusOr<std::unique_ptr<LeaseTable>> ghost =
      LeaseTable::Open(**nats, {.node_id = "ghost", .clock = &clock_});
  ASSERT_THAT(ghost, IsOk());
  ASSERT_THAT((*ghost)->Claim(Ownership::kWriterLease), IsOk());
  std::unique_ptr<TestNode> b = StartNode("b", nullptr, /*max_forward_queue_bytes=*/1 << 20);
  ASSERT_TRUE(b->node != nullptr);
  ASSERT_FALSE(b->node->writer());
  for (int i = 0; i < 64; ++i) {
    Detection d = Probe(absl::StrCat("203.0.113.", i + 1));
    d.evidence = {std::string(100 << 10, 'x')};  // 100 KiB
    b->node->ForwardDetection(d);
  }
  // 1 MiB holds ten of them (one may be out with the forwarder): the rest are dropped.
  EXPECT_GE(b->node->detections_dropped(), 64u - 11u);
  EXPECT_EQ(b->node->detections_forwarded(), 0u);
}

// A detection made on a node that does not write is decided by the writer, once, and mirrored
// back; the writer decides its own.
TEST_F(ClusterNodeTest, DetectionsOfANodeThatDoesNotWriteAreTheWritersToDecide) {
  std::unique_ptr<TestNode> a = StartNode("a");
  std::unique_ptr<TestNode> b = StartNode("b");
  ASSERT_TRUE(a->node != nullptr && b->node != nullptr);
  ASSERT_TRUE(a->node->writer());
  Detection d = Probe("203.0.113.9");
  std::vector<DecisionUpdate> at_b = b->table.ApplyAll({d});
  ASSERT_EQ(at_b.size(), 1u);
  EXPECT_EQ(at_b[0].change, DecisionChange::kForwarded);
  auto active_on = [](TestNode& n) {
    return n.table.List({.target = "203.0.113.9", .active_only = true});
  };
  // b counts the detection forwarded when the writer's reply reaches its forwarder, which may
  // be after the decision, mirrored back through the decision log, reached its table: both are
  // waited for.
  const absl::Time deadline = absl::Now() + absl::Minutes(1);
  while ((active_on(*a).empty() || active_on(*b).empty() ||
          b->node->detections_forwarded() == 0) &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(active_on(*a).size(), 1u);
  ASSERT_EQ(active_on(*b).size(), 1u);
  EXPECT_EQ(active_on(*a)[0].id(), active_on(*b)[0].id());
  EXPECT_EQ(active_on(*a)[0].rule_id(), "probe");
  EXPECT_EQ(active_on(*a)[0].evidence_size(), 1);
  EXPECT_EQ(b->node->detections_forwarded(), 1u);
  // The writer told its `decided` hook (palisaded: recidive) of what it made for b.
  {
    absl::MutexLock lock(&a->edge_mu);
    EXPECT_THAT(a->decided, ElementsAre(absl::StrCat("created ", active_on(*a)[0].id())));
  }
  // The same detection id sent again (a partition owner's retry) is carried out once.
  ASSERT_THAT(b->node->SendDetection("s:1", d), IsOk());
  ASSERT_THAT(b->node->SendDetection("s:1", d), IsOk());
  EXPECT_EQ(active_on(*a)[0].extensions(), 1u);
  // The writer decides its own detections.
  d.key = "203.0.113.10";
  std::vector<DecisionUpdate> at_a = a->table.ApplyAll({d});
  EXPECT_EQ(at_a[0].change, DecisionChange::kCreated);
  // A rule the writer does not have is refused, saying so.
  d.rule_id = "nope";
  EXPECT_THAT(b->node->SendDetection("s:2", d),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("rule \"nope\"")));
}

// A stronger claim replaces a decision: the writer's table makes the withdrawal and the new
// decision as one change set, heard in one call. A mirror hears them the same way: heard one at
// a time, a bouncer pull on the mirror could land between them and serve the address unbanned
// (docs/SECURITY.md).
TEST_F(ClusterNodeTest, AMirrorHearsAReplacedDecisionsWithdrawalAndReplacementInOneCall) {
  std::unique_ptr<TestNode> a = StartNode("a");
  std::unique_ptr<TestNode> b = StartNode("b");
  ASSERT_TRUE(a->node != nullptr && b->node != nullptr);
  ASSERT_TRUE(a->node->writer());
  absl::Mutex mu;
  std::vector<std::vector<std::string>> calls;  // each set listener call's "<change> <id>"
  b->table.AddSetListener([&](const std::vector<DecisionUpdate>& set) {
    std::vector<std::string> call;
    for (const DecisionUpdate& u : set) {
      call.push_back(absl::StrCat(DecisionChangeName(u.change), " ", u.decision.id()));
    }
    absl::MutexLock lock(&mu);
    calls.push_back(std::move(call));
  });
  // The rule's decision, mirrored by b.
  ASSERT_THAT(b->node->SendDetection("r:1", Probe("192.0.2.9")), IsOk());
  CaughtUp(*b);
  std::vector<palisade::v1::Decision> ruled =
      b->table.List({.target = "192.0.2.9", .active_only = true});
  ASSERT_EQ(ruled.size(), 1u);
  ASSERT_EQ(ruled[0].origin(), palisade::v1::ORIGIN_RULE);
  {
    absl::MutexLock lock(&mu);
    ASSERT_EQ(calls.size(), 1u);
    calls.clear();
  }
  // An operator's ban outranks it: withdrawn, then the manual one created, in one call at a
  // (its own listener) and at b.
  absl::StatusOr<palisade::v1::Decision> manual = b->node->AddManual(Ban("192.0.2.9"));
  ASSERT_THAT(manual, IsOk());
  ASSERT_EQ(manual->origin(), palisade::v1::ORIGIN_MANUAL);
  CaughtUp(*b);
  absl::MutexLock lock(&mu);
  EXPECT_THAT(calls, ElementsAre(ElementsAre(absl::StrCat("withdrawn ", ruled[0].id()),
                                             absl::StrCat("created ", manual->id()))));
}

// Claims the writer's table keeps waiting behind a stronger decision (a rule's block and an
// operator's challenge behind an operator's block) reach every node with the log, so that a
// node taking over decides them when that decision ends, as the writer would have. They lived
// in the writer's table only: after a take-over the block ended and nothing followed.
TEST_F(ClusterNodeTest, ClaimsWaitingBehindADecisionAreDecidedByTheNextWriter) {
  std::unique_ptr<TestNode> a = StartNode("a");
  std::unique_ptr<TestNode> b = StartNode("b");
  ASSERT_TRUE(a->node != nullptr && b->node != nullptr);
  ASSERT_TRUE(a->node->writer());
  const std::string ip = "192.0.2.11";
  palisade::v1::AddDecisionRequest block = Ban(ip);
  *block.mutable_duration() = ToProtoDuration(absl::Minutes(10));
  absl::StatusOr<palisade::v1::Decision> blocked = b->node->AddManual(block);
  ASSERT_THAT(blocked, IsOk());
  // Both wait behind the operator's block: the rule's (1 h) and an operator's challenge (20 min).
  ASSERT_THAT(b->node->SendDetection("r:1", Probe(ip)), IsOk());
  palisade::v1::AddDecisionRequest challenge = Ban(ip);
  challenge.set_action(palisade::v1::ACTION_CHALLENGE);
  *challenge.mutable_duration() = ToProtoDuration(absl::Minutes(20));
  ASSERT_THAT(b->node->AddManual(challenge), IsOk());
  CaughtUp(*b);
  const auto active = [&](TestNode& n) {
    return n.table.List({.target = ip, .active_only = true});
  };
  ASSERT_EQ(active(*b).size(), 1u);
  EXPECT_EQ(active(*b)[0].id(), blocked->id());

  // a stops ticking: b takes over with what it mirrored.
  clock_.Advance(absl::Seconds(15 + 2 + 1));
  b->node->Tick();
  ASSERT_TRUE(b->node->writer());
  // The block ends: the operator's challenge follows it, then the rule's block.
  clock_.Advance(absl::Minutes(10));
  b->table.ExpireDue();
  std::vector<palisade::v1::Decision> now = active(*b);
  ASSERT_EQ(now.size(), 1u) << "the claims waiting behind the block were lost at the take-over";
  EXPECT_EQ(now[0].origin(), palisade::v1::ORIGIN_MANUAL);
  EXPECT_EQ(now[0].action(), palisade::v1::ACTION_CHALLENGE);
  clock_.Advance(absl::Minutes(10));
  b->table.ExpireDue();
  now = active(*b);
  ASSERT_EQ(now.size(), 1u);
  EXPECT_EQ(now[0].origin(), palisade::v1::ORIGIN_RULE);
  EXPECT_EQ(now[0].rule_id(), "probe");
  EXPECT_EQ(now[0].action(), palisade::v1::ACTION_BLOCK);
}

// A detection whose evidence is over NATS' payload limit (100 lines of 10.5 KB, as
// engine.max_evidence 100 and max_evidence_bytes 1 MiB allow; an attacker pads its lines) goes
// to the writer with its evidence cut to fit, and is decided, whether sent by a partition owner
// or forwarded. It was refused for good (over the limit): in a cluster, padding one's lines
// evaded the ban.
TEST_F(ClusterNodeTest, ADetectionWithEvidenceOverThePayloadLimitIsStillDecided) {
  std::unique_ptr<TestNode> a = StartNode("a");
  std::unique_ptr<TestNode> b = StartNode("b");
  ASSERT_TRUE(a->node != nullptr && b->node != nullptr);
  ASSERT_TRUE(a->node->writer());
  auto padded = [&](const std::string& ip) {
    Detection d = Probe(ip);
    d.evidence.clear();
    for (int i = 0; i < 100; ++i) {
      // Two-byte characters: a line cut inside one would not parse on the writer.
      std::string line = absl::StrCat("probe from ", ip, " ");
      line.append(10'000, static_cast<char>('a' + i % 26));
      for (int j = 0; j < 250; ++j) line += "\xc3\xa9";  // é
      d.evidence.push_back(std::move(line));
    }
    return d;
  };
  auto active_on = [](TestNode& n, const std::string& ip) {
    return n.table.List({.target = ip, .active_only = true});
  };
  EXPECT_THAT(b->node->SendDetection("s:30", padded("203.0.113.30"), absl::Minutes(1)), IsOk());
  ASSERT_EQ(active_on(*a, "203.0.113.30").size(), 1u);
  const palisade::v1::Decision made = active_on(*a, "203.0.113.30")[0];
  EXPECT_EQ(made.rule_id(), "probe");
  ASSERT_GT(made.evidence_size(), 0);
  for (const std::string& line : made.evidence()) {
    EXPECT_THAT(line, HasSubstr("probe from 203.0.113.30"));
    EXPECT_THAT(line, ::testing::EndsWith(" bytes cut]"));
  }
  // Forwarded (b detected it itself): the same.
  std::vector<DecisionUpdate> at_b = b->table.ApplyAll({padded("203.0.113.31")});
  ASSERT_EQ(at_b.size(), 1u);
  ASSERT_EQ(at_b[0].change, DecisionChange::kForwarded);
  const absl::Time deadline = absl::Now() + absl::Minutes(1);
  while (active_on(*a, "203.0.113.31").empty() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(active_on(*a, "203.0.113.31").size(), 1u);
  EXPECT_EQ(b->node->evidence_cut(), 2u);
}

// A detection is answered once the decision log holds what it decided, not before: a writer
// fenced by another (two nodes believed they held the lease for a moment, as a loaded CI
// machine showed after NATS came back) publishes nothing more, so a detection it took in that
// window was lost though its sender had been told it was taken. Now the sender is told it was
// not (kUnavailable), offers it again under the same id, and a repeat reaching the same node is
// not applied twice.
TEST_F(ClusterNodeTest, ADetectionIsTakenOnlyOnceTheDecisionLogHoldsIt) {
  std::unique_ptr<TestNode> a = StartNode("a");
  std::unique_ptr<TestNode> b = StartNode("b");
  ASSERT_TRUE(a->node->writer());
  Detection d = Probe("203.0.113.20");
  // Another writer appends to the log: a's writer is fenced at its next publish.
  auto rival_nats = NatsClient::Connect({.servers = {server_->url()}, .timeout = absl::Seconds(5)});
  ASSERT_THAT(rival_nats, IsOk());
  auto rival = DecisionLogWriter::Start(
      **rival_nats, {.node_id = "rival", .state = [] { return std::vector<palisade::v1::Decision>{}; }});
  ASSERT_THAT(rival, IsOk());
  (*rival)->PublishState();
  ASSERT_TRUE((*rival)->WaitUntilPublished(absl::Minutes(1)));

  EXPECT_THAT(b->node->SendDetection("s:20", d, absl::Minutes(1)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("decision log")));
  auto on_a = [&] { return a->table.List({.target = "203.0.113.20", .active_only = true}); };
  ASSERT_EQ(on_a().size(), 1u);
  // Offered again: still not taken, and not applied a second time.
  EXPECT_THAT(b->node->SendDetection("s:20", d, absl::Minutes(1)),
              StatusIs(absl::StatusCode::kUnavailable));
  ASSERT_EQ(on_a().size(), 1u);
  EXPECT_EQ(on_a()[0].extensions(), 0u);

  // At its next tick a steps down, and its table becomes the log's: the decision the log never
  // took is gone (it held it until then).
  a->node->Tick();
  EXPECT_FALSE(a->node->writer());
  EXPECT_TRUE(on_a().empty());
  // a still holds the lease: it takes over again, and the detection offered again is decided
  // now, once.
  a->node->Tick();
  ASSERT_TRUE(a->node->writer());
  EXPECT_THAT(b->node->SendDetection("s:20", d, absl::Minutes(1)), IsOk());
  ASSERT_EQ(on_a().size(), 1u);
  EXPECT_EQ(on_a()[0].extensions(), 0u);
}

// A writer fenced by another takes the other's waiting claims when it steps down, as any
// mirror does: its own, which the other's state and snapshots (read while it still wrote, and
// skipped) no longer hold, go, and the other's, which it never held, come. It kept its own, and
// would decide them at its next take-over; or, taking none of the other's, lost them.
TEST_F(ClusterNodeTest, AWriterSteppingDownTakesTheNewWritersWaitingClaims) {
  std::unique_ptr<TestNode> a = StartNode("a");
  ASSERT_TRUE(a->node != nullptr && a->node->writer());
  const std::string ip = "192.0.2.31";
  absl::StatusOr<palisade::v1::Decision> blocked = a->node->AddManual(Ban(ip));
  ASSERT_THAT(blocked, IsOk());
  palisade::v1::AddDecisionRequest challenge = Ban(ip);
  challenge.set_action(palisade::v1::ACTION_CHALLENGE);
  *challenge.mutable_duration() = ToProtoDuration(absl::Hours(2));
  ASSERT_THAT(a->node->AddManual(challenge), IsOk());  // waits behind the block
  ASSERT_THAT(a->table.Waiting(), SizeIs(1));
  CaughtUp(*a);
  // Another writer takes over with the block and, behind it, a rule's claim a does not hold
  // (its state, its snapshot, then their end), read by a's replica while a still writes.
  WaitingClaimRow rule;
  rule.target = ip;
  rule.decision_id = blocked->id();
  rule.origin = palisade::v1::ORIGIN_RULE;
  rule.action = palisade::v1::ACTION_CHALLENGE;
  rule.actuator = palisade::v1::ACTUATOR_ACCESS_RULE;
  rule.expiry = clock_.TimeNow() + absl::Hours(3);
  rule.rule_id = "probe";
  auto rival_nats = NatsClient::Connect({.servers = {server_->url()}, .timeout = absl::Seconds(5)});
  ASSERT_THAT(rival_nats, IsOk());
  const std::vector<palisade::v1::Decision> state = a->table.List({});
  auto rival = DecisionLogWriter::Start(
      **rival_nats, {.node_id = "rival",
                     .state = [&] { return state; },
                     .waiting =
                         [&] {
                           return std::vector<WaitingClaims>{{ip, blocked->id(), {rule}}};
                         }});
  ASSERT_THAT(rival, IsOk());
  (*rival)->PublishState();
  ASSERT_TRUE((*rival)->WaitUntilPublished(absl::Minutes(1)));
  CaughtUp(*a);
  // a's next publish is refused (fenced), and its next tick steps it down.
  (void)a->node->AddManual(Ban("192.0.2.32"));
  a->node->Tick();
  ASSERT_FALSE(a->node->writer());
  EXPECT_TRUE(a->table.Get(blocked->id())->active());
  std::vector<WaitingClaims> waiting = a->table.Waiting();
  ASSERT_THAT(waiting, SizeIs(1)) << "the former writer did not take the new writer's claims";
  EXPECT_EQ(waiting[0].target, ip);
  EXPECT_EQ(waiting[0].decision_id, blocked->id());
  ASSERT_THAT(waiting[0].claims, SizeIs(1)) << "the former writer kept its own waiting claims";
  EXPECT_EQ(waiting[0].claims[0].origin, palisade::v1::ORIGIN_RULE);
  EXPECT_EQ(waiting[0].claims[0].action, palisade::v1::ACTION_CHALLENGE);
  EXPECT_EQ(waiting[0].claims[0].rule_id, "probe");
  EXPECT_EQ(waiting[0].claims[0].expiry, rule.expiry);
}

// The same, a stepping down while the new writer's snapshots have not ended (its view cannot
// vouch that they are all of them): the former writer drops none of its own claims.
TEST_F(ClusterNodeTest, AWriterSteppingDownBeforeTheNewWritersSnapshotsEndKeepsItsClaims) {
  std::unique_ptr<TestNode> a = StartNode("a");
  ASSERT_TRUE(a->node != nullptr && a->node->writer());
  const std::string ip = "192.0.2.33";
  absl::StatusOr<palisade::v1::Decision> blocked = a->node->AddManual(Ban(ip));
  ASSERT_THAT(blocked, IsOk());
  palisade::v1::AddDecisionRequest challenge = Ban(ip);
  challenge.set_action(palisade::v1::ACTION_CHALLENGE);
  *challenge.mutable_duration() = ToProtoDuration(absl::Hours(2));
  ASSERT_THAT(a->node->AddManual(challenge), IsOk());  // waits behind the block
  ASSERT_THAT(a->table.Waiting(), SizeIs(1));
  CaughtUp(*a);
  // Another writer's state is stored; its snapshots are held until a has stepped down.
  absl::Notification state_out, go;
  auto rival_nats = NatsClient::Connect({.servers = {server_->url()}, .timeout = absl::Seconds(5)});
  ASSERT_THAT(rival_nats, IsOk());
  const std::vector<palisade::v1::Decision> state = a->table.List({});
  auto rival = DecisionLogWriter::Start(
      **rival_nats, {.node_id = "rival",
                     .state = [&] { return state; },
                     .waiting =
                         [&] {
                           state_out.Notify();
                           go.WaitForNotificationWithTimeout(absl::Minutes(1));
                           return std::vector<WaitingClaims>{};
                         }});
  ASSERT_THAT(rival, IsOk());
  (*rival)->PublishState();
  ASSERT_TRUE(state_out.WaitForNotificationWithTimeout(absl::Minutes(1)));
  CaughtUp(*a);
  (void)a->node->AddManual(Ban("192.0.2.34"));
  a->node->Tick();
  const bool stepped_down = !a->node->writer();
  const std::vector<WaitingClaims> waiting = a->table.Waiting();
  go.Notify();
  ASSERT_TRUE(stepped_down);
  EXPECT_TRUE(a->table.Get(blocked->id())->active());
  ASSERT_THAT(waiting, SizeIs(1)) << "dropped its claims on a view that could not vouch for it";
  ASSERT_THAT(waiting[0].claims, SizeIs(1));
  EXPECT_EQ(waiting[0].claims[0].origin, palisade::v1::ORIGIN_MANUAL);
  EXPECT_EQ(waiting[0].claims[0].action, palisade::v1::ACTION_CHALLENGE);
}

// The same, a view that refused one of the new writer's snapshots for its cap: the former
// writer drops none of its own claims then, nor when that state's end comes after it stepped
// down (a mirror's end drops the claims no snapshot replaced, and the table never had the
// refused one). It kept its claim's stale mark and dropped it at the end.
TEST_F(ClusterNodeTest, AWriterSteppingDownOnAnOverflowedViewKeepsItsClaimsPastTheEnd) {
  max_active_bytes_ = 8u << 10;
  std::unique_ptr<TestNode> a = StartNode("a");
  ASSERT_TRUE(a->node != nullptr && a->node->writer());
  const std::string ip = "192.0.2.35";
  absl::StatusOr<palisade::v1::Decision> blocked = a->node->AddManual(Ban(ip));
  ASSERT_THAT(blocked, IsOk());
  palisade::v1::AddDecisionRequest challenge = Ban(ip);
  challenge.set_action(palisade::v1::ACTION_CHALLENGE);
  *challenge.mutable_duration() = ToProtoDuration(absl::Hours(2));
  ASSERT_THAT(a->node->AddManual(challenge), IsOk());  // waits behind the block
  ASSERT_THAT(a->table.Waiting(), SizeIs(1));
  CaughtUp(*a);
  // Another writer's state is stored, then a snapshot for the blocked address past a's view's
  // cap (claims of every kind, the longest reasons); their end only once a has stepped down.
  // Published as the other writer's log writer would (its messages, one by one).
  auto rival = NatsClient::Connect({.servers = {server_->url()}, .timeout = absl::Seconds(5)});
  ASSERT_THAT(rival, IsOk());
  palisade::v1::ListDecisionsResponse state;
  for (const palisade::v1::Decision& d : a->table.List({})) *state.add_decisions() = d;
  ASSERT_THAT((*rival)->Publish(kDecisionStateSubject,
                                absl::StrCat("S1 rival-state0 1 1\n", state.SerializeAsString()),
                                "rival-state0:1"),
              IsOk());
  WaitingClaims big{ip, blocked->id(), {}};
  for (auto action : {palisade::v1::ACTION_BLOCK, palisade::v1::ACTION_CHALLENGE,
                      palisade::v1::ACTION_MANAGED_CHALLENGE}) {
    for (auto origin : {palisade::v1::ORIGIN_RULE, palisade::v1::ORIGIN_MANUAL}) {
      for (bool dry_run : {false, true}) {
        WaitingClaimRow row;
        row.target = ip;
        row.decision_id = blocked->id();
        row.origin = origin;
        row.action = action;
        row.actuator = palisade::v1::ACTUATOR_ACCESS_RULE;
        row.dry_run = dry_run;
        row.expiry = clock_.TimeNow() + absl::Hours(3);
        row.rule_id = "probe";
        row.reason = std::string(1000, 'r');
        big.claims.push_back(row);
      }
    }
  }
  ASSERT_GT(DecisionTable::WaitingBytes(big), max_active_bytes_);
  ASSERT_THAT((*rival)->Publish(kDecisionWaitingSubject, EncodeWaiting(big), "rival-state0:w1"),
              IsOk());
  CaughtUp(*a);
  ASSERT_TRUE(a->node->view().waiting_overflow());
  (void)a->node->AddManual(Ban("192.0.2.36"));
  a->node->Tick();
  ASSERT_FALSE(a->node->writer());
  ASSERT_THAT(a->table.Waiting(), SizeIs(1)) << "dropped its claims on an overflowed view";
  // The state's end comes.
  ASSERT_THAT(
      (*rival)->Publish(kDecisionWaitingSubject, "W1 end rival-state0\n", "rival-state0:wend"),
      IsOk());
  CaughtUp(*a);
  EXPECT_TRUE(a->table.Get(blocked->id())->active());
  const std::vector<WaitingClaims> waiting = a->table.Waiting();
  ASSERT_THAT(waiting, SizeIs(1)) << "the end dropped the claims the overflowed view left stale";
  ASSERT_THAT(waiting[0].claims, SizeIs(1));
  EXPECT_EQ(waiting[0].claims[0].origin, palisade::v1::ORIGIN_MANUAL);
  EXPECT_EQ(waiting[0].claims[0].action, palisade::v1::ACTION_CHALLENGE);
}

// A node coming to write reads a former writer's last words while its log writer is not
// started yet: they reach its table, and so its take-over state. It took itself for the writer
// from before its log writer existed, skipped mirroring them (as its own changes, read back),
// though its replica had read them, so its take-over state, waiting for nothing more, erased
// them from every node.
TEST_F(ClusterNodeTest, AFormerWritersLastWordsReadWhileComingToWriteAreKept) {
  // Another node holds the writer lease, and writes to the log as that node's writer would.
  absl::StatusOr<std::unique_ptr<NatsClient>> nats =
      NatsClient::Connect({.servers = {server_->url()}});
  ASSERT_THAT(nats, IsOk());
  absl::StatusOr<std::unique_ptr<LeaseTable>> ghost =
      LeaseTable::Open(**nats, {.node_id = "ghost", .clock = &clock_});
  ASSERT_THAT(ghost, IsOk());
  ASSERT_THAT((*ghost)->Claim(Ownership::kWriterLease), IsOk());
  absl::StatusOr<std::unique_ptr<DecisionLogWriter>> former = DecisionLogWriter::Start(
      **nats, {.node_id = "ghost", .state = [] { return std::vector<palisade::v1::Decision>{}; }});
  ASSERT_THAT(former, IsOk());
  palisade::v1::Decision last;
  last.set_id("ghost-last");
  last.mutable_target()->set_value("203.0.113.40");
  last.set_action(palisade::v1::ACTION_BLOCK);
  *last.mutable_start() = ToProtoTime(clock_.TimeNow());
  *last.mutable_expiry() = ToProtoTime(clock_.TimeNow() + absl::Hours(2));
  last.set_active(true);
  TestNode* b_node = nullptr;
  bool said = false;
  // The former writer's last words, once b decides its own detections: read by b's replica
  // before its log writer starts.
  auto last_words = [&] {
    if (said) return;
    said = true;
    ASSERT_TRUE((*former)->Enqueue({.change = DecisionChange::kCreated, .decision = last}));
    ASSERT_TRUE((*former)->WaitUntilPublished(absl::Minutes(1))) << (*former)->last_error();
    absl::StatusOr<NatsClient::StreamState> st = (*nats)->State(kDecisionStream);
    ASSERT_THAT(st, IsOk());
    ASSERT_TRUE(b_node->node->replica().WaitUntilApplied(st->last_sequence, absl::Minutes(1)));
  };
  std::unique_ptr<TestNode> b = StartNode("b", nullptr, 16u << 20, nullptr, last_words);
  ASSERT_TRUE(b->node != nullptr);
  ASSERT_FALSE(b->node->writer());
  b_node = b.get();
  // The ghost stops renewing: past the term and skew, b takes the writer lease.
  clock_.Advance(absl::Seconds(15 + 2 + 1));
  b->node->Tick();
  ASSERT_TRUE(said);
  ASSERT_TRUE(b->node->writer());
  EXPECT_EQ(b->started, 1) << "the take-over state is stored";
  absl::StatusOr<palisade::v1::Decision> held = b->table.Get("ghost-last");
  ASSERT_THAT(held, IsOk());
  EXPECT_TRUE(held->active());
  // And every node reads it, the take-over state included.
  absl::StatusOr<NatsClient::StreamState> st = (*nats)->State(kDecisionStream);
  ASSERT_THAT(st, IsOk());
  ASSERT_TRUE(b->node->replica().WaitUntilApplied(st->last_sequence, absl::Minutes(1)));
  absl::StatusOr<palisade::v1::Decision> viewed = b->node->view().Get("ghost-last");
  ASSERT_THAT(viewed, IsOk());
  EXPECT_TRUE(viewed->active());
}

// A node restarted over its store resumes the decision log where it stopped: the decisions its
// table restored are not withdrawn and made again (it read the log from its oldest state,
// the writer's take-over state, which held none of them, so its listeners heard each one
// withdrawn then created: bouncers and Watch saw them go and come at every restart), and what
// was decided while it was down reaches it.
TEST_F(ClusterNodeTest, ARestartedNodeResumesTheLogAfterWhatItsTableHolds) {
  absl::StatusOr<std::unique_ptr<Store>> store =
      Store::Open(absl::StrCat(std::getenv("TEST_TMPDIR"), "/b.db"));
  ASSERT_THAT(store, IsOk());
  std::unique_ptr<TestNode> a = StartNode("a");
  ASSERT_TRUE(a->node != nullptr && a->node->writer());
  std::unique_ptr<TestNode> b = StartNode("b", nullptr, 16u << 20, nullptr, nullptr, store->get());
  ASSERT_TRUE(b->node != nullptr);
  absl::StatusOr<palisade::v1::Decision> before = a->node->AddManual(Ban("192.0.2.21"));
  ASSERT_THAT(before, IsOk());
  CaughtUp(*b);
  ASSERT_TRUE(b->table.Get(before->id())->active());
  b->node->Stop();
  b.reset();
  // Decided while b is down.
  absl::StatusOr<palisade::v1::Decision> during = a->node->AddManual(Ban("192.0.2.22"));
  ASSERT_THAT(during, IsOk());

  b = StartNode("b", nullptr, 16u << 20, nullptr, nullptr, store->get());
  ASSERT_TRUE(b->node != nullptr);
  ASSERT_TRUE(b->table.Get(before->id())->active()) << "restored";
  CaughtUp(*b);
  EXPECT_THAT(b->TableHeard(), ElementsAre(absl::StrCat("created ", during->id())));
  EXPECT_TRUE(b->table.Get(before->id())->active());
  EXPECT_TRUE(b->table.Get(during->id())->active());
  EXPECT_THAT(b->node->view().Get(before->id()), IsOk()) << "the view holds what the table does";
}

// A node restarted between a full state and the end of the writer's snapshots after it reads
// the state again: the claims the writer no longer has go at the end. It resumed after the
// state (its stale marks lost with the restart; the end, naming a state it had not read, was
// not handed on) and kept them.
TEST_F(ClusterNodeTest, ANodeRestartedBeforeTheEndOfTheSnapshotsDropsTheClaimsTheWriterDropped) {
  absl::StatusOr<std::unique_ptr<Store>> store =
      Store::Open(absl::StrCat(std::getenv("TEST_TMPDIR"), "/b.db"));
  ASSERT_THAT(store, IsOk());
  // Another node holds the writer lease, and writes to the log as that node's writer would.
  absl::StatusOr<std::unique_ptr<NatsClient>> nats =
      NatsClient::Connect({.servers = {server_->url()}});
  ASSERT_THAT(nats, IsOk());
  absl::StatusOr<std::unique_ptr<LeaseTable>> ghost =
      LeaseTable::Open(**nats, {.node_id = "ghost", .clock = &clock_});
  ASSERT_THAT(ghost, IsOk());
  ASSERT_THAT((*ghost)->Claim(Ownership::kWriterLease), IsOk());
  const std::string ip = "203.0.113.50";
  palisade::v1::Decision block;
  block.set_id("ghost-block");
  block.mutable_target()->set_value(ip);
  block.set_action(palisade::v1::ACTION_BLOCK);
  block.set_origin(palisade::v1::ORIGIN_MANUAL);
  *block.mutable_start() = ToProtoTime(clock_.TimeNow());
  *block.mutable_expiry() = ToProtoTime(clock_.TimeNow() + absl::Hours(1));
  block.set_active(true);
  WaitingClaimRow rule;
  rule.target = ip;
  rule.decision_id = block.id();
  rule.origin = palisade::v1::ORIGIN_RULE;
  rule.action = palisade::v1::ACTION_CHALLENGE;
  rule.actuator = palisade::v1::ACTUATOR_ACCESS_RULE;
  rule.expiry = clock_.TimeNow() + absl::Hours(2);
  rule.rule_id = "probe";
  // The first state's snapshots name the rule's claim; the second's name none (the writer
  // dropped it), and are held until b has read that state and restarted.
  std::atomic<bool> second{false};
  absl::Notification second_state_out, go;
  absl::StatusOr<std::unique_ptr<DecisionLogWriter>> writer = DecisionLogWriter::Start(
      **nats, {.node_id = "ghost",
               .state = [&] { return std::vector<palisade::v1::Decision>{block}; },
               .waiting =
                   [&] {
                     std::vector<WaitingClaims> w;
                     if (!second.load()) {
                       w.push_back({ip, block.id(), {rule}});
                       return w;
                     }
                     second_state_out.Notify();
                     go.WaitForNotificationWithTimeout(absl::Minutes(1));
                     return w;
                   }});
  ASSERT_THAT(writer, IsOk());
  std::unique_ptr<TestNode> b = StartNode("b", nullptr, 16u << 20, nullptr, nullptr, store->get());
  ASSERT_TRUE(b->node != nullptr);
  ASSERT_FALSE(b->node->writer());
  (*writer)->PublishState();
  ASSERT_TRUE((*writer)->WaitUntilPublished(absl::Minutes(1))) << (*writer)->last_error();
  CaughtUp(*b);
  ASSERT_THAT(b->table.Waiting(), SizeIs(1));

  second.store(true);
  (*writer)->PublishState();
  ASSERT_TRUE(second_state_out.WaitForNotificationWithTimeout(absl::Minutes(1)));
  CaughtUp(*b);  // the second state, applied
  b->node->Stop();
  b.reset();
  b = StartNode("b", nullptr, 16u << 20, nullptr, nullptr, store->get());
  ASSERT_TRUE(b->node != nullptr);
  ASSERT_THAT(b->table.Waiting(), SizeIs(1)) << "restored";
  go.Notify();
  ASSERT_TRUE((*writer)->WaitUntilPublished(absl::Minutes(1))) << (*writer)->last_error();
  CaughtUp(*b);
  EXPECT_THAT(b->table.Waiting(), IsEmpty()) << "the claim the writer dropped was kept";
  EXPECT_TRUE(b->table.Get(block.id())->active());
}

// A position kept for another decision stream (deleted and made again since: its sequences
// start again from 1) is not resumed from: the node reads the log from its start.
TEST_F(ClusterNodeTest, APositionOfAnotherDecisionStreamIsNotResumedFrom) {
  absl::StatusOr<std::unique_ptr<Store>> store =
      Store::Open(absl::StrCat(std::getenv("TEST_TMPDIR"), "/b.db"));
  ASSERT_THAT(store, IsOk());
  std::unique_ptr<TestNode> a = StartNode("a");
  ASSERT_TRUE(a->node != nullptr && a->node->writer());
  absl::StatusOr<palisade::v1::Decision> d = a->node->AddManual(Ban("192.0.2.23"));
  ASSERT_THAT(d, IsOk());
  // Through the ban, were it this stream's: resumed from, the ban would never be read.
  absl::StatusOr<NatsClient::StreamState> st = a->node->nats().State(kDecisionStream);
  ASSERT_THAT(st, IsOk());
  ASSERT_THAT(
      (*store)->SaveSnapshot("cluster:decision_log", absl::StrCat("v1 12345 ", st->last_sequence)),
      IsOk());
  std::unique_ptr<TestNode> b = StartNode("b", nullptr, 16u << 20, nullptr, nullptr, store->get());
  ASSERT_TRUE(b->node != nullptr);
  CaughtUp(*b);
  absl::StatusOr<palisade::v1::Decision> got = b->table.Get(d->id());
  ASSERT_THAT(got, IsOk());
  EXPECT_TRUE(got->active());
}

// The rule set gate (issue 17): a node whose rules differ from the cluster's releases its
// partitions to the others and says why; it takes its share again once they agree. A NATS
// error from the check changes nothing.
TEST_F(ClusterNodeTest, ANodeWhoseRulesDifferOwnsNoPartitionAndSaysWhy) {
  absl::Status gate;  // b's rule set check, as the test sets it
  std::unique_ptr<TestNode> a = StartNode("a");
  std::unique_ptr<TestNode> b = StartNode("b", [&gate] { return gate; });
  ASSERT_TRUE(a->node != nullptr && b->node != nullptr);
  auto rounds = [&](int n) {
    for (int i = 0; i < n; ++i) {
      a->node->Tick();
      b->node->Tick();
      clock_.Advance(absl::Seconds(5));
    }
  };
  rounds(3);
  ASSERT_EQ(a->counting.size(), kPartitions / 2);
  ASSERT_EQ(b->counting.size(), kPartitions / 2);

  gate = absl::FailedPreconditionError("this node's rules (sha256:b) differ from the cluster's");
  b->node->Tick();
  EXPECT_TRUE(b->counting.empty()) << "released at its first tick";
  rounds(3);
  EXPECT_EQ(a->counting.size(), kPartitions) << "a counts them all, none is left unowned";
  EXPECT_TRUE(b->counting.empty());
  ClusterNodeStatus st = b->node->Status();
  EXPECT_TRUE(st.partitions_gated);
  EXPECT_THAT(st.last_error, HasSubstr("differ from the cluster's"));
  EXPECT_EQ(st.live_nodes.size(), 2u) << "b stays a member";
  EXPECT_EQ(st.partition_owners.size(), kPartitions);

  // The check failing otherwise (NATS away) keeps things as they are, and says so.
  gate = absl::UnavailableError("reading the rule set: timeout");
  rounds(2);
  EXPECT_TRUE(b->counting.empty());
  EXPECT_THAT(b->node->Status().last_error, HasSubstr("timeout"));

  gate = absl::OkStatus();
  rounds(3);
  EXPECT_EQ(a->counting.size(), kPartitions / 2);
  EXPECT_EQ(b->counting.size(), kPartitions / 2);
  st = b->node->Status();
  EXPECT_FALSE(st.partitions_gated);
  EXPECT_EQ(st.last_error, "");
}

// What RunOnThread posts (a rule reload) runs on the ticking thread before its next tick, in
// order, and not before.
TEST_F(ClusterNodeTest, PostedTasksRunOnTheNodesThreadAtItsNextTick) {
  std::unique_ptr<TestNode> a = StartNode("a");
  ASSERT_NE(a->node, nullptr);
  std::vector<int> ran;
  a->node->RunOnThread([&ran] { ran.push_back(1); });
  a->node->RunOnThread([&ran] { ran.push_back(2); });
  EXPECT_TRUE(ran.empty());
  a->node->Tick();
  EXPECT_THAT(ran, ElementsAre(1, 2));
  a->node->Tick();
  EXPECT_THAT(ran, ElementsAre(1, 2)) << "once";
}

// The table outlives the node (palisaded stops the cluster before the decisions): the node's
// listener went with it. It stayed, holding the destroyed node, and the next change read freed
// memory (AddressSanitizer: heap-use-after-free).
TEST_F(ClusterNodeTest, ADestroyedNodeNoLongerHearsItsTable) {
  std::unique_ptr<TestNode> a = StartNode("a");
  ASSERT_NE(a->node, nullptr);
  EXPECT_TRUE(a->node->writer());
  a->node.reset();
  absl::StatusOr<palisade::v1::Decision> d = a->table.AddManual(Ban("192.0.2.9"));
  ASSERT_THAT(d, IsOk());
  EXPECT_TRUE(d->active());
  std::vector<DecisionUpdate> updates = a->table.ApplyAll({Probe("192.0.2.10")});
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].change, DecisionChange::kCreated);  // decided here: no node to forward to
}

TEST_F(ClusterNodeTest, NoServerAnsweringIsAClearError) {
  DecisionTable table(clock_);
  prometheus::Registry registry;
  ClusterNodeOptions o;
  o.nats.servers = {"nats://127.0.0.1:1"};
  o.nats.timeout = absl::Seconds(1);
  o.node_id = "a";
  o.clock = &clock_;
  o.run_thread = false;
  EXPECT_THAT(ClusterNode::Start(std::move(o), table, registry),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("nats://127.0.0.1:1")));
}

}  // namespace
}  // namespace palisade::cluster
