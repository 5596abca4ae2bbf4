// How the shipped packs' patterns are matched (issue 18 §3): per log format, with every pack
// loaded, how many patterns sit in an anchored RE2::Set (its DFA stops at the first byte no
// pattern takes), in an unanchored Set (a pass over the whole line: what a literal prefilter
// would save), behind the literal gate (a vectorised scan; their regex runs only where a
// required literal occurs), or run on a JSON field. Prints a table; measures nothing.
//   bazel run -c opt //tests/bench:rule_coverage
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "palisade/v1/rules.pb.h"
#include "rules/shipped_packs.h"
#include "services/engine/rule_set.h"

int main() {
  using palisade::RuleSet;
  std::vector<palisade::LoadedPack> packs;
  for (const std::string& f : palisade::FilesIn("rules", ".textproto")) {
    absl::StatusOr<palisade::LoadedPack> pack = palisade::LoadRulePackFile(f);
    if (!pack.ok()) {
      std::fprintf(stderr, "%s\n", std::string(pack.status().message()).c_str());
      return 1;
    }
    packs.push_back(*std::move(pack));
  }
  absl::StatusOr<std::shared_ptr<const RuleSet>> set =
      RuleSet::Compile(packs, palisade::ShippedPackCidrSets());
  if (!set.ok()) {
    std::fprintf(stderr, "%s\n", std::string(set.status().message()).c_str());
    return 1;
  }
  const auto& rules = (*set)->rules();
  std::printf("%zu packs, %zu rules\n", packs.size(), rules.size());
  std::printf("%-34s %9s %11s %7s %6s\n", "format", "anchored", "unanchored", "gated", "field");
  std::set<int> gated_rules, set_rules, unanchored_rules;
  for (int f = 0; f <= palisade::v1::LogFormat_MAX; ++f) {
    if (!palisade::v1::LogFormat_IsValid(f)) continue;
    const RuleSet::FormatIndex* index = (*set)->ForFormat(static_cast<palisade::v1::LogFormat>(f));
    if (index == nullptr) continue;
    int anchored = 0, unanchored = 0, gated = 0, field = 0;
    for (const RuleSet::SetPart& part : index->parts) {
      for (const auto& [rule, pattern] : part.entries) {
        if (part.gate != nullptr) {
          ++gated;
          gated_rules.insert(rule);
          continue;
        }
        const std::string& text = rules[rule]->proto.patterns(pattern);
        if (!text.empty() && text[0] == '^') {
          ++anchored;
        } else {
          ++unanchored;
          unanchored_rules.insert(rule);
        }
        set_rules.insert(rule);
      }
    }
    for (int r : index->field_rules) field += rules[r]->proto.patterns_size();
    std::printf("%-34s %9d %11d %7d %6d\n",
                palisade::v1::LogFormat_Name(static_cast<palisade::v1::LogFormat>(f)).c_str(),
                anchored, unanchored, gated, field);
  }
  std::printf(
      "rules with a gated pattern: %zu; with a pattern in a Set: %zu; with an "
      "unanchored pattern in a Set (a whole-line pass per line): %zu\n",
      gated_rules.size(), set_rules.size(), unanchored_rules.size());
  return 0;
}
