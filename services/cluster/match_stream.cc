#include "services/cluster/match_stream.h"

#include <nats/nats.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "services/cluster/message_size.h"
#include "services/common/ip.h"

namespace palisade::cluster {

uint32_t PartitionOf(absl::string_view key, uint32_t partitions) {
  // FNV-1a 64 (written here: a handful of lines, and its constants are the published ones).
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return partitions == 0 ? 0 : static_cast<uint32_t>(h % partitions);
}

std::string PartitionKeyOf(absl::string_view key) {
  const std::optional<IpAddress> ip = IpAddress::Parse(key);
  if (!ip || ip->is_v4()) return std::string(key);
  // A 6to4 address's /48 (2002:WWXX:YYZZ::/48) is one IPv4 host's: routed whole, as the
  // engine counts it (Engine's range window). NAT64 and Teredo /48s hold other hosts.
  if (!Is6to4(*ip) && EmbeddedIpv4(*ip).has_value()) return std::string(key);
  return Cidr::Covering(*ip, 48).ToString();
}

absl::StatusOr<std::unique_ptr<MatchPublisher>> MatchPublisher::Start(
    NatsClient& nats, MatchPublisherOptions options) {
  if (options.node_id.empty()) return absl::InvalidArgumentError("cluster: node_id is empty");
  if (options.partitions == 0) return absl::InvalidArgumentError("cluster: partitions is 0");
  if (options.batch == 0) return absl::InvalidArgumentError("cluster: batch is 0");
  auto p = std::unique_ptr<MatchPublisher>(new MatchPublisher(nats, std::move(options)));
  jsOptions js_opts;
  jsOptions_Init(&js_opts);
  js_opts.Wait = absl::ToInt64Milliseconds(nats.timeout());
  js_opts.PublishAsync.MaxPending = static_cast<int64_t>(p->options_.batch);
  js_opts.PublishAsync.AckHandler = &MatchPublisher::OnAck;
  js_opts.PublishAsync.AckHandlerClosure = p.get();
  const natsStatus s = natsConnection_JetStream(&p->js_, nats.connection(), &js_opts);
  if (s != NATS_OK) return NatsError(s, "cluster: the match publisher's JetStream context");
  p->max_match_bytes_ = MaxMessageBytes(nats.connection());
  p->thread_ = std::thread([self = p.get()] { self->Run(); });
  return p;
}

MatchPublisher::MatchPublisher(NatsClient& nats, MatchPublisherOptions options)
    : nats_(nats),
      options_(std::move(options)),
      // A random incarnation: a restarted node numbers from 0 again, and its ids must not fall
      // into the stream's de-duplication window of the previous run's.
      id_prefix_(absl::StrCat(options_.node_id, ":", absl::Hex(absl::BitGen()()), ":")) {}

MatchPublisher::~MatchPublisher() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  if (js_ != nullptr) jsCtx_Destroy(js_);
}

bool MatchPublisher::Enqueue(absl::string_view key, std::string match) {
  const uint32_t partition = PartitionOf(key, options_.partitions);
  absl::MutexLock lock(&mu_);
  const size_t cost = Cost(match.size());
  if (queued_bytes_ + cost > options_.max_queued_bytes) {
    dropped_.fetch_add(1);
    return false;
  }
  queued_bytes_ += cost;
  queue_.push_back({partition, next_sequence_++, std::move(match)});
  return true;
}

size_t MatchPublisher::queued_bytes() const {
  absl::MutexLock lock(&mu_);
  return queued_bytes_;
}

bool MatchPublisher::WaitUntilPublished(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  const uint64_t target = next_sequence_;
  auto done = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return acked_through_ >= target; };
  return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
}

std::string MatchPublisher::last_failure() const {
  absl::MutexLock lock(&acked_mu_);
  return last_failure_;
}

void MatchPublisher::NoteBatchFailure(absl::string_view why) {
  absl::MutexLock lock(&acked_mu_);
  if (batch_failure_.empty()) batch_failure_ = std::string(why);
}

void MatchPublisher::OnAck(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae,
                           void* closure) {
  auto* self = static_cast<MatchPublisher*>(closure);
  // Which match: the sequence ending its de-duplication id "<node>:<incarnation>:<sequence>".
  const char* id = nullptr;
  uint64_t sequence = 0;
  bool known = false;
  if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) == NATS_OK && id != nullptr) {
    const absl::string_view v(id);
    const size_t colon = v.rfind(':');
    known = colon != absl::string_view::npos && absl::SimpleAtoi(v.substr(colon + 1), &sequence);
  }
  if (pa != nullptr) {
    if (known) {
      absl::MutexLock lock(&self->acked_mu_);
      self->batch_acked_sequences_.push_back(sequence);
    }
    self->batch_acked_.fetch_add(1);
  } else {
    const std::string why =
        pae == nullptr
            ? std::string()
            : absl::StrCat(natsStatus_GetText(pae->Err),
                           pae->ErrCode != 0
                               ? absl::StrCat(" (JetStream error ", pae->ErrCode, ": ",
                                              pae->ErrText != nullptr ? pae->ErrText : "", ")")
                               : "");
    if (pae != nullptr && known && RefusedForItsSize(NATS_OK, pae->ErrCode)) {
      // The stream refuses this match for its size, and would again: it leaves the queue.
      self->NoteBatchFailure(absl::StrCat("a match refused (dropped): ", why));
      {
        absl::MutexLock lock(&self->acked_mu_);
        self->batch_refused_sequences_.push_back(sequence);
      }
      self->batch_refused_.fetch_add(1);
    } else {
      self->batch_failed_.fetch_add(1);
      if (pae != nullptr) self->NoteBatchFailure(why);
    }
  }
  natsMsg_Destroy(msg);
}

bool MatchPublisher::SendBatch(const std::vector<const Item*>& items) {
  batch_acked_.store(0);
  batch_failed_.store(0);
  batch_refused_.store(0);
  {
    absl::MutexLock lock(&acked_mu_);
    batch_acked_sequences_.clear();
    batch_refused_sequences_.clear();
    batch_failure_.clear();
  }
  const int64_t wait_ms = absl::ToInt64Milliseconds(nats_.timeout());
  bool sent = true;
  for (const Item* item : items) {
    const std::string subject = absl::StrCat(options_.subject_prefix, ".", item->partition);
    const std::string id = absl::StrCat(id_prefix_, item->sequence);
    jsPubOptions opts;
    jsPubOptions_Init(&opts);
    opts.MsgId = id.c_str();
    opts.MaxWait = wait_ms;
    const natsStatus s = js_PublishAsync(js_, subject.c_str(), item->match.data(),
                                         static_cast<int>(item->match.size()), &opts);
    if (RefusedForItsSize(s, 0)) {
      // Over NATS' payload limit: never sendable, so it leaves the queue (dropped, counted)
      // rather than stay at its front, sent again for ever with nothing after it going out.
      NoteBatchFailure(absl::StrCat("a match of ", item->match.size(),
                                    " bytes refused (dropped): ", natsStatus_GetText(s)));
      {
        absl::MutexLock lock(&acked_mu_);
        batch_refused_sequences_.push_back(item->sequence);
      }
      batch_refused_.fetch_add(1);
      continue;
    }
    if (s != NATS_OK) {
      NoteBatchFailure(absl::StrCat("publishing: ", natsStatus_GetText(s)));
      sent = false;
      break;
    }
  }
  jsPubOptions complete;
  jsPubOptions_Init(&complete);
  complete.MaxWait = wait_ms;
  if (js_PublishAsyncComplete(js_, &complete) != NATS_OK) {
    // Timed out: take back what is still pending (the batch is sent again whole).
    NoteBatchFailure(absl::StrCat("no acknowledgement of the batch in ", wait_ms, " ms"));
    natsMsgList pending{nullptr, 0};
    if (js_PublishAsyncGetPendingList(&pending, js_) == NATS_OK) natsMsgList_Destroy(&pending);
    return false;
  }
  return sent && batch_failed_.load() == 0 &&
         batch_acked_.load() + batch_refused_.load() == items.size();
}

void MatchPublisher::Run() {
  absl::Duration backoff = options_.retry_min;
  std::vector<const Item*> batch;
  while (true) {
    batch.clear();
    {
      absl::MutexLock lock(&mu_);
      auto ready = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping, and all published
      // Only this thread pops, and push_back keeps references to existing elements valid.
      for (size_t i = 0; i < queue_.size() && i < options_.batch; ++i) batch.push_back(&queue_[i]);
    }
    max_match_bytes_.store(MaxMessageBytes(nats_.connection()), std::memory_order_relaxed);
    const bool acked = SendBatch(batch);
    std::vector<uint64_t> stored, refused;
    {
      absl::MutexLock lock(&acked_mu_);
      stored.swap(batch_acked_sequences_);
      refused.swap(batch_refused_sequences_);
      if (!acked || !refused.empty()) {
        last_failure_ = batch_failure_.empty() ? "the stream acknowledged only part of the batch"
                                               : batch_failure_;
      }
    }
    absl::MutexLock lock(&mu_);
    // Refused for their size: dropped, for sending them again could never store them.
    dropped_.fetch_add(refused.size());
    if (acked) {
      published_.fetch_add(batch.size() - refused.size());
      acked_through_ = batch.back()->sequence + 1;
      for (size_t i = 0; i < batch.size(); ++i) {
        queued_bytes_ -= Cost(queue_.front().match.size());
        queue_.pop_front();
      }
      backoff = options_.retry_min;
      continue;
    }
    failures_.fetch_add(1);
    // What the stream stored of the failed batch leaves the queue: sent again, it would be
    // stored twice once the de-duplication window passed. What it refused leaves it too.
    if (!stored.empty() || !refused.empty()) {
      std::sort(stored.begin(), stored.end());
      std::sort(refused.begin(), refused.end());
      const uint64_t last = batch.back()->sequence;  // `batch` points into the queue
      size_t removed = 0;
      for (auto it = queue_.begin(); it != queue_.end() && it->sequence <= last;) {
        const bool was_stored = std::binary_search(stored.begin(), stored.end(), it->sequence);
        if (was_stored || std::binary_search(refused.begin(), refused.end(), it->sequence)) {
          queued_bytes_ -= Cost(it->match.size());
          it = queue_.erase(it);
          removed += was_stored ? 1 : 0;
        } else {
          ++it;
        }
      }
      published_.fetch_add(removed);
      acked_through_ = queue_.empty() ? next_sequence_ : queue_.front().sequence;
    }
    if (stopping_) {
      // Stopping while NATS refuses: what is left is lost, and counted.
      dropped_.fetch_add(queue_.size());
      queue_.clear();
      queued_bytes_ = 0;
      return;
    }
    auto stop = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_; };
    mu_.AwaitWithTimeout(absl::Condition(&stop), backoff);
    backoff = std::min(2 * backoff, options_.retry_max);
  }
}

absl::StatusOr<std::unique_ptr<PartitionConsumer>> PartitionConsumer::Open(
    NatsClient& nats, const std::string& stream, const std::string& subject_prefix,
    const std::string& durable_prefix, uint32_t partition) {
  auto c = std::unique_ptr<PartitionConsumer>(new PartitionConsumer());
  c->subject_ = absl::StrCat(subject_prefix, ".", partition);
  const std::string durable = absl::StrCat(durable_prefix, "-p", partition);
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream.c_str();
  so.Config.AckPolicy = js_AckAll;
  so.Config.DeliverPolicy = js_DeliverAll;
  so.Config.AckWait = absl::ToInt64Nanoseconds(absl::Seconds(30));
  jsErrCode err = static_cast<jsErrCode>(0);
  const natsStatus s = js_PullSubscribe(&c->sub_, nats.jetstream(), c->subject_.c_str(),
                                        durable.c_str(), nullptr, &so, &err);
  if (s != NATS_OK) {
    return NatsError(s, absl::StrCat("cluster: consuming ", c->subject_, " as ", durable));
  }
  return c;
}

PartitionConsumer::~PartitionConsumer() {
  // Destroy, not Unsubscribe: the durable consumer (its position) must outlive this owner.
  if (sub_ != nullptr) natsSubscription_Destroy(sub_);
}

absl::StatusOr<size_t> PartitionConsumer::Poll(
    size_t max, absl::Duration wait,
    const std::function<absl::Status(uint64_t, absl::string_view)>& take) {
  natsMsgList list{nullptr, 0};
  jsErrCode err = static_cast<jsErrCode>(0);
  const natsStatus s =
      natsSubscription_Fetch(&list, sub_, static_cast<int>(std::max<size_t>(max, 1)),
                             std::max<int64_t>(1, absl::ToInt64Milliseconds(wait)), &err);
  if (s == NATS_TIMEOUT) return 0;
  if (s != NATS_OK) return NatsError(s, absl::StrCat("cluster: fetching ", subject_));
  size_t taken = 0;
  absl::Status refused;
  natsMsg* last_taken = nullptr;
  for (int i = 0; i < list.Count; ++i) {
    natsMsg* m = list.Msgs[i];
    if (!refused.ok()) {
      natsMsg_Nak(m, nullptr);  // after a refusal: delivered again, in order, later
      continue;
    }
    jsMsgMetaData* meta = nullptr;
    uint64_t seq = 0;
    if (natsMsg_GetMetaData(&meta, m) == NATS_OK) {
      seq = meta->Sequence.Stream;
      jsMsgMetaData_Destroy(meta);
    }
    refused = take(
        seq, absl::string_view(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m))));
    if (refused.ok()) {
      last_taken = m;
      ++taken;
    } else {
      natsMsg_Nak(m, nullptr);
    }
  }
  // Ack-all: acknowledging the last match taken acknowledges every one before it.
  if (last_taken != nullptr) natsMsg_Ack(last_taken, nullptr);
  natsMsgList_Destroy(&list);
  if (!refused.ok()) return refused;
  return taken;
}

}  // namespace palisade::cluster
