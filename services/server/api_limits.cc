#include "services/server/api_limits.h"

#include <algorithm>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace palisade {

using google::protobuf::internal::WireFormatLite;

namespace {
constexpr uint32_t kRecordsTag = WireFormatLite::MakeTag(
    palisade::v1::LogBatch::kRecordsFieldNumber, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
constexpr uint32_t kLineTag = WireFormatLite::MakeTag(palisade::v1::LogRecord::kLineFieldNumber,
                                                      WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
constexpr uint32_t kCutTag = WireFormatLite::MakeTag(palisade::v1::LogRecord::kCutFieldNumber,
                                                     WireFormatLite::WIRETYPE_VARINT);
static_assert(kRecordsTag < 0x80 && kLineTag < 0x80 && kCutTag < 0x80, "one-byte tags");

// A varint of at most 3 bytes at [p, end) (a record's or a line's length up to 2 MiB): its
// length in bytes and its value, or 0 when it is longer or cut short. Records as shippers write
// them are read this way, a few instructions each; anything else is read by a
// CodedInputStream as before (a stream built per record, and the out-of-line read of a
// length past 127, were ~250 instructions a line, profiled).
inline size_t ShortVarint(const uint8_t* p, const uint8_t* end, uint32_t* value) {
  const ptrdiff_t have = end - p;
  if (have >= 1 && p[0] < 0x80) {
    *value = p[0];
    return 1;
  }
  if (have >= 2 && p[1] < 0x80) {
    *value = (p[0] & 0x7fu) | (uint32_t{p[1]} << 7);
    return 2;
  }
  if (have >= 3 && p[1] >= 0x80 && p[2] < 0x80) {
    *value = (p[0] & 0x7fu) | ((p[1] & 0x7fu) << 7) | (uint32_t{p[2]} << 14);
    return 3;
  }
  return 0;
}

// At `p` (before `end`): a record field (its tag, a short length, its bytes within `end`)? Its
// header's size and the record's length, or 0.
inline size_t RecordAt(const uint8_t* p, const uint8_t* end, uint32_t* length) {
  if (p[0] != kRecordsTag) return 0;
  const size_t n = ShortVarint(p + 1, end, length);
  if (n == 0 || *length > static_cast<size_t>(end - (p + 1 + n))) return 0;
  return 1 + n;
}

// What a parse allocates, at most, for each thing it reads (64-bit, protobuf 3.21; heap or
// arena): a message (a record, a map entry, a nested message) with its slot and map node; a
// string with its allocation; an unknown field's entry. Upper bounds: the estimate is a
// budget's, not an exact size.
constexpr size_t kMessageBytes = 128;
constexpr size_t kStringBytes = 48;
constexpr size_t kUnknownBytes = 16;
// A record that holds only its line, as shippers send most.
constexpr size_t kLineRecordBytes = kMessageBytes + kStringBytes;

// Adds to `*cost` what parsing the message of type `type` (null: unknown) in [p, p + size)
// would hold. Stops once `*cost` passes `budget`. False when the bytes are not well formed
// (the parse refuses them; what was counted so far stands).
bool ChargeMessage(const google::protobuf::Descriptor* type, const uint8_t* p, size_t size,
                   int depth, size_t budget, size_t* cost) {
  google::protobuf::io::CodedInputStream in(p, static_cast<int>(size));
  while (*cost <= budget) {
    const int at = in.CurrentPosition();
    const uint32_t tag = in.ReadTag();
    if (tag == 0) return in.ConsumedEntireMessage() || in.CurrentPosition() == at;
    const google::protobuf::FieldDescriptor* field =
        type == nullptr ? nullptr : type->FindFieldByNumber(WireFormatLite::GetTagFieldNumber(tag));
    switch (WireFormatLite::GetTagWireType(tag)) {
      case WireFormatLite::WIRETYPE_LENGTH_DELIMITED: {
        uint32_t length = 0;
        if (!in.ReadVarint32(&length) ||
            length > size - static_cast<size_t>(in.CurrentPosition())) {
          return false;
        }
        const uint8_t* payload = p + in.CurrentPosition();
        using Type = google::protobuf::FieldDescriptor;
        if (field != nullptr && field->type() == Type::TYPE_MESSAGE && depth < 8) {
          *cost += kMessageBytes;  // a map's entries are messages too
          if (!ChargeMessage(field->message_type(), payload, length, depth + 1, budget, cost)) {
            return false;
          }
        } else if (field != nullptr && field->type() == Type::TYPE_MESSAGE) {
          *cost += kMessageBytes + 64 * size_t{length};  // (no message of ours nests this deep)
        } else if (field != nullptr &&
                   (field->type() == Type::TYPE_STRING || field->type() == Type::TYPE_BYTES)) {
          *cost += kStringBytes + length;
        } else if (field != nullptr) {
          *cost += 8 * size_t{length};  // packed scalars: a byte or more each on the wire
        } else {
          *cost += kUnknownBytes + kStringBytes + length;
        }
        if (!in.Skip(static_cast<int>(length))) return false;
        break;
      }
      case WireFormatLite::WIRETYPE_START_GROUP: {
        // Only unknown fields are groups here; each of their fields is an entry in a set.
        const int before = in.CurrentPosition();
        if (!WireFormatLite::SkipField(&in, tag)) return false;
        *cost += kUnknownBytes * (1 + static_cast<size_t>(in.CurrentPosition() - before));
        break;
      }
      case WireFormatLite::WIRETYPE_END_GROUP:
        return false;
      default:
        if (!WireFormatLite::SkipField(&in, tag)) return false;
        *cost += field != nullptr ? 8 : kUnknownBytes;
    }
  }
  return true;
}

// A record's cost: the common one (its line and nothing else) without a descriptor.
inline void ChargeRecord(const uint8_t* p, uint32_t length, size_t budget, size_t* cost) {
  uint32_t size = 0;
  if (length == 0) {
    *cost += kMessageBytes;
    return;
  }
  if (p[0] == kLineTag) {
    const size_t n = ShortVarint(p + 1, p + length, &size);
    if (n != 0 && 1 + n + size == length) {
      *cost += kLineRecordBytes + size;
      return;
    }
  }
  *cost += kMessageBytes;
  (void)ChargeMessage(palisade::v1::LogRecord::descriptor(), p, length, 1, budget, cost);
}
}  // namespace

ApiLimits::StreamSlot& ApiLimits::StreamSlot::operator=(StreamSlot&& other) noexcept {
  if (this != &other) {
    if (limits_ != nullptr) limits_->Release(client_);
    limits_ = other.limits_;
    client_ = std::move(other.client_);
    other.limits_ = nullptr;
  }
  return *this;
}

ApiLimits::StreamSlot::~StreamSlot() {
  if (limits_ != nullptr) limits_->Release(client_);
}

void ApiLimits::Release(const std::string& client) {
  if (!client.empty()) {
    absl::MutexLock lock(&clients_mu_);
    auto it = open_by_client_.find(client);
    if (it != open_by_client_.end() && --it->second == 0) open_by_client_.erase(it);
  }
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

uint32_t ApiLimits::max_streams_per_client() const {
  return options_.max_streams_per_client != 0 ? options_.max_streams_per_client
                                              : std::max<uint32_t>(1, options_.max_streams / 2);
}

uint32_t ApiLimits::streams_open_by(absl::string_view client) const {
  absl::MutexLock lock(&clients_mu_);
  auto it = open_by_client_.find(client);
  return it == open_by_client_.end() ? 0 : it->second;
}

absl::StatusOr<ApiLimits::StreamSlot> ApiLimits::AcquireStream(absl::string_view method,
                                                               absl::string_view client) {
  // The client's share first: one token's streams (a read-only token's Watch calls that never
  // read, a Ship whose acks are never read) must leave slots for the others' Ship.
  if (!client.empty()) {
    absl::MutexLock lock(&clients_mu_);
    uint32_t& open = open_by_client_[client];
    if (open >= max_streams_per_client()) {
      if (open == 0) open_by_client_.erase(client);
      CountRefusal(method, "max_streams_per_client");
      return absl::ResourceExhaustedError(absl::StrCat(
          method, ": this client has ", max_streams_per_client(),
          " streaming calls open, its share of api.max_streams; retry when one ends"));
    }
    ++open;
  }
  // Taken first and given back when over: concurrent callers can never all pass the check.
  const uint32_t before = open_.fetch_add(1, std::memory_order_relaxed);
  if (before >= options_.max_streams) {
    open_.fetch_sub(1, std::memory_order_relaxed);
    if (!client.empty()) {
      absl::MutexLock lock(&clients_mu_);
      auto it = open_by_client_.find(client);
      if (it != open_by_client_.end() && --it->second == 0) open_by_client_.erase(it);
    }
    CountRefusal(method, "max_streams");
    return absl::ResourceExhaustedError(
        absl::StrCat(method, ": ", options_.max_streams,
                     " streaming calls are open (api.max_streams); retry when one ends"));
  }
  open_gauge_.Increment();
  return StreamSlot(this, std::string(client));
}

absl::Status ApiLimits::ParseLogBatch(const grpc::ByteBuffer& wire,
                                      palisade::v1::LogBatch* batch) {
  Wire bytes;
  if (absl::Status s = Read(wire, &bytes); !s.ok()) return s;
  return ParseLogBatch(bytes, batch);
}

void ApiLimits::Wire::Done() {
  slices.clear();
  bytes = absl::string_view();
  if (joined.capacity() > kKeptBytes) {
    std::string().swap(joined);
  } else {
    joined.clear();
  }
}

absl::Status ApiLimits::Read(const grpc::ByteBuffer& wire, Wire* out) {
  out->slices.clear();
  out->joined.clear();
  out->bytes = absl::string_view();
  out->records = 0;
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
  // allocates ~190 bytes for each, so count first. A record with a short length is stepped over
  // here; any other field (or a record's length written long) is read by a CodedInputStream,
  // as the whole walk was, and the walk stops where that read fails.
  const auto* data = reinterpret_cast<const uint8_t*>(out->bytes.data());
  const uint8_t* const end = data + out->bytes.size();
  const uint8_t* p = data;
  uint32_t records = 0;
  // What the parse would hold, charged as the walk goes (see ChargeMessage): the records cap
  // counts records, and a record's map entries, unknown fields and packed offsets cost tens of
  // bytes of memory for each byte on the wire.
  const size_t budget = ParseBudget();
  size_t cost = 0;
  while (p < end) {
    uint32_t length = 0;
    if (const size_t header = RecordAt(p, end, &length); header != 0) {
      ChargeRecord(p + header, length, budget, &cost);
      p += header + length;
    } else {
      google::protobuf::io::CodedInputStream in(p, static_cast<int>(end - p));
      const uint32_t tag = in.ReadTag();
      if (tag == 0) break;
      if (tag == kRecordsTag) {
        if (!in.ReadVarint32(&length) ||
            length > static_cast<size_t>(end - p) - in.CurrentPosition()) {
          break;
        }
        ChargeRecord(p + in.CurrentPosition(), length, budget, &cost);
        if (!in.Skip(static_cast<int>(length))) break;
      } else if (!WireFormatLite::SkipField(&in, tag)) {
        break;
      } else {
        (void)ChargeMessage(palisade::v1::LogBatch::descriptor(), p, in.CurrentPosition(), 0,
                            budget, &cost);
        p += in.CurrentPosition();
        if (cost > budget) return RefuseParseCost(budget);
        continue;
      }
      p += in.CurrentPosition();
    }
    if (cost > budget) return RefuseParseCost(budget);
    if (++records > options_.max_records_per_batch) {
      CountRefusal("Ingest.Ship", "max_records_per_batch");
      return absl::ResourceExhaustedError(
          absl::StrCat("a LogBatch holds at most ", options_.max_records_per_batch,
                       " records (api.max_records_per_batch); send smaller batches"));
    }
  }
  out->records = records;
  return absl::OkStatus();
}

size_t ApiLimits::ParseBudget() const {
  return 2 * size_t{options_.max_message_bytes} +
         size_t{options_.max_records_per_batch} * kLineRecordBytes;
}

absl::Status ApiLimits::RefuseParseCost(size_t budget) {
  CountRefusal("Ingest.Ship", "max_message_bytes");
  return absl::ResourceExhaustedError(absl::StrCat(
      "a LogBatch would take more than ", budget,
      " bytes once parsed (twice api.max_message_bytes, and its records): it holds too many "
      "fields, map entries, unknown fields or offsets for its size; send smaller batches"));
}

absl::Status ApiLimits::ParseLogBatch(const Wire& wire, palisade::v1::LogBatch* batch) {
  if (!batch->ParseFromArray(wire.bytes.data(), static_cast<int>(wire.bytes.size()))) {
    return absl::InvalidArgumentError("the message is not a palisade.v1.LogBatch");
  }
  return absl::OkStatus();
}

namespace {
// The first byte in [p, end) that is NUL or past ASCII, or `end`: 64 bytes a step with SSE2
// (a NUL shows in the blocks' unsigned minimum, a high bit in their OR), then 16, then one.
const uint8_t* NextHostile(const uint8_t* p, const uint8_t* end) {
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128();
  auto load = [](const uint8_t* at) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(at));
  };
  for (; end - p >= 64; p += 64) {
    const __m128i a = load(p), b = load(p + 16), c = load(p + 32), d = load(p + 48);
    const __m128i high = _mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d));
    const __m128i low = _mm_min_epu8(_mm_min_epu8(a, b), _mm_min_epu8(c, d));
    if (_mm_movemask_epi8(_mm_or_si128(high, _mm_cmpeq_epi8(low, zero))) != 0) break;
  }
  for (; end - p >= 16; p += 16) {
    const __m128i v = load(p);
    if (const int m = _mm_movemask_epi8(_mm_or_si128(v, _mm_cmpeq_epi8(v, zero))); m != 0) {
      return p + __builtin_ctz(static_cast<unsigned>(m));
    }
  }
#endif
  while (p < end && *p != 0 && *p < 0x80) ++p;
  return p;
}

// Whether every line handed to Add is plain (LineBatch::plain: ASCII, no NUL), scanning the
// message forward once: a scan runs on from a line past its end into the next records until a
// hostile byte, so most lines are answered by a scan already made. A hostile byte outside a line
// (the first byte of a length past 127, a varint of another field) starts the scan over at the
// next line. PrepareLine's scan of each line was ~120 instructions a line (sshd corpus).
class PlainLines {
 public:
  explicit PlainLines(const uint8_t* end) : end_(end), scanned_(end), hostile_(end) {}
  void Add(absl::string_view line) {
    if (!plain_ || line.empty()) return;
    const auto* begin = reinterpret_cast<const uint8_t*>(line.data());
    // [scanned_, hostile_) holds no hostile byte; scanned again from this line's start when it
    // does not start inside that range.
    if (begin < scanned_ || begin > hostile_) {
      scanned_ = begin;
      hostile_ = NextHostile(begin, end_);
    }
    if (hostile_ < begin + line.size()) plain_ = false;
  }
  bool plain() const { return plain_; }

 private:
  const uint8_t* const end_;
  const uint8_t* scanned_;
  const uint8_t* hostile_;
  bool plain_ = true;
};

// A tag or a length as protobuf's parse reads it (3.21, parse_context.h ReadTag, ReadSize): a
// tag in at most 5 bytes; a length in at most 5, below INT_MAX - kSlopBytes (2^31 - 16). A
// CodedInputStream reads either in up to 10 bytes and drops the high bits, so it took bytes the
// parse refuses (a 7-byte length as 2, or 2 + 2^32 in 5 bytes as 2): false for those, and the
// parse decides.
constexpr int kMaxParsedVarintBytes = 5;
constexpr uint64_t kMaxParsedLength = (uint64_t{1} << 31) - 17;

bool ReadParsedTag(google::protobuf::io::CodedInputStream* in, uint32_t* tag) {
  const int at = in->CurrentPosition();
  *tag = in->ReadTag();
  return *tag != 0 && in->CurrentPosition() - at <= kMaxParsedVarintBytes;
}

bool ReadParsedLength(google::protobuf::io::CodedInputStream* in, uint32_t* length) {
  const int at = in->CurrentPosition();
  uint64_t value = 0;  // 64 bits: a 5-byte varint's bits past 32 must count, not be dropped
  if (!in->ReadVarint64(&value) || in->CurrentPosition() - at > kMaxParsedVarintBytes ||
      value > kMaxParsedLength) {
    return false;
  }
  *length = static_cast<uint32_t>(value);
  return true;
}

// The line of a record's bytes [p, p + length), as a view into `bytes` (where p lies), and its
// cut flag (LogRecord.cut), read as protobuf's parse reads them; false when the record holds
// anything else, or bytes the parse refuses.
bool LineOf(absl::string_view bytes, const uint8_t* p, uint32_t length, absl::string_view* line,
            bool* cut) {
  const size_t offset = p - reinterpret_cast<const uint8_t*>(bytes.data());
  // As shippers write it: the line field once, with a short length, and nothing else but, for
  // a line the shipper cut, `cut: true` after it (two bytes).
  uint32_t size = 0;
  *cut = false;
  if (length == 0) {
    *line = absl::string_view();
    return true;
  }
  if (p[0] == kLineTag) {
    const size_t n = ShortVarint(p + 1, p + length, &size);
    if (n != 0 && 1 + n + size == length) {
      *line = bytes.substr(offset + 1 + n, size);
      return true;
    }
    if (n != 0 && 1 + n + size + 2 == length && p[1 + n + size] == kCutTag &&
        p[1 + n + size + 1] < 0x80) {
      *line = bytes.substr(offset + 1 + n, size);
      *cut = p[1 + n + size + 1] != 0;
      return true;
    }
  }
  google::protobuf::io::CodedInputStream record(p, static_cast<int>(length));
  *line = absl::string_view();  // a record without one has an empty line
  uint32_t field = 0;
  while (ReadParsedTag(&record, &field)) {
    // The line and the cut flag only (the last of each, should a record repeat it, as a parse
    // keeps; a bool is any varint, true when not 0).
    if (field == kCutTag) {
      uint64_t value = 0;
      if (!record.ReadVarint64(&value)) return false;
      *cut = value != 0;
      continue;
    }
    if (field != kLineTag || !ReadParsedLength(&record, &size) ||
        size > length - record.CurrentPosition()) {
      return false;
    }
    *line = bytes.substr(offset + record.CurrentPosition(), size);
    if (!record.Skip(static_cast<int>(size))) return false;
  }
  // The end of the record, not a tag the parse refuses (a zero, or one written too long).
  return field == 0 && record.ConsumedEntireMessage() &&
         record.CurrentPosition() == static_cast<int>(length);
}
}  // namespace

bool ApiLimits::ParseLogBatchLines(const Wire& wire, palisade::v1::LogBatch* header,
                                   std::vector<absl::string_view>* lines, bool* plain,
                                   std::vector<bool>* cut) {
  const absl::string_view bytes = wire.bytes;
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  const uint8_t* const end = data + bytes.size();
  std::string rest;  // the fields but the records, as they came: parsed as a LogBatch
  lines->clear();
  lines->reserve(wire.records);
  PlainLines plain_lines(end);
  if (cut != nullptr) cut->clear();
  // Line i's LogRecord.cut, kept only from the first cut line on (most batches have none).
  auto add = [&](absl::string_view line, bool line_cut) {
    lines->push_back(line);
    if (plain != nullptr) plain_lines.Add(line);
    if (!line_cut) return true;
    if (cut == nullptr) return false;  // a caller that cannot carry it: the parse decides
    cut->resize(lines->size());
    cut->back() = true;
    return true;
  };
  if (plain != nullptr) *plain = false;
  const uint8_t* p = data;
  while (p < end) {
    uint32_t length = 0;
    absl::string_view line;
    bool line_cut = false;
    if (const size_t record = RecordAt(p, end, &length); record != 0) {
      if (!LineOf(bytes, p + record, length, &line, &line_cut) || !add(line, line_cut)) {
        return false;
      }
      p += record + length;
      continue;
    }
    // Any other field, or a record whose length is written long: read as a CodedInputStream
    // reads the message.
    google::protobuf::io::CodedInputStream in(p, static_cast<int>(end - p));
    uint32_t tag = 0;
    if (!ReadParsedTag(&in, &tag)) return false;  // not at the end: a zero or malformed tag
    if (tag != kRecordsTag) {
      if (!WireFormatLite::SkipField(&in, tag)) return false;
      rest.append(reinterpret_cast<const char*>(p), in.CurrentPosition());
      p += in.CurrentPosition();
      continue;
    }
    if (!ReadParsedLength(&in, &length) ||
        length > static_cast<size_t>(end - p) - in.CurrentPosition()) {
      return false;
    }
    if (!LineOf(bytes, p + in.CurrentPosition(), length, &line, &line_cut) ||
        !add(line, line_cut)) {
      return false;
    }
    p += in.CurrentPosition() + length;
  }
  if (!header->ParseFromString(rest)) return false;
  if (plain != nullptr) *plain = plain_lines.plain();
  return true;
}

void ApiLimits::CountRefusal(absl::string_view method, absl::string_view limit) {
  refusals_.Add({{"method", std::string(method)}, {"limit", std::string(limit)}}).Increment();
}

}  // namespace palisade
