#include "services/feeds/feed_set.h"

#include <algorithm>
#include <cstring>
#include <optional>

namespace palisade {
namespace {

using u128 = unsigned __int128;

uint32_t V4Value(const IpAddress& ip) {
  const auto& b = ip.bytes();
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
}

u128 V6Value(const IpAddress& ip) {
  u128 v = 0;
  for (uint8_t byte : ip.bytes()) v = (v << 8) | byte;
  return v;
}

uint32_t MaskV4(uint32_t v, int len) { return len == 0 ? 0 : v & (~uint32_t{0} << (32 - len)); }

u128 MaskV6(u128 v, int len) { return len == 0 ? 0 : v & (~u128{0} << (128 - len)); }

IpAddress V4Address(uint32_t v) {
  std::array<uint8_t, 16> b{};
  b[0] = v >> 24;
  b[1] = v >> 16;
  b[2] = v >> 8;
  b[3] = v;
  return IpAddress::FromBytes(true, b);
}

IpAddress V6Address(u128 v) {
  std::array<uint8_t, 16> b{};
  for (int i = 15; i >= 0; --i, v >>= 8) b[i] = static_cast<uint8_t>(v);
  return IpAddress::FromBytes(false, b);
}

// Appends the fewest CIDRs covering [lo, hi] of a `bits`-bit space (values as u128), none
// holding more than 2^max_size addresses.
void CoverRange(u128 lo, u128 hi, int bits, int max_size, bool v4, std::vector<Cidr>* out) {
  for (;;) {
    // The largest block aligned at lo that stays within hi (and within max_size).
    int size = 0;  // log2 of the block size
    while (size < max_size) {
      const int next_size = size + 1;
      const u128 mask = next_size == 128 ? ~u128{0} : (u128{1} << next_size) - 1;
      if ((lo & mask) != 0 || hi - lo < mask) break;
      size = next_size;
    }
    out->push_back(
        Cidr::Covering(v4 ? V4Address(static_cast<uint32_t>(lo)) : V6Address(lo), bits - size));
    if (size == bits) return;  // the whole space
    const u128 next = lo + (u128{1} << size);
    if (next - 1 >= hi) return;
    lo = next;
  }
}

template <typename Range>
void MergeInto(std::vector<Range>& ranges, int bits, int max_size, bool v4,
               std::vector<Cidr>* out) {
  std::sort(ranges.begin(), ranges.end());
  size_t i = 0;
  while (i < ranges.size()) {
    u128 lo = ranges[i].first, hi = ranges[i].second;
    ++i;
    // Overlapping or adjacent (lo == hi + 1) ranges join.
    while (i < ranges.size() && (hi == ~u128{0} || ranges[i].first <= hi + 1)) {
      hi = std::max(hi, ranges[i].second);
      ++i;
    }
    CoverRange(lo, hi, bits, max_size, v4, out);
  }
}

// The widest items the Cloudflare IP list takes (services/actions/actuators.cc): a range
// joined past them would be refused at the edge, and none of what it covers enforced.
constexpr int kWidestListItemV4 = 8;
constexpr int kWidestListItemV6 = 12;

// The union of `cidrs`, as value ranges per family, with blocks of at most 2^(32 - v4_floor)
// and 2^(128 - v6_floor) addresses.
std::vector<Cidr> MergeWithFloors(const std::vector<Cidr>& cidrs, int v4_floor, int v6_floor) {
  std::vector<std::pair<u128, u128>> v4, v6;
  for (const Cidr& c : cidrs) {
    if (c.base().is_v4()) {
      const u128 lo = V4Value(c.base());
      v4.emplace_back(lo, lo + ((u128{1} << (32 - c.prefix_length())) - 1));
    } else {
      const u128 lo = V6Value(c.base());
      const u128 span = c.prefix_length() == 0 ? ~u128{0} : (u128{1} << (128 - c.prefix_length())) - 1;
      v6.emplace_back(lo, lo + span);
    }
  }
  std::vector<Cidr> out;
  MergeInto(v4, 32, 32 - v4_floor, true, &out);
  MergeInto(v6, 128, 128 - v6_floor, false, &out);
  return out;
}

}  // namespace

bool CidrLess(const Cidr& a, const Cidr& b) {
  if (a.base().is_v4() != b.base().is_v4()) return a.base().is_v4();
  const int c = std::memcmp(a.base().bytes().data(), b.base().bytes().data(), 16);
  if (c != 0) return c < 0;
  return a.prefix_length() < b.prefix_length();
}

std::vector<Cidr> MergeCidrs(const std::vector<Cidr>& cidrs) {
  return MergeWithFloors(cidrs, 0, 0);
}

std::vector<Cidr> MergeCidrs(const std::vector<Cidr>& cidrs, MergeLimits limits) {
  const int v4_floor = std::clamp(limits.min_prefix_v4, kWidestListItemV4, 32);
  const int v6_floor = std::clamp(limits.min_prefix_v6, kWidestListItemV6, 128);
  auto wide = [&](const Cidr& c) {
    return c.prefix_length() < (c.base().is_v4() ? v4_floor : v6_floor);
  };
  // A range wider than the floor was listed so (its feed allows it): it stays as it is, never
  // joined with another, and what it covers is dropped. Sorted by CidrLess, a range inside a
  // kept one comes after it, before any range the kept one does not cover.
  std::vector<Cidr> sorted = cidrs;
  std::sort(sorted.begin(), sorted.end(), CidrLess);
  std::vector<Cidr> out, narrow;
  std::optional<Cidr> holder;  // the last wide range kept
  for (const Cidr& c : sorted) {
    if (holder && holder->Contains(c.base())) {
      continue;  // a wide range covers it (ranges nest or are apart)
    }
    if (wide(c)) {
      out.push_back(c);
      holder = c;
    } else {
      narrow.push_back(c);
    }
  }
  // The rest join, into blocks no wider than the floor.
  std::vector<Cidr> merged = MergeWithFloors(narrow, v4_floor, v6_floor);
  out.insert(out.end(), merged.begin(), merged.end());
  std::sort(out.begin(), out.end(), CidrLess);
  return out;
}

FeedSet::FeedSet(std::vector<FeedEntry> entries) {
  std::sort(entries.begin(), entries.end(),
            [](const FeedEntry& a, const FeedEntry& b) { return CidrLess(a.cidr, b.cidr); });
  for (FeedEntry& e : entries) {
    if (!entries_.empty()) {
      FeedEntry& last = entries_.back();
      if (!CidrLess(last.cidr, e.cidr)) {  // same CIDR
        last.first_seen = std::min(last.first_seen, e.first_seen);
        last.last_seen = std::max(last.last_seen, e.last_seen);
        last.expiry = std::max(last.expiry, e.expiry);
        last.confidence = std::max(last.confidence, e.confidence);
        last.ttl_expiry = last.ttl_expiry || e.ttl_expiry;
        continue;
      }
    }
    entries_.push_back(std::move(e));
  }
  // Index: count per length first so each table is sized once.
  size_t v4_count[33] = {}, v6_count[129] = {};
  for (const FeedEntry& e : entries_) {
    (e.cidr.base().is_v4() ? v4_count : v6_count)[e.cidr.prefix_length()]++;
  }
  std::vector<int> v4_slot(33, -1), v6_slot(129, -1);
  for (int len = 32; len >= 0; --len) {
    if (v4_count[len] == 0) continue;
    v4_slot[len] = static_cast<int>(v4_.size());
    v4_.emplace_back(len, absl::flat_hash_map<uint32_t, uint32_t>());
    v4_.back().second.reserve(v4_count[len]);
  }
  for (int len = 128; len >= 0; --len) {
    if (v6_count[len] == 0) continue;
    v6_slot[len] = static_cast<int>(v6_.size());
    v6_.emplace_back(len, absl::flat_hash_map<V6Key, uint32_t>());
    v6_.back().second.reserve(v6_count[len]);
  }
  for (uint32_t i = 0; i < entries_.size(); ++i) {
    const Cidr& c = entries_[i].cidr;
    if (c.base().is_v4()) {
      v4_[v4_slot[c.prefix_length()]].second.emplace(V4Value(c.base()), i);
    } else {
      const u128 v = V6Value(c.base());
      v6_[v6_slot[c.prefix_length()]].second.emplace(
          V6Key{static_cast<uint64_t>(v >> 64), static_cast<uint64_t>(v)}, i);
    }
  }
}

const FeedEntry* FeedSet::Lookup(const IpAddress& ip) const {
  if (ip.is_v4()) {
    const uint32_t v = V4Value(ip);
    for (const auto& [len, table] : v4_) {
      auto it = table.find(MaskV4(v, len));
      if (it != table.end()) return &entries_[it->second];
    }
    return nullptr;
  }
  const u128 v = V6Value(ip);
  for (const auto& [len, table] : v6_) {
    const u128 m = MaskV6(v, len);
    auto it = table.find(V6Key{static_cast<uint64_t>(m >> 64), static_cast<uint64_t>(m)});
    if (it != table.end()) return &entries_[it->second];
  }
  return nullptr;
}

const FeedEntry* FeedSet::Find(const Cidr& cidr) const {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), cidr,
                             [](const FeedEntry& e, const Cidr& c) { return CidrLess(e.cidr, c); });
  if (it == entries_.end() || CidrLess(cidr, it->cidr)) return nullptr;
  return &*it;
}

bool FeedSet::Overlaps(const Cidr& range) const {
  if (Lookup(range.base()) != nullptr) return true;  // an entry covers the range's start
  // Otherwise an overlapping entry starts inside the range.
  auto it = std::lower_bound(entries_.begin(), entries_.end(), range,
                             [](const FeedEntry& e, const Cidr& c) { return CidrLess(e.cidr, c); });
  return it != entries_.end() && range.Contains(it->cidr.base());
}

std::vector<Cidr> FeedSet::Merged() const {
  std::vector<Cidr> cidrs;
  cidrs.reserve(entries_.size());
  for (const FeedEntry& e : entries_) cidrs.push_back(e.cidr);
  return MergeCidrs(cidrs);
}

FeedSet::Coverage FeedSet::Covered() const {
  Coverage out;
  auto add = [](uint64_t& total, int bits) {  // 2^bits more, saturating
    const uint64_t n = bits >= 64 ? ~uint64_t{0} : uint64_t{1} << bits;
    total = n > ~uint64_t{0} - total ? ~uint64_t{0} : total + n;
  };
  // Sorted by CidrLess, an entry inside another comes after it and before any entry outside it:
  // one pass, skipping what the last outermost entry covers, counts each address once. So too
  // each /64 network: the entries inside one are adjacent.
  std::optional<Cidr> outer;
  std::optional<uint64_t> last_net;  // the /64 network last counted
  for (const FeedEntry& e : entries_) {
    if (outer && outer->Contains(e.cidr.base())) continue;  // ranges nest or are apart
    outer = e.cidr;
    if (e.cidr.base().is_v4()) {
      add(out.v4, 32 - e.cidr.prefix_length());
      continue;
    }
    if (e.cidr.prefix_length() < 64) {
      add(out.v6_64s, 64 - e.cidr.prefix_length());
      continue;
    }
    const uint64_t net = static_cast<uint64_t>(V6Value(e.cidr.base()) >> 64);
    if (last_net == net) continue;
    last_net = net;
    add(out.v6_64s, 0);
  }
  return out;
}

// --- FeedRegistry ------------------------------------------------------------------------------

namespace {
std::atomic<uint64_t> next_registry_id{1};

struct ThreadView {
  uint64_t registry = 0;
  uint64_t version = 0;
  std::shared_ptr<const FeedRegistry::View> view;
};
}  // namespace

FeedRegistry::FeedRegistry()
    : id_(next_registry_id.fetch_add(1)), view_(std::make_shared<const View>()) {}

void FeedRegistry::Publish(const std::string& feed, std::shared_ptr<const FeedSet> set) {
  absl::MutexLock lock(&mu_);
  auto next = std::make_shared<View>(*view_);
  if (set == nullptr) {
    next->erase(feed);
  } else {
    (*next)[feed] = std::move(set);
  }
  view_ = std::move(next);
  version_.fetch_add(1, std::memory_order_release);
}

const FeedRegistry::View& FeedRegistry::Current() const {
  thread_local ThreadView cache;
  const uint64_t version = version_.load(std::memory_order_acquire);
  if (cache.registry != id_ || cache.version != version) {
    absl::MutexLock lock(&mu_);
    cache.view = view_;
    cache.registry = id_;
    cache.version = version;
  }
  return *cache.view;
}

bool FeedRegistry::Contains(absl::string_view feed, const IpAddress& ip) const {
  const View& view = Current();
  if (feed == "*") {
    for (const auto& [name, set] : view) {
      if (set->Contains(ip)) return true;
    }
    return false;
  }
  auto it = view.find(feed);
  return it != view.end() && it->second->Contains(ip);
}

std::vector<std::string> FeedRegistry::FeedsContaining(const IpAddress& ip) const {
  std::vector<std::string> names;
  for (const auto& [name, set] : Current()) {
    if (set->Contains(ip)) names.push_back(name);
  }
  return names;
}

}  // namespace palisade
