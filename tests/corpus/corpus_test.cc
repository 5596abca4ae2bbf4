// The generator is deterministic, every line parses, and the shipped packs flag exactly the
// generated attackers (no benign address, no attacker missed).
#include "tests/corpus/corpus.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/engine/engine.h"
#include "services/formats/line_parser.h"

namespace palisade {
namespace {

std::set<std::string> Flagged(const Corpus& corpus, palisade::v1::LogFormat format,
                              const std::string& pack_file) {
  auto pack = LoadRulePackFile(pack_file);
  EXPECT_TRUE(pack.ok()) << pack.status();
  auto rules = RuleSet::Compile({*pack});
  EXPECT_TRUE(rules.ok()) << rules.status();
  Engine engine(*rules, EngineOptions());
  LineParser parser(format);
  ParsedLine parsed;
  std::vector<Detection> detections;
  const absl::Time reference = absl::FromUnixSeconds(1'772'600'000);
  for (const std::string& line : corpus.lines) {
    absl::Status s = parser.Parse(line, reference, &parsed);
    EXPECT_TRUE(s.ok()) << s << ": " << line;
    engine.Process(format, parsed, line, *parsed.time, &detections);
  }
  std::set<std::string> out;
  for (const Detection& d : detections) out.insert(d.key);
  return out;
}

std::string Diff(const std::set<std::string>& a, const std::set<std::string>& b) {
  std::string out;
  for (const auto& x : a) {
    if (!b.count(x)) out += " +" + x;
  }
  for (const auto& x : b) {
    if (!a.count(x)) out += " -" + x;
  }
  return out;
}

TEST(CorpusTest, SameSeedSameCorpus) {
  CorpusOptions options;
  options.lines = 2000;
  EXPECT_EQ(GenerateSshd(options).lines, GenerateSshd(options).lines);
  options.seed = 2;
  CorpusOptions other = options;
  other.seed = 3;
  EXPECT_NE(GenerateNginx(options).lines, GenerateNginx(other).lines);
}

TEST(CorpusTest, SshdPackFlagsExactlyTheAttackers) {
  CorpusOptions options;
  options.lines = 30000;
  Corpus corpus = GenerateSshd(options);
  EXPECT_GT(corpus.attackers.size(), 50u);
  std::set<std::string> flagged =
      Flagged(corpus, palisade::v1::LOG_FORMAT_SYSLOG, "rules/sshd.textproto");
  EXPECT_EQ(flagged, corpus.attackers) << Diff(flagged, corpus.attackers);
}

TEST(CorpusTest, NginxPackFlagsExactlyTheAttackers) {
  CorpusOptions options;
  options.lines = 30000;
  Corpus corpus = GenerateNginx(options);
  EXPECT_GT(corpus.attackers.size(), 20u);
  std::set<std::string> flagged =
      Flagged(corpus, palisade::v1::LOG_FORMAT_COMBINED, "rules/nginx.textproto");
  EXPECT_EQ(flagged, corpus.attackers) << Diff(flagged, corpus.attackers);
}

}  // namespace
}  // namespace palisade
