#include "services/store/store.h"

#include <sqlite3.h>

#include <algorithm>
#include <iterator>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace palisade {
namespace {

// A decision's expiry in unix milliseconds, saturated (seconds * 1000 overflowed for an expiry
// past the year 292 million: undefined behaviour; rules and manual bans now stop at ten years).
int64_t ExpiryMillis(const palisade::v1::Decision& d) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max() / 1000;
  const int64_t s = d.expiry().seconds();
  if (s >= kMax) return std::numeric_limits<int64_t>::max();
  if (s <= -kMax) return std::numeric_limits<int64_t>::min();
  return s * 1000;
}

// A prepared statement that finalizes itself. (SQLite's C API is used directly: it is small,
// and no C++ wrapper is packaged in Debian that is better kept than SQLite itself.)
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  // From the store's cache (keyed by the SQL literal's address): prepared once, reset after use.
  Stmt(absl::flat_hash_map<const char*, sqlite3_stmt*>& cache, sqlite3* db, const char* sql)
      : db_(db), cached_(true) {
    auto it = cache.find(sql);
    if (it != cache.end()) {
      stmt_ = it->second;
      rc_ = SQLITE_OK;
      return;
    }
    rc_ = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr);
    if (rc_ == SQLITE_OK) cache.emplace(sql, stmt_);
  }
  ~Stmt() {
    if (cached_ && rc_ == SQLITE_OK) {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    } else {
      sqlite3_finalize(stmt_);
    }
  }
  bool ok() const { return rc_ == SQLITE_OK; }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Stmt& BindNull(int i) {
    sqlite3_bind_null(stmt_, i);
    return *this;
  }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  // Not copied: `v`'s bytes must stay until this Stmt is gone (reset or finalized).
  Stmt& BindUncopied(int i, absl::string_view v) {
    sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE, or an error.
  int Step() { return sqlite3_step(stmt_); }
  // A query's next row: true at a row, false at the end or on an error, which Finished() then
  // tells apart. `while (q.Next()) {...}` followed by Finished: a read that fails half-way (a
  // disk error, a lock held past the busy timeout) is an error, not a short answer.
  bool Next() {
    last_ = Step();
    return last_ == SQLITE_ROW;
  }
  absl::Status Finished(const char* what) const {
    if (last_ == SQLITE_DONE || last_ == SQLITE_ROW) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("store: ", what, ": ", sqlite3_errmsg(db_)));
  }
  int64_t Int(int col) { return sqlite3_column_int64(stmt_, col); }
  bool IsNull(int col) { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  std::string Blob(int col) {
    const void* p = sqlite3_column_blob(stmt_, col);
    return p ? std::string(static_cast<const char*>(p), sqlite3_column_bytes(stmt_, col)) : "";
  }
  absl::Status Done(const char* what) {
    int rc = Step();
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("store: ", what, ": ", sqlite3_errmsg(db_)));
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
  int last_ = SQLITE_DONE;  // Next's last step
  bool cached_ = false;
};

int64_t Millis(absl::Time t) { return t == absl::InfinitePast() ? 0 : absl::ToUnixMillis(t); }

absl::Status Prepared(const Stmt& s, sqlite3* db) {
  if (s.ok()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("store: prepare: ", sqlite3_errmsg(db)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& path) {
  return Open(path, Options());
}

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& path,
                                                   const Options& options) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    std::string err = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("store: cannot open ", path, ": ", err));
  }
  std::unique_ptr<Store> store(new Store(db));
  absl::MutexLock lock(&store->mu_);
  sqlite3_busy_timeout(db, 5000);
  {
    Stmt check(db, "PRAGMA integrity_check");
    if (!check.ok() || check.Step() != SQLITE_ROW || check.Blob(0) != "ok") {
      return absl::DataLossError(absl::StrCat("store: ", path, " fails PRAGMA integrity_check"));
    }
  }
  bool wal = false;
  {
    Stmt mode(db, "PRAGMA journal_mode=WAL");  // answers the mode now in use (":memory:": memory)
    if (!mode.ok() || mode.Step() != SQLITE_ROW) {
      return absl::InternalError(absl::StrCat("store: ", sqlite3_errmsg(db)));
    }
    wal = mode.Blob(0) == "wal";
  }
  absl::Status s = store->Exec("PRAGMA synchronous=NORMAL");
  if (s.ok()) s = store->Exec("PRAGMA foreign_keys=ON");
  if (s.ok()) s = store->Migrate();
  if (s.ok() && wal) s = store->StartCheckpointer(path, options);
  if (!s.ok()) return s;
  return store;
}

absl::Status Store::StartCheckpointer(const std::string& path, const Options& options) {
  options_ = options;
  if (sqlite3_open_v2(path.c_str(), &checkpoint_db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    std::string err = checkpoint_db_ ? sqlite3_errmsg(checkpoint_db_) : "out of memory";
    sqlite3_close(checkpoint_db_);
    checkpoint_db_ = nullptr;
    return absl::UnavailableError(
        absl::StrCat("store: cannot open ", path, " for checkpoints: ", err));
  }
  sqlite3_busy_timeout(checkpoint_db_, 5000);
  // A checkpoint syncs the WAL before copying it and the database after, as the writer's did.
  if (sqlite3_exec(checkpoint_db_, "PRAGMA synchronous=NORMAL", nullptr, nullptr, nullptr) !=
      SQLITE_OK) {
    return absl::InternalError(absl::StrCat("store: ", sqlite3_errmsg(checkpoint_db_)));
  }
  // Replaces SQLite's automatic checkpoint (itself a WAL hook) on the writer's connection.
  sqlite3_wal_hook(db_, &Store::OnWalCommit, this);
  checkpointer_ = std::thread([this] { CheckpointLoop(); });
  return absl::OkStatus();
}

int Store::OnWalCommit(void* arg, sqlite3* db, const char* name, int pages) {
  Store* store = static_cast<Store*>(arg);
  // A commit on db_, which is only used under mu_ (SQLite calls this from inside it).
  store->mu_.AssertHeld();
  if (pages >= store->options_.writer_checkpoint_pages) {
    // The checkpointer fell behind (or a reader pins the WAL): what SQLite's own hook does.
    (void)sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  } else if (pages >= store->options_.checkpoint_pages &&
             (pages < store->asked_at_pages_ ||
              pages >= store->asked_at_pages_ + store->options_.checkpoint_pages / 8)) {
    // Asked again every eighth of the threshold while the WAL stays past it (a checkpoint
    // overtaken by commits does not finish it): each checkpoint that copies anything syncs the
    // WAL and the database, and asking after every commit made ~5x the syncs for no gain.
    store->asked_at_pages_ = pages;
    absl::MutexLock lock(&store->checkpoint_mu_);
    store->checkpoint_wanted_ = true;
  }
  return SQLITE_OK;
}

void Store::CheckpointLoop() {
  // Whether the last checkpoint left part of the WAL uncopied (busy, overtaken by commits, or
  // held back by a reader): then it tries again after kCheckpointRetry even if no commit asks,
  // so a burst of commits that stops is still copied in whole (and the database synced).
  constexpr absl::Duration kCheckpointRetry = absl::Milliseconds(100);
  bool unfinished = false;
  // The WAL's length (frames) the last pass that copied all it saw found. SQLite syncs the
  // database after a checkpoint only when the copy reached the end of the WAL as it is then: a
  // pass overtaken by a commit copied all it saw and synced nothing, and may be the last one
  // asked for. So a pass is taken as finished only when it finds the WAL as long as that one
  // did: then nothing came after that pass's copy, which reached the end and synced.
  int whole_at = -1;
  while (true) {
    {
      absl::MutexLock lock(&checkpoint_mu_);
      const absl::Condition asked(
          +[](Store* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->checkpoint_mu_) {
            return s->checkpoint_wanted_ || s->stopping_;
          },
          this);
      if (unfinished) {
        checkpoint_mu_.AwaitWithTimeout(asked, kCheckpointRetry);
      } else {
        checkpoint_mu_.Await(asked);
      }
      if (stopping_) break;
      checkpoint_wanted_ = false;
    }
    // PASSIVE: copies what no reader still needs and never waits for the writer. A checkpoint
    // overtaken by new commits is followed at once by a shorter one, while they make progress,
    // until one copies the whole WAL (and only that one syncs the database); the next commit
    // starts the WAL over from its beginning. A failure leaves the WAL longer, nothing lost.
    int previous = -1;
    unfinished = true;
    while (true) {
      int frames = 0, copied = 0;
      if (sqlite3_wal_checkpoint_v2(checkpoint_db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &frames,
                                    &copied) != SQLITE_OK) {
        break;
      }
      if (copied >= frames) {
        unfinished = frames != whole_at;
        whole_at = frames;
        break;
      }
      if (copied <= previous) break;
      previous = copied;
      absl::MutexLock lock(&checkpoint_mu_);
      if (stopping_) break;
    }
  }
  // The last connection to close copies the rest of the WAL into the database and deletes it.
  sqlite3_close(checkpoint_db_);
}

Store::~Store() {
  {
    absl::MutexLock lock(&mu_);
    for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
    sqlite3_close(db_);
  }
  if (checkpointer_.joinable()) {
    {
      absl::MutexLock lock(&checkpoint_mu_);
      stopping_ = true;
    }
    checkpointer_.join();
  } else if (checkpoint_db_ != nullptr) {
    sqlite3_close(checkpoint_db_);
  }
}

absl::Status Store::Exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return absl::InternalError(absl::StrCat("store: ", msg));
  }
  return absl::OkStatus();
}

absl::Status Store::CommitLocked() {
  absl::Status s = Exec("COMMIT");
  // A failed COMMIT (a deferred constraint, SQLITE_BUSY, a full disk) can leave the transaction
  // open, and then every later BEGIN fails: roll it back so the next transaction starts clean.
  if (!s.ok() && !sqlite3_get_autocommit(db_)) (void)Exec("ROLLBACK");
  return s;
}

namespace {

// The schema, a step a version (Migrate). Version 1: decisions, the outbox, edge records,
// offences and snapshots.
constexpr const char* kSchema1 = R"sql(
    BEGIN;
    CREATE TABLE decisions (
      id TEXT PRIMARY KEY,
      target TEXT NOT NULL,
      active INTEGER NOT NULL,
      expiry_ms INTEGER NOT NULL,
      proto BLOB NOT NULL);
    CREATE INDEX decisions_active ON decisions(active);
    CREATE TABLE outbox (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      decision_id TEXT NOT NULL,
      apply INTEGER NOT NULL,
      attempts INTEGER NOT NULL DEFAULT 0,
      not_before_ms INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE edges (
      decision_id TEXT PRIMARY KEY,
      actuator INTEGER NOT NULL,
      edge_id TEXT NOT NULL,
      container TEXT NOT NULL,
      foreign_object INTEGER NOT NULL);
    CREATE TABLE offences (
      target TEXT PRIMARY KEY,
      count INTEGER NOT NULL,
      last_ms INTEGER NOT NULL);
    CREATE TABLE snapshots (
      name TEXT PRIMARY KEY,
      blob BLOB NOT NULL);
    PRAGMA user_version = 1;
    COMMIT;)sql";

// Version 2: CrowdSec-compatible bouncers and their change log (services/bouncer_api).
// bouncer_changes holds one row per decision a bouncer may see, its latest change: what a
// pull from any earlier position is served (see bouncer_api.h).
constexpr const char* kSchema2 = R"sql(
    BEGIN;
    CREATE TABLE bouncers (
      name TEXT PRIMARY KEY,
      key_hash BLOB NOT NULL UNIQUE,
      created_ms INTEGER NOT NULL,
      last_pull_ms INTEGER NOT NULL DEFAULT 0,
      address TEXT NOT NULL DEFAULT '',
      user_agent TEXT NOT NULL DEFAULT '',
      position INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE bouncer_changes (
      decision_id TEXT PRIMARY KEY,
      num INTEGER NOT NULL,
      seq INTEGER NOT NULL,
      deleted INTEGER NOT NULL,
      at_ms INTEGER NOT NULL,
      scope TEXT NOT NULL,
      value TEXT NOT NULL,
      type TEXT NOT NULL,
      origin TEXT NOT NULL,
      scenario TEXT NOT NULL,
      until_ms INTEGER NOT NULL);
    CREATE INDEX bouncer_changes_seq ON bouncer_changes(seq);
    CREATE TABLE bouncer_log (
      key TEXT PRIMARY KEY,
      value INTEGER NOT NULL);
    PRAGMA user_version = 2;
    COMMIT;)sql";

// Version 3: offences are keyed by a row number their writer gives in the order offenders
// came (OffenceRow::id), with no index on the target. The rows keep their numbers.
constexpr const char* kSchema3 = R"sql(
    BEGIN;
    CREATE TABLE offences_v3 (
      id INTEGER PRIMARY KEY,
      target TEXT NOT NULL,
      count INTEGER NOT NULL,
      last_ms INTEGER NOT NULL);
    INSERT INTO offences_v3(id, target, count, last_ms)
      SELECT rowid, target, count, last_ms FROM offences;
    DROP TABLE offences;
    ALTER TABLE offences_v3 RENAME TO offences;
    PRAGMA user_version = 3;
    COMMIT;)sql";

// Version 4: an offence row keeps until when its count stands (OffenceRow::counted_until), so a
// restart knows the memories of the rules that counted it. Older rows get NULL: not known.
constexpr const char* kSchema4 = R"sql(
    BEGIN;
    ALTER TABLE offences ADD COLUMN counted_until_ms INTEGER;
    PRAGMA user_version = 4;
    COMMIT;)sql";

// Version 5: the claims waiting behind a target's decision (WaitingClaimRow), which a restart
// lost (only the feeds' came back, with the first sync). Rows of a target are replaced
// together, found by the target's index; each names the decision it waits behind, so that a
// row a mirror could not keep up to date never comes back behind another decision. That
// decision is the target's active one, or, on a cluster mirror, one its own sweep ended before
// the writer's word came (kept for a take-over: DecisionTable::RestoreMirrorEndedLocked).
constexpr const char* kSchema5 = R"sql(
    BEGIN;
    CREATE TABLE waiting_claims (
      target TEXT NOT NULL,
      decision_id TEXT NOT NULL,
      origin INTEGER NOT NULL,
      action INTEGER NOT NULL,
      actuator INTEGER NOT NULL,
      dry_run INTEGER NOT NULL,
      expiry_ms INTEGER NOT NULL,
      rule_id TEXT NOT NULL,
      reason TEXT NOT NULL,
      offence INTEGER NOT NULL);
    CREATE INDEX waiting_claims_target ON waiting_claims(target);
    PRAGMA user_version = 5;
    COMMIT;)sql";

}  // namespace

absl::Status Store::Migrate() {
  int version = 0;
  {
    Stmt v(statements_, db_, "PRAGMA user_version");
    if (absl::Status s = Prepared(v, db_); !s.ok()) return s;
    if (v.Next()) version = static_cast<int>(v.Int(0));
    if (absl::Status s = v.Finished("schema version"); !s.ok()) return s;
  }
  if (version > kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "store: schema version ", version, " is newer than this palisaded (", kSchemaVersion, ")"));
  }
  // Each step takes the file one version on, in a transaction of its own.
  static constexpr const char* kSteps[] = {kSchema1, kSchema2, kSchema3, kSchema4, kSchema5};
  static_assert(std::size(kSteps) == kSchemaVersion);
  for (int v = version; v < kSchemaVersion; ++v) {
    if (absl::Status s = Exec(kSteps[v]); !s.ok()) {
      (void)Exec("ROLLBACK");
      return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Store::RecordDecision(const palisade::v1::Decision& d,
                                              const OffenceRow* offence,
                                              std::optional<bool> outbox) {
  Change c{&d, offence ? std::optional<OffenceRow>(*offence) : std::nullopt, outbox};
  absl::StatusOr<std::vector<int64_t>> seqs = RecordDecisions({c});
  if (!seqs.ok()) return seqs.status();
  return (*seqs)[0];
}

absl::StatusOr<std::vector<int64_t>> Store::RecordDecisions(
    const std::vector<Change>& changes, const std::vector<WaitingClaims>& waiting) {
  absl::MutexLock lock(&mu_);
  absl::Status s = Exec("BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  std::vector<int64_t> seqs;
  seqs.reserve(changes.size());
  for (const Change& c : changes) {
    absl::StatusOr<int64_t> seq = RecordLocked(c);
    if (!seq.ok()) {
      (void)Exec("ROLLBACK");
      return seq.status();
    }
    seqs.push_back(*seq);
  }
  for (const WaitingClaims& w : waiting) {
    if (s = RecordWaitingLocked(w); !s.ok()) {
      (void)Exec("ROLLBACK");
      return s;
    }
  }
  s = CommitLocked();
  if (!s.ok()) return s;
  return seqs;
}

absl::Status Store::RecordWaitingLocked(const WaitingClaims& w) {
  Stmt del(statements_, db_, "DELETE FROM waiting_claims WHERE target = ?");
  absl::Status s = Prepared(del, db_);
  if (s.ok()) s = del.BindUncopied(1, w.target).Done("record waiting claims");
  for (const WaitingClaimRow& c : w.claims) {
    if (!s.ok()) break;
    Stmt ins(statements_, db_,
             "INSERT INTO waiting_claims(target, decision_id, origin, action, actuator, dry_run, "
             "expiry_ms, rule_id, reason, offence) VALUES(?,?,?,?,?,?,?,?,?,?)");
    s = Prepared(ins, db_);
    if (s.ok()) {
      s = ins.BindUncopied(1, w.target)
              .BindUncopied(2, w.decision_id)
              .Bind(3, int64_t{c.origin})
              .Bind(4, int64_t{c.action})
              .Bind(5, int64_t{c.actuator})
              .Bind(6, int64_t{c.dry_run})
              .Bind(7, Millis(c.expiry))
              .BindUncopied(8, c.rule_id)
              .BindUncopied(9, c.reason)
              .Bind(10, int64_t{c.offence})
              .Done("record waiting claim");
    }
  }
  return s;
}

absl::StatusOr<std::vector<WaitingClaimRow>> Store::LoadWaitingClaims(absl::Time after) {
  absl::MutexLock lock(&mu_);
  Stmt q(statements_, db_,
         "SELECT target, origin, action, actuator, dry_run, expiry_ms, rule_id, reason, "
         "decision_id, offence FROM waiting_claims WHERE expiry_ms > ? ORDER BY rowid");
  absl::Status s = Prepared(q, db_);
  if (!s.ok()) return s;
  q.Bind(1, Millis(after));
  std::vector<WaitingClaimRow> out;
  while (q.Next()) {
    WaitingClaimRow row;
    row.target = q.Blob(0);
    row.origin = static_cast<int>(q.Int(1));
    row.action = static_cast<int>(q.Int(2));
    row.actuator = static_cast<int>(q.Int(3));
    row.dry_run = q.Int(4) != 0;
    row.expiry = absl::FromUnixMillis(q.Int(5));
    row.rule_id = q.Blob(6);
    row.reason = q.Blob(7);
    row.decision_id = q.Blob(8);
    row.offence = static_cast<uint32_t>(q.Int(9));
    out.push_back(std::move(row));
  }
  if (s = q.Finished("load waiting claims"); !s.ok()) return s;
  return out;
}

absl::StatusOr<int64_t> Store::RecordLocked(const Change& c) {
  const palisade::v1::Decision& d = *c.decision;
  if (c.offence.has_value() && c.offence->id <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("store: the offence of decision ", d.id(), " has no row id"));
  }
  // Declared before the statements (which are reset before it goes): bound without a copy.
  std::string serialized;
  const std::string& proto =
      c.proto.has_value() ? *c.proto : (serialized = d.SerializeAsString());
  absl::Status s;
  // An extension: the row is updated in place when it holds the same target and active flag
  // (only expiry_ms and proto change, no index entry moves); else, or when it is missing, the
  // decision is written whole. callgrind, an ingest-like load (17 changes a transaction, two
  // thirds extensions): ~12 % of the store's instructions, and ~5 % more for binding the proto
  // and strings without a copy.
  bool written = false;
  if (c.extension) {
    Stmt ext(statements_, db_,
             "UPDATE decisions SET expiry_ms=?, proto=? WHERE id=? AND target=? AND active=?");
    s = Prepared(ext, db_);
    if (s.ok()) {
      s = ext.Bind(1, ExpiryMillis(d))
              .BindUncopied(2, proto)
              .BindUncopied(3, d.id())
              .BindUncopied(4, d.target().value())
              .Bind(5, int64_t{d.active()})
              .Done("record decision");
    }
    written = s.ok() && sqlite3_changes(db_) == 1;
  }
  if (s.ok() && !written) {
    Stmt up(statements_, db_,
            "INSERT INTO decisions(id, target, active, expiry_ms, proto) VALUES(?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET target=excluded.target, active=excluded.active, "
            "expiry_ms=excluded.expiry_ms, proto=excluded.proto");
    s = Prepared(up, db_);
    if (s.ok()) {
      s = up.BindUncopied(1, d.id())
              .BindUncopied(2, d.target().value())
              .Bind(3, int64_t{d.active()})
              .Bind(4, ExpiryMillis(d))
              .BindUncopied(5, proto)
              .Done("record decision");
    }
  }
  if (s.ok() && c.offence.has_value()) {
    // By its row: an offender's row is found by its number, a new one goes at the end.
    Stmt off(statements_, db_,
             "INSERT INTO offences(id, target, count, last_ms, counted_until_ms) "
             "VALUES(?,?,?,?,?) ON CONFLICT(id) "
             "DO UPDATE SET target=excluded.target, count=excluded.count, "
             "last_ms=excluded.last_ms, counted_until_ms=excluded.counted_until_ms");
    s = Prepared(off, db_);
    if (s.ok()) {
      off.Bind(1, c.offence->id)
          .BindUncopied(2, c.offence->target)
          .Bind(3, int64_t{c.offence->count})
          .Bind(4, Millis(c.offence->last));
      if (c.offence->counted_until == absl::InfinitePast()) {
        off.BindNull(5);
      } else {
        off.Bind(5, absl::ToUnixMillis(c.offence->counted_until));
      }
      s = off.Done("record offence");
    }
  }
  int64_t seq = 0;
  if (s.ok() && c.outbox.has_value()) {
    Stmt op(statements_, db_, "INSERT INTO outbox(decision_id, apply) VALUES(?,?)");
    s = Prepared(op, db_);
    if (s.ok()) s = op.BindUncopied(1, d.id()).Bind(2, int64_t{*c.outbox}).Done("record operation");
    seq = sqlite3_last_insert_rowid(db_);
  }
  if (!s.ok()) return s;
  return seq;
}

absl::Status Store::CompleteApply(int64_t seq, const EdgeRow& edge) {
  absl::MutexLock lock(&mu_);
  absl::Status s = Exec("BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  {
    Stmt del(statements_, db_, "DELETE FROM outbox WHERE seq = ?");
    s = Prepared(del, db_);
    if (s.ok()) s = del.Bind(1, seq).Done("complete apply");
  }
  if (s.ok()) {
    Stmt up(statements_, db_,
            "INSERT OR REPLACE INTO edges(decision_id, actuator, edge_id, container, "
            "foreign_object) VALUES(?,?,?,?,?)");
    s = Prepared(up, db_);
    if (s.ok()) {
      s = up.Bind(1, edge.decision_id)
              .Bind(2, int64_t{edge.actuator})
              .Bind(3, edge.id)
              .Bind(4, edge.container)
              .Bind(5, int64_t{edge.foreign})
              .Done("record edge");
    }
  }
  if (!s.ok()) {
    (void)Exec("ROLLBACK");
    return s;
  }
  return CommitLocked();
}

absl::Status Store::CompleteRemove(int64_t seq, const std::string& decision_id) {
  absl::MutexLock lock(&mu_);
  absl::Status s = Exec("BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  {
    Stmt del(statements_, db_, "DELETE FROM outbox WHERE seq = ?");
    s = Prepared(del, db_);
    if (s.ok()) s = del.Bind(1, seq).Done("complete remove");
  }
  if (s.ok()) {
    Stmt del(statements_, db_, "DELETE FROM edges WHERE decision_id = ?");
    s = Prepared(del, db_);
    if (s.ok()) s = del.Bind(1, decision_id).Done("forget edge");
  }
  if (!s.ok()) {
    (void)Exec("ROLLBACK");
    return s;
  }
  return CommitLocked();
}

absl::StatusOr<int64_t> Store::AddOperation(const std::string& decision_id, bool apply) {
  absl::MutexLock lock(&mu_);
  Stmt op(statements_, db_, "INSERT INTO outbox(decision_id, apply) VALUES(?,?)");
  absl::Status s = Prepared(op, db_);
  if (s.ok()) s = op.Bind(1, decision_id).Bind(2, int64_t{apply}).Done("add operation");
  if (!s.ok()) return s;
  return sqlite3_last_insert_rowid(db_);
}

absl::Status Store::ForgetEdge(const std::string& decision_id) {
  absl::MutexLock lock(&mu_);
  Stmt del(statements_, db_, "DELETE FROM edges WHERE decision_id = ?");
  absl::Status s = Prepared(del, db_);
  return s.ok() ? del.Bind(1, decision_id).Done("forget edge") : s;
}

absl::Status Store::DropOperation(int64_t seq) {
  absl::MutexLock lock(&mu_);
  Stmt del(statements_, db_, "DELETE FROM outbox WHERE seq = ?");
  absl::Status s = Prepared(del, db_);
  return s.ok() ? del.Bind(1, seq).Done("drop operation") : s;
}

absl::Status Store::Reschedule(int64_t seq, int attempts, absl::Time not_before) {
  absl::MutexLock lock(&mu_);
  Stmt up(statements_, db_, "UPDATE outbox SET attempts = ?, not_before_ms = ? WHERE seq = ?");
  absl::Status s = Prepared(up, db_);
  return s.ok() ? up.Bind(1, int64_t{attempts})
                      .Bind(2, Millis(not_before))
                      .Bind(3, seq)
                      .Done("reschedule")
                : s;
}

absl::StatusOr<std::vector<palisade::v1::Decision>> Store::LoadDecisions(bool active_only) {
  absl::MutexLock lock(&mu_);
  Stmt q(statements_, db_, active_only ? "SELECT proto FROM decisions WHERE active = 1"
                          : "SELECT proto FROM decisions");
  absl::Status s = Prepared(q, db_);
  if (!s.ok()) return s;
  std::vector<palisade::v1::Decision> out;
  while (q.Next()) {
    palisade::v1::Decision d;
    if (!d.ParseFromString(q.Blob(0))) return absl::DataLossError("store: a decision is corrupt");
    out.push_back(std::move(d));
  }
  if (s = q.Finished("load decisions"); !s.ok()) return s;
  return out;
}

absl::StatusOr<palisade::v1::Decision> Store::LoadDecision(const std::string& id) {
  absl::MutexLock lock(&mu_);
  Stmt q(statements_, db_, "SELECT proto FROM decisions WHERE id = ?");
  absl::Status s = Prepared(q, db_);
  if (!s.ok()) return s;
  q.Bind(1, id);
  if (q.Next()) {
    palisade::v1::Decision d;
    if (!d.ParseFromString(q.Blob(0))) return absl::DataLossError("store: a decision is corrupt");
    return d;
  }
  if (s = q.Finished("load decision"); !s.ok()) return s;
  return absl::NotFoundError("store: no such decision");
}

absl::StatusOr<std::vector<OffenceRow>> Store::LoadOffences(absl::Time since, size_t limit,
                                                            absl::Time counted_after) {
  absl::MutexLock lock(&mu_);
  Stmt q(statements_, db_,
         "SELECT target, count, last_ms, id, counted_until_ms FROM offences "
         "WHERE last_ms >= ? OR counted_until_ms > ? ORDER BY last_ms DESC, id DESC LIMIT ?");
  absl::Status s = Prepared(q, db_);
  if (!s.ok()) return s;
  q.Bind(1, since == absl::InfinitePast() ? std::numeric_limits<int64_t>::min()
                                          : absl::ToUnixMillis(since))
      .Bind(2, counted_after == absl::InfiniteFuture() ? std::numeric_limits<int64_t>::max()
                                                       : absl::ToUnixMillis(counted_after))
      .Bind(3, static_cast<int64_t>(std::min<size_t>(
                   limit, static_cast<size_t>(std::numeric_limits<int64_t>::max()))));
  std::vector<OffenceRow> out;
  while (q.Next()) {
    out.push_back({q.Blob(0), static_cast<uint32_t>(q.Int(1)), absl::FromUnixMillis(q.Int(2)),
                   q.Int(3),
                   q.IsNull(4) ? absl::InfinitePast() : absl::FromUnixMillis(q.Int(4))});
  }
  if (s = q.Finished("load offences"); !s.ok()) return s;
  return out;
}

absl::StatusOr<int64_t> Store::LastOffenceId() {
  absl::MutexLock lock(&mu_);
  Stmt q(statements_, db_, "SELECT max(id) FROM offences");
  absl::Status s = Prepared(q, db_);
  if (!s.ok()) return s;
  if (q.Next()) return q.Int(0);  // max() of no rows is NULL: 0
  if (s = q.Finished("last offence id"); !s.ok()) return s;
  return 0;
}

absl::StatusOr<std::vector<OutboxRow>> Store::LoadOutbox() {
  absl::MutexLock lock(&mu_);
  Stmt q(statements_, db_,
         "SELECT o.seq, o.apply, o.attempts, o.not_before_ms, d.proto FROM outbox o "
         "JOIN decisions d ON d.id = o.decision_id ORDER BY o.seq");
  absl::Status s = Prepared(q, db_);
  if (!s.ok()) return s;
  std::vector<OutboxRow> out;
  while (q.Next()) {
    OutboxRow row;
    row.seq = q.Int(0);
    row.apply = q.Int(1) != 0;
    row.attempts = static_cast<int>(q.Int(2));
    row.not_before = q.Int(3) == 0 ? absl::InfinitePast() : absl::FromUnixMillis(q.Int(3));
    if (!row.decision.ParseFromString(q.Blob(4))) {
      return absl::DataLossError("store: a decision is corrupt");
    }
    out.push_back(std::move(row));
  }
  if (s = q.Finished("load outbox"); !s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<EdgeRow>> Store::LoadEdges() {
  absl::MutexLock lock(&mu_);
  Stmt q(statements_, db_, "SELECT decision_id, actuator, edge_id, container, foreign_object FROM edges");
  absl::Status s = Prepared(q, db_);
  if (!s.ok()) return s;
  std::vector<EdgeRow> out;
  while (q.Next()) {
    out.push_back({q.Blob(0), static_cast<int>(q.Int(1)), q.Blob(2), q.Blob(3), q.Int(4) != 0});
  }
  if (s = q.Finished("load edges"); !s.ok()) return s;
  return out;
}

absl::Status Store::SaveSnapshot(const std::string& name, const std::string& blob) {
  absl::MutexLock lock(&mu_);
  Stmt up(statements_, db_, "INSERT OR REPLACE INTO snapshots(name, blob) VALUES(?,?)");
  absl::Status s = Prepared(up, db_);
  return s.ok() ? up.Bind(1, name).Bind(2, blob).Done("save snapshot") : s;
}

absl::StatusOr<std::string> Store::LoadSnapshot(const std::string& name) {
  absl::MutexLock lock(&mu_);
  Stmt q(statements_, db_, "SELECT blob FROM snapshots WHERE name = ?");
  absl::Status s = Prepared(q, db_);
  if (!s.ok()) return s;
  q.Bind(1, name);
  if (q.Next()) return q.Blob(0);
  if (s = q.Finished("load snapshot"); !s.ok()) return s;
  return std::string();
}

absl::Status Store::AddBouncer(const BouncerRow& row) {
  absl::MutexLock lock(&mu_);
  Stmt ins(statements_, db_,
           "INSERT INTO bouncers(name, key_hash, created_ms, last_pull_ms, address, user_agent, "
           "position) VALUES(?,?,?,?,?,?,?) ON CONFLICT DO NOTHING");
  absl::Status s = Prepared(ins, db_);
  if (s.ok()) {
    s = ins.Bind(1, row.name)
            .Bind(2, row.key_hash)
            .Bind(3, Millis(row.created))
            .Bind(4, Millis(row.last_pull))
            .Bind(5, row.address)
            .Bind(6, row.user_agent)
            .Bind(7, row.position)
            .Done("add bouncer");
  }
  if (!s.ok()) return s;
  if (sqlite3_changes(db_) == 0) {
    return absl::AlreadyExistsError(absl::StrCat("bouncer \"", row.name, "\" exists"));
  }
  return absl::OkStatus();
}

absl::Status Store::DeleteBouncer(const std::string& name) {
  absl::MutexLock lock(&mu_);
  Stmt del(statements_, db_, "DELETE FROM bouncers WHERE name = ?");
  absl::Status s = Prepared(del, db_);
  if (s.ok()) s = del.Bind(1, name).Done("delete bouncer");
  if (!s.ok()) return s;
  if (sqlite3_changes(db_) == 0) {
    return absl::NotFoundError(absl::StrCat("no bouncer \"", name, "\""));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<BouncerRow>> Store::LoadBouncers() {
  absl::MutexLock lock(&mu_);
  Stmt q(statements_, db_,
         "SELECT name, key_hash, created_ms, last_pull_ms, address, user_agent, position "
         "FROM bouncers ORDER BY name");
  absl::Status s = Prepared(q, db_);
  if (!s.ok()) return s;
  std::vector<BouncerRow> out;
  while (q.Next()) {
    BouncerRow row;
    row.name = q.Blob(0);
    row.key_hash = q.Blob(1);
    row.created = absl::FromUnixMillis(q.Int(2));
    row.last_pull = q.Int(3) == 0 ? absl::InfinitePast() : absl::FromUnixMillis(q.Int(3));
    row.address = q.Blob(4);
    row.user_agent = q.Blob(5);
    row.position = q.Int(6);
    out.push_back(std::move(row));
  }
  if (s = q.Finished("load bouncers"); !s.ok()) return s;
  return out;
}

absl::Status Store::RecordPull(const std::string& name, absl::Time at, const std::string& address,
                               const std::string& user_agent, int64_t position) {
  absl::MutexLock lock(&mu_);
  Stmt up(statements_, db_,
          "UPDATE bouncers SET last_pull_ms = ?, address = ?, user_agent = ?, position = ? "
          "WHERE name = ?");
  absl::Status s = Prepared(up, db_);
  return s.ok() ? up.Bind(1, Millis(at))
                      .Bind(2, address)
                      .Bind(3, user_agent)
                      .Bind(4, position)
                      .Bind(5, name)
                      .Done("record pull")
                : s;
}

absl::Status Store::RecordBouncerChanges(const std::vector<BouncerChangeRow>& rows,
                                         int64_t last_seq) {
  absl::MutexLock lock(&mu_);
  absl::Status s = Exec("BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  for (const BouncerChangeRow& r : rows) {
    Stmt up(statements_, db_,
            "INSERT OR REPLACE INTO bouncer_changes(decision_id, num, seq, deleted, at_ms, scope, "
            "value, type, origin, scenario, until_ms) VALUES(?,?,?,?,?,?,?,?,?,?,?)");
    s = Prepared(up, db_);
    if (s.ok()) {
      s = up.Bind(1, r.decision_id)
              .Bind(2, r.num)
              .Bind(3, r.seq)
              .Bind(4, int64_t{r.deleted})
              .Bind(5, Millis(r.at))
              .Bind(6, r.scope)
              .Bind(7, r.value)
              .Bind(8, r.type)
              .Bind(9, r.origin)
              .Bind(10, r.scenario)
              .Bind(11, Millis(r.until))
              .Done("record bouncer change");
    }
    if (!s.ok()) break;
  }
  if (s.ok()) {
    Stmt meta(statements_, db_,
              "INSERT OR REPLACE INTO bouncer_log(key, value) VALUES('last_seq', ?)");
    s = Prepared(meta, db_);
    if (s.ok()) s = meta.Bind(1, last_seq).Done("record bouncer log position");
  }
  if (!s.ok()) {
    (void)Exec("ROLLBACK");
    return s;
  }
  return CommitLocked();
}

absl::StatusOr<std::vector<BouncerChangeRow>> Store::LoadBouncerChanges(int64_t after,
                                                                        bool live_only) {
  return LoadBouncerChanges(after, live_only ? absl::InfiniteFuture() : absl::InfinitePast());
}

absl::StatusOr<std::vector<BouncerChangeRow>> Store::LoadBouncerChanges(
    int64_t after, absl::Time deleted_after) {
  // Millis() reads InfinitePast as 0; every deletion is after it here.
  const int64_t deleted_after_ms = deleted_after == absl::InfinitePast()
                                       ? std::numeric_limits<int64_t>::min()
                                       : absl::ToUnixMillis(deleted_after);
  absl::MutexLock lock(&mu_);
  Stmt q(statements_, db_,
         "SELECT decision_id, num, seq, deleted, at_ms, scope, value, type, origin, scenario, "
         "until_ms FROM bouncer_changes WHERE seq > ? AND (deleted = 0 OR at_ms > ?) "
         "ORDER BY seq");
  absl::Status s = Prepared(q, db_);
  if (!s.ok()) return s;
  q.Bind(1, after).Bind(2, deleted_after_ms);
  std::vector<BouncerChangeRow> out;
  while (q.Next()) {
    BouncerChangeRow r;
    r.decision_id = q.Blob(0);
    r.num = q.Int(1);
    r.seq = q.Int(2);
    r.deleted = q.Int(3) != 0;
    r.at = absl::FromUnixMillis(q.Int(4));
    r.scope = q.Blob(5);
    r.value = q.Blob(6);
    r.type = q.Blob(7);
    r.origin = q.Blob(8);
    r.scenario = q.Blob(9);
    r.until = absl::FromUnixMillis(q.Int(10));
    out.push_back(std::move(r));
  }
  if (s = q.Finished("load bouncer changes"); !s.ok()) return s;
  return out;
}

absl::StatusOr<int64_t> Store::FirstBouncerDeletionAfter(absl::Time at) {
  absl::MutexLock lock(&mu_);
  Stmt q(statements_, db_,
         "SELECT COALESCE(MIN(seq), 0) FROM bouncer_changes WHERE deleted = 1 AND at_ms > ?");
  absl::Status s = Prepared(q, db_);
  if (!s.ok()) return s;
  q.Bind(1, Millis(at));
  int64_t first = 0;
  if (q.Next()) first = q.Int(0);
  if (s = q.Finished("load the first bouncer deletion"); !s.ok()) return s;
  return first;
}

absl::StatusOr<BouncerLogMeta> Store::LoadBouncerLogMeta() {
  absl::MutexLock lock(&mu_);
  Stmt q(statements_, db_, "SELECT key, value FROM bouncer_log");
  absl::Status s = Prepared(q, db_);
  if (!s.ok()) return s;
  BouncerLogMeta meta;
  while (q.Next()) {
    const std::string key = q.Blob(0);
    if (key == "last_seq") meta.last_seq = q.Int(1);
    if (key == "trimmed_through") meta.trimmed_through = q.Int(1);
  }
  if (s = q.Finished("load bouncer log"); !s.ok()) return s;
  return meta;
}

absl::StatusOr<Store::Pruned> Store::Prune(absl::Time before, int64_t limit) {
  absl::MutexLock lock(&mu_);
  absl::Status s = Exec("BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  Pruned pruned;
  {
    Stmt del(statements_, db_,
             "DELETE FROM decisions WHERE rowid IN (SELECT rowid FROM decisions WHERE active = 0 "
             "AND expiry_ms < ? AND id NOT IN (SELECT decision_id FROM outbox) AND id NOT IN "
             "(SELECT decision_id FROM edges) LIMIT ?)");
    s = Prepared(del, db_);
    if (s.ok()) s = del.Bind(1, Millis(before)).Bind(2, limit).Done("prune decisions");
    pruned.decisions = sqlite3_changes(db_);
  }
  if (s.ok()) {
    Stmt del(statements_, db_,
             "DELETE FROM offences WHERE rowid IN (SELECT rowid FROM offences WHERE last_ms < ? "
             "LIMIT ?)");
    s = Prepared(del, db_);
    if (s.ok()) s = del.Bind(1, Millis(before)).Bind(2, limit).Done("prune offences");
    pruned.offences = sqlite3_changes(db_);
  }
  if (s.ok()) {
    Stmt del(statements_, db_,
             "DELETE FROM waiting_claims WHERE rowid IN (SELECT rowid FROM waiting_claims "
             "WHERE expiry_ms < ? LIMIT ?)");
    s = Prepared(del, db_);
    if (s.ok()) s = del.Bind(1, Millis(before)).Bind(2, limit).Done("prune waiting claims");
    pruned.waiting_claims = sqlite3_changes(db_);
  }
  if (!s.ok()) {
    (void)Exec("ROLLBACK");
    return s;
  }
  s = CommitLocked();
  if (!s.ok()) return s;
  return pruned;
}

absl::StatusOr<int64_t> Store::TrimBouncerChanges(int64_t served_through, absl::Time older_than,
                                                  int64_t max_deleted) {
  absl::MutexLock lock(&mu_);
  absl::Status s = Exec("BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  int64_t forgotten = 0;
  {
    Stmt del(statements_, db_, "DELETE FROM bouncer_changes WHERE deleted = 1 AND seq <= ?");
    s = Prepared(del, db_);
    if (s.ok()) s = del.Bind(1, served_through).Done("trim served deletions");
    forgotten += sqlite3_changes(db_);
  }
  // What age and the count cap take may not have been served to every bouncer yet: remember
  // how far they reached, so such a bouncer is told (BouncerLogMeta::trimmed_through).
  int64_t reach = 0;
  if (s.ok()) {
    Stmt q(statements_, db_,
           "SELECT COALESCE(MAX(seq), 0) FROM bouncer_changes WHERE deleted = 1 AND (at_ms < ? "
           "OR seq < (SELECT COALESCE(MIN(seq), 9223372036854775807) FROM (SELECT seq FROM "
           "bouncer_changes WHERE deleted = 1 ORDER BY seq DESC LIMIT ?)))");
    s = Prepared(q, db_);
    if (s.ok()) {
      q.Bind(1, Millis(older_than)).Bind(2, max_deleted);
      if (q.Next()) reach = q.Int(0);
      s = q.Finished("trim old deletions");
    }
  }
  if (s.ok() && reach > 0) {
    Stmt del(statements_, db_, "DELETE FROM bouncer_changes WHERE deleted = 1 AND seq <= ?");
    s = Prepared(del, db_);
    if (s.ok()) s = del.Bind(1, reach).Done("trim old deletions");
    forgotten += sqlite3_changes(db_);
    if (s.ok()) {
      Stmt meta(statements_, db_,
                "INSERT INTO bouncer_log(key, value) VALUES('trimmed_through', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)");
      s = Prepared(meta, db_);
      if (s.ok()) s = meta.Bind(1, reach).Done("record trimmed position");
    }
  }
  if (!s.ok()) {
    (void)Exec("ROLLBACK");
    return s;
  }
  s = CommitLocked();
  if (!s.ok()) return s;
  return forgotten;
}

}  // namespace palisade
