#include "services/cluster/command_channel.h"

#include <nats/nats.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "palisade/v1/palisade.pb.h"
#include "services/cluster/nats_server_for_tests.h"
#include "services/common/clock.h"
#include "services/common/proto_time.h"
#include "services/decisions/decision_table.h"

namespace palisade::cluster {
namespace {

using ::testing::HasSubstr;

// A natsConnection of its own (each node has one).
struct Connection {
  explicit Connection(const std::string& url) {
    EXPECT_EQ(natsConnection_ConnectTo(&nc, url.c_str()), NATS_OK);
  }
  ~Connection() { natsConnection_Destroy(nc); }
  natsConnection* nc = nullptr;
};

// The writer's side: commands carried out on its DecisionTable.
class Writer {
 public:
  Writer() : table_(clock_) {}
  std::unique_ptr<CommandServer> Serve(natsConnection* nc) {
    auto s =
        CommandServer::Start(nc, {.handle = [this](absl::string_view kind, absl::string_view body) {
                               return Handle(kind, body);
                             }});
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }
  DecisionTable& table() { return table_; }

 private:
  absl::StatusOr<std::string> Handle(absl::string_view kind, absl::string_view body) {
    if (kind == "decisions.add") {
      palisade::v1::AddDecisionRequest req;
      if (!req.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
        return absl::InvalidArgumentError("decisions.add: not an AddDecisionRequest");
      }
      absl::StatusOr<palisade::v1::Decision> d = table_.AddManual(req);
      if (!d.ok()) return d.status();
      return d->SerializeAsString();
    }
    if (kind == "decisions.withdraw") {
      absl::StatusOr<palisade::v1::Decision> d = table_.Withdraw(body);
      if (!d.ok()) return d.status();
      return d->SerializeAsString();
    }
    return absl::UnimplementedError(absl::StrCat("unknown command ", kind));
  }
  SimulatedClock clock_;
  DecisionTable table_;
};

std::string AddRequest(const std::string& ip) {
  palisade::v1::AddDecisionRequest req;
  req.mutable_target()->set_value(ip);
  *req.mutable_duration() = ToProtoDuration(absl::Hours(1));
  req.set_reason("operator");
  return req.SerializeAsString();
}

class CommandChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = NatsServerForTests::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }
  std::unique_ptr<NatsServerForTests> server_;
};

// A node that is not the writer sends a manual ban and an unban; the writer's table carries them
// out and the node gets the decision back; the writer's errors come back with their code.
TEST_F(CommandChannelTest, ANodeThatIsNotTheWriterForwardsToIt) {
  Connection writer_conn(server_->url()), node_conn(server_->url());
  Writer writer;
  auto serving = writer.Serve(writer_conn.nc);
  ASSERT_TRUE(serving);
  CommandClient client(node_conn.nc, {.node_id = "web-2"});
  absl::StatusOr<std::string> r =
      client.Call("decisions.add", AddRequest("203.0.113.7"), absl::Seconds(60));
  ASSERT_TRUE(r.ok()) << r.status();
  palisade::v1::Decision d;
  ASSERT_TRUE(d.ParseFromString(*r));
  EXPECT_EQ(d.target().value(), "203.0.113.7");
  EXPECT_EQ(writer.table().active_count(), 1u);
  r = client.Call("decisions.withdraw", d.id(), absl::Seconds(60));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(writer.table().active_count(), 0u);
  r = client.Call("decisions.withdraw", "no-such-id", absl::Seconds(60));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  r = client.Call("decisions.add", AddRequest("not an address"), absl::Seconds(60));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(serving->handled(), 4u);
}

// A caller that retries after a lost reply (the same id) gets the first reply; the writer does
// not carry the command out twice.
TEST_F(CommandChannelTest, ARetriedCommandIsCarriedOutOnce) {
  Connection writer_conn(server_->url()), node_conn(server_->url());
  Writer writer;
  auto serving = writer.Serve(writer_conn.nc);
  ASSERT_TRUE(serving);
  CommandClient client(node_conn.nc, {.node_id = "web-2"});
  auto first =
      client.CallWithId("web-2:1:7", "decisions.add", AddRequest("203.0.113.8"), absl::Seconds(60));
  auto again =
      client.CallWithId("web-2:1:7", "decisions.add", AddRequest("203.0.113.8"), absl::Seconds(60));
  ASSERT_TRUE(first.ok() && again.ok());
  EXPECT_EQ(*first, *again);
  EXPECT_EQ(serving->handled(), 1u);
  EXPECT_EQ(serving->repeated(), 1u);
  palisade::v1::Decision d;
  ASSERT_TRUE(d.ParseFromString(*first));
  EXPECT_EQ(d.extensions(), 0u);  // a second AddManual would have extended it
}

// A command the writer could not complete yet (kUnavailable: say its decision log did not take
// the change) is not answered from memory when retried: the retry is carried out again.
TEST_F(CommandChannelTest, AnUnavailableReplyIsNotRememberedForTheRetry) {
  Connection writer_conn(server_->url()), node_conn(server_->url());
  int calls = 0;
  auto serving = CommandServer::Start(
      writer_conn.nc,
      {.handle = [&calls](absl::string_view, absl::string_view) -> absl::StatusOr<std::string> {
        if (++calls == 1) return absl::UnavailableError("the decision log did not take it");
        return std::string("taken");
      }});
  ASSERT_TRUE(serving.ok()) << serving.status();
  CommandClient client(node_conn.nc, {.node_id = "web-2"});
  auto first = client.CallWithId("web-2:1:9", "detections.apply", "d", absl::Seconds(60));
  EXPECT_EQ(first.status().code(), absl::StatusCode::kUnavailable) << first.status();
  auto again = client.CallWithId("web-2:1:9", "detections.apply", "d", absl::Seconds(60));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, "taken");
  EXPECT_EQ(calls, 2);
  // Once completed, it is remembered as before.
  auto third = client.CallWithId("web-2:1:9", "detections.apply", "d", absl::Seconds(60));
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(calls, 2);
  EXPECT_EQ((*serving)->repeated(), 1u);
}

// No writer (the lease between holders): a command waits, retrying, and is carried out once a
// writer serves; with none within the deadline it fails, saying so. A writer that loses the
// lease stops answering and the next one takes the commands.
TEST_F(CommandChannelTest, CommandsWaitForAWriterAndFollowTheLease) {
  Connection a_conn(server_->url()), b_conn(server_->url()), node_conn(server_->url());
  CommandClient client(node_conn.nc, {.node_id = "web-3",
                                      .attempt_timeout = absl::Milliseconds(200),
                                      .retry = absl::Milliseconds(20)});
  absl::StatusOr<std::string> none =
      client.Call("decisions.add", AddRequest("203.0.113.9"), absl::Milliseconds(300));
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(none.status().message(), HasSubstr("no edge writer answered"));

  Writer a, b;
  absl::StatusOr<std::string> waited;
  const uint64_t before = client.attempts();
  std::thread caller([&] {
    waited = client.Call("decisions.add", AddRequest("203.0.113.10"), absl::Seconds(60));
  });
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (client.attempts() < before + 3 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_GE(client.attempts(), before + 3);  // it was retrying while no writer served
  auto serving_a = a.Serve(a_conn.nc);
  caller.join();
  ASSERT_TRUE(waited.ok()) << waited.status();
  EXPECT_EQ(a.table().active_count(), 1u);

  serving_a.reset();  // a loses the lease
  auto serving_b = b.Serve(b_conn.nc);
  ASSERT_TRUE(serving_b);
  ASSERT_TRUE(client.Call("decisions.add", AddRequest("203.0.113.11"), absl::Seconds(60)).ok());
  EXPECT_EQ(a.table().active_count(), 1u);
  EXPECT_EQ(b.table().active_count(), 1u);
}

// A writer that steps down because NATS is away stops serving at once: its node's thread (which
// ticks the leases and counts the partitions) is not held for the drain's 30 s, which cannot
// complete without a server.
TEST_F(CommandChannelTest, StoppingWhileNatsIsAwayDoesNotWaitForADrain) {
  Connection conn(server_->url());
  Writer a;
  auto serving = a.Serve(conn.nc);
  ASSERT_NE(serving, nullptr);
  server_->Kill();
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (natsConnection_Status(conn.nc) == NATS_CONN_STATUS_CONNECTED && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_NE(natsConnection_Status(conn.nc), NATS_CONN_STATUS_CONNECTED);
  const absl::Time stopping = absl::Now();
  serving.reset();
  // 30 s before the fix; the bound has room for a busy machine and still tells the two apart.
  EXPECT_LT(absl::Now() - stopping, absl::Seconds(25));
}

// A command larger than NATS' payload limit can never be sent: it fails at once, for good
// (kInvalidArgument), not after its whole deadline of attempts as if no writer answered
// (kUnavailable), which its sender (a partition owner) would offer again for ever.
TEST_F(CommandChannelTest, ACommandOverNatsPayloadLimitFailsAtOnceForGood) {
  Connection writer_conn(server_->url()), node_conn(server_->url());
  Writer a;
  auto serving = a.Serve(writer_conn.nc);
  ASSERT_NE(serving, nullptr);
  CommandClient client(node_conn.nc, {.node_id = "web-3"});
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> r =
      client.Call("detections.apply", std::string(2u << 20, 'x'), absl::Seconds(20));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_EQ(client.attempts(), 1u);
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));  // not the 20 s of a retried call
}

// What a sender writes is not trusted: a request not of the form, or over the size bound, is
// refused with a reason and counted; the handler never sees it.
TEST_F(CommandChannelTest, MalformedAndOversizedRequestsAreRefused) {
  Connection writer_conn(server_->url()), node_conn(server_->url());
  int calls = 0;
  auto serving = CommandServer::Start(
      writer_conn.nc,
      {.handle = [&](absl::string_view, absl::string_view) -> absl::StatusOr<std::string> {
         ++calls;
         return std::string("done");
       },
       .max_request_bytes = 1024});
  ASSERT_TRUE(serving.ok()) << serving.status();
  auto raw = [&](const std::string& request) {
    natsMsg* reply = nullptr;
    EXPECT_EQ(natsConnection_Request(&reply, node_conn.nc, kCommandSubject, request.data(),
                                     static_cast<int>(request.size()), 60'000),
              NATS_OK);
    std::string out =
        reply ? std::string(natsMsg_GetData(reply), natsMsg_GetDataLength(reply)) : "";
    natsMsg_Destroy(reply);
    return out;
  };
  EXPECT_THAT(raw("hello"), HasSubstr("a request is"));
  EXPECT_THAT(raw("C1 onlyid\nbody"), HasSubstr("a request is"));
  EXPECT_THAT(raw(absl::StrCat("C1 ", std::string(500, 'i'), " kind\n")),
              HasSubstr("a request is"));
  EXPECT_THAT(raw(absl::StrCat("C1 id kind\n", std::string(2000, 's'))), HasSubstr("over 1024"));
  EXPECT_EQ((*serving)->refused(), 4u);
  EXPECT_EQ(calls, 0);
  CommandClient client(node_conn.nc, {.node_id = "web-2"});
  EXPECT_EQ(client.Call("bad kind", "", absl::Seconds(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto ok = client.Call("ping", "x", absl::Seconds(60));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, "done");
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace palisade::cluster
