// SIEM outputs of the event stream: Elastic Common Schema NDJSON to a rotated file, and CEF in
// RFC 5424 syslog over UDP or TCP. Field mappings are in docs/EVENTS.md.
//
// A SinkRunner follows the hub on its own thread through a bounded queue, so a slow disk or
// collector never slows ingest. A write that fails with kUnavailable (an outage) is tried again,
// backing off, until it goes out; each outage is logged once, and its end. If the runner falls
// behind and is dropped, it resubscribes after the last event it wrote; what the replay buffer
// no longer holds is counted as lost and logged with its sequence bounds, and it goes on with
// the oldest event the buffer still holds.
#ifndef PALISADE_SERVICES_EVENTS_SINKS_H_
#define PALISADE_SERVICES_EVENTS_SINKS_H_

#include <sys/types.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "palisade/v1/config.pb.h"
#include "palisade/v1/palisade.pb.h"
#include "prometheus/registry.h"
#include "services/events/event_hub.h"

namespace palisade {

// One line saying what happened ("decision created: block 203.0.113.7 until …").
std::string EventSummary(const palisade::v1::Event& event);
// One JSON object (no newline) with ECS field names.
std::string ToEcsJson(const palisade::v1::Event& event);
// "CEF:0|Palisade|palisaded|<version>|<signature>|<name>|<severity>|<extension>".
std::string ToCef(const palisade::v1::Event& event);
// RFC 5424: "<PRI>1 TIMESTAMP HOST palisaded - MSGID - MSG" (facility authpriv).
std::string ToSyslog5424(const palisade::v1::Event& event, absl::string_view message,
                         absl::string_view hostname);

// Where a sink writes; Write is called from the runner's thread only. kUnavailable: not now (a
// collector down, a full disk), the runner writes the event again later; any other error: this
// event cannot be written, it is counted failed.
class SinkOutput {
 public:
  virtual ~SinkOutput() = default;
  virtual absl::Status Write(const palisade::v1::Event& event) = 0;
};

struct EcsFileOptions {
  // How bytes reach the file: write(2). A seam for tests, which make it write part of a line and
  // then fail (a full disk).
  std::function<ssize_t(int fd, const void* data, size_t size)> write = ::write;
};

// ECS NDJSON, rotated by size. Each line goes to the file in write(2) calls of its own (no
// buffering). A rotation that cannot move the file (logged once) keeps appending to it rather
// than losing what it holds.
//
// A reader never sees two events merged on one line: a line the disk takes only part of (full,
// over quota) is cut off again (ftruncate to where it started) and its event reported failed;
// when the file may still end inside a line (the cut failed, or it was left so before Open), the
// next line starts with "\n", so the broken part stands alone and the events after it parse.
class EcsFileOutput final : public SinkOutput {
 public:
  static absl::StatusOr<std::unique_ptr<EcsFileOutput>> Open(const palisade::v1::EcsFileSink& c,
                                                             EcsFileOptions options = {});
  ~EcsFileOutput() override;
  absl::Status Write(const palisade::v1::Event& event) override;

 private:
  EcsFileOutput(palisade::v1::EcsFileSink config, EcsFileOptions options, int fd);
  absl::Status Rotate();
  // After fd_ was opened on a file that may hold lines already: whether it ends inside a line.
  // (Its size is read from the file at each write, never counted.)
  void Opened();
  const palisade::v1::EcsFileSink config_;
  const EcsFileOptions options_;
  int fd_;  // -1 only when a rotation could not open the new file
  bool torn_ = false;         // the file may end inside a line: the next one starts with "\n"
  std::string rotate_error_;  // the last rotation's failure, logged once
};

// CEF over syslog. UDP: one datagram per event. TCP: octet-counted frames, reconnecting. Open
// refuses only a malformed address or transport: a collector that cannot be resolved or reached
// yet is tried again at each write. A connect and a send each have `io_timeout`: a collector
// that stops reading makes writes fail (kUnavailable), never blocks the sink's thread for good.
class CefSyslogOutput final : public SinkOutput {
 public:
  static absl::StatusOr<std::unique_ptr<CefSyslogOutput>> Open(
      const palisade::v1::CefSyslogSink& c, absl::Duration io_timeout = absl::Seconds(5));
  ~CefSyslogOutput() override;
  absl::Status Write(const palisade::v1::Event& event) override;

 private:
  CefSyslogOutput(bool tcp, std::string host, int port, absl::Duration io_timeout);
  absl::Status Connect();
  const bool tcp_;
  const std::string host_;
  const int port_;
  const absl::Duration io_timeout_;
  int fd_ = -1;
  std::string hostname_;
};

struct SinkRunnerOptions {
  // A write that fails with kUnavailable (a collector restarting, a full disk) is tried again
  // after `first_retry`, the pause doubling up to `max_retry` while it keeps failing.
  absl::Duration first_retry = absl::Seconds(1);
  absl::Duration max_retry = absl::Seconds(30);
};

class SinkRunner {
 public:
  SinkRunner(const palisade::v1::SinkConfig& config, std::unique_ptr<SinkOutput> output,
             EventHub& hub, prometheus::Registry& registry, SinkRunnerOptions options = {});
  // Stops after writing what it already took and what the replay buffer holds for it (when it
  // had fallen behind), or at the first write that fails once stopping (the rest counted failed).
  ~SinkRunner();
  // Asks the runner to stop, without waiting (the destructor waits): several sinks stop at
  // once, and a test knows the stop was asked before it lets a write end.
  void RequestStop() { stopping_.Notify(); }

  // Builds the output a config names (files opened, addresses checked; a collector that cannot
  // be resolved or reached yet is tried again at each write).
  static absl::StatusOr<std::unique_ptr<SinkOutput>> OutputFor(
      const palisade::v1::SinkConfig& config);

 private:
  void Run();
  const palisade::v1::SinkConfig config_;
  const SinkRunnerOptions options_;
  std::unique_ptr<SinkOutput> output_;
  EventHub& hub_;
  prometheus::Counter& written_;
  prometheus::Counter& failed_;
  prometheus::Counter& lost_;
  absl::Notification stopping_;
  // Set up by the constructor (subscribed before it returns), then the thread's alone.
  palisade::v1::WatchRequest filter_;
  std::unique_ptr<QueueSubscriber> subscriber_;
  uint64_t subscribed_at_ = 0;
  std::thread thread_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_EVENTS_SINKS_H_
