#include "services/events/event_hub.h"

#include <algorithm>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "services/common/proto_time.h"

namespace palisade {

using palisade::v1::Event;
using palisade::v1::WatchRequest;

const char* EventKindName(palisade::v1::EventKind kind) {
  switch (kind) {
    case palisade::v1::EVENT_KIND_DETECTION:
      return "detection";
    case palisade::v1::EVENT_KIND_DECISION:
      return "decision";
    case palisade::v1::EVENT_KIND_ACTION:
      return "action";
    case palisade::v1::EVENT_KIND_ALERT:
      return "alert";
    default:
      return "unknown";
  }
}

EventHub::EventHub(EventHubOptions options, Clock& clock, prometheus::Registry& registry)
    : options_(options),
      stream_id_(!options.stream_id.empty()
                     ? options.stream_id
                     : absl::StrFormat("%016x", absl::Uniform<uint64_t>(absl::BitGen()))),
      clock_(clock),
      subscribers_gauge_(prometheus::BuildGauge()
                             .Name("palisade_events_subscribers")
                             .Help("Subscribers following the event stream.")
                             .Register(registry)
                             .Add({})),
      dropped_(prometheus::BuildCounter()
                   .Name("palisade_events_subscribers_dropped_total")
                   .Help("Subscribers dropped because they fell too far behind.")
                   .Register(registry)
                   .Add({})),
      evicted_for_bytes_(prometheus::BuildCounter()
                             .Name("palisade_events_replay_evicted_total")
                             .Help("Events that left the replay buffer early, by reason (bytes: "
                                   "over replay_max_bytes before replay_capacity events).")
                             .Register(registry)
                             .Add({{"reason", "bytes"}})),
      buffer_bytes_gauge_(prometheus::BuildGauge()
                              .Name("palisade_events_replay_bytes")
                              .Help("Serialized size of the events in the replay buffer.")
                              .Register(registry)
                              .Add({})) {
  auto& published = prometheus::BuildCounter()
                        .Name("palisade_events_published_total")
                        .Help("Events published to the stream, by kind.")
                        .Register(registry);
  for (int k = 0; k < palisade::v1::EventKind_ARRAYSIZE; ++k) {
    published_[k] =
        &published.Add({{"kind", EventKindName(static_cast<palisade::v1::EventKind>(k))}});
  }
}

absl::Status ValidateWatchRequest(const WatchRequest& filter) {
  uint32_t seen = 0;
  for (int i = 0; i < filter.kinds_size(); ++i) {
    const int kind = filter.kinds(i);
    if (!palisade::v1::EventKind_IsValid(kind)) {
      return absl::InvalidArgumentError(
          absl::StrCat("WatchRequest.kinds[", i, "]: ", kind, " is not an EventKind"));
    }
    if (kind == palisade::v1::EVENT_KIND_UNSPECIFIED) {
      return absl::InvalidArgumentError(absl::StrCat(
          "WatchRequest.kinds[", i, "]: EVENT_KIND_UNSPECIFIED is the kind of no event"));
    }
    // A valid kind is below EventKind_ARRAYSIZE, so its bit fits (static_assert in the header).
    if (seen & (uint32_t{1} << kind)) {
      return absl::InvalidArgumentError(absl::StrCat("WatchRequest.kinds[", i, "]: ",
                                                     palisade::v1::EventKind_Name(kind),
                                                     " is listed twice"));
    }
    seen |= uint32_t{1} << kind;
  }
  if (!palisade::v1::Origin_IsValid(filter.origin())) {
    return absl::InvalidArgumentError(
        absl::StrCat("WatchRequest.origin: ", filter.origin(), " is not an Origin"));
  }
  if (filter.rule_id().size() > kMaxWatchFilterBytes) {
    return absl::InvalidArgumentError(absl::StrCat("WatchRequest.rule_id: ",
                                                   filter.rule_id().size(), " bytes, at most ",
                                                   kMaxWatchFilterBytes));
  }
  if (filter.stream().size() > kMaxWatchFilterBytes) {
    return absl::InvalidArgumentError(absl::StrCat("WatchRequest.stream: ", filter.stream().size(),
                                                   " bytes, at most ", kMaxWatchFilterBytes));
  }
  return absl::OkStatus();
}

EventHub::Filter::Filter(const WatchRequest& request)
    : all_kinds(request.kinds_size() == 0), rule_id(request.rule_id()), origin(request.origin()) {
  for (int kind : request.kinds()) {
    if (kind >= 0 && kind < 32) kinds |= uint32_t{1} << kind;  // any other matches no event
  }
}

bool EventHub::Filter::Matches(const Event& event) const {
  const int kind = event.kind();
  if (!all_kinds && (kind < 0 || kind >= 32 || (kinds & (uint32_t{1} << kind)) == 0)) {
    return false;
  }
  if (!rule_id.empty() && rule_id != event.rule_id()) return false;
  if (origin != palisade::v1::ORIGIN_UNSPECIFIED && origin != event.origin()) return false;
  return true;
}

void EventHub::Publish(Event event) {
  const int kind = event.kind();
  published_[kind >= 0 && kind < palisade::v1::EventKind_ARRAYSIZE ? kind : 0]->Increment();
  absl::MutexLock lock(&mu_);
  event.set_stream(stream_id_);
  event.set_sequence(++sequence_);
  *event.mutable_time() = ToProtoTime(clock_.TimeNow());
  for (size_t i = 0; i < subscribers_.size();) {
    if (subscribers_[i].filter.Matches(event) && !subscribers_[i].subscriber->Deliver(event)) {
      DropLocked(i);
      continue;
    }
    ++i;
  }
  const size_t size = event.ByteSizeLong();
  buffer_.push_back(std::move(event));
  buffer_sizes_.push_back(size);
  buffer_bytes_ += size;
  while (!buffer_.empty() && (buffer_.size() > options_.replay_capacity ||
                              buffer_bytes_ > options_.replay_max_bytes)) {
    if (buffer_.size() <= options_.replay_capacity) evicted_for_bytes_.Increment();
    buffer_bytes_ -= buffer_sizes_.front();
    buffer_.pop_front();
    buffer_sizes_.pop_front();
  }
  buffer_bytes_gauge_.Set(static_cast<double>(buffer_bytes_));
}

void EventHub::DropLocked(size_t index) {
  subscribers_.erase(subscribers_.begin() + static_cast<std::ptrdiff_t>(index));
  dropped_.Increment();
  subscribers_gauge_.Set(static_cast<double>(subscribers_.size()));
}

absl::Status EventHub::Subscribe(Subscriber* subscriber, const WatchRequest& filter) {
  return SubscribeImpl(subscriber, filter, /*skip_gone=*/false, nullptr);
}

absl::Status EventHub::SubscribeSkippingGone(Subscriber* subscriber, const WatchRequest& filter,
                                             uint64_t* resumed_after) {
  return SubscribeImpl(subscriber, filter, /*skip_gone=*/true, resumed_after);
}

absl::Status EventHub::SubscribeImpl(Subscriber* subscriber, const WatchRequest& filter,
                                     bool skip_gone, uint64_t* resumed_after) {
  wanted_.store(true, std::memory_order_relaxed);
  absl::MutexLock lock(&mu_);
  uint64_t after = filter.after_sequence();
  if (resumed_after != nullptr) *resumed_after = after;
  if (after > 0) {
    if (!filter.stream().empty() && filter.stream() != stream_id_) {
      return absl::OutOfRangeError(absl::StrCat(
          "sequence ", after, " counts in stream ", filter.stream(), ", and this is stream ",
          stream_id_, " (palisaded restarted since): it means other events here; resume from 0 "
          "for new events only"));
    }
    if (after > sequence_) {
      return absl::OutOfRangeError(
          absl::StrCat("sequence ", after, " is ahead of the stream (last ", sequence_, ")"));
    }
    const uint64_t oldest = buffer_.empty() ? sequence_ + 1 : buffer_.front().sequence();
    if (after + 1 < oldest) {
      if (!skip_gone) {
        return absl::OutOfRangeError(absl::StrCat(
            "events ", after + 1, "..", oldest - 1, " have left the replay buffer (it holds ",
            options_.replay_capacity, " events or ", options_.replay_max_bytes,
            " bytes); resume from 0 for new events only"));
      }
      after = oldest - 1;  // the caller counts after_sequence + 1 .. oldest - 1 as missed
      if (resumed_after != nullptr) *resumed_after = after;
    }
    const Filter compiled(filter);
    for (const Event& e : buffer_) {
      if (e.sequence() <= after || !compiled.Matches(e)) continue;
      if (!subscriber->Deliver(e)) {
        dropped_.Increment();
        return absl::ResourceExhaustedError("the replay does not fit the subscriber's queue");
      }
    }
  }
  subscribers_.push_back({subscriber, Filter(filter)});
  subscribers_gauge_.Set(static_cast<double>(subscribers_.size()));
  return absl::OkStatus();
}

void EventHub::Unsubscribe(Subscriber* subscriber) {
  absl::MutexLock lock(&mu_);
  auto it = std::find_if(subscribers_.begin(), subscribers_.end(),
                         [subscriber](const Entry& e) { return e.subscriber == subscriber; });
  if (it == subscribers_.end()) return;
  subscribers_.erase(it);
  subscribers_gauge_.Set(static_cast<double>(subscribers_.size()));
}

uint64_t EventHub::last_sequence() const {
  absl::MutexLock lock(&mu_);
  return sequence_;
}

bool QueueSubscriber::Deliver(const Event& event) {
  const size_t size = event.ByteSizeLong();
  absl::MutexLock lock(&mu_);
  // One event is always taken, however big, so a single large event cannot wedge a subscriber.
  if (queue_.size() >= capacity_ || (!queue_.empty() && bytes_ + size > max_bytes_)) {
    dropped_ = true;
    return false;
  }
  queue_.push_back(event);
  bytes_ += size;
  return true;
}

std::optional<Event> QueueSubscriber::Next(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || dropped_; };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  if (queue_.empty()) return std::nullopt;
  Event e = std::move(queue_.front());
  queue_.pop_front();
  bytes_ -= std::min(bytes_, e.ByteSizeLong());
  return e;
}

bool QueueSubscriber::dropped() const {
  absl::MutexLock lock(&mu_);
  return dropped_;
}

}  // namespace palisade
