// One small interface over SQLite (embedded default) and PostgreSQL (production).
//
// SQL is written once, in the dialect both accept: `$1`-style parameters, `ON CONFLICT`,
// `RETURNING`, BIGINT for instants (microseconds since the Unix epoch) and TEXT for ids.
// The only per-backend spelling is in migrations (see ExpandDialect), never in queries.
//
// Errors: a unique/primary-key violation is ALREADY_EXISTS (reason ALREADY_EXISTS, metadata
// "constraint"); a serialization failure, deadlock or lock timeout is ABORTED (retry the
// transaction); a lost connection is UNAVAILABLE; anything else is INTERNAL.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace continuum::db {

enum class Backend { kSqlite, kPostgres };

// Bytes that must be bound as a BLOB / BYTEA, not as text.
struct Blob {
  std::string bytes;
  bool operator==(const Blob&) const = default;
};

// A parameter or a result cell.
using Value = std::variant<std::monostate, int64_t, double, std::string, Blob>;

Value Null();
// Instants are stored as microseconds since the epoch.
Value Micros(absl::Time t);

class Row {
 public:
  explicit Row(std::vector<Value> cells) : cells_(std::move(cells)) {}
  size_t size() const { return cells_.size(); }
  bool IsNull(size_t i) const;
  // Conversions are lenient across backends (PostgreSQL returns text for numbers).
  int64_t Int(size_t i) const;
  double Double(size_t i) const;
  std::string Text(size_t i) const;
  std::string Bytes(size_t i) const;  // BLOB / BYTEA contents
  absl::Time Time(size_t i) const;    // from microseconds
  std::optional<int64_t> OptionalInt(size_t i) const;
  const Value& cell(size_t i) const { return cells_.at(i); }

 private:
  std::vector<Value> cells_;
};

using Rows = std::vector<Row>;
using Params = std::vector<Value>;

// A connection inside an open transaction. Valid only inside the callback it was passed to.
class Tx {
 public:
  virtual ~Tx() = default;
  virtual absl::StatusOr<Rows> Query(absl::string_view sql, const Params& params = {}) = 0;
  // Returns the number of rows changed.
  virtual absl::StatusOr<int64_t> Exec(absl::string_view sql, const Params& params = {}) = 0;
  // Several statements without parameters (migrations). Dialect placeholders are expanded.
  virtual absl::Status ExecScript(absl::string_view sql) = 0;
  // A statement whose result the caller does not need (an insert, an update whose row count
  // does not matter). PostgreSQL sends it later, in one pipeline with the transaction's next
  // statement or its COMMIT: a transaction's trailing writes and its commit are one round
  // trip. Its failure is then returned by that later call (or by the commit, failing the
  // transaction) rather than by this one; it fails the transaction just the same, and
  // statements run in the order they were issued. SQLite runs it at once. So defer only
  // statements whose failure the caller need not tell apart from a later statement's (not an
  // insert whose unique violation the caller turns into its own answer).
  virtual absl::Status ExecDeferred(absl::string_view sql, const Params& params = {}) {
    return Exec(sql, params).status();
  }
  virtual Backend backend() const = 0;
};

enum class TxMode {
  kReadWrite,
  kReadOnly,
  // A write whose commit is not waited for to be durable: a crash of the machine (or of the
  // PostgreSQL server) may lose it, and with it any later unsynced transaction, but never a
  // transaction committed before it or a later synced one's (a synced commit makes everything
  // before it durable). Only for writes that are redone after such a loss: the outbox relay's
  // leases and sent marks (events are sent again), the audit chainer's moves (chained again
  // the same way). SQLite: the group commit skips its fsync when no member needs one.
  // PostgreSQL: synchronous_commit is off for the transaction.
  kReadWriteUnsynced,
};

class Database {
 public:
  virtual ~Database() = default;

  // Runs `fn` in a transaction: committed when fn returns OK, rolled back otherwise (and the
  // status is returned). A commit that fails is reported, never silently dropped. When the
  // transaction is ABORTED by the database (serialization, deadlock, busy), it is retried up
  // to `max_attempts` times in total with a short back-off, so `fn` must be repeatable.
  virtual absl::Status InTransaction(const std::function<absl::Status(Tx&)>& fn,
                                     TxMode mode = TxMode::kReadWrite, int max_attempts = 3) = 0;

  virtual Backend backend() const = 0;

  // Single-statement conveniences, each its own read-write transaction (a query may be an
  // INSERT ... RETURNING). Use InTransaction(..., kReadOnly) for reads that can share.
  absl::StatusOr<Rows> Query(absl::string_view sql, const Params& params = {});
  absl::StatusOr<int64_t> Exec(absl::string_view sql, const Params& params = {});
  // Whether the database answers now: one read, no retry (for health checks).
  absl::Status Ping();
};

struct Options {
  // "sqlite:/path/file.db", "sqlite::memory:", or "postgres://..." / "postgresql://..." (any
  // libpq connection URI).
  std::string url;
  int pool_size = 4;                           // connections (SQLite :memory: always uses 1)
  absl::Duration busy_timeout = absl::Seconds(5);  // SQLite lock wait / PG lock_timeout
  // Called after each COMMIT of a write that succeeded, from the committing thread, with how
  // long the COMMIT itself took (what a write waits for to be durable: SQLite's WAL fsync,
  // PostgreSQL's WAL flush and round trip, plus on PostgreSQL the deferred statements sent
  // with it) and whether it was synced (TxMode::kReadWriteUnsynced is not). On SQLite one
  // COMMIT may carry a whole group of transactions: `transactions` says how many. For metrics:
  // must be cheap and thread-safe. Storage stalls (a slow fsync holds every write queued
  // behind it) show here first.
  std::function<void(absl::Duration took, bool synced, int transactions)> on_commit = nullptr;
};

absl::StatusOr<std::unique_ptr<Database>> Open(const Options& options);

// "($first, $first+1, ...)" with `count` parameters, for an IN list.
std::string Placeholders(size_t count, size_t first);

// Migration spelling that differs by backend, written as {{NAME}} in .sql files:
//   {{AUTOINCREMENT_PK}} -> "INTEGER PRIMARY KEY AUTOINCREMENT" | "BIGSERIAL PRIMARY KEY"
//   {{BLOB}}             -> "BLOB" | "BYTEA"
std::string ExpandDialect(absl::string_view sql, Backend backend);

}  // namespace continuum::db
