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
// ranges: never a Cloudflare visitor, never a ban target.
const CidrSet& NonPublicRanges();

}  // namespace palisade

#endif  // PALISADE_SERVICES_COMMON_IP_H_
