#include "services/cluster/feed_sync.h"

#include <nats/nats.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

namespace palisade::cluster {

namespace {

// Feed names are [a-z0-9_.-]+: '.' (a KV token separator, refused at a key's end) becomes '='.
std::string HeadKey(absl::string_view feed) {
  return absl::StrCat("h.", absl::StrReplaceAll(feed, {{".", "="}}));
}
std::string ChunkKey(absl::string_view generation, uint32_t i) {
  return absl::StrCat("c.", generation, ".", i);
}

struct Head {
  uint64_t version = 0;
  std::string generation;
  uint32_t chunks = 0;
  uint64_t bytes = 0;
};

std::string FormatHead(const Head& h) {
  return absl::StrCat("v1 ", h.version, " ", h.generation, " ", h.chunks, " ", h.bytes);
}

std::optional<Head> ParseHead(absl::string_view text) {
  std::vector<absl::string_view> f = absl::StrSplit(text, ' ');
  Head h;
  if (f.size() != 5 || f[0] != "v1" || !absl::SimpleAtoi(f[1], &h.version) || f[2].empty() ||
      !absl::SimpleAtoi(f[3], &h.chunks) || !absl::SimpleAtoi(f[4], &h.bytes)) {
    return std::nullopt;
  }
  h.generation = std::string(f[2]);
  return h;
}

absl::StatusOr<std::optional<std::string>> Get(kvStore* kv, const std::string& key) {
  return KvGet(kv, key, "feeds");
}

absl::Status Put(kvStore* kv, const std::string& key, absl::string_view value) {
  return KvPut(kv, key, value, "feeds");
}

}  // namespace

absl::StatusOr<std::unique_ptr<FeedSync>> FeedSync::Open(NatsClient& nats,
                                                         FeedSyncOptions options) {
  if (options.node_id.empty() || !options.apply || options.chunk_bytes == 0) {
    return absl::InvalidArgumentError(
        "cluster: feed sync needs a node id, an apply callback and a chunk size");
  }
  absl::StatusOr<kvStore*> kv =
      nats.OpenKeyValue(options.bucket, options.replicas, absl::ZeroDuration(), "feeds bucket");
  if (!kv.ok()) return kv.status();
  std::unique_ptr<FeedSync> sync(new FeedSync(std::move(options), *kv));
  if (absl::Status s = sync->Poll(); !s.ok()) {
    sync->Log(absl::StrCat("cluster: feeds not read at start (read again every ",
                           absl::FormatDuration(sync->options_.interval), "): ", s.message()));
  }
  if (sync->options_.run_thread) {
    FeedSync* self = sync.get();
    sync->thread_ = std::thread([self] {
      for (;;) {
        {
          absl::MutexLock lock(&self->run_mu_);
          if (self->run_mu_.AwaitWithTimeout(absl::Condition(&self->stop_),
                                             self->options_.interval)) {
            return;
          }
        }
        self->Poll().IgnoreError();  // counted in failures; retried at the next poll
      }
    });
  }
  return sync;
}

FeedSync::FeedSync(FeedSyncOptions options, kvStore* kv) : options_(std::move(options)), kv_(kv) {
  if (options_.metrics == nullptr) return;
  auto& family = prometheus::BuildCounter()
                     .Name("palisade_cluster_feed_versions_total")
                     .Help("Threat feed versions this node published (the writer), applied from "
                           "the writer, ignored as not newer than its own, or failed to publish "
                           "or read (retried at the next poll).")
                     .Register(*options_.metrics);
  published_ = &family.Add({{"result", "published"}});
  applied_ = &family.Add({{"result", "applied"}});
  stale_ = &family.Add({{"result", "stale"}});
  failed_ = &family.Add({{"result", "failed"}});
}

void FeedSync::Count(uint64_t Stats::*field, prometheus::Counter* counter, uint64_t n) {
  stats_.*field += n;
  if (counter != nullptr) counter->Increment(static_cast<double>(n));
}

FeedSync::~FeedSync() {
  {
    absl::MutexLock lock(&run_mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
  kvStore_Destroy(kv_);
}

void FeedSync::Log(const std::string& m) const {
  if (options_.log) options_.log(m);
}

void FeedSync::Publish(absl::string_view feed, const palisade::v1::FeedState& state) {
  std::string bytes = state.SerializeAsString();
  absl::MutexLock lock(&mu_);
  auto& slot = pending_[std::string(feed)];
  if (!slot.second.empty() && slot.first > state.version()) return;  // a newer one waits
  slot = {state.version(), std::move(bytes)};
}

FeedSync::Stats FeedSync::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

absl::Status FeedSync::Poll() {
  absl::Status flushed = Flush();
  absl::Status followed = Follow();
  return flushed.ok() ? followed : flushed;
}

absl::Status FeedSync::Flush() {
  std::map<std::string, std::pair<uint64_t, std::string>> pending;
  {
    absl::MutexLock lock(&mu_);
    pending.swap(pending_);
  }
  absl::Status first;
  for (auto& [feed, version] : pending) {
    absl::Status s = Write(feed, version.first, version.second);
    if (s.ok()) continue;
    if (first.ok()) first = s;
    absl::MutexLock lock(&mu_);
    Count(&Stats::failures, failed_);
    // Kept for the next poll unless a newer version was queued meanwhile.
    auto it = pending_.find(feed);
    if (it == pending_.end() || it->second.first < version.first) {
      pending_[feed] = std::move(version);
    }
  }
  return first;
}

absl::Status FeedSync::Write(const std::string& feed, uint64_t version, const std::string& bytes) {
  static thread_local absl::BitGen bitgen;
  Head head;
  head.version = version;
  head.generation =
      absl::StrFormat("%s-%016x", options_.node_id, absl::Uniform<uint64_t>(bitgen));
  head.bytes = bytes.size();
  head.chunks =
      static_cast<uint32_t>((bytes.size() + options_.chunk_bytes - 1) / options_.chunk_bytes);
  for (uint32_t i = 0; i < head.chunks; ++i) {
    absl::string_view piece =
        absl::string_view(bytes).substr(i * options_.chunk_bytes, options_.chunk_bytes);
    if (absl::Status s = Put(kv_, ChunkKey(head.generation, i), piece); !s.ok()) return s;
  }
  // The head as it is now: the version this one replaces (ours, or another writer's), whose
  // chunks are purged once the new head stands, so no chunks outlive their head.
  std::optional<Head> replaced;
  absl::StatusOr<std::optional<std::string>> current = Get(kv_, HeadKey(feed));
  if (current.ok() && current->has_value()) replaced = ParseHead(**current);
  if (absl::Status s = Put(kv_, HeadKey(feed), FormatHead(head)); !s.ok()) return s;
  if (replaced.has_value() && replaced->generation != head.generation) {
    for (uint32_t i = 0; i < replaced->chunks; ++i) {
      kvStore_Purge(kv_, ChunkKey(replaced->generation, i).c_str(), nullptr);
    }
  }
  seen_[feed] = {head.version, head.generation, head.chunks};
  absl::MutexLock lock(&mu_);
  Count(&Stats::published, published_);
  return absl::OkStatus();
}

absl::Status FeedSync::Follow() {
  absl::Status first;
  auto fail = [&](absl::Status s) {
    if (first.ok()) first = s;
    absl::MutexLock lock(&mu_);
    Count(&Stats::failures, failed_);
  };
  for (const std::string& feed : options_.feeds) {
    absl::StatusOr<std::optional<std::string>> text = Get(kv_, HeadKey(feed));
    if (!text.ok()) {
      fail(text.status());
      continue;
    }
    if (!text->has_value()) continue;  // never published
    std::optional<Head> head = ParseHead(**text);
    if (!head.has_value()) {
      fail(absl::DataLossError(
          absl::StrCat("cluster: feed ", feed, ": its published head is unreadable")));
      continue;
    }
    Seen& seen = seen_[feed];
    if (head->generation == seen.generation) continue;  // read (or written) already
    // The head's size is read, not trusted: never reserved beyond what a feed takes, and the
    // reading stops once the chunks pass it.
    constexpr uint64_t kMaxReserve = 64u << 20;
    std::string bytes;
    bytes.reserve(static_cast<size_t>(std::min<uint64_t>(head->bytes, kMaxReserve)));
    absl::Status read;
    for (uint32_t i = 0; i < head->chunks && read.ok(); ++i) {
      absl::StatusOr<std::optional<std::string>> c = Get(kv_, ChunkKey(head->generation, i));
      if (!c.ok()) {
        read = c.status();
      } else if (!c->has_value()) {
        // Replaced while read: the next poll reads the newer head.
        read = absl::UnavailableError(absl::StrCat("cluster: feed ", feed, ": version ",
                                                   head->version, " replaced while read"));
      } else if (bytes.size() + (*c)->size() > head->bytes) {
        read = absl::DataLossError(absl::StrCat("cluster: feed ", feed, ": published version ",
                                                head->version, " is unreadable"));
      } else {
        bytes.append(**c);
      }
    }
    palisade::v1::FeedState state;
    if (read.ok() && (bytes.size() != head->bytes || !state.ParseFromString(bytes))) {
      read = absl::DataLossError(absl::StrCat("cluster: feed ", feed, ": published version ",
                                              head->version, " is unreadable"));
    }
    if (!read.ok()) {
      fail(read);
      continue;
    }
    if (state.version() != head->version) state.set_version(head->version);
    absl::StatusOr<bool> applied = options_.apply(feed, state);
    seen = {head->version, head->generation, head->chunks};
    if (!applied.ok()) {
      Log(absl::StrCat("cluster: feed ", feed, ": version ", head->version,
                       " not applied: ", applied.status().message()));
      fail(applied.status());
      continue;
    }
    absl::MutexLock lock(&mu_);
    if (*applied) {
      Count(&Stats::applied, applied_);
    } else {
      Count(&Stats::stale, stale_);
    }
    if (*applied) {
      Log(absl::StrCat("cluster: feed ", feed, ": version ", head->version, " (",
                       state.entries_size(), " entries) from the writer"));
    }
  }
  return first;
}

}  // namespace palisade::cluster
