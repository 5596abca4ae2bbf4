// Memory of the engine's windows under the floods of issue 12 section 4, against the ceiling
// (EngineOptions::memory_budget_bytes, engine.memory_budget_bytes in the config). Each scenario
// runs in a child process of its own (fork), so what one frees does not hide what the next
// takes; each reports the child's resident memory before and after, its peak, the engine's
// accounted bytes, and whether the process stayed under base + ceiling. Exits 1 if one did not.
//
//   bazel run -c opt //tests/bench:memory_bench [-- WORD]   (WORD: only the scenarios naming it)
//
// Scenarios:
//   - one 16 KiB line per IPv6 address (was ~17 KB per window: 1.68 GB at 100 k addresses),
//     with the default options (2 KiB of evidence per window, 1 GiB ceiling);
//   - the same flood past a 64 MiB ceiling (250 k addresses): the least recently active
//     windows are evicted, counted;
//   - four 16 KiB lines per address (was ~73 KB per window), 64 MiB ceiling;
//   - many keys: 3,000,000 unique IPv4 addresses with short lines, 64 MiB ceiling;
//   - the reference: 1,000,000 distinct addresses, short lines, defaults (no eviction);
//   - the decision table: a threshold-1 rule's detections from 400,000 IPv6 addresses, each with
//     a full evidence ring (five 400-byte lines, what the engine's defaults hand over), under
//     DecisionTableLimits' default max_active_bytes (256 MiB): decisions past it are refused.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "services/common/clock.h"
#include "services/common/proto_time.h"
#include "services/decisions/decision_table.h"
#include "services/engine/engine.h"

namespace {

constexpr double kMiB = 1 << 20;

// Resident and peak resident memory of this process, in bytes (/proc/self/status).
struct Rss {
  double now = 0;
  double peak = 0;
};
Rss ReadRss() {
  std::ifstream in("/proc/self/status");
  std::string key;
  Rss r;
  while (in >> key) {
    double kb = 0;
    if (key == "VmRSS:") {
      in >> kb;
      r.now = kb * 1024;
    } else if (key == "VmHWM:") {
      in >> kb;
      r.peak = kb * 1024;
    }
  }
  return r;
}

std::shared_ptr<const palisade::RuleSet> Rules() {
  auto pack = palisade::LoadRulePackFile("rules/sshd.textproto");
  if (!pack.ok()) {
    std::fprintf(stderr, "%s\n", std::string(pack.status().message()).c_str());
    std::abort();
  }
  return *palisade::RuleSet::Compile({*pack});
}

std::string Ipv6(int k) { return absl::StrFormat("2001:db8:%x:%x::1", k / 65536, k % 65536); }
std::string Ipv4(int k) {
  return absl::StrFormat("%d.%d.%d.%d", 11 + k / 16777216, (k / 65536) % 256, (k / 256) % 256,
                         k % 256);
}

// `lines_per_key` lines for each of `keys` addresses, key after key. The user name carries the
// padding: the key must stay the server-written tail of the line for the anchored rule.
void Flood(palisade::Engine& engine, int keys, int lines_per_key, size_t pad,
           const std::function<std::string(int)>& address) {
  std::vector<palisade::Detection> out;
  palisade::ParsedLine line;
  line.program = "sshd";
  const std::string user = pad > 0 ? std::string(pad, 'A') : "root";
  const absl::Time t0 = absl::FromUnixSeconds(1'772'600'000);
  int64_t n = 0;
  for (int k = 0; k < keys; ++k) {
    const std::string msg =
        absl::StrCat("Failed password for ", user, " from ", address(k), " port 22 ssh2");
    line.message = msg;
    for (int i = 0; i < lines_per_key; ++i) {
      engine.Process(palisade::v1::LOG_FORMAT_SYSLOG, line, msg, t0 + absl::Milliseconds(n++),
                     &out);
    }
    out.clear();
  }
}

struct Scenario {
  const char* name;
  uint64_t budget;  // 0: the default (1 GiB)
  int keys;
  int lines_per_key;
  size_t pad;
  bool ipv6;
};

// Runs one scenario in this (child) process; returns whether it stayed under the ceiling.
bool Run(const Scenario& s) {
  palisade::EngineOptions options;
  if (s.budget != 0) options.memory_budget_bytes = s.budget;
  const uint64_t budget = s.budget != 0 ? s.budget : palisade::EngineOptions().memory_budget_bytes;
  auto rules = Rules();
  palisade::Engine engine(rules, options);
  const Rss before = ReadRss();
  const absl::Time start = absl::Now();
  Flood(engine, s.keys, s.lines_per_key, s.pad, s.ipv6 ? Ipv6 : Ipv4);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  const Rss after = ReadRss();
  const palisade::EngineStats stats = engine.stats();
  const size_t windows = engine.live_windows();
  // The ceiling holds for the process if what the flood added stays within the budget (the
  // engine's accounted bytes must, exactly; resident memory adds the allocator's slack).
  const bool accounted_ok = stats.memory_bytes <= budget;
  const bool rss_ok = after.peak - before.now <= static_cast<double>(budget);
  std::printf(
      "%s\n"
      "  %d keys x %d line(s) of %zu bytes, ceiling %.0f MiB, %.1f s\n"
      "  resident before %.1f MiB, after %.1f MiB (+%.1f MiB), peak %.1f MiB (+%.1f MiB)\n"
      "  windows live %zu, evicted by the ceiling %llu, by the key cap %llu, evidence lines "
      "cut %llu\n"
      "  accounted %.1f MiB (%.0f bytes per window); resident growth per window %.0f bytes\n"
      "  ceiling held: accounted %s, resident %s\n\n",
      s.name, s.keys, s.lines_per_key, s.pad > 0 ? s.pad : size_t{4}, budget / kMiB, seconds,
      before.now / kMiB, after.now / kMiB, (after.now - before.now) / kMiB, after.peak / kMiB,
      (after.peak - before.now) / kMiB, windows,
      static_cast<unsigned long long>(stats.memory_evicted_windows),
      static_cast<unsigned long long>(stats.evicted_windows),
      static_cast<unsigned long long>(stats.evidence_truncated), stats.memory_bytes / kMiB,
      windows > 0 ? static_cast<double>(stats.memory_bytes) / windows : 0.0,
      windows > 0 ? (after.now - before.now) / windows : 0.0, accounted_ok ? "yes" : "NO",
      rss_ok ? "yes" : "NO");
  std::fflush(stdout);
  return accounted_ok && rss_ok;
}

// The decision table's scenario: returns whether its resident growth and its accounted bytes
// stayed under max_active_bytes.
bool RunDecisions() {
  palisade::SimulatedClock clock;
  palisade::DecisionTable table(clock);
  const palisade::DecisionTableLimits limits;
  table.SetLimits(limits);
  palisade::v1::DecisionSpec spec;
  spec.set_action(palisade::v1::ACTION_BLOCK);
  *spec.mutable_duration() = palisade::ToProtoDuration(absl::Hours(24));
  spec.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
  const int detections = 400'000;
  const Rss before = ReadRss();
  const absl::Time start = absl::Now();
  size_t refused = 0;
  for (int k = 0; k < detections; ++k) {
    palisade::Detection d;
    d.rule_id = "web-cve-probe";
    // Each in a /64 of its own (an attacker with a /48 and more): addresses of one /64 would
    // be folded into one range decision (DecisionTableLimits::ipv6_fold_addresses).
    d.key = Ipv6(k);
    d.time = clock.TimeNow();
    for (int i = 0; i < 5; ++i) d.evidence.push_back(std::string(400, 'a' + i));
    if (table.Apply(d, spec).change == palisade::DecisionChange::kRefused) ++refused;
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  const Rss after = ReadRss();
  const size_t active = table.active_count();
  const double budget = static_cast<double>(limits.max_active_bytes);
  const bool accounted_ok = table.active_bytes() <= limits.max_active_bytes;
  const bool rss_ok = after.peak - before.now <= budget;
  std::printf(
      "decision table: %d detections from distinct IPv6 addresses, 2,000 bytes of evidence "
      "each, max_active_bytes %.0f MiB, %.1f s\n"
      "  resident before %.1f MiB, after %.1f MiB (+%.1f MiB), peak +%.1f MiB\n"
      "  decisions active %zu, refused %zu; accounted %.1f MiB (%.0f bytes per decision); "
      "resident growth per decision %.0f bytes\n"
      "  ceiling held: accounted %s, resident %s\n\n",
      detections, budget / kMiB, seconds, before.now / kMiB, after.now / kMiB,
      (after.now - before.now) / kMiB, (after.peak - before.now) / kMiB, active, refused,
      table.active_bytes() / kMiB,
      active > 0 ? static_cast<double>(table.active_bytes()) / active : 0.0,
      active > 0 ? (after.now - before.now) / active : 0.0, accounted_ok ? "yes" : "NO",
      rss_ok ? "yes" : "NO");
  std::fflush(stdout);
  return accounted_ok && rss_ok;
}

// Runs `run` in a child process; returns whether it exited 0.
bool InChild(const std::function<bool()>& run) {
  const pid_t pid = fork();
  if (pid < 0) {
    std::perror("fork");
    std::exit(2);
  }
  if (pid == 0) _exit(run() ? 0 : 1);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string only = argc > 1 ? argv[1] : "";
  const Scenario scenarios[] = {
      {"16 KiB line per IPv6 address, defaults", 0, 100'000, 1, 16 * 1024, true},
      {"16 KiB line per IPv6 address, past a 64 MiB ceiling", 64u << 20, 250'000, 1, 16 * 1024,
       true},
      {"four 16 KiB lines per IPv6 address, 64 MiB ceiling", 64u << 20, 50'000, 4, 16 * 1024,
       true},
      {"many keys: 3,000,000 unique IPv4 addresses, 64 MiB ceiling", 64u << 20, 3'000'000, 1, 0,
       false},
      {"reference: 1,000,000 distinct IPv4 addresses, defaults", 0, 1'000'000, 1, 0, false},
  };
  std::printf("base process: %.1f MiB resident\n\n", ReadRss().now / kMiB);
  std::fflush(stdout);
  bool all = true;
  for (const Scenario& s : scenarios) {
    if (std::string(s.name).find(only) != std::string::npos) {
      all = InChild([&s] { return Run(s); }) && all;
    }
  }
  if (std::string("decision table").find(only) != std::string::npos) {
    all = InChild(RunDecisions) && all;
  }
  std::printf(all ? "every scenario stayed under its ceiling\n"
                  : "a scenario went past its ceiling\n");
  return all ? 0 : 1;
}
