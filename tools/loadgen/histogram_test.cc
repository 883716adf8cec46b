#include "tools/loadgen/histogram.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace continuum::loadgen {
namespace {

TEST(HistogramTest, EveryValueLandsInABucketWhoseUpperEdgeIsWithinOneSixtyFourth) {
  for (int64_t v : {int64_t{0}, int64_t{1}, int64_t{127}, int64_t{128}, int64_t{129}, int64_t{1000}, int64_t{123456789},
                    int64_t{1} << 40}) {
    int i = Histogram::IndexOf(v);
    ASSERT_GE(i, 0);
    ASSERT_LT(i, Histogram::kBuckets);
    EXPECT_GE(Histogram::UpperEdge(i), v) << v;
    EXPECT_LE(Histogram::UpperEdge(i) - v, v / 64) << v;
    if (i > 0) {
      EXPECT_LT(Histogram::UpperEdge(i - 1), v) << v;
    }
  }
}

TEST(HistogramTest, BucketsAreContiguousAndIncreasing) {
  for (int i = 1; i < Histogram::kBuckets; ++i) {
    EXPECT_EQ(Histogram::IndexOf(Histogram::UpperEdge(i - 1) + 1), i) << i;
  }
}

TEST(HistogramTest, QuantilesOfAUniformSpreadAreWithinBucketPrecision) {
  Histogram h;
  for (int64_t v = 1; v <= 100000; ++v) h.Record(v * 1000);  // 1 us .. 100 ms
  EXPECT_EQ(h.count(), 100000);
  EXPECT_EQ(h.max(), 100000000);
  EXPECT_NEAR(h.Quantile(0.5), 50e6, 50e6 / 64);
  EXPECT_NEAR(h.Quantile(0.99), 99e6, 99e6 / 64);
  EXPECT_NEAR(h.Quantile(0.999), 99.9e6, 99.9e6 / 64);
  EXPECT_EQ(h.Quantile(1.0), h.max());
  EXPECT_NEAR(h.mean(), 50.0005e6, 1);
}

TEST(HistogramTest, ASingleOutlierIsTheMaxAndOnlyMovesTheTopQuantile) {
  Histogram h;
  for (int i = 0; i < 999; ++i) h.Record(1000000);  // 1 ms
  h.Record(2000000000);                             // 2 s
  EXPECT_LE(h.Quantile(0.99), 1000000 + 1000000 / 64);
  EXPECT_EQ(h.Quantile(0.9999), 2000000000);
  EXPECT_EQ(h.max(), 2000000000);
}

TEST(HistogramTest, EmptyReportsZero) {
  Histogram h;
  EXPECT_EQ(h.Quantile(0.99), 0);
  EXPECT_EQ(h.mean(), 0);
}

TEST(HistogramTest, ConcurrentRecordsAreAllCounted) {
  Histogram h;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&h, t] {
      for (int i = 0; i < 10000; ++i) h.Record(t * 1000 + i);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(h.count(), 40000);
  EXPECT_EQ(h.max(), 3000 + 9999);
}

}  // namespace
}  // namespace continuum::loadgen
