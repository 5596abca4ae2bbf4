// The threat-feed manager: owns every configured feed, applies new versions (pushed over
// Feeds.Push or pulled by its own thread), and keeps three things in step with them:
//  - the FeedRegistry the engine reads for in_feed conditions (swapped, never locked by readers);
//  - the feed's durable copy in the store, so a restart resumes with the last applied version
//    (one the store refuses is the feed's last_error, counted, and written again by Tick, the
//    retries backing off from a second to 5 minutes);
//  - the edge: the merged union of the feeds marked to_edge becomes decisions of origin feed
//    (DecisionTable::SyncFeed), so only entries that came or went cause list operations.
//
// Safety: indicators that touch the never-ban set (non-public ranges, the allowlist, this host,
// Cloudflare's ranges) are dropped and counted; a version that shrinks the feed below
// min_keep_ratio of its current size, or covers more than max_growth_ratio times its addresses
// in a family (or the least it covered within the last 24 h), is held, not applied (push with
// force to override); a feed whose entries all expired is judged against its last version with
// entries (stored beside the version); a to_edge feed pulled over plain http:// is warned of at
// construction; while
// the union is larger than edge_max_entries the edge holds its additions back: it keeps (and
// refreshes) what the union still lists of the set it last asked for, waiting claims included
// (after Start: the table's feed decisions that the never-ban set and the minimum prefixes still
// allow), so removals and expiries still leave it (a merged range now partly delisted becomes
// the union's ranges inside it while they fit under the cap, else leaves); and it says so once
// (log, palisade_feed_edge_held_total counts the held syncs). With no to_edge feed the edge is
// synced once, at Start, not refreshed.
//
// In a cluster (docs/CLUSTER.md, "Threat feeds") only the edge writer applies versions (pushes,
// pulls, expiry) and syncs the edge; each version it makes goes to `on_version` (published for
// the other nodes), and every node applies the published versions with Follow: registry and
// store only, no edge sync. A push on any node goes to the writer through `SetPushForward`.
//
// Thread-safety: all public methods are thread-safe.
#ifndef PALISADE_SERVICES_FEEDMANAGER_FEED_MANAGER_H_
#define PALISADE_SERVICES_FEEDMANAGER_FEED_MANAGER_H_

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "palisade/v1/config.pb.h"
#include "palisade/v1/palisade.pb.h"
#include "palisade/v1/state.pb.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/common/clock.h"
#include "services/common/ip.h"
#include "services/decisions/decision_table.h"
#include "services/feeds/feed_parser.h"
#include "services/feeds/feed_set.h"
#include "services/store/store.h"

namespace palisade {

struct FeedManagerOptions {
  // Validated by the config loader (names unique and well formed, formats set).
  std::vector<palisade::v1::FeedConfig> feeds;
  size_t edge_max_entries = 10000;
  // Never acted upon, on top of NonPublicRanges().
  CidrSet never_ban;
  // Each version this manager makes (push, pull, expiry), as stored, with the manager's lock
  // held: it must not call back into the manager, nor block (queue it). Null: none.
  std::function<void(absl::string_view feed, const palisade::v1::FeedState& state)> on_version;
};

class FeedManager {
 public:
  // `table` (may be null: no edge sync) and `store` (may be null: nothing durable) outlive it.
  FeedManager(FeedManagerOptions options, Clock& clock, prometheus::Registry& metrics,
              DecisionTable* table, Store* store);
  ~FeedManager();

  // Loads each feed's last applied version from the store and publishes it, without the entries
  // past their expiry (or now in the never-ban set, or too wide). Call before Start.
  absl::Status Restore();
  // Starts the thread that pulls feeds with a URL when due and expires entries, after an edge
  // sync of the versions held. Stop ends it; Start may run again after Stop (a cluster node
  // starts and stops it with the edge-writer lease). Both idempotent. Stop does not wait for
  // pulls: the one in flight (the thread's, or a FetchNow caller's) is cancelled, and due
  // feeds not yet pulled stay due.
  void Start();
  void Stop();

  const FeedRegistry& registry() const { return registry_; }

  // A pushed version or delta. `content` is in `format` (UNSPECIFIED: the feed's own). With a
  // push forward set (a cluster node), the forward's answer (the feed and the size checked
  // here first); else PushHere. Refused, naming the feed, with the feed keeping its version:
  // kNotFound (not configured), kResourceExhausted (content over its max_bytes, a parse past
  // its max_parsed_bytes, or an ADD that would grow the feed's entries past it: a held entry
  // it renews takes the pushed reference (with its expiry and confidence), charged as it is
  // stored; one that does not grow the feed is taken even over it), kInvalidArgument (content
  // that cannot be read). The never-ban set filters a REPLACE's and an ADD's entries, not what
  // a REMOVE takes out; a REMOVE is read without the feed's min_confidence and STIX validity
  // times (it only names what to take out). An applied push drops a pulled feed's validators:
  // its next pull asks for the whole content.
  absl::StatusOr<palisade::v1::PushFeedResponse> Push(absl::string_view feed,
                                                      palisade::v1::FeedPushMode mode,
                                                      palisade::v1::FeedFormat format, bool force,
                                                      absl::string_view content);
  // Applies a push on this node (what the cluster's writer does with a forwarded push).
  absl::StatusOr<palisade::v1::PushFeedResponse> PushHere(absl::string_view feed,
                                                          palisade::v1::FeedPushMode mode,
                                                          palisade::v1::FeedFormat format,
                                                          bool force, absl::string_view content);
  using PushForward = std::function<absl::StatusOr<palisade::v1::PushFeedResponse>(
      const palisade::v1::FeedChunk& push)>;
  // Set once, before pushes arrive. The forward gets the whole push as one FeedChunk.
  void SetPushForward(PushForward forward);
  // A version another node made (the cluster writer's, as on_version gave it): becomes this
  // node's registry entry and stored copy, without an edge sync unless this manager runs
  // (Start: it writes, and a former writer published late), and with it the writer's guards'
  // baseline (FeedState.guard; at most 25 samples of it kept, none dated after now; less the
  // entries this node's never-ban set or minimum prefix holds out), so that this node, should it
  // come to write, judges new versions as the writer did. false: ignored, this node holds that
  // version or a newer one. kNotFound: the feed is not configured here.
  absl::StatusOr<bool> Follow(absl::string_view feed, const palisade::v1::FeedState& state);
  // The version held (0: none; kNotFound when not configured).
  absl::StatusOr<uint64_t> Version(absl::string_view feed) const;
  // Fetches a pulled feed now and applies what it got. A 304 renews the entries the version
  // holds (the server still lists them; not when a push or a sweep made another version while
  // the request was in flight): those without a valid_until of their own expire
  // entry_ttl from now, in a new version made only when that moves their expiry by a step
  // (max(interval, 1 h), at most entry_ttl / 8 and (entry_ttl - interval) / 2), not at each
  // pull: should the server then go dark, the entries still have 7/8 of entry_ttl to live.
  // kCancelled, the feed unchanged and still due, when Stop cut it short.
  absl::StatusOr<palisade::v1::PushFeedResponse> FetchNow(absl::string_view feed);
  // Replaces the never-ban set (an allowlist reloaded): versions applied from now on are judged
  // by it, and the edge (while this node syncs it: after Start) leaves out the entries of the
  // versions held that touch it, at once and at every later sync; they stay in their feed (and
  // match in_feed conditions) until a version no longer lists them. Before, a feed that still
  // listed a newly allowlisted address decided it again at its next sync, until a restart.
  void SetNeverBan(CidrSet never_ban);
  // One round of the background work, at the clock's now: due fetches, expired entries, edge
  // refresh, age gauges, versions the store refused. The thread calls it every second; tests
  // call it directly.
  void Tick();

  palisade::v1::ListFeedsResponse List() const;
  // The feed's info and its entries: the one holding req.lookup, or the first req.max_entries
  // of them within 3 MiB of reply (info.entries says how many there are).
  absl::StatusOr<palisade::v1::GetFeedResponse> Get(const palisade::v1::GetFeedRequest& req) const;

 private:
  struct Feed {
    palisade::v1::FeedConfig config;
    std::shared_ptr<const FeedSet> current;  // null until the first version
    uint64_t version = 0;
    absl::Time last_success = absl::InfinitePast();
    absl::Time last_attempt = absl::InfinitePast();
    absl::Time next_fetch = absl::InfinitePast();
    int failures = 0;  // consecutive fetch failures, for backoff
    // The last push's or pull's failure, with the code it was answered with (OK: none).
    absl::Status last_error;
    // Why the store refused the version held (OK: it is stored). Tick writes it again at
    // next_save: each write is a whole copy of the feed, serialized, so the retries back off
    // with the refusals in a row (save_failures).
    absl::Status store_error;
    absl::Time next_save = absl::InfinitePast();
    int save_failures = 0;
    std::string etag, last_modified;
    // Whether each entry's FeedEntry::ttl_expiry is known. A version restored or followed does
    // not say (FeedState does not carry it): until a pull gets the whole content again, pulls
    // send no validators, so a 304 never has to renew entries it cannot tell apart.
    bool ttl_expiry_known = true;
    size_t held_entries = 0;
    std::string held_reason;
    // Lines rejected and indicators dropped (never-ban) since the last whole version (a pull,
    // a REPLACE push, one followed; Restore re-judges never_ban): each ADD or REMOVE adds its own.
    uint64_t rejected = 0, never_ban = 0;
    int64_t min_expiry = 0;  // earliest entry expiry of `current`
    // What `current` holds by the parser's estimate (IndicatorBytes per entry): an ADD push may
    // not grow it past the feed's max_parsed_bytes.
    uint64_t bytes = 0;
    FeedSet::Coverage covered;  // `current`'s, for the growth guard
    // The guards' baseline: the entries and coverage of the last version with entries applied
    // (pushed, pulled or followed), so that a feed whose entries all expired (a held version's
    // pulls renew nothing) judges a new version against what it had. Not `guarded` until such
    // a version, nor after a force; stored with the version (FeedState.guard: Restore after any
    // downtime).
    bool guarded = false;
    uint64_t guard_entries = 0;
    FeedSet::Coverage guard_covered;
    // The baselines replaced within the last 24 h, as (when, coverage), the least of each hour,
    // oldest first (at most 25): growth is judged against their least too.
    std::deque<std::pair<int64_t, FeedSet::Coverage>> replaced;
    prometheus::Gauge* entries_gauge;
    prometheus::Gauge* version_gauge;
    prometheus::Gauge* success_gauge;
    prometheus::Gauge* age_gauge;
    // palisade_feed_fetch_errors_total by reason: the fetch failed; the content could not be
    // read; its parse passed the feed's max_parsed_bytes.
    prometheus::Counter* fetch_failed;
    prometheus::Counter* unreadable;
    prometheus::Counter* over_max_parsed_bytes;
    prometheus::Counter* rejected_counter;
    prometheus::Counter* never_ban_counter;
    prometheus::Counter* held_counter;
    prometheus::Counter* store_errors;
  };

  Feed* FindLocked(absl::string_view name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<palisade::v1::PushFeedResponse> ApplyLocked(
      Feed& feed, palisade::v1::FeedPushMode mode, const ParsedFeed& parsed, bool force)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishLocked(Feed& feed, std::shared_ptr<const FeedSet> set)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After a version is applied (published): it becomes the guards' baseline if it has entries,
  // the one it replaces a sample of the day's; `force` clears what came before.
  void AppliedLocked(Feed& feed, bool force) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops the samples a day old; the least of the others, per family (UINT64_MAX: none).
  FeedSet::Coverage LeastCoveredLocked(Feed& feed, int64_t now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The baseline as stored with the version (FeedState.guard), and read back (the samples
  // dated no later than `now`, in Unix seconds).
  static void WriteGuard(const Feed& feed, palisade::v1::FeedState::Guard* out);
  static void ReadGuard(const palisade::v1::FeedState::Guard& in, int64_t now, Feed& feed);
  // Stores the feed's version and, when `made_here`, hands it to on_version. A version the
  // store refuses is counted and becomes the feed's last_error until SaveLocked writes it.
  void PersistLocked(Feed& feed, bool made_here = true) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes the feed's version to the store (if any); records or clears its store_error (and
  // when to write it again).
  absl::Status SaveLocked(Feed& feed, const palisade::v1::FeedState& state)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  palisade::v1::FeedState StateLocked(const Feed& feed) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void SyncEdgeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records a version the feed did not get (it keeps the one it has): `failure` becomes its
  // last_error and is counted by reason (`parsed`: the content came and its parse refused it;
  // else the fetch failed). Returns `failure` naming the feed, its code unchanged.
  absl::Status FailedLocked(Feed& feed, const absl::Status& failure, bool parsed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  palisade::v1::FeedInfo InfoLocked(const Feed& feed) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  FeedParseOptions ParseOptionsFor(const palisade::v1::FeedConfig& config) const;

  const FeedManagerOptions options_;
  Clock& clock_;
  DecisionTable* const table_;
  Store* const store_;
  FeedRegistry registry_;
  // Fetches of one feed never overlap; other work waits on mu_ only while a version applies.
  absl::Mutex fetch_mu_;
  mutable absl::Mutex mu_;
  std::map<std::string, Feed, std::less<>> feeds_ ABSL_GUARDED_BY(mu_);
  absl::Time next_edge_refresh_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // The union is over edge_max_entries: the edge holds its additions back (logged once per
  // episode).
  bool edge_capped_ ABSL_GUARDED_BY(mu_) = false;
  // The targets the last edge sync asked for (while capped: what the union still lists of the
  // set held); unknown until a sync after Start, and then read from the table's active feed
  // decisions.
  std::vector<DecisionTable::FeedTarget> edge_set_ ABSL_GUARDED_BY(mu_);
  bool edge_set_known_ ABSL_GUARDED_BY(mu_) = false;
  // SetNeverBan was called: the versions held were judged by an older set (edge syncs filter).
  bool never_ban_replaced_ ABSL_GUARDED_BY(mu_) = false;
  // The never-ban set: the options' until SetNeverBan replaces it (under its own lock: Follow
  // judges entries before it takes mu_).
  mutable absl::Mutex never_ban_mu_ ABSL_ACQUIRED_AFTER(mu_);
  std::shared_ptr<const CidrSet> never_ban_ ABSL_GUARDED_BY(never_ban_mu_);
  std::shared_ptr<const CidrSet> NeverBan() const ABSL_LOCKS_EXCLUDED(never_ban_mu_);
  prometheus::Gauge& edge_entries_;
  prometheus::Counter& edge_added_;
  prometheus::Counter& edge_removed_;
  prometheus::Counter& edge_held_;
  prometheus::Counter& edge_syncs_;
  PushForward forward_;
  std::atomic<bool> running_{false};  // between Start and Stop: this node syncs the edge
  absl::Mutex run_mu_;
  bool stop_ ABSL_GUARDED_BY(run_mu_) = false;
  // Set while Stop runs: the pull in flight is cancelled (FetchRequest::cancel) and Tick starts
  // no other.
  std::atomic<bool> stopping_{false};
  std::thread thread_ ABSL_GUARDED_BY(run_mu_);
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_FEEDMANAGER_FEED_MANAGER_H_
