#include "tools/loadgen/driver.h"

#include <sys/prctl.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

namespace continuum::loadgen {
namespace {

class Runner {
 public:
  Runner(Workload& workload, const LoadOptions& options, LoadResult& result)
      : workload_(workload), options_(options), result_(result) {}

  void Run() {
    const int64_t start = NowNs();
    window_start_ = start + absl::ToInt64Nanoseconds(options_.warmup);
    window_end_ = window_start_ + absl::ToInt64Nanoseconds(options_.duration);
    if (options_.mode == Mode::kClosed) {
      for (int c = 0; c < workload_.connections(); ++c) {
        for (int k = 0; k < options_.inflight; ++k) Launch(c, NowNs());
      }
      absl::SleepFor(absl::Nanoseconds(window_end_ - NowNs()));
      stop_.store(true);
    } else {
      Pace(start);
    }
    // Every call has a deadline, so this ends; polling is fine for a tool's main thread.
    while (outstanding_.load() > 0) absl::SleepFor(absl::Milliseconds(2));
    workload_.RunEnded(window_start_, window_end_);

    result_.seconds = absl::ToDoubleSeconds(options_.duration);
    result_.started = started_.load();
    result_.ok = ok_.load();
    result_.qps = static_cast<double>(ok_in_window_.load()) / result_.seconds;
    result_.late_start_ms = max_late_ns_ / 1e6;
    absl::MutexLock lock(&mu_);
    result_.errors = errors_;
  }

 private:
  // Open loop: call i is due at start + i / rate. Starting a call costs the client tens of
  // microseconds, so several threads share the schedule (thread t starts the calls i with
  // i % threads == t); each sleeps until its next due time, then starts every call of its
  // share that is due (a burst after an oversleep keeps the average rate exact).
  void Pace(int64_t start) {
    const int threads = std::max(1, options_.pacing_threads);
    std::vector<int64_t> late(threads, 0);
    std::vector<std::thread> pacers;
    for (int t = 0; t < threads; ++t) {
      pacers.emplace_back([this, start, threads, t, &late] {
        prctl(PR_SET_TIMERSLACK, 1000UL);  // 1 us instead of 50 us: sleeps end closer to the schedule
        const double interval_ns = 1e9 / options_.rate;
        const int64_t tick = absl::ToInt64Nanoseconds(options_.pacing_tick);
        for (int64_t i = t;; i += threads) {
          const int64_t due = start + static_cast<int64_t>(i * interval_ns);
          if (due >= window_end_) break;
          const int64_t now = NowNs();
          if (due > now) {
            // Never before `due` (a call started early would look faster than it is).
            const int64_t wake = tick > 0 ? start + (due - start + tick - 1) / tick * tick : due;
            absl::SleepFor(absl::Nanoseconds(wake - now));
          }
          while (outstanding_.load() >= options_.max_outstanding) absl::SleepFor(absl::Microseconds(100));
          late[t] = std::max(late[t], NowNs() - due);
          Launch(static_cast<int>(i % workload_.connections()), due, i);
        }
      });
    }
    for (auto& p : pacers) p.join();
    max_late_ns_ = *std::max_element(late.begin(), late.end());
  }

  void Launch(int conn, int64_t intended, int64_t seq = -1) {
    outstanding_.fetch_add(1);  // counted from here, so a closed loop's chain never reads zero
    // A workload may end a call inside Start (e.g. a refusal when every stream has failed),
    // and the closed loop then starts the next one from that callback. Started there, nested,
    // a run of such failures recursed until the stack overflowed; instead the outermost
    // Launch on this thread starts them one after another once Start has returned.
    struct Deferred {
      Runner* runner;
      int conn;
      int64_t intended, seq;
    };
    thread_local std::deque<Deferred>* deferred = nullptr;
    if (deferred) {
      deferred->push_back({this, conn, intended, seq});
      return;
    }
    std::deque<Deferred> mine{{this, conn, intended, seq}};
    deferred = &mine;
    while (!mine.empty()) {
      Deferred d = mine.front();
      mine.pop_front();
      d.runner->Begin(d.conn, d.intended, d.seq);
    }
    deferred = nullptr;
  }

  // One call, already counted in `outstanding_`.
  void Begin(int conn, int64_t intended, int64_t seq) {
    if (seq < 0) seq = next_seq_.fetch_add(1);
    const bool counted = intended >= window_start_ && intended < window_end_;
    if (counted) started_.fetch_add(1);
    workload_.Start(conn, seq, intended, [this, conn, intended, counted](const grpc::Status& status) {
      const int64_t now = NowNs();
      if (status.ok()) {
        if (counted) {
          ok_.fetch_add(1);
          result_.latency->Record(now - intended);
        }
        if (now >= window_start_ && now < window_end_) ok_in_window_.fetch_add(1);
      } else if (counted) {
        absl::MutexLock lock(&mu_);
        errors_[status.error_code()]++;
      }
      // Closed loop: the next call on this connection starts as this one ends. Decrementing
      // afterwards keeps `outstanding_` above zero while the chain continues. The window's
      // end is checked too: calls that fail at once on the thread that started the run would
      // otherwise go on without that thread ever getting to set `stop_`.
      if (options_.mode == Mode::kClosed && !stop_.load() && now < window_end_) Launch(conn, now);
      outstanding_.fetch_sub(1);
    });
  }

  Workload& workload_;
  const LoadOptions& options_;
  LoadResult& result_;
  int64_t window_start_ = 0, window_end_ = 0;
  int64_t max_late_ns_ = 0;  // open loop: written once the pacing threads are done
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> next_seq_{0}, outstanding_{0}, started_{0}, ok_{0}, ok_in_window_{0};
  absl::Mutex mu_;
  std::map<grpc::StatusCode, int64_t> errors_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

LoadResult RunLoad(Workload& workload, const LoadOptions& options) {
  LoadResult result;
  Runner runner(workload, options, result);
  runner.Run();
  return result;
}

const char* StatusCodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {
      "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
      "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
      "DATA_LOSS", "UNAUTHENTICATED"};
  int i = static_cast<int>(code);
  return i >= 0 && i <= 16 ? kNames[i] : "UNKNOWN";
}

}  // namespace continuum::loadgen
