#include "services/server/api_limits.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace palisade {

using google::protobuf::internal::WireFormatLite;

namespace {
constexpr uint32_t kRecordsTag = WireFormatLite::MakeTag(
    palisade::v1::LogBatch::kRecordsFieldNumber, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
}  // namespace

ApiLimits::StreamSlot& ApiLimits::StreamSlot::operator=(StreamSlot&& other) noexcept {
  if (this != &other) {
    if (limits_ != nullptr) limits_->Release();
    limits_ = other.limits_;
    other.limits_ = nullptr;
  }
  return *this;
}

ApiLimits::StreamSlot::~StreamSlot() {
  if (limits_ != nullptr) limits_->Release();
}

void ApiLimits::Release() {
  open_.fetch_sub(1, std::memory_order_relaxed);
  open_gauge_.Decrement();
}

ApiLimits::ApiLimits(Options options, prometheus::Registry& registry)
    : options_(options),
      refusals_(prometheus::BuildCounter()
                    .Name("palisade_api_limit_refusals_total")
                    .Help("gRPC calls and messages refused by an ingress cap, by method and "
                          "limit (the config field under api: max_records_per_batch, "
                          "max_streams, max_message_bytes; feed max_bytes; unknown_feed).")
                    .Register(registry)),
      open_gauge_(prometheus::BuildGauge()
                      .Name("palisade_api_streams_open")
                      .Help("Streaming calls open (Ingest.Ship, Feeds.Push, Events.Watch); at most "
                            "api.max_streams.")
                      .Register(registry)
                      .Add({})) {}

absl::StatusOr<ApiLimits::StreamSlot> ApiLimits::AcquireStream(absl::string_view method) {
  // Taken first and given back when over: concurrent callers can never all pass the check.
  const uint32_t before = open_.fetch_add(1, std::memory_order_relaxed);
  if (before >= options_.max_streams) {
    open_.fetch_sub(1, std::memory_order_relaxed);
    CountRefusal(method, "max_streams");
    return absl::ResourceExhaustedError(
        absl::StrCat(method, ": ", options_.max_streams,
                     " streaming calls are open (api.max_streams); retry when one ends"));
  }
  open_gauge_.Increment();
  return StreamSlot(this);
}

absl::Status ApiLimits::ParseLogBatch(const grpc::ByteBuffer& wire,
                                      palisade::v1::LogBatch* batch) {
  Wire bytes;
  if (absl::Status s = Read(wire, &bytes); !s.ok()) return s;
  return ParseLogBatch(bytes, batch);
}

absl::Status ApiLimits::Read(const grpc::ByteBuffer& wire, Wire* out) {
  if (!wire.Dump(&out->slices).ok()) return absl::InvalidArgumentError("unreadable LogBatch");
  if (out->slices.size() == 1) {
    out->bytes = absl::string_view(reinterpret_cast<const char*>(out->slices[0].begin()),
                                   out->slices[0].size());
  } else {
    out->joined.reserve(wire.Length());
    for (const grpc::Slice& s : out->slices) {
      out->joined.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    out->slices.clear();
    out->bytes = out->joined;
  }
  // Records are field 4, length-delimited. Walking the tags costs nothing per record; parsing
  // allocates ~190 bytes for each, so count first.
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(out->bytes.data()),
                                            static_cast<int>(out->bytes.size()));
  uint64_t records = 0;
  while (uint32_t tag = in.ReadTag()) {
    if (tag == kRecordsTag) {
      uint32_t length = 0;
      if (!in.ReadVarint32(&length) || !in.Skip(static_cast<int>(length))) break;
      if (++records > options_.max_records_per_batch) {
        CountRefusal("Ingest.Ship", "max_records_per_batch");
        return absl::ResourceExhaustedError(absl::StrCat(
            "a LogBatch holds at most ", options_.max_records_per_batch,
            " records (api.max_records_per_batch); send smaller batches"));
      }
    } else if (!WireFormatLite::SkipField(&in, tag)) {
      break;
    }
  }
  return absl::OkStatus();
}

absl::Status ApiLimits::ParseLogBatch(const Wire& wire, palisade::v1::LogBatch* batch) {
  if (!batch->ParseFromArray(wire.bytes.data(), static_cast<int>(wire.bytes.size()))) {
    return absl::InvalidArgumentError("the message is not a palisade.v1.LogBatch");
  }
  return absl::OkStatus();
}

bool ApiLimits::ParseLogBatchLines(const Wire& wire, palisade::v1::LogBatch* header,
                                   std::vector<absl::string_view>* lines) {
  constexpr uint32_t kLineTag = WireFormatLite::MakeTag(
      palisade::v1::LogRecord::kLineFieldNumber, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
  const absl::string_view bytes = wire.bytes;
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  google::protobuf::io::CodedInputStream in(data, static_cast<int>(bytes.size()));
  std::string rest;  // the fields but the records, as they came: parsed as a LogBatch
  lines->clear();
  while (true) {
    const int field_start = in.CurrentPosition();
    const uint32_t tag = in.ReadTag();
    if (tag == 0) break;
    if (tag != kRecordsTag) {
      if (!WireFormatLite::SkipField(&in, tag)) return false;
      rest.append(bytes.data() + field_start, in.CurrentPosition() - field_start);
      continue;
    }
    uint32_t length = 0;
    if (!in.ReadVarint32(&length) || length > bytes.size() - in.CurrentPosition()) return false;
    google::protobuf::io::CodedInputStream record(data + in.CurrentPosition(),
                                                  static_cast<int>(length));
    absl::string_view line;  // a record without one has an empty line
    while (uint32_t field = record.ReadTag()) {
      uint32_t size = 0;
      // Only the line (the last one, should a record repeat it, as a parse keeps).
      if (field != kLineTag || !record.ReadVarint32(&size) ||
          size > length - record.CurrentPosition()) {
        return false;
      }
      line = bytes.substr(in.CurrentPosition() + record.CurrentPosition(), size);
      if (!record.Skip(static_cast<int>(size))) return false;
    }
    if (!record.ConsumedEntireMessage() || record.CurrentPosition() != static_cast<int>(length)) {
      return false;
    }
    lines->push_back(line);
    if (!in.Skip(static_cast<int>(length))) return false;
  }
  if (!in.ConsumedEntireMessage() || in.CurrentPosition() != static_cast<int>(bytes.size())) {
    return false;
  }
  return header->ParseFromString(rest);
}

void ApiLimits::CountRefusal(absl::string_view method, absl::string_view limit) {
  refusals_.Add({{"method", std::string(method)}, {"limit", std::string(limit)}}).Increment();
}

}  // namespace palisade
