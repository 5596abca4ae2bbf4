// End to end through the real binary: palisaded on free loopback ports, logs shipped over the
// Ingest stream, decisions read back through the Decisions API, rules administered through
// Admin, and metrics scraped over HTTP from /metrics.
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "palisade/v1/palisade.grpc.pb.h"
#include "services/cli/shipper.h"
#include "services/common/proto_time.h"
#include "tests/corpus/corpus.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::palisade::testing::Daemon;
using ::palisade::testing::HttpGet;
using ::palisade::testing::MetricValue;
using ::testing::HasSubstr;

std::vector<palisade::v1::LogRecord> Records(const std::vector<std::string>& lines) {
  std::vector<palisade::v1::LogRecord> out(lines.size());
  for (size_t i = 0; i < lines.size(); ++i) out[i].set_line(lines[i]);
  return out;
}

// The rules a pack file holds (its top-level "rules {" blocks), so that the counts below follow
// the packs as they grow.
uint32_t RulesIn(const std::string& path) {
  std::ifstream in(path);
  uint32_t n = 0;
  for (std::string line; std::getline(in, line);) n += line == "rules {";
  return n;
}

// The rules the daemon's default config loads (services/server/config.cc DefaultConfig).
uint32_t DefaultRules() {
  return RulesIn("rules/sshd.textproto") + RulesIn("rules/nginx.textproto") +
         RulesIn("rules/cloudflare-tokens.textproto");
}

// A corpus whose last line happened just now, so its decisions are live.
Corpus RecentCorpus(bool nginx, uint64_t lines, uint64_t seed) {
  CorpusOptions options;
  options.lines = lines;
  options.seed = seed;
  options.step = absl::Milliseconds(20);
  options.start = absl::Now() - options.step * static_cast<int64_t>(lines);
  return nginx ? GenerateNginx(options) : GenerateSshd(options);
}

class PalisadedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start({"--rules_dir=rules"});
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
    channel_ = grpc::CreateChannel(daemon_->grpc_address(), grpc::InsecureChannelCredentials());
    ingest_ = palisade::v1::Ingest::NewStub(channel_);
    decisions_ = palisade::v1::Decisions::NewStub(channel_);
    admin_ = palisade::v1::Admin::NewStub(channel_);
  }

  std::set<std::string> ActiveTargets() {
    grpc::ClientContext ctx;
    palisade::v1::ListDecisionsRequest req;
    req.set_active_only(true);
    palisade::v1::ListDecisionsResponse resp;
    EXPECT_TRUE(decisions_->List(&ctx, req, &resp).ok());
    std::set<std::string> out;
    for (const auto& d : resp.decisions()) out.insert(d.target().value());
    return out;
  }

  std::unique_ptr<Daemon> daemon_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<palisade::v1::Ingest::Stub> ingest_;
  std::unique_ptr<palisade::v1::Decisions::Stub> decisions_;
  std::unique_ptr<palisade::v1::Admin::Stub> admin_;
};

TEST_F(PalisadedTest, ShippedAttackLogsBecomeDecisionsAndMetrics) {
  Corpus sshd = RecentCorpus(false, 6000, 11);
  Corpus nginx = RecentCorpus(true, 6000, 12);
  std::vector<std::string> sshd_lines = sshd.lines;
  sshd_lines.push_back("this is not syslog");

  ShipOptions options;
  options.source = "auth";
  options.format = palisade::v1::LOG_FORMAT_SYSLOG;
  options.batch_lines = 500;
  absl::StatusOr<ShipSummary> s1 = Ship(*ingest_, Records(sshd_lines), options);
  ASSERT_TRUE(s1.ok()) << s1.status();
  EXPECT_EQ(s1->batches, 13u);
  EXPECT_EQ(s1->accepted, 6000u);
  EXPECT_EQ(s1->malformed, 1u);
  EXPECT_GT(s1->matched, 1000u);
  EXPECT_GE(s1->detections, sshd.attackers.size());

  options.source = "nginx";
  options.format = palisade::v1::LOG_FORMAT_COMBINED;
  absl::StatusOr<ShipSummary> s2 = Ship(*ingest_, Records(nginx.lines), options);
  ASSERT_TRUE(s2.ok()) << s2.status();
  EXPECT_EQ(s2->accepted, 6000u);

  std::set<std::string> expected = sshd.attackers;
  expected.insert(nginx.attackers.begin(), nginx.attackers.end());
  EXPECT_EQ(ActiveTargets(), expected);

  // Get one decision by id and check what it carries.
  grpc::ClientContext ctx;
  palisade::v1::ListDecisionsRequest req;
  req.set_target(*sshd.attackers.begin());
  palisade::v1::ListDecisionsResponse list;
  ASSERT_TRUE(decisions_->List(&ctx, req, &list).ok());
  ASSERT_EQ(list.decisions_size(), 1);
  const palisade::v1::Decision& d = list.decisions(0);
  EXPECT_EQ(d.origin(), palisade::v1::ORIGIN_RULE);
  EXPECT_EQ(d.action(), palisade::v1::ACTION_BLOCK);
  EXPECT_GT(d.evidence_size(), 0);
  EXPECT_THAT(d.evidence(0), HasSubstr(*sshd.attackers.begin()));
  EXPECT_GT(FromProtoTime(d.expiry()), absl::Now());
  grpc::ClientContext get_ctx;
  palisade::v1::GetDecisionRequest get;
  get.set_id(d.id());
  palisade::v1::Decision got;
  ASSERT_TRUE(decisions_->Get(&get_ctx, get, &got).ok());
  EXPECT_EQ(got.target().value(), d.target().value());

  absl::StatusOr<std::string> metrics = HttpGet(daemon_->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(MetricValue(*metrics, "palisade_ingest_lines_received_total",
                        {"source=\"auth\"", "format=\"syslog\""}),
            6001);
  EXPECT_EQ(MetricValue(*metrics, "palisade_ingest_lines_malformed_total"), 1);
  EXPECT_EQ(MetricValue(*metrics, "palisade_ingest_lines_received_total",
                        {"source=\"nginx\"", "format=\"combined\""}),
            6000);
  EXPECT_EQ(MetricValue(*metrics, "palisade_decisions_active"), expected.size());
  EXPECT_EQ(MetricValue(*metrics, "palisade_decisions_total", {"change=\"created\""}),
            expected.size());
  EXPECT_GT(MetricValue(*metrics, "palisade_engine_rule_matches_total",
                        {"rule=\"sshd-failed-password\""}),
            0);
  EXPECT_GT(
      MetricValue(*metrics, "palisade_engine_detections_total", {"rule=\"nginx-scanner-probe\""}),
      0);
  EXPECT_EQ(MetricValue(*metrics, "palisade_ingest_batch_duration_seconds_count"), 25);
  EXPECT_EQ(MetricValue(*metrics, "palisade_rules_loaded"), DefaultRules());
  EXPECT_EQ(MetricValue(*metrics, "palisade_build_info"), 1);

  grpc::ClientContext status_ctx;
  palisade::v1::StatusResponse status;
  ASSERT_TRUE(admin_->Status(&status_ctx, {}, &status).ok());
  EXPECT_EQ(status.lines_received(), 12001u);
  EXPECT_EQ(status.lines_malformed(), 1u);
  EXPECT_EQ(status.decisions_active(), expected.size());
  EXPECT_EQ(status.rules_loaded(), DefaultRules());
}

TEST_F(PalisadedTest, ManualBanAndUnbanThroughTheApi) {
  grpc::ClientContext add_ctx;
  palisade::v1::AddDecisionRequest add;
  add.mutable_target()->set_value("2001:DB8::dead");
  *add.mutable_duration() = ToProtoDuration(absl::Minutes(5));
  add.set_reason("test");
  palisade::v1::Decision added;
  ASSERT_TRUE(decisions_->Add(&add_ctx, add, &added).ok());
  EXPECT_EQ(added.target().value(), "2001:db8::dead");
  EXPECT_EQ(ActiveTargets(), std::set<std::string>{"2001:db8::dead"});

  grpc::ClientContext del_ctx;
  palisade::v1::DeleteDecisionRequest del;
  del.set_id(added.id());
  palisade::v1::Decision deleted;
  ASSERT_TRUE(decisions_->Delete(&del_ctx, del, &deleted).ok());
  EXPECT_FALSE(deleted.active());
  EXPECT_TRUE(ActiveTargets().empty());

  grpc::ClientContext bad_ctx;
  add.mutable_target()->set_value("999.1.1.1");
  grpc::Status bad = decisions_->Add(&bad_ctx, add, &added);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad.error_message(), HasSubstr("not an IP address"));

  grpc::ClientContext missing_ctx;
  palisade::v1::GetDecisionRequest get;
  get.set_id("nope");
  palisade::v1::Decision got;
  EXPECT_EQ(decisions_->Get(&missing_ctx, get, &got).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(PalisadedTest, BatchWithoutFormatGetsInvalidArgument) {
  ShipOptions options;
  options.format = palisade::v1::LOG_FORMAT_UNSPECIFIED;
  absl::StatusOr<ShipSummary> s = Ship(*ingest_, Records({"x"}), options);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  // The daemon is still serving.
  grpc::ClientContext ctx;
  palisade::v1::StatusResponse status;
  EXPECT_TRUE(admin_->Status(&ctx, {}, &status).ok());
}

TEST_F(PalisadedTest, GarbageOnTheWireIsRefusedNotFatal) {
  grpc::GenericStub generic(channel_);
  for (const char* method : {"/palisade.v1.Decisions/Get", "/palisade.v1.Admin/TestRules"}) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    const std::string junk = "\xff\xff\xff\xff\x0f garbage that is no protobuf";
    grpc::Slice slice(junk);
    grpc::ByteBuffer request(&slice, 1), response;
    absl::Notification done;
    grpc::Status status;
    generic.UnaryCall(&ctx, method, grpc::StubOptions(), &request, &response, [&](grpc::Status s) {
      status = s;
      done.Notify();
    });
    done.WaitForNotification();
    // Every method takes its request as bytes and parses it once the caller is allowed (here
    // anyone: no api.clients): bytes that are no request are INVALID_ARGUMENT naming the method
    // (api_security_test's TokenIsCheckedBeforeTheRequestIsParsed). Decodable garbage gets
    // INVALID_ARGUMENT from the handlers (below, and BatchWithoutFormatGetsInvalidArgument).
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << method << ": " << status.error_message();
  }
  grpc::ClientContext bad_ctx;
  palisade::v1::TestRulesRequest bad;
  bad.add_lines("x");
  palisade::v1::TestRulesResponse bad_resp;
  EXPECT_EQ(admin_->TestRules(&bad_ctx, bad, &bad_resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // Still serving.
  grpc::ClientContext ctx;
  palisade::v1::StatusResponse status;
  EXPECT_TRUE(admin_->Status(&ctx, {}, &status).ok());
}

TEST_F(PalisadedTest, TestRulesLikeFail2banRegex) {
  grpc::ClientContext ctx;
  palisade::v1::TestRulesRequest req;
  req.set_format(palisade::v1::LOG_FORMAT_SYSLOG);
  req.add_lines(
      "Mar  3 14:02:01 h sshd[1]: Failed password for root from 203.0.113.7 port 22 ssh2");
  req.add_lines("Mar  3 14:02:01 h sshd[1]: Accepted password for root from 203.0.113.7 port 22");
  palisade::v1::TestRulesResponse resp;
  ASSERT_TRUE(admin_->TestRules(&ctx, req, &resp).ok());
  // The failed password matches sshd-failed-password (and the slow brute-force rule, which
  // counts the same lines over 12 h); the accepted one matches nothing that counts.
  ASSERT_GE(resp.matches_size(), 1);
  bool failed_password = false;
  for (const auto& m : resp.matches()) {
    EXPECT_EQ(m.line_number(), 1u) << m.rule_id();
    EXPECT_EQ(m.key(), "203.0.113.7") << m.rule_id();
    failed_password |= m.rule_id() == "sshd-failed-password";
  }
  EXPECT_TRUE(failed_password);

  grpc::ClientContext bad_ctx;
  req.mutable_pack()->add_rules()->set_id("Bad Id");
  grpc::Status bad = admin_->TestRules(&bad_ctx, req, &resp);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad.error_message(), HasSubstr("Bad Id"));
}

// Lines times matching rules can be far more than the request: 100,000 lines that each of 20
// rules matches are 2 M matches, ~70 MB of answer from a 4 MB request. The server lists what
// fits its cap, says so, and still counts every line (it built the whole answer before, and gRPC
// refused to send it).
TEST_F(PalisadedTest, TestRulesAnswerIsCappedAndSaysSo) {
  palisade::v1::TestRulesRequest req;
  req.set_format(palisade::v1::LOG_FORMAT_SYSLOG);
  for (int i = 0; i < 20; ++i) {
    palisade::v1::Rule* rule = req.mutable_pack()->add_rules();
    rule->set_id(absl::StrCat("every-", i));
    rule->add_formats(palisade::v1::LOG_FORMAT_SYSLOG);
    rule->add_patterns("^x (?P<ip>[0-9.]+)$");
    rule->mutable_threshold()->set_count(1);
    rule->mutable_threshold()->mutable_window()->set_seconds(60);
    rule->mutable_decision()->set_action(palisade::v1::ACTION_BLOCK);
    rule->mutable_decision()->mutable_duration()->set_seconds(60);
  }
  for (int i = 0; i < 100'000; ++i) req.add_lines("Mar  3 14:02:01 h app[1]: x 203.0.113.7");
  grpc::ClientContext ctx;
  palisade::v1::TestRulesResponse resp;
  grpc::Status s = admin_->TestRules(&ctx, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
  EXPECT_TRUE(resp.truncated());
  EXPECT_EQ(resp.lines(), 100'000u);
  EXPECT_EQ(resp.matched_lines(), 100'000u);
  ASSERT_EQ(resp.rules_size(), 20);
  for (const auto& r : resp.rules()) EXPECT_EQ(r.matches(), 100'000u) << r.rule_id();
  EXPECT_GT(resp.matches_size(), 10'000);
  EXPECT_LT(resp.matches_size(), 2'000'000);
  EXPECT_LE(resp.ByteSizeLong(), size_t{4} << 20);
}

// A config whose pack is broken after start: the reload is refused whole, says why, and the
// running rules keep detecting.
TEST(PalisadedReloadTest, FailedReloadKeepsTheRunningRules) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  const std::string pack = dir + "/sshd.textproto";
  {
    std::ifstream in("rules/sshd.textproto");
    std::ofstream out(pack);
    out << in.rdbuf();
  }
  {
    std::ofstream out(dir + "/palisade.textproto");
    out << "rule_files: \"sshd.textproto\"\n";
  }
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + dir + "/palisade.textproto", "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto admin = palisade::v1::Admin::NewStub(channel);

  {
    std::ofstream out(pack, std::ios::app);
    out << "rules { id: \"broken\" patterns: \"(?P<ip>[\" }\n";
  }
  grpc::ClientContext ctx;
  palisade::v1::ReloadRulesResponse resp;
  grpc::Status s = admin->ReloadRules(&ctx, {}, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("the running rules stay"));
  EXPECT_THAT(s.error_message(), HasSubstr("sshd.textproto"));
  EXPECT_THAT(s.error_message(), HasSubstr("rule \"broken\""));

  grpc::ClientContext status_ctx;
  palisade::v1::StatusResponse status;
  ASSERT_TRUE(admin->Status(&status_ctx, {}, &status).ok());
  EXPECT_EQ(status.rules_loaded(), RulesIn(pack));  // the running pack ("broken" is one line)

  absl::StatusOr<std::string> metrics = HttpGet((*daemon)->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(MetricValue(*metrics, "palisade_rules_reloads_total", {"result=\"failure\""}), 1);
  EXPECT_EQ((*daemon)->Stop(), 0);
}

// SIGHUP and Admin.ReloadRules read the config file again: an allowlist entry or a pack added
// there applies (they reread only the pack files once, and answered success), and a change
// only a restart can apply refuses the whole reload, naming the field.
TEST(PalisadedReloadTest, AReloadReadsTheConfigFileAgain) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  for (const char* pack : {"sshd", "nginx"}) {
    std::ifstream in(absl::StrCat("rules/", pack, ".textproto"));
    std::ofstream out(absl::StrCat(dir, "/", pack, ".textproto"));
    out << in.rdbuf();
  }
  const std::string config = dir + "/reread.textproto";
  auto write_config = [&config](const std::string& text) {
    std::ofstream out(config, std::ios::trunc);
    out << text;
  };
  write_config("rule_files: \"sshd.textproto\"\n");
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto admin = palisade::v1::Admin::NewStub(channel);
  auto ingest = palisade::v1::Ingest::NewStub(channel);
  auto failures = [&ingest](const std::string& address) {
    std::vector<palisade::v1::LogRecord> records(5);  // the threshold
    for (auto& r : records) {
      r.set_line(absl::StrCat("Mar  3 14:02:01 web-1 sshd[1]: Failed password for root from ",
                              address, " port 22 ssh2"));
      *r.mutable_event_time() = ToProtoTime(absl::Now());
    }
    ShipOptions options;
    options.format = palisade::v1::LOG_FORMAT_SYSLOG;
    absl::StatusOr<ShipSummary> s = Ship(*ingest, records, options);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? s->detections : 0u;
  };
  auto reload = [&admin](palisade::v1::ReloadRulesResponse* resp) {
    grpc::ClientContext ctx;
    return admin->ReloadRules(&ctx, {}, resp);
  };

  write_config(
      "rule_files: \"sshd.textproto\"\nrule_files: \"nginx.textproto\"\n"
      "allowlist: \"203.0.113.0/24\"\n");
  palisade::v1::ReloadRulesResponse applied;
  grpc::Status s = reload(&applied);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(applied.packs(), ::testing::Contains("nginx"));
  EXPECT_EQ(failures("203.0.113.7"), 0u);   // allowlisted by the reload
  EXPECT_EQ(failures("198.51.100.9"), 1u);  // the rules still detect

  // sweep_interval needs a restart: nothing of this config applies, the nginx pack stays.
  write_config("rule_files: \"sshd.textproto\"\nsweep_interval { seconds: 5 }\n");
  palisade::v1::ReloadRulesResponse refused;
  s = reload(&refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("sweep_interval"));
  EXPECT_THAT(s.error_message(), HasSubstr("the running rules stay"));
  grpc::ClientContext status_ctx;
  palisade::v1::StatusResponse status;
  ASSERT_TRUE(admin->Status(&status_ctx, {}, &status).ok());
  EXPECT_THAT(status.packs(), ::testing::Contains("nginx"));
  EXPECT_EQ((*daemon)->Stop(), 0);
}

// A restart does not forget an attacker one failure short of the threshold: the windows are
// snapshotted at shutdown and restored at start.
TEST(PalisadedRestartTest, WindowsSurviveARestart) {
  const std::string state = std::string(std::getenv("TEST_TMPDIR")) + "/windows.db";
  auto ship = [](Daemon& d, int n) {
    auto ingest = palisade::v1::Ingest::NewStub(
        grpc::CreateChannel(d.grpc_address(), grpc::InsecureChannelCredentials()));
    std::vector<palisade::v1::LogRecord> records(n);
    for (auto& r : records) {
      r.set_line(
          "Mar  3 14:02:01 web-1 sshd[1]: Failed password for root from 203.0.113.99 "
          "port 22 ssh2");
      *r.mutable_event_time() = ToProtoTime(absl::Now());
    }
    ShipOptions options;
    options.format = palisade::v1::LOG_FORMAT_SYSLOG;
    return Ship(*ingest, records, options);
  };
  {
    absl::StatusOr<std::unique_ptr<Daemon>> daemon =
        Daemon::Start({"--rules_dir=rules", "--shutdown_grace=200ms"}, state);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    absl::StatusOr<ShipSummary> s = ship(**daemon, 4);  // the threshold is 5
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(s->detections, 0u);
    EXPECT_EQ((*daemon)->Stop(), 0);
  }
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--rules_dir=rules", "--shutdown_grace=200ms"}, state);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  absl::StatusOr<ShipSummary> s = ship(**daemon, 1);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->detections, 1u);
}

// A second daemon on a state file in use (an operator trying a config by hand while the
// service runs) refuses to start before it reads or sends anything: it would resume the same
// outbox and reconcile the edge against a state the first one has moved on from.
TEST(PalisadedStartTest, ASecondDaemonOnTheSameStateFileRefusesToStart) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  const std::string state = dir + "/shared.db";
  const std::string log = dir + "/second.log";
  absl::StatusOr<std::unique_ptr<Daemon>> first = Daemon::Start({"--rules_dir=rules"}, state);
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<std::unique_ptr<Daemon>> second =
      Daemon::Start({"--rules_dir=rules"}, state, log);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
  std::ifstream in(log);
  const std::string said((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(said, HasSubstr(state + " is in use by another palisaded"));
  // The first one goes on; once it stopped, the file is free again.
  auto admin = palisade::v1::Admin::NewStub(
      grpc::CreateChannel((*first)->grpc_address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  palisade::v1::StatusResponse status;
  EXPECT_TRUE(admin->Status(&ctx, {}, &status).ok());
  EXPECT_EQ((*first)->Stop(), 0);
  absl::StatusOr<std::unique_ptr<Daemon>> third = Daemon::Start({"--rules_dir=rules"}, state);
  EXPECT_TRUE(third.ok()) << third.status();
}

TEST(PalisadedStartTest, RefusesToStartOnABadConfig) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  {
    std::ofstream out(dir + "/bad.textproto");
    out << "rule_files: \"missing.textproto\"\n";
  }
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + dir + "/bad.textproto"});
  EXPECT_EQ(daemon.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace palisade
