// Ingress caps on the real palisaded (issue 12, §4 and §5): whoever may ship logs or push a
// feed must not grow the daemon's memory or its metrics at will, and /metrics is not for anyone.
//  - a LogBatch of 8,000,000 empty records (16 MB on the wire, 1.4 GiB once parsed) is refused
//    before it is parsed, naming api.max_records_per_batch;
//  - streaming calls are capped per process (api.max_streams) and per connection;
//  - a message over api.max_message_bytes is refused and counted;
//  - LogBatch.source, a metric label, is bounded in length and number (overflow: "other");
//  - Feeds.Push to a feed that does not exist is refused on its first chunk, and a push past its
//    feed's max_bytes as soon as it passes it;
//  - a non-loopback metrics_listen without protection refuses to start; metrics_auth tokens.
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "palisade/v1/palisade.grpc.pb.h"
#include "services/server/auth.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::palisade::testing::Daemon;
using ::palisade::testing::HttpGet;
using ::palisade::testing::MetricValue;
using ::palisade::testing::ScrapeMetric;
using ::palisade::testing::WaitFor;
using ::testing::HasSubstr;

std::string Tmp(const std::string& name) {
  return std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string WriteConfig(const std::string& name, const std::string& extra) {
  const std::string path = Tmp(name);
  std::ofstream out(path);
  out << "rule_files: \"" << std::getenv("TEST_SRCDIR") << "/palisade/rules/sshd.textproto\"\n"
      << extra;
  return path;
}

std::unique_ptr<Daemon> StartDaemon(const std::string& name, const std::string& extra) {
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + WriteConfig(name, extra)});
  EXPECT_TRUE(daemon.ok()) << daemon.status();
  return daemon.ok() ? *std::move(daemon) : nullptr;
}

std::string Metrics(const Daemon& daemon) {
  absl::StatusOr<std::string> body = HttpGet(daemon.metrics_port(), "/metrics");
  return body.ok() ? *body : "";
}

// The most memory the process has held (VmHWM), in bytes.
int64_t PeakRss(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "VmHWM:")) {
      int64_t kb = 0;
      std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (parts.size() >= 2 && absl::SimpleAtoi(parts[1], &kb)) return kb * 1024;
    }
  }
  return -1;
}

// One Ingest.Ship call of raw bytes (a LogBatch built on the wire, so the test itself does not
// hold 8,000,000 parsed records); returns the call's status.
grpc::Status ShipRaw(const std::shared_ptr<grpc::Channel>& channel, const std::string& bytes) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      stub.PrepareCall(&ctx, "/palisade.v1.Ingest/Ship", &cq);
  void* tag = nullptr;
  bool ok = false;
  auto step = [&] { return cq.Next(&tag, &ok) && ok; };
  call->StartCall(reinterpret_cast<void*>(1));
  step();
  grpc::Slice slice(bytes);
  grpc::ByteBuffer buffer(&slice, 1);
  call->Write(buffer, reinterpret_cast<void*>(2));
  if (step()) {
    call->WritesDone(reinterpret_cast<void*>(3));
    step();
    grpc::ByteBuffer ack;
    call->Read(&ack, reinterpret_cast<void*>(4));
    step();
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step();
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

// A LogBatch on the wire: format syslog, `records` records of `line`.
std::string WireBatch(size_t records, const std::string& line) {
  palisade::v1::LogBatch head;
  head.set_format(palisade::v1::LOG_FORMAT_SYSLOG);
  head.set_source("bulk");
  std::string out = head.SerializeAsString();
  palisade::v1::LogBatch one;
  one.add_records()->set_line(line);
  const std::string record = one.SerializeAsString();
  out.reserve(out.size() + records * record.size());
  for (size_t i = 0; i < records; ++i) out += record;
  return out;
}

// Ships one batch with the typed stub; returns the status and, when acked, the ack.
grpc::Status Ship(palisade::v1::Ingest::Stub& stub, const palisade::v1::LogBatch& batch,
                  palisade::v1::BatchAck* ack = nullptr) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto stream = stub.Ship(&ctx);
  stream->Write(batch);
  stream->WritesDone();
  palisade::v1::BatchAck got;
  while (stream->Read(&got)) {
    if (ack != nullptr) *ack = got;
  }
  return stream->Finish();
}

palisade::v1::LogBatch Batch(size_t records, const std::string& source = "web-1") {
  palisade::v1::LogBatch batch;
  batch.set_format(palisade::v1::LOG_FORMAT_SYSLOG);
  batch.set_source(source);
  for (size_t i = 0; i < records; ++i) {
    batch.add_records()->set_line(
        "Mar  3 14:02:01 web-1 sshd[1]: Connection closed by 203.0.113.9");
  }
  return batch;
}

TEST(IngressLimitsTest, BatchOfEmptyRecordsIsRefusedBeforeItIsParsed) {
  std::unique_ptr<Daemon> daemon = StartDaemon("records.textproto", "");
  ASSERT_NE(daemon, nullptr);
  auto channel = grpc::CreateChannel(daemon->grpc_address(), grpc::InsecureChannelCredentials());
  auto stub = palisade::v1::Ingest::NewStub(channel);
  // The default cap is 10,000 records: that many are taken, one more is refused by name.
  palisade::v1::BatchAck ack;
  ASSERT_TRUE(Ship(*stub, Batch(10'000), &ack).ok());
  EXPECT_EQ(ack.accepted(), 10'000u);
  grpc::Status over = Ship(*stub, Batch(10'001));
  EXPECT_EQ(over.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(over.error_message(), HasSubstr("api.max_records_per_batch"));

  // 8,000,000 empty records: 16,000,000 bytes, under the 16 MiB message cap. Parsed, they cost
  // ~1.4 GiB; refused on the wire, about the message itself.
  const int64_t before = PeakRss(daemon->pid());
  ASSERT_GT(before, 0);
  grpc::Status bulk = ShipRaw(channel, WireBatch(8'000'000, ""));
  EXPECT_EQ(bulk.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << bulk.error_message();
  EXPECT_THAT(bulk.error_message(), HasSubstr("api.max_records_per_batch"));
  const int64_t grown = PeakRss(daemon->pid()) - before;
  EXPECT_LT(grown, 200 << 20) << "peak memory grew by " << grown << " bytes";
  std::cerr << "peak RSS growth for 8,000,000 empty records: " << grown << " bytes\n";

  const std::string metrics = Metrics(*daemon);
  EXPECT_EQ(MetricValue(metrics, "palisade_api_limit_refusals_total",
                        {"limit=\"max_records_per_batch\"", "method=\"Ingest.Ship\""}),
            2);
}

TEST(IngressLimitsTest, OversizedMessageIsRefusedAndCounted) {
  std::unique_ptr<Daemon> daemon =
      StartDaemon("size.textproto", "api { max_message_bytes: 1048576 }\n");
  ASSERT_NE(daemon, nullptr);
  auto channel = grpc::CreateChannel(daemon->grpc_address(), grpc::InsecureChannelCredentials());
  grpc::Status big = ShipRaw(channel, WireBatch(1, std::string(2 << 20, 'x')));
  EXPECT_EQ(big.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << big.error_message();
  // A message under the cap still goes through on a new call.
  auto stub = palisade::v1::Ingest::NewStub(channel);
  EXPECT_TRUE(Ship(*stub, Batch(10)).ok());
  EXPECT_TRUE(WaitFor(
      [&] {
        return ScrapeMetric(*daemon, "palisade_api_limit_refusals_total",
                            {"limit=\"max_message_bytes\"", "method=\"Ingest.Ship\""}) == 1;
      },
      absl::Seconds(60)))
      << Metrics(*daemon);
}

// Events.Watch calls that stay open until cancelled.
struct OpenWatch {
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReader<palisade::v1::Event>> reader;
};

std::unique_ptr<OpenWatch> Watch(palisade::v1::Events::Stub& stub) {
  auto w = std::make_unique<OpenWatch>();
  w->reader = stub.Watch(&w->ctx, {});
  return w;
}

TEST(IngressLimitsTest, StreamsPerProcessAreCapped) {
  std::unique_ptr<Daemon> daemon = StartDaemon("streams.textproto", "api { max_streams: 2 }\n");
  ASSERT_NE(daemon, nullptr);
  // Two connections, so the per-connection cap plays no part.
  grpc::ChannelArguments separate;
  separate.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto a = grpc::CreateCustomChannel(daemon->grpc_address(), grpc::InsecureChannelCredentials(),
                                     separate);
  auto b = grpc::CreateCustomChannel(daemon->grpc_address(), grpc::InsecureChannelCredentials(),
                                     separate);
  auto events_a = palisade::v1::Events::NewStub(a);
  auto events_b = palisade::v1::Events::NewStub(b);
  std::unique_ptr<OpenWatch> w1 = Watch(*events_a);
  std::unique_ptr<OpenWatch> w2 = Watch(*events_b);
  ASSERT_TRUE(WaitFor([&] { return ScrapeMetric(*daemon, "palisade_api_streams_open") == 2; },
                      absl::Seconds(60)));
  auto ingest = palisade::v1::Ingest::NewStub(b);
  grpc::Status third = Ship(*ingest, Batch(1));
  EXPECT_EQ(third.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(third.error_message(), HasSubstr("api.max_streams"));
  EXPECT_EQ(ScrapeMetric(*daemon, "palisade_api_limit_refusals_total",
                         {"limit=\"max_streams\"", "method=\"Ingest.Ship\""}),
            1);
  // One ends: its slot is free again.
  w1->ctx.TryCancel();
  w1->reader->Finish();
  ASSERT_TRUE(WaitFor([&] { return ScrapeMetric(*daemon, "palisade_api_streams_open") == 1; },
                      absl::Seconds(60)));
  EXPECT_TRUE(Ship(*ingest, Batch(1)).ok());
  w2->ctx.TryCancel();
  w2->reader->Finish();
}

TEST(IngressLimitsTest, StreamsPerConnectionAreCapped) {
  std::unique_ptr<Daemon> daemon =
      StartDaemon("per_connection.textproto", "api { max_streams_per_connection: 1 }\n");
  ASSERT_NE(daemon, nullptr);
  grpc::ChannelArguments separate;
  separate.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto a = grpc::CreateCustomChannel(daemon->grpc_address(), grpc::InsecureChannelCredentials(),
                                     separate);
  auto events = palisade::v1::Events::NewStub(a);
  std::unique_ptr<OpenWatch> w = Watch(*events);
  ASSERT_TRUE(WaitFor([&] { return ScrapeMetric(*daemon, "palisade_api_streams_open") == 1; },
                      absl::Seconds(60)));
  // The connection's one stream is taken: a second call on it waits for a slot (and times out;
  // a short deadline can only make this pass sooner, not wrongly).
  auto admin_a = palisade::v1::Admin::NewStub(a);
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    palisade::v1::StatusResponse r;
    EXPECT_NE(admin_a->Status(&ctx, {}, &r).error_code(), grpc::StatusCode::OK);
  }
  // Another connection is served.
  auto b = grpc::CreateCustomChannel(daemon->grpc_address(), grpc::InsecureChannelCredentials(),
                                     separate);
  auto admin_b = palisade::v1::Admin::NewStub(b);
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    palisade::v1::StatusResponse r;
    EXPECT_TRUE(admin_b->Status(&ctx, {}, &r).ok());
  }
  w->ctx.TryCancel();
  w->reader->Finish();
}

TEST(IngressLimitsTest, SourceLabelsAreBounded) {
  std::unique_ptr<Daemon> daemon = StartDaemon("sources.textproto", "");
  ASSERT_NE(daemon, nullptr);
  auto channel = grpc::CreateChannel(daemon->grpc_address(), grpc::InsecureChannelCredentials());
  auto stub = palisade::v1::Ingest::NewStub(channel);
  grpc::ClientContext ctx;
  auto stream = stub->Ship(&ctx);
  // 150 distinct sources of 1,000 bytes each, some with a newline.
  for (int i = 0; i < 150; ++i) {
    palisade::v1::LogBatch batch =
        Batch(1, absl::StrCat("host-", i, i % 2 ? "\n" : "", std::string(1000, 'a')));
    batch.set_sequence(i);
    ASSERT_TRUE(stream->Write(batch));
    palisade::v1::BatchAck ack;
    ASSERT_TRUE(stream->Read(&ack));
  }
  stream->WritesDone();
  ASSERT_TRUE(stream->Finish().ok());

  const std::string metrics = Metrics(*daemon);
  std::set<std::string> labels;
  std::istringstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    if (!absl::StartsWith(line, "palisade_ingest_lines_received_total{")) continue;
    const size_t at = line.find("source=\"");
    ASSERT_NE(at, std::string::npos) << line;
    const size_t end = line.find('"', at + 8);
    labels.insert(line.substr(at + 8, end - at - 8));
  }
  EXPECT_EQ(labels.size(), 101u);  // 100 kept, and "other"
  EXPECT_EQ(labels.count("other"), 1u);
  for (const std::string& l : labels) {
    EXPECT_LE(l.size(), 64u) << l;
    EXPECT_EQ(l.find('\n'), std::string::npos);
  }
  EXPECT_EQ(MetricValue(metrics, "palisade_ingest_lines_received_total", {"source=\"other\""}), 50);
  EXPECT_EQ(MetricValue(metrics, "palisade_ingest_source_label_overflow_total"), 50);
  EXPECT_LT(metrics.size(), 200u << 10);
}

// Writes `chunks` chunks of 1 MiB to Feeds.Push on `feed` (the last marked so); returns how many
// were taken before the server ended the call, and the call's status.
std::pair<int, grpc::Status> Push(palisade::v1::Feeds::Stub& stub, const std::string& feed,
                                  int chunks) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  palisade::v1::PushFeedResponse response;
  auto writer = stub.Push(&ctx, &response);
  int written = 0;
  for (int i = 0; i < chunks; ++i) {
    palisade::v1::FeedChunk chunk;
    if (i == 0) chunk.set_feed(feed);
    chunk.set_data(std::string(1 << 20, '#'));
    chunk.set_last(i + 1 == chunks);
    if (!writer->Write(chunk)) break;
    ++written;
  }
  writer->WritesDone();
  return {written, writer->Finish()};
}

TEST(IngressLimitsTest, PushIsCheckedOnItsHeaderAndCappedAsItStreams) {
  std::unique_ptr<Daemon> daemon = StartDaemon(
      "push.textproto", "feeds { name: \"small\" format: FEED_FORMAT_PLAIN max_bytes: 2097152 }\n");
  ASSERT_NE(daemon, nullptr);
  auto channel = grpc::CreateChannel(daemon->grpc_address(), grpc::InsecureChannelCredentials());
  auto stub = palisade::v1::Feeds::NewStub(channel);

  // A feed that does not exist: refused on the first chunk, while the client still writes.
  // Before, the whole push was buffered (here 200 MiB) and then refused.
  const int64_t before = PeakRss(daemon->pid());
  auto [written, status] = Push(*stub, "no-such-feed", 200);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("is not configured"));
  EXPECT_LT(written, 200);
  const int64_t grown = PeakRss(daemon->pid()) - before;
  EXPECT_LT(grown, 100 << 20) << "peak memory grew by " << grown << " bytes";

  // A configured feed: refused as soon as the push passes its max_bytes (2 MiB).
  auto [written_small, status_small] = Push(*stub, "small", 200);
  EXPECT_EQ(status_small.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status_small.error_message(), HasSubstr("the feed's max_bytes"));
  EXPECT_LT(written_small, 200);

  const std::string metrics = Metrics(*daemon);
  EXPECT_EQ(MetricValue(metrics, "palisade_api_limit_refusals_total",
                        {"limit=\"unknown_feed\"", "method=\"Feeds.Push\""}),
            1);
  EXPECT_EQ(MetricValue(metrics, "palisade_api_limit_refusals_total",
                        {"limit=\"feed_max_bytes\"", "method=\"Feeds.Push\""}),
            1);
}

constexpr char kScrapeToken[] = "scrape-token-0123456789abcdef0123456789";

TEST(IngressLimitsTest, MetricsOnANetworkNeedProtection) {
  // Non-loopback without TLS client certificates or tokens: refused, saying why.
  const std::string log = Tmp("metrics_open.log");
  const int status = std::system(
      absl::StrCat("services/server/palisaded --config=", WriteConfig("metrics_open.textproto", ""),
                   " --grpc_listen=127.0.0.1:0 --metrics_listen=0.0.0.0:0 --state_file=:memory: 2>",
                   log)
          .c_str());
  EXPECT_EQ(WEXITSTATUS(status), 2);
  EXPECT_THAT(ReadFile(log), HasSubstr("metrics_listen 0.0.0.0:0 is not a loopback address and "
                                       "/metrics is not protected"));

  // With a bearer token it starts on 0.0.0.0 and answers only to the token (the test reaches it
  // over loopback).
  const std::string config = WriteConfig(
      "metrics_auth.textproto", absl::StrCat("metrics_auth { token_sha256: \"",
                                             Authorizer::HashToken(kScrapeToken), "\" }\n"));
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + config, "--metrics_listen=0.0.0.0:0"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  const int port = (*daemon)->metrics_port();
  absl::StatusOr<std::string> anonymous = HttpGet(port, "/metrics");
  EXPECT_FALSE(anonymous.ok());
  EXPECT_THAT(std::string(anonymous.status().message()), HasSubstr("HTTP 401"));
  absl::StatusOr<std::string> wrong =
      HttpGet(port, "/metrics", {"Authorization: Bearer not-the-token"});
  EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("HTTP 401"));
  absl::StatusOr<std::string> scraped =
      HttpGet(port, "/metrics", {absl::StrCat("Authorization: Bearer ", kScrapeToken)});
  ASSERT_TRUE(scraped.ok()) << scraped.status();
  EXPECT_THAT(*scraped, HasSubstr("palisade_build_info"));
  EXPECT_EQ(MetricValue(*scraped, "palisade_metrics_scrapes_refused_total"), 2);
}

}  // namespace
}  // namespace palisade
