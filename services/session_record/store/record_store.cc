#include "services/session_record/store/record_store.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/db/proto_rows.h"
#include "common/status/errors.h"
#include "common/status/macros.h"
#include "common/time/proto_time.h"

namespace continuum::records::store {
namespace {

std::string CacheKey(const std::string& clinic_id, const std::string& record_id) {
  return absl::StrCat(clinic_id, "/", record_id);
}

}  // namespace

std::shared_ptr<const v1::SessionRecord> LatestRecords::Find(const std::string& clinic_id,
                                                             const std::string& record_id, int64_t version) const {
  absl::MutexLock lock(&mu_);
  auto it = records_.find(CacheKey(clinic_id, record_id));
  if (it == records_.end() || it->second->version() != version) return nullptr;
  return it->second;
}

std::shared_ptr<const v1::SessionRecord> LatestRecords::Take(const std::string& clinic_id,
                                                             const std::string& record_id) {
  absl::MutexLock lock(&mu_);
  auto it = records_.find(CacheKey(clinic_id, record_id));
  if (it == records_.end()) return nullptr;
  std::shared_ptr<const v1::SessionRecord> taken = std::move(it->second);
  records_.erase(it);
  return taken;
}

void LatestRecords::Put(const std::string& clinic_id, const std::string& record_id,
                        std::shared_ptr<const v1::SessionRecord> record) {
  std::string key = CacheKey(clinic_id, record_id);
  absl::MutexLock lock(&mu_);
  auto it = records_.find(key);
  if (it != records_.end()) {
    if (it->second->version() < record->version()) it->second = std::move(record);  // never backwards
    return;
  }
  if (records_.size() >= max_entries_) records_.clear();
  records_.emplace(std::move(key), std::move(record));
}

absl::StatusOr<std::optional<int64_t>> LatestVersion(db::Tx& tx, const std::string& clinic_id,
                                                     const std::string& record_id) {
  ASSIGN_OR_RETURN(db::Rows rows, tx.Query("SELECT latest_version FROM session_records"
                                           " WHERE clinic_id = $1 AND record_id = $2",
                                           {clinic_id, record_id}));
  if (rows.empty()) return std::nullopt;
  return rows[0].Int(0);
}

absl::StatusOr<std::shared_ptr<const v1::SessionRecord>> GetLatest(db::Tx& tx, LatestRecords& cache,
                                                                   const std::string& clinic_id,
                                                                   const std::string& record_id,
                                                                   bool committed_read) {
  ASSIGN_OR_RETURN(std::optional<int64_t> latest, LatestVersion(tx, clinic_id, record_id));
  if (!latest) return nullptr;
  const int64_t version = *latest;
  if (auto hit = cache.Find(clinic_id, record_id, version)) return hit;
  ASSIGN_OR_RETURN(auto parsed, GetRecord(tx, clinic_id, record_id, version));
  if (!parsed) return absl::DataLossError(absl::StrCat("record ", record_id, " names version ", version,
                                                       " as its latest, and that version is missing"));
  // Not a const object: a writer holding the only reference may change it in place (Take).
  std::shared_ptr<const v1::SessionRecord> record = std::make_shared<v1::SessionRecord>(std::move(*parsed));
  if (committed_read) cache.Put(clinic_id, record_id, record);
  return record;
}

absl::StatusOr<std::optional<v1::SessionRecord>> GetRecord(db::Tx& tx, const std::string& clinic_id,
                                                           const std::string& record_id, int64_t version) {
  ASSIGN_OR_RETURN(
      db::Rows rows,
      version > 0
          ? tx.Query("SELECT data FROM record_versions WHERE clinic_id = $1 AND record_id = $2 AND version = $3",
                     {clinic_id, record_id, version})
          : tx.Query("SELECT v.data FROM session_records r JOIN record_versions v ON v.clinic_id = r.clinic_id"
                     " AND v.record_id = r.record_id AND v.version = r.latest_version"
                     " WHERE r.clinic_id = $1 AND r.record_id = $2",
                     {clinic_id, record_id}));
  if (rows.empty()) return std::nullopt;
  return db::ParseProto<v1::SessionRecord>(rows[0], 0);
}

absl::Status AppendVersion(db::Tx& tx, const std::string& clinic_id, const std::string& record_id,
                           const v1::SessionRecord& r, const std::string& author, const std::string& action,
                           const std::string& reason, const std::string* serialized) {
  int64_t now = absl::ToUnixMicros(FromProto(r.update_time()));
  const char* kInsert =
      "INSERT INTO record_versions (clinic_id, record_id, version, author, action, reason, state, create_time, data)"
      " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
  db::Params version = {clinic_id, record_id, r.version(), author, action, reason, int64_t{r.state()}, now,
                        db::Blob{serialized ? *serialized : r.SerializeAsString()}};
  auto conflict = [] {
    return MakeError(absl::StatusCode::kAborted, "TRANSACTION_CONFLICT",
                     "the record was changed concurrently; read it again and retry");
  };
  if (r.version() == 1) {
    auto inserted = tx.Exec(kInsert, version);
    if (inserted.status().code() == absl::StatusCode::kAlreadyExists) return conflict();
    RETURN_IF_ERROR(inserted.status());
    return tx
        .Exec("INSERT INTO session_records (clinic_id, record_id, client_id, state, latest_version, create_time)"
              " VALUES ($1, $2, $3, $4, 1, $5)",
              {clinic_id, record_id, r.client().substr(r.client().rfind('/') + 1), int64_t{r.state()}, now})
        .status();
  }
  // The head moves first, guarded by the version it moves from: a concurrent writer of the same
  // version finds it moved (or waits for its row lock, then finds it moved) and starts over.
  // Holding the head, this write alone can add the version, so its insert cannot conflict and
  // is deferred (on PostgreSQL it goes out with the commit).
  ASSIGN_OR_RETURN(int64_t moved, tx.Exec("UPDATE session_records SET latest_version = $1, state = $2"
                                          " WHERE clinic_id = $3 AND record_id = $4 AND latest_version = $5",
                                          {r.version(), int64_t{r.state()}, clinic_id, record_id, r.version() - 1}));
  if (moved != 1) return conflict();
  return tx.ExecDeferred(kInsert, version);
}

absl::StatusOr<std::vector<v1::SessionRecordVersion>> ListVersions(db::Tx& tx, const std::string& clinic_id,
                                                                   const std::string& record_id, int64_t offset,
                                                                   int limit) {
  ASSIGN_OR_RETURN(db::Rows rows, tx.Query("SELECT version, author, action, reason, state, create_time"
                                           " FROM record_versions WHERE clinic_id = $1 AND record_id = $2"
                                           " ORDER BY version LIMIT $3 OFFSET $4",
                                           {clinic_id, record_id, int64_t{limit}, offset}));
  std::vector<v1::SessionRecordVersion> out;
  for (const auto& row : rows) {
    v1::SessionRecordVersion v;
    v.set_record(absl::StrCat("clinics/", clinic_id, "/sessionRecords/", record_id));
    v.set_version(row.Int(0));
    v.set_author(row.Text(1));
    v.set_action(row.Text(2));
    v.set_reason(row.Text(3));
    v.set_state(static_cast<v1::SessionRecord::State>(row.Int(4)));
    *v.mutable_create_time() = ToProto(absl::FromUnixMicros(row.Int(5)));
    out.push_back(std::move(v));
  }
  return out;
}

absl::StatusOr<std::vector<v1::SessionRecord>> ListRecords(db::Tx& tx, const std::string& clinic_id,
                                                           const std::vector<std::string>& client_ids,
                                                           const std::vector<int>& states, int64_t offset, int limit) {
  db::Params params = {clinic_id, int64_t{limit}, offset};
  std::string where;
  if (!client_ids.empty()) {
    where += " AND r.client_id IN " + db::Placeholders(client_ids.size(), params.size() + 1);
    for (const auto& c : client_ids) params.push_back(c);
  }
  if (!states.empty()) {
    where += " AND r.state IN " + db::Placeholders(states.size(), params.size() + 1);
    for (int s : states) params.push_back(int64_t{s});
  }
  ASSIGN_OR_RETURN(db::Rows rows,
                   tx.Query(absl::StrCat("SELECT v.data FROM session_records r JOIN record_versions v"
                                         " ON v.clinic_id = r.clinic_id AND v.record_id = r.record_id"
                                         " AND v.version = r.latest_version WHERE r.clinic_id = $1",
                                         where, " ORDER BY r.create_time, r.record_id LIMIT $2 OFFSET $3"),
                            params));
  std::vector<v1::SessionRecord> out;
  for (const auto& row : rows) {
    ASSIGN_OR_RETURN(auto r, db::ParseProto<v1::SessionRecord>(row, 0));
    out.push_back(std::move(r));
  }
  return out;
}

absl::Status InsertJournal(db::Tx& tx, const std::string& clinic_id, const std::string& entry_id,
                           const std::string& client_id, const v1::JournalEntry& e) {
  return tx
      .Exec("INSERT INTO journal_entries (clinic_id, entry_id, client_id, visibility, create_time, data)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            {clinic_id, entry_id, client_id, int64_t{e.visibility()},
             absl::ToUnixMicros(FromProto(e.create_time())), db::Blob{e.SerializeAsString()}})
      .status();
}

absl::StatusOr<std::vector<v1::JournalEntry>> ListJournal(db::Tx& tx, const std::string& clinic_id,
                                                          const std::string& client_id, bool shared_only,
                                                          int64_t offset, int limit) {
  ASSIGN_OR_RETURN(db::Rows rows,
                   tx.Query("SELECT data FROM journal_entries WHERE clinic_id = $1 AND client_id = $2"
                            " AND ($3 = 0 OR visibility = $4) ORDER BY create_time DESC, entry_id LIMIT $5 OFFSET $6",
                            {clinic_id, client_id, int64_t{shared_only}, int64_t{v1::JournalEntry::VISIBILITY_SHARED_WITH_CARE_TEAM},
                             int64_t{limit}, offset}));
  std::vector<v1::JournalEntry> out;
  for (const auto& row : rows) {
    ASSIGN_OR_RETURN(auto e, db::ParseProto<v1::JournalEntry>(row, 0));
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace continuum::records::store
