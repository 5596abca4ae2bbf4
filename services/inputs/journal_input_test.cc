// JournalInput over real journal files, written by systemd-journal-remote from export-format
// entries (what `journalctl -o export` prints): matches, the rebuilt syslog line, cursor resume,
// a vacuumed cursor, hostile MESSAGE and identifier, a local user's entry (no daemon's tag),
// following while running.
#include "services/inputs/journal_input.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/status_matchers.h"
#include "services/formats/line_parser.h"

namespace palisade {
namespace {

using ::palisade::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int64_t kBase = 1796180615000000;  // 2026-12-02T03:03:35Z, in microseconds

// One entry in the export format: text fields as NAME=value lines, a value holding a newline
// (or any binary) as NAME\n<le64 length><bytes>\n.
std::string Entry(int64_t usec, const std::vector<std::pair<std::string, std::string>>& fields) {
  std::string out = absl::StrCat("__REALTIME_TIMESTAMP=", usec, "\n");
  for (const auto& [name, value] : fields) {
    if (value.find('\n') == std::string::npos) {
      absl::StrAppend(&out, name, "=", value, "\n");
      continue;
    }
    absl::StrAppend(&out, name, "\n");
    uint64_t n = value.size();
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
    absl::StrAppend(&out, value, "\n");
  }
  return out + "\n";
}

std::string Ssh(int64_t usec, int pid, const std::string& message,
                const std::string& unit = "ssh.service", const std::string& host = "web-1") {
  return Entry(usec, {{"_PID", std::to_string(pid)},
                      {"SYSLOG_IDENTIFIER", "sshd"},
                      {"_SYSTEMD_UNIT", unit},
                      {"_HOSTNAME", host},
                      {"MESSAGE", message}});
}

class JournalInputTest : public ::testing::Test {
 protected:
  JournalInputTest() {
    dir_ = absl::StrCat(std::getenv("TEST_TMPDIR"), "/",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::system(absl::StrCat("rm -rf ", dir_, " && mkdir -p ", dir_).c_str());
    file_ = dir_ + "/x.journal";
  }

  // Appends entries to a journal file (created when missing), as journal-remote writes them.
  void Write(const std::string& entries, const std::string& path = "") {
    const std::string in = dir_ + "/in.export";
    std::ofstream(in, std::ios::binary | std::ios::trunc) << entries;
    const std::string cmd = absl::StrCat("/lib/systemd/systemd-journal-remote --output=",
                                         path.empty() ? file_ : path, " - < ", in,
                                         " 2>/dev/null");
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }

  palisade::v1::JournalInput Config(const std::vector<std::string>& matches = {}) {
    palisade::v1::JournalInput c;
    c.set_name("journal");
    c.add_files(file_);
    for (const auto& m : matches) c.add_matches(m);
    return c;
  }

  absl::StatusOr<std::unique_ptr<JournalInput>> Make(
      const palisade::v1::JournalInput& config,
      std::vector<palisade::v1::JournalCheckpoint> from = {}) {
    JournalInputOptions options;
    options.batch_lines = batch_lines_;
    options.wait_interval = wait_interval_;
    options.max_line_bytes = 200;
    options.checkpoints = std::move(from);
    options.log = [this](const std::string& m) {
      absl::MutexLock lock(&mu_);
      logged_.push_back(m);
    };
    options.listed = [this] {
      absl::MutexLock lock(&mu_);
      ++listings_;
    };
    options.header_read = [this](const std::string& path) {
      absl::MutexLock lock(&mu_);
      headers_read_.push_back(path.substr(path.rfind('/') + 1));
    };
    options.clock = &clock_;  // a directory is listed again once wait_interval passed on it
    return JournalInput::Create(
        0, config, options,
        [this](const palisade::v1::LogBatch& b) {
          absl::MutexLock lock(&mu_);
          if (refuse_) return absl::UnavailableError("shutting down");
          EXPECT_EQ(b.source(), "journal");
          EXPECT_EQ(b.format(), palisade::v1::LOG_FORMAT_SYSLOG);
          for (const auto& r : b.records()) {
            lines_.push_back(r.line());
            times_.push_back(r.event_time().seconds() * 1000000 + r.event_time().nanos() / 1000);
          }
          return absl::OkStatus();
        },
        registry_);
  }

  // Polls until a round delivers nothing and has nothing more to read.
  void Drain(JournalInput& input) {
    bool more = false;
    while (input.PollOnce(&more) > 0 || more) {
    }
  }

  // Stops a started input whose wait_interval is long: the thread may have begun a wait just
  // after the stop was asked for, which only a change of the journal ends early, so a user's
  // entry (read past) is written until Stop returned.
  void StopWaking(JournalInput& input) {
    std::atomic<bool> stopped{false};
    std::thread stopper([&] {
      input.Stop();
      stopped = true;
    });
    for (int64_t i = 0; !stopped; ++i) {
      Write(Entry(kBase + 1000000 + i, {{"_UID", "1000"}, {"MESSAGE", "wake"}}));
      absl::SleepFor(absl::Milliseconds(20));
    }
    stopper.join();
  }

  std::vector<std::string> Logged() {
    absl::MutexLock lock(&mu_);
    return logged_;
  }

  palisade::v1::JournalCheckpoint Position(JournalInput& input) {
    palisade::v1::JournalCheckpoint out;
    input.Consistent([&](const palisade::v1::JournalCheckpoint& c) { out = c; });
    return out;
  }

  double Metric(const std::string& name, const std::string& reason = "") {
    for (const auto& family : registry_.Collect()) {
      if (family.name != name) continue;
      for (const auto& m : family.metric) {
        bool ok = true;
        for (const auto& l : m.label) {
          if (l.name == "reason" && l.value != reason) ok = false;
        }
        if (ok) return family.type == prometheus::MetricType::Counter ? m.counter.value
                                                                       : m.gauge.value;
      }
    }
    return -1;
  }

  void Clear() {
    absl::MutexLock lock(&mu_);
    lines_.clear();
    times_.clear();
  }

  std::vector<std::string> Lines() {
    absl::MutexLock lock(&mu_);
    return lines_;
  }

  std::string dir_, file_;
  prometheus::Registry registry_;
  absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> times_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> logged_ ABSL_GUARDED_BY(mu_);
  bool refuse_ ABSL_GUARDED_BY(mu_) = false;
  int listings_ ABSL_GUARDED_BY(mu_) = 0;  // of a directory input's directory
  uint32_t batch_lines_ = 2;               // for the inputs Make builds after it is set
  absl::Duration wait_interval_;           // likewise; zero: the input's default
  std::vector<std::string> headers_read_ ABSL_GUARDED_BY(mu_);  // journal files' base names
  SimulatedClock clock_;
};

TEST_F(JournalInputTest, RebuildsSyslogLinesWithTheJournalsTimeAndMatchesLikeJournalctl) {
  Write(Ssh(kBase, 42, "Failed password for root from 203.0.113.1 port 22 ssh2") +
        Entry(kBase + 1, {{"_PID", "7"}, {"_COMM", "cron"}, {"_SYSTEMD_UNIT", "cron.service"},
                          {"MESSAGE", "(root) CMD (true)"}}) +
        Ssh(kBase + 2, 43, "Accepted publickey for alice", "ssh.service", "web-2"));
  auto input = Make(Config({"_SYSTEMD_UNIT=ssh.service"}));
  ASSERT_TRUE(input.ok()) << input.status();
  Drain(**input);
  EXPECT_THAT(Lines(),
              ElementsAre("2026-12-02T03:03:35.000000Z web-1 sshd[42]: Failed password for root "
                          "from 203.0.113.1 port 22 ssh2",
                          "2026-12-02T03:03:35.000002Z web-2 sshd[43]: Accepted publickey for alice"));
  {
    absl::MutexLock lock(&mu_);
    EXPECT_THAT(times_, ElementsAre(kBase, kBase + 2));
  }
  EXPECT_EQ(Metric("palisade_input_lines_total"), 2);

  // The same field twice is OR; another field is AND; _COMM stands in for a missing identifier.
  Clear();
  auto both = Make(Config({"_SYSTEMD_UNIT=ssh.service", "_SYSTEMD_UNIT=cron.service"}));
  ASSERT_TRUE(both.ok()) << both.status();
  Drain(**both);
  EXPECT_EQ(Lines().size(), 3u);
  EXPECT_EQ(Lines()[1], "2026-12-02T03:03:35.000001Z cron[7]: (root) CMD (true)");
  Clear();
  auto one = Make(Config({"_SYSTEMD_UNIT=ssh.service", "_SYSTEMD_UNIT=cron.service",
                          "_HOSTNAME=web-2"}));
  ASSERT_TRUE(one.ok()) << one.status();
  Drain(**one);
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr("web-2 sshd[43]: Accepted")));
}

TEST_F(JournalInputTest, ResumesAfterTheSavedCursorExactly) {
  Write(Ssh(kBase, 1, "one") + Ssh(kBase + 1, 2, "two") +
        Entry(kBase + 2, {{"SYSLOG_IDENTIFIER", "cron"}, {"MESSAGE", "other unit"}}) +
        Ssh(kBase + 3, 3, "three"));
  palisade::v1::JournalCheckpoint saved;
  {
    auto input = Make(Config({"SYSLOG_IDENTIFIER=sshd"}));
    ASSERT_TRUE(input.ok()) << input.status();
    Drain(**input);
    saved = Position(**input);
  }
  EXPECT_EQ(saved.input(), "journal");
  EXPECT_THAT(saved.cursor(), HasSubstr("i="));
  ASSERT_EQ(Lines().size(), 3u);
  Clear();
  // Entries written while it was down (one of another identifier), then a restart.
  Write(Entry(kBase + 4, {{"SYSLOG_IDENTIFIER", "cron"}, {"MESSAGE", "x"}}) +
        Ssh(kBase + 5, 4, "four") + Ssh(kBase + 6, 5, "five"));
  auto again = Make(Config({"SYSLOG_IDENTIFIER=sshd"}), {saved});
  ASSERT_TRUE(again.ok()) << again.status();
  Drain(**again);
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr("sshd[4]: four"), HasSubstr("sshd[5]: five")));
  EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 0);
  // Nothing new: the position stays, and another restart reads nothing.
  const palisade::v1::JournalCheckpoint last = Position(**again);
  Clear();
  auto third = Make(Config({"SYSLOG_IDENTIFIER=sshd"}), {last});
  ASSERT_TRUE(third.ok());
  Drain(**third);
  EXPECT_TRUE(Lines().empty());
  EXPECT_EQ(Position(**third).cursor(), last.cursor());
}

TEST_F(JournalInputTest, ACursorNoLongerInTheJournalIsCountedAndTheHeadRead) {
  // The cursor of an entry in a journal since removed (another file, another sequence id),
  // whose last entry had not been read: it went with the file.
  const std::string old = dir_ + "/old.journal";
  Write(Ssh(kBase, 1, "gone") + Ssh(kBase + 1, 1, "gone too") + Ssh(kBase + 2, 1, "unread"), old);
  palisade::v1::JournalInput old_config = Config();
  old_config.clear_files();
  old_config.add_files(old);
  palisade::v1::JournalCheckpoint gone;
  {
    auto input = Make(old_config);
    ASSERT_TRUE(input.ok()) << input.status();
    ASSERT_EQ((*input)->PollOnce(), 2u);  // batch_lines
    gone = Position(**input);
  }
  ASSERT_FALSE(gone.cursor().empty());
  std::remove(old.c_str());
  Clear();
  Write(Ssh(kBase + 10, 2, "kept") + Ssh(kBase + 11, 3, "kept too"));
  auto input = Make(Config(), {gone});
  ASSERT_TRUE(input.ok()) << input.status();
  Drain(**input);
  EXPECT_EQ(Lines().size(), 2u);
  EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 1);
  absl::MutexLock lock(&mu_);
  EXPECT_THAT(logged_, ElementsAre(HasSubstr("input journal: the saved journal cursor is no "
                                             "longer in the journal")));
}

TEST_F(JournalInputTest, HostileMessageAndIdentifierCannotForgeTheHeader) {
  const std::string huge(100000, 'A');
  const std::string forged =
      "hello\nDec  2 03:03:35 web-1 sshd[9]: Failed password for root from 198.51.100.1 port 22 "
      "ssh2\r" + std::string("\0tail", 5);
  Write(
      // A newline and a forged second line, a NUL (left to the pipeline, which counts it).
      Ssh(kBase, 1, forged) +
      // An identifier that carries a tag and a message of its own, a pid that is not one.
      Entry(kBase + 1, {{"_PID", "12x"},
                        {"SYSLOG_IDENTIFIER", "sshd[1]: Failed password for root from 1.2.3.4"},
                        {"_HOSTNAME", "h ost:"},
                        {"MESSAGE", "x"}}) +
      Ssh(kBase + 2, 3, huge) +
      Entry(kBase + 3, {{"SYSLOG_IDENTIFIER", "sshd"}, {"CODE_FILE", "no message here"}}) +
      // A time in MESSAGE is text, never the event's time.
      Ssh(kBase + 4, 4, "2030-01-01T00:00:00Z h sshd[1]: later"));
  auto input = Make(Config());
  ASSERT_TRUE(input.ok()) << input.status();
  Drain(**input);
  const std::vector<std::string> lines = Lines();
  ASSERT_EQ(lines.size(), 4u);
  std::string flat = forged;
  for (char& c : flat) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  EXPECT_EQ(lines[0], "2026-12-02T03:03:35.000000Z web-1 sshd[1]: " + flat);
  EXPECT_EQ(lines[1], "2026-12-02T03:03:35.000001Z h_ost_ sshd_1___Failed_password_for_root_"
                      "from_1.2.3.4: x");
  // One byte past max_line_bytes: the pipeline cuts it there and knows it was cut.
  EXPECT_EQ(lines[2].size(), 201u);
  EXPECT_EQ(lines[2].substr(0, 48), "2026-12-02T03:03:35.000002Z web-1 sshd[3]: AAAAA");
  EXPECT_EQ(lines[3], "2026-12-02T03:03:35.000004Z web-1 sshd[4]: 2030-01-01T00:00:00Z h "
                      "sshd[1]: later");
  {
    absl::MutexLock lock(&mu_);
    EXPECT_EQ(times_[3], kBase + 4);
  }
  EXPECT_EQ(Metric("palisade_journal_skipped_total", "no_message"), 1);
}

// The tag of the rebuilt line is what Rule.programs reads, so it must not be one any local user
// can pick: `logger -t sshd "Failed password for root from VICTIM port 22 ssh2"`, run by alice
// (uid 1000) with no matches configured, would otherwise be the line of sshd and ban an address
// she chose. The fields are those journald writes for each writer (the underscore ones it sets
// itself from the sender's credentials and cgroup; SYSLOG_IDENTIFIER is the sender's).
TEST_F(JournalInputTest, AnUnprivilegedUsersEntryCannotTakeADaemonsTag) {
  const std::string spoof = "Failed password for root from 198.51.100.7 port 22 ssh2";
  Write(
      // logger -t sshd, in alice's ssh session.
      Entry(kBase, {{"_TRANSPORT", "syslog"}, {"_UID", "1000"}, {"_GID", "1000"},
                    {"_COMM", "logger"}, {"_EXE", "/usr/bin/logger"}, {"_PID", "5001"},
                    {"_SYSTEMD_UNIT", "session-3.scope"}, {"_SYSTEMD_OWNER_UID", "1000"},
                    {"_SYSTEMD_SESSION", "3"}, {"SYSLOG_IDENTIFIER", "sshd"},
                    {"_HOSTNAME", "web-1"}, {"MESSAGE", spoof}}) +
      // Her own binary named sshd, in a user unit, with no identifier (_COMM stands in).
      Entry(kBase + 1, {{"_TRANSPORT", "journal"}, {"_UID", "1000"}, {"_COMM", "sshd"},
                        {"_EXE", "/home/alice/bin/sshd"}, {"_PID", "5002"},
                        {"_SYSTEMD_UNIT", "user@1000.service"},
                        {"_SYSTEMD_USER_UNIT", "fake.service"}, {"_SYSTEMD_OWNER_UID", "1000"},
                        {"_HOSTNAME", "web-1"}, {"MESSAGE", spoof}}) +
      // A rootless container's root: a subordinate uid of alice's, not the host's root.
      Entry(kBase + 2, {{"_TRANSPORT", "syslog"}, {"_UID", "100000"}, {"_COMM", "sshd"},
                        {"_PID", "5003"}, {"SYSLOG_IDENTIFIER", "sshd"},
                        {"_HOSTNAME", "web-1"}, {"MESSAGE", spoof}}) +
      // The real sshd, before and after authentication (then in the user's session scope).
      Entry(kBase + 3, {{"_TRANSPORT", "syslog"}, {"_UID", "0"}, {"_COMM", "sshd"},
                        {"_EXE", "/usr/sbin/sshd"}, {"_PID", "812"},
                        {"_SYSTEMD_UNIT", "ssh.service"}, {"SYSLOG_IDENTIFIER", "sshd"},
                        {"_HOSTNAME", "web-1"},
                        {"MESSAGE", "Failed password for root from 203.0.113.9 port 4122 ssh2"}}) +
      Entry(kBase + 4, {{"_TRANSPORT", "syslog"}, {"_UID", "0"}, {"_COMM", "sshd"},
                        {"_PID", "813"}, {"_SYSTEMD_UNIT", "session-3.scope"},
                        {"_SYSTEMD_OWNER_UID", "1000"}, {"SYSLOG_IDENTIFIER", "sshd"},
                        {"_HOSTNAME", "web-1"},
                        {"MESSAGE", "pam_unix(sshd:session): session closed for user alice"}}) +
      // Postfix's smtpd and dovecot's auth and imap-login: system users, identifiers that are
      // not their _COMM.
      Entry(kBase + 5, {{"_TRANSPORT", "syslog"}, {"_UID", "106"}, {"_COMM", "smtpd"},
                        {"_PID", "2201"}, {"_SYSTEMD_UNIT", "postfix@-.service"},
                        {"SYSLOG_IDENTIFIER", "postfix/smtpd"}, {"_HOSTNAME", "mx-1"},
                        {"MESSAGE", "warning: unknown[192.0.2.10]: SASL LOGIN authentication "
                                    "failed: UGFzc3dvcmQ6"}}) +
      Entry(kBase + 6, {{"_TRANSPORT", "syslog"}, {"_UID", "112"}, {"_COMM", "auth"},
                        {"_PID", "3301"}, {"_SYSTEMD_UNIT", "dovecot.service"},
                        {"SYSLOG_IDENTIFIER", "dovecot"}, {"_HOSTNAME", "mx-1"},
                        {"MESSAGE", "auth: pam(alice,192.0.2.11): pam_authenticate() failed: "
                                    "Authentication failure"}}) +
      Entry(kBase + 7, {{"_TRANSPORT", "syslog"}, {"_UID", "113"}, {"_COMM", "imap-login"},
                        {"_PID", "3302"}, {"_SYSTEMD_UNIT", "dovecot.service"},
                        {"SYSLOG_IDENTIFIER", "dovecot"}, {"_HOSTNAME", "mx-1"},
                        {"MESSAGE", "imap-login: Disconnected (auth failed, 1 attempts in 2 "
                                    "secs): user=<alice>, rip=192.0.2.12"}}) +
      // mysqld as mysql, a DynamicUser= service, a daemon that dropped to nobody.
      Entry(kBase + 8, {{"_TRANSPORT", "stdout"}, {"_UID", "110"}, {"_COMM", "mysqld"},
                        {"_PID", "990"}, {"SYSLOG_IDENTIFIER", "mysqld"},
                        {"MESSAGE", "Access denied for user 'root'@'192.0.2.13'"}}) +
      Entry(kBase + 9, {{"_TRANSPORT", "stdout"}, {"_UID", "61234"}, {"_COMM", "vaultwarden"},
                        {"_PID", "991"}, {"SYSLOG_IDENTIFIER", "vaultwarden"},
                        {"MESSAGE", "Username or password is incorrect. IP: 192.0.2.14"}}) +
      Entry(kBase + 10, {{"_TRANSPORT", "syslog"}, {"_UID", "65534"}, {"_COMM", "openvpn"},
                         {"_PID", "992"}, {"SYSLOG_IDENTIFIER", "openvpn"},
                         {"MESSAGE", "192.0.2.15:1194 TLS Auth Error"}}) +
      // The kernel's entries carry no sender: as before.
      Entry(kBase + 11, {{"_TRANSPORT", "kernel"}, {"SYSLOG_IDENTIFIER", "kernel"},
                         {"MESSAGE", "Out of memory: Killed process 42 (x)"}}));
  // Users' entries are read only when asked for (see the next test).
  palisade::v1::JournalInput config = Config();
  config.set_read_user_entries(true);
  auto input = Make(config);
  ASSERT_TRUE(input.ok()) << input.status();
  Drain(**input);
  const std::string t = "2026-12-02T03:03:35.0000";
  EXPECT_THAT(
      Lines(),
      ElementsAre(t + "00Z web-1 user-1000/sshd[5001]: " + spoof,
                  t + "01Z web-1 user-1000/sshd[5002]: " + spoof,
                  t + "02Z web-1 user-100000/sshd[5003]: " + spoof,
                  t + "03Z web-1 sshd[812]: Failed password for root from 203.0.113.9 port 4122 "
                      "ssh2",
                  t + "04Z web-1 sshd[813]: pam_unix(sshd:session): session closed for user alice",
                  t + "05Z mx-1 postfix/smtpd[2201]: warning: unknown[192.0.2.10]: SASL LOGIN "
                      "authentication failed: UGFzc3dvcmQ6",
                  t + "06Z mx-1 dovecot[3301]: auth: pam(alice,192.0.2.11): pam_authenticate() "
                      "failed: Authentication failure",
                  t + "07Z mx-1 dovecot[3302]: imap-login: Disconnected (auth failed, 1 attempts "
                      "in 2 secs): user=<alice>, rip=192.0.2.12",
                  t + "08Z mysqld[990]: Access denied for user 'root'@'192.0.2.13'",
                  t + "09Z vaultwarden[991]: Username or password is incorrect. IP: 192.0.2.14",
                  t + "10Z openvpn[992]: 192.0.2.15:1194 TLS Auth Error",
                  t + "11Z kernel: Out of memory: Killed process 42 (x)"));
  // What Rule.programs is compared with: alice's line is not sshd's.
  // The parsed line's views point into the line: the copy Lines() returns must outlive them.
  LineParser parser(palisade::v1::LOG_FORMAT_SYSLOG);
  const std::vector<std::string> lines = Lines();
  for (size_t i = 0; i < lines.size(); ++i) {
    ParsedLine parsed;
    ASSERT_TRUE(parser.Parse(lines[i], absl::FromUnixMicros(kBase), &parsed).ok()) << i;
    if (i < 3) {
      EXPECT_NE(parsed.program, "sshd") << lines[i];
    } else if (i < 5) {
      EXPECT_EQ(parsed.program, "sshd") << lines[i];
    }
  }
}

// A user's entry is skipped by default, not only kept from a daemon's tag: its MESSAGE is the
// user's own, and the rules that name no programs (pam-auth-failure, postfix's...) read any
// tag. `logger -t x "pam_unix(sshd:auth): authentication failure; ... rhost=VICTIM"`, run by
// alice (uid 1000), would count against an address she chose. Skipped entries are read past:
// the saved cursor is after them, so a restart does not read them again.
TEST_F(JournalInputTest, AUsersEntriesAreSkippedUnlessReadUserEntries) {
  const std::string pam =
      "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= "
      "rhost=198.51.100.7  user=root";
  auto alice = [&](int64_t usec, int pid) {
    return Entry(usec, {{"_TRANSPORT", "syslog"}, {"_UID", "1000"}, {"_GID", "1000"},
                        {"_COMM", "logger"}, {"_PID", std::to_string(pid)},
                        {"_SYSTEMD_UNIT", "session-3.scope"}, {"SYSLOG_IDENTIFIER", "x"},
                        {"_HOSTNAME", "web-1"}, {"MESSAGE", pam}});
  };
  Write(Entry(kBase, {{"_TRANSPORT", "syslog"}, {"_UID", "0"}, {"_COMM", "sshd"},
                      {"_PID", "812"}, {"_SYSTEMD_UNIT", "ssh.service"},
                      {"SYSLOG_IDENTIFIER", "sshd"}, {"_HOSTNAME", "web-1"},
                      {"MESSAGE", "pam_unix(sshd:auth): authentication failure; logname= uid=0 "
                                  "euid=0 tty=ssh ruser= rhost=203.0.113.9  user=root"}}) +
        alice(kBase + 1, 5001) +
        Entry(kBase + 2, {{"_TRANSPORT", "kernel"}, {"SYSLOG_IDENTIFIER", "kernel"},
                          {"MESSAGE", "Out of memory: Killed process 42 (x)"}}) +
        // The last entry read is a skipped one.
        alice(kBase + 3, 5002));
  const std::string t = "2026-12-02T03:03:35.0000";
  const std::vector<std::string> system = {
      t + "00Z web-1 sshd[812]: pam_unix(sshd:auth): authentication failure; logname= uid=0 "
          "euid=0 tty=ssh ruser= rhost=203.0.113.9  user=root",
      t + "02Z kernel: Out of memory: Killed process 42 (x)"};
  palisade::v1::JournalCheckpoint saved;
  {
    auto input = Make(Config());
    ASSERT_TRUE(input.ok()) << input.status();
    Drain(**input);
    EXPECT_EQ(Lines(), system);
    EXPECT_EQ(Metric("palisade_journal_skipped_total", "user_entry"), 2);
    EXPECT_EQ(Metric("palisade_journal_skipped_total", "no_message"), 0);
    EXPECT_EQ(Metric("palisade_input_lines_total"), 2);
    saved = Position(**input);
  }
  // A restart from the saved position reads nothing again, not even with read_user_entries:
  // the cursor is past alice's last entry, not at the last entry delivered.
  Clear();
  palisade::v1::JournalInput with_users = Config();
  with_users.set_read_user_entries(true);
  {
    auto again = Make(with_users, {saved});
    ASSERT_TRUE(again.ok()) << again.status();
    Drain(**again);
    EXPECT_TRUE(Lines().empty());
    EXPECT_EQ(Position(**again).cursor(), saved.cursor());
  }
  // read_user_entries: read, behind their "user-UID/" tag; none skipped.
  auto all = Make(with_users);
  ASSERT_TRUE(all.ok()) << all.status();
  Drain(**all);
  EXPECT_THAT(Lines(), ElementsAre(system[0], t + "01Z web-1 user-1000/x[5001]: " + pam, system[1],
                                   t + "03Z web-1 user-1000/x[5002]: " + pam));
  EXPECT_EQ(Metric("palisade_journal_skipped_total", "user_entry"), 2);
}

// A user's backlog (journald keeps a million entries a day of a chatty user service) is read
// past a bounded number of entries at a time: the reading holds the input's lock, which every
// snapshot waits for (JournalsHeld), and skipped entries never fill a batch. Each round scans at
// most 8 x batch_lines entries, takes them (the cursor moves past them) and says there is more,
// so the thread reads on at once instead of waiting on the journal.
TEST_F(JournalInputTest, AUsersBacklogIsReadPastABoundedNumberOfEntriesARound) {
  std::string entries;
  for (int i = 0; i < 100; ++i) {
    entries += Entry(kBase + i, {{"_TRANSPORT", "stdout"}, {"_UID", "1000"}, {"_PID", "5001"},
                                 {"SYSLOG_IDENTIFIER", "chatty"}, {"MESSAGE", "tick"}});
  }
  entries += Ssh(kBase + 100, 812, "Failed password for root from 203.0.113.9 port 4122 ssh2");
  Write(entries);
  auto input = Make(Config());  // batch_lines 2: 16 entries a round at most
  ASSERT_TRUE(input.ok()) << input.status();
  bool more = false;
  EXPECT_EQ((*input)->PollOnce(&more), 0u);
  EXPECT_TRUE(more);
  EXPECT_EQ(Metric("palisade_journal_skipped_total", "user_entry"), 16);
  const palisade::v1::JournalCheckpoint first = Position(**input);
  EXPECT_THAT(first.cursor(), HasSubstr(";i=10;"));  // the 16th entry's sequence number
  int rounds = 1;
  while (more) {
    (*input)->PollOnce(&more);
    ++rounds;
    ASSERT_LE(rounds, 10);
  }
  EXPECT_EQ(rounds, 7);  // 6 x 16 skipped, then 4 more and sshd's line, and the end
  EXPECT_EQ(Metric("palisade_journal_skipped_total", "user_entry"), 100);
  EXPECT_THAT(Lines(), ElementsAre("2026-12-02T03:03:35.000100Z web-1 sshd[812]: Failed password "
                                   "for root from 203.0.113.9 port 4122 ssh2"));
  EXPECT_THAT(Position(**input).cursor(), HasSubstr(";i=65;"));  // the 101st
  // A restart from the first round's position reads on from the 17th entry.
  Clear();
  auto again = Make(Config(), {first});
  ASSERT_TRUE(again.ok()) << again.status();
  Drain(**again);
  EXPECT_EQ(Metric("palisade_journal_skipped_total", "user_entry"), 100 + 84);
  EXPECT_EQ(Lines().size(), 1u);
}

// Report on dcc76f2, item 1: the thread reads on at once after a round the scan bound cut
// (PollOnce's `more`), as after a full batch. Taken for a journal's end (the thread's old
// `PollOnce() >= batch_lines`), each such round was followed by a wait, so a backlog of skipped
// entries was read at 8 x batch_lines entries per wait_interval: sshd's line behind 100 user
// entries (7 rounds of 16 at batch_lines 2) came after 5 waits, 5 minutes here. 30 s: a wide
// margin for a loaded machine, still half of one wait_interval.
TEST_F(JournalInputTest, TheThreadReadsOnAtOnceAfterARoundTheScanBoundCut) {
  std::string entries;
  for (int i = 0; i < 100; ++i) {
    entries += Entry(kBase + i, {{"_TRANSPORT", "stdout"}, {"_UID", "1000"}, {"_PID", "5001"},
                                 {"SYSLOG_IDENTIFIER", "chatty"}, {"MESSAGE", "tick"}});
  }
  entries += Ssh(kBase + 100, 812, "Failed password for root from 203.0.113.9 port 4122 ssh2");
  Write(entries);
  wait_interval_ = absl::Seconds(60);
  auto input = Make(Config());
  ASSERT_TRUE(input.ok()) << input.status();
  (*input)->Start();
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (Lines().empty() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr("sshd[812]: Failed password for root from "
                                             "203.0.113.9 port 4122 ssh2")));
  EXPECT_EQ(Metric("palisade_journal_skipped_total", "user_entry"), 100);
  StopWaking(**input);
}

// Report on dcc76f2, item 2: the first skip's log suggests a trusted_uids value only for a uid
// that may be a daemon's own. Not a login's (session-N.scope) nor a user manager's
// (user@N.service): those are a person's processes, whose words trusted would pass for a
// daemon's; not one past uint32 (a remote upload's _UID is any digits; the config refuses it);
// and the number, not the digits (a leading 0 reads as octal in a textproto). Otherwise the log
// names the counter and read_user_entries, and no value.
TEST_F(JournalInputTest, TheFirstSkipSuggestsTrustedUidsOnlyForWhatMayBeADaemonsUid) {
  struct Case {
    std::string uid, unit, suggested;  // suggested "": no value suggested
  };
  const std::vector<Case> cases = {
      {"1000", "mastodon-web.service", "trusted_uids: 1000;"},
      {"0000070000", "znc.service", "trusted_uids: 70000;"},
      {"1002", "", "trusted_uids: 1002;"},
      {"1001", "session-3.scope", ""},
      {"1001", "user@1001.service", ""},
      {"4294967296", "app.service", ""},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    SCOPED_TRACE(absl::StrCat("_UID=", c.uid, " _SYSTEMD_UNIT=", c.unit));
    std::vector<std::pair<std::string, std::string>> fields = {
        {"_UID", c.uid}, {"SYSLOG_IDENTIFIER", "x"}, {"MESSAGE", "password=hunter2"}};
    if (!c.unit.empty()) fields.push_back({"_SYSTEMD_UNIT", c.unit});
    const std::string path = absl::StrCat(dir_, "/case", i, ".journal");
    Write(Entry(kBase, fields), path);
    palisade::v1::JournalInput config;
    config.set_name(absl::StrCat("case", i));
    config.set_source("journal");
    config.add_files(path);
    {
      absl::MutexLock lock(&mu_);
      logged_.clear();
    }
    auto input = Make(config);
    ASSERT_TRUE(input.ok()) << input.status();
    Drain(**input);
    ASSERT_EQ(Logged().size(), 1u);
    const std::string logged = Logged()[0];
    EXPECT_THAT(logged, HasSubstr("_UID=" + c.uid));
    EXPECT_THAT(logged, HasSubstr("palisade_journal_skipped_total{reason=\"user_entry\"}"));
    EXPECT_THAT(logged, HasSubstr("read_user_entries: true"));
    EXPECT_THAT(logged, ::testing::Not(HasSubstr("hunter2")));
    if (c.suggested.empty()) {
      EXPECT_THAT(logged, ::testing::Not(HasSubstr("trusted_uids:")));
    } else {
      EXPECT_THAT(logged, HasSubstr(c.suggested));
    }
  }
}

// Daemons that run as a regular uid (an `adduser mastodon`, ZNC, a systemd --user service) are
// read as system accounts are when their uid is in trusted_uids, tag unchanged; the first user
// entry an input skips is logged once (its uid and unit, never its MESSAGE), naming the two
// settings, so that a setup that loses its logs to the skip is told so.
TEST_F(JournalInputTest, TrustedUidsAreReadAsSystemAccountsAndTheFirstSkipIsLogged) {
  auto entry = [](int64_t usec, const std::string& uid, const std::string& unit,
                  const std::string& ident, const std::string& message) {
    std::vector<std::pair<std::string, std::string>> fields = {
        {"_TRANSPORT", "stdout"}, {"_UID", uid}, {"_PID", "4000"},
        {"SYSLOG_IDENTIFIER", ident}, {"_HOSTNAME", "web-1"}, {"MESSAGE", message}};
    if (!unit.empty()) fields.push_back({"_SYSTEMD_UNIT", unit});
    return Entry(usec, fields);
  };
  const std::string secret = "password=hunter2 for 192.0.2.20";
  Write(entry(kBase, "1001", "session-3.scope", "x", secret) +
        entry(kBase + 1, "1000", "mastodon-web.service", "mastodon", "Failed login 192.0.2.21") +
        entry(kBase + 2, "1002", "", "y", secret) +
        entry(kBase + 3, "1000", "mastodon-web.service", "mastodon", "Failed login 192.0.2.22"));
  const std::string t = "2026-12-02T03:03:35.0000";
  palisade::v1::JournalInput trusted = Config();
  trusted.set_name("trusted");
  trusted.set_source("journal");
  trusted.add_trusted_uids(1000);
  trusted.add_trusted_uids(70000);
  {
    auto input = Make(trusted);
    ASSERT_TRUE(input.ok()) << input.status();
    Drain(**input);
    EXPECT_THAT(Lines(), ElementsAre(t + "01Z web-1 mastodon[4000]: Failed login 192.0.2.21",
                                     t + "03Z web-1 mastodon[4000]: Failed login 192.0.2.22"));
    ASSERT_EQ(Logged().size(), 1u);
    const std::string logged = Logged()[0];
    EXPECT_THAT(logged, HasSubstr("input trusted: "));
    EXPECT_THAT(logged, HasSubstr("_UID=1001"));
    EXPECT_THAT(logged, HasSubstr("_SYSTEMD_UNIT=session-3.scope"));
    EXPECT_THAT(logged, HasSubstr("read_user_entries"));
    EXPECT_THAT(logged, HasSubstr("trusted_uids"));
    EXPECT_THAT(logged, ::testing::Not(HasSubstr("hunter2")));
  }
  // Without trusted_uids: mastodon's entries are skipped too, still logged once per input.
  Clear();
  {
    absl::MutexLock lock(&mu_);
    logged_.clear();
  }
  palisade::v1::JournalInput plain = Config();
  plain.set_name("plain");
  plain.set_source("journal");
  auto input = Make(plain);
  ASSERT_TRUE(input.ok()) << input.status();
  Drain(**input);
  EXPECT_TRUE(Lines().empty());
  ASSERT_EQ(Logged().size(), 1u);
  EXPECT_THAT(Logged()[0], HasSubstr("input plain: "));
  Write(entry(kBase + 4, "1000", "mastodon-web.service", "mastodon", "Failed login 192.0.2.23"));
  Drain(**input);
  EXPECT_EQ(Logged().size(), 1u);
  // read_user_entries with trusted_uids: the trusted uid's tag unchanged, the others' marked.
  Clear();
  palisade::v1::JournalInput both = trusted;
  both.set_name("both");
  both.set_read_user_entries(true);
  auto all = Make(both);
  ASSERT_TRUE(all.ok()) << all.status();
  Drain(**all);
  EXPECT_THAT(Lines(), ElementsAre(t + "00Z web-1 user-1001/x[4000]: " + secret,
                                   t + "01Z web-1 mastodon[4000]: Failed login 192.0.2.21",
                                   t + "02Z web-1 user-1002/y[4000]: " + secret,
                                   t + "03Z web-1 mastodon[4000]: Failed login 192.0.2.22",
                                   t + "04Z web-1 mastodon[4000]: Failed login 192.0.2.23"));
  EXPECT_EQ(Logged().size(), 1u);  // nothing skipped: nothing more logged
}

// The edges of the system accounts' ranges (SYS_UID_MAX 999, DynamicUser='s 61184..65519,
// nobody 65534), and a _UID that is not a number (a remote host's upload can hold anything).
TEST_F(JournalInputTest, SystemUidRangesEndWhereSystemdsDo) {
  const std::vector<std::string> uids = {"999",   "1000",  "61183", "61184", "65519", "65520",
                                         "65534", "65535", "x1",    "99999999999"};
  std::string entries;
  for (size_t i = 0; i < uids.size(); ++i) {
    entries += Entry(kBase + static_cast<int64_t>(i),
                     {{"_UID", uids[i]}, {"SYSLOG_IDENTIFIER", "d"}, {"MESSAGE", "m"}});
  }
  Write(entries);
  palisade::v1::JournalInput config = Config();
  config.set_read_user_entries(true);
  auto input = Make(config);
  ASSERT_TRUE(input.ok()) << input.status();
  Drain(**input);
  std::vector<std::string> tags;
  for (const std::string& line : Lines()) {
    const size_t space = line.find(' ');
    tags.push_back(line.substr(space + 1, line.find(':', space) - space - 1));
  }
  EXPECT_THAT(tags, ElementsAre("d", "user-1000/d", "user-61183/d", "d", "d", "user-65520/d", "d",
                                "user-65535/d", "user-_/d", "user-_/d"));
}

// A MESSAGE longer than the room left by the cap (max_line_bytes, 200 here) is handed on one
// byte past the cap, so the pipeline sees the line longer than its cap, cuts it and flags it
// (ParsedLine::cut): cut to exactly the cap here, it was a whole line to the engine, and a long
// user name ending in a forged ` ip=V` right at the cap chose the key of rules pinned to `$`.
TEST_F(JournalInputTest, ALineOverTheCapIsHandedOnLongerThanTheCap) {
  const std::string header = "2026-12-02T03:03:35.000000Z web-1 gitlab[1]: ";
  const std::string head = "Failed Login: username=";
  const std::string forged = " ip=198.51.100.66";
  const std::string message =
      head + std::string(200 - header.size() - head.size() - forged.size(), 'A') + forged +
      " ip=203.0.113.5";
  Write(Entry(kBase, {{"_PID", "1"},
                      {"SYSLOG_IDENTIFIER", "gitlab"},
                      {"_HOSTNAME", "web-1"},
                      {"MESSAGE", message}}));
  auto input = Make(Config());
  ASSERT_TRUE(input.ok()) << input.status();
  Drain(**input);
  const std::vector<std::string> lines = Lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], (header + message).substr(0, 201));
  EXPECT_TRUE(absl::EndsWith(lines[0].substr(0, 200), forged));
}

TEST_F(JournalInputTest, HeldJournalsGiveTheirCursorsAndNoBatchRunsMeanwhile) {
  Write(Ssh(kBase, 1, "one"));
  std::vector<std::unique_ptr<JournalInput>> inputs;
  auto a = Make(Config());
  ASSERT_TRUE(a.ok());
  inputs.push_back(*std::move(a));
  palisade::v1::JournalInput quiet = Config({"_SYSTEMD_UNIT=none.service"});
  quiet.set_name("quiet");
  auto b = Make(quiet);
  ASSERT_TRUE(b.ok());
  inputs.push_back(*std::move(b));
  Drain(*inputs[0]);
  Drain(*inputs[1]);
  Write(Ssh(kBase + 1, 2, "two"));
  std::thread poller;
  {
    JournalsHeld held(inputs);
    ASSERT_EQ(held.cursors().size(), 1u);  // the quiet one took nothing
    EXPECT_EQ(held.cursors()[0].input(), "journal");
    EXPECT_THAT(held.cursors()[0].cursor(), HasSubstr("i="));
    poller = std::thread([&] { inputs[0]->PollOnce(); });
    absl::SleepFor(absl::Milliseconds(100));  // not a timing assertion: only gives it a chance
    EXPECT_EQ(Lines().size(), 1u);            // the second entry waits for the lock
  }
  poller.join();
  EXPECT_EQ(Lines().size(), 2u);
}

TEST_F(JournalInputTest, LagIsNowLessTheNewestEntryTaken) {
  Write(Ssh(kBase, 1, "one") + Ssh(kBase + 3000000, 2, "three seconds later"));
  SimulatedClock clock(absl::FromUnixMicros(kBase) + absl::Seconds(10));
  JournalInputOptions options;
  options.clock = &clock;
  auto input = JournalInput::Create(
      0, Config(), options, [](const palisade::v1::LogBatch&) { return absl::OkStatus(); },
      registry_);
  ASSERT_TRUE(input.ok()) << input.status();
  Drain(**input);
  EXPECT_DOUBLE_EQ(Metric("palisade_journal_lag_seconds"), 7);
  clock.Advance(absl::Seconds(5));
  (*input)->PollOnce();
  EXPECT_DOUBLE_EQ(Metric("palisade_journal_lag_seconds"), 12);
  EXPECT_EQ(Metric("palisade_input_bytes_total"), 3 + 19);  // the messages' bytes
}

TEST_F(JournalInputTest, ARefusedBatchIsOfferedAgain) {
  Write(Ssh(kBase, 1, "one") + Ssh(kBase + 1, 2, "two") + Ssh(kBase + 2, 3, "three"));
  auto input = Make(Config());
  ASSERT_TRUE(input.ok());
  {
    absl::MutexLock lock(&mu_);
    refuse_ = true;
  }
  EXPECT_EQ((*input)->PollOnce(), 0u);
  EXPECT_EQ((*input)->PollOnce(), 0u);
  EXPECT_TRUE(Position(**input).cursor().empty());
  EXPECT_EQ(Metric("palisade_input_errors_total"), 2);
  {
    absl::MutexLock lock(&mu_);
    refuse_ = false;
  }
  Drain(**input);
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": one"), HasSubstr(": two"), HasSubstr(": three")));
}

TEST_F(JournalInputTest, FollowsNewEntriesAndStopsPromptly) {
  Write(Ssh(kBase, 1, "before"));
  auto input = Make(Config());
  ASSERT_TRUE(input.ok());
  (*input)->Start();
  Write(Ssh(kBase + 1, 2, "after"));
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (Lines().size() < 2 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": before"), HasSubstr(": after")));
  (*input)->Stop();
}

TEST_F(JournalInputTest, ReadsADirectoryAndFilesAddedToIt) {
  Write(Ssh(kBase, 1, "first"), dir_ + "/a.journal");
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(dir_);
  auto input = Make(c);
  ASSERT_TRUE(input.ok()) << input.status();
  (*input)->Start();
  Write(Ssh(kBase + 1, 2, "second file"), dir_ + "/b.journal");
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (Lines().size() < 2 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  (*input)->Stop();
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": first"), HasSubstr(": second file")));
}

// One entry of a host of a journal-remote directory: each host has its own boot (and its own
// journal file, hence its own sequence number id), as remote-HOST.journal files do.
std::string HostEntry(int64_t usec, const std::string& host, const std::string& message) {
  const std::string boot = host == "a" ? "0123456789abcdef0123456789abcdef"
                                       : "fedcba9876543210fedcba9876543210";
  return Entry(usec, {{"_BOOT_ID", boot},
                      {"_HOSTNAME", host},
                      {"SYSLOG_IDENTIFIER", "sshd"},
                      {"_PID", "1"},
                      {"MESSAGE", message}});
}

constexpr int64_t kSecond = 1000000;

// Report r2 finding 1: host b's entries, stamped before the entry of host a read last (a slow
// clock, or a backlog uploaded after an outage), are taken all the same: each host is read on
// from its own position, not from a's place in time.
TEST_F(JournalInputTest, ADirectoryOfTwoHostsTakesEachHostsEntries) {
  const std::string jd = dir_ + "/remote";
  std::system(("mkdir -p " + jd).c_str());
  Write(HostEntry(kBase, "a", "a0") + HostEntry(kBase + kSecond, "a", "a1") +
            HostEntry(kBase + 2 * kSecond, "a", "a2"),
        jd + "/remote-a.journal");
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  auto input = Make(c);
  ASSERT_TRUE(input.ok()) << input.status();
  (*input)->Start();
  absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (Lines().size() < 3 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  ASSERT_EQ(Lines().size(), 3u);
  Write(HostEntry(kBase - 60 * kSecond, "b", "b0") + HostEntry(kBase - 59 * kSecond, "b", "b1") +
            HostEntry(kBase - 58 * kSecond, "b", "b2"),
        jd + "/remote-b.journal");
  Write(HostEntry(kBase + 100 * kSecond, "a", "a-new"), jd + "/remote-a.journal");
  // Waits for the lines themselves (all seven); 60 s is only the bound of a failing run.
  deadline = absl::Now() + absl::Seconds(60);
  while (Lines().size() < 7 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  (*input)->Stop();
  EXPECT_THAT(Lines(), ::testing::UnorderedElementsAre(
                           HasSubstr(": a0"), HasSubstr(": a1"), HasSubstr(": a2"),
                           HasSubstr(": b0"), HasSubstr(": b1"), HasSubstr(": b2"),
                           HasSubstr(": a-new")));
  // Both hosts' positions are saved: a restart reads nothing again.
  const palisade::v1::JournalCheckpoint saved = Position(**input);
  EXPECT_EQ(saved.writer_cursors_size(), 2);
  Clear();
  auto again = Make(c, {saved});
  ASSERT_TRUE(again.ok()) << again.status();
  Drain(**again);
  EXPECT_TRUE(Lines().empty());
}

// The same across a restart: b's older entries, written while palisaded was down, are read
// after the saved position, as a's newer ones are.
TEST_F(JournalInputTest, ARestartTakesEachHostsEntriesAfterItsOwnPosition) {
  const std::string jd = dir_ + "/remote";
  std::system(("mkdir -p " + jd).c_str());
  Write(HostEntry(kBase, "a", "a0") + HostEntry(kBase + kSecond, "a", "a1"),
        jd + "/remote-a.journal");
  Write(HostEntry(kBase - 90 * kSecond, "b", "b0"), jd + "/remote-b.journal");
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  palisade::v1::JournalCheckpoint saved;
  {
    auto input = Make(c);
    ASSERT_TRUE(input.ok()) << input.status();
    Drain(**input);
    saved = Position(**input);
  }
  ASSERT_EQ(Lines().size(), 3u);
  Clear();
  Write(HostEntry(kBase - 60 * kSecond, "b", "b1") + HostEntry(kBase - 59 * kSecond, "b", "b2"),
        jd + "/remote-b.journal");
  Write(HostEntry(kBase + 100 * kSecond, "a", "a-new"), jd + "/remote-a.journal");
  auto again = Make(c, {saved});
  ASSERT_TRUE(again.ok()) << again.status();
  Drain(**again);
  EXPECT_THAT(Lines(), ::testing::UnorderedElementsAre(HasSubstr(": b1"), HasSubstr(": b2"),
                                                       HasSubstr(": a-new")));
  EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 0);
}

// Report r2 finding 5: host a's files removed (vacuumed) while palisaded was down: b's entries,
// already taken, are not read again.
TEST_F(JournalInputTest, AHostsFilesRemovedDoNotMakeOtherHostsReadAgain) {
  const std::string jd = dir_ + "/remote";
  std::system(("mkdir -p " + jd).c_str());
  Write(HostEntry(kBase, "b", "b0") + HostEntry(kBase + 1, "b", "b1") +
            HostEntry(kBase + 2, "b", "b2"),
        jd + "/remote-b.journal");
  Write(HostEntry(kBase + 10, "a", "a0") + HostEntry(kBase + 11, "a", "a1"),
        jd + "/remote-a.journal");
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  palisade::v1::JournalCheckpoint saved;
  {
    auto input = Make(c);
    ASSERT_TRUE(input.ok()) << input.status();
    Drain(**input);
    saved = Position(**input);
  }
  ASSERT_EQ(Lines().size(), 5u);
  Clear();
  std::remove((jd + "/remote-a.journal").c_str());
  auto again = Make(c, {saved});
  ASSERT_TRUE(again.ok()) << again.status();
  Drain(**again);
  EXPECT_TRUE(Lines().empty());
  // Review v1 finding 3b: a had been read to its end, so nothing was lost with its file.
  EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 0);
  {
    absl::MutexLock lock(&mu_);
    EXPECT_THAT(logged_, ElementsAre(HasSubstr("had been read to its end")));
  }
  Write(HostEntry(kBase + 20, "b", "b3"), jd + "/remote-b.journal");
  Drain(**again);
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": b3")));
}

// A host's file rotated (renamed, and a new file of the same writer made: here a copy, which
// keeps its sequence number id) and later vacuumed: its entries are read on from its position,
// none twice.
TEST_F(JournalInputTest, AHostsRotatedAndVacuumedFilesAreReadOnFromItsPosition) {
  const std::string jd = dir_ + "/remote";
  std::system(("mkdir -p " + jd).c_str());
  const std::string live = jd + "/remote-a.journal";
  const std::string archived = jd + "/remote-a@0001.journal";
  Write(HostEntry(kBase, "a", "a0") + HostEntry(kBase + 1, "a", "a1"), live);
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  auto input = Make(c);
  ASSERT_TRUE(input.ok()) << input.status();
  Drain(**input);
  ASSERT_EQ(Lines().size(), 2u);
  Clear();
  ASSERT_EQ(std::rename(live.c_str(), archived.c_str()), 0);
  ASSERT_EQ(std::system(("cp " + archived + " " + live).c_str()), 0);
  Write(HostEntry(kBase + 2, "a", "a2"), live);
  Drain(**input);
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": a2")));
  const palisade::v1::JournalCheckpoint saved = Position(**input);
  ASSERT_EQ(saved.writer_cursors_size(), 1);
  Clear();
  std::remove(archived.c_str());
  Write(HostEntry(kBase + 3, "a", "a3"), live);
  Drain(**input);
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": a3")));
  EXPECT_EQ(Metric("palisade_input_errors_total"), 0);
}

// An entry of host a with 260 fields more: journal-remote's field hash table is then over 3/4
// full, so it rotates the file before the next entry (to remote-a@....journal; the new file
// keeps the sequence number id and numbering), as journald rotates a full file.
std::string RotatingEntry(int64_t usec, const std::string& message) {
  std::string out = HostEntry(usec, "a", message);
  out.pop_back();  // the blank line that ends the entry
  for (int k = 0; k < 260; ++k) absl::StrAppend(&out, "X", k, "=1\n");
  return out + "\n";
}

// Review v1 finding 3a: host a's rotated file, holding entries not read yet, vacuumed while
// palisaded was down. a reads on from its first entry left, and the gap is counted and logged.
TEST_F(JournalInputTest, AWritersUnreadEntriesVacuumedAreCountedAsLost) {
  const std::string jd = dir_ + "/remote";
  std::system(("mkdir -p " + jd).c_str());
  Write(HostEntry(kBase, "a", "a0") + HostEntry(kBase + 1, "a", "a1") +
            RotatingEntry(kBase + 2, "a2") + HostEntry(kBase + 3, "a", "a3") +
            HostEntry(kBase + 4, "a", "a4"),
        jd + "/remote-a.journal");
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  palisade::v1::JournalCheckpoint saved;
  {
    auto input = Make(c);
    ASSERT_TRUE(input.ok()) << input.status();
    ASSERT_EQ((*input)->PollOnce(), 2u);  // a0, a1 (batch_lines)
    saved = Position(**input);
  }
  Clear();
  // The rotated file (a0, a1, a2) vacuumed; remote-a.journal holds a3 and a4.
  ASSERT_EQ(std::system(("rm " + jd + "/remote-a@*.journal").c_str()), 0);
  auto again = Make(c, {saved});
  ASSERT_TRUE(again.ok()) << again.status();
  Drain(**again);
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": a3"), HasSubstr(": a4")));
  EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 1);
  absl::MutexLock lock(&mu_);
  EXPECT_THAT(logged_, ElementsAre(HasSubstr(
                           "entries 3 to 3 (1) were removed (vacuumed?) before they were read")));
}

// Review v4 finding 3: the same files, the rotated one vacuumed while palisaded is still reading
// it: the handle that holds it reads it on (nothing lost), then lets it go (its space freed).
TEST_F(JournalInputTest, AWritersFileVacuumedWhileBeingReadIsReadOn) {
  const std::string jd = dir_ + "/remote";
  std::system(("mkdir -p " + jd).c_str());
  Write(HostEntry(kBase, "a", "a0") + HostEntry(kBase + 1, "a", "a1") +
            RotatingEntry(kBase + 2, "a2") + HostEntry(kBase + 3, "a", "a3") +
            HostEntry(kBase + 4, "a", "a4"),
        jd + "/remote-a.journal");
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  auto input = Make(c);
  ASSERT_TRUE(input.ok()) << input.status();
  ASSERT_EQ((*input)->PollOnce(), 2u);  // a0, a1 (batch_lines)
  ASSERT_EQ(std::system(("rm " + jd + "/remote-a@*.journal").c_str()), 0);
  clock_.Advance(absl::Seconds(60));  // listed whether or not sd_journal reported it
  Drain(**input);
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": a0"), HasSubstr(": a1"), HasSubstr(": a2"),
                                   HasSubstr(": a3"), HasSubstr(": a4")));
  EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 0);
  // Read to its end: the removed file is no longer held open.
  EXPECT_EQ((*input)->PollOnce(), 0u);
  int held = 0;
  for (int fd = 0; fd < 1024; ++fd) {
    char target[4096];
    const ssize_t n = ::readlink(absl::StrCat("/proc/self/fd/", fd).c_str(), target,
                                 sizeof(target) - 1);
    if (n > 0 && std::string(target, n).find("/remote-a@") != std::string::npos) ++held;
  }
  EXPECT_EQ(held, 0);
  Write(HostEntry(kBase + 5, "a", "a5"), jd + "/remote-a.journal");
  Drain(**input);
  EXPECT_THAT(Lines().back(), HasSubstr(": a5"));
  EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 0);
}

// The descriptors this process holds open on files whose path contains `name` and that were
// removed ("(deleted)", as /proc/self/fd shows them).
int HeldRemoved(const std::string& name) {
  int held = 0;
  for (int fd = 0; fd < 1024; ++fd) {
    char target[4096];
    const ssize_t n =
        ::readlink(absl::StrCat("/proc/self/fd/", fd).c_str(), target, sizeof(target) - 1);
    const std::string t = n > 0 ? std::string(target, static_cast<size_t>(n)) : "";
    if (t.find(name) != std::string::npos && t.find("(deleted)") != std::string::npos) ++held;
  }
  return held;
}

// Hand-off item 1 (after review v4 finding 3): in one listing, the file a reader behind is
// reading is gone (rotated and vacuumed) and its writer's next file is there. Reopening over
// the files left and seeking the cursor would lose the removed file's unread rest (counted):
// it is read on through the handle that holds it, then the next file, each entry once.
TEST_F(JournalInputTest, AWritersFileVacuumedAsItsNextFileComesIsReadOnFirst) {
  const std::string jd = dir_ + "/remote";
  const std::string src = dir_ + "/src";  // the writer's own directory, copied from
  std::system(("mkdir -p " + jd + " " + src).c_str());
  Write(HostEntry(kBase + 1, "a", "a1") + HostEntry(kBase + 2, "a", "a2") +
            HostEntry(kBase + 3, "a", "a3") + RotatingEntry(kBase + 4, "a4"),
        src + "/remote-a.journal");
  const std::string live = jd + "/remote-a.journal";
  ASSERT_EQ(std::system(("cp " + src + "/remote-a.journal " + live).c_str()), 0);
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  batch_lines_ = 1;
  auto input = Make(c);
  ASSERT_TRUE(input.ok()) << input.status();
  ASSERT_EQ((*input)->PollOnce(), 1u);  // a1
  // The writer rotates (a1..a4 archived, b1 in its next file, numbered on: 5)...
  Write(HostEntry(kBase + 5, "a", "b1"), src + "/remote-a.journal");
  // ... and, before the next listing, the archived file is vacuumed: the file read is gone and
  // the next one there (a new inode: the removed one is still held open).
  ASSERT_EQ(std::remove(live.c_str()), 0);
  ASSERT_EQ(std::system(("cp " + src + "/remote-a.journal " + live).c_str()), 0);
  clock_.Advance(absl::Seconds(60));  // listed whether or not sd_journal reported it
  Drain(**input);
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": a1"), HasSubstr(": a2"), HasSubstr(": a3"),
                                   HasSubstr(": a4"), HasSubstr(": b1")));
  EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 0);
  {
    absl::MutexLock lock(&mu_);
    EXPECT_TRUE(logged_.empty());
  }
  EXPECT_EQ(HeldRemoved("/remote-a.journal"), 0);  // read past: let go, its space freed
  Write(HostEntry(kBase + 6, "a", "b2"), src + "/remote-a.journal");
  ASSERT_EQ(std::system(("cp " + src + "/remote-a.journal " + live).c_str()), 0);
  clock_.Advance(absl::Seconds(60));
  Drain(**input);
  EXPECT_THAT(Lines().back(), HasSubstr(": b2"));
  EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 0);
}

// The same rotation, a's rotated file read to its end before it is vacuumed: the first entry
// left follows the cursor's, so nothing is counted.
TEST_F(JournalInputTest, AWritersReadFileVacuumedIsNotCountedAsLost) {
  const std::string jd = dir_ + "/remote";
  std::system(("mkdir -p " + jd).c_str());
  Write(HostEntry(kBase, "a", "a0") + RotatingEntry(kBase + 1, "a1") +
            HostEntry(kBase + 2, "a", "a2") + HostEntry(kBase + 3, "a", "a3"),
        jd + "/remote-a.journal");
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  palisade::v1::JournalCheckpoint saved;
  {
    auto input = Make(c);
    ASSERT_TRUE(input.ok()) << input.status();
    ASSERT_EQ((*input)->PollOnce(), 2u);  // a0, a1: the rotated file's entries
    saved = Position(**input);
  }
  Clear();
  ASSERT_EQ(std::system(("rm " + jd + "/remote-a@*.journal").c_str()), 0);
  auto again = Make(c, {saved});
  ASSERT_TRUE(again.ok()) << again.status();
  Drain(**again);
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": a2"), HasSubstr(": a3")));
  EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 0);
  absl::MutexLock lock(&mu_);
  EXPECT_TRUE(logged_.empty());
}

// An entry of host a of a systemd unit; `extra` fields more make journal-remote rotate the file
// before the next entry (as RotatingEntry).
std::string UnitEntry(int64_t usec, const std::string& unit, const std::string& message,
                      int extra = 0) {
  std::string out = HostEntry(usec, "a", message);
  out.pop_back();
  absl::StrAppend(&out, "_SYSTEMD_UNIT=", unit, "\n");
  for (int k = 0; k < extra; ++k) absl::StrAppend(&out, "X", k, "=1\n");
  return out + "\n";
}

// Hand-off item 1 with a match: the removed file's entries after the cursor matched nothing.
// They were scanned through the handle that held the file (its tail known from its header as
// read before), so the next file's first entry after them is no gap.
TEST_F(JournalInputTest, AMatchedWritersFileVacuumedAsItsNextFileComesIsNoLoss) {
  const std::string jd = dir_ + "/remote";
  const std::string src = dir_ + "/src";
  std::system(("mkdir -p " + jd + " " + src).c_str());
  Write(UnitEntry(kBase + 1, "ssh.service", "s1") + UnitEntry(kBase + 2, "cron.service", "c2") +
            UnitEntry(kBase + 3, "cron.service", "c3") +
            UnitEntry(kBase + 4, "cron.service", "c4", 260),
        src + "/remote-a.journal");
  const std::string live = jd + "/remote-a.journal";
  ASSERT_EQ(std::system(("cp " + src + "/remote-a.journal " + live).c_str()), 0);
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  c.add_matches("_SYSTEMD_UNIT=ssh.service");
  batch_lines_ = 1;
  auto input = Make(c);
  ASSERT_TRUE(input.ok()) << input.status();
  ASSERT_EQ((*input)->PollOnce(), 1u);  // s1: the read stopped there, c2 to c4 not scanned
  Write(UnitEntry(kBase + 5, "cron.service", "c5") + UnitEntry(kBase + 6, "ssh.service", "s6"),
        src + "/remote-a.journal");
  ASSERT_EQ(std::remove(live.c_str()), 0);
  ASSERT_EQ(std::system(("cp " + src + "/remote-a.journal " + live).c_str()), 0);
  clock_.Advance(absl::Seconds(60));  // listed whether or not sd_journal reported it
  Drain(**input);
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": s1"), HasSubstr(": s6")));
  EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 0);
  absl::MutexLock lock(&mu_);
  EXPECT_TRUE(logged_.empty());
}

// Review vD finding 1: the same, the file held written on after its header was last read (c4,
// c5) before it is rotated away and vacuumed. The handle scanned those entries too: what it
// scanned is taken from the handle, not from the header as read a round earlier (a false gap).
TEST_F(JournalInputTest, AMatchedWritersFileWrittenOnThenRotatedAndVacuumedIsNoLoss) {
  const std::string jd = dir_ + "/remote";
  std::system(("mkdir -p " + jd).c_str());
  const std::string live = jd + "/remote-a.journal";
  Write(UnitEntry(kBase + 1, "ssh.service", "s1") + UnitEntry(kBase + 2, "cron.service", "c2") +
            UnitEntry(kBase + 3, "cron.service", "c3"),
        live);
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  c.add_matches("_SYSTEMD_UNIT=ssh.service");
  batch_lines_ = 1;
  auto input = Make(c);
  ASSERT_TRUE(input.ok()) << input.status();
  ASSERT_EQ((*input)->PollOnce(), 1u);  // s1: its file's header read then (tail 3)
  Write(UnitEntry(kBase + 4, "cron.service", "c4") +
            UnitEntry(kBase + 5, "cron.service", "c5", 260),
        live);
  Write(UnitEntry(kBase + 6, "ssh.service", "s6"), live);  // rotated: s6 in the next file
  ASSERT_EQ(std::system(("rm " + jd + "/remote-a@*.journal").c_str()), 0);
  clock_.Advance(absl::Seconds(60));  // listed whether or not sd_journal reported it
  Drain(**input);
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": s1"), HasSubstr(": s6")));
  EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 0);
  absl::MutexLock lock(&mu_);
  EXPECT_TRUE(logged_.empty());
}

// Review vD finding 2: a handle that once read to its end is kept too when a file of it is
// removed: here a read to its end, then its file written on (a2 to a4), rotated away (b1 in the
// next file) and vacuumed, all between two rounds. Reopening at once lost a2 to a4 (counted).
TEST_F(JournalInputTest, AWriterReadToItsEndThenWrittenOnRotatedAndVacuumedIsReadOn) {
  const std::string jd = dir_ + "/remote";
  std::system(("mkdir -p " + jd).c_str());
  const std::string live = jd + "/remote-a.journal";
  Write(HostEntry(kBase + 1, "a", "a1"), live);
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  auto input = Make(c);
  ASSERT_TRUE(input.ok()) << input.status();
  Drain(**input);  // a1, and a round that reads to the end
  ASSERT_THAT(Lines(), ElementsAre(HasSubstr(": a1")));
  Clear();
  Write(HostEntry(kBase + 2, "a", "a2") + HostEntry(kBase + 3, "a", "a3") +
            RotatingEntry(kBase + 4, "a4"),
        live);
  Write(HostEntry(kBase + 5, "a", "b1"), live);  // rotated: b1 in the next file
  ASSERT_EQ(std::system(("rm " + jd + "/remote-a@*.journal").c_str()), 0);
  clock_.Advance(absl::Seconds(60));  // listed whether or not sd_journal reported it
  Drain(**input);
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": a2"), HasSubstr(": a3"), HasSubstr(": a4"),
                                   HasSubstr(": b1")));
  EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 0);
  EXPECT_EQ(HeldRemoved("/remote-a@"), 0);  // read past: let go, its space freed
  absl::MutexLock lock(&mu_);
  EXPECT_TRUE(logged_.empty());
}

// Review v4 finding 2: with a match, the cursor is the last entry that matched; the entries
// after it were scanned (none matched), not lost. Once the cursor's file is vacuumed, the first
// entry left is past them: no gap, at a restart nor at each reopen (a rotation) while running.
TEST_F(JournalInputTest, AQuietMatchedUnitsVacuumedFileIsNoLoss) {
  const std::string jd = dir_ + "/remote";
  std::system(("mkdir -p " + jd).c_str());
  // remote-a@....journal: ssh (1), cron (2 to 4); remote-a.journal: cron (5, 6).
  Write(UnitEntry(kBase, "ssh.service", "Failed password") +
            UnitEntry(kBase + 1, "cron.service", "c1") +
            UnitEntry(kBase + 2, "cron.service", "c2") +
            UnitEntry(kBase + 3, "cron.service", "c3", 260) +
            UnitEntry(kBase + 4, "cron.service", "c4") + UnitEntry(kBase + 5, "cron.service", "c5"),
        jd + "/remote-a.journal");
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  c.add_matches("_SYSTEMD_UNIT=ssh.service");
  palisade::v1::JournalCheckpoint saved;
  {
    auto input = Make(c);
    ASSERT_TRUE(input.ok()) << input.status();
    Drain(**input);
    saved = Position(**input);
  }
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": Failed password")));
  Clear();
  ASSERT_EQ(std::system(("rm " + jd + "/remote-a@*.journal").c_str()), 0);
  auto again = Make(c, {saved});
  ASSERT_TRUE(again.ok()) << again.status();
  Drain(**again);
  EXPECT_TRUE(Lines().empty());
  EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 0);
  {
    absl::MutexLock lock(&mu_);
    EXPECT_TRUE(logged_.empty());
  }
  // While running: each rotation reopens the writer, on from the same cursor (nothing matched).
  for (int i = 0; i < 2; ++i) {
    Write(UnitEntry(kBase + 10 + 2 * i, "cron.service", "r", 260) +
              UnitEntry(kBase + 11 + 2 * i, "cron.service", "after"),
          jd + "/remote-a.journal");
    clock_.Advance(absl::Seconds(60));  // listed whether or not sd_journal reported the file
    Drain(**again);
  }
  EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 0);
  absl::MutexLock lock(&mu_);
  EXPECT_TRUE(logged_.empty());
}

// The same with entries that match left unread (the read stopped at batch_lines, not at the
// writer's end): their file vacuumed, the gap is still counted.
TEST_F(JournalInputTest, AMatchedWritersUnreadEntriesVacuumedAreStillCounted) {
  const std::string jd = dir_ + "/remote";
  std::system(("mkdir -p " + jd).c_str());
  Write(UnitEntry(kBase, "ssh.service", "s1") + UnitEntry(kBase + 1, "cron.service", "c2") +
            UnitEntry(kBase + 2, "ssh.service", "s3") + UnitEntry(kBase + 3, "ssh.service", "s4") +
            UnitEntry(kBase + 4, "cron.service", "c5", 260) +
            UnitEntry(kBase + 5, "ssh.service", "s6"),
        jd + "/remote-a.journal");
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  c.add_matches("_SYSTEMD_UNIT=ssh.service");
  palisade::v1::JournalCheckpoint saved;
  {
    auto input = Make(c);
    ASSERT_TRUE(input.ok()) << input.status();
    ASSERT_EQ((*input)->PollOnce(), 2u);  // s1, s3 (batch_lines): s4 not read
    saved = Position(**input);
  }
  Clear();
  ASSERT_EQ(std::system(("rm " + jd + "/remote-a@*.journal").c_str()), 0);
  auto again = Make(c, {saved});
  ASSERT_TRUE(again.ok()) << again.status();
  Drain(**again);
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": s6")));
  EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 1);
  absl::MutexLock lock(&mu_);
  EXPECT_THAT(logged_, ElementsAre(HasSubstr("entries 4 to 5 (2) were removed")));
}

// Review vD finding 3: a writer's last file removed while its handle holds it with entries
// unread: the handle reads them on (it holds the file open), then the writer is found gone, at
// its end: logged, nothing lost.
TEST_F(JournalInputTest, AWriterGoneWhileRunningIsReadToItsEndFirst) {
  const std::string jd = dir_ + "/remote";
  std::system(("mkdir -p " + jd).c_str());
  Write(HostEntry(kBase, "a", "a0") + HostEntry(kBase + 1, "a", "a1") +
            HostEntry(kBase + 2, "a", "a2"),
        jd + "/remote-a.journal");
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  batch_lines_ = 1;
  auto input = Make(c);
  ASSERT_TRUE(input.ok()) << input.status();
  ASSERT_EQ((*input)->PollOnce(), 1u);  // a0: a1, a2 unread
  ASSERT_EQ(std::system(("rm " + jd + "/remote-a*.journal").c_str()), 0);
  clock_.Advance(absl::Seconds(60));  // listed whether or not sd_journal reported it
  Drain(**input);
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": a0"), HasSubstr(": a1"), HasSubstr(": a2")));
  EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 0);
  EXPECT_EQ(HeldRemoved("/remote-a"), 0);  // found gone: let go, its space freed
  const palisade::v1::JournalCheckpoint saved = Position(**input);
  EXPECT_THAT(saved.writers_gone(), ElementsAre(::testing::_));
  absl::MutexLock lock(&mu_);
  EXPECT_THAT(logged_, ElementsAre(HasSubstr("had been read to its end")));
}

// Review v4 finding 6: a writer whose files went while running is logged once; the restart
// after it does not log (nor count) it again. Its entry unread then (a2) is read first, through
// the handle that holds its file (review vD finding 3): nothing is lost.
TEST_F(JournalInputTest, AWriterGoneWhileRunningIsLoggedOnceAcrossARestart) {
  const std::string jd = dir_ + "/remote";
  std::system(("mkdir -p " + jd).c_str());
  Write(HostEntry(kBase, "a", "a0") + HostEntry(kBase + 1, "a", "a1") +
            HostEntry(kBase + 2, "a", "a2"),
        jd + "/remote-a.journal");
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  palisade::v1::JournalCheckpoint saved;
  {
    auto input = Make(c);
    ASSERT_TRUE(input.ok()) << input.status();
    ASSERT_EQ((*input)->PollOnce(), 2u);  // a0, a1: a2 unread
    std::remove((jd + "/remote-a.journal").c_str());
    clock_.Advance(absl::Seconds(60));  // listed whether or not sd_journal reported it
    Drain(**input);
    EXPECT_THAT(Lines().back(), HasSubstr(": a2"));
    EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 0);
    saved = Position(**input);
  }
  {
    absl::MutexLock lock(&mu_);
    ASSERT_THAT(logged_, ElementsAre(HasSubstr("had been read to its end")));
  }
  auto again = Make(c, {saved});
  ASSERT_TRUE(again.ok()) << again.status();
  Drain(**again);
  EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 0);
  absl::MutexLock lock(&mu_);
  EXPECT_EQ(logged_.size(), 1u);
}

// Review v4 finding 7: a *.journal that cannot be read (here empty, as ENOSPC or a crash leaves
// one) is not looked at again every round: the directory is listed once while a backlog drains
// (the clock does not move), and the file is read once it is written.
TEST_F(JournalInputTest, AnUnreadableFileDoesNotMakeEveryRoundListTheDirectory) {
  const std::string jd = dir_ + "/remote";
  std::system(("mkdir -p " + jd).c_str());
  std::string backlog;
  for (int i = 0; i < 6; ++i) backlog += HostEntry(kBase + i, "a", absl::StrCat("a", i));
  Write(backlog, jd + "/remote-a.journal");
  std::ofstream(jd + "/remote-b.journal");  // zero length
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  auto input = Make(c);
  ASSERT_TRUE(input.ok()) << input.status();
  Drain(**input);  // three batches of two, and a round with nothing
  EXPECT_EQ(Lines().size(), 6u);
  EXPECT_EQ((*input)->PollOnce(), 0u);
  {
    absl::MutexLock lock(&mu_);
    EXPECT_EQ(listings_, 1);  // by Create
  }
  Clear();
  Write(HostEntry(kBase + 20, "b", "b0"), jd + "/remote-b.journal");
  Drain(**input);
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": b0")));
  EXPECT_EQ(Metric("palisade_input_errors_total"), 0);
}

// Waits (a few ms at most: the coarse clock's next tick) until the kernel's clock, which stamps
// files, is past the last change of `paths`: a header read then is known to be as new as the
// file, so it may be kept until the file changes.
void WaitPastLastChange(const std::vector<std::string>& paths) {
  for (const std::string& p : paths) {
    struct stat st;
    ASSERT_EQ(::stat(p.c_str(), &st), 0) << p;
    const int64_t changed = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    for (;;) {
      struct timespec now;
      ::clock_gettime(CLOCK_REALTIME_COARSE, &now);
      if (now.tv_sec * 1000000000LL + now.tv_nsec > changed) break;
      absl::SleepFor(absl::Milliseconds(1));
    }
  }
}

// Hand-off item 2: with matches, what each read scanned comes from the writers' live files'
// headers. They are read again only when a file changed (its size or modification time):
// a round with nothing written reads none, a round after a write reads that file's alone.
TEST_F(JournalInputTest, WithMatchesARoundReadsOnlyTheHeadersOfFilesWrittenTo) {
  const std::string jd = dir_ + "/remote";
  std::system(("mkdir -p " + jd).c_str());
  const std::string a = jd + "/remote-a.journal";
  const std::string b = jd + "/remote-b.journal";
  Write(HostEntry(kBase, "a", "a0"), a);
  Write(HostEntry(kBase + 1, "b", "b0"), b);
  WaitPastLastChange({a, b});
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  c.add_matches("SYSLOG_IDENTIFIER=sshd");
  auto input = Make(c);
  ASSERT_TRUE(input.ok()) << input.status();
  Drain(**input);
  ASSERT_EQ(Lines().size(), 2u);
  {
    absl::MutexLock lock(&mu_);
    headers_read_.clear();
  }
  EXPECT_EQ((*input)->PollOnce(), 0u);
  EXPECT_EQ((*input)->PollOnce(), 0u);
  {
    absl::MutexLock lock(&mu_);
    EXPECT_TRUE(headers_read_.empty()) << absl::StrJoin(headers_read_, " ");
  }
  Write(HostEntry(kBase + 2, "a", "a1"), a);
  WaitPastLastChange({a});
  EXPECT_EQ((*input)->PollOnce(), 1u);
  EXPECT_EQ((*input)->PollOnce(), 0u);
  EXPECT_THAT(Lines().back(), HasSubstr(": a1"));
  absl::MutexLock lock(&mu_);
  EXPECT_THAT(headers_read_, ElementsAre("remote-a.journal"));
  EXPECT_EQ(listings_, 1);  // by Create: a write is no file added
}

// Review v1 finding 6: a file removed and another made with the same inode (ext4 reuses one at
// once) is grouped by its own header, not by the writer its inode last held. Here host a's file
// is moved out of the directory, the other file's bytes written over it in place (which keeps
// the inode for certain) and it is moved back: a removal and a creation, as sd_journal sees it.
TEST_F(JournalInputTest, AnInodeReusedByAnotherWritersFileIsGroupedByItsHeader) {
  const std::string jd = dir_ + "/remote";
  std::system(("mkdir -p " + jd).c_str());
  const std::string a = jd + "/remote-a.journal";
  Write(HostEntry(kBase, "a", "a0") + HostEntry(kBase + 1, "a", "a1"), a);
  Write(HostEntry(kBase + 2, "b", "b0"), jd + "/remote-b.journal");
  const std::string c_file = dir_ + "/remote-c.journal";  // a third writer, made elsewhere
  Write(HostEntry(kBase + 3, "c", "c0") + HostEntry(kBase + 4, "c", "c1"), c_file);
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  auto input = Make(c);
  ASSERT_TRUE(input.ok()) << input.status();
  Drain(**input);
  ASSERT_EQ(Lines().size(), 3u);
  Clear();
  struct stat before;
  ASSERT_EQ(::stat(a.c_str(), &before), 0);
  ASSERT_EQ(std::system(absl::StrCat("mv ", a, " ", dir_, "/out && dd status=none conv=notrunc if=",
                                     c_file, " of=", dir_, "/out")
                            .c_str()),
            0);
  // A new file's change time is later than the old one's: waits (for the coarse clock's next
  // tick, at most a few ms) until it is, as it would be for a file made anew.
  const std::string out = dir_ + "/out";
  for (struct stat now; ::stat(out.c_str(), &now) == 0 &&
                        now.st_ctim.tv_sec == before.st_ctim.tv_sec &&
                        now.st_ctim.tv_nsec == before.st_ctim.tv_nsec;) {
    absl::SleepFor(absl::Milliseconds(1));
    ::utimensat(AT_FDCWD, out.c_str(), nullptr, 0);
  }
  ASSERT_EQ(std::rename(out.c_str(), a.c_str()), 0);
  clock_.Advance(absl::Seconds(60));  // listed whether or not sd_journal reported it
  Drain(**input);
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": c0"), HasSubstr(": c1")));
  // Three writers, each under its own sequence number id (a's kept, its file gone).
  const palisade::v1::JournalCheckpoint saved = Position(**input);
  std::set<std::string> ids;
  for (const std::string& w : saved.writer_cursors()) {
    ids.insert(w.substr(0, w.find(';')));
  }
  EXPECT_EQ(saved.writer_cursors_size(), 3);
  EXPECT_EQ(ids.size(), 3u);
}

// The same with a newer file of the same writer (its rotation) in the reused inode: its file id
// differs, so the writer is reopened and the new file's entries read.
TEST_F(JournalInputTest, AnInodeReusedByTheSameWritersNewFileIsRead) {
  const std::string jd = dir_ + "/remote";
  const std::string src = dir_ + "/src";
  std::system(("mkdir -p " + jd + " " + src).c_str());
  Write(HostEntry(kBase, "a", "a0") + RotatingEntry(kBase + 1, "a1") +
            HostEntry(kBase + 2, "a", "a2"),
        src + "/remote-a.journal");  // src: remote-a@....journal (a0, a1), remote-a.journal (a2)
  const std::string a = jd + "/remote-a.journal";
  ASSERT_EQ(std::system(("cp " + src + "/remote-a@*.journal " + a).c_str()), 0);
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  auto input = Make(c);
  ASSERT_TRUE(input.ok()) << input.status();
  Drain(**input);
  ASSERT_EQ(Lines().size(), 2u);
  Clear();
  struct stat before;
  ASSERT_EQ(::stat(a.c_str(), &before), 0);
  ASSERT_EQ(std::system(absl::StrCat("mv ", a, " ", dir_, "/out && dd status=none conv=notrunc if=",
                                     src, "/remote-a.journal of=", dir_, "/out")
                            .c_str()),
            0);
  const std::string out = dir_ + "/out";
  for (struct stat now; ::stat(out.c_str(), &now) == 0 &&
                        now.st_ctim.tv_sec == before.st_ctim.tv_sec &&
                        now.st_ctim.tv_nsec == before.st_ctim.tv_nsec;) {
    absl::SleepFor(absl::Milliseconds(1));
    ::utimensat(AT_FDCWD, out.c_str(), nullptr, 0);
  }
  ASSERT_EQ(std::rename(out.c_str(), a.c_str()), 0);
  clock_.Advance(absl::Seconds(60));  // listed whether or not sd_journal reported it
  Drain(**input);
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": a2")));
  EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 0);
}

// Review v1 finding 5: a directory is listed (and its files stat'ed) when sd_journal reports a
// file added or list_interval passed, not every round: draining a backlog (on a clock that does
// not move) lists it once, and a new host is still read.
TEST_F(JournalInputTest, DrainingABacklogListsTheDirectoryOnceAndANewFileIsStillRead) {
  const std::string jd = dir_ + "/remote";
  std::system(("mkdir -p " + jd).c_str());
  std::string backlog;
  for (int i = 0; i < 10; ++i) backlog += HostEntry(kBase + i, "a", absl::StrCat("a", i));
  Write(backlog, jd + "/remote-a.journal");
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  auto input = Make(c);
  ASSERT_TRUE(input.ok()) << input.status();
  Drain(**input);  // five batches of two, and a round with nothing
  ASSERT_EQ(Lines().size(), 10u);
  {
    absl::MutexLock lock(&mu_);
    EXPECT_EQ(listings_, 1);  // by Create
  }
  Clear();
  Write(HostEntry(kBase + 20, "b", "b0"), jd + "/remote-b.journal");
  Drain(**input);
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": b0")));
  {
    absl::MutexLock lock(&mu_);
    EXPECT_EQ(listings_, 2);  // told by sd_journal
  }
  // Not once per wait_interval (review v4 finding 7: files removed are reported too), but once
  // list_interval passed, a safety net.
  clock_.Advance(absl::Milliseconds(50));
  EXPECT_EQ((*input)->PollOnce(), 0u);
  {
    absl::MutexLock lock(&mu_);
    EXPECT_EQ(listings_, 2);
  }
  clock_.Advance(absl::Seconds(10));
  EXPECT_EQ((*input)->PollOnce(), 0u);
  absl::MutexLock lock(&mu_);
  EXPECT_EQ(listings_, 3);
}

// A checkpoint of the version that kept one cursor per input still resumes: its host reads on
// from it, the other hosts from the same point in time.
TEST_F(JournalInputTest, AnOldCheckpointWithOneCursorStillResumes) {
  const std::string jd = dir_ + "/remote";
  std::system(("mkdir -p " + jd).c_str());
  Write(HostEntry(kBase, "a", "a0") + HostEntry(kBase + 2, "a", "a1"), jd + "/remote-a.journal");
  Write(HostEntry(kBase + 1, "b", "b0"), jd + "/remote-b.journal");
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  palisade::v1::JournalCheckpoint saved;
  {
    auto input = Make(c);
    ASSERT_TRUE(input.ok()) << input.status();
    Drain(**input);
    saved = Position(**input);
  }
  ASSERT_EQ(Lines().size(), 3u);
  // As the old version wrote it: the cursor of the last entry in time, a1 (a's boot id is in
  // its cursor), and no more.
  std::string a1;
  for (const std::string& w : saved.writer_cursors()) {
    if (w.find("b=0123456789abcdef0123456789abcdef") != std::string::npos) a1 = w;
  }
  ASSERT_THAT(a1, HasSubstr("t="));
  saved.set_cursor(a1);
  saved.clear_writer_cursors();
  Clear();
  Write(HostEntry(kBase + 3, "b", "b1"), jd + "/remote-b.journal");
  Write(HostEntry(kBase + 4, "a", "a2"), jd + "/remote-a.journal");
  auto again = Make(c, {saved});
  ASSERT_TRUE(again.ok()) << again.status();
  Drain(**again);
  EXPECT_THAT(Lines(),
              ::testing::UnorderedElementsAre(HasSubstr(": b1"), HasSubstr(": a2")));
  EXPECT_EQ(Metric("palisade_journal_cursor_lost_total"), 0);
}

TEST_F(JournalInputTest, ADirectoryRemovedIsAnErrorAndMadeAgainIsReadOn) {
  const std::string jd = dir_ + "/jd";
  std::system(("mkdir -p " + jd).c_str());
  Write(Ssh(kBase, 1, "first"), jd + "/a.journal");
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(jd);
  auto input = Make(c);
  ASSERT_TRUE(input.ok()) << input.status();
  Drain(**input);
  ASSERT_EQ(Lines().size(), 1u);
  std::system(("rm -rf " + jd).c_str());
  EXPECT_EQ((*input)->PollOnce(), 0u);
  EXPECT_EQ((*input)->PollOnce(), 0u);
  EXPECT_EQ(Metric("palisade_input_errors_total"), 2);  // counted every round
  std::system(("mkdir -p " + jd).c_str());
  Write(Ssh(kBase + 1, 2, "after"), jd + "/b.journal");
  Drain(**input);
  EXPECT_THAT(Lines(), ElementsAre(HasSubstr(": first"), HasSubstr(": after")));
  absl::MutexLock lock(&mu_);
  EXPECT_THAT(logged_, ::testing::Contains(HasSubstr(
                           "input journal: directory " + jd + ": No such file or directory")));
  EXPECT_THAT(logged_, ::testing::Contains(HasSubstr("was replaced; opening it again")));
}

TEST_F(JournalInputTest, BadConfigIsRefusedNamingTheInput) {
  Write(Ssh(kBase, 1, "x"));
  auto bad_match = Make(Config({"ssh.service"}));
  EXPECT_THAT(bad_match.status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("inputs.journal[0] (\"journal\"): match \"ssh.service\" is not "
                                 "FIELD=value")));
  EXPECT_THAT(Make(Config({"unit=ssh.service"})).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("FIELD=value")));
  EXPECT_THAT(Make(Config({"1UNIT=x"})).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("FIELD=value")));
  palisade::v1::JournalInput c;
  c.set_name("journal");
  c.set_directory(dir_ + "/missing");
  EXPECT_THAT(Make(c).status(),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("inputs.journal[0] (\"journal\"): directory " + dir_ +
                                 "/missing: No such file or directory")));
  c.set_directory(file_);
  EXPECT_THAT(Make(c).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is not a directory")));
  c.set_directory(dir_);
  c.add_files(file_);
  EXPECT_THAT(Make(c).status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("directory and files are exclusive")));
  palisade::v1::JournalInput f = Config();
  f.add_files(dir_ + "/nope.journal");
  EXPECT_THAT(Make(f).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope.journal")));
  palisade::v1::JournalInput n = Config();
  n.set_name("Bad Name");
  EXPECT_THAT(Make(n).status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("name must match")));
  // A file that is not a journal.
  std::ofstream(dir_ + "/junk.journal") << "not a journal";
  palisade::v1::JournalInput junk = Config();
  junk.clear_files();
  junk.add_files(dir_ + "/junk.journal");
  auto j = Make(junk);
  if (!j.ok()) {
    EXPECT_THAT(j.status(), StatusIs(absl::StatusCode::kUnavailable,
                                     HasSubstr("inputs.journal[0] (\"journal\"): cannot open")));
  } else {
    Drain(**j);  // libsystemd skips a file it cannot read: nothing, and no crash
    EXPECT_TRUE(Lines().empty());
  }
}

TEST(JournalBuildLineTest, CutsAtTheCapAndLeavesOutMissingParts) {
  EXPECT_EQ(JournalInput::BuildLine(absl::FromUnixSeconds(946684800), "", "",
                                    "", "m", 100),
            "2000-01-01T00:00:00.000000Z -: m");
  EXPECT_EQ(JournalInput::BuildLine(absl::FromUnixMicros(kBase), "h", "sshd", "99999999999",
                                    "0123456789", 50),
            "2026-12-02T03:03:35.000000Z h sshd: 0123456789");
  EXPECT_EQ(JournalInput::BuildLine(absl::FromUnixMicros(kBase), "h", "sshd", "1",
                                    "0123456789", 45).size(),
            45u);
}

}  // namespace
}  // namespace palisade

namespace palisade {
namespace {

// What the pipeline reads from a rebuilt line: the journal's host, program and pid (sessions by
// pid), its time, and the message, even when the message itself looks like a header.
TEST(JournalBuildLineTest, TheSyslogParserReadsTheHeaderBackAndNotTheMessage) {
  const absl::Time when = absl::FromUnixMicros(kBase + 123456);
  const std::string line = JournalInput::BuildLine(
      when, "web-1", "sshd", "4242", "Dec  2 03:03:35 evil sshd[1]: Failed password", 1000);
  LineParser parser(palisade::v1::LOG_FORMAT_SYSLOG, absl::FixedTimeZone(5 * 3600));
  ParsedLine parsed;
  ASSERT_TRUE(parser.Parse(line, when, &parsed).ok());
  EXPECT_EQ(parsed.host, "web-1");
  EXPECT_EQ(parsed.program, "sshd");
  EXPECT_EQ(parsed.pid, "4242");
  EXPECT_EQ(parsed.message, "Dec  2 03:03:35 evil sshd[1]: Failed password");
  ASSERT_TRUE(parsed.time.has_value());
  EXPECT_EQ(*parsed.time, when);  // UTC, whatever the source's zone
}

}  // namespace
}  // namespace palisade
