// Issue 15: `palisadectl cloudflare rotate` against the real palisaded and the emulator binary.
// The daemon rolls its token now (Admin.RotateToken): the command prints the token id, the
// expiry and the next roll, never a secret; the emulator refuses the old secret, the token file
// holds the new one, bans still apply, and no call carried the old secret after the roll.
// Refused, with the reason, when rotation is not configured or the token comes from an
// environment variable.
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <fstream>
#include <string>
#include <vector>

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
using ::palisade::testing::RunShell;
using ::palisade::testing::ScrapeMetric;
using ::palisade::testing::ShipLines;
using ::palisade::testing::WaitFor;
using ::palisade::testing::WriteEdgeConfig;
using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;

const std::vector<std::string> kPacks = {"tests/e2e/testdata/edge.textproto"};
// Long enough that the schedule never rolls during the test: every roll is the command's.
constexpr char kRotation[] = "  rotation { interval { seconds: 86400 } }\n";

std::string Rotate(const Daemon& daemon, int* code, const std::string& flags = "") {
  return RunShell(absl::StrCat("services/cli/palisadectl --server=", daemon.grpc_address(),
                               " cloudflare rotate", flags, " 2>&1"),
                  code);
}

bool Verifies(const Emulator& cf, const std::string& token) {
  absl::StatusOr<std::string> r =
      HttpGet(cf.port(), "/client/v4/user/tokens/verify", {"Authorization: Bearer " + token});
  if (!r.ok()) return false;
  json j = json::parse(*r, nullptr, false);
  return j.is_object() && j.value("success", false);
}

std::vector<std::string> SshFailures(int host) {
  return std::vector<std::string>(
      3, absl::StrCat("Mar  3 14:02:01 web-1 sshd[1]: Failed password for root from 203.0.113.",
                      host, " port 22 ssh2"));
}

TEST(TokenRotateCliE2eTest, RotateRollsTheTokenNowAndBansStillApply) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  const std::string original = FirstLine(cf.token_file());
  const json tokens = EmulatorState(cf)["tokens"];
  ASSERT_EQ(tokens.size(), 1u) << tokens.dump();
  const std::string id = tokens[0]["id"];
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + WriteEdgeConfig(cf, cf.token_file(), kPacks, "", kRotation),
                     "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto ingest = palisade::v1::Ingest::NewStub(channel);
  ASSERT_TRUE(ShipLines(*ingest, palisade::v1::LOG_FORMAT_SYSLOG, SshFailures(1)).ok());
  ASSERT_TRUE(WaitFor([&] { return EmulatorAccessRuleValues(cf).count("203.0.113.1") > 0; },
                      absl::Seconds(60)));

  int code = -1;
  const std::string out = Rotate(**daemon, &code);
  ASSERT_EQ(code, 0) << out;
  const std::string rolled = FirstLine(cf.token_file());
  EXPECT_NE(rolled, original);
  EXPECT_THAT(out, HasSubstr(absl::StrCat("rolled token ", id)));
  EXPECT_THAT(out, HasSubstr("expires:   never"));  // the seeded token has no expiry
  EXPECT_THAT(out, HasSubstr("next roll: "));
  EXPECT_THAT(out, Not(HasSubstr(original)));
  EXPECT_THAT(out, Not(HasSubstr(rolled)));

  // Bans still apply, with the new secret; nothing carried the old one after the roll.
  ASSERT_TRUE(ShipLines(*ingest, palisade::v1::LOG_FORMAT_SYSLOG, SshFailures(2)).ok());
  ASSERT_TRUE(WaitFor([&] { return EmulatorAccessRuleValues(cf).count("203.0.113.2") > 0; },
                      absl::Seconds(60)));
  EXPECT_EQ(EmulatorState(cf)["retired_secret_calls"], 0);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_actions_total", {"result=\"failed\""}) > 0, false);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_cloudflare_token_rolls_total", {"result=\"ok\""}), 1);
  EXPECT_TRUE(Verifies(cf, rolled));
  EXPECT_FALSE(Verifies(cf, original));  // refused at once (and counted by the emulator)

  // Again, as JSON: the id, never the secret.
  const std::string again = Rotate(**daemon, &code, " --json");
  ASSERT_EQ(code, 0) << again;
  json j = json::parse(again, nullptr, false);
  ASSERT_TRUE(j.is_object()) << again;
  EXPECT_EQ(j["token_id"], id);
  EXPECT_FALSE(j.contains("expires"));
  EXPECT_NE(FirstLine(cf.token_file()), rolled);
  EXPECT_THAT(again, Not(HasSubstr(FirstLine(cf.token_file()))));
  EXPECT_TRUE(Verifies(cf, FirstLine(cf.token_file())));
}

TEST(TokenRotateCliE2eTest, RotateIsRefusedWithTheReason) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  const std::string original = FirstLine(cf.token_file());
  int code = -1;
  {
    // No cloudflare.rotation.
    absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(
        {"--config=" + WriteEdgeConfig(cf, cf.token_file(), kPacks), "--shutdown_grace=200ms"});
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    const std::string out = Rotate(**daemon, &code);
    EXPECT_NE(code, 0) << out;
    EXPECT_THAT(out, HasSubstr("rotation is not configured"));
    EXPECT_THAT(out, HasSubstr("code 9"));  // FAILED_PRECONDITION
  }
  {
    // The token from an environment variable: it could not be written back.
    setenv("PALISADE_E2E_CF_TOKEN", original.c_str(), 1);
    absl::StatusOr<std::unique_ptr<Daemon>> daemon =
        Daemon::Start({"--config=" + WriteEdgeConfig(cf, "", kPacks, "",
                                                     "  token_env: \"PALISADE_E2E_CF_TOKEN\"\n"),
                       "--shutdown_grace=200ms"});
    unsetenv("PALISADE_E2E_CF_TOKEN");
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    const std::string out = Rotate(**daemon, &code);
    EXPECT_NE(code, 0) << out;
    EXPECT_THAT(out, HasSubstr("environment variable PALISADE_E2E_CF_TOKEN"));
    EXPECT_THAT(out, Not(HasSubstr(original)));
  }
  // Nothing was rolled.
  EXPECT_EQ(FirstLine(cf.token_file()), original);
  EXPECT_TRUE(Verifies(cf, original));
}

}  // namespace
}  // namespace palisade
