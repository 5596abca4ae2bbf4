#include "services/server/audit_poller.h"

#include <algorithm>
#include <iostream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "services/common/proto_time.h"

namespace palisade {
namespace {

using json = nlohmann::json;

constexpr char kSnapshot[] = "audit_poller";

}  // namespace

AuditPoller::AuditPoller(CloudflareClient& client, Feed feed, Store* store, Clock& clock,
                         AuditPollerOptions options, prometheus::Registry& registry)
    : client_(client),
      feed_(std::move(feed)),
      store_(store),
      clock_(clock),
      options_(std::move(options)),
      polls_(prometheus::BuildCounter()
                 .Name("palisade_audit_log_polls_total")
                 .Help(
                     "Polls of the Cloudflare audit logs, by result (ok; incomplete: more new "
                     "records than max_pages x page_limit, the older not read; "
                     "overlap_truncated: a full read of the overlap ran out of pages, late "
                     "records deeper in it not read; failed)")
                 .Register(registry)),
      records_(prometheus::BuildCounter()
                   .Name("palisade_audit_log_records_total")
                   .Help("Cloudflare audit-log records fed to the rules (repeats skipped)")
                   .Register(registry)
                   .Add({})) {}

AuditPoller::~AuditPoller() { Stop(); }

absl::Status AuditPoller::Restore() {
  since_ = clock_.TimeNow() - options_.first_lookback;
  seen_.clear();
  // The API may have listed records late, below those fed, while palisaded was down: the first
  // poll reads the overlap once.
  last_full_read_ = absl::InfinitePast();
  if (store_ == nullptr) return absl::OkStatus();
  absl::StatusOr<std::string> blob = store_->LoadSnapshot(kSnapshot);
  if (!blob.ok()) return blob.status();
  if (blob->empty()) return absl::OkStatus();
  const json state = json::parse(*blob, nullptr, /*allow_exceptions=*/false);
  if (!state.is_object() || !state.contains("since") || !state["since"].is_number_integer() ||
      !state.contains("seen") || !state["seen"].is_object()) {
    // Not ours to fail the start over: read back first_lookback, as on a first start.
    return absl::OkStatus();
  }
  since_ = absl::FromUnixNanos(state["since"].get<int64_t>());
  for (const auto& [id, nanos] : state["seen"].items()) {
    if (nanos.is_number_integer()) seen_[id] = absl::FromUnixNanos(nanos.get<int64_t>());
  }
  return absl::OkStatus();
}

absl::Status AuditPoller::Save() {
  if (store_ == nullptr) return absl::OkStatus();
  json seen = json::object();
  for (const auto& [id, when] : seen_) seen[id] = absl::ToUnixNanos(when);
  json state = {{"since", absl::ToUnixNanos(since_)}, {"seen", std::move(seen)}};
  return store_->SaveSnapshot(kSnapshot, state.dump());
}

std::string AuditPoller::Line(const AuditLogEntry& e) {
  // The API's own field names, JSON-encoded: every quote in a value (an actor's email, a
  // resource id) is escaped, so no value can pass for the record's "actor" object.
  json record = {
      {"id", e.id},
      {"action",
       {{"type", e.action_type},
        {"result", e.action_result},
        {"time", absl::FormatTime(absl::RFC3339_full, e.when, absl::UTCTimeZone())}}},
      {"actor",
       {{"email", e.actor_email},
        {"ip_address", e.actor_ip},
        {"token_id", e.actor_token_id},
        {"token_name", e.actor_token_name}}},
      {"resource", {{"type", e.resource_type}, {"id", e.resource_id}}},
  };
  return record.dump(-1, ' ', /*ensure_ascii=*/true, json::error_handler_t::replace);
}

absl::Status AuditPoller::PollOnce() {
  // One query for the whole poll, newest first: its dates stay those of the position and now
  // (moving the position between pages would change the query under the cursor and skip
  // records), and the listing ends at the first record older than the position, so a day busy
  // before it costs a page, not a walk up from its 00:00.
  const absl::Time since = since_;
  const absl::Time before = clock_.TimeNow();
  // Between full reads the records below the newest ones are those fed before: a page of them
  // ends the poll, so a quiet poll costs one call, not the overlap's pages. Every
  // full_read_every (and first after a start) the poll reads the whole overlap again, for the
  // records the API listed late, by their time, below records already fed. It is done now if
  // waiting for the next poll, an interval on, would leave more than full_read_every between
  // full reads (">= full_read_every" rounded the gap up to whole intervals: 9m58s at 4m59s). A
  // clock stepped back (a negative gap) reads it too, rather than none until it catches up.
  const absl::Duration since_full_read = before - last_full_read_;
  const bool full_read = since_full_read < absl::ZeroDuration() ||
                         since_full_read + options_.interval > options_.full_read_every;
  std::vector<AuditLogEntry> gathered;  // newest first, the ones fed before skipped
  std::string cursor;
  bool reached_end = false;  // the listing reached the position (or ran out)
  bool reached_fed = false;  // a record fed before was read: every newer one was too
  for (int page_number = 0; page_number < options_.max_pages; ++page_number) {
    // Nothing is fed yet and the position has not moved: the next start reads these again.
    if (stop_.HasBeenNotified()) return absl::CancelledError("audit logs: stopping");
    absl::StatusOr<AuditLogPage> page =
        client_.ListAuditLogs(since, before, cursor, options_.page_limit,
                              CloudflareClient::AuditOrder::kNewestFirst);
    // A partial poll feeds nothing: feeding its newest part would move the position past the
    // part not read yet.
    if (!page.ok()) {
      last_full_read_ = absl::InfinitePast();  // see below: a failed poll
      return Finish(page.status(), "failed");
    }
    bool only_fed = !page->items.empty();
    for (AuditLogEntry& e : page->items) {
      if (!e.id.empty() && seen_.count(e.id)) {
        // Fed by an earlier poll: every record newer than it, so every one newer than the
        // position, has been read by now (newest first). Pages that run out below it leave
        // only records fed before, or listed late, unread: the poll is not incomplete.
        reached_fed = true;
        continue;
      }
      only_fed = false;
      gathered.push_back(std::move(e));
    }
    cursor = page->cursor;
    if (cursor.empty()) {
      reached_end = true;
      break;
    }
    if (only_fed && !full_read) break;
  }
  if (!reached_end && !reached_fed) {
    // More than max_pages x page_limit records newer than any fed before: the newest are fed
    // and the position moves past them, so the older part of this burst is never read.
    Log(absl::StrCat("poll incomplete: ", options_.max_pages, " pages of ", options_.page_limit,
                     " records did not reach back to ",
                     absl::FormatTime(absl::RFC3339_full, since, absl::UTCTimeZone()),
                     "; records older than ",
                     gathered.empty() ? std::string("the newest page")
                                      : absl::FormatTime(absl::RFC3339_full, gathered.back().when,
                                                         absl::UTCTimeZone()),
                     " were not read"));
  }
  // Oldest first, as the rules' windows expect, in batches of at most a page.
  std::reverse(gathered.begin(), gathered.end());
  absl::Status result = absl::OkStatus();
  size_t fed = 0;
  const size_t batch_size = static_cast<size_t>(std::max(1, options_.page_limit));
  while (fed < gathered.size()) {
    palisade::v1::LogBatch batch;
    batch.set_source(options_.source);
    batch.set_format(palisade::v1::LOG_FORMAT_CLOUDFLARE_AUDIT);
    batch.set_sequence(++sequence_);
    const size_t end = std::min(gathered.size(), fed + batch_size);
    for (size_t i = fed; i < end; ++i) {
      palisade::v1::LogRecord* record = batch.add_records();
      record->set_line(Line(gathered[i]));
      *record->mutable_event_time() = ToProtoTime(gathered[i].when);
    }
    if (absl::Status s = feed_(batch); !s.ok()) {
      result = s;
      break;
    }
    records_.Increment(batch.records_size());
    fed = end;
  }
  // The position moves once, past what was fed (the oldest first, so nothing older is left
  // behind): the newest fed less the overlap, with the ids inside the overlap remembered.
  absl::Time newest = absl::InfinitePast();
  for (size_t i = 0; i < fed; ++i) {
    if (!gathered[i].id.empty()) seen_[gathered[i].id] = gathered[i].when;
    newest = std::max(newest, gathered[i].when);
  }
  if (newest != absl::InfinitePast() && newest - options_.overlap > since_) {
    since_ = newest - options_.overlap;
  }
  for (auto it = seen_.begin(); it != seen_.end();) {
    it = it->second < since_ ? seen_.erase(it) : std::next(it);
  }
  if (seen_.size() > options_.max_seen_ids) {  // the oldest go first
    std::vector<absl::Time> times;
    times.reserve(seen_.size());
    for (const auto& [id, when] : seen_) times.push_back(when);
    auto cut = times.end() - options_.max_seen_ids;
    std::nth_element(times.begin(), cut, times.end());
    for (auto it = seen_.begin(); it != seen_.end();) {
      it = it->second < *cut ? seen_.erase(it) : std::next(it);
    }
  }
  if (fed > 0) {
    if (absl::Status s = Save(); !s.ok() && result.ok()) result = s;
  }
  // A failed poll may leave records read but not fed below records fed before (listed late),
  // which the next poll, stopping at the first page of fed ones, might not reach: it reads the
  // whole overlap. A full read whose pages ran out inside the overlap counts as done (a busy
  // account's overlap may hold more than max_pages x page_limit: retrying would make every poll
  // a full read), but not as "ok": late records deeper in the overlap were not read.
  if (!result.ok()) {
    last_full_read_ = absl::InfinitePast();
    return Finish(result, "failed");
  }
  if (full_read) last_full_read_ = before;
  if (!reached_end && !reached_fed) return Finish(result, "incomplete");
  if (!full_read) return Finish(result, "ok");
  const bool truncated = !reached_end;
  if (truncated && !overlap_truncated_) {  // one line an episode, as for failures
    Log(absl::StrCat("full read of the overlap truncated (logged again only after one reaches "
                     "back to the position): ",
                     options_.max_pages, " pages of ", options_.page_limit,
                     " records did not reach back to ",
                     absl::FormatTime(absl::RFC3339_full, since, absl::UTCTimeZone()),
                     "; records listed late below those read are not fed"));
  }
  overlap_truncated_ = truncated;
  return Finish(result, truncated ? "overlap_truncated" : "ok");
}

absl::Status AuditPoller::Finish(absl::Status status, const char* result) {
  polls_.Add({{"result", result}}).Increment();
  // One line when polls start failing and one when they recover, not one an interval.
  if (!status.ok() && !failing_) {
    Log(absl::StrCat("poll failed (logged again only once polls recover): ", status.ToString()));
  } else if (status.ok() && failing_) {
    Log("polls recovered");
  }
  failing_ = !status.ok();
  return status;
}

void AuditPoller::Log(const std::string& message) const {
  if (options_.log) {
    options_.log(message);
  } else {
    std::cerr << "palisaded: audit logs: " << message << std::endl;
  }
}

void AuditPoller::Start() {
  if (thread_ != nullptr) return;
  thread_ = std::make_unique<std::thread>([this] {
    do {
      (void)PollOnce();  // counted; the next poll reads the same records again
    } while (!stop_.WaitForNotificationWithTimeout(options_.interval));
  });
}

void AuditPoller::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();  // ends a poll between pages
  if (thread_ == nullptr) return;
  thread_->join();
  thread_.reset();
}

}  // namespace palisade
