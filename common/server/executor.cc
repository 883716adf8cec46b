#include "common/server/executor.h"

#include <algorithm>

#include "common/log/log.h"

namespace continuum {
namespace {
// The executor whose worker this thread is (null elsewhere).
thread_local BoundedExecutor* current_executor = nullptr;
}  // namespace

BoundedExecutor::BoundedExecutor(int threads, int queue_capacity, int spare_threads)
    : capacity_(queue_capacity), slots_(std::max(1, threads)) {
  const int total = slots_ + (spare_threads < 0 ? 3 * slots_ : spare_threads);
  for (int i = 0; i < total; ++i) threads_.emplace_back([this] {
    NameThisThread("executor");
    current_executor = this;
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
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return (stopping_ && queue_.empty()) || (!queue_.empty() && running_ < slots_);
      };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping and drained
      task = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
    }
    task();
    task = nullptr;  // whatever the task captured goes before its slot is given back
    absl::MutexLock lock(&mu_);
    --running_;
  }
}

void BoundedExecutor::Wait(bool begin) {
  absl::MutexLock lock(&mu_);
  running_ += begin ? -1 : 1;  // the unlock lets a worker whose turn this makes take a task
}

WaitingForOthers::WaitingForOthers() : executor_(current_executor) {
  if (executor_) executor_->Wait(true);
}

WaitingForOthers::~WaitingForOthers() {
  if (executor_) executor_->Wait(false);
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
