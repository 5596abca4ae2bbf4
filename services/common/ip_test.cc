#include "services/common/ip.h"

#include <arpa/inet.h>

#include <cstring>
#include <random>
#include <string>

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

// NormaliseKey (services/engine) keeps a captured text of at most 15 bytes without ':' as the
// key, without formatting it again: such text must parse only when it is its own canonical form.
TEST(IpAddressTest, ShortTextWithoutAColonParsesOnlyAsItsOwnCanonicalForm) {
  for (absl::string_view text :
       {"1.2.3.4", "[1.2.3.4]", "[10.0.0.1]", "255.255.255.255", "01.2.3.4", "1.2.3.4 "}) {
    if (std::optional<IpAddress> ip = IpAddress::Parse(text)) {
      EXPECT_EQ(ip->ToString(), text);
    }
  }
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
  // A NUL ends nothing: the whole text must be the address.
  for (absl::string_view bad : {absl::string_view("::1\0x", 5), absl::string_view("1.2.3.4\0", 8),
                                absl::string_view("[1.2.3.4\0]", 10)}) {
    EXPECT_FALSE(IpAddress::Parse(bad).has_value());
  }
}

// IPv6 text is written by hand (the hot path's every IPv6 key; inet_ntop's sprintf per group
// cost ~3,700 instructions an address): glibc's inet_ntop is the reference, on generated
// addresses with every length of zero run and both embedded-IPv4 forms.
std::array<uint8_t, 16> RandomV6(std::mt19937& rng) {
  std::array<uint8_t, 16> b{};
  const int shape = static_cast<int>(rng() % 8);
  for (int i = 0; i < 8; ++i) {
    uint32_t w = 0;
    switch (shape == 0 ? 0 : rng() % 6) {
      case 0: case 1: w = 0; break;          // zero runs of every length
      case 2: w = rng() % 16; break;          // one digit
      case 3: w = 0xffff; break;
      default: w = rng() & 0xffff; break;
    }
    b[2 * i] = static_cast<uint8_t>(w >> 8);
    b[2 * i + 1] = static_cast<uint8_t>(w);
  }
  if (shape == 1 || shape == 2) {  // ::a.b.c.d and ::ffff:a.b.c.d
    std::fill(b.begin(), b.begin() + 12, 0);
    if (shape == 2) b[10] = b[11] = 0xff;
  }
  return b;
}

TEST(IpAddressTest, WritesIpv6AsInetNtopDoes) {
  std::mt19937 rng(7);
  for (int n = 0; n < 300000; ++n) {
    const std::array<uint8_t, 16> b = RandomV6(rng);
    char want[INET6_ADDRSTRLEN];
    ASSERT_NE(inet_ntop(AF_INET6, b.data(), want, sizeof(want)), nullptr);
    EXPECT_EQ(IpAddress::FromBytes(false, b).ToString(), want);
  }
}

// IPv4 and IPv6 text is parsed by hand (inet_pton wanted a NUL-terminated copy and cost ~600
// instructions an IPv6 address): glibc's inet_pton is the reference, on generated texts valid
// and invalid: every group count, "::" anywhere (twice), leading and trailing colons, groups of
// one to five hex digits in either case, leading zeros, embedded dotted quads of three to five
// parts (leading zeros, parts past 255), zone ids, and stray bytes.
std::string RandomAddressText(std::mt19937& rng) {
  static constexpr char kHex[] = "0123456789abcdefABCDEF";
  static constexpr char kStray[] = {'.', ':', '%', 'g', ' ', '[', ']', '/', '-', 'x', '0'};
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  auto quad = [&](int parts) {
    std::string q;
    for (int i = 0; i < parts; ++i) {
      if (i > 0) q += '.';
      switch (pick(6)) {
        case 0: q += std::to_string(pick(10)); break;
        case 1: q += std::to_string(pick(256)); break;
        case 2: q += "0" + std::to_string(pick(100)); break;  // a leading zero
        case 3: q += std::to_string(250 + pick(10)); break;    // 255 and past it
        case 4: q += std::to_string(pick(2000)); break;
        default: q += std::to_string(pick(256)); break;
      }
    }
    return q;
  };
  if (pick(8) == 0) return quad(3 + pick(3));  // IPv4 alone
  std::string t;
  const int groups = pick(11);
  const int gap = pick(3) == 0 ? -1 : pick(groups + 1);  // where "::" goes, if anywhere
  const int gap2 = pick(12) == 0 ? pick(groups + 1) : -1;
  if (pick(20) == 0) t += ':';  // a leading single colon
  for (int g = 0; g <= groups; ++g) {
    if (g == gap || g == gap2) t += "::";
    if (g == groups) break;
    if (g > 0 && g != gap && g != gap2) t += ':';
    int digits = 1 + pick(4);
    if (pick(15) == 0) digits = 5;
    if (pick(30) == 0) digits = 0;  // an empty group: "1::2" where "1:2" was meant, or ":::"
    for (int d = 0; d < digits; ++d) t += kHex[pick(pick(3) == 0 ? 1 : 22)];  // zeros often
  }
  if (pick(4) == 0) t += std::string(t.empty() || t.back() == ':' ? "" : ":") + quad(3 + pick(3));
  if (pick(25) == 0) t += ':';  // a trailing colon
  if (pick(12) == 0) t += pick(2) == 0 ? "%eth0" : "%";
  if (pick(15) == 0 && !t.empty()) t[static_cast<size_t>(pick(static_cast<int>(t.size())))] =
      kStray[pick(sizeof(kStray))];
  return t;
}

// What Parse gave before the hand parse, with glibc doing the work: the text without brackets
// and zone, read by inet_pton; the mapped form folded to IPv4.
std::string Reference(const std::string& text) {
  std::string s = text;
  if (s.find(':') == std::string::npos) {
    if (s.size() > 15) return "<invalid>";
    in_addr a;
    if (inet_pton(AF_INET, s.c_str(), &a) != 1) return "<invalid>";
    std::array<uint8_t, 16> b{};
    std::memcpy(b.data(), &a, 4);
    return "v4 " + IpAddress::FromBytes(true, b).ToString();
  }
  s = s.substr(0, s.find('%'));
  std::array<uint8_t, 16> b{};
  if (inet_pton(AF_INET6, s.c_str(), b.data()) != 1) return "<invalid>";
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(b.data(), kMapped, 12) == 0) {
    std::array<uint8_t, 16> v4{b[12], b[13], b[14], b[15]};
    return "v4 " + IpAddress::FromBytes(true, v4).ToString();
  }
  return "v6 " + IpAddress::FromBytes(false, b).ToString();
}

TEST(IpAddressTest, ParsesAsInetPtonDoes) {
  std::mt19937 rng(18);
  int valid = 0;
  int v6 = 0;
  for (int n = 0; n < 400000; ++n) {
    const std::string text = RandomAddressText(rng);
    if (text.size() >= 64) continue;  // refused by length before any parse (below)
    std::optional<IpAddress> ip = IpAddress::Parse(text);
    const std::string got =
        ip ? std::string(ip->is_v4() ? "v4 " : "v6 ") + ip->ToString() : "<invalid>";
    const std::string want = Reference(text);
    ASSERT_EQ(got, want) << "\"" << text << "\"";
    // In brackets, the same answer.
    ASSERT_EQ(IpAddress::Parse("[" + text + "]").has_value(),
              ip.has_value() && (text.size() > 13 || text.find(':') != std::string::npos))
        << "[" << text << "]";
    valid += ip.has_value();
    v6 += ip.has_value() && !ip->is_v4();
  }
  // The generator reaches both sides of every test above, not just the refusals.
  EXPECT_GT(valid, 60000);
  EXPECT_GT(v6, 40000);
}

TEST(IpAddressTest, ParsesTheEdgesOfIpv6AsInetPtonDoes) {
  for (std::string text :
       {"::", ":::", "::1", ":1", "1:", "1::", "::1:", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "1:2:3:4:5:6:7::8", "1::2::3", "12345::1",
        "01234::", "0000:0000::", "00000::", "::1.2.3.4", "::ffff:1.2.3.4", "::ffff:01.2.3.4",
        "::ffff:1.2.3", "::ffff:1.2.3.4.5", "::ffff:256.2.3.4", "1:2:3:4:5:6:1.2.3.4",
        "1:2:3:4:5:6:7:1.2.3.4", "1:2:3:4:5::1.2.3.4", "::1.2.3.4:1", "::a.2.3.4",
        "::1234.2.3.4", "::.1.2.3", "fe80::1%eth0", "fe80::1%", "%eth0", "::%1", "FFFF::",
        "::ffff:0:1.2.3.4", "64:ff9b::192.0.2.1", "1.2.3.4", "::1 ", " ::1", "::1\n"}) {
    std::optional<IpAddress> ip = IpAddress::Parse(text);
    const std::string got =
        ip ? std::string(ip->is_v4() ? "v4 " : "v6 ") + ip->ToString() : "<invalid>";
    EXPECT_EQ(got, Reference(text)) << "\"" << text << "\"";
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

std::string Embedded(absl::string_view text) {
  std::optional<IpAddress> ip = IpAddress::Parse(text);
  if (!ip) return "<invalid>";
  std::optional<IpAddress> v4 = EmbeddedIpv4(*ip);
  return v4 ? v4->ToString() : "<none>";
}

TEST(EmbeddedIpv4Test, EveryDocumentedFormYieldsItsIpv4) {
  EXPECT_EQ(Embedded("::a00:1"), "10.0.0.1");  // IPv4-compatible
  EXPECT_EQ(Embedded("::7f00:1"), "127.0.0.1");
  EXPECT_EQ(Embedded("::ffff:0:a00:1"), "10.0.0.1");  // IPv4-translated (SIIT)
  EXPECT_EQ(Embedded("64:ff9b::a00:1"), "10.0.0.1");  // NAT64
  EXPECT_EQ(Embedded("64:ff9b::192.168.1.1"), "192.168.1.1");
  EXPECT_EQ(Embedded("2002:a00:1::1"), "10.0.0.1");  // 6to4
  EXPECT_EQ(Embedded("2002:c633:6405:7::9"), "198.51.100.5");
  // Teredo: the client's address is stored inverted (10.0.0.1 → f5ff:fffe).
  EXPECT_EQ(Embedded("2001:0:4136:e378:8000:63bf:f5ff:fffe"), "10.0.0.1");
  // Parse folds the mapped form itself: an IPv4 address embeds nothing further.
  EXPECT_EQ(Embedded("::ffff:10.0.0.1"), "<none>");
  EXPECT_EQ(Embedded("10.0.0.1"), "<none>");
  // Ordinary global IPv6 embeds nothing.
  EXPECT_EQ(Embedded("2a01:4f8:1:2::6"), "<none>");
  EXPECT_EQ(Embedded("2001:db8::a00:1"), "<none>");
  EXPECT_EQ(Embedded("64:ff9c::a00:1"), "<none>");
  // Mapped bytes that did not come through Parse are read the same way.
  std::array<uint8_t, 16> mapped{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1};
  std::optional<IpAddress> v4 = EmbeddedIpv4(IpAddress::FromBytes(false, mapped));
  ASSERT_TRUE(v4.has_value());
  EXPECT_EQ(v4->ToString(), "10.0.0.1");
}

// 2002::/16 only: the one embedding form whose /48 is the IPv4 host's own.
TEST(EmbeddedIpv4Test, Is6to4IsTrueFor2002Slash16Only) {
  const auto is = [](absl::string_view text) { return Is6to4(*IpAddress::Parse(text)); };
  EXPECT_TRUE(is("2002:808:808::1"));
  EXPECT_TRUE(is("2002:a00:1:ffff::9"));  // a non-public IPv4's: still 6to4 (never-ban decides)
  EXPECT_TRUE(is("2002::"));
  EXPECT_FALSE(is("2003:808:808::1"));
  EXPECT_FALSE(is("2001:0:4136:e378:8000:63bf:f5ff:fffe"));  // Teredo
  EXPECT_FALSE(is("64:ff9b::a00:1"));                        // NAT64
  EXPECT_FALSE(is("::ffff:32.2.8.8"));  // IPv4 (mapped, folded by Parse): bytes 20 02 ...
  EXPECT_FALSE(is("32.2.8.8"));
}

std::vector<std::string> EmbeddedRanges(absl::string_view text) {
  std::vector<std::string> out;
  for (const Cidr& c : EmbeddedIpv4Ranges(*Cidr::Parse(text))) out.push_back(c.ToString());
  return out;
}

TEST(EmbeddedIpv4Test, RangesMapToTheIpv4TheyCover) {
  using ::testing::ElementsAre;
  using ::testing::IsEmpty;
  EXPECT_THAT(EmbeddedRanges("2002:a00::/24"), ElementsAre("10.0.0.0/8"));
  EXPECT_THAT(EmbeddedRanges("2002::/16"), ElementsAre("0.0.0.0/0"));
  EXPECT_THAT(EmbeddedRanges("2002:c633:6400::/40"), ElementsAre("198.51.100.0/24"));
  EXPECT_THAT(EmbeddedRanges("64:ff9b::a00:0/104"), ElementsAre("10.0.0.0/8"));
  EXPECT_THAT(EmbeddedRanges("64:ff9b::/64"), ElementsAre("0.0.0.0/0"));
  EXPECT_THAT(EmbeddedRanges("2001:0:1:2::/64"), ElementsAre("0.0.0.0/0"));  // Teredo clients
  EXPECT_THAT(EmbeddedRanges("2001:0:1:2:0:0:f5ff:ff00/120"), ElementsAre("10.0.0.0/24"));
  EXPECT_THAT(EmbeddedRanges("::a00:1/128"), ElementsAre("10.0.0.1/32"));
  // A wide range holds several forms at once.
  EXPECT_THAT(EmbeddedRanges("2000::/3"), ElementsAre("0.0.0.0/0", "0.0.0.0/0"));
  EXPECT_THAT(EmbeddedRanges("2a01:4f8:1:2::/64"), IsEmpty());
  EXPECT_THAT(EmbeddedRanges("10.0.0.0/8"), IsEmpty());
}

TEST(TouchesNeverBanTest, JudgesWhatIsSentIncludingEmbeddedIpv4) {
  const CidrSet allow = *CidrSet::Parse({"2a01:4f8:1:2::5", "198.51.100.5"});
  auto touches = [&](absl::string_view text) { return TouchesNeverBan(*Cidr::Parse(text), allow); };
  // The allowlisted host's /64, and any wider range, covers it.
  EXPECT_TRUE(touches("2a01:4f8:1:2::5"));
  EXPECT_TRUE(touches("2a01:4f8:1:2::/64"));
  EXPECT_TRUE(touches("2a01:4f8::/32"));
  EXPECT_FALSE(touches("2a01:4f8:1:2::6"));
  EXPECT_FALSE(touches("2a01:4f8:1:3::/64"));
  // Non-public IPv4 in every IPv6 disguise.
  for (absl::string_view disguised :
       {"::a00:1", "::7f00:1", "64:ff9b::a00:1", "2002:a00:1::1", "::ffff:10.0.0.1",
        "::ffff:0:a00:1", "2001:0:4136:e378:8000:63bf:f5ff:fffe", "64:ff9b:1::a00:1"}) {
    EXPECT_TRUE(touches(disguised)) << disguised;
  }
  // An allowlisted public IPv4 through 6to4 and NAT64, as an address and as a range.
  EXPECT_TRUE(touches("2002:c633:6405::1"));
  EXPECT_TRUE(touches("64:ff9b::c633:6405"));
  EXPECT_TRUE(touches("2002:c633:6400::/40"));
  // Ranges that hold a whole embedding form hold private space too.
  EXPECT_TRUE(touches("2002::/16"));
  EXPECT_TRUE(touches("64:ff9b::/96"));
  // Public IPv4 embedded is judged as that IPv4: an ordinary address.
  EXPECT_FALSE(touches("2002:cb00:7107::1"));  // 203.0.113.7
  EXPECT_FALSE(touches("64:ff9b::cb00:7107"));
  EXPECT_FALSE(touches("203.0.113.7"));
  EXPECT_TRUE(touches("10.0.0.1"));
}

// One client holds an IPv6 /64 and can take a new address per connection: per-address limits
// count the /64 (or the prefix asked for), and IPv4, however it is written, per address.
TEST(PeerLimitKeyTest, KeysIpv6ByItsPrefixAndIpv4ByItsAddress) {
  EXPECT_EQ(PeerLimitKey("2001:db8:0:1::a"), "2001:db8:0:1::/64");
  EXPECT_EQ(PeerLimitKey("2001:db8:0:1:ffff:ffff:ffff:ffff"), "2001:db8:0:1::/64");
  EXPECT_EQ(PeerLimitKey("2001:DB8:0:1:0:0:0:B"), "2001:db8:0:1::/64");
  EXPECT_NE(PeerLimitKey("2001:db8:0:2::a"), PeerLimitKey("2001:db8:0:1::a"));
  EXPECT_EQ(PeerLimitKey("2001:db8:0:1::a", 48), "2001:db8::/48");
  EXPECT_EQ(PeerLimitKey("2001:db8:0:1::a", 56), "2001:db8::/56");
  EXPECT_EQ(PeerLimitKey("2001:db8:0:1::a", 128), "2001:db8:0:1::a");
  EXPECT_NE(PeerLimitKey("2001:db8:0:1::b", 128), PeerLimitKey("2001:db8:0:1::a", 128));
  // Loopback reads as IPv4-compatible ::0.0.0.1 (EmbeddedIpv4): a key of its own, as before.
  EXPECT_EQ(PeerLimitKey("::1"), "0.0.0.1");
  // IPv4 stays per address, written plainly or mapped.
  EXPECT_EQ(PeerLimitKey("203.0.113.7"), "203.0.113.7");
  EXPECT_EQ(PeerLimitKey("::ffff:203.0.113.7"), "203.0.113.7");
  EXPECT_EQ(PeerLimitKey("::ffff:203.0.113.7", 128), "203.0.113.7");
  EXPECT_NE(PeerLimitKey("203.0.113.8"), PeerLimitKey("203.0.113.7"));
  // An IPv6 address that embeds an IPv4 one counts as that IPv4 (its holder answers there): a
  // 6to4 host's /48 is one key, and the clients of one NAT64 or Teredo server are not one.
  EXPECT_EQ(PeerLimitKey("2002:cb00:7107:1::1"), "203.0.113.7");
  EXPECT_EQ(PeerLimitKey("2002:cb00:7107:2::1"), "203.0.113.7");
  EXPECT_EQ(PeerLimitKey("64:ff9b::cb00:7107"), "203.0.113.7");
  EXPECT_EQ(PeerLimitKey("64:ff9b::cb00:7108"), "203.0.113.8");
  EXPECT_EQ(PeerLimitKey("2001:0:4136:e378:8000:63bf:f5ff:fffe"), "10.0.0.1");
  // Not an address: its own key.
  EXPECT_EQ(PeerLimitKey(""), "");
  EXPECT_EQ(PeerLimitKey("?"), "?");
}

}  // namespace
}  // namespace palisade
