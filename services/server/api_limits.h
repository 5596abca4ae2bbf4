// The ingress caps of palisaded's gRPC API (config api.max_*), shared by its services:
//  - streaming calls open at once over the whole process (Ingest.Ship, Feeds.Push, Events.Watch
//    each hold a slot while they run; past api.max_streams a new one is refused), and by each
//    client (max_streams_per_client: one token's streams, stalled or not, must not take every
//    slot and refuse the shippers' Ship);
//  - records per LogBatch, counted on the wire before the batch is parsed (a parsed empty record
//    costs ~190 bytes for its 2 bytes on the wire: the cap has to act before parsing);
//  - one counter of every refusal, palisade_api_limit_refusals_total{method,limit}, which also
//    counts the messages gRPC itself refused for their size (api.max_message_bytes).
// Per-connection streams (GRPC_ARG_MAX_CONCURRENT_STREAMS) and the message size are enforced by
// gRPC; palisaded sets them from the same config.
//
// Thread-safety: all methods may be called concurrently; a StreamSlot belongs to one call.
#ifndef PALISADE_SERVICES_SERVER_API_LIMITS_H_
#define PALISADE_SERVICES_SERVER_API_LIMITS_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"
#include "palisade/v1/palisade.pb.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace palisade {

class ApiLimits {
 public:
  struct Options {
    // Defaults as in config.proto (ApiConfig).
    uint32_t max_records_per_batch = 10'000;
    uint32_t max_streams = 64;
    uint32_t max_message_bytes = 16u << 20;
    // Streaming calls one client may hold at once; 0: half of max_streams (at least 1), so
    // that one token (a read-only one included) cannot take the slots every shipper needs.
    // (Not a config field yet: api.max_streams_per_client would set it.)
    uint32_t max_streams_per_client = 0;
  };

  // One of max_streams, held by a streaming call until it is done (destroyed).
  class StreamSlot {
   public:
    StreamSlot() = default;
    StreamSlot(StreamSlot&& other) noexcept
        : limits_(other.limits_), client_(std::move(other.client_)) {
      other.limits_ = nullptr;
    }
    StreamSlot& operator=(StreamSlot&& other) noexcept;
    StreamSlot(const StreamSlot&) = delete;
    StreamSlot& operator=(const StreamSlot&) = delete;
    ~StreamSlot();

   private:
    friend class ApiLimits;
    StreamSlot(ApiLimits* limits, std::string client)
        : limits_(limits), client_(std::move(client)) {}
    ApiLimits* limits_ = nullptr;
    std::string client_;  // whose share it counts in
  };

  ApiLimits(Options options, prometheus::Registry& registry);

  const Options& options() const { return options_; }

  // A slot for one streaming call of `client` (an opaque key of the authenticated caller; empty
  // when the API has no clients, and then only the process's pool applies), or
  // RESOURCE_EXHAUSTED naming api.max_streams (counted as "max_streams") or the client's share
  // (counted as "max_streams_per_client"). The key is never shown or counted by value.
  absl::StatusOr<StreamSlot> AcquireStream(absl::string_view method,
                                           absl::string_view client = {});
  // The client's share (max_streams_per_client, or its default).
  uint32_t max_streams_per_client() const;
  uint32_t streams_open_by(absl::string_view client) const;
  uint32_t streams_open() const { return open_.load(std::memory_order_relaxed); }

  // Parses a LogBatch received as bytes. RESOURCE_EXHAUSTED naming api.max_records_per_batch
  // (counted) when it holds more records, found by walking the wire format before anything is
  // parsed; RESOURCE_EXHAUSTED naming api.max_message_bytes (counted as that limit) when what
  // the parse would hold (map entries, unknown fields and packed offsets cost tens of bytes
  // for each byte on the wire) passes twice max_message_bytes plus the records' share;
  // INVALID_ARGUMENT when it is not a LogBatch.
  absl::Status ParseLogBatch(const grpc::ByteBuffer& wire, palisade::v1::LogBatch* batch);

  // A LogBatch's bytes in one piece: a view of gRPC's slice, or its slices joined. A stream
  // keeps one for its life and reads each batch into it (Read starts it over): the joined
  // buffer's memory is reused (a batch of 500-1000 lines comes in several slices, and a fresh
  // buffer of ~100 KiB a batch cost a malloc and a free that consolidated glibc's free lists:
  // ~70 instructions a line, profiled).
  struct Wire {
    std::vector<grpc::Slice> slices;
    std::string joined;
    absl::string_view bytes;
    uint32_t records = 0;  // the records Read counted
    // Once the batch is processed: lets go of gRPC's slices, and of the joined buffer when it
    // is over kKeptBytes (a stream that sent one large batch does not hold its size for life).
    void Done();
    static constexpr size_t kKeptBytes = size_t{1} << 20;
  };
  // Takes `wire`'s bytes into `*out` (after which the ByteBuffer may be cleared; what `*out`
  // held before is dropped) and applies the records cap as ParseLogBatch does.
  absl::Status Read(const grpc::ByteBuffer& wire, Wire* out);
  absl::Status ParseLogBatch(const Wire& wire, palisade::v1::LogBatch* batch);
  // The batch without a protobuf record or a string per line: `header` gets every field but
  // the records (parsed as a LogBatch would), `lines` each record's line as a view into
  // `wire.bytes`. False, with nothing to use, when a record holds more than its line (an event
  // time, fields, anything else) or the bytes are not well formed: ParseLogBatch then decides.
  // `plain`, when given, is set to whether every line is ASCII without a NUL (LineBatch::plain:
  // the pipeline then need not look at each line for hostile bytes); false when it returns false.
  // A record's `cut` (LogRecord.cut: the shipper cut its line) is read too: `cut`, when given,
  // gets cut[i] for line i (LineBatch::cut; left shorter than `lines`, empty when none is cut);
  // without it a batch with a cut line returns false, as the flag would be lost.
  bool ParseLogBatchLines(const Wire& wire, palisade::v1::LogBatch* header,
                          std::vector<absl::string_view>* lines, bool* plain = nullptr,
                          std::vector<bool>* cut = nullptr);

  // Counts a refusal: `limit` is the config field's short name, e.g. "max_message_bytes".
  void CountRefusal(absl::string_view method, absl::string_view limit);

 private:
  const Options options_;
  void Release(const std::string& client);
  // The bytes a batch's parse may hold: 2 x max_message_bytes, and max_records_per_batch
  // records of a line each.
  size_t ParseBudget() const;
  absl::Status RefuseParseCost(size_t budget);

  std::atomic<uint32_t> open_{0};
  mutable absl::Mutex clients_mu_;
  absl::flat_hash_map<std::string, uint32_t> open_by_client_ ABSL_GUARDED_BY(clients_mu_);
  prometheus::Family<prometheus::Counter>& refusals_;
  prometheus::Gauge& open_gauge_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_SERVER_API_LIMITS_H_
