// End to end for the event stream (Events.Watch) on the real palisaded and the emulator:
// detections, decisions and action outcomes arrive in sequence order and share a correlation
// id; filters work; a client that reconnects resumes without a gap; a client that does not read
// is dropped with RESOURCE_EXHAUSTED (and counted) while ingest goes on at full speed.
#include <fstream>
#include <map>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "palisade/v1/palisade.grpc.pb.h"
#include "services/cli/shipper.h"
#include "services/common/proto_time.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;
using ::palisade::testing::HttpGet;
using ::palisade::testing::MetricValue;
using ::palisade::testing::ScrapeMetric;
using ::palisade::testing::WaitFor;
using ::palisade::testing::WaitForSubscribers;
using ::testing::HasSubstr;
using palisade::v1::Event;

// Reads a Watch stream on its own thread.
class Watcher {
 public:
  Watcher(palisade::v1::Events::Stub& stub, const palisade::v1::WatchRequest& req) {
    reader_ = stub.Watch(&ctx_, req);
    thread_ = std::thread([this] {
      Event e;
      while (reader_->Read(&e)) {
        absl::MutexLock lock(&mu_);
        events_.push_back(e);
      }
      grpc::Status s = reader_->Finish();
      absl::MutexLock lock(&mu_);
      status_ = s;
      done_ = true;
    });
  }
  ~Watcher() {
    ctx_.TryCancel();
    thread_.join();
  }
  std::vector<Event> events() {
    absl::MutexLock lock(&mu_);
    return events_;
  }
  size_t count() {  // events().size() without copying them (the reader waits while we hold mu_)
    absl::MutexLock lock(&mu_);
    return events_.size();
  }
  std::string status() {
    absl::MutexLock lock(&mu_);
    return done_ ? absl::StrCat("ended: ", status_.error_code(), " ", status_.error_message())
                 : "open";
  }
  bool WaitForCount(size_t n) {
    return WaitFor([&] { return count() >= n; }, absl::Seconds(60));
  }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<Event>> reader_;
  std::thread thread_;
  absl::Mutex mu_;
  std::vector<Event> events_;
  grpc::Status status_;
  bool done_ = false;
};

std::vector<std::string> Probes(int from, int to) {
  std::vector<std::string> out;
  for (int i = from; i < to; ++i) {
    out.push_back(absl::StrCat("Mar  3 14:02:01 web-1 sshd[1]: Did not receive identification ",
                               "string from 11.0.", i / 250, ".", i % 250 + 1));
  }
  return out;
}

void ShipOrDie(const std::shared_ptr<grpc::Channel>& channel, const std::vector<std::string>& lines) {
  auto ingest = palisade::v1::Ingest::NewStub(channel);
  std::vector<palisade::v1::LogRecord> records(lines.size());
  const auto now = ToProtoTime(absl::Now());
  for (size_t i = 0; i < lines.size(); ++i) {
    records[i].set_line(lines[i]);
    *records[i].mutable_event_time() = now;
  }
  ShipOptions options;
  options.format = palisade::v1::LOG_FORMAT_SYSLOG;
  options.source = "watch-e2e";
  absl::StatusOr<ShipSummary> s = Ship(*ingest, records, options);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->detections, lines.size());
}

class WatchE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
    ASSERT_TRUE(emulator.ok()) << emulator.status();
    cf_ = *std::move(emulator);
    ecs_path_ = std::string(std::getenv("TEST_TMPDIR")) + "/events.ndjson";
    std::remove(ecs_path_.c_str());
    config_ = ::palisade::testing::WriteEdgeConfig(
        *cf_, cf_->token_file(), {"tests/e2e/testdata/watch.textproto"},
        "guard { max_new_bans_per_minute: 1000 }\n"
        "sinks { name: \"siem-file\" ecs_file { path: \"" + ecs_path_ + "\" } }\n");
    StartDaemon();
  }

  // (Re)starts palisaded on config_, and connects to it.
  void StartDaemon() {
    absl::StatusOr<std::unique_ptr<Daemon>> daemon =
        Daemon::Start({"--config=" + config_, "--shutdown_grace=200ms"});
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
    channel_ = grpc::CreateChannel(daemon_->grpc_address(), grpc::InsecureChannelCredentials());
    events_ = palisade::v1::Events::NewStub(channel_);
  }

  // Waits until palisaded counts `n` watches (WaitForSubscribers: shipping sooner would race
  // their subscriptions).
  void WaitForWatches(int n) {
    const int want = n + 1;  // the ECS file sink subscribes too
    ASSERT_TRUE(WaitForSubscribers(*daemon_, want))
        << ScrapeMetric(*daemon_, "palisade_events_subscribers") << " subscribers, not " << want;
  }

  // A watch that sees the first two events of probes 0 and 1, then disconnects: where a client
  // would resume (the second event's stream and sequence).
  std::pair<std::string, uint64_t> WatchTwoEventsAndLeave() {
    Watcher first(*events_, {});
    WaitForWatches(1);
    ShipOrDie(channel_, Probes(0, 2));
    EXPECT_TRUE(first.WaitForCount(2));
    const std::vector<Event> got = first.events();
    if (got.size() < 2) return {"", 0};
    return {got[1].stream(), got[1].sequence()};
  }

  std::unique_ptr<Emulator> cf_;
  std::unique_ptr<Daemon> daemon_;
  std::string config_;
  std::string ecs_path_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<palisade::v1::Events::Stub> events_;
};

TEST_F(WatchE2eTest, OrderedCorrelatedAndFiltered) {
  Watcher all(*events_, {});
  palisade::v1::WatchRequest only_decisions;
  only_decisions.add_kinds(palisade::v1::EVENT_KIND_DECISION);
  only_decisions.set_rule_id("probe");
  Watcher decisions(*events_, only_decisions);
  palisade::v1::WatchRequest other_rule;
  other_rule.set_rule_id("nothing-matches-this");
  Watcher none(*events_, other_rule);
  WaitForWatches(3);

  ShipOrDie(channel_, Probes(0, 3));
  // Per address: a detection, a decision (created) and an action (applied at the emulator).
  ASSERT_TRUE(all.WaitForCount(9));
  std::vector<Event> got = all.events();
  std::map<std::string, std::map<std::string, std::string>> by_correlation;  // id -> kind -> what
  uint64_t last = 0;
  for (const Event& e : got) {
    EXPECT_GT(e.sequence(), last);
    last = e.sequence();
    ASSERT_FALSE(e.correlation_id().empty());
    EXPECT_EQ(e.rule_id(), "probe");
    switch (e.body_case()) {
      case Event::kDetection:
        by_correlation[e.correlation_id()]["detection"] = e.detection().target().value();
        EXPECT_EQ(e.detection().source(), "watch-e2e");
        EXPECT_EQ(e.detection().evidence_size(), 1);
        break;
      case Event::kDecision:
        by_correlation[e.correlation_id()]["decision"] =
            e.decision().change() + " " + e.decision().decision().target().value();
        break;
      case Event::kAction:
        by_correlation[e.correlation_id()]["action"] =
            e.action().operation() + " " + e.action().outcome() + " " + e.action().target().value();
        EXPECT_EQ(e.action().actuator(), palisade::v1::ACTUATOR_ACCESS_RULE);
        break;
      default:
        ADD_FAILURE() << "event without a body";
    }
  }
  // Line -> detection -> decision -> API call, in that order in the stream.
  std::map<std::string, std::vector<Event::BodyCase>> order;
  for (const Event& e : got) order[e.correlation_id()].push_back(e.body_case());
  for (const auto& [id, bodies] : order) {
    EXPECT_EQ(bodies, (std::vector<Event::BodyCase>{Event::kDetection, Event::kDecision,
                                                    Event::kAction}))
        << id;
  }
  ASSERT_EQ(by_correlation.size(), 3u);
  for (const auto& [id, kinds] : by_correlation) {
    ASSERT_EQ(kinds.size(), 3u) << id;
    const std::string ip = kinds.at("detection");
    EXPECT_EQ(kinds.at("decision"), "created " + ip);
    EXPECT_EQ(kinds.at("action"), "apply applied " + ip);
  }
  ASSERT_TRUE(decisions.WaitForCount(3));
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(decisions.events().size(), 3u);
  for (const Event& e : decisions.events()) EXPECT_EQ(e.kind(), palisade::v1::EVENT_KIND_DECISION);
  EXPECT_TRUE(none.events().empty());

  // The ECS sink wrote the same events, with the same sequence numbers and correlation ids.
  std::map<uint64_t, std::string> ecs;  // sequence -> correlation id
  ASSERT_TRUE(WaitFor(
      [&] {
        std::ifstream in(ecs_path_);
        std::string line;
        ecs.clear();
        while (std::getline(in, line)) {
          nlohmann::json j = nlohmann::json::parse(line);
          ecs[j["event"]["sequence"].get<uint64_t>()] = j["palisade"]["correlation_id"];
        }
        return ecs.size() >= got.size();
      },
      absl::Seconds(60)));
  for (const Event& e : got) EXPECT_EQ(ecs[e.sequence()], e.correlation_id()) << e.sequence();
}

// A Watch's filter is kept for the stream's life and read for every event under the hub's lock:
// one a read token sends is checked before the stream opens, each refusal INVALID_ARGUMENT naming
// the field. Before, each of these streams opened (a million kinds were scanned per event).
TEST_F(WatchE2eTest, AFilterIsCheckedBeforeTheStreamOpens) {
  std::vector<std::pair<palisade::v1::WatchRequest, std::string>> cases(5);
  cases[0].first.add_kinds(palisade::v1::EVENT_KIND_DECISION);
  cases[0].first.add_kinds(palisade::v1::EVENT_KIND_DETECTION);
  cases[0].first.add_kinds(palisade::v1::EVENT_KIND_DECISION);
  cases[0].second = "kinds[2]: EVENT_KIND_DECISION is listed twice";
  for (int i = 0; i < 100000; ++i) cases[1].first.add_kinds(palisade::v1::EVENT_KIND_ACTION);
  cases[1].second = "kinds[1]: EVENT_KIND_ACTION is listed twice";
  cases[2].first.add_kinds(static_cast<palisade::v1::EventKind>(99));
  cases[2].second = "kinds[0]: 99 is not an EventKind";
  cases[3].first.add_kinds(palisade::v1::EVENT_KIND_UNSPECIFIED);
  cases[3].second = "kinds[0]: EVENT_KIND_UNSPECIFIED is the kind of no event";
  cases[4].first.set_rule_id(std::string(257, 'r'));
  cases[4].second = "rule_id: 257 bytes, at most 256";
  // All at once: before, none of them ended.
  std::vector<std::unique_ptr<Watcher>> watchers;
  for (const auto& [request, want] : cases) {
    watchers.push_back(std::make_unique<Watcher>(*events_, request));
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].second);
    Watcher& w = *watchers[i];
    ASSERT_TRUE(WaitFor([&] { return w.status() != "open"; }, absl::Seconds(60)));
    EXPECT_THAT(w.status(),
                HasSubstr(absl::StrCat("ended: ", grpc::StatusCode::INVALID_ARGUMENT,
                                       " Events.Watch: WatchRequest.", cases[i].second)));
  }
}

TEST_F(WatchE2eTest, ResumesWithoutAGapAfterAReconnect) {
  // Disconnected after two events; more happen meanwhile.
  const auto [stream, resume_after] = WatchTwoEventsAndLeave();
  ShipOrDie(channel_, Probes(2, 4));
  palisade::v1::WatchRequest req;
  req.set_after_sequence(resume_after);
  req.set_stream(stream);
  Watcher again(*events_, req);
  ASSERT_TRUE(again.WaitForCount(10));  // 4 addresses x 3 events, minus the 2 already seen
  std::vector<Event> got = again.events();
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].sequence(), resume_after + 1 + i);
    EXPECT_EQ(got[i].stream(), stream);
  }
}

// A restarted palisaded numbers its events from 1 again: a client resuming with the sequence it
// last saw would have been given other events as if they were the ones it missed. Its stream
// names the run, and a resume from another run is refused, naming both.
TEST_F(WatchE2eTest, AResumeAcrossARestartIsRefusedNamingBothStreams) {
  const auto [stream, resume_after] = WatchTwoEventsAndLeave();
  ASSERT_EQ(stream.size(), 16u);
  daemon_.reset();
  StartDaemon();
  {
    Watcher restarted(*events_, {});
    WaitForWatches(1);
    ShipOrDie(channel_, Probes(4, 8));  // the new run numbers past resume_after
    ASSERT_TRUE(restarted.WaitForCount(resume_after + 1));
    EXPECT_NE(restarted.events()[0].stream(), stream);
  }
  palisade::v1::WatchRequest req;
  req.set_after_sequence(resume_after);
  req.set_stream(stream);
  Watcher resumed(*events_, req);
  ASSERT_TRUE(WaitFor([&] { return resumed.status() != "open"; }, absl::Seconds(60)));
  EXPECT_THAT(resumed.status(), HasSubstr(absl::StrCat("ended: ", grpc::StatusCode::OUT_OF_RANGE)));
  EXPECT_THAT(resumed.status(), HasSubstr(stream));
  EXPECT_THAT(resumed.status(), HasSubstr("restarted"));
  EXPECT_TRUE(resumed.events().empty());
}

TEST_F(WatchE2eTest, ASubscriberThatDoesNotReadIsDroppedAndIngestGoesOn) {
  // The stalled client has a connection of its own, as a real one would, with a 64 KiB receive
  // window (gRPC's adaptive window would otherwise absorb megabytes before the server noticed).
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 * 1024);
  auto own_channel = grpc::CreateCustomChannel(daemon_->grpc_address(),
                                               grpc::InsecureChannelCredentials(), args);
  auto own_stub = palisade::v1::Events::NewStub(own_channel);
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReader<Event>> stalled = own_stub->Watch(&ctx, {});
  Watcher live(*events_, {});
  WaitForWatches(2);
  const absl::Time t0 = absl::Now();
  ShipOrDie(channel_, Probes(0, 8000));  // ~24,000 events, none read by `stalled`
  const absl::Duration shipped_in = absl::Now() - t0;
  ASSERT_TRUE(WaitFor(
      [&] {
        absl::StatusOr<std::string> m = HttpGet(daemon_->metrics_port(), "/metrics");
        return m.ok() && MetricValue(*m, "palisade_events_subscribers_dropped_total") >= 1;
      },
      absl::Seconds(60)))
      << live.events().size() << " events to the live subscriber, " << live.status() << "; "
      << *HttpGet(daemon_->metrics_port(), "/metrics");
  // The stalled client finds the end of its stream once it reads: RESOURCE_EXHAUSTED, with the
  // sequence to resume after.
  Event e;
  while (stalled->Read(&e)) {
  }
  grpc::Status s = stalled->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), ::testing::HasSubstr("resume after sequence"));
  // The reading subscriber kept up with everything.
  EXPECT_TRUE(live.WaitForCount(16000)) << live.events().size() << " events, " << live.status();
  std::cerr << "8000 detections shipped in " << shipped_in << " with a stalled subscriber\n";
}

}  // namespace
}  // namespace palisade
