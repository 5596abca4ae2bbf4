// File input figures (issue 14 §4), in process: FileInputs following a file into a Pipeline with
// the shipped sshd pack (no store, no edge), as palisaded runs them.
//   1. Throughput: a pre-written sshd corpus (--lines) read to its end: lines/s, and the CPU
//      it took (every thread, and the ordered one: the thread calling PollOnce).
//   2. Latency: a writer appends lines at --rate lines/s for --seconds, every 100th line a new
//      attacker's "Did not receive identification string" line (a decision at the third of them:
//      each attacker writes three, spread out); the time from writing an attacker's third line to
//      its decision being created, p50 / p99 / max.
//
//   bazel run -c opt //tests/bench:file_input_bench -- --lines=2000000 --rate=10000 --seconds=10
#include <sys/resource.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "prometheus/registry.h"
#include "services/common/clock.h"
#include "services/decisions/decision_table.h"
#include "services/inputs/file_inputs.h"
#include "services/pipeline/pipeline.h"
#include "tests/corpus/corpus.h"

ABSL_FLAG(int, lines, 2'000'000, "lines of the throughput corpus");
ABSL_FLAG(int, rate, 10'000, "lines per second written in the latency run");
ABSL_FLAG(int, seconds, 10, "length of the latency run");
ABSL_FLAG(int, poll_ms, 50, "inputs.poll_interval");
ABSL_FLAG(uint32_t, threads, 0,
          "FileInputsOptions::threads (1: read, match and decide on one; 0: the daemon's "
          "default, 2 on a multi-core machine)");

namespace palisade {
namespace {

std::shared_ptr<const RuleSet> SshdRules() {
  absl::StatusOr<LoadedPack> pack = LoadRulePackFile("rules/sshd.textproto");
  if (!pack.ok()) {
    std::fprintf(stderr, "%s\n", std::string(pack.status().message()).c_str());
    std::exit(1);
  }
  return *RuleSet::Compile({*pack});
}

// CPU seconds (user + system) so far of every thread of the process, or of this one.
double CpuSeconds(int who = RUSAGE_SELF) {
  struct rusage u;
  getrusage(who, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

palisade::v1::InputsConfig Inputs(const std::string& path) {
  palisade::v1::InputsConfig config;
  auto* f = config.add_files();
  f->set_name("bench");
  f->set_format("syslog");
  f->add_paths(path);
  return config;
}

int Run() {
  const std::string dir = absl::StrCat("/tmp/palisade-file-bench-", getpid());
  std::system(("mkdir -p " + dir).c_str());
  auto rules = SshdRules();

  {  // 1. Throughput.
    CorpusOptions options;
    options.lines = absl::GetFlag(FLAGS_lines);
    Corpus corpus = GenerateSshd(options);
    const std::string path = dir + "/throughput.log";
    {
      std::ofstream out(path);
      for (const auto& line : corpus.lines) out << line << '\n';
    }
    // The clock at the corpus' end: its decisions are live, as for a log being written now.
    SimulatedClock clock(options.start + options.step * static_cast<int64_t>(options.lines));
    prometheus::Registry registry;
    DecisionTable table(clock);
    PipelineOptions pipeline_options;
    pipeline_options.time_zone = absl::UTCTimeZone();
    Pipeline pipeline(rules, pipeline_options, clock, table, registry);
    FileInputsOptions input_options;
    input_options.threads = absl::GetFlag(FLAGS_threads);
    auto inputs = FileInputs::Create(Inputs(path), input_options, PipelineLineSink(pipeline),
                                     registry);
    const absl::Time start = absl::Now();
    const double cpu_start = CpuSeconds();
    const double reader_start = CpuSeconds(RUSAGE_THREAD);
    size_t total = 0;
    while (total < corpus.lines.size()) total += (*inputs)->PollOnce();
    const double secs = absl::ToDoubleSeconds(absl::Now() - start);
    const double cpu = CpuSeconds() - cpu_start;
    const double reader = CpuSeconds(RUSAGE_THREAD) - reader_start;
    std::printf("throughput: %zu lines in %.2f s: %.0f lines/s (threads=%u; %.2f s of CPU, "
                "%.2f of it on the thread calling PollOnce; %.2f us a line), %zu decisions\n",
                total, secs, total / secs, absl::GetFlag(FLAGS_threads), cpu, reader,
                cpu * 1e6 / total, table.List({}).size());
  }

  {  // 2. Latency.
    const std::string path = dir + "/latency.log";
    std::remove(path.c_str());
    RealClock clock;
    prometheus::Registry registry;
    DecisionTable table(clock);
    std::mutex mu;
    std::map<std::string, absl::Time> written;  // attacker -> its third line written
    std::vector<double> latencies_ms;
    table.AddListener([&](const DecisionUpdate& u) {
      if (u.change != DecisionChange::kCreated) return;
      const absl::Time now = absl::Now();
      std::lock_guard<std::mutex> lock(mu);
      auto it = written.find(u.decision.target().value());
      if (it != written.end()) latencies_ms.push_back(absl::ToDoubleMilliseconds(now - it->second));
    });
    PipelineOptions pipeline_options;
    pipeline_options.time_zone = absl::UTCTimeZone();
    Pipeline pipeline(rules, pipeline_options, clock, table, registry);
    FileInputsOptions input_options;
    input_options.poll_interval = absl::Milliseconds(absl::GetFlag(FLAGS_poll_ms));
    input_options.threads = absl::GetFlag(FLAGS_threads);
    auto inputs = FileInputs::Create(Inputs(path), input_options, PipelineLineSink(pipeline),
                                     registry);
    (*inputs)->Start();
    const int rate = absl::GetFlag(FLAGS_rate);
    const int total = rate * absl::GetFlag(FLAGS_seconds);
    FILE* out = std::fopen(path.c_str(), "a");
    const absl::Time start = absl::Now();
    int attackers = 0;
    for (int i = 0; i < total; ++i) {
      // Paced in steps of a millisecond's worth of lines.
      const absl::Time due = start + absl::Seconds(static_cast<double>(i) / rate);
      const absl::Time now = absl::Now();
      if (due > now) absl::SleepFor(due - now);
      const std::string stamp = absl::FormatTime("%b %e %H:%M:%S", absl::Now(), absl::UTCTimeZone());
      std::string ip;
      int nth = 0;
      if (i % 100 == 0) {
        // Attacker k writes its lines at k, k+1, k+2 (in hundreds of lines).
        const int slot = i / 100;
        nth = slot % 3;
        const int k = slot - nth;
        ip = absl::StrCat("10.", (k / 65536) % 256, ".", (k / 256) % 256, ".", k % 256);
        if (nth == 0) ++attackers;
        std::fprintf(out, "%s h sshd[1]: Did not receive identification string from %s port 22\n",
                     stamp.c_str(), ip.c_str());
      } else {
        std::fprintf(out, "%s h sshd[2]: Accepted publickey for deploy from 192.0.2.1 port 22 ssh2\n",
                     stamp.c_str());
      }
      std::fflush(out);
      if (nth == 2) {
        std::lock_guard<std::mutex> lock(mu);
        written[ip] = absl::Now();
      }
    }
    std::fclose(out);
    absl::SleepFor(absl::Seconds(1));
    (*inputs)->Stop();
    std::lock_guard<std::mutex> lock(mu);
    std::sort(latencies_ms.begin(), latencies_ms.end());
    auto at = [&](double q) {
      return latencies_ms.empty() ? 0.0 : latencies_ms[static_cast<size_t>(q * (latencies_ms.size() - 1))];
    };
    std::printf("latency at %d lines/s for %d s (poll %d ms): %zu decisions of %zu attackers; "
                "write -> decision p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
                rate, absl::GetFlag(FLAGS_seconds), absl::GetFlag(FLAGS_poll_ms),
                latencies_ms.size(), written.size(), at(0.5), at(0.99), at(1.0));
  }
  std::system(("rm -rf " + dir).c_str());
  return 0;
}

}  // namespace
}  // namespace palisade

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return palisade::Run();
}
