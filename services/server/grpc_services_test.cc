#include "services/server/grpc_services.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <functional>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "services/cli/shipper.h"
#include "services/common/clock.h"
#include "services/common/status_matchers.h"
#include "services/server/api_limits.h"
#include "services/server/auth.h"
#include "services/server/config.h"
#include "services/server/ship_dedup.h"

namespace palisade {
namespace {

using ::palisade::testing::IsOk;

// Two reloads at once (SIGHUP and Admin.ReloadRules, or two operators): each reads the packs
// and compiles them, then applies what it compiled. Unserialized, the one that read first (the
// files before an edit) could apply last, and the daemon ran the older rules while both calls
// answered success. Reloads run one at a time: the last to read is the last applied.
TEST(AdminServiceTest, ConcurrentReloadsApplyWhatWasReadLast) {
  SimulatedClock clock;
  prometheus::Registry registry;
  DecisionTable table(clock);
  const palisade::v1::Config config = DefaultConfig("rules");
  absl::StatusOr<std::shared_ptr<const RuleSet>> initial = LoadRules(config);
  absl::StatusOr<std::shared_ptr<const RuleSet>> older = LoadRules(config);
  absl::StatusOr<std::shared_ptr<const RuleSet>> newer = LoadRules(config);
  ASSERT_THAT(initial, IsOk());
  ASSERT_THAT(older, IsOk());
  ASSERT_THAT(newer, IsOk());
  Pipeline pipeline(*initial, PipelineOptions(), clock, table, registry);

  absl::Notification first_reading, release_first, second_reading;
  std::atomic<int> calls{0};
  AdminService admin(
      pipeline, table, clock,
      [&]() -> absl::StatusOr<std::shared_ptr<const RuleSet>> {
        if (calls.fetch_add(1) == 0) {
          first_reading.Notify();
          release_first.WaitForNotification();  // still compiling what it read
          return *older;
        }
        second_reading.Notify();
        return *newer;
      },
      registry, "test");
  std::thread first([&] { EXPECT_THAT(admin.Reload(), IsOk()); });
  first_reading.WaitForNotification();
  std::thread second([&] { EXPECT_THAT(admin.Reload(), IsOk()); });
  // Unserialized, the second reload reads and applies now, while the first is held. (Serialized,
  // it waits for the first: the wait below times out, and that is the expected path.)
  second_reading.WaitForNotificationWithTimeout(absl::Seconds(2));
  release_first.Notify();
  first.join();
  second.join();
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(pipeline.rules(), *newer);
}

// A rule pinned to the line's end, so a cut line (whose end is not the line's) cannot match.
constexpr absl::string_view kPinnedPack = R"pb(
  rules {
    id: "app-login"
    formats: LOG_FORMAT_RAW
    patterns: "^Failed Login: username=.* ip=(?P<ip>[0-9.]+)$"
    threshold { count: 1 }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 600 }
    }
  }
)pb";

double CounterValue(prometheus::Registry& registry, const std::string& name) {
  double sum = 0;
  for (const auto& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const auto& m : family.metric) sum += m.counter.value;
  }
  return sum;
}

// LogBatch.stream is the syslog receiver's (in-process): a Ship client that set it could fill
// max_sender_streams with made-up senders (32,768 one-line batches, held 48 h and more), and
// the syslog senders' lines would go in their source's stream again. Both Ship paths (lines
// alone, read as views; records with event times, parsed whole) clear it: here, with no place
// for a sender stream at all, a batch whose stream reached the pipeline would be counted as
// folded into its source's.
TEST(IngestServiceTest, AShippedBatchsStreamIsIgnored) {
  absl::StatusOr<LoadedPack> pack = ParseRulePack(kPinnedPack, "pinned.textproto");
  ASSERT_THAT(pack, IsOk());
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules = RuleSet::Compile({*pack});
  ASSERT_THAT(rules, IsOk());
  SimulatedClock clock;
  prometheus::Registry registry;
  DecisionTable table(clock);
  PipelineOptions options;
  options.max_sender_streams = 0;
  Pipeline pipeline(*rules, options, clock, table, registry);
  ApiLimits limits(ApiLimits::Options(), registry);
  IngestService ingest(pipeline, limits);
  grpc::ServerBuilder builder;
  builder.RegisterService(&ingest);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  std::unique_ptr<palisade::v1::Ingest::Stub> stub =
      palisade::v1::Ingest::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  grpc::ClientContext context;
  auto call = stub->Ship(&context);
  for (const bool timed : {false, true}) {
    palisade::v1::LogBatch batch;
    batch.set_format(palisade::v1::LOG_FORMAT_RAW);
    batch.set_source("web-1");
    batch.set_stream(timed ? "made-up-2" : "made-up-1");
    palisade::v1::LogRecord* record = batch.add_records();
    record->set_line("hello");
    if (timed) record->mutable_event_time()->set_seconds(1765000000);
    ASSERT_TRUE(call->Write(batch));
    palisade::v1::BatchAck ack;
    ASSERT_TRUE(call->Read(&ack));
    EXPECT_EQ(ack.accepted(), 1u);
    EXPECT_EQ(CounterValue(registry, "palisade_ingest_sender_streams_folded_total"), 0)
        << (timed ? "records with event times" : "lines alone");
  }
  call->WritesDone();
  EXPECT_TRUE(call->Finish().ok());
  server->Shutdown();
}

// Polls `done` for up to a minute (a margin no machine's speed comes near).
bool Eventually(const std::function<bool()>& done) {
  const absl::Time until = absl::Now() + absl::Seconds(60);
  while (!done()) {
    if (absl::Now() > until) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

// A Watch whose client never reads: gRPC's flow control holds the first write, the queue fills
// to its 16 MiB and overflows. The overflow ended the call only once that write completed,
// which it never does: the stream kept its slot (and its queue) for good, and 64 of them took
// every slot of the process. Now the call is ended when the write has not completed within the
// overflow's grace (10 s by default; polled for a minute), and its slot is freed.
TEST(EventsServiceTest, AWatchThatNeverReadsIsEndedPastOverflowAndItsSlotFreed) {
  SimulatedClock clock;
  prometheus::Registry registry;
  EventHub hub(EventHubOptions(), clock, registry);
  ApiLimits::Options limit_options;
  limit_options.max_streams = 4;
  ApiLimits limits(limit_options, registry);
  EventsService events(hub, limits);
  grpc::ServerBuilder builder;
  builder.RegisterService(&events);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  std::unique_ptr<palisade::v1::Events::Stub> stub =
      palisade::v1::Events::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<palisade::v1::Event>> reader =
      stub->Watch(&context, palisade::v1::WatchRequest());  // and never read
  ASSERT_TRUE(Eventually([&] { return limits.streams_open() == 1; }));
  // 48 MiB of events: past the queue's 16 MiB and whatever the transport takes in.
  for (int i = 0; i < 48; ++i) {
    palisade::v1::Event event;
    event.set_kind(palisade::v1::EVENT_KIND_DETECTION);
    event.set_correlation_id(std::string(size_t{1} << 20, 'x'));
    hub.Publish(std::move(event));
  }
  EXPECT_TRUE(Eventually([&] { return limits.streams_open() == 0; }))
      << "a Watch that never reads still holds its slot";
  context.TryCancel();
  (void)reader->Finish();
  server->Shutdown();
}

// The same for a client that reads nothing while the events stay under the queue's bounds: a
// write pending past Options::write_stall ends the call. (The bound is short here; the client
// never reads, so no machine is fast enough to make it read in time.)
TEST(EventsServiceTest, AWatchWhoseWriteStaysPendingIsEndedAndItsSlotFreed) {
  SimulatedClock clock;
  prometheus::Registry registry;
  EventHub hub(EventHubOptions(), clock, registry);
  ApiLimits limits(ApiLimits::Options(), registry);
  EventsService::Options options;
  options.write_stall = absl::Milliseconds(500);
  EventsService events(hub, limits, options);
  grpc::ServerBuilder builder;
  builder.RegisterService(&events);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  std::unique_ptr<palisade::v1::Events::Stub> stub =
      palisade::v1::Events::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<palisade::v1::Event>> reader =
      stub->Watch(&context, palisade::v1::WatchRequest());  // and never read
  ASSERT_TRUE(Eventually([&] { return limits.streams_open() == 1; }));
  for (int i = 0; i < 12; ++i) {  // 12 MiB: under the queue's bound, past the transport's window
    palisade::v1::Event event;
    event.set_kind(palisade::v1::EVENT_KIND_DETECTION);
    event.set_correlation_id(std::string(size_t{1} << 20, 'x'));
    hub.Publish(std::move(event));
  }
  EXPECT_TRUE(Eventually([&] { return limits.streams_open() == 0; }))
      << "a Watch whose write never completes still holds its slot";
  context.TryCancel();
  (void)reader->Finish();
  server->Shutdown();
}

// A line a shipper cut at its own cap comes flagged (LogRecord.cut), and the daemon takes it as
// cut whatever its own cap: here one larger than the line, under which the line looked whole
// and a rule pinned to its end keyed the forged tail right before the shipper's cut. Through
// the real Ingest service (whose common batch, lines alone, is read without a record per line)
// and the shipper's client; the same bytes unflagged are a whole line.
TEST(IngestServiceTest, ALineTheShipperCutIsCutWhateverTheDaemonsCap) {
  absl::StatusOr<LoadedPack> pack = ParseRulePack(kPinnedPack, "pinned.textproto");
  ASSERT_THAT(pack, IsOk());
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules = RuleSet::Compile({*pack});
  ASSERT_THAT(rules, IsOk());
  const std::string forged =
      "Failed Login: username=" + std::string(300, 'A') + " ip=198.51.100.66";
  const std::string whole = "Failed Login: username=bob ip=203.0.113.5";
  for (const bool cut : {true, false}) {
    SimulatedClock clock;
    prometheus::Registry registry;
    DecisionTable table(clock);
    PipelineOptions options;
    options.max_line_bytes = 64 * 1024;  // above the shipper's cut
    Pipeline pipeline(*rules, options, clock, table, registry);
    ApiLimits limits(ApiLimits::Options(), registry);
    IngestService ingest(pipeline, limits);
    grpc::ServerBuilder builder;
    builder.RegisterService(&ingest);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    std::unique_ptr<palisade::v1::Ingest::Stub> stub =
        palisade::v1::Ingest::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
    std::vector<palisade::v1::LogRecord> records(2);
    records[0].set_line(forged);
    records[0].set_cut(cut);
    records[1].set_line(whole);
    ShipOptions ship;
    ship.format = palisade::v1::LOG_FORMAT_RAW;
    ship.source = "web-1";
    absl::StatusOr<ShipSummary> summary = Ship(*stub, records, ship);
    server->Shutdown();
    ASSERT_THAT(summary, IsOk());
    EXPECT_EQ(summary->accepted, 2u);
    std::vector<std::string> keys;
    for (const auto& d : table.List({})) keys.push_back(d.target().value());
    std::sort(keys.begin(), keys.end());
    if (cut) {
      EXPECT_EQ(summary->truncated, 1u);
      EXPECT_EQ(keys, std::vector<std::string>{"203.0.113.5"})
          << "the shipper's cut line keyed its forged tail";
    } else {
      EXPECT_EQ(summary->truncated, 0u);
      EXPECT_EQ(keys, (std::vector<std::string>{"198.51.100.66", "203.0.113.5"}));
    }
  }
}

// `request` through Admin.TestRules (in process) of a daemon running kPinnedPack with
// `options`: the status, and the keys of its matches in `keys`.
grpc::Status TestRulesOnPinnedPack(const PipelineOptions& options,
                                   const palisade::v1::TestRulesRequest& request,
                                   std::vector<std::string>* keys) {
  absl::StatusOr<LoadedPack> pack = ParseRulePack(kPinnedPack, "pinned.textproto");
  EXPECT_THAT(pack, IsOk());
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules = RuleSet::Compile({*pack});
  EXPECT_THAT(rules, IsOk());
  SimulatedClock clock;
  prometheus::Registry registry;
  DecisionTable table(clock);
  Pipeline pipeline(*rules, options, clock, table, registry);
  AdminService admin(
      pipeline, table, clock,
      []() -> absl::StatusOr<std::shared_ptr<const RuleSet>> {
        return absl::UnimplementedError("no reload here");
      },
      registry, "test");
  grpc::ServerBuilder builder;
  builder.RegisterService(&admin);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  std::unique_ptr<palisade::v1::Admin::Stub> stub =
      palisade::v1::Admin::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  palisade::v1::TestRulesResponse response;
  grpc::ClientContext context;
  const grpc::Status status = stub->TestRules(&context, request, &response);
  server->Shutdown();
  keys->clear();
  for (const auto& m : response.matches()) keys->push_back(m.key());
  return status;
}

// Admin.TestRules judges lines as the daemon's batches do: cut at the daemon's
// max_line_bytes, where a rule pinned to the line's end cannot match at the cut. Before
// 2026-12-07 it judged every line whole, so an operator testing a pack was shown the key of a
// forged tail the daemon itself refuses.
TEST(AdminServiceTest, TestRulesCutsLinesAtTheDaemonsCap) {
  PipelineOptions options;
  options.max_line_bytes = 64;
  palisade::v1::TestRulesRequest request;
  request.set_format(palisade::v1::LOG_FORMAT_RAW);
  // The forged tail starts before byte 64 and ends after it: the daemon's cut lands in it.
  request.add_lines("Failed Login: username=" + std::string(30, 'A') + " ip=198.51.100.66");
  request.add_lines("Failed Login: username=bob ip=203.0.113.5");
  std::vector<std::string> keys;
  const grpc::Status status = TestRulesOnPinnedPack(options, request, &keys);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(keys, std::vector<std::string>{"203.0.113.5"})
      << "Admin.TestRules keyed a forged tail the daemon cuts";
}

// A line the client's reader cut at its own cap (palisadectl rules test --remote, whose reader
// cuts before the daemon's cap) is judged cut, as a shipped LogRecord.cut line is: the request
// carried no such flag, so the daemon judged the reader's first bytes whole and keyed the
// forged tail they end in. An index past the lines is refused, naming it.
TEST(AdminServiceTest, TestRulesJudgesTheLinesTheClientCutAsCut) {
  palisade::v1::TestRulesRequest request;
  request.set_format(palisade::v1::LOG_FORMAT_RAW);
  // What a reader kept of "Failed Login: username=<...> ip=198.51.100.66 ip=10.0.0.1...": its
  // cap landed right after the forged address.
  request.add_lines("Failed Login: username=x ip=198.51.100.66");
  request.add_lines("Failed Login: username=bob ip=203.0.113.5");
  request.add_cut_lines(0);
  std::vector<std::string> keys;
  grpc::Status status = TestRulesOnPinnedPack(PipelineOptions(), request, &keys);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(keys, std::vector<std::string>{"203.0.113.5"})
      << "Admin.TestRules judged a line the client cut as whole";

  request.add_cut_lines(2);  // there are two lines: 0 and 1
  status = TestRulesOnPinnedPack(PipelineOptions(), request, &keys);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), ::testing::HasSubstr("cut_lines[1] = 2"));
}

// Follow-mode positions are the authenticated client's, through the real Ingest.Ship path with
// two ingest clients: host-b's token sends a batch naming host-a's shipper id, path and file
// identity with an end offset far past A's. Before, the shared position made A's next lines
// duplicates (acked, dropped: A's detection blinded); now B's batch moves only B's position.
TEST(IngestServiceTest, AnotherClientsOriginDoesNotMakeAShippersLinesDuplicates) {
  absl::StatusOr<LoadedPack> pack = ParseRulePack(kPinnedPack, "pinned.textproto");
  ASSERT_THAT(pack, IsOk());
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules = RuleSet::Compile({*pack});
  ASSERT_THAT(rules, IsOk());
  SimulatedClock clock;
  prometheus::Registry registry;
  DecisionTable table(clock);
  Pipeline pipeline(*rules, PipelineOptions(), clock, table, registry);
  ApiLimits limits(ApiLimits::Options(), registry);
  ShipDedup dedup(ShipDedupOptions(), registry);
  palisade::v1::ApiConfig api;
  for (const std::string name : {"host-a", "host-b"}) {
    palisade::v1::ApiClient* client = api.add_clients();
    client->set_name(name);
    client->set_token_sha256(Authorizer::HashToken("token-of-" + name));
    client->add_roles(palisade::v1::API_ROLE_INGEST);
  }
  absl::StatusOr<std::unique_ptr<Authorizer>> auth = Authorizer::Create(api, registry);
  ASSERT_THAT(auth, IsOk());
  IngestService ingest(pipeline, limits, &dedup);
  ingest.set_authorizer(auth->get());
  grpc::ServerBuilder builder;
  builder.RegisterService(&ingest);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  std::unique_ptr<palisade::v1::Ingest::Stub> stub =
      palisade::v1::Ingest::NewStub(server->InProcessChannel(grpc::ChannelArguments()));

  // host-a's /var/log/auth.log: `lines` starting at byte `start`. One stream per batch.
  auto ship = [&](const std::string& client, const std::vector<std::string>& lines,
                  uint64_t start) -> palisade::v1::BatchAck {
    palisade::v1::LogBatch batch;
    batch.set_format(palisade::v1::LOG_FORMAT_RAW);
    batch.set_source("host-a");
    batch.set_sequence(1);
    palisade::v1::BatchOrigin* origin = batch.mutable_origin();
    origin->set_shipper_id("host-a");
    origin->set_path("/var/log/auth.log");
    origin->set_device(2049);
    origin->set_inode(131);
    origin->set_fingerprint("first-line-hash");
    origin->set_fingerprint_bytes(64);
    uint64_t at = start;
    for (const std::string& line : lines) {
      batch.add_records()->set_line(line);
      at += line.size() + 1;
      origin->add_line_ends(at);
    }
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer token-of-" + client);
    auto call = stub->Ship(&context);
    palisade::v1::BatchAck ack;
    EXPECT_TRUE(call->Write(batch));
    EXPECT_TRUE(call->Read(&ack));
    call->WritesDone();
    const grpc::Status status = call->Finish();
    EXPECT_TRUE(status.ok()) << client << ": " << status.error_message();
    return ack;
  };
  const std::string first = "Failed Login: username=bob ip=203.0.113.5";
  EXPECT_EQ(ship("host-a", {first}, 0).accepted(), 1u);
  EXPECT_EQ(ship("host-b", {"forged"}, uint64_t{1} << 40).accepted(), 1u);
  const std::string next = "Failed Login: username=eve ip=198.51.100.66";
  EXPECT_EQ(ship("host-a", {first, next}, 0).accepted(), 1u)
      << "host-b's batch made host-a's new line a duplicate";
  EXPECT_EQ(dedup.duplicate_lines(), 1u);  // host-a's resent first line, and only it
  std::vector<std::string> keys;
  for (const auto& d : table.List({})) keys.push_back(d.target().value());
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, (std::vector<std::string>{"198.51.100.66", "203.0.113.5"}));
  server->Shutdown();
}

}  // namespace
}  // namespace palisade
