// gRPC adapter of the scheduling service: authenticates, runs the Scheduler on the executor
// and maps its status. No business rules here.
#pragma once

#include <vector>

#include "common/auth/grpc_auth.h"
#include "common/db/migrations.h"
#include "common/server/executor.h"
#include "common/server/handler.h"
#include "continuum/scheduling/v1/scheduling_service.grpc.pb.h"
#include "services/scheduling/scheduler.h"

namespace continuum::scheduling {

// Schema migrations (generated from migrations/*.sql).
const std::vector<db::Migration>& Migrations();

inline constexpr char kHealthName[] = "continuum.scheduling.v1.SchedulingService";

class SchedulingServiceImpl final : public v1::SchedulingService::CallbackService {
 public:
  SchedulingServiceImpl(Scheduler& scheduler, const auth::Authenticator& authenticator, BoundedExecutor& executor)
      : domain_(scheduler), authenticator_(authenticator), executor_(executor) {}

  CONTINUUM_UNARY(CreateClinic, v1::CreateClinicRequest, v1::Clinic)
  CONTINUUM_UNARY(GetClinic, v1::GetClinicRequest, v1::Clinic)
  CONTINUUM_UNARY(ListClinics, v1::ListClinicsRequest, v1::ListClinicsResponse)
  CONTINUUM_UNARY(UpdateClinic, v1::UpdateClinicRequest, v1::Clinic)
  CONTINUUM_UNARY(CreatePerson, v1::CreatePersonRequest, v1::Person)
  CONTINUUM_UNARY(GetPerson, v1::GetPersonRequest, v1::Person)
  CONTINUUM_UNARY(ListPeople, v1::ListPeopleRequest, v1::ListPeopleResponse)
  CONTINUUM_UNARY(UpdatePerson, v1::UpdatePersonRequest, v1::Person)
  CONTINUUM_UNARY(GetCareTeam, v1::GetCareTeamRequest, v1::CareTeam)
  CONTINUUM_UNARY(ListCareTeams, v1::ListCareTeamsRequest, v1::ListCareTeamsResponse)
  CONTINUUM_UNARY(UpdateCareTeam, v1::UpdateCareTeamRequest, v1::CareTeam)
  CONTINUUM_UNARY(CreateProgram, v1::CreateProgramRequest, v1::Program)
  CONTINUUM_UNARY(GetProgram, v1::GetProgramRequest, v1::Program)
  CONTINUUM_UNARY(ListPrograms, v1::ListProgramsRequest, v1::ListProgramsResponse)
  CONTINUUM_UNARY(UpdateProgram, v1::UpdateProgramRequest, v1::Program)
  CONTINUUM_UNARY(SetDosePlan, v1::SetDosePlanRequest, v1::Program)
  CONTINUUM_UNARY(GetAvailability, v1::GetAvailabilityRequest, v1::Availability)
  CONTINUUM_UNARY(UpdateAvailability, v1::UpdateAvailabilityRequest, v1::Availability)
  CONTINUUM_UNARY(SearchSlots, v1::SearchSlotsRequest, v1::SearchSlotsResponse)
  CONTINUUM_UNARY(BookAppointment, v1::BookAppointmentRequest, v1::BookAppointmentResponse)
  // Answered on the gRPC thread when the appointment is cached and the token alone decides
  // access (no blocking there: a token check and a map lookup); otherwise like every other
  // call, on the executor. Both answer the same (appointment_cache.h).
  grpc::ServerUnaryReactor* GetAppointment(grpc::CallbackServerContext* context,
                                           const v1::GetAppointmentRequest* request,
                                           v1::Appointment* response) override {
    if (auto principal = authenticator_.Authenticate(*context); principal.ok()) {
      if (std::optional<v1::Appointment> cached = domain_.GetAppointmentCached(*principal, *request)) {
        *response = std::move(*cached);
        grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
        reactor->Finish(grpc::Status::OK);
        return reactor;
      }
    }
    return RunAuthenticated(context, executor_, authenticator_,
                            [this, request, response](const auth::Principal& p) -> absl::Status {
      ASSIGN_OR_RETURN(*response, domain_.GetAppointment(p, *request));
      return absl::OkStatus();
    });
  }
  CONTINUUM_UNARY(ListAppointments, v1::ListAppointmentsRequest, v1::ListAppointmentsResponse)
  CONTINUUM_UNARY(RescheduleAppointment, v1::RescheduleAppointmentRequest, v1::Appointment)
  CONTINUUM_UNARY(CancelAppointment, v1::CancelAppointmentRequest, v1::Appointment)
  CONTINUUM_UNARY(UpdateAppointmentState, v1::UpdateAppointmentStateRequest, v1::Appointment)
  CONTINUUM_UNARY(ListIntegrationDue, v1::ListIntegrationDueRequest, v1::ListIntegrationDueResponse)
  CONTINUUM_UNARY(CreateWaitlistEntry, v1::CreateWaitlistEntryRequest, v1::WaitlistEntry)
  CONTINUUM_UNARY(ListWaitlistEntries, v1::ListWaitlistEntriesRequest, v1::ListWaitlistEntriesResponse)
  CONTINUUM_UNARY(CancelWaitlistEntry, v1::CancelWaitlistEntryRequest, v1::WaitlistEntry)
  CONTINUUM_UNARY(AcceptWaitlistOffer, v1::AcceptWaitlistOfferRequest, v1::AcceptWaitlistOfferResponse)

 private:
  Scheduler& domain_;
  const auth::Authenticator& authenticator_;
  BoundedExecutor& executor_;
};

}  // namespace continuum::scheduling
