// Journal input figures (issue 14 §4), in process: JournalInput reading a real journal directory
// (written beforehand by systemd-journal-remote, not timed) as palisaded runs it. Every attacker
// (5,000 addresses) writes one entry in 5,000.
//   1. Read only: --entries sshd entries read and rebuilt into syslog lines, sink that drops
//      them: entries/s.
//   2. Into the pipeline: the same entries through Pipeline with the shipped sshd pack.
//   3. Latency: a systemd-journal-remote process fed through a pipe at --rate entries/s for
//      --seconds; the time from an entry written to the pipe to its batch reaching the sink
//      (journal-remote's parsing and writing included), p50 / p99 / max.
//
//   bazel run -c opt //tests/bench:journal_input_bench -- --entries=500000 --rate=2000 --seconds=10
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "prometheus/registry.h"
#include "services/common/clock.h"
#include "services/decisions/decision_table.h"
#include "services/inputs/journal_input.h"
#include "services/pipeline/pipeline.h"

ABSL_FLAG(int, entries, 500'000, "entries of the throughput journal");
ABSL_FLAG(int, rate, 2'000, "entries per second written in the latency run");
ABSL_FLAG(int, seconds, 10, "length of the latency run");
ABSL_FLAG(int, wait_ms, 50, "inputs.poll_interval (the longest sd_journal_wait)");

namespace palisade {
namespace {

constexpr char kRemote[] = "/lib/systemd/systemd-journal-remote";

std::string Entry(int64_t usec, int i) {
  return absl::StrCat("__REALTIME_TIMESTAMP=", usec, "\n_PID=", 1000 + i % 30000,
                      "\nSYSLOG_IDENTIFIER=sshd\n_SYSTEMD_UNIT=ssh.service\n_HOSTNAME=web-1\n"
                      "MESSAGE=Failed password for invalid user u", i, " from 198.18.",
                      (i % 5000) / 250, ".", i % 250, " port 22 ssh2\n\n");
}

// A directory, not a file: journal-remote rotates a full file to another name in it.
palisade::v1::JournalInput Config(const std::string& directory) {
  palisade::v1::JournalInput c;
  c.set_name("bench");
  c.set_directory(directory);
  return c;
}

std::shared_ptr<const RuleSet> SshdRules() {
  absl::StatusOr<LoadedPack> pack = LoadRulePackFile("rules/sshd.textproto");
  if (!pack.ok()) {
    std::fprintf(stderr, "%s\n", std::string(pack.status().message()).c_str());
    std::exit(1);
  }
  return *RuleSet::Compile({*pack});
}

int Run() {
  const std::string dir = absl::StrCat("/tmp/palisade-journal-bench-", getpid());
  std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str());
  const int n = absl::GetFlag(FLAGS_entries);
  const absl::Time t0 = absl::Now() - absl::Minutes(30);
  const std::string throughput = dir + "/throughput";
  std::system(("mkdir -p " + throughput).c_str());
  const std::string file = throughput + "/throughput.journal";
  {
    const std::string in = dir + "/entries.export";
    {
      std::ofstream out(in);
      for (int i = 0; i < n; ++i) out << Entry(absl::ToUnixMicros(t0) + i, i);
    }
    const absl::Time w = absl::Now();
    if (std::system(absl::StrCat(kRemote, " --output=", file, " - < ", in, " 2>/dev/null").c_str()) !=
        0) {
      std::fprintf(stderr, "systemd-journal-remote failed\n");
      return 1;
    }
    std::printf("setup: %d entries written by systemd-journal-remote in %.2f s (not ours)\n", n,
                absl::ToDoubleSeconds(absl::Now() - w));
  }

  {  // 1. Read only.
    prometheus::Registry registry;
    auto input = JournalInput::Create(
        0, Config(throughput), {}, [](const palisade::v1::LogBatch&) { return absl::OkStatus(); },
        registry);
    if (!input.ok()) {
      std::fprintf(stderr, "%s\n", std::string(input.status().message()).c_str());
      return 1;
    }
    const absl::Time start = absl::Now();
    size_t total = 0;
    for (size_t got; (got = (*input)->PollOnce()) > 0;) total += got;
    const double secs = absl::ToDoubleSeconds(absl::Now() - start);
    std::printf("read only: %zu entries in %.2f s: %.0f entries/s\n", total, secs, total / secs);
  }

  {  // 2. Into the pipeline.
    SimulatedClock clock(t0 + absl::Seconds(1));
    prometheus::Registry registry;
    DecisionTable table(clock);
    PipelineOptions pipeline_options;
    pipeline_options.time_zone = absl::UTCTimeZone();
    Pipeline pipeline(SshdRules(), pipeline_options, clock, table, registry);
    auto input = JournalInput::Create(
        0, Config(throughput), {},
        [&](const palisade::v1::LogBatch& b) { return pipeline.ProcessBatch(b).status(); },
        registry);
    const absl::Time start = absl::Now();
    size_t total = 0;
    for (size_t got; (got = (*input)->PollOnce()) > 0;) total += got;
    const double secs = absl::ToDoubleSeconds(absl::Now() - start);
    std::printf("into the pipeline (sshd pack): %zu entries in %.2f s: %.0f entries/s, "
                "%zu decisions\n",
                total, secs, total / secs, table.List({}).size());
  }

  {  // 2b. The pipeline alone on the same lines (what the journal adds is 2 less this).
    SimulatedClock clock(t0 + absl::Seconds(1));
    prometheus::Registry registry;
    DecisionTable table(clock);
    PipelineOptions pipeline_options;
    pipeline_options.time_zone = absl::UTCTimeZone();
    Pipeline pipeline(SshdRules(), pipeline_options, clock, table, registry);
    std::vector<palisade::v1::LogBatch> batches;
    for (int i = 0; i < n; ++i) {
      if (i % 1000 == 0) {
        batches.emplace_back();
        batches.back().set_source("bench");
        batches.back().set_format(palisade::v1::LOG_FORMAT_SYSLOG);
      }
      const absl::Time when = absl::FromUnixMicros(absl::ToUnixMicros(t0) + i);
      const std::string line = Entry(0, i);
      const size_t m = line.find("MESSAGE=") + 8;
      auto* r = batches.back().add_records();
      r->set_line(JournalInput::BuildLine(when, "web-1", "sshd", std::to_string(1000 + i % 30000),
                                          line.substr(m, line.size() - m - 2), 16384));
      r->mutable_event_time()->set_seconds(absl::ToUnixSeconds(when));
      r->mutable_event_time()->set_nanos(static_cast<int32_t>(absl::ToUnixMicros(when) % 1000000) *
                                         1000);
    }
    const absl::Time start = absl::Now();
    for (const auto& b : batches) (void)pipeline.ProcessBatch(b);
    const double secs = absl::ToDoubleSeconds(absl::Now() - start);
    std::printf("the pipeline alone on the same lines: %d in %.2f s: %.0f lines/s, %zu decisions\n",
                n, secs, n / secs, table.List({}).size());
  }

  {  // 3. Latency.
    const std::string live_dir = dir + "/live";
    std::system(("mkdir -p " + live_dir).c_str());
    const std::string live = live_dir + "/live.journal";
    FILE* remote =
        ::popen(absl::StrCat(kRemote, " --output=", live, " - 2>/dev/null").c_str(), "w");
    // One entry first, so the file exists when the input opens it.
    std::vector<absl::Time> written;
    std::mutex mu;
    std::vector<double> latencies_ms;
    written.push_back(absl::Now());
    std::fputs(Entry(absl::ToUnixMicros(absl::Now()), 0).c_str(), remote);
    std::fflush(remote);
    while (::access(live.c_str(), F_OK) != 0) absl::SleepFor(absl::Milliseconds(5));
    prometheus::Registry registry;
    JournalInputOptions options;
    options.wait_interval = absl::Milliseconds(absl::GetFlag(FLAGS_wait_ms));
    size_t seen = 0;
    auto input = JournalInput::Create(
        0, Config(live_dir), options,
        [&](const palisade::v1::LogBatch& b) {
          const absl::Time now = absl::Now();
          std::lock_guard<std::mutex> lock(mu);
          for (const auto& r : b.records()) {
            // "... invalid user u<i> from ...": i is the entry's index.
            const std::string& line = r.line();
            const size_t at = line.find(" user u");
            int i = 0;
            if (at != std::string::npos &&
                absl::SimpleAtoi(line.substr(at + 7, line.find(' ', at + 7) - at - 7), &i) &&
                i >= 0 && static_cast<size_t>(i) < written.size()) {
              latencies_ms.push_back(absl::ToDoubleMilliseconds(now - written[i]));
            }
            ++seen;
          }
          return absl::OkStatus();
        },
        registry);
    (*input)->Start();
    const int rate = absl::GetFlag(FLAGS_rate);
    const int total = rate * absl::GetFlag(FLAGS_seconds);
    const absl::Time start = absl::Now();
    for (int i = 1; i < total; ++i) {
      const absl::Time due = start + absl::Seconds(1) * i / rate;
      const absl::Time now = absl::Now();
      if (due > now) absl::SleepFor(due - now);
      {
        std::lock_guard<std::mutex> lock(mu);
        written.push_back(absl::Now());
      }
      std::fputs(Entry(absl::ToUnixMicros(absl::Now()), i).c_str(), remote);
      std::fflush(remote);
    }
    ::pclose(remote);
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (seen >= static_cast<size_t>(total) || absl::Now() > deadline) break;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    (*input)->Stop();
    std::sort(latencies_ms.begin(), latencies_ms.end());
    if (latencies_ms.empty()) {
      std::printf("latency: nothing delivered\n");
      return 1;
    }
    auto at = [&](double q) {
      return latencies_ms[std::min(latencies_ms.size() - 1,
                                   static_cast<size_t>(q * latencies_ms.size()))];
    };
    std::printf("latency at %d entries/s, wait %d ms (%zu of %d delivered): p50 %.1f ms, "
                "p99 %.1f ms, max %.1f ms\n",
                rate, absl::GetFlag(FLAGS_wait_ms), latencies_ms.size(), total, at(0.5), at(0.99),
                latencies_ms.back());
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
