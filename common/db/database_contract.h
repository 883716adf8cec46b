// The store contract suite: the same tests run against every backend (SQLite here in the
// unit tests, PostgreSQL in the integration tests).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/db/database.h"
#include "gtest/gtest.h"

namespace continuum::db {

struct BackendParam {
  std::string name;
  // Opens a fresh database with `options`, the backend setting their url (and pool size).
  std::function<absl::StatusOr<std::unique_ptr<Database>>(Options options)> open;
};

inline void PrintTo(const BackendParam& p, std::ostream* os) { *os << p.name; }

class DatabaseContractTest : public ::testing::TestWithParam<BackendParam> {
 protected:
  struct Commit {
    absl::Duration took;
    bool synced;
    int transactions;
  };
  void SetUp() override;
  // The commits Options::on_commit reported since the last call.
  std::vector<Commit> TakeCommits();
  std::unique_ptr<Database> db_;

 private:
  absl::Mutex commits_mu_;
  std::vector<Commit> commits_ ABSL_GUARDED_BY(commits_mu_);
};

}  // namespace continuum::db
