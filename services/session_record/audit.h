// The hash-chained audit log of clinical reads and writes (continuum.records.v1.AuditEntry).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "common/db/database.h"
#include "continuum/records/v1/audit.pb.h"
#include "continuum/records/v1/session_record_service.pb.h"

namespace continuum::records {

namespace v1 = ::continuum::records::v1;

// The chain hash of an entry as documented on AuditEntry (uses prev_hash and sequence from
// the entry; ignores name and hash).
std::string AuditHash(const v1::AuditEntry& entry);

// Appends `entry` (sequence, prev_hash, hash and name are assigned) to the clinic's chain in
// the caller's transaction. Appenders of one clinic are serialised on the clinic's head row.
absl::Status AppendAudit(db::Tx& tx, const std::string& clinic_id, v1::AuditEntry entry);

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
