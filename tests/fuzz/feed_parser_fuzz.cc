// libFuzzer target: every threat-feed parser, and the feed index built from what they accept,
// on any bytes. Must not crash, hang or throw; every accepted indicator must be found again by
// a lookup of its own base address.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "services/feeds/feed_parser.h"
#include "services/feeds/feed_set.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view content(reinterpret_cast<const char*>(data), size);
  palisade::FeedParseOptions options;
  options.csv_column = "ip";
  options.csv_confidence_column = "score";
  options.min_confidence = 10;
  options.now = absl::FromUnixSeconds(1'795'000'000);
  for (auto format :
       {palisade::v1::FEED_FORMAT_PLAIN, palisade::v1::FEED_FORMAT_SPAMHAUS,
        palisade::v1::FEED_FORMAT_SPAMHAUS_JSON, palisade::v1::FEED_FORMAT_FIREHOL,
        palisade::v1::FEED_FORMAT_CSV, palisade::v1::FEED_FORMAT_STIX}) {
    absl::StatusOr<palisade::ParsedFeed> parsed = palisade::ParseFeed(format, content, options);
    if (!parsed.ok()) continue;
    std::vector<palisade::FeedEntry> entries;
    for (const palisade::Indicator& i : parsed->indicators) entries.push_back({i.cidr});
    palisade::FeedSet set(entries);
    for (const palisade::FeedEntry& e : entries) {
      if (set.Lookup(e.cidr.base()) == nullptr) __builtin_trap();
    }
    (void)set.Merged();
  }
  return 0;
}
