// ShardMutex: the lock of each shard of the engine's windows and of its session table, taken
// once per counted match (and per session note). It is std::mutex with the thread-safety
// annotations absl::Mutex carries, because absl::Mutex costs ~20 times more here: Debian builds
// Abseil without NDEBUG, so every absl::Mutex::Lock runs its deadlock detector (a GraphCycles
// lookup per lock and unlock, ~500 instructions a pair, measured with callgrind: 5 % of
// Engine::Process on an access log with every pack loaded). An uncontended std::mutex is one
// atomic exchange each way.
//
// Only for short critical sections that call out to nothing (no condition waits, no nested
// locks but ShardMutex::TryLock). Thread-safety: a mutex.
#ifndef PALISADE_SERVICES_ENGINE_SHARD_MUTEX_H_
#define PALISADE_SERVICES_ENGINE_SHARD_MUTEX_H_

#include <mutex>

#include "absl/base/thread_annotations.h"

namespace palisade {

class ABSL_LOCKABLE ShardMutex {
 public:
  ShardMutex() = default;
  ShardMutex(const ShardMutex&) = delete;
  ShardMutex& operator=(const ShardMutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  bool TryLock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.try_lock(); }

 private:
  std::mutex mu_;
};

// Holds a ShardMutex for its scope.
class ABSL_SCOPED_LOCKABLE ShardMutexLock {
 public:
  explicit ShardMutexLock(ShardMutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->Lock();
  }
  ~ShardMutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  ShardMutexLock(const ShardMutexLock&) = delete;
  ShardMutexLock& operator=(const ShardMutexLock&) = delete;

 private:
  ShardMutex* const mu_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_ENGINE_SHARD_MUTEX_H_
