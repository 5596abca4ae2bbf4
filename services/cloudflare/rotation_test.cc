// Token rotation against the emulator over real HTTP on loopback, on a SimulatedClock.
#include "services/cloudflare/rotation.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/status_matchers.h"
#include "tests/cloudflare_fake/emulator_server.h"
#include "tests/cloudflare_fake/fake_cloudflare.h"

namespace palisade {
namespace {

using ::palisade::testing::IsOk;
using ::palisade::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

std::string TmpPath(const std::string& name) {
  static int n = 0;
  return absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name, "-", ++n);
}

TEST(AtomicWriteFileTest, ReplacesContentKeepingModeAndOwner) {
  const std::string path = TmpPath("secret");
  std::ofstream(path) << "old\n";
  ASSERT_EQ(chmod(path.c_str(), 0400), 0);
  struct stat before;
  ASSERT_EQ(stat(path.c_str(), &before), 0);

  ASSERT_THAT(AtomicWriteFile(path, "new-secret\n"), IsOk());
  EXPECT_EQ(Read(path), "new-secret\n");
  struct stat after;
  ASSERT_EQ(stat(path.c_str(), &after), 0);
  EXPECT_EQ(after.st_mode & 07777, 0400u);
  EXPECT_EQ(after.st_uid, before.st_uid);
  EXPECT_EQ(after.st_gid, before.st_gid);
  EXPECT_NE(after.st_ino, before.st_ino);  // a rename, not an in-place rewrite
  EXPECT_FALSE(Exists(absl::StrCat(path, ".tmp.", getpid())));

  ASSERT_EQ(chmod(path.c_str(), 0640), 0);
  ASSERT_THAT(AtomicWriteFile(path, "third\n"), IsOk());
  EXPECT_EQ(ModeOf(path), 0640u);

  // A new file is owner-only whatever the umask.
  const std::string fresh = TmpPath("fresh");
  const mode_t old_umask = umask(0);
  ASSERT_THAT(AtomicWriteFile(fresh, "x\n"), IsOk());
  umask(old_umask);
  EXPECT_EQ(ModeOf(fresh), 0600u);
}

// The owner is still given when it differs from the writer's (root only: it may chown).
TEST(AtomicWriteFileTest, AFileOfAnotherOwnerKeepsItsOwner) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to give the file another owner";
  const std::string path = TmpPath("owned");
  std::ofstream(path) << "old\n";
  ASSERT_EQ(chown(path.c_str(), 65534, 65534), 0);
  ASSERT_THAT(AtomicWriteFile(path, "new\n"), IsOk());
  struct stat after;
  ASSERT_EQ(stat(path.c_str(), &after), 0);
  EXPECT_EQ(after.st_uid, 65534u);
  EXPECT_EQ(after.st_gid, 65534u);
  EXPECT_EQ(Read(path), "new\n");
}

TEST(AtomicWriteFileTest, ErrorNamesThePathNotTheContent) {
  absl::Status s = AtomicWriteFile("/nonexistent-dir/token", "hunter2-secret\n");
  EXPECT_THAT(s, Not(IsOk()));
  EXPECT_THAT(s.message(), HasSubstr("/nonexistent-dir/token"));
  EXPECT_THAT(s.message(), Not(HasSubstr("hunter2")));
}

// A write that fails leaves no temporary file behind: it holds the secret, and a file per
// failed try would pile up beside the token file. The rename is made to fail by a directory in
// the token file's place (EISDIR); the temporary file had been created, written and fsynced.
TEST(AtomicWriteFileTest, AFailedRenameLeavesNoTemporaryFile) {
  const std::string path = TmpPath("token-dir");
  ASSERT_EQ(mkdir(path.c_str(), 0700), 0);
  const std::string inside = absl::StrCat(path, "/keep");
  ASSERT_TRUE(std::ofstream(inside) << "x");  // not empty: nothing may replace it
  absl::Status s = AtomicWriteFile(path, "hunter2-secret\n");
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInternal,
                          AllOf(HasSubstr("cannot rename over"), HasSubstr(path))));
  EXPECT_THAT(s.message(), Not(HasSubstr("hunter2")));
  EXPECT_FALSE(Exists(absl::StrCat(path, ".tmp.", getpid())));
  EXPECT_TRUE(Exists(inside));
}

class RotationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake::TokenSpec spec;
    spec.permissions = {"firewall_services", "lists", "rulesets", "tokens", "audit_logs"};
    std::tie(token_id_, token_) = fake_.AddToken(spec);
    ASSERT_THAT(server_.Start(), IsOk());
    token_file_ = TmpPath("cf.token");
    std::ofstream(token_file_) << token_ << "\n";
    ASSERT_EQ(chmod(token_file_.c_str(), 0600), 0);
  }

  std::unique_ptr<CloudflareClient> Client(const std::string& token,
                                           HttpTransport* transport = nullptr) {
    ClientOptions options;
    options.base_url = server_.base_url();
    options.account_id = fake_.options().account_id;
    options.zone_id = fake_.options().zone_id;
    Credentials creds;
    creds.token = Secret(token);
    return std::make_unique<CloudflareClient>(transport ? *transport : transport_, clock_, options,
                                              creds, registry_);
  }

  RotationOptions Options() {
    RotationOptions o;
    o.token_file = token_file_;
    o.token_id = token_id_;
    o.interval = absl::Hours(24);
    o.initial_backoff = absl::Minutes(1);
    return o;
  }

  std::string FileToken() {
    std::string s = Read(token_file_);
    if (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
  }

  SimulatedClock clock_;
  fake::FakeCloudflare fake_{clock_};
  fake::EmulatorServer server_{fake_};
  CurlTransport transport_;
  prometheus::Registry registry_;
  std::string token_id_, token_, token_file_;
};

TEST_F(RotationTest, RollWritesTheFileAndSwitchesTheClient) {
  auto client = Client(token_);
  TokenRotator rotator(*client, clock_, Options(), registry_);
  ASSERT_THAT(rotator.RotateNow(), IsOk());

  const std::string rolled = FileToken();
  EXPECT_NE(rolled, token_);
  EXPECT_EQ(fake_.TokenSnapshot(token_id_)["id"], token_id_);
  EXPECT_EQ(ModeOf(token_file_), 0600u);
  EXPECT_FALSE(Exists(RolledSideFile(token_file_)));
  // The client carries the new secret; the old one is dead and was never sent after the roll.
  EXPECT_THAT(client->VerifyToken(), IsOk());
  EXPECT_THAT(client->ListAccessRules(RuleScope::kZone, {}, 1), IsOk());
  EXPECT_EQ(fake_.retired_secret_calls(), 0);
  EXPECT_THAT(Client(token_)->VerifyToken(), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_GE(fake_.retired_secret_calls(), 1);  // the check above (user, then account verify)
  EXPECT_THAT(Client(rolled)->VerifyToken(), IsOk());
}

TEST_F(RotationTest, FailedRollKeepsTheOldTokenAndRetriesWithBackoff) {
  auto client = Client(token_);
  RotationOptions o = Options();
  o.initial_backoff = absl::Minutes(1);
  TokenRotator rotator(*client, clock_, o, registry_);
  fake::Faults faults;
  faults.fail_call = 1;  // the roll itself
  faults.error_status = 503;
  fake_.SetFaults(faults);

  clock_.Advance(absl::Hours(24));
  ASSERT_TRUE(rotator.Tick());
  EXPECT_EQ(FileToken(), token_);
  EXPECT_FALSE(Exists(RolledSideFile(token_file_)));
  EXPECT_THAT(client->VerifyToken(), IsOk());
  EXPECT_EQ(rotator.next_roll(), clock_.TimeNow() + absl::Minutes(1));
  EXPECT_FALSE(rotator.Tick());  // not before the backoff

  clock_.Advance(absl::Minutes(1));
  ASSERT_TRUE(rotator.Tick());  // the retry succeeds
  EXPECT_NE(FileToken(), token_);
  EXPECT_EQ(rotator.next_roll(), clock_.TimeNow() + absl::Hours(24));
  EXPECT_THAT(client->VerifyToken(), IsOk());
  EXPECT_EQ(fake_.retired_secret_calls(), 0);
}

// Rolls of the token the emulator has seen.
int Rolls(const fake::FakeCloudflare& cf) {
  int n = 0;
  for (const fake::json& e : cf.AuditLog()) n += e["action"]["type"] == "roll";
  return n;
}

// A roll whose new secret cannot be saved (the side file cannot be written): the client already
// uses the new secret, the old one is dead. The rotator keeps it and tries to save it again; it
// used to report "the current secret is kept" and roll again a minute later, retiring a secret
// that was never saved.
TEST_F(RotationTest, ARolledSecretThatCannotBeSavedIsSavedAgainNotRolledAgain) {
  auto client = Client(token_);
  TokenRotator rotator(*client, clock_, Options(), registry_);
  const std::string side = RolledSideFile(token_file_);
  ASSERT_EQ(mkdir(side.c_str(), 0700), 0);  // a directory: the side file cannot be renamed there

  clock_.Advance(absl::Hours(24));
  ASSERT_TRUE(rotator.Tick());
  EXPECT_EQ(Rolls(fake_), 1);
  EXPECT_EQ(FileToken(), token_);
  EXPECT_THAT(client->VerifyToken(), IsOk());  // the new secret, in use
  EXPECT_THAT(Client(token_)->VerifyToken(), StatusIs(absl::StatusCode::kUnauthenticated));
  const int64_t old_secret_checks = fake_.retired_secret_calls();
  EXPECT_EQ(rotator.next_roll(), clock_.TimeNow() + absl::Minutes(1));

  // A minute later the tick saves again (still refused); it does not roll.
  clock_.Advance(absl::Minutes(1));
  ASSERT_TRUE(rotator.Tick());
  EXPECT_EQ(Rolls(fake_), 1);
  EXPECT_EQ(rotator.next_roll(), clock_.TimeNow() + absl::Minutes(2));
  // Nor does a roll asked for meanwhile: the new secret would be no easier to save.
  absl::Status now = rotator.RotateNow();
  EXPECT_THAT(now, StatusIs(absl::StatusCode::kInternal, HasSubstr("could not be saved")));
  EXPECT_EQ(now.message().find(token_), std::string::npos);
  EXPECT_EQ(Rolls(fake_), 1);

  // Once the file can be written, the next try saves the secret in use.
  ASSERT_EQ(rmdir(side.c_str()), 0);
  clock_.Advance(absl::Minutes(2));
  ASSERT_TRUE(rotator.Tick());
  EXPECT_EQ(Rolls(fake_), 1);
  EXPECT_FALSE(Exists(side));
  EXPECT_THAT(Client(FileToken())->VerifyToken(), IsOk());
  EXPECT_THAT(client->VerifyToken(), IsOk());
  // The schedule runs again from the roll.
  EXPECT_EQ(rotator.next_roll(), clock_.TimeNow() - absl::Minutes(3) + absl::Hours(24));
  // palisaded never sent the old secret again: only the check above did.
  EXPECT_EQ(fake_.retired_secret_calls(), old_secret_checks);
}

// The operator who asked for that roll is told the secret changed but is not saved yet.
TEST_F(RotationTest, AnOperatorRollThatCannotBeSavedSaysTheSecretChanged) {
  auto client = Client(token_);
  TokenRotator rotator(*client, clock_, Options(), registry_);
  const std::string side = RolledSideFile(token_file_);
  ASSERT_EQ(mkdir(side.c_str(), 0700), 0);
  absl::StatusOr<RollReport> report = rotator.RotateNowForOperator();
  EXPECT_THAT(report, StatusIs(absl::StatusCode::kInternal,
                               AllOf(HasSubstr("was rolled"), HasSubstr("could not be saved"))));
  EXPECT_THAT(report.status().message(), Not(HasSubstr("current secret is kept")));
  EXPECT_EQ(report.status().message().find(token_), std::string::npos);
  EXPECT_EQ(Rolls(fake_), 1);
  EXPECT_THAT(client->VerifyToken(), IsOk());
  // Saving is tried again soon, not at the next scheduled roll.
  EXPECT_EQ(rotator.next_roll(), clock_.TimeNow() + absl::Minutes(1));
}

// As the shipped systemd unit does (SystemCallFilter=~@privileged, no SystemCallErrorNumber):
// a chown kills the process with SIGSYS. Applies to the calling thread.
void KillOnChown() {
  std::vector<sock_filter> prog = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
  };
  for (long nr : {
#ifdef __NR_chown
           static_cast<long>(__NR_chown),
#endif
#ifdef __NR_lchown
           static_cast<long>(__NR_lchown),
#endif
           static_cast<long>(__NR_fchown), static_cast<long>(__NR_fchownat)}) {
    prog.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<__u32>(nr), 0, 1));
    prog.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
  }
  prog.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  sock_fprog fprog{static_cast<unsigned short>(prog.size()), prog.data()};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
      prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) != 0) {
    _exit(3);
  }
}

// Under that unit with token_file in the state directory (owned by palisaded's own user), a roll
// wrote the token file with an fchown to the owner it already had: SIGSYS, then a restart loop.
TEST_F(RotationTest, ARollReplacesATokenFileItOwnsWithoutChown) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        auto client = Client(token_);
        TokenRotator rotator(*client, clock_, Options(), registry_);
        KillOnChown();
        absl::Status s = rotator.RotateNow();
        _exit(s.ok() && FileToken() != token_ && !Exists(RolledSideFile(token_file_)) ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

// A token file where palisaded cannot create files (/run/credentials/..., /etc under
// ProtectSystem=strict): the roll went through at Cloudflare, the new secret could be saved
// nowhere, and the next start read the dead token. Now the directory is checked first and no
// roll is sent. (The probe's name is taken by a directory: creation fails even as root.)
TEST_F(RotationTest, NoRollIsSentWhenNothingCanBeWrittenNextToTheTokenFile) {
  auto client = Client(token_);
  TokenRotator rotator(*client, clock_, Options(), registry_);
  ASSERT_EQ(mkdir((token_file_ + ".probe").c_str(), 0700), 0);
  const absl::Status check = CheckTokenFileWritable(token_file_);
  EXPECT_THAT(check, StatusIs(absl::StatusCode::kFailedPrecondition,
                              AllOf(HasSubstr(token_file_), HasSubstr("cloudflare.token_file"))));

  absl::StatusOr<RollReport> report = rotator.RotateNowForOperator();
  EXPECT_THAT(report, StatusIs(absl::StatusCode::kFailedPrecondition,
                               AllOf(HasSubstr(token_file_), HasSubstr("no roll is sent"))));
  EXPECT_THAT(rotator.RotateNow(), StatusIs(absl::StatusCode::kFailedPrecondition));
  clock_.Advance(absl::Hours(24));
  ASSERT_TRUE(rotator.Tick());
  EXPECT_EQ(Rolls(fake_), 0);
  EXPECT_EQ(FileToken(), token_);
  EXPECT_THAT(Client(token_)->VerifyToken(), IsOk());
  EXPECT_EQ(rotator.next_roll(), clock_.TimeNow() + absl::Minutes(1));  // retried with backoff

  // Once a file can be created there, the roll goes out.
  ASSERT_EQ(rmdir((token_file_ + ".probe").c_str()), 0);
  clock_.Advance(absl::Minutes(1));
  ASSERT_TRUE(rotator.Tick());
  EXPECT_EQ(Rolls(fake_), 1);
  EXPECT_NE(FileToken(), token_);
  EXPECT_FALSE(Exists(token_file_ + ".probe"));
  EXPECT_THAT(CheckTokenFileWritable(token_file_), IsOk());
}

// Forwards every call; the answer to the roll (PUT .../value) is lost after Cloudflare did it,
// and, with `down`, every call after it fails too (Cloudflare unreachable).
class LosesTheRollsAnswer : public HttpTransport {
 public:
  explicit LosesTheRollsAnswer(HttpTransport& real) : real_(real) {}
  absl::StatusOr<HttpResponse> Send(const HttpRequest& request) override {
    if (down) return absl::UnavailableError("connection refused");
    absl::StatusOr<HttpResponse> reply = real_.Send(request);
    if (request.method == "PUT" && absl::EndsWith(request.url, "/value")) {
      if (down_after_roll) down = true;
      return absl::UnavailableError("connection reset by peer");
    }
    return reply;
  }
  std::atomic<bool> down{false};
  std::atomic<bool> down_after_roll{false};

 private:
  HttpTransport& real_;
};

// The roll went through at Cloudflare but its answer was lost: the old secret is dead and the
// new one unknown. The operator was told "the current secret is kept" and the roll was retried
// every minute with the dead secret.
TEST_F(RotationTest, ARollWhoseAnswerWasLostSaysSoAndIsNotRetried) {
  LosesTheRollsAnswer lossy(transport_);
  auto client = Client(token_, &lossy);
  TokenRotator rotator(*client, clock_, Options(), registry_);
  absl::StatusOr<RollReport> report = rotator.RotateNowForOperator();
  EXPECT_THAT(report, Not(IsOk()));
  EXPECT_THAT(report.status().message(), Not(HasSubstr("kept")));
  EXPECT_THAT(report.status().message(),
              AllOf(HasSubstr("went through but its new secret was lost"),
                    HasSubstr("create a new token"), HasSubstr(token_file_)));
  EXPECT_THAT(report.status().message(), Not(HasSubstr(token_)));
  EXPECT_EQ(Rolls(fake_), 1);
  EXPECT_EQ(FileToken(), token_);

  // No roll goes out again, the schedule's or an operator's.
  clock_.Advance(absl::Hours(48));
  rotator.Tick();
  clock_.Advance(absl::Hours(48));
  rotator.Tick();
  EXPECT_THAT(rotator.RotateNow(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("was lost")));
  EXPECT_THAT(rotator.RotateNowForOperator().status().message(), Not(HasSubstr("kept")));
  EXPECT_EQ(Rolls(fake_), 1);
  EXPECT_EQ(rotator.next_roll(), absl::InfiniteFuture());
}

// The same, with Cloudflare unreachable right after: the outcome is unknown, and said so; the
// next try checks the secret before any roll and finds it dead.
TEST_F(RotationTest, ARollWithAnUnknownOutcomeSaysSoAndIsCheckedBeforeAnyRoll) {
  LosesTheRollsAnswer lossy(transport_);
  lossy.down_after_roll = true;
  auto client = Client(token_, &lossy);
  TokenRotator rotator(*client, clock_, Options(), registry_);
  absl::StatusOr<RollReport> report = rotator.RotateNowForOperator();
  EXPECT_THAT(report, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(report.status().message(), Not(HasSubstr("kept")));
  EXPECT_THAT(report.status().message(), AllOf(HasSubstr("may have gone through"),
                                               HasSubstr("unknown"), HasSubstr(token_file_)));
  EXPECT_EQ(Rolls(fake_), 1);

  lossy.down = false;
  clock_.Advance(absl::Hours(24));
  ASSERT_TRUE(rotator.Tick());
  EXPECT_EQ(Rolls(fake_), 1);  // checked, not rolled again
  EXPECT_THAT(rotator.RotateNow(), StatusIs(absl::StatusCode::kDataLoss,
                                            HasSubstr("went through but its new secret was lost")));
  EXPECT_EQ(Rolls(fake_), 1);
}

// A roll refused in a way that leaves the secret alive (503 before doing it) is checked, and
// only then reported as keeping the current secret.
TEST_F(RotationTest, AnUnclearFailureWhoseSecretStillWorksKeepsIt) {
  auto client = Client(token_);
  TokenRotator rotator(*client, clock_, Options(), registry_);
  fake::Faults faults;
  faults.fail_call = 1;
  faults.error_status = 503;
  fake_.SetFaults(faults);
  EXPECT_THAT(rotator.RotateNowForOperator(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("current secret is kept")));
  clock_.Advance(absl::Minutes(1));
  EXPECT_THAT(rotator.RotateNow(), IsOk());  // not stopped: the roll is retried and goes through
  EXPECT_EQ(Rolls(fake_), 1);
}

// Rolls counted by result (palisade_cloudflare_token_rolls_total).
double RollsCounted(prometheus::Registry& registry, const std::string& result) {
  double n = 0;
  for (const auto& f : registry.Collect()) {
    if (f.name != "palisade_cloudflare_token_rolls_total") continue;
    for (const auto& m : f.metric) {
      for (const auto& l : m.label) {
        if (l.name == "result" && l.value == result) n += m.counter.value;
      }
    }
  }
  return n;
}

bool IsRoll(const HttpRequest& request) {
  return request.method == "PUT" && absl::EndsWith(request.url, "/value");
}

// Forwards every call but the roll, which `reshape` answers (forwarding it, or not, to `real`).
class ReshapesTheRollsAnswer : public HttpTransport {
 public:
  using Reshape =
      std::function<absl::StatusOr<HttpResponse>(const HttpRequest&, HttpTransport& real)>;
  ReshapesTheRollsAnswer(HttpTransport& real, Reshape reshape)
      : real_(real), reshape_(std::move(reshape)) {}
  absl::StatusOr<HttpResponse> Send(const HttpRequest& request) override {
    if (absl::StrContains(request.url, "/tokens/verify")) ++verifies;
    return IsRoll(request) ? reshape_(request, real_) : real_.Send(request);
  }
  std::atomic<int> verifies{0};

 private:
  HttpTransport& real_;
  Reshape reshape_;
};

// A 2xx of an unexpected shape to the roll ("success" a string) made the client throw on the
// rotator's thread: std::terminate. It is a status now, one the roll may have been done under:
// the old secret is checked, found dead, and the loss reported and counted.
TEST_F(RotationTest, AnOddAnswerToTheRollIsCheckedNotACrash) {
  ReshapesTheRollsAnswer odd(
      transport_, [](const HttpRequest& roll, HttpTransport& real) -> absl::StatusOr<HttpResponse> {
        if (absl::StatusOr<HttpResponse> done = real.Send(roll); !done.ok()) return done;
        HttpResponse r;
        r.status = 200;
        r.body = R"({"success":"true","result":"cfut_9876543210abcdefghijABCDEFGHIJ9876543210"})";
        return r;
      });
  auto client = Client(token_, &odd);
  TokenRotator rotator(*client, clock_, Options(), registry_);
  EXPECT_THAT(rotator.RotateNow(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("new secret was lost")));
  EXPECT_EQ(RollsCounted(registry_, "lost"), 1);
  EXPECT_EQ(rotator.next_roll(), absl::InfiniteFuture());
  EXPECT_EQ(FileToken(), token_);
}

// A roll refused for its secret (401/403, 9109: the token disabled, expired or rolled elsewhere)
// was not done: the roll goes on a fresh connection, so libcurl cannot have sent it twice. It is
// not checked nor called lost; the rotator backs off and rolls again once the token is back.
TEST_F(RotationTest, ARollRefusedForItsSecretIsNotCalledLost) {
  ReshapesTheRollsAnswer refused(
      transport_, [](const HttpRequest&, HttpTransport&) -> absl::StatusOr<HttpResponse> {
        HttpResponse r;
        r.status = 403;
        r.body = R"({"success":false,"errors":[{"code":9109,"message":"Invalid access token"}],)"
                 R"("messages":[],"result":null})";
        return r;
      });
  auto client = Client(token_, &refused);
  TokenRotator rotator(*client, clock_, Options(), registry_);
  absl::Status s = rotator.RotateNow();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(s.message(), Not(HasSubstr(token_)));
  EXPECT_EQ(refused.verifies, 0);
  EXPECT_EQ(RollsCounted(registry_, "lost"), 0);
  EXPECT_NE(rotator.next_roll(), absl::InfiniteFuture());
}

// A roll that never left (no connection made, marked by the transport) cannot have been done:
// it is not checked, and says the current secret is kept.
TEST_F(RotationTest, ARollThatNeverLeftIsNotChecked) {
  ReshapesTheRollsAnswer refused(
      transport_, [](const HttpRequest&, HttpTransport&) -> absl::StatusOr<HttpResponse> {
        return MarkTransportNeverSent(absl::UnavailableError("HTTP transport: could not connect"));
      });
  auto client = Client(token_, &refused);
  TokenRotator rotator(*client, clock_, Options(), registry_);
  EXPECT_THAT(rotator.RotateNowForOperator(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("current secret is kept")));
  EXPECT_EQ(refused.verifies, 0);
}

TEST_F(RotationTest, RollsBeforeExpiry) {
  auto client = Client(token_);
  RotationOptions o = Options();
  o.interval = absl::Hours(24);
  o.expires_on = clock_.TimeNow() + absl::Hours(60);
  TokenRotator rotator(*client, clock_, o, registry_);
  // Two intervals before expiry (12 h from now) comes before one interval (24 h).
  EXPECT_EQ(rotator.next_roll(), clock_.TimeNow() + absl::Hours(12));
}

// palisadectl cloudflare rotate: one roll now, its report (id, expiry read back, the schedule
// restarted), never the secret; refused while another roll runs, without waiting for it.
TEST_F(RotationTest, AnOperatorRollReportsTheTokenAndRestartsTheSchedule) {
  auto client = Client(token_);
  RotationOptions o = Options();
  TokenRotator rotator(*client, clock_, o, registry_);
  clock_.Advance(absl::Hours(20));
  absl::StatusOr<RollReport> report = rotator.RotateNowForOperator();
  ASSERT_THAT(report, IsOk());
  EXPECT_EQ(report->token_id, token_id_);
  EXPECT_EQ(report->rolled_at, clock_.TimeNow());
  EXPECT_EQ(report->next_roll, clock_.TimeNow() + absl::Hours(24));
  EXPECT_EQ(rotator.next_roll(), clock_.TimeNow() + absl::Hours(24));
  EXPECT_TRUE(report->expiry_read);
  EXPECT_EQ(report->expires_on, std::nullopt);  // the seeded token never expires
  EXPECT_NE(FileToken(), token_);
  EXPECT_THAT(Client(token_)->VerifyToken(), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(client->VerifyToken(), IsOk());
  EXPECT_FALSE(rotator.Tick());  // the schedule restarted: not due 20 h after the first
}

TEST_F(RotationTest, AnOperatorRollIsRefusedWhileAnotherRuns) {
  auto client = Client(token_);
  absl::Notification entered, release;
  RotationOptions o = Options();
  o.before_roll_for_test = [&] {
    if (!entered.HasBeenNotified()) {
      entered.Notify();
      release.WaitForNotification();
    }
  };
  TokenRotator rotator(*client, clock_, o, registry_);
  absl::Status first;
  std::thread running([&] { first = rotator.RotateNow(); });
  entered.WaitForNotification();
  absl::StatusOr<RollReport> second = rotator.RotateNowForOperator();
  EXPECT_THAT(second, StatusIs(absl::StatusCode::kAborted, HasSubstr("already running")));
  release.Notify();
  running.join();
  EXPECT_THAT(first, IsOk());
  // Only the first rolled: the file holds the secret that verifies.
  EXPECT_THAT(Client(FileToken())->VerifyToken(), IsOk());
  // Free again: the next operator roll goes through.
  EXPECT_THAT(rotator.RotateNowForOperator(), IsOk());
}

TEST_F(RotationTest, AFailedOperatorRollKeepsTheSecretAndSaysSo) {
  auto client = Client(token_);
  TokenRotator rotator(*client, clock_, Options(), registry_);
  fake::Faults faults;
  faults.fail_call = 1;
  faults.error_status = 503;
  fake_.SetFaults(faults);
  absl::StatusOr<RollReport> report = rotator.RotateNowForOperator();
  EXPECT_THAT(report, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("secret is kept")));
  EXPECT_EQ(report.status().message().find(token_), std::string::npos);
  EXPECT_EQ(FileToken(), token_);
  EXPECT_THAT(client->VerifyToken(), IsOk());
}

TEST_F(RotationTest, RollForwardFromASideFileAfterACrash) {
  // A roll whose process died after the side file: the token file still has the dead secret.
  const std::string side = RolledSideFile(token_file_);
  {
    auto before_crash = Client(token_);
    absl::StatusOr<CloudflareClient::RolledToken> fresh = before_crash->RollToken(
        token_id_, false,
        [&](const Secret& s) { return AtomicWriteFile(side, s.value() + "\n", 0600); });
    ASSERT_THAT(fresh, IsOk());
    ASSERT_THAT(fresh->persisted, IsOk());
  }
  ASSERT_EQ(FileToken(), token_);
  const std::string live = Read(side).substr(0, Read(side).size() - 1);

  // The restart reads the token file (dead), then rolls forward.
  auto client = Client(FileToken());
  absl::StatusOr<std::optional<Secret>> forward = RollForward(token_file_, *client, false);
  ASSERT_THAT(forward, IsOk());
  ASSERT_TRUE(forward->has_value());
  EXPECT_EQ((*forward)->value(), live);
  EXPECT_EQ(FileToken(), live);
  EXPECT_EQ(ModeOf(token_file_), 0600u);
  EXPECT_FALSE(Exists(side));
  EXPECT_THAT(client->VerifyToken(), IsOk());

  // Nothing to do the next time.
  forward = RollForward(token_file_, *client, false);
  ASSERT_THAT(forward, IsOk());
  EXPECT_FALSE(forward->has_value());
}

TEST_F(RotationTest, ARefusedSideFileIsDroppedAndTheTokenFileKept) {
  const std::string side = RolledSideFile(token_file_);
  std::ofstream(side) << "cfut_notarealtoken0123456789abcdefghijklmnopq\n";
  ASSERT_EQ(chmod(side.c_str(), 0600), 0);
  auto client = Client(token_);
  absl::StatusOr<std::optional<Secret>> forward = RollForward(token_file_, *client, false);
  ASSERT_THAT(forward, IsOk());
  EXPECT_FALSE(forward->has_value());
  EXPECT_FALSE(Exists(side));
  EXPECT_EQ(FileToken(), token_);
  EXPECT_THAT(client->VerifyToken(), IsOk());
}

TEST_F(RotationTest, NoCallFailsAndNoneCarriesTheOldSecretUnderLoad) {
  auto client = Client(token_);
  TokenRotator rotator(*client, clock_, Options(), registry_);
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> load;
  for (int i = 0; i < 4; ++i) {
    load.emplace_back([&, i] {
      int n = 0;
      while (!stop.load()) {
        absl::Status s =
            (i % 2 == 0)
                ? client
                      ->CreateAccessRule(RuleScope::kZone, "block", "ip",
                                         absl::StrCat("198.51.100.", (i * 50 + n++) % 250 + 1),
                                         "palisade:load;")
                      .status()
                : client->ListAccessRules(RuleScope::kZone, {}, 1).status();
        if (s.ok() || s.code() == absl::StatusCode::kAlreadyExists) {
          ++ok;
        } else {
          ++failed;
          ADD_FAILURE() << s;
        }
      }
    });
  }
  std::vector<std::string> seen = {token_};
  for (int roll = 0; roll < 5; ++roll) {
    const int before = ok.load();
    while (ok.load() < before + 5) std::this_thread::yield();  // calls in flight around it
    ASSERT_THAT(rotator.RotateNow(), IsOk());
    seen.push_back(FileToken());
  }
  stop = true;
  for (auto& t : load) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(fake_.retired_secret_calls(), 0);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), seen.size());
  EXPECT_THAT(Client(FileToken())->VerifyToken(), IsOk());
}

}  // namespace
}  // namespace palisade
