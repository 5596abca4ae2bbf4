// Scores each pack on an annotated test log of its own (rules/testlogs/PACK.log): realistic
// lines as the daemon writes them, look-alikes that must not match, injection attempts. Every
// log line is preceded by "# expect:" and what the pack's rules must extract from it, as
// space-separated RULE=KEY pairs, "-" for nothing, or "malformed" for a line the format's parser
// must refuse (it is counted and skipped); "# format: NAME" (syslog, raw, combined,
// ...) sets the format of the lines after it. The whole log goes through one engine in order,
// so sessions carry from line to line as they would in the daemon. Other comment lines are
// free text. The pack must match every annotation exactly: nothing missed, nothing extra.

#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "rules/shipped_packs.h"
#include "services/engine/engine.h"
#include "services/engine/rule_set.h"
#include "services/formats/line_parser.h"

namespace palisade {
namespace {

TEST(TestLogTest, EveryPackLogMatchesItsAnnotations) {
  std::vector<std::string> packs;  // the pack names that have a log
  for (const std::string& log : FilesIn("rules/testlogs", ".log")) {
    packs.push_back(log.substr(15, log.size() - 15 - 4));  // "rules/testlogs/" NAME ".log"
  }
  ASSERT_GE(packs.size(), 3u) << "annotated logs missing under rules/testlogs/";
  const CidrSets sets = ShippedPackCidrSets();
  for (const std::string& pack_name : packs) {
    SCOPED_TRACE(pack_name);
    absl::StatusOr<LoadedPack> pack = LoadRulePackFile("rules/" + pack_name + ".textproto");
    ASSERT_TRUE(pack.ok()) << "a log without its pack: " << pack.status();
    absl::StatusOr<std::shared_ptr<const RuleSet>> set = RuleSet::Compile({*pack}, sets);
    ASSERT_TRUE(set.ok()) << set.status();
    Engine engine(*set, EngineOptions());
    std::ifstream in("rules/testlogs/" + pack_name + ".log");
    ASSERT_TRUE(in.good());
    palisade::v1::LogFormat format = palisade::v1::LOG_FORMAT_SYSLOG;
    std::optional<std::set<std::string>> expected;
    std::string line;
    int number = 0, scored = 0, flagged = 0;
    absl::Time reference = absl::FromUnixSeconds(1'772'000'000);  // 2026-02-25
    YearRule year_rule = YearRule::kAtMostADayAhead;
    while (std::getline(in, line)) {
      ++number;
      if (absl::StartsWith(line, "# format:")) {
        absl::StatusOr<palisade::v1::LogFormat> f =
            ParseOfflineFormatName(absl::StripAsciiWhitespace(absl::string_view(line).substr(9)));
        ASSERT_TRUE(f.ok()) << "line " << number << ": " << f.status();
        format = *f;
        continue;
      }
      if (absl::StartsWith(line, "# expect:")) {
        ASSERT_FALSE(expected.has_value()) << "line " << number << ": two annotations in a row";
        expected.emplace();
        const absl::string_view pairs = absl::StripAsciiWhitespace(absl::string_view(line).substr(9));
        for (absl::string_view pair : absl::StrSplit(pairs, ' ', absl::SkipEmpty())) {
          if (pair == "-") continue;
          if (pair == "malformed") {
            expected->insert("malformed");
            continue;
          }
          ASSERT_TRUE(absl::StrContains(pair, '=')) << "line " << number << ": RULE=KEY or -";
          expected->insert(std::string(pair));
        }
        continue;
      }
      if (line.empty() || line[0] == '#') continue;
      ASSERT_TRUE(expected.has_value()) << "line " << number << " has no # expect: before it";
      LineParser parser(format);
      ParsedLine parsed;
      absl::Status s = parser.Parse(line, reference, &parsed, year_rule);
      if (expected->count("malformed") > 0) {
        EXPECT_FALSE(s.ok()) << "line " << number << " parses, but is annotated malformed";
        expected.reset();
        continue;
      }
      ASSERT_TRUE(s.ok()) << "line " << number << " does not parse: " << s;
      if (parsed.time) {
        reference = *parsed.time;
        year_rule = YearRule::kNearest;
      }
      std::set<std::string> got;
      engine.MatchOnly(
          format, parsed,
          [&](const CompiledRule& rule, absl::string_view key) {
            got.insert(absl::StrCat(rule.id(), "=", key));
          },
          reference);
      EXPECT_EQ(got, *expected) << "line " << number << ": " << line << "\n  got: "
                                << absl::StrJoin(got, " ")
                                << "\n  expected: " << absl::StrJoin(*expected, " ");
      ++scored;
      flagged += !expected->empty();
      expected.reset();
    }
    EXPECT_FALSE(expected.has_value()) << "an annotation at the end with no line";
    EXPECT_GE(flagged, 3) << "a log should show the pack finding something";
    EXPECT_GT(scored - flagged, 0) << "a log should hold look-alikes that must not match";
  }
}

}  // namespace
}  // namespace palisade
