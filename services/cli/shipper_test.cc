#include "services/cli/shipper.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "services/inputs/line_reader.h"

namespace palisade {
namespace {

using palisade::v1::BatchAck;
using palisade::v1::LogBatch;

// An Ingest server in process that acks the batches it reads in the wrong order: the second
// first, then the first.
class OutOfOrderIngest final : public palisade::v1::Ingest::Service {
 public:
  grpc::Status Ship(grpc::ServerContext*,
                    grpc::ServerReaderWriter<BatchAck, LogBatch>* stream) override {
    std::vector<uint64_t> read;
    LogBatch batch;
    while (read.size() < 2 && stream->Read(&batch)) read.push_back(batch.sequence());
    for (auto it = read.rbegin(); it != read.rend(); ++it) {
      BatchAck ack;
      ack.set_sequence(*it);
      if (!stream->Write(ack)) break;
    }
    while (stream->Read(&batch)) {
    }
    return grpc::Status::OK;
  }
};

// Acks out of order are data loss (which batch a line was in is no longer known): Ship says so,
// kDataLoss and why, rather than the CANCELLED its cancelling the stream leaves behind.
TEST(ShipperTest, AcksOutOfOrderAreDataLossSaidAsSuch) {
  OutOfOrderIngest service;
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  std::unique_ptr<palisade::v1::Ingest::Stub> stub =
      palisade::v1::Ingest::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  std::vector<palisade::v1::LogRecord> records(4);
  for (size_t i = 0; i < records.size(); ++i) records[i].set_line("line " + std::to_string(i));
  ShipOptions options;
  options.batch_lines = 2;
  absl::StatusOr<ShipSummary> shipped = Ship(*stub, records, options);
  ASSERT_FALSE(shipped.ok());
  EXPECT_EQ(shipped.status().code(), absl::StatusCode::kDataLoss) << shipped.status();
  EXPECT_NE(shipped.status().message().find("out of order"), std::string::npos)
      << shipped.status();
  server->Shutdown();
}

// An Ingest server in process that acks every batch in order and keeps the batches' sources.
class SourceRecordingIngest final : public palisade::v1::Ingest::Service {
 public:
  grpc::Status Ship(grpc::ServerContext*,
                    grpc::ServerReaderWriter<BatchAck, LogBatch>* stream) override {
    LogBatch batch;
    while (stream->Read(&batch)) {
      {
        absl::MutexLock lock(&mu_);
        sources_.push_back(batch.source());
      }
      BatchAck ack;
      ack.set_sequence(batch.sequence());
      ack.set_accepted(static_cast<uint32_t>(batch.records_size()));
      if (!stream->Write(ack)) break;
    }
    return grpc::Status::OK;
  }
  std::vector<std::string> TakeSources() {
    absl::MutexLock lock(&mu_);
    return std::move(sources_);
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> sources_ ABSL_GUARDED_BY(mu_);
};

// The daemon keeps time per source: two hosts shipping /var/log/auth.log with the default source
// must not send the same one (the bare path, as it was), or one host's live lines age the
// other's backlog. The default is "<host>:<path>"; a source given is sent as given.
TEST(ShipperTest, TheDefaultSourceNamesTheHostAndThePath) {
  SourceRecordingIngest service;
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  std::unique_ptr<palisade::v1::Ingest::Stub> stub =
      palisade::v1::Ingest::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  std::vector<palisade::v1::LogRecord> records(3);
  for (auto& r : records) r.set_line("line");
  ShipOptions options;
  options.batch_lines = 2;
  options.host = "web-1";
  options.path = "/var/log/auth.log";
  ASSERT_TRUE(Ship(*stub, records, options).ok());
  EXPECT_EQ(service.TakeSources(), std::vector<std::string>(2, "web-1:/var/log/auth.log"));

  options.host.clear();  // this machine's name
  ASSERT_TRUE(Ship(*stub, records, options).ok());
  EXPECT_EQ(service.TakeSources(),
            std::vector<std::string>(2, DefaultShipperId() + ":/var/log/auth.log"));
  EXPECT_NE(DefaultShipperId(), "");

  options.host = "web-1";
  options.path = "auth.log";  // relative: made absolute, as --follow's paths are
  ASSERT_TRUE(Ship(*stub, records, options).ok());
  char cwd[4096];
  ASSERT_NE(::getcwd(cwd, sizeof(cwd)), nullptr);
  EXPECT_EQ(service.TakeSources(),
            std::vector<std::string>(2, absl::StrCat("web-1:", cwd, "/auth.log")));

  options.path.clear();  // not from a file: the host alone
  ASSERT_TRUE(Ship(*stub, records, options).ok());
  EXPECT_EQ(service.TakeSources(), std::vector<std::string>(2, "web-1"));

  options.path = "/var/log/auth.log";
  options.source = "auth";  // given: kept as given
  ASSERT_TRUE(Ship(*stub, records, options).ok());
  EXPECT_EQ(service.TakeSources(), std::vector<std::string>(2, "auth"));
  server->Shutdown();
}

// An Ingest server in process that keeps the records it reads and acks every batch.
class RecordingIngest final : public palisade::v1::Ingest::Service {
 public:
  grpc::Status Ship(grpc::ServerContext*,
                    grpc::ServerReaderWriter<BatchAck, LogBatch>* stream) override {
    LogBatch batch;
    while (stream->Read(&batch)) {
      {
        absl::MutexLock lock(&mu_);
        for (const auto& r : batch.records()) records_.push_back(r);
      }
      BatchAck ack;
      ack.set_sequence(batch.sequence());
      ack.set_accepted(static_cast<uint32_t>(batch.records_size()));
      if (!stream->Write(ack)) break;
    }
    return grpc::Status::OK;
  }
  std::vector<palisade::v1::LogRecord> records() {
    absl::MutexLock lock(&mu_);
    return records_;
  }

 private:
  absl::Mutex mu_;
  std::vector<palisade::v1::LogRecord> records_ ABSL_GUARDED_BY(mu_);
};

// `palisadectl ship` reads a file with a LineReader, which cuts a line at its cap: such a line
// is shipped as its first bytes flagged cut (LogRecord.cut), so that a server whose own cap is
// larger does not take the cut for the line's end (a pattern pinned there keyed a forged tail).
// A line of exactly the cap is whole.
TEST(ShipperTest, AFileLineCutAtTheReadersCapIsShippedFlaggedCut) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/cut.log";
  const std::string exact(100, 'e');
  const std::string over = std::string(100, 'o') + " ip=203.0.113.5";
  const std::string huge(20 * 1000, 'h');
  {
    std::ofstream out(path, std::ios::trunc);
    for (const std::string& l : {std::string("short"), over, exact, huge, std::string("after")}) {
      out << l << "\n";
    }
  }
  LineReaderOptions reader_options;
  reader_options.max_line_bytes = 100;
  absl::StatusOr<std::unique_ptr<LineReader>> reader = LineReader::Open(path, reader_options);
  ASSERT_TRUE(reader.ok()) << reader.status();
  RecordingIngest service;
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  std::unique_ptr<palisade::v1::Ingest::Stub> stub =
      palisade::v1::Ingest::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  ShipOptions options;
  options.batch_lines = 2;  // a cut line in each of the first two batches
  int seen = 0;
  RecordSource source = [&](LogBatch* batch, size_t max) {
    return AddLines(**reader, max, /*max_bytes=*/1 << 20, batch,
                    [&](absl::string_view, palisade::v1::LogRecord*) { ++seen; });
  };
  absl::StatusOr<ShipSummary> summary = Ship(*stub, source, options);
  ASSERT_TRUE(summary.ok()) << summary.status();
  server->Shutdown();
  EXPECT_EQ(seen, 5);
  std::vector<std::string> lines;
  std::vector<bool> cuts;
  for (const auto& r : service.records()) {
    lines.push_back(r.line());
    cuts.push_back(r.cut());
  }
  EXPECT_EQ(lines, (std::vector<std::string>{"short", over.substr(0, 100), exact,
                                             huge.substr(0, 100), "after"}));
  EXPECT_EQ(cuts, (std::vector<bool>{false, true, false, true, false}));
}

}  // namespace
}  // namespace palisade
