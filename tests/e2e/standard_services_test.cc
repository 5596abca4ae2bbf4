// palisaded serves the standard gRPC health checking protocol (what Kubernetes' gRPC probes and
// grpc_health_probe call) and server reflection (what grpcurl and grpc_cli use), spoken here
// byte for byte through a generic stub, without generated code for either.
#include <string>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::palisade::testing::ByteBufferString;
using ::palisade::testing::Daemon;

grpc::ByteBuffer Bytes(const std::string& s) {
  grpc::Slice slice(s.data(), s.size());
  return grpc::ByteBuffer(&slice, 1);
}

// Waits for the next completion on `cq`; returns its ok bit.
bool Next(grpc::CompletionQueue& cq) {
  void* tag;
  bool ok = false;
  EXPECT_TRUE(cq.Next(&tag, &ok));
  return ok;
}

TEST(StandardServicesTest, HealthAndReflection) {
  absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start({"--rules_dir=rules"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;

  // grpc.health.v1.Health/Check with service "": HealthCheckResponse{status: SERVING} = 08 01.
  {
    grpc::ClientContext ctx;
    grpc::ByteBuffer response;
    grpc::Status status;
    auto call = stub.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check", Bytes(""), &cq);
    call->StartCall();
    call->Finish(&response, &status, nullptr);
    Next(cq);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(ByteBufferString(response), std::string("\x08\x01", 2));
  }

  // grpc.reflection.v1alpha.ServerReflection: list_services (field 7) lists palisade's services.
  {
    grpc::ClientContext ctx;
    auto call = stub.PrepareCall(
        &ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
    call->StartCall(nullptr);
    ASSERT_TRUE(Next(cq));
    call->Write(Bytes(std::string("\x3a\x00", 2)), nullptr);
    ASSERT_TRUE(Next(cq));
    grpc::ByteBuffer response;
    call->Read(&response, nullptr);
    ASSERT_TRUE(Next(cq));
    const std::string listed = ByteBufferString(response);
    for (const char* service : {"palisade.v1.Ingest", "palisade.v1.Decisions", "palisade.v1.Admin",
                                "palisade.v1.Feeds", "palisade.v1.Events", "grpc.health.v1.Health"}) {
      EXPECT_TRUE(absl::StrContains(listed, service)) << service;
    }
    call->WritesDone(nullptr);
    Next(cq);
    grpc::Status status;
    call->Finish(&status, nullptr);
    Next(cq);
  }
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
}

}  // namespace
}  // namespace palisade
