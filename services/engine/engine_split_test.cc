// The cluster's split (issue 17): Process on one engine gives exactly the detections that
// MatchLine on a matching engine and CountMatch of each of its matches on a counting engine give
// (same rules, same order, same keys, times, evidence and secrets), with every shipped pack
// loaded (sessions, recidive, token rules, field rules) over the generated sshd and nginx
// corpora and every pack's annotated test log read several times over (so the thresholds of the
// other packs are crossed too), hostile lines included. And CountMatch refuses what a remote
// node could send that this engine would never have counted.
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "rules/shipped_packs.h"
#include "services/engine/engine.h"
#include "services/formats/line_parser.h"
#include "tests/corpus/corpus.h"

namespace palisade {
namespace {

std::shared_ptr<const RuleSet> EveryPack() {
  absl::StatusOr<std::shared_ptr<const RuleSet>> set = CompileShippedPacks();
  EXPECT_TRUE(set.ok()) << set.status();
  return set.ok() ? *set : nullptr;
}

struct Line {
  palisade::v1::LogFormat format;
  std::string text;
};

// Everything a detection carries, as text (the rule pointer differs between engines).
std::string Describe(const Detection& d) {
  std::string out =
      absl::StrCat(d.rule_id, " ", d.kind, " ", d.key, " ", absl::FormatTime(d.time),
                   " secret=", d.secret.size(), ":", d.secret, " feeds=", d.feeds.size());
  for (const std::string& e : d.evidence) absl::StrAppend(&out, "\n  ", e);
  return out;
}

struct Outcome {
  std::vector<std::string> detections;
  std::vector<std::string> results;  // per line: matched, matches, ignored, invalid keys
  std::vector<uint64_t> matches_per_rule;
  size_t matches = 0;
};

std::string DescribeResult(const LineResult& r) {
  return absl::StrCat(r.matched, "/", r.matches, "/", r.ignored, "/", r.invalid_keys);
}

// The lines through one engine (split = false) or through a matching and a counting engine.
// `ipv6_window_prefix`: EngineOptions' (0: no range windows).
Outcome Run(std::shared_ptr<const RuleSet> rules, const std::vector<Line>& lines, bool split,
            int ipv6_window_prefix = 0) {
  EngineOptions options;
  options.max_evidence = 3;
  options.max_evidence_bytes = 600;  // long lines are cut: the cut must match too
  options.ipv6_window_prefix = ipv6_window_prefix;
  Engine one(rules, options);
  Engine matcher(rules, options);
  Engine counter(rules, options);
  Outcome o;
  absl::Time reference = absl::FromUnixSeconds(1'772'000'000);
  std::vector<Detection> detections;
  std::vector<EngineMatch> matches;
  for (const Line& l : lines) {
    LineParser parser(l.format);
    ParsedLine parsed;
    if (!parser.Parse(l.text, reference, &parsed, YearRule::kNearest).ok()) continue;
    if (parsed.time) reference = *parsed.time;
    detections.clear();
    LineResult r;
    if (!split) {
      r = one.Process(l.format, parsed, l.text, reference, &detections, /*stream=*/1);
    } else {
      matches.clear();
      r = matcher.MatchLine(l.format, parsed, l.text, reference, &matches, /*stream=*/1);
      o.matches += matches.size();
      for (const EngineMatch& m : matches) {
        EXPECT_TRUE(counter.CountMatch(m, &detections).ok()) << m.rule_id << " " << m.key;
      }
    }
    o.results.push_back(DescribeResult(r));
    for (const Detection& d : detections) o.detections.push_back(Describe(d));
  }
  o.matches_per_rule = split ? counter.matches_per_rule() : one.matches_per_rule();
  return o;
}

void ExpectSameSplit(const std::vector<Line>& lines, size_t min_detections) {
  std::shared_ptr<const RuleSet> rules = EveryPack();
  ASSERT_NE(rules, nullptr);
  const Outcome whole = Run(rules, lines, /*split=*/false);
  const Outcome split = Run(rules, lines, /*split=*/true);
  EXPECT_GE(whole.detections.size(), min_detections);
  EXPECT_GT(split.matches, 0u);
  ASSERT_EQ(whole.detections.size(), split.detections.size());
  for (size_t i = 0; i < whole.detections.size(); ++i) {
    ASSERT_EQ(whole.detections[i], split.detections[i]) << "detection " << i;
  }
  EXPECT_TRUE(whole.results == split.results);
  EXPECT_EQ(whole.matches_per_rule, split.matches_per_rule);
}

// As replay_threads_test: a NUL, bytes that are not UTF-8, a long line that still matches, a
// line that does not parse, every 997th line.
std::vector<Line> Lines(palisade::v1::LogFormat format, std::vector<std::string> texts) {
  std::vector<Line> out;
  for (size_t i = 0; i < texts.size(); ++i) {
    if (i % 997 == 500) {
      std::string hostile;
      switch ((i / 997) % 4) {
        case 0:
          hostile = texts[i] + std::string(1, '\0') + " tail";
          break;
        case 1:
          hostile = texts[i] + " \xff\xfe\xc0\x80";
          break;
        case 2:
          hostile = texts[i] + " " + std::string(5000, 'A');
          break;
        default:
          hostile = "not a log line at all";
      }
      out.push_back({format, std::move(hostile)});
    }
    out.push_back({format, std::move(texts[i])});
  }
  return out;
}

TEST(EngineSplitTest, SshdCorpusEveryPack) {
  CorpusOptions corpus;
  corpus.lines = 40000;
  corpus.seed = 11;
  ExpectSameSplit(Lines(palisade::v1::LOG_FORMAT_SYSLOG, GenerateSshd(corpus).lines), 50);
}

TEST(EngineSplitTest, NginxCorpusEveryPack) {
  CorpusOptions corpus;
  corpus.lines = 40000;
  corpus.seed = 11;
  ExpectSameSplit(Lines(palisade::v1::LOG_FORMAT_COMBINED, GenerateNginx(corpus).lines), 50);
}

// Every pack's annotated log (rules/testlogs), its lines in order five times over: the other
// packs' rules (token rules, field rules on JSON records, session rules) cross their
// thresholds too.
TEST(EngineSplitTest, EveryPackTestLogFiveTimes) {
  std::vector<Line> lines;
  for (const std::string& log : FilesIn("rules/testlogs", ".log")) {
    std::vector<Line> once;
    std::ifstream in(log);
    ASSERT_TRUE(in.good()) << log;
    palisade::v1::LogFormat format = palisade::v1::LOG_FORMAT_SYSLOG;
    std::string text;
    while (std::getline(in, text)) {
      if (absl::StartsWith(text, "# format:")) {
        absl::StatusOr<palisade::v1::LogFormat> f =
            ParseOfflineFormatName(absl::StripAsciiWhitespace(absl::string_view(text).substr(9)));
        ASSERT_TRUE(f.ok()) << log << ": " << f.status();
        format = *f;
        continue;
      }
      if (text.empty() || text[0] == '#') continue;
      once.push_back({format, text});
    }
    for (int round = 0; round < 5; ++round) lines.insert(lines.end(), once.begin(), once.end());
  }
  ASSERT_GT(lines.size(), 500u);
  ExpectSameSplit(lines, 100);
}

// IPv6 range windows (EngineOptions::ipv6_window_prefix): an attacker trying once from each of
// three addresses of its /64 fills no address's window, only the range's; CountMatch counts
// the range window as Process does (a cluster routes a range's matches to one partition).
TEST(EngineSplitTest, AnIpv6RangeWindowIsCountedByCountMatchAsByProcess) {
  std::shared_ptr<const RuleSet> rules = EveryPack();
  ASSERT_NE(rules, nullptr);
  std::vector<Line> lines;
  for (int i = 1; i <= 3; ++i) {
    lines.push_back(
        {palisade::v1::LOG_FORMAT_SYSLOG,
         absl::StrCat("Mar  3 14:02:0", i, " web-1 sshd[42", i,
                      "]: Invalid user admin from 2001:db8:1:2::", i, " port 5281", i)});
  }
  const std::string range = absl::StrCat(
      "sshd-invalid-user ", palisade::v1::TargetKind::TARGET_KIND_RANGE, " 2001:db8:1:2::/64 ");
  const Outcome whole = palisade::Run(rules, lines, /*split=*/false, /*ipv6_window_prefix=*/64);
  const Outcome split = palisade::Run(rules, lines, /*split=*/true, /*ipv6_window_prefix=*/64);
  ASSERT_EQ(whole.detections.size(), 1u);
  EXPECT_TRUE(absl::StartsWith(whole.detections[0], range)) << whole.detections[0];
  EXPECT_EQ(whole.detections, split.detections);
  EXPECT_EQ(whole.results, split.results);
  EXPECT_EQ(whole.matches_per_rule, split.matches_per_rule);
}

TEST(EngineSplitTest, CountMatchRefusesWhatThisEngineWouldNotCount) {
  std::shared_ptr<const RuleSet> rules = EveryPack();
  ASSERT_NE(rules, nullptr);
  EngineOptions options;
  options.allowlist.Add(*Cidr::Parse("198.51.100.0/24"));
  Engine engine(rules, options);
  std::vector<Detection> out;
  EngineMatch m;
  m.rule_id = "no-such-rule";
  m.key = "192.0.2.9";
  m.time = absl::FromUnixSeconds(1'772'000'000);
  EXPECT_EQ(engine.CountMatch(m, &out).code(), absl::StatusCode::kNotFound);
  // An address rule of the sshd pack.
  std::string ip_rule;
  for (const auto& r : rules->rules()) {
    if (r->proto.key_kind() == palisade::v1::TargetKind::TARGET_KIND_IP && r->count > 1) {
      ip_rule = r->id();
      break;
    }
  }
  ASSERT_FALSE(ip_rule.empty());
  m.rule_id = ip_rule;
  for (const char* bad : {"", "192.0.2.09", "not-an-address", "2001:DB8::1", "::ffff:192.0.2.9"}) {
    m.key = bad;
    EXPECT_EQ(engine.CountMatch(m, &out).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  for (const char* allowed : {"127.0.0.1", "198.51.100.7"}) {
    m.key = allowed;
    EXPECT_EQ(engine.CountMatch(m, &out).code(), absl::StatusCode::kFailedPrecondition) << allowed;
  }
  EXPECT_EQ(engine.live_windows(), 0u);
  m.key = "2001:db8::1";
  EXPECT_TRUE(engine.CountMatch(m, &out).ok());
  EXPECT_EQ(engine.live_windows(), 1u);
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace palisade
