#include "services/store/state_lock.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace palisade {
namespace {

using ::testing::HasSubstr;

std::string StateFile(const char* name) {
  return std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
}

TEST(StateFileLockTest, ASecondHolderIsRefusedNamingTheFile) {
  const std::string state = StateFile("a.db");
  absl::StatusOr<StateFileLock> first = StateFileLock::Acquire(state);
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<StateFileLock> second = StateFileLock::Acquire(state);
  ASSERT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(), HasSubstr(state + " is in use by another palisaded"));
  // Another state file is another lock.
  EXPECT_TRUE(StateFileLock::Acquire(StateFile("b.db")).ok());
}

TEST(StateFileLockTest, ReleasedWhenTheHolderGoesAndKeptAcrossAMove) {
  const std::string state = StateFile("c.db");
  {
    absl::StatusOr<StateFileLock> first = StateFileLock::Acquire(state);
    ASSERT_TRUE(first.ok()) << first.status();
    StateFileLock moved = *std::move(first);
    EXPECT_FALSE(StateFileLock::Acquire(state).ok());  // the moved-from lock released nothing
  }
  EXPECT_TRUE(StateFileLock::Acquire(state).ok());
}

// One database reached by two paths (a symbolic link to it, or to its directory) is one lock.
TEST(StateFileLockTest, APathThroughASymbolicLinkIsTheSameLock) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  const std::string state = StateFile("d.db");
  { std::ofstream(state.c_str()) << ""; }
  ASSERT_EQ(symlink(state.c_str(), (dir + "/link.db").c_str()), 0);
  ASSERT_EQ(symlink(dir.c_str(), (dir + "/linkdir").c_str()), 0);
  absl::StatusOr<StateFileLock> first = StateFileLock::Acquire(state);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(StateFileLock::Acquire(dir + "/link.db").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(StateFileLock::Acquire(dir + "/linkdir/d.db").status().code(),
            absl::StatusCode::kFailedPrecondition);
  // A state file not made yet, through the linked directory.
  absl::StatusOr<StateFileLock> fresh = StateFileLock::Acquire(dir + "/linkdir/new.db");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(StateFileLock::Acquire(StateFile("new.db")).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // A link to a state file not made yet (SQLite makes it through the link): the same lock
  // before and after it is made.
  ASSERT_EQ(symlink((dir + "/later.db").c_str(), (dir + "/dangling.db").c_str()), 0);
  absl::StatusOr<StateFileLock> through = StateFileLock::Acquire(dir + "/dangling.db");
  ASSERT_TRUE(through.ok()) << through.status();
  { std::ofstream(dir + "/later.db") << ""; }
  EXPECT_EQ(StateFileLock::Acquire(dir + "/dangling.db").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(StateFileLock::Acquire(dir + "/later.db").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// The lock file holds nothing and is opened read-only: made readable by all, so that one a run
// by hand as root left behind does not keep the service's own user out (0600 did, for good).
TEST(StateFileLockTest, TheLockFileIsReadableByAll) {
  const std::string state = StateFile("e.db");
  ASSERT_TRUE(StateFileLock::Acquire(state).ok());
  struct stat st;
  ASSERT_EQ(stat((state + ".lock").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);  // whatever the umask
}

TEST(StateFileLockTest, AnInMemoryStateHasNoLock) {
  absl::StatusOr<StateFileLock> a = StateFileLock::Acquire(":memory:");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(StateFileLock::Acquire(":memory:").ok());
}

}  // namespace
}  // namespace palisade
