#include "services/formats/percent_escapes.h"

#include <cctype>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace palisade {
namespace {

std::string Decoded(absl::string_view text) {
  std::string out = "untouched";
  if (!DecodeReadableEscapes(text, &out)) {
    EXPECT_EQ(out, "untouched") << text;
    return std::string(text);
  }
  return out;
}

TEST(PercentEscapesTest, UnreservedCharactersAndSlashAreDecodedInEitherCase) {
  EXPECT_EQ(Decoded("GET /.%65nv HTTP/1.1"), "GET /.env HTTP/1.1");
  EXPECT_EQ(Decoded("GET /wp-%6Cogin.php HTTP/1.1"), "GET /wp-login.php HTTP/1.1");
  EXPECT_EQ(Decoded("/%2e%2E%2f%2Fetc"), "/..//etc");
  EXPECT_EQ(Decoded("%41%5a%61%7a%30%39%2d%5f%7e"), "AZaz09-_~");
}

TEST(PercentEscapesTest, DelimitersAndPercentStayEncoded) {
  // A space, '"', '[', ']', '=', ':', '<', '#', '?' and '%' itself: each could end a field or
  // forge one, or start a second decoding.
  for (absl::string_view kept : {"%20", "%22", "%5b", "%5D", "%3d", "%3A", "%3c", "%23", "%3f",
                                 "%25", "%00", "%0a", "%7f", "%80", "%ff", "%2c", "%40"}) {
    std::string out;
    EXPECT_FALSE(DecodeReadableEscapes(kept, &out)) << kept;
    EXPECT_EQ(Decoded(absl::StrCat("a", kept, "b")), absl::StrCat("a", kept, "b"));
  }
  EXPECT_EQ(Decoded("..%252f..%252e"), "..%252f..%252e");
}

TEST(PercentEscapesTest, OnePassLeftToRight) {
  // "%2" is no escape; the '6' an escape gives is not read again.
  EXPECT_EQ(Decoded("%2%36%36"), "%266");
  EXPECT_EQ(Decoded("%%36%35"), "%65");
  // An escape cut by the text's end, and one next to it.
  EXPECT_EQ(Decoded("x%6"), "x%6");
  EXPECT_EQ(Decoded("x%"), "x%");
  EXPECT_EQ(Decoded("x%65%6"), "xe%6");
  EXPECT_EQ(Decoded("%20%65 100%"), "%20e 100%");
  EXPECT_EQ(Decoded(""), "");
  EXPECT_EQ(Decoded("no escape at all"), "no escape at all");
}

TEST(PercentEscapesTest, OnlyAnAccessLinesMessageIsReadDecoded) {
  using ::palisade::v1::LogFormat;
  const std::string access =
      "198.51.100.7 - - [03/Mar/2026:14:02:01 +0000] \"GET /.%65nv HTTP/1.1\" 200 9 \"-\" \"x\"";
  EXPECT_TRUE(ReadsEscapesDecoded(LogFormat::LOG_FORMAT_COMBINED, access));
  EXPECT_TRUE(ReadsEscapesDecoded(LogFormat::LOG_FORMAT_SYSLOG, access));
  EXPECT_TRUE(ReadsEscapesDecoded(LogFormat::LOG_FORMAT_SYSLOG5424, "2001:db8::7 - - [x] \"GET /"));
  EXPECT_TRUE(ReadsEscapesDecoded(LogFormat::LOG_FORMAT_CADDY_JSON, access));
  // A common-format log read as raw lines (webapps' php-url-fopen), a custom JSON mapping
  // rendered as a combined line: they open with the client's address.
  EXPECT_TRUE(ReadsEscapesDecoded(LogFormat::LOG_FORMAT_RAW, access));
  EXPECT_TRUE(ReadsEscapesDecoded(LogFormat::LOG_FORMAT_JSON, access));
  // A daemon's own message, an error log's, a service's raw log: as the server wrote them.
  EXPECT_FALSE(ReadsEscapesDecoded(LogFormat::LOG_FORMAT_SYSLOG,
                                   "Failed password for %61dmin from 203.0.113.5 port 22 ssh2"));
  EXPECT_FALSE(ReadsEscapesDecoded(LogFormat::LOG_FORMAT_SYSLOG, "203.0.113.5:22 %61"));
  EXPECT_FALSE(ReadsEscapesDecoded(LogFormat::LOG_FORMAT_SYSLOG, ""));
  EXPECT_FALSE(ReadsEscapesDecoded(LogFormat::LOG_FORMAT_NGINX_ERROR, access));
  EXPECT_FALSE(ReadsEscapesDecoded(LogFormat::LOG_FORMAT_APACHE_ERROR, access));
  // A service's own raw log opens with its time; a custom JSON mapping's `message` is whatever
  // field the operator named (a journal's MESSAGE).
  for (absl::string_view raw : {"Tue Mar  3 14:02:01 2026 [pid 1] FAIL LOGIN: Client \"::1\"",
                                "260303 14:02:01 [Warning] Access denied for user 'r'@'x'",
                                "2026-03-03 14:02:01 UTC [1]: FATAL: password for %61dmin",
                                "1772546521.123 45 203.0.113.5 TCP_DENIED/403 0 GET http://x/"}) {
    EXPECT_FALSE(ReadsEscapesDecoded(LogFormat::LOG_FORMAT_RAW, raw)) << raw;
  }
  EXPECT_FALSE(ReadsEscapesDecoded(LogFormat::LOG_FORMAT_JSON,
                                   "Failed password for %61dmin from 203.0.113.5 port 22"));
  EXPECT_FALSE(ReadsEscapesDecoded(LogFormat::LOG_FORMAT_LOGPUSH_FIREWALL_EVENTS, access));
  // A postfix queue id opens with hex digits, as an address would: no address that long.
  EXPECT_FALSE(ReadsEscapesDecoded(LogFormat::LOG_FORMAT_SYSLOG,
                                   "3F1B2C0A1D: client=unknown[203.0.113.5]"));
  // Every spelling of an address that opens a line.
  for (absl::string_view opening : {"1.2.3.4 ", "203.0.113.5 ", "::1 ", "::ffff:1.2.3.4 ",
                                    "fe80::1 ", "abcd:ef01::2 ", "2001:db8::7 ", "A:B::C "}) {
    EXPECT_TRUE(ReadsEscapesDecoded(LogFormat::LOG_FORMAT_SYSLOG,
                                    absl::StrCat(opening, "- - [x] \"GET /")))
        << opening;
  }
  EXPECT_FALSE(ReadsEscapesDecoded(LogFormat::LOG_FORMAT_DECISIONS, access));
}

TEST(PercentEscapesTest, DecodesWhatAByteByByteDecoderDecodes) {
  // Random texts over '%', hex digits of both cases and a few others, against a plain decoder.
  const std::string alphabet = "%%%0123456789abcdefABCDEFxyz/ .";
  uint32_t seed = 12345;
  for (int round = 0; round < 20000; ++round) {
    std::string text;
    const int size = round % 24;
    for (int i = 0; i < size; ++i) {
      seed = seed * 1103515245 + 12345;
      text.push_back(alphabet[(seed >> 16) % alphabet.size()]);
    }
    std::string expected;
    for (size_t i = 0; i < text.size();) {
      if (text[i] == '%' && i + 2 < text.size() && isxdigit(text[i + 1]) &&
          isxdigit(text[i + 2])) {
        const int c = std::stoi(text.substr(i + 1, 2), nullptr, 16);
        if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '/') {
          expected.push_back(static_cast<char>(c));
          i += 3;
          continue;
        }
      }
      expected.push_back(text[i++]);
    }
    ASSERT_EQ(Decoded(text), expected) << text;
  }
}

}  // namespace
}  // namespace palisade
