// End-to-end load client: N concurrent Ingest streams ship a generated corpus to a running
// palisaded and report lines/s and batch-ack latency percentiles.
//   load_client --server=127.0.0.1:50051 --streams=2 --lines=500000 --kind=sshd
#include <algorithm>
#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "palisade/v1/palisade.grpc.pb.h"
#include "services/cli/shipper.h"
#include "tests/corpus/corpus.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "palisaded's gRPC address.");
ABSL_FLAG(int32_t, streams, 2, "Concurrent Ingest streams.");
ABSL_FLAG(int32_t, lines, 500000, "Lines per stream.");
ABSL_FLAG(int32_t, batch, 1000, "Lines per batch.");
ABSL_FLAG(int32_t, in_flight, 8, "Unacknowledged batches per stream.");
ABSL_FLAG(std::string, kind, "sshd", "Corpus: sshd or nginx.");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int streams = std::max(1, absl::GetFlag(FLAGS_streams));
  const bool nginx = absl::GetFlag(FLAGS_kind) == "nginx";
  const size_t batch_lines = static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_batch)));
  // Each stream's batches are built before the clock starts, and handed to the shipper whole
  // (swapped in): the client's own share of the two cores is then the message's serialization,
  // gRPC and freeing it (it copied every record into its batch: ~1,200 of the ~2,100
  // instructions a line it spent while shipping, callgrind).
  std::vector<std::vector<palisade::v1::LogBatch>> batches(streams);
  for (int s = 0; s < streams; ++s) {
    palisade::CorpusOptions options;
    options.lines = absl::GetFlag(FLAGS_lines);
    options.seed = 100 + s;
    options.step = absl::Microseconds(100);
    options.start = absl::Now() - options.step * static_cast<int64_t>(options.lines);
    palisade::Corpus c = nginx ? palisade::GenerateNginx(options) : palisade::GenerateSshd(options);
    for (size_t i = 0; i < c.lines.size(); ++i) {
      if (i % batch_lines == 0) {
        batches[s].emplace_back();
        batches[s].back().mutable_records()->Reserve(
            static_cast<int>(std::min(batch_lines, c.lines.size() - i)));
      }
      batches[s].back().add_records()->set_line(std::move(c.lines[i]));
    }
  }
  std::vector<absl::StatusOr<palisade::ShipSummary>> results(streams);
  std::vector<std::thread> threads;
  const absl::Time start = absl::Now();
  for (int s = 0; s < streams; ++s) {
    threads.emplace_back([&, s] {
      auto stub = palisade::v1::Ingest::NewStub(grpc::CreateChannel(
          absl::GetFlag(FLAGS_server), grpc::InsecureChannelCredentials()));
      palisade::ShipOptions o;
      o.format = nginx ? palisade::v1::LOG_FORMAT_COMBINED : palisade::v1::LOG_FORMAT_SYSLOG;
      o.source = absl::StrCat("load-", s);
      o.batch_lines = static_cast<uint32_t>(batch_lines);
      o.max_in_flight = absl::GetFlag(FLAGS_in_flight);
      size_t next = 0;
      results[s] = palisade::Ship(
          *stub,
          [&, s](palisade::v1::LogBatch* batch, size_t) -> absl::StatusOr<size_t> {
            if (next == batches[s].size()) return 0;
            batch->Swap(&batches[s][next++]);
            return static_cast<size_t>(batch->records_size());
          },
          o);
    });
  }
  for (auto& t : threads) t.join();
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  std::vector<double> ms;
  uint64_t lines = 0;
  for (auto& r : results) {
    if (!r.ok()) {
      std::fprintf(stderr, "load_client: %s\n", r.status().ToString().c_str());
      return 1;
    }
    lines += r->accepted + r->malformed;
    for (absl::Duration d : r->ack_latencies) ms.push_back(absl::ToDoubleMilliseconds(d));
  }
  std::sort(ms.begin(), ms.end());
  auto pct = [&](double p) { return ms[std::min(ms.size() - 1, size_t(p * ms.size()))]; };
  std::printf("%d streams, %llu lines in %.2f s: %.0f lines/s; batch ack p50 %.2f ms, p99 %.2f ms\n",
              streams, static_cast<unsigned long long>(lines), secs, lines / secs, pct(0.5),
              pct(0.99));
  return 0;
}
