// Small shared pieces of the scheduling domain: conversions, the kind tables, policy
// lookups and the access checks that every method uses.
#pragma once

#include <optional>

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/auth/principal.h"
#include "common/time/proto_time.h"
#include "continuum/scheduling/v1/scheduling_service.pb.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "services/scheduling/store/scheduling_store.h"

namespace continuum::scheduling {

using ::continuum::FromProto;
using ::continuum::ToProto;

// "people/{id}" <-> id. Subjects of person tokens may be the id or the resource name.
std::string PersonName(const std::string& id);
std::string PersonId(const auth::Principal& p);
std::string IdOfName(const std::string& name);  // last path segment

// Kind tables (see AppointmentKind in common/v1/types.proto).
bool IsMedicine(cv1::AppointmentKind kind);
bool ProviderRoleFits(cv1::AppointmentKind kind, cv1::Role role);
cv1::CareSetting DefaultSetting(cv1::AppointmentKind kind);
bool SettingAllowed(cv1::AppointmentKind kind, cv1::CareSetting setting);
// Whether the appointment occupies its provider / room (not for self-guided sessions).
bool OccupiesProvider(cv1::AppointmentKind kind);
bool Occupies(v1::Appointment::State state);  // PROPOSED, BOOKED, ARRIVED, CHECKED_IN

struct KindTiming {
  absl::Duration duration, before, after;
};
KindTiming TimingOf(const v1::ClinicPolicy& policy, cv1::AppointmentKind kind);

// Access: the caller's role in `clinic_id` is the token's role, valid only if the token
// names the clinic (service principals act everywhere).
absl::Status InClinic(const auth::Principal& p, const std::string& clinic_id);
bool IsService(const auth::Principal& p);
bool IsAdmin(const auth::Principal& p);
bool IsProvider(const auth::Principal& p);  // therapist or clinician
// Staff of this client: admin / partner / service, or a therapist/clinician on the care team.
absl::StatusOr<bool> IsStaffFor(SchedulingStore& s, const auth::Principal& p, const std::string& clinic_id,
                                const std::string& client_id, bool partner_allowed = true);
// The client themself or staff for them; PERMISSION_DENIED (NOT_ON_CARE_TEAM /
// PERMISSION_DENIED_NOT_SELF) otherwise.
absl::Status RequireClientOrStaff(SchedulingStore& s, const auth::Principal& p, const std::string& clinic_id,
                                  const std::string& client_id);
// The part of RequireClientOrStaff that needs no store: its answer, or nullopt for a
// therapist or clinician (whether they are on the care team takes a lookup).
std::optional<absl::Status> ClientOrStaffWithoutLookup(const auth::Principal& p, const std::string& clinic_id,
                                                       const std::string& client_id);
absl::Status Denied(absl::string_view reason, absl::string_view message);

absl::Status EtagMatches(const std::string& given, int64_t revision, absl::string_view what);
std::string EtagOf(int64_t revision);

absl::StatusOr<v1::Clinic> LoadClinic(SchedulingStore& s, const std::string& clinic_id);
absl::StatusOr<absl::TimeZone> ZoneOf(const v1::Clinic& clinic);

// Event envelope with id, time, clinic and source filled in.
events::v1::EventEnvelope NewEvent(const std::string& clinic_id, const std::string& aggregate, absl::Time now);

}  // namespace continuum::scheduling
