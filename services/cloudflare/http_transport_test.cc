// CurlTransport against servers on loopback (cpp-httplib, and a raw socket one for a scripted
// connection): what a peer sends is held within the transport's byte caps, whatever it sends,
// and a failure is marked never sent only when none of the request left.
#include "services/cloudflare/http_transport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "services/common/status_matchers.h"

namespace palisade {
namespace {

using ::palisade::testing::IsOk;
using ::palisade::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;

class Loopback {
 public:
  explicit Loopback(std::function<void(httplib::Server&)> routes) {
    routes(server_);
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // Connections queue from the bind on; stop() must not come before listen runs.
    while (!server_.is_running()) absl::SleepFor(absl::Milliseconds(5));
  }
  ~Loopback() {
    server_.stop();
    thread_.join();
  }
  std::string url(const std::string& path) const {
    return absl::StrCat("http://127.0.0.1:", port_, path);
  }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

HttpRequest Get(const std::string& url) {
  HttpRequest r;
  r.method = "GET";
  r.url = url;
  r.timeout = absl::Seconds(60);
  return r;
}

constexpr size_t kMiB = 1024 * 1024;

// A reply of 64 MiB, streamed without a length (chunked): read up to the cap (8 MiB by
// default), then refused, naming the cap.
TEST(CurlTransportTest, AReplyOverTheCapIsRefused) {
  Loopback server([](httplib::Server& s) {
    s.Get("/big", [](const httplib::Request&, httplib::Response& res) {
      auto sent = std::make_shared<size_t>(0);
      res.set_chunked_content_provider("application/json",
                                       [sent](size_t, httplib::DataSink& sink) {
                                         const std::string chunk(64 * 1024, 'x');
                                         if (*sent >= 64 * kMiB) {
                                           sink.done();
                                           return true;
                                         }
                                         *sent += chunk.size();
                                         return sink.write(chunk.data(), chunk.size());
                                       });
    });
    s.Get("/declared", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(std::string(9 * kMiB, 'y'), "application/json");
    });
    s.Get("/small", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("{\"success\":true}", "application/json");
    });
  });
  CurlTransport transport;
  absl::StatusOr<HttpResponse> big = transport.Send(Get(server.url("/big")));
  EXPECT_THAT(big, StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("8388608 bytes")));
  // Declared by Content-Length: refused before the body is read.
  absl::StatusOr<HttpResponse> declared = transport.Send(Get(server.url("/declared")));
  EXPECT_THAT(declared, StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("8388608 bytes")));
  // The handle is reused for the next call, and a reply under the cap is read whole.
  absl::StatusOr<HttpResponse> small = transport.Send(Get(server.url("/small")));
  ASSERT_THAT(small, IsOk());
  EXPECT_EQ(small->body, "{\"success\":true}");
}

// Headers are held too: a peer sending header after header is cut off at the cap.
TEST(CurlTransportTest, HeadersOverTheCapAreRefused) {
  Loopback server([](httplib::Server& s) {
    s.Get("/headers", [](const httplib::Request&, httplib::Response& res) {
      for (int i = 0; i < 2000; ++i) {
        res.set_header(absl::StrCat("x-filler-", i), std::string(100, 'h'));
      }
      res.set_content("{}", "application/json");
    });
  });
  CurlTransport transport;
  EXPECT_THAT(transport.Send(Get(server.url("/headers"))),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("65536 bytes of headers")));
}

// A failure before any of the request left is marked so by libcurl's code, not its text (the
// client sends a call that changes state again only then): no connection could be made.
TEST(CurlTransportTest, AConnectionNeverMadeIsMarkedNeverSent) {
  // A port bound and not listening: a connection to it is refused, and no one else takes it.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t length = sizeof(a);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &length), 0);
  HttpRequest post = Get(absl::StrCat("http://127.0.0.1:", ntohs(a.sin_port), "/lists"));
  post.method = "POST";
  post.body = "{}";
  CurlTransport transport;
  absl::StatusOr<HttpResponse> r = transport.Send(post);
  ::close(fd);
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("HTTP transport: ")));
  EXPECT_TRUE(TransportNeverSent(r.status())) << r.status();
}

// A timeout after the request was sent may come after the server acted: not marked. The server
// holds its answer until the client gave up (the client's timeout is the only wait).
TEST(CurlTransportTest, ATimeoutAfterSendingIsNotMarkedNeverSent) {
  absl::Notification arrived, release;
  Loopback server([&](httplib::Server& s) {
    s.Post("/lists", [&](const httplib::Request&, httplib::Response& res) {
      arrived.Notify();
      release.WaitForNotificationWithTimeout(absl::Seconds(60));
      res.set_content("{}", "application/json");
    });
  });
  HttpRequest post = Get(server.url("/lists"));
  post.method = "POST";
  post.body = "{}";
  post.timeout = absl::Milliseconds(300);
  CurlTransport transport;
  absl::StatusOr<HttpResponse> r = transport.Send(post);
  release.Notify();
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("HTTP transport: ")));
  EXPECT_TRUE(arrived.HasBeenNotified());
  EXPECT_FALSE(TransportNeverSent(r.status())) << r.status();
}

// A raw loopback server for one scripted exchange: it answers the first GET and keeps that
// connection open (HTTP/1.1 keep-alive), then waits for a `method` request (POST by default) on
// it or on a new connection, reads it whole, stops listening and closes that connection without
// answering. Every wait is a poll bounded by a wide margin (60 s), reached only if the client
// never sends.
class CutAfterPost {
 public:
  explicit CutAfterPost(std::string method = "POST") : method_(std::move(method)) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    bound_ = ::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
             ::listen(listener_, 8) == 0;
    socklen_t length = sizeof(a);
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &length);
    port_ = ntohs(a.sin_port);
    // Connections queue from listen() on: the thread may start after the client connects.
    thread_ = std::thread([this] { Serve(); });
  }
  ~CutAfterPost() {
    thread_.join();
    if (listener_ >= 0) ::close(listener_);
    if (first_ >= 0) ::close(first_);
    if (second_ >= 0) ::close(second_);
  }
  bool bound() const { return bound_; }
  std::string url(const std::string& path) const {
    return absl::StrCat("http://127.0.0.1:", port_, path);
  }
  bool post_arrived() const { return post_arrived_.HasBeenNotified(); }
  // Set before post_arrived_ is notified, read only after it was (the notification orders them).
  bool post_on_new_connection() const {
    return post_arrived_.HasBeenNotified() && post_on_new_connection_;
  }

 private:
  static constexpr int kWaitMs = 60 * 1000;

  // One request's head and its Content-Length body; false if the peer closed or never sent.
  static bool ReadRequest(int fd, std::string* head) {
    std::string in;
    char buf[4096];
    size_t end = std::string::npos;
    size_t want = 0;
    while (true) {
      if (end == std::string::npos) {
        end = in.find("\r\n\r\n");
        if (end != std::string::npos) {
          *head = in.substr(0, end);
          const size_t at = absl::AsciiStrToLower(*head).find("content-length:");
          if (at != std::string::npos) want = std::strtoul(head->c_str() + at + 15, nullptr, 10);
        }
      }
      if (end != std::string::npos && in.size() >= end + 4 + want) return true;
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, kWaitMs) != 1) return false;
      const ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n <= 0) return false;
      in.append(buf, static_cast<size_t>(n));
    }
  }

  void Serve() {
    if (!bound_) return;
    pollfd l{listener_, POLLIN, 0};
    if (::poll(&l, 1, kWaitMs) != 1) return;
    first_ = ::accept(listener_, nullptr, nullptr);
    std::string head;
    if (first_ < 0 || !ReadRequest(first_, &head) || !absl::StartsWith(head, "GET ")) return;
    const std::string ok =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        "Content-Length: 2\r\n\r\n{}";
    if (::write(first_, ok.data(), ok.size()) != static_cast<ssize_t>(ok.size())) return;
    // The POST comes on the kept connection or on a new one, whichever the client chose (a
    // kept connection it closes instead is no longer watched).
    pollfd both[2] = {{first_, POLLIN, 0}, {listener_, POLLIN, 0}};
    int fd = -1;
    while (fd < 0) {
      if (::poll(both, 2, kWaitMs) < 1) return;
      if ((both[1].revents & POLLIN) != 0) {
        second_ = ::accept(listener_, nullptr, nullptr);
        if (second_ < 0 || !ReadRequest(second_, &head)) return;
        fd = second_;
        post_on_new_connection_ = true;
      } else if (both[0].revents != 0) {
        if (ReadRequest(first_, &head)) fd = first_;
        both[0].fd = -1;  // read, or closed by the client: poll skips it from now on
      }
    }
    if (!absl::StartsWith(head, method_ + " ")) return;
    post_arrived_.Notify();
    // Not listening before the cut: a client that reconnects to send again is refused.
    ::close(listener_);
    listener_ = -1;
    ::close(fd);
    (fd == first_ ? first_ : second_) = -1;
  }

  const std::string method_;
  int listener_ = -1;
  int first_ = -1;   // the GET's connection
  int second_ = -1;  // a new connection, when the POST came on one
  bool bound_ = false;
  int port_ = 0;
  bool post_on_new_connection_ = false;
  absl::Notification post_arrived_;
  std::thread thread_;
};

// A POST that reached the server and was cut off unanswered may have been applied: it is not
// marked never sent, even when the connection it went out on was kept from an earlier call.
// libcurl resends on a fresh connection a request whose reused connection died before any
// reply, and the failure of that reconnect (refused here) would otherwise be the one reported.
TEST(CurlTransportTest, APostCutOffIsNotMarkedNeverSentAfterAKeptConnection) {
  CutAfterPost server;
  ASSERT_TRUE(server.bound());
  CurlTransport transport;
  ASSERT_THAT(transport.Send(Get(server.url("/lists"))), IsOk());
  HttpRequest post = Get(server.url("/lists"));
  post.method = "POST";
  post.body = "{}";
  absl::StatusOr<HttpResponse> r = transport.Send(post);
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("HTTP transport: ")));
  EXPECT_TRUE(server.post_arrived());
  EXPECT_FALSE(TransportNeverSent(r.status())) << r.status();
  // Not idempotent: it went out on a connection of its own, never on the kept one.
  EXPECT_TRUE(server.post_on_new_connection());
}

// A PUT is idempotent by method, but a token roll is not: a resend carries the secret the first
// try retired. Marked fresh_connection, it goes out on a connection of its own, which libcurl
// does not send on again; cut off, it is not marked never sent (it reached the server).
TEST(CurlTransportTest, APutMarkedFreshIsNotSentOnAKeptConnection) {
  CutAfterPost server("PUT");
  ASSERT_TRUE(server.bound());
  CurlTransport transport;
  ASSERT_THAT(transport.Send(Get(server.url("/user/tokens/abc"))), IsOk());
  HttpRequest roll = Get(server.url("/user/tokens/abc/value"));
  roll.method = "PUT";
  roll.body = "{}";
  roll.fresh_connection = true;
  absl::StatusOr<HttpResponse> r = transport.Send(roll);
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("HTTP transport: ")));
  EXPECT_TRUE(server.post_arrived());
  EXPECT_FALSE(TransportNeverSent(r.status())) << r.status();
  EXPECT_TRUE(server.post_on_new_connection());
}

// Only http and https are spoken. A file:// URL (an api_base mistyped, or set by whoever can
// edit the config) was read like a reply: a local file's content came back as the body, with
// status 0; an ftp:// one would carry the credentials in clear.
TEST(CurlTransportTest, AnUrlOfAnotherSchemeIsRefused) {
  const std::string path = absl::StrCat(std::getenv("TEST_TMPDIR"), "/local-file");
  {
    std::ofstream out(path);
    out << "local-file-content";
  }
  CurlTransport transport;
  HttpRequest local = Get("file://" + path);
  local.headers.emplace_back("Authorization", "Bearer cfut_secret_token_value");
  absl::StatusOr<HttpResponse> r = transport.Send(local);
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kFailedPrecondition,
                          HasSubstr("scheme \"file\" is refused; only http and https")));
  EXPECT_TRUE(TransportNeverSent(r.status())) << r.status();
  EXPECT_THAT(r.status().message(), Not(HasSubstr("local-file")));
  EXPECT_THAT(r.status().message(), Not(HasSubstr("secret")));
  // Another URL of the same handle, after the refusal: the options hold on a kept handle too.
  EXPECT_THAT(transport.Send(Get("ftp://127.0.0.1:1/token?key=secret")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("scheme \"ftp\"")));
}

// A redirect is never followed, to another scheme or to the same host: the 3xx itself is the
// reply (the client refuses it), and the credential headers go nowhere else.
TEST(CurlTransportTest, ARedirectIsNotFollowed) {
  const std::string path = absl::StrCat(std::getenv("TEST_TMPDIR"), "/redirect-target");
  {
    std::ofstream out(path);
    out << "local-file-content";
  }
  std::atomic<int> followed{0};
  Loopback server([&](httplib::Server& s) {
    s.Get("/to-file", [&](const httplib::Request&, httplib::Response& res) {
      res.set_redirect("file://" + path, 302);
    });
    s.Get("/to-ftp", [](const httplib::Request&, httplib::Response& res) {
      res.set_redirect("ftp://127.0.0.1:1/x", 301);
    });
    s.Get("/to-http", [](const httplib::Request&, httplib::Response& res) {
      res.set_redirect("/target", 307);
    });
    s.Get("/target", [&](const httplib::Request&, httplib::Response& res) {
      ++followed;
      res.set_content("{}", "application/json");
    });
  });
  CurlTransport transport;
  for (const auto& [from, status] : std::vector<std::pair<std::string, int>>{
           {"/to-file", 302}, {"/to-ftp", 301}, {"/to-http", 307}}) {
    absl::StatusOr<HttpResponse> r = transport.Send(Get(server.url(from)));
    ASSERT_THAT(r, IsOk()) << from;
    EXPECT_EQ(r->status, status) << from;
    EXPECT_THAT(r->body, Not(HasSubstr("local-file-content"))) << from;
  }
  EXPECT_EQ(followed.load(), 0);
}

}  // namespace
}  // namespace palisade
