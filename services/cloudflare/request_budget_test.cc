#include "services/cloudflare/request_budget.h"

#include "gtest/gtest.h"

namespace palisade {
namespace {

TEST(RequestBudgetTest, SlidingWindow) {
  RequestBudget budget(3, absl::Seconds(10));
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  EXPECT_EQ(budget.Acquire(t0), absl::ZeroDuration());
  EXPECT_EQ(budget.Acquire(t0 + absl::Seconds(1)), absl::ZeroDuration());
  EXPECT_EQ(budget.Acquire(t0 + absl::Seconds(2)), absl::ZeroDuration());
  EXPECT_EQ(budget.Remaining(t0 + absl::Seconds(2)), 0);
  EXPECT_EQ(budget.Acquire(t0 + absl::Seconds(3)), absl::Seconds(7));
  EXPECT_EQ(budget.Acquire(t0 + absl::Seconds(10)), absl::ZeroDuration());
}

TEST(RequestBudgetTest, ServerBlockWins) {
  RequestBudget budget(100, absl::Seconds(300));
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  budget.BlockUntil(t0 + absl::Seconds(30));
  EXPECT_EQ(budget.Acquire(t0), absl::Seconds(30));
  EXPECT_EQ(budget.Acquire(t0 + absl::Seconds(30)), absl::ZeroDuration());
}

}  // namespace
}  // namespace palisade
