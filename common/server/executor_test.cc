#include "common/server/executor.h"

#include <atomic>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace continuum {
namespace {

TEST(BoundedExecutorTest, RunsEverySubmittedTask) {
  std::atomic<int> ran{0};
  {
    BoundedExecutor ex(2, 100);
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(ex.Submit([&] { ran++; }));
  }  // destructor drains
  EXPECT_EQ(ran.load(), 50);
}

TEST(BoundedExecutorTest, RefusesWorkBeyondQueueCapacity) {
  BoundedExecutor ex(1, 2);
  absl::Notification release, started;
  ASSERT_TRUE(ex.Submit([&] {
    started.Notify();
    release.WaitForNotification();
  }));
  started.WaitForNotification();  // the only worker is now busy
  EXPECT_TRUE(ex.Submit([] {}));
  EXPECT_TRUE(ex.Submit([] {}));
  EXPECT_FALSE(ex.Submit([] {})) << "queue of 2 accepted a third task";
  release.Notify();
}

TEST(BoundedExecutorTest, RefusesWorkAfterShutdown) {
  BoundedExecutor ex(1, 10);
  ex.Shutdown();
  EXPECT_FALSE(ex.Submit([] {}));
}

}  // namespace
}  // namespace continuum
