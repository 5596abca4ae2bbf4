// Threat-feed benchmarks: parsing, indexing and applying a 1,000,000-entry feed (with the diff
// against the previous version), the memory a loaded version holds, and lookups per second on
// the ingest path (FeedRegistry::Contains, lock-free).
//   bazel run -c opt //tests/bench:feed_bench
#include <benchmark/benchmark.h>

#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "prometheus/registry.h"
#include "services/common/clock.h"
#include "services/feedmanager/feed_manager.h"
#include "services/feeds/feed_parser.h"
#include "services/feeds/feed_set.h"

namespace palisade {
namespace {

constexpr int kEntries = 1'000'000;

// Resident set size in bytes.
double Rss() {
  std::ifstream in("/proc/self/statm");
  long pages = 0, resident = 0;
  in >> pages >> resident;
  return static_cast<double>(resident) * 4096;
}

// A feed of `n` public addresses, mostly /32s with some /24s (like FireHOL level 3), with
// `shift` moving the window so two versions share all but `shift` entries.
std::string FeedText(int n, int shift = 0) {
  std::string out;
  out.reserve(static_cast<size_t>(n) * 16);
  for (int i = shift; i < n + shift; ++i) {
    const uint32_t v = 0x0B000000u + static_cast<uint32_t>(i) * 7;  // from 11.0.0.0 up
    if (i % 50 == 0) {
      absl::StrAppend(&out, (v >> 24) & 255, ".", (v >> 16) & 255, ".", (v >> 8) & 255, ".0/24\n");
    } else {
      absl::StrAppend(&out, (v >> 24) & 255, ".", (v >> 16) & 255, ".", (v >> 8) & 255, ".",
                      v & 255, "\n");
    }
  }
  return out;
}

const std::string& Version(int which) {
  static const std::string* v1 = new std::string(FeedText(kEntries));
  static const std::string* v2 = new std::string(FeedText(kEntries, kEntries / 100));
  return which == 1 ? *v1 : *v2;
}

void BM_ParsePlain1M(benchmark::State& state) {
  const std::string& text = Version(1);
  for (auto _ : state) {
    absl::StatusOr<ParsedFeed> parsed = ParseFeed(palisade::v1::FEED_FORMAT_PLAIN, text, {});
    benchmark::DoNotOptimize(parsed->indicators.size());
  }
  state.SetItemsProcessed(state.iterations() * kEntries);
}
BENCHMARK(BM_ParsePlain1M)->Unit(benchmark::kMillisecond);

std::vector<FeedEntry> Entries(const std::string& text) {
  absl::StatusOr<ParsedFeed> parsed = ParseFeed(palisade::v1::FEED_FORMAT_PLAIN, text, {});
  std::vector<FeedEntry> entries;
  entries.reserve(parsed->indicators.size());
  for (const Indicator& i : parsed->indicators) entries.push_back({i.cidr});
  return entries;
}

void BM_BuildIndex1M(benchmark::State& state) {
  const std::vector<FeedEntry> entries = Entries(Version(1));
  for (auto _ : state) {
    FeedSet set(entries);
    benchmark::DoNotOptimize(set.size());
  }
  state.SetItemsProcessed(state.iterations() * kEntries);
}
BENCHMARK(BM_BuildIndex1M)->Unit(benchmark::kMillisecond);

void BM_Merge1M(benchmark::State& state) {
  FeedSet set(Entries(Version(1)));
  for (auto _ : state) benchmark::DoNotOptimize(set.Merged().size());
  state.SetItemsProcessed(state.iterations() * kEntries);
}
BENCHMARK(BM_Merge1M)->Unit(benchmark::kMillisecond);

// The whole apply path of a pushed full version: parse, never-ban filter, provenance carried
// over from the previous version, index, diff, publish. Alternates two versions that differ by
// 1% (10,000 entries out, 10,000 in), so every iteration is a real diff. No store, no edge.
void BM_ApplyVersionWithDiff1M(benchmark::State& state) {
  SimulatedClock clock;
  prometheus::Registry metrics;
  palisade::v1::FeedConfig config;
  config.set_name("big");
  config.set_format(palisade::v1::FEED_FORMAT_PLAIN);
  FeedManagerOptions options;
  options.feeds = {config};
  options.never_ban = *CidrSet::Parse({"192.0.2.0/24"});
  const double rss_before = Rss();
  FeedManager manager(options, clock, metrics, nullptr, nullptr);
  // The first version, outside the timing: every timed apply is then a 1% diff.
  (void)manager.Push("big", palisade::v1::FEED_PUSH_MODE_REPLACE, {}, false, Version(1));
  uint64_t changed = 0;
  int which = 2;
  for (auto _ : state) {
    absl::StatusOr<palisade::v1::PushFeedResponse> r = manager.Push(
        "big", palisade::v1::FEED_PUSH_MODE_REPLACE, {}, false, Version(which));
    changed += r->added() + r->removed();
    which = 3 - which;
  }
  state.SetItemsProcessed(state.iterations() * kEntries);
  state.counters["changed_per_apply"] = static_cast<double>(changed) / state.iterations();
  // What one loaded version costs in memory (the set, its index, provenance), MiB.
  state.counters["rss_growth_MiB"] = (Rss() - rss_before) / (1 << 20);
}
BENCHMARK(BM_ApplyVersionWithDiff1M)->Unit(benchmark::kMillisecond)->Iterations(6);

// Lookups as the engine does them for an in_feed condition: half the addresses are listed.
void BM_LookupOnIngestPath(benchmark::State& state) {
  static FeedRegistry* registry = [] {
    auto* r = new FeedRegistry();
    r->Publish("big", std::make_shared<const FeedSet>(Entries(Version(1))));
    return r;
  }();
  std::vector<IpAddress> probes;
  std::mt19937 rng(42 + state.thread_index());
  for (int i = 0; i < 4096; ++i) {
    const uint32_t listed = 0x0B000000u + static_cast<uint32_t>(rng() % kEntries) * 7;
    const uint32_t v = (i % 2 == 0) ? listed : 0x50000000u + rng() % 0x01000000u;
    probes.push_back(*IpAddress::Parse(absl::StrCat((v >> 24) & 255, ".", (v >> 16) & 255, ".",
                                                    (v >> 8) & 255, ".", v & 255)));
  }
  size_t i = 0, hits = 0;
  for (auto _ : state) {
    hits += registry->Contains("*", probes[i++ & 4095]);
  }
  benchmark::DoNotOptimize(hits);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LookupOnIngestPath)->Threads(1)->Threads(2);

}  // namespace
}  // namespace palisade

BENCHMARK_MAIN();
