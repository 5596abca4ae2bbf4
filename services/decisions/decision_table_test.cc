#include "services/decisions/decision_table.h"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <limits>
#include <set>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/proto_time.h"
#include "services/common/metrics_for_tests.h"
#include "services/common/status_matchers.h"
#include "services/store/sql_for_tests.h"

namespace palisade {
namespace {

// Polls `done` until it holds or `timeout` passes (a wide deadline, not a guess at speed).
bool WaitUntil(const std::function<bool()>& done, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

using ::palisade::testing::IsOk;
using ::palisade::testing::StatusIs;
using ::palisade::v1::Decision;
using ::testing::Each;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

class DecisionTableTest : public ::testing::Test {
 protected:
  DecisionTableTest() : table_(clock_) {
    escalation_.set_factor(2);
    *escalation_.mutable_max_duration() = ToProtoDuration(absl::Hours(5));
    table_.AddListener([this](const DecisionUpdate& u) { changes_.push_back(u.change); });
  }

  Detection Det(absl::string_view ip, absl::Time t) {
    Detection d;
    d.rule_id = "ssh";
    d.key = std::string(ip);
    d.time = t;
    d.evidence = {"line 1", "line 2"};
    return d;
  }
  DecisionUpdate Apply(absl::string_view ip, absl::Time t) {
    palisade::v1::DecisionSpec spec;
    spec.set_action(palisade::v1::ACTION_BLOCK);
    *spec.mutable_duration() = ToProtoDuration(absl::Hours(1));
    *spec.mutable_escalation() = escalation_;
    spec.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
    return table_.Apply(Det(ip, t), spec);
  }

  // Rule "ssh": an hour's block, for detections applied with ApplyAll.
  static CompiledRule SshHourBlockRule() {
    CompiledRule rule;
    rule.proto.set_id("ssh");
    rule.proto.mutable_decision()->set_action(palisade::v1::ACTION_BLOCK);
    *rule.proto.mutable_decision()->mutable_duration() = ToProtoDuration(absl::Hours(1));
    return rule;
  }
  // An hour's block through the access-rule actuator (whose decisions have outbox operations).
  static palisade::v1::DecisionSpec HourBlock() {
    palisade::v1::DecisionSpec spec;
    spec.set_action(palisade::v1::ACTION_BLOCK);
    *spec.mutable_duration() = ToProtoDuration(absl::Hours(1));
    spec.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
    return spec;
  }
  // An empty store named `name` in the test's temporary directory.
  static absl::StatusOr<std::unique_ptr<Store>> FreshStore(absl::string_view name) {
    const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/" + std::string(name);
    std::remove(path.c_str());
    return Store::Open(path);
  }

  SimulatedClock clock_;
  DecisionTable table_;
  palisade::v1::Escalation escalation_;
  std::vector<DecisionChange> changes_;
};

TEST_F(DecisionTableTest, CreatesADecisionThatStartsAtEventTime) {
  absl::Time t = clock_.TimeNow() - absl::Minutes(5);
  DecisionUpdate u = Apply("203.0.113.7", t);
  ASSERT_EQ(u.change, DecisionChange::kCreated);
  EXPECT_EQ(FromProtoTime(u.decision.start()), t);
  EXPECT_EQ(DecisionExpiry(u.decision), t + absl::Hours(1));
  EXPECT_EQ(u.decision.offence(), 1u);
  EXPECT_TRUE(u.decision.active());
  EXPECT_THAT(u.decision.evidence(), SizeIs(2));
  EXPECT_EQ(table_.active_count(), 1u);
  EXPECT_THAT(table_.Get(u.decision.id()), IsOk());
}

TEST_F(DecisionTableTest, ActiveDecisionIsExtendedNotDuplicated) {
  DecisionUpdate first = Apply("203.0.113.7", clock_.TimeNow());
  clock_.Advance(absl::Minutes(30));
  DecisionUpdate second = Apply("203.0.113.7", clock_.TimeNow());
  EXPECT_EQ(second.change, DecisionChange::kExtended);
  EXPECT_EQ(second.decision.id(), first.decision.id());
  EXPECT_EQ(DecisionExpiry(second.decision), clock_.TimeNow() + absl::Hours(1));
  EXPECT_EQ(second.decision.extensions(), 1u);
  EXPECT_THAT(table_.List({}), SizeIs(1));
}

// Ids sort in the order decisions were made, across seconds too: the store's index on them
// then grows at its end instead of taking a page of its own for each creation.
TEST_F(DecisionTableTest, DecisionIdsSortInTheOrderTheyWereMade) {
  std::vector<std::string> ids;
  for (int i = 0; i < 300; ++i) {
    if (i % 100 == 0) clock_.Advance(absl::Seconds(1));
    const DecisionUpdate u =
        Apply(absl::StrCat("198.51.", 100 + i / 250, ".", i % 250), clock_.TimeNow());
    ASSERT_EQ(u.change, DecisionChange::kCreated) << i;
    ASSERT_EQ(u.decision.id().size(), 16u);
    ids.push_back(u.decision.id());
  }
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  EXPECT_EQ(std::adjacent_find(ids.begin(), ids.end()), ids.end());  // none twice
}

// active_count() takes no lock (palisaded's gauge reads it from a listener, on every change):
// it is what the change set a listener hears left, whatever changed the table.
TEST_F(DecisionTableTest, AListenerReadsTheActiveCountItsChangeLeft) {
  std::vector<std::pair<DecisionChange, size_t>> heard;
  table_.AddListener(
      [&](const DecisionUpdate& u) { heard.emplace_back(u.change, table_.active_count()); });
  const DecisionUpdate a = Apply("203.0.113.7", clock_.TimeNow());
  Apply("203.0.113.8", clock_.TimeNow());
  clock_.Advance(absl::Minutes(40));
  Apply("203.0.113.7", clock_.TimeNow());  // extended to 1 h 40 min
  ASSERT_THAT(table_.Withdraw(a.decision.id()), IsOk());
  clock_.Advance(absl::Minutes(30));
  EXPECT_THAT(table_.ExpireDue(), SizeIs(1));  // 203.0.113.8's
  const std::vector<std::pair<DecisionChange, size_t>> want = {
      {DecisionChange::kCreated, 1},   {DecisionChange::kCreated, 2},
      {DecisionChange::kExtended, 2},  {DecisionChange::kWithdrawn, 1},
      {DecisionChange::kExpired, 0}};
  EXPECT_EQ(heard, want);
  EXPECT_EQ(table_.active_count(), 0u);
}

// SetLeanExtensions (palisaded outside a cluster): an extension's update carries the decision
// without its evidence, and nothing else differs; the table's decision keeps the lines, and a
// creation carries them.
TEST_F(DecisionTableTest, LeanExtensionsCarryEverythingButTheEvidence) {
  DecisionTable full(clock_), lean(clock_);
  lean.SetLeanExtensions(true);
  palisade::v1::DecisionSpec spec;
  spec.set_action(palisade::v1::ACTION_BLOCK);
  *spec.mutable_duration() = ToProtoDuration(absl::Hours(1));
  spec.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
  std::vector<DecisionUpdate> heard;
  lean.AddListener([&heard](const DecisionUpdate& u) { heard.push_back(u); });
  const absl::Time t = clock_.TimeNow();
  DecisionUpdate full_created = full.Apply(Det("203.0.113.7", t), spec);
  DecisionUpdate lean_created = lean.Apply(Det("203.0.113.7", t), spec);
  ASSERT_EQ(lean_created.change, DecisionChange::kCreated);
  EXPECT_THAT(lean_created.decision.evidence(), SizeIs(2));
  DecisionUpdate full_extended = full.Apply(Det("203.0.113.7", t + absl::Minutes(1)), spec);
  DecisionUpdate lean_extended = lean.Apply(Det("203.0.113.7", t + absl::Minutes(1)), spec);
  ASSERT_EQ(lean_extended.change, DecisionChange::kExtended);
  EXPECT_THAT(lean_extended.decision.evidence(), SizeIs(0));
  ASSERT_THAT(heard, SizeIs(2));
  EXPECT_THAT(heard[1].decision.evidence(), SizeIs(0));
  EXPECT_THAT(full_extended.decision.evidence(), SizeIs(4));
  // The rest is the full update's (ids aside: each table draws its own).
  Decision expected = full_extended.decision;
  expected.clear_evidence();
  expected.set_id(lean_extended.decision.id());
  EXPECT_EQ(lean_extended.decision.SerializeAsString(), expected.SerializeAsString());
  absl::StatusOr<Decision> kept = lean.Get(lean_extended.decision.id());
  ASSERT_THAT(kept, IsOk());
  EXPECT_THAT(kept->evidence(), SizeIs(4));
  // ApplyAll alike.
  CompiledRule rule;
  rule.proto.set_id("ssh");
  *rule.proto.mutable_decision() = spec;
  std::vector<Detection> detections = {Det("203.0.113.7", t + absl::Minutes(2))};
  detections[0].rule = &rule;
  std::vector<DecisionUpdate> updates = lean.ApplyAll(detections);
  ASSERT_THAT(updates, SizeIs(1));
  EXPECT_EQ(updates[0].change, DecisionChange::kExtended);
  EXPECT_THAT(updates[0].decision.evidence(), SizeIs(0));
  EXPECT_EQ(updates[0].decision.extensions(), 2u);
}

// SetKeepEvidence(false) (replay): the table's own decisions keep no lines, on creation or
// extension; a created decision's update still carries its detection's lines.
TEST_F(DecisionTableTest, ATableThatKeepsNoEvidenceStillHandsItOnCreation) {
  DecisionTable table(clock_);
  table.SetKeepEvidence(false);
  std::vector<DecisionUpdate> heard;
  table.AddListener([&heard](const DecisionUpdate& u) { heard.push_back(u); });
  const palisade::v1::DecisionSpec spec = HourBlock();
  const absl::Time t = clock_.TimeNow();
  DecisionUpdate created = table.Apply(Det("203.0.113.7", t), spec);
  ASSERT_EQ(created.change, DecisionChange::kCreated);
  EXPECT_THAT(created.decision.evidence(), SizeIs(2));
  ASSERT_THAT(heard, SizeIs(1));
  EXPECT_THAT(heard[0].decision.evidence(), SizeIs(2));
  absl::StatusOr<Decision> kept = table.Get(created.decision.id());
  ASSERT_THAT(kept, IsOk());
  EXPECT_THAT(kept->evidence(), IsEmpty());
  // Apart from the lines, the table keeps what it handed out.
  Decision expected = created.decision;
  expected.clear_evidence();
  EXPECT_EQ(kept->SerializeAsString(), expected.SerializeAsString());
  DecisionUpdate extended = table.Apply(Det("203.0.113.7", t + absl::Minutes(1)), spec);
  ASSERT_EQ(extended.change, DecisionChange::kExtended);
  EXPECT_THAT(extended.decision.evidence(), IsEmpty());
  EXPECT_THAT(table.Get(created.decision.id())->evidence(), IsEmpty());
  // The default keeps them.
  DecisionTable keeping(clock_);
  const std::string id = keeping.Apply(Det("203.0.113.7", t), spec).decision.id();
  EXPECT_THAT(keeping.Get(id)->evidence(), SizeIs(2));
}

// With lean extensions the store still gets the whole decision: an extension's row carries the
// evidence the table keeps (and the update leaves out), through Apply and ApplyAll alike.
TEST_F(DecisionTableTest, ALeanExtensionIsStoredWithItsEvidence) {
  auto store = FreshStore("lean.db");
  ASSERT_THAT(store, IsOk());
  DecisionTable lean(clock_);
  lean.SetLeanExtensions(true);
  lean.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  const palisade::v1::DecisionSpec spec = HourBlock();
  const absl::Time t = clock_.TimeNow();
  const std::string id = lean.Apply(Det("203.0.113.7", t), spec).decision.id();
  DecisionUpdate extended = lean.Apply(Det("203.0.113.7", t + absl::Minutes(1)), spec);
  ASSERT_EQ(extended.change, DecisionChange::kExtended);
  EXPECT_THAT(extended.decision.evidence(), SizeIs(0));
  CompiledRule rule;
  rule.proto.set_id("ssh");
  *rule.proto.mutable_decision() = spec;
  std::vector<Detection> detections = {Det("203.0.113.7", t + absl::Minutes(2)),
                                       Det("203.0.113.7", t + absl::Minutes(3))};
  for (Detection& d : detections) d.rule = &rule;
  ASSERT_THAT(lean.ApplyAll(detections), SizeIs(2));
  absl::StatusOr<Decision> kept = lean.Get(id);
  ASSERT_THAT(kept, IsOk());
  EXPECT_THAT(kept->evidence(), SizeIs(5));
  EXPECT_EQ(kept->extensions(), 3u);
  auto stored = (*store)->LoadDecisions(true);
  ASSERT_THAT(stored, IsOk());
  ASSERT_THAT(*stored, SizeIs(1));
  EXPECT_EQ((*stored)[0].SerializeAsString(), kept->SerializeAsString());
}

// A decision created and extended in one batch is stored once, as it ends up, with its offence
// row; with an actuator to apply it, its creation's outbox operation is stored too.
TEST_F(DecisionTableTest, ADecisionChangedAgainInABatchIsStoredAsItEndsUp) {
  const palisade::v1::DecisionSpec spec = HourBlock();
  CompiledRule rule;
  rule.proto.set_id("ssh");
  *rule.proto.mutable_decision() = spec;
  const absl::Time t = clock_.TimeNow();
  for (bool edge : {false, true}) {
    auto store = FreshStore(edge ? "burst-edge.db" : "burst.db");
    ASSERT_THAT(store, IsOk());
    DecisionTable table(clock_);
    table.SetLeanExtensions(true);
    std::set<palisade::v1::Actuator> actuators;
    if (edge) actuators.insert(palisade::v1::ACTUATOR_ACCESS_RULE);
    table.SetStore(store->get(), actuators);
    std::vector<Detection> burst = {Det("203.0.113.7", t), Det("203.0.113.7", t + absl::Seconds(1)),
                                    Det("203.0.113.7", t + absl::Seconds(2))};
    for (Detection& d : burst) d.rule = &rule;
    std::vector<DecisionUpdate> updates = table.ApplyAll(burst);
    ASSERT_THAT(updates, SizeIs(3));
    ASSERT_EQ(updates[0].change, DecisionChange::kCreated);
    ASSERT_EQ(updates[2].change, DecisionChange::kExtended);
    absl::StatusOr<Decision> kept = table.Get(updates[0].decision.id());
    ASSERT_THAT(kept, IsOk());
    EXPECT_EQ(kept->extensions(), 2u);
    auto stored = (*store)->LoadDecisions(true);
    ASSERT_THAT(stored, IsOk());
    ASSERT_THAT(*stored, SizeIs(1)) << "edge " << edge;
    EXPECT_EQ((*stored)[0].SerializeAsString(), kept->SerializeAsString()) << "edge " << edge;
    auto offences = (*store)->LoadOffences(absl::InfinitePast(), 10);
    ASSERT_THAT(offences, IsOk());
    ASSERT_THAT(*offences, SizeIs(1));
    EXPECT_EQ((*offences)[0].count, 1u);
    EXPECT_EQ((*offences)[0].last, t + absl::Seconds(2));
    auto outbox = (*store)->LoadOutbox();
    ASSERT_THAT(outbox, IsOk());
    EXPECT_THAT(*outbox, SizeIs(edge ? 1 : 0));
    if (edge) {
      EXPECT_EQ(updates[0].outbox_seq, (*outbox)[0].seq);
    }
  }
}

// ApplyAllInto writes over the updates an earlier call left in the vector: each call's updates
// are ApplyAll's (ids aside), whatever the one before held (a secret, another decision, more or
// fewer updates), with lean extensions or not.
class ApplyAllIntoTest : public DecisionTableTest, public ::testing::WithParamInterface<bool> {};

TEST_P(ApplyAllIntoTest, WritesOverWhatAnEarlierCallLeft) {
  DecisionTable plain(clock_), into(clock_);
  plain.SetLeanExtensions(GetParam());
  into.SetLeanExtensions(GetParam());
  CompiledRule rule;
  rule.proto.set_id("ssh");
  rule.proto.mutable_decision()->set_action(palisade::v1::ACTION_BLOCK);
  *rule.proto.mutable_decision()->mutable_duration() = ToProtoDuration(absl::Hours(1));
  rule.proto.mutable_decision()->set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
  auto det = [&](absl::string_view ip, absl::Time t, absl::string_view secret = "") {
    Detection d = Det(ip, t);
    d.rule = &rule;
    d.secret = std::string(secret);
    return d;
  };
  const absl::Time t = clock_.TimeNow();
  const std::vector<std::vector<Detection>> calls = {
      {det("203.0.113.7", t, "s3cret")},                              // created, with a secret
      {det("203.0.113.7", t + absl::Minutes(1))},                     // extended
      {det("198.51.100.1", t - absl::Hours(2))},                      // stale
      {det("203.0.113.7", t + absl::Minutes(2)), det("198.51.100.2", t)},  // two at once
      {det("198.51.100.2", t + absl::Minutes(1))},                    // one again
  };
  std::vector<DecisionUpdate> kept;
  for (size_t c = 0; c < calls.size(); ++c) {
    SCOPED_TRACE(c);
    std::vector<DecisionUpdate> expected = plain.ApplyAll(calls[c]);
    into.ApplyAllInto(calls[c], &kept);
    ASSERT_EQ(kept.size(), expected.size());
    for (size_t i = 0; i < kept.size(); ++i) {
      EXPECT_EQ(kept[i].change, expected[i].change);
      EXPECT_EQ(kept[i].secret, expected[i].secret);
      EXPECT_EQ(kept[i].outbox_seq, expected[i].outbox_seq);
      Decision a = kept[i].decision, b = expected[i].decision;
      a.clear_id();
      b.clear_id();
      EXPECT_EQ(a.SerializeAsString(), b.SerializeAsString());
      // And an extension's decision is the table's own (lean: without its evidence).
      if (kept[i].change != DecisionChange::kExtended) continue;
      absl::StatusOr<Decision> truth = into.Get(kept[i].decision.id());
      ASSERT_THAT(truth, IsOk());
      if (GetParam()) truth->clear_evidence();
      EXPECT_EQ(kept[i].decision.SerializeAsString(), truth->SerializeAsString());
    }
  }
  EXPECT_EQ(kept[0].change, DecisionChange::kExtended);
  EXPECT_EQ(kept[0].decision.extensions(), 1u);
  EXPECT_TRUE(kept[0].decision.has_target());
  EXPECT_TRUE(kept[0].decision.has_expiry());
}

// Sets every field of `m`, and of the messages in it, to a value that is not its default.
void FillEveryField(google::protobuf::Message* m, int salt) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Descriptor* desc = m->GetDescriptor();
  const google::protobuf::Reflection* refl = m->GetReflection();
  for (int i = 0; i < desc->field_count(); ++i) {
    const FieldDescriptor* f = desc->field(i);
    const std::string text = absl::StrCat(f->name(), "-", salt);
    if (f->is_repeated()) {
      if (f->cpp_type() != FieldDescriptor::CPPTYPE_STRING) {
        ADD_FAILURE() << "FillEveryField: teach it " << f->full_name();
        continue;
      }
      refl->AddString(m, f, text + "a");
      refl->AddString(m, f, text + "b");
      continue;
    }
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING:
        refl->SetString(m, f, text);
        break;
      case FieldDescriptor::CPPTYPE_BOOL:
        refl->SetBool(m, f, true);
        break;
      case FieldDescriptor::CPPTYPE_INT32:
        refl->SetInt32(m, f, 7 + salt);
        break;
      case FieldDescriptor::CPPTYPE_UINT32:
        refl->SetUInt32(m, f, 7 + salt);
        break;
      case FieldDescriptor::CPPTYPE_INT64:
        refl->SetInt64(m, f, 7 + salt);
        break;
      case FieldDescriptor::CPPTYPE_UINT64:
        refl->SetUInt64(m, f, 7 + salt);
        break;
      case FieldDescriptor::CPPTYPE_ENUM: {
        const google::protobuf::EnumDescriptor* e = f->enum_type();
        refl->SetEnumValue(m, f, e->value(e->value_count() - 1)->number());
        break;
      }
      case FieldDescriptor::CPPTYPE_MESSAGE:
        FillEveryField(refl->MutableMessage(m, f), salt);
        break;
      default:
        ADD_FAILURE() << "FillEveryField: teach it " << f->full_name();
    }
  }
}

// An extension's update is built field by field (ExtensionLocked, into the memory of the
// update an earlier call left): it carries every field of the table's decision (lean: but the
// evidence), whatever fields Decision has now (set by reflection), and nothing of the decision
// that held the update before.
TEST_P(ApplyAllIntoTest, AnExtensionCarriesEveryFieldOfTheDecision) {
  DecisionTable table(clock_);
  table.SetLeanExtensions(GetParam());
  CompiledRule rule;
  rule.proto.set_id("ssh");
  palisade::v1::DecisionSpec& spec = *rule.proto.mutable_decision();
  spec.set_action(palisade::v1::ACTION_CHALLENGE);
  *spec.mutable_duration() = ToProtoDuration(absl::Hours(1));
  spec.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
  spec.set_dry_run(true);
  const absl::Time t = clock_.TimeNow();
  // Decided by a writer (Mirror takes a decision as it is): one with every field set, one with
  // only what a decision needs.
  auto mirror = [&](absl::string_view ip, bool every) {
    Decision d;
    if (every) FillEveryField(&d, 1);
    d.set_id(absl::StrCat("id-", ip));
    d.mutable_target()->set_kind(palisade::v1::TargetKind::TARGET_KIND_IP);
    d.mutable_target()->set_value(std::string(ip));
    d.set_origin(palisade::v1::ORIGIN_RULE);
    d.set_action(spec.action());
    d.set_actuator(spec.actuator());
    d.set_dry_run(spec.dry_run());
    d.set_active(true);
    *d.mutable_start() = ToProtoTime(t - absl::Minutes(1));
    *d.mutable_expiry() = ToProtoTime(t + absl::Minutes(30));
    table.Mirror(DecisionChange::kCreated, d);
    return d.id();
  };
  const std::string every = mirror("203.0.113.7", true);
  const std::string few = mirror("203.0.113.8", false);
  std::vector<DecisionUpdate> kept;
  int minute = 0;
  for (const auto& [ip, id] : std::vector<std::pair<std::string, std::string>>{
           {"203.0.113.7", every}, {"203.0.113.8", few}, {"203.0.113.7", every}}) {
    SCOPED_TRACE(ip);
    Detection d = Det(ip, t + absl::Minutes(++minute));
    d.rule = &rule;
    table.ApplyAllInto({d}, &kept);
    ASSERT_THAT(kept, SizeIs(1));
    ASSERT_EQ(kept[0].change, DecisionChange::kExtended);
    absl::StatusOr<Decision> truth = table.Get(id);
    ASSERT_THAT(truth, IsOk());
    if (GetParam()) truth->clear_evidence();
    EXPECT_EQ(kept[0].decision.DebugString(), truth->DebugString());
  }
}

INSTANTIATE_TEST_SUITE_P(LeanOrNot, ApplyAllIntoTest, ::testing::Bool());

TEST_F(DecisionTableTest, RepeatOffenderEscalatesAndIsCapped) {
  std::vector<absl::Duration> durations;
  for (int i = 0; i < 5; ++i) {
    DecisionUpdate u = Apply("203.0.113.7", clock_.TimeNow());
    ASSERT_EQ(u.change, DecisionChange::kCreated);
    durations.push_back(DecisionExpiry(u.decision) - FromProtoTime(u.decision.start()));
    clock_.Advance(durations.back());
    EXPECT_THAT(table_.ExpireDue(), SizeIs(1));
  }
  EXPECT_EQ(durations, (std::vector<absl::Duration>{absl::Hours(1), absl::Hours(2), absl::Hours(4),
                                                    absl::Hours(5), absl::Hours(5)}));
}

// A factor that is not a power of two makes durations with fractions of a nanosecond (1 h ×
// 1.5^14 is 1,050,945.33... s, a quarter-nanosecond multiple). The decision stores its expiry in
// whole nanoseconds; the table must find it in its expiry order by that same time, or an
// extension leaves the old entry behind and the decision ends at its first expiry.
TEST_F(DecisionTableTest, AnEscalatedDecisionExtendedEndsAtItsExtendedExpiry) {
  escalation_.set_factor(1.5);
  *escalation_.mutable_max_duration() = ToProtoDuration(absl::Hours(24 * 365));
  *escalation_.mutable_memory() = ToProtoDuration(absl::Hours(24 * 1000));
  DecisionUpdate u;
  for (int offence = 1; offence <= 15; ++offence) {
    u = Apply("203.0.113.7", clock_.TimeNow());
    ASSERT_EQ(u.change, DecisionChange::kCreated);
    ASSERT_EQ(u.decision.offence(), static_cast<uint32_t>(offence));
    if (offence == 15) break;
    clock_.Advance(DecisionExpiry(u.decision) - clock_.TimeNow());
    ASSERT_THAT(table_.ExpireDue(), SizeIs(1));
  }
  const absl::Time first_expiry = DecisionExpiry(u.decision);
  clock_.Advance(absl::Hours(24));
  DecisionUpdate extended = Apply("203.0.113.7", clock_.TimeNow());
  ASSERT_EQ(extended.change, DecisionChange::kExtended);
  const absl::Time extended_expiry = DecisionExpiry(extended.decision);
  ASSERT_GT(extended_expiry, first_expiry);
  clock_.Advance(first_expiry - clock_.TimeNow() + absl::Seconds(1));
  EXPECT_THAT(table_.ExpireDue(), SizeIs(0));
  EXPECT_EQ(table_.active_count(), 1u);
  clock_.Advance(extended_expiry - clock_.TimeNow());
  EXPECT_THAT(table_.ExpireDue(), SizeIs(1));
  EXPECT_EQ(table_.active_count(), 0u);
}

// An extension moves the decision's expiry, not its place in the expiry queue: the sweep that
// reaches the old place moves it, once. The decision ends at its last expiry, never before; a
// withdrawal after extensions finds its entry where it is; one entry per active decision.
TEST_F(DecisionTableTest, AnExtendedDecisionIsQueuedOnceAndEndsAtItsLastExpiry) {
  const absl::Time first = clock_.TimeNow();
  ASSERT_EQ(Apply("203.0.113.7", first).change, DecisionChange::kCreated);
  for (int i = 0; i < 100; ++i) {
    clock_.Advance(absl::Minutes(1));
    ASSERT_EQ(Apply("203.0.113.7", clock_.TimeNow()).change, DecisionChange::kExtended);
  }
  const absl::Time last_expiry = clock_.TimeNow() + absl::Hours(1);
  EXPECT_EQ(table_.expiry_entries(), 1u);
  clock_.Advance(first + absl::Hours(1) - clock_.TimeNow());  // the first expiry
  EXPECT_THAT(table_.ExpireDue(), SizeIs(0));
  EXPECT_EQ(table_.active_count(), 1u);
  EXPECT_EQ(table_.expiry_entries(), 1u);
  clock_.Advance(last_expiry - clock_.TimeNow() - absl::Seconds(1));
  EXPECT_THAT(table_.ExpireDue(), SizeIs(0));
  clock_.Advance(absl::Seconds(1));
  std::vector<Decision> expired = table_.ExpireDue();
  ASSERT_THAT(expired, SizeIs(1));
  EXPECT_EQ(DecisionExpiry(expired[0]), last_expiry);
  EXPECT_EQ(table_.expiry_entries(), 0u);

  DecisionUpdate created = Apply("203.0.113.8", clock_.TimeNow());
  clock_.Advance(absl::Minutes(5));
  ASSERT_EQ(Apply("203.0.113.8", clock_.TimeNow()).change, DecisionChange::kExtended);
  ASSERT_THAT(table_.Withdraw(created.decision.id()), IsOk());
  EXPECT_EQ(table_.expiry_entries(), 0u);
  EXPECT_EQ(table_.active_count(), 0u);
}

// A feed listing is not an offence: a rule's decision on a target a feed listed before starts
// at the first offence (and a feed's many entries never take an offender's place).
TEST_F(DecisionTableTest, AFeedListingIsNotAnOffence) {
  DecisionTable::FeedTarget f;
  f.target.set_kind(palisade::v1::TARGET_KIND_IP);
  f.target.set_value("192.0.2.1");
  f.reason = "feed drop";
  palisade::v1::DecisionSpec spec;
  spec.set_action(palisade::v1::ACTION_BLOCK);
  spec.set_actuator(palisade::v1::ACTUATOR_IP_LIST);
  *spec.mutable_duration() = ToProtoDuration(absl::Hours(24));
  ASSERT_THAT(table_.SyncFeed({f}, spec, absl::InfinitePast()), SizeIs(1));
  ASSERT_THAT(table_.SyncFeed({}, spec, absl::InfinitePast()), SizeIs(1));  // withdrawn
  DecisionUpdate u = Apply("192.0.2.1", clock_.TimeNow());
  ASSERT_EQ(u.change, DecisionChange::kCreated);
  EXPECT_EQ(u.decision.offence(), 1u);
  EXPECT_EQ(DecisionExpiry(u.decision) - FromProtoTime(u.decision.start()), absl::Hours(1));
}

// An extension keeps the offender's count even when the offender was forgotten meanwhile (its
// memory is shorter than its decision): the next decision escalates from there.
TEST_F(DecisionTableTest, AnExtensionAfterTheOffenderWasForgottenKeepsItsCount) {
  *escalation_.mutable_memory() = ToProtoDuration(absl::Hours(3));
  *escalation_.mutable_max_duration() = ToProtoDuration(absl::Hours(24));
  for (int i = 0; i < 3; ++i) {  // offences 1, 2, 3 at 0, 1 h, 3 h: 1 h, 2 h, 4 h
    DecisionUpdate u = Apply("203.0.113.7", clock_.TimeNow());
    ASSERT_EQ(u.decision.offence(), static_cast<uint32_t>(i + 1));
    if (i == 2) break;
    clock_.Advance(DecisionExpiry(u.decision) - clock_.TimeNow());
    ASSERT_THAT(table_.ExpireDue(), SizeIs(1));
  }
  // 3.5 hours into the 4 h decision the offender is past its 3 h memory and forgotten; a
  // detection then extends the decision, an offence again.
  clock_.Advance(absl::Minutes(210));
  table_.ExpireDue();
  DecisionUpdate extended = Apply("203.0.113.7", clock_.TimeNow());
  ASSERT_EQ(extended.change, DecisionChange::kExtended);
  // An operator lifts it half an hour later; the offender is back at once, within its memory.
  clock_.Advance(absl::Minutes(30));
  ASSERT_THAT(table_.Withdraw(extended.decision.id()), IsOk());
  DecisionUpdate next = Apply("203.0.113.7", clock_.TimeNow());
  ASSERT_EQ(next.change, DecisionChange::kCreated);
  EXPECT_EQ(next.decision.offence(), 4u);
}

TEST_F(DecisionTableTest, OffencesAreForgottenAfterTheMemory) {
  Apply("203.0.113.7", clock_.TimeNow());
  clock_.Advance(absl::Hours(24 * 8));
  table_.ExpireDue();
  DecisionUpdate u = Apply("203.0.113.7", clock_.TimeNow());
  EXPECT_EQ(u.decision.offence(), 1u);
}

TEST_F(DecisionTableTest, EscalationMemoryCountsFromTheLastActivityNotTheCreation) {
  *escalation_.mutable_memory() = ToProtoDuration(absl::Hours(24));
  DecisionUpdate first = Apply("203.0.113.7", clock_.TimeNow());
  ASSERT_EQ(first.change, DecisionChange::kCreated);
  // The offender keeps at it for three days: each detection extends the same decision.
  for (int i = 0; i < 3 * 24 * 2; ++i) {
    clock_.Advance(absl::Minutes(30));
    ASSERT_EQ(Apply("203.0.113.7", clock_.TimeNow()).change, DecisionChange::kExtended);
  }
  clock_.Advance(absl::Hours(1));
  ASSERT_THAT(table_.ExpireDue(), SizeIs(1));
  // Back twelve hours after its last offence: within the memory, so it escalates.
  clock_.Advance(absl::Hours(11));
  DecisionUpdate again = Apply("203.0.113.7", clock_.TimeNow());
  ASSERT_EQ(again.change, DecisionChange::kCreated);
  EXPECT_EQ(again.decision.offence(), 2u);
  EXPECT_EQ(DecisionExpiry(again.decision) - FromProtoTime(again.decision.start()),
            absl::Hours(2));
}

// One count per offender, whichever rule counted it: a rule whose memory has lapsed starts its
// own escalation at 1, but does not lower the count a rule with a longer memory still needs.
TEST_F(DecisionTableTest, AShortMemoryRuleDoesNotResetALongerMemorysCount) {
  palisade::v1::DecisionSpec slow = HourBlock();
  *slow.mutable_duration() = ToProtoDuration(absl::Hours(24));
  slow.mutable_escalation()->set_factor(2);
  *slow.mutable_escalation()->mutable_memory() = ToProtoDuration(absl::Hours(24 * 30));
  palisade::v1::DecisionSpec fast = HourBlock();
  fast.mutable_escalation()->set_factor(2);
  *fast.mutable_escalation()->mutable_memory() = ToProtoDuration(absl::Hours(24 * 7));
  absl::Time last_offence;
  for (uint32_t offence = 1; offence <= 3; ++offence) {  // 24 h, 48 h, 96 h
    last_offence = clock_.TimeNow();
    DecisionUpdate u = table_.Apply(Det("203.0.113.7", last_offence), slow);
    ASSERT_EQ(u.change, DecisionChange::kCreated);
    ASSERT_EQ(u.decision.offence(), offence);
    clock_.Advance(DecisionExpiry(u.decision) - clock_.TimeNow());
    ASSERT_THAT(table_.ExpireDue(), SizeIs(1));
  }
  // Ten days after the slow rule's last offence: past the 7-day memory, within the 30-day one.
  clock_.Advance(last_offence + absl::Hours(24 * 10) - clock_.TimeNow());
  DecisionUpdate short_memory = table_.Apply(Det("203.0.113.7", clock_.TimeNow()), fast);
  ASSERT_EQ(short_memory.change, DecisionChange::kCreated);
  EXPECT_EQ(short_memory.decision.offence(), 1u);
  EXPECT_EQ(DecisionExpiry(short_memory.decision) - FromProtoTime(short_memory.decision.start()),
            absl::Hours(1));
  clock_.Advance(absl::Hours(1));
  ASSERT_THAT(table_.ExpireDue(), SizeIs(1));
  DecisionUpdate again = table_.Apply(Det("203.0.113.7", clock_.TimeNow()), slow);
  ASSERT_EQ(again.change, DecisionChange::kCreated);
  EXPECT_EQ(again.decision.offence(), 4u);
  EXPECT_EQ(DecisionExpiry(again.decision) - FromProtoTime(again.decision.start()),
            absl::Hours(24 * 8));
}

// What a restart (the store's offence rows) or a take-over (the decisions mirrored from the
// log) hands on of an offender's count knows how long the memories of the rules that counted it
// run: a 7-day rule's offence ten days after a 30-day rule's last does not reset that count, and
// the 30-day rule escalates on from it exactly as without a restart or take-over. Both used to
// reset it (offence 2, not 4, for the 30-day rule's next).
TEST_F(DecisionTableTest, ARestartOrTakeOverKeepsTheMemoryOfTheRulesThatCounted) {
  palisade::v1::DecisionSpec slow = HourBlock();
  *slow.mutable_duration() = ToProtoDuration(absl::Hours(24));
  slow.mutable_escalation()->set_factor(2);
  *slow.mutable_escalation()->mutable_memory() = ToProtoDuration(absl::Hours(24 * 30));
  palisade::v1::DecisionSpec fast = HourBlock();
  fast.mutable_escalation()->set_factor(2);
  *fast.mutable_escalation()->mutable_memory() = ToProtoDuration(absl::Hours(24 * 7));
  for (const std::string how : {"none", "restart", "mirror"}) {
    SCOPED_TRACE(how);
    auto store = FreshStore(absl::StrCat("memories-", how, ".db"));
    ASSERT_THAT(store, IsOk());
    auto table = std::make_unique<DecisionTable>(clock_);
    table->SetStore(store->get(), {});
    std::vector<DecisionUpdate> sent;  // what a cluster's decision log would carry
    table->AddListener([&sent](const DecisionUpdate& u) { sent.push_back(u); });
    absl::Time last_offence;
    for (uint32_t offence = 1; offence <= 3; ++offence) {  // 24 h, 48 h, 96 h
      last_offence = clock_.TimeNow();
      DecisionUpdate u = table->Apply(Det("203.0.113.7", last_offence), slow);
      ASSERT_EQ(u.change, DecisionChange::kCreated);
      ASSERT_EQ(u.decision.offence(), offence);
      clock_.Advance(DecisionExpiry(u.decision) - clock_.TimeNow());
      ASSERT_THAT(table->ExpireDue(), SizeIs(1));
    }
    if (how == "restart") {
      table = std::make_unique<DecisionTable>(clock_);
      table->SetStore(store->get(), {});
      ASSERT_THAT(table->Restore(), IsOk());
    } else if (how == "mirror") {
      table = std::make_unique<DecisionTable>(clock_);  // another node's, now the writer
      for (const DecisionUpdate& u : sent) table->Mirror(u.change, u.decision);
    }
    // Ten days after the slow rule's last offence: past the 7-day memory, within the 30-day one.
    clock_.Advance(last_offence + absl::Hours(24 * 10) - clock_.TimeNow());
    DecisionUpdate short_memory = table->Apply(Det("203.0.113.7", clock_.TimeNow()), fast);
    ASSERT_EQ(short_memory.change, DecisionChange::kCreated);
    EXPECT_EQ(short_memory.decision.offence(), 1u);
    clock_.Advance(absl::Hours(1));
    ASSERT_THAT(table->ExpireDue(), SizeIs(1));
    DecisionUpdate again = table->Apply(Det("203.0.113.7", clock_.TimeNow()), slow);
    ASSERT_EQ(again.change, DecisionChange::kCreated);
    EXPECT_EQ(again.decision.offence(), 4u);
    EXPECT_EQ(DecisionExpiry(again.decision) - FromProtoTime(again.decision.start()),
              absl::Hours(24 * 8));
    clock_.Advance(DecisionExpiry(again.decision) - clock_.TimeNow());
    table->ExpireDue();
  }
  // The memory runs from the offender's last offence, which a mirror must not take from the
  // decision's start. "extended": a day's decision extended every 12 h for three days; the
  // next offence 9 days after its start is 6 after the last, within a 7-day memory (the mirror
  // found it past: less). "reinstated": a local-only claim that waited behind a decision is
  // reinstated a day later; the next offence 30 days and 2 h after the last is past a 30-day
  // memory (the mirror counted the reinstatement as an offence: more). A restart and a
  // take-over decide that next offence as the uninterrupted table does.
  palisade::v1::DecisionSpec day = HourBlock();
  *day.mutable_duration() = ToProtoDuration(absl::Hours(24));
  day.mutable_escalation()->set_factor(2);
  *day.mutable_escalation()->mutable_memory() = ToProtoDuration(absl::Hours(24 * 7));
  palisade::v1::DecisionSpec month = day;
  *month.mutable_escalation()->mutable_memory() = ToProtoDuration(absl::Hours(24 * 30));
  palisade::v1::DecisionSpec local = HourBlock();
  local.set_actuator(palisade::v1::ACTUATOR_NONE);
  *local.mutable_duration() = ToProtoDuration(absl::Hours(24 * 25));
  for (const std::string scenario : {"extended", "reinstated"}) {
    std::vector<std::string> outcomes;  // per run: the next offence and its duration
    for (const std::string how : {"none", "restart", "mirror"}) {
      SCOPED_TRACE(absl::StrCat(scenario, " ", how));
      auto store = FreshStore(absl::StrCat("last-", scenario, "-", how, ".db"));
      ASSERT_THAT(store, IsOk());
      auto table = std::make_unique<DecisionTable>(clock_);
      table->SetStore(store->get(), {});
      std::vector<DecisionUpdate> sent;
      table->AddListener([&sent](const DecisionUpdate& u) { sent.push_back(u); });
      const absl::Time t0 = clock_.TimeNow();
      const palisade::v1::DecisionSpec& spec = scenario == "extended" ? day : month;
      ASSERT_EQ(table->Apply(Det("203.0.113.8", t0), spec).change, DecisionChange::kCreated);
      if (scenario == "extended") {
        for (int i = 1; i <= 6; ++i) {
          clock_.Advance(absl::Hours(12));
          ASSERT_EQ(table->Apply(Det("203.0.113.8", clock_.TimeNow()), spec).change,
                    DecisionChange::kExtended);
        }
        clock_.Advance(t0 + absl::Hours(24 * 4) - clock_.TimeNow());
        ASSERT_THAT(table->ExpireDue(), SizeIs(1));
      } else {
        clock_.Advance(absl::Minutes(1));
        ASSERT_EQ(table->Apply(Det("203.0.113.8", clock_.TimeNow()), local).change,
                  DecisionChange::kExtended);  // waits behind the decision
        clock_.Advance(t0 + absl::Hours(24) - clock_.TimeNow());
        ASSERT_THAT(table->ExpireDue(), SizeIs(1));
        std::vector<Decision> reinstated =
            table->List({.target = "203.0.113.8", .active_only = true});
        ASSERT_THAT(reinstated, SizeIs(1));
        ASSERT_EQ(reinstated[0].actuator(), palisade::v1::ACTUATOR_NONE);
        clock_.Advance(DecisionExpiry(reinstated[0]) - clock_.TimeNow());
        ASSERT_THAT(table->ExpireDue(), SizeIs(1));
      }
      if (how == "restart") {
        table = std::make_unique<DecisionTable>(clock_);
        table->SetStore(store->get(), {});
        ASSERT_THAT(table->Restore(), IsOk());
      } else if (how == "mirror") {
        table = std::make_unique<DecisionTable>(clock_);
        for (const DecisionUpdate& u : sent) table->Mirror(u.change, u.decision);
      }
      clock_.Advance((scenario == "extended" ? t0 + absl::Hours(24 * 9)
                                             : t0 + absl::Minutes(1) + absl::Hours(24 * 30 + 2)) -
                     clock_.TimeNow());
      DecisionUpdate next = table->Apply(Det("203.0.113.8", clock_.TimeNow()), spec);
      ASSERT_EQ(next.change, DecisionChange::kCreated);
      const absl::Duration lasts =
          DecisionExpiry(next.decision) - FromProtoTime(next.decision.start());
      outcomes.push_back(absl::StrCat(next.decision.offence(), " ", absl::FormatDuration(lasts)));
      clock_.Advance(DecisionExpiry(next.decision) - clock_.TimeNow());
      table->ExpireDue();
    }
    EXPECT_EQ(outcomes[0], scenario == "extended" ? "2 48h" : "1 24h") << scenario;
    EXPECT_THAT(outcomes, Each(outcomes[0])) << scenario;
  }
}

// A mirrored decision's offence_counted_until is the writer's word, but one forged or corrupt
// (year 9000, or past year 9999, which no Timestamp holds and JSON cannot print) is bounded: a
// count stands at most the longest memory a rule can have (365 days) after the last offence,
// and a time out of Timestamp's range is not known. Trusted, the offender never aged out (its
// count of 5 stood for good) and the next decisions carried the time on. The same for a forged
// start (with or without an offence_last as forged): the last offence was taken from it
// unchecked, so the count stood until year 9000 or past 9999.
TEST_F(DecisionTableTest, AMirroredCountedUntilIsBoundedByTheLongestMemory) {
  palisade::v1::DecisionSpec spec = HourBlock();
  spec.mutable_escalation()->set_factor(2);
  struct Forged {
    int64_t counted_until = 0;  // seconds; 0: not set
    int64_t start = 0;          // seconds; 0: the clock's now
    bool last_too = false;      // offence_last forged as the start
  };
  const int64_t year_9000 = 221'845'392'000;
  const int64_t past_9999 = 300'000'000'000;
  int n = 0;
  for (const Forged& f : {Forged{.counted_until = year_9000}, Forged{.counted_until = past_9999},
                          Forged{.start = year_9000}, Forged{.start = past_9999},
                          Forged{.start = year_9000, .last_too = true},
                          Forged{.start = past_9999, .last_too = true}}) {
    SCOPED_TRACE(absl::StrCat(f.counted_until, " ", f.start, " ", f.last_too));
    const std::string ip = absl::StrCat("203.0.113.", 20 + n);
    Decision d;
    d.set_id(absl::StrCat("00000000000000f", n++));
    d.mutable_target()->set_kind(palisade::v1::TARGET_KIND_IP);
    d.mutable_target()->set_value(ip);
    d.set_action(palisade::v1::ACTION_BLOCK);
    d.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
    d.set_origin(palisade::v1::ORIGIN_RULE);
    d.set_offence(5);
    *d.mutable_start() = ToProtoTime(clock_.TimeNow());
    if (f.start != 0) d.mutable_start()->set_seconds(f.start);
    if (f.last_too) d.mutable_offence_last()->set_seconds(f.start);
    *d.mutable_expiry() = ToProtoTime(clock_.TimeNow() + absl::Hours(1));
    if (f.counted_until != 0) d.mutable_offence_counted_until()->set_seconds(f.counted_until);
    d.set_active(true);
    DecisionTable table(clock_);
    table.Mirror(DecisionChange::kCreated, d);
    clock_.Advance(absl::Hours(24 * 366));
    ASSERT_THAT(table.ExpireDue(), SizeIs(1));
    DecisionUpdate first = table.Apply(Det(ip, clock_.TimeNow()), spec);
    ASSERT_EQ(first.change, DecisionChange::kCreated);
    EXPECT_EQ(first.decision.offence(), 1u);
    ASSERT_TRUE(first.decision.has_offence_counted_until());
    EXPECT_LE(FromProtoTime(first.decision.offence_counted_until()),
              clock_.TimeNow() + absl::Hours(24 * 365));
    clock_.Advance(absl::Hours(2));
    ASSERT_THAT(table.ExpireDue(), SizeIs(1));
    DecisionUpdate second = table.Apply(Det(ip, clock_.TimeNow()), spec);
    ASSERT_EQ(second.change, DecisionChange::kCreated);
    EXPECT_EQ(second.decision.offence(), 2u);  // from 1, not from the forged 5
    for (const Decision& made : {first.decision, second.decision}) {
      EXPECT_THAT(CheckedProtoTime(made.start()), IsOk());
      EXPECT_THAT(CheckedProtoTime(made.expiry()), IsOk());
      if (made.has_offence_last()) {
        EXPECT_THAT(CheckedProtoTime(made.offence_last()), IsOk());
      }
      EXPECT_THAT(CheckedProtoTime(made.offence_counted_until()), IsOk());
    }
  }
}

// A restart restores the offenders a rule with a memory past the restored 30 days still counts:
// the store's rows were loaded by their last offence (within 30 days) whatever their
// counted_until said, so an offender 40 days into a 90-day memory was forgotten by a restart
// (offence 1) while the uninterrupted table counted it (offence 2).
TEST_F(DecisionTableTest, ARestartKeepsAnOffenderALongMemoryStillCounts) {
  palisade::v1::DecisionSpec quarter = HourBlock();
  quarter.mutable_escalation()->set_factor(2);
  *quarter.mutable_escalation()->mutable_memory() = ToProtoDuration(absl::Hours(24 * 90));
  for (const std::string how : {"none", "restart"}) {
    SCOPED_TRACE(how);
    auto store = FreshStore(absl::StrCat("long-memory-", how, ".db"));
    ASSERT_THAT(store, IsOk());
    auto table = std::make_unique<DecisionTable>(clock_);
    table->SetStore(store->get(), {});
    DecisionUpdate first = table->Apply(Det("203.0.113.9", clock_.TimeNow()), quarter);
    ASSERT_EQ(first.change, DecisionChange::kCreated);
    ASSERT_EQ(first.decision.offence(), 1u);
    clock_.Advance(DecisionExpiry(first.decision) - clock_.TimeNow());
    ASSERT_THAT(table->ExpireDue(), SizeIs(1));
    clock_.Advance(absl::Hours(24 * 40));
    if (how == "restart") {
      table = std::make_unique<DecisionTable>(clock_);
      table->SetStore(store->get(), {});
      ASSERT_THAT(table->Restore(), IsOk());
    }
    DecisionUpdate next = table->Apply(Det("203.0.113.9", clock_.TimeNow()), quarter);
    ASSERT_EQ(next.change, DecisionChange::kCreated);
    EXPECT_EQ(next.decision.offence(), 2u);
    clock_.Advance(DecisionExpiry(next.decision) - clock_.TimeNow());
    table->ExpireDue();
  }
}

// A decision past its expiry that no sweep has reached yet (within the sweep interval, or
// restored after a restart) ends when the next detection comes, as the sweep would have ended
// it: the detection is a new offence, not an extension.
TEST_F(DecisionTableTest, AnExpiredDecisionNotYetSweptEndsInsteadOfBeingExtended) {
  DecisionUpdate first = Apply("203.0.113.7", clock_.TimeNow());
  ASSERT_EQ(first.change, DecisionChange::kCreated);
  clock_.Advance(absl::Minutes(61));
  changes_.clear();
  DecisionUpdate next = Apply("203.0.113.7", clock_.TimeNow());
  ASSERT_EQ(next.change, DecisionChange::kCreated);
  EXPECT_NE(next.decision.id(), first.decision.id());
  EXPECT_EQ(next.decision.offence(), 2u);
  EXPECT_EQ(DecisionExpiry(next.decision) - FromProtoTime(next.decision.start()), absl::Hours(2));
  EXPECT_EQ(changes_, (std::vector<DecisionChange>{DecisionChange::kExpired,
                                                   DecisionChange::kCreated}));
  absl::StatusOr<Decision> ended = table_.Get(first.decision.id());
  ASSERT_THAT(ended, IsOk());
  EXPECT_FALSE(ended->active());
  EXPECT_EQ(DecisionExpiry(*ended), DecisionExpiry(first.decision));
  EXPECT_EQ(table_.active_count(), 1u);
  EXPECT_EQ(table_.expiry_entries(), 1u);
  EXPECT_THAT(table_.ExpireDue(), SizeIs(0));  // nothing left for the sweep
  // The same through ApplyAll (an ingest batch): the expiry is heard before the new decision.
  clock_.Advance(absl::Hours(2) + absl::Minutes(1));
  changes_.clear();
  CompiledRule rule = SshHourBlockRule();
  *rule.proto.mutable_decision()->mutable_escalation() = escalation_;
  rule.proto.mutable_decision()->set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
  std::vector<Detection> detections = {Det("203.0.113.7", clock_.TimeNow())};
  detections[0].rule = &rule;
  std::vector<DecisionUpdate> updates = table_.ApplyAll(detections);
  ASSERT_THAT(updates, SizeIs(1));
  EXPECT_EQ(updates[0].change, DecisionChange::kCreated);
  EXPECT_EQ(updates[0].decision.offence(), 3u);
  EXPECT_EQ(changes_, (std::vector<DecisionChange>{DecisionChange::kExpired,
                                                   DecisionChange::kCreated}));
}

// An escalation factor that is not a number escalates nothing (it gave the cap: NaN <= 1 is
// false).
TEST_F(DecisionTableTest, ANaNEscalationFactorKeepsTheBaseDuration) {
  escalation_.set_factor(std::numeric_limits<double>::quiet_NaN());
  for (uint32_t offence = 1; offence <= 2; ++offence) {
    DecisionUpdate u = Apply("203.0.113.7", clock_.TimeNow());
    ASSERT_EQ(u.change, DecisionChange::kCreated);
    ASSERT_EQ(u.decision.offence(), offence);
    EXPECT_EQ(DecisionExpiry(u.decision) - FromProtoTime(u.decision.start()), absl::Hours(1));
    clock_.Advance(DecisionExpiry(u.decision) - clock_.TimeNow());
    ASSERT_THAT(table_.ExpireDue(), SizeIs(1));
  }
}

TEST_F(DecisionTableTest, ExpiryUsesTheClock) {
  Apply("203.0.113.7", clock_.TimeNow());
  clock_.Advance(absl::Minutes(59));
  EXPECT_THAT(table_.ExpireDue(), SizeIs(0));
  clock_.Advance(absl::Minutes(1));
  std::vector<Decision> expired = table_.ExpireDue();
  ASSERT_THAT(expired, SizeIs(1));
  EXPECT_FALSE(expired[0].active());
  EXPECT_EQ(table_.active_count(), 0u);
  EXPECT_EQ(changes_,
            (std::vector<DecisionChange>{DecisionChange::kCreated, DecisionChange::kExpired}));
}

TEST_F(DecisionTableTest, StaleDetectionsDoNotCreateDecisions) {
  DecisionUpdate u = Apply("203.0.113.7", clock_.TimeNow() - absl::Hours(2));
  EXPECT_EQ(u.change, DecisionChange::kStale);
  EXPECT_EQ(table_.active_count(), 0u);
  EXPECT_THAT(table_.List({}), SizeIs(0));
}

TEST_F(DecisionTableTest, ManualBanAndUnban) {
  palisade::v1::AddDecisionRequest req;
  req.mutable_target()->set_value("2001:DB8::1");
  *req.mutable_duration() = ToProtoDuration(absl::Minutes(10));
  req.set_reason("operator");
  absl::StatusOr<Decision> d = table_.AddManual(req);
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->target().value(), "2001:db8::1");
  EXPECT_EQ(d->origin(), palisade::v1::ORIGIN_MANUAL);
  EXPECT_EQ(d->action(), palisade::v1::ACTION_BLOCK);
  EXPECT_EQ(d->actuator(), palisade::v1::ACTUATOR_ACCESS_RULE);

  absl::StatusOr<Decision> w = table_.Withdraw(d->id());
  ASSERT_THAT(w, IsOk());
  EXPECT_FALSE(w->active());
  EXPECT_THAT(table_.Withdraw(d->id()), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(table_.Withdraw("nope"), StatusIs(absl::StatusCode::kNotFound));
}

// A range of one address ("203.0.113.7/32", "2001:db8::1/128") is that address: one decision,
// not a second one keyed by its text that a bouncer's ipset (hash:net) would take as the same
// entry and remove with the other's expiry.
TEST_F(DecisionTableTest, AManualHostRangeIsADecisionOnItsAddress) {
  for (const auto& [ip, range] : std::vector<std::pair<std::string, std::string>>{
           {"203.0.113.7", "203.0.113.7/32"}, {"2001:db8::1", "2001:db8::1/128"}}) {
    SCOPED_TRACE(range);
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_kind(palisade::v1::TARGET_KIND_IP);
    req.mutable_target()->set_value(ip);
    *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
    absl::StatusOr<Decision> first = table_.AddManual(req);
    ASSERT_THAT(first, IsOk());
    const size_t active = table_.active_count();

    req.mutable_target()->set_kind(palisade::v1::TARGET_KIND_RANGE);
    req.mutable_target()->set_value(range);
    *req.mutable_duration() = ToProtoDuration(absl::Hours(24 * 30));
    absl::StatusOr<Decision> second = table_.AddManual(req);
    ASSERT_THAT(second, IsOk());
    EXPECT_EQ(second->target().kind(), palisade::v1::TARGET_KIND_IP);
    EXPECT_EQ(second->target().value(), ip);
    EXPECT_EQ(second->id(), first->id());
    EXPECT_EQ(DecisionExpiry(*second), clock_.TimeNow() + absl::Hours(24 * 30));
    EXPECT_EQ(table_.active_count(), active);
  }
  EXPECT_EQ(table_.active_count(), 2u);
}

TEST_F(DecisionTableTest, FeedSyncCreatesRefreshesAndWithdrawsOnlyFeedDecisions) {
  auto feed = [](const std::string& value) {
    DecisionTable::FeedTarget f;
    f.target.set_kind(value.find('/') == std::string::npos ? palisade::v1::TARGET_KIND_IP
                                                           : palisade::v1::TARGET_KIND_RANGE);
    f.target.set_value(value);
    f.reason = "feed drop";
    return f;
  };
  palisade::v1::DecisionSpec spec;
  spec.set_action(palisade::v1::ACTION_BLOCK);
  spec.set_actuator(palisade::v1::ACTUATOR_IP_LIST);
  *spec.mutable_duration() = ToProtoDuration(absl::Hours(24));
  // A rule already banned 203.0.113.7: the feed leaves that decision alone.
  Apply("203.0.113.7", clock_.TimeNow());
  std::vector<DecisionUpdate> first = table_.SyncFeed(
      {feed("198.51.100.0/24"), feed("192.0.2.1"), feed("203.0.113.7")}, spec, absl::InfinitePast());
  ASSERT_THAT(first, SizeIs(2));
  EXPECT_EQ(first[0].change, DecisionChange::kCreated);
  EXPECT_EQ(first[0].decision.origin(), palisade::v1::ORIGIN_FEED);
  EXPECT_EQ(first[0].decision.actuator(), palisade::v1::ACTUATOR_IP_LIST);
  EXPECT_EQ(first[0].decision.reason(), "feed drop");

  // The same set again changes nothing; a refresh horizon past the expiry extends both.
  EXPECT_THAT(table_.SyncFeed({feed("198.51.100.0/24"), feed("192.0.2.1")}, spec,
                              absl::InfinitePast()),
              SizeIs(0));
  clock_.Advance(absl::Hours(20));
  std::vector<DecisionUpdate> refreshed = table_.SyncFeed(
      {feed("198.51.100.0/24"), feed("192.0.2.1")}, spec, clock_.TimeNow() + absl::Hours(12));
  ASSERT_THAT(refreshed, SizeIs(2));
  EXPECT_EQ(refreshed[0].change, DecisionChange::kExtended);
  EXPECT_EQ(DecisionExpiry(refreshed[0].decision), clock_.TimeNow() + absl::Hours(24));

  // 192.0.2.1 left the feed: withdrawn; the rule's decision stays.
  std::vector<DecisionUpdate> removed =
      table_.SyncFeed({feed("198.51.100.0/24")}, spec, absl::InfinitePast());
  ASSERT_THAT(removed, SizeIs(1));
  EXPECT_EQ(removed[0].change, DecisionChange::kWithdrawn);
  EXPECT_EQ(removed[0].decision.target().value(), "192.0.2.1");
  EXPECT_THAT(table_.SyncFeed({}, spec, absl::InfinitePast()), SizeIs(1));
  DecisionFilter active;
  active.active_only = true;
  std::vector<Decision> left = table_.List(active);
  ASSERT_THAT(left, SizeIs(1));
  EXPECT_EQ(left[0].target().value(), "203.0.113.7");
  EXPECT_EQ(left[0].origin(), palisade::v1::ORIGIN_RULE);
}

// Issue 11: a new claim on a decided target must not be lost to the old decision's origin,
// actuator or dry run. Enforcement the strongest active, then manual over rule and feed, then
// the stronger action, then rule > feed.
class ClaimsTest : public DecisionTableTest {
 protected:
  ClaimsTest() {
    table_.AddListener([this](const DecisionUpdate& u) { heard_.push_back(u); });
  }
  DecisionUpdate Rule(absl::string_view ip, absl::Duration duration, bool dry_run,
                      palisade::v1::Actuator actuator = palisade::v1::ACTUATOR_ACCESS_RULE) {
    palisade::v1::DecisionSpec spec;
    spec.set_action(palisade::v1::ACTION_BLOCK);
    *spec.mutable_duration() = ToProtoDuration(duration);
    spec.set_actuator(actuator);
    spec.set_dry_run(dry_run);
    return table_.Apply(Det(ip, clock_.TimeNow()), spec);
  }
  // A live access-rule decision of `action` from rule `rule_id`.
  DecisionUpdate RuleAction(absl::string_view ip, palisade::v1::Action action,
                            absl::Duration duration, absl::string_view rule_id) {
    palisade::v1::DecisionSpec spec;
    spec.set_action(action);
    *spec.mutable_duration() = ToProtoDuration(duration);
    spec.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
    Detection d = Det(ip, clock_.TimeNow());
    d.rule_id = std::string(rule_id);
    return table_.Apply(d, spec);
  }
  absl::StatusOr<Decision> Manual(absl::string_view ip, absl::Duration duration) {
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_value(std::string(ip));
    *req.mutable_duration() = ToProtoDuration(duration);
    return table_.AddManual(req);
  }
  std::vector<DecisionUpdate> Feed(const std::vector<std::string>& targets) {
    std::vector<DecisionTable::FeedTarget> desired;
    for (const std::string& t : targets) {
      DecisionTable::FeedTarget f;
      f.target.set_kind(palisade::v1::TARGET_KIND_IP);
      f.target.set_value(t);
      f.reason = "feed drop";
      desired.push_back(f);
    }
    palisade::v1::DecisionSpec spec;
    spec.set_action(palisade::v1::ACTION_BLOCK);
    spec.set_actuator(palisade::v1::ACTUATOR_IP_LIST);
    *spec.mutable_duration() = ToProtoDuration(absl::Hours(24));
    return table_.SyncFeed(desired, spec, clock_.TimeNow() + absl::Hours(12));
  }
  Decision Active(absl::string_view ip) {
    DecisionFilter f;
    f.target = std::string(ip);
    f.active_only = true;
    std::vector<Decision> active = table_.List(f);
    EXPECT_THAT(active, SizeIs(1));
    return active.empty() ? Decision() : active[0];
  }
  std::vector<DecisionUpdate> heard_;
};

// ApplyAll hears a withdrawal just before the decision that replaced it, in the detections'
// order, and returns one update per detection (the listeners' list is built only then).
TEST_F(ClaimsTest, ApplyAllHearsAWithdrawalBeforeItsReplacementInOrder) {
  DecisionUpdate dry = Rule("203.0.113.7", absl::Hours(1), /*dry_run=*/true);
  ASSERT_EQ(dry.change, DecisionChange::kCreated);
  heard_.clear();
  CompiledRule rule;
  rule.proto.set_id("ssh");
  rule.proto.mutable_decision()->set_action(palisade::v1::ACTION_BLOCK);
  *rule.proto.mutable_decision()->mutable_duration() = ToProtoDuration(absl::Hours(1));
  std::vector<Detection> detections;
  for (const char* ip : {"198.51.100.1", "203.0.113.7", "198.51.100.2"}) {
    detections.push_back(Det(ip, clock_.TimeNow()));
    detections.back().rule = &rule;
    detections.back().rule_id = "ssh";
  }
  std::vector<DecisionChange> before;
  std::vector<DecisionUpdate> updates =
      table_.ApplyAll(detections, [&](const std::vector<DecisionUpdate>& u) {
        for (const DecisionUpdate& x : u) before.push_back(x.change);
      });
  ASSERT_THAT(updates, SizeIs(3));
  EXPECT_EQ(before, (std::vector<DecisionChange>{DecisionChange::kCreated, DecisionChange::kCreated,
                                                  DecisionChange::kCreated}));
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(updates[i].decision.target().value(), detections[i].key);
    EXPECT_FALSE(updates[i].decision.dry_run());
  }
  ASSERT_THAT(heard_, SizeIs(4));
  EXPECT_EQ(heard_[0].decision.id(), updates[0].decision.id());
  EXPECT_EQ(heard_[1].change, DecisionChange::kWithdrawn);
  EXPECT_EQ(heard_[1].decision.id(), dry.decision.id());
  EXPECT_EQ(heard_[2].decision.id(), updates[1].decision.id());
  EXPECT_EQ(heard_[3].decision.id(), updates[2].decision.id());
  // Without a withdrawal, the listeners hear exactly the updates.
  heard_.clear();
  detections.resize(1);
  detections[0].key = "198.51.100.3";
  updates = table_.ApplyAll(detections);
  ASSERT_THAT(heard_, SizeIs(1));
  EXPECT_EQ(heard_[0].decision.id(), updates[0].decision.id());
}

TEST_F(ClaimsTest, ManualBanOverADryRunDecisionReachesTheEdgeAndTheDryRunResumesAfter) {
  DecisionUpdate dry = Rule("203.0.113.7", absl::Hours(1), /*dry_run=*/true);
  ASSERT_EQ(dry.change, DecisionChange::kCreated);
  heard_.clear();
  absl::StatusOr<Decision> manual = Manual("203.0.113.7", absl::Minutes(10));
  ASSERT_THAT(manual, IsOk());
  EXPECT_FALSE(manual->dry_run());
  EXPECT_EQ(manual->origin(), palisade::v1::ORIGIN_MANUAL);
  EXPECT_NE(manual->id(), dry.decision.id());
  // The dispatcher hears the dry-run decision end, then the live one begin: an apply goes out.
  ASSERT_THAT(heard_, SizeIs(2));
  EXPECT_EQ(heard_[0].change, DecisionChange::kWithdrawn);
  EXPECT_EQ(heard_[0].decision.id(), dry.decision.id());
  EXPECT_EQ(heard_[1].change, DecisionChange::kCreated);
  EXPECT_EQ(heard_[1].decision.id(), manual->id());
  EXPECT_EQ(Active("203.0.113.7").id(), manual->id());
  EXPECT_EQ(table_.active_count(), 1u);
  // The manual ban ends; the rule's dry run still has 50 minutes: it is decided again.
  heard_.clear();
  clock_.Advance(absl::Minutes(10));
  EXPECT_THAT(table_.ExpireDue(), SizeIs(1));
  ASSERT_THAT(heard_, SizeIs(2));
  EXPECT_EQ(heard_[1].change, DecisionChange::kCreated);
  EXPECT_TRUE(heard_[1].decision.dry_run());
  EXPECT_EQ(heard_[1].decision.origin(), palisade::v1::ORIGIN_RULE);
  EXPECT_EQ(DecisionExpiry(heard_[1].decision), FromProtoTime(dry.decision.expiry()));
  clock_.Advance(absl::Minutes(50));
  EXPECT_THAT(table_.ExpireDue(), SizeIs(1));
  EXPECT_EQ(table_.active_count(), 0u);
}

TEST_F(ClaimsTest, ManualBanOverALocalOnlyDecisionReachesTheEdge) {
  Rule("203.0.113.8", absl::Hours(1), false, palisade::v1::ACTUATOR_NONE);
  absl::StatusOr<Decision> manual = Manual("203.0.113.8", absl::Hours(2));
  ASSERT_THAT(manual, IsOk());
  EXPECT_EQ(manual->actuator(), palisade::v1::ACTUATOR_ACCESS_RULE);
  EXPECT_EQ(Active("203.0.113.8").id(), manual->id());
  // A weaker claim later (the rule again) does not take it back.
  EXPECT_EQ(Rule("203.0.113.8", absl::Hours(1), false, palisade::v1::ACTUATOR_NONE).change,
            DecisionChange::kExtended);
  EXPECT_EQ(Active("203.0.113.8").actuator(), palisade::v1::ACTUATOR_ACCESS_RULE);
}

TEST_F(ClaimsTest, ARuleBanOnAFeedListedTargetOutlivesTheFeedEntry) {
  ASSERT_THAT(Feed({"203.0.113.9"}), SizeIs(1));
  DecisionUpdate rule = Rule("203.0.113.9", absl::Hours(1), false);
  ASSERT_EQ(rule.change, DecisionChange::kCreated);
  EXPECT_EQ(rule.decision.origin(), palisade::v1::ORIGIN_RULE);
  // The feed drops the entry: the rule's ban stays.
  heard_.clear();
  EXPECT_THAT(Feed({}), SizeIs(0));
  EXPECT_THAT(heard_, SizeIs(0));
  EXPECT_EQ(Active("203.0.113.9").id(), rule.decision.id());
  // And once the rule's ban ends, the dropped feed entry does not come back.
  clock_.Advance(absl::Hours(1));
  EXPECT_THAT(table_.ExpireDue(), SizeIs(1));
  EXPECT_EQ(table_.active_count(), 0u);
}

TEST_F(ClaimsTest, AFeedTargetCoveredByARuleDecisionIsEnforcedWhenThatDecisionEnds) {
  DecisionUpdate rule = Rule("203.0.113.10", absl::Hours(1), false);
  EXPECT_THAT(Feed({"203.0.113.10"}), SizeIs(0));  // covered by the rule's ban
  clock_.Advance(absl::Hours(1));
  heard_.clear();
  EXPECT_THAT(table_.ExpireDue(), SizeIs(1));
  ASSERT_THAT(heard_, SizeIs(2));
  EXPECT_EQ(heard_[0].change, DecisionChange::kExpired);
  EXPECT_EQ(heard_[1].change, DecisionChange::kCreated);
  EXPECT_EQ(heard_[1].decision.origin(), palisade::v1::ORIGIN_FEED);
  EXPECT_EQ(heard_[1].decision.actuator(), palisade::v1::ACTUATOR_IP_LIST);
  EXPECT_EQ(Active("203.0.113.10").id(), heard_[1].decision.id());
  // It is an ordinary feed decision from then on: the feed dropping it withdraws it.
  std::vector<DecisionUpdate> dropped = Feed({});
  ASSERT_THAT(dropped, SizeIs(1));
  EXPECT_EQ(dropped[0].change, DecisionChange::kWithdrawn);
}

TEST_F(ClaimsTest, AFeedReplacesADryRunRuleDecisionAndTheOperatorsUnbanKeepsTheFeed) {
  Rule("203.0.113.11", absl::Hours(1), /*dry_run=*/true);
  std::vector<DecisionUpdate> sync = Feed({"203.0.113.11"});
  ASSERT_THAT(sync, SizeIs(2));
  EXPECT_EQ(sync[0].change, DecisionChange::kWithdrawn);
  EXPECT_EQ(sync[1].change, DecisionChange::kCreated);
  EXPECT_EQ(Active("203.0.113.11").origin(), palisade::v1::ORIGIN_FEED);
  // A manual ban on top, then the operator withdraws it: the feed's claim (still listed) is
  // decided again; the rule's dry run is not.
  absl::StatusOr<Decision> manual = Manual("203.0.113.11", absl::Hours(3));
  ASSERT_THAT(manual, IsOk());
  ASSERT_THAT(table_.Withdraw(manual->id()), IsOk());
  Decision after = Active("203.0.113.11");
  EXPECT_EQ(after.origin(), palisade::v1::ORIGIN_FEED);
  EXPECT_FALSE(after.dry_run());
}

// A rule decision that replaces a feed decision is a new offence: a repeat offender whose
// address a feed lists escalates as any other.
TEST_F(ClaimsTest, ARepeatOffenderOnAFeedListedAddressStillEscalates) {
  DecisionUpdate first = Apply("203.0.113.12", clock_.TimeNow());
  ASSERT_EQ(first.change, DecisionChange::kCreated);
  clock_.Advance(absl::Hours(1));
  ASSERT_THAT(table_.ExpireDue(), SizeIs(1));
  ASSERT_THAT(Feed({"203.0.113.12"}), SizeIs(1));
  DecisionUpdate second = Apply("203.0.113.12", clock_.TimeNow());
  ASSERT_EQ(second.change, DecisionChange::kCreated);
  EXPECT_EQ(second.decision.origin(), palisade::v1::ORIGIN_RULE);
  EXPECT_EQ(second.decision.offence(), 2u);
  EXPECT_EQ(DecisionExpiry(second.decision) - FromProtoTime(second.decision.start()),
            absl::Hours(2));
  // It ends; the feed's claim (still listed) takes over, and the offender is back.
  clock_.Advance(absl::Hours(2));
  ASSERT_THAT(table_.ExpireDue(), SizeIs(1));
  ASSERT_EQ(Active("203.0.113.12").origin(), palisade::v1::ORIGIN_FEED);
  DecisionUpdate third = Apply("203.0.113.12", clock_.TimeNow());
  ASSERT_EQ(third.change, DecisionChange::kCreated);
  EXPECT_EQ(third.decision.offence(), 3u);
  EXPECT_EQ(DecisionExpiry(third.decision) - FromProtoTime(third.decision.start()),
            absl::Hours(4));
}

// An allowlist reloaded ends the rule and feed decisions on what it covers, and the rule and
// feed claims waiting there; manual decisions stay.
TEST_F(ClaimsTest, WithdrawCoveredEndsRuleAndFeedDecisionsAndKeepsManualOnes) {
  ASSERT_EQ(Rule("203.0.113.20", absl::Hours(1), false).change, DecisionChange::kCreated);
  ASSERT_EQ(Rule("198.51.100.1", absl::Hours(1), false).change, DecisionChange::kCreated);
  absl::StatusOr<Decision> manual = Manual("203.0.113.21", absl::Hours(1));
  ASSERT_THAT(manual, IsOk());
  ASSERT_THAT(Feed({"203.0.113.21", "203.0.113.22"}), SizeIs(1));  // .21 waits behind the ban
  ASSERT_EQ(table_.active_count(), 4u);
  heard_.clear();
  std::vector<DecisionUpdate> updates =
      table_.WithdrawCovered(*CidrSet::Parse({"203.0.113.16/28"}));
  ASSERT_THAT(updates, SizeIs(2));
  std::set<std::string> withdrawn;
  for (const DecisionUpdate& u : updates) {
    EXPECT_EQ(u.change, DecisionChange::kWithdrawn);
    withdrawn.insert(u.decision.target().value());
  }
  EXPECT_EQ(withdrawn, (std::set<std::string>{"203.0.113.20", "203.0.113.22"}));
  EXPECT_THAT(heard_, SizeIs(2));
  EXPECT_EQ(table_.active_count(), 2u);
  EXPECT_EQ(Active("203.0.113.21").id(), manual->id());
  // The feed's claim that waited behind the manual ban is gone with the others.
  ASSERT_THAT(table_.Withdraw(manual->id()), IsOk());
  EXPECT_EQ(table_.active_count(), 1u);
}

// A mirror's reload leaves the writer's decisions to the writer (its withdrawals come back
// through the decision log).
TEST_F(ClaimsTest, AMirrorWithdrawsNothingCoveredOfItsOwn) {
  ASSERT_EQ(Rule("203.0.113.20", absl::Hours(1), false).change, DecisionChange::kCreated);
  table_.SetForward([](const Detection&) {});
  EXPECT_THAT(table_.WithdrawCovered(*CidrSet::Parse({"203.0.113.16/28"})), SizeIs(0));
  EXPECT_EQ(table_.active_count(), 1u);
  table_.SetForward(nullptr);
  EXPECT_THAT(table_.WithdrawCovered(*CidrSet::Parse({"203.0.113.16/28"})), SizeIs(1));
}

// A scanner's URL probe is challenged first, then its User-Agent matches a blocking rule on a
// later line: the block is the stronger action and must reach the edge at once (it waited
// behind the challenge until the challenge ended). The challenge waits behind the block, and
// is decided again when the block ends if it is still due.
TEST_F(ClaimsTest, ARuleBlockReplacesARuleChallengeWhichResumesAfter) {
  absl::StatusOr<std::unique_ptr<Store>> store = FreshStore("block_over_challenge.db");
  ASSERT_THAT(store, IsOk());
  table_.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  const DecisionUpdate challenge =
      RuleAction("203.0.113.30", palisade::v1::ACTION_MANAGED_CHALLENGE, absl::Hours(1), "probe");
  ASSERT_EQ(challenge.change, DecisionChange::kCreated);
  heard_.clear();
  clock_.Advance(absl::Minutes(10));
  const DecisionUpdate block =
      RuleAction("203.0.113.30", palisade::v1::ACTION_BLOCK, absl::Minutes(30), "scanner-ua");
  ASSERT_EQ(block.change, DecisionChange::kCreated);
  EXPECT_EQ(block.decision.action(), palisade::v1::ACTION_BLOCK);
  EXPECT_EQ(block.decision.rule_id(), "scanner-ua");
  EXPECT_NE(block.decision.id(), challenge.decision.id());
  // The same episode: a replacement is no new offence.
  EXPECT_EQ(block.decision.offence(), challenge.decision.offence());
  // The actuators hear the challenge end, then the block begin, each with its operation.
  ASSERT_THAT(heard_, SizeIs(2));
  EXPECT_EQ(heard_[0].change, DecisionChange::kWithdrawn);
  EXPECT_EQ(heard_[0].decision.id(), challenge.decision.id());
  EXPECT_EQ(heard_[1].change, DecisionChange::kCreated);
  EXPECT_EQ(heard_[1].decision.id(), block.decision.id());
  EXPECT_GT(heard_[1].outbox_seq, heard_[0].outbox_seq);
  EXPECT_GT(heard_[0].outbox_seq, 0);
  absl::StatusOr<std::vector<OutboxRow>> outbox = (*store)->LoadOutbox();
  ASSERT_THAT(outbox, IsOk());
  ASSERT_THAT(*outbox, SizeIs(3));
  EXPECT_FALSE((*outbox)[1].apply);
  EXPECT_EQ((*outbox)[1].decision.id(), challenge.decision.id());
  EXPECT_TRUE((*outbox)[2].apply);
  EXPECT_EQ((*outbox)[2].decision.action(), palisade::v1::ACTION_BLOCK);
  // Each names the other, in the updates and durably in the outbox rows, so the dispatcher
  // knows the block replaces what stands at the edge (and keeps the challenge until it does).
  EXPECT_EQ(heard_[0].decision.replaced_by(), block.decision.id());
  EXPECT_EQ(block.decision.replaces(), challenge.decision.id());
  EXPECT_EQ((*outbox)[1].decision.replaced_by(), block.decision.id());
  EXPECT_EQ((*outbox)[2].decision.replaces(), challenge.decision.id());
  EXPECT_EQ(Active("203.0.113.30").replaces(), challenge.decision.id());
  EXPECT_EQ(Active("203.0.113.30").id(), block.decision.id());
  EXPECT_EQ(table_.active_count(), 1u);
  // The block ends with 20 minutes of the challenge left: the challenge is decided again.
  heard_.clear();
  clock_.Advance(absl::Minutes(30));
  EXPECT_THAT(table_.ExpireDue(), SizeIs(1));
  ASSERT_THAT(heard_, SizeIs(2));
  EXPECT_EQ(heard_[0].change, DecisionChange::kExpired);
  EXPECT_EQ(heard_[1].change, DecisionChange::kCreated);
  EXPECT_EQ(heard_[1].decision.action(), palisade::v1::ACTION_MANAGED_CHALLENGE);
  EXPECT_EQ(heard_[1].decision.rule_id(), "probe");
  EXPECT_EQ(DecisionExpiry(heard_[1].decision), DecisionExpiry(challenge.decision));
  EXPECT_EQ(heard_[1].decision.offence(), block.decision.offence());
  // A claim taking over after an expiry replaces nothing that stands.
  EXPECT_EQ(heard_[0].decision.replaced_by(), "");
  EXPECT_EQ(heard_[1].decision.replaces(), "");
}

// The other way round: a challenge on a blocked address only waits behind the block.
TEST_F(ClaimsTest, ARuleChallengeOnABlockedAddressDoesNotWeakenTheBlock) {
  const DecisionUpdate block =
      RuleAction("203.0.113.31", palisade::v1::ACTION_BLOCK, absl::Hours(1), "scanner-ua");
  ASSERT_EQ(block.change, DecisionChange::kCreated);
  heard_.clear();
  for (palisade::v1::Action weaker :
       {palisade::v1::ACTION_MANAGED_CHALLENGE, palisade::v1::ACTION_CHALLENGE}) {
    const DecisionUpdate challenge = RuleAction("203.0.113.31", weaker, absl::Hours(2), "probe");
    EXPECT_EQ(challenge.change, DecisionChange::kExtended);
    EXPECT_EQ(challenge.decision.id(), block.decision.id());
    EXPECT_EQ(challenge.decision.action(), palisade::v1::ACTION_BLOCK);
  }
  EXPECT_THAT(heard_, SizeIs(2));
  EXPECT_EQ(Active("203.0.113.31").id(), block.decision.id());
  // A legacy (always interactive) challenge is stronger than a managed one: it is what waits.
  clock_.Advance(absl::Hours(1));
  heard_.clear();
  EXPECT_THAT(table_.ExpireDue(), SizeIs(1));
  ASSERT_THAT(heard_, SizeIs(2));
  EXPECT_EQ(heard_[1].change, DecisionChange::kCreated);
  EXPECT_EQ(heard_[1].decision.action(), palisade::v1::ACTION_CHALLENGE);
}

// Among rule and feed claims the stronger action wins whatever the origin (a feed's block over
// a rule's challenge); an operator's decision keeps precedence over any rule or feed claim (a
// manual challenge is what the operator chose for that address).
TEST_F(ClaimsTest, AStrongerActionWinsOverRulesAndFeedsButNotOverTheOperator) {
  ASSERT_EQ(
      RuleAction("203.0.113.32", palisade::v1::ACTION_CHALLENGE, absl::Hours(1), "probe").change,
      DecisionChange::kCreated);
  std::vector<DecisionUpdate> sync = Feed({"203.0.113.32"});
  ASSERT_THAT(sync, SizeIs(2));
  EXPECT_EQ(sync[0].change, DecisionChange::kWithdrawn);
  EXPECT_EQ(sync[1].change, DecisionChange::kCreated);
  EXPECT_EQ(Active("203.0.113.32").origin(), palisade::v1::ORIGIN_FEED);
  // A rule's challenge on the feed-blocked address waits behind the feed's block...
  EXPECT_EQ(
      RuleAction("203.0.113.32", palisade::v1::ACTION_CHALLENGE, absl::Hours(1), "probe").change,
      DecisionChange::kExtended);
  EXPECT_EQ(Active("203.0.113.32").action(), palisade::v1::ACTION_BLOCK);
  // ...and is decided again when the feed drops the entry.
  std::vector<DecisionUpdate> dropped = Feed({});
  ASSERT_THAT(dropped, SizeIs(2));
  EXPECT_EQ(dropped[1].change, DecisionChange::kCreated);
  EXPECT_EQ(dropped[1].decision.origin(), palisade::v1::ORIGIN_RULE);
  EXPECT_EQ(dropped[1].decision.action(), palisade::v1::ACTION_CHALLENGE);

  palisade::v1::AddDecisionRequest req;
  req.mutable_target()->set_value("203.0.113.33");
  req.set_action(palisade::v1::ACTION_CHALLENGE);
  *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
  absl::StatusOr<Decision> manual = table_.AddManual(req);
  ASSERT_THAT(manual, IsOk());
  EXPECT_EQ(
      RuleAction("203.0.113.33", palisade::v1::ACTION_BLOCK, absl::Hours(1), "scanner-ua").change,
      DecisionChange::kExtended);
  EXPECT_EQ(Active("203.0.113.33").id(), manual->id());
  EXPECT_THAT(Feed({"203.0.113.33"}), SizeIs(0));  // the feed's block waits too
  EXPECT_EQ(Active("203.0.113.33").id(), manual->id());
}

// A claim decided again after the offender was forgotten (its escalation memory shorter than
// the decisions) carries the offence times of the decision it follows: a mirror that takes
// over then keeps the count as long as the writer would, instead of guessing 30 days.
TEST_F(ClaimsTest, AReinstatedClaimWhoseOffenderWasForgottenCarriesTheEndedDecisionsTimes) {
  palisade::v1::DecisionSpec spec;
  spec.set_action(palisade::v1::ACTION_BLOCK);
  spec.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
  *spec.mutable_escalation()->mutable_memory() = ToProtoDuration(absl::Minutes(5));
  *spec.mutable_duration() = ToProtoDuration(absl::Hours(1));
  spec.set_dry_run(true);
  ASSERT_EQ(table_.Apply(Det("203.0.113.34", clock_.TimeNow()), spec).change,
            DecisionChange::kCreated);
  spec.set_dry_run(false);
  *spec.mutable_duration() = ToProtoDuration(absl::Minutes(30));
  const DecisionUpdate live = table_.Apply(Det("203.0.113.34", clock_.TimeNow()), spec);
  ASSERT_EQ(live.change, DecisionChange::kCreated);
  ASSERT_TRUE(live.decision.has_offence_counted_until());
  ASSERT_TRUE(live.decision.has_offence_last());
  // Past its 5-minute memory the offender is forgotten, while the live block still stands.
  clock_.Advance(absl::Minutes(10));
  table_.ExpireDue();
  ASSERT_EQ(table_.offenders(), 0u);
  heard_.clear();
  clock_.Advance(absl::Minutes(20));
  EXPECT_THAT(table_.ExpireDue(), SizeIs(1));
  ASSERT_THAT(heard_, SizeIs(2));
  const Decision& reinstated = heard_[1].decision;
  ASSERT_EQ(heard_[1].change, DecisionChange::kCreated);
  ASSERT_TRUE(reinstated.dry_run());
  ASSERT_TRUE(reinstated.has_offence_counted_until());
  ASSERT_TRUE(reinstated.has_offence_last());
  EXPECT_EQ(FromProtoTime(reinstated.offence_counted_until()),
            FromProtoTime(live.decision.offence_counted_until()));
  EXPECT_EQ(FromProtoTime(reinstated.offence_last()), FromProtoTime(live.decision.offence_last()));
  // The table's own copy (what Get, List and the store see) carries them too.
  absl::StatusOr<Decision> kept = table_.Get(reinstated.id());
  ASSERT_THAT(kept, IsOk());
  EXPECT_EQ(FromProtoTime(kept->offence_last()), FromProtoTime(live.decision.offence_last()));
}

// Cluster: the writer's claims listener hears a claim that begins to wait (no store, no
// decision changed); a mirror keeps the snapshot behind the very decision it names, decides
// nothing when its own sweep ends that decision, and decides the claim once it writes.
TEST_F(DecisionTableTest, AMirrorKeepsTheWritersWaitingClaimsAndDecidesThemOnceItWrites) {
  DecisionTable writer(clock_);
  std::vector<DecisionUpdate> sent;
  std::vector<WaitingClaims> snapshots;
  writer.AddClaimsSetListener(
      [&](const std::vector<DecisionUpdate>& set, const std::vector<WaitingClaims>& waiting) {
        sent.insert(sent.end(), set.begin(), set.end());
        snapshots.insert(snapshots.end(), waiting.begin(), waiting.end());
      });
  palisade::v1::AddDecisionRequest req;
  req.mutable_target()->set_value("192.0.2.7");
  *req.mutable_duration() = ToProtoDuration(absl::Minutes(10));
  ASSERT_THAT(writer.AddManual(req), IsOk());
  ASSERT_THAT(sent, SizeIs(1));
  const Decision block = sent[0].decision;
  // The rule's block waits behind the operator's: heard with the snapshot of the claims.
  writer.Apply(Det("192.0.2.7", clock_.TimeNow()), HourBlock());
  ASSERT_THAT(snapshots, SizeIs(1));
  EXPECT_EQ(snapshots[0].target, "192.0.2.7");
  EXPECT_EQ(snapshots[0].decision_id, block.id());
  ASSERT_THAT(snapshots[0].claims, SizeIs(1));
  EXPECT_EQ(snapshots[0].claims[0].rule_id, "ssh");

  table_.SetForward([](const Detection&) {});  // a mirror
  table_.Mirror(DecisionChange::kCreated, block);
  const size_t charged = table_.active_bytes();
  WaitingClaims behind_another = snapshots[0];
  behind_another.decision_id = "0000000000000abc";
  table_.MirrorWaiting({behind_another});  // not behind the decision held here: dropped
  EXPECT_THAT(table_.Waiting(), SizeIs(0));
  table_.MirrorWaiting(snapshots);
  ASSERT_THAT(table_.Waiting(), SizeIs(1));
  EXPECT_GT(table_.active_bytes(), charged) << "charged to the active budget";
  EXPECT_EQ(changes_, (std::vector<DecisionChange>{DecisionChange::kCreated}));

  // Its own sweep ends the block, and decides nothing: what follows is the writer's word.
  clock_.Advance(absl::Minutes(10));
  EXPECT_THAT(table_.ExpireDue(), SizeIs(1));
  EXPECT_EQ(table_.active_count(), 0u);
  // The writer's word never came (it died): writing now, this table decides the claim.
  table_.SetForward(nullptr);
  table_.ExpireDue();
  std::vector<Decision> now = table_.List({.target = "192.0.2.7", .active_only = true});
  ASSERT_THAT(now, SizeIs(1));
  EXPECT_EQ(now[0].origin(), palisade::v1::ORIGIN_RULE);
  EXPECT_EQ(now[0].rule_id(), "ssh");
}

// Cluster: a full state does not drop a mirror's waiting claims (the writer's snapshots follow
// it one message per target, and a writer that dies in between would leave none): they are
// marked stale, each snapshot that comes replaces its target's, and only those still marked
// when the writer says its snapshots ended go.
TEST_F(DecisionTableTest, AMirrorKeepsItsWaitingClaimsAtAStateUntilTheWritersSnapshotsEnd) {
  DecisionTable writer(clock_);
  std::vector<DecisionUpdate> sent;
  std::vector<WaitingClaims> snapshots;
  writer.AddClaimsSetListener(
      [&](const std::vector<DecisionUpdate>& set, const std::vector<WaitingClaims>& waiting) {
        sent.insert(sent.end(), set.begin(), set.end());
        snapshots.insert(snapshots.end(), waiting.begin(), waiting.end());
      });
  palisade::v1::AddDecisionRequest req;
  req.mutable_target()->set_value("192.0.2.7");
  *req.mutable_duration() = ToProtoDuration(absl::Minutes(10));
  ASSERT_THAT(writer.AddManual(req), IsOk());
  ASSERT_THAT(sent, SizeIs(1));
  const Decision block = sent[0].decision;
  writer.Apply(Det("192.0.2.7", clock_.TimeNow()), HourBlock());
  ASSERT_THAT(snapshots, SizeIs(1));

  table_.SetForward([](const Detection&) {});  // a mirror
  table_.Mirror(DecisionChange::kCreated, block);
  table_.MirrorWaiting(snapshots);
  ASSERT_THAT(table_.Waiting(), SizeIs(1));
  // The writer dies after its state, before the snapshots: the claims stay.
  table_.MirrorState({block}, /*mark_stale=*/true);
  EXPECT_THAT(table_.Waiting(), SizeIs(1)) << "the waiting claims were dropped at the state";
  // A state whose snapshots came: the claims stay (as the writer's snapshot has them).
  table_.MirrorState({block}, /*mark_stale=*/true);
  table_.MirrorWaiting(snapshots);
  table_.MirrorWaitingEnd();
  EXPECT_THAT(table_.Waiting(), SizeIs(1)) << "a target whose snapshot came lost its claims";
  // A state after which no snapshot named the target (none wait there on the writer now).
  table_.MirrorState({block}, /*mark_stale=*/true);
  table_.MirrorWaitingEnd();
  EXPECT_THAT(table_.Waiting(), SizeIs(0)) << "claims the writer no longer has were kept";
}

// Cluster: a mirror whose clock runs ahead ends a decision by its own sweep before the writer's
// snapshot naming it comes: the snapshot is kept, and decided should this table write.
TEST_F(DecisionTableTest, AMirrorKeepsASnapshotBehindADecisionItsOwnSweepEnded) {
  DecisionTable writer(clock_);
  std::vector<DecisionUpdate> sent;
  std::vector<WaitingClaims> snapshots;
  writer.AddClaimsSetListener(
      [&](const std::vector<DecisionUpdate>& set, const std::vector<WaitingClaims>& waiting) {
        sent.insert(sent.end(), set.begin(), set.end());
        snapshots.insert(snapshots.end(), waiting.begin(), waiting.end());
      });
  palisade::v1::AddDecisionRequest req;
  req.mutable_target()->set_value("192.0.2.7");
  *req.mutable_duration() = ToProtoDuration(absl::Minutes(10));
  ASSERT_THAT(writer.AddManual(req), IsOk());
  ASSERT_THAT(sent, SizeIs(1));
  const Decision block = sent[0].decision;

  table_.SetForward([](const Detection&) {});  // a mirror
  table_.Mirror(DecisionChange::kCreated, block);
  writer.Apply(Det("192.0.2.7", clock_.TimeNow()), HourBlock());
  ASSERT_THAT(snapshots, SizeIs(1));
  // Before the snapshot comes, this table's sweep ends the block (its clock ahead).
  clock_.Advance(absl::Minutes(10));
  EXPECT_THAT(table_.ExpireDue(), SizeIs(1));
  table_.MirrorWaiting(snapshots);  // names the block this table ended
  // The writer dies: this table writes, and decides the claim.
  table_.SetForward(nullptr);
  table_.ExpireDue();
  std::vector<Decision> now = table_.List({.target = "192.0.2.7", .active_only = true});
  ASSERT_THAT(now, SizeIs(1)) << "the snapshot naming the ended decision was dropped";
  EXPECT_EQ(now[0].origin(), palisade::v1::ORIGIN_RULE);
  EXPECT_EQ(now[0].rule_id(), "ssh");
}

// The same, with a store and a restart in between: the snapshot naming the decision this
// mirror's sweep ended was written as claims behind no decision, which deleted their rows, and
// a take-over after the restart decided nothing.
TEST_F(DecisionTableTest, ASnapshotBehindADecisionAMirrorEndedSurvivesARestart) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/waiting_ended_here.db";
  std::remove(path.c_str());
  const std::string ip = "192.0.2.9";
  DecisionTable writer(clock_);
  std::vector<DecisionUpdate> sent;
  std::vector<WaitingClaims> snapshots;
  writer.AddClaimsSetListener(
      [&](const std::vector<DecisionUpdate>& set, const std::vector<WaitingClaims>& waiting) {
        sent.insert(sent.end(), set.begin(), set.end());
        snapshots.insert(snapshots.end(), waiting.begin(), waiting.end());
      });
  palisade::v1::AddDecisionRequest req;
  req.mutable_target()->set_value(ip);
  *req.mutable_duration() = ToProtoDuration(absl::Minutes(10));
  ASSERT_THAT(writer.AddManual(req), IsOk());
  ASSERT_THAT(sent, SizeIs(1));
  const Decision block = sent[0].decision;
  writer.Apply(Det(ip, clock_.TimeNow()), HourBlock());
  ASSERT_THAT(snapshots, SizeIs(1));
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    DecisionTable mirror(clock_);
    mirror.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
    mirror.SetForward([](const Detection&) {});
    mirror.Mirror(DecisionChange::kCreated, block);
    clock_.Advance(absl::Minutes(10));
    EXPECT_THAT(mirror.ExpireDue(), SizeIs(1));  // its clock ahead of the writer's
    mirror.MirrorWaiting(snapshots);              // names the block this table ended
    std::vector<WaitingClaimRow> rows = *(*store)->LoadWaitingClaims(clock_.TimeNow());
    ASSERT_THAT(rows, SizeIs(1)) << "the claims kept for a take-over left the store";
    EXPECT_EQ(rows[0].decision_id, block.id());
  }
  // Restarted, the writer gone: this node writes, and decides the claim.
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  DecisionTable table(clock_);
  table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  ASSERT_THAT(table.Restore(), IsOk());
  table.ExpireDue();
  std::vector<Decision> now = table.List({.target = ip, .active_only = true});
  ASSERT_THAT(now, SizeIs(1)) << "the claim kept behind the ended block was lost at the restart";
  EXPECT_EQ(now[0].origin(), palisade::v1::ORIGIN_RULE);
  EXPECT_EQ(now[0].rule_id(), "ssh");
}

// The same, the ended block's row unreadable at the restart (a corrupt or, as well, a busy or
// failing database): the restore fails, as on any other row it cannot read. It went on
// without the kept claims, and the next write for the target deleted their rows.
TEST_F(DecisionTableTest, ARestoreThatCannotReadTheDecisionAMirrorEndedFails) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/waiting_ended_fail.db";
  std::remove(path.c_str());
  const std::string ip = "192.0.2.9";
  DecisionTable writer(clock_);
  std::vector<DecisionUpdate> sent;
  std::vector<WaitingClaims> snapshots;
  writer.AddClaimsSetListener(
      [&](const std::vector<DecisionUpdate>& set, const std::vector<WaitingClaims>& waiting) {
        sent.insert(sent.end(), set.begin(), set.end());
        snapshots.insert(snapshots.end(), waiting.begin(), waiting.end());
      });
  palisade::v1::AddDecisionRequest req;
  req.mutable_target()->set_value(ip);
  *req.mutable_duration() = ToProtoDuration(absl::Minutes(10));
  ASSERT_THAT(writer.AddManual(req), IsOk());
  ASSERT_THAT(sent, SizeIs(1));
  const Decision block = sent[0].decision;
  writer.Apply(Det(ip, clock_.TimeNow()), HourBlock());
  ASSERT_THAT(snapshots, SizeIs(1));
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    DecisionTable mirror(clock_);
    mirror.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
    mirror.SetForward([](const Detection&) {});
    mirror.Mirror(DecisionChange::kCreated, block);
    clock_.Advance(absl::Minutes(10));
    EXPECT_THAT(mirror.ExpireDue(), SizeIs(1));
    mirror.MirrorWaiting(snapshots);
    ASSERT_THAT(*(*store)->LoadWaitingClaims(clock_.TimeNow()), SizeIs(1));
  }
  // A truncated message (field 1, five bytes announced, none there); the id is stored as a
  // blob.
  const std::string corrupt = absl::StrCat(
      "UPDATE decisions SET proto = x'0a05' WHERE CAST(id AS TEXT) = '", block.id(), "';");
  ::palisade::testing::ExecSql(path, corrupt.c_str());
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  ASSERT_THAT((*store)->LoadDecision(block.id()), StatusIs(absl::StatusCode::kDataLoss));
  DecisionTable table(clock_);
  table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  EXPECT_THAT(table.Restore(), StatusIs(absl::StatusCode::kDataLoss))
      << "restored without the claims kept behind the decision it could not read";
}

// The writer's end of a decision this mirror's own sweep ended first (the same copy) settles
// it: a snapshot naming that decision that comes later (a stale one) keeps nothing, and nothing
// is decided from it at a take-over. Before, the note of the end stayed (one per target for
// good) and such a snapshot was kept and decided.
TEST_F(DecisionTableTest, TheWritersEndOfADecisionAMirrorEndedFirstSettlesIt) {
  DecisionTable writer(clock_);
  std::vector<DecisionUpdate> sent;
  std::vector<WaitingClaims> snapshots;
  writer.AddClaimsSetListener(
      [&](const std::vector<DecisionUpdate>& set, const std::vector<WaitingClaims>& waiting) {
        sent.insert(sent.end(), set.begin(), set.end());
        snapshots.insert(snapshots.end(), waiting.begin(), waiting.end());
      });
  palisade::v1::AddDecisionRequest req;
  req.mutable_target()->set_value("192.0.2.7");
  *req.mutable_duration() = ToProtoDuration(absl::Minutes(10));
  ASSERT_THAT(writer.AddManual(req), IsOk());
  ASSERT_THAT(sent, SizeIs(1));
  const Decision block = sent[0].decision;
  writer.Apply(Det("192.0.2.7", clock_.TimeNow()), HourBlock());
  ASSERT_THAT(snapshots, SizeIs(1));

  table_.SetForward([](const Detection&) {});  // a mirror
  table_.Mirror(DecisionChange::kCreated, block);
  clock_.Advance(absl::Minutes(10));
  EXPECT_THAT(table_.ExpireDue(), SizeIs(1));  // this table's sweep first
  // The writer's own end of the block, as this table's sweep left it.
  Decision ended = table_.List({.target = "192.0.2.7"}).at(0);
  ASSERT_FALSE(ended.active());
  table_.Mirror(DecisionChange::kExpired, ended);
  table_.MirrorWaiting(snapshots);  // late: names the block both ended
  table_.SetForward(nullptr);
  table_.ExpireDue();
  EXPECT_THAT(table_.List({.target = "192.0.2.7", .active_only = true}), IsEmpty())
      << "a snapshot naming a decision the writer ended was kept and decided";
}

// Cluster (issue 17): a node that is not the writer mirrors the writer's decisions.
TEST_F(DecisionTableTest, MirrorSetsTheWritersCopyAndTellsTheListenersOnce) {
  DecisionTable writer(clock_);
  std::vector<DecisionUpdate> sent;
  writer.AddListener([&sent](const DecisionUpdate& u) { sent.push_back(u); });
  palisade::v1::AddDecisionRequest req;
  req.mutable_target()->set_value("192.0.2.7");
  *req.mutable_duration() = ToProtoDuration(absl::Minutes(10));
  ASSERT_THAT(writer.AddManual(req), IsOk());
  ASSERT_THAT(writer.AddManual(req), IsOk());  // extends it
  ASSERT_THAT(sent, SizeIs(2));
  for (const DecisionUpdate& u : sent) table_.Mirror(u.change, u.decision);
  EXPECT_EQ(changes_,
            (std::vector<DecisionChange>{DecisionChange::kCreated, DecisionChange::kExtended}));
  table_.Mirror(sent[1].change, sent[1].decision);  // heard twice: nothing new
  EXPECT_THAT(changes_, SizeIs(2));
  const std::string id = sent[0].decision.id();
  absl::StatusOr<Decision> got = table_.Get(id);
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->SerializeAsString(), sent[1].decision.SerializeAsString());
  EXPECT_EQ(table_.active_count(), 1u);

  // A state without it ends it here; one with another decision creates that one.
  Decision other = sent[1].decision;
  other.set_id("0000000000000abc");
  other.mutable_target()->set_value("192.0.2.8");
  table_.MirrorState({other});
  EXPECT_EQ(changes_, (std::vector<DecisionChange>{
                          DecisionChange::kCreated, DecisionChange::kExtended,
                          DecisionChange::kWithdrawn, DecisionChange::kCreated}));
  EXPECT_FALSE(table_.Get(id)->active());
  EXPECT_EQ(table_.active_count(), 1u);
  EXPECT_THAT(table_.List({.active_only = true}), SizeIs(1));
  table_.MirrorState({other});  // the same state again: nothing
  EXPECT_THAT(changes_, SizeIs(4));

  // The writer's expiry ends it; a later copy of the same target under a new id replaces it.
  clock_.Advance(absl::Hours(1));
  Decision ended = other;
  ended.set_active(false);
  table_.Mirror(DecisionChange::kExpired, ended);
  EXPECT_EQ(changes_.back(), DecisionChange::kExpired);
  EXPECT_EQ(table_.active_count(), 0u);
  EXPECT_THAT(table_.ExpireDue(), SizeIs(0));  // nothing left to expire here
  Decision again = other;
  again.set_id("0000000000000abd");
  *again.mutable_expiry() = ToProtoTime(clock_.TimeNow() + absl::Hours(1));
  table_.Mirror(DecisionChange::kCreated, again);
  Decision newer = again;
  newer.set_id("0000000000000abe");
  table_.Mirror(DecisionChange::kCreated, newer);  // the writer's word stands: one per target
  EXPECT_EQ(table_.active_count(), 1u);
  EXPECT_FALSE(table_.Get("0000000000000abd")->active());
  EXPECT_TRUE(table_.Get("0000000000000abe")->active());
}

// A change set of the writer's (a dry-run decision replaced by a manual ban: its withdrawal,
// then the new one), mirrored whole, is heard in one call, as the writer's listeners heard it.
TEST_F(DecisionTableTest, MirrorAllTellsASetListenerTheWholeSetInOneCall) {
  DecisionTable writer(clock_);
  std::vector<std::vector<DecisionUpdate>> sets;
  writer.AddSetListener([&sets](const std::vector<DecisionUpdate>& s) { sets.push_back(s); });
  palisade::v1::DecisionSpec spec;
  spec.set_action(palisade::v1::ACTION_BLOCK);
  *spec.mutable_duration() = ToProtoDuration(absl::Hours(1));
  spec.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
  spec.set_dry_run(true);
  ASSERT_EQ(writer.Apply(Det("203.0.113.7", clock_.TimeNow()), spec).change,
            DecisionChange::kCreated);
  palisade::v1::AddDecisionRequest req;
  req.mutable_target()->set_value("203.0.113.7");
  *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
  ASSERT_THAT(writer.AddManual(req), IsOk());
  ASSERT_THAT(sets, SizeIs(2));
  ASSERT_THAT(sets[1], SizeIs(2));
  std::vector<std::vector<DecisionChange>> heard;
  table_.AddSetListener([&heard](const std::vector<DecisionUpdate>& s) {
    heard.emplace_back();
    for (const DecisionUpdate& u : s) heard.back().push_back(u.change);
  });
  table_.MirrorAll(sets[0]);
  table_.MirrorAll(sets[1]);
  EXPECT_EQ(heard, (std::vector<std::vector<DecisionChange>>{
                       {DecisionChange::kCreated},
                       {DecisionChange::kWithdrawn, DecisionChange::kCreated}}));
  EXPECT_EQ(changes_, (std::vector<DecisionChange>{DecisionChange::kCreated,
                                                   DecisionChange::kWithdrawn,
                                                   DecisionChange::kCreated}));
  EXPECT_EQ(table_.active_count(), 1u);
  EXPECT_EQ(table_.List({.active_only = true})[0].id(), sets[1][1].decision.id());
}

// Cluster: a repeat offender stays one across a take-over. The new writer's table mirrored the
// former writer's decisions; their offences count for escalation as its own would have.
TEST_F(DecisionTableTest, MirroredDecisionsCountAsOffencesForTheNextWriter) {
  DecisionTable former(clock_);
  std::vector<DecisionUpdate> sent;
  former.AddListener([&sent](const DecisionUpdate& u) { sent.push_back(u); });
  palisade::v1::DecisionSpec spec;
  spec.set_action(palisade::v1::ACTION_BLOCK);
  *spec.mutable_duration() = ToProtoDuration(absl::Hours(1));
  *spec.mutable_escalation() = escalation_;
  spec.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
  // Two offences at the former writer: 1 h, then 2 h.
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(former.Apply(Det("203.0.113.7", clock_.TimeNow()), spec).change,
              DecisionChange::kCreated);
    clock_.Advance(absl::Hours(2));
    former.ExpireDue();
  }
  for (const DecisionUpdate& u : sent) table_.Mirror(u.change, u.decision);
  // A feed listing is not an offence, mirrored or not.
  Decision listed = sent[0].decision;
  listed.set_id("00000000000feed1");
  listed.mutable_target()->set_value("203.0.113.8");
  listed.set_origin(palisade::v1::ORIGIN_FEED);
  listed.set_active(false);
  table_.MirrorState({sent.back().decision, listed});
  // This table writes now: the third offence is the third, 4 h.
  DecisionUpdate third = Apply("203.0.113.7", clock_.TimeNow());
  ASSERT_EQ(third.change, DecisionChange::kCreated);
  EXPECT_EQ(third.decision.offence(), 3u);
  EXPECT_EQ(DecisionExpiry(third.decision) - FromProtoTime(third.decision.start()),
            absl::Hours(4));
  EXPECT_EQ(Apply("203.0.113.8", clock_.TimeNow()).decision.offence(), 1u);
}

// Cluster: a node that does not write hands its detections to the writer and decides nothing.
TEST_F(DecisionTableTest, ForwardedDetectionsDecideNothingHere) {
  CompiledRule rule = SshHourBlockRule();
  Detection d = Det("203.0.113.7", clock_.TimeNow());
  d.rule = &rule;
  Detection token = d;
  token.key = "fingerprint";
  token.secret = "the token itself";
  std::vector<std::string> forwarded;
  table_.SetForward([&](const Detection& f) { forwarded.push_back(f.key); });
  std::vector<DecisionChange> seen;
  std::vector<DecisionUpdate> updates =
      table_.ApplyAll({d, token}, [&](const std::vector<DecisionUpdate>& u) {
        for (const DecisionUpdate& x : u) seen.push_back(x.change);
      });
  ASSERT_THAT(updates, SizeIs(2));
  EXPECT_EQ(updates[0].change, DecisionChange::kForwarded);
  EXPECT_EQ(updates[0].decision.target().value(), "203.0.113.7");
  EXPECT_EQ(updates[0].decision.rule_id(), "ssh");
  EXPECT_EQ(updates[1].change, DecisionChange::kStale);  // a secret never leaves the node
  EXPECT_EQ(seen, (std::vector<DecisionChange>{DecisionChange::kForwarded, DecisionChange::kStale}));
  EXPECT_EQ(forwarded, std::vector<std::string>{"203.0.113.7"});
  EXPECT_EQ(table_.size(), 0u);
  EXPECT_TRUE(changes_.empty());
  EXPECT_EQ(DecisionChangeName(DecisionChange::kForwarded), "forwarded");
  table_.SetForward(nullptr);  // the writer now: decided here
  EXPECT_EQ(table_.ApplyAll({d})[0].change, DecisionChange::kCreated);
}

// A listener's owner may go (a cluster node stopping) while the table lives on: once removed,
// a listener is never called again, and the others still are.
TEST_F(DecisionTableTest, ARemovedListenerIsNotHeardAgain) {
  std::vector<DecisionChange> heard;
  const uint64_t id = table_.AddListener([&](const DecisionUpdate& u) { heard.push_back(u.change); });
  Apply("203.0.113.7", clock_.TimeNow());
  EXPECT_THAT(heard, SizeIs(1));
  table_.RemoveListener(id);
  Apply("203.0.113.8", clock_.TimeNow());
  EXPECT_THAT(heard, SizeIs(1));
  EXPECT_THAT(changes_, SizeIs(2));  // the fixture's listener still hears
}

// A set listener hears a change set whole (a replaced decision's withdrawal with its
// replacement), before any per-update listener hears a part of it, and never an empty one.
TEST_F(DecisionTableTest, ASetListenerHearsAChangeSetWholeAndFirst) {
  std::vector<std::vector<DecisionChange>> sets;
  const uint64_t id = table_.AddSetListener([&](const std::vector<DecisionUpdate>& set) {
    sets.emplace_back();
    for (const DecisionUpdate& u : set) sets.back().push_back(u.change);
  });
  size_t sets_when_withdrawal_heard = 0;
  table_.AddListener([&](const DecisionUpdate& u) {
    if (u.change == DecisionChange::kWithdrawn) sets_when_withdrawal_heard = sets.size();
  });
  palisade::v1::AddDecisionRequest req;
  req.mutable_target()->set_value("203.0.113.7");
  *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
  req.set_actuator(palisade::v1::ACTUATOR_NONE);
  ASSERT_THAT(table_.AddManual(req), IsOk());
  req.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);  // stronger: replaces it
  ASSERT_THAT(table_.AddManual(req), IsOk());
  table_.ExpireDue();  // nothing due: an empty set
  ASSERT_THAT(sets, SizeIs(2));
  EXPECT_EQ(sets[1],
            (std::vector<DecisionChange>{DecisionChange::kWithdrawn, DecisionChange::kCreated}));
  EXPECT_EQ(sets_when_withdrawal_heard, 2u);
  table_.RemoveListener(id);
  Apply("203.0.113.8", clock_.TimeNow());
  EXPECT_THAT(sets, SizeIs(2));
}

// SetForward returns only once a forward function it replaced is no longer running in an
// ApplyAll that copied it: its owner may be destroyed right after.
TEST_F(DecisionTableTest, SetForwardWaitsForTheForwardItReplaces) {
  CompiledRule rule = SshHourBlockRule();
  Detection d = Det("203.0.113.7", clock_.TimeNow());
  d.rule = &rule;
  absl::Notification forwarding, release;
  table_.SetForward([&](const Detection&) {
    forwarding.Notify();
    release.WaitForNotification();
  });
  std::thread apply([&] { table_.ApplyAll({d}); });
  forwarding.WaitForNotification();
  std::atomic<bool> replaced{false};
  std::thread unset([&] {
    table_.SetForward(nullptr);
    replaced = true;
  });
  // Not a race against time: while the forward runs, SetForward cannot return at all.
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(replaced.load());
  release.Notify();
  apply.join();
  unset.join();
  EXPECT_TRUE(replaced.load());
}

TEST_F(DecisionTableTest, ManualBanValidatesInput) {
  palisade::v1::AddDecisionRequest req;
  req.mutable_target()->set_value("not-an-ip");
  *req.mutable_duration() = ToProtoDuration(absl::Minutes(10));
  EXPECT_THAT(table_.AddManual(req),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an IP address")));
  req.mutable_target()->set_value("203.0.113.7");
  req.clear_duration();
  EXPECT_THAT(table_.AddManual(req),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("duration must be > 0")));
  // An expiry the store's milliseconds could not hold (it overflowed them: undefined behaviour).
  *req.mutable_duration() = ToProtoDuration(absl::Hours(24 * 365 * 1000));
  EXPECT_THAT(table_.AddManual(req),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at most 10 years")));
  req.mutable_target()->set_kind(palisade::v1::TARGET_KIND_RANGE);
  req.mutable_target()->set_value("10.0.0.1/8");
  *req.mutable_duration() = ToProtoDuration(absl::Minutes(10));
  EXPECT_THAT(table_.AddManual(req),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("host bits")));
}

// A fingerprint's secret travels in the updates of its decision's creation and of each of its
// extensions (from Apply and ApplyAll): a restart loses the secret a pending revocation held, and
// the token seen again is an extension, the only way the dispatcher gets the secret back. The
// secret is never in the decision: not in Get or List, not in the store's rows.
TEST_F(DecisionTableTest, TokenSecretTravelsInTheUpdatesOfItsCreationAndExtensionsOnly) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/secret.db";
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
    std::remove((path + suffix).c_str());
  }
  const std::string secret = "cfut_0123456789abcdefghij0123456789abcdefghij";
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    table_.SetStore(store->get(), {palisade::v1::ACTUATOR_TOKEN_REVOCATION});
    std::vector<DecisionUpdate> updates;
    table_.AddListener([&](const DecisionUpdate& u) { updates.push_back(u); });
    CompiledRule rule;
    rule.proto.set_id("leak");
    palisade::v1::DecisionSpec& spec = *rule.proto.mutable_decision();
    spec.set_action(palisade::v1::ACTION_REVOKE_TOKEN);
    *spec.mutable_duration() = ToProtoDuration(absl::Hours(1));
    spec.set_actuator(palisade::v1::ACTUATOR_TOKEN_REVOCATION);
    Detection d = Det("sha256:0011223344556677", clock_.TimeNow());
    d.rule_id = "leak";
    d.rule = &rule;
    d.kind = palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT;
    d.secret = secret;
    table_.Apply(d, spec);
    clock_.Advance(absl::Minutes(10));
    d.time = clock_.TimeNow();
    const DecisionUpdate extended = table_.Apply(d, spec);
    clock_.Advance(absl::Minutes(10));
    d.time = clock_.TimeNow();
    const std::vector<DecisionUpdate> batch = table_.ApplyAll({d});
    // An address's decision is never given a secret, whatever its detection holds.
    Detection ip = Det("203.0.113.7", clock_.TimeNow());
    ip.secret = "not a token's";
    table_.Apply(ip, HourBlock());
    table_.Apply(ip, HourBlock());

    ASSERT_THAT(updates, SizeIs(5));
    EXPECT_EQ(updates[0].change, DecisionChange::kCreated);
    EXPECT_EQ(updates[0].secret, secret);
    EXPECT_EQ(updates[1].change, DecisionChange::kExtended);
    EXPECT_EQ(updates[1].secret, secret);
    EXPECT_EQ(extended.secret, secret);
    EXPECT_GT(DecisionExpiry(updates[1].decision), DecisionExpiry(updates[0].decision));
    EXPECT_EQ(updates[2].change, DecisionChange::kExtended);
    EXPECT_EQ(updates[2].secret, secret);
    ASSERT_THAT(batch, SizeIs(1));
    EXPECT_EQ(batch[0].secret, secret);
    EXPECT_EQ(updates[4].change, DecisionChange::kExtended);
    EXPECT_EQ(updates[4].secret, "");
    for (const DecisionUpdate& u : updates) {
      EXPECT_EQ(u.decision.DebugString().find("cfut_"), std::string::npos);
    }
    const std::string id = updates[0].decision.id();
    absl::StatusOr<Decision> got = table_.Get(id);
    ASSERT_THAT(got, IsOk());
    EXPECT_EQ(got->extensions(), 2u);
    EXPECT_EQ(got->DebugString().find("cfut_"), std::string::npos);
    for (const Decision& listed : table_.List({})) {
      EXPECT_EQ(listed.DebugString().find("cfut_"), std::string::npos);
    }
    absl::StatusOr<std::vector<Decision>> stored = (*store)->LoadDecisions(false);
    ASSERT_THAT(stored, IsOk());
    ASSERT_THAT(*stored, SizeIs(2));
    for (const Decision& row : *stored) {
      EXPECT_EQ(row.DebugString().find("cfut_"), std::string::npos);
    }
    table_.SetStore(nullptr, {});
  }
  // Nor anywhere in the store's files, whatever table or column.
  for (const char* suffix : {"", "-wal", "-journal"}) {
    std::ifstream in(path + suffix, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(bytes.find(secret), std::string::npos) << suffix;
  }
}

TEST_F(DecisionTableTest, ChangesAndTheirOperationsAreDurable) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/table.db";
  std::remove(path.c_str());
  std::string id;
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    DecisionTable table(clock_);
    table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
    std::vector<int64_t> seqs;
    table.AddListener([&](const DecisionUpdate& u) { seqs.push_back(u.outbox_seq); });
    palisade::v1::DecisionSpec spec;
    spec.set_action(palisade::v1::ACTION_BLOCK);
    *spec.mutable_duration() = ToProtoDuration(absl::Hours(1));
    spec.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
    id = table.Apply(Det("203.0.113.7", clock_.TimeNow()), spec).decision.id();
    table.Apply(Det("203.0.113.7", clock_.TimeNow()), spec);  // extended: no operation
    spec.set_actuator(palisade::v1::ACTUATOR_NONE);
    table.Apply(Det("203.0.113.8", clock_.TimeNow()), spec);  // local only: no operation
    ASSERT_THAT(seqs, SizeIs(3));
    EXPECT_GT(seqs[0], 0);
    EXPECT_EQ(seqs[1], 0);
    EXPECT_EQ(seqs[2], 0);
    EXPECT_THAT(*(*store)->LoadOutbox(), SizeIs(1));
  }
  // "Restart": a new table over the same file knows the decision and expires it on time,
  // recording the remove operation.
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  DecisionTable table(clock_);
  table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  ASSERT_THAT(table.Restore(), IsOk());
  EXPECT_EQ(table.active_count(), 2u);
  EXPECT_THAT(table.Get(id), IsOk());
  clock_.Advance(absl::Hours(2));
  EXPECT_THAT(table.ExpireDue(), SizeIs(2));
  auto outbox = (*store)->LoadOutbox();
  ASSERT_THAT(*outbox, SizeIs(2));
  EXPECT_FALSE((*outbox)[1].apply);
  EXPECT_EQ((*outbox)[1].decision.id(), id);
}

// The claims waiting behind a decision survive a restart: an operator's challenge set for
// longer than the block in front of it, and a rule's claim behind both, take over in turn,
// each with its own expiry, reason and rule, though the table was rebuilt from the store
// between every step (they were in memory only, and a restart lost every one but the feeds').
TEST_F(DecisionTableTest, WaitingClaimsSurviveARestart) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/waiting.db";
  std::remove(path.c_str());
  const absl::Time t0 = clock_.TimeNow();
  const std::string ip = "203.0.113.40";
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    DecisionTable table(clock_);
    table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_value(ip);
    req.set_action(palisade::v1::ACTION_BLOCK);
    *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
    req.set_reason("blocked for the hour");
    ASSERT_THAT(table.AddManual(req), IsOk());
    // The operator's challenge for longer waits behind the operator's own block...
    req.set_action(palisade::v1::ACTION_CHALLENGE);
    *req.mutable_duration() = ToProtoDuration(absl::Hours(2));
    req.set_reason("challenged for two hours");
    ASSERT_THAT(table.AddManual(req), IsOk());
    // ...and a rule's claim behind both (the operator's word outranks it).
    palisade::v1::DecisionSpec spec = HourBlock();
    *spec.mutable_duration() = ToProtoDuration(absl::Hours(5));
    Detection det = Det(ip, t0);
    det.rule_id = "probe";
    ASSERT_EQ(table.Apply(det, spec).change, DecisionChange::kExtended);
    ASSERT_EQ(table.active_count(), 1u);
  }
  // Each step on a table rebuilt from the store, as palisaded's start does.
  const auto restarted = [&](const std::function<void(DecisionTable&, Store&)>& step) {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    DecisionTable table(clock_);
    table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
    ASSERT_THAT(table.Restore(), IsOk());
    step(table, **store);
  };
  restarted([&](DecisionTable& table, Store&) {
    clock_.Advance(absl::Hours(1) + absl::Minutes(1));
    ASSERT_THAT(table.ExpireDue(), SizeIs(1));
    DecisionFilter f;
    f.target = ip;
    f.active_only = true;
    std::vector<Decision> active = table.List(f);
    ASSERT_THAT(active, SizeIs(1));
    EXPECT_EQ(active[0].origin(), palisade::v1::ORIGIN_MANUAL);
    EXPECT_EQ(active[0].action(), palisade::v1::ACTION_CHALLENGE);
    EXPECT_EQ(active[0].reason(), "challenged for two hours");
    EXPECT_EQ(DecisionExpiry(active[0]), t0 + absl::Hours(2));
  });
  restarted([&](DecisionTable& table, Store&) {
    clock_.Advance(absl::Hours(1));
    ASSERT_THAT(table.ExpireDue(), SizeIs(1));
    DecisionFilter f;
    f.target = ip;
    f.active_only = true;
    std::vector<Decision> active = table.List(f);
    ASSERT_THAT(active, SizeIs(1));
    EXPECT_EQ(active[0].origin(), palisade::v1::ORIGIN_RULE);
    EXPECT_EQ(active[0].rule_id(), "probe");
    EXPECT_EQ(active[0].action(), palisade::v1::ACTION_BLOCK);
    EXPECT_EQ(DecisionExpiry(active[0]), t0 + absl::Hours(5));
  });
  // Nothing waits any more: when the rule's decision ends, nothing takes over.
  restarted([&](DecisionTable& table, Store&) {
    clock_.Advance(absl::Hours(3));
    ASSERT_THAT(table.ExpireDue(), SizeIs(1));
    EXPECT_EQ(table.active_count(), 0u);
  });
}

// A waiting claim's rows go when it can never take over: the operator's withdrawal ends the
// rule and manual claims behind the decision, and a reloaded allowlist the rule ones behind an
// operator's decision (no decision of the table changes: the claims are written on their own).
TEST_F(DecisionTableTest, WaitingClaimsThatEndForGoodLeaveTheStore) {
  auto store = FreshStore("waiting_end.db");
  ASSERT_THAT(store, IsOk());
  table_.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  const auto manual = [&](const std::string& ip, palisade::v1::Action action) {
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_value(ip);
    req.set_action(action);
    *req.mutable_duration() = ToProtoDuration(absl::Hours(3));
    return table_.AddManual(req);
  };
  // Behind the first block, the operator's challenge; behind the second, a rule's claim.
  absl::StatusOr<Decision> first = manual("203.0.113.41", palisade::v1::ACTION_BLOCK);
  ASSERT_THAT(first, IsOk());
  ASSERT_THAT(manual("203.0.113.41", palisade::v1::ACTION_CHALLENGE), IsOk());
  ASSERT_THAT(manual("203.0.113.42", palisade::v1::ACTION_CHALLENGE), IsOk());
  ASSERT_EQ(table_.Apply(Det("203.0.113.42", clock_.TimeNow()), HourBlock()).change,
            DecisionChange::kExtended);
  EXPECT_THAT(*(*store)->LoadWaitingClaims(clock_.TimeNow()), SizeIs(2));
  ASSERT_THAT(table_.Withdraw(first->id()), IsOk());
  absl::StatusOr<std::vector<WaitingClaimRow>> left =
      (*store)->LoadWaitingClaims(clock_.TimeNow());
  ASSERT_THAT(*left, SizeIs(1));
  EXPECT_EQ((*left)[0].target, "203.0.113.42");
  EXPECT_EQ((*left)[0].origin, palisade::v1::ORIGIN_RULE);
  EXPECT_EQ((*left)[0].rule_id, "ssh");
  EXPECT_THAT(table_.WithdrawCovered(*CidrSet::Parse({"203.0.113.42/32"})), IsEmpty());
  EXPECT_THAT(*(*store)->LoadWaitingClaims(clock_.TimeNow()), IsEmpty());
}

// A store that refuses the claims' write loses nothing: the change set (the decision's
// extension and its claims, written together) waits in memory with the rest, and is written
// once the store takes it again; a restart then finds the claim.
TEST_F(DecisionTableTest, WaitingClaimsTheStoreRefusedAreWrittenOnceItTakesThem) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/waiting_refused.db";
  std::remove(path.c_str());
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    DecisionTable table(clock_);
    table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_value("203.0.113.43");
    *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
    ASSERT_THAT(table.AddManual(req), IsOk());
    ::palisade::testing::ExecSql(path,
                                 "CREATE TRIGGER refuse BEFORE INSERT ON waiting_claims BEGIN "
                                 "SELECT RAISE(ABORT, 'no'); END;");
    req.set_action(palisade::v1::ACTION_CHALLENGE);
    *req.mutable_duration() = ToProtoDuration(absl::Hours(4));
    req.set_reason("four hours");
    ASSERT_THAT(table.AddManual(req), IsOk());
    EXPECT_EQ(table.unwritten(), 2u);  // the block's extension, and the claim behind it
    EXPECT_THAT(*(*store)->LoadWaitingClaims(clock_.TimeNow()), IsEmpty());
    // A later decision on another target waits behind them, and still stands.
    ASSERT_EQ(table.Apply(Det("203.0.113.44", clock_.TimeNow()), HourBlock()).change,
              DecisionChange::kCreated);
    EXPECT_EQ(table.active_count(), 2u);
    EXPECT_EQ(table.unwritten(), 3u);
    ::palisade::testing::ExecSql(path, "DROP TRIGGER refuse;");
    table.ExpireDue();
    EXPECT_EQ(table.unwritten(), 0u);
    EXPECT_THAT(*(*store)->LoadDecisions(true), SizeIs(2));
  }
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  DecisionTable table(clock_);
  table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  ASSERT_THAT(table.Restore(), IsOk());
  clock_.Advance(absl::Hours(2));
  std::vector<DecisionUpdate> heard;
  table.AddListener([&](const DecisionUpdate& u) { heard.push_back(u); });
  table.ExpireDue();
  ASSERT_THAT(heard, SizeIs(3));  // both blocks expire; the challenge takes over
  const DecisionUpdate& taken = heard[0].decision.target().value() == "203.0.113.43" ? heard[1]
                                                                                     : heard[2];
  EXPECT_EQ(taken.change, DecisionChange::kCreated);
  EXPECT_EQ(taken.decision.action(), palisade::v1::ACTION_CHALLENGE);
  EXPECT_EQ(taken.decision.reason(), "four hours");
}

// The claims waiting behind a decision count in the active budget (max_active_bytes) as the
// decisions they may become; restored, they count again; a claim that takes over is a
// decision's bytes, no longer a claim's.
TEST_F(DecisionTableTest, WaitingClaimsCountInTheActiveBudget) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/waiting_bytes.db";
  std::remove(path.c_str());
  size_t with_claim = 0;
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    DecisionTable table(clock_);
    table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_value("203.0.113.45");
    *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
    ASSERT_THAT(table.AddManual(req), IsOk());
    const size_t alone = table.active_bytes();
    req.set_action(palisade::v1::ACTION_CHALLENGE);
    *req.mutable_duration() = ToProtoDuration(absl::Hours(2));
    req.set_reason(std::string(1000, 'r'));
    ASSERT_THAT(table.AddManual(req), IsOk());
    with_claim = table.active_bytes();
    EXPECT_GE(with_claim, alone + 1000);
  }
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  DecisionTable table(clock_);
  table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  ASSERT_THAT(table.Restore(), IsOk());
  // Within a few bytes: the block is counted as stored, with its extension's fields (the table
  // counted it at its creation, and an extension adds only its evidence).
  EXPECT_GE(table.active_bytes() + 16, with_claim);
  EXPECT_LE(table.active_bytes(), with_claim + 16);
  clock_.Advance(absl::Minutes(61));
  ASSERT_THAT(table.ExpireDue(), SizeIs(1));
  const size_t taken = table.active_bytes();
  EXPECT_LT(taken, with_claim);
  clock_.Advance(absl::Hours(1));
  ASSERT_THAT(table.ExpireDue(), SizeIs(1));
  EXPECT_EQ(table.active_bytes(), 0u);
}

// A token revocation's claim waiting behind another on the same fingerprint is stored with its
// rule id and reason only: the leaked token its detection carried reaches no row.
TEST_F(DecisionTableTest, AWaitingTokenClaimStoresNoSecret) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/waiting_secret.db";
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
    std::remove((path + suffix).c_str());
  }
  const std::string secret = "cfut_0123456789abcdefghij0123456789abcdefghij";
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    table_.SetStore(store->get(), {palisade::v1::ACTUATOR_TOKEN_REVOCATION});
    palisade::v1::DecisionSpec spec;
    spec.set_action(palisade::v1::ACTION_REVOKE_TOKEN);
    *spec.mutable_duration() = ToProtoDuration(absl::Hours(1));
    spec.set_actuator(palisade::v1::ACTUATOR_TOKEN_REVOCATION);
    Detection d = Det("sha256:0011223344556677", clock_.TimeNow());
    d.rule_id = "leak";
    d.kind = palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT;
    d.secret = secret;
    ASSERT_EQ(table_.Apply(d, spec).change, DecisionChange::kCreated);
    spec.set_dry_run(true);  // weaker: waits behind the revocation
    d.rule_id = "leak-audit";
    ASSERT_EQ(table_.Apply(d, spec).change, DecisionChange::kExtended);
    absl::StatusOr<std::vector<WaitingClaimRow>> rows =
        (*store)->LoadWaitingClaims(clock_.TimeNow());
    ASSERT_THAT(*rows, SizeIs(1));
    EXPECT_EQ((*rows)[0].rule_id, "leak-audit");
    EXPECT_EQ((*rows)[0].reason, "");
  }
  for (const char* suffix : {"", "-wal"}) {
    std::ifstream in(path + suffix, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(bytes.find(secret), std::string::npos) << suffix;
  }
}

// Node A decided D1 (an operator's challenge) and a rule's week-long block C waits behind it;
// then B writes (claims are not replicated: B never knew C), the operator withdraws D1 on B and
// B later decides D2 on the same target; A mirrors both. C waited behind D1 only: it must not
// come back behind D2, neither from A's memory when A writes again nor from A's rows after a
// restart (the target would be blocked for the rest of the week). While D1 stands, a mirrored
// change of it keeps C charged to the active budget.
void RunTheStaleClaimScenario(DecisionTable& a, SimulatedClock& clock, const std::string& ip) {
  palisade::v1::AddDecisionRequest req;
  req.mutable_target()->set_value(ip);
  req.set_action(palisade::v1::ACTION_CHALLENGE);
  *req.mutable_duration() = ToProtoDuration(absl::Hours(24));
  absl::StatusOr<Decision> d1 = a.AddManual(req);
  ASSERT_THAT(d1, IsOk());
  const size_t alone = a.active_bytes();
  palisade::v1::DecisionSpec week;
  week.set_action(palisade::v1::ACTION_BLOCK);
  week.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
  *week.mutable_duration() = ToProtoDuration(absl::Hours(24 * 7));
  Detection det;
  det.rule_id = std::string(1000, 'r');
  det.key = ip;
  det.time = clock.TimeNow();
  ASSERT_EQ(a.Apply(det, week).change, DecisionChange::kExtended);  // C waits behind D1
  ASSERT_GE(a.active_bytes(), alone + 1000);
  // A steps down; B writes, knowing D1 from the log.
  a.SetForward([](const Detection&) {});
  DecisionTable b(clock);
  absl::StatusOr<Decision> held = a.Get(d1->id());
  ASSERT_THAT(held, IsOk());
  b.Mirror(DecisionChange::kCreated, *held);
  // B's change of D1 (an extension), mirrored by A: C still waits behind D1, still charged.
  Decision extended = *held;
  extended.set_extensions(held->extensions() + 1);
  a.Mirror(DecisionChange::kExtended, extended);
  EXPECT_GE(a.active_bytes(), alone + 1000);
  ASSERT_THAT(b.Withdraw(d1->id()), IsOk());
  absl::StatusOr<Decision> withdrawn = b.Get(d1->id());
  ASSERT_THAT(withdrawn, IsOk());
  a.Mirror(DecisionChange::kWithdrawn, *withdrawn);
  EXPECT_EQ(a.active_bytes(), 0u);
  *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
  absl::StatusOr<Decision> d2 = b.AddManual(req);
  ASSERT_THAT(d2, IsOk());
  a.Mirror(DecisionChange::kCreated, *d2);
  EXPECT_LT(a.active_bytes(), alone + 1000);  // D2 alone: nothing waits behind it
}

TEST_F(DecisionTableTest, AClaimThatWaitedBehindAMirroredDecisionEndsWithIt) {
  const std::string ip = "203.0.113.46";
  RunTheStaleClaimScenario(table_, clock_, ip);
  table_.SetForward(nullptr);  // A writes again
  clock_.Advance(absl::Minutes(61));
  ASSERT_THAT(table_.ExpireDue(), SizeIs(1));  // D2
  EXPECT_EQ(table_.active_count(), 0u);
}

TEST_F(DecisionTableTest, AClaimThatWaitedBehindAMirroredDecisionDoesNotComeBackAtARestart) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/waiting_stale.db";
  std::remove(path.c_str());
  const std::string ip = "203.0.113.47";
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    DecisionTable a(clock_);
    a.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
    RunTheStaleClaimScenario(a, clock_, ip);
    EXPECT_THAT(*(*store)->LoadWaitingClaims(clock_.TimeNow()), IsEmpty());
  }
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  DecisionTable a(clock_);
  a.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  ASSERT_THAT(a.Restore(), IsOk());
  clock_.Advance(absl::Minutes(61));
  ASSERT_THAT(a.ExpireDue(), SizeIs(1));  // D2
  EXPECT_EQ(a.active_count(), 0u);
}

// A stored claim comes back only behind the decision it waited behind: a row that names
// another (one a mirror could not keep up to date) is left alone.
TEST_F(DecisionTableTest, ARestoredClaimWaitsOnlyBehindTheDecisionItWaitedBehind) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/waiting_other.db";
  std::remove(path.c_str());
  const std::string ip = "203.0.113.48";
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    DecisionTable table(clock_);
    table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_value(ip);
    *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
    ASSERT_THAT(table.AddManual(req), IsOk());
    WaitingClaimRow row;
    row.target = ip;
    row.origin = palisade::v1::ORIGIN_MANUAL;
    row.action = palisade::v1::ACTION_CHALLENGE;
    row.actuator = palisade::v1::ACTUATOR_ACCESS_RULE;
    row.expiry = clock_.TimeNow() + absl::Hours(5);
    ASSERT_THAT((*store)->RecordDecisions({}, {{ip, "an-ended-decision", {row}}}), IsOk());
  }
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  DecisionTable table(clock_);
  table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  ASSERT_THAT(table.Restore(), IsOk());
  clock_.Advance(absl::Minutes(61));
  ASSERT_THAT(table.ExpireDue(), SizeIs(1));
  EXPECT_EQ(table.active_count(), 0u);
}

// The rows ever inserted into `path`'s waiting_claims, counted by a trigger this installs (and
// WaitingClaimWrites reads).
void CountWaitingClaimWrites(const std::string& path) {
  ::palisade::testing::ExecSql(path,
                               "CREATE TABLE claim_writes(n INTEGER); "
                               "INSERT INTO claim_writes VALUES(0); "
                               "CREATE TRIGGER count_claim_writes AFTER INSERT ON waiting_claims "
                               "BEGIN UPDATE claim_writes SET n = n + 1; END;");
}
int64_t WaitingClaimWrites(const std::string& path) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* q = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, "SELECT n FROM claim_writes", -1, &q, nullptr), SQLITE_OK);
  int64_t n = -1;
  if (sqlite3_step(q) == SQLITE_ROW) n = sqlite3_column_int64(q, 0);
  sqlite3_finalize(q);
  sqlite3_close(db);
  return n;
}

// A rule matching again and again an address an operator decided moves its waiting claim's
// expiry each time: the claim is written when it first waits, and again only once its expiry
// has moved on by a tenth of what is left of it (or a minute), not on every match.
TEST_F(DecisionTableTest, ARepeatedExtensionOfAWaitingClaimIsNotWrittenEachTime) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/waiting_repeat.db";
  std::remove(path.c_str());
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  table_.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  CountWaitingClaimWrites(path);
  const std::string ip = "203.0.113.49";
  palisade::v1::AddDecisionRequest req;
  req.mutable_target()->set_value(ip);
  req.set_action(palisade::v1::ACTION_CHALLENGE);
  *req.mutable_duration() = ToProtoDuration(absl::Hours(24));
  ASSERT_THAT(table_.AddManual(req), IsOk());
  ASSERT_EQ(table_.Apply(Det(ip, clock_.TimeNow()), HourBlock()).change,
            DecisionChange::kExtended);
  EXPECT_EQ(WaitingClaimWrites(path), 1);
  for (int i = 0; i < 20; ++i) {
    clock_.Advance(absl::Seconds(2));
    ASSERT_EQ(table_.Apply(Det(ip, clock_.TimeNow()), HourBlock()).change,
              DecisionChange::kExtended);
  }
  EXPECT_EQ(WaitingClaimWrites(path), 1);  // 40 s on: under a minute
  // Past a tenth of the hour's claim: written (and the restored expiry is the moved one).
  clock_.Advance(absl::Minutes(6));
  ASSERT_EQ(table_.Apply(Det(ip, clock_.TimeNow()), HourBlock()).change,
            DecisionChange::kExtended);
  EXPECT_EQ(WaitingClaimWrites(path), 2);
  absl::StatusOr<std::vector<WaitingClaimRow>> rows =
      (*store)->LoadWaitingClaims(clock_.TimeNow());
  ASSERT_THAT(*rows, SizeIs(1));
  EXPECT_EQ((*rows)[0].expiry, clock_.TimeNow() + absl::Hours(1));
}

// The waiting-claim snapshots the store refused count under the unwritten cap: past it, those
// of targets with no active decision go first (their rows name a decision that ended, which
// Restore never attaches to anything); a claim that still waits is kept and written once the
// store takes writes again.
TEST_F(DecisionTableTest, RefusedClaimSnapshotsAreBounded) {
  const std::string kept = "198.51.100.1";
  constexpr int kEnded = 400;
  // A claim that waits; then claims that wait and end with their decisions' withdrawal (an
  // empty snapshot each). Returns the bytes of the decision changes.
  const auto run = [&](DecisionTable& table) {
    size_t bytes = 0;
    const uint64_t id = table.AddListener(
        [&bytes](const DecisionUpdate& u) { bytes += u.decision.ByteSizeLong(); });
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_value(kept);
    *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
    EXPECT_THAT(table.AddManual(req), IsOk());
    req.set_action(palisade::v1::ACTION_CHALLENGE);
    *req.mutable_duration() = ToProtoDuration(absl::Hours(4));
    req.set_reason("kept");
    EXPECT_THAT(table.AddManual(req), IsOk());
    for (int i = 0; i < kEnded; ++i) {
      const std::string ip = absl::StrCat("10.1.", i / 200, ".", i % 200);
      EXPECT_EQ(table.Apply(Det(ip, clock_.TimeNow()), HourBlock()).change,
                DecisionChange::kCreated);
      palisade::v1::DecisionSpec dry = HourBlock();
      dry.set_dry_run(true);
      DecisionUpdate u = table.Apply(Det(ip, clock_.TimeNow()), dry);
      EXPECT_EQ(u.change, DecisionChange::kExtended);
      EXPECT_THAT(table.Withdraw(u.decision.id()), IsOk());
    }
    table.RemoveListener(id);
    return bytes;
  };
  size_t change_bytes = 0;
  {
    auto store = FreshStore("waiting_bounded_sizes.db");
    ASSERT_THAT(store, IsOk());
    DecisionTable table(clock_);
    table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
    change_bytes = run(table);
  }
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/waiting_bounded.db";
  std::remove(path.c_str());
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    DecisionTable table(clock_);
    DecisionTableLimits limits;
    // Room for every change and a few snapshots, not for 400.
    limits.max_unwritten_bytes = change_bytes + (4 << 10);
    table.SetLimits(limits);
    table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
    ::palisade::testing::ExecSql(path,
                                 "CREATE TRIGGER refuse BEFORE INSERT ON waiting_claims BEGIN "
                                 "SELECT RAISE(ABORT, 'no'); END;");
    run(table);
    // 400 withdrawals: 1,202 changes, 401 snapshots; most of the empty ones went.
    EXPECT_LT(table.unwritten(), 1202u + 200u);
    ::palisade::testing::ExecSql(path, "DROP TRIGGER refuse;");
    table.ExpireDue();
    EXPECT_EQ(table.unwritten(), 0u);
  }
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  absl::StatusOr<std::vector<WaitingClaimRow>> rows =
      (*store)->LoadWaitingClaims(clock_.TimeNow());
  ASSERT_THAT(*rows, SizeIs(1));
  EXPECT_EQ((*rows)[0].target, kept);
  EXPECT_EQ((*rows)[0].reason, "kept");
}

// A feed's claim that takes over from a rule's decision writes no waiting claims: the feeds'
// are not stored, and nothing of the rules' or the operator's waited.
TEST_F(DecisionTableTest, AFeedClaimTakingOverWritesNoWaitingClaims) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/waiting_feed.db";
  std::remove(path.c_str());
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  table_.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  const std::string ip = "203.0.113.50";
  ASSERT_EQ(table_.Apply(Det(ip, clock_.TimeNow()), HourBlock()).change,
            DecisionChange::kCreated);
  DecisionTable::FeedTarget f;
  f.target.set_kind(palisade::v1::TARGET_KIND_IP);
  f.target.set_value(ip);
  f.reason = "feed drop";
  palisade::v1::DecisionSpec feed = HourBlock();
  *feed.mutable_duration() = ToProtoDuration(absl::Hours(24));
  ASSERT_THAT(table_.SyncFeed({f}, feed, absl::InfinitePast()), IsEmpty());  // waits
  // The store refuses every write from here: what the expiry writes waits in memory, counted.
  ::palisade::testing::ExecSql(path,
                               "CREATE TRIGGER refuse BEFORE INSERT ON decisions BEGIN "
                               "SELECT RAISE(ABORT, 'no'); END;");
  clock_.Advance(absl::Minutes(61));
  ASSERT_THAT(table_.ExpireDue(), SizeIs(1));
  ASSERT_EQ(table_.active_count(), 1u);  // the feed's
  EXPECT_EQ(table_.unwritten(), 2u);  // the expiry and the feed's decision; no claims
}

// A rule's challenge on an address a feed blocks waits behind the feed's decision (the block
// is stronger), but it is an offence all the same: counted once, when it begins to wait, and
// escalated from the offender's count; when the listing ends it takes over at that offence,
// stored with the claim meanwhile.
TEST_F(DecisionTableTest, ARuleClaimWaitingBehindAFeedIsAnOffence) {
  auto store = FreshStore("waiting_feed_offence.db");
  ASSERT_THAT(store, IsOk());
  table_.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  const std::string ip = "203.0.113.51";
  ASSERT_EQ(Apply(ip, clock_.TimeNow()).decision.offence(), 1u);
  clock_.Advance(absl::Minutes(61));
  ASSERT_THAT(table_.ExpireDue(), SizeIs(1));
  DecisionTable::FeedTarget f;
  f.target.set_kind(palisade::v1::TARGET_KIND_IP);
  f.target.set_value(ip);
  f.reason = "feed drop";
  palisade::v1::DecisionSpec feed = HourBlock();
  *feed.mutable_duration() = ToProtoDuration(absl::Hours(24));
  ASSERT_THAT(table_.SyncFeed({f}, feed, absl::InfinitePast()), SizeIs(1));
  palisade::v1::DecisionSpec challenge = HourBlock();
  challenge.set_action(palisade::v1::ACTION_CHALLENGE);
  *challenge.mutable_escalation() = escalation_;
  const absl::Time detected = clock_.TimeNow();
  Detection det = Det(ip, detected);
  det.rule_id = "probe";
  ASSERT_EQ(table_.Apply(det, challenge).change, DecisionChange::kExtended);  // waits
  clock_.Advance(absl::Minutes(1));
  ASSERT_EQ(table_.Apply(Det(ip, clock_.TimeNow()), challenge).change,
            DecisionChange::kExtended);  // the same claim again: no further offence
  absl::StatusOr<std::vector<WaitingClaimRow>> rows =
      (*store)->LoadWaitingClaims(clock_.TimeNow());
  ASSERT_THAT(*rows, SizeIs(1));
  EXPECT_EQ((*rows)[0].offence, 2u);
  std::vector<DecisionUpdate> ended = table_.SyncFeed({}, feed, absl::InfinitePast());
  ASSERT_THAT(ended, SizeIs(2));
  EXPECT_EQ(ended[1].change, DecisionChange::kCreated);
  EXPECT_EQ(ended[1].decision.action(), palisade::v1::ACTION_CHALLENGE);
  EXPECT_EQ(ended[1].decision.offence(), 2u);
  // Escalated (factor 2) at offence 2, as an extension of it is, from its last detection.
  EXPECT_EQ(DecisionExpiry(ended[1].decision), detected + absl::Minutes(1) + absl::Hours(2));
  // The offender's count was raised with it: its next offence is its third.
  clock_.Advance(absl::Hours(3));
  ASSERT_THAT(table_.ExpireDue(), SizeIs(1));
  EXPECT_EQ(Apply(ip, clock_.TimeNow()).decision.offence(), 3u);
}

// A rule's claim waiting behind a feed's decision still waits when a stronger claim replaces
// that decision: it is written again behind the new decision (and charged to it), so a restart
// brings it back there.
TEST_F(DecisionTableTest, AClaimWaitingBehindAReplacedFeedDecisionSurvivesARestart) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/waiting_feed_replaced.db";
  std::remove(path.c_str());
  const std::string ip = "203.0.113.52";
  const absl::Time t0 = clock_.TimeNow();
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    DecisionTable table(clock_);
    table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
    DecisionTable::FeedTarget f;
    f.target.set_kind(palisade::v1::TARGET_KIND_IP);
    f.target.set_value(ip);
    f.reason = "feed drop";
    palisade::v1::DecisionSpec feed = HourBlock();
    *feed.mutable_duration() = ToProtoDuration(absl::Hours(24));
    ASSERT_THAT(table.SyncFeed({f}, feed, absl::InfinitePast()), SizeIs(1));
    palisade::v1::DecisionSpec challenge = HourBlock();
    challenge.set_action(palisade::v1::ACTION_CHALLENGE);
    *challenge.mutable_duration() = ToProtoDuration(absl::Hours(3));
    Detection det = Det(ip, t0);
    det.rule_id = "probe";
    ASSERT_EQ(table.Apply(det, challenge).change, DecisionChange::kExtended);  // waits
    // A rule's block replaces the feed's decision (rule > feed): the challenge waits on.
    DecisionUpdate block = table.Apply(Det(ip, t0), HourBlock());
    ASSERT_EQ(block.change, DecisionChange::kCreated);
    absl::StatusOr<std::vector<WaitingClaimRow>> rows = (*store)->LoadWaitingClaims(t0);
    ASSERT_THAT(rows, IsOk());
    ASSERT_THAT(*rows, SizeIs(1));
    EXPECT_EQ((*rows)[0].decision_id, block.decision.id());
  }
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  DecisionTable table(clock_);
  table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  ASSERT_THAT(table.Restore(), IsOk());
  clock_.Advance(absl::Hours(1) + absl::Minutes(1));
  ASSERT_THAT(table.ExpireDue(), SizeIs(1));
  DecisionFilter f;
  f.target = ip;
  f.active_only = true;
  std::vector<Decision> active = table.List(f);
  ASSERT_THAT(active, SizeIs(1));
  EXPECT_EQ(active[0].rule_id(), "probe");
  EXPECT_EQ(active[0].action(), palisade::v1::ACTION_CHALLENGE);
  EXPECT_EQ(DecisionExpiry(active[0]), t0 + absl::Hours(3));
}

// One episode behind a feed's decision is one offence, whatever kinds of rule claims it makes:
// anyone who can write log lines about a feed-listed address must not escalate it once per
// kind of rule (a challenge, a dry run, then a block replacing the feed's decision).
TEST_F(DecisionTableTest, ClaimsOfSeveralKindsBehindAFeedCountOneOffence) {
  auto store = FreshStore("waiting_feed_one_offence.db");
  ASSERT_THAT(store, IsOk());
  table_.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  const std::string ip = "203.0.113.53";
  DecisionTable::FeedTarget f;
  f.target.set_kind(palisade::v1::TARGET_KIND_IP);
  f.target.set_value(ip);
  f.reason = "feed drop";
  palisade::v1::DecisionSpec feed = HourBlock();
  *feed.mutable_duration() = ToProtoDuration(absl::Hours(24));
  ASSERT_THAT(table_.SyncFeed({f}, feed, absl::InfinitePast()), SizeIs(1));
  palisade::v1::DecisionSpec challenge = HourBlock();
  challenge.set_action(palisade::v1::ACTION_CHALLENGE);
  *challenge.mutable_escalation() = escalation_;
  ASSERT_EQ(table_.Apply(Det(ip, clock_.TimeNow()), challenge).change,
            DecisionChange::kExtended);  // waits: offence 1
  palisade::v1::DecisionSpec dry = HourBlock();
  dry.set_dry_run(true);
  *dry.mutable_escalation() = escalation_;
  ASSERT_EQ(table_.Apply(Det(ip, clock_.TimeNow()), dry).change,
            DecisionChange::kExtended);  // waits too, in the same episode
  absl::StatusOr<std::vector<WaitingClaimRow>> rows =
      (*store)->LoadWaitingClaims(clock_.TimeNow());
  ASSERT_THAT(rows, IsOk());
  ASSERT_THAT(*rows, SizeIs(2));
  EXPECT_EQ((*rows)[0].offence, 1u);
  EXPECT_EQ((*rows)[1].offence, 1u);
  DecisionUpdate block = Apply(ip, clock_.TimeNow());  // replaces the feed's decision
  ASSERT_EQ(block.change, DecisionChange::kCreated);
  EXPECT_EQ(block.decision.offence(), 1u);
  EXPECT_EQ(DecisionExpiry(block.decision) - FromProtoTime(block.decision.start()),
            absl::Hours(1));
}

// Past the unwritten cap, the refused claim snapshots go before any decision change, those of
// targets still decided too: a snapshot lost costs waiting claims, a change lost decisions (and
// their edge operations).
TEST_F(DecisionTableTest, RefusedClaimSnapshotsGoBeforeDecisionChanges) {
  constexpr int kTargets = 20;
  // Each target: an operator's block, and a rule's claim waiting behind it (an extension of the
  // block, and a snapshot). Returns the bytes of the decision changes.
  const auto run = [&](DecisionTable& table) {
    size_t bytes = 0;
    for (int i = 0; i < kTargets; ++i) {
      const std::string ip = absl::StrCat("10.2.0.", i);
      palisade::v1::AddDecisionRequest req;
      req.mutable_target()->set_value(ip);
      *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
      absl::StatusOr<Decision> manual = table.AddManual(req);
      EXPECT_THAT(manual, IsOk());
      if (manual.ok()) bytes += manual->ByteSizeLong();
      DecisionUpdate u = table.Apply(Det(ip, clock_.TimeNow()), HourBlock());
      EXPECT_EQ(u.change, DecisionChange::kExtended);
      bytes += u.decision.ByteSizeLong();
    }
    return bytes;
  };
  size_t change_bytes = 0;
  {
    auto store = FreshStore("snapshots_first_sizes.db");
    ASSERT_THAT(store, IsOk());
    DecisionTable table(clock_);
    table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
    change_bytes = run(table);
  }
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/snapshots_first.db";
  std::remove(path.c_str());
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    DecisionTable table(clock_);
    DecisionTableLimits limits;
    // Room for every change, not for every snapshot with them.
    limits.max_unwritten_bytes = change_bytes + change_bytes / 4;
    table.SetLimits(limits);
    table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
    ::palisade::testing::ExecSql(path,
                                 "CREATE TRIGGER refuse BEFORE INSERT ON decisions BEGIN "
                                 "SELECT RAISE(ABORT, 'no'); END;");
    run(table);
    EXPECT_LT(table.unwritten(), 3u * kTargets);  // some snapshots went
    ::palisade::testing::ExecSql(path, "DROP TRIGGER refuse;");
    table.ExpireDue();
    EXPECT_EQ(table.unwritten(), 0u);
  }
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  absl::StatusOr<std::vector<Decision>> stored = (*store)->LoadDecisions(/*active_only=*/true);
  ASSERT_THAT(stored, IsOk());
  EXPECT_THAT(*stored, SizeIs(kTargets));  // every decision kept
  absl::StatusOr<std::vector<WaitingClaimRow>> rows =
      (*store)->LoadWaitingClaims(clock_.TimeNow());
  ASSERT_THAT(rows, IsOk());
  EXPECT_LT(rows->size(), static_cast<size_t>(kTargets));
}

// Two rules matching in turn an address an operator decided change its waiting claim's rule
// on every match: not a reason to write it each time (an attacker rotating addresses in a
// folded range changes a range claim's reason as often). The operator's own waiting claim is
// written for a new reason.
TEST_F(DecisionTableTest, RulesAlternatingBehindADecisionDoNotWriteTheirClaimEachTime) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/waiting_alternate.db";
  std::remove(path.c_str());
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  table_.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  CountWaitingClaimWrites(path);
  const std::string ip = "203.0.113.54";
  palisade::v1::AddDecisionRequest req;
  req.mutable_target()->set_value(ip);
  *req.mutable_duration() = ToProtoDuration(absl::Hours(24));
  ASSERT_THAT(table_.AddManual(req), IsOk());
  palisade::v1::DecisionSpec challenge = HourBlock();
  challenge.set_action(palisade::v1::ACTION_CHALLENGE);
  for (int i = 0; i < 20; ++i) {
    Detection det = Det(ip, clock_.TimeNow());
    det.rule_id = i % 2 == 0 ? "probe" : "scan";
    ASSERT_EQ(table_.Apply(det, challenge).change, DecisionChange::kExtended);
    clock_.Advance(absl::Seconds(2));
  }
  EXPECT_EQ(WaitingClaimWrites(path), 1);
  // The operator's challenge behind the operator's block, then its reason changed: written.
  req.set_action(palisade::v1::ACTION_CHALLENGE);
  req.set_reason("first");
  ASSERT_THAT(table_.AddManual(req), IsOk());
  const int64_t before = WaitingClaimWrites(path);
  req.set_reason("second");
  ASSERT_THAT(table_.AddManual(req), IsOk());
  EXPECT_GT(WaitingClaimWrites(path), before);
  absl::StatusOr<std::vector<WaitingClaimRow>> rows =
      (*store)->LoadWaitingClaims(clock_.TimeNow());
  ASSERT_THAT(rows, IsOk());
  EXPECT_THAT(*rows, ::testing::Contains(::testing::Field(&WaitingClaimRow::reason, "second")));
}

// A claim that counted its offence when it began to wait behind a feed's decision is decided
// at no lower an offence than the decision it follows (the same episode, which may have been
// counted higher since): rows as a restart finds them.
TEST_F(DecisionTableTest, AReinstatedClaimKeepsTheOffenceOfTheDecisionItFollows) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/reinstated_offence.db";
  std::remove(path.c_str());
  const std::string ip = "203.0.113.55";
  const absl::Time t0 = clock_.TimeNow();
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  Decision d;
  d.set_id("0000000000000001");
  d.mutable_target()->set_kind(palisade::v1::TARGET_KIND_IP);
  d.mutable_target()->set_value(ip);
  d.set_action(palisade::v1::ACTION_BLOCK);
  d.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
  d.set_origin(palisade::v1::ORIGIN_RULE);
  d.set_rule_id("ssh");
  d.set_offence(3);
  d.set_active(true);
  *d.mutable_start() = ToProtoTime(t0);
  *d.mutable_expiry() = ToProtoTime(t0 + absl::Hours(1));
  WaitingClaims w;
  w.target = ip;
  w.decision_id = d.id();
  w.claims.push_back({ip, d.id(), palisade::v1::ORIGIN_RULE, palisade::v1::ACTION_CHALLENGE,
                      palisade::v1::ACTUATOR_ACCESS_RULE, false, t0 + absl::Hours(3), "probe", "",
                      /*offence=*/1});
  ASSERT_THAT((*store)->RecordDecisions({Store::Change{&d, std::nullopt, std::nullopt}}, {w}),
              IsOk());
  DecisionTable table(clock_);
  table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  ASSERT_THAT(table.Restore(), IsOk());
  clock_.Advance(absl::Hours(1) + absl::Minutes(1));
  ASSERT_THAT(table.ExpireDue(), SizeIs(1));
  DecisionFilter f;
  f.target = ip;
  f.active_only = true;
  std::vector<Decision> active = table.List(f);
  ASSERT_THAT(active, SizeIs(1));
  EXPECT_EQ(active[0].rule_id(), "probe");
  EXPECT_EQ(active[0].offence(), 3u);
}

// Offences are stored by a row number the table gives in the order offenders came (the store
// keeps no index on the address). After a restart the numbering goes on after every row stored,
// the rows too old to be loaded too: a new offender must not take an old one's row.
TEST_F(DecisionTableTest, ANewOffenderAfterARestartTakesARowOfItsOwn) {
  auto store = FreshStore("rows.db");
  ASSERT_THAT(store, IsOk());
  palisade::v1::DecisionSpec spec;  // forty days, no escalation
  spec.set_action(palisade::v1::ACTION_BLOCK);
  *spec.mutable_duration() = ToProtoDuration(absl::Hours(24 * 40));
  {
    DecisionTable table(clock_);
    table.SetStore(store->get(), {});
    ASSERT_EQ(table.Apply(Det("203.0.113.1", clock_.TimeNow()), spec).change,
              DecisionChange::kCreated);
    ASSERT_EQ(table.Apply(Det("203.0.113.2", clock_.TimeNow()), spec).change,
              DecisionChange::kCreated);
    // 31 days on, the first is back (its decision extended); the second's offence is now too
    // old for a restart to load.
    clock_.Advance(absl::Hours(24 * 31));
    ASSERT_EQ(table.Apply(Det("203.0.113.1", clock_.TimeNow()), spec).change,
              DecisionChange::kExtended);
  }
  DecisionTable table(clock_);
  table.SetStore(store->get(), {});
  ASSERT_THAT(table.Restore(), IsOk());
  ASSERT_EQ(table.Apply(Det("198.51.100.3", clock_.TimeNow()), spec).change,
            DecisionChange::kCreated);
  auto offences = (*store)->LoadOffences(absl::InfinitePast(), 100);
  ASSERT_THAT(offences, IsOk());
  std::set<std::string> targets;
  std::set<int64_t> ids;
  for (const OffenceRow& o : *offences) {
    targets.insert(o.target);
    ids.insert(o.id);
  }
  EXPECT_THAT(targets, ::testing::ElementsAre("198.51.100.3", "203.0.113.1", "203.0.113.2"));
  EXPECT_EQ(ids.size(), offences->size());
  // Numbered right after the last row: a restart spends no numbers on the rows it loads.
  EXPECT_THAT(ids, ::testing::ElementsAre(1, 2, 3));
}

// The same without Restore (a cluster node that starts writing sets the store again): the
// numbering starts after the rows the store holds.
TEST_F(DecisionTableTest, ATableGivenAStoreNumbersItsOffendersAfterItsRows) {
  auto store = FreshStore("given.db");
  ASSERT_THAT(store, IsOk());
  {
    DecisionTable table(clock_);
    table.SetStore(store->get(), {});
    table.Apply(Det("203.0.113.1", clock_.TimeNow()), HourBlock());
  }
  DecisionTable table(clock_);
  table.SetStore(store->get(), {});
  table.Apply(Det("203.0.113.2", clock_.TimeNow()), HourBlock());
  auto offences = (*store)->LoadOffences(absl::InfinitePast(), 100);
  ASSERT_THAT(offences, IsOk());
  ASSERT_THAT(*offences, SizeIs(2));
  EXPECT_NE((*offences)[0].id, (*offences)[1].id);
}

// An offender forgotten (past its escalation memory) and back starts a row of its own; its old
// row stays until the retention prunes it. A restart counts from the latest row of a target.
TEST_F(DecisionTableTest, ARestartCountsFromTheLatestRowOfAnOffender) {
  *escalation_.mutable_memory() = ToProtoDuration(absl::Hours(3));
  auto store = FreshStore("latest.db");
  ASSERT_THAT(store, IsOk());
  auto apply = [&](DecisionTable& table) {
    palisade::v1::DecisionSpec spec;
    spec.set_action(palisade::v1::ACTION_BLOCK);
    *spec.mutable_duration() = ToProtoDuration(absl::Hours(1));
    *spec.mutable_escalation() = escalation_;
    return table.Apply(Det("203.0.113.7", clock_.TimeNow()), spec);
  };
  {
    DecisionTable table(clock_);
    table.SetStore(store->get(), {});
    // 1 h, 2 h and 4 h, one after another; at the end of the third (7 h) the offender is four
    // hours past its last offence (3 h) and forgotten.
    for (uint32_t offence = 1; offence <= 3; ++offence) {
      DecisionUpdate u = apply(table);
      ASSERT_EQ(u.decision.offence(), offence);
      clock_.Advance(DecisionExpiry(u.decision) - clock_.TimeNow());
      ASSERT_THAT(table.ExpireDue(), SizeIs(1));
    }
    clock_.Advance(absl::Hours(1));
    DecisionUpdate back = apply(table);
    ASSERT_EQ(back.decision.offence(), 1u);
    clock_.Advance(absl::Hours(1));
    ASSERT_THAT(table.ExpireDue(), SizeIs(1));
  }
  auto rows = (*store)->LoadOffences(absl::InfinitePast(), 100);
  ASSERT_THAT(rows, IsOk());
  ASSERT_THAT(*rows, SizeIs(2));
  EXPECT_EQ((*rows)[0].count, 1u);  // the latest first
  EXPECT_EQ((*rows)[1].count, 3u);
  DecisionTable table(clock_);
  table.SetStore(store->get(), {});
  ASSERT_THAT(table.Restore(), IsOk());
  // An hour after its last offence, within its memory: the second of this episode.
  EXPECT_EQ(apply(table).decision.offence(), 2u);
}

// Restored offences do not say which rule's memory counted them. They were kept for 30 days
// whatever the rule, so a 7-day rule's offender quiet for 10 days started at offence 1 but kept
// its old count, and its next offence an hour later was the sixth (32 times the base) instead
// of the second, as without a restart. A restored count stands only within the applying rule's
// own memory.
TEST_F(DecisionTableTest, ARestoredCountLapsesWithTheApplyingRulesOwnMemory) {
  auto store = FreshStore("lapsed.db");
  ASSERT_THAT(store, IsOk());
  palisade::v1::DecisionSpec spec = HourBlock();
  spec.mutable_escalation()->set_factor(2);
  *spec.mutable_escalation()->mutable_memory() = ToProtoDuration(absl::Hours(24 * 7));
  absl::Time last_offence;
  {
    DecisionTable table(clock_);
    table.SetStore(store->get(), {});
    for (uint32_t offence = 1; offence <= 5; ++offence) {  // 1 h, 2 h, 4 h, 8 h, 16 h
      last_offence = clock_.TimeNow();
      DecisionUpdate u = table.Apply(Det("203.0.113.7", last_offence), spec);
      ASSERT_EQ(u.change, DecisionChange::kCreated);
      ASSERT_EQ(u.decision.offence(), offence);
      clock_.Advance(DecisionExpiry(u.decision) - clock_.TimeNow());
      ASSERT_THAT(table.ExpireDue(), SizeIs(1));
    }
  }
  DecisionTable table(clock_);
  table.SetStore(store->get(), {});
  ASSERT_THAT(table.Restore(), IsOk());
  ASSERT_EQ(table.offenders(), 1u);
  // Ten days after the last offence: past the rule's 7-day memory.
  clock_.Advance(last_offence + absl::Hours(24 * 10) - clock_.TimeNow());
  table.ExpireDue();
  DecisionUpdate first = table.Apply(Det("203.0.113.7", clock_.TimeNow()), spec);
  ASSERT_EQ(first.change, DecisionChange::kCreated);
  EXPECT_EQ(first.decision.offence(), 1u);
  clock_.Advance(absl::Hours(1));
  ASSERT_THAT(table.ExpireDue(), SizeIs(1));
  DecisionUpdate second = table.Apply(Det("203.0.113.7", clock_.TimeNow()), spec);
  ASSERT_EQ(second.change, DecisionChange::kCreated);
  EXPECT_EQ(second.decision.offence(), 2u);
  EXPECT_EQ(DecisionExpiry(second.decision) - FromProtoTime(second.decision.start()),
            absl::Hours(2));
}

// The store refuses a write (a full disk, an I/O error): the decision stands and is enforced,
// and its rows are written, in their order, by the next write or sweep once the store takes
// them again. They used to be dropped with a line on stderr: a restart forgot the ban and its
// outbox operation.
TEST_F(DecisionTableTest, ChangesTheStoreRefusedAreWrittenOnceItTakesThemAgain) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/refused.db";
  std::remove(path.c_str());
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  prometheus::Registry registry;
  DecisionTable table(clock_);
  table.SetLimits(DecisionTableLimits(), &registry);
  table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  ::palisade::testing::ExecSql(path, "CREATE TRIGGER refuse BEFORE INSERT ON decisions BEGIN SELECT RAISE(ABORT, 'no'); END;");
  palisade::v1::DecisionSpec spec;
  spec.set_action(palisade::v1::ACTION_BLOCK);
  *spec.mutable_duration() = ToProtoDuration(absl::Hours(1));
  spec.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
  const std::string first = table.Apply(Det("203.0.113.7", clock_.TimeNow()), spec).decision.id();
  EXPECT_EQ(table.active_count(), 1u);
  EXPECT_THAT(*(*store)->LoadDecisions(false), SizeIs(0));
  EXPECT_EQ(table.unwritten(), 1u);
  table.Apply(Det("203.0.113.8", clock_.TimeNow()), spec);  // still refused: queued behind it
  EXPECT_EQ(table.unwritten(), 2u);
  ::palisade::testing::ExecSql(path, "DROP TRIGGER refuse;");
  table.ExpireDue();  // the sweep writes them (nothing expires)
  EXPECT_EQ(table.unwritten(), 0u);
  std::vector<palisade::v1::Decision> stored = *(*store)->LoadDecisions(false);
  ASSERT_THAT(stored, SizeIs(2));
  EXPECT_EQ(stored[0].id(), first);
  EXPECT_THAT(*(*store)->LoadOutbox(), SizeIs(2));
  EXPECT_GE(::palisade::testing::CounterSum(registry, "palisade_store_write_failures_total"), 2);
}

// A VFS over the default one whose first write to a WAL file, once armed, waits until the test
// opens the gate: a store commit held in the middle, as a slow disk or a checkpoint would.
class WalGate {
 public:
  WalGate() {
    active_ = this;
    vfs_.zName = "wal-gate";
    vfs_.szOsFile = static_cast<int>(sizeof(File)) + real_->szOsFile;
    vfs_.xOpen = [](sqlite3_vfs*, const char* name, sqlite3_file* f, int flags, int* out) {
      File* file = reinterpret_cast<File*>(f);
      file->real = reinterpret_cast<sqlite3_file*>(file + 1);
      file->wal = name != nullptr && absl::EndsWith(name, "-wal");
      int rc = active_->real_->xOpen(active_->real_, name, file->real, flags, out);
      file->base.pMethods = file->real->pMethods != nullptr ? &active_->methods_ : nullptr;
      return rc;
    };
    methods_.iVersion = 3;
    methods_.xClose = [](sqlite3_file* f) { return Real(f)->pMethods->xClose(Real(f)); };
    methods_.xRead = [](sqlite3_file* f, void* p, int n, sqlite3_int64 at) {
      return Real(f)->pMethods->xRead(Real(f), p, n, at);
    };
    methods_.xWrite = [](sqlite3_file* f, const void* p, int n, sqlite3_int64 at) {
      if (reinterpret_cast<File*>(f)->wal) active_->MaybeWait();
      return Real(f)->pMethods->xWrite(Real(f), p, n, at);
    };
    methods_.xTruncate = [](sqlite3_file* f, sqlite3_int64 n) {
      return Real(f)->pMethods->xTruncate(Real(f), n);
    };
    methods_.xSync = [](sqlite3_file* f, int flags) {
      return Real(f)->pMethods->xSync(Real(f), flags);
    };
    methods_.xFileSize = [](sqlite3_file* f, sqlite3_int64* n) {
      return Real(f)->pMethods->xFileSize(Real(f), n);
    };
    methods_.xLock = [](sqlite3_file* f, int l) { return Real(f)->pMethods->xLock(Real(f), l); };
    methods_.xUnlock = [](sqlite3_file* f, int l) {
      return Real(f)->pMethods->xUnlock(Real(f), l);
    };
    methods_.xCheckReservedLock = [](sqlite3_file* f, int* out) {
      return Real(f)->pMethods->xCheckReservedLock(Real(f), out);
    };
    methods_.xFileControl = [](sqlite3_file* f, int op, void* arg) {
      return Real(f)->pMethods->xFileControl(Real(f), op, arg);
    };
    methods_.xSectorSize = [](sqlite3_file* f) {
      return Real(f)->pMethods->xSectorSize(Real(f));
    };
    methods_.xDeviceCharacteristics = [](sqlite3_file* f) {
      return Real(f)->pMethods->xDeviceCharacteristics(Real(f));
    };
    methods_.xShmMap = [](sqlite3_file* f, int region, int size, int extend, void volatile** p) {
      return Real(f)->pMethods->xShmMap(Real(f), region, size, extend, p);
    };
    methods_.xShmLock = [](sqlite3_file* f, int offset, int n, int flags) {
      return Real(f)->pMethods->xShmLock(Real(f), offset, n, flags);
    };
    methods_.xShmBarrier = [](sqlite3_file* f) { Real(f)->pMethods->xShmBarrier(Real(f)); };
    methods_.xShmUnmap = [](sqlite3_file* f, int del) {
      return Real(f)->pMethods->xShmUnmap(Real(f), del);
    };
    methods_.xFetch = [](sqlite3_file* f, sqlite3_int64 at, int n, void** p) {
      return Real(f)->pMethods->xFetch(Real(f), at, n, p);
    };
    methods_.xUnfetch = [](sqlite3_file* f, sqlite3_int64 at, void* p) {
      return Real(f)->pMethods->xUnfetch(Real(f), at, p);
    };
    sqlite3_vfs_register(&vfs_, /*makeDflt=*/1);
  }
  ~WalGate() {
    Open();
    sqlite3_vfs_unregister(&vfs_);
    sqlite3_vfs_register(real_, /*makeDflt=*/1);
    active_ = nullptr;
  }

  // The next WAL write waits in it (until Open, or a minute: see Waiting).
  void Arm() {
    absl::MutexLock lock(&mu_);
    armed_ = true;
  }
  void Open() {
    absl::MutexLock lock(&mu_);
    open_ = true;
  }
  // Until a write waits in the gate.
  void AwaitWaiter() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&waiting_));
  }
  // Whether a write still waits in the gate. Without Open, it leaves after a minute, so that a
  // test whose other thread cannot run (the write holding what it needs) fails, not hangs.
  bool Waiting() {
    absl::MutexLock lock(&mu_);
    return waiting_;
  }

 private:
  struct File {
    sqlite3_file base;
    sqlite3_file* real;
    bool wal;
  };
  static sqlite3_file* Real(sqlite3_file* f) { return reinterpret_cast<File*>(f)->real; }

  void MaybeWait() {
    absl::MutexLock lock(&mu_);
    if (!armed_) return;
    armed_ = false;
    waiting_ = true;
    mu_.AwaitWithTimeout(absl::Condition(&open_), absl::Minutes(1));
    waiting_ = false;
  }

  static WalGate* active_;
  sqlite3_vfs* real_ = sqlite3_vfs_find(nullptr);
  sqlite3_vfs vfs_ = *real_;
  sqlite3_io_methods methods_ = {};
  absl::Mutex mu_;
  bool armed_ ABSL_GUARDED_BY(mu_) = false;
  bool waiting_ ABSL_GUARDED_BY(mu_) = false;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
};
WalGate* WalGate::active_ = nullptr;

// Issue 18: the table wrote the store under its lock, so two ingest streams' transactions ran
// one at a time and nothing else could use the table meanwhile. The write now runs outside the
// lock: while one batch's commit is held in the WAL, the table answers and decides another
// stream's detection, whose write waits for the first (the store's rows follow the table's
// changes), and each Apply returns once its own change is committed.
TEST_F(DecisionTableTest, AStoreWriteWaitsOutsideTheTablesLock) {
  WalGate gate;
  auto store = FreshStore("gate.db");
  ASSERT_THAT(store, IsOk());
  DecisionTable table(clock_);
  table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  const palisade::v1::DecisionSpec spec = HourBlock();
  DecisionUpdate first, second;
  std::atomic<bool> second_done{false};
  gate.Arm();
  std::thread a([&] { first = table.Apply(Det("203.0.113.7", clock_.TimeNow()), spec); });
  gate.AwaitWaiter();  // the first change set's commit is held in its WAL write
  EXPECT_EQ(table.active_count(), 1u);  // the table answers (its lock is free)...
  EXPECT_TRUE(gate.Waiting()) << "the table's lock was held across the store write";
  std::thread b([&] {
    second = table.Apply(Det("203.0.113.8", clock_.TimeNow()), spec);
    second_done = true;
  });
  while (table.active_count() < 2) std::this_thread::yield();  // ...and decides another
  EXPECT_TRUE(gate.Waiting());
  EXPECT_FALSE(second_done) << "the second change set was acknowledged before the first";
  gate.Open();
  a.join();
  b.join();
  // Both committed, in the order of the changes.
  EXPECT_GT(first.outbox_seq, 0);
  EXPECT_GT(second.outbox_seq, first.outbox_seq);
  absl::StatusOr<std::vector<OutboxRow>> outbox = (*store)->LoadOutbox();
  ASSERT_THAT(outbox, IsOk());
  ASSERT_THAT(*outbox, SizeIs(2));
  EXPECT_EQ((*outbox)[0].decision.id(), first.decision.id());
  EXPECT_EQ((*outbox)[1].decision.id(), second.decision.id());
}

TEST_F(DecisionTableTest, ListFilters) {
  Apply("203.0.113.7", clock_.TimeNow());
  Apply("203.0.113.8", clock_.TimeNow());
  DecisionFilter f;
  f.target = "203.0.113.8";
  EXPECT_THAT(table_.List(f), SizeIs(1));
  f = {};
  f.rule_id = "other";
  EXPECT_THAT(table_.List(f), SizeIs(0));
  f = {};
  f.origin = palisade::v1::ORIGIN_MANUAL;
  EXPECT_THAT(table_.List(f), SizeIs(0));
  clock_.Advance(absl::Hours(2));
  table_.ExpireDue();
  f = {};
  f.active_only = true;
  EXPECT_THAT(table_.List(f), SizeIs(0));
  EXPECT_THAT(table_.List({}), SizeIs(2));
}

double Forgotten(prometheus::Registry& registry, const std::string& what,
                 const std::string& reason) {
  for (const auto& f : registry.Collect()) {
    if (f.name != "palisade_decisions_forgotten_total") continue;
    for (const auto& m : f.metric) {
      bool w = false, r = false;
      for (const auto& l : m.label) {
        w |= l.name == "what" && l.value == what;
        r |= l.name == "reason" && l.value == reason;
      }
      if (w && r) return m.counter.value;
    }
  }
  return -1;
}

// Issue 12: every ended decision stayed in memory for good (10,000 forged detections left
// 10,000 decisions, evidence and all). Ended decisions now leave after the retention.
TEST_F(DecisionTableTest, EndedDecisionsLeaveMemoryAfterTheRetention) {
  prometheus::Registry registry;
  DecisionTableLimits limits;
  limits.inactive_retention = absl::Hours(2);
  table_.SetLimits(limits, &registry);
  const std::string id = Apply("203.0.113.7", clock_.TimeNow()).decision.id();
  Apply("203.0.113.8", clock_.TimeNow() + absl::Minutes(30));
  clock_.Advance(absl::Hours(1));
  ASSERT_THAT(table_.ExpireDue(), SizeIs(1));
  // Ended, still within the retention: Get and List find it.
  clock_.Advance(absl::Hours(1) + absl::Minutes(59));
  table_.ExpireDue();
  EXPECT_THAT(table_.Get(id), IsOk());
  EXPECT_EQ(table_.size(), 2u);
  clock_.Advance(absl::Minutes(1));
  table_.ExpireDue();
  EXPECT_THAT(table_.Get(id), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(table_.size(), 1u);  // the other ended 30 minutes later: still kept
  EXPECT_EQ(Forgotten(registry, "decision", "age"), 1);
  EXPECT_EQ(Forgotten(registry, "decision", "cap"), 0);
}

TEST_F(DecisionTableTest, EndedDecisionsAreCappedByCountAndBytesOldestFirst) {
  prometheus::Registry registry;
  DecisionTableLimits limits;
  limits.max_inactive = 3;
  table_.SetLimits(limits, &registry);
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    DecisionUpdate u = Apply(absl::StrCat("203.0.113.", i + 1), clock_.TimeNow());
    ids.push_back(u.decision.id());
    ASSERT_THAT(table_.Withdraw(u.decision.id()), IsOk());
    clock_.Advance(absl::Seconds(1));
  }
  EXPECT_EQ(table_.size(), 3u);
  EXPECT_THAT(table_.Get(ids[0]), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(table_.Get(ids[1]), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(table_.Get(ids[4]), IsOk());
  EXPECT_EQ(Forgotten(registry, "decision", "cap"), 2);

  // Bytes: decisions carrying 4 KiB of evidence each, under a 10 KiB cap, keep two.
  limits.max_inactive = 1000;
  limits.max_inactive_bytes = 10 << 10;
  DecisionTable big(clock_);
  prometheus::Registry registry2;
  big.SetLimits(limits, &registry2);
  palisade::v1::DecisionSpec spec;
  spec.set_action(palisade::v1::ACTION_BLOCK);
  *spec.mutable_duration() = ToProtoDuration(absl::Hours(1));
  for (int i = 0; i < 6; ++i) {
    Detection d = Det(absl::StrCat("198.51.100.", i + 1), clock_.TimeNow());
    d.evidence = {std::string(4096, 'x')};
    ASSERT_THAT(big.Withdraw(big.Apply(d, spec).decision.id()), IsOk());
  }
  EXPECT_EQ(big.size(), 2u);
  EXPECT_EQ(Forgotten(registry2, "decision", "cap"), 4);
}

// Active decisions had no bound: one attacker with an IPv6 /64 and a threshold-1 rule made a
// day-long decision, evidence and all, per address it used. Past max_active_bytes a rule's new
// decision on an address is refused (counted as such); extensions, manual bans and (up to the
// whole budget) token revocations are still made, and what ends gives its bytes back.
TEST_F(DecisionTableTest, ActiveDecisionsAreBoundedInBytes) {
  DecisionTableLimits limits;
  limits.max_active_bytes = 64 << 10;
  table_.SetLimits(limits);
  palisade::v1::DecisionSpec spec = HourBlock();
  auto spray = [&](int i) {
    // One /64 each: addresses of one /64 would be folded into a range decision.
    Detection d = Det(absl::StrFormat("2001:db8:1:%x::1", i), clock_.TimeNow());
    d.evidence = {std::string(1000, 'a'), std::string(1000, 'b')};
    return table_.Apply(d, spec);
  };
  int created = 0;
  int refused = 0;
  for (int i = 1; i <= 200; ++i) {
    const DecisionUpdate u = spray(i);
    if (u.change == DecisionChange::kCreated) ++created;
    if (u.change == DecisionChange::kRefused) {
      ++refused;
      EXPECT_FALSE(u.decision.active());
      EXPECT_THAT(u.decision.id(), IsEmpty());
    }
  }
  EXPECT_GT(created, 10);
  EXPECT_EQ(created + refused, 200);
  EXPECT_GT(refused, 100);
  EXPECT_EQ(table_.active_count(), static_cast<size_t>(created));
  EXPECT_LE(table_.active_bytes(), limits.max_active_bytes);
  // A refused decision is not in the table; an address decided before is still extended.
  DecisionFilter last;
  last.target = "2001:db8:1:c8::1";
  EXPECT_THAT(table_.List(last), IsEmpty());
  EXPECT_EQ(spray(1).change, DecisionChange::kExtended);
  // An operator's ban and a leaked token's revocation are still made.
  palisade::v1::AddDecisionRequest manual;
  manual.mutable_target()->set_kind(palisade::v1::TARGET_KIND_IP);
  manual.mutable_target()->set_value("198.51.100.1");
  manual.set_action(palisade::v1::ACTION_BLOCK);
  *manual.mutable_duration() = ToProtoDuration(absl::Hours(1));
  EXPECT_THAT(table_.AddManual(manual), IsOk());
  Detection token = Det("sha256:0123456789abcdef", clock_.TimeNow());
  token.kind = palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT;
  EXPECT_EQ(table_.Apply(token, spec).change, DecisionChange::kCreated);
  // What ends gives its bytes back: once all expire, nothing is counted and a new one is made.
  clock_.Advance(absl::Hours(2));
  table_.ExpireDue();
  EXPECT_EQ(table_.active_count(), 0u);
  EXPECT_EQ(table_.active_bytes(), 0u);
  EXPECT_EQ(spray(300).change, DecisionChange::kCreated);
}

// One attacker holding an IPv6 /64 took a new address per request and got a decision for each:
// the budget, the guard's bans a minute and the edge's rules filled, and its next address was
// free anyway. The fourth address of a /64 with rule decisions makes the decision on the /64,
// which then takes the detections of every address in it; IPv4 and other /64s are not folded.
TEST_F(DecisionTableTest, TheFourthDecidedAddressOfAnIpv6RangeDecidesTheRange) {
  prometheus::Registry registry;
  table_.SetLimits(DecisionTableLimits(), &registry);
  for (int i = 1; i <= 3; ++i) {
    const DecisionUpdate u = Apply(absl::StrCat("2001:db8:1:2::", i), clock_.TimeNow());
    ASSERT_EQ(u.change, DecisionChange::kCreated);
    EXPECT_EQ(u.decision.target().kind(), palisade::v1::TARGET_KIND_IP);
  }
  for (int i = 1; i <= 5; ++i) {  // IPv4 addresses of one /24 stay apart
    EXPECT_EQ(Apply(absl::StrCat("203.0.113.", i), clock_.TimeNow()).decision.target().kind(),
              palisade::v1::TARGET_KIND_IP);
  }
  const DecisionUpdate folded = Apply("2001:db8:1:2:aaaa::4", clock_.TimeNow());
  ASSERT_EQ(folded.change, DecisionChange::kCreated);
  EXPECT_EQ(folded.decision.target().kind(), palisade::v1::TARGET_KIND_RANGE);
  EXPECT_EQ(folded.decision.target().value(), "2001:db8:1:2::/64");
  EXPECT_EQ(folded.decision.rule_id(), "ssh");
  EXPECT_THAT(folded.decision.reason(), HasSubstr("4 addresses of 2001:db8:1:2::/64"));
  EXPECT_EQ(folded.decision.evidence_size(), 2);
  // Every other address of the /64 extends the range's decision; none is decided alone.
  for (int i = 5; i <= 50; ++i) {
    const DecisionUpdate u = Apply(absl::StrFormat("2001:db8:1:2::%x", i), clock_.TimeNow());
    EXPECT_EQ(u.change, DecisionChange::kExtended);
    EXPECT_EQ(u.decision.id(), folded.decision.id());
  }
  // An address decided before extends its own decision; another /64 starts its own count.
  EXPECT_EQ(Apply("2001:db8:1:2::1", clock_.TimeNow()).decision.target().value(),
            "2001:db8:1:2::1");
  EXPECT_EQ(Apply("2001:db8:1:3::1", clock_.TimeNow()).decision.target().value(),
            "2001:db8:1:3::1");
  EXPECT_EQ(table_.active_count(), 3u + 5u + 1u + 1u);
  bool counted = false;
  for (const auto& family : registry.Collect()) {
    if (family.name != "palisade_decisions_ipv6_folded_total") continue;
    counted = true;
    EXPECT_EQ(family.metric.at(0).counter.value, 1);
  }
  EXPECT_TRUE(counted);
  // Past its end, before any sweep, the range is folded again as anew (said so, counted).
  clock_.Advance(absl::Hours(2));
  const DecisionUpdate again = Apply("2001:db8:1:2::99", clock_.TimeNow());
  ASSERT_EQ(again.change, DecisionChange::kCreated);
  EXPECT_EQ(again.decision.target().value(), "2001:db8:1:2::/64");
  EXPECT_THAT(again.decision.reason(), HasSubstr("ipv6 folding"));
  // Once all have ended, the /64's count starts over: its next address is decided alone.
  clock_.Advance(absl::Hours(2));
  table_.ExpireDue();
  EXPECT_EQ(Apply("2001:db8:1:2::77", clock_.TimeNow()).decision.target().kind(),
            palisade::v1::TARGET_KIND_IP);
}

// A fold must not reach what the guard would refuse: the whole range would then be refused at
// the edge and every address in it go free. Nor is a range folded that embeds IPv4 (NAT64's
// 64:ff9b::/96 holds every IPv4 address), nor with folding off, nor over manual or withdrawn
// decisions (only a rule's active decisions on addresses count).
TEST_F(DecisionTableTest, Ipv6FoldingSparesNeverBanRangesEmbeddedIpv4AndManualDecisions) {
  absl::StatusOr<CidrSet> never = CidrSet::Parse({"2001:db8:5:5::99"});
  ASSERT_THAT(never, IsOk());
  table_.SetNeverFold(*never);
  auto kinds = [&](absl::string_view prefix, int n) {
    std::vector<palisade::v1::TargetKind> k;
    for (int i = 1; i <= n; ++i) {
      k.push_back(Apply(absl::StrCat(prefix, i), clock_.TimeNow()).decision.target().kind());
    }
    return k;
  };
  const std::vector<palisade::v1::TargetKind> alone(6, palisade::v1::TARGET_KIND_IP);
  EXPECT_EQ(kinds("2001:db8:5:5::", 6), alone);       // holds a never-ban address
  EXPECT_EQ(kinds("64:ff9b::c633:64", 6), alone);     // NAT64: 198.51.100.x
  // Teredo: 8.8.4.9 to .14 behind one server (a 6to4 host's /48 is folded: its own test).
  EXPECT_EQ(kinds("2001:0:4136:e378:8000:63bf:f7f7:fbf", 6), alone);
  // Manual bans and withdrawn rule decisions do not count toward a fold.
  for (int i = 1; i <= 3; ++i) {
    palisade::v1::AddDecisionRequest manual;
    manual.mutable_target()->set_kind(palisade::v1::TARGET_KIND_IP);
    manual.mutable_target()->set_value(absl::StrCat("2001:db8:6:6::", i));
    manual.set_action(palisade::v1::ACTION_BLOCK);
    *manual.mutable_duration() = ToProtoDuration(absl::Hours(1));
    ASSERT_THAT(table_.AddManual(manual), IsOk());
  }
  for (int i = 11; i <= 13; ++i) {
    const DecisionUpdate u = Apply(absl::StrCat("2001:db8:6:6::", i), clock_.TimeNow());
    ASSERT_THAT(table_.Withdraw(u.decision.id()), IsOk());
  }
  EXPECT_EQ(kinds("2001:db8:6:6::2", 3), std::vector<palisade::v1::TargetKind>(
                                              3, palisade::v1::TARGET_KIND_IP));
  // Off: an address is always decided alone.
  DecisionTableLimits off;
  off.ipv6_fold_addresses = 0;
  table_.SetLimits(off);
  EXPECT_EQ(kinds("2001:db8:7:7::", 6), alone);
}

// A 6to4 host (2002:WWXX:YYZZ::/48, RFC 3056) holds its whole /48 and may take a new /64 of it
// per try. Folding skipped it (an address embedding IPv4), so one that spent `count` tries per
// /64 got a decision per address forever, and an address inside the /48 the engine decided
// (its range window, EngineRangeWindowTest) made a second decision instead of extending that
// one. Its addresses fold into the /48, whatever the fold prefix; only with folding on.
TEST_F(DecisionTableTest, A6to4HostsAddressesFoldIntoItsSlash48WhateverThePrefix) {
  for (int prefix : {64, 48}) {
    DecisionTableLimits limits;
    limits.ipv6_fold_prefix = prefix;
    DecisionTable table(clock_);
    table.SetLimits(limits);
    palisade::v1::DecisionSpec spec;
    spec.set_action(palisade::v1::ACTION_BLOCK);
    *spec.mutable_duration() = ToProtoDuration(absl::Hours(1));
    spec.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
    // 8.8.8.8's /48: one address in each of four /64s.
    for (int i = 1; i <= 3; ++i) {
      const DecisionUpdate u =
          table.Apply(Det(absl::StrCat("2002:808:808:", i, "::1"), clock_.TimeNow()), spec);
      ASSERT_EQ(u.change, DecisionChange::kCreated) << prefix;
      EXPECT_EQ(u.decision.target().kind(), palisade::v1::TARGET_KIND_IP) << prefix;
    }
    const DecisionUpdate folded = table.Apply(Det("2002:808:808:4::1", clock_.TimeNow()), spec);
    ASSERT_EQ(folded.change, DecisionChange::kCreated) << prefix;
    EXPECT_EQ(folded.decision.target().kind(), palisade::v1::TARGET_KIND_RANGE) << prefix;
    EXPECT_EQ(folded.decision.target().value(), "2002:808:808::/48") << prefix;
    const DecisionUpdate next = table.Apply(Det("2002:808:808:ffff::9", clock_.TimeNow()), spec);
    EXPECT_EQ(next.change, DecisionChange::kExtended) << prefix;
    EXPECT_EQ(next.decision.id(), folded.decision.id()) << prefix;
    // The engine's decision on 8.8.8.9's /48 (its range window filled) takes its addresses'
    // detections: extended, not a second decision.
    Detection range = Det("2002:808:809::/48", clock_.TimeNow());
    range.kind = palisade::v1::TARGET_KIND_RANGE;
    const DecisionUpdate engine_made = table.Apply(range, spec);
    ASSERT_EQ(engine_made.change, DecisionChange::kCreated) << prefix;
    const DecisionUpdate inside = table.Apply(Det("2002:808:809:7::1", clock_.TimeNow()), spec);
    EXPECT_EQ(inside.change, DecisionChange::kExtended) << prefix;
    EXPECT_EQ(inside.decision.id(), engine_made.decision.id()) << prefix;
    EXPECT_EQ(table.active_count(), 3u + 1u + 1u) << prefix;
  }
  // Folding off: each address alone, as any other.
  DecisionTableLimits off;
  off.ipv6_fold_addresses = 0;
  table_.SetLimits(off);
  for (int i = 1; i <= 6; ++i) {
    EXPECT_EQ(Apply(absl::StrCat("2002:808:808:", i, "::1"), clock_.TimeNow())
                  .decision.target()
                  .kind(),
              palisade::v1::TARGET_KIND_IP);
  }
}

// Offenders were remembered for good, one entry per address that ever offended. An offender
// whose escalation memory has run out is forgotten (its next offence is the first anyway), and
// the number of offenders is capped.
TEST_F(DecisionTableTest, OffendersLeaveMemoryAfterTheirEscalationMemoryAndAreCapped) {
  prometheus::Registry registry;
  DecisionTableLimits limits;
  limits.max_offenders = 3;
  table_.SetLimits(limits, &registry);
  *escalation_.mutable_memory() = ToProtoDuration(absl::Hours(24));
  for (int i = 0; i < 5; ++i) {
    Apply(absl::StrCat("203.0.113.", i + 1), clock_.TimeNow());
    clock_.Advance(absl::Minutes(1));
  }
  EXPECT_EQ(table_.offenders(), 3u);
  EXPECT_EQ(Forgotten(registry, "offender", "cap"), 2);
  // A stale detection leaves nothing behind.
  Apply("203.0.113.99", clock_.TimeNow() - absl::Hours(3));
  EXPECT_EQ(table_.offenders(), 3u);
  // An extension moves the memory on: the last offender offends again 23 hours on.
  clock_.Advance(absl::Hours(23));
  table_.ExpireDue();
  ASSERT_EQ(Apply("203.0.113.5", clock_.TimeNow()).change, DecisionChange::kCreated);
  clock_.Advance(absl::Hours(2));
  table_.ExpireDue();
  EXPECT_EQ(table_.offenders(), 1u);  // the others' memory ran out
  EXPECT_EQ(Forgotten(registry, "offender", "age"), 2);
  clock_.Advance(absl::Hours(12));
  EXPECT_EQ(Apply("203.0.113.5", clock_.TimeNow()).decision.offence(), 3u);
}

// Over the cap, the offender forgotten is the one whose memory ends first, counted from its
// last offence: an earlier offender that offended again outlives a later one.
TEST_F(DecisionTableTest, TheOffenderCapForgetsTheMemoryThatEndsFirst) {
  DecisionTableLimits limits;
  limits.max_offenders = 2;
  table_.SetLimits(limits);
  *escalation_.mutable_memory() = ToProtoDuration(absl::Hours(24));
  const absl::Time t = clock_.TimeNow();
  Apply("203.0.113.1", t);
  Apply("203.0.113.2", t + absl::Minutes(1));
  Apply("203.0.113.1", t + absl::Minutes(2));  // extended: its memory now ends last
  Apply("203.0.113.3", t + absl::Minutes(3));  // over the cap: .2 goes
  EXPECT_EQ(table_.offenders(), 2u);
  clock_.Advance(absl::Hours(2));
  table_.ExpireDue();
  EXPECT_EQ(Apply("203.0.113.1", clock_.TimeNow()).decision.offence(), 2u);
  EXPECT_EQ(Apply("203.0.113.2", clock_.TimeNow()).decision.offence(), 1u);
}

// Decisions.List answered with every decision in one message. ListPage pages it in a stable
// order; a token stays good while decisions come and go.
TEST_F(DecisionTableTest, ListPagesInAStableOrder) {
  for (int i = 0; i < 7; ++i) {
    Apply(absl::StrCat("203.0.113.", i + 1), clock_.TimeNow());
    clock_.Advance(absl::Seconds(1));
  }
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    absl::StatusOr<DecisionPage> page = table_.ListPage({}, 3, token, 1 << 20);
    ASSERT_THAT(page, IsOk());
    ASSERT_LE(page->decisions.size(), 3u);
    for (const Decision& d : page->decisions) seen.push_back(d.target().value());
    token = page->next_page_token;
    if (++pages == 1) {
      // A decision made between two pages that sorts after the token still comes.
      Apply("203.0.113.200", clock_.TimeNow());
    }
  } while (!token.empty());
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(seen, (std::vector<std::string>{"203.0.113.1", "203.0.113.2", "203.0.113.3",
                                            "203.0.113.4", "203.0.113.5", "203.0.113.6",
                                            "203.0.113.7", "203.0.113.200"}));
  // The byte bound: one decision per page when each is bigger than the bound (never zero).
  absl::StatusOr<DecisionPage> small = table_.ListPage({}, 100, "", 1);
  ASSERT_THAT(small, IsOk());
  EXPECT_THAT(small->decisions, SizeIs(1));
  EXPECT_FALSE(small->next_page_token.empty());
  EXPECT_THAT(table_.ListPage({}, 3, "garbage", 1 << 20),
              StatusIs(absl::StatusCode::kInvalidArgument));
  DecisionFilter active;
  active.active_only = true;
  absl::StatusOr<DecisionPage> all = table_.ListPage(active, 100, "", 1 << 20);
  ASSERT_THAT(all, IsOk());
  EXPECT_THAT(all->decisions, SizeIs(8));
  EXPECT_TRUE(all->next_page_token.empty());
}

// One decision's changes reach listeners in the order the table made them. A creation whose
// notification is late (its thread paused between the change and the listeners, here inside
// ApplyAll's before_notify) is still heard before the withdrawal another thread made right after
// it. Before the notification turn, the withdrawal reached the listeners first: the dispatcher
// then applied a ban that nothing would ever remove.
TEST_F(DecisionTableTest, ListenersHearADecisionsChangesInOrder) {
  CompiledRule rule;
  rule.proto.set_id("ssh");
  rule.proto.mutable_decision()->set_action(palisade::v1::ACTION_BLOCK);
  *rule.proto.mutable_decision()->mutable_duration() = ToProtoDuration(absl::Hours(1));
  Detection d = Det("203.0.113.7", clock_.TimeNow());
  d.rule = &rule;

  absl::Mutex mu;
  std::vector<std::pair<std::string, DecisionChange>> heard;
  table_.AddListener([&](const DecisionUpdate& u) {
    absl::MutexLock lock(&mu);
    heard.emplace_back(u.decision.id(), u.change);
  });
  std::string id;
  absl::Notification created;
  std::thread withdrawer([&] {
    created.WaitForNotification();
    EXPECT_THAT(table_.Withdraw(id), IsOk());
  });
  table_.ApplyAll({d}, [&](const std::vector<DecisionUpdate>& updates) {
    ASSERT_EQ(updates.size(), 1u);
    id = updates[0].decision.id();
    created.Notify();
    // Pause until the withdrawal is made (the table says so)...
    ASSERT_TRUE(WaitUntil([&] { return !table_.Get(id)->active(); }, absl::Seconds(60)));
    // ... and give its notification a chance to overtake this one (it must not). A slow
    // machine can only make this test pass without proving anything, never fail wrongly.
    WaitUntil(
        [&] {
          absl::MutexLock lock(&mu);
          return !heard.empty();
        },
        absl::Seconds(1));
  });
  withdrawer.join();
  absl::MutexLock lock(&mu);
  ASSERT_EQ(heard.size(), 2u);
  EXPECT_EQ(heard[0], std::make_pair(id, DecisionChange::kCreated));
  EXPECT_EQ(heard[1], std::make_pair(id, DecisionChange::kWithdrawn));
}

// Many threads creating, extending, withdrawing and expiring: every decision is heard created
// first, and ended at most once, after.
// With a store, concurrent change sets are written outside the table's lock but in the order
// they were made: the operations listeners hear come in the order of their sequence numbers,
// and the store ends with each decision as the table has it (a write overtaken by an older one
// would leave a withdrawn decision active in the store, or an extension's expiry behind).
TEST_F(DecisionTableTest, ConcurrentChangesAreStoredInTheirOrder) {
  auto store = FreshStore("order.db");
  ASSERT_THAT(store, IsOk());
  DecisionTable table(clock_);
  table.SetStore(store->get(), {palisade::v1::ACTUATOR_ACCESS_RULE});
  const palisade::v1::DecisionSpec spec = HourBlock();
  std::vector<int64_t> seqs;  // heard, in order (listeners are called one at a time)
  table.AddListener([&](const DecisionUpdate& u) {
    if (u.outbox_seq > 0) seqs.push_back(u.outbox_seq);
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) {
        const std::string ip = absl::StrCat("203.0.113.", (i + t) % 10);
        DecisionUpdate u = table.Apply(Det(ip, clock_.TimeNow()), spec);
        if (i % 3 == 0) (void)table.Withdraw(u.decision.id());
        if (i % 7 == 0) {
          clock_.Advance(absl::Minutes(40));
          table.ExpireDue();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_FALSE(seqs.empty());
  EXPECT_TRUE(std::is_sorted(seqs.begin(), seqs.end()));
  EXPECT_EQ(std::adjacent_find(seqs.begin(), seqs.end()), seqs.end());
  absl::StatusOr<std::vector<Decision>> stored = (*store)->LoadDecisions(/*active_only=*/false);
  ASSERT_THAT(stored, IsOk());
  size_t compared = 0;
  for (const Decision& d : *stored) {
    absl::StatusOr<Decision> held = table.Get(d.id());
    if (!held.ok()) continue;  // forgotten by the table (ended, past its retention)
    EXPECT_EQ(d.DebugString(), held->DebugString());
    ++compared;
  }
  EXPECT_GT(compared, 0u);
}

TEST_F(DecisionTableTest, ConcurrentChangesKeepPerDecisionOrder) {
  absl::Mutex mu;
  absl::flat_hash_map<std::string, std::vector<DecisionChange>> heard;
  table_.AddListener([&](const DecisionUpdate& u) {
    if (u.change == DecisionChange::kStale) return;  // no decision (the clock moved on)
    absl::MutexLock lock(&mu);
    heard[u.decision.id()].push_back(u.change);
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        const std::string ip = absl::StrCat("203.0.113.", (i + t) % 20);
        DecisionUpdate u = Apply(ip, clock_.TimeNow());
        if (i % 3 == 0) (void)table_.Withdraw(u.decision.id());
        if (i % 7 == 0) {
          clock_.Advance(absl::Hours(2));
          table_.ExpireDue();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  absl::MutexLock lock(&mu);
  for (const auto& [id, changes] : heard) {
    ASSERT_FALSE(changes.empty());
    EXPECT_EQ(changes.front(), DecisionChange::kCreated) << id;
    int ends = 0;
    for (size_t i = 1; i < changes.size(); ++i) {
      EXPECT_NE(changes[i], DecisionChange::kCreated) << id;
      if (changes[i] == DecisionChange::kExpired || changes[i] == DecisionChange::kWithdrawn) {
        ++ends;
      } else {
        EXPECT_EQ(ends, 0) << id << ": extended after its end";
      }
    }
    EXPECT_LE(ends, 1) << id;
  }
}

}  // namespace
}  // namespace palisade
