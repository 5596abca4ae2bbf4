#include "services/events/event_hub.h"

#include <map>
#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/status_matchers.h"

namespace palisade {
namespace {

using palisade::v1::Event;
using palisade::v1::WatchRequest;
using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::IsOk;
using testing::StatusIs;

Event Make(palisade::v1::EventKind kind, const std::string& rule,
           palisade::v1::Origin origin = palisade::v1::ORIGIN_RULE) {
  Event e;
  e.set_kind(kind);
  e.set_rule_id(rule);
  e.set_origin(origin);
  return e;
}

std::vector<uint64_t> Drain(QueueSubscriber& s) {
  std::vector<uint64_t> out;
  while (auto e = s.Next(absl::ZeroDuration())) out.push_back(e->sequence());
  return out;
}

class EventHubTest : public ::testing::Test {
 protected:
  // A hub whose replay buffer holds 5 events, after 8 were published: 1..3 are gone.
  std::unique_ptr<EventHub> HubHoldingFiveOfEight() {
    EventHubOptions options;
    options.replay_capacity = 5;
    auto hub = std::make_unique<EventHub>(options, clock_, registry_);
    for (int i = 0; i < 8; ++i) hub->Publish(Make(palisade::v1::EVENT_KIND_DECISION, "ssh"));
    return hub;
  }

  SimulatedClock clock_;
  prometheus::Registry registry_;
};

TEST_F(EventHubTest, OrderedAndFiltered) {
  EventHub hub({}, clock_, registry_);
  QueueSubscriber all, decisions_of_ssh;
  ASSERT_THAT(hub.Subscribe(&all, {}), IsOk());
  WatchRequest filter;
  filter.add_kinds(palisade::v1::EVENT_KIND_DECISION);
  filter.set_rule_id("ssh");
  ASSERT_THAT(hub.Subscribe(&decisions_of_ssh, filter), IsOk());
  hub.Publish(Make(palisade::v1::EVENT_KIND_DETECTION, "ssh"));
  hub.Publish(Make(palisade::v1::EVENT_KIND_DECISION, "ssh"));
  hub.Publish(Make(palisade::v1::EVENT_KIND_DECISION, "nginx"));
  hub.Publish(Make(palisade::v1::EVENT_KIND_DECISION, "ssh"));
  EXPECT_EQ(Drain(all), (std::vector<uint64_t>{1, 2, 3, 4}));
  EXPECT_EQ(Drain(decisions_of_ssh), (std::vector<uint64_t>{2, 4}));

  QueueSubscriber feeds_only;
  WatchRequest origin;
  origin.set_origin(palisade::v1::ORIGIN_FEED);
  ASSERT_THAT(hub.Subscribe(&feeds_only, origin), IsOk());
  hub.Publish(Make(palisade::v1::EVENT_KIND_DECISION, "feed", palisade::v1::ORIGIN_FEED));
  hub.Publish(Make(palisade::v1::EVENT_KIND_DECISION, "ssh"));
  EXPECT_EQ(Drain(feeds_only), (std::vector<uint64_t>{5}));
}

// What Events.Watch refuses before a stream opens, each naming the field.
TEST(ValidateWatchRequestTest, EachKindKnownAndOnceAndTheStringsBounded) {
  WatchRequest ok;
  ok.add_kinds(palisade::v1::EVENT_KIND_DETECTION);
  ok.add_kinds(palisade::v1::EVENT_KIND_ALERT);
  ok.set_rule_id(std::string(kMaxWatchFilterBytes, 'r'));
  ok.set_stream(std::string(kMaxWatchFilterBytes, 's'));
  ok.set_origin(palisade::v1::ORIGIN_FEED);
  EXPECT_THAT(ValidateWatchRequest(ok), IsOk());
  EXPECT_THAT(ValidateWatchRequest({}), IsOk());

  WatchRequest twice;
  twice.add_kinds(palisade::v1::EVENT_KIND_ACTION);
  twice.add_kinds(palisade::v1::EVENT_KIND_DECISION);
  twice.add_kinds(palisade::v1::EVENT_KIND_ACTION);
  EXPECT_THAT(ValidateWatchRequest(twice),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "WatchRequest.kinds[2]: EVENT_KIND_ACTION is listed twice"));
  WatchRequest unknown;
  unknown.add_kinds(palisade::v1::EVENT_KIND_DECISION);
  unknown.add_kinds(static_cast<palisade::v1::EventKind>(-3));
  EXPECT_THAT(ValidateWatchRequest(unknown),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "WatchRequest.kinds[1]: -3 is not an EventKind"));
  WatchRequest unspecified;
  unspecified.add_kinds(palisade::v1::EVENT_KIND_UNSPECIFIED);
  EXPECT_THAT(ValidateWatchRequest(unspecified),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "WatchRequest.kinds[0]: EVENT_KIND_UNSPECIFIED is the kind of no event"));
  WatchRequest origin;
  origin.set_origin(static_cast<palisade::v1::Origin>(77));
  EXPECT_THAT(ValidateWatchRequest(origin),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "WatchRequest.origin: 77 is not an Origin"));
  WatchRequest rule;
  rule.set_rule_id(std::string(kMaxWatchFilterBytes + 1, 'r'));
  EXPECT_THAT(ValidateWatchRequest(rule),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "WatchRequest.rule_id: 257 bytes, at most 256"));
  WatchRequest stream;
  stream.set_stream(std::string(1 << 20, 's'));
  EXPECT_THAT(ValidateWatchRequest(stream),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "WatchRequest.stream: 1048576 bytes, at most 256"));
}

// The hub keeps a filter's kinds as a bitmask; it takes any filter (a sink's comes from the
// config): a kind listed twice is listed once, and a filter of kinds the hub does not know
// matches no event (not every event), live and in a replay.
TEST_F(EventHubTest, KindsAsABitmaskMatchAsTheListDid) {
  EventHub hub({}, clock_, registry_);
  QueueSubscriber twice, unknown;
  WatchRequest kinds;
  kinds.add_kinds(palisade::v1::EVENT_KIND_ALERT);
  kinds.add_kinds(palisade::v1::EVENT_KIND_DETECTION);
  kinds.add_kinds(palisade::v1::EVENT_KIND_ALERT);
  ASSERT_THAT(hub.Subscribe(&twice, kinds), IsOk());
  WatchRequest none;
  none.add_kinds(static_cast<palisade::v1::EventKind>(40));
  none.add_kinds(static_cast<palisade::v1::EventKind>(-1));
  ASSERT_THAT(hub.Subscribe(&unknown, none), IsOk());
  hub.Publish(Make(palisade::v1::EVENT_KIND_DETECTION, "ssh"));
  hub.Publish(Make(palisade::v1::EVENT_KIND_DECISION, "ssh"));
  hub.Publish(Make(palisade::v1::EVENT_KIND_ACTION, "ssh"));
  hub.Publish(Make(palisade::v1::EVENT_KIND_ALERT, "ssh"));
  EXPECT_EQ(Drain(twice), (std::vector<uint64_t>{1, 4}));
  EXPECT_EQ(Drain(unknown), (std::vector<uint64_t>{}));

  QueueSubscriber replayed;
  kinds.set_after_sequence(1);
  ASSERT_THAT(hub.Subscribe(&replayed, kinds), IsOk());
  EXPECT_EQ(Drain(replayed), (std::vector<uint64_t>{4}));
}

TEST_F(EventHubTest, ResumeReplaysWhatFollowsTheLastSequenceSeen) {
  std::unique_ptr<EventHub> held = HubHoldingFiveOfEight();
  EventHub& hub = *held;
  QueueSubscriber resumed;
  WatchRequest after;
  after.set_after_sequence(5);
  ASSERT_THAT(hub.Subscribe(&resumed, after), IsOk());
  hub.Publish(Make(palisade::v1::EVENT_KIND_DECISION, "ssh"));
  EXPECT_EQ(Drain(resumed), (std::vector<uint64_t>{6, 7, 8, 9}));

  // Events 2 and 3 are gone: say so rather than silently skip them.
  QueueSubscriber late;
  after.set_after_sequence(1);
  EXPECT_THAT(hub.Subscribe(&late, after),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("events 2..4 have left")));
  after.set_after_sequence(100);
  EXPECT_THAT(hub.Subscribe(&late, after), StatusIs(absl::StatusCode::kOutOfRange));
}

// A sink resuming after events that have left the buffer takes the oldest it still holds, and
// learns in the same step which range it missed (no publish can fall in between).
TEST_F(EventHubTest, SubscribeSkippingGoneResumesFromTheOldestHeldAndSaysWhatWasMissed) {
  std::unique_ptr<EventHub> held = HubHoldingFiveOfEight();
  EventHub& hub = *held;
  WatchRequest after;
  after.set_after_sequence(1);  // 2 and 3 are gone, 4..8 held
  QueueSubscriber late;
  uint64_t resumed_after = 0;
  ASSERT_THAT(hub.SubscribeSkippingGone(&late, after, &resumed_after), IsOk());
  EXPECT_EQ(resumed_after, 3u);
  hub.Publish(Make(palisade::v1::EVENT_KIND_DECISION, "ssh"));
  EXPECT_EQ(Drain(late), (std::vector<uint64_t>{4, 5, 6, 7, 8, 9}));

  // Nothing gone: as Subscribe, and resumed_after is where it was asked to resume.
  after.set_after_sequence(7);
  QueueSubscriber current;
  ASSERT_THAT(hub.SubscribeSkippingGone(&current, after, &resumed_after), IsOk());
  EXPECT_EQ(resumed_after, 7u);
  EXPECT_EQ(Drain(current), (std::vector<uint64_t>{8, 9}));

  // A replay larger than the queue: kResourceExhausted, and the range missed is still said.
  after.set_after_sequence(1);
  QueueSubscriber small(2);
  EXPECT_THAT(hub.SubscribeSkippingGone(&small, after, &resumed_after),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(resumed_after, 4u);  // 2..4 gone now (5..9 held)
  EXPECT_EQ(Drain(small), (std::vector<uint64_t>{5, 6}));
}

TEST_F(EventHubTest, ASlowSubscriberIsDroppedAndTheOthersKeepUp) {
  EventHub hub({}, clock_, registry_);
  QueueSubscriber slow(3), fast(100);
  ASSERT_THAT(hub.Subscribe(&slow, {}), IsOk());
  ASSERT_THAT(hub.Subscribe(&fast, {}), IsOk());
  for (int i = 0; i < 10; ++i) hub.Publish(Make(palisade::v1::EVENT_KIND_ACTION, "ssh"));
  EXPECT_TRUE(slow.dropped());
  EXPECT_EQ(Drain(slow), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(Drain(fast).size(), 10u);
  hub.Unsubscribe(&slow);  // already gone: a no-op
  bool found = false;
  for (const auto& family : registry_.Collect()) {
    if (family.name == "palisade_events_subscribers_dropped_total") {
      EXPECT_EQ(family.metric[0].counter.value, 1);
      found = true;
    }
  }
  EXPECT_TRUE(found);
}

// A detection event carrying 16 KiB of (hostile) evidence.
Event Big() {
  Event e = Make(palisade::v1::EVENT_KIND_DETECTION, "ssh");
  e.mutable_detection()->add_evidence(std::string(16 << 10, 'x'));
  return e;
}

double Value(prometheus::Registry& registry, const std::string& name) {
  for (const auto& family : registry.Collect()) {
    if (family.name == name) return family.metric[0].counter.value + family.metric[0].gauge.value;
  }
  return -1;
}

// A restarted palisaded numbers its events from 1 again: a client resuming after sequence 3 of
// the old stream got the new stream's events 4.. (or nothing, silently) in place of those it
// missed. Each event names its stream, and a resume naming another stream is refused.
TEST_F(EventHubTest, AResumeFromAnotherStreamIsRefusedNamingBoth) {
  EventHub before({}, clock_, registry_);
  prometheus::Registry registry;
  EventHub after_restart({}, clock_, registry);
  EXPECT_NE(before.stream_id(), after_restart.stream_id());
  EXPECT_EQ(before.stream_id().size(), 16u);
  QueueSubscriber watcher;
  ASSERT_THAT(before.Subscribe(&watcher, {}), IsOk());
  for (int i = 0; i < 3; ++i) before.Publish(Event());
  Event last;
  while (auto e = watcher.Next(absl::ZeroDuration())) last = *e;
  EXPECT_EQ(last.sequence(), 3u);
  EXPECT_EQ(last.stream(), before.stream_id());

  QueueSubscriber first;
  ASSERT_THAT(after_restart.Subscribe(&first, {}), IsOk());
  for (int i = 0; i < 5; ++i) after_restart.Publish(Event());
  WatchRequest resume;
  resume.set_after_sequence(last.sequence());
  resume.set_stream(last.stream());
  QueueSubscriber resumed;
  EXPECT_THAT(after_restart.Subscribe(&resumed, resume),
              StatusIs(absl::StatusCode::kOutOfRange,
                       AllOf(HasSubstr(before.stream_id()), HasSubstr(after_restart.stream_id()),
                             HasSubstr("restarted"))));
  // The same stream resumes; no stream given is not checked (older clients).
  resume.set_stream(after_restart.stream_id());
  QueueSubscriber same;
  ASSERT_THAT(after_restart.Subscribe(&same, resume), IsOk());
  EXPECT_EQ(Drain(same), (std::vector<uint64_t>{4, 5}));
  resume.clear_stream();
  QueueSubscriber unchecked;
  EXPECT_THAT(after_restart.Subscribe(&unchecked, resume), IsOk());
}

// Issue 12: the replay buffer was bounded in events only: 10,000 detections of 16 KiB lines
// held 160 MiB and more. It is bounded in bytes too; what leaves early is counted.
TEST_F(EventHubTest, TheReplayBufferIsBoundedInBytes) {
  EventHubOptions options;
  // Room for three, with their numbers and stream id.
  options.replay_max_bytes = 3 * Big().ByteSizeLong() + 150;
  EventHub hub(options, clock_, registry_);
  QueueSubscriber first;  // events are buffered once someone subscribed
  ASSERT_THAT(hub.Subscribe(&first, {}), IsOk());
  for (int i = 0; i < 10; ++i) hub.Publish(Big());
  QueueSubscriber resumed;
  WatchRequest after;
  after.set_after_sequence(7);
  ASSERT_THAT(hub.Subscribe(&resumed, after), IsOk());
  EXPECT_EQ(Drain(resumed), (std::vector<uint64_t>{8, 9, 10}));
  QueueSubscriber late;
  after.set_after_sequence(6);
  EXPECT_THAT(hub.Subscribe(&late, after),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("have left the replay buffer")));
  EXPECT_EQ(Value(registry_, "palisade_events_replay_evicted_total"), 7);
  EXPECT_LE(Value(registry_, "palisade_events_replay_bytes"), options.replay_max_bytes);
}

// A subscriber's queue is bounded in bytes as well as in events: one that falls a few big events
// behind is dropped (and may resume), however few events that is.
TEST_F(EventHubTest, ASubscriberQueueIsBoundedInBytes) {
  EventHub hub({}, clock_, registry_);
  QueueSubscriber slow(/*capacity=*/1000, /*max_bytes=*/40 << 10);
  ASSERT_THAT(hub.Subscribe(&slow, {}), IsOk());
  for (int i = 0; i < 5; ++i) hub.Publish(Big());
  EXPECT_TRUE(slow.dropped());
  EXPECT_EQ(Drain(slow), (std::vector<uint64_t>{1, 2}));
  // A single event bigger than the bound still goes through to an empty queue.
  QueueSubscriber tiny(/*capacity=*/1000, /*max_bytes=*/1);
  ASSERT_THAT(hub.Subscribe(&tiny, {}), IsOk());
  hub.Publish(Big());
  EXPECT_FALSE(tiny.dropped());
  EXPECT_EQ(Drain(tiny), (std::vector<uint64_t>{6}));
}

// palisade_events_published_total has a series per kind; an alert (kind 4) was counted under
// kind="unknown" and the alert series did not exist.
TEST_F(EventHubTest, EachKindIsCountedUnderItsOwnName) {
  EventHub hub({}, clock_, registry_);
  hub.Publish(Make(palisade::v1::EVENT_KIND_ALERT, "audit"));
  hub.Publish(Make(palisade::v1::EVENT_KIND_ALERT, "audit"));
  hub.Publish(Make(palisade::v1::EVENT_KIND_DECISION, "ssh"));
  std::map<std::string, double> by_kind;
  for (const auto& family : registry_.Collect()) {
    if (family.name != "palisade_events_published_total") continue;
    for (const auto& m : family.metric) by_kind[m.label.at(0).value] = m.counter.value;
  }
  EXPECT_EQ(by_kind["alert"], 2);
  EXPECT_EQ(by_kind["decision"], 1);
  EXPECT_EQ(by_kind["unknown"], 0);
}

}  // namespace
}  // namespace palisade
