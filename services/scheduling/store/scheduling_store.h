// SQL for the scheduling service. A SchedulingStore wraps one open transaction; the domain
// (Scheduler) decides what to read and write, the store knows how. Resources are stored as
// their protobuf encoding next to the columns queries need (see migrations/0001).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/db/database.h"
#include "continuum/common/v1/types.pb.h"
#include "continuum/events/v1/events.pb.h"
#include "continuum/scheduling/v1/appointment.pb.h"
#include "continuum/scheduling/v1/availability.pb.h"
#include "continuum/scheduling/v1/clinic.pb.h"
#include "continuum/scheduling/v1/people.pb.h"
#include "continuum/scheduling/v1/program.pb.h"

namespace continuum::scheduling {

namespace v1 = ::continuum::scheduling::v1;
namespace cv1 = ::continuum::common::v1;

// A stored resource and its revision (optimistic concurrency; the etag is the revision).
template <typename T>
struct Stored {
  T value;
  int64_t revision = 0;
};

struct AppointmentFilter {
  std::string client_id, provider_id, room, program_id;
  std::vector<int> kinds, states;
  std::optional<absl::Time> from, to;  // overlapping [from, to)
  std::string member_id;               // only appointments this care-team member may see
  int64_t offset = 0;
  int limit = 50;
};

// One occupied interval of a resource ("client:<id>", "provider:<id>", "room:<id>").
struct Claim {
  std::string resource;
  absl::Time start, end;
};

// (clinic id, appointment id) of appointments a transaction changed.
using AppointmentKeys = std::vector<std::pair<std::string, std::string>>;

class SchedulingStore {
 public:
  // `changed_appointments`, if given, collects the appointments this transaction changes (the
  // caller drops them from its cache after the commit).
  explicit SchedulingStore(db::Tx& tx, AppointmentKeys* changed_appointments = nullptr)
      : tx_(tx), changed_appointments_(changed_appointments) {}

  // Clinics
  absl::StatusOr<std::optional<Stored<v1::Clinic>>> GetClinic(const std::string& clinic_id);
  // All clinics when `ids` is empty and `all`, else only those in `ids`.
  absl::StatusOr<std::vector<v1::Clinic>> ListClinics(const std::vector<std::string>& ids, bool all,
                                                      int64_t offset, int limit);
  absl::Status InsertClinic(const std::string& clinic_id, const v1::Clinic& clinic);
  // Replaces the stored value if its revision is still `revision` (ABORTED otherwise).
  absl::Status UpdateClinic(const std::string& clinic_id, const v1::Clinic& clinic, int64_t revision);

  // People and memberships
  absl::StatusOr<std::optional<Stored<v1::Person>>> GetPerson(const std::string& person_id);
  absl::Status InsertPerson(const std::string& person_id, const v1::Person& person);
  absl::Status UpdatePerson(const std::string& person_id, const v1::Person& person, int64_t revision);
  // Role of the person in the clinic, ROLE_UNSPECIFIED when not a member.
  absl::StatusOr<cv1::Role> RoleIn(const std::string& clinic_id, const std::string& person_id);
  absl::StatusOr<std::vector<v1::Person>> ListMembers(const std::string& clinic_id, cv1::Role role,
                                                      int64_t offset, int limit);
  absl::StatusOr<std::vector<std::string>> MembersWithRole(const std::string& clinic_id, cv1::Role role);

  // Care teams
  absl::StatusOr<std::optional<Stored<v1::CareTeam>>> GetCareTeam(const std::string& clinic_id,
                                                                  const std::string& client_id);
  // Inserts (revision nullopt) or replaces at `revision`; keeps care_team_members in step.
  absl::Status PutCareTeam(const std::string& clinic_id, const std::string& client_id,
                           const v1::CareTeam& team, std::optional<int64_t> revision);
  absl::StatusOr<bool> OnCareTeam(const std::string& clinic_id, const std::string& client_id,
                                  const std::string& member_id);
  absl::StatusOr<std::vector<v1::CareTeam>> ListCareTeams(const std::string& clinic_id,
                                                          const std::string& member_id,
                                                          int64_t offset, int limit);

  // Programs
  absl::StatusOr<std::optional<Stored<v1::Program>>> GetProgram(const std::string& clinic_id,
                                                                const std::string& program_id);
  absl::Status InsertProgram(const std::string& clinic_id, const std::string& program_id,
                             const v1::Program& program);
  absl::Status UpdateProgram(const std::string& clinic_id, const std::string& program_id,
                             const v1::Program& program, int64_t revision);
  // Programs of a clinic; `client_id` / `member_id` (care-team member) filter when not empty.
  absl::StatusOr<std::vector<v1::Program>> ListPrograms(const std::string& clinic_id,
                                                        const std::string& client_id,
                                                        const std::string& member_id,
                                                        const std::vector<int>& states,
                                                        int64_t offset, int limit);

  // Availability
  absl::StatusOr<std::optional<Stored<v1::Availability>>> GetAvailability(const std::string& clinic_id,
                                                                          const std::string& provider_id);
  absl::Status PutAvailability(const std::string& clinic_id, const std::string& provider_id,
                               const v1::Availability& availability, std::optional<int64_t> revision);

  // Appointments
  absl::StatusOr<std::optional<Stored<v1::Appointment>>> GetAppointment(const std::string& clinic_id,
                                                                        const std::string& appointment_id);
  absl::Status InsertAppointment(const std::string& clinic_id, const std::string& appointment_id,
                                 const v1::Appointment& a);
  // Also puts a notice on kAppointmentChangesChannel in the outbox (appointment_cache.h).
  absl::Status UpdateAppointment(const std::string& clinic_id, const std::string& appointment_id,
                                 const v1::Appointment& a, int64_t revision, absl::Time now);
  absl::StatusOr<std::vector<v1::Appointment>> ListAppointments(const std::string& clinic_id,
                                                                const AppointmentFilter& filter);

  // Occupancy: claims every minute of each interval; ABORTED / SLOT_CONFLICT (metadata
  // "conflict" = client | provider | room) when any minute is already claimed.
  absl::Status ClaimTime(const std::string& clinic_id, const std::string& appointment_id,
                         const std::vector<Claim>& claims);
  absl::Status ReleaseTime(const std::string& clinic_id, const std::string& appointment_id);
  // Minutes of `resource` claimed in [from, to), as merged intervals.
  absl::StatusOr<std::vector<std::pair<absl::Time, absl::Time>>> Busy(const std::string& clinic_id,
                                                                     const std::string& resource,
                                                                     absl::Time from, absl::Time to);

  // Waitlist
  absl::StatusOr<std::optional<Stored<v1::WaitlistEntry>>> GetWaitlistEntry(const std::string& clinic_id,
                                                                            const std::string& entry_id);
  absl::Status InsertWaitlistEntry(const std::string& clinic_id, const std::string& entry_id,
                                   const v1::WaitlistEntry& e);
  absl::Status UpdateWaitlistEntry(const std::string& clinic_id, const std::string& entry_id,
                                   const v1::WaitlistEntry& e, int64_t revision);
  absl::StatusOr<std::vector<v1::WaitlistEntry>> ListWaitlistEntries(const std::string& clinic_id,
                                                                     const std::string& client_id,
                                                                     const std::vector<int>& states,
                                                                     int64_t offset, int limit);

  // Entries in `state` across all clinics, as (clinic id, entry), oldest first.
  absl::StatusOr<std::vector<std::pair<std::string, v1::WaitlistEntry>>> WaitlistEntriesInState(int state,
                                                                                                 int limit);

  // Events, through the transactional outbox.
  absl::Status Publish(const events::v1::EventEnvelope& event, absl::Time now);

 private:
  db::Tx& tx_;
  AppointmentKeys* changed_appointments_;
};

inline constexpr char kEventStream[] = "continuum:events:scheduling";
// Where the outbox relay PUBLISHes "- clinics/{clinic}/appointments/{id}" for every change to
// an appointment (AppointmentCache's invalidations; no stream copy is kept).
inline constexpr char kAppointmentChangesChannel[] = "continuum:scheduling:appointment-changes";

}  // namespace continuum::scheduling
