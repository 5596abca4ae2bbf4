// End to end, issue 12 section 1: whoever writes a log line must not choose who is banned. The
// real palisaded, loaded with the shipped sshd pack, drives the real emulator; the attacker puts
// a forged "from <victim> port 22" into the user name it tries to log in as. sshd writes the
// attacker's own address after it, and that address, not the victim's, must reach the edge.
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "palisade/v1/palisade.grpc.pb.h"
#include "services/cli/shipper.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;
using ::palisade::testing::EmulatorAccessRuleValues;
using ::palisade::testing::ShipLines;
using ::palisade::testing::WaitFor;

// Victims are in 198.51.100.0/24, attackers in 203.0.113.0/24.
constexpr char kVictimPassword[] = "198.51.100.77";
constexpr char kAttackerPassword[] = "203.0.113.44";
constexpr char kVictimMaxAuth[] = "198.51.100.78";
constexpr char kAttackerMaxAuth[] = "203.0.113.45";

TEST(InjectionE2eTest, AUserNameNamingAnotherAddressBansTheAttackerNeverTheVictim) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  const std::string config =
      ::palisade::testing::WriteEdgeConfig(cf, cf.token_file(), {"rules/sshd.textproto"});
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto ingest = palisade::v1::Ingest::NewStub(channel);

  std::vector<std::string> lines;
  // sshd-failed-password: threshold 5. The user name is "x from <victim> port 22"; sshd
  // appends the real "from <attacker> port <n> ssh2".
  for (int i = 0; i < 5; ++i) {
    lines.push_back(absl::StrCat(
        "Mar  3 14:02:0", i, " web-1 sshd[4211]: Failed password for invalid user x from ",
        kVictimPassword, " port 22 from ", kAttackerPassword, " port ", 51234 + i, " ssh2"));
  }
  // sshd-max-auth-attempts: threshold 2, the same trick.
  for (int i = 0; i < 2; ++i) {
    lines.push_back(absl::StrCat(
        "Mar  3 14:02:1", i,
        " web-1 sshd[4212]: error: maximum authentication attempts exceeded for invalid user y "
        "from ",
        kVictimMaxAuth, " port 22 from ", kAttackerMaxAuth, " port ", 40000 + i,
        " ssh2 [preauth]"));
  }
  absl::StatusOr<ShipSummary> shipped =
      ShipLines(*ingest, palisade::v1::LOG_FORMAT_SYSLOG, lines, "injection-e2e");
  ASSERT_TRUE(shipped.ok()) << shipped.status();

  // Both attackers reach the edge (a wide deadline: the machine may be loaded).
  const bool both = WaitFor(
      [&] {
        const std::set<std::string> targets = EmulatorAccessRuleValues(cf);
        return targets.count(kAttackerPassword) == 1 && targets.count(kAttackerMaxAuth) == 1;
      },
      absl::Seconds(60));
  EXPECT_TRUE(both) << ::palisade::testing::EmulatorState(cf).dump(2);
  // And only they: the victims named in the user names are never banned. Everything the daemon
  // decided from these lines has been flushed by now (both attackers' rules are on the edge,
  // and they were decided from the same batch), so the set is final.
  EXPECT_EQ(EmulatorAccessRuleValues(cf),
            (std::set<std::string>{kAttackerPassword, kAttackerMaxAuth}));

  // Nor is any decision, sent or not, held against a victim.
  auto decisions = palisade::v1::Decisions::NewStub(channel);
  grpc::ClientContext ctx;
  palisade::v1::ListDecisionsRequest req;
  palisade::v1::ListDecisionsResponse list;
  grpc::Status listed = decisions->List(&ctx, req, &list);
  ASSERT_TRUE(listed.ok()) << listed.error_message();
  std::set<std::string> keys;
  for (const auto& d : list.decisions()) keys.insert(d.target().value());
  EXPECT_EQ(keys.count(kVictimPassword), 0u);
  EXPECT_EQ(keys.count(kVictimMaxAuth), 0u);
  EXPECT_EQ(keys.count(kAttackerPassword), 1u);
  EXPECT_EQ(keys.count(kAttackerMaxAuth), 1u);
}

}  // namespace
}  // namespace palisade
