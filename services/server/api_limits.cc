#include "services/server/api_limits.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace palisade {

using google::protobuf::internal::WireFormatLite;

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
  std::vector<grpc::Slice> slices;
  if (!wire.Dump(&slices).ok()) return absl::InvalidArgumentError("unreadable LogBatch");
  std::string joined;
  absl::string_view bytes;
  if (slices.size() == 1) {
    bytes = absl::string_view(reinterpret_cast<const char*>(slices[0].begin()), slices[0].size());
  } else {
    joined.reserve(wire.Length());
    for (const grpc::Slice& s : slices) {
      joined.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    bytes = joined;
  }
  // Records are field 4, length-delimited. Walking the tags costs nothing per record; parsing
  // allocates ~190 bytes for each, so count first.
  constexpr uint32_t kRecordsTag =
      WireFormatLite::MakeTag(4, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
  {
    google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                              static_cast<int>(bytes.size()));
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
  }
  if (!batch->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError("the message is not a palisade.v1.LogBatch");
  }
  return absl::OkStatus();
}

void ApiLimits::CountRefusal(absl::string_view method, absl::string_view limit) {
  refusals_.Add({{"method", std::string(method)}, {"limit", std::string(limit)}}).Increment();
}

}  // namespace palisade
