// The bouncer side of CrowdSec's Local API v1 (issue 16), so that CrowdSec's bouncers (nftables
// / iptables, nginx, HAProxy, custom scripts) enforce Palisade's decisions on hosts, next to the
// Cloudflare edge, with no code of their own. Driven by config `bouncer_api`
// (palisade.v1.BouncerApiConfig); the shapes are those of CrowdSec 1.4.6 (Debian's), recorded in
// tests/e2e/testdata/crowdsec/.
//
//   GET /v1/decisions/stream?startup=true|false[&scopes=&origins=&scenarios_containing=
//       &scenarios_not_containing=]   {"deleted": [...], "new": [...]} since this bouncer's last
//       pull (no startup: false; a first pull: every active decision, and the deletions logged
//       since the bouncer's registration: CrowdSec's bouncers ask startup=true first, so such a
//       pull holds an answer whose record was lost; every deletion held when another answer of
//       its key is in flight or one was delivered but not recorded, see below); with
//       startup=true every active decision, and the deletions this bouncer was not served yet.
//       Lists are ordered by end, soonest first, as CrowdSec's.
//   GET|HEAD /v1/decisions?ip=|range=|scope=&value=|type=|origins=   live mode: the decisions on
//       an address (an Ip decision on it, a Range decision containing it), or `null`.
//   Every request carries X-Api-Key; without a known one: 403 {"message":"access forbidden"}.
//   A connection carries one request (Connection: close): no worker waits on an idle
//   connection for its next one. A request must arrive whole within 60 s on the API's clock,
//   else the server answers 408 (palisade_bouncer_requests_refused_total{reason="timeout"}).
//   One peer address (an IPv6 /64) is served on max_connections_per_address workers at most
//   (default: half of max_concurrent_requests, off below 4); its further connections are closed
//   unread (reason "address_busy"), so that no remote peer, with or without a key, holds every
//   worker with slow or silent connections. Loopback peers are not limited (IsLoopbackPeer):
//   any local user connects from any 127.x.y.z, so the limit cannot tell them apart.
//
// Which decisions bouncers see: active, not dry run, on an address (scope "Ip") or a range
// ("Range": feeds' CIDRs), whose action is block ("ban") or a challenge ("captcha"). Paths,
// token fingerprints and rate limits never. Nor one on a never-ban address (SetNeverBan:
// Cloudflare's ranges, this host's addresses, the allowlist) or a non-public one (loopback,
// private, CGNAT, link-local, ULA: NonPublicRanges, even before SetNeverBan); a range that
// overlaps one, or an IPv6 one that embeds one, as the edge guard judges (TouchesNeverBan): a
// firewall bouncer on an origin behind Cloudflare, or behind a proxy on a private network, would
// drop that address and every visitor it carries. Those are withheld
// (palisade_bouncer_decisions_withheld_total), and a change of the set takes back what it now
// covers and serves what it no longer covers. One whose end has passed is not served in `new` or
// live, though the table's sweep has not expired it yet (CrowdSec serves until > now only);
// its deletion comes with the sweep. `id` is a number kept for the decision's life,
// `scenario` its rule id (or "manual" / the feed's reason), `origin` CrowdSec's vocabulary
// ("crowdsec" for rules, "cscli" for manual decisions, "lists" for feeds), `duration` the time
// left as Go writes a duration ("3h59m57.07925426s"; negative for a deletion, as CrowdSec
// sends them). No `until` and no `simulated`: 1.4.6 has neither.
//
// The change log: bouncers pull at their own pace and a restart of either side must neither
// lose nor replay a deletion, so what a bouncer was served is a position in a durable sequence
// (Store::bouncer_changes). Every change of a visible decision takes the next sequence number
// and REPLACES its decision's row: the log holds one row per decision, its latest change, so a
// pull from position p is "the rows with seq > p" — a decision created and ended between two
// pulls comes once, as a deletion, as CrowdSec answers it. One exception, the reissue: a later
// end or another type of a decision already logged is served as a deletion of what was logged
// and a new entry, same id, in one pull (a row of its own holds the deletion, trimmed as
// deletions are), because crowdsec-firewall-bouncer skips a value already in its nftables set,
// and the host's ban would end at the first timeout. A reissue waits until kReissueHold after
// its decision's last row was logged (or that row's end, if sooner), keeping that row served
// meanwhile: crowdsec-custom-bouncer skips an add of a value it added less than its cache
// retention (10 s) before, a delete between or not. A bouncer that had not pulled the earlier
// row is served the deletion too (firewall bouncer: "not present"; custom: its script's del).
// A replacement waits the same way: a set that ends a decision and makes another one new on its
// scope and value (any such pair: a block taking over a challenge, or the reverse) keeps the
// ended row served until kReissueHold after it was logged, then logs its deletion and the new
// row together (before 2026-12-07 both went at once, and custom-bouncer deleted the value and
// skipped the add: the host stayed open to it). So an escalation reaches every bouncer up to
// kReissueHold (30 s) late: the old row (a captcha) is served meanwhile, the value covered. A
// restart during the hold holds it again (Attach: holds are not stored).
// The bouncer's position moves to the log's end served by a pull once its answer was written
// whole (handed to the kernel; then stored with the pull): an answer cut off (a stop, a kill, a
// reset, a write timeout) moves nothing, and the next pull serves the same changes again.
// Bytes the kernel took that the bouncer never read count as written (both bouncers take a
// replay: "already in set", "not present"). An answer written whole whose pull the store
// refuses moves nothing either, but its bouncer holds its rows: until a recorded position
// reaches what it served, the next pull reads the deletions too, even from position 0, and Trim
// keeps those above it (in memory; the record is tried again every second and at Stop, so a
// clean restart keeps them). So a crash between the write and the record replays rather than
// loses, also for a first answer (position 0): after a crash (or a stop while the store still
// refuses) the bouncer's next pull, with startup=false, reads the deletions logged since its
// registration (the store leaves the older ones out), and Trim keeps those for a bouncer with
// no pull recorded nor made since the start (only age and count trim them: before 2026-12-07
// the first Trim after a restart could drop them before that pull). A bouncer's
// next pull waits for its previous answer to be written or cut (up to kAnswerInFlightWait, on
// the API's clock), and the wait ends and the pull is counted in flight in one step: two pulls
// of one key at once are served one after the other. One that goes on past the wait is served
// beside the other, a replay at worst: at position 0 it reads the deletions too, and Trim keeps
// those above every position an answer in flight serves. Live rows stay as long as their
// decision; deletion rows are trimmed once every registered bouncer served anything (position
// > 0: a live-mode bouncer's never moves) was served past them and every one never pulled
// (above) was registered after them, or past deletion_retention, or past max_deletions (oldest
// first). A bouncer whose position lies below what age or count trimmed is "far behind": it
// gets a startup-style answer (every active decision in "new") plus the deletions still held —
// deletions older than those are lost to it, as with CrowdSec, whose expired decisions are
// flushed too.
// The log is fed by the decision table's listener (after the table stored the change) and
// written to the store in batches (every second, before any pull is answered, every 10,000
// changes or 16 MiB of them, at Stop): no bouncer is ever served a position the store does not
// hold. When the store refuses the log (a full disk) pulls are answered 500, and the ticker
// and pulls retry the write (the listener does not, once it failed); past 16 MiB of changes
// waiting, they are dropped (palisade_bouncer_log_overflows_total, logged once): every bouncer
// that pulled is then far behind and gets a startup-style answer, and once the store takes
// writes again the log is rebuilt from the active decisions, as at start. A crash
// loses the batch not yet written, and that is repaired at start (Attach): the table's active
// decisions are compared with the log's live rows, and only the differences are logged
// (nothing served is repeated: nothing past the store was served).
//
// Keys: 32 random bytes (hex, 64 chars) made by AddBouncer and shown once; only their SHA-256
// is stored, and a request's key is hashed and compared with every bouncer's hash in constant
// time. A key never reaches a log line, a metric label, a stored row or an error.
//
// Bad input: unknown parameters, unknown scopes / origins / types, a startup that is not
// true/false, an address or range that does not parse, a parameter given twice: 400
// {"message": "..."} naming it (CrowdSec answers a bad address 500, takes startup=maybe as
// false and ignores the rest: a bouncer that sends what we do not understand is told so
// instead of being served something else than it asked); a request target over
// max_query_bytes: 414 (CrowdSec: 431 past 1 MiB); another path or method: 405 with no body, as
// CrowdSec 1.4.6 answers.
//
// Metrics: palisade_bouncer_pulls_total{bouncer,kind=startup|stream|live},
// palisade_bouncer_decisions_served_total{bouncer,list=new|deleted},
// palisade_bouncer_last_pull_timestamp_seconds{bouncer} (the registration time until the first
// pull), palisade_bouncer_seconds_since_last_pull{bouncer} (refreshed every second; an answer
// delivered counts as a pull even when the store refused to record it),
// palisade_bouncer_pull_record_failures_total{bouncer} (pulls the store refused to record),
// palisade_bouncers_registered, palisade_bouncer_requests_refused_total{reason},
// palisade_bouncer_log_write_failures_total, palisade_bouncer_log_overflows_total,
// palisade_bouncer_decisions_withheld_total.
//
// Thread-safety: all public methods are thread-safe. The HTTP server runs on its own threads.
// The decision table's set listener (OnUpdates) takes the API's lock (mu_) once for each change
// set and logs the set whole: a pull's position is always at a set's end, never between a
// replaced decision's deletion and its replacement's creation. Since the listener waits for
// mu_, nothing that grows with the active decisions or with the requests is done under it: the
// active rows are an immutable snapshot (ranges parsed once, when logged) that a pull or a live
// question takes under mu_ by pointer and reads, filters and writes out after it; changes made
// meanwhile are a layer on top, folded into a new snapshot outside mu_ by the next such reader,
// or by the ticker once the layer holds a quarter as many rows as the snapshot. A live ip=
// question (nginx's and HAProxy's bouncers ask one per request their server takes) takes no
// snapshot: an index of the active rows by what they decide on, kept under mu_ with every
// change, gives it the rows on its address (one lookup per prefix length in use), which it
// filters and writes out after mu_, as the others do theirs. Trim's store transaction (a bulk
// delete) runs under pull_mu_ only.
#ifndef PALISADE_SERVICES_BOUNCER_API_BOUNCER_API_H_
#define PALISADE_SERVICES_BOUNCER_API_BOUNCER_API_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "palisade/v1/config.pb.h"
#include "palisade/v1/palisade.pb.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/bouncer_api/bouncer_api_config.h"
#include "services/common/clock.h"
#include "services/common/ip.h"
#include "services/decisions/decision_table.h"
#include "services/store/store.h"

namespace httplib {
class Server;
}

namespace palisade {

// One request as the server hands it over (tests call Handle with it directly).
struct BouncerRequest {
  std::string method = "GET";
  std::string path;
  // The request target's length (path and query as sent), for max_query_bytes.
  size_t target_bytes = 0;
  std::multimap<std::string, std::string> params;  // decoded
  std::string api_key;                             // X-Api-Key
  std::string address;                             // the peer
  std::string user_agent;
  // The request asked for byte ranges (a Range header): no bouncer does, and a range of an
  // answer written in pieces is refused (416), not served.
  bool ranged = false;
};

struct BouncerReply {
  int status = 200;
  std::string content_type = "application/json; charset=utf-8";
  std::string body;
};

struct BouncerInfo {
  std::string name;
  absl::Time created;
  absl::Time last_pull = absl::InfinitePast();  // InfinitePast: never
  std::string address;
  std::string user_agent;
  bool stale = false;
};

class BouncerApi {
 public:
  // Validates `config` (see BouncerApiConfigWithDefaults), loads the bouncers and the log's
  // position from `store`. Serves nothing until Start.
  static absl::StatusOr<std::unique_ptr<BouncerApi>> Create(
      const palisade::v1::BouncerApiConfig& config, Clock& clock, Store* store,
      prometheus::Registry& registry, std::function<void(const std::string&)> log = nullptr);
  ~BouncerApi();

  // Brings the log in line with the table's active decisions and follows its changes. Call
  // once, after the table's Restore and before anything changes the table.
  absl::Status Attach(DecisionTable& table);
  // Binds config.listen (port 0: any free port) and serves. kUnavailable naming the address
  // when it cannot listen; kNotFound / kInvalidArgument for TLS files that do not load.
  absl::Status Start();
  // Stops serving (requests in flight finish) and the metrics ticker.
  void Stop();
  int port() const { return port_; }

  // A change set, as the table's set listener hears it (Attach subscribes this): logged whole,
  // under one lock, so that no pull is served a part of it.
  void OnUpdates(const std::vector<DecisionUpdate>& updates);
  // The addresses no bouncer is served a decision on (palisaded's NeverBanSet; empty until
  // set), beside the non-public ranges, always withheld. Call it before Attach, so that the
  // log is brought in line at start, and again whenever the set changes (a reload): decisions
  // served that it now covers are logged as deletions, those withheld that it no longer covers
  // as new.
  void SetNeverBan(CidrSet never_ban) ABSL_LOCKS_EXCLUDED(mu_, fold_mu_);

  // Admin: a new bouncer and its key (returned once). kInvalidArgument for a name that is not
  // [A-Za-z0-9._@-]{1,64}; kAlreadyExists.
  absl::StatusOr<std::string> AddBouncer(const std::string& name);
  absl::Status DeleteBouncer(const std::string& name);  // kNotFound
  std::vector<BouncerInfo> ListBouncers();
  // Registered bouncers, and those stale (no pull within stale_after).
  std::pair<uint32_t, uint32_t> BouncerCounts();

  // Answers one request and takes it as delivered: a stream pull's position moves before this
  // returns (500 when the store refuses it). Tests and the benchmark call it; the HTTP server
  // moves the position only once the answer was written whole (see the header comment).
  BouncerReply Handle(const BouncerRequest& request);

  // Forgets what the log no longer needs (see the header comment); the ticker runs it every
  // minute. Returns the rows forgotten.
  absl::StatusOr<int64_t> Trim();

  // The log's last sequence number (tests).
  int64_t last_seq();
  // Writes the changes still in memory to the store (the ticker does it every second; tests).
  absl::Status Flush();
  // Bytes of the changes waiting for the store (tests).
  size_t pending_bytes();
  // Tests: replaces kMaxPendingBytes. Before any change.
  void SetMaxPendingBytesForTesting(size_t bytes) {
    absl::MutexLock lock(&mu_);
    max_pending_bytes_ = bytes;
  }
  // Tests: `hook` runs in every pull and live question once its rows are chosen and before its
  // answer is written, so a test can hold an answer there and see what waits for it. Set it
  // before any request.
  void SetAnswerHookForTesting(std::function<void()> hook) { answer_hook_ = std::move(hook); }
  // Tests: waits up to `timeout` until every stream answer the server was writing but `left` is
  // written or cut, and its pull recorded or not (a client has the whole answer before the
  // server's writer returns); whether no more than `left` are.
  bool WaitForAnswersForTesting(absl::Duration timeout, int left = 0);
  // Tests: `hook` runs in a stream pull that finds its bouncer's previous answer not settled
  // yet, as it starts to wait for it, under the API's lock (it must not call the API), so a
  // test can see a pull wait. Set it before any request.
  void SetPullWaitHookForTesting(std::function<void()> hook) { pull_wait_hook_ = std::move(hook); }
  // Tests: answers `request` as the HTTP server does, then drops what was to be done once it
  // was written, never run (as when anything throws between the pull's claim and the writer):
  // the pull's claim must be given back as not delivered.
  BouncerReply AnswerAndDropForTesting(const BouncerRequest& request) {
    return Answer(request).reply;
  }
  // Tests: `hook` runs in Trim just before its store transaction. Set it before any Trim.
  void SetTrimHookForTesting(std::function<void()> hook) { trim_hook_ = std::move(hook); }
  // Tests: answers live ip= questions as the others are, over every active row of a snapshot,
  // instead of from the index, so that a test can hold the two answers side by side.
  void SetLiveScanForTesting(bool scan) { live_scan_for_testing_ = scan; }
  // Tests: replaces IsLoopbackPeer, which decides the peers max_connections_per_address leaves
  // alone (a test can only connect over loopback). Before Start.
  void SetLoopbackPeerForTesting(std::function<bool(absl::string_view)> loopback) {
    loopback_peer_ = std::move(loopback);
  }

 private:
  // One active row as it is served, and what it decides on (see bouncer_api.cc). Immutable once
  // made: snapshots share it.
  struct ActiveRow;
  // Active rows by decision id. In a layer of changes, a null row is a decision that ended.
  using ActiveRows = absl::flat_hash_map<std::string, std::shared_ptr<const ActiveRow>>;
  // The active rows by the address or range they decide on, for live ip= questions (see
  // bouncer_api.cc).
  class LiveIndex;
  // The active rows as they were when the log's last sequence number was `seq`.
  struct Snapshot {
    std::shared_ptr<const ActiveRows> rows;
    int64_t seq = 0;
  };
  struct Bouncer {
    BouncerRow row;
    // The last pull the store holds (row.last_pull may be newer: a live question is stored at
    // most every kLivePullStoreInterval, and at Stop).
    absl::Time stored_pull = absl::InfinitePast();
    bool pull_unstored = false;
    // A live question's last try to store its pull (tried again kLivePullStoreInterval later
    // only), and whether the store refused to record a pull, live or stream (logged once until
    // a write goes through).
    absl::Time pull_store_tried = absl::InfinitePast();
    bool pull_store_failing = false;
    // Stream pulls past their wait for the previous answer whose answers are not settled yet
    // (PendingReply::settle): one, unless a pull waited kAnswerInFlightWait and went on. A
    // pull's wait ends and it counts itself in one step under mu_, so no two pulls read from
    // one position but past that wait (a replay then, never a loss).
    int pulls_in_flight = 0;
    // The positions served by those whose answers are being written, one each: Trim keeps the
    // deletions above the lowest for a bouncer still at 0.
    std::multiset<int64_t> in_flight_served;
    // The lowest position served by an answer written whole whose pull the store refused to
    // record, while the recorded position is below it (in memory only): the bouncer holds what
    // that answer brought, so its next pull is no first one (it reads the deletions too) and
    // Trim keeps the deletions above it. Cleared once a recorded position reaches it: a pull's
    // or RecordUnrecordedLocked's, which retries it every second and at Stop.
    std::optional<int64_t> unrecorded_served;
    prometheus::Counter* pulls_startup = nullptr;
    prometheus::Counter* pulls_stream = nullptr;
    prometheus::Counter* pulls_live = nullptr;
    prometheus::Counter* served_new = nullptr;
    prometheus::Counter* served_deleted = nullptr;
    prometheus::Gauge* last_pull = nullptr;
    prometheus::Gauge* since_last_pull = nullptr;
    prometheus::Counter* pull_record_failures = nullptr;
  };
  // A stream pull's claim on its bouncer's turn (Bouncer::pulls_in_flight) and, once its answer
  // is chosen, on the position it serves (in_flight_served, answers_in_flight_): given back once,
  // by its settle, or as not delivered when what holds it is dropped unrun (see bouncer_api.cc).
  class PullClaim;
  // An answer and, for a stream pull's 200, what to do once it was written: `settle(true)`
  // records the pull (the position moves to what was served); `settle(false)`, an answer not
  // written whole, records nothing. Either takes the pull out of its bouncer's pulls_in_flight
  // and in_flight_served; call it once. Dropped unrun, it does as settle(false) (its PullClaim).
  // Not OK when the store refuses the pull: the position stays, and what was served is kept in
  // the bouncer's unrecorded_served (the answer was delivered: its deletions are still owed).
  struct PendingReply {
    BouncerReply reply;
    std::function<absl::Status(bool delivered)> settle;
  };
  BouncerApi(palisade::v1::BouncerApiConfig config, Clock& clock, Store* store,
             prometheus::Registry& registry, std::function<void(const std::string&)> log);

  // The bouncer whose key this is, or null; in constant time over all bouncers.
  std::shared_ptr<Bouncer> Authenticate(const std::string& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether `b` is still registered (an answer is written outside mu_: its bouncer may have
  // been deleted meanwhile, and its metrics with it).
  bool RegisteredLocked(const std::shared_ptr<Bouncer>& b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddMetricsLocked(Bouncer& b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveMetricsLocked(Bouncer& b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Logs one change of a set (OnUpdates).
  void OnUpdateLocked(const DecisionUpdate& update, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The replacements in a set (`updates`) that must wait (replacing_): a decision ended whose
  // row was logged less than kReissueHold before, and another one new to bouncers on the same
  // scope and value.
  void FindReplacementsLocked(const std::vector<DecisionUpdate>& updates, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What decision `id` now is to bouncers (`row`; nullopt: nothing, it ended or is not
  // visible), against what the log serves of it: the rows to log go to `out` (none, a new row,
  // a deletion, or a reissue's two), a reissue or a replacement not yet due to held_ (the
  // replaced row stays served), a decision on a never-ban address to withheld_. Any earlier
  // hold of `id` is dropped first (a replacement's goes on with its new row, if any).
  void ChangeLocked(const std::string& id, std::optional<BouncerChangeRow> row, absl::Time now,
                    std::vector<BouncerChangeRow>* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Logs the held reissues due at the clock's time (the ticker; every pull, first).
  void ReleaseDueLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether what `decided` decides on touches never_ban_ or a non-public range (see the header
  // comment).
  bool NeverBanLocked(const std::optional<Cidr>& decided) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Numbers `rows`, applies them to the active rows (changes_) and queues them for the store
  // (pending_): written at kMaxPending rows or max_pending_bytes_, unless the last write
  // failed; dropped (DropPendingLocked) past max_pending_bytes_ when they cannot be written.
  void AppendLocked(std::vector<BouncerChangeRow> rows) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes pending_ in one transaction (kept on failure).
  absl::Status FlushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records again the pulls the store refused (Bouncer::unrecorded_served) at the position
  // their answers served, so a clean restart keeps the deletions they owe (the ticker, every
  // second, and Stop). Logs nothing: the refusal was logged once already.
  void RecordUnrecordedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets pending_, which the store refused past max_pending_bytes_: every bouncer that
  // pulled becomes far behind (trimmed_through_), and the log waits for a rebuild (rebuild_).
  void DropPendingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes pending_ and, after dropped changes, once the store takes writes again, brings its
  // live rows in line with the active rows (as Attach does at start). OK when the store holds
  // every change logged so far. Under pull_mu_: no pull is served between the two.
  absl::Status CatchUp() ABSL_EXCLUSIVE_LOCKS_REQUIRED(pull_mu_) ABSL_LOCKS_EXCLUDED(mu_);
  // The active row of decision `id` (null: none), through the layers: changes_, merging_,
  // active_. FindOlderLocked skips changes_.
  std::shared_ptr<const ActiveRow> FindLocked(const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::shared_ptr<const ActiveRow> FindOlderLocked(const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The active rows now: under mu_ a pointer (and the layer of changes moved aside), the fold of
  // the changes into a new snapshot after it.
  Snapshot TakeSnapshot() ABSL_LOCKS_EXCLUDED(mu_, fold_mu_);
  // Folds the layer of changes into a new snapshot when it holds at least a quarter as many rows
  // as the snapshot (the ticker): no reader may come for long (ip= questions take none), and
  // until one does the layer keeps replaced rows alive beside their successors.
  void FoldIfLarge() ABSL_LOCKS_EXCLUDED(mu_, fold_mu_);
  // Handle without taking the answer as delivered: the HTTP server settles it once written.
  PendingReply Answer(const BouncerRequest& request) ABSL_LOCKS_EXCLUDED(mu_, pull_mu_);
  PendingReply Stream(std::shared_ptr<Bouncer> bouncer, const BouncerRequest& request)
      ABSL_LOCKS_EXCLUDED(mu_, pull_mu_);
  BouncerReply Live(std::shared_ptr<Bouncer> bouncer, const BouncerRequest& request)
      ABSL_LOCKS_EXCLUDED(mu_);
  void RefreshStaleness();
  void Log(const std::string& message) const;

  const palisade::v1::BouncerApiConfig config_;
  Clock& clock_;
  Store* store_;
  prometheus::Registry& registry_;
  std::function<void(const std::string&)> log_;
  std::function<void()> answer_hook_;
  std::function<void()> pull_wait_hook_;
  std::function<void()> trim_hook_;
  std::function<bool(absl::string_view)> loopback_peer_;  // null: IsLoopbackPeer

  // Taken in this order. pull_mu_: one pull (or Trim) at a time, so that what a pull reads of
  // the log outside mu_ is not trimmed before its answer is made (whole, in memory; its
  // position, recorded once that is written, only rises, so Trim's bound stays safe).
  // fold_mu_: one fold of the active rows at a time (readers wait there for each other, never
  // the listener). mu_: everything else, held for nothing that grows with the active decisions
  // or the requests.
  absl::Mutex pull_mu_ ABSL_ACQUIRED_BEFORE(fold_mu_);
  absl::Mutex fold_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  absl::Mutex mu_;
  // shared_ptr: a request holds its bouncer while it answers outside mu_ (RegisteredLocked).
  std::map<std::string, std::shared_ptr<Bouncer>> bouncers_ ABSL_GUARDED_BY(mu_);
  // The live rows of the log, in layers, so that readers share them instead of copying them
  // under mu_: active_ is an immutable snapshot; merging_ (null but during a fold) the changes a
  // fold is applying to it outside mu_; changes_ those made since. A decision that ends with no
  // row in an older layer is erased from changes_ rather than marked, so what the layers hold
  // stays bounded by the active rows (each layer: its rows, and one mark per older row).
  std::shared_ptr<const ActiveRows> active_ ABSL_GUARDED_BY(mu_) =
      std::make_shared<const ActiveRows>();
  std::shared_ptr<const ActiveRows> merging_ ABSL_GUARDED_BY(mu_);
  ActiveRows changes_ ABSL_GUARDED_BY(mu_);
  // The rows FindLocked finds (the layers' view), by what they decide on: updated with them in
  // AppendLocked and rebuilt in Attach; a fold changes nothing in it.
  std::unique_ptr<LiveIndex> index_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> live_scan_for_testing_{false};
  int64_t last_seq_ ABSL_GUARDED_BY(mu_) = 0;
  // Stream answers being written, their pulls not settled yet (Bouncer::in_flight_served).
  int answers_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  // Changes numbered but not yet in the store: written together by the ticker (every second),
  // before any pull is answered, at kMaxPending, and at Stop.
  static constexpr size_t kMaxPending = 10'000;
  // A live-mode bouncer asks once per request its server takes: its pull is stored at most
  // this often (a question is not a write transaction), and at Stop.
  static constexpr absl::Duration kLivePullStoreInterval = absl::Minutes(1);
  // How long a bouncer's pull waits for its previous answer to be written or cut, on the API's
  // clock: past the server's 10 s write timeout, which cuts an answer whose reader stopped
  // reading. Past it (or once the API stops) the pull is served from the position as it is (a
  // replay at worst: positions only rise).
  static constexpr absl::Duration kAnswerInFlightWait = absl::Seconds(15);
  std::vector<BouncerChangeRow> pending_ ABSL_GUARDED_BY(mu_);
  // What pending_ may hold while the store refuses it (~60,000 changes): past it they are
  // dropped (DropPendingLocked).
  static constexpr size_t kMaxPendingBytes = size_t{16} << 20;
  size_t max_pending_bytes_ ABSL_GUARDED_BY(mu_) = kMaxPendingBytes;
  size_t pending_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // pending_'s rows and their strings
  // The last write failed: only the ticker and pulls retry it (not each change).
  bool write_failing_ ABSL_GUARDED_BY(mu_) = false;
  // Changes were dropped: the store's log misses some until CatchUp rebuilds it.
  bool rebuild_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t drops_ ABSL_GUARDED_BY(mu_) = 0;            // DropPendingLocked calls so far
  bool overflow_logged_ ABSL_GUARDED_BY(mu_) = false;  // a drop logged since the last write
  int64_t trimmed_through_ ABSL_GUARDED_BY(mu_) = 0;
  // A reissue waits this long after its decision's last row was logged (see the header
  // comment): crowdsec-custom-bouncer's cache keeps a value 10 s, and a bouncer polls every 10 s,
  // so the row was served at most ~10 s after it was logged and ~20 s are left to spare.
  static constexpr absl::Duration kReissueHold = absl::Seconds(30);
  // Reissues and replacements waiting (ChangeLocked), by decision id: the row to log, and when.
  // At most one per active decision; by_due orders them for ReleaseDueLocked. A replacement
  // (any decision new to bouncers on the value of one that ended in the same set, or before a
  // restart, and was logged less than kReissueHold before) names the decision it replaces,
  // whose row stays served until `due` and is then deleted in the same change set as `row` is
  // logged: custom-bouncer would otherwise run its del and skip the add of a value it added
  // < 10 s ago. An escalation so reaches bouncers up to kReissueHold late, the value covered.
  struct Held {
    BouncerChangeRow row;
    absl::Time due;
    std::string replaces;  // "" for a reissue
  };
  absl::flat_hash_map<std::string, Held> held_ ABSL_GUARDED_BY(mu_);
  std::set<std::pair<absl::Time, std::string>> held_by_due_ ABSL_GUARDED_BY(mu_);
  // During one set (OnUpdates; empty otherwise): by (scope, value), the decision this set ends
  // whose row stays served until `due`, because the set logs another one on that value.
  struct Replaced {
    std::string id;
    absl::Time due;
  };
  absl::flat_hash_map<std::pair<std::string, std::string>, Replaced> replacing_
      ABSL_GUARDED_BY(mu_);
  CidrSet never_ban_ ABSL_GUARDED_BY(mu_);
  // The decisions withheld for never_ban_ or a non-public range, by id, as they would be served:
  // few (a decision on a protected or private address), and what SetNeverBan serves when the
  // set no longer covers them.
  absl::flat_hash_map<std::string, BouncerChangeRow> withheld_ ABSL_GUARDED_BY(mu_);

  prometheus::Family<prometheus::Counter>* pulls_ = nullptr;
  prometheus::Family<prometheus::Counter>* served_ = nullptr;
  prometheus::Family<prometheus::Gauge>* last_pull_ = nullptr;
  prometheus::Family<prometheus::Gauge>* since_last_pull_ = nullptr;
  prometheus::Family<prometheus::Counter>* pull_record_failures_ = nullptr;
  prometheus::Gauge* registered_ = nullptr;
  prometheus::Family<prometheus::Counter>* refused_ = nullptr;
  prometheus::Counter* write_failures_ = nullptr;
  prometheus::Counter* overflows_ = nullptr;
  prometheus::Counter* withheld_total_ = nullptr;

  std::unique_ptr<httplib::Server> server_;
  std::thread server_thread_;
  std::thread ticker_;
  absl::Notification stopping_;
  int port_ = 0;
};

// Whether a peer address is a loopback one (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104), which
// max_connections_per_address does not limit (see config.proto).
bool IsLoopbackPeer(absl::string_view address);

// `text` gzipped (a stream answer, when the bouncer accepts gzip), in a string that holds no
// more than its bytes: the answer is kept for as long as its reader takes.
absl::StatusOr<std::string> GzipAnswer(absl::string_view text);

}  // namespace palisade

#endif  // PALISADE_SERVICES_BOUNCER_API_BOUNCER_API_H_
