// A syslog receiver (issue 14 §1): RFC 5424 and RFC 3164 messages over UDP and TCP (RFC 6587:
// octet counting, "LEN SP MSG", and newline framing, told apart per frame by its first byte),
// handed to a batch sink (the daemon's Pipeline::ProcessBatch) in batches per format: a frame
// whose header is `<PRI>1 ` is RFC 5424, any other RFC 3164.
//
// Bounded, whatever a sender does: at most `max_connections` TCP connections (more are closed at
// once, counted); a frame longer than `max_frame_bytes` is skipped and counted (an octet-counted
// one by its length, a newline-framed one up to its newline) and the connection goes on; a
// batch is flushed at `batch_lines` or after `flush_interval`, so memory is a batch per format.
// A malformed frame (no `<PRI>`, a bad length) is counted and skipped, never fatal.
// Metrics per receiver: frames by transport, malformed by reason, open and refused connections.
//
// Not here yet: TLS (RFC 5425) and per-connection rate limits.
//
// Thread-safety: Start and Stop from one thread; the receiver runs its own threads (one for UDP,
// one accepting TCP, one per TCP connection, one flushing).
#ifndef PALISADE_SERVICES_INPUTS_SYSLOG_RECEIVER_H_
#define PALISADE_SERVICES_INPUTS_SYSLOG_RECEIVER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "palisade/v1/config.pb.h"
#include "palisade/v1/palisade.pb.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/inputs/file_inputs.h"

namespace palisade {

struct SyslogReceiverOptions {
  uint32_t batch_lines = 1000;
  absl::Duration flush_interval = absl::Milliseconds(50);
  std::function<void(const std::string&)> log;
};

class SyslogReceiver {
 public:
  // Binds the configured addresses ("127.0.0.1:5514", "[::1]:5514"; port 0: any) and starts.
  // kInvalidArgument for a bad config, kUnavailable naming the input and the address when a
  // socket cannot be bound (a port in use).
  static absl::StatusOr<std::unique_ptr<SyslogReceiver>> Start(
      const palisade::v1::SyslogInput& config, SyslogReceiverOptions options, BatchSink sink,
      prometheus::Registry& registry);
  ~SyslogReceiver();

  // The bound ports (0: that transport is off).
  int udp_port() const { return udp_port_; }
  int tcp_port() const { return tcp_port_; }
  // Stops every thread and flushes what is pending.
  void Stop();
  // Connection threads held (running, or ended and not yet joined). For tests.
  size_t connection_threads() {
    absl::MutexLock lock(&conn_mu_);
    return conn_threads_.size();
  }

  // What a connection's deframing carries from one read to the next: the bytes of an oversized
  // octet-counted frame still to drop, or the rest of an oversized newline-framed one.
  struct DeframeState {
    size_t skip = 0;
    bool dropping_line = false;
  };
  // Cuts `stream` into frames (RFC 6587: "LEN SP MSG" when a frame starts with a digit, else up
  // to a newline); complete frames are appended to `frames`, an incomplete one stays in
  // `stream`. Frames longer than max_frame_bytes and bad lengths are dropped, counted in
  // `*malformed`, and the stream goes on after them. Exposed for tests.
  static void Deframe(std::string* stream, size_t max_frame_bytes, DeframeState* state,
                      std::vector<std::string>* frames, uint64_t* malformed);

 private:
  SyslogReceiver(palisade::v1::SyslogInput config, SyslogReceiverOptions options, BatchSink sink)
      : config_(std::move(config)), options_(std::move(options)), sink_(std::move(sink)) {}
  void Add(std::string frame);
  void Flush();
  void UdpLoop();
  void AcceptLoop();
  void Connection(int fd);

  palisade::v1::SyslogInput config_;
  SyslogReceiverOptions options_;
  BatchSink sink_;
  int udp_fd_ = -1, tcp_fd_ = -1;
  int udp_port_ = 0, tcp_port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> connections_{0};
  std::vector<std::thread> threads_;
  // Connection threads; a finished one is joined when the next connection is accepted, so a
  // sender that connects per message (logger) does not pile up ended threads.
  struct ConnThread {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  absl::Mutex conn_mu_;
  std::vector<ConnThread> conn_threads_ ABSL_GUARDED_BY(conn_mu_);
  absl::Mutex batch_mu_;
  palisade::v1::LogBatch rfc3164_ ABSL_GUARDED_BY(batch_mu_);
  palisade::v1::LogBatch rfc5424_ ABSL_GUARDED_BY(batch_mu_);
  absl::Mutex sink_mu_;  // batches reach the sink one at a time, in order
  prometheus::Counter* udp_frames_ = nullptr;
  prometheus::Counter* tcp_frames_ = nullptr;
  prometheus::Counter* malformed_ = nullptr;
  prometheus::Counter* refused_ = nullptr;
  prometheus::Counter* sink_errors_ = nullptr;
  prometheus::Gauge* open_ = nullptr;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_INPUTS_SYSLOG_RECEIVER_H_
