#include "services/server/grpc_services.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "google/protobuf/arena.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/stubs/common.h"
#include "google/protobuf/wire_format_lite.h"
#include "grpcpp/alarm.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "services/common/proto_time.h"

namespace palisade {
namespace {

using palisade::v1::BatchAck;
using palisade::v1::LogBatch;

constexpr int kMaxTestLines = 200'000;
// Admin.TestRules' answer: lines times matching rules can be far more than the request; the
// matches listed stop here, under the 4 MiB a gRPC client takes by default (palisadectl's).
constexpr size_t kMaxTestAnswerBytes = 3u << 20;

// Called from OnDone (when IsCancelled is settled) of a call whose read failed: if gRPC
// cancelled it before its deadline, in gRPC 1.51 that is a message over api.max_message_bytes
// (the transport cancels the call with RESOURCE_EXHAUSTED and tells the handler only that the
// read failed), or a client that cancelled mid-stream, which the server cannot tell apart. A
// half-close is not a cancellation and is not counted.
void CountIfRefusedForSize(grpc::CallbackServerContext* context, ApiLimits& limits,
                           absl::string_view method) {
  if (context->IsCancelled() && std::chrono::system_clock::now() < context->deadline()) {
    limits.CountRefusal(method, "max_message_bytes");
  }
}

// A request that came as bytes (a raw method), parsed once its caller is allowed, never before
// (see grpc_services.h). INVALID_ARGUMENT naming the method when the bytes are not a `Req`.
template <typename Req>
absl::StatusOr<Req> ParseRequest(const grpc::ByteBuffer& wire, absl::string_view method) {
  grpc::ByteBuffer bytes(wire);  // shares wire's slices: the parse consumes a buffer of its own
  Req request;
  if (!grpc::SerializationTraits<Req>::Deserialize(&bytes, &request).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(method, ": the request is not a ", Req::descriptor()->full_name()));
  }
  return request;
}

// Looks in a message of `type` read from `in` for the first string field whose bytes are not
// UTF-8 (which protobuf refuses in a proto3 string, with an error that names neither the field
// nor the byte), following the message fields it knows; sets *found to the field's path from
// `path` on ("LogBatch.records[1].fields[0].value") and the first bad byte. False for bytes
// that are not well-formed protobuf. The depth is the schema's: only known message fields are
// followed, and LogBatch's types do not nest themselves.
bool FindNonUtf8(google::protobuf::io::CodedInputStream& in,
                 const google::protobuf::Descriptor& type, const std::string& path,
                 std::string* found) {
  using google::protobuf::FieldDescriptor;
  using google::protobuf::internal::WireFormatLite;
  std::map<int, int> occurrences;  // of each repeated field so far: the index in the path
  std::string value;
  for (;;) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) return in.ConsumedEntireMessage();
    const FieldDescriptor* field = type.FindFieldByNumber(WireFormatLite::GetTagFieldNumber(tag));
    if (field == nullptr ||
        WireFormatLite::GetTagWireType(tag) != WireFormatLite::WIRETYPE_LENGTH_DELIMITED ||
        (field->type() != FieldDescriptor::TYPE_STRING &&
         field->type() != FieldDescriptor::TYPE_MESSAGE)) {
      if (!WireFormatLite::SkipField(&in, tag)) return false;
      continue;
    }
    std::string name = absl::StrCat(path, field->name());
    if (field->is_repeated()) absl::StrAppend(&name, "[", occurrences[field->number()]++, "]");
    uint32_t length = 0;
    if (!in.ReadVarint32(&length) || length > uint32_t{std::numeric_limits<int>::max()}) {
      return false;
    }
    if (field->type() == FieldDescriptor::TYPE_STRING) {
      if (!in.ReadString(&value, static_cast<int>(length))) return false;
      // Protobuf's own test, so the field named is the one its parse refused.
      const size_t valid = static_cast<size_t>(
          google::protobuf::internal::UTF8SpnStructurallyValid(value));
      if (valid < value.size()) {
        *found = absl::StrFormat("%s is not UTF-8 (byte 0x%02x at %d)", name,
                                 static_cast<unsigned char>(value[valid]), valid);
        return true;
      }
      continue;
    }
    const google::protobuf::io::CodedInputStream::Limit limit =
        in.PushLimit(static_cast<int>(length));
    if (!FindNonUtf8(in, *field->message_type(), name + ".", found)) return false;
    if (!found->empty()) return true;
    in.PopLimit(limit);
  }
}

// A LogBatch that did not parse: `error`, or, when the cause is a string field that is not
// UTF-8 (a shipper's source or followed path comes from the host's file names, which need not
// be), INVALID_ARGUMENT naming that field and its first bad byte.
absl::Status NotALogBatch(const absl::Status& error, absl::string_view bytes) {
  if (error.code() != absl::StatusCode::kInvalidArgument ||
      bytes.size() > size_t{std::numeric_limits<int>::max()}) {
    return error;
  }
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  std::string found;
  if (!FindNonUtf8(in, *LogBatch::descriptor(), "LogBatch.", &found) || found.empty()) {
    return error;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("Ingest.Ship: ", found, ", as a protobuf string must be"));
}

// A response or an event as bytes, for a raw method to send, serialized as gRPC serializes a
// typed one. Fails (INTERNAL) only for a message past protobuf's 2 GiB.
grpc::Status ToWire(const google::protobuf::Message& message, grpc::ByteBuffer* wire) {
  bool own_buffer = false;
  return grpc::SerializationTraits<google::protobuf::Message>::Serialize(message, wire,
                                                                         &own_buffer);
}

// One Ingest.Ship stream. Batches arrive as bytes: ApiLimits counts their records on the wire
// before one is parsed, and each batch is parsed into a fresh message that is freed once acked
// (a reused message would keep the capacity of the largest batch for the stream's life).
class ShipReactor final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  ShipReactor(grpc::CallbackServerContext* context, const Guarded& guard, Pipeline& pipeline,
              ApiLimits& limits, ShipDedup* dedup, std::string client,
              ApiLimits::StreamSlot slot)
      : context_(context),
        guard_(guard),
        pipeline_(pipeline),
        limits_(limits),
        dedup_(dedup),
        client_(std::move(client)),
        slot_(std::move(slot)) {
    StartRead(&wire_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed: every batch it sent has been acked
      reads_ended_ = true;
      Finish(grpc::Status::OK);
      return;
    }
    absl::StatusOr<BatchAck> ack = Process();
    // The batch's bytes are let go (their buffer kept for the next) before its ack is written:
    // once it is, OnWriteDone may read the next batch into bytes_ on another thread while this
    // call has not returned.
    bytes_.Done();
    if (!ack.ok()) {
      Finish(ToGrpcStatus(ack.status()));
      return;
    }
    grpc::Slice slice(ack->SerializeAsString());
    ack_wire_ = grpc::ByteBuffer(&slice, 1);
    StartWrite(&ack_wire_);  // the last thing this call does (see above)
  }

  // Reads the batch in wire_ into bytes_ and processes it.
  absl::StatusOr<BatchAck> Process() {
    ApiLimits::Wire& bytes = bytes_;
    absl::Status read = limits_.Read(wire_, &bytes);
    wire_.Clear();
    if (!read.ok()) return read;
    LogBatch header;
    LineBatch lines;
    if (limits_.ParseLogBatchLines(bytes, &header, &lines.lines, &lines.plain, &lines.cut)) {
      // Lines and nothing else (the common batch): the pipeline reads them as views into the
      // message, with no protobuf record and no string per line (~10 % of a line's cost in
      // the daemon, profiled); when none holds a NUL or a byte past ASCII (lines.plain), it
      // does not look at each for them again.
      lines.format = header.format();
      lines.source = header.source();
      lines.json_format = header.json_format();
      lines.sequence = header.sequence();
      // lines.stream stays empty: LogBatch.stream is the syslog receiver's (in-process), and a
      // client's made-up senders would fill max_sender_streams (see below).
      return Run(header, static_cast<int>(lines.lines.size()), [&](int skip) {
        lines.lines.erase(lines.lines.begin(), lines.lines.begin() + skip);
        // The cut flags (empty when no line is cut) follow their lines.
        lines.cut.erase(lines.cut.begin(),
                        lines.cut.begin() + std::min<size_t>(skip, lines.cut.size()));
        return pipeline_.ProcessLines(lines, SenderFor(header.format()));
      });
    }
    // Records with event times or fields: parsed on an arena sized from the message, so that
    // records and lines are carved from a few blocks and freed at once.
    google::protobuf::ArenaOptions arena_options;
    arena_options.start_block_size = std::clamp<size_t>(2 * bytes.bytes.size(), 4096, 4 << 20);
    arena_options.max_block_size = arena_options.start_block_size;
    google::protobuf::Arena arena(arena_options);
    LogBatch& batch = *google::protobuf::Arena::CreateMessage<LogBatch>(&arena);
    if (absl::Status parsed = limits_.ParseLogBatch(bytes, &batch); !parsed.ok()) {
      return NotALogBatch(parsed, bytes.bytes);
    }
    // The stream is the syslog receiver's, set in-process: a client that set it could fill
    // PipelineOptions::max_sender_streams with made-up senders (one-line batches, each held
    // two days) and put the receiver's senders back in their sources' streams.
    batch.clear_stream();
    return Run(batch, batch.records_size(), [&](int skip) {
      if (skip > 0) batch.mutable_records()->DeleteSubrange(0, skip);
      return pipeline_.ProcessBatch(batch, SenderFor(batch.format()));
    });
  }

  // Audit records (LOG_FORMAT_CLOUDFLARE_AUDIT) revoke API tokens by id: only an admin client
  // may ship them (Decisions.Add already lets it revoke); the pipeline refuses them from any
  // other (PERMISSION_DENIED). The role is asked only for such a batch.
  BatchSender SenderFor(palisade::v1::LogFormat format) const {
    BatchSender sender;
    if (format == palisade::v1::LOG_FORMAT_CLOUDFLARE_AUDIT) {
      sender.audit_records = guard_.Allow(context_, Role::kAdmin, "Ingest.Ship").ok();
    }
    return sender;
  }

  // A parsed batch (`header`: its fields, maybe without its records): a follow-mode batch goes
  // through the dedup table, which acks and drops what its file gave this stream's client
  // before (the origin is the client's to write: another client's positions are not its);
  // `process(skip)` runs all but the first `skip` records through the pipeline.
  absl::StatusOr<BatchAck> Run(const LogBatch& header, int records,
                               const ShipDedup::ProcessFrom& process) {
    if (!header.has_origin() || dedup_ == nullptr) return process(0);
    if (absl::Status valid = ShipDedup::Validate(header.origin(), records); !valid.ok()) {
      limits_.CountRefusal("Ingest.Ship", "origin");
      return valid;
    }
    return dedup_->Take(client_, header.origin(), header.sequence(), records, process);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "ack could not be written"));
      return;
    }
    ack_wire_.Clear();
    StartRead(&wire_);
  }

  void OnDone() override {
    if (reads_ended_) CountIfRefusedForSize(context_, limits_, "Ingest.Ship");
    delete this;
  }

 private:
  grpc::CallbackServerContext* const context_;
  const Guarded& guard_;
  bool reads_ended_ = false;
  Pipeline& pipeline_;
  ApiLimits& limits_;
  ShipDedup* const dedup_;
  const std::string client_;  // the authenticated client's name ("" for the anonymous one)
  ApiLimits::StreamSlot slot_;
  grpc::ByteBuffer wire_;
  ApiLimits::Wire bytes_;  // wire_'s bytes in one piece, read anew for each batch
  grpc::ByteBuffer ack_wire_;
};

// A client-chosen name in an error: at most 64 bytes, escaped.
std::string Shown(absl::string_view name) {
  return absl::CHexEscape(name.substr(0, 64)) + (name.size() > 64 ? "..." : "");
}

// Collects a pushed feed: the header from the first chunk, the content from all of them. The
// header is checked as soon as it arrives (the feed must be configured, and a push with force or
// to a feed the config keeps for admins needs the admin role), and the content is refused the moment it passes the
// feed's max_bytes: a push that will be refused costs at most one message. The push is applied
// only when its stream ends after the chunk marked last: reads that stop without it are a push
// cut off (a deadline, a client gone, a chunk over api.max_message_bytes; in gRPC 1.51 the
// handler sees each only as a failed read, and IsCancelled is settled only in OnDone), and in
// replace mode what arrived would become the feed's whole version.
class PushReactor final : public grpc::ServerReadReactor<palisade::v1::FeedChunk> {
 public:
  PushReactor(grpc::CallbackServerContext* context, const Guarded& guard, FeedManager& feeds,
              ApiLimits& limits, const std::map<std::string, uint64_t>& caps,
              const std::map<std::string, std::string>& admin_only, ApiLimits::StreamSlot slot,
              palisade::v1::PushFeedResponse* response)
      : context_(context),
        guard_(guard),
        feeds_(feeds),
        limits_(limits),
        caps_(caps),
        admin_only_(admin_only),
        slot_(std::move(slot)),
        response_(response) {
    StartRead(&chunk_);
  }

  void OnReadDone(bool ok) override {
    if (ok) {
      if (last_seen_) {
        Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            absl::StrCat("a push to feed \"", header_.feed(),
                                         "\" sent a chunk after its last one (FeedChunk.last)")));
        return;
      }
      if (first_) {
        first_ = false;
        header_ = chunk_;
        header_.clear_data();
        if (header_.feed().empty()) {
          Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              "the first FeedChunk must name the feed"));
          return;
        }
        auto cap = caps_.find(header_.feed());
        if (cap == caps_.end()) {
          limits_.CountRefusal("Feeds.Push", "unknown_feed");
          Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                              absl::StrCat("feed \"", Shown(header_.feed()),
                                           "\" is not configured (add it to the config's feeds)")));
          return;
        }
        cap_ = cap->second;
        if (grpc::Status a = AllowedToPush(); !a.ok()) {
          Finish(a);
          return;
        }
      }
      if (content_.size() + chunk_.data().size() > cap_) {
        limits_.CountRefusal("Feeds.Push", "feed_max_bytes");
        Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                            absl::StrCat("a push to feed \"", header_.feed(), "\" is at most ",
                                         cap_, " bytes (the feed's max_bytes)")));
        return;
      }
      content_.append(chunk_.data());
      last_seen_ = chunk_.last();
      chunk_.Clear();
      StartRead(&chunk_);
      return;
    }
    reads_ended_ = true;
    if (context_->IsCancelled()) {
      Finish(grpc::Status::CANCELLED);
      return;
    }
    if (first_) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "the first FeedChunk must name the feed"));
      return;
    }
    if (!last_seen_) {
      Finish(grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("a push to feed \"", header_.feed(), "\" ended after ", content_.size(),
                       " bytes without its last chunk (FeedChunk.last): nothing is applied from "
                       "a push that may have been cut off")));
      return;
    }
    absl::StatusOr<palisade::v1::PushFeedResponse> result = feeds_.Push(
        header_.feed(), header_.mode(), header_.format(), header_.force(), content_);
    if (result.ok()) *response_ = *std::move(result);
    Finish(ToGrpcStatus(result.status()));
  }

  void OnDone() override {
    if (reads_ended_) CountIfRefusedForSize(context_, limits_, "Feeds.Push");
    delete this;
  }

 private:
  // The method takes the ingest role (checked before any chunk is read); a push that skips the
  // shrink and growth guards (force), or that replaces what a feed's own url gives (the
  // operator's source, maybe to_edge), takes the admin role too. PERMISSION_DENIED naming why,
  // counted.
  grpc::Status AllowedToPush() const {
    std::string why;
    if (auto admin = admin_only_.find(header_.feed()); admin != admin_only_.end()) {
      why = absl::StrCat("a push to feed \"", header_.feed(), "\", which ", admin->second,
                         ", needs the admin role");
    } else if (header_.force()) {
      why = "a push with force (which skips the shrink and growth guards) needs the admin role";
    } else {
      return grpc::Status::OK;
    }
    grpc::Status a = guard_.Allow(context_, Role::kAdmin, "Feeds.Push");
    if (a.error_code() != grpc::StatusCode::PERMISSION_DENIED) return a;
    return grpc::Status(a.error_code(), absl::StrCat(a.error_message(), ": ", why));
  }

  grpc::CallbackServerContext* const context_;
  bool reads_ended_ = false;
  const Guarded& guard_;
  FeedManager& feeds_;
  ApiLimits& limits_;
  const std::map<std::string, uint64_t>& caps_;
  const std::map<std::string, std::string>& admin_only_;
  ApiLimits::StreamSlot slot_;
  palisade::v1::PushFeedResponse* response_;
  palisade::v1::FeedChunk chunk_;
  palisade::v1::FeedChunk header_;
  bool first_ = true;
  bool last_seen_ = false;  // the chunk marked last has come
  uint64_t cap_ = 0;
  std::string content_;
};

// A Watch's alarm cancelling its call: the thread doing it (OnDone waits for it to end, unless
// TryCancel ran OnDone inline on that same thread).
struct EventsReactorWaitState {
  bool cancelling = false;
  std::thread::id canceller;
};

// Follows the event hub for one Watch call: the hub delivers into a bounded queue (never
// waiting), and the reactor writes one event at a time from it. Overflow ends the call with
// RESOURCE_EXHAUSTED; the client resumes with after_sequence. Events are written as bytes (Watch
// is a raw method), each serialized as it is written.
// A client that does not read holds its write forever (flow control), and a write's completion
// was the only thing that ended the call: the stream kept its slot and up to kQueueBytes. Two
// alarms end it off the hub's lock: a write pending past Options::write_stall, and an overflow
// whose in-flight write has not completed within Options::overflow_grace. Either finishes the
// call, frees its slot and queue at once, and cancels it (the only way past a held write).
class WatchReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
                           public EventHub::Subscriber {
 public:
  // Events a subscriber may be behind (about 3 MiB): a burst of detections must not drop a
  // client that reads as fast as the network lets it.
  static constexpr size_t kQueue = 10000;
  // And bytes (serialized size): detections carry evidence lines an attacker sizes (issue 12).
  static constexpr size_t kQueueBytes = size_t{16} << 20;

  WatchReactor(grpc::CallbackServerContext* context, EventHub& hub, ApiLimits::StreamSlot slot,
               const palisade::v1::WatchRequest& request, const EventsService::Options& options)
      : context_(context), hub_(hub), options_(options), slot_(std::move(slot)) {
    absl::Status s = hub_.Subscribe(this, request);
    if (!s.ok()) {
      absl::MutexLock lock(&mu_);
      FinishLocked(ToGrpcStatus(s));
    }
  }

  bool Deliver(const palisade::v1::Event& event) override {
    absl::MutexLock lock(&mu_);
    if (finished_ || overflowed_) return false;
    const size_t size = event.ByteSizeLong();
    // An event past protobuf's 2 GiB could not be serialized (none comes near one): refused
    // as an overflow is.
    if (queue_.size() >= kQueue || (!queue_.empty() && queued_bytes_ + size > kQueueBytes) ||
        size > size_t{std::numeric_limits<int>::max()}) {
      // A write is in flight (the queue is not empty); its completion ends the call. Finishing
      // here, under the hub's lock, could meet OnDone taking that lock; and a client that does
      // not read never completes it: the overflow alarm ends the call then.
      overflowed_ = true;
      overflow_alarm_ = ArmLocked(options_.overflow_grace, /*overflow=*/true);
      return false;
    }
    queue_.push_back(event);
    queued_bytes_ += size;
    if (!writing_) WriteFrontLocked();
    return true;
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    wire_.Clear();
    if (queue_.empty()) return;  // let go of by an alarm that ended the call
    last_written_ = queue_.front().sequence();
    queued_bytes_ -= std::min(queued_bytes_, queue_.front().ByteSizeLong());
    queue_.pop_front();
    if (overflowed_) {
      FinishLocked(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                absl::StrCat("subscriber fell ", kQueue, " events or ",
                                             kQueueBytes, " bytes behind; resume after sequence ",
                                             last_written_)));
      return;
    }
    if (!queue_.empty() && !finished_) WriteFrontLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    FinishLocked(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    hub_.Unsubscribe(this);  // no Deliver runs after this
    grpc::Alarm* alarms[2];
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      // An alarm cancelling the call on another thread uses the call's context, which gRPC frees
      // once this returns: wait for it (not when TryCancel ran this inline, on its own thread).
      mu_.Await(absl::Condition(
          +[](EventsReactorWaitState* w) {
            return !w->cancelling || w->canceller == std::this_thread::get_id();
          },
          &cancel_state_));
      ++pending_;  // held while the alarms are cancelled: their callbacks may not delete this
      alarms[0] = stall_alarm_.get();
      alarms[1] = overflow_alarm_.get();  // neither is replaced once done_ is set
      ReleaseLocked();
    }
    // Outside mu_: a cancelled alarm's callback may run on this thread, and takes mu_.
    for (grpc::Alarm* alarm : alarms) {
      if (alarm != nullptr) alarm->Cancel();
    }
    Unhold();
  }

 private:
  void WriteFrontLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    writing_ = true;
    ++writes_;
    if (!stall_armed_) {
      stall_armed_ = true;
      retired_alarm_ = std::move(stall_alarm_);  // may be the one whose callback runs now
      stall_alarm_ = ArmLocked(options_.write_stall, /*overflow=*/false);
    }
    // More are waiting: let gRPC coalesce them into fewer frames.
    grpc::WriteOptions options;
    if (queue_.size() > 1) options.set_buffer_hint();
    // Cannot fail: Deliver queues no event past protobuf's 2 GiB.
    (void)ToWire(queue_.front(), &wire_);
    StartWrite(&wire_, options);
  }
  void FinishLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }
  // The slot and the queued events, let go of as soon as the call is over.
  void ReleaseLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    slot_ = ApiLimits::StreamSlot();
    std::deque<palisade::v1::Event>().swap(queue_);
    queued_bytes_ = 0;
  }

  // An alarm `after` from now; its callback (OnAlarm) always runs, cancelled or not, and the
  // reactor is deleted only once none is pending.
  std::unique_ptr<grpc::Alarm> ArmLocked(absl::Duration after, bool overflow)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto alarm = std::make_unique<grpc::Alarm>();
    ++pending_;
    const uint64_t write = writes_;
    alarm->Set(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(after),
               [this, overflow, write](bool ok) { OnAlarm(ok, overflow, write); });
    return alarm;
  }

  // `write`: the write pending when a stall alarm was set; still pending, the client reads
  // nothing. Otherwise the alarm is set again while a write is pending.
  void OnAlarm(bool ok, bool overflow, uint64_t write) {
    bool cancel = false;
    {
      absl::MutexLock lock(&mu_);
      if (!overflow) stall_armed_ = false;
      if (!done_ && ok && !finished_) {
        if (overflow) {
          cancel = true;
          FinishLocked(grpc::Status(
              grpc::StatusCode::RESOURCE_EXHAUSTED,
              absl::StrCat("subscriber fell ", kQueue, " events or ", kQueueBytes,
                           " bytes behind and read nothing more; resume after sequence ",
                           last_written_)));
        } else if (writing_ && writes_ == write) {
          cancel = true;
          FinishLocked(grpc::Status(
              grpc::StatusCode::RESOURCE_EXHAUSTED,
              absl::StrCat("the client read no event for ",
                           absl::FormatDuration(options_.write_stall),
                           "; resume after sequence ", last_written_)));
        } else if (writing_) {
          stall_armed_ = true;
          retired_alarm_ = std::move(stall_alarm_);
          stall_alarm_ = ArmLocked(options_.write_stall, /*overflow=*/false);
        }
      }
      if (cancel) {
        ReleaseLocked();
        cancel_state_ = {true, std::this_thread::get_id()};
      }
    }
    // Still counted in pending_: OnDone cannot delete this before it returns, and waits for
    // cancel_state_ before gRPC frees the context.
    if (cancel) {
      context_->TryCancel();
      absl::MutexLock lock(&mu_);
      cancel_state_ = {};
    }
    Unhold();
  }

  // One pending alarm (or OnDone's hold) less; the last one out once the call is done deletes.
  void Unhold() {
    bool last = false;
    {
      absl::MutexLock lock(&mu_);
      last = --pending_ == 0 && done_;
    }
    if (last) delete this;
  }

  grpc::CallbackServerContext* const context_;
  EventHub& hub_;
  const EventsService::Options options_;
  absl::Mutex mu_;
  ApiLimits::StreamSlot slot_ ABSL_GUARDED_BY(mu_);
  std::deque<palisade::v1::Event> queue_ ABSL_GUARDED_BY(mu_);
  grpc::ByteBuffer wire_ ABSL_GUARDED_BY(mu_);  // the front event while it is written
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t writes_ ABSL_GUARDED_BY(mu_) = 0;  // writes started
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool overflowed_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t last_written_ ABSL_GUARDED_BY(mu_) = 0;
  bool done_ ABSL_GUARDED_BY(mu_) = false;  // OnDone ran
  int pending_ ABSL_GUARDED_BY(mu_) = 0;    // alarms whose callback has not run, and holds
  EventsReactorWaitState cancel_state_ ABSL_GUARDED_BY(mu_);  // an alarm in TryCancel
  bool stall_armed_ ABSL_GUARDED_BY(mu_) = false;
  std::unique_ptr<grpc::Alarm> stall_alarm_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<grpc::Alarm> retired_alarm_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<grpc::Alarm> overflow_alarm_ ABSL_GUARDED_BY(mu_);
};

// Streaming calls refused by the authorizer end at once with its status.
template <typename Req, typename Resp>
class RefusedBidi final : public grpc::ServerBidiReactor<Req, Resp> {
 public:
  explicit RefusedBidi(const grpc::Status& s) { this->Finish(s); }
  void OnDone() override { delete this; }
};
template <typename Req>
class RefusedRead final : public grpc::ServerReadReactor<Req> {
 public:
  explicit RefusedRead(const grpc::Status& s) { this->Finish(s); }
  void OnDone() override { delete this; }
};
template <typename Resp>
class RefusedWrite final : public grpc::ServerWriteReactor<Resp> {
 public:
  explicit RefusedWrite(const grpc::Status& s) { this->Finish(s); }
  void OnDone() override { delete this; }
};

grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* context, const grpc::Status& s) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(s);
  return reactor;
}

grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* context, const absl::Status& s) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

// One unary method of `service`: the caller's token and role first (nothing of the request is
// read for a refused caller), then its bytes parsed, then `handle`, whose response is sent
// when it answers OK.
template <typename Service, typename Req, typename Resp>
grpc::ServerUnaryReactor* Unary(Service* service,
                                absl::Status (Service::*handle)(const Req&, Resp*),
                                grpc::CallbackServerContext* context, Role role, const char* method,
                                const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  if (grpc::Status a = service->Allow(context, role, method); !a.ok()) return Reply(context, a);
  absl::StatusOr<Req> parsed = ParseRequest<Req>(*request, method);
  if (!parsed.ok()) return Reply(context, parsed.status());
  Resp answer;
  if (absl::Status s = (service->*handle)(*parsed, &answer); !s.ok()) return Reply(context, s);
  return Reply(context, ToWire(answer, response));
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* IngestService::Ship(
    grpc::CallbackServerContext* context) {
  // The client's name keys its share of the streams and its shipped positions.
  std::string client;
  if (grpc::Status a = Allow(context, Role::kIngest, "Ingest.Ship", &client); !a.ok()) {
    return new RefusedBidi<grpc::ByteBuffer, grpc::ByteBuffer>(a);
  }
  absl::StatusOr<ApiLimits::StreamSlot> slot = limits_.AcquireStream("Ingest.Ship", client);
  if (!slot.ok()) {
    return new RefusedBidi<grpc::ByteBuffer, grpc::ByteBuffer>(ToGrpcStatus(slot.status()));
  }
  return new ShipReactor(context, *this, pipeline_, limits_, dedup_, std::move(client),
                         *std::move(slot));
}

grpc::ServerUnaryReactor* DecisionsService::List(grpc::CallbackServerContext* context,
                                                 const grpc::ByteBuffer* request,
                                                 grpc::ByteBuffer* response) {
  return Unary(this, &DecisionsService::HandleList, context, Role::kRead, "Decisions.List", request,
               response);
}

absl::Status DecisionsService::HandleList(const palisade::v1::ListDecisionsRequest& request,
                                          palisade::v1::ListDecisionsResponse* response) {
  DecisionFilter filter;
  filter.target = request.target();
  filter.rule_id = request.rule_id();
  filter.origin = request.origin();
  filter.active_only = request.active_only();
  // Paged (issue 12): one response held every decision, however many hostile logs made.
  constexpr int32_t kDefaultPageSize = 500;
  constexpr int32_t kMaxPageSize = 5000;
  // Under the 4 MiB a gRPC client accepts by default, with room for the framing.
  constexpr size_t kMaxPageBytes = size_t{3} << 20;
  if (request.page_size() < 0) {
    return absl::InvalidArgumentError("page_size must be >= 0");
  }
  const int32_t page_size =
      request.page_size() == 0 ? kDefaultPageSize : std::min(request.page_size(), kMaxPageSize);
  absl::StatusOr<DecisionPage> page =
      table_.ListPage(filter, static_cast<size_t>(page_size), request.page_token(), kMaxPageBytes);
  if (!page.ok()) return page.status();
  for (auto& d : page->decisions) *response->add_decisions() = std::move(d);
  response->set_next_page_token(std::move(page->next_page_token));
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* DecisionsService::Get(grpc::CallbackServerContext* context,
                                                const grpc::ByteBuffer* request,
                                                grpc::ByteBuffer* response) {
  return Unary(this, &DecisionsService::HandleGet, context, Role::kRead, "Decisions.Get", request,
               response);
}

absl::Status DecisionsService::HandleGet(const palisade::v1::GetDecisionRequest& request,
                                         palisade::v1::Decision* response) {
  absl::StatusOr<palisade::v1::Decision> d = table_.Get(request.id());
  if (d.ok()) *response = *std::move(d);
  return d.status();
}

grpc::ServerUnaryReactor* DecisionsService::Add(grpc::CallbackServerContext* context,
                                                const grpc::ByteBuffer* request,
                                                grpc::ByteBuffer* response) {
  return Unary(this, &DecisionsService::HandleAdd, context, Role::kAdmin, "Decisions.Add", request,
               response);
}

absl::Status DecisionsService::HandleAdd(const palisade::v1::AddDecisionRequest& request,
                                         palisade::v1::Decision* response) {
  absl::StatusOr<palisade::v1::Decision> d = add_ ? add_(request) : table_.AddManual(request);
  if (d.ok()) *response = *std::move(d);
  return d.status();
}

grpc::ServerUnaryReactor* DecisionsService::Delete(grpc::CallbackServerContext* context,
                                                   const grpc::ByteBuffer* request,
                                                   grpc::ByteBuffer* response) {
  return Unary(this, &DecisionsService::HandleDelete, context, Role::kAdmin, "Decisions.Delete",
               request, response);
}

absl::Status DecisionsService::HandleDelete(const palisade::v1::DeleteDecisionRequest& request,
                                            palisade::v1::Decision* response) {
  absl::StatusOr<palisade::v1::Decision> d =
      withdraw_ ? withdraw_(request.id()) : table_.Withdraw(request.id());
  if (d.ok()) *response = *std::move(d);
  return d.status();
}

AdminService::AdminService(Pipeline& pipeline, DecisionTable& table, Clock& clock,
                           RuleLoader reload, prometheus::Registry& registry, std::string version,
                           Dispatcher* dispatcher)
    : pipeline_(pipeline),
      table_(table),
      clock_(clock),
      reload_(std::move(reload)),
      started_(clock.TimeNow()),
      version_(std::move(version)),
      reload_ok_(prometheus::BuildCounter()
                     .Name("palisade_rules_reloads_total")
                     .Help("Rule reloads, by result; a failed reload keeps the running rules.")
                     .Register(registry)
                     .Add({{"result", "success"}})),
      reload_failed_(prometheus::BuildCounter()
                         .Name("palisade_rules_reloads_total")
                         .Help("Rule reloads, by result; a failed reload keeps the running rules.")
                         .Register(registry)
                         .Add({{"result", "failure"}})),
      dispatcher_(dispatcher) {}

absl::StatusOr<std::shared_ptr<const RuleSet>> AdminService::Reload() {
  // Held from the read to the apply: a reload that read the packs before another must not
  // apply after it (the daemon would run the older files while both answered success).
  absl::MutexLock lock(&reload_mu_);
  absl::StatusOr<RuleReload> loaded = reload_();
  if (!loaded.ok()) {
    reload_failed_.Increment();
    return absl::Status(
        loaded.status().code(),
        absl::StrCat("reload refused, the running rules stay: ", loaded.status().message()));
  }
  pipeline_.SetRules(loaded->rules, std::move(loaded->allowlist));
  reload_ok_.Increment();
  return loaded->rules;
}

grpc::ServerUnaryReactor* AdminService::Status(grpc::CallbackServerContext* context,
                                               const grpc::ByteBuffer* request,
                                               grpc::ByteBuffer* response) {
  return Unary(this, &AdminService::HandleStatus, context, Role::kRead, "Admin.Status", request,
               response);
}

absl::Status AdminService::HandleStatus(const palisade::v1::StatusRequest& /*request*/,
                                        palisade::v1::StatusResponse* response) {
  std::shared_ptr<const RuleSet> rules = pipeline_.rules();
  EngineStats stats = pipeline_.engine_stats();
  response->set_version(version_);
  *response->mutable_uptime() = ToProtoDuration(clock_.TimeNow() - started_);
  response->set_rules_loaded(static_cast<uint32_t>(rules->rules().size()));
  for (const std::string& p : rules->pack_names()) response->add_packs(p);
  response->set_lines_malformed(pipeline_.lines_malformed());
  response->set_lines_received(stats.lines + response->lines_malformed());
  response->set_lines_matched(stats.matched_lines);
  response->set_detections(stats.detections);
  response->set_decisions_active(static_cast<uint32_t>(table_.active_count()));
  if (bouncers_ != nullptr) {
    auto [registered, stale] = bouncers_->BouncerCounts();
    response->set_bouncers_registered(registered);
    response->set_bouncers_stale(stale);
  }
  if (dispatcher_ != nullptr) {
    response->set_actions_held(static_cast<uint32_t>(dispatcher_->held()));
    response->set_actions_pending(static_cast<uint32_t>(dispatcher_->pending()));
  }
  if (credential_status_) credential_status_(response);
  if (cluster_status_) cluster_status_(response);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* AdminService::RotateToken(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request,
                                                    grpc::ByteBuffer* response) {
  return Unary(this, &AdminService::HandleRotateToken, context, Role::kAdmin, "Admin.RotateToken",
               request, response);
}

absl::Status AdminService::HandleRotateToken(const palisade::v1::RotateTokenRequest& /*request*/,
                                             palisade::v1::RotateTokenResponse* response) {
  if (!roll_token_) {
    return absl::FailedPreconditionError(
        "there is no token to roll: Cloudflare is not enabled in the config");
  }
  // The roll blocks this handler for as long as Cloudflare takes (bounded by the client's
  // request timeout); rolls are rare and operator-driven.
  absl::StatusOr<palisade::v1::RotateTokenResponse> rolled = roll_token_();
  if (rolled.ok()) *response = *std::move(rolled);
  return rolled.status();
}

grpc::ServerUnaryReactor* AdminService::ReleaseHeld(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request,
                                                    grpc::ByteBuffer* response) {
  return Unary(this, &AdminService::HandleReleaseHeld, context, Role::kAdmin, "Admin.ReleaseHeld",
               request, response);
}

absl::Status AdminService::HandleReleaseHeld(const palisade::v1::ReleaseHeldRequest& request,
                                             palisade::v1::ReleaseHeldResponse* response) {
  if (dispatcher_ == nullptr) {
    return absl::FailedPreconditionError(
        "nothing is held: Cloudflare is not enabled in the config");
  }
  // 0, and anything past INT_MAX, is all of them (a uint32 past INT_MAX cast to int was negative:
  // none released, and OK said).
  const int max =
      request.max() == 0
          ? std::numeric_limits<int>::max()
          : static_cast<int>(std::min<uint32_t>(request.max(), std::numeric_limits<int>::max()));
  response->set_released(static_cast<uint32_t>(dispatcher_->ReleaseHeld(max)));
  return absl::OkStatus();
}

namespace {
constexpr char kNoBouncerApi[] =
    "the bouncer API is off: add a bouncer_api { } block to the config";
}  // namespace

grpc::ServerUnaryReactor* AdminService::AddBouncer(grpc::CallbackServerContext* context,
                                                   const grpc::ByteBuffer* request,
                                                   grpc::ByteBuffer* response) {
  return Unary(this, &AdminService::HandleAddBouncer, context, Role::kAdmin, "Admin.AddBouncer",
               request, response);
}

absl::Status AdminService::HandleAddBouncer(const palisade::v1::AddBouncerRequest& request,
                                            palisade::v1::AddBouncerResponse* response) {
  if (bouncers_ == nullptr) return absl::FailedPreconditionError(kNoBouncerApi);
  absl::StatusOr<std::string> key = bouncers_->AddBouncer(request.name());
  if (key.ok()) {
    response->set_name(request.name());
    response->set_api_key(*std::move(key));
  }
  return key.status();
}

grpc::ServerUnaryReactor* AdminService::ListBouncers(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request,
                                                     grpc::ByteBuffer* response) {
  return Unary(this, &AdminService::HandleListBouncers, context, Role::kRead, "Admin.ListBouncers",
               request, response);
}

absl::Status AdminService::HandleListBouncers(const palisade::v1::ListBouncersRequest& /*request*/,
                                              palisade::v1::ListBouncersResponse* response) {
  if (bouncers_ == nullptr) return absl::FailedPreconditionError(kNoBouncerApi);
  for (const BouncerInfo& b : bouncers_->ListBouncers()) {
    palisade::v1::Bouncer* out = response->add_bouncers();
    out->set_name(b.name);
    *out->mutable_created() = ToProtoTime(b.created);
    if (b.last_pull != absl::InfinitePast()) *out->mutable_last_pull() = ToProtoTime(b.last_pull);
    out->set_address(b.address);
    out->set_version(b.user_agent);
    out->set_stale(b.stale);
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* AdminService::DeleteBouncer(grpc::CallbackServerContext* context,
                                                      const grpc::ByteBuffer* request,
                                                      grpc::ByteBuffer* response) {
  return Unary(this, &AdminService::HandleDeleteBouncer, context, Role::kAdmin,
               "Admin.DeleteBouncer", request, response);
}

absl::Status AdminService::HandleDeleteBouncer(const palisade::v1::DeleteBouncerRequest& request,
                                               palisade::v1::DeleteBouncerResponse* /*response*/) {
  if (bouncers_ == nullptr) return absl::FailedPreconditionError(kNoBouncerApi);
  return bouncers_->DeleteBouncer(request.name());
}

grpc::ServerUnaryReactor* AdminService::ReloadRules(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request,
                                                    grpc::ByteBuffer* response) {
  return Unary(this, &AdminService::HandleReloadRules, context, Role::kAdmin, "Admin.ReloadRules",
               request, response);
}

absl::Status AdminService::HandleReloadRules(const palisade::v1::ReloadRulesRequest& /*request*/,
                                             palisade::v1::ReloadRulesResponse* response) {
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules = Reload();
  if (rules.ok()) {
    response->set_rules_loaded(static_cast<uint32_t>((*rules)->rules().size()));
    for (const std::string& p : (*rules)->pack_names()) response->add_packs(p);
  }
  return rules.status();
}

grpc::ServerUnaryReactor* AdminService::TestRules(grpc::CallbackServerContext* context,
                                                  const grpc::ByteBuffer* request,
                                                  grpc::ByteBuffer* response) {
  // Testing the running rules is READ (a dashboard's). A pack of the request's own is compiled
  // and run over up to kMaxTestLines lines on a gRPC thread with no CPU limit (a pattern that
  // blows up RE2's DFA falls back to its NFA): the admin role's, asked once the request says so.
  if (grpc::Status a = Allow(context, Role::kRead, "Admin.TestRules"); !a.ok()) {
    return Reply(context, a);
  }
  absl::StatusOr<palisade::v1::TestRulesRequest> parsed =
      ParseRequest<palisade::v1::TestRulesRequest>(*request, "Admin.TestRules");
  if (!parsed.ok()) return Reply(context, parsed.status());
  if (parsed->has_pack()) {
    grpc::Status a = Allow(context, Role::kAdmin, "Admin.TestRules");
    if (a.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
      a = grpc::Status(a.error_code(),
                       absl::StrCat(a.error_message(),
                                    ": testing a pack of the request's own needs the admin role"));
    }
    if (!a.ok()) return Reply(context, a);
  }
  palisade::v1::TestRulesResponse answer;
  if (absl::Status s = HandleTestRules(*parsed, &answer); !s.ok()) return Reply(context, s);
  return Reply(context, ToWire(answer, response));
}

absl::Status AdminService::HandleTestRules(const palisade::v1::TestRulesRequest& request,
                                           palisade::v1::TestRulesResponse* response) {
  if (request.format() == palisade::v1::LOG_FORMAT_UNSPECIFIED) {
    return absl::InvalidArgumentError("format is required");
  }
  if (request.lines_size() > kMaxTestLines) {
    return absl::InvalidArgumentError(absl::StrCat("at most ", kMaxTestLines, " lines per call"));
  }
  std::shared_ptr<const RuleSet> rules;
  if (request.has_pack()) {
    absl::StatusOr<std::shared_ptr<const RuleSet>> compiled =
        RuleSet::Compile({LoadedPack{"request.pack", request.pack()}});
    if (!compiled.ok()) return compiled.status();
    rules = *compiled;
  } else {
    rules = pipeline_.rules();
  }
  // The lines the client's reader cut (its cap may be below the daemon's): judged cut, as a
  // shipped LogRecord.cut line is, not whole up to the forged tail the cut may end in.
  std::vector<bool> cut;
  for (int i = 0; i < request.cut_lines_size(); ++i) {
    const uint32_t index = request.cut_lines(i);
    if (index >= static_cast<uint32_t>(request.lines_size())) {
      return absl::InvalidArgumentError(absl::StrCat("cut_lines[", i, "] = ", index,
                                                     " is past the ", request.lines_size(),
                                                     " lines (0-based)"));
    }
    if (cut.empty()) cut.resize(request.lines_size());
    cut[index] = true;
  }
  std::vector<std::string> lines(request.lines().begin(), request.lines().end());
  // Zoneless times in the zone the daemon reads batches in, so each match's event_time is the
  // one a batch of the same lines is counted at.
  *response = Pipeline::TestRules(rules, request.format(), lines, clock_.TimeNow(),
                                  pipeline_.time_zone(), kMaxTestAnswerBytes,
                                  pipeline_.max_line_bytes(), pipeline_.max_record_bytes(), cut);
  return absl::OkStatus();
}

}  // namespace palisade

namespace palisade {

FeedsService::FeedsService(FeedManager& feeds, ApiLimits& limits,
                           std::map<std::string, uint64_t> push_caps,
                           std::map<std::string, std::string> admin_only)
    : feeds_(feeds),
      limits_(limits),
      push_caps_(std::move(push_caps)),
      admin_only_(std::move(admin_only)) {}

grpc::ServerReadReactor<palisade::v1::FeedChunk>* FeedsService::Push(
    grpc::CallbackServerContext* context, palisade::v1::PushFeedResponse* response) {
  std::string client;  // whose share of the streams
  if (grpc::Status a = Allow(context, Role::kIngest, "Feeds.Push", &client); !a.ok()) {
    return new RefusedRead<palisade::v1::FeedChunk>(a);
  }
  absl::StatusOr<ApiLimits::StreamSlot> slot = limits_.AcquireStream("Feeds.Push", client);
  if (!slot.ok()) return new RefusedRead<palisade::v1::FeedChunk>(ToGrpcStatus(slot.status()));
  return new PushReactor(context, *this, feeds_, limits_, push_caps_, admin_only_, *std::move(slot),
                         response);
}

grpc::ServerUnaryReactor* FeedsService::List(grpc::CallbackServerContext* context,
                                             const grpc::ByteBuffer* request,
                                             grpc::ByteBuffer* response) {
  return Unary(this, &FeedsService::HandleList, context, Role::kRead, "Feeds.List", request,
               response);
}

absl::Status FeedsService::HandleList(const palisade::v1::ListFeedsRequest& /*request*/,
                                      palisade::v1::ListFeedsResponse* response) {
  *response = feeds_.List();
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* FeedsService::Get(grpc::CallbackServerContext* context,
                                            const grpc::ByteBuffer* request,
                                            grpc::ByteBuffer* response) {
  return Unary(this, &FeedsService::HandleGet, context, Role::kRead, "Feeds.Get", request,
               response);
}

absl::Status FeedsService::HandleGet(const palisade::v1::GetFeedRequest& request,
                                     palisade::v1::GetFeedResponse* response) {
  absl::StatusOr<palisade::v1::GetFeedResponse> got = feeds_.Get(request);
  if (got.ok()) *response = *std::move(got);
  return got.status();
}

}  // namespace palisade

namespace palisade {

grpc::ServerWriteReactor<grpc::ByteBuffer>* EventsService::Watch(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  // As Unary: the token first, then the request's bytes.
  std::string client;  // whose share of the streams
  if (grpc::Status a = Allow(context, Role::kRead, "Events.Watch", &client); !a.ok()) {
    return new RefusedWrite<grpc::ByteBuffer>(a);
  }
  absl::StatusOr<palisade::v1::WatchRequest> parsed =
      ParseRequest<palisade::v1::WatchRequest>(*request, "Events.Watch");
  if (!parsed.ok()) return new RefusedWrite<grpc::ByteBuffer>(ToGrpcStatus(parsed.status()));
  // The filter is kept for the stream's life and read for every event under the hub's lock.
  if (absl::Status valid = ValidateWatchRequest(*parsed); !valid.ok()) {
    return new RefusedWrite<grpc::ByteBuffer>(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT, absl::StrCat("Events.Watch: ", valid.message())));
  }
  absl::StatusOr<ApiLimits::StreamSlot> slot = limits_.AcquireStream("Events.Watch", client);
  if (!slot.ok()) return new RefusedWrite<grpc::ByteBuffer>(ToGrpcStatus(slot.status()));
  return new WatchReactor(context, hub_, *std::move(slot), *parsed, options_);
}

}  // namespace palisade
