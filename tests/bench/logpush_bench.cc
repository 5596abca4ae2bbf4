// The Logpush HTTP destination's own cost (issue 14 §2): inflating a gzipped upload with the
// caps, cutting it into records, and a whole upload over loopback HTTP into a sink that takes
// every batch (the pipeline's cost is measured by engine_bench and file_input_bench).
//   bazel run -c opt //tests/bench:logpush_bench
#include <sys/stat.h>

#include <zlib.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "httplib.h"
#include "prometheus/registry.h"
#include "services/inputs/logpush_receiver.h"

namespace palisade {
namespace {

constexpr char kSecret[] = "Bearer bench-secret";

// `n` Logpush http_requests records (~430 bytes each, as the dataset's default fields are).
std::string Ndjson(int n) {
  std::string out;
  for (int i = 0; i < n; ++i) {
    absl::StrAppend(
        &out, R"({"ClientIP":"203.0.)", (i >> 8) & 255, ".", i & 255,
        R"(","ClientRequestHost":"shop.example.com","ClientRequestMethod":"GET",)",
        R"("ClientRequestPath":"/products/)", i,
        R"(","ClientRequestURI":"/products/)", i,
        R"(?ref=home","ClientRequestProtocol":"HTTP/2","ClientRequestReferer":)",
        R"("https://shop.example.com/","ClientRequestUserAgent":"Mozilla/5.0 (X11; Linux )",
        R"(x86_64) AppleWebKit/537.36","EdgeResponseStatus":200,"EdgeResponseBytes":5120,)",
        R"("OriginResponseStatus":200,"EdgeStartTimestamp":"2026-03-03T14:02:01Z",)",
        R"("RayID":"8a1b2c3d4e5f6a7b"})", "\n");
  }
  return out;
}

std::string Gzip(const std::string& data) {
  z_stream z{};
  deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, data.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

constexpr int kRecords = 10'000;

void BM_Inflate(benchmark::State& state) {
  const std::string text = Ndjson(kRecords);
  const std::string gz = Gzip(text);
  for (auto _ : state) {
    BoundedInflater inflater(64 << 20);
    std::string out;
    out.reserve(text.size());
    if (!inflater.Feed(gz, &out).ok() || !inflater.Finish().ok()) state.SkipWithError("inflate");
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * kRecords);
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(text.size()));
  state.counters["ratio"] = static_cast<double>(text.size()) / static_cast<double>(gz.size());
}
BENCHMARK(BM_Inflate)->Unit(benchmark::kMillisecond);

void BM_SplitLines(benchmark::State& state) {
  const std::string text = Ndjson(kRecords);
  for (auto _ : state) {
    palisade::v1::LogBatch batch;
    LogpushReceiver::SplitLines(text, 1'000'000, SIZE_MAX, &batch);
    benchmark::DoNotOptimize(batch.records_size());
  }
  state.SetItemsProcessed(state.iterations() * kRecords);
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(text.size()));
}
BENCHMARK(BM_SplitLines)->Unit(benchmark::kMillisecond);

// A whole upload of 10,000 gzipped records over loopback HTTP (one keep-alive connection),
// answered after a sink that takes every batch.
void BM_UploadOverLoopback(benchmark::State& state) {
  const char* tmp = std::getenv("TMPDIR");
  const std::string secret_file = absl::StrCat(tmp ? tmp : "/tmp", "/logpush-bench-secret");
  std::ofstream(secret_file) << kSecret;
  ::chmod(secret_file.c_str(), 0600);  // the receiver refuses a secret others may read
  palisade::v1::LogpushInput config;
  config.set_name("bench");
  config.set_listen("127.0.0.1:0");
  config.set_format("raw");  // the receiver's cost alone; the format is the pipeline's business
  config.set_secret_file(secret_file);
  prometheus::Registry registry;
  int64_t taken = 0;
  absl::StatusOr<std::unique_ptr<LogpushReceiver>> receiver = LogpushReceiver::Start(
      config, {},
      [&taken](const palisade::v1::LogBatch& batch) {
        taken += batch.records_size();
        return absl::OkStatus();
      },
      registry);
  if (!receiver.ok()) {
    state.SkipWithError(std::string(receiver.status().message()).c_str());
    return;
  }
  const std::string text = Ndjson(kRecords);
  const std::string gz = Gzip(text);
  httplib::Client client("127.0.0.1", (*receiver)->port());
  client.set_keep_alive(true);
  client.set_tcp_nodelay(true);  // else Nagle holds the body for the receiver's delayed ACK
  const httplib::Headers headers = {{"Authorization", kSecret}, {"Content-Encoding", "gzip"}};
  for (auto _ : state) {
    auto res = client.Post("/logpush", headers, gz, "application/x-ndjson");
    if (!res || res->status != 200) state.SkipWithError("upload refused");
  }
  state.SetItemsProcessed(taken);
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(text.size()));
  state.counters["sent_kb"] = static_cast<double>(gz.size()) / 1024.0;
}
BENCHMARK(BM_UploadOverLoopback)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace palisade

BENCHMARK_MAIN();
