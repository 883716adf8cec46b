#include "common/api/idempotency.h"

namespace continuum::api {

const std::vector<db::Migration>& IdempotencyMigrations() {
  static const auto* const kMigrations = new std::vector<db::Migration>{
      {1, "create_idempotency", R"sql(
CREATE TABLE idempotency (
  caller TEXT NOT NULL,
  method TEXT NOT NULL,
  request_id TEXT NOT NULL,
  request_hash TEXT NOT NULL,
  response {{BLOB}} NOT NULL,
  create_time BIGINT NOT NULL,
  CONSTRAINT idempotency_pk PRIMARY KEY (caller, method, request_id)
);
)sql"},
      // Retention (see IdempotencyRetention) finds the oldest rows by creation time.
      {2, "idempotency_created_index", R"sql(
CREATE INDEX idempotency_created ON idempotency (create_time);
)sql"},
  };
  return *kMigrations;
}

const db::RetentionRule& IdempotencyRetention() {
  static const auto* const kRule = new db::RetentionRule{
      "idempotency",
      "DELETE FROM idempotency WHERE (caller, method, request_id) IN (SELECT caller, method, request_id"
      " FROM idempotency WHERE create_time < $1 ORDER BY create_time LIMIT $2)"};
  return *kRule;
}

absl::StatusOr<std::optional<Remembered>> Recall(db::Tx& tx, const std::string& caller, const std::string& method,
                                                 const std::string& request_id) {
  ASSIGN_OR_RETURN(db::Rows rows, tx.Query("SELECT request_hash, response FROM idempotency"
                                           " WHERE caller = $1 AND method = $2 AND request_id = $3",
                                           {caller, method, request_id}));
  if (rows.empty()) return std::nullopt;
  return Remembered{rows[0].Text(0), rows[0].Bytes(1)};
}

absl::Status Remember(db::Tx& tx, const std::string& caller, const std::string& method,
                      const std::string& request_id, const Remembered& what, absl::Time now) {
  // Deferred (on PostgreSQL it goes out with the commit): an earlier call with the same
  // request_id (this one is a retry), or a concurrent one that committed first, makes the commit
  // fail with ALREADY_EXISTS on idempotency_pk, which RunIdempotent answers from that call's
  // result.
  return tx.ExecDeferred("INSERT INTO idempotency (caller, method, request_id, request_hash, response, create_time)"
                         " VALUES ($1, $2, $3, $4, $5, $6)",
                         {caller, method, request_id, what.request_hash, db::Blob{what.response}, db::Micros(now)});
}

}  // namespace continuum::api
