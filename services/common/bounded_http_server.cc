#include "services/common/bounded_http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "services/common/ip.h"

namespace palisade {
namespace {

// The slice a wait polls for before it looks at the deadline and the server's state again.
constexpr int kSliceMs = 100;

// What bounds one connection, taken from the server and BoundedHttpOptions.
struct Limits {
  size_t budget;
  absl::Duration deadline;
  std::function<absl::Time()> now;
  absl::Duration read_timeout;
  absl::Duration write_timeout;
  absl::Duration keep_alive;
  size_t max_requests;
};

absl::Duration Timeout(time_t sec, time_t usec) {
  return absl::Seconds(sec) + absl::Microseconds(usec);
}

// A socket address's host text and port.
void PeerName(const sockaddr_storage& addr, std::string& ip, int& port) {
  char host[INET6_ADDRSTRLEN] = {0};
  if (addr.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    ::inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
    port = ntohs(a->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    ::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
    port = ntohs(a->sin6_port);
  }
  ip = host;
}

// Gives httplib at most `budget` bytes per request (Allow), and until the request's deadline
// (FixDeadline); then fails the read. The socket is non-blocking: every wait is a poll in
// slices, which also end when the server stops. Reads are buffered (httplib reads the headers a
// byte at a time).
class BoundedStream final : public httplib::Stream {
 public:
  // Why reads and writes fail from now on.
  enum class Cut { kNone, kDeadline, kStopped };
  // What a wait does at the request's deadline: nothing (writes: the deadline bounds the
  // request's arrival, not its answer), stop quietly (the wait for a request's first byte), or
  // stop and cut the request short (its reads, the TLS handshake).
  enum class AtDeadline { kIgnore, kStop, kCut };

  BoundedStream(int sock, SSL* ssl, const Limits& limits, const std::function<bool()>& running)
      : sock_(sock), ssl_(ssl), limits_(limits), running_(running) {}

  // The deadline of the request whose first byte is awaited from now.
  void FixDeadline() { deadline_ = limits_.now() + limits_.deadline; }
  // The bytes the next request may take (and nothing written for it yet).
  void Allow(size_t budget) {
    left_ = budget;
    written_ = 0;
  }
  bool exhausted() const { return left_ == 0; }
  // Whether any byte of an answer to this request went out.
  bool answered() const { return written_ > 0; }
  Cut cut() const { return cut_; }

  // The TLS handshake, within the first request's deadline.
  bool Handshake() {
    for (;;) {
      if (limits_.now() >= deadline_) {
        cut_ = Cut::kDeadline;
        return false;
      }
      ERR_clear_error();
      const int r = SSL_accept(ssl_);
      if (r == 1) return true;
      const short events = WantedBy(r, POLLIN);
      if (events == 0 || !Wait(events, limits_.read_timeout, AtDeadline::kCut)) return false;
    }
  }

  // Waits up to `keep_alive` for the first byte of a request; false (and no cut: nothing of a
  // request came) at the deadline, or when the server stops.
  bool WaitForRequest() {
    return Buffered() || Wait(POLLIN, limits_.keep_alive, AtDeadline::kStop);
  }

  // Sends `text` whole even after a cut (the server's own answer), within the write timeout.
  bool Answer(absl::string_view text) {
    while (!text.empty()) {
      const ssize_t n = Send(text.data(), text.size());
      if (n <= 0) return false;
      text.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // After an answer to a request that is still arriving: reads and drops what the client still
  // sends, up to `max_bytes`, for at most `max_time` on the server's clock and until the client
  // has been silent for about `max_time`, so that closing does not reset the connection (and
  // the answer with it) while the client is still writing. The caller then closes. Only a slice
  // with nothing in it counts toward the silence: counting every empty read closed on a client
  // that writes in pieces (a gap after each, as on a busy machine) after 20 of them, and the
  // reset lost it the answer.
  void Drain(size_t max_bytes, absl::Duration max_time) {
    if (ssl_ == nullptr) ::shutdown(sock_, SHUT_WR);
    char scratch[4096];
    const absl::Time end = limits_.now() + max_time;
    for (int64_t silent = max_time / absl::Milliseconds(kSliceMs), drained = 0;
         drained < static_cast<int64_t>(max_bytes) && silent > 0 && running_() &&
         limits_.now() < end;) {
      const ssize_t n = Receive(scratch, sizeof(scratch));
      if (n > 0) {
        drained += n;
        continue;
      }
      if ((n == 0 && ssl_ == nullptr) || WantedBy(n, POLLIN) == 0) return;
      if (!Poll(POLLIN, kSliceMs)) --silent;
    }
  }

  bool is_readable() const override {
    return Buffered() || Wait(POLLIN, limits_.read_timeout, AtDeadline::kCut);
  }
  bool is_writable() const override {
    return Wait(POLLOUT, limits_.write_timeout, AtDeadline::kIgnore);
  }

  ssize_t read(char* ptr, size_t size) override {
    if (left_ == 0 || cut_ != Cut::kNone) return -1;
    if (at_ == end_) {
      for (;;) {
        // Bytes that come from the socket past the deadline are refused, even when they are
        // there at once: the request did not arrive in time.
        if (limits_.now() >= deadline_) {
          cut_ = Cut::kDeadline;
          return -1;
        }
        const ssize_t n = Receive(buffer_, sizeof(buffer_));
        if (n > 0) {
          at_ = 0;
          end_ = static_cast<size_t>(n);
          break;
        }
        const short events = n == 0 && ssl_ == nullptr ? 0 : WantedBy(n, POLLIN);
        if (events == 0) return n;
        if (!Wait(events, limits_.read_timeout, AtDeadline::kCut)) return -1;
      }
    }
    const size_t n = std::min({size, end_ - at_, left_});
    std::memcpy(ptr, buffer_ + at_, n);
    at_ += n;
    left_ -= n;
    return static_cast<ssize_t>(n);
  }

  // Once the request was cut short nothing more is sent but the server's own answer.
  ssize_t write(const char* ptr, size_t size) override {
    if (cut_ != Cut::kNone) return -1;
    return Send(ptr, size);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    if (::getpeername(sock_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) Name(addr, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    if (::getsockname(sock_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) Name(addr, ip, port);
  }
  socket_t socket() const override { return sock_; }

 private:
  bool Buffered() const { return at_ < end_ || (ssl_ != nullptr && SSL_has_pending(ssl_) == 1); }

  // One read or write attempt on the non-blocking socket.
  ssize_t Receive(char* buf, size_t size) {
    if (ssl_ != nullptr) {
      ERR_clear_error();
      return SSL_read(ssl_, buf, static_cast<int>(size));
    }
    ssize_t n;
    do {
      n = ::recv(sock_, buf, size, 0);
    } while (n < 0 && errno == EINTR);
    return n;
  }
  ssize_t Send(const char* ptr, size_t size) {
    for (;;) {
      ssize_t n;
      if (ssl_ != nullptr) {
        ERR_clear_error();
        n = SSL_write(ssl_, ptr, static_cast<int>(std::min<size_t>(size, 1 << 30)));
      } else {
        do {
          n = ::send(sock_, ptr, size, MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
      }
      if (n > 0) {
        written_ += static_cast<size_t>(n);
        return n;
      }
      const short events = WantedBy(n, POLLOUT);
      if (events == 0 || !Wait(events, limits_.write_timeout, AtDeadline::kIgnore)) return -1;
    }
  }
  // What the socket must become for the failed attempt that returned `r` to be retried (POLLIN
  // or POLLOUT: TLS may need either; a plain socket's EAGAIN means `plain`); 0 when it failed
  // for good.
  short WantedBy(ssize_t r, short plain) const {
    if (ssl_ != nullptr) {
      switch (SSL_get_error(ssl_, static_cast<int>(r))) {
        case SSL_ERROR_WANT_READ:
          return POLLIN;
        case SSL_ERROR_WANT_WRITE:
          return POLLOUT;
        default:
          return 0;
      }
    }
    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? plain : 0;
  }

  // Waits up to `timeout` for `events`, in slices. False at the timeout, when the server stops
  // (a cut), and at the deadline (as `at_deadline` says).
  bool Wait(short events, absl::Duration timeout, AtDeadline at_deadline) const {
    for (int64_t left_ms = absl::ToInt64Milliseconds(timeout); left_ms > 0; left_ms -= kSliceMs) {
      if (!running_()) {
        cut_ = Cut::kStopped;
        return false;
      }
      if (at_deadline != AtDeadline::kIgnore && limits_.now() >= deadline_) {
        if (at_deadline == AtDeadline::kCut) cut_ = Cut::kDeadline;
        return false;
      }
      if (Poll(events, std::min<int64_t>(left_ms, kSliceMs))) return true;
    }
    return false;
  }
  bool Poll(short events, int64_t timeout_ms) const {
    pollfd p{sock_, events, 0};
    int r;
    do {
      r = ::poll(&p, 1, static_cast<int>(timeout_ms));
    } while (r < 0 && errno == EINTR);
    return r > 0 && (p.revents & (events | POLLHUP | POLLERR)) != 0;
  }
  static void Name(const sockaddr_storage& addr, std::string& ip, int& port) {
    PeerName(addr, ip, port);
  }

  const int sock_;
  SSL* const ssl_;
  const Limits& limits_;
  const std::function<bool()>& running_;
  absl::Time deadline_ = absl::InfiniteFuture();
  mutable Cut cut_ = Cut::kNone;  // set by waits, which httplib may call as const
  size_t left_ = 0;
  size_t written_ = 0;
  char buffer_[4096];
  size_t at_ = 0;
  size_t end_ = 0;
};

// The stream whose request this thread's handler is serving (RequestCutShort).
thread_local const BoundedStream* current_stream = nullptr;

// The server's own answer to a request it gives up on, before the connection closes.
std::string Reply(absl::string_view status, absl::string_view message) {
  const std::string body = absl::StrCat("{\"message\":\"", message, "\"}");
  return absl::StrCat("HTTP/1.1 ", status,
                      "\r\nContent-Type: application/json\r\nContent-Length: ", body.size(),
                      "\r\nConnection: close\r\n\r\n", body);
}

// httplib's keep-alive loop over one connection (its TLS handshake first), each request read
// through a BoundedStream.
template <typename ProcessRequest>
bool ServeConnection(int sock, SSL* ssl, const Limits& limits,
                     const std::function<bool()>& running,
                     const std::function<void()>& on_deadline, const ProcessRequest& process) {
  const int flags = ::fcntl(sock, F_GETFL);
  if (flags < 0 || ::fcntl(sock, F_SETFL, flags | O_NONBLOCK) < 0) return false;
  BoundedStream strm(sock, ssl, limits, running);
  strm.FixDeadline();
  if (ssl != nullptr && !strm.Handshake()) {
    if (strm.cut() == BoundedStream::Cut::kDeadline && on_deadline) on_deadline();
    return false;
  }
  bool ret = false;
  for (size_t left = limits.max_requests; left > 0; --left) {
    if (left != limits.max_requests) strm.FixDeadline();
    if (!strm.WaitForRequest()) break;
    strm.Allow(limits.budget);
    bool connection_closed = false;
    current_stream = &strm;
    ret = process(strm, /*close_connection=*/left == 1, connection_closed);
    current_stream = nullptr;
    if (strm.cut() == BoundedStream::Cut::kStopped) {
      ret = false;
      break;
    }
    if (strm.cut() == BoundedStream::Cut::kDeadline) {
      if (on_deadline) on_deadline();
      if (!strm.answered() && strm.Answer(Reply("408 Request Timeout", "request too slow"))) {
        strm.Drain(/*max_bytes=*/size_t{8} << 20, absl::Seconds(2));
      }
      ret = false;
      break;
    }
    if (strm.exhausted() && !strm.answered()) {
      // httplib gives up on a request line or headers it could not read whole, without an
      // answer: say why before the connection closes (as CrowdSec's LAPI does, 431).
      if (strm.Answer(Reply("431 Request Header Fields Too Large", "request too large"))) {
        strm.Drain(/*max_bytes=*/size_t{8} << 20, absl::Seconds(2));
      }
      break;
    }
    if (!ret || connection_closed || strm.exhausted()) break;
  }
  if (ssl != nullptr) SSL_shutdown(ssl);  // once: a close_notify if the socket takes it
  return ret;
}

void CloseSocket(int sock) {
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
}

// httplib's servers, with each request bounded in bytes and time (BoundedStream).
template <typename Base>
class Bounded final : public Base {
 public:
  template <typename... Args>
  explicit Bounded(BoundedHttpOptions options, Args... args)
      : Base(args...), options_(std::move(options)) {
    if (!options_.now) options_.now = [] { return absl::Now(); };
  }

 private:
  bool process_and_close_socket(socket_t sock) override {
    // The peer's share of the workers first: over it, the connection is closed unread. An
    // IPv6 peer counts by its /64 (PeerLimitKey): one client holds all of it.
    std::string peer;
    bool counted = options_.max_connections_per_address > 0;
    if (counted) {
      sockaddr_storage addr{};
      socklen_t len = sizeof(addr);
      int port = 0;
      if (::getpeername(sock, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
        PeerName(addr, peer, port);
      }
      if (options_.peer_address_for_tests) peer = options_.peer_address_for_tests(peer);
      counted = !options_.exempt_from_address_limit || !options_.exempt_from_address_limit(peer);
    }
    if (counted) {
      peer = PeerLimitKey(peer);
      std::lock_guard<std::mutex> lock(peers_mu_);
      size_t& open = peers_[peer];
      if (open >= options_.max_connections_per_address) {
        if (options_.on_address_refused) options_.on_address_refused();
        CloseSocket(sock);
        return false;
      }
      ++open;
    }
    const bool ret = Serve(sock);
    if (counted) {
      std::lock_guard<std::mutex> lock(peers_mu_);
      const auto it = peers_.find(peer);
      if (it != peers_.end() && --it->second == 0) peers_.erase(it);
    }
    return ret;
  }

  bool Serve(socket_t sock) {
    const Limits limits{options_.request_budget,
                        options_.request_deadline,
                        options_.now,
                        Timeout(this->read_timeout_sec_, this->read_timeout_usec_),
                        Timeout(this->write_timeout_sec_, this->write_timeout_usec_),
                        absl::Seconds(this->keep_alive_timeout_sec_),
                        this->keep_alive_max_count_};
    const std::function<bool()> running = [this] { return this->svr_sock_ != INVALID_SOCKET; };
    auto process = [this](httplib::Stream& strm, bool close, bool& closed) {
      return this->process_request(strm, close, closed, nullptr);
    };
    bool ret = false;
    if constexpr (std::is_same_v<Base, httplib::SSLServer>) {
      SSL* ssl = SSL_new(this->ssl_context());
      if (ssl != nullptr && SSL_set_fd(ssl, sock) == 1) {
        ret = ServeConnection(sock, ssl, limits, running, options_.on_deadline, process);
      }
      if (ssl != nullptr) SSL_free(ssl);
    } else {
      ret = ServeConnection(sock, nullptr, limits, running, options_.on_deadline, process);
    }
    CloseSocket(sock);
    return ret;
  }

  BoundedHttpOptions options_;
  std::mutex peers_mu_;
  // Connections being served by PeerLimitKey of the peer address (an entry per key with one at
  // least).
  std::map<std::string, size_t> peers_;
};

}  // namespace

std::unique_ptr<httplib::Server> MakeBoundedHttpServer(BoundedHttpOptions options) {
  return std::make_unique<Bounded<httplib::Server>>(std::move(options));
}

std::unique_ptr<httplib::Server> MakeBoundedHttpsServer(BoundedHttpOptions options,
                                                        const char* cert, const char* key,
                                                        const char* client_ca) {
  return std::make_unique<Bounded<httplib::SSLServer>>(std::move(options), cert, key, client_ca);
}

std::unique_ptr<httplib::Server> MakeBoundedHttpServer(size_t request_budget) {
  BoundedHttpOptions options;
  options.request_budget = request_budget;
  return MakeBoundedHttpServer(std::move(options));
}

std::unique_ptr<httplib::Server> MakeBoundedHttpsServer(size_t request_budget, const char* cert,
                                                        const char* key, const char* client_ca) {
  BoundedHttpOptions options;
  options.request_budget = request_budget;
  return MakeBoundedHttpsServer(std::move(options), cert, key, client_ca);
}

bool RequestCutShort() {
  return current_stream != nullptr && current_stream->cut() != BoundedStream::Cut::kNone;
}

}  // namespace palisade
