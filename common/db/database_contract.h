// The store contract suite: the same tests run against every backend (SQLite here in the
// unit tests, PostgreSQL in the integration tests).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/db/database.h"
#include "gtest/gtest.h"

namespace continuum::db {

struct BackendParam {
  std::string name;
  std::function<absl::StatusOr<std::unique_ptr<Database>>()> open;
};

inline void PrintTo(const BackendParam& p, std::ostream* os) { *os << p.name; }

class DatabaseContractTest : public ::testing::TestWithParam<BackendParam> {
 protected:
  void SetUp() override;
  std::unique_ptr<Database> db_;
};

}  // namespace continuum::db
