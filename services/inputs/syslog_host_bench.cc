// The syslog receiver's per-frame HOSTNAME read (a relay's hosts are streams of their own):
// before, a whole LineParser::Parse of each frame (the time converted, the tag split), as the
// pipeline parses it again; now SyslogReceiver::HostnameOf, the header up to the HOSTNAME, the
// time checked but not converted. Frames: the generated sshd corpus (tests/corpus) as a relay
// forwards it, RFC 3164 ("<38>Mar  3 12:00:00 host sshd[1]: ...") and RFC 5424.
//   bazel run -c opt //services/inputs:syslog_host_bench
// items_per_second is frames per second on one core.

#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "services/formats/line_parser.h"
#include "services/inputs/syslog_receiver.h"
#include "tests/corpus/corpus.h"

namespace palisade {
namespace {

const std::vector<std::string>& Frames(bool v5424) {
  static const auto* frames = [] {
    auto* f = new std::vector<std::string>[2];
    CorpusOptions options;
    options.lines = 20'000;
    for (const std::string& line : GenerateSshd(options).lines) {
      f[0].push_back("<38>" + line);
      // "Mar  3 12:00:00 host rest" -> "<38>1 2026-03-03T12:00:00Z host sshd 1 - - rest"
      const size_t host = line.find(' ', 16);
      if (host == std::string::npos) continue;
      f[1].push_back(absl::StrCat("<38>1 2026-03-03T", line.substr(7, 8), "Z ",
                                  line.substr(16, host - 16), " sshd 1 - - ",
                                  line.substr(host + 1)));
    }
    return f;
  }();
  return frames[v5424 ? 1 : 0];
}

// Before: the whole parse, one parser per format and thread, as HostOf had it.
void BM_HostByParse(benchmark::State& state) {
  const bool v5424 = state.range(0) != 0;
  const std::vector<std::string>& frames = Frames(v5424);
  LineParser parser(v5424 ? palisade::v1::LOG_FORMAT_SYSLOG5424 : palisade::v1::LOG_FORMAT_SYSLOG);
  ParsedLine parsed;
  const absl::Time now = absl::FromUnixSeconds(1'772'539'200 + 3600);
  size_t i = 0;
  for (auto _ : state) {
    std::string host;
    if (parser.Parse(frames[i], now, &parsed, YearRule::kAtMostADayAhead).ok()) {
      host = absl::AsciiStrToLower(parsed.host);
    }
    benchmark::DoNotOptimize(host);
    if (++i == frames.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HostByParse)->Arg(0)->Arg(1)->ArgName("v5424");

// After: the header alone.
void BM_HostByHeader(benchmark::State& state) {
  const bool v5424 = state.range(0) != 0;
  const std::vector<std::string>& frames = Frames(v5424);
  size_t i = 0;
  for (auto _ : state) {
    std::string host = absl::AsciiStrToLower(SyslogReceiver::HostnameOf(frames[i], v5424));
    benchmark::DoNotOptimize(host);
    if (++i == frames.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HostByHeader)->Arg(0)->Arg(1)->ArgName("v5424");

}  // namespace
}  // namespace palisade
