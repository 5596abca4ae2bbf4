// Test helpers for the file inputs' tests (file_follower_test, file_inputs_test): whether this
// process still holds a removed file open, and every descriptor taken for a while. Test-only.
#ifndef PALISADE_SERVICES_INPUTS_REMOVED_FILES_FOR_TESTS_H_
#define PALISADE_SERVICES_INPUTS_REMOVED_FILES_FOR_TESTS_H_

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace palisade::testing {

// Whether this process has a descriptor open on `path` after it was removed (a link in
// /proc/self/fd to "PATH (deleted)").
inline bool HoldsRemoved(const std::string& path) {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return false;
  bool found = false;
  for (struct dirent* e; (e = ::readdir(dir)) != nullptr;) {
    char target[4096];
    const ssize_t n = ::readlinkat(::dirfd(dir), e->d_name, target, sizeof(target));
    if (n > 0 && std::string(target, static_cast<size_t>(n)) == path + " (deleted)") found = true;
  }
  ::closedir(dir);
  return found;
}

// While it lives, every descriptor the process may open is taken (its soft limit lowered to 256,
// the rest filled with /dev/null): an open then fails with EMFILE. Given back when destroyed.
class AllDescriptorsTaken {
 public:
  AllDescriptorsTaken() {
    if (::getrlimit(RLIMIT_NOFILE, &old_) != 0) return;
    struct rlimit low = old_;
    low.rlim_cur = 256;
    if (::setrlimit(RLIMIT_NOFILE, &low) != 0) return;
    lowered_ = true;
    for (int fd; (fd = ::open("/dev/null", O_RDONLY)) >= 0;) taken_.push_back(fd);
  }
  ~AllDescriptorsTaken() {
    for (int fd : taken_) ::close(fd);
    if (lowered_) ::setrlimit(RLIMIT_NOFILE, &old_);
  }
  AllDescriptorsTaken(const AllDescriptorsTaken&) = delete;
  AllDescriptorsTaken& operator=(const AllDescriptorsTaken&) = delete;
  // Whether the limit was lowered (and so every descriptor is taken).
  bool ok() const { return lowered_; }

 private:
  struct rlimit old_ {};
  bool lowered_ = false;
  std::vector<int> taken_;
};

}  // namespace palisade::testing

#endif  // PALISADE_SERVICES_INPUTS_REMOVED_FILES_FOR_TESTS_H_
