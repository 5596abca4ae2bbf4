// Rules read a line's message with the escapes of readable characters decoded
// (services/formats/percent_escapes.h): "/.%65nv" is the request for "/.env" the server ran.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/engine/engine.h"

namespace palisade {
namespace {

using ::palisade::v1::LogFormat;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

constexpr absl::string_view kPack = R"pb(
  rules {
    id: "env-probe"
    formats: [LOG_FORMAT_COMBINED, LOG_FORMAT_SYSLOG, LOG_FORMAT_RAW]
    patterns: "^(?P<ip>[0-9A-Fa-f:.]+) \\S+ \\S+ \\[[^\\]]+\\] \"GET /\\.env "
    threshold { count: 1 }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 60 }
    }
  }
  rules {
    id: "wp-login"
    formats: LOG_FORMAT_COMBINED
    patterns: "^(?P<ip>[0-9A-Fa-f:.]+) \\S+ \\S+ \\[[^\\]]+\\] \"POST /wp-login\\.php "
    threshold { count: 1 }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 60 }
    }
  }
  rules {
    id: "admin-guess"
    formats: LOG_FORMAT_SYSLOG
    patterns: "^Failed password for admin from (?P<ip>\\S+) port \\d+ ssh2$"
    threshold { count: 1 }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 60 }
    }
  }
  rules {
    id: "error-env"
    formats: [LOG_FORMAT_NGINX_ERROR, LOG_FORMAT_RAW]
    patterns: "open\\(\\) \"/srv/www/\\.env\" failed .*, client: (?P<ip>[0-9A-Fa-f:.]+), server"
    threshold { count: 1 }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 60 }
    }
  }
  rules {
    id: "cloudflare-token-leaked"
    formats: [LOG_FORMAT_COMBINED, LOG_FORMAT_RAW]
    key: "token"
    key_kind: TARGET_KIND_TOKEN_FINGERPRINT
    patterns: "(?:^|[^A-Za-z0-9_])(?P<token>cf[ua]t_[A-Za-z0-9]{40})(?:[^A-Za-z0-9_-]|$)"
    threshold { count: 1 }
    decision {
      action: ACTION_REVOKE_TOKEN
      duration { seconds: 60 }
    }
  }
)pb";

std::shared_ptr<const RuleSet> Rules() {
  auto pack = ParseRulePack(kPack, "test.textproto");
  EXPECT_TRUE(pack.ok()) << pack.status();
  auto set = RuleSet::Compile({*pack});
  EXPECT_TRUE(set.ok()) << set.status();
  return *set;
}

const absl::Time kT0 = absl::FromUnixSeconds(1772546521);

std::vector<Detection> Process(Engine& engine, LogFormat format, absl::string_view message) {
  ParsedLine line;
  line.message = message;
  std::vector<Detection> out;
  engine.Process(format, line, message, kT0, &out);
  return out;
}

// An access line of `client` asking `request`.
std::string Access(absl::string_view client, absl::string_view request) {
  return absl::StrCat(client, " - - [03/Mar/2026:14:02:01 +0000] \"", request,
                      " HTTP/1.1\" 200 211 \"-\" \"curl/8.5.0\"");
}

std::vector<std::string> Keys(const std::vector<Detection>& detections) {
  std::vector<std::string> keys;
  for (const Detection& d : detections) keys.push_back(d.key);
  return keys;
}

TEST(EngineEscapesTest, AnEncodedLetterDoesNotHideAProbe) {
  Engine engine(Rules(), EngineOptions());
  const std::string line =
      "198.51.100.7 - - [03/Mar/2026:14:02:01 +0000] \"GET /.%65nv HTTP/1.1\" 404 153 \"-\" \"x\"";
  const std::vector<Detection> out = Process(engine, LogFormat::LOG_FORMAT_COMBINED, line);
  EXPECT_THAT(Keys(out), ElementsAre("198.51.100.7"));
  // The evidence is the line as the server wrote it.
  ASSERT_THAT(out, SizeIs(1));
  EXPECT_THAT(out[0].evidence, ElementsAre(line));
  // MatchOnly (rules test, the pack test) reads the same text.
  ParsedLine parsed;
  parsed.message = line;
  std::vector<std::string> matched;
  engine.MatchOnly(LogFormat::LOG_FORMAT_COMBINED, parsed,
                   [&](const CompiledRule& rule, absl::string_view key) {
                     matched.push_back(absl::StrCat(rule.id(), " ", key));
                   });
  EXPECT_THAT(matched, ElementsAre("env-probe 198.51.100.7"));
}

TEST(EngineEscapesTest, AnAccessLineRelayedThroughSyslogOrReadRawIsReadDecodedToo) {
  Engine engine(Rules(), EngineOptions());
  EXPECT_THAT(Keys(Process(engine, LogFormat::LOG_FORMAT_SYSLOG,
                           Access("2001:db8::7", "GET /.%65nv"))),
              ElementsAre("2001:db8::7"));
  EXPECT_THAT(Keys(Process(engine, LogFormat::LOG_FORMAT_RAW,
                           Access("2001:db8::8", "GET /.%65nv"))),
              ElementsAre("2001:db8::8"));
}

TEST(EngineEscapesTest, OtherLinesAreReadAsTheServerWroteThem) {
  Engine engine(Rules(), EngineOptions());
  // sshd wrote the user name the client sent, escapes and all: "%61dmin" is no "admin".
  EXPECT_THAT(Process(engine, LogFormat::LOG_FORMAT_SYSLOG,
                      "Failed password for %61dmin from 203.0.113.5 port 22 ssh2"),
              IsEmpty());
  // An error log's path is the one the server opened, decoded already: decoding it again would
  // read "%2565" as "%65" (and count a padded field shorter than the server wrote it).
  for (LogFormat format : {LogFormat::LOG_FORMAT_NGINX_ERROR, LogFormat::LOG_FORMAT_RAW}) {
    EXPECT_THAT(Process(engine, format,
                        "open() \"/srv/www/.%65nv\" failed (2: No such file or directory), "
                        "client: 203.0.113.5, server"),
                IsEmpty());
    EXPECT_THAT(Keys(Process(engine, format,
                             "open() \"/srv/www/.env\" failed (2: No such file or directory), "
                             "client: 203.0.113.6, server")),
                ElementsAre("203.0.113.6"));
  }
}

TEST(EngineEscapesTest, PrematchedLinesReadTheDecodedTextAtTheSameOffsets) {
  // Lines walked side by side (the Prematch of many lines), some with escapes: the captures
  // Prematch hands Process are offsets into the decoded text, and Process runs the token rules'
  // patterns itself, over the text Prematch read.
  EngineOptions options;
  options.walk_ahead_bytes = 0;
  Engine engine(Rules(), options);
  const std::string token = "cfut_Q3vX8mK2pL9nR4tY7wZ1aB5cD6eF0gH3jK8mN2pQ";
  std::vector<std::string> messages;
  for (int i = 0; i < 100; ++i) {
    const std::string client = absl::StrCat("203.0.113.", i);
    messages.push_back(
        i % 4 == 0   ? Access(client, "POST /wp-%6cogin.php")
        : i % 4 == 1 ? Access(client, "POST /wp-login.php")
        : i % 4 == 2 ? Access(client, "POST /wp-%6Cogin.ph")
                     : Access(client, absl::StrCat("GET /hook?t=cfut_%51%33", token.substr(7))));
  }
  std::vector<ParsedLine> lines(messages.size());
  std::vector<const ParsedLine*> views;
  for (size_t i = 0; i < messages.size(); ++i) {
    lines[i].message = messages[i];
    views.push_back(&lines[i]);
  }
  PrematchBuffer buffer;
  std::vector<std::pair<uint32_t, uint32_t>> spans;
  engine.Prematch(LogFormat::LOG_FORMAT_COMBINED, views, &buffer, &spans);
  ASSERT_THAT(spans, SizeIs(messages.size()));
  std::vector<std::string> keys, secrets;
  for (size_t i = 0; i < messages.size(); ++i) {
    PrematchedLine pre;
    pre.buffer = &buffer;
    pre.candidates = absl::MakeConstSpan(buffer.candidates.data() + spans[i].first,
                                         spans[i].second - spans[i].first);
    std::vector<Detection> out;
    engine.Process(LogFormat::LOG_FORMAT_COMBINED, lines[i], messages[i], kT0, &out, 0, &pre);
    for (const Detection& d : out) (d.secret.empty() ? keys : secrets).push_back(
        d.secret.empty() ? d.key : d.secret);
  }
  std::vector<std::string> expected;
  for (int i = 0; i < 100; ++i) {
    if (i % 4 == 0 || i % 4 == 1) expected.push_back(absl::StrCat("203.0.113.", i));
  }
  EXPECT_EQ(keys, expected);
  ASSERT_THAT(secrets, Not(IsEmpty()));
  EXPECT_THAT(secrets, Each(token));
}

TEST(EngineEscapesTest, AnEncodedTokenIsFoundAndHiddenInEveryForm) {
  Engine engine(Rules(), EngineOptions());
  const std::string token = "cfut_Q3vX8mK2pL9nR4tY7wZ1aB5cD6eF0gH3jK8mN2pQ";
  // Its first letters escaped ("Q3" as "%51%33").
  const std::string encoded = absl::StrCat("cfut_%51%33", token.substr(7));
  const std::string line = Access("198.51.100.7", absl::StrCat("GET /hook?t=", encoded));
  const std::vector<Detection> out = Process(engine, LogFormat::LOG_FORMAT_COMBINED, line);
  ASSERT_THAT(out, SizeIs(1));
  EXPECT_EQ(out[0].secret, token);
  ASSERT_THAT(out[0].evidence, SizeIs(1));
  EXPECT_EQ(out[0].evidence[0].find(token), std::string::npos) << out[0].evidence[0];
  EXPECT_EQ(out[0].evidence[0].find(encoded), std::string::npos) << out[0].evidence[0];
  EXPECT_EQ(out[0].evidence[0].find(token.substr(7)), std::string::npos) << out[0].evidence[0];
  EXPECT_NE(out[0].evidence[0].find("[token sha256:"), std::string::npos) << out[0].evidence[0];
}

}  // namespace
}  // namespace palisade
