#include "services/inputs/syslog_receiver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace palisade {
namespace {

constexpr int kPollMs = 100;  // how often blocked threads look at `stopping_`

// Binds "host:port" / "[v6]:port"; returns the fd and the bound port.
absl::StatusOr<std::pair<int, int>> Bind(const std::string& where, const std::string& address,
                                         int type) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(where, "\"", address, "\" is not host:port"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  sockaddr_storage storage{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    len = sizeof(*v4);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    len = sizeof(*v6);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "\"", address, "\": the host must be an address"));
  }
  const int fd = ::socket(storage.ss_family, type | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat(where, std::strerror(errno)));
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&storage), len) != 0 ||
      (type == SOCK_STREAM && ::listen(fd, 64) != 0)) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    return absl::UnavailableError(absl::StrCat(where, "cannot listen on ", address, ": ", why));
  }
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof(bound);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len);
  const int bound_port = bound.ss_family == AF_INET
                             ? ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port)
                             : ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  return std::make_pair(fd, bound_port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<SyslogReceiver>> SyslogReceiver::Start(
    const palisade::v1::SyslogInput& config, SyslogReceiverOptions options, BatchSink sink,
    prometheus::Registry& registry) {
  const std::string where = absl::StrCat("inputs.syslog \"", config.name(), "\": ");
  if (!ValidInputName(config.name())) {
    return absl::InvalidArgumentError(where + "name must match [a-z0-9_-]{1,64}");
  }
  if (config.udp_listen().empty() && config.tcp_listen().empty()) {
    return absl::InvalidArgumentError(where + "set udp_listen, tcp_listen or both");
  }
  std::unique_ptr<SyslogReceiver> r(new SyslogReceiver(config, std::move(options), std::move(sink)));
  if (r->config_.source().empty()) r->config_.set_source(config.name());
  if (r->config_.max_connections() == 0) r->config_.set_max_connections(64);
  if (r->config_.max_frame_bytes() == 0) r->config_.set_max_frame_bytes(64 * 1024);
  if (r->options_.batch_lines == 0) r->options_.batch_lines = 1000;
  const prometheus::Labels input = {{"input", config.name()}};
  auto& frames = prometheus::BuildCounter()
                     .Name("palisade_syslog_frames_total")
                     .Help("Syslog frames received, by transport.")
                     .Register(registry);
  r->udp_frames_ = &frames.Add({{"input", config.name()}, {"transport", "udp"}});
  r->tcp_frames_ = &frames.Add({{"input", config.name()}, {"transport", "tcp"}});
  r->malformed_ = &prometheus::BuildCounter()
                       .Name("palisade_syslog_malformed_frames_total")
                       .Help("Syslog frames skipped: too long, a bad length, no <PRI>.")
                       .Register(registry)
                       .Add(input);
  r->refused_ = &prometheus::BuildCounter()
                     .Name("palisade_syslog_refused_connections_total")
                     .Help("TCP connections closed at once: max_connections were open.")
                     .Register(registry)
                     .Add(input);
  r->sink_errors_ = &prometheus::BuildCounter()
                         .Name("palisade_syslog_batch_errors_total")
                         .Help("Batches of syslog frames the pipeline refused (dropped).")
                         .Register(registry)
                         .Add(input);
  r->open_ = &prometheus::BuildGauge()
                  .Name("palisade_syslog_connections")
                  .Help("Open TCP connections to a syslog receiver.")
                  .Register(registry)
                  .Add(input);
  if (!config.udp_listen().empty()) {
    absl::StatusOr<std::pair<int, int>> b = Bind(where, config.udp_listen(), SOCK_DGRAM);
    if (!b.ok()) return b.status();
    std::tie(r->udp_fd_, r->udp_port_) = *b;
  }
  if (!config.tcp_listen().empty()) {
    absl::StatusOr<std::pair<int, int>> b = Bind(where, config.tcp_listen(), SOCK_STREAM);
    if (!b.ok()) {
      if (r->udp_fd_ >= 0) ::close(r->udp_fd_);
      r->udp_fd_ = -1;
      return b.status();
    }
    std::tie(r->tcp_fd_, r->tcp_port_) = *b;
  }
  SyslogReceiver* self = r.get();
  if (r->udp_fd_ >= 0) r->threads_.emplace_back([self] { self->UdpLoop(); });
  if (r->tcp_fd_ >= 0) r->threads_.emplace_back([self] { self->AcceptLoop(); });
  r->threads_.emplace_back([self] {
    while (!self->stopping_.load()) {
      absl::SleepFor(self->options_.flush_interval);
      self->Flush();
    }
  });
  return r;
}

SyslogReceiver::~SyslogReceiver() { Stop(); }

void SyslogReceiver::Stop() {
  if (stopping_.exchange(true)) return;
  for (std::thread& t : threads_) t.join();
  {
    absl::MutexLock lock(&conn_mu_);
    for (ConnThread& c : conn_threads_) c.thread.join();
    conn_threads_.clear();
  }
  if (udp_fd_ >= 0) ::close(udp_fd_);
  if (tcp_fd_ >= 0) ::close(tcp_fd_);
  Flush();
}

void SyslogReceiver::Add(std::string frame) {
  while (!frame.empty() && (frame.back() == '\n' || frame.back() == '\r' || frame.back() == '\0')) {
    frame.pop_back();
  }
  if (frame.empty() || frame[0] != '<') {
    malformed_->Increment();
    return;
  }
  // "<PRI>1 " opens an RFC 5424 message; anything else after <PRI> is RFC 3164.
  const size_t close = frame.find('>');
  const bool v5424 = close != std::string::npos && close + 2 < frame.size() &&
                     frame[close + 1] == '1' && frame[close + 2] == ' ';
  bool full = false;
  {
    absl::MutexLock lock(&batch_mu_);
    palisade::v1::LogBatch& batch = v5424 ? rfc5424_ : rfc3164_;
    batch.add_records()->set_line(std::move(frame));
    full = static_cast<uint32_t>(batch.records_size()) >= options_.batch_lines;
  }
  if (full) Flush();
}

void SyslogReceiver::Flush() {
  absl::MutexLock sink_lock(&sink_mu_);
  palisade::v1::LogBatch batches[2];
  {
    absl::MutexLock lock(&batch_mu_);
    batches[0].Swap(&rfc3164_);
    batches[1].Swap(&rfc5424_);
  }
  batches[0].set_format(palisade::v1::LOG_FORMAT_SYSLOG);
  batches[1].set_format(palisade::v1::LOG_FORMAT_SYSLOG5424);
  for (palisade::v1::LogBatch& batch : batches) {
    if (batch.records_size() == 0) continue;
    batch.set_source(config_.source());
    absl::Status s = sink_(batch);
    if (!s.ok()) {
      sink_errors_->Increment();
      if (options_.log) {
        options_.log(absl::StrCat("input ", config_.name(), ": batch refused: ", s.message()));
      }
    }
  }
}

void SyslogReceiver::UdpLoop() {
  std::string buf(65536, '\0');
  while (!stopping_.load()) {
    pollfd p{udp_fd_, POLLIN, 0};
    if (::poll(&p, 1, kPollMs) <= 0) continue;
    const ssize_t n = ::recv(udp_fd_, buf.data(), buf.size(), 0);
    if (n <= 0) continue;
    udp_frames_->Increment();
    if (static_cast<size_t>(n) > config_.max_frame_bytes()) {
      malformed_->Increment();
      continue;
    }
    Add(std::string(buf.data(), static_cast<size_t>(n)));
  }
}

void SyslogReceiver::AcceptLoop() {
  while (!stopping_.load()) {
    pollfd p{tcp_fd_, POLLIN, 0};
    if (::poll(&p, 1, kPollMs) <= 0) continue;
    const int fd = ::accept4(tcp_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    if (connections_.load() >= static_cast<int>(config_.max_connections())) {
      ::close(fd);
      refused_->Increment();
      continue;
    }
    connections_.fetch_add(1);
    open_->Increment();
    absl::MutexLock lock(&conn_mu_);
    for (auto it = conn_threads_.begin(); it != conn_threads_.end();) {
      if (it->done->load()) {
        it->thread.join();
        it = conn_threads_.erase(it);
      } else {
        ++it;
      }
    }
    auto done = std::make_shared<std::atomic<bool>>(false);
    conn_threads_.push_back({std::thread([this, fd, done] {
                               Connection(fd);
                               done->store(true);
                             }),
                             done});
  }
}

void SyslogReceiver::Deframe(std::string* stream, size_t max_frame_bytes, DeframeState* state,
                             std::vector<std::string>* frames, uint64_t* malformed) {
  size_t at = 0;
  while (at < stream->size()) {
    if (state->skip > 0) {  // the rest of an over-long octet-counted frame
      const size_t n = std::min(state->skip, stream->size() - at);
      state->skip -= n;
      at += n;
      continue;
    }
    if (state->dropping_line) {  // the rest of an over-long newline-framed frame
      const size_t nl = stream->find('\n', at);
      if (nl == std::string::npos) {
        at = stream->size();
        break;
      }
      state->dropping_line = false;
      at = nl + 1;
      continue;
    }
    const char c = (*stream)[at];
    if (c == '\n' || c == '\r' || c == ' ') {  // stray separators between frames
      ++at;
      continue;
    }
    if (c >= '1' && c <= '9') {
      // Octet counting: MSG-LEN SP SYSLOG-MSG.
      size_t sp = at;
      while (sp < stream->size() && sp - at < 10 && (*stream)[sp] >= '0' && (*stream)[sp] <= '9') {
        ++sp;
      }
      if (sp >= stream->size()) break;  // the length is not all here yet
      size_t len = 0;
      if ((*stream)[sp] != ' ' || !absl::SimpleAtoi(stream->substr(at, sp - at), &len)) {
        ++*malformed;  // not a length: drop up to the next newline
        state->dropping_line = true;
        at = sp;
        continue;
      }
      if (len > max_frame_bytes) {
        ++*malformed;
        state->skip = len;
        at = sp + 1;
        continue;
      }
      if (stream->size() - (sp + 1) < len) break;  // wait for the rest
      frames->emplace_back(*stream, sp + 1, len);
      at = sp + 1 + len;
      continue;
    }
    // Newline framing.
    const size_t nl = stream->find('\n', at);
    if (nl == std::string::npos) {
      if (stream->size() - at > max_frame_bytes) {  // too long, no end in sight: drop it
        ++*malformed;
        state->dropping_line = true;
        at = stream->size();
      }
      break;
    }
    if (nl - at > max_frame_bytes) {
      ++*malformed;
    } else {
      frames->emplace_back(*stream, at, nl - at);
    }
    at = nl + 1;
  }
  stream->erase(0, at);
}

void SyslogReceiver::Connection(int fd) {
  std::string stream;
  std::string buf(64 * 1024, '\0');
  DeframeState state;
  while (!stopping_.load()) {
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, kPollMs);
    if (ready == 0) continue;
    if (ready < 0) break;
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n <= 0) break;  // closed (or an error): the connection ends, the receiver goes on
    stream.append(buf.data(), static_cast<size_t>(n));
    std::vector<std::string> frames;
    uint64_t malformed = 0;
    Deframe(&stream, config_.max_frame_bytes(), &state, &frames, &malformed);
    if (malformed > 0) malformed_->Increment(static_cast<double>(malformed));
    tcp_frames_->Increment(static_cast<double>(frames.size()));
    for (std::string& f : frames) Add(std::move(f));
  }
  // A last newline-framed message without its newline, as some senders end a connection.
  if (!stream.empty() && state.skip == 0 && !state.dropping_line &&
      stream.size() <= config_.max_frame_bytes() && !(stream[0] >= '1' && stream[0] <= '9')) {
    tcp_frames_->Increment();
    Add(std::move(stream));
  }
  ::close(fd);
  connections_.fetch_sub(1);
  open_->Decrement();
}

}  // namespace palisade
