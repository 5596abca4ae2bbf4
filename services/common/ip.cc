#include "services/common/ip.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace palisade {

namespace {

// Dotted quads, every IPv4 address Parse reads (without inet_pton's NUL-terminated copy).
bool ParseV4(absl::string_view text, uint8_t* out) {
  int part = 0;
  int value = 0;
  int digits = 0;
  for (char c : text) {
    if (c >= '0' && c <= '9') {
      if (digits == 3 || (digits > 0 && value == 0)) return false;  // too long, or leading 0
      value = value * 10 + (c - '0');
      ++digits;
      if (value > 255) return false;
    } else if (c == '.') {
      if (digits == 0 || part == 3) return false;
      out[part++] = static_cast<uint8_t>(value);
      value = 0;
      digits = 0;
    } else {
      return false;
    }
  }
  if (part != 3 || digits == 0) return false;
  out[3] = static_cast<uint8_t>(value);
  return true;
}

char* FormatOctet(char* p, uint8_t v) {
  if (v >= 100) *p++ = static_cast<char>('0' + v / 100);
  if (v >= 10) *p++ = static_cast<char>('0' + (v / 10) % 10);
  *p++ = static_cast<char>('0' + v % 10);
  return p;
}

// The text glibc's inet_ntop(AF_INET6) writes (RFC 5952: lower-case hex without leading zeros,
// the longest run of two or more zero groups, the first of equal ones, as "::"; the last 32 bits
// dotted after 96 zero bits, or 80 and ffff), without its sprintf per group: ~3,700
// instructions an address. ip_test compares the two on 300,000 generated addresses.
char* FormatV6(const uint8_t* b, char* p) {
  uint32_t w[8];
  for (int i = 0; i < 8; ++i) w[i] = static_cast<uint32_t>(b[2 * i]) << 8 | b[2 * i + 1];
  int best = -1, best_len = 0;
  for (int i = 0; i < 8;) {
    if (w[i] != 0) {
      ++i;
      continue;
    }
    int j = i;
    while (j < 8 && w[j] == 0) ++j;
    if (j - i > best_len) {
      best = i;
      best_len = j - i;
    }
    i = j;
  }
  if (best_len < 2) best = -1;
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 8; ++i) {
    if (best >= 0 && i >= best && i < best + best_len) {
      if (i == best) *p++ = ':';
      continue;
    }
    if (i != 0) *p++ = ':';
    if (i == 6 && best == 0 && (best_len == 6 || (best_len == 5 && w[5] == 0xffff))) {
      for (int k = 12; k < 16; ++k) {
        if (k > 12) *p++ = '.';
        p = FormatOctet(p, b[k]);
      }
      return p;
    }
    for (int shift = 12; shift >= 0; shift -= 4) {
      const uint32_t nibble = (w[i] >> shift) & 0xf;
      if (shift == 0 || (w[i] >> shift) != 0) *p++ = kHex[nibble];
    }
  }
  if (best >= 0 && best + best_len == 8) *p++ = ':';
  return p;
}

}  // namespace

std::optional<IpAddress> IpAddress::Parse(absl::string_view text) {
  // Short text without ':' is a dotted quad or nothing (no brackets): so it parses only as its
  // own canonical form, which Engine::NormaliseKey relies on to skip formatting the key again.
  if (!text.empty() && text.size() <= 15 && text.find(':') == absl::string_view::npos) {
    IpAddress ip;
    if (!ParseV4(text, ip.bytes_.data())) return std::nullopt;
    ip.v4_ = true;
    return ip;
  }
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
  }
  if (text.empty() || text.size() >= 64) return std::nullopt;
  IpAddress ip;
  if (text.find(':') == absl::string_view::npos) {
    if (!ParseV4(text, ip.bytes_.data())) return std::nullopt;
    ip.v4_ = true;
    return ip;
  }
  // inet_pton reads a C string: the whole text must be the address, not what precedes a NUL.
  if (text.find('\0') != absl::string_view::npos) return std::nullopt;
  char buf[64];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  // Drop a zone index ("fe80::1%eth0"): it is meaningless off the host.
  if (char* pct = std::strchr(buf, '%')) *pct = '\0';
  if (inet_pton(AF_INET6, buf, ip.bytes_.data()) != 1) return std::nullopt;
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(ip.bytes_.data(), kMapped, 12) == 0) {
    std::memmove(ip.bytes_.data(), ip.bytes_.data() + 12, 4);
    std::memset(ip.bytes_.data() + 4, 0, 12);
    ip.v4_ = true;
  }
  return ip;
}

absl::string_view IpAddress::Format(char (&buf)[kMaxTextLength]) const {
  if (v4_) {
    char* p = buf;
    for (int i = 0; i < 4; ++i) {
      if (i > 0) *p++ = '.';
      p = FormatOctet(p, bytes_[i]);
    }
    *p = '\0';
    return absl::string_view(buf, p - buf);
  }
  char* end = FormatV6(bytes_.data(), buf);
  *end = '\0';
  return absl::string_view(buf, static_cast<size_t>(end - buf));
}

std::string IpAddress::ToString() const {
  char buf[kMaxTextLength];
  return std::string(Format(buf));
}

const CidrSet& NonPublicRanges() {
  static const CidrSet* ranges = [] {
    auto set =
        CidrSet::Parse({"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
                        "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "::/128",
                        "::1/128", "fc00::/7", "fe80::/10", "ff00::/8", "64:ff9b:1::/48"});
    return new CidrSet(*std::move(set));
  }();
  return *ranges;
}

bool IpAddress::IsNonPublic() const { return NonPublicRanges().Contains(*this); }

namespace {

// An IPv6 prefix whose addresses carry an IPv4 address in 4 bytes from `v4_byte` (every
// documented form puts it on a byte boundary), stored inverted for Teredo.
struct EmbeddingForm {
  std::array<uint8_t, 16> prefix;
  int prefix_length;
  int v4_byte;
  bool inverted;
};

constexpr EmbeddingForm kEmbeddingForms[] = {
    {{}, 96, 12, false},                                          // ::a.b.c.d
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, 96, 12, false},  // ::ffff:a.b.c.d
    {{0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0}, 96, 12, false},  // ::ffff:0:a.b.c.d
    {{0x00, 0x64, 0xff, 0x9b}, 96, 12, false},                    // 64:ff9b::a.b.c.d
    {{0x20, 0x02}, 16, 2, false},                                 // 2002:aabb:ccdd::/48
    {{0x20, 0x01, 0x00, 0x00}, 32, 12, true},                     // Teredo 2001:0::/32
};

}  // namespace

std::vector<Cidr> EmbeddedIpv4Ranges(const Cidr& range) {
  std::vector<Cidr> out;
  if (range.base().is_v4()) return out;
  for (const EmbeddingForm& form : kEmbeddingForms) {
    const Cidr prefix =
        Cidr::Covering(IpAddress::FromBytes(false, form.prefix), form.prefix_length);
    if (range.prefix_length() <= form.prefix_length) {
      // The range holds the whole form (or misses it): every IPv4 address, or none.
      if (range.Contains(prefix.base())) {
        out.push_back(Cidr::Covering(IpAddress::FromBytes(true, {}), 0));
      }
      continue;
    }
    if (!prefix.Contains(range.base())) continue;
    std::array<uint8_t, 16> v4{};
    for (int i = 0; i < 4; ++i) {
      const uint8_t b = range.base().bytes()[form.v4_byte + i];
      v4[i] = form.inverted ? static_cast<uint8_t>(~b) : b;
    }
    // Only the IPv4 bits the range fixes count; Covering clears the rest (and so undoes the
    // inversion of bits the range leaves free).
    const int fixed = std::max(0, std::min(32, range.prefix_length() - form.v4_byte * 8));
    out.push_back(Cidr::Covering(IpAddress::FromBytes(true, v4), fixed));
  }
  return out;
}

std::optional<IpAddress> EmbeddedIpv4(const IpAddress& ip) {
  if (ip.is_v4()) return std::nullopt;
  std::vector<Cidr> ranges = EmbeddedIpv4Ranges(Cidr::Covering(ip, 128));
  if (ranges.empty()) return std::nullopt;
  return ranges.front().base();
}

bool TouchesNeverBan(const Cidr& range, const CidrSet& protected_set) {
  auto touches = [&](const Cidr& c) {
    return NonPublicRanges().ContainsAnyIn(c) || protected_set.ContainsAnyIn(c);
  };
  if (touches(range)) return true;
  for (const Cidr& v4 : EmbeddedIpv4Ranges(range)) {
    if (touches(v4)) return true;
  }
  return false;
}

IpAddress IpAddress::FromBytes(bool v4, const std::array<uint8_t, 16>& bytes) {
  IpAddress ip;
  ip.v4_ = v4;
  ip.bytes_ = bytes;
  if (v4) std::fill(ip.bytes_.begin() + 4, ip.bytes_.end(), 0);
  return ip;
}

Cidr Cidr::Covering(const IpAddress& ip, int prefix) {
  prefix = std::max(0, std::min(prefix, ip.bit_length()));
  IpAddress masked = ip;
  for (int bit = prefix; bit < ip.bit_length(); ++bit) {
    masked.bytes_[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
  }
  return Cidr(masked, prefix);
}

absl::StatusOr<Cidr> Cidr::Parse(absl::string_view text) {
  absl::string_view addr = text;
  int prefix = -1;
  size_t slash = text.find('/');
  if (slash != absl::string_view::npos) {
    addr = text.substr(0, slash);
    if (!absl::SimpleAtoi(text.substr(slash + 1), &prefix)) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", text, "\": prefix length is not a number"));
    }
  }
  std::optional<IpAddress> ip = IpAddress::Parse(addr);
  if (!ip) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\": not an IP address"));
  }
  if (prefix == -1) prefix = ip->bit_length();
  // A mapped IPv6 prefix (::ffff:a.b.c.d/120) folds to IPv4 like the address does.
  if (ip->is_v4() && addr.find(':') != absl::string_view::npos && prefix >= 96) prefix -= 96;
  if (prefix < 0 || prefix > ip->bit_length()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\": prefix length must be 0..", ip->bit_length()));
  }
  Cidr cidr(*ip, prefix);
  IpAddress masked = *ip;
  for (int bit = prefix; bit < ip->bit_length(); ++bit) {
    masked.bytes_[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
  }
  if (!(masked == *ip)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", text, "\": host bits are set; did you mean ", Cidr(masked, prefix).ToString(), "?"));
  }
  return cidr;
}

bool Cidr::Contains(const IpAddress& ip) const {
  if (ip.is_v4() != base_.is_v4()) return false;
  int full = prefix_ / 8;
  if (std::memcmp(ip.bytes().data(), base_.bytes().data(), full) != 0) return false;
  int rest = prefix_ % 8;
  if (rest == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (ip.bytes()[full] & mask) == (base_.bytes()[full] & mask);
}

std::string Cidr::ToString() const { return absl::StrCat(base_.ToString(), "/", prefix_); }

absl::StatusOr<CidrSet> CidrSet::Parse(const std::vector<std::string>& entries) {
  std::vector<Cidr> ranges;
  ranges.reserve(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    absl::StatusOr<Cidr> c = Cidr::Parse(entries[i]);
    if (!c.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("entry ", i + 1, ": ", c.status().message()));
    }
    ranges.push_back(*c);
  }
  return CidrSet(std::move(ranges));
}

bool CidrSet::ContainsAnyIn(const Cidr& range) const {
  for (const Cidr& c : ranges_) {
    if (range.Contains(c.base()) || c.Contains(range.base())) return true;
  }
  return false;
}

bool CidrSet::Contains(const IpAddress& ip) const {
  for (const Cidr& c : ranges_) {
    if (c.Contains(ip)) return true;
  }
  return false;
}

}  // namespace palisade
