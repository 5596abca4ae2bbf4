#include "services/common/ip.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/status_matchers.h"

namespace palisade {
namespace {

using ::palisade::testing::StatusIs;
using ::testing::HasSubstr;

std::string Canon(absl::string_view text) {
  std::optional<IpAddress> ip = IpAddress::Parse(text);
  return ip ? ip->ToString() : "<invalid>";
}

TEST(IpAddressTest, ParsesAndCanonicalises) {
  EXPECT_EQ(Canon("203.0.113.7"), "203.0.113.7");
  EXPECT_EQ(Canon("0.0.0.0"), "0.0.0.0");
  EXPECT_EQ(Canon("255.255.255.255"), "255.255.255.255");
  EXPECT_EQ(Canon("10.100.0.9"), "10.100.0.9");
  EXPECT_EQ(Canon("2001:DB8:0:0:0:0:0:1"), "2001:db8::1");
  EXPECT_EQ(Canon("[2001:db8::1]"), "2001:db8::1");
  EXPECT_EQ(Canon("fe80::1%eth0"), "fe80::1");
}

TEST(IpAddressTest, FoldsMappedIpv6ToIpv4) {
  std::optional<IpAddress> ip = IpAddress::Parse("::ffff:198.51.100.4");
  ASSERT_TRUE(ip.has_value());
  EXPECT_TRUE(ip->is_v4());
  EXPECT_EQ(ip->ToString(), "198.51.100.4");
  EXPECT_EQ(*ip, *IpAddress::Parse("198.51.100.4"));
}

TEST(IpAddressTest, RejectsNonAddresses) {
  for (absl::string_view bad :
       {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1..2.3", "1.2.3.", ".1.2.3",
        "1.2.3.1000", "example.com", "1.2.3.4 ", "::g", "1.2.3.4; rm -rf /", "[1.2.3.4"}) {
    EXPECT_FALSE(IpAddress::Parse(bad).has_value()) << bad;
  }
}

TEST(IpAddressTest, NonPublicRanges) {
  EXPECT_TRUE(IpAddress::Parse("127.0.0.1")->IsNonPublic());
  EXPECT_TRUE(IpAddress::Parse("10.1.2.3")->IsNonPublic());
  EXPECT_TRUE(IpAddress::Parse("::1")->IsNonPublic());
  EXPECT_TRUE(IpAddress::Parse("fd00::5")->IsNonPublic());
  EXPECT_FALSE(IpAddress::Parse("203.0.113.7")->IsNonPublic());
  EXPECT_FALSE(IpAddress::Parse("2001:db8::1")->IsNonPublic());
}

TEST(CidrTest, ContainsAtTheEdges) {
  Cidr c = *Cidr::Parse("192.0.2.0/25");
  EXPECT_TRUE(c.Contains(*IpAddress::Parse("192.0.2.0")));
  EXPECT_TRUE(c.Contains(*IpAddress::Parse("192.0.2.127")));
  EXPECT_FALSE(c.Contains(*IpAddress::Parse("192.0.2.128")));
  EXPECT_FALSE(c.Contains(*IpAddress::Parse("2001:db8::1")));

  Cidr v6 = *Cidr::Parse("2001:db8:abcd::/48");
  EXPECT_TRUE(v6.Contains(*IpAddress::Parse("2001:db8:abcd:ffff::1")));
  EXPECT_FALSE(v6.Contains(*IpAddress::Parse("2001:db8:abce::1")));
  EXPECT_TRUE(Cidr::Parse("0.0.0.0/0")->Contains(*IpAddress::Parse("8.8.8.8")));
}

TEST(CidrTest, BareAddressIsHostRoute) {
  Cidr c = *Cidr::Parse("2001:db8::1");
  EXPECT_EQ(c.prefix_length(), 128);
  EXPECT_EQ(c.ToString(), "2001:db8::1/128");
}

TEST(CidrTest, ErrorsNameTheProblem) {
  EXPECT_THAT(Cidr::Parse("10.0.0.1/8"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("did you mean 10.0.0.0/8")));
  EXPECT_THAT(Cidr::Parse("10.0.0.0/33"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0..32")));
  EXPECT_THAT(Cidr::Parse("nope/8"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an IP address")));
  EXPECT_THAT(CidrSet::Parse({"10.0.0.0/8", "bad"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("entry 2")));
}

}  // namespace
}  // namespace palisade
