#include "services/cluster/decision_log.h"

#include <nats/nats.h>

#include <iostream>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/cluster/nats_server_for_tests.h"
#include "services/common/clock.h"
#include "services/common/proto_time.h"

namespace palisade::cluster {
namespace {

using palisade::v1::Decision;
using ::testing::ElementsAreArray;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// "created <id> 0": what a change is, for comparing sequences of changes.
std::string Describe(DecisionChange change, const Decision& d) {
  return absl::StrCat(DecisionChangeName(change), " ", d.id(), " ", d.extensions(), " ",
                      d.active());
}

// What a replica applied, in order: its updates described, and "state <n>" for a full state.
class Recorder {
 public:
  void Apply(const ReplicatedChange& c) {
    view_.Apply(c);
    absl::MutexLock lock(&mu_);
    if (c.kind == ReplicatedChange::Kind::kState) {
      seen_.push_back(absl::StrCat("state ", c.state.size()));
    } else if (c.kind == ReplicatedChange::Kind::kSet) {
      std::vector<std::string> each;
      for (const DecisionUpdate& u : c.set) each.push_back(Describe(u.change, u.decision));
      seen_.push_back(absl::StrCat("set [", absl::StrJoin(each, ", "), "]"));
    } else if (c.kind == ReplicatedChange::Kind::kWaiting) {
      seen_.push_back(absl::StrCat("waiting ", c.waiting.target, " ", c.waiting.claims.size()));
    } else if (c.kind == ReplicatedChange::Kind::kWaitingEnd) {
      seen_.push_back("waiting end");
    } else {
      seen_.push_back(Describe(c.change, c.decision));
    }
  }
  std::function<void(const ReplicatedChange&)> Callback() {
    return [this](const ReplicatedChange& c) { Apply(c); };
  }
  std::vector<std::string> seen() const {
    absl::MutexLock lock(&mu_);
    return seen_;
  }
  DecisionView& view() { return view_; }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::string> seen_ ABSL_GUARDED_BY(mu_);
  DecisionView view_;
};

// The decisions as compared between the writer's table and a view.
std::vector<std::string> Snapshot(const std::vector<Decision>& decisions) {
  std::vector<std::string> out;
  for (const Decision& d : decisions) out.push_back(d.ShortDebugString());
  return out;
}

// The writer's side: a DecisionTable on a simulated clock whose changes go to the log, and the
// list of those changes as its own listener heard them.
class Writer {
 public:
  Writer(NatsClient& nats, const std::string& node, size_t max_queued_bytes = 1 << 20,
         size_t max_chunk_bytes = 512 << 10)
      : table_(clock_) {
    auto w = DecisionLogWriter::Start(nats, {.node_id = node,
                                             .max_queued_bytes = max_queued_bytes,
                                             .max_chunk_bytes = max_chunk_bytes,
                                             .state = [this] { return table_.List({}); },
                                             .retry_min = absl::Milliseconds(20),
                                             .retry_max = absl::Milliseconds(200)});
    EXPECT_TRUE(w.ok()) << w.status();
    if (w.ok()) log_ = *std::move(w);
    table_.AddListener([this](const DecisionUpdate& u) {
      if (u.change == DecisionChange::kStale) return;
      absl::MutexLock lock(&mu_);
      heard_.push_back(Describe(u.change, u.decision));
      updates_.push_back(u);
    });
    if (log_) table_.AddListener(log_->Listener());
  }
  Decision Manual(const std::string& ip, absl::Duration duration) {
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_value(ip);
    *req.mutable_duration() = ToProtoDuration(duration);
    req.set_reason("operator");
    absl::StatusOr<Decision> d = table_.AddManual(req);
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *d : Decision();
  }
  // A mix of every change: `n` bans (n / 5 of them extended, n / 5 withdrawn, some expired).
  void Changes(int n, int base = 0) {
    std::vector<Decision> made;
    for (int i = 0; i < n; ++i) {
      made.push_back(Manual(absl::StrCat("198.51.", (base + i) / 250, ".", (base + i) % 250 + 1),
                            i % 3 == 0 ? absl::Minutes(5) : absl::Hours(1)));
    }
    for (int i = 0; i < n; i += 5) Manual(made[i].target().value(), absl::Hours(2));  // extended
    for (int i = 1; i < n; i += 5) EXPECT_TRUE(table_.Withdraw(made[i].id()).ok());
    clock_.Advance(absl::Minutes(10));
    table_.ExpireDue();
  }
  std::vector<std::string> heard() const {
    absl::MutexLock lock(&mu_);
    return heard_;
  }
  std::vector<DecisionUpdate> updates() const {
    absl::MutexLock lock(&mu_);
    return updates_;
  }
  DecisionTable& table() { return table_; }
  DecisionLogWriter& log() { return *log_; }
  void Stop() { log_.reset(); }

 private:
  SimulatedClock clock_;
  DecisionTable table_;
  std::unique_ptr<DecisionLogWriter> log_;
  mutable absl::Mutex mu_;
  std::vector<std::string> heard_ ABSL_GUARDED_BY(mu_);
  std::vector<DecisionUpdate> updates_ ABSL_GUARDED_BY(mu_);
};

class DecisionLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = NatsServerForTests::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = Connect();
    ASSERT_TRUE(client_);
    ASSERT_TRUE(client_->EnsureStream(DecisionLogStreamSpec(1)).ok());
  }
  std::unique_ptr<NatsClient> Connect() {
    auto c = NatsClient::Connect({.servers = {server_->url()}, .timeout = absl::Seconds(2)});
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }
  std::unique_ptr<DecisionReplica> Replica(Recorder& r, uint64_t start_after = 0,
                                           NatsClient* client = nullptr) {
    auto rep = DecisionReplica::Start(
        client ? *client : *client_,
        {.start_after = start_after, .apply = r.Callback(), .retry = absl::Milliseconds(50)});
    EXPECT_TRUE(rep.ok()) << rep.status();
    return rep.ok() ? *std::move(rep) : nullptr;
  }
  uint64_t LastSequence() {
    absl::StatusOr<NatsClient::StreamState> s = client_->State(kDecisionStream);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? s->last_sequence : 0;
  }
  void PurgeBefore(uint64_t sequence) {
    jsOptions o;
    jsOptions_Init(&o);
    o.Stream.Purge.Sequence = sequence;
    jsErrCode err = static_cast<jsErrCode>(0);
    ASSERT_EQ(js_PurgeStream(client_->jetstream(), kDecisionStream, &o, &err), NATS_OK);
  }
  std::unique_ptr<NatsServerForTests> server_;
  std::unique_ptr<NatsClient> client_;
};

// Two replicas, each on its own connection, see exactly the writer's changes, in the order the
// table made them, and their views end equal to the writer's table.
TEST_F(DecisionLogTest, TwoReplicasSeeExactlyTheWritersChangesInOrder) {
  Writer writer(*client_, "web-1");
  Recorder a, b;
  auto ca = Connect();
  auto cb = Connect();
  auto ra = Replica(a, 0, ca.get());
  auto rb = Replica(b, 0, cb.get());
  ASSERT_TRUE(ra && rb);
  writer.Changes(40);
  ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(60)));
  const std::vector<std::string> heard = writer.heard();
  ASSERT_GT(heard.size(), 60u);  // 40 created, 8 extended, 8 withdrawn, some expired
  EXPECT_EQ(writer.log().published(), heard.size());
  EXPECT_EQ(writer.log().duplicates(), 0u);
  const uint64_t last = LastSequence();
  EXPECT_EQ(last, heard.size());
  ASSERT_TRUE(ra->WaitUntilApplied(last, absl::Seconds(60)));
  ASSERT_TRUE(rb->WaitUntilApplied(last, absl::Seconds(60)));
  EXPECT_THAT(a.seen(), ElementsAreArray(heard));
  EXPECT_THAT(b.seen(), ElementsAreArray(heard));
  const auto table = Snapshot(writer.table().List({}));
  EXPECT_THAT(Snapshot(a.view().List()), ElementsAreArray(table));
  EXPECT_THAT(Snapshot(b.view().List()), ElementsAreArray(table));
  EXPECT_EQ(a.view().active_count(), writer.table().active_count());
  EXPECT_EQ(ra->fell_behind(), 0u);
  EXPECT_EQ(ra->malformed(), 0u);
}

// A replica stopped mid-stream and started again from the position it kept with its view
// catches up exactly: nothing lost, nothing applied twice.
TEST_F(DecisionLogTest, AReplicaRestartedMidStreamCatchesUpExactly) {
  Writer writer(*client_, "web-1");
  Recorder r;
  uint64_t kept = 0;
  {
    auto first = Replica(r);
    ASSERT_TRUE(first);
    writer.Changes(20);
    ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(60)));
    ASSERT_TRUE(first->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
    kept = first->applied_through();
  }  // the node stops; its view and position stay (as a snapshot would keep them)
  writer.Changes(20, /*base=*/100);
  ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(60)));
  auto second = Replica(r, kept);
  ASSERT_TRUE(second);
  ASSERT_TRUE(second->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  EXPECT_THAT(r.seen(), ElementsAreArray(writer.heard()));
  EXPECT_THAT(Snapshot(r.view().List()), ElementsAreArray(Snapshot(writer.table().List({}))));
  EXPECT_EQ(second->fell_behind(), 0u);
}

// The writer dies after NATS stored its changes but before it learned so (the acks lost); the
// new writer, on another node, publishes the same changes again. Their ids come from the changes
// themselves, so the stream stores each once and replicas apply each once.
TEST_F(DecisionLogTest, ChangesPublishedAgainByANewWriterAreStoredOnce) {
  Writer old_writer(*client_, "web-1");
  old_writer.Changes(20);
  ASSERT_TRUE(old_writer.log().WaitUntilPublished(absl::Seconds(60)));
  const uint64_t stored = LastSequence();
  const std::vector<DecisionUpdate> updates = old_writer.updates();
  ASSERT_EQ(stored, updates.size());
  old_writer.Stop();

  Writer new_writer(*client_, "web-2");
  for (const DecisionUpdate& u : updates) EXPECT_TRUE(new_writer.log().Enqueue(u));
  ASSERT_TRUE(new_writer.log().WaitUntilPublished(absl::Seconds(60)));
  EXPECT_EQ(new_writer.log().published(), updates.size());
  EXPECT_EQ(new_writer.log().duplicates(), updates.size());
  EXPECT_EQ(LastSequence(), stored);

  Recorder r;
  auto rep = Replica(r);
  ASSERT_TRUE(rep);
  ASSERT_TRUE(rep->WaitUntilApplied(stored, absl::Seconds(60)));
  EXPECT_THAT(r.seen(), ElementsAreArray(old_writer.heard()));
  // An extension is a change of its own (its id counts the extensions): not taken for a retry.
  EXPECT_NE(UpdateId(updates[0]), "");
  std::set<std::string> ids;
  for (const DecisionUpdate& u : updates) ids.insert(UpdateId(u));
  EXPECT_EQ(ids.size(), updates.size());
}

// What fencing relies on: JetStream checks a publish's de-duplication id before its expected
// last sequence, so a writer retrying after a lost ack (the stream moved on by its own message)
// is told "duplicate", not "wrong last sequence".
TEST_F(DecisionLogTest, ARetryIsADuplicateBeforeItIsAWrongLastSequence) {
  auto publish = [&](const char* id, uint64_t expect, jsErrCode* err) -> jsPubAck* {
    jsPubOptions o;
    jsPubOptions_Init(&o);
    o.MsgId = id;
    o.ExpectLastSeq = expect;
    jsPubAck* pa = nullptr;
    *err = static_cast<jsErrCode>(0);
    js_Publish(&pa, client_->jetstream(), kDecisionSubject, "x", 1, &o, err);
    return pa;
  };
  jsErrCode err;
  jsPubAck* a = publish("a", 0, &err);
  ASSERT_NE(a, nullptr);
  jsPubAck* b = publish("b", a->Sequence, &err);
  ASSERT_NE(b, nullptr);
  jsPubAck* retry = publish("b", a->Sequence, &err);  // the ack of b was "lost"
  ASSERT_NE(retry, nullptr) << "error " << err;
  EXPECT_TRUE(retry->Duplicate);
  EXPECT_EQ(retry->Sequence, b->Sequence);
  jsPubAck* other = publish("c", a->Sequence, &err);  // another writer's stale expectation
  EXPECT_EQ(other, nullptr);
  EXPECT_EQ(err, JSStreamWrongLastSequenceErr);
  for (jsPubAck* p : {a, b, retry, other}) {
    if (p != nullptr) jsPubAck_Destroy(p);
  }
}

// A former writer (its lease lost, it has not noticed yet) makes a change after its successor
// took over: the stream refuses it, the former writer says it is fenced and publishes nothing
// more, and replicas end at the successor's table.
TEST_F(DecisionLogTest, AFormerWritersLateChangesAreFencedOut) {
  Writer old_writer(*client_, "web-1");
  old_writer.Changes(10);
  ASSERT_TRUE(old_writer.log().WaitUntilPublished(absl::Seconds(60)));
  Writer new_writer(*client_, "web-2");
  new_writer.log().PublishState();  // take-over
  new_writer.Changes(10, /*base=*/100);
  ASSERT_TRUE(new_writer.log().WaitUntilPublished(absl::Seconds(60)));
  const uint64_t last = LastSequence();
  EXPECT_FALSE(old_writer.log().fenced());

  old_writer.Manual("192.0.2.1", absl::Hours(1));  // too late
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (!old_writer.log().fenced() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_TRUE(old_writer.log().fenced());
  EXPECT_THAT(old_writer.log().last_error(), ::testing::HasSubstr("fenced"));
  EXPECT_EQ(old_writer.log().dropped(), 1u);
  old_writer.Manual("192.0.2.2", absl::Hours(1));  // refused at once
  EXPECT_EQ(old_writer.log().dropped(), 2u);
  EXPECT_EQ(LastSequence(), last);
  EXPECT_FALSE(new_writer.log().fenced());

  Recorder r;
  auto rep = Replica(r);
  ASSERT_TRUE(rep);
  ASSERT_TRUE(rep->WaitUntilApplied(last, absl::Seconds(60)));
  EXPECT_THAT(Snapshot(r.view().List()), ElementsAreArray(Snapshot(new_writer.table().List({}))));
}

// A state larger than a chunk goes out in consecutive chunks: a replica that fell behind finds
// the first from the last and rebuilds from all of them; one reading along applies it once,
// whole; one that starts in the middle of a state skips that state's rest and goes on.
TEST_F(DecisionLogTest, AStateInManyChunksIsAppliedWhole) {
  Writer writer(*client_, "web-1", 1 << 20, /*max_chunk_bytes=*/600);
  writer.Changes(30);
  ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(60)));
  const uint64_t before_state = LastSequence();
  writer.log().PublishState();
  ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(60)));
  const uint64_t chunks = LastSequence() - before_state;
  ASSERT_GT(chunks, 3u);
  writer.Changes(5, /*base=*/100);
  ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(60)));
  const auto table = Snapshot(writer.table().List({}));

  Recorder along;  // from the start: the updates, then the state once, then the updates
  // The position a replica exposes never points inside a state: when the state is applied,
  // it is still the sequence before the state's first chunk.
  absl::Notification started;
  DecisionReplica* a_ptr = nullptr;
  uint64_t position_at_state = 0;
  auto a_or = DecisionReplica::Start(*client_, {.apply = [&](const ReplicatedChange& c) {
    started.WaitForNotification();
    if (c.kind == ReplicatedChange::Kind::kState) {
      position_at_state = a_ptr->applied_through();
    }
    along.Apply(c);
  }});
  ASSERT_TRUE(a_or.ok());
  auto a = *std::move(a_or);
  a_ptr = a.get();
  started.Notify();
  Recorder middle;  // from the middle of the state's chunks
  auto m = Replica(middle, before_state + 2);
  ASSERT_TRUE(a && m);
  ASSERT_TRUE(a->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  ASSERT_TRUE(m->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  EXPECT_EQ(a->states_applied(), 1u);
  EXPECT_EQ(position_at_state, before_state);
  EXPECT_EQ(m->states_applied(), 0u);
  EXPECT_EQ(m->malformed(), 0u);
  EXPECT_THAT(Snapshot(along.view().List()), ElementsAreArray(table));

  PurgeBefore(before_state + 1);  // the updates before the state are gone
  Recorder behind;
  auto b = Replica(behind, /*start_after=*/2);
  ASSERT_TRUE(b);
  ASSERT_TRUE(b->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  EXPECT_EQ(b->fell_behind(), 1u);
  EXPECT_EQ(b->states_applied(), 1u);
  EXPECT_THAT(Snapshot(behind.view().List()), ElementsAreArray(table));
}

// A replica whose consumer is lost in the middle of a state's chunks (its server died, a slow
// consumer, a stall) reads again from the state's first chunk: made again after the chunk it
// last read, it would find the rest of the state without its first chunks and skip it whole,
// and the decisions only the state carried (an overflow's, a rebuild's) would never reach it.
TEST_F(DecisionLogTest, AReplicaLosingItsConsumerInsideAStateReadsTheStateAgain) {
  auto chunk = [](int index, const std::string& ip) {
    palisade::v1::ListDecisionsResponse r;
    Decision* d = r.add_decisions();
    d->set_id(absl::StrCat("d-", ip));
    d->mutable_target()->set_value(ip);
    d->set_active(true);
    return absl::StrCat("S1 web-1:1:state0 ", index, " 2\n", r.SerializeAsString());
  };
  ASSERT_TRUE(
      client_->Publish(kDecisionStateSubject, chunk(1, "192.0.2.1"), "web-1:1:state0:1").ok());
  Recorder r;
  auto rep = DecisionReplica::Start(*client_, {.apply = r.Callback(),
                                                .retry = absl::Milliseconds(50),
                                                .stall = absl::Milliseconds(300)});
  ASSERT_TRUE(rep.ok()) << rep.status();
  // Its consumer delivered the first chunk; then the consumer is gone (as when its server died).
  std::string consumer;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (consumer.empty() && absl::Now() < deadline) {
    jsConsumerInfoList* list = nullptr;
    jsErrCode err = static_cast<jsErrCode>(0);
    if (js_Consumers(&list, client_->jetstream(), kDecisionStream, nullptr, &err) == NATS_OK) {
      for (int i = 0; i < list->Count; ++i) {
        if (list->List[i]->Delivered.Stream >= 1) consumer = list->List[i]->Name;
      }
      jsConsumerInfoList_Destroy(list);
    }
    if (consumer.empty()) absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_FALSE(consumer.empty());
  jsErrCode err = static_cast<jsErrCode>(0);
  ASSERT_EQ(js_DeleteConsumer(client_->jetstream(), kDecisionStream, consumer.c_str(), nullptr,
                              &err),
            NATS_OK);
  ASSERT_TRUE(
      client_->Publish(kDecisionStateSubject, chunk(2, "192.0.2.2"), "web-1:1:state0:2").ok());
  // The replica finds the stream went on without it and makes its consumer again.
  while ((*rep)->resubscribed() == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_GT((*rep)->resubscribed(), 0u);
  ASSERT_TRUE((*rep)->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  EXPECT_EQ((*rep)->states_applied(), 1u);
  EXPECT_THAT(r.seen(), ElementsAreArray({"state 2"}));
  EXPECT_TRUE(r.view().Get("d-192.0.2.1").ok());
  EXPECT_TRUE(r.view().Get("d-192.0.2.2").ok());
}

// Whoever can publish on the log's subjects writes what they like: a replica counts and skips
// what it cannot read (no header, an unknown change, a bad chunk header, a body that is not a
// decision) and goes on with the writer's changes.
TEST_F(DecisionLogTest, AReplicaSkipsAndCountsWhatItCannotRead) {
  for (const auto& [subject, data] : std::vector<std::pair<std::string, std::string>>{
           {kDecisionSubject, "no header"},
           {kDecisionSubject, "U1 revived\n"},
           {kDecisionSubject, "U1 created\n\xff\xff\xff"},
           {kDecisionStateSubject, "S1 id 2 1\n"},
           {kDecisionStateSubject, std::string(300, 'S') + "\n"}}) {
    ASSERT_TRUE(client_->Publish(subject, data, absl::StrCat("junk-", data.size())).ok());
  }
  Writer writer(*client_, "web-1");
  writer.Changes(5);
  ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(60)));
  Recorder r;
  auto rep = Replica(r);
  ASSERT_TRUE(rep);
  ASSERT_TRUE(rep->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  EXPECT_EQ(rep->malformed(), 5u);
  EXPECT_THAT(r.seen(), ElementsAreArray(writer.heard()));
  EXPECT_THAT(Snapshot(r.view().List()), ElementsAreArray(Snapshot(writer.table().List({}))));
}

// A change set of several updates is marked as one (the Palisade-Set header) and handed on
// whole: a mirror hears it in one call, as the writer's listeners did. A set whose writer was
// cut off mid-way is handed on as far as it goes (to a caller waiting for it, and before the
// next message), never held for good; an update with no header is one alone.
TEST_F(DecisionLogTest, AChangeSetIsHandedOnWholeAndOneCutOffAsFarAsItGoes) {
  Writer writer(*client_, "web-1");
  Recorder r;
  auto rep = Replica(r);
  ASSERT_TRUE(rep);
  Decision a = writer.Manual("192.0.2.1", absl::Hours(1));
  Decision b = writer.Manual("192.0.2.2", absl::Hours(1));
  ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(60)));
  const uint64_t unmarked = LastSequence();
  // Published as the writer's set listener would: a's withdrawal and b's extension as one.
  Decision a_ended = *writer.table().Withdraw(a.id());
  Decision b_extended = writer.Manual("192.0.2.2", absl::Hours(2));
  ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(60)));  // heard one by one there
  auto publish = [&](const DecisionUpdate& u, const std::string& set, const std::string& id) {
    natsMsg* msg = nullptr;
    const std::string data = EncodeUpdate(u);
    ASSERT_EQ(natsMsg_Create(&msg, kDecisionSubject, nullptr, data.data(),
                             static_cast<int>(data.size())),
              NATS_OK);
    if (!set.empty()) {
      ASSERT_EQ(natsMsgHeader_Set(msg, kSetHeader, set.c_str()), NATS_OK);
    }
    jsPubAck* pa = nullptr;
    jsPubOptions o;
    jsPubOptions_Init(&o);
    o.MsgId = id.c_str();
    ASSERT_EQ(js_PublishMsg(&pa, client_->jetstream(), msg, &o, nullptr), NATS_OK);
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(msg);
  };
  const DecisionUpdate withdrawn{DecisionChange::kWithdrawn, a_ended};
  const DecisionUpdate extended{DecisionChange::kExtended, b_extended};
  publish(withdrawn, "t:1:set0 1 2", "t1");
  publish(extended, "t:1:set0 2 2", "t2");
  // A set cut off after its first update, at the stream's end: handed on to the caller waiting.
  publish(withdrawn, "t:1:set1 1 3", "t3");
  publish(extended, "t:1:set1 2 3", "t4");
  const uint64_t cut_off = LastSequence();
  ASSERT_TRUE(rep->WaitUntilApplied(cut_off, absl::Seconds(60)));
  EXPECT_EQ(rep->applied_through(), cut_off);
  // Another set cut off, then an update of no set: the set ends before it.
  publish(withdrawn, "t:1:set2 1 2", "t5");
  publish(extended, "", "t6");
  ASSERT_TRUE(rep->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  std::vector<std::string> seen = r.seen();
  ASSERT_GE(seen.size(), unmarked);
  seen.erase(seen.begin(), seen.begin() + static_cast<long>(unmarked));
  const std::string w = Describe(DecisionChange::kWithdrawn, a_ended);
  const std::string x = Describe(DecisionChange::kExtended, b_extended);
  // The writer's own two (unmarked: Listener()), then the sets as published.
  EXPECT_THAT(seen, ElementsAreArray({w, x, absl::StrCat("set [", w, ", ", x, "]"),
                                      absl::StrCat("set [", w, ", ", x, "]"), w, x}));
  EXPECT_EQ(rep->malformed(), 0u);
  EXPECT_EQ(rep->updates_applied(), LastSequence());
}

// The writer marks each change set it hears through SetListener(): a table's replacement (a
// dry-run decision's withdrawal, then the live one) reaches a replica as one set.
TEST_F(DecisionLogTest, TheWritersSetListenerPublishesAChangeSetAsOne) {
  SimulatedClock clock;
  DecisionTable table(clock);
  auto w = DecisionLogWriter::Start(*client_,
                                    {.node_id = "web-1", .state = [&] { return table.List({}); }});
  ASSERT_TRUE(w.ok()) << w.status();
  table.AddSetListener((*w)->SetListener());
  Recorder r;
  auto rep = Replica(r);
  ASSERT_TRUE(rep);
  palisade::v1::DecisionSpec spec;
  spec.set_action(palisade::v1::ACTION_BLOCK);
  *spec.mutable_duration() = ToProtoDuration(absl::Hours(1));
  spec.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
  spec.set_dry_run(true);
  Detection det;
  det.rule_id = "ssh";
  det.kind = palisade::v1::TARGET_KIND_IP;
  det.key = "203.0.113.7";
  det.time = clock.TimeNow();
  const DecisionUpdate dry = table.Apply(det, spec);
  ASSERT_EQ(dry.change, DecisionChange::kCreated);
  palisade::v1::AddDecisionRequest req;
  req.mutable_target()->set_value("203.0.113.7");
  *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
  absl::StatusOr<Decision> manual = table.AddManual(req);
  ASSERT_TRUE(manual.ok()) << manual.status();
  ASSERT_TRUE((*w)->WaitUntilPublished(absl::Seconds(60)));
  ASSERT_TRUE(rep->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  Decision dry_ended = *table.Get(dry.decision.id());
  const std::string replaced =
      absl::StrCat("set [", Describe(DecisionChange::kWithdrawn, dry_ended), ", ",
                   Describe(DecisionChange::kCreated, *manual), "]");
  EXPECT_THAT(r.seen(), ElementsAreArray({Describe(DecisionChange::kCreated, dry.decision),
                                          replaced}));
}

// A change set is the table's whole call: an ingest batch of up to 10,000 detections, or a whole
// expiry sweep. Only the updates on one target that must be heard together (a withdrawal and
// its replacement) are marked as one set; the rest go alone, so a mirror does not hold a whole
// batch's decisions until its last message (its bouncers waiting seconds for them).
TEST_F(DecisionLogTest, AnIngestBatchOfUnrelatedAddressesIsNotHeldAsOneSet) {
  SimulatedClock clock;
  DecisionTable table(clock);
  auto w = DecisionLogWriter::Start(*client_,
                                    {.node_id = "web-1", .state = [&] { return table.List({}); }});
  ASSERT_TRUE(w.ok()) << w.status();
  table.AddSetListener((*w)->SetListener());
  Recorder r;
  auto rep = Replica(r);
  ASSERT_TRUE(rep);
  CompiledRule rule;
  rule.proto.set_id("ssh");
  palisade::v1::DecisionSpec& spec = *rule.proto.mutable_decision();
  spec.set_action(palisade::v1::ACTION_BLOCK);
  *spec.mutable_duration() = ToProtoDuration(absl::Hours(1));
  spec.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
  CompiledRule dry_rule;
  dry_rule.proto = rule.proto;
  dry_rule.proto.set_id("ssh-dry");
  dry_rule.proto.mutable_decision()->set_dry_run(true);
  auto detection = [&](const std::string& ip, const CompiledRule& by) {
    Detection det;
    det.rule_id = by.proto.id();
    det.rule = &by;
    det.kind = palisade::v1::TARGET_KIND_IP;
    det.key = ip;
    det.time = clock.TimeNow();
    return det;
  };
  // Two unrelated addresses in one batch: two updates, each alone.
  std::vector<DecisionUpdate> first =
      table.ApplyAll({detection("192.0.2.1", rule), detection("192.0.2.2", rule)});
  ASSERT_EQ(first.size(), 2u);
  // A dry-run decision on .3, replaced in the next batch by the live rule between two others:
  // its withdrawal and the replacement are one set, the others alone.
  std::vector<DecisionUpdate> dry = table.ApplyAll({detection("192.0.2.3", dry_rule)});
  ASSERT_EQ(dry.size(), 1u);
  std::vector<DecisionUpdate> second =
      table.ApplyAll({detection("192.0.2.4", rule), detection("192.0.2.3", rule),
                      detection("192.0.2.5", rule)});
  ASSERT_EQ(second.size(), 3u);
  ASSERT_EQ(second[1].change, DecisionChange::kCreated);
  ASSERT_NE(second[1].decision.id(), dry[0].decision.id());
  ASSERT_TRUE((*w)->WaitUntilPublished(absl::Seconds(60)));
  ASSERT_TRUE(rep->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  const Decision dry_ended = *table.Get(dry[0].decision.id());
  EXPECT_THAT(r.seen(),
              ElementsAreArray({Describe(DecisionChange::kCreated, first[0].decision),
                                Describe(DecisionChange::kCreated, first[1].decision),
                                Describe(DecisionChange::kCreated, dry[0].decision),
                                Describe(DecisionChange::kCreated, second[0].decision),
                                absl::StrCat("set [",
                                             Describe(DecisionChange::kWithdrawn, dry_ended),
                                             ", ",
                                             Describe(DecisionChange::kCreated,
                                                      second[1].decision),
                                             "]"),
                                Describe(DecisionChange::kCreated, second[2].decision)}));
}

// A burst from one address is its creation, then an extension per detection (a clustered node
// sends full evidence with each): a run of updates on one target, but not one that must be heard
// together. Marked as a set, a mirror held the creation of exactly the attacker's ban until the
// burst's last message.
TEST_F(DecisionLogTest, ABurstOnOneAddressIsNotHeldAsOneSet) {
  SimulatedClock clock;
  DecisionTable table(clock);
  auto w = DecisionLogWriter::Start(*client_,
                                    {.node_id = "web-1", .state = [&] { return table.List({}); }});
  ASSERT_TRUE(w.ok()) << w.status();
  table.AddSetListener((*w)->SetListener());
  Recorder r;
  auto rep = Replica(r);
  ASSERT_TRUE(rep);
  CompiledRule rule;
  rule.proto.set_id("ssh");
  palisade::v1::DecisionSpec& spec = *rule.proto.mutable_decision();
  spec.set_action(palisade::v1::ACTION_BLOCK);
  *spec.mutable_duration() = ToProtoDuration(absl::Hours(1));
  spec.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
  std::vector<Detection> burst;
  for (int i = 0; i < 3; ++i) {
    Detection det;
    det.rule_id = rule.proto.id();
    det.rule = &rule;
    det.kind = palisade::v1::TARGET_KIND_IP;
    det.key = "192.0.2.1";
    det.time = clock.TimeNow() + absl::Seconds(i);
    det.evidence = {absl::StrCat("line ", i)};
    burst.push_back(std::move(det));
  }
  std::vector<DecisionUpdate> updates = table.ApplyAll(burst);
  ASSERT_EQ(updates.size(), 3u);
  ASSERT_EQ(updates[0].change, DecisionChange::kCreated);
  ASSERT_TRUE((*w)->WaitUntilPublished(absl::Seconds(60)));
  ASSERT_TRUE(rep->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  EXPECT_THAT(r.seen(), ElementsAreArray({Describe(updates[0].change, updates[0].decision),
                                          Describe(updates[1].change, updates[1].decision),
                                          Describe(updates[2].change, updates[2].decision)}));
}

// The held set's cap is memory, not wire bytes: an empty evidence line is 2 bytes on the wire
// and a std::string (and a pointer) in memory, ~20x more. Counted on the wire, a set of such
// members held ~20x its cap.
TEST_F(DecisionLogTest, AHeldSetIsBoundedByWhatItHoldsInMemory) {
  Recorder r;
  auto rep = DecisionReplica::Start(*client_, {.apply = r.Callback(),
                                               .retry = absl::Milliseconds(50),
                                               .max_held_set_bytes = size_t{32} << 10});
  ASSERT_TRUE(rep.ok()) << rep.status();
  DecisionUpdate first{DecisionChange::kWithdrawn, Decision()};
  first.decision.set_id("0000000000000001");
  first.decision.mutable_target()->set_value("192.0.2.1");
  for (int i = 0; i < 2000; ++i) first.decision.add_evidence("");
  DecisionUpdate second = first;
  second.change = DecisionChange::kCreated;
  second.decision.set_id("0000000000000002");
  second.decision.set_active(true);
  // Under the cap on the wire (two members of ~4 KB), each over it in memory.
  ASSERT_LT(2 * (first.decision.ByteSizeLong() + 64), size_t{32} << 10);
  ASSERT_GT(first.decision.SpaceUsedLong(), size_t{32} << 10);
  int n = 0;
  for (const DecisionUpdate* u : {&first, &second}) {
    ++n;
    natsMsg* msg = nullptr;
    const std::string data = EncodeUpdate(*u);
    ASSERT_EQ(natsMsg_Create(&msg, kDecisionSubject, nullptr, data.data(),
                             static_cast<int>(data.size())),
              NATS_OK);
    const std::string set = absl::StrCat("t:1:set0 ", n, " 2");
    ASSERT_EQ(natsMsgHeader_Set(msg, kSetHeader, set.c_str()), NATS_OK);
    jsPubAck* pa = nullptr;
    ASSERT_EQ(js_PublishMsg(&pa, client_->jetstream(), msg, nullptr, nullptr), NATS_OK);
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(msg);
  }
  ASSERT_TRUE((*rep)->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  // The first handed on alone once over the cap, the rest of the set after it.
  EXPECT_THAT(r.seen(), ElementsAreArray({Describe(first.change, first.decision),
                                          Describe(second.change, second.decision)}));
}

// A replica whose next sequence was trimmed away says so and rebuilds from the last full state
// (the one a writer publishes on take-over); with no state within reach it waits, saying why,
// until the writer publishes one.
TEST_F(DecisionLogTest, AReplicaFallenBehindRebuildsFromTheLastFullState) {
  Writer writer(*client_, "web-1");
  writer.Changes(20);
  ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(60)));
  const uint64_t before_state = LastSequence();
  writer.log().PublishState();
  writer.Changes(10, /*base=*/100);
  ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(60)));
  EXPECT_EQ(writer.log().states_published(), 1u);
  PurgeBefore(before_state - 5);  // limits trimmed old updates, not the state

  Recorder r;
  auto rep = Replica(r, /*start_after=*/3);  // a node whose view stopped at sequence 3
  ASSERT_TRUE(rep);
  ASSERT_TRUE(rep->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  EXPECT_EQ(rep->fell_behind(), 1u);
  EXPECT_EQ(rep->states_applied(), 1u);
  EXPECT_THAT(Snapshot(r.view().List()), ElementsAreArray(Snapshot(writer.table().List({}))));
  ASSERT_FALSE(r.seen().empty());
  EXPECT_THAT(r.seen()[0], ::testing::StartsWith("state "));

  // Now everything up to the end is gone, the state too, and changes follow.
  PurgeBefore(LastSequence() + 1);
  writer.Changes(5, /*base=*/200);
  ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(60)));
  Recorder late;
  auto behind = Replica(late, /*start_after=*/3);
  ASSERT_TRUE(behind);
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (behind->last_error().find("waiting for the writer") == std::string::npos &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_THAT(behind->last_error(), ::testing::HasSubstr("waiting for the writer"));
  EXPECT_EQ(behind->states_applied(), 0u);
  EXPECT_TRUE(behind->awaiting_state());  // a node taking over does not wait for it
  EXPECT_FALSE(rep->awaiting_state());
  writer.log().PublishState();
  ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(60)));
  ASSERT_TRUE(behind->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  EXPECT_EQ(behind->states_applied(), 1u);
  EXPECT_EQ(behind->last_error(), "");
  EXPECT_FALSE(behind->awaiting_state());
  EXPECT_THAT(Snapshot(late.view().List()), ElementsAreArray(Snapshot(writer.table().List({}))));
  // The replica that followed along sees the later changes and the state, and agrees.
  ASSERT_TRUE(rep->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  EXPECT_THAT(Snapshot(r.view().List()), ElementsAreArray(Snapshot(writer.table().List({}))));
}

// The last state on the stream was cut off (its writer died after its first chunk): it is no
// state to rebuild from. A replica that fell behind says it waits for the next one (a node
// taking over does not wait for it, and publishes that state), rather than start reading three
// messages before the cut-off chunk, as if the state had as many chunks as announced, and read
// on silently with the view missing what fell behind.
TEST_F(DecisionLogTest, AFallenBehindReplicaDoesNotRebuildFromAStateCutOff) {
  Writer writer(*client_, "web-1");
  writer.Changes(20);
  ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(60)));
  writer.log().PublishState();
  writer.Changes(5, /*base=*/100);
  ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(60)));
  const uint64_t before_cut = LastSequence();
  palisade::v1::ListDecisionsResponse chunk;
  *chunk.add_decisions() = writer.table().List({})[0];
  ASSERT_TRUE(client_
                  ->Publish(kDecisionStateSubject,
                            absl::StrCat("S1 web-0:dead:state0 1 3\n", chunk.SerializeAsString()),
                            "web-0:dead:state0:1")
                  .ok());
  PurgeBefore(before_cut - 3);  // what the replica needs next is gone
  Recorder r;
  auto behind = Replica(r, /*start_after=*/1);
  ASSERT_TRUE(behind);
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (!behind->awaiting_state() && behind->applied_through() < before_cut &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE(behind->awaiting_state());
  EXPECT_THAT(behind->last_error(), ::testing::HasSubstr("waiting"));
  EXPECT_EQ(behind->states_applied(), 0u);
  EXPECT_LT(behind->applied_through(), before_cut - 3);
  // The next state (a new writer's take-over) is read, and the view is its table.
  Writer next(*client_, "web-2");
  next.Manual("192.0.2.200", absl::Hours(1));
  next.log().PublishState();
  ASSERT_TRUE(next.log().WaitUntilPublished(absl::Seconds(60)));
  ASSERT_TRUE(behind->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  EXPECT_EQ(behind->states_applied(), 1u);
  EXPECT_FALSE(behind->awaiting_state());
  EXPECT_THAT(Snapshot(r.view().List()), ElementsAreArray(Snapshot(next.table().List({}))));
}

// The writer died while publishing a state: the stream ends with its first chunk. A new
// writer takes over once its replica read the stream's end (wait_applied, as ClusterNode's):
// a state cut off holds nothing to apply, so having read it is having caught up. Waiting
// for it to be applied, the new writer never took over and the cluster had no writer.
TEST_F(DecisionLogTest, ANewWriterTakesOverAfterAStateCutOffAtTheStreamsEnd) {
  {
    Writer former(*client_, "web-1");
    former.Changes(10);
    ASSERT_TRUE(former.log().WaitUntilPublished(absl::Seconds(60)));
  }
  palisade::v1::ListDecisionsResponse chunk;
  Decision* d = chunk.add_decisions();
  d->set_id("d-1");
  ASSERT_TRUE(client_
                  ->Publish(kDecisionStateSubject,
                            absl::StrCat("S1 web-1:dead:state0 1 3\n", chunk.SerializeAsString()),
                            "web-1:dead:state0:1")
                  .ok());
  Recorder r;
  auto rep = Replica(r);
  ASSERT_TRUE(rep);
  absl::StatusOr<std::unique_ptr<DecisionLogWriter>> next = DecisionLogWriter::Start(
      *client_, {.node_id = "web-2",
                 .state = [] { return std::vector<Decision>(); },
                 .retry_min = absl::Milliseconds(20),
                 .retry_max = absl::Milliseconds(200),
                 .wait_applied = [&](uint64_t sequence) {
                   return rep->WaitUntilApplied(sequence, absl::Seconds(1)) ||
                          rep->awaiting_state();
                 }});
  ASSERT_TRUE(next.ok()) << next.status();
  (*next)->PublishState();
  EXPECT_TRUE((*next)->WaitUntilPublished(absl::Seconds(30))) << (*next)->last_error();
  EXPECT_EQ((*next)->states_published(), 1u);
}

// The log stays bounded however many decisions are made: after each state the writer purges
// what came before its previous one. A replica reading along, and one started afresh, both end
// at the writer's table.
TEST_F(DecisionLogTest, TheLogIsCompactedToTwoStatesAndTheUpdatesBetween) {
  SimulatedClock clock;
  DecisionTable table(clock);
  constexpr uint64_t kEvery = 25;
  auto w = DecisionLogWriter::Start(*client_, {.node_id = "web-1",
                                               .state_every = kEvery,
                                               .state = [&] { return table.List({}); },
                                               .retry_min = absl::Milliseconds(20),
                                               .retry_max = absl::Milliseconds(200)});
  ASSERT_TRUE(w.ok()) << w.status();
  table.AddListener((*w)->Listener());
  Recorder along;
  auto rep = Replica(along);
  ASSERT_TRUE(rep);
  // Six rounds of 50 bans, each published before the next: a state (queued once 25 updates
  // were published; one waiting at a time) goes out between rounds.
  constexpr int kRound = 50;
  for (int i = 0; i < 6 * kRound; ++i) {
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_value(absl::StrCat("198.51.", i / 250, ".", i % 250 + 1));
    *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
    req.set_reason("operator");
    ASSERT_TRUE(table.AddManual(req).ok());
    if ((i + 1) % kRound == 0) {
      ASSERT_TRUE((*w)->WaitUntilPublished(absl::Seconds(60))) << (*w)->last_error();
    }
  }
  (*w)->PublishState();
  ASSERT_TRUE((*w)->WaitUntilPublished(absl::Seconds(60))) << (*w)->last_error();
  EXPECT_GE((*w)->states_published(), 6u);
  EXPECT_EQ((*w)->compactions(), (*w)->states_published() - 1);
  absl::StatusOr<NatsClient::StreamState> st = client_->State(kDecisionStream);
  ASSERT_TRUE(st.ok()) << st.status();
  // Two states (one chunk each here) and the updates between them, not 300 updates.
  EXPECT_LE(st->messages, kRound + 2);
  EXPECT_EQ(st->last_sequence, 6 * kRound + (*w)->states_published());
  const auto want = Snapshot(table.List({}));
  ASSERT_TRUE(rep->WaitUntilApplied(st->last_sequence, absl::Seconds(60)));
  EXPECT_THAT(Snapshot(along.view().List()), ElementsAreArray(want));
  Recorder fresh;
  auto late = Replica(fresh);
  ASSERT_TRUE(late);
  ASSERT_TRUE(late->WaitUntilApplied(st->last_sequence, absl::Seconds(60)));
  EXPECT_THAT(Snapshot(fresh.view().List()), ElementsAreArray(want));
  // A node starting afresh reads from the older state: it has not fallen behind.
  EXPECT_EQ(late->fell_behind(), 0u);
  EXPECT_EQ(late->last_error(), "");
  ASSERT_FALSE(fresh.seen().empty());
  EXPECT_THAT(fresh.seen()[0], ::testing::StartsWith("state "));
}

// While NATS is away the writer's queue overflows: it drops what waits (counted) and publishes a
// full state in its place when NATS is back, so replicas still end at the writer's table.
TEST_F(DecisionLogTest, AnOverflowedWriterPublishesAFullStateInstead) {
  Writer writer(*client_, "web-1", /*max_queued_bytes=*/4096);
  Recorder r;
  auto other = Connect();
  auto rep = Replica(r, 0, other.get());
  ASSERT_TRUE(rep);
  writer.Changes(5);
  ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(60)));
  server_->Kill();
  writer.Changes(60, /*base=*/100);
  EXPECT_GT(writer.log().dropped(), 0u);
  EXPECT_LE(writer.log().queued_bytes(), 4096u);
  ASSERT_TRUE(server_->Restart().ok());
  ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(60)));
  EXPECT_GE(writer.log().states_published(), 1u);
  ASSERT_TRUE(rep->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  EXPECT_THAT(Snapshot(r.view().List()), ElementsAreArray(Snapshot(writer.table().List({}))));
}

// A decision as the engine may give one: 100 evidence lines of 10.5 KB (engine.max_evidence
// 100, max_evidence_bytes 1 MiB), over NATS' payload limit (1 MiB) once serialized.
Decision Oversized(const std::string& id) {
  Decision d;
  d.set_id(id);
  d.mutable_target()->set_value("203.0.113.50");
  d.set_active(true);
  d.set_offence(2);
  for (int i = 0; i < 100; ++i) {
    // Two-byte characters: a line cut inside one would not parse on the replicas.
    std::string line(10'000, static_cast<char>('a' + i % 26));
    for (int j = 0; j < 250; ++j) line += "\xc3\xa9";  // é
    d.add_evidence(std::move(line));
  }
  return d;
}

DecisionUpdate Created(Decision d) {
  DecisionUpdate u;
  u.change = DecisionChange::kCreated;
  u.decision = std::move(d);
  return u;
}

// A decision over NATS' payload limit is published with its evidence cut to fit (every line
// kept, each cut marked as the engine marks its own cuts), and the next one follows. It was
// sent again for ever and the log published nothing more (an overflow kept it at the front).
TEST_F(DecisionLogTest, AnOversizedDecisionIsCutToFitAndDoesNotBlockTheNext) {
  Writer writer(*client_, "web-1", /*max_queued_bytes=*/8 << 20);
  Recorder r;
  auto rep = Replica(r);
  ASSERT_TRUE(rep);
  const Decision big = Oversized("big");
  ASSERT_GT(static_cast<int64_t>(big.ByteSizeLong()),
            natsConnection_GetMaxPayload(client_->connection()));
  Decision small;
  small.set_id("small");
  small.mutable_target()->set_value("203.0.113.51");
  small.set_active(true);
  ASSERT_TRUE(writer.log().Enqueue(Created(big)));
  ASSERT_TRUE(writer.log().Enqueue(Created(small)));
  ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(60)))
      << "published " << writer.log().published() << ": " << writer.log().last_error();
  EXPECT_EQ(writer.log().published(), 2u);
  EXPECT_EQ(writer.log().evidence_cut(), 1u);
  EXPECT_EQ(writer.log().refused(), 0u);
  ASSERT_TRUE(rep->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  absl::StatusOr<Decision> got = r.view().Get("big");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->offence(), 2u);
  ASSERT_EQ(got->evidence_size(), 100);
  for (const std::string& line : got->evidence()) {
    EXPECT_THAT(line, ::testing::EndsWith(" bytes cut]"));
    EXPECT_LT(line.size(), big.evidence(0).size());
  }
  EXPECT_TRUE(r.view().Get("small").ok());
  EXPECT_EQ(rep->malformed(), 0u);
}

// One that no cut of its evidence can fit (a reason over the limit: nothing bounds a manual
// ban's) is refused for good: skipped and counted, the next one follows. So is such a decision
// in a full state, whose other decisions are published (the oversized one cut to fit).
TEST_F(DecisionLogTest, ADecisionThatCannotFitIsSkippedAndCountedAndTheRestFollow) {
  Decision huge;
  huge.set_id("huge");
  huge.mutable_target()->set_value("203.0.113.52");
  huge.set_active(true);
  huge.set_reason(std::string(2 << 20, 'r'));
  Decision small;
  small.set_id("small");
  small.mutable_target()->set_value("203.0.113.51");
  small.set_active(true);
  const std::vector<Decision> state = {Oversized("big"), huge, small};
  auto w = DecisionLogWriter::Start(*client_, {.node_id = "web-1",
                                               .max_queued_bytes = 8 << 20,
                                               .state = [&] { return state; },
                                               .retry_min = absl::Milliseconds(20),
                                               .retry_max = absl::Milliseconds(200)});
  ASSERT_TRUE(w.ok()) << w.status();
  Recorder r;
  auto rep = Replica(r);
  ASSERT_TRUE(rep);
  ASSERT_TRUE((*w)->Enqueue(Created(huge)));
  ASSERT_TRUE((*w)->Enqueue(Created(small)));
  ASSERT_TRUE((*w)->WaitUntilPublished(absl::Seconds(60))) << (*w)->last_error();
  EXPECT_EQ((*w)->published(), 1u);
  EXPECT_EQ((*w)->refused(), 1u);
  (*w)->PublishState();
  ASSERT_TRUE((*w)->WaitUntilPublished(absl::Seconds(60))) << (*w)->last_error();
  EXPECT_EQ((*w)->states_published(), 1u);
  EXPECT_EQ((*w)->refused(), 2u);
  ASSERT_TRUE(rep->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  EXPECT_THAT(r.seen(), ElementsAreArray({"created small 0 1", "state 2"}));
  ASSERT_TRUE(r.view().Get("big").ok());
  EXPECT_EQ(r.view().Get("big")->evidence_size(), 100);
  EXPECT_FALSE(r.view().Get("huge").ok());
}

// The edge hears a writer's change only once the log holds it (options.published): while NATS
// is away nothing is heard, however long it waits; when it is back each change is heard once,
// in the table's order, its token secret with it.
TEST_F(DecisionLogTest, TheEdgeHearsAChangeOnlyOnceTheLogHoldsIt) {
  SimulatedClock clock;
  DecisionTable table(clock);
  absl::Mutex mu;
  std::vector<std::string> heard;
  auto w = DecisionLogWriter::Start(
      *client_, {.node_id = "web-1",
                 .state = [&] { return table.List({}); },
                 .retry_min = absl::Milliseconds(20),
                 .retry_max = absl::Milliseconds(200),
                 .published = [&](const DecisionUpdate& u) {
                   absl::MutexLock lock(&mu);
                   heard.push_back(Describe(u.change, u.decision));
                 }});
  ASSERT_TRUE(w.ok()) << w.status();
  std::vector<std::string> made;
  table.AddListener([&](const DecisionUpdate& u) {
    if (u.change != DecisionChange::kStale) made.push_back(Describe(u.change, u.decision));
  });
  table.AddListener((*w)->Listener());
  auto ban = [&](const std::string& ip) {
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_value(ip);
    *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
    req.set_reason("operator");
    absl::StatusOr<Decision> d = table.AddManual(req);
    ASSERT_TRUE(d.ok()) << d.status();
  };
  server_->Kill();
  ban("192.0.2.1");
  ban("192.0.2.2");
  EXPECT_FALSE((*w)->WaitUntilPublished(absl::Seconds(1)));
  {
    absl::MutexLock lock(&mu);
    EXPECT_TRUE(heard.empty()) << "the edge heard a change the log does not hold";
  }
  ASSERT_TRUE(server_->Restart().ok());
  ASSERT_TRUE((*w)->WaitUntilPublished(absl::Seconds(60))) << (*w)->last_error();
  absl::MutexLock lock(&mu);
  ASSERT_EQ(made.size(), 2u);
  EXPECT_THAT(heard, ElementsAreArray(made));
}

// A take-over races the former writer's last words: it appends after the new writer read the
// stream's end. The new writer's state is then taken again once the node's table holds them
// (options.wait_applied), so they are not erased under it; the former writer is fenced.
TEST_F(DecisionLogTest, ATakeOverStateHoldsWhatTheFormerWriterAppendedMeanwhile) {
  Writer old_writer(*client_, "web-1");
  old_writer.Changes(5);
  ASSERT_TRUE(old_writer.log().WaitUntilPublished(absl::Seconds(60)));
  // The new writer's node: its table mirrors the log until its writer took over (as
  // ClusterNode does), through its own replica.
  SimulatedClock clock;
  DecisionTable table(clock);
  std::atomic<DecisionLogWriter*> writer{nullptr};
  auto rep = DecisionReplica::Start(
      *client_, {.apply = [&](const ReplicatedChange& c) {
        DecisionLogWriter* w = writer.load();
        if (w != nullptr && w->took_over()) return;
        if (c.kind == ReplicatedChange::Kind::kState) {
          table.MirrorState(c.state);
        } else {
          table.Mirror(c.change, c.decision);
        }
      }});
  ASSERT_TRUE(rep.ok()) << rep.status();
  ASSERT_TRUE((*rep)->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  int states_taken = 0;
  Decision last_words;
  auto w = DecisionLogWriter::Start(
      *client_,
      {.node_id = "web-2",
       .state =
           [&] {
             std::vector<Decision> taken = table.List({});
             if (states_taken++ == 0) {
               // The race, made certain: the former writer's change lands just after the
               // state was taken.
               last_words = old_writer.Manual("192.0.2.99", absl::Hours(1));
               EXPECT_TRUE(old_writer.log().WaitUntilPublished(absl::Seconds(60)));
             }
             return taken;
           },
       .retry_min = absl::Milliseconds(20),
       .retry_max = absl::Milliseconds(200),
       .wait_applied =
           [&](uint64_t sequence) {
             return (*rep)->WaitUntilApplied(sequence, absl::Seconds(60));
           }});
  ASSERT_TRUE(w.ok()) << w.status();
  writer.store(w->get());
  (*w)->PublishState();
  ASSERT_TRUE((*w)->WaitUntilPublished(absl::Seconds(60))) << (*w)->last_error();
  EXPECT_EQ(states_taken, 2);
  ASSERT_FALSE(last_words.id().empty());
  // Every replica ends with the former writer's last words, active.
  Recorder r;
  auto fresh = Replica(r);
  ASSERT_TRUE(fresh);
  ASSERT_TRUE(fresh->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  absl::StatusOr<Decision> got = r.view().Get(last_words.id());
  ASSERT_TRUE(got.ok()) << "the take-over state erased the former writer's last change";
  EXPECT_TRUE(got->active());
  EXPECT_THAT(Snapshot(r.view().List(true)), ElementsAreArray(Snapshot(table.List({.active_only = true}))));
  // The former writer appends no more.
  old_writer.Manual("192.0.2.100", absl::Hours(1));
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (!old_writer.log().fenced() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_TRUE(old_writer.log().fenced());
}

// A forged chunk of a full state: "S1 <id> <i> <n>\n" and `decisions` decisions whose reason is
// `reason_bytes` of "Z" (a payload no refusal may repeat).
std::string ForgedChunk(const std::string& id, int i, int n, int decisions, size_t reason_bytes) {
  palisade::v1::ListDecisionsResponse chunk;
  for (int k = 0; k < decisions; ++k) {
    Decision* d = chunk.add_decisions();
    d->set_id(absl::StrCat("forged-", i, "-", k));
    d->mutable_target()->set_value("203.0.113.66");
    d->set_reason(std::string(reason_bytes, 'Z'));
  }
  return absl::StrCat("S1 ", id, " ", i, " ", n, "\n", chunk.SerializeAsString());
}

// A replica with small bounds on the state it holds while reading one, on a simulated clock,
// its log lines kept.
class PendingStateTest : public DecisionLogTest {
 protected:
  static constexpr size_t kMaxBytes = 256 << 10;
  static constexpr size_t kMaxDecisions = 1000;
  static constexpr absl::Duration kMaxAge = absl::Minutes(2);

  void StartReplica() {
    auto rep = DecisionReplica::Start(*client_, {.apply = recorder_.Callback(),
                                                 .retry = absl::Milliseconds(50),
                                                 .max_pending_state_bytes = kMaxBytes,
                                                 .max_pending_state_decisions = kMaxDecisions,
                                                 .max_pending_state_age = kMaxAge,
                                                 .clock = &clock_,
                                                 .log = [this](const std::string& line) {
                                                   absl::MutexLock lock(&mu_);
                                                   logged_.push_back(line);
                                                 }});
    ASSERT_TRUE(rep.ok()) << rep.status();
    replica_ = *std::move(rep);
  }
  // Publishes `data` on the state subject and waits until the replica read it.
  void PublishState(const std::string& data, const std::string& id) {
    absl::StatusOr<NatsClient::Ack> ack = client_->Publish(kDecisionStateSubject, data, id);
    ASSERT_TRUE(ack.ok()) << ack.status();
    ASSERT_TRUE(replica_->WaitUntilApplied(ack->sequence, absl::Seconds(60)));
  }
  // Waits (for the replica's thread, at most a minute) until `n` states were dropped.
  bool WaitUntilDropped(uint64_t n) {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (replica_->pending_states_dropped() < n && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    return replica_->pending_states_dropped() >= n;
  }
  // Neither the refusal nor any log line repeats a forged state's content or id.
  void ExpectNoPayloadRepeated() {
    EXPECT_THAT(replica_->last_refusal(), ::testing::Not(::testing::HasSubstr("ZZZZ")));
    EXPECT_THAT(replica_->last_refusal(), ::testing::Not(::testing::HasSubstr("forged")));
    absl::MutexLock lock(&mu_);
    for (const std::string& line : logged_) {
      EXPECT_THAT(line, ::testing::Not(::testing::HasSubstr("ZZZZ")));
      EXPECT_THAT(line, ::testing::Not(::testing::HasSubstr("forged")));
    }
  }
  size_t logged() {
    absl::MutexLock lock(&mu_);
    return logged_.size();
  }

  SimulatedClock clock_;
  Recorder recorder_;
  std::unique_ptr<DecisionReplica> replica_;
  absl::Mutex mu_;
  std::vector<std::string> logged_ ABSL_GUARDED_BY(mu_);
};

// Anyone who can publish on palisade.decisions.state starts states that never end: the
// replica holds at most its bounds in bytes and in decisions, drops each such state with a
// reason (never its content), and a real state still applies afterwards.
TEST_F(PendingStateTest, AForgedStateThatNeverEndsIsBoundedAndARealStateStillApplies) {
  StartReplica();
  // 40 chunks of 16 KiB (of a state of 1000): 640 KiB if held.
  size_t most = 0;
  for (int i = 1; i <= 40; ++i) {
    PublishState(ForgedChunk("forged-a", i, 1000, 1, 16 << 10), absl::StrCat("forged-a:", i));
    most = std::max(most, replica_->pending_state_bytes());
  }
  EXPECT_LE(most, kMaxBytes);
  EXPECT_GT(most, kMaxBytes / 2);  // the bound is what stopped it
  EXPECT_EQ(replica_->pending_states_dropped(), 1u);
  EXPECT_THAT(replica_->last_refusal(), ::testing::HasSubstr("bytes"));
  // 10 chunks of 400 small decisions: 4,000 if held.
  size_t most_decisions = 0;
  for (int i = 1; i <= 10; ++i) {
    PublishState(ForgedChunk("forged-b", i, 1000, 400, 4), absl::StrCat("forged-b:", i));
    most_decisions = std::max(most_decisions, replica_->pending_state_decisions());
  }
  EXPECT_LE(most_decisions, kMaxDecisions);
  EXPECT_EQ(replica_->pending_states_dropped(), 2u);
  EXPECT_THAT(replica_->last_refusal(), ::testing::HasSubstr("decisions"));
  EXPECT_EQ(logged(), 2u);
  ExpectNoPayloadRepeated();
  EXPECT_EQ(replica_->states_applied(), 0u);

  // The writer's state still applies, and the view is its table.
  Writer writer(*client_, "web-1");
  writer.Manual("192.0.2.10", absl::Hours(1));
  writer.Manual("192.0.2.11", absl::Hours(1));
  writer.log().PublishState();
  ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(60))) << writer.log().last_error();
  ASSERT_TRUE(replica_->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  EXPECT_EQ(replica_->states_applied(), 1u);
  EXPECT_EQ(replica_->pending_state_bytes(), 0u);
  EXPECT_THAT(Snapshot(recorder_.view().List()),
              ElementsAreArray(Snapshot(writer.table().List({}))));
}

// A state whose next chunk does not come within max_pending_state_age is dropped (on the
// clock); one whose next chunk comes after that (a writer's, NATS away mid-publish) is read
// again from its first chunk and applied whole.
TEST_F(PendingStateTest, AnIncompleteStateWaitsAtMostItsAge) {
  StartReplica();
  PublishState(ForgedChunk("forged-c", 1, 2, 1, 1024), "forged-c:1");
  EXPECT_GT(replica_->pending_state_bytes(), 0u);
  clock_.Advance(kMaxAge - absl::Seconds(1));
  absl::SleepFor(absl::Milliseconds(500));  // the replica's idle checks see it younger
  EXPECT_EQ(replica_->pending_states_dropped(), 0u);
  clock_.Advance(absl::Seconds(2));
  ASSERT_TRUE(WaitUntilDropped(1));
  EXPECT_EQ(replica_->pending_state_bytes(), 0u);
  EXPECT_THAT(replica_->last_refusal(), ::testing::HasSubstr("waited"));
  ExpectNoPayloadRepeated();

  // A writer's state cut by a pause longer than the age.
  palisade::v1::ListDecisionsResponse first, second;
  first.add_decisions()->set_id("a-1");
  second.add_decisions()->set_id("b-1");
  PublishState(absl::StrCat("S1 web-1:1:state0 1 2\n", first.SerializeAsString()),
               "web-1:1:state0:1");
  clock_.Advance(kMaxAge + absl::Seconds(1));
  ASSERT_TRUE(WaitUntilDropped(2));
  PublishState(absl::StrCat("S1 web-1:1:state0 2 2\n", second.SerializeAsString()),
               "web-1:1:state0:2");
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (replica_->states_applied() == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(replica_->states_applied(), 1u);
  EXPECT_TRUE(recorder_.view().Get("a-1").ok());
  EXPECT_TRUE(recorder_.view().Get("b-1").ok());
  EXPECT_EQ(recorder_.view().List().size(), 2u);
}

// Three NATS servers, the log replicated on all three: one is killed (-9) while the writer
// publishes; the replica sees every change once, in order.
TEST(DecisionLogClusterTest, AServerKilledMidStreamLosesNothing) {
  auto servers = NatsServerForTests::StartCluster();
  ASSERT_TRUE(servers.ok()) << servers.status();
  const std::vector<std::string> urls = UrlsOf(*servers);
  auto client = NatsClient::Connect({.servers = urls, .timeout = absl::Seconds(5)});
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE(EnsureStreamOnceElected(**client, DecisionLogStreamSpec(3)).ok());
  // The replica reads through the last server, which stays.
  auto reader = NatsClient::Connect({.servers = {urls[2]}, .timeout = absl::Seconds(5)});
  ASSERT_TRUE(reader.ok()) << reader.status();
  Writer writer(**client, "web-1");
  Recorder r;
  auto rep = DecisionReplica::Start(**reader, {.apply = r.Callback()});
  ASSERT_TRUE(rep.ok()) << rep.status();
  writer.Changes(30);
  ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(60)));
  (*servers)[0]->Kill();
  const absl::Time killed = absl::Now();
  writer.Changes(60, /*base=*/100);
  ASSERT_TRUE(writer.log().WaitUntilPublished(absl::Seconds(120)));
  const absl::Time published = absl::Now();
  EXPECT_EQ(writer.log().dropped(), 0u);
  const std::vector<std::string> heard = writer.heard();
  ASSERT_TRUE((*rep)->WaitUntilApplied(heard.size(), absl::Seconds(120))) << (*rep)->last_error();
  // For the reader of the log: where the time went (elections, a consumer made again).
  std::cerr << "publishing after the kill took " << (published - killed)
            << ", the replica caught up " << (absl::Now() - published)
            << " later; consumers made again: " << (*rep)->resubscribed() << "\n";
  EXPECT_THAT(r.seen(), ElementsAreArray(heard));
  EXPECT_THAT(Snapshot(r.view().List()), ElementsAreArray(Snapshot(writer.table().List({}))));
}

// A target's waiting claims go through the log as they are; a message that is not one (or
// carries a time no Timestamp holds) is refused.
TEST(WaitingClaimsMessage, RoundTripsAndRefusesWhatIsNotOne) {
  WaitingClaims w{"192.0.2.7", "00000000000000aa", {}};
  w.claims.push_back({w.target, w.decision_id, palisade::v1::ORIGIN_RULE,
                      palisade::v1::ACTION_CHALLENGE, palisade::v1::ACTUATOR_ACCESS_RULE, true,
                      absl::FromUnixSeconds(1'700'000'000), "probe", "the last probe", 3});
  WaitingClaims back;
  ASSERT_TRUE(DecodeWaiting(EncodeWaiting(w), &back));
  EXPECT_EQ(back.target, w.target);
  EXPECT_EQ(back.decision_id, w.decision_id);
  ASSERT_EQ(back.claims.size(), 1u);
  const WaitingClaimRow& c = back.claims[0];
  EXPECT_EQ(c.target, w.target);
  EXPECT_EQ(c.decision_id, w.decision_id);
  EXPECT_EQ(c.origin, palisade::v1::ORIGIN_RULE);
  EXPECT_EQ(c.action, palisade::v1::ACTION_CHALLENGE);
  EXPECT_EQ(c.actuator, palisade::v1::ACTUATOR_ACCESS_RULE);
  EXPECT_TRUE(c.dry_run);
  EXPECT_EQ(c.expiry, absl::FromUnixSeconds(1'700'000'000));
  EXPECT_EQ(c.rule_id, "probe");
  EXPECT_EQ(c.reason, "the last probe");
  EXPECT_EQ(c.offence, 3u);
  // None waiting: the snapshot still names its target.
  ASSERT_TRUE(DecodeWaiting(EncodeWaiting({"192.0.2.8", "", {}}), &back));
  EXPECT_EQ(back.target, "192.0.2.8");
  EXPECT_TRUE(back.claims.empty());
  EXPECT_FALSE(DecodeWaiting("W1\n", &back));  // no target
  EXPECT_FALSE(DecodeWaiting(EncodeUpdate({DecisionChange::kCreated, {}}), &back));
  w.claims[0].expiry = absl::InfiniteFuture();
  std::string forged = EncodeWaiting(w);
  EXPECT_FALSE(DecodeWaiting(forged, &back));
}

// A full state's waiting-claims snapshots (one message per target) end with a closing message:
// a mirror drops the claims it held only for targets none named, and only once it comes (a
// writer dying between the state and its last snapshot leaves the mirrors' claims as they were).
TEST_F(DecisionLogTest, AStatesWaitingSnapshotsAreFollowedByTheirEnd) {
  SimulatedClock clock;
  DecisionTable table(clock);
  WaitingClaims w{"192.0.2.7", "00000000000000aa", {}};
  w.claims.push_back({w.target, w.decision_id, palisade::v1::ORIGIN_RULE,
                      palisade::v1::ACTION_CHALLENGE, palisade::v1::ACTUATOR_ACCESS_RULE, false,
                      absl::FromUnixSeconds(1'700'000'000), "probe", "the last probe", 1});
  auto log = DecisionLogWriter::Start(
      *client_, {.node_id = "web-1",
                 .state = [&] { return table.List({}); },
                 .waiting = [&] { return std::vector<WaitingClaims>{w}; },
                 .retry_min = absl::Milliseconds(20),
                 .retry_max = absl::Milliseconds(200)});
  ASSERT_TRUE(log.ok()) << log.status();
  Recorder r;
  auto rep = Replica(r);
  ASSERT_TRUE(rep);
  (*log)->PublishState();
  ASSERT_TRUE((*log)->WaitUntilPublished(absl::Seconds(60)));
  ASSERT_TRUE(rep->WaitUntilApplied(LastSequence(), absl::Seconds(60)));
  EXPECT_THAT(r.seen(), ::testing::ElementsAre("state 0", "waiting 192.0.2.7 1", "waiting end"));
  EXPECT_EQ(rep->malformed(), 0u);
}

// What a forged snapshot can make a mirror hold is bounded: claims of kinds that do not exist,
// more claims than there are kinds, or texts over the bound are refused.
TEST(WaitingClaimsMessage, RefusesClaimsNoWriterMakes) {
  WaitingClaims w{"192.0.2.7", "00000000000000aa", {}};
  const WaitingClaimRow row{w.target, w.decision_id, palisade::v1::ORIGIN_RULE,
                            palisade::v1::ACTION_BLOCK, palisade::v1::ACTUATOR_ACCESS_RULE, false,
                            absl::FromUnixSeconds(1'700'000'000), "probe", "why", 1};
  WaitingClaims back;
  const auto with = [&](auto change) {
    WaitingClaims f = w;
    f.claims.push_back(row);
    change(f.claims.back());
    return EncodeWaiting(f);
  };
  ASSERT_TRUE(DecodeWaiting(with([](WaitingClaimRow&) {}), &back));
  EXPECT_FALSE(DecodeWaiting(with([](WaitingClaimRow& c) { c.action = 0; }), &back));
  EXPECT_FALSE(DecodeWaiting(with([](WaitingClaimRow& c) { c.action = 4711; }), &back));
  EXPECT_FALSE(DecodeWaiting(with([](WaitingClaimRow& c) { c.actuator = 0; }), &back));
  EXPECT_FALSE(DecodeWaiting(with([](WaitingClaimRow& c) { c.actuator = 4711; }), &back));
  EXPECT_FALSE(DecodeWaiting(with([](WaitingClaimRow& c) { c.origin = 0; }), &back));
  // Texts: cut to the bound when encoded, refused over it when decoded.
  ASSERT_TRUE(DecodeWaiting(
      with([](WaitingClaimRow& c) { c.reason = std::string(100'000, 'r'); }), &back));
  ASSERT_EQ(back.claims.size(), 1u);
  EXPECT_LT(back.claims[0].reason.size(), 100'000u);
  palisade::v1::ListDecisionsResponse m;
  m.add_decisions()->mutable_target()->set_value(w.target);
  palisade::v1::Decision* d = m.add_decisions();
  d->set_origin(palisade::v1::ORIGIN_RULE);
  d->set_action(palisade::v1::ACTION_BLOCK);
  d->set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
  d->set_rule_id(std::string(100'000, 'x'));
  EXPECT_FALSE(DecodeWaiting(absl::StrCat("W1\n", m.SerializeAsString()), &back));
  // Many claims: more than the kinds of claim there are.
  WaitingClaims many = w;
  for (int i = 0; i < 50'000; ++i) many.claims.push_back(row);
  EXPECT_FALSE(DecodeWaiting(EncodeWaiting(many), &back));
}

// The view keeps the writer's waiting-claims snapshots as a mirror's table would (for a node
// stepping down, whose replica read them while it wrote): a state marks those held stale, a
// snapshot replaces its target's, and the end drops the ones not named again. Complete only
// once a state's snapshots ended.
TEST(DecisionViewWaiting, FollowsTheWritersSnapshotsFromStateToEnd) {
  const auto decision = [](const std::string& id, const std::string& target) {
    Decision d;
    d.set_id(id);
    d.mutable_target()->set_value(target);
    d.set_active(true);
    return d;
  };
  const auto snapshot = [](const std::string& target, const std::string& id) {
    WaitingClaims w{target, id, {}};
    w.claims.push_back({target, id, palisade::v1::ORIGIN_RULE, palisade::v1::ACTION_CHALLENGE,
                        palisade::v1::ACTUATOR_ACCESS_RULE, false,
                        absl::FromUnixSeconds(4'000'000'000), "probe", "", 0});
    return w;
  };
  const auto targets = [](const std::vector<WaitingClaims>& ws) {
    std::set<std::string> out;
    for (const WaitingClaims& w : ws) out.insert(w.target);
    return out;
  };
  DecisionView view;
  ReplicatedChange state;
  state.kind = ReplicatedChange::Kind::kState;
  state.state = {decision("a", "192.0.2.1"), decision("b", "192.0.2.2")};
  ReplicatedChange waiting;
  waiting.kind = ReplicatedChange::Kind::kWaiting;
  ReplicatedChange end;
  end.kind = ReplicatedChange::Kind::kWaitingEnd;
  bool complete = true;
  EXPECT_TRUE(view.Waiting(&complete).empty());
  EXPECT_FALSE(complete) << "no state's snapshots read yet";

  view.Apply(state);
  waiting.waiting = snapshot("192.0.2.1", "a");
  view.Apply(waiting);
  waiting.waiting = snapshot("192.0.2.2", "b");
  view.Apply(waiting);
  waiting.waiting = snapshot("192.0.2.9", "a");  // not its target's decision: not kept
  view.Apply(waiting);
  EXPECT_EQ(targets(view.Waiting(&complete)), (std::set<std::string>{"192.0.2.1", "192.0.2.2"}));
  EXPECT_FALSE(complete) << "the state's snapshots have not ended";
  view.Apply(end);
  view.Waiting(&complete);
  EXPECT_TRUE(complete);

  // The next state names 192.0.2.2 only: 192.0.2.1's is stale from the state, gone at the end.
  view.Apply(state);
  waiting.waiting = snapshot("192.0.2.2", "b");
  view.Apply(waiting);
  EXPECT_EQ(targets(view.Waiting(&complete)), (std::set<std::string>{"192.0.2.2"}));
  EXPECT_FALSE(complete);
  view.Apply(end);
  EXPECT_EQ(targets(view.Waiting(&complete)), (std::set<std::string>{"192.0.2.2"}));
  EXPECT_TRUE(complete);
  // An empty snapshot: none wait there any more.
  waiting.waiting = WaitingClaims{"192.0.2.2", "", {}};
  view.Apply(waiting);
  EXPECT_TRUE(view.Waiting(&complete).empty());
}

namespace view_waiting {

Decision ActiveDecision(const std::string& id, const std::string& target) {
  Decision d;
  d.set_id(id);
  d.mutable_target()->set_value(target);
  d.set_active(true);
  return d;
}

// One claim behind `id` on `target`, with a reason of `reason_bytes`.
WaitingClaims Snapshot(const std::string& target, const std::string& id, size_t reason_bytes = 0,
                       palisade::v1::Action action = palisade::v1::ACTION_CHALLENGE) {
  WaitingClaims w{target, id, {}};
  w.claims.push_back({target, id, palisade::v1::ORIGIN_RULE, action,
                      palisade::v1::ACTUATOR_ACCESS_RULE, false,
                      absl::FromUnixSeconds(4'000'000'000), "probe",
                      std::string(reason_bytes, 'r'), 0});
  return w;
}

ReplicatedChange StateOf(std::vector<Decision> decisions) {
  ReplicatedChange c;
  c.kind = ReplicatedChange::Kind::kState;
  c.state = std::move(decisions);
  return c;
}

ReplicatedChange WaitingOf(WaitingClaims w) {
  ReplicatedChange c;
  c.kind = ReplicatedChange::Kind::kWaiting;
  c.waiting = std::move(w);
  return c;
}

ReplicatedChange End() {
  ReplicatedChange c;
  c.kind = ReplicatedChange::Kind::kWaitingEnd;
  return c;
}

// Anyone who can publish on the waiting subject can send a maximal snapshot (~220 KB) for every
// active decision: the view holds them under its cap in bytes, and a snapshot refused for it
// makes the view incomplete (a node stepping down then drops none of its own claims), until a
// later state's snapshots end with none refused.
TEST(DecisionViewWaiting, HoldsSnapshotsUnderItsCap) {
  const size_t one = DecisionTable::WaitingBytes(Snapshot("192.0.2.0", "d0", 1024));
  const size_t cap = 3 * one + one / 2;
  DecisionView view(cap);
  std::vector<Decision> decisions;
  for (int i = 0; i < 10; ++i) {
    decisions.push_back(ActiveDecision(absl::StrCat("d", i), absl::StrCat("192.0.2.", i)));
  }
  view.Apply(StateOf(decisions));
  for (int i = 0; i < 10; ++i) {
    view.Apply(WaitingOf(Snapshot(absl::StrCat("192.0.2.", i), absl::StrCat("d", i), 1024)));
  }
  view.Apply(End());
  bool complete = true;
  EXPECT_THAT(view.Waiting(&complete), SizeIs(3));
  EXPECT_LE(view.waiting_bytes(), cap) << "the view held snapshots past its cap";
  EXPECT_FALSE(complete) << "snapshots were refused, yet the view said it held all of them";

  // The next state's snapshots fit: complete again, the ones not named gone.
  view.Apply(StateOf(decisions));
  view.Apply(WaitingOf(Snapshot("192.0.2.5", "d5", 1024)));
  view.Apply(End());
  std::vector<WaitingClaims> held = view.Waiting(&complete);
  ASSERT_THAT(held, SizeIs(1));
  EXPECT_EQ(held[0].target, "192.0.2.5");
  EXPECT_TRUE(complete);
  EXPECT_EQ(view.waiting_bytes(), one);
}

// A snapshot goes when the decision it waits behind ends in the view (an update or a set): it
// outlived its decision until the next state's end.
TEST(DecisionViewWaiting, DropsASnapshotWhenItsDecisionEnds) {
  DecisionView view;
  const Decision a = ActiveDecision("a", "192.0.2.1");
  const Decision b = ActiveDecision("b", "192.0.2.2");
  view.Apply(StateOf({a, b}));
  view.Apply(WaitingOf(Snapshot("192.0.2.1", "a")));
  view.Apply(WaitingOf(Snapshot("192.0.2.2", "b")));
  view.Apply(End());
  bool complete = false;
  ASSERT_THAT(view.Waiting(&complete), SizeIs(2));

  ReplicatedChange expired;
  expired.kind = ReplicatedChange::Kind::kUpdate;
  expired.change = DecisionChange::kExpired;
  expired.decision = a;
  expired.decision.set_active(false);
  view.Apply(expired);
  std::vector<WaitingClaims> held = view.Waiting(&complete);
  ASSERT_THAT(held, SizeIs(1)) << "the snapshot outlived its decision";
  EXPECT_EQ(held[0].target, "192.0.2.2");
  EXPECT_TRUE(complete);

  ReplicatedChange set;
  set.kind = ReplicatedChange::Kind::kSet;
  set.set.push_back({DecisionChange::kWithdrawn, b});
  set.set.back().decision.set_active(false);
  view.Apply(set);
  EXPECT_THAT(view.Waiting(&complete), IsEmpty());
  EXPECT_EQ(view.waiting_bytes(), 0u);
}

// A snapshot's claims of one kind (origin, action, actuator, dry run) are one claim, as a
// table merges them: a forged snapshot of many like claims holds one.
TEST(DecisionViewWaiting, MergesClaimsOfOneKind) {
  DecisionView view;
  view.Apply(StateOf({ActiveDecision("a", "192.0.2.1")}));
  WaitingClaims w = Snapshot("192.0.2.1", "a");
  for (int i = 1; i < 50; ++i) {
    w.claims.push_back(w.claims[0]);
    w.claims.back().expiry += absl::Seconds(i);
  }
  w.claims.push_back(Snapshot("192.0.2.1", "a", 0, palisade::v1::ACTION_RATE_LIMIT).claims[0]);
  view.Apply(WaitingOf(w));
  bool complete = false;
  std::vector<WaitingClaims> held = view.Waiting(&complete);
  ASSERT_THAT(held, SizeIs(1));
  ASSERT_THAT(held[0].claims, SizeIs(2)) << "claims of one kind were held apart";
  EXPECT_EQ(held[0].claims[0].expiry, absl::FromUnixSeconds(4'000'000'000 + 49));
  EXPECT_EQ(held[0].claims[1].action, palisade::v1::ACTION_RATE_LIMIT);
}

// A snapshot's expired claims are skipped before they are merged, as a table skips them
// (DecisionTable::CoverLocked): an expired one last in the snapshot named the merged claim's
// rule and reason.
TEST(DecisionViewWaiting, SkipsExpiredClaimsBeforeMerging) {
  SimulatedClock clock(absl::FromUnixSeconds(3'000'000'000));
  DecisionView view(DecisionTableLimits().max_active_bytes, clock);
  view.Apply(StateOf({ActiveDecision("a", "192.0.2.1"), ActiveDecision("b", "192.0.2.2")}));
  WaitingClaims w = Snapshot("192.0.2.1", "a");  // live
  w.claims[0].rule_id = "live";
  w.claims.push_back(w.claims[0]);
  w.claims.back().expiry = clock.TimeNow();  // expired: of one kind with the live one
  w.claims.back().rule_id = "expired";
  w.claims.back().reason = "old";
  view.Apply(WaitingOf(w));
  WaitingClaims gone = Snapshot("192.0.2.2", "b");
  gone.claims[0].expiry = clock.TimeNow() - absl::Seconds(1);
  view.Apply(WaitingOf(gone));
  bool complete = false;
  std::vector<WaitingClaims> held = view.Waiting(&complete);
  ASSERT_THAT(held, SizeIs(1)) << "a snapshot of expired claims only was held";
  ASSERT_THAT(held[0].claims, SizeIs(1));
  EXPECT_EQ(held[0].claims[0].rule_id, "live") << "an expired claim named the merged one";
  EXPECT_EQ(held[0].claims[0].reason, "");
  EXPECT_EQ(held[0].claims[0].expiry, absl::FromUnixSeconds(4'000'000'000));
}

}  // namespace view_waiting

}  // namespace
}  // namespace palisade::cluster
