// A backlog through the real palisaded: lines an hour old (shipped after an outage) whose attack
// is cut over two batches, with the daemon's sweep running between them. Windows age in each
// stream's event time, so the threshold is still reached; a decision that would already be over
// is not enforced but counted as stale (palisade_decisions_total{change="stale"}).
#include <stdlib.h>

#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "palisade/v1/palisade.grpc.pb.h"
#include "services/cli/shipper.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::palisade::testing::Daemon;
using ::palisade::testing::Records;
using ::palisade::testing::ScrapeMetric;
using ::palisade::testing::WaitFor;

// "backlog-long" bans for 4 h (still running after an hour), "backlog-short" for 10 min (over).
constexpr char kPack[] = R"pb(
  rules {
    id: "backlog-long"
    formats: LOG_FORMAT_SYSLOG
    patterns: "^Failed password for \\S+ from (?P<ip>\\S+) port \\d+ ssh2$"
    threshold { count: 4 window { seconds: 600 } }
    decision { action: ACTION_BLOCK duration { seconds: 14400 } }
  }
  rules {
    id: "backlog-short"
    formats: LOG_FORMAT_SYSLOG
    patterns: "^Invalid user \\S+ from (?P<ip>\\S+) port \\d+$"
    threshold { count: 4 window { seconds: 600 } }
    decision { action: ACTION_BLOCK duration { seconds: 600 } }
  }
)pb";

std::string Line(absl::Time t, absl::string_view message) {
  return absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone()),
                      " web-1 sshd[1]: ", message);
}

// The backlog scenario: `backlog` ships an hour-old attack cut over two batches while `live`
// ships fresh lines, and the sweep runs between the backlog's batches.
void HourOldAttackInTwoBatchesReachesItsThreshold(const ShipOptions& backlog,
                                                  const ShipOptions& live) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  std::ofstream(dir + "/backlog.textproto") << kPack;
  std::ofstream(dir + "/backlog_config.textproto")
      << "rule_files: \"" << dir << "/backlog.textproto\"\n"
      << "sweep_interval { nanos: 100000000 }\n";
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + dir + "/backlog_config.textproto"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel =
      grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto ingest = palisade::v1::Ingest::NewStub(channel);
  auto decisions = palisade::v1::Decisions::NewStub(channel);

  const absl::Time hour_ago = absl::Now() - absl::Hours(1);
  auto failed = [](absl::string_view ip, int port) {
    return absl::StrCat("Failed password for root from ", ip, " port ", port, " ssh2");
  };
  auto invalid = [](absl::string_view ip, int port) {
    return absl::StrCat("Invalid user admin from ", ip, " port ", port);
  };
  // First half of both attacks, an hour old.
  std::vector<std::string> first;
  for (int i = 0; i < 2; ++i) {
    first.push_back(Line(hour_ago + absl::Seconds(i), failed("203.0.113.50", 1000 + i)));
    first.push_back(Line(hour_ago + absl::Seconds(i), invalid("203.0.113.51", 2000 + i)));
  }
  ASSERT_TRUE(Ship(*ingest, Records(first), backlog).ok());
  // A live source whose own stream moved on past one of its windows: the sweep drops that one
  // (its stream's time is now), which tells the test a sweep ran after the backlog's batch.
  ASSERT_TRUE(Ship(*ingest,
                   Records({Line(absl::Now() - absl::Minutes(20), failed("198.51.100.1", 1)),
                            Line(absl::Now(), failed("198.51.100.2", 1))}),
                   live)
                  .ok());
  // Four windows now, until the next sweep (every 100 ms, maybe already run) drops the live
  // stream's idle one: three. Only a sweep can make it three, and only if it kept the backlog's
  // two (the wall-clock sweep dropped them too: one window left, never three).
  EXPECT_TRUE(WaitFor([&] { return ScrapeMetric(**daemon, "palisade_engine_windows") == 3; },
                      absl::Seconds(60)))
      << ScrapeMetric(**daemon, "palisade_engine_windows");

  std::vector<std::string> second;
  for (int i = 2; i < 4; ++i) {
    second.push_back(Line(hour_ago + absl::Seconds(i), failed("203.0.113.50", 1000 + i)));
    second.push_back(Line(hour_ago + absl::Seconds(i), invalid("203.0.113.51", 2000 + i)));
  }
  absl::StatusOr<ShipSummary> shipped = Ship(*ingest, Records(second), backlog);
  ASSERT_TRUE(shipped.ok()) << shipped.status();
  EXPECT_EQ(shipped->detections, 2u);

  grpc::ClientContext ctx;
  palisade::v1::ListDecisionsRequest req;
  req.set_active_only(true);
  palisade::v1::ListDecisionsResponse resp;
  ASSERT_TRUE(decisions->List(&ctx, req, &resp).ok());
  std::set<std::string> active;
  for (const auto& d : resp.decisions()) active.insert(d.target().value());
  // The four-hour ban started an hour ago and runs; the ten-minute one would already be over.
  EXPECT_EQ(active, std::set<std::string>({"203.0.113.50"}));
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_decisions_total",
                         {"change=\"stale\"", "rule=\"backlog-short\""}),
            1);
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_decisions_total",
                         {"change=\"created\"", "rule=\"backlog-long\""}),
            1);
  EXPECT_EQ((*daemon)->Stop(), 0);
}

TEST(BacklogTest, HourOldAttackInTwoBatchesReachesItsThreshold) {
  ShipOptions backlog;
  backlog.source = "web-1:/var/log/auth.log (backlog)";
  ShipOptions live;
  live.source = "web-2:/var/log/auth.log";
  HourOldAttackInTwoBatchesReachesItsThreshold(backlog, live);
}

// The same with the shippers' default source, as two hosts running `palisadectl ship
// /var/log/auth.log` send it: the source was the bare path, one for both hosts, so the live
// host moved the shared stream's time to now and the sweep dropped the backlog's windows
// between its batches (no detection). The default names the host too.
TEST(BacklogTest, TwoHostsShippingTheSamePathByDefaultKeepTheirOwnTime) {
  ShipOptions backlog;
  backlog.host = "web-1";
  backlog.path = "/var/log/auth.log";
  ShipOptions live;
  live.host = "web-2";
  live.path = "/var/log/auth.log";
  HourOldAttackInTwoBatchesReachesItsThreshold(backlog, live);
}

// A host five hours behind UTC (TZ=America/New_York in January; four hours in summer): syslog
// writes local time without an offset, and palisaded (no time_zone in its config) reads it in
// the host's zone. Read as UTC, as it was, these fresh lines were four or five hours old and the
// four-hour ban was stale on arrival.
TEST(TimeZoneTest, SyslogTimesOfAUtcMinusFiveHostAreReadInItsZone) {
  ASSERT_EQ(setenv("TZ", "America/New_York", 1), 0);
  absl::TimeZone new_york;
  ASSERT_TRUE(absl::LoadTimeZone("America/New_York", &new_york));
  const std::string dir = std::getenv("TEST_TMPDIR");
  std::ofstream(dir + "/tz.textproto") << kPack;
  std::ofstream(dir + "/tz_config.textproto") << "rule_files: \"" << dir << "/tz.textproto\"\n";
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + dir + "/tz_config.textproto"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel =
      grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto ingest = palisade::v1::Ingest::NewStub(channel);
  auto decisions = palisade::v1::Decisions::NewStub(channel);
  const absl::Time start = absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()) - 10);
  std::vector<std::string> lines;
  for (int i = 0; i < 4; ++i) {
    lines.push_back(absl::StrCat(
        absl::FormatTime("%b %e %H:%M:%S", start + absl::Seconds(i), new_york),
        " web-1 sshd[1]: Failed password for root from 203.0.113.60 port ", 1000 + i, " ssh2"));
  }
  ShipOptions options;
  options.source = "web-1";
  absl::StatusOr<ShipSummary> shipped = Ship(*ingest, Records(lines), options);
  ASSERT_TRUE(shipped.ok()) << shipped.status();
  EXPECT_EQ(shipped->detections, 1u);
  grpc::ClientContext ctx;
  palisade::v1::ListDecisionsRequest req;
  req.set_target("203.0.113.60");
  palisade::v1::ListDecisionsResponse resp;
  ASSERT_TRUE(decisions->List(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.decisions_size(), 1);
  EXPECT_TRUE(resp.decisions(0).active());
  EXPECT_EQ(resp.decisions(0).start().seconds(), absl::ToUnixSeconds(start + absl::Seconds(3)));
  EXPECT_EQ((*daemon)->Stop(), 0);
}

}  // namespace
}  // namespace palisade
