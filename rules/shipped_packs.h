// The shipped packs as the tests and benchmarks that load them all see them: the files under a
// directory (rules/*.textproto, rules/testlogs/*.log), and the CIDR sets the packs' conditions
// name, defined as a deployment would define them. Test-only. Thread-safety: pure functions.
#ifndef PALISADE_RULES_SHIPPED_PACKS_H_
#define PALISADE_RULES_SHIPPED_PACKS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/engine/rule_set.h"

namespace palisade {

// "DIR/NAME" for every file of `dir` whose name ends with `suffix`, sorted; empty when `dir`
// cannot be read.
std::vector<std::string> FilesIn(const std::string& dir, absl::string_view suffix);

// The CIDR sets the shipped packs name (cloudflare_token_ips).
CidrSets ShippedPackCidrSets();

// Every pack of `dir` (rules/*.textproto) loaded through LoadRulePackFile and compiled together
// with ShippedPackCidrSets(): the first pack that does not load is the error, and so are fewer
// than 10 packs (a data dependency missing).
absl::StatusOr<std::shared_ptr<const RuleSet>> CompileShippedPacks(
    const std::string& dir = "rules");

}  // namespace palisade

#endif  // PALISADE_RULES_SHIPPED_PACKS_H_
