// PostgreSQL backend over libpq: a pool of connections, prepared statements cached per
// connection, READ COMMITTED transactions. Conflicts are left to constraints and explicit
// locks in the SQL, never to check-then-insert.
#include <libpq-fe.h>

#include <chrono>
#include <deque>
#include <map>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/db/backends.h"
#include "common/db/pool.h"
#include "common/status/errors.h"
#include "common/status/macros.h"

namespace continuum::db {
namespace {

// Type OIDs from pg_type.h (stable across PostgreSQL versions).
constexpr Oid kBoolOid = 16, kByteaOid = 17, kInt8Oid = 20, kInt2Oid = 21, kInt4Oid = 23,
              kFloat4Oid = 700, kFloat8Oid = 701, kNumericOid = 1700;

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

class PgConn final : public Tx {
 public:
  explicit PgConn(std::string url) : url_(std::move(url)) {}
  ~PgConn() override {
    if (conn_) PQfinish(conn_);
  }

  // Connects (or reconnects after a failure). Statement cache is per connection.
  absl::Status EnsureConnected(absl::Duration lock_timeout) {
    if (conn_ && PQstatus(conn_) == CONNECTION_OK) return absl::OkStatus();
    if (conn_) PQfinish(conn_);
    statements_.clear();
    conn_ = PQconnectdb(url_.c_str());
    if (PQstatus(conn_) != CONNECTION_OK) {
      std::string msg = PQerrorMessage(conn_);
      PQfinish(conn_);
      conn_ = nullptr;
      return MakeError(absl::StatusCode::kUnavailable, "STORE_UNAVAILABLE",
                       absl::StrCat("cannot connect to PostgreSQL: ", msg));
    }
    std::string setup = absl::StrFormat("SET lock_timeout = %d; SET client_min_messages = warning",
                                        absl::ToInt64Milliseconds(lock_timeout));
    Result r(PQexec(conn_, setup.c_str()));
    if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) return Error(r.get(), "session setup");
    // Values stored out of line (a session record's version is several KiB) are compressed
    // with lz4 rather than the default pglz, which was 8% of PostgreSQL's CPU under record
    // writes (perf). A server built without lz4 refuses the setting and keeps pglz.
    Result lz4(PQexec(conn_, "SET default_toast_compression = lz4"));
    return absl::OkStatus();
  }

  bool broken() const { return conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK; }

  absl::Status Error(PGresult* r, absl::string_view what) {
    if (broken()) {
      return MakeError(absl::StatusCode::kUnavailable, "STORE_UNAVAILABLE",
                       absl::StrCat("lost connection to PostgreSQL during ", what));
    }
    const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    std::string sqlstate = state ? state : "";
    std::string msg = r ? PQresultErrorMessage(r) : PQerrorMessage(conn_);
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    if (sqlstate == "23505") {
      const char* c = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME);
      return MakeError(absl::StatusCode::kAlreadyExists, "ALREADY_EXISTS", msg,
                       {{"constraint", c ? c : ""}});
    }
    if (sqlstate == "40001" || sqlstate == "40P01" || sqlstate == "55P03") {
      return MakeError(absl::StatusCode::kAborted, "TRANSACTION_CONFLICT", msg);
    }
    if (absl::StartsWith(sqlstate, "08") || absl::StartsWith(sqlstate, "57P")) {
      return MakeError(absl::StatusCode::kUnavailable, "STORE_UNAVAILABLE", msg);
    }
    if (absl::StartsWith(sqlstate, "23")) {
      // Which table, column and constraint, for callers that turn a particular violation into
      // an answer of their own (e.g. session-record's moved head, record_store.h).
      auto field = [r](int code) {
        const char* v = PQresultErrorField(r, code);
        return std::string(v ? v : "");
      };
      return MakeError(absl::StatusCode::kFailedPrecondition, "INVALID_STATE", msg,
                       {{"table", field(PG_DIAG_TABLE_NAME)},
                        {"column", field(PG_DIAG_COLUMN_NAME)},
                        {"constraint", field(PG_DIAG_CONSTRAINT_NAME)}});
    }
    return absl::InternalError(absl::StrCat("postgres ", what, " [", sqlstate, "]: ", msg));
  }

  // Read-only work runs without BEGIN / COMMIT (see PostgresDatabase::Attempt); only SELECT
  // is let through then, as BEGIN READ ONLY would.
  void set_autocommit_read_only(bool on) { autocommit_read_only_ = on; }

  absl::StatusOr<Result> Run(absl::string_view sql, const Params& params) {
    RETURN_IF_ERROR(RefuseWriteWhenReadOnly(sql));
    ASSIGN_OR_RETURN(Bound b, Bind(sql, params));
    if (begin_pending_ || !deferred_.empty()) return Flush(&b, nullptr);
    std::vector<const char*> values = b.Values();
    Result r(PQexecPrepared(conn_, b.name.c_str(), static_cast<int>(values.size()), values.data(), b.lengths.data(),
                            b.formats.data(), 0));
    ExecStatusType st = PQresultStatus(r.get());
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return Error(r.get(), "query");
    return r;
  }

  absl::Status ExecDeferred(absl::string_view sql, const Params& params) override {
    if (autocommit_read_only_) return Exec(sql, params).status();  // no transaction to end: nothing would send it
    ASSIGN_OR_RETURN(Bound b, Bind(sql, params));
    deferred_.push_back(std::move(b));
    return absl::OkStatus();
  }

  absl::StatusOr<Rows> Query(absl::string_view sql, const Params& params) override {
    ASSIGN_OR_RETURN(Result r, Run(sql, params));
    Rows rows;
    int nrows = PQntuples(r.get()), ncols = PQnfields(r.get());
    rows.reserve(nrows);
    for (int i = 0; i < nrows; ++i) {
      std::vector<Value> cells;
      cells.reserve(ncols);
      for (int c = 0; c < ncols; ++c) {
        if (PQgetisnull(r.get(), i, c)) {
          cells.emplace_back(std::monostate{});
          continue;
        }
        std::string s(PQgetvalue(r.get(), i, c), PQgetlength(r.get(), i, c));
        switch (PQftype(r.get(), c)) {
          case kInt2Oid:
          case kInt4Oid:
          case kInt8Oid: cells.emplace_back(static_cast<int64_t>(std::stoll(s))); break;
          case kFloat4Oid:
          case kFloat8Oid:
          case kNumericOid: cells.emplace_back(std::stod(s)); break;
          case kBoolOid: cells.emplace_back(static_cast<int64_t>(s == "t")); break;
          case kByteaOid: {
            size_t len = 0;
            unsigned char* raw = PQunescapeBytea(reinterpret_cast<const unsigned char*>(s.c_str()), &len);
            cells.emplace_back(Blob{std::string(reinterpret_cast<char*>(raw), len)});
            PQfreemem(raw);
            break;
          }
          default: cells.emplace_back(std::move(s));
        }
      }
      rows.emplace_back(std::move(cells));
    }
    return rows;
  }

  absl::StatusOr<int64_t> Exec(absl::string_view sql, const Params& params) override {
    ASSIGN_OR_RETURN(Result r, Run(sql, params));
    const char* n = PQcmdTuples(r.get());
    return n && *n ? std::stoll(n) : 0;
  }

  absl::Status ExecScript(absl::string_view sql) override {
    std::string expanded = ExpandDialect(sql, Backend::kPostgres);
    return Simple(expanded.c_str());
  }

  Backend backend() const override { return Backend::kPostgres; }

  // A write transaction's BEGIN is not a round trip of its own: it goes out with the
  // transaction's first statement (in Flush's pipeline, or prefixed to a script), and a transaction
  // that ran no statement sends neither BEGIN nor COMMIT.
  // `unsynced` (TxMode::kReadWriteUnsynced): the BEGIN takes SET LOCAL synchronous_commit TO
  // OFF along, in the same round trip.
  void BeginLazily(bool unsynced) {
    begin_pending_ = true;
    begin_unsynced_ = unsynced;
  }
  // Nothing was run or queued since BeginLazily: Commit will send nothing.
  bool ran_nothing() const { return begin_pending_ && deferred_.empty(); }
  absl::Status Commit() {
    if (!deferred_.empty()) return Flush(nullptr, "COMMIT").status();
    return End("COMMIT");
  }
  absl::Status Rollback() {
    deferred_.clear();  // never sent
    return End("ROLLBACK");
  }

  absl::Status Simple(const char* sql) {
    if (!deferred_.empty()) RETURN_IF_ERROR(Flush(nullptr, nullptr).status());  // a script cannot join a pipeline
    std::string with_begin;
    if (begin_pending_) {  // a multi-statement simple query: BEGIN stays open after it
      begin_pending_ = false;
      with_begin = absl::StrCat("BEGIN; ", begin_unsynced_ ? kUnsynced : "", begin_unsynced_ ? "; " : "", sql);
      sql = with_begin.c_str();
    }
    Result r(PQexec(conn_, sql));
    ExecStatusType st = PQresultStatus(r.get());
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return Error(r.get(), "statement");
    return absl::OkStatus();
  }

 private:
  absl::Status End(const char* sql) {
    if (!begin_pending_) return Simple(sql);
    begin_pending_ = false;  // nothing ran: there is no transaction to end
    return absl::OkStatus();
  }

  // A prepared statement with its parameters in libpq's form (text, or binary for bytea).
  struct Bound {
    std::string name;
    std::vector<std::string> text;
    std::vector<bool> null;
    std::vector<int> lengths, formats;
    std::vector<const char*> Values() const {
      std::vector<const char*> v(text.size());
      for (size_t i = 0; i < text.size(); ++i) v[i] = null[i] ? nullptr : text[i].data();
      return v;
    }
  };

  absl::Status RefuseWriteWhenReadOnly(absl::string_view sql) const {
    if (autocommit_read_only_ && !absl::StartsWithIgnoreCase(absl::StripLeadingAsciiWhitespace(sql), "SELECT")) {
      return MakeError(absl::StatusCode::kInternal, "INTERNAL",
                       absl::StrCat("only SELECT may run in a read-only transaction: ", sql));
    }
    return absl::OkStatus();
  }

  // Prepares the statement on first use on this connection (statements are named per connection).
  absl::StatusOr<Bound> Bind(absl::string_view sql, const Params& params) {
    Bound b;
    if (auto it = statements_.find(sql); it != statements_.end()) {
      b.name = it->second;
    } else {
      std::string key(sql);
      b.name = absl::StrCat("s", statements_.size() + 1);
      Result prep(PQprepare(conn_, b.name.c_str(), key.c_str(), 0, nullptr));
      if (PQresultStatus(prep.get()) != PGRES_COMMAND_OK) return Error(prep.get(), "prepare");
      statements_[key] = b.name;
    }
    b.text.resize(params.size());
    b.null.resize(params.size());
    b.lengths.resize(params.size());
    b.formats.resize(params.size());
    for (size_t i = 0; i < params.size(); ++i) {
      const Value& v = params[i];
      if (std::holds_alternative<std::monostate>(v)) {
        b.null[i] = true;
        continue;
      }
      if (auto* x = std::get_if<int64_t>(&v)) b.text[i] = absl::StrCat(*x);
      else if (auto* d = std::get_if<double>(&v)) b.text[i] = absl::StrFormat("%.17g", *d);
      else if (auto* s = std::get_if<std::string>(&v)) b.text[i] = *s;
      else if (auto* bl = std::get_if<Blob>(&v)) {
        b.text[i] = bl->bytes;
        b.formats[i] = 1;  // binary: bytea contents as-is
      }
      b.lengths[i] = static_cast<int>(b.text[i].size());
    }
    return b;
  }

  // One pipeline (libpq 14+), one round trip: the pending BEGIN, the deferred statements, then
  // `last` (a prepared statement) or `last_plain` (COMMIT), each when given. Returns the last
  // query's result; else the first failure (BEGIN's, a deferred statement's, or the last
  // one's: the server skips the rest of a pipeline after an error). A failed pipeline that
  // carried COMMIT leaves the transaction open and aborted, so it is rolled back here.
  absl::StatusOr<Result> Flush(const Bound* last, const char* last_plain) {
    const bool begin = begin_pending_;
    begin_pending_ = false;
    std::vector<Bound> deferred = std::move(deferred_);
    deferred_.clear();
    if (!PQenterPipelineMode(conn_)) return Error(nullptr, "pipeline");
    auto send = [&](const Bound& b) {
      std::vector<const char*> values = b.Values();
      return PQsendQueryPrepared(conn_, b.name.c_str(), static_cast<int>(values.size()), values.data(),
                                 b.lengths.data(), b.formats.data(), 0) == 1;
    };
    auto send_plain = [&](const char* sql) {
      return PQsendQueryParams(conn_, sql, 0, nullptr, nullptr, nullptr, nullptr, 0) == 1;
    };
    bool sent = true;
    const bool unsynced = begin && begin_unsynced_;
    if (begin) sent = send_plain("BEGIN");
    if (unsynced) sent = sent && send_plain(kUnsynced);
    for (const Bound& b : deferred) sent = sent && send(b);
    if (last) sent = sent && send(*last);
    if (last_plain) sent = sent && send_plain(last_plain);
    sent = sent && PQpipelineSync(conn_) == 1;
    const size_t queries = (begin ? 1 : 0) + (unsynced ? 1 : 0) + deferred.size() + (last ? 1 : 0) + (last_plain ? 1 : 0);
    std::vector<Result> results;  // one per query, in order
    for (size_t separators = 0; sent;) {
      PGresult* r = PQgetResult(conn_);
      if (r == nullptr) {  // the end of one query's results; then the sync
        if (++separators > queries || broken()) break;
        continue;
      }
      if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
        PQclear(r);
        break;
      }
      results.emplace_back(r);
    }
    PQexitPipelineMode(conn_);
    if (!sent || results.size() != queries || broken()) return Error(nullptr, "pipeline");
    for (Result& r : results) {
      ExecStatusType st = PQresultStatus(r.get());
      if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) continue;
      absl::Status failed = Error(r.get(), "query");
      if (last_plain != nullptr && !broken()) Simple("ROLLBACK").IgnoreError();
      return failed;
    }
    if (results.empty()) return Result(nullptr);
    return std::move(results.back());
  }

  std::string url_;
  PGconn* conn_ = nullptr;
  static constexpr char kUnsynced[] = "SET LOCAL synchronous_commit TO OFF";
  bool begin_pending_ = false;
  bool begin_unsynced_ = false;  // with begin_pending_: kUnsynced goes with the BEGIN
  std::vector<Bound> deferred_;  // ExecDeferred's, sent with the next statement or the commit
  std::map<std::string, std::string, std::less<>> statements_;
  bool autocommit_read_only_ = false;
};

class PostgresDatabase final : public Database {
 public:
  PostgresDatabase(const std::string& url, const Options& options)
      : options_(options), pool_(MakeConns(url, options.pool_size)) {}

  Backend backend() const override { return Backend::kPostgres; }

  absl::Status InTransaction(const std::function<absl::Status(Tx&)>& fn, TxMode mode,
                             int max_attempts) override {
    return RetryAborted(max_attempts, [&] { return Attempt(fn, mode); });
  }

  absl::Status Connect() {
    PgConn* c = pool_.Acquire();
    absl::Status s = c->EnsureConnected(options_.busy_timeout);
    pool_.Release(c);
    return s;
  }

 private:
  absl::Status Attempt(const std::function<absl::Status(Tx&)>& fn, TxMode mode) {
    PgConn* conn = pool_.Acquire();
    absl::Status status = conn->EnsureConnected(options_.busy_timeout);
    if (status.ok() && mode == TxMode::kReadOnly) {
      // Reads skip BEGIN READ ONLY / COMMIT: under READ COMMITTED every statement takes its
      // own snapshot inside a transaction too, so a read-only transaction gave no stronger
      // consistency, and its two extra round trips were two thirds of a one-query read
      // (docs/perf: GetAppointment on PostgreSQL). Writes are refused above instead.
      conn->set_autocommit_read_only(true);
      status = fn(*conn);
      conn->set_autocommit_read_only(false);
    } else if (status.ok()) {
      const bool synced = mode != TxMode::kReadWriteUnsynced;
      conn->BeginLazily(!synced);
      status = fn(*conn);
      if (status.ok()) {
        const bool report = options_.on_commit && !conn->ran_nothing();
        const auto commit_start = std::chrono::steady_clock::now();  // a duration: not the wall clock
        status = conn->Commit();
        if (status.ok() && report) {
          options_.on_commit(absl::FromChrono(std::chrono::steady_clock::now() - commit_start), synced, 1);
        }
      } else if (!conn->broken()) {
        conn->Rollback().IgnoreError();
      }
    }
    pool_.Release(conn);
    return status;
  }


  Options options_;
  static std::vector<std::unique_ptr<PgConn>> MakeConns(const std::string& url, int n) {
    std::vector<std::unique_ptr<PgConn>> conns;
    for (int i = 0; i < std::max(1, n); ++i) conns.push_back(std::make_unique<PgConn>(url));
    return conns;  // connected lazily, on first use
  }

  ConnectionPool<PgConn> pool_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Database>> OpenPostgres(const std::string& url,
                                                       const Options& options) {
  auto db = std::make_unique<PostgresDatabase>(url, options);
  RETURN_IF_ERROR(db->Connect());  // fail fast on a bad URL or an unreachable server
  return std::unique_ptr<Database>(std::move(db));
}

}  // namespace continuum::db
