#include "services/common/bounded_task_queue.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace palisade {
namespace {

// Four producers push 200 jobs through one held worker and a backlog of 3: the backlog never
// holds more than 3, every job runs once, in no way depending on how fast anything is.
TEST(BoundedTaskQueueTest, TheBacklogNeverPassesItsBoundAndEveryJobRuns) {
  BoundedTaskQueue queue(/*threads=*/1, /*queue=*/3);
  absl::Notification release;
  std::atomic<int> ran{0};
  queue.enqueue([&] {
    release.WaitForNotification();
    ++ran;
  });
  std::vector<std::thread> producers;
  for (int p = 0; p < 4; ++p) {
    producers.emplace_back([&] {
      for (int i = 0; i < 50; ++i) queue.enqueue([&] { ++ran; });
    });
  }
  release.Notify();
  for (std::thread& t : producers) t.join();
  queue.shutdown();
  EXPECT_EQ(ran.load(), 201);
  EXPECT_LE(queue.most_queued(), 3u);
  EXPECT_GE(queue.most_queued(), 1u);
}

}  // namespace
}  // namespace palisade
