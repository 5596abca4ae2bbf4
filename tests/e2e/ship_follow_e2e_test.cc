// End to end for `palisadectl ship --follow` (issue 14 §1): the real palisadectl process follows a
// log file and ships it to the real palisaded, which bans at the Cloudflare emulator. The
// connection is dropped every way it can be: the shipper killed with -9 (and restarted with an
// older state file, or none: it sends again what the server took), palisaded restarted while
// lines are written, a kill -9 in the middle of a burst, a rotation while following. Every line
// counts exactly once: four failures ban, so a line counted twice bans too early (a "not
// decided" check fails) and a lost one never (a "banned" check fails); and the server's
// received and duplicate counters say the same line by line.
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "palisade/v1/palisade.grpc.pb.h"
#include "tests/e2e/daemon.h"

extern char** environ;

namespace palisade {
namespace {

using ::palisade::testing::ActionsPending;
using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;
using ::palisade::testing::EmulatorAccessRuleValues;
using ::palisade::testing::ScrapeMetric;
using ::palisade::testing::WaitFor;

class ShipFollowE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::getenv("TEST_TMPDIR");
    log_ = dir_ + "/remote-auth.log";
    ship_state_ = dir_ + "/ship.state";
    state_ = dir_ + "/ship-follow.db";
    for (const auto& p : {log_, log_ + ".1", ship_state_, state_}) std::remove(p.c_str());
    absl::StatusOr<std::unique_ptr<Emulator>> cf = Emulator::Start();
    ASSERT_TRUE(cf.ok()) << cf.status();
    cf_ = *std::move(cf);
    // No periodic snapshot while the test runs: the positions the server restores are the ones
    // its clean stop saved with the windows.
    config_ = ::palisade::testing::WriteEdgeConfig(*cf_, cf_->token_file(),
                                                   {"tests/e2e/testdata/file_input.textproto"},
                                                   "snapshot_interval { seconds: 3600 }\n");
  }

  void TearDown() override {
    if (shipper_ > 0) KillShipper();
  }

  void StartDaemon() {
    std::vector<std::string> args = {"--config=" + config_, "--shutdown_grace=200ms"};
    if (grpc_port_ > 0) args.push_back(absl::StrCat("--grpc_listen=127.0.0.1:", grpc_port_));
    absl::StatusOr<std::unique_ptr<Daemon>> d = Daemon::Start(args, state_);
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    // The same port after a restart: the shipper reconnects to where it was.
    grpc_port_ = std::stoi(daemon_->grpc_address().substr(daemon_->grpc_address().rfind(':') + 1));
  }

  void StartShipper(int batch_lines = 1000) {
    std::vector<std::string> args = {"services/cli/palisadectl",
                                      "ship",
                                      "--follow",
                                      log_,
                                      "--state_file=" + ship_state_,
                                      "--shipper_id=e2e-host",
                                      "--source=remote-auth",
                                      absl::StrCat("--batch_lines=", batch_lines),
                                      absl::StrCat("--server=127.0.0.1:", grpc_port_),
                                      "--verbose"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ASSERT_EQ(posix_spawn(&shipper_, argv[0], nullptr, nullptr, argv.data(), environ), 0);
  }
  void KillShipper() {
    kill(shipper_, SIGKILL);
    waitpid(shipper_, nullptr, 0);
    shipper_ = -1;
  }
  int StopShipper() {
    kill(shipper_, SIGTERM);
    int status = 0;
    waitpid(shipper_, &status, 0);
    shipper_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // `n` lines appended to the log, stamped now (UTC): failed passwords from `ip`, or accepted
  // keys (lines taken that match nothing).
  void Append(const std::string& ip, int n, bool failed = true) {
    std::ofstream out(log_, std::ios::app);
    const std::string stamp = absl::FormatTime("%b %e %H:%M:%S", absl::Now(), absl::UTCTimeZone());
    for (int i = 0; i < n; ++i) {
      out << stamp << " web-1 sshd[" << 100 + i << "]: "
          << (failed ? "Failed password for root" : "Accepted publickey for deploy") << " from "
          << ip << " port 22 ssh2\n";
    }
  }

  double Received() {
    return ScrapeMetric(*daemon_, "palisade_ingest_lines_received_total",
                        {"source=\"remote-auth\""});
  }
  double Duplicates() { return ScrapeMetric(*daemon_, "palisade_ingest_duplicate_lines_total"); }
  bool WaitReceived(double n) {
    return WaitFor([&] { return Received() >= n; }, absl::Seconds(60));
  }
  bool WaitDuplicates(double n) {
    return WaitFor([&] { return Duplicates() >= n; }, absl::Seconds(60));
  }
  // The shipper's state file says the whole log was acked.
  bool WaitAcked() {
    return WaitFor(
        [&] {
          struct stat st;
          if (::stat(log_.c_str(), &st) != 0) return false;
          std::ifstream in(ship_state_);
          std::stringstream text;
          text << in.rdbuf();
          nlohmann::json state = nlohmann::json::parse(text.str(), nullptr, false);
          if (state.is_discarded() || !state.contains("files")) return false;
          for (const auto& f : state["files"]) {
            if (f.value("path", "") == log_ &&
                f.value("offset", uint64_t{0}) == static_cast<uint64_t>(st.st_size)) {
              return true;
            }
          }
          return false;
        },
        absl::Seconds(60));
  }
  bool Banned(const std::string& ip) {
    return WaitFor(
        [&] {
          return EmulatorAccessRuleValues(*cf_).count(ip) > 0 && ActionsPending(*daemon_) == 0;
        },
        absl::Seconds(60));
  }
  bool Decided(const std::string& ip) {
    auto channel = grpc::CreateChannel(daemon_->grpc_address(), grpc::InsecureChannelCredentials());
    grpc::ClientContext ctx;
    palisade::v1::ListDecisionsRequest request;
    request.set_target(ip);
    palisade::v1::ListDecisionsResponse response;
    EXPECT_TRUE(palisade::v1::Decisions::NewStub(channel)->List(&ctx, request, &response).ok());
    return response.decisions_size() > 0;
  }
  void Copy(const std::string& from, const std::string& to) {
    std::ifstream in(from, std::ios::binary);
    std::ofstream out(to, std::ios::binary | std::ios::trunc);
    out << in.rdbuf();
  }

  std::string dir_, log_, ship_state_, state_, config_;
  std::unique_ptr<Emulator> cf_;
  std::unique_ptr<Daemon> daemon_;
  int grpc_port_ = 0;
  pid_t shipper_ = -1;
};

TEST_F(ShipFollowE2eTest, EveryLineCountsOnceThroughKillsRestartsAndRotation) {
  StartDaemon();
  StartShipper();  // the file does not exist yet: waited for

  // 1. Appends while following.
  Append("203.0.113.1", 2);
  ASSERT_TRUE(WaitReceived(2));
  ASSERT_TRUE(WaitAcked());
  Copy(ship_state_, ship_state_ + ".old");
  Append("203.0.113.1", 1);
  ASSERT_TRUE(WaitReceived(3));
  ASSERT_TRUE(WaitAcked());

  // 2. kill -9, and a restart from an older state file (as if the last acks had not been
  // written yet): the third failure is sent again with a new line behind it. The server drops
  // the one and takes the other.
  KillShipper();
  Copy(ship_state_ + ".old", ship_state_);
  Append("203.0.113.5", 1);
  StartShipper();
  ASSERT_TRUE(WaitReceived(4));
  ASSERT_TRUE(WaitDuplicates(1));
  ASSERT_TRUE(WaitAcked());
  EXPECT_EQ(Received(), 4);
  EXPECT_EQ(Duplicates(), 1);
  EXPECT_FALSE(Decided("203.0.113.1"));  // three, not four
  Append("203.0.113.1", 1);
  ASSERT_TRUE(Banned("203.0.113.1"));  // the fourth: none lost
  ASSERT_TRUE(WaitAcked());

  // 3. palisaded restarts while lines are written: the shipper reconnects (backoff) and sends
  // them. The positions came back with the windows.
  ASSERT_EQ(daemon_->Stop(), 0);
  Append("203.0.113.2", 3);
  StartDaemon();
  ASSERT_TRUE(WaitReceived(3));
  ASSERT_TRUE(WaitAcked());
  EXPECT_EQ(Received(), 3);
  // The shipper loses its state altogether: it sends the whole file again (eight lines), all
  // of them taken before, across the restart for five of them.
  KillShipper();
  std::remove(ship_state_.c_str());
  StartShipper();
  ASSERT_TRUE(WaitDuplicates(8));
  ASSERT_TRUE(WaitAcked());
  EXPECT_EQ(Duplicates(), 8);
  EXPECT_EQ(Received(), 3);
  EXPECT_FALSE(Decided("203.0.113.2"));
  Append("203.0.113.2", 1);
  ASSERT_TRUE(Banned("203.0.113.2"));
  ASSERT_TRUE(WaitReceived(4));

  // 4. A kill -9 in the middle of a burst, in batches of 50: whatever was acked or not, the
  // restarted shipper makes the count exact.
  KillShipper();
  StartShipper(/*batch_lines=*/50);
  Append("198.51.100.7", 3000, /*failed=*/false);
  ASSERT_TRUE(WaitFor([&] { return Received() >= 4 + 500; }, absl::Seconds(60)));
  KillShipper();
  StartShipper(/*batch_lines=*/50);
  ASSERT_TRUE(WaitReceived(4 + 3000));
  ASSERT_TRUE(WaitAcked());
  EXPECT_EQ(Received(), 4 + 3000);

  // 5. Rotation while following: two failures before the rename, two in the new file.
  Append("203.0.113.3", 2);
  ASSERT_EQ(std::rename(log_.c_str(), (log_ + ".1").c_str()), 0);
  Append("203.0.113.3", 2);
  ASSERT_TRUE(Banned("203.0.113.3"));
  ASSERT_TRUE(WaitAcked());
  EXPECT_EQ(Received(), 4 + 3000 + 4);
  // And a clean stop prints what was acked.
  EXPECT_EQ(StopShipper(), 0);

  EXPECT_FALSE(Decided("203.0.113.5"));
  EXPECT_EQ(EmulatorAccessRuleValues(*cf_),
            (std::set<std::string>{"203.0.113.1", "203.0.113.2", "203.0.113.3"}));
}

}  // namespace
}  // namespace palisade
