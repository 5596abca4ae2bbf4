// Drops what a follow-mode shipper (`palisadectl ship --follow`, issue 14 §1) sends again.
//
// A shipper advances its own checkpoint only when a batch is acked, so after a dropped
// connection, a shipper restart (kill -9 included) or a server restart it sends again from its
// last ack: batches the server may already have taken. Each such batch carries its origin
// (LogBatch.origin: shipper id, the file's path and identity (device, inode and a fingerprint of
// its first line), the end offset of every record);
// this table keeps, per (client, shipper, path) and file identity, the end offset taken, and
// Take() runs only the records past it through the pipeline. The rest are acknowledged (the
// shipper moves on) and counted in palisade_ingest_duplicate_lines_total.
//
// Who owns a position: the API client that authenticated the stream (its ApiClient.name from
// the Authorizer; "" for the one anonymous client of a daemon without api.clients), never the
// origin, which the client writes whole. A client naming another host's shipper id, path and
// file identity with a huge offset moves only its own position: the real host's lines are not
// made duplicates. A restart restores only the configured clients' positions: a renamed or
// removed client's are dropped (a client renamed starts afresh), and so are the anonymous
// client's once the daemon has api.clients. Positions saved before they had a client
// (snapshots before 2026-12-07) are the anonymous client's on a daemon without api.clients (it
// sent them); with clients they are dropped (any client could have set them): a batch resent
// for those files after the upgrade is taken, and counted, once more.
//
// Exactness across server restarts: the positions are saved with the engine's windows, in the
// same snapshot (EngineSnapshot.shipped), taken inside Consistent(), while no batch with an
// origin is in the pipeline. After a restart the windows and the positions agree: a resent batch
// is counted once. (A kill -9 of the server loses, from the windows, the batches acked since the
// last snapshot, exactly as for any gRPC batch: the shipper does not send them again.)
//
// Bounds (the origin is written by the client, so by an attacker holding a token): at most
// files_per_path identities per (client, shipper, path); each client at most its share
// (max_files_per_client / max_bytes_per_client, half the table by default), past which it
// forgets its own least recently used file, so one client's junk identities cannot push out
// another's; and max_files / max_bytes in all, past which the client holding the most forgets
// its least recently used file. Each forgetting is counted in
// palisade_ingest_shipped_evictions_total (a forgotten file's resent lines would be counted
// again). Client names, shipper ids and paths are never metric labels.
//
// Thread-safety: all methods may be called from any thread. Batches of different files go
// through the pipeline side by side; those of one (client, shipper, path) one at a time;
// Consistent() waits until none is in the pipeline.
#ifndef PALISADE_SERVICES_SERVER_SHIP_DEDUP_H_
#define PALISADE_SERVICES_SERVER_SHIP_DEDUP_H_

#include <cstdint>
#include <functional>
#include <list>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/node_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "palisade/v1/palisade.pb.h"
#include "palisade/v1/state.pb.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace palisade {

struct ShipDedupOptions {
  // Files (client x shipper x path x identity) remembered in all. 4096 x (128 + 1024 + 64 +
  // the client's name + overhead) bytes at most: about 5 MiB, and max_bytes caps it lower.
  size_t max_files = 4096;
  // Bytes of the remembered client names, ids, paths (each held twice: the position and its
  // path's key) and fingerprints, plus 64 per file for the rest.
  size_t max_bytes = size_t{2} << 20;
  // Identities per (client, shipper, path): the current file and the rotated ones a restarted
  // shipper may still be draining (logrotate's PATH.1) or resending.
  size_t files_per_path = 4;
  // Files and bytes one API client's positions may hold; past them the client forgets its own
  // least recently used file. 0: half of max_files (at least 1) and half of max_bytes, as
  // ApiLimits' stream share, so one token's made-up origins leave the other half to the rest.
  // The anonymous client of a daemon without api.clients is everyone: it has the whole table.
  size_t max_files_per_client = 0;
  size_t max_bytes_per_client = 0;
};

class ShipDedup {
 public:
  using Process =
      std::function<absl::StatusOr<palisade::v1::BatchAck>(const palisade::v1::LogBatch&)>;

  ShipDedup(ShipDedupOptions options, prometheus::Registry& registry);

  // kInvalidArgument naming the field when `batch.origin` is not one a shipper sends: a shipper
  // id outside [A-Za-z0-9._:-]{1,128}, an empty path or one over 1024 bytes, a fingerprint over
  // 64 bytes, fingerprint_bytes over 1 MiB, or line_ends not one per record and non-decreasing.
  static absl::Status Validate(const palisade::v1::LogBatch& batch);
  // The same for an origin sent with `records` records.
  static absl::Status Validate(const palisade::v1::BatchOrigin& origin, int records);

  // Runs `batch` (which has an origin), sent by `client` (the authenticated API client's name,
  // "" for the anonymous one), through `process` without the records at or below what `client`
  // took from its file, and remembers the new end, as `client`'s, once `process` returned OK
  // (an error leaves the table as it was: the batch will be sent again). A batch wholly taken
  // before is not processed: its ack has its sequence and zero counts. Validate() errors are
  // returned. The records already taken are removed from `*batch` (which may live on an arena).
  absl::StatusOr<palisade::v1::BatchAck> Take(absl::string_view client,
                                              palisade::v1::LogBatch* batch,
                                              const Process& process);
  absl::StatusOr<palisade::v1::BatchAck> Take(absl::string_view client,
                                              palisade::v1::LogBatch batch,
                                              const Process& process) {
    return Take(client, &batch, process);
  }
  // The same for a batch held in another form (the daemon's lines as views into the message):
  // `records` records came with `origin` and batch `sequence`; `process(skip)` runs all but
  // the first `skip` of them through the pipeline.
  using ProcessFrom = std::function<absl::StatusOr<palisade::v1::BatchAck>(int skip)>;
  absl::StatusOr<palisade::v1::BatchAck> Take(absl::string_view client,
                                              const palisade::v1::BatchOrigin& origin,
                                              uint64_t sequence, int records,
                                              const ProcessFrom& process);

  // Runs `fn` with every remembered position (most recently used first) while no batch is in
  // the pipeline through Take().
  void Consistent(const std::function<void(const std::vector<palisade::v1::ShippedPosition>&)>& fn);

  // Puts back the positions of a snapshot (at start, before any batch), each its client's,
  // keeping only those of `clients` (the configured ApiClient names; empty: a daemon without
  // api.clients, whose one client is the anonymous ""). Invalid ones are skipped. Returns how
  // many were dropped: another client's (renamed, removed, or "" once api.clients came) and,
  // with clients, those saved without one (before 2026-12-07; without clients they are ""'s).
  size_t Restore(const palisade::v1::EngineSnapshot& snapshot,
                 const absl::flat_hash_set<std::string>& clients);

  size_t files() const;
  uint64_t duplicate_lines() const;

 private:
  struct Entry {
    palisade::v1::ShippedPosition position;  // its client set
    uint64_t used = 0;  // use_clock_ when last taken from
  };
  using Lru = std::list<Entry>;  // most recently used first
  // One client's files and what they cost (BytesOf).
  struct Holder {
    Lru lru;
    size_t bytes = 0;
  };

  static std::string KeyOf(absl::string_view client, absl::string_view shipper_id,
                           absl::string_view path);
  static size_t BytesOf(const palisade::v1::ShippedPosition& p);
  size_t files_share() const;
  size_t bytes_share() const;
  // `client`'s remembered file of `origin`'s (shipper, path) with its identity.
  std::optional<Lru::iterator> FindLocked(absl::string_view client,
                                          const palisade::v1::BatchOrigin& origin)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void InsertLocked(palisade::v1::ShippedPosition position) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EraseLocked(Lru::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TouchLocked(Lru::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ShipDedupOptions options_;
  // Held shared by Take() from its check to its update, exclusively by Consistent().
  absl::Mutex snapshot_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  // (client, shipper, path) keys with a batch in the pipeline.
  absl::flat_hash_set<std::string> busy_ ABSL_GUARDED_BY(mu_);
  // By client name ("" for the anonymous client); a client without files has no entry.
  absl::node_hash_map<std::string, Holder> holders_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::vector<Lru::iterator>> by_path_ ABSL_GUARDED_BY(mu_);
  size_t files_ ABSL_GUARDED_BY(mu_) = 0;
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t use_clock_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t duplicate_lines_ ABSL_GUARDED_BY(mu_) = 0;
  prometheus::Counter& duplicate_lines_total_;
  prometheus::Counter& duplicate_batches_total_;
  prometheus::Counter& evictions_total_;
  prometheus::Gauge& files_gauge_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_SERVER_SHIP_DEDUP_H_
