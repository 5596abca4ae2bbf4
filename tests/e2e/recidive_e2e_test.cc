// Recidive end to end (issue 13 §3): the real palisaded, with the shipped sshd pack (its bans cut
// to seconds) and the shipped recidive pack, against the real emulator. One address is blocked
// by an sshd rule, the block expires and leaves the edge, it is blocked again by another rule,
// expires again, and a third block within the day makes recidive's week: the access rule stays
// at the edge after a short block shipped with it has come and gone, and the decision lasts a
// week. An address blocked twice keeps its short blocks.
//
// No sleeps: every wait is a WaitFor on the emulator's or the daemon's state, with wide margins.
#include <fstream>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/text_format.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "palisade/v1/palisade.grpc.pb.h"
#include "palisade/v1/rules.pb.h"
#include "services/common/proto_time.h"
#include "services/engine/engine.h"
#include "services/engine/rule_set.h"
#include "services/formats/line_parser.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;
using ::palisade::testing::EmulatorAccessRuleValues;
using ::palisade::testing::ScrapeMetric;
using ::palisade::testing::ShipLines;
using ::palisade::testing::WaitFor;

// Long enough that a loaded machine applies a block before it ends, short enough to wait for.
constexpr int kShortBanSeconds = 5;
constexpr absl::Duration kWait = absl::Seconds(60);

// An sshd rule's attack: the lines of one of its syslog examples, with the example's address
// replaced, as many as its threshold asks.
struct Attack {
  std::string rule_id;
  std::string example_line;
  std::string example_key;
  uint32_t count = 1;
  std::vector<std::string> LinesFrom(const std::string& ip) const {
    const std::string line = absl::StrReplaceAll(example_line, {{example_key, ip}});
    return std::vector<std::string>(count, line);
  }
};

// The shipped sshd pack with every ban cut to kShortBanSeconds (no escalation), written to
// TEST_TMPDIR; `attacks` gets the rules an address can be blocked by with one example's lines.
std::string ShortSshdPack(std::vector<Attack>* attacks) {
  const std::string src =
      absl::StrCat(std::getenv("TEST_SRCDIR"), "/palisade/rules/sshd.textproto");
  std::ifstream in(src);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  palisade::v1::RulePack pack;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &pack)) << src;
  for (palisade::v1::Rule& rule : *pack.mutable_rules()) {
    if (!rule.has_decision()) continue;  // a session's note-only rule decides nothing
    rule.mutable_decision()->mutable_duration()->set_seconds(kShortBanSeconds);
    rule.mutable_decision()->clear_escalation();
    const bool address = rule.key_kind() == palisade::v1::TARGET_KIND_UNSPECIFIED ||
                         rule.key_kind() == palisade::v1::TARGET_KIND_IP;
    if (!address || rule.has_session() || rule.formats_size() == 0 ||
        rule.formats(0) != palisade::v1::LOG_FORMAT_SYSLOG ||
        rule.decision().action() != palisade::v1::ACTION_BLOCK || rule.decision().dry_run()) {
      continue;
    }
    for (const palisade::v1::Example& ex : rule.examples()) {
      const bool syslog = ex.format() == palisade::v1::LOG_FORMAT_UNSPECIFIED ||
                          ex.format() == palisade::v1::LOG_FORMAT_SYSLOG;
      // An IPv4 key that appears once in the line (no injection example).
      if (!syslog || !ex.smuggled_key().empty() || ex.key().find('.') == std::string::npos ||
          ex.line().find(ex.key()) != ex.line().rfind(ex.key())) {
        continue;
      }
      attacks->push_back({rule.id(), ex.line(), ex.key(), std::max(1u, rule.threshold().count())});
      break;
    }
  }
  std::string out;
  EXPECT_TRUE(google::protobuf::TextFormat::PrintToString(pack, &out));
  const std::string path = absl::StrCat(std::getenv("TEST_TMPDIR"), "/sshd-short.textproto");
  std::ofstream(path) << out;
  // Only the attacks whose line no other rule of the pack counts: each round is then exactly
  // one block and one detection (a line two rules count would make a block and renew it).
  absl::StatusOr<LoadedPack> loaded = LoadRulePackFile(path);
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  if (!loaded.ok()) return path;
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules = RuleSet::Compile({*loaded});
  EXPECT_TRUE(rules.ok()) << rules.status();
  if (!rules.ok()) return path;
  Engine engine(*rules, EngineOptions());
  LineParser parser(palisade::v1::LOG_FORMAT_SYSLOG);
  std::vector<Attack> single;
  for (const Attack& a : *attacks) {
    ParsedLine parsed;
    if (!parser.Parse(a.example_line, absl::Now(), &parsed).ok()) continue;
    std::set<std::string> matched;
    engine.MatchOnly(
        palisade::v1::LOG_FORMAT_SYSLOG, parsed,
        [&](const CompiledRule& rule, absl::string_view) { matched.insert(rule.id()); });
    if (matched == std::set<std::string>{a.rule_id}) single.push_back(a);
  }
  *attacks = std::move(single);
  return path;
}

// The active decisions on `ip` (empty when the daemon does not answer).
std::vector<palisade::v1::Decision> ActiveOn(palisade::v1::Decisions::Stub& stub,
                                             const std::string& ip) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  palisade::v1::ListDecisionsRequest req;
  req.set_target(ip);
  req.set_active_only(true);
  palisade::v1::ListDecisionsResponse resp;
  if (!stub.List(&ctx, req, &resp).ok()) return {};
  return {resp.decisions().begin(), resp.decisions().end()};
}

TEST(RecidiveE2eTest, ThirdBlockOfTheDayStaysAtTheEdgeForAWeek) {
  std::vector<Attack> attacks;
  const std::string sshd = ShortSshdPack(&attacks);
  ASSERT_GE(attacks.size(), 2u) << "the sshd pack has too few address rules with examples";
  // Three blocks by two or three different rules: the third is the first rule again when the
  // pack has only two.
  const std::vector<Attack> rounds = {attacks[0], attacks[1], attacks[2 % attacks.size()]};
  for (const Attack& a : rounds) std::cerr << "round: " << a.rule_id << " x" << a.count << "\n";

  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  const std::string config =
      ::palisade::testing::WriteEdgeConfig(cf, cf.token_file(), {"rules/recidive.textproto"},
                                           absl::StrCat("rule_files: \"", sshd, "\"\n"));
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto ingest = palisade::v1::Ingest::NewStub(channel);
  auto decisions = palisade::v1::Decisions::NewStub(channel);

  const std::string repeat = "203.0.113.77";  // blocked three times
  const std::string twice = "203.0.113.78";   // blocked twice
  const std::string once = "203.0.113.79";    // blocked once, with the third round
  auto banned = [&](const std::string& ip) { return EmulatorAccessRuleValues(cf).count(ip) > 0; };
  // Whether each of `ips` reached the edge, at one look or another: on a busy machine one short
  // block may have left before the other was applied.
  auto each_reached_the_edge = [&](const std::vector<std::string>& ips) {
    std::set<std::string> seen;
    return WaitFor(
        [&] {
          const auto values = EmulatorAccessRuleValues(cf);
          for (const std::string& ip : ips) {
            if (values.count(ip) > 0) seen.insert(ip);
          }
          return seen.size() == ips.size();
        },
        kWait);
  };

  for (size_t round = 0; round < 2; ++round) {
    std::vector<std::string> lines = rounds[round].LinesFrom(repeat);
    for (const std::string& l : rounds[round].LinesFrom(twice)) lines.push_back(l);
    absl::StatusOr<ShipSummary> shipped =
        ShipLines(*ingest, palisade::v1::LOG_FORMAT_SYSLOG, lines, "auth");
    ASSERT_TRUE(shipped.ok()) << shipped.status();
    ASSERT_TRUE(each_reached_the_edge({repeat, twice}))
        << "round " << round << " (" << rounds[round].rule_id << ") never reached the edge";
    // The short block expires and leaves the edge.
    ASSERT_TRUE(WaitFor([&] { return !banned(repeat) && !banned(twice); }, kWait))
        << "round " << round << ": the " << kShortBanSeconds << " s block stayed";
  }

  // The third block of the day, with a first one for another address.
  std::vector<std::string> lines = rounds[2].LinesFrom(repeat);
  for (const std::string& l : rounds[2].LinesFrom(once)) lines.push_back(l);
  const absl::Time third = absl::Now();
  absl::StatusOr<ShipSummary> shipped =
      ShipLines(*ingest, palisade::v1::LOG_FORMAT_SYSLOG, lines, "auth");
  ASSERT_TRUE(shipped.ok()) << shipped.status();
  ASSERT_TRUE(each_reached_the_edge({repeat, once}));
  // The other address's short block comes and goes: the sweep has passed the short expiry...
  ASSERT_TRUE(WaitFor([&] { return !banned(once); }, kWait));
  // ... and the repeat offender's access rule is still at the edge, under a week's decision.
  EXPECT_TRUE(banned(repeat));
  EXPECT_FALSE(banned(twice));
  std::vector<palisade::v1::Decision> active = ActiveOn(*decisions, repeat);
  ASSERT_EQ(active.size(), 1u);
  const absl::Time expiry = FromProtoTime(active[0].expiry());
  EXPECT_GE(expiry, third + absl::Hours(24 * 7) - absl::Minutes(1));
  EXPECT_LE(expiry, absl::Now() + absl::Hours(24 * 7) + absl::Minutes(1));
  EXPECT_TRUE(ActiveOn(*decisions, twice).empty());
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_engine_detections_total", {"rule=\"recidive\""}), 1);
  // Every block was counted by recidive: three for one address, two for the other, one for the
  // last; its own decision was not.
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_engine_rule_matches_total", {"rule=\"recidive\""}), 6);
}

}  // namespace
}  // namespace palisade
