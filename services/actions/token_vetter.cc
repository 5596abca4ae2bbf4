#include "services/actions/token_vetter.h"

#include <algorithm>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "services/actions/actuator.h"

namespace palisade {

TokenVerdict VerifyWithCloudflare(CloudflareClient& client, const std::string& secret) {
  absl::StatusOr<TokenInfo> info =
      client.VerifyOtherToken(Secret(secret), absl::StartsWith(secret, "cfat_"));
  if (info.ok() || IsIpRestricted(info.status())) return TokenVerdict::kLive;
  // Throttled, unavailable, timed out: no answer yet; so is a 2xx the client could not read
  // (kInternal): Cloudflare answered without refusing it. Anything else (401 "Invalid API Token"
  // from both endpoints, a malformed request) says Cloudflare will not take it as a token.
  return IsTransient(info.status()) || info.status().code() == absl::StatusCode::kInternal
             ? TokenVerdict::kUnknown
             : TokenVerdict::kNotAToken;
}

TokenVetter::TokenVetter(TokenVetterOptions options, Clock& clock, VerifyFn verify, Sink sink,
                         prometheus::Registry& registry)
    : options_(std::move(options)),
      clock_(clock),
      verify_(std::move(verify)),
      sink_(std::move(sink)),
      results_(prometheus::BuildCounter()
                   .Name("palisade_token_candidates_total")
                   .Help("Token-shaped strings seen by token rules, by what became of them: "
                         "live (verified: decided), cached_live, not_a_token (verify refused "
                         "it: no decision), cached_not_a_token, rate_limited (over the "
                         "source's verify budget), queue_full, duplicate (already waiting), "
                         "retried, gave_up (no answer after every attempt), unverifiable (no "
                         "Cloudflare edge to verify with: no decision).")
                   .Register(registry)),
      pending_gauge_(prometheus::BuildGauge()
                         .Name("palisade_token_candidates_pending")
                         .Help("Token candidates waiting for their verify.")
                         .Register(registry)
                         .Add({})) {}

TokenVetter::~TokenVetter() { Stop(); }

uint64_t TokenVetter::FingerprintBits(absl::string_view fingerprint) {
  absl::ConsumePrefix(&fingerprint, "sha256:");
  uint64_t bits = 0;
  for (char c : fingerprint.substr(0, 16)) {
    const int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : 0;
    bits = bits << 4 | static_cast<uint64_t>(v);
  }
  return bits;
}

void TokenVetter::Count(const std::string& result, double n) {
  results_.Add({{"result", result}}).Increment(n);
}

bool TokenVetter::TakeVerifyLocked(uint64_t source_key, absl::Time now) {
  const Bucket full{static_cast<double>(options_.burst_per_source), now};
  Bucket* bucket;
  if (auto it = buckets_.find(source_key); it != buckets_.end()) {
    bucket = &it->second;
  } else if (buckets_.size() < options_.max_sources) {
    bucket = &buckets_.try_emplace(source_key, full).first->second;
  } else {
    // Past max_sources, new sources share one bucket (so the table stays bounded).
    if (!overflow_bucket_.has_value()) overflow_bucket_ = full;
    bucket = &*overflow_bucket_;
  }
  Bucket& b = *bucket;
  if (options_.refill_every > absl::ZeroDuration() && now > b.last) {
    b.tokens = std::min(static_cast<double>(options_.burst_per_source),
                        b.tokens + absl::FDivDuration(now - b.last, options_.refill_every));
  }
  b.last = std::max(b.last, now);
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
}

void TokenVetter::RememberLocked(uint64_t fp, bool live, absl::Time now) {
  const absl::Time until = now + (live ? options_.positive_ttl : options_.negative_ttl);
  auto [it, inserted] = cache_.try_emplace(fp, Verdict{live, until});
  if (!inserted) {
    it->second = Verdict{live, until};
    return;
  }
  cache_order_.push_back(fp);
  while (cache_.size() > options_.max_cached && !cache_order_.empty()) {
    cache_.erase(cache_order_.front());
    cache_order_.pop_front();
  }
}

void TokenVetter::Submit(absl::string_view source_view, std::vector<Detection>& candidates,
                         std::shared_ptr<const RuleSet> rules) {
  if (!verify_) {  // no edge: nothing can say it is a token, nor revoke it
    if (!candidates.empty()) Count("unverifiable", static_cast<double>(candidates.size()));
    return;
  }
  const std::string source(source_view);
  const uint64_t source_key = absl::Hash<absl::string_view>()(source_view);
  const absl::Time now = clock_.TimeNow();
  absl::MutexLock lock(&mu_);
  for (Detection& d : candidates) {
    const uint64_t fp = FingerprintBits(d.key);
    if (queued_fps_.contains(fp)) {
      Count("duplicate");
      continue;
    }
    bool known_live = false;
    if (auto cached = cache_.find(fp); cached != cache_.end() && cached->second.until > now) {
      if (!cached->second.live) {
        Count("cached_not_a_token");
        continue;
      }
      known_live = true;
    }
    size_t bytes = sizeof(Candidate) + source.size() + d.key.size() + d.secret.size();
    for (const std::string& e : d.evidence) bytes += e.size();
    if (queue_.size() >= options_.max_pending ||
        queued_bytes_ + bytes > options_.max_pending_bytes) {
      Count("queue_full");
      continue;
    }
    if (!known_live && !TakeVerifyLocked(source_key, now)) {
      Count("rate_limited");
      continue;
    }
    Candidate& c = queue_.emplace_back();
    c.source = source;
    c.fp = fp;
    c.detection = std::move(d);
    c.rules = rules;
    c.bytes = bytes;
    c.known_live = known_live;
    queued_bytes_ += bytes;
    queued_fps_.insert(fp);
  }
  pending_gauge_.Set(static_cast<double>(queue_.size()));
  wake_.Signal();
}

int TokenVetter::RunOnce() {
  int calls = 0;
  for (;;) {
    Candidate c;
    {
      absl::MutexLock lock(&mu_);
      const absl::Time now = clock_.TimeNow();
      auto due = std::find_if(queue_.begin(), queue_.end(),
                              [now](const Candidate& q) { return q.not_before <= now; });
      if (due == queue_.end()) break;
      c = std::move(*due);
      queue_.erase(due);
      queued_bytes_ -= c.bytes;
      pending_gauge_.Set(static_cast<double>(queue_.size()));
      // Its fingerprint stays in queued_fps_ while the verify runs: a sighting meanwhile is a
      // duplicate, not a second call.
    }
    TokenVerdict verdict = TokenVerdict::kLive;
    if (!c.known_live) {
      verdict = verify_(c.detection.secret);
      ++calls;
    }
    {
      absl::MutexLock lock(&mu_);
      const absl::Time now = clock_.TimeNow();
      switch (verdict) {
        case TokenVerdict::kLive:
          RememberLocked(c.fp, true, now);
          queued_fps_.erase(c.fp);
          Count(c.known_live ? "cached_live" : "live");
          break;
        case TokenVerdict::kNotAToken:
          RememberLocked(c.fp, false, now);
          queued_fps_.erase(c.fp);
          Count("not_a_token");
          continue;  // the secret goes with `c`
        case TokenVerdict::kUnknown:
          if (++c.attempts >= options_.max_attempts) {
            queued_fps_.erase(c.fp);
            Count("gave_up");
            continue;
          }
          Count("retried");
          c.not_before = now + options_.retry_backoff * (1 << std::min(c.attempts - 1, 10));
          queued_bytes_ += c.bytes;
          queue_.push_back(std::move(c));
          pending_gauge_.Set(static_cast<double>(queue_.size()));
          continue;
      }
    }
    std::vector<Detection> verified;
    verified.push_back(std::move(c.detection));
    sink_(c.source, verified);
  }
  return calls;
}

void TokenVetter::Start() {
  worker_ = std::thread([this] {
    for (;;) {
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) return;
        const absl::Time now = clock_.TimeNow();
        const bool due = std::any_of(queue_.begin(), queue_.end(),
                                     [now](const Candidate& q) { return q.not_before <= now; });
        // New work signals; a retry that comes due is found on the next look.
        if (!due) wake_.WaitWithTimeout(&mu_, absl::Seconds(1));
        if (stopping_) return;
      }
      RunOnce();
    }
  });
}

void TokenVetter::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    wake_.SignalAll();
  }
  if (worker_.joinable()) worker_.join();
}

size_t TokenVetter::pending() const {
  absl::MutexLock lock(&mu_);
  return queue_.size();
}

size_t TokenVetter::memory_bytes() const {
  absl::MutexLock lock(&mu_);
  // A flat_hash_map slot is its value and a control byte.
  size_t bytes = queued_bytes_ + queued_fps_.capacity() * (sizeof(uint64_t) + 1) +
                 cache_.capacity() * (sizeof(std::pair<uint64_t, Verdict>) + 1) +
                 cache_order_.size() * sizeof(uint64_t) +
                 buckets_.capacity() * (sizeof(std::pair<uint64_t, Bucket>) + 1) +
                 sizeof(overflow_bucket_);
  return bytes;
}

}  // namespace palisade
