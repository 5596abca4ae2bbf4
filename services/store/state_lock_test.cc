#include "services/store/state_lock.h"

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

TEST(StateFileLockTest, AnInMemoryStateHasNoLock) {
  absl::StatusOr<StateFileLock> a = StateFileLock::Acquire(":memory:");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(StateFileLock::Acquire(":memory:").ok());
}

}  // namespace
}  // namespace palisade
