#include "common/db/migrations.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/status/macros.h"

namespace continuum::db {

absl::Status ApplyMigrations(Database& db, const std::string& component,
                             const std::vector<Migration>& migrations) {
  RETURN_IF_ERROR(db.InTransaction([](Tx& tx) {
    return tx.ExecScript(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " component TEXT NOT NULL, version BIGINT NOT NULL, name TEXT NOT NULL,"
        " PRIMARY KEY (component, version))");
  }));
  std::vector<Migration> sorted = migrations;
  std::sort(sorted.begin(), sorted.end(),
            [](const Migration& a, const Migration& b) { return a.version < b.version; });
  for (const Migration& m : sorted) {
    absl::Status s = db.InTransaction([&](Tx& tx) -> absl::Status {
      if (tx.backend() == Backend::kPostgres) {
        // Replicas starting together apply each migration once: the second waits here.
        RETURN_IF_ERROR(tx.ExecScript("LOCK TABLE schema_migrations IN EXCLUSIVE MODE"));
      }
      ASSIGN_OR_RETURN(Rows done, tx.Query("SELECT 1 FROM schema_migrations WHERE component = $1 "
                                           "AND version = $2",
                                           {component, m.version}));
      if (!done.empty()) return absl::OkStatus();
      RETURN_IF_ERROR(tx.ExecScript(m.sql));
      return tx.Exec("INSERT INTO schema_migrations (component, version, name) VALUES ($1, $2, $3)",
                     {component, m.version, m.name})
          .status();
    });
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat("migration ", component, "/", m.version, " (",
                                                 m.name, ") failed: ", s.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace continuum::db
