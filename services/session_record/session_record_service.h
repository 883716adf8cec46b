// gRPC adapter of the session-record service: authenticates, runs the RecordKeeper on the
// executor and maps its status. No business rules here.
#pragma once

#include <vector>

#include "common/auth/grpc_auth.h"
#include "common/db/migrations.h"
#include "common/server/executor.h"
#include "common/server/handler.h"
#include "continuum/records/v1/session_record_service.grpc.pb.h"
#include "services/session_record/record_keeper.h"

namespace continuum::session_record {

// Schema migrations (generated from migrations/*.sql).
const std::vector<db::Migration>& Migrations();

inline constexpr char kHealthName[] = "continuum.records.v1.SessionRecordService";

namespace v1 = ::continuum::records::v1;

class SessionRecordServiceImpl final : public v1::SessionRecordService::CallbackService {
 public:
  SessionRecordServiceImpl(records::RecordKeeper& keeper, const auth::Authenticator& authenticator,
                           BoundedExecutor& executor)
      : domain_(keeper), authenticator_(authenticator), executor_(executor) {}

  CONTINUUM_UNARY(CreateSessionRecord, v1::CreateSessionRecordRequest, v1::SessionRecord)
  CONTINUUM_UNARY(GetSessionRecord, v1::GetSessionRecordRequest, v1::SessionRecord)
  CONTINUUM_UNARY(ListSessionRecords, v1::ListSessionRecordsRequest, v1::ListSessionRecordsResponse)
  CONTINUUM_UNARY(ListSessionRecordVersions, v1::ListSessionRecordVersionsRequest,
                  v1::ListSessionRecordVersionsResponse)
  CONTINUUM_UNARY(UpdateChecklist, v1::UpdateChecklistRequest, v1::UpdateChecklistResponse)
  CONTINUUM_UNARY(OverrideChecklist, v1::OverrideChecklistRequest, v1::SessionRecord)
  CONTINUUM_UNARY(StartSession, v1::StartSessionRequest, v1::SessionRecord)
  CONTINUUM_UNARY(StartDoseAdministration, v1::StartDoseAdministrationRequest, v1::SessionRecord)
  CONTINUUM_UNARY(ChangeDoseRate, v1::ChangeDoseRateRequest, v1::SessionRecord)
  CONTINUUM_UNARY(StopDoseAdministration, v1::StopDoseAdministrationRequest, v1::SessionRecord)
  CONTINUUM_UNARY(RecordVitals, v1::RecordVitalsRequest, v1::SessionRecord)
  CONTINUUM_UNARY(AddTimelineEntry, v1::AddTimelineEntryRequest, v1::SessionRecord)
  CONTINUUM_UNARY(ReportAdverseEvent, v1::ReportAdverseEventRequest, v1::SessionRecord)
  CONTINUUM_UNARY(CompleteSession, v1::CompleteSessionRequest, v1::SessionRecord)
  CONTINUUM_UNARY(UpdateNote, v1::UpdateNoteRequest, v1::SessionRecord)
  CONTINUUM_UNARY(SignSessionRecord, v1::SignSessionRecordRequest, v1::SessionRecord)
  CONTINUUM_UNARY(AmendSessionRecord, v1::AmendSessionRecordRequest, v1::SessionRecord)
  CONTINUUM_UNARY(CreateJournalEntry, v1::CreateJournalEntryRequest, v1::JournalEntry)
  CONTINUUM_UNARY(ListJournalEntries, v1::ListJournalEntriesRequest, v1::ListJournalEntriesResponse)
  CONTINUUM_UNARY(ListAuditEntries, v1::ListAuditEntriesRequest, v1::ListAuditEntriesResponse)
  CONTINUUM_UNARY(VerifyAuditChain, v1::VerifyAuditChainRequest, v1::VerifyAuditChainResponse)
  CONTINUUM_UNARY(ExportFhirBundle, v1::ExportFhirBundleRequest, v1::ExportFhirBundleResponse)

 private:
  records::RecordKeeper& domain_;
  const auth::Authenticator& authenticator_;
  BoundedExecutor& executor_;
};

}  // namespace continuum::session_record
