#include "services/scheduling/rules.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/api/api.h"
#include "common/status/errors.h"
#include "common/status/macros.h"

namespace continuum::scheduling {

std::string PersonName(const std::string& id) { return "people/" + id; }
std::string PersonId(const auth::Principal& p) {
  return absl::StartsWith(p.subject, "people/") ? p.subject.substr(7) : p.subject;
}
std::string IdOfName(const std::string& name) { return name.substr(name.rfind('/') + 1); }

bool IsMedicine(cv1::AppointmentKind k) {
  return k == cv1::APPOINTMENT_KIND_MEDICINE_SUPERVISED || k == cv1::APPOINTMENT_KIND_MEDICINE_SELF_GUIDED;
}

bool ProviderRoleFits(cv1::AppointmentKind kind, cv1::Role role) {
  bool therapist = role == cv1::ROLE_THERAPIST, clinician = role == cv1::ROLE_CLINICIAN;
  switch (kind) {
    case cv1::APPOINTMENT_KIND_PREPARATION:
    case cv1::APPOINTMENT_KIND_INTEGRATION: return therapist;
    case cv1::APPOINTMENT_KIND_CLINICIAN_REVIEW: return clinician;
    case cv1::APPOINTMENT_KIND_CONSULTATION:
    case cv1::APPOINTMENT_KIND_MEDICINE_SUPERVISED:
    case cv1::APPOINTMENT_KIND_MEDICINE_SELF_GUIDED: return therapist || clinician;
    default: return false;
  }
}

cv1::CareSetting DefaultSetting(cv1::AppointmentKind kind) {
  return kind == cv1::APPOINTMENT_KIND_MEDICINE_SELF_GUIDED ? cv1::CARE_SETTING_HOME : cv1::CARE_SETTING_IN_CLINIC;
}

bool SettingAllowed(cv1::AppointmentKind kind, cv1::CareSetting setting) {
  if (kind == cv1::APPOINTMENT_KIND_MEDICINE_SELF_GUIDED) return setting == cv1::CARE_SETTING_HOME;
  return setting == cv1::CARE_SETTING_IN_CLINIC || setting == cv1::CARE_SETTING_VIRTUAL;
}

bool OccupiesProvider(cv1::AppointmentKind kind) { return kind != cv1::APPOINTMENT_KIND_MEDICINE_SELF_GUIDED; }

bool Occupies(v1::Appointment::State state) {
  return state == v1::Appointment::STATE_PROPOSED || state == v1::Appointment::STATE_BOOKED ||
         state == v1::Appointment::STATE_ARRIVED || state == v1::Appointment::STATE_CHECKED_IN;
}

KindTiming TimingOf(const v1::ClinicPolicy& policy, cv1::AppointmentKind kind) {
  for (const auto& kp : policy.kind_policies()) {
    if (kp.kind() == kind) return {FromProto(kp.duration()), FromProto(kp.buffer_before()), FromProto(kp.buffer_after())};
  }
  return {absl::Hours(1), absl::ZeroDuration(), absl::ZeroDuration()};
}

bool IsService(const auth::Principal& p) { return p.role == auth::Role::kService; }
bool IsAdmin(const auth::Principal& p) { return p.role == auth::Role::kAdmin; }
bool IsProvider(const auth::Principal& p) {
  return p.role == auth::Role::kTherapist || p.role == auth::Role::kClinician;
}

absl::Status InClinic(const auth::Principal& p, const std::string& clinic_id) {
  return auth::RequireClinic(p, clinic_id);
}

absl::Status Denied(absl::string_view reason, absl::string_view message) {
  return MakeError(absl::StatusCode::kPermissionDenied, reason, message);
}

absl::StatusOr<bool> IsStaffFor(SchedulingStore& s, const auth::Principal& p, const std::string& clinic_id,
                                const std::string& client_id, bool partner_allowed) {
  if (!p.InClinic(clinic_id)) return false;
  if (IsService(p) || IsAdmin(p) || (partner_allowed && p.role == auth::Role::kPartner)) return true;
  if (!IsProvider(p)) return false;
  return s.OnCareTeam(clinic_id, client_id, PersonId(p));
}

std::optional<absl::Status> ClientOrStaffWithoutLookup(const auth::Principal& p, const std::string& clinic_id,
                                                       const std::string& client_id) {
  RETURN_IF_ERROR(InClinic(p, clinic_id));
  if (p.role == auth::Role::kClient) {
    if (PersonId(p) == client_id) return absl::OkStatus();
    return Denied("PERMISSION_DENIED_NOT_SELF", "a client may only act on their own records");
  }
  if (IsService(p) || IsAdmin(p) || p.role == auth::Role::kPartner) return absl::OkStatus();
  if (IsProvider(p)) return std::nullopt;  // on the care team?
  return Denied("PERMISSION_DENIED_ROLE", absl::StrCat("a ", auth::RoleName(p.role), " may not do this"));
}

absl::Status RequireClientOrStaff(SchedulingStore& s, const auth::Principal& p, const std::string& clinic_id,
                                  const std::string& client_id) {
  if (auto decided = ClientOrStaffWithoutLookup(p, clinic_id, client_id)) return *decided;
  ASSIGN_OR_RETURN(bool on_team, s.OnCareTeam(clinic_id, client_id, PersonId(p)));
  if (on_team) return absl::OkStatus();
  return Denied("NOT_ON_CARE_TEAM", absl::StrCat("you are not on the care team of people/", client_id,
                                                 "; ask a clinic admin to add you"));
}

std::string EtagOf(int64_t revision) { return absl::StrCat("\"", revision, "\""); }

absl::Status EtagMatches(const std::string& given, int64_t revision, absl::string_view what) {
  if (given.empty() || given == EtagOf(revision)) return absl::OkStatus();
  return MakeError(absl::StatusCode::kAborted, "ETAG_MISMATCH",
                   absl::StrCat(what, " has changed since you read it (etag ", given, ", now ", EtagOf(revision),
                                "); read it again and retry"));
}

absl::StatusOr<v1::Clinic> LoadClinic(SchedulingStore& s, const std::string& clinic_id) {
  ASSIGN_OR_RETURN(auto clinic, s.GetClinic(clinic_id));
  if (!clinic) {
    return MakeError(absl::StatusCode::kNotFound, "NOT_FOUND", absl::StrCat("clinics/", clinic_id, " does not exist"));
  }
  return clinic->value;
}

absl::StatusOr<absl::TimeZone> ZoneOf(const v1::Clinic& clinic) {
  absl::TimeZone tz;
  if (!absl::LoadTimeZone(clinic.time_zone(), &tz)) {
    return absl::InternalError(absl::StrCat("time zone '", clinic.time_zone(), "' of ", clinic.name(),
                                            " cannot be loaded (is tzdata installed?)"));
  }
  return tz;
}

events::v1::EventEnvelope NewEvent(const std::string& clinic_id, const std::string& aggregate, absl::Time now) {
  events::v1::EventEnvelope e;
  e.set_event_id(api::NewUuid());
  *e.mutable_occur_time() = ToProto(now);
  e.set_clinic("clinics/" + clinic_id);
  e.set_source_service("scheduling");
  e.set_aggregate(aggregate);
  return e;
}

}  // namespace continuum::scheduling
