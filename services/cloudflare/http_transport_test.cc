// CurlTransport against a cpp-httplib server on loopback: what a peer sends is held within the
// transport's byte caps, whatever it sends.
#include "services/cloudflare/http_transport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <thread>

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

}  // namespace
}  // namespace palisade
