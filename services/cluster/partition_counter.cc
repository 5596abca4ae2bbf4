#include "services/cluster/partition_counter.h"

#include <nats/nats.h>

#include <algorithm>
#include <deque>
#include <optional>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "palisade/v1/cluster.pb.h"
#include "services/cluster/match_stream.h"

namespace palisade::cluster {

namespace {

constexpr const char* kRuleSetKey = "rule-set";

std::string HeadKey(uint32_t p) { return absl::StrCat("p", p, ".head"); }
std::string EmittedKey(uint32_t p) { return absl::StrCat("p", p, ".emitted"); }
std::string ChunkKey(uint32_t p, absl::string_view generation, uint32_t i) {
  return absl::StrCat("p", p, ".g", generation, ".", i);
}

// The value of `key`; nullopt when the bucket has none.
absl::StatusOr<std::optional<std::string>> Get(kvStore* kv, const std::string& key) {
  return KvGet(kv, key, "windows");
}

absl::Status Put(kvStore* kv, const std::string& key, absl::string_view value) {
  return KvPut(kv, key, value, "windows");
}

}  // namespace

struct PartitionCounter::Partition {
  ~Partition() {
    if (sub != nullptr) natsSubscription_Destroy(sub);
  }
  uint32_t p = 0;
  std::string subject;
  std::unique_ptr<Engine> engine;
  natsSubscription* sub = nullptr;
  uint64_t position = 0;         // the last stream sequence read
  uint64_t emitted = 0;          // every detection through this sequence was taken
  uint64_t emitted_written = 0;  // the emitted position the bucket holds
  uint64_t emitted_revision = 0;  // the emitted key's revision this owner wrote (0: read it)
  uint64_t replay_through = 0;   // detections through this sequence are not raised again
  uint64_t rebuild_target = 0;   // the take-over's rebuild ends when it has read this far
  uint64_t snapshot_seq = 0;
  std::string snapshot_generation;
  uint32_t snapshot_chunks = 0;
  uint64_t since_snapshot = 0;
  absl::Time last_snapshot;
  absl::Time gained;
  bool rebuilding = true;
  absl::Duration rebuild_time;
  absl::Time latest_event = absl::InfinitePast();
  std::deque<ClusterDetection> pending;  // raised, not yet taken by the callback
  absl::Time progress;                   // the last match read, or the last check for a stall
  bool broken = false;                   // the reader failed: made again at the end of the Poll
};

absl::StatusOr<std::unique_ptr<PartitionCounter>> PartitionCounter::Open(
    NatsClient& nats, PartitionCounterOptions options, DetectionCallback on_detection) {
  if (options.rules == nullptr || options.rule_set_version.empty() || options.node_id.empty() ||
      options.partitions == 0 || !on_detection) {
    return absl::InvalidArgumentError(
        "cluster: a partition counter needs rules, their version, a node id, partitions and a "
        "detection callback");
  }
  absl::StatusOr<kvStore*> kv =
      nats.OpenKeyValue(options.bucket, options.replicas, absl::ZeroDuration(), "windows bucket");
  if (!kv.ok()) return kv.status();
  return std::unique_ptr<PartitionCounter>(
      new PartitionCounter(nats, std::move(options), *kv, std::move(on_detection)));
}

PartitionCounter::PartitionCounter(NatsClient& nats, PartitionCounterOptions options, kvStore* kv,
                                   DetectionCallback on_detection)
    : nats_(nats),
      options_(std::move(options)),
      kv_(kv),
      clock_(options_.clock != nullptr ? options_.clock : &RealClock::Get()),
      on_detection_(std::move(on_detection)),
      last_expire_(clock_->TimeNow()) {}

PartitionCounter::~PartitionCounter() {
  owned_.clear();  // the subscriptions before the bucket
  kvStore_Destroy(kv_);
}

absl::Status PartitionCounter::PublishRuleSet() {
  return Put(kv_, kRuleSetKey, absl::StrCat(options_.rule_set_version, " ", options_.node_id));
}

absl::Status PartitionCounter::CheckRuleSet() {
  absl::StatusOr<std::optional<std::string>> v = Get(kv_, kRuleSetKey);
  if (!v.ok()) return v.status();
  if (!v->has_value()) return absl::OkStatus();
  std::vector<std::string> f = absl::StrSplit(**v, absl::MaxSplits(' ', 1));
  if (f[0] == options_.rule_set_version) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "cluster: this node's rules (", options_.rule_set_version, ") differ from the cluster's (",
      f[0], ", published by node ", f.size() > 1 ? f[1] : "?",
      "): it matches and publishes, but owns no partition until they agree"));
}

void PartitionCounter::SetRules(std::shared_ptr<const RuleSet> rules,
                                std::string rule_set_version) {
  options_.rules = std::move(rules);
  options_.rule_set_version = std::move(rule_set_version);
  for (auto& [p, part] : owned_) part->engine->SetRules(options_.rules);
}

absl::Status PartitionCounter::Apply(const Ownership::Change& change) {
  for (uint32_t p : change.lost) {
    owned_.erase(p);
    unopened_.erase(p);
  }
  for (uint32_t p : change.gained) {
    if (owned_.count(p) == 0) unopened_.insert(p);
  }
  absl::Status status = OpenUnopened();
  PublishStatus();
  return status;
}

absl::Status PartitionCounter::OpenUnopened() {
  if (unopened_.empty()) return absl::OkStatus();
  last_open_attempt_ = clock_->TimeNow();
  absl::Status status = CheckRuleSet();
  if (!status.ok()) return status;
  for (auto it = unopened_.begin(); it != unopened_.end();) {
    absl::Status s = Open(*it);
    if (!s.ok()) {
      if (status.ok()) status = s;
      ++it;
      continue;
    }
    it = unopened_.erase(it);
  }
  return status;
}

void PartitionCounter::PublishStatus() {
  std::vector<PartitionStatus> st;
  for (const auto& [p, part] : owned_) {
    st.push_back({p, part->position, part->emitted, part->snapshot_seq, part->rebuilding,
                  part->engine->live_windows(), part->rebuild_time});
  }
  std::vector<uint32_t> unopened(unopened_.begin(), unopened_.end());
  absl::MutexLock lock(&mu_);
  status_ = std::move(st);
  unopened_status_ = std::move(unopened);
}

std::vector<uint32_t> PartitionCounter::unopened() const {
  absl::MutexLock lock(&mu_);
  return unopened_status_;
}

EngineOptions PartitionCounter::PartitionEngineOptions() const {
  EngineOptions o = options_.engine;
  const uint64_t budget = o.memory_budget_bytes != 0 ? o.memory_budget_bytes : uint64_t{1} << 30;
  const uint64_t keys = o.max_keys_per_rule != 0 ? o.max_keys_per_rule : 1'000'000;
  o.memory_budget_bytes = std::max<uint64_t>(budget / options_.partitions, 1);
  o.max_keys_per_rule = static_cast<uint32_t>(
      std::max<uint64_t>((keys + options_.partitions - 1) / options_.partitions, 1));
  return o;
}

absl::Status PartitionCounter::Open(uint32_t p) {
  auto part = std::make_unique<Partition>();
  part->p = p;
  part->subject = absl::StrCat(options_.subject_prefix, ".", p);
  part->gained = clock_->TimeNow();
  part->last_snapshot = part->gained;
  // The snapshot: its head, then its chunks. A chunk gone means a newer snapshot replaced it
  // meanwhile (its writer purges the older chunks): read the head again.
  palisade::v1::PartitionSnapshotHead head;
  bool restored = false;
  for (int attempt = 0; attempt < 5 && !restored; ++attempt) {
    part->engine = std::make_unique<Engine>(options_.rules, PartitionEngineOptions());
    head.Clear();
    absl::StatusOr<std::optional<std::string>> h = Get(kv_, HeadKey(p));
    if (!h.ok()) return h.status();
    if (!h->has_value()) {
      restored = true;
      break;
    }
    // An unreadable snapshot is no snapshot: the partition is read from the stream's start
    // (what the stream still holds), which the emitted position keeps from raising anything
    // twice.
    auto unreadable = [&](absl::string_view what) {
      part->engine = std::make_unique<Engine>(options_.rules, PartitionEngineOptions());
      head.Clear();
      absl::MutexLock lock(&mu_);
      ++stats_.snapshot_failures;
      last_refusal_ = absl::StrCat("partition ", p, ": ", what, " unreadable; read from the start");
    };
    restored = true;
    if (!head.ParseFromString(**h) || head.partition() != p) {
      unreadable("the windows snapshot head");
      break;
    }
    for (uint32_t i = 0; i < head.chunks(); ++i) {
      absl::StatusOr<std::optional<std::string>> c = Get(kv_, ChunkKey(p, head.generation(), i));
      if (!c.ok()) return c.status();
      palisade::v1::PartitionSnapshotChunk chunk;
      if (!c->has_value()) {
        restored = false;
        break;
      }
      if (!chunk.ParseFromString(**c)) {
        unreadable(absl::StrCat("windows snapshot ", head.generation(), " chunk ", i));
        break;
      }
      // Windows of a head written before they said what they counted (a rolling upgrade) are
      // trusted when the head's rules are this node's: its version fingerprints the rules,
      // key kind and capture included. Under other rules they are dropped (Engine::Restore).
      part->engine->Restore(chunk.windows(), absl::InfinitePast(),
                            head.rule_set_version() == options_.rule_set_version
                                ? Engine::UnmarkedWindows::kTrust
                                : Engine::UnmarkedWindows::kSkip);
    }
  }
  if (!restored) {
    return absl::UnavailableError(
        absl::StrCat("cluster: partition ", p, ": its windows snapshot kept changing while read"));
  }
  part->position = head.sequence();
  part->snapshot_seq = head.sequence();
  part->snapshot_generation = head.generation();
  part->snapshot_chunks = head.chunks();
  absl::StatusOr<std::optional<std::string>> e = Get(kv_, EmittedKey(p));
  if (!e.ok()) return e.status();
  uint64_t emitted = 0;
  if (e->has_value() && !absl::SimpleAtoi(**e, &emitted)) emitted = 0;
  // A snapshot is taken only once its detections were taken: it is emitted through itself.
  part->emitted = std::max(emitted, part->position);
  part->emitted_written = emitted;
  part->replay_through = part->emitted;
  // The rebuild ends at the last match it must count again: the emitted position, or the
  // partition's last match if the stream lost the ones up to it.
  part->rebuild_target = 0;
  if (part->replay_through > part->position) {
    natsMsg* last = nullptr;
    jsErrCode err = static_cast<jsErrCode>(0);
    if (js_GetLastMsg(&last, nats_.jetstream(), options_.stream.c_str(), part->subject.c_str(),
                      nullptr, &err) == NATS_OK) {
      part->rebuild_target = std::min<uint64_t>(part->replay_through, natsMsg_GetSequence(last));
      natsMsg_Destroy(last);
    }
  }
  part->rebuilding = part->position < part->rebuild_target;
  if (!part->rebuilding) part->rebuild_time = clock_->TimeNow() - part->gained;
  // Did the stream drop matches the replay needs (limits, age)?
  if (part->replay_through > 0) {
    jsStreamInfo* info = nullptr;
    jsErrCode err = static_cast<jsErrCode>(0);
    if (js_GetStreamInfo(&info, nats_.jetstream(), options_.stream.c_str(), nullptr, &err) ==
        NATS_OK) {
      if (info->State.FirstSeq > part->position + 1) {
        absl::MutexLock lock(&mu_);
        ++stats_.trimmed;
      }
      jsStreamInfo_Destroy(info);
    }
  }
  absl::Status subscribed = Subscribe(*part);
  if (!subscribed.ok()) return subscribed;
  owned_[p] = std::move(part);
  return absl::OkStatus();
}

absl::Status PartitionCounter::Subscribe(Partition& part) {
  if (part.sub != nullptr) {
    natsSubscription_Destroy(part.sub);
    part.sub = nullptr;
  }
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = options_.stream.c_str();
  // An ordered consumer: stream order, no acknowledgements to redeliver out of order, and
  // libnats makes it again from the last sequence delivered after a gap or a lost server.
  so.Ordered = true;
  if (part.position == 0) {
    so.Config.DeliverPolicy = js_DeliverAll;
  } else {
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = part.position + 1;
  }
  jsErrCode err = static_cast<jsErrCode>(0);
  const natsStatus s =
      js_SubscribeSync(&part.sub, nats_.jetstream(), part.subject.c_str(), nullptr, &so, &err);
  if (s != NATS_OK) {
    part.sub = nullptr;
    return NatsError(s, absl::StrCat("cluster: partition ", part.p, ": reading ", part.subject,
                                     " after ", part.position));
  }
  part.progress = clock_->TimeNow();
  return absl::OkStatus();
}

void PartitionCounter::Refuse(bool version, std::string reason) {
  absl::MutexLock lock(&mu_);
  ++(version ? stats_.refused_version : stats_.refused_invalid);
  last_refusal_ = std::move(reason);
}

absl::Status PartitionCounter::Take(Partition& part, uint64_t sequence, absl::string_view data) {
  if (sequence != 0 && sequence <= part.position) return absl::OkStatus();  // read already
  if (sequence != 0) part.position = sequence;
  palisade::v1::ClusterMatch m;
  if (!m.ParseFromArray(data.data(), static_cast<int>(data.size()))) {
    Refuse(false,
           absl::StrCat("partition ", part.p, " sequence ", sequence, ": not a ClusterMatch"));
    return absl::OkStatus();
  }
  if (m.rule_set_version() != options_.rule_set_version) {
    Refuse(true, absl::StrCat("partition ", part.p, " sequence ", sequence, ": a match from node ",
                              m.origin_node(), " with rules ", m.rule_set_version(),
                              ", this owner counts with ", options_.rule_set_version));
    return absl::OkStatus();
  }
  if (PartitionOf(PartitionKeyOf(m.key()), options_.partitions) != part.p) {
    Refuse(false, absl::StrCat("partition ", part.p, " sequence ", sequence, ": a match from node ",
                               m.origin_node(), " whose key belongs to another partition"));
    return absl::OkStatus();
  }
  EngineMatch match;
  match.rule_id = m.rule_id();
  match.key = m.key();
  match.time = absl::FromUnixNanos(m.time_unix_nanos());
  match.evidence = m.evidence();
  std::vector<Detection> detections;
  absl::Status counted = part.engine->CountMatch(match, &detections);
  if (!counted.ok()) {
    Refuse(false, absl::StrCat("partition ", part.p, " sequence ", sequence, ": a match from node ",
                               m.origin_node(), ": ", counted.message()));
    return absl::OkStatus();
  }
  part.latest_event = std::max(part.latest_event, match.time);
  ++part.since_snapshot;
  const bool replay = sequence <= part.replay_through;
  {
    absl::MutexLock lock(&mu_);
    ++stats_.counted;
    if (replay) ++stats_.replayed;
  }
  if (replay) return absl::OkStatus();  // raised before the take-over
  for (Detection& d : detections) {
    ClusterDetection& c = part.pending.emplace_back();
    c.id = absl::StrCat(options_.stream, ":", sequence);
    c.partition = part.p;
    c.sequence = sequence;
    c.origin_node = m.origin_node();
    c.detection = std::move(d);
  }
  return Deliver(part);
}

namespace {

// A refusal that offering the detection again cannot change: the writer answered what it
// answers for good (and remembers its answer by the detection's id), e.g. the rule is not
// loaded there, or the detection cannot be sent at all.
bool RefusedForGood(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
      return true;
    default:
      return false;
  }
}

}  // namespace

absl::Status PartitionCounter::Deliver(Partition& part) {
  while (!part.pending.empty()) {
    if (refused_this_poll_) {
      // The callback just refused another (the writer away): each offer may wait (a third of
      // a lease term in palisaded), and the thread that polls renews the leases. Next Poll.
      return absl::UnavailableError(absl::StrCat("cluster: partition ", part.p, ": detection ",
                                                 part.pending.front().id,
                                                 " not offered: another was just refused"));
    }
    absl::Status taken = on_detection_(part.pending.front());
    if (!taken.ok()) {
      absl::MutexLock lock(&mu_);
      ++stats_.callback_failures;
      absl::Status refused(taken.code(),
                           absl::StrCat("cluster: partition ", part.p, ": detection ",
                                        part.pending.front().id, " not taken: ", taken.message()));
      if (!RefusedForGood(taken.code())) {
        refused_this_poll_ = true;
        return refused;
      }
      // Offered again it would be refused again, and the partition would read nothing more:
      // dropped, counted and kept as the last refusal, and the partition reads on.
      ++stats_.rejected;
      last_refusal_ = std::string(refused.message());
      part.pending.pop_front();
      continue;
    }
    part.pending.pop_front();
    absl::MutexLock lock(&mu_);
    ++stats_.detections;
  }
  part.emitted = std::max(part.emitted, part.position);
  return absl::OkStatus();
}

absl::Status PartitionCounter::WriteEmitted(Partition& part) {
  if (part.emitted <= part.emitted_written) return absl::OkStatus();
  // Only ever forward, by compare-and-set: a former owner that has not learnt yet that it lost
  // the partition may be behind the new owner, and its position written over the new one's
  // would have the next owner raise again what the new one handed over.
  const std::string key = EmittedKey(part.p);
  const std::string value = absl::StrCat(part.emitted);
  for (int attempt = 0; attempt < 5; ++attempt) {
    bool exists = part.emitted_revision != 0;
    if (!exists) {
      kvEntry* e = nullptr;
      const natsStatus got = kvStore_Get(&e, kv_, key.c_str());
      if (got != NATS_OK && got != NATS_NOT_FOUND) {
        return NatsError(got, absl::StrCat("cluster: reading windows key ", key));
      }
      if (got == NATS_OK) {
        exists = true;
        part.emitted_revision = kvEntry_Revision(e);
        uint64_t current = 0;
        const bool parsed = absl::SimpleAtoi(
            absl::string_view(static_cast<const char*>(kvEntry_Value(e)),
                              static_cast<size_t>(kvEntry_ValueLen(e))),
            &current);
        kvEntry_Destroy(e);
        if (parsed && current >= part.emitted) {  // another owner is ahead: nothing to write
          part.emitted_written = part.emitted;
          return absl::OkStatus();
        }
      }
    }
    uint64_t revision = 0;
    const natsStatus s =
        exists ? kvStore_Update(&revision, kv_, key.c_str(), value.data(),
                                static_cast<int>(value.size()), part.emitted_revision)
               : kvStore_Create(&revision, kv_, key.c_str(), value.data(),
                                static_cast<int>(value.size()));
    if (s == NATS_OK) {
      part.emitted_revision = revision;
      part.emitted_written = part.emitted;
      return absl::OkStatus();
    }
    natsStatus last = NATS_OK;
    const char* text = nats_GetLastError(&last);
    if (text == nullptr || !absl::StrContains(text, "wrong last sequence")) {
      return NatsError(s, absl::StrCat("cluster: writing windows key ", key));
    }
    part.emitted_revision = 0;  // written by another meanwhile: read it again
  }
  return absl::UnavailableError(
      absl::StrCat("cluster: windows key ", key, " kept changing while written"));
}

absl::Status PartitionCounter::WriteSnapshotKey(const std::string& key, absl::string_view value) {
  if (options_.snapshot_write_fault) {
    if (absl::Status s = options_.snapshot_write_fault(key, false); !s.ok()) return s;
  }
  absl::Status s = Put(kv_, key, value);
  if (s.ok() && options_.snapshot_write_fault) s = options_.snapshot_write_fault(key, true);
  return s;
}

absl::Status PartitionCounter::WriteSnapshotHead(const std::string& key, const std::string& value,
                                                 uint64_t revision, bool* conflict) {
  if (options_.snapshot_write_fault) {
    if (absl::Status s = options_.snapshot_write_fault(key, false); !s.ok()) return s;
  }
  uint64_t rev = 0;
  const natsStatus s = revision == 0 ? kvStore_Create(&rev, kv_, key.c_str(), value.data(),
                                                      static_cast<int>(value.size()))
                                     : kvStore_Update(&rev, kv_, key.c_str(), value.data(),
                                                      static_cast<int>(value.size()), revision);
  if (s != NATS_OK) {
    natsStatus last = NATS_OK;
    const char* text = nats_GetLastError(&last);
    *conflict = text != nullptr && absl::StrContains(text, "wrong last sequence");
    return NatsError(s, absl::StrCat("cluster: writing windows key ", key));
  }
  if (options_.snapshot_write_fault) return options_.snapshot_write_fault(key, true);
  return absl::OkStatus();
}

absl::Status PartitionCounter::Snapshot(Partition& part) {
  if (!part.pending.empty()) return absl::OkStatus();  // only a state whose detections went
  const palisade::v1::EngineSnapshot all = part.engine->Snapshot();
  std::vector<palisade::v1::PartitionSnapshotChunk> chunks;
  size_t bytes = options_.snapshot_chunk_bytes;  // start a first chunk
  for (const auto& w : all.windows()) {
    const size_t size = w.ByteSizeLong() + 8;
    if (bytes + size > options_.snapshot_chunk_bytes && bytes > 0) {
      chunks.emplace_back();
      bytes = 0;
    }
    *chunks.back().mutable_windows()->add_windows() = w;
    bytes += size;
  }
  static thread_local absl::BitGen bitgen;
  const std::string generation =
      absl::StrFormat("%s-%016x", options_.node_id, absl::Uniform<uint64_t>(bitgen));
  for (uint32_t i = 0; i < chunks.size(); ++i) {
    absl::Status s =
        WriteSnapshotKey(ChunkKey(part.p, generation, i), chunks[i].SerializeAsString());
    if (!s.ok()) {
      // No head names this generation, nor ever will: its chunks through this one (stored
      // perhaps, the error notwithstanding) are purged, now or at a later attempt.
      {
        absl::MutexLock lock(&mu_);
        ++stats_.snapshot_failures;
      }
      AddOrphans(part.p, generation, i + 1, /*unsure=*/false);
      PurgeOrphans().IgnoreError();  // what is left is tried again (Poll, SnapshotAll)
      return s;
    }
  }
  palisade::v1::PartitionSnapshotHead head;
  head.set_partition(part.p);
  head.set_sequence(part.position);
  head.set_generation(generation);
  head.set_chunks(static_cast<uint32_t>(chunks.size()));
  head.set_windows(static_cast<uint64_t>(all.windows_size()));
  head.set_rule_set_version(options_.rule_set_version);
  head.set_node(options_.node_id);
  head.set_taken_unix_ms(absl::ToUnixMillis(clock_->TimeNow()));
  const std::string head_key = HeadKey(part.p);
  const std::string value = head.SerializeAsString();
  // The head replaces the one read by compare-and-set: normally our previous one; another's if
  // a former owner that did not yet know it lost the partition wrote one since (read again when
  // one is written between the read and the write). So the head replaced is known, and its
  // chunks are purged with ours below: no snapshot's chunks outlive their head.
  palisade::v1::PartitionSnapshotHead found;  // the head this write replaces
  absl::Status s;
  bool stored = false;
  bool wrote = false;     // a write was tried (its result perhaps unknown)
  bool unknown = false;   // and the head could not be read after it
  bool conflict = false;  // the last write lost its compare-and-set
  for (int attempt = 0; attempt < 5; ++attempt) {
    kvEntry* e = nullptr;
    const natsStatus got = kvStore_Get(&e, kv_, head_key.c_str());
    if (got != NATS_OK && got != NATS_NOT_FOUND) {
      if (s.ok()) s = NatsError(got, absl::StrCat("cluster: reading windows key ", head_key));
      unknown = wrote;
      break;
    }
    palisade::v1::PartitionSnapshotHead current;
    uint64_t revision = 0;
    if (got == NATS_OK) {
      revision = kvEntry_Revision(e);
      if (!current.ParseFromArray(kvEntry_Value(e), kvEntry_ValueLen(e))) current.Clear();
      kvEntry_Destroy(e);
    }
    // A publish can fail after the server stored it: then the head read is this snapshot's,
    // and it replaced the one read before it (its write was a compare-and-set on that).
    if (wrote && current.generation() == generation) {
      stored = true;
      break;
    }
    if (wrote && !conflict) break;  // failed, and not stored: `s` says why
    found = std::move(current);
    conflict = false;
    s = WriteSnapshotHead(head_key, value, got == NATS_OK ? revision : 0, &conflict);
    wrote = true;
    if (s.ok()) {
      stored = true;
      break;
    }
  }
  if (!stored) {
    {
      absl::MutexLock lock(&mu_);
      ++stats_.snapshot_failures;
    }
    // Unread after a write, the head may name them: kept until a read of it says it does not.
    AddOrphans(part.p, generation, head.chunks(), /*unsure=*/unknown);
    if (!unknown) PurgeOrphans().IgnoreError();
    if (s.ok()) {
      s = absl::UnavailableError(
          absl::StrCat("cluster: windows key ", head_key, " kept changing while written"));
    }
    return s;
  }
  // The previous snapshot's chunks (ours or the one we restored from) and those of the head
  // found are no longer read: no head names them now, nor ever will again.
  if (!part.snapshot_generation.empty()) {
    AddOrphans(part.p, part.snapshot_generation, part.snapshot_chunks, /*unsure=*/false);
  }
  if (!found.generation().empty() && found.generation() != part.snapshot_generation) {
    AddOrphans(part.p, found.generation(), found.chunks(), /*unsure=*/false);
  }
  part.snapshot_seq = part.position;
  part.snapshot_generation = generation;
  part.snapshot_chunks = head.chunks();
  part.since_snapshot = 0;
  part.last_snapshot = clock_->TimeNow();
  {
    absl::MutexLock lock(&mu_);
    ++stats_.snapshots;
  }
  PurgeOrphans().IgnoreError();  // what is left is tried again (Poll, SnapshotAll)
  return absl::OkStatus();
}

void PartitionCounter::AddOrphans(uint32_t p, std::string generation, uint32_t chunks,
                                  bool unsure) {
  if (chunks == 0) return;
  if (orphans_.size() >= kMaxOrphans) {
    // NATS failing for long (each failed snapshot adds one): the oldest are given up on.
    const Orphans& oldest = orphans_.front();
    absl::MutexLock lock(&mu_);
    stats_.chunks_abandoned += oldest.chunks;
    orphans_.pop_front();
  }
  orphans_.push_back({p, std::move(generation), chunks, unsure});
}

absl::Status PartitionCounter::PurgeOrphans() {
  last_orphan_purge_ = clock_->TimeNow();
  while (!orphans_.empty()) {
    Orphans& o = orphans_.front();
    if (o.unsure) {
      absl::StatusOr<std::optional<std::string>> h = Get(kv_, HeadKey(o.p));
      if (!h.ok()) return h.status();
      palisade::v1::PartitionSnapshotHead head;
      if (h->has_value() && head.ParseFromString(**h) && head.generation() == o.generation) {
        // The head was stored: a snapshot, whose chunks its replacer purges (Snapshot).
        orphans_.pop_front();
        continue;
      }
      o.unsure = false;  // not named now, so never again (a head is written once)
    }
    // The generation's chunk keys at once, from the bucket's stream: a KV purge (or delete)
    // would leave a marker per key in the bucket, for good (it has no TTL), so every snapshot
    // replaced would still leave bytes behind.
    const std::string subject =
        absl::StrCat("$KV.", options_.bucket, ".", ChunkKey(o.p, o.generation, 0));
    const std::string filter = absl::StrCat(subject.substr(0, subject.rfind('.')), ".*");
    jsOptions opts;
    jsOptions_Init(&opts);
    opts.Stream.Purge.Subject = filter.c_str();
    jsErrCode err = static_cast<jsErrCode>(0);
    const natsStatus s = js_PurgeStream(nats_.jetstream(),
                                        absl::StrCat("KV_", options_.bucket).c_str(), &opts, &err);
    if (s != NATS_OK) {
      return NatsError(s, absl::StrCat("cluster: purging windows snapshot ", o.generation,
                                       " of partition ", o.p));
    }
    {
      absl::MutexLock lock(&mu_);
      stats_.chunks_purged += o.chunks;
    }
    orphans_.pop_front();
  }
  return absl::OkStatus();
}

absl::Status PartitionCounter::SnapshotAll() {
  absl::Status first;
  for (auto& [p, part] : owned_) {
    absl::Status s = WriteEmitted(*part);
    if (s.ok()) s = Snapshot(*part);
    if (!s.ok() && first.ok()) first = s;
  }
  absl::Status purged = PurgeOrphans();
  if (!purged.ok() && first.ok()) first = purged;
  return first;
}

absl::StatusOr<size_t> PartitionCounter::Poll() {
  refused_this_poll_ = false;
  size_t read = 0;
  absl::Status first;
  auto note = [&first](absl::Status s) {
    if (!s.ok() && first.ok()) first = std::move(s);
  };
  // Reads up to max_batch of `part`'s matches; the first waits `wait_ms` when > 0, else only a
  // match already waiting is read.
  auto read_some = [&](Partition& part, int64_t wait_ms) {
    size_t n = 0;
    while (n < options_.max_batch && part.pending.empty() && part.sub != nullptr) {
      int64_t timeout = 1;
      if (n == 0 && wait_ms > 0) {
        timeout = wait_ms;
      } else {
        int msgs = 0, bytes = 0;
        natsSubscription_GetPending(part.sub, &msgs, &bytes);
        if (msgs <= 0) break;
      }
      natsMsg* msg = nullptr;
      const natsStatus s = natsSubscription_NextMsg(&msg, part.sub, timeout);
      if (s == NATS_TIMEOUT) break;
      if (s != NATS_OK) {
        note(NatsError(s, absl::StrCat("cluster: partition ", part.p, ": reading ", part.subject)));
        part.broken = true;
        break;
      }
      uint64_t seq = 0;
      jsMsgMetaData* meta = nullptr;
      if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
        seq = meta->Sequence.Stream;
        jsMsgMetaData_Destroy(meta);
      }
      absl::Status taken = Take(
          part, seq,
          absl::string_view(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg))));
      natsMsg_Destroy(msg);
      part.progress = clock_->TimeNow();
      ++n;
      note(std::move(taken));
    }
    return n;
  };
  for (auto& [p, part] : owned_) {
    if (!part->pending.empty()) {
      absl::Status s = Deliver(*part);
      note(s);
      if (!s.ok()) continue;
    }
    read += read_some(*part, 0);
  }
  if (read == 0 && options_.poll_wait > absl::ZeroDuration() && !owned_.empty()) {
    const int64_t wait_ms = std::max<int64_t>(
        1, absl::ToInt64Milliseconds(options_.poll_wait) / static_cast<int64_t>(owned_.size()));
    for (auto& [p, part] : owned_) {
      if (!part->pending.empty()) continue;
      read += read_some(*part, wait_ms);
      if (read > 0) break;
    }
  }
  const absl::Time now = clock_->TimeNow();
  for (auto& [p, part] : owned_) {
    // A reader that failed, or silent for `stall` while the stream holds more of its partition
    // (its consumer lived on a server that died, and libnats did not make it again: seen with
    // the decision log's), is made again after the last match read; nothing is skipped.
    if (!part->broken && part->pending.empty() && now - part->progress >= options_.stall) {
      part->progress = now;
      natsMsg* last = nullptr;
      jsErrCode err = static_cast<jsErrCode>(0);
      if (js_GetLastMsg(&last, nats_.jetstream(), options_.stream.c_str(), part->subject.c_str(),
                        nullptr, &err) == NATS_OK) {
        part->broken = natsMsg_GetSequence(last) > part->position;
        natsMsg_Destroy(last);
      }
    }
    if (part->broken) {
      absl::Status s = Subscribe(*part);
      note(s);
      if (s.ok()) {
        part->broken = false;
        absl::MutexLock lock(&mu_);
        ++stats_.resubscribed;
      }
    }
    if (part->rebuilding && part->position >= part->rebuild_target) {
      part->rebuilding = false;
      part->rebuild_time = now - part->gained;
    }
    // Refused matches raise nothing: with nothing waiting, everything read was handed over.
    if (part->pending.empty()) part->emitted = std::max(part->emitted, part->position);
    note(WriteEmitted(*part));
    if (part->since_snapshot >= options_.snapshot_every ||
        (part->since_snapshot > 0 && now - part->last_snapshot >= options_.snapshot_interval)) {
      note(Snapshot(*part));
    }
  }
  if (now - last_expire_ >= options_.expire_every) {
    last_expire_ = now;
    // As the pipeline ages a stream's windows: in the event time of the latest match counted,
    // at most now, at least a day behind now (a partition that went quiet still ages).
    for (auto& [p, part] : owned_) {
      part->engine->Expire(std::min(now, std::max(part->latest_event, now - absl::Hours(24))));
    }
  }
  // Chunks of failed or replaced snapshots whose purge failed: tried again.
  if (!orphans_.empty() && now - last_orphan_purge_ >= options_.stall) note(PurgeOrphans());
  // Partitions owned but not opened (the rule sets differed, NATS failed): tried again.
  if (!unopened_.empty() && now - last_open_attempt_ >= options_.stall) note(OpenUnopened());
  PublishStatus();
  if (!first.ok()) return first;
  return read;
}

PartitionCounter::Stats PartitionCounter::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

std::string PartitionCounter::last_refusal() const {
  absl::MutexLock lock(&mu_);
  return last_refusal_;
}

std::vector<PartitionCounter::PartitionStatus> PartitionCounter::partitions() const {
  absl::MutexLock lock(&mu_);
  return status_;
}

std::string LogThrottle::Note(absl::string_view message) {
  const absl::Time now = clock_.TimeNow();
  if (now - last_ < every_) {
    ++held_;
    return "";
  }
  last_ = now;
  std::string line(message);
  if (held_ > 0) {
    absl::StrAppend(&line, " (and ", held_, " more since the last such line, ",
                    absl::FormatDuration(every_), " at most between them)");
  }
  held_ = 0;
  return line;
}

absl::StatusOr<std::string> ApplyRuleReload(std::shared_ptr<const RuleSet> rules,
                                            MatchRouter& router, PartitionCounter& counter,
                                            bool writer) {
  std::string version = RuleSetVersion(*rules);
  router.SetRuleSetVersion(version);
  counter.SetRules(std::move(rules), version);
  if (writer) {
    if (absl::Status s = counter.PublishRuleSet(); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("cluster: rule set version ", version,
                                                 " not published: ", s.message()));
    }
  }
  return version;
}

}  // namespace palisade::cluster
