#include "services/bouncer_api/bouncer_api_config.h"

#include <cstdint>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace palisade {
namespace {

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

void ToProto(absl::Duration d, google::protobuf::Duration* out) {
  out->set_seconds(absl::ToInt64Seconds(d));
  out->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d % absl::Seconds(1))));
}

}  // namespace

absl::StatusOr<palisade::v1::BouncerApiConfig> BouncerApiConfigWithDefaults(
    const palisade::v1::BouncerApiConfig& config) {
  palisade::v1::BouncerApiConfig c = config;
  auto error = [](absl::string_view field, absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("bouncer_api.", field, ": ", why));
  };
  if (c.listen().empty()) c.set_listen("127.0.0.1:8081");
  {
    const size_t colon = c.listen().rfind(':');
    int port = -1;
    if (colon == std::string::npos || colon == 0 ||
        !absl::SimpleAtoi(c.listen().substr(colon + 1), &port) || port < 0 || port > 65535) {
      return error("listen",
                   absl::StrCat("\"", c.listen(), "\" is not host:port (e.g. 127.0.0.1:8081)"));
    }
  }
  if (c.tls().cert_file().empty() != c.tls().key_file().empty()) {
    return error("tls", "cert_file and key_file go together");
  }
  if (!c.tls().client_ca_file().empty() && c.tls().cert_file().empty()) {
    return error("tls.client_ca_file", "needs cert_file and key_file (TLS)");
  }
  if (c.max_query_bytes() == 0) c.set_max_query_bytes(2048);
  if (c.max_query_bytes() < 256 || c.max_query_bytes() > 65536) {
    return error("max_query_bytes", "must be 256..65536");
  }
  if (c.max_concurrent_requests() == 0) c.set_max_concurrent_requests(8);
  if (c.max_concurrent_requests() > 64) return error("max_concurrent_requests", "must be 1..64");
  // Half the workers: a live-mode bouncer's parallel ?ip= questions fit, and other addresses
  // keep the other half. Below 4 workers half would leave a live-mode host one or none.
  if (!c.has_max_connections_per_address()) {
    const uint32_t workers = c.max_concurrent_requests();
    c.set_max_connections_per_address(workers >= 4 ? workers / 2 : 0);
  }
  if (c.max_connections_per_address() >= c.max_concurrent_requests()) {
    return error("max_connections_per_address",
                 "must be 0 (off) or below max_concurrent_requests (other addresses would find "
                 "no worker)");
  }
  if (!c.has_deletion_retention()) ToProto(absl::Hours(24 * 7), c.mutable_deletion_retention());
  const absl::Duration retention = FromProto(c.deletion_retention());
  if (retention < absl::Minutes(1) || retention > absl::Hours(24 * 365)) {
    return error("deletion_retention", "must be 1m..365d");
  }
  if (c.max_deletions() == 0) c.set_max_deletions(1'000'000);
  if (c.max_deletions() > 100'000'000) return error("max_deletions", "must be at most 100,000,000");
  if (!c.has_stale_after()) ToProto(absl::Minutes(5), c.mutable_stale_after());
  const absl::Duration stale = FromProto(c.stale_after());
  if (stale < absl::Seconds(1) || stale > absl::Hours(24 * 30)) {
    return error("stale_after", "must be 1s..30d");
  }
  return c;
}

namespace {

// Go's fmtFrac: the fraction of v / 10^prec into the front of `out` (".12"), trailing zeros
// and then the point left out; returns v / 10^prec.
uint64_t FracPrefix(uint64_t v, int prec, std::string* out) {
  std::string digits;
  bool print = false;
  for (int i = 0; i < prec; ++i) {
    const uint64_t digit = v % 10;
    print = print || digit != 0;
    if (print) digits.insert(digits.begin(), static_cast<char>('0' + digit));
    v /= 10;
  }
  if (print) out->insert(0, "." + digits);
  return v;
}

}  // namespace

std::string GoDuration(absl::Duration d) {
  // Go's time.Duration.String(), transcribed: a Duration is int64 nanoseconds (saturated here).
  const int64_t ns = absl::ToInt64Nanoseconds(d);
  if (ns == 0) return "0s";
  const bool neg = ns < 0;
  uint64_t u = neg ? static_cast<uint64_t>(-(ns + 1)) + 1 : static_cast<uint64_t>(ns);
  std::string out;
  if (u < 1'000'000'000) {
    // Under a second: the largest unit below it that fits ("1.5ms", "800µs", "7ns").
    int prec = 0;
    if (u < 1'000) {
      out = "ns";
    } else if (u < 1'000'000) {
      prec = 3;
      out = "\u00b5s";  // µ, U+00B5, as Go writes it
    } else {
      prec = 6;
      out = "ms";
    }
    std::string frac;
    u = FracPrefix(u, prec, &frac);
    out = absl::StrCat(u, frac, out);
  } else {
    std::string frac;
    u = FracPrefix(u, 9, &frac);  // u: whole seconds
    out = absl::StrCat(u % 60, frac, "s");
    u /= 60;
    if (u > 0) {
      out = absl::StrCat(u % 60, "m", out);
      u /= 60;
      if (u > 0) out = absl::StrCat(u, "h", out);
    }
  }
  return neg ? "-" + out : out;
}

}  // namespace palisade
