// The session-record domain: records tied to appointments, the safety gate, dosing against
// the dose plan, observations, the observation period, notes, sign-and-lock, amendments,
// journals, the audit log and the FHIR export. Every write is a new version (nothing is
// overwritten), idempotent on request_id, and committed together with its audit entry and
// outbox events. Every read of clinical data is audited too, including denied attempts.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/auth/principal.h"
#include "common/db/database.h"
#include "common/time/clock.h"
#include "continuum/events/v1/events.pb.h"
#include "continuum/records/v1/session_record_service.pb.h"
#include "services/scheduling/client/scheduling_client.h"
#include "services/session_record/store/record_store.h"

namespace continuum::records {

namespace cv1 = ::continuum::common::v1;
using scheduling::SchedulingClient;

// A committed version as a write produced it: the record and its bytes as stored, which are
// also the bytes of a SessionRecord response. Both are shared (with the replica's cache of
// latest versions), so answering a write copies neither the record nor serializes it again.
class WrittenRecord {
 public:
  WrittenRecord(std::shared_ptr<const v1::SessionRecord> record, std::shared_ptr<const std::string> bytes)
      : record_(std::move(record)), bytes_(std::move(bytes)) {}
  explicit WrittenRecord(v1::SessionRecord record);  // serializes it
  const v1::SessionRecord& record() const { return *record_; }
  const std::string& bytes() const { return *bytes_; }
  // The response as a client reads it, parsed from bytes() (which are not always built by
  // serializing record(): see store::BytesOf), for callers that keep the record: the tests, so
  // that each of them checks what the wire carries. Every adapter sends bytes() as they are.
  operator v1::SessionRecord() const;  // NOLINT(google-explicit-constructor)

 private:
  std::shared_ptr<const v1::SessionRecord> record_;
  std::shared_ptr<const std::string> bytes_;
};

class RecordKeeper {
 public:
  struct Options {
    std::function<void()> on_commit;  // after a write that put events in the outbox: wake the relay
  };
  RecordKeeper(db::Database& db, Clock& clock, SchedulingClient& scheduling, Options options = {});

  using P = auth::Principal;
  absl::StatusOr<v1::SessionRecord> CreateSessionRecord(const P& p, const v1::CreateSessionRecordRequest& r);
  absl::StatusOr<v1::SessionRecord> GetSessionRecord(const P& p, const v1::GetSessionRecordRequest& r);
  absl::StatusOr<v1::ListSessionRecordsResponse> ListSessionRecords(const P& p, const v1::ListSessionRecordsRequest& r);
  absl::StatusOr<v1::ListSessionRecordVersionsResponse> ListSessionRecordVersions(
      const P& p, const v1::ListSessionRecordVersionsRequest& r);
  absl::StatusOr<v1::UpdateChecklistResponse> UpdateChecklist(const P& p, const v1::UpdateChecklistRequest& r);
  absl::StatusOr<WrittenRecord> OverrideChecklist(const P& p, const v1::OverrideChecklistRequest& r);
  absl::StatusOr<WrittenRecord> StartSession(const P& p, const v1::StartSessionRequest& r);
  absl::StatusOr<WrittenRecord> StartDoseAdministration(const P& p, const v1::StartDoseAdministrationRequest& r);
  absl::StatusOr<WrittenRecord> ChangeDoseRate(const P& p, const v1::ChangeDoseRateRequest& r);
  absl::StatusOr<WrittenRecord> StopDoseAdministration(const P& p, const v1::StopDoseAdministrationRequest& r);
  absl::StatusOr<WrittenRecord> RecordVitals(const P& p, const v1::RecordVitalsRequest& r);
  absl::StatusOr<WrittenRecord> AddTimelineEntry(const P& p, const v1::AddTimelineEntryRequest& r);
  absl::StatusOr<WrittenRecord> ReportAdverseEvent(const P& p, const v1::ReportAdverseEventRequest& r);
  absl::StatusOr<WrittenRecord> CompleteSession(const P& p, const v1::CompleteSessionRequest& r);
  absl::StatusOr<WrittenRecord> UpdateNote(const P& p, const v1::UpdateNoteRequest& r);
  absl::StatusOr<WrittenRecord> SignSessionRecord(const P& p, const v1::SignSessionRecordRequest& r);
  absl::StatusOr<WrittenRecord> AmendSessionRecord(const P& p, const v1::AmendSessionRecordRequest& r);
  absl::StatusOr<v1::JournalEntry> CreateJournalEntry(const P& p, const v1::CreateJournalEntryRequest& r);
  absl::StatusOr<v1::ListJournalEntriesResponse> ListJournalEntries(const P& p, const v1::ListJournalEntriesRequest& r);
  absl::StatusOr<v1::ListAuditEntriesResponse> ListAuditEntries(const P& p, const v1::ListAuditEntriesRequest& r);
  absl::StatusOr<v1::VerifyAuditChainResponse> VerifyAuditChain(const P& p, const v1::VerifyAuditChainRequest& r);
  absl::StatusOr<v1::ExportFhirBundleResponse> ExportFhirBundle(const P& p, const v1::ExportFhirBundleRequest& r);

  // Who the caller is with respect to one client's data.
  struct Relation {
    bool service = false;      // internal service principal
    bool care_team = false;    // therapist / clinician on the client's care team
    bool clinician = false;    // ... and a clinician
    bool client_self = false;  // the client
    bool sitter = false;       // the sitter named on this record's checklist
    bool partner = false;      // a partner of the clinic
    bool admin = false;        // an admin of the clinic
  };

 private:
  struct Change;  // what a write does to a record
  absl::StatusOr<Relation> Relate(const P& p, const std::string& clinic_id, const std::string& client_id,
                                  const v1::SessionRecord* record);
  // The write pipeline shared by every record mutation.
  absl::StatusOr<WrittenRecord> Write(const P& p, const std::string& name, const char* action,
                                          const std::string& request_id, const std::string& etag,
                                          const google::protobuf::Message& request,
                                          const std::function<absl::Status(const Relation&)>& authorize,
                                          const std::function<absl::Status(Change&)>& apply,
                                          const std::function<absl::Status(const v1::SessionRecord&)>& side_effect = {});
  absl::Status Audit(const P& p, const std::string& clinic_id, const std::string& client_id,
                     const std::string& resource, const char* action, const absl::Status& outcome,
                     const std::string& request_id = "", const std::string& reason = "");

  db::Database& db_;
  Clock& clock_;
  SchedulingClient& scheduling_;
  Options options_;
  store::LatestRecords latest_;
};

// The required checklist items for a session and their evaluation against the clinic
// policy and the dose plan (exposed for tests).
void EvaluateChecklist(v1::SessionRecord& record, const continuum::scheduling::v1::ClinicPolicy& policy,
                       const continuum::scheduling::v1::Program* program);

}  // namespace continuum::records
