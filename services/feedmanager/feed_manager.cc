#include "services/feedmanager/feed_manager.h"

#include <algorithm>
#include <iostream>
#include <iterator>
#include <limits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "palisade/v1/state.pb.h"
#include "services/common/proto_time.h"
#include "services/feeds/fetcher.h"

namespace palisade {
namespace {

using palisade::v1::FeedConfig;
using palisade::v1::FeedPushMode;
using palisade::v1::PushFeedResponse;

constexpr absl::Duration kDefaultInterval = absl::Hours(1);
constexpr absl::Duration kDefaultTimeout = absl::Seconds(30);
constexpr absl::Duration kDefaultTtl = absl::Hours(24 * 7);
constexpr uint64_t kDefaultMaxBytes = 64ull << 20;
constexpr double kDefaultKeepRatio = 0.1;
constexpr double kDefaultGrowthRatio = 10;
// The growth guard holds no version covering fewer than this many addresses (IPv6: /64
// networks) in a family: a small feed may grow freely, what is held is a jump to large space.
constexpr uint64_t kGrowthFloor = 65536;
// ... and judges growth against the least the feed covered within this many seconds: a day's
// growth is bounded by max_growth_ratio.
constexpr int64_t kGrowthWindow = 24 * 3600;
// ... through at most this many samples (one an hour): more read back (a version from the
// cluster's KV bucket, which is only semi-trusted) are not kept.
constexpr int kMaxGuardSamples = 25;
constexpr size_t kMaxRejectionsReturned = 100;
// A version the store refused is written again a second after, then backing off (doubling) to
// this: each write is a whole copy of the feed, serialized.
constexpr absl::Duration kMaxSaveBackoff = absl::Minutes(5);
// Tick sweeps expired entries out when the earliest expiry, rounded up to this many seconds, has
// passed.
constexpr int64_t kSweepGrid = 60;
// Feeds.Get's reply: at most this many bytes of entries (each framed by a tag and a length).
constexpr size_t kMaxGetReplyBytes = size_t{3} << 20;
constexpr size_t kEntryFraming = 6;

absl::Duration Or(const google::protobuf::Duration& d, absl::Duration fallback) {
  absl::Duration v = FromProtoDuration(d);
  return v > absl::ZeroDuration() ? v : fallback;
}

absl::Duration TtlOf(const FeedConfig& c) { return Or(c.entry_ttl(), kDefaultTtl); }

// The shrink guard's ratio: 0 (unset) is the default; a negative one (the config takes -1)
// turns the guard off.
double KeepRatioOf(const FeedConfig& c) {
  return c.min_keep_ratio() > 0 ? c.min_keep_ratio()
                                : (c.min_keep_ratio() < 0 ? 0 : kDefaultKeepRatio);
}

// The growth guard's ratio: 0 (unset) is the default; a negative one (the config takes -1)
// turns the guard off.
double GrowthRatioOf(const FeedConfig& c) {
  return c.max_growth_ratio() > 0 ? c.max_growth_ratio()
                                  : (c.max_growth_ratio() < 0 ? 0 : kDefaultGrowthRatio);
}

// The widest range the feed may list, as a prefix length.
int MinPrefixOf(const FeedConfig& c, bool v4) {
  if (v4) return c.min_prefix_v4() > 0 ? c.min_prefix_v4() : FeedParseOptions::kDefaultMinPrefixV4;
  return c.min_prefix_v6() > 0 ? c.min_prefix_v6() : FeedParseOptions::kDefaultMinPrefixV6;
}

// What a version's parse may hold, and what ADD pushes may accumulate in the feed.
uint64_t MaxParsedBytesOf(const FeedConfig& c) {
  return c.max_parsed_bytes() > 0 ? c.max_parsed_bytes() : FeedParseOptions::kDefaultMaxParsedBytes;
}

// A count in a PushFeedResponse's uint32 fields: past their range it says the most they hold,
// rather than wrapping to a small number.
uint32_t Clamp32(uint64_t n) {
  return static_cast<uint32_t>(std::min<uint64_t>(n, std::numeric_limits<uint32_t>::max()));
}

// A 304 makes a new version (a whole copy, stored and, in a cluster, published) only when it
// moves the entries' expiry by at least this much: about once per max(interval, 1 h), not at
// each pull. An entry a 304 does not renew still has more than entry_ttl less the step to live,
// and that is what it has should the server go dark right after: the step is at most an eighth
// of the ttl (an outage leaves the entries 7/8 of it), and at most half of what the ttl has
// beyond the interval (the next pull comes before they lapse). A ttl no longer than the
// interval renews at each pull (its entries lapse between pulls anyway).
absl::Duration RenewalStep(absl::Duration interval, absl::Duration ttl) {
  return std::max(absl::ZeroDuration(), std::min({std::max(interval, absl::Hours(1)),
                                                  (ttl - interval) / 2, ttl / 8}));
}

bool TooWide(const Cidr& cidr, const FeedConfig& c) {
  return cidr.prefix_length() < MinPrefixOf(c, cidr.base().is_v4());
}

std::string SnapshotName(absl::string_view feed) { return absl::StrCat("feed:", feed); }

void Log(absl::string_view message) { std::cerr << "palisaded: feeds: " << message << std::endl; }

// Entries of `a` whose CIDR is not in `b` (both sorted by CidrLess).
size_t CountMissing(const std::vector<FeedEntry>& a, const std::vector<FeedEntry>& b) {
  size_t missing = 0, j = 0;
  for (const FeedEntry& e : a) {
    while (j < b.size() && CidrLess(b[j].cidr, e.cidr)) ++j;
    if (j == b.size() || CidrLess(e.cidr, b[j].cidr)) ++missing;
  }
  return missing;
}

prometheus::Family<prometheus::Counter>& EdgeChanges(prometheus::Registry& registry) {
  return prometheus::BuildCounter()
      .Name("palisade_feed_edge_changes_total")
      .Help("Feed ranges added to or removed from the edge set by a sync.")
      .Register(registry);
}

}  // namespace

FeedManager::FeedManager(FeedManagerOptions options, Clock& clock, prometheus::Registry& metrics,
                         DecisionTable* table, Store* store)
    : options_(std::move(options)),
      clock_(clock),
      table_(table),
      store_(store),
      edge_entries_(prometheus::BuildGauge()
                        .Name("palisade_feed_edge_entries")
                        .Help("Merged feed ranges decided for the edge (origin feed).")
                        .Register(metrics)
                        .Add({})),
      edge_added_(EdgeChanges(metrics).Add({{"change", "added"}})),
      edge_removed_(EdgeChanges(metrics).Add({{"change", "removed"}})),
      edge_held_(prometheus::BuildCounter()
                     .Name("palisade_feed_edge_held_total")
                     .Help("Edge syncs not done because the union exceeded the edge cap.")
                     .Register(metrics)
                     .Add({})),
      edge_syncs_(prometheus::BuildCounter()
                      .Name("palisade_feed_edge_syncs_total")
                      .Help("Edge syncs run (DecisionTable::SyncFeed calls), held ones included.")
                      .Register(metrics)
                      .Add({})) {
  {
    absl::MutexLock lock(&never_ban_mu_);
    never_ban_ = std::make_shared<const CidrSet>(options_.never_ban);
  }
  auto& entries = prometheus::BuildGauge()
                      .Name("palisade_feed_entries")
                      .Help("Entries in the feed's applied version.")
                      .Register(metrics);
  auto& version = prometheus::BuildGauge()
                      .Name("palisade_feed_version")
                      .Help("The feed's applied version number (0: none yet).")
                      .Register(metrics);
  auto& success = prometheus::BuildGauge()
                      .Name("palisade_feed_last_success_timestamp_seconds")
                      .Help("When the feed last fetched or was pushed successfully.")
                      .Register(metrics);
  auto& age = prometheus::BuildGauge()
                  .Name("palisade_feed_age_seconds")
                  .Help("Seconds since the feed's last success (-1: never).")
                  .Register(metrics);
  // With the age, what PalisadeFeedStale judges a feed by (a stalled pull has no error).
  auto& interval = prometheus::BuildGauge()
                       .Name("palisade_feed_interval_seconds")
                       .Help("The feed's pull interval in seconds (0: a pushed feed).")
                       .Register(metrics);
  auto& errors = prometheus::BuildCounter()
                     .Name("palisade_feed_fetch_errors_total")
                     .Help("Versions a feed did not get (it keeps the one it has), by reason: "
                           "fetch (the pull failed), unreadable (the pushed or pulled content "
                           "could not be read), max_parsed_bytes (its parse passed the feed's "
                           "max_parsed_bytes, or an ADD push would grow the feed past it).")
                     .Register(metrics);
  auto& rejected = prometheus::BuildCounter()
                       .Name("palisade_feed_rejected_total")
                       .Help("Feed lines or objects rejected by the parser.")
                       .Register(metrics);
  auto& never = prometheus::BuildCounter()
                    .Name("palisade_feed_never_ban_total")
                    .Help("Indicators dropped because they touch the allowlist/never-ban set.")
                    .Register(metrics);
  auto& held = prometheus::BuildCounter()
                   .Name("palisade_feed_held_total")
                   .Help("Versions held by the shrink or the growth guard.")
                   .Register(metrics);
  auto& store_errors = prometheus::BuildCounter()
                           .Name("palisade_feed_store_errors_total")
                           .Help("Feed versions the store refused (each is written again, "
                                 "backing off from a second to 5 minutes, until it takes it).")
                           .Register(metrics);
  for (const FeedConfig& config : options_.feeds) {
    Feed feed;
    feed.config = config;
    const std::map<std::string, std::string> label = {{"feed", config.name()}};
    feed.entries_gauge = &entries.Add(label);
    feed.version_gauge = &version.Add(label);
    feed.success_gauge = &success.Add(label);
    feed.age_gauge = &age.Add(label);
    feed.age_gauge->Set(-1);
    // The config is fixed for the manager's life: set once.
    const absl::Duration pull =
        config.url().empty() ? absl::ZeroDuration() : Or(config.interval(), kDefaultInterval);
    interval.Add(label).Set(absl::ToDoubleSeconds(pull));
    feed.fetch_failed = &errors.Add({{"feed", config.name()}, {"reason", "fetch"}});
    feed.unreadable = &errors.Add({{"feed", config.name()}, {"reason", "unreadable"}});
    feed.over_max_parsed_bytes =
        &errors.Add({{"feed", config.name()}, {"reason", "max_parsed_bytes"}});
    feed.rejected_counter = &rejected.Add(label);
    feed.never_ban_counter = &never.Add(label);
    feed.held_counter = &held.Add(label);
    feed.store_errors = &store_errors.Add(label);
    feeds_.emplace(config.name(), std::move(feed));
    // Whoever sits on the path of a plain http:// pull writes this feed, and so the edge; the
    // guards bound one version, not a stream of them.
    if (config.to_edge() && absl::StartsWithIgnoreCase(config.url(), "http://")) {
      Log(absl::StrCat(config.name(), ": a to_edge feed pulled over plain http:// (",
                       RedactUrl(config.url()),
                       "): anyone on the path can change what reaches the edge; use https://"));
    }
  }
}

FeedManager::~FeedManager() { Stop(); }

FeedManager::Feed* FeedManager::FindLocked(absl::string_view name) {
  auto it = feeds_.find(name);
  return it == feeds_.end() ? nullptr : &it->second;
}

FeedParseOptions FeedManager::ParseOptionsFor(const FeedConfig& config) const {
  FeedParseOptions p;
  if (!config.csv_column().empty()) p.csv_column = config.csv_column();
  p.csv_confidence_column = config.csv_confidence_column();
  p.min_confidence = config.min_confidence();
  p.min_prefix_v4 = MinPrefixOf(config, /*v4=*/true);
  p.min_prefix_v6 = MinPrefixOf(config, /*v4=*/false);
  p.max_parsed_bytes = MaxParsedBytesOf(config);
  p.now = clock_.TimeNow();
  return p;
}

absl::Status FeedManager::Restore() {
  if (store_ == nullptr) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  for (auto& [name, feed] : feeds_) {
    absl::StatusOr<std::string> blob = store_->LoadSnapshot(SnapshotName(name));
    if (!blob.ok()) return blob.status();
    if (blob->empty()) continue;
    palisade::v1::FeedState state;
    if (!state.ParseFromString(*blob)) {
      return absl::DataLossError(absl::StrCat("feed ", name, ": stored version is unreadable"));
    }
    if (state.has_guard()) {
      ReadGuard(state.guard(), absl::ToUnixSeconds(clock_.TimeNow()), feed);
    }
    // Stored before the baseline was (an upgrade): the version as stored is the baseline,
    // expired entries included.
    std::vector<FeedEntry> stored;
    std::vector<FeedEntry> entries;
    entries.reserve(state.entries_size());
    uint64_t never_ban = 0, too_wide = 0, expired = 0;
    const std::shared_ptr<const CidrSet> never = NeverBan();
    const int64_t now = absl::ToUnixSeconds(clock_.TimeNow());
    for (const auto& e : state.entries()) {
      absl::StatusOr<Cidr> cidr = Cidr::Parse(e.cidr());
      if (!cidr.ok()) continue;
      if (!state.has_guard()) stored.push_back(FeedEntry{*cidr});
      // Entries that ended while the daemon was down leave now, as the sweep would have taken
      // them (Start's edge sync comes before the first sweep).
      if (e.expiry() <= now) {
        ++expired;
        continue;
      }
      // The never-ban set may have grown since the version was stored (an address allowlisted,
      // then a restart): it is judged again, as a new version would be; so is a range's width
      // (the feed's minimum prefix may have been raised).
      if (TouchesNeverBan(*cidr, *never)) {
        ++never_ban;
        continue;
      }
      if (TooWide(*cidr, feed.config)) {
        ++too_wide;
        continue;
      }
      entries.push_back(
          {*cidr, e.first_seen(), e.last_seen(), e.expiry(), e.confidence(), e.ref()});
    }
    feed.never_ban = never_ban;
    feed.never_ban_counter->Increment(static_cast<double>(never_ban));
    feed.version = state.version();
    feed.etag = state.etag();
    feed.last_modified = state.last_modified();
    feed.last_success = absl::FromUnixSeconds(state.last_success());
    feed.success_gauge->Set(static_cast<double>(state.last_success()));
    feed.ttl_expiry_known = false;
    // A restarted daemon fetches at once rather than waiting a whole interval.
    feed.next_fetch = clock_.TimeNow();
    if (!stored.empty()) {
      const FeedSet was(std::move(stored));
      feed.guarded = true;
      feed.guard_entries = was.size();
      feed.guard_covered = was.Covered();
    } else if (!state.has_guard()) {
      // Nothing to judge a new version against (what the feed had before is not known): said,
      // since its next version applies whatever it covers.
      Log(absl::StrCat(name, ": the version stored (from before the guards' baseline was stored "
                             "with it) is empty: the shrink and growth guards do not judge the "
                             "feed's next version, which becomes their baseline"));
    }
    // What the never-ban set or the minimum prefix now holds out is no version's to hold: the
    // baseline loses it too (an allowlisted range over most of the feed would otherwise hold
    // the next whole version of the rest as a shrink until forced).
    if (feed.guarded) {
      feed.guard_entries -= std::min<uint64_t>(feed.guard_entries, never_ban + too_wide);
    }
    PublishLocked(feed, std::make_shared<const FeedSet>(std::move(entries)));
    Log(absl::StrCat(name, ": restored version ", feed.version, ", ", feed.current->size(),
                     " entries",
                     too_wide > 0 ? absl::StrCat(" (", too_wide,
                                                 " ranges wider than its minimum prefix left out)")
                                  : "",
                     expired > 0 ? absl::StrCat(" (", expired, " past their expiry left out)")
                                 : ""));
  }
  return absl::OkStatus();
}

void FeedManager::PublishLocked(Feed& feed, std::shared_ptr<const FeedSet> set) {
  feed.min_expiry = 0;
  feed.bytes = 0;
  for (const FeedEntry& e : set->entries()) {
    if (feed.min_expiry == 0 || e.expiry < feed.min_expiry) feed.min_expiry = e.expiry;
    feed.bytes += IndicatorBytes(e.ref);
  }
  feed.covered = set->Covered();
  feed.current = set;
  feed.entries_gauge->Set(static_cast<double>(set->size()));
  feed.version_gauge->Set(static_cast<double>(feed.version));
  registry_.Publish(feed.config.name(), std::move(set));
}

void FeedManager::WriteGuard(const Feed& feed, palisade::v1::FeedState::Guard* out) {
  out->set_guarded(feed.guarded);
  out->set_entries(feed.guard_entries);
  out->set_v4(feed.guard_covered.v4);
  out->set_v6_64s(feed.guard_covered.v6_64s);
  for (const auto& [at, covered] : feed.replaced) {
    auto* sample = out->add_replaced();
    sample->set_at(at);
    sample->set_v4(covered.v4);
    sample->set_v6_64s(covered.v6_64s);
  }
}

void FeedManager::ReadGuard(const palisade::v1::FeedState::Guard& in, int64_t now, Feed& feed) {
  feed.guarded = in.guarded();
  feed.guard_entries = in.entries();
  feed.guard_covered = {in.v4(), in.v6_64s()};
  feed.replaced.clear();
  // The newest kMaxGuardSamples (oldest first, as written).
  for (int i = std::max(0, in.replaced_size() - kMaxGuardSamples); i < in.replaced_size(); ++i) {
    const auto& sample = in.replaced(i);
    // Not after now: one dated ahead of this node's clock (a writer's clock ahead of it, or a
    // forged version) would never age out of the day's window, and would bound growth for as
    // long as it is ahead. Taken as of now, it ages out a day from now.
    feed.replaced.emplace_back(std::min(sample.at(), now),
                               FeedSet::Coverage{sample.v4(), sample.v6_64s()});
  }
}

void FeedManager::AppliedLocked(Feed& feed, bool force) {
  const int64_t now = absl::ToUnixSeconds(clock_.TimeNow());
  if (force) {
    // Meant as it is: what came before no longer bounds what comes next.
    feed.guarded = false;
    feed.replaced.clear();
  } else if (feed.guarded) {
    // The baseline replaced was in force until now: one sample an hour, the least of it.
    if (!feed.replaced.empty() && feed.replaced.back().first / 3600 == now / 3600) {
      auto& [at, least] = feed.replaced.back();
      at = now;
      least.v4 = std::min(least.v4, feed.guard_covered.v4);
      least.v6_64s = std::min(least.v6_64s, feed.guard_covered.v6_64s);
    } else {
      feed.replaced.emplace_back(now, feed.guard_covered);
    }
    LeastCoveredLocked(feed, now);  // drops what is a day old
  }
  if (feed.current->size() > 0) {
    feed.guarded = true;
    feed.guard_entries = feed.current->size();
    feed.guard_covered = feed.covered;
  }
}

FeedSet::Coverage FeedManager::LeastCoveredLocked(Feed& feed, int64_t now) {
  while (!feed.replaced.empty() &&
         (feed.replaced.front().first <= now - kGrowthWindow ||
          feed.replaced.size() > static_cast<size_t>(kMaxGuardSamples))) {
    feed.replaced.pop_front();
  }
  FeedSet::Coverage least{~uint64_t{0}, ~uint64_t{0}};
  for (const auto& [at, covered] : feed.replaced) {
    least.v4 = std::min(least.v4, covered.v4);
    least.v6_64s = std::min(least.v6_64s, covered.v6_64s);
  }
  return least;
}

palisade::v1::FeedState FeedManager::StateLocked(const Feed& feed) const {
  palisade::v1::FeedState state;
  state.set_version(feed.version);
  state.set_etag(feed.etag);
  state.set_last_modified(feed.last_modified);
  state.set_last_success(absl::ToUnixSeconds(feed.last_success));
  WriteGuard(feed, state.mutable_guard());
  if (feed.current == nullptr) return state;
  state.mutable_entries()->Reserve(static_cast<int>(feed.current->size()));
  for (const FeedEntry& e : feed.current->entries()) {
    auto* out = state.add_entries();
    out->set_cidr(e.cidr.ToString());
    out->set_first_seen(e.first_seen);
    out->set_last_seen(e.last_seen);
    out->set_expiry(e.expiry);
    out->set_confidence(e.confidence);
    out->set_ref(e.ref);
  }
  return state;
}

void FeedManager::PersistLocked(Feed& feed, bool made_here) {
  if (feed.current == nullptr) return;
  if (store_ == nullptr && !(made_here && options_.on_version)) return;
  const palisade::v1::FeedState state = StateLocked(feed);
  if (made_here && options_.on_version) options_.on_version(feed.config.name(), state);
  if (store_ == nullptr) return;
  absl::Status s = SaveLocked(feed, state);
  if (!s.ok()) {
    // Applied, published and (to_edge) at the edge, but a restart would restore the version
    // before it: said and counted, and written again by Tick until the store takes it.
    feed.store_errors->Increment();
    feed.last_error = s;
    Log(absl::StrCat(feed.config.name(), ": ", s.message()));
  }
}

absl::Status FeedManager::SaveLocked(Feed& feed, const palisade::v1::FeedState& state) {
  if (store_ == nullptr) return absl::OkStatus();
  // The guards' baseline is in the state (FeedState.guard), written with the version at once.
  absl::Status s =
      store_->SaveSnapshot(SnapshotName(feed.config.name()), state.SerializeAsString());
  if (s.ok()) {
    if (!feed.store_error.ok()) {
      Log(absl::StrCat(feed.config.name(), ": version ", feed.version, " stored"));
      if (feed.last_error == feed.store_error) feed.last_error = absl::OkStatus();
    }
    feed.store_error = absl::OkStatus();
    feed.save_failures = 0;
    return s;
  }
  ++feed.save_failures;
  const absl::Duration backoff = absl::Seconds(1) * (1 << std::min(feed.save_failures - 1, 9));
  feed.next_save = clock_.TimeNow() + std::min(kMaxSaveBackoff, backoff);
  feed.store_error = absl::Status(
      s.code(), absl::StrCat("version ", feed.version, " not stored (retried, backing off): ",
                             s.message()));
  return feed.store_error;
}

absl::StatusOr<PushFeedResponse> FeedManager::ApplyLocked(Feed& feed, FeedPushMode mode,
                                                          const ParsedFeed& parsed, bool force) {
  const int64_t now = absl::ToUnixSeconds(clock_.TimeNow());
  const int64_t ttl = absl::ToInt64Seconds(TtlOf(feed.config));
  const bool whole =
      mode != palisade::v1::FEED_PUSH_MODE_ADD && mode != palisade::v1::FEED_PUSH_MODE_REMOVE;
  const std::vector<FeedEntry> none;
  const std::vector<FeedEntry>& old = feed.current ? feed.current->entries() : none;

  // The indicators as entries, minus what must never be banned; a removal takes out whatever
  // it lists (an entry may have come to touch the never-ban set since it was added).
  std::vector<FeedEntry> incoming;
  incoming.reserve(parsed.indicators.size());
  uint64_t never_ban = 0;
  // ADD: the held entries it renews (its entry takes their place), how many entries it adds,
  // and to how many renewed ones it gives a longer reference (for the refusal's message).
  std::vector<bool> renewed(mode == palisade::v1::FEED_PUSH_MODE_ADD ? old.size() : 0);
  uint64_t fresh = 0, longer_refs = 0;
  const std::shared_ptr<const CidrSet> never = NeverBan();
  for (const Indicator& ind : parsed.indicators) {
    // The guard's own test (services/common/ip.h): a range over a protected address, and IPv6
    // forms embedding a non-public or protected IPv4 (64:ff9b::a00:0/120, 2002:a00::/24).
    if (mode != palisade::v1::FEED_PUSH_MODE_REMOVE && TouchesNeverBan(ind.cidr, *never)) {
      ++never_ban;
      continue;
    }
    const bool ttl_expiry = ind.valid_until <= 0;
    FeedEntry e{ind.cidr, now, now, ttl_expiry ? now + ttl : ind.valid_until,
                ind.confidence, ind.ref, ttl_expiry};
    const FeedEntry* held = feed.current != nullptr ? feed.current->Find(ind.cidr) : nullptr;
    if (held == nullptr) {
      ++fresh;
    } else if (mode == palisade::v1::FEED_PUSH_MODE_ADD) {
      // The held entry, renewed. A listing with a reference of its own is what the entry now
      // is: that reference with its own expiry, confidence and ttl_expiry (a TTL entry's is
      // now + entry_ttl), so what it weighs is known before the set is built (whichever copy a
      // merge would keep) and `feeds show` never cites indicator--B (a day at 20) for the
      // held entry's year at 90.
      e.first_seen = held->first_seen;
      e.last_seen = std::max(e.last_seen, held->last_seen);
      if (e.ref.empty()) {
        // One that says nothing of its own (a plain line) renews the entry as it is.
        e.expiry = std::max(e.expiry, held->expiry);
        e.confidence = std::max(e.confidence, held->confidence);
        e.ttl_expiry = e.ttl_expiry || held->ttl_expiry;
        // A fresh copy moved in: its capacity is its size (a copy assigned into a buffer that
        // held a longer string would keep that one's), which is what IndicatorBytes charges.
        e.ref = std::string(held->ref);
      } else if (IndicatorBytes(e.ref) > IndicatorBytes(held->ref)) {
        ++longer_refs;
      }
      renewed[static_cast<size_t>(held - old.data())] = true;
    } else {
      e.first_seen = held->first_seen;
    }
    incoming.push_back(std::move(e));
  }
  const size_t accepted = incoming.size();

  std::vector<FeedEntry> entries;
  switch (mode) {
    case palisade::v1::FEED_PUSH_MODE_ADD:
      entries.reserve(old.size() + incoming.size());
      for (size_t i = 0; i < old.size(); ++i) {
        if (!renewed[i]) entries.push_back(old[i]);
      }
      entries.insert(entries.end(), std::make_move_iterator(incoming.begin()),
                     std::make_move_iterator(incoming.end()));
      break;
    case palisade::v1::FEED_PUSH_MODE_REMOVE: {
      FeedSet removing(std::move(incoming));
      for (const FeedEntry& e : old) {
        if (removing.Find(e.cidr) == nullptr) entries.push_back(e);
      }
      break;
    }
    default:
      entries = std::move(incoming);
  }
  auto next = std::make_shared<const FeedSet>(std::move(entries));

  // Each push is bounded by its parse, but ADD keeps what the feed holds: pushes of fresh
  // addresses (or of longer references on held ones), one after another, would grow it (and
  // the copy, store write and publication each makes) without bound. The feed as built keeps
  // to what one version's parse may hold, by the parser's estimate of each entry as stored; an
  // ADD that does not grow it is taken even over that (a feed restored after max_parsed_bytes
  // was lowered is kept alive by its renewals).
  if (mode == palisade::v1::FEED_PUSH_MODE_ADD) {
    const uint64_t budget = MaxParsedBytesOf(feed.config);
    uint64_t bytes = 0;
    for (const FeedEntry& e : next->entries()) bytes += IndicatorBytes(e.ref);
    if (bytes > budget && bytes > feed.bytes) {
      return FailedLocked(
          feed,
          absl::ResourceExhaustedError(absl::StrCat(
              "adding ", fresh, " new entries",
              longer_refs > 0 ? absl::StrCat(" (and longer references to ", longer_refs,
                                             " held)")
                              : "",
              " to the ", old.size(), " entries held would hold ", bytes,
              " bytes, more than the feed's ", budget, " bytes (max_parsed_bytes) and than the ",
              feed.bytes, " it holds; nothing was added (remove entries or push a whole "
              "version)")),
          /*parsed=*/true);
    }
  }

  PushFeedResponse response;
  response.set_rejected(Clamp32(parsed.rejected));
  response.set_ignored(Clamp32(parsed.ignored));
  for (const FeedRejection& r : parsed.rejections) {
    if (static_cast<size_t>(response.rejections_size()) >= kMaxRejectionsReturned) break;
    auto* out = response.add_rejections();
    out->set_line(r.line);
    out->set_text(r.text);
    out->set_reason(r.reason);
  }
  feed.rejected_counter->Increment(static_cast<double>(parsed.rejected));
  response.set_never_ban(Clamp32(never_ban));
  feed.never_ban_counter->Increment(static_cast<double>(never_ban));
  response.set_accepted(Clamp32(accepted));
  response.set_added(Clamp32(CountMissing(next->entries(), old)));
  response.set_removed(Clamp32(CountMissing(old, next->entries())));

  // The guards: a version much smaller (a broken or truncated feed) or covering much more
  // address space (a compromised one, or one rewritten on the path of an http:// url) than the
  // current one is held, not applied, until a push with force says it is meant. A feed whose
  // entries all expired is judged against its last version with entries (a held version's
  // pulls renew nothing: else it applied itself an entry_ttl after it was first held); only a
  // feed that never had one, or whose baseline a force cleared, is spared.
  std::string held_reason;
  const bool guarded = !force && (!old.empty() || feed.guarded);
  // A whole version is judged against the baseline's entries while sweeps have taken some of
  // them out too, not only once they took all: a truncated version held against 1,000 entries
  // would otherwise apply as soon as fewer than 10 times its size were left.
  const bool against_baseline =
      feed.guarded && (old.empty() || (whole && feed.guard_entries > old.size()));
  const uint64_t was_entries = against_baseline ? feed.guard_entries : old.size();
  const absl::string_view was_what = old.empty() ? "its last version with entries (they expired)"
                                                 : "the current";
  const double keep = KeepRatioOf(feed.config);
  // (A delta to an empty feed shrinks nothing: only a whole version is judged against the
  // baseline's entries.)
  if (guarded && keep > 0 && (whole || !old.empty()) &&
      static_cast<double>(next->size()) < keep * static_cast<double>(was_entries)) {
    held_reason = absl::StrCat("the new version has ", next->size(), " entries, fewer than ",
                               keep * 100, "% of ",
                               against_baseline && !old.empty()
                                   ? "its last version applied (entries expired since)"
                                   : was_what,
                               " ", was_entries,
                               "; held (push with force to apply)");
  }
  const double growth = GrowthRatioOf(feed.config);
  if (held_reason.empty() && guarded && growth > 0) {
    // Addresses, not entries: edge_max_entries counts ranges, and a range may be a /12. Each
    // family alone, so that IPv6 space (in /64s) does not hide a jump in IPv4. Against the
    // least the feed covered within the last day too, not only now: versions each just under
    // the ratio would otherwise multiply it (100 addresses to 930 M in seven pulls).
    // Against the larger of what is left and the baseline (the last version applied): after
    // sweeps took some entries out, what is left would hold a version back at the feed's usual
    // size as growth until the rest expired.
    const FeedSet::Coverage baseline =
        feed.guarded ? feed.guard_covered : FeedSet::Coverage{0, 0};
    const FeedSet::Coverage least = LeastCoveredLocked(feed, now);
    const FeedSet::Coverage will = next->Covered();
    auto holds = [&](uint64_t left, uint64_t applied, uint64_t day, uint64_t after,
                     absl::string_view what) {
      const uint64_t current = std::max(left, applied);
      const uint64_t before = std::min(current, day);
      if (after < kGrowthFloor ||
          static_cast<double>(after) <= growth * static_cast<double>(before)) {
        return false;
      }
      held_reason = absl::StrCat(
          "the new version covers ", after, " ", what, ", more than ", growth, " times ",
          before < current
              ? absl::StrCat("the ", before, " it covered within the last 24 h")
              : absl::StrCat(current > left && !old.empty()
                                 ? "its last version applied (entries expired since)"
                                 : was_what,
                             " ", before),
          " (max_growth_ratio); held (push with force to apply)");
      return true;
    };
    if (!holds(feed.covered.v4, baseline.v4, least.v4, will.v4, "IPv4 addresses")) {
      holds(feed.covered.v6_64s, baseline.v6_64s, least.v6_64s, will.v6_64s,
            "IPv6 /64 networks");
    }
  }
  if (!held_reason.empty()) {
    feed.held_entries = next->size();
    feed.held_reason = std::move(held_reason);
    feed.held_counter->Increment();
    Log(absl::StrCat(feed.config.name(), ": ", feed.held_reason));
    response.set_held(true);
    response.set_held_reason(feed.held_reason);
    response.set_version(feed.version);
    return response;
  }
  feed.held_entries = 0;
  feed.held_reason.clear();
  // A whole version says of each entry whether it has a valid_until; an added or removed part
  // leaves the others as they were. The dropped counts are since the last whole version: an
  // added or removed part adds its own.
  if (whole) {
    feed.ttl_expiry_known = true;
    feed.rejected = 0;
    feed.never_ban = 0;
  }
  feed.rejected += parsed.rejected;
  feed.never_ban += never_ban;
  ++feed.version;
  feed.last_success = clock_.TimeNow();
  feed.success_gauge->Set(static_cast<double>(now));
  feed.age_gauge->Set(0);
  PublishLocked(feed, std::move(next));
  AppliedLocked(feed, force);
  PersistLocked(feed);
  response.set_version(feed.version);
  if (feed.config.to_edge()) SyncEdgeLocked();
  return response;
}

void FeedManager::SyncEdgeLocked() {
  if (table_ == nullptr) return;
  std::vector<Cidr> all;
  absl::Duration ttl = absl::ZeroDuration();
  // Ranges join into nothing wider than the narrowest minimum prefix of the to_edge feeds: a
  // feed may not put a wider range at the edge by listing its pieces (MergeCidrs also keeps to
  // what the IP list takes).
  MergeLimits limits;
  const std::shared_ptr<const CidrSet> never = NeverBan();
  for (const auto& [name, feed] : feeds_) {
    if (!feed.config.to_edge()) continue;
    ttl = std::max(ttl, TtlOf(feed.config));
    limits.min_prefix_v4 = std::max(limits.min_prefix_v4, MinPrefixOf(feed.config, true));
    limits.min_prefix_v6 = std::max(limits.min_prefix_v6, MinPrefixOf(feed.config, false));
    if (feed.current == nullptr) continue;
    for (const FeedEntry& e : feed.current->entries()) {
      // Entries applied before SetNeverBan were judged by the set then.
      if (never_ban_replaced_ && TouchesNeverBan(e.cidr, *never)) continue;
      all.push_back(e.cidr);
    }
  }
  std::vector<Cidr> merged = MergeCidrs(all, limits);
  std::vector<DecisionTable::FeedTarget> desired;
  const bool over_cap = merged.size() > options_.edge_max_entries;
  if (over_cap) {
    // Hold the edge set back from growing, refreshed below so it does not lapse, and say so
    // once (not at every refresh).
    edge_held_.Increment();
    if (!edge_capped_) {
      Log(absl::StrCat("the feeds' union is ", merged.size(),
                       " ranges, over feed_edge_max_entries ", options_.edge_max_entries,
                       "; the edge takes no new ranges until the union fits (removals "
                       "still leave it)"));
    }
    edge_capped_ = true;
    if (!edge_set_known_) {
      // The set held is the one last asked for: its waiting claims (a target decided by a rule
      // or by hand) are kept too. Not known yet (a restart, or the writer's lease regained):
      // the table's active feed decisions, minus what no to_edge feed could list now (the
      // never-ban set may have grown, a minimum prefix been raised).
      DecisionFilter current;
      current.origin = palisade::v1::ORIGIN_FEED;
      current.active_only = true;
      for (palisade::v1::Decision& d : table_->List(current)) {
        absl::StatusOr<Cidr> cidr = Cidr::Parse(d.target().value());
        if (!cidr.ok() || TouchesNeverBan(*cidr, *never)) continue;
        const bool listable = std::any_of(feeds_.begin(), feeds_.end(), [&cidr](const auto& f) {
          return f.second.config.to_edge() && !TooWide(*cidr, f.second.config);
        });
        if (!listable) continue;
        DecisionTable::FeedTarget t;
        t.target = std::move(*d.mutable_target());
        t.reason = std::move(*d.mutable_reason());
        edge_set_.push_back(std::move(t));
      }
      edge_set_known_ = true;
    }
    // Only additions wait: what the feeds no longer list leaves the edge (removals only shrink
    // the set, so they cannot threaten the cap). A held target the union still covers whole is
    // kept as it is; one it covers in part (a merged range partly delisted) becomes the union's
    // ranges inside it while they fit under the cap, else leaves.
    std::vector<Cidr> pieces;
    std::vector<std::pair<palisade::v1::Target, std::vector<Cidr>>> split;
    for (DecisionTable::FeedTarget& t : edge_set_) {
      absl::StatusOr<Cidr> cidr = Cidr::Parse(t.target.value());
      if (!cidr.ok()) continue;
      // `merged` is disjoint and sorted by CidrLess: a range covering the target starts at or
      // before its base; the ranges inside it follow the target's own position.
      auto it = std::lower_bound(merged.begin(), merged.end(), *cidr, CidrLess);
      auto covers = [&cidr](const Cidr& range) {
        return range.Contains(cidr->base()) && range.prefix_length() <= cidr->prefix_length();
      };
      if ((it != merged.end() && covers(*it)) || (it != merged.begin() && covers(*std::prev(it)))) {
        desired.push_back(std::move(t));
        continue;
      }
      std::vector<Cidr> inside;
      for (; it != merged.end() && cidr->Contains(it->base()) &&
             it->prefix_length() >= cidr->prefix_length();
           ++it) {
        inside.push_back(*it);
      }
      if (!inside.empty()) split.emplace_back(std::move(t.target), std::move(inside));
    }
    for (const auto& [target, inside] : split) {
      if (desired.size() + pieces.size() + inside.size() > options_.edge_max_entries) {
        Log(absl::StrCat("the feeds no longer list all of ", target.value(), "; its ",
                         inside.size(), " ranges still listed do not fit under ",
                         "feed_edge_max_entries: it leaves the edge"));
        continue;
      }
      pieces.insert(pieces.end(), inside.begin(), inside.end());
    }
    merged = std::move(pieces);
  } else if (edge_capped_) {
    Log(absl::StrCat("the feeds' union is ", merged.size(), " ranges, within ",
                     "feed_edge_max_entries again; the edge follows the feeds"));
    edge_capped_ = false;
  }
  desired.reserve(desired.size() + merged.size());
  for (const Cidr& c : merged) {
    DecisionTable::FeedTarget t;
    const bool host = c.prefix_length() == c.base().bit_length();
    t.target.set_kind(host ? palisade::v1::TARGET_KIND_IP : palisade::v1::TARGET_KIND_RANGE);
    t.target.set_value(host ? c.base().ToString() : c.ToString());
    // Provenance: each feed with entries in the range (and the reference of the one holding
    // its first address, when it has one).
    std::vector<std::string> sources;
    for (const auto& [name, feed] : feeds_) {
      if (!feed.config.to_edge() || feed.current == nullptr || !feed.current->Overlaps(c)) {
        continue;
      }
      const FeedEntry* e = feed.current->Lookup(c.base());
      sources.push_back(e == nullptr || e->ref.empty() ? name : absl::StrCat(name, " ", e->ref));
    }
    t.reason = absl::StrCat("feed: ", absl::StrJoin(sources, "; "));
    desired.push_back(std::move(t));
  }
  palisade::v1::DecisionSpec spec;
  spec.set_action(palisade::v1::ACTION_BLOCK);
  spec.set_actuator(palisade::v1::ACTUATOR_IP_LIST);
  *spec.mutable_duration() = ToProtoDuration(ttl);
  const absl::Time now = clock_.TimeNow();
  std::vector<DecisionUpdate> updates = table_->SyncFeed(desired, spec, now + ttl / 2);
  edge_syncs_.Increment();
  // Over the cap too: what left the held set is an addition should the feeds list it again.
  edge_set_ = desired;
  edge_set_known_ = true;
  for (const DecisionUpdate& u : updates) {
    if (u.change == DecisionChange::kCreated) edge_added_.Increment();
    if (u.change == DecisionChange::kWithdrawn) edge_removed_.Increment();
  }
  edge_entries_.Set(static_cast<double>(desired.size()));
  // No to_edge feed (ttl zero): nothing to refresh; this sync withdrew what was left.
  next_edge_refresh_ = ttl > absl::ZeroDuration() ? now + ttl / 4 : absl::InfiniteFuture();
}

std::shared_ptr<const CidrSet> FeedManager::NeverBan() const {
  absl::MutexLock lock(&never_ban_mu_);
  return never_ban_;
}

void FeedManager::SetNeverBan(CidrSet never_ban) {
  absl::MutexLock lock(&mu_);
  {
    absl::MutexLock never_lock(&never_ban_mu_);
    never_ban_ = std::make_shared<const CidrSet>(std::move(never_ban));
  }
  never_ban_replaced_ = true;
  const std::shared_ptr<const CidrSet> never = NeverBan();
  edge_set_.erase(std::remove_if(edge_set_.begin(), edge_set_.end(),
                                 [&never](const DecisionTable::FeedTarget& t) {
                                   absl::StatusOr<Cidr> cidr = Cidr::Parse(t.target.value());
                                   return !cidr.ok() || TouchesNeverBan(*cidr, *never);
                                 }),
                  edge_set_.end());
  if (running_.load()) SyncEdgeLocked();
}

absl::Status FeedManager::FailedLocked(Feed& feed, const absl::Status& failure, bool parsed) {
  // The parser answers kResourceExhausted only for its budget (feed_parser.h).
  if (!parsed) {
    feed.fetch_failed->Increment();
  } else if (failure.code() == absl::StatusCode::kResourceExhausted) {
    feed.over_max_parsed_bytes->Increment();
  } else {
    feed.unreadable->Increment();
  }
  feed.last_error = failure;
  return absl::Status(failure.code(),
                      absl::StrCat("feed \"", feed.config.name(), "\": ", failure.message()));
}

void FeedManager::SetPushForward(PushForward forward) { forward_ = std::move(forward); }

absl::StatusOr<PushFeedResponse> FeedManager::Push(absl::string_view name, FeedPushMode mode,
                                                   palisade::v1::FeedFormat format, bool force,
                                                   absl::string_view content) {
  if (!forward_) return PushHere(name, mode, format, force, content);
  uint64_t max_bytes = 0;
  {
    absl::MutexLock lock(&mu_);
    Feed* feed = FindLocked(name);
    if (feed == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("feed \"", name, "\" is not configured (add it to the config's feeds)"));
    }
    max_bytes = feed->config.max_bytes() > 0 ? feed->config.max_bytes() : kDefaultMaxBytes;
  }
  if (content.size() > max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("feed \"", name, "\": ", content.size(), " bytes is over its max_bytes"));
  }
  palisade::v1::FeedChunk push;
  push.set_feed(std::string(name));
  push.set_mode(mode);
  push.set_format(format);
  push.set_force(force);
  push.set_data(std::string(content));
  return forward_(push);
}

absl::StatusOr<PushFeedResponse> FeedManager::PushHere(absl::string_view name, FeedPushMode mode,
                                                       palisade::v1::FeedFormat format, bool force,
                                                       absl::string_view content) {
  FeedConfig config;
  {
    absl::MutexLock lock(&mu_);
    Feed* feed = FindLocked(name);
    if (feed == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("feed \"", name, "\" is not configured (add it to the config's feeds)"));
    }
    config = feed->config;
  }
  if (content.size() > (config.max_bytes() > 0 ? config.max_bytes() : kDefaultMaxBytes)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("feed \"", name, "\": ", content.size(), " bytes is over its max_bytes"));
  }
  if (format == palisade::v1::FEED_FORMAT_UNSPECIFIED) format = config.format();
  FeedParseOptions options = ParseOptionsFor(config);
  if (mode == palisade::v1::FEED_PUSH_MODE_REMOVE) {
    // A removal names what to take out: a line a version would reject for its low confidence,
    // or a STIX indicator withdrawn with a valid_until that has come (its usual way), still
    // names an entry the feed holds.
    options.min_confidence = 0;
    options.now = absl::InfinitePast();
  }
  // Parsing needs no lock: a slow parse of a big push does not stall lookups or other feeds.
  absl::StatusOr<ParsedFeed> parsed = ParseFeed(format, content, options);
  absl::MutexLock lock(&mu_);
  Feed* feed = FindLocked(name);
  feed->last_attempt = clock_.TimeNow();
  // Its own code: INVALID_ARGUMENT for content that cannot be read, RESOURCE_EXHAUSTED for a
  // parse past the feed's max_parsed_bytes (this server's limit, not the client's mistake).
  if (!parsed.ok()) return FailedLocked(*feed, parsed.status(), /*parsed=*/true);
  feed->last_error = absl::OkStatus();
  // A pushed version is not the server's content: a pulled feed's next pull asks for it whole,
  // so a "not modified" cannot renew the push as what its server lists. A held one keeps them.
  std::string etag = std::exchange(feed->etag, "");
  std::string last_modified = std::exchange(feed->last_modified, "");
  absl::StatusOr<PushFeedResponse> applied = ApplyLocked(*feed, mode, *parsed, force);
  if (!applied.ok() || applied->held()) {
    feed->etag = std::move(etag);
    feed->last_modified = std::move(last_modified);
  }
  return applied;
}

absl::StatusOr<PushFeedResponse> FeedManager::FetchNow(absl::string_view name) {
  absl::MutexLock fetch_lock(&fetch_mu_);
  FetchRequest request;
  FeedConfig config;
  uint64_t asked_for = 0;  // the version the request's validators name
  {
    absl::MutexLock lock(&mu_);
    Feed* feed = FindLocked(name);
    if (feed == nullptr) return absl::NotFoundError(absl::StrCat("no feed \"", name, "\""));
    if (feed->config.url().empty()) {
      return absl::FailedPreconditionError(absl::StrCat("feed \"", name, "\" is pushed, not pulled"));
    }
    config = feed->config;
    request.url = config.url();
    // Without a version, ask for the whole content even if validators survived somewhere; so
    // too when the entries' expiry kinds are unknown (a 304 could not renew them).
    if (feed->current != nullptr && feed->ttl_expiry_known) {
      request.etag = feed->etag;
      request.last_modified = feed->last_modified;
    }
    request.timeout = Or(config.timeout(), kDefaultTimeout);
    request.max_bytes = config.max_bytes() > 0 ? config.max_bytes() : kDefaultMaxBytes;
    request.cancel = &stopping_;
    feed->last_attempt = clock_.TimeNow();
    asked_for = feed->version;
  }
  absl::StatusOr<FetchResult> fetched = Fetch(request);
  if (fetched.status().code() == absl::StatusCode::kCancelled) {
    // Stop cut it short (shutdown, or the cluster lease lost): not the feed's failure, and it
    // stays due for whoever pulls next.
    return absl::CancelledError(absl::StrCat("feed \"", name, "\": ", fetched.status().message()));
  }
  absl::StatusOr<ParsedFeed> parsed = absl::UnknownError("not parsed");
  if (fetched.ok() && !fetched->not_modified) {
    parsed = ParseFeed(config.format(), fetched->body, ParseOptionsFor(config));
  }
  absl::MutexLock lock(&mu_);
  Feed* feed = FindLocked(name);
  const absl::Time now = clock_.TimeNow();
  absl::Status failure = !fetched.ok() ? fetched.status()
                         : fetched->not_modified ? absl::OkStatus()
                                                 : parsed.status();
  if (!failure.ok()) {
    // The last good version stays; retry sooner than the interval, backing off.
    ++feed->failures;
    const absl::Duration interval = Or(config.interval(), kDefaultInterval);
    feed->next_fetch = now + std::min(interval, absl::Seconds(15) * (1 << std::min(feed->failures, 8)));
    Log(absl::StrCat(name, ": ", failure.message(), " (keeping version ", feed->version, ")"));
    return FailedLocked(*feed, failure, /*parsed=*/fetched.ok());
  }
  feed->failures = 0;
  feed->last_error = absl::OkStatus();
  feed->next_fetch = now + Or(config.interval(), kDefaultInterval);
  if (fetched->not_modified) {
    feed->last_success = now;
    feed->success_gauge->Set(static_cast<double>(absl::ToUnixSeconds(now)));
    feed->age_gauge->Set(0);
    // The server's content is still the version held: it lists each entry now, and one without
    // a valid_until of its own expires entry_ttl from now, as after a 200 with the same content
    // (a new version, stored and published, so a restart or another node keeps the renewal).
    // That version is a whole copy of the feed: it is made only when it moves an entry's expiry
    // by a step (RenewalStep), not at each pull; until then last_seen stays that of the
    // version held.
    // Only the version the request named: one made while it was in flight (a push, a sweep)
    // is not what the server said is unchanged.
    if (feed->current != nullptr && feed->ttl_expiry_known && feed->version == asked_for) {
      const int64_t at = absl::ToUnixSeconds(now);
      const absl::Duration ttl = TtlOf(config);
      const int64_t renewed_expiry = at + absl::ToInt64Seconds(ttl);
      const int64_t step =
          absl::ToInt64Seconds(RenewalStep(Or(config.interval(), kDefaultInterval), ttl));
      const std::vector<FeedEntry>& held = feed->current->entries();
      const bool renew = std::any_of(held.begin(), held.end(), [&](const FeedEntry& e) {
        return e.ttl_expiry && e.expiry < renewed_expiry && renewed_expiry - e.expiry >= step;
      });
      if (renew) {
        std::vector<FeedEntry> entries = held;
        for (FeedEntry& e : entries) {
          e.last_seen = std::max(e.last_seen, at);
          if (e.ttl_expiry) e.expiry = std::max(e.expiry, renewed_expiry);
        }
        ++feed->version;
        PublishLocked(*feed, std::make_shared<const FeedSet>(std::move(entries)));
        PersistLocked(*feed);
      }
    }
    PushFeedResponse unchanged;
    unchanged.set_version(feed->version);
    return unchanged;
  }
  // The version is stored and published (once) with the validators it came with; a held one
  // keeps those of the version applied, so the next pull asks for the whole content again.
  std::string etag = std::exchange(feed->etag, fetched->etag);
  std::string last_modified = std::exchange(feed->last_modified, fetched->last_modified);
  absl::StatusOr<PushFeedResponse> applied =
      ApplyLocked(*feed, palisade::v1::FEED_PUSH_MODE_REPLACE, *parsed, /*force=*/false);
  if (!applied.ok() || applied->held()) {
    feed->etag = std::move(etag);
    feed->last_modified = std::move(last_modified);
  }
  return applied;
}

void FeedManager::Tick() {
  const absl::Time now = clock_.TimeNow();
  std::vector<std::string> due;
  {
    absl::MutexLock lock(&mu_);
    bool resync = now >= next_edge_refresh_ && next_edge_refresh_ != absl::InfinitePast();
    for (auto& [name, feed] : feeds_) {
      if (!feed.config.url().empty() && now >= feed.next_fetch) due.push_back(name);
      if (feed.last_success != absl::InfinitePast()) {
        feed.age_gauge->Set(absl::ToDoubleSeconds(now - feed.last_success));
      }
      // A version the store refused is written again, when its backoff has passed.
      if (!feed.store_error.ok() && now >= feed.next_save) {
        SaveLocked(feed, StateLocked(feed)).IgnoreError();
      }
      // Entries past their expiry leave the feed (a new version of it), on a one-minute grid:
      // at most a minute late, and entries ending seconds apart leave in one version, not one
      // each (a version is stored whole and, in a cluster, published).
      if (feed.current != nullptr && feed.min_expiry != 0 &&
          (feed.min_expiry + kSweepGrid - 1) / kSweepGrid * kSweepGrid <=
              absl::ToUnixSeconds(now)) {
        std::vector<FeedEntry> kept;
        for (const FeedEntry& e : feed.current->entries()) {
          if (e.expiry > absl::ToUnixSeconds(now)) kept.push_back(e);
        }
        // The version no longer holds what its validators name: the next pull asks for the
        // whole content, so a "not modified" cannot keep the feed short of what its server
        // lists.
        if (!feed.config.url().empty()) {
          feed.etag.clear();
          feed.last_modified.clear();
        }
        ++feed.version;
        PublishLocked(feed, std::make_shared<const FeedSet>(std::move(kept)));
        PersistLocked(feed);
        resync |= feed.config.to_edge();
      }
    }
    if (resync) SyncEdgeLocked();
  }
  for (const std::string& name : due) {
    if (stopping_.load()) break;  // Stop: the feeds not pulled yet stay due
    FetchNow(name).IgnoreError();
  }
}

void FeedManager::Start() {
  absl::MutexLock run(&run_mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  stopping_.store(false);
  running_.store(true);
  {
    absl::MutexLock lock(&mu_);
    // Feeds restored from the store (or followed, in a cluster) go to the edge as they are
    // (nothing changes if it is already there); a fresh start has nothing to send yet. What
    // this node asked for before a Stop is no longer known (another node may have written).
    edge_set_.clear();
    edge_set_known_ = false;
    SyncEdgeLocked();
  }
  thread_ = std::thread([this] {
    for (;;) {
      {
        absl::MutexLock lock(&run_mu_);
        if (run_mu_.AwaitWithTimeout(absl::Condition(&stop_), absl::Seconds(1))) return;
      }
      Tick();
    }
  });
}

void FeedManager::Stop() {
  std::thread thread;
  {
    absl::MutexLock run(&run_mu_);
    stop_ = true;
    stopping_.store(true);
    running_.store(false);
    thread = std::move(thread_);
  }
  if (thread.joinable()) thread.join();
  // Pulls asked for after Stop (FetchNow) run again.
  stopping_.store(false);
}

absl::StatusOr<bool> FeedManager::Follow(absl::string_view name,
                                         const palisade::v1::FeedState& state) {
  FeedConfig config;  // fixed at construction; read under the lock as the rest of the feed
  {
    absl::MutexLock lock(&mu_);
    if (Feed* feed = FindLocked(name); feed != nullptr) config = feed->config;
  }
  std::vector<FeedEntry> entries;
  entries.reserve(state.entries_size());
  uint64_t rejected = 0;  // skipped, and counted as a pull's rejected lines are
  uint64_t never_ban = 0;  // this node's never-ban set, whatever the writer's was
  const std::shared_ptr<const CidrSet> never = NeverBan();
  for (const auto& e : state.entries()) {
    absl::StatusOr<Cidr> cidr = Cidr::Parse(e.cidr());
    // This node's minimum prefix too, whatever the writer's was.
    if (!cidr.ok() || TooWide(*cidr, config)) {
      ++rejected;
      continue;
    }
    if (TouchesNeverBan(*cidr, *never)) {
      ++never_ban;
      continue;
    }
    entries.push_back({*cidr, e.first_seen(), e.last_seen(), e.expiry(), e.confidence(), e.ref()});
  }
  absl::MutexLock lock(&mu_);
  Feed* feed = FindLocked(name);
  if (feed == nullptr) {
    return absl::NotFoundError(absl::StrCat("feed \"", name, "\" is not configured on this node"));
  }
  if (state.version() <= feed->version) return false;
  feed->version = state.version();
  feed->etag = state.etag();
  feed->last_modified = state.last_modified();
  feed->ttl_expiry_known = false;
  feed->last_success = absl::FromUnixSeconds(state.last_success());
  feed->success_gauge->Set(static_cast<double>(state.last_success()));
  // Should this node come to write, a pull is due an interval after the version's success.
  feed->next_fetch = feed->last_success + Or(feed->config.interval(), kDefaultInterval);
  feed->held_entries = 0;
  feed->held_reason.clear();
  feed->rejected = rejected;
  feed->rejected_counter->Increment(static_cast<double>(rejected));
  feed->never_ban = never_ban;
  feed->never_ban_counter->Increment(static_cast<double>(never_ban));
  PublishLocked(*feed, std::make_shared<const FeedSet>(std::move(entries)));
  // The writer's baseline, as it stands after this version: a sweep's version (entries expired,
  // some or all) keeps the one before it, a forced one starts afresh. Rebuilt from the versions
  // seen, a node that joined after a sweep emptied the feed would write unguarded, and each
  // partial sweep would lower the baseline. A writer older than FeedState.guard: each of its
  // versions (sweeps and forced ones alike: it does not say which) is taken as applied.
  if (state.has_guard()) {
    ReadGuard(state.guard(), absl::ToUnixSeconds(clock_.TimeNow()), *feed);
    // What this node's never-ban set or minimum prefix holds out is no version's to hold here:
    // the baseline loses it too, as at a Restore (else, should this node come to write, the
    // next whole version of the rest is held as a shrink against entries it may never hold).
    if (feed->guarded) {
      feed->guard_entries -= std::min<uint64_t>(feed->guard_entries, never_ban + rejected);
    }
  } else {
    AppliedLocked(*feed, /*force=*/false);
  }
  PersistLocked(*feed, /*made_here=*/false);
  if (running_.load() && feed->config.to_edge()) SyncEdgeLocked();
  return true;
}

absl::StatusOr<uint64_t> FeedManager::Version(absl::string_view name) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = feeds_.find(name);
  if (it == feeds_.end()) return absl::NotFoundError(absl::StrCat("no feed \"", name, "\""));
  return it->second.version;
}

palisade::v1::FeedInfo FeedManager::InfoLocked(const Feed& feed) const {
  palisade::v1::FeedInfo info;
  info.set_name(feed.config.name());
  info.set_format(feed.config.format());
  if (!feed.config.url().empty()) info.set_url(RedactUrl(feed.config.url()));
  info.set_entries(feed.current ? feed.current->size() : 0);
  info.set_version(feed.version);
  if (feed.last_success != absl::InfinitePast()) {
    *info.mutable_last_success() = ToProtoTime(feed.last_success);
  }
  if (feed.last_attempt != absl::InfinitePast()) {
    *info.mutable_last_attempt() = ToProtoTime(feed.last_attempt);
  }
  info.set_last_error(std::string(feed.last_error.message()));
  info.set_held(!feed.held_reason.empty());
  info.set_held_entries(feed.held_entries);
  info.set_held_reason(feed.held_reason);
  info.set_to_edge(feed.config.to_edge());
  info.set_rejected(feed.rejected);
  info.set_never_ban(feed.never_ban);
  return info;
}

palisade::v1::ListFeedsResponse FeedManager::List() const {
  absl::ReaderMutexLock lock(&mu_);
  palisade::v1::ListFeedsResponse out;
  for (const auto& [name, feed] : feeds_) *out.add_feeds() = InfoLocked(feed);
  return out;
}

absl::StatusOr<palisade::v1::GetFeedResponse> FeedManager::Get(
    const palisade::v1::GetFeedRequest& req) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = feeds_.find(req.name());
  if (it == feeds_.end()) return absl::NotFoundError(absl::StrCat("no feed \"", req.name(), "\""));
  const Feed& feed = it->second;
  palisade::v1::GetFeedResponse out;
  *out.mutable_info() = InfoLocked(feed);
  auto add = [&out](const FeedEntry& e) {
    auto* entry = out.add_entries();
    entry->set_cidr(e.cidr.ToString());
    *entry->mutable_first_seen() = ToProtoTime(absl::FromUnixSeconds(e.first_seen));
    *entry->mutable_last_seen() = ToProtoTime(absl::FromUnixSeconds(e.last_seen));
    *entry->mutable_expiry() = ToProtoTime(absl::FromUnixSeconds(e.expiry));
    entry->set_confidence(e.confidence);
    entry->set_ref(e.ref);
  };
  if (feed.current == nullptr) return out;
  if (!req.lookup().empty()) {
    std::optional<IpAddress> ip = IpAddress::Parse(req.lookup());
    if (!ip) {
      return absl::InvalidArgumentError(absl::StrCat("lookup \"", req.lookup(), "\" is not an IP address"));
    }
    if (const FeedEntry* e = feed.current->Lookup(*ip)) add(*e);
    return out;
  }
  // max_entries is the client's: the reply is also bounded in bytes (as a Decisions.List page
  // is), and info.entries says how many the feed holds.
  size_t bytes = out.ByteSizeLong();
  for (const FeedEntry& e : feed.current->entries()) {
    if (static_cast<uint32_t>(out.entries_size()) >= req.max_entries()) break;
    add(e);
    bytes += out.entries(out.entries_size() - 1).ByteSizeLong() + kEntryFraming;
    if (bytes > kMaxGetReplyBytes) {
      out.mutable_entries()->RemoveLast();
      break;
    }
  }
  return out;
}

}  // namespace palisade
