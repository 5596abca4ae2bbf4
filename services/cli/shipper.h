// Ships log records to palisaded over the Ingest stream, with a bounded number of batches in
// flight (backpressure: when the server is slow, the shipper waits for acks instead of
// buffering without end). Used by `palisadectl ship`, the load client and the tests.
// Thread-safety: one Ship() call at a time per Shipper.
#ifndef PALISADE_SERVICES_CLI_SHIPPER_H_
#define PALISADE_SERVICES_CLI_SHIPPER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "palisade/v1/palisade.grpc.pb.h"
#include "services/inputs/line_reader.h"

namespace palisade {

struct ShipOptions {
  // The batches' source. The daemon keeps per source the year of year-less stamps, the event
  // time its sweep ages windows by, and the zone (source_time_zones); it is also a metric
  // label. Default: "<host>:<path>" (DefaultSource), so that hosts shipping the same file do not
  // share one: a host catching up a backlog would otherwise see a live host move its time to
  // now and the sweep drop its windows between batches.
  std::string source;
  // The default source's halves: the host (default: DefaultShipperId(), the machine's name) and
  // the file the records come from (made absolute; none: the host alone).
  std::string host;
  std::string path;
  palisade::v1::LogFormat format = palisade::v1::LOG_FORMAT_SYSLOG;
  // With format json: the mapping (palisaded's json_formats) that reads the lines.
  std::string json_format;
  uint32_t batch_lines = 1000;
  uint32_t max_in_flight = 8;
  absl::Duration deadline = absl::Minutes(30);
  // Sent as "authorization: Bearer <token>" when set (palisaded's api.clients).
  std::string bearer_token;
  // Called after every ack with (lines acked so far, lines total).
  std::function<void(uint64_t, uint64_t)> progress;
};

struct ShipSummary {
  uint64_t batches = 0;
  uint64_t accepted = 0;
  uint64_t malformed = 0;
  uint64_t matched = 0;
  uint64_t detections = 0;
  uint64_t ignored = 0;
  uint64_t truncated = 0;
  // Ack latency per batch (write of the batch → its ack), in send order.
  std::vector<absl::Duration> ack_latencies;
};

// The name a host gives itself by default (the shipper id of `ship --follow`, the host half of
// the default source): gethostname(), with characters outside [A-Za-z0-9._:-] as '-', at most
// 128 of them; "shipper" when the machine has no name.
std::string DefaultShipperId();

// The source batches are named by when none is given: "<host>:<path>" (LogBatch.source's own
// example, "web-1:/var/log/auth.log"), a relative path made absolute from the working
// directory; the host alone when there is no path. One per host and file, so that each keeps
// its own time in the daemon.
std::string DefaultSource(const std::string& host, const std::string& path);

// Ships `records` and waits for every ack. kUnavailable when the server cannot be reached;
// the server's own status when it refused a batch; kDataLoss when acks went missing.
absl::StatusOr<ShipSummary> Ship(palisade::v1::Ingest::StubInterface& stub,
                                 const std::vector<palisade::v1::LogRecord>& records,
                                 const ShipOptions& options);

// Where a streamed Ship takes its records: adds up to `max` records to `batch` and returns how
// many (0: no more), or an error, which ends the shipping with it. Memory stays bounded by the
// batches in flight, whatever the source's size.
using RecordSource =
    std::function<absl::StatusOr<size_t>(palisade::v1::LogBatch* batch, size_t max)>;
// The same, streamed: `progress` gets 0 as the total (unknown in advance).
absl::StatusOr<ShipSummary> Ship(palisade::v1::Ingest::StubInterface& stub,
                                 const RecordSource& source, const ShipOptions& options);

// A RecordSource's body over a file (`palisadectl ship`): adds the next lines of `reader` to
// `batch` as records, up to `max` of them and no more once their lines hold `max_bytes` (the
// line that reaches it included); returns how many (0 at the end). A line the reader cut at its
// cap is marked so (LogRecord.cut): its end is the cap's, which the server must not take for
// its writer's, whatever its own cap. `each`, when set, sees each record added with its line
// (--retime sets the event time).
absl::StatusOr<size_t> AddLines(
    LineReader& reader, size_t max, size_t max_bytes, palisade::v1::LogBatch* batch,
    const std::function<void(absl::string_view, palisade::v1::LogRecord*)>& each = nullptr);

}  // namespace palisade

#endif  // PALISADE_SERVICES_CLI_SHIPPER_H_
