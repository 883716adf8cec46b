#include "common/server/executor.h"

#include <pthread.h>

#include <atomic>
#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "common/log/log.h"
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

std::string ThisThreadName() {
  char name[16] = {};
  pthread_getname_np(pthread_self(), name, sizeof name);
  return name;
}

TEST(BoundedExecutorTest, WorkersAreNamedForOperators) {
  std::string seen;
  {
    BoundedExecutor ex(1, 10);
    ASSERT_TRUE(ex.Submit([&] { seen = ThisThreadName(); }));
  }  // destructor drains (and joins: `seen` is written before it returns)
  EXPECT_EQ(seen, "executor");
}

TEST(NameThisThreadTest, KeepsTheFirstFifteenCharacters) {
  std::string seen;
  std::thread t([&] {
    NameThisThread("a-name-longer-than-fifteen");
    seen = ThisThreadName();
  });
  t.join();
  EXPECT_EQ(seen, "a-name-longer-t");
}

}  // namespace
}  // namespace continuum
