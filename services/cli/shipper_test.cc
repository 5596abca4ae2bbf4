#include "services/cli/shipper.h"

#include <memory>
#include <string>
#include <vector>

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

}  // namespace
}  // namespace palisade
