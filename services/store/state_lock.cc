#include "services/store/state_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace palisade {

namespace {

// The state file's path with every symbolic link resolved (the file itself, or its directory
// when it is not made yet): one database reached by two paths is one lock. As given when
// neither resolves (the open reports what is wrong).
std::string Resolved(const std::string& state_file) {
  char buf[PATH_MAX];
  if (realpath(state_file.c_str(), buf) != nullptr) return buf;
  const size_t slash = state_file.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : state_file.substr(0, slash + 1);
  if (realpath(dir.c_str(), buf) == nullptr) return state_file;
  return absl::StrCat(buf, "/", slash == std::string::npos ? state_file
                                                            : state_file.substr(slash + 1));
}

}  // namespace

absl::StatusOr<StateFileLock> StateFileLock::Acquire(const std::string& state_file) {
  if (state_file.empty() || state_file == ":memory:") return StateFileLock(-1);
  const std::string path = Resolved(state_file) + ".lock";
  // Read-only and readable by all (it holds nothing): a lock file a run by hand as root left
  // behind is still opened by the service's own user, where 0600 read-write kept it out for
  // good. flock needs no write access.
  const int fd = open(path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("store: cannot open the lock file ", path, ": ", std::strerror(errno)));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    close(fd);
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          "store: ", state_file, " is in use by another palisaded (", path,
          " is locked); stop it first, or give this one a state_file of its own"));
    }
    return absl::UnavailableError(
        absl::StrCat("store: cannot lock ", path, ": ", std::strerror(err)));
  }
  return StateFileLock(fd);
}

StateFileLock::StateFileLock(StateFileLock&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)) {}

StateFileLock& StateFileLock::operator=(StateFileLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

StateFileLock::~StateFileLock() {
  if (fd_ >= 0) close(fd_);
}

}  // namespace palisade
