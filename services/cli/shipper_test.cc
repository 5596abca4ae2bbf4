#include "services/cli/shipper.h"

#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

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

}  // namespace
}  // namespace palisade
