#include "services/pipeline/pipeline.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/proto_time.h"
#include "services/common/status_matchers.h"

namespace palisade {
namespace {

using ::palisade::testing::IsOk;
using ::palisade::testing::StatusIs;
using ::palisade::v1::LogBatch;
using ::palisade::v1::LogFormat;
using ::testing::HasSubstr;
using ::testing::SizeIs;

constexpr absl::string_view kPack = R"pb(
  rules {
    id: "ssh-fail"
    formats: LOG_FORMAT_SYSLOG
    patterns: "Failed password for \\S+ from (?P<ip>\\S+) port"
    threshold {
      count: 3
      window { seconds: 60 }
    }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 600 }
    }
  }
)pb";

double CounterValue(prometheus::Registry& registry, const std::string& name,
                    const std::map<std::string, std::string>& labels = {}) {
  double total = 0;
  for (const auto& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const auto& m : family.metric) {
      bool ok = true;
      for (const auto& [k, v] : labels) {
        bool found = false;
        for (const auto& l : m.label) found |= l.name == k && l.value == v;
        ok &= found;
      }
      if (!ok) continue;
      total += m.counter.value + m.gauge.value;
    }
  }
  return total;
}

class PipelineTest : public ::testing::Test {
 protected:
  PipelineTest()
      : table_(clock_), pipeline_(Rules(), PipelineOptions(), clock_, table_, registry_) {}

  static std::shared_ptr<const RuleSet> Rules() {
    return *RuleSet::Compile({*ParseRulePack(kPack, "test.textproto")});
  }

  // A syslog line `seconds_ago` before the simulated now.
  std::string Line(absl::string_view ip, int seconds_ago) {
    absl::Time t = clock_.TimeNow() - absl::Seconds(seconds_ago);
    return absl::StrCat(absl::FormatTime("%b %e %H:%M:%S", t, absl::UTCTimeZone()),
                        " web-1 sshd[1]: Failed password for root from ", ip, " port 22 ssh2");
  }

  // A syslog batch of source web-1 with a Line per (address, seconds ago).
  LogBatch Backlog(std::initializer_list<std::pair<absl::string_view, int>> lines) {
    LogBatch batch;
    batch.set_source("web-1");
    batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
    for (const auto& [ip, ago] : lines) batch.add_records()->set_line(Line(ip, ago));
    return batch;
  }

  SimulatedClock clock_;
  prometheus::Registry registry_;
  DecisionTable table_;
  Pipeline pipeline_;
};

// A backlog shipped after an outage: lines an hour old, an attack cut in two batches, the
// daemon's sweep running between them. The windows age in the stream's event time, so the
// second batch completes the threshold (the wall-clock sweep used to drop the window). The
// decision would be over on the clock (600 s ban, an hour ago): stale, counted, not enforced.
TEST_F(PipelineTest, BacklogWindowsAgeInEventTimeAcrossTheSweep) {
  ASSERT_THAT(pipeline_.ProcessBatch(Backlog({{"203.0.113.7", 3600}, {"203.0.113.7", 3590}})),
              IsOk());
  clock_.Advance(absl::Seconds(1));
  pipeline_.ExpireWindows();
  EXPECT_EQ(pipeline_.engine_stats().expired_windows, 0u);
  const LogBatch second = Backlog({{"203.0.113.7", 3581}});
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline_.ProcessBatch(second);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->detections(), 1u);
  EXPECT_EQ(table_.active_count(), 0u);
  EXPECT_EQ(CounterValue(registry_, "palisade_decisions_total", {{"change", "stale"}}), 1);
  // Once the stream itself moves on past the window, the sweep drops it.
  ASSERT_THAT(pipeline_.ProcessBatch(Backlog({{"198.51.100.9", 0}})), IsOk());
  pipeline_.ExpireWindows();
  EXPECT_EQ(pipeline_.engine_stats().expired_windows, 1u);
}

// The same backlog across a restart: the windows saved at shutdown are restored before the
// inputs resume, and the sweep a second after start must not drop them on the clock before the
// backlog that continues them is read (the restored windows age from the restart, for one
// span, until a line of theirs moves them on).
TEST_F(PipelineTest, RestoredWindowsWaitForTheBacklogThatContinuesThem) {
  ASSERT_THAT(pipeline_.ProcessBatch(Backlog({{"203.0.113.7", 3600}, {"203.0.113.7", 3590}})),
              IsOk());
  const palisade::v1::EngineSnapshot saved = pipeline_.SnapshotWindows();
  ASSERT_EQ(saved.windows_size(), 1);

  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline restarted(Rules(), PipelineOptions(), clock_, table, registry);
  EXPECT_EQ(restarted.RestoreWindows(saved), 0u);  // the same rules: none skipped
  clock_.Advance(absl::Seconds(1));
  restarted.ExpireWindows();
  EXPECT_EQ(restarted.engine_stats().expired_windows, 0u);
  const LogBatch second = Backlog({{"203.0.113.7", 3581}});
  absl::StatusOr<palisade::v1::BatchAck> ack = restarted.ProcessBatch(second);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->detections(), 1u);
  // A restored window nothing continues goes once a span has passed since the restart.
  Pipeline idle(Rules(), PipelineOptions(), clock_, table, registry);
  idle.RestoreWindows(saved);
  clock_.Advance(absl::Seconds(30));
  idle.ExpireWindows();
  EXPECT_EQ(idle.engine_stats().expired_windows, 0u);
  clock_.Advance(absl::Seconds(31));
  idle.ExpireWindows();
  EXPECT_EQ(idle.engine_stats().expired_windows, 1u);
}

// Yearless lines of one source follow its previous line across batches (nearest year: 31 Dec
// then 1 Jan is the next day); after a month of silence the daemon starts again from now.
TEST_F(PipelineTest, YearlessTimesFollowThePreviousLineOfTheirSource) {
  clock_.Set(absl::FromUnixSeconds(1'767'225'700));  // 2026-01-01 00:01:40 UTC
  auto batch = [](absl::string_view line) {
    LogBatch b;
    b.set_source("web-1");
    b.set_format(LogFormat::LOG_FORMAT_SYSLOG);
    b.add_records()->set_line(std::string(line));
    return b;
  };
  // A backlog shipped just after New Year: 31 Dec is last year (at most a day ahead of now)...
  for (int i = 0; i < 2; ++i) {
    ASSERT_THAT(pipeline_.ProcessBatch(batch(absl::StrCat(
                    "Dec 31 23:59:5", i,
                    " web-1 sshd[1]: Failed password for root from 203.0.113.7 port 22 ssh2"))),
                IsOk());
  }
  // ... and 1 Jan, in a later batch, the day after its previous line (not eleven months back).
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline_.ProcessBatch(batch(
      "Jan  1 00:00:01 web-1 sshd[1]: Failed password for root from 203.0.113.7 port 22 ssh2"));
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->detections(), 1u);
  std::vector<palisade::v1::Decision> all = table_.List({});
  ASSERT_THAT(all, SizeIs(1));
  EXPECT_EQ(all[0].start().seconds(), 1'767'225'601);  // 2026-01-01 00:00:01
}

// The hour after New York falls back (1 November 2026, 02:00 EDT -> 01:00 EST) repeats
// 01:00-01:59. Now 06:10:30Z (01:10:30 EST, the second pass), an attack's syslog lines at
// 01:10 are the second pass's: the ban (600 s) is made and active. They were dated in the first
// pass, an hour early: the decision was over at creation (counted stale, never made).
TEST_F(PipelineTest, LinesInTheRepeatedHourAfterFallBackAreDatedInTheirOwnPass) {
  absl::TimeZone new_york;
  ASSERT_TRUE(absl::LoadTimeZone("America/New_York", &new_york));
  clock_.Set(absl::FromUnixSeconds(1'793'513'430));  // 2026-11-01 06:10:30 UTC
  PipelineOptions options;
  options.time_zone = new_york;
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(), options, clock_, table, registry);
  LogBatch batch;
  batch.set_source("web-1");
  batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  for (absl::string_view second : {"00", "05", "09"}) {
    batch.add_records()->set_line(
        absl::StrCat("Nov  1 01:10:", second,
                     " web-1 sshd[1]: Failed password for root from 203.0.113.7 port 22 ssh2"));
  }
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->detections(), 1u);
  EXPECT_EQ(CounterValue(registry, "palisade_decisions_total", {{"change", "stale"}}), 0);
  std::vector<palisade::v1::Decision> all = table.List({});
  ASSERT_THAT(all, SizeIs(1));
  EXPECT_EQ(all[0].start().seconds(), 1'793'513'409);  // 2026-11-01 06:10:09 UTC (01:10:09 EST)
  EXPECT_EQ(table.active_count(), 1u);
}

// The same attack after a quiet half hour: the stream's previous line is 00:50 EDT (04:50Z),
// read live (at 04:50:05Z), so the first pass's 01:10 (05:10Z) is nearer to it than the second
// pass's (06:10Z). But the stream is live and the second pass's occurrence is within minutes of
// now: the lines are the second pass's, the ban active. Nearest-to-previous dated them an hour
// early, and every later line followed them: the ban was stale at creation.
TEST_F(PipelineTest, AfterAQuietHalfHourTheRepeatedHourIsTheLiveStreamsSecondPass) {
  absl::TimeZone new_york;
  ASSERT_TRUE(absl::LoadTimeZone("America/New_York", &new_york));
  clock_.Set(absl::FromUnixSeconds(1'793'508'605));  // 2026-11-01 04:50:05 UTC (00:50:05 EDT)
  PipelineOptions options;
  options.time_zone = new_york;
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(), options, clock_, table, registry);
  LogBatch quiet;
  quiet.set_source("web-1");
  quiet.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  quiet.add_records()->set_line("Nov  1 00:50:00 web-1 sshd[1]: Connection closed");
  ASSERT_THAT(pipeline.ProcessBatch(quiet), IsOk());
  clock_.Set(absl::FromUnixSeconds(1'793'513'430));  // 2026-11-01 06:10:30 UTC (01:10:30 EST)
  LogBatch batch;
  batch.set_source("web-1");
  batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  for (absl::string_view second : {"00", "05", "09"}) {
    batch.add_records()->set_line(
        absl::StrCat("Nov  1 01:10:", second,
                     " web-1 sshd[1]: Failed password for root from 203.0.113.7 port 22 ssh2"));
  }
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->detections(), 1u);
  EXPECT_EQ(CounterValue(registry, "palisade_decisions_total", {{"change", "stale"}}), 0);
  std::vector<palisade::v1::Decision> all = table.List({});
  ASSERT_THAT(all, SizeIs(1));
  EXPECT_EQ(all[0].start().seconds(), 1'793'513'409);  // 2026-11-01 06:10:09 UTC (01:10:09 EST)
  EXPECT_EQ(table.active_count(), 1u);
}

// A sender whose clock runs 10 minutes fast writes the second pass's first lines 10 minutes
// before now: the occurrence is that far ahead all along, not one that has not happened. Its
// stream's skew (each line ahead of its reading by as much) widens what counts as now. Before,
// anything more than 5 minutes ahead was taken as the first pass: the whole second pass dated
// 50 minutes early, its bans stale (found by the review of the first fix).
TEST_F(PipelineTest, ASenderTenMinutesFastKeepsItsSecondPass) {
  absl::TimeZone new_york;
  ASSERT_TRUE(absl::LoadTimeZone("America/New_York", &new_york));
  PipelineOptions options;
  options.time_zone = new_york;
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(), options, clock_, table, registry);
  // Real 05:35Z (01:35 EDT) and every 5 minutes: the sender writes 10 minutes ahead.
  int64_t real = 1'793'511'300;  // 2026-11-01 05:35:00 UTC
  for (absl::string_view stamp : {"01:45:00", "01:50:00", "01:55:00", "01:00:00", "01:05:00"}) {
    clock_.Set(absl::FromUnixSeconds(real));
    LogBatch batch;
    batch.set_source("web-1");
    batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
    batch.add_records()->set_line(
        absl::StrCat("Nov  1 ", stamp, " web-1 sshd[1]: Connection closed"));
    ASSERT_THAT(pipeline.ProcessBatch(batch), IsOk());
    real += 300;
  }
  clock_.Set(absl::FromUnixSeconds(real));  // 06:00:00Z; the sender writes 01:10 EST (06:10Z)
  LogBatch batch;
  batch.set_source("web-1");
  batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  for (absl::string_view second : {"00", "05", "09"}) {
    batch.add_records()->set_line(
        absl::StrCat("Nov  1 01:10:", second,
                     " web-1 sshd[1]: Failed password for root from 203.0.113.7 port 22 ssh2"));
  }
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->detections(), 1u);
  EXPECT_EQ(CounterValue(registry, "palisade_decisions_total", {{"change", "stale"}}), 0);
  std::vector<palisade::v1::Decision> all = table.List({});
  ASSERT_THAT(all, SizeIs(1));
  EXPECT_EQ(all[0].start().seconds(), 1'793'513'409);  // 2026-11-01 06:10:09 UTC (01:10:09 EST)
  EXPECT_EQ(table.active_count(), 1u);
}

// A central log's source: one host's line stamped hours ahead (a wrong zone, or forged) must
// not lend its lead to the next lines as skew, carrying the first pass's lines an hour into the
// future (the first version of the skew did: a review found it). The skew lent is a few minutes
// at most (kMaxSkew).
TEST_F(PipelineTest, OneLineFarAheadDoesNotMoveOthersIntoTheSecondPass) {
  absl::TimeZone new_york;
  ASSERT_TRUE(absl::LoadTimeZone("America/New_York", &new_york));
  PipelineOptions options;
  options.time_zone = new_york;
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(), options, clock_, table, registry);
  auto send = [&](int64_t now, const std::vector<std::string>& lines) {
    clock_.Set(absl::FromUnixSeconds(now));
    LogBatch batch;
    batch.set_source("central");
    batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
    for (const std::string& l : lines) batch.add_records()->set_line(l);
    return pipeline.ProcessBatch(batch);
  };
  // 05:20:05Z (01:20:05 EDT): web-1 live; 05:29Z: web-2 stamps 03:00 (08:00Z).
  ASSERT_THAT(send(1'793'510'405, {"Nov  1 01:20:00 web-1 sshd[1]: Connection closed"}), IsOk());
  ASSERT_THAT(send(1'793'510'940, {"Nov  1 03:00:00 web-2 sshd[1]: Connection closed"}), IsOk());
  std::vector<std::string> failures;
  for (absl::string_view second : {"00", "05", "09"}) {
    failures.push_back(absl::StrCat(
        "Nov  1 01:31:", second,
        " web-1 sshd[1]: Failed password for root from 203.0.113.7 port 22 ssh2"));
  }
  absl::StatusOr<palisade::v1::BatchAck> ack = send(1'793'511'070, failures);  // 05:31:10Z
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->detections(), 1u);
  std::vector<palisade::v1::Decision> all = table.List({});
  ASSERT_THAT(all, SizeIs(1));
  EXPECT_EQ(all[0].start().seconds(), 1'793'511'069);  // 2026-11-01 05:31:09 UTC (01:31:09 EDT)
}

// A backlog read in the second pass (palisaded down from 00:50 EDT to 01:10 EST): its lines
// come in a batch read long after they were written (00:55 EDT, an hour and a quarter before
// now), so the stream is not live and nearest-to-previous stands: 01:05 then 01:10 are the
// first pass's, an hour old.
TEST_F(PipelineTest, ABacklogOfTheFirstPassReadInTheSecondStaysInTheFirst) {
  absl::TimeZone new_york;
  ASSERT_TRUE(absl::LoadTimeZone("America/New_York", &new_york));
  clock_.Set(absl::FromUnixSeconds(1'793'508'605));  // 2026-11-01 04:50:05 UTC (00:50:05 EDT)
  PipelineOptions options;
  options.time_zone = new_york;
  std::vector<absl::Time> detected;
  options.on_detections = [&detected](absl::string_view, std::vector<Detection>& fresh,
                                      const std::vector<DecisionUpdate>&) {
    for (const Detection& d : fresh) detected.push_back(d.time);
  };
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(), options, clock_, table, registry);
  LogBatch quiet;
  quiet.set_source("web-1");
  quiet.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  quiet.add_records()->set_line("Nov  1 00:50:00 web-1 sshd[1]: Connection closed");
  ASSERT_THAT(pipeline.ProcessBatch(quiet), IsOk());
  clock_.Set(absl::FromUnixSeconds(1'793'513'430));  // 2026-11-01 06:10:30 UTC (01:10:30 EST)
  LogBatch batch;
  batch.set_source("web-1");
  batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  batch.add_records()->set_line("Nov  1 00:55:00 web-1 sshd[1]: Connection closed");
  batch.add_records()->set_line("Nov  1 01:05:00 web-1 sshd[1]: Connection closed");
  for (absl::string_view second : {"00", "05", "09"}) {
    batch.add_records()->set_line(
        absl::StrCat("Nov  1 01:10:", second,
                     " web-1 sshd[1]: Failed password for root from 203.0.113.7 port 22 ssh2"));
  }
  ASSERT_THAT(pipeline.ProcessBatch(batch), IsOk());
  // 2026-11-01 05:10:09 UTC (01:10:09 EDT): an hour old, its 600 s ban stale.
  EXPECT_THAT(detected, ::testing::ElementsAre(absl::FromUnixSeconds(1'793'509'809)));
  EXPECT_EQ(table.active_count(), 0u);
}

// A host whose clock runs 49 minutes fast writes "01:59" during the first pass (05:10:30Z,
// 01:10:30 EDT); the next line, "01:10", is nearer to it in the second pass (06:10Z), an hour
// ahead of the clock. An occurrence later than now (and a few minutes' skew) has not happened
// yet: the line is the first pass's, and the ban active now.
TEST_F(PipelineTest, ARepeatedHoursOccurrenceAheadOfTheClockIsDropped) {
  absl::TimeZone new_york;
  ASSERT_TRUE(absl::LoadTimeZone("America/New_York", &new_york));
  clock_.Set(absl::FromUnixSeconds(1'793'509'830));  // 2026-11-01 05:10:30 UTC (01:10:30 EDT)
  PipelineOptions options;
  options.time_zone = new_york;
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(), options, clock_, table, registry);
  LogBatch batch;
  batch.set_source("web-1");
  batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  batch.add_records()->set_line("Nov  1 01:59:00 web-2 sshd[1]: Connection closed");
  for (absl::string_view second : {"00", "05", "09"}) {
    batch.add_records()->set_line(
        absl::StrCat("Nov  1 01:10:", second,
                     " web-1 sshd[1]: Failed password for root from 203.0.113.7 port 22 ssh2"));
  }
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->detections(), 1u);
  std::vector<palisade::v1::Decision> all = table.List({});
  ASSERT_THAT(all, SizeIs(1));
  EXPECT_EQ(all[0].start().seconds(), 1'793'509'809);  // 2026-11-01 05:10:09 UTC (01:10:09 EDT)
  EXPECT_EQ(table.active_count(), 1u);
}

// palisadectl ship names its batches "host:/path" by default; it named them by the bare path
// before, and configs key source_time_zones so. Such an entry still gives the zone of the host's
// batches (the host's own entry wins), so lines written in New York are not read as UTC.
TEST_F(PipelineTest, AHostsSourceTakesTheZoneOfItsPathWhenItHasNoneOfItsOwn) {
  absl::TimeZone new_york, berlin;
  ASSERT_TRUE(absl::LoadTimeZone("America/New_York", &new_york));
  ASSERT_TRUE(absl::LoadTimeZone("Europe/Berlin", &berlin));
  clock_.Set(absl::FromUnixSeconds(1'772'560'000));  // 2026-03-03 17:46:40 UTC
  PipelineOptions options;
  options.source_time_zones["/var/log/auth.log"] = new_york;
  options.source_time_zones["web-2:/var/log/auth.log"] = berlin;
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(), options, clock_, table, registry);
  EXPECT_EQ(pipeline.ZoneOf("web-1:/var/log/auth.log"), new_york);
  EXPECT_EQ(pipeline.ZoneOf("web-2:/var/log/auth.log"), berlin);
  EXPECT_EQ(pipeline.ZoneOf("web-1:/var/log/other.log"), absl::UTCTimeZone());
  EXPECT_EQ(pipeline.ZoneOf("auth.log"), absl::UTCTimeZone());
  LogBatch batch;
  batch.set_source("web-1:/var/log/auth.log");
  batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  for (absl::string_view second : {"00", "05", "09"}) {
    batch.add_records()->set_line(
        absl::StrCat("Mar  3 12:40:", second,
                     " web-1 sshd[1]: Failed password for root from 203.0.113.7 port 22 ssh2"));
  }
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->detections(), 1u);
  std::vector<palisade::v1::Decision> all = table.List({});
  ASSERT_THAT(all, SizeIs(1));
  EXPECT_EQ(all[0].start().seconds(), 1'772'559'609);  // 12:40:09 EST is 17:40:09 UTC
}

// In replay a batch is parsed first by Prematch (another thread), its first line against now;
// ProcessLines takes that parse when no other reference could change the line's time. A time
// in the repeated hour is not one: its occurrence follows the stream's previous line, here the
// first pass (05:30Z, 01:30 EDT) though now, a day later, is nearer the second.
TEST_F(PipelineTest, APrematchedLineInTheRepeatedHourFollowsThePreviousLine) {
  absl::TimeZone new_york;
  ASSERT_TRUE(absl::LoadTimeZone("America/New_York", &new_york));
  clock_.Set(absl::FromUnixSeconds(1'793'596'800));  // 2026-11-02 05:20:00 UTC
  PipelineOptions options;
  options.time_zone = new_york;
  options.clamp_future = false;
  options.advance_clock = [](absl::Time) {};
  std::vector<absl::Time> detected;
  options.on_detections = [&detected](absl::string_view, std::vector<Detection>& fresh,
                                      const std::vector<DecisionUpdate>&) {
    for (const Detection& d : fresh) detected.push_back(d.time);
  };
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(), options, clock_, table, registry);
  auto failure = [](absl::string_view time) {
    return absl::StrCat("Nov  1 ", time,
                        " web-1 sshd[1]: Failed password for root from 203.0.113.7 port 22 ssh2");
  };
  // The stream's first lines, dated from an earlier line of the first pass (00:59:00 EDT).
  const std::vector<std::string> first = {"Nov  1 00:59:00 web-1 sshd[1]: Connection closed",
                                          failure("01:30:00"), failure("01:30:10")};
  LineBatch one;
  one.source = "file";
  one.format = LogFormat::LOG_FORMAT_SYSLOG;
  for (const std::string& l : first) one.lines.push_back(l);
  ASSERT_THAT(pipeline.ProcessLines(one), IsOk());
  const std::string third = failure("01:30:20");
  LineBatch two;
  two.source = "file";
  two.format = LogFormat::LOG_FORMAT_SYSLOG;
  two.lines.push_back(third);
  pipeline.Prematch(&two);
  ASSERT_TRUE(two.parsed_kept[0]);
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessLines(two);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->detections(), 1u);
  // 2026-11-01 05:30:20 UTC (01:30:20 EDT); the line a day old, its decision is stale.
  EXPECT_THAT(detected, ::testing::ElementsAre(absl::FromUnixSeconds(1'793'511'020)));
}

// A batch the server's config or build cannot read yet is refused as a precondition, which a
// shipper waits out (the server can be mended); one without a format is an invalid argument,
// which ends `palisadectl ship --follow` (services/cli/follow_shipper.h).
TEST_F(PipelineTest, WhatTheServerCanMendIsAPreconditionNotAnInvalidArgument) {
  LogBatch batch = Backlog({{"203.0.113.7", 1}});
  batch.set_format(LogFormat::LOG_FORMAT_JSON);
  batch.set_json_format("caddy-custom");
  EXPECT_THAT(pipeline_.ProcessBatch(batch),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("caddy-custom")));
  batch.set_format(static_cast<LogFormat>(999));
  EXPECT_THAT(pipeline_.ProcessBatch(batch),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("format 999")));
  batch.set_format(LogFormat::LOG_FORMAT_UNSPECIFIED);
  EXPECT_THAT(pipeline_.ProcessBatch(batch), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(PipelineTest, BatchBecomesAckAndDecision) {
  LogBatch batch;
  batch.set_sequence(7);
  batch.set_source("web-1");
  batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  for (int i = 3; i > 0; --i) batch.add_records()->set_line(Line("203.0.113.7", i));
  batch.add_records()->set_line("garbage");
  batch.add_records()->set_line(Line("127.0.0.1", 1));

  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline_.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->sequence(), 7u);
  EXPECT_EQ(ack->accepted(), 4u);
  EXPECT_EQ(ack->malformed(), 1u);
  EXPECT_EQ(ack->matched(), 3u);
  EXPECT_EQ(ack->ignored(), 1u);
  EXPECT_EQ(ack->detections(), 1u);

  std::vector<palisade::v1::Decision> decisions = table_.List({});
  ASSERT_THAT(decisions, SizeIs(1));
  EXPECT_EQ(decisions[0].target().value(), "203.0.113.7");
  EXPECT_EQ(decisions[0].rule_id(), "ssh-fail");
  EXPECT_THAT(decisions[0].evidence(), SizeIs(3));

  EXPECT_EQ(CounterValue(registry_, "palisade_ingest_lines_received_total",
                         {{"source", "web-1"}, {"format", "syslog"}}),
            5);
  EXPECT_EQ(CounterValue(registry_, "palisade_ingest_lines_malformed_total"), 1);
  EXPECT_EQ(CounterValue(registry_, "palisade_engine_rule_matches_total", {{"rule", "ssh-fail"}}),
            3);
  EXPECT_EQ(CounterValue(registry_, "palisade_engine_detections_total", {{"rule", "ssh-fail"}}), 1);
  EXPECT_EQ(CounterValue(registry_, "palisade_decisions_total",
                         {{"rule", "ssh-fail"}, {"action", "block"}, {"change", "created"}}),
            1);
  EXPECT_EQ(CounterValue(registry_, "palisade_decisions_active"), 1);
}

TEST_F(PipelineTest, RecordEventTimeWinsOverTheLine) {
  LogBatch batch;
  batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  // The lines say "now", but the shipper says they are three hours old: too old to act on.
  for (int i = 0; i < 3; ++i) {
    auto* r = batch.add_records();
    r->set_line(Line("203.0.113.7", 0));
    *r->mutable_event_time() = ToProtoTime(clock_.TimeNow() - absl::Hours(3));
  }
  ASSERT_THAT(pipeline_.ProcessBatch(batch), IsOk());
  EXPECT_EQ(table_.active_count(), 0u);
  EXPECT_EQ(CounterValue(registry_, "palisade_decisions_total", {{"change", "stale"}}), 1);
}

TEST_F(PipelineTest, LongLinesAreCutAndCounted) {
  PipelineOptions options;
  options.max_line_bytes = 40;
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(), options, clock_, table, registry);
  LogBatch batch;
  batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  batch.add_records()->set_line(Line("203.0.113.7", 0) + std::string(10000, 'x'));
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->truncated(), 1u);
  EXPECT_EQ(ack->matched(), 0u);  // the cut line lost its address
}

// A line cut at max_line_bytes is matched as far as it goes, but its cut end is not the end
// its writer wrote: a rule pinned to the end (`... ip=(?P<ip>...)$`, the key after a user name)
// must not key a forged tail that a ~cap-long user name put right before the cut.
TEST_F(PipelineTest, ACutLineCannotEndInAForgedTail) {
  constexpr absl::string_view kPinned = R"pb(
    rules {
      id: "app-login"
      formats: LOG_FORMAT_RAW
      patterns: "^Failed Login: username=.* ip=(?P<ip>[0-9.]+)$"
      threshold { count: 1 }
      decision { action: ACTION_BLOCK duration { seconds: 600 } }
    }
  )pb";
  const std::string forged = "Failed Login: username=" + std::string(200, 'A') +
                             " ip=198.51.100.66";
  const std::string line = forged + " ip=203.0.113.5";
  for (const size_t cap : {forged.size(), line.size() + 10}) {
    PipelineOptions options;
    options.max_line_bytes = cap;
    prometheus::Registry registry;
    DecisionTable table(clock_);
    Pipeline pipeline(*RuleSet::Compile({*ParseRulePack(kPinned, "pinned.textproto")}), options,
                      clock_, table, registry);
    LogBatch batch;
    batch.set_format(LogFormat::LOG_FORMAT_RAW);
    batch.add_records()->set_line(line);
    absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessBatch(batch);
    ASSERT_THAT(ack, IsOk());
    std::vector<std::string> keys;
    for (const auto& d : table.List({})) keys.push_back(d.target().value());
    if (cap == forged.size()) {
      EXPECT_EQ(ack->truncated(), 1u);
      EXPECT_THAT(keys, ::testing::IsEmpty()) << "the cut line keyed its forged tail";
      // As a file input hands it on: cut one byte past the cap, and that byte a CR (a raw
      // client field may hold one); without it the line looked whole.
      LogBatch as_read;
      as_read.set_format(LogFormat::LOG_FORMAT_RAW);
      as_read.add_records()->set_line(forged + "\r");
      absl::StatusOr<palisade::v1::BatchAck> read = pipeline.ProcessBatch(as_read);
      ASSERT_THAT(read, IsOk());
      EXPECT_EQ(read->truncated(), 1u);
      EXPECT_THAT(table.List({}), ::testing::IsEmpty()) << "a CR past the cap hid the cut";
    } else {
      EXPECT_EQ(ack->truncated(), 0u);
      EXPECT_THAT(keys, ::testing::ElementsAre("203.0.113.5"));  // the writer's own tail
    }
  }
}

// A line the shipper cut at its own cap (`palisadectl ship`: 1 MiB, --follow: 64 KiB) comes
// flagged (LogRecord.cut): under a larger cap here it would look whole, its cut end taken for
// its writer's, so it is cut here too. Unflagged, the same bytes are a whole line.
TEST_F(PipelineTest, ALineTheShipperCutIsCutWhateverTheCap) {
  constexpr absl::string_view kPinned = R"pb(
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
  const std::string forged =
      "Failed Login: username=" + std::string(200, 'A') + " ip=198.51.100.66";
  for (const bool cut : {true, false}) {
    PipelineOptions options;
    options.max_line_bytes = forged.size() + 1000;  // the server's cap: above the shipper's
    prometheus::Registry registry;
    DecisionTable table(clock_);
    Pipeline pipeline(*RuleSet::Compile({*ParseRulePack(kPinned, "pinned.textproto")}), options,
                      clock_, table, registry);
    LogBatch batch;
    batch.set_format(LogFormat::LOG_FORMAT_RAW);
    palisade::v1::LogRecord* record = batch.add_records();
    record->set_line(forged);
    record->set_cut(cut);
    absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessBatch(batch);
    ASSERT_THAT(ack, IsOk());
    std::vector<std::string> keys;
    for (const auto& d : table.List({})) keys.push_back(d.target().value());
    if (cut) {
      EXPECT_EQ(ack->truncated(), 1u);
      EXPECT_THAT(keys, ::testing::IsEmpty()) << "the shipper's cut line keyed its forged tail";
    } else {
      EXPECT_EQ(ack->truncated(), 0u);
      EXPECT_THAT(keys, ::testing::ElementsAre("198.51.100.66"));  // whole: its writer's end
    }
  }
}

// The same through Prematch (the file inputs' threads parse and match ahead): the line it cut is
// flagged cut there, so the parse ProcessLines takes from it keys no forged tail either.
TEST_F(PipelineTest, ACutLinePrematchedCannotEndInAForgedTail) {
  constexpr absl::string_view kPinned = R"pb(
    rules {
      id: "app-login"
      formats: LOG_FORMAT_RAW
      patterns: "^Failed Login: username=.* ip=(?P<ip>[0-9.]+)$"
      threshold { count: 1 }
      decision { action: ACTION_BLOCK duration { seconds: 600 } }
    }
  )pb";
  const std::string forged = "Failed Login: username=" + std::string(200, 'A') +
                             " ip=198.51.100.66";
  const std::string line = forged + " ip=203.0.113.5";
  for (const size_t cap : {forged.size(), line.size() + 10}) {
    PipelineOptions options;
    options.max_line_bytes = cap;
    prometheus::Registry registry;
    DecisionTable table(clock_);
    Pipeline pipeline(*RuleSet::Compile({*ParseRulePack(kPinned, "pinned.textproto")}), options,
                      clock_, table, registry);
    LineBatch batch;
    batch.format = LogFormat::LOG_FORMAT_RAW;
    batch.lines.push_back(line);
    pipeline.Prematch(&batch);
    ASSERT_EQ(batch.parsed_kept.size(), 1u);
    ASSERT_TRUE(batch.parsed_kept[0]);  // ProcessLines takes Prematch's parse
    absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessLines(batch);
    ASSERT_THAT(ack, IsOk());
    std::vector<std::string> keys;
    for (const auto& d : table.List({})) keys.push_back(d.target().value());
    if (cap == forged.size()) {
      EXPECT_EQ(ack->truncated(), 1u);
      EXPECT_THAT(keys, ::testing::IsEmpty()) << "the cut line keyed its forged tail";
    } else {
      EXPECT_EQ(ack->truncated(), 0u);
      EXPECT_THAT(keys, ::testing::ElementsAre("203.0.113.5"));  // the writer's own tail
    }
  }
}

// The Ingest fast path's batch (lines as views, no LogRecord) carries a shipper's cut per line
// (LineBatch::cut): a line it flagged is cut here too, whatever this cap, with or without
// Prematch. It was taken whole, its cut end for its writer's, keying the forged tail.
TEST_F(PipelineTest, ALineTheShipperCutIsCutInALineBatch) {
  constexpr absl::string_view kPinned = R"pb(
    rules {
      id: "app-login"
      formats: LOG_FORMAT_RAW
      patterns: "^Failed Login: username=.* ip=(?P<ip>[0-9.]+)$"
      threshold { count: 1 }
      decision { action: ACTION_BLOCK duration { seconds: 600 } }
    }
  )pb";
  const std::string forged =
      "Failed Login: username=" + std::string(200, 'A') + " ip=198.51.100.66";
  for (const bool prematch : {false, true}) {
    for (const bool cut : {true, false}) {
      PipelineOptions options;
      options.max_line_bytes = forged.size() + 1000;  // above the shipper's cut
      prometheus::Registry registry;
      DecisionTable table(clock_);
      Pipeline pipeline(*RuleSet::Compile({*ParseRulePack(kPinned, "pinned.textproto")}),
                        options, clock_, table, registry);
      LineBatch batch;
      batch.format = LogFormat::LOG_FORMAT_RAW;
      batch.lines = {forged, "Failed Login: username=bob ip=203.0.113.5"};
      batch.cut = {cut};  // shorter than the lines: the second is whole
      if (prematch) pipeline.Prematch(&batch);
      absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessLines(batch);
      ASSERT_THAT(ack, IsOk());
      std::vector<std::string> keys;
      for (const auto& d : table.List({})) keys.push_back(d.target().value());
      std::sort(keys.begin(), keys.end());
      if (cut) {
        EXPECT_EQ(ack->truncated(), 1u) << "prematch=" << prematch;
        EXPECT_THAT(keys, ::testing::ElementsAre("203.0.113.5"))
            << "the shipper's cut line keyed its forged tail (prematch=" << prematch << ")";
      } else {
        EXPECT_EQ(ack->truncated(), 0u);
        EXPECT_THAT(keys, ::testing::ElementsAre("198.51.100.66", "203.0.113.5"));
      }
    }
  }
}

// A restart restores the active decisions before the pipeline is built: its gauge of active
// decisions starts at their number. It started at 0 and moved only with the next change, so a
// restarted daemon with a thousand bans in force reported none until a new detection.
TEST_F(PipelineTest, TheActiveGaugeStartsWithTheDecisionsTheTableHolds) {
  DecisionTable table(clock_);
  palisade::v1::DecisionSpec spec;
  spec.set_action(palisade::v1::ACTION_BLOCK);
  *spec.mutable_duration() = ToProtoDuration(absl::Hours(1));
  for (const char* ip : {"203.0.113.7", "203.0.113.8"}) {
    Detection d;
    d.rule_id = "ssh-fail";
    d.key = ip;
    d.time = clock_.TimeNow();
    table.Apply(d, spec);
  }
  ASSERT_EQ(table.active_count(), 2u);
  prometheus::Registry registry;
  Pipeline pipeline(Rules(), PipelineOptions(), clock_, table, registry);
  EXPECT_EQ(CounterValue(registry, "palisade_decisions_active"), 2);
}

// A source is written by the client: per-source state costs the same whatever its length, and
// past the cap new sources share one state (counted) instead of growing memory.
TEST_F(PipelineTest, PerSourceStateIsBoundedInCountAndBytes) {
  PipelineOptions options;
  options.max_streams = 3;
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(), options, clock_, table, registry);
  for (int i = 0; i < 10; ++i) {
    LogBatch batch;
    batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
    batch.set_source(absl::StrCat(i, std::string(1 << 20, 'x')));  // 1 MiB sources
    batch.add_records()->set_line(Line("203.0.113.7", i));
    ASSERT_THAT(pipeline.ProcessBatch(batch), IsOk());
  }
  EXPECT_EQ(pipeline.streams(), 3u);
  EXPECT_EQ(pipeline.streams_overflowed(), 7u);
  EXPECT_EQ(CounterValue(registry, "palisade_ingest_streams_overflow_total"), 7);
  // The lines of overflowed sources still count: three failures from one address, detected.
  EXPECT_EQ(table.active_count(), 1u);
}

// Two senders of one source (a syslog receiver's peers, LogBatch.stream), one whose times read
// 5 hours behind the other's (its zone named nowhere, or a wrong clock): its windows age by its
// own latest time, so its slow brute force, one attempt per sweep, reaches the threshold. In
// the source's one stream the other sender's time aged them: each sweep dropped the window.
TEST_F(PipelineTest, ASendersWindowsAgeByItsOwnTimeNotItsSourcesOthers) {
  auto batch = [&](absl::string_view sender, absl::string_view ip, int seconds_ago) {
    LogBatch b;
    b.set_source("central");
    b.set_stream(std::string(sender));
    b.set_format(LogFormat::LOG_FORMAT_SYSLOG);
    b.add_records()->set_line(Line(ip, seconds_ago));
    return b;
  };
  ASSERT_THAT(pipeline_.ProcessBatch(batch("192.0.2.1", "198.51.100.1", 0)), IsOk());
  uint32_t detections = 0;
  for (int i = 0; i < 3; ++i) {
    pipeline_.ExpireWindows();
    absl::StatusOr<palisade::v1::BatchAck> ack =
        pipeline_.ProcessBatch(batch("192.0.2.2", "203.0.113.7", 5 * 3600 - 10 * i));
    ASSERT_THAT(ack, IsOk());
    detections += ack->detections();
    clock_.Advance(absl::Seconds(10));
  }
  EXPECT_EQ(detections, 1u);
  EXPECT_EQ(pipeline_.streams(), 2u);  // a stream per sender; the source's own is not needed
}

// Senders may be forged (UDP): past max_sender_streams a new sender's lines go in its source's
// stream, and still count.
TEST_F(PipelineTest, SenderStreamsAreBoundedAndPastItTheSourcesStreamCounts) {
  PipelineOptions options;
  options.max_sender_streams = 2;
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(), options, clock_, table, registry);
  for (int i = 0; i < 5; ++i) {
    LogBatch batch = Backlog({{"203.0.113.7", 5 - i}});
    batch.set_stream(absl::StrCat("192.0.2.", i));
    ASSERT_THAT(pipeline.ProcessBatch(batch), IsOk());
  }
  EXPECT_EQ(pipeline.streams(), 3u);  // two senders', then the source's for the other three
  EXPECT_EQ(pipeline.streams_overflowed(), 0u);
  EXPECT_EQ(table.active_count(), 1u);  // the lines count, whatever their stream
  // Each batch that went in its source's stream instead is counted (no sender label).
  EXPECT_EQ(CounterValue(registry, "palisade_ingest_sender_streams_folded_total"), 3);
}

// Streams are never shared past their use: one with no batch for longer than a day, plus a
// day (a line may be dated that far ahead) and the longest window or session ttl (10 minutes
// here), has nothing left that ages by it and gives its place to a new source. Before, the
// places of sources (and forged senders) that stopped were held for good: past max_streams,
// every new source's windows aged on the clock.
TEST_F(PipelineTest, IdleStreamsAreFreedForNewSources) {
  PipelineOptions options;
  options.max_streams = 2;
  options.max_sender_streams = 2;
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(), options, clock_, table, registry);
  auto batch = [&](absl::string_view source, absl::string_view sender) {
    LogBatch b = Backlog({{"203.0.113.7", 0}});
    b.set_source(std::string(source));
    b.set_stream(std::string(sender));
    return b;
  };
  ASSERT_THAT(pipeline.ProcessBatch(batch("a", "")), IsOk());
  ASSERT_THAT(pipeline.ProcessBatch(batch("b", "192.0.2.1")), IsOk());
  ASSERT_EQ(pipeline.streams(), 2u);
  const absl::Duration idle = absl::Hours(48) + absl::Minutes(10);
  clock_.Advance(idle);
  ASSERT_THAT(pipeline.ProcessBatch(batch("a", "")), IsOk());  // "a" goes on
  pipeline.ExpireWindows();
  EXPECT_EQ(pipeline.streams(), 2u);  // "b"'s sender idle for exactly that: kept
  ASSERT_THAT(pipeline.ProcessBatch(batch("c", "")), IsOk());
  EXPECT_EQ(pipeline.streams_overflowed(), 1u);
  clock_.Advance(absl::Seconds(1));
  pipeline.ExpireWindows();
  EXPECT_EQ(pipeline.streams(), 1u);  // "b"'s sender freed; "a" kept
  // "c" has a stream of its own now (the freed id), whose windows age by its own time, not on
  // the clock: a backlog an hour old continues across the sweep (as
  // BacklogWindowsAgeInEventTimeAcrossTheSweep).
  LogBatch old = batch("c", "");
  old.clear_records();
  old.add_records()->set_line(Line("198.51.100.9", 3600));
  old.add_records()->set_line(Line("198.51.100.9", 3590));
  ASSERT_THAT(pipeline.ProcessBatch(old), IsOk());
  EXPECT_EQ(pipeline.streams(), 2u);
  EXPECT_EQ(pipeline.streams_overflowed(), 1u);
  pipeline.ExpireWindows();
  old.clear_records();
  old.add_records()->set_line(Line("198.51.100.9", 3580));
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessBatch(old);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->detections(), 1u);
}

// stream_idle_bound is how long ExpireWindows keeps an idle stream, with the rules loaded now:
// a syslog receiver keeps its senders' and hosts' places that long (palisaded sets its
// host_stream_idle from it), so it never names more streams than it has places.
TEST_F(PipelineTest, StreamIdleBoundIsWhatExpireWindowsKeeps) {
  PipelineOptions options;
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(), options, clock_, table, registry);
  // A day, kFutureHorizon and the session ttl (10 minutes, longer than the rule's minute).
  EXPECT_EQ(pipeline.stream_idle_bound(), absl::Hours(48) + absl::Minutes(10));
  // A rule with a 20-hour window makes it longer, and ExpireWindows keeps streams that long.
  pipeline.SetRules(*RuleSet::Compile({*ParseRulePack(
      absl::StrReplaceAll(kPack, {{"window { seconds: 60 }", "window { seconds: 72000 }"}}),
      "long.textproto")}));
  const absl::Duration bound = pipeline.stream_idle_bound();
  EXPECT_EQ(bound, absl::Hours(68));
  LogBatch b = Backlog({{"203.0.113.7", 0}});
  b.set_stream("192.0.2.1");
  ASSERT_THAT(pipeline.ProcessBatch(b), IsOk());
  const size_t streams = pipeline.streams();
  clock_.Advance(bound);
  pipeline.ExpireWindows();
  EXPECT_EQ(pipeline.streams(), streams);
  clock_.Advance(absl::Seconds(1));
  pipeline.ExpireWindows();
  EXPECT_LT(pipeline.streams(), streams);
}

}  // namespace

// Holds rules_mu_ as a reload's SetRules does, while `during` runs.
class PipelineRulesLockPeer {
 public:
  static void WhileRulesLockHeld(Pipeline& pipeline, const std::function<void()>& during) {
    absl::MutexLock lock(&pipeline.rules_mu_);
    during();
  }
};

namespace {

// stream_idle_bound follows SetRules both ways, and takes no lock: a syslog receiver reads it
// under its batch lock, and a reader of rules_mu_ queues behind a reload's writer (absl), which
// would park UDP, every TCP/TLS connection and the flush timer through the reload. The writer is
// held here outright (a reader that waits for it fails the same way, after the wide margin).
TEST_F(PipelineTest, StreamIdleBoundFollowsSetRulesAndTakesNoLock) {
  PipelineOptions options;
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(), options, clock_, table, registry);
  pipeline.SetRules(*RuleSet::Compile({*ParseRulePack(
      absl::StrReplaceAll(kPack, {{"window { seconds: 60 }", "window { seconds: 72000 }"}}),
      "long.textproto")}));
  EXPECT_EQ(pipeline.stream_idle_bound(), absl::Hours(68));
  pipeline.SetRules(Rules());
  EXPECT_EQ(pipeline.stream_idle_bound(), absl::Hours(48) + absl::Minutes(10));

  absl::Notification read;
  absl::Duration bound;
  bool returned = false;
  std::thread reader;
  PipelineRulesLockPeer::WhileRulesLockHeld(pipeline, [&] {
    reader = std::thread([&] {
      bound = pipeline.stream_idle_bound();
      read.Notify();
    });
    returned = read.WaitForNotificationWithTimeout(absl::Seconds(30));
  });
  reader.join();
  EXPECT_TRUE(returned) << "stream_idle_bound waited for rules_mu_";
  EXPECT_EQ(bound, absl::Hours(48) + absl::Minutes(10));
}

// The engine's byte bounds reach Prometheus through the pipeline, each under its own name and
// label: evictions by the key cap and by the memory budget are told apart, cut evidence counted.
TEST_F(PipelineTest, EngineBoundsArePublishedAsMetrics) {
  PipelineOptions options;
  options.engine.max_keys_per_rule = 1;
  options.engine.max_evidence_bytes = 256;
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(), options, clock_, table, registry);
  LogBatch batch;
  batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  for (int i = 1; i <= 3; ++i) {
    // Long lines (the user name) whose evidence must be cut; three addresses for one slot.
    batch.add_records()->set_line(absl::StrCat(
        absl::FormatTime("%b %e %H:%M:%S", clock_.TimeNow(), absl::UTCTimeZone()),
        " web-1 sshd[1]: Failed password for ", std::string(600, 'u'), " from 203.0.113.", i,
        " port 22 ssh2"));
  }
  ASSERT_THAT(pipeline.ProcessBatch(batch), IsOk());
  EXPECT_EQ(CounterValue(registry, "palisade_engine_windows_evicted_total",
                         {{"reason", "key_cap"}}),
            2);
  EXPECT_EQ(CounterValue(registry, "palisade_engine_windows_evicted_total",
                         {{"reason", "memory_budget"}}),
            0);
  EXPECT_EQ(CounterValue(registry, "palisade_engine_evidence_truncated_total"), 3);
  EXPECT_GT(CounterValue(registry, "palisade_engine_memory_bytes"), 0);
}

// Three yearless sshd failures on 3 March, 11:50 to 11:52, from three addresses.
void AddYearlessFailures(LogBatch* batch) {
  for (int i = 0; i < 3; ++i) {
    batch->add_records()->set_line(absl::StrCat(
        "Mar  3 11:5", i, ":00 web-1 sshd[1]: Failed password for root from 203.0.113.", i,
        " port 22 ssh2"));
  }
}

// A line whose time is refused (before 2000) or clamped (a day and more ahead) is no reference
// for the year of the yearless lines after it: one sender with a clock in 2099 made every later
// yearless line of its source 2099, clamped to now (a backlog squeezed into one instant).
TEST_F(PipelineTest, ARefusedOrClampedTimeIsNoReferenceForTheNextYearlessLine) {
  clock_.Set(absl::FromUnixSeconds(1'772'539'200));  // 2026-03-03 12:00:00 UTC
  for (absl::string_view absurd : {"2099-01-01T00:00:00Z", "1970-01-01T00:00:12Z"}) {
    SCOPED_TRACE(absurd);
    LogBatch batch;
    batch.set_source(absl::StrCat("web-", absurd.substr(0, 4)));
    batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
    batch.add_records()->set_line(
        absl::StrCat(absurd, " web-1 kernel: clock not set"));
    AddYearlessFailures(&batch);
    absl::StatusOr<palisade::v1::BatchAck> ack = pipeline_.ProcessBatch(batch);
    ASSERT_THAT(ack, IsOk());
    EXPECT_EQ(ack->clamped(), 1u);
    EXPECT_EQ(ack->accepted(), absurd[0] == '2' ? 4u : 3u);
  }
  // Replay (the clock follows the log, nothing clamped): a refused 1970 line is no reference
  // either (every later yearless line was read in 1970 and refused, to the end of the file).
  PipelineOptions replay;
  replay.clamp_future = false;
  replay.advance_clock = [](absl::Time) {};
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(), replay, clock_, table, registry);
  LogBatch batch;
  batch.set_source("file");
  batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  batch.add_records()->set_line("Mar  3 11:49:00 web-1 sshd[1]: Connection closed");
  batch.add_records()->set_line("1970-01-01T00:00:12Z web-1 kernel: clock not set");
  AddYearlessFailures(&batch);
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->malformed(), 1u);
  EXPECT_EQ(ack->accepted(), 4u);
}

// The same with the client's event time standing in for the line's: the event time is good, the
// line's own 2099 stamp is not, and it is no reference for the year either (it was: the yearless
// lines after it were read in 2099 and clamped to now).
TEST_F(PipelineTest, ALinesAbsurdStampUnderAGoodEventTimeIsNoReferenceForTheYear) {
  clock_.Set(absl::FromUnixSeconds(1'772'539'200));  // 2026-03-03 12:00:00 UTC
  LogBatch batch;
  batch.set_source("web-1");
  batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  palisade::v1::LogRecord* record = batch.add_records();
  record->set_line("2099-01-01T00:00:00Z web-1 kernel: clock not set");
  *record->mutable_event_time() = ToProtoTime(clock_.TimeNow());
  AddYearlessFailures(&batch);
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline_.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->clamped(), 0u);
  EXPECT_EQ(ack->accepted(), 4u);
}

// A rule's match counter is cumulative across reloads, even when the rule is removed and added
// again (the engine's total for it starts over at 0; the counter kept its old value and took
// nothing until the new total passed it).
TEST_F(PipelineTest, ARulesMatchCounterKeepsCountingWhenTheRuleComesBack) {
  auto ship = [&](int lines) {
    LogBatch batch;
    batch.set_source("web-1");
    batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
    for (int i = 0; i < lines; ++i) {
      batch.add_records()->set_line(Line(absl::StrCat("203.0.113.", i), 10 - i));
    }
    ASSERT_THAT(pipeline_.ProcessBatch(batch), IsOk());
  };
  const std::map<std::string, std::string> label = {{"rule", "ssh-fail"}};
  ship(3);
  EXPECT_EQ(CounterValue(registry_, "palisade_engine_rule_matches_total", label), 3);
  pipeline_.SetRules(*RuleSet::Compile({*ParseRulePack(
      absl::StrReplaceAll(kPack, {{"\"ssh-fail\"", "\"other\""}}), "other.textproto")}));
  pipeline_.SetRules(Rules());
  ship(2);
  EXPECT_EQ(CounterValue(registry_, "palisade_engine_rule_matches_total", label), 5);
}

// A reload that allowlists an address ends the decisions already made on it: the engine's
// allowlist only stops new detections.
TEST_F(PipelineTest, AReloadedAllowlistEndsDecisionsOnIt) {
  std::vector<DecisionUpdate> heard;
  const uint64_t listener =
      table_.AddListener([&heard](const DecisionUpdate& u) { heard.push_back(u); });
  const std::shared_ptr<const RuleSet> one_strike = *RuleSet::Compile(
      {*ParseRulePack(absl::StrReplaceAll(kPack, {{"count: 3", "count: 1"}}), "one.textproto")});
  pipeline_.SetRules(one_strike);
  ASSERT_THAT(pipeline_.ProcessBatch(Backlog({{"203.0.113.7", 1}, {"198.51.100.9", 1}})), IsOk());
  ASSERT_EQ(table_.active_count(), 2u);
  heard.clear();
  pipeline_.SetRules(one_strike, *CidrSet::Parse({"203.0.113.0/28"}));
  DecisionFilter on_it;
  on_it.target = "203.0.113.7";
  on_it.active_only = true;
  EXPECT_THAT(table_.List(on_it), SizeIs(0));
  ASSERT_THAT(heard, SizeIs(1));
  EXPECT_EQ(heard[0].change, DecisionChange::kWithdrawn);
  EXPECT_EQ(heard[0].decision.target().value(), "203.0.113.7");
  EXPECT_EQ(table_.active_count(), 1u);  // 198.51.100.9 keeps its decision
  EXPECT_EQ(CounterValue(registry_, "palisade_decisions_total", {{"change", "withdrawn"}}), 1);
  // A reload that names no allowlist leaves the decisions as they are.
  pipeline_.SetRules(one_strike);
  EXPECT_EQ(table_.active_count(), 1u);
  table_.RemoveListener(listener);
}

TEST_F(PipelineTest, HostileBytesAndAbsurdTimesAreCountedNotFatal) {
  LogBatch batch;
  batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  std::string nul = Line("203.0.113.7", 3);
  nul += std::string("\0\0 trailing", 11);
  batch.add_records()->set_line(nul);
  batch.add_records()->set_line(Line("203.0.113.7", 2) + " \xff\xfe bad utf-8");
  auto* future = batch.add_records();
  future->set_line(Line("203.0.113.7", 1));
  *future->mutable_event_time() = ToProtoTime(clock_.TimeNow() + absl::Hours(24 * 365));
  auto* ancient = batch.add_records();
  ancient->set_line(Line("203.0.113.9", 1));
  *ancient->mutable_event_time() = ToProtoTime(absl::FromUnixSeconds(1000));
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline_.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->sanitized(), 2u);
  EXPECT_EQ(ack->clamped(), 2u);
  EXPECT_EQ(ack->malformed(), 1u);
  EXPECT_EQ(ack->matched(), 3u);  // the NUL line, the bad UTF-8 line, the clamped future line
  ASSERT_EQ(table_.active_count(), 1u);
  const std::vector<palisade::v1::Decision> decisions = table_.List({});
  for (const auto& e : decisions[0].evidence()) {
    EXPECT_EQ(e.find('\0'), std::string::npos);
  }
}

// A byte that is no UTF-8 (a cp1252 quote, a stray \xff) matches no class of a pattern, not
// even `.`: a client that got one into the user name before "from <ip>" made its failures
// match no rule, and a token next to one was neither revoked nor redacted. Each such byte is
// matched as '?' (and the evidence shows it so), valid UTF-8 as it is.
TEST_F(PipelineTest, InvalidUtf8BeforeTheKeyDoesNotHideTheLine) {
  LogBatch batch;
  batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  for (int i = 0; i < 3; ++i) {
    std::string line = Line("203.0.113.7", 3 - i);
    line.replace(line.find("root"), 4, i == 0 ? "\x93r\xf6\xf6t\x94" : "r\xc3\xb6\xc3\xb6t\xff");
    batch.add_records()->set_line(line);
  }
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline_.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->sanitized(), 3u);
  EXPECT_EQ(ack->matched(), 3u);
  ASSERT_EQ(table_.active_count(), 1u);
  const palisade::v1::Decision d = table_.List({})[0];
  EXPECT_EQ(d.target().value(), "203.0.113.7");
  ASSERT_THAT(d.evidence(), SizeIs(3));
  EXPECT_THAT(d.evidence(0), ::testing::HasSubstr("for ?r??t? from"));
  EXPECT_THAT(d.evidence(1), ::testing::HasSubstr("for r\xc3\xb6\xc3\xb6t? from"));
}

TEST(Utf8Test, EachInvalidByteBecomesAQuestionMark) {
  std::string s = "ok \xc3\xa9 \xff \xc3 \xe2\x82\xac \xed\xa0\x80 \xf0\x9f\x98\x80\xc0\xaf";
  const size_t size = s.size();
  ReplaceInvalidUtf8(&s);
  EXPECT_EQ(s, "ok \xc3\xa9 ? ? \xe2\x82\xac ??? \xf0\x9f\x98\x80??");
  EXPECT_EQ(s.size(), size);
  EXPECT_TRUE(IsValidUtf8(s));
}

// PrepareLine reads lines 16 and then 8 bytes at a time before it looks byte by byte: a NUL, a
// byte that is never UTF-8, a cut character and a whole one, at every place of a line (in a
// block, across two, in the tail), are each counted (or not) as a byte-by-byte look counts them.
TEST_F(PipelineTest, HostileBytesAreFoundWhereverTheyStand) {
  const std::string base = Line("203.0.113.7", 1);
  ASSERT_GT(base.size(), 48u);
  LogBatch batch;
  batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  size_t hostile = 0;
  for (size_t k = 0; k < base.size(); ++k) {
    std::string nul = base, bad = base, cut = base, whole = base;
    nul[k] = '\0';
    bad[k] = '\xff';
    cut.insert(k, "\xc3");
    whole.insert(k, "\xc3\xa9");
    for (const std::string* line : {&nul, &bad, &cut, &whole}) {
      batch.add_records()->set_line(*line);
    }
    hostile += 3;
  }
  // Lengths around the block sizes, ending in a NUL and in a cut character.
  for (size_t n : {7, 8, 9, 15, 16, 17, 23, 24, 31, 32, 33}) {
    batch.add_records()->set_line(base.substr(0, n - 1) + std::string(1, '\0'));
    batch.add_records()->set_line(base.substr(0, n - 1) + "\xe2");
    batch.add_records()->set_line(base.substr(0, n));  // plain
    hostile += 2;
  }
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline_.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->sanitized(), hostile);
}

// Prematch (on another thread, in replay and the file inputs) looks at each line's hostile
// bytes; ProcessLines then takes its answer instead of looking again. A batch of lines with NULs,
// invalid UTF-8, a CR LF ending and over-long lines gets the same ack and decisions with
// Prematch as without, and with every Set's lines walked side by side (the lines that are
// copies prematched one at a time between them).
TEST_F(PipelineTest, APrematchedBatchCountsHostileBytesAsAnotherDoes) {
  std::vector<std::string> lines;
  for (int i = 0; i < 3; ++i) {
    lines.push_back(Line("203.0.113.7", 9 - i) + std::string("\0 nul", 5));
    lines.push_back(Line("203.0.113.8", 9 - i) + " \xff\xfe bad utf-8");
    lines.push_back(Line("203.0.113.9", 9 - i) + "\r\n");
    lines.push_back(Line("203.0.113.10", 9 - i) + std::string(300, 'x'));
    lines.push_back(Line("203.0.113.11", 9 - i).substr(0, 60) + "\xc3");  // cut mid-character
  }
  PipelineOptions options;
  options.max_line_bytes = 150;
  std::vector<palisade::v1::BatchAck> acks;
  std::vector<std::vector<std::string>> decided;
  for (int prematch : {0, 1, 2}) {  // no Prematch; Prematch; walking every Set side by side
    prometheus::Registry registry;
    DecisionTable table(clock_);
    options.engine.walk_ahead_bytes = prematch == 2 ? 0 : EngineOptions().walk_ahead_bytes;
    Pipeline pipeline(Rules(), options, clock_, table, registry);
    LineBatch batch;
    batch.format = LogFormat::LOG_FORMAT_SYSLOG;
    for (const std::string& l : lines) batch.lines.push_back(l);
    if (prematch) {
      pipeline.Prematch(&batch);
      ASSERT_EQ(std::count(batch.parsed_kept.begin(), batch.parsed_kept.end(), true), 6)
          << "all but the NUL and invalid UTF-8 lines, which are copies with those replaced";
    }
    absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessLines(batch);
    ASSERT_THAT(ack, IsOk());
    acks.push_back(*ack);
    // Each decision's target and evidence: the lines as prepared (their CR LF dropped, the long
    // ones cut), whoever prepared them.
    decided.emplace_back();
    for (const auto& d : table.List({})) {
      decided.back().push_back(
          absl::StrCat(d.target().value(), ": ", absl::StrJoin(d.evidence(), " | ")));
    }
    std::sort(decided.back().begin(), decided.back().end());
  }
  EXPECT_EQ(acks[1].sanitized(), 9u);  // the NUL, bad UTF-8 and cut lines
  EXPECT_EQ(acks[1].truncated(), 3u);
  EXPECT_EQ(acks[0].DebugString(), acks[1].DebugString());
  EXPECT_EQ(acks[0].DebugString(), acks[2].DebugString());
  EXPECT_EQ(decided[0], decided[1]);
  EXPECT_EQ(decided[0], decided[2]);
  EXPECT_THAT(decided[1], ::testing::Contains(::testing::StartsWith("203.0.113.8: ")));
  EXPECT_THAT(decided[1], ::testing::Contains(::testing::StartsWith("203.0.113.10: ")));
  for (const std::string& d : decided[1]) {
    EXPECT_THAT(d, ::testing::Not(::testing::HasSubstr("\r")));
    EXPECT_THAT(d, ::testing::Not(::testing::HasSubstr(std::string(150, 'x'))));
  }
}

// Prematch (replay's other threads) also normalises each key its lines' captures give (the
// address parsed and written in canonical form, the allowlist asked, the window hash taken)
// and looks for token shapes in the lines that may count, so the ordered thread does neither.
// Non-canonical IPv6 keys, allowlisted and loopback addresses, keys that are no address,
// token-shaped user names (whose evidence is redacted) and more keys than a window table's
// first sizes, in two batches of which the first is prematched and the second not (the same
// windows found both ways), get the same acks, engine counts and decisions (with their
// evidence) as without Prematch.
TEST_F(PipelineTest, APrematchedBatchCountsKeysAndEvidenceAsAnotherDoes) {
  const std::string token = "cfut_ab12CD34ef56GH78ij90KL12mn34OP56qr78ST90";  // a token's shape
  std::vector<std::string> lines;
  size_t first_batch = 0;  // lines of the first two rounds
  for (int round = 0; round < 3; ++round) {
    if (round == 2) first_batch = lines.size();
    const int ago = 30 - round;
    lines.push_back(Line("2001:DB8:0:0::7", ago));
    lines.push_back(Line("2001:db8::0:7", ago));  // the same address, written another way
    lines.push_back(Line("198.51.100.5", ago));  // allowlisted
    lines.push_back(Line("127.0.0.1", ago));     // loopback: always allowlisted
    lines.push_back(Line("999.1.2.3", ago));     // no address
    std::string shaped = Line("203.0.113.77", ago);
    shaped.replace(shaped.find("root"), 4, token);
    lines.push_back(shaped);
    for (int i = 0; i < 40; ++i) lines.push_back(Line(absl::StrCat("192.0.2.", 100 + i), ago));
  }
  PipelineOptions options;
  options.engine.allowlist.Add(*Cidr::Parse("198.51.100.0/24"));
  std::vector<std::string> acks, decided;
  std::vector<EngineStats> stats;
  for (int prematch : {0, 1, 2}) {  // no Prematch; Prematch; walking every Set side by side
    prometheus::Registry registry;
    DecisionTable table(clock_);
    options.engine.walk_ahead_bytes = prematch == 2 ? 0 : EngineOptions().walk_ahead_bytes;
    Pipeline pipeline(Rules(), options, clock_, table, registry);
    LineBatch batch, second;
    batch.format = second.format = LogFormat::LOG_FORMAT_SYSLOG;
    for (size_t i = 0; i < lines.size(); ++i) {
      (i < first_batch ? batch : second).lines.push_back(lines[i]);
    }
    if (prematch) pipeline.Prematch(&batch);
    for (const LineBatch* b : {&batch, &second}) {
      absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessLines(*b);
      ASSERT_THAT(ack, IsOk());
      acks.push_back(ack->DebugString());
    }
    stats.push_back(pipeline.engine_stats());
    std::vector<std::string> all;
    for (palisade::v1::Decision d : table.List({})) {
      d.clear_id();  // random, as are the ids a replacement names
      d.clear_replaces();
      d.clear_replaced_by();
      all.push_back(d.DebugString());
    }
    std::sort(all.begin(), all.end());
    decided.push_back(absl::StrJoin(all, "\n"));
    if (prematch) {
      // Prematch answered them (else this test proves nothing).
      size_t keys = 0;
      for (const PrematchedCandidate& c : batch.prematch.candidates) {
        keys += c.key != PrematchedCandidate::Key::kNotRun;
      }
      EXPECT_EQ(keys, first_batch);
    }
  }
  for (size_t other : {2, 4}) {
    EXPECT_EQ(acks[0], acks[other]);
    EXPECT_EQ(acks[1], acks[other + 1]);
  }
  EXPECT_EQ(stats[0].invalid_keys, 3u);
  for (size_t other : {1, 2}) {
    EXPECT_EQ(stats[other].invalid_keys, stats[0].invalid_keys);
    EXPECT_EQ(stats[other].ignored, stats[0].ignored);
    EXPECT_EQ(stats[other].matched_lines, stats[0].matched_lines);
    EXPECT_EQ(decided[0], decided[other]);
  }
  EXPECT_THAT(decided[1], ::testing::HasSubstr("2001:db8::7"));
  EXPECT_THAT(decided[1], ::testing::HasSubstr("192.0.2.139"));
  EXPECT_THAT(decided[1], ::testing::HasSubstr("203.0.113.77"));
  EXPECT_THAT(decided[1], ::testing::Not(::testing::HasSubstr(token)));
  EXPECT_THAT(decided[1], ::testing::Not(::testing::HasSubstr("198.51.100.5")));
}

// An engine that keeps no evidence (EngineOptions::max_evidence 0, palisadectl replay without
// --json) makes the same decisions as one that does, with no line in them; the one that keeps
// lines hides the token in each.
TEST_F(PipelineTest, WithAndWithoutEvidenceTheSameDecisionAndNoToken) {
  const std::string token = "cfut_ab12CD34ef56GH78ij90KL12mn34OP56qr78ST90";  // a token's shape
  std::vector<std::string> lines;
  for (int i = 0; i < 3; ++i) {
    std::string shaped = Line("203.0.113.77", 30 - i);
    shaped.replace(shaped.find("root"), 4, token);
    lines.push_back(shaped);
  }
  std::vector<std::string> targets;
  for (uint32_t max_evidence : {5u, 0u}) {
    prometheus::Registry registry;
    DecisionTable table(clock_);
    PipelineOptions options;
    options.engine.max_evidence = max_evidence;
    options.engine.walk_ahead_bytes = 0;  // every Set walked by Prematch
    Pipeline pipeline(Rules(), options, clock_, table, registry);
    LineBatch batch;
    batch.format = LogFormat::LOG_FORMAT_SYSLOG;
    for (const std::string& line : lines) batch.lines.push_back(line);
    pipeline.Prematch(&batch);
    ASSERT_THAT(pipeline.ProcessLines(batch), IsOk());
    std::vector<palisade::v1::Decision> decided = table.List({});
    ASSERT_EQ(decided.size(), 1u);
    targets.push_back(decided[0].target().value());
    EXPECT_EQ(decided[0].evidence_size(), max_evidence > 0 ? 3 : 0);
    EXPECT_THAT(decided[0].DebugString(), ::testing::Not(::testing::HasSubstr(token)));
  }
  EXPECT_EQ(targets[0], "203.0.113.77");
  EXPECT_EQ(targets[1], targets[0]);
}

// Forged times (issue 12): a record's nanos outside 0..999,999,999 moved its event by seconds,
// and an RFC 5424 offset of +99:99 or a 5,000-digit fraction parsed. Each is now refused as
// malformed and counted as a bad time, and none of them counts towards a detection.
TEST_F(PipelineTest, ImpossibleTimesAreMalformedAndCounted) {
  LogBatch batch;
  batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  batch.set_source("forged");
  for (int32_t nanos : {-1, 1'000'000'000, 2'000'000'000}) {
    auto* r = batch.add_records();
    r->set_line(Line("203.0.113.7", 1));
    *r->mutable_event_time() = ToProtoTime(clock_.TimeNow());
    r->mutable_event_time()->set_nanos(nanos);
  }
  const std::string iso = absl::FormatTime("%Y-%m-%dT%H:%M:%S", clock_.TimeNow(),
                                           absl::UTCTimeZone());
  batch.add_records()->set_line(
      absl::StrCat(iso, "+99:99 web-1 sshd[1]: Failed password for root from 203.0.113.7 port 22"));
  batch.add_records()->set_line(absl::StrCat(iso, ".", std::string(5000, '9'),
                                             "Z web-1 sshd[1]: Failed password for root from "
                                             "203.0.113.7 port 22"));
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline_.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->malformed(), 5u);
  EXPECT_EQ(ack->clamped(), 5u);
  EXPECT_EQ(ack->accepted(), 0u);
  EXPECT_EQ(ack->matched(), 0u);
  EXPECT_EQ(table_.active_count(), 0u);
  EXPECT_EQ(CounterValue(registry_, "palisade_ingest_lines_bad_time_total"), 5);
  EXPECT_EQ(CounterValue(registry_, "palisade_ingest_lines_malformed_total"), 5);
}

// A line with no time of its own (a raw line without a stamp the parser reads, RFC 5424's "-",
// and no event_time) is counted at the clock: told in the ack and a metric, so that an operator
// whose log replays as one instant sees why. A line with a stamp, or an event_time, is not.
TEST_F(PipelineTest, LinesWithoutATimeOfTheirOwnAreCounted) {
  LogBatch batch;
  batch.set_format(LogFormat::LOG_FORMAT_RAW);
  batch.set_source("app");
  batch.add_records()->set_line("order 12345 refused for 203.0.113.7");
  batch.add_records()->set_line("2026-03-03T14:02:01Z order 12346 refused for 203.0.113.7");
  auto* timed = batch.add_records();
  timed->set_line("order 12347 refused for 203.0.113.7");
  *timed->mutable_event_time() = ToProtoTime(clock_.TimeNow());
  batch.add_records()->set_line("@4000zz order 12348 refused for 203.0.113.7");
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline_.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->accepted(), 4u);
  EXPECT_EQ(ack->untimed(), 2u);
  EXPECT_EQ(CounterValue(registry_, "palisade_ingest_lines_untimed_total"), 2);
  // A malformed line, and one dated days ahead (clamped to the clock: it had a time), are not.
  LogBatch syslog;
  syslog.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  syslog.set_source("auth");
  syslog.add_records()->set_line("not a syslog line");
  syslog.add_records()->set_line(absl::StrCat(
      absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", clock_.TimeNow() + absl::Hours(24 * 3),
                       absl::UTCTimeZone()),
      " web-1 sshd[1]: Server listening on 0.0.0.0 port 22."));
  ack = pipeline_.ProcessBatch(syslog);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->malformed(), 1u);
  EXPECT_EQ(ack->clamped(), 1u);
  EXPECT_EQ(ack->untimed(), 0u);
}

TEST(Utf8Test, Validity) {
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xc3"));
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // past U+10FFFF
  // Past the eight-bytes-at-a-time ASCII scan: a bad byte after, inside, or at the end of a run.
  EXPECT_TRUE(IsValidUtf8("sixteen ascii by caf\xc3\xa9 and more ascii after it"));
  EXPECT_FALSE(IsValidUtf8("sixteen ascii by\xc3"));
  EXPECT_FALSE(IsValidUtf8("seven b\xff then more ascii bytes"));
  EXPECT_FALSE(IsValidUtf8("0123456789abcdef0123456789abcde\x80"));
}

TEST_F(PipelineTest, BatchWithoutFormatIsRefused) {
  LogBatch batch;
  batch.set_sequence(3);
  EXPECT_THAT(pipeline_.ProcessBatch(batch), StatusIs(absl::StatusCode::kInvalidArgument));
}

// Sessions through the real path: the parser's pid ties "Too many authentication failures"
// (no address) to the failure that named one, per source (two hosts reuse pid 500), and the
// session table reaches Prometheus. TestRules follows sessions the same way.
TEST_F(PipelineTest, SessionsTieAConnectionsLinesPerSource) {
  constexpr absl::string_view kSessionPack = R"pb(
    rules {
      id: "ssh-fail"
      formats: LOG_FORMAT_SYSLOG
      patterns: "^Failed password for \\S+ from (?P<ip>[0-9.]+) port \\d+ ssh2$"
      threshold { count: 10 window { seconds: 60 } }
      decision { action: ACTION_BLOCK duration { seconds: 600 } }
    }
    rules {
      id: "ssh-too-many"
      formats: LOG_FORMAT_SYSLOG
      patterns: "^Disconnecting: Too many authentication failures \\[preauth\\]$"
      session {}
      threshold { count: 1 }
      decision { action: ACTION_BLOCK duration { seconds: 600 } }
    }
  )pb";
  auto rules = *RuleSet::Compile({*ParseRulePack(kSessionPack, "s.textproto")});
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(rules, PipelineOptions(), clock_, table, registry);
  const std::string stamp =
      absl::FormatTime("%b %e %H:%M:%S", clock_.TimeNow(), absl::UTCTimeZone());
  auto batch = [&](absl::string_view source, absl::string_view ip) {
    LogBatch b;
    b.set_format(LogFormat::LOG_FORMAT_SYSLOG);
    b.set_source(std::string(source));
    b.add_records()->set_line(absl::StrCat(stamp, " h sshd[500]: Failed password for root from ",
                                           ip, " port 22 ssh2"));
    return b;
  };
  ASSERT_THAT(pipeline.ProcessBatch(batch("web-1", "203.0.113.7")), IsOk());
  ASSERT_THAT(pipeline.ProcessBatch(batch("web-2", "198.51.100.8")), IsOk());
  LogBatch end;
  end.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  end.set_source("web-2");
  end.add_records()->set_line(
      absl::StrCat(stamp, " h sshd[500]: Disconnecting: Too many authentication failures "
                          "[preauth]"));
  end.add_records()->set_line(
      absl::StrCat(stamp, " h sshd[501]: Disconnecting: Too many authentication failures "
                          "[preauth]"));
  ASSERT_THAT(pipeline.ProcessBatch(end), IsOk());
  const auto decisions = table.List({});
  ASSERT_THAT(decisions, SizeIs(1));
  EXPECT_EQ(decisions[0].target().value(), "198.51.100.8");  // web-2's pid 500, not web-1's
  EXPECT_EQ(CounterValue(registry, "palisade_engine_sessions"), 2);
  EXPECT_GT(CounterValue(registry, "palisade_engine_session_bytes"), 0);
  EXPECT_EQ(CounterValue(registry, "palisade_engine_session_misses_total"), 1);  // pid 501

  palisade::v1::TestRulesResponse r = Pipeline::TestRules(
      rules, LogFormat::LOG_FORMAT_SYSLOG,
      {batch("x", "203.0.113.9").records(0).line(), end.records(0).line()}, clock_.TimeNow());
  ASSERT_THAT(r.matches(), SizeIs(2));
  EXPECT_EQ(r.matches(1).rule_id(), "ssh-too-many");
  EXPECT_EQ(r.matches(1).key(), "203.0.113.9");
}

TEST_F(PipelineTest, TestRulesReportsPerLineAndPerRule) {
  std::vector<std::string> lines = {Line("203.0.113.7", 3), "junk", Line("2001:db8::1", 2)};
  palisade::v1::TestRulesResponse r =
      Pipeline::TestRules(Rules(), LogFormat::LOG_FORMAT_SYSLOG, lines, clock_.TimeNow());
  EXPECT_EQ(r.lines(), 3u);
  EXPECT_EQ(r.malformed(), 1u);
  EXPECT_EQ(r.matched_lines(), 2u);
  ASSERT_THAT(r.matches(), SizeIs(2));
  EXPECT_EQ(r.matches(1).line_number(), 3u);
  EXPECT_EQ(r.matches(1).key(), "2001:db8::1");
  ASSERT_THAT(r.rules(), SizeIs(1));
  EXPECT_EQ(r.rules(0).matches(), 2u);
  EXPECT_EQ(table_.List({}).size(), 0u);  // testing decides nothing
}

// Rules test reads a time without a UTC offset in the zone the daemon reads it in: the event
// time it shows for a line is the one a batch of it is counted at. It read them in UTC, five
// hours off in New York.
TEST_F(PipelineTest, TestRulesReadsZonelessTimesInTheDaemonsZone) {
  absl::TimeZone new_york;
  ASSERT_TRUE(absl::LoadTimeZone("America/New_York", &new_york));
  clock_.Set(absl::FromUnixSeconds(1'772'556'900));  // 2026-03-03 16:55:00 UTC (11:55 EST)
  PipelineOptions options;
  options.time_zone = new_york;
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(), options, clock_, table, registry);
  LogBatch batch;
  batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  std::vector<std::string> lines;
  for (int i = 0; i < 3; ++i) {
    lines.push_back(absl::StrCat("Mar  3 11:50:0", i,
                                 " web-1 sshd[1]: Failed password for root from 203.0.113.7 "
                                 "port 22 ssh2"));
    batch.add_records()->set_line(lines.back());
  }
  ASSERT_THAT(pipeline.ProcessBatch(batch), IsOk());
  const std::vector<palisade::v1::Decision> decided = table.List({});
  ASSERT_THAT(decided, SizeIs(1));
  EXPECT_EQ(decided[0].start().seconds(), 1'772'556'602);  // 2026-03-03 16:50:02 UTC

  palisade::v1::TestRulesResponse r = Pipeline::TestRules(
      Rules(), LogFormat::LOG_FORMAT_SYSLOG, lines, clock_.TimeNow(), pipeline.time_zone());
  ASSERT_THAT(r.matches(), SizeIs(3));
  EXPECT_EQ(r.matches(2).event_time().seconds(), decided[0].start().seconds());
  EXPECT_EQ(r.matches(0).event_time().seconds(), 1'772'556'600);  // 16:50:00 UTC
}

// Rules test answers for a long line what the daemon decides: cut at the daemon's cap (its
// default unless given), and cut where the reader cut it (`cut`, as LogRecord.cut), a match
// pinned to the line's end is refused there. It judged every line whole: a line the reader cut
// right after a forged tail keyed it, and one the daemon cuts reported its writer's key.
TEST_F(PipelineTest, TestRulesCutsLinesAsTheDaemonDoes) {
  constexpr absl::string_view kPinned = R"pb(
    rules {
      id: "app-login"
      formats: LOG_FORMAT_RAW
      patterns: "^Failed Login: username=.* ip=(?P<ip>[0-9.]+)$"
      threshold { count: 1 }
      decision { action: ACTION_BLOCK duration { seconds: 600 } }
    }
  )pb";
  std::shared_ptr<const RuleSet> rules =
      *RuleSet::Compile({*ParseRulePack(kPinned, "pinned.textproto")});
  const std::string tail = " ip=198.51.100.66";
  const std::string head = "Failed Login: username=";
  // Exactly the daemon's default cap (16 KiB) up to the forged tail, then the writer's end.
  const std::string forged =
      head + std::string(PipelineOptions().max_line_bytes - head.size() - tail.size(), 'A') + tail;
  const std::string line = forged + " ip=203.0.113.5";
  auto keys = [](const palisade::v1::TestRulesResponse& r) {
    std::vector<std::string> out;
    for (const auto& m : r.matches()) out.push_back(m.key());
    return out;
  };
  // The daemon's default cap cuts `line` at the forged tail.
  palisade::v1::TestRulesResponse r =
      Pipeline::TestRules(rules, LogFormat::LOG_FORMAT_RAW, {line}, clock_.TimeNow());
  EXPECT_THAT(keys(r), ::testing::IsEmpty()) << "judged whole past the daemon's cap";
  // A larger cap given (the daemon's config): whole, the writer's key.
  r = Pipeline::TestRules(rules, LogFormat::LOG_FORMAT_RAW, {line}, clock_.TimeNow(),
                          absl::UTCTimeZone(), std::numeric_limits<size_t>::max(),
                          /*max_line_bytes=*/1 << 20);
  EXPECT_THAT(keys(r), ::testing::ElementsAre("203.0.113.5"));
  // Cut by the reader right after the forged tail: cut, whatever the cap.
  for (const bool cut : {true, false}) {
    r = Pipeline::TestRules(rules, LogFormat::LOG_FORMAT_RAW, {forged}, clock_.TimeNow(),
                            absl::UTCTimeZone(), std::numeric_limits<size_t>::max(),
                            /*max_line_bytes=*/1 << 20, PipelineOptions().max_record_bytes,
                            /*cut=*/{cut});
    if (cut) {
      EXPECT_THAT(keys(r), ::testing::IsEmpty()) << "the reader's cut line keyed its forged tail";
    } else {
      EXPECT_THAT(keys(r), ::testing::ElementsAre("198.51.100.66"));
    }
  }
}

TEST_F(PipelineTest, TestRulesListsMatchesUpToItsAnswerBudgetAndCountsOn) {
  std::vector<std::string> lines;
  for (int i = 0; i < 50; ++i) lines.push_back(Line(absl::StrCat("203.0.113.", i), 1));
  palisade::v1::TestRulesResponse whole =
      Pipeline::TestRules(Rules(), LogFormat::LOG_FORMAT_SYSLOG, lines, clock_.TimeNow());
  EXPECT_FALSE(whole.truncated());
  EXPECT_THAT(whole.matches(), SizeIs(50));
  palisade::v1::TestRulesResponse capped = Pipeline::TestRules(
      Rules(), LogFormat::LOG_FORMAT_SYSLOG, lines, clock_.TimeNow(), /*max_answer_bytes=*/600);
  EXPECT_TRUE(capped.truncated());
  EXPECT_GT(capped.matches_size(), 0);
  EXPECT_LT(capped.matches_size(), 50);
  EXPECT_EQ(capped.matches(0).key(), "203.0.113.0");  // the first ones, in order
  EXPECT_EQ(capped.lines(), 50u);
  EXPECT_EQ(capped.matched_lines(), 50u);
  ASSERT_THAT(capped.rules(), SizeIs(1));
  EXPECT_EQ(capped.rules(0).matches(), 50u);
  EXPECT_LT(capped.rules(0).keys_size(), 20);
  EXPECT_LE(capped.ByteSizeLong(), 600u + 64);  // the rule's summary is outside the budget
}

}  // namespace
}  // namespace palisade

namespace palisade {
namespace {

// With a token-candidate stage wired, a token rule's detection goes there, not to the decision
// table (only a verified token may become a decision); the address rules decide as before.
TEST(PipelineTokenCandidatesTest, TokenDetectionsGoToTheCandidateStage) {
  constexpr absl::string_view kTokens = R"pb(
    rules {
      id: "tok"
      formats: LOG_FORMAT_RAW
      key: "token"
      key_kind: TARGET_KIND_TOKEN_FINGERPRINT
      patterns: "cf_token=(?P<token>[A-Za-z0-9]{40})"
      threshold { count: 1 }
      decision {
        action: ACTION_REVOKE_TOKEN
        duration { seconds: 2592000 }
      }
    }
    rules {
      id: "probe"
      formats: LOG_FORMAT_RAW
      patterns: "^probe from (?P<ip>\\S+)"
      threshold { count: 1 }
      decision {
        action: ACTION_BLOCK
        duration { seconds: 600 }
      }
    }
  )pb";
  SimulatedClock clock;
  prometheus::Registry registry;
  DecisionTable table(clock);
  std::vector<Detection> candidates;
  std::string candidate_source;
  PipelineOptions options;
  options.token_candidates = [&](absl::string_view source, std::vector<Detection>& ds,
                                 std::shared_ptr<const RuleSet> rules) {
    EXPECT_NE(rules, nullptr);
    candidate_source = std::string(source);
    for (Detection& d : ds) candidates.push_back(std::move(d));
  };
  Pipeline pipeline(*RuleSet::Compile({*ParseRulePack(kTokens, "t.textproto")}), options, clock,
                    table, registry);
  LogBatch batch;
  batch.set_source("web-1");
  batch.set_format(LogFormat::LOG_FORMAT_RAW);
  for (int i = 0; i < 70; ++i) {
    batch.add_records()->set_line(
        absl::StrCat("GET /?cf_token=", std::string(36, 'a'), absl::Dec(1000 + i)));
  }
  batch.add_records()->set_line("probe from 203.0.113.9");
  ASSERT_THAT(pipeline.ProcessBatch(batch), IsOk());
  EXPECT_THAT(candidates, SizeIs(70));
  EXPECT_EQ(candidate_source, "web-1");
  EXPECT_FALSE(candidates[0].secret.empty());
  // Only the address made a decision.
  std::vector<palisade::v1::Decision> decisions = table.List({});
  ASSERT_THAT(decisions, SizeIs(1));
  EXPECT_EQ(decisions[0].target().value(), "203.0.113.9");
}

// Recidive (issue 13 §3): the decisions the pipeline makes are fed back as LOG_FORMAT_DECISIONS
// lines, which the shipped rules/recidive.textproto counts: three blocks of one address within
// a day, by different rules of different sources, block it for a week.
constexpr absl::string_view kOffences = R"pb(
  rules {
    id: "ssh-fail"
    formats: LOG_FORMAT_SYSLOG
    patterns: "^Failed password for \\S+ from (?P<ip>[0-9a-f:.]+) port \\d+ ssh2$"
    threshold { count: 1 }
    decision { action: ACTION_BLOCK duration { seconds: 600 } }
  }
  rules {
    id: "ssh-invalid"
    formats: LOG_FORMAT_SYSLOG
    patterns: "^Invalid user \\S+ from (?P<ip>[0-9a-f:.]+) port \\d+$"
    threshold { count: 1 }
    decision { action: ACTION_BLOCK duration { seconds: 600 } dry_run: true }
  }
  rules {
    id: "web-env"
    formats: LOG_FORMAT_COMBINED
    patterns: "^(?P<ip>[0-9a-f:.]+) \\S+ \\S+ \\[[^\\]]+\\] \"GET /\\.env "
    threshold { count: 1 }
    decision { action: ACTION_BLOCK duration { seconds: 600 } }
  }
  rules {
    id: "web-login"
    formats: LOG_FORMAT_COMBINED
    patterns: "^(?P<ip>[0-9a-f:.]+) \\S+ \\S+ \\[[^\\]]+\\] \"POST /login "
    threshold { count: 1 }
    decision { action: ACTION_MANAGED_CHALLENGE duration { seconds: 600 } }
  }
)pb";

class RecidiveTest : public ::testing::Test {
 protected:
  RecidiveTest()
      : table_(clock_),
        pipeline_(Rules(kOffences, /*recidive=*/true), PipelineOptions(), clock_, table_,
                  registry_) {}

  static std::shared_ptr<const RuleSet> Rules(absl::string_view pack, bool recidive) {
    std::vector<LoadedPack> packs = {*ParseRulePack(pack, "offences.textproto")};
    if (recidive) {
      absl::StatusOr<LoadedPack> shipped = LoadRulePackFile("rules/recidive.textproto");
      EXPECT_THAT(shipped.status(), IsOk());
      packs.push_back(*shipped);
    }
    absl::StatusOr<std::shared_ptr<const RuleSet>> set = RuleSet::Compile(packs);
    EXPECT_THAT(set.status(), IsOk());
    return *set;
  }

  // A raw-log rule that blocks the path after "hot path " (its decisions are fed with a client's
  // text as the key), followed by `decisions_rule`.
  static std::string PathPack(absl::string_view decisions_rule) {
    return absl::StrCat(R"pb(
    rules {
      id: "path-block"
      formats: LOG_FORMAT_RAW
      key: "path"
      key_kind: TARGET_KIND_PATH
      patterns: "^hot path (?P<path>/.*)$"
      unanchored_key_reason: "test"
      threshold { count: 1 }
      decision { action: ACTION_BLOCK duration { seconds: 600 } actuator: ACTUATOR_NONE }
    }
  )pb",
                        decisions_rule);
  }

  // One offence by `rule` from `ip`, now, in its own source's format; returns the batch's
  // detections. The decisions of earlier offences are expired first, as the sweep would.
  uint32_t Offend(Pipeline& pipeline, absl::string_view rule, absl::string_view ip) {
    table_.ExpireDue();
    const absl::Time now = clock_.TimeNow();
    LogBatch batch;
    std::string line;
    if (rule == "ssh-fail" || rule == "ssh-invalid") {
      batch.set_source("auth");
      batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
      line = absl::StrCat(absl::FormatTime("%b %e %H:%M:%S", now, absl::UTCTimeZone()),
                          " web-1 sshd[1]: ",
                          rule == "ssh-fail" ? "Failed password for root from "
                                             : "Invalid user admin from ",
                          ip, " port 22", rule == "ssh-fail" ? " ssh2" : "");
    } else {
      batch.set_source("web");
      batch.set_format(LogFormat::LOG_FORMAT_COMBINED);
      line = absl::StrCat(ip, " - - [",
                          absl::FormatTime("%d/%b/%Y:%H:%M:%S +0000", now, absl::UTCTimeZone()),
                          "] \"", rule == "web-env" ? "GET /.env" : "POST /login",
                          " HTTP/1.1\" 401 1 \"-\" \"x\"");
    }
    batch.add_records()->set_line(line);
    absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessBatch(batch);
    EXPECT_THAT(ack.status(), IsOk());
    EXPECT_EQ(ack.ok() ? ack->matched() : 0u, 1u) << line;
    return ack.ok() ? ack->detections() : 0;
  }

  // The active decision on `ip`; fails the test when there is none.
  palisade::v1::Decision Active(absl::string_view ip) {
    DecisionFilter filter;
    filter.target = std::string(ip);
    filter.active_only = true;
    std::vector<palisade::v1::Decision> found = table_.List(filter);
    EXPECT_THAT(found, SizeIs(1)) << ip;
    return found.empty() ? palisade::v1::Decision() : found[0];
  }

  double Detections(absl::string_view rule) {
    return CounterValue(registry_, "palisade_engine_detections_total",
                        {{"rule", std::string(rule)}});
  }

  SimulatedClock clock_;
  prometheus::Registry registry_;
  DecisionTable table_;
  Pipeline pipeline_;
};

// Three blocks by three rules (one of them dry run), from two sources, hours apart: the third
// one's batch also decides recidive, which extends the decision to a week from that offence.
// An address blocked twice, and one challenged (not blocked) on top of two blocks, keep their
// ten minutes.
TEST_F(RecidiveTest, ThreeBlocksWithinADayMakeAWeek) {
  EXPECT_EQ(Offend(pipeline_, "ssh-fail", "203.0.113.7"), 1u);
  EXPECT_EQ(Offend(pipeline_, "ssh-fail", "198.51.100.8"), 1u);
  EXPECT_EQ(Offend(pipeline_, "ssh-fail", "198.51.100.9"), 1u);
  clock_.Advance(absl::Hours(5));
  EXPECT_EQ(Offend(pipeline_, "ssh-invalid", "203.0.113.7"), 1u);
  EXPECT_EQ(Offend(pipeline_, "web-env", "198.51.100.8"), 1u);
  EXPECT_EQ(Offend(pipeline_, "web-env", "198.51.100.9"), 1u);
  clock_.Advance(absl::Hours(18));  // 23 h after the first offence
  const absl::Time third = clock_.TimeNow();
  EXPECT_EQ(Offend(pipeline_, "web-env", "203.0.113.7"), 2u);  // web-env and recidive
  EXPECT_EQ(Offend(pipeline_, "web-login", "198.51.100.9"), 1u);

  const palisade::v1::Decision week = Active("203.0.113.7");
  EXPECT_EQ(FromProtoTime(week.expiry()), third + absl::Hours(24 * 7));
  EXPECT_FALSE(week.dry_run());
  EXPECT_EQ(Detections("recidive"), 1);
  EXPECT_EQ(CounterValue(registry_, "palisade_engine_rule_matches_total", {{"rule", "recidive"}}),
            7);  // every block counted; the challenge not (it is no block)
  // Twice blocked: the second block's ten minutes are over. Twice blocked then challenged:
  // the challenge's ten minutes.
  DecisionFilter twice;
  twice.target = "198.51.100.8";
  twice.active_only = true;
  EXPECT_THAT(table_.List(twice), SizeIs(0));
  EXPECT_EQ(FromProtoTime(Active("198.51.100.9").expiry()), third + absl::Minutes(10));
}

// Recidive counted every decision made or renewed: ten failed passwords in two minutes, which
// the shipped sshd pack answers with one block (created, then renewed twice by two of its
// rules), made a week-long block. It counts blocks that start anew (fail2ban's "Ban" lines).
TEST_F(RecidiveTest, ABlockRenewedByMoreFailuresIsNotARepeatOffence) {
  absl::StatusOr<LoadedPack> sshd = LoadRulePackFile("rules/sshd.textproto");
  ASSERT_THAT(sshd.status(), IsOk());
  absl::StatusOr<LoadedPack> recidive = LoadRulePackFile("rules/recidive.textproto");
  ASSERT_THAT(recidive.status(), IsOk());
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules = RuleSet::Compile({*sshd, *recidive});
  ASSERT_THAT(rules.status(), IsOk());
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(*rules, PipelineOptions(), clock_, table, registry);
  LogBatch batch;
  batch.set_source("auth");
  batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  for (int i = 0; i < 10; ++i) {
    batch.add_records()->set_line(absl::StrCat(
        absl::FormatTime("%b %e %H:%M:%S", clock_.TimeNow() + absl::Seconds(12 * i),
                         absl::UTCTimeZone()),
        " web-1 sshd[", 100 + i, "]: Failed password for root from 203.0.113.7 port ", 40000 + i,
        " ssh2"));
  }
  clock_.Advance(absl::Minutes(2));
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessBatch(batch);
  ASSERT_THAT(ack.status(), IsOk());
  EXPECT_GE(ack->detections(), 2u);  // the sshd pack blocked, and renewed its block
  EXPECT_EQ(CounterValue(registry, "palisade_engine_detections_total", {{"rule", "recidive"}}),
            0);
  DecisionFilter filter;
  filter.target = "203.0.113.7";
  filter.active_only = true;
  const std::vector<palisade::v1::Decision> active = table.List(filter);
  ASSERT_THAT(active, SizeIs(1));
  EXPECT_NE(active[0].rule_id(), "recidive");
  EXPECT_LT(FromProtoTime(active[0].expiry()), clock_.TimeNow() + absl::Hours(24));
}

}  // namespace

// Takes memos from the pool and gives them back, as batches deciding at once do.
class PipelineFedMemoPeer {
 public:
  static size_t IdleCap() { return Pipeline::FedMemo::kIdleMemos; }
  static void TakeAndReturn(Pipeline& pipeline, size_t at_once) {
    std::vector<std::unique_ptr<Pipeline::FedMemo>> taken;
    for (size_t i = 0; i < at_once; ++i) taken.push_back(pipeline.TakeFedMemo(nullptr));
    for (auto& memo : taken) pipeline.ReturnFedMemo(std::move(memo));
  }
};

namespace {

// Batches deciding at once take a memo each (up to ~1.5 MiB); the pool keeps a few for the
// next batches and frees the others, so a burst of streams does not leave its memos behind.
TEST_F(RecidiveTest, ThePoolKeepsAFewIdleMemos) {
  EXPECT_EQ(pipeline_.idle_fed_memos(), 0u);
  PipelineFedMemoPeer::TakeAndReturn(pipeline_, 2);
  EXPECT_EQ(pipeline_.idle_fed_memos(), 2u);
  PipelineFedMemoPeer::TakeAndReturn(pipeline_, PipelineFedMemoPeer::IdleCap() + 60);
  EXPECT_EQ(pipeline_.idle_fed_memos(), PipelineFedMemoPeer::IdleCap());
  // Decisions fed back still find a memo (the pool's), and match from it: the second block,
  // after the first's ten minutes, feeds the same line.
  EXPECT_EQ(Offend(pipeline_, "ssh-fail", "203.0.113.7"), 1u);
  clock_.Advance(absl::Minutes(11));
  EXPECT_EQ(Offend(pipeline_, "ssh-fail", "203.0.113.7"), 1u);
  EXPECT_EQ(pipeline_.fed_memo_hits(), 1u);
  EXPECT_EQ(pipeline_.idle_fed_memos(), PipelineFedMemoPeer::IdleCap());
}

// A repeat offender's next block by the same rule feeds the line its first block fed: the
// second time on, the line's candidates come from the pipeline's memo (Pipeline::FedMemo), and
// recidive counts it as before. (An extension feeds nothing.)
TEST_F(RecidiveTest, ARepeatBlocksLineIsMatchedFromTheMemo) {
  EXPECT_EQ(Offend(pipeline_, "ssh-fail", "203.0.113.7"), 1u);
  clock_.Advance(absl::Minutes(1));
  EXPECT_EQ(Offend(pipeline_, "ssh-fail", "203.0.113.7"), 1u);  // extended: not fed
  EXPECT_EQ(pipeline_.fed_memo_misses() + pipeline_.fed_memo_hits(), 1u);
  clock_.Advance(absl::Minutes(11));
  EXPECT_EQ(Offend(pipeline_, "ssh-fail", "203.0.113.7"), 1u);  // a second block: fed
  clock_.Advance(absl::Minutes(11));
  EXPECT_EQ(Offend(pipeline_, "ssh-fail", "203.0.113.7"), 2u);  // a third, and recidive
  EXPECT_EQ(pipeline_.fed_memo_misses(), 1u);
  EXPECT_EQ(pipeline_.fed_memo_hits(), 2u);
  EXPECT_EQ(Detections("recidive"), 1);
  EXPECT_EQ(FromProtoTime(Active("203.0.113.7").expiry()), clock_.TimeNow() + absl::Hours(24 * 7));
}

// The memo holds what the rules in use found in a line: after a swap, the same line is matched
// with the new rules (a decisions rule that reads challenges only, where one read blocks).
TEST_F(RecidiveTest, AfterARuleSwapFedLinesAreMatchedWithTheNewRules) {
  constexpr absl::string_view kFail = R"pb(
    rules {
      id: "ssh-fail"
      formats: LOG_FORMAT_SYSLOG
      patterns: "^Failed password for \\S+ from (?P<ip>[0-9a-f:.]+) port \\d+ ssh2$"
      threshold { count: 1 }
      decision { action: ACTION_BLOCK duration { seconds: 600 } }
    }
  )pb";
  const std::string blocks = absl::StrCat(kFail, R"pb(
    rules {
      id: "blocks"
      formats: LOG_FORMAT_DECISIONS
      patterns: " kind=ip key=(?P<ip>[0-9a-f:.]+) action=block$"
      threshold { count: 1 }
      decision { action: ACTION_BLOCK duration { seconds: 60 } }
    }
  )pb");
  const std::string challenges = absl::StrCat(kFail, R"pb(
    rules {
      id: "challenges"
      formats: LOG_FORMAT_DECISIONS
      patterns: " kind=ip key=(?P<ip>[0-9a-f:.]+) action=managed_challenge$"
      threshold { count: 1 }
      decision { action: ACTION_BLOCK duration { seconds: 60 } }
    }
  )pb");
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(blocks, /*recidive=*/false), PipelineOptions(), clock_, table, registry);
  EXPECT_EQ(Offend(pipeline, "ssh-fail", "203.0.113.7"), 2u);  // ssh-fail, and blocks
  pipeline.SetRules(Rules(challenges, /*recidive=*/false));
  clock_.Advance(absl::Minutes(11));
  // A second block: the same line fed again, which "challenges" does not match.
  EXPECT_EQ(Offend(pipeline, "ssh-fail", "203.0.113.7"), 1u);
  EXPECT_EQ(CounterValue(registry, "palisade_engine_detections_total", {{"rule", "challenges"}}),
            0);
  EXPECT_EQ(pipeline.fed_memo_hits(), 0u);
  EXPECT_EQ(pipeline.fed_memo_misses(), 2u);
}

// A decision line longer than FedMemo::kFedMemoLineBytes (a long path key: the client's text)
// is matched without the memo, so the memo's bytes stay bounded; it counts as before.
TEST_F(RecidiveTest, ALongDecisionsLineIsMatchedWithoutTheMemo) {
  const std::string paths = PathPack(R"pb(
    rules {
      id: "path-blocks"
      formats: LOG_FORMAT_DECISIONS
      key: "path"
      key_kind: TARGET_KIND_PATH
      patterns: " kind=path key=(?P<path>\\S+) action=block$"
      unanchored_key_reason: "test"
      threshold { count: 2 window { seconds: 3600 } }
      decision { action: ACTION_BLOCK duration { seconds: 60 } actuator: ACTUATOR_NONE }
    }
  )pb");
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(paths, /*recidive=*/false), PipelineOptions(), clock_, table, registry);
  LogBatch batch;
  batch.set_format(LogFormat::LOG_FORMAT_RAW);
  batch.add_records()->set_line(absl::StrCat("hot path /", std::string(300, 'p')));
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessBatch(batch);
    ASSERT_THAT(ack, IsOk());
    EXPECT_EQ(ack->detections(), i == 0 ? 1u : 2u);  // blocked, then blocked anew and path-blocks
    clock_.Advance(absl::Minutes(11));  // the block is over: the next is a new one
  }
  EXPECT_EQ(pipeline.fed_memo_hits(), 0u);
  EXPECT_EQ(pipeline.fed_memo_misses(), 2u);
}

// A decision line writes every key byte outside printable ASCII, the space and '%' as %XX
// (upper-case hex): a decisions rule reads exactly that.
TEST_F(RecidiveTest, DecisionLinesEscapeKeyBytes) {
  const std::string paths = PathPack(R"pb(
    rules {
      id: "escaped"
      formats: LOG_FORMAT_DECISIONS
      key: "path"
      key_kind: TARGET_KIND_PATH
      patterns: "^decision rule=path-block kind=path key=(?P<path>(/0123456789abcdefghij)?/a%20b%25c%C3%A9%09d) action=block$"
      threshold { count: 1 }
      decision { action: ACTION_BLOCK duration { seconds: 60 } actuator: ACTUATOR_NONE }
    }
  )pb");
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(paths, /*recidive=*/false), PipelineOptions(), clock_, table, registry);
  LogBatch batch;
  batch.set_format(LogFormat::LOG_FORMAT_RAW);
  batch.add_records()->set_line("hot path /a b%c\xc3\xa9\td");
  // Escaped bytes past the first 16 of a key.
  batch.add_records()->set_line("hot path /0123456789abcdefghij/a b%c\xc3\xa9\td");
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->detections(), 4u);  // path-block, and escaped, for each
}

// A cluster's writer decides what other nodes detected, outside any batch (the
// ClusterNode's decided hook): FeedDecisions feeds those decisions back, so three blocks of one
// address within a day still make a week there.
TEST_F(RecidiveTest, DecisionsMadeOutsideABatchAreFedBackToo) {
  std::shared_ptr<const RuleSet> rules = pipeline_.rules();
  const CompiledRule* ssh_fail = nullptr;
  for (const auto& r : rules->rules()) {
    if (r->proto.id() == "ssh-fail") ssh_fail = r.get();
  }
  ASSERT_NE(ssh_fail, nullptr);
  absl::Time third;
  for (int i = 0; i < 3; ++i) {
    table_.ExpireDue();
    Detection d;
    d.rule = ssh_fail;
    d.rule_id = "ssh-fail";
    d.kind = palisade::v1::TARGET_KIND_IP;
    d.key = "203.0.113.7";
    d.time = third = clock_.TimeNow();
    d.evidence = {"sent by another node"};
    const std::vector<Detection> made = {d};
    const std::vector<DecisionUpdate> updates = table_.ApplyAll(made);
    ASSERT_EQ(updates.size(), 1u);
    ASSERT_EQ(updates[0].change, DecisionChange::kCreated);
    pipeline_.FeedDecisions("cluster", made, updates);
    clock_.Advance(absl::Hours(8));
  }
  // Recidive extends the third block (one decision per target) to a week.
  const palisade::v1::Decision week = Active("203.0.113.7");
  EXPECT_EQ(FromProtoTime(week.expiry()), third + absl::Hours(24 * 7));
  EXPECT_EQ(Detections("recidive"), 1);
  EXPECT_EQ(CounterValue(registry_, "palisade_engine_rule_matches_total", {{"rule", "recidive"}}),
            3);
}

// Three blocks spread over more than a day are not a recidive.
TEST_F(RecidiveTest, BlocksMoreThanADayApartDoNotCount) {
  Offend(pipeline_, "ssh-fail", "203.0.113.7");
  clock_.Advance(absl::Hours(13));
  Offend(pipeline_, "ssh-fail", "203.0.113.7");
  clock_.Advance(absl::Hours(13));
  Offend(pipeline_, "web-env", "203.0.113.7");
  EXPECT_EQ(Detections("recidive"), 0);
  EXPECT_EQ(FromProtoTime(Active("203.0.113.7").expiry()),
            clock_.TimeNow() + absl::Minutes(10));
}

// Recidive's own decision is not fed back. Here it is a new decision (an enforcing block over the
// third block, a dry run's, a weaker claim), and recidive still matched only the three blocks.
// While its week holds, further offences renew it and feed nothing.
TEST_F(RecidiveTest, RecidiveDoesNotCountItself) {
  for (absl::string_view rule : {"ssh-fail", "web-env", "ssh-invalid"}) {
    Offend(pipeline_, rule, "203.0.113.7");
    clock_.Advance(absl::Minutes(30));
  }
  ASSERT_EQ(Detections("recidive"), 1);
  const palisade::v1::Decision week = Active("203.0.113.7");
  EXPECT_EQ(week.rule_id(), "recidive");
  EXPECT_FALSE(week.dry_run());
  auto matches = [this] {
    return CounterValue(registry_, "palisade_engine_rule_matches_total", {{"rule", "recidive"}});
  };
  EXPECT_EQ(matches(), 3);
  for (absl::string_view rule : {"ssh-fail", "web-env", "ssh-fail"}) {
    Offend(pipeline_, rule, "203.0.113.7");
    clock_.Advance(absl::Minutes(30));
  }
  EXPECT_EQ(Detections("recidive"), 1);
  EXPECT_EQ(matches(), 3);
}

// A badly written decisions rule that matches every decision line, its own included, with a
// threshold of one: each block makes one detection of it, never a loop.
TEST_F(RecidiveTest, ADecisionsRuleMatchingItsOwnLinesCannotLoop) {
  const std::string pack = absl::StrCat(kOffences, R"pb(
    rules {
      id: "greedy"
      formats: LOG_FORMAT_DECISIONS
      patterns: " key=(?P<ip>[0-9a-f:.]+) action=[a-z_]+$"
      threshold { count: 1 }
      decision { action: ACTION_BLOCK duration { seconds: 60 } }
    }
  )pb");
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(pack, /*recidive=*/false), PipelineOptions(), clock_, table, registry);
  EXPECT_EQ(Offend(pipeline, "ssh-fail", "203.0.113.7"), 2u);
  clock_.Advance(absl::Minutes(11));  // the block and greedy's are over: the next is a new one
  EXPECT_EQ(Offend(pipeline, "web-env", "203.0.113.7"), 2u);
  EXPECT_EQ(CounterValue(registry, "palisade_engine_detections_total", {{"rule", "greedy"}}), 2);
}

// Replay decides line by line (PipelineOptions::advance_clock): the decision lines are fed and
// decided on the line that made them, with the same outcome as the daemon's per-batch decide.
TEST_F(RecidiveTest, LineByLineDecidesAsPerBatch) {
  PipelineOptions options;
  options.advance_clock = [&](absl::Time t) {
    clock_.Set(std::max(clock_.TimeNow(), t));
    table_.ExpireDue();
  };
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(kOffences, /*recidive=*/true), options, clock_, table, registry);
  LogBatch batch;
  batch.set_source("auth");
  batch.set_format(LogFormat::LOG_FORMAT_SYSLOG);
  const absl::Time start = clock_.TimeNow();
  for (int i = 0; i < 3; ++i) {
    batch.add_records()->set_line(absl::StrCat(
        absl::FormatTime("%b %e %H:%M:%S", start + absl::Hours(i), absl::UTCTimeZone()),
        " web-1 sshd[1]: Failed password for root from 203.0.113.7 port 22 ssh2"));
  }
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->detections(), 4u);
  DecisionFilter filter;
  filter.active_only = true;
  std::vector<palisade::v1::Decision> active = table.List(filter);
  ASSERT_THAT(active, SizeIs(1));
  EXPECT_EQ(FromProtoTime(active[0].expiry()), start + absl::Hours(2) + absl::Hours(24 * 7));
}

// The decisions stream is Palisade's own: a client cannot ship lines into it.
TEST_F(RecidiveTest, ShippedDecisionLinesAreRefused) {
  LogBatch batch;
  batch.set_format(LogFormat::LOG_FORMAT_DECISIONS);
  for (int i = 0; i < 3; ++i) {
    batch.add_records()->set_line(
        "decision rule=ssh-fail kind=ip key=203.0.113.7 action=block");
  }
  EXPECT_THAT(pipeline_.ProcessBatch(batch),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("decisions")));
  EXPECT_EQ(table_.size(), 0u);
}

// A path key is the client's text: written with %XX for spaces and '%', it cannot end its line
// as an address block would, so recidive never counts it.
TEST_F(RecidiveTest, PathKeysCannotPoseAsAddresses) {
  prometheus::Registry registry;
  DecisionTable table(clock_);
  Pipeline pipeline(Rules(PathPack(""), /*recidive=*/true), PipelineOptions(), clock_, table,
                    registry);
  LogBatch batch;
  batch.set_format(LogFormat::LOG_FORMAT_RAW);
  for (int i = 0; i < 3; ++i) {
    batch.add_records()->set_line(
        absl::StrCat("hot path /", i, " kind=ip key=198.51.100.77"));
  }
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->detections(), 3u);  // the three paths; no recidive
  EXPECT_EQ(CounterValue(registry, "palisade_engine_rule_matches_total", {{"rule", "recidive"}}),
            0);
  DecisionFilter filter;
  filter.target = "198.51.100.77";
  EXPECT_THAT(table.List(filter), SizeIs(0));
}

}  // namespace
}  // namespace palisade

namespace palisade {
namespace {

// The shipped audit pack revokes an API token by id. An ingest client (any shipper host) must
// not be able to choose the victim: a forged audit record shipped as raw, or in the audit
// format by a sender the server did not allow, decides no revocation.
class AuditRecordsTest : public ::testing::Test {
 protected:
  AuditRecordsTest() : table_(clock_) {
    absl::StatusOr<LoadedPack> pack = LoadRulePackFile("rules/cloudflare-audit.textproto");
    EXPECT_THAT(pack, IsOk());
    CidrSets sets;
    sets.emplace("cloudflare_token_ips", *CidrSet::Parse({"192.0.2.0/24"}));
    absl::StatusOr<std::shared_ptr<const RuleSet>> rules = RuleSet::Compile({*pack}, sets);
    EXPECT_THAT(rules, IsOk());
    pipeline_ = std::make_unique<Pipeline>(*rules, PipelineOptions(), clock_, table_, registry_);
  }

  static LogBatch Forged(LogFormat format) {
    LogBatch batch;
    batch.set_source("web-1");
    batch.set_format(format);
    batch.add_records()->set_line(
        "{\"actor\":{\"ip_address\":\"203.0.113.9\","
        "\"token_id\":\"ed17574386854bf78a67040be0a770b0\"}}");
    return batch;
  }

  SimulatedClock clock_;
  prometheus::Registry registry_;
  DecisionTable table_;
  std::unique_ptr<Pipeline> pipeline_;
};

TEST_F(AuditRecordsTest, AForgedRecordShippedAsRawRevokesNothing) {
  ASSERT_THAT(pipeline_->ProcessBatch(Forged(LogFormat::LOG_FORMAT_RAW)), IsOk());
  EXPECT_THAT(table_.List({}), SizeIs(0));
}

TEST_F(AuditRecordsTest, AnIngestClientsBatchOfAuditRecordsIsRefused) {
  EXPECT_THAT(pipeline_->ProcessBatch(Forged(LogFormat::LOG_FORMAT_CLOUDFLARE_AUDIT)),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("cloudflare_audit")));
  const LogBatch forged = Forged(LogFormat::LOG_FORMAT_CLOUDFLARE_AUDIT);
  LineBatch lines;
  lines.format = forged.format();
  lines.source = forged.source();
  lines.lines.push_back(forged.records(0).line());
  EXPECT_THAT(pipeline_->ProcessLines(lines),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("cloudflare_audit")));
  EXPECT_THAT(table_.List({}), SizeIs(0));
}

// What the server lets feed them (its own poller, an admin's Ship) revokes as the pack says.
TEST_F(AuditRecordsTest, RecordsFromAnAllowedSenderRevokeTheToken) {
  BatchSender poller;
  poller.audit_records = true;
  ASSERT_THAT(pipeline_->ProcessBatch(Forged(LogFormat::LOG_FORMAT_CLOUDFLARE_AUDIT), poller),
              IsOk());
  std::vector<palisade::v1::Decision> decisions = table_.List({});
  ASSERT_THAT(decisions, SizeIs(1));
  EXPECT_EQ(decisions[0].target().value(), "ed17574386854bf78a67040be0a770b0");
  EXPECT_EQ(decisions[0].target().kind(), palisade::v1::TARGET_KIND_TOKEN_ID);
}

}  // namespace
}  // namespace palisade
