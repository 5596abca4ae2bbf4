#include "services/engine/engine.h"

#include <deque>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/substitute.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/status_matchers.h"

namespace palisade {
namespace {

using ::palisade::v1::LogFormat;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr absl::string_view kPack = R"pb(
  rules {
    id: "ssh-fail"
    formats: LOG_FORMAT_SYSLOG
    programs: "sshd"
    patterns: "^Failed password for (?:invalid user )?(?P<user>\\S+) from (?P<ip>\\S+) port"
    ignore_patterns: "for backup from"
    threshold {
      count: 3
      window { seconds: 60 }
    }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 600 }
    }
  }
  rules {
    id: "ssh-probe"
    formats: LOG_FORMAT_SYSLOG
    patterns: "^Did not receive identification string from (?P<ip>\\S+)"
    threshold { count: 1 }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 60 }
    }
  }
)pb";

std::shared_ptr<const RuleSet> Rules(absl::string_view text = kPack) {
  auto pack = ParseRulePack(text, "test.textproto");
  EXPECT_TRUE(pack.ok()) << pack.status();
  auto set = RuleSet::Compile({*pack});
  EXPECT_TRUE(set.ok()) << set.status();
  return *set;
}

// One rule counting sshd failures by address: `count` of them in ten minutes.
std::string FailPack(absl::string_view id, int count) {
  return absl::Substitute(R"pb(
    rules {
      id: "$0"
      formats: LOG_FORMAT_SYSLOG
      patterns: "^Failed password for (?P<user>\\S+) from (?P<ip>\\S+) port"
      threshold {
        count: $1
        window { seconds: 600 }
      }
      decision {
        action: ACTION_BLOCK
        duration { seconds: 600 }
      }
    }
  )pb",
                          id, count);
}

// A rule `id` that matches no line of these tests (a reload's other rule).
std::string NothingRule(absl::string_view id) {
  return absl::Substitute(R"pb(
    rules {
      id: "$0"
      formats: LOG_FORMAT_SYSLOG
      patterns: "^nothing (?P<ip>\\S+)"
      threshold {
        count: 2
        window { seconds: 60 }
      }
      decision {
        action: ACTION_BLOCK
        duration { seconds: 60 }
      }
    }
  )pb",
                          id);
}

// An evidence record's header in a window's ring: the line's length and its match's time.
constexpr size_t kRecordHeader = sizeof(uint32_t) + sizeof(int64_t);

// A snapshot window as written before it said what it counted.
palisade::v1::EngineSnapshot::Window MakeLegacy(palisade::v1::EngineSnapshot::Window w) {
  w.clear_rule_key_kind();
  w.clear_rule_key();
  return w;
}

class EngineTest : public ::testing::Test {
 protected:
  EngineTest() : engine_(Rules(), EngineOptions()) {}

  // Feeds a sshd message at `offset` seconds after t0; returns the detections it raised.
  std::vector<Detection> Feed(absl::string_view message, int offset_seconds,
                              absl::string_view program = "sshd") {
    ParsedLine line;
    line.message = message;
    line.program = program;
    std::vector<Detection> out;
    last_ = engine_.Process(LogFormat::LOG_FORMAT_SYSLOG, line, message,
                            t0_ + absl::Seconds(offset_seconds), &out);
    return out;
  }
  std::string Fail(absl::string_view ip) {
    return absl::StrCat("Failed password for root from ", ip, " port 22 ssh2");
  }
  // A failure whose line names `user`: lines told apart in a detection's evidence.
  std::string FailAs(absl::string_view user, absl::string_view ip) {
    return absl::StrCat("Failed password for ", user, " from ", ip, " port 22 ssh2");
  }
  // Feed, from the input stream `stream`.
  std::vector<Detection> FeedFrom(uint32_t stream, absl::string_view message, int offset_seconds) {
    ParsedLine line;
    line.message = message;
    line.program = "sshd";
    std::vector<Detection> out;
    last_ = engine_.Process(LogFormat::LOG_FORMAT_SYSLOG, line, message,
                            t0_ + absl::Seconds(offset_seconds), &out, stream);
    return out;
  }
  // The evidence of the one detection `engine` raises on the raw line `raw` (empty when it
  // raises none, or more than one).
  std::vector<std::string> EvidenceOfRaw(Engine& engine, const std::string& raw) {
    ParsedLine line;
    line.message = raw;
    std::vector<Detection> out;
    engine.Process(LogFormat::LOG_FORMAT_RAW, line, raw, t0_, &out);
    return out.size() == 1 ? out[0].evidence : std::vector<std::string>{};
  }

  Engine engine_;
  LineResult last_;
  absl::Time t0_ = absl::FromUnixSeconds(1'767'225'600);
};

TEST_F(EngineTest, DetectsExactlyAtTheThreshold) {
  EXPECT_THAT(Feed(Fail("203.0.113.7"), 0), IsEmpty());
  EXPECT_THAT(Feed(Fail("203.0.113.7"), 10), IsEmpty());
  std::vector<Detection> d = Feed(Fail("203.0.113.7"), 20);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].rule_id, "ssh-fail");
  EXPECT_EQ(d[0].key, "203.0.113.7");
  EXPECT_EQ(d[0].time, t0_ + absl::Seconds(20));
  EXPECT_THAT(d[0].evidence, SizeIs(3));
  // The window starts over after a detection.
  EXPECT_THAT(Feed(Fail("203.0.113.7"), 21), IsEmpty());
}

TEST_F(EngineTest, MatchesOutsideTheWindowDoNotCount) {
  Feed(Fail("203.0.113.7"), 0);
  Feed(Fail("203.0.113.7"), 30);
  // 61 s after the first: the first fell out of the 60 s window.
  EXPECT_THAT(Feed(Fail("203.0.113.7"), 61), IsEmpty());
  EXPECT_THAT(Feed(Fail("203.0.113.7"), 62), SizeIs(1));
}

TEST_F(EngineTest, WindowEdgeIsInclusive) {
  Feed(Fail("203.0.113.7"), 0);
  Feed(Fail("203.0.113.7"), 30);
  EXPECT_THAT(Feed(Fail("203.0.113.7"), 60), SizeIs(1));
}

TEST_F(EngineTest, KeysAreCountedSeparately) {
  Feed(Fail("203.0.113.7"), 0);
  Feed(Fail("203.0.113.8"), 1);
  Feed(Fail("203.0.113.7"), 2);
  EXPECT_THAT(Feed(Fail("203.0.113.8"), 3), IsEmpty());
  EXPECT_THAT(Feed(Fail("203.0.113.7"), 4), SizeIs(1));
}

TEST_F(EngineTest, Ipv6FormsShareOneWindow) {
  Feed(Fail("2001:DB8:0::7"), 0);
  Feed(Fail("2001:db8::7"), 1);
  std::vector<Detection> d = Feed(Fail("2001:0db8:0000:0000:0000:0000:0000:0007"), 2);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].key, "2001:db8::7");
}

TEST_F(EngineTest, MappedIpv4CountsAsIpv4) {
  Feed(Fail("::ffff:198.51.100.4"), 0);
  Feed(Fail("198.51.100.4"), 1);
  std::vector<Detection> d = Feed(Fail("::ffff:198.51.100.4"), 2);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].key, "198.51.100.4");
}

TEST_F(EngineTest, InvalidKeysAreCountedNotWindowed) {
  EXPECT_THAT(Feed("Failed password for root from not-an-ip port 22", 0), IsEmpty());
  EXPECT_EQ(last_.invalid_keys, 1u);
  EXPECT_FALSE(last_.matched);
  EXPECT_EQ(engine_.live_windows(), 0u);
}

TEST_F(EngineTest, LoopbackAndAllowlistAreIgnored) {
  EngineOptions options;
  options.allowlist = *CidrSet::Parse({"198.51.100.0/24"});
  Engine engine(Rules(), options);
  ParsedLine line;
  line.program = "sshd";
  std::vector<Detection> out;
  for (absl::string_view ip : {"127.0.0.1", "::1", "198.51.100.9"}) {
    std::string msg = Fail(ip);
    line.message = msg;
    for (int i = 0; i < 5; ++i) {
      LineResult r = engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, msg, t0_, &out);
      EXPECT_EQ(r.ignored, 1u);
    }
  }
  EXPECT_THAT(out, IsEmpty());
  EXPECT_EQ(engine.live_windows(), 0u);
}

// Engines on one thread share its scratch: the last address's answer (NormaliseKey's cache) is
// one engine's, never another's with another allowlist; an IPv6 key is formatted the same
// from the cache, and an invalid one stays invalid.
TEST_F(EngineTest, TheLastAddressIsRememberedPerEngine) {
  EngineOptions listed;
  listed.allowlist = *CidrSet::Parse({"198.51.100.0/24", "2001:db8::/32"});
  Engine allowlisting(Rules(), listed);
  Engine plain(Rules(), EngineOptions());
  ParsedLine line;
  line.program = "sshd";
  std::vector<Detection> out;
  for (absl::string_view ip : {"198.51.100.9", "2001:DB8:0:0::9"}) {
    const std::string msg = Fail(ip);
    line.message = msg;
    out.clear();
    for (int i = 0; i < 3; ++i) {  // the threshold: the plain engine detects at the third
      LineResult a = allowlisting.Process(LogFormat::LOG_FORMAT_SYSLOG, line, msg, t0_, &out);
      EXPECT_EQ(a.ignored, 1u) << ip;
      LineResult b = plain.Process(LogFormat::LOG_FORMAT_SYSLOG, line, msg, t0_, &out);
      EXPECT_EQ(b.ignored, 0u) << ip;
      EXPECT_TRUE(b.matched) << ip;
    }
    ASSERT_THAT(out, SizeIs(1)) << ip;
    EXPECT_EQ(out[0].key, ip == "198.51.100.9" ? "198.51.100.9" : "2001:db8::9");
  }
  for (int i = 0; i < 2; ++i) {
    const std::string msg = Fail("2001:db8::zz");
    line.message = msg;
    LineResult r = plain.Process(LogFormat::LOG_FORMAT_SYSLOG, line, msg, t0_, &out);
    EXPECT_EQ(r.invalid_keys, 1u);
  }
}

// A reload's allowlist applies to the next line, also to the address the thread's scratch
// remembers as not allowlisted; loopback stays in it.
TEST_F(EngineTest, ANewAllowlistAppliesToTheRememberedAddressToo) {
  Engine engine(Rules(), EngineOptions());
  ParsedLine line;
  line.program = "sshd";
  const std::string msg = Fail("198.51.100.9");
  line.message = msg;
  std::vector<Detection> out;
  LineResult before = engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, msg, t0_, &out);
  EXPECT_EQ(before.ignored, 0u);
  EXPECT_TRUE(before.matched);
  engine.SetAllowlist(*CidrSet::Parse({"198.51.100.0/24"}));
  LineResult after = engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, msg, t0_, &out);
  EXPECT_EQ(after.ignored, 1u);
  EXPECT_FALSE(after.matched);
  const std::string loopback = Fail("127.0.0.1");
  line.message = loopback;
  EXPECT_EQ(engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, loopback, t0_, &out).ignored, 1u);
}

TEST_F(EngineTest, ATextLongerThanTheRememberedOneLeavesTheLastAddressRight) {
  // NormaliseKey remembers the last address text in a 64-byte buffer; a longer capture (no
  // address is that long) is parsed on its own and must leave no answer of its own behind for
  // the address before it.
  const std::string address = "2001:0DB8:0000:0000:0000:0000:0000:0007";
  const std::string longer = absl::StrCat(address, ":", std::string(40, '0'));
  EXPECT_THAT(Feed(Fail(address), 0), IsEmpty());
  EXPECT_THAT(Feed(Fail(longer), 1), IsEmpty());
  EXPECT_EQ(last_.invalid_keys, 1u);
  EXPECT_THAT(Feed(Fail(longer), 2), IsEmpty());
  EXPECT_EQ(last_.invalid_keys, 1u);
  EXPECT_THAT(Feed(Fail(address), 3), IsEmpty());
  EXPECT_EQ(last_.invalid_keys, 0u);
  std::vector<Detection> d = Feed(Fail(address), 4);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].key, "2001:db8::7");
}

// Prematch normalises a key captured at the same place of a line once for the rules that share
// it, but only for rules of one key kind: the same text is no address for an address rule and a
// valid key for a path rule, and an allowlisted address stays allowlisted for every rule.
TEST(EnginePrematchTest, RulesCapturingTheSameKeyShareItsNormalisationPerKeyKind) {
  auto rules = Rules(R"pb(
    rules {
      id: "by-ip"
      formats: LOG_FORMAT_RAW
      patterns: "^(?P<ip>[0-9A-Fa-f:.]+) GET"
      threshold { count: 1 }
      decision { action: ACTION_BLOCK duration { seconds: 60 } }
    }
    rules {
      id: "by-ip-too"
      formats: LOG_FORMAT_RAW
      patterns: "^(?P<ip>[0-9A-Fa-f:.]+) GET /x"
      threshold { count: 1 }
      decision { action: ACTION_BLOCK duration { seconds: 60 } }
    }
    rules {
      id: "by-path"
      formats: LOG_FORMAT_RAW
      key_kind: TARGET_KIND_PATH
      patterns: "^(?P<ip>[0-9A-Fa-f:.]+) GET"
      threshold { count: 1 }
      decision { action: ACTION_BLOCK duration { seconds: 60 } }
    }
  )pb");
  EngineOptions options;
  options.allowlist = *CidrSet::Parse({"192.0.2.0/24"});
  Engine engine(rules, options);
  const auto keys = [&](const std::string& text) {
    ParsedLine line;
    line.message = text;
    PrematchBuffer buffer;
    engine.Prematch(LogFormat::LOG_FORMAT_RAW, line, &buffer);
    PrematchedLine pre{absl::MakeConstSpan(buffer.candidates), &buffer};
    std::vector<Detection> out;
    engine.Process(LogFormat::LOG_FORMAT_RAW, line, text, absl::FromUnixSeconds(1), &out, 0, &pre);
    std::vector<std::string> got;
    for (const Detection& d : out) got.push_back(absl::StrCat(d.rule_id, "=", d.key));
    return got;
  };
  EXPECT_THAT(keys("2001:DB8::7 GET /x"),
              ElementsAre("by-ip=2001:db8::7", "by-ip-too=2001:db8::7", "by-path=2001:DB8::7"));
  EXPECT_THAT(keys("abc GET /x"), ElementsAre("by-path=abc"));  // no address: the path rule only
  EXPECT_THAT(keys("192.0.2.1 GET /x"), ElementsAre("by-path=192.0.2.1"));  // allowlisted
}

TEST_F(EngineTest, IgnorePatternsAndProgramFilter) {
  for (int i = 0; i < 5; ++i) Feed("Failed password for backup from 203.0.113.7 port 22", i);
  EXPECT_EQ(last_.ignored, 1u);
  for (int i = 0; i < 5; ++i) EXPECT_THAT(Feed(Fail("203.0.113.9"), i, "vsftpd"), IsEmpty());
  EXPECT_EQ(engine_.live_windows(), 0u);
}

TEST_F(EngineTest, CountOneDetectsAtOnceWithoutAWindow) {
  std::vector<Detection> d = Feed("Did not receive identification string from 203.0.113.5", 0);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].rule_id, "ssh-probe");
  EXPECT_THAT(d[0].evidence, ElementsAre("Did not receive identification string from 203.0.113.5"));
  EXPECT_EQ(engine_.live_windows(), 0u);
}

TEST_F(EngineTest, EvidenceIsCappedOldestFirstAndStartsOverAfterADetection) {
  EngineOptions options;
  options.max_evidence = 2;
  options.max_evidence_bytes = 64 * 1024;  // the lines here are kept whole
  Engine engine(Rules(), options);
  ParsedLine line;
  line.program = "sshd";
  std::vector<Detection> out;
  // Long and short lines in turn make the window's buffer grow and its oldest record move.
  std::vector<std::string> msgs;
  for (size_t tail : {1, 5000, 3, 0, 700, 2}) {
    msgs.push_back(Fail("203.0.113.7") + " " + std::string(tail, 'x'));
  }
  for (const std::string& m : msgs) {
    line.message = m;
    engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t0_, &out);
  }
  ASSERT_THAT(out, SizeIs(2));
  EXPECT_THAT(out[0].evidence, ElementsAre(msgs[1], msgs[2]));
  EXPECT_THAT(out[1].evidence, ElementsAre(msgs[4], msgs[5]));  // nothing of the first three
}

// A detection's evidence is the lines of the matches inside its window: matches that slid out
// of it take their lines with them, whether or not the idle window was expired in between (the
// daemon expires on a timer, replay never), so both show the same evidence.
TEST_F(EngineTest, EvidenceHoldsOnlyTheMatchesInsideTheWindow) {
  auto fail = [&](int port) {
    return absl::StrCat("Failed password for root from 203.0.113.7 port ", port, " ssh2");
  };
  Feed(fail(1), 0);
  Feed(fail(2), 1);  // both out of the 60 s window by the third line below
  Feed(fail(3), 100);
  Feed(fail(4), 150);  // fail(3) still inside (the window reaches back to 95 s)
  std::vector<Detection> d = Feed(fail(5), 155);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_THAT(d[0].evidence, ElementsAre(fail(3), fail(4), fail(5)));
  // ... and the window's next detection: fail(6) and fail(7) slide out before fail(10).
  Feed(fail(6), 200);
  Feed(fail(7), 201);
  Feed(fail(8), 300);
  d = Feed(fail(9), 301);
  EXPECT_THAT(d, IsEmpty());
  d = Feed(fail(10), 302);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_THAT(d[0].evidence, ElementsAre(fail(8), fail(9), fail(10)));
}

// A window is the rule's span back from its newest match, whatever order the lines come in
// (a backlog stream, a pending match released at its own time): a late line older than that
// span is not counted, and a late line inside it does not keep older ones alive.
TEST_F(EngineTest, ALateLineCountsOnlyInsideTheWindowOfTheNewestMatch) {
  EXPECT_THAT(Feed(Fail("203.0.113.7"), 290), IsEmpty());
  EXPECT_THAT(Feed(Fail("203.0.113.7"), 295), IsEmpty());
  EXPECT_THAT(Feed(Fail("203.0.113.7"), 0), IsEmpty());  // 295 s before the newest: outside
  EXPECT_THAT(Feed(Fail("203.0.113.7"), 296), SizeIs(1));

  EXPECT_THAT(Feed(Fail("203.0.113.8"), 290), IsEmpty());
  EXPECT_THAT(Feed(Fail("203.0.113.8"), 0), IsEmpty());
  EXPECT_THAT(Feed(Fail("203.0.113.8"), 295), IsEmpty());  // the match at 0 s is not in its window
  std::vector<Detection> d = Feed(Fail("203.0.113.8"), 280);  // late, but inside: 3 in 60 s
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_THAT(d[0].evidence, SizeIs(3));
}

// One line dated ahead (a sender's clock an hour fast, or a forged time: the daemon moves only
// lines more than a day ahead to now) made every real failure of its key older than the
// window's span back from it, so none counted until the clock caught up: the attacker's real
// failures went unseen for the hour. A window counts the matches that fit in one span, in
// whatever order they come.
TEST_F(EngineTest, ALineDatedAheadDoesNotHideTheRealFailuresOfItsKey) {
  EXPECT_THAT(Feed(Fail("203.0.113.7"), 3600), IsEmpty());
  EXPECT_THAT(Feed(Fail("203.0.113.7"), 0), IsEmpty());
  EXPECT_THAT(Feed(Fail("203.0.113.7"), 1), IsEmpty());
  std::vector<Detection> d = Feed(Fail("203.0.113.7"), 2);  // 3 in 60 s (count: 3 in 60 s)
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].key, "203.0.113.7");
  // Matches that do not fit in one span still do not count together.
  EXPECT_THAT(Feed(Fail("203.0.113.8"), 3600), IsEmpty());
  EXPECT_THAT(Feed(Fail("203.0.113.8"), 0), IsEmpty());
  EXPECT_THAT(Feed(Fail("203.0.113.8"), 100), IsEmpty());
  EXPECT_THAT(Feed(Fail("203.0.113.8"), 200), IsEmpty());
  EXPECT_THAT(Feed(Fail("203.0.113.8"), 3000), IsEmpty());
}

// A line dated more than a span after its window's newest match (here a sender's clock an hour
// fast: the daemon takes lines up to a day ahead) slid every real failure of its key out of the
// window, since they are more than a span older than it: the failure after it, three in 60 s
// with the two before, raised nothing.
TEST_F(EngineTest, ALineDatedAheadAfterTheRealFailuresDoesNotEraseThem) {
  EXPECT_THAT(Feed(Fail("203.0.113.7"), 0), IsEmpty());
  EXPECT_THAT(Feed(Fail("203.0.113.7"), 1), IsEmpty());
  EXPECT_THAT(Feed(Fail("203.0.113.7"), 3600), IsEmpty());  // an hour ahead
  std::vector<Detection> d = Feed(Fail("203.0.113.7"), 2);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].time, t0_ + absl::Seconds(2));
  // A window ages by its newest match (the line ahead), though times a span older remain.
  EXPECT_THAT(Feed(Fail("203.0.113.8"), 0), IsEmpty());
  EXPECT_THAT(Feed(Fail("203.0.113.8"), 7200), IsEmpty());
  engine_.Expire(t0_ + absl::Seconds(7200 + 60));
  EXPECT_EQ(engine_.live_windows(), 1u);
  engine_.Expire(t0_ + absl::Seconds(7200 + 61));
  EXPECT_EQ(engine_.live_windows(), 0u);
  EXPECT_EQ(engine_.memory_bytes(), 0u);
}

// A backlog replayed on one stream (lines of an hour ago) beside the live lines of the same
// address on another: each live line slid the backlog's failures out of the window, so three
// failures in two seconds raised nothing.
TEST_F(EngineTest, ABacklogInterleavedWithALiveStreamOfItsKeyStillDetects) {
  EXPECT_THAT(FeedFrom(1, Fail("203.0.113.7"), 3600), IsEmpty());
  EXPECT_THAT(FeedFrom(2, Fail("203.0.113.7"), 0), IsEmpty());
  EXPECT_THAT(FeedFrom(2, Fail("203.0.113.7"), 1), IsEmpty());
  EXPECT_THAT(FeedFrom(1, Fail("203.0.113.7"), 3700), IsEmpty());
  std::vector<Detection> d = FeedFrom(2, Fail("203.0.113.7"), 2);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].time, t0_ + absl::Seconds(2));
  EXPECT_THAT(d[0].evidence, SizeIs(3));
}

// Lines of one address from two senders, one with its clock an hour fast writing a failure every
// two minutes (none within a span of another), then the correct sender's three failures in 60 s:
// they detect. Lines dated ahead do not slide the window, so they pile up to the cap of twice
// the threshold; past it the times farthest from the line counted go, not the oldest (which
// dropped each real failure as it came).
TEST_F(EngineTest, ASenderWithAClockAheadDoesNotCrowdOutAnotherSendersFailures) {
  for (int i = 0; i < 10; ++i) {
    EXPECT_THAT(FeedFrom(1, FailAs("fast", "203.0.113.7"), 3600 + 120 * i), IsEmpty()) << i;
  }
  EXPECT_THAT(FeedFrom(2, FailAs("u0", "203.0.113.7"), 0), IsEmpty());
  EXPECT_THAT(FeedFrom(2, FailAs("u1", "203.0.113.7"), 20), IsEmpty());
  std::vector<Detection> d = FeedFrom(2, FailAs("u2", "203.0.113.7"), 40);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].time, t0_ + absl::Seconds(40));
  EXPECT_THAT(d[0].evidence, ElementsAre(FailAs("u0", "203.0.113.7"), FailAs("u1", "203.0.113.7"),
                                         FailAs("u2", "203.0.113.7")));
  // The fast sender's lines go on counting among themselves, apart.
  for (int i = 0; i < 3; ++i) {
    d = FeedFrom(1, FailAs("fast", "203.0.113.7"), 7200 + i);
    EXPECT_THAT(d, SizeIs(i == 2 ? 1 : 0)) << i;
  }
}

// A detection's evidence is the lines of the matches that made it, oldest first, whatever order
// they came in. It was the window's newest lines in the order they came: a line dated ahead
// showed as evidence of failures an hour before it, and a failure the window had slid past
// stayed while the line ahead went in its place.
TEST_F(EngineTest, EvidenceIsTheLinesOfTheMatchesThatMadeTheDetection) {
  const std::string ip = "203.0.113.7";
  EXPECT_THAT(Feed(FailAs("ahead", ip), 3600), IsEmpty());
  EXPECT_THAT(Feed(FailAs("u0", ip), 0), IsEmpty());
  EXPECT_THAT(Feed(FailAs("u1", ip), 1), IsEmpty());
  std::vector<Detection> d = Feed(FailAs("u2", ip), 2);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_THAT(d[0].evidence, ElementsAre(FailAs("u0", ip), FailAs("u1", ip), FailAs("u2", ip)));

  const std::string other = "203.0.113.8";
  EXPECT_THAT(Feed(FailAs("ahead", other), 3600), IsEmpty());
  EXPECT_THAT(Feed(FailAs("a", other), 0), IsEmpty());
  EXPECT_THAT(Feed(FailAs("b", other), 100), IsEmpty());
  EXPECT_THAT(Feed(FailAs("c", other), 101), IsEmpty());
  d = Feed(FailAs("d", other), 102);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_THAT(d[0].evidence,
              ElementsAre(FailAs("b", other), FailAs("c", other), FailAs("d", other)));

  // A late line inside the window: in its place, by time.
  const std::string third = "203.0.113.9";
  EXPECT_THAT(Feed(FailAs("x", third), 10), IsEmpty());
  EXPECT_THAT(Feed(FailAs("y", third), 20), IsEmpty());
  d = Feed(FailAs("z", third), 5);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_THAT(d[0].evidence,
              ElementsAre(FailAs("z", third), FailAs("x", third), FailAs("y", third)));
}

// With fewer evidence lines than the threshold, the evidence is the newest of the run that
// fired, not a line dated ahead nor one of a run that never fired.
TEST_F(EngineTest, EvidenceUnderTheThresholdIsTheNewestLinesOfTheRunThatFired) {
  EngineOptions options;
  options.max_evidence = 2;
  Engine engine(Rules(), options);
  auto feed = [&](absl::string_view user, int offset, absl::string_view ip = "203.0.113.7") {
    const std::string m = FailAs(user, ip);
    ParsedLine line;
    line.message = m;
    line.program = "sshd";
    std::vector<Detection> out;
    engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t0_ + absl::Seconds(offset), &out);
    return out;
  };
  EXPECT_THAT(feed("ahead", 3600), IsEmpty());
  EXPECT_THAT(feed("early", 500), IsEmpty());
  EXPECT_THAT(feed("u0", 0), IsEmpty());
  EXPECT_THAT(feed("u1", 1), IsEmpty());
  std::vector<Detection> d = feed("u2", 2);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_THAT(d[0].evidence, ElementsAre(FailAs("u1", "203.0.113.7"), FailAs("u2", "203.0.113.7")));
  // A late line drops the kept line more than a span from it (the one ahead), not the run's.
  const std::string ip = "203.0.113.8";
  EXPECT_THAT(feed("a", 3600, ip), IsEmpty());
  EXPECT_THAT(feed("b", 3700, ip), IsEmpty());  // kept: two more matches can detect
  EXPECT_THAT(feed("u1", 1, ip), IsEmpty());
  EXPECT_THAT(feed("u0", 0, ip), IsEmpty());  // two kept already: "b" goes, not "u1"
  d = feed("u2", 2, ip);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_THAT(d[0].evidence, ElementsAre(FailAs("u1", ip), FailAs("u2", ip)));
  // A late line that fires, older than the kept lines of its run, does not take a place of
  // theirs: the evidence is still the run's newest two.
  const std::string third = "203.0.113.9";
  EXPECT_THAT(feed("p", 200, third), IsEmpty());
  EXPECT_THAT(feed("x", 10, third), IsEmpty());
  EXPECT_THAT(feed("y", 20, third), IsEmpty());
  d = feed("w", 5, third);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_THAT(d[0].evidence, ElementsAre(FailAs("x", third), FailAs("y", third)));
}

// A window's times stay bounded when lines come late: each late line keeps the matches of its
// own span and those after it, so lines coming newest first, 100 s apart (never 3 in 60 s, no
// detection to empty the window), kept every time; past twice the threshold the oldest go.
TEST_F(EngineTest, LinesInNoOrderKeepAWindowsTimesBounded) {
  const size_t before = engine_.memory_bytes();
  for (int i = 0; i < 2000; ++i) {
    EXPECT_THAT(Feed(Fail("203.0.113.9"), 200'000 - 100 * i), IsEmpty());
  }
  EXPECT_EQ(engine_.live_windows(), 1u);
  EXPECT_LT(engine_.memory_bytes() - before, 4096u);  // 2,000 times would be 16,000 bytes
}

// A window ages in the clock of the stream of its newest match: a late line from a stream
// running behind (a backlog) does not keep it alive by that stream's older clock.
TEST_F(EngineTest, AWindowAgesInTheStreamOfItsNewestMatch) {
  auto feed = [&](int offset, uint32_t stream) {
    const std::string m = Fail("203.0.113.7");
    ParsedLine line;
    line.message = m;
    line.program = "sshd";
    std::vector<Detection> out;
    engine_.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t0_ + absl::Seconds(offset), &out,
                    stream);
  };
  feed(100, 1);
  feed(90, 2);  // late, inside the window: counted
  EXPECT_EQ(engine_.live_windows(), 1u);
  // Stream 1 is at 200 s (the window's newest match is 100 s behind it); stream 2 at 95 s.
  engine_.ExpireByStream({t0_, t0_ + absl::Seconds(200), t0_ + absl::Seconds(95)}, t0_);
  EXPECT_EQ(engine_.live_windows(), 0u);
}

TEST_F(EngineTest, ExpireDropsIdleWindows) {
  Feed(Fail("203.0.113.7"), 0);
  Feed(Fail("203.0.113.8"), 50);
  EXPECT_EQ(engine_.live_windows(), 2u);
  engine_.Expire(t0_ + absl::Seconds(61));
  EXPECT_EQ(engine_.live_windows(), 1u);
  EXPECT_EQ(engine_.stats().expired_windows, 1u);
  engine_.Expire(t0_ + absl::Seconds(200));
  EXPECT_EQ(engine_.live_windows(), 0u);
}

TEST_F(EngineTest, ExpireSpreadWalksARuleOnceAnEighthOfItsSpan) {
  Feed(Fail("203.0.113.7"), 0);  // ssh-fail: a 60 s window, so a walk every 7.5 s at most
  engine_.ExpireSpread(t0_ + absl::Seconds(55));  // walked: idle 55 s, kept
  EXPECT_EQ(engine_.live_windows(), 1u);
  // Idle past its span, but its rule was walked 6 s ago: Expire would drop it, this waits.
  engine_.ExpireSpread(t0_ + absl::Seconds(61));
  EXPECT_EQ(engine_.live_windows(), 1u);
  engine_.ExpireSpread(t0_ + absl::Milliseconds(62'500));  // an eighth of the span on
  EXPECT_EQ(engine_.live_windows(), 0u);
  EXPECT_EQ(engine_.stats().expired_windows, 1u);
  // A rule swap makes every rule due again.
  Feed(Fail("203.0.113.8"), 100);
  engine_.ExpireSpread(t0_ + absl::Seconds(150));
  engine_.SetRules(Rules());
  engine_.ExpireSpread(t0_ + absl::Seconds(161));
  EXPECT_EQ(engine_.live_windows(), 0u);
}

TEST_F(EngineTest, KeyCapEvictsTheLeastRecentlyActive) {
  EngineOptions options;
  options.max_keys_per_rule = 100;
  Engine engine(Rules(), options);
  ParsedLine line;
  line.program = "sshd";
  std::vector<Detection> out;
  for (int i = 0; i < 1000; ++i) {
    std::string m = Fail(absl::StrCat("10.0.", i / 256, ".", i % 256));
    line.message = m;
    engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t0_ + absl::Seconds(i), &out);
  }
  EXPECT_LE(engine.live_windows(), 100u);
  EXPECT_GE(engine.live_windows(), 85u);  // evicts about a tenth of a shard at a time
  EXPECT_GE(engine.stats().evicted_windows, 900u);
  // The newest key survived and still counts toward its threshold.
  std::string newest = Fail("10.0.3.231");
  line.message = newest;
  engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, newest, t0_ + absl::Seconds(1000), &out);
  engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, newest, t0_ + absl::Seconds(1001), &out);
  ASSERT_THAT(out, SizeIs(1));
  EXPECT_EQ(out[0].key, "10.0.3.231");
}

// The key cap evicts in the order lines counted, not by event time (which the log writer
// chooses): a backlog stream's window, counted after the live keys, outlives them.
TEST_F(EngineTest, KeyCapEvictsByTheOrderLinesCountedNotTheirEventTime) {
  EngineOptions options;
  options.max_keys_per_rule = 1600;
  Engine engine(Rules(), options);
  ParsedLine line;
  line.program = "sshd";
  std::vector<Detection> out;
  auto count = [&](const std::string& ip, absl::Time t, uint32_t stream) {
    const std::string m = Fail(ip);
    line.message = m;
    engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t, &out, stream);
  };
  for (int i = 0; i < 1600; ++i) {
    count(absl::StrCat("10.5.", i / 256, ".", i % 256), t0_ + absl::Seconds(i), 1);
  }
  // A backlog an hour behind: two of the three matches.
  count("203.0.113.7", t0_ - absl::Seconds(3600), 2);
  count("203.0.113.7", t0_ - absl::Seconds(3599), 2);
  // 800 newer keys: about half of each shard's older live keys go, not the backlog's window
  // (each shard holds ~100 of them and loses ~50: a wide margin either way).
  for (int i = 0; i < 800; ++i) {
    count(absl::StrCat("10.6.", i / 256, ".", i % 256), t0_ + absl::Seconds(1600 + i), 1);
  }
  EXPECT_GE(engine.stats().evicted_windows, 700u);
  EXPECT_THAT(out, IsEmpty());
  count("203.0.113.7", t0_ - absl::Seconds(3598), 2);
  ASSERT_THAT(out, SizeIs(1));
  EXPECT_EQ(out[0].key, "203.0.113.7");
}

TEST_F(EngineTest, ATinyKeyCapEvictsFromAnotherShardWhenTheNewKeysShardIsEmpty) {
  // With a cap of a few keys most shards are empty, so the shard a new key lands in often has
  // nothing to evict: the room is made in another shard, and the cap still holds.
  for (uint32_t cap : {1u, 2u, 3u}) {
    EngineOptions options;
    options.max_keys_per_rule = cap;
    Engine engine(Rules(), options);
    ParsedLine line;
    line.program = "sshd";
    std::vector<Detection> out;
    for (int i = 0; i < 200; ++i) {
      std::string m = Fail(absl::StrCat("10.2.", i / 256, ".", i % 256));
      line.message = m;
      engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t0_ + absl::Seconds(i), &out);
      ASSERT_LE(engine.live_windows(), cap) << "cap " << cap << " after key " << i;
    }
    EXPECT_GE(engine.stats().evicted_windows, 200u - cap);
    // The newest key kept its window: two more matches reach the threshold of three.
    std::string newest = Fail("10.2.0.199");
    line.message = newest;
    engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, newest, t0_ + absl::Seconds(200), &out);
    engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, newest, t0_ + absl::Seconds(201), &out);
    ASSERT_THAT(out, SizeIs(1)) << "cap " << cap;
    EXPECT_EQ(out[0].key, "10.2.0.199");
  }
}

// A flood of fresh addresses, each one match under the threshold, must not push out the window
// of a slow guesser one failure short of it: windows holding a single match go first, whatever
// their age (by the key cap and by the memory budget alike).
TEST_F(EngineTest, EvictionTakesSingleMatchWindowsBeforeAGuesserOneShortOfTheThreshold) {
  for (bool by_budget : {false, true}) {
    EngineOptions options;
    if (by_budget) {
      options.memory_budget_bytes = 1 << 20;
    } else {
      options.max_keys_per_rule = 100;
    }
    Engine engine(Rules(), options);
    ParsedLine line;
    line.program = "sshd";
    std::vector<Detection> out;
    auto count = [&](const std::string& ip, absl::Time t) {
      const std::string m = Fail(ip);
      line.message = m;
      engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t, &out);
    };
    count("203.0.113.7", t0_);
    count("203.0.113.7", t0_ + absl::Milliseconds(1));  // two of three
    const int kFlood = 20'000;
    for (int i = 0; i < kFlood; ++i) {
      count(absl::StrCat("10.", i / 65536, ".", i / 256 % 256, ".", i % 256),
            t0_ + absl::Milliseconds(2 + i));
    }
    const EngineStats stats = engine.stats();
    if (by_budget) {
      EXPECT_GE(stats.memory_evicted_windows, static_cast<uint64_t>(kFlood) / 2);
      EXPECT_EQ(stats.evicted_windows, 0u);
    } else {
      EXPECT_GE(stats.evicted_windows, static_cast<uint64_t>(kFlood) - 100);
      EXPECT_EQ(stats.memory_evicted_windows, 0u);
    }
    ASSERT_THAT(out, IsEmpty()) << by_budget;
    count("203.0.113.7", t0_ + absl::Seconds(30));
    ASSERT_THAT(out, SizeIs(1)) << by_budget;
    EXPECT_EQ(out[0].key, "203.0.113.7");
  }
}

// Two address rules of very different thresholds: sshd failures (3) and a web flood (120).
constexpr absl::string_view kSshAndFlood = R"pb(
  rules {
    id: "ssh"
    formats: LOG_FORMAT_SYSLOG
    patterns: "^Failed password for (?P<user>\\S+) from (?P<ip>\\S+) port"
    threshold {
      count: 3
      window { seconds: 600 }
    }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 600 }
    }
  }
  rules {
    id: "flood"
    formats: LOG_FORMAT_SYSLOG
    patterns: "^GET from (?P<ip>\\S+)$"
    threshold {
      count: 120
      window { seconds: 600 }
    }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 600 }
    }
  }
)pb";

// The memory budget ranks the windows of every rule of a shard together: by the matches each
// still misses, not by the matches it holds (3 of web-request-flood's 120 are 117 short; 2 of
// sshd's 3 are one short). A flood of 3-match windows on a threshold-120 rule must not push
// out a guesser at 2 of 3; nor must a window of old, out-of-order matches (up to twice the
// threshold kept, none within a span of each other) outrank it.
TEST_F(EngineTest, BudgetEvictionRanksWindowsOfAllRulesByTheMatchesTheyStillMiss) {
  for (bool late : {false, true}) {
    EngineOptions options;
    options.memory_budget_bytes = 1 << 20;
    Engine engine(Rules(kSshAndFlood), options);
    ParsedLine line;
    std::vector<Detection> out;
    auto count = [&](const std::string& m, absl::Time t) {
      line.message = m;
      engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t, &out);
    };
    count(Fail("203.0.113.7"), t0_);
    count(Fail("203.0.113.7"), t0_ + absl::Seconds(1));  // two of three
    const int kFlood = 20'000;
    for (int i = 0; i < kFlood; ++i) {
      const std::string ip = absl::StrCat("10.", i / 65536, ".", i / 256 % 256, ".", i % 256);
      if (!late) {  // three of the flood rule's 120
        const std::string m = absl::StrCat("GET from ", ip);
        for (int j = 0; j < 3; ++j) {
          count(m, t0_ + absl::Seconds(2) + absl::Milliseconds(3 * i + j));
        }
      } else {  // six of sshd's, an hour apart, late lines: one within a span of the newest
        for (int h = 6; h >= 1; --h) count(Fail(ip), t0_ + absl::Hours(h) + absl::Milliseconds(i));
      }
    }
    ASSERT_GE(engine.stats().memory_evicted_windows, static_cast<uint64_t>(kFlood) / 2) << late;
    ASSERT_THAT(out, IsEmpty()) << late;
    count(Fail("203.0.113.7"), t0_ + absl::Seconds(100));
    EXPECT_THAT(out, SizeIs(1)) << "the guesser at 2 of 3 was evicted; late: " << late;
    if (!out.empty()) {
      EXPECT_EQ(out[0].key, "203.0.113.7");
    }
  }
}

// Across rules the budget ranks by the share of the threshold still missing, not the count:
// junk of one line per address on sshd's rule (2 of 3 short) goes before a real web flood at
// 100 of 120 (20 short, a sixth), else web-request-flood's windows always went first and a
// flood hiding among sshd junk never fired.
TEST_F(EngineTest, BudgetEvictionKeepsAFloodNearItsHighThresholdOverOneMatchJunk) {
  EngineOptions options;
  options.memory_budget_bytes = 1 << 20;
  Engine engine(Rules(kSshAndFlood), options);
  ParsedLine line;
  std::vector<Detection> out;
  auto count = [&](const std::string& m, absl::Time t) {
    line.message = m;
    engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t, &out);
  };
  const std::string flood = "GET from 203.0.113.80";
  for (int i = 0; i < 100; ++i) count(flood, t0_ + absl::Milliseconds(i));
  const int kJunk = 20'000;
  for (int i = 0; i < kJunk; ++i) {
    count(Fail(absl::StrCat("10.", i / 65536, ".", i / 256 % 256, ".", i % 256)),
          t0_ + absl::Seconds(1) + absl::Milliseconds(i));
  }
  ASSERT_GE(engine.stats().memory_evicted_windows, static_cast<uint64_t>(kJunk) / 2);
  ASSERT_THAT(out, IsEmpty());
  for (int i = 0; i < 20; ++i) count(flood, t0_ + absl::Seconds(30) + absl::Milliseconds(i));
  ASSERT_THAT(out, SizeIs(1)) << "the flood window at 100 of 120 was evicted";
  EXPECT_EQ(out[0].rule_id, "flood");
  EXPECT_EQ(out[0].key, "203.0.113.80");
}

// A window's nearness to its threshold is the most matches it holds within any one span, not
// those within a span of its newest: one line dated an hour ahead must not strip a guesser at
// 2 of 3 of its place behind one-match windows (by the key cap and by the budget alike).
TEST_F(EngineTest, EvictionRanksAWindowByItsBestSpanNotByItsNewestMatch) {
  for (bool by_budget : {false, true}) {
    EngineOptions options;
    if (by_budget) {
      options.memory_budget_bytes = 1 << 20;
    } else {
      options.max_keys_per_rule = 100;
    }
    Engine engine(Rules(), options);
    ParsedLine line;
    line.program = "sshd";
    std::vector<Detection> out;
    auto count = [&](const std::string& ip, absl::Time t) {
      const std::string m = Fail(ip);
      line.message = m;
      engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t, &out);
    };
    count("203.0.113.7", t0_);
    count("203.0.113.7", t0_ + absl::Milliseconds(1));  // two of three
    count("203.0.113.7", t0_ + absl::Hours(1));         // and one dated an hour ahead
    const int kFlood = 20'000;
    for (int i = 0; i < kFlood; ++i) {
      count(absl::StrCat("10.", i / 65536, ".", i / 256 % 256, ".", i % 256),
            t0_ + absl::Milliseconds(2 + i));
    }
    const EngineStats stats = engine.stats();
    ASSERT_GE(by_budget ? stats.memory_evicted_windows : stats.evicted_windows,
              static_cast<uint64_t>(kFlood) / 2)
        << by_budget;
    ASSERT_THAT(out, IsEmpty()) << by_budget;
    count("203.0.113.7", t0_ + absl::Seconds(30));
    ASSERT_THAT(out, SizeIs(1)) << "the guesser at 2 of 3 was evicted; by budget: " << by_budget;
    EXPECT_EQ(out[0].key, "203.0.113.7");
  }
}

TEST_F(EngineTest, SnapshotRestoresWindowsAcrossARestart) {
  Feed(Fail("203.0.113.7"), 0);
  Feed(Fail("203.0.113.7"), 1);  // one short of the threshold
  palisade::v1::EngineSnapshot snapshot = engine_.Snapshot();
  ASSERT_EQ(snapshot.windows_size(), 1);
  Engine restarted(Rules(), EngineOptions());
  restarted.Restore(snapshot);
  ParsedLine line;
  line.program = "sshd";
  std::string m = Fail("203.0.113.7");
  line.message = m;
  std::vector<Detection> out;
  restarted.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t0_ + absl::Seconds(2), &out);
  EXPECT_THAT(out, SizeIs(1));
}

// A restart restores a rule's windows only when they count the same thing, as a reload keeps
// them (SetRules): a pack that turned a rule's key from a PATH into an address (same id) must
// not turn a path an attacker chose ("203.0.113.5") into an address one match from a ban. The
// snapshot says what each window counted; one written before it said (the fields absent) is
// not restored: what its rule counted is unknown.
TEST_F(EngineTest, RestoreSkipsWindowsOfARuleWhoseKeyKindOrKeyCaptureChanged) {
  const auto pack = [](absl::string_view kind, absl::string_view key) {
    return absl::Substitute(R"pb(
      rules {
        id: "r"
        formats: LOG_FORMAT_RAW
        key_kind: $0
        key: "$1"
        patterns: "^x (?P<a>\\S+) (?P<b>\\S+)$$"
        threshold {
          count: 3
          window { seconds: 600 }
        }
        decision {
          action: ACTION_BLOCK
          duration { seconds: 600 }
        }
      }
    )pb",
                            kind, key);
  };
  const auto feed = [&](Engine& engine, const std::string& raw, int offset_seconds) {
    ParsedLine line;
    line.message = raw;
    std::vector<Detection> out;
    engine.Process(LogFormat::LOG_FORMAT_RAW, line, raw, t0_ + absl::Seconds(offset_seconds),
                   &out);
    return out;
  };
  const auto two_of_three = [&](absl::string_view kind, absl::string_view key) {
    Engine engine(Rules(pack(kind, key)), EngineOptions());
    feed(engine, "x 203.0.113.5 198.51.100.1", 0);
    feed(engine, "x 203.0.113.5 198.51.100.1", 1);
    palisade::v1::EngineSnapshot snapshot = engine.Snapshot();
    EXPECT_EQ(snapshot.windows_size(), 1);
    return snapshot;
  };
  {  // PATH, then IP, from the same capture.
    Engine restarted(Rules(pack("TARGET_KIND_IP", "a")), EngineOptions());
    restarted.Restore(two_of_three("TARGET_KIND_PATH", "a"));
    EXPECT_EQ(restarted.live_windows(), 0u);
    EXPECT_THAT(feed(restarted, "x 203.0.113.5 198.51.100.1", 2), IsEmpty());
  }
  {  // IP from capture a, then from capture b.
    Engine restarted(Rules(pack("TARGET_KIND_IP", "b")), EngineOptions());
    restarted.Restore(two_of_three("TARGET_KIND_IP", "a"));
    EXPECT_EQ(restarted.live_windows(), 0u);
    EXPECT_THAT(feed(restarted, "x 198.51.100.2 203.0.113.5", 2), IsEmpty());
  }
  {  // Unchanged: restored, as before.
    Engine restarted(Rules(pack("TARGET_KIND_IP", "a")), EngineOptions());
    restarted.Restore(two_of_three("TARGET_KIND_IP", "a"));
    EXPECT_THAT(feed(restarted, "x 203.0.113.5 198.51.100.1", 2), SizeIs(1));
  }
  {  // Unchanged, but written before the snapshot said what it counted: not restored.
    palisade::v1::EngineSnapshot old = two_of_three("TARGET_KIND_IP", "a");
    for (auto& w : *old.mutable_windows()) w = MakeLegacy(w);
    Engine restarted(Rules(pack("TARGET_KIND_IP", "a")), EngineOptions());
    EXPECT_EQ(restarted.Restore(old), 1u);  // the count skipped, for the log
    EXPECT_EQ(restarted.live_windows(), 0u);
  }
  {  // The same, the caller knowing the rules are those it was taken under: restored.
    palisade::v1::EngineSnapshot old = two_of_three("TARGET_KIND_IP", "a");
    for (auto& w : *old.mutable_windows()) w = MakeLegacy(w);
    Engine restarted(Rules(pack("TARGET_KIND_IP", "a")), EngineOptions());
    EXPECT_EQ(restarted.Restore(old, absl::InfinitePast(), Engine::UnmarkedWindows::kTrust), 0u);
    EXPECT_THAT(feed(restarted, "x 203.0.113.5 198.51.100.1", 2), SizeIs(1));
  }
  {  // Trust covers only windows that do not say: one that says it counted a PATH is skipped.
    Engine restarted(Rules(pack("TARGET_KIND_IP", "a")), EngineOptions());
    EXPECT_EQ(restarted.Restore(two_of_three("TARGET_KIND_PATH", "a"), absl::InfinitePast(),
                                Engine::UnmarkedWindows::kTrust),
              1u);
    EXPECT_EQ(restarted.live_windows(), 0u);
  }
}

TEST_F(EngineTest, RestoreKeepsTheKeyCap) {
  // A state file written under a larger cap (the operator lowered max_keys_per_rule, or an
  // attacker's flood was saved) is restored within the cap, as Count would have kept it.
  for (int i = 0; i < 300; ++i) Feed(Fail(absl::StrCat("10.4.", i / 256, ".", i % 256)), i);
  const palisade::v1::EngineSnapshot snapshot = engine_.Snapshot();
  ASSERT_EQ(snapshot.windows_size(), 300);
  EngineOptions options;
  options.max_keys_per_rule = 100;
  Engine restarted(Rules(), options);
  restarted.Restore(snapshot);
  EXPECT_LE(restarted.live_windows(), 100u);
  EXPECT_GE(restarted.stats().evicted_windows, 200u);
}

TEST_F(EngineTest, TheCapIsPerRuleNotPerShard) {
  // Under the cap nothing is evicted, however the keys spread over shards.
  EngineOptions options;
  options.max_keys_per_rule = 2000;
  Engine engine(Rules(), options);
  ParsedLine line;
  line.program = "sshd";
  std::vector<Detection> out;
  for (int i = 0; i < 2000; ++i) {
    std::string m = Fail(absl::StrCat("10.1.", i / 256, ".", i % 256));
    line.message = m;
    engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t0_, &out);
  }
  EXPECT_EQ(engine.live_windows(), 2000u);
  EXPECT_EQ(engine.stats().evicted_windows, 0u);
}

TEST_F(EngineTest, ReloadKeepsWindowsOfUnchangedRules) {
  Feed(Fail("203.0.113.7"), 0);
  Feed(Fail("203.0.113.7"), 1);
  engine_.SetRules(Rules());
  EXPECT_THAT(Feed(Fail("203.0.113.7"), 2), SizeIs(1));
}

// A reload that adds a rule ahead of a kept one moves the kept rule to another index: its
// windows must move with it to where that index's lookups go (the shard is picked from the rule
// index and the key), else each address starts counting again from nothing.
TEST_F(EngineTest, ReloadKeepsWindowsOfARuleWhoseIndexMoved) {
  std::vector<std::string> addresses;
  for (int i = 1; i <= 16; ++i) addresses.push_back(absl::StrCat("203.0.113.", i));
  for (const std::string& a : addresses) {
    Feed(Fail(a), 0);
    Feed(Fail(a), 1);
  }
  engine_.SetRules(Rules(absl::StrCat(NothingRule("first-now"), kPack)));
  ASSERT_EQ(engine_.rules()->rules()[1]->id(), "ssh-fail");
  EXPECT_EQ(engine_.live_windows(), addresses.size());
  for (const std::string& a : addresses) {
    EXPECT_THAT(Feed(Fail(a), 2), SizeIs(1)) << a;
  }
}

// A reload keeps a rule's windows only when they count the same thing: the same key kind read
// from the same capture. Else the counts of one (a PATH key "203.0.113.5" an attacker chose, a
// capture holding another field) would become counts of addresses, one match from a ban.
TEST_F(EngineTest, ReloadDropsWindowsOfARuleWhoseKeyKindOrKeyCaptureChanged) {
  const auto pack = [](absl::string_view kind, absl::string_view key) {
    return absl::Substitute(R"pb(
      rules {
        id: "r"
        formats: LOG_FORMAT_RAW
        key_kind: $0
        key: "$1"
        patterns: "^x (?P<a>\\S+) (?P<b>\\S+)$$"
        threshold {
          count: 3
          window { seconds: 600 }
        }
        decision {
          action: ACTION_BLOCK
          duration { seconds: 600 }
        }
      }
    )pb",
                            kind, key);
  };
  const auto feed = [&](Engine& engine, const std::string& raw, int offset_seconds) {
    ParsedLine line;
    line.message = raw;
    std::vector<Detection> out;
    engine.Process(LogFormat::LOG_FORMAT_RAW, line, raw, t0_ + absl::Seconds(offset_seconds),
                   &out);
    return out;
  };
  {  // PATH, then IP, from the same capture.
    Engine engine(Rules(pack("TARGET_KIND_PATH", "a")), EngineOptions());
    feed(engine, "x 203.0.113.5 y", 0);
    feed(engine, "x 203.0.113.5 y", 1);
    engine.SetRules(Rules(pack("TARGET_KIND_IP", "a")));
    EXPECT_THAT(feed(engine, "x 203.0.113.5 y", 2), IsEmpty());
  }
  {  // IP from capture a, then from capture b.
    Engine engine(Rules(pack("TARGET_KIND_IP", "a")), EngineOptions());
    feed(engine, "x 203.0.113.5 198.51.100.1", 0);
    feed(engine, "x 203.0.113.5 198.51.100.1", 1);
    engine.SetRules(Rules(pack("TARGET_KIND_IP", "b")));
    EXPECT_THAT(feed(engine, "x 198.51.100.2 203.0.113.5", 2), IsEmpty());
  }
  {  // Unchanged: kept, as before.
    Engine engine(Rules(pack("TARGET_KIND_IP", "a")), EngineOptions());
    feed(engine, "x 203.0.113.5 198.51.100.1", 0);
    feed(engine, "x 203.0.113.5 198.51.100.1", 1);
    engine.SetRules(Rules(pack("TARGET_KIND_IP", "a")));
    EXPECT_THAT(feed(engine, "x 203.0.113.5 198.51.100.1", 2), SizeIs(1));
  }
}

TEST_F(EngineTest, TokenKeysAreFingerprintsAndEvidenceIsRedacted) {
  constexpr absl::string_view kTokenPack = R"pb(
    rules {
      id: "tok"
      formats: LOG_FORMAT_RAW
      key: "token"
      key_kind: TARGET_KIND_TOKEN_FINGERPRINT
      patterns: "Bearer (?P<token>[A-Za-z0-9_-]{40,})"
      threshold { count: 1 }
      decision {
        action: ACTION_REVOKE_TOKEN
        duration { seconds: 60 }
      }
    }
  )pb";
  Engine engine(Rules(kTokenPack), EngineOptions());
  const std::string token = "cfut_0123456789abcdefghijABCDEFGHIJ0123456789";
  const std::string raw = "curl -H 'Authorization: Bearer " + token + "' https://x";
  ParsedLine line;
  line.message = raw;
  std::vector<Detection> out;
  engine.Process(LogFormat::LOG_FORMAT_RAW, line, raw, t0_, &out);
  ASSERT_THAT(out, SizeIs(1));
  EXPECT_EQ(out[0].key.substr(0, 7), "sha256:");
  EXPECT_EQ(out[0].secret, token);
  ASSERT_THAT(out[0].evidence, SizeIs(1));
  EXPECT_EQ(out[0].evidence[0].find(token), std::string::npos);
  EXPECT_NE(out[0].evidence[0].find("[token sha256:"), std::string::npos);
  EXPECT_EQ(out[0].rule->proto.decision().actuator(), palisade::v1::ACTUATOR_TOKEN_REVOCATION);
}

// The token pack's two patterns (rules/cloudflare-tokens.textproto) beside an sshd rule that
// keeps its evidence in a window.
constexpr absl::string_view kTokensAndSshPack = R"pb(
  rules {
    id: "cloudflare-token-leaked"
    formats: LOG_FORMAT_SYSLOG
    key: "token"
    key_kind: TARGET_KIND_TOKEN_FINGERPRINT
    patterns: "(?:^|[^A-Za-z0-9_])(?P<token>cf[ua]t_[A-Za-z0-9]{40})(?:[^A-Za-z0-9_-]|$)"
    patterns: "(?i)(?:authorization:\\s*bearer\\s+|cf_api_token=|cloudflare_api_token=|[?&]cf_token=)(?P<token>[A-Za-z0-9_-]{40})(?:[^A-Za-z0-9_-]|$)"
    threshold { count: 1 }
    decision {
      action: ACTION_REVOKE_TOKEN
      duration { seconds: 60 }
    }
  }
  rules {
    id: "ssh-invalid-user"
    formats: LOG_FORMAT_SYSLOG
    patterns: "^Failed password for invalid user \\S+ from (?P<ip>\\S+) port \\d+ ssh2$"
    threshold {
      count: 2
      window { seconds: 60 }
    }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 60 }
    }
  }
)pb";

constexpr char kTokenA[] = "cfut_Q3vX8mK2pL9nR4tY7wZ1aB5cD6eF0gH3jK8mN2pQ";
constexpr char kTokenB[] = "cfat_z9Y8x7W6v5U4t3S2r1Q0p9O8n7M6l5K4j3I2h1G0";
constexpr char kTokenOld[] = "Zx8Kq2Lm9Np4Rt7Vw1Ya5Bc6De0Fg3Hj8Km2Np4Q";

TEST_F(EngineTest, EveryTokenOnALineIsDetectedAndRedacted) {
  Engine engine(Rules(kTokensAndSshPack), EngineOptions());
  // Three tokens, two shapes, one separator apart; the first is repeated.
  const std::string raw = absl::StrCat("deploy: ", kTokenA, " ", kTokenB, " GET /h?cf_token=",
                                       kTokenOld, " again ", kTokenA);
  ParsedLine line;
  line.message = raw;
  std::vector<Detection> out;
  engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, raw, t0_, &out);
  ASSERT_THAT(out, SizeIs(3));
  std::vector<std::string> secrets;
  for (const Detection& d : out) {
    secrets.push_back(d.secret);
    ASSERT_THAT(d.evidence, SizeIs(1));
    for (const char* t : {kTokenA, kTokenB, kTokenOld}) {
      EXPECT_EQ(d.evidence[0].find(t), std::string::npos) << d.evidence[0];
    }
  }
  EXPECT_THAT(secrets, ::testing::UnorderedElementsAre(kTokenA, kTokenB, kTokenOld));
}

TEST_F(EngineTest, TokensInOtherRulesEvidenceAreRedacted) {
  Engine engine(Rules(kTokensAndSshPack), EngineOptions());
  std::vector<Detection> out;
  for (int i = 0; i < 2; ++i) {
    // A token pasted as the user name: the sshd rule keeps the line in its window.
    const std::string raw = absl::StrCat("Failed password for invalid user ", kTokenA,
                                         " from 203.0.113.9 port 22 ssh2");
    ParsedLine line;
    line.message = raw;
    engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, raw, t0_ + absl::Seconds(i), &out);
  }
  std::vector<const Detection*> ssh;
  for (const Detection& d : out) {
    if (d.rule_id == "ssh-invalid-user") ssh.push_back(&d);
    for (const std::string& e : d.evidence) {
      EXPECT_EQ(e.find(kTokenA), std::string::npos) << d.rule_id << ": " << e;
      EXPECT_NE(e.find("[token sha256:"), std::string::npos) << e;
    }
  }
  ASSERT_THAT(ssh, SizeIs(1));
  EXPECT_EQ(ssh[0]->key, "203.0.113.9");
  EXPECT_THAT(ssh[0]->evidence, SizeIs(2));
  EXPECT_TRUE(ssh[0]->secret.empty());
}

// One raw sshd rule keyed by the address, no token rule; and 40 bytes of [A-Za-z0-9_-], a
// token's shortest shape.
constexpr absl::string_view kSshOnly = R"pb(
  rules {
    id: "ssh-fail"
    formats: LOG_FORMAT_RAW
    patterns: "^Failed password for (?P<user>.*?) from (?P<ip>[0-9.]+) port \\d+ ssh2$"
    threshold { count: 1 }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 60 }
    }
  }
)pb";
constexpr absl::string_view kFortyTokenBytes = "Ab0_-Cd1Ef2Gh3Ij4Kl5Mn6Op7Qr8St9Uv0Wx1Yz";

// No token rule loaded: the token shapes (fingerprint.h) still leave every evidence line, at
// their shortest (exactly 40 bytes) and in each form.
TEST_F(EngineTest, TokenShapesAreRedactedWhenNoTokenRuleCounted) {
  Engine engine(Rules(kSshOnly), EngineOptions());
  const std::string forty(kFortyTokenBytes);
  ASSERT_EQ(forty.size(), 40u);
  const std::string alnum = "Ab0Cd1Ef2Gh3Ij4Kl5Mn6Op7Qr8St9Uv0Wx1Yz23";  // 40 alphanumerics
  ASSERT_EQ(alnum.size(), 40u);
  int i = 0;
  for (const std::string& secret :
       {absl::StrCat("cfut_", alnum), absl::StrCat("Authorization: Bearer ", forty),
        absl::StrCat("x?cf_token=", forty), absl::StrCat("cf_api_token=", forty)}) {
    const std::string raw =
        absl::StrCat("Failed password for ", secret, " from 203.0.113.", ++i, " port 22 ssh2");
    const std::vector<std::string> evidence = EvidenceOfRaw(engine, raw);
    ASSERT_THAT(evidence, SizeIs(1)) << raw;
    EXPECT_EQ(evidence[0].find(secret.substr(secret.size() - 40)), std::string::npos)
        << evidence[0];
    EXPECT_NE(evidence[0].find("[token sha256:"), std::string::npos) << raw;
  }
}

// The token-shape gate looks at one byte in 40 first: a shape is found wherever it starts,
// and a run of 39 token bytes is not taken for one.
TEST_F(EngineTest, TokenShapesAreRedactedAtEveryOffset) {
  Engine engine(Rules(kSshOnly), EngineOptions());
  const std::string forty(kFortyTokenBytes);
  ASSERT_EQ(forty.size(), 40u);
  for (size_t pad = 0; pad < 90; ++pad) {
    // Token bytes before the shape too (`pad` of them, after a space): the run is longer.
    for (const std::string& before : {std::string(pad, '.'), std::string(pad, 'x')}) {
      const std::string raw = absl::StrCat("Failed password for ", before,
                                           " Authorization: Bearer ", forty, " from 203.0.113.9",
                                           " port 22 ssh2");
      const std::vector<std::string> evidence = EvidenceOfRaw(engine, raw);
      ASSERT_THAT(evidence, SizeIs(1)) << raw;
      EXPECT_EQ(evidence[0].find(forty), std::string::npos) << evidence[0];
    }
    // 39 token bytes in a row hold no shape: the line is kept as it is.
    const std::string raw = absl::StrCat("Failed password for ", std::string(pad, '.'), " ",
                                         forty.substr(1), " from 203.0.113.9 port 22 ssh2");
    EXPECT_THAT(EvidenceOfRaw(engine, raw), ElementsAre(raw));
  }
}

TEST_F(EngineTest, ConditionsOnOtherCaptures) {
  constexpr absl::string_view kAuditPack = R"pb(
    rules {
      id: "misuse"
      formats: LOG_FORMAT_CLOUDFLARE_AUDIT
      key: "token_id"
      key_kind: TARGET_KIND_TOKEN_ID
      patterns: "ip=(?P<ip>\\S+) token=(?P<token_id>[0-9a-f]{32})"
      conditions { group: "ip" not_in_set: "allowed" }
      threshold { count: 1 }
      decision {
        action: ACTION_REVOKE_TOKEN
        duration { seconds: 60 }
      }
    }
  )pb";
  auto pack = ParseRulePack(kAuditPack, "audit.textproto");
  ASSERT_TRUE(pack.ok()) << pack.status();
  CidrSets sets;
  sets.emplace("allowed", *CidrSet::Parse({"192.0.2.0/24"}));
  auto rules = RuleSet::Compile({*pack}, sets);
  ASSERT_TRUE(rules.ok()) << rules.status();
  Engine engine(*rules, EngineOptions());
  std::vector<Detection> out;
  for (const std::string raw : {"ip=192.0.2.7 token=0123456789abcdef0123456789abcdef",
                                "ip=not-an-ip token=0123456789abcdef0123456789abcdef",
                                "ip=203.0.113.5 token=0123456789abcdef0123456789abcdef"}) {
    ParsedLine line;
    line.message = raw;
    engine.Process(LogFormat::LOG_FORMAT_CLOUDFLARE_AUDIT, line, raw, t0_, &out);
  }
  ASSERT_THAT(out, SizeIs(1));
  EXPECT_EQ(out[0].key, "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(out[0].kind, palisade::v1::TARGET_KIND_TOKEN_ID);
}

TEST_F(EngineTest, FeedConditionsFollowTheCurrentFeedVersion) {
  constexpr absl::string_view kPack = R"pb(
    rules {
      id: "listed-failure"
      formats: LOG_FORMAT_RAW
      key: "ip"
      patterns: "Failed password for \\S+ from (?P<ip>\\S+)"
      conditions { group: "ip" in_feed: "drop" }
      threshold { count: 1 }
      decision { action: ACTION_BLOCK duration { seconds: 60 } }
    }
    rules {
      id: "unlisted-failure"
      formats: LOG_FORMAT_RAW
      key: "ip"
      patterns: "Failed password for \\S+ from (?P<ip>\\S+)"
      conditions { group: "ip" not_in_feed: "*" }
      threshold { count: 1 }
      decision { action: ACTION_BLOCK duration { seconds: 60 } }
    }
  )pb";
  auto pack = ParseRulePack(kPack, "feeds.textproto");
  ASSERT_TRUE(pack.ok()) << pack.status();
  auto rules = RuleSet::Compile({*pack}, {});
  ASSERT_TRUE(rules.ok()) << rules.status();
  FeedRegistry feeds;
  EngineOptions options;
  options.feeds = &feeds;
  Engine engine(*rules, options);
  std::vector<std::string> last_feeds;
  auto rules_hit = [&](const std::string& ip) {
    std::vector<Detection> out;
    ParsedLine line;
    std::string raw = "Failed password for root from " + ip;
    line.message = raw;
    engine.Process(LogFormat::LOG_FORMAT_RAW, line, raw, t0_, &out);
    std::vector<std::string> ids;
    for (const Detection& d : out) ids.push_back(d.rule_id);
    last_feeds = out.empty() ? std::vector<std::string>() : out[0].feeds;
    return ids;
  };
  EXPECT_THAT(rules_hit("198.51.100.7"), ElementsAre("unlisted-failure"));
  FeedEntry entry;
  entry.cidr = *Cidr::Parse("198.51.100.0/24");
  feeds.Publish("drop", std::make_shared<const FeedSet>(std::vector<FeedEntry>{entry}));
  EXPECT_THAT(rules_hit("198.51.100.8"), ElementsAre("listed-failure"));
  EXPECT_THAT(last_feeds, ElementsAre("drop"));  // the detection is tagged
  EXPECT_THAT(rules_hit("203.0.113.9"), ElementsAre("unlisted-failure"));
  feeds.Publish("drop", nullptr);
  EXPECT_THAT(rules_hit("198.51.100.9"), ElementsAre("unlisted-failure"));
}

// Issue 12 section 4: one 16 KiB line per address cost ~17 KB per live window. A window keeps
// at most max_evidence_bytes of evidence (default 2 KiB): each line is cut to an equal share,
// with a marker saying how much went, and the cut is counted.
TEST_F(EngineTest, EvidenceIsBoundedInBytesPerWindow) {
  Engine engine(Rules(), EngineOptions());
  ParsedLine line;
  line.program = "sshd";
  std::vector<Detection> out;
  const std::string head = Fail("2001:db8::7");
  const std::string m = head + " " + std::string(16 * 1024, 'A');
  line.message = m;
  for (int i = 0; i < 2; ++i) {
    engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t0_ + absl::Seconds(i), &out);
  }
  // Two 16 KiB lines in one window: the engine holds a few KiB in all (was over 33 KiB).
  EXPECT_LE(engine.memory_bytes(), 4096u);
  EXPECT_GE(engine.memory_bytes(), 2 * 400u);  // the two cut lines are still there
  engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t0_ + absl::Seconds(2), &out);
  ASSERT_THAT(out, SizeIs(1));
  ASSERT_THAT(out[0].evidence, SizeIs(3));
  size_t total = 0;
  for (const std::string& e : out[0].evidence) {
    EXPECT_LE(e.size(), 2048u / 5) << e;
    EXPECT_TRUE(absl::StartsWith(e, head)) << e;  // the part that says who and what is kept
    EXPECT_TRUE(absl::StrContains(e, "bytes cut]")) << e;
    total += e.size();
  }
  EXPECT_LE(total, 2048u);
  EXPECT_EQ(engine.stats().evidence_truncated, 3u);
  // A short line is kept whole and not counted as cut.
  std::vector<Detection> whole = Feed("Did not receive identification string from 203.0.113.5", 0);
  ASSERT_THAT(whole, SizeIs(1));
  EXPECT_EQ(whole[0].evidence[0], "Did not receive identification string from 203.0.113.5");
}

// With many evidence lines allowed, the ring still stays under its byte cap: the oldest lines
// go first, and the line that crossed the threshold is always kept.
TEST_F(EngineTest, EvidenceRingStaysUnderItsByteCap) {
  EngineOptions options;
  options.max_evidence = 100;
  options.max_evidence_bytes = 1024;
  Engine engine(Rules(FailPack("ssh-fail-50", 50)), options);
  ParsedLine line;
  std::vector<Detection> out;
  std::vector<std::string> msgs;
  for (int i = 0; i < 50; ++i) {
    msgs.push_back(absl::StrCat("Failed password for u", i, " from 203.0.113.9 port 22 ssh2 ",
                                std::string(i * 7, 'y')));
    line.message = msgs.back();
    engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, msgs.back(), t0_ + absl::Seconds(i), &out);
  }
  ASSERT_THAT(out, SizeIs(1));
  const std::vector<std::string>& ev = out[0].evidence;
  ASSERT_FALSE(ev.empty());
  EXPECT_LT(ev.size(), 50u);
  size_t total = 0;
  for (const std::string& e : ev) total += e.size() + kRecordHeader;
  EXPECT_LE(total, 1024u);
  // The newest lines, in order, ending with the one that crossed the threshold; each keeps at
  // least its first 40 bytes (the line's share is the 64-byte minimum here).
  for (size_t k = 0; k < ev.size(); ++k) {
    EXPECT_TRUE(absl::StartsWith(ev[k], absl::StrCat("Failed password for u",
                                                     50 - ev.size() + k, " from ")))
        << k << ": " << ev[k];
  }
}

// The ring keeps what a queue would: the newest lines under both caps (count and bytes),
// oldest first. Lines of random lengths make its records wrap at every offset of the buffer.
// Once with an address key (held in the window) and once with a 42-byte path (in its buffer).
TEST_F(EngineTest, EvidenceRingKeepsTheNewestLinesAsAQueueWould) {
  for (bool long_key : {false, true}) {
    EngineOptions options;
    options.max_evidence = 5;
    options.max_evidence_bytes = 300;  // lines up to 64 bytes are kept whole (the minimum share)
    Engine engine(Rules(long_key ? std::string(R"pb(
      rules {
        id: "path-40"
        formats: LOG_FORMAT_SYSLOG
        key_kind: TARGET_KIND_PATH
        key: "path"
        patterns: "^GET (?P<path>\\S+) "
        threshold {
          count: 40
          window { seconds: 600 }
        }
        decision {
          action: ACTION_RATE_LIMIT
          duration { seconds: 600 }
        }
      }
    )pb")
                                 : FailPack("ssh-fail-40", 40)),
                  options);
    const std::string key = long_key ? "/" + std::string(41, 'p') : "203.0.113.9";
    std::mt19937 random(7);
    std::deque<std::string> model;
    size_t model_bytes = 0;
    ParsedLine line;
    std::vector<Detection> out;
    int detections = 0;
    for (int i = 0; i < 2000; ++i) {
      std::string m = long_key ? absl::StrCat("GET ", key, " ", i % 10, " ")
                               : absl::StrCat("Failed password for u", i % 10, " from ", key,
                                              " port 22 ");
      m += std::string(random() % 16, 'y');
      ASSERT_LE(m.size(), 64u);
      const size_t record = m.size() + kRecordHeader;
      while (!model.empty() && (model.size() >= 5 || model_bytes + record > 300)) {
        model_bytes -= model.front().size() + kRecordHeader;
        model.pop_front();
      }
      model.push_back(m);
      model_bytes += record;
      line.message = m;
      out.clear();
      engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t0_ + absl::Milliseconds(i), &out);
      if ((i + 1) % 40 != 0) {
        ASSERT_THAT(out, IsEmpty()) << i;
        continue;
      }
      ASSERT_THAT(out, SizeIs(1)) << i;
      ++detections;
      EXPECT_EQ(out[0].key, key);
      EXPECT_EQ(out[0].evidence, std::vector<std::string>(model.begin(), model.end())) << i;
      model.clear();
      model_bytes = 0;
    }
    EXPECT_EQ(detections, 50) << long_key;
    EXPECT_EQ(engine.live_windows(), 1u);
  }
}

// A window keeps the lines only of the matches that can be in its detection's evidence (its
// last max_evidence): under the threshold by more than that, a window holds no line, whatever
// their length. (Every match's line was copied: with web-request-flood's 120 a third of an
// access line's cost, PERFORMANCE.md "Seventeenth pass".)
// The Prematch of many lines walks a Set's lines side by side where its walks on the calling
// thread are long (Engine::WalksSideBySide, EngineOptions::walk_ahead_bytes): yes before the
// thread walked the Set, no once its walks end in a message's first bytes, yes again once they
// read long messages to their end. Each on a thread of its own (a thread's caches are its own).
TEST_F(EngineTest, ASetIsWalkedSideBySideWhereItsWalksAreLong) {
  Engine engine(Rules(), EngineOptions());
  auto walk = [&](absl::string_view message, int times) {
    ParsedLine line;
    line.message = message;
    line.program = "sshd";
    std::vector<Detection> out;
    for (int i = 0; i < times; ++i) {
      engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, message, t0_, &out);
    }
  };
  std::thread([&] {
    EXPECT_TRUE(engine.WalksSideBySide(LogFormat::LOG_FORMAT_SYSLOG));
    walk("Fxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 100);
    EXPECT_FALSE(engine.WalksSideBySide(LogFormat::LOG_FORMAT_SYSLOG));
    EXPECT_FALSE(engine.WalksSideBySide(LogFormat::LOG_FORMAT_RAW));  // no rule reads it
    walk(absl::StrCat("Failed password for ", std::string(200, 'a')), 100);
    EXPECT_TRUE(engine.WalksSideBySide(LogFormat::LOG_FORMAT_SYSLOG));
  }).join();
  EngineOptions always;
  always.walk_ahead_bytes = 0;
  Engine other(Rules(), always);
  std::thread([&] {
    ParsedLine line;
    line.message = "Fx";
    line.program = "sshd";
    std::vector<Detection> out;
    for (int i = 0; i < 100; ++i) {
      other.Process(LogFormat::LOG_FORMAT_SYSLOG, line, line.message, t0_, &out);
    }
    EXPECT_TRUE(other.WalksSideBySide(LogFormat::LOG_FORMAT_SYSLOG));
  }).join();
}

TEST_F(EngineTest, AWindowKeepsOnlyTheLinesItsDetectionCanShow) {
  auto memory_after = [&](size_t tail, int matches, std::vector<Detection>* out) {
    Engine engine(Rules(FailPack("ssh-fail-40", 40)), EngineOptions());  // 5 evidence lines
    ParsedLine line;
    for (int i = 0; i < matches; ++i) {
      const std::string m = absl::StrCat("Failed password for u", i, " from 203.0.113.9 port 22 ",
                                         std::string(tail, 'y'));
      line.message = m;
      engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t0_ + absl::Seconds(i), out);
    }
    return engine.memory_bytes();
  };
  std::vector<Detection> out;
  // 35 matches: the 36th is the first that can be shown; lines of 50 or 350 bytes cost the same.
  EXPECT_EQ(memory_after(300, 35, &out), memory_after(0, 35, &out));
  EXPECT_GT(memory_after(300, 36, &out), memory_after(0, 36, &out) + 250);
  ASSERT_THAT(out, IsEmpty());
  memory_after(0, 40, &out);
  ASSERT_THAT(out, SizeIs(1));
  ASSERT_THAT(out[0].evidence, SizeIs(5));
  for (int k = 0; k < 5; ++k) {
    EXPECT_TRUE(absl::StartsWith(out[0].evidence[k], absl::StrCat("Failed password for u", 35 + k,
                                                                  " from ")))
        << out[0].evidence[k];
  }
}

// The line is made evidence (tokens hidden, cut to its share) only when a window keeps it: the
// 35 counts that keep nothing cut nothing, and the five kept lines still hide their tokens.
TEST_F(EngineTest, OnlyTheLinesAWindowKeepsAreRedactedAndCut) {
  Engine engine(Rules(FailPack("ssh-fail-40", 40)), EngineOptions());  // 5 evidence lines
  const std::string token = absl::StrCat("cfut_", std::string(40, 'Q'));
  std::vector<Detection> out;
  ParsedLine line;
  for (int i = 0; i < 40; ++i) {
    // Past a line's share of the ring (2048 / 5 bytes): every kept line is cut.
    const std::string m = absl::StrCat("Failed password for ", token, " from 203.0.113.9 port 22 ",
                                       std::string(600, 'y'));
    line.message = m;
    engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t0_ + absl::Seconds(i), &out);
    if (i == 34) {
      EXPECT_EQ(engine.stats().evidence_truncated, 0u);
    }
  }
  EXPECT_EQ(engine.stats().evidence_truncated, 5u);
  ASSERT_THAT(out, SizeIs(1));
  ASSERT_THAT(out[0].evidence, SizeIs(5));
  for (const std::string& e : out[0].evidence) {
    EXPECT_EQ(e.find(token), std::string::npos) << e;
    EXPECT_NE(e.find("[token sha256:"), std::string::npos) << e;
    EXPECT_TRUE(absl::StrContains(e, "bytes cut]")) << e;
  }
}

// A detection is a run of `count` matches within a span, and its evidence the lines of the run's
// newest max_evidence matches, oldest first. A model keeping every match's line (its window
// trimmed as Count trims its times: a slide on a line in order, the cap of twice the threshold
// on the others) against the engine, over random gaps that slide the window, late lines and
// lines dated ahead. The evidence is never a line outside the run; it is exactly the model's
// when no line came out of order since the window last detected (a late line can make a match
// one of the newest of a run after its line was not kept, or take the place of one in the ring:
// the evidence then shows fewer or older lines of the run, never another's). And the bytes the
// engine accounts are what a recount of its windows finds, after every line.
TEST_F(EngineTest, EvidenceIsTheNewestLinesOfTheRunThatFiredWithSlidesAndLinesOutOfOrder) {
  EngineOptions options;
  options.max_evidence = 3;
  std::shared_ptr<const RuleSet> rules = Rules(R"pb(
    rules {
      id: "ssh-fail-8"
      formats: LOG_FORMAT_SYSLOG
      patterns: "^Failed password for (?P<user>\\S+) from (?P<ip>\\S+) port"
      threshold {
        count: 8
        window { seconds: 10 }
      }
      decision {
        action: ACTION_BLOCK
        duration { seconds: 600 }
      }
    }
  )pb");
  Engine engine(rules, options);
  constexpr int64_t kSpan = 10'000;
  constexpr size_t kCount = 8;
  struct Match {
    int64_t time;
    std::string line;
  };
  std::vector<Match> window;  // the model's, in time order (lines of one time as they came)
  std::mt19937 random(11);
  int64_t clock = 0;
  bool out_of_order = false;  // a line out of order since the last detection
  int detections = 0, exact = 0, with_late = 0;
  ParsedLine line;
  for (int i = 0; i < 5000; ++i) {
    clock += random() % 4 == 0 ? random() % 12'000 : random() % 900;
    // One line in six comes up to 3 s late, one in forty from 15 to 40 s ahead.
    int64_t now = clock;
    const int kind = random() % 40;
    if (kind < 7) now = std::max<int64_t>(0, clock - random() % 3000);
    if (kind == 39) now = clock + 15'000 + random() % 25'000;
    const std::string m = absl::StrCat("Failed password for u", i, " from 203.0.113.9 port 22");
    line.message = m;
    std::vector<Detection> out;
    engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t0_ + absl::Milliseconds(now), &out);
    // The model: Count's times, with every line.
    bool full = false;
    size_t run = 0;  // the run's first match
    if (window.empty() || (now >= window.back().time && now - window.back().time <= kSpan)) {
      while (!window.empty() && window.front().time < now - kSpan) window.erase(window.begin());
      window.push_back({now, m});
      full = window.size() >= kCount;
      run = window.size() - std::min(window.size(), kCount);
    } else {
      out_of_order = true;
      auto at = std::upper_bound(window.begin(), window.end(), now,
                                 [](int64_t t, const Match& x) { return t < x.time; });
      const size_t p = static_cast<size_t>(window.insert(at, {now, m}) - window.begin());
      for (size_t j = p >= kCount - 1 ? p - (kCount - 1) : 0;
           !full && j <= p && j + kCount - 1 < window.size(); ++j) {
        if (window[j + kCount - 1].time - window[j].time <= kSpan) {
          full = true;
          run = j;
        }
      }
      while (!full && window.size() > 2 * kCount) {
        if (now - window.front().time >= window.back().time - now) {
          window.erase(window.begin());
        } else {
          window.pop_back();
        }
      }
    }
    const size_t accounted = engine.memory_bytes();
    engine.SetRules(rules);  // the same rules: the windows stay and are recounted
    ASSERT_EQ(engine.memory_bytes(), accounted) << "after line " << i;
    if (!full) {
      ASSERT_THAT(out, IsEmpty()) << i;
      continue;
    }
    ASSERT_THAT(out, SizeIs(1)) << i;
    ++detections;
    std::vector<std::string> lines;  // the run's, oldest first
    for (size_t j = run; j < run + kCount; ++j) lines.push_back(window[j].line);
    const std::vector<std::string> newest(lines.end() - 3, lines.end());
    const std::vector<std::string>& evidence = out[0].evidence;
    ASSERT_FALSE(evidence.empty()) << i;
    ASSERT_LE(evidence.size(), 3u) << i;
    // A subsequence of the run's lines, in their order.
    auto next = lines.begin();
    for (const std::string& e : evidence) {
      next = std::find(next, lines.end(), e);
      ASSERT_NE(next, lines.end()) << i << ": " << e << " is not a line of the run, in order";
      ++next;
    }
    if (!out_of_order) {
      EXPECT_EQ(evidence, newest) << i;
    } else {
      ++with_late;
    }
    if (evidence == newest) ++exact;
    window.clear();
    out_of_order = false;
  }
  EXPECT_GT(detections, 50);
  EXPECT_GT(detections - with_late, 10);  // both kinds are exercised
  EXPECT_GT(with_late, 10);
  EXPECT_GT(exact, detections * 2 / 3);  // 267 of 357
}

// Every byte the engine accounts for a window (its object, its buffer, its table slot) is given
// back when the window goes, whichever way it goes.
TEST_F(EngineTest, AccountedBytesReturnToZeroWhenWindowsGo) {
  ParsedLine line;
  line.program = "sshd";
  std::vector<Detection> out;
  for (int i = 0; i < 3000; ++i) {
    std::string m = absl::StrCat(Fail(absl::StrCat("10.3.", i / 256, ".", i % 256)), " ",
                                 std::string(i % 900, 'z'));
    line.message = m;
    engine_.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t0_, &out);
  }
  EXPECT_EQ(engine_.live_windows(), 3000u);
  // At least the window object, a buffer and a slot each: honest, not a guess per key.
  EXPECT_GE(engine_.memory_bytes(), 3000u * (64 + 32 + 8));
  EXPECT_EQ(engine_.stats().memory_bytes, engine_.memory_bytes());
  const palisade::v1::EngineSnapshot snapshot = engine_.Snapshot();
  engine_.Expire(t0_ + absl::Hours(1));
  EXPECT_EQ(engine_.live_windows(), 0u);
  EXPECT_EQ(engine_.memory_bytes(), 0u);
  engine_.Restore(snapshot);
  EXPECT_EQ(engine_.live_windows(), 3000u);
  EXPECT_GE(engine_.memory_bytes(), 3000u * (64 + 8));
  engine_.SetRules(Rules(NothingRule("other")));
  EXPECT_EQ(engine_.memory_bytes(), 0u);
}

// The process-wide ceiling: a flood of distinct IPv6 addresses with long lines never takes the
// engine past memory_budget_bytes; the least recently active windows go first (counted), an
// attacker who keeps hitting keeps their window, and the newest keys are still detected.
TEST_F(EngineTest, MemoryBudgetEvictsTheLeastRecentlyActiveAndCountsIt) {
  EngineOptions options;
  options.memory_budget_bytes = 1 << 20;
  Engine engine(Rules(), options);
  ParsedLine line;
  line.program = "sshd";
  std::vector<Detection> out;
  const std::string pad(4096, 'B');
  const std::string steady = Fail("2001:db8:ffff::1");
  int steady_hits = 0;
  const int kFlood = 20'000;
  for (int i = 0; i < kFlood; ++i) {
    const absl::Time t = t0_ + absl::Milliseconds(i);
    std::string m = absl::StrCat(
        Fail(absl::StrFormat("2001:db8:%x:%x::1", i / 65536, i % 65536)), " ", pad);
    line.message = m;
    engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t, &out);
    if (i % 50 == 0) {
      line.message = steady;
      engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, steady, t, &out);
      ++steady_hits;
    }
    // Seven eighths: the rest of the budget is left to the allocator's slack.
    ASSERT_LE(engine.memory_bytes(), options.memory_budget_bytes / 8 * 7) << "after line " << i;
  }
  EXPECT_LT(engine.live_windows(), static_cast<size_t>(kFlood));
  EXPECT_GE(engine.memory_bytes(), options.memory_budget_bytes / 2);  // the budget is used
  EXPECT_GE(engine.stats().memory_evicted_windows, static_cast<uint64_t>(kFlood) / 2);
  EXPECT_EQ(engine.stats().evicted_windows, 0u);  // the key cap was never the reason
  // The steady attacker was never evicted: every third hit was a detection.
  size_t steady_detections = 0;
  for (const Detection& d : out) steady_detections += d.key == "2001:db8:ffff::1";
  EXPECT_EQ(steady_detections, static_cast<size_t>(steady_hits / 3));
  // The newest flood key kept its window: two more matches reach the threshold.
  out.clear();
  std::string newest =
      Fail(absl::StrFormat("2001:db8:%x:%x::1", (kFlood - 1) / 65536, (kFlood - 1) % 65536));
  line.message = newest;
  for (int i = 0; i < 2; ++i) {
    engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, newest, t0_ + absl::Seconds(30), &out);
  }
  ASSERT_THAT(out, SizeIs(1));
  EXPECT_EQ(out[0].key, absl::StrFormat("2001:db8:%x:%x::1", (kFlood - 1) / 65536,
                                        (kFlood - 1) % 65536));
}

TEST_F(EngineTest, NoRuleForFormatMatchesNothing) {
  ParsedLine line;
  const std::string message = Fail("203.0.113.7");  // outlives the view (ASan found it did not)
  line.message = message;
  std::vector<Detection> out;
  LineResult r = engine_.Process(LogFormat::LOG_FORMAT_COMBINED, line, line.message, t0_, &out);
  EXPECT_FALSE(r.matched);
}

}  // namespace
}  // namespace palisade

namespace palisade {
namespace {

// Rule.programs filters syslog lines only: a web rule listing "nginx" for its syslog-relayed form
// still matches the plain access log (which names no program).
TEST(EngineProgramsTest, ProgramsFilterSyslogLinesOnly) {
  auto pack = ParseRulePack(R"pb(
    rules {
      id: "web"
      formats: [LOG_FORMAT_COMBINED, LOG_FORMAT_SYSLOG]
      programs: "nginx"
      patterns: "^(?P<ip>[0-9.]+) - - \\[[^\\]]*\\] \"GET /\\.env"
      threshold { count: 1 }
      decision { action: ACTION_BLOCK duration { seconds: 60 } }
    }
  )pb", "p.textproto");
  ASSERT_TRUE(pack.ok()) << pack.status();
  Engine engine(*RuleSet::Compile({*pack}), EngineOptions());
  const std::string access = "203.0.113.7 - - [03/Mar/2026:14:02:01 +0000] \"GET /.env HTTP/1.1\" 404 1";
  auto keys = [&](LogFormat format, absl::string_view program) {
    ParsedLine line;
    line.message = access;
    line.program = program;
    std::vector<std::string> out;
    engine.MatchOnly(format, line, [&](const CompiledRule&, absl::string_view k) { out.emplace_back(k); });
    return out;
  };
  EXPECT_THAT(keys(LogFormat::LOG_FORMAT_COMBINED, ""), ElementsAre("203.0.113.7"));
  EXPECT_THAT(keys(LogFormat::LOG_FORMAT_SYSLOG, "nginx"), ElementsAre("203.0.113.7"));
  EXPECT_THAT(keys(LogFormat::LOG_FORMAT_SYSLOG, "sshd"), IsEmpty());
}

}  // namespace
}  // namespace palisade

namespace palisade {
namespace {

// Count converts a line's time and the rule's window to milliseconds with absl's fast path
// written out (Debian's shared absl keeps ToUnixMillis and ToInt64Milliseconds out of line):
// a second match falls in the window exactly when absl's own conversions say it does, for
// times with any fraction of a millisecond, before 1970, and past 2^53 seconds (absl's slow
// path), and windows with a fraction of a millisecond.
TEST(EngineMillisTest, TheWindowEdgeIsWhereAbslsMillisecondsPutIt) {
  std::mt19937_64 rng(53);
  for (int w = 0; w < 6; ++w) {
    const int64_t window_s = static_cast<int64_t>(rng() % 4) * (w < 3 ? 1 : 1000);
    const int32_t window_ns = static_cast<int32_t>(rng() % 1'000'000'000);
    auto pack = ParseRulePack(absl::Substitute(R"pb(
      rules {
        id: "edge"
        formats: LOG_FORMAT_SYSLOG
        patterns: "^Failed password for (?P<user>\\S+) from (?P<ip>\\S+) port"
        threshold {
          count: 2
          window { seconds: $0 nanos: $1 }
        }
        decision { action: ACTION_BLOCK duration { seconds: 600 } }
      }
    )pb", window_s, window_ns), "edge.textproto");
    ASSERT_TRUE(pack.ok()) << pack.status();
    Engine engine(*RuleSet::Compile({*pack}), EngineOptions());
    const absl::Duration window = absl::Seconds(window_s) + absl::Nanoseconds(window_ns);
    int inside = 0;
    int outside = 0;
    for (int i = 0; i < 3000; ++i) {
      absl::Time t1;
      switch (rng() % 4) {
        case 0: t1 = absl::FromUnixSeconds(1'767'225'600); break;
        case 1: t1 = absl::FromUnixSeconds(-static_cast<int64_t>(rng() % 2'000'000'000)); break;
        case 2: t1 = absl::FromUnixSeconds((int64_t{1} << 53) + rng() % 1'000'000); break;
        default: t1 = absl::FromUnixSeconds(static_cast<int64_t>(rng() % 4'000'000'000)); break;
      }
      t1 += absl::Nanoseconds(static_cast<int64_t>(rng() % 1'000'000'000));
      // The second match near the window's edge: within two milliseconds either side.
      const absl::Time t2 =
          t1 + window + absl::Nanoseconds(static_cast<int64_t>(rng() % 4'000'000) - 2'000'000);
      const bool want =
          absl::ToUnixMillis(t1) >= absl::ToUnixMillis(t2) - absl::ToInt64Milliseconds(window);
      const std::string message = absl::StrCat("Failed password for root from 198.51.", i / 256,
                                               ".", i % 256, " port 22 ssh2");
      ParsedLine line;
      line.message = message;
      line.program = "sshd";
      std::vector<Detection> out;
      engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, message, t1, &out);
      engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, message, t2, &out);
      ASSERT_EQ(out.size(), want ? 1u : 0u)
          << "t1 " << absl::FormatTime(t1) << ", t2 " << absl::FormatTime(t2) << ", window "
          << window;
      (want ? inside : outside) += 1;
    }
    // Both sides of the edge are reached.
    EXPECT_GT(inside, 300);
    EXPECT_GT(outside, 300);
  }
}

}  // namespace
}  // namespace palisade

namespace palisade {
namespace {

// A detection empties a window's times but keeps their capacity (a flood rule's window would
// grow it again a doubling at a time): the next detection still needs a full threshold, and
// the bytes accounted count match what a recount of the windows finds (SetRules recounts).
TEST(EngineWindowTest, TimesKeptAfterADetectionStartOverAndAreAccounted) {
  auto pack = ParseRulePack(R"pb(
    rules {
      id: "many"
      formats: LOG_FORMAT_SYSLOG
      patterns: "^Failed password for (?P<user>\\S+) from (?P<ip>\\S+) port"
      threshold {
        count: 9
        window { seconds: 600 }
      }
      decision { action: ACTION_BLOCK duration { seconds: 600 } }
    }
  )pb", "many.textproto");
  ASSERT_TRUE(pack.ok()) << pack.status();
  std::shared_ptr<const RuleSet> rules = *RuleSet::Compile({*pack});
  Engine engine(rules, EngineOptions());
  const absl::Time t0 = absl::FromUnixSeconds(1'767'225'600);
  ParsedLine line;
  line.program = "sshd";
  int detections = 0;
  for (int i = 0; i < 9 * 4; ++i) {
    // Two keys, one of them an IPv6 address (its key is formatted, not the captured text).
    const std::string m = absl::StrCat("Failed password for root from ",
                                       i % 2 == 0 ? "203.0.113.9" : "2001:DB8::9", " port 22");
    line.message = m;
    std::vector<Detection> out;
    engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, m, t0 + absl::Seconds(i), &out);
    for (const Detection& d : out) {
      EXPECT_EQ(d.key, i % 2 == 0 ? "203.0.113.9" : "2001:db8::9");
      EXPECT_EQ(d.evidence.size(), 5u);  // max_evidence
    }
    detections += static_cast<int>(out.size());
    const size_t accounted = engine.memory_bytes();
    engine.SetRules(rules);  // unchanged rules: the windows stay and are recounted
    ASSERT_EQ(engine.memory_bytes(), accounted) << "after line " << i;
  }
  EXPECT_EQ(detections, 4);  // two per key: a full threshold each time
  engine.Expire(t0 + absl::Hours(1));
  EXPECT_EQ(engine.memory_bytes(), 0u);
}


// --- IPv6 range windows (EngineOptions::ipv6_window_prefix) -----------------------------------

// A sshd failure from `ip`, `offset_seconds` after t0, through `engine`'s Process.
std::vector<Detection> FailFrom(Engine& engine, absl::string_view ip, int offset_seconds) {
  const std::string message = absl::StrCat("Failed password for root from ", ip, " port 22 ssh2");
  ParsedLine line;
  line.message = message;
  line.program = "sshd";
  std::vector<Detection> out;
  engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, message,
                 absl::FromUnixSeconds(1'767'225'600) + absl::Seconds(offset_seconds), &out);
  return out;
}

EngineOptions RangeWindows(int prefix = 64) {
  EngineOptions options;
  options.ipv6_window_prefix = prefix;
  return options;
}

// One client holds a whole /64 and takes a new address of it for each try: its failures fill
// no address's window, but they fill the /64's (ssh-fail: 3 in 60 s).
TEST(EngineRangeWindowTest, AnIpv6AttackerRotatingWithinASlash64IsDetectedAsTheRange) {
  Engine engine(Rules(), RangeWindows());
  EXPECT_THAT(FailFrom(engine, "2001:db8:1:2::1", 0), IsEmpty());
  EXPECT_THAT(FailFrom(engine, "2001:db8:1:2::2", 10), IsEmpty());
  std::vector<Detection> d = FailFrom(engine, "2001:DB8:1:2::3", 20);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].rule_id, "ssh-fail");
  EXPECT_EQ(d[0].kind, palisade::v1::TargetKind::TARGET_KIND_RANGE);
  EXPECT_EQ(d[0].key, "2001:db8:1:2::/64");
  EXPECT_EQ(d[0].time, absl::FromUnixSeconds(1'767'225'600) + absl::Seconds(20));
  EXPECT_THAT(d[0].evidence, ElementsAre(::testing::HasSubstr("2001:db8:1:2::1 "),
                                         ::testing::HasSubstr("2001:db8:1:2::2 "),
                                         ::testing::HasSubstr("2001:DB8:1:2::3 ")));
  // The range window starts over, as an address window does.
  EXPECT_THAT(FailFrom(engine, "2001:db8:1:2::4", 21), IsEmpty());
  // Another /64 of the same /48 is another range.
  EXPECT_THAT(FailFrom(engine, "2001:db8:1:3::1", 22), IsEmpty());
  EXPECT_THAT(FailFrom(engine, "2001:db8:1:3::2", 23), IsEmpty());
}

TEST(EngineRangeWindowTest, ASlash48CoversItsSlash64s) {
  Engine engine(Rules(), RangeWindows(48));
  FailFrom(engine, "2001:db8:1:2::1", 0);
  FailFrom(engine, "2001:db8:1:3::1", 1);
  std::vector<Detection> d = FailFrom(engine, "2001:db8:1:4::1", 2);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].kind, palisade::v1::TargetKind::TARGET_KIND_RANGE);
  EXPECT_EQ(d[0].key, "2001:db8:1::/48");
}

// One attacker on one address stays an address decision: its range window fills on the same
// line, and yields to it.
TEST(EngineRangeWindowTest, OneAddressAloneIsDetectedAsTheAddressNotItsRange) {
  Engine engine(Rules(), RangeWindows());
  FailFrom(engine, "2001:db8:1:2::1", 0);
  FailFrom(engine, "2001:db8:1:2::1", 1);
  std::vector<Detection> d = FailFrom(engine, "2001:db8:1:2::1", 2);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].kind, palisade::v1::TargetKind::TARGET_KIND_IP);
  EXPECT_EQ(d[0].key, "2001:db8:1:2::1");
  // Both windows started over: the range's needs three new failures too.
  EXPECT_THAT(FailFrom(engine, "2001:db8:1:2::2", 3), IsEmpty());
  EXPECT_THAT(FailFrom(engine, "2001:db8:1:2::3", 4), IsEmpty());
  d = FailFrom(engine, "2001:db8:1:2::1", 5);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].kind, palisade::v1::TargetKind::TARGET_KIND_RANGE);
  // A rule whose every match is a detection (ssh-probe, count 1) decides the address alone.
  ParsedLine line;
  const std::string probe = "Did not receive identification string from 2001:db8:1:2::9";
  line.message = probe;
  line.program = "sshd";
  std::vector<Detection> out;
  engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, probe, absl::FromUnixSeconds(1'767'225'700),
                 &out);
  ASSERT_THAT(out, SizeIs(1));
  EXPECT_EQ(out[0].kind, palisade::v1::TargetKind::TARGET_KIND_IP);
}

// An allowlisted neighbour is never covered: its /64 is never detected, whoever else is in it.
TEST(EngineRangeWindowTest, AnAllowlistedAddressKeepsItsRangeFromADetection) {
  EngineOptions options = RangeWindows();
  options.allowlist = *CidrSet::Parse({"2001:db8:1:2::99"});
  Engine engine(Rules(), options);
  for (int i = 1; i <= 6; ++i) {
    EXPECT_THAT(FailFrom(engine, absl::StrCat("2001:db8:1:2::", i), i), IsEmpty()) << i;
  }
  // The allowlisted address itself counts nowhere.
  for (int i = 0; i < 3; ++i) EXPECT_THAT(FailFrom(engine, "2001:db8:1:2::99", 10 + i), IsEmpty());
  EXPECT_EQ(engine.live_windows(), 6u);  // the six addresses' windows, no range's
}

// A NAT64 address (RFC 6052) is one IPv4 host's: its neighbours are other hosts, so it has no
// range window.
TEST(EngineRangeWindowTest, ANat64AddressIsCountedPerAddressOnly) {
  Engine engine(Rules(), RangeWindows());
  // 192.0.2.7, .8, .9.
  EXPECT_THAT(FailFrom(engine, "64:ff9b::c000:207", 0), IsEmpty());
  EXPECT_THAT(FailFrom(engine, "64:ff9b::c000:208", 1), IsEmpty());
  EXPECT_THAT(FailFrom(engine, "64:ff9b::c000:209", 2), IsEmpty());
  EXPECT_EQ(engine.live_windows(), 3u);
  // The address itself is still detected.
  FailFrom(engine, "64:ff9b::c000:207", 6);
  std::vector<Detection> d = FailFrom(engine, "64:ff9b::c000:207", 7);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].kind, palisade::v1::TargetKind::TARGET_KIND_IP);
  EXPECT_EQ(d[0].key, "64:ff9b::c000:207");
}

// A 6to4 address (RFC 3056) is one IPv4 host's, but that host holds the whole /48
// (2002:WWXX:YYZZ::/48) and may take a new subnet and interface id of it for each try: its
// tries count in the /48's window, whatever the configured prefix, and the detection is of the
// /48 (a range the edge can block; never wider: the next /48 is another IPv4 host).
TEST(EngineRangeWindowTest, A6to4HostRotatingWithinItsSlash48IsDetectedAsTheSlash48) {
  for (int prefix : {64, 48}) {
    Engine engine(Rules(), RangeWindows(prefix));
    // 8.8.8.8's /48.
    EXPECT_THAT(FailFrom(engine, "2002:808:808:1::1", 0), IsEmpty()) << prefix;
    EXPECT_THAT(FailFrom(engine, "2002:808:808:2::2", 1), IsEmpty()) << prefix;
    std::vector<Detection> d = FailFrom(engine, "2002:808:808:ffff::3", 2);
    ASSERT_THAT(d, SizeIs(1)) << prefix;
    EXPECT_EQ(d[0].kind, palisade::v1::TargetKind::TARGET_KIND_RANGE);
    EXPECT_EQ(d[0].key, "2002:808:808::/48");
    // The next /48 is another IPv4 host (8.8.8.9): counted apart.
    EXPECT_THAT(FailFrom(engine, "2002:808:809:1::1", 3), IsEmpty()) << prefix;
    EXPECT_THAT(FailFrom(engine, "2002:808:809:2::1", 4), IsEmpty()) << prefix;
  }
  // A 6to4 /48 of a non-public IPv4 host (10.0.0.1) has no window: it is never a ban target.
  Engine engine(Rules(), RangeWindows());
  for (int i = 1; i <= 3; ++i) {
    EXPECT_THAT(FailFrom(engine, absl::StrCat("2002:a00:1:", i, "::1"), i), IsEmpty()) << i;
  }
}

// A Teredo address (RFC 4380) keeps its client's IPv4 in its last 32 bits, below the server's
// /64 that every client of that server shares: no range the edge can block holds one client's
// addresses alone, so it is counted per address (as the address it is).
TEST(EngineRangeWindowTest, ATeredoAddressIsCountedPerAddressOnly) {
  Engine engine(Rules(), RangeWindows());
  // One Teredo server (65.54.227.120), three clients (8.8.4.4, .5, .6).
  EXPECT_THAT(FailFrom(engine, "2001:0:4136:e378:8000:63bf:f7f7:fbfb", 0), IsEmpty());
  EXPECT_THAT(FailFrom(engine, "2001:0:4136:e378:8000:63bf:f7f7:fbfa", 1), IsEmpty());
  EXPECT_THAT(FailFrom(engine, "2001:0:4136:e378:8000:63bf:f7f7:fbf9", 2), IsEmpty());
  EXPECT_EQ(engine.live_windows(), 3u);
}

TEST(EngineRangeWindowTest, WithoutAPrefixAddressesAreCountedAloneAsBefore) {
  Engine engine(Rules(), EngineOptions());
  EXPECT_THAT(FailFrom(engine, "2001:db8:1:2::1", 0), IsEmpty());
  EXPECT_THAT(FailFrom(engine, "2001:db8:1:2::2", 1), IsEmpty());
  EXPECT_THAT(FailFrom(engine, "2001:db8:1:2::3", 2), IsEmpty());
  EXPECT_EQ(engine.live_windows(), 3u);
}

TEST(EngineRangeWindowTest, Ipv4AddressesHaveNoRangeWindow) {
  Engine engine(Rules(), RangeWindows());
  EXPECT_THAT(FailFrom(engine, "203.0.113.1", 0), IsEmpty());
  EXPECT_THAT(FailFrom(engine, "203.0.113.2", 1), IsEmpty());
  EXPECT_THAT(FailFrom(engine, "203.0.113.3", 2), IsEmpty());
  EXPECT_EQ(engine.live_windows(), 3u);
  FailFrom(engine, "203.0.113.3", 3);
  std::vector<Detection> d = FailFrom(engine, "203.0.113.3", 4);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].kind, palisade::v1::TargetKind::TARGET_KIND_IP);
  EXPECT_EQ(d[0].key, "203.0.113.3");
}

// CountMatch (the cluster's owner, which gets every address of a /48: services/cluster/
// match_stream.h, PartitionKeyOf) counts a range window as Process does. Before, it kept none,
// and a cluster never saw an attacker taking a new address of its /64 for each try.
TEST(EngineRangeWindowTest, CountMatchCountsTheRangeWindowAsProcessDoes) {
  Engine engine(Rules(), RangeWindows());
  std::vector<Detection> out;
  for (int i = 1; i <= 3; ++i) {
    const std::string message =
        absl::StrCat("Failed password for root from 2001:db8:1:2::", i, " port 22 ssh2");
    ParsedLine line;
    line.message = message;
    line.program = "sshd";
    std::vector<EngineMatch> matches;
    engine.MatchLine(LogFormat::LOG_FORMAT_SYSLOG, line, message,
                     absl::FromUnixSeconds(1'767'225'600) + absl::Seconds(i), &matches);
    ASSERT_THAT(matches, SizeIs(1));
    ASSERT_THAT(engine.CountMatch(matches[0], &out), ::palisade::testing::IsOk());
  }
  ASSERT_THAT(out, SizeIs(1));
  EXPECT_EQ(out[0].kind, palisade::v1::TargetKind::TARGET_KIND_RANGE);
  EXPECT_EQ(out[0].key, "2001:db8:1:2::/64");
}

}  // namespace
}  // namespace palisade
