// Loading palisaded's configuration (palisade.v1.Config, textproto). Parsed strictly (unknown
// fields refused), validated once, defaults applied, and every error names the file, the field
// and the reason, before any port opens.
#ifndef PALISADE_SERVICES_SERVER_CONFIG_H_
#define PALISADE_SERVICES_SERVER_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "palisade/v1/config.pb.h"
#include "services/engine/rule_set.h"
#include "services/pipeline/pipeline.h"

namespace palisade {

// Parses and validates `text`. Relative rule_files are resolved against `base_dir`.
absl::StatusOr<palisade::v1::Config> ParseConfig(const std::string& text, const std::string& file,
                                                 const std::string& base_dir);
absl::StatusOr<palisade::v1::Config> LoadConfigFile(const std::string& path);

// grpc_listen and metrics_listen: host:port, and beyond loopback only with something saying who
// may use them (api.clients; metrics_auth tokens or metrics_tls with client_ca_file).
// kInvalidArgument naming `file` and the field. ParseConfig checks them; a caller that overrides
// a listener (palisaded's --grpc_listen, --metrics_listen) checks again.
absl::Status CheckListeners(const palisade::v1::Config& config, const std::string& file);

// The embedded defaults: loopback listeners and the shipped packs under `rules_dir`.
palisade::v1::Config DefaultConfig(const std::string& rules_dir);

// The zone a config names for times without an offset: an IANA name, "UTC", or "" for the
// host's local zone. kInvalidArgument naming the zone when it is unknown.
absl::StatusOr<absl::TimeZone> TimeZoneNamed(const std::string& name);

// What the pipeline takes from `config`, palisaded's and a replay's alike: the engine's caps,
// evidence, session limits and allowlist, the line and record caps, the zones (the config's,
// per source, per file input's source, per syslog input's sender zone: ZonedSource) and the
// json_formats. Leaves the rest of `*options`
// (feeds, token candidates, a cluster's router) as it is. kInvalidArgument naming the field for
// an allowlist or a zone that does not parse (a config from LoadConfigFile has none).
absl::Status ApplyToPipeline(const palisade::v1::Config& config, PipelineOptions* options);

// cluster.node_id's default: the host name's first label, characters outside [A-Za-z0-9_-]
// written as '-' ("node" when the host has no name).
std::string DefaultNodeId();

// What a reload (SIGHUP, Admin.ReloadRules) applies from a config file read again: rule_files,
// cidr_sets and allowlist. The top-level fields of `next` that differ from `running` otherwise
// (sorted): a restart applies them, and a reload with any is refused whole.
std::vector<std::string> FieldsNeedingRestart(const palisade::v1::Config& running,
                                              const palisade::v1::Config& next);

// Loads and compiles every configured pack: all or nothing. `threads`: how many may read and
// compile side by side (RuleSetOptions::threads); the result and the error are the same.
// `formats`: the only formats the caller reads (RuleSetOptions::formats); empty: every one.
// `feeds`: kConfigured (the daemon's): a rule whose in_feed / not_in_feed names a feed that is
// neither in config.feeds nor "*" is refused (kInvalidArgument naming the file, the rule, the
// condition and the name); kAny: a config that does not list the feeds (palisadectl replay
// without --config) takes any name.
enum class FeedNames { kConfigured, kAny };
absl::StatusOr<std::shared_ptr<const RuleSet>> LoadRules(
    const palisade::v1::Config& config, int threads = 1,
    const std::vector<palisade::v1::LogFormat>& formats = {},
    FeedNames feeds = FeedNames::kConfigured);

}  // namespace palisade

#endif  // PALISADE_SERVICES_SERVER_CONFIG_H_
