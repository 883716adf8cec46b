#include "common/db/retention.h"

namespace continuum::db {

absl::StatusOr<int64_t> Purge(Database& db, const RetentionRule& rule, absl::Time before, int batch,
                              int max_batches) {
  int64_t total = 0;
  for (int i = 0; i < max_batches; ++i) {
    absl::StatusOr<int64_t> n = db.Exec(rule.delete_sql, {Micros(before), static_cast<int64_t>(batch)});
    if (!n.ok()) return n.status();
    total += *n;
    if (*n < batch) break;
  }
  return total;
}

}  // namespace continuum::db
