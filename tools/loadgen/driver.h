// The load engine: drives a Workload (one asynchronous call at a time, on one of its
// connections) in closed loop or open loop, and measures what a caller sees.
//
//  * Closed loop: `connections` x `inflight` calls are kept outstanding; each completion starts
//    the next call on the same connection. Measures the throughput the server sustains at that
//    concurrency; latency is from the call's start.
//  * Open loop: calls are started on a fixed schedule (call i at start + i / rate), whatever the
//    server does, round-robin over the connections. Latency is measured from the *intended*
//    start, so time a call spends waiting behind a slow server (or a late client) counts, as it
//    would for a real caller (no coordinated omission).
//
// Calls started during the warm-up are not counted. Only successful calls enter the latency
// histogram; failures are counted by status code.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>

#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "tools/loadgen/histogram.h"

namespace continuum::loadgen {

// Nanoseconds on the monotonic clock (all latencies are differences of these).
inline int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

class Workload {
 public:
  virtual ~Workload() = default;
  virtual int connections() const = 0;
  // Starts call number `seq` (0, 1, 2, ... over the run; for data that must differ per call)
  // on connection `conn` without blocking, and calls `done` exactly once with its status, from
  // any thread. `intended_ns` is when the schedule wanted the call to start (NowNs() clock).
  virtual void Start(int conn, int64_t seq, int64_t intended_ns, std::function<void(const grpc::Status&)> done) = 0;
  // Called once every call has completed, with the measurement window (NowNs() clock), for
  // workloads that measure more than the calls themselves (e.g. delivery after a send).
  virtual void RunEnded(int64_t window_start_ns, int64_t window_end_ns) {}
};

enum class Mode { kClosed, kOpen };

struct LoadOptions {
  Mode mode = Mode::kClosed;
  int inflight = 1;   // closed loop: outstanding calls per connection
  double rate = 100;  // open loop: calls per second over all connections
  absl::Duration warmup = absl::Seconds(1);
  absl::Duration duration = absl::Seconds(5);  // measured, after the warm-up
  // Open loop: when this many calls are outstanding the schedule waits (the lateness still
  // counts in the latency); bounds the client's memory against a server that stalls.
  int max_outstanding = 20000;
  int pacing_threads = 2;  // open loop: threads starting the calls (one per core here)
  // Open loop: a pacing thread wakes on this grid (from the run's start) and starts every call
  // already due, instead of sleeping once per call. Each call still counts from its own due
  // time, so the wait for the grid point (tick / 2 on average) is inside its latency. Zero:
  // wake for each call. Why: at 23k calls/s one sleep per call made the generator spend a third
  // of its CPU switching threads, on the two cores it shares with the servers.
  absl::Duration pacing_tick = absl::ZeroDuration();
};

struct LoadResult {
  double seconds = 0;        // measurement window
  int64_t started = 0;       // calls started in the window
  int64_t ok = 0;            // of those, succeeded
  double qps = 0;            // successful completions per second within the window
  double late_start_ms = 0;  // open loop: the schedule's worst lateness when starting a call
  std::unique_ptr<Histogram> latency = std::make_unique<Histogram>();  // successful calls, ns
  std::map<grpc::StatusCode, int64_t> errors;
};

// Runs `workload` per `options`; returns once every started call has completed (calls carry
// deadlines, so this is bounded).
LoadResult RunLoad(Workload& workload, const LoadOptions& options);

// "UNAVAILABLE" etc.
const char* StatusCodeName(grpc::StatusCode code);

}  // namespace continuum::loadgen
