// Writes a generated corpus and its ground truth:
//   gen_corpus --kind=sshd|nginx --lines=N --seed=S --out=FILE [--truth=FILE] [--now]
// --now places the corpus so that its last line happened at the current time.
#include <fstream>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "tests/corpus/corpus.h"

ABSL_FLAG(std::string, kind, "sshd", "sshd or nginx");
ABSL_FLAG(uint64_t, lines, 100000, "lines to write");
ABSL_FLAG(uint64_t, seed, 1, "random seed");
ABSL_FLAG(std::string, out, "", "output log file");
ABSL_FLAG(std::string, truth, "", "optional: attacker addresses, one per line");
ABSL_FLAG(bool, now, false, "end the corpus at the current time");
ABSL_FLAG(int32_t, step_ms, 10, "milliseconds between lines");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  palisade::CorpusOptions options;
  options.lines = absl::GetFlag(FLAGS_lines);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.step = absl::Milliseconds(absl::GetFlag(FLAGS_step_ms));
  if (absl::GetFlag(FLAGS_now)) {
    options.start = absl::Now() - options.step * static_cast<int64_t>(options.lines);
  }
  const std::string kind = absl::GetFlag(FLAGS_kind);
  if (kind != "sshd" && kind != "nginx") {
    std::cerr << "gen_corpus: --kind must be sshd or nginx\n";
    return 2;
  }
  palisade::Corpus corpus =
      kind == "sshd" ? palisade::GenerateSshd(options) : palisade::GenerateNginx(options);
  std::ofstream out(absl::GetFlag(FLAGS_out));
  if (!out) {
    std::cerr << "gen_corpus: cannot write --out\n";
    return 2;
  }
  for (const auto& l : corpus.lines) out << l << '\n';
  if (!absl::GetFlag(FLAGS_truth).empty()) {
    std::ofstream truth(absl::GetFlag(FLAGS_truth));
    for (const auto& a : corpus.attackers) truth << a << '\n';
  }
  std::cerr << "gen_corpus: " << corpus.lines.size() << " lines, " << corpus.attackers.size()
            << " attackers\n";
  return 0;
}
