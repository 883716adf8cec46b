// A fixed pool of threads with a bounded queue, for blocking work (SQL, synchronous Redis)
// that must not run on gRPC's callback threads. When the queue is full, Submit refuses the
// task instead of queueing without limit: the caller answers RESOURCE_EXHAUSTED.
#pragma once

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace continuum {

class BoundedExecutor {
 public:
  BoundedExecutor(int threads, int queue_capacity);
  ~BoundedExecutor();  // runs what is queued, then joins

  // False when the queue is full or the executor is shutting down.
  bool Submit(std::function<void()> task);
  // Finishes queued tasks and stops the threads. Idempotent.
  void Shutdown();
  size_t queued() const;

 private:
  void Work();

  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace continuum
