// End to end: the real palisaded rolls its own Cloudflare token against the real emulator.
// Rolls under load (bans applied while the secret changes) fail no call and send none with a
// retired secret; a crash between the roll and the token file write (test hook) is rolled
// forward at the next start; a token file open to others is refused.
#include <stdlib.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;
using ::palisade::testing::EmulatorAccessRuleValues;
using ::palisade::testing::EmulatorState;
using ::palisade::testing::FirstLine;
using ::palisade::testing::HttpGet;
using ::palisade::testing::HttpPost;
using ::palisade::testing::ScrapeMetric;
using ::palisade::testing::ShipLines;
using ::palisade::testing::WaitFor;
using ::palisade::testing::WaitForSubscribers;
using ::palisade::testing::WriteEdgeConfig;
using json = nlohmann::json;

const std::vector<std::string> kPacks = {"tests/e2e/testdata/edge.textproto"};
constexpr char kRotation[] = "  rotation { interval { seconds: 1 } }\n";

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

bool Verifies(const Emulator& cf, const std::string& token) {
  absl::StatusOr<std::string> r =
      HttpGet(cf.port(), "/client/v4/user/tokens/verify", {"Authorization: Bearer " + token});
  if (!r.ok()) return false;
  json j = json::parse(*r, nullptr, false);
  return j.is_object() && j.value("success", false);
}

std::vector<std::string> SshFailures(int first, int count) {
  std::vector<std::string> lines;
  for (int n = first; n < first + count; ++n) {
    for (int i = 0; i < 3; ++i) {
      lines.push_back(absl::StrCat("Mar  3 14:02:01 web-1 sshd[1]: Failed password for root from ",
                                   "203.0.113.", n, " port 22 ssh2"));
    }
  }
  return lines;
}

TEST(RotationE2eTest, RollsUnderLoadFailNoCallAndRetireTheOldSecret) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  const std::string original = FirstLine(cf.token_file());
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + WriteEdgeConfig(cf, cf.token_file(), kPacks, "", kRotation),
                     "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto ingest = palisade::v1::Ingest::NewStub(channel);

  // Bans keep arriving while the token rolls once a second.
  const double rolls_at_start = std::max(
      0.0, ScrapeMetric(**daemon, "palisade_cloudflare_token_rolls_total", {"result=\"ok\""}));
  // 30 addresses (under the guard's 60 new bans a minute), 2 every ~500 ms: spread over rolls.
  int next = 1, polls = 0;
  auto applied = [&] {
    return ScrapeMetric(**daemon, "palisade_actions_total", {"op=\"apply\"", "result=\"applied\""});
  };
  const bool done = WaitFor(
      [&] {
        if (next <= 30 && polls++ % 10 == 0) {
          absl::StatusOr<ShipSummary> s =
              ShipLines(*ingest, palisade::v1::LOG_FORMAT_SYSLOG, SshFailures(next, 2));
          EXPECT_TRUE(s.ok()) << s.status();
          next += 2;
        }
        return next > 30 && applied() >= 30 &&
               ScrapeMetric(**daemon, "palisade_cloudflare_token_rolls_total", {"result=\"ok\""}) >=
                   rolls_at_start + 3;
      },
      absl::Seconds(60));
  ASSERT_TRUE(done) << "applied " << applied() << ", shipped " << next - 1;

  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_actions_total", {"result=\"failed\""}), 0);
  EXPECT_EQ(EmulatorState(cf)["retired_secret_calls"], 0);
  // No call was refused (401/403) and none failed for good.
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_cloudflare_requests_total", {"code=\"401\""}), 0);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_cloudflare_requests_total", {"code=\"403\""}), 0);
  EXPECT_EQ(
      ScrapeMetric(**daemon, "palisade_cloudflare_token_rolls_total", {"result=\"failed\""}) > 0,
      false);
  // The file holds a live secret; the original one is dead; the file stayed owner-only.
  const std::string now = FirstLine(cf.token_file());
  EXPECT_NE(now, original);
  struct stat st;
  ASSERT_EQ(stat(cf.token_file().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  (*daemon)->Stop();
  EXPECT_TRUE(Verifies(cf, FirstLine(cf.token_file())));
  EXPECT_FALSE(Verifies(cf, original));
  EXPECT_FALSE(Exists(cf.token_file() + ".rolled"));
}

TEST(RotationE2eTest, ACrashBetweenRollAndFileWriteIsRolledForward) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  const std::string original = FirstLine(cf.token_file());
  const std::string config = WriteEdgeConfig(cf, cf.token_file(), kPacks, "", kRotation);
  const std::string side = cf.token_file() + ".rolled";

  // The hook makes palisaded _exit(86) after the side file, before the token file.
  setenv("PALISADE_TEST_EXIT_AFTER_ROLL", "1", 1);
  absl::StatusOr<std::unique_ptr<Daemon>> crashing =
      Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
  unsetenv("PALISADE_TEST_EXIT_AFTER_ROLL");
  if (crashing.ok()) {
    ASSERT_TRUE(WaitFor([&] { return Exists(side); }, absl::Seconds(60)));
    EXPECT_EQ((*crashing)->Stop(), 86);
  } else {
    EXPECT_THAT(crashing.status().message(), ::testing::HasSubstr("status 86"));
  }
  ASSERT_TRUE(Exists(side));
  EXPECT_EQ(FirstLine(cf.token_file()), original);  // the dead secret
  EXPECT_FALSE(Verifies(cf, original));

  // The restart rolls forward to the side file's secret and works with it.
  absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(
      {"--config=" + WriteEdgeConfig(cf, cf.token_file(), kPacks), "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  EXPECT_FALSE(Exists(side));
  EXPECT_NE(FirstLine(cf.token_file()), original);
  EXPECT_TRUE(Verifies(cf, FirstLine(cf.token_file())));
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto ingest = palisade::v1::Ingest::NewStub(channel);
  ASSERT_TRUE(ShipLines(*ingest, palisade::v1::LOG_FORMAT_SYSLOG, SshFailures(7, 1)).ok());
  EXPECT_TRUE(WaitFor([&] { return EmulatorAccessRuleValues(cf).count("203.0.113.7") > 0; },
                      absl::Seconds(60)));
}

TEST(RotationE2eTest, AWorldReadableTokenFileIsRefused) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  ASSERT_EQ(chmod(cf.token_file().c_str(), 0644), 0);
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + WriteEdgeConfig(cf, cf.token_file(), kPacks)});
  ASSERT_FALSE(daemon.ok());
  EXPECT_THAT(daemon.status().message(), ::testing::HasSubstr("exited early with status 2"));
  // Fixed, it starts.
  ASSERT_EQ(chmod(cf.token_file().c_str(), 0600), 0);
  daemon = Daemon::Start({"--config=" + WriteEdgeConfig(cf, cf.token_file(), kPacks)});
  EXPECT_TRUE(daemon.ok()) << daemon.status();
}

// Rotation with a token file nothing can be written beside (the systemd unit's read-only
// /run/credentials, /etc under ProtectSystem=strict) is refused at start: a roll would retire
// the only live secret and leave its successor in memory, and the next start would read the
// dead one. (A directory in the probe's place makes creating it fail even as root.)
TEST(RotationE2eTest, RotationIsRefusedWhenNoRolledSecretCouldBeSaved) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  const std::string probe = cf.token_file() + ".probe";
  ASSERT_EQ(mkdir(probe.c_str(), 0700), 0);
  ASSERT_EQ(mkdir((probe + "/held").c_str(), 0700), 0);
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + WriteEdgeConfig(cf, cf.token_file(), kPacks, "", kRotation)});
  ASSERT_FALSE(daemon.ok());
  EXPECT_THAT(daemon.status().message(), ::testing::HasSubstr("exited early with status 2"));
  EXPECT_TRUE(Verifies(cf, FirstLine(cf.token_file())));  // nothing was rolled
  // Something can be saved there again: it starts.
  ASSERT_EQ(rmdir((probe + "/held").c_str()), 0);
  ASSERT_EQ(rmdir(probe.c_str()), 0);
  daemon =
      Daemon::Start({"--config=" + WriteEdgeConfig(cf, cf.token_file(), kPacks, "", kRotation)});
  EXPECT_TRUE(daemon.ok()) << daemon.status();
}

// Audit of itself: palisaded's own token used from outside the token's expected addresses (as
// the account's audit log tells it) raises an alert event on Watch and is never revoked: no
// revocation reaches the actuator (before: the op went to it like any other token's and failed
// there, "refusing to revoke palisaded's own API token"), the emulator sees no revocation call.
TEST(RotationE2eTest, TheOwnTokenMisusedRaisesAnAlertAndIsNeverRevoked) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  const std::string own = FirstLine(cf.token_file());
  const std::string audit_pack = absl::StrCat(
      "rule_files: \"", std::getenv("TEST_SRCDIR"),
      "/palisade/rules/cloudflare-audit.textproto\"\n"
      "cidr_sets { key: \"cloudflare_token_ips\" value { cidrs: \"192.0.2.0/24\" } }\n");
  // palisaded reads the account's audit log itself (AuditPoller), here every second.
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + WriteEdgeConfig(cf, cf.token_file(), {}, audit_pack,
                                                   "  audit_logs_interval { seconds: 1 }\n"),
                     "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto events = palisade::v1::Events::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  std::unique_ptr<grpc::ClientReader<palisade::v1::Event>> reader =
      events->Watch(&ctx, palisade::v1::WatchRequest());
  ASSERT_TRUE(WaitForSubscribers(**daemon, 1));

  // Then the service's own token is used from 127.0.0.1, outside the expected 192.0.2.0/24: the
  // next poll reads the record (after the subscription, so the alert cannot come before it).
  ASSERT_TRUE(HttpPost(cf.port(),
                       absl::StrCat("/client/v4/accounts/", ::palisade::testing::kEmulatorAccount,
                                    "/rules/lists"),
                       R"({"name":"own_use","kind":"ip"})", {"Authorization: Bearer " + own})
                  .ok());
  absl::StatusOr<std::string> audit =
      HttpGet(cf.port(),
              absl::StrCat("/client/v4/accounts/", ::palisade::testing::kEmulatorAccount,
                           "/logs/audit?since=2000-01-01&before=2100-01-01&limit=1000"),
              {"Authorization: Bearer " + own});
  ASSERT_TRUE(audit.ok()) << audit.status();
  std::string own_id;
  const json records = json::parse(*audit)["result"];  // a local: a range-for over a
                                                         // temporary's member dangles
  for (const auto& entry : records) {
    if (entry["actor"].value("ip_address", "") == "127.0.0.1") {
      own_id = entry["actor"].value("token_id", "");
    }
  }
  ASSERT_EQ(own_id.size(), 32u) << *audit;

  // The alert arrives; no action event for the token says the actuator tried (failed/applied).
  palisade::v1::Event e, alert;
  bool alerted = false;
  std::vector<std::string> attempts;
  while (!alerted && reader->Read(&e)) {
    if (e.has_action() && e.action().target().value() == own_id &&
        e.action().outcome() != "refused") {
      attempts.push_back(e.action().outcome() + ": " + e.action().detail());
    }
    if (e.has_alert()) {
      alert = e;
      alerted = true;
    }
  }
  ctx.TryCancel();
  ASSERT_TRUE(alerted);
  EXPECT_EQ(alert.kind(), palisade::v1::EVENT_KIND_ALERT);
  EXPECT_EQ(alert.alert().kind(), "own_token_misuse");
  EXPECT_EQ(alert.alert().target().value(), own_id);
  EXPECT_EQ(alert.alert().target().kind(), palisade::v1::TARGET_KIND_TOKEN_ID);
  EXPECT_EQ(alert.rule_id(), "cloudflare-token-misuse");
  EXPECT_THAT(alert.alert().detail(), ::testing::HasSubstr("own API token"));
  ASSERT_GT(alert.alert().evidence_size(), 0);  // the audit record, with the address it names
  EXPECT_THAT(alert.alert().evidence(0), ::testing::HasSubstr(own_id));
  EXPECT_THAT(alert.alert().evidence(0), ::testing::HasSubstr("127.0.0.1"));
  EXPECT_EQ(alert.DebugString().find(own), std::string::npos);  // never the secret
  EXPECT_THAT(attempts, ::testing::IsEmpty());
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_cloudflare_own_token_misuse_total"), 1);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_actions_total",
                         {"actuator=\"token_revocation\"", "result=\"failed\""}),
            0);
  EXPECT_EQ(EmulatorState(cf)["token_revocation_calls"], 0);
  // The state held in a local: a range-for over EmulatorState(cf)["tokens"] iterated a
  // temporary already destroyed (ASan: heap-use-after-free).
  const json state = EmulatorState(cf);
  int seen = 0;
  for (const auto& t : state.at("tokens")) {
    if (t["id"] != own_id) continue;
    ++seen;
    EXPECT_EQ(t["status"], "active") << t.dump();
  }
  EXPECT_EQ(seen, 1) << state.dump();
  EXPECT_TRUE(Verifies(cf, own));
}

}  // namespace
}  // namespace palisade
