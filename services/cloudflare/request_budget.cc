#include "services/cloudflare/request_budget.h"

#include <algorithm>

namespace palisade {

void RequestBudget::Prune(absl::Time now) {
  while (!sent_.empty() && sent_.front() <= now - window_) sent_.pop_front();
}

absl::Duration RequestBudget::Acquire(absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (blocked_until_ > now) return blocked_until_ - now;
  Prune(now);
  if (static_cast<int>(sent_.size()) >= limit_) return sent_.front() + window_ - now;
  sent_.push_back(now);
  return absl::ZeroDuration();
}

void RequestBudget::BlockUntil(absl::Time until) {
  absl::MutexLock lock(&mu_);
  blocked_until_ = std::max(blocked_until_, until);
}

int RequestBudget::Remaining(absl::Time now) {
  absl::MutexLock lock(&mu_);
  Prune(now);
  return limit_ - static_cast<int>(sent_.size());
}

}  // namespace palisade
