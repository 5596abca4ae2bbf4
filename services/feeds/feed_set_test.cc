#include "services/feeds/feed_set.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace palisade {
namespace {

using ::testing::ElementsAre;

FeedEntry Entry(const std::string& cidr, std::string ref = "") {
  FeedEntry e{*Cidr::Parse(cidr)};
  e.ref = std::move(ref);
  return e;
}

IpAddress Ip(const std::string& s) { return *IpAddress::Parse(s); }

std::vector<std::string> Strings(const std::vector<Cidr>& cidrs) {
  std::vector<std::string> out;
  for (const Cidr& c : cidrs) out.push_back(c.ToString());
  return out;
}

TEST(FeedSetTest, LongestPrefixWinsForBothFamilies) {
  FeedSet set({Entry("10.0.0.0/8", "wide"), Entry("10.1.0.0/16", "narrow"),
               Entry("10.1.2.3", "host"), Entry("2001:db8::/32", "v6 wide"),
               Entry("2001:db8:1::/48", "v6 narrow")});
  EXPECT_EQ(set.Lookup(Ip("10.1.2.3"))->ref, "host");
  EXPECT_EQ(set.Lookup(Ip("10.1.9.9"))->ref, "narrow");
  EXPECT_EQ(set.Lookup(Ip("10.200.0.1"))->ref, "wide");
  EXPECT_EQ(set.Lookup(Ip("11.0.0.1")), nullptr);
  EXPECT_EQ(set.Lookup(Ip("::ffff:10.1.2.3"))->ref, "host");  // mapped folds to IPv4
  EXPECT_EQ(set.Lookup(Ip("2001:db8:1::7"))->ref, "v6 narrow");
  EXPECT_EQ(set.Lookup(Ip("2001:db8:2::7"))->ref, "v6 wide");
  EXPECT_EQ(set.Lookup(Ip("2001:db9::1")), nullptr);
  EXPECT_TRUE(set.Overlaps(*Cidr::Parse("10.1.2.0/24")));
  EXPECT_TRUE(set.Overlaps(*Cidr::Parse("0.0.0.0/4")));   // holds 10/8
  EXPECT_FALSE(set.Overlaps(*Cidr::Parse("11.0.0.0/8")));
  EXPECT_TRUE(set.Overlaps(*Cidr::Parse("2001::/16")));
  EXPECT_NE(set.Find(*Cidr::Parse("10.1.0.0/16")), nullptr);
  EXPECT_EQ(set.Find(*Cidr::Parse("10.1.0.0/17")), nullptr);
}

TEST(FeedSetTest, DuplicatesKeepTheWidestProvenance) {
  FeedEntry a = Entry("192.0.2.1");
  a.first_seen = 100;
  a.last_seen = 100;
  a.expiry = 200;
  FeedEntry b = Entry("192.0.2.1");
  b.first_seen = 50;
  b.last_seen = 150;
  b.expiry = 300;
  FeedSet set({a, b});
  ASSERT_EQ(set.size(), 1u);
  EXPECT_EQ(set.entries()[0].first_seen, 50);
  EXPECT_EQ(set.entries()[0].last_seen, 150);
  EXPECT_EQ(set.entries()[0].expiry, 300);
}

TEST(FeedSetTest, MergesOverlappingAndAdjacentRanges) {
  FeedSet set({Entry("192.0.2.0/25"), Entry("192.0.2.128/25"),  // adjacent -> /24
               Entry("198.51.100.0/24"), Entry("198.51.100.7"),  // contained
               Entry("203.0.113.1"), Entry("203.0.113.2"),       // .1-.2: not one block
               Entry("2001:db8::/33"), Entry("2001:db8:8000::/33")});
  EXPECT_THAT(Strings(set.Merged()),
              ElementsAre("192.0.2.0/24", "198.51.100.0/24", "203.0.113.1/32", "203.0.113.2/32",
                          "2001:db8::/32"));
}

TEST(FeedSetTest, MergeCoversOddRangesExactly) {
  // .1 to .6 = .1/32, .2/31, .4/31, .6/32.
  EXPECT_THAT(Strings(MergeCidrs({*Cidr::Parse("10.0.0.1"), *Cidr::Parse("10.0.0.2/31"),
                                  *Cidr::Parse("10.0.0.4/31"), *Cidr::Parse("10.0.0.6")})),
              ElementsAre("10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"));
  EXPECT_THAT(Strings(MergeCidrs({*Cidr::Parse("0.0.0.0/1"), *Cidr::Parse("128.0.0.0/1")})),
              ElementsAre("0.0.0.0/0"));
  EXPECT_THAT(Strings(MergeCidrs({*Cidr::Parse("::/1"), *Cidr::Parse("8000::/1")})),
              ElementsAre("::/0"));
  EXPECT_THAT(Strings(MergeCidrs({*Cidr::Parse("255.255.255.255"),
                                  *Cidr::Parse("255.255.255.254")})),
              ElementsAre("255.255.255.254/31"));
}

// What goes to the edge is never joined into a range wider than the limits: not wider than
// the feeds may list, and never wider than the IP list takes (/8, /12). A range listed as it
// is stays whole, wider than the limit or not; what it covers is not listed again.
TEST(FeedSetTest, MergeWithLimitsJoinsNothingWiderThanThem) {
  auto parse = [](std::vector<std::string> cidrs) {
    std::vector<Cidr> out;
    for (const std::string& c : cidrs) out.push_back(*Cidr::Parse(c));
    return out;
  };
  const MergeLimits v4_8{8, 12};
  EXPECT_THAT(Strings(MergeCidrs(parse({"2.0.0.0/8", "3.0.0.0/8"}), v4_8)),
              ElementsAre("2.0.0.0/8", "3.0.0.0/8"));
  // Limits wider than the IP list's are taken as its.
  EXPECT_THAT(Strings(MergeCidrs(parse({"2.0.0.0/8", "3.0.0.0/8", "2000::/12", "2010::/12"}),
                                 MergeLimits{0, 0})),
              ElementsAre("2.0.0.0/8", "3.0.0.0/8", "2000::/12", "2010::/12"));
  std::vector<std::string> twelves;
  for (int i = 0; i < 16; ++i) twelves.push_back(absl::StrCat("8.", 16 * i, ".0.0/12"));
  EXPECT_EQ(Strings(MergeCidrs(parse(twelves), MergeLimits{12, 24})), twelves);
  EXPECT_THAT(Strings(MergeCidrs(parse(twelves), MergeLimits{10, 24})),
              ElementsAre("8.0.0.0/10", "8.64.0.0/10", "8.128.0.0/10", "8.192.0.0/10"));
  // Under the limit ranges still join; a wider range listed whole stays whole and holds what
  // it covers.
  EXPECT_THAT(Strings(MergeCidrs(parse({"9.0.0.0/8", "9.16.0.0/12", "10.0.0.0/13",
                                        "10.8.0.0/13", "192.0.2.0/25", "192.0.2.128/25"}),
                                 MergeLimits{12, 24})),
              ElementsAre("9.0.0.0/8", "10.0.0.0/12", "192.0.2.0/24"));
}

TEST(FeedRegistryTest, ReadersSeeEachPublishedVersion) {
  FeedRegistry registry;
  EXPECT_FALSE(registry.Contains("*", Ip("192.0.2.1")));
  registry.Publish("a", std::make_shared<const FeedSet>(std::vector<FeedEntry>{Entry("192.0.2.0/24")}));
  EXPECT_TRUE(registry.Contains("a", Ip("192.0.2.1")));
  EXPECT_TRUE(registry.Contains("*", Ip("192.0.2.1")));
  EXPECT_FALSE(registry.Contains("b", Ip("192.0.2.1")));
  registry.Publish("b", std::make_shared<const FeedSet>(std::vector<FeedEntry>{Entry("192.0.2.1")}));
  EXPECT_THAT(registry.FeedsContaining(Ip("192.0.2.1")), ElementsAre("a", "b"));
  registry.Publish("a", nullptr);
  EXPECT_THAT(registry.FeedsContaining(Ip("192.0.2.1")), ElementsAre("b"));

  // Another registry on the same thread has its own view.
  FeedRegistry other;
  EXPECT_FALSE(other.Contains("*", Ip("192.0.2.1")));
  EXPECT_TRUE(registry.Contains("*", Ip("192.0.2.1")));
}

TEST(FeedRegistryTest, ConcurrentReadersDuringSwaps) {
  FeedRegistry registry;
  registry.Publish("f", std::make_shared<const FeedSet>(std::vector<FeedEntry>{Entry("10.0.0.0/8")}));
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> misses{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        // 10/8 is in every version; a reader must never see an empty or torn one.
        if (!registry.Contains("f", Ip("10.1.2.3"))) misses.fetch_add(1);
      }
    });
  }
  for (int v = 0; v < 2000; ++v) {
    registry.Publish("f", std::make_shared<const FeedSet>(std::vector<FeedEntry>{
                              Entry("10.0.0.0/8"), Entry("192.0.2." + std::to_string(v % 256))}));
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(misses.load(), 0u);
}


// What the feed manager's growth guard weighs a version by: each address once, nested and
// repeated entries included; IPv6 in /64 networks, the hosts of one network counted once;
// saturating rather than wrapping.
TEST(FeedSetTest, CoveredCountsEachAddressAndEachSlash64Once) {
  FeedSet set({Entry("10.0.0.0/8"), Entry("10.1.0.0/16"), Entry("10.1.2.3"), Entry("11.0.0.1"),
               Entry("11.0.0.2/31"), Entry("2001:db8::/48"), Entry("2001:db8::5"),
               Entry("2001:db8:1::1"), Entry("2001:db8:1::2"), Entry("2001:db8:1:0:8000::/65"),
               Entry("2001:db8:1:1::/64")});
  FeedSet::Coverage c = set.Covered();
  EXPECT_EQ(c.v4, (uint64_t{1} << 24) + 1 + 2);
  EXPECT_EQ(c.v6_64s, (uint64_t{1} << 16) + 2);
  EXPECT_EQ(FeedSet({}).Covered().v4, 0u);

  constexpr uint64_t kMax = ~uint64_t{0};
  EXPECT_EQ(FeedSet({Entry("0.0.0.0/0")}).Covered().v4, uint64_t{1} << 32);
  EXPECT_EQ(FeedSet({Entry("::/0")}).Covered().v6_64s, kMax);
  EXPECT_EQ(FeedSet({Entry("::/1"), Entry("8000::/1")}).Covered().v6_64s, kMax);
  EXPECT_EQ(FeedSet({Entry("::/2"), Entry("8000::/1")}).Covered().v6_64s,
            (uint64_t{1} << 62) + (uint64_t{1} << 63));
}

}  // namespace
}  // namespace palisade
