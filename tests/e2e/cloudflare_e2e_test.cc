// End to end with the edge: the real palisaded, configured against the real emulator binary,
// fed attack logs over gRPC. The emulator's state must show the access rules, the IP list
// items with their custom rule, the rate-limiting rule and the revoked token, and then, once
// the (short) decisions expire, everything but the revocation must be gone.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "palisade/v1/palisade.grpc.pb.h"
#include "services/cli/shipper.h"
#include "services/common/proto_time.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::nlohmann::json;
using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;
using ::palisade::testing::HttpGet;
using ::palisade::testing::HttpPost;
using ::palisade::testing::MetricValue;
using ::testing::HasSubstr;

constexpr const char* kAccount = ::palisade::testing::kEmulatorAccount;
constexpr const char* kZone = ::palisade::testing::kEmulatorZone;
using ::palisade::testing::WaitFor;

const std::vector<std::string> kEdgePacks = {"tests/e2e/testdata/edge.textproto",
                                             "rules/cloudflare-tokens.textproto"};

std::string WriteConfig(const Emulator& emulator, const std::string& token_file,
                        const std::string& extra = "", const std::string& top = "") {
  return ::palisade::testing::WriteEdgeConfig(emulator, token_file, kEdgePacks, top, extra);
}

json State(const Emulator& emulator) { return ::palisade::testing::EmulatorState(emulator); }

// A token the emulator makes for a test to leak or misuse: its {"id", "value", ...}.
absl::StatusOr<json> SeedToken(const Emulator& emulator) {
  absl::StatusOr<std::string> made = HttpPost(emulator.port(), "/__emulator/tokens",
                                              R"({"name":"ci-deploy","permissions":["lists"]})");
  if (!made.ok()) return made.status();
  return json::parse(*made)["result"];
}

// The status ("active", "disabled") of the token with `id` in the emulator's state; "" if absent.
std::string TokenStatus(const json& state, const json& id) {
  for (const auto& t : state["tokens"]) {
    if (t["id"] == id) return t["status"];
  }
  return "";
}

void ShipOrDie(palisade::v1::Ingest::Stub& stub, palisade::v1::LogFormat format,
               const std::vector<std::string>& lines) {
  absl::StatusOr<ShipSummary> shipped = ::palisade::testing::ShipLines(stub, format, lines);
  ASSERT_TRUE(shipped.ok()) << shipped.status();
}

// The emulated zone's IP access rules in `state` (State()), as (target, value): ("ip6",
// "2001:db8::1"), ("ip_range", "2001:db8:1:2::/64").
std::set<std::pair<std::string, std::string>> AccessRuleTargets(const json& state) {
  std::set<std::pair<std::string, std::string>> out;
  if (!state.contains("access_rules")) return out;
  for (const auto& r : state.at("access_rules")) {
    out.emplace(r["configuration"]["target"].get<std::string>(),
                r["configuration"]["value"].get<std::string>());
  }
  return out;
}

TEST(CloudflareE2eTest, DecisionsReachTheEdgeAndLeaveWhenTheyExpire) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start({"--operation_delay_ms=50"});
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  // A token that will leak into a log line.
  absl::StatusOr<json> seeded = SeedToken(cf);
  ASSERT_TRUE(seeded.ok()) << seeded.status();
  const json leaked = *seeded;

  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + WriteConfig(cf, cf.token_file()), "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto ingest = palisade::v1::Ingest::NewStub(channel);

  std::vector<std::string> auth;
  for (const char* ip : {"203.0.113.7", "203.0.113.8", "2001:db8::66"}) {
    for (int i = 0; i < 3; ++i) {
      auth.push_back(absl::StrCat("Mar  3 14:02:01 web-1 sshd[1]: Failed password for root from ",
                                  ip, " port 22 ssh2"));
    }
  }
  auth.push_back("Mar  3 14:02:01 ci deploy[9]: curl -H 'Authorization: Bearer " +
                 leaked["value"].get<std::string>() + "' https://api.example.com");
  ShipOrDie(*ingest, palisade::v1::LOG_FORMAT_SYSLOG, auth);
  std::vector<std::string> access;
  for (const char* ip : {"198.51.100.4", "2001:db8:aa:bb::1"}) {
    access.push_back(absl::StrCat(
        ip, " - - [03/Mar/2026:14:02:01 +0000] \"GET /.env HTTP/1.1\" 404 1 \"-\" \"x\""));
    access.push_back(absl::StrCat(
        ip, " - - [03/Mar/2026:14:02:02 +0000] \"GET /wp-login.php HTTP/1.1\" 404 1 \"-\" \"x\""));
  }
  for (int i = 1; i <= 5; ++i) {
    access.push_back(absl::StrCat(
        "192.0.2.", i,
        " - - [03/Mar/2026:14:02:03 +0000] \"POST /login HTTP/1.1\" 401 1 \"-\" \"x\""));
  }
  ShipOrDie(*ingest, palisade::v1::LOG_FORMAT_COMBINED, access);

  // Everything reaches the edge. The decisions last 10 s, so on a busy machine the first may be
  // gone before the last is applied: what each look saw is kept.
  json state;
  std::set<std::string> banned;
  std::set<std::string> listed;
  json ratelimit_rule;
  json custom_rule;
  bool token_disabled = false;
  const bool applied = WaitFor(
      [&] {
        state = State(cf);
        for (const auto& r : state["access_rules"]) {
          banned.insert(r["configuration"]["value"].get<std::string>());
          EXPECT_THAT(r["notes"].get<std::string>(), HasSubstr("palisade:"));
        }
        for (const auto& i : state["lists"]["palisade_block"]) {
          listed.insert(i["ip"].get<std::string>());
        }
        const json& rl = state["rulesets"]["http_ratelimit"];
        if (rl.is_object() && rl["rules"].size() == 1) ratelimit_rule = rl["rules"][0];
        const json& custom = state["rulesets"]["http_request_firewall_custom"];
        if (custom.is_object() && !custom["rules"].empty()) custom_rule = custom["rules"][0];
        token_disabled = token_disabled || TokenStatus(state, leaked["id"]) == "disabled";
        return banned.size() >= 3 && listed.size() >= 2 && !ratelimit_rule.is_null() &&
               !custom_rule.is_null() && token_disabled;
      },
      absl::Seconds(60));
  ASSERT_TRUE(applied) << state.dump(2);
  EXPECT_EQ(banned, (std::set<std::string>{"203.0.113.7", "203.0.113.8", "2001:db8::66"}));
  EXPECT_EQ(listed, (std::set<std::string>{"198.51.100.4", "2001:db8:aa:bb::/64"}));
  EXPECT_EQ(custom_rule["expression"], "ip.src in $palisade_block");
  EXPECT_EQ(ratelimit_rule["expression"], "(http.request.uri.path eq \"/login\")");

  // The token's decision carries only its fingerprint.
  auto decisions = palisade::v1::Decisions::NewStub(channel);
  grpc::ClientContext ctx;
  palisade::v1::ListDecisionsRequest req;
  req.set_rule_id("cloudflare-token-leaked");
  palisade::v1::ListDecisionsResponse list;
  ASSERT_TRUE(decisions->List(&ctx, req, &list).ok());
  ASSERT_EQ(list.decisions_size(), 1);
  EXPECT_THAT(list.decisions(0).target().value(), HasSubstr("sha256:"));
  EXPECT_EQ(list.decisions(0).DebugString().find(leaked["value"].get<std::string>()),
            std::string::npos);

  // The edge answers before the dispatcher counts: wait for the counter too.
  absl::StatusOr<std::string> metrics;
  EXPECT_TRUE(WaitFor(
      [&] {
        metrics = HttpGet((*daemon)->metrics_port(), "/metrics");
        return metrics.ok() &&
               MetricValue(*metrics, "palisade_actions_total", {"result=\"applied\""}) >= 7;
      },
      absl::Seconds(60)));
  ASSERT_TRUE(metrics.ok());
  EXPECT_GT(MetricValue(*metrics, "palisade_cloudflare_requests_total"), 0);
  EXPECT_EQ(metrics->find(leaked["value"].get<std::string>()), std::string::npos);

  // The decisions last 10 s: then everything they made is removed, but the token stays revoked.
  const bool removed = WaitFor(
      [&] {
        state = State(cf);
        return state["access_rules"].empty() && state["lists"]["palisade_block"].empty() &&
               state["rulesets"]["http_ratelimit"]["rules"].empty();
      },
      absl::Seconds(60));
  EXPECT_TRUE(removed) << state.dump(2);
  for (const auto& t : state["tokens"]) {
    if (t["id"] == leaked["id"]) {
      EXPECT_EQ(t["status"], "disabled");
    }
  }
  // The custom rule that blocks the list stays: it is cheap, and the list may refill.
  EXPECT_EQ(state["rulesets"]["http_request_firewall_custom"]["rules"].size(), 1u);
}

// A token a syslog sender writes as soon as palisaded listens, while its edge is still starting
// (each API call 1.5 s late), is verified and revoked once the edge is up: the token vetter
// exists before any input listens. (It was built after the edge, and a receiver's token
// candidates before it were dropped: the token was never revoked.)
TEST(CloudflareE2eTest, ATokenSentWhileTheEdgeStartsIsRevoked) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  absl::StatusOr<json> seeded = SeedToken(cf);
  ASSERT_TRUE(seeded.ok()) << seeded.status();
  const json leaked = *seeded;
  ASSERT_TRUE(HttpPost(cf.port(), "/__emulator/faults", R"({"latency_ms":1500})").ok());
  const int port = ::palisade::testing::FreeLoopbackPort();
  ASSERT_GT(port, 0);
  const std::string config = WriteConfig(
      cf, cf.token_file(), "",
      absl::StrCat("inputs { syslog { name: \"net\" tcp_listen: \"127.0.0.1:", port, "\" } }\n",
                   "time_zone: \"UTC\"\n"));
  absl::StatusOr<std::unique_ptr<Daemon>> daemon;
  std::thread starting(
      [&] { daemon = Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"}); });
  // The receiver listens before the edge has made its first call: the line goes in then.
  const std::string line =
      absl::StrCat("<13>", absl::FormatTime("%b %e %H:%M:%S", absl::Now(), absl::UTCTimeZone()),
                   " ci deploy[9]: curl -H 'Authorization: Bearer ",
                   leaked["value"].get<std::string>(), "' https://api.example.com\n");
  bool sent = false;
  for (const absl::Time deadline = absl::Now() + absl::Seconds(60); !sent && absl::Now() < deadline;
       absl::SleepFor(absl::Milliseconds(10))) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<uint16_t>(port));
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) == 0) {
      sent = send(fd, line.data(), line.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(line.size());
    }
    close(fd);
  }
  starting.join();
  ASSERT_TRUE(sent);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  ASSERT_TRUE(HttpPost(cf.port(), "/__emulator/faults", R"({"latency_ms":0})").ok());
  // Verified once the edge is up (an unanswered verify is tried again 30 s later).
  json state;
  const bool revoked = WaitFor(
      [&] {
        state = State(cf);
        return TokenStatus(state, leaked["id"]) == "disabled";
      },
      absl::Seconds(120));
  EXPECT_TRUE(revoked) << state["tokens"].dump(2);
}

// A token used from outside its expected addresses, as the account's audit log tells it, is
// revoked by id; palisaded's own token, used from the same place, is not. palisaded reads the
// audit log itself (services/server/audit_poller.h): a use made before it started (its first
// poll reads back an hour) and one made while it runs (a later poll).
TEST(CloudflareE2eTest, AuditLogRecordsRevokeAMisusedToken) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  absl::StatusOr<json> seeded = SeedToken(cf);
  ASSERT_TRUE(seeded.ok()) << seeded.status();
  const json misused = *seeded;
  absl::StatusOr<json> seeded_later = SeedToken(cf);
  ASSERT_TRUE(seeded_later.ok()) << seeded_later.status();
  const json misused_later = *seeded_later;
  // The token is used from 127.0.0.1, which is outside the expected 192.0.2.0/24.
  auto misuse = [&cf](const json& token, const std::string& list) {
    return HttpPost(cf.port(), absl::StrCat("/client/v4/accounts/", kAccount, "/rules/lists"),
                    absl::StrCat(R"({"name":")", list, R"(","kind":"ip"})"),
                    {"Authorization: Bearer " + token["value"].get<std::string>()})
        .ok();
  };
  ASSERT_TRUE(misuse(misused, "exfil"));

  const std::string audit_pack = absl::StrCat(
      "rule_files: \"", std::getenv("TEST_SRCDIR"),
      "/palisade/rules/cloudflare-audit.textproto\"\n"
      "cidr_sets { key: \"cloudflare_token_ips\" value { cidrs: \"192.0.2.0/24\" } }\n");
  absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(
      {"--config=" + WriteConfig(cf, cf.token_file(), "audit_logs_interval { nanos: 200000000 }\n",
                                 audit_pack),
       "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();

  json state;
  const bool revoked = WaitFor(
      [&] {
        state = State(cf);
        return TokenStatus(state, misused["id"]) == "disabled";
      },
      absl::Seconds(60));
  EXPECT_TRUE(revoked) << state.dump(2);
  EXPECT_EQ(TokenStatus(state, misused_later["id"]), "active");
  ASSERT_TRUE(misuse(misused_later, "exfil_later"));
  const bool revoked_later = WaitFor(
      [&] {
        state = State(cf);
        return TokenStatus(state, misused_later["id"]) == "disabled";
      },
      absl::Seconds(60));
  EXPECT_TRUE(revoked_later) << state.dump(2);
  for (const auto& t : state["tokens"]) {
    if (t["id"] != misused["id"] && t["id"] != misused_later["id"]) {
      EXPECT_EQ(t["status"], "active") << t.dump();
    }
  }
  EXPECT_GE(::palisade::testing::ScrapeMetric(**daemon, "palisade_audit_log_polls_total",
                                              {"result=\"ok\""}),
            2);
}

// A flood that would ban 10,000 addresses at once is held at the configured rate; a Cloudflare
// address or an allowlisted one is never sent, whatever the rules or an operator say.
TEST(CloudflareE2eTest, GuardHoldsTheFloodAndNeverBansCloudflare) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + WriteConfig(cf, cf.token_file(), "",
                                               "guard { max_new_bans_per_minute: 50 }\n"
                                               "allowlist: \"198.51.100.0/24\"\n"),
                     "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto ingest = palisade::v1::Ingest::NewStub(channel);
  auto admin = palisade::v1::Admin::NewStub(channel);
  auto decisions = palisade::v1::Decisions::NewStub(channel);

  std::vector<std::string> flood;
  for (int i = 0; i < 10000; ++i) {
    flood.push_back(absl::StrCat("Mar  3 14:02:01 web-1 sshd[1]: Did not receive identification ",
                                 "string from 11.", i / 62500, ".", (i / 250) % 250, ".",
                                 i % 250 + 1));
  }
  flood.push_back(
      "Mar  3 14:02:01 web-1 sshd[1]: Did not receive identification string from 104.16.0.1");
  ShipOrDie(*ingest, palisade::v1::LOG_FORMAT_SYSLOG, flood);
  // An operator's manual ban of a Cloudflare range is refused at the edge too.
  grpc::ClientContext add_ctx;
  palisade::v1::AddDecisionRequest add;
  add.mutable_target()->set_kind(palisade::v1::TARGET_KIND_RANGE);
  add.mutable_target()->set_value("2606:4700::/32");
  *add.mutable_duration() = ToProtoDuration(absl::Hours(1));
  palisade::v1::Decision added;
  ASSERT_TRUE(decisions->Add(&add_ctx, add, &added).ok());

  palisade::v1::StatusResponse status;
  ASSERT_TRUE(WaitFor(
      [&] {
        grpc::ClientContext ctx;
        if (!admin->Status(&ctx, {}, &status).ok()) return false;
        return status.actions_pending() == 0 && status.actions_held() > 0;
      },
      absl::Seconds(60)))
      << status.DebugString();
  EXPECT_EQ(status.decisions_active(), 10002u);
  EXPECT_EQ(status.actions_held(), 9950u);
  json state = State(cf);
  EXPECT_EQ(state["access_rules"].size(), 50u);
  for (const auto& r : state["access_rules"]) {
    const std::string v = r["configuration"]["value"];
    EXPECT_NE(v, "104.16.0.1");
    EXPECT_NE(v.rfind("2606:4700", 0), 0u);
  }
  absl::StatusOr<std::string> metrics = HttpGet((*daemon)->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(MetricValue(*metrics, "palisade_guard_refused_total", {"reason=\"never_ban\""}), 2);
  EXPECT_EQ(MetricValue(*metrics, "palisade_guard_held"), 9950);

  grpc::ClientContext release_ctx;
  palisade::v1::ReleaseHeldRequest release;
  release.set_max(10);
  palisade::v1::ReleaseHeldResponse released;
  ASSERT_TRUE(admin->ReleaseHeld(&release_ctx, release, &released).ok());
  EXPECT_EQ(released.released(), 10u);
  EXPECT_TRUE(WaitFor([&] { return State(cf)["access_rules"].size() == 60u; }, absl::Seconds(60)));
  // A max past INT_MAX is "all of them", as 0 is; it was read as a negative count (none).
  grpc::ClientContext all_ctx;
  palisade::v1::ReleaseHeldRequest all;
  all.set_max(4'000'000'000u);
  ASSERT_TRUE(admin->ReleaseHeld(&all_ctx, all, &released).ok());
  EXPECT_EQ(released.released(), 9940u);
}

// Objects deleted at the edge behind Palisade's back come back; objects carrying Palisade's
// marker that no decision wants are removed; a human's object is left alone.
TEST(CloudflareE2eTest, ReconcilerRepairsDriftBothWays) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start({"--operation_delay_ms=20"});
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + ::palisade::testing::WriteEdgeConfig(
                                       cf, cf.token_file(), {"tests/e2e/testdata/drift.textproto"},
                                       "", "  reconcile_interval { nanos: 300000000 }\n"),
                     "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto ingest = palisade::v1::Ingest::NewStub(
      grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials()));
  ShipOrDie(
      *ingest, palisade::v1::LOG_FORMAT_SYSLOG,
      {"Mar  3 14:02:01 web-1 sshd[1]: Did not receive identification string from 203.0.113.77"});
  ShipOrDie(
      *ingest, palisade::v1::LOG_FORMAT_COMBINED,
      {"198.51.100.4 - - [03/Mar/2026:14:02:01 +0000] \"GET /.env HTTP/1.1\" 404 1 \"-\" \"x\"",
       "192.0.2.9 - - [03/Mar/2026:14:02:01 +0000] \"POST /login HTTP/1.1\" 401 1 \"-\" \"x\""});
  json state;
  auto applied = [&] {
    state = State(cf);
    return state["access_rules"].size() == 1 && state["lists"].contains("palisade_block") &&
           state["lists"]["palisade_block"].size() == 1 &&
           state["rulesets"]["http_ratelimit"].is_object() &&
           state["rulesets"]["http_ratelimit"]["rules"].size() == 1;
  };
  ASSERT_TRUE(WaitFor(applied, absl::Seconds(60))) << state.dump(2);
  const std::string rule_id = state["access_rules"][0]["id"];

  // Behind Palisade's back, with the account's token.
  std::ifstream token_in(cf.token_file());
  std::string token;
  std::getline(token_in, token);
  const std::vector<std::string> auth = {"Authorization: Bearer " + token};
  auto call = [&](const std::string& method, const std::string& path, const std::string& body) {
    // curl through the emulator's HTTP API, as an operator's script would, again while it is
    // refused: a list operation (ours, or the reconciler's) may still be running (429).
    std::string cmd =
        absl::StrCat("curl -sf -X ", method, " -H '", auth[0], "' -d '", body,
                     "' http://127.0.0.1:", cf.port(), "/client/v4", path, " > /dev/null");
    ASSERT_TRUE(WaitFor([&] { return std::system(cmd.c_str()) == 0; }, absl::Seconds(60))) << cmd;
  };
  const std::string zone_rules = absl::StrCat("/zones/", kZone, "/firewall/access_rules/rules");
  call("DELETE", zone_rules + "/" + rule_id, "");
  const std::string rs = state["rulesets"]["http_ratelimit"]["id"];
  call("DELETE",
       absl::StrCat("/zones/", kZone, "/rulesets/", rs, "/rules/",
                    state["rulesets"]["http_ratelimit"]["rules"][0]["id"].get<std::string>()),
       "");
  absl::StatusOr<std::string> lists =
      HttpGet(cf.port(), absl::StrCat("/client/v4/accounts/", kAccount, "/rules/lists"), auth);
  ASSERT_TRUE(lists.ok());
  const std::string list_items =
      absl::StrCat("/accounts/", kAccount, "/rules/lists/",
                   json::parse(*lists)["result"][0]["id"].get<std::string>(), "/items");
  absl::StatusOr<std::string> items = HttpGet(cf.port(), "/client/v4" + list_items, auth);
  ASSERT_TRUE(items.ok());
  call("DELETE", list_items,
       absl::StrCat(R"({"items":[{"id":")",
                    json::parse(*items)["result"][0]["id"].get<std::string>(), R"("}]})"));
  call("POST", list_items, R"([{"ip":"198.18.5.5","comment":"palisade:00000000deadbeef"}])");
  // An orphan with Palisade's marker, and a human's rule without it.
  call(
      "POST", zone_rules,
      R"({"mode":"block","configuration":{"target":"ip","value":"192.0.2.200"},"notes":"palisade:00000000deadbeef manual"})");
  call(
      "POST", zone_rules,
      R"({"mode":"block","configuration":{"target":"ip","value":"192.0.2.201"},"notes":"blocked by hand"})");

  auto repaired = [&] {
    state = State(cf);
    std::set<std::string> values;
    for (const auto& r : state["access_rules"]) values.insert(r["configuration"]["value"]);
    std::set<std::string> listed;
    for (const auto& i : state["lists"]["palisade_block"]) listed.insert(i["ip"]);
    return values == std::set<std::string>{"203.0.113.77", "192.0.2.201"} &&
           listed == std::set<std::string>{"198.51.100.4"} &&
           state["rulesets"]["http_ratelimit"]["rules"].size() == 1;
  };
  EXPECT_TRUE(WaitFor(repaired, absl::Seconds(60))) << state.dump(2);
  absl::StatusOr<std::string> metrics = HttpGet((*daemon)->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(MetricValue(*metrics, "palisade_reconcile_drift_total", {"kind=\"missing\""}), 3);
  EXPECT_EQ(MetricValue(*metrics, "palisade_reconcile_drift_total", {"kind=\"orphan\""}), 2);
}

TEST(CloudflareE2eTest, RefusesToStartWithAnInvalidToken) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  const std::string bad = std::string(std::getenv("TEST_TMPDIR")) + "/bad.token";
  std::ofstream(bad) << "cfut_thisTokenDoesNotExist0123456789abcdefghij\n";
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + WriteConfig(**emulator, bad)});
  EXPECT_EQ(daemon.status().code(), absl::StatusCode::kFailedPrecondition);
}

// A token whose IP filter leaves this host out (Cloudflare 9109) can do nothing from here: the
// daemon says so and refuses to start, rather than starting to retry calls that cannot succeed.
TEST(CloudflareE2eTest, RefusesToStartWithATokenThatMayNotBeUsedFromHere) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  absl::StatusOr<std::string> seeded =
      HttpPost((*emulator)->port(), "/__emulator/tokens",
               R"({"name":"elsewhere","permissions":["firewall_services","lists"],)"
               R"("ip_in":["192.0.2.0/24"]})");
  ASSERT_TRUE(seeded.ok()) << seeded.status();
  const std::string token_file = std::string(std::getenv("TEST_TMPDIR")) + "/elsewhere.token";
  std::ofstream(token_file) << json::parse(*seeded)["result"]["value"].get<std::string>() << "\n";
  chmod(token_file.c_str(), 0600);  // palisaded refuses a token file open to others
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + WriteConfig(**emulator, token_file)});
  EXPECT_EQ(daemon.status().code(), absl::StatusCode::kFailedPrecondition) << daemon.status();
}

TEST(CloudflareE2eTest, DryRunSendsNothing) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(
      {"--config=" + WriteConfig(**emulator, (*emulator)->token_file(), "  dry_run: true\n")});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto ingest = palisade::v1::Ingest::NewStub(
      grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials()));
  std::vector<std::string> auth(
      3, "Mar  3 14:02:01 web-1 sshd[1]: Failed password for root from 203.0.113.7 port 22 ssh2");
  ShipOrDie(*ingest, palisade::v1::LOG_FORMAT_SYSLOG, auth);
  double dry = 0;
  WaitFor(
      [&] {
        absl::StatusOr<std::string> m = HttpGet((*daemon)->metrics_port(), "/metrics");
        dry = m.ok() ? MetricValue(*m, "palisade_actions_total", {"result=\"dry_run\""}) : 0;
        return dry >= 1;
      },
      absl::Seconds(60));
  EXPECT_EQ(dry, 1);
  EXPECT_TRUE(State(**emulator)["access_rules"].empty());
}

// An attacker holding an IPv6 /64 takes a new address for each probe. Each address got an
// access rule of its own (the guard's bans a minute, the zone's rules and the decision budget
// filling, the next address free anyway); the fourth address decided makes one rule for the
// /64, which then takes every other address's detections. Another /64 is decided alone.
TEST(CloudflareE2eTest, AnIpv6AttackerRotatingAddressesGetsOneRangeRule) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + WriteConfig(cf, cf.token_file())});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto ingest = palisade::v1::Ingest::NewStub(channel);
  std::vector<std::string> probes;
  for (int i = 1; i <= 12; ++i) {
    probes.push_back(absl::StrCat(
        "Mar  3 14:02:01 web-1 sshd[1]: Did not receive identification string from "
        "2001:db8:77:1::",
        absl::Hex(i * 17)));
  }
  probes.push_back(
      "Mar  3 14:02:01 web-1 sshd[1]: Did not receive identification string from 2001:db8:77:2::1");
  ShipOrDie(*ingest, palisade::v1::LOG_FORMAT_SYSLOG, probes);

  std::set<std::pair<std::string, std::string>> rules;
  json state;
  ASSERT_TRUE(WaitFor(
      [&] {
        state = State(cf);
        rules = AccessRuleTargets(state);
        return rules.size() >= 5;
      },
      absl::Seconds(60)))
      << state.dump(2);
  EXPECT_EQ(rules, (std::set<std::pair<std::string, std::string>>{
                       {"ip6", "2001:db8:77:1::11"},
                       {"ip6", "2001:db8:77:1::22"},
                       {"ip6", "2001:db8:77:1::33"},
                       {"ip_range", "2001:db8:77:1::/64"},
                       {"ip6", "2001:db8:77:2::1"}}));

  // The range's decision says why, and the detections after it extended it.
  auto decisions = palisade::v1::Decisions::NewStub(channel);
  grpc::ClientContext ctx;
  palisade::v1::ListDecisionsRequest req;
  req.set_target("2001:db8:77:1::/64");
  palisade::v1::ListDecisionsResponse list;
  ASSERT_TRUE(decisions->List(&ctx, req, &list).ok());
  ASSERT_EQ(list.decisions_size(), 1);
  EXPECT_EQ(list.decisions(0).target().kind(), palisade::v1::TARGET_KIND_RANGE);
  EXPECT_EQ(list.decisions(0).rule_id(), "e2e-probe");
  EXPECT_THAT(list.decisions(0).reason(), HasSubstr("4 addresses of 2001:db8:77:1::/64"));
  EXPECT_EQ(list.decisions(0).extensions(), 8u);
  absl::StatusOr<std::string> metrics = HttpGet((*daemon)->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(MetricValue(*metrics, "palisade_decisions_ipv6_folded_total"), 1);
}

// The same attacker against a rule with a threshold: one try from each address of its /64
// (three, e2e-ssh's count). No address's window ever reaches 3; the range's does, and the
// range is banned at the edge, its addresses never one by one. (Before the range windows no
// rule counted it at all: the decisions' folding needs decisions first.)
TEST(CloudflareE2eTest, AnIpv6AttackerTryingOnceFromEachAddressIsBannedAsItsRange) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + WriteConfig(cf, cf.token_file())});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto ingest = palisade::v1::Ingest::NewStub(channel);
  std::vector<std::string> tries;
  for (const char* address : {"2001:db8:78:1::a", "2001:db8:78:1:5::b", "2001:db8:78:1::c"}) {
    tries.push_back(absl::StrCat("Mar  3 14:02:01 web-1 sshd[1]: Failed password for root from ",
                                 address, " port 22 ssh2"));
  }
  ShipOrDie(*ingest, palisade::v1::LOG_FORMAT_SYSLOG, tries);

  std::set<std::pair<std::string, std::string>> rules;
  json state;
  ASSERT_TRUE(WaitFor(
      [&] {
        state = State(cf);
        rules = AccessRuleTargets(state);
        return !rules.empty();
      },
      absl::Seconds(60)))
      << state.dump(2);
  EXPECT_EQ(rules, (std::set<std::pair<std::string, std::string>>{
                       {"ip_range", "2001:db8:78:1::/64"}}));
  auto decisions = palisade::v1::Decisions::NewStub(channel);
  grpc::ClientContext ctx;
  palisade::v1::ListDecisionsRequest req;
  palisade::v1::ListDecisionsResponse list;
  ASSERT_TRUE(decisions->List(&ctx, req, &list).ok());
  ASSERT_EQ(list.decisions_size(), 1);
  EXPECT_EQ(list.decisions(0).target().kind(), palisade::v1::TARGET_KIND_RANGE);
  EXPECT_EQ(list.decisions(0).target().value(), "2001:db8:78:1::/64");
  EXPECT_EQ(list.decisions(0).rule_id(), "e2e-ssh");
}

}  // namespace
}  // namespace palisade
