#include "services/actions/guard.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace palisade {
namespace {

palisade::v1::Decision Ban(const std::string& value,
                           palisade::v1::TargetKind kind = palisade::v1::TARGET_KIND_IP) {
  palisade::v1::Decision d;
  d.mutable_target()->set_kind(kind);
  d.mutable_target()->set_value(value);
  return d;
}

TEST(GuardTest, NeverBanSet) {
  GuardOptions options;
  CidrSet never_ban = *CidrSet::Parse(Guard::CloudflareRanges());
  never_ban.Add(*Cidr::Parse("198.51.100.0/24"));  // configured allowlist
  options.never_ban = never_ban;
  Guard guard(options);
  for (const char* ip : {"127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.1.1", "100.64.0.1", "::1",
                         "fe80::1", "fd00::1", "104.16.0.1", "2606:4700::1111", "198.51.100.77"}) {
    EXPECT_TRUE(guard.NeverBan(Ban(ip).target())) << ip;
  }
  EXPECT_FALSE(guard.NeverBan(Ban("203.0.113.7").target()));
  EXPECT_FALSE(guard.NeverBan(Ban("2001:db8::7").target()));
  // A range that would cover a never-ban address is refused, even if its base is fine.
  EXPECT_TRUE(guard.NeverBan(Ban("104.0.0.0/8", palisade::v1::TARGET_KIND_RANGE).target()));
  EXPECT_TRUE(guard.NeverBan(Ban("0.0.0.0/0", palisade::v1::TARGET_KIND_RANGE).target()));
  EXPECT_FALSE(guard.NeverBan(Ban("203.0.113.0/24", palisade::v1::TARGET_KIND_RANGE).target()));
  EXPECT_TRUE(guard.NeverBan(Ban("not an address").target()));
  EXPECT_FALSE(guard.NeverBan(Ban("/login", palisade::v1::TARGET_KIND_PATH).target()));
}

// Whoever writes the log line picks the address text: a non-public IPv4 written in an IPv6
// form that embeds it is the IPv4 address, for the guard as for the rest.
TEST(GuardTest, NeverBanSeesIpv4InsideIpv6) {
  GuardOptions options;
  options.never_ban = *CidrSet::Parse({"198.51.100.5", "2a01:4f8:1:2::5"});
  Guard guard(options);
  for (const char* ip :
       {"::a00:1", "::7f00:1", "64:ff9b::a00:1", "2002:a00:1::1", "::ffff:10.0.0.1",
        "::ffff:0:a00:1", "2001:0:4136:e378:8000:63bf:f5ff:fffe", "2002:c633:6405::1",
        "64:ff9b::c633:6405"}) {
    EXPECT_TRUE(guard.NeverBan(Ban(ip).target())) << ip;
  }
  EXPECT_TRUE(guard.NeverBan(Ban("2002:a00::/24", palisade::v1::TARGET_KIND_RANGE).target()));
  EXPECT_TRUE(guard.NeverBan(Ban("64:ff9b::/96", palisade::v1::TARGET_KIND_RANGE).target()));
  // A range over the allowlisted IPv6 host (a manual range ban, a feed CIDR).
  EXPECT_TRUE(guard.NeverBan(Ban("2a01:4f8:1:2::/64", palisade::v1::TARGET_KIND_RANGE).target()));
  EXPECT_EQ(guard.Check(Ban("64:ff9b::a00:1"), absl::FromUnixSeconds(1000), 0),
            Guard::Verdict::kNeverBan);
  // Public IPv4 embedded, and the allowlisted host's neighbour as a single address, are fine.
  EXPECT_FALSE(guard.NeverBan(Ban("2002:cb00:7107::1").target()));
  EXPECT_FALSE(guard.NeverBan(Ban("64:ff9b::cb00:7107").target()));
  EXPECT_FALSE(guard.NeverBan(Ban("2a01:4f8:1:2::6").target()));
}

// Issue 12 §2: revocations used up the ban budget and the attacker's ban was held. Each kind now
// spends its own budget.
TEST(GuardTest, RevocationsHaveABudgetApartFromBans) {
  GuardOptions options;
  options.max_new_per_minute = 3;
  options.max_revocations_per_minute = 2;
  Guard guard(options);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  const auto token = [](int i) {
    return Ban("sha256:00000000000000" + std::to_string(10 + i),
               palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT);
  };
  EXPECT_EQ(guard.Check(token(1), t0, 0), Guard::Verdict::kAllow);
  EXPECT_EQ(guard.Check(token(2), t0, 0), Guard::Verdict::kAllow);
  EXPECT_EQ(guard.Check(token(3), t0, 0), Guard::Verdict::kHeld);
  const palisade::v1::Decision by_id =
      Ban("0123456789abcdef0123456789abcdef", palisade::v1::TARGET_KIND_TOKEN_ID);
  EXPECT_EQ(guard.Check(by_id, t0, 0), Guard::Verdict::kHeld);
  // The bans still have all of theirs.
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(guard.Check(Ban("203.0.113.7"), t0, 0), Guard::Verdict::kAllow) << i;
  }
  EXPECT_EQ(guard.Check(Ban("203.0.113.8"), t0, 0), Guard::Verdict::kHeld);
  // A released revocation counts toward the revocations, not the bans.
  const absl::Time t1 = t0 + absl::Minutes(2);
  guard.Record(token(4), t1);
  guard.Record(token(5), t1);
  EXPECT_EQ(guard.Check(token(6), t1, 0), Guard::Verdict::kHeld);
  EXPECT_EQ(guard.Check(Ban("203.0.113.9"), t1, 0), Guard::Verdict::kAllow);
}

TEST(GuardTest, BlastRadiusPerMinuteAndActive) {
  GuardOptions options;
  options.max_new_per_minute = 3;
  options.max_active_per_actuator = 10;
  Guard guard(options);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(guard.Check(Ban("203.0.113.7"), t0 + absl::Seconds(i), 0), Guard::Verdict::kAllow);
  }
  EXPECT_EQ(guard.Check(Ban("203.0.113.8"), t0 + absl::Seconds(10), 0), Guard::Verdict::kHeld);
  EXPECT_EQ(guard.Check(Ban("203.0.113.8"), t0 + absl::Seconds(61), 0), Guard::Verdict::kAllow);
  EXPECT_EQ(guard.Check(Ban("203.0.113.9"), t0 + absl::Hours(1), 10), Guard::Verdict::kHeld);
  EXPECT_EQ(guard.Check(Ban("127.0.0.1"), t0 + absl::Hours(2), 0), Guard::Verdict::kNeverBan);

  // Feed entries skip the per-minute budget, not the never-ban set or the active cap.
  palisade::v1::Decision feed = Ban("198.51.100.0/24", palisade::v1::TARGET_KIND_RANGE);
  feed.set_origin(palisade::v1::ORIGIN_FEED);
  const absl::Time t1 = t0 + absl::Hours(3);
  for (int i = 0; i < 3; ++i) guard.Check(Ban("203.0.113.7"), t1, 0);
  EXPECT_EQ(guard.Check(Ban("203.0.113.10"), t1, 0), Guard::Verdict::kHeld);
  EXPECT_EQ(guard.Check(feed, t1, 0), Guard::Verdict::kAllow);
  EXPECT_EQ(guard.Check(feed, t1, 10), Guard::Verdict::kHeld);
  feed.mutable_target()->set_value("10.0.0.0/8");
  EXPECT_EQ(guard.Check(feed, t1, 0), Guard::Verdict::kNeverBan);
}

// An operator's ban (`decisions add`) is a deliberate act, as a feed version is: it spends none
// of the per-minute budget (not even released), so a flood cannot hold it; the never-ban set
// and the active cap still apply.
TEST(GuardTest, ManualBansSkipThePerMinuteBudgetOnly) {
  GuardOptions options;
  options.max_new_per_minute = 1;
  options.max_active_per_actuator = 10;
  Guard guard(options);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  palisade::v1::Decision manual = Ban("198.51.100.9");
  manual.set_origin(palisade::v1::ORIGIN_MANUAL);
  EXPECT_EQ(guard.Check(Ban("203.0.113.7"), t0, 0), Guard::Verdict::kAllow);
  EXPECT_EQ(guard.Check(Ban("203.0.113.8"), t0, 0), Guard::Verdict::kHeld);
  EXPECT_EQ(guard.Check(manual, t0, 0), Guard::Verdict::kAllow);
  EXPECT_EQ(guard.Check(manual, t0, 10), Guard::Verdict::kHeld);
  manual.mutable_target()->set_value("10.0.0.1");
  EXPECT_EQ(guard.Check(manual, t0, 0), Guard::Verdict::kNeverBan);
  // A manual ban released past the active cap takes no slot from the rules' budget.
  const absl::Time t1 = t0 + absl::Minutes(2);
  guard.Record(manual, t1);
  EXPECT_EQ(guard.Check(Ban("203.0.113.9"), t1, 0), Guard::Verdict::kAllow);
}

// A decision taking over a target from one standing at the edge (a block replacing a
// challenge) restricts no new target: it spends no per-minute budget, and takes none from the
// bans after it; the never-ban set and the active cap still apply.
TEST(GuardTest, AReplacementOfAStandingDecisionSpendsNoBudget) {
  GuardOptions options;
  options.max_new_per_minute = 1;
  options.max_active_per_actuator = 10;
  Guard guard(options);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  EXPECT_EQ(guard.Check(Ban("203.0.113.7"), t0, 0), Guard::Verdict::kAllow);
  EXPECT_EQ(guard.Check(Ban("203.0.113.8"), t0, 0), Guard::Verdict::kHeld);
  EXPECT_EQ(guard.Check(Ban("203.0.113.7"), t0, 0, /*replaces_standing=*/true),
            Guard::Verdict::kAllow);
  EXPECT_EQ(guard.Check(Ban("203.0.113.7"), t0, 10, /*replaces_standing=*/true),
            Guard::Verdict::kHeld);
  EXPECT_EQ(guard.Check(Ban("10.0.0.1"), t0, 0, /*replaces_standing=*/true),
            Guard::Verdict::kNeverBan);
  // A minute on, the one slot is free: the replacement did not take it.
  const absl::Time t1 = t0 + absl::Minutes(1);
  EXPECT_EQ(guard.Check(Ban("203.0.113.7"), t1, 0, /*replaces_standing=*/true),
            Guard::Verdict::kAllow);
  EXPECT_EQ(guard.Check(Ban("203.0.113.9"), t1, 0), Guard::Verdict::kAllow);
}

TEST(GuardTest, ShippedRangesFileMatchesTheBuiltInCopy) {
  absl::StatusOr<std::vector<std::string>> file = Guard::ReadCidrFile("deploy/cloudflare-ips.txt");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(*file, Guard::CloudflareRanges());
}

TEST(GuardTest, LocalAddressesIncludeLoopback) {
  std::vector<std::string> local = Guard::LocalAddresses();
  EXPECT_THAT(local, ::testing::Contains("127.0.0.1"));
}

}  // namespace
}  // namespace palisade
