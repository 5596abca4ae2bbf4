// libFuzzer target: SetDfa (the engine's own DFA for a Set's question) against RE2::Set on any
// patterns and any text. Input: a first byte (bit 0: anchored), then lines; the last line is the
// text, the ones before it are the patterns (at most 8). Patterns RE2 refuses, or SetDfa does not
// model, end the run; otherwise SetDfa must answer as RE2::Set does, or leave the text to RE2
// (a byte past ASCII, a cache that starts over); so must MatchMany for the text, its halves and
// copies of it. A difference aborts with both answers.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "re2/re2.h"
#include "re2/set.h"
#include "services/engine/set_dfa.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const bool anchored = (data[0] & 1) != 0;
  const std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::vector<std::string> parts = absl::StrSplit(input, '\n');
  const std::string text = parts.back();
  parts.pop_back();
  if (parts.empty() || parts.size() > 8) return 0;
  RE2::Options options;
  options.set_log_errors(false);
  options.set_max_mem(8 << 20);
  RE2::Set set(options, anchored ? RE2::ANCHOR_START : RE2::UNANCHORED);
  for (const std::string& p : parts) {
    if (set.Add(p, nullptr) < 0) return 0;
  }
  if (!set.Compile()) return 0;
  absl::StatusOr<std::unique_ptr<const palisade::SetDfa>> dfa =
      palisade::SetDfa::Build(parts, anchored, 20000);
  if (!dfa.ok()) return 0;
  // The text, and for MatchMany (which walks four texts side by side, then the rest alone) its
  // halves and the text again: walks of different lengths that end at different rounds.
  const size_t half = text.size() / 2;
  const std::vector<std::string> texts = {text, text.substr(0, half), text.substr(half), text,
                                          text};
  std::vector<std::vector<int>> want(texts.size());
  for (size_t t = 0; t < texts.size(); ++t) {
    RE2::Set::ErrorInfo error;
    set.Match(texts[t], &want[t], &error);
    if (error.kind != RE2::Set::kNoError) return 0;  // RE2 ran out of memory: no reference
    std::sort(want[t].begin(), want[t].end());
  }
  auto check = [&](const std::vector<int>& got, size_t t, const char* how) {
    if (got == want[t]) return;
    fprintf(stderr, "SetDfa (%s) answered {%s}, RE2::Set {%s}; text %zu; anchored %d; patterns:\n%s\n",
            how, absl::StrJoin(got, ",").c_str(), absl::StrJoin(want[t], ",").c_str(), t,
            anchored, absl::StrJoin(parts, "\n").c_str());
    abort();
  };
  // A small cache too, so that the start-over path is fuzzed as well.
  for (size_t bytes : {size_t{4} << 20, size_t{4096}}) {
    palisade::SetDfa::Cache cache(bytes);
    std::vector<int> got;
    if ((*dfa)->Match(text, &cache, &got)) check(got, 0, "Match");
    palisade::SetDfa::Cache many_cache(bytes);
    const std::vector<absl::string_view> views(texts.begin(), texts.end());
    palisade::SetDfa::Answers answers;
    (*dfa)->MatchMany(views, &many_cache, &answers);
    for (size_t t = 0; t < texts.size(); ++t) {
      if (!answers.answered(t)) continue;
      check(std::vector<int>(answers.hits.begin() + answers.spans[t].first,
                             answers.hits.begin() + answers.spans[t].second),
            t, "MatchMany");
    }
  }
  return 0;
}
