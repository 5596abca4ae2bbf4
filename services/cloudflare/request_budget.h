// The request budget shared by every caller of one credential: at most N requests in any
// sliding window (1,200 per 300 s by default, Cloudflare's global limit), plus what the server
// says through its rate-limit headers and Retry-After. Acquire() tells the caller how long to
// wait before it may send; it never sleeps itself.
// Thread-safety: thread-safe.
#ifndef PALISADE_SERVICES_CLOUDFLARE_REQUEST_BUDGET_H_
#define PALISADE_SERVICES_CLOUDFLARE_REQUEST_BUDGET_H_

#include <deque>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace palisade {

class RequestBudget {
 public:
  RequestBudget(int requests, absl::Duration window) : limit_(requests), window_(window) {}

  // Reserves a request at `now` and returns zero, or returns how long to wait (nothing
  // reserved) when the budget is spent or the server asked to back off.
  absl::Duration Acquire(absl::Time now);
  // The server said: no request before `until` (429 Retry-After, or "Ratelimit: r=0;t=N").
  void BlockUntil(absl::Time until);
  int Remaining(absl::Time now);

 private:
  void Prune(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int limit_;
  const absl::Duration window_;
  absl::Mutex mu_;
  std::deque<absl::Time> sent_ ABSL_GUARDED_BY(mu_);
  absl::Time blocked_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_CLOUDFLARE_REQUEST_BUDGET_H_
