#include "services/formats/json_parser.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/status_matchers.h"
#include "services/formats/line_parser.h"

namespace palisade {
namespace {

using ::palisade::testing::StatusIs;
using ::palisade::v1::LogFormat;
using ::testing::HasSubstr;

#define ASSERT_THAT_OK(expr) ASSERT_THAT((expr), ::palisade::testing::IsOk())

const absl::Time kRef = absl::FromUnixSeconds(1'772'000'000);

absl::Time At(absl::string_view rfc3339) {
  absl::Time t;
  EXPECT_GT(ParseRfc3339Prefix(rfc3339, &t), 0u) << rfc3339;
  return t;
}

// nginx 1.22 (Debian) with
//   log_format json escape=json '{"time":"$time_iso8601","remote_addr":"$remote_addr",'
//     '"remote_user":"$remote_user","request_method":"$request_method",'
//     '"request_uri":"$request_uri","server_protocol":"$server_protocol","status":$status,'
//     '"body_bytes_sent":$body_bytes_sent,"http_referer":"$http_referer",'
//     '"http_user_agent":"$http_user_agent","host":"$host"}';
// escape=json writes a client's quote as \" and a control byte as \u00XX.
TEST(JsonParserTest, NginxJsonRendersCombined) {
  LineParser p(LogFormat::LOG_FORMAT_NGINX_JSON);
  ParsedLine out;
  ASSERT_THAT_OK(p.Parse(
      R"({"time":"2026-03-03T14:02:01+00:00","remote_addr":"203.0.113.7","remote_user":"",)"
      R"("request_method":"GET","request_uri":"/wp-login.php?a=\"b\"","server_protocol":"HTTP/1.1",)"
      R"("status":404,"body_bytes_sent":153,"http_referer":"","http_user_agent":"curl/8.5.0",)"
      R"("host":"example.com"})",
      kRef, &out));
  EXPECT_EQ(out.message,
            "203.0.113.7 - - [03/Mar/2026:14:02:01 +0000] \"GET /wp-login.php?a=\\x22b\\x22 "
            "HTTP/1.1\" 404 153 \"-\" \"curl/8.5.0\"");
  EXPECT_EQ(out.client_address, "203.0.113.7");
  EXPECT_EQ(out.host, "example.com");
  ASSERT_TRUE(out.time.has_value());
  EXPECT_EQ(*out.time, At("2026-03-03T14:02:01Z"));
  ASSERT_NE(out.record, nullptr);
  absl::string_view v;
  ASSERT_TRUE(out.record->Find("request_uri", &v));
  EXPECT_EQ(v, "/wp-login.php?a=\"b\"");
  // The same record the way the combined parser hands a real access line to the rules.
  LineParser combined(LogFormat::LOG_FORMAT_COMBINED);
  ParsedLine c;
  ASSERT_THAT_OK(combined.Parse(std::string(out.message), kRef, &c));
  EXPECT_EQ(c.time, out.time);
}

TEST(JsonParserTest, NginxJsonRequestAndTimeLocal) {
  LineParser p(LogFormat::LOG_FORMAT_NGINX_JSON);
  ParsedLine out;
  ASSERT_THAT_OK(p.Parse(
      R"({"time_local":"03/Mar/2026:15:02:01 +0100","remote_addr":"2001:db8::7",)"
      R"("request":"POST /login HTTP/2.0","status":"401","body_bytes_sent":"0"})",
      kRef, &out));
  EXPECT_EQ(out.message,
            "2001:db8::7 - - [03/Mar/2026:14:02:01 +0000] \"POST /login HTTP/2.0\" 401 0 \"-\" "
            "\"-\"");
  EXPECT_EQ(*out.time, At("2026-03-03T14:02:01Z"));
}

// A leap second in $time_local is the next second, as in an RFC 3339 stamp and a combined
// line's; at the end of a month it was "a date that does not exist".
TEST(JsonParserTest, ALeapSecondInTimeLocalIsTheNextSecond) {
  LineParser p(LogFormat::LOG_FORMAT_NGINX_JSON);
  ParsedLine out;
  ASSERT_THAT_OK(p.Parse(
      R"({"time_local":"31/Dec/2016:23:59:60 +0000","remote_addr":"198.51.100.7",)"
      R"("request":"GET / HTTP/1.1","status":"200","body_bytes_sent":"1"})",
      kRef, &out));
  EXPECT_EQ(*out.time, At("2017-01-01T00:00:00Z"));
}

TEST(JsonParserTest, ClientTextCannotForgeStructure) {
  LineParser p(LogFormat::LOG_FORMAT_NGINX_JSON);
  ParsedLine out;
  // A user agent and a path holding a quote, a fake address and a newline: all escaped, the
  // address stays the one the server wrote.
  ASSERT_THAT_OK(p.Parse(
      R"({"time":"2026-03-03T14:02:01Z","remote_addr":"198.51.100.9","remote_user":"a b",)"
      R"("request_method":"GET","request_uri":"/x\" 200 0 \"-\" \"-\"\n1.2.3.4 - - ",)"
      R"("server_protocol":"HTTP/1.1","status":200,"body_bytes_sent":1,)"
      R"("http_user_agent":"\"ClientIP\":\"1.2.3.4\"\\\u0001é"})",
      kRef, &out));
  EXPECT_EQ(out.message,
            "198.51.100.9 - a\\x20b [03/Mar/2026:14:02:01 +0000] \"GET "
            "/x\\x22\\x20200\\x200\\x20\\x22-\\x22\\x20\\x22-\\x22\\x0A1.2.3.4\\x20-\\x20-\\x20 "
            "HTTP/1.1\" 200 1 \"-\" \"\\x22ClientIP\\x22:\\x221.2.3.4\\x22\\x5C\\x01\\xC3\\xA9\"");
}

TEST(JsonParserTest, Caddy) {
  LineParser p(LogFormat::LOG_FORMAT_CADDY_JSON);
  ParsedLine out;
  ASSERT_THAT_OK(p.Parse(
      R"({"level":"info","ts":1772546521.5241024,"logger":"http.log.access.log0",)"
      R"("msg":"handled request","request":{"remote_ip":"203.0.113.7","remote_port":"51234",)"
      R"("client_ip":"203.0.113.7","proto":"HTTP/2.0","method":"POST","host":"example.com",)"
      R"("uri":"/user/login","headers":{"User-Agent":["Mozilla/5.0"],"Accept":["*/*"]},)"
      R"("tls":{"resumed":false,"version":772}},"bytes_read":0,"user_id":"","duration":0.0012,)"
      R"("size":12,"status":401,"resp_headers":{"Server":["Caddy"]}})",
      kRef, &out));
  EXPECT_EQ(out.message,
            "203.0.113.7 - - [03/Mar/2026:14:02:01 +0000] \"POST /user/login HTTP/2.0\" 401 12 "
            "\"-\" \"Mozilla/5.0\"");
  EXPECT_EQ(out.host, "example.com");
  EXPECT_EQ(*out.time, absl::FromUnixNanos(1772546521524102400));
}

// Caddy logs every request header inside "request", before the status: a client who sends
// thousands of headers, long ones, or one long-named header with many values, must not push the
// status out of the record (the address stays its, the request stays counted), and the record's
// memory and rendered line stay bounded.
TEST(JsonParserTest, CaddyHeadersFloodBeforeTheStatusIsStillRead) {
  LineParser p(LogFormat::LOG_FORMAT_CADDY_JSON);
  ParsedLine out;
  std::string headers = R"("User-Agent":[")";
  for (int i = 0; i < 200000; ++i) headers += "\\u0001";  // 1.2 MB as zap escapes it
  headers += R"("])";
  for (int i = 0; i < 3000; ++i) {
    absl::StrAppend(&headers, ",\"X-Pad-", i, "\":[\"", std::string(100, 'a'), "\"]");
  }
  absl::StrAppend(&headers, ",\"", std::string(4096, 'N'), "\":[");
  for (int i = 0; i < 20000; ++i) absl::StrAppend(&headers, i ? "," : "", "1");
  headers += "]";
  const std::string record = absl::StrCat(
      R"({"level":"info","ts":1772546521.5,"logger":"http.log.access","msg":"handled request",)"
      R"("request":{"remote_ip":"203.0.113.7","remote_port":"51234","client_ip":"203.0.113.7",)"
      R"("proto":"HTTP/1.1","method":"POST","host":"example.com","uri":"/login",)"
      R"("headers":{)", headers, R"(}},"bytes_read":0,"user_id":"","duration":0.001,"size":12,)"
      R"("status":401,"resp_headers":{"Server":["Caddy"]}})");
  ASSERT_THAT_OK(p.Parse(record, kRef, &out));
  EXPECT_THAT(std::string(out.message),
              ::testing::StartsWith("203.0.113.7 - - [03/Mar/2026:14:02:01 +0000] "
                                    "\"POST /login HTTP/1.1\" 401 12 \"-\" \"\\x01\\x01"));
  // The user agent is rendered up to 8 KiB (its escapes whole): the line stays near that.
  EXPECT_LT(out.message.size(), 8192u + 100u);
  EXPECT_LE(out.record->bytes(), 256u * 1024u + 16u * 1024u);
  absl::string_view v;
  ASSERT_TRUE(out.record->Find("request.headers.User-Agent.0", &v));
  EXPECT_EQ(v.size(), 16u * 1024u);  // a value is kept up to 16 KiB
}

TEST(JsonParserTest, Traefik) {
  LineParser p(LogFormat::LOG_FORMAT_TRAEFIK_JSON);
  ParsedLine out;
  ASSERT_THAT_OK(p.Parse(
      R"({"ClientAddr":"203.0.113.7:51234","ClientHost":"203.0.113.7","ClientPort":"51234",)"
      R"("ClientUsername":"-","DownstreamContentSize":19,"DownstreamStatus":404,)"
      R"("Duration":152400,"OriginContentSize":19,"OriginStatus":404,"RequestHost":"example.com",)"
      R"("RequestMethod":"GET","RequestPath":"/.env","RequestProtocol":"HTTP/1.1",)"
      R"("RouterName":"web@docker","StartUTC":"2026-03-03T14:02:01.4925843Z",)"
      R"("request_User-Agent":"Go-http-client/1.1","level":"info","msg":"",)"
      R"("time":"2026-03-03T14:02:01Z"})",
      kRef, &out));
  EXPECT_EQ(out.message,
            "203.0.113.7 - - [03/Mar/2026:14:02:01 +0000] \"GET /.env HTTP/1.1\" 404 19 \"-\" "
            "\"Go-http-client/1.1\"");
}

TEST(JsonParserTest, EnvoyCutsThePort) {
  LineParser p(LogFormat::LOG_FORMAT_ENVOY_JSON);
  ParsedLine out;
  ASSERT_THAT_OK(p.Parse(
      R"({"start_time":"2026-03-03T14:02:01.522Z","method":"GET","path":"/admin",)"
      R"("protocol":"HTTP/1.1","response_code":403,"response_flags":"-","bytes_received":0,)"
      R"("bytes_sent":0,"duration":1,"upstream_service_time":null,"x_forwarded_for":"9.9.9.9",)"
      R"("user_agent":"curl/8.5.0","request_id":"a","authority":"example.com",)"
      R"("upstream_host":"10.0.0.2:80","downstream_remote_address":"[2001:db8::7]:40000"})",
      kRef, &out));
  EXPECT_EQ(out.client_address, "2001:db8::7");
  EXPECT_EQ(out.message,
            "2001:db8::7 - - [03/Mar/2026:14:02:01 +0000] \"GET /admin HTTP/1.1\" 403 0 \"-\" "
            "\"curl/8.5.0\"");
}

std::string LogpushHttp(absl::string_view ts, absl::string_view extra = "") {
  return absl::StrCat(
      R"({"ClientIP":"203.0.113.7","ClientRequestHost":"example.com","ClientRequestMethod":"POST",)"
      R"("ClientRequestURI":"/login?next=%2F","ClientRequestPath":"/login",)"
      R"("ClientRequestProtocol":"HTTP/2","ClientRequestReferer":"",)"
      R"("ClientRequestUserAgent":"python-requests/2.31","EdgeResponseBytes":512,)"
      R"("EdgeResponseStatus":401,"OriginResponseStatus":401,"RayID":"7d1c2a3b4c5d6e7f",)"
      R"("EdgeStartTimestamp":)",
      ts, extra, "}");
}

TEST(JsonParserTest, LogpushHttpRequestsTimeLayouts) {
  LineParser p(LogFormat::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS);
  const absl::Time want = At("2026-03-03T14:02:01Z");
  for (absl::string_view ts : {R"("2026-03-03T14:02:01Z")", "1772546521",
                               "1772546521000000000", "1772546521000"}) {
    ParsedLine out;
    ASSERT_THAT_OK(p.Parse(LogpushHttp(ts), kRef, &out)) << ts;
    EXPECT_EQ(*out.time, want) << ts;
    EXPECT_EQ(out.message,
              "203.0.113.7 - - [03/Mar/2026:14:02:01 +0000] \"POST /login?next=%2F HTTP/2\" 401 "
              "512 \"-\" \"python-requests/2.31\"");
    absl::string_view origin;
    ASSERT_TRUE(out.record->Find("OriginResponseStatus", &origin));
    EXPECT_EQ(origin, "401");
  }
}

// Caddy's time_format unix_milli_float writes milliseconds with a fraction, and iso8601 a basic
// offset (+0530): each record was "not a time", so malformed.
TEST(JsonParserTest, FractionalMillisAndMicrosAndBasicOffsetsAreTimes) {
  LineParser p(LogFormat::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS);
  const absl::Time second = At("2026-03-03T14:02:01Z");
  const std::pair<absl::string_view, absl::Time> cases[] = {
      {"1772546521123.456", second + absl::Microseconds(123456)},
      {"1772546521123456.7", second + absl::Nanoseconds(123456700)},
      {"1772546521123.4567899", second + absl::Nanoseconds(123456789)},  // past ns: cut
      {R"("2026-03-03T19:32:01+0530")", second},
  };
  for (const auto& [ts, want] : cases) {
    ParsedLine out;
    ASSERT_THAT_OK(p.Parse(LogpushHttp(ts), kRef, &out)) << ts;
    EXPECT_EQ(*out.time, want) << ts;
  }
}

// New York falls back at 02:00 EDT on 1 November 2026: 01:00-01:59 happens twice (05:xxZ, then
// 06:xxZ). A JSON time without an offset in that hour is the occurrence nearer the reference,
// as in the line formats, and said to be repeated: it was always the first (the reference was
// not passed on), so through the second pass every record was dated an hour early.
TEST(JsonParserTest, ARepeatedLocalTimeIsTheOccurrenceNearestTheReference) {
  absl::TimeZone new_york;
  ASSERT_TRUE(absl::LoadTimeZone("America/New_York", &new_york));
  palisade::v1::JsonFormat f;
  f.set_name("app");
  f.set_time("t");
  f.set_message("m");
  for (absl::string_view time : {"2026-11-01 01:30:00", "01/Nov/2026:01:30:00"}) {
    SCOPED_TRACE(time);
    LineParser p(LogFormat::LOG_FORMAT_JSON, new_york);
    ASSERT_THAT_OK(p.SetJsonFormat(f));
    const std::string line = absl::StrCat(R"({"t":")", time, R"(","m":"x"})");
    ParsedLine out;
    ASSERT_THAT_OK(p.Parse(line, At("2026-11-01T06:29:00Z"), &out));
    EXPECT_EQ(*out.time, At("2026-11-01T06:30:00Z"));
    EXPECT_TRUE(out.time_repeated);
    ASSERT_THAT_OK(p.Parse(line, At("2026-11-01T05:29:00Z"), &out));
    EXPECT_EQ(*out.time, At("2026-11-01T05:30:00Z"));
    EXPECT_TRUE(out.time_repeated);
    // An hour the zone does not repeat, or a time with an offset: not repeated.
    for (absl::string_view other : {R"({"t":"2026-11-01 02:30:00","m":"x"})",
                                    R"({"t":"2026-11-01T01:30:00-05:00","m":"x"})",
                                    R"({"t":"01/Nov/2026:01:30:00 -0500","m":"x"})"}) {
      ASSERT_THAT_OK(p.Parse(other, At("2026-11-01T06:29:00Z"), &out));
      EXPECT_FALSE(out.time_repeated) << other;
    }
  }
  // The nginx preset's time_local without an offset too, read in the parser's zone.
  LineParser nginx(LogFormat::LOG_FORMAT_NGINX_JSON, new_york);
  ParsedLine out;
  ASSERT_THAT_OK(nginx.Parse(
      R"({"time_local":"01/Nov/2026:01:30:00","remote_addr":"198.51.100.7",)"
      R"("request":"GET / HTTP/1.1","status":"200","body_bytes_sent":"1"})",
      At("2026-11-01T06:29:00Z"), &out));
  EXPECT_EQ(*out.time, At("2026-11-01T06:30:00Z"));
  EXPECT_TRUE(out.time_repeated);
}

TEST(JsonParserTest, LogpushFirewallEvents) {
  LineParser p(LogFormat::LOG_FORMAT_LOGPUSH_FIREWALL_EVENTS);
  ParsedLine out;
  ASSERT_THAT_OK(p.Parse(
      R"({"Action":"block","ClientASNDescription":"EXAMPLE","ClientCountry":"xx",)"
      R"("ClientIP":"203.0.113.7","ClientRequestHost":"example.com","ClientRequestMethod":"GET",)"
      R"("ClientRequestPath":"/xmlrpc.php","ClientRequestProtocol":"HTTP/1.1",)"
      R"("ClientRequestQuery":"","ClientRequestUserAgent":"Mozilla/5.0 \"x\"",)"
      R"("Datetime":"2026-03-03T14:02:01Z","EdgeResponseStatus":403,"Kind":"firewall",)"
      R"("OriginResponseStatus":0,"RayName":"7d1c2a3b4c5d6e7f",)"
      R"("RuleID":"6179ae15870a4bb7b2d480d4843b323c","Source":"firewallCustom"})",
      kRef, &out));
  EXPECT_EQ(out.message,
            "203.0.113.7 block firewallCustom 6179ae15870a4bb7b2d480d4843b323c \"GET /xmlrpc.php "
            "HTTP/1.1\" \"example.com\" \"Mozilla/5.0 \\x22x\\x22\"");
}

TEST(JsonParserTest, MalformedWithReasons) {
  LineParser p(LogFormat::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS);
  ParsedLine out;
  EXPECT_THAT(p.Parse("203.0.113.7 - - [03/Mar/2026:14:02:01 +0000] \"GET / HTTP/1.1\" 200 1",
                      kRef, &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("JSON")));
  EXPECT_THAT(p.Parse("[1,2]", kRef, &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a JSON object")));
  EXPECT_THAT(p.Parse("{} {}", kRef, &out), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(p.Parse(R"({"ClientIP":"203.0.113.7"})", kRef, &out),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("no field \"EdgeStartTimestamp\"")));
  // A mapped field twice: ambiguous, refused (whichever copy a reader believed, the other
  // could be the forged one).
  EXPECT_THAT(p.Parse(LogpushHttp("1772546521", R"(,"ClientIP":"1.2.3.4")"), kRef, &out),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"ClientIP\" appears more than once")));
  // A dotted key that flattens onto a nested mapped name is a duplicate too.
  LineParser caddy(LogFormat::LOG_FORMAT_CADDY_JSON);
  EXPECT_THAT(caddy.Parse(R"({"ts":1772546521,"request":{"client_ip":"203.0.113.7","method":)"
                          R"("GET","uri":"/"},"status":200,"request.client_ip":"1.2.3.4"})",
                          kRef, &out),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"request.client_ip\" appears more than once")));
  EXPECT_THAT(p.Parse(LogpushHttp("\"yesterday\""), kRef, &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is not a time")));
  EXPECT_THAT(p.Parse(LogpushHttp("\"2026-02-31T00:00:00Z\""), kRef, &out),
              StatusIs(absl::StatusCode::kOutOfRange));
  std::string bad_ip = LogpushHttp("1772546521");
  bad_ip.replace(bad_ip.find("203.0.113.7"), 11, "evil host");
  EXPECT_THAT(p.Parse(bad_ip, kRef, &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an IP address")));
  std::string bad_status = LogpushHttp("1772546521");
  bad_status.replace(bad_status.find("401,"), 3, "\"4x\"");
  EXPECT_THAT(p.Parse(bad_status, kRef, &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("status")));
}

TEST(JsonParserTest, HostileInputIsBounded) {
  LineParser p(LogFormat::LOG_FORMAT_NGINX_JSON);
  ParsedLine out;
  // 100,000 levels of nesting: refused at 32, no recursion to exhaust.
  std::string deep = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  EXPECT_THAT(p.Parse(deep, kRef, &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("nested deeper than 32")));
  // 2,000 fields before the mapped ones: the first 1,024 are kept, then only the mapped ones.
  std::string many = "{";
  for (int i = 0; i < 2000; ++i) absl::StrAppend(&many, "\"k", i, "\":1,");
  many += R"("time":"2026-03-03T14:02:01Z","remote_addr":"203.0.113.7","request":"GET / HTTP/1.1",)"
          R"("status":404})";
  ASSERT_THAT_OK(p.Parse(many, kRef, &out));
  absl::string_view v;
  EXPECT_TRUE(out.record->Find("k1023", &v));
  EXPECT_FALSE(out.record->Find("k1024", &v));
  EXPECT_EQ(out.record->size(), 1024u + 4u);
  EXPECT_EQ(out.message, "203.0.113.7 - - [03/Mar/2026:14:02:01 +0000] \"GET / HTTP/1.1\" 404 - \"-\" \"-\"");
  // A raw NUL inside a string is not JSON; invalid UTF-8 outside a string neither.
  EXPECT_THAT(p.Parse("{\"remote_addr\"\xff:\"a\"}", kRef, &out),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(p.Parse(std::string("{\"remote_addr\":\"a\0b\"}", 22), kRef, &out),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // An escaped NUL is valid JSON; it is escaped in the rendered line.
  ASSERT_THAT_OK(p.Parse(
      R"({"time":"2026-03-03T14:02:01Z","remote_addr":"203.0.113.7","request":"GET /\u0000 HTTP/1.1","status":200})",
      kRef, &out));
  EXPECT_THAT(std::string(out.message), HasSubstr("\"GET /\\x00 HTTP/1.1\""));
  // A huge string is just a long field, rendered up to 8 KiB: the status after it stays in.
  std::string huge = absl::StrCat(R"({"time":"2026-03-03T14:02:01Z","remote_addr":"203.0.113.7",)",
                                  R"("request":"GET /)", std::string(1 << 20, 'a'),
                                  R"( HTTP/1.1","status":200})");
  ASSERT_THAT_OK(p.Parse(huge, kRef, &out));
  EXPECT_LT(out.message.size(), 8192u + 100u);
  EXPECT_THAT(std::string(out.message), HasSubstr("aaa\" 200 - "));
  // A 5,000-digit fraction in a unix time is cut at nanoseconds, not scanned for meaning.
  LineParser caddy(LogFormat::LOG_FORMAT_CADDY_JSON);
  EXPECT_THAT(caddy.Parse(absl::StrCat(R"({"ts":1e999})"), kRef, &out),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(JsonParserTest, CustomMapping) {
  palisade::v1::JsonFormat f;
  f.set_name("app");
  f.set_time("when");
  f.set_time_layout("unix_ms");
  f.set_client_address("peer");
  f.set_method("req.m");
  f.set_path("req.p");
  f.set_status("code");
  LineParser p(LogFormat::LOG_FORMAT_JSON);
  ParsedLine out;
  EXPECT_THAT(p.Parse("{}", kRef, &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("json_format")));
  ASSERT_THAT_OK(p.SetJsonFormat(f));
  ASSERT_THAT_OK(p.Parse(
      R"({"when":1772546521000,"peer":"203.0.113.7:443","req":{"m":"GET","p":"/a"},"code":200})",
      kRef, &out));
  EXPECT_EQ(out.message,
            "203.0.113.7 - - [03/Mar/2026:14:02:01 +0000] \"GET /a -\" 200 - \"-\" \"-\"");
  // Every field a custom mapping names is required.
  EXPECT_THAT(p.Parse(R"({"when":1772546521000,"peer":"203.0.113.7","code":200})", kRef, &out),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("json format \"app\": no field \"req.m\"")));

  palisade::v1::JsonFormat msg;
  msg.set_name("events");
  msg.set_message("text");
  msg.set_client_address("src");
  LineParser m(LogFormat::LOG_FORMAT_JSON);
  ASSERT_THAT_OK(m.SetJsonFormat(msg));
  ASSERT_THAT_OK(m.Parse(R"({"text":"login failed for bob","src":"192.0.2.1"})", kRef, &out));
  EXPECT_EQ(out.message, "login failed for bob");
  EXPECT_EQ(out.client_address, "192.0.2.1");
  EXPECT_FALSE(out.time.has_value());

  palisade::v1::JsonFormat bad;
  bad.set_name("Bad Name");
  EXPECT_THAT(ValidateJsonFormat(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad.set_name("x");
  EXPECT_THAT(ValidateJsonFormat(bad),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("client_address")));
  bad.set_message("m");
  bad.set_time_layout("iso");
  EXPECT_THAT(ValidateJsonFormat(bad),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("time_layout")));
}

// nginx escape=json writes a client's raw bytes >= 0x80 unescaped: a request line with 0xFF in
// it must not make the record unreadable (an attacker would add one to every request to hide).
TEST(JsonParserTest, InvalidUtf8FromNginxIsReadAsLatin1) {
  LineParser p(LogFormat::LOG_FORMAT_NGINX_JSON);
  ParsedLine out;
  ASSERT_THAT_OK(p.Parse(
      "{\"time\":\"2026-03-03T14:02:01Z\",\"remote_addr\":\"203.0.113.7\",\"request\":"
      "\"GET /\xff../../etc/passwd HTTP/1.1\",\"status\":400,\"http_user_agent\":\"\xc3\xa9\xc3\"}",
      kRef, &out));
  EXPECT_EQ(out.message,
            "203.0.113.7 - - [03/Mar/2026:14:02:01 +0000] \"GET /\\xC3\\xBF../../etc/passwd "
            "HTTP/1.1\" 400 - \"-\" \"\\xC3\\xA9\\xC3\\x83\"");
}

// The pipeline cuts a line past engine.max_line_bytes; a client writes the user agent: a record
// cut inside it is still read from the fields before the cut (else a long user agent hides any
// request). A field after the cut is missing as usual.
TEST(JsonParserTest, RecordCutAtTheLineCapIsReadFromItsWholeFields) {
  LineParser p(LogFormat::LOG_FORMAT_NGINX_JSON);
  ParsedLine out;
  const std::string record = absl::StrCat(
      R"({"time":"2026-03-03T14:02:01Z","remote_addr":"203.0.113.7","request_method":"GET",)",
      R"("request_uri":"/.env","server_protocol":"HTTP/1.1","status":404,"body_bytes_sent":0,)",
      R"("http_user_agent":")", std::string(20000, 'A'), R"(","host":"example.com"})");
  ASSERT_THAT_OK(p.Parse(absl::string_view(record).substr(0, 16384), kRef, &out));
  EXPECT_EQ(out.message,
            "203.0.113.7 - - [03/Mar/2026:14:02:01 +0000] \"GET /.env HTTP/1.1\" 404 0 \"-\" \"-\"");
  // A number cut where the input ends is not believed: "status":40 of 403.
  const size_t status_end = record.find("404") + 2;
  EXPECT_THAT(p.Parse(absl::string_view(record).substr(0, status_end), kRef, &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("status")));
  // Cut before the status (a required field): malformed, naming it.
  EXPECT_THAT(p.Parse(absl::string_view(record).substr(0, 120), kRef, &out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("status")));
  // Garbage that ends early is not a cut record: it must start as one.
  EXPECT_THAT(p.Parse("nonsense", kRef, &out), StatusIs(absl::StatusCode::kInvalidArgument));
}

// A whole record with a stray byte after it was not cut by the pipeline: it is no record (the
// cut rule above is for a top-level object the input ended inside).
TEST(JsonParserTest, AStrayByteAfterAWholeRecordIsMalformedNotCut) {
  LineParser p(LogFormat::LOG_FORMAT_NGINX_JSON);
  ParsedLine out;
  const std::string record =
      R"({"time":"2026-03-03T14:02:01Z","remote_addr":"203.0.113.7","request_method":"GET",)"
      R"("request_uri":"/.env","server_protocol":"HTTP/1.1","status":404,"body_bytes_sent":0})";
  ASSERT_THAT_OK(p.Parse(record, kRef, &out));
  for (absl::string_view stray : {"x", "1", "]", "}", ","}) {
    EXPECT_THAT(p.Parse(absl::StrCat(record, stray), kRef, &out),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not valid JSON")))
        << stray;
  }
}

// time_layout unix_ms past the year 9999 is impossible, as for seconds: a count past INT64_MAX
// must not wrap to a time before 1970.
TEST(JsonParserTest, UnixMillisPastTheYear9999AreOutOfRange) {
  palisade::v1::JsonFormat f;
  f.set_name("app");
  f.set_time("when");
  f.set_time_layout("unix_ms");
  f.set_message("text");
  LineParser p(LogFormat::LOG_FORMAT_JSON);
  ASSERT_THAT_OK(p.SetJsonFormat(f));
  ParsedLine out;
  ASSERT_THAT_OK(p.Parse(R"({"when":253402300799999,"text":"x"})", kRef, &out));
  EXPECT_EQ(*out.time, At("9999-12-31T23:59:59.999Z"));
  for (absl::string_view ms : {"253402300800000", "9223372036854775808", "9999999999999999999"}) {
    EXPECT_THAT(p.Parse(absl::StrCat(R"({"when":)", ms, R"(,"text":"x"})"), kRef, &out),
                StatusIs(absl::StatusCode::kOutOfRange))
        << ms;
  }
}

TEST(JsonParserTest, JsonRecordsAreCutAtTheRecordCapOtherLinesAtTheLineCap) {
  EXPECT_EQ(LineCapFor(LogFormat::LOG_FORMAT_CADDY_JSON, 16384, 8 << 20), 8u << 20);
  EXPECT_EQ(LineCapFor(LogFormat::LOG_FORMAT_LOGPUSH_FIREWALL_EVENTS, 16384, 8 << 20), 8u << 20);
  EXPECT_EQ(LineCapFor(LogFormat::LOG_FORMAT_SYSLOG, 16384, 8 << 20), 16384u);
  EXPECT_EQ(LineCapFor(LogFormat::LOG_FORMAT_COMBINED, 16384, 8 << 20), 16384u);
}

TEST(JsonParserTest, DuplicateUnmappedKeysAreAmbiguousToFind) {
  LineParser p(LogFormat::LOG_FORMAT_NGINX_JSON);
  ParsedLine out;
  ASSERT_THAT_OK(p.Parse(
      R"({"time":"2026-03-03T14:02:01Z","remote_addr":"203.0.113.7","request":"GET / HTTP/1.1",)"
      R"("status":200,"x":"1","x":"2","a":{"b":[true,null,"c"]}})",
      kRef, &out));
  absl::string_view v;
  EXPECT_FALSE(out.record->Find("x", &v));
  ASSERT_TRUE(out.record->Find("a.b.0", &v));
  EXPECT_EQ(v, "true");
  EXPECT_FALSE(out.record->Find("a.b.1", &v));  // null: absent
  ASSERT_TRUE(out.record->Find("a.b.2", &v));
  EXPECT_EQ(v, "c");
}

}  // namespace
}  // namespace palisade
