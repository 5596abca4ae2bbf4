#include "services/replay/replay.h"

#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <tuple>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "absl/strings/str_cat.h"
#include "services/server/config.h"
#include "tests/corpus/corpus.h"

namespace palisade {
namespace {

std::set<std::string> Targets(const ReplaySummary& s) {
  std::set<std::string> out;
  for (const auto& d : s.decisions) out.insert(d.target().value());
  return out;
}

std::shared_ptr<const RuleSet> Packs(const std::vector<std::string>& files) {
  std::vector<LoadedPack> packs;
  for (const std::string& file : files) {
    absl::StatusOr<LoadedPack> pack = LoadRulePackFile(file);
    EXPECT_TRUE(pack.ok()) << pack.status();
    if (pack.ok()) packs.push_back(*std::move(pack));
  }
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules = RuleSet::Compile(packs);
  EXPECT_TRUE(rules.ok()) << rules.status();
  return rules.ok() ? *rules : nullptr;
}
std::shared_ptr<const RuleSet> Pack(const std::string& file) { return Packs({file}); }

// A months-old log replays to exactly the ground truth: the clock follows the lines.
TEST(ReplayTest, OldLogYieldsTheGroundTruth) {
  CorpusOptions options;
  options.lines = 20000;
  Corpus corpus = GenerateSshd(options);  // March 2026, long before "now"
  absl::StatusOr<ReplaySummary> s =
      Replay(Pack("rules/sshd.textproto"), palisade::v1::LOG_FORMAT_SYSLOG, corpus.lines);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->lines, 20000u);
  EXPECT_EQ(s->malformed, 0u);
  EXPECT_EQ(Targets(*s), corpus.attackers);
  EXPECT_GT(s->matches_per_rule.at("sshd-failed-password"), 0u);
}

// The decisions do not depend on how the log is cut into batches.
// A file streamed through a LineReader (small chunks, so lines straddle them) replays exactly as
// the same lines held in memory; a read error ends the replay with it.
TEST(ReplayTest, AStreamedFileReplaysAsTheLinesInMemory) {
  CorpusOptions options;
  options.lines = 20000;
  Corpus corpus = GenerateSshd(options);
  const std::string path = absl::StrCat(std::getenv("TEST_TMPDIR"), "/sshd.log");
  {
    std::ofstream out(path);
    for (const std::string& line : corpus.lines) out << line << "\n";
  }
  LineReaderOptions small;
  small.chunk_bytes = 4096;
  absl::StatusOr<std::unique_ptr<LineReader>> reader = LineReader::Open(path, small);
  ASSERT_TRUE(reader.ok()) << reader.status();
  ReplayOptions replay;
  replay.batch_lines = 333;
  absl::StatusOr<ReplaySummary> streamed =
      Replay(Pack("rules/sshd.textproto"), palisade::v1::LOG_FORMAT_SYSLOG, **reader, replay);
  absl::StatusOr<ReplaySummary> in_memory =
      Replay(Pack("rules/sshd.textproto"), palisade::v1::LOG_FORMAT_SYSLOG, corpus.lines, replay);
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  ASSERT_TRUE(in_memory.ok()) << in_memory.status();
  EXPECT_EQ(streamed->lines, corpus.lines.size());
  EXPECT_EQ(streamed->matched, in_memory->matched);
  EXPECT_EQ(Targets(*streamed), Targets(*in_memory));
  EXPECT_EQ(Targets(*streamed), corpus.attackers);

  class Failing : public LineSource {
   public:
    absl::StatusOr<bool> Next(absl::string_view* line) override {
      if (n_++ < 10) {
        *line = "Mar  3 14:02:01 h sshd[1]: hello";
        return true;
      }
      return absl::DataLossError("disk gone");
    }

   private:
    int n_ = 0;
  } failing;
  EXPECT_EQ(Replay(Pack("rules/sshd.textproto"), palisade::v1::LOG_FORMAT_SYSLOG, failing, replay)
                .status()
                .code(),
            absl::StatusCode::kDataLoss);
}

// A line longer than max_line_bytes is cut there and its cut end is not its writer's: a rule
// pinned to the end must not key a forged tail a long user name put right before the cut. With
// a cap of 1 MiB or more, as with a smaller one, the reader keeps a byte past the cap, so the
// cut line is known cut; a whole line of exactly the cap's length still keys its own tail.
TEST(ReplayTest, AFileLineCutAtALargeCapIsKnownCut) {
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
  absl::StatusOr<LoadedPack> pack = ParseRulePack(kPinned, "pinned.textproto");
  ASSERT_TRUE(pack.ok()) << pack.status();
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules = RuleSet::Compile({*pack});
  ASSERT_TRUE(rules.ok()) << rules.status();
  for (const size_t cap : {size_t{1} << 20, (size_t{1} << 20) + 4096}) {
    SCOPED_TRACE(absl::StrCat("max_line_bytes ", cap));
    const std::string head = "Failed Login: username=";
    // `tail` ending the line's first `cap` bytes.
    auto capped = [&](const std::string& tail) {
      return head + std::string(cap - head.size() - tail.size(), 'A') + tail;
    };
    const std::string forged = capped(" ip=198.51.100.66") + " ip=192.0.2.1";
    const std::string whole = capped(" ip=203.0.113.5");
    ASSERT_EQ(whole.size(), cap);
    const std::string path = absl::StrCat(std::getenv("TEST_TMPDIR"), "/long.log");
    {
      std::ofstream out(path, std::ios::trunc);
      out << forged << "\n" << whole << "\n";
    }
    ReplayOptions replay;
    replay.max_line_bytes = static_cast<uint32_t>(cap);
    absl::StatusOr<std::unique_ptr<LineReader>> reader =
        LineReader::Open(path, ReplayReaderOptions(palisade::v1::LOG_FORMAT_RAW,
                                                   replay.max_line_bytes, replay.max_record_bytes));
    ASSERT_TRUE(reader.ok()) << reader.status();
    absl::StatusOr<ReplaySummary> s =
        Replay(*rules, palisade::v1::LOG_FORMAT_RAW, **reader, replay);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->lines, 2u);
    EXPECT_EQ(s->truncated, 1u);
    EXPECT_EQ(Targets(*s), std::set<std::string>{"203.0.113.5"});
  }
}

// A replay with a config decides as palisaded with that config would: its engine section
// (here session_ttl) applies, not replay's defaults. Two connections whose address-less
// disconnect comes 5 minutes after their "Connection from": one decision with the default ttl
// (10 minutes), none once the sessions live 60 s.
TEST(ReplayTest, TheConfigsEngineOptionsApply) {
  const std::vector<std::string> lines = {
      "Mar  3 12:00:00 h sshd[100]: Connection from 203.0.113.7 port 1000",
      "Mar  3 12:05:00 h sshd[100]: Disconnecting: Too many authentication failures [preauth]",
      "Mar  3 12:10:00 h sshd[101]: Connection from 203.0.113.7 port 1001",
      "Mar  3 12:15:00 h sshd[101]: Disconnecting: Too many authentication failures [preauth]",
  };
  auto replay = [&](const std::string& text) {
    absl::StatusOr<palisade::v1::Config> config =
        ParseConfig(absl::StrCat("rule_files: \"rules/sshd.textproto\" ", text), "test.textproto",
                    ".");
    EXPECT_TRUE(config.ok()) << config.status();
    absl::StatusOr<ReplayOptions> options = ReplayOptionsFromConfig(*config);
    EXPECT_TRUE(options.ok()) << options.status();
    absl::StatusOr<ReplaySummary> s =
        Replay(Pack("rules/sshd.textproto"), palisade::v1::LOG_FORMAT_SYSLOG, lines, *options);
    EXPECT_TRUE(s.ok()) << s.status();
    return *std::move(s);
  };
  const ReplaySummary by_default = replay("time_zone: \"UTC\"");
  EXPECT_EQ(Targets(by_default), std::set<std::string>{"203.0.113.7"});
  EXPECT_EQ(by_default.matches_per_rule.at("sshd-session-too-many-failures"), 2u);
  const ReplaySummary short_ttl =
      replay("time_zone: \"UTC\" engine { session_ttl { seconds: 60 } }");
  EXPECT_EQ(short_ttl.decisions_created, 0u);
  EXPECT_EQ(short_ttl.matches_per_rule.at("sshd-session-too-many-failures"), 0u);
}

// The config's caps and zones reach the replay's options as palisaded's pipeline gets them.
TEST(ReplayTest, ReplayOptionsFromConfigMirrorsTheDaemon) {
  absl::StatusOr<palisade::v1::Config> config = ParseConfig(
      R"pb(
        rule_files: "rules/sshd.textproto"
        time_zone: "UTC"
        allowlist: "192.0.2.0/24"
        source_time_zones { key: "tokyo" value: "Asia/Tokyo" }
        inputs { files { name: "auth" paths: "/var/log/auth.log" format: "syslog"
                         time_zone: "Europe/Paris" } }
        json_formats { name: "app" message: "msg" time: "ts" time_layout: "unix_ms" }
        decisions_ipv6_folding { addresses: 7 prefix_length: 48 }
        engine {
          max_keys_per_rule: 77 max_evidence: 3 max_evidence_bytes: 4096
          memory_budget_bytes: 2097152 max_sessions: 99 max_session_bytes: 131072
          session_ttl { seconds: 90 } max_line_bytes: 1000 max_record_bytes: 2000000
        }
      )pb",
      "test.textproto", ".");
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<ReplayOptions> o = ReplayOptionsFromConfig(*config);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->engine.max_keys_per_rule, 77u);
  EXPECT_EQ(o->engine.max_evidence, 3u);
  EXPECT_EQ(o->engine.max_evidence_bytes, 4096u);
  EXPECT_EQ(o->engine.memory_budget_bytes, 2097152u);
  EXPECT_EQ(o->engine.sessions.max_sessions, 99u);
  EXPECT_EQ(o->engine.sessions.max_bytes, 131072u);
  EXPECT_EQ(o->engine.sessions.ttl, absl::Seconds(90));
  EXPECT_TRUE(o->engine.allowlist.Contains(*IpAddress::Parse("192.0.2.9")));
  EXPECT_EQ(o->max_line_bytes, 1000u);
  EXPECT_EQ(o->max_record_bytes, 2000000u);
  EXPECT_EQ(o->time_zone, absl::UTCTimeZone());
  ASSERT_EQ(o->source_time_zones.count("tokyo"), 1u);
  EXPECT_EQ(o->source_time_zones.at("tokyo").name(), "Asia/Tokyo");
  ASSERT_EQ(o->source_time_zones.count("auth"), 1u);
  EXPECT_EQ(o->source_time_zones.at("auth").name(), "Europe/Paris");
  ASSERT_EQ(o->json_formats.count("app"), 1u);
  EXPECT_EQ(o->json_formats.at("app").message(), "msg");
  EXPECT_EQ(o->ipv6_fold_addresses, 7u);
  EXPECT_EQ(o->ipv6_fold_prefix, 48);
}

// A replay decides as the daemon: the fourth address of an IPv6 /64 with decisions makes the
// /64's decision, and the addresses after it extend that one.
TEST(ReplayTest, AnIpv6RangeIsFoldedAsTheDaemonFoldsIt) {
  std::shared_ptr<const RuleSet> rules = Pack("rules/sshd.textproto");
  std::vector<std::string> lines;
  for (int i = 1; i <= 10; ++i) {
    for (int k = 0; k < 5; ++k) {
      lines.push_back(absl::StrCat("Mar  3 14:02:0", k, " web-1 sshd[", 100 + i,
                                   "]: Failed password for root from 2001:db8:9:9::", i,
                                   " port 22 ssh2"));
    }
  }
  ReplayOptions options;
  options.engine.ipv6_window_prefix = 0;  // the decisions' folding alone (windows: below)
  absl::StatusOr<ReplaySummary> folded =
      Replay(rules, palisade::v1::LOG_FORMAT_SYSLOG, lines, options);
  ASSERT_TRUE(folded.ok()) << folded.status();
  std::set<std::string> targets;
  for (const auto& d : folded->decisions) targets.insert(d.target().value());
  EXPECT_EQ(targets, (std::set<std::string>{"2001:db8:9:9::1", "2001:db8:9:9::2",
                                            "2001:db8:9:9::3", "2001:db8:9:9::/64"}));
  options.ipv6_fold_addresses = 0;
  absl::StatusOr<ReplaySummary> alone =
      Replay(rules, palisade::v1::LOG_FORMAT_SYSLOG, lines, options);
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_EQ(alone->decisions.size(), 10u);
}

// The range windows are on by default, as in palisaded's default config (decisions_ipv6_folding
// unset: prefix 64): an attacker taking a new address of its /64 for each try is decided as its
// range by a replay as by the daemon. (A replay without a config counted no range window, so it
// found nothing the daemon decided.)
TEST(ReplayTest, RangeWindowsAreOnByDefaultAsInTheDaemon) {
  std::shared_ptr<const RuleSet> rules = Pack("rules/sshd.textproto");
  std::vector<std::string> lines;
  for (int i = 1; i <= 6; ++i) {
    lines.push_back(absl::StrCat("Mar  3 14:02:0", i, " web-1 sshd[", 100 + i,
                                 "]: Failed password for root from 2001:db8:7:7::", i,
                                 " port 22 ssh2"));
  }
  absl::StatusOr<ReplaySummary> replayed =
      Replay(rules, palisade::v1::LOG_FORMAT_SYSLOG, lines, ReplayOptions());
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  std::set<std::string> targets;
  for (const auto& d : replayed->decisions) targets.insert(d.target().value());
  EXPECT_EQ(targets, std::set<std::string>{"2001:db8:7:7::/64"});
  absl::StatusOr<palisade::v1::Config> config =
      ParseConfig(R"pb(rule_files: "rules/sshd.textproto")pb", "test.textproto", ".");
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<ReplayOptions> from_config = ReplayOptionsFromConfig(*config);
  ASSERT_TRUE(from_config.ok()) << from_config.status();
  EXPECT_EQ(ReplayOptions().engine.ipv6_window_prefix, from_config->engine.ipv6_window_prefix);
}

// What identifies a decision across runs (ids are random).
std::set<std::string> Keys(const std::vector<palisade::v1::Decision>& decisions);

// Writes `lines` to `name` under the test's directory, each ended by `eol`; replays it streamed
// (`reader` options) on each of `threads` and expects the result of `lines` held in memory on
// one thread. Returns the in-memory summary.
ReplaySummary ExpectStreamedAsInMemory(const std::vector<std::string>& lines,
                                       const std::string& name, const std::string& eol,
                                       ReplayOptions replay, LineReaderOptions reader,
                                       std::initializer_list<uint32_t> threads) {
  const std::string path = absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
  {
    std::ofstream out(path, std::ios::binary);
    for (const std::string& line : lines) out << line << eol;
  }
  auto rules = Pack("rules/sshd.textproto");
  replay.threads = 1;
  absl::StatusOr<ReplaySummary> in_memory =
      Replay(rules, palisade::v1::LOG_FORMAT_SYSLOG, lines, replay);
  EXPECT_TRUE(in_memory.ok()) << in_memory.status();
  if (!in_memory.ok()) return ReplaySummary();
  for (uint32_t n : threads) {
    absl::StatusOr<std::unique_ptr<LineReader>> file = LineReader::Open(path, reader);
    EXPECT_TRUE(file.ok()) << file.status();
    if (!file.ok()) continue;
    replay.threads = n;
    absl::StatusOr<ReplaySummary> streamed =
        Replay(rules, palisade::v1::LOG_FORMAT_SYSLOG, **file, replay);
    EXPECT_TRUE(streamed.ok()) << streamed.status();
    if (!streamed.ok()) continue;
    EXPECT_EQ(streamed->lines, lines.size()) << n;
    EXPECT_EQ(streamed->malformed, in_memory->malformed) << n;
    EXPECT_EQ(streamed->matched, in_memory->matched) << n;
    EXPECT_EQ(streamed->detections, in_memory->detections) << n;
    EXPECT_EQ(Keys(streamed->decisions), Keys(in_memory->decisions)) << n;
  }
  return *std::move(in_memory);
}

// A CRLF file read in batches straight into their buffers (LineReader::NextBatch), lines
// straddling its 4 KiB reads, replayed on three threads (up to six batches held at once, each
// one's lines views into its own buffer): the decisions of the lines held in memory.
TEST(ReplayTest, AStreamedCrlfFileOnThreeThreadsReplaysAsTheLinesInMemory) {
  CorpusOptions options;
  options.lines = 20000;
  options.seed = 3;
  Corpus corpus = GenerateSshd(options);
  ReplayOptions replay;
  replay.batch_lines = 97;
  LineReaderOptions small;
  small.chunk_bytes = 4096;
  const ReplaySummary in_memory =
      ExpectStreamedAsInMemory(corpus.lines, "sshd-crlf.log", "\r\n", replay, small, {1u, 3u});
  EXPECT_EQ(in_memory.malformed, 0u);
  EXPECT_GT(in_memory.decisions.size(), 10u);
}

// A file whose batches are plain ASCII but for some (LineBuffer::plain: those are not looked at
// line by line): a NUL in a failed password's line, replaced by a space, still counts; a line
// with UTF-8 is matched as it is. Streamed on one and two threads, the lines in memory's result.
TEST(ReplayTest, HostileBytesInAStreamedFileCountAsInMemory) {
  CorpusOptions options;
  options.lines = 6000;
  options.seed = 5;
  Corpus corpus = GenerateSshd(options);
  int nuls = 0;
  for (size_t i = 0; i < corpus.lines.size(); ++i) {
    std::string& line = corpus.lines[i];
    const size_t at = line.find("Failed password for");
    if (at != std::string::npos && i % 500 < 100) {
      line[at + 6] = '\0';  // "Failed\0password for"
      ++nuls;
    } else if (i % 700 == 0) {
      line += " caf\xC3\xA9";
    }
  }
  ASSERT_GT(nuls, 20);
  ReplayOptions replay;
  replay.batch_lines = 100;
  ExpectStreamedAsInMemory(corpus.lines, "sshd-hostile.log", "\n", replay, LineReaderOptions(),
                           {1u, 2u});
}

TEST(ReplayTest, BatchSizeDoesNotChangeTheDecisions) {
  CorpusOptions options;
  options.lines = 20000;
  options.seed = 5;
  Corpus corpus = GenerateNginx(options);
  auto rules = Pack("rules/nginx.textproto");
  absl::StatusOr<ReplaySummary> big =
      Replay(rules, palisade::v1::LOG_FORMAT_COMBINED, corpus.lines, 5000);
  absl::StatusOr<ReplaySummary> small =
      Replay(rules, palisade::v1::LOG_FORMAT_COMBINED, corpus.lines, 7);
  ASSERT_TRUE(big.ok() && small.ok());
  EXPECT_EQ(Targets(*big), Targets(*small));
  EXPECT_EQ(Targets(*big), corpus.attackers);
  EXPECT_EQ(big->detections, small->detections);
}

// What identifies a decision across runs (ids are random).
std::set<std::string> Keys(const std::vector<palisade::v1::Decision>& decisions) {
  std::set<std::string> out;
  for (const auto& d : decisions) {
    out.insert(absl::StrCat(d.rule_id(), " ", d.target().value(), " ", d.start().seconds(), "..",
                            d.expiry().seconds(), " #", d.offence()));
  }
  return out;
}

// `got` holds `want`'s decisions in their order, field for field but the random ids. `want`'s
// carry evidence; `got`'s carry the same lines, or none `without_evidence`.
void ExpectSameDecisions(const std::vector<palisade::v1::Decision>& got,
                         const std::vector<palisade::v1::Decision>& want, bool without_evidence) {
  ASSERT_FALSE(want.empty());
  ASSERT_EQ(got.size(), want.size());
  // want's id -> got's, for the ids a replacement names (replaces, replaced_by).
  std::map<std::string, std::string> id_in_got;
  for (size_t i = 0; i < got.size(); ++i) id_in_got[want[i].id()] = got[i].id();
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_FALSE(want[i].evidence().empty()) << "decision " << i;
    palisade::v1::Decision expected = want[i];
    expected.set_id(got[i].id());
    if (!expected.replaces().empty()) expected.set_replaces(id_in_got[expected.replaces()]);
    if (!expected.replaced_by().empty()) {
      expected.set_replaced_by(id_in_got[expected.replaced_by()]);
    }
    if (without_evidence) expected.clear_evidence();
    ASSERT_EQ(got[i].SerializeAsString(), expected.SerializeAsString()) << "decision " << i;
  }
}

// ReplayOptions::on_decision hears every decision the summary would have held, in its order,
// evidence included, and the summary holds none.
TEST(ReplayTest, OnDecisionHearsTheDecisionsTheSummaryWouldHold) {
  CorpusOptions options;
  options.lines = 20000;
  options.seed = 6;
  Corpus corpus = GenerateSshd(options);
  auto rules = Pack("rules/sshd.textproto");
  absl::StatusOr<ReplaySummary> kept =
      Replay(rules, palisade::v1::LOG_FORMAT_SYSLOG, corpus.lines, ReplayOptions());
  ASSERT_TRUE(kept.ok()) << kept.status();
  ASSERT_FALSE(kept->decisions.empty());
  EXPECT_EQ(kept->decisions_created, kept->decisions.size());
  std::vector<palisade::v1::Decision> heard;
  ReplayOptions streamed;
  streamed.on_decision = [&heard](const palisade::v1::Decision& d) { heard.push_back(d); };
  absl::StatusOr<ReplaySummary> s =
      Replay(rules, palisade::v1::LOG_FORMAT_SYSLOG, corpus.lines, streamed);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->decisions.empty());
  EXPECT_EQ(s->decisions_created, kept->decisions.size());
  ExpectSameDecisions(heard, kept->decisions, /*without_evidence=*/false);
}

// With max_evidence 0 (palisadectl replay without --json) no line is kept, and the replay makes
// the same decisions, in the same order, with the same counts: evidence decides nothing.
TEST(ReplayTest, WithoutEvidenceTheSameDecisionsAreMade) {
  CorpusOptions options;
  options.lines = 20000;
  options.seed = 7;
  for (const auto& [format, corpus, packs] :
       {std::make_tuple(palisade::v1::LOG_FORMAT_SYSLOG, GenerateSshd(options),
                        std::vector<std::string>{"rules/sshd.textproto"}),
        std::make_tuple(palisade::v1::LOG_FORMAT_COMBINED, GenerateNginx(options),
                        std::vector<std::string>{"rules/nginx.textproto",
                                                 "rules/web-attacks.textproto"})}) {
    std::shared_ptr<const RuleSet> rules = Packs(packs);
    ASSERT_NE(rules, nullptr);
    absl::StatusOr<ReplaySummary> kept = Replay(rules, format, corpus.lines, ReplayOptions());
    ReplayOptions none;
    none.engine.max_evidence = 0;
    absl::StatusOr<ReplaySummary> bare = Replay(rules, format, corpus.lines, none);
    ASSERT_TRUE(kept.ok()) << kept.status();
    ASSERT_TRUE(bare.ok()) << bare.status();
    EXPECT_EQ(bare->detections, kept->detections);
    EXPECT_EQ(bare->matches_per_rule, kept->matches_per_rule);
    ExpectSameDecisions(bare->decisions, kept->decisions, /*without_evidence=*/true);
  }
}

// A realistic four-hour auth.log: the required property of replay. Before decisions were made
// line by line, a 1,000-line batch spanned an hour, the clock jumped to its last line first,
// and every decision made early in it that ended before that line was dropped as stale: the
// longer the file, the fewer attackers.
TEST(ReplayTest, PrefixDecisionsAreASubsetOfTheWholeAndBatchSizeChangesNothing) {
  CorpusOptions options;
  options.lines = 3000;
  options.step = absl::Seconds(5);  // 3,000 lines over 4 h 10 min
  options.seed = 11;
  Corpus corpus = GenerateSshd(options);
  auto rules = Pack("rules/sshd.textproto");
  auto run = [&](size_t lines, uint32_t batch) {
    std::vector<std::string> prefix(corpus.lines.begin(), corpus.lines.begin() + lines);
    absl::StatusOr<ReplaySummary> s = Replay(rules, palisade::v1::LOG_FORMAT_SYSLOG, prefix, batch);
    EXPECT_TRUE(s.ok()) << s.status();
    return *std::move(s);
  };
  const ReplaySummary whole = run(corpus.lines.size(), 1000);
  ASSERT_GT(whole.decisions.size(), 10u);
  EXPECT_TRUE(whole.stale.empty());
  for (uint32_t batch : {1u, 7u, 1000u, 5000u}) {
    const ReplaySummary s = run(corpus.lines.size(), batch);
    EXPECT_EQ(Keys(s.decisions), Keys(whole.decisions)) << "batch_lines " << batch;
    EXPECT_EQ(s.detections, whole.detections) << "batch_lines " << batch;
  }
  for (size_t lines : {400u, 1000u, 1777u, 2500u}) {
    for (uint32_t batch : {7u, 1000u}) {
      const ReplaySummary s = run(lines, batch);
      EXPECT_THAT(Keys(s.decisions), ::testing::IsSubsetOf(Keys(whole.decisions)))
          << lines << " lines, batch_lines " << batch;
    }
  }
}

// Windows and sessions age in line time, as the daemon's sweep ages them in wall time: a log of
// 3,000 addresses, each failing once a minute apart over 50 hours, ends with the windows of the
// last 12 hours (sshd-slow-brute-force's span) and 10 minutes (sshd-failed-password's), not one
// per address and rule; nothing is evicted, and every count and decision is the unswept one,
// however the lines are cut into batches.
TEST(ReplayTest, IdleWindowsAndSessionsAgeOutInLineTime) {
  std::vector<std::string> lines;
  const absl::Time start =
      absl::FromCivil(absl::CivilSecond(2026, 3, 3, 12, 0, 0), absl::UTCTimeZone());
  for (int i = 0; i < 3000; ++i) {
    lines.push_back(absl::StrCat(
        absl::FormatTime("%b %e %H:%M:%S", start + absl::Minutes(i), absl::UTCTimeZone()),
        " h sshd[", 1000 + i, "]: Failed password for root from 10.", i / 250, ".", i % 250,
        ".1 port 22 ssh2"));
  }
  ReplayOptions never;
  never.sweep_interval = absl::InfiniteDuration();
  absl::StatusOr<ReplaySummary> kept =
      Replay(Pack("rules/sshd.textproto"), palisade::v1::LOG_FORMAT_SYSLOG, lines, never);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->live_windows, 6000u);  // two rules count each line
  EXPECT_EQ(kept->windows_expired, 0u);
  EXPECT_EQ(kept->sessions_expired, 0u);
  for (uint32_t batch : {1000u, 7u}) {
    ReplayOptions swept;
    swept.batch_lines = batch;
    absl::StatusOr<ReplaySummary> s =
        Replay(Pack("rules/sshd.textproto"), palisade::v1::LOG_FORMAT_SYSLOG, lines, swept);
    ASSERT_TRUE(s.ok()) << s.status();
    // The last 720 minutes' slow-brute-force windows and the last 10 minutes' others, and at
    // most what aged out since their rule's last walk (an eighth of its span: 90 and 1.25
    // minutes), give or take the minute between sweeps.
    EXPECT_GE(s->live_windows, 720u + 10u);
    EXPECT_LE(s->live_windows, (722u + 90u) + (12u + 2u));
    EXPECT_EQ(s->windows_expired + s->live_windows, 6000u);
    EXPECT_EQ(s->windows_evicted, 0u);
    EXPECT_GT(s->sessions_expired, 2900u);
    EXPECT_EQ(s->sessions_evicted, 0u);
    EXPECT_EQ(s->matched, kept->matched);
    EXPECT_EQ(s->detections, kept->detections);
    EXPECT_EQ(s->matches_per_rule, kept->matches_per_rule);
    EXPECT_EQ(Targets(*s), Targets(*kept));
  }
}

// A line far older than the ones before it (an out-of-order merge of two files) makes a
// decision that would already be over: it is not created, but the summary tells of it.
TEST(ReplayTest, StaleDetectionsAreReported) {
  std::vector<std::string> lines = {"Mar  3 15:00:00 h sshd[1]: Accepted publickey for a from "
                                    "198.51.100.1 port 1 ssh2"};
  for (int i = 0; i < 5; ++i) {
    lines.push_back(absl::StrCat("Mar  3 12:00:0", i,
                                 " h sshd[1]: Failed password for root from 203.0.113.9 port ",
                                 100 + i, " ssh2"));
  }
  absl::StatusOr<ReplaySummary> s =
      Replay(Pack("rules/sshd.textproto"), palisade::v1::LOG_FORMAT_SYSLOG, lines);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->detections, 1u);
  EXPECT_TRUE(s->decisions.empty());
  ASSERT_EQ(s->stale.size(), 1u);
  EXPECT_EQ(s->stale[0].target().value(), "203.0.113.9");
}

// A sparse log with a gap of three days: the later lines keep their own times. Before, they were
// resolved against the batch's reference (the clock, a day-ahead limit): RFC 3164 lines moved a
// year back (the attack's decision was then stale and dropped), and dated lines were clamped to
// one instant (five failures forty minutes apart became a false detection). The first line after
// the gap, more than a day ahead of the clock, is counted at the clock (as a line from a host
// whose clock runs ahead: a replay cannot tell the two apart yet); the second sets the clock.
TEST(ReplayTest, GapOfDaysKeepsLineTimes) {
  const std::string first =
      "Mar  3 12:00:00 h sshd[1]: Accepted publickey for a from 198.51.100.1 port 1 ssh2";
  std::vector<std::string> attack = {
      first, "Mar  6 11:59:00 h sshd[1]: Accepted publickey for a from 198.51.100.1 port 1 ssh2"};
  std::vector<std::string> sparse = {first};
  for (int i = 0; i < 5; ++i) {
    attack.push_back(absl::StrCat("Mar  6 12:00:0", i,
                                  " h sshd[1]: Failed password for root from 203.0.113.9 port ",
                                  100 + i, " ssh2"));
    sparse.push_back(absl::StrCat("2026-03-06T12:", i,
                                  "0:00Z h sshd[1]: Failed password for root from 203.0.113.8 "
                                  "port ",
                                  100 + i, " ssh2"));
  }
  for (uint32_t batch : {1u, 1000u}) {
    absl::StatusOr<ReplaySummary> s =
        Replay(Pack("rules/sshd.textproto"), palisade::v1::LOG_FORMAT_SYSLOG, attack, batch);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->clamped, 1u) << "batch_lines " << batch;
    ASSERT_EQ(s->decisions.size(), 1u) << "batch_lines " << batch;
    EXPECT_EQ(absl::FormatTime("%m-%d %H:%M:%S", absl::FromUnixSeconds(s->decisions[0].start().seconds()),
                               absl::UTCTimeZone()),
              "03-06 12:00:04");
    s = Replay(Pack("rules/sshd.textproto"), palisade::v1::LOG_FORMAT_SYSLOG, sparse, batch);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->clamped, 1u) << "batch_lines " << batch;
    EXPECT_EQ(s->detections, 0u) << "batch_lines " << batch;
  }
}

// A raw log whose lines start with Unix seconds (Squid's native access.log) is replayed at its
// lines' times. Before, such a stamp was not read: the lines had no time and all counted at the
// replay's clock, so five denials 15 minutes apart (proxies' squid-access-denied: 5 in 10 minutes)
// were one instant and a ban. Five 15 minutes apart (any 10 minutes hold one) make nothing; the
// same five 10 s apart (all within 40 s) still make the rule fire.
TEST(ReplayTest, SquidsUnixSecondsAreTheLinesTimes) {
  const auto squid_lines = [](int spacing_seconds) {
    std::vector<std::string> lines;
    for (int i = 0; i < 5; ++i) {
      lines.push_back(absl::StrCat(1386543323 + i * spacing_seconds,
                                   ".000      4 91.188.124.227 TCP_DENIED/403 4099 GET "
                                   "http://www.proxy-listen.de/azenv.php - HIER_NONE/- text/html"));
    }
    return lines;
  };
  for (uint32_t batch : {1u, 1000u}) {
    SCOPED_TRACE(absl::StrCat("batch_lines ", batch));
    absl::StatusOr<ReplaySummary> s = Replay(Pack("rules/proxies.textproto"),
                                             palisade::v1::LOG_FORMAT_RAW, squid_lines(900), batch);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->lines, 5u);
    EXPECT_EQ(s->untimed, 0u);
    EXPECT_EQ(s->detections, 0u);
    EXPECT_TRUE(s->decisions.empty());
    s = Replay(Pack("rules/proxies.textproto"), palisade::v1::LOG_FORMAT_RAW, squid_lines(10),
               batch);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->detections, 1u);
    ASSERT_EQ(s->decisions.size(), 1u);
    EXPECT_EQ(s->decisions[0].target().value(), "91.188.124.227");
    EXPECT_EQ(s->decisions[0].start().seconds(), 1386543363);  // the fifth line's time
  }
}

// A line without a time (RFC 5424's "-") is counted at the clock's time but does not move the
// clock: first in a log of last year, it set the replay's clock to today, where it stayed (the
// lines after it are older), and every decision of the log was then stale on creation.
TEST(ReplayTest, ALineWithoutATimeDoesNotMoveTheClock) {
  std::vector<std::string> lines = {"<38>1 - h sshd 1 - - Server listening on 0.0.0.0 port 22."};
  for (int i = 0; i < 5; ++i) {
    lines.push_back(absl::StrCat("<38>1 2025-06-01T10:00:0", i,
                                 "Z h sshd 1 - - Failed password for root from 203.0.113.9 port ",
                                 100 + i, " ssh2"));
  }
  for (uint32_t batch : {1u, 1000u}) {
    absl::StatusOr<ReplaySummary> s =
        Replay(Pack("rules/sshd.textproto"), palisade::v1::LOG_FORMAT_SYSLOG5424, lines, batch);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->malformed, 0u) << "batch_lines " << batch;
    EXPECT_EQ(s->untimed, 1u) << "batch_lines " << batch;  // told (palisadectl replay says so)
    EXPECT_EQ(s->detections, 1u) << "batch_lines " << batch;
    EXPECT_TRUE(s->stale.empty()) << "batch_lines " << batch;
    ASSERT_EQ(s->decisions.size(), 1u) << "batch_lines " << batch;
    EXPECT_EQ(s->decisions[0].start().seconds(), 1748772004);  // 2025-06-01T10:00:04Z
  }
}

// A line dated more than a day ahead of the replay's clock (a host whose clock runs days or
// decades ahead) is counted at the clock, as palisaded counts it at its now, and moves neither the
// clock nor the year of the yearless lines after it. Before, it set the clock: the five failures
// after it were judged against it and their 1-hour decision was stale, and after a 2099 line
// every decision was.
TEST(ReplayTest, ALineDatedDaysAheadDoesNotMoveTheClock) {
  for (absl::string_view ahead : {"2025-06-03T15:00:00Z", "2099-01-01T00:00:00Z"}) {
    std::vector<std::string> lines = {
        "<38>1 2025-06-01T09:59:00Z h1 sshd 1 - - Server listening on 0.0.0.0 port 22.",
        absl::StrCat("<38>1 ", ahead, " h2 sshd 1 - - Server listening on 0.0.0.0 port 22.")};
    for (int i = 0; i < 5; ++i) {
      lines.push_back(absl::StrCat("<38>1 2025-06-01T10:00:0", i,
                                   "Z h1 sshd 1 - - Failed password for root from 203.0.113.9 "
                                   "port ",
                                   100 + i, " ssh2"));
    }
    for (uint32_t batch : {1u, 1000u}) {
      SCOPED_TRACE(absl::StrCat(ahead, ", batch_lines ", batch));
      absl::StatusOr<ReplaySummary> s =
          Replay(Pack("rules/sshd.textproto"), palisade::v1::LOG_FORMAT_SYSLOG5424, lines, batch);
      ASSERT_TRUE(s.ok()) << s.status();
      EXPECT_EQ(s->clamped, 1u);
      EXPECT_TRUE(s->stale.empty());
      ASSERT_EQ(s->decisions.size(), 1u);
      EXPECT_EQ(s->decisions[0].start().seconds(), 1748772004);  // 2025-06-01T10:00:04Z
    }
  }
}

// A host of a central log whose clock is in 2099 writes in bursts (sshd writes several lines per
// connection), and may write the log's first line. Neither moves the clock: a far-ahead line
// moves it only when a line from another host agrees (within a day of it), and the first line
// only once a second line within a day of it agrees. Before, two such lines in a row, or the
// first line alone, set the clock to 2099 and the healthy host's decision was stale.
TEST(ReplayTest, AHostsBurstOrFirstLineDatedFarAheadDoesNotTakeTheClock) {
  const std::string listening = "Server listening on 0.0.0.0 port 22.";
  const std::string h1 = "<38>1 2025-06-01T09:59:00Z h1 sshd 1 - - " + listening;
  const std::string h2 = "<38>1 2099-01-01T00:00:00Z h2 sshd 1 - - " + listening;
  std::vector<std::string> failures;
  for (int i = 0; i < 5; ++i) {
    failures.push_back(absl::StrCat("<38>1 2025-06-01T10:00:0", i,
                                    "Z h1 sshd 1 - - Failed password for root from 203.0.113.9 "
                                    "port ",
                                    100 + i, " ssh2"));
  }
  // {h2, h2, h1}: a burst of the skewed host at the very start (a second line of the same host
  // agreeing is no proof: before its review, it set the clock to 2099).
  const std::vector<std::vector<std::string>> logs = {{h1, h2, h2}, {h2, h1}, {h2, h2, h1}};
  for (size_t l = 0; l < logs.size(); ++l) {
    std::vector<std::string> lines = logs[l];
    lines.insert(lines.end(), failures.begin(), failures.end());
    for (uint32_t batch : {1u, 1000u}) {
      SCOPED_TRACE(absl::StrCat("log ", l, ", batch_lines ", batch));
      absl::StatusOr<ReplaySummary> s =
          Replay(Pack("rules/sshd.textproto"), palisade::v1::LOG_FORMAT_SYSLOG5424, lines, batch);
      ASSERT_TRUE(s.ok()) << s.status();
      EXPECT_EQ(s->decisions_created, 1u);
      EXPECT_TRUE(s->stale.empty());
      ASSERT_EQ(s->decisions.size(), 1u);
      EXPECT_EQ(s->decisions[0].start().seconds(), 1748772004);  // 2025-06-01T10:00:04Z
    }
  }
}

// A central log silent for more than a day moves on: the first line after the silence is
// counted at the clock, and a line from another host within a day of it sets the clock, so
// the attack after it is decided at its own time (not stale).
TEST(ReplayTest, AnotherHostAgreeingMovesTheClockOnAfterASilence) {
  std::vector<std::string> lines = {
      "<38>1 2025-06-01T09:59:00Z h1 sshd 1 - - Server listening on 0.0.0.0 port 22.",
      "<38>1 2025-06-03T09:59:00Z h1 sshd 1 - - Server listening on 0.0.0.0 port 22.",
      "<38>1 2025-06-03T09:59:30Z h2 sshd 1 - - Server listening on 0.0.0.0 port 22."};
  for (int i = 0; i < 5; ++i) {
    lines.push_back(absl::StrCat("<38>1 2025-06-03T10:00:0", i,
                                 "Z h1 sshd 1 - - Failed password for root from 203.0.113.9 "
                                 "port ",
                                 100 + i, " ssh2"));
  }
  for (uint32_t batch : {1u, 1000u}) {
    SCOPED_TRACE(absl::StrCat("batch_lines ", batch));
    absl::StatusOr<ReplaySummary> s =
        Replay(Pack("rules/sshd.textproto"), palisade::v1::LOG_FORMAT_SYSLOG5424, lines, batch);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->clamped, 1u);
    EXPECT_TRUE(s->stale.empty());
    ASSERT_EQ(s->decisions.size(), 1u);
    EXPECT_EQ(s->decisions[0].start().seconds(), 1748944804);  // 2025-06-03T10:00:04Z
  }
}

// A log that has had two HOSTNAMEs (a boot's "localhost", then the host's name) and then a
// weekend's silence: the one host that comes back moves the clock once its lines have agreed
// over kAheadSpan (10 minutes) of their own time. Before (its review found), only another host
// could confirm, so every later line was clamped to Friday: five failures an hour apart counted
// at one instant, a false ban.
TEST(ReplayTest, ASingleHostAfterASilenceInAManyHostLogMovesTheClock) {
  std::vector<std::string> lines = {
      "<38>1 2025-06-06T09:00:00Z localhost sshd 1 - - Server listening on 0.0.0.0 port 22.",
      "<38>1 2025-06-06T09:01:00Z web1 sshd 1 - - Server listening on 0.0.0.0 port 22."};
  for (int hour = 8; hour <= 12; ++hour) {
    lines.push_back(absl::StrCat("<38>1 2025-06-09T", absl::Dec(hour, absl::kZeroPad2),
                                 ":00:00Z web1 sshd 1 - - Failed password for root from "
                                 "203.0.113.9 port ",
                                 100 + hour, " ssh2"));
  }
  for (uint32_t batch : {1u, 1000u}) {
    SCOPED_TRACE(absl::StrCat("batch_lines ", batch));
    absl::StatusOr<ReplaySummary> s =
        Replay(Pack("rules/sshd.textproto"), palisade::v1::LOG_FORMAT_SYSLOG5424, lines, batch);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->decisions_created, 0u);
    EXPECT_LE(s->clamped, 1u);
  }
}

// The same in RFC 3164, whose times have no year: the failures after a 2099 line take theirs
// from the line before it (they were read in 2098 or 2099, and their decision was stale).
TEST(ReplayTest, ALineDatedDaysAheadIsNoYearReference) {
  std::vector<std::string> lines = {
      "Jun  1 09:59:00 h1 sshd[1]: Server listening on 0.0.0.0 port 22.",
      "2099-01-01T00:00:00Z h2 kernel: clock not set"};
  for (int i = 0; i < 5; ++i) {
    lines.push_back(absl::StrCat("Jun  1 10:00:0", i,
                                 " h1 sshd[1]: Failed password for root from 203.0.113.9 port ",
                                 100 + i, " ssh2"));
  }
  for (uint32_t batch : {1u, 1000u}) {
    SCOPED_TRACE(absl::StrCat("batch_lines ", batch));
    absl::StatusOr<ReplaySummary> s =
        Replay(Pack("rules/sshd.textproto"), palisade::v1::LOG_FORMAT_SYSLOG, lines, batch);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->clamped, 1u);
    EXPECT_TRUE(s->stale.empty());
    ASSERT_EQ(s->decisions.size(), 1u);
    // The first line's year: the last 1 June at most a day after now.
    const absl::Time start = absl::FromUnixSeconds(s->decisions[0].start().seconds());
    EXPECT_LE(start, absl::Now() + absl::Hours(24));
    EXPECT_GT(start, absl::Now() - absl::Hours(24 * 367));
  }
}

// A yearless log from 2024 replayed later: with ReplayOptions::reference (the time the log was
// written up to) its first line takes its year from there, not from the wall clock, so its
// leap day exists and its attack is found. From the wall clock's year, 2024 was out of reach
// (y-1..y+1): every "Feb 29" line was malformed and a bad time.
TEST(ReplayTest, AReferenceTimeGivesAnOldYearlessLogItsYear) {
  std::vector<std::string> lines = {
      "Feb 28 23:59:00 h sshd[1]: Server listening on 0.0.0.0 port 22."};
  for (int i = 0; i < 5; ++i) {
    lines.push_back(absl::StrCat("Feb 29 00:00:0", i,
                                 " h sshd[1]: Failed password for root from 203.0.113.9 port ",
                                 100 + i, " ssh2"));
  }
  ReplayOptions options;
  options.reference = absl::FromUnixSeconds(1711843200);  // 2024-03-31T00:00:00Z
  for (uint32_t batch : {1u, 1000u}) {
    SCOPED_TRACE(absl::StrCat("batch_lines ", batch));
    options.batch_lines = batch;
    absl::StatusOr<ReplaySummary> s =
        Replay(Pack("rules/sshd.textproto"), palisade::v1::LOG_FORMAT_SYSLOG, lines, options);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->malformed, 0u);
    EXPECT_EQ(s->clamped, 0u);
    EXPECT_TRUE(s->stale.empty());
    ASSERT_EQ(s->decisions.size(), 1u);
    EXPECT_EQ(s->decisions[0].start().seconds(), 1709164804);  // 2024-02-29T00:00:04Z
  }
}

// Yearless lines across New Year: the year follows the previous line, and a log from the future
// is replayed as written (no clamp to the wall clock).
TEST(ReplayTest, NewYearAndFutureLogs) {
  std::vector<std::string> lines;
  for (int i = 0; i < 5; ++i) {
    lines.push_back(absl::StrCat(i < 2 ? "Dec 31 23:59:5" : "Jan  1 00:00:0", i,
                                 " h sshd[1]: Failed password for root from 203.0.113.9 port ",
                                 100 + i, " ssh2"));
  }
  absl::StatusOr<ReplaySummary> s =
      Replay(Pack("rules/sshd.textproto"), palisade::v1::LOG_FORMAT_SYSLOG, lines);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->decisions.size(), 1u);  // five failures within seconds: one decision
  std::vector<std::string> future;
  for (int i = 0; i < 5; ++i) {
    future.push_back(absl::StrCat("2099-01-01T00:00:0", i,
                                  "Z h sshd[1]: Failed password for root from 203.0.113.9 port ",
                                  100 + i, " ssh2"));
  }
  s = Replay(Pack("rules/sshd.textproto"), palisade::v1::LOG_FORMAT_SYSLOG, future);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->decisions.size(), 1u);
  EXPECT_EQ(s->decisions[0].start().seconds(), 4070908804);  // 2099-01-01T00:00:04Z
}

// Recidive (rules/recidive.textproto) in replay: the decision lines are fed and decided on the
// line that made them, as in the daemon. 203.0.113.7 is blocked three times in four hours: the
// third block becomes a week, so its failure three days later only extends it (no new
// decision, and nothing fed: a renewal is the same ban); 198.51.100.8, blocked twice, is
// blocked anew then. The batch size changes nothing.
TEST(ReplayTest, RecidiveTurnsTheThirdBlockOfADayIntoAWeek) {
  constexpr absl::string_view kOffences = R"pb(
    rules {
      id: "ssh-fail"
      formats: LOG_FORMAT_SYSLOG
      patterns: "^Failed password for \\S+ from (?P<ip>[0-9a-f:.]+) port \\d+ ssh2$"
      threshold { count: 1 }
      decision { action: ACTION_BLOCK duration { seconds: 600 } }
    }
  )pb";
  absl::StatusOr<LoadedPack> recidive = LoadRulePackFile("rules/recidive.textproto");
  ASSERT_TRUE(recidive.ok()) << recidive.status();
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules =
      RuleSet::Compile({*ParseRulePack(kOffences, "offences.textproto"), *recidive});
  ASSERT_TRUE(rules.ok()) << rules.status();
  std::vector<std::string> lines;
  auto fail = [&](absl::string_view when, absl::string_view ip) {
    lines.push_back(absl::StrCat(when, " h sshd[1]: Failed password for root from ", ip,
                                 " port 22 ssh2"));
  };
  fail("Mar  3 00:00:00", "203.0.113.7");
  fail("Mar  3 00:30:00", "198.51.100.8");
  fail("Mar  3 02:00:00", "203.0.113.7");
  fail("Mar  3 02:30:00", "198.51.100.8");
  fail("Mar  3 04:00:00", "203.0.113.7");
  fail("Mar  6 04:00:00", "203.0.113.7");
  fail("Mar  6 04:30:00", "198.51.100.8");
  for (uint32_t batch : {1u, 1000u}) {
    absl::StatusOr<ReplaySummary> s =
        Replay(*rules, palisade::v1::LOG_FORMAT_SYSLOG, lines, batch);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->detections, 8u) << batch;  // seven blocks and one recidive
    // Every block that started anew was fed; the extension on Mar 6 and the week's own
    // decision were not.
    EXPECT_EQ(s->matches_per_rule["recidive"], 6u) << batch;
    std::map<std::string, int> created;
    for (const auto& d : s->decisions) ++created[d.target().value()];
    EXPECT_EQ(created["203.0.113.7"], 3) << batch;
    EXPECT_EQ(created["198.51.100.8"], 3) << batch;
  }
}


// A file of audit records (as the poller renders them, or as saved from the API) replays
// offline: only palisaded's own poller may feed them to a daemon, but a replay reaches no edge.
TEST(ReplayTest, AuditRecordsReplayAndDecideTheTokenUsedFromOutsideItsRange) {
  absl::StatusOr<LoadedPack> pack = LoadRulePackFile("rules/cloudflare-audit.textproto");
  ASSERT_TRUE(pack.ok()) << pack.status();
  CidrSets sets;
  sets.emplace("cloudflare_token_ips", *CidrSet::Parse({"192.0.2.0/24"}));
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules = RuleSet::Compile({*pack}, sets);
  ASSERT_TRUE(rules.ok()) << rules.status();
  const std::vector<std::string> lines = {
      "{\"id\":\"a1\",\"action\":{\"result\":\"success\",\"time\":\"2026-03-03T14:02:01Z\","
      "\"type\":\"create\"},\"actor\":{\"email\":\"ci@example.com\",\"ip_address\":"
      "\"203.0.113.50\",\"token_id\":\"ed17574386854bf78a67040be0a770b0\",\"token_name\":"
      "\"ci-deploy\"},\"resource\":{\"id\":\"r\",\"type\":\"filters.list\"}}"};
  absl::StatusOr<ReplaySummary> summary =
      Replay(*rules, palisade::v1::LOG_FORMAT_CLOUDFLARE_AUDIT, lines, ReplayOptions());
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(Targets(*summary), std::set<std::string>{"ed17574386854bf78a67040be0a770b0"});
}

}  // namespace
}  // namespace palisade
