// Session correlation in the engine (Rule.session, issue 13 §1): lines of one sshd connection
// tied together by pid, interleaved with other connections' lines.
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/status_matchers.h"
#include "services/engine/engine.h"

namespace palisade {
namespace {

using ::palisade::v1::LogFormat;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::palisade::testing::IsOk;
using ::palisade::testing::StatusIs;

// sshd at LogLevel VERBOSE: "Connection from" names the address; "Too many authentication
// failures" does not; "Connection closed ... [preauth]" is an attack only after a failure.
constexpr absl::string_view kPack = R"pb(
  rules {
    id: "ssh-conn"
    formats: LOG_FORMAT_SYSLOG
    programs: "sshd"
    patterns: "^Connection from (?P<ip>[0-9a-fA-F:.]+) port \\d+ on [0-9a-fA-F:.]+ port \\d+$"
    session { note_only: true }
  }
  rules {
    id: "ssh-fail"
    formats: LOG_FORMAT_SYSLOG
    programs: "sshd"
    patterns: "^Failed password for (?:invalid user )?\\S+ from (?P<ip>[0-9a-fA-F:.]+) port \\d+ ssh2$"
    threshold {
      count: 5
      window { seconds: 600 }
    }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 600 }
    }
  }
  rules {
    id: "ssh-too-many"
    formats: LOG_FORMAT_SYSLOG
    programs: "sshd"
    patterns: "^Disconnecting: Too many authentication failures(?: \\[preauth\\])?$"
    session {}
    threshold { count: 1 }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 600 }
    }
  }
  rules {
    id: "ssh-closed-after-failure"
    formats: LOG_FORMAT_SYSLOG
    programs: "sshd"
    patterns: "^Connection closed by (?P<ip>[0-9a-fA-F:.]+) port \\d+ \\[preauth\\]$"
    session { after_failure: true ends: true }
    threshold { count: 1 }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 600 }
    }
  }
  rules {
    id: "queue-reject"
    formats: LOG_FORMAT_SYSLOG
    programs: "mail"
    patterns: "^(?P<qid>[0-9A-F]{10}): client=\\S+\\[(?P<ip>[0-9a-fA-F:.]+)\\]$"
    session { by: "qid" note_only: true }
  }
  rules {
    id: "queue-spam"
    formats: LOG_FORMAT_SYSLOG
    programs: "mail"
    patterns: "^(?P<qid>[0-9A-F]{10}): milter-reject: spam$"
    session { by: "qid" }
    threshold { count: 1 }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 600 }
    }
  }
)pb";

std::shared_ptr<const RuleSet> Rules(absl::string_view text = kPack) {
  auto pack = ParseRulePack(text, "sessions.textproto");
  EXPECT_TRUE(pack.ok()) << pack.status();
  EXPECT_THAT(CheckKeyAnchoring(*pack), IsOk());
  auto set = RuleSet::Compile({*pack});
  EXPECT_TRUE(set.ok()) << set.status();
  return *set;
}

class SessionEngineTest : public ::testing::Test {
 protected:
  explicit SessionEngineTest(EngineOptions options = {}) : engine_(Rules(), options) {}

  std::vector<Detection> Feed(absl::string_view program, absl::string_view pid,
                              absl::string_view message, int offset_seconds,
                              uint32_t stream = 1) {
    ParsedLine line;
    line.message = message;
    line.program = program;
    line.pid = pid;
    std::vector<Detection> out;
    engine_.Process(LogFormat::LOG_FORMAT_SYSLOG, line, message,
                    t0_ + absl::Seconds(offset_seconds), &out, stream);
    return out;
  }
  std::vector<Detection> Ssh(absl::string_view pid, absl::string_view message, int offset,
                             uint32_t stream = 1) {
    return Feed("sshd", pid, message, offset, stream);
  }

  Engine engine_;
  absl::Time t0_ = absl::FromUnixSeconds(1'767'225'600);
};

TEST_F(SessionEngineTest, ALineWithoutAnAddressTakesItsSessionsAddress) {
  EXPECT_THAT(Ssh("100", "Connection from 203.0.113.7 port 5000 on 10.0.0.1 port 22", 0),
              IsEmpty());
  std::vector<Detection> d =
      Ssh("100", "Disconnecting: Too many authentication failures [preauth]", 3);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].rule_id, "ssh-too-many");
  EXPECT_EQ(d[0].key, "203.0.113.7");
  // Another pid with no "Connection from" line: nothing to key on, nothing counted.
  EXPECT_THAT(Ssh("101", "Disconnecting: Too many authentication failures [preauth]", 4),
              IsEmpty());
  EXPECT_EQ(engine_.stats().session_misses, 1u);
}

// A token is a secret: counted on an sshd line whose pid's session the pack's rules read, it
// leaves nothing in that session (Engine::NotesSession), where a later line could read it back.
TEST(SessionTokenTest, ATokenCountedOnASessionsLineIsNotNotedInIt) {
  constexpr absl::string_view kToken = R"pb(
    rules {
      id: "token-leaked"
      formats: LOG_FORMAT_SYSLOG
      key: "token"
      key_kind: TARGET_KIND_TOKEN_FINGERPRINT
      unanchored_key_reason: "the key is the secret itself"
      patterns: "(?:^|[^A-Za-z0-9_])(?P<token>cfut_[A-Za-z0-9]{40})(?:[^A-Za-z0-9_-]|$)"
      threshold { count: 1 }
      decision {
        action: ACTION_REVOKE_TOKEN
        duration { seconds: 60 }
      }
    }
  )pb";
  Engine engine(Rules(absl::StrCat(kPack, kToken)), EngineOptions());
  const std::string message =
      absl::StrCat("debug1: user root sent cfut_", std::string(40, 'a'), " as a password");
  ParsedLine line;
  line.message = message;
  line.program = "sshd";
  line.pid = "4242";
  std::vector<Detection> out;
  engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, message, absl::FromUnixSeconds(1'767'225'600),
                 &out, 1);
  ASSERT_THAT(out, SizeIs(1));
  EXPECT_EQ(out[0].rule_id, "token-leaked");
  EXPECT_EQ(engine.stats().sessions.live, 0u);
}

// One stream may carry many hosts (a syslog input every sender writes to, a central rsyslog
// file): pid 4242 of web-1 is not pid 4242 of web-2, and neither reads the other's address.
TEST_F(SessionEngineTest, APidSessionIsTheHostsNotTheStreams) {
  auto ssh = [&](absl::string_view host, absl::string_view pid, absl::string_view message,
                 int offset) {
    ParsedLine line;
    line.host = host;
    line.message = message;
    line.program = "sshd";
    line.pid = pid;
    std::vector<Detection> out;
    engine_.Process(LogFormat::LOG_FORMAT_SYSLOG, line, message, t0_ + absl::Seconds(offset),
                    &out, 1);
    return out;
  };
  constexpr absl::string_view kTooMany =
      "Disconnecting: Too many authentication failures [preauth]";
  EXPECT_THAT(
      ssh("web-1", "4242", "Connection from 198.51.100.5 port 5000 on 10.0.0.1 port 22", 0),
      IsEmpty());
  // web-2's connection on the same pid named no address: nothing to key on.
  EXPECT_THAT(ssh("web-2", "4242", kTooMany, 1), IsEmpty());
  EXPECT_EQ(engine_.stats().session_misses, 1u);
  // Long pids and programs (past the short form) are the host's too.
  EXPECT_THAT(
      ssh("web-1", "12345678901", "Connection from 198.51.100.6 port 5000 on 10.0.0.1 port 22", 2),
      IsEmpty());
  EXPECT_THAT(ssh("web-2", "12345678901", kTooMany, 3), IsEmpty());
  EXPECT_EQ(engine_.stats().session_misses, 2u);
  // And web-1's own later line finds its address.
  std::vector<Detection> d = ssh("web-1", "4242", kTooMany, 4);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].key, "198.51.100.5");
}

TEST_F(SessionEngineTest, AFailureNotesTheAddressForTheSessionsLaterLines) {
  // At sshd's default LogLevel there is no "Connection from": the failure names the address.
  EXPECT_THAT(Ssh("200", "Failed password for root from 198.51.100.4 port 4000 ssh2", 0),
              IsEmpty());
  std::vector<Detection> d =
      Ssh("200", "Disconnecting: Too many authentication failures [preauth]", 1);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].key, "198.51.100.4");
}

TEST_F(SessionEngineTest, AfterFailureCountsOnlyWhenTheSessionFailed) {
  // A scanner that connects and leaves: no failure, not counted.
  EXPECT_THAT(Ssh("300", "Connection closed by 203.0.113.9 port 5000 [preauth]", 0), IsEmpty());
  // A connection that failed first: counted, and the session ends with it.
  Ssh("301", "Failed password for root from 203.0.113.10 port 5001 ssh2", 1);
  std::vector<Detection> d =
      Ssh("301", "Connection closed by 203.0.113.10 port 5001 [preauth]", 2);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].rule_id, "ssh-closed-after-failure");
  EXPECT_EQ(d[0].key, "203.0.113.10");
  EXPECT_EQ(engine_.stats().sessions.ended, 1u);
  // The pid reused by an innocent connection: the ended session's failure does not carry over.
  EXPECT_THAT(Ssh("301", "Connection closed by 192.0.2.50 port 6000 [preauth]", 3), IsEmpty());
}

TEST_F(SessionEngineTest, InterleavedSessionsFromManyPidsNeverCrossAddresses) {
  // 2,000 connections from 2,000 addresses, lines of all of them shuffled together (each
  // connection's own lines stay in order), over two hosts (streams) that reuse the same pids.
  struct Conn {
    std::string pid, ip;
    uint32_t stream;
    bool fails;
    int step = 0;
  };
  std::vector<Conn> conns;
  for (int i = 0; i < 2000; ++i) {
    conns.push_back({absl::StrCat(1000 + i % 1000), absl::StrCat("10.", i / 250, ".", i % 250, ".9"),
                     static_cast<uint32_t>(1 + i / 1000), i % 3 != 0});
  }
  std::mt19937 rng(7);
  std::vector<int> order;
  for (int i = 0; i < 2000; ++i) order.insert(order.end(), 3, i);
  std::shuffle(order.begin(), order.end(), rng);
  int t = 0;
  std::map<std::string, std::string> flagged;  // rule:key -> stream/pid that raised it
  int too_many = 0, closed = 0;
  for (int i : order) {
    Conn& c = conns[i];
    std::string message;
    switch (c.step++) {
      case 0:
        message = absl::StrCat("Connection from ", c.ip, " port 5000 on 10.0.0.1 port 22");
        break;
      case 1:
        message = c.fails ? "Disconnecting: Too many authentication failures [preauth]"
                          : "Accepted publickey for deploy from " + c.ip + " port 5000 ssh2";
        break;
      default:
        message = absl::StrCat("Connection closed by ", c.ip, " port 5000 [preauth]");
    }
    for (const Detection& d : Ssh(c.pid, message, t++ / 100, c.stream)) {
      EXPECT_EQ(d.key, c.ip) << d.rule_id << " for pid " << c.pid << " stream " << c.stream;
      too_many += d.rule_id == "ssh-too-many";
      closed += d.rule_id == "ssh-closed-after-failure";
    }
  }
  // Every failing connection is found twice (too many, then closed after failure); none of the
  // others; every connection's "Connection closed" ended its session.
  const int failing = 2000 - (2000 + 2) / 3;
  EXPECT_EQ(too_many, failing);
  EXPECT_EQ(closed, failing);
  EXPECT_EQ(engine_.stats().session_misses, 0u);
  EXPECT_EQ(engine_.stats().sessions.live, 0u);
  EXPECT_EQ(engine_.stats().sessions.ended, 2000u);
}

TEST_F(SessionEngineTest, SessionsByACaptureAndTheirAnchoring) {
  Feed("mail", "9", "0123456789: client=mx.example[203.0.113.20]", 0);
  Feed("mail", "9", "ABCDEF0123: client=mx.example[203.0.113.21]", 0);
  std::vector<Detection> d = Feed("mail", "10", "ABCDEF0123: milter-reject: spam", 1);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].key, "203.0.113.21");

  // A session id a client could write is refused at load, like a key.
  auto pack = ParseRulePack(R"pb(
    rules {
      id: "bad"
      formats: LOG_FORMAT_SYSLOG
      patterns: "^from (?P<ip>[0-9.]+) user .* id=(?P<qid>\\S+) \\w+"
      session { by: "qid" note_only: true }
    }
  )pb", "bad.textproto");
  ASSERT_THAT(pack, IsOk());
  EXPECT_THAT(CheckKeyAnchoring(*pack),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("session group")));
}

TEST_F(SessionEngineTest, SessionsAgeOutInEventTime) {
  Ssh("400", "Connection from 203.0.113.30 port 5000 on 10.0.0.1 port 22", 0);
  // Eleven minutes later the session is gone (ttl 10 min): nothing to key on.
  EXPECT_THAT(Ssh("400", "Disconnecting: Too many authentication failures [preauth]", 660),
              IsEmpty());
  engine_.Expire(t0_ + absl::Seconds(660));
  EXPECT_EQ(engine_.stats().sessions.live, 0u);
  EXPECT_EQ(engine_.stats().sessions.expired, 1u);
}

TEST_F(SessionEngineTest, ExpireSpreadWalksTheSessionsOnceAQuarterOfTheirTtl) {
  Ssh("401", "Connection from 203.0.113.31 port 5000 on 10.0.0.1 port 22", 0);
  engine_.ExpireSpread(t0_ + absl::Seconds(500));  // walked (idle 500 s of a 600 s ttl): kept
  engine_.ExpireSpread(t0_ + absl::Seconds(601));  // idle past ttl; walked 101 s ago: waits
  EXPECT_EQ(engine_.stats().sessions.live, 1u);
  engine_.ExpireSpread(t0_ + absl::Seconds(650));  // a quarter of the ttl on
  EXPECT_EQ(engine_.stats().sessions.live, 0u);
  EXPECT_EQ(engine_.stats().sessions.expired, 1u);
}

TEST(SessionEngineBoundsTest, ACapEvictsAndCountsWhateverAnAttackerOpens) {
  EngineOptions options;
  options.sessions.max_sessions = 1600;
  Engine engine(Rules(), options);
  const absl::Time t0 = absl::FromUnixSeconds(1'767'225'600);
  for (int i = 0; i < 200'000; ++i) {
    const std::string message =
        absl::StrCat("Connection from 10.1.", i / 250 % 250, ".", i % 250, " port 5000 on 10.0.0.1 port 22");
    ParsedLine line;
    line.message = message;
    line.program = "sshd";
    const std::string pid = absl::StrCat(i);
    line.pid = pid;
    std::vector<Detection> out;
    engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, message, t0, &out, 1);
  }
  const SessionStats s = engine.stats().sessions;
  EXPECT_LE(s.live, 1600u);
  EXPECT_EQ(s.evicted, 200'000u - s.live);
  EXPECT_LE(s.bytes, 1600u * 400u);
}

// A note_only rule's ignore patterns hold as a counting rule's do (fail2ban reads ignoreregex
// before a NOFAIL line's captures): an ignored "Connection from" notes no address, so the
// connection's later failure has none to count against. Without and with Prematch.
TEST(SessionIgnoreTest, AnIgnoredNoteNotesNothing) {
  const std::string pack = absl::StrReplaceAll(
      kPack, {{"session { note_only: true }",
               "ignore_patterns: \"on 10\\\\.9\\\\.9\\\\.9 port\" session { note_only: true }"}});
  ASSERT_NE(pack, std::string(kPack));
  for (const bool prematch : {false, true}) {
    Engine engine(Rules(pack), EngineOptions());
    const absl::Time t0 = absl::FromUnixSeconds(1'767'225'600);
    auto ssh = [&](absl::string_view message, int offset) {
      ParsedLine line;
      line.message = message;
      line.program = "sshd";
      line.pid = "500";
      PrematchBuffer buffer;
      PrematchedLine pre;
      if (prematch) {
        engine.Prematch(LogFormat::LOG_FORMAT_SYSLOG, line, &buffer);
        pre.candidates = absl::MakeConstSpan(buffer.candidates);
        pre.buffer = &buffer;
      }
      std::vector<Detection> out;
      engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, message, t0 + absl::Seconds(offset),
                     &out, 1, prematch ? &pre : nullptr);
      return out;
    };
    EXPECT_THAT(ssh("Connection from 198.51.100.7 port 51353 on 10.9.9.9 port 22", 0), IsEmpty());
    EXPECT_THAT(ssh("Disconnecting: Too many authentication failures", 1), IsEmpty())
        << (prematch ? "with Prematch" : "without Prematch");
    EXPECT_EQ(engine.stats().session_misses, 1u);
    // Another server address is noted.
    EXPECT_THAT(ssh("Connection from 198.51.100.8 port 51354 on 10.9.9.8 port 22", 2), IsEmpty());
    EXPECT_THAT(ssh("Disconnecting: Too many authentication failures", 3), SizeIs(1));
  }
}

TEST(SessionRuleSetTest, RefusesWhatCannotWork) {
  auto compile = [](absl::string_view text) {
    auto pack = ParseRulePack(text, "x.textproto");
    EXPECT_TRUE(pack.ok()) << pack.status();
    return RuleSet::Compile({*pack}).status();
  };
  // Without a session, a pattern still needs the key group.
  EXPECT_THAT(compile(R"pb(rules { id: "a" formats: LOG_FORMAT_SYSLOG patterns: "^x$"
                               threshold { count: 1 }
                               decision { action: ACTION_BLOCK duration { seconds: 1 } } })pb"),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("no (?P<ip>")));
  // A note never counts.
  EXPECT_THAT(compile(R"pb(rules { id: "b" formats: LOG_FORMAT_SYSLOG
                               patterns: "^x (?P<ip>\\S+)$"
                               session { note_only: true }
                               threshold { count: 1 } })pb"),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("never counts")));
  EXPECT_THAT(compile(R"pb(rules { id: "c" formats: LOG_FORMAT_SYSLOG
                               patterns: "^x (?P<ip>\\S+)$"
                               session { note_only: true after_failure: true } })pb"),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("exclude")));
  // A pending match waits to be counted: a note is never counted. A success is noted.
  EXPECT_THAT(compile(R"pb(rules { id: "c2" formats: LOG_FORMAT_SYSLOG
                               patterns: "^x (?P<ip>\\S+)$"
                               session { note_only: true pending: true } })pb"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::HasSubstr("session.pending is for a rule that counts")));
  EXPECT_THAT(compile(R"pb(rules { id: "c3" formats: LOG_FORMAT_SYSLOG
                               patterns: "^x (?P<ip>\\S+)$"
                               session { succeeded: true }
                               threshold { count: 1 }
                               decision { action: ACTION_BLOCK duration { seconds: 1 } } })pb"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::HasSubstr("session.succeeded needs session.note_only")));
  EXPECT_THAT(compile(R"pb(rules { id: "d" formats: LOG_FORMAT_SYSLOG
                               patterns: "^x (?P<ip>\\S+)$"
                               session { by: "conn" }
                               threshold { count: 1 }
                               decision { action: ACTION_BLOCK duration { seconds: 1 } } })pb"),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("session.by")));
  EXPECT_THAT(compile(R"pb(rules { id: "e" formats: LOG_FORMAT_RAW key: "token"
                               key_kind: TARGET_KIND_TOKEN_FINGERPRINT
                               patterns: "(?P<token>[A-Za-z0-9_-]{40})"
                               session {}
                               threshold { count: 1 }
                               decision { action: ACTION_REVOKE_TOKEN duration { seconds: 1 } } })pb"),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("token rule")));
  // A pid session is already the process's.
  EXPECT_THAT(compile(R"pb(rules { id: "f" formats: LOG_FORMAT_SYSLOG
                               patterns: "^x (?P<ip>\\S+)$"
                               session { by_process: true }
                               threshold { count: 1 }
                               decision { action: ACTION_BLOCK duration { seconds: 1 } } })pb"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::HasSubstr("session.by_process needs session.by")));
}

// Session.by_process: two slapd on one host both number their connections from 1000; with it
// the conn= session is each process's, and one's ACCEPT does not overwrite the other's address.
TEST(SessionByProcessTest, TwoProcessesWithTheSameConnectionNumberKeepTheirOwnAddress) {
  constexpr absl::string_view kSlapd = R"pb(
    rules {
      id: "slapd-session-address"
      formats: LOG_FORMAT_SYSLOG
      programs: "slapd"
      patterns: "^conn=(?P<conn>\\d+) fd=\\d+ ACCEPT from "
                "IP=(?P<ip>[0-9A-Fa-f:.]+):\\d+ \\(IP=\\S+\\)$"
      session { by: "conn" note_only: true by_process: true }
    }
    rules {
      id: "slapd-bind-failed"
      formats: LOG_FORMAT_SYSLOG
      programs: "slapd"
      patterns: "^conn=(?P<conn>\\d+) op=\\d+ RESULT(?: tag=\\d+)? err=49 text=[A-Za-z ]*$"
      session { by: "conn" by_process: true }
      threshold {
        count: 5
        window { seconds: 600 }
      }
      decision {
        action: ACTION_BLOCK
        duration { seconds: 600 }
      }
    }
  )pb";
  Engine engine(Rules(kSlapd), EngineOptions());
  const absl::Time t0 = absl::FromUnixSeconds(1'767'225'600);
  auto slapd = [&](absl::string_view pid, absl::string_view message, int offset) {
    ParsedLine line;
    line.host = "ldap-1";
    line.message = message;
    line.program = "slapd";
    line.pid = pid;
    std::vector<Detection> out;
    engine.Process(LogFormat::LOG_FORMAT_SYSLOG, line, message, t0 + absl::Seconds(offset), &out,
                   1);
    return out;
  };
  EXPECT_THAT(slapd("1183", "conn=1000 fd=21 ACCEPT from IP=203.0.113.7:45011 (IP=0.0.0.0:389)", 0),
              IsEmpty());
  EXPECT_THAT(
      slapd("2290", "conn=1000 fd=12 ACCEPT from IP=198.51.100.20:50000 (IP=0.0.0.0:389)", 1),
      IsEmpty());
  std::vector<Detection> d;
  for (int i = 0; i < 5; ++i) {
    d = slapd("1183", "conn=1000 op=1 RESULT tag=97 err=49 text=", 2 + i);
  }
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].rule_id, "slapd-bind-failed");
  EXPECT_EQ(d[0].key, "203.0.113.7");
}


// Rule.session.pending (fail2ban's "pending failure"): a failure of the connection seen before
// any line named its address counts, at its own time, once a later line of the connection names
// it; a success in between drops it.
constexpr absl::string_view kPendingPack = R"pb(
  rules {
    id: "ssh-locked"
    formats: LOG_FORMAT_SYSLOG
    programs: "sshd"
    patterns: "^User \\S+ not allowed because account is locked$"
    session { pending: true }
    threshold { count: 1 }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 600 }
    }
  }
  rules {
    id: "ssh-kex"
    formats: LOG_FORMAT_SYSLOG
    programs: "sshd"
    patterns: "^kex_exchange_identification: Connection closed by remote host$"
    session { pending: true }
    threshold { count: 1 }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 600 }
    }
  }
  rules {
    id: "ssh-bye"
    formats: LOG_FORMAT_SYSLOG
    programs: "sshd"
    patterns: "^Received disconnect from (?P<ip>[0-9a-fA-F:.]+) port \\d+:11: Bye Bye \\[preauth\\]$"
    patterns: "^Disconnected from invalid user .* (?P<ip>[0-9a-fA-F:.]+) port \\d+ \\[preauth\\]$"
    session { note_only: true ends: true }
  }
  rules {
    id: "ssh-closed"
    formats: LOG_FORMAT_SYSLOG
    programs: "sshd"
    patterns: "^Connection closed by (?P<ip>[0-9a-fA-F:.]+) port \\d+$"
    session { note_only: true ends: true }
  }
  rules {
    id: "ssh-accepted"
    formats: LOG_FORMAT_SYSLOG
    programs: "sshd"
    patterns: "^Accepted password for \\S+ from (?P<ip>[0-9a-fA-F:.]+) port \\d+ ssh2$"
    session { note_only: true succeeded: true }
  }
  rules {
    id: "ssh-failed"
    formats: LOG_FORMAT_SYSLOG
    programs: "sshd"
    patterns: "^Failed password for \\S+ from (?P<ip>[0-9a-fA-F:.]+) port \\d+ ssh2$"
    threshold {
      count: 100
      window { seconds: 600 }
    }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 600 }
    }
  }
)pb";

class PendingEngineTest : public ::testing::Test {
 protected:
  explicit PendingEngineTest(EngineOptions options = {})
      : engine_(Rules(kPendingPack), options) {}

  std::vector<Detection> Ssh(absl::string_view pid, absl::string_view message, int offset,
                             uint32_t stream = 1) {
    ParsedLine line;
    line.message = message;
    line.program = "sshd";
    line.pid = pid;
    std::vector<Detection> out;
    engine_.Process(LogFormat::LOG_FORMAT_SYSLOG, line, message, T(offset), &out, stream);
    return out;
  }
  absl::Time T(int offset) const { return t0_ + absl::Seconds(offset); }

  absl::Time t0_ = absl::FromUnixSeconds(1'767'225'600);
  Engine engine_;
};

TEST_F(PendingEngineTest, InterleavedPendingFailuresCountWhenTheirSessionNamesTheAddress) {
  // 3,000 connections over two hosts (streams) reusing the same pids, their lines shuffled
  // together (each connection's in order): a locked account then the disconnect that names the
  // address (counted, at the locked line's time); a kex failure then "Connection closed by"
  // (counted); a locked account then a success (dropped, never counted).
  struct Conn {
    std::string pid, ip;
    uint32_t stream;
    int kind;
    int step = 0;
    int failed_at = -1;
  };
  std::vector<Conn> conns;
  for (int i = 0; i < 3000; ++i) {
    conns.push_back({absl::StrCat(2000 + i % 1500),
                     absl::StrCat("10.", i / 250, ".", i % 250, ".7"),
                     static_cast<uint32_t>(1 + i / 1500), i % 3});
  }
  std::mt19937 rng(11);
  std::vector<int> order;
  for (int i = 0; i < 3000; ++i) order.insert(order.end(), 3, i);
  std::shuffle(order.begin(), order.end(), rng);
  int t = 0;
  int locked = 0, kex = 0;
  for (int i : order) {
    Conn& c = conns[i];
    const int now = t++ / 50;
    std::string message;
    switch (c.step++) {
      case 0:
        message = c.kind == 1 ? "kex_exchange_identification: Connection closed by remote host"
                              : "User root not allowed because account is locked";
        c.failed_at = now;
        break;
      case 1:  // a line of the connection that names nothing
        message = "input_userauth_request: invalid user root [preauth]";
        break;
      default:
        message = c.kind == 0 ? absl::StrCat("Received disconnect from ", c.ip,
                                             " port 5000:11: Bye Bye [preauth]")
                  : c.kind == 1 ? absl::StrCat("Connection closed by ", c.ip, " port 5000")
                                : absl::StrCat("Accepted password for root from ", c.ip,
                                               " port 5000 ssh2");
    }
    for (const Detection& d : Ssh(c.pid, message, now, c.stream)) {
      EXPECT_EQ(c.step, 3) << "counted before its address was named";
      EXPECT_EQ(d.key, c.ip) << d.rule_id << " for pid " << c.pid << " stream " << c.stream;
      EXPECT_EQ(d.time, T(c.failed_at));
      ASSERT_THAT(d.evidence, SizeIs(1));
      EXPECT_EQ(d.evidence[0], c.kind == 1
                                   ? "kex_exchange_identification: Connection closed by remote host"
                                   : "User root not allowed because account is locked");
      locked += d.rule_id == "ssh-locked";
      kex += d.rule_id == "ssh-kex";
      EXPECT_NE(c.kind, 2) << "a success dropped its pending failure";
    }
  }
  EXPECT_EQ(locked, 1000);
  EXPECT_EQ(kex, 1000);
  const SessionStats s = engine_.stats().sessions;
  EXPECT_EQ(s.pending, 0u);
  EXPECT_EQ(s.pending_released, 2000u);
  EXPECT_EQ(s.pending_dropped, 1000u);
  EXPECT_EQ(engine_.stats().session_misses, 0u);
}

TEST_F(PendingEngineTest, ACountedFailureNamingTheAddressReleasesThemToo) {
  EXPECT_THAT(Ssh("10", "User root not allowed because account is locked", 0), IsEmpty());
  // ssh-failed counts (its window, threshold 100) and notes the address in the pid's session.
  std::vector<Detection> d = Ssh("10", "Failed password for root from 192.0.2.9 port 1 ssh2", 5);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].rule_id, "ssh-locked");
  EXPECT_EQ(d[0].key, "192.0.2.9");
  EXPECT_EQ(d[0].time, T(0));
  // Once the session knows the address, a pending rule's match counts at once.
  d = Ssh("10", "User admin not allowed because account is locked", 6);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].key, "192.0.2.9");
  EXPECT_EQ(d[0].time, T(6));
}

TEST_F(PendingEngineTest, TheKeyIsWhatTheServerWroteNotTheUserName) {
  // The user name holds an address and the tail the server writes: the pattern (pinned to the
  // end, the loader's check) keys the server's address, never the client's.
  Ssh("20", "User root not allowed because account is locked", 0);
  std::vector<Detection> d = Ssh(
      "20", "Disconnected from invalid user x 6.6.6.6 port 22 [preauth] 203.0.113.5 port 4 [preauth]",
      1);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].key, "203.0.113.5");
  // A note rule whose address follows the user name with nothing pinning it is refused at load,
  // as a key is: the name "x 6.6.6.6 port 22" would name the session's address.
  auto pack = ParseRulePack(R"pb(
    rules {
      id: "bad-note"
      formats: LOG_FORMAT_SYSLOG
      patterns: "^Disconnected from invalid user .* (?P<ip>[0-9.]+) port \\d+"
      session { note_only: true }
    }
  )pb", "bad.textproto");
  ASSERT_THAT(pack, IsOk());
  EXPECT_THAT(CheckKeyAnchoring(*pack),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("key group")));
}

TEST_F(PendingEngineTest, BoundedPerSession) {
  for (int i = 0; i < 6; ++i) {
    EXPECT_THAT(Ssh("30", "User root not allowed because account is locked", i), IsEmpty());
  }
  std::vector<Detection> d =
      Ssh("30", "Received disconnect from 198.51.100.3 port 7:11: Bye Bye [preauth]", 9);
  ASSERT_THAT(d, SizeIs(4));  // SessionOptions::max_pending; the two oldest dropped
  EXPECT_EQ(d[0].time, T(2));
  EXPECT_EQ(engine_.stats().sessions.pending_dropped, 2u);
}

// A line whose rule keeps its match pending and ends the session (fail2ban's importer makes
// such rules: pending unless note_only, ends on MLFFORGET): the connection is over, so its
// pending match goes with it. Kept, it waited in a session of the same id, where the next
// connection to reuse the pid named an innocent address and had the old failure counted
// against it.
TEST_F(PendingEngineTest, APendingMatchOnTheLineThatEndsItsSessionIsDropped) {
  const std::string pack = absl::StrReplaceAll(
      kPendingPack, {{R"(patterns: "^kex_exchange_identification: Connection closed by remote host$"
    session { pending: true })",
                      R"(patterns: "^kex_exchange_identification: Connection closed by remote host$"
    session { pending: true ends: true })"}});
  ASSERT_NE(pack, kPendingPack);
  engine_.SetRules(Rules(pack));
  EXPECT_THAT(Ssh("50", "kex_exchange_identification: Connection closed by remote host", 0),
              IsEmpty());
  EXPECT_EQ(engine_.stats().sessions.live, 0u);
  EXPECT_EQ(engine_.stats().sessions.pending, 0u);
  EXPECT_EQ(engine_.stats().sessions.pending_dropped, 1u);
  // The next connection on pid 50 names its address.
  EXPECT_THAT(Ssh("50", "Connection closed by 198.51.100.9 port 9", 5), IsEmpty());
}

// A reload keeps the pending matches of the rules it keeps (by id, as it keeps their windows),
// wherever their index moved, and drops those of the rules it removes.
TEST_F(PendingEngineTest, AReloadKeepsThePendingMatchesOfTheRulesItKeeps) {
  constexpr absl::string_view kAhead = R"pb(
    rules {
      id: "first-now"
      formats: LOG_FORMAT_SYSLOG
      patterns: "^nothing (?P<ip>\\S+)"
      threshold { count: 1 }
      decision {
        action: ACTION_BLOCK
        duration { seconds: 60 }
      }
    }
  )pb";
  Ssh("31", "User root not allowed because account is locked", 10);
  engine_.SetRules(Rules(absl::StrCat(kAhead, kPendingPack)));
  ASSERT_EQ(engine_.rules()->rules()[1]->id(), "ssh-locked");  // its index moved
  std::vector<Detection> d =
      Ssh("31", "Received disconnect from 198.51.100.4 port 7:11: Bye Bye [preauth]", 11);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].rule_id, "ssh-locked");
  EXPECT_EQ(d[0].key, "198.51.100.4");
  EXPECT_EQ(d[0].time, T(10));
  // A rule the reload removes (renamed here): its pending matches are not counted by another.
  Ssh("32", "User root not allowed because account is locked", 12);
  engine_.SetRules(
      Rules(absl::StrReplaceAll(kPendingPack, {{"\"ssh-locked\"", "\"ssh-locked-2\""}})));
  EXPECT_THAT(Ssh("32", "Received disconnect from 198.51.100.5 port 7:11: Bye Bye [preauth]", 13),
              IsEmpty());
  EXPECT_EQ(engine_.stats().sessions.pending, 0u);
  // A rule the reload keeps by id but no longer as a pending one (here: without a session, its
  // address on its own line): it counts no match kept pending before.
  engine_.SetRules(Rules(kPendingPack));
  Ssh("33", "User root not allowed because account is locked", 14);
  constexpr absl::string_view kLockedPending =
      R"(patterns: "^User \\S+ not allowed because account is locked$"
    session { pending: true })";
  constexpr absl::string_view kLockedWithAddress =
      R"(patterns: "^User \\S+ not allowed because account is locked from (?P<ip>\\S+)$")";
  engine_.SetRules(
      Rules(absl::StrReplaceAll(kPendingPack, {{kLockedPending, kLockedWithAddress}})));
  EXPECT_THAT(Ssh("33", "Received disconnect from 198.51.100.6 port 7:11: Bye Bye [preauth]", 15),
              IsEmpty());
}

TEST_F(PendingEngineTest, MatchLineHandsThemOverAtTheirOwnTime) {
  auto match = [&](absl::string_view message, int offset) {
    ParsedLine line;
    line.message = message;
    line.program = "sshd";
    line.pid = "40";
    std::vector<EngineMatch> out;
    engine_.MatchLine(LogFormat::LOG_FORMAT_SYSLOG, line, message, T(offset), &out, 1);
    return out;
  };
  EXPECT_THAT(match("kex_exchange_identification: Connection closed by remote host", 0), IsEmpty());
  std::vector<EngineMatch> m = match("Connection closed by 192.0.2.77 port 9", 3);
  ASSERT_THAT(m, SizeIs(1));
  EXPECT_EQ(m[0].rule_id, "ssh-kex");
  EXPECT_EQ(m[0].key, "192.0.2.77");
  EXPECT_EQ(m[0].time, T(0));
  EXPECT_EQ(m[0].evidence, "kex_exchange_identification: Connection closed by remote host");
  std::vector<Detection> out;
  ASSERT_THAT(engine_.CountMatch(m[0], &out), IsOk());
  ASSERT_THAT(out, SizeIs(1));
}

}  // namespace
}  // namespace palisade
