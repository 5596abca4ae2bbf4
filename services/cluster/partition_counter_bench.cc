// Issue 17's figures for the engine split, through one real nats-server on loopback started
// here:
//
//   bazel run -c opt //services/cluster:partition_counter_bench -- [lines] [windows]
//
// 1. NATS messages per matched line: a generated sshd corpus of `lines` lines (every shipped
//    pack loaded) matched by one node (Engine::MatchLine) and routed (MatchRouter) to 16
//    partitions, then counted by one owner (PartitionCounter): the match stream's messages and
//    the windows bucket's writes (emitted positions, snapshots) per matched line, and the rates.
// 2. Take-over of one partition holding `windows` windows: the first owner counts `windows`
//    matches of distinct addresses; a second owner takes the partition over, from a snapshot
//    (restore, nothing to replay) and without one (the whole partition replayed up to the
//    emitted position). Time from Apply to the end of the rebuild.
// A figure, not a test: it varies with what else runs on the machine.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "rules/shipped_packs.h"
#include "services/cluster/match_router.h"
#include "services/cluster/match_stream.h"
#include "services/cluster/nats_server_for_tests.h"
#include "services/cluster/partition_counter.h"
#include "services/formats/line_parser.h"
#include "tests/corpus/corpus.h"

namespace palisade::cluster {
namespace {

std::shared_ptr<const RuleSet> EveryPack() {
  std::vector<LoadedPack> packs;
  for (const std::string& f : FilesIn("rules", ".textproto")) {
    absl::StatusOr<LoadedPack> pack = LoadRulePackFile(f);
    if (pack.ok()) packs.push_back(*std::move(pack));
  }
  absl::StatusOr<std::shared_ptr<const RuleSet>> set =
      RuleSet::Compile(packs, ShippedPackCidrSets());
  if (!set.ok() || packs.size() < 10) {
    std::fprintf(stderr, "packs: %zu loaded; %s\n", packs.size(), set.status().ToString().c_str());
    return nullptr;
  }
  return *set;
}

uint64_t Messages(NatsClient& nats, const std::string& stream) {
  absl::StatusOr<NatsClient::StreamState> s = nats.State(stream);
  return s.ok() ? s->messages : 0;
}
uint64_t LastSeq(NatsClient& nats, const std::string& stream) {
  absl::StatusOr<NatsClient::StreamState> s = nats.State(stream);
  return s.ok() ? s->last_sequence : 0;
}

std::unique_ptr<PartitionCounter> Owner(NatsClient& nats, const std::string& node,
                                        const std::string& stream, const std::string& prefix,
                                        const std::string& bucket, uint32_t partitions,
                                        std::shared_ptr<const RuleSet> rules,
                                        const std::string& version, bool snapshots,
                                        uint64_t* detections) {
  PartitionCounterOptions o;
  o.node_id = node;
  o.stream = stream;
  o.subject_prefix = prefix;
  o.partitions = partitions;
  o.bucket = bucket;
  o.rules = std::move(rules);
  o.rule_set_version = version;
  o.poll_wait = absl::Milliseconds(20);
  if (!snapshots) {
    o.snapshot_every = ~uint64_t{0};
    o.snapshot_interval = absl::InfiniteDuration();
  }
  auto c = PartitionCounter::Open(nats, o, [detections](const ClusterDetection&) {
    ++*detections;
    return absl::OkStatus();
  });
  if (!c.ok()) {
    std::fprintf(stderr, "%s\n", c.status().ToString().c_str());
    std::exit(1);
  }
  return *std::move(c);
}

Ownership::Change All(uint32_t partitions) {
  Ownership::Change c;
  for (uint32_t p = 0; p < partitions; ++p) c.gained.insert(p);
  return c;
}

// Polls until `counter` counted `n` (or a minute without progress).
void CountAll(PartitionCounter& counter, uint64_t n) {
  uint64_t last = 0;
  absl::Time progress = absl::Now();
  while (counter.stats().counted + counter.stats().refused_invalid < n) {
    absl::StatusOr<size_t> r = counter.Poll();
    if (!r.ok()) std::fprintf(stderr, "poll: %s\n", r.status().ToString().c_str());
    const uint64_t c = counter.stats().counted;
    if (c != last) {
      last = c;
      progress = absl::Now();
    } else if (absl::Now() - progress > absl::Minutes(1)) {
      std::fprintf(stderr, "stuck at %llu of %llu\n", static_cast<unsigned long long>(c),
                   static_cast<unsigned long long>(n));
      std::exit(1);
    }
  }
}

int Run(uint64_t lines, uint64_t windows) {
  auto server = NatsServerForTests::Start();
  if (!server.ok()) return std::fprintf(stderr, "%s\n", server.status().ToString().c_str()), 1;
  auto nats = NatsClient::Connect({.servers = {(*server)->url()}, .name = "bench"});
  if (!nats.ok()) return std::fprintf(stderr, "%s\n", nats.status().ToString().c_str()), 1;
  NatsClient& n = **nats;
  std::shared_ptr<const RuleSet> rules = EveryPack();
  if (rules == nullptr) return 1;
  const std::string version = RuleSetVersion(*rules);

  // 1. Messages per matched line.
  {
    if (!n.EnsureStream({.name = "MATCHES", .subjects = {"palisade.matches.*"}}).ok()) return 1;
    auto publisher = MatchPublisher::Start(n, {.node_id = "web-1", .partitions = 16});
    if (!publisher.ok()) return 1;
    MatchRouter router(**publisher, {.node_id = "web-1", .rule_set_version = version});
    Engine engine(rules, EngineOptions());
    CorpusOptions corpus;
    corpus.lines = lines;
    const std::vector<std::string> text = GenerateSshd(corpus).lines;
    LineParser parser(palisade::v1::LOG_FORMAT_SYSLOG);
    absl::Time reference = corpus.start;
    uint64_t matched = 0, matches = 0, local = 0;
    std::vector<EngineMatch> out;
    const absl::Time t0 = absl::Now();
    for (const std::string& line : text) {
      ParsedLine parsed;
      if (!parser.Parse(line, reference, &parsed, YearRule::kNearest).ok()) continue;
      if (parsed.time) reference = *parsed.time;
      out.clear();
      const LineResult r =
          engine.MatchLine(palisade::v1::LOG_FORMAT_SYSLOG, parsed, line, reference, &out);
      matched += r.matched;
      for (const EngineMatch& m : out) {
        ++matches;
        if (!router.Route(m).ok()) ++local;
      }
    }
    const absl::Duration match_time = absl::Now() - t0;
    (*publisher)->WaitUntilPublished(absl::Minutes(5));
    const absl::Duration publish_time = absl::Now() - t0;
    uint64_t detections = 0;
    auto owner = Owner(n, "owner", "MATCHES", "palisade.matches", "palisade_windows", 16, rules,
                       version, /*snapshots=*/true, &detections);
    owner->Apply(All(16)).IgnoreError();
    const absl::Time t1 = absl::Now();
    CountAll(*owner, router.routed());
    const absl::Duration count_time = absl::Now() - t1;
    owner->SnapshotAll().IgnoreError();
    const uint64_t stream_messages = Messages(n, "MATCHES");
    const uint64_t kv_writes = LastSeq(n, "KV_palisade_windows");
    std::printf(
        "1. sshd corpus, %llu lines, every pack: %llu matched lines, %llu matches (%llu kept "
        "local), %llu dropped\n"
        "   match stream: %llu messages = %.3f per matched line; windows bucket: %llu writes = "
        "%.4f per matched line (emitted positions, %llu snapshots)\n"
        "   match+route %.0f lines/s; published (acked) after %.2f s; owner counted %llu "
        "matches in %.2f s = %.0f matches/s, %llu detections\n",
        static_cast<unsigned long long>(text.size()), static_cast<unsigned long long>(matched),
        static_cast<unsigned long long>(matches), static_cast<unsigned long long>(local),
        static_cast<unsigned long long>(router.dropped()),
        static_cast<unsigned long long>(stream_messages),
        matched ? static_cast<double>(stream_messages) / matched : 0.0,
        static_cast<unsigned long long>(kv_writes),
        matched ? static_cast<double>(kv_writes) / matched : 0.0,
        static_cast<unsigned long long>(owner->stats().snapshots),
        text.size() / absl::ToDoubleSeconds(match_time), absl::ToDoubleSeconds(publish_time),
        static_cast<unsigned long long>(owner->stats().counted), absl::ToDoubleSeconds(count_time),
        owner->stats().counted / absl::ToDoubleSeconds(count_time),
        static_cast<unsigned long long>(detections));
  }

  // 2. Take-over of a partition holding `windows` windows.
  {
    if (!n.EnsureStream({.name = "TAKEOVER", .subjects = {"bench.takeover.*"}}).ok()) return 1;
    auto publisher = MatchPublisher::Start(
        n, {.node_id = "web-1", .subject_prefix = "bench.takeover", .partitions = 1});
    if (!publisher.ok()) return 1;
    MatchRouter router(**publisher, {.node_id = "web-1", .rule_set_version = version});
    std::string rule_id;
    for (const auto& r : rules->rules()) {
      if (r->proto.key_kind() == palisade::v1::TargetKind::TARGET_KIND_IP && r->count > 2 &&
          r->window >= absl::Minutes(10)) {
        rule_id = r->id();
        break;
      }
    }
    const absl::Time now = absl::Now();
    for (uint64_t i = 0; i < windows; ++i) {
      EngineMatch m;
      m.rule_id = rule_id;
      m.key = absl::StrFormat("11.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
      m.time = now;
      m.evidence = absl::StrCat("Mar  3 12:00:00 web sshd[1]: Failed password for root from ",
                                m.key, " port 22 ssh2");
      router.Route(m).IgnoreError();
    }
    (*publisher)->WaitUntilPublished(absl::Minutes(5));
    for (bool snapshots : {true, false}) {
      const std::string bucket = snapshots ? "bench_snap" : "bench_nosnap";
      uint64_t detections = 0;
      auto first = Owner(n, "n1", "TAKEOVER", "bench.takeover", bucket, 1, rules, version,
                         snapshots, &detections);
      first->Apply(All(1)).IgnoreError();
      CountAll(*first, windows);
      absl::Time t = absl::Now();
      if (snapshots) first->SnapshotAll().IgnoreError();
      const absl::Duration snapshot_time = absl::Now() - t;
      first->Poll().IgnoreError();  // writes the emitted position
      first.reset();
      auto second = Owner(n, "n2", "TAKEOVER", "bench.takeover", bucket, 1, rules, version,
                          snapshots, &detections);
      t = absl::Now();
      second->Apply(All(1)).IgnoreError();
      const absl::Duration apply_time = absl::Now() - t;
      while (second->partitions().empty() || second->partitions()[0].rebuilding) {
        second->Poll().IgnoreError();
      }
      const absl::Duration rebuild = absl::Now() - t;
      std::printf(
          "2. take-over of 1 partition, %llu windows, %s: snapshot %.3f s; Apply (restore) "
          "%.3f s; rebuilt after %.3f s (%llu matches counted again, %zu windows)\n",
          static_cast<unsigned long long>(windows),
          snapshots ? "from a snapshot" : "no snapshot (replay)",
          absl::ToDoubleSeconds(snapshot_time), absl::ToDoubleSeconds(apply_time),
          absl::ToDoubleSeconds(rebuild), static_cast<unsigned long long>(second->stats().replayed),
          second->partitions()[0].windows);
    }
  }
  return 0;
}

}  // namespace
}  // namespace palisade::cluster

int main(int argc, char** argv) {
  const uint64_t lines = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 200000;
  const uint64_t windows = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 100000;
  return palisade::cluster::Run(lines, windows);
}
