// End to end for file inputs (issue 14 §1): the real palisaded follows a log file it was given in
// its config (inputs { files { ... } }) while the test writes to it as a daemon and logrotate
// would: appends, a rotation by rename + create with lines written just before it, a
// copytruncate. Bans reach the real emulator. Then restarts: after a clean stop and after a
// kill -9, the file is read on from the position saved with the windows: nothing counted twice
// (a ban would come too early) and nothing lost (a ban would never come).
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "palisade/v1/palisade.grpc.pb.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::palisade::testing::ActionsPending;
using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;
using ::palisade::testing::EmulatorAccessRuleValues;
using ::palisade::testing::ScrapeMetric;
using ::palisade::testing::WaitFor;

class FileInputE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::getenv("TEST_TMPDIR");
    log_ = dir_ + "/auth.log";
    std::remove(log_.c_str());
    std::remove((log_ + ".1").c_str());
    absl::StatusOr<std::unique_ptr<Emulator>> cf = Emulator::Start();
    ASSERT_TRUE(cf.ok()) << cf.status();
    cf_ = *std::move(cf);
    // No periodic snapshot while the test runs (an hour): the ones it sees are the clean stop's.
    config_ = ::palisade::testing::WriteEdgeConfig(
        *cf_, cf_->token_file(), {"tests/e2e/testdata/file_input.textproto"},
        absl::StrCat("inputs { files { name: \"auth\" paths: \"", log_,
                     "\" format: \"syslog\" time_zone: \"UTC\" } poll_interval { nanos: 50000000 } "
                     "threads: 3 }\n",
                     "snapshot_interval { seconds: 3600 }\n"));
    state_ = dir_ + "/file-input.db";
    std::remove(state_.c_str());
  }

  void StartDaemon() {
    absl::StatusOr<std::unique_ptr<Daemon>> d =
        Daemon::Start({"--config=" + config_, "--shutdown_grace=200ms"}, state_);
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
  }

  // `n` failed passwords from `ip`, stamped now (UTC), appended to `path` (default: the log).
  void Fail(const std::string& ip, int n, const std::string& path = "") {
    std::ofstream out(path.empty() ? log_ : path, std::ios::app);
    const std::string stamp = absl::FormatTime("%b %e %H:%M:%S", absl::Now(), absl::UTCTimeZone());
    for (int i = 0; i < n; ++i) {
      out << stamp << " web-1 sshd[" << 100 + i << "]: Failed password for root from " << ip
          << " port 22 ssh2\n";
    }
  }

  double LinesTaken() {
    return ScrapeMetric(*daemon_, "palisade_input_lines_total", {"input=\"auth\""});
  }
  bool WaitLinesTaken(double n) {
    return WaitFor([&] { return LinesTaken() >= n; }, absl::Seconds(60));
  }
  bool Banned(const std::string& ip) {
    return WaitFor(
        [&] { return EmulatorAccessRuleValues(*cf_).count(ip) > 0 && ActionsPending(*daemon_) == 0; },
        absl::Seconds(60));
  }
  // Whether the daemon decided on `ip` (decisions are made before the lines count as taken).
  bool Decided(const std::string& ip) {
    auto channel = grpc::CreateChannel(daemon_->grpc_address(), grpc::InsecureChannelCredentials());
    grpc::ClientContext ctx;
    palisade::v1::ListDecisionsRequest request;
    request.set_target(ip);
    palisade::v1::ListDecisionsResponse response;
    EXPECT_TRUE(palisade::v1::Decisions::NewStub(channel)->List(&ctx, request, &response).ok());
    return response.decisions_size() > 0;
  }

  std::string dir_, log_, config_, state_;
  std::unique_ptr<Emulator> cf_;
  std::unique_ptr<Daemon> daemon_;
};

TEST_F(FileInputE2eTest, FollowsAppendsAndBothKindsOfRotation) {
  StartDaemon();  // the file does not exist yet: waited for
  // The config's inputs.threads: three threads follow the file.
  EXPECT_EQ(ScrapeMetric(*daemon_, "palisade_file_input_threads"), 3);
  Fail("203.0.113.1", 4);
  ASSERT_TRUE(Banned("203.0.113.1")) << ::palisade::testing::EmulatorState(*cf_).dump(2);

  // Rename + create: two lines written just before the rotation, two after it.
  Fail("203.0.113.2", 2);
  ASSERT_EQ(std::rename(log_.c_str(), (log_ + ".1").c_str()), 0);
  Fail("203.0.113.2", 2);
  ASSERT_TRUE(Banned("203.0.113.2"));

  // copytruncate: the file is copied away and emptied in place, then written again.
  ASSERT_TRUE(WaitLinesTaken(8));
  std::system(absl::StrCat("cp ", log_, " ", log_, ".1 && truncate -s 0 ", log_).c_str());
  Fail("203.0.113.3", 4);
  ASSERT_TRUE(Banned("203.0.113.3"));
  EXPECT_EQ(ScrapeMetric(*daemon_, "palisade_input_rotations_total", {"input=\"auth\""}), 1);
  EXPECT_GE(ScrapeMetric(*daemon_, "palisade_input_truncations_total", {"input=\"auth\""}), 1);
  EXPECT_EQ(EmulatorAccessRuleValues(*cf_),
            (std::set<std::string>{"203.0.113.1", "203.0.113.2", "203.0.113.3"}));
}

TEST_F(FileInputE2eTest, RestartsReadOnExactlyWhereTheWindowsWere) {
  // A clean stop saves the windows (three failures of .10) with the file's position.
  StartDaemon();
  Fail("203.0.113.10", 3);
  ASSERT_TRUE(WaitLinesTaken(3));
  ASSERT_EQ(daemon_->Stop(), 0);
  StartDaemon();
  // Read on from the saved position: one new line (another address), and nothing before it
  // again (had the file been read from its start, four lines would be taken and .10 banned).
  Fail("203.0.113.99", 1);
  ASSERT_TRUE(WaitLinesTaken(1));
  EXPECT_EQ(LinesTaken(), 1);
  EXPECT_FALSE(Decided("203.0.113.10"));
  // Nothing lost either: the restored window holds three, the fourth bans.
  Fail("203.0.113.10", 1);
  ASSERT_TRUE(Banned("203.0.113.10"));

  // kill -9: no snapshot since the clean stop, so the lines since then (.99, .10's fourth, and
  // three of .20) are read again into the windows restored from it: .10's ban is already there
  // (an extension, not a new ban), and .20 counts three, not six.
  Fail("203.0.113.20", 3);
  ASSERT_TRUE(WaitLinesTaken(5));
  daemon_->Kill();
  StartDaemon();
  ASSERT_TRUE(WaitLinesTaken(5));
  EXPECT_EQ(LinesTaken(), 5);
  EXPECT_FALSE(Decided("203.0.113.20"));
  Fail("203.0.113.20", 1);
  ASSERT_TRUE(Banned("203.0.113.20"));
  EXPECT_EQ(EmulatorAccessRuleValues(*cf_),
            (std::set<std::string>{"203.0.113.10", "203.0.113.20"}));
}

// A service's own log read as raw lines (vsftpd.log), found on a first start with no position
// saved: the file is read from its start, and each line counts at its own time stamp. Five
// failed logins of one address a day apart (a user's typos over a week) are five windows, not
// a ban; five within a minute, stamped now, are the ban (the stamps are read, not ignored).
// Before raw lines had a time, all ten counted at the moment they were read: both banned.
TEST_F(FileInputE2eTest, RawLinesOfAnExistingFileCountAtTheirOwnTime) {
  const std::string vsftpd_log = dir_ + "/vsftpd.log";
  const std::string pack = dir_ + "/vsftpd-e2e.textproto";
  {
    // rules/vsftpd.textproto's own-log rule: 5 in 10 minutes bans for an hour.
    std::ofstream out(pack);
    out << R"pb(name: "vsftpd-e2e"
                rules {
                  id: "e2e-vsftpd-fail-login"
                  formats: [ LOG_FORMAT_RAW ]
                  patterns: "^[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2} [0-9]{4} \\[pid [0-9]+\\] \\[.*?\\] FAIL LOGIN: Client \"(?P<ip>[0-9A-Fa-f:.]+)\"$"
                  threshold {
                    count: 5
                    window { seconds: 600 }
                  }
                  decision {
                    action: ACTION_BLOCK
                    duration { seconds: 3600 }
                  }
                  examples {
                    line: "Fri Jan 19 12:20:33 2007 [pid 27202] [anonymous] FAIL LOGIN: Client \"203.0.113.7\""
                    key: "203.0.113.7"
                  }
                }
    )pb";
  }
  {
    // vsftpd's default use_localtime=NO: its ctime stamps are UTC, as the input says.
    std::ofstream out(vsftpd_log, std::ios::trunc);
    const absl::Time now = absl::Now();
    auto line = [&](absl::Time t, const std::string& ip) {
      out << absl::FormatTime("%a %b %e %H:%M:%S %Y", t, absl::UTCTimeZone())
          << " [pid 2100] [admin] FAIL LOGIN: Client \"" << ip << "\"\n";
    };
    for (int day = 5; day >= 1; --day) line(now - absl::Hours(24 * day), "203.0.113.30");
    for (int s = 50; s >= 10; s -= 10) line(now - absl::Seconds(s), "203.0.113.31");
  }
  config_ = ::palisade::testing::WriteEdgeConfig(
      *cf_, cf_->token_file(), {},
      absl::StrCat("rule_files: \"", pack, "\"\n", "inputs { files { name: \"vsftpd\" paths: \"",
                   vsftpd_log,
                   "\" format: \"raw\" time_zone: \"UTC\" } poll_interval { nanos: 50000000 } }\n",
                   "snapshot_interval { seconds: 3600 }\n"));
  StartDaemon();
  // All ten lines taken: every decision they make is made by then.
  ASSERT_TRUE(WaitFor(
      [&] {
        return ScrapeMetric(*daemon_, "palisade_input_lines_total", {"input=\"vsftpd\""}) >= 10;
      },
      absl::Seconds(60)));
  ASSERT_TRUE(Banned("203.0.113.31")) << ::palisade::testing::EmulatorState(*cf_).dump(2);
  EXPECT_FALSE(Decided("203.0.113.30"));
  EXPECT_EQ(EmulatorAccessRuleValues(*cf_), (std::set<std::string>{"203.0.113.31"}));
}

}  // namespace
}  // namespace palisade
