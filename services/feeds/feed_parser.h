// Parsers for threat-feed formats: plain IP/CIDR lists, Spamhaus DROP/EDROP (text and JSON
// lines), FireHOL netsets, CSV exports (e.g. AbuseIPDB) and STIX 2.1 bundles.
//
// Every parser reads the whole content in one pass and never gives up on a bad line: each one
// that cannot be used is rejected with its line number and a reason, and the rest is kept. A
// status error is returned only when nothing can be read at all (a STIX bundle that is not JSON,
// a CSV whose header lacks the configured column).
#ifndef PALISADE_SERVICES_FEEDS_FEED_PARSER_H_
#define PALISADE_SERVICES_FEEDS_FEED_PARSER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "palisade/v1/config.pb.h"
#include "services/common/ip.h"

namespace palisade {

struct Indicator {
  Cidr cidr;
  // Unix seconds; 0 when the feed does not say.
  int64_t valid_until = 0;
  uint32_t confidence = 0;  // 0..100; 0 when the feed does not say
  // SBL id, STIX indicator id + labels, …: UTF-8, control bytes and stray bytes as "\xNN",
  // at most 256 bytes.
  std::string ref;
};

struct FeedRejection {
  uint32_t line = 0;  // 1-based line (STIX: 1-based index of the object in "objects")
  std::string text;   // the line, cut to 200 bytes (UTF-8, as `ref` is)
  std::string reason;
};

struct ParsedFeed {
  std::vector<Indicator> indicators;
  uint64_t rejected = 0;
  // The first kMaxRejections rejections in full; the rest are only counted.
  std::vector<FeedRejection> rejections;
  // Entries that are not indicators (STIX objects of other types, Spamhaus metadata lines).
  uint64_t ignored = 0;
  static constexpr size_t kMaxRejections = 1000;
};

struct FeedParseOptions {
  // CSV: header names (matched case-insensitively) and the least confidence kept.
  std::string csv_column = "ip";
  std::string csv_confidence_column;
  uint32_t min_confidence = 0;
  // The widest range kept (a prefix length; 0: any): a wider one is rejected, saying so.
  // A feed's are its config's (FeedConfig.min_prefix_v4/v6), by default these below.
  int min_prefix_v4 = 0;
  int min_prefix_v6 = 0;
  static constexpr int kDefaultMinPrefixV4 = 12;
  static constexpr int kDefaultMinPrefixV6 = 24;
  // STIX indicators whose valid_until is at or before `now` are rejected as expired, and those
  // whose valid_from is after it as not yet valid.
  absl::Time now = absl::InfinitePast();
};

absl::StatusOr<ParsedFeed> ParseFeed(palisade::v1::FeedFormat format, absl::string_view content,
                                     const FeedParseOptions& options);

// "plain", "spamhaus", "spamhaus-json", "firehol", "csv", "stix" (also the enum names).
absl::StatusOr<palisade::v1::FeedFormat> ParseFeedFormatName(absl::string_view name);

}  // namespace palisade

#endif  // PALISADE_SERVICES_FEEDS_FEED_PARSER_H_
