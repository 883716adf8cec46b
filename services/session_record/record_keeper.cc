#include "services/session_record/record_keeper.h"

#include <algorithm>
#include <atomic>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/api/api.h"
#include "common/api/idempotency.h"
#include "common/outbox/outbox.h"
#include "common/status/errors.h"
#include "common/status/macros.h"
#include "common/time/proto_time.h"
#include "services/session_record/audit.h"
#include "services/session_record/fhir.h"
#include "services/session_record/store/record_store.h"

namespace continuum::records {
namespace {

using Item = v1::ChecklistItem;
using RState = v1::SessionRecord::State;
namespace sv1 = ::continuum::scheduling::v1;

constexpr char kEventStream[] = "continuum:events:records";

std::string IdOf(const std::string& name) { return name.substr(name.rfind('/') + 1); }
std::string PersonId(const auth::Principal& p) {
  return absl::StartsWith(p.subject, "people/") ? p.subject.substr(7) : p.subject;
}
std::string PersonName(const auth::Principal& p) { return "people/" + PersonId(p); }

bool IsMedicine(cv1::AppointmentKind k) {
  return k == cv1::APPOINTMENT_KIND_MEDICINE_SUPERVISED || k == cv1::APPOINTMENT_KIND_MEDICINE_SELF_GUIDED;
}

absl::Status Denied(absl::string_view reason, absl::string_view message) {
  return MakeError(absl::StatusCode::kPermissionDenied, reason, message);
}
absl::Status Rule(absl::string_view reason, absl::string_view message,
                  const std::map<std::string, std::string>& metadata = {}) {
  return MakeError(absl::StatusCode::kFailedPrecondition, reason, message, metadata);
}
absl::Status NotFound(const std::string& name) {
  return MakeError(absl::StatusCode::kNotFound, "NOT_FOUND", name + " does not exist", {{"resource", name}});
}

cv1::Role RoleOf(const auth::Principal& p) {
  switch (p.role) {
    case auth::Role::kClient: return cv1::ROLE_CLIENT;
    case auth::Role::kTherapist: return cv1::ROLE_THERAPIST;
    case auth::Role::kClinician: return cv1::ROLE_CLINICIAN;
    case auth::Role::kSitter: return cv1::ROLE_SITTER;
    case auth::Role::kAdmin: return cv1::ROLE_ADMIN;
    case auth::Role::kPartner: return cv1::ROLE_PARTNER;
    case auth::Role::kService: return cv1::ROLE_SERVICE;
    default: return cv1::ROLE_UNSPECIFIED;
  }
}

// An audit entry of `p` acting on `resource` for `client` ("people/{id}" or "").
v1::AuditEntry AuditOf(const auth::Principal& p, const std::string& client, const std::string& resource,
                       absl::string_view action, absl::Time now, const absl::Status& outcome = absl::OkStatus(),
                       const std::string& request_id = "", const std::string& reason = "") {
  v1::AuditEntry e;
  *e.mutable_occur_time() = ToProto(now);
  e.set_actor(p.subject);
  e.set_actor_role(RoleOf(p));
  e.set_on_behalf_of(client);
  e.set_resource(resource);
  e.set_action(std::string(action));
  e.set_outcome(outcome.ok() ? v1::AuditEntry::OUTCOME_SUCCESS
                : outcome.code() == absl::StatusCode::kPermissionDenied ? v1::AuditEntry::OUTCOME_DENIED
                                                                        : v1::AuditEntry::OUTCOME_FAILED);
  e.set_error_reason(outcome.ok() ? "" : ErrorReason(outcome));
  e.set_request_id(request_id);
  e.set_reason(reason);
  return e;
}

std::string EtagOfVersion(int64_t version) { return absl::StrCat("\"v", version, "\""); }
std::string EtagOf(const v1::SessionRecord& r) { return EtagOfVersion(r.version()); }

// How a write's idempotency row names the version it wrote. A NUL byte never starts a
// serialized message (field number 0 is invalid), so it cannot be confused with a response
// remembered whole.
constexpr absl::string_view kVersionRef("\0version=", 9);

// States in which each kind of write is allowed (the table on SessionRecord).
absl::Status RequireState(const v1::SessionRecord& r, std::initializer_list<RState> allowed, absl::string_view what) {
  if (std::find(allowed.begin(), allowed.end(), r.state()) != allowed.end()) return absl::OkStatus();
  if (r.state() == v1::SessionRecord::STATE_SIGNED) {
    return Rule("RECORD_LOCKED", absl::StrCat("the record is signed and locked; use AmendSessionRecord to ", what));
  }
  std::vector<std::string> names;
  for (RState s : allowed) names.push_back(v1::SessionRecord::State_Name(s));
  return Rule("INVALID_STATE", absl::StrCat("cannot ", what, " while the record is ",
                                            v1::SessionRecord::State_Name(r.state()), " (allowed in ",
                                            absl::StrJoin(names, ", "), ")"));
}

std::vector<Item::Kind> RequiredItems(const v1::SessionRecord& r) {
  if (!IsMedicine(r.kind())) return {};
  if (r.setting() == cv1::CARE_SETTING_IN_CLINIC) {
    return {Item::KIND_TRANSPORTATION_ARRANGED, Item::KIND_BLOOD_PRESSURE, Item::KIND_CONSENT_ACTIVE,
            Item::KIND_DOSE_WITHIN_PLAN};
  }
  return {Item::KIND_SITTER_PRESENT, Item::KIND_BLOOD_PRESSURE, Item::KIND_CONSENT_ACTIVE, Item::KIND_MEDICATIONS_HELD,
          Item::KIND_DOSE_WITHIN_PLAN};
}

const v1::DoseAdministration* Running(const v1::SessionRecord& r) {
  for (const auto& d : r.dose_administrations()) {
    if (!d.has_stop_time()) return &d;
  }
  return nullptr;
}

}  // namespace

void EvaluateChecklist(v1::SessionRecord& record, const sv1::ClinicPolicy& policy, const sv1::Program* program) {
  std::vector<Item::Kind> required = RequiredItems(record);
  std::map<int, Item> items;
  for (const auto& item : record.checklist().items()) items[item.kind()] = item;
  for (Item::Kind k : required) {
    if (!items.count(k)) items[k].set_kind(k);
  }
  bool passed = true;
  auto* checklist = record.mutable_checklist();
  checklist->clear_items();
  for (auto& [kind, item] : items) {
    item.set_required(std::find(required.begin(), required.end(), kind) != required.end());
    bool provided = item.has_confirm_time();
    bool ok = false;
    switch (kind) {
      case Item::KIND_SITTER_PRESENT: ok = item.confirmed() && !item.sitter().empty(); break;
      case Item::KIND_TRANSPORTATION_ARRANGED:
      case Item::KIND_CONSENT_ACTIVE:
      case Item::KIND_MEDICATIONS_HELD: ok = item.confirmed(); break;
      case Item::KIND_BLOOD_PRESSURE:
        ok = item.systolic_mmhg() > 0 && item.systolic_mmhg() <= policy.max_systolic_mmhg() &&
             item.diastolic_mmhg() > 0 && item.diastolic_mmhg() <= policy.max_diastolic_mmhg();
        break;
      case Item::KIND_DOSE_WITHIN_PLAN:
        ok = program && program->has_dose_plan() && item.planned_route() == program->dose_plan().route() &&
             item.planned_dose_mg() >= program->dose_plan().min_dose_mg() &&
             item.planned_dose_mg() <= program->dose_plan().max_dose_mg();
        break;
      default: break;
    }
    item.set_status(!provided ? Item::STATUS_MISSING : ok ? Item::STATUS_PASSED : Item::STATUS_FAILED);
    if (item.required() && item.status() != Item::STATUS_PASSED) passed = false;
    *checklist->add_items() = item;
  }
  checklist->set_passed(passed);
}

RecordKeeper::RecordKeeper(db::Database& db, Clock& clock, SchedulingClient& scheduling, Options options)
    : db_(db), clock_(clock), scheduling_(scheduling), options_(std::move(options)) {}

// ---------------------------------------------------------------------------- plumbing

// What one write does: the record to change, the context it may need, and its events.
struct RecordKeeper::Change {
  const auth::Principal& p;
  const Relation& who;
  v1::SessionRecord& record;
  absl::Time now;
  std::string reason;  // recorded on the version (amendments, overrides)
  std::vector<events::v1::EventEnvelope> events;
  // Set by a change that only added entries to the record's lists and left every entry
  // already in them as it was (other fields may change): the version may then be stored as a
  // delta (store::BytesOf). Unset, the version is stored whole, which is always correct.
  bool only_appended = false;

  events::v1::EventEnvelope& Event() {
    events.emplace_back();
    auto& e = events.back();
    e.set_event_id(api::NewUuid());
    *e.mutable_occur_time() = ToProto(now);
    e.set_clinic(record.name().substr(0, record.name().find("/sessionRecords/")));
    e.set_source_service("session-record");
    e.set_aggregate(record.name());
    return e;
  }
};

WrittenRecord::operator v1::SessionRecord() const {
  v1::SessionRecord sent;
  // Bytes that do not parse answer a record with no name, which no caller's check accepts.
  if (!sent.ParseFromString(*bytes_)) return v1::SessionRecord();
  return sent;
}

WrittenRecord::WrittenRecord(v1::SessionRecord record)
    : bytes_(std::make_shared<const std::string>(record.SerializeAsString())) {
  record_ = std::make_shared<const v1::SessionRecord>(std::move(record));
}

absl::StatusOr<RecordKeeper::Relation> RecordKeeper::Relate(const P& p, const std::string& clinic_id,
                                                           const std::string& client_id,
                                                           const v1::SessionRecord* record) {
  Relation who;
  RETURN_IF_ERROR(auth::RequireClinic(p, clinic_id));
  who.service = p.role == auth::Role::kService;
  who.admin = p.role == auth::Role::kAdmin;
  who.partner = p.role == auth::Role::kPartner;
  who.client_self = p.role == auth::Role::kClient && PersonId(p) == client_id;
  who.sitter = p.role == auth::Role::kSitter && record && !record->sitter().empty() &&
               record->sitter() == PersonName(p);
  if (p.role == auth::Role::kTherapist || p.role == auth::Role::kClinician) {
    ASSIGN_OR_RETURN(sv1::CareTeam team, scheduling_.GetCareTeam(clinic_id, client_id));
    for (const auto& m : team.members()) {
      if (m.person() == PersonName(p)) {
        who.care_team = true;
        who.clinician = m.role() == cv1::ROLE_CLINICIAN;
      }
    }
  }
  return who;
}

absl::Status CareTeamOnly(const RecordKeeper::Relation& who) {
  if (who.care_team || who.service) return absl::OkStatus();
  return Denied("NOT_ON_CARE_TEAM", "only the client's care team may do this");
}

absl::Status RecordKeeper::Audit(const P& p, const std::string& clinic_id, const std::string& client_id,
                                 const std::string& resource, const char* action, const absl::Status& outcome,
                                 const std::string& request_id, const std::string& reason) {
  v1::AuditEntry e = AuditOf(p, client_id.empty() ? "" : "people/" + client_id, resource, action, clock_.Now(), outcome,
                             request_id, reason);
  return db_.InTransaction([&](db::Tx& tx) { return AppendAudit(tx, clinic_id, e); }, db::TxMode::kReadWrite, 5);
}

absl::StatusOr<WrittenRecord> RecordKeeper::Write(const P& p, const std::string& name, const char* action,
                                                      const std::string& request_id, const std::string& etag,
                                                      const google::protobuf::Message& request,
                                                      const std::function<absl::Status(const Relation&)>& authorize,
                                                      const std::function<absl::Status(Change&)>& apply,
                                                      const std::function<absl::Status(const v1::SessionRecord&)>& side_effect) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(name, "clinics/*/sessionRecords/*", "name"));
  RETURN_IF_ERROR(api::ValidateRequestId(request_id));
  RETURN_IF_ERROR(auth::RequireClinic(p, ids[0]));
  // Cache first: the version this replica last wrote or read, if any, is taken as the latest
  // without a read transaction of its own (one fewer transaction per write). The write's
  // transaction compares it with the database; if another replica wrote meanwhile, or the
  // cached copy would refuse the write, the pass starts over from a fresh read, so nothing is
  // ever decided on a stale copy. Not for writes with a side effect in scheduling, which
  // happens before the transaction and must not happen twice.
  std::shared_ptr<const v1::SessionRecord> current;
  std::shared_ptr<const std::string> current_bytes;  // its serialized whole, when known (from the cache)
  bool unchecked = false;  // `current` came from the cache and is not yet compared with the database
  // The cached copy is taken out of the cache; when this write is then its only holder, it is
  // turned into the next version in place: no copy of the whole record, and no old version
  // left to free (together about 8% of session-record's CPU per write with 40-entry records).
  // It goes back into the cache when that version commits; if the write fails it is dropped.
  std::shared_ptr<v1::SessionRecord> owned;
  if (!side_effect) {
    store::LatestRecords::Entry cached = latest_.Take(ids[0], ids[1]);
    current = std::move(cached.record);
    current_bytes = std::move(cached.bytes);
    unchecked = current != nullptr;
    if (current && current.use_count() == 1) {
      std::atomic_thread_fence(std::memory_order_acquire);  // after the last other holder's reads
      // Cached records are never const objects (see store::GetLatest and `build` below).
      owned = std::const_pointer_cast<v1::SessionRecord>(current);
    }
  }
  // PostgreSQL: the first attempt sends its whole transaction as one pipeline with the
  // COMMIT (store::AppendVersionDeferred): one round trip instead of two. If the head had
  // moved, the commit fails (store::IsMovedHead) and the write starts over from the
  // database with the head's move checked in the transaction.
  bool defer_head = true;
  for (;;) {  // at most three times: from the cache, deferred; from the database; checked
    if (!unchecked) {
      RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
        ASSIGN_OR_RETURN(current, store::GetLatest(tx, latest_, ids[0], ids[1], /*committed_read=*/true));
        return absl::OkStatus();
      }, db::TxMode::kReadOnly));
      current_bytes = nullptr;
    }
    if (!current) return NotFound(name);
    const std::string client_id = IdOf(current->client());
    ASSIGN_OR_RETURN(Relation who, Relate(p, ids[0], client_id, current.get()));
    auto audited = [&](absl::Status s) {
      Audit(p, ids[0], client_id, name, action, s, request_id).IgnoreError();
      return s;
    };
    if (absl::Status s = authorize(who); !s.ok()) {
      if (unchecked) {  // refused on the cached copy: decide on the latest
        unchecked = false;
        owned.reset();
        continue;
      }
      return audited(s);
    }

    // The new version, built from a given latest one: copy (unless owned), apply, number,
    // serialize (from the base's bytes when they are known: store::BytesOf).
    struct Next {
      std::shared_ptr<v1::SessionRecord> record;
      std::shared_ptr<std::string> data;  // serialized whole (as answered)
      std::string stored;                 // as stored: whole or a delta
      std::string reason;
      std::vector<events::v1::EventEnvelope> events;
    };
    // `build_from` changes the record it is given (a copy, or the owned cached one).
    auto build_from = [&](std::shared_ptr<v1::SessionRecord> record,
                          const std::string* base_bytes) -> absl::StatusOr<Next> {
      Next next{std::move(record)};
      const int64_t base_version = next.record->version();
      absl::Time now = clock_.Now();
      const store::ListSizes before = store::ListSizesOf(*next.record);
      Change change{p, who, *next.record, now};
      RETURN_IF_ERROR(apply(change));
      next.record->set_version(base_version + 1);
      *next.record->mutable_update_time() = ToProto(now);
      next.record->set_etag(EtagOf(*next.record));
      store::VersionBytes bytes = store::BytesOf(*next.record, change.only_appended, before, base_bytes);
      next.data = std::make_shared<std::string>(std::move(bytes.whole));
      next.stored = std::move(bytes.stored);
      next.reason = std::move(change.reason);
      next.events = std::move(change.events);
      return next;
    };
    auto build = [&](const v1::SessionRecord& base, const std::string* base_bytes) {
      return build_from(std::make_shared<v1::SessionRecord>(base), base_bytes);
    };
    // Built here, outside the transaction: on SQLite every write transaction runs on the one
    // writer (see common/db group commit), so copying and serializing a large record inside it
    // made writes to different records wait for each other. The transaction uses it when the
    // record is still at the version it was built from.
    // A refusal is returned from inside the transaction, after the idempotency check, so that
    // the retry of a write that succeeded gets its answer, not the rule its own success now
    // breaks. Only a side effect in scheduling waits for the rules first.
    const int64_t base_version = current->version();  // `current` itself changes when owned
    absl::StatusOr<Next> prepared = owned && owned == current ? build_from(std::move(owned), current_bytes.get())
                                                              : build(*current, current_bytes.get());
    owned.reset();
    if (side_effect) {
      if (!prepared.ok()) return audited(prepared.status());
      if (absl::Status s = side_effect(*current); !s.ok()) return audited(s);
    }
    // The committed new version, for the response and the cache (the body may run more than once).
    std::shared_ptr<v1::SessionRecord> written;
    std::shared_ptr<std::string> written_data;
    bool enqueued = false;  // the committed version put events in the outbox
    bool stale = false;     // the cached copy was not the latest: start over from the database
    bool deferred = false;  // this attempt appended with AppendVersionDeferred
    // A retried request is answered from the version it wrote: the idempotency row holds its
    // number, not a second copy of the record.
    bool recalled = false;  // the answer is a remembered one, not this call's commit
    const api::RememberAs<v1::SessionRecord> by_version{
        [](const v1::SessionRecord& r) { return absl::StrCat(kVersionRef, r.version()); },
        [&](db::Tx& tx, const std::string& ref) -> absl::StatusOr<v1::SessionRecord> {
          recalled = true;
          int64_t version = 0;
          if (!absl::StartsWith(ref, kVersionRef) ||
              !absl::SimpleAtoi(absl::string_view(ref).substr(kVersionRef.size()), &version)) {
            v1::SessionRecord stored;  // remembered whole, before responses were kept by reference
            if (!stored.ParseFromString(ref)) return absl::DataLossError("stored response");
            return stored;
          }
          ASSIGN_OR_RETURN(auto at, store::GetRecord(tx, ids[0], ids[1], version));
          if (!at) return absl::DataLossError(absl::StrCat(name, " version ", version, " is missing"));
          return std::move(*at);
        }};
    auto result = api::RunIdempotent<v1::SessionRecord>(
        db_, clock_, p.subject, action, request_id, request, [&](db::Tx& tx) -> absl::StatusOr<v1::SessionRecord> {
          written = nullptr;
          written_data = nullptr;
          enqueued = false;
          stale = false;
          deferred = false;
          const Next* next = nullptr;
          absl::StatusOr<Next> rebuilt;
          // The usual case first: the version this write was built from is still the latest.
          // The head's guarded move proves it, with no read before it (one statement, and on
          // PostgreSQL one round trip, fewer per write). Otherwise nothing was written, and
          // the latest version decides, as below.
          const bool built_on_base = prepared.ok() && (etag.empty() || etag == EtagOfVersion(base_version));
          // Not with a side effect: starting over would repeat it (see above).
          if (built_on_base && defer_head && !side_effect && tx.backend() == db::Backend::kPostgres) {
            RETURN_IF_ERROR(store::AppendVersionDeferred(tx, ids[0], ids[1], *prepared->record, p.subject, action,
                                                         prepared->reason, &prepared->stored));
            next = &*prepared;
            deferred = true;
          } else if (built_on_base) {
            ASSIGN_OR_RETURN(bool appended,
                             store::AppendVersionIfLatest(tx, ids[0], ids[1], *prepared->record, p.subject, action,
                                                          prepared->reason, &prepared->stored));
            if (appended) next = &*prepared;
          }
          if (!next) {
            ASSIGN_OR_RETURN(std::optional<int64_t> version, store::LatestVersion(tx, ids[0], ids[1]));
            if (!version) return NotFound(name);
            if (!etag.empty() && etag != EtagOfVersion(*version)) {
              return MakeError(absl::StatusCode::kAborted, "ETAG_MISMATCH",
                               absl::StrCat(name, " has changed (now ", EtagOfVersion(*version),
                                            "); read it again and retry"));
            }
            if (*version == base_version) {
              RETURN_IF_ERROR(prepared.status());  // refused by the rules (or the head moved back: never)
              next = &*prepared;
            } else if (unchecked) {
              stale = true;
              // Rolled back and not remembered; not ABORTED, which the database layer would retry.
              return absl::CancelledError("cached record is stale");
            } else {  // written meanwhile: apply to the latest instead
              ASSIGN_OR_RETURN(auto latest, store::GetLatest(tx, latest_, ids[0], ids[1], /*committed_read=*/false));
              if (!latest) return NotFound(name);
              rebuilt = build(*latest, nullptr);
              RETURN_IF_ERROR(rebuilt.status());
              next = &*rebuilt;
            }
            RETURN_IF_ERROR(store::AppendVersion(tx, ids[0], ids[1], *next->record, p.subject, action, next->reason,
                                                 &next->stored));
          }
          const v1::SessionRecord& record = *next->record;
          RETURN_IF_ERROR(AppendAudit(tx, ids[0],
                                      AuditOf(p, record.client(), name, action, FromProto(record.update_time()),
                                              absl::OkStatus(), request_id, next->reason)));
          for (const auto& event : next->events) {
            std::string type;
            if (const auto* f = event.GetReflection()->GetOneofFieldDescriptor(
                    event, event.GetDescriptor()->FindOneofByName("payload"))) {
              type = f->name();
            }
            RETURN_IF_ERROR(outbox::Enqueue(tx, {kEventStream, event.event_id(), type, event.SerializeAsString()},
                                            FromProto(record.update_time())));
          }
          written = next->record;
          written_data = next->data;
          enqueued = !next->events.empty();
          // Only the version inside the writer; the whole record is copied out after commit.
          v1::SessionRecord committed;
          committed.set_version(record.version());
          return committed;
        },
        &by_version);
    if (stale) {
      unchecked = false;
      continue;
    }
    if (deferred && store::IsMovedHead(result.status())) {  // nothing was written
      defer_head = false;
      unchecked = false;
      continue;
    }
    if (!result.ok()) return audited(result.status());
    // Only a write with events wakes the relay: its pass is a transaction of its own.
    if (enqueued && options_.on_commit) options_.on_commit();
    // Answered from a remembered response: `written`, if set, is an attempt that did not commit.
    // (A deferred attempt builds a whole version and fails only at COMMIT; built from a stale
    // cached copy it can even carry the remembered version's number, with other content.)
    if (recalled || !written || written->version() != result->version()) {
      return WrittenRecord(*std::move(result));  // answered from a retry's version
    }
    // Committed: later writes of this replica start from it without parsing it again, and the
    // response is the stored bytes (no copy of the record, no second serialization).
    latest_.Put(ids[0], ids[1], written, written_data);
    return WrittenRecord(std::move(written), std::move(written_data));
  }
}

// ---------------------------------------------------------------------------- records

absl::StatusOr<v1::SessionRecord> RecordKeeper::CreateSessionRecord(const P& p, const v1::CreateSessionRecordRequest& r) {
  ASSIGN_OR_RETURN(auto parent, api::ParseName(r.parent(), "clinics/*", "parent"));
  ASSIGN_OR_RETURN(auto appt_ids, api::ParseName(r.session_record().appointment(), "clinics/*/appointments/*",
                                                 "session_record.appointment"));
  if (appt_ids[0] != parent[0]) return InvalidField("session_record.appointment", "must be in the parent clinic");
  RETURN_IF_ERROR(auth::RequireClinic(p, parent[0]));
  ASSIGN_OR_RETURN(sv1::Appointment appt, scheduling_.GetAppointment(r.session_record().appointment()));
  const std::string client_id = IdOf(appt.client());
  ASSIGN_OR_RETURN(Relation who, Relate(p, parent[0], client_id, nullptr));
  const std::string name = absl::StrCat(r.parent(), "/sessionRecords/", appt_ids[1]);
  if (absl::Status s = CareTeamOnly(who); !s.ok()) {
    Audit(p, parent[0], client_id, name, "CreateSessionRecord", s, r.request_id()).IgnoreError();
    return s;
  }
  if (appt.state() == sv1::Appointment::STATE_CANCELLED || appt.state() == sv1::Appointment::STATE_NOSHOW ||
      appt.state() == sv1::Appointment::STATE_ENTERED_IN_ERROR) {
    return Rule("INVALID_STATE", absl::StrCat(appt.name(), " is ", sv1::Appointment::State_Name(appt.state()),
                                              "; it cannot have a session record"));
  }
  ASSIGN_OR_RETURN(sv1::Clinic clinic, scheduling_.GetClinic(parent[0]));
  std::optional<sv1::Program> program;
  if (IsMedicine(appt.kind())) {
    ASSIGN_OR_RETURN(program, scheduling_.GetProgram(appt.program()));
  }
  auto created = api::RunIdempotent<v1::SessionRecord>(
      db_, clock_, p.subject, "CreateSessionRecord", r.request_id(), r,
      [&](db::Tx& tx) -> absl::StatusOr<v1::SessionRecord> {
        ASSIGN_OR_RETURN(auto existing, store::GetRecord(tx, parent[0], appt_ids[1]));
        if (existing) {
          return MakeError(absl::StatusCode::kAlreadyExists, "ALREADY_EXISTS", name + " already exists");
        }
        absl::Time now = clock_.Now();
        v1::SessionRecord rec;
        rec.set_name(name);
        rec.set_appointment(appt.name());
        rec.set_client(appt.client());
        rec.set_program(appt.program());
        rec.set_kind(appt.kind());
        rec.set_setting(appt.setting());
        rec.set_provider(appt.provider());
        rec.set_state(v1::SessionRecord::STATE_DRAFT);
        rec.set_version(1);
        EvaluateChecklist(rec, clinic.policy(), program ? &*program : nullptr);
        *rec.mutable_create_time() = *rec.mutable_update_time() = ToProto(now);
        rec.set_etag(EtagOf(rec));
        RETURN_IF_ERROR(store::AppendVersion(tx, parent[0], appt_ids[1], rec, p.subject, "CreateSessionRecord", ""));
        RETURN_IF_ERROR(AppendAudit(tx, parent[0], AuditOf(p, rec.client(), name, "CreateSessionRecord", now, absl::OkStatus(), r.request_id())));
        return rec;
      });
  if (!created.ok() && created.status().code() != absl::StatusCode::kInvalidArgument) {
    Audit(p, parent[0], client_id, name, "CreateSessionRecord", created.status(), r.request_id()).IgnoreError();
  }
  return created;
}

absl::StatusOr<v1::SessionRecord> RecordKeeper::GetSessionRecord(const P& p, const v1::GetSessionRecordRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.name(), "clinics/*/sessionRecords/*", "name"));
  if (r.version() < 0) return InvalidField("version", "must be 0 (latest) or a version number");
  RETURN_IF_ERROR(auth::RequireClinic(p, ids[0]));
  std::shared_ptr<const v1::SessionRecord> latest;
  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    ASSIGN_OR_RETURN(latest, store::GetLatest(tx, latest_, ids[0], ids[1], /*committed_read=*/true));
    return absl::OkStatus();
  }, db::TxMode::kReadOnly));
  if (!latest) return NotFound(r.name());
  const std::string client_id = IdOf(latest->client());
  ASSIGN_OR_RETURN(Relation who, Relate(p, ids[0], client_id, latest.get()));
  absl::Status allowed = CareTeamOnly(who);
  if (!allowed.ok() && who.client_self) {
    ASSIGN_OR_RETURN(sv1::Clinic clinic, scheduling_.GetClinic(ids[0]));
    if (clinic.policy().clients_read_signed_records() && latest->state() == v1::SessionRecord::STATE_SIGNED) {
      allowed = absl::OkStatus();
    } else {
      allowed = Denied("PERMISSION_DENIED_ROLE", "clients read their signed records only where the clinic allows it");
    }
  }
  if (!allowed.ok()) {
    Audit(p, ids[0], client_id, r.name(), "GetSessionRecord", allowed).IgnoreError();
    return allowed;
  }
  // The read and its audit entry commit together: no unaudited read of clinical data.
  std::optional<v1::SessionRecord> out;
  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    if (r.version() == 0) {
      ASSIGN_OR_RETURN(auto now_latest, store::GetLatest(tx, latest_, ids[0], ids[1], /*committed_read=*/false));
      if (now_latest) out = *now_latest;
    } else {
      ASSIGN_OR_RETURN(out, store::GetRecord(tx, ids[0], ids[1], r.version()));
    }
    if (!out) return NotFound(absl::StrCat(r.name(), " version ", r.version()));
    return AppendAudit(tx, ids[0], AuditOf(p, latest->client(), r.version() > 0 ? absl::StrCat(r.name(), "@", r.version()) : r.name(), "GetSessionRecord", clock_.Now()));
  }, db::TxMode::kReadWrite, 5));
  return *out;
}

absl::StatusOr<v1::ListSessionRecordsResponse> RecordKeeper::ListSessionRecords(const P& p,
                                                                                const v1::ListSessionRecordsRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.parent(), "clinics/*", "parent"));
  RETURN_IF_ERROR(auth::RequireClinic(p, ids[0]));
  if (r.client().empty()) return InvalidField("client", "required: the client whose records to list");
  ASSIGN_OR_RETURN(auto client, api::ParseName(r.client(), "people/*", "client"));
  ASSIGN_OR_RETURN(Relation who, Relate(p, ids[0], client[0], nullptr));
  std::vector<int> states(r.states().begin(), r.states().end());
  absl::Status allowed = CareTeamOnly(who);
  if (!allowed.ok() && who.client_self) {
    ASSIGN_OR_RETURN(sv1::Clinic clinic, scheduling_.GetClinic(ids[0]));
    if (clinic.policy().clients_read_signed_records()) {
      allowed = absl::OkStatus();
      states = {v1::SessionRecord::STATE_SIGNED};
    }
  }
  if (!allowed.ok()) {
    Audit(p, ids[0], client[0], r.parent(), "ListSessionRecords", allowed).IgnoreError();
    return allowed;
  }
  ASSIGN_OR_RETURN(int size, api::PageSize(r.page_size(), 50, 500));
  ASSIGN_OR_RETURN(int64_t offset, api::ParsePageToken(r.page_token(), r));
  v1::ListSessionRecordsResponse out;
  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    ASSIGN_OR_RETURN(auto list, store::ListRecords(tx, ids[0], {client[0]}, states, offset, size + 1));
    for (size_t i = 0; i < list.size() && i < static_cast<size_t>(size); ++i) *out.add_session_records() = list[i];
    if (list.size() > static_cast<size_t>(size)) out.set_next_page_token(api::MakePageToken(offset + size, r));
    return AppendAudit(tx, ids[0], AuditOf(p, r.client(), r.parent(), "ListSessionRecords", clock_.Now()));
  }, db::TxMode::kReadWrite, 5));
  return out;
}

absl::StatusOr<v1::ListSessionRecordVersionsResponse> RecordKeeper::ListSessionRecordVersions(
    const P& p, const v1::ListSessionRecordVersionsRequest& r) {
  v1::GetSessionRecordRequest get;  // same access rules, and audited as a read
  get.set_name(r.name());
  ASSIGN_OR_RETURN(v1::SessionRecord latest, GetSessionRecord(p, get));
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.name(), "clinics/*/sessionRecords/*", "name"));
  ASSIGN_OR_RETURN(int size, api::PageSize(r.page_size(), 50, 500));
  ASSIGN_OR_RETURN(int64_t offset, api::ParsePageToken(r.page_token(), r));
  v1::ListSessionRecordVersionsResponse out;
  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    ASSIGN_OR_RETURN(auto versions, store::ListVersions(tx, ids[0], ids[1], offset, size + 1));
    for (size_t i = 0; i < versions.size() && i < static_cast<size_t>(size); ++i) *out.add_versions() = versions[i];
    if (versions.size() > static_cast<size_t>(size)) out.set_next_page_token(api::MakePageToken(offset + size, r));
    return absl::OkStatus();
  }, db::TxMode::kReadOnly));
  return out;
}

// ---------------------------------------------------------------------------- safety gate

absl::StatusOr<v1::UpdateChecklistResponse> RecordKeeper::UpdateChecklist(const P& p, const v1::UpdateChecklistRequest& r) {
  if (r.items().empty()) return InvalidField("items", "at least one checklist item");
  std::set<int> kinds;
  for (int i = 0; i < r.items_size(); ++i) {
    const auto& item = r.items(i);
    std::string field = absl::StrCat("items[", i, "]");
    if (item.kind() == Item::KIND_UNSPECIFIED || !kinds.insert(item.kind()).second) {
      return InvalidField(field + ".kind", "required, each kind at most once");
    }
    if (item.kind() == Item::KIND_SITTER_PRESENT && !absl::StartsWith(item.sitter(), "people/")) {
      return InvalidField(field + ".sitter", "name the sitter: people/{id}");
    }
    if (item.kind() == Item::KIND_BLOOD_PRESSURE &&
        (item.systolic_mmhg() < 40 || item.systolic_mmhg() > 300 || item.diastolic_mmhg() < 20 ||
         item.diastolic_mmhg() > 200 || item.diastolic_mmhg() >= item.systolic_mmhg())) {
      return InvalidField(field, "blood pressure: systolic 40-300, diastolic 20-200 and below systolic (mmHg)");
    }
    if (item.kind() == Item::KIND_DOSE_WITHIN_PLAN && !(item.planned_dose_mg() > 0)) {
      return InvalidField(field + ".planned_dose_mg", "required, > 0");
    }
    if (item.note().size() > 1000) return InvalidField(field + ".note", "at most 1000 characters");
  }
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.name(), "clinics/*/sessionRecords/*", "name"));
  RETURN_IF_ERROR(auth::RequireClinic(p, ids[0]));
  // Context the evaluation needs: clinic thresholds, dose plan, the sitter's role.
  ASSIGN_OR_RETURN(sv1::Clinic clinic, scheduling_.GetClinic(ids[0]));
  std::optional<sv1::Program> program;
  for (const auto& item : r.items()) {
    if (item.kind() == Item::KIND_SITTER_PRESENT) {
      ASSIGN_OR_RETURN(sv1::Person sitter, scheduling_.GetPerson(IdOf(item.sitter())));
      bool is_sitter = false;
      for (const auto& m : sitter.memberships()) {
        is_sitter = is_sitter || (m.clinic() == "clinics/" + ids[0] && m.role() == cv1::ROLE_SITTER);
      }
      if (!is_sitter) return InvalidField("items.sitter", "must be a sitter of this clinic");
    }
  }
  auto authorize = [&](const Relation& who) -> absl::Status {
    if (who.care_team || who.service) return absl::OkStatus();
    for (const auto& item : r.items()) {
      bool ok = (who.client_self && (item.kind() == Item::KIND_SITTER_PRESENT ||
                                     item.kind() == Item::KIND_TRANSPORTATION_ARRANGED ||
                                     item.kind() == Item::KIND_MEDICATIONS_HELD)) ||
                (who.sitter && (item.kind() == Item::KIND_BLOOD_PRESSURE || item.kind() == Item::KIND_MEDICATIONS_HELD));
      if (!ok) {
        return Denied("PERMISSION_DENIED_ROLE", absl::StrCat("you may not provide ", Item::Kind_Name(item.kind())));
      }
    }
    return absl::OkStatus();
  };
  auto apply = [&](Change& c) -> absl::Status {
    RETURN_IF_ERROR(RequireState(c.record, {v1::SessionRecord::STATE_DRAFT}, "change the checklist"));
    if (!program && IsMedicine(c.record.kind())) {
      ASSIGN_OR_RETURN(program, scheduling_.GetProgram(c.record.program()));
    }
    for (Item item : r.items()) {
      item.set_confirmed_by(PersonName(c.p));
      *item.mutable_confirm_time() = ToProto(c.now);
      bool replaced = false;
      for (auto& existing : *c.record.mutable_checklist()->mutable_items()) {
        if (existing.kind() == item.kind()) {
          existing = item;
          replaced = true;
        }
      }
      if (!replaced) *c.record.mutable_checklist()->add_items() = item;
      if (item.kind() == Item::KIND_SITTER_PRESENT) c.record.set_sitter(item.sitter());
    }
    EvaluateChecklist(c.record, clinic.policy(), program ? &*program : nullptr);
    return absl::OkStatus();
  };
  ASSIGN_OR_RETURN(WrittenRecord written, Write(p, r.name(), "UpdateChecklist", r.request_id(), r.etag(), r, authorize, apply));
  const v1::SessionRecord& rec = written.record();
  v1::UpdateChecklistResponse out;
  *out.mutable_checklist() = rec.checklist();
  out.set_version(rec.version());
  out.set_etag(rec.etag());
  return out;
}

absl::StatusOr<WrittenRecord> RecordKeeper::OverrideChecklist(const P& p, const v1::OverrideChecklistRequest& r) {
  if (r.reason().empty() || r.reason().size() > 2000) return InvalidField("reason", "required, 1-2000 characters");
  return Write(
      p, r.name(), "OverrideChecklist", r.request_id(), r.etag(), r,
      [](const Relation& who) {
        if (who.clinician || who.service) return absl::OkStatus();
        return Denied("OVERRIDE_REQUIRES_CLINICIAN", "only a clinician on the care team may override the checklist");
      },
      [&](Change& c) -> absl::Status {
        RETURN_IF_ERROR(RequireState(c.record, {v1::SessionRecord::STATE_DRAFT}, "override the checklist"));
        auto* o = c.record.mutable_checklist()->mutable_override();
        o->set_clinician(PersonName(c.p));
        o->set_reason(r.reason());
        o->clear_failing_items();
        for (const auto& item : c.record.checklist().items()) {
          if (item.required() && item.status() != Item::STATUS_PASSED) o->add_failing_items(item.kind());
        }
        *o->mutable_override_time() = ToProto(c.now);
        c.reason = r.reason();
        return absl::OkStatus();
      });
}

absl::StatusOr<WrittenRecord> RecordKeeper::StartSession(const P& p, const v1::StartSessionRequest& r) {
  auto apply = [&](Change& c) -> absl::Status {
    RETURN_IF_ERROR(RequireState(c.record, {v1::SessionRecord::STATE_DRAFT}, "start the session"));
    if (!c.record.checklist().passed() && !c.record.checklist().has_override()) {
      std::vector<std::string> failing;
      for (const auto& item : c.record.checklist().items()) {
        if (item.required() && item.status() != Item::STATUS_PASSED) {
          failing.push_back(absl::StrCat(Item::Kind_Name(item.kind()), " (", Item::Status_Name(item.status()), ")"));
        }
      }
      return Rule("CHECKLIST_FAILED",
                  absl::StrCat("the safety checklist has not passed: ", absl::StrJoin(failing, ", "),
                               "; complete these items or have a clinician override with a reason"),
                  {{"failing_items", absl::StrJoin(failing, ",")}});
    }
    c.record.set_state(v1::SessionRecord::STATE_IN_PROGRESS);
    *c.record.mutable_start_time() = ToProto(c.now);
    auto& e = c.Event();
    auto* started = e.mutable_session_started();
    started->set_session_record(c.record.name());
    started->set_appointment(c.record.appointment());
    started->set_client(c.record.client());
    started->set_kind(c.record.kind());
    started->set_setting(c.record.setting());
    started->set_sitter(c.record.sitter());
    *started->mutable_start_time() = ToProto(c.now);
    return absl::OkStatus();
  };
  auto check_in = [&](const v1::SessionRecord& rec) -> absl::Status {
    ASSIGN_OR_RETURN(sv1::Appointment appt, scheduling_.GetAppointment(rec.appointment()));
    if (appt.state() == sv1::Appointment::STATE_CHECKED_IN) return absl::OkStatus();
    if (appt.state() != sv1::Appointment::STATE_BOOKED && appt.state() != sv1::Appointment::STATE_ARRIVED) {
      return Rule("INVALID_STATE", absl::StrCat("the appointment is ", sv1::Appointment::State_Name(appt.state())));
    }
    return scheduling_.SetAppointmentState(rec.appointment(), sv1::Appointment::STATE_CHECKED_IN,
                                           "records-checkin-" + r.request_id());
  };
  return Write(p, r.name(), "StartSession", r.request_id(), r.etag(), r, CareTeamOnly, apply, check_in);
}

// ---------------------------------------------------------------------------- dosing

absl::StatusOr<WrittenRecord> RecordKeeper::StartDoseAdministration(const P& p,
                                                                        const v1::StartDoseAdministrationRequest& r) {
  std::vector<FieldViolation> v;
  if (r.route() == cv1::DOSE_ROUTE_UNSPECIFIED) v.push_back({"route", "required"});
  if (!(r.dose_mg() > 0) || r.dose_mg() > 1000) v.push_back({"dose_mg", "required, > 0 and <= 1000"});
  if (r.rate_mg_per_hour() < 0) v.push_back({"rate_mg_per_hour", "must not be negative"});
  if (r.has_override() && r.override().reason().empty()) v.push_back({"override.reason", "required with an override"});
  if (!v.empty()) return InvalidFields(std::move(v));
  std::optional<sv1::Program> program;
  return Write(p, r.name(), "StartDoseAdministration", r.request_id(), r.etag(), r, CareTeamOnly,
               [&](Change& c) -> absl::Status {
    RETURN_IF_ERROR(RequireState(c.record, {v1::SessionRecord::STATE_IN_PROGRESS}, "administer a dose"));
    if (!IsMedicine(c.record.kind())) return Rule("INVALID_STATE", "doses are recorded only in medicine sessions");
    if (const auto* running = Running(c.record)) {
      return Rule("DOSE_STILL_ACTIVE", absl::StrCat("administration ", running->administration_id(),
                                                    " is still running; stop it first"));
    }
    if (!program) {
      ASSIGN_OR_RETURN(program, scheduling_.GetProgram(c.record.program()));
    }
    double total = r.dose_mg();
    for (const auto& d : c.record.dose_administrations()) total += d.dose_mg();
    std::string why;
    if (!program->has_dose_plan()) {
      why = "the program has no dose plan";
    } else {
      const auto& plan = program->dose_plan();
      if (r.route() != plan.route()) {
        why = absl::StrCat("route ", cv1::DoseRoute_Name(r.route()), " differs from the plan's ",
                           cv1::DoseRoute_Name(plan.route()));
      } else if (r.dose_mg() < plan.min_dose_mg() || r.dose_mg() > plan.max_dose_mg()) {
        why = absl::StrCat(r.dose_mg(), " mg is outside the plan's ", plan.min_dose_mg(), "-", plan.max_dose_mg(), " mg");
      } else if (total > plan.max_dose_mg()) {
        why = absl::StrCat("the session total would be ", total, " mg, above the plan's ", plan.max_dose_mg(), " mg");
      }
    }
    v1::DoseAdministration d;
    if (!why.empty()) {
      if (!r.has_override()) {
        return Rule("DOSE_OUTSIDE_PLAN", why + "; a clinician on the care team may override with a reason");
      }
      if (!c.who.clinician && !c.who.service) {
        return Denied("OVERRIDE_REQUIRES_CLINICIAN", "only a clinician on the care team may override the dose plan");
      }
      d.mutable_override()->set_reason(r.override().reason());
      d.mutable_override()->set_clinician(PersonName(c.p));
      *d.mutable_override()->mutable_override_time() = ToProto(c.now);
      c.reason = r.override().reason();
    }
    d.set_administration_id(api::NewId());
    d.set_route(r.route());
    d.set_dose_mg(r.dose_mg());
    d.set_administered_by(r.administered_by().empty() ? PersonName(c.p) : r.administered_by());
    *d.mutable_start_time() = ToProto(c.now);
    d.set_within_plan(why.empty());
    if (r.rate_mg_per_hour() > 0) {
      auto* seg = d.add_segments();
      seg->set_rate_mg_per_hour(r.rate_mg_per_hour());
      *seg->mutable_start_time() = ToProto(c.now);
      seg->set_set_by(PersonName(c.p));
    }
    *c.record.add_dose_administrations() = d;
    c.record.clear_earliest_complete_time();
    c.only_appended = true;
    return absl::OkStatus();
  });
}

namespace {
v1::DoseAdministration* FindAdministration(v1::SessionRecord& r, const std::string& id) {
  for (auto& d : *r.mutable_dose_administrations()) {
    if (d.administration_id() == id) return &d;
  }
  return nullptr;
}
}  // namespace

absl::StatusOr<WrittenRecord> RecordKeeper::ChangeDoseRate(const P& p, const v1::ChangeDoseRateRequest& r) {
  if (r.administration_id().empty()) return InvalidField("administration_id", "required");
  if (!(r.rate_mg_per_hour() > 0)) return InvalidField("rate_mg_per_hour", "required, > 0");
  return Write(p, r.name(), "ChangeDoseRate", r.request_id(), r.etag(), r, CareTeamOnly, [&](Change& c) -> absl::Status {
    RETURN_IF_ERROR(RequireState(c.record, {v1::SessionRecord::STATE_IN_PROGRESS}, "change a dose rate"));
    v1::DoseAdministration* d = FindAdministration(c.record, r.administration_id());
    if (!d) return NotFound("administration " + r.administration_id());
    if (d->has_stop_time()) return Rule("INVALID_STATE", "the administration has stopped");
    if (d->route() != cv1::DOSE_ROUTE_INTRAVENOUS) return Rule("INVALID_STATE", "only infusions have a rate");
    if (d->segments_size() > 0) *d->mutable_segments(d->segments_size() - 1)->mutable_end_time() = ToProto(c.now);
    auto* seg = d->add_segments();
    seg->set_rate_mg_per_hour(r.rate_mg_per_hour());
    *seg->mutable_start_time() = ToProto(c.now);
    seg->set_set_by(PersonName(c.p));
    return absl::OkStatus();
  });
}

absl::StatusOr<WrittenRecord> RecordKeeper::StopDoseAdministration(const P& p,
                                                                       const v1::StopDoseAdministrationRequest& r) {
  if (r.administration_id().empty()) return InvalidField("administration_id", "required");
  if (r.administered_dose_mg() < 0) return InvalidField("administered_dose_mg", "must not be negative");
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.name(), "clinics/*/sessionRecords/*", "name"));
  std::optional<sv1::Clinic> clinic;
  return Write(p, r.name(), "StopDoseAdministration", r.request_id(), r.etag(), r, CareTeamOnly,
               [&](Change& c) -> absl::Status {
    RETURN_IF_ERROR(RequireState(c.record, {v1::SessionRecord::STATE_IN_PROGRESS}, "stop a dose"));
    v1::DoseAdministration* d = FindAdministration(c.record, r.administration_id());
    if (!d) return NotFound("administration " + r.administration_id());
    if (d->has_stop_time()) return Rule("INVALID_STATE", "the administration has already stopped");
    if (r.administered_dose_mg() > d->dose_mg()) {
      return InvalidField("administered_dose_mg", "cannot exceed the dose started");
    }
    *d->mutable_stop_time() = ToProto(c.now);
    d->set_administered_dose_mg(r.administered_dose_mg() > 0 ? r.administered_dose_mg() : d->dose_mg());
    d->set_stop_note(r.note());
    if (d->segments_size() > 0) *d->mutable_segments(d->segments_size() - 1)->mutable_end_time() = ToProto(c.now);
    if (!clinic) {
      ASSIGN_OR_RETURN(clinic, scheduling_.GetClinic(ids[0]));
    }
    absl::Duration observe = FromProto(c.record.kind() == cv1::APPOINTMENT_KIND_MEDICINE_SELF_GUIDED
                                           ? clinic->policy().self_guided_observation_period()
                                           : clinic->policy().supervised_observation_period());
    *c.record.mutable_earliest_complete_time() = ToProto(c.now + observe);
    return absl::OkStatus();
  });
}

// ---------------------------------------------------------------------------- observations

absl::StatusOr<WrittenRecord> RecordKeeper::RecordVitals(const P& p, const v1::RecordVitalsRequest& r) {
  const auto& vs = r.vitals();
  std::vector<FieldViolation> v;
  if (vs.systolic_mmhg() != 0 && (vs.systolic_mmhg() < 40 || vs.systolic_mmhg() > 300)) v.push_back({"vitals.systolic_mmhg", "40-300"});
  if (vs.diastolic_mmhg() != 0 && (vs.diastolic_mmhg() < 20 || vs.diastolic_mmhg() > 200)) v.push_back({"vitals.diastolic_mmhg", "20-200"});
  if (vs.heart_rate_bpm() != 0 && (vs.heart_rate_bpm() < 20 || vs.heart_rate_bpm() > 250)) v.push_back({"vitals.heart_rate_bpm", "20-250"});
  if (vs.spo2_percent() != 0 && (vs.spo2_percent() < 50 || vs.spo2_percent() > 100)) v.push_back({"vitals.spo2_percent", "50-100"});
  if (vs.systolic_mmhg() == 0 && vs.diastolic_mmhg() == 0 && vs.heart_rate_bpm() == 0 && vs.spo2_percent() == 0) {
    v.push_back({"vitals", "at least one measurement"});
  }
  if (!v.empty()) return InvalidFields(std::move(v));
  return Write(p, r.name(), "RecordVitals", r.request_id(), "", r, CareTeamOnly, [&](Change& c) -> absl::Status {
    RETURN_IF_ERROR(RequireState(c.record, {v1::SessionRecord::STATE_DRAFT, v1::SessionRecord::STATE_IN_PROGRESS,
                                            v1::SessionRecord::STATE_COMPLETED}, "record vitals"));
    v1::VitalSigns rec = vs;
    if (!rec.has_measure_time()) *rec.mutable_measure_time() = ToProto(c.now);
    rec.set_recorded_by(PersonName(c.p));
    *c.record.add_vitals() = rec;
    c.only_appended = true;
    return absl::OkStatus();
  });
}

absl::StatusOr<WrittenRecord> RecordKeeper::AddTimelineEntry(const P& p, const v1::AddTimelineEntryRequest& r) {
  if (r.entry().kind() == v1::TimelineEntry::KIND_UNSPECIFIED || r.entry().kind() == v1::TimelineEntry::KIND_ADDENDUM) {
    return InvalidField("entry.kind", "check-in, observation, client statement or intervention (addenda: AmendSessionRecord)");
  }
  if (r.entry().text().empty() || r.entry().text().size() > 4000) return InvalidField("entry.text", "required, 1-4000 characters");
  return Write(p, r.name(), "AddTimelineEntry", r.request_id(), "", r, CareTeamOnly, [&](Change& c) -> absl::Status {
    RETURN_IF_ERROR(RequireState(c.record, {v1::SessionRecord::STATE_DRAFT, v1::SessionRecord::STATE_IN_PROGRESS,
                                            v1::SessionRecord::STATE_COMPLETED}, "add to the timeline"));
    v1::TimelineEntry e = r.entry();
    e.set_entry_id(api::NewId());
    if (!e.has_occur_time()) *e.mutable_occur_time() = ToProto(c.now);
    e.set_author(PersonName(c.p));
    *e.mutable_create_time() = ToProto(c.now);
    *c.record.add_timeline() = e;
    c.only_appended = true;
    return absl::OkStatus();
  });
}

absl::StatusOr<WrittenRecord> RecordKeeper::ReportAdverseEvent(const P& p, const v1::ReportAdverseEventRequest& r) {
  if (r.adverse_event().severity() == v1::AdverseEvent::SEVERITY_UNSPECIFIED) {
    return InvalidField("adverse_event.severity", "required");
  }
  if (r.adverse_event().description().empty() || r.adverse_event().description().size() > 4000) {
    return InvalidField("adverse_event.description", "required, 1-4000 characters");
  }
  return Write(p, r.name(), "ReportAdverseEvent", r.request_id(), "", r, CareTeamOnly, [&](Change& c) -> absl::Status {
    RETURN_IF_ERROR(RequireState(c.record, {v1::SessionRecord::STATE_IN_PROGRESS, v1::SessionRecord::STATE_COMPLETED},
                                 "report an adverse event"));
    v1::AdverseEvent ae = r.adverse_event();
    ae.set_adverse_event_id(api::NewId());
    if (!ae.has_occur_time()) *ae.mutable_occur_time() = ToProto(c.now);
    ae.set_reporter(PersonName(c.p));
    *ae.mutable_create_time() = ToProto(c.now);
    *c.record.add_adverse_events() = ae;
    c.only_appended = true;
    auto* reported = c.Event().mutable_adverse_event_reported();
    reported->set_session_record(c.record.name());
    reported->set_appointment(c.record.appointment());
    reported->set_client(c.record.client());
    *reported->mutable_adverse_event() = ae;
    return absl::OkStatus();
  });
}

absl::StatusOr<WrittenRecord> RecordKeeper::CompleteSession(const P& p, const v1::CompleteSessionRequest& r) {
  auto apply = [&](Change& c) -> absl::Status {
    RETURN_IF_ERROR(RequireState(c.record, {v1::SessionRecord::STATE_IN_PROGRESS}, "complete the session"));
    if (const auto* running = Running(c.record)) {
      return Rule("DOSE_STILL_ACTIVE", absl::StrCat("administration ", running->administration_id(),
                                                    " is still running; stop it first"));
    }
    if (IsMedicine(c.record.kind()) && c.record.has_earliest_complete_time() &&
        c.now < FromProto(c.record.earliest_complete_time())) {
      std::string when = absl::FormatTime(absl::RFC3339_sec, FromProto(c.record.earliest_complete_time()), absl::UTCTimeZone());
      return Rule("OBSERVATION_PERIOD_NOT_ELAPSED",
                  absl::StrCat("the client must stay under observation until ", when, " (after the last dose)"),
                  {{"earliest_complete_time", when}});
    }
    c.record.set_state(v1::SessionRecord::STATE_COMPLETED);
    *c.record.mutable_complete_time() = ToProto(c.now);
    auto* done = c.Event().mutable_session_completed();
    done->set_session_record(c.record.name());
    done->set_appointment(c.record.appointment());
    done->set_client(c.record.client());
    done->set_kind(c.record.kind());
    *done->mutable_complete_time() = ToProto(c.now);
    return absl::OkStatus();
  };
  auto fulfil = [&](const v1::SessionRecord& rec) {
    return scheduling_.SetAppointmentState(rec.appointment(), sv1::Appointment::STATE_FULFILLED,
                                           "records-fulfil-" + r.request_id());
  };
  return Write(p, r.name(), "CompleteSession", r.request_id(), r.etag(), r, CareTeamOnly, apply, fulfil);
}

// ---------------------------------------------------------------------------- notes, signing

absl::StatusOr<WrittenRecord> RecordKeeper::UpdateNote(const P& p, const v1::UpdateNoteRequest& r) {
  if (r.note().kind() == v1::Note::KIND_UNSPECIFIED) return InvalidField("note.kind", "required: SESSION or INTEGRATION");
  if (r.note().text().size() > 20000) return InvalidField("note.text", "at most 20000 characters");
  return Write(p, r.name(), "UpdateNote", r.request_id(), r.etag(), r, CareTeamOnly, [&](Change& c) -> absl::Status {
    RETURN_IF_ERROR(RequireState(c.record, {v1::SessionRecord::STATE_DRAFT, v1::SessionRecord::STATE_IN_PROGRESS,
                                            v1::SessionRecord::STATE_COMPLETED}, "edit the note"));
    auto* note = c.record.mutable_note();
    note->set_kind(r.note().kind());
    note->set_text(r.note().text());
    note->set_author(PersonName(c.p));
    *note->mutable_update_time() = ToProto(c.now);
    c.only_appended = true;  // no list changes at all
    return absl::OkStatus();
  });
}

absl::StatusOr<WrittenRecord> RecordKeeper::SignSessionRecord(const P& p, const v1::SignSessionRecordRequest& r) {
  return Write(p, r.name(), "SignSessionRecord", r.request_id(), r.etag(), r,
               [](const Relation& who) {
                 if (who.care_team) return absl::OkStatus();
                 return Denied("NOT_ON_CARE_TEAM", "only a therapist or clinician on the care team signs");
               },
               [&](Change& c) -> absl::Status {
    RETURN_IF_ERROR(RequireState(c.record, {v1::SessionRecord::STATE_COMPLETED}, "sign"));
    if (c.record.note().text().empty()) return Rule("NOTE_REQUIRED", "write the session note before signing");
    c.record.set_state(v1::SessionRecord::STATE_SIGNED);
    auto* sig = c.record.mutable_signature();
    sig->set_signer(PersonName(c.p));
    *sig->mutable_sign_time() = ToProto(c.now);
    sig->set_version(c.record.version() + 1);
    auto* signed_event = c.Event().mutable_session_signed();
    signed_event->set_session_record(c.record.name());
    signed_event->set_appointment(c.record.appointment());
    signed_event->set_client(c.record.client());
    signed_event->set_signer(PersonName(c.p));
    signed_event->set_version(c.record.version() + 1);
    *signed_event->mutable_sign_time() = ToProto(c.now);
    return absl::OkStatus();
  });
}

absl::StatusOr<WrittenRecord> RecordKeeper::AmendSessionRecord(const P& p, const v1::AmendSessionRecordRequest& r) {
  if (r.reason().empty() || r.reason().size() > 2000) return InvalidField("reason", "required, 1-2000 characters");
  if (!r.has_note() && r.addendum().empty()) return InvalidField("note", "give a new note, an addendum, or both");
  if (r.addendum().size() > 4000) return InvalidField("addendum", "at most 4000 characters");
  return Write(p, r.name(), "AmendSessionRecord", r.request_id(), r.etag(), r, CareTeamOnly, [&](Change& c) -> absl::Status {
    if (c.record.state() != v1::SessionRecord::STATE_SIGNED) {
      return Rule("INVALID_STATE", "only signed records are amended; edit the record directly until it is signed");
    }
    if (r.has_note()) {
      auto* note = c.record.mutable_note();
      if (r.note().kind() != v1::Note::KIND_UNSPECIFIED) note->set_kind(r.note().kind());
      note->set_text(r.note().text());
      note->set_author(PersonName(c.p));
      *note->mutable_update_time() = ToProto(c.now);
    }
    if (!r.addendum().empty()) {
      auto* e = c.record.add_timeline();
      e->set_entry_id(api::NewId());
      e->set_kind(v1::TimelineEntry::KIND_ADDENDUM);
      e->set_text(r.addendum());
      *e->mutable_occur_time() = *e->mutable_create_time() = ToProto(c.now);
      e->set_author(PersonName(c.p));
    }
    c.reason = r.reason();
    return absl::OkStatus();
  });
}

// ---------------------------------------------------------------------------- journal

absl::StatusOr<v1::JournalEntry> RecordKeeper::CreateJournalEntry(const P& p, const v1::CreateJournalEntryRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.parent(), "clinics/*", "parent"));
  RETURN_IF_ERROR(auth::RequireClinic(p, ids[0]));
  if (p.role != auth::Role::kClient) return Denied("PERMISSION_DENIED_ROLE", "journals are written by clients");
  const auto& e = r.journal_entry();
  if (e.text().empty() || e.text().size() > 20000) return InvalidField("journal_entry.text", "required, 1-20000 characters");
  if (e.visibility() == v1::JournalEntry::VISIBILITY_UNSPECIFIED) {
    return InvalidField("journal_entry.visibility", "required: PRIVATE or SHARED_WITH_CARE_TEAM");
  }
  if (!e.client().empty() && e.client() != PersonName(p)) {
    return Denied("PERMISSION_DENIED_NOT_SELF", "clients write only their own journal");
  }
  if (!e.integration_appointment().empty()) {
    ASSIGN_OR_RETURN(sv1::Appointment appt, scheduling_.GetAppointment(e.integration_appointment()));
    if (appt.client() != PersonName(p) || appt.kind() != cv1::APPOINTMENT_KIND_INTEGRATION) {
      return InvalidField("journal_entry.integration_appointment", "must be one of your integration sessions");
    }
  }
  return api::RunIdempotent<v1::JournalEntry>(
      db_, clock_, p.subject, "CreateJournalEntry", r.request_id(), r, [&](db::Tx& tx) -> absl::StatusOr<v1::JournalEntry> {
        std::string id = api::NewId();
        v1::JournalEntry out = e;
        out.set_name(absl::StrCat(r.parent(), "/journalEntries/", id));
        out.set_client(PersonName(p));
        *out.mutable_create_time() = ToProto(clock_.Now());
        RETURN_IF_ERROR(store::InsertJournal(tx, ids[0], id, PersonId(p), out));
        RETURN_IF_ERROR(AppendAudit(tx, ids[0], AuditOf(p, out.client(), out.name(), "CreateJournalEntry", FromProto(out.create_time()), absl::OkStatus(), r.request_id())));
        return out;
      });
}

absl::StatusOr<v1::ListJournalEntriesResponse> RecordKeeper::ListJournalEntries(const P& p,
                                                                                const v1::ListJournalEntriesRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.parent(), "clinics/*", "parent"));
  RETURN_IF_ERROR(auth::RequireClinic(p, ids[0]));
  std::string client = r.client().empty() ? (p.role == auth::Role::kClient ? PersonId(p) : "") : IdOf(r.client());
  if (client.empty()) return InvalidField("client", "required for care-team callers");
  ASSIGN_OR_RETURN(Relation who, Relate(p, ids[0], client, nullptr));
  if (!who.client_self && !who.care_team && !who.service) {
    absl::Status s = Denied(p.role == auth::Role::kClient ? "PERMISSION_DENIED_NOT_SELF" : "NOT_ON_CARE_TEAM",
                            "only the client and their care team read the journal");
    Audit(p, ids[0], client, r.parent(), "ListJournalEntries", s).IgnoreError();
    return s;
  }
  ASSIGN_OR_RETURN(int size, api::PageSize(r.page_size(), 50, 500));
  ASSIGN_OR_RETURN(int64_t offset, api::ParsePageToken(r.page_token(), r));
  v1::ListJournalEntriesResponse out;
  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    ASSIGN_OR_RETURN(auto list, store::ListJournal(tx, ids[0], client, /*shared_only=*/!who.client_self, offset, size + 1));
    for (size_t i = 0; i < list.size() && i < static_cast<size_t>(size); ++i) *out.add_journal_entries() = list[i];
    if (list.size() > static_cast<size_t>(size)) out.set_next_page_token(api::MakePageToken(offset + size, r));
    return AppendAudit(tx, ids[0], AuditOf(p, "people/" + client, r.parent() + "/journalEntries", "ListJournalEntries", clock_.Now()));
  }, db::TxMode::kReadWrite, 5));
  return out;
}

// ---------------------------------------------------------------------------- audit, export

absl::StatusOr<v1::ListAuditEntriesResponse> RecordKeeper::ListAuditEntries(const P& p, const v1::ListAuditEntriesRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.parent(), "clinics/*", "parent"));
  RETURN_IF_ERROR(auth::RequireClinic(p, ids[0]));
  if (p.role != auth::Role::kAdmin && p.role != auth::Role::kService) {
    return Denied("PERMISSION_DENIED_ROLE", "only clinic admins read the audit log");
  }
  ASSIGN_OR_RETURN(int size, api::PageSize(r.page_size(), 100, 1000));
  ASSIGN_OR_RETURN(int64_t offset, api::ParsePageToken(r.page_token(), r));
  AuditFilter f{r.actor(), r.on_behalf_of(), r.resource_prefix(), std::nullopt, std::nullopt, offset, size + 1};
  if (r.time_range().has_start_time()) f.from = FromProto(r.time_range().start_time());
  if (r.time_range().has_end_time()) f.to = FromProto(r.time_range().end_time());
  // Entries still pending (appended by calls that committed, not yet chained) first, so the
  // log shows every audited call that committed before this one.
  RETURN_IF_ERROR(ChainAllPendingAudit(db_, ids[0]));
  v1::ListAuditEntriesResponse out;
  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    ASSIGN_OR_RETURN(auto list, ListAudit(tx, ids[0], f));
    for (size_t i = 0; i < list.size() && i < static_cast<size_t>(size); ++i) *out.add_audit_entries() = list[i];
    if (list.size() > static_cast<size_t>(size)) out.set_next_page_token(api::MakePageToken(offset + size, r));
    return absl::OkStatus();
  }, db::TxMode::kReadOnly));
  return out;
}

absl::StatusOr<v1::VerifyAuditChainResponse> RecordKeeper::VerifyAuditChain(const P& p, const v1::VerifyAuditChainRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.parent(), "clinics/*", "parent"));
  RETURN_IF_ERROR(auth::RequireClinic(p, ids[0]));
  if (p.role != auth::Role::kAdmin && p.role != auth::Role::kService) {
    return Denied("PERMISSION_DENIED_ROLE", "only clinic admins verify the audit log");
  }
  RETURN_IF_ERROR(ChainAllPendingAudit(db_, ids[0]));  // verify every entry committed so far
  v1::VerifyAuditChainResponse out;
  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    ASSIGN_OR_RETURN(out, VerifyAudit(tx, ids[0]));
    return absl::OkStatus();
  }, db::TxMode::kReadOnly));
  return out;
}

absl::StatusOr<v1::ExportFhirBundleResponse> RecordKeeper::ExportFhirBundle(const P& p, const v1::ExportFhirBundleRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.parent(), "clinics/*", "parent"));
  RETURN_IF_ERROR(auth::RequireClinic(p, ids[0]));
  ASSIGN_OR_RETURN(auto client, api::ParseName(r.client(), "people/*", "client"));
  ASSIGN_OR_RETURN(Relation who, Relate(p, ids[0], client[0], nullptr));
  if (!who.care_team && !who.client_self && !who.partner && !who.service) {
    absl::Status s = Denied("PERMISSION_DENIED_ROLE", "the care team, the client or a partner of the clinic exports");
    Audit(p, ids[0], client[0], r.parent(), "ExportFhirBundle", s).IgnoreError();
    return s;
  }
  std::vector<v1::SessionRecord> records;
  std::map<std::string, std::vector<v1::SessionRecordVersion>> versions;
  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    ASSIGN_OR_RETURN(records, store::ListRecords(tx, ids[0], {client[0]}, {v1::SessionRecord::STATE_SIGNED}, 0, 1000));
    if (r.time_range().has_start_time() || r.time_range().has_end_time()) {
      absl::Time from = r.time_range().has_start_time() ? FromProto(r.time_range().start_time()) : absl::InfinitePast();
      absl::Time to = r.time_range().has_end_time() ? FromProto(r.time_range().end_time()) : absl::InfiniteFuture();
      records.erase(std::remove_if(records.begin(), records.end(), [&](const v1::SessionRecord& rec) {
                      absl::Time t = FromProto(rec.start_time());
                      return t < from || t >= to;
                    }), records.end());
    }
    for (const auto& rec : records) {
      ASSIGN_OR_RETURN(versions[rec.name()], store::ListVersions(tx, ids[0], IdOf(rec.name()), 0, 10000));
    }
    return AppendAudit(tx, ids[0], AuditOf(p, r.client(), r.parent(), "ExportFhirBundle", clock_.Now()));
  }, db::TxMode::kReadWrite, 5));
  v1::ExportFhirBundleResponse out;
  out.set_content_type("application/fhir+json");
  ASSIGN_OR_RETURN(std::string json, FhirBundleJson(client[0], records, versions, clock_.Now()));
  out.set_bundle_json(std::move(json));
  out.set_record_count(static_cast<int32_t>(records.size()));
  return out;
}

}  // namespace continuum::records
