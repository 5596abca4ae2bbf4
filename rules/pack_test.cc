// Loads every shipped pack through the production loader, compiles them together (ids must be
// unique across packs), and checks each rule's examples: the line parses in the rule's first
// format, the rule matches, and it extracts exactly the annotated key; counter-examples must not
// match that rule. A rule with a field a client writes (a variable-length piece beyond digits and
// spaces: a user name, a path, a header) must carry an injection example: a line where that
// field holds a smuggled key, from which the rule still extracts the server's.
#include <dirent.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "services/common/fingerprint.h"
#include "services/engine/engine.h"
#include "services/engine/rule_set.h"
#include "services/formats/line_parser.h"

namespace palisade {
namespace {

std::vector<std::string> PackFiles() {
  std::vector<std::string> files;
  DIR* dir = opendir("rules");
  if (dir == nullptr) return files;
  while (dirent* e = readdir(dir)) {
    std::string name = e->d_name;
    if (absl::EndsWith(name, ".textproto")) files.push_back("rules/" + name);
  }
  closedir(dir);
  std::sort(files.begin(), files.end());
  return files;
}

// Returns the keys `rule_id` extracts from `line`.
std::vector<std::string> KeysFor(Engine& engine, palisade::v1::LogFormat format,
                                 const std::string& line, const std::string& rule_id,
                                 std::string* parse_error) {
  LineParser parser(format);
  ParsedLine parsed;
  absl::Status s = parser.Parse(line, absl::FromUnixSeconds(1'772'000'000), &parsed);
  if (!s.ok()) {
    *parse_error = s.ToString();
    return {};
  }
  std::vector<std::string> keys;
  engine.MatchOnly(format, parsed, [&](const CompiledRule& rule, absl::string_view key) {
    if (rule.id() == rule_id) keys.emplace_back(key);
  });
  return keys;
}

TEST(PackTest, EveryPackLoadsAndEveryExampleHolds) {
  std::vector<std::string> files = PackFiles();
  ASSERT_GE(files.size(), 4u) << "packs missing under rules/";
  std::vector<LoadedPack> packs;
  for (const std::string& f : files) {
    absl::StatusOr<LoadedPack> pack = LoadRulePackFile(f);
    ASSERT_TRUE(pack.ok()) << pack.status();
    packs.push_back(*std::move(pack));
  }
  // The CIDR sets packs may name in conditions, as a deployment would define them.
  CidrSets sets;
  sets.emplace("cloudflare_token_ips", *CidrSet::Parse({"192.0.2.0/24", "2001:db8:c0::/48"}));
  absl::StatusOr<std::shared_ptr<const RuleSet>> set = RuleSet::Compile(packs, sets);
  ASSERT_TRUE(set.ok()) << set.status();
  Engine engine(*set, EngineOptions());

  int examples = 0;
  for (const auto& rule : (*set)->rules()) {
    const auto format = static_cast<palisade::v1::LogFormat>(rule->proto.formats(0));
    EXPECT_GT(rule->proto.examples_size(), 0) << rule->id() << " has no examples";
    bool free_text = false;
    for (const std::string& pattern : rule->proto.patterns()) {
      absl::StatusOr<KeyPlacement> placement = AnalyzeKeyPlacement(pattern, rule->proto.key());
      ASSERT_TRUE(placement.ok()) << rule->id() << ": " << placement.status();
      free_text |= placement->has_free_text_field;
    }
    int injections = 0;
    for (const auto& ex : rule->proto.examples()) {
      if (!ex.smuggled_key().empty()) {
        ++injections;
        EXPECT_NE(ex.smuggled_key(), ex.key()) << rule->id() << " on: " << ex.line();
        EXPECT_TRUE(absl::StrContains(ex.line(), ex.smuggled_key()))
            << rule->id() << ": the injection line does not hold its smuggled key: " << ex.line();
      }
      std::string err;
      const auto ex_format =
          ex.format() != palisade::v1::LOG_FORMAT_UNSPECIFIED ? ex.format() : format;
      std::vector<std::string> keys = KeysFor(engine, ex_format, ex.line(), rule->id(), &err);
      EXPECT_TRUE(err.empty()) << rule->id() << ": example does not parse: " << err;
      EXPECT_EQ(keys, std::vector<std::string>{ex.key()}) << rule->id() << " on: " << ex.line();
      if (rule->proto.key_kind() == palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT) {
        // Evidence redaction knows token shapes by hand (services/common/fingerprint.h): every
        // token a token rule detects must also be one it redacts from other rules' evidence.
        bool redacted = false;
        for (absl::string_view token : FindTokenShapes(ex.line())) {
          redacted |= Fingerprint(token) == ex.key();
        }
        EXPECT_TRUE(redacted) << rule->id() << ": FindTokenShapes misses the token of: "
                              << ex.line();
      }
      ++examples;
    }
    if (free_text) {
      EXPECT_GT(injections, 0) << rule->id()
                               << " has a field a client writes but no injection example "
                                  "(an example with smuggled_key)";
    }
    for (const auto& line : rule->proto.counter_examples()) {
      std::string err;
      std::vector<std::string> keys = KeysFor(engine, format, line, rule->id(), &err);
      EXPECT_TRUE(keys.empty()) << rule->id() << " must not match: " << line << " (got "
                                << absl::StrJoin(keys, ",") << ")";
    }
  }
  EXPECT_GE(examples, 10);
}

}  // namespace
}  // namespace palisade
