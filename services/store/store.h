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
// Thread-safety: thread-safe (one connection behind a mutex).
#ifndef PALISADE_SERVICES_STORE_STORE_H_
#define PALISADE_SERVICES_STORE_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
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

struct OffenceRow {
  std::string target;
  uint32_t count = 0;
  absl::Time last;
};

class Store {
 public:
  static constexpr int kSchemaVersion = 1;

  // Opens (creating if needed) and migrates the database. kDataLoss when the integrity check
  // fails; kFailedPrecondition for a database from a newer Palisade.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& path);
  ~Store();

  // One transaction: the decision as it is now, the offence count behind it, and, when
  // `outbox` is set, the operation it implies. Returns the operation's sequence number (0 when
  // none).
  absl::StatusOr<int64_t> RecordDecision(const palisade::v1::Decision& d, const OffenceRow* offence,
                                         std::optional<bool> outbox);

  // The same for many changes in one transaction (a whole ingest batch): one commit instead of
  // one per decision. Returns the sequence numbers in order.
  struct Change {
    const palisade::v1::Decision* decision;
    std::optional<OffenceRow> offence;
    std::optional<bool> outbox;
  };
  absl::StatusOr<std::vector<int64_t>> RecordDecisions(const std::vector<Change>& changes);

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
  absl::StatusOr<std::vector<OffenceRow>> LoadOffences();
  absl::StatusOr<std::vector<OutboxRow>> LoadOutbox();
  absl::StatusOr<std::vector<EdgeRow>> LoadEdges();

  absl::Status SaveSnapshot(const std::string& name, const std::string& blob);
  absl::StatusOr<std::string> LoadSnapshot(const std::string& name);  // "" when none

 private:
  explicit Store(sqlite3* db) : db_(db) {}
  absl::Status Exec(const std::string& sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // COMMIT, and ROLLBACK when the COMMIT failed and left the transaction open.
  absl::Status CommitLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Migrate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<int64_t> RecordLocked(const Change& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  // Prepared statements by their SQL literal, reused (reset) instead of parsed on every call.
  absl::flat_hash_map<const char*, sqlite3_stmt*> statements_ ABSL_GUARDED_BY(mu_);
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_STORE_STORE_H_
