#include "services/server/config.h"

#include "absl/strings/str_cat.h"
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/substitute.h"
#include "gmock/gmock.h"
#include "services/server/auth.h"
#include "services/server/metrics_https.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "services/common/status_matchers.h"

namespace palisade {
namespace {

// A config (c.textproto in /etc/p) whose cloudflare block, enabled for these ids, also holds
// `fields`.
absl::StatusOr<palisade::v1::Config> ParseWithCloudflare(const std::string& fields) {
  return ParseConfig(absl::StrCat(R"pb(
    rule_files: "a"
    cloudflare {
      enabled: true
      account_id: "0123456789abcdef0123456789abcdef"
      zone_id: "fedcba9876543210fedcba9876543210" )pb",
                                  fields, "}"),
                     "c.textproto", "/etc/p");
}

using ::palisade::testing::IsOk;
using ::palisade::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(ConfigTest, DefaultsAreLoopbackAndTheShippedPacksLoad) {
  palisade::v1::Config config = DefaultConfig("rules");
  EXPECT_EQ(config.grpc_listen(), "127.0.0.1:50051");
  EXPECT_EQ(config.metrics_listen(), "127.0.0.1:9464");
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules = LoadRules(config);
  ASSERT_THAT(rules, IsOk());
  EXPECT_GE((*rules)->rules().size(), 8u);
}

// The embedded defaults (palisaded without --config, the README's first command) are the
// defaults a config file gets: they went their own way once, with no state_retention, and the
// hourly prune deleted every ended decision and offence (escalation forgot repeat offenders).
TEST(ConfigTest, TheEmbeddedDefaultsAreAConfigFilesDefaults) {
  const palisade::v1::Config embedded = DefaultConfig("rules");
  EXPECT_EQ(embedded.state_retention().seconds(), 90 * 86400);
  absl::StatusOr<palisade::v1::Config> parsed = ParseConfig(
      R"pb(rule_files: "rules/sshd.textproto"
           rule_files: "rules/nginx.textproto"
           rule_files: "rules/cloudflare-tokens.textproto")pb",
      "c.textproto", "");
  ASSERT_THAT(parsed, IsOk());
  std::string differences;
  google::protobuf::util::MessageDifferencer differ;
  differ.ReportDifferencesToString(&differences);
  EXPECT_TRUE(differ.Compare(*parsed, embedded)) << differences;
}

TEST(ConfigTest, AReloadAppliesThePacksAndTheAllowlistAndNamesTheRest) {
  absl::StatusOr<palisade::v1::Config> running =
      ParseConfig(R"pb(rule_files: "sshd.textproto")pb", "c.textproto", "/etc/p");
  absl::StatusOr<palisade::v1::Config> live = ParseConfig(
      R"pb(rule_files: "sshd.textproto" rule_files: "nginx.textproto"
           allowlist: "192.0.2.0/24"
           cidr_sets {
             key: "office"
             value { cidrs: "198.51.100.0/24" }
           })pb",
      "c.textproto", "/etc/p");
  absl::StatusOr<palisade::v1::Config> restart = ParseConfig(
      R"pb(rule_files: "sshd.textproto"
           sweep_interval { seconds: 5 }
           engine { max_evidence: 7 })pb",
      "c.textproto", "/etc/p");
  ASSERT_THAT(running, IsOk());
  ASSERT_THAT(live, IsOk());
  ASSERT_THAT(restart, IsOk());
  EXPECT_THAT(FieldsNeedingRestart(*running, *running), ::testing::IsEmpty());
  EXPECT_THAT(FieldsNeedingRestart(*running, *live), ::testing::IsEmpty());
  EXPECT_THAT(FieldsNeedingRestart(*running, *restart),
              ::testing::ElementsAre("engine", "sweep_interval"));
}

TEST(ConfigTest, ParsesAndResolvesRelativePacks) {
  absl::StatusOr<palisade::v1::Config> config = ParseConfig(R"pb(rule_files: "sshd.textproto"
                                                                 allowlist: "192.0.2.0/24")pb",
                                                            "/etc/p/c.textproto", "/etc/p");
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->rule_files(0), "/etc/p/sshd.textproto");
  EXPECT_EQ(config->grpc_listen(), "127.0.0.1:50051");
  EXPECT_EQ(config->engine().max_keys_per_rule(), 1'000'000u);
}

// A file input's zone is checked with the config (it was checked once palisaded had opened the
// bouncer API's port, and the error named neither the field nor the file); two inputs of one
// source must agree on it (the last one read won, silently).
TEST(ConfigTest, FileInputZonesAreCheckedAndAgreePerSource) {
  const std::string input = R"pb(inputs { files { name: "a" paths: "/var/log/a" format: "syslog"
                                                  source: "web" time_zone: "$0" } })pb";
  EXPECT_THAT(ParseConfig(absl::StrCat("rule_files: \"r\" ",
                                       absl::Substitute(input, "Mars/Olympus")),
                          "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("c.textproto"), HasSubstr("inputs.files \"a\""),
                             HasSubstr("time_zone"), HasSubstr("Mars/Olympus"))));
  EXPECT_THAT(
      ParseConfig(R"pb(rule_files: "r"
                       inputs {
                         files { name: "a" paths: "/a" format: "syslog" source: "web" time_zone: "UTC" }
                         files { name: "b" paths: "/b" format: "syslog" source: "web"
                                 time_zone: "Europe/Paris" }
                       })pb",
                  "c.textproto", "."),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("inputs.files \"b\""), HasSubstr("source \"web\""))));
  EXPECT_THAT(ParseConfig(absl::StrCat("rule_files: \"r\" ",
                                       absl::Substitute(input, "Europe/Paris")),
                          "c.textproto", "."),
              IsOk());
}

TEST(ConfigTest, ErrorsNameFileAndField) {
  // The sweep also ends bans and takes snapshots: an hour's would end bans an hour late.
  EXPECT_THAT(ParseConfig(R"pb(rule_files: "a" sweep_interval { seconds: 3600 })pb",
                          "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("sweep_interval")));
  EXPECT_THAT(ParseConfig(R"pb(rule_files: "a" sweep_interval { nanos: 500000 })pb",
                          "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("sweep_interval")));
  EXPECT_THAT(ParseConfig(R"pb(rule_files: "a" sweep_interval { seconds: 60 })pb", "c.textproto",
                          "."),
              IsOk());
  EXPECT_THAT(ParseConfig("grpc_listne: \"x\"", "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("c.textproto:1:"), HasSubstr("grpc_listne"))));
  EXPECT_THAT(ParseConfig(R"pb(rule_files: "a" grpc_listen: "localhost")pb", "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("grpc_listen"), HasSubstr("not host:port"))));
  EXPECT_THAT(ParseConfig(R"pb(rule_files: "a" allowlist: "10.0.0.0/8" allowlist: "oops")pb",
                          "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("allowlist[1]")));
  EXPECT_THAT(ParseConfig("", "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rule_files")));
}

TEST(ConfigTest, TimeZonesAreValidated) {
  auto config = ParseConfig(R"pb(rule_files: "a"
                                 time_zone: "America/New_York"
                                 source_time_zones { key: "web-2" value: "UTC" })pb",
                            "c.textproto", ".");
  ASSERT_THAT(config, IsOk());
  absl::StatusOr<absl::TimeZone> zone = TimeZoneNamed(config->time_zone());
  ASSERT_THAT(zone, IsOk());
  // 09:00 in New York in January is 14:00 UTC (UTC-5).
  EXPECT_EQ(absl::FormatTime("%H:%M", absl::FromCivil(absl::CivilSecond(2026, 1, 15, 9, 0, 0), *zone),
                             absl::UTCTimeZone()),
            "14:00");
  EXPECT_THAT(ParseConfig(R"pb(rule_files: "a" time_zone: "Mars/Olympus")pb", "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("time_zone"), HasSubstr("Mars/Olympus"))));
  EXPECT_THAT(ParseConfig(R"pb(rule_files: "a" source_time_zones { key: "x" value: "" })pb",
                          "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("source_time_zones[\"x\"]")));
  EXPECT_THAT(TimeZoneNamed(""), IsOk());  // the host's local zone
}

// A syslog input's per-sender zones (sender_time_zones): each entry names a zone that loads and
// one sender (a HOSTNAME or a peer CIDR), and an error names the input and the entry. The
// pipeline reads each entry's frames, which the receiver sends as ZonedSource(source, zone), in
// that zone; the input's own source keeps the config's.
TEST(ConfigTest, SyslogSenderTimeZonesAreValidatedAndReachThePipeline) {
  auto config = ParseConfig(R"pb(rule_files: "a"
                                 time_zone: "UTC"
                                 inputs {
                                   syslog {
                                     name: "central"
                                     udp_listen: "127.0.0.1:5514"
                                     sender_time_zones {
                                       hostname: "web-ny"
                                       time_zone: "America/New_York"
                                     }
                                     sender_time_zones {
                                       peer_cidr: "192.0.2.0/24"
                                       time_zone: "Asia/Tokyo"
                                     }
                                   }
                                 })pb",
                            "c.textproto", ".");
  ASSERT_THAT(config, IsOk());
  PipelineOptions options;
  ASSERT_THAT(ApplyToPipeline(*config, &options), IsOk());
  absl::TimeZone new_york, tokyo;
  ASSERT_TRUE(absl::LoadTimeZone("America/New_York", &new_york));
  ASSERT_TRUE(absl::LoadTimeZone("Asia/Tokyo", &tokyo));
  ASSERT_EQ(options.source_time_zones.count("central@America/New_York"), 1u);
  EXPECT_EQ(options.source_time_zones["central@America/New_York"], new_york);
  ASSERT_EQ(options.source_time_zones.count(ZonedSource("central", "Asia/Tokyo")), 1u);
  EXPECT_EQ(options.source_time_zones[ZonedSource("central", "Asia/Tokyo")], tokyo);
  EXPECT_EQ(options.source_time_zones.count("central"), 0u);  // the config's zone, as before

  const std::pair<const char*, const char*> bad[] = {
      {R"pb(hostname: "web-ny" time_zone: "Mars/Olympus")pb", "Mars/Olympus"},
      {R"pb(hostname: "web-ny")pb", "time_zone is required"},
      {R"pb(time_zone: "UTC")pb", "hostname or peer_cidr"},
      {R"pb(hostname: "web-ny" peer_cidr: "192.0.2.0/24" time_zone: "UTC")pb",
       "hostname or peer_cidr"},
      {R"pb(peer_cidr: "192.0.2.1/24" time_zone: "UTC")pb", "peer_cidr"},
  };
  for (const auto& [entry, reason] : bad) {
    const std::string text = absl::StrCat(
        R"pb(rule_files: "a" inputs { syslog { name: "central" udp_listen: "127.0.0.1:5514" )pb",
        R"pb(sender_time_zones { hostname: "ok" time_zone: "UTC" } sender_time_zones { )pb", entry,
        " } } }");
    EXPECT_THAT(ParseConfig(text, "c.textproto", "."),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("c.textproto"), HasSubstr("inputs.syslog \"central\""),
                               HasSubstr("sender_time_zones[1]"), HasSubstr(reason))))
        << entry;
  }
  // One HOSTNAME, two zones (case aside: hostnames are compared so).
  EXPECT_THAT(
      ParseConfig(R"pb(rule_files: "a"
                       inputs {
                         syslog {
                           name: "central"
                           udp_listen: "127.0.0.1:5514"
                           sender_time_zones { hostname: "web-ny" time_zone: "America/New_York" }
                           sender_time_zones { hostname: "WEB-NY" time_zone: "UTC" }
                         }
                       })pb",
                  "c.textproto", "."),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("sender_time_zones[1]"), HasSubstr("WEB-NY"))));
  // One peer range, two zones: which one won depended on config order. An IPv4-mapped
  // spelling of the range is the same range; the same range in the same zone is allowed.
  const std::pair<const char*, const char*> ranges[] = {
      {"10.1.0.0/16", "10.1.0.0/16"},
      {"::ffff:10.1.0.0/112", "10.1.0.0/16"},
  };
  for (const auto& [second, canonical] : ranges) {
    const auto two = [range = second](const char* zone) {
      return absl::StrCat(
          R"pb(rule_files: "a" inputs { syslog { name: "central" udp_listen: "127.0.0.1:5514" )pb",
          R"pb(sender_time_zones { peer_cidr: "10.1.0.0/16" time_zone: "Asia/Tokyo" } )pb",
          R"pb(sender_time_zones { peer_cidr: ")pb", range, R"pb(" time_zone: ")pb", zone,
          "\" } } }");
    };
    EXPECT_THAT(ParseConfig(two("Europe/Paris"), "c.textproto", "."),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("sender_time_zones[1]"), HasSubstr(canonical))))
        << second;
    EXPECT_THAT(ParseConfig(two("Asia/Tokyo"), "c.textproto", "."), IsOk()) << second;
  }
  // A source_time_zones entry for the same stream in another zone: one zone per source.
  EXPECT_THAT(
      ParseConfig(R"pb(rule_files: "a"
                       source_time_zones { key: "central@Asia/Tokyo" value: "UTC" }
                       inputs {
                         syslog {
                           name: "central"
                           udp_listen: "127.0.0.1:5514"
                           sender_time_zones { peer_cidr: "192.0.2.7" time_zone: "Asia/Tokyo" }
                         }
                       })pb",
                  "c.textproto", "."),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("sender_time_zones[0]"), HasSubstr("one zone per source"))));
}

TEST(ConfigTest, JsonFormatsAreValidatedAndNamedByTheirInputs) {
  EXPECT_THAT(ParseConfig(R"pb(rule_files: "a"
                               json_formats { name: "app" client_address: "peer" }
                               inputs {
                                 files { name: "app" paths: "/var/log/app.json" format: "json"
                                         json_format: "app" }
                               })pb",
                          "c.textproto", "."),
              IsOk());
  EXPECT_THAT(ParseConfig(R"pb(rule_files: "a" json_formats { name: "app" })pb", "c.textproto",
                          "."),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("json_formats \"app\""), HasSubstr("client_address"))));
  EXPECT_THAT(ParseConfig(R"pb(rule_files: "a"
                               json_formats { name: "app" message: "m" }
                               json_formats { name: "app" message: "m" })pb",
                          "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("defined twice")));
  EXPECT_THAT(ParseConfig(R"pb(rule_files: "a"
                               inputs { files { name: "x" paths: "/l" format: "json" } })pb",
                          "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("inputs.files \"x\""), HasSubstr("needs json_format"))));
  EXPECT_THAT(ParseConfig(R"pb(rule_files: "a"
                               inputs {
                                 files { name: "x" paths: "/l" format: "json" json_format: "b" }
                               })pb",
                          "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not defined")));
  EXPECT_THAT(ParseConfig(R"pb(rule_files: "a"
                               json_formats { name: "app" message: "m" }
                               inputs {
                                 files { name: "x" paths: "/l" format: "combined" json_format: "app" }
                               })pb",
                          "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("only for format json")));
}

TEST(ConfigTest, FeedsAreValidatedAndFileUrlsResolved) {
  auto config = ParseConfig(R"pb(rule_files: "a"
                                 feeds { name: "drop" format: FEED_FORMAT_SPAMHAUS url: "file://feeds/drop.txt" }
                                 feeds { name: "push" format: FEED_FORMAT_PLAIN to_edge: true })pb",
                            "c.textproto", "/etc/palisade");
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->feeds(0).url(), "file:///etc/palisade/feeds/drop.txt");
  EXPECT_EQ(config->feed_edge_max_entries(), 10000u);
  // max_parsed_bytes: 0 is the default (the feed manager's 256 MiB), 1 MiB the least taken.
  EXPECT_THAT(ParseConfig(R"pb(rule_files: "a"
                               feeds { name: "a" format: FEED_FORMAT_PLAIN max_parsed_bytes: 1048576 })pb",
                          "c.textproto", "."),
              IsOk());
  const std::pair<const char*, const char*> bad[] = {
      {R"pb(feeds { name: "Drop" format: FEED_FORMAT_PLAIN })pb", "feeds[0] (\"Drop\"): name"},
      {R"pb(feeds { name: "a" format: FEED_FORMAT_PLAIN } feeds { name: "a" format: FEED_FORMAT_PLAIN })pb",
       "feeds[1] (\"a\"): name is used twice"},
      {R"pb(feeds { name: "a" })pb", "format is required"},
      {R"pb(feeds { name: "a" format: FEED_FORMAT_PLAIN url: "ftp://x/y" })pb", "url must be"},
      {R"pb(feeds { name: "a" format: FEED_FORMAT_PLAIN min_keep_ratio: 2 })pb", "min_keep_ratio"},
      {R"pb(feeds { name: "a" format: FEED_FORMAT_PLAIN min_prefix_v4: 33 })pb",
       "min_prefix_v4 must be <= 32"},
      {R"pb(feeds { name: "a" format: FEED_FORMAT_PLAIN min_prefix_v6: 129 })pb",
       "min_prefix_v6 must be <= 128"},
      {R"pb(feeds { name: "a" format: FEED_FORMAT_PLAIN interval { seconds: 1 } })pb", "interval"},
      // 512 meant as MiB: every version would be refused.
      {R"pb(feeds { name: "a" format: FEED_FORMAT_PLAIN max_parsed_bytes: 512 })pb",
       "feeds[0] (\"a\"): max_parsed_bytes 512 is under 1 MiB (1048576)"},
      {R"pb(feeds { name: "a" format: FEED_FORMAT_PLAIN max_parsed_bytes: 1048575 })pb",
       "feeds[0] (\"a\"): max_parsed_bytes 1048575 is under 1 MiB"},
  };
  for (const auto& [text, message] : bad) {
    EXPECT_THAT(ParseConfig(absl::StrCat("rule_files: \"a\" ", text), "c.textproto", "."),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(message)))
        << text;
  }
}

TEST(ConfigTest, SessionBoundsHaveDefaultsAndLimits) {
  auto config = ParseConfig(R"pb(rule_files: "a")pb", "c.textproto", ".");
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->engine().max_sessions(), 65536u);
  EXPECT_EQ(config->engine().max_session_bytes(), uint64_t{16} << 20);
  EXPECT_EQ(config->engine().session_ttl().seconds(), 600);
  EXPECT_EQ(config->engine().max_record_bytes(), 8u << 20);
  EXPECT_EQ(config->state_retention().seconds(), 90 * 86400);
  EXPECT_EQ(config->decisions_memory_budget_bytes(), uint64_t{512} << 20);
  EXPECT_EQ(config->decisions_ipv6_folding().addresses(), 4u);
  EXPECT_EQ(config->decisions_ipv6_folding().prefix_length(), 64u);
  EXPECT_FALSE(config->decisions_ipv6_folding().disabled());
  // A per-address cap up to max_connections (default 64) is taken.
  EXPECT_THAT(ParseConfig(R"pb(rule_files: "a"
                               inputs {
                                 syslog {
                                   name: "s"
                                   tcp_listen: "127.0.0.1:0"
                                   max_connections_per_address: 64
                                 }
                               })pb",
                          "c.textproto", "."),
              IsOk());
  // The prefix an IPv6 sender counts by: 48..128 (0: 64).
  for (const char* prefix : {"0", "48", "128"}) {
    EXPECT_THAT(ParseConfig(absl::StrCat("rule_files: \"a\" inputs { syslog { name: \"s\" "
                                         "tcp_listen: \"127.0.0.1:0\" per_address_ipv6_prefix: ",
                                         prefix, " } }"),
                            "c.textproto", "."),
                IsOk())
        << prefix;
  }
  // Host streams per peer: 0 (1,024) up to 8,192 (a transport's host streams in all).
  for (const char* hosts : {"0", "1", "8192"}) {
    EXPECT_THAT(ParseConfig(absl::StrCat("rule_files: \"a\" inputs { syslog { name: \"s\" "
                                         "udp_listen: \"127.0.0.1:0\" max_host_streams_per_peer: ",
                                         hosts, " } }"),
                            "c.textproto", "."),
                IsOk())
        << hosts;
  }
  const std::pair<const char*, const char*> bad[] = {
      {R"pb(state_retention { seconds: 86400 })pb", "state_retention"},
      {R"pb(decisions_memory_budget_bytes: 1000)pb", "decisions_memory_budget_bytes"},
      {R"pb(decisions_ipv6_folding { addresses: 1 })pb",
       "decisions_ipv6_folding.addresses must be 2..1000, not 1"},
      {R"pb(decisions_ipv6_folding { prefix_length: 56 })pb",
       "decisions_ipv6_folding.prefix_length must be 48 or 64"},
      {R"pb(engine { max_line_bytes: 65536 max_record_bytes: 1000 })pb",
       "engine.max_record_bytes"},
      {R"pb(engine { max_record_bytes: 100000000 })pb", "engine.max_record_bytes"},
      {R"pb(engine { max_sessions: 20000000 })pb", "engine.max_sessions"},
      {R"pb(engine { max_session_bytes: 1000 })pb", "engine.max_session_bytes"},
      {R"pb(engine { session_ttl { seconds: 100000 } })pb", "engine.session_ttl"},
      {R"pb(snapshot_interval { nanos: 1000 })pb", "snapshot_interval"},
      {R"pb(inputs { poll_interval { seconds: 60 } })pb", "inputs.poll_interval"},
      {R"pb(inputs { batch_lines: 1000000 })pb", "inputs.batch_lines"},
      {R"pb(inputs { threads: 5 })pb", "inputs.threads must be 0..4"},
      {R"pb(inputs {
              syslog { name: "s" udp_listen: "127.0.0.1:0" idle_timeout { nanos: 1000 } }
            })pb",
       "inputs.syslog \"s\": idle_timeout must be 1s..24h, not 1us"},
      {R"pb(inputs {
              syslog {
                name: "s"
                tcp_listen: "127.0.0.1:0"
                max_connections: 4
                max_connections_per_address: 5
              }
            })pb",
       "inputs.syslog \"s\": max_connections_per_address 5 is over max_connections 4"},
      {R"pb(inputs {
              syslog { name: "s" tcp_listen: "127.0.0.1:0" max_connections_per_address: 65 }
            })pb",
       "inputs.syslog \"s\": max_connections_per_address 65 is over max_connections 64"},
      {R"pb(inputs {
              syslog { name: "s" tcp_listen: "127.0.0.1:0" per_address_ipv6_prefix: 47 }
            })pb",
       "inputs.syslog \"s\": per_address_ipv6_prefix must be 48..128, not 47"},
      {R"pb(inputs {
              syslog { name: "s" tcp_listen: "127.0.0.1:0" per_address_ipv6_prefix: 129 }
            })pb",
       "inputs.syslog \"s\": per_address_ipv6_prefix must be 48..128, not 129"},
      {R"pb(inputs {
              syslog { name: "s" udp_listen: "127.0.0.1:0" max_host_streams_per_peer: 8193 }
            })pb",
       "inputs.syslog \"s\": max_host_streams_per_peer must be at most 8192, not 8193"},
  };
  for (const auto& [text, message] : bad) {
    EXPECT_THAT(ParseConfig(absl::StrCat("rule_files: \"a\" ", text), "c.textproto", "."),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(message)))
        << text;
  }
}

// One knob folds IPv6 both in the decisions and in the engine's windows: decisions_ipv6_folding
// gives EngineOptions::ipv6_window_prefix (0 when disabled).
TEST(ConfigTest, Ipv6WindowPrefixFollowsDecisionsIpv6Folding) {
  const std::pair<const char*, int> cases[] = {
      {"", 64},
      {"decisions_ipv6_folding { prefix_length: 48 }", 48},
      {"decisions_ipv6_folding { prefix_length: 64 }", 64},
      {"decisions_ipv6_folding { disabled: true }", 0},
  };
  for (const auto& [fields, prefix] : cases) {
    auto config =
        ParseConfig(absl::StrCat("rule_files: \"a\" ", fields), "c.textproto", ".");
    ASSERT_THAT(config, IsOk()) << fields;
    PipelineOptions options;
    ASSERT_THAT(ApplyToPipeline(*config, &options), IsOk()) << fields;
    EXPECT_EQ(options.engine.ipv6_window_prefix, prefix) << fields;
  }
}

TEST(ConfigTest, CloudflareSectionIsValidatedWithDefaults) {
  const std::string ok = R"pb(
    rule_files: "a"
    cloudflare {
      enabled: true
      account_id: "0123456789abcdef0123456789abcdef"
      zone_id: "fedcba9876543210fedcba9876543210"
      token_file: "token"
    })pb";
  absl::StatusOr<palisade::v1::Config> config = ParseConfig(ok, "c.textproto", "/etc/p");
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->cloudflare().api_base(), "https://api.cloudflare.com/client/v4");
  EXPECT_EQ(config->cloudflare().token_file(), "/etc/p/token");
  EXPECT_EQ(config->cloudflare().budget_requests(), 1200u);
  EXPECT_EQ(config->cloudflare().list_name(), "palisade_block");
  EXPECT_EQ(config->cloudflare().access_rule_scope(), "zone");

  std::string bad = ok;
  bad.replace(bad.find("0123456789abcdef0123456789abcdef"), 32, "nope");
  EXPECT_THAT(ParseConfig(bad, "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cloudflare.account_id")));
  bad = ok;
  bad.replace(bad.find("token_file: \"token\""), 20, "");
  EXPECT_THAT(ParseConfig(bad, "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cloudflare.token_file")));
  bad = ok;
  bad.insert(bad.find("enabled"), "api_base: \"http://api.example.com\" ");
  EXPECT_THAT(ParseConfig(bad, "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cloudflare.api_base")));
  bad = ok;
  bad.insert(bad.find("enabled"), "ratelimit_period: 7 ");
  EXPECT_THAT(ParseConfig(bad, "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ratelimit_period")));
}

// cloudflare.instance tags the marks on what palisaded makes at the edge: empty, or 1..32 of
// [a-z0-9-] (a '_' or '@' would make "palisade_<id>_<instance>" ambiguous).
TEST(ConfigTest, CloudflareInstanceIsATagOfLowercaseLettersDigitsAndDashes) {
  auto parse = [](const std::string& instance) {
    return ParseConfig(absl::StrCat(R"pb(rule_files: "a"
                                         cloudflare {
                                           enabled: true
                                           account_id: "0123456789abcdef0123456789abcdef"
                                           zone_id: "fedcba9876543210fedcba9876543210"
                                           token_file: "token"
                                           instance: ")pb",
                                    instance, "\" }"),
                       "c.textproto", "/etc/p");
  };
  absl::StatusOr<palisade::v1::Config> config = parse("");
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->cloudflare().instance(), "");
  config = parse("edge-1");
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->cloudflare().instance(), "edge-1");
  EXPECT_THAT(parse(std::string(32, 'a')), IsOk());
  for (const std::string& bad : {std::string(33, 'a'), std::string("Edge"), std::string("a_b"),
                                std::string("a@b"), std::string("a b")}) {
    EXPECT_THAT(parse(bad), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("c.textproto: cloudflare.instance")))
        << bad;
  }
}

// The feeds' ranges share the IP list with rule and manual bans, first come first served: a
// feed_edge_max_entries as large as list_max_items (both 10,000 by default) let a feed fill the
// list, and every IP-list ban after it was refused at the cap and failed for good. With
// Cloudflare on and a to_edge feed, the feeds may take the list less a reserve of a tenth.
TEST(ConfigTest, ToEdgeFeedsLeaveTheIpListRoomForBans) {
  auto parse = [](const std::string& top, const std::string& cloudflare, bool enabled = true,
                  bool to_edge = true) {
    return ParseConfig(
        absl::StrCat("rule_files: \"a\" ", top,
                     " feeds { name: \"drop\" format: FEED_FORMAT_PLAIN to_edge: ",
                     to_edge ? "true" : "false",
                     " } cloudflare { enabled: ", enabled ? "true" : "false",
                     R"pb( account_id: "0123456789abcdef0123456789abcdef"
                           zone_id: "fedcba9876543210fedcba9876543210"
                           token_file: "token" )pb",
                     cloudflare, " }"),
        "c.textproto", "/etc/p");
  };
  EXPECT_THAT(parse("feed_edge_max_entries: 10000", ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("c.textproto: feed_edge_max_entries 10000"),
                             HasSubstr("cloudflare.list_max_items 10000"),
                             HasSubstr("at most 9000"))));
  EXPECT_THAT(parse("feed_edge_max_entries: 9000", ""), IsOk());
  // Unset, it takes the room there is.
  absl::StatusOr<palisade::v1::Config> config = parse("", "");
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->feed_edge_max_entries(), 9000u);
  config = parse("", "list_max_items: 100");
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->feed_edge_max_entries(), 90u);
  EXPECT_THAT(parse("feed_edge_max_entries: 91", "list_max_items: 100"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("feed_edge_max_entries 91"),
                             HasSubstr("cloudflare.list_max_items 100"))));
  EXPECT_THAT(parse("", "list_max_items: 1"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("cloudflare.list_max_items 1"),
                             HasSubstr("feed_edge_max_entries"))));
  // No feed range reaches the list: without Cloudflare (the bouncers' set only), or without a
  // to_edge feed.
  config = parse("feed_edge_max_entries: 1000000", "", /*enabled=*/false);
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->feed_edge_max_entries(), 1000000u);
  EXPECT_THAT(parse("feed_edge_max_entries: 10000", "", true, /*to_edge=*/false), IsOk());
  config = parse("", "", /*enabled=*/false);
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->feed_edge_max_entries(), 10000u);
}

// Rate-limit values follow the zone's plan (Free: 10 s / 10 s only); a timeout of 0 (throttle)
// can be set; IPv6 list items are /64 or wider.
TEST(ConfigTest, CloudflarePlanSetsAndBoundsRateLimits) {
  auto parse = [](const std::string& extra) {
    return ParseWithCloudflare(absl::StrCat("token_file: \"token\" ", extra));
  };
  absl::StatusOr<palisade::v1::Config> free = parse("");
  ASSERT_THAT(free, IsOk());
  EXPECT_EQ(free->cloudflare().plan(), "free");
  EXPECT_EQ(free->cloudflare().ratelimit_period(), 10u);
  EXPECT_EQ(free->cloudflare().ratelimit_mitigation_timeout(), 10u);
  EXPECT_THAT(parse("ratelimit_period: 60"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("free plan")));
  EXPECT_THAT(parse("ratelimit_mitigation_timeout: 600"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cloudflare.ratelimit_mitigation_timeout")));

  absl::StatusOr<palisade::v1::Config> pro = parse("plan: \"pro\"");
  ASSERT_THAT(pro, IsOk());
  EXPECT_EQ(pro->cloudflare().ratelimit_period(), 60u);
  EXPECT_EQ(pro->cloudflare().ratelimit_mitigation_timeout(), 600u);
  absl::StatusOr<palisade::v1::Config> throttle =
      parse("plan: \"pro\" ratelimit_mitigation_timeout: 0");
  ASSERT_THAT(throttle, IsOk());
  EXPECT_EQ(throttle->cloudflare().ratelimit_mitigation_timeout(), 0u);
  EXPECT_THAT(parse("plan: \"pro\" ratelimit_period: 120"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at most 60")));
  EXPECT_THAT(parse("plan: \"pro\" ratelimit_mitigation_timeout: 86400"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at most 3600")));
  EXPECT_THAT(parse("plan: \"business\" ratelimit_period: 600 ratelimit_mitigation_timeout: 86400"),
              IsOk());
  EXPECT_THAT(parse("plan: \"gold\""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cloudflare.plan")));

  EXPECT_THAT(parse("list_ipv6_prefix: 128"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("list_ipv6_prefix")));
  EXPECT_THAT(parse("list_ipv6_prefix: 48"), IsOk());
}

// bouncer_api (issue 16): off without the block, defaults with an empty one, errors naming the
// file and the field, TLS paths resolved like the others.
TEST(ConfigTest, BouncerApiIsOffWithoutItsBlockAndValidatedWithIt) {
  absl::StatusOr<palisade::v1::Config> off = ParseConfig(R"pb(rule_files: "a")pb", "c.textproto", "/etc/p");
  ASSERT_THAT(off, IsOk());
  EXPECT_FALSE(off->has_bouncer_api());
  absl::StatusOr<palisade::v1::Config> on =
      ParseConfig(R"pb(rule_files: "a" bouncer_api {})pb", "c.textproto", "/etc/p");
  ASSERT_THAT(on, IsOk());
  EXPECT_EQ(on->bouncer_api().listen(), "127.0.0.1:8081");
  EXPECT_EQ(on->bouncer_api().max_query_bytes(), 2048u);
  absl::StatusOr<palisade::v1::Config> tls = ParseConfig(
      R"pb(rule_files: "a" bouncer_api { tls { cert_file: "b.crt" key_file: "b.key" } })pb",
      "c.textproto", "/etc/p");
  ASSERT_THAT(tls, IsOk());
  EXPECT_EQ(tls->bouncer_api().tls().cert_file(), "/etc/p/b.crt");
  EXPECT_THAT(
      ParseConfig(R"pb(rule_files: "a" bouncer_api { max_query_bytes: 9 })pb", "c.textproto", "."),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("c.textproto: bouncer_api.max_query_bytes: must be 256..65536")));
  EXPECT_THAT(
      ParseConfig(R"pb(rule_files: "a" bouncer_api { listen: "8081" })pb", "c.textproto", "."),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bouncer_api.listen")));
}

TEST(ConfigTest, ClusterIsOffWithoutItsBlockAndValidatedWithDefaults) {
  absl::StatusOr<palisade::v1::Config> off =
      ParseConfig(R"pb(rule_files: "a")pb", "c.textproto", ".");
  ASSERT_THAT(off, IsOk());
  EXPECT_FALSE(off->has_cluster());
  absl::StatusOr<palisade::v1::Config> one = ParseConfig(
      R"pb(rule_files: "a"
           cluster {
             nats {
               servers: "nats://127.0.0.1:4222"
               tls { ca_file: "ca.pem" }
               credentials_file: "n.creds"
             }
           })pb",
      "c.textproto", "/etc/p");
  ASSERT_THAT(one, IsOk());
  EXPECT_EQ(one->cluster().node_id(), DefaultNodeId());
  EXPECT_FALSE(one->cluster().node_id().empty());
  EXPECT_EQ(one->cluster().partitions(), 16u);
  EXPECT_EQ(one->cluster().lease_term().seconds(), 15);
  EXPECT_EQ(one->cluster().matches_max_age().seconds(), 24 * 3600);
  EXPECT_EQ(one->cluster().matches_max_bytes(), uint64_t{1} << 30);
  EXPECT_EQ(one->cluster().replicas(), 1u);
  EXPECT_EQ(one->cluster().nats().tls().ca_file(), "/etc/p/ca.pem");
  EXPECT_EQ(one->cluster().nats().credentials_file(), "/etc/p/n.creds");
  absl::StatusOr<palisade::v1::Config> three = ParseConfig(
      R"pb(rule_files: "a"
           cluster {
             nats { servers: [ "nats://a:4222", "nats://b:4222", "tls://c:4222" ] }
             node_id: "web-2"
             partitions: 64
             lease_term { seconds: 6 }
           })pb",
      "c.textproto", ".");
  ASSERT_THAT(three, IsOk());
  EXPECT_EQ(three->cluster().node_id(), "web-2");
  EXPECT_EQ(three->cluster().partitions(), 64u);
  EXPECT_EQ(three->cluster().replicas(), 3u);
  struct Bad {
    const char* cluster;
    const char* error;
  };
  for (const Bad& bad : std::vector<Bad>{
           {"nats {}", "c.textproto: cluster.nats.servers: at least one NATS server"},
           {"nats { servers: \"127.0.0.1:4222\" }",
            "cluster.nats.servers[0]: \"127.0.0.1:4222\" is not a nats://host:port"},
           {"nats { servers: \"nats://a\" } node_id: \"web.2\"",
            "cluster.node_id: \"web.2\" must be 1..64 characters of [A-Za-z0-9_-]"},
           {"nats { servers: \"nats://a\" } partitions: 5000",
            "cluster.partitions: 5000 is more than 1024"},
           {"nats { servers: \"nats://a\" } lease_term { seconds: 1 }",
            "cluster.lease_term: 1s is not within 3s..5m"},
           {"nats { servers: \"nats://a\" } matches_max_age { seconds: 60 }",
            "cluster.matches_max_age: 1m is not within 1h..30d"},
           {"nats { servers: \"nats://a\" } matches_max_bytes: 1000",
            "cluster.matches_max_bytes: 1000 is not within 64 MiB..1 TiB"},
           {"nats { servers: \"nats://a\" } replicas: 2", "cluster.replicas: 2 is neither 1 nor 3"},
       }) {
    SCOPED_TRACE(bad.cluster);
    EXPECT_THAT(ParseConfig(absl::StrCat("rule_files: \"a\" cluster { ", bad.cluster, " }"),
                            "c.textproto", "."),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(bad.error)));
  }
}

TEST(ConfigTest, DefaultNodeIdIsAValidNodeId) {
  const std::string id = DefaultNodeId();
  ASSERT_FALSE(id.empty());
  EXPECT_LE(id.size(), 64u);
  EXPECT_EQ(id.find_first_not_of(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"),
            std::string::npos);
}

// min_keep_ratio 0 cannot say "off": proto3 reads an unset field as 0, and existing configs
// that leave it out mean the default (0.1). -1 turns the shrink guard off; other negatives are
// refused as mistakes.
TEST(ConfigTest, AMinKeepRatioOfMinusOneTurnsTheShrinkGuardOff) {
  EXPECT_THAT(ParseConfig(R"pb(rule_files: "a"
                               feeds { name: "a" format: FEED_FORMAT_PLAIN min_keep_ratio: -1 })pb",
                          "c.textproto", "."),
              IsOk());
  for (const char* ratio : {"-0.5", "-2", "1.5"}) {
    EXPECT_THAT(
        ParseConfig(absl::StrCat(R"pb(rule_files: "a" feeds { name: "a" format: FEED_FORMAT_PLAIN
                                      min_keep_ratio: )pb",
                                 ratio, "}"),
                    "c.textproto", "."),
        StatusIs(absl::StatusCode::kInvalidArgument,
                 AllOf(HasSubstr("c.textproto: feeds[0] (\"a\"): min_keep_ratio"),
                       HasSubstr("-1 turns the shrink guard off"))))
        << ratio;
  }
}

// max_growth_ratio follows min_keep_ratio's convention (0 or unset: the default, 10; -1: off);
// a ratio under 1 would hold every version over the guard's floor, so it is refused.
TEST(ConfigTest, AMaxGrowthRatioUnderOneIsRefused) {
  for (const char* ratio : {"-1", "0", "1", "10"}) {
    EXPECT_THAT(
        ParseConfig(absl::StrCat(R"pb(rule_files: "a" feeds { name: "a" format: FEED_FORMAT_PLAIN
                                      max_growth_ratio: )pb",
                                 ratio, "}"),
                    "c.textproto", "."),
        IsOk())
        << ratio;
  }
  for (const char* ratio : {"0.5", "-0.5", "-2"}) {
    EXPECT_THAT(
        ParseConfig(absl::StrCat(R"pb(rule_files: "a" feeds { name: "a" format: FEED_FORMAT_PLAIN
                                      max_growth_ratio: )pb",
                                 ratio, "}"),
                    "c.textproto", "."),
        StatusIs(absl::StatusCode::kInvalidArgument,
                 AllOf(HasSubstr("c.textproto: feeds[0] (\"a\"): max_growth_ratio"),
                       HasSubstr("-1 turns the growth guard off"))))
        << ratio;
  }
}

// Feed names are fixed for the daemon's life (a reload applies rule_files, cidr_sets and the
// allowlist only), and a rule naming a feed that is not configured matched as an empty feed: a
// typo in not_in_feed matched every address. A pack naming one is refused, saying where; "*"
// (any feed) and configured names load. A caller whose config does not list the feeds
// (palisadectl replay without --config) asks for FeedNames::kAny, and any name loads as before.
TEST(ConfigTest, ARuleNamingAFeedThatIsNotConfiguredIsRefused) {
  const std::string pack = absl::StrCat(::testing::TempDir(), "/feed-rules.textproto");
  auto write = [&pack](const std::string& in_feed, const std::string& not_in_feed) {
    std::ofstream out(pack, std::ios::trunc);
    out << R"pb(name: "feed-rules"
rules {
  id: "listed"
  formats: LOG_FORMAT_SYSLOG
  patterns: "^Failed password for .* from (?P<ip>[0-9a-f:.]+) port \\d+ ssh2$"
  conditions { group: "ip" in_feed: ")pb" << in_feed << R"pb(" }
  threshold { count: 1 }
  decision { action: ACTION_BLOCK duration { seconds: 3600 } }
}
rules {
  id: "unlisted"
  formats: LOG_FORMAT_SYSLOG
  patterns: "^Failed password for .* from (?P<ip>[0-9a-f:.]+) port \\d+ ssh2$"
  conditions { group: "ip" not_in_feed: ")pb" << not_in_feed << R"pb(" }
  threshold { count: 5 window { seconds: 60 } }
  decision { action: ACTION_BLOCK duration { seconds: 3600 } }
})pb";
  };
  absl::StatusOr<palisade::v1::Config> config =
      ParseConfig(absl::StrCat("rule_files: \"", pack, "\" feeds { name: \"drop\" ",
                               "format: FEED_FORMAT_SPAMHAUS }"),
                  "c.textproto", ".");
  ASSERT_THAT(config, IsOk());
  write("drop", "*");
  EXPECT_THAT(LoadRules(*config), IsOk());
  write("*", "dorp");
  EXPECT_THAT(LoadRules(*config),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(pack), HasSubstr("rule \"unlisted\""),
                             HasSubstr("not_in_feed: \"dorp\""),
                             HasSubstr("not configured (feeds: drop; or \"*\" for any)"))));
  write("tor", "drop");
  EXPECT_THAT(LoadRules(*config),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("rule \"listed\""), HasSubstr("in_feed: \"tor\""))));
  palisade::v1::Config bare;
  bare.add_rule_files(pack);
  EXPECT_THAT(LoadRules(bare), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(LoadRules(bare, 1, {}, FeedNames::kAny), IsOk());
}

// A pack file emptied (a truncate-then-write caught by SIGHUP) refuses the reload's rule set,
// naming the file, so the running rules and their windows stay.
TEST(ConfigTest, AnEmptyPackRefusesTheWholeSet) {
  const std::string empty = absl::StrCat(std::getenv("TEST_TMPDIR"), "/truncated.textproto");
  std::ofstream(empty, std::ios::trunc).flush();
  palisade::v1::Config config = DefaultConfig("rules");
  config.add_rule_files(empty);
  EXPECT_THAT(LoadRules(config), StatusIs(absl::StatusCode::kInvalidArgument,
                                          AllOf(HasSubstr(empty), HasSubstr("pack has no rules"))));
}

TEST(ConfigTest, ABadPackRefusesTheWholeSet) {
  palisade::v1::Config config = DefaultConfig("rules");
  config.add_rule_files("rules/does-not-exist.textproto");
  EXPECT_THAT(LoadRules(config),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("does-not-exist.textproto")));
}

// Files read side by side (LoadRules' threads) still name the first bad file in the config's
// order, and a good config loads the same rules.
TEST(ConfigTest, ThreadsNameTheFirstBadPackAndLoadTheSameRules) {
  palisade::v1::Config config = DefaultConfig("rules");
  absl::StatusOr<std::shared_ptr<const RuleSet>> one = LoadRules(config, 1);
  absl::StatusOr<std::shared_ptr<const RuleSet>> two = LoadRules(config, 2);
  ASSERT_THAT(one, palisade::testing::IsOk());
  ASSERT_THAT(two, palisade::testing::IsOk());
  ASSERT_EQ((*one)->rules().size(), (*two)->rules().size());
  for (size_t r = 0; r < (*one)->rules().size(); ++r) {
    EXPECT_EQ((*one)->rules()[r]->id(), (*two)->rules()[r]->id());
  }
  palisade::v1::Config bad = config;
  bad.add_rule_files("rules/first-missing.textproto");
  bad.add_rule_files("rules/second-missing.textproto");
  for (int threads : {1, 2, 4}) {
    EXPECT_THAT(LoadRules(bad, threads),
                StatusIs(absl::StatusCode::kNotFound, HasSubstr("first-missing.textproto")))
        << threads;
  }
}

}  // namespace
}  // namespace palisade

namespace palisade {
namespace {

// Every config shipped under deploy/ loads through the real loader, packs included.
TEST(ShippedConfigTest, DeployConfigLoads) {
  absl::StatusOr<palisade::v1::Config> config = LoadConfigFile("deploy/palisade.textproto");
  ASSERT_THAT(config, palisade::testing::IsOk());
  EXPECT_EQ(config->allowlist_size(), 2);
  EXPECT_EQ(config->cidr_sets().at("cloudflare_token_ips").cidrs_size(), 2);
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules = LoadRules(*config);
  ASSERT_THAT(rules, palisade::testing::IsOk());
  EXPECT_EQ((*rules)->pack_names(),
            (std::vector<std::string>{"sshd", "web-attacks", "nginx", "cloudflare-tokens",
                                      "cloudflare-audit"}));
}

// Every config shipped anywhere under deploy/ (systemd, Kubernetes, the example) loads through
// the real loader, its packs compile, and its API clients are valid. Packs installed under
// /usr/share/palisade/rules are taken from the tree's rules/.
TEST(ShippedConfigTest, EveryShippedConfigLoads) {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::recursive_directory_iterator("deploy")) {
    if (entry.path().extension() == ".textproto") files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  EXPECT_THAT(files, ::testing::IsSupersetOf({"deploy/kubernetes/palisade.textproto",
                                              "deploy/palisade.textproto",
                                              "deploy/systemd/palisade.textproto"}));
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    absl::StatusOr<palisade::v1::Config> config = LoadConfigFile(file);
    ASSERT_THAT(config, palisade::testing::IsOk());
    for (std::string& pack : *config->mutable_rule_files()) {
      constexpr absl::string_view kInstalled = "/usr/share/palisade/rules/";
      if (absl::StartsWith(pack, kInstalled)) pack = "rules/" + pack.substr(kInstalled.size());
    }
    EXPECT_THAT(LoadRules(*config), palisade::testing::IsOk());
    prometheus::Registry registry;
    absl::StatusOr<std::unique_ptr<Authorizer>> auth = Authorizer::Create(config->api(), registry);
    EXPECT_THAT(auth, palisade::testing::IsOk());
    // Listening beyond loopback requires tokens (palisaded refuses otherwise).
    if (!IsLoopbackListen(config->grpc_listen())) {
      EXPECT_TRUE((*auth)->enabled());
    }
    // The same for /metrics: bearer tokens or TLS with client certificates.
    if (config->metrics_listen() != "off" && !IsLoopbackListen(config->metrics_listen())) {
      EXPECT_TRUE(MetricsProtected(config->metrics_tls(), config->metrics_auth()))
          << "metrics_listen " << config->metrics_listen() << " would be refused";
    }
  }
}

}  // namespace
}  // namespace palisade

namespace palisade {
namespace {

// Who may call the API, and over what, is config like the rest: checked when the file is
// loaded, naming the file and the field, before any port opens. A TLS block that cannot serve
// TLS (a key or a client CA without a certificate) is refused: it used to leave gRPC in plain
// text, client certificates unasked for, without a word.
TEST(ConfigTest, ApiClientsAndTlsAreValidatedAtLoad) {
  const std::string hash(64, 'a');
  auto parse = [](const std::string& api) {
    return ParseConfig(absl::StrCat("rule_files: \"a\" api { ", api, " }"), "/etc/p/c.textproto",
                       "/etc/p");
  };
  EXPECT_THAT(parse(absl::StrCat("clients { name: \"ops\" token_sha256: \"", hash,
                                 "\" roles: API_ROLE_ADMIN }")),
              IsOk());
  EXPECT_THAT(parse("clients { name: \"ops\" token_sha256: \"abc\" roles: API_ROLE_ADMIN }"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("c.textproto"), HasSubstr("api.clients[0]"),
                             HasSubstr("token_sha256"))));
  EXPECT_THAT(parse(absl::StrCat("clients { name: \"ops\" token_sha256: \"", hash, "\" }")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("c.textproto"), HasSubstr("api.clients[0]"),
                             HasSubstr("roles"))));
  EXPECT_THAT(parse(absl::StrCat("clients { name: \"ops\" token_sha256: \"", hash,
                                 "\" roles: API_ROLE_UNSPECIFIED }")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("api.clients[0]")));
  // One token listed twice: the authorizer would take whichever entry it met last.
  EXPECT_THAT(parse(absl::StrCat("clients { name: \"ops\" token_sha256: \"", hash,
                                 "\" roles: API_ROLE_ADMIN } clients { name: \"dash\" ",
                                 "token_sha256: \"", hash, "\" roles: API_ROLE_READ }")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("c.textproto"), HasSubstr("api.clients[1] (\"dash\")"),
                             HasSubstr("also api.clients[0] (\"ops\")"))));
  EXPECT_THAT(parse("tls { key_file: \"k.pem\" client_ca_file: \"ca.pem\" }"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("c.textproto"), HasSubstr("api.tls"))));
  EXPECT_THAT(parse("tls { cert_file: \"c.pem\" }"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("api.tls")));
  EXPECT_THAT(parse("tls { cert_file: \"c.pem\" key_file: \"k.pem\" }"), IsOk());
  EXPECT_THAT(ParseConfig("rule_files: \"a\" metrics_tls { client_ca_file: \"ca.pem\" }",
                          "/etc/p/c.textproto", "/etc/p"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("metrics_tls")));
}

// A client's name is whose shipped positions and stream share its calls use, and the empty name
// the anonymous client's (no api.clients): an entry without one is refused at load, naming the
// file and the entry. Entries of one name are one client: the old and the new token of a
// rotation, listed side by side, are taken.
TEST(ConfigTest, AnApiClientNeedsANameAndEntriesMayShareOne) {
  const std::string old_hash(64, 'a'), new_hash(64, 'b');
  auto parse = [](const std::string& api) {
    return ParseConfig(absl::StrCat("rule_files: \"a\" api { ", api, " }"), "/etc/p/c.textproto",
                       "/etc/p");
  };
  EXPECT_THAT(parse(absl::StrCat("clients { name: \"ops\" token_sha256: \"", old_hash,
                                 "\" roles: API_ROLE_ADMIN } clients { token_sha256: \"", new_hash,
                                 "\" roles: API_ROLE_INGEST }")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("c.textproto"), HasSubstr("api.clients[1]"),
                             HasSubstr("name is required"))));
  EXPECT_THAT(parse(absl::StrCat("clients { name: \"ops\" token_sha256: \"", old_hash,
                                 "\" roles: API_ROLE_ADMIN } clients { name: \"ops\" ",
                                 "token_sha256: \"", new_hash, "\" roles: API_ROLE_ADMIN }")),
              IsOk());
}

}  // namespace
}  // namespace palisade

namespace palisade {
namespace {

// Token rotation and the credentials check's interval are config like the rest: refused at load
// naming the file and the field. They were checked first by Edge::Start, which in a cluster runs
// only once the node wins the edge-writer lease: a node started, joined, and then wrote with no
// edge at all ("this node writes but its edge did not start").
TEST(ConfigTest, CloudflareRotationAndCheckIntervalAreValidatedAtLoad) {
  const auto& parse = ParseWithCloudflare;
  EXPECT_THAT(parse("token_file: \"t\" rotation { interval { seconds: 3600 } }"), IsOk());
  EXPECT_THAT(parse("token_env: \"CF_TOKEN\" check_interval { seconds: 0 }"), IsOk());
  EXPECT_THAT(parse("token_env: \"CF_TOKEN\" rotation { interval { seconds: 3600 } }"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("c.textproto"), HasSubstr("cloudflare.rotation"),
                             HasSubstr("token_file"))));
  EXPECT_THAT(parse("token_file: \"t\" rotation { interval { nanos: 5000 } }"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("c.textproto"), HasSubstr("cloudflare.rotation.interval"))));
  EXPECT_THAT(parse("token_file: \"t\" rotation { }"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cloudflare.rotation.interval")));
  EXPECT_THAT(parse("token_file: \"t\" check_interval { nanos: 1000 }"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("c.textproto"), HasSubstr("cloudflare.check_interval"))));
  EXPECT_THAT(parse("token_file: \"t\" check_interval { seconds: -5 }"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cloudflare.check_interval")));
}

// A rolled secret reaches only the writer's token file: after a failover the new writer's edge
// read a dead token and could not start. Rotation with a cluster is refused at load.
TEST(ConfigTest, CloudflareRotationIsRefusedInACluster) {
  const std::string cloudflare = R"pb(
    cloudflare {
      enabled: true
      account_id: "0123456789abcdef0123456789abcdef"
      zone_id: "fedcba9876543210fedcba9876543210"
      token_file: "t"
      rotation { interval { seconds: 3600 } })pb";
  const std::string cluster = R"pb(cluster { nats { servers: "nats://127.0.0.1:4222" } })pb";
  EXPECT_THAT(ParseConfig(absl::StrCat("rule_files: \"a\" ", cloudflare, " }"), "c.textproto", "."),
              IsOk());
  EXPECT_THAT(ParseConfig(absl::StrCat("rule_files: \"a\" ", cloudflare, " } ", cluster),
                          "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("c.textproto"), HasSubstr("cloudflare.rotation"),
                             HasSubstr("cluster"), HasSubstr("token file"))));
  EXPECT_THAT(ParseConfig(absl::StrCat("rule_files: \"a\" ", cluster, " ", cloudflare, " }"),
                          "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cloudflare.rotation")));
}

}  // namespace
}  // namespace palisade

namespace palisade {
namespace {

// A listener beyond loopback with nothing saying who may use it, and inputs sharing a name, are
// config: refused at load naming the file (palisaded refused them only once the bouncer API, the
// receivers and the edge were serving). A listener a flag overrides is checked again.
TEST(ConfigTest, ExposedListenersAndSharedInputNamesAreRefusedAtLoad) {
  EXPECT_THAT(ParseConfig("rule_files: \"a\" metrics_listen: \"0.0.0.0:9464\"", "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("c.textproto: "),
                             HasSubstr("metrics_listen 0.0.0.0:9464 is not a loopback address and "
                                       "/metrics is not protected"))));
  const std::string hash(64, 'a');
  EXPECT_THAT(ParseConfig(absl::StrCat("rule_files: \"a\" metrics_listen: \"0.0.0.0:9464\" "
                                       "metrics_auth { token_sha256: \"", hash, "\" }"),
                          "c.textproto", "."),
              IsOk());
  EXPECT_THAT(ParseConfig(R"pb(rule_files: "a"
                               metrics_listen: "[::]:9464"
                               metrics_tls {
                                 cert_file: "c" key_file: "k" client_ca_file: "ca"
                               })pb",
                          "c.textproto", "."),
              IsOk());
  EXPECT_THAT(ParseConfig("rule_files: \"a\" grpc_listen: \"0.0.0.0:50051\"", "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("c.textproto: "),
                             HasSubstr("grpc_listen 0.0.0.0:50051 is not a loopback address and "
                                       "api.clients is empty"))));
  absl::StatusOr<palisade::v1::Config> clients = ParseConfig(
      absl::StrCat("rule_files: \"a\" grpc_listen: \"0.0.0.0:50051\" api { clients { name: \"o\" "
                   "token_sha256: \"", hash, "\" roles: API_ROLE_ADMIN } }"),
      "c.textproto", ".");
  EXPECT_THAT(clients, IsOk());

  // --grpc_listen / --metrics_listen (palisaded's ReadConfig) are checked again.
  absl::StatusOr<palisade::v1::Config> config =
      ParseConfig("rule_files: \"a\"", "c.textproto", ".");
  ASSERT_THAT(config, IsOk());
  EXPECT_THAT(CheckListeners(*config, "c.textproto"), IsOk());
  config->set_grpc_listen("0.0.0.0:0");
  EXPECT_THAT(CheckListeners(*config, "c.textproto"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("grpc_listen 0.0.0.0:0 is not a loopback address")));
  config->set_grpc_listen("127.0.0.1:0");
  config->set_metrics_listen("0.0.0.0:0");
  EXPECT_THAT(CheckListeners(*config, "c.textproto"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("metrics_listen 0.0.0.0:0 is not a loopback address")));
  config->set_metrics_listen("off");
  EXPECT_THAT(CheckListeners(*config, "c.textproto"), IsOk());
  config->set_metrics_listen("9464");
  EXPECT_THAT(CheckListeners(*config, "c.textproto"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not host:port")));

  EXPECT_THAT(ParseConfig(R"pb(rule_files: "a"
                               inputs {
                                 files { name: "web" paths: "/var/log/web" format: "combined" }
                                 journal { name: "web" }
                               })pb",
                          "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("c.textproto: "),
                             HasSubstr("inputs.journal[0] (\"web\"): the name is used by another "
                                       "input"))));
  EXPECT_THAT(ParseConfig(R"pb(rule_files: "a"
                               inputs {
                                 logpush { name: "cf" listen: "127.0.0.1:0" }
                                 logpush { name: "cf" listen: "127.0.0.1:0" }
                               })pb",
                          "c.textproto", "."),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("c.textproto: "),
                             HasSubstr("inputs.logpush \"cf\": the name is used twice"))));
  EXPECT_THAT(ParseConfig(R"pb(rule_files: "a"
                               inputs {
                                 files { name: "web" paths: "/var/log/web" format: "combined" }
                                 journal { name: "ssh" }
                                 logpush { name: "web" listen: "127.0.0.1:0" }
                               })pb",
                          "c.textproto", "."),
              IsOk());
}

// Durations of 0 were taken: a request timeout of 0 is curl's "never", flush and reconcile
// intervals of 0 loop without a pause, a budget window of 0 is no budget, and a budget past
// INT_MAX became a negative limit.
TEST(ConfigTest, CloudflareTimesAndTheBudgetAreBounded) {
  auto parse = [](const std::string& extra) {
    return ParseWithCloudflare(absl::StrCat("token_file: \"t\" ", extra));
  };
  for (const char* ok : {"", "request_timeout { seconds: 1 }", "request_timeout { seconds: 300 }",
                         "flush_interval { nanos: 10000000 }", "flush_interval { seconds: 60 }",
                         "reconcile_interval { nanos: 100000000 }",  // the e2e tests' 300 ms
                         "audit_logs_interval { nanos: 100000000 }",
                         "audit_logs_interval { seconds: 3600 }",
                         "retry_initial_backoff { nanos: 10000000 }",
                         "budget_window { seconds: 1 }",
                         "budget_requests: 2147483647"}) {
    EXPECT_THAT(parse(ok), IsOk()) << ok;
  }
  // Unset: a poll a minute.
  absl::StatusOr<palisade::v1::Config> defaults = parse("");
  ASSERT_THAT(defaults, IsOk());
  EXPECT_EQ(defaults->cloudflare().audit_logs_interval().seconds(), 60);
  const std::pair<const char*, const char*> bad[] = {
      {"request_timeout { }", "cloudflare.request_timeout: 0 is not within 1s..5m"},
      {"request_timeout { seconds: -10 }", "cloudflare.request_timeout: -10s is not within"},
      {"request_timeout { seconds: 301 }", "cloudflare.request_timeout: 5m1s is not within"},
      {"flush_interval { }", "cloudflare.flush_interval: 0 is not within 10ms..1m"},
      {"flush_interval { seconds: 61 }", "cloudflare.flush_interval: 1m1s"},
      {"reconcile_interval { }", "cloudflare.reconcile_interval: 0 is not within 100ms..24h"},
      {"reconcile_interval { seconds: 90000 }", "cloudflare.reconcile_interval: 25h"},
      {"budget_window { }", "cloudflare.budget_window: 0 is not within 1s..24h"},
      {"budget_window { seconds: -300 }", "cloudflare.budget_window: -5m"},
      {"retry_initial_backoff { nanos: 1000000 }",
       "cloudflare.retry_initial_backoff: 1ms is not within 10ms..30s"},
      {"audit_logs_interval { }", "cloudflare.audit_logs_interval: 0 is not within 100ms..1h"},
      {"audit_logs_interval { seconds: 3601 }", "cloudflare.audit_logs_interval: 1h1s"},
      {"budget_requests: 2147483648",
       "cloudflare.budget_requests: 2147483648 is more than 2147483647"},
  };
  for (const auto& [text, message] : bad) {
    EXPECT_THAT(parse(text), StatusIs(absl::StatusCode::kInvalidArgument,
                                      AllOf(HasSubstr("c.textproto"), HasSubstr(message))))
        << text;
  }
}

// A NATS URL may carry a user and password: an error about it shows it redacted.
TEST(ConfigTest, ANatsServerErrorDoesNotShowItsPassword) {
  absl::StatusOr<palisade::v1::Config> config = ParseConfig(
      R"pb(rule_files: "a"
           cluster {
             nats {
               servers: "nats://palisade:hunter2@nats-1:4222,nats://palisade:hunter2@nats-2:4222"
             }
           })pb",
      "c.textproto", ".");
  EXPECT_THAT(config, StatusIs(absl::StatusCode::kInvalidArgument,
                               AllOf(HasSubstr("cluster.nats.servers[0]"),
                                     ::testing::Not(HasSubstr("hunter2")))));
}

// Which credential the edge uses is config: a refused combination was found only by
// Edge::Start, which in a cluster runs once the node takes the writer lease.
TEST(ConfigTest, CloudflareCredentialCombinationsAreCheckedAtLoad) {
  const auto& parse = ParseWithCloudflare;
  EXPECT_THAT(parse("allow_global_api_key: true email: \"ops@example.com\" api_key_file: \"k\""),
              IsOk());
  const std::pair<const char*, const char*> bad[] = {
      {"email: \"ops@example.com\" api_key_file: \"k\"",
       "cloudflare.allow_global_api_key: the Global API Key (email + api_key_file) is refused"},
      {"token_file: \"t\" email: \"ops@example.com\"", "cloudflare.allow_global_api_key"},
      {"allow_global_api_key: true api_key_file: \"k\"",
       "cloudflare.email: the Global API Key needs both email and api_key_file"},
      {"allow_global_api_key: true token_file: \"t\" email: \"ops@example.com\"",
       "cloudflare.api_key_file: the Global API Key needs both email and api_key_file"},
      {"allow_global_api_key: true token_env: \"CF\" email: \"ops@example.com\" "
       "api_key_file: \"k\"",
       "cloudflare.token_env: set an API token or the Global API Key, not both"},
      {"allow_global_api_key: true token_file: \"t\" email: \"ops@example.com\" "
       "api_key_file: \"k\"",
       "cloudflare.token_file: set an API token or the Global API Key, not both"},
  };
  for (const auto& [text, message] : bad) {
    EXPECT_THAT(parse(text), StatusIs(absl::StatusCode::kInvalidArgument,
                                      AllOf(HasSubstr("c.textproto"), HasSubstr(message))))
        << text;
  }
}

// The token typed where its file or variable goes (token_file, token_env, api_key_file, a Logpush
// secret_file): every later message ("token file PATH cannot be read", "environment variable NAME
// is not set") would carry it to the log. Refused at load, naming the field, never the value.
TEST(ConfigTest, ASecretWrittenWhereItsFileOrVariableGoesIsRefusedWithoutShowingIt) {
  const std::string cfut = "cfut_Q7pXk2Lm9RtZ0wVc3NbY8aHs1JdE6gUi5oKeT4rF";
  const std::string classic = "Xk3-9fQ2_vLm8RtZ0pWc7NbY4aHs1JdE6gUi5oKe";  // 40, no prefix
  const std::string global_key = "1e4c9a07b3d2f58e6a0c1b9d7f3e2a5c4b8d6";   // 37 hex
  const struct {
    std::string fields;
    const char* field;
    std::string secret;
  } bad[] = {
      {absl::StrCat("token_env: \"", cfut, "\""), "cloudflare.token_env", cfut},
      {absl::StrCat("token_env: \"", classic, "\""), "cloudflare.token_env", classic},
      {"token_env: \"CF TOKEN s3cr3tValue\"", "cloudflare.token_env", "s3cr3tValue"},
      {absl::StrCat("token_file: \"", cfut, "\""), "cloudflare.token_file", cfut},
      {absl::StrCat("token_file: \"", classic, "\""), "cloudflare.token_file", classic},
      {absl::StrCat("token_file: \"/run/secrets/", cfut, "\""), "cloudflare.token_file", cfut},
      {absl::StrCat("allow_global_api_key: true email: \"ops@example.com\" api_key_file: \"",
                    global_key, "\""),
       "cloudflare.api_key_file", global_key},
  };
  for (const auto& [fields, field, secret] : bad) {
    absl::StatusOr<palisade::v1::Config> parsed = ParseWithCloudflare(fields);
    EXPECT_THAT(parsed, StatusIs(absl::StatusCode::kInvalidArgument,
                                 AllOf(HasSubstr("c.textproto"), HasSubstr(field))))
        << fields;
    EXPECT_THAT(std::string(parsed.status().message()), Not(HasSubstr(secret))) << fields;
  }
  // Also with the block off: the value is in the config file all the same.
  absl::StatusOr<palisade::v1::Config> off = ParseConfig(
      absl::StrCat("rule_files: \"a\" cloudflare { token_file: \"", cfut, "\" }"), "c.textproto",
      "/etc/p");
  EXPECT_THAT(off, StatusIs(absl::StatusCode::kInvalidArgument,
                            HasSubstr("cloudflare.token_file")));
  EXPECT_THAT(std::string(off.status().message()), Not(HasSubstr(cfut)));
  // The Logpush header value itself, or a token, where its file goes.
  for (const std::string& value : {std::string("Bearer s3cr3t-8c6b1f0e"), cfut}) {
    absl::StatusOr<palisade::v1::Config> logpush = ParseConfig(
        absl::StrCat("rule_files: \"a\" inputs { logpush { name: \"cf\" listen: \"127.0.0.1:0\" "
                     "format: \"raw\" secret_file: \"",
                     value, "\" } }"),
        "c.textproto", "/etc/p");
    EXPECT_THAT(logpush, StatusIs(absl::StatusCode::kInvalidArgument,
                                  AllOf(HasSubstr("c.textproto"),
                                        HasSubstr("inputs.logpush \"cf\": secret_file"))))
        << value;
    EXPECT_THAT(std::string(logpush.status().message()),
                AllOf(Not(HasSubstr("s3cr3t")), Not(HasSubstr(cfut))));
  }
  // A base64 secret (openssl rand -base64 32) where the Logpush secret's file goes, and a token
  // where the NATS credentials file goes.
  const std::string base64 = "q8Zb0W1x+Lk4/Rt7Yp2N9vHc3Jm6Fd5Gs0Ea1Ui8Ko4=";
  absl::StatusOr<palisade::v1::Config> b64 = ParseConfig(
      absl::StrCat("rule_files: \"a\" inputs { logpush { name: \"cf\" listen: \"127.0.0.1:0\" "
                   "format: \"raw\" secret_file: \"",
                   base64, "\" } }"),
      "c.textproto", "/etc/p");
  EXPECT_THAT(b64, StatusIs(absl::StatusCode::kInvalidArgument,
                            HasSubstr("inputs.logpush \"cf\": secret_file")));
  EXPECT_THAT(std::string(b64.status().message()), Not(HasSubstr("q8Zb0W1x")));
  absl::StatusOr<palisade::v1::Config> nats = ParseConfig(
      absl::StrCat("rule_files: \"a\" cluster { nats { credentials_file: \"", classic, "\" } }"),
      "c.textproto", "/etc/p");
  EXPECT_THAT(nats, StatusIs(absl::StatusCode::kInvalidArgument,
                             HasSubstr("cluster.nats.credentials_file")));
  EXPECT_THAT(std::string(nats.status().message()), Not(HasSubstr(classic)));
  // Names and paths as they are meant: taken.
  EXPECT_THAT(ParseWithCloudflare("token_env: \"CLOUDFLARE_API_TOKEN\""), IsOk());
  EXPECT_THAT(ParseWithCloudflare("token_env: \"_cf_token_2\""), IsOk());
  EXPECT_THAT(ParseWithCloudflare("token_file: \"/run/credentials/palisaded.service/cf-token\""),
              IsOk());
  EXPECT_THAT(ParseWithCloudflare("token_file: \"cloudflare_api_token_production_zone_2\""),
              IsOk());
}

// A secret the text parser stops at: typed unquoted where its file goes ("Expected string, got:
// X"), or on a line of its own ("has no field named \"X\""). The parser's message quotes the
// token and reaches the log and the Admin reload reply before CheckSecretReference runs.
TEST(ConfigTest, AParseErrorDoesNotQuoteASecretItStoppedAt) {
  const std::string cfut = "cfut_Q7pXk2Lm9RtZ0wVc3NbY8aHs1JdE6gUi5oKeT4rF";
  const std::string classic = "Xk39fQ2_vLm8RtZ0pWc7NbY4aHs1JdE6gUi5oKeA";  // 40, no prefix
  const std::string global_key = "e1c9a07b3d2f58e6a0c1b9d7f3e2a5c4b8d61";   // 37 hex
  const std::string base64 = "q8Zb0W1x+Lk4/Rt7Yp2N9vHc3Jm6Fd5Gs0Ea1Ui8Ko4=";
  for (const std::string& secret : {cfut, classic, global_key, base64}) {
    for (const std::string& text :
         {absl::StrCat("rule_files: \"a\" cloudflare { token_file: ", secret, " }"),
          absl::StrCat("rule_files: \"a\" cloudflare { api_key_file: ", secret, " }"),
          absl::StrCat("rule_files: \"a\"\ncloudflare {\n  token_file: \"t\"\n  ", secret,
                       "\n}\n"),
          absl::StrCat("rule_files: \"a\" inputs { logpush { name: \"cf\" secret_file: ", secret,
                       " } }")}) {
      absl::StatusOr<palisade::v1::Config> parsed = ParseConfig(text, "c.textproto", "/etc/p");
      EXPECT_THAT(parsed, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("c.textproto:")))
          << text;
      const std::string message(parsed.status().message());
      // Neither the whole secret nor the part before a '+', '/' or '='.
      EXPECT_THAT(message, AllOf(Not(HasSubstr(secret)), Not(HasSubstr(secret.substr(0, 12)))))
          << text;
    }
  }
  // What the parser says of a plain mistake is kept whole: the operator needs the name.
  EXPECT_THAT(ParseConfig("rule_files: \"a\" cloudflare { token_fil: \"t\" }", "c.textproto",
                          "/etc/p"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"token_fil\"")));
  EXPECT_THAT(ParseConfig("rule_files: \"a\" cloudflare { enabled: ture }", "c.textproto",
                          "/etc/p"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ture")));
}

// Plain http carries the token in clear: only to a host that is loopback, read from the URL's
// authority (a prefix match let "http://localhost.corp.example" and "http://127.0.0.1@proxy"
// through).
TEST(ConfigTest, CloudflarePlainHttpApiBaseMustBeLoopback) {
  auto parse = [](const std::string& base) {
    return ParseWithCloudflare(absl::StrCat("token_file: \"t\" api_base: \"", base, "\""));
  };
  for (const char* ok :
       {"https://api.cloudflare.com/client/v4", "http://127.0.0.1:8787/client/v4",
        "http://127.9.0.1/client/v4", "http://localhost:8787/client/v4", "http://localhost",
        "http://[::1]:8787/client/v4", "http://LOCALHOST:8787"}) {
    EXPECT_THAT(parse(ok), IsOk()) << ok;
  }
  for (const char* bad :
       {"http://localhost.corp.example:8787/client/v4", "http://127.0.0.1@cf-proxy.example/v4",
        "http://127.0.0.1.nip.example/v4", "http://[::1].example/v4", "http://10.0.0.1:8787/v4",
        "http://[::1]@cf-proxy.example/v4", "https://user:pw@api.cloudflare.com/client/v4",
        "http://127.0.0.1:8787@cf-proxy.example/v4", "http://", "ftp://127.0.0.1/v4",
        "http://127.0.0.1:notaport/v4"}) {
    EXPECT_THAT(parse(bad), StatusIs(absl::StatusCode::kInvalidArgument,
                                     AllOf(HasSubstr("c.textproto"),
                                           HasSubstr("cloudflare.api_base"))))
        << bad;
  }
}

// Relative paths in inputs are resolved from the config's directory, as deploy/ says of every
// path (they were taken from palisaded's working directory).
TEST(ConfigTest, InputPathsAreResolvedFromTheConfigsDirectory) {
  absl::StatusOr<palisade::v1::Config> config = ParseConfig(
      R"pb(rule_files: "a"
           inputs {
             syslog {
               name: "s"
               tls_listen: "127.0.0.1:0"
               tls_cert_file: "pki/s.pem"
               tls_key_file: "pki/s.key"
               tls_client_ca_file: "pki/ca.pem"
             }
             logpush {
               name: "cf"
               listen: "127.0.0.1:0"
               secret_file: "secret"
               tls_cert_file: "/abs/l.pem"
               tls_key_file: "l.key"
             }
             journal { name: "remote" directory: "journal/remote" }
             journal { name: "old" files: "old/system.journal" files: "/abs/user.journal" }
           })pb",
      "c.textproto", "/etc/p");
  ASSERT_THAT(config, IsOk());
  const palisade::v1::InputsConfig& in = config->inputs();
  EXPECT_EQ(in.syslog(0).tls_cert_file(), "/etc/p/pki/s.pem");
  EXPECT_EQ(in.syslog(0).tls_key_file(), "/etc/p/pki/s.key");
  EXPECT_EQ(in.syslog(0).tls_client_ca_file(), "/etc/p/pki/ca.pem");
  EXPECT_EQ(in.logpush(0).secret_file(), "/etc/p/secret");
  EXPECT_EQ(in.logpush(0).tls_cert_file(), "/abs/l.pem");
  EXPECT_EQ(in.logpush(0).tls_key_file(), "/etc/p/l.key");
  EXPECT_EQ(in.journal(0).directory(), "/etc/p/journal/remote");
  EXPECT_EQ(in.journal(1).files(0), "/etc/p/old/system.journal");
  EXPECT_EQ(in.journal(1).files(1), "/abs/user.journal");
  // Unset fields stay unset.
  EXPECT_EQ(in.journal(0).files_size(), 0);
  EXPECT_TRUE(in.journal(1).directory().empty());
}

}  // namespace
}  // namespace palisade
