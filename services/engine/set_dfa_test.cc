#include "services/engine/set_dfa.h"

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "re2/re2.h"
#include "re2/set.h"

namespace palisade {
namespace {

// What RE2::Set answers for `text`, sorted.
std::vector<int> Re2Hits(const std::vector<std::string>& patterns, bool anchored,
                         const std::string& text) {
  RE2::Options options;
  options.set_log_errors(false);
  RE2::Set set(options, anchored ? RE2::ANCHOR_START : RE2::UNANCHORED);
  for (const std::string& p : patterns) {
    std::string error;
    EXPECT_GE(set.Add(p, &error), 0) << p << ": " << error;
  }
  EXPECT_TRUE(set.Compile());
  std::vector<int> hits;
  set.Match(text, &hits);
  std::sort(hits.begin(), hits.end());
  return hits;
}

std::vector<int> DfaHits(const SetDfa& dfa, SetDfa::Cache* cache, const std::string& text) {
  std::vector<int> hits;
  EXPECT_TRUE(dfa.Match(text, cache, &hits)) << text;
  return hits;
}

std::unique_ptr<const SetDfa> MustBuild(const std::vector<std::string>& patterns, bool anchored) {
  absl::StatusOr<std::unique_ptr<const SetDfa>> dfa = SetDfa::Build(patterns, anchored);
  EXPECT_TRUE(dfa.ok()) << dfa.status();
  return dfa.ok() ? *std::move(dfa) : nullptr;
}

TEST(SetDfaTest, AnswersWhatRe2SetAnswersOnLogLines) {
  const std::vector<std::string> patterns = {
      R"(^Failed password for (?:invalid user )?(?P<user>\S+) from (?P<ip>[0-9A-Fa-f:.]+) port \d+ ssh2$)",
      R"(^Invalid user .* from (?P<ip>[0-9.]+))",
      R"((?i)^connection closed by (?:authenticating user \S+ )?[0-9.]+ port \d{1,5}(?: \[preauth\])?$)",
      R"(^(?P<ip>[0-9.]+) \S+ \S+ \[[^\]]+\] "(?:GET|POST) /wp-login\.php)",
      R"(^[^x]*$)",
  };
  for (bool anchored : {true, false}) {
    std::unique_ptr<const SetDfa> dfa = MustBuild(patterns, anchored);
    ASSERT_NE(dfa, nullptr);
    SetDfa::Cache cache;
    for (const std::string text : {
             "Failed password for root from 192.0.2.7 port 22 ssh2",
             "Failed password for invalid user admin from 192.0.2.7 port 22 ssh2",
             "Failed password for root from 192.0.2.7 port 22 ssh2 x",
             "Invalid user oracle from 198.51.100.3 port 4242",
             "CONNECTION closed by authenticating user root 192.0.2.9 port 22 [preauth]",
             "Connection closed by 192.0.2.9 port 123456",
             "203.0.113.5 - - [03/Mar/2026:12:00:00 +0000] \"POST /wp-login.php HTTP/1.1\" 200 1",
             "x marks the spot",
             "",
             "nothing here",
         }) {
      EXPECT_EQ(DfaHits(*dfa, &cache, text), Re2Hits(patterns, anchored, text))
          << (anchored ? "anchored: " : "unanchored: ") << text;
    }
  }
}

TEST(SetDfaTest, ClassesAreRe2sNotTheParsersWidening) {
  // The parse tree widens (?i)[^a] to every byte and \pL to every byte; RE2 does not.
  const std::vector<std::string> patterns = {"(?i)[^a]b", R"(\pL\pN)", R"([[:punct:]]x)",
                                             R"(\x{41}\101\Q.*\E)", "(?s:.)z", ".z"};
  std::unique_ptr<const SetDfa> dfa = MustBuild(patterns, true);
  ASSERT_NE(dfa, nullptr);
  SetDfa::Cache cache;
  for (const std::string text : {"Ab", "ab", "Bb", "a1", "11", ";x", "ax", "AA.*", "AA.x", "\nz",
                                 "yz", "\n"}) {
    EXPECT_EQ(DfaHits(*dfa, &cache, text), Re2Hits(patterns, true, text)) << text;
  }
}

// A quantifier after a character of several UTF-8 bytes takes the whole character (found by
// tests/fuzz:set_dfa_fuzz: `[^x]Ն?` was read as `[^x]\xd5\x86?` and matched no ASCII text).
TEST(SetDfaTest, AQuantifierTakesAWholeMultiByteCharacter) {
  const std::vector<std::string> patterns = {"(?:a|bc*){2,4}$", "[^x]\xd5\x86?", "^a\xc3\xa9*b",
                                             "\\Qa\xc3\xa9\\E?c", "^\xe2\x82\xac{0,2}z"};
  for (bool anchored : {true, false}) {
    std::unique_ptr<const SetDfa> dfa = MustBuild(patterns, anchored);
    ASSERT_NE(dfa, nullptr);
    SetDfa::Cache cache;
    for (const std::string text : {"b1cc", "ab", "ac", "a", "z", "bz"}) {
      EXPECT_EQ(DfaHits(*dfa, &cache, text), Re2Hits(patterns, anchored, text))
          << (anchored ? "anchored: " : "unanchored: ") << text;
    }
  }
}

// RE2 reads a repetition count with a leading zero as literal text (found by set_dfa_fuzz).
TEST(SetDfaTest, ACountWithALeadingZeroIsLiteralText) {
  const std::vector<std::string> patterns = {"^cc{01,4}$", "^c{0,2}x", "^a{00}b"};
  std::unique_ptr<const SetDfa> dfa = MustBuild(patterns, true);
  ASSERT_NE(dfa, nullptr);
  SetDfa::Cache cache;
  for (const std::string text : {"cc", "ccc", "cc{01,4}", "x", "ccx", "b", "a{00}b"}) {
    EXPECT_EQ(DfaHits(*dfa, &cache, text), Re2Hits(patterns, true, text)) << text;
  }
}

TEST(SetDfaTest, ATextPastAsciiIsLeftToRe2) {
  std::unique_ptr<const SetDfa> dfa = MustBuild({"^a", "é"}, false);
  ASSERT_NE(dfa, nullptr);
  SetDfa::Cache cache;
  std::vector<int> hits;
  EXPECT_FALSE(dfa->Match("a caf\xc3\xa9", &cache, &hits));
  EXPECT_TRUE(dfa->Match("a cafe", &cache, &hits));
  EXPECT_EQ(hits, std::vector<int>({0}));
}

TEST(SetDfaTest, WordBoundariesAreRefusedNamingThePattern) {
  absl::StatusOr<std::unique_ptr<const SetDfa>> dfa = SetDfa::Build({"^a", "^x\\bz"}, true);
  ASSERT_FALSE(dfa.ok());
  EXPECT_NE(dfa.status().message().find("pattern 2"), std::string::npos) << dfa.status();
}

TEST(SetDfaTest, AWalkStopsWhenNoPatternCanGoOn) {
  std::unique_ptr<const SetDfa> dfa = MustBuild({"^ab", "^ac"}, true);
  ASSERT_NE(dfa, nullptr);
  SetDfa::Cache cache;
  std::vector<int> hits;
  // The byte past ASCII after the dead end is never read: the walk stopped at "x".
  EXPECT_TRUE(dfa->Match("ax\xff", &cache, &hits));
  EXPECT_TRUE(hits.empty());
  EXPECT_TRUE(dfa->Match("ab\xff", &cache, &hits));
  EXPECT_EQ(hits, std::vector<int>({0}));
}

// Random patterns over a small alphabet against RE2::Set, both anchorings, with a cache small
// enough to start over many times.
std::string RandomPattern(std::mt19937& rng, int depth) {
  auto pick = [&](int n) { return static_cast<int>(rng() % n); };
  static const char* const kAtoms[] = {"a",     "b",    " ",    "1",     ".",    "[ab]",
                                       "[^a ]", "\\d",  "\\S",  "\\s",   "(?i:A)", "[a-c1]",
                                       "\\w",   "\\W",  "[[:alpha:]]"};
  std::string out;
  const int pieces = 1 + pick(4);
  for (int i = 0; i < pieces; ++i) {
    std::string piece;
    const int kind = depth > 2 ? 0 : pick(10);
    if (kind <= 5) {
      piece = kAtoms[pick(sizeof(kAtoms) / sizeof(kAtoms[0]))];
    } else if (kind <= 7) {
      piece = "(?:" + RandomPattern(rng, depth + 1) + "|" + RandomPattern(rng, depth + 1) + ")";
    } else if (kind == 8) {
      piece = pick(2) ? "$" : "^";
    } else {
      piece = "(" + RandomPattern(rng, depth + 1) + ")";
    }
    static const char* const kRepeats[] = {"", "", "", "*", "+", "?", "{2}", "{1,3}", "{2,}",
                                           "*?", "{0,2}"};
    if (piece != "$" && piece != "^") piece += kRepeats[pick(sizeof(kRepeats) / sizeof(kRepeats[0]))];
    out += piece;
  }
  return out;
}

// A Set under test: its patterns as SetDfa and as RE2::Set, the reference (`Want`: its hits,
// sorted).
struct TestSet {
  std::vector<std::string> patterns;
  bool anchored = false;
  std::unique_ptr<const SetDfa> dfa;
  std::unique_ptr<RE2::Set> set;
  std::vector<int> Want(const std::string& text) const {
    std::vector<int> want;
    set->Match(text, &want);
    std::sort(want.begin(), want.end());
    return want;
  }
};
TestSet MakeTestSet(std::vector<std::string> patterns, bool anchored) {
  TestSet t;
  t.patterns = std::move(patterns);
  t.anchored = anchored;
  t.dfa = MustBuild(t.patterns, anchored);
  RE2::Options options;
  options.set_log_errors(false);
  t.set = std::make_unique<RE2::Set>(options, anchored ? RE2::ANCHOR_START : RE2::UNANCHORED);
  for (const std::string& p : t.patterns) EXPECT_GE(t.set->Add(p, nullptr), 0) << p;
  EXPECT_TRUE(t.set->Compile());
  return t;
}
// One to six random patterns, either anchoring.
TestSet RandomSet(std::mt19937& rng) {
  std::vector<std::string> patterns;
  const int n = 1 + static_cast<int>(rng() % 6);
  for (int i = 0; i < n; ++i) patterns.push_back(RandomPattern(rng, 0));
  const bool anchored = rng() % 2 == 0;
  return MakeTestSet(std::move(patterns), anchored);
}

TEST(SetDfaTest, RandomPatternsAnswerAsRe2Does) {
  std::mt19937 rng(20261204);
  int compared = 0;
  size_t resets = 0;  // the small caches started over: the path is taken, not only present
  for (int round = 0; round < 300; ++round) {
    const TestSet random = RandomSet(rng);
    ASSERT_NE(random.dfa, nullptr);
    const SetDfa* const dfa = random.dfa.get();
    const std::vector<std::string>& patterns = random.patterns;
    const bool anchored = random.anchored;
    SetDfa::Cache big;
    SetDfa::Cache small(6000);
    for (int t = 0; t < 60; ++t) {
      std::string text;
      const int length = static_cast<int>(rng() % 12);
      for (int i = 0; i < length; ++i) text.push_back("ab 1A\nc-"[rng() % 8]);
      const std::vector<int> want = random.Want(text);
      std::vector<int> got;
      ASSERT_TRUE(dfa->Match(text, &big, &got));
      ASSERT_EQ(got, want) << "patterns:\n  " << testing::PrintToString(patterns)
                           << "\nanchored: " << anchored << "\ntext: \"" << text << "\"";
      if (dfa->Match(text, &small, &got)) {
        ASSERT_EQ(got, want) << "small cache; text: \"" << text << "\"";
        ++compared;
      }
    }
    resets += small.resets();
  }
  EXPECT_GT(compared, 10000);
  EXPECT_GT(resets, 100u);
}

// MatchMany against RE2::Set on random patterns and batches of random texts (some empty, some
// past ASCII, of lengths that end the walks at different rounds), with a cache small enough to
// start over in the middle of a batch, when the other walks must start their texts again.
TEST(SetDfaTest, ManyTextsWalkedSideBySideAnswerAsRe2Does) {
  std::mt19937 rng(20261205);
  int compared = 0, unanswered_ascii = 0;
  size_t resets = 0;
  for (int round = 0; round < 200; ++round) {
    const TestSet random = RandomSet(rng);
    ASSERT_NE(random.dfa, nullptr);
    const SetDfa* const dfa = random.dfa.get();
    const std::vector<std::string>& patterns = random.patterns;
    const bool anchored = random.anchored;
    SetDfa::Cache big, alone;
    SetDfa::Cache small(4000);
    for (int batch = 0; batch < 8; ++batch) {
      std::vector<std::string> texts(rng() % 26);
      for (std::string& text : texts) {
        const int length = static_cast<int>(rng() % 40);
        for (int i = 0; i < length; ++i) text.push_back("ab 1A\nc-"[rng() % 8]);
        if (rng() % 10 == 0) text.insert(rng() % (text.size() + 1), "\xc3\xa9");
      }
      const std::vector<absl::string_view> views(texts.begin(), texts.end());
      SetDfa::Answers from_big, from_small;
      dfa->MatchMany(views, &big, &from_big);
      dfa->MatchMany(views, &small, &from_small);
      ASSERT_EQ(from_big.spans.size(), texts.size());
      ASSERT_EQ(from_small.spans.size(), texts.size());
      for (size_t t = 0; t < texts.size(); ++t) {
        const bool ascii = texts[t].find('\xc3') == std::string::npos;
        const std::vector<int> want = random.Want(texts[t]);
        // A big cache answers what Match answers: every text of ASCII bytes, and one past it
        // only when the walk ended before its first byte past ASCII.
        std::vector<int> hits;
        ASSERT_EQ(from_big.answered(t), dfa->Match(texts[t], &alone, &hits)) << texts[t];
        ASSERT_TRUE(from_big.answered(t) || !ascii) << texts[t];
        for (const SetDfa::Answers* answers : {&from_big, &from_small}) {
          if (!answers->answered(t)) {
            if (ascii) ++unanswered_ascii;
            continue;
          }
          const std::vector<int> got(answers->hits.begin() + answers->spans[t].first,
                                     answers->hits.begin() + answers->spans[t].second);
          ASSERT_EQ(got, want) << "patterns:\n  " << testing::PrintToString(patterns)
                               << "\nanchored: " << anchored << "\ntext " << t << " of "
                               << texts.size() << ": \"" << texts[t] << "\""
                               << (answers == &from_small ? " (small cache)" : "");
          ++compared;
        }
      }
    }
    resets += small.resets();
  }
  EXPECT_GT(compared, 30000);
  EXPECT_GT(resets, 100u);  // the small caches started over, most often with other walks live
  EXPECT_LT(unanswered_ascii, compared / 10);
}

// Lines written so that each meets states never built (an automaton of 2^11 states, random
// lines, a cache that holds a few hundred): after a window of such lines the cache rests and
// RE2 answers the next ones; then SetDfa answers again. Its answers are RE2's throughout. With
// `many`, the lines go to MatchMany 50 at a time, which counts them towards the rest as Match.
void ExpectRestsAndAnswersAsRe2(bool many) {
  const TestSet thrashing = MakeTestSet({"^[ab]*a[ab]{10}$", "^b"}, true);
  ASSERT_NE(thrashing.dfa, nullptr);
  SetDfa::Cache cache(64 << 10);
  std::mt19937 rng(7);
  size_t answered = 0, left = 0, answered_after_rest = 0;
  for (int batch = 0; batch < 13000 / 50; ++batch) {
    std::vector<std::string> texts(50);
    for (std::string& text : texts) {
      for (int i = 0; i < 300; ++i) text.push_back("ab"[rng() % 2]);
    }
    const std::vector<absl::string_view> views(texts.begin(), texts.end());
    SetDfa::Answers answers;
    if (many) thrashing.dfa->MatchMany(views, &cache, &answers);
    for (size_t t = 0; t < texts.size(); ++t) {
      std::vector<int> got;
      if (many && answers.answered(t)) {
        got.assign(answers.hits.begin() + answers.spans[t].first,
                   answers.hits.begin() + answers.spans[t].second);
      }
      if (many ? !answers.answered(t) : !thrashing.dfa->Match(texts[t], &cache, &got)) {
        ++left;
        continue;
      }
      ++answered;
      if (left > 0) ++answered_after_rest;
      ASSERT_EQ(got, thrashing.Want(texts[t])) << texts[t];
    }
  }
  // 256 lines answered, 4,096 rested, 256 answered, 8,192 rested (the rest doubles while the
  // window after it finds the same), ...
  EXPECT_GE(cache.rested(), 4096u + 8192u);
  EXPECT_GE(left, cache.rested());
  EXPECT_GT(answered_after_rest, 100u);
  EXPECT_GT(answered, 500u);
}

TEST(SetDfaTest, ACacheThatBuildsAllAlongRestsAndRe2Answers) {
  ExpectRestsAndAnswersAsRe2(/*many=*/false);
}

TEST(SetDfaTest, ManyTextsRestTheCacheAsMatchDoes) { ExpectRestsAndAnswersAsRe2(/*many=*/true); }

// Packs come from clients too (Admin.TestRules): the pieces asked of RE2 and kept for the
// process stay within 1 MiB whatever the patterns, long classes included.
TEST(SetDfaTest, WhatIsKeptOfThePiecesIsBoundedInBytes) {
  std::mt19937 rng(3);
  for (int round = 0; round < 40; ++round) {
    std::vector<std::string> patterns;
    for (int i = 0; i < 100; ++i) {
      std::string cls = "[";
      const size_t length = round % 2 == 0 ? 200 : 4000;  // kept, and too long to keep
      while (cls.size() < length) cls += "a-b" + std::to_string(rng());
      patterns.push_back(cls + "]x");
    }
    ASSERT_NE(MustBuild(patterns, true), nullptr);
    EXPECT_LE(SetDfa::AtomMemoryBytes(), size_t{1} << 20);
  }
  EXPECT_GT(SetDfa::AtomMemoryBytes(), 0u);
}

TEST(SetDfaTest, ACacheFollowsTheDfaItIsUsedWith) {
  std::unique_ptr<const SetDfa> a = MustBuild({"^a"}, true);
  std::unique_ptr<const SetDfa> b = MustBuild({"^b", "^a"}, true);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  SetDfa::Cache cache;
  std::vector<int> hits;
  ASSERT_TRUE(a->Match("a", &cache, &hits));
  EXPECT_EQ(hits, std::vector<int>({0}));
  ASSERT_TRUE(b->Match("a", &cache, &hits));
  EXPECT_EQ(hits, std::vector<int>({1}));
}

}  // namespace
}  // namespace palisade
