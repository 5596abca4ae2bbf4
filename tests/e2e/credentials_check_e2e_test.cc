// Issue 15 (credentials check) through the real palisaded, palisadectl and the emulator binary:
// the emulator's seeded token lacks "Account Filter Lists Edit" and expires tomorrow. The daemon
// starts with the IP list actuator disabled (palisade_actuator_enabled 0) while the access-rule
// actuator bans; `palisadectl cloudflare check --json` names the missing permission and the
// expiry, exits 1, and never prints the secret.
#include <stdio.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "palisade/v1/palisade.grpc.pb.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::nlohmann::json;
using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;
using ::palisade::testing::RunShell;
using ::palisade::testing::ScrapeMetric;
using ::palisade::testing::ShipLines;
using ::palisade::testing::WaitFor;

TEST(CredentialsCheckE2eTest, MissingListPermissionDisablesOnlyTheListActuator) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator =
      Emulator::Start({"--token_permissions=firewall_services,rulesets,tokens,audit_logs",
                       "--token_ip_in=127.0.0.1/32", "--token_expires_in_hours=24"});
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  std::string secret;
  {
    std::ifstream in(cf.token_file());
    std::getline(in, secret);
  }
  ASSERT_FALSE(secret.empty());

  const std::string config = ::palisade::testing::WriteEdgeConfig(
      cf, cf.token_file(), {"tests/e2e/testdata/edge.textproto"});
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_actuator_enabled", {"actuator=\"ip_list\""}), 0);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_actuator_enabled", {"actuator=\"access_rule\""}), 1);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_actuator_enabled", {"actuator=\"rate_limit\""}), 1);
  EXPECT_EQ(
      ScrapeMetric(**daemon, "palisade_cloudflare_token_findings", {"kind=\"missing_permission\""}),
      1);
  EXPECT_EQ(
      ScrapeMetric(**daemon, "palisade_cloudflare_token_findings", {"kind=\"expiring_soon\""}), 1);
  EXPECT_EQ(
      ScrapeMetric(**daemon, "palisade_cloudflare_token_findings", {"kind=\"no_ip_condition\""}),
      0);

  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto ingest = palisade::v1::Ingest::NewStub(channel);
  {
    // Admin.Status carries the check made at start.
    auto admin = palisade::v1::Admin::NewStub(channel);
    grpc::ClientContext ctx;
    palisade::v1::StatusResponse status;
    ASSERT_TRUE(admin->Status(&ctx, {}, &status).ok());
    bool list_disabled = false, rules_enabled = false;
    for (const auto& a : status.actuator_states()) {
      if (a.actuator() == "ip_list") {
        list_disabled =
            !a.enabled() && a.reason().find("Account Filter Lists Edit") != std::string::npos;
      }
      if (a.actuator() == "access_rule") rules_enabled = a.enabled();
    }
    EXPECT_TRUE(list_disabled) << status.DebugString();
    EXPECT_TRUE(rules_enabled) << status.DebugString();
    EXPECT_TRUE(status.has_cloudflare_token_expires());
    EXPECT_EQ(status.DebugString().find(secret), std::string::npos);
  }
  // A scanner (the IP list rule) and an ssh attacker (the access-rule rule).
  std::vector<std::string> access(
      2, "198.51.100.4 - - [03/Mar/2026:14:02:01 +0000] \"GET /.env HTTP/1.1\" 404 1 \"-\" \"x\"");
  ASSERT_TRUE(ShipLines(*ingest, palisade::v1::LOG_FORMAT_COMBINED, access, "access.log").ok());
  std::vector<std::string> auth(3,
                                "Mar  3 14:02:01 web-1 sshd[1]: Failed password for root from "
                                "203.0.113.7 port 51234 ssh2");
  ASSERT_TRUE(ShipLines(*ingest, palisade::v1::LOG_FORMAT_SYSLOG, auth, "auth.log").ok());

  EXPECT_TRUE(WaitFor(
      [&] { return ::palisade::testing::EmulatorAccessRuleValues(cf).count("203.0.113.7") > 0; },
      absl::Seconds(60)))
      << ::palisade::testing::EmulatorState(cf).dump(1);
  // The scanner's decision was made, but nothing went to a list it may not write: no queue, no
  // list, no failed call.
  EXPECT_TRUE(WaitFor([&] { return ::palisade::testing::ActionsPending(**daemon) == 0; },
                      absl::Seconds(60)));
  EXPECT_TRUE(::palisade::testing::EmulatorListedValues(cf).empty());
  // Drift checks skip the disabled actuator instead of failing on its refused reads (before:
  // every run ended in error at the list, and the rate-limit check after it never ran).
  EXPECT_TRUE(WaitFor(
      [&] {
        return ScrapeMetric(**daemon, "palisade_reconcile_runs_total", {"result=\"ok\""}) >= 1;
      },
      absl::Seconds(60)));
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_reconcile_runs_total", {"result=\"error\""}), 0);
  EXPECT_GE(ScrapeMetric(**daemon, "palisade_engine_detections_total", {"rule=\"e2e-scanner\""}),
            1);

  int code = -1;
  const std::string out = RunShell(
      absl::StrCat("services/cli/palisadectl cloudflare check --json --config=", config), &code);
  EXPECT_EQ(code, 1) << out;
  EXPECT_EQ(out.find(secret), std::string::npos);
  json report = json::parse(out, nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << out;
  EXPECT_TRUE(report["read_self"].get<bool>());
  std::map<std::string, json> actuators;
  for (const json& a : report["actuators"]) actuators[a["actuator"]] = a;
  ASSERT_TRUE(actuators.count("ip_list")) << out;
  EXPECT_FALSE(actuators["ip_list"]["enabled"].get<bool>());
  EXPECT_NE(actuators["ip_list"]["reason"].get<std::string>().find("Account Filter Lists Edit"),
            std::string::npos)
      << out;
  EXPECT_TRUE(actuators["access_rule"]["enabled"].get<bool>());
  EXPECT_TRUE(actuators["token_revocation"]["enabled"].get<bool>());
  std::set<std::string> kinds;
  for (const json& f : report["findings"]) kinds.insert(f["kind"]);
  EXPECT_TRUE(kinds.count("missing_permission")) << out;
  EXPECT_TRUE(kinds.count("expiring_soon")) << out;
  EXPECT_FALSE(kinds.count("no_ip_condition")) << out;

  // The human form says the same.
  const std::string text =
      RunShell(absl::StrCat("services/cli/palisadectl cloudflare check --config=", config), &code);
  EXPECT_EQ(code, 1);
  EXPECT_NE(text.find("ip_list: DISABLED"), std::string::npos) << text;
  EXPECT_EQ(text.find(secret), std::string::npos);
}

// The audit-log need (it was never switched on): with the cloudflare-audit pack loaded, the
// token must read the account's audit logs. A token without "Access: Audit Logs Read" is told
// so by palisadectl cloudflare check and by the daemon (metric, Status); the actuators run.
TEST(CredentialsCheckE2eTest, TheAuditPackNeedsTheAuditLogPermission) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator =
      Emulator::Start({"--token_permissions=firewall_services,lists,rulesets,tokens",
                       "--token_ip_in=127.0.0.1/32", "--token_expires_in_hours=720"});
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  const std::string audit_pack = absl::StrCat(
      "rule_files: \"", std::getenv("TEST_SRCDIR"),
      "/palisade/rules/cloudflare-audit.textproto\"\n"
      "cidr_sets { key: \"cloudflare_token_ips\" value { cidrs: \"192.0.2.0/24\" } }\n");
  const std::string config = ::palisade::testing::WriteEdgeConfig(
      cf, cf.token_file(), {"tests/e2e/testdata/edge.textproto"}, audit_pack);
  int code = -1;
  const std::string out = RunShell(
      absl::StrCat("services/cli/palisadectl cloudflare check --json --config=", config), &code);
  EXPECT_EQ(code, 1) << out;
  json report = json::parse(out, nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << out;
  std::map<std::string, json> actuators;
  for (const json& a : report["actuators"]) actuators[a["actuator"]] = a;
  ASSERT_TRUE(actuators.count("audit_log")) << out;
  EXPECT_FALSE(actuators["audit_log"]["enabled"].get<bool>());
  EXPECT_NE(actuators["audit_log"]["reason"].get<std::string>().find("Audit Logs Read"),
            std::string::npos)
      << out;
  EXPECT_TRUE(actuators["ip_list"]["enabled"].get<bool>());
  // Without the pack, nothing asks for it.
  const std::string plain = ::palisade::testing::WriteEdgeConfig(
      cf, cf.token_file(), {"tests/e2e/testdata/edge.textproto"});
  const std::string without = RunShell(
      absl::StrCat("services/cli/palisadectl cloudflare check --json --config=", plain), &code);
  EXPECT_EQ(code, 0) << without;
  EXPECT_EQ(without.find("audit_log"), std::string::npos) << without;

  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_actuator_enabled", {"actuator=\"audit_log\""}), 0);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_actuator_enabled", {"actuator=\"ip_list\""}), 1);
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto admin = palisade::v1::Admin::NewStub(channel);
  grpc::ClientContext ctx;
  palisade::v1::StatusResponse status;
  ASSERT_TRUE(admin->Status(&ctx, {}, &status).ok());
  bool audit_disabled = false;
  for (const auto& a : status.actuator_states()) {
    if (a.actuator() == "audit_log") audit_disabled = !a.enabled();
  }
  EXPECT_TRUE(audit_disabled) << status.DebugString();
}

// The check inside the daemon, every check_interval: a permission removed in the dashboard after
// the start is seen (metric, Status with the time of the check, counted as lost), and given back
// it is seen again; the actuator never stopped.
TEST(CredentialsCheckE2eTest, APermissionRemovedWhileRunningIsSeenByThePeriodicCheck) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator =
      Emulator::Start({"--token_permissions=firewall_services,lists,rulesets,tokens",
                       "--token_ip_in=127.0.0.1/32", "--token_expires_in_hours=720"});
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  const json tokens = ::palisade::testing::EmulatorState(cf)["tokens"];
  ASSERT_EQ(tokens.size(), 1u);
  const std::string id = tokens[0]["id"];
  const std::string config = ::palisade::testing::WriteEdgeConfig(
      cf, cf.token_file(), {"tests/e2e/testdata/edge.textproto"}, "",
      "  check_interval { seconds: 1 }\n");
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_actuator_enabled", {"actuator=\"ip_list\""}), 1);

  auto set_permissions = [&](const std::string& list) {
    json body = {{"id", id}, {"permissions", json::array()}};
    for (absl::string_view p : absl::StrSplit(list, ',')) body["permissions"].push_back(p);
    return ::palisade::testing::HttpPost(cf.port(), "/__emulator/token_permissions", body.dump())
        .ok();
  };
  ASSERT_TRUE(set_permissions("firewall_services,rulesets,tokens"));
  ASSERT_TRUE(WaitFor(
      [&] {
        return ScrapeMetric(**daemon, "palisade_actuator_enabled", {"actuator=\"ip_list\""}) == 0;
      },
      absl::Seconds(60)));
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_cloudflare_permission_changes_total",
                         {"actuator=\"ip_list\"", "change=\"lost\""}),
            1);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_actuator_enabled", {"actuator=\"access_rule\""}), 1);
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto admin = palisade::v1::Admin::NewStub(channel);
  {
    grpc::ClientContext ctx;
    palisade::v1::StatusResponse status;
    ASSERT_TRUE(admin->Status(&ctx, {}, &status).ok());
    EXPECT_TRUE(status.has_credentials_checked());
    EXPECT_TRUE(status.credentials_check_error().empty()) << status.credentials_check_error();
    std::string reason;
    for (const auto& a : status.actuator_states()) {
      if (a.actuator() == "ip_list" && !a.enabled()) reason = a.reason();
    }
    EXPECT_NE(reason.find("Account Filter Lists Edit"), std::string::npos) << status.DebugString();
    EXPECT_NE(reason.find("still runs"), std::string::npos) << status.DebugString();
  }
  // Given back: enabled again, no restart.
  ASSERT_TRUE(set_permissions("firewall_services,lists,rulesets,tokens"));
  EXPECT_TRUE(WaitFor(
      [&] {
        return ScrapeMetric(**daemon, "palisade_actuator_enabled", {"actuator=\"ip_list\""}) == 1;
      },
      absl::Seconds(60)));
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_cloudflare_permission_changes_total",
                         {"actuator=\"ip_list\"", "change=\"gained\""}),
            1);
  EXPECT_GE(
      ScrapeMetric(**daemon, "palisade_cloudflare_credentials_checks_total", {"result=\"ok\""}), 3);
}

}  // namespace
}  // namespace palisade
