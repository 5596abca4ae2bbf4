// The cluster's match stream on this machine (issue 17, docs/PERFORMANCE.md "Cluster"): matches
// per second one node publishes (each acknowledged by the stream before the next: the order and
// de-duplication the design relies on) to a real nats-server on loopback, with file storage, R1;
// and the rate one partition owner reads them back. The server shares the two cores.
//   bazel run -c opt //tests/bench:cluster_bench -- [matches]
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/cluster/match_stream.h"
#include "services/cluster/nats_server_for_tests.h"

int main(int argc, char** argv) {
  using namespace palisade::cluster;
  const int n = argc > 1 ? std::atoi(argv[1]) : 20000;
  auto server = NatsServerForTests::Start();
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
    return 1;
  }
  auto nats = NatsClient::Connect({.servers = {(*server)->url()}});
  if (!nats.ok() ||
      !(*nats)->EnsureStream({.name = "MATCHES", .subjects = {"palisade.matches.*"}}).ok()) {
    std::fprintf(stderr, "cannot set up the stream\n");
    return 1;
  }
  // A match as a node would send it: rule, key, event time and one evidence line.
  const std::string evidence =
      "Mar  3 14:02:01 web-1 sshd[4242]: Failed password for root from 203.0.113.7 port 52144 "
      "ssh2";
  {
    auto publisher = MatchPublisher::Start(**nats, {.node_id = "bench", .partitions = 16});
    const absl::Time start = absl::Now();
    for (int i = 0; i < n; ++i) {
      const std::string key = absl::StrCat("203.0.", (i / 256) % 256, ".", i % 256);
      (*publisher)->Enqueue(key, absl::StrCat("sshd-password\t", key, "\t1772546521\t", evidence));
    }
    (*publisher)->WaitUntilPublished(absl::Minutes(10));
    const double s = absl::ToDoubleSeconds(absl::Now() - start);
    std::printf("publish: %d matches in %.2f s = %.0f matches/s (%llu acked, %llu dropped)\n", n, s,
                n / s, static_cast<unsigned long long>((*publisher)->published()),
                static_cast<unsigned long long>((*publisher)->dropped()));
  }
  std::vector<std::unique_ptr<PartitionConsumer>> consumers;
  for (uint32_t p = 0; p < 16; ++p) {
    auto c = PartitionConsumer::Open(**nats, "MATCHES", "palisade.matches", "bench", p);
    if (!c.ok()) return 1;
    consumers.push_back(*std::move(c));
  }
  const absl::Time start = absl::Now();
  size_t read = 0;
  // Round the partitions until every match is read (no final empty fetch timed in).
  while (read < static_cast<size_t>(n)) {
    for (auto& c : consumers) {
      auto got = c->Poll(1000, absl::Milliseconds(10),
                         [](uint64_t, absl::string_view) { return absl::OkStatus(); });
      if (!got.ok()) return 1;
      read += *got;
    }
  }
  const double s = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf("consume: %zu matches in %.2f s = %.0f matches/s (16 partitions, one owner)\n", read,
              s, read / s);
  return 0;
}
