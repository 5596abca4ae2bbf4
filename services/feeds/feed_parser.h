// Parsers for threat-feed formats: plain IP/CIDR lists, Spamhaus DROP/EDROP (text and JSON
// lines), FireHOL netsets, CSV exports (e.g. AbuseIPDB) and STIX 2.1 bundles.
//
// Every parser reads the whole content in one pass and never gives up on a bad line: each one
// that cannot be used is rejected with its line number and a reason, and the rest is kept. A
// status error is returned only when nothing can be read at all (a STIX bundle that is not JSON,
// a CSV whose header lacks the configured column), or when what the parse would hold passes
// FeedParseOptions::max_parsed_bytes (kResourceExhausted: the feed is refused whole).
//
// The content is hostile (a feed server, or whoever sits between us and it, writes it): what a
// parse holds is bounded in bytes, not only the content's size. A STIX bundle is streamed (SAX):
// only the members of one element of "objects" that an indicator needs are built at a time.
//
// Thread-safety: ParseFeed is a pure function; call it from any thread.
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
  // What the indicators and rejections hold in memory (their vectors' capacity and their
  // strings' heap blocks), as accounted against FeedParseOptions::max_parsed_bytes.
  uint64_t bytes = 0;
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

  // What a parse may hold, in bytes: the indicators' and rejections' vectors (by capacity) and
  // their strings' heap blocks, accounted as each is added. Past it the feed is refused whole
  // with kResourceExhausted naming the line (STIX: the object) where the budget ran out, and the
  // feed manager keeps the version it has. A feed's is its config's (FeedConfig.max_parsed_bytes),
  // by default the one below. An indicator costs 72 bytes plus its reference's heap block when
  // that passes 15 bytes (up to 256 + 17), so the densest list the fetcher lets through (64 MiB
  // of "1.2.3.4\n", 8.4 M entries) would hold ~600 MiB. The default, 4x the
  // fetch cap (FetchRequest::max_bytes, 64 MiB), keeps 3.7 M bare addresses or 770,000 with
  // 256-byte references: more than the largest public lists (FireHOL level 4, ipsum: a few
  // 100,000), and what the feed manager then builds from them is bounded in proportion.
  uint64_t max_parsed_bytes = kDefaultMaxParsedBytes;
  static constexpr uint64_t kDefaultMaxParsedBytes = 256ull << 20;
  // STIX: what one element of "objects" may hold while it is built (the members an indicator
  // needs, estimated as nlohmann-json holds them: 16 bytes a value, its string or container, a
  // key and its map node). A real indicator holds ~1 KiB; a pattern ORing 10,000 addresses
  // ~400 KiB. An element past it is rejected naming its index; the rest of the bundle is read.
  size_t max_stix_object_bytes = kDefaultMaxStixObjectBytes;
  static constexpr size_t kDefaultMaxStixObjectBytes = 1 << 20;
  // STIX: the deepest nesting read, the bundle being 1, "objects" 2 and each object 3 (real
  // objects reach 6). An element of "objects" nesting deeper is rejected naming its index; a
  // bundle nesting deeper elsewhere is refused whole (kInvalidArgument).
  int max_stix_depth = kDefaultMaxStixDepth;
  static constexpr int kDefaultMaxStixDepth = 32;
};

absl::StatusOr<ParsedFeed> ParseFeed(palisade::v1::FeedFormat format, absl::string_view content,
                                     const FeedParseOptions& options);

// What one indicator with reference `ref` is charged against max_parsed_bytes: its slot in the
// vector and its reference's heap block (none within the small-string buffer). The feed manager
// bounds what ADD pushes accumulate in a feed with the same estimate.
uint64_t IndicatorBytes(const std::string& ref);

// "plain", "spamhaus", "spamhaus-json", "firehol", "csv", "stix" (also the enum names).
absl::StatusOr<palisade::v1::FeedFormat> ParseFeedFormatName(absl::string_view name);

}  // namespace palisade

#endif  // PALISADE_SERVICES_FEEDS_FEED_PARSER_H_
