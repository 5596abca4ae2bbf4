// Durable state in one SQLite database (WAL mode): decisions, the outbox of edge operations,
// what each actuator made at the edge, the offence history behind escalation, and snapshots
// (the engine's windows). The schema is versioned and migrated on open, and
// `PRAGMA integrity_check` must pass before anything is read.
//
// The write that matters: DecisionTable records a decision change and the outbox operation it
// implies (apply on creation, remove on expiry or withdrawal) in one transaction
// (RecordDecision), and the dispatcher removes an operation only once the edge confirmed it
// (CompleteApply / CompleteRemove write the edge record in the same transaction). A crash at
// any point therefore loses no operation; an operation confirmed at the edge but not yet marked
// done runs again, and the actuators are idempotent (duplicates adopted, missing deletes fine).
//
// Checkpoints (copying the WAL into the database file, with its fsyncs) run on a thread of the
// store's own, on a second connection: a commit only appends to the WAL and never waits for one
// (SQLite's automatic checkpoint ran in the commit that passed 1000 WAL pages, ~2 % of ingest's
// batch commits, 4-8 ms each while the decision table's lock was held). Durability is SQLite's
// WAL with synchronous=NORMAL either way: a committed transaction is in the WAL before the call
// returns, and survives a crash of the process.
//
// Thread-safety: thread-safe (one connection behind a mutex; the checkpointer's is its own).
#ifndef PALISADE_SERVICES_STORE_STORE_H_
#define PALISADE_SERVICES_STORE_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "palisade/v1/palisade.pb.h"

struct sqlite3;
struct sqlite3_stmt;

namespace palisade {

struct OutboxRow {
  int64_t seq = 0;
  bool apply = true;  // false: remove
  palisade::v1::Decision decision;
  int attempts = 0;
  absl::Time not_before = absl::InfinitePast();
};

struct EdgeRow {
  std::string decision_id;
  int actuator = 0;
  std::string id;
  std::string container;
  bool foreign = false;
};

// A CrowdSec-compatible bouncer (services/bouncer_api): its key only as a SHA-256 hash, and where
// its last pull left it in the change log.
struct BouncerRow {
  std::string name;
  std::string key_hash;  // SHA-256 of the key, raw 32 bytes
  absl::Time created = absl::InfinitePast();
  absl::Time last_pull = absl::InfinitePast();  // InfinitePast: never pulled
  std::string address;
  std::string user_agent;
  // The change log's sequence number the bouncer has been served up to (0: nothing yet).
  int64_t position = 0;
};

// One decision as bouncers see it: the latest change of it (the log keeps one row per decision,
// see BouncerApi), served to a bouncer whose position is below `seq`.
struct BouncerChangeRow {
  std::string decision_id;
  int64_t num = 0;  // the numeric id bouncers see; kept across changes
  int64_t seq = 0;
  bool deleted = false;
  absl::Time at = absl::InfinitePast();  // when the change was logged
  std::string scope;                     // "Ip" or "Range"
  std::string value;
  std::string type;  // "ban" or "captcha"
  std::string origin;
  std::string scenario;
  absl::Time until = absl::InfinitePast();
};

struct BouncerLogMeta {
  int64_t last_seq = 0;  // the highest sequence number handed out
  // Deletions up to here were trimmed by age or count: a bouncer below it missed some.
  int64_t trimmed_through = 0;
};

struct OffenceRow {
  std::string target;
  uint32_t count = 0;
  absl::Time last;
  // The row, > 0: numbered by the writer in the order its offenders came (DecisionTable), so
  // that new rows go to the table's end and an offender's row is found by its number. The
  // target has no index (schema version 3): a new offender inserted its address into one at a
  // random place, 7.4 of an ingest batch commit's 18.1 WAL pages (docs/PERFORMANCE.md,
  // "Twenty-fourth pass"). One target may have several rows (an offender forgotten and
  // back); a restart keeps its latest.
  int64_t id = 0;
  // Until when its count stands whichever rule applies next: the end of the escalation memory
  // of the rules that counted it (DecisionTable's Offences::counted_until). InfinitePast: not
  // known (a row written before schema version 4): the table guesses, as it did.
  absl::Time counted_until = absl::InfinitePast();
};

// A claim waiting behind its target's active decision (DecisionTable's covered claims: another
// kind of claim, weaker than the decision, decided when it ends if still due), schema version
// 5: what the decision would carry and until when. A rule id and a reason only (the operator's
// text for a manual claim, "" or a fold's note for a rule's), never a detection's secret.
struct WaitingClaimRow {
  std::string target;       // the target's value
  std::string decision_id;  // the decision it waits behind (WaitingClaims::decision_id)
  int origin = 0;      // palisade.v1.Origin
  int action = 0;      // palisade.v1.Action
  int actuator = 0;    // palisade.v1.Actuator
  bool dry_run = false;
  absl::Time expiry = absl::InfinitePast();
  std::string rule_id;
  std::string reason;
  // The offence it was escalated for when it began to wait behind a feed's decision (a feed
  // listing is none: the claim counted its own), decided with it; 0: the ended decision's.
  uint32_t offence = 0;
};

// A target's waiting claims as they now are: they replace the ones stored (none: it has none).
struct WaitingClaims {
  std::string target;
  // The id of the active decision they wait behind ("": none is active, and `claims` is empty),
  // written in each row: a restart restores a row only behind that very decision.
  std::string decision_id;
  std::vector<WaitingClaimRow> claims;
};

class Store {
 public:
  static constexpr int kSchemaVersion = 5;

  struct Options {
    // WAL pages after a commit past which the checkpointer thread is woken (~16 MiB; SQLite's
    // own automatic checkpoint is at 1000 pages). A page that many commits change (a B-tree's
    // right edge, an offender's row) is copied into the database once per checkpoint: at 1000
    // pages gRPC ingest wrote 204 MB an 800,000-line sshd run, at 4000 169 MB, with 8-11 % less
    // CPU (docs/PERFORMANCE.md, "Twenty-third pass").
    int checkpoint_pages = 4000;
    // WAL pages past which the committing thread checkpoints itself, as SQLite would: the bound
    // on the WAL when the checkpointer falls behind (~40 MiB).
    int writer_checkpoint_pages = 10000;
  };

  // Opens (creating if needed) and migrates the database. kDataLoss when the integrity check
  // fails; kFailedPrecondition for a database from a newer Palisade.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& path);
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& path,
                                                     const Options& options);
  // Stops the checkpointer, which copies what is left of the WAL into the database.
  ~Store();

  // One transaction: the decision as it is now, the offence count behind it (written to its
  // row, OffenceRow::id; kInvalidArgument without one), and, when `outbox` is set, the
  // operation it implies. Returns the operation's sequence number (0 when none).
  absl::StatusOr<int64_t> RecordDecision(const palisade::v1::Decision& d, const OffenceRow* offence,
                                         std::optional<bool> outbox);

  // The same for many changes in one transaction (a whole ingest batch): one commit instead of
  // one per decision. Returns the sequence numbers in order.
  struct Change {
    const palisade::v1::Decision* decision;
    std::optional<OffenceRow> offence;
    std::optional<bool> outbox;
    // A hint: the decision is most likely stored already with the same target and active flag
    // (an extension). Its row is then updated in place, the expiry and proto only (no index
    // entry moved), and written whole as without the hint when it is not there as said. What
    // is stored is the same either way.
    bool extension = false;
    // When set: what to store as the decision's proto (its serialization, made by the caller);
    // `decision` then gives the id, target, active flag and expiry only.
    std::optional<std::string> proto;
  };
  // `waiting`, in the same transaction after the changes: each target's waiting claims replace
  // the ones stored (the table writes them with the decision they wait behind).
  absl::StatusOr<std::vector<int64_t>> RecordDecisions(
      const std::vector<Change>& changes, const std::vector<WaitingClaims>& waiting = {});

  // The edge confirmed an operation: delete it from the outbox and write (or delete) the edge
  // record, in one transaction.
  absl::Status CompleteApply(int64_t seq, const EdgeRow& edge);
  absl::Status CompleteRemove(int64_t seq, const std::string& decision_id);
  // A new operation for an existing decision (the reconciler re-applying a missing object).
  absl::StatusOr<int64_t> AddOperation(const std::string& decision_id, bool apply);
  // Forgets an edge record (its object is gone from the edge).
  absl::Status ForgetEdge(const std::string& decision_id);
  // Drop an operation that will never run (permanent failure, or cancelled).
  absl::Status DropOperation(int64_t seq);
  absl::Status Reschedule(int64_t seq, int attempts, absl::Time not_before);

  absl::StatusOr<std::vector<palisade::v1::Decision>> LoadDecisions(bool active_only);
  // One decision by its id, active or ended: kNotFound when none is stored (pruned, or never
  // written), kDataLoss when its row is corrupt. Reads that row only, not the others.
  absl::StatusOr<palisade::v1::Decision> LoadDecision(const std::string& id);
  // The offences last seen at or after `since`, or whose count stands past `counted_after`
  // (their counted_until: a memory longer than `since` allows), the latest first, at most
  // `limit` of them (the history is kept for the retention; a restart needs only what
  // escalation can still use).
  absl::StatusOr<std::vector<OffenceRow>> LoadOffences(
      absl::Time since, size_t limit, absl::Time counted_after = absl::InfiniteFuture());
  // The highest offence row id stored (0: none): a writer numbers its new offenders after it.
  absl::StatusOr<int64_t> LastOffenceId();
  // The waiting claims whose expiry is after `after`, in the order they were written.
  absl::StatusOr<std::vector<WaitingClaimRow>> LoadWaitingClaims(absl::Time after);
  absl::StatusOr<std::vector<OutboxRow>> LoadOutbox();
  absl::StatusOr<std::vector<EdgeRow>> LoadEdges();

  absl::Status SaveSnapshot(const std::string& name, const std::string& blob);
  absl::StatusOr<std::string> LoadSnapshot(const std::string& name);  // "" when none

  // Bouncers (schema version 2). kAlreadyExists for a name taken; kNotFound for an unknown one.
  absl::Status AddBouncer(const BouncerRow& row);
  absl::Status DeleteBouncer(const std::string& name);
  absl::StatusOr<std::vector<BouncerRow>> LoadBouncers();
  // After a pull: when, from where, with what, and up to which position it was served.
  absl::Status RecordPull(const std::string& name, absl::Time at, const std::string& address,
                          const std::string& user_agent, int64_t position);

  // The bouncers' change log: `rows` replace the rows of their decisions, and the log's last
  // sequence number becomes `last_seq`, in one transaction.
  absl::Status RecordBouncerChanges(const std::vector<BouncerChangeRow>& rows, int64_t last_seq);
  // Retention (Config.state_retention): deletes the ended decisions whose expiry is before
  // `before` and that have nothing left at the edge (no queued operation, no edge record), and
  // the offences last seen before `before`, and the waiting claims that expired before it; at
  // most `limit` rows of each, in one transaction.
  struct Pruned {
    int64_t decisions = 0;
    int64_t offences = 0;
    int64_t waiting_claims = 0;
  };
  absl::StatusOr<Pruned> Prune(absl::Time before, int64_t limit);

  // Rows with seq > `after`, by seq; only the live ones (not deleted) when `live_only`.
  absl::StatusOr<std::vector<BouncerChangeRow>> LoadBouncerChanges(int64_t after, bool live_only);
  // Rows with seq > `after`, by seq: the live ones, and the deletions logged after
  // `deleted_after` (InfinitePast: all of them). The older deletions are left out by the query,
  // not read: a log may hold a million of them.
  absl::StatusOr<std::vector<BouncerChangeRow>> LoadBouncerChanges(int64_t after,
                                                                   absl::Time deleted_after);
  // The lowest seq of a deletion logged after `at` (0: none), for Trim to keep those.
  absl::StatusOr<int64_t> FirstBouncerDeletionAfter(absl::Time at);
  absl::StatusOr<BouncerLogMeta> LoadBouncerLogMeta();
  // Forgets deletions every bouncer was served (seq <= `served_through`), and those logged before
  // `older_than` or past the `max_deleted` newest (raising trimmed_through). Returns the rows
  // forgotten.
  absl::StatusOr<int64_t> TrimBouncerChanges(int64_t served_through, absl::Time older_than,
                                             int64_t max_deleted);

 private:
  explicit Store(sqlite3* db) : db_(db) {}
  // Opens the checkpointer's connection to `path` and starts its thread; the writer's
  // automatic checkpoint is turned off.
  absl::Status StartCheckpointer(const std::string& path, const Options& options)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // sqlite3_wal_hook: after each commit, on the committing thread (under mu_).
  static int OnWalCommit(void* store, sqlite3* db, const char* name, int pages);
  void CheckpointLoop();
  absl::Status Exec(const std::string& sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // COMMIT, and ROLLBACK when the COMMIT failed and left the transaction open.
  absl::Status CommitLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Migrate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<int64_t> RecordLocked(const Change& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RecordWaitingLocked(const WaitingClaims& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  // Prepared statements by their SQL literal, reused (reset) instead of parsed on every call.
  absl::flat_hash_map<const char*, sqlite3_stmt*> statements_ ABSL_GUARDED_BY(mu_);

  // The checkpointer (none for ":memory:", which has no WAL).
  Options options_;
  sqlite3* checkpoint_db_ = nullptr;  // used only by checkpointer_ once it runs
  std::thread checkpointer_;
  absl::Mutex checkpoint_mu_;
  bool checkpoint_wanted_ ABSL_GUARDED_BY(checkpoint_mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(checkpoint_mu_) = false;
  int asked_at_pages_ ABSL_GUARDED_BY(mu_) = 0;  // the WAL's pages when the writer last asked
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_STORE_STORE_H_
