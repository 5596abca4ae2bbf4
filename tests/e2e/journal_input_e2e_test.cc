// End to end for the journal input (issue 14 §1): the real palisaded reads a journal directory
// (inputs { journal { directory matches } }) while the test appends real journal entries to it
// with systemd-journal-remote, as journald would write them. sshd failures of ssh.service are
// banned at the emulator; the same lines from another unit are not read at all, and a MESSAGE
// carrying a forged second line does not count. Then restarts: after a clean stop and after a
// kill -9, the journal is read on from the cursor saved with the windows: nothing counted twice
// (a ban would come too early) and nothing lost (a ban would never come).
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
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
using ::palisade::testing::RunToExit;
using ::palisade::testing::ScrapeMetric;
using ::palisade::testing::WaitFor;

class JournalInputE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::string(std::getenv("TEST_TMPDIR")) + "/journal";
    std::system(absl::StrCat("rm -rf ", dir_, " && mkdir -p ", dir_).c_str());
    absl::StatusOr<std::unique_ptr<Emulator>> cf = Emulator::Start();
    ASSERT_TRUE(cf.ok()) << cf.status();
    cf_ = *std::move(cf);
    // No periodic snapshot while the test runs (an hour): the ones it sees are the clean stop's.
    config_ = ::palisade::testing::WriteEdgeConfig(
        *cf_, cf_->token_file(), {"tests/e2e/testdata/file_input.textproto"},
        absl::StrCat(
            "inputs { journal { name: \"journal\" directory: \"", dir_,
            "\" matches: \"_SYSTEMD_UNIT=ssh.service\" } poll_interval { nanos: 50000000 } }\n",
            "snapshot_interval { seconds: 3600 }\n"));
    state_ = std::string(std::getenv("TEST_TMPDIR")) + "/journal-input.db";
    std::remove(state_.c_str());
  }

  void StartDaemon() {
    absl::StatusOr<std::unique_ptr<Daemon>> d =
        Daemon::Start({"--config=" + config_, "--shutdown_grace=200ms"}, state_);
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
  }

  // Appends entries (export format) to the journal file, through systemd-journal-remote.
  void Write(const std::string& entries) {
    const std::string in = dir_ + "/../entries.export";
    std::ofstream(in, std::ios::binary | std::ios::trunc) << entries;
    const std::string cmd = absl::StrCat("/lib/systemd/systemd-journal-remote --output=", dir_,
                                         "/remote.journal - < ", in, " 2>/dev/null");
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }

  // `n` failed passwords from `ip`, stamped now, written by sshd of `unit`.
  static std::string Failures(const std::string& ip, int n,
                              const std::string& unit = "ssh.service") {
    std::string out;
    for (int i = 0; i < n; ++i) {
      absl::StrAppend(&out, "__REALTIME_TIMESTAMP=", absl::ToUnixMicros(absl::Now()),
                      "\n_PID=", 100 + i, "\nSYSLOG_IDENTIFIER=sshd\n_SYSTEMD_UNIT=", unit,
                      "\n_HOSTNAME=web-1\nMESSAGE=Failed password for root from ", ip,
                      " port 22 ssh2\n\n");
    }
    return out;
  }
  void Fail(const std::string& ip, int n) { Write(Failures(ip, n)); }

  double LinesTaken() {
    return ScrapeMetric(*daemon_, "palisade_input_lines_total", {"input=\"journal\""});
  }
  bool WaitLinesTaken(double n) {
    return WaitFor([&] { return LinesTaken() >= n; }, absl::Seconds(60));
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

  std::string dir_, config_, state_;
  std::unique_ptr<Emulator> cf_;
  std::unique_ptr<Daemon> daemon_;
};

TEST_F(JournalInputE2eTest, BansFromTheUnitMatchedOnlyAndForgedLinesDoNotCount) {
  StartDaemon();  // the directory is empty: the journal file is waited for
  // Another unit writing as "sshd" is not read at all; three of ssh.service are not enough.
  Write(Failures("203.0.113.1", 4, "evil.service") + Failures("203.0.113.1", 3));
  ASSERT_TRUE(WaitLinesTaken(3));
  // A MESSAGE whose second line looks like a failure of .66, four times: one line each, the
  // header the daemon's, so the rule (anchored at the message start) sees "hello ...".
  std::string forged;
  for (int i = 0; i < 4; ++i) {
    const std::string message =
        "hello\nDec  2 03:03:35 web-1 sshd[9]: Failed password for root from 203.0.113.66 port "
        "22 ssh2";
    absl::StrAppend(&forged, "__REALTIME_TIMESTAMP=", absl::ToUnixMicros(absl::Now()),
                    "\n_PID=9\nSYSLOG_IDENTIFIER=sshd\n_SYSTEMD_UNIT=ssh.service\nMESSAGE\n");
    const uint64_t n = message.size();
    for (int b = 0; b < 8; ++b) forged.push_back(static_cast<char>((n >> (8 * b)) & 0xff));
    absl::StrAppend(&forged, message, "\n\n");
  }
  Write(forged);
  ASSERT_TRUE(WaitLinesTaken(7));
  EXPECT_FALSE(Decided("203.0.113.1"));
  Fail("203.0.113.1", 1);
  ASSERT_TRUE(Banned("203.0.113.1")) << ::palisade::testing::EmulatorState(*cf_).dump(2);
  EXPECT_EQ(LinesTaken(), 8);
  EXPECT_FALSE(Decided("203.0.113.66"));
  EXPECT_EQ(EmulatorAccessRuleValues(*cf_), (std::set<std::string>{"203.0.113.1"}));
}

TEST_F(JournalInputE2eTest, RestartsReadOnExactlyAfterTheSavedCursor) {
  // A clean stop saves the windows (three failures of .10) with the journal cursor.
  StartDaemon();
  Fail("203.0.113.10", 3);
  ASSERT_TRUE(WaitLinesTaken(3));
  ASSERT_EQ(daemon_->Stop(), 0);
  StartDaemon();
  // Read on after the cursor: one new entry (another address), and nothing before it again
  // (had the journal been read from its head, four lines would be taken and .10 banned).
  Fail("203.0.113.99", 1);
  ASSERT_TRUE(WaitLinesTaken(1));
  EXPECT_EQ(LinesTaken(), 1);
  EXPECT_FALSE(Decided("203.0.113.10"));
  // Nothing lost either: the restored window holds three, the fourth bans.
  Fail("203.0.113.10", 1);
  ASSERT_TRUE(Banned("203.0.113.10"));

  // kill -9: no snapshot since the clean stop, so the entries since then (.99, .10's fourth,
  // and three of .20) are read again into the windows restored from it: .10's ban is already
  // there (an extension, not a new ban), and .20 counts three, not six.
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

TEST_F(JournalInputE2eTest, AJournalDirectoryThatCannotBeOpenedRefusesTheStart) {
  const std::string config = ::palisade::testing::WriteEdgeConfig(
      *cf_, cf_->token_file(), {"tests/e2e/testdata/file_input.textproto"},
      absl::StrCat("inputs { journal { name: \"lost\" directory: \"", dir_, "/missing\" } }\n"));
  const auto [status, text] = RunToExit({"--config=" + config});
  EXPECT_EQ(status, 2) << text;
  EXPECT_NE(text.find(absl::StrCat("refusing to start: inputs.journal[0] (\"lost\"): directory ",
                                   dir_, "/missing: No such file or directory")),
            std::string::npos)
      << text;
}

}  // namespace
}  // namespace palisade
