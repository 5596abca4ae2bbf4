// What one RE2::Set pass costs, apart from the patterns in it: the figures behind the engine's
// choices to skip Set passes (SetPart::MayMatch) and to ask "any?" before asking for indices
// (and once to start anchored Sets after the fields their members share: SetHead, removed in
// the twenty-sixth pass). docs/PERFORMANCE.md, "Fifteenth pass".
//
// Over the generated nginx corpus (combined lines, ~166 bytes), one Set per case, anchored at
// the start as the engine's anchored Sets are:
//   - RejectsAtFirstByte `^Q`: no line starts with Q, the DFA stops at once (the set-up alone);
//   - AcceptsAtFirstByte `^[0-9]`: every line matches at its first byte;
//   - ReadsToTheEnd `^[^\n]*QQQ`: matches no line, the DFA reads every byte of each;
// each without and with the index vector (RE2 20220601 allocates its match set for the
// latter), and (argument 2) by SetDfa, the engine's own DFA for ASCII lines (its hits are the
// indices; services/engine/set_dfa.h; "Sixteenth pass"). Instructions are counted under callgrind (this VM has no hardware counters):
//   bazel build -c opt //tests/bench:re2_set_cost
//   valgrind --tool=callgrind bazel-bin/tests/bench/re2_set_cost
//     --benchmark_filter=ReadsToTheEnd/1 --benchmark_min_time=0   (one command line)
// and `callgrind_annotate --inclusive=yes` of `RE2::Set::Match` divided by the calls.
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "re2/re2.h"
#include "re2/set.h"
#include "services/engine/set_dfa.h"
#include "tests/corpus/corpus.h"

namespace palisade {
namespace {

const std::vector<std::string>& Lines() {
  static const auto* lines = [] {
    CorpusOptions options;
    options.lines = 20'000;
    return new std::vector<std::string>(GenerateNginx(options).lines);
  }();
  return *lines;
}

void Run(benchmark::State& state, const char* pattern) {
  RE2::Options options;
  options.set_max_mem(int64_t{64} << 20);
  RE2::Set set(options, RE2::ANCHOR_START);
  if (set.Add(pattern, nullptr) < 0 || !set.Compile()) {
    state.SkipWithError("the pattern does not compile");
    return;
  }
  absl::StatusOr<std::unique_ptr<const SetDfa>> dfa = SetDfa::Build({pattern}, true);
  if (!dfa.ok()) {
    state.SkipWithError("SetDfa does not take the pattern");
    return;
  }
  SetDfa::Cache cache;
  const int64_t mode = state.range(0);  // 0: RE2 "any?", 1: RE2 with indices, 2: SetDfa
  const std::vector<std::string>& lines = Lines();
  std::vector<int> hits;
  size_t matched = 0, bytes = 0;
  for (auto _ : state) {
    for (const std::string& line : lines) {
      if (mode == 2) {
        matched += (*dfa)->Match(line, &cache, &hits) && !hits.empty();
      } else {
        matched += mode == 1 ? set.Match(line, &hits) : set.Match(line, nullptr);
      }
      bytes += line.size();
    }
  }
  benchmark::DoNotOptimize(matched);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * lines.size()));
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
}

void BM_RejectsAtFirstByte(benchmark::State& state) { Run(state, "^Q"); }
void BM_AcceptsAtFirstByte(benchmark::State& state) { Run(state, "^[0-9]"); }
void BM_ReadsToTheEnd(benchmark::State& state) { Run(state, "^[^\\n]*QQQ"); }
BENCHMARK(BM_RejectsAtFirstByte)->Arg(0)->Arg(1)->Arg(2);
BENCHMARK(BM_AcceptsAtFirstByte)->Arg(0)->Arg(1)->Arg(2);
BENCHMARK(BM_ReadsToTheEnd)->Arg(0)->Arg(1)->Arg(2);

}  // namespace
}  // namespace palisade

BENCHMARK_MAIN();
