// The bouncer API's config (palisade.v1.BouncerApiConfig): its defaults and ranges, checked when
// palisaded loads its config, before any port opens. Kept apart from the server so the config
// loader does not pull in HTTP and the decision table.
// Thread-safety: pure functions.
#ifndef PALISADE_SERVICES_BOUNCER_API_BOUNCER_API_CONFIG_H_
#define PALISADE_SERVICES_BOUNCER_API_BOUNCER_API_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "palisade/v1/config.pb.h"

namespace palisade {

// The config with its defaults filled in (listen 127.0.0.1:8081, max_query_bytes 2048,
// max_concurrent_requests 8, deletion_retention 7 days, max_deletions 1,000,000, stale_after
// 5 minutes). kInvalidArgument naming the field ("bouncer_api.max_query_bytes: must be
// 256..65536") for a value out of range or a listen address that is not host:port.
absl::StatusOr<palisade::v1::BouncerApiConfig> BouncerApiConfigWithDefaults(
    const palisade::v1::BouncerApiConfig& config);

// Go's time.Duration.String() of `d` ("3h59m57.07925426s", "1h0m0s", "0s", "-1.269024417s",
// "1.5ms"): what CrowdSec writes and bouncers parse with time.ParseDuration.
std::string GoDuration(absl::Duration d);

}  // namespace palisade

#endif  // PALISADE_SERVICES_BOUNCER_API_BOUNCER_API_CONFIG_H_
