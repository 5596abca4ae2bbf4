// The token-candidate stage, between detection and decision for token rules
// (TARGET_KIND_TOKEN_FINGERPRINT). Anyone who can write a log line can write a string shaped like
// a token ("?cf_token=" + 40 random characters); before this stage each one became a thirty-day
// revocation decision, a store row, an API call and a slot of the guard's budget, so seventy such
// lines held the ban of the real attacker behind them. Here a candidate becomes a decision only
// once a verify call (the check Cloudflare itself makes) says it is a live token:
//
//  - Verified live (or live but IP-restricted, 9109): handed to the sink, which decides it as
//    before; the actuator then revokes it. Remembered, so later sightings skip the verify.
//  - Refused ("not a token": invalid, revoked, expired): remembered in a negative cache keyed by
//    fingerprint, bounded in entries (FIFO eviction) and age, so a repeated fake costs no call.
//  - No answer (API down, throttled): retried with backoff, a bounded number of times.
//  - Verifies are rate-limited per batch source: a burst, then one per `refill_every` (a token
//    bucket), so a flood of fakes costs a bounded share of the API's request budget; a candidate
//    over the limit is dropped and counted. The buckets are keyed by a 64-bit hash of the source
//    (absl::Hash, seeded per process), never the source itself, which the client chooses: a
//    thousand batches with sources of a few MiB each held GiBs in bucket keys for the life of
//    the process. The pending queue is bounded in entries and bytes.
// Nothing here is durable: a candidate is in memory until it is verified (the secret never is).
//
// Everything is counted in palisade_token_candidates_total{result} (bounded labels).
// Thread-safety: Submit, RunOnce and pending are thread-safe; the sink and the verify are
// called without the stage's lock, from the worker thread (Start) or from RunOnce's caller.
#ifndef PALISADE_SERVICES_ACTIONS_TOKEN_VETTER_H_
#define PALISADE_SERVICES_ACTIONS_TOKEN_VETTER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/cloudflare/client.h"
#include "services/common/clock.h"
#include "services/engine/engine.h"

namespace palisade {

struct TokenVetterOptions {
  // Verifies per batch source: `burst` at once, then one more per `refill_every`. 100 and 10 s
  // cost a flood of fakes from one source at most 100 + 30 calls per five minutes, about a tenth
  // of Cloudflare's 1,200 per 300 s, and still verify every token of a normal log at once.
  int burst_per_source = 100;
  absl::Duration refill_every = absl::Seconds(10);
  // Sources with a bucket of their own (a few dozen bytes each, whatever the source's length);
  // past it, new sources share one bucket.
  size_t max_sources = 1024;
  // Candidates waiting for their verify (entries, and bytes of evidence and secrets).
  size_t max_pending = 1024;
  size_t max_pending_bytes = 4 << 20;
  // Verdicts remembered, by fingerprint (8 bytes each, plus the table: ~3 MiB at 65,536).
  size_t max_cached = 65536;
  absl::Duration negative_ttl = absl::Hours(24);
  absl::Duration positive_ttl = absl::Hours(24);
  // A verify without an answer is tried again after `retry_backoff` (doubling), at most
  // `max_attempts` times in all.
  int max_attempts = 5;
  absl::Duration retry_backoff = absl::Seconds(30);
};

enum class TokenVerdict {
  kLive,       // a token Cloudflare knows (revocation is worth a decision)
  kNotAToken,  // refused: random, revoked or expired
  kUnknown,    // no answer: try again later
};

// Verifies a candidate through the Cloudflare API (user, then account endpoint: the client's
// VerifyOtherToken). 9109 (live, but may not be used from here) is kLive: the actuator says
// loudly that it cannot revoke it.
TokenVerdict VerifyWithCloudflare(CloudflareClient& client, const std::string& secret);

class TokenVetter {
 public:
  using VerifyFn = std::function<TokenVerdict(const std::string& secret)>;
  // Verified detections of one source, to be decided. They may be moved from.
  using Sink = std::function<void(const std::string& source, std::vector<Detection>& verified)>;

  // Without `verify` (no Cloudflare edge) every candidate is counted as unverifiable and
  // dropped: a string nobody can verify makes no decision, and there is nothing to revoke with.
  TokenVetter(TokenVetterOptions options, Clock& clock, VerifyFn verify, Sink sink,
              prometheus::Registry& registry);
  ~TokenVetter();

  // Takes the candidates of one batch (moves from them); never waits on a verify. `rules` keeps
  // the detections' rules alive until they are decided.
  void Submit(absl::string_view source, std::vector<Detection>& candidates,
              std::shared_ptr<const RuleSet> rules);

  // Verifies every candidate that is due, once, and hands the live ones to the sink. Returns the
  // number of verify calls made.
  int RunOnce();
  // A worker thread that runs RunOnce whenever candidates wait (Stop, or the destructor, ends it).
  void Start();
  void Stop();

  size_t pending() const;
  // The bytes the stage holds (an estimate from its tables' capacities): the pending candidates,
  // the verdict cache and the per-source buckets.
  size_t memory_bytes() const;

 private:
  struct Candidate {
    std::string source;
    uint64_t fp = 0;
    Detection detection;
    std::shared_ptr<const RuleSet> rules;
    size_t bytes = 0;
    int attempts = 0;
    bool known_live = false;  // verified before: no call needed
    absl::Time not_before = absl::InfinitePast();
  };
  struct Verdict {
    bool live = false;
    absl::Time until;
  };
  struct Bucket {
    double tokens = 0;
    absl::Time last;
  };

  // The 64 bits a fingerprint ("sha256:" + 16 hex) names.
  static uint64_t FingerprintBits(absl::string_view fingerprint);
  // Spends one verify of the bucket of the source whose hash is `source_key`; false when it is
  // empty.
  bool TakeVerifyLocked(uint64_t source_key, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RememberLocked(uint64_t fp, bool live, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Count(const std::string& result, double n = 1);

  const TokenVetterOptions options_;
  Clock& clock_;
  const VerifyFn verify_;
  const Sink sink_;

  mutable absl::Mutex mu_;
  absl::CondVar wake_;
  std::deque<Candidate> queue_ ABSL_GUARDED_BY(mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_set<uint64_t> queued_fps_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Verdict> cache_ ABSL_GUARDED_BY(mu_);
  std::deque<uint64_t> cache_order_ ABSL_GUARDED_BY(mu_);  // oldest first, for eviction
  // By the source's hash; past max_sources, new sources share `overflow_bucket_`.
  absl::flat_hash_map<uint64_t, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
  std::optional<Bucket> overflow_bucket_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread worker_;

  prometheus::Family<prometheus::Counter>& results_;
  prometheus::Gauge& pending_gauge_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_ACTIONS_TOKEN_VETTER_H_
