#include "services/server/ship_dedup.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace palisade {
namespace {

using palisade::v1::BatchAck;
using palisade::v1::BatchOrigin;
using palisade::v1::LogBatch;
using palisade::v1::ShippedPosition;

constexpr size_t kMaxShipperId = 128;
constexpr size_t kMaxPath = 1024;
constexpr size_t kMaxFingerprint = 64;
constexpr uint32_t kMaxFingerprintBytes = 1 << 20;  // a line cut at the largest line cap

bool ValidShipperId(const std::string& id) {
  if (id.empty() || id.size() > kMaxShipperId) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == ':' || c == '-';
  });
}

// The same file: device, inode and first line (a new file that reuses an inode, or a file
// emptied in place and written again, has another first line; the first line does not change
// while the file grows, so a resent batch matches exactly).
bool SameFile(const ShippedPosition& p, const BatchOrigin& o) {
  return p.device() == o.device() && p.inode() == o.inode() &&
         p.fingerprint_bytes() == o.fingerprint_bytes() && p.fingerprint() == o.fingerprint();
}

}  // namespace

ShipDedup::ShipDedup(ShipDedupOptions options, prometheus::Registry& registry)
    : options_(options),
      duplicate_lines_total_(
          prometheus::BuildCounter()
              .Name("palisade_ingest_duplicate_lines_total")
              .Help("Lines of follow-mode batches (LogBatch.origin) dropped because the server "
                    "had taken them already (sent again after a reconnect or a restart).")
              .Register(registry)
              .Add({})),
      duplicate_batches_total_(prometheus::BuildCounter()
                                   .Name("palisade_ingest_duplicate_batches_total")
                                   .Help("Follow-mode batches wholly taken before: acked, "
                                         "not processed.")
                                   .Register(registry)
                                   .Add({})),
      evictions_total_(prometheus::BuildCounter()
                           .Name("palisade_ingest_shipped_evictions_total")
                           .Help("Shipped files' positions forgotten to stay within the "
                                 "table's bounds (least recently used first).")
                           .Register(registry)
                           .Add({})),
      files_gauge_(prometheus::BuildGauge()
                       .Name("palisade_ingest_shipped_files")
                       .Help("Shipped files (shipper x path x file) whose position is kept.")
                       .Register(registry)
                       .Add({})) {}

absl::Status ShipDedup::Validate(const LogBatch& batch) {
  return Validate(batch.origin(), batch.records_size());
}

absl::Status ShipDedup::Validate(const BatchOrigin& o, int records) {
  if (!ValidShipperId(o.shipper_id())) {
    return absl::InvalidArgumentError(
        "origin.shipper_id must be 1 to 128 characters of [A-Za-z0-9._:-]");
  }
  if (o.path().empty() || o.path().size() > kMaxPath) {
    return absl::InvalidArgumentError(
        absl::StrCat("origin.path must be 1 to ", kMaxPath, " bytes (shipper ", o.shipper_id(),
                     ")"));
  }
  if (o.fingerprint().size() > kMaxFingerprint || o.fingerprint_bytes() > kMaxFingerprintBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "origin.fingerprint is at most ", kMaxFingerprint, " bytes, of a first line of at most ",
        kMaxFingerprintBytes, " bytes (shipper ", o.shipper_id(), ")"));
  }
  if (o.line_ends_size() != records) {
    return absl::InvalidArgumentError(
        absl::StrCat("origin.line_ends has ", o.line_ends_size(), " offsets for ", records,
                     " records (shipper ", o.shipper_id(), ")"));
  }
  for (int i = 1; i < o.line_ends_size(); ++i) {
    if (o.line_ends(i) < o.line_ends(i - 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "origin.line_ends must not decrease (offset ", i, ", shipper ", o.shipper_id(), ")"));
    }
  }
  return absl::OkStatus();
}

std::string ShipDedup::KeyOf(const std::string& shipper_id, const std::string& path) {
  // The id has no NUL (Validate), so the key is unambiguous.
  return absl::StrCat(shipper_id, std::string(1, '\0'), path);
}

size_t ShipDedup::BytesOf(const ShippedPosition& p) {
  // What is stored: the position's id, path and fingerprint, and the id and path again in the
  // key of by_path_ (KeyOf: with a NUL between them).
  return 2 * (p.shipper_id().size() + p.path().size()) + 1 + p.fingerprint().size() + 64;
}

ShipDedup::Lru::iterator ShipDedup::FindLocked(const BatchOrigin& origin) {
  auto it = by_path_.find(KeyOf(origin.shipper_id(), origin.path()));
  if (it == by_path_.end()) return lru_.end();
  for (Lru::iterator file : it->second) {
    if (SameFile(file->position, origin)) return file;
  }
  return lru_.end();
}

void ShipDedup::EraseLocked(Lru::iterator it) {
  auto path = by_path_.find(KeyOf(it->position.shipper_id(), it->position.path()));
  if (path != by_path_.end()) {
    auto& files = path->second;
    files.erase(std::remove(files.begin(), files.end(), it), files.end());
    if (files.empty()) by_path_.erase(path);
  }
  bytes_ -= BytesOf(it->position);
  lru_.erase(it);
}

void ShipDedup::InsertLocked(ShippedPosition position) {
  const std::string key = KeyOf(position.shipper_id(), position.path());
  // Within the path's share first (its oldest file), then the whole table's (the oldest file).
  auto& files = by_path_[key];
  while (!files.empty() && files.size() >= std::max<size_t>(1, options_.files_per_path)) {
    Lru::iterator oldest = files.front();
    for (Lru::iterator f : files) {
      if (f->used < oldest->used) oldest = f;
    }
    EraseLocked(oldest);  // may erase `files` itself when it was the last one
    evictions_total_.Increment();
    if (by_path_.find(key) == by_path_.end()) break;
  }
  bytes_ += BytesOf(position);
  lru_.push_front(Entry{std::move(position), ++use_clock_});
  by_path_[key].push_back(lru_.begin());
  while (lru_.size() > 1 &&
         (lru_.size() > std::max<size_t>(1, options_.max_files) || bytes_ > options_.max_bytes)) {
    EraseLocked(std::prev(lru_.end()));
    evictions_total_.Increment();
  }
}

void ShipDedup::TouchLocked(Lru::iterator it) {
  it->used = ++use_clock_;
  lru_.splice(lru_.begin(), lru_, it);
}

void ShipDedup::PublishLocked() { files_gauge_.Set(static_cast<double>(lru_.size())); }

absl::StatusOr<BatchAck> ShipDedup::Take(LogBatch* batch, const Process& process) {
  return Take(batch->origin(), batch->sequence(), batch->records_size(),
              [&](int skip) -> absl::StatusOr<BatchAck> {
                if (skip > 0) batch->mutable_records()->DeleteSubrange(0, skip);
                return process(*batch);
              });
}

absl::StatusOr<BatchAck> ShipDedup::Take(const BatchOrigin& origin, uint64_t sequence, int total,
                                         const ProcessFrom& process) {
  if (absl::Status s = Validate(origin, total); !s.ok()) return s;
  // Shared: batches of different files go through the pipeline side by side. Consistent()
  // takes it exclusively, so it never sees a batch between its check and its update.
  absl::ReaderMutexLock in_flight(&snapshot_mu_);
  const std::string key = KeyOf(origin.shipper_id(), origin.path());
  int skip = 0;
  {
    absl::MutexLock lock(&mu_);
    // One batch per (shipper, path) at a time: two streams of one shipper (a reconnect while
    // the old stream still runs) must not both take the same lines.
    auto free = [&] { return busy_.count(key) == 0; };
    mu_.Await(absl::Condition(&free));
    Lru::iterator file = FindLocked(origin);
    if (file != lru_.end()) {
      // line_ends do not decrease: what was taken is a prefix.
      const uint64_t taken = file->position.end_offset();
      while (skip < origin.line_ends_size() && origin.line_ends(skip) <= taken) ++skip;
    }
    if (total > 0 && skip == total) {
      duplicate_lines_ += static_cast<uint64_t>(skip);
      duplicate_lines_total_.Increment(skip);
      duplicate_batches_total_.Increment();
      TouchLocked(file);  // still in use: not the first to be forgotten
      BatchAck ack;
      ack.set_sequence(sequence);
      return ack;
    }
    busy_.insert(key);
  }
  absl::StatusOr<BatchAck> ack = process(skip);
  absl::MutexLock lock(&mu_);
  busy_.erase(key);
  if (!ack.ok() || total == 0) return ack;
  if (skip > 0) {
    duplicate_lines_ += static_cast<uint64_t>(skip);
    duplicate_lines_total_.Increment(skip);
  }
  const uint64_t end = origin.line_ends(total - 1);
  // Found again: another file's insert may have evicted it meanwhile.
  Lru::iterator file = FindLocked(origin);
  if (file != lru_.end()) {
    ShippedPosition& p = file->position;
    p.set_end_offset(std::max(p.end_offset(), end));
    TouchLocked(file);
  } else {
    ShippedPosition position;
    position.set_shipper_id(origin.shipper_id());
    position.set_path(origin.path());
    position.set_device(origin.device());
    position.set_inode(origin.inode());
    position.set_fingerprint(origin.fingerprint());
    position.set_fingerprint_bytes(origin.fingerprint_bytes());
    position.set_end_offset(end);
    InsertLocked(std::move(position));
  }
  PublishLocked();
  return ack;
}

void ShipDedup::Consistent(
    const std::function<void(const std::vector<ShippedPosition>&)>& fn) {
  absl::WriterMutexLock no_batch(&snapshot_mu_);
  absl::MutexLock lock(&mu_);
  std::vector<ShippedPosition> positions;
  positions.reserve(lru_.size());
  for (const Entry& e : lru_) positions.push_back(e.position);
  fn(positions);
}

void ShipDedup::Restore(const palisade::v1::EngineSnapshot& snapshot) {
  absl::MutexLock lock(&mu_);
  // Saved most recent first: inserted oldest first, so the order comes back as it was.
  for (int i = snapshot.shipped_size() - 1; i >= 0; --i) {
    const ShippedPosition& p = snapshot.shipped(i);
    LogBatch check;
    BatchOrigin* o = check.mutable_origin();
    o->set_shipper_id(p.shipper_id());
    o->set_path(p.path());
    o->set_fingerprint(p.fingerprint());
    o->set_fingerprint_bytes(p.fingerprint_bytes());
    o->set_device(p.device());
    o->set_inode(p.inode());
    if (!Validate(check).ok() || FindLocked(*o) != lru_.end()) continue;
    InsertLocked(p);
  }
  PublishLocked();
}

size_t ShipDedup::files() const {
  absl::MutexLock lock(&mu_);
  return lru_.size();
}

uint64_t ShipDedup::duplicate_lines() const {
  absl::MutexLock lock(&mu_);
  return duplicate_lines_;
}

}  // namespace palisade
