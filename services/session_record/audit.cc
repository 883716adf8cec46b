#include "services/session_record/audit.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/api/api.h"
#include "common/log/log.h"
#include "common/status/errors.h"
#include "common/status/macros.h"
#include "common/time/proto_time.h"
#include "spdlog/spdlog.h"

namespace continuum::records {
namespace {

const std::string kZeroHash(64, '0');
// Entries per chain transaction in the background.
constexpr int kChainerBatch = 500;

void Field(std::string* out, const std::string& value) { absl::StrAppend(out, value.size(), ":", value, "\n"); }

}  // namespace

std::string AuditHash(const v1::AuditEntry& e) {
  std::string in;
  Field(&in, e.prev_hash());
  Field(&in, absl::StrCat(e.sequence()));
  Field(&in, absl::FormatTime("%Y-%m-%dT%H:%M:%E9SZ", FromProto(e.occur_time()), absl::UTCTimeZone()));
  Field(&in, e.actor());
  Field(&in, continuum::common::v1::Role_Name(e.actor_role()));
  Field(&in, e.on_behalf_of());
  Field(&in, e.resource());
  Field(&in, e.action());
  Field(&in, v1::AuditEntry::Outcome_Name(e.outcome()));
  Field(&in, e.error_reason());
  Field(&in, e.request_id());
  Field(&in, e.reason());
  return api::Sha256Hex(in);
}

absl::Status AppendAudit(db::Tx& tx, const std::string& clinic_id, v1::AuditEntry e) {
  // Stored (and so hashed) at microsecond precision, the precision of the occur_time column.
  *e.mutable_occur_time() = ToProto(absl::FromUnixMicros(absl::ToUnixMicros(FromProto(e.occur_time()))));
  return tx.ExecDeferred("INSERT INTO audit_pending (clinic_id, data) VALUES ($1, $2)",
                         {clinic_id, db::Blob{e.SerializeAsString()}});
}

// The entries are taken by primary key once their ids are known: with `id IN (subquery)`
// PostgreSQL joined the batch to a sequential scan of audit_pending, dead rows of earlier
// passes included (2.9 ms a pass under record writes; EXPLAIN ANALYZE, session 15), so
// PostgreSQL gets the ids as an array (an InitPlan, run once).
const char kTakePendingSql[] =
    "DELETE FROM audit_pending WHERE id IN (SELECT id FROM audit_pending WHERE clinic_id = $1"
    " ORDER BY id LIMIT $2) RETURNING id, data";
const char kTakePendingSqlPostgres[] =
    "DELETE FROM audit_pending WHERE id = ANY(ARRAY(SELECT id FROM audit_pending WHERE clinic_id = $1"
    " ORDER BY id LIMIT $2)) RETURNING id, data";

absl::StatusOr<int> ChainPendingAudit(db::Database& db, const std::string& clinic_id, int limit) {
  int chained = 0;
  RETURN_IF_ERROR(db.InTransaction([&](db::Tx& tx) -> absl::Status {
    const bool pg = tx.backend() == db::Backend::kPostgres;
    chained = 0;
    // The head row first: chainers of one clinic (this replica's and others') take turns here,
    // and the pending rows are read after it, so none is claimed twice.
    constexpr absl::string_view kLockHead =
        "UPDATE audit_heads SET sequence = sequence WHERE clinic_id = $1 RETURNING sequence, hash";
    ASSIGN_OR_RETURN(db::Rows head, tx.Query(kLockHead, {clinic_id}));
    if (head.empty()) {  // the clinic's first entry: create its head (a racing creator is fine)
      RETURN_IF_ERROR(tx.Exec("INSERT INTO audit_heads (clinic_id, sequence, hash) VALUES ($1, 0, $2)"
                              " ON CONFLICT (clinic_id) DO NOTHING",
                              {clinic_id, kZeroHash})
                          .status());
      ASSIGN_OR_RETURN(head, tx.Query(kLockHead, {clinic_id}));
    }
    if (head.size() != 1) return absl::InternalError("audit head missing");
    ASSIGN_OR_RETURN(db::Rows pending,
                     tx.Query(pg ? kTakePendingSqlPostgres : kTakePendingSql, {clinic_id, int64_t{limit}}));
    if (pending.empty()) return absl::OkStatus();
    // RETURNING has no order; the chain takes entries in the order they were appended.
    std::sort(pending.begin(), pending.end(), [](const db::Row& a, const db::Row& b) { return a.Int(0) < b.Int(0); });
    int64_t sequence = head[0].Int(0);
    std::string prev = head[0].Text(1);
    // Several rows per INSERT: one round trip per chunk on PostgreSQL, not one per entry.
    constexpr size_t kRowsPerInsert = 100;
    for (size_t from = 0; from < pending.size(); from += kRowsPerInsert) {
      std::string sql =
          "INSERT INTO audit_log (clinic_id, sequence, occur_time, actor, on_behalf_of, resource, action, data, hash)"
          " VALUES ";
      db::Params params;
      for (size_t i = from; i < pending.size() && i < from + kRowsPerInsert; ++i) {
        v1::AuditEntry e;
        if (!e.ParseFromString(pending[i].Bytes(1))) {
          return absl::DataLossError(absl::StrCat("pending audit entry ", pending[i].Int(0), " does not parse"));
        }
        e.set_sequence(++sequence);
        e.set_prev_hash(prev);
        e.set_name(absl::StrCat("clinics/", clinic_id, "/auditEntries/", e.sequence()));
        e.set_hash(AuditHash(e));
        prev = e.hash();
        const size_t n = params.size();
        absl::StrAppend(&sql, i == from ? "" : ", ", "($", n + 1, ", $", n + 2, ", $", n + 3, ", $", n + 4, ", $",
                        n + 5, ", $", n + 6, ", $", n + 7, ", $", n + 8, ", $", n + 9, ")");
        params.insert(params.end(), {clinic_id, e.sequence(), db::Micros(FromProto(e.occur_time())), e.actor(),
                                     e.on_behalf_of(), e.resource(), e.action(), db::Blob{e.SerializeAsString()},
                                     e.hash()});
      }
      RETURN_IF_ERROR(tx.Exec(sql, params).status());
    }
    RETURN_IF_ERROR(tx.Exec("UPDATE audit_heads SET sequence = $1, hash = $2 WHERE clinic_id = $3",
                            {sequence, prev, clinic_id})
                        .status());
    chained = static_cast<int>(pending.size());
    return absl::OkStatus();
    // Unsynced: the move is atomic and its entries were committed durably by their own
    // calls, so a crash that loses this commit leaves them pending, and chaining them again
    // gives the same sequence numbers and hashes (same order, same fields). So the head row
    // is not held through a WAL flush (PostgreSQL), nor the writer through an fsync (SQLite).
  }, db::TxMode::kReadWriteUnsynced, 5));
  return chained;
}

absl::Status ChainAllPendingAudit(db::Database& db, const std::string& clinic_id) {
  constexpr int kBatch = 1000;
  // Entries appended while this runs may be chained too; it stops at the first short batch.
  for (;;) {
    ASSIGN_OR_RETURN(int n, ChainPendingAudit(db, clinic_id, kBatch));
    if (n < kBatch) return absl::OkStatus();
  }
}

absl::StatusOr<int> AuditChainer::ChainOnce() {
  std::vector<std::string> clinics;
  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    // The clinics with pending entries, one index probe per clinic (audit_pending_by_clinic)
    // rather than DISTINCT over the whole table: on PostgreSQL that was a scan of the heap,
    // dead rows of the chainer's deletes included, every poll (3.3 ms a call under record
    // writes, pg_stat_statements), growing with the table between vacuums.
    ASSIGN_OR_RETURN(db::Rows rows,
                     // (A SELECT around the WITH: read-only work on PostgreSQL lets only SELECT run.)
                     tx.Query("SELECT clinic_id FROM (WITH RECURSIVE c(clinic_id) AS ("
                              " SELECT (SELECT MIN(clinic_id) FROM audit_pending)"
                              " UNION ALL"
                              " SELECT (SELECT MIN(p.clinic_id) FROM audit_pending p WHERE p.clinic_id > c.clinic_id)"
                              " FROM c WHERE c.clinic_id IS NOT NULL)"
                              " SELECT clinic_id FROM c) AS pending WHERE clinic_id IS NOT NULL"));
    clinics.clear();
    for (const auto& r : rows) clinics.push_back(r.Text(0));
    return absl::OkStatus();
  }, db::TxMode::kReadOnly));
  int total = 0;
  for (const std::string& clinic : clinics) {
    ASSIGN_OR_RETURN(int n, ChainPendingAudit(db_, clinic, kChainerBatch));
    total += n;
  }
  return total;
}

void AuditChainer::Start() {
  thread_ = std::thread([this] {
    NameThisThread("audit-chainer");
    for (;;) {
      absl::StatusOr<int> n = ChainOnce();
      if (!n.ok()) spdlog::warn("audit chainer: {} (entries stay pending; retry in {})", n.status().ToString(),
                                absl::FormatDuration(poll_));
      // A full batch: there is more. Otherwise wait, so that under load a pass chains what a
      // poll interval brought (one chain transaction for many entries) rather than a few each.
      bool more = n.ok() && *n >= kChainerBatch;
      absl::MutexLock lock(&mu_);
      if (!more) mu_.AwaitWithTimeout(absl::Condition(&stop_), poll_);
      if (stop_) return;
    }
  });
}

void AuditChainer::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<std::vector<v1::AuditEntry>> ListAudit(db::Tx& tx, const std::string& clinic_id, const AuditFilter& f) {
  ASSIGN_OR_RETURN(
      db::Rows rows,
      tx.Query("SELECT data FROM audit_log WHERE clinic_id = $1 AND ($2 = '' OR actor = $2)"
               " AND ($3 = '' OR on_behalf_of = $3) AND ($4 = '' OR substr(resource, 1, length($4)) = $4)"
               " AND occur_time >= $5 AND occur_time < $6 ORDER BY sequence LIMIT $7 OFFSET $8",
               {clinic_id, f.actor, f.on_behalf_of, f.resource_prefix,
                f.from ? absl::ToUnixMicros(*f.from) : std::numeric_limits<int64_t>::min(),
                f.to ? absl::ToUnixMicros(*f.to) : std::numeric_limits<int64_t>::max(), int64_t{f.limit}, f.offset}));
  std::vector<v1::AuditEntry> out;
  for (const auto& r : rows) {
    v1::AuditEntry e;
    if (!e.ParseFromString(r.Bytes(0))) return absl::DataLossError("audit entry does not parse");
    out.push_back(std::move(e));
  }
  return out;
}

absl::StatusOr<v1::VerifyAuditChainResponse> VerifyAudit(db::Tx& tx, const std::string& clinic_id) {
  // Checks the stored columns, not just the stored protobuf: a row altered in the database
  // (resource, actor, action, time or hash) breaks the chain here.
  ASSIGN_OR_RETURN(db::Rows rows, tx.Query("SELECT sequence, occur_time, actor, on_behalf_of, resource, action, data,"
                                           " hash FROM audit_log WHERE clinic_id = $1 ORDER BY sequence",
                                           {clinic_id}));
  v1::VerifyAuditChainResponse out;
  std::string prev = kZeroHash;
  int64_t expected = 1;
  for (const auto& r : rows) {
    v1::AuditEntry e;
    bool parsed = e.ParseFromString(r.Bytes(6));
    // The columns are authoritative for what they hold.
    e.set_sequence(r.Int(0));
    *e.mutable_occur_time() = ToProto(absl::FromUnixMicros(r.Int(1)));
    e.set_actor(r.Text(2));
    e.set_on_behalf_of(r.Text(3));
    e.set_resource(r.Text(4));
    e.set_action(r.Text(5));
    std::string stored_hash = r.Text(7);
    out.set_entries_checked(out.entries_checked() + 1);
    auto broken = [&](v1::VerifyAuditChainResponse::Problem problem) {
      out.set_ok(false);
      *out.mutable_first_broken_entry() = e;
      out.mutable_first_broken_entry()->set_hash(stored_hash);
      out.set_problem(problem);
      return out;
    };
    if (!parsed) return broken(v1::VerifyAuditChainResponse::PROBLEM_HASH_MISMATCH);
    if (e.sequence() != expected) return broken(v1::VerifyAuditChainResponse::PROBLEM_SEQUENCE_GAP);
    if (e.prev_hash() != prev) return broken(v1::VerifyAuditChainResponse::PROBLEM_PREV_HASH_MISMATCH);
    if (AuditHash(e) != stored_hash || e.hash() != stored_hash) {
      return broken(v1::VerifyAuditChainResponse::PROBLEM_HASH_MISMATCH);
    }
    prev = stored_hash;
    ++expected;
  }
  out.set_ok(true);
  return out;
}

}  // namespace continuum::records
