// Rule packs, loaded and compiled. A RuleSet is the immutable, compiled form of every loaded
// pack: per log format, RE2::Sets over the patterns of all rules for that format (anchored
// patterns in an anchored Set, the rest in an unanchored one: the passes each line gets), plus
// each rule's capturing regexes, run only for the Sets' candidates.
//
// Loading is all or nothing: an invalid regex, a missing key group, an unknown field or a
// duplicate id refuses the whole set, with an error naming the file, the rule id and the reason.
// The running rules are untouched by a failed load; the server swaps a new RuleSet in only after
// Compile succeeded.
//
// Thread-safety: a RuleSet is immutable once built; share it through shared_ptr<const RuleSet>.
#ifndef PALISADE_SERVICES_ENGINE_RULE_SET_H_
#define PALISADE_SERVICES_ENGINE_RULE_SET_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "palisade/v1/rules.pb.h"
#include "re2/re2.h"
#include "re2/set.h"
#include "services/common/ip.h"

namespace palisade {

// A pack and the file it came from (for error messages).
struct LoadedPack {
  std::string file;
  palisade::v1::RulePack pack;
};

// Parses a textproto RulePack strictly: unknown fields and syntax errors are refused with
// "file:line:column: reason". The pack name defaults to the file's base name.
absl::StatusOr<LoadedPack> ParseRulePack(absl::string_view text, absl::string_view file);
absl::StatusOr<LoadedPack> LoadRulePackFile(const std::string& path);

// CIDR sets by name (from the config), for rule conditions.
using CidrSets = std::map<std::string, CidrSet>;

struct CompiledCondition {
  std::vector<int> group;  // per pattern
  const CidrSet* set = nullptr;  // a CIDR set condition, or
  std::string feed;              // a feed condition ("*": any feed)
  bool inside = false;           // in_set / in_feed (true) or not_in_set / not_in_feed (false)
};

struct CompiledRule {
  palisade::v1::Rule proto;
  std::string pack;
  // One capturing regex per pattern, and the index of the key group in each.
  std::vector<std::unique_ptr<RE2>> patterns;
  std::vector<int> key_group;
  // Per pattern: how many submatches the captures and conditions need.
  std::vector<int> submatches;
  std::vector<CompiledCondition> conditions;
  std::vector<std::unique_ptr<RE2>> ignores;
  uint32_t count = 1;
  absl::Duration window;
  absl::Duration duration;

  const std::string& id() const { return proto.id(); }
  bool AppliesToProgram(absl::string_view program) const;
};

class RuleSet {
 public:
  // Compiles every rule of every pack. Fails whole on the first error.
  static absl::StatusOr<std::shared_ptr<const RuleSet>> Compile(
      const std::vector<LoadedPack>& packs, const CidrSets& sets = {});

  const std::vector<std::unique_ptr<CompiledRule>>& rules() const { return rules_; }
  const std::vector<std::string>& pack_names() const { return pack_names_; }

  // The Sets for a format and, for each Set index, the (rule, pattern) it stands for.
  // Returns nullptr when no rule applies to the format.
  // Up to two Sets per format: the patterns anchored at the start ("^...") in an anchored Set,
  // whose DFA gives up at the first byte no pattern can take, and the others unanchored.
  struct SetPart {
    std::unique_ptr<RE2::Set> set;
    std::vector<std::pair<int, int>> entries;  // set index -> (rule index, pattern index)
  };
  struct FormatIndex {
    std::vector<SetPart> parts;
  };
  const FormatIndex* ForFormat(palisade::v1::LogFormat format) const;

 private:
  RuleSet() = default;
  std::vector<std::unique_ptr<CompiledRule>> rules_;
  std::vector<std::string> pack_names_;
  std::vector<std::unique_ptr<FormatIndex>> by_format_;  // indexed by LogFormat value
  CidrSets sets_;                                        // owned here: conditions point into it
};

// RE2 options every Palisade regex is compiled with: bounded memory, no logging.
RE2::Options PalisadeRe2Options();

}  // namespace palisade

#endif  // PALISADE_SERVICES_ENGINE_RULE_SET_H_
