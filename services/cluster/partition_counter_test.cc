// The cluster's split against a real nats-server: nodes match (Engine::MatchLine) and route
// (MatchRouter), the partition's owner counts (PartitionCounter). Leases and windows run on a
// simulated clock; the only waits are for NATS to deliver what was published.
#include "services/cluster/partition_counter.h"

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "palisade/v1/cluster.pb.h"
#include "services/cluster/lease_table.h"
#include "services/cluster/match_router.h"
#include "services/cluster/match_stream.h"
#include "services/cluster/nats_server_for_tests.h"
#include "services/cluster/ownership.h"
#include "services/common/clock.h"
#include "services/formats/line_parser.h"
#include <nats/nats.h>

namespace palisade::cluster {
namespace {

constexpr uint32_t kPartitions = 4;
constexpr const char* kStream = "PALISADE_MATCHES";

constexpr absl::string_view kPack = R"pb(
  name: "test"
  rules {
    id: "ssh-fail"
    formats: LOG_FORMAT_SYSLOG
    programs: "sshd"
    patterns: "^Failed password for (?:invalid user )?(?P<user>\\S+) from (?P<ip>\\S+) port"
    threshold {
      count: 5
      window { seconds: 600 }
    }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 600 }
    }
  }
)pb";

std::shared_ptr<const RuleSet> Rules() {
  auto pack = ParseRulePack(kPack, "test.textproto");
  EXPECT_TRUE(pack.ok()) << pack.status();
  auto set = RuleSet::Compile({*pack});
  EXPECT_TRUE(set.ok()) << set.status();
  return *set;
}

// A node that reads lines: its own engine (matching only), publisher and router.
struct MatchingNode {
  std::string id;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<MatchPublisher> publisher;
  std::unique_ptr<MatchRouter> router;
};

// What the edge writer would see: every detection handed over, and the distinct ids.
struct Writer {
  std::vector<ClusterDetection> all;
  std::set<std::string> ids;
  PartitionCounter::DetectionCallback Callback() {
    return [this](const ClusterDetection& d) {
      all.push_back(d);
      ids.insert(d.id);
      return absl::OkStatus();
    };
  }
};

class PartitionCounterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = NatsServerForTests::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    auto client = NatsClient::Connect({.servers = {server_->url()}, .timeout = absl::Seconds(5)});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
    ASSERT_TRUE(client_->EnsureStream({.name = kStream, .subjects = {"palisade.matches.*"}}).ok());
    rules_ = Rules();
    version_ = RuleSetVersion(*rules_);
  }

  std::unique_ptr<MatchingNode> Node(const std::string& id, std::string version = "") {
    auto n = std::make_unique<MatchingNode>();
    n->id = id;
    n->engine = std::make_unique<Engine>(rules_, EngineOptions());
    auto p = MatchPublisher::Start(*client_, {.node_id = id, .partitions = kPartitions});
    EXPECT_TRUE(p.ok()) << p.status();
    n->publisher = *std::move(p);
    n->router = std::make_unique<MatchRouter>(
        *n->publisher,
        MatchRouterOptions{.node_id = id,
                           .rule_set_version = version.empty() ? version_ : version});
    return n;
  }

  // One failed password of `ip` at t0 + `second`, read by `node`; waits until it is published.
  void Fail(MatchingNode& node, const std::string& ip, int second) {
    const std::string line = absl::StrFormat(
        "Mar  3 12:%02d:%02d web sshd[%d]: Failed password for root from %s port 22 ssh2",
        second / 60, second % 60, 1000 + second, ip);
    LineParser parser(palisade::v1::LOG_FORMAT_SYSLOG);
    ParsedLine parsed;
    ASSERT_TRUE(parser.Parse(line, absl::FromUnixSeconds(1'772'539'200), &parsed).ok()) << line;
    std::vector<EngineMatch> matches;
    node.engine->MatchLine(palisade::v1::LOG_FORMAT_SYSLOG, parsed, line, *parsed.time,
                           &matches);
    ASSERT_EQ(matches.size(), 1u) << line;
    ASSERT_TRUE(node.router->Route(matches[0]).ok());
    ASSERT_TRUE(node.publisher->WaitUntilPublished(absl::Seconds(60)));
  }

  // A counter's options as every test here starts from: this stream, these rules, this clock.
  PartitionCounterOptions Options(const std::string& node) {
    PartitionCounterOptions o;
    o.node_id = node;
    o.stream = kStream;
    o.partitions = kPartitions;
    o.rules = rules_;
    o.rule_set_version = version_;
    o.clock = &clock_;
    return o;
  }
  // Opens a counter with those options, changed first by `change` when given.
  absl::StatusOr<std::unique_ptr<PartitionCounter>> Open(
      const std::string& node, PartitionCounter::DetectionCallback on_detection,
      const std::function<void(PartitionCounterOptions&)>& change = nullptr) {
    PartitionCounterOptions o = Options(node);
    if (change) change(o);
    return PartitionCounter::Open(*client_, std::move(o), std::move(on_detection));
  }
  std::unique_ptr<PartitionCounter> Counter(const std::string& node, Writer& writer,
                                            uint64_t snapshot_every = 1000) {
    auto c = Open(node, writer.Callback(), [&](PartitionCounterOptions& o) {
      o.snapshot_every = snapshot_every;
      o.snapshot_interval = absl::Hours(1);
    });
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  // Polls until `counter` has read `n` matches in all (counted or refused), at most a minute of
  // waiting for NATS.
  void PollUntilRead(PartitionCounter& counter, uint64_t n) {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      absl::StatusOr<size_t> r = counter.Poll();
      ASSERT_TRUE(r.ok()) << r.status();
      const PartitionCounter::Stats s = counter.stats();
      if (s.counted + s.refused_version + s.refused_invalid >= n) return;
    }
    FAIL() << "the counter did not read " << n << " matches";
  }

  static Ownership::Change All() {
    Ownership::Change c;
    for (uint32_t p = 0; p < kPartitions; ++p) c.gained.insert(p);
    return c;
  }

  SimulatedClock clock_;
  std::unique_ptr<NatsServerForTests> server_;
  std::unique_ptr<NatsClient> client_;
  std::shared_ptr<const RuleSet> rules_;
  std::string version_;
};

// Three failures read by web-1 and two by web-2, each below the threshold of five: the owner of
// the address's partition detects the attack once, with evidence from both nodes.
TEST_F(PartitionCounterTest, AttackSplitOverTwoNodesIsDetectedOnceAtTheOwner) {
  auto web1 = Node("web-1");
  auto web2 = Node("web-2");
  Writer writer;
  auto owner = Counter("owner", writer);
  ASSERT_TRUE(owner->Apply(All()).ok());
  const std::string ip = "203.0.113.7";
  for (int i = 0; i < 5; ++i) Fail(i % 2 == 0 ? *web1 : *web2, ip, i);
  PollUntilRead(*owner, 5);
  ASSERT_EQ(writer.all.size(), 1u);
  const ClusterDetection& d = writer.all[0];
  EXPECT_EQ(d.detection.rule_id, "ssh-fail");
  EXPECT_EQ(d.detection.key, ip);
  EXPECT_EQ(d.partition, PartitionOf(ip, kPartitions));
  EXPECT_EQ(d.id, absl::StrCat(kStream, ":", d.sequence));
  EXPECT_EQ(d.origin_node, "web-1");  // the fifth line was web-1's
  ASSERT_EQ(d.detection.evidence.size(), 5u);
  EXPECT_TRUE(absl::StrContains(d.detection.evidence[1], "sshd[1001]"));  // web-2's line
  // The matching nodes counted nothing themselves.
  EXPECT_EQ(web1->engine->live_windows(), 0u);
  EXPECT_EQ(web2->engine->live_windows(), 0u);
  EXPECT_EQ(owner->stats().counted, 5u);
  EXPECT_EQ(web1->router->routed() + web2->router->routed(), 5u);
}

// One attacker taking a new address of its /64 for each try, its five tries read by two nodes:
// no address fails twice, but the matches of the range go to one partition (PartitionKeyOf,
// its /48), whose engine counts them in the /64's window and detects the range, once.
TEST_F(PartitionCounterTest, AnIpv6AttackerRotatingAddressesOverTwoNodesIsDetectedAsItsRange) {
  auto web1 = Node("web-1");
  auto web2 = Node("web-2");
  Writer writer;
  auto owner = Open("owner", writer.Callback(), [](PartitionCounterOptions& o) {
    o.engine.ipv6_window_prefix = 64;
    o.snapshot_interval = absl::Hours(1);
  });
  ASSERT_TRUE(owner.ok()) << owner.status();
  ASSERT_TRUE((*owner)->Apply(All()).ok());
  for (int i = 1; i <= 5; ++i) {
    Fail(i % 2 == 0 ? *web2 : *web1, absl::StrCat("2001:db8:1:2::", i), i);
  }
  PollUntilRead(**owner, 5);
  ASSERT_EQ(writer.all.size(), 1u);
  const ClusterDetection& d = writer.all[0];
  EXPECT_EQ(d.detection.rule_id, "ssh-fail");
  EXPECT_EQ(d.detection.kind, palisade::v1::TargetKind::TARGET_KIND_RANGE);
  EXPECT_EQ(d.detection.key, "2001:db8:1:2::/64");
  EXPECT_EQ(d.partition, PartitionOf("2001:db8:1::/48", kPartitions));
  EXPECT_EQ(d.detection.evidence.size(), 5u);
  const PartitionCounter::Stats s = (*owner)->stats();
  EXPECT_EQ(s.counted, 5u);
  EXPECT_EQ(s.refused_invalid, 0u) << (*owner)->last_refusal();
  EXPECT_EQ(s.refused_version, 0u) << (*owner)->last_refusal();
}

// The match stream is bounded in bytes (cluster.matches_max_bytes): an attacker's lines push
// the oldest matches out instead of growing the servers' disks, and an owner counts what is left.
TEST_F(PartitionCounterTest, TheStreamsByteBoundDropsTheOldestMatches) {
  jsErrCode err = static_cast<jsErrCode>(0);
  ASSERT_EQ(js_DeleteStream(client_->jetstream(), kStream, nullptr, &err), NATS_OK);
  constexpr int64_t kMaxBytes = 16 << 10;
  ASSERT_TRUE(client_
                  ->EnsureStream({.name = kStream,
                                  .subjects = {"palisade.matches.*"},
                                  .max_bytes = kMaxBytes})
                  .ok());
  auto web1 = Node("web-1");
  for (int i = 0; i < 200; ++i) Fail(*web1, absl::StrCat("198.51.100.", i % 250 + 1), i);
  jsStreamInfo* info = nullptr;
  ASSERT_EQ(js_GetStreamInfo(&info, client_->jetstream(), kStream, nullptr, &err), NATS_OK);
  const uint64_t bytes = info->State.Bytes, first = info->State.FirstSeq,
                 last = info->State.LastSeq;
  jsStreamInfo_Destroy(info);
  EXPECT_LE(bytes, static_cast<uint64_t>(kMaxBytes));
  EXPECT_EQ(last, 200u);
  EXPECT_GT(first, 1u) << "nothing was dropped: the bound is not set";
  Writer writer;
  auto owner = Counter("owner", writer);
  ASSERT_TRUE(owner->Apply(All()).ok());
  PollUntilRead(*owner, last - first + 1);
  EXPECT_EQ(owner->stats().counted, last - first + 1);
}

// The owner of the partitions (real leases on the simulated clock) dies mid-attack, after a
// snapshot of two matches and one more counted: the next owner takes the partitions after the
// term, restores the snapshot, counts the third again without raising anything, and raises the
// crossing at the fifth match, once.
TEST_F(PartitionCounterTest, TakeOverMidAttackDetectsTheCrossingOnce) {
  auto web1 = Node("web-1");
  const std::string ip = "198.51.100.23";
  const uint32_t p = PartitionOf(ip, kPartitions);
  auto lease_table = [&](const std::string& id) {
    auto t = LeaseTable::Open(
        *client_,
        {.node_id = id, .term = absl::Seconds(15), .skew = absl::Seconds(2), .clock = &clock_});
    EXPECT_TRUE(t.ok()) << t.status();
    return *std::move(t);
  };
  auto leases1 = lease_table("n1");
  auto leases2 = lease_table("n2");
  Ownership own1(*leases1, "n1", kPartitions), own2(*leases2, "n2", kPartitions);
  Writer writer1, writer2;
  auto n1 = Counter("n1", writer1, /*snapshot_every=*/2);
  auto n2 = Counter("n2", writer2, /*snapshot_every=*/2);

  absl::StatusOr<Ownership::Change> change = own1.Tick();
  ASSERT_TRUE(change.ok()) << change.status();
  ASSERT_EQ(change->gained.size(), kPartitions);
  ASSERT_TRUE(n1->Apply(*change).ok());
  Fail(*web1, ip, 0);
  Fail(*web1, ip, 1);
  PollUntilRead(*n1, 2);  // two counted: a snapshot
  Fail(*web1, ip, 2);
  PollUntilRead(*n1, 3);  // a third, after the snapshot
  EXPECT_EQ(n1->stats().snapshots, 1u);
  n1.reset();  // dies: no hand-over, no last snapshot

  clock_.Advance(absl::Seconds(18));  // past n1's term and the skew
  change = own2.Tick();
  ASSERT_TRUE(change.ok()) << change.status();
  ASSERT_EQ(change->gained.count(p), 1u);
  ASSERT_TRUE(n2->Apply(*change).ok());
  std::vector<PartitionCounter::PartitionStatus> st = n2->partitions();
  ASSERT_EQ(st.size(), kPartitions);
  PartitionCounter::PartitionStatus mine;
  for (const auto& s : st) {
    if (s.partition == p) mine = s;
  }
  EXPECT_EQ(mine.windows, 1u);  // restored from the snapshot
  EXPECT_TRUE(mine.rebuilding);
  Fail(*web1, ip, 3);
  PollUntilRead(*n2, 2);  // the third again, and the fourth
  EXPECT_TRUE(writer2.all.empty());
  EXPECT_EQ(n2->stats().replayed, 1u);
  Fail(*web1, ip, 4);
  PollUntilRead(*n2, 3);
  ASSERT_EQ(writer2.all.size(), 1u);
  EXPECT_EQ(writer2.all[0].detection.key, ip);
  EXPECT_TRUE(writer1.all.empty());
  for (const auto& s : n2->partitions()) {
    EXPECT_FALSE(s.rebuilding) << s.partition;
  }
}

// The crossing was handed over, but its owner died before it wrote its emitted position: the
// next owner raises it again with the same id (the writer drops the repeat); with the position
// written, it does not raise it at all.
TEST_F(PartitionCounterTest, ACrossingRaisedAgainAfterATakeOverKeepsItsId) {
  auto web1 = Node("web-1");
  const std::string ip = "192.0.2.77";
  const uint32_t p = PartitionOf(ip, kPartitions);
  Writer writer;
  auto n1 = Counter("n1", writer);
  ASSERT_TRUE(n1->Apply(All()).ok());
  for (int i = 0; i < 5; ++i) Fail(*web1, ip, i);
  PollUntilRead(*n1, 5);
  ASSERT_EQ(writer.all.size(), 1u);
  const std::string id = writer.all[0].id;
  n1.reset();

  // With the emitted position: nothing again.
  auto n2 = Counter("n2", writer);
  ASSERT_TRUE(n2->Apply(All()).ok());
  PollUntilRead(*n2, 5);
  EXPECT_EQ(writer.all.size(), 1u);
  EXPECT_EQ(n2->stats().replayed, 5u);
  n2.reset();

  // The position lost (as if the owner died between the hand-over and its write).
  kvStore* kv = nullptr;
  ASSERT_EQ(js_KeyValue(&kv, client_->jetstream(), "palisade_windows"), NATS_OK);
  ASSERT_EQ(kvStore_Purge(kv, absl::StrCat("p", p, ".emitted").c_str(), nullptr), NATS_OK);
  kvStore_Destroy(kv);
  auto n3 = Counter("n3", writer);
  ASSERT_TRUE(n3->Apply(All()).ok());
  PollUntilRead(*n3, 5);
  ASSERT_EQ(writer.all.size(), 2u);
  EXPECT_EQ(writer.all[1].id, id);
  EXPECT_EQ(writer.ids.size(), 1u);
}

// The callback refuses the crossing (the writer unreachable): it is offered again at the next
// Poll and the partition reads nothing more meanwhile; if its owner dies first, the next owner
// raises it. Not lost, and handed over once per owner that took it.
TEST_F(PartitionCounterTest, ARefusedDetectionIsOfferedAgainAndNotLostOnATakeOver) {
  auto web1 = Node("web-1");
  const std::string ip = "192.0.2.150";
  int refusals = 2;
  std::vector<ClusterDetection> taken;
  auto flaky = [&](const ClusterDetection& d) {
    if (refusals > 0) {
      --refusals;
      return absl::UnavailableError("writer away");
    }
    taken.push_back(d);
    return absl::OkStatus();
  };
  auto open = [&](const std::string& node) {
    auto c = Open(node, flaky);
    EXPECT_TRUE(c.ok()) << c.status();
    return *std::move(c);
  };
  auto n1 = open("n1");
  ASSERT_TRUE(n1->Apply(All()).ok());
  for (int i = 0; i < 6; ++i) Fail(*web1, ip, i);  // the fifth crosses, the sixth waits
  // Read until the crossing was refused once.
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  absl::StatusOr<size_t> r = 0;
  while (n1->stats().callback_failures == 0 && absl::Now() < deadline) r = n1->Poll();
  ASSERT_EQ(n1->stats().callback_failures, 1u);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "writer away")) << r.status();
  EXPECT_EQ(n1->stats().counted, 5u);  // the sixth is not read while the fifth waits
  n1.reset();  // dies with the detection not taken

  auto n2 = open("n2");
  ASSERT_TRUE(n2->Apply(All()).ok());
  while (n2->stats().callback_failures == 0 && absl::Now() < deadline) r = n2->Poll();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_TRUE(taken.empty());  // refused once more: offered again at the next Poll
  // The four before the crossing were emitted (they raised nothing); the crossing was not.
  EXPECT_EQ(n2->stats().replayed, 4u);
  PollUntilRead(*n2, 6);
  ASSERT_EQ(taken.size(), 1u);
  EXPECT_EQ(taken[0].detection.key, ip);
  EXPECT_EQ(n2->stats().counted, 6u);
}

// A detection the writer refuses for good (its rule is not loaded there: removed by a rule
// reload; a detection too large for the command channel) is never taken, however often it is
// offered (the writer answers a repeat from its memory): it is dropped and counted, and its
// partition reads on. Offered for ever, it kept every later match of the partition uncounted.
TEST_F(PartitionCounterTest, ADetectionTheWriterRefusesForGoodDoesNotBlockItsPartition) {
  auto web1 = Node("web-1");
  const std::string refused = "192.0.2.10";
  std::string other;  // a key of the same partition
  for (int i = 11; other.empty(); ++i) {
    const std::string ip = absl::StrCat("192.0.2.", i);
    if (PartitionOf(ip, kPartitions) == PartitionOf(refused, kPartitions)) other = ip;
  }
  std::vector<ClusterDetection> taken;
  auto writer = [&](const ClusterDetection& d) {
    if (d.detection.key == refused) {
      return absl::FailedPreconditionError(
          "detections.apply: rule \"ssh-fail\" is not loaded on the writer");
    }
    taken.push_back(d);
    return absl::OkStatus();
  };
  auto c = Open("n1", writer);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Apply(All()).ok());
  for (int i = 0; i < 5; ++i) Fail(*web1, refused, i);
  for (int i = 0; i < 5; ++i) Fail(*web1, other, 10 + i);
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while ((*c)->stats().counted < 10 && (*c)->stats().callback_failures < 50 &&
         absl::Now() < deadline) {
    (*c)->Poll().IgnoreError();
  }
  EXPECT_EQ((*c)->stats().counted, 10u);
  ASSERT_EQ(taken.size(), 1u);
  EXPECT_EQ(taken[0].detection.key, other);
  EXPECT_EQ((*c)->stats().callback_failures, 1u);
  EXPECT_EQ((*c)->stats().rejected, 1u);
}

// A former owner that does not know yet that it lost a partition (paused past its lease, it
// polls once more before its next tick) writes an emitted position behind its successor's:
// the position only ever moves forward, else the next owner raises the successor's crossing
// again.
TEST_F(PartitionCounterTest, AFormerOwnerNeverMovesTheEmittedPositionBack) {
  auto web1 = Node("web-1");
  const std::string ip = "198.51.100.99";
  auto open = [&](const std::string& node, Writer& writer, size_t max_batch) {
    auto c = Open(node, writer.Callback(), [&](PartitionCounterOptions& o) {
      o.max_batch = max_batch;
      o.snapshot_interval = absl::Hours(1);
    });
    EXPECT_TRUE(c.ok()) << c.status();
    return *std::move(c);
  };
  Writer w1, w2, w3;
  auto former = open("n1", w1, /*max_batch=*/1);  // reads one match per Poll
  ASSERT_TRUE(former->Apply(All()).ok());
  Fail(*web1, ip, 0);
  Fail(*web1, ip, 1);
  PollUntilRead(*former, 2);
  auto successor = open("n2", w2, 512);
  ASSERT_TRUE(successor->Apply(All()).ok());
  for (int i = 2; i < 5; ++i) Fail(*web1, ip, i);
  PollUntilRead(*successor, 5);
  ASSERT_EQ(w2.all.size(), 1u);  // the fifth crossed
  PollUntilRead(*former, 3);     // one more, behind the successor
  EXPECT_TRUE(w1.all.empty());
  former.reset();
  successor.reset();
  auto next = open("n3", w3, 512);
  ASSERT_TRUE(next->Apply(All()).ok());
  PollUntilRead(*next, 5);
  EXPECT_TRUE(w3.all.empty());
  EXPECT_EQ(next->stats().replayed, 5u);
}

// The writer away: each offer of a detection waits (palisaded: SendDetection, up to a third of
// the lease term) and is refused. A Poll offers at most one then, not one per partition
// holding a crossing: the node's thread, which renews the leases between polls, is not held
// for partitions x that wait (16 x 5 s), past its leases' term.
TEST_F(PartitionCounterTest, WhileTheWriterRefusesAPollOffersOneDetectionNotOnePerPartition) {
  auto web1 = Node("web-1");
  std::vector<std::string> keys(kPartitions);  // one key of each partition
  for (int i = 1; std::any_of(keys.begin(), keys.end(), [](auto& k) { return k.empty(); }); ++i) {
    const std::string ip = absl::StrCat("203.0.113.", i);
    if (keys[PartitionOf(ip, kPartitions)].empty()) keys[PartitionOf(ip, kPartitions)] = ip;
  }
  int calls = 0;
  auto away = [&](const ClusterDetection&) {
    ++calls;
    return absl::UnavailableError("command channel: no edge writer answered");
  };
  auto c = Open("n1", away);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Apply(All()).ok());
  for (const std::string& key : keys) {
    for (int i = 0; i < 5; ++i) Fail(*web1, key, i);
  }
  int most = 0;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  int after = 0;
  while (after < 3 && absl::Now() < deadline) {
    const int before = calls;
    (*c)->Poll().IgnoreError();
    most = std::max(most, calls - before);
    if ((*c)->stats().counted == 5 * kPartitions) ++after;
  }
  EXPECT_EQ((*c)->stats().counted, 5 * kPartitions);
  EXPECT_EQ(most, 1);
}

// A snapshot that cannot be read is no snapshot: the partition is read from the stream's start.
TEST_F(PartitionCounterTest, AnUnreadableSnapshotMeansReadingFromTheStart) {
  auto web1 = Node("web-1");
  const std::string ip = "203.0.113.180";
  const uint32_t p = PartitionOf(ip, kPartitions);
  for (int i = 0; i < 4; ++i) Fail(*web1, ip, i);
  kvStore* kv = nullptr;
  Writer writer;
  auto owner = Counter("owner", writer);  // creates the bucket
  ASSERT_EQ(js_KeyValue(&kv, client_->jetstream(), "palisade_windows"), NATS_OK);
  uint64_t rev = 0;
  ASSERT_EQ(kvStore_PutString(&rev, kv, absl::StrCat("p", p, ".head").c_str(), "\xff garbage"),
            NATS_OK);
  kvStore_Destroy(kv);
  ASSERT_TRUE(owner->Apply(All()).ok());
  EXPECT_EQ(owner->stats().snapshot_failures, 1u);
  EXPECT_TRUE(absl::StrContains(owner->last_refusal(), "unreadable")) << owner->last_refusal();
  PollUntilRead(*owner, 4);
  Fail(*web1, ip, 4);
  PollUntilRead(*owner, 5);
  ASSERT_EQ(writer.all.size(), 1u);
  EXPECT_EQ(writer.all[0].detection.key, ip);
}

// A rolling upgrade: a head written before windows said what they counted (key kind and
// capture unset) is restored whole when its rule set version is this node's (the version
// fingerprints the rules, key kind and capture included), and dropped under other rules.
TEST_F(PartitionCounterTest, APreUpgradeSnapshotIsRestoredOnlyUnderTheSameRuleSetVersion) {
  const std::string ip = "203.0.113.150";
  const uint32_t p = PartitionOf(ip, kPartitions);
  for (const bool same : {true, false}) {
    SCOPED_TRACE(same);
    Writer writer;
    auto owner = Counter(absl::StrCat("owner-", same), writer);  // creates the bucket
    palisade::v1::PartitionSnapshotChunk chunk;
    auto* w = chunk.mutable_windows()->add_windows();
    w->set_rule_id("ssh-fail");
    w->set_key(ip);
    for (int i = 0; i < 4; ++i) w->add_times_ms(1'772'539'200'000 + i * 1000);
    palisade::v1::PartitionSnapshotHead head;
    head.set_partition(p);
    head.set_generation(absl::StrCat("old-", same));
    head.set_chunks(1);
    head.set_windows(1);
    head.set_rule_set_version(same ? version_ : "sha256:0123456789abcdef");
    kvStore* kv = nullptr;
    ASSERT_EQ(js_KeyValue(&kv, client_->jetstream(), "palisade_windows"), NATS_OK);
    uint64_t rev = 0;
    const std::string chunk_bytes = chunk.SerializeAsString();
    ASSERT_EQ(kvStore_Put(&rev, kv, absl::StrCat("p", p, ".g", head.generation(), ".0").c_str(),
                          chunk_bytes.data(), static_cast<int>(chunk_bytes.size())),
              NATS_OK);
    const std::string head_bytes = head.SerializeAsString();
    ASSERT_EQ(kvStore_Put(&rev, kv, absl::StrCat("p", p, ".head").c_str(), head_bytes.data(),
                          static_cast<int>(head_bytes.size())),
              NATS_OK);
    kvStore_Destroy(kv);
    ASSERT_TRUE(owner->Apply(All()).ok());
    size_t windows = 99;
    for (const auto& st : owner->partitions()) {
      if (st.partition == p) windows = st.windows;
    }
    EXPECT_EQ(windows, same ? 1u : 0u);
  }
}

// Windows age in the event time of the partition's latest match, and a quiet partition's
// windows a day behind the clock at the latest.
TEST_F(PartitionCounterTest, WindowsAgeInEventTimeAndAtLatestADayBehind) {
  auto web1 = Node("web-1");
  const std::string a = "203.0.113.41";
  std::string b;  // another key of the same partition
  for (int i = 0; b.empty(); ++i) {
    const std::string k = absl::StrCat("198.51.100.", i);
    if (PartitionOf(k, kPartitions) == PartitionOf(a, kPartitions)) b = k;
  }
  Writer writer;
  auto owner = Counter("owner", writer);
  ASSERT_TRUE(owner->Apply(All()).ok());
  clock_.Set(absl::FromUnixSeconds(1'772'539'200 + 3600));  // 13:00, the lines' day
  Fail(*web1, a, 0);                                       // 12:00:00
  Fail(*web1, b, 11 * 60);                                 // 12:11:00
  PollUntilRead(*owner, 2);
  auto windows = [&]() {
    for (const auto& s : owner->partitions()) {
      if (s.partition == PartitionOf(a, kPartitions)) return s.windows;
    }
    return size_t{0};
  };
  clock_.Advance(absl::Seconds(11));
  ASSERT_TRUE(owner->Poll().ok());
  EXPECT_EQ(windows(), 1u);  // a's is older than its 10 minutes before 12:11: gone
  clock_.Advance(absl::Hours(23));
  ASSERT_TRUE(owner->Poll().ok());
  EXPECT_EQ(windows(), 1u);  // less than a day: the partition's event time stays 12:11
  clock_.Advance(absl::Hours(2));
  ASSERT_TRUE(owner->Poll().ok());
  EXPECT_EQ(windows(), 0u);
}

// A former owner that has not yet learnt it lost the partition may still write a snapshot: the
// chunks of every replaced snapshot are purged, whoever wrote it, and the last head is whole.
TEST_F(PartitionCounterTest, NoSnapshotChunksOutliveTheirHead) {
  auto web1 = Node("web-1");
  const std::string ip = "203.0.113.222";
  const uint32_t p = PartitionOf(ip, kPartitions);
  Writer writer;
  auto a = Counter("a", writer, /*snapshot_every=*/1);
  ASSERT_TRUE(a->Apply(All()).ok());
  Fail(*web1, ip, 0);
  PollUntilRead(*a, 1);  // a's first snapshot
  auto b = Counter("b", writer, /*snapshot_every=*/1);
  ASSERT_TRUE(b->Apply(All()).ok());  // b takes over (a does not know yet)
  Fail(*web1, ip, 1);
  PollUntilRead(*b, 1);  // b's snapshot replaces a's
  PollUntilRead(*a, 2);  // a's second snapshot replaces b's
  EXPECT_EQ(a->stats().snapshots, 2u);
  EXPECT_EQ(b->stats().snapshots, 1u);
  kvStore* kv = nullptr;
  ASSERT_EQ(js_KeyValue(&kv, client_->jetstream(), "palisade_windows"), NATS_OK);
  kvKeysList keys{nullptr, 0};
  ASSERT_EQ(kvStore_Keys(&keys, kv, nullptr), NATS_OK);
  std::vector<std::string> chunks;
  for (int i = 0; i < keys.Count; ++i) {
    if (absl::StartsWith(keys.Keys[i], absl::StrCat("p", p, ".g"))) chunks.push_back(keys.Keys[i]);
  }
  kvKeysList_Destroy(&keys);
  kvStore_Destroy(kv);
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_TRUE(absl::StartsWith(chunks[0], absl::StrCat("p", p, ".ga-"))) << chunks[0];
  // The last head is whole: a third owner restores it.
  auto c = Counter("c", writer);
  ASSERT_TRUE(c->Apply(All()).ok());
  EXPECT_EQ(c->stats().snapshot_failures, 0u);
  for (const auto& s : c->partitions()) {
    if (s.partition == p) {
      EXPECT_EQ(s.windows, 1u);
    }
  }
}

// The windows bucket's snapshot keys of partition `p`, as a reader of the bucket sees them.
struct BucketSnapshot {
  std::string head_generation;  // "" when the partition has no head
  uint32_t head_chunks = 0;
  std::vector<std::string> unnamed;  // chunk keys that the head does not name (orphans)
  std::vector<std::string> missing;  // chunk keys the head names that the bucket lacks
  size_t chunks = 0;                 // chunk keys in all
  // Messages of the bucket's stream that are no key's value: delete or purge markers, which
  // stay for good too (one per purged chunk key).
  int64_t markers = 0;
};

BucketSnapshot ReadBucket(NatsClient& client, uint32_t p) {
  BucketSnapshot out;
  kvStore* kv = nullptr;
  EXPECT_EQ(js_KeyValue(&kv, client.jetstream(), "palisade_windows"), NATS_OK);
  if (kv == nullptr) return out;
  kvEntry* e = nullptr;
  if (kvStore_Get(&e, kv, absl::StrCat("p", p, ".head").c_str()) == NATS_OK) {
    palisade::v1::PartitionSnapshotHead head;
    EXPECT_TRUE(head.ParseFromArray(kvEntry_Value(e), kvEntry_ValueLen(e)));
    out.head_generation = head.generation();
    out.head_chunks = head.chunks();
    kvEntry_Destroy(e);
  }
  std::set<std::string> named;
  for (uint32_t i = 0; !out.head_generation.empty() && i < out.head_chunks; ++i) {
    named.insert(absl::StrCat("p", p, ".g", out.head_generation, ".", i));
  }
  kvKeysList keys{nullptr, 0};
  EXPECT_EQ(kvStore_Keys(&keys, kv, nullptr), NATS_OK);
  absl::StatusOr<NatsClient::StreamState> stream = client.State("KV_palisade_windows");
  EXPECT_TRUE(stream.ok()) << stream.status();
  if (stream.ok()) out.markers = static_cast<int64_t>(stream->messages) - keys.Count;
  std::set<std::string> present;
  for (int i = 0; i < keys.Count; ++i) {
    if (!absl::StartsWith(keys.Keys[i], absl::StrCat("p", p, ".g"))) continue;
    ++out.chunks;
    present.insert(keys.Keys[i]);
    if (named.count(keys.Keys[i]) == 0) out.unnamed.push_back(keys.Keys[i]);
  }
  kvKeysList_Destroy(&keys);
  kvStore_Destroy(kv);
  for (const std::string& k : named) {
    if (present.count(k) == 0) out.missing.push_back(k);
  }
  return out;
}

// A snapshot of three windows in three chunks is written, then a second one whose write fails
// as `fault` says (armed for that snapshot only), then a third. After each, every chunk in the
// bucket is named by the head and every chunk the head names is there; and the last head
// restores whole at a new owner.
class SnapshotWriteFailureTest : public PartitionCounterTest {
 protected:
  // Three addresses of 198.51.100.1's partition: three windows of one snapshot.
  static std::vector<std::string> ThreeKeysOfOnePartition() {
    std::vector<std::string> ips;
    for (int i = 1; ips.size() < 3; ++i) {
      const std::string ip = absl::StrCat("198.51.100.", i);
      if (PartitionOf(ip, kPartitions) == PartitionOf("198.51.100.1", kPartitions)) {
        ips.push_back(ip);
      }
    }
    return ips;
  }

  // The owner of these tests: a snapshot every 3 matches, a chunk per window, each write of a
  // snapshot first asked of `write_fault` (PartitionCounterOptions::snapshot_write_fault).
  absl::StatusOr<std::unique_ptr<PartitionCounter>> OpenOwner(
      Writer& writer, std::function<absl::Status(const std::string& key, bool stored)> write_fault) {
    return Open("owner", writer.Callback(), [&](PartitionCounterOptions& o) {
      o.snapshot_every = 3;
      o.snapshot_interval = absl::Hours(1);
      o.snapshot_chunk_bytes = 1;
      o.snapshot_write_fault = std::move(write_fault);
    });
  }

  using Fault = std::function<absl::Status(uint32_t p, const std::string& key, bool stored)>;

  void Run(const Fault& fault, bool failure_is_reported) {
    auto web1 = Node("web-1");
    const std::vector<std::string> ips = ThreeKeysOfOnePartition();  // three windows
    const uint32_t p = PartitionOf(ips[0], kPartitions);
    bool armed = false;
    Writer writer;
    auto opened = OpenOwner(writer, [&](const std::string& key, bool stored) {
      return armed ? fault(p, key, stored) : absl::OkStatus();
    });
    ASSERT_TRUE(opened.ok()) << opened.status();
    PartitionCounter& owner = **opened;
    ASSERT_TRUE(owner.Apply(All()).ok());
    // Polls until `n` are counted, a failed snapshot's error kept.
    auto poll_until = [&](uint64_t n) {
      absl::Status last;
      const absl::Time deadline = absl::Now() + absl::Seconds(60);
      while (owner.stats().counted < n && absl::Now() < deadline) {
        absl::StatusOr<size_t> r = owner.Poll();
        if (!r.ok()) last = r.status();
      }
      EXPECT_EQ(owner.stats().counted, n);
      return last;
    };
    auto expect_consistent = [&](absl::string_view when) {
      const BucketSnapshot b = ReadBucket(*client_, p);
      EXPECT_FALSE(b.head_generation.empty()) << when;
      EXPECT_EQ(b.head_chunks, 3u) << when;
      EXPECT_TRUE(b.unnamed.empty())
          << when << ": chunks no head names: " << absl::StrJoin(b.unnamed, ", ");
      EXPECT_TRUE(b.missing.empty())
          << when << ": chunks the head names, missing: " << absl::StrJoin(b.missing, ", ");
      EXPECT_EQ(b.markers, 0) << when << ": purge markers left in the bucket";
      return b;
    };

    for (int i = 0; i < 3; ++i) Fail(*web1, ips[i], i);
    ASSERT_TRUE(poll_until(3).ok());
    ASSERT_EQ(owner.stats().snapshots, 1u);
    const std::string first = expect_consistent("after the first snapshot").head_generation;

    armed = true;
    for (int i = 0; i < 3; ++i) Fail(*web1, ips[i], 10 + i);
    const absl::Status failed = poll_until(6);
    armed = false;
    if (failure_is_reported) {
      EXPECT_EQ(failed.code(), absl::StatusCode::kUnavailable) << failed;
      EXPECT_TRUE(absl::StrContains(failed.message(), "injected")) << failed;
      EXPECT_EQ(owner.stats().snapshot_failures, 1u);
      EXPECT_EQ(expect_consistent("after the failed snapshot").head_generation, first);
    } else {
      // The head was stored: the snapshot was taken, whatever its write said.
      EXPECT_TRUE(failed.ok()) << failed;
      EXPECT_EQ(owner.stats().snapshots, 2u);
      EXPECT_NE(expect_consistent("after the snapshot stored").head_generation, first);
    }

    for (int i = 0; i < 3; ++i) Fail(*web1, ips[i], 20 + i);
    ASSERT_TRUE(poll_until(9).ok());
    const BucketSnapshot last = expect_consistent("after the next snapshot");
    EXPECT_EQ(last.chunks, 3u);
    opened->reset();

    Writer writer2;
    auto next = Counter("next", writer2);
    ASSERT_TRUE(next->Apply(All()).ok());
    EXPECT_EQ(next->stats().snapshot_failures, 0u);
    for (const auto& s : next->partitions()) {
      if (s.partition == p) {
        EXPECT_EQ(s.windows, 3u);
      }
    }
  }

  static bool IsChunk(uint32_t p, const std::string& key, int i) {
    return absl::StartsWith(key, absl::StrCat("p", p, ".g")) &&
           absl::EndsWith(key, absl::StrCat(".", i));
  }
  static bool IsHead(uint32_t p, const std::string& key) {
    return key == absl::StrCat("p", p, ".head");
  }
};

// The third chunk's write fails: the two written before it are purged.
TEST_F(SnapshotWriteFailureTest, AChunkWriteFailingLeavesNoChunk) {
  Run(
      [](uint32_t p, const std::string& key, bool stored) {
        return !stored && IsChunk(p, key, 2) ? absl::UnavailableError("injected: chunk refused")
                                             : absl::OkStatus();
      },
      /*failure_is_reported=*/true);
}

// The second chunk is stored but its write reports an error: it is purged with the first.
TEST_F(SnapshotWriteFailureTest, AChunkStoredWhoseWriteFailedIsPurgedToo) {
  Run(
      [](uint32_t p, const std::string& key, bool stored) {
        return stored && IsChunk(p, key, 1) ? absl::UnavailableError("injected: ack lost")
                                            : absl::OkStatus();
      },
      /*failure_is_reported=*/true);
}

// The head's write fails unstored: the bucket's head (the previous one) does not name the new
// chunks, which are purged; the previous snapshot's are kept.
TEST_F(SnapshotWriteFailureTest, AHeadWriteFailingLeavesNoChunk) {
  Run(
      [](uint32_t p, const std::string& key, bool stored) {
        return !stored && IsHead(p, key) ? absl::UnavailableError("injected: head refused")
                                         : absl::OkStatus();
      },
      /*failure_is_reported=*/true);
}

// The head is stored but its write reports an error: read back, it names the new chunks, which
// are kept; the snapshot it replaced is purged.
TEST_F(SnapshotWriteFailureTest, AHeadStoredWhoseWriteFailedIsTheSnapshot) {
  Run(
      [](uint32_t p, const std::string& key, bool stored) {
        return stored && IsHead(p, key) ? absl::UnavailableError("injected: ack lost")
                                        : absl::OkStatus();
      },
      /*failure_is_reported=*/false);
}

// A former owner that has not learnt yet that it lost the partition writes its head (and its
// chunk) between this owner's read of the head and its write: the head is replaced by
// compare-and-set on the one read, so this owner reads it again and purges the former owner's
// chunk with its own previous ones; none is left that no head names.
TEST_F(SnapshotWriteFailureTest, AHeadWrittenByAnotherMeanwhileIsPurgedToo) {
  bool injected = false;
  Run(
      [&](uint32_t p, const std::string& key, bool stored) {
        if (stored || injected || !IsHead(p, key)) return absl::OkStatus();
        injected = true;
        kvStore* kv = nullptr;
        EXPECT_EQ(js_KeyValue(&kv, client_->jetstream(), "palisade_windows"), NATS_OK);
        palisade::v1::PartitionSnapshotChunk chunk;
        palisade::v1::PartitionSnapshotHead head;
        head.set_partition(p);
        head.set_generation("former-0000000000000001");
        head.set_chunks(1);
        uint64_t rev = 0;
        const std::string c = chunk.SerializeAsString(), h = head.SerializeAsString();
        EXPECT_EQ(kvStore_Put(&rev, kv, absl::StrCat("p", p, ".gformer-0000000000000001.0").c_str(),
                              c.data(), static_cast<int>(c.size())),
                  NATS_OK);
        EXPECT_EQ(kvStore_Put(&rev, kv, key.c_str(), h.data(), static_cast<int>(h.size())),
                  NATS_OK);
        kvStore_Destroy(kv);
        return absl::OkStatus();
      },
      /*failure_is_reported=*/false);
  EXPECT_TRUE(injected);
}

// The head's write fails and the server dies with it, so the head cannot be read back: whether
// it names the new chunks is unknown, and they are kept until a read says. Once the server is
// back, they are purged (the head names another snapshot), and the last head restores whole.
TEST_F(SnapshotWriteFailureTest, ChunksOfAHeadNotReadBackArePurgedOnceNatsAnswers) {
  auto web1 = Node("web-1");
  const std::vector<std::string> ips = ThreeKeysOfOnePartition();
  const uint32_t p = PartitionOf(ips[0], kPartitions);
  bool armed = false;
  Writer writer;
  auto opened = OpenOwner(writer, [&](const std::string& key, bool stored) {
    if (!armed || stored || !IsHead(p, key)) return absl::OkStatus();
    armed = false;
    server_->Kill();
    return absl::UnavailableError("injected: head refused, and the server died");
  });
  ASSERT_TRUE(opened.ok()) << opened.status();
  PartitionCounter& owner = **opened;
  ASSERT_TRUE(owner.Apply(All()).ok());
  for (int i = 0; i < 3; ++i) Fail(*web1, ips[i], i);
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  while (owner.stats().snapshots < 1 && absl::Now() < deadline) owner.Poll().IgnoreError();
  ASSERT_EQ(owner.stats().snapshots, 1u);
  armed = true;
  for (int i = 0; i < 3; ++i) Fail(*web1, ips[i], 10 + i);
  while (owner.stats().snapshot_failures < 1 && absl::Now() < deadline) {
    owner.Poll().IgnoreError();
  }
  ASSERT_EQ(owner.stats().snapshot_failures, 1u);
  EXPECT_EQ(owner.stats().chunks_purged, 0u);  // nothing purged while the head is unknown
  ASSERT_TRUE(server_->Restart().ok());
  // The snapshot is taken again once NATS answers, and the unknown one's chunks purged.
  BucketSnapshot b;
  while (absl::Now() < deadline) {
    clock_.Advance(absl::Seconds(6));  // past `stall`: purges that failed are tried again
    owner.Poll().IgnoreError();
    if (owner.stats().snapshots >= 2 && owner.stats().chunks_purged >= 6) break;
  }
  EXPECT_EQ(owner.stats().snapshots, 2u);
  EXPECT_EQ(owner.stats().chunks_purged, 6u);  // the first snapshot's, and the unknown one's
  b = ReadBucket(*client_, p);
  EXPECT_EQ(b.head_chunks, 3u);
  EXPECT_TRUE(b.unnamed.empty()) << "chunks no head names: " << absl::StrJoin(b.unnamed, ", ");
  EXPECT_TRUE(b.missing.empty()) << absl::StrJoin(b.missing, ", ");
  EXPECT_EQ(b.chunks, 3u);
  EXPECT_EQ(b.markers, 0) << "purge markers left in the bucket";
}

// The readers' consumers vanish from the server (as when the server holding them dies): the
// counter reads on after the last match read, skipping and repeating nothing.
TEST_F(PartitionCounterTest, AVanishedReaderIsMadeAgain) {
  auto web1 = Node("web-1");
  const std::string ip = "192.0.2.201";
  Writer writer;
  auto owner = Counter("owner", writer);
  ASSERT_TRUE(owner->Apply(All()).ok());
  for (int i = 0; i < 3; ++i) Fail(*web1, ip, i);
  PollUntilRead(*owner, 3);
  jsConsumerInfoList* list = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  ASSERT_EQ(js_Consumers(&list, client_->jetstream(), kStream, nullptr, &err), NATS_OK);
  ASSERT_EQ(list->Count, static_cast<int>(kPartitions));
  for (int i = 0; i < list->Count; ++i) {
    ASSERT_EQ(js_DeleteConsumer(client_->jetstream(), kStream, list->List[i]->Name, nullptr, &err),
              NATS_OK);
  }
  jsConsumerInfoList_Destroy(list);
  Fail(*web1, ip, 3);
  Fail(*web1, ip, 4);
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (owner->stats().counted < 5 && absl::Now() < deadline) {
    clock_.Advance(absl::Seconds(6));  // past `stall`
    owner->Poll().IgnoreError();       // a vanished consumer may fail a read: made again
  }
  EXPECT_EQ(owner->stats().counted, 5u);
  ASSERT_EQ(writer.all.size(), 1u);
  EXPECT_EQ(writer.all[0].detection.key, ip);
  EXPECT_GE(owner->stats().resubscribed, 1u);
}

// Each partition's engine has its share of the key cap (and of the memory budget).
TEST_F(PartitionCounterTest, EachPartitionHasItsShareOfTheBounds) {
  auto web1 = Node("web-1");
  std::vector<std::string> keys;  // three keys of partition 0
  for (int i = 0; keys.size() < 3; ++i) {
    const std::string k = absl::StrCat("198.51.100.", i);
    if (PartitionOf(k, kPartitions) == 0) keys.push_back(k);
  }
  Writer writer;
  auto c = Open("owner", writer.Callback(), [&](PartitionCounterOptions& o) {
    o.engine = {.max_keys_per_rule = 2 * kPartitions};
  });
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Apply(All()).ok());
  for (size_t i = 0; i < keys.size(); ++i) Fail(*web1, keys[i], static_cast<int>(i));
  PollUntilRead(**c, 3);
  for (const auto& s : (*c)->partitions()) {
    if (s.partition == 0) {
      EXPECT_EQ(s.windows, 2u);
    }
  }
}

// A partition lost is no longer counted, from the next match on.
TEST_F(PartitionCounterTest, ALostPartitionStopsBeingCountedAtOnce) {
  auto web1 = Node("web-1");
  const std::string ip = "203.0.113.99";
  const uint32_t p = PartitionOf(ip, kPartitions);
  Writer writer;
  auto owner = Counter("owner", writer);
  ASSERT_TRUE(owner->Apply(All()).ok());
  Fail(*web1, ip, 0);
  PollUntilRead(*owner, 1);
  Ownership::Change lost;
  lost.lost.insert(p);
  ASSERT_TRUE(owner->Apply(lost).ok());
  EXPECT_EQ(owner->partitions().size(), kPartitions - 1);
  for (const auto& s : owner->partitions()) EXPECT_NE(s.partition, p);
  for (int i = 1; i < 6; ++i) Fail(*web1, ip, i);
  // Another key in an owned partition shows the counter is still reading.
  std::string other;
  for (int i = 0; other.empty(); ++i) {
    const std::string k = absl::StrCat("192.0.2.", i);
    if (PartitionOf(k, kPartitions) != p) other = k;
  }
  Fail(*web1, other, 10);
  PollUntilRead(*owner, 2);
  EXPECT_EQ(owner->stats().counted, 2u);
  EXPECT_TRUE(writer.all.empty());
}

// Matches of another rule set are refused (counted, with the reason); a node whose rules differ
// from the cluster's (published by the writer) opens no partition.
TEST_F(PartitionCounterTest, AnotherRuleSetVersionIsRefused) {
  auto web1 = Node("web-1");
  auto old = Node("web-old", "sha256:0123456789abcdef");
  Writer writer;
  auto owner = Counter("owner", writer);
  ASSERT_TRUE(owner->PublishRuleSet().ok());
  ASSERT_TRUE(owner->Apply(All()).ok());
  const std::string ip = "198.51.100.200";
  for (int i = 0; i < 5; ++i) Fail(*old, ip, i);
  for (int i = 0; i < 4; ++i) Fail(*web1, ip, 10 + i);
  PollUntilRead(*owner, 9);
  EXPECT_EQ(owner->stats().refused_version, 5u);
  EXPECT_EQ(owner->stats().counted, 4u);
  EXPECT_TRUE(writer.all.empty());  // four of this rule set: below the threshold
  EXPECT_TRUE(absl::StrContains(owner->last_refusal(), "web-old")) << owner->last_refusal();
  EXPECT_TRUE(absl::StrContains(owner->last_refusal(), "sha256:0123456789abcdef"));

  auto other = Open("other", writer.Callback(), [&](PartitionCounterOptions& o) {
    o.rule_set_version = "sha256:fedcba9876543210";
  });
  ASSERT_TRUE(other.ok()) << other.status();
  const absl::Status check = (*other)->CheckRuleSet();
  EXPECT_EQ(check.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(check.message(), version_)) << check;
  EXPECT_TRUE(absl::StrContains(check.message(), "owner")) << check;
  EXPECT_EQ((*other)->Apply(All()).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE((*other)->partitions().empty());
  EXPECT_EQ((*other)->unopened().size(), kPartitions);
  // Once the cluster's rules are this node's (here: it became the writer), the partitions it
  // still owns open at a Poll past `stall`.
  ASSERT_TRUE((*other)->PublishRuleSet().ok());
  ASSERT_TRUE((*other)->Poll().ok());
  EXPECT_TRUE((*other)->partitions().empty());  // not before `stall`
  clock_.Advance(absl::Seconds(6));
  ASSERT_TRUE((*other)->Poll().ok());
  EXPECT_EQ((*other)->partitions().size(), kPartitions);
  EXPECT_TRUE((*other)->unopened().empty());
}

// A rolling upgrade from a build that routed an IPv6 address by itself: that node's matches
// carry the same rule set version (the rules did not change), so the version gate does not drop
// them all; its IPv4 matches count as before, and an IPv6 match it sent to its address's
// partition rather than its /48's is refused there by the owner's partition check.
TEST_F(PartitionCounterTest, AFormerBuildsIpv4MatchesStillCountAndItsMisroutedIpv6AreRefused) {
  // The version is the rules' alone (a routing suffix refused every match of the other build).
  EXPECT_TRUE(absl::StartsWith(version_, "sha256:") && version_.size() == 23) << version_;
  auto old = Node("web-old");
  Writer writer;
  auto owner = Counter("owner", writer);
  ASSERT_TRUE(owner->PublishRuleSet().ok());
  ASSERT_TRUE(owner->Apply(All()).ok());
  // The former routing: the message under PartitionOf(key), as Route wrote it before.
  auto send_as_before = [&](const std::string& ip, int second) {
    palisade::v1::ClusterMatch m;
    m.set_rule_id("ssh-fail");
    m.set_key(ip);
    m.set_time_unix_nanos(absl::ToUnixNanos(absl::FromUnixSeconds(1'772'539'200 + second)));
    m.set_rule_set_version(version_);
    m.set_origin_node("web-old");
    ASSERT_TRUE(old->publisher->Enqueue(ip, m.SerializeAsString()));
    ASSERT_TRUE(old->publisher->WaitUntilPublished(absl::Seconds(60)));
  };
  // An IPv6 address whose own partition is not its /48's.
  std::string misrouted;
  for (int i = 1; misrouted.empty(); ++i) {
    const std::string ip = absl::StrCat("2001:db8:1:2::", i);
    if (PartitionOf(ip, kPartitions) != PartitionOf(PartitionKeyOf(ip), kPartitions)) {
      misrouted = ip;
    }
  }
  for (int i = 1; i <= 5; ++i) send_as_before("203.0.113.9", i);
  send_as_before(misrouted, 6);
  PollUntilRead(*owner, 6);
  ASSERT_EQ(writer.all.size(), 1u);
  EXPECT_EQ(writer.all[0].detection.key, "203.0.113.9");
  const PartitionCounter::Stats stats = owner->stats();
  EXPECT_EQ(stats.counted, 5u);
  EXPECT_EQ(stats.refused_version, 0u);
  EXPECT_EQ(stats.refused_invalid, 1u) << owner->last_refusal();
}

// The writer away, Poll fails every 20 ms: the log has the first and then one line a minute
// with the count.
TEST(LogThrottleTest, FirstThenOnceAMinuteWithTheCount) {
  SimulatedClock clock;
  LogThrottle throttle(clock);
  EXPECT_EQ(throttle.Note("writer away"), "writer away");
  for (int i = 0; i < 2999; ++i) {
    clock.Advance(absl::Milliseconds(20));
    EXPECT_EQ(throttle.Note("writer away"), "") << i;
  }
  clock.Advance(absl::Milliseconds(20));  // a minute after the first
  const std::string line = throttle.Note("writer away");
  EXPECT_TRUE(absl::StrContains(line, "writer away")) << line;
  EXPECT_TRUE(absl::StrContains(line, "2999 more")) << line;
  clock.Advance(absl::Seconds(1));
  EXPECT_EQ(throttle.Note("writer away"), "");
  clock.Advance(absl::Minutes(5));  // quiet, then again: logged at once, with the one held
  EXPECT_TRUE(absl::StrContains(throttle.Note("writer back away"), "1 more"));
}

// A rule reload (issue 17): the reloading node's matches carry the new version, its partitions
// count with the new rules, and the writer's new version is the cluster's: a node whose rules
// were not reloaded is refused partitions and its matches are refused, until it reloads too.
TEST_F(PartitionCounterTest, ARuleReloadIsFollowedAndTheWritersVersionGatesTheOthers) {
  std::string pack(kPack);
  pack.replace(pack.find("count: 5"), 8, "count: 3");
  auto parsed = ParseRulePack(pack, "test.textproto");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto compiled = RuleSet::Compile({*parsed});
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  std::shared_ptr<const RuleSet> reloaded = *compiled;
  const std::string v2 = RuleSetVersion(*reloaded);
  ASSERT_NE(v2, version_);

  auto web1 = Node("web-1");
  auto web2 = Node("web-2");
  Writer writer;
  auto owner = Counter("owner", writer);  // the writer
  auto other = Counter("other", writer);
  ASSERT_TRUE(owner->PublishRuleSet().ok());
  ASSERT_TRUE(owner->Apply(All()).ok());
  ASSERT_TRUE(other->CheckRuleSet().ok());

  // The writer and web-1 reload (on the writer, web-1's matching and the counting are one node's
  // in palisaded; two here): the cluster's version is the new one.
  absl::StatusOr<std::string> v = ApplyRuleReload(reloaded, *web1->router, *owner, true);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, v2);
  const absl::Status gated = other->CheckRuleSet();
  EXPECT_EQ(gated.code(), absl::StatusCode::kFailedPrecondition) << gated;
  EXPECT_TRUE(absl::StrContains(gated.message(), v2)) << gated;

  // Three failures under the new rules (threshold 3) are one detection; web-2's match, of the
  // old version, is refused.
  const std::string ip = "198.51.100.77";
  for (int i = 0; i < 3; ++i) Fail(*web1, ip, i);
  Fail(*web2, ip, 5);
  PollUntilRead(*owner, 4);
  EXPECT_EQ(owner->stats().counted, 3u);
  EXPECT_EQ(owner->stats().refused_version, 1u);
  ASSERT_EQ(writer.all.size(), 1u);
  EXPECT_EQ(writer.all[0].detection.key, ip);

  // web-2's node reloads too (not the writer: it publishes nothing): the gate opens.
  v = ApplyRuleReload(reloaded, *web2->router, *other, false);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_TRUE(other->CheckRuleSet().ok());
  EXPECT_TRUE(owner->CheckRuleSet().ok());
  Fail(*web2, ip, 6);
  PollUntilRead(*owner, 5);
  EXPECT_EQ(owner->stats().counted, 4u);
}

// A match over NATS' payload limit (engine.max_evidence 1 and max_evidence_bytes 1 MiB let its
// line be 1 MiB) is routed with its evidence cut to fit, and counted by the owner. It could
// never be sent and stayed at the front of its node's queue: nothing more went out.
TEST_F(PartitionCounterTest, AMatchOverThePayloadLimitIsRoutedWithItsEvidenceCut) {
  auto web1 = Node("web-1");
  Writer writer;
  auto owner = Counter("owner", writer);
  ASSERT_TRUE(owner->Apply(All()).ok());
  EngineMatch m;
  m.rule = rules_->rules()[0].get();
  m.rule_id = "ssh-fail";
  m.key = "203.0.113.60";
  m.time = absl::FromUnixSeconds(1'772'539'200);
  m.evidence = std::string((1 << 20) - 4, 'x');
  ASSERT_TRUE(web1->router->Route(m).ok());
  ASSERT_TRUE(web1->publisher->WaitUntilPublished(absl::Seconds(60)))
      << web1->publisher->last_failure();
  EXPECT_EQ(web1->router->evidence_cut(), 1u);
  EXPECT_EQ(web1->publisher->dropped(), 0u);
  PollUntilRead(*owner, 1);
  EXPECT_EQ(owner->stats().counted, 1u);
}

// A token-fingerprint match never leaves its node.
TEST_F(PartitionCounterTest, TokenMatchesAreNotRouted) {
  auto web1 = Node("web-1");
  auto pack = ParseRulePack(R"pb(
    name: "t"
    rules {
      id: "token-leak"
      formats: LOG_FORMAT_RAW
      key: "token"
      key_kind: TARGET_KIND_TOKEN_FINGERPRINT
      patterns: "token=(?P<token>[A-Za-z0-9_-]{40})"
      threshold { count: 1 }
      decision {
        action: ACTION_REVOKE_TOKEN
        duration { seconds: 60 }
        actuator: ACTUATOR_TOKEN_REVOCATION
      }
    }
  )pb",
                            "t.textproto");
  ASSERT_TRUE(pack.ok()) << pack.status();
  auto set = RuleSet::Compile({*pack});
  ASSERT_TRUE(set.ok()) << set.status();
  EngineMatch m;
  m.rule = (*set)->rules()[0].get();
  m.rule_id = "token-leak";
  m.key = "sha256:0011223344556677";
  m.secret = std::string(40, 'a');
  EXPECT_EQ(web1->router->Route(m).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(web1->router->kept_local(), 1u);
  EXPECT_EQ(web1->router->routed(), 0u);
}

}  // namespace
}  // namespace palisade::cluster
