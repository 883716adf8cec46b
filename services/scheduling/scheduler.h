// The scheduling domain: clinics, people, care teams, programs, availability, slots,
// appointments and the waitlist, with the KAP booking rules. Plain C++ over a Database and a
// Clock; requests and resources are the v1 protobuf messages (no gRPC here). Every mutating
// call is idempotent on (caller, method, request_id) and runs in one transaction together
// with its outbox events.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/auth/principal.h"
#include "common/db/database.h"
#include "common/time/clock.h"
#include "continuum/scheduling/v1/scheduling_service.pb.h"
#include "services/scheduling/appointment_cache.h"
#include "services/scheduling/store/scheduling_store.h"

namespace continuum::scheduling {

class Scheduler {
 public:
  struct Options {
    std::function<void()> on_commit;  // e.g. wake the outbox relay
    // Optional: GetAppointment's cache; this scheduler drops what it changes at commit.
    AppointmentCache* appointment_cache = nullptr;
  };
  Scheduler(db::Database& db, Clock& clock, Options options);
  // Not `Options options = {}`: GCC 12 refuses a nested struct with member initializers as a
  // default argument inside the enclosing class.
  Scheduler(db::Database& db, Clock& clock) : Scheduler(db, clock, Options()) {}

  using P = auth::Principal;
  absl::StatusOr<v1::Clinic> CreateClinic(const P& p, const v1::CreateClinicRequest& r);
  absl::StatusOr<v1::Clinic> GetClinic(const P& p, const v1::GetClinicRequest& r);
  absl::StatusOr<v1::ListClinicsResponse> ListClinics(const P& p, const v1::ListClinicsRequest& r);
  absl::StatusOr<v1::Clinic> UpdateClinic(const P& p, const v1::UpdateClinicRequest& r);

  absl::StatusOr<v1::Person> CreatePerson(const P& p, const v1::CreatePersonRequest& r);
  absl::StatusOr<v1::Person> GetPerson(const P& p, const v1::GetPersonRequest& r);
  absl::StatusOr<v1::ListPeopleResponse> ListPeople(const P& p, const v1::ListPeopleRequest& r);
  absl::StatusOr<v1::Person> UpdatePerson(const P& p, const v1::UpdatePersonRequest& r);

  absl::StatusOr<v1::CareTeam> GetCareTeam(const P& p, const v1::GetCareTeamRequest& r);
  absl::StatusOr<v1::ListCareTeamsResponse> ListCareTeams(const P& p, const v1::ListCareTeamsRequest& r);
  absl::StatusOr<v1::CareTeam> UpdateCareTeam(const P& p, const v1::UpdateCareTeamRequest& r);

  absl::StatusOr<v1::Program> CreateProgram(const P& p, const v1::CreateProgramRequest& r);
  absl::StatusOr<v1::Program> GetProgram(const P& p, const v1::GetProgramRequest& r);
  absl::StatusOr<v1::ListProgramsResponse> ListPrograms(const P& p, const v1::ListProgramsRequest& r);
  absl::StatusOr<v1::Program> UpdateProgram(const P& p, const v1::UpdateProgramRequest& r);
  absl::StatusOr<v1::Program> SetDosePlan(const P& p, const v1::SetDosePlanRequest& r);

  absl::StatusOr<v1::Availability> GetAvailability(const P& p, const v1::GetAvailabilityRequest& r);
  absl::StatusOr<v1::Availability> UpdateAvailability(const P& p, const v1::UpdateAvailabilityRequest& r);
  absl::StatusOr<v1::SearchSlotsResponse> SearchSlots(const P& p, const v1::SearchSlotsRequest& r);

  absl::StatusOr<v1::BookAppointmentResponse> BookAppointment(const P& p, const v1::BookAppointmentRequest& r);
  absl::StatusOr<v1::Appointment> GetAppointment(const P& p, const v1::GetAppointmentRequest& r);
  // GetAppointment's answer when it needs neither the database nor blocking: the appointment
  // is cached and the caller's access follows from the token alone. nullopt otherwise (then
  // call GetAppointment, on the executor). Never an error: those come from GetAppointment.
  std::optional<v1::Appointment> GetAppointmentCached(const P& p, const v1::GetAppointmentRequest& r);
  absl::StatusOr<v1::ListAppointmentsResponse> ListAppointments(const P& p, const v1::ListAppointmentsRequest& r);
  absl::StatusOr<v1::Appointment> RescheduleAppointment(const P& p, const v1::RescheduleAppointmentRequest& r);
  absl::StatusOr<v1::Appointment> CancelAppointment(const P& p, const v1::CancelAppointmentRequest& r);
  absl::StatusOr<v1::Appointment> UpdateAppointmentState(const P& p, const v1::UpdateAppointmentStateRequest& r);
  absl::StatusOr<v1::ListIntegrationDueResponse> ListIntegrationDue(const P& p,
                                                                    const v1::ListIntegrationDueRequest& r);

  absl::StatusOr<v1::WaitlistEntry> CreateWaitlistEntry(const P& p, const v1::CreateWaitlistEntryRequest& r);
  absl::StatusOr<v1::ListWaitlistEntriesResponse> ListWaitlistEntries(const P& p,
                                                                      const v1::ListWaitlistEntriesRequest& r);
  absl::StatusOr<v1::WaitlistEntry> CancelWaitlistEntry(const P& p, const v1::CancelWaitlistEntryRequest& r);
  absl::StatusOr<v1::AcceptWaitlistOfferResponse> AcceptWaitlistOffer(const P& p,
                                                                      const v1::AcceptWaitlistOfferRequest& r);

  // Waitlist housekeeping, run at least once a minute: offers not accepted in time go back
  // to WAITING (keeping their place) and their slot is offered to the next entry that fits;
  // entries past their latest start become EXPIRED. Returns how many entries changed.
  absl::StatusOr<int> ExpireWaitlistOffers();

  // Clinic defaults for every unset policy field (documented on ClinicPolicy).
  static void ApplyPolicyDefaults(v1::ClinicPolicy* policy);

 private:
  // Runs `fn` in a read-write transaction, remembering its response under request_id.
  template <typename Resp>
  absl::StatusOr<Resp> Mutate(const P& p, const char* method, const std::string& request_id,
                              const google::protobuf::Message& request,
                              const std::function<absl::StatusOr<Resp>(SchedulingStore&)>& fn);
  template <typename Resp>
  absl::StatusOr<Resp> Read(const std::function<absl::StatusOr<Resp>(SchedulingStore&)>& fn);

  // Booking shared by BookAppointment, RescheduleAppointment and AcceptWaitlistOffer.
  struct BookingContext;
  absl::StatusOr<v1::BookAppointmentResponse> Book(SchedulingStore& s, const P& p, const std::string& clinic_id,
                                                   v1::Appointment a, bool propose, const std::string& waitlist_entry);
  absl::Status CheckBooking(SchedulingStore& s, BookingContext& c, const std::string& ignore_appointment);
  absl::StatusOr<std::vector<v1::Slot>> FindSlots(SchedulingStore& s, const v1::Clinic& clinic,
                                                  cv1::AppointmentKind kind, cv1::CareSetting setting,
                                                  const std::vector<std::string>& provider_ids,
                                                  const std::string& client_id, absl::Time from, absl::Time to,
                                                  absl::Duration duration, size_t limit);
  absl::Status OfferFreedSlot(SchedulingStore& s, const std::string& clinic_id, const v1::Appointment& freed,
                              const std::string& skip_entry = "");
  absl::Status PublishAppointmentEvent(SchedulingStore& s, const std::string& clinic_id,
                                       events::v1::EventEnvelope event);

  db::Database& db_;
  Clock& clock_;
  Options options_;
};

}  // namespace continuum::scheduling
