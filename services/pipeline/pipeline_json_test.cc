// JSON lines batches through the pipeline (issue 14 §2): a preset and a custom mapping named by
// the batch, a combined rule reading both, malformed records counted and skipped.
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/status_matchers.h"
#include "services/pipeline/pipeline.h"

namespace palisade {
namespace {

using ::palisade::testing::IsOk;
using ::palisade::testing::StatusIs;
using ::palisade::v1::LogBatch;
using ::palisade::v1::LogFormat;
using ::testing::HasSubstr;

// A rule written for combined access logs only.
constexpr absl::string_view kPack = R"pb(
  rules {
    id: "login-post"
    formats: LOG_FORMAT_COMBINED
    patterns: "^(?P<ip>[0-9A-Fa-f:.]+) \\S+ \\S+ \\[[^\\]]+\\] \"POST /login[ ?]"
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

class PipelineJsonTest : public ::testing::Test {
 protected:
  PipelineJsonTest() : table_(clock_), pipeline_(Rules(), Options(), clock_, table_, registry_) {}

  static std::shared_ptr<const RuleSet> Rules() {
    return *RuleSet::Compile({*ParseRulePack(kPack, "test.textproto")});
  }
  static PipelineOptions Options() {
    PipelineOptions options;
    palisade::v1::JsonFormat app;
    app.set_name("app");
    app.set_time("at");
    app.set_client_address("peer");
    app.set_method("verb");
    app.set_path("target");
    app.set_status("code");
    options.json_formats["app"] = app;
    options.max_record_bytes = 256 * 1024;
    return options;
  }
  std::string Now() { return absl::FormatTime(absl::RFC3339_sec, clock_.TimeNow(), absl::UTCTimeZone()); }

  SimulatedClock clock_;
  prometheus::Registry registry_;
  DecisionTable table_;
  Pipeline pipeline_;
};

TEST_F(PipelineJsonTest, NginxJsonBatchBansThroughACombinedRule) {
  LogBatch batch;
  batch.set_source("web-1");
  batch.set_format(LogFormat::LOG_FORMAT_NGINX_JSON);
  for (int i = 0; i < 3; ++i) {
    batch.add_records()->set_line(absl::StrCat(
        R"({"time":")", Now(), R"(","remote_addr":"203.0.113.7","request_method":"POST",)",
        R"("request_uri":"/login","server_protocol":"HTTP/1.1","status":401,)",
        R"("http_user_agent":"\"ClientIP\":\"1.2.3.4\""})"));
  }
  batch.add_records()->set_line("203.0.113.7 - - not json");
  batch.add_records()->set_line(R"({"time":"2026-03-03T14:02:01Z","status":200})");
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline_.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->accepted(), 3u);
  EXPECT_EQ(ack->malformed(), 2u);
  EXPECT_EQ(ack->detections(), 1u);
  std::vector<palisade::v1::Decision> decisions = table_.List({});
  ASSERT_EQ(decisions.size(), 1u);
  EXPECT_EQ(decisions[0].target().value(), "203.0.113.7");
}

// A record past max_record_bytes is cut by the pipeline and still read (a long user agent would
// otherwise hide the request).
TEST_F(PipelineJsonTest, RecordPastTheRecordCapStillCounts) {
  LogBatch batch;
  batch.set_source("web-2");
  batch.set_format(LogFormat::LOG_FORMAT_NGINX_JSON);
  for (int i = 0; i < 3; ++i) {
    batch.add_records()->set_line(absl::StrCat(
        R"({"time":")", Now(), R"(","remote_addr":"203.0.113.8","request_method":"POST",)",
        R"("request_uri":"/login","server_protocol":"HTTP/1.1","status":401,)",
        R"("http_user_agent":")", std::string(300000, 'A'), R"("})"));
  }
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline_.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->truncated(), 3u);
  EXPECT_EQ(ack->malformed(), 0u);
  EXPECT_EQ(ack->detections(), 1u);
}

// Caddy writes the request's headers before the status: a record is read whole up to
// engine.max_record_bytes (not cut at the line cap), so a client's long headers do not hide it.
// Past max_record_bytes it is cut, and read from its fields before the cut.
TEST_F(PipelineJsonTest, CaddyRecordPastTheLineCapIsReadWhole) {
  LogBatch batch;
  batch.set_source("web-3");
  batch.set_format(LogFormat::LOG_FORMAT_CADDY_JSON);
  for (int i = 0; i < 3; ++i) {
    batch.add_records()->set_line(absl::StrCat(
        R"({"ts":)", absl::ToUnixSeconds(clock_.TimeNow()),
        R"(,"request":{"remote_ip":"203.0.113.9","client_ip":"203.0.113.9","proto":"HTTP/1.1",)"
        R"("method":"POST","uri":"/login","headers":{"X-Pad":[")", std::string(40000, 'A'),
        R"("]}},"size":0,"status":401})"));
  }
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline_.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->truncated(), 0u);
  EXPECT_EQ(ack->malformed(), 0u);
  EXPECT_EQ(ack->detections(), 1u);
}

TEST_F(PipelineJsonTest, CustomMappingNamedByTheBatch) {
  LogBatch batch;
  batch.set_source("app-1");
  batch.set_format(LogFormat::LOG_FORMAT_JSON);
  batch.set_json_format("app");
  for (int i = 0; i < 3; ++i) {
    batch.add_records()->set_line(absl::StrCat(R"({"at":")", Now(),
                                               R"(","peer":"198.51.100.4:5000","verb":"POST",)"
                                               R"("target":"/login?u=x","code":403})"));
  }
  absl::StatusOr<palisade::v1::BatchAck> ack = pipeline_.ProcessBatch(batch);
  ASSERT_THAT(ack, IsOk());
  EXPECT_EQ(ack->accepted(), 3u);
  EXPECT_EQ(ack->detections(), 1u);

  // A name the config lacks: the server can be mended (a shipper waits); none at all cannot.
  batch.set_json_format("nope");
  EXPECT_THAT(pipeline_.ProcessBatch(batch),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("json_format")));
  batch.clear_json_format();
  EXPECT_THAT(pipeline_.ProcessBatch(batch),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("json_format")));
}

}  // namespace
}  // namespace palisade
