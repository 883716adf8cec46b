// Retention of housekeeping rows: sent outbox events, remembered request ids (idempotency)
// and processed event ids are needed for a while, not forever. Without retention these tables
// grow with every write, and so do the database and its backups. Clinical data (records,
// appointments, messages) is never purged here.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/db/database.h"

namespace continuum::db {

struct RetentionRule {
  std::string table;       // for logs
  std::string delete_sql;  // deletes at most $2 rows older than $1 (microseconds since the epoch)
};

// Deletes the rows `rule` selects as older than `before`, in batches of `batch` rows, each its
// own transaction (so a writer waits for at most one batch; SQLite has a single writer), until
// a batch deletes fewer than `batch` rows or `max_batches` have run. Returns the rows deleted.
absl::StatusOr<int64_t> Purge(Database& db, const RetentionRule& rule, absl::Time before, int batch = 1000,
                              int max_batches = 100);

}  // namespace continuum::db
