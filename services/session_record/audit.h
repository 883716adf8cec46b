// The hash-chained audit log of clinical reads and writes (continuum.records.v1.AuditEntry).
#pragma once

#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/db/database.h"
#include "continuum/records/v1/audit.pb.h"
#include "continuum/records/v1/session_record_service.pb.h"

namespace continuum::records {

namespace v1 = ::continuum::records::v1;

// The chain hash of an entry as documented on AuditEntry (uses prev_hash and sequence from
// the entry; ignores name and hash).
std::string AuditHash(const v1::AuditEntry& entry);

// Appends `entry` to the clinic's audit log in the caller's transaction: committed with it,
// as a pending entry (table audit_pending). Appenders do not wait for each other; the entry
// gets its sequence, prev_hash, hash and name when it is chained (below), in append order.
absl::Status AppendAudit(db::Tx& tx, const std::string& clinic_id, v1::AuditEntry entry);

// Chains up to `limit` of the clinic's pending entries, oldest first, in one transaction: under
// the clinic's head row they are numbered, hashed, inserted into audit_log and deleted from
// audit_pending. Replicas chaining the same clinic take turns on the head row, and each entry
// is chained exactly once. Returns how many entries were chained.
absl::StatusOr<int> ChainPendingAudit(db::Database& db, const std::string& clinic_id, int limit);
// The statement that takes a batch of pending entries ($1 clinic, $2 limit), per backend
// (exposed for a query-plan test).
extern const char kTakePendingSql[];
extern const char kTakePendingSqlPostgres[];
// Chains every entry of the clinic pending when it is called (a log is listed or verified
// after this, so it shows every audited call that committed before).
absl::Status ChainAllPendingAudit(db::Database& db, const std::string& clinic_id);

// Keeps every clinic's chain current in the background: chains pending entries in batches,
// at once while there are more, otherwise every `poll`. It also picks up entries another
// replica left pending (stopped or crashed before it chained them).
class AuditChainer {
 public:
  AuditChainer(db::Database& db, absl::Duration poll) : db_(db), poll_(poll) {}
  ~AuditChainer() { Stop(); }
  void Start();
  void Stop();  // waits for a pass in progress; idempotent
  // One pass over every clinic with pending entries; returns how many entries were chained.
  absl::StatusOr<int> ChainOnce();

 private:
  db::Database& db_;
  const absl::Duration poll_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// Entries of a clinic in sequence order, filtered.
struct AuditFilter {
  std::string actor, on_behalf_of, resource_prefix;
  std::optional<absl::Time> from, to;
  int64_t offset = 0;
  int limit = 100;
};
absl::StatusOr<std::vector<v1::AuditEntry>> ListAudit(db::Tx& tx, const std::string& clinic_id, const AuditFilter& f);

// Recomputes the chain and reports the first broken link.
absl::StatusOr<v1::VerifyAuditChainResponse> VerifyAudit(db::Tx& tx, const std::string& clinic_id);

}  // namespace continuum::records
