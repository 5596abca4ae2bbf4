// The engine on JSON lines (issue 14 §2): Rule.field rules, and the rules written for combined
// access logs reading the JSON presets' rendered records.
#include <set>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "re2/re2.h"
#include "rules/shipped_packs.h"
#include "services/common/status_matchers.h"
#include "services/engine/engine.h"
#include "services/formats/json_parser.h"
#include "services/formats/line_parser.h"

namespace palisade {
namespace {

using ::palisade::testing::StatusIs;
using ::palisade::v1::LogFormat;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

const absl::Time kT0 = absl::FromUnixSeconds(1'772'546'521);  // 2026-03-03T14:02:01Z

constexpr absl::string_view kFieldPack = R"pb(
  rules {
    id: "origin-denied"
    formats: LOG_FORMAT_LOGPUSH_HTTP_REQUESTS
    field: "OriginResponseStatus"
    patterns: "^40[13]$"
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
    id: "admin-path"
    formats: LOG_FORMAT_LOGPUSH_HTTP_REQUESTS
    field: "ClientRequestPath"
    patterns: "^/admin(?:/|$)"
    ignore_patterns: "^/admin/health$"
    threshold { count: 1 }
    decision {
      action: ACTION_BLOCK
      duration { seconds: 60 }
    }
  }
)pb";

std::shared_ptr<const RuleSet> Compile(absl::string_view text) {
  absl::StatusOr<LoadedPack> pack = ParseRulePack(text, "test.textproto");
  EXPECT_TRUE(pack.ok()) << pack.status();
  absl::StatusOr<std::shared_ptr<const RuleSet>> set = RuleSet::Compile({*pack});
  EXPECT_TRUE(set.ok()) << set.status();
  return set.ok() ? *set : nullptr;
}

std::string Record(absl::string_view ip, absl::string_view path, int origin,
                   absl::string_view ua = "curl/8.5.0") {
  return absl::StrCat(
      R"({"ClientIP":")", ip, R"(","ClientRequestHost":"example.com","ClientRequestMethod":"GET",)",
      R"("ClientRequestPath":")", path, R"(","ClientRequestURI":")", path,
      R"(","ClientRequestProtocol":"HTTP/1.1","ClientRequestUserAgent":")", ua,
      R"(","EdgeResponseStatus":200,"EdgeResponseBytes":10,"OriginResponseStatus":)", origin,
      R"(,"EdgeStartTimestamp":"2026-03-03T14:02:01Z","RayID":"7d1c2a3b4c5d6e7f"})");
}

class FieldRuleTest : public ::testing::Test {
 protected:
  std::vector<Detection> Feed(const std::string& record, int offset) {
    ParsedLine parsed;
    EXPECT_THAT(parser_.Parse(record, kT0, &parsed), ::palisade::testing::IsOk());
    std::vector<Detection> out;
    last_ = engine_.Process(LogFormat::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS, parsed, record,
                            kT0 + absl::Seconds(offset), &out);
    return out;
  }
  Engine engine_{Compile(kFieldPack), EngineOptions()};
  LineParser parser_{LogFormat::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS};
  LineResult last_;
};

TEST_F(FieldRuleTest, MatchesTheFieldAndKeysOnTheServersAddress) {
  // The user agent holds what a naive reader of the raw line would take for the address.
  const std::string ua = R"(\"ClientIP\":\"1.2.3.4\")";
  EXPECT_THAT(Feed(Record("203.0.113.7", "/login", 403, ua), 0), IsEmpty());
  EXPECT_TRUE(last_.matched);
  EXPECT_THAT(Feed(Record("203.0.113.7", "/login", 200, ua), 1), IsEmpty());
  EXPECT_FALSE(last_.matched);
  EXPECT_THAT(Feed(Record("203.0.113.7", "/login", 401, ua), 2), IsEmpty());
  std::vector<Detection> d = Feed(Record("203.0.113.7", "/login", 403, ua), 3);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].rule->id(), "origin-denied");
  EXPECT_EQ(d[0].key, "203.0.113.7");
}

TEST_F(FieldRuleTest, PathFieldAndIgnoreReadTheField) {
  std::vector<Detection> d = Feed(Record("2001:db8::7", "/admin/users", 200), 0);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].rule->id(), "admin-path");
  EXPECT_EQ(d[0].key, "2001:db8::7");
  // The ignore pattern reads the field too.
  EXPECT_THAT(Feed(Record("198.51.100.1", "/admin/health", 200), 1), IsEmpty());
  EXPECT_EQ(last_.ignored, 1u);
  // "/admin" elsewhere in the record (the user agent) is not the field.
  EXPECT_THAT(Feed(Record("198.51.100.2", "/", 200, "/admin/x"), 2), IsEmpty());
  EXPECT_FALSE(last_.matched);
}

// A field of an access record is read as the server read it, escapes of readable characters
// decoded (services/formats/percent_escapes.h), as the rendered message is: "/%61dmin" is the
// request for "/admin" the origin ran, and an escaped letter must not hide it from a field rule.
TEST_F(FieldRuleTest, AnEscapedLetterInTheFieldDoesNotHideTheRequest) {
  std::vector<Detection> d = Feed(Record("203.0.113.9", "/%61dmin/users", 200), 0);
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].rule->id(), "admin-path");
  EXPECT_EQ(d[0].key, "203.0.113.9");
  // The evidence is the record as written.
  EXPECT_THAT(d[0].evidence, ::testing::ElementsAre(HasSubstr("/%61dmin/users")));
  // The ignore pattern reads the same decoded field.
  EXPECT_THAT(Feed(Record("198.51.100.3", "/admin/%68ealth", 200), 1), IsEmpty());
  EXPECT_EQ(last_.ignored, 1u);
  // "%2561dmin" reached the origin as "%61dmin": no "/admin".
  EXPECT_THAT(Feed(Record("198.51.100.4", "/%2561dmin/users", 200), 2), IsEmpty());
  EXPECT_FALSE(last_.matched);
}

TEST(FieldRuleEscapesTest, PrematchAndMatchOnlyReadTheDecodedFieldAtTheSameOffsets) {
  // A key captured from the decoded field (TARGET_KIND_PATH): Prematch hands Process offsets
  // into the text it read, so both must read the same decoded value.
  constexpr absl::string_view kPathPack = R"pb(
    rules {
      id: "admin-path-key"
      formats: LOG_FORMAT_LOGPUSH_HTTP_REQUESTS
      field: "ClientRequestPath"
      key_kind: TARGET_KIND_PATH
      key: "path"
      patterns: "^(?P<path>/admin/[a-z]+)"
      threshold { count: 1 }
      decision {
        action: ACTION_RATE_LIMIT
        duration { seconds: 60 }
      }
    }
  )pb";
  Engine engine(Compile(kPathPack), EngineOptions());
  LineParser parser(LogFormat::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS);
  const std::string record = Record("203.0.113.9", "/%61dmin/%75sers?x=1", 200);
  ParsedLine parsed;
  ASSERT_THAT(parser.Parse(record, kT0, &parsed), ::palisade::testing::IsOk());
  PrematchBuffer buffer;
  engine.Prematch(LogFormat::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS, parsed, &buffer);
  PrematchedLine pre;
  pre.buffer = &buffer;
  pre.candidates = absl::MakeConstSpan(buffer.candidates);
  std::vector<Detection> out;
  engine.Process(LogFormat::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS, parsed, record, kT0, &out, 0, &pre);
  ASSERT_THAT(out, SizeIs(1));
  EXPECT_EQ(out[0].key, "/admin/users");
  std::vector<std::string> matched;
  engine.MatchOnly(LogFormat::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS, parsed,
                   [&](const CompiledRule& rule, absl::string_view key) {
                     matched.push_back(absl::StrCat(rule.id(), " ", key));
                   });
  EXPECT_THAT(matched, ::testing::ElementsAre("admin-path-key /admin/users"));
}

TEST(FieldRuleEscapesTest, TheExampleCheckReadsAnExamplesFieldDecodedToo) {
  absl::StatusOr<LoadedPack> pack = ParseRulePack(
      absl::StrCat(R"pb(
    rules {
      id: "admin-path"
      formats: LOG_FORMAT_LOGPUSH_HTTP_REQUESTS
      field: "ClientRequestPath"
      patterns: "^/admin(?:/|$)"
      threshold { count: 1 }
      decision {
        action: ACTION_BLOCK
        duration { seconds: 60 }
      }
      examples { line: ')pb",
                   Record("203.0.113.9", "/%61dmin/", 200), R"pb(' key: "203.0.113.9" }
    }
  )pb"),
      "x.textproto");
  ASSERT_TRUE(pack.ok()) << pack.status();
  EXPECT_THAT(CheckExamplesMatch(*pack), ::palisade::testing::IsOk());
}

TEST(FieldRuleLoadTest, RefusedOnAFormatWithoutFields) {
  absl::StatusOr<LoadedPack> pack = ParseRulePack(R"pb(
    rules {
      id: "x"
      formats: LOG_FORMAT_COMBINED
      field: "path"
      patterns: "^/admin"
      threshold { count: 1 }
      decision {
        action: ACTION_BLOCK
        duration { seconds: 60 }
      }
    }
  )pb",
                                                  "x.textproto");
  ASSERT_TRUE(pack.ok()) << pack.status();
  EXPECT_THAT(RuleSet::Compile({*pack}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("field \"path\" is for JSON lines formats")));
}

TEST(FieldRuleLoadTest, KeyGroupStillRequiredForOtherKinds) {
  absl::StatusOr<LoadedPack> pack = ParseRulePack(R"pb(
    rules {
      id: "x"
      formats: LOG_FORMAT_LOGPUSH_HTTP_REQUESTS
      field: "ClientRequestPath"
      key_kind: TARGET_KIND_PATH
      key: "path"
      patterns: "^/admin"
      threshold { count: 1 }
      decision {
        action: ACTION_RATE_LIMIT
        duration { seconds: 60 }
      }
    }
  )pb",
                                                  "x.textproto");
  ASSERT_TRUE(pack.ok()) << pack.status();
  EXPECT_THAT(RuleSet::Compile({*pack}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no (?P<path>...) group")));
}

// The JSON presets' records are rendered as combined lines, and the rules written for combined
// logs apply to them: every example and counter-example of every shipped rule for
// LOG_FORMAT_COMBINED, rewritten as an nginx escape=json record and as a Logpush http_requests
// record, matches exactly the (rule, key) pairs the combined line does.
TEST(CombinedRulesOnJsonTest, EveryCombinedExampleMatchesTheSameAsJson) {
  std::vector<LoadedPack> packs;
  for (const std::string& f : FilesIn("rules", ".textproto")) {
    absl::StatusOr<LoadedPack> pack = LoadRulePackFile(f);
    ASSERT_TRUE(pack.ok()) << pack.status();
    packs.push_back(*std::move(pack));
  }
  ASSERT_GE(packs.size(), 4u) << "packs missing under rules/";
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules =
      RuleSet::Compile(packs, ShippedPackCidrSets());
  ASSERT_TRUE(rules.ok()) << rules.status();
  Engine engine(*rules, EngineOptions());

  std::vector<std::string> lines;
  for (const LoadedPack& pack : packs) {
    for (const palisade::v1::Rule& rule : pack.pack.rules()) {
      if (rule.formats(0) != LogFormat::LOG_FORMAT_COMBINED) continue;
      for (const auto& e : rule.examples()) {
        if (e.format() == LogFormat::LOG_FORMAT_UNSPECIFIED ||
            e.format() == LogFormat::LOG_FORMAT_COMBINED) {
          lines.push_back(e.line());
        }
      }
      for (const std::string& c : rule.counter_examples()) lines.push_back(c);
    }
  }
  // ADDR IDENT USER [TIME] "REQUEST" STATUS BYTES "REFERER" "UA": lines a server could write
  // from fields without escapes (a line with a backslash or a byte past ASCII would be escaped
  // differently by the rendering, which is the point of it, so it is left out).
  const RE2 combined(
      R"re(^(\S+) \S+ (\S+) \[([^\]]+)\] "([^"\\]*)" ([0-9]{3}) (\S+) "([^"\\]*)" "([^"\\]*)"$)re");
  auto json_string = [](absl::string_view v) {
    std::string out = "\"";
    for (char c : v) {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    return out + "\"";
  };
  auto matches = [&](LogFormat format, const ParsedLine& parsed) {
    std::set<std::pair<std::string, std::string>> out;
    engine.MatchOnly(
        format, parsed,
        [&](const CompiledRule& rule, absl::string_view key) {
          // Only the combined rules: rules of the JSON formats' own (cloudflare-edge) may match
          // the records as well.
          for (int f : rule.proto.formats()) {
            if (f == LogFormat::LOG_FORMAT_COMBINED) out.emplace(rule.id(), std::string(key));
          }
        },
        kT0);
    return out;
  };
  int compared = 0, matching = 0;
  for (const std::string& line : lines) {
    LineParser combined_parser(LogFormat::LOG_FORMAT_COMBINED);
    ParsedLine parsed;
    if (!combined_parser.Parse(line, kT0, &parsed).ok()) continue;
    std::string addr, user, time, request, status, bytes, referer, ua;
    bool ascii = true;
    for (unsigned char c : parsed.message) ascii = ascii && c >= 0x20 && c < 0x7f;
    if (!ascii || !RE2::FullMatch(std::string(parsed.message), combined, &addr, &user, &time,
                                  &request, &status, &bytes, &referer, &ua)) {
      continue;
    }
    const std::set<std::pair<std::string, std::string>> want =
        matches(LogFormat::LOG_FORMAT_COMBINED, parsed);
    auto dash = [](const std::string& v) { return v == "-" ? std::string() : v; };
    const std::string nginx = absl::StrCat(
        "{\"time_local\":", json_string(time), ",\"remote_addr\":", json_string(addr),
        ",\"remote_user\":", json_string(dash(user)), ",\"request\":", json_string(request),
        ",\"status\":", status, ",\"body_bytes_sent\":", bytes == "-" ? "0" : bytes,
        ",\"http_referer\":", json_string(dash(referer)),
        ",\"http_user_agent\":", json_string(dash(ua)), "}");
    LineParser nginx_parser(LogFormat::LOG_FORMAT_NGINX_JSON);
    ParsedLine from_json;
    ASSERT_THAT(nginx_parser.Parse(nginx, kT0, &from_json), ::palisade::testing::IsOk())
        << nginx;
    EXPECT_EQ(matches(LogFormat::LOG_FORMAT_NGINX_JSON, from_json), want)
        << "combined: " << line << "\nnginx_json: " << nginx << "\nrendered: "
        << from_json.message;
    // Logpush: the request's three parts (when it has three).
    const size_t sp1 = request.find(' ');
    const size_t sp2 = request.rfind(' ');
    if (user == "-" && sp1 != std::string::npos && sp2 != sp1 &&
        request.find(' ', sp1 + 1) == sp2) {
      const std::string logpush = absl::StrCat(
          "{\"EdgeStartTimestamp\":1772546521,\"ClientIP\":", json_string(addr),
          ",\"ClientRequestMethod\":", json_string(request.substr(0, sp1)),
          ",\"ClientRequestURI\":", json_string(request.substr(sp1 + 1, sp2 - sp1 - 1)),
          ",\"ClientRequestProtocol\":", json_string(request.substr(sp2 + 1)),
          ",\"EdgeResponseStatus\":", status, ",\"EdgeResponseBytes\":",
          bytes == "-" ? "0" : bytes, ",\"ClientRequestReferer\":", json_string(dash(referer)),
          ",\"ClientRequestUserAgent\":", json_string(dash(ua)), "}");
      LineParser logpush_parser(LogFormat::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS);
      ASSERT_THAT(logpush_parser.Parse(logpush, kT0, &from_json), ::palisade::testing::IsOk())
          << logpush;
      EXPECT_EQ(matches(LogFormat::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS, from_json), want)
          << "combined: " << line << "\nlogpush: " << logpush << "\nrendered: "
          << from_json.message;
    }
    ++compared;
    if (!want.empty()) ++matching;
  }
  // Enough of the web packs went through to mean something.
  EXPECT_GE(compared, 100);
  EXPECT_GE(matching, 50);
}

}  // namespace
}  // namespace palisade
