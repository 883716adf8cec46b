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

// The record writes answer with the new version's stored bytes (see
// CONTINUUM_UNARY_PRESERIALIZED): their methods are marked raw.
using SessionRecordServiceBase = v1::SessionRecordService::WithRawCallbackMethod_OverrideChecklist<
    v1::SessionRecordService::WithRawCallbackMethod_StartSession<
    v1::SessionRecordService::WithRawCallbackMethod_StartDoseAdministration<
    v1::SessionRecordService::WithRawCallbackMethod_ChangeDoseRate<
    v1::SessionRecordService::WithRawCallbackMethod_StopDoseAdministration<
    v1::SessionRecordService::WithRawCallbackMethod_RecordVitals<
    v1::SessionRecordService::WithRawCallbackMethod_AddTimelineEntry<
    v1::SessionRecordService::WithRawCallbackMethod_ReportAdverseEvent<
    v1::SessionRecordService::WithRawCallbackMethod_CompleteSession<
    v1::SessionRecordService::WithRawCallbackMethod_UpdateNote<
    v1::SessionRecordService::WithRawCallbackMethod_SignSessionRecord<
    v1::SessionRecordService::WithRawCallbackMethod_AmendSessionRecord<
    v1::SessionRecordService::CallbackService>>>>>>>>>>>>;

class SessionRecordServiceImpl final : public SessionRecordServiceBase {
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
  CONTINUUM_UNARY_PRESERIALIZED(OverrideChecklist, v1::OverrideChecklistRequest)
  CONTINUUM_UNARY_PRESERIALIZED(StartSession, v1::StartSessionRequest)
  CONTINUUM_UNARY_PRESERIALIZED(StartDoseAdministration, v1::StartDoseAdministrationRequest)
  CONTINUUM_UNARY_PRESERIALIZED(ChangeDoseRate, v1::ChangeDoseRateRequest)
  CONTINUUM_UNARY_PRESERIALIZED(StopDoseAdministration, v1::StopDoseAdministrationRequest)
  CONTINUUM_UNARY_PRESERIALIZED(RecordVitals, v1::RecordVitalsRequest)
  CONTINUUM_UNARY_PRESERIALIZED(AddTimelineEntry, v1::AddTimelineEntryRequest)
  CONTINUUM_UNARY_PRESERIALIZED(ReportAdverseEvent, v1::ReportAdverseEventRequest)
  CONTINUUM_UNARY_PRESERIALIZED(CompleteSession, v1::CompleteSessionRequest)
  CONTINUUM_UNARY_PRESERIALIZED(UpdateNote, v1::UpdateNoteRequest)
  CONTINUUM_UNARY_PRESERIALIZED(SignSessionRecord, v1::SignSessionRecordRequest)
  CONTINUUM_UNARY_PRESERIALIZED(AmendSessionRecord, v1::AmendSessionRecordRequest)
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
