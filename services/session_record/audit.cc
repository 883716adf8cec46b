#include "services/session_record/audit.h"

#include "absl/strings/str_cat.h"
#include "common/api/api.h"
#include "common/status/errors.h"
#include "common/status/macros.h"
#include "common/time/proto_time.h"

namespace continuum::records {
namespace {

const std::string kZeroHash(64, '0');

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
  // Takes the clinic's head row lock until commit; concurrent appenders wait here in turn.
  constexpr absl::string_view kAdvance =
      "UPDATE audit_heads SET sequence = sequence + 1 WHERE clinic_id = $1 RETURNING sequence, hash";
  ASSIGN_OR_RETURN(db::Rows head, tx.Query(kAdvance, {clinic_id}));
  if (head.empty()) {  // the clinic's first entry: create its head (a racing creator is fine)
    RETURN_IF_ERROR(tx.Exec("INSERT INTO audit_heads (clinic_id, sequence, hash) VALUES ($1, 0, $2)"
                            " ON CONFLICT (clinic_id) DO NOTHING",
                            {clinic_id, kZeroHash})
                        .status());
    ASSIGN_OR_RETURN(head, tx.Query(kAdvance, {clinic_id}));
  }
  if (head.size() != 1) return absl::InternalError("audit head missing");
  // Stored (and so hashed) at microsecond precision, the precision of the occur_time column.
  *e.mutable_occur_time() = ToProto(absl::FromUnixMicros(absl::ToUnixMicros(FromProto(e.occur_time()))));
  e.set_sequence(head[0].Int(0));
  e.set_prev_hash(head[0].Text(1));
  e.set_name(absl::StrCat("clinics/", clinic_id, "/auditEntries/", e.sequence()));
  e.set_hash(AuditHash(e));
  auto n = tx.Exec("INSERT INTO audit_log (clinic_id, sequence, occur_time, actor, on_behalf_of, resource, action,"
                   " data, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                   {clinic_id, e.sequence(), db::Micros(FromProto(e.occur_time())), e.actor(), e.on_behalf_of(),
                    e.resource(), e.action(), db::Blob{e.SerializeAsString()}, e.hash()});
  RETURN_IF_ERROR(n.status());
  return tx.Exec("UPDATE audit_heads SET hash = $1 WHERE clinic_id = $2", {e.hash(), clinic_id}).status();
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
