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
      return error("listen", absl::StrCat("\"", c.listen(),
                                          "\" is not host:port (e.g. 127.0.0.1:8081)"));
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

std::string GoDuration(absl::Duration d) {
  int64_t s = absl::ToInt64Seconds(d);  // truncates toward zero
  if (s == 0) return "0s";
  std::string out;
  // |INT64_MIN| does not fit; no decision lasts 292 billion years.
  uint64_t u = s < 0 ? static_cast<uint64_t>(-(s + 1)) + 1 : static_cast<uint64_t>(s);
  if (s < 0) out = "-";
  const uint64_t h = u / 3600, m = u / 60 % 60, sec = u % 60;
  // Go writes hours and minutes only when the duration reaches them, and then every smaller
  // unit, zero or not ("1h0m0s", "2m0s", "59s").
  if (h > 0) absl::StrAppend(&out, h, "h");
  if (h > 0 || m > 0) absl::StrAppend(&out, m, "m");
  absl::StrAppend(&out, sec, "s");
  return out;
}

}  // namespace palisade
