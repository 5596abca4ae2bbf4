// Lines cut at the daemon's cap (ParsedLine::cut): the cut end is not the line's end, so no
// pattern may match `$` or `\z` there. A login name of ~16 KiB that ends in a forged tail,
// placed so that the cut falls right after it, must not become the key of a rule pinned to the
// end (gitlab's `username=.* ip=(?P<ip>...)$`), on any path that runs patterns: Process,
// MatchLine, MatchOnly, Prematch (one line or many), token rules and sessions. Rules that do not
// read the end still match a cut line. Shipped packs, loaded as the daemon loads them (and an
// in-memory pack for sessions).
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/engine/engine.h"
#include "services/engine/rule_set.h"
#include "services/formats/line_parser.h"

namespace palisade {
namespace {

using ::palisade::v1::LogFormat;

// pipeline.cc's default max_line_bytes: where the daemon cuts.
constexpr size_t kCap = 16384;
const absl::Time kT0 = absl::FromUnixSeconds(1'772'546'521);  // 2026-03-03T14:02:01Z

std::shared_ptr<const RuleSet> ShippedPacks(const std::vector<std::string>& names) {
  std::vector<LoadedPack> packs;
  for (const std::string& name : names) {
    absl::StatusOr<LoadedPack> pack = LoadRulePackFile("rules/" + name + ".textproto");
    EXPECT_TRUE(pack.ok()) << pack.status();
    if (!pack.ok()) return nullptr;
    packs.push_back(*std::move(pack));
  }
  absl::StatusOr<std::shared_ptr<const RuleSet>> set = RuleSet::Compile(packs);
  EXPECT_TRUE(set.ok()) << set.status();
  return set.ok() ? *set : nullptr;
}

// The gitlab line of the finding: the written line, and its first kCap bytes, which end in the
// forged " ip=198.51.100.66".
struct GitlabLine {
  std::string full, cut;
};
GitlabLine Gitlab() {
  const std::string head = "2026-03-03T14:02:01.123Z: Failed Login: username=";
  const std::string forged = " ip=198.51.100.66";
  GitlabLine l;
  l.cut = head + std::string(kCap - head.size() - forged.size(), 'A') + forged;
  l.full = l.cut + " ip=203.0.113.5";
  EXPECT_EQ(l.cut.size(), kCap);
  return l;
}

class CutLineTest : public ::testing::Test {
 protected:
  // `text` parsed as `format`, cut or not.
  ParsedLine Parse(LogFormat format, const std::string& text, bool cut) {
    LineParser parser(format);
    ParsedLine parsed;
    EXPECT_TRUE(parser.Parse(text, kT0, &parsed).ok()) << text.substr(0, 80);
    parsed.cut = cut;
    return parsed;
  }
  // Process of `text` `times` times, a second apart; the detections.
  std::vector<Detection> Feed(Engine& engine, LogFormat format, const std::string& text,
                              bool cut, int times) {
    std::vector<Detection> out;
    const ParsedLine parsed = Parse(format, text, cut);
    for (int i = 0; i < times; ++i) {
      engine.Process(format, parsed, text, kT0 + absl::Seconds(i), &out);
    }
    return out;
  }
};

TEST_F(CutLineTest, AForgedTailAtTheCutIsNoKey) {
  const GitlabLine line = Gitlab();
  Engine engine(ShippedPacks({"webapps"}), EngineOptions());
  // Five matches make a detection (threshold 5 in 10 minutes): five cut lines make none.
  std::vector<Detection> cut = Feed(engine, LogFormat::LOG_FORMAT_RAW, line.cut, true, 5);
  EXPECT_TRUE(cut.empty()) << cut[0].rule_id << " banned " << cut[0].key;
  EXPECT_EQ(engine.stats().matched_lines, 0u);
}

TEST_F(CutLineTest, TheWholeLineKeysItsRealTail) {
  const GitlabLine line = Gitlab();
  Engine engine(ShippedPacks({"webapps"}), EngineOptions());
  std::vector<Detection> whole = Feed(engine, LogFormat::LOG_FORMAT_RAW, line.full, false, 5);
  ASSERT_EQ(whole.size(), 1u);
  EXPECT_EQ(whole[0].rule_id, "gitlab-login-failed");
  EXPECT_EQ(whole[0].key, "203.0.113.5");
}

TEST_F(CutLineTest, MatchLineAndMatchOnlyFindNothingAtTheCut) {
  const GitlabLine line = Gitlab();
  Engine engine(ShippedPacks({"webapps"}), EngineOptions());
  const ParsedLine parsed = Parse(LogFormat::LOG_FORMAT_RAW, line.cut, true);
  std::vector<EngineMatch> matches;
  const LineResult r =
      engine.MatchLine(LogFormat::LOG_FORMAT_RAW, parsed, line.cut, kT0, &matches);
  EXPECT_EQ(r.matches, 0u);
  EXPECT_TRUE(matches.empty()) << matches[0].rule_id << " keyed " << matches[0].key;
  std::vector<std::string> keys;
  engine.MatchOnly(LogFormat::LOG_FORMAT_RAW, parsed,
                   [&](const CompiledRule& rule, absl::string_view key) {
                     keys.push_back(absl::StrCat(rule.id(), " ", key));
                   });
  EXPECT_TRUE(keys.empty()) << keys[0];
  // Not cut, the same bytes do match (what the two calls above would find without the flag).
  const ParsedLine whole = Parse(LogFormat::LOG_FORMAT_RAW, line.cut, false);
  engine.MatchOnly(LogFormat::LOG_FORMAT_RAW, whole,
                   [&](const CompiledRule& rule, absl::string_view key) {
                     keys.push_back(absl::StrCat(rule.id(), " ", key));
                   });
  EXPECT_EQ(keys, std::vector<std::string>{"gitlab-login-failed 198.51.100.66"});
}

// Replay's threads: Prematch (one line, and many walked side by side), then Process in order.
TEST_F(CutLineTest, PrematchFindsNothingAtTheCut) {
  const GitlabLine line = Gitlab();
  EngineOptions options;
  options.walk_ahead_bytes = 0;  // the many-line Prematch walks every Set side by side
  Engine engine(ShippedPacks({"webapps"}), options);
  const ParsedLine parsed = Parse(LogFormat::LOG_FORMAT_RAW, line.cut, true);
  std::vector<Detection> out;
  for (int i = 0; i < 5; ++i) {
    PrematchBuffer buffer;
    engine.Prematch(LogFormat::LOG_FORMAT_RAW, parsed, &buffer);
    for (const PrematchedCandidate& c : buffer.candidates) {
      EXPECT_NE(c.state, PrematchedCandidate::State::kMatched)
          << engine.rules()->rules()[c.rule]->id();
    }
    const PrematchedLine pre{absl::MakeConstSpan(buffer.candidates), &buffer};
    engine.Process(LogFormat::LOG_FORMAT_RAW, parsed, line.cut, kT0 + absl::Seconds(i), &out,
                   /*stream=*/0, &pre);
  }
  std::vector<const ParsedLine*> lines(5, &parsed);
  PrematchBuffer buffer;
  std::vector<std::pair<uint32_t, uint32_t>> spans;
  engine.Prematch(LogFormat::LOG_FORMAT_RAW, absl::MakeConstSpan(lines), &buffer, &spans);
  ASSERT_EQ(spans.size(), 5u);
  for (size_t i = 0; i < spans.size(); ++i) {
    for (uint32_t k = spans[i].first; k < spans[i].second; ++k) {
      EXPECT_NE(buffer.candidates[k].state, PrematchedCandidate::State::kMatched);
    }
    const PrematchedLine pre{
        absl::MakeConstSpan(buffer.candidates).subspan(spans[i].first,
                                                       spans[i].second - spans[i].first),
        &buffer};
    engine.Process(LogFormat::LOG_FORMAT_RAW, parsed, line.cut, kT0 + absl::Seconds(10 + i),
                   &out, /*stream=*/0, &pre);
  }
  EXPECT_TRUE(out.empty()) << out[0].rule_id << " banned " << out[0].key;
}

// An access-log rule keyed on the first field, which the server wrote, reads no end: a cut line
// still counts for it (nginx-scanner-probe, 3 in 5 minutes).
TEST_F(CutLineTest, ARuleThatReadsNoEndStillMatchesACutLine) {
  Engine engine(ShippedPacks({"nginx"}), EngineOptions());
  std::string text =
      "198.51.100.4 - - [03/Mar/2026:14:02:01 +0000] \"GET /.env HTTP/1.1\" 404 153 \"-\" \"";
  text += std::string(kCap - text.size(), 'B');  // a user agent the cap cut
  std::vector<Detection> out = Feed(engine, LogFormat::LOG_FORMAT_COMBINED, text, true, 3);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].rule_id, "nginx-scanner-probe");
  EXPECT_EQ(out[0].key, "198.51.100.4");
}

// Token rules (every match on the line): a token that ends at the cut may have gone on (41
// characters are no token of that shape), so `$` there is refused; a token before the cut,
// followed by text the writer wrote, is still a leak.
TEST_F(CutLineTest, TokenRulesRefuseOnlyAMatchThatEndsAtTheCut) {
  Engine engine(ShippedPacks({"cloudflare-tokens"}), EngineOptions());
  const std::string token = "cfut_0123456789abcdefghijABCDEFGHIJ0123456789";
  ASSERT_EQ(token.size(), 45u);
  std::string at_cut = "debug: ";
  at_cut += std::string(kCap - at_cut.size() - token.size() - 1, 'x') + " " + token;
  std::vector<Detection> none = Feed(engine, LogFormat::LOG_FORMAT_RAW, at_cut, true, 1);
  EXPECT_TRUE(none.empty()) << none[0].rule_id;
  // The same line, not cut: the token ends where the writer ended the line.
  std::vector<Detection> whole = Feed(engine, LogFormat::LOG_FORMAT_RAW, at_cut, false, 1);
  EXPECT_EQ(whole.size(), 1u);

  std::string early = "debug: token=" + token + " ";
  early += std::string(kCap - early.size(), 'y');
  Engine other(ShippedPacks({"cloudflare-tokens"}), EngineOptions());
  std::vector<Detection> leak = Feed(other, LogFormat::LOG_FORMAT_RAW, early, true, 1);
  ASSERT_EQ(leak.size(), 1u);
  EXPECT_EQ(leak[0].secret, token);
}

// Sessions: a note at the cut is no note. A line that names the address for its connection
// (by pid), cut right after a forged one, leaves the session without a key, so the line that
// counts on the session's key finds none.
TEST_F(CutLineTest, ANoteAtTheCutNamesNoKey) {
  constexpr absl::string_view kSessionPack = R"pb(
    rules {
      id: "app-login"
      formats: LOG_FORMAT_SYSLOG
      programs: "app"
      patterns: "^login name=.* ip=(?P<ip>[0-9.]+)$"
      session { note_only: true }
    }
    rules {
      id: "app-too-many"
      formats: LOG_FORMAT_SYSLOG
      programs: "app"
      patterns: "^too many failures$"
      session {}
      threshold { count: 1 }
      decision {
        action: ACTION_BLOCK
        duration { seconds: 600 }
      }
    }
  )pb";
  absl::StatusOr<LoadedPack> pack = ParseRulePack(kSessionPack, "session.textproto");
  ASSERT_TRUE(pack.ok()) << pack.status();
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules = RuleSet::Compile({*pack});
  ASSERT_TRUE(rules.ok()) << rules.status();
  std::string note = "Mar  3 14:02:01 web-1 app[42]: login name=";
  const std::string forged = " ip=198.51.100.66";
  note += std::string(kCap - note.size() - forged.size(), 'A') + forged;
  const std::string fail = "Mar  3 14:02:02 web-1 app[42]: too many failures";
  for (const bool cut : {true, false}) {
    Engine engine(*rules, EngineOptions());
    std::vector<Detection> out = Feed(engine, LogFormat::LOG_FORMAT_SYSLOG, note, cut, 1);
    std::vector<Detection> more = Feed(engine, LogFormat::LOG_FORMAT_SYSLOG, fail, false, 1);
    out.insert(out.end(), more.begin(), more.end());
    if (cut) {
      EXPECT_TRUE(out.empty()) << out[0].rule_id << " banned " << out[0].key;
      EXPECT_EQ(engine.stats().session_misses, 1u);
    } else {
      ASSERT_EQ(out.size(), 1u);
      EXPECT_EQ(out[0].key, "198.51.100.66");  // the whole note's address
    }
  }
}

// A pattern that reads the end in one alternative only (not pinned to it, so it is run on a cut
// line): its match at the cut is refused, and a match before the cut keys its capture (found
// first without captures, then with them).
TEST_F(CutLineTest, APatternPartlyPinnedToTheEndKeysOnlyMatchesBeforeTheCut) {
  constexpr absl::string_view kPack = R"pb(
    rules {
      id: "app-denied"
      formats: LOG_FORMAT_RAW
      patterns: "client (?P<ip>\\d+\\.\\d+\\.\\d+\\.\\d+) (?:denied$|refused )"
      threshold { count: 1 }
      decision {
        action: ACTION_BLOCK
        duration { seconds: 600 }
      }
    }
  )pb";
  absl::StatusOr<LoadedPack> pack = ParseRulePack(kPack, "partly.textproto");
  ASSERT_TRUE(pack.ok()) << pack.status();
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules = RuleSet::Compile({*pack});
  ASSERT_TRUE(rules.ok()) << rules.status();
  ASSERT_EQ((*rules)->rules()[0]->reads_end, std::vector<char>{1});
  ASSERT_EQ((*rules)->rules()[0]->anchored_end, std::vector<char>{0});
  const std::string tail = " client 198.51.100.66 denied";
  const std::string at_cut = "app: " + std::string(kCap - 5 - tail.size(), 'A') + tail;
  ASSERT_EQ(at_cut.size(), kCap);
  Engine engine(*rules, EngineOptions());
  std::vector<Detection> none = Feed(engine, LogFormat::LOG_FORMAT_RAW, at_cut, true, 1);
  EXPECT_TRUE(none.empty()) << none[0].rule_id << " banned " << none[0].key;
  std::string before = "app: client 203.0.113.5 refused ";
  before += std::string(kCap - before.size(), 'B');
  std::vector<Detection> out = Feed(engine, LogFormat::LOG_FORMAT_RAW, before, true, 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].key, "203.0.113.5");
}

// The shipped gitlab rule is pinned to the end (`...$` in every alternative): refused on a cut
// line without being run.
TEST_F(CutLineTest, TheGitlabRuleIsPinnedToTheEnd) {
  std::shared_ptr<const RuleSet> rules = ShippedPacks({"webapps"});
  ASSERT_NE(rules, nullptr);
  bool found = false;
  for (const auto& rule : rules->rules()) {
    if (rule->id() != "gitlab-login-failed") continue;
    found = true;
    EXPECT_EQ(rule->anchored_end, std::vector<char>(rule->patterns.size(), 1));
  }
  EXPECT_TRUE(found);
}

// An operator's ignore pattern that reads the line's end (`$`, `\z`) cannot be known to match a
// cut line: the cut is not where the writer ended it, so an attacker who places "user=monitor"
// right before the cut must not hide the line from the rule. Such an ignore does not apply at
// the cut, and the line is judged by the rule's pattern; an ignore that reads no end, or whose
// match ends before the cut, still applies. Every path that answers the ignore: the Set passes
// (ignores_in_sets), RE2 (not in the Sets), and Prematch.
TEST_F(CutLineTest, AnIgnoreThatReadsTheEndDoesNotApplyAtTheCut) {
  constexpr absl::string_view kOperatorPack = R"pb(
    rules {
      id: "app-login-failed"
      formats: LOG_FORMAT_RAW
      patterns: "failed login from (?P<ip>[0-9.]+) user="
      ignore_patterns: "user=monitor$"
      ignore_patterns: "user=health\\z"
      ignore_patterns: " via=probe(?: |$)"
      threshold { count: 1 }
      decision {
        action: ACTION_BLOCK
        duration { seconds: 600 }
      }
    }
  )pb";
  absl::StatusOr<LoadedPack> pack = ParseRulePack(kOperatorPack, "operator.textproto");
  ASSERT_TRUE(pack.ok()) << pack.status();
  const std::string head = "app: failed login from 198.51.100.66 user=";
  // `tail` placed so that the cut falls right after it.
  auto at_cut = [&](const std::string& tail) {
    std::string line = head + std::string(kCap - head.size() - tail.size(), 'A') + tail;
    EXPECT_EQ(line.size(), kCap);
    return line;
  };
  const std::string monitor = at_cut("user=monitor");
  const std::string health = at_cut("user=health");
  const std::string probe_at_cut = at_cut(" via=probe");
  std::string probe_before = head + "x via=probe ";
  probe_before += std::string(kCap - probe_before.size(), 'B');
  for (const bool in_sets : {true, false}) {
    RuleSetOptions options;
    options.ignores_in_sets = in_sets;
    options.min_literal_unanchored = SIZE_MAX;  // the rule's pattern in the Set, not gated
    absl::StatusOr<std::shared_ptr<const RuleSet>> rules =
        RuleSet::Compile({*pack}, CidrSets(), options);
    ASSERT_TRUE(rules.ok()) << rules.status();
    // The ignores join the rule's unanchored Set, or RE2 runs them.
    ASSERT_EQ((*rules)->ForFormat(LogFormat::LOG_FORMAT_RAW)->ignores_in_sets[0], in_sets);
    for (const std::string* line : {&monitor, &health, &probe_at_cut}) {
      SCOPED_TRACE(absl::StrCat("in_sets ", in_sets, ": ...", line->substr(kCap - 20)));
      // Cut: the ignore needs the end, which is not there; the rule counts the line.
      Engine engine(*rules, EngineOptions());
      std::vector<Detection> out = Feed(engine, LogFormat::LOG_FORMAT_RAW, *line, true, 1);
      ASSERT_EQ(out.size(), 1u);
      EXPECT_EQ(out[0].key, "198.51.100.66");
      EXPECT_EQ(engine.stats().ignored, 0u);
      // Prematch (replay's threads) answers the same.
      Engine pre_engine(*rules, EngineOptions());
      const ParsedLine parsed = Parse(LogFormat::LOG_FORMAT_RAW, *line, true);
      PrematchBuffer buffer;
      pre_engine.Prematch(LogFormat::LOG_FORMAT_RAW, parsed, &buffer);
      for (const PrematchedCandidate& c : buffer.candidates) EXPECT_FALSE(c.ignored);
      const PrematchedLine pre{absl::MakeConstSpan(buffer.candidates), &buffer};
      std::vector<Detection> pre_out;
      pre_engine.Process(LogFormat::LOG_FORMAT_RAW, parsed, *line, kT0, &pre_out,
                         /*stream=*/0, &pre);
      EXPECT_EQ(pre_out.size(), 1u);
      // Whole, the same bytes end where their writer ended them: ignored.
      Engine whole(*rules, EngineOptions());
      EXPECT_TRUE(Feed(whole, LogFormat::LOG_FORMAT_RAW, *line, false, 1).empty());
      EXPECT_EQ(whole.stats().ignored, 1u);
    }
    // An ignore match that ends before the cut read no end there: it stands.
    Engine engine(*rules, EngineOptions());
    std::vector<Detection> out = Feed(engine, LogFormat::LOG_FORMAT_RAW, probe_before, true, 1);
    EXPECT_TRUE(out.empty()) << "in_sets " << in_sets << ": " << out[0].key;
    EXPECT_EQ(engine.stats().ignored, 1u);
  }
}

// `\b` also reads the end: at the text's end it holds after any word byte, so at a cut it holds
// where the writer went on with a word ("user=monitorx"). An ignore ending in `\b` must not hide
// the line when it matched at the cut, and a pattern ending in `\b` must not match there.
TEST_F(CutLineTest, AWordBoundaryAtTheCutIsNotTheWritersEnd) {
  constexpr absl::string_view kOperatorPack = R"pb(
    rules {
      id: "app-login-failed"
      formats: LOG_FORMAT_RAW
      patterns: "failed login from (?P<ip>[0-9.]+) user="
      ignore_patterns: "user=monitor\\b"
      threshold { count: 1 }
      decision {
        action: ACTION_BLOCK
        duration { seconds: 600 }
      }
    }
    rules {
      id: "app-admin-denied"
      formats: LOG_FORMAT_RAW
      patterns: "denied from (?P<ip>[0-9.]+) .* name=admin\\b"
      threshold { count: 1 }
      decision {
        action: ACTION_BLOCK
        duration { seconds: 600 }
      }
    }
  )pb";
  absl::StatusOr<LoadedPack> pack = ParseRulePack(kOperatorPack, "operator.textproto");
  ASSERT_TRUE(pack.ok()) << pack.status();
  auto at_cut = [&](const std::string& head, const std::string& tail) {
    std::string line = head + std::string(kCap - head.size() - tail.size(), 'A') + tail;
    EXPECT_EQ(line.size(), kCap);
    return line;
  };
  // The writer's lines went on: "user=monitorx...", "name=administrator".
  const std::string monitor =
      at_cut("app: failed login from 198.51.100.66 user=", "user=monitor");
  const std::string admin = at_cut("app: denied from 198.51.100.67 ", " name=admin");
  for (const bool in_sets : {true, false}) {
    SCOPED_TRACE(absl::StrCat("in_sets ", in_sets));
    RuleSetOptions options;
    options.ignores_in_sets = in_sets;
    options.min_literal_unanchored = SIZE_MAX;
    absl::StatusOr<std::shared_ptr<const RuleSet>> rules =
        RuleSet::Compile({*pack}, CidrSets(), options);
    ASSERT_TRUE(rules.ok()) << rules.status();
    Engine engine(*rules, EngineOptions());
    std::vector<Detection> out = Feed(engine, LogFormat::LOG_FORMAT_RAW, monitor, true, 1);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].key, "198.51.100.66");
    EXPECT_EQ(engine.stats().ignored, 0u);
    EXPECT_TRUE(Feed(engine, LogFormat::LOG_FORMAT_RAW, admin, true, 1).empty());
    // Whole, the same bytes end where their writer ended them: the ignore and the pattern hold.
    Engine whole(*rules, EngineOptions());
    EXPECT_TRUE(Feed(whole, LogFormat::LOG_FORMAT_RAW, monitor, false, 1).empty());
    EXPECT_EQ(whole.stats().ignored, 1u);
    out = Feed(whole, LogFormat::LOG_FORMAT_RAW, admin, false, 1);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].key, "198.51.100.67");
  }
}

// A JSON record cut at the cap is read from the fields it holds whole (json_parser.h): a field's
// value ends where its writer ended it, so a field rule pinned to the end still matches.
TEST_F(CutLineTest, AJsonRecordsWholeFieldsStillMatch) {
  constexpr absl::string_view kFieldPack = R"pb(
    rules {
      id: "origin-denied"
      formats: LOG_FORMAT_LOGPUSH_HTTP_REQUESTS
      field: "OriginResponseStatus"
      patterns: "^40[13]$"
      threshold { count: 1 }
      decision {
        action: ACTION_BLOCK
        duration { seconds: 600 }
      }
    }
  )pb";
  absl::StatusOr<LoadedPack> pack = ParseRulePack(kFieldPack, "field.textproto");
  ASSERT_TRUE(pack.ok()) << pack.status();
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules = RuleSet::Compile({*pack});
  ASSERT_TRUE(rules.ok()) << rules.status();
  const std::string record =
      R"({"ClientIP":"198.51.100.9","ClientRequestHost":"example.com",)"
      R"("ClientRequestMethod":"GET","ClientRequestPath":"/admin","ClientRequestURI":"/admin",)"
      R"("ClientRequestProtocol":"HTTP/1.1","ClientRequestUserAgent":"curl/8.5.0",)"
      R"("EdgeResponseStatus":200,"EdgeResponseBytes":10,"OriginResponseStatus":403,)"
      R"("EdgeStartTimestamp":"2026-03-03T14:02:01Z","RayID":"7d1c2a3b4c5d6e7f"})";
  LineParser parser(LogFormat::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS);
  ParsedLine parsed;
  ASSERT_TRUE(parser.Parse(record, kT0, &parsed).ok());
  ASSERT_NE(parsed.record, nullptr);
  parsed.cut = true;
  Engine engine(*rules, EngineOptions());
  std::vector<Detection> out;
  engine.Process(LogFormat::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS, parsed, record, kT0, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].key, "198.51.100.9");
}

}  // namespace
}  // namespace palisade
