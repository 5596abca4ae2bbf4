// The time from a decision on the writer to its visibility on another node (issue 17's figure),
// and the writer's publishing rate, through one real nats-server on loopback started here.
//
//   bazel run -c opt //services/cluster:decision_log_bench -- [decisions] [replicas:1|3]
//
// The writer's DecisionTable makes `decisions` manual bans one after another (each published by
// the DecisionLogWriter and acknowledged by the stream); a DecisionReplica on its own connection
// applies them to a DecisionView. Latency: from AddManual's return to the replica's callback.
// A figure, not a test: it varies with what else runs on the machine.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "services/cluster/decision_log.h"
#include "services/cluster/nats_server_for_tests.h"
#include "services/common/clock.h"
#include "services/common/proto_time.h"

namespace palisade::cluster {
namespace {

int Run(int decisions, int replicas) {
  std::vector<std::unique_ptr<NatsServerForTests>> servers;
  if (replicas == 3) {
    auto c = NatsServerForTests::StartCluster();
    if (!c.ok()) return std::fprintf(stderr, "%s\n", c.status().ToString().c_str()), 1;
    servers = *std::move(c);
  } else {
    auto s = NatsServerForTests::Start();
    if (!s.ok()) return std::fprintf(stderr, "%s\n", s.status().ToString().c_str()), 1;
    servers.push_back(*std::move(s));
  }
  const std::vector<std::string> urls = UrlsOf(servers);
  auto writer_nats = NatsClient::Connect({.servers = urls});
  auto reader_nats = NatsClient::Connect({.servers = {urls.back()}});
  if (!writer_nats.ok() || !reader_nats.ok()) return std::fprintf(stderr, "connect\n"), 1;
  const absl::Status made = EnsureStreamOnceElected(**writer_nats, DecisionLogStreamSpec(replicas));
  if (!made.ok()) return std::fprintf(stderr, "%s\n", made.ToString().c_str()), 1;

  SimulatedClock clock;
  DecisionTable table(clock);
  auto log = DecisionLogWriter::Start(
      **writer_nats, {.node_id = "bench", .state = [&] { return table.List({}); }});
  if (!log.ok()) return std::fprintf(stderr, "%s\n", log.status().ToString().c_str()), 1;
  table.AddListener((*log)->Listener());

  absl::Mutex mu;
  absl::flat_hash_map<std::string, absl::Time> seen;
  auto replica = DecisionReplica::Start(**reader_nats, {.apply = [&](const ReplicatedChange& c) {
    const absl::Time now = absl::Now();
    absl::MutexLock lock(&mu);
    seen.emplace(c.decision.id(), now);
  }});
  if (!replica.ok()) return std::fprintf(stderr, "%s\n", replica.status().ToString().c_str()), 1;

  std::vector<std::pair<std::string, absl::Time>> made_at;
  const absl::Time start = absl::Now();
  for (int i = 0; i < decisions; ++i) {
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_value(
        absl::StrCat("10.", i / 65536, ".", i / 256 % 256, ".", i % 256));
    *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
    absl::StatusOr<palisade::v1::Decision> d = table.AddManual(req);
    if (!d.ok()) return std::fprintf(stderr, "%s\n", d.status().ToString().c_str()), 1;
    made_at.emplace_back(d->id(), absl::Now());
  }
  if (!(*log)->WaitUntilPublished(absl::Seconds(600))) return std::fprintf(stderr, "publish\n"), 1;
  const absl::Duration publish = absl::Now() - start;
  if (!(*replica)->WaitUntilApplied(decisions, absl::Seconds(600))) {
    return std::fprintf(stderr, "replica\n"), 1;
  }
  std::vector<double> ms;
  {
    absl::MutexLock lock(&mu);
    for (const auto& [id, t] : made_at) ms.push_back(absl::ToDoubleMilliseconds(seen[id] - t));
  }
  std::sort(ms.begin(), ms.end());
  auto pct = [&](double p) { return ms[std::min(ms.size() - 1, size_t(p * ms.size()))]; };
  std::printf(
      "decision log, R%d, burst of %d decisions: published (acked) %.0f/s; writer -> other "
      "node's view (queueing included) p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
      replicas, decisions, decisions / absl::ToDoubleSeconds(publish), pct(0.5), pct(0.99),
      ms.back());

  // Paced: one decision at a time, the next once the other node saw it (no queueing).
  constexpr int kPaced = 300;
  ms.clear();
  for (int i = 0; i < kPaced; ++i) {
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_value(absl::StrCat("172.16.", i / 256, ".", i % 256));
    *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
    const absl::Time t = absl::Now();
    absl::StatusOr<palisade::v1::Decision> d = table.AddManual(req);
    if (!d.ok()) return std::fprintf(stderr, "%s\n", d.status().ToString().c_str()), 1;
    absl::MutexLock lock(&mu);
    auto there = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu) { return seen.contains(d->id()); };
    if (!mu.AwaitWithTimeout(absl::Condition(&there), absl::Seconds(60))) {
      return std::fprintf(stderr, "paced: not seen\n"), 1;
    }
    ms.push_back(absl::ToDoubleMilliseconds(seen[d->id()] - t));
  }
  std::sort(ms.begin(), ms.end());
  std::printf(
      "decision log, R%d, %d decisions one at a time: writer -> other node's view p50 %.2f ms, "
      "p99 %.2f ms, max %.2f ms\n",
      replicas, kPaced, pct(0.5), pct(0.99), ms.back());
  return 0;
}

}  // namespace
}  // namespace palisade::cluster

int main(int argc, char** argv) {
  const int decisions = argc > 1 ? std::atoi(argv[1]) : 2000;
  const int replicas = argc > 2 ? std::atoi(argv[2]) : 1;
  if (decisions <= 0 || (replicas != 1 && replicas != 3)) {
    std::fprintf(stderr, "usage: decision_log_bench [decisions > 0] [replicas 1|3]\n");
    return 2;
  }
  return palisade::cluster::Run(decisions, replicas);
}
