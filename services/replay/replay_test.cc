#include "services/replay/replay.h"

#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/corpus/corpus.h"

namespace palisade {
namespace {

std::set<std::string> Targets(const ReplaySummary& s) {
  std::set<std::string> out;
  for (const auto& d : s.decisions) out.insert(d.target().value());
  return out;
}

std::shared_ptr<const RuleSet> Pack(const std::string& file) {
  auto pack = LoadRulePackFile(file);
  EXPECT_TRUE(pack.ok()) << pack.status();
  return *RuleSet::Compile({*pack});
}

// A months-old log replays to exactly the ground truth: the clock follows the lines.
TEST(ReplayTest, OldLogYieldsTheGroundTruth) {
  CorpusOptions options;
  options.lines = 20000;
  Corpus corpus = GenerateSshd(options);  // March 2026, long before "now"
  absl::StatusOr<ReplaySummary> s =
      Replay(Pack("rules/sshd.textproto"), palisade::v1::LOG_FORMAT_SYSLOG, corpus.lines);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->lines, 20000u);
  EXPECT_EQ(s->malformed, 0u);
  EXPECT_EQ(Targets(*s), corpus.attackers);
  EXPECT_GT(s->matches_per_rule.at("sshd-failed-password"), 0u);
}

// The decisions do not depend on how the log is cut into batches.
TEST(ReplayTest, BatchSizeDoesNotChangeTheDecisions) {
  CorpusOptions options;
  options.lines = 20000;
  options.seed = 5;
  Corpus corpus = GenerateNginx(options);
  auto rules = Pack("rules/nginx.textproto");
  absl::StatusOr<ReplaySummary> big =
      Replay(rules, palisade::v1::LOG_FORMAT_COMBINED, corpus.lines, 5000);
  absl::StatusOr<ReplaySummary> small =
      Replay(rules, palisade::v1::LOG_FORMAT_COMBINED, corpus.lines, 7);
  ASSERT_TRUE(big.ok() && small.ok());
  EXPECT_EQ(Targets(*big), Targets(*small));
  EXPECT_EQ(Targets(*big), corpus.attackers);
  EXPECT_EQ(big->detections, small->detections);
}

}  // namespace
}  // namespace palisade
