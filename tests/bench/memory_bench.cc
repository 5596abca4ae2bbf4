// Memory of the engine's windows: resident memory with 1,000,000 distinct source addresses in
// live windows, and under a flood of 3,000,000 unique addresses with the default per-rule cap
// of 1,000,000 (eviction keeps it bounded; what it drops is counted).
//   bazel run -c opt //tests/bench:memory_bench
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "services/engine/engine.h"

namespace {

double ResidentMiB() {
  std::ifstream in("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  in >> pages_total >> pages_resident;
  return pages_resident * 4096.0 / (1 << 20);
}

std::shared_ptr<const palisade::RuleSet> Rules() {
  auto pack = palisade::LoadRulePackFile("rules/sshd.textproto");
  if (!pack.ok()) std::abort();
  return *palisade::RuleSet::Compile({*pack});
}

void Feed(palisade::Engine& engine, int n, int offset) {
  std::vector<palisade::Detection> out;
  palisade::ParsedLine line;
  line.program = "sshd";
  const absl::Time t0 = absl::FromUnixSeconds(1'772'600'000);
  for (int i = 0; i < n; ++i) {
    const int k = i + offset;
    const std::string msg =
        absl::StrFormat("Failed password for root from %d.%d.%d.%d port 22 ssh2", 11 + k / 16777216,
                        (k / 65536) % 256, (k / 256) % 256, k % 256);
    line.message = msg;
    engine.Process(palisade::v1::LOG_FORMAT_SYSLOG, line, msg, t0 + absl::Milliseconds(i), &out);
  }
}

}  // namespace

int main() {
  const double base = ResidentMiB();
  {
    palisade::Engine engine(Rules(), palisade::EngineOptions());
    const double before = ResidentMiB();
    Feed(engine, 1'000'000, 0);
    std::printf("1,000,000 distinct addresses in live windows: %zu windows, +%.1f MiB resident "
                "(%.0f bytes per window), process %.1f MiB\n",
                engine.live_windows(), ResidentMiB() - before,
                (ResidentMiB() - before) * (1 << 20) / engine.live_windows(), ResidentMiB());
  }
  {
    palisade::EngineOptions options;
    options.max_keys_per_rule = 1'000'000;
    palisade::Engine engine(Rules(), options);
    Feed(engine, 3'000'000, 5'000'000);
    std::printf("flood of 3,000,000 unique addresses, cap 1,000,000 per rule: %zu windows live, "
                "%llu evicted (counted), process %.1f MiB (base %.1f MiB)\n",
                engine.live_windows(),
                static_cast<unsigned long long>(engine.stats().evicted_windows), ResidentMiB(),
                base);
  }
  return 0;
}
