#include "services/common/fingerprint.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace palisade {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kUser[] = "cfut_Q3vX8mK2pL9nR4tY7wZ1aB5cD6eF0gH3jK8mN2pQ";
constexpr char kAccount[] = "cfat_z9Y8x7W6v5U4t3S2r1Q0p9O8n7M6l5K4j3I2h1G0";
constexpr char kOld[] = "Zx8Kq2Lm9Np4Rt7Vw1Ya5Bc6De0Fg3Hj8Km2Np4Q";

TEST(FingerprintTest, IsShortStableAndNamesTheSecret) {
  EXPECT_EQ(Fingerprint(kOld), "sha256:3cc9e8f3c7832a51");  // the pack's example key
  EXPECT_NE(Fingerprint(kUser), Fingerprint(kAccount));
}

// The lines of rules/cloudflare-tokens.textproto's examples: each holds one token shape.
TEST(FindTokenShapesTest, FindsTheShapesOfTheTokenPack) {
  EXPECT_THAT(FindTokenShapes(std::string("curl -H 'Authorization: Bearer ") + kUser + "' x"),
              ElementsAre(kUser));
  EXPECT_THAT(FindTokenShapes(std::string("env: CLOUDFLARE_API_TOKEN=") + kAccount + " NODE=1"),
              ElementsAre(kAccount));
  EXPECT_THAT(FindTokenShapes(std::string("{Authorization: Bearer ") + kOld + ", Accept: */*}"),
              ElementsAre(kOld));
  EXPECT_THAT(FindTokenShapes(std::string("\"GET /hook?cf_token=") + kOld + " HTTP/1.1\" 200"),
              ElementsAre(kOld));
  EXPECT_THAT(FindTokenShapes(std::string("GET /x?a=1&CF_TOKEN=") + kOld), ElementsAre(kOld));
}

// A token in a URL that is itself a parameter (a login's redirect, an OAuth state): the
// separators before it are escapes ("%3D" is '=', "%20" a space), whose last character is a hex
// digit, not a separator.
TEST(FindTokenShapesTest, FindsATokenAfterAnEscapedSeparator) {
  EXPECT_THAT(FindTokenShapes(std::string("GET /login?next=%2Fhook%3Ftoken%3D") + kUser +
                              " HTTP/1.1"),
              ElementsAre(kUser));
  EXPECT_THAT(FindTokenShapes(std::string("GET /x?auth=Bearer%20") + kAccount + "%26y=1"),
              ElementsAre(kAccount));
  EXPECT_THAT(FindTokenShapes(std::string("GET /x?auth=Bearer%20") + kOld + " HTTP/1.1"),
              ElementsAre(kOld));
  EXPECT_THAT(FindTokenShapes(std::string("GET /login?next=%2Fhook%3Fcf_token%3D") + kOld +
                              " HTTP/1.1"),
              ElementsAre(kOld));
  EXPECT_THAT(FindTokenShapes(std::string("GET /login?next=%2Fhook%3Fa%3D1%26cf_token%3d") + kOld),
              ElementsAre(kOld));
  // Encoded twice or more (a URL inside a URL inside a URL: SSO redirect chains): the '%' of
  // each escape is itself escaped, "%253D".
  EXPECT_THAT(FindTokenShapes(std::string("GET /sso?r=https%3A%2F%2Fa%2Fl%3Fn%3D%252Fh%253Ft%253D") +
                              kUser + " HTTP/1.1"),
              ElementsAre(kUser));
  EXPECT_THAT(FindTokenShapes(std::string("GET /x?n=%25252Fy%25253Ft%25253D") + kAccount),
              ElementsAre(kAccount));
  // The older form's contexts, escaped (once or more) or form-encoded.
  EXPECT_THAT(FindTokenShapes(std::string("GET /x?n=%2Fy%3Fcf_api_token%3D") + kOld),
              ElementsAre(kOld));
  EXPECT_THAT(FindTokenShapes(std::string("GET /x?n=%2Fy%3Fcloudflare_api_token%253D") + kOld),
              ElementsAre(kOld));
  EXPECT_THAT(FindTokenShapes(std::string("POST /x auth=Bearer+") + kOld), ElementsAre(kOld));
  EXPECT_THAT(FindTokenShapes(std::string("GET /x?n=%2Fy%253Fcf_token%253D") + kOld),
              ElementsAre(kOld));
  // An escape is a separator only as a whole: "3cfut_" after a '%2' is not one.
  EXPECT_TRUE(FindTokenShapes(std::string("%23") + "x" + kUser).empty());
}

TEST(FindTokenShapesTest, LeavesLookAlikesAlone) {
  // A git hash: 40 characters with no context saying it is a token.
  EXPECT_TRUE(FindTokenShapes("HEAD is now at 4f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39").empty());
  EXPECT_TRUE(FindTokenShapes("token cfut_short is not a token").empty());
  // One character too many: not the 40-character form.
  EXPECT_TRUE(FindTokenShapes(std::string("?cf_token=") + kOld + "x").empty());
  EXPECT_TRUE(FindTokenShapes(std::string("xcfut_") + (kUser + 5)).empty());
}

TEST(FindTokenShapesTest, FindsEveryTokenOnTheLine) {
  // One separator between them: the first match consumes it, the second must still see it.
  const std::string line = std::string(kUser) + " " + kAccount + " /x?cf_token=" + kOld;
  EXPECT_THAT(FindTokenShapes(line), ElementsAre(kUser, kAccount, kOld));
}

TEST(RedactTokenShapesTest, ReplacesEveryTokenWithItsFingerprint) {
  const std::string line = std::string("Failed password for invalid user ") + kUser +
                           " from 203.0.113.9 port 22 ssh2; GET /?cf_token=" + kOld;
  std::string out;
  ASSERT_TRUE(RedactTokenShapes(line, &out));
  EXPECT_THAT(out, Not(HasSubstr(kUser)));
  EXPECT_THAT(out, Not(HasSubstr(kOld)));
  EXPECT_EQ(out, "Failed password for invalid user [token " + Fingerprint(kUser) +
                     "] from 203.0.113.9 port 22 ssh2; GET /?cf_token=[token " + Fingerprint(kOld) +
                     "]");
}

TEST(RedactTokenShapesTest, NothingToRedactLeavesTheOutputAlone) {
  std::string out = "untouched";
  EXPECT_FALSE(RedactTokenShapes("Failed password for root from 203.0.113.9 port 22 ssh2", &out));
  EXPECT_EQ(out, "untouched");
}

TEST(RedactTokenShapesTest, RedactsTheCallersOwnSecretsToo) {
  // A token rule of the operator's own, whose shape the built-in patterns do not know.
  std::string out;
  ASSERT_TRUE(RedactTokenShapes("key=abc123secret and again abc123secret", &out,
                                {"abc123secret"}));
  EXPECT_EQ(out, "key=[token " + Fingerprint("abc123secret") + "] and again [token " +
                     Fingerprint("abc123secret") + "]");
}

// A cp1252 or Latin-1 line is not UTF-8: a quote (\x93 \x94), a no-break space (\xa0) or an
// accented letter (\xe9) next to a token is a byte that no UTF-8 character starts with. The
// pattern ran in UTF-8 mode, where [^A-Za-z0-9_] does not match such a byte, so the token stayed
// in the evidence (and the decision, the event stream, the ECS file and the store).
TEST(RedactTokenShapesTest, ATokenNextToANonUtf8ByteIsRedacted) {
  const std::string user(kUser);
  const std::string old(kOld);
  const std::vector<std::string> lines = {
      "user \xe9" + user + "\xe9 from 203.0.113.9",
      "user\xa0" + user + "\xa0" "from 203.0.113.9",
      "user \x93" + user + "\x94 from 203.0.113.9",
      "GET /?cf_token=" + old + "\xe9",
      "GET /?cf_token=" + old + "\xa0HTTP/1.1",
      "\x93GET /x?a=1&cf_token=" + old + "\x94",
  };
  for (const std::string& line : lines) {
    const std::string& token = line.find("cf_token") != std::string::npos ? old : user;
    EXPECT_THAT(FindTokenShapes(line), ElementsAre(token)) << line;
    std::string out;
    EXPECT_TRUE(RedactTokenShapes(line, &out)) << line;
    EXPECT_THAT(out, Not(HasSubstr(token))) << line;
    EXPECT_THAT(out, HasSubstr("[token " + Fingerprint(token) + "]")) << line;
  }
  // A byte that is not UTF-8 does not make a look-alike a token: still one character too many.
  EXPECT_TRUE(FindTokenShapes("GET /?cf_token=" + old + "x\xe9").empty());
  EXPECT_TRUE(FindTokenShapes("\xe9xcfut_" + user.substr(5)).empty());
}

// Two secrets that start at the same place (one a prefix of the other) or overlap: the span that
// started inside one already replaced was skipped whole, so the longer one's tail stayed in clear.
TEST(RedactTokenShapesTest, OverlappingSecretsLeaveNoPartInClear) {
  const std::string s50 = std::string(kOld) + "abcdefghij";
  std::string out;
  ASSERT_TRUE(RedactTokenShapes("key=" + s50 + " x", &out, {s50.substr(0, 40), s50}));
  EXPECT_THAT(out, Not(HasSubstr(s50.substr(40))));
  EXPECT_EQ(out, "key=[token " + Fingerprint(s50) + "] x");
  // Overlapping without either holding the other: one marker over both.
  ASSERT_TRUE(RedactTokenShapes("key=" + s50 + " x", &out, {s50.substr(0, 30), s50.substr(20)}));
  EXPECT_EQ(out, "key=[token " + Fingerprint(s50) + "] x");
}

}  // namespace
}  // namespace palisade
