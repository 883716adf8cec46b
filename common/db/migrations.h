// Versioned schema migrations applied at start-up, per component ("scheduling", "outbox", ...).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/db/database.h"

namespace continuum::db {

struct Migration {
  int64_t version;
  std::string name;
  std::string sql;
};

// Applies, in version order, each migration of `component` that is not yet recorded in
// schema_migrations; each in its own transaction together with its bookkeeping row, so a
// failed migration leaves the schema as it was. Safe when several replicas start at once.
absl::Status ApplyMigrations(Database& db, const std::string& component,
                             const std::vector<Migration>& migrations);

}  // namespace continuum::db
