// Reads the account's Cloudflare audit logs (v2, GET /accounts/{id}/logs/audit) on an interval
// and feeds each record, as one LOG_FORMAT_CLOUDFLARE_AUDIT line, to the pipeline: the only
// path by which audit records reach the rules that revoke API tokens by id
// (rules/cloudflare-audit.textproto). palisaded starts it when the loaded rules read audit
// records (ReadsAuditLogs, edge.h), every cloudflare.audit_logs_interval.
//
// A poll reads newest first from now back to the position, under one query, gathers the
// records not seen (at most max_pages x page_limit), feeds them oldest first, then moves and
// saves the position once. It stops at the first page holding only records fed before (a quiet
// poll: one call), except every full_read_every and first after a start, when it reads the whole
// overlap again for the records the API listed late.
//
// Position: `since` is the newest record time fed less the overlap (records the API had not yet
// indexed when the newest was read are picked up by the next poll), with the ids of the records
// fed inside that overlap, which are skipped when they come again (at most max_seen_ids, the
// oldest forgotten first). Both are kept in the store (snapshot "audit_poller") after each poll
// that fed records, so a restart neither feeds the same records again nor misses those written
// meanwhile (it reads the overlap once). A first start reads back first_lookback.
//
// Thread-safety: PollOnce may not run concurrently with itself; Start/Stop from one thread.
#ifndef PALISADE_SERVICES_SERVER_AUDIT_POLLER_H_
#define PALISADE_SERVICES_SERVER_AUDIT_POLLER_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "palisade/v1/palisade.pb.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"
#include "services/cloudflare/client.h"
#include "services/common/clock.h"
#include "services/store/store.h"

namespace palisade {

struct AuditPollerOptions {
  absl::Duration interval = absl::Seconds(60);  // CloudflareConfig.audit_logs_interval
  // How far back `since` stays behind the newest record seen: the API may list a record a
  // little after its time (minutes, at busy times).
  absl::Duration overlap = absl::Minutes(10);
  // How often a poll reads the whole overlap again, for the records the API listed late (by
  // their time, below records already fed); the polls between stop at the first page of records
  // already fed. Full reads are at most this far apart (a poll reads it if the next, an
  // interval on, would be later; a clock stepped back reads it at once). Tolerance: a record
  // listed up to overlap - full_read_every + interval after its time (defaults: 6 min; with
  // full_read_every <= interval, every poll a full read: overlap) is fed by the next full read,
  // as the poll before it left the position at least interval + overlap back; one listed later,
  // below records fed, can fall below the position first and is missed
  // (ARecordListedLaterThanTheToleranceIsMissed). Polls that take long shrink it by their time.
  absl::Duration full_read_every = absl::Minutes(5);
  // Where a first start (no saved position) begins: records of the hour before the start.
  absl::Duration first_lookback = absl::Hours(1);
  int page_limit = 100;   // records a page (the API takes 1..1000)
  // Pages a poll reads back from now; a poll that reaches neither the position nor a record fed
  // before in them feeds the newest, counts the poll "incomplete", and the older records of
  // that burst are not read. (A full read that runs out inside the records fed before is not
  // incomplete: every new record was read; only late ones listed deeper are not. It is counted
  // "overlap_truncated" and logged once until a full read reaches the position again.)
  int max_pages = 100;
  // Ids remembered inside the overlap: at least one full poll's (max_pages x page_limit). Beyond
  // it the oldest are forgotten and fed again if they come again (a repeat, never a miss).
  size_t max_seen_ids = 10000;
  std::string source = "cloudflare-audit";  // the batches' source (a metric label)
  // Where the poller's log lines go (none set: stderr, as palisaded's own).
  std::function<void(const std::string&)> log;
};

class AuditPoller {
 public:
  // Runs one batch of audit records through the pipeline (palisaded: ProcessBatch with
  // BatchSender::audit_records). A failure stops the poll; its records are read again next time.
  using Feed = std::function<absl::Status(const palisade::v1::LogBatch&)>;

  // `store` may be null: the position is then kept in memory only.
  AuditPoller(CloudflareClient& client, Feed feed, Store* store, Clock& clock,
              AuditPollerOptions options, prometheus::Registry& registry);
  ~AuditPoller();  // stops

  // Loads the saved position (none saved: first_lookback before now). Call before PollOnce.
  absl::Status Restore();
  // Reads the pages from now back to the position and feeds them, oldest first. A failed read
  // feeds nothing and leaves the position; a failed feed leaves what was fed before it fed and
  // the position past it. A poll stopped (Stop) between pages returns kCancelled, feeding
  // nothing.
  absl::Status PollOnce();
  // A thread that polls at once, then every interval, until Stop (which ends a poll between
  // pages).
  void Start();
  void Stop();

  // Not while the thread runs (Start..Stop): it writes the position.
  absl::Time since() const { return since_; }

 private:
  absl::Status Save();
  // Counts the poll under `result` and logs the first failure of a run and the recovery.
  absl::Status Finish(absl::Status status, const char* result);
  void Log(const std::string& message) const;
  // Renders one record as the JSON object the API answered (its fields the pack reads).
  static std::string Line(const AuditLogEntry& e);

  CloudflareClient& client_;
  Feed feed_;
  Store* const store_;
  Clock& clock_;
  const AuditPollerOptions options_;
  prometheus::Family<prometheus::Counter>& polls_;
  prometheus::Counter& records_;
  absl::Time since_ = absl::InfinitePast();
  std::map<std::string, absl::Time> seen_;  // id → record time, the records at or after since_
  absl::Time last_full_read_ = absl::InfinitePast();  // the last poll that read the overlap
  uint64_t sequence_ = 0;
  bool failing_ = false;  // the last poll failed (its failure logged)
  bool overlap_truncated_ = false;  // the last full read ran out of pages (logged)
  absl::Notification stop_;
  std::unique_ptr<std::thread> thread_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_SERVER_AUDIT_POLLER_H_
