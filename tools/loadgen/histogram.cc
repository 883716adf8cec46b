#include "tools/loadgen/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace continuum::loadgen {

Histogram::Histogram() : buckets_(kBuckets) {}

int Histogram::IndexOf(int64_t ns) {
  if (ns < (int64_t{2} << kSubBits)) return static_cast<int>(std::max<int64_t>(ns, 0));
  int msb = 63 - std::countl_zero(static_cast<uint64_t>(ns));
  int shift = msb - kSubBits;  // keeps the top kSubBits + 1 bits
  if (shift > kMaxShift) return kBuckets - 1;
  return (shift << kSubBits) + static_cast<int>(ns >> shift);
}

int64_t Histogram::UpperEdge(int index) {
  if (index < (2 << kSubBits)) return index;
  int shift = (index >> kSubBits) - 1;
  int64_t top = index - (shift << kSubBits);
  return ((top + 1) << shift) - 1;
}

void Histogram::Record(int64_t ns) {
  ns = std::max<int64_t>(ns, 0);
  buckets_[IndexOf(ns)].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(ns, std::memory_order_relaxed);
  int64_t seen = max_.load(std::memory_order_relaxed);
  while (ns > seen && !max_.compare_exchange_weak(seen, ns, std::memory_order_relaxed)) {
  }
}

double Histogram::mean() const {
  int64_t n = count();
  return n == 0 ? 0.0 : static_cast<double>(sum_.load(std::memory_order_relaxed)) / n;
}

int64_t Histogram::Quantile(double q) const {
  int64_t n = count();
  if (n == 0) return 0;
  auto rank = static_cast<int64_t>(std::ceil(std::clamp(q, 0.0, 1.0) * n));
  rank = std::max<int64_t>(rank, 1);
  int64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += buckets_[i].load(std::memory_order_relaxed);
    if (seen >= rank) return std::min(UpperEdge(i), max());
  }
  return max();
}

}  // namespace continuum::loadgen
