#include "services/cluster/lease_table.h"

#include <nats/nats.h>

#include <utility>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace palisade::cluster {

namespace {

bool ValidName(absl::string_view s, bool dots) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || (dots && c == '.');
    if (!ok) return false;
  }
  return s.front() != '.' && s.back() != '.';
}

std::string Encode(const std::string& node, absl::Time until) {
  return nlohmann::json{{"node", node}, {"until_ms", absl::ToUnixMillis(until)}}.dump();
}

// Whether the last failed KV write failed its compare-and-set (the server's JetStream error
// 10071, "wrong last sequence", which libnats 3.4 reports as text only for KV calls).
bool LostRace() {
  natsStatus last = NATS_OK;
  const char* text = nats_GetLastError(&last);
  return text != nullptr && absl::StrContains(text, "wrong last sequence");
}

}  // namespace

absl::StatusOr<std::unique_ptr<LeaseTable>> LeaseTable::Open(NatsClient& nats,
                                                             LeaseOptions options) {
  if (!ValidName(options.node_id, /*dots=*/false)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cluster: node_id \"", options.node_id, "\" must be 1-64 of [A-Za-z0-9_-]"));
  }
  if (!ValidName(options.bucket, /*dots=*/false)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cluster: lease bucket \"", options.bucket, "\" must be [A-Za-z0-9_-]"));
  }
  if (options.term <= absl::ZeroDuration() || options.skew < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("cluster: a lease term must be positive, the skew >= 0");
  }
  // Keys of nodes gone for good disappear after a few terms; liveness is the value's `until`.
  absl::StatusOr<kvStore*> kv = nats.OpenKeyValue(
      options.bucket, options.replicas, 10 * (options.term + options.skew), "lease bucket");
  if (!kv.ok()) return kv.status();
  return std::unique_ptr<LeaseTable>(new LeaseTable(*kv, std::move(options)));
}

LeaseTable::LeaseTable(kvStore* kv, LeaseOptions options)
    : kv_(kv),
      options_(std::move(options)),
      clock_(options_.clock != nullptr ? options_.clock : &RealClock::Get()),
      instance_(absl::StrFormat("%016x", absl::Uniform<uint64_t>(absl::BitGen()))) {}

LeaseTable::~LeaseTable() { kvStore_Destroy(kv_); }

absl::StatusOr<LeaseTable::Entry> LeaseTable::Read(const std::string& key) {
  kvEntry* e = nullptr;
  const natsStatus s = kvStore_Get(&e, kv_, key.c_str());
  Entry out;
  if (s == NATS_NOT_FOUND) return out;
  if (s != NATS_OK) return NatsError(s, absl::StrCat("cluster: reading lease ", key));
  out.exists = true;
  out.revision = kvEntry_Revision(e);
  const nlohmann::json v = nlohmann::json::parse(
      static_cast<const char*>(kvEntry_Value(e)),
      static_cast<const char*>(kvEntry_Value(e)) + kvEntry_ValueLen(e), nullptr,
      /*allow_exceptions=*/false);
  kvEntry_Destroy(e);
  // A value that is not ours (someone wrote the bucket by hand) counts as free: the next claim
  // overwrites it with compare-and-set like any run-out lease.
  if (v.is_object() && v.contains("node") && v["node"].is_string() && v.contains("until_ms") &&
      v["until_ms"].is_number_integer()) {
    out.node = v["node"].get<std::string>();
    out.until = absl::FromUnixMillis(v["until_ms"].get<int64_t>());
  }
  return out;
}

bool LeaseTable::Live(const Entry& e) const {
  return e.exists && !e.node.empty() && clock_->TimeNow() < e.until + options_.skew;
}

absl::StatusOr<bool> LeaseTable::Claim(absl::string_view name) {
  if (!ValidName(name, /*dots=*/true)) {
    return absl::InvalidArgumentError(absl::StrCat("cluster: bad lease name \"", name, "\""));
  }
  return ClaimAs(std::string(name), options_.node_id);
}

absl::StatusOr<bool> LeaseTable::ClaimAs(const std::string& key, const std::string& holder) {
  absl::StatusOr<Entry> e = Read(key);
  if (!e.ok()) return e.status();
  if (Live(*e) && e->node != holder) return false;
  const std::string value = Encode(holder, clock_->TimeNow() + options_.term);
  uint64_t rev = 0;
  natsStatus s;
  if (!e->exists) {
    s = kvStore_Create(&rev, kv_, key.c_str(), value.data(), static_cast<int>(value.size()));
  } else {
    // Our renewal, or a take-over of a released or run-out lease: only if nobody wrote since.
    s = kvStore_Update(&rev, kv_, key.c_str(), value.data(), static_cast<int>(value.size()),
                       e->revision);
  }
  if (s == NATS_OK) return true;
  if (LostRace()) return false;  // someone wrote the key between our read and our write
  return NatsError(s, absl::StrCat("cluster: claiming lease ", key));
}

absl::Status LeaseTable::Release(absl::string_view name) {
  return ReleaseAs(std::string(name), options_.node_id);
}

absl::Status LeaseTable::ReleaseAs(const std::string& key, const std::string& holder) {
  absl::StatusOr<Entry> e = Read(key);
  if (!e.ok()) return e.status();
  if (!e->exists || e->node != holder) return absl::OkStatus();
  const std::string value = Encode("", absl::UnixEpoch());
  uint64_t rev = 0;
  const natsStatus s = kvStore_Update(&rev, kv_, key.c_str(), value.data(),
                                      static_cast<int>(value.size()), e->revision);
  if (s == NATS_OK) return absl::OkStatus();
  if (LostRace()) return absl::OkStatus();  // taken over meanwhile: nothing of ours to release
  return NatsError(s, absl::StrCat("cluster: releasing lease ", key));
}

absl::Status LeaseTable::ClaimPresence() {
  const std::string key = absl::StrCat("presence.", options_.node_id);
  absl::StatusOr<bool> held = ClaimAs(key, instance_);
  if (!held.ok()) return held.status();
  if (*held) return absl::OkStatus();
  // Another instance holds it live, or won the race for it: say which, and until when.
  std::string other = "another instance";
  absl::StatusOr<Entry> e = Read(key);
  if (e.ok() && Live(*e)) {
    other = absl::StrCat("instance ", e->node, ", live until ",
                         absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", e->until, absl::UTCTimeZone()));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "cluster: node_id \"", options_.node_id, "\" is in use by another process (", other,
      "; this is instance ", instance_,
      "): each node needs its own cluster.node_id. If that process is gone, this node_id is "
      "free once its presence runs out (",
      absl::FormatDuration(options_.term + options_.skew), " after its last renewal)"));
}

absl::StatusOr<std::optional<LeaseTable::Holder>> LeaseTable::PresenceHolder() {
  return HolderOf(absl::StrCat("presence.", options_.node_id));
}

absl::Status LeaseTable::ReleasePresence() {
  return ReleaseAs(absl::StrCat("presence.", options_.node_id), instance_);
}

absl::StatusOr<std::optional<LeaseTable::Holder>> LeaseTable::HolderOf(absl::string_view name) {
  absl::StatusOr<Entry> e = Read(std::string(name));
  if (!e.ok()) return e.status();
  if (!Live(*e)) return std::nullopt;
  return Holder{e->node, e->until};
}

absl::StatusOr<std::map<std::string, LeaseTable::Holder>> LeaseTable::LiveWithPrefix(
    absl::string_view prefix) {
  kvKeysList keys{nullptr, 0};
  const natsStatus s = kvStore_Keys(&keys, kv_, nullptr);
  std::map<std::string, Holder> out;
  if (s == NATS_NOT_FOUND) return out;  // an empty bucket
  if (s != NATS_OK) return NatsError(s, "cluster: listing leases");
  std::vector<std::string> names;
  for (int i = 0; i < keys.Count; ++i) {
    if (absl::StartsWith(keys.Keys[i], prefix)) names.emplace_back(keys.Keys[i]);
  }
  kvKeysList_Destroy(&keys);
  for (const std::string& name : names) {
    absl::StatusOr<Entry> e = Read(name);
    if (!e.ok()) return e.status();
    if (Live(*e)) out.emplace(name, Holder{e->node, e->until});
  }
  return out;
}

}  // namespace palisade::cluster
