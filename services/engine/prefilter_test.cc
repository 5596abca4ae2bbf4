// The literal prefilter (issue 13 §4): RequiredLiterals, LiteralGate, leading keys, and the
// proof that they change no result: every shipped pack compiled with and without them, and every
// example, counter-example, generated sshd and nginx corpus line (and token-bearing variants)
// matched through both, (rule, key) compared line by line.

#include <algorithm>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rules/shipped_packs.h"
#include "services/common/ip.h"
#include "re2/re2.h"
#include "services/engine/engine.h"
#include "services/engine/rule_set.h"
#include "services/formats/line_parser.h"
#include "tests/corpus/corpus.h"

namespace palisade {
namespace {

using palisade::v1::LogFormat;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

std::vector<std::string> Literals(absl::string_view pattern) {
  absl::StatusOr<std::vector<std::string>> out = RequiredLiterals(pattern);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : std::vector<std::string>{"<error>"};
}

TEST(RequiredLiteralsTest, TakesTheLongestRunOfExactPieces) {
  EXPECT_THAT(Literals("(?:^|[^A-Za-z0-9_])(?P<token>cf[ua]t_[A-Za-z0-9]{40})(?:[^A-Za-z0-9_-]|$)"),
              UnorderedElementsAre("cfat_", "cfut_"));
  EXPECT_THAT(Literals("^Failed password for (?P<user>\\S+) from (?P<ip>\\S+) port \\d+"),
              ElementsAre("failed password for "));
  // An optional piece multiplies the run.
  EXPECT_THAT(Literals("x?abc"), UnorderedElementsAre("abc", "xabc"));
  // Alternatives: one literal from each (the better one of a branch: the longer).
  EXPECT_THAT(Literals("(?:union\\s+select|sleep\\()"), UnorderedElementsAre("select", "sleep("));
}

TEST(RequiredLiteralsTest, NoneWhenSomeMatchNeedsNoLiteral) {
  EXPECT_THAT(Literals("^(?P<ip>\\S+) .*"), ElementsAre(" "));
  EXPECT_THAT(Literals("abc|"), IsEmpty());
  EXPECT_THAT(Literals("(?:abc)*\\d+"), IsEmpty());
  EXPECT_THAT(Literals("[a-z]+"), IsEmpty());
  // A byte past ASCII is not taken as a literal (its UTF-8 meaning is not modelled).
  EXPECT_THAT(Literals("\\xE9"), IsEmpty());
}

TEST(RequiredLiteralsTest, FoldedKAndSStandForTheirUnicodeFolds) {
  // RE2 matches (?i)k against U+212A KELVIN SIGN and (?i)s against U+017F LONG S.
  const std::string pattern = "(?i)ks";
  EXPECT_THAT(Literals(pattern), UnorderedElementsAre("ks", "k\xC5\xBF", "\xE2\x84\xAAs",
                                                      "\xE2\x84\xAA\xC5\xBF"));
  const std::string kelvin = "token \xE2\x84\xAA\xC5\xBF here";
  ASSERT_TRUE(RE2::PartialMatch(kelvin, RE2(pattern)));
  LiteralGate gate({{"ks", 0}, {"k\xC5\xBF", 0}, {"\xE2\x84\xAAs", 0}, {"\xE2\x84\xAA\xC5\xBF", 0}});
  EXPECT_TRUE(gate.Scan(kelvin, {{0, 0}}, nullptr));
  // Case-sensitive: only the letter itself.
  EXPECT_THAT(Literals("k"), ElementsAre("k"));
}

// The literals of shipped patterns (copied from rules/ at d913422: the packs may change, these
// stay) as the tree walk found them before it was made cheaper (H18): the same strings, in the
// same order, which is the order the gate looks them up in.
TEST(RequiredLiteralsTest, ShippedPatternsKeepTheirLiterals) {
  // cloudflare-tokens: a class inside the run.
  EXPECT_THAT(Literals(R"re((?:^|[^A-Za-z0-9_])(?P<token>cf[ua]t_[A-Za-z0-9]{40})(?:[^A-Za-z0-9_-]|$))re"),
              ElementsAre("cfat_", "cfut_"));
  // sshd: an optional prefix and an alternation multiply the run.
  EXPECT_THAT(
      Literals(R"re(^(?:error: )?Connection (?:closed|reset) by (?P<ip>[0-9A-Fa-f:.]+) \[preauth\]$)re"),
      ElementsAre("connection closed by ", "connection reset by ", "error: connection closed by ",
                  "error: connection reset by "));
  // web-attacks: (?i) with an `s` (U+017F) and alternatives of different lengths.
  EXPECT_THAT(
      Literals(R"re(^(?P<ip>[0-9A-Fa-f:.]+) \S+ \S+ \[[^\]]+\] "(?:[^"\\]|\\.)*?(?i:(?:[ +/"\'&?;]|%2[0279f]|%3b|\\x22)on(?:error|load|mouseover|focus|toggle|animationstart)(?:[+ ]|%20)*(?:=|%3d)))re"),
      ElementsAre("onanimationstart", "onanimation\xC5\xBF" "tart", "onerror", "onfocus",
                  "onfocu\xC5\xBF", "onload", "onmouseover", "onmou\xC5\xBF" "eover", "ontoggle"));
  // web-attacks: repetitions of alternatives, 38 strings from three branches.
  const std::vector<std::string> traversal = Literals(
      R"re(^(?P<ip>[0-9A-Fa-f:.]+) \S+ \S+ \[[^\]]+\] "[A-Z]+ [^ "]*?(?i:(?:/|%2f|=)etc(?:/|%2f)(?:passwd|shadow|hosts)|php(?::|%3a)(?:/|%2f){2}(?:filter|input)|file(?::|%3a)(?:/|%2f){3}))re");
  EXPECT_EQ(absl::StrJoin(traversal, "|"),
            "%2fetc%2f|%2fetc/|/etc%2f|/etc/|=etc%2f|=etc/|file%3a%2f%2f%2f|file%3a%2f%2f/|"
            "file%3a%2f/%2f|file%3a%2f//|file%3a/%2f%2f|file%3a/%2f/|file%3a//%2f|file%3a///|"
            "file:%2f%2f%2f|file:%2f%2f/|file:%2f/%2f|file:%2f//|file:/%2f%2f|file:/%2f/|"
            "file://%2f|file:///|php%3a%2f%2ffilter|php%3a%2f%2finput|php%3a%2f/filter|"
            "php%3a%2f/input|php%3a/%2ffilter|php%3a/%2finput|php%3a//filter|php%3a//input|"
            "php:%2f%2ffilter|php:%2f%2finput|php:%2f/filter|php:%2f/input|php:/%2ffilter|"
            "php:/%2finput|php://filter|php://input");
  // voip: optional pieces on both sides of the longest run.
  EXPECT_THAT(
      Literals(R"re(^(?:(?:[A-Z][a-z]{2} {1,2}\d{1,2}(?: \d{4})? \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?) +(?:\S+ +)?freeswitch(?:\[\d+\])?: )?(?:(?:\d{4}-)?\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)? )?\[WARN(?:ING)?\](?: \[SOFIA\])? \[?sofia_reg\.c:\d+\]? SIP auth challenge \((?:REGISTER|INVITE)\) on sofia profile '[^']+' for \[[^\]]*\] from ip (?P<ip>[0-9A-Fa-f:.]+)$)re"),
      ElementsAre(" sip auth challenge (invite) on sofia profile '",
                  " sip auth challenge (register) on sofia profile '",
                  "] sip auth challenge (invite) on sofia profile '",
                  "] sip auth challenge (register) on sofia profile '"));
  // web-attacks' longest (a user-agent list of 120 alternatives): the method, not the list.
  std::string agents = R"re(^(?P<ip>[0-9A-Fa-f:.]+) \S+ \S+ \[[^\]]+\] "(?:GET|POST|HEAD) (?:[^"\\]|\\.)*" [0-9]{3} (?:[0-9]+|-) "(?:[^"\\]|\\.)*" "(?:)re";
  for (int i = 0; i < 120; ++i) absl::StrAppend(&agents, i == 0 ? "" : "|", "Agent", i, " \\(x\\)");
  agents += ")\"";
  EXPECT_THAT(Literals(agents), ElementsAre("] \"get ", "] \"head ", "] \"post "));
}

TEST(LiteralGateTest, FindsLiteralsAnywhereWithoutCase) {
  LiteralGate gate({{"cfut_", 0}, {"authorization:", 1}, {"../", 2}});
  const std::vector<std::pair<int, int>> entries = {{7, 0}, {8, 1}, {9, 0}};
  EXPECT_FALSE(gate.Scan("GET /index.html HTTP/1.1 200 a perfectly ordinary line", entries,
                         nullptr));
  EXPECT_FALSE(gate.Scan("", entries, nullptr));
  EXPECT_FALSE(gate.Scan("cfut", entries, nullptr));  // shorter than the literal
  // At the start, at the very end (the scalar tail), across a 16-byte block boundary.
  EXPECT_TRUE(gate.Scan("cfut_abc", entries, nullptr));
  EXPECT_TRUE(gate.Scan("0123456789abcdefghijklmnopqrstuvwxyz ..", entries, nullptr) == false);
  EXPECT_TRUE(gate.Scan("0123456789abcdefghijklmnopqrstuvwxyz ../", entries, nullptr));
  EXPECT_TRUE(gate.Scan("0123456789abcAUTHORIZATION: Bearer", entries, nullptr));
  std::vector<std::pair<int, int>> out = {{1, 1}};
  EXPECT_TRUE(gate.Scan("GET /a/../b?x=cfUT_1&y=cfut_2 AuThorization:", entries, &out));
  // Earlier contents kept; each entry once, in the order found.
  EXPECT_THAT(out, ElementsAre(std::make_pair(1, 1), std::make_pair(9, 0),
                               std::make_pair(7, 0), std::make_pair(8, 1)));
}

// The token pack's literals look for one byte together: "cfut_" and "cfat_" alone would look
// for 'f' (a common letter), and move to the '_' the others look for, checked there by the byte
// before it. Found wherever they stand; a '_' after another byte is passed over.
TEST(LiteralGateTest, ALiteralAloneOnItsByteSharesARareOne) {
  LiteralGate gate({{"cfut_", 0}, {"cfat_", 0}, {"cf_api_token=", 1}, {"&cf_token=", 2}});
  EXPECT_EQ(gate.anchor_count(), 1u);
  const std::vector<std::pair<int, int>> entries = {{7, 0}, {8, 0}, {9, 0}};
  for (const std::string& text :
       {std::string("cfut_"), std::string("x cfAT_y"), std::string(40, 'f') + "CFUT_",
        std::string("a=1&cf_token=2"), std::string(31, '.') + "cf_api_token=\"x\""}) {
    EXPECT_TRUE(gate.Scan(text, entries, nullptr)) << text;
  }
  for (const std::string& text :
       {std::string("pam_unix(sshd:auth): cfu_t"), std::string(40, '_'),
        std::string("GET /favicon.ico?cf_t=1 HTTP/1.1")}) {
    EXPECT_FALSE(gate.Scan(text, entries, nullptr)) << text;
  }
}

// Scan against a plain search, over random literals and texts from a small alphabet (so that
// anchors and literals occur often, at block boundaries and in the last, overlapping block):
// from one to a dozen anchor bytes, the counts Scan has a loop of its own for and the others;
// texts of under 16 bytes, of 16 to 31 and longer (a 32-byte block with AVX2), both widths.
// The gate compares bytes with bit 0x20 set: '[' and '{', '_' and DEL, '@' and '`' stand for
// each other until the literal is compared.
TEST(LiteralGateTest, FindsWhatAPlainSearchFinds) {
  std::mt19937 random(7);
  const std::string alphabet = "ab_Zz./ -[{\x7f@`";
  auto pick = [&](size_t n, bool upper) {
    std::string out;
    for (size_t i = 0; i < n; ++i) {
      char c = alphabet[random() % alphabet.size()];
      if (upper && random() % 3 == 0) c = absl::ascii_toupper(c);
      out.push_back(c);
    }
    return out;
  };
  size_t found = 0, trials = 0;
  for (int round = 0; round < 300; ++round) {
    std::vector<std::pair<std::string, int>> literals;
    std::vector<std::pair<int, int>> entries;
    const size_t count = 1 + random() % 12;
    for (size_t i = 0; i < count; ++i) {
      literals.emplace_back(pick(2 + random() % 4, false), static_cast<int>(i));
      entries.emplace_back(static_cast<int>(i), round);
    }
    // The gate this CPU runs (32 bytes a block with AVX2) and the one a CPU without AVX2 runs.
    const LiteralGate widest(literals);
    const LiteralGate sse2(literals, LiteralGate::Width::kSse2);
    for (int t = 0; t < 80; ++t) {
      const LiteralGate& gate = t % 2 == 0 ? widest : sse2;
      const std::string text = pick(random() % 100, true);
      const std::string lower = absl::AsciiStrToLower(text);
      std::vector<std::pair<int, int>> expected;
      for (const auto& [literal, entry] : literals) {
        if (lower.find(absl::AsciiStrToLower(literal)) != std::string::npos &&
            std::find(expected.begin(), expected.end(), entries[entry]) == expected.end()) {
          expected.push_back(entries[entry]);
        }
      }
      std::vector<std::pair<int, int>> got;
      ASSERT_EQ(gate.Scan(text, entries, &got), !expected.empty()) << text;
      ASSERT_EQ(gate.Scan(text, entries, nullptr), !expected.empty()) << text;
      std::sort(expected.begin(), expected.end());
      std::vector<std::pair<int, int>> sorted = got;
      std::sort(sorted.begin(), sorted.end());
      ASSERT_EQ(sorted, expected) << "text \"" << text << "\", " << count << " literals";
      ASSERT_EQ(sorted.size(), got.size()) << "an entry twice: " << text;
      found += !expected.empty();
      ++trials;
    }
  }
  EXPECT_GT(found, trials / 4);
  EXPECT_LT(found, trials * 3 / 4);
}

// A rule over raw lines that blocks at its first match: `pattern` (and `ignore`, if any) as
// textproto writes them in single quotes (a regex's backslash doubled).
std::string RawRule(const std::string& id, const std::string& pattern,
                    const std::string& ignore = "") {
  return absl::StrCat("rules { id: \"", id, "\" formats: [LOG_FORMAT_RAW] patterns: '", pattern,
                      "'", ignore.empty() ? "" : absl::StrCat(" ignore_patterns: '", ignore, "'"),
                      " threshold { count: 1 }",
                      " decision { action: ACTION_BLOCK duration { seconds: 60 } } }\n");
}

// A pack of `rules` (RawRule's), compiled with `options`.
std::shared_ptr<const RuleSet> CompileRules(const std::string& rules,
                                            const RuleSetOptions& options = {}) {
  absl::StatusOr<LoadedPack> pack = ParseRulePack(rules, "t.textproto");
  EXPECT_TRUE(pack.ok()) << pack.status();
  if (!pack.ok()) return nullptr;
  absl::StatusOr<std::shared_ptr<const RuleSet>> set = RuleSet::Compile({*pack}, {}, options);
  EXPECT_TRUE(set.ok()) << set.status();
  return set.ok() ? *set : nullptr;
}

// A one-rule pack of `pattern` over raw lines, compiled with `options`.
std::shared_ptr<const RuleSet> CompileOne(const std::string& pattern,
                                          const RuleSetOptions& options = {}) {
  return CompileRules(RawRule("r", pattern), options);
}

// The key the engine finds on `text` with `set` ("(none)": no match); with a set compiled with
// leading_keys off, the key RE2 alone finds.
std::string KeyOf(const std::shared_ptr<const RuleSet>& set, const std::string& text) {
  Engine engine(set, EngineOptions());
  ParsedLine line;
  line.message = text;
  std::string key = "(none)";
  engine.MatchOnly(LogFormat::LOG_FORMAT_RAW, line,
                   [&](const CompiledRule&, absl::string_view k) { key = std::string(k); });
  return key;
}

// Options under which a key is found by RE2 alone (no leading key, no split).
RuleSetOptions Re2Only() {
  RuleSetOptions options;
  options.leading_keys = false;
  return options;
}

TEST(LeadingKeyTest, OnlyForAKeyGroupLeadingThePatternAndClosedByAByteOutsideIt) {
  auto led = CompileOne("^(?P<ip>[0-9a-f:.]+) GET");
  absl::string_view key;
  ASSERT_TRUE(led->rules()[0]->LeadingKey(0, "2001:db8::1 GET /", &key));
  EXPECT_EQ(key, "2001:db8::1");
  EXPECT_FALSE(led->rules()[0]->LeadingKey(0, " GET /", &key));  // shorter than its minimum
  // Not led: the class takes the byte after it, no start anchor, a group before the key.
  for (const char* pattern : {"^(?P<ip>[0-9a-f:. ]+) GET", "(?P<ip>[0-9a-f:.]+) GET",
                              "^(x)(?P<ip>[0-9a-f:.]+) GET", "^(?P<ip>\\\\S+) GET"}) {
    auto set = CompileOne(pattern);
    EXPECT_FALSE(set->rules()[0]->LeadingKey(0, "1.2.3.4 GET /", &key)) << pattern;
  }
}

// An address's class ([0-9A-Fa-f:.], read 16 bytes a step) gives the key a byte-by-byte read
// of the class gives, on texts of its bytes and of the bytes next to them in the ASCII table
// (which a range test could take for class bytes) at every length around a 16-byte step.
TEST(LeadingKeyTest, AnAddressClassReadSixteenBytesAStepFindsTheSameKey) {
  auto address = CompileOne("^(?P<ip>[0-9A-Fa-f:.]+) GET");
  auto lower = CompileOne("^(?P<ip>[0-9a-f:.]+) GET");  // not the class: read a byte a step
  ASSERT_EQ(address->rules()[0]->leading_key_address, std::vector<char>{1});
  ASSERT_EQ(lower->rules()[0]->leading_key_address, std::vector<char>{0});
  const std::string in = "0123456789abcdefABCDEF:.";
  const std::string near = "/;-@`GgxX \"\x80\xc1\xe1\x10\x0e";
  const auto reference = [&](absl::string_view text) {
    size_t n = 0;
    while (n < text.size() && in.find(text[n]) != std::string::npos) ++n;
    return text.substr(0, n);
  };
  std::mt19937 rng(7);
  for (int round = 0; round < 20000; ++round) {
    std::string text;
    const size_t run = rng() % 50;
    for (size_t i = 0; i < run; ++i) text += in[rng() % in.size()];
    const size_t tail = rng() % 20;
    for (size_t i = 0; i < tail; ++i) {
      text += rng() % 2 ? near[rng() % near.size()] : in[rng() % in.size()];
    }
    absl::string_view key;
    const bool found = address->rules()[0]->LeadingKey(0, text, &key);
    const absl::string_view want = reference(text);
    ASSERT_EQ(found, !want.empty()) << absl::CEscape(text);
    if (found) {
      ASSERT_EQ(key, want) << absl::CEscape(text);
    }
  }
}

// RE2 folds (?i)k to U+212A and (?i)s to U+017F, which a key's ASCII class then takes too: no
// leading key reads such a class (it would stop at the folded letter), RE2 finds the key.
TEST(LeadingKeyTest, NotForAFoldedClassHoldingKOrS) {
  const std::string rule =
      "rules { id: \"p\" formats: [LOG_FORMAT_RAW] key: \"path\" key_kind: TARGET_KIND_PATH "
      "patterns: '(?i)^(?P<path>[a-z/]+) probe$' "
      "threshold { count: 1 } decision { action: ACTION_BLOCK duration { seconds: 60 } } }\n";
  auto set = CompileRules(rule);
  ASSERT_NE(set, nullptr);
  const std::string kelvin = "/ma\xE2\x84\xAA" "er probe";
  ASSERT_TRUE(RE2::FullMatch(kelvin, RE2("(?i)^([a-z/]+) probe$")));
  EXPECT_EQ(KeyOf(set, kelvin), "/ma\xE2\x84\xAA" "er");
  EXPECT_EQ(KeyOf(set, "/ma\xC5\xBF" "er probe"), "/ma\xC5\xBF" "er");
  EXPECT_EQ(KeyOf(set, "/maker probe"), "/maker");
  // The same class as a key split's run (after an introducer).
  const std::string split_rule =
      "rules { id: \"p\" formats: [LOG_FORMAT_RAW] key: \"path\" key_kind: TARGET_KIND_PATH "
      "patterns: '(?i)^get from (?P<path>[a-z/]+) probe$' "
      "threshold { count: 1 } decision { action: ACTION_BLOCK duration { seconds: 60 } } }\n";
  auto split = CompileRules(split_rule);
  ASSERT_NE(split, nullptr);
  EXPECT_EQ(KeyOf(split, "get from " + kelvin), "/ma\xE2\x84\xAA" "er");
  // A folded class without k or s is still read as a leading key.
  auto other = CompileOne("(?i)^(?P<ip>[0-9a-f:.]+) GET");
  EXPECT_NE(other->rules()[0]->leading_key_max[0], 0u);
}

// A pattern that starts with `^` but has an alternative without it may match anywhere: it is
// not in the anchored Set (RE2 finds the key mid-line), and neither is such an ignore pattern.
TEST(PrefilterTest, APatternAnchoredInOnlySomeAlternativesMatchesAnywhere) {
  const std::string pattern =
      "^Connection closed|Invalid user \\\\S+ from (?P<ip>[0-9A-Fa-f:.]+) port \\\\d+$";
  const std::string line = "error: Invalid user admin from 203.0.113.7 port 22";
  ASSERT_TRUE(RE2::PartialMatch(
      line, RE2("^Connection closed|Invalid user \\S+ from (?P<ip>[0-9A-Fa-f:.]+) port \\d+$")));
  for (const RuleSetOptions& options : {RuleSetOptions(), Re2Only()}) {
    auto set = CompileOne(pattern, options);
    ASSERT_NE(set, nullptr);
    Engine engine(set, EngineOptions());
    ParsedLine parsed;
    parsed.message = line;
    std::vector<Detection> out;
    engine.Process(LogFormat::LOG_FORMAT_RAW, parsed, line, absl::FromUnixSeconds(1'772'000'000),
                   &out);
    EXPECT_EQ(out.size(), 1u) << (options.leading_keys ? "default" : "leading_keys off");
    if (!out.empty()) EXPECT_EQ(out[0].key, "203.0.113.7");
  }
  auto ignoring = CompileRules(
      RawRule("r", "^Failed password for \\\\S+ from (?P<ip>[0-9A-Fa-f:.]+) port",
              "^Accepted|for backup from"));
  ASSERT_NE(ignoring, nullptr);
  Engine engine(ignoring, EngineOptions());
  const std::string failed = "Failed password for backup from 203.0.113.8 port 22 ssh2";
  ParsedLine parsed;
  parsed.message = failed;
  std::vector<Detection> out;
  const LineResult result = engine.Process(LogFormat::LOG_FORMAT_RAW, parsed, failed,
                                           absl::FromUnixSeconds(1'772'000'000), &out);
  EXPECT_EQ(result.ignored, 1u);
  EXPECT_THAT(out, IsEmpty());
}

TEST(SplitKeyTest, TheKeyAfterTheOnlySplitElseRe2Decides) {
  const std::string sshd =
      "^Failed password for (?P<user>.*?) from (?P<ip>[0-9.]+) port \\\\d+ ssh2$";
  auto set = CompileOne(sshd);
  ASSERT_NE(set->rules()[0]->key_split[0], nullptr);
  absl::string_view key;
  EXPECT_EQ(set->rules()[0]->SplitKey(0, "Failed password for root from 203.0.113.7 port 22 ssh2",
                                      /*proven=*/false, &key), 1);
  EXPECT_EQ(key, "203.0.113.7");
  // Injection: the user name holds the introducer and an address; only the server's tail ends
  // the line, so the split is the last one.
  const std::string smuggled =
      "Failed password for x from 198.51.100.1 port 22 ssh2 from 203.0.113.8 port 22 ssh2";
  EXPECT_EQ(set->rules()[0]->SplitKey(0, smuggled, /*proven=*/false, &key), 1);
  EXPECT_EQ(key, "203.0.113.8");
  EXPECT_EQ(KeyOf(set, smuggled), KeyOf(CompileOne(sshd, Re2Only()), smuggled));
  EXPECT_EQ(set->rules()[0]->SplitKey(0, smuggled, /*proven=*/true, &key), 1);
  EXPECT_EQ(key, "203.0.113.8");
  EXPECT_EQ(set->rules()[0]->SplitKey(0, "Failed password for root from x port 22 ssh2",
                                      /*proven=*/false, &key),
            0);
  // Two splits pass (the tail takes anything): RE2 decides, lazy and greedy alike.
  for (const std::string pattern : {"^a (?P<u>.*?) from (?P<ip>[0-9.]+).*$",
                                    "^a (?P<u>.*) from (?P<ip>[0-9.]+).*$"}) {
    auto two = CompileOne(pattern);
    ASSERT_NE(two->rules()[0]->key_split[0], nullptr);
    const std::string line = "a x from 198.51.100.2 y from 203.0.113.9 z";
    EXPECT_EQ(two->rules()[0]->SplitKey(0, line, /*proven=*/true, &key), -1);
    EXPECT_EQ(KeyOf(two, line), KeyOf(CompileOne(pattern, Re2Only()), line)) << pattern;
  }
  EXPECT_EQ(KeyOf(CompileOne("^a (?P<u>.*?) from (?P<ip>[0-9.]+).*$"),
                   "a x from 198.51.100.2 y from 203.0.113.9 z"),
            "198.51.100.2");
  // A hostile line with the introducer many times: RE2 decides (bounded work per line).
  std::string many = "Failed password for ";
  for (int i = 0; i < 20; ++i) many += "x from 198.51.100.3 port 1 ";
  many += "from 203.0.113.10 port 22 ssh2";
  EXPECT_EQ(set->rules()[0]->SplitKey(0, many, /*proven=*/true, &key), -1);
  EXPECT_EQ(KeyOf(set, many), "203.0.113.10");
  // Not split: a flag group, an empty-width assertion, no fixed introducer, no end anchor.
  for (const char* pattern : {"(?i)^failed for (?P<u>.*?) from (?P<ip>[0-9.]+) port$",
                              "^failed for (?P<u>.*?)\\\\b from (?P<ip>[0-9.]+) port$",
                              "^failed for (?P<u>.*?)[ ]*(?P<ip>[0-9.]+) port$",
                              "^failed for (?P<u>.*?) from (?P<ip>[0-9.]+) port"}) {
    EXPECT_EQ(CompileOne(pattern)->rules()[0]->key_split[0], nullptr) << pattern;
  }
}

// Random lines made of pieces of the introducer (near misses, repeats, overlaps, smuggled
// copies before the server's own) find the key RE2 finds: SplitKey's search for the
// introducer misses no occurrence and takes no false one.
// FindIntro against std::string_view::find, from every start, over texts of pieces of the
// introducers (so that their first two bytes occur often without the rest), of all lengths
// around the 16- and 17-byte steps of its vector loop.
TEST(SplitKeyTest, FindIntroFindsWhatFindFinds) {
  const std::vector<std::string> intros = {" from ", " rhost=", "@", "==", " port ", "ab"};
  const std::vector<std::string> pieces = {" f", " fr", " from", "from ", " ", "f", " r", " rh",
                                           "rhost=", "@", "=", "a", "b", "x", " port", "por"};
  std::mt19937 random(5);
  size_t hits = 0, calls = 0;
  for (int i = 0; i < 4000; ++i) {
    std::string text;
    const size_t length = random() % 90;
    while (text.size() < length) text += pieces[random() % pieces.size()];
    if (random() % 3 == 0) text += intros[random() % intros.size()];
    const std::string& intro = intros[random() % intros.size()];
    for (size_t from = 0; from <= text.size() + 1; ++from) {
      const size_t expected =
          from > text.size() ? absl::string_view::npos : absl::string_view(text).find(intro, from);
      ASSERT_EQ(FindIntro(text, from, intro), expected)
          << "\"" << text << "\" from " << from << ", \"" << intro << "\"";
      hits += expected != absl::string_view::npos;
      ++calls;
    }
  }
  EXPECT_GT(hits, calls / 5);
}

TEST(SplitKeyTest, RandomLinesOfIntroducerPiecesFindTheKeyRe2Finds) {
  struct Case {
    std::string pattern, head;
    std::vector<std::string> pieces;
    std::string tail;  // ends half of the lines as the server would
  };
  const std::vector<Case> cases = {
      {"^Failed password for (?P<user>.*?) from (?P<ip>[0-9.]+) port \\\\d+ ssh2$",
       "Failed password for ",
       {" from ", " fro", "from ", "m ", "f", " ", "x", "203.0.113.7", " port 22 ssh2"},
       " from 198.51.100.4 port 22 ssh2"},
      {"^pam: (?P<u>.*?) rhost=(?P<ip>[0-9.]+)$", "pam: ",
       {" rhost=", "rhost", "=", "t=", " rh", "1.2.3.4", "z", " "},
       " rhost=198.51.100.5"},
      {"^login (?P<u>.*?)@(?P<ip>[0-9.]+) ok$", "login ",
       {"@", "@@", "9.8.7.6", " ok", "a", " "},
       "@198.51.100.6 ok"},
  };
  std::mt19937 random(11);
  int found = 0;
  for (const Case& c : cases) {
    auto split = CompileOne(c.pattern);
    ASSERT_NE(split->rules()[0]->key_split[0], nullptr) << c.pattern;
    auto re2_only = CompileOne(c.pattern, Re2Only());
    for (int i = 0; i < 3000; ++i) {
      std::string line = c.head;
      const int n = 1 + static_cast<int>(random() % 12);
      for (int k = 0; k < n; ++k) line += c.pieces[random() % c.pieces.size()];
      if (random() % 2 == 0) line += c.tail;
      const std::string key = KeyOf(split, line);
      ASSERT_EQ(key, KeyOf(re2_only, line)) << c.pattern << "\n" << line;
      if (key != "(none)") ++found;
    }
  }
  EXPECT_GT(found, 3000);  // the lines are not all misses
}

TEST(SplitKeyTest, AKeyRunAfterTheOnlyIntroducerIsReadWithoutRegex) {
  // The key's class cannot start what follows it: a run.
  const std::string sshd =
      "^Failed password for (?P<user>.*?) from (?P<ip>[0-9.]+)(?: port \\\\d+)?(?: ssh2)?$";
  auto set = CompileOne(sshd);
  ASSERT_NE(set->rules()[0]->key_split[0], nullptr);
  EXPECT_NE(set->rules()[0]->key_split[0]->run_max, 0u);
  absl::string_view key;
  EXPECT_EQ(set->rules()[0]->SplitKey(0, "Failed password for root from 203.0.113.7 port 22 ssh2",
                                      /*proven=*/true, &key), 1);
  EXPECT_EQ(key, "203.0.113.7");
  for (const std::string line : {"Failed password for root from 203.0.113.7 port 22 ssh2",
                                 "Failed password for root from 203.0.113.7",
                                 "Failed password for root from 203.0.113.7 ssh2",
                                 // Injection: the introducer twice, RE2's split decides.
                                 "Failed password for x from 198.51.100.1 port 22 ssh2 from "
                                 "203.0.113.8 port 22 ssh2"}) {
    EXPECT_EQ(KeyOf(set, line), KeyOf(CompileOne(sshd, Re2Only()), line)) << line;
  }
  EXPECT_EQ(KeyOf(set, "Failed password for x from 198.51.100.1 port 22 ssh2 from 203.0.113.8 "
                        "port 22 ssh2"),
            "203.0.113.8");
  // Only the occurrences whose run passes are tried: a user name holding the introducer many
  // times, with no address after it, leaves one split, found without a Set's proof too.
  std::string names = "Failed password for ";
  for (int i = 0; i < 20; ++i) names += "x from y ";
  names += "from 203.0.113.11 port 22 ssh2";
  EXPECT_EQ(set->rules()[0]->SplitKey(0, names, /*proven=*/false, &key), 1);
  EXPECT_EQ(key, "203.0.113.11");
  EXPECT_EQ(KeyOf(set, names), KeyOf(CompileOne(sshd, Re2Only()), names));
  // A one-byte introducer met many times: the occurrences whose run is followed by what the
  // tail can start with are the candidates; one is the split, two leave it to RE2.
  const std::string preauth =
      "^Connection closed by(?: (?:authenticating|invalid) user .*?)? (?P<ip>[0-9A-Fa-f:.]+) "
      "port \\\\d+ \\\\[preauth\\\\]$";
  auto spaced = CompileOne(preauth);
  ASSERT_NE(spaced->rules()[0]->key_split[0], nullptr);
  ASSERT_NE(spaced->rules()[0]->key_split[0]->run_max, 0u);
  EXPECT_EQ(spaced->rules()[0]->SplitKey(
                0, "Connection closed by authenticating user root 203.0.113.9 port 22 [preauth]",
                /*proven=*/true, &key),
            1);
  EXPECT_EQ(key, "203.0.113.9");
  for (const std::string line :
       {"Connection closed by authenticating user root 203.0.113.9 port 22 [preauth]",
        "Connection closed by authenticating user deadbeef 203.0.113.9 port 22 [preauth]",
        "Connection closed by invalid user x 198.51.100.77 port 22 [preauth] 203.0.113.44 port "
        "51234 [preauth]",
        "Connection closed by 2001:db8::9 port 40000 [preauth]"}) {
    EXPECT_EQ(KeyOf(spaced, line), KeyOf(CompileOne(preauth, Re2Only()), line)) << line;
  }
  EXPECT_EQ(KeyOf(spaced, "Connection closed by invalid user x 198.51.100.77 port 22 [preauth] "
                           "203.0.113.44 port 51234 [preauth]"),
            "203.0.113.44");
  // What follows can start with a byte of the key's class ('.' here, a digit below): the key
  // may end inside the run, so the tail's regex reads it.
  for (const std::string pattern : {"^a from (?P<ip>[0-9.]+)(?:\\\\.[a-z]+)? x$",
                                    "^a from (?P<ip>[0-9.]+?)[0-9]* x$"}) {
    auto not_run = CompileOne(pattern);
    ASSERT_NE(not_run->rules()[0]->key_split[0], nullptr) << pattern;
    EXPECT_EQ(not_run->rules()[0]->key_split[0]->run_max, 0u) << pattern;
  }
  const std::string dotted = "a from 198.51.100.4.example x";
  EXPECT_EQ(KeyOf(CompileOne("^a from (?P<ip>[0-9.]+)(?:\\\\.[a-z]+)? x$"), dotted),
            "198.51.100.4");
}

// --- both matching paths over the shipped packs ----------------------------------------------

struct Line {
  LogFormat format;
  std::string text;
};

// (rule id, key) per line, through one engine fed the lines in order (sessions carry).
std::vector<std::vector<std::pair<std::string, std::string>>> MatchAll(
    const std::shared_ptr<const RuleSet>& rules, const std::vector<Line>& lines) {
  Engine engine(rules, EngineOptions());
  std::map<LogFormat, LineParser> parsers;
  std::vector<std::vector<std::pair<std::string, std::string>>> out(lines.size());
  ParsedLine parsed;
  for (size_t i = 0; i < lines.size(); ++i) {
    const absl::Time time = absl::FromUnixSeconds(1'772'000'000 + static_cast<int64_t>(i));
    auto parser = parsers.try_emplace(lines[i].format, lines[i].format).first;
    if (!parser->second.Parse(lines[i].text, time, &parsed).ok()) continue;
    engine.MatchOnly(
        lines[i].format, parsed,
        [&](const CompiledRule& rule, absl::string_view key) {
          out[i].emplace_back(rule.id(), std::string(key));
        },
        time);
  }
  return out;
}

// Every example and counter-example of `rules` (in every format of its rule; the first
// `*examples` lines), the generated sshd and nginx corpora, and variants of them carrying tokens
// and attack strings in the forms the gated patterns look for.
std::vector<Line> TestLines(const RuleSet& rules, size_t* examples) {
  std::vector<Line> lines;
  for (const auto& rule : rules.rules()) {
    std::vector<std::string> texts;
    for (const auto& ex : rule->proto.examples()) texts.push_back(ex.line());
    for (const auto& line : rule->proto.counter_examples()) texts.push_back(line);
    for (int f : rule->proto.formats()) {
      for (const std::string& text : texts) {
        for (absl::string_view one : absl::StrSplit(text, '\n')) {
          lines.push_back({static_cast<LogFormat>(f), std::string(one)});
        }
      }
    }
  }
  *examples = lines.size();
  // The generated corpora, and the same lines carrying tokens and attack strings in the forms
  // the gated patterns look for (case changed, at the end, folded letters).
  CorpusOptions options;
  options.lines = 20'000;
  const Corpus sshd = GenerateSshd(options);
  const Corpus nginx = GenerateNginx(options);
  const std::vector<std::string> inserts = {
      "cfut_0123456789abcdefghijABCDEFGHIJ0123456789",
      "CFAT_0123456789abcdefghijABCDEFGHIJ0123456789 x",
      "Authorization: Bearer 0123456789abcdefghijABCDEFGHIJ01234567_-",
      "?cf_to\xE2\x84\xAA" "en=0123456789abcdefghijABCDEFGHIJ01234567_-",
      "/../../etc/passwd",
      "' UNION SELECT 1,2--",
      "<script>alert(1)</script>",
      "${jndi:ldap://x}",
  };
  for (size_t i = 0; i < sshd.lines.size(); ++i) {
    lines.push_back({LogFormat::LOG_FORMAT_SYSLOG, sshd.lines[i]});
    lines.push_back({LogFormat::LOG_FORMAT_RAW, sshd.lines[i]});
    if (i % 50 == 0) {
      lines.push_back(
          {LogFormat::LOG_FORMAT_SYSLOG, sshd.lines[i] + " " + inserts[(i / 50) % inserts.size()]});
    }
  }
  for (size_t i = 0; i < nginx.lines.size(); ++i) {
    lines.push_back({LogFormat::LOG_FORMAT_COMBINED, nginx.lines[i]});
    if (i % 50 == 0) {
      std::string line = nginx.lines[i];
      const size_t path = line.find(" /");
      if (path != std::string::npos) line.insert(path + 2, inserts[(i / 50) % inserts.size()]);
      lines.push_back({LogFormat::LOG_FORMAT_COMBINED, line});
      lines.push_back({LogFormat::LOG_FORMAT_RAW, line});
    }
  }
  return lines;
}

std::vector<LoadedPack> ShippedPacks() {
  std::vector<LoadedPack> packs;
  for (const std::string& f : FilesIn("rules", ".textproto")) {
    absl::StatusOr<LoadedPack> pack = LoadRulePackFile(f);
    EXPECT_TRUE(pack.ok()) << pack.status();
    if (pack.ok()) packs.push_back(*std::move(pack));
  }
  EXPECT_GE(packs.size(), 4u) << "packs missing under rules/";
  return packs;
}

// How CountAll hands lines to the engine: alone; each through Prematch first (its ignore
// answers, and RE2's for the candidates it leaves to Process); or runs of up to 100 lines of
// one format through the Prematch of many lines (the Sets of each run walked side by side).
enum class Prematching { kNone, kLineByLine, kManyLines };
const char* Name(Prematching p) {
  return p == Prematching::kNone ? "without Prematch"
         : p == Prematching::kLineByLine ? "with Prematch line by line"
                                          : "with Prematch of many lines";
}
constexpr Prematching kEveryPrematching[] = {Prematching::kNone, Prematching::kLineByLine,
                                             Prematching::kManyLines};

// (rule id, key) per line as Process counts it (MatchLine: ignore patterns, allowlist, sessions),
// through one engine fed the lines in order, prematched as `prematch` says. `*ignored`: the
// lines some rule's ignore pattern (or the allowlist) kept from counting.
std::vector<std::vector<std::pair<std::string, std::string>>> CountAll(
    const std::shared_ptr<const RuleSet>& rules, const std::vector<Line>& lines,
    Prematching prematch, size_t* ignored) {
  EngineOptions options;
  options.walk_ahead_bytes = 0;  // every Set's lines side by side, however short its walks
  Engine engine(rules, options);
  std::map<LogFormat, LineParser> parsers;
  std::vector<std::vector<std::pair<std::string, std::string>>> out(lines.size());
  std::vector<ParsedLine> parsed(lines.size());
  std::vector<bool> parses(lines.size());
  PrematchBuffer buffer;
  std::vector<std::pair<uint32_t, uint32_t>> spans;
  std::vector<EngineMatch> matches;
  *ignored = 0;
  auto time_of = [](size_t i) {
    return absl::FromUnixSeconds(1'772'000'000 + static_cast<int64_t>(i));
  };
  for (size_t first = 0; first < lines.size();) {
    // A run of lines of one format: one line unless the Prematch of many lines is tried (and
    // the format is not JSON's, whose parsed lines do not outlive the parser's next line).
    size_t end = first + 1;
    while (prematch == Prematching::kManyLines && !IsJsonFormat(lines[first].format) &&
           end < lines.size() && end - first < 100 &&
           lines[end].format == lines[first].format) {
      ++end;
    }
    auto parser = parsers.try_emplace(lines[first].format, lines[first].format).first;
    std::vector<const ParsedLine*> run;
    std::vector<size_t> run_at;
    for (size_t i = first; i < end; ++i) {
      parses[i] = parser->second.Parse(lines[i].text, time_of(i), &parsed[i]).ok();
      if (parses[i]) {
        run.push_back(&parsed[i]);
        run_at.push_back(i);
      }
    }
    buffer.Clear();
    spans.assign(end - first, {0, 0});  // per line of the run
    if (prematch == Prematching::kManyLines) {
      std::vector<std::pair<uint32_t, uint32_t>> run_spans;
      engine.Prematch(lines[first].format, run, &buffer, &run_spans);
      EXPECT_EQ(run_spans.size(), run.size());
      for (size_t k = 0; k < run_spans.size() && k < run.size(); ++k) {
        spans[run_at[k] - first] = run_spans[k];
      }
    } else if (prematch == Prematching::kLineByLine) {
      for (size_t i : run_at) {
        const uint32_t begin = static_cast<uint32_t>(buffer.candidates.size());
        engine.Prematch(lines[i].format, parsed[i], &buffer);
        spans[i - first] = {begin, static_cast<uint32_t>(buffer.candidates.size())};
      }
    }
    for (size_t i : run_at) {
      PrematchedLine pre;
      const auto [begin, span_end] = spans[i - first];
      pre.candidates = absl::MakeConstSpan(buffer.candidates.data() + begin, span_end - begin);
      pre.buffer = &buffer;
      matches.clear();
      const LineResult result =
          engine.MatchLine(lines[i].format, parsed[i], lines[i].text, time_of(i), &matches, 0,
                           prematch != Prematching::kNone ? &pre : nullptr);
      if (result.ignored > 0) ++*ignored;
      for (const EngineMatch& m : matches) out[i].emplace_back(m.rule_id, m.key);
    }
    first = end;
  }
  return out;
}

// The shipped packs compiled as the engine runs them (`with`), and as it ran before issue 13
// §4 (`without`: every pattern in a Set, every key and every ignore pattern through RE2).
void CompileBothWays(std::shared_ptr<const RuleSet>* with,
                     std::shared_ptr<const RuleSet>* without) {
  const std::vector<LoadedPack> packs = ShippedPacks();
  const CidrSets sets = ShippedPackCidrSets();
  RuleSetOptions off;
  off.prefilter = false;
  off.leading_keys = false;
  off.ignores_in_sets = false;
  off.skip_parts = false;
  off.own_dfa = false;
  absl::StatusOr<std::shared_ptr<const RuleSet>> on = RuleSet::Compile(packs, sets);
  absl::StatusOr<std::shared_ptr<const RuleSet>> before = RuleSet::Compile(packs, sets, off);
  ASSERT_TRUE(on.ok()) << on.status();
  ASSERT_TRUE(before.ok()) << before.status();
  *with = *std::move(on);
  *without = *std::move(before);
}

TEST(PrefilterTest, SameMatchesWithAndWithoutThePrefilterOverEveryPack) {
  std::shared_ptr<const RuleSet> with, without;
  ASSERT_NO_FATAL_FAILURE(CompileBothWays(&with, &without));

  // The prefilter is in use (else this test proves nothing): some format has a gated part,
  // and the token-leak pack's unanchored patterns are in it.
  size_t gated = 0;
  for (int f = 1; f <= palisade::v1::LogFormat_MAX; ++f) {
    const RuleSet::FormatIndex* index = with->ForFormat(static_cast<LogFormat>(f));
    if (index == nullptr) continue;
    for (const auto& part : index->parts) {
      if (part.gate != nullptr) gated += part.entries.size();
    }
    for (const auto& part : without->ForFormat(static_cast<LogFormat>(f))->parts) {
      ASSERT_EQ(part.gate, nullptr);
    }
  }
  EXPECT_GT(gated, 0u);
  size_t leading = 0;
  for (const auto& rule : with->rules()) {
    for (uint32_t max : rule->leading_key_max) leading += max != 0;
  }
  EXPECT_GT(leading, 10u);  // the access-log patterns, led by the client address

  size_t examples = 0;
  const std::vector<Line> lines = TestLines(*with, &examples);

  const auto a = MatchAll(with, lines);
  const auto b = MatchAll(without, lines);
  ASSERT_EQ(a.size(), b.size());
  size_t matched = 0, matched_examples = 0, differences = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (!b[i].empty()) {
      ++matched;
      if (i < examples) ++matched_examples;
    }
    if (a[i] != b[i] && ++differences <= 20) {
      ADD_FAILURE() << "line " << i << " (format " << lines[i].format << "): " << lines[i].text
                    << "\n  with the prefilter: " << a[i].size() << " matches, without: "
                    << b[i].size();
    }
  }
  EXPECT_EQ(differences, 0u);
  // The comparison covered real matches, in the examples and in the corpora.
  EXPECT_GT(matched_examples, 100u);
  EXPECT_GT(matched - matched_examples, 1000u);
}

// Whether two compiles of the same packs built the same index for `f`: the same parts, member
// by member. Returns how many parts were compared.
size_t ExpectSameIndex(const RuleSet& a, const RuleSet& b, int f) {
  const RuleSet::FormatIndex* x = a.ForFormat(static_cast<LogFormat>(f));
  const RuleSet::FormatIndex* y = b.ForFormat(static_cast<LogFormat>(f));
  EXPECT_EQ(x == nullptr, y == nullptr) << "format " << f;
  if (x == nullptr || y == nullptr) return 0;
  EXPECT_EQ(x->ignores_in_sets, y->ignores_in_sets) << "format " << f;
  EXPECT_EQ(x->field_rules, y->field_rules) << "format " << f;
  EXPECT_EQ(x->parts.size(), y->parts.size()) << "format " << f;
  size_t parts = 0;
  for (size_t p = 0; p < std::min(x->parts.size(), y->parts.size()); ++p, ++parts) {
    const RuleSet::SetPart& u = x->parts[p];
    const RuleSet::SetPart& v = y->parts[p];
    EXPECT_EQ(u.entries, v.entries) << "format " << f << " part " << p;
    EXPECT_EQ(u.ignore_rules, v.ignore_rules) << "format " << f << " part " << p;
    EXPECT_EQ(u.programs, v.programs) << "format " << f << " part " << p;
    EXPECT_EQ(u.first_bytes_known, v.first_bytes_known) << "format " << f << " part " << p;
    EXPECT_EQ(u.first_bytes, v.first_bytes) << "format " << f << " part " << p;
    EXPECT_EQ(u.set == nullptr, v.set == nullptr) << "format " << f << " part " << p;
    EXPECT_EQ(u.gate == nullptr, v.gate == nullptr) << "format " << f << " part " << p;
  }
  return parts;
}

// RuleSetOptions::threads: the rules and the Sets compiled side by side make the same RuleSet
// (each format's parts, member by member, and what they match over every test line), and a bad
// pack gives the error a load in order gives: the first bad rule's, even when a later rule is
// bad too and compiles first.
TEST(LoadThreadsTest, TwoThreadsCompileWhatOneDoes) {
  const std::vector<LoadedPack> packs = ShippedPacks();
  const CidrSets sets = ShippedPackCidrSets();
  RuleSetOptions two;
  two.threads = 2;
  absl::StatusOr<std::shared_ptr<const RuleSet>> a = RuleSet::Compile(packs, sets);
  absl::StatusOr<std::shared_ptr<const RuleSet>> b = RuleSet::Compile(packs, sets, two);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ((*a)->rules().size(), (*b)->rules().size());
  for (size_t r = 0; r < (*a)->rules().size(); ++r) {
    EXPECT_EQ((*a)->rules()[r]->id(), (*b)->rules()[r]->id());
  }
  size_t parts = 0;
  for (int f = 1; f <= palisade::v1::LogFormat_MAX; ++f) {
    parts += ExpectSameIndex(**a, **b, f);
    const RuleSet::FormatIndex* x = (*a)->ForFormat(static_cast<LogFormat>(f));
    const RuleSet::FormatIndex* y = (*b)->ForFormat(static_cast<LogFormat>(f));
    if (x == nullptr || y == nullptr || x->parts.size() != y->parts.size()) continue;
    for (size_t p = 0; p < x->parts.size(); ++p) {
      const RuleSet::SetPart& u = x->parts[p];
      const RuleSet::SetPart& v = y->parts[p];
      if (u.set != nullptr && v.set != nullptr) {
        // Formats that shared a Set still do (the JSON access logs and COMBINED).
        EXPECT_EQ(u.set.use_count(), v.set.use_count()) << "format " << f << " part " << p;
      }
    }
  }
  EXPECT_GT(parts, 10u);
  size_t examples = 0;
  const std::vector<Line> lines = TestLines(**a, &examples);
  EXPECT_TRUE(MatchAll(*a, lines) == MatchAll(*b, lines));

  // Errors: the first bad rule in order, whichever thread meets which first.
  const std::string bad_pattern = RawRule("bad-pattern", "(unclosed");
  const std::string bad_id = RawRule("Bad_Id", "x");
  const std::string bad_count =
      absl::StrReplaceAll(RawRule("no-count", "y"), {{"count: 1", "count: 0"}});
  for (const std::string& rules :
       {RawRule("a", "a") + bad_pattern + RawRule("b", "b") + bad_count,
        RawRule("a", "a") + RawRule("b", "b") + bad_count + bad_pattern,
        bad_id + RawRule("a", "a") + bad_pattern, RawRule("a", "a") + RawRule("a", "b") +
        bad_pattern}) {
    absl::StatusOr<LoadedPack> pack = ParseRulePack(rules, "t.textproto");
    ASSERT_TRUE(pack.ok()) << pack.status();
    const absl::Status one = RuleSet::Compile({*pack}).status();
    ASSERT_FALSE(one.ok()) << rules;
    for (int threads : {2, 3, 8}) {
      RuleSetOptions many;
      many.threads = threads;
      EXPECT_EQ(RuleSet::Compile({*pack}, {}, many).status(), one) << rules;
    }
  }
}

// RuleSetOptions::formats (what `palisadectl replay --format=F` loads): the formats named get
// the index a whole load builds, the others none, on one thread or two; every rule is still
// compiled, so a bad rule for a format not named refuses the load as before.
TEST(LoadThreadsTest, NamedFormatsGetTheIndexesAWholeLoadBuilds) {
  const std::vector<LoadedPack> packs = ShippedPacks();
  const CidrSets sets = ShippedPackCidrSets();
  absl::StatusOr<std::shared_ptr<const RuleSet>> whole = RuleSet::Compile(packs, sets);
  ASSERT_TRUE(whole.ok()) << whole.status();
  for (int threads : {1, 2}) {
    RuleSetOptions named;
    named.threads = threads;
    named.formats = {LogFormat::LOG_FORMAT_SYSLOG, LogFormat::LOG_FORMAT_DECISIONS};
    absl::StatusOr<std::shared_ptr<const RuleSet>> some = RuleSet::Compile(packs, sets, named);
    ASSERT_TRUE(some.ok()) << some.status();
    EXPECT_EQ((*some)->rules().size(), (*whole)->rules().size());
    size_t parts = 0;
    for (int f = 1; f <= palisade::v1::LogFormat_MAX; ++f) {
      if (f == LogFormat::LOG_FORMAT_SYSLOG || f == LogFormat::LOG_FORMAT_DECISIONS) {
        ASSERT_NE((*some)->ForFormat(static_cast<LogFormat>(f)), nullptr) << f;
        parts += ExpectSameIndex(**whole, **some, f);
      } else {
        EXPECT_EQ((*some)->ForFormat(static_cast<LogFormat>(f)), nullptr) << f;
      }
    }
    EXPECT_GT(parts, 2u);
    // The syslog lines match as with the whole load.
    size_t examples = 0;
    std::vector<Line> lines;
    for (Line& line : TestLines(**whole, &examples)) {
      if (line.format == LogFormat::LOG_FORMAT_SYSLOG) lines.push_back(std::move(line));
    }
    ASSERT_GT(lines.size(), 100u);
    EXPECT_TRUE(MatchAll(*whole, lines) == MatchAll(*some, lines));
  }
  // A rule that does not compile, for a format not named: refused all the same.
  absl::StatusOr<LoadedPack> bad =
      ParseRulePack(RawRule("a", "a") + RawRule("bad-pattern", "(unclosed"), "t.textproto");
  ASSERT_TRUE(bad.ok()) << bad.status();
  RuleSetOptions syslog_only;
  syslog_only.formats = {LogFormat::LOG_FORMAT_SYSLOG};
  EXPECT_EQ(RuleSet::Compile({*bad}, {}, syslog_only).status(), RuleSet::Compile({*bad}).status());
  EXPECT_FALSE(RuleSet::Compile({*bad}, {}, syslog_only).ok());
}

// The ignore patterns answered by the Set passes (RuleSetOptions::ignores_in_sets) ignore the
// same lines as RE2 runs of them: MatchLine over every pack, with and without Prematch, against
// MatchOnly (RE2's ignore patterns) on the rules compiled without the prefilter.
TEST(PrefilterTest, IgnorePatternsInTheSetsIgnoreWhatRe2Ignores) {
  std::shared_ptr<const RuleSet> with, without;
  ASSERT_NO_FATAL_FAILURE(CompileBothWays(&with, &without));
  // The Sets hold ignore patterns (else this test proves nothing), for access lines too.
  const RuleSet::FormatIndex* combined = with->ForFormat(LogFormat::LOG_FORMAT_COMBINED);
  ASSERT_NE(combined, nullptr);
  EXPECT_EQ(std::count(combined->ignores_in_sets.begin(), combined->ignores_in_sets.end(), true),
            2);
  size_t in_sets = 0;
  for (const auto& part : combined->parts) in_sets += part.ignore_rules.size();
  EXPECT_GE(in_sets, 2u);  // web-request-flood's static assets, nginx-404-flood's icons
  const RuleSet::FormatIndex* re2_only = without->ForFormat(LogFormat::LOG_FORMAT_COMBINED);
  for (const auto& part : re2_only->parts) EXPECT_THAT(part.ignore_rules, IsEmpty());
  EXPECT_EQ(std::count(re2_only->ignores_in_sets.begin(), re2_only->ignores_in_sets.end(), true),
            0);

  size_t examples = 0;
  const std::vector<Line> lines = TestLines(*with, &examples);
  auto expected = MatchAll(without, lines);
  // MatchOnly reports loopback keys, which the engine always allowlists (Process ignores them).
  CidrSet loopback;
  loopback.Add(*Cidr::Parse("127.0.0.0/8"));
  loopback.Add(*Cidr::Parse("::1/128"));
  for (auto& matches : expected) {
    matches.erase(std::remove_if(matches.begin(), matches.end(),
                                 [&](const std::pair<std::string, std::string>& m) {
                                   std::optional<IpAddress> ip = IpAddress::Parse(m.second);
                                   return ip && loopback.Contains(*ip);
                                 }),
                  matches.end());
  }
  for (Prematching prematch : kEveryPrematching) {
    size_t ignored = 0;
    const auto got = CountAll(with, lines, prematch, &ignored);
    ASSERT_EQ(got.size(), expected.size());
    size_t differences = 0;
    for (size_t i = 0; i < lines.size(); ++i) {
      if (got[i] != expected[i] && ++differences <= 20) {
        ADD_FAILURE() << Name(prematch) << ", line " << i
                      << " (format " << lines[i].format << "): " << lines[i].text
                      << "\n  counted: " << got[i].size() << " matches, RE2's ignores: "
                      << expected[i].size();
      }
    }
    EXPECT_EQ(differences, 0u) << Name(prematch);
    // Ignore patterns decided many lines: the counter-examples, the corpus's static assets.
    EXPECT_GT(ignored, 1000u) << Name(prematch);
  }
}


// --- parts that skip the lines they cannot match (RuleSetOptions::skip_parts) -----------------

// The (rule, key) of `text`, a syslog line, with `set` ("(none)": no match).
std::vector<std::string> SyslogMatches(const std::shared_ptr<const RuleSet>& set,
                                       const std::string& text) {
  Engine engine(set, EngineOptions());
  LineParser parser(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine line;
  const absl::Time time = absl::FromUnixSeconds(1'772'000'000);
  EXPECT_TRUE(parser.Parse(text, time, &line).ok()) << text;
  std::vector<std::string> out;
  engine.MatchOnly(
      LogFormat::LOG_FORMAT_SYSLOG, line,
      [&](const CompiledRule& rule, absl::string_view key) {
        out.push_back(absl::StrCat(rule.id(), " ", key));
      },
      time);
  return out;
}

// A part's skips cover its ignore patterns, whose rules may have their patterns in another part:
// here "any" (no programs, a gated pattern) has its anchored ignore pattern in the anchored Set
// of "ssh" (programs: sshd). A web line the ignore pattern matches is ignored only if that Set
// still runs on it: were the Set's programs and first bytes those of "ssh" alone, it would not.
TEST(SkipPartsTest, APartsSkipsCoverTheIgnorePatternsInIt) {
  absl::StatusOr<LoadedPack> pack = ParseRulePack(R"pb(
    rules {
      id: "ssh" formats: [LOG_FORMAT_SYSLOG] programs: ["sshd"]
      patterns: '^Failed for \\S+ from (?P<ip>[0-9.]+)$'
      threshold { count: 1 } decision { action: ACTION_BLOCK duration { seconds: 60 } }
    }
    rules {
      id: "any" formats: [LOG_FORMAT_SYSLOG]
      patterns: 'evilthing (?P<ip>[0-9.]+)'
      ignore_patterns: '^ignored '
      threshold { count: 1 } decision { action: ACTION_BLOCK duration { seconds: 60 } }
    }
  )pb", "t.textproto");
  ASSERT_TRUE(pack.ok()) << pack.status();
  absl::StatusOr<std::shared_ptr<const RuleSet>> set = RuleSet::Compile({*pack});
  ASSERT_TRUE(set.ok()) << set.status();
  const RuleSet::FormatIndex* index = (*set)->ForFormat(LogFormat::LOG_FORMAT_SYSLOG);
  ASSERT_NE(index, nullptr);
  const RuleSet::SetPart* anchored = nullptr;
  for (const auto& part : index->parts) {
    if (part.set != nullptr && !part.ignore_rules.empty()) anchored = &part;
  }
  ASSERT_NE(anchored, nullptr) << "the ignore pattern is not in a Set";
  EXPECT_THAT(anchored->programs, IsEmpty());
  ASSERT_TRUE(anchored->first_bytes_known);
  EXPECT_TRUE(anchored->first_bytes['F']);
  EXPECT_TRUE(anchored->first_bytes['i']);
  EXPECT_FALSE(anchored->first_bytes['e']);

  EXPECT_THAT(SyslogMatches(*set, "Mar  3 12:00:00 h sshd[1]: Failed for root from 192.0.2.7"),
              ElementsAre("ssh 192.0.2.7"));
  EXPECT_THAT(SyslogMatches(*set, "Mar  3 12:00:00 h web[2]: evilthing 192.0.2.8"),
              ElementsAre("any 192.0.2.8"));
  EXPECT_THAT(SyslogMatches(*set, "Mar  3 12:00:00 h web[2]: ignored evilthing 192.0.2.9"),
              IsEmpty());
  // The program gate: "ssh" names its program, so a cron line with its words is not its.
  EXPECT_THAT(SyslogMatches(*set, "Mar  3 12:00:00 h CRON[3]: Failed for root from 192.0.2.7"),
              IsEmpty());
}

// RE2 folds (?i)k to U+212A and (?i)s to U+017F, whose UTF-8 starts with bytes no ASCII letter
// has, and an anchored pattern that can match the empty message gives no first bytes at all.
TEST(SkipPartsTest, FirstBytesHoldWhatRe2FoldsAndNothingForAnEmptyMatch) {
  auto folded = CompileOne("^(?i)kex (?P<ip>[0-9.]+)");
  const RuleSet::FormatIndex* index = folded->ForFormat(LogFormat::LOG_FORMAT_RAW);
  ASSERT_NE(index, nullptr);
  ASSERT_EQ(index->parts.size(), 1u);
  ASSERT_TRUE(index->parts[0].first_bytes_known);
  EXPECT_TRUE(index->parts[0].first_bytes['k'] && index->parts[0].first_bytes['K']);
  EXPECT_TRUE(index->parts[0].first_bytes[0xE2]);
  EXPECT_FALSE(index->parts[0].first_bytes['x']);
  EXPECT_EQ(KeyOf(folded, "\xE2\x84\xAA" "EX 192.0.2.1"), "192.0.2.1");
  EXPECT_EQ(KeyOf(folded, "xex 192.0.2.1"), "(none)");
  auto empty = CompileOne("^(?:a )?(?P<ip>[0-9.]*)$");
  ASSERT_EQ(empty->ForFormat(LogFormat::LOG_FORMAT_RAW)->parts.size(), 1u);
  EXPECT_FALSE(empty->ForFormat(LogFormat::LOG_FORMAT_RAW)->parts[0].first_bytes_known);
}

// How many lines `a` and `b` (per line: (rule, key) found two ways, named `how_a` and `how_b`)
// disagree on, the first 10 reported; `*matched` counts the lines `b` found a match on.
template <typename PerLine>
size_t Differences(const std::string& name, const std::vector<Line>& lines, const PerLine& a,
                   const PerLine& b, absl::string_view how_a, absl::string_view how_b,
                   size_t* matched) {
  EXPECT_EQ(a.size(), b.size()) << name;
  size_t differences = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    *matched += !b[i].empty();
    if (a[i] != b[i] && ++differences <= 10) {
      ADD_FAILURE() << name << ", line " << i << " (format " << lines[i].format
                    << "): " << lines[i].text << "\n  " << how_a << ": " << a[i].size()
                    << " matches, " << how_b << ": " << b[i].size();
    }
  }
  return differences;
}

// The examples and counter-examples of `rules`, every seventh line of the generated corpora
// (TestLines), and access lines whose second field holds what its class (`\S+`) may not take or
// SetDfa does not read: bytes past ASCII, UTF-8 or not, and a tab.
std::vector<Line> SampleLines(const RuleSet& rules) {
  size_t examples = 0;
  const std::vector<Line> all = TestLines(rules, &examples);
  std::vector<Line> lines(all.begin(), all.begin() + examples);
  for (size_t i = examples; i < all.size(); i += 7) lines.push_back(all[i]);
  for (size_t i = examples, n = 0; i < all.size() && n < 300; i += 7) {
    if (all[i].format != LogFormat::LOG_FORMAT_COMBINED) continue;
    const size_t a = all[i].text.find(' ');
    const size_t b = a == std::string::npos ? a : all[i].text.find(' ', a + 1);
    if (b == std::string::npos) continue;
    ++n;
    for (const char* field : {"\xff", "\xc3\xa9", "a\tb", "-\x80"}) {
      std::string text = all[i].text;
      text.replace(a + 1, b - a - 1, field);
      lines.push_back({LogFormat::LOG_FORMAT_COMBINED, text});
    }
  }
  return lines;
}

// Each shipped pack alone, then every pack together: (name, compiled with the defaults,
// compiled with `other`).
struct PackGroup {
  std::string name;
  std::shared_ptr<const RuleSet> with, without;
};
std::vector<PackGroup> EachPackAndAll(const RuleSetOptions& other) {
  const std::vector<LoadedPack> packs = ShippedPacks();
  const CidrSets sets = ShippedPackCidrSets();
  std::vector<std::vector<LoadedPack>> groups;
  for (const LoadedPack& pack : packs) groups.push_back({pack});
  groups.push_back(packs);
  std::vector<PackGroup> out;
  for (const std::vector<LoadedPack>& group : groups) {
    const std::string name = group.size() == 1 ? group[0].pack.name() : "every pack";
    absl::StatusOr<std::shared_ptr<const RuleSet>> with = RuleSet::Compile(group, sets);
    absl::StatusOr<std::shared_ptr<const RuleSet>> without = RuleSet::Compile(group, sets, other);
    EXPECT_TRUE(with.ok()) << name << ": " << with.status();
    EXPECT_TRUE(without.ok()) << name << ": " << without.status();
    if (with.ok() && without.ok()) out.push_back({name, *with, *without});
  }
  return out;
}

// Each shipped pack alone (a pack whose rules name their programs gives its Sets a program
// list) and every pack together, compiled with and without the skips: the same (rule, key) on
// every example, counter-example and a sample of the generated corpora. And the skips are in
// use: the sshd pack's Set passes over the corpus's sudo, CRON and systemd-logind lines.
TEST(SkipPartsTest, SameMatchesWithAndWithoutSkipsOverEachPack) {
  const std::vector<LoadedPack> packs = ShippedPacks();
  const CidrSets sets = ShippedPackCidrSets();
  RuleSetOptions no_skips;
  no_skips.skip_parts = false;
  const std::vector<PackGroup> compiled = EachPackAndAll(no_skips);
  ASSERT_EQ(compiled.size(), packs.size() + 1);
  size_t with_programs = 0, with_first_bytes = 0, matched = 0;
  for (const auto& [name, with, without] : compiled) {
    for (int f = 1; f <= palisade::v1::LogFormat_MAX; ++f) {
      const RuleSet::FormatIndex* index = with->ForFormat(static_cast<LogFormat>(f));
      if (index == nullptr) continue;
      for (const auto& part : index->parts) {
        with_programs += !part.programs.empty();
        with_first_bytes += part.first_bytes_known;
      }
      for (const auto& part : without->ForFormat(static_cast<LogFormat>(f))->parts) {
        EXPECT_TRUE(part.programs.empty() && !part.first_bytes_known) << name;
      }
    }
    const std::vector<Line> lines = SampleLines(*with);
    EXPECT_EQ(Differences(name, lines, MatchAll(with, lines), MatchAll(without, lines),
                          "with the skips", "without", &matched),
              0u)
        << name;
  }
  EXPECT_GT(with_programs, 3u);
  EXPECT_GT(with_first_bytes, 10u);
  EXPECT_GT(matched, 10'000u);

  // The sshd pack alone: its anchored Set is for sshd's lines only, and skips the others.
  const auto sshd = std::find_if(packs.begin(), packs.end(),
                                 [](const LoadedPack& p) { return p.pack.name() == "sshd"; });
  ASSERT_NE(sshd, packs.end());
  absl::StatusOr<std::shared_ptr<const RuleSet>> alone = RuleSet::Compile({*sshd}, sets);
  ASSERT_TRUE(alone.ok()) << alone.status();
  const RuleSet::FormatIndex* index = (*alone)->ForFormat(LogFormat::LOG_FORMAT_SYSLOG);
  ASSERT_NE(index, nullptr);
  ASSERT_EQ(index->parts.size(), 1u);
  const RuleSet::SetPart& part = index->parts[0];
  EXPECT_THAT(part.programs, ElementsAre("sshd", "sshd-session"));
  ASSERT_TRUE(part.first_bytes_known);
  EXPECT_TRUE(part.first_bytes['F'] && part.first_bytes['I'] && part.first_bytes['C']);
  EXPECT_FALSE(part.first_bytes['N']);  // "New session 12 of user deploy." (systemd-logind)
  CorpusOptions options;
  options.lines = 5'000;
  LineParser parser(LogFormat::LOG_FORMAT_SYSLOG);
  ParsedLine parsed;
  size_t skipped = 0;
  for (const std::string& line : GenerateSshd(options).lines) {
    ASSERT_TRUE(parser.Parse(line, absl::FromUnixSeconds(1'772'000'000), &parsed).ok()) << line;
    skipped += !part.MayMatch(parsed.program, parsed.message);
  }
  EXPECT_GT(skipped, options.lines / 5);
}

// --- SetDfa in place of RE2's Set pass (RuleSetOptions::own_dfa) -----------------------------

// Each shipped pack alone and every pack together, compiled with and without SetDfa: the same
// (rule, key) on every example, counter-example and a sample of the corpora, with and without
// Prematch, and on lines whose message holds bytes past ASCII (which SetDfa leaves to RE2). And
// SetDfa is in use: the Sets of syslog and access lines with every pack have one.
TEST(OwnDfaTest, SameMatchesWithAndWithoutTheDfaOverEachPack) {
  RuleSetOptions re2_sets;
  re2_sets.own_dfa = false;
  const std::vector<PackGroup> compiled = EachPackAndAll(re2_sets);
  ASSERT_EQ(compiled.size(), ShippedPacks().size() + 1);
  size_t with_dfa = 0, without_dfa = 0, matched = 0;
  for (const auto& [name, with, without] : compiled) {
    const bool every_pack = name == "every pack";
    for (int f = 1; f <= palisade::v1::LogFormat_MAX; ++f) {
      const RuleSet::FormatIndex* index = with->ForFormat(static_cast<LogFormat>(f));
      if (index == nullptr) continue;
      for (const auto& part : index->parts) {
        if (part.set == nullptr) continue;
        (part.dfa != nullptr ? with_dfa : without_dfa) += 1;
        if (every_pack &&
            (f == LogFormat::LOG_FORMAT_SYSLOG || f == LogFormat::LOG_FORMAT_COMBINED)) {
          EXPECT_NE(part.dfa, nullptr) << "format " << f;
        }
      }
      for (const auto& part : without->ForFormat(static_cast<LogFormat>(f))->parts) {
        EXPECT_EQ(part.dfa, nullptr) << name;
      }
    }
    std::vector<Line> lines = SampleLines(*with);
    // Messages with a byte past ASCII at the start, the middle and the end.
    const size_t sampled = lines.size();
    for (size_t i = 0; i < sampled; i += 5) {
      std::string text = lines[i].text;
      const size_t middle = text.size() / 2;
      text.insert(i % 3 == 0 ? text.size() : i % 3 == 1 ? middle : text.find(' ') + 1, "\xc3\xa9");
      lines.push_back({lines[i].format, text});
    }
    for (Prematching prematch : kEveryPrematching) {
      size_t ignored_a = 0, ignored_b = 0;
      const auto a = CountAll(with, lines, prematch, &ignored_a);
      const auto b = CountAll(without, lines, prematch, &ignored_b);
      EXPECT_EQ(ignored_a, ignored_b) << name;
      EXPECT_EQ(Differences(name, lines, a, b, "with SetDfa", "with RE2's Set", &matched), 0u)
          << name;
    }
  }
  EXPECT_GT(with_dfa, 20u);
  EXPECT_GT(matched, 10'000u);
  // Said, not asserted: the Sets SetDfa does not model (\b in apache-error's patterns).
  std::cout << "Sets with SetDfa: " << with_dfa << ", without: " << without_dfa << "\n";
}

}  // namespace
}  // namespace palisade
