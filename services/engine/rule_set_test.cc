#include "services/engine/rule_set.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/status_matchers.h"

namespace palisade {
namespace {

using ::palisade::testing::IsOk;
using ::palisade::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr absl::string_view kGoodRule = R"pb(
  rules {
    id: "ssh-fail"
    formats: LOG_FORMAT_SYSLOG
    patterns: "Failed password for .* from (?P<ip>\\S+)"
    threshold {
      count: 3
      window { seconds: 60 }
    }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 600 }
    }
  }
)pb";

absl::StatusOr<std::shared_ptr<const RuleSet>> CompileText(absl::string_view text) {
  absl::StatusOr<LoadedPack> pack = ParseRulePack(text, "packs/test.textproto");
  if (!pack.ok()) return pack.status();
  return RuleSet::Compile({*pack});
}

TEST(RuleSetTest, CompilesAGoodPackAndDefaultsTheKey) {
  auto set = CompileText(kGoodRule);
  ASSERT_THAT(set, IsOk());
  ASSERT_EQ((*set)->rules().size(), 1u);
  const CompiledRule& rule = *(*set)->rules()[0];
  EXPECT_EQ(rule.proto.key(), "ip");
  EXPECT_EQ(rule.pack, "test");
  EXPECT_EQ(rule.count, 3u);
  EXPECT_EQ(rule.window, absl::Seconds(60));
  EXPECT_NE((*set)->ForFormat(palisade::v1::LOG_FORMAT_SYSLOG), nullptr);
  EXPECT_EQ((*set)->ForFormat(palisade::v1::LOG_FORMAT_COMBINED), nullptr);
}

TEST(RuleSetTest, SyntaxErrorsNameFileLineAndColumn) {
  EXPECT_THAT(CompileText("rules { id: \"x\" bogus_field: 1 }"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("packs/test.textproto:1:"), HasSubstr("bogus_field"))));
}

TEST(RuleSetTest, InvalidRegexNamesRuleAndPattern) {
  std::string text(kGoodRule);
  text.replace(text.find("(?P<ip>"), 7, "(?P<ip>[");
  EXPECT_THAT(CompileText(text),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("packs/test.textproto"), HasSubstr("rule \"ssh-fail\""),
                             HasSubstr("pattern 1 does not compile"))));
}

TEST(RuleSetTest, RefusesBackreferencesSinceRe2IsLinearTime) {
  std::string text(kGoodRule);
  text.replace(text.find("(?P<ip>\\\\S+)"), 12, "(?P<ip>\\\\S+) \\\\1");
  EXPECT_THAT(CompileText(text),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not compile")));
}

TEST(RuleSetTest, MissingKeyGroup) {
  std::string text(kGoodRule);
  text.replace(text.find("(?P<ip>"), 7, "(?P<addr>");
  EXPECT_THAT(CompileText(text),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no (?P<ip>...) group")));
}

TEST(RuleSetTest, DuplicateIdsAcrossPacksRefuseEverything) {
  auto a = ParseRulePack(kGoodRule, "a.textproto");
  auto b = ParseRulePack(kGoodRule, "b.textproto");
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_THAT(RuleSet::Compile({*a, *b}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("b.textproto"), HasSubstr("duplicate rule id"))));
}

TEST(RuleSetTest, EveryDecisionMustExpire) {
  std::string text(kGoodRule);
  text.replace(text.find("duration { seconds: 600 }"), 25, "");
  EXPECT_THAT(CompileText(text), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("decision.duration must be > 0")));
}

TEST(RuleSetTest, ThresholdNeedsAWindow) {
  std::string text(kGoodRule);
  text.replace(text.find("window { seconds: 60 }"), 22, "");
  EXPECT_THAT(CompileText(text), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("threshold.window must be > 0")));
}

TEST(RuleSetTest, BadIdAndMissingFormat) {
  EXPECT_THAT(CompileText(R"pb(rules { id: "Bad Id" })pb"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rule 1: id \"Bad Id\"")));
  EXPECT_THAT(CompileText(R"pb(rules { id: "x" patterns: "(?P<ip>.)" })pb"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no formats")));
}

TEST(RuleSetTest, ConditionsNeedADefinedSetAndTheGroupInEveryPattern) {
  std::string text(kGoodRule);
  text.insert(text.find("threshold"), "conditions { group: \"ip\" not_in_set: \"office\" } ");
  EXPECT_THAT(CompileText(text), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("CIDR set \"office\" is not defined")));
  auto pack = ParseRulePack(text, "t.textproto");
  ASSERT_THAT(pack, IsOk());
  CidrSets sets;
  sets.emplace("office", *CidrSet::Parse({"192.0.2.0/24"}));
  EXPECT_THAT(RuleSet::Compile({*pack}, sets), IsOk());
  std::string bad(kGoodRule);
  bad.insert(bad.find("threshold"), "conditions { group: \"nope\" in_set: \"office\" } ");
  EXPECT_THAT(RuleSet::Compile({*ParseRulePack(bad, "t.textproto")}, sets),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no (?P<nope>...) group")));
}

TEST(RuleSetTest, ActuatorMustFitTheKey) {
  std::string text(kGoodRule);
  text.replace(text.find("action: ACTION_BLOCK"), 20,
               "action: ACTION_BLOCK actuator: ACTUATOR_RATE_LIMIT");
  EXPECT_THAT(CompileText(text), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("cannot act on a TARGET_KIND_IP key")));
}

TEST(RuleSetTest, MissingFileIsNotFound) {
  EXPECT_THAT(LoadRulePackFile("/nonexistent/pack.textproto"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/pack.textproto")));
}

}  // namespace
}  // namespace palisade
