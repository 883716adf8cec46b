// A latency histogram with log-linear buckets (HdrHistogram's layout): values below 128 ns
// have a bucket each; above, every power of two is split into 64 equal buckets, so any
// recorded value is reported within 1/64 (1.6%) of itself, from nanoseconds to ~36 minutes,
// in a fixed 18 KiB. Record() is lock-free and may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

namespace continuum::loadgen {

class Histogram {
 public:
  Histogram();
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // Records one value in nanoseconds (negative values count as 0; values beyond the range
  // land in the last bucket, and max() still reports them exactly).
  void Record(int64_t ns);

  int64_t count() const { return count_.load(std::memory_order_relaxed); }
  int64_t max() const { return max_.load(std::memory_order_relaxed); }
  double mean() const;
  // The value at quantile q in [0, 1]: the upper edge of the bucket holding the
  // ceil(q * count)-th smallest value (never above max()). 0 when empty.
  int64_t Quantile(double q) const;

  // Bucket layout, exposed for the tests.
  static int IndexOf(int64_t ns);
  static int64_t UpperEdge(int index);
  static constexpr int kSubBits = 6;    // 64 buckets per power of two
  static constexpr int kMaxShift = 34;  // up to 2^(34+7) ns, about 36 minutes
  static constexpr int kBuckets = (kMaxShift + 2) << kSubBits;

 private:
  std::vector<std::atomic<int64_t>> buckets_;
  std::atomic<int64_t> count_{0}, sum_{0}, max_{0};
};

}  // namespace continuum::loadgen
