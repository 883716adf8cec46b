#include "common/server/executor.h"

#include <algorithm>

#include "common/log/log.h"

namespace continuum {

BoundedExecutor::BoundedExecutor(int threads, int queue_capacity) : capacity_(queue_capacity) {
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] {
    NameThisThread("executor");
    Work();
  });
}

BoundedExecutor::~BoundedExecutor() { Shutdown(); }

bool BoundedExecutor::Submit(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (stopping_ || queue_.size() >= capacity_) return false;
  queue_.push_back(std::move(task));
  return true;
}

size_t BoundedExecutor::queued() const {
  absl::MutexLock lock(&mu_);
  return queue_.size();
}

void BoundedExecutor::Work() {
  while (true) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping and drained
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

void BoundedExecutor::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

}  // namespace continuum
