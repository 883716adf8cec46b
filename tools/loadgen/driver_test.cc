#include "tools/loadgen/driver.h"

#include <atomic>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace continuum::loadgen {
namespace {

// Ends every call inside Start, as the heartbeat-stream workload does once all of its streams
// have failed (it refuses calls with no free stream).
class EndsAtOnce : public Workload {
 public:
  explicit EndsAtOnce(grpc::Status status) : status_(std::move(status)) {}
  int connections() const override { return 2; }
  void Start(int, int64_t, int64_t, std::function<void(const grpc::Status&)> done) override {
    ++calls;
    done(status_);
  }
  std::atomic<int64_t> calls{0};

 private:
  grpc::Status status_;
};

LoadOptions Closed() {
  LoadOptions o;
  o.mode = Mode::kClosed;
  o.inflight = 2;
  o.warmup = absl::ZeroDuration();
  o.duration = absl::Milliseconds(50);
  return o;
}

TEST(DriverTest, CallsRefusedInsideStartAreCountedWithoutNesting) {
  // Before, each refusal started the next call from inside the previous Start: the stack
  // grew by one call chain per refusal until the generator crashed (SIGSEGV).
  EndsAtOnce refusing(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "every stream is busy"));
  LoadResult r = RunLoad(refusing, Closed());
  EXPECT_EQ(r.ok, 0);
  ASSERT_EQ(r.errors.count(grpc::StatusCode::RESOURCE_EXHAUSTED), 1u);
  EXPECT_GT(r.errors.at(grpc::StatusCode::RESOURCE_EXHAUSTED), 1000);
  EXPECT_EQ(r.errors.at(grpc::StatusCode::RESOURCE_EXHAUSTED), r.started);
}

TEST(DriverTest, CallsSucceedingInsideStartAreMeasured) {
  EndsAtOnce succeeding(grpc::Status::OK);
  LoadResult r = RunLoad(succeeding, Closed());
  EXPECT_TRUE(r.errors.empty());
  EXPECT_GT(r.ok, 0);
  EXPECT_EQ(r.ok, r.started);
  EXPECT_EQ(r.latency->count(), r.ok);
}

// Records when each call was due and when it was started.
class RecordsStarts : public Workload {
 public:
  int connections() const override { return 2; }
  void Start(int, int64_t, int64_t intended_ns, std::function<void(const grpc::Status&)> done) override {
    const int64_t now = NowNs();
    {
      absl::MutexLock lock(&mu);
      starts.push_back({intended_ns, now});
    }
    done(grpc::Status::OK);
  }
  absl::Mutex mu;
  std::vector<std::pair<int64_t, int64_t>> starts ABSL_GUARDED_BY(mu);  // (due, started)
};

TEST(DriverTest, OpenLoopOnAPacingGridStartsEveryCallOnScheduleAndNeverEarly) {
  for (absl::Duration tick : {absl::ZeroDuration(), absl::Microseconds(500)}) {
    RecordsStarts w;
    LoadOptions o;
    o.mode = Mode::kOpen;
    o.rate = 20000;
    o.warmup = absl::ZeroDuration();
    o.duration = absl::Milliseconds(100);
    o.pacing_threads = 1;
    o.pacing_tick = tick;
    LoadResult r = RunLoad(w, o);
    absl::MutexLock lock(&w.mu);
    // Every call of the schedule: 20,000/s for 100 ms, due 50 us apart.
    ASSERT_EQ(w.starts.size(), 2000u) << "tick " << tick;
    EXPECT_EQ(r.started, 2000);
    for (size_t i = 0; i < w.starts.size(); ++i) {
      const auto [due, started] = w.starts[i];
      EXPECT_GE(started, due) << "call " << i << " started before it was due (tick " << tick << ")";
      if (i > 0) EXPECT_NEAR(due - w.starts[i - 1].first, 50000, 1) << "call " << i;
    }
  }
}

}  // namespace
}  // namespace continuum::loadgen
