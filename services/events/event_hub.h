// The event stream: every detection, decision change and edge-action outcome, numbered, kept in
// a bounded replay buffer, and handed to subscribers (Events.Watch clients, the SIEM sinks).
//
// Publishing never waits for a subscriber: each one takes events into its own bounded queue,
// and one that cannot take more is dropped (and counted); it may come back and resume from the
// last sequence it saw, as long as the replay buffer still holds what followed.
// Thread-safety: all methods are thread-safe.
#ifndef PALISADE_SERVICES_EVENTS_EVENT_HUB_H_
#define PALISADE_SERVICES_EVENTS_EVENT_HUB_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "palisade/v1/palisade.pb.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/common/clock.h"

namespace palisade {

// What Events.Watch takes of a client's filter: it is kept for the stream's life and read for
// every event under the hub's lock, so it is checked before the stream opens. Each kind must be
// an EventKind other than UNSPECIFIED (which no event has) and listed at most once; origin an
// Origin; rule_id and stream at most kMaxWatchFilterBytes bytes (rule ids are at most 64, a
// stream id 16). kInvalidArgument naming the field, e.g. "WatchRequest.kinds[2]:
// EVENT_KIND_DECISION is listed twice". The hub itself takes any filter (sinks build theirs from
// the config): a kind it does not know matches nothing.
inline constexpr size_t kMaxWatchFilterBytes = 256;
absl::Status ValidateWatchRequest(const palisade::v1::WatchRequest& filter);

struct EventHubOptions {
  size_t replay_capacity = 10000;
  // The replay buffer's bound in bytes (serialized size): a detection carries its evidence
  // lines, so 10,000 events of hostile 16 KiB lines would be over a gigabyte. Past it the oldest
  // events leave first, counted in palisade_events_replay_evicted_total{reason="bytes"}.
  size_t replay_max_bytes = size_t{32} << 20;
  // The stream's id (Event.stream). Empty: 16 random hex digits, a new stream per hub.
  std::string stream_id;
};

class EventHub {
 public:
  class Subscriber {
   public:
    virtual ~Subscriber() = default;
    // Takes one event. Called with the hub's lock held: must not block or call the hub.
    // Returning false means "no more room": the hub removes the subscriber and counts a drop.
    virtual bool Deliver(const palisade::v1::Event& event) = 0;
  };

  EventHub(EventHubOptions options, Clock& clock, prometheus::Registry& registry);

  // Stamps the stream, sequence number and time and delivers the event.
  void Publish(palisade::v1::Event event);

  // False until the first subscription (a Watch call or a sink): publishers check it before
  // building events, so a daemon nobody watches pays nothing for the stream. From then on every
  // event is numbered and buffered, so a client that subscribed once can always resume.
  bool wanted() const { return wanted_.load(std::memory_order_relaxed); }

  // Adds `subscriber` with `filter`; first replays the buffered events after
  // filter.after_sequence (if any). kOutOfRange when some of those have left the buffer, and
  // when filter.stream is set and is not this stream (the sequence counts in another).
  absl::Status Subscribe(Subscriber* subscriber, const palisade::v1::WatchRequest& filter);
  // As Subscribe, but when events after filter.after_sequence have left the buffer, replays from
  // the oldest it still holds instead of failing. Sets *resumed_after to the sequence the replay
  // starts after (filter.after_sequence when nothing was gone): the events after_sequence + 1 ..
  // *resumed_after are the ones missed. Decided under the hub's lock, so no event falls between
  // what is missed and what is delivered. kResourceExhausted as Subscribe (*resumed_after set).
  absl::Status SubscribeSkippingGone(Subscriber* subscriber,
                                     const palisade::v1::WatchRequest& filter,
                                     uint64_t* resumed_after);
  // Removes it (no-op when already removed). No Deliver call runs after this returns.
  void Unsubscribe(Subscriber* subscriber);

  uint64_t last_sequence() const;
  const std::string& stream_id() const { return stream_id_; }

 private:
  // A subscriber's filter as Publish reads it, with the hub's lock held: its kinds as a bitmask
  // (a test per event, whatever the request listed), its rule and origin.
  struct Filter {
    explicit Filter(const palisade::v1::WatchRequest& request);
    bool Matches(const palisade::v1::Event& event) const;
    bool all_kinds;  // the request listed no kind
    uint32_t kinds = 0;  // bit k: EventKind k, for the kinds the hub knows
    std::string rule_id;
    palisade::v1::Origin origin;
  };
  static_assert(palisade::v1::EventKind_ARRAYSIZE <= 32, "Filter::kinds holds 32 kinds");
  struct Entry {
    Subscriber* subscriber;
    Filter filter;
  };
  void DropLocked(size_t index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SubscribeImpl(Subscriber* subscriber, const palisade::v1::WatchRequest& filter,
                             bool skip_gone, uint64_t* resumed_after);

  const EventHubOptions options_;
  const std::string stream_id_;
  Clock& clock_;
  std::atomic<bool> wanted_{false};
  mutable absl::Mutex mu_;
  uint64_t sequence_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<palisade::v1::Event> buffer_ ABSL_GUARDED_BY(mu_);
  std::deque<size_t> buffer_sizes_ ABSL_GUARDED_BY(mu_);  // ByteSizeLong of each, in order
  size_t buffer_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Entry> subscribers_ ABSL_GUARDED_BY(mu_);
  // Per kind (index: EventKind), resolved once: a label lookup per event costs more than the
  // rest of Publish.
  prometheus::Counter* published_[palisade::v1::EventKind_ARRAYSIZE];
  prometheus::Gauge& subscribers_gauge_;
  prometheus::Counter& dropped_;
  prometheus::Counter& evicted_for_bytes_;
  prometheus::Gauge& buffer_bytes_gauge_;
};

// A subscriber with a queue bounded in events and in bytes (serialized size), read by a thread of
// its own (sinks, tests).
class QueueSubscriber final : public EventHub::Subscriber {
 public:
  explicit QueueSubscriber(size_t capacity = 1024, size_t max_bytes = size_t{8} << 20)
      : capacity_(capacity), max_bytes_(max_bytes) {}
  bool Deliver(const palisade::v1::Event& event) override;
  // The next event, or nullopt after `timeout` or once dropped and drained.
  std::optional<palisade::v1::Event> Next(absl::Duration timeout);
  bool dropped() const;

 private:
  const size_t capacity_;
  const size_t max_bytes_;
  mutable absl::Mutex mu_;
  std::deque<palisade::v1::Event> queue_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool dropped_ ABSL_GUARDED_BY(mu_) = false;
};

// "created", "extended", … for DecisionEvent.change; "detection", "decision", "action".
const char* EventKindName(palisade::v1::EventKind kind);

}  // namespace palisade

#endif  // PALISADE_SERVICES_EVENTS_EVENT_HUB_H_
