// Engine throughput over generated sshd + nginx corpora (tests/corpus), with the shipped packs:
// the sshd and nginx packs (each corpus's format sees only its own pack), and every pack under
// rules/ (BM_*Everything, issue 13 §4), each also without the prefilter (BM_*NoPrefilter).
// PALISADE_BENCH_EVERY_PACK_DIR names another directory for BM_*Everything's packs (a copy of
// rules/ with a pack or a rule taken out: tools/pack_cost.sh).
//   bazel run -c opt //tests/bench:engine_bench
//   bazel run -c opt //tests/bench:engine_bench -- --benchmark_filter='BM_Match'
// items_per_second is lines per second on one core.

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "benchmark/benchmark.h"
#include "services/common/ip.h"
#include "rules/shipped_packs.h"
#include "services/engine/engine.h"
#include "services/formats/line_parser.h"
#include "tests/corpus/corpus.h"

// Counts heap allocations, to check the hot path allocates nothing per line once warmed up
// (reported as the allocs_per_line counter).
static std::atomic<uint64_t> g_allocations{0};
void* operator new(size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace palisade {
namespace {

using palisade::v1::LogFormat;

constexpr uint64_t kLines = 200'000;

struct Fixture {
  std::shared_ptr<const RuleSet> rules;
  std::shared_ptr<const RuleSet> all_rules;  // + cloudflare-tokens (unanchored patterns)
  // Every pack under rules/ (issue 13 §4: breadth must not cost speed).
  std::shared_ptr<const RuleSet> everything;
  // The same without the prefilter, leading keys and ignores in the Sets (RuleSetOptions): as
  // before issue 13 §4.
  std::shared_ptr<const RuleSet> everything_no_prefilter;
  std::shared_ptr<const RuleSet> rules_no_prefilter;
  Corpus sshd;
  Corpus nginx;
  std::vector<ParsedLine> sshd_parsed;
  std::vector<ParsedLine> nginx_parsed;
  // Ordinary traffic only (no attacker): BM_*Benign.
  Corpus sshd_benign;
  Corpus nginx_benign;
  std::vector<ParsedLine> sshd_benign_parsed;
  std::vector<ParsedLine> nginx_benign_parsed;

  static const Fixture& Get() {
    static const Fixture* f = [] {
      auto* f = new Fixture();
      std::vector<LoadedPack> packs;
      for (const char* file : {"rules/sshd.textproto", "rules/nginx.textproto"}) {
        auto pack = LoadRulePackFile(file);
        if (!pack.ok()) {
          std::fprintf(stderr, "%s\n", pack.status().ToString().c_str());
          std::abort();
        }
        packs.push_back(*pack);
      }
      f->rules = *RuleSet::Compile(packs);
      const std::vector<LoadedPack> packs_sshd_nginx = packs;
      auto tokens = LoadRulePackFile("rules/cloudflare-tokens.textproto");
      if (!tokens.ok()) std::abort();
      packs.push_back(*tokens);
      f->all_rules = *RuleSet::Compile(packs);
      f->everything = Everything(RuleSetOptions());
      RuleSetOptions off;
      off.prefilter = false;
      off.leading_keys = false;
      off.ignores_in_sets = false;
      f->everything_no_prefilter = Everything(off);
      f->rules_no_prefilter = *RuleSet::Compile(packs_sshd_nginx, {}, off);
      CorpusOptions options;
      options.lines = kLines;
      f->sshd = GenerateSshd(options);
      f->nginx = GenerateNginx(options);
      f->sshd_parsed = Parse(f->sshd, LogFormat::LOG_FORMAT_SYSLOG);
      f->nginx_parsed = Parse(f->nginx, LogFormat::LOG_FORMAT_COMBINED);
      options.attack_percent = 0;
      f->sshd_benign = GenerateSshd(options);
      f->nginx_benign = GenerateNginx(options);
      f->sshd_benign_parsed = Parse(f->sshd_benign, LogFormat::LOG_FORMAT_SYSLOG);
      f->nginx_benign_parsed = Parse(f->nginx_benign, LogFormat::LOG_FORMAT_COMBINED);
      return f;
    }();
    return *f;
  }

  // Every rules/*.textproto through the production loader, with the CIDR sets the packs name
  // (the same as rules/pack_test.cc).
  static std::shared_ptr<const RuleSet> Everything(const RuleSetOptions& options) {
    const char* dir = std::getenv("PALISADE_BENCH_EVERY_PACK_DIR");
    const std::vector<std::string> files = FilesIn(dir != nullptr ? dir : "rules", ".textproto");
    std::vector<LoadedPack> packs;
    for (const std::string& file : files) {
      auto pack = LoadRulePackFile(file);
      if (!pack.ok()) {
        std::fprintf(stderr, "%s\n", pack.status().ToString().c_str());
        std::abort();
      }
      packs.push_back(*pack);
    }
    const CidrSets sets = ShippedPackCidrSets();
    auto compiled = RuleSet::Compile(packs, sets, options);
    if (!compiled.ok()) {
      std::fprintf(stderr, "%s\n", compiled.status().ToString().c_str());
      std::abort();
    }
    std::fprintf(stderr, "everything: %zu packs, %zu rules\n", packs.size(),
                 (*compiled)->rules().size());
    return *compiled;
  }

  static std::vector<ParsedLine> Parse(const Corpus& c, LogFormat format) {
    LineParser parser(format);
    std::vector<ParsedLine> out(c.lines.size());
    for (size_t i = 0; i < c.lines.size(); ++i) {
      (void)parser.Parse(c.lines[i], absl::FromUnixSeconds(1'772'600'000), &out[i]);
    }
    return out;
  }
};

const Corpus& CorpusFor(LogFormat f, bool benign = false) {
  const Fixture& x = Fixture::Get();
  if (f == LogFormat::LOG_FORMAT_SYSLOG) return benign ? x.sshd_benign : x.sshd;
  return benign ? x.nginx_benign : x.nginx;
}
const std::vector<ParsedLine>& ParsedFor(LogFormat f, bool benign = false) {
  const Fixture& x = Fixture::Get();
  if (f == LogFormat::LOG_FORMAT_SYSLOG) return benign ? x.sshd_benign_parsed : x.sshd_parsed;
  return benign ? x.nginx_benign_parsed : x.nginx_parsed;
}

void BM_Parse(benchmark::State& state) {
  const LogFormat format = static_cast<LogFormat>(state.range(0));
  const Corpus& corpus = CorpusFor(format);
  LineParser parser(format);
  ParsedLine out;
  const absl::Time ref = absl::FromUnixSeconds(1'772'600'000);
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(parser.Parse(corpus.lines[i], ref, &out));
    if (++i == corpus.lines.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Parse)
    ->Arg(LogFormat::LOG_FORMAT_SYSLOG)
    ->Arg(LogFormat::LOG_FORMAT_COMBINED)
    ->ArgName("format");

// The RE2::Set pass plus candidate captures and key normalisation; no windows.
void RunMatch(benchmark::State& state, std::shared_ptr<const RuleSet> rules) {
  const LogFormat format = static_cast<LogFormat>(state.range(0));
  const auto& parsed = ParsedFor(format);
  Engine engine(std::move(rules), EngineOptions());
  size_t i = 0;
  uint64_t matches = 0;
  const uint64_t allocations_before = g_allocations.load();
  for (auto _ : state) {
    engine.MatchOnly(format, parsed[i], [&](const CompiledRule&, absl::string_view) { ++matches; });
    if (++i == parsed.size()) i = 0;
  }
  benchmark::DoNotOptimize(matches);
  state.counters["allocs_per_line"] =
      static_cast<double>(g_allocations.load() - allocations_before) / state.iterations();
  state.SetItemsProcessed(state.iterations());
}
void BM_Match(benchmark::State& state) { RunMatch(state, Fixture::Get().rules); }
BENCHMARK(BM_Match)
    ->Arg(LogFormat::LOG_FORMAT_SYSLOG)
    ->Arg(LogFormat::LOG_FORMAT_COMBINED)
    ->ArgName("format");
// Without the prefilter and leading keys (see BM_MatchEverythingNoPrefilter).
void BM_MatchNoPrefilter(benchmark::State& state) {
  RunMatch(state, Fixture::Get().rules_no_prefilter);
}
BENCHMARK(BM_MatchNoPrefilter)
    ->Arg(LogFormat::LOG_FORMAT_SYSLOG)
    ->Arg(LogFormat::LOG_FORMAT_COMBINED)
    ->ArgName("format");

// Match + window + detection over pre-parsed lines, after a warm-up lap that creates every
// window the corpus needs; reports allocations per line.
void RunMatchWindow(benchmark::State& state, std::shared_ptr<const RuleSet> rules) {
  const LogFormat format = static_cast<LogFormat>(state.range(0));
  const auto& parsed = ParsedFor(format);
  const Corpus& corpus = CorpusFor(format);
  Engine engine(std::move(rules), EngineOptions());
  std::vector<Detection> out;
  out.reserve(2048);
  for (size_t k = 0; k < parsed.size(); ++k) {
    engine.Process(format, parsed[k], corpus.lines[k], *parsed[k].time, &out);
    if (out.size() > 1024) out.clear();
  }
  size_t i = 0;
  absl::Duration lap = absl::Hours(24);  // keeps event time moving forward across laps
  const uint64_t allocations_before = g_allocations.load();
  // Where allocations happen: lines that matched nothing, matched lines that raised no
  // detection, and lines that did (a Detection is output: its key and evidence are copies).
  uint64_t quiet_lines = 0, quiet_allocs = 0, matched_lines = 0, matched_allocs = 0;
  for (auto _ : state) {
    const uint64_t before = g_allocations.load(std::memory_order_relaxed);
    const size_t detections = out.size();
    LineResult r = engine.Process(format, parsed[i], corpus.lines[i], *parsed[i].time + lap, &out);
    const uint64_t spent = g_allocations.load(std::memory_order_relaxed) - before;
    if (!r.matched) {
      ++quiet_lines;
      quiet_allocs += spent;
    } else if (out.size() == detections) {
      ++matched_lines;
      matched_allocs += spent;
    }
    if (out.size() > 1024) out.clear();
    if (++i == parsed.size()) {
      i = 0;
      lap += absl::Hours(24);
    }
  }
  state.counters["allocs_per_line"] =
      static_cast<double>(g_allocations.load() - allocations_before) / state.iterations();
  state.counters["allocs_unmatched_line"] =
      quiet_lines ? static_cast<double>(quiet_allocs) / quiet_lines : 0;
  state.counters["allocs_matched_line"] =
      matched_lines ? static_cast<double>(matched_allocs) / matched_lines : 0;
  state.SetItemsProcessed(state.iterations());
}

// The target of DESIGN.md: the sshd and nginx packs.
void BM_MatchWindow(benchmark::State& state) { RunMatchWindow(state, Fixture::Get().rules); }
BENCHMARK(BM_MatchWindow)
    ->Arg(LogFormat::LOG_FORMAT_SYSLOG)
    ->Arg(LogFormat::LOG_FORMAT_COMBINED)
    ->ArgName("format");
void BM_MatchWindowNoPrefilter(benchmark::State& state) {
  RunMatchWindow(state, Fixture::Get().rules_no_prefilter);
}
BENCHMARK(BM_MatchWindowNoPrefilter)
    ->Arg(LogFormat::LOG_FORMAT_SYSLOG)
    ->Arg(LogFormat::LOG_FORMAT_COMBINED)
    ->ArgName("format");

// With the token-leak pack loaded too, as palisaded runs by default: its patterns are
// unanchored; the literal prefilter spares lines without "cfut_", "bearer"... a Set pass.
void BM_MatchWindowAllPacks(benchmark::State& state) {
  RunMatchWindow(state, Fixture::Get().all_rules);
}
BENCHMARK(BM_MatchWindowAllPacks)
    ->Arg(LogFormat::LOG_FORMAT_SYSLOG)
    ->Arg(LogFormat::LOG_FORMAT_COMBINED)
    ->ArgName("format");

// Every pack under rules/ loaded (150+ rules): the figure issue 13 §4 holds against BM_Match /
// BM_MatchWindow (the sshd and nginx packs; each corpus's format sees only its own pack there).
void BM_MatchEverything(benchmark::State& state) { RunMatch(state, Fixture::Get().everything); }
BENCHMARK(BM_MatchEverything)
    ->Arg(LogFormat::LOG_FORMAT_SYSLOG)
    ->Arg(LogFormat::LOG_FORMAT_COMBINED)
    ->ArgName("format");
void BM_MatchWindowEverything(benchmark::State& state) {
  RunMatchWindow(state, Fixture::Get().everything);
}
BENCHMARK(BM_MatchWindowEverything)
    ->Arg(LogFormat::LOG_FORMAT_SYSLOG)
    ->Arg(LogFormat::LOG_FORMAT_COMBINED)
    ->ArgName("format");
// The same without the literal prefilter and leading keys (RuleSetOptions): every pattern in a
// Set, every key through RE2's submatch engine, as before issue 13 §4; run alongside so that the
// comparison is made in one run.
void BM_MatchEverythingNoPrefilter(benchmark::State& state) {
  RunMatch(state, Fixture::Get().everything_no_prefilter);
}
BENCHMARK(BM_MatchEverythingNoPrefilter)
    ->Arg(LogFormat::LOG_FORMAT_SYSLOG)
    ->Arg(LogFormat::LOG_FORMAT_COMBINED)
    ->ArgName("format");
void BM_MatchWindowEverythingNoPrefilter(benchmark::State& state) {
  RunMatchWindow(state, Fixture::Get().everything_no_prefilter);
}
BENCHMARK(BM_MatchWindowEverythingNoPrefilter)
    ->Arg(LogFormat::LOG_FORMAT_SYSLOG)
    ->Arg(LogFormat::LOG_FORMAT_COMBINED)
    ->ArgName("format");
// Match + window as replay and the file inputs run it (not gRPC ingest, whose reactor threads
// take each line whole): Prematch (one call for kChunk lines, their Sets walked side by side;
// or, argument `many` = 0, one call a line), then Process of each line with its candidates, on
// one thread. Items are lines. `benign`: the corpus without attackers.
void RunPrematchWindow(benchmark::State& state, std::shared_ptr<const RuleSet> rules,
                       bool benign = false) {
  const LogFormat format = static_cast<LogFormat>(state.range(0));
  const bool many = state.range(1) != 0;
  const auto& parsed = ParsedFor(format, benign);
  const Corpus& corpus = CorpusFor(format, benign);
  Engine engine(std::move(rules), EngineOptions());
  std::vector<Detection> out;
  out.reserve(2048);
  constexpr size_t kChunk = 256;  // replay's batches are larger; the walks take 64 at a time
  PrematchBuffer buffer;
  std::vector<std::pair<uint32_t, uint32_t>> spans;
  std::vector<const ParsedLine*> lines;
  absl::Duration lap;
  auto chunk = [&](size_t first) {
    const size_t end = std::min(first + kChunk, parsed.size());
    buffer.Clear();
    lines.clear();
    for (size_t k = first; k < end; ++k) lines.push_back(&parsed[k]);
    if (many) {
      engine.Prematch(format, lines, &buffer, &spans);
    } else {
      spans.clear();
      for (const ParsedLine* line : lines) {
        const uint32_t begin = static_cast<uint32_t>(buffer.candidates.size());
        engine.Prematch(format, *line, &buffer);
        spans.emplace_back(begin, static_cast<uint32_t>(buffer.candidates.size()));
      }
    }
    for (size_t k = first; k < end; ++k) {
      PrematchedLine pre;
      const auto [begin, span_end] = spans[k - first];
      pre.candidates = absl::MakeConstSpan(buffer.candidates.data() + begin, span_end - begin);
      pre.buffer = &buffer;
      engine.Process(format, parsed[k], corpus.lines[k], *parsed[k].time + lap, &out, 0, &pre);
      if (out.size() > 1024) out.clear();
    }
    return end - first;
  };
  for (size_t first = 0; first < parsed.size(); first += kChunk) chunk(first);  // warm-up lap
  size_t first = 0;
  int64_t lines_done = 0;
  lap = absl::Hours(24);
  for (auto _ : state) {
    lines_done += static_cast<int64_t>(chunk(first));
    first += kChunk;
    if (first >= parsed.size()) {
      first = 0;
      lap += absl::Hours(24);
    }
  }
  state.SetItemsProcessed(lines_done);
}
void BM_PrematchWindow(benchmark::State& state) { RunPrematchWindow(state, Fixture::Get().rules); }
BENCHMARK(BM_PrematchWindow)
    ->ArgsProduct({{LogFormat::LOG_FORMAT_SYSLOG, LogFormat::LOG_FORMAT_COMBINED}, {0, 1}})
    ->ArgNames({"format", "many"});
void BM_PrematchWindowEverything(benchmark::State& state) {
  RunPrematchWindow(state, Fixture::Get().everything);
}
BENCHMARK(BM_PrematchWindowEverything)
    ->ArgsProduct({{LogFormat::LOG_FORMAT_SYSLOG, LogFormat::LOG_FORMAT_COMBINED}, {0, 1}})
    ->ArgNames({"format", "many"});
// The same two on ordinary traffic only (CorpusOptions::attack_percent = 0, where the corpora
// above have 30 % of attack lines): what loading every pack costs the lines of a quiet day, apart
// from what the attacks make the rules count and detect.
void BM_PrematchWindowBenign(benchmark::State& state) {
  RunPrematchWindow(state, Fixture::Get().rules, /*benign=*/true);
}
BENCHMARK(BM_PrematchWindowBenign)
    ->ArgsProduct({{LogFormat::LOG_FORMAT_SYSLOG, LogFormat::LOG_FORMAT_COMBINED}, {1}})
    ->ArgNames({"format", "many"});
void BM_PrematchWindowEverythingBenign(benchmark::State& state) {
  RunPrematchWindow(state, Fixture::Get().everything, /*benign=*/true);
}
BENCHMARK(BM_PrematchWindowEverythingBenign)
    ->ArgsProduct({{LogFormat::LOG_FORMAT_SYSLOG, LogFormat::LOG_FORMAT_COMBINED}, {1}})
    ->ArgNames({"format", "many"});

// Parse + match + window: what one ingest core does per line.
void BM_ParseMatchWindow(benchmark::State& state) {
  const LogFormat format = static_cast<LogFormat>(state.range(0));
  const Corpus& corpus = CorpusFor(format);
  Engine engine(Fixture::Get().rules, EngineOptions());
  LineParser parser(format);
  ParsedLine parsed;
  std::vector<Detection> out;
  const absl::Time ref = absl::FromUnixSeconds(1'772'600'000);
  size_t i = 0;
  absl::Duration lap;
  for (auto _ : state) {
    if (parser.Parse(corpus.lines[i], ref, &parsed).ok()) {
      engine.Process(format, parsed, corpus.lines[i], *parsed.time + lap, &out);
    }
    if (out.size() > 1024) out.clear();
    if (++i == corpus.lines.size()) {
      i = 0;
      lap += absl::Hours(24);
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ParseMatchWindow)
    ->Arg(LogFormat::LOG_FORMAT_SYSLOG)
    ->Arg(LogFormat::LOG_FORMAT_COMBINED)
    ->ArgName("format");

void BM_IpParseFormat(benchmark::State& state) {
  const char* ips[] = {"203.0.113.7", "2001:db8:1f:2a::7", "::ffff:198.51.100.4"};
  char buf[IpAddress::kMaxTextLength];
  size_t i = 0;
  for (auto _ : state) {
    auto ip = IpAddress::Parse(ips[i++ % 3]);
    benchmark::DoNotOptimize(ip->Format(buf));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_IpParseFormat);

}  // namespace
}  // namespace palisade

