#include "services/cli/shipper.h"

#include <unistd.h>

#include <chrono>
#include <deque>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"

namespace palisade {

std::string DefaultShipperId() {
  char host[256] = {0};
  if (::gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') return "shipper";
  std::string id(host);
  for (char& c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) c = '-';
  }
  if (id.size() > 128) id.resize(128);
  return id;
}

std::string DefaultSource(const std::string& host, const std::string& path) {
  if (path.empty()) return host;
  if (path[0] == '/' || path == "-") return absl::StrCat(host, ":", path);  // "-": stdin
  char cwd[4096];
  if (::getcwd(cwd, sizeof(cwd)) == nullptr) return absl::StrCat(host, ":", path);
  return absl::StrCat(host, ":", cwd, "/", path);
}

absl::StatusOr<ShipSummary> Ship(palisade::v1::Ingest::StubInterface& stub,
                                 const std::vector<palisade::v1::LogRecord>& records,
                                 const ShipOptions& options) {
  size_t next = 0;
  ShipOptions with_total = options;
  if (options.progress) {
    with_total.progress = [&](uint64_t done, uint64_t) { options.progress(done, records.size()); };
  }
  return Ship(
      stub,
      [&](palisade::v1::LogBatch* batch, size_t max) -> absl::StatusOr<size_t> {
        const size_t end = std::min(records.size(), next + max);
        batch->mutable_records()->Reserve(static_cast<int>(end - next));
        for (size_t i = next; i < end; ++i) *batch->add_records() = records[i];
        const size_t n = end - next;
        next = end;
        return n;
      },
      with_total);
}

absl::StatusOr<ShipSummary> Ship(palisade::v1::Ingest::StubInterface& stub,
                                 const RecordSource& source, const ShipOptions& options) {
  const uint32_t batch_lines = std::max<uint32_t>(1, options.batch_lines);
  const uint32_t window = std::max<uint32_t>(1, options.max_in_flight);
  grpc::ClientContext context;
  if (!options.bearer_token.empty()) {
    context.AddMetadata("authorization", "Bearer " + options.bearer_token);
  }
  context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoSeconds(options.deadline));
  auto stream = stub.Ship(&context);
  const std::string batch_source =
      !options.source.empty()
          ? options.source
          : DefaultSource(options.host.empty() ? DefaultShipperId() : options.host, options.path);

  ShipSummary summary;
  absl::Mutex mu;
  std::deque<std::pair<uint64_t, absl::Time>> in_flight;  // sequence, sent at
  uint64_t acked_lines = 0;
  bool reader_done = false;
  std::string ack_error;

  std::thread reader([&] {
    palisade::v1::BatchAck ack;
    while (stream->Read(&ack)) {
      absl::MutexLock lock(&mu);
      if (in_flight.empty() || in_flight.front().first != ack.sequence()) {
        ack_error = absl::StrCat("ack for batch ", ack.sequence(), " arrived out of order");
        context.TryCancel();
        break;
      }
      summary.ack_latencies.push_back(absl::Now() - in_flight.front().second);
      in_flight.pop_front();
      ++summary.batches;
      summary.accepted += ack.accepted();
      summary.malformed += ack.malformed();
      summary.matched += ack.matched();
      summary.detections += ack.detections();
      summary.ignored += ack.ignored();
      summary.truncated += ack.truncated();
      acked_lines += ack.accepted() + ack.malformed();
      if (options.progress) options.progress(acked_lines, 0);
    }
    absl::MutexLock lock(&mu);
    reader_done = true;
  });

  uint64_t sequence = 0;
  bool write_failed = false;
  absl::Status source_error;
  while (true) {
    palisade::v1::LogBatch batch;
    absl::StatusOr<size_t> n = source(&batch, batch_lines);
    if (!n.ok()) {
      source_error = n.status();
      break;
    }
    if (*n == 0) break;
    batch.set_sequence(++sequence);
    batch.set_source(batch_source);
    batch.set_format(options.format);
    batch.set_json_format(options.json_format);
    {
      absl::MutexLock lock(&mu);
      auto room = [&] { return reader_done || in_flight.size() < window; };
      mu.Await(absl::Condition(&room));
      if (reader_done) break;
      in_flight.emplace_back(batch.sequence(), absl::Now());
    }
    if (!stream->Write(batch)) {
      write_failed = true;
      break;
    }
  }
  stream->WritesDone();
  reader.join();
  grpc::Status status = stream->Finish();
  // Acks out of order cancel the stream: the CANCELLED that leaves is ours, not the reason.
  if (!ack_error.empty()) return absl::DataLossError(ack_error);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  }
  if (!source_error.ok()) return source_error;
  if (write_failed || summary.batches != sequence) {
    return absl::DataLossError(
        absl::StrCat("sent ", sequence, " batches but ", summary.batches, " were acked"));
  }
  return summary;
}

absl::StatusOr<size_t> AddLines(
    LineReader& reader, size_t max, size_t max_bytes, palisade::v1::LogBatch* batch,
    const std::function<void(absl::string_view, palisade::v1::LogRecord*)>& each) {
  absl::string_view line;
  size_t n = 0;
  size_t bytes = 0;
  while (n < max && bytes < max_bytes) {
    absl::StatusOr<bool> more = reader.Next(&line);
    if (!more.ok()) return more.status();
    if (!*more) break;
    palisade::v1::LogRecord* record = batch->add_records();
    record->set_line(line.data(), line.size());
    // A line of exactly the cap and a longer one cut there look alike: only the reader knows.
    if (reader.last_cut()) record->set_cut(true);
    bytes += line.size();
    if (each) each(line, record);
    ++n;
  }
  return n;
}

}  // namespace palisade
