#include "services/session_record/store/record_store.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/db/proto_rows.h"
#include "common/status/errors.h"
#include "common/status/macros.h"
#include "common/time/proto_time.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace continuum::records::store {
namespace {

std::string CacheKey(const std::string& clinic_id, const std::string& record_id) {
  return absl::StrCat(clinic_id, "/", record_id);
}

// A stored delta starts with this byte. A serialized SessionRecord cannot (a tag of field
// number 0 is invalid), so a replica older than deltas refuses such a row as DATA_LOSS
// instead of taking part of a record for all of it.
constexpr char kDeltaMarker = '\0';

bool IsDelta(absl::string_view stored) { return !stored.empty() && stored[0] == kDeltaMarker; }

// Calls f(list of a, list of b) for each of SessionRecord's lists. The test
// DeltasCoverEveryListOfTheRecord fails when the record gains a list this does not name.
template <typename F>
void ForEachList(v1::SessionRecord& a, v1::SessionRecord& b, F f) {
  f(*a.mutable_dose_administrations(), *b.mutable_dose_administrations());
  f(*a.mutable_vitals(), *b.mutable_vitals());
  f(*a.mutable_timeline(), *b.mutable_timeline());
  f(*a.mutable_adverse_events(), *b.mutable_adverse_events());
}

// Where a top-level field of SessionRecord goes in ListSizes (the order ForEachList names the
// lists in): 0-3 for a list, kNotAList for any other field, kUnknownList for a repeated field
// that is not one of those four (DeltasCoverEveryListOfTheRecord fails until ForEachList names
// it; until this names it too, WholeAfterDelta declines and the record is serialized whole).
constexpr int kNotAList = -1, kUnknownList = -2;
int ListIndex(int number) {
  switch (number) {
    case v1::SessionRecord::kDoseAdministrationsFieldNumber:
      return 0;
    case v1::SessionRecord::kVitalsFieldNumber:
      return 1;
    case v1::SessionRecord::kTimelineFieldNumber:
      return 2;
    case v1::SessionRecord::kAdverseEventsFieldNumber:
      return 3;
    default:
      break;
  }
  const auto* field = v1::SessionRecord::descriptor()->FindFieldByNumber(number);
  return field && field->is_repeated() ? kUnknownList : kNotAList;
}

// One stored version: its number and what AppendVersion stored.
struct StoredVersion {
  int64_t version;
  std::string data;
};

// The record at the last of `versions` (consecutive, ascending): the last whole one with the
// deltas after it applied.
absl::StatusOr<v1::SessionRecord> Rebuild(const std::string& record_id, const std::vector<StoredVersion>& versions) {
  size_t whole = versions.size();
  for (size_t i = versions.size(); i-- > 0;) {
    if (!IsDelta(versions[i].data)) {
      whole = i;
      break;
    }
  }
  if (whole == versions.size()) {
    return absl::DataLossError(absl::StrCat("record ", record_id, " version ", versions.back().version,
                                            ": no whole version within ", kWholeEvery, " versions before it"));
  }
  v1::SessionRecord record;
  if (!record.ParseFromString(versions[whole].data)) {
    return absl::DataLossError(absl::StrCat("record ", record_id, " version ", versions[whole].version, " does not parse"));
  }
  for (size_t i = whole + 1; i < versions.size(); ++i) {
    if (versions[i].version != versions[i - 1].version + 1) {
      return absl::DataLossError(absl::StrCat("record ", record_id, " version ", versions[i - 1].version + 1, " is missing"));
    }
    ASSIGN_OR_RETURN(record, ApplyDelta(std::move(record), versions[i].data));
  }
  return record;
}

// The latest version of a record whose head names `latest`, from its rows up to it.
absl::StatusOr<v1::SessionRecord> RebuildLatest(const std::string& record_id, const std::vector<StoredVersion>& versions,
                                                int64_t latest) {
  if (versions.back().version != latest) {
    return absl::DataLossError(absl::StrCat("record ", record_id, " names version ", latest,
                                            " as its latest, and that version is missing"));
  }
  return Rebuild(record_id, versions);
}

// SQL for the rows a version is rebuilt from: those from the last version that is whole by
// position (1, 17, 33, ...) to the version itself; `v` is that version's SQL expression.
std::string RebuildRange(absl::string_view v) {
  return absl::StrCat("v.version <= ", v, " AND v.version >= ", v, " - ((", v, " - 1) % ", kWholeEvery, ")");
}

}  // namespace

ListSizes ListSizesOf(const v1::SessionRecord& r) {
  return {r.dose_administrations_size(), r.vitals_size(), r.timeline_size(), r.adverse_events_size()};
}

std::optional<std::string> DeltaOf(v1::SessionRecord& next, bool only_appended, const ListSizes& before) {
  const ListSizes after = ListSizesOf(next);
  if (!only_appended || after.doses < before.doses || after.vitals < before.vitals ||
      after.timeline < before.timeline || after.adverse_events < before.adverse_events) {
    return std::nullopt;
  }
  // The fields other than the lists, copied with the lists swapped out of `next` (and back).
  v1::SessionRecord lists;
  ForEachList(next, lists, [](auto& a, auto& b) { a.Swap(&b); });
  v1::SessionRecord delta = next;
  ForEachList(next, lists, [](auto& a, auto& b) { a.Swap(&b); });
  const int starts[] = {before.doses, before.vitals, before.timeline, before.adverse_events};
  int list = 0;
  ForEachList(delta, next, [&](auto& added, const auto& all) {
    for (int i = starts[list]; i < all.size(); ++i) *added.Add() = all.Get(i);
    ++list;
  });
  std::string out(1, kDeltaMarker);
  delta.AppendToString(&out);
  return out;
}

std::optional<std::string> WholeAfterDelta(absl::string_view base, const ListSizes& base_sizes,
                                           absl::string_view delta) {
  namespace wire = google::protobuf::internal;
  if (!IsDelta(delta)) return std::nullopt;
  std::string out;
  out.reserve(base.size() + delta.size());
  // One pass over the base's top-level fields (tags and lengths only, never into an entry),
  // copying each run of list fields as it is and counting the entries of each list.
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(base.data()),
                                            static_cast<int>(base.size()));
  int counts[4] = {0, 0, 0, 0};
  size_t run = 0, run_end = 0;  // the run of list fields being gathered: [run, run_end)
  while (true) {
    const auto start = static_cast<size_t>(in.CurrentPosition());
    const uint32_t tag = in.ReadTag();
    if (tag == 0) {
      if (start != base.size()) return std::nullopt;  // not a serialized record
      break;
    }
    if (!wire::WireFormatLite::SkipField(&in, tag)) return std::nullopt;
    const int list = ListIndex(wire::WireFormatLite::GetTagFieldNumber(tag));
    if (list == kUnknownList) return std::nullopt;
    if (list == kNotAList) continue;
    ++counts[list];
    if (start != run_end) {
      out.append(base.data() + run, run_end - run);
      run = start;
    }
    run_end = static_cast<size_t>(in.CurrentPosition());
  }
  // Bytes that are not the base the delta was taken over: serialize instead of guessing.
  if (counts[0] != base_sizes.doses || counts[1] != base_sizes.vitals || counts[2] != base_sizes.timeline ||
      counts[3] != base_sizes.adverse_events) {
    return std::nullopt;
  }
  out.append(base.data() + run, run_end - run);
  out.append(delta.data() + 1, delta.size() - 1);
  return out;
}

VersionBytes BytesOf(v1::SessionRecord& next, bool only_appended, const ListSizes& before, const std::string* base) {
  std::optional<std::string> delta = DeltaOf(next, only_appended, before);
  std::optional<std::string> whole;
  if (delta && base) whole = WholeAfterDelta(*base, before, *delta);
  VersionBytes bytes;
  bytes.whole = whole ? *std::move(whole) : next.SerializeAsString();
  bytes.stored = delta && next.version() % kWholeEvery != 1 ? *std::move(delta) : bytes.whole;
  return bytes;
}

absl::StatusOr<v1::SessionRecord> ApplyDelta(v1::SessionRecord previous, absl::string_view stored) {
  v1::SessionRecord next;
  if (!IsDelta(stored) || !next.ParseFromArray(stored.data() + 1, static_cast<int>(stored.size() - 1))) {
    return absl::DataLossError("a stored record delta does not parse");
  }
  // `next` has every field but the lists' earlier entries, which move over from `previous`.
  ForEachList(next, previous, [](auto& added, auto& earlier) {
    added.Swap(&earlier);  // next: the earlier entries; previous: the added ones
    for (auto& e : earlier) *added.Add() = std::move(e);
  });
  return next;
}

std::shared_ptr<const v1::SessionRecord> LatestRecords::Find(const std::string& clinic_id,
                                                             const std::string& record_id, int64_t version) const {
  absl::MutexLock lock(&mu_);
  auto it = records_.find(CacheKey(clinic_id, record_id));
  if (it == records_.end() || it->second.entry.record->version() != version) return nullptr;
  return it->second.entry.record;
}

LatestRecords::Entry LatestRecords::Take(const std::string& clinic_id, const std::string& record_id) {
  absl::MutexLock lock(&mu_);
  auto it = records_.find(CacheKey(clinic_id, record_id));
  if (it == records_.end()) return {};
  Entry taken = std::move(it->second.entry);
  bytes_ -= it->second.size;
  records_.erase(it);
  return taken;
}

void LatestRecords::Put(const std::string& clinic_id, const std::string& record_id,
                        std::shared_ptr<const v1::SessionRecord> record, std::shared_ptr<const std::string> bytes) {
  const size_t size = bytes ? bytes->size() : record->ByteSizeLong();
  std::string key = CacheKey(clinic_id, record_id);
  absl::MutexLock lock(&mu_);
  auto it = records_.find(key);
  if (it != records_.end()) {
    // Never backwards. The same version again (versions are immutable) replaces the entry only
    // to add the bytes it lacked.
    const int64_t kept = it->second.entry.record->version();
    if (kept > record->version() || (kept == record->version() && (it->second.entry.bytes || !bytes))) return;
    bytes_ -= it->second.size;
    records_.erase(it);
  }
  if (size > max_bytes_) return;
  if (records_.size() >= max_entries_ || bytes_ + size > max_bytes_) {
    records_.clear();
    bytes_ = 0;
  }
  records_.emplace(std::move(key), Kept{Entry{std::move(record), std::move(bytes)}, size});
  bytes_ += size;
}

size_t LatestRecords::entries() const {
  absl::MutexLock lock(&mu_);
  return records_.size();
}

size_t LatestRecords::bytes() const {
  absl::MutexLock lock(&mu_);
  return bytes_;
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
          ? tx.Query(absl::StrCat("SELECT v.version, v.data FROM record_versions v WHERE v.clinic_id = $1",
                                  " AND v.record_id = $2 AND ", RebuildRange("$3"), " ORDER BY v.version"),
                     {clinic_id, record_id, version})
          : tx.Query(absl::StrCat("SELECT v.version, v.data, r.latest_version FROM session_records r JOIN record_versions v",
                                  " ON v.clinic_id = r.clinic_id AND v.record_id = r.record_id AND ",
                                  RebuildRange("r.latest_version"),
                                  " WHERE r.clinic_id = $1 AND r.record_id = $2 ORDER BY v.version"),
                     {clinic_id, record_id}));
  if (rows.empty() || (version > 0 && rows.back().Int(0) != version)) return std::nullopt;
  std::vector<StoredVersion> versions;
  versions.reserve(rows.size());
  for (const auto& row : rows) versions.push_back({row.Int(0), row.Bytes(1)});
  ASSIGN_OR_RETURN(v1::SessionRecord record, version > 0 ? Rebuild(record_id, versions)
                                                           : RebuildLatest(record_id, versions, rows.back().Int(2)));
  return record;
}

namespace {

constexpr char kVersionInsert[] =
    "INSERT INTO record_versions (clinic_id, record_id, version, author, action, reason, state, create_time, data)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

db::Params VersionParams(const std::string& clinic_id, const std::string& record_id, const v1::SessionRecord& r,
                         const std::string& author, const std::string& action, const std::string& reason,
                         const std::string* stored) {
  return {clinic_id, record_id, r.version(), author, action, reason, int64_t{r.state()},
          absl::ToUnixMicros(FromProto(r.update_time())), db::Blob{stored ? *stored : r.SerializeAsString()}};
}

}  // namespace

absl::Status AppendVersion(db::Tx& tx, const std::string& clinic_id, const std::string& record_id,
                           const v1::SessionRecord& r, const std::string& author, const std::string& action,
                           const std::string& reason, const std::string* stored) {
  int64_t now = absl::ToUnixMicros(FromProto(r.update_time()));
  auto conflict = [] {
    return MakeError(absl::StatusCode::kAborted, "TRANSACTION_CONFLICT",
                     "the record was changed concurrently; read it again and retry");
  };
  if (r.version() == 1) {
    auto inserted = tx.Exec(kVersionInsert, VersionParams(clinic_id, record_id, r, author, action, reason, stored));
    if (inserted.status().code() == absl::StatusCode::kAlreadyExists) return conflict();
    RETURN_IF_ERROR(inserted.status());
    return tx
        .Exec("INSERT INTO session_records (clinic_id, record_id, client_id, state, latest_version, create_time)"
              " VALUES ($1, $2, $3, $4, 1, $5)",
              {clinic_id, record_id, r.client().substr(r.client().rfind('/') + 1), int64_t{r.state()}, now})
        .status();
  }
  ASSIGN_OR_RETURN(bool appended, AppendVersionIfLatest(tx, clinic_id, record_id, r, author, action, reason, stored));
  return appended ? absl::OkStatus() : conflict();
}

absl::StatusOr<bool> AppendVersionIfLatest(db::Tx& tx, const std::string& clinic_id, const std::string& record_id,
                                           const v1::SessionRecord& r, const std::string& author,
                                           const std::string& action, const std::string& reason,
                                           const std::string* stored) {
  if (r.version() < 2) return absl::InvalidArgumentError("AppendVersionIfLatest: the first version has no head to move");
  // The head moves first, guarded by the version it moves from: a concurrent writer of the same
  // version finds it moved (or waits for its row lock, then finds it moved) and starts over.
  // Holding the head, this write alone can add the version, so its insert cannot conflict and
  // is deferred (on PostgreSQL it goes out with the commit).
  ASSIGN_OR_RETURN(int64_t moved, tx.Exec("UPDATE session_records SET latest_version = $1, state = $2"
                                          " WHERE clinic_id = $3 AND record_id = $4 AND latest_version = $5",
                                          {r.version(), int64_t{r.state()}, clinic_id, record_id, r.version() - 1}));
  if (moved != 1) return false;
  RETURN_IF_ERROR(tx.ExecDeferred(kVersionInsert, VersionParams(clinic_id, record_id, r, author, action, reason, stored)));
  return true;
}

absl::Status AppendVersionDeferred(db::Tx& tx, const std::string& clinic_id, const std::string& record_id,
                                   const v1::SessionRecord& r, const std::string& author, const std::string& action,
                                   const std::string& reason, const std::string* stored) {
  if (r.version() < 2) return absl::InvalidArgumentError("AppendVersionDeferred: the first version has no head to move");
  if (tx.backend() != db::Backend::kPostgres) {
    return absl::InvalidArgumentError("AppendVersionDeferred: PostgreSQL only (a data-modifying WITH)");
  }
  // VersionParams' $1..$9, then the version the head moves from ($10).
  db::Params params = VersionParams(clinic_id, record_id, r, author, action, reason, stored);
  params.push_back(r.version() - 1);
  return tx.ExecDeferred(
      "WITH moved AS (UPDATE session_records SET latest_version = $3, state = $7"
      " WHERE clinic_id = $1 AND record_id = $2 AND latest_version = $10 RETURNING latest_version)"
      " INSERT INTO record_versions (clinic_id, record_id, version, author, action, reason, state, create_time, data)"
      " VALUES ($1, $2, (SELECT latest_version FROM moved), $4, $5, $6, $7, $8, $9)",
      params);
}

bool IsMovedHead(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kFailedPrecondition || ErrorReason(status) != "INVALID_STATE") return false;
  auto m = ErrorMetadata(status);
  return m["table"] == "record_versions" && m["column"] == "version";
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
  // The page of records, then the rows each one's latest version is rebuilt from.
  ASSIGN_OR_RETURN(db::Rows rows,
                   tx.Query(absl::StrCat("SELECT p.record_id, v.version, v.data, p.latest_version FROM (SELECT r.record_id,",
                                         " r.latest_version, r.create_time FROM session_records r WHERE r.clinic_id = $1",
                                         where, " ORDER BY r.create_time, r.record_id LIMIT $2 OFFSET $3) p",
                                         " JOIN record_versions v ON v.clinic_id = $1 AND v.record_id = p.record_id AND ",
                                         RebuildRange("p.latest_version"),
                                         " ORDER BY p.create_time, p.record_id, v.version"),
                            params));
  std::vector<v1::SessionRecord> out;
  for (size_t begin = 0; begin < rows.size();) {
    const std::string record_id = rows[begin].Text(0);
    std::vector<StoredVersion> versions;
    for (; begin < rows.size() && rows[begin].Text(0) == record_id; ++begin) {
      versions.push_back({rows[begin].Int(1), rows[begin].Bytes(2)});
    }
    ASSIGN_OR_RETURN(auto r, RebuildLatest(record_id, versions, rows[begin - 1].Int(3)));
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
