// IP addresses and CIDR ranges in one canonical form. Every "ip" a rule captures goes through
// IpAddress::Parse before it can become a key or a decision target, so nothing that is not an
// address reaches the API. IPv4-mapped IPv6 (::ffff:a.b.c.d) is folded to IPv4.
// Thread-safety: value types; CidrSet is immutable after construction.
#ifndef PALISADE_SERVICES_COMMON_IP_H_
#define PALISADE_SERVICES_COMMON_IP_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace palisade {

class IpAddress {
 public:
  // Longest canonical text form plus a NUL: "ffff:ffff:...:ffff" is 39 chars.
  static constexpr size_t kMaxTextLength = 40;

  // Accepts dotted IPv4, any RFC 4291 IPv6 text form, and "[v6]" brackets. Returns nullopt on
  // anything else (no allocation either way).
  static std::optional<IpAddress> Parse(absl::string_view text);
  // From raw bytes: 4 (IPv4, network order, in bytes[0..3]) or 16 (IPv6).
  static IpAddress FromBytes(bool v4, const std::array<uint8_t, 16>& bytes);

  bool is_v4() const { return v4_; }
  // Network-order bytes; for IPv4 only the first 4 are used.
  const std::array<uint8_t, 16>& bytes() const { return bytes_; }
  int bit_length() const { return v4_ ? 32 : 128; }

  // Writes the canonical text (RFC 5952 for IPv6) into `buf` and returns a view of it.
  absl::string_view Format(char (&buf)[kMaxTextLength]) const;
  std::string ToString() const;

  // True inside NonPublicRanges().
  bool IsNonPublic() const;

  friend bool operator==(const IpAddress& a, const IpAddress& b) {
    return a.v4_ == b.v4_ && a.bytes_ == b.bytes_;
  }

 private:
  IpAddress() = default;
  bool v4_ = false;
  std::array<uint8_t, 16> bytes_{};
  friend class Cidr;
};

class Cidr {
 public:
  // "203.0.113.0/24", "2001:db8::/32", or a bare address (a /32 or /128). Host bits must be
  // zero: "10.0.0.1/8" is refused, since it almost always hides a typo.
  static absl::StatusOr<Cidr> Parse(absl::string_view text);
  // "::/128", the unspecified address alone: a placeholder for a value assigned later, never
  // a range that could match anything real.
  Cidr() : prefix_(128) {}
  // The range of `prefix` bits (clamped to the family's length) around `ip`: host bits cleared.
  static Cidr Covering(const IpAddress& ip, int prefix);

  bool Contains(const IpAddress& ip) const;
  const IpAddress& base() const { return base_; }
  int prefix_length() const { return prefix_; }
  std::string ToString() const;

 private:
  Cidr(IpAddress base, int prefix) : base_(base), prefix_(prefix) {}
  IpAddress base_;
  int prefix_ = 0;
};

// A small set of ranges (allowlists, never-ban sets): linear scan, which beats a trie below a
// few hundred entries.
class CidrSet {
 public:
  CidrSet() = default;
  explicit CidrSet(std::vector<Cidr> ranges) : ranges_(std::move(ranges)) {}
  // Parses every entry; the error names the first bad one and its position.
  static absl::StatusOr<CidrSet> Parse(const std::vector<std::string>& entries);

  void Add(Cidr c) { ranges_.push_back(c); }
  bool Contains(const IpAddress& ip) const;
  // True when some range of the set lies inside `range` (or contains it).
  bool ContainsAnyIn(const Cidr& range) const;
  size_t size() const { return ranges_.size(); }

 private:
  std::vector<Cidr> ranges_;
};

// Loopback, private (RFC 1918, ULA), link-local, unspecified, CGNAT, multicast and reserved
// ranges (and the local-use NAT64 prefix 64:ff9b:1::/48, RFC 8215, whose IPv4 position depends
// on a prefix length only its operator knows): never a Cloudflare visitor, never a ban target.
const CidrSet& NonPublicRanges();

// The IPv4 address an IPv6 address carries, for the documented forms that embed one (the forms
// are disjoint, so there is at most one):
//   ::a.b.c.d          IPv4-compatible (RFC 4291 2.5.5.1, deprecated)
//   ::ffff:a.b.c.d     IPv4-mapped (RFC 4291 2.5.5.2; IpAddress::Parse folds it already)
//   ::ffff:0:a.b.c.d   IPv4-translated (SIIT, RFC 2765)
//   64:ff9b::a.b.c.d   NAT64 well-known prefix (RFC 6052)
//   2002:AABB:CCDD::/48  6to4 (RFC 3056): the IPv4 in bits 16..47
//   2001:0::/32        Teredo (RFC 4380): the client's mapped address, stored inverted in the
//                      last 32 bits
// nullopt for IPv4 and for any other IPv6. Whoever writes a log line picks the address text,
// so "::a00:1" must be judged as 10.0.0.1, not as some public IPv6 host.
std::optional<IpAddress> EmbeddedIpv4(const IpAddress& ip);

// Whether `ip` is a 6to4 address (2002::/16, RFC 3056): unlike the other forms above, the IPv4
// host holds the whole /48 (2002:WWXX:YYZZ::/48) and may take any subnet and interface id of
// it, so its /48 is one host's (and a range the edge can block). False for IPv4.
bool Is6to4(const IpAddress& ip);

// The IPv4 ranges an IPv6 range covers through those forms: "2002:a00::/24" → 10.0.0.0/8,
// "64:ff9b::/64" → 0.0.0.0/0 (it holds the whole embedded space), a /128 → the /32 it embeds.
// Empty for IPv4 ranges and ranges that touch no embedding form.
std::vector<Cidr> EmbeddedIpv4Ranges(const Cidr& range);

// The one never-ban test (guard, IP list actuator, feeds): true when `range` (an address is a
// /32 or /128) overlaps NonPublicRanges() or `protected_set` (either holds the other), directly
// or through an IPv4 address or range it embeds.
bool TouchesNeverBan(const Cidr& range, const CidrSet& protected_set);

// What a peer counts as for per-address limits (connections, rate buckets): an IPv4 address,
// or the IPv4 address an IPv6 one embeds (EmbeddedIpv4; the holder of that IPv4 is who
// answers), is itself; any other IPv6 address is its /`ipv6_prefix` ("2001:db8:0:1::/64"),
// since one client holds a whole /64 and may take a new address per connection; 128: the
// address alone. Text that is not an address (a failed getpeername) is its own key.
std::string PeerLimitKey(absl::string_view address, int ipv6_prefix = 64);

}  // namespace palisade

#endif  // PALISADE_SERVICES_COMMON_IP_H_
