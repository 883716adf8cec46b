// SQL of the session-record service (records and their versions, journal entries).
// Functions take the caller's open transaction.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/db/database.h"
#include "continuum/records/v1/journal.pb.h"
#include "continuum/records/v1/session_record.pb.h"

namespace continuum::records::store {

namespace v1 = ::continuum::records::v1;

// The latest version, or a given one (version > 0).
absl::StatusOr<std::optional<v1::SessionRecord>> GetRecord(db::Tx& tx, const std::string& clinic_id,
                                                           const std::string& record_id, int64_t version = 0);
// Appends `record` (whose version is already set) as a new version and moves the head to it.
// The head moves only from version - 1: a concurrent writer makes this ABORTED.
absl::Status AppendVersion(db::Tx& tx, const std::string& clinic_id, const std::string& record_id,
                           const v1::SessionRecord& record, const std::string& author, const std::string& action,
                           const std::string& reason);
absl::StatusOr<std::vector<v1::SessionRecordVersion>> ListVersions(db::Tx& tx, const std::string& clinic_id,
                                                                   const std::string& record_id, int64_t offset,
                                                                   int limit);
// Latest versions of records of the given clients (all clients when empty), by create time.
absl::StatusOr<std::vector<v1::SessionRecord>> ListRecords(db::Tx& tx, const std::string& clinic_id,
                                                           const std::vector<std::string>& client_ids,
                                                           const std::vector<int>& states, int64_t offset, int limit);

absl::Status InsertJournal(db::Tx& tx, const std::string& clinic_id, const std::string& entry_id,
                           const std::string& client_id, const v1::JournalEntry& entry);
absl::StatusOr<std::vector<v1::JournalEntry>> ListJournal(db::Tx& tx, const std::string& clinic_id,
                                                          const std::string& client_id, bool shared_only,
                                                          int64_t offset, int limit);

}  // namespace continuum::records::store
