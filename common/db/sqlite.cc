// SQLite backend: WAL, synchronous=FULL (a committed transaction survives power loss and
// SIGKILL), busy timeout. All writes of a process go through one dedicated writer connection,
// serialised by an in-process mutex and batched by group commit, so that concurrent requests
// queue fairly instead of spinning on SQLITE_BUSY; readers use the other pooled connections
// concurrently (WAL lets them read while one writes).
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <optional>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/db/backends.h"
#include "common/db/pool.h"
#include "common/server/executor.h"
#include "common/status/errors.h"
#include "common/status/macros.h"

namespace continuum::db {
namespace {

absl::Status SqliteError(sqlite3* db, int rc, absl::string_view what) {
  int extended = db ? sqlite3_extended_errcode(db) : rc;
  std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  switch (extended) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
      return MakeError(absl::StatusCode::kAlreadyExists, "ALREADY_EXISTS", msg,
                       {{"constraint", msg}});
    default:
      break;
  }
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return MakeError(absl::StatusCode::kAborted, "TRANSACTION_CONFLICT",
                       absl::StrCat("database busy during ", what, ": ", msg));
    case SQLITE_CONSTRAINT:
      return MakeError(absl::StatusCode::kFailedPrecondition, "INVALID_STATE", msg);
    default:
      return absl::InternalError(absl::StrCat("sqlite ", what, ": ", msg));
  }
}

class SqliteConn final : public Tx {
 public:
  explicit SqliteConn(sqlite3* db) : db_(db) {}
  ~SqliteConn() override {
    for (auto& [sql, st] : statements_) sqlite3_finalize(st.stmt);
    sqlite3_close_v2(db_);
  }

  absl::StatusOr<sqlite3_stmt*> Prepare(absl::string_view sql, const Params& params) {
    Statement* st = nullptr;
    if (auto it = statements_.find(sql); it != statements_.end()) {
      st = &it->second;
      sqlite3_reset(st->stmt);
      sqlite3_clear_bindings(st->stmt);
    } else {
      sqlite3_stmt* stmt = nullptr;
      int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &stmt,
                                  nullptr);
      if (rc != SQLITE_OK) return SqliteError(db_, rc, "prepare");
      // Which $N each parameter slot is, looked up once: sqlite3_bind_parameter_name scans a
      // list, so asking it per bind was quadratic in a multi-row INSERT's parameters (4% of
      // session-record's CPU under record writes, from the audit chainer's batches).
      std::vector<int> numbers(sqlite3_bind_parameter_count(stmt));
      for (size_t i = 0; i < numbers.size(); ++i) {
        const char* name = sqlite3_bind_parameter_name(stmt, static_cast<int>(i) + 1);
        numbers[i] = name && name[0] == '$' ? atoi(name + 1) : 0;
      }
      st = &statements_.emplace(std::string(sql), Statement{stmt, std::move(numbers)}).first->second;
    }
    sqlite3_stmt* stmt = st->stmt;
    if (read_only_ && !sqlite3_stmt_readonly(stmt)) {
      return MakeError(absl::StatusCode::kInternal, "INTERNAL",
                       absl::StrCat("only reads may run in a read-only transaction: ", sql));
    }
    for (int i = 1; i <= static_cast<int>(st->numbers.size()); ++i) {
      int n = st->numbers[i - 1];
      if (n < 1 || n > static_cast<int>(params.size())) {
        const char* name = sqlite3_bind_parameter_name(stmt, i);
        return absl::InternalError(absl::StrCat("statement uses parameter ", name ? name : "?",
                                                " but ", params.size(), " were given: ", sql));
      }
      const Value& v = params[n - 1];
      int rc = SQLITE_OK;
      if (std::holds_alternative<std::monostate>(v)) {
        rc = sqlite3_bind_null(stmt, i);
      } else if (auto* x = std::get_if<int64_t>(&v)) {
        rc = sqlite3_bind_int64(stmt, i, *x);
      } else if (auto* d = std::get_if<double>(&v)) {
        rc = sqlite3_bind_double(stmt, i, *d);
      } else if (auto* s = std::get_if<std::string>(&v)) {
        rc = sqlite3_bind_text(stmt, i, s->data(), static_cast<int>(s->size()), SQLITE_TRANSIENT);
      } else if (auto* b = std::get_if<Blob>(&v)) {
        rc = sqlite3_bind_blob(stmt, i, b->bytes.data(), static_cast<int>(b->bytes.size()),
                               SQLITE_TRANSIENT);
      }
      if (rc != SQLITE_OK) return SqliteError(db_, rc, "bind");
    }
    return stmt;
  }

  absl::StatusOr<Rows> Query(absl::string_view sql, const Params& params) override {
    ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(sql, params));
    Rows rows;
    while (true) {
      int rc = sqlite3_step(stmt);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) {
        absl::Status err = SqliteError(db_, rc, "query");
        sqlite3_reset(stmt);
        return err;
      }
      int n = sqlite3_column_count(stmt);
      std::vector<Value> cells;
      cells.reserve(n);
      for (int c = 0; c < n; ++c) {
        switch (sqlite3_column_type(stmt, c)) {
          case SQLITE_INTEGER: cells.emplace_back(static_cast<int64_t>(sqlite3_column_int64(stmt, c))); break;
          case SQLITE_FLOAT: cells.emplace_back(sqlite3_column_double(stmt, c)); break;
          case SQLITE_TEXT:
            cells.emplace_back(std::string(reinterpret_cast<const char*>(sqlite3_column_text(stmt, c)),
                                           sqlite3_column_bytes(stmt, c)));
            break;
          case SQLITE_BLOB: {
            const char* p = static_cast<const char*>(sqlite3_column_blob(stmt, c));
            cells.emplace_back(Blob{std::string(p ? p : "", sqlite3_column_bytes(stmt, c))});
            break;
          }
          default: cells.emplace_back(std::monostate{});
        }
      }
      rows.emplace_back(std::move(cells));
    }
    sqlite3_reset(stmt);
    return rows;
  }

  absl::StatusOr<int64_t> Exec(absl::string_view sql, const Params& params) override {
    RETURN_IF_ERROR(Query(sql, params).status());
    return sqlite3_changes64(db_);
  }

  absl::Status ExecScript(absl::string_view sql) override {
    if (read_only_) return absl::InternalError("a script may not run in a read-only transaction");
    std::string expanded = ExpandDialect(sql, Backend::kSqlite);
    char* err = nullptr;
    int rc = sqlite3_exec(db_, expanded.c_str(), nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      std::string msg = err ? err : sqlite3_errstr(rc);
      sqlite3_free(err);
      return absl::InternalError(absl::StrCat("sqlite script: ", msg));
    }
    return absl::OkStatus();
  }

  Backend backend() const override { return Backend::kSqlite; }

  // A read-only transaction refuses statements that would write, as PostgreSQL's READ ONLY
  // does, by asking SQLite about each prepared statement. Not PRAGMA query_only: changing a
  // flag pragma expires every prepared statement of the connection, and connections serve
  // both reads and writes, so each switch re-prepared every statement (perf of messaging's
  // sends: sqlite3Reprepare under most queries).
  void set_read_only(bool on) { read_only_ = on; }

  // One parameterless statement (BEGIN, COMMIT, SAVEPOINT, PRAGMA, ...). Kept prepared:
  // parsing BEGIN/COMMIT text on every transaction was about 7% of a small read's CPU.
  absl::Status Simple(const char* sql) {
    sqlite3_stmt* stmt = nullptr;
    if (auto it = statements_.find(absl::string_view(sql)); it != statements_.end()) {
      stmt = it->second.stmt;
    } else {
      int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
      if (rc != SQLITE_OK) return SqliteError(db_, rc, sql);
      statements_.emplace(sql, Statement{stmt, {}});
    }
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    }
    absl::Status status = rc == SQLITE_DONE ? absl::OkStatus() : SqliteError(db_, rc, sql);
    sqlite3_reset(stmt);  // an unreset statement would hold the transaction open
    return status;
  }

 private:
  sqlite3* db_;
  bool read_only_ = false;
  struct Statement {
    sqlite3_stmt* stmt;
    std::vector<int> numbers;  // parameter slot i binds $numbers[i - 1]
  };
  std::map<std::string, Statement, std::less<>> statements_;
};

class SqliteDatabase final : public Database {
 public:
  // The first connection is the writer: only group commits use it (and, when it is the only
  // connection, readers too, taking turns). A dedicated writer matters because SQLite
  // throws away a connection's page cache and memory map whenever it begins a transaction
  // after another connection committed: with writes spread over the pool, every write began
  // by unmapping and re-faulting the file (munmap alone was 13% of session-record's CPU
  // under record writes). The writer never sees another connection's commit.
  SqliteDatabase(std::vector<std::unique_ptr<SqliteConn>> conns, const Options& options)
      : on_commit_(options.on_commit), writer_(std::move(conns.front())), pool_(Readers(std::move(conns))) {}

  Backend backend() const override { return Backend::kSqlite; }

  absl::Status InTransaction(const std::function<absl::Status(Tx&)>& fn, TxMode mode,
                             int max_attempts) override {
    if (mode == TxMode::kReadOnly) return RetryAborted(max_attempts, [&] { return Attempt(fn, mode); });
    const bool sync = mode != TxMode::kReadWriteUnsynced;
    return RetryAborted(max_attempts, [&] { return GroupCommit(fn, sync); });
  }

 private:
  // Group commit. SQLite has one writer at a time and each COMMIT waits for an fsync
  // (synchronous=FULL), so writers that arrive while a commit is in progress queue up and
  // the next one to run becomes the leader: it runs the whole queue (up to kMaxGroup) in one
  // transaction, each transaction body inside its own SAVEPOINT so a failing body is rolled
  // back alone, then commits once. Every caller gets its own body's status, and OK only
  // after the shared COMMIT is durable. Bodies run one after another in arrival order, so
  // the outcome is the same as committing them serially.
  struct Pending {
    const std::function<absl::Status(Tx&)>* fn;
    bool sync;  // false: TxMode::kReadWriteUnsynced
    absl::Status result;
    bool done = false;
  };
  static constexpr size_t kMaxGroup = 64;

  absl::Status GroupCommit(const std::function<absl::Status(Tx&)>& fn, bool sync) {
    Pending me{&fn, sync, absl::OkStatus(), false};
    absl::MutexLock lock(&group_mu_);
    group_queue_.push_back(&me);
    auto can_lead_or_done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(group_mu_) { return me.done || !group_leader_; };
    while (true) {
      if (!can_lead_or_done()) {
        // Waiting for another writer's group: on an executor thread, the slot goes to the
        // next queued call meanwhile (which may well join the next group).
        WaitingForOthers waiting;
        group_mu_.Await(absl::Condition(&can_lead_or_done));
      }
      if (me.done) return me.result;
      // Lead: take the oldest waiters (FIFO, so my turn comes even if this batch is full).
      group_leader_ = true;
      std::vector<Pending*> batch;
      while (!group_queue_.empty() && batch.size() < kMaxGroup) {
        batch.push_back(group_queue_.front());
        group_queue_.pop_front();
      }
      group_mu_.Unlock();
      RunGroup(batch);
      group_mu_.Lock();
      for (Pending* p : batch) p->done = true;
      group_leader_ = false;
    }
  }

  static std::vector<std::unique_ptr<SqliteConn>> Readers(std::vector<std::unique_ptr<SqliteConn>> conns) {
    conns.erase(conns.begin());
    return conns;
  }

  void RunGroup(const std::vector<Pending*>& batch) {
    absl::MutexLock writer(&writer_mu_);
    SqliteConn* conn = writer_.get();
    conn->set_read_only(false);
    // A group of unsynced writes only (the outbox relay's, the audit chainer's) commits
    // without the fsync; the next synced commit's fsync of the WAL covers its frames. SQLite
    // refuses to change this inside a transaction, so it is set before BEGIN, and only when
    // it changes; a synced group that cannot set it fails rather than commit unsynced.
    const bool sync = std::any_of(batch.begin(), batch.end(), [](const Pending* p) { return p->sync; });
    absl::Status status = absl::OkStatus();
    if (sync != writer_full_sync_) {
      status = conn->Simple(sync ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
      if (status.ok()) writer_full_sync_ = sync;
    }
    if (status.ok()) status = conn->Simple("BEGIN IMMEDIATE");
    if (!status.ok()) {
      for (Pending* p : batch) p->result = status;
      return;
    }
    bool any_ok = false;
    if (batch.size() == 1) {
      batch[0]->result = (*batch[0]->fn)(*conn);
      any_ok = batch[0]->result.ok();
    } else {
      for (Pending* p : batch) {
        absl::Status s = conn->Simple("SAVEPOINT group_member");
        if (s.ok()) s = (*p->fn)(*conn);
        if (s.ok()) {
          s = conn->Simple("RELEASE group_member");
        } else {
          conn->Simple("ROLLBACK TO group_member").IgnoreError();
          conn->Simple("RELEASE group_member").IgnoreError();
        }
        p->result = s;
        any_ok = any_ok || s.ok();
      }
    }
    if (!any_ok) {
      conn->Simple("ROLLBACK").IgnoreError();
      return;
    }
    const auto commit_start = std::chrono::steady_clock::now();  // a duration: not the wall clock
    absl::Status commit = conn->Simple("COMMIT");
    if (commit.ok() && on_commit_) {
      const auto committed = std::count_if(batch.begin(), batch.end(), [](const Pending* p) { return p->result.ok(); });
      on_commit_(absl::FromChrono(std::chrono::steady_clock::now() - commit_start), sync,
                 static_cast<int>(committed));
    }
    if (!commit.ok()) {
      conn->Simple("ROLLBACK").IgnoreError();
      for (Pending* p : batch) {
        if (p->result.ok()) p->result = commit;  // nothing of this group is durable
      }
    }
  }

  absl::Status Attempt(const std::function<absl::Status(Tx&)>& fn, TxMode mode) {
    // With one connection (":memory:", or a pool size of 1) readers use the writer's: take turns.
    std::optional<absl::MutexLock> single;
    if (pool_.size() == 0) single.emplace(&writer_mu_);
    SqliteConn* conn = single ? writer_.get() : pool_.Acquire();
    bool read_only = mode == TxMode::kReadOnly;
    conn->set_read_only(read_only);
    absl::Status status = conn->Simple(read_only ? "BEGIN" : "BEGIN IMMEDIATE");
    if (status.ok()) {
      status = fn(*conn);
      if (status.ok()) {
        status = conn->Simple("COMMIT");
        if (!status.ok()) conn->Simple("ROLLBACK").IgnoreError();
      } else {
        conn->Simple("ROLLBACK").IgnoreError();
      }
    }
    if (!single) pool_.Release(conn);
    return status;
  }

  const std::function<void(absl::Duration, bool, int)> on_commit_;
  absl::Mutex group_mu_;
  std::deque<Pending*> group_queue_ ABSL_GUARDED_BY(group_mu_);
  bool group_leader_ ABSL_GUARDED_BY(group_mu_) = false;
  absl::Mutex writer_mu_;
  const std::unique_ptr<SqliteConn> writer_;  // used under writer_mu_
  bool writer_full_sync_ ABSL_GUARDED_BY(writer_mu_) = true;  // PRAGMA synchronous=FULL (else NORMAL)
  ConnectionPool<SqliteConn> pool_;           // readers; empty when the writer is the only connection
};

}  // namespace

absl::StatusOr<std::unique_ptr<Database>> OpenSqlite(const std::string& path,
                                                     const Options& options) {
  if (path.empty()) {
    return absl::InvalidArgumentError("sqlite url needs a path: sqlite:/path/file.db or sqlite::memory:");
  }
  bool memory = path == ":memory:";
  int n = memory ? 1 : std::max(1, options.pool_size);
  std::vector<std::unique_ptr<SqliteConn>> conns;
  for (int i = 0; i < n; ++i) {
    sqlite3* db = nullptr;
    int rc = sqlite3_open_v2(path.c_str(), &db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
      sqlite3_close_v2(db);
      return absl::UnavailableError(absl::StrCat("cannot open sqlite database '", path, "': ", msg));
    }
    sqlite3_busy_timeout(db, static_cast<int>(absl::ToInt64Milliseconds(options.busy_timeout)));
    auto conn = std::make_unique<SqliteConn>(db);
    // cache_size / mmap_size: SQLite's default 2 MB page cache per connection made a write
    // re-read index and table pages with a pread() each once the file outgrew it. The writer
    // maps the file: it is the only connection that commits, so its map stays valid. Readers
    // do not: a reader that sees another connection's commit drops its cache and, with a
    // map, unmaps the whole file at its next read; that munmap (with its TLB shootdowns) was
    // 16% of messaging's CPU at 1,000 sends/s, far more than the pread() calls that replace
    // it (session 12). (Before the dedicated writer, dropping the map on every connection
    // had made delivery p99 4 -> 72 ms: the writes then re-read through pread() too.)
    for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
                               "PRAGMA foreign_keys=ON", "PRAGMA cache_size=-8192"}) {
      if (memory && absl::string_view(pragma) == "PRAGMA journal_mode=WAL") continue;
      RETURN_IF_ERROR(conn->Simple(pragma));
    }
    RETURN_IF_ERROR(conn->Simple(i == 0 ? "PRAGMA mmap_size=268435456" : "PRAGMA mmap_size=0"));
    conns.push_back(std::move(conn));
  }
  return std::unique_ptr<Database>(new SqliteDatabase(std::move(conns), options));
}

}  // namespace continuum::db
