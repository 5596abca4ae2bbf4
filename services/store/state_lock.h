// One palisaded per state file: an exclusive lock held for the daemon's life. A second daemon
// started on the same file (an operator checking a config by hand while the service runs)
// would resume the same outbox and send its operations again, and reconcile the edge against
// a state the first daemon has since moved on from, deleting what it made as orphans. The
// lock is taken before anything is read or sent; the second daemon refuses to start.
//
// The lock is flock(2) on a file beside the database (`STATE.lock`, symbolic links in the
// state file's path resolved, mode 0644), not on the database itself: SQLite holds POSIX locks on its files, and a second descriptor on them closed by
// this process would drop those. flock is released by the kernel when the process ends, a
// crash included, so a stale lock file never blocks a restart.
//
// Thread-safety: a StateFileLock is not shared; Acquire may be called from any thread.
#ifndef PALISADE_SERVICES_STORE_STATE_LOCK_H_
#define PALISADE_SERVICES_STORE_STATE_LOCK_H_

#include <string>

#include "absl/status/statusor.h"

namespace palisade {

class StateFileLock {
 public:
  // Takes the lock of the state file at `state_file` without waiting. kFailedPrecondition when
  // another process (or another StateFileLock in this one) holds it; kUnavailable when the
  // lock file cannot be opened. ":memory:" and "" have no file: an empty lock, always taken.
  static absl::StatusOr<StateFileLock> Acquire(const std::string& state_file);

  StateFileLock(StateFileLock&& other) noexcept;
  StateFileLock& operator=(StateFileLock&& other) noexcept;
  StateFileLock(const StateFileLock&) = delete;
  StateFileLock& operator=(const StateFileLock&) = delete;
  ~StateFileLock();  // releases the lock (the lock file stays)

 private:
  explicit StateFileLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_STORE_STATE_LOCK_H_
