// A fixed set of connections handed out one at a time (internal to common/db).
#pragma once

#include <deque>
#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace continuum::db {

template <typename Conn>
class ConnectionPool {
 public:
  explicit ConnectionPool(std::vector<std::unique_ptr<Conn>> conns) : conns_(std::move(conns)) {
    for (auto& c : conns_) idle_.push_back(c.get());
  }
  size_t size() const { return conns_.size(); }

  // Blocks until a connection is free.
  Conn* Acquire() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(+[](std::deque<Conn*>* q) { return !q->empty(); }, &idle_));
    Conn* c = idle_.front();
    idle_.pop_front();
    return c;
  }
  void Release(Conn* c) {
    absl::MutexLock lock(&mu_);
    idle_.push_back(c);
  }

 private:
  std::vector<std::unique_ptr<Conn>> conns_;
  absl::Mutex mu_;
  std::deque<Conn*> idle_ ABSL_GUARDED_BY(mu_);
};

}  // namespace continuum::db
