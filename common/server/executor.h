// A pool of threads with a bounded queue, for blocking work (SQL, synchronous Redis) that must
// not run on gRPC's callback threads. When the queue is full, Submit refuses the task instead
// of queueing without limit: the caller answers RESOURCE_EXHAUSTED.
//
// At most `threads` tasks run at once, except while a task waits for work that other threads
// are doing for it (WaitingForOthers, e.g. a SQLite group commit's followers waiting for the
// leader's COMMIT): its slot goes to the next queued task, on one of `spare_threads` extra
// threads. Without that, a write waiting for its group's fsync held a worker it did not use:
// with 8 workers, record writes stopped at ~3,000/s with a third of the CPU idle, because
// no more than 8 writes could ever join a group (continuum-loadgen record-write, 4x32).
#pragma once

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace continuum {

class BoundedExecutor {
 public:
  // spare_threads < 0: three times `threads`.
  BoundedExecutor(int threads, int queue_capacity, int spare_threads = -1);
  ~BoundedExecutor();  // runs what is queued, then joins

  // False when the queue is full or the executor is shutting down.
  bool Submit(std::function<void()> task);
  // Finishes queued tasks and stops the threads. Idempotent.
  void Shutdown();
  size_t queued() const;

 private:
  friend class WaitingForOthers;
  void Work();
  void Wait(bool begin);

  const size_t capacity_;
  const int slots_;  // tasks running at once, not counting those waiting for others
  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

// Marks a wait, on the current thread, for work other threads do on this task's behalf. On
// an executor's thread the task gives up its slot until the scope ends (and then takes it back
// at once, possibly running over the limit for a moment); on any other thread it does nothing.
// Only for waits that do not need a slot to end: a wait for another task of the same
// executor to start would still deadlock once every spare thread is waiting.
class WaitingForOthers {
 public:
  WaitingForOthers();
  ~WaitingForOthers();
  WaitingForOthers(const WaitingForOthers&) = delete;
  WaitingForOthers& operator=(const WaitingForOthers&) = delete;

 private:
  BoundedExecutor* executor_;
};

}  // namespace continuum
