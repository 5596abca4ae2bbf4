// Replay on every core gives the one-thread result: the same decisions (in the same order, with
// the same evidence and times), stale detections, counts and per-rule matches, on generated
// corpora with a fixed seed and every shipped pack loaded (sessions, recidive, gated token rules),
// whatever the thread count and batch size. The reference is one thread without Prematch
// (ReplayOptions::prematch false): each line through the pipeline whole. Hostile lines (NULs,
// invalid UTF-8, lines past max_line_bytes, malformed ones) are mixed in, so the path where
// Prematch leaves a line to the ordered thread runs too.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "rules/shipped_packs.h"
#include "services/replay/replay.h"
#include "tests/corpus/corpus.h"

namespace palisade {
namespace {

std::shared_ptr<const RuleSet> EveryPack() {
  absl::StatusOr<std::shared_ptr<const RuleSet>> set = CompileShippedPacks();
  EXPECT_TRUE(set.ok()) << set.status();
  return set.ok() ? *set : nullptr;
}

// Decision ids are random (and so the ids a replacement names); everything else must be equal.
std::vector<std::string> Comparable(const std::vector<palisade::v1::Decision>& decisions) {
  std::vector<std::string> out;
  for (palisade::v1::Decision d : decisions) {
    d.clear_id();  // random, as are the ids a replacement names
    d.clear_replaces();
    d.clear_replaced_by();
    out.push_back(d.DebugString());
  }
  return out;
}

void ExpectSame(const ReplaySummary& one, const ReplaySummary& many, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(one.lines, many.lines);
  EXPECT_EQ(one.malformed, many.malformed);
  EXPECT_EQ(one.matched, many.matched);
  EXPECT_EQ(one.detections, many.detections);
  EXPECT_EQ(one.matches_per_rule, many.matches_per_rule);
  EXPECT_EQ(one.decisions.size(), many.decisions.size());
  EXPECT_TRUE(Comparable(one.decisions) == Comparable(many.decisions));
  EXPECT_TRUE(Comparable(one.stale) == Comparable(many.stale));
  EXPECT_EQ(one.windows_evicted, many.windows_evicted);
  EXPECT_EQ(one.sessions_evicted, many.sessions_evicted);
}

void CheckCorpus(palisade::v1::LogFormat format, std::vector<std::string> lines) {
  std::shared_ptr<const RuleSet> rules = EveryPack();
  ASSERT_NE(rules, nullptr);
  lines = WithHostileLines(std::move(lines));
  ReplayOptions options;
  options.threads = 1;
  options.prematch = false;
  absl::StatusOr<ReplaySummary> one = Replay(rules, format, lines, options);
  ASSERT_TRUE(one.ok()) << one.status();
  // The corpus exercises what could differ: matches, decisions, malformed lines, and windows
  // and sessions aged out along the way.
  EXPECT_GT(one->matched, lines.size() / 10);
  EXPECT_GT(one->decisions.size(), 50u);
  EXPECT_GT(one->malformed, 0u);
  EXPECT_GT(one->windows_expired, 0u);
  // The lines come in order: aging idle state out changes nothing they decide.
  {
    ReplayOptions never = options;
    never.sweep_interval = absl::InfiniteDuration();
    absl::StatusOr<ReplaySummary> unswept = Replay(rules, format, lines, never);
    ASSERT_TRUE(unswept.ok()) << unswept.status();
    ExpectSame(*one, *unswept, "never swept");
    EXPECT_EQ(unswept->windows_expired, 0u);
    EXPECT_GT(unswept->live_windows, one->live_windows);
  }
  options.prematch = true;
  for (uint32_t threads : {1u, 2u, 4u}) {
    for (uint32_t batch : {1000u, 97u}) {
      options.threads = threads;
      options.batch_lines = batch;
      absl::StatusOr<ReplaySummary> many = Replay(rules, format, lines, options);
      ASSERT_TRUE(many.ok()) << many.status();
      ExpectSame(*one, *many, absl::StrCat(threads, " threads, batches of ", batch));
    }
  }
}

TEST(ReplayThreadsTest, SshdEveryPackIsTheOneThreadResult) {
  CorpusOptions corpus;
  corpus.lines = 60000;
  corpus.seed = 7;
  corpus.step = absl::Milliseconds(40);  // 40 minutes: sessions and windows age out
  CheckCorpus(palisade::v1::LOG_FORMAT_SYSLOG, GenerateSshd(corpus).lines);
}

TEST(ReplayThreadsTest, NginxEveryPackIsTheOneThreadResult) {
  CorpusOptions corpus;
  corpus.lines = 60000;
  corpus.seed = 7;
  CheckCorpus(palisade::v1::LOG_FORMAT_COMBINED, GenerateNginx(corpus).lines);
}

// Yearless times across New Year and past long gaps, in small batches: the ordered thread
// reuses a line Prematch parsed only when its year cannot depend on the reference Prematch had
// (the clock, at each batch's first line), so every decision keeps the one-thread time.
TEST(ReplayThreadsTest, YearlessTimesAcrossNewYearAndGapsAreTheOneThreadResult) {
  std::vector<std::string> lines;
  auto add = [&](absl::string_view when, int n) {
    for (int i = 0; i < n; ++i) {
      lines.push_back(absl::StrCat(when, absl::Dec(i % 60, absl::kZeroPad2), " web-1 sshd[",
                                   100 + i % 7, "]: Failed password for root from 192.0.2.",
                                   1 + i % 3, " port 22 ssh2"));
    }
  };
  add("Dec 31 23:59:", 60);
  add("Jan  1 00:00:", 60);
  add("Jul 15 12:00:", 40);  // 196 days on: parsed again
  add("Jan  2 08:00:", 40);  // back 194 days: the nearest year is the next one
  add("Dec 30 10:00:", 40);
  add("Mar  3 14:02:", 40);
  std::shared_ptr<const RuleSet> rules = EveryPack();
  ASSERT_NE(rules, nullptr);
  ReplayOptions options;
  options.threads = 1;
  options.batch_lines = 7;
  options.prematch = false;
  absl::StatusOr<ReplaySummary> one =
      Replay(rules, palisade::v1::LOG_FORMAT_SYSLOG, lines, options);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_GT(one->decisions.size(), 3u);
  options.prematch = true;
  for (uint32_t threads : {1u, 2u, 3u}) {
    for (uint32_t batch : {7u, 1u, 50u}) {
      options.threads = threads;
      options.batch_lines = batch;
      absl::StatusOr<ReplaySummary> many =
          Replay(rules, palisade::v1::LOG_FORMAT_SYSLOG, lines, options);
      ASSERT_TRUE(many.ok()) << many.status();
      ExpectSame(*one, *many, absl::StrCat(threads, " threads, batches of ", batch));
    }
  }
}

// A source's error ends a threaded replay with it, as a one-thread one.
TEST(ReplayThreadsTest, SourceErrorEndsTheReplay) {
  class Failing : public LineSource {
   public:
    absl::StatusOr<bool> Next(absl::string_view* line) override {
      if (n_++ < 5000) {
        *line = "Mar  3 14:02:01 h sshd[1]: Failed password for root from 192.0.2.9 port 1 ssh2";
        return true;
      }
      return absl::DataLossError("disk gone");
    }

   private:
    int n_ = 0;
  };
  std::shared_ptr<const RuleSet> rules = EveryPack();
  ASSERT_NE(rules, nullptr);
  for (uint32_t threads : {1u, 3u}) {
    Failing source;
    ReplayOptions options;
    options.threads = threads;
    options.batch_lines = 100;
    absl::StatusOr<ReplaySummary> s =
        Replay(rules, palisade::v1::LOG_FORMAT_SYSLOG, source, options);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << threads;
  }
}

}  // namespace
}  // namespace palisade
