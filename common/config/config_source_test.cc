#include "common/config/config_source.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace continuum {
namespace {

using ::testing::HasSubstr;

TEST(ConfigSourceTest, FlagBeatsEnvironmentWhichBeatsDefault) {
  ConfigSource c({"--listen-address=0.0.0.0:9"}, {"CONTINUUM_LISTEN_ADDRESS=1.2.3.4:5",
                                                  "CONTINUUM_LOG_LEVEL=debug"});
  EXPECT_EQ(c.String("listen-address", "127.0.0.1:1", ""), "0.0.0.0:9");
  EXPECT_EQ(c.String("log-level", "info", ""), "debug");
  EXPECT_EQ(c.String("database-url", "sqlite:x.db", ""), "sqlite:x.db");
  EXPECT_TRUE(c.Finish().ok());
}

TEST(ConfigSourceTest, ParsesTypedValues) {
  ConfigSource c({"--workers=12", "--tls", "--drain=250ms"}, {});
  EXPECT_EQ(c.Int("workers", 1, ""), 12);
  EXPECT_TRUE(c.Bool("tls", false, ""));
  EXPECT_EQ(c.Duration("drain", absl::Seconds(1), ""), absl::Milliseconds(250));
  EXPECT_TRUE(c.Finish().ok());
}

TEST(ConfigSourceTest, CollectsEveryProblemOnOneLine) {
  ConfigSource c({"--workers=many", "--typo=1"}, {"CONTINUUM_DRAIN=soon"});
  c.Int("workers", 1, "");
  c.Duration("drain", absl::Seconds(1), "");
  absl::Status s = c.Finish();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  std::string m(s.message());
  EXPECT_THAT(m, HasSubstr("--workers='many' is not an integer"));
  EXPECT_THAT(m, HasSubstr("CONTINUUM_DRAIN='soon' is not a duration"));
  EXPECT_THAT(m, HasSubstr("unknown flag --typo"));
  EXPECT_EQ(m.find('\n'), std::string::npos);
}

TEST(ConfigSourceTest, RejectsOutOfRangeIntegers) {
  ConfigSource c({"--workers=0"}, {});
  c.Int("workers", 4, "", 1, 64);
  EXPECT_THAT(std::string(c.Finish().message()), HasSubstr("out of range"));
}

TEST(ConfigSourceTest, UsageNamesFlagAndEnvironmentVariable) {
  ConfigSource c({"--help"}, {});
  c.String("redis-address", "127.0.0.1:6379", "redis host:port");
  EXPECT_TRUE(c.help_requested());
  EXPECT_THAT(c.Usage("prog"), HasSubstr("--redis-address (env CONTINUUM_REDIS_ADDRESS"));
}

}  // namespace
}  // namespace continuum
