// Issue 12 §2 and §3 through the real palisaded and the emulator binary:
//  - token-shaped random strings in an access log cost no decision, no revocation call and no
//    slot of the ban budget: the real attacker's ban that follows them reaches the edge, and a
//    real leaked token among them is still revoked;
//  - a token pasted as an ssh user name is redacted from the evidence at capture, so it never
//    appears in Decisions.List, Events.Watch or the ECS sink file.
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "palisade/v1/palisade.grpc.pb.h"
#include "services/cli/shipper.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::nlohmann::json;
using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;
using ::palisade::testing::HttpPost;
using ::palisade::testing::ScrapeMetric;
using ::palisade::testing::ShipLines;
using ::palisade::testing::WaitFor;
using ::palisade::testing::WaitForSubscribers;

const std::vector<std::string> kPacks = {"rules/cloudflare-tokens.textproto",
                                         "rules/sshd.textproto"};

// 40 alphanumerics, different for each n, that Cloudflare has never issued.
std::string RandomToken(int n) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::string out;
  uint64_t x = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(n + 1);
  for (int i = 0; i < 40; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out.push_back(kAlphabet[x % 62]);
  }
  return out;
}

std::string AccessLine(const std::string& ip, const std::string& token) {
  return absl::StrCat(ip, " - - [03/Mar/2026:14:02:01 +0000] \"GET /hook?cf_token=", token,
                      " HTTP/1.1\" 200 2 \"-\" \"curl/8\"");
}

std::vector<palisade::v1::Decision> ListAll(palisade::v1::Decisions::Stub& stub) {
  std::vector<palisade::v1::Decision> out;
  palisade::v1::ListDecisionsRequest req;
  for (;;) {
    grpc::ClientContext ctx;
    palisade::v1::ListDecisionsResponse resp;
    if (!stub.List(&ctx, req, &resp).ok()) return out;
    for (const auto& d : resp.decisions()) out.push_back(d);
    if (resp.next_page_token().empty()) return out;
    req.set_page_token(resp.next_page_token());
  }
}

// Before: 70 such lines made 70 revocation decisions and used the guard's 60 bans a minute; the
// attacker's ban that followed was held and never reached the edge.
TEST(TokenGuardE2eTest, RandomTokensCostNothingAndTheAttackerIsStillBanned) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  // A live token of the older, unprefixed form (the ?cf_token= shape takes 40 characters).
  const std::string leaked_value = RandomToken(1000);
  absl::StatusOr<std::string> seeded = HttpPost(
      cf.port(), "/__emulator/tokens",
      json{{"name", "ci-deploy"}, {"permissions", json::array({"lists"})}, {"value", leaked_value}}
          .dump());
  ASSERT_TRUE(seeded.ok()) << seeded.status();
  const json leaked = json::parse(*seeded)["result"];
  ASSERT_EQ(leaked["value"], leaked_value);

  const std::string config = ::palisade::testing::WriteEdgeConfig(
      cf, cf.token_file(), kPacks, "guard { max_new_bans_per_minute: 60 }\n");
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto ingest = palisade::v1::Ingest::NewStub(channel);
  auto decisions = palisade::v1::Decisions::NewStub(channel);

  // Seventy random tokens, the real leaked one among them.
  std::vector<std::string> access;
  for (int i = 0; i < 70; ++i) access.push_back(AccessLine("198.51.100.4", RandomToken(i)));
  access.insert(access.begin() + 35, AccessLine("198.51.100.5", leaked_value));
  absl::StatusOr<ShipSummary> shipped =
      ShipLines(*ingest, palisade::v1::LOG_FORMAT_COMBINED, access, "access.log");
  ASSERT_TRUE(shipped.ok()) << shipped.status();
  // Then the attacker.
  std::vector<std::string> auth(5,
                                "Mar  3 14:02:01 web-1 sshd[1]: Failed password for root from "
                                "203.0.113.50 port 51234 ssh2");
  shipped = ShipLines(*ingest, palisade::v1::LOG_FORMAT_SYSLOG, auth, "auth.log");
  ASSERT_TRUE(shipped.ok()) << shipped.status();

  json state;
  bool banned = false, revoked = false;
  WaitFor(
      [&] {
        state = ::palisade::testing::EmulatorState(cf);
        banned = false;
        for (const auto& r : state["access_rules"]) {
          banned |= r["configuration"]["value"] == "203.0.113.50";
        }
        revoked = false;
        for (const auto& t : state["tokens"]) {
          revoked |= t["id"] == leaked["id"] && t["status"] == "disabled";
        }
        return banned && revoked;
      },
      absl::Seconds(60));
  EXPECT_TRUE(banned) << state.dump(1);
  EXPECT_TRUE(revoked) << state.dump(1);
  // Every candidate was looked at: seventy refused, one live.
  EXPECT_TRUE(WaitFor(
      [&] {
        return ScrapeMetric(**daemon, "palisade_token_candidates_total",
                            {"result=\"not_a_token\""}) == 70;
      },
      absl::Seconds(60)))
      << ScrapeMetric(**daemon, "palisade_token_candidates_total", {"result=\"not_a_token\""});
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_token_candidates_total", {"result=\"live\""}), 1);

  // One revocation decision (the real token's), none for the random strings; nothing held.
  int token_decisions = 0;
  for (const auto& d : ListAll(*decisions)) {
    if (d.target().kind() == palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT) ++token_decisions;
    for (const std::string& e : d.evidence()) {
      EXPECT_EQ(e.find(leaked_value), std::string::npos) << e;
    }
  }
  EXPECT_EQ(token_decisions, 1);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_actions_total",
                         {"actuator=\"token_revocation\"", "op=\"apply\"", "result=\"applied\""}),
            1);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_guard_held", {}), 0);
  // The emulator's own token and every other stayed active: only the leaked one was touched.
  int disabled = 0;
  for (const auto& t : state["tokens"]) disabled += t["status"] == "disabled";
  EXPECT_EQ(disabled, 1) << state["tokens"].dump(1);
}

// Reads a Watch stream on its own thread.
class Watcher {
 public:
  explicit Watcher(palisade::v1::Events::Stub& stub) {
    reader_ = stub.Watch(&ctx_, palisade::v1::WatchRequest());
    thread_ = std::thread([this] {
      palisade::v1::Event e;
      while (reader_->Read(&e)) {
        absl::MutexLock lock(&mu_);
        events_.push_back(e);
      }
      reader_->Finish();
    });
  }
  ~Watcher() {
    ctx_.TryCancel();
    thread_.join();
  }
  std::vector<palisade::v1::Event> events() {
    absl::MutexLock lock(&mu_);
    return events_;
  }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<palisade::v1::Event>> reader_;
  std::thread thread_;
  absl::Mutex mu_;
  std::vector<palisade::v1::Event> events_;
};

TEST(TokenGuardE2eTest, ATokenInAnSshUserNameNeverLeavesTheEngine) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  const std::string ecs_path = std::string(std::getenv("TEST_TMPDIR")) + "/token-events.ndjson";
  std::remove(ecs_path.c_str());
  const std::string config = ::palisade::testing::WriteEdgeConfig(
      **emulator, (*emulator)->token_file(), kPacks,
      "sinks { name: \"siem\" ecs_file { path: \"" + ecs_path + "\" } }\n");
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto events_stub = palisade::v1::Events::NewStub(channel);
  Watcher watcher(*events_stub);
  ASSERT_TRUE(WaitForSubscribers(**daemon, 2));  // the watcher and the ECS sink
  auto ingest = palisade::v1::Ingest::NewStub(channel);
  auto decisions = palisade::v1::Decisions::NewStub(channel);

  // Pasted into the user prompt: both shapes, two on one line.
  const std::string user_token = "cfut_" + RandomToken(1);
  const std::string old_token = RandomToken(2);
  std::vector<std::string> auth(
      5, absl::StrCat("Mar  3 14:02:01 web-1 sshd[1]: Failed password for invalid user ",
                      user_token, "?cf_token=", old_token, " from 203.0.113.60 port 51234 ssh2"));
  absl::StatusOr<ShipSummary> shipped =
      ShipLines(*ingest, palisade::v1::LOG_FORMAT_SYSLOG, auth, "auth.log");
  ASSERT_TRUE(shipped.ok()) << shipped.status();

  // The sshd decision, its detection event in the stream and in the ECS file.
  std::vector<palisade::v1::Decision> listed;
  std::string decision_id;
  ASSERT_TRUE(WaitFor(
      [&] {
        listed = ListAll(*decisions);
        for (const auto& d : listed) {
          if (d.target().value() == "203.0.113.60") decision_id = d.id();
        }
        return !decision_id.empty();
      },
      absl::Seconds(60)));
  std::vector<palisade::v1::Event> seen;
  ASSERT_TRUE(WaitFor(
      [&] {
        seen = watcher.events();
        for (const auto& e : seen) {
          if (e.kind() == palisade::v1::EVENT_KIND_DETECTION && e.correlation_id() == decision_id) {
            return true;
          }
        }
        return false;
      },
      absl::Seconds(60)));
  std::string ecs;
  ASSERT_TRUE(WaitFor(
      [&] {
        std::ifstream in(ecs_path);
        std::stringstream ss;
        ss << in.rdbuf();
        ecs = ss.str();
        return ecs.find(decision_id) != std::string::npos &&
               ecs.find("[token sha256:") != std::string::npos;
      },
      absl::Seconds(60)))
      << ecs;
  // Both random tokens were refused by verify: no revocation decision.
  EXPECT_TRUE(WaitFor(
      [&] {
        return ScrapeMetric(**daemon, "palisade_token_candidates_total",
                            {"result=\"not_a_token\""}) +
                   ScrapeMetric(**daemon, "palisade_token_candidates_total",
                                {"result=\"cached_not_a_token\""}) +
                   ScrapeMetric(**daemon, "palisade_token_candidates_total",
                                {"result=\"duplicate\""}) ==
               10;
      },
      absl::Seconds(60)));

  bool redacted_evidence = false;
  for (const auto& d : ListAll(*decisions)) {
    EXPECT_NE(d.target().kind(), palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT) << d.DebugString();
    const std::string text = d.DebugString();
    EXPECT_EQ(text.find(user_token), std::string::npos) << text;
    EXPECT_EQ(text.find(old_token), std::string::npos) << text;
    redacted_evidence |= text.find("[token sha256:") != std::string::npos;
  }
  EXPECT_TRUE(redacted_evidence) << "the evidence is kept, with the tokens replaced";
  for (const auto& e : watcher.events()) {
    const std::string text = e.DebugString();
    EXPECT_EQ(text.find(user_token), std::string::npos) << text;
    EXPECT_EQ(text.find(old_token), std::string::npos) << text;
  }
  EXPECT_EQ(ecs.find(user_token), std::string::npos) << ecs;
  EXPECT_EQ(ecs.find(old_token), std::string::npos) << ecs;
}

}  // namespace
}  // namespace palisade
