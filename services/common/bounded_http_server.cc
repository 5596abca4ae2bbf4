#include "services/common/bounded_http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace palisade {
namespace {

// Gives httplib at most `budget` bytes per request (Allow), then fails the read. Reads are
// buffered (httplib reads the headers a byte at a time), and the keep-alive wait wakes up when
// the server stops.
class BoundedStream final : public httplib::Stream {
 public:
  BoundedStream(int sock, SSL* ssl, time_t read_timeout_sec, time_t write_timeout_sec)
      : sock_(sock), ssl_(ssl), read_timeout_(read_timeout_sec), write_timeout_(write_timeout_sec) {}

  // The bytes the next request may take (and nothing written for it yet).
  void Allow(size_t budget) {
    left_ = budget;
    written_ = 0;
  }
  bool exhausted() const { return left_ == 0; }
  // Whether any byte of an answer to this request went out.
  bool answered() const { return written_ > 0; }
  // After an answer to a request that is still arriving: reads and drops what the client still
  // sends, up to `max_bytes` or `max_time`, so that closing does not reset the connection (and
  // the answer with it) while the client is still writing. The caller then closes.
  void Drain(size_t max_bytes, absl::Duration max_time) {
    if (ssl_ == nullptr) ::shutdown(sock_, SHUT_WR);
    const absl::Time deadline = absl::Now() + max_time;
    char scratch[4096];
    for (size_t drained = 0; drained < max_bytes && absl::Now() < deadline;) {
      if (!Buffered() && !Poll(POLLIN, 100)) continue;
      const ssize_t n = ssl_ != nullptr ? SSL_read(ssl_, scratch, sizeof(scratch))
                                        : ::recv(sock_, scratch, sizeof(scratch), 0);
      if (n <= 0 && !(n < 0 && ssl_ == nullptr && errno == EINTR)) return;
      if (n > 0) drained += static_cast<size_t>(n);
    }
  }
  // Waits up to `seconds` for a byte while `running()`.
  bool WaitReadable(time_t seconds, const std::function<bool()>& running) const {
    for (time_t waited_ms = 0; waited_ms <= seconds * 1000; waited_ms += 100) {
      if (!running()) return false;
      if (Buffered() || Poll(POLLIN, 100)) return true;
    }
    return false;
  }

  bool is_readable() const override { return Buffered() || Poll(POLLIN, read_timeout_ * 1000); }
  bool is_writable() const override { return Poll(POLLOUT, write_timeout_ * 1000); }

  ssize_t read(char* ptr, size_t size) override {
    if (left_ == 0) return -1;
    if (at_ == end_) {
      if (!is_readable()) return -1;
      ssize_t n;
      do {
        n = ssl_ != nullptr ? SSL_read(ssl_, buffer_, sizeof(buffer_))
                            : ::recv(sock_, buffer_, sizeof(buffer_), 0);
      } while (n < 0 && ssl_ == nullptr && errno == EINTR);
      if (n <= 0) return n;
      at_ = 0;
      end_ = static_cast<size_t>(n);
    }
    const size_t n = std::min({size, end_ - at_, left_});
    std::memcpy(ptr, buffer_ + at_, n);
    at_ += n;
    left_ -= n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    ssize_t n;
    if (ssl_ != nullptr) {
      n = SSL_write(ssl_, ptr, static_cast<int>(std::min<size_t>(size, 1 << 30)));
    } else {
      do {
        n = ::send(sock_, ptr, size, MSG_NOSIGNAL);
      } while (n < 0 && errno == EINTR);
    }
    if (n > 0) written_ += static_cast<size_t>(n);
    return n;
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
  bool Poll(short events, time_t timeout_ms) const {
    pollfd p{sock_, events, 0};
    int r;
    do {
      r = ::poll(&p, 1, static_cast<int>(timeout_ms));
    } while (r < 0 && errno == EINTR);
    return r > 0 && (p.revents & (events | POLLHUP | POLLERR)) != 0;
  }
  static void Name(const sockaddr_storage& addr, std::string& ip, int& port) {
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

  const int sock_;
  SSL* const ssl_;
  const time_t read_timeout_;
  const time_t write_timeout_;
  size_t left_ = 0;
  size_t written_ = 0;
  char buffer_[4096];
  size_t at_ = 0;
  size_t end_ = 0;
};

// httplib's keep-alive loop over one connection, each request read through a BoundedStream.
template <typename ProcessRequest>
bool ServeConnection(int sock, SSL* ssl, size_t budget, size_t max_requests,
                     time_t keep_alive_sec, time_t read_sec, time_t write_sec,
                     const std::function<bool()>& running, const ProcessRequest& process) {
  BoundedStream strm(sock, ssl, read_sec, write_sec);
  bool ret = false;
  for (size_t left = max_requests; left > 0 && strm.WaitReadable(keep_alive_sec, running);
       --left) {
    strm.Allow(budget);
    bool connection_closed = false;
    ret = process(strm, /*close_connection=*/left == 1, connection_closed);
    if (strm.exhausted() && !strm.answered()) {
      // httplib gives up on a request line or headers it could not read whole, without an
      // answer: say why before the connection closes (as CrowdSec's LAPI does, 431).
      constexpr char kTooLarge[] =
          "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\n"
          "Content-Length: 31\r\nConnection: close\r\n\r\n{\"message\":\"request too large\"}";
      if (strm.write(kTooLarge, sizeof(kTooLarge) - 1) > 0) {
        strm.Drain(/*max_bytes=*/size_t{8} << 20, absl::Seconds(2));
      }
      break;
    }
    if (!ret || connection_closed || strm.exhausted()) break;
  }
  return ret;
}

void CloseSocket(int sock) {
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
}

// httplib's servers, with each request bounded in bytes (BoundedStream).
class BoundedServer final : public httplib::Server {
 public:
  explicit BoundedServer(size_t budget) : budget_(budget) {}

 private:
  bool process_and_close_socket(socket_t sock) override {
    const bool ret = ServeConnection(
        sock, nullptr, budget_, keep_alive_max_count_, keep_alive_timeout_sec_,
        read_timeout_sec_, write_timeout_sec_, [this] { return svr_sock_ != INVALID_SOCKET; },
        [this](httplib::Stream& strm, bool close, bool& closed) {
          return process_request(strm, close, closed, nullptr);
        });
    CloseSocket(sock);
    return ret;
  }
  const size_t budget_;
};

class BoundedSslServer final : public httplib::SSLServer {
 public:
  BoundedSslServer(size_t budget, const char* cert, const char* key, const char* client_ca)
      : httplib::SSLServer(cert, key, client_ca), budget_(budget) {}

 private:
  bool process_and_close_socket(socket_t sock) override {
    bool ret = false;
    // The handshake is bounded by the socket's read and write timeouts (set at accept).
    SSL* ssl = SSL_new(ssl_context());
    if (ssl != nullptr && SSL_set_fd(ssl, sock) == 1 && SSL_accept(ssl) == 1) {
      ret = ServeConnection(
          sock, ssl, budget_, keep_alive_max_count_, keep_alive_timeout_sec_, read_timeout_sec_,
          write_timeout_sec_, [this] { return svr_sock_ != INVALID_SOCKET; },
          [this](httplib::Stream& strm, bool close, bool& closed) {
            return process_request(strm, close, closed, nullptr);
          });
      SSL_shutdown(ssl);
    }
    if (ssl != nullptr) SSL_free(ssl);
    CloseSocket(sock);
    return ret;
  }
  const size_t budget_;
};

}  // namespace

std::unique_ptr<httplib::Server> MakeBoundedHttpServer(size_t request_budget) {
  return std::make_unique<BoundedServer>(request_budget);
}

std::unique_ptr<httplib::Server> MakeBoundedHttpsServer(size_t request_budget, const char* cert,
                                                        const char* key, const char* client_ca) {
  return std::make_unique<BoundedSslServer>(request_budget, cert, key, client_ca);
}

}  // namespace palisade
