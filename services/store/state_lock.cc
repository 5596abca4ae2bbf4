#include "services/store/state_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace palisade {

absl::StatusOr<StateFileLock> StateFileLock::Acquire(const std::string& state_file) {
  if (state_file.empty() || state_file == ":memory:") return StateFileLock(-1);
  const std::string path = state_file + ".lock";
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
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
