#include "services/common/ip.h"

#include <algorithm>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace palisade {

namespace {

// Dotted quads, as inet_pton(AF_INET) reads them: four parts of one to three digits, no
// leading zero, each at most 255. One part at a time (a digit test and a multiply a byte).
bool ParseV4(const char* p, const char* end, uint8_t* out) {
  for (int part = 0; part < 4; ++part) {
    if (part > 0) {
      if (p == end || *p != '.') return false;
      ++p;
    }
    if (p == end) return false;
    unsigned v = static_cast<unsigned char>(*p) - '0';
    if (v > 9) return false;
    ++p;
    if (p != end && static_cast<unsigned>(static_cast<unsigned char>(*p) - '0') <= 9) {
      if (v == 0) return false;  // a leading zero
      v = v * 10 + static_cast<unsigned>(*p++ - '0');
      if (p != end && static_cast<unsigned>(static_cast<unsigned char>(*p) - '0') <= 9) {
        v = v * 10 + static_cast<unsigned>(*p++ - '0');
        if (v > 255) return false;
      }
    }
    out[part] = static_cast<uint8_t>(v);
  }
  return p == end;
}

// Each byte's value as a hex digit, or -1.
struct HexDigits {
  int8_t value[256];
  constexpr HexDigits() : value() {
    for (int c = 0; c < 256; ++c) {
      value[c] = c >= '0' && c <= '9'   ? static_cast<int8_t>(c - '0')
                 : c >= 'a' && c <= 'f' ? static_cast<int8_t>(c - 'a' + 10)
                 : c >= 'A' && c <= 'F' ? static_cast<int8_t>(c - 'A' + 10)
                                        : int8_t{-1};
    }
  }
};
constexpr HexDigits kHexDigits;

// IPv6 text as glibc's inet_pton(AF_INET6) reads it (resolv/inet_pton.c, inet_pton6), step for
// step, without its NUL-terminated copy: at most four hex digits a group, one "::", a leading
// ':' only as "::", no trailing single ':', a dotted quad only as the last 32 bits and only
// where they fit. IpAddressTest.ParsesAsInetPtonDoes compares the two on generated texts.
bool ParseV6(const char* p, const char* end, uint8_t* dst) {
  uint8_t tmp[16] = {};
  int tp = 0;
  int colonp = -1;
  if (p == end) return false;
  if (*p == ':') {
    ++p;
    if (p == end || *p != ':') return false;
  }
  const char* curtok = p;
  int xdigits = 0;
  unsigned val = 0;
  while (p < end) {
    const char ch = *p++;
    const int digit = kHexDigits.value[static_cast<unsigned char>(ch)];
    if (digit >= 0) {
      if (xdigits == 4) return false;
      val = val << 4 | static_cast<unsigned>(digit);
      ++xdigits;
      continue;
    }
    if (ch == ':') {
      curtok = p;
      if (xdigits == 0) {
        if (colonp >= 0) return false;
        colonp = tp;
        continue;
      }
      if (p == end) return false;
      if (tp + 2 > 16) return false;
      tmp[tp++] = static_cast<uint8_t>(val >> 8);
      tmp[tp++] = static_cast<uint8_t>(val);
      xdigits = 0;
      val = 0;
      continue;
    }
    if (ch == '.' && tp + 4 <= 16 && ParseV4(curtok, end, tmp + tp)) {
      tp += 4;
      xdigits = 0;
      break;
    }
    return false;
  }
  if (xdigits > 0) {
    if (tp + 2 > 16) return false;
    tmp[tp++] = static_cast<uint8_t>(val >> 8);
    tmp[tp++] = static_cast<uint8_t>(val);
  }
  if (colonp >= 0) {
    if (tp == 16) return false;  // "::" would stand for no group
    const int n = tp - colonp;
    std::memmove(tmp + 16 - n, tmp + colonp, static_cast<size_t>(n));
    std::memset(tmp + colonp, 0, static_cast<size_t>(16 - n - colonp));
    tp = 16;
  }
  if (tp != 16) return false;
  std::memcpy(dst, tmp, 16);
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
  IpAddress ip;
  if (ParseV4(text.data(), text.data() + text.size(), ip.bytes_.data())) {
    ip.v4_ = true;
    return ip;
  }
  // Short text without ':' is a dotted quad or nothing (no brackets): so it parses only as its
  // own canonical form, which Engine::NormaliseKey relies on to skip formatting the key again.
  const bool colon = !text.empty() && std::memchr(text.data(), ':', text.size()) != nullptr;
  if (text.size() <= 15 && !colon) return std::nullopt;
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
  }
  if (text.empty() || text.size() >= 64) return std::nullopt;
  const char* begin = text.data();
  const char* end = begin + text.size();
  if (!colon) {
    if (!ParseV4(begin, end, ip.bytes_.data())) return std::nullopt;
    ip.v4_ = true;
    return ip;
  }
  // Drop a zone index ("fe80::1%eth0"): it is meaningless off the host. A NUL anywhere is
  // refused, as when inet_pton read a C string copy (the whole text must be the address);
  // before the '%' ParseV6 refuses it as it does any other byte.
  if (const void* pct = std::memchr(begin, '%', text.size())) {
    const char* zone = static_cast<const char*>(pct);
    if (std::memchr(zone, '\0', static_cast<size_t>(end - zone)) != nullptr) return std::nullopt;
    end = zone;
  }
  if (!ParseV6(begin, end, ip.bytes_.data())) return std::nullopt;
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

bool Is6to4(const IpAddress& ip) {
  return !ip.is_v4() && ip.bytes()[0] == 0x20 && ip.bytes()[1] == 0x02;
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

std::string PeerLimitKey(absl::string_view address, int ipv6_prefix) {
  const std::optional<IpAddress> ip = IpAddress::Parse(address);
  if (!ip) return std::string(address);
  if (ip->is_v4()) return ip->ToString();
  if (const std::optional<IpAddress> v4 = EmbeddedIpv4(*ip)) return v4->ToString();
  if (ipv6_prefix >= 128) return ip->ToString();
  return Cidr::Covering(*ip, ipv6_prefix).ToString();
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
