// libFuzzer target: the rule-pack loader and compiler on any text. A pack is refused with a
// status or compiled; nothing crashes, and RE2 keeps every regex linear-time.
#include <cstddef>
#include <cstdint>
#include <string>

#include "services/engine/engine.h"
#include "services/engine/rule_set.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<palisade::LoadedPack> pack = palisade::ParseRulePack(text, "fuzz.textproto");
  if (!pack.ok()) return 0;
  absl::StatusOr<std::shared_ptr<const palisade::RuleSet>> rules =
      palisade::RuleSet::Compile({*pack});
  if (!rules.ok()) return 0;
  // Run the compiled rules over their own examples.
  palisade::Engine engine(*rules, palisade::EngineOptions());
  std::vector<palisade::Detection> out;
  for (const auto& rule : (*rules)->rules()) {
    for (const auto& ex : rule->proto.examples()) {
      palisade::ParsedLine line;
      line.message = ex.line();
      engine.Process(palisade::v1::LOG_FORMAT_RAW, line, ex.line(), absl::UnixEpoch(), &out);
    }
  }
  return 0;
}
