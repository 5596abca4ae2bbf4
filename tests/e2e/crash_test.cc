// Crash test: ship a long attack log to palisaded (against the emulator) while killing it with
// SIGKILL at random points, restarting it on the same state file each time. At the end the
// emulator holds exactly the expected edge objects — none missing, none duplicated, none pushed
// twice — and palisaded's store agrees with the edge.
#include <fstream>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "palisade/v1/palisade.grpc.pb.h"
#include "services/cli/shipper.h"
#include "services/common/proto_time.h"
#include "services/store/store.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::nlohmann::json;
using ::palisade::testing::ActionsPending;
using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;
using ::palisade::testing::HttpGet;
using ::palisade::testing::WaitFor;

constexpr const char* kAccount = ::palisade::testing::kEmulatorAccount;

// One-hour decisions (the drift pack), no blast-radius limit (the test bans hundreds at once).
// Nothing may expire while the test runs, however slow the machine: the kill rounds take longer
// on a loaded one, and a decision that ended before the check would leave the edge "short" (the
// edge pack's seconds-long decisions did exactly that on a busy CI machine).
std::string Config(const Emulator& cf, const std::string& extra = "",
                   const std::string& pack = "drift.textproto") {
  return ::palisade::testing::WriteEdgeConfig(cf, cf.token_file(), {"tests/e2e/testdata/" + pack},
                                              "guard { max_new_bans_per_minute: 100000 }\n", extra);
}

json State(const Emulator& cf) { return ::palisade::testing::EmulatorState(cf); }

struct Attack {
  std::vector<std::string> auth, access;
  std::set<std::string> probes, scanners;
};

Attack MakeAttack() {
  Attack a;
  for (int i = 0; i < 300; ++i) {
    const std::string ip = absl::StrCat("203.0.", i / 200, ".", i % 200 + 1);
    a.probes.insert(ip);
    a.auth.push_back(absl::StrCat(
        "Mar  3 14:02:01 web-1 sshd[1]: Did not receive identification string from ", ip));
  }
  for (int i = 0; i < 150; ++i) {
    const std::string ip = absl::StrCat("198.18.", i / 100, ".", i % 100 + 1);
    a.scanners.insert(ip);
    for (const char* path : {"/.env", "/wp-login.php"}) {
      a.access.push_back(absl::StrCat(ip, " - - [03/Mar/2026:14:02:01 +0000] \"GET ", path,
                                      " HTTP/1.1\" 404 1 \"-\" \"x\""));
    }
  }
  return a;
}

absl::Status ShipChunk(const Daemon& daemon, palisade::v1::LogFormat format,
                       const std::vector<std::string>& lines, size_t begin, size_t end) {
  auto ingest = palisade::v1::Ingest::NewStub(
      grpc::CreateChannel(daemon.grpc_address(), grpc::InsecureChannelCredentials()));
  std::vector<palisade::v1::LogRecord> records;
  const auto now = ToProtoTime(absl::Now());
  for (size_t i = begin; i < end && i < lines.size(); ++i) {
    palisade::v1::LogRecord r;
    r.set_line(lines[i]);
    *r.mutable_event_time() = now;
    records.push_back(std::move(r));
  }
  ShipOptions options;
  options.format = format;
  options.batch_lines = 20;
  return Ship(*ingest, records, options).status();
}

void CheckEdge(const Emulator& cf, const Attack& attack, const std::string& state_file) {
  json state = State(cf);
  std::multiset<std::string> ruled;
  std::set<std::string> rule_ids;
  for (const auto& r : state["access_rules"]) {
    ruled.insert(r["configuration"]["value"].get<std::string>());
    rule_ids.insert(r["id"].get<std::string>());
  }
  EXPECT_EQ(std::set<std::string>(ruled.begin(), ruled.end()), attack.probes);
  EXPECT_EQ(ruled.size(), attack.probes.size()) << "duplicated access rules";
  std::set<std::string> listed;
  for (const auto& i : state["lists"]["palisade_block"]) listed.insert(i["ip"].get<std::string>());
  EXPECT_EQ(listed, attack.scanners);

  // Nothing was pushed twice: one successful create per access rule (a replay would be refused
  // as a duplicate and leave no audit entry, but Palisade must not even need that).
  absl::StatusOr<std::string> token = [&]() -> absl::StatusOr<std::string> {
    std::ifstream in(cf.token_file());
    std::string t;
    std::getline(in, t);
    return t;
  }();
  int creates = 0;
  for (int page = 1;; ++page) {
    absl::StatusOr<std::string> audit = HttpGet(
        cf.port(),
        absl::StrCat("/client/v4/accounts/", kAccount, "/audit_logs?per_page=1000&page=", page),
        {"Authorization: Bearer " + *token});
    ASSERT_TRUE(audit.ok()) << audit.status();
    json entries = json::parse(*audit)["result"];
    if (entries.empty()) break;
    for (const auto& e : entries) {
      creates += e["resource"]["type"] == "firewall.access_rule" && e["action"]["type"] == "create";
    }
  }
  EXPECT_EQ(creates, static_cast<int>(attack.probes.size()));

  // The store agrees with the edge.
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(state_file);
  ASSERT_TRUE(store.ok()) << store.status();
  absl::StatusOr<std::vector<EdgeRow>> edges = (*store)->LoadEdges();
  ASSERT_TRUE(edges.ok());
  std::set<std::string> stored_rules;
  for (const EdgeRow& e : *edges) {
    if (e.actuator == palisade::v1::ACTUATOR_ACCESS_RULE) stored_rules.insert(e.id);
  }
  EXPECT_EQ(stored_rules, rule_ids);
  EXPECT_TRUE((*store)->LoadOutbox()->empty());
}

// The emulator fails 20% of calls with 5xx, throttles 5% with 429 and drops 5% of connections:
// the edge still converges to exactly the expected set, and the retries show in the metrics.
TEST(FaultTest, ConvergesThroughErrorsThrottlingAndDroppedConnections) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start({"--operation_delay_ms=20"});
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  const Emulator& cf = **emulator;
  ASSERT_TRUE(palisade::testing::HttpPost(
                  cf.port(), "/__emulator/faults",
                  R"({"error_rate":0.2,"error_status":503,"throttle_rate":0.05,"drop_rate":0.05})")
                  .ok());
  const std::string state_file = std::string(std::getenv("TEST_TMPDIR")) + "/fault.db";
  Attack attack = MakeAttack();
  attack.auth.resize(100);
  attack.probes.clear();
  for (int i = 0; i < 100; ++i)
    attack.probes.insert(absl::StrCat("203.0.", i / 200, ".", i % 200 + 1));
  attack.access.resize(100);
  attack.scanners.clear();
  for (int i = 0; i < 50; ++i)
    attack.scanners.insert(absl::StrCat("198.18.", i / 100, ".", i % 100 + 1));

  absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(
      {"--config=" + Config(cf, "  retry_initial_backoff { nanos: 50000000 }\n"),
       "--shutdown_grace=200ms"},
      state_file);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  ASSERT_TRUE(ShipChunk(**daemon, palisade::v1::LOG_FORMAT_SYSLOG, attack.auth, 0, 100).ok());
  ASSERT_TRUE(ShipChunk(**daemon, palisade::v1::LOG_FORMAT_COMBINED, attack.access, 0, 100).ok());
  ASSERT_TRUE(WaitFor([&] { return ActionsPending(**daemon) == 0; }, absl::Seconds(180)));

  absl::StatusOr<std::string> metrics = HttpGet((*daemon)->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok());
  const double retries =
      palisade::testing::MetricValue(*metrics, "palisade_cloudflare_retries_total");
  EXPECT_GT(retries, 5);
  EXPECT_EQ(
      palisade::testing::MetricValue(*metrics, "palisade_actions_total", {"result=\"failed\""}), 0);
  EXPECT_GT(palisade::testing::MetricValue(*metrics, "palisade_cloudflare_requests_total",
                                           {"code=\"503\""}),
            0);
  EXPECT_EQ((*daemon)->Stop(), 0);
  ASSERT_TRUE(palisade::testing::HttpPost(cf.port(), "/__emulator/faults", "{}").ok());
  CheckEdge(cf, attack, state_file);
}

TEST(CrashTest, KillNineRepeatedlyAndTheEdgeStillEndsExact) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start({"--operation_delay_ms=30"});
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  const Emulator& cf = **emulator;
  const std::string state_file = std::string(std::getenv("TEST_TMPDIR")) + "/crash.db";
  const Attack attack = MakeAttack();
  std::mt19937 rng(20261129);
  const int kRounds = 6;
  for (int round = 0; round < kRounds; ++round) {
    absl::StatusOr<std::unique_ptr<Daemon>> daemon =
        Daemon::Start({"--config=" + Config(cf)}, state_file);
    ASSERT_TRUE(daemon.ok()) << "round " << round << ": " << daemon.status();
    const size_t a = attack.auth.size() * round / kRounds;
    const size_t b = attack.auth.size() * (round + 1) / kRounds;
    const size_t c = attack.access.size() * round / kRounds;
    const size_t d = attack.access.size() * (round + 1) / kRounds;
    ASSERT_TRUE(ShipChunk(**daemon, palisade::v1::LOG_FORMAT_SYSLOG, attack.auth, a, b).ok());
    ASSERT_TRUE(ShipChunk(**daemon, palisade::v1::LOG_FORMAT_COMBINED, attack.access, c, d).ok());
    // Die somewhere in the middle of sending it all to the edge.
    absl::SleepFor(absl::Milliseconds(std::uniform_int_distribution<int>(0, 150)(rng)));
    (*daemon)->Kill();
  }
  // A last start drains what is left, then stops cleanly.
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + Config(cf), "--shutdown_grace=200ms"}, state_file);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  ASSERT_TRUE(WaitFor([&] { return ActionsPending(**daemon) == 0; }, absl::Seconds(180)));
  EXPECT_EQ((*daemon)->Stop(), 0);
  CheckEdge(cf, attack, state_file);
}

}  // namespace
}  // namespace palisade
