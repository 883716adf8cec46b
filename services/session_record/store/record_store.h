// SQL of the session-record service (records and their versions, journal entries).
// Functions take the caller's open transaction.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/db/database.h"
#include "continuum/records/v1/journal.pb.h"
#include "continuum/records/v1/session_record.pb.h"

namespace continuum::records::store {

namespace v1 = ::continuum::records::v1;

// Parsed latest versions of records, shared by the reads and writes of this replica. An entry
// is used only when the database, asked in the caller's transaction, still names that
// version as the latest, so a write by another replica is never hidden: what the cache saves
// is parsing (and allocating) the whole record on every write, not the lookup. Versions are
// immutable once committed, so an entry can only be stale, never wrong; only committed
// versions may be put in. Bounded by entries and by their serialized size (a cached record
// takes a few times that in memory: the parsed record, and the bytes a write keeps with it);
// when either is reached it starts over, and a record larger than the whole budget is not kept.
class LatestRecords {
 public:
  explicit LatestRecords(size_t max_entries = 4096, size_t max_bytes = size_t{64} << 20)
      : max_entries_(max_entries), max_bytes_(max_bytes) {}
  std::shared_ptr<const v1::SessionRecord> Find(const std::string& clinic_id, const std::string& record_id,
                                                int64_t version) const;
  // Removes the entry and returns it, whatever its version (null if none). It may be stale:
  // the caller must check it against the database before relying on it, as a write does
  // inside its transaction. A writer that is then its only holder may turn it into the next
  // version in place (it is put back once that version is committed).
  // `bytes`, when known, is the version's serialized whole (a write builds the next version's
  // from it: see BytesOf). Without them the record's size is computed here, so it must not be
  // shared with another thread yet.
  struct Entry {
    std::shared_ptr<const v1::SessionRecord> record;
    std::shared_ptr<const std::string> bytes;  // may be null
  };
  Entry Take(const std::string& clinic_id, const std::string& record_id);
  void Put(const std::string& clinic_id, const std::string& record_id, std::shared_ptr<const v1::SessionRecord> record,
           std::shared_ptr<const std::string> bytes = nullptr);
  // How many entries and bytes (serialized, as counted at Put) are kept.
  size_t entries() const;
  size_t bytes() const;

 private:
  struct Kept {
    Entry entry;
    size_t size;  // serialized, counted against max_bytes_
  };
  const size_t max_entries_;
  const size_t max_bytes_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Kept> records_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

// The latest version through `cache`: one indexed lookup of the version number, and the
// record parsed only when the cache does not have that version. Null when there is no such
// record. `committed_read`: the transaction has written nothing (so what it reads is
// committed and may be cached).
absl::StatusOr<std::shared_ptr<const v1::SessionRecord>> GetLatest(db::Tx& tx, LatestRecords& cache,
                                                                   const std::string& clinic_id,
                                                                   const std::string& record_id,
                                                                   bool committed_read);

// How versions are stored. A version is stored whole, or as a delta over the version before
// it when the write only added entries to the record's lists (doses, vitals, timeline,
// adverse events) and changed nothing already in them: the delta is the record with its lists
// holding just the added entries (every other field whole). A whole version is stored at
// least every kWholeEvery versions (versions 1, 17, 33, ...), so reading any version reads at
// most that many rows and parses one whole record. Before deltas, a 40-entry session stored
// 40 copies of its growing record (storage quadratic in the entries, and each write wrote
// the whole record again: overflow pages and WAL on SQLite, TOAST on PostgreSQL).
inline constexpr int64_t kWholeEvery = 16;
// The sizes of a record's lists, taken before a write changes it.
struct ListSizes {
  int doses = 0, vitals = 0, timeline = 0, adverse_events = 0;
};
ListSizes ListSizesOf(const v1::SessionRecord& record);
// The delta of `next` (version already set), written by a change that kept the first `before`
// entries of each list as they were (`only_appended`), over the version before it: nullopt when
// the change was not list-only or a list shrank. `next` is changed during the call and restored
// (its lists are swapped out, not copied).
std::optional<std::string> DeltaOf(v1::SessionRecord& next, bool only_appended, const ListSizes& before);
// The serialized whole of the version stored as `delta` over the version whose serialized
// whole is `base` (with `base_sizes` entries in its lists): the base's list fields, as they
// are, then the delta. That is the same
// message as the version's own serialization, though not in field order (parsers take fields
// in any order; each list keeps its entries' order, and every other field appears once, from
// the delta). It saves walking every entry of the record to serialize it again on every write:
// that walk, cache misses on each entry's strings and proto3's UTF-8 check of all of them, was
// 17% of session-record's CPU under 40-entry timelines (session 17). nullopt when `delta` is
// not a delta, or `base` is not a serialized record with `base_sizes` entries in its lists (the
// caller then serializes the record).
std::optional<std::string> WholeAfterDelta(absl::string_view base, const ListSizes& base_sizes,
                                           absl::string_view delta);
// A new version's bytes: `whole` (its serialized whole, also a response's bytes) and `stored`
// (what AppendVersion stores: the delta when there is one and the version is not due to be
// whole, otherwise the whole). With `base`, the serialized whole of the version `next` was
// built from (whose list sizes were `before`), a list-only change's whole is WholeAfterDelta.
struct VersionBytes {
  std::string whole;
  std::string stored;
};
VersionBytes BytesOf(v1::SessionRecord& next, bool only_appended, const ListSizes& before, const std::string* base);
// Applies a stored delta to the version before it.
absl::StatusOr<v1::SessionRecord> ApplyDelta(v1::SessionRecord previous, absl::string_view stored);

// The latest version, or a given one (version > 0).
absl::StatusOr<std::optional<v1::SessionRecord>> GetRecord(db::Tx& tx, const std::string& clinic_id,
                                                           const std::string& record_id, int64_t version = 0);
// Appends `record` (whose version is already set; `stored`, when given, is what to store: see
// BytesOf; otherwise the whole record) as a new version and moves the head to it.
// The head moves only from version - 1: a concurrent writer makes this ABORTED.
absl::Status AppendVersion(db::Tx& tx, const std::string& clinic_id, const std::string& record_id,
                           const v1::SessionRecord& record, const std::string& author, const std::string& action,
                           const std::string& reason, const std::string* stored = nullptr);
// The same for a version after the first, when the head is still at version - 1: true when it
// was (and the version is added), false when it was not or the record does not exist (and
// nothing is written). The head's guarded move is the check, so no read comes first.
absl::StatusOr<bool> AppendVersionIfLatest(db::Tx& tx, const std::string& clinic_id, const std::string& record_id,
                                           const v1::SessionRecord& record, const std::string& author,
                                           const std::string& action, const std::string& reason,
                                           const std::string* stored = nullptr);
// AppendVersionIfLatest in one round trip, for PostgreSQL only: the head's guarded move and
// the version's insert are one deferred statement, so they go out with the COMMIT. Whether the
// head moved is then not known here: the version number is taken from the move itself, so a
// head that was not at version - 1 (another writer moved it; or the database is behind the
// caller's cached copy, after a failover lost commits) leaves it NULL and the commit fails on
// the column's NOT NULL. Nothing of the transaction is written then. IsMovedHead tells that
// failure apart; the caller starts over from the database with AppendVersionIfLatest.
absl::Status AppendVersionDeferred(db::Tx& tx, const std::string& clinic_id, const std::string& record_id,
                                   const v1::SessionRecord& record, const std::string& author,
                                   const std::string& action, const std::string& reason,
                                   const std::string* stored = nullptr);
// The failure of a transaction whose AppendVersionDeferred found the head moved.
bool IsMovedHead(const absl::Status& status);
// The latest version number, or nullopt when there is no such record.
absl::StatusOr<std::optional<int64_t>> LatestVersion(db::Tx& tx, const std::string& clinic_id,
                                                     const std::string& record_id);
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
