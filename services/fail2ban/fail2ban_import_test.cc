#include "services/fail2ban/fail2ban_import.h"

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "re2/re2.h"
#include "services/common/status_matchers.h"
#include "services/engine/engine.h"
#include "services/engine/rule_set.h"
#include "services/formats/line_parser.h"

namespace palisade {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kTestdata[] = "services/fail2ban/testdata/filter.d/";

// Runs the imported pack over one line: the keys it yields (empty: no match).
class Matcher {
 public:
  // Lines in `format` (default: the first rule's first format).
  explicit Matcher(const Fail2banImport& imported,
                   palisade::v1::LogFormat format = palisade::v1::LOG_FORMAT_UNSPECIFIED) {
    LoadedPack pack{"imported", imported.pack};
    auto set = RuleSet::Compile({pack});
    EXPECT_TRUE(set.ok()) << set.status();
    engine_ = std::make_unique<Engine>(*set, EngineOptions{});
    format_ = format != palisade::v1::LOG_FORMAT_UNSPECIFIED ? format
                                                              : imported.pack.rules(0).formats(0);
  }
  std::set<std::string> Keys(absl::string_view line) {
    LineParser parser(format_);
    ParsedLine parsed;
    std::set<std::string> keys;
    if (!parser.Parse(line, absl::FromUnixSeconds(1700000000), &parsed).ok()) return keys;
    // Lines in order, sessions followed; a note-only rule's match is no finding.
    engine_->MatchOnly(
        format_, parsed,
        [&](const CompiledRule& rule, absl::string_view key) {
          if (!rule.proto.session().note_only()) keys.insert(std::string(key));
        },
        parsed.time.value_or(absl::FromUnixSeconds(1700000000)));
    return keys;
  }

 private:
  std::unique_ptr<Engine> engine_;
  palisade::v1::LogFormat format_;
};

const RegexReport* FindReport(const Fail2banImport& imported, absl::string_view needle) {
  for (const RegexReport& r : imported.regexes) {
    if (absl::StrContains(r.original, needle)) return &r;
  }
  return nullptr;
}

TEST(Fail2banImportTest, ConvertsASyslogFilterWithIncludesAndInterpolation) {
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-sshd.conf"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->filter, "demo-sshd");
  // A session filter (<F-MLFID> around the syslog prefix): the counting rule and the
  // <F-NOFAIL> rule that only notes the address.
  EXPECT_EQ(imported->session_by, "pid");
  ASSERT_EQ(imported->pack.rules_size(), 2);
  const palisade::v1::Rule& rule = imported->pack.rules(0);
  EXPECT_EQ(rule.id(), "f2b-demo-sshd");
  EXPECT_EQ(rule.session().by(), "pid");
  EXPECT_FALSE(rule.session().note_only());
  const palisade::v1::Rule& note = imported->pack.rules(1);
  EXPECT_EQ(note.id(), "f2b-demo-sshd-note");
  EXPECT_TRUE(note.session().note_only());
  EXPECT_FALSE(note.has_threshold());
  EXPECT_FALSE(note.has_decision());
  ASSERT_EQ(note.patterns_size(), 1);
  EXPECT_EQ(rule.formats(0), palisade::v1::LOG_FORMAT_SYSLOG);
  ASSERT_EQ(rule.programs_size(), 1);
  EXPECT_EQ(rule.programs(0), "sshd");  // _daemon, overridden over common.conf's \S*
  EXPECT_EQ(rule.threshold().count(), 5u);
  EXPECT_EQ(rule.threshold().window().seconds(), 600);
  EXPECT_EQ(rule.decision().duration().seconds(), 600);
  EXPECT_TRUE(rule.unanchored_key_reason().empty());
  EXPECT_EQ(imported->datepattern, "{^LN-BEG}");  // through <lt_<logtype>/datepattern>
  EXPECT_EQ(imported->maxlines, 1);

  // cmnfailre's two lines (mode normal: mdre-normal is empty), the look-behind, the NOFAIL,
  // the rewritten one; each traced to the line it was written on.
  const RegexReport* failed = FindReport(*imported, "Failed password for (?:invalid");
  ASSERT_NE(failed, nullptr);
  EXPECT_EQ(failed->outcome, RegexOutcome::kConverted);
  EXPECT_THAT(failed->file, HasSubstr("demo-sshd.conf"));
  EXPECT_EQ(failed->line, 14);
  const RegexReport* invalid = FindReport(*imported, "^Invalid user");
  ASSERT_NE(invalid, nullptr);
  EXPECT_EQ(invalid->line, 15);
  const RegexReport* behind = FindReport(*imported, "(?<! root)");
  ASSERT_NE(behind, nullptr);
  EXPECT_EQ(behind->outcome, RegexOutcome::kRefused);
  EXPECT_THAT(behind->reason, HasSubstr("look-behind"));
  EXPECT_EQ(behind->line, 22);
  const RegexReport* nofail = FindReport(*imported, "Connection from");
  ASSERT_NE(nofail, nullptr);
  EXPECT_EQ(nofail->outcome, RegexOutcome::kConverted);
  EXPECT_EQ(nofail->rule_id, "f2b-demo-sshd-note");
  // No address: in a session filter, keyed by what the session noted.
  const RegexReport* keyless = FindReport(*imported, "Too many authentication failures");
  ASSERT_NE(keyless, nullptr);
  EXPECT_EQ(keyless->outcome, RegexOutcome::kConverted);
  EXPECT_EQ(keyless->rule_id, "f2b-demo-sshd");
  const RegexReport* rewritten = FindReport(*imported, "Bad login");
  ASSERT_NE(rewritten, nullptr);
  EXPECT_EQ(rewritten->outcome, RegexOutcome::kRewritten);
  EXPECT_THAT(rewritten->reason, HasSubstr("\\Z -> \\z"));
  EXPECT_THAT(rewritten->reason, HasSubstr("{,n} -> {0,n}"));
  EXPECT_EQ(imported->count(RegexOutcome::kRefused), 1);
  EXPECT_EQ(rule.patterns_size(), 4);
  EXPECT_EQ(rule.ignore_patterns_size(), 1);
  EXPECT_THAT(Fail2banReportText(*imported), HasSubstr("5 converted, 1 rewritten, 1 refused"));

  // The textproto passes the production loader, key-anchoring lint included.
  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/demo-sshd.textproto");
  std::ofstream(path) << Fail2banPackText(*imported);
  auto loaded = LoadRulePackFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();

  Matcher m(*imported);
  EXPECT_EQ(m.Keys("Mar  3 14:02:01 web-1 sshd[4211]: Failed password for root from 203.0.113.7 "
                   "port 52811 ssh2"),
            std::set<std::string>{"203.0.113.7"});
  EXPECT_EQ(m.Keys("Mar  3 14:02:01 web-1 sshd[4211]: Invalid user oracle from 2001:db8::42 "
                   "port 22"),
            std::set<std::string>{"2001:db8::42"});
  EXPECT_EQ(m.Keys("Mar  3 14:02:01 web-1 sshd[1]: Bad login again again from 198.51.100.9"),
            std::set<std::string>{"198.51.100.9"});
  // ignoreregex, another program, a success.
  EXPECT_TRUE(m.Keys("Mar  3 14:02:01 web-1 sshd[1]: Failed password for testuser from "
                     "203.0.113.7 port 1 ssh2")
                  .empty());
  EXPECT_TRUE(m.Keys("Mar  3 14:02:01 web-1 su[1]: Failed password for root from 203.0.113.7 "
                     "port 1 ssh2")
                  .empty());
  EXPECT_TRUE(m.Keys("Mar  3 14:02:01 web-1 sshd[1]: Accepted password for root from "
                     "203.0.113.7 port 1 ssh2")
                  .empty());
  // A user name naming a victim: \S+ cannot hold the space of " from ".
  EXPECT_TRUE(m.Keys("Mar  3 14:02:01 web-1 sshd[1]: Failed password for x from 198.51.100.77 "
                     "port 22 from 203.0.113.44 port 1 ssh2")
                  .empty());
}

TEST(Fail2banImportTest, SessionLinesWithoutAnAddressUseTheOneTheirPidNoted) {
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-sshd.conf"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  Matcher m(*imported);
  const std::string too_many = "Disconnecting: Too many authentication failures [preauth]";
  // Nothing noted yet for pid 7: no key, no finding.
  EXPECT_TRUE(m.Keys(absl::StrCat("Mar  3 14:02:01 web-1 sshd[7]: ", too_many)).empty());
  // <F-NOFAIL> notes the address (no finding) for pid 7 and pid 8, interleaved.
  EXPECT_TRUE(m.Keys("Mar  3 14:02:02 web-1 sshd[7]: Connection from 203.0.113.7 port 1").empty());
  EXPECT_TRUE(m.Keys("Mar  3 14:02:02 web-1 sshd[8]: Connection from 198.51.100.8 port 2").empty());
  EXPECT_EQ(m.Keys(absl::StrCat("Mar  3 14:02:03 web-1 sshd[7]: ", too_many)),
            std::set<std::string>{"203.0.113.7"});
  EXPECT_EQ(m.Keys(absl::StrCat("Mar  3 14:02:03 web-1 sshd[8]: ", too_many)),
            std::set<std::string>{"198.51.100.8"});
  // Another pid noted nothing.
  EXPECT_TRUE(m.Keys(absl::StrCat("Mar  3 14:02:04 web-1 sshd[9]: ", too_many)).empty());
}

// fail2ban's pending failure (filter.py: mlfpending): a failure of a pid's connection with no
// address counts once a later line of the pid names one, even a <F-NOFAIL> line; a success
// (<F-MLFGAINED>) in between drops it. Through Engine::Process, lines in order.
TEST(Fail2banImportTest, PendingFailuresCountWhenTheirPidNamesTheAddress) {
  Fail2banImportOptions options;
  options.maxretry = 1;  // every counted line is a detection
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-pending.conf"), options);
  ASSERT_TRUE(imported.ok()) << imported.status();
  bool pending = false, succeeded = false;
  for (const palisade::v1::Rule& rule : imported->pack.rules()) {
    pending = pending || rule.session().pending();
    succeeded = succeeded || rule.session().succeeded();
    // Only the counting rules wait; only the <F-MLFGAINED> note drops.
    EXPECT_EQ(rule.session().pending(), !rule.session().note_only()) << rule.id();
    EXPECT_EQ(rule.session().succeeded(), absl::StrContains(rule.id(), "-gained")) << rule.id();
  }
  EXPECT_TRUE(pending && succeeded);
  LoadedPack pack{"imported", imported->pack};
  auto set = RuleSet::Compile({pack});
  ASSERT_TRUE(set.ok()) << set.status();
  Engine engine(*set, EngineOptions{});
  auto keys = [&](absl::string_view line) {
    LineParser parser(palisade::v1::LOG_FORMAT_SYSLOG);
    ParsedLine parsed;
    std::set<std::string> out;
    if (!parser.Parse(line, absl::FromUnixSeconds(1700000000), &parsed).ok()) return out;
    std::vector<Detection> detections;
    engine.Process(palisade::v1::LOG_FORMAT_SYSLOG, parsed, line,
                   parsed.time.value_or(absl::FromUnixSeconds(1700000000)), &detections, 1);
    for (const Detection& d : detections) out.insert(d.key);
    return out;
  };
  const std::set<std::string> none;
  EXPECT_EQ(keys("Apr 24 01:39:19 host sshd[3719]: User root not allowed because account is "
                 "locked"),
            none);
  EXPECT_EQ(keys("Apr 24 01:39:19 host sshd[3720]: User admin not allowed because account is "
                 "locked"),
            none);
  EXPECT_EQ(keys("Apr 24 01:39:20 host sshd[3719]: Received disconnect from 198.51.100.34 port "
                 "22:11: Bye Bye [preauth]"),
            std::set<std::string>{"198.51.100.34"});
  EXPECT_EQ(keys("Apr 24 01:39:20 host sshd[3720]: Accepted password for admin from "
                 "198.51.100.35 port 22 ssh2"),
            none);
  // A disconnect with nothing pending is no failure.
  EXPECT_EQ(keys("Apr 24 01:39:21 host sshd[3721]: Received disconnect from 198.51.100.36 port "
                 "22:11: Bye Bye [preauth]"),
            none);
  // fail2ban's first regex wins: an invalid user's failed publickey counts (the earlier regex),
  // a valid user's is the <F-NOFAIL> alternative (ignored by the counting rule, noted).
  EXPECT_EQ(keys("Jul 05 18:22:45 mercury sshd[4670]: Failed publickey for invalid user graysky "
                 "from 203.0.113.50 port 37955 ssh2"),
            std::set<std::string>{"203.0.113.50"});
  EXPECT_EQ(keys("Jul 05 18:22:45 mercury sshd[4671]: Failed publickey for git from 203.0.113.51 "
                 "port 37955 ssh2"),
            none);
  EXPECT_EQ(keys("Jul 05 18:22:45 mercury sshd[4672]: Failed password for git from 203.0.113.52 "
                 "port 37955 ssh2"),
            std::set<std::string>{"203.0.113.52"});
  // A user name does not dodge the ignore by looking like a prefix of "invalid user ".
  for (const char* user : {"i", "inv", "invalid", "invalid us", "invalidx", "in:x"}) {
    EXPECT_EQ(keys(absl::StrCat("Jul 05 18:22:46 mercury sshd[4673]: Failed publickey for ", user,
                                " from 203.0.113.53 port 1 ssh2")),
              none)
        << user;
  }
}

// A failregex's <F-NOFAIL> alternative makes its own matches notes; it does not reach the
// filter's other failregexes: fail2ban tries them in order and the first match wins, so a line
// an earlier failregex takes counts (demo-nofail.conf: fail2ban-regex --no-check-all flags
// .1, .3 and .4, not .2). Each counted line counts once, through Engine::Process.
TEST(Fail2banImportTest, NofailAlternativeIgnoresOnlyItsOwnFailregex) {
  Fail2banImportOptions options;
  options.maxretry = 1;  // every counted line is a detection
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-nofail.conf"), options);
  ASSERT_TRUE(imported.ok()) << imported.status();
  std::cout << Fail2banReportText(*imported);
  const RegexReport* banned = FindReport(*imported, "^Rejected token of banned user");
  ASSERT_NE(banned, nullptr);
  for (const palisade::v1::Rule& rule : imported->pack.rules()) {
    if (rule.id() == banned->rule_id) {
      EXPECT_EQ(rule.ignore_patterns_size(), 0) << rule.id();
    }
  }
  LoadedPack pack{"imported", imported->pack};
  auto set = RuleSet::Compile({pack});
  ASSERT_TRUE(set.ok()) << set.status();
  Engine engine(*set, EngineOptions{});
  auto keys = [&](absl::string_view line) {
    LineParser parser(palisade::v1::LOG_FORMAT_SYSLOG);
    ParsedLine parsed;
    std::multiset<std::string> out;
    if (!parser.Parse(line, absl::FromUnixSeconds(1700000000), &parsed).ok()) return out;
    std::vector<Detection> detections;
    engine.Process(palisade::v1::LOG_FORMAT_SYSLOG, parsed, line,
                   parsed.time.value_or(absl::FromUnixSeconds(1700000000)), &detections, 1);
    for (const Detection& d : detections) out.insert(d.key);
    return out;
  };
  EXPECT_EQ(keys("Jan  5 01:31:41 www vpnd[11]: Rejected token of banned user eve from 192.0.2.1"),
            std::multiset<std::string>{"192.0.2.1"});
  EXPECT_EQ(keys("Jan  5 01:31:42 www vpnd[12]: Rejected token of user bob from 192.0.2.2"),
            std::multiset<std::string>{});
  EXPECT_EQ(keys("Jan  5 01:31:43 www vpnd[13]: Rejected password of user bob from 192.0.2.3"),
            std::multiset<std::string>{"192.0.2.3"});
  EXPECT_EQ(
      keys("Jan  5 01:31:44 www vpnd[14]: Rejected password of banned user eve from 192.0.2.4"),
      std::multiset<std::string>{"192.0.2.4"});
}

TEST(Fail2banImportTest, RewritesKeepTheKeyTheServerWrote) {
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-rewrites.conf"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  std::cout << Fail2banReportText(*imported);
  // The bounded tail {0,3} is unrolled: no piece of it can hold " from ", so the check passes.
  const RegexReport* invalid = FindReport(*imported, "llegal|nvalid");
  ASSERT_NE(invalid, nullptr);
  EXPECT_EQ(invalid->outcome, RegexOutcome::kRewritten);
  EXPECT_THAT(invalid->reason, HasSubstr("{0,3} unrolled"));
  // The conditional keeps its $ branch, the look-aheads go.
  const RegexReport* failed = nullptr;
  for (const RegexReport& r : imported->regexes) {
    if (absl::StrContains(r.original, "Failed") && r.kind == "failregex") failed = &r;
  }
  ASSERT_NE(failed, nullptr);
  EXPECT_EQ(failed->outcome, RegexOutcome::kRewritten) << failed->reason;
  EXPECT_THAT(failed->reason, HasSubstr("(?:(?!X).)*$ -> $"));
  EXPECT_THAT(failed->reason, HasSubstr("its branch that ends at $"));
  // Unpinned after the key: stays refused, with the reason.
  const RegexReport* rejected = FindReport(*imported, "Rejected");
  ASSERT_NE(rejected, nullptr);
  EXPECT_EQ(rejected->outcome, RegexOutcome::kRefused);
  EXPECT_THAT(rejected->reason, HasSubstr("client could choose"));

  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/demo-rewrites.textproto");
  std::ofstream(path) << Fail2banPackText(*imported);
  auto loaded = LoadRulePackFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();

  Matcher m(*imported);
  EXPECT_EQ(m.Keys("Mar  3 14:02:01 web-1 sshd[1]: Invalid user oracle from 203.0.113.7 port 22"),
            std::set<std::string>{"203.0.113.7"});
  EXPECT_EQ(m.Keys("Mar  3 14:02:01 web-1 sshd[2]: Failed password for root from 203.0.113.8 "
                   "port 22 ssh2"),
            std::set<std::string>{"203.0.113.8"});
  // Injection: the user name names a victim; the key is the address sshd appended.
  EXPECT_EQ(m.Keys("Mar  3 14:02:01 web-1 sshd[3]: Invalid user x from 198.51.100.77 port 22 "
                   "from 203.0.113.9 port 4"),
            std::set<std::string>{"203.0.113.9"});
  EXPECT_EQ(m.Keys("Mar  3 14:02:01 web-1 sshd[4]: Failed password for invalid user x from "
                   "198.51.100.77 port 22 from 203.0.113.10 port 5 ssh2"),
            std::set<std::string>{"203.0.113.10"});
  // <F-NOFAIL>publickey: the counting rule ignores it, the note rule only notes.
  EXPECT_TRUE(m.Keys("Mar  3 14:02:01 web-1 sshd[5]: Failed publickey for root from 203.0.113.11 "
                     "port 22 ssh2")
                  .empty());
}

TEST(Fail2banImportTest, JailSetsThresholdsEscalationAndAllowlist) {
  const std::string dir = "services/fail2ban/testdata/jail/";
  Fail2banImportOptions options;
  ASSERT_TRUE(ReadFail2banJail({dir + "jail.conf", dir + "jail.local"}, "sshd", &options).ok());
  EXPECT_EQ(options.maxretry, 3u);
  EXPECT_EQ(options.findtime, absl::Minutes(90));
  EXPECT_EQ(options.bantime, absl::Hours(24));
  EXPECT_TRUE(options.bantime_increment);
  EXPECT_EQ(options.bantime_maxtime, absl::Hours(24 * 7));
  EXPECT_EQ(options.ignoreip,
            (std::vector<std::string>{"127.0.0.1/8", "::1", "192.0.2.0/24"}));  // jail.local
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-sshd.conf"), options);
  ASSERT_TRUE(imported.ok()) << imported.status();
  const palisade::v1::Rule& rule = imported->pack.rules(0);
  EXPECT_EQ(rule.threshold().count(), 3u);
  EXPECT_EQ(rule.threshold().window().seconds(), 5400);
  EXPECT_EQ(rule.decision().duration().seconds(), 86400);
  EXPECT_EQ(rule.decision().escalation().factor(), 2);
  EXPECT_EQ(rule.decision().escalation().max_duration().seconds(), 7 * 86400);
  EXPECT_THAT(Fail2banPackText(*imported),
              HasSubstr("allowlist: [\"127.0.0.1/8\", \"::1\", \"192.0.2.0/24\"]"));
  // The jail's `filter = demo-sshd[mode=%(mode)s]`, mode from jail.local: the filter's params.
  EXPECT_EQ(options.params, (std::map<std::string, std::string>{{"mode", "aggressive"}}));
  // `filter = postfix[mode=auth, ...]`: its params; a params set already (--filter_params) wins.
  Fail2banImportOptions sasl;
  sasl.params["extra"] = "mine";
  ASSERT_TRUE(ReadFail2banJail({dir + "jail.conf"}, "postfix-sasl", &sasl).ok());
  EXPECT_EQ(sasl.params,
            (std::map<std::string, std::string>{{"mode", "auth"}, {"extra", "mine"}}));
  // (The shipped postfix filter: mode auth keeps only the SASL failregexes.)
  auto postfix = ImportFail2banFilter("/etc/fail2ban/filter.d/postfix.conf", sasl);
  ASSERT_TRUE(postfix.ok()) << postfix.status();
  for (const RegexReport& r : postfix->regexes) EXPECT_THAT(r.original, HasSubstr("SASL"));
  // ... and another filter with that jail's thresholds is refused, naming the jail's line.
  auto other = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-sshd.conf"), sasl);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(other.status().message(), HasSubstr("jail.conf:33:"));
  EXPECT_THAT(other.status().message(), HasSubstr("postfix"));

  // fail2ban's repeat bans are max(T, T * 2^n * factor) (jail.py): Palisade's escalation
  // doubles from T, so another factor, a formula or multipliers are said in the notes.
  Fail2banImportOptions factor3;
  ASSERT_TRUE(ReadFail2banJail({dir + "jail.conf"}, "factor3", &factor3).ok());
  auto tripled = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-sshd.conf"), factor3);
  ASSERT_TRUE(tripled.ok()) << tripled.status();
  EXPECT_EQ(tripled->pack.rules(0).decision().escalation().factor(), 2);
  ASSERT_EQ(factor3.jail_notes.size(), 1u);
  EXPECT_THAT(factor3.jail_notes[0], HasSubstr("jail.conf:22: bantime.factor 3"));
  Fail2banImportOptions multipliers;
  ASSERT_TRUE(ReadFail2banJail({dir + "jail.conf"}, "multipliers", &multipliers).ok());
  ASSERT_EQ(multipliers.jail_notes.size(), 1u);
  EXPECT_THAT(multipliers.jail_notes[0], HasSubstr("jail.conf:26: bantime.multipliers"));
  auto multiplied = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-sshd.conf"), multipliers);
  ASSERT_TRUE(multiplied.ok()) << multiplied.status();
  EXPECT_EQ(multiplied->pack.rules(0).decision().escalation().factor(), 2);

  // A permanent ban becomes a year (every decision expires), said in the notes.
  Fail2banImportOptions recidive;
  ASSERT_TRUE(ReadFail2banJail({dir + "jail.conf"}, "recidive", &recidive).ok());
  EXPECT_EQ(recidive.bantime, absl::Hours(24 * 365));
  EXPECT_EQ(recidive.findtime, absl::Hours(24));
  ASSERT_EQ(recidive.jail_notes.size(), 1u);
  // A jail with no ignoreip has none (not another option's value).
  Fail2banImportOptions bare;
  ASSERT_TRUE(ReadFail2banJail({dir + "bare.conf"}, "bare", &bare).ok());
  EXPECT_EQ(bare.maxretry, 7u);
  EXPECT_EQ(bare.findtime, absl::Minutes(1));
  EXPECT_TRUE(bare.ignoreip.empty());
  EXPECT_FALSE(bare.bantime_increment);
  // Errors name the file and line; an unknown jail is kNotFound.
  Fail2banImportOptions broken;
  absl::Status s = ReadFail2banJail({dir + "jail.conf"}, "broken", &broken);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("jail.conf:18: findtime"));
  EXPECT_EQ(ReadFail2banJail({dir + "jail.conf"}, "nosuch", &broken).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ReadFail2banJail({dir + "absent.conf"}, "sshd", &broken).code(),
            absl::StatusCode::kNotFound);
}

TEST(Fail2banImportTest, ParsesFail2banTimes) {
  EXPECT_EQ(*ParseFail2banTime("600"), absl::Seconds(600));
  EXPECT_EQ(*ParseFail2banTime("10m"), absl::Minutes(10));
  EXPECT_EQ(*ParseFail2banTime("1h"), absl::Hours(1));
  EXPECT_EQ(*ParseFail2banTime("1d"), absl::Hours(24));
  EXPECT_EQ(*ParseFail2banTime("1h 30m"), absl::Minutes(90));
  EXPECT_EQ(*ParseFail2banTime("1w"), absl::Hours(24 * 7));
  EXPECT_EQ(*ParseFail2banTime("-1"), absl::InfiniteDuration());
  EXPECT_EQ(ParseFail2banTime("10 parsecs").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseFail2banTime("").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Fail2banImportTest, ApacheErrorFiltersReadTheApacheErrorFormat) {
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-apache.conf"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  const palisade::v1::Rule& rule = imported->pack.rules(0);
  ASSERT_EQ(rule.formats_size(), 1);
  EXPECT_EQ(rule.formats(0), palisade::v1::LOG_FORMAT_APACHE_ERROR);
  Matcher m(*imported);
  // 2.4 and 2.2 headers; ":port" after the address is not read into the key.
  EXPECT_EQ(m.Keys("[Sat Jul 20 21:39:11.978080 2013] [auth_basic:error] [pid 17512:tid 1401] "
                   "[client 198.51.100.7:51390] AH01617: user bob: authentication failure for "
                   "\"/basic/file\": Password Mismatch"),
            std::set<std::string>{"198.51.100.7"});
  EXPECT_EQ(m.Keys("[Sat Jul 20 21:39:11 2013] [error] [client 198.51.100.8] user bob: "
                   "authentication failure for \"/\": Password Mismatch"),
            std::set<std::string>{"198.51.100.8"});
  // A user name naming a victim: the key is the [client] the server wrote first.
  EXPECT_EQ(m.Keys("[Sat Jul 20 21:39:11 2013] [error] [client 198.51.100.9] user [client "
                   "203.0.113.66] x: authentication failure for \"/\": Password Mismatch"),
            std::set<std::string>{"198.51.100.9"});
  // An IPv6 client in brackets (Apache 2.4), as fail2ban's <HOST> takes it.
  EXPECT_EQ(m.Keys("[Sat Jul 20 22:11:44.147674 2013] [auth_basic:error] [pid 17540:tid 1401] "
                   "[client [2001:db8::10]:51548] AH01617: user bob: authentication failure for "
                   "\"/basic/file\": Password Mismatch"),
            std::set<std::string>{"2001:db8::10"});
}

TEST(Fail2banImportTest, ExtendedPrefixAndAddressAlternativesConvert) {
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-mail.conf"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  std::cout << Fail2banReportText(*imported);
  const palisade::v1::Rule& rule = imported->pack.rules(0);
  EXPECT_EQ(rule.formats(0), palisade::v1::LOG_FORMAT_SYSLOG);  // __prefix_line via known/
  ASSERT_EQ(imported->regexes.size(), 1u);
  EXPECT_EQ(imported->regexes[0].outcome, RegexOutcome::kRewritten);
  EXPECT_THAT(imported->regexes[0].reason, HasSubstr("-> <HOST>"));
  EXPECT_THAT(imported->regexes[0].reason, HasSubstr("pinned by [^[]*$"));
  Matcher m(*imported);
  const std::string head = "Feb 25 03:01:10 mx sm-mta[27713]: s1P819mk027713: ";
  EXPECT_EQ(m.Keys(absl::StrCat(head, "ruleset=check_rcpt, arg1=<a@example.org>, relay=h.example "
                                      "[198.51.100.10], reject=550 5.7.1 Relaying denied. "
                                      "Proper authentication required.")),
            std::set<std::string>{"198.51.100.10"});
  // The sender is the client's ("arg1=<x [V]>" is no \\S+@\\S+ either); a "[V]" after the
  // server's address makes no match, never a key.
  EXPECT_TRUE(m.Keys(absl::StrCat(head, "ruleset=check_rcpt, arg1=<a@example.org>, relay=h "
                                        "[198.51.100.10], reject=550 5.7.1 Relaying denied "
                                        "[203.0.113.66]"))
                  .empty());
}

TEST(Fail2banImportTest, ModeParameterSelectsTheVariant) {
  Fail2banImportOptions options;
  options.params["mode"] = "ddos";
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-sshd.conf"), options);
  ASSERT_TRUE(imported.ok()) << imported.status();
  const RegexReport* ddos = FindReport(*imported, "Did not receive identification");
  ASSERT_NE(ddos, nullptr);
  EXPECT_EQ(ddos->outcome, RegexOutcome::kConverted);
  EXPECT_EQ(ddos->line, 18);
}

TEST(Fail2banImportTest, RawFilterRefusesBackReferencesAndUnanchoredKeys) {
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-web.conf"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  const palisade::v1::Rule& rule = imported->pack.rules(0);
  EXPECT_EQ(rule.formats(0), palisade::v1::LOG_FORMAT_RAW);
  EXPECT_EQ(rule.patterns_size(), 2);
  const RegexReport* backref = FindReport(*imported, "again \\1");
  ASSERT_NE(backref, nullptr);
  EXPECT_EQ(backref->outcome, RegexOutcome::kRefused);
  EXPECT_THAT(backref->reason, HasSubstr("back-reference"));
  EXPECT_EQ(backref->line, 5);
  const RegexReport* unanchored = FindReport(*imported, "denied");
  ASSERT_NE(unanchored, nullptr);
  // Unanchored and unpinned as written; pinned by "no ':' in the rest of the line" (stricter),
  // the address is the last one "client: " introduces, as the loader's check asks.
  EXPECT_EQ(unanchored->outcome, RegexOutcome::kRewritten);
  EXPECT_THAT(unanchored->reason, HasSubstr("pinned by [^:]*$"));

  Matcher m(*imported);
  EXPECT_EQ(m.Keys("2012/04/09 11:53:29 [error] 2865#0: *66647 user \"xyz\" password mismatch, "
                   "client: 192.0.43.10, server: www.myhost.com"),
            std::set<std::string>{"192.0.43.10"});
  EXPECT_EQ(m.Keys("proxy says client: 203.0.113.5 denied"), std::set<std::string>{"203.0.113.5"});
  // A client that writes "client: V denied" before the server's text: the key stays the server's.
  EXPECT_EQ(m.Keys("GET /?q=client: 198.51.100.66 denied, client: 203.0.113.5 denied"),
            std::set<std::string>{"203.0.113.5"});
  // Text after the tail without ':' is fine; with one, no match (the check's model: the text
  // after the key is the server's tail).
  EXPECT_EQ(m.Keys("client: 203.0.113.5 denied, referrer x"), std::set<std::string>{"203.0.113.5"});
  EXPECT_TRUE(m.Keys("client: 203.0.113.5 denied, referrer: x").empty());
}

TEST(Fail2banImportTest, SyslogFilterAlsoReadsTheDaemonsOwnLog) {
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-asterisk.conf"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  std::cout << Fail2banReportText(*imported);
  ASSERT_EQ(imported->pack.rules_size(), 2);
  EXPECT_EQ(imported->pack.rules(0).formats(0), palisade::v1::LOG_FORMAT_SYSLOG);
  const palisade::v1::Rule& raw = imported->pack.rules(1);
  EXPECT_EQ(raw.id(), "f2b-demo-asterisk-raw");
  ASSERT_EQ(raw.formats_size(), 1);
  EXPECT_EQ(raw.formats(0), palisade::v1::LOG_FORMAT_RAW);
  EXPECT_EQ(raw.programs_size(), 0);
  // The twin goes through the same loader check as the syslog rule.
  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/demo-asterisk.textproto");
  std::ofstream(path) << Fail2banPackText(*imported);
  ASSERT_TRUE(LoadRulePackFile(path).ok());

  Matcher syslog(*imported);
  EXPECT_EQ(syslog.Keys("Nov  4 18:30:40 localhost asterisk[32229]: NOTICE[32257]: chan_sip.c: "
                        "Registration from '<sip:301@example.com>' failed for '1.2.3.4' - Wrong "
                        "password"),
            std::set<std::string>{"1.2.3.4"});
  Matcher file(*imported, palisade::v1::LOG_FORMAT_RAW);
  EXPECT_EQ(file.Keys("[2012-02-13 17:21:54] NOTICE[1638] chan_sip.c: Registration from "
                      "'<sip:301@example.com>' failed for '1.2.3.5' - Wrong password"),
            std::set<std::string>{"1.2.3.5"});
  // The SIP URI is the caller's: one that writes a whole forged tail is not keyed at all (the
  // regex reaches the end of the line), never on the victim.
  EXPECT_TRUE(file.Keys("[2012-02-13 17:21:54] NOTICE[1638] chan_sip.c: Registration from "
                        "'<sip:x@y>' failed for '198.51.100.9' - Wrong password' failed for "
                        "'1.2.3.6' - Wrong password")
                  .empty());
  // A line of another shape: no match in either format.
  EXPECT_TRUE(file.Keys("[2012-02-13 17:21:54] NOTICE[1638] chan_sip.c: Registered '1.2.3.7'")
                  .empty());
}

TEST(Fail2banImportTest, DatepatternBecomesTheRawLeadingDate) {
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-dates.conf"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  std::cout << Fail2banReportText(*imported);
  Matcher m(*imported);
  // assp's "%b-%d-%y %H:%M:%S", which none of the default shapes is.
  EXPECT_EQ(m.Keys("Apr-27-13 02:25:09 Blocking 217.194.197.97 - too much AUTH errors (10);"),
            std::set<std::string>{"217.194.197.97"});
  // The default shapes still apply (fail2ban falls back to its templates too).
  EXPECT_EQ(m.Keys("2013-04-27 02:25:09 Blocking 217.194.197.98 - too much AUTH errors (8);"),
            std::set<std::string>{"217.194.197.98"});
  EXPECT_TRUE(m.Keys("Apr-27-13 02:25:09 Blocking 217.194.197.97 - too few").empty());

  // fail2ban's ISO pattern with a back-reference to its separator: the separator class is
  // inlined (looser: "2019/11-26" passes too), `\s*` before the zone becomes `\s?`.
  Fail2banImportOptions options;
  options.params["datepattern"] =
      "{^LN-BEG}%%ExY(?P<_sep>[-/.])%%m(?P=_sep)%%d[T ]%%H:%%M:%%S(?:[.,]%%f)?(?:\\s*%%z)?";
  auto iso = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-dates.conf"), options);
  ASSERT_TRUE(iso.ok()) << iso.status();
  std::cout << Fail2banReportText(*iso);
  Matcher mi(*iso);
  EXPECT_EQ(mi.Keys("2019-11-26 01:04:49.008 +08:00 Blocking 192.0.2.1 - too much AUTH errors (3);"),
            std::set<std::string>{"192.0.2.1"});
  EXPECT_EQ(mi.Keys("2019/11/26 01:04:49 Blocking 192.0.2.2 - too much AUTH errors (3);"),
            std::set<std::string>{"192.0.2.2"});
  // A datepattern with a variable-length field before the date (`[^\[]*`) would put the key
  // after a field: the default shapes are used instead, and the regex still converts.
  options.params["datepattern"] = "^[^\\[]*\\[({DATE})";
  auto field = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-dates.conf"), options);
  ASSERT_TRUE(field.ok()) << field.status();
  Matcher mf(*field);
  EXPECT_EQ(mf.Keys("2013-04-27 02:25:09 Blocking 192.0.2.3 - too much AUTH errors (8);"),
            std::set<std::string>{"192.0.2.3"});
}

// Lines in the shapes fail2ban's test logs hold: a daemon's own log with its tag after the date
// (nsd), the failure on the line after its date (guacamole, maxlines 2), a prefregex content
// ending in `.*` (zoneminder), and dates with a zone after a blank, a bracketed ISO date with
// milliseconds, monit's "[ZONE Mmm dd hh:mm:ss]".
TEST(Fail2banImportTest, LinesInTheShapesOfFail2bansTestLogs) {
  auto twin = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-shapes.conf"));
  ASSERT_TRUE(twin.ok()) << twin.status();
  std::cout << Fail2banReportText(*twin);
  Matcher raw(*twin, palisade::v1::LOG_FORMAT_RAW);
  EXPECT_EQ(raw.Keys("[1387348935] nsd[23600]: info: axfr for zone domain.nl. from client "
                     "192.0.2.115 refused, no acl matches."),
            std::set<std::string>{"192.0.2.115"});
  EXPECT_EQ(raw.Keys("[2021-03-05 05:25:14.562] nsd[160800]: info: axfr for zone example.com. "
                     "from client 192.0.2.32 refused, no acl matches"),
            std::set<std::string>{"192.0.2.32"});
  EXPECT_EQ(raw.Keys("[1387348935] info: axfr for zone a. from client 192.0.2.116 refused, no acl "
                     "matches"),
            std::set<std::string>{"192.0.2.116"});
  // Another daemon's tag, or a pid of eight digits, is no part of the shape.
  EXPECT_TRUE(raw.Keys("[1387348935] named[1]: info: axfr for zone a. from client 192.0.2.117 "
                       "refused, no acl matches")
                  .empty());
  EXPECT_TRUE(raw.Keys("[1387348935] nsd[12345678]: info: axfr for zone a. from client "
                       "192.0.2.118 refused, no acl matches")
                  .empty());

  auto lines = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-lines.conf"));
  ASSERT_TRUE(lines.ok()) << lines.status();
  std::cout << Fail2banReportText(*lines);
  Matcher l(*lines);
  EXPECT_EQ(l.Keys("WARNING: Authentication attempt from 192.0.2.120 for user \"null\" failed."),
            std::set<std::string>{"192.0.2.120"});

  auto content = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-content.conf"));
  ASSERT_TRUE(content.ok()) << content.status();
  std::cout << Fail2banReportText(*content);
  Matcher c(*content);
  EXPECT_EQ(c.Keys("[Mon Mar 28 16:50:49.522240 2016] [:error] [pid 1795] [client 10.1.1.1:50700] "
                   "WAR [Login denied for user \"u\"], referer: https://zoneminder/"),
            std::set<std::string>{"10.1.1.1"});

  auto dates = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-dates.conf"));
  ASSERT_TRUE(dates.ok()) << dates.status();
  Matcher d(*dates);
  for (const char* date : {"2019-11-26 01:04:49.008 +08:00", "[2021-03-05 05:25:14.562]",
                           "[PDT Apr 16 21:05:29]", "[CEST Aug  6 10:14:52]"}) {
    EXPECT_EQ(d.Keys(absl::StrCat(date, " Blocking 192.0.2.121 - too much AUTH errors (3);")),
              std::set<std::string>{"192.0.2.121"})
        << date;
  }
}

// Python's look-aheads with an RE2 rewrite. testdata/lookahead_equivalence.py checks each with
// Python's `re` on fail2ban's annotated sshd and postfix logs: the rewrite matches the same lines.
TEST(Fail2banImportTest, NegativeLookaheadsBecomeIgnorePatternsOrGo) {
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-lookahead.conf"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  std::cout << Fail2banReportText(*imported);
  const RegexReport* sasl = FindReport(*imported, "SASL");
  ASSERT_NE(sasl, nullptr);
  EXPECT_EQ(sasl->outcome, RegexOutcome::kRewritten) << sasl->reason;
  EXPECT_THAT(sasl->reason, HasSubstr("A(?!X)B -> AB, with A(?:X) an ignore pattern"));
  const RegexReport* alg = FindReport(*imported, "negotiate");
  ASSERT_NE(alg, nullptr);
  EXPECT_EQ(alg->outcome, RegexOutcome::kRewritten) << alg->reason;
  EXPECT_THAT(alg->reason, HasSubstr("(?:\\w+ ){m,n}\\w+ W"));
  EXPECT_THAT(alg->converted, Not(HasSubstr("(?!")));
  // The split failregex and its ignore pattern are a rule of their own, in the raw twin too.
  std::map<std::string, const palisade::v1::Rule*> by_id;
  for (const palisade::v1::Rule& r : imported->pack.rules()) by_id[r.id()] = &r;
  for (const char* id : {"f2b-demo-lookahead-lookahead-1", "f2b-demo-lookahead-raw-lookahead-1"}) {
    ASSERT_EQ(by_id.count(id), 1u) << id;
    ASSERT_EQ(by_id[id]->ignore_patterns_size(), 1) << id;
    EXPECT_THAT(by_id[id]->ignore_patterns(0),
                HasSubstr("authentication failed:(?: Connection lost"));
    EXPECT_EQ(by_id[id]->patterns_size(), 1) << id;
  }
  for (const char* id : {"f2b-demo-lookahead", "f2b-demo-lookahead-raw"}) {
    ASSERT_EQ(by_id.count(id), 1u) << id;
    EXPECT_EQ(by_id[id]->ignore_patterns_size(), 0) << id;
  }
  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/demo-lookahead.textproto");
  std::ofstream(path) << Fail2banPackText(*imported);
  ASSERT_TRUE(LoadRulePackFile(path).ok());

  Matcher m(*imported);
  // Python: `failed:(?! Connection lost ...)` matches the first, not the second.
  EXPECT_EQ(m.Keys("Jan  1 00:00:00 mail postfix/smtpd[1]: warning: unknown[192.0.2.1]: SASL LOGIN "
                   "authentication failed: UGFzc3dvcmQ6"),
            std::set<std::string>{"192.0.2.1"});
  EXPECT_TRUE(m.Keys("Jan  1 00:00:00 mail postfix/smtpd[1]: warning: unknown[192.0.2.1]: SASL "
                     "LOGIN authentication failed: Connection lost to authentication server")
                  .empty());
  // Python: `(?:\w+ (?!found\b)){0,2}\w+ found\.` matches one to three words before "found.".
  EXPECT_EQ(m.Keys("Jan  1 00:00:00 mail postfix/smtpd[2]: Unable to negotiate with 192.0.2.2 port "
                   "22: no matching key exchange method found. Their offer: x"),
            std::set<std::string>{"192.0.2.2"});
  EXPECT_EQ(m.Keys("Jan  1 00:00:00 mail postfix/smtpd[3]: Unable to negotiate with 192.0.2.3 port "
                   "22: no matching cipher found. Their offer: x"),
            std::set<std::string>{"192.0.2.3"});
  // named-refused's optional category `(?:(?!error|info)[\w-]+: )?` before the key: a look-ahead
  // inside a group has no rewrite, so the optional part is left out (stricter: a line with a
  // category does not match; the key is the one right after "client ").
  const RegexReport* category = FindReport(*imported, "client <HOST>");
  ASSERT_NE(category, nullptr);
  EXPECT_EQ(category->outcome, RegexOutcome::kRewritten) << category->reason;
  EXPECT_THAT(category->reason, HasSubstr("without 1 optional field"));
  EXPECT_EQ(m.Keys("Jan  1 00:00:00 mail postfix/smtpd[5]: client 192.0.2.7#53: query 'x/A/IN' "
                   "denied"),
            std::set<std::string>{"192.0.2.7"});
  EXPECT_TRUE(m.Keys("Jan  1 00:00:00 mail postfix/smtpd[5]: security: client 192.0.2.8#53: "
                     "query 'x/A/IN' denied")
                  .empty());
  // Four words: neither Python's regex nor the rewrite.
  EXPECT_TRUE(m.Keys("Jan  1 00:00:00 mail postfix/smtpd[4]: Unable to negotiate with 192.0.2.4 "
                     "port 22: no matching a b c d found. x")
                  .empty());
}

TEST(Fail2banImportTest, BlankRunsBeforeTheKeyAreBoundedNotAfterIt) {
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-blanks.conf"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  std::cout << Fail2banReportText(*imported);
  const RegexReport* client = FindReport(*imported, "Client");
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->outcome, RegexOutcome::kRewritten) << client->reason;
  EXPECT_THAT(client->reason, HasSubstr("at most 16 blanks"));
  const RegexReport* ban = FindReport(*imported, "Ban");
  ASSERT_NE(ban, nullptr);
  EXPECT_EQ(ban->outcome, RegexOutcome::kRewritten) << ban->reason;
  // As fail2ban writes it, the " on \S+" copies after the key re-cross the one-space
  // introducer: the user name "x 198.51.100.1 on" would key 198.51.100.1 on
  // "... user x 198.51.100.1 on 192.0.2.9 port 22 [preauth]". It converts only with that
  // alternative left out (then the blank run after the key may be bounded: the check's
  // automaton search sees bounded copies), and the injection below finds nothing.
  const RegexReport* closed = FindReport(*imported, "Connection closed");
  ASSERT_NE(closed, nullptr);
  EXPECT_EQ(closed->outcome, RegexOutcome::kRewritten) << closed->reason;
  EXPECT_THAT(closed->reason, HasSubstr("1 alternative after the address holding a free field"));
  EXPECT_THAT(closed->converted, Not(HasSubstr("on \\S+")));
  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/demo-blanks.textproto");
  std::ofstream(path) << Fail2banPackText(*imported);
  ASSERT_TRUE(LoadRulePackFile(path).ok());

  Matcher m(*imported);
  EXPECT_EQ(m.Keys("2020-01-01 10:00:00   Client   192.0.2.3  denied by rule"),
            std::set<std::string>{"192.0.2.3"});
  EXPECT_EQ(m.Keys("2020-01-01 10:00:00 NOTICE  [sshd]  Ban 192.0.2.4  "),
            std::set<std::string>{"192.0.2.4"});
  // The key is the last token: text after it (where a forged second address would go) fails.
  EXPECT_TRUE(m.Keys("2020-01-01 10:00:00 NOTICE [sshd] Ban 192.0.2.4 Ban 198.51.100.2").empty());
  // sshd's ddos-mode regex with the user part optional (`\S+|.*?`): converted with it, pinned
  // and without the " on \S+" alternatives after the key (preferred to leaving the user part
  // out, which would miss every line that has it). A user name holding a victim makes the
  // server's address the key, never the victim.
  const RegexReport* optional_user = FindReport(*imported, "(?:by|from)");
  ASSERT_NE(optional_user, nullptr);
  EXPECT_EQ(optional_user->outcome, RegexOutcome::kRewritten) << optional_user->reason;
  EXPECT_THAT(optional_user->reason, Not(HasSubstr("optional field before the address")));
  EXPECT_THAT(optional_user->reason, HasSubstr("alternative after the address holding a free"));
  EXPECT_EQ(m.Keys("2020-01-01 10:00:00 Connection closed by 192.0.2.6 port 22 [preauth]"),
            std::set<std::string>{"192.0.2.6"});
  EXPECT_EQ(m.Keys("2020-01-01 10:00:00 Connection closed by authenticating user x "
                   "198.51.100.1 on 192.0.2.9 port 22 [preauth]"),
            std::set<std::string>{"192.0.2.9"});
  EXPECT_EQ(m.Keys("2020-01-01 10:00:00 Connection closed by authenticating user x "
                   "198.51.100.1 port 1 192.0.2.9 port 22 [preauth]"),
            std::set<std::string>{"192.0.2.9"});
  EXPECT_EQ(m.Keys("2020-01-01 10:00:00 Connection closed by authenticating user root "
                   "192.0.2.10 port 46038 [preauth]"),
            std::set<std::string>{"192.0.2.10"});
  EXPECT_EQ(m.Keys("2020-01-01 10:00:00 Disconnected from invalid user a b 198.51.100.1 port 1 "
                   "[preauth] 192.0.2.12 port 2 [preauth]"),
            std::set<std::string>{"192.0.2.12"});
  // More than 16 blanks: stricter than fail2ban, not matched.
  EXPECT_TRUE(m.Keys(absl::StrCat("2020-01-01 10:00:00 Client", std::string(20, ' '),
                                  "192.0.2.5 denied"))
                  .empty());
}

TEST(Fail2banImportTest, TailsAfterTheKeyAreTightenedNeverTheCheck) {
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-tighten.conf"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  std::cout << Fail2banReportText(*imported);
  // The recipient `<[^>]*>` after `\[<HOST>\]` could hold "[victim]": converted only once no
  // field after the key takes '[' (and the rest of the line has none).
  const RegexReport* relay = FindReport(*imported, "Relay access");
  ASSERT_NE(relay, nullptr);
  EXPECT_EQ(relay->outcome, RegexOutcome::kRewritten) << relay->reason;
  EXPECT_THAT(relay->reason, HasSubstr("no '[' in the fields after the address"));
  EXPECT_THAT(relay->converted, HasSubstr("<[^>\\[]*>"));
  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/demo-tighten.textproto");
  std::ofstream(path) << Fail2banPackText(*imported);
  ASSERT_TRUE(LoadRulePackFile(path).ok());

  Matcher m(*imported);
  const std::string head = "Jul 12 07:47:48 saturn postfix/smtpd[8738]: ";
  EXPECT_EQ(m.Keys(absl::StrCat(head, "NOQUEUE: reject: RCPT from 1-2-3-4.example.com"
                                      "[203.0.113.4]: 554 5.7.1 <smtp@example.com>: Relay access "
                                      "denied; from=<john@example.com> to=<smtp@example.org> "
                                      "proto=SMTP helo=<198.51.100.17>")),
            std::set<std::string>{"203.0.113.4"});
  // Injections: the client writes the recipient, the sender and the helo name; none of them
  // can make a victim the key (the line is missed instead: stricter than fail2ban).
  for (const char* tail : {"<x[198.51.100.7]>: Relay access denied",
                           "<a@b>: Relay access denied; from=<x> to=<[198.51.100.7]>",
                           "<a@b>: Relay access denied; helo=<x> RCPT from y[198.51.100.7]: 554 "
                           "5.7.1 <c>: Relay access denied"}) {
    std::set<std::string> keys = m.Keys(absl::StrCat(
        head, "NOQUEUE: reject: RCPT from unknown[203.0.113.5]: 554 5.7.1 ", tail));
    EXPECT_EQ(keys.count("198.51.100.7"), 0u) << tail;
  }

  // A look-ahead inside an alternation (postfix's ddos prefix): that alternative is left out,
  // the rest converts (pinned: the "[" of a later field would otherwise be re-crossed).
  const RegexReport* errors = FindReport(*imported, "too many errors");
  ASSERT_NE(errors, nullptr);
  EXPECT_EQ(errors->outcome, RegexOutcome::kRewritten) << errors->reason;
  EXPECT_THAT(errors->reason, HasSubstr("without 1 alternative holding a field or Python-only"));
  EXPECT_EQ(m.Keys(absl::StrCat(head, "too many errors after RCPT from example.com[203.0.113.11]")),
            std::set<std::string>{"203.0.113.11"});
  EXPECT_TRUE(m.Keys(absl::StrCat(head, "lost connection after RCPT from x[203.0.113.12]")).empty());
  EXPECT_TRUE(m.Keys(absl::StrCat(head, "too many errors after RCPT from x[203.0.113.13]: "
                                        "helo=<y[198.51.100.7]>"))
                  .empty());

  // Both at once (postfix's aggressive SASL line): the ignore pattern split from the top-level
  // look-ahead loses the same alternative as the failregex, so it still applies.
  const RegexReport* sasl = FindReport(*imported, "SASL");
  ASSERT_NE(sasl, nullptr);
  EXPECT_EQ(sasl->outcome, RegexOutcome::kRewritten) << sasl->reason;
  EXPECT_EQ(m.Keys(absl::StrCat(head, "warning: unknown[203.0.113.30]: SASL LOGIN authentication "
                                      "failed: Password:")),
            std::set<std::string>{"203.0.113.30"});
  EXPECT_TRUE(m.Keys(absl::StrCat(head, "warning: unknown[203.0.113.31]: SASL LOGIN "
                                        "authentication failed: Connection lost to server"))
                  .empty());
  EXPECT_EQ(m.Keys(absl::StrCat(head, "warning: unknown[203.0.113.32]: SASL LOGIN authentication "
                                      "failed: x[198.51.100.7]: SASL LOGIN authentication "
                                      "failed:"))
                .count("198.51.100.7"),
            0u);

  // A back-reference (sendmail-reject's `(?P=email)`) becomes the group's pattern (looser: any
  // address, not the same one); the key check still judges the regex.
  const RegexReport* relaying = FindReport(*imported, "Relaying denied");
  ASSERT_NE(relaying, nullptr);
  EXPECT_EQ(relaying->outcome, RegexOutcome::kRewritten) << relaying->reason;
  EXPECT_THAT(relaying->reason, HasSubstr("(?P=name) -> the group's pattern"));
  const std::string sm = "Feb 25 03:01:10 mx sm-mta[27713]: ";
  EXPECT_EQ(m.Keys(absl::StrCat(sm, "ruleset=check_rcpt, arg1=<a@example.org>, relay=h.example "
                                    "[203.0.113.40], reject=550 5.7.1 <a@example.org>... "
                                    "Relaying denied")),
            std::set<std::string>{"203.0.113.40"});
  for (const char* arg : {"<x@[198.51.100.7]>", "<x@y>,relay=[198.51.100.7],"}) {
    std::set<std::string> keys = m.Keys(
        absl::StrCat(sm, "ruleset=check_rcpt, arg1=", arg, ", relay=h [203.0.113.41], "
                     "reject=550 5.7.1 ", arg, "... Relaying denied"));
    EXPECT_EQ(keys.count("198.51.100.7"), 0u) << arg;
  }

  // Solaris' message id before the message.
  EXPECT_EQ(m.Keys("Apr 29 20:12:08 host sshd[63814]: [ID 800047 auth.info] Failed "
                   "keyboard-interactive for james from 203.0.113.22 port 54520 ssh2"),
            std::set<std::string>{"203.0.113.22"});
  EXPECT_EQ(m.Keys("Apr 29 20:12:08 host sshd[63814]: Failed keyboard-interactive for james "
                   "from 203.0.113.23 port 54520 ssh2"),
            std::set<std::string>{"203.0.113.23"});
  // A user name holding a victim after the id: `\S+` takes no blank, so no match, no victim.
  EXPECT_TRUE(m.Keys("Apr 29 20:12:08 host sshd[63814]: [ID 800047 auth.info] Failed "
                     "keyboard-interactive for x from 198.51.100.7 port 1 ssh2 from 203.0.113.24 "
                     "port 54520 ssh2")
                  .empty());
  EXPECT_TRUE(m.Keys("Apr 29 20:12:08 host sshd[63814]: [ID 800047 x from 198.51.100.7 port 1 "
                     "ssh2] Failed keyboard-interactive for x from 203.0.113.25 port 1 ssh2 x")
                  .empty());
}

// The reviewed server facts (kServerFacts in fail2ban_import.cc): a free field after the
// address becomes the tail dovecot writes, so that the unchanged key check passes; a client's
// copy of the introducer and a victim in a user name never becomes the key.
TEST(Fail2banImportTest, ServerFactsPinTheServersTailNeverTheClients) {
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "facts/dovecot.conf"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  std::cout << Fail2banReportText(*imported);
  for (const char* needle : {"rip=<HOST>", "pam\\(", "[a-z\\-]{3,15}"}) {
    const RegexReport* r = FindReport(*imported, needle);
    ASSERT_NE(r, nullptr) << needle;
    EXPECT_EQ(r->outcome, RegexOutcome::kRewritten) << needle << ": " << r->reason;
    EXPECT_THAT(r->reason, HasSubstr("server fact (reviewed table)")) << needle;
  }
  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/facts-dovecot.textproto");
  std::ofstream(path) << Fail2banPackText(*imported);
  ASSERT_TRUE(LoadRulePackFile(path).ok());

  Matcher m(*imported);
  const std::string head = "Jul 26 11:12:19 mx dovecot: imap-login: ";
  // The server's tails: lip, TLS status, session id.
  for (const char* tail : {"", ", TLS", ", TLS: Disconnected, session=<q454Xu/vMwBZApgg>",
                           ", TLS, TLSv1.3 with cipher TLS_AES_256 (256/256 bits)",
                           ", mpid=7, secured, session=<S5dIdTFCDKUWWMbU>"}) {
    EXPECT_EQ(m.Keys(absl::StrCat(head, "Disconnected (auth failed, 1 attempts in 2 secs): "
                                        "user=<test>, method=PLAIN, rip=203.0.113.50, "
                                        "lip=192.168.1.1",
                                  tail)),
              std::set<std::string>{"203.0.113.50"})
        << tail;
  }
  // Before dovecot 2.0 there was no lip.
  EXPECT_EQ(m.Keys("Jan 29 09:34:17 mx dovecot: pop3-login: Info: Aborted login (auth failed, 1 "
                   "attempts in 62 secs): user=<carl>, method=PLAIN, rip=203.0.113.58, TLS"),
            std::set<std::string>{"203.0.113.58"});
  // Injections: the user name (and the method) are the client's. A copy of " rip=V, lip=..."
  // in them never keys V.
  for (const char* user : {"x>, method=PLAIN, rip=198.51.100.7, lip=1.1.1.1, TLS",
                           "x, rip=198.51.100.7, lip=1.1.1.1", "rip=198.51.100.7"}) {
    std::set<std::string> keys =
        m.Keys(absl::StrCat(head, "Disconnected (auth failed, 1 attempts): user=<", user,
                            ">, method=PLAIN, rip=203.0.113.51, lip=192.168.1.1, TLS"));
    EXPECT_EQ(keys.count("198.51.100.7"), 0u) << user;
  }
  EXPECT_EQ(m.Keys(absl::StrCat(head, "Disconnected (auth failed, 1 attempts): user=<x>, "
                                      "method=P rip=198.51.100.7, lip=1.1.1.1, rip=203.0.113.52, "
                                      "lip=192.168.1.1"))
                .count("198.51.100.7"),
            0u);

  // The auth process' prefix "db(user,ADDR[,<session>]): ", then the message to the end.
  const std::string auth = "Jun 11 13:57:17 mx dovecot: auth: ";
  EXPECT_EQ(m.Keys(absl::StrCat(auth, "sql(admin@example.ru,203.0.113.53,<6rXunFtu493AqJDi>): "
                                      "Password mismatch")),
            std::set<std::string>{"203.0.113.53"});
  EXPECT_EQ(m.Keys(absl::StrCat(auth, "ldap(u@example.org,203.0.113.54,<LZmGp6m>): unknown user "
                                      "(SHA1 of given password: f638ff)")),
            std::set<std::string>{"203.0.113.54"});
  EXPECT_EQ(m.Keys(absl::StrCat(auth, "ldap(dog,203.0.113.55,): invalid credentials")),
            std::set<std::string>{"203.0.113.55"});
  EXPECT_EQ(m.Keys("Jan 29 05:32:50 mx dovecot: auth-worker(304): pam(username,203.0.113.56): "
                   "pam_authenticate() failed: Authentication failure (password mismatch?)"),
            std::set<std::string>{"203.0.113.56"});
  // The user name is the client's: "x,V" (fail2ban's `\S*` and `,\S*` let either address be the
  // key), or a whole copy of the message.
  for (const char* user : {"x,198.51.100.7", "x,198.51.100.7): unknown user (y"}) {
    for (const char* db : {"sql", "pam"}) {
      std::set<std::string> keys = m.Keys(absl::StrCat(
          auth, db, "(", user, ",203.0.113.57,<abc>): ",
          std::string(db) == "pam" ? "pam_authenticate() failed: Permission denied"
                                   : "unknown user"));
      EXPECT_EQ(keys.count("198.51.100.7"), 0u) << db << " " << user;
    }
  }
  // dovecot's own log (TAI64N), its tag one of the filter's daemon names.
  Matcher raw(*imported, palisade::v1::LOG_FORMAT_RAW);
  EXPECT_EQ(raw.Keys("@400000004c91b044077a9e94 dovecot-auth: pam(web,203.0.113.58): "
                     "pam_authenticate() failed: Permission denied"),
            std::set<std::string>{"203.0.113.58"});
  EXPECT_TRUE(raw.Keys("@400000004c91b044077a9e94 imapd: pam(web,203.0.113.59): "
                       "pam_authenticate() failed: Permission denied")
                  .empty());
}

// sendmail's __prefix_line (in [Definition]) adds the queue id after program[pid]: it stays in
// the regexes, and fail2ban's <F-MLFID> session is by that id (one process serves several
// messages), not by the pid alone.
TEST(Fail2banImportTest, QueueIdAfterThePidKeepsAndKeysTheSession) {
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "facts/sendmail-reject.conf"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  std::cout << Fail2banReportText(*imported);
  EXPECT_EQ(imported->session_by, "mlfid");
  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/facts-sendmail.textproto");
  std::ofstream(path) << Fail2banPackText(*imported);
  ASSERT_TRUE(LoadRulePackFile(path).ok());
  Matcher m(*imported);
  const std::string head = "Nov  3 11:35:30 mx sendmail[26254]: ";
  EXPECT_EQ(m.Keys(absl::StrCat(head, "s1R9r60D044307: rejecting commands from example.com "
                                      "[203.0.113.60] due to pre-greeting traffic after 6 "
                                      "seconds")),
            std::set<std::string>{"203.0.113.60"});
  // Message rA37ZTSC026254 notes its relay's address; its "No such user" counts on it, the
  // same process' other message (another queue id) does not.
  EXPECT_TRUE(m.Keys(absl::StrCat(head, "rA37ZTSC026254: from=<a@example.com>, size=0, class=0, "
                                        "nrcpts=0, bodytype=8BITMIME, proto=ESMTP, daemon=MTA, "
                                        "relay=h.example [203.0.113.61]"))
                  .empty());
  EXPECT_EQ(m.Keys(absl::StrCat(head, "rA37ZTSC026254: <b@example.com>... No such user here")),
            std::set<std::string>{"203.0.113.61"});
  EXPECT_TRUE(
      m.Keys(absl::StrCat(head, "rA37ZTSC026252: <c@example.com>... No such user here")).empty());
  // The sender is the client's: a copy of the relay field in it keys nothing else.
  EXPECT_TRUE(m.Keys(absl::StrCat(head, "rA37ZTSC026260: from=<x@y>, relay=h [198.51.100.7]>, "
                                        "size=0, class=0, nrcpts=0, bodytype=8BITMIME, "
                                        "proto=ESMTP, daemon=MTA, relay=h [203.0.113.62]"))
                  .empty());
  EXPECT_TRUE(m.Keys(absl::StrCat(head, "rA37ZTSC026260: <d@example.com>... No such user here"))
                  .empty());
}

// postfix's reject reasons that repeat the client's address in brackets, and its ddos prefix's
// look-ahead spelled out: the key is still the first bracketed address, never a "[victim]" in
// the sender, recipient or helo the client writes.
TEST(Fail2banImportTest, ServerFactsForPostfixKeepTheClientsBracketsOut) {
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "facts/postfix.conf"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  std::cout << Fail2banReportText(*imported);
  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/facts-postfix.textproto");
  std::ofstream(path) << Fail2banPackText(*imported);
  ASSERT_TRUE(LoadRulePackFile(path).ok());
  Matcher m(*imported);
  const std::string head = "Dec 21 21:17:29 mx postfix/smtpd[7150]: NOQUEUE: reject: RCPT from ";
  EXPECT_EQ(m.Keys(absl::StrCat(head, "bad.example.com[203.0.113.70]: 450 4.7.1 Client host "
                                      "rejected: cannot find your hostname, [203.0.113.70]; "
                                      "from=<a@example.com> to=<b@example.com> proto=ESMTP "
                                      "helo=<example.com>")),
            std::set<std::string>{"203.0.113.70"});
  EXPECT_EQ(m.Keys(absl::StrCat(head, "unknown[203.0.113.71]: 554 5.7.1 Service unavailable; "
                                      "Client host [203.0.113.71] blocked using rbl.example.com; "
                                      "http://www.example.com/query?ip=203.0.113.71; "
                                      "from=<a@example.com> to=<b@example.com> proto=ESMTP "
                                      "helo=<example.com>")),
            std::set<std::string>{"203.0.113.71"});
  // Injections: the sender, the recipient and the helo are the client's.
  for (const char* tail :
       {"; from=<x[198.51.100.7]> to=<b@example.com> proto=ESMTP helo=<y>",
        "; from=<a@b> to=<b@c> proto=ESMTP helo=<x: cannot find your hostname, [198.51.100.7]>",
        "; from=<a@b> to=<b@c> proto=ESMTP helo=<[198.51.100.7]>"}) {
    std::set<std::string> keys = m.Keys(
        absl::StrCat(head, "unknown[203.0.113.72]: 450 4.7.1 Client host rejected: cannot find "
                           "your hostname, [203.0.113.72]",
                     tail));
    EXPECT_EQ(keys.count("198.51.100.7"), 0u) << tail;
  }
  // A helo that is an address literal, the client's own or another (the key stays the first).
  for (const char* helo : {"203.0.113.75", "198.51.100.7"}) {
    EXPECT_EQ(m.Keys(absl::StrCat(head, "unknown[203.0.113.75]: 550 5.7.25 Client host rejected: "
                                        "cannot find your hostname, [203.0.113.75]; from=<a@b> "
                                        "to=<c@d> proto=ESMTP helo=<[",
                                  helo, "]>")),
              std::set<std::string>{"203.0.113.75"})
        << helo;
  }

  Fail2banImportOptions ddos;
  ddos.params["mode"] = "ddos";
  auto lost = ImportFail2banFilter(absl::StrCat(kTestdata, "facts/postfix.conf"), ddos);
  ASSERT_TRUE(lost.ok()) << lost.status();
  std::cout << Fail2banReportText(*lost);
  Matcher d(*lost);
  const std::string smtpd = "Feb 18 09:45:10 mx postfix/smtpd[42]: ";
  for (const char* cmd : {"CONNECT", "AUTH", "STARTTLS", "D", "DAT", "DATX"}) {
    EXPECT_EQ(d.Keys(absl::StrCat(smtpd, "lost connection after ", cmd,
                                  " from spammer.example.com[203.0.113.73]")),
              std::set<std::string>{"203.0.113.73"})
        << cmd;
  }
  // `(?! DATA)`: a connection lost after DATA is no attack (fail2ban's intent, kept).
  for (const char* cmd : {"DATA", "DATAX"}) {
    EXPECT_TRUE(d.Keys(absl::StrCat(smtpd, "lost connection after ", cmd,
                                    " from h.example.com[203.0.113.74]"))
                    .empty())
        << cmd;
  }
}

// sshd: the "Change of username" tail, the key exchange failure keyed by its session, and the
// public key's fingerprint after "ssh2: ", each the form sshd writes; a user name holding
// " from V port 1 ssh2" never keys V.
TEST(Fail2banImportTest, ServerFactsForSshdTakeOnlyWhatSshdWrites) {
  Fail2banImportOptions options;
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "facts/sshd.conf"), options);
  ASSERT_TRUE(imported.ok()) << imported.status();
  std::cout << Fail2banReportText(*imported);
  for (const RegexReport& r : imported->regexes) {
    EXPECT_NE(r.outcome, RegexOutcome::kRefused) << r.original << ": " << r.reason;
  }
  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/facts-sshd.textproto");
  std::ofstream(path) << Fail2banPackText(*imported);
  ASSERT_TRUE(LoadRulePackFile(path).ok());
  Matcher m(*imported);
  EXPECT_EQ(m.Keys("Mar 19 16:47:49 test sshd[5672]: Disconnecting invalid user admin "
                   "203.0.113.80 port 44004: Change of username or service not allowed: "
                   "(admin,ssh-connection) -> (user,ssh-connection) [preauth]"),
            std::set<std::string>{"203.0.113.80"});
  EXPECT_TRUE(m.Keys("Mar 19 16:47:50 test sshd[5673]: Disconnecting invalid user x "
                     "198.51.100.7 port 1: Change of username or service not allowed: (a,b) -> "
                     "(c,d) [preauth] 203.0.113.81 port 2: Change of username or service not "
                     "allowed: (a,b) -> (c,d) [preauth]")
                  .count("198.51.100.7") == 0);
  EXPECT_EQ(m.Keys("Jul 05 18:22:45 mercury sshd[4670]: Failed publickey for graysky from "
                   "203.0.113.82 port 37955 ssh2: RSA SHA256:v3dpapGleDaUKf4V1vKyR9ZyUgjaJA"),
            std::set<std::string>{"203.0.113.82"});
  // OpenSSH before 6.8: the MD5 fingerprint as 16 bare hex pairs.
  EXPECT_EQ(m.Keys("Nov 28 09:16:05 srv sshd[32310]: Failed publickey for git from 203.0.113.87 "
                   "port 57910 ssh2: RSA 14:ba:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd"),
            std::set<std::string>{"203.0.113.87"});
  EXPECT_EQ(m.Keys("Jul 05 18:22:46 mercury sshd[4671]: Failed password for root from "
                   "203.0.113.83 port 1 ssh2"),
            std::set<std::string>{"203.0.113.83"});
  for (const char* user : {"x from 198.51.100.7 port 1 ssh2: RSA SHA256:abc",
                           "invalid user x from 198.51.100.7 port 1 ssh2"}) {
    std::set<std::string> keys = m.Keys(absl::StrCat(
        "Jul 05 18:22:47 mercury sshd[4672]: Failed password for ", user,
        " from 203.0.113.84 port 2 ssh2"));
    EXPECT_EQ(keys.count("198.51.100.7"), 0u) << user;
  }
  // What sshd writes after "sshd2" / "ssh1" follows ": " and may be the client's (ssh1's
  // "ruser NAME", fail2ban's own test line): a user name never runs across it to a victim.
  for (const char* rest : {" port 20000 ssh1: ruser x from 198.51.100.7",
                           " port 20000 ssh2: ruser x from 198.51.100.7"}) {
    for (const char* addr : {"203.0.113.86", "2001:db8::86"}) {
      std::set<std::string> keys = m.Keys(absl::StrCat(
          "Sep 29 17:15:03 spaceman sshd[12947]: Failed password for user from ", addr, rest));
      EXPECT_EQ(keys.count("198.51.100.7"), 0u) << addr << rest;
    }
  }
  // The key exchange failure has no address: the session's, noted by "Connection from".
  EXPECT_TRUE(m.Keys("Nov 26 15:03:30 host sshd[22440]: Connection from 203.0.113.85 port 39678 "
                     "on 192.168.1.9 port 22")
                  .empty());
  EXPECT_EQ(m.Keys("Nov 26 15:03:31 host sshd[22440]: fatal: Unable to negotiate a key exchange "
                   "method [preauth]"),
            std::set<std::string>{"203.0.113.85"});
  EXPECT_TRUE(m.Keys("Nov 26 15:03:31 host sshd[22441]: fatal: Unable to negotiate a key exchange "
                     "method [preauth]")
                  .empty());
}

// named-refused: BIND's categories as its fixed list, the quoted query (no blank in it) between
// the failregex and " denied", and BIND's own date shape. A query name is the client's: a copy
// of "client V#1: query" in it never keys V.
TEST(Fail2banImportTest, ServerFactsForBindQuoteTheQuery) {
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "facts/named-refused.conf"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  std::cout << Fail2banReportText(*imported);
  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/facts-named.textproto");
  std::ofstream(path) << Fail2banPackText(*imported);
  ASSERT_TRUE(LoadRulePackFile(path).ok());
  Matcher m(*imported);
  EXPECT_EQ(m.Keys("Jul 24 14:16:55 raid5 named[3935]: client 203.0.113.90#4795: query "
                   "'ricreig.com/NS/IN' denied"),
            std::set<std::string>{"203.0.113.90"});
  EXPECT_EQ(m.Keys("Oct 23 02:06:39 security: info: client @0x7f4e446fd6e8 203.0.113.91#53 "
                   "(example.io): query (cache) 'example.io/A/IN' denied"),
            std::set<std::string>{"203.0.113.91"});
  EXPECT_EQ(m.Keys("11-Aug-2013 03:36:11.372 error: client 203.0.113.92#52115: zone transfer "
                   "'domain.com/AXFR/IN' denied"),
            std::set<std::string>{"203.0.113.92"});
  for (const char* name : {"x' denied client 198.51.100.7#1: query 'y", "a client 198.51.100.7#1"}) {
    std::set<std::string> keys =
        m.Keys(absl::StrCat("Jul 24 14:16:56 raid5 named[3935]: client 203.0.113.93#4795: query '",
                            name, "/A/IN' denied"));
    EXPECT_EQ(keys.count("198.51.100.7"), 0u) << name;
  }
  // Not a category of BIND's: the line is missed (fail2ban took any word but error/info).
  EXPECT_TRUE(m.Keys("Oct 23 02:06:40 mycategory: info: client 203.0.113.94#53: query "
                     "'example.io/A/IN' denied")
                  .empty());
}

// exim's quoted SMTP command holds the client's bytes, quotes included: without the pattern's
// look-ahead (the same language) the regex converts, and a copy of the server's tail with a
// victim inside the command never keys the victim.
TEST(Fail2banImportTest, ServerFactsForEximDropARedundantLookahead) {
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "facts/exim.conf"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  std::cout << Fail2banReportText(*imported);
  ASSERT_EQ(imported->regexes.size(), 1u);
  EXPECT_THAT(imported->regexes[0].reason, HasSubstr("server fact (reviewed table)"));
  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/facts-exim.textproto");
  std::ofstream(path) << Fail2banPackText(*imported);
  ASSERT_TRUE(LoadRulePackFile(path).ok());
  Matcher m(*imported);
  EXPECT_EQ(m.Keys("2016-03-18 00:34:06 [7513] SMTP protocol error in \"AUTH LOGIN\" H=(ylmf-pc) "
                   "[203.0.113.100]:60723 I=[172.89.0.6]:587 AUTH command used when not "
                   "advertised"),
            std::set<std::string>{"203.0.113.100"});
  EXPECT_EQ(m.Keys("2017-11-28 14:14:32 SMTP protocol error in \"aUtH lOgIn\" H=(test) "
                   "[198.51.100.7]\" H=(roxzgj) [203.0.113.101] AUTH command used when not "
                   "advertised"),
            std::set<std::string>{"203.0.113.101"});
  EXPECT_EQ(m.Keys("2017-11-28 14:14:33 SMTP protocol error in \"AUTH x\" H=(a) [198.51.100.7] "
                   "AUTH command used when not advertised\" H=(b) [203.0.113.102] AUTH command "
                   "used when not advertised")
                .count("198.51.100.7"),
            0u);
}

// nginx's error line ends with its own `, NAME: "VALUE"` fields after the request; a request
// path or Host holding ", client: V" never keys V.
TEST(Fail2banImportTest, ServerFactsForNginxEndTheErrorLine) {
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "facts/nginx-botsearch.conf"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  std::cout << Fail2banReportText(*imported);
  ASSERT_EQ(imported->regexes.size(), 1u);
  EXPECT_THAT(imported->regexes[0].reason, HasSubstr("server fact (reviewed table)"));
  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/facts-nginx.textproto");
  std::ofstream(path) << Fail2banPackText(*imported);
  ASSERT_TRUE(LoadRulePackFile(path).ok());
  Matcher m(*imported, palisade::v1::LOG_FORMAT_NGINX_ERROR);
  const std::string head = "2015/01/21 10:56:10 [error] 2833#0: *16336 open() \"/var/www/x\" "
                           "failed (2: No such file or directory), client: ";
  EXPECT_EQ(m.Keys(absl::StrCat(head, "203.0.113.110, server: localhost, request: \"GET "
                                      "/cgi-bin/php4 HTTP/1.1\", host: \"1.2.3.4\"")),
            std::set<std::string>{"203.0.113.110"});
  EXPECT_EQ(m.Keys(absl::StrCat(head, "203.0.113.111, server: localhost, request: \"GET "
                                      "/cgi-bin/php4 HTTP/1.1\", upstream: \"fastcgi\", host: "
                                      "\"example.org\"")),
            std::set<std::string>{"203.0.113.111"});
  for (const char* tail : {"\", host: \"x), client: 198.51.100.7, server: y\"",
                           "\", host: \"a\", client: 198.51.100.7, server: b\""}) {
    std::set<std::string> keys = m.Keys(absl::StrCat(
        head, "203.0.113.112, server: localhost, request: \"GET /cgi-bin/x HTTP/1.1", tail));
    EXPECT_EQ(keys.count("198.51.100.7"), 0u) << tail;
  }
}

// nginx's SSL handshake failure ends with ", server: NAME"; auditd's record keeps the time
// fail2ban cut from "audit(SECONDS.FRACTION:SERIAL)". Neither lets a client's text key a victim.
TEST(Fail2banImportTest, ServerFactsForNginxHandshakesAndAuditRecords) {
  Fail2banImportOptions aggressive;
  aggressive.params["mode"] = "aggressive";
  auto nginx = ImportFail2banFilter(absl::StrCat(kTestdata, "facts/nginx-http-auth.conf"),
                                    aggressive);
  ASSERT_TRUE(nginx.ok()) << nginx.status();
  std::cout << Fail2banReportText(*nginx);
  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/facts-nginx-auth.textproto");
  std::ofstream(path) << Fail2banPackText(*nginx);
  ASSERT_TRUE(LoadRulePackFile(path).ok());
  Matcher n(*nginx, palisade::v1::LOG_FORMAT_NGINX_ERROR);
  const std::string crit = "2020/11/25 14:42:16 [crit] 76952#76952: *2454307 SSL_do_handshake() "
                           "failed (SSL: error:1408F0C6:SSL routines:ssl3_get_record:packet "
                           "length too long) while SSL handshaking, client: ";
  EXPECT_EQ(n.Keys(absl::StrCat(crit, "203.0.113.120, server: 0.0.0.0:443")),
            std::set<std::string>{"203.0.113.120"});
  EXPECT_TRUE(n.Keys(absl::StrCat(crit, "203.0.113.121, server: 0.0.0.0:443, client: "
                                        "198.51.100.7"))
                  .empty());

  auto audit = ImportFail2banFilter(absl::StrCat(kTestdata, "facts/selinux-ssh.conf"));
  ASSERT_TRUE(audit.ok()) << audit.status();
  std::cout << Fail2banReportText(*audit);
  path = absl::StrCat(getenv("TEST_TMPDIR"), "/facts-selinux.textproto");
  std::ofstream(path) << Fail2banPackText(*audit);
  ASSERT_TRUE(LoadRulePackFile(path).ok());
  Matcher a(*audit);
  const std::string record = "type=USER_AUTH msg=audit(1383116263.000:603): pid=12887 uid=0 "
                             "auid=4294967295 ses=4294967295 "
                             "subj=system_u:system_r:sshd_t:s0-s0:c0.c1023 msg='op=password acct=";
  EXPECT_EQ(a.Keys(absl::StrCat(record, "\"dan\" exe=\"/usr/sbin/sshd\" hostname=? "
                                        "addr=203.0.113.122 terminal=ssh res=failed'")),
            std::set<std::string>{"203.0.113.122"});
  // The account name is the client's.
  EXPECT_EQ(a.Keys(absl::StrCat(record, "\"x\" exe=\"/usr/sbin/sshd\" hostname=? addr=198.51.100.7 "
                                        "terminal=ssh res=failed'\" exe=\"/usr/sbin/sshd\" "
                                        "hostname=? addr=203.0.113.123 terminal=ssh "
                                        "res=failed'"))
                .count("198.51.100.7"),
            0u);
}

// Imports facts/NAME.conf, checks the loader takes it, and returns it (nullopt on failure).
std::optional<Fail2banImport> ImportFact(const std::string& name) {
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "facts/", name, ".conf"));
  EXPECT_TRUE(imported.ok()) << imported.status();
  if (!imported.ok()) return std::nullopt;
  std::cout << Fail2banReportText(*imported);
  EXPECT_EQ(imported->failregexes(RegexOutcome::kRefused), 0) << name;
  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/facts-", name, ".textproto");
  std::ofstream(path) << Fail2banPackText(*imported);
  absl::Status loaded = LoadRulePackFile(path).status();
  EXPECT_TRUE(loaded.ok()) << loaded;
  if (!loaded.ok()) return std::nullopt;
  return *imported;
}

// Asterisk's security events in their fixed field order, and chan_sip's rejected call ending
// with the context: a client's AccountID, SessionID, response or caller name holding a second
// address never keys it.
TEST(Fail2banImportTest, ServerFactsForAsteriskReadItsFieldsInOrder) {
  std::optional<Fail2banImport> imported = ImportFact("asterisk");
  ASSERT_TRUE(imported.has_value());
  Matcher m(*imported, palisade::v1::LOG_FORMAT_RAW);  // the daemon's own log
  const std::string head =
      "[2013-07-06 09:09:25] SECURITY[3308] res_security_log.c: SecurityEvent=\"InvalidPassword\","
      "EventTV=\"1373098165-824497\",Severity=\"Error\",Service=\"SIP\",EventVersion=\"2\",";
  const std::string local = "LocalAddress=\"IPV4/UDP/192.0.2.1/5060\",";
  EXPECT_EQ(m.Keys(absl::StrCat(head, "AccountID=\"100\",SessionID=\"0x88aab6c\",", local,
                                "RemoteAddress=\"IPV4/UDP/203.0.113.130/5084\",Challenge="
                                "\"41d26de5\",ReceivedChallenge=\"41d26de5\",ReceivedHash="
                                "\"7a6a3a2e\"")),
            std::set<std::string>{"203.0.113.130"});
  const std::string forged = "LocalAddress=\"IPV4/UDP/192.0.2.1/5060\",RemoteAddress=\"IPV4/UDP/"
                             "198.51.100.7/5060";
  for (const std::string& fields : {
           // AccountID and SessionID are the client's, written with their quotes.
           absl::StrCat("AccountID=\"x\",SessionID=\"", "\",", forged, "\",", local,
                        "RemoteAddress=\"IPV4/UDP/203.0.113.131/5084\""),
           absl::StrCat("AccountID=\"x\",SessionID=\"y\",", forged, "\",SessionID=\"z\",", local,
                        "RemoteAddress=\"IPV4/UDP/203.0.113.132/5084\""),
           // So is the hash after the key.
           absl::StrCat("AccountID=\"x\",SessionID=\"y\",", local,
                        "RemoteAddress=\"IPV4/UDP/203.0.113.133/5084\",Challenge=\"41d26de5\","
                        "ReceivedChallenge=\"41d26de5\",ReceivedHash=\"\",", forged, "\"")}) {
    EXPECT_EQ(m.Keys(absl::StrCat(head, fields)).count("198.51.100.7"), 0u) << fields;
  }
  const std::string reject = "[2013-11-11 14:33:38] WARNING[12124][C-00000001] Ext. s: "
                             "\"Rejecting unknown SIP connection from ";
  EXPECT_EQ(m.Keys(absl::StrCat(reject, "[2001:db8::20]:5060\"")),
            std::set<std::string>{"2001:db8::20"});
  EXPECT_EQ(m.Keys(absl::StrCat(reject, "203.0.113.137:5060\"")),
            std::set<std::string>{"203.0.113.137"});
  EXPECT_TRUE(m.Keys(absl::StrCat(reject, "203.0.113.138:5060\" from [198.51.100.7]:5060\""))
                  .empty());
  const std::string call = "[2016-01-28 10:22:27] NOTICE[3477][C-000003bb] chan_sip.c: Call from '";
  EXPECT_EQ(m.Keys(absl::StrCat(call, "' (203.0.113.134:10836) to extension '0972' rejected "
                                      "because extension not found in context 'default'.")),
            std::set<std::string>{"203.0.113.134"});
  for (const char* rest :
       {"x' (198.51.100.7:5060) to extension '1' rejected because extension not found in context "
        "'default'.' (203.0.113.135:5060) to extension '2' rejected because extension not found in "
        "context 'default'.",
        "' (203.0.113.136:5060) to extension '1' (198.51.100.7:5060) to extension '1' rejected "
        "because extension not found in context 'default'."}) {
    EXPECT_EQ(m.Keys(absl::StrCat(call, rest)).count("198.51.100.7"), 0u) << rest;
  }
}

// roundcube: the user name runs to the last " from ", and nothing after the key (proxy headers,
// the IMAP reply) can hold another " from ADDR".
TEST(Fail2banImportTest, ServerFactsForRoundcubeKeyTheLastFrom) {
  std::optional<Fail2banImport> imported = ImportFact("roundcube-auth");
  ASSERT_TRUE(imported.has_value());
  Matcher m(*imported);
  const std::string head = "[30-Dec-2014 13:02:34 -0500]: IMAP Error: Login failed for ";
  const std::string tail = " in /usr/share/roundcube/program/lib/Roundcube/rcube_imap.php on line "
                           "184 (POST /?_task=login&_action=login)";
  EXPECT_EQ(m.Keys(absl::StrCat(head, "admin@example.com from 203.0.113.140. AUTHENTICATE PLAIN: "
                                      "Authentication failed.",
                                tail)),
            std::set<std::string>{"203.0.113.140"});
  EXPECT_EQ(m.Keys(absl::StrCat(head, "a from 203.0.113.141(X-Real-IP: 192.0.2.3,X-Forwarded-For: "
                                      "192.0.2.4). AUTHENTICATE PLAIN: Authentication failed.",
                                tail)),
            std::set<std::string>{"203.0.113.141"});
  // The user name holds " from V": the key is still the server's, after it.
  EXPECT_EQ(m.Keys(absl::StrCat(head, "x from 198.51.100.7 from 203.0.113.142. AUTHENTICATE "
                                      "PLAIN: Authentication failed.",
                                tail)),
            std::set<std::string>{"203.0.113.142"});
  // A forwarded-for header and an IMAP reply echoing the user name are the client's text.
  for (const char* after :
       {"(X-Forwarded-For: 1.2.3.4 from 198.51.100.7). AUTHENTICATE PLAIN: Authentication failed.",
        ". AUTHENTICATE PLAIN: NO user=x from 198.51.100.7"}) {
    EXPECT_EQ(m.Keys(absl::StrCat(head, "x from 203.0.113.143", after, tail)).count("198.51.100.7"),
              0u)
        << after;
  }
}

// proftpd: the key is in the session prefix "HOST (NAME[ADDR])"; a user name (or reverse name)
// holding "[V]" never keys V.
TEST(Fail2banImportTest, ServerFactsForProftpdKeyTheSessionPrefix) {
  std::optional<Fail2banImport> imported = ImportFact("proftpd");
  ASSERT_TRUE(imported.has_value());
  Matcher m(*imported);
  const std::string head = "Dec  5 15:44:32 serv1 proftpd[70944]: serv1.example.com (";
  EXPECT_EQ(m.Keys(absl::StrCat(head, "example.com[203.0.113.150]) - USER jt@example.org: no such "
                                      "user found from example.com [203.0.113.150] to "
                                      "192.0.2.1:21 ")),
            std::set<std::string>{"203.0.113.150"});
  EXPECT_EQ(m.Keys(absl::StrCat(head, "h[203.0.113.151]): SECURITY VIOLATION: root login "
                                      "attempted.")),
            std::set<std::string>{"203.0.113.151"});
  EXPECT_EQ(m.Keys(absl::StrCat(head, "h[203.0.113.152]): USER u (Login failed): Incorrect "
                                      "password.")),
            std::set<std::string>{"203.0.113.152"});
  for (const char* rest :
       {"h[203.0.113.153]): USER x[198.51.100.7]: no such user found from h [203.0.113.153] to "
        "192.0.2.1:21",
        "h[203.0.113.154]): USER serv1.example.com (x[198.51.100.7]): no such user found from h "
        "[203.0.113.154] to 192.0.2.1:21",
        "x[198.51.100.7][203.0.113.155]): SECURITY VIOLATION: root login attempted."}) {
    EXPECT_EQ(m.Keys(absl::StrCat(head, rest)).count("198.51.100.7"), 0u) << rest;
  }
  // A syslog line whose tag has no colon is not split by the syslog parser: the -raw twin reads
  // it whole, host and tag included (and the unpadded day).
  Matcher raw(*imported, palisade::v1::LOG_FORMAT_RAW);
  EXPECT_EQ(raw.Keys("Feb 1 00:00:00 myhost proftpd[12345] myhost.example.com (a.example.com"
                     "[203.0.113.156]): USER u: no such user found from a.example.com "
                     "[203.0.113.156] to 192.0.2.1:21 "),
            std::set<std::string>{"203.0.113.156"});
  EXPECT_EQ(raw.Keys("Jun 14 00:09:59 h proftpd[17839] h (x[203.0.113.157]): USER h proftpd[1] h "
                     "(y[198.51.100.7]): no such user found from x [203.0.113.157] to "
                     "192.0.2.1:21")
                .count("198.51.100.7"),
            0u);
}

// vsftpd's own reason after the client, horde's mailbox flags, monit's bracketed client: a
// user name, a reason or a mailbox holding a second address never keys it.
TEST(Fail2banImportTest, ServerFactsForVsftpdHordeAndMonit) {
  std::optional<Fail2banImport> vsftpd = ImportFact("vsftpd");
  ASSERT_TRUE(vsftpd.has_value());
  Matcher v(*vsftpd, palisade::v1::LOG_FORMAT_RAW);
  const std::string fail = "Thu Sep  8 00:39:49 2016 [pid 15019] [guest] FAIL LOGIN: Client \"";
  EXPECT_EQ(v.Keys(absl::StrCat(fail, "203.0.113.160\", \"User is not in the allow user list.\"")),
            std::set<std::string>{"203.0.113.160"});
  EXPECT_EQ(v.Keys(absl::StrCat(fail, "203.0.113.161\"")),
            std::set<std::string>{"203.0.113.161"});
  for (const std::string& line :
       {absl::StrCat(fail, "203.0.113.162\", \"x\" FAIL LOGIN: Client \"198.51.100.7\""),
        std::string("Thu Sep  8 00:39:49 2016 [pid 15019] [x] FAIL LOGIN: Client \"198.51.100.7\" "
                    "] FAIL LOGIN: Client \"203.0.113.163\"")}) {
    EXPECT_EQ(v.Keys(line).count("198.51.100.7"), 0u) << line;
  }

  std::optional<Fail2banImport> horde = ImportFact("horde");
  ASSERT_TRUE(horde.has_value());
  Matcher h(*horde, palisade::v1::LOG_FORMAT_RAW);
  const std::string login = "Dec 15 08:59:59 HORDE [error] [imp] FAILED LOGIN for ";
  const std::string tail = " [pid 68394 on line 139 of /usr/local/www/horde/imp/lib/Auth/imp.php\"]";
  EXPECT_EQ(h.Keys(absl::StrCat(login, "u@example.com [203.0.113.164] to {mx.example.com:993 "
                                       "[imap/ssl/novalidate-cert]}",
                                tail)),
            std::set<std::string>{"203.0.113.164"});
  for (const std::string& user :
       {std::string("x [198.51.100.7] to Horde"), std::string("x [198.51.100.7] to {a [b]}")}) {
    EXPECT_EQ(h.Keys(absl::StrCat(login, user, " [203.0.113.165] to {mx:993 [imap/ssl]}", tail))
                  .count("198.51.100.7"),
              0u)
        << user;
  }

  std::optional<Fail2banImport> monit = ImportFact("monit");
  ASSERT_TRUE(monit.has_value());
  Matcher m(*monit, palisade::v1::LOG_FORMAT_RAW);
  EXPECT_EQ(m.Keys("[CEST Aug  6 10:14:52] error    : HttpRequest: access denied -- client "
                   "[203.0.113.166]: wrong password for user 'root'"),
            std::set<std::string>{"203.0.113.166"});
  EXPECT_EQ(m.Keys("[PDT Apr 16 21:05:29] error    : Warning: Client '203.0.113.167' supplied "
                   "unknown user 'x' accessing monit httpd"),
            std::set<std::string>{"203.0.113.167"});
  EXPECT_EQ(m.Keys("[CEST Aug  6 10:14:52] error    : HttpRequest: access denied -- client "
                   "[203.0.113.168]: wrong password for user 'x: client [198.51.100.7]: wrong "
                   "password for user 'y'")
                .count("198.51.100.7"),
            0u);
}

// pam_unix writes the client's ruser before the key and the client's user after it: a user name
// ending " rhost=V" (fail2ban's own test line) or a ruser holding " rhost=V" never keys V; a
// domino rejection and a kerio attempt end with the server's text.
TEST(Fail2banImportTest, ServerFactsForPamKerioAndDomino) {
  std::optional<Fail2banImport> pam = ImportFact("pam-generic");
  ASSERT_TRUE(pam.has_value());
  Matcher m(*pam);
  const std::string head = "Jul 19 18:11:52 srv2 daemon: pam_unix(auth): authentication failure; "
                           "logname= uid=0 euid=0 tty=xxx ";
  EXPECT_EQ(m.Keys(absl::StrCat(head, "ruser= rhost=203.0.113.170  user=test")),
            std::set<std::string>{"203.0.113.170"});
  EXPECT_EQ(m.Keys(absl::StrCat(head, "ruser=a rhost=203.0.113.171")),
            std::set<std::string>{"203.0.113.171"});
  for (const char* rest : {"ruser= rhost=203.0.113.172 user=test rhost=198.51.100.7",
                           "ruser=test rhost=203.0.113.173 rhost=198.51.100.7",
                           "ruser=test rhost=198.51.100.7 rhost=203.0.113.174"}) {
    EXPECT_EQ(m.Keys(absl::StrCat(head, rest)).count("198.51.100.7"), 0u) << rest;
  }
}

// ejabberd ends a failed login with the module's reason; a JID or a reason holding a second
// " from V" never keys V.
TEST(Fail2banImportTest, ServerFactsForEjabberdEndTheLine) {
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "facts/ejabberd-auth.conf"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  std::cout << Fail2banReportText(*imported);
  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/facts-ejabberd.textproto");
  std::ofstream(path) << Fail2banPackText(*imported);
  ASSERT_TRUE(LoadRulePackFile(path).ok());
  Matcher m(*imported);
  const std::string head = "2017-07-29 08:24:04.773 [info] <0.6668.0>@ejabberd_c2s:handle_auth_"
                           "failure:433 (http_bind|ejabberd_bosh) Failed c2s PLAIN authentication "
                           "for ";
  EXPECT_EQ(m.Keys(absl::StrCat(head, "a@example.ch from ::FFFF:203.0.113.180: Invalid username "
                                      "or password")).size(),
            1u);
  EXPECT_EQ(m.Keys(absl::StrCat(head, "a@example.ch from 203.0.113.181")),
            std::set<std::string>{"203.0.113.181"});
  for (const char* rest : {"a from 198.51.100.7: Invalid username or password from 203.0.113.182",
                           "a@b from 203.0.113.183: Invalid username or password from "
                           "198.51.100.7"}) {
    EXPECT_EQ(m.Keys(absl::StrCat(head, rest)).count("198.51.100.7"), 0u) << rest;
  }
}

// haproxy starts its line with the client's "ADDR:PORT": an IPv6 key stops before the port, and a
// request holding another address never keys it.
TEST(Fail2banImportTest, ServerFactsForHaproxySplitThePort) {
  std::optional<Fail2banImport> imported = ImportFact("haproxy-http-auth");
  ASSERT_TRUE(imported.has_value());
  Matcher m(*imported);
  const std::string head = "Nov 14 22:45:11 test haproxy[760]: ";
  const std::string tail = " [14/Nov/2015:22:45:11.608] main main/<NOSRV> -1/-1/-1/-1/0 401 248 "
                           "- - PR-- 0/0/0/0/0 0/0 \"GET / HTTP/1.1\"";
  EXPECT_EQ(m.Keys(absl::StrCat(head, "2001:db8::1234:58430", tail)),
            std::set<std::string>{"2001:db8::1234"});
  EXPECT_EQ(m.Keys(absl::StrCat(head, "203.0.113.190:58430", tail)),
            std::set<std::string>{"203.0.113.190"});
  EXPECT_EQ(m.Keys(absl::StrCat(head, "203.0.113.191:1", tail, " 198.51.100.7:2", tail))
                .count("198.51.100.7"),
            0u);
}

TEST(Fail2banImportTest, BadFilesNameTheFileAndLine) {
  auto broken = ImportFail2banFilter(absl::StrCat(kTestdata, "broken.conf"));
  EXPECT_EQ(broken.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(broken.status().message(), HasSubstr("broken.conf:3:"));
  auto missing = ImportFail2banFilter(absl::StrCat(kTestdata, "includes-missing.conf"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("includes-missing.conf:2:"));
  EXPECT_THAT(missing.status().message(), HasSubstr("nosuch.conf"));
  auto absent = ImportFail2banFilter(absl::StrCat(kTestdata, "absent.conf"));
  EXPECT_EQ(absent.status().code(), absl::StatusCode::kNotFound);
}

// Interpolation is bounded in bytes and lines: a filter that doubles a value 32 times (32 GiB),
// or a list that names the one before twice 40 times, is refused at the line that asked for it.
TEST(Fail2banImportTest, InterpolationBombsAndLoopsAreRefusedAtTheirLine) {
  auto bomb = ImportFail2banFilter(absl::StrCat(kTestdata, "bomb.conf"));
  EXPECT_EQ(bomb.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bomb.status().message(), HasSubstr("bomb.conf:36:"));
  EXPECT_THAT(bomb.status().message(), HasSubstr("bytes"));
  auto list = ImportFail2banFilter(absl::StrCat(kTestdata, "listbomb.conf"));
  EXPECT_EQ(list.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(list.status().message(), HasSubstr("listbomb.conf:85:"));
  for (const char* name : {"loop.conf", "looptag.conf"}) {
    auto loop = ImportFail2banFilter(absl::StrCat(kTestdata, name));
    EXPECT_EQ(loop.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(loop.status().message(), HasSubstr(absl::StrCat(name, ":3:")));
    EXPECT_THAT(loop.status().message(), HasSubstr("a loop?"));
  }
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

// Includes are regular files of bounded size, read a bounded number of times: /dev/zero, a
// directory, an oversized file and a fan-out of includes are refused naming the including line.
TEST(Fail2banImportTest, IncludesAreBoundedRegularFiles) {
  auto zero = ImportFail2banFilter(absl::StrCat(kTestdata, "devzero.conf"));
  EXPECT_EQ(zero.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(zero.status().message(), HasSubstr("devzero.conf:2:"));
  EXPECT_THAT(zero.status().message(), HasSubstr("not a regular file"));
  auto dir = ImportFail2banFilter(absl::StrCat(kTestdata, "includes-dir.conf"));
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dir.status().message(), HasSubstr("includes-dir.conf:2:"));
  EXPECT_THAT(dir.status().message(), HasSubstr("not a regular file"));

  const char* tmp = std::getenv("TEST_TMPDIR");
  ASSERT_NE(tmp, nullptr);
  const std::string base = absl::StrCat(tmp, "/includes/");
  ASSERT_EQ(mkdir(base.c_str(), 0755), 0);
  // 2 MiB of comments.
  WriteFile(base + "big.conf", std::string(2 << 20, '#'));
  WriteFile(base + "uses-big.conf",
            "[INCLUDES]\nbefore = big.conf\n[Definition]\nfailregex = ^x from <HOST>$\n");
  auto big = ImportFail2banFilter(base + "uses-big.conf");
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(big.status().message(), HasSubstr("uses-big.conf:2:"));
  EXPECT_THAT(big.status().message(), HasSubstr("bytes"));
  // f0 includes f1 fifty times, f1 f2, ... f9 (50^9 reads).
  for (int i = 0; i < 10; ++i) {
    std::string text = "[INCLUDES]\nbefore =";
    for (int k = 0; k < 50 && i < 9; ++k) absl::StrAppend(&text, " f", i + 1, ".conf");
    absl::StrAppend(&text, "\n[Definition]\nfailregex = ^x from <HOST>$\n");
    WriteFile(absl::StrCat(base, "f", i, ".conf"), text);
  }
  auto fan = ImportFail2banFilter(base + "f0.conf");
  EXPECT_EQ(fan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(fan.status().message(), HasSubstr(".conf:2:"));
  EXPECT_THAT(fan.status().message(), HasSubstr("files"));
}

// Include loops are cut as fail2ban cuts them (configparserinc.py, _getIncludes: a file is not
// included again below itself, so `before = a.conf` in a.conf reads a.conf twice, a -> b -> a
// reads b then a), each skip named in the notes; a deep chain of distinct files is refused.
TEST(Fail2banImportTest, IncludeLoopsAreSkippedAsFail2banDoes) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  ASSERT_NE(tmp, nullptr);
  const std::string base = absl::StrCat(tmp, "/loops/");
  ASSERT_EQ(mkdir(base.c_str(), 0755), 0);
  WriteFile(base + "self.conf", "[INCLUDES]\nbefore = self.conf\n[Definition]\n"
                                "failregex = ^self refused from <HOST>$\n");
  auto self = ImportFail2banFilter(base + "self.conf");
  ASSERT_TRUE(self.ok()) << self.status();
  EXPECT_EQ(self->regexes.size(), 1u);
  EXPECT_THAT(absl::StrJoin(self->notes, "\n"),
              HasSubstr("self.conf:2: include " + base + "self.conf skipped"));
  // a -> b -> a: fail2ban reads b.conf, then a.conf (a's failregex wins); from b, the reverse.
  WriteFile(base + "a.conf", "[INCLUDES]\nbefore = b.conf\n[Definition]\n"
                             "failregex = ^a refused from <HOST>$\n");
  WriteFile(base + "b.conf", "[INCLUDES]\nbefore = a.conf\n[Definition]\n"
                             "failregex = ^b refused from <HOST>$\n");
  auto a = ImportFail2banFilter(base + "a.conf");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_NE(FindReport(*a, "^a refused"), nullptr);
  EXPECT_EQ(FindReport(*a, "^b refused"), nullptr);
  EXPECT_THAT(absl::StrJoin(a->notes, "\n"),
              HasSubstr("b.conf:2: include " + base + "a.conf skipped"));
  auto b = ImportFail2banFilter(base + "b.conf");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE(FindReport(*b, "^b refused"), nullptr);
  EXPECT_EQ(FindReport(*b, "^a refused"), nullptr);
  // `after` loops: p then q (q's failregex wins), as fail2ban.
  WriteFile(base + "p.conf", "[INCLUDES]\nafter = q.conf\n[Definition]\n"
                             "failregex = ^p refused from <HOST>$\n");
  WriteFile(base + "q.conf", "[INCLUDES]\nafter = p.conf\n[Definition]\n"
                             "failregex = ^q refused from <HOST>$\n");
  auto p = ImportFail2banFilter(base + "p.conf");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_NE(FindReport(*p, "^q refused"), nullptr);
  EXPECT_EQ(FindReport(*p, "^p refused"), nullptr);
  // Twelve distinct files, each including the next: still refused, at the including line.
  for (int i = 0; i < 12; ++i) {
    WriteFile(absl::StrCat(base, "d", i, ".conf"),
              absl::StrCat("[INCLUDES]\nbefore = d", i + 1, ".conf\n[Definition]\n"
                           "failregex = ^d refused from <HOST>$\n"));
  }
  WriteFile(base + "d12.conf", "[Definition]\nfailregex = ^d refused from <HOST>$\n");
  auto deep = ImportFail2banFilter(base + "d0.conf");
  EXPECT_EQ(deep.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(deep.status().message(), HasSubstr("d10.conf:2:"));
  EXPECT_THAT(deep.status().message(), HasSubstr("nest deeper than 10"));
}

// A failregex's look-ahead `A(?!X)B` becomes the ignore pattern `A(?:X)` of a rule of its own:
// fail2ban tries the other failregexes on a line this one refuses, so the ignore must not reach
// them. The shipped apache-auth and sshd (publickey=invalid) filters (fails without fail2ban).
TEST(Fail2banImportTest, LookaheadIgnoresReachOnlyTheirOwnFailregex) {
  auto apache = ImportFail2banFilter("/etc/fail2ban/filter.d/apache-auth.conf");
  ASSERT_TRUE(apache.ok()) << apache.status();
  Matcher m(*apache);
  // Line 31's Apache 2.4 form; line 28's `^user (?!`)` must not ignore it.
  EXPECT_EQ(m.Keys("[Sat Jul 20 21:39:11.978080 2013] [auth_basic:error] [pid 1:tid 2] "
                   "[client 192.0.2.5:51408] AH01790: user `bob' in realm `x' not found: /p"),
            std::set<std::string>{"192.0.2.5"});
  // ... and line 28 itself still refuses what its look-ahead refuses.
  EXPECT_EQ(m.Keys("[Sat Jul 20 21:39:11.978080 2013] [auth_basic:error] [pid 1:tid 2] "
                   "[client 192.0.2.6:51408] AH01617: user bob: authentication failure for "
                   "\"/p\": Password Mismatch"),
            std::set<std::string>{"192.0.2.6"});
  const RegexReport* split = FindReport(*apache, "^user (?!`)");
  ASSERT_NE(split, nullptr);
  EXPECT_THAT(split->reason, HasSubstr("own rule"));

  Fail2banImportOptions options;
  options.params["publickey"] = "invalid";
  auto sshd = ImportFail2banFilter("/etc/fail2ban/filter.d/sshd.conf", options);
  ASSERT_TRUE(sshd.ok()) << sshd.status();
  Matcher s(*sshd);
  EXPECT_EQ(s.Keys("Jan  1 00:00:00 h sshd[1]: Failed publickey for invalid user x from 192.0.2.1 "
                   "port 1 ssh2: RSA SHA256:abc"),
            std::set<std::string>{"192.0.2.1"});
  // `Failed \b(?!publickey)\S+`: a valid user's failed publickey is no failure there.
  EXPECT_TRUE(s.Keys("Jan  1 00:00:00 h sshd[2]: Failed publickey for x from 192.0.2.2 port 1 "
                     "ssh2: RSA SHA256:abc")
                  .empty());
  EXPECT_EQ(s.Keys("Jan  1 00:00:00 h sshd[3]: Failed password for x from 192.0.2.3 port 1 ssh2"),
            std::set<std::string>{"192.0.2.3"});
}

// An ignoreregex is never dropped: without the header it is a search of the message (fail2ban
// searches the line); one that cannot apply fails the import, naming its line.
TEST(Fail2banImportTest, IgnoreregexesApplyOrTheImportFails) {
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-overflows.conf"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  Matcher m(*imported);
  const std::string head = "[Tue Mar 16 15:39:29 2010] [error] [client 192.0.2.10] ";
  EXPECT_EQ(m.Keys(head + "Invalid URI in request GET /x%zz HTTP/1.1"),
            std::set<std::string>{"192.0.2.10"});
  EXPECT_TRUE(m.Keys(head + "Invalid URI in request GET /server-status%zz HTTP/1.1").empty());

  auto anchored = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-ignore-anchored.conf"));
  EXPECT_EQ(anchored.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(anchored.status().message(), HasSubstr("demo-ignore-anchored.conf:8:"));
  EXPECT_THAT(anchored.status().message(), HasSubstr("ignoreregex"));
  // ConvertFail2banFilter (--report) still says what became of it.
  auto report = ConvertFail2banFilter(absl::StrCat(kTestdata, "demo-ignore-anchored.conf"));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->count(RegexOutcome::kRefused), 1);
}

// As configparser reads fail2ban's files: an inline `;` after a blank starts a comment, `%%`
// is one '%', and `known/NAME` is the value an earlier file gave NAME.
// A directory report said "refused" of common.conf and the other include files, which hold no
// failregex: no filter of their own, read by those that include them.
TEST(Fail2banImportTest, AnIncludeFileIsNoRefusedFilter) {
  absl::StatusOr<Fail2banImport> common =
      ConvertFail2banFilter(absl::StrCat(kTestdata, "common.conf"), Fail2banImportOptions());
  ASSERT_TRUE(common.ok()) << common.status();
  EXPECT_TRUE(Fail2banIncludeOnly(*common));
  EXPECT_THAT(Fail2banSummaryLine("common", common), HasSubstr("common\tinclude\trules 0"));
  absl::StatusOr<Fail2banImport> sshd =
      ConvertFail2banFilter(absl::StrCat(kTestdata, "demo-sshd.conf"), Fail2banImportOptions());
  ASSERT_TRUE(sshd.ok()) << sshd.status();
  EXPECT_FALSE(Fail2banIncludeOnly(*sshd));
}

TEST(Fail2banImportTest, InlineCommentsAndPercentEscapesReadAsConfigparser) {
  const std::string dir = "services/fail2ban/testdata/jail/";
  Fail2banImportOptions options;
  absl::Status s = ReadFail2banJail({dir + "jail.conf"}, "comments", &options);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(options.ignoreip, std::vector<std::string>{"192.0.2.1"});
  EXPECT_EQ(options.bantime, absl::Hours(1));
  auto imported = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-ini.conf"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  Matcher m(*imported);
  EXPECT_EQ(m.Keys("Jan  1 00:00:00 h demo[1]: disk 100% full, refused 192.0.2.1"),
            std::set<std::string>{"192.0.2.1"});
  EXPECT_EQ(m.Keys("Jan  1 00:00:00 h demo[1]: login failed from 192.0.2.2"),
            std::set<std::string>{"192.0.2.2"});
  // `%(known/failregex)s` in demo-known.local: the value demo-known.conf gave, then one more.
  auto known = ImportFail2banFilter(absl::StrCat(kTestdata, "demo-known.conf"));
  ASSERT_TRUE(known.ok()) << known.status();
  Matcher k(*known);
  EXPECT_EQ(k.Keys("Jan  1 00:00:00 h demo[1]: login failed from 192.0.2.3"),
            std::set<std::string>{"192.0.2.3"});
  EXPECT_EQ(k.Keys("Jan  1 00:00:00 h demo[1]: token refused for 192.0.2.4"),
            std::set<std::string>{"192.0.2.4"});
}

// Debian's shipped filters, scored on fail2ban's annotated logs: fail2ban_corpus_test.cc.

}  // namespace
}  // namespace palisade
