#include "services/actions/guard.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace palisade {
namespace {

constexpr const char* kCloudflare[] = {
    "173.245.48.0/20",  "103.21.244.0/22", "103.22.200.0/22", "103.31.4.0/22",    "141.101.64.0/18",
    "108.162.192.0/18", "190.93.240.0/20", "188.114.96.0/20", "197.234.240.0/22", "198.41.128.0/17",
    "162.158.0.0/15",   "104.16.0.0/13",   "104.24.0.0/14",   "172.64.0.0/13",    "131.0.72.0/22",
    "2400:cb00::/32",   "2606:4700::/32",  "2803:f800::/32",  "2405:b500::/32",   "2405:8100::/32",
    "2a06:98c0::/29",   "2c0f:f248::/32"};

// Token revocations spend a budget of their own (see GuardOptions::max_revocations_per_minute).
bool IsRevocation(const palisade::v1::Decision& d) {
  return d.target().kind() == palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT ||
         d.target().kind() == palisade::v1::TARGET_KIND_TOKEN_ID;
}

// A deliberate act spends no per-minute budget: a feed version (vetted by the feed's shrink
// guard and the edge cap on feed entries) or an operator's own ban (`decisions add`), which a
// flood of detections must not hold, nor release only after the flood's bans.
bool SkipsBudget(const palisade::v1::Decision& d) {
  return d.origin() == palisade::v1::ORIGIN_FEED || d.origin() == palisade::v1::ORIGIN_MANUAL;
}

}  // namespace

std::vector<std::string> Guard::CloudflareRanges() {
  return std::vector<std::string>(std::begin(kCloudflare), std::end(kCloudflare));
}

SharedNeverBan::SharedNeverBan(CidrSet set) : slot_(std::make_shared<Slot>()) {
  Set(std::move(set));
}

std::shared_ptr<const CidrSet> SharedNeverBan::Get() const {
  absl::MutexLock lock(&slot_->mu);
  return slot_->set;
}

void SharedNeverBan::Set(CidrSet set) {
  auto next = std::make_shared<const CidrSet>(std::move(set));
  absl::MutexLock lock(&slot_->mu);
  slot_->set = std::move(next);
}

Guard::Guard(GuardOptions options) : options_(std::move(options)) {}

bool Guard::NeverBan(const palisade::v1::Target& target) const {
  switch (target.kind()) {
    case palisade::v1::TARGET_KIND_PATH:
    case palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT:
    case palisade::v1::TARGET_KIND_TOKEN_ID:
      return false;
    default:  // addresses, ranges, and anything unlabelled is checked as an address
      break;
  }
  absl::StatusOr<Cidr> cidr = Cidr::Parse(target.value());
  if (!cidr.ok()) {
    std::optional<IpAddress> ip = IpAddress::Parse(target.value());
    if (!ip) return true;  // not an address: never send it
    cidr = Cidr::Parse(ip->ToString());
  }
  // Overlap either way: an address inside a never-ban range, or a range that would cover one
  // (e.g. banning 104.0.0.0/8); and the same for the IPv4 an IPv6 form embeds ("::a00:1" is
  // 10.0.0.1, "2002:a00::/24" covers 10.0.0.0/8). The IP list widens IPv6 after this check and
  // judges its item again (IpListOptions::never_ban).
  return TouchesNeverBan(*cidr, *options_.never_ban.Get());
}

bool Guard::OwnToken(const palisade::v1::Target& target) const {
  return target.kind() == palisade::v1::TARGET_KIND_TOKEN_ID && !options_.own_token_id.empty() &&
         target.value() == options_.own_token_id;
}

Guard::Verdict Guard::Check(const palisade::v1::Decision& d, absl::Time now, int active,
                            bool replaces_standing) {
  if (NeverBan(d.target())) return Verdict::kNeverBan;
  while (!recent_.empty() && recent_.front() <= now - absl::Minutes(1)) recent_.pop_front();
  if (active >= options_.max_active_per_actuator) return Verdict::kHeld;
  // The budget limits how many targets become restricted per minute. A stronger action taking
  // over from one at the edge restricts none anew: held, it left the target bare once its
  // predecessor's remove (never held) went out.
  if (SkipsBudget(d) || replaces_standing) return Verdict::kAllow;
  if (IsRevocation(d)) {
    while (!recent_revocations_.empty() &&
           recent_revocations_.front() <= now - absl::Minutes(1)) {
      recent_revocations_.pop_front();
    }
    if (static_cast<int>(recent_revocations_.size()) >= options_.max_revocations_per_minute) {
      return Verdict::kHeld;
    }
    recent_revocations_.push_back(now);
    return Verdict::kAllow;
  }
  if (static_cast<int>(recent_.size()) >= options_.max_new_per_minute) return Verdict::kHeld;
  recent_.push_back(now);
  return Verdict::kAllow;
}

void Guard::Record(const palisade::v1::Decision& d, absl::Time now) {
  if (SkipsBudget(d)) return;  // released past the active cap: still no budget to spend
  (IsRevocation(d) ? recent_revocations_ : recent_).push_back(now);
}

absl::StatusOr<std::vector<std::string>> Guard::ReadCidrFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open CIDR file"));
  std::vector<std::string> out;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    absl::string_view v = line;
    size_t hash = v.find('#');
    if (hash != absl::string_view::npos) v = v.substr(0, hash);
    v = absl::StripAsciiWhitespace(v);
    if (v.empty()) continue;
    absl::StatusOr<Cidr> c = Cidr::Parse(v);
    if (!c.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": ", c.status().message()));
    }
    out.emplace_back(v);
  }
  return out;
}

std::vector<std::string> Guard::LocalAddresses() {
  std::vector<std::string> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr) continue;
    char buf[INET6_ADDRSTRLEN];
    if (a->ifa_addr->sa_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, buf, sizeof(buf));
      out.emplace_back(buf);
    } else if (a->ifa_addr->sa_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(a->ifa_addr)->sin6_addr, buf,
                sizeof(buf));
      out.emplace_back(buf);
    }
  }
  freeifaddrs(list);
  return out;
}

}  // namespace palisade
