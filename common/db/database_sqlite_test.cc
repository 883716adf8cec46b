#include "common/db/database_contract.h"
#include "common/testing/harness.h"

namespace continuum::db {
namespace {

// One directory for the whole binary, removed when the binary exits (every test has closed
// its databases by then).
testing::TempDir& Dir() {
  static testing::TempDir dir;
  return dir;
}

INSTANTIATE_TEST_SUITE_P(
    Sqlite, DatabaseContractTest,
    ::testing::Values(BackendParam{"sqlite_memory",
                                   [](Options o) {
                                     o.url = "sqlite::memory:";
                                     return Open(o);
                                   }},
                      BackendParam{"sqlite_file",
                                   [](Options o) {
                                     static int n = 0;
                                     o.url = "sqlite:" + Dir().File("db" + std::to_string(n++) + ".sqlite");
                                     return Open(o);
                                   }},
                      // One connection: readers take turns on the writer's connection.
                      BackendParam{"sqlite_file_one_connection",
                                   [](Options o) {
                                     static int n = 0;
                                     o.url = "sqlite:" + Dir().File("one" + std::to_string(n++) + ".sqlite");
                                     o.pool_size = 1;
                                     return Open(o);
                                   }}),
    [](const ::testing::TestParamInfo<BackendParam>& info) { return info.param.name; });

TEST(SqliteTest, OpenRejectsUnknownUrl) {
  auto db = Open({.url = "mysql://x"});
  EXPECT_EQ(db.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SqliteTest, FileDatabaseUsesWalAndFullSync) {
  auto db = Open({.url = "sqlite:" + Dir().File("pragmas.sqlite")});
  ASSERT_TRUE(db.ok());
  auto mode = (*db)->Query("PRAGMA journal_mode");
  auto sync = (*db)->Query("PRAGMA synchronous");
  ASSERT_TRUE(mode.ok() && sync.ok());
  EXPECT_EQ(mode->at(0).Text(0), "wal");
  EXPECT_EQ(sync->at(0).Int(0), 2);  // FULL
}

TEST(SqliteTest, CommittedDataSurvivesReopen) {
  std::string path = Dir().File("reopen.sqlite");
  {
    auto db = Open({.url = "sqlite:" + path});
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Exec("CREATE TABLE t (v TEXT)").ok());
    ASSERT_TRUE((*db)->Exec("INSERT INTO t VALUES ('durable')").ok());
  }
  auto db = Open({.url = "sqlite:" + path});
  ASSERT_TRUE(db.ok());
  auto rows = (*db)->Query("SELECT v FROM t");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->at(0).Text(0), "durable");
}

}  // namespace
}  // namespace continuum::db
