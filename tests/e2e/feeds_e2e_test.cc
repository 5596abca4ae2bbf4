// End to end for threat feeds: a feed pushed over gRPC to the real palisaded lands, merged, in
// the emulator's IP list; the next version removes exactly the entries that left it (the ones
// that stayed keep their list items); a failed login from a listed address is banned at once
// and its decision names the feed; a restart resumes the feed from the state file.
#include <algorithm>
#include <fstream>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
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

using ::nlohmann::json;
using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;
using ::palisade::testing::EmulatorListItems;
using ::palisade::testing::EmulatorListedValues;
using ::palisade::testing::HttpGet;
using ::palisade::testing::MetricValue;
using ::palisade::testing::WaitFor;
using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

palisade::v1::PushFeedResponse PushOrDie(palisade::v1::Feeds::Stub& feeds, const std::string& name,
                                         const std::string& content) {
  grpc::ClientContext ctx;
  palisade::v1::PushFeedResponse resp;
  auto writer = feeds.Push(&ctx, &resp);
  // Two chunks, cut mid-line: the server must join them.
  palisade::v1::FeedChunk first;
  first.set_feed(name);
  first.set_data(content.substr(0, content.size() / 2));
  palisade::v1::FeedChunk second;
  second.set_data(content.substr(content.size() / 2));
  second.set_last(true);
  EXPECT_TRUE(writer->Write(first));
  EXPECT_TRUE(writer->Write(second));
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
  return resp;
}

TEST(FeedsE2eTest, PushedFeedReachesTheListAndANewVersionRemovesExactlyWhatLeft) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  const std::string config = ::palisade::testing::WriteEdgeConfig(
      cf, cf.token_file(), {"tests/e2e/testdata/feeds.textproto"},
      "feeds { name: \"drop\" format: FEED_FORMAT_SPAMHAUS to_edge: true }\n"
      "feeds { name: \"watch\" format: FEED_FORMAT_PLAIN max_parsed_bytes: 1048576 }\n");
  const std::string state_file = std::string(std::getenv("TEST_TMPDIR")) + "/feeds.db";
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"}, state_file);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto feeds = palisade::v1::Feeds::NewStub(channel);

  palisade::v1::PushFeedResponse v1 = PushOrDie(*feeds, "drop",
                                                "; Spamhaus DROP List\n"
                                                "198.18.0.0/24 ; SBL1\n"
                                                "198.18.1.0/24 ; SBL2\n"
                                                "203.0.113.7/32 ; SBL3\n"
                                                "2001:db8:bad::/48 ; SBL4\n"
                                                "10.1.0.0/16 ; SBL5\n"
                                                "not a range ; SBL6\n");
  EXPECT_EQ(v1.accepted(), 4u);
  EXPECT_EQ(v1.never_ban(), 1u);
  EXPECT_EQ(v1.rejected(), 1u);
  ASSERT_EQ(v1.rejections_size(), 1);
  EXPECT_EQ(v1.rejections(0).line(), 7u);
  EXPECT_EQ(v1.version(), 1u);

  // The two adjacent /24s go out as one /23.
  const std::set<std::string> want1 = {"198.18.0.0/23", "203.0.113.7", "2001:db8:bad::/48"};
  ASSERT_TRUE(WaitFor([&] { return EmulatorListedValues(cf) == want1; }, absl::Seconds(60)))
      << ::palisade::testing::EmulatorState(cf).dump();
  const std::string kept_item = EmulatorListItems(cf)["2001:db8:bad::/48"];

  // A failed login from inside a listed range: one line is enough, and the decision says why.
  {
    ShipOptions options;
    options.format = palisade::v1::LOG_FORMAT_SYSLOG;
    options.source = "e2e";
    palisade::v1::LogRecord r;
    r.set_line("Mar  3 14:02:01 web-1 sshd[1]: Failed password for root from 198.18.0.77 port 22 ssh2");
    *r.mutable_event_time() = ToProtoTime(absl::Now());
    auto ingest = palisade::v1::Ingest::NewStub(channel);
    absl::StatusOr<ShipSummary> shipped = Ship(*ingest, {r}, options);
    ASSERT_TRUE(shipped.ok()) << shipped.status();
    EXPECT_EQ(shipped->detections, 1u);
    auto decisions = palisade::v1::Decisions::NewStub(channel);
    grpc::ClientContext ctx;
    palisade::v1::ListDecisionsRequest req;
    req.set_rule_id("listed-ssh-failure");
    palisade::v1::ListDecisionsResponse resp;
    ASSERT_TRUE(decisions->List(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.decisions_size(), 1);
    EXPECT_EQ(resp.decisions(0).target().value(), "198.18.0.77");
    EXPECT_THAT(resp.decisions(0).feeds(), ElementsAre("drop"));
    EXPECT_TRUE(WaitFor(
        [&] {
          json state = ::palisade::testing::EmulatorState(cf);
          for (const auto& r : state["access_rules"]) {
            if (r["configuration"]["value"] == "198.18.0.77") return true;
          }
          return false;
        },
        absl::Seconds(60)));
  }

  // Version 2: 198.18.1.0/24 and 203.0.113.7 leave, 198.51.100.0/24 comes.
  palisade::v1::PushFeedResponse v2 = PushOrDie(*feeds, "drop",
                                                "198.18.0.0/24 ; SBL1\n"
                                                "2001:db8:bad::/48 ; SBL4\n"
                                                "198.51.100.0/24 ; SBL7\n");
  EXPECT_EQ(v2.added(), 1u);
  EXPECT_EQ(v2.removed(), 2u);
  const std::set<std::string> want2 = {"198.18.0.0/24", "198.51.100.0/24", "2001:db8:bad::/48"};
  ASSERT_TRUE(WaitFor([&] { return EmulatorListedValues(cf) == want2; }, absl::Seconds(60)))
      << ::palisade::testing::EmulatorState(cf).dump();
  EXPECT_EQ(EmulatorListItems(cf)["2001:db8:bad::/48"], kept_item);  // untouched, not re-created

  absl::StatusOr<std::string> metrics = HttpGet((*daemon)->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(MetricValue(*metrics, "palisade_feed_entries", {"feed=\"drop\""}), 3);
  EXPECT_EQ(MetricValue(*metrics, "palisade_feed_version", {"feed=\"drop\""}), 2);
  EXPECT_EQ(MetricValue(*metrics, "palisade_feed_never_ban_total", {"feed=\"drop\""}), 1);
  EXPECT_EQ(MetricValue(*metrics, "palisade_feed_rejected_total", {"feed=\"drop\""}), 1);
  EXPECT_EQ(MetricValue(*metrics, "palisade_feed_edge_entries"), 3);

  // An undeclared feed is refused by name.
  {
    grpc::ClientContext ctx;
    palisade::v1::PushFeedResponse resp;
    auto writer = feeds->Push(&ctx, &resp);
    palisade::v1::FeedChunk chunk;
    chunk.set_feed("nope");
    chunk.set_data("198.18.9.9\n");
    chunk.set_last(true);
    writer->Write(chunk);
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_THAT(s.error_message(), ::testing::HasSubstr("\"nope\" is not configured"));
  }

  // A feed whose parse would pass its own max_parsed_bytes (1 MiB: ~14,000 addresses) is this
  // server's limit, not a malformed feed: RESOURCE_EXHAUSTED naming the feed and the field,
  // counted by reason; the other feed is untouched.
  {
    std::string many;
    for (int i = 0; i < 20000; ++i) {
      absl::StrAppend(&many, "10.", i / 65536, ".", (i / 256) % 256, ".", i % 256, "\n");
    }
    grpc::ClientContext ctx;
    palisade::v1::PushFeedResponse resp;
    auto writer = feeds->Push(&ctx, &resp);
    palisade::v1::FeedChunk chunk;
    chunk.set_feed("watch");
    chunk.set_data(many);
    chunk.set_last(true);
    writer->Write(chunk);
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
    EXPECT_THAT(s.error_message(), ::testing::HasSubstr("feed \"watch\""));
    EXPECT_THAT(s.error_message(), ::testing::HasSubstr("max_parsed_bytes"));
    absl::StatusOr<std::string> after = HttpGet((*daemon)->metrics_port(), "/metrics");
    ASSERT_TRUE(after.ok());
    EXPECT_EQ(MetricValue(*after, "palisade_feed_fetch_errors_total",
                          {"feed=\"watch\"", "reason=\"max_parsed_bytes\""}),
              1);
    EXPECT_EQ(MetricValue(*after, "palisade_feed_entries", {"feed=\"drop\""}), 3);
  }

  // Restart on the same state file: the feed is back at version 2 and the list unchanged.
  EXPECT_EQ((*daemon)->Stop(), 0);
  daemon = Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"}, state_file);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  feeds = palisade::v1::Feeds::NewStub(channel);
  grpc::ClientContext ctx;
  palisade::v1::GetFeedRequest get;
  get.set_name("drop");
  get.set_lookup("198.51.100.9");
  palisade::v1::GetFeedResponse got;
  ASSERT_TRUE(feeds->Get(&ctx, get, &got).ok());
  EXPECT_EQ(got.info().version(), 2u);
  EXPECT_EQ(got.info().entries(), 3u);
  ASSERT_EQ(got.entries_size(), 1);
  EXPECT_EQ(got.entries(0).cidr(), "198.51.100.0/24");
  EXPECT_EQ(got.entries(0).ref(), "SBL7");
  absl::SleepFor(absl::Seconds(1));
  EXPECT_EQ(EmulatorListedValues(cf), want2);
  EXPECT_EQ(EmulatorListItems(cf)["2001:db8:bad::/48"], kept_item);
}

// `n` IPv4 addresses from 203.0.113.0 up (crossing into the next /24s), one per line.
std::string Addresses(int n) {
  std::string out;
  for (int i = 0; i < n; ++i) {
    absl::StrAppend(&out, "203.0.", 113 + i / 256, ".", i % 256, "\n");
  }
  return out;
}

// A push's end is explicit (FeedChunk.last): a stream that stops without it is a push cut off (a
// deadline, a killed client, a chunk over api.max_message_bytes), and applying what arrived in
// replace mode would withdraw every entry after the cut. Each cut push below writes the first 500
// lines of a new version and then stops, the last line cut mid-address; each is refused, and the
// feed keeps its 1,000 entries. Before, a stream ended without the marker was applied as the
// feed's whole new version (500 entries, 203.0.114.243 read as 203.0.114.2).
// An allowlist reloaded (Admin.ReloadRules) keeps a feed-listed address off the edge: the
// table withdrew its decision, but the feed manager judged entries by the never-ban set built
// at start, and the next sync (here a push adding another entry) listed it again.
TEST(FeedsE2eTest, AnAddressAllowlistedByAReloadStaysOffTheEdge) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  const std::string config = ::palisade::testing::WriteEdgeConfig(
      cf, cf.token_file(), {"tests/e2e/testdata/feeds.textproto"},
      "feeds { name: \"drop\" format: FEED_FORMAT_PLAIN to_edge: true }\n");
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto feeds = palisade::v1::Feeds::NewStub(channel);
  PushOrDie(*feeds, "drop", "203.0.113.7\n198.51.100.9\n");
  ASSERT_TRUE(WaitFor(
      [&] {
        return EmulatorListedValues(cf) == std::set<std::string>{"203.0.113.7", "198.51.100.9"};
      },
      absl::Seconds(60)))
      << ::palisade::testing::EmulatorState(cf).dump();

  std::ofstream(config, std::ios::app) << "allowlist: \"203.0.113.7\"\n";
  {
    auto admin = palisade::v1::Admin::NewStub(channel);
    grpc::ClientContext ctx;
    palisade::v1::ReloadRulesResponse resp;
    const grpc::Status s = admin->ReloadRules(&ctx, {}, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  ASSERT_TRUE(WaitFor(
      [&] { return EmulatorListedValues(cf) == std::set<std::string>{"198.51.100.9"}; },
      absl::Seconds(60)))
      << ::palisade::testing::EmulatorState(cf).dump();

  // A push that adds an entry (the entries held are not judged again) syncs the edge.
  {
    grpc::ClientContext ctx;
    palisade::v1::PushFeedResponse resp;
    auto writer = feeds->Push(&ctx, &resp);
    palisade::v1::FeedChunk chunk;
    chunk.set_feed("drop");
    chunk.set_mode(palisade::v1::FEED_PUSH_MODE_ADD);
    chunk.set_data("198.51.100.10\n");
    chunk.set_last(true);
    ASSERT_TRUE(writer->Write(chunk));
    writer->WritesDone();
    const grpc::Status s = writer->Finish();
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_TRUE(WaitFor(
      [&] {
        return EmulatorListedValues(cf) ==
               std::set<std::string>{"198.51.100.9", "198.51.100.10"};
      },
      absl::Seconds(60)))
      << ::palisade::testing::EmulatorState(cf).dump();
  auto decisions = palisade::v1::Decisions::NewStub(channel);
  grpc::ClientContext ctx;
  palisade::v1::ListDecisionsRequest req;
  req.set_target("203.0.113.7");
  req.set_active_only(true);
  palisade::v1::ListDecisionsResponse resp;
  ASSERT_TRUE(decisions->List(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.decisions_size(), 0);
  EXPECT_EQ((*daemon)->Stop(), 0);
}

TEST(FeedsE2eTest, APushCutOffBeforeItsLastChunkIsNotApplied) {
  const std::string config = std::string(std::getenv("TEST_TMPDIR")) + "/cut.textproto";
  {
    std::ofstream out(config);
    out << "rule_files: \"" << std::getenv("TEST_SRCDIR")
        << "/palisade/tests/e2e/testdata/feeds.textproto\"\n"
        << "api { max_message_bytes: 65536 }\n"
        << "feeds { name: \"local\" format: FEED_FORMAT_PLAIN }\n";
  }
  absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start({"--config=" + config});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto feeds = palisade::v1::Feeds::NewStub(channel);
  auto entries = [&] {
    grpc::ClientContext ctx;
    palisade::v1::GetFeedRequest get;
    get.set_name("local");
    palisade::v1::GetFeedResponse got;
    grpc::Status s = feeds->Get(&ctx, get, &got);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return std::make_pair(got.info().version(), got.info().entries());
  };

  const std::string whole = Addresses(1000);
  palisade::v1::PushFeedResponse v1 = PushOrDie(*feeds, "local", whole);
  EXPECT_EQ(v1.accepted(), 1000u);
  ASSERT_EQ(entries(), std::make_pair(uint64_t{1}, uint64_t{1000}));

  // The next version's first 500 lines, the last one cut short ("203.0.114.243" → "…2").
  const std::string next = Addresses(1000);
  const size_t cut = next.find("203.0.114.243\n") + std::string("203.0.114.2").size();
  ASSERT_EQ(std::count(next.begin(), next.begin() + static_cast<std::ptrdiff_t>(cut), '\n'), 499);

  enum class End { kWritesDone, kOversizedChunk, kCancel };
  for (End end : {End::kWritesDone, End::kOversizedChunk, End::kCancel}) {
    SCOPED_TRACE(static_cast<int>(end));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    palisade::v1::PushFeedResponse resp;
    auto writer = feeds->Push(&ctx, &resp);
    palisade::v1::FeedChunk first;
    first.set_feed("local");
    first.set_data(next.substr(0, cut / 2));
    palisade::v1::FeedChunk second;
    second.set_data(next.substr(cut / 2, cut - cut / 2));
    EXPECT_TRUE(writer->Write(first));
    EXPECT_TRUE(writer->Write(second));
    if (end == End::kOversizedChunk) {
      // Over api.max_message_bytes (64 KiB): gRPC ends the call, which the handler sees only as
      // reads that stop.
      palisade::v1::FeedChunk big;
      big.set_data(std::string(128 << 10, '#'));
      big.set_last(true);
      writer->Write(big);
    } else if (end == End::kCancel) {
      ctx.TryCancel();
    }
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    EXPECT_FALSE(s.ok());
    if (end == End::kWritesDone) {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
      EXPECT_EQ(s.error_message(),
                absl::StrCat("a push to feed \"local\" ended after ", cut,
                             " bytes without its last chunk (FeedChunk.last): nothing is applied "
                             "from a push that may have been cut off"));
    }
    EXPECT_EQ(entries(), std::make_pair(uint64_t{1}, uint64_t{1000}));
  }

  // A chunk after the last one: the client's end does not match the stream's.
  {
    grpc::ClientContext ctx;
    palisade::v1::PushFeedResponse resp;
    auto writer = feeds->Push(&ctx, &resp);
    palisade::v1::FeedChunk first;
    first.set_feed("local");
    first.set_data(next.substr(0, cut));
    first.set_last(true);
    palisade::v1::FeedChunk after;
    after.set_data(next.substr(cut));
    writer->Write(first);
    writer->Write(after);
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_EQ(s.error_message(),
              "a push to feed \"local\" sent a chunk after its last one (FeedChunk.last)");
    EXPECT_EQ(entries(), std::make_pair(uint64_t{1}, uint64_t{1000}));
  }

  // The same version whole, its end marked: applied.
  palisade::v1::PushFeedResponse v2 = PushOrDie(*feeds, "local", Addresses(900));
  EXPECT_EQ(v2.removed(), 100u);
  EXPECT_EQ(entries(), std::make_pair(uint64_t{2}, uint64_t{900}));
}

TEST(FeedsE2eTest, APulledFeedIsFetchedAtStartAndSyncedToTheEdge) {
  absl::StatusOr<std::unique_ptr<Emulator>> emulator = Emulator::Start();
  ASSERT_TRUE(emulator.ok()) << emulator.status();
  Emulator& cf = **emulator;
  const std::string netset = std::string(std::getenv("TEST_TMPDIR")) + "/level1.netset";
  {
    std::ofstream out(netset);
    out << "# firehol_level1\n198.18.4.0/24\n198.18.5.0/24\n203.0.113.99\n10.1.0.0/16\n";
  }
  const std::string config = ::palisade::testing::WriteEdgeConfig(
      cf, cf.token_file(), {"tests/e2e/testdata/feeds.textproto"},
      absl::StrCat("feeds { name: \"firehol\" format: FEED_FORMAT_FIREHOL url: \"file://", netset,
                   "\" interval { seconds: 3600 } to_edge: true }\n"));
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  // The puller fetches at once; the private range is dropped, the adjacent /24s merge.
  const std::set<std::string> want = {"198.18.4.0/23", "203.0.113.99"};
  ASSERT_TRUE(WaitFor([&] { return EmulatorListedValues(cf) == want; }, absl::Seconds(60)))
      << ::palisade::testing::EmulatorState(cf).dump();
  auto feeds = palisade::v1::Feeds::NewStub(
      grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  palisade::v1::ListFeedsResponse list;
  ASSERT_TRUE(feeds->List(&ctx, {}, &list).ok());
  ASSERT_EQ(list.feeds_size(), 1);
  EXPECT_EQ(list.feeds(0).entries(), 3u);
  EXPECT_EQ(list.feeds(0).never_ban(), 1u);
  EXPECT_EQ(list.feeds(0).url(), "file://" + netset);
  EXPECT_TRUE(list.feeds(0).has_last_success());
}

}  // namespace
}  // namespace palisade
