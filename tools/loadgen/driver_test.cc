#include "tools/loadgen/driver.h"

#include <atomic>

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

}  // namespace
}  // namespace continuum::loadgen
