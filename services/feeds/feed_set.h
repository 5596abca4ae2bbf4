// One version of a threat feed, indexed for the ingest path, and the registry that publishes the
// current versions to readers without a lock.
//
// A FeedSet is immutable once built: entries are deduplicated by CIDR, kept sorted, and indexed
// per prefix length (one hash table per length present), so Lookup() is a longest-prefix match
// costing one probe per distinct length, for IPv4 and IPv6 alike. Merged() gives the minimal
// CIDR list covering the same addresses (overlapping and adjacent ranges merged); what goes to
// the edge is merged with limits (MergeCidrs with MergeLimits), never wider than the feeds may
// list.
//
// FeedRegistry holds the current FeedSet of every feed. Writers (a push, a fetch) swap in a new
// map under a mutex; readers check one atomic version number and use their thread's cached copy
// when nothing changed, so a lookup on the ingest path takes no lock.
#ifndef PALISADE_SERVICES_FEEDS_FEED_SET_H_
#define PALISADE_SERVICES_FEEDS_FEED_SET_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "services/common/ip.h"

namespace palisade {

struct FeedEntry {
  Cidr cidr;
  // Unix seconds. expiry: the feed's valid_until, or last_seen + the feed's entry ttl.
  int64_t first_seen = 0;
  int64_t last_seen = 0;
  int64_t expiry = 0;
  uint32_t confidence = 0;
  std::string ref;  // the feed's own reference (SBL id, STIX id and labels)
  // The expiry is last_seen + the feed's entry ttl (the feed gave no valid_until): a pull
  // answered "not modified" (the version still lists the entry) moves it on. False when the
  // feed gave one, and when it is not known (a version read back from its stored copy).
  bool ttl_expiry = false;
};

// Orders CIDRs: IPv4 before IPv6, then by base address, then shorter prefix first.
bool CidrLess(const Cidr& a, const Cidr& b);

class FeedSet {
 public:
  // Entries with the same CIDR are kept once: earliest first_seen, latest last_seen and expiry,
  // ttl_expiry when either has it (one listing without an end).
  explicit FeedSet(std::vector<FeedEntry> entries);

  // The most specific entry containing `ip`, or nullptr.
  const FeedEntry* Lookup(const IpAddress& ip) const;
  bool Contains(const IpAddress& ip) const { return Lookup(ip) != nullptr; }
  // Whether any entry shares an address with `range`.
  bool Overlaps(const Cidr& range) const;
  // The entry with exactly this CIDR, or nullptr.
  const FeedEntry* Find(const Cidr& cidr) const;

  // Sorted by CidrLess.
  const std::vector<FeedEntry>& entries() const { return entries_; }
  size_t size() const { return entries_.size(); }

  // The fewest CIDRs covering exactly the addresses of the entries, sorted by CidrLess.
  std::vector<Cidr> Merged() const;

  // How much address space the entries cover, each address once however many entries hold it:
  // IPv4 addresses, and IPv6 /64 networks (an entry longer than /64 counts its /64, once for
  // all the entries inside it). Each saturates at UINT64_MAX (::/0 is 2^64 networks).
  struct Coverage {
    uint64_t v4 = 0;
    uint64_t v6_64s = 0;
  };
  Coverage Covered() const;

 private:
  struct V6Key {
    uint64_t hi, lo;
    friend bool operator==(V6Key a, V6Key b) { return a.hi == b.hi && a.lo == b.lo; }
    template <typename H>
    friend H AbslHashValue(H h, V6Key k) {
      return H::combine(std::move(h), k.hi, k.lo);
    }
  };
  std::vector<FeedEntry> entries_;
  // Per prefix length present, longest first: masked network -> index in entries_.
  std::vector<std::pair<int, absl::flat_hash_map<uint32_t, uint32_t>>> v4_;
  std::vector<std::pair<int, absl::flat_hash_map<V6Key, uint32_t>>> v6_;
};

// The minimal CIDR cover of a set of ranges (any order, overlaps allowed).
std::vector<Cidr> MergeCidrs(const std::vector<Cidr>& ranges);

// The widest range MergeCidrs may make by joining ranges, as a prefix length per family.
struct MergeLimits {
  int min_prefix_v4 = 0;
  int min_prefix_v6 = 0;
};
// The cover of a set of ranges that goes to the edge: ranges join only into blocks no wider
// than `limits`, nor ever wider than the Cloudflare IP list takes (/8 for IPv4, /12 for IPv6),
// whatever the limits say. A range itself wider than them is kept as it is (never joined), and
// the ranges it covers are dropped. Sorted by CidrLess.
std::vector<Cidr> MergeCidrs(const std::vector<Cidr>& ranges, MergeLimits limits);

class FeedRegistry {
 public:
  using View = std::map<std::string, std::shared_ptr<const FeedSet>, std::less<>>;

  FeedRegistry();

  // Publishes `set` as the current version of `feed` (nullptr removes the feed).
  void Publish(const std::string& feed, std::shared_ptr<const FeedSet> set);

  // The current versions. Lock-free when nothing was published since this thread last looked.
  const View& Current() const;

  // Whether `ip` is in `feed`, or in any feed when `feed` is "*".
  bool Contains(absl::string_view feed, const IpAddress& ip) const;
  // The names of the feeds that list `ip`.
  std::vector<std::string> FeedsContaining(const IpAddress& ip) const;

 private:
  const uint64_t id_;  // tells the thread caches of two registries apart
  std::atomic<uint64_t> version_{1};
  mutable absl::Mutex mu_;
  std::shared_ptr<const View> view_ ABSL_GUARDED_BY(mu_);
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_FEEDS_FEED_SET_H_
