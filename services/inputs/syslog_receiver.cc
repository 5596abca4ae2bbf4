#include "services/inputs/syslog_receiver.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <optional>

#include "absl/hash/hash.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "services/common/ip.h"

namespace palisade {
namespace {

constexpr int kPollMs = 100;  // how often blocked threads look at `stopping_`
constexpr uint32_t kDefaultMaxConnections = 64;
// SyslogInput.max_host_streams_per_peer at most: the host streams of a transport in all, by
// default (SyslogReceiverOptions::max_host_streams). config.cc refuses more too.
constexpr uint32_t kMaxHostStreamsPerPeer = 8192;
// Enough for a relay, or an rsyslog with a few forwarding actions, on one host.
constexpr uint32_t kDefaultMaxConnectionsPerAddress = 8;

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

// "1.2.3.4:5" / "[::1]:5" of a socket's peer or (for UDP) a sender; `with_port` false: the
// address alone (a UDP sender's identity: one host may use any number of source ports).
std::string Address(const sockaddr_storage& a, bool with_port) {
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (a.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a);
    inet_ntop(AF_INET, &v4->sin_addr, host, sizeof(host));
    port = ntohs(v4->sin_port);
    return with_port ? absl::StrCat(host, ":", port) : host;
  }
  if (a.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&a);
    inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof(host));
    port = ntohs(v6->sin6_port);
    return with_port ? absl::StrCat("[", host, "]:", port) : host;
  }
  return host;
}

// A sender's address without the port, which PeerKey makes what it counts as.
std::string SourceAddress(const sockaddr_storage& a) { return Address(a, /*with_port=*/false); }

// "address:port" of a socket's peer, for logs: as the socket gives it, so an IPv4 sender on a
// dual-stack listener shows as [::ffff:a.b.c.d]:port (PeerSource and PeerKey, not this, read
// such an address as its IPv4 one).
std::string PeerOf(int fd) {
  sockaddr_storage a{};
  socklen_t len = sizeof(a);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) return "?";
  return Address(a, /*with_port=*/true);
}

// OpenSSL's reason for the last error on this thread: a fixed text ("certificate verify
// failed", "wrong version number"), never key material.
std::string TlsReason() {
  const unsigned long e = ERR_peek_last_error();
  const char* reason = e == 0 ? nullptr : ERR_reason_error_string(e);
  ERR_clear_error();
  return reason != nullptr ? reason : "unknown";
}

// Reads the TLS files once, at start. Errors name the field and the file, never its content.
absl::StatusOr<SSL_CTX*> TlsContext(const std::string& where,
                                    const palisade::v1::SyslogInput& config) {
  for (const auto& [field, file] :
       {std::pair<const char*, const std::string*>{"tls_cert_file", &config.tls_cert_file()},
        {"tls_key_file", &config.tls_key_file()},
        {"tls_client_ca_file", &config.tls_client_ca_file()}}) {
    if (file->empty()) continue;
    const int fd = ::open(file->c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(where, "cannot read ", field, " \"", *file, "\": ", std::strerror(errno)));
    }
    ::close(fd);
  }
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) return absl::InternalError(where + "cannot make a TLS context");
  auto fail = [&](const char* field, const std::string& file, const char* what) {
    const std::string reason = TlsReason();
    SSL_CTX_free(ctx);
    return absl::FailedPreconditionError(
        absl::StrCat(where, field, " \"", file, "\" ", what, " (", reason, ")"));
  };
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_num_tickets(ctx, 0);  // senders keep one long connection; no resumption state
  if (SSL_CTX_use_certificate_chain_file(ctx, config.tls_cert_file().c_str()) != 1) {
    return fail("tls_cert_file", config.tls_cert_file(), "does not load as a PEM certificate");
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, config.tls_key_file().c_str(), SSL_FILETYPE_PEM) != 1) {
    return fail("tls_key_file", config.tls_key_file(), "does not load as a PEM private key");
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return fail("tls_key_file", config.tls_key_file(), "does not match tls_cert_file");
  }
  if (!config.tls_client_ca_file().empty()) {
    if (SSL_CTX_load_verify_locations(ctx, config.tls_client_ca_file().c_str(), nullptr) != 1) {
      return fail("tls_client_ca_file", config.tls_client_ca_file(),
                  "does not load as PEM certificates");
    }
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(config.tls_client_ca_file().c_str());
    if (names != nullptr) SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  return ctx;
}

// One connection's bytes in: plain TCP, or TLS through memory BIOs. The socket is read and
// written here (send with MSG_NOSIGNAL: a peer gone mid-handshake must not SIGPIPE the daemon,
// and OpenSSL's socket BIO would write()), and only when the connection wants more bytes, so
// the rate limit's backpressure reaches the sender.
class Stream {
 public:
  enum Result { kData, kWait, kClosed };

  Stream(int fd, SSL_CTX* tls) : fd_(fd) {
    if (tls == nullptr) return;
    ssl_ = SSL_new(tls);
    BIO* in = BIO_new(BIO_s_mem());
    BIO* out = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl_, in, out);  // the SSL owns both
    in_ = in;
    out_ = out;
    SSL_set_accept_state(ssl_);
  }
  ~Stream() {
    if (ssl_ != nullptr) SSL_free(ssl_);
  }
  bool tls() const { return ssl_ != nullptr; }
  // Bytes OpenSSL holds, read from the socket and not yet given out: records not decrypted yet
  // (on the wire's count) and the rest of one decrypted.
  size_t Buffered() const {
    if (ssl_ == nullptr) return 0;
    return BIO_ctrl_pending(in_) + static_cast<size_t>(std::max(SSL_pending(ssl_), 0));
  }

  // Runs the TLS handshake until `deadline`, or while `go` says so. "" when done, else why not.
  std::string Handshake(Clock& clock, absl::Time deadline, const std::atomic<bool>& stopping) {
    ERR_clear_error();
    while (true) {
      const int r = SSL_do_handshake(ssl_);
      Flush();
      if (r == 1) return "";
      const int e = SSL_get_error(ssl_, r);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) return TlsReason();
      if (stopping.load()) return "the receiver is stopping";
      if (clock.TimeNow() >= deadline) return "timed out";
      if (FromSocket() == kClosed) return "the peer closed the connection";
    }
  }

  // Up to `n` bytes of the stream into `buf`; kWait when none came within `wait_ms` (a poll
  // interval; 0: what is there now).
  Result Read(char* buf, size_t n, size_t* got, int wait_ms = 100) {
    if (ssl_ == nullptr) {
      pollfd p{fd_, POLLIN, 0};
      const int ready = ::poll(&p, 1, wait_ms);
      if (ready == 0) return kWait;
      if (ready < 0 && errno == EINTR) return kWait;
      if (ready < 0) return kClosed;
      const ssize_t r = ::recv(fd_, buf, n, 0);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) return kWait;
      if (r <= 0) return kClosed;  // closed (or an error): the connection ends
      *got = static_cast<size_t>(r);
      return kData;
    }
    ERR_clear_error();
    const int r = SSL_read(ssl_, buf, static_cast<int>(n));
    Flush();
    if (r > 0) {
      *got = static_cast<size_t>(r);
      return kData;
    }
    const int e = SSL_get_error(ssl_, r);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
      ERR_clear_error();
      return kClosed;  // close_notify, a bad record: the connection ends
    }
    // Bytes for TLS, not yet for the stream: the next Read decrypts them.
    return FromSocket(wait_ms) == kClosed ? kClosed : kWait;
  }

 private:
  // Moves what the socket has into the TLS input (waiting `wait_ms` at most).
  Result FromSocket(int wait_ms = 100) {
    pollfd p{fd_, POLLIN, 0};
    const int ready = ::poll(&p, 1, wait_ms);
    if (ready <= 0) return ready < 0 && errno != EINTR ? kClosed : kWait;
    char buf[16 * 1024 + 512];  // a TLS record at most
    const ssize_t r = ::recv(fd_, buf, sizeof(buf), 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return kWait;
    if (r <= 0) return kClosed;
    BIO_write(in_, buf, static_cast<int>(r));
    return kData;
  }
  // Sends what TLS wrote (handshake messages, alerts): small, so a short wait at most.
  void Flush() {
    char buf[4096];
    int n;
    while ((n = BIO_read(out_, buf, sizeof(buf))) > 0) {
      int off = 0;
      for (int tries = 0; off < n && tries < 50; ++tries) {
        const ssize_t w = ::send(fd_, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
        if (w > 0) {
          off += static_cast<int>(w);
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
          pollfd p{fd_, POLLOUT, 0};
          ::poll(&p, 1, 100);
        } else {
          return;  // the peer is gone; the next read says so
        }
      }
    }
  }

  int fd_;
  SSL* ssl_ = nullptr;
  BIO* in_ = nullptr;
  BIO* out_ = nullptr;
};

}  // namespace

void TokenBucket::Refill(absl::Time now) {
  if (now > last_) {
    tokens_ = std::min(burst_, tokens_ + rate_ * absl::ToDoubleSeconds(now - last_));
    last_ = now;
  }
}

bool TokenBucket::TryTake(absl::Time now) {
  Refill(now);
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

bool TokenBucket::Full(absl::Time now) {
  Refill(now);
  return tokens_ >= burst_;
}

absl::Duration TokenBucket::UntilNext(absl::Time now) {
  Refill(now);
  return tokens_ >= 1 ? absl::ZeroDuration() : absl::Seconds((1 - tokens_) / rate_);
}

absl::StatusOr<std::unique_ptr<SyslogReceiver>> SyslogReceiver::Start(
    const palisade::v1::SyslogInput& config, SyslogReceiverOptions options, BatchSink sink,
    prometheus::Registry& registry) {
  const std::string where = absl::StrCat("inputs.syslog \"", config.name(), "\": ");
  if (!ValidInputName(config.name())) {
    return absl::InvalidArgumentError(where + "name must match [a-z0-9_-]{1,64}");
  }
  if (config.udp_listen().empty() && config.tcp_listen().empty() && config.tls_listen().empty()) {
    return absl::InvalidArgumentError(where + "set udp_listen, tcp_listen, tls_listen or more");
  }
  const bool tls_files = !config.tls_cert_file().empty() || !config.tls_key_file().empty() ||
                         !config.tls_client_ca_file().empty();
  if (config.tls_listen().empty() && tls_files) {
    return absl::InvalidArgumentError(where + "tls_*_file set without tls_listen");
  }
  if (!config.tls_listen().empty() &&
      (config.tls_cert_file().empty() || config.tls_key_file().empty())) {
    return absl::InvalidArgumentError(where + "tls_listen needs tls_cert_file and tls_key_file");
  }
  if (config.max_burst_lines() > 0 && config.max_lines_per_second() == 0) {
    return absl::InvalidArgumentError(where + "max_burst_lines needs max_lines_per_second");
  }
  if (config.has_idle_timeout()) {  // the config's, checked at load (1s..24h), comes first
    options.idle_timeout = absl::Seconds(config.idle_timeout().seconds()) +
                           absl::Nanoseconds(config.idle_timeout().nanos());
  }
  if (options.idle_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(where + "idle_timeout must be positive");
  }
  const uint32_t max_connections =
      config.max_connections() > 0 ? config.max_connections() : kDefaultMaxConnections;
  if (config.max_connections_per_address() > max_connections) {
    return absl::InvalidArgumentError(absl::StrCat(where, "max_connections_per_address ",
                                                   config.max_connections_per_address(),
                                                   " is over max_connections ", max_connections));
  }
  if (config.per_address_ipv6_prefix() != 0 &&
      (config.per_address_ipv6_prefix() < 48 || config.per_address_ipv6_prefix() > 128)) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, "per_address_ipv6_prefix must be 48..128, not ", config.per_address_ipv6_prefix()));
  }
  if (config.max_host_streams_per_peer() > kMaxHostStreamsPerPeer) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "max_host_streams_per_peer must be at most ", kMaxHostStreamsPerPeer,
                     ", not ", config.max_host_streams_per_peer()));
  }
  if (config.max_host_streams_per_peer() > 0) {
    options.max_host_streams_per_peer = config.max_host_streams_per_peer();
  }
  // Every stream named here is one the pipeline may hold against its max_sender_streams: UDP
  // senders and hosts, TCP/TLS hosts, and TCP/TLS peers (max_connections at once: a floor, as
  // peers that closed keep theirs until the pipeline frees it). Past it new senders' windows
  // share their source's stream; said once here, as the bounds are the operator's to choose.
  const bool udp = !config.udp_listen().empty();
  const bool tcp = !config.tcp_listen().empty() || !config.tls_listen().empty();
  const size_t streams = (udp ? options.max_udp_senders + options.max_host_streams : 0) +
                         (tcp ? options.max_host_streams + max_connections : 0);
  if (streams > options.pipeline_sender_streams && options.log) {
    options.log(absl::StrCat(
        where, "max_udp_senders, max_host_streams (per transport) and max_connections allow ",
        streams, " pipeline streams, over the pipeline's max_sender_streams ",
        options.pipeline_sender_streams,
        " (shared with every receiver): past it new senders' lines share their source's stream "
        "(palisade_ingest_sender_streams_folded_total)"));
  }
  std::unique_ptr<SyslogReceiver> r(
      new SyslogReceiver(config, std::move(options), std::move(sink)));
  if (r->config_.source().empty()) r->config_.set_source(config.name());
  // Senders in zones of their own: each entry's frames go to the source ZonedSource names,
  // which the pipeline reads in the entry's zone (ApplyToPipeline maps it from this config).
  // One zone per HOSTNAME and per range (by its canonical form: ::ffff:10.1.0.0/112 is
  // 10.1.0.0/16): of two equal ranges the sort keeps the first, so a second zone would be lost.
  std::map<std::string, std::string> range_sources;  // Cidr::ToString -> source
  for (int i = 0; i < config.sender_time_zones_size(); ++i) {
    const palisade::v1::SyslogSenderZone& z = config.sender_time_zones(i);
    const std::string entry = absl::StrCat(where, "sender_time_zones[", i, "]: ");
    absl::TimeZone zone;
    if (z.time_zone().empty() || !absl::LoadTimeZone(z.time_zone(), &zone)) {
      return absl::InvalidArgumentError(
          z.time_zone().empty()
              ? entry + "time_zone is required"
              : absl::StrCat(entry, "unknown time zone \"", z.time_zone(), "\""));
    }
    if (z.hostname().empty() == z.peer_cidr().empty()) {
      return absl::InvalidArgumentError(entry + "set hostname or peer_cidr (one of them)");
    }
    std::string source = ZonedSource(r->config_.source(), z.time_zone());
    if (!z.hostname().empty()) {
      const std::string host = absl::AsciiStrToLower(z.hostname());
      auto [it, added] = r->host_sources_.try_emplace(host, source);
      if (!added && it->second != source) {
        return absl::InvalidArgumentError(
            absl::StrCat(entry, "hostname \"", z.hostname(), "\" has another zone already"));
      }
      continue;
    }
    absl::StatusOr<Cidr> range = Cidr::Parse(z.peer_cidr());
    if (!range.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(entry, "peer_cidr: ", range.status().message()));
    }
    auto [it, added] = range_sources.try_emplace(range->ToString(), source);
    if (!added) {
      if (it->second == source) continue;  // a repeat: the same range in the same zone
      return absl::InvalidArgumentError(absl::StrCat(
          entry, "peer_cidr \"", z.peer_cidr(), "\"",
          it->first == z.peer_cidr() ? "" : absl::StrCat(" (", it->first, ")"),
          " has another zone already"));
    }
    r->peer_sources_.emplace_back(*range, std::move(source));
  }
  // The most specific range first: the first that covers a sender is its entry.
  std::stable_sort(r->peer_sources_.begin(), r->peer_sources_.end(),
                   [](const auto& a, const auto& b) {
                     return a.first.prefix_length() > b.first.prefix_length();
                   });
  r->clock_ = r->options_.clock != nullptr ? r->options_.clock : &RealClock::Get();
  if (r->config_.max_lines_per_second() > 0 && r->config_.max_burst_lines() == 0) {
    r->config_.set_max_burst_lines(r->config_.max_lines_per_second());
  }
  r->config_.set_max_connections(max_connections);
  if (r->config_.max_connections_per_address() == 0) {
    r->config_.set_max_connections_per_address(
        std::min(kDefaultMaxConnectionsPerAddress, max_connections));
  }
  if (r->config_.per_address_ipv6_prefix() == 0) r->config_.set_per_address_ipv6_prefix(64);
  if (r->config_.max_frame_bytes() == 0) r->config_.set_max_frame_bytes(64 * 1024);
  if (r->options_.batch_lines == 0) r->options_.batch_lines = 1000;
  const prometheus::Labels input = {{"input", config.name()}};
  auto& frames = prometheus::BuildCounter()
                     .Name("palisade_syslog_frames_total")
                     .Help("Syslog frames received, by transport.")
                     .Register(registry);
  r->udp_frames_ = &frames.Add({{"input", config.name()}, {"transport", "udp"}});
  r->tcp_frames_ = &frames.Add({{"input", config.name()}, {"transport", "tcp"}});
  r->tls_frames_ = &frames.Add({{"input", config.name()}, {"transport", "tls"}});
  r->tls_handshake_failures_ =
      &prometheus::BuildCounter()
           .Name("palisade_syslog_tls_handshake_failures_total")
           .Help(
               "TLS connections that did not complete a handshake (no or a bad client "
               "certificate, not TLS, too slow); each is logged with the peer's address.")
           .Register(registry)
           .Add(input);
  r->throttled_lines_ = &prometheus::BuildCounter()
                             .Name("palisade_syslog_throttled_lines_total")
                             .Help(
                                 "TCP/TLS lines held back by max_lines_per_second (the "
                                 "connection is not read meanwhile; none is lost).")
                             .Register(registry)
                             .Add(input);
  r->unread_at_stop_ = &prometheus::BuildCounter()
                            .Name("palisade_syslog_unread_bytes_at_stop_total")
                            .Help("Bytes a TCP/TLS connection's socket still held when the "
                                  "receiver stopped, past what it reads then (lost: the close "
                                  "resets them away).")
                            .Register(registry)
                            .Add(input);
  r->udp_rate_drops_ = &prometheus::BuildCounter()
                            .Name("palisade_syslog_rate_limited_drops_total")
                            .Help(
                                "UDP datagrams dropped: their sender was over "
                                "max_lines_per_second.")
                            .Register(registry)
                            .Add(input);
  r->udp_kernel_drops_total_ =
      &prometheus::BuildCounter()
           .Name("palisade_syslog_udp_kernel_drops_total")
           .Help(
               "UDP datagrams the kernel dropped before the receiver read them: the socket's "
               "receive buffer was full (the pipeline was slow, or a burst outran it) or the "
               "kernel was short of memory.")
           .Register(registry)
           .Add(input);
  r->udp_streams_folded_ =
      &prometheus::BuildCounter()
           .Name("palisade_syslog_sender_streams_folded_total")
           .Help(
               "UDP datagrams sent on in their source's stream, not their sender's "
               "(LogBatch.stream): a new sender past max_udp_senders (the windows of its lines "
               "age by the source's others' times).")
           .Register(registry)
           .Add(input);
  r->host_streams_folded_ =
      &prometheus::BuildCounter()
           .Name("palisade_syslog_host_streams_folded_total")
           .Help(
               "Frames sent on in their sender's stream, not their HOSTNAME's (LogBatch.stream): "
               "a new host past max_host_streams_per_peer for its sender (a relay, or a client "
               "naming a new host per line), or past max_host_streams in all (the windows of its "
               "lines age by the sender's other hosts' times).")
           .Register(registry)
           .Add(input);
  r->malformed_ = &prometheus::BuildCounter()
                       .Name("palisade_syslog_malformed_frames_total")
                       .Help("Syslog frames skipped: too long, a bad length, no <PRI>.")
                       .Register(registry)
                       .Add(input);
  r->refused_ = &prometheus::BuildCounter()
                     .Name("palisade_syslog_refused_connections_total")
                     .Help(
                         "TCP/TLS connections closed at once: max_connections were open (those "
                         "over max_connections_per_address are counted in "
                         "palisade_syslog_per_address_refused_connections_total).")
                     .Register(registry)
                     .Add(input);
  r->per_address_refused_ =
      &prometheus::BuildCounter()
           .Name("palisade_syslog_per_address_refused_connections_total")
           .Help(
               "TCP/TLS connections closed at once: their address already had "
               "max_connections_per_address open (one host holding slots, as a byte drip does).")
           .Register(registry)
           .Add(input);
  r->accept_errors_ = &prometheus::BuildCounter()
                           .Name("palisade_syslog_accept_errors_total")
                           .Help(
                               "TCP/TLS accepts that failed; out of descriptors or memory, the "
                               "listener waits 100 ms before it tries again.")
                           .Register(registry)
                           .Add(input);
  r->idle_closed_ = &prometheus::BuildCounter()
                         .Name("palisade_syslog_idle_closed_connections_total")
                         .Help("TCP/TLS connections closed: nothing came for idle_timeout.")
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
    r->SetUpUdpSocket();
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
  if (!config.tls_listen().empty()) {
    // The files first: a key that cannot be read is the error to see, not a port.
    absl::StatusOr<SSL_CTX*> ctx = TlsContext(where, config);
    absl::StatusOr<std::pair<int, int>> b =
        ctx.ok() ? Bind(where, config.tls_listen(), SOCK_STREAM) : ctx.status();
    if (!b.ok()) {
      if (ctx.ok()) SSL_CTX_free(*ctx);
      for (int* fd : {&r->udp_fd_, &r->tcp_fd_}) {
        if (*fd >= 0) ::close(*fd);
        *fd = -1;
      }
      return b.status();
    }
    r->tls_ctx_ = *ctx;
    std::tie(r->tls_fd_, r->tls_port_) = *b;
  }
  SyslogReceiver* self = r.get();
  if (r->udp_fd_ >= 0) r->threads_.emplace_back([self] { self->UdpLoop(); });
  if (r->tcp_fd_ >= 0) {
    r->threads_.emplace_back([self] { self->AcceptLoop(self->tcp_fd_, /*tls=*/false); });
  }
  if (r->tls_fd_ >= 0) {
    r->threads_.emplace_back([self] { self->AcceptLoop(self->tls_fd_, /*tls=*/true); });
  }
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
  if (udp_fd_ >= 0) {
    CountUdpKernelDrops(UdpDropsNow(udp_fd_));  // those since the last datagram read
    ::close(udp_fd_);
  }
  if (tcp_fd_ >= 0) ::close(tcp_fd_);
  if (tls_fd_ >= 0) ::close(tls_fd_);
  if (tls_ctx_ != nullptr) SSL_CTX_free(tls_ctx_);
  tls_ctx_ = nullptr;
  Flush();
}

void SyslogReceiver::Add(std::string frame, const std::string& peer_source,
                         const std::string& sender, bool udp) {
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
  // A relay's hosts (rsyslog forwarding many over one connection) are streams of their own, so
  // one whose times read hours behind the others' keeps its windows, as a sender of its own
  // does; the sender's stream when there is none.
  std::string host =
      !sender.empty() || !host_sources_.empty() ? HostOf(frame, v5424) : std::string();
  const std::string& source = SourceOf(host, peer_source);
  const absl::Time now = sender.empty() || host.empty() ? absl::InfinitePast() : clock_->TimeNow();
  bool full = false;
  {
    absl::MutexLock lock(&batch_mu_);
    if (sender.empty() || host.empty() ||
        !HostPlace(udp ? udp_hosts_ : tcp_hosts_, sender, host, now)) {
      host.clear();
    }
    Pending& pending = pending_[source][sender][host];
    palisade::v1::LogBatch& batch = v5424 ? pending.rfc5424 : pending.rfc3164;
    batch.add_records()->set_line(std::move(frame));
    // Many senders' small batches are bounded together too.
    ++pending_frames_;
    full = static_cast<uint32_t>(batch.records_size()) >= options_.batch_lines ||
           pending_frames_ >= 2 * static_cast<size_t>(options_.batch_lines);
  }
  if (full) Flush();
}

void SyslogReceiver::Flush() {
  absl::MutexLock sink_lock(&sink_mu_);
  std::map<std::string, PendingBySender> pending;
  {
    absl::MutexLock lock(&batch_mu_);
    pending.swap(pending_);
    pending_frames_ = 0;
  }
  for (auto& [source, by_sender] : pending) {
    for (auto& [sender, by_host] : by_sender) {
      for (auto& [host, p] : by_host) {
        p.rfc3164.set_format(palisade::v1::LOG_FORMAT_SYSLOG);
        p.rfc5424.set_format(palisade::v1::LOG_FORMAT_SYSLOG5424);
        // A space parts them: a PeerKey (an address or a range) has none, nor a HOSTNAME.
        const std::string stream = host.empty() ? sender : absl::StrCat(sender, " ", host);
        for (palisade::v1::LogBatch* batch : {&p.rfc3164, &p.rfc5424}) {
          if (batch->records_size() == 0) continue;
          batch->set_source(source);
          batch->set_stream(stream);
          absl::Status s = sink_(*batch);
          if (!s.ok()) {
            sink_errors_->Increment();
            if (options_.log) {
              options_.log(
                  absl::StrCat("input ", config_.name(), ": batch refused: ", s.message()));
            }
          }
        }
      }
    }
  }
}

void SyslogReceiver::SetUpUdpSocket() {
  const int want = options_.udp_receive_buffer_bytes;
  if (want > 0 && ::setsockopt(udp_fd_, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof(want)) != 0 &&
      ::setsockopt(udp_fd_, SOL_SOCKET, SO_RCVBUF, &want, sizeof(want)) == 0) {
    // Unprivileged: SO_RCVBUF is silently capped at net.core.rmem_max (Linux reports double
    // what it grants, the double being its bookkeeping).
    int got = 0;
    socklen_t len = sizeof(got);
    if (::getsockopt(udp_fd_, SOL_SOCKET, SO_RCVBUF, &got, &len) == 0 && got / 2 < want &&
        options_.log) {
      options_.log(absl::StrCat("input ", config_.name(), ": the UDP receive buffer is ", got / 2,
                                " bytes, not udp_receive_buffer_bytes ", want,
                                " (raise net.core.rmem_max, or grant CAP_NET_ADMIN)"));
    }
  }
  // Each datagram read then says how many the socket has dropped so far (SO_RXQ_OVFL).
  const int one = 1;
  ::setsockopt(udp_fd_, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof(one));
}

uint32_t SyslogReceiver::UdpDropsNow(int fd) {
  uint32_t info[SK_MEMINFO_VARS] = {};
  socklen_t len = sizeof(info);
  if (::getsockopt(fd, SOL_SOCKET, SO_MEMINFO, info, &len) != 0 ||
      len <= SK_MEMINFO_DROPS * sizeof(uint32_t)) {
    return udp_drops_seen_;  // not known: nothing new counted
  }
  return info[SK_MEMINFO_DROPS];
}

void SyslogReceiver::CountUdpKernelDrops(uint32_t seen) {
  // The kernel's count is 32 bits and wraps; a datagram queued before an earlier reading
  // carries an older (smaller) one, which adds nothing.
  const uint32_t more = seen - udp_drops_seen_;
  if (more == 0 || more >= (1u << 31)) return;
  udp_drops_seen_ = seen;
  udp_kernel_drops_.fetch_add(more);
  udp_kernel_drops_total_->Increment(more);
}

void SyslogReceiver::UdpLoop() {
  std::string buf(65536, '\0');
  while (!stopping_.load()) {
    pollfd p{udp_fd_, POLLIN, 0};
    if (::poll(&p, 1, kPollMs) <= 0) {
      // Idle: drops after the last datagram read, which no later datagram has reported yet.
      CountUdpKernelDrops(UdpDropsNow(udp_fd_));
      continue;
    }
    sockaddr_storage from{};
    iovec iov{buf.data(), buf.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(uint32_t))];
    msghdr msg{};
    msg.msg_name = &from;
    msg.msg_namelen = sizeof(from);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t n = ::recvmsg(udp_fd_, &msg, 0);
    if (n < 0) continue;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
        uint32_t seen;
        std::memcpy(&seen, CMSG_DATA(c), sizeof(seen));
        CountUdpKernelDrops(seen);
      }
    }
    if (n == 0) continue;
    udp_frames_->Increment();
    const std::string sender = PeerKey(from);
    if (config_.max_lines_per_second() > 0 && !UdpAllowed(sender)) {
      udp_rate_drops_->Increment();
      continue;
    }
    if (static_cast<size_t>(n) > config_.max_frame_bytes()) {
      malformed_->Increment();
      continue;
    }
    Add(std::string(buf.data(), static_cast<size_t>(n)), PeerSource(from), UdpStream(sender),
        /*udp=*/true);
  }
}

const std::string& SyslogReceiver::PeerSource(const sockaddr_storage& from) const {
  if (peer_sources_.empty()) return config_.source();
  // IpAddress::Parse folds an IPv4-mapped sender (a dual-stack listener) to IPv4.
  if (std::optional<IpAddress> ip = IpAddress::Parse(SourceAddress(from)); ip.has_value()) {
    for (const auto& [range, source] : peer_sources_) {
      if (range.Contains(*ip)) return source;
    }
  }
  return config_.source();
}

namespace {

// `n` digits at `pos`, as LineParser reads a time field.
bool Digits(absl::string_view text, size_t pos, size_t n, int* value) {
  if (pos + n > text.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (!absl::ascii_isdigit(text[i])) return false;
    v = v * 10 + (text[i] - '0');
  }
  *value = v;
  return true;
}

// "Jan" -> 1 ... "Dec" -> 12 (the three bytes at `p`), 0 for anything else (case counts, as
// for LineParser).
int Month(const char* p) {
  static constexpr char kMonths[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
  for (int i = 0; i < 12; ++i) {
    if (p[0] == kMonths[3 * i] && p[1] == kMonths[3 * i + 1] && p[2] == kMonths[3 * i + 2]) {
      return i + 1;
    }
  }
  return 0;
}

// The days of `month` in `year` (proleptic Gregorian, as absl's civil times).
int DaysIn(int month, int year) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (month != 2) return kDays[month - 1];
  return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28;
}

// The length of the RFC 3339 stamp at the start of `text` as ParseRfc3339Near reads it
// ("YYYY-MM-DD[Tt ]hh:mm:ss[.,fraction][Zz|+hh:mm|+hhmm]"), or 0 where it gives none or an
// error (the header is then refused either way): the shape, the fields' ranges, a fraction of
// 1 to 9 digits, an offset within +-23:59 and a date that exists.
size_t Rfc3339Length(absl::string_view text) {
  int year, month, day, hour, minute, second;
  if (!Digits(text, 0, 4, &year) || text.size() < 19 || text[4] != '-' ||
      !Digits(text, 5, 2, &month) || text[7] != '-' || !Digits(text, 8, 2, &day) ||
      (text[10] != 'T' && text[10] != 't' && text[10] != ' ') || !Digits(text, 11, 2, &hour) ||
      text[13] != ':' || !Digits(text, 14, 2, &minute) || text[16] != ':' ||
      !Digits(text, 17, 2, &second)) {
    return 0;
  }
  if (month < 1 || month > 12 || day < 1 || day > DaysIn(month, year) || hour > 23 ||
      minute > 59 || second > 60) {
    return 0;
  }
  size_t pos = 19;
  if (pos < text.size() && (text[pos] == '.' || text[pos] == ',')) {
    const size_t first = ++pos;
    while (pos < text.size() && absl::ascii_isdigit(text[pos])) {
      if (pos - first == 9) return 0;  // past nanoseconds: refused, and no longer scan
      ++pos;
    }
    if (pos == first) return 0;
  }
  if (pos < text.size() && (text[pos] == 'Z' || text[pos] == 'z')) return pos + 1;
  if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
    int oh, om;
    if (!Digits(text, pos + 1, 2, &oh)) return 0;
    size_t end;
    if (pos + 3 < text.size() && text[pos + 3] == ':' && Digits(text, pos + 4, 2, &om)) {
      end = pos + 6;
    } else if (Digits(text, pos + 3, 2, &om)) {
      end = pos + 5;
    } else {
      return 0;
    }
    return oh <= 23 && om <= 59 ? end : 0;
  }
  return pos;
}

// The token at `*pos` up to the next space (or the end), and `*pos` past that space. A loop,
// not find: header fields are a few bytes, and memchr's call cost half the 5424 read.
inline absl::string_view Token(absl::string_view line, size_t* pos) {
  const size_t start = std::min(*pos, line.size());
  size_t end = start;
  while (end < line.size() && line[end] != ' ') ++end;
  *pos = end < line.size() ? end + 1 : end;
  return absl::string_view(line.data() + start, end - start);
}

// Where the "<PRI>" at the start of `line` ends (its '>'), or npos where none does by byte 4, as
// LineParser takes the first '>' and refuses one past 4. (Looked for in those 5 bytes only: a
// search of the whole line for it cost a 3164 read a tenth.)
inline size_t PriEnd(absl::string_view line) {
  for (size_t i = 1; i < line.size() && i <= 4; ++i) {
    if (line[i] == '>') return i;
  }
  return absl::string_view::npos;
}

// RFC 5424: "<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD ...", each header field
// non-empty ("-" when left out) and the STRUCTURED-DATA starting "-" or "[", as
// LineParser::ParseSyslog5424 requires.
absl::string_view Hostname5424(absl::string_view line) {
  if (line.empty() || line[0] != '<') return {};
  const size_t close = PriEnd(line);
  if (close == absl::string_view::npos) return {};
  size_t pos = close + 1;
  if (Token(line, &pos) != "1") return {};
  const absl::string_view ts = Token(line, &pos);
  if (ts.empty() || (ts != "-" && Rfc3339Length(ts) != ts.size())) return {};
  const absl::string_view host = Token(line, &pos);
  for (int field = 0; field < 3; ++field) {  // APP-NAME, PROCID, MSGID
    if (Token(line, &pos).empty()) return {};
  }
  if (host.empty() || pos >= line.size() || (line[pos] != '-' && line[pos] != '[')) return {};
  return host == "-" ? absl::string_view() : host;
}

// RFC 3164: "[<PRI>]TIMESTAMP HOSTNAME TAG...", the time "Mmm dd hh:mm:ss[.fraction]" (the day
// space-padded, zero-padded or not; macOS's year after it), or an RFC 3339 stamp, as
// LineParser::ParseSyslog3164 reads it.
absl::string_view Hostname3164(absl::string_view line) {
  size_t pos = 0;
  if (!line.empty() && line[0] == '<') {
    const size_t close = PriEnd(line);
    if (close == absl::string_view::npos) return {};
    pos = close + 1;
  }
  const absl::string_view rest = line.substr(pos);
  if (!rest.empty() && absl::ascii_isdigit(rest[0])) {
    const size_t used = Rfc3339Length(rest);
    if (used == 0) return {};  // a digit first and no stamp: no "Mmm" either
    pos += used;
  } else {
    const int month = rest.size() >= 14 ? Month(rest.data()) : 0;
    if (month == 0 || rest[3] != ' ') return {};
    int day, hour, minute, second, year = 0;
    size_t at = 6;  // the space before hh:mm:ss
    bool day_ok;
    if (rest[4] == ' ') {
      day_ok = Digits(rest, 5, 1, &day);
    } else if (rest[5] == ' ') {
      day_ok = Digits(rest, 4, 1, &day);
      at = 5;
    } else {
      day_ok = Digits(rest, 4, 2, &day);
    }
    if (day_ok && rest.size() > at + 5 && rest[at] == ' ' && rest[at + 5] == ' ' &&
        Digits(rest, at + 1, 4, &year)) {
      at += 5;  // "Oct 27 2015 12:35:40" (a year 0000 is none: the line's is inferred)
    }
    if (!day_ok || rest.size() < at + 9 || rest[at] != ' ' || !Digits(rest, at + 1, 2, &hour) ||
        rest[at + 3] != ':' || !Digits(rest, at + 4, 2, &minute) || rest[at + 6] != ':' ||
        !Digits(rest, at + 7, 2, &second)) {
      return {};
    }
    // A date with no year is dated in one that has it (29 February: LineParser takes the
    // latest leap year behind now, and one is always within the 8 years it looks back).
    constexpr int kALeapYear = 2000;
    if (day < 1 || day > DaysIn(month, year > 0 ? year : kALeapYear) || hour > 23 ||
        minute > 59 || second > 60) {
      return {};
    }
    pos += at + 9;
    if (pos < line.size() && line[pos] == '.') {  // "hh:mm:ss.123456": 1 to 9 digits
      const size_t first = ++pos;
      while (pos < line.size() && absl::ascii_isdigit(line[pos])) {
        if (pos - first == 9) return {};
        ++pos;
      }
      if (pos == first) return {};
    }
  }
  if (pos >= line.size() || line[pos] != ' ') return {};
  while (pos < line.size() && line[pos] == ' ') ++pos;
  const absl::string_view host = Token(line, &pos);
  // Empty: the line ends in blanks (refused). A tag where the host would be ("sshd[1]:",
  // "sshd:"): no host, as a host name never ends with ':' nor holds a '['.
  if (host.empty() || host.back() == ':' ||
      std::find(host.begin(), host.end(), '[') != host.end()) {
    return {};
  }
  return host;
}

}  // namespace

absl::string_view SyslogReceiver::HostnameOf(absl::string_view frame, bool v5424) {
  return v5424 ? Hostname5424(frame) : Hostname3164(frame);
}

std::string SyslogReceiver::HostOf(absl::string_view frame, bool v5424) {
  // The header alone (HostnameOf): a whole LineParser::Parse per frame, the pipeline's parse
  // again, cost a relay's frames that much more for the one token.
  return absl::AsciiStrToLower(HostnameOf(frame, v5424));
}

absl::Duration SyslogReceiver::HostStreamIdle() const {
  // The pipeline's bound as of now (a reload may have lengthened it), not as of Start.
  if (!options_.stream_idle_bound) return options_.host_stream_idle;
  return std::max(options_.host_stream_idle, options_.stream_idle_bound());
}

const std::string& SyslogReceiver::SourceOf(const std::string& host,
                                            const std::string& peer_source) const {
  if (host_sources_.empty() || host.empty()) return peer_source;
  const auto it = host_sources_.find(host);
  return it != host_sources_.end() ? it->second : peer_source;
}

bool SyslogReceiver::HostPlace(HostTable& table, const std::string& sender, const std::string& host,
                               absl::Time now) {
  // A place is given up only once the pipeline has freed its stream (HostStreamIdle:
  // host_stream_idle, or the pipeline's current bound when longer), so the places bound the
  // pipeline's streams; a scan at most once a second per sender, and in all, so a client naming
  // a new host per line does not buy a scan per line.
  const uint64_t key = absl::Hash<absl::string_view>()(host);
  auto peer = table.peers.find(sender);
  if (peer != table.peers.end()) {
    const auto it = peer->second.hosts.find(key);
    if (it != peer->second.hosts.end()) {
      it->second = now;
      return true;
    }
  }
  // Read now, not at start: the pipeline keeps streams longer once a reload brings a longer
  // window. Only when a sweep or the folding check needs it: not for each frame of a new host.
  std::optional<absl::Duration> idle_now;
  auto idle = [&] {
    if (!idle_now.has_value()) idle_now = HostStreamIdle();
    return *idle_now;
  };
  auto sweep = [&](HostPlaces& places) {
    table.count -=
        absl::erase_if(places.hosts, [&](const auto& kv) { return now - kv.second > idle(); });
  };
  if (peer != table.peers.end() &&
      peer->second.hosts.size() >= options_.max_host_streams_per_peer &&
      now - peer->second.swept >= absl::Seconds(1)) {
    peer->second.swept = now;
    sweep(peer->second);
  }
  if ((table.count >= options_.max_host_streams ||
       table.peers.size() >= options_.max_host_streams) &&
      now - table.swept >= absl::Seconds(1)) {
    table.swept = now;
    for (auto it = table.peers.begin(); it != table.peers.end();) {
      sweep(it->second);
      if (it->second.hosts.empty() && now - it->second.folded > idle() && it != peer) {
        table.peers.erase(it++);
      } else {
        ++it;
      }
    }
  }
  // A host of a sender that folded one lately goes in the sender's stream too, even with a
  // place free: the folded host, still sending, stays where its sessions are (the engine keys
  // them by stream) until quiet for as long as a place is kept.
  const bool folding = peer != table.peers.end() && now - peer->second.folded <= idle();
  // Still full: the sender's stream, as before hosts had theirs (a peer's own hosts age by each
  // other's times there, not by other peers').
  if (folding ||
      (peer != table.peers.end() &&
       peer->second.hosts.size() >= options_.max_host_streams_per_peer) ||
      table.count >= options_.max_host_streams) {
    // Remembered while there is room for the sender (max_host_streams senders: bounded memory;
    // past it a folded host may later take a place a sweep frees, and move).
    if (peer == table.peers.end() && table.peers.size() < options_.max_host_streams) {
      peer = table.peers.try_emplace(sender).first;
    }
    if (peer != table.peers.end()) peer->second.folded = now;
    host_streams_folded_->Increment();
    return false;
  }
  if (peer == table.peers.end()) {
    if (table.peers.size() >= options_.max_host_streams) {
      host_streams_folded_->Increment();
      return false;
    }
    peer = table.peers.try_emplace(sender).first;
  }
  peer->second.hosts.emplace(key, now);
  ++table.count;
  return true;
}

// PeerLimitKey: an IPv4 sender (an IPv4-mapped IPv6 one too: an IPv4 sender on a dual-stack
// listener) by its address, so a host counts the same on every listener; an IPv6 one by its
// per_address_ipv6_prefix.
std::string SyslogReceiver::PeerKey(const sockaddr_storage& from) const {
  std::string address = SourceAddress(from);
  if (options_.peer_address_for_tests) address = options_.peer_address_for_tests(address);
  return PeerLimitKey(address, static_cast<int>(config_.per_address_ipv6_prefix()));
}

bool SyslogReceiver::UdpAllowed(const std::string& sender) {
  const absl::Time now = clock_->TimeNow();
  auto it = udp_buckets_.find(sender);
  if (it == udp_buckets_.end()) {
    if (udp_buckets_.size() >= options_.max_udp_senders &&
        now - udp_last_sweep_ >= absl::Seconds(1)) {
      // A full bucket is what a new sender gets anyway: forgetting it changes nothing. At most
      // once a second, so a flood of new (forged) addresses does not buy a scan per datagram.
      udp_last_sweep_ = now;
      absl::erase_if(udp_buckets_, [now](auto& kv) { return kv.second.Full(now); });
    }
    if (udp_buckets_.size() >= options_.max_udp_senders) {
      // Still full (that many senders, all busy, or forged source addresses): the rest share
      // one bucket, so memory stays bounded and a flood of new addresses gains nothing.
      if (udp_overflow_ == nullptr) {
        udp_overflow_ = std::make_unique<TokenBucket>(config_.max_lines_per_second(),
                                                      config_.max_burst_lines(), now);
      }
      return udp_overflow_->TryTake(now);
    }
    it = udp_buckets_
             .emplace(sender,
                      TokenBucket(config_.max_lines_per_second(), config_.max_burst_lines(), now))
             .first;
  }
  return it->second.TryTake(now);
}

std::string SyslogReceiver::UdpStream(const std::string& sender) {
  const absl::Time now = clock_->TimeNow();
  auto it = udp_streams_.find(sender);
  if (it != udp_streams_.end()) {
    it->second = now;
    return sender;
  }
  if (udp_streams_.size() >= options_.max_udp_senders &&
      now - udp_streams_sweep_ >= absl::Seconds(1)) {
    // Senders quiet for host_stream_idle give their places up, at most once a second, as
    // UdpAllowed's sweep: by then the pipeline has freed their streams too. Released sooner, a
    // new (forged) sender's stream would be one more the pipeline holds, and max_udp_senders
    // new ones every few minutes would take its shared max_sender_streams for a day.
    udp_streams_sweep_ = now;
    const absl::Duration idle = HostStreamIdle();
    absl::erase_if(udp_streams_, [now, idle](const auto& kv) { return now - kv.second > idle; });
  }
  // Still full (that many senders, or forged addresses): the source's stream, as before
  // senders had their own.
  if (udp_streams_.size() >= options_.max_udp_senders) {
    udp_streams_folded_->Increment();
    return std::string();
  }
  udp_streams_.emplace(sender, now);
  return sender;
}

void SyslogReceiver::AcceptLoop(int listen_fd, bool tls) {
  while (!stopping_.load()) {
    pollfd p{listen_fd, POLLIN, 0};
    if (::poll(&p, 1, kPollMs) <= 0) continue;
    sockaddr_storage from{};
    socklen_t from_len = sizeof(from);
    const int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&from), &from_len,
                             SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;  // none after all
      accept_errors_->Increment();
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors or memory: the connection stays in the listen queue, so poll
        // returns at once and the loop would spin a core. Try again a poll interval later
        // (real time: this waits for the system, not for the injected clock).
        absl::SleepFor(absl::Milliseconds(kPollMs));
      }
      continue;
    }
    const std::string peer = PeerKey(from);
    std::shared_ptr<SharedBucket> bucket;
    uint64_t handshake = 0;
    const Admission admission = Admit(peer, &bucket, tls ? fd : -1, &handshake);
    if (admission != Admission::kAdmitted) {
      // Counted first, so the count is there once the sender sees the close.
      (admission == Admission::kAddressFull ? per_address_refused_ : refused_)->Increment();
      ::close(fd);
      continue;
    }
    const absl::Time accepted = clock_->TimeNow();
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
    const std::string* source = &PeerSource(from);  // stable: the receiver's own
    conn_threads_.push_back({std::thread([this, fd, tls, accepted, done, peer, bucket, handshake,
                                          source] {
                               Connection(fd, tls, accepted, peer, bucket, handshake, *source);
                               done->store(true);
                             }),
                             done});
  }
}

SyslogReceiver::Admission SyslogReceiver::Admit(const std::string& peer,
                                                std::shared_ptr<SharedBucket>* bucket,
                                                int handshake_fd, uint64_t* handshake) {
  absl::MutexLock lock(&slots_mu_);
  // The address's cap first: a host at it is refused for what it holds, however full the
  // receiver is.
  const auto it = per_address_.find(peer);
  if (it != per_address_.end() && it->second >= config_.max_connections_per_address()) {
    return Admission::kAddressFull;
  }
  const absl::Time now = clock_->TimeNow();
  // Full: the slot of a TLS connection still in its handshake after handshake_grace (a sender
  // with a certificate takes milliseconds) goes to this one, its own thread seeing the socket
  // shut (counted as a failed handshake, "cut off"); with none that old, this one is refused.
  bool inherited = false;
  if (connections_ >= config_.max_connections()) {
    if (handshaking_.empty() ||
        now - handshaking_.begin()->second.since < options_.handshake_grace) {
      return Admission::kFull;
    }
    ::shutdown(handshaking_.begin()->second.fd, SHUT_RDWR);
    handshaking_.erase(handshaking_.begin());
    inherited = true;
  }
  if (handshake_fd >= 0) {
    *handshake = next_handshake_++;
    handshaking_.emplace(*handshake, Handshaking{handshake_fd, now});
  }
  if (config_.max_lines_per_second() > 0) {
    auto b = tcp_buckets_.find(peer);
    if (b == tcp_buckets_.end()) {
      // Buckets kept for addresses with no connection open (every open one has its own).
      auto closed = [this](const auto& kv) { return !per_address_.contains(kv.first); };
      if (tcp_buckets_.size() - per_address_.size() >= options_.max_tcp_senders &&
          now - tcp_last_sweep_ >= absl::Seconds(1)) {
        // A full bucket is what the address gets anyway: forgetting it changes nothing. At
        // most once a second, so a stream of new addresses does not buy a scan per accept.
        tcp_last_sweep_ = now;
        absl::erase_if(tcp_buckets_, [&](auto& kv) {
          if (!closed(kv)) return false;
          absl::MutexLock bucket_lock(&kv.second->mu);
          return kv.second->bucket.Full(now);
        });
      }
      if (tcp_buckets_.size() - per_address_.size() >= options_.max_tcp_senders) {
        // Still that many: forget one (its address starts full again; to gain by that, a
        // sender needs max_tcp_senders other addresses, each with a budget of its own anyway).
        // The open ones are max_connections at most, so this finds one soon.
        const auto gone = std::find_if(tcp_buckets_.begin(), tcp_buckets_.end(), closed);
        if (gone != tcp_buckets_.end()) tcp_buckets_.erase(gone);
      }
      b = tcp_buckets_
              .emplace(peer, std::make_shared<SharedBucket>(config_.max_lines_per_second(),
                                                            config_.max_burst_lines(), now))
              .first;
    }
    *bucket = b->second;
  }
  if (!inherited) ++connections_;
  ++per_address_[peer];
  open_->Increment();
  return Admission::kAdmitted;
}

bool SyslogReceiver::Established(uint64_t handshake, bool ok, bool* cut_off) {
  absl::MutexLock lock(&slots_mu_);
  *cut_off = handshaking_.erase(handshake) == 0;
  return ok && !*cut_off;
}

void SyslogReceiver::Release(const std::string& peer, bool holds_slot) {
  absl::MutexLock lock(&slots_mu_);
  const auto it = per_address_.find(peer);
  if (it != per_address_.end() && --it->second == 0) {
    per_address_.erase(it);
    // The address's bucket stays until it is full again (or, past max_tcp_senders, forgotten),
    // so a sender that reconnects finds it as it left it.
    const auto b = tcp_buckets_.find(peer);
    if (b != tcp_buckets_.end()) {
      bool full;
      {
        absl::MutexLock bucket_lock(&b->second->mu);
        full = b->second->bucket.Full(clock_->TimeNow());
      }
      if (full) tcp_buckets_.erase(b);  // unlocked first: this may free the bucket
    }
  }
  if (holds_slot) --connections_;
  open_->Decrement();
}

namespace {

// What may end a newline-framed frame: LF, or NUL too on an input that says so (RFC 6587 lets a
// sender of non-transparent framing end frames with another byte: Python's SysLogHandler over
// TCP ends them with NUL, as rsyslog's AddtlFrameDelimiter may).
constexpr absl::string_view kFrameEnds("\n\0", 2);

// Where the newline-framed frame, or skipped line, from `at` ends (npos: not here yet): its LF,
// or its NUL too where the input ends frames at NUL (SyslogInput.nul_ends_frames). Elsewhere a
// NUL is text: a sender that strips CR and LF from a message but passes NUL on (log4j2's
// newLineEscape, an app following OWASP's CR/LF advice) frames by LF, and a NUL taken as a
// frame end would let a client forge the next frame ("x\0<38>... Failed password for root
// from VICTIM ..."). The config decides, never the bytes: a connection's first frame is the
// client's as much as any other.
size_t FrameEnd(const std::string& stream, size_t at, const SyslogReceiver::DeframeState& state) {
  if (state.nul_ends_frames) return stream.find_first_of(kFrameEnds.data(), at, kFrameEnds.size());
  return stream.find('\n', at);
}

// A connection whose framing is unknown saw its first newline-framed frame, or a line that
// started no frame, end: it frames by newlines.
void SettleNewline(SyslogReceiver::DeframeState* state) {
  if (state->framing != SyslogReceiver::DeframeState::Framing::kUnknown) return;
  state->framing = SyslogReceiver::DeframeState::Framing::kNewline;
}

// What `stream` holds at `at`: the start of an octet-counted frame (RFC 6587 "LEN SP <PRI>...":
// a length of 1 to 10 digits with no leading zero, a space and '<', the length at most
// `max_frame_bytes`), one whose length is over that (kTooLong), no such start (kNo), or too few
// bytes to tell (kNeedMore). The '<' is required because a newline-framed sender passes a
// message's raw LF on, so a line may well start "1733530000 rows": that is no length. `*len`:
// the length, for kYes and kTooLong.
enum class FrameStart { kNo, kYes, kTooLong, kNeedMore };

FrameStart OctetFrameAt(const std::string& stream, size_t at, size_t max_frame_bytes, size_t* len) {
  if (stream[at] < '1' || stream[at] > '9') return FrameStart::kNo;
  size_t end = at;
  while (end < stream.size() && end - at <= 10 && stream[end] >= '0' && stream[end] <= '9') {
    ++end;
  }
  if (end - at > 10) return FrameStart::kNo;
  if (end == stream.size()) return FrameStart::kNeedMore;
  if (stream[end] != ' ') return FrameStart::kNo;
  if (end + 1 == stream.size()) return FrameStart::kNeedMore;
  if (stream[end + 1] != '<') return FrameStart::kNo;
  if (!absl::SimpleAtoi(stream.substr(at, end - at), len)) return FrameStart::kNo;
  return *len <= max_frame_bytes ? FrameStart::kYes : FrameStart::kTooLong;
}

}  // namespace

void SyslogReceiver::Deframe(std::string* stream, size_t max_frame_bytes, DeframeState* state,
                             std::vector<std::string>* frames, uint64_t* malformed) {
  // An over-long counted frame of an octet-counting sender is skipped by its count, at most this
  // many times max_frame_bytes (a count beyond is taken as a lie, and the stream resyncs).
  constexpr uint64_t kMaxSkipFrames = 16;
  size_t at = 0;
  while (at < stream->size()) {
    if (state->skip > 0) {  // the body of an over-long counted frame
      const size_t n = static_cast<size_t>(std::min<uint64_t>(state->skip, stream->size() - at));
      state->skip -= n;
      at += n;
      continue;
    }
    if (state->dropping_line) {  // the rest of an over-long newline-framed frame
      const size_t nl = FrameEnd(*stream, at, *state);
      if (nl == std::string::npos) {
        at = stream->size();
        break;
      }
      SettleNewline(state);
      state->dropping_line = false;
      at = nl + 1;
      continue;
    }
    if (state->resyncing) {
      // Bytes that start no frame (a bad length, or no "<PRI>" where a frame should begin):
      // skipped up to whichever comes first, a newline (what ends a newline-framed frame) or
      // "LEN SP <" (what starts an octet-counted one; an octet-counted stream, as rsyslog
      // sends, has no newline at all). LEN is a whole run of digits, so the tail of a longer
      // number is not taken for a length, and at most max_frame_bytes, so a number in the
      // skipped text does not swallow what follows. Should the skipped bytes end in digits,
      // they are read as part of the next length: that frame comes out wrong (or is dropped),
      // and the stream picks up again after it the same way. Between reads only a run of
      // digits and a space is kept, so memory stays bounded however long the skip.
      // On a connection known to frame by newlines only a frame end (FrameEnd) ends it: a
      // "LEN SP <" in the line is a client's text, not a frame start. Elsewhere a NUL ends a
      // skip only where the input ends frames at NUL.
      if (state->framing == DeframeState::Framing::kNewline) {
        const size_t nl = FrameEnd(*stream, at, *state);
        if (nl == std::string::npos) {
          at = stream->size();
          break;
        }
        state->resyncing = false;
        at = nl + 1;
        continue;
      }
      const char c = (*stream)[at];
      if (c == '\n' || (c == '\0' && state->nul_ends_frames)) {
        // A connection whose first line started no frame (tail -F | nc, a banner with no
        // "<PRI>") and ended at a frame end frames by newlines: a client's "100 <13>z" later
        // is no count.
        SettleNewline(state);
        state->resyncing = false;
        ++at;
        continue;
      }
      const bool digit = c >= '0' && c <= '9';
      if (digit && !state->after_digit) {
        size_t len = 0;
        const FrameStart start = OctetFrameAt(*stream, at, max_frame_bytes, &len);
        if (start == FrameStart::kNeedMore) break;
        if (start == FrameStart::kYes) {
          state->resyncing = false;
          continue;  // the frame is read from `at`
        }
      }
      state->after_digit = digit;
      ++at;
      continue;
    }
    const char c = (*stream)[at];
    if (c == '\n' || c == '\r' || c == ' ' || c == '\0') {  // stray separators between frames
      ++at;
      continue;
    }
    if (c >= '1' && c <= '9' && state->framing == DeframeState::Framing::kNewline) {
      // A connection known to frame by newlines has no counts, within the cap or over it: its
      // sender passes a message's raw LF on, so a line starting "100 <13>" may be a client's
      // text, and taken as a count it would make the next 100 bytes (other programs' lines) one
      // frame. The line has no "<PRI>": counted, and skipped up to its newline.
      ++*malformed;
      state->resyncing = true;
      ++at;
      continue;
    }
    if (c >= '1' && c <= '9') {
      // Octet counting: MSG-LEN SP SYSLOG-MSG.
      size_t len = 0;
      const FrameStart start = OctetFrameAt(*stream, at, max_frame_bytes, &len);
      if (start == FrameStart::kNeedMore) break;  // the length, its space or '<' is not here yet
      if (state->framing == DeframeState::Framing::kUnknown && start != FrameStart::kNo) {
        state->framing = DeframeState::Framing::kOctet;
      }
      if (start == FrameStart::kTooLong && state->framing == DeframeState::Framing::kOctet &&
          len <= kMaxSkipFrames * max_frame_bytes) {
        // A sender that counts octets wrote a frame over the cap: its body, a client's text
        // perhaps, is skipped whole, never searched for a frame start.
        ++*malformed;
        state->skip = len;
        at = stream->find(' ', at) + 1;
        continue;
      }
      if (start != FrameStart::kYes) {
        // No length ("1733530000 rows": a line of a newline-framed sender), or one over
        // max_frame_bytes: counted, and the stream picks up at the next frame start. A length
        // over the cap is not skipped, as a count cannot be trusted: a lying or corrupt one
        // ("1733530000 <13>...") would blind the connection for that many bytes. (rsyslog's
        // imtcp, too, treats it as a framing error.) On a connection whose sender counts
        // octets, an over-long frame is skipped by its count (above).
        ++*malformed;
        state->resyncing = true;
        state->after_digit = true;  // the digits that follow are this run's, not a length
        ++at;
        continue;
      }
      const size_t body = stream->find(' ', at) + 1;
      if (stream->size() - body < len) break;  // wait for the rest
      frames->emplace_back(*stream, body, len);
      at = body + len;
      continue;
    }
    if (c != '<') {
      // Neither a length nor "<PRI>": no frame starts here (as when a length was wrong).
      ++*malformed;
      state->resyncing = true;
      state->after_digit = false;
      continue;
    }
    // Newline framing: the connection's first such frame settles its framing at its end.
    const size_t nl = FrameEnd(*stream, at, *state);
    if (nl == std::string::npos) {
      if (stream->size() - at > max_frame_bytes) {  // too long, no end in sight: drop it
        ++*malformed;
        state->dropping_line = true;
        at = stream->size();
      }
      break;
    }
    SettleNewline(state);
    if (nl - at > max_frame_bytes) {
      ++*malformed;
    } else {
      frames->emplace_back(*stream, at, nl - at);
    }
    at = nl + 1;
  }
  stream->erase(0, at);
}

void SyslogReceiver::Connection(int fd, bool tls, absl::Time accepted, const std::string& peer,
                                std::shared_ptr<SharedBucket> bucket, uint64_t handshake,
                                const std::string& peer_source) {
  Stream in(fd, tls ? tls_ctx_ : nullptr);
  prometheus::Counter* frames_in = tls ? tls_frames_ : tcp_frames_;
  // When the sender last sent a byte (or was held back by the rate limit, which is not idle).
  absl::Time last_active = accepted;
  if (tls) {
    std::string failed =
        in.Handshake(*clock_, accepted + options_.tls_handshake_timeout, stopping_);
    bool cut_off = false;
    if (!Established(handshake, failed.empty(), &cut_off)) {
      if (cut_off) failed = "cut off: every slot was taken and a newer connection needed one";
      if (!failed.empty()) {
        tls_handshake_failures_->Increment();
        if (options_.log) {
          options_.log(absl::StrCat("input ", config_.name(), ": TLS handshake from ",
                                    PeerOf(fd), " failed: ", failed));
        }
      }
      ::close(fd);
      Release(peer, /*holds_slot=*/!cut_off);  // a cut-off one's slot went to the newcomer
      return;
    }
    last_active = clock_->TimeNow();
  }
  // The address's bucket, shared with its other connections (null: no limit).
  auto take = [&] {
    if (bucket == nullptr) return true;
    absl::MutexLock lock(&bucket->mu);
    return bucket->bucket.TryTake(clock_->TimeNow());
  };
  auto until_next = [&] {
    absl::MutexLock lock(&bucket->mu);
    return bucket->bucket.UntilNext(clock_->TimeNow());
  };
  // Frames read and not yet let through by the rate limit: at most one read's worth, as the
  // connection is not read again until they are all through.
  std::deque<std::string> waiting;
  size_t waiting_counted = 0;  // the first ones of `waiting` already counted as throttled
  std::string stream;
  std::string buf(64 * 1024, '\0');
  DeframeState state;
  state.nul_ends_frames = config_.nul_ends_frames();
  bool closed = false;
  // The sender closed, or was closed for idling: a last newline-framed message without its
  // newline, as some senders end a connection, is a frame. It, and frames still held, go
  // through at the address's rate (so connecting, sending a read's worth and closing gains
  // nothing): the connection keeps its slot meanwhile.
  auto end_of_stream = [&] {
    closed = true;
    if (stream.empty() || state.dropping_line || state.resyncing || state.skip > 0) return;
    if (stream.size() <= config_.max_frame_bytes() && !(stream[0] >= '1' && stream[0] <= '9')) {
      frames_in->Increment();
      waiting.push_back(std::move(stream));
    } else {
      // An octet-counted frame cut short by the close, or a line that may have begun one.
      malformed_->Increment();
    }
    stream.clear();
  };
  while (!stopping_.load()) {
    while (!waiting.empty() && take()) {
      Add(std::move(waiting.front()), peer_source, peer, /*udp=*/false);
      waiting.pop_front();
      if (waiting_counted > 0) --waiting_counted;
    }
    if (!waiting.empty()) {
      // Over the budget: count the newly held lines, and wait without reading (backpressure).
      throttled_lines_->Increment(static_cast<double>(waiting.size() - waiting_counted));
      waiting_counted = waiting.size();
      last_active = clock_->TimeNow();
      absl::SleepFor(std::min(absl::Milliseconds(kPollMs), until_next()));
      continue;
    }
    if (closed) break;
    size_t n = 0;
    const Stream::Result r = in.Read(buf.data(), buf.size(), &n);
    if (r == Stream::kWait) {
      // Silent for idle_timeout (a sender that only connected, or a peer gone without a FIN):
      // closed, so such connections cannot hold every slot.
      if (clock_->TimeNow() - last_active >= options_.idle_timeout) {
        idle_closed_->Increment();
        end_of_stream();
      }
      continue;
    }
    if (r == Stream::kClosed) {
      end_of_stream();
      continue;
    }
    last_active = clock_->TimeNow();
    stream.append(buf.data(), n);
    std::vector<std::string> frames;
    uint64_t malformed = 0;
    Deframe(&stream, config_.max_frame_bytes(), &state, &frames, &malformed);
    if (malformed > 0) malformed_->Increment(static_cast<double>(malformed));
    frames_in->Increment(static_cast<double>(frames.size()));
    for (std::string& f : frames) waiting.push_back(std::move(f));
  }
  // Stopping: what was read (one read at most) is delivered, not lost; so is what the socket
  // held when Stop came (acknowledged to the sender, which counts it sent), without the rate
  // limit and up to stop_drain_bytes, read without waiting: a sender still writing does not
  // hold Stop up. What is left is counted, as the close resets it away.
  for (std::string& f : waiting) Add(std::move(f), peer_source, peer, /*udp=*/false);
  waiting.clear();
  if (!closed) {
    auto unread = [fd] {
      int bytes = 0;
      return ::ioctl(fd, FIONREAD, &bytes) == 0 ? static_cast<size_t>(std::max(bytes, 0)) : 0;
    };
    // In bytes of the stream, which are no more than the socket's and OpenSSL's (TLS adds to
    // them): what was there when Stop came, so a sender still writing adds nothing past it.
    const size_t budget = std::min(options_.stop_drain_bytes, unread() + in.Buffered());
    size_t drained = 0;
    // TLS: a Read that only moved bytes from the socket into OpenSSL says kWait too; it goes on
    // while OpenSSL or the socket holds bytes (each read takes some). Plain TCP: until the
    // socket has none now. (Reads bounded in number too, should a socket say it has bytes and
    // give none.)
    for (int reads = 0; drained < budget && reads < 100000; ++reads) {
      const size_t socket_before = unread(), tls_before = in.Buffered();
      size_t n = 0;
      const Stream::Result r =
          in.Read(buf.data(), std::min(buf.size(), budget - drained), &n, /*wait_ms=*/0);
      if (r == Stream::kWait) {
        // Bytes moved into OpenSSL (or a record taken whole): read on; else nothing more now.
        if (tls && (unread() != socket_before || in.Buffered() != tls_before)) continue;
        break;
      }
      if (r == Stream::kClosed) {
        end_of_stream();
        break;
      }
      drained += n;
      stream.append(buf.data(), n);
      std::vector<std::string> frames;
      uint64_t malformed = 0;
      Deframe(&stream, config_.max_frame_bytes(), &state, &frames, &malformed);
      if (malformed > 0) malformed_->Increment(static_cast<double>(malformed));
      frames_in->Increment(static_cast<double>(frames.size()));
      for (std::string& f : frames) Add(std::move(f), peer_source, peer, /*udp=*/false);
    }
    // A last frame end_of_stream found.
    for (std::string& f : waiting) Add(std::move(f), peer_source, peer, /*udp=*/false);
    // Lost with the close: the socket's rest and what OpenSSL still holds (for TLS in bytes on
    // the wire, records and all) and a frame cut in the middle.
    unread_at_stop_->Increment(
        static_cast<double>(unread() + in.Buffered() + (closed ? 0 : stream.size())));
  }
  ::close(fd);
  Release(peer);
}

}  // namespace palisade
