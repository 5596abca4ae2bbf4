// A Cloudflare Logpush HTTP destination (issue 14 §2): palisaded serves `POST <path>` (HTTPS when
// configured) for a Logpush job whose destination is `https://host/path?header_Authorization=...`
// (config: InputsConfig.logpush, proto LogpushInput). Each upload is gzipped NDJSON, read whole
// as sent (at most max_body_bytes) within request_timeout, then inflated; its lines become
// LogBatches of the job's dataset format, bounded in records and bytes (max_batch_records,
// max_batch_bytes: what is inflated is held a batch at a time, so a file swollen by a flood of
// long URIs is read whole), each handed to the batch sink (the daemon's Pipeline::ProcessBatch,
// the path gRPC batches take) as it fills, with no deadline (the pipeline's time does not count
// against request_timeout). The reply is sent after the last: 200 when the sink took every
// batch, 503 when it refused one (the rest is not handed). Logpush retries a file on any non-2xx,
// and resends one whose 200 was lost: the batches taken are remembered for duplicate_window by a
// chain digest (SHA-256 of the previous batch's digest and the batch's lines; batches are cut by
// the records alone, so a resend is cut the same way), and a resend hands only the batches not
// taken yet; one whose every batch was taken is answered 200 and counted as a duplicate. Files
// are not distinct by themselves (second-resolution timestamps; a quiet zone's identical
// requests in one second), so only a batch whose every record has a top-level "RayID" key (not
// a User-Agent or Referer of RayID) is remembered when taken; others are handed (counted:
// palisade_logpush_batches_not_deduplicated_total), but for those an upload answered non-2xx had
// handed: its resend is the same file, and skips each of them once. Include RayID in the job's
// fields for a resend whose 200 was lost to count once. The digests are kept in memory
// only: after a restart (or a crash) mid-upload, Logpush's resend hands again the batches taken
// before it.
//
// Hostile input, whatever the sender writes:
// - the Authorization header is compared with the secret in constant time (both hashed with
//   SHA-256 first, then CRYPTO_memcmp, so neither the length nor the first differing byte leaks);
//   a request without the secret gets 401 before its body is read; the secret never reaches a
//   log line, a metric or a reply;
// - the body is capped as sent (max_body_bytes) and once inflated (max_inflated_bytes, default
//   1 GiB: the inflating work, not memory): past either, 413 without reading the rest; a body
//   that is not valid gzip is 400; records per upload are capped in count (max_records, 413);
//   a record is cut at max_record_bytes + 1 (counted); what a batch holds is its lines plus
//   kRecordHeldBytes each (a small gzip of a million one-byte records would otherwise hold
//   ~150 MB), and each batch starts empty (a cleared one keeps its strings' capacity), so an
//   upload holds at most max_body_bytes + max_batch_bytes + max_record_bytes + 64 KiB. A refusal
//   after batches were taken leaves them remembered: the resend skips them. Refusals are logged
//   (at most one line per 10 s; never the body nor the secret);
// - at most `max_in_flight` uploads are handled at once (more get 503 with Retry-After), and
//   at most max_in_flight + 1 connections from one address are served at once, headers
//   included (more are closed unread), since the secret can only be checked once the headers
//   are in: an address sending them slowly does not hold every worker; a
//   bounded number of connections wait in a bounded queue (more wait in the kernel's backlog),
//   reads and writes time out, and a whole upload (TLS handshake, headers and body) must arrive
//   within `request_timeout`, or it is answered 408 and its connection closed (the bounded
//   HTTP server's request deadline, which also bounds how long Stop waits);
// - any other path or method is answered 404/405 before a body is read, and a
//   multipart/form-data body is refused with 415 (Logpush sends the file as the body).
// cpp-httplib 0.11 (Debian) inflates `Content-Encoding: gzip` bodies itself with no cap on the
// result; the receiver takes that header away before httplib reads the body and inflates with
// zlib itself (BoundedInflater), with the caps above.
//
// Cloudflare's check upload when a job is created (a small gzipped `{"content":"test",
// "filename":"test.txt"}`) is answered 200 and counted as a check, not as a malformed record.
//
// Metrics per input: palisade_logpush_requests_total{input,outcome}, _lines_total,
// _body_bytes_total{input,form=sent|inflated}, _malformed_total{input,reason},
// _records_cut_total, _batches_not_deduplicated_total, _in_flight.
//
// Thread-safety: Start/Stop from one thread; the pure helpers (SecretMatches, BoundedInflater
// objects each used by one thread, IsCheckUpload, SplitLines) from any thread. The server runs
// on its own threads; batches reach the sink one at a time.
#ifndef PALISADE_SERVICES_INPUTS_LOGPUSH_RECEIVER_H_
#define PALISADE_SERVICES_INPUTS_LOGPUSH_RECEIVER_H_

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "palisade/v1/config.pb.h"
#include "palisade/v1/palisade.pb.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/common/clock.h"
#include "services/inputs/file_inputs.h"

namespace httplib {
class Server;
}

namespace palisade {

struct LogpushReceiverOptions {
  // Uploads handled at once; more are answered 503 + Retry-After (Logpush retries). Each holds
  // at most its body as sent, a batch and a record (max_body_bytes + max_batch_bytes +
  // max_record_bytes), so this bounds the memory uploads take.
  int max_in_flight = 4;
  // Connections accepted and waiting for a worker; past it the server stops accepting (the
  // kernel's listen backlog holds the rest).
  int max_queued_connections = 16;
  // Connections from one address (an IPv6 one: from its /64) served at once (headers being read
  // included); more are closed unread as a worker takes them, counted as outcome address_busy.
  // 0 or over max_in_flight + 1: max_in_flight + 1 (its uploads, and one answered 503 busy), so
  // of the max_in_flight + 2 workers one address leaves one for the others.
  int max_connections_per_address = 0;
  // Records (non-empty lines) per upload; more: 413. Logpush's max_upload_records is at most
  // 1,000,000 (default 100,000).
  size_t max_records = 1'000'000;
  // An upload is inflated once read and handed to the sink in batches of at most this many
  // records, holding at most max_batch_bytes (their lines' bytes plus kRecordHeldBytes each):
  // memory is bounded per batch, not per upload. 0: the defaults. max_batch_bytes is raised to
  // hold one record cut at max_record_bytes.
  size_t max_batch_records = 100'000;
  size_t max_batch_bytes = 16u << 20;
  // A record longer than this is cut one byte past it, its rest dropped and counted
  // (palisade_logpush_records_cut_total), as a file input cuts a line: the pipeline then sees it
  // over its cap and cuts and flags it. The daemon passes engine.max_record_bytes. 0: 8 MiB.
  size_t max_record_bytes = 8u << 20;
  // How long the batches an upload had taken are remembered (a chain digest: SHA-256 of the
  // previous batch's digest and this batch's lines, so it names the upload's records up to this
  // batch's end), so that a resend (its 200 lost, or a retry after a refusal midway) hands none
  // of them to the sink again; at most max_remembered_batches (the oldest forgotten first), each
  // digest held twice (~220 bytes). Only batches whose every record carries a RayID, and those
  // without that an upload answered non-2xx had handed (as many again, each skipped once); in
  // memory: a restart forgets them. Zero: off (every batch handed); negative: 1 h.
  absl::Duration duplicate_window = absl::Hours(1);
  size_t max_remembered_batches = 65'536;
  // Each socket read / write.
  absl::Duration io_timeout = absl::Seconds(10);
  // The whole upload, from when a worker waits for its first byte (for a connection's first
  // upload: from when a worker takes the connection, the TLS handshake included) to its last.
  // Zero or less: 60 s.
  absl::Duration request_timeout = absl::Seconds(60);
  // Time for request_timeout (the socket waits are real time, in slices of 100 ms that look at
  // it); null: the real clock.
  Clock* clock = nullptr;
  std::function<void(const std::string&)> log;
};

// Inflates a gzip stream (one or more members, as `cat a.gz b.gz` makes) fed in pieces, into at
// most `max_out` bytes. Written by hand on zlib's inflate, since httplib's decompressor has no
// cap on its output.
class BoundedInflater {
 public:
  explicit BoundedInflater(size_t max_out);
  ~BoundedInflater();
  BoundedInflater(const BoundedInflater&) = delete;
  BoundedInflater& operator=(const BoundedInflater&) = delete;

  // Appends what `in` inflates to to `*out`. kResourceExhausted once the output would pass
  // max_out (nothing more is inflated), kInvalidArgument for bytes that are not gzip.
  absl::Status Feed(absl::string_view in, std::string* out);
  // The same, handing the output to `each` in pieces of at most 64 KiB as they are inflated (a
  // piece of `in` may inflate to a thousand times its size); an error from `each` stops the
  // stream and is returned.
  absl::Status Feed(absl::string_view in,
                    const std::function<absl::Status(absl::string_view)>& each);
  // OK when the stream ended at a member's end; kInvalidArgument when it was cut short.
  absl::Status Finish();

 private:
  size_t max_out_;
  size_t produced_ = 0;
  bool member_open_ = false;  // inside a member (its header seen, its end not yet)
  bool failed_ = false;
  void* stream_;  // z_stream, kept out of the header
};

class LogpushReceiver {
 public:
  // Validates the config (kInvalidArgument naming the input), reads the secret file and the TLS
  // files (kNotFound / kInvalidArgument naming the input and the file, never its content; the
  // secret file must be a regular file only its owner may use: kPermissionDenied otherwise), binds
  // `listen` (kUnavailable naming the input and the address: a port in use) and serves.
  static absl::StatusOr<std::unique_ptr<LogpushReceiver>> Start(
      const palisade::v1::LogpushInput& config, LogpushReceiverOptions options, BatchSink sink,
      prometheus::Registry& registry);
  ~LogpushReceiver();

  int port() const { return port_; }
  // Stops serving; waits for the uploads in flight to be handled. A read or write that has to
  // wait fails within 100 ms of the stop (that upload is closed unanswered, and Logpush sends
  // it again), so only a sink call in progress can hold Stop longer.
  void Stop();

  // Whether `got` equals `secret`, in time that depends on neither.
  static bool SecretMatches(absl::string_view secret, absl::string_view got);
  // Whether an inflated body is Cloudflare's check upload: one JSON object with "content"
  // "test" (or "tests") and at most a "filename" string besides.
  static bool IsCheckUpload(absl::string_view body);
  // What a record holds in a LogBatch besides its line's bytes, at most (64-bit, protobuf 3.21:
  // SpaceUsedLong says 200 for a short line's record, the message and its string; plus its slot
  // in the batch and two allocations' headers). A batch of one-byte records holds over a
  // hundred times its inflated size.
  static constexpr size_t kRecordHeldBytes = 256;
  enum class Split { kOk, kTooManyRecords, kTooManyBytes };
  // NDJSON lines: split at '\n', the '\r's before it dropped, empty lines skipped; a last line
  // without its newline is a record too (the upload is whole). Appended to `batch`; past
  // `max_records`, or once the records would hold more than `max_held_bytes` (each its line's
  // bytes plus kRecordHeldBytes), stops and says which (what was appended is not taken).
  static Split SplitLines(absl::string_view body, size_t max_records, size_t max_held_bytes,
                          palisade::v1::LogBatch* batch);

 private:
  struct Metrics;
  LogpushReceiver(palisade::v1::LogpushInput config, LogpushReceiverOptions options,
                  BatchSink sink);
  void Count(const std::string& outcome);
  void Log(const std::string& message) const;
  // Logs a refused upload (why, never its body nor the secret), at most one line per 10 s; the
  // lines not logged are counted in the next one.
  void LogRefusal(const std::string& message);
  // Hands one batch of an upload to the sink, unless a batch with the same `digest` was taken
  // within duplicate_window (`*duplicate`). The digest is a chain: SHA-256 of the previous
  // batch's digest and this batch's lines, so it names the upload's records up to this batch's end.
  // Only a batch whose records all carry a RayID (`ray_ids`) is remembered when taken; one
  // without them is skipped only as one an upload answered non-2xx had handed (RememberRefused),
  // once. None when duplicate_window is 0.
  absl::Status Hand(palisade::v1::LogBatch& batch, const std::string& digest, bool ray_ids,
                    bool* duplicate);
  // Remembers the digests of the batches without RayIDs an upload answered non-2xx had handed:
  // Logpush sends that file again, and its resend skips each of them once (a later upload of the
  // same lines is another file, and is handed). For duplicate_window, at most
  // max_remembered_batches; none when duplicate_window is 0.
  void RememberRefused(const std::vector<std::string>& digests);
  void ForgetRefused(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(sink_mu_);

  palisade::v1::LogpushInput config_;
  LogpushReceiverOptions options_;
  BatchSink sink_;
  palisade::v1::LogFormat format_ = palisade::v1::LOG_FORMAT_UNSPECIFIED;
  std::string secret_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<int> in_flight_{0};
  absl::Mutex sink_mu_;  // batches reach the sink one at a time
  // Digests of the batches taken, oldest first, with when (duplicate_window).
  std::deque<std::pair<absl::Time, std::string>> taken_ ABSL_GUARDED_BY(sink_mu_);
  std::set<std::string> taken_digests_ ABSL_GUARDED_BY(sink_mu_);
  // Digests of the batches without RayIDs that uploads answered non-2xx had handed, oldest first
  // with when; an entry whose digest was skipped since (or remembered again) is stale. The map
  // holds the live ones, with when they were remembered.
  std::deque<std::pair<absl::Time, std::string>> refused_ ABSL_GUARDED_BY(sink_mu_);
  std::map<std::string, absl::Time> refused_digests_ ABSL_GUARDED_BY(sink_mu_);
  absl::Mutex log_mu_;
  absl::Time last_refusal_log_ ABSL_GUARDED_BY(log_mu_) = absl::InfinitePast();
  size_t refusals_not_logged_ ABSL_GUARDED_BY(log_mu_) = 0;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  prometheus::Family<prometheus::Counter>* malformed_ = nullptr;
  prometheus::Counter* lines_ = nullptr;
  prometheus::Counter* cut_ = nullptr;
  prometheus::Counter* not_deduplicated_ = nullptr;
  prometheus::Counter* sent_bytes_ = nullptr;
  prometheus::Counter* inflated_bytes_ = nullptr;
  prometheus::Gauge* in_flight_gauge_ = nullptr;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_INPUTS_LOGPUSH_RECEIVER_H_
