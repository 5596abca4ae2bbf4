#include "services/store/state_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace palisade {

namespace {

// The state file's path with every symbolic link resolved: one database reached by two paths
// is one lock. A link to a file not made yet (SQLite makes it through the link) is followed
// too, then the directory it names resolved. As given when that fails (the open reports what
// is wrong).
std::string Resolved(std::string path) {
  char buf[PATH_MAX];
  for (int links = 0; links < 40; ++links) {  // as the kernel's limit on a path's links
    struct stat st;
    if (lstat(path.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) break;
    const ssize_t n = readlink(path.c_str(), buf, sizeof(buf) - 1);
    if (n <= 0) break;
    const std::string target(buf, static_cast<size_t>(n));
    const size_t slash = path.rfind('/');
    path = target[0] == '/' || slash == std::string::npos
               ? target
               : absl::StrCat(path.substr(0, slash + 1), target);
  }
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  if (realpath(dir.c_str(), buf) == nullptr) return path;
  return absl::StrCat(buf, "/", slash == std::string::npos ? path : path.substr(slash + 1));
}

}  // namespace

absl::StatusOr<StateFileLock> StateFileLock::Acquire(const std::string& state_file) {
  if (state_file.empty() || state_file == ":memory:") return StateFileLock(-1);
  const std::string path = Resolved(state_file) + ".lock";
  // Readable by all (it holds nothing), whatever the umask, and opened read-only when it cannot
  // be written: a lock file a run by hand as root left behind is still opened by the service's
  // own user, where 0600 read-write kept it out for good. flock needs no write access, but NFS
  // emulates it with a byte-range lock, which does: read-write first.
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0 && errno == EACCES) fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) (void)fchmod(fd, 0644);  // not ours (EPERM): left as it is
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
