#include "services/inputs/syslog_receiver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace palisade {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> Deframe(const std::vector<std::string>& reads, size_t max,
                                 uint64_t* malformed) {
  std::string stream;
  SyslogReceiver::DeframeState state;
  std::vector<std::string> frames;
  for (const std::string& r : reads) {
    stream += r;
    SyslogReceiver::Deframe(&stream, max, &state, &frames, malformed);
  }
  return frames;
}

TEST(DeframeTest, OctetCountingAndNewlinesInAnyCutOfTheStream) {
  const std::string all = "11 <34>1 hello\n<13>Mar  3 14:02:01 h sshd: a\n5 <1>xy<13>b\n";
  // Every way of cutting the stream in two reads gives the same frames.
  for (size_t cut = 0; cut <= all.size(); ++cut) {
    uint64_t malformed = 0;
    EXPECT_THAT(Deframe({all.substr(0, cut), all.substr(cut)}, 1024, &malformed),
                ElementsAre("<34>1 hello", "<13>Mar  3 14:02:01 h sshd: a", "<1>xy", "<13>b"))
        << "cut at " << cut;
    EXPECT_EQ(malformed, 0u);
  }
}

TEST(DeframeTest, OversizedAndBadFramesAreSkippedAndTheStreamGoesOn) {
  uint64_t malformed = 0;
  const std::string big(300, 'x');
  EXPECT_THAT(Deframe({"300 " + big.substr(0, 100), big.substr(100) + "4 <1>a",
                       "<2>" + big + "\n<3>ok\n", "12x <4>bad\n<5>fine\n"},
                      64, &malformed),
              ElementsAre("<1>a", "<3>ok", "<5>fine"));
  EXPECT_EQ(malformed, 3u);
  // A newline-framed frame with no end in sight is dropped as it comes, up to its newline.
  malformed = 0;
  EXPECT_THAT(Deframe({"<6>" + big, big, big + "\n<7>after\n"}, 64, &malformed),
              ElementsAre("<7>after"));
  EXPECT_EQ(malformed, 1u);
}

class ReceiverTest : public ::testing::Test {
 protected:
  std::unique_ptr<SyslogReceiver> Start(palisade::v1::SyslogInput config) {
    SyslogReceiverOptions options;
    options.flush_interval = absl::Milliseconds(10);
    auto r = SyslogReceiver::Start(
        config, options,
        [this](const palisade::v1::LogBatch& b) {
          absl::MutexLock lock(&mu_);
          for (const auto& rec : b.records()) {
            got_.push_back(absl::StrCat(b.format() == palisade::v1::LOG_FORMAT_SYSLOG5424
                                            ? "5424 "
                                            : "3164 ",
                                        b.source(), " ", rec.line()));
          }
          return absl::OkStatus();
        },
        registry_);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *std::move(r) : nullptr;
  }
  std::vector<std::string> WaitFor(size_t n) {
    for (int i = 0; i < 6000; ++i) {
      {
        absl::MutexLock lock(&mu_);
        if (got_.size() >= n) return got_;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    absl::MutexLock lock(&mu_);
    return got_;
  }
  static int Connect(int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    return fd;
  }

  prometheus::Registry registry_;
  absl::Mutex mu_;
  std::vector<std::string> got_;
};

TEST_F(ReceiverTest, TcpAndUdpFramesBecomeBatchesPerFormat) {
  palisade::v1::SyslogInput config;
  config.set_name("rsyslog");
  config.set_udp_listen("127.0.0.1:0");
  config.set_tcp_listen("127.0.0.1:0");
  auto r = Start(config);
  ASSERT_NE(r, nullptr);
  const int fd = Connect(r->tcp_port());
  const std::string v5424 = "<38>1 - h sshd 1 - - two";
  const std::string tcp =
      absl::StrCat("<38>Mar  3 14:02:01 h sshd[1]: one\n", v5424.size(), " ", v5424);
  ASSERT_EQ(::send(fd, tcp.data(), tcp.size(), 0), static_cast<ssize_t>(tcp.size()));
  const int udp = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(r->udp_port()));
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  const std::string dgram = "<38>Mar  3 14:02:02 h sshd[2]: three\n";
  ::sendto(udp, dgram.data(), dgram.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  std::vector<std::string> got = WaitFor(3);
  std::sort(got.begin(), got.end());
  EXPECT_THAT(got, ElementsAre("3164 rsyslog <38>Mar  3 14:02:01 h sshd[1]: one",
                               "3164 rsyslog <38>Mar  3 14:02:02 h sshd[2]: three",
                               "5424 rsyslog <38>1 - h sshd 1 - - two"));
  ::close(fd);
  ::close(udp);
}

TEST_F(ReceiverTest, ConnectionsPastTheCapAreRefusedAndCounted) {
  palisade::v1::SyslogInput config;
  config.set_name("capped");
  config.set_tcp_listen("127.0.0.1:0");
  config.set_max_connections(1);
  auto r = Start(config);
  ASSERT_NE(r, nullptr);
  const int first = Connect(r->tcp_port());
  ::send(first, "<1>a\n", 5, 0);
  WaitFor(1);  // the first connection is being served
  const int second = Connect(r->tcp_port());
  char c;
  EXPECT_EQ(::recv(second, &c, 1, 0), 0);  // closed at once
  ::close(first);
  ::close(second);
}

// A sender that connects once per message (util-linux logger does): ended connections are
// reaped, so their number stays bounded by the cap, however many came and went.
TEST_F(ReceiverTest, ManyShortConnectionsAllCountAndEndedOnesAreReaped) {
  palisade::v1::SyslogInput config;
  config.set_name("short");
  config.set_tcp_listen("127.0.0.1:0");
  config.set_max_connections(4);
  auto r = Start(config);
  ASSERT_NE(r, nullptr);
  for (int i = 0; i < 200; ++i) {
    // One at a time: each is closed (and its thread ends) before the next, so none is refused.
    const int fd = Connect(r->tcp_port());
    const std::string m = absl::StrCat("<13>Mar  3 14:02:01 h app: message ", i, "\n");
    ::send(fd, m.data(), m.size(), 0);
    ::close(fd);
    WaitFor(static_cast<size_t>(i + 1));
  }
  EXPECT_EQ(WaitFor(200).size(), 200u);
  // Ended threads are joined at the next accept (without it all 200 would be held); a wide
  // margin for threads a busy machine has not finished yet.
  EXPECT_LT(r->connection_threads(), 50u);
}

TEST_F(ReceiverTest, APortInUseIsAClearError) {
  palisade::v1::SyslogInput config;
  config.set_name("first");
  config.set_tcp_listen("127.0.0.1:0");
  auto r = Start(config);
  ASSERT_NE(r, nullptr);
  config.set_name("second");
  config.set_tcp_listen(absl::StrCat("127.0.0.1:", r->tcp_port()));
  auto again = SyslogReceiver::Start(config, {}, [](const palisade::v1::LogBatch&) {
    return absl::OkStatus();
  }, registry_);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(again.status().message(), HasSubstr("inputs.syslog \"second\""));
  EXPECT_THAT(again.status().message(), HasSubstr("cannot listen"));
}

}  // namespace
}  // namespace palisade
