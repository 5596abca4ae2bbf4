#include "services/server/grpc_services.h"

#include <atomic>
#include <memory>
#include <thread>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "services/common/clock.h"
#include "services/common/status_matchers.h"
#include "services/server/config.h"

namespace palisade {
namespace {

using ::palisade::testing::IsOk;

// Two reloads at once (SIGHUP and Admin.ReloadRules, or two operators): each reads the packs
// and compiles them, then applies what it compiled. Unserialized, the one that read first (the
// files before an edit) could apply last, and the daemon ran the older rules while both calls
// answered success. Reloads run one at a time: the last to read is the last applied.
TEST(AdminServiceTest, ConcurrentReloadsApplyWhatWasReadLast) {
  SimulatedClock clock;
  prometheus::Registry registry;
  DecisionTable table(clock);
  const palisade::v1::Config config = DefaultConfig("rules");
  absl::StatusOr<std::shared_ptr<const RuleSet>> initial = LoadRules(config);
  absl::StatusOr<std::shared_ptr<const RuleSet>> older = LoadRules(config);
  absl::StatusOr<std::shared_ptr<const RuleSet>> newer = LoadRules(config);
  ASSERT_THAT(initial, IsOk());
  ASSERT_THAT(older, IsOk());
  ASSERT_THAT(newer, IsOk());
  Pipeline pipeline(*initial, PipelineOptions(), clock, table, registry);

  absl::Notification first_reading, release_first, second_reading;
  std::atomic<int> calls{0};
  AdminService admin(
      pipeline, table, clock,
      [&]() -> absl::StatusOr<std::shared_ptr<const RuleSet>> {
        if (calls.fetch_add(1) == 0) {
          first_reading.Notify();
          release_first.WaitForNotification();  // still compiling what it read
          return *older;
        }
        second_reading.Notify();
        return *newer;
      },
      registry, "test");
  std::thread first([&] { EXPECT_THAT(admin.Reload(), IsOk()); });
  first_reading.WaitForNotification();
  std::thread second([&] { EXPECT_THAT(admin.Reload(), IsOk()); });
  // Unserialized, the second reload reads and applies now, while the first is held. (Serialized,
  // it waits for the first: the wait below times out, and that is the expected path.)
  second_reading.WaitForNotificationWithTimeout(absl::Seconds(2));
  release_first.Notify();
  first.join();
  second.join();
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(pipeline.rules(), *newer);
}

}  // namespace
}  // namespace palisade
