#include "common/db/database_contract.h"
#include "common/testing/harness.h"

namespace continuum::db {
namespace {

INSTANTIATE_TEST_SUITE_P(Postgres, DatabaseContractTest,
                         ::testing::Values(BackendParam{
                             "postgres",
                             [](Options o) -> absl::StatusOr<std::unique_ptr<Database>> {
                               auto pg = testing::PostgresServer::Shared();
                               if (!pg.ok()) return pg.status();
                               auto url = (*pg)->CreateDatabase();
                               if (!url.ok()) return url.status();
                               o.url = *url;
                               o.pool_size = 8;
                               return Open(o);
                             }}),
                         [](const ::testing::TestParamInfo<BackendParam>& info) { return info.param.name; });

TEST(PostgresTest, UnreachableServerIsUnavailable) {
  auto db = Open({.url = "postgresql://postgres@127.0.0.1:" + std::to_string(testing::FreePort()) +
                         "/nope?connect_timeout=2"});
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace continuum::db
