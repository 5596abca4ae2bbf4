#include "services/server/ship_dedup.h"

#include <algorithm>
#include <optional>
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
                       .Help("Shipped files (client x shipper x path x file) whose position "
                             "is kept.")
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

std::string ShipDedup::KeyOf(absl::string_view client, absl::string_view shipper_id,
                             absl::string_view path) {
  // The id has no NUL (Validate) and the client's name comes with its length: the key is
  // unambiguous whatever the name and the path hold.
  return absl::StrCat(shipper_id, absl::string_view("\0", 1), client.size(), ":", client, path);
}

size_t ShipDedup::BytesOf(const ShippedPosition& p) {
  // What is stored: the position's client, id, path and fingerprint, and the client, id and
  // path again in the key of by_path_ (KeyOf).
  return 2 * (p.client().size() + p.shipper_id().size() + p.path().size()) + 1 +
         p.fingerprint().size() + 64;
}

size_t ShipDedup::files_share() const {
  return options_.max_files_per_client > 0 ? options_.max_files_per_client
                                           : std::max<size_t>(1, options_.max_files / 2);
}

size_t ShipDedup::bytes_share() const {
  return options_.max_bytes_per_client > 0 ? options_.max_bytes_per_client
                                           : options_.max_bytes / 2;
}

std::optional<ShipDedup::Lru::iterator> ShipDedup::FindLocked(absl::string_view client,
                                                              const BatchOrigin& origin) {
  auto it = by_path_.find(KeyOf(client, origin.shipper_id(), origin.path()));
  if (it == by_path_.end()) return std::nullopt;
  for (Lru::iterator file : it->second) {
    if (SameFile(file->position, origin)) return file;
  }
  return std::nullopt;
}

void ShipDedup::EraseLocked(Lru::iterator it) {
  const ShippedPosition& p = it->position;
  auto path = by_path_.find(KeyOf(p.client(), p.shipper_id(), p.path()));
  if (path != by_path_.end()) {
    auto& files = path->second;
    files.erase(std::remove(files.begin(), files.end(), it), files.end());
    if (files.empty()) by_path_.erase(path);
  }
  auto holder = holders_.find(p.client());
  const size_t bytes = BytesOf(p);
  bytes_ -= bytes;
  --files_;
  holder->second.bytes -= bytes;
  holder->second.lru.erase(it);
  if (holder->second.lru.empty()) holders_.erase(holder);
}

void ShipDedup::InsertLocked(ShippedPosition position) {
  const std::string key = KeyOf(position.client(), position.shipper_id(), position.path());
  // Within the path's share first (its oldest file), then the client's (its oldest file), then
  // the whole table's.
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
  const std::string client = position.client();
  const size_t bytes = BytesOf(position);
  Holder& holder = holders_[client];  // a node: stays put while other clients come and go
  holder.bytes += bytes;
  bytes_ += bytes;
  ++files_;
  holder.lru.push_front(Entry{std::move(position), ++use_clock_});
  by_path_[key].push_back(holder.lru.begin());
  // The anonymous client (no api.clients) is everyone: it has the whole table.
  if (!client.empty()) {
    while (holder.lru.size() > 1 &&
           (holder.lru.size() > files_share() || holder.bytes > bytes_share())) {
      EraseLocked(std::prev(holder.lru.end()));
      evictions_total_.Increment();
    }
  }
  // Past the table's bounds (three clients or more, or files restored for a client no longer
  // configured), the client holding the most gives up its least recently used file: a client
  // holding little is not pushed out by the others' fill. The new file stays.
  while (files_ > std::max<size_t>(1, options_.max_files) || bytes_ > options_.max_bytes) {
    const bool over_files = files_ > std::max<size_t>(1, options_.max_files);
    auto held = [&](const Holder& h) { return over_files ? h.lru.size() : h.bytes; };
    Holder* victim = nullptr;
    for (auto& [name, h] : holders_) {
      if (&h == &holder && h.lru.size() == 1) continue;
      if (victim == nullptr || held(h) > held(*victim) ||
          (held(h) == held(*victim) && h.lru.back().used < victim->lru.back().used)) {
        victim = &h;
      }
    }
    if (victim == nullptr) break;
    EraseLocked(std::prev(victim->lru.end()));
    evictions_total_.Increment();
  }
}

void ShipDedup::TouchLocked(Lru::iterator it) {
  it->used = ++use_clock_;
  Lru& lru = holders_.find(it->position.client())->second.lru;
  lru.splice(lru.begin(), lru, it);
}

void ShipDedup::PublishLocked() { files_gauge_.Set(static_cast<double>(files_)); }

absl::StatusOr<BatchAck> ShipDedup::Take(absl::string_view client, LogBatch* batch,
                                         const Process& process) {
  return Take(client, batch->origin(), batch->sequence(), batch->records_size(),
              [&](int skip) -> absl::StatusOr<BatchAck> {
                if (skip > 0) batch->mutable_records()->DeleteSubrange(0, skip);
                return process(*batch);
              });
}

absl::StatusOr<BatchAck> ShipDedup::Take(absl::string_view client, const BatchOrigin& origin,
                                         uint64_t sequence, int total,
                                         const ProcessFrom& process) {
  if (absl::Status s = Validate(origin, total); !s.ok()) return s;
  // Shared: batches of different files go through the pipeline side by side. Consistent()
  // takes it exclusively, so it never sees a batch between its check and its update.
  absl::ReaderMutexLock in_flight(&snapshot_mu_);
  const std::string key = KeyOf(client, origin.shipper_id(), origin.path());
  int skip = 0;
  {
    absl::MutexLock lock(&mu_);
    // One batch per (client, shipper, path) at a time: two streams of one shipper (a
    // reconnect while the old stream still runs) must not both take the same lines.
    auto free = [&] { return busy_.count(key) == 0; };
    mu_.Await(absl::Condition(&free));
    std::optional<Lru::iterator> file = FindLocked(client, origin);
    if (file) {
      // line_ends do not decrease: what was taken is a prefix.
      const uint64_t taken = (*file)->position.end_offset();
      while (skip < origin.line_ends_size() && origin.line_ends(skip) <= taken) ++skip;
    }
    if (total > 0 && skip == total) {
      duplicate_lines_ += static_cast<uint64_t>(skip);
      duplicate_lines_total_.Increment(skip);
      duplicate_batches_total_.Increment();
      TouchLocked(*file);  // still in use: not the first to be forgotten
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
  std::optional<Lru::iterator> file = FindLocked(client, origin);
  if (file) {
    ShippedPosition& p = (*file)->position;
    p.set_end_offset(std::max(p.end_offset(), end));
    TouchLocked(*file);
  } else {
    ShippedPosition position;
    position.set_client(std::string(client));
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
  // Most recently used first, whichever the client.
  std::vector<const Entry*> entries;
  entries.reserve(files_);
  for (const auto& [name, holder] : holders_) {
    for (const Entry& e : holder.lru) entries.push_back(&e);
  }
  std::sort(entries.begin(), entries.end(),
            [](const Entry* a, const Entry* b) { return a->used > b->used; });
  std::vector<ShippedPosition> positions;
  positions.reserve(entries.size());
  for (const Entry* e : entries) positions.push_back(e->position);
  fn(positions);
}

size_t ShipDedup::Restore(const palisade::v1::EngineSnapshot& snapshot,
                          const absl::flat_hash_set<std::string>& clients) {
  absl::MutexLock lock(&mu_);
  size_t dropped = 0;
  // Saved most recent first: inserted oldest first, so the order comes back as it was.
  for (int i = snapshot.shipped_size() - 1; i >= 0; --i) {
    ShippedPosition p = snapshot.shipped(i);
    LogBatch check;
    BatchOrigin* o = check.mutable_origin();
    o->set_shipper_id(p.shipper_id());
    o->set_path(p.path());
    o->set_fingerprint(p.fingerprint());
    o->set_fingerprint_bytes(p.fingerprint_bytes());
    o->set_device(p.device());
    o->set_inode(p.inode());
    if (!Validate(check).ok()) continue;
    // Saved before positions had a client: on a daemon without api.clients the anonymous
    // client sent it, as it sends every batch now. With clients, whichever client sent it (a
    // forged end offset included) it would be some client's now: it is no one's.
    if (!p.has_client() && clients.empty()) p.set_client(std::string());
    // Only a configured client's (the anonymous client's on a daemon without clients): a
    // renamed or removed client, or the anonymous one once api.clients came, would else keep
    // its positions in every snapshot, forgotten only under pressure.
    const bool owned = p.has_client() && (clients.empty() ? p.client().empty()
                                                          : clients.contains(p.client()));
    if (!owned) {
      ++dropped;
      continue;
    }
    if (FindLocked(p.client(), *o)) continue;
    InsertLocked(std::move(p));
  }
  PublishLocked();
  return dropped;
}

size_t ShipDedup::files() const {
  absl::MutexLock lock(&mu_);
  return files_;
}

uint64_t ShipDedup::duplicate_lines() const {
  absl::MutexLock lock(&mu_);
  return duplicate_lines_;
}

}  // namespace palisade
