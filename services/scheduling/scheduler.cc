#include "services/scheduling/scheduler.h"
#include "services/scheduling/scheduler_templates.h"

#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/api/api.h"
#include "common/status/errors.h"
#include "common/status/macros.h"
#include "services/scheduling/rules.h"
#include "services/scheduling/time_math.h"

namespace continuum::scheduling {
namespace {

absl::Status NotFound(const std::string& name) {
  return MakeError(absl::StatusCode::kNotFound, "NOT_FOUND", absl::StrCat(name, " does not exist"),
                   {{"resource", name}});
}

absl::Status CheckMask(const google::protobuf::FieldMask& mask, const std::set<std::string>& allowed) {
  if (mask.paths().empty()) {
    return InvalidField("update_mask", "required: name the fields to update (or \"*\")");
  }
  for (const auto& path : mask.paths()) {
    if (path == "*" || allowed.count(path)) continue;
    bool prefix_ok = false;
    for (const auto& a : allowed) {
      if (absl::EndsWith(a, ".*") && absl::StartsWith(path, a.substr(0, a.size() - 1))) prefix_ok = true;
    }
    if (!prefix_ok) {
      return InvalidField("update_mask", absl::StrCat("'", path, "' cannot be updated by this method"));
    }
  }
  return absl::OkStatus();
}

bool Masked(const google::protobuf::FieldMask& mask, const std::string& path) {
  for (const auto& p : mask.paths()) {
    if (p == "*" || p == path) return true;
  }
  return false;
}

void SetDefault(google::protobuf::Duration* d, absl::Duration v) {
  if (d->seconds() == 0 && d->nanos() == 0) *d = ToProto(v);
}

absl::Status ValidateClinic(const v1::Clinic& c) {
  std::vector<FieldViolation> v;
  if (c.display_name().empty() || c.display_name().size() > 200) {
    v.push_back({"clinic.display_name", "required, 1-200 characters"});
  }
  absl::TimeZone tz;
  if (c.time_zone().empty() || !absl::LoadTimeZone(c.time_zone(), &tz)) {
    v.push_back({"clinic.time_zone", "required: an IANA time zone such as America/New_York or Europe/Berlin"});
  }
  std::set<std::string> rooms;
  for (int i = 0; i < c.rooms_size(); ++i) {
    if (!api::ValidId(c.rooms(i).room_id()) || !rooms.insert(c.rooms(i).room_id()).second) {
      v.push_back({absl::StrCat("clinic.rooms[", i, "].room_id"), "must be a unique id of the form [a-z][a-z0-9-]{2,62}"});
    }
  }
  const auto& pol = c.policy();
  auto range = [&](const char* field, const google::protobuf::Duration& d, absl::Duration lo, absl::Duration hi) {
    absl::Duration x = FromProto(d);
    if (x != absl::ZeroDuration() && (x < lo || x > hi)) {
      v.push_back({absl::StrCat("clinic.policy.", field),
                   absl::StrCat("must be between ", absl::FormatDuration(lo), " and ", absl::FormatDuration(hi))});
    }
  };
  range("integration_window", pol.integration_window(), absl::Hours(1), absl::Hours(24 * 30));
  range("minimum_notice", pol.minimum_notice(), absl::ZeroDuration(), absl::Hours(24 * 30));
  range("minimum_medicine_interval", pol.minimum_medicine_interval(), absl::ZeroDuration(), absl::Hours(24 * 90));
  range("sitter_checkin_interval", pol.sitter_checkin_interval(), absl::Minutes(5), absl::Hours(2));
  range("escalation_ack_timeout", pol.escalation_ack_timeout(), absl::Minutes(1), absl::Hours(1));
  range("unread_message_alert_after", pol.unread_message_alert_after(), absl::Minutes(5), absl::Hours(24 * 7));
  if (pol.has_supervised_sessions_required() &&
      (pol.supervised_sessions_required() < 0 || pol.supervised_sessions_required() > 20)) {
    v.push_back({"clinic.policy.supervised_sessions_required", "must be 0-20"});
  }
  for (int i = 0; i < pol.kind_policies_size(); ++i) {
    const auto& kp = pol.kind_policies(i);
    absl::Duration d = FromProto(kp.duration());
    if (kp.kind() == cv1::APPOINTMENT_KIND_UNSPECIFIED ||
        (d != absl::ZeroDuration() && (d < absl::Minutes(15) || d > absl::Hours(12)))) {
      v.push_back({absl::StrCat("clinic.policy.kind_policies[", i, "]"), "needs a kind and a duration of 15m-12h"});
    }
  }
  for (int i = 0; i < c.on_call_roster_size(); ++i) {
    const auto& shift = c.on_call_roster(i);
    if (!absl::StartsWith(shift.person(), "people/") ||
        FromProto(shift.interval().end_time()) <= FromProto(shift.interval().start_time())) {
      v.push_back({absl::StrCat("clinic.on_call_roster[", i, "]"), "needs a person (people/{id}) and an interval with end after start"});
    }
  }
  if (!v.empty()) return InvalidFields(std::move(v));
  return absl::OkStatus();
}

absl::Status ValidateRoster(SchedulingStore& s, const std::string& clinic_id, const v1::Clinic& c) {
  for (int i = 0; i < c.on_call_roster_size(); ++i) {
    ASSIGN_OR_RETURN(cv1::Role role, s.RoleIn(clinic_id, IdOfName(c.on_call_roster(i).person())));
    if (role != cv1::ROLE_CLINICIAN) {
      return InvalidField(absl::StrCat("clinic.on_call_roster[", i, "].person"),
                          "must be a clinician of this clinic");
    }
  }
  return absl::OkStatus();
}

}  // namespace

Scheduler::Scheduler(db::Database& db, Clock& clock, Options options)
    : db_(db), clock_(clock), options_(std::move(options)) {}

void Scheduler::ApplyPolicyDefaults(v1::ClinicPolicy* p) {
  SetDefault(p->mutable_integration_window(), absl::Hours(72));
  if (!p->has_supervised_sessions_required()) p->set_supervised_sessions_required(2);
  SetDefault(p->mutable_minimum_notice(), absl::Hours(24));
  SetDefault(p->mutable_minimum_medicine_interval(), absl::Hours(72));
  SetDefault(p->mutable_cancellation_window(), absl::Hours(24));
  SetDefault(p->mutable_reschedule_window(), absl::Hours(24));
  SetDefault(p->mutable_reentry_gap(), absl::Hours(24 * 90));
  SetDefault(p->mutable_supervised_observation_period(), absl::Hours(2));
  SetDefault(p->mutable_self_guided_observation_period(), absl::Hours(1));
  SetDefault(p->mutable_sitter_checkin_interval(), absl::Minutes(20));
  SetDefault(p->mutable_escalation_ack_timeout(), absl::Minutes(5));
  SetDefault(p->mutable_unread_message_alert_after(), absl::Hours(4));
  if (!p->has_max_systolic_mmhg()) p->set_max_systolic_mmhg(160);
  if (!p->has_max_diastolic_mmhg()) p->set_max_diastolic_mmhg(100);
  if (p->reminder_offsets().empty()) {
    *p->add_reminder_offsets() = ToProto(absl::Hours(24));
    *p->add_reminder_offsets() = ToProto(absl::Hours(1));
  }
  SetDefault(p->mutable_waitlist_offer_ttl(), absl::Hours(2));
  const std::pair<cv1::AppointmentKind, absl::Duration> kDurations[] = {
      {cv1::APPOINTMENT_KIND_CONSULTATION, absl::Minutes(60)},
      {cv1::APPOINTMENT_KIND_PREPARATION, absl::Minutes(60)},
      {cv1::APPOINTMENT_KIND_MEDICINE_SUPERVISED, absl::Hours(3)},
      {cv1::APPOINTMENT_KIND_MEDICINE_SELF_GUIDED, absl::Hours(3)},
      {cv1::APPOINTMENT_KIND_INTEGRATION, absl::Minutes(60)},
      {cv1::APPOINTMENT_KIND_CLINICIAN_REVIEW, absl::Minutes(30)}};
  for (const auto& [kind, duration] : kDurations) {
    v1::AppointmentKindPolicy* kp = nullptr;
    for (auto& existing : *p->mutable_kind_policies()) {
      if (existing.kind() == kind) kp = &existing;
    }
    if (!kp) {
      kp = p->add_kind_policies();
      kp->set_kind(kind);
    }
    SetDefault(kp->mutable_duration(), duration);
  }
}

// ---------------------------------------------------------------------------- Clinics

absl::StatusOr<v1::Clinic> Scheduler::CreateClinic(const P& p, const v1::CreateClinicRequest& r) {
  if (!IsService(p)) return Denied("PERMISSION_DENIED_ROLE", "only platform operators (service principals) create clinics");
  if (!api::ValidId(r.clinic_id())) return InvalidField("clinic_id", "required: [a-z][a-z0-9-]{2,62}");
  RETURN_IF_ERROR(ValidateClinic(r.clinic()));
  return Mutate<v1::Clinic>(p, "CreateClinic", r.request_id(), r, [&](SchedulingStore& s) -> absl::StatusOr<v1::Clinic> {
    v1::Clinic c = r.clinic();
    c.set_name("clinics/" + r.clinic_id());
    ApplyPolicyDefaults(c.mutable_policy());
    *c.mutable_create_time() = *c.mutable_update_time() = ToProto(clock_.Now());
    c.set_etag(EtagOf(1));
    absl::Status st = s.InsertClinic(r.clinic_id(), c);
    if (st.code() == absl::StatusCode::kAlreadyExists) {
      return MakeError(absl::StatusCode::kAlreadyExists, "ALREADY_EXISTS", c.name() + " already exists");
    }
    RETURN_IF_ERROR(st);
    return c;
  });
}

absl::StatusOr<v1::Clinic> Scheduler::GetClinic(const P& p, const v1::GetClinicRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.name(), "clinics/*", "name"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  return Read<v1::Clinic>([&](SchedulingStore& s) { return LoadClinic(s, ids[0]); });
}

absl::StatusOr<v1::ListClinicsResponse> Scheduler::ListClinics(const P& p, const v1::ListClinicsRequest& r) {
  ASSIGN_OR_RETURN(int size, api::PageSize(r.page_size(), 50, 500));
  ASSIGN_OR_RETURN(int64_t offset, api::ParsePageToken(r.page_token(), r));
  return Read<v1::ListClinicsResponse>([&](SchedulingStore& s) -> absl::StatusOr<v1::ListClinicsResponse> {
    bool all = p.InClinic("*") && std::find(p.clinics.begin(), p.clinics.end(), "*") != p.clinics.end();
    ASSIGN_OR_RETURN(auto clinics, s.ListClinics(p.clinics, all, offset, size + 1));
    v1::ListClinicsResponse out;
    for (size_t i = 0; i < clinics.size() && i < static_cast<size_t>(size); ++i) *out.add_clinics() = clinics[i];
    if (clinics.size() > static_cast<size_t>(size)) out.set_next_page_token(api::MakePageToken(offset + size, r));
    return out;
  });
}

absl::StatusOr<v1::Clinic> Scheduler::UpdateClinic(const P& p, const v1::UpdateClinicRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.clinic().name(), "clinics/*", "clinic.name"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  if (!IsAdmin(p) && !IsService(p)) return Denied("PERMISSION_DENIED_ROLE", "only clinic admins update a clinic");
  RETURN_IF_ERROR(CheckMask(r.update_mask(), {"display_name", "rooms", "policy", "policy.*", "on_call_roster"}));
  return Mutate<v1::Clinic>(p, "UpdateClinic", r.request_id(), r, [&](SchedulingStore& s) -> absl::StatusOr<v1::Clinic> {
    ASSIGN_OR_RETURN(auto stored, s.GetClinic(ids[0]));
    if (!stored) return NotFound(r.clinic().name());
    RETURN_IF_ERROR(EtagMatches(r.clinic().etag(), stored->revision, r.clinic().name()));
    v1::Clinic c = stored->value;
    const auto& mask = r.update_mask();
    if (Masked(mask, "display_name")) c.set_display_name(r.clinic().display_name());
    if (Masked(mask, "rooms")) *c.mutable_rooms() = r.clinic().rooms();
    if (Masked(mask, "on_call_roster")) *c.mutable_on_call_roster() = r.clinic().on_call_roster();
    if (Masked(mask, "policy")) {
      *c.mutable_policy() = r.clinic().policy();
    } else {
      // policy.<field>: copy just that field.
      for (const auto& path : mask.paths()) {
        if (!absl::StartsWith(path, "policy.")) continue;
        const auto* fd = v1::ClinicPolicy::descriptor()->FindFieldByName(path.substr(7));
        if (!fd) return InvalidField("update_mask", absl::StrCat("'", path, "' is not a policy field"));
        const auto* refl = c.policy().GetReflection();
        if (fd->is_repeated()) {
          refl->ClearField(c.mutable_policy(), fd);
          for (int i = 0; i < refl->FieldSize(r.clinic().policy(), fd); ++i) {
            refl->AddMessage(c.mutable_policy(), fd)->CopyFrom(refl->GetRepeatedMessage(r.clinic().policy(), fd, i));
          }
        } else if (fd->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) {
          refl->MutableMessage(c.mutable_policy(), fd)->CopyFrom(refl->GetMessage(r.clinic().policy(), fd));
        } else if (fd->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_INT32) {
          if (refl->HasField(r.clinic().policy(), fd)) refl->SetInt32(c.mutable_policy(), fd, refl->GetInt32(r.clinic().policy(), fd));
          else refl->ClearField(c.mutable_policy(), fd);
        } else if (fd->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_BOOL) {
          refl->SetBool(c.mutable_policy(), fd, refl->GetBool(r.clinic().policy(), fd));
        }
      }
    }
    ApplyPolicyDefaults(c.mutable_policy());
    RETURN_IF_ERROR(ValidateClinic(c));
    RETURN_IF_ERROR(ValidateRoster(s, ids[0], c));
    *c.mutable_update_time() = ToProto(clock_.Now());
    c.set_etag(EtagOf(stored->revision + 1));
    RETURN_IF_ERROR(s.UpdateClinic(ids[0], c, stored->revision));
    return c;
  });
}

// ---------------------------------------------------------------------------- People

namespace {
absl::Status ValidatePerson(const v1::Person& person) {
  std::vector<FieldViolation> v;
  if (person.display_name().empty() || person.display_name().size() > 200) {
    v.push_back({"person.display_name", "required, 1-200 characters"});
  }
  if (person.email().size() > 320) v.push_back({"person.email", "at most 320 characters"});
  if (person.memberships().empty()) v.push_back({"person.memberships", "at least one clinic membership is required"});
  std::set<std::string> clinics;
  for (int i = 0; i < person.memberships_size(); ++i) {
    const auto& m = person.memberships(i);
    if (!absl::StartsWith(m.clinic(), "clinics/") || !clinics.insert(m.clinic()).second) {
      v.push_back({absl::StrCat("person.memberships[", i, "].clinic"), "must be clinics/{clinic}, at most once"});
    }
    if (m.role() == cv1::ROLE_UNSPECIFIED || m.role() == cv1::ROLE_SERVICE) {
      v.push_back({absl::StrCat("person.memberships[", i, "].role"),
                   "must be client, therapist, clinician, sitter, admin or partner"});
    }
  }
  if (!v.empty()) return InvalidFields(std::move(v));
  return absl::OkStatus();
}

// Admin (or service) of every clinic in the memberships that change.
absl::Status RequireAdminOf(const auth::Principal& p, const std::set<std::string>& clinic_ids) {
  for (const auto& c : clinic_ids) {
    RETURN_IF_ERROR(InClinic(p, c));
    if (!IsAdmin(p) && !IsService(p)) {
      return Denied("PERMISSION_DENIED_ROLE", "only an admin of the clinic may change its memberships");
    }
  }
  return absl::OkStatus();
}

std::set<std::string> ClinicIds(const v1::Person& person) {
  std::set<std::string> out;
  for (const auto& m : person.memberships()) out.insert(IdOfName(m.clinic()));
  return out;
}
}  // namespace

absl::StatusOr<v1::Person> Scheduler::CreatePerson(const P& p, const v1::CreatePersonRequest& r) {
  if (!r.person_id().empty() && !api::ValidId(r.person_id())) {
    return InvalidField("person_id", "must be empty (server-assigned) or [a-z][a-z0-9-]{2,62}");
  }
  RETURN_IF_ERROR(ValidatePerson(r.person()));
  RETURN_IF_ERROR(RequireAdminOf(p, ClinicIds(r.person())));
  return Mutate<v1::Person>(p, "CreatePerson", r.request_id(), r, [&](SchedulingStore& s) -> absl::StatusOr<v1::Person> {
    for (const auto& c : ClinicIds(r.person())) {
      ASSIGN_OR_RETURN(auto clinic, s.GetClinic(c));
      if (!clinic) return NotFound("clinics/" + c);
    }
    std::string id = r.person_id().empty() ? api::NewId() : r.person_id();
    v1::Person person = r.person();
    person.set_name(PersonName(id));
    *person.mutable_create_time() = *person.mutable_update_time() = ToProto(clock_.Now());
    person.set_etag(EtagOf(1));
    absl::Status st = s.InsertPerson(id, person);
    if (st.code() == absl::StatusCode::kAlreadyExists) {
      return MakeError(absl::StatusCode::kAlreadyExists, "ALREADY_EXISTS", person.name() + " already exists");
    }
    RETURN_IF_ERROR(st);
    return person;
  });
}

absl::StatusOr<v1::Person> Scheduler::GetPerson(const P& p, const v1::GetPersonRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.name(), "people/*", "name"));
  return Read<v1::Person>([&](SchedulingStore& s) -> absl::StatusOr<v1::Person> {
    ASSIGN_OR_RETURN(auto person, s.GetPerson(ids[0]));
    if (!person) return NotFound(r.name());
    if (PersonId(p) == ids[0] || IsService(p)) return person->value;
    for (const auto& c : ClinicIds(person->value)) {
      if (!p.InClinic(c)) continue;
      if (IsAdmin(p) || IsProvider(p) || p.role == auth::Role::kPartner) {
        v1::Person out = person->value;
        if (!IsAdmin(p)) out.clear_email();
        return out;
      }
      if (p.role == auth::Role::kClient) {  // the members of the client's own care team
        ASSIGN_OR_RETURN(bool on_team, s.OnCareTeam(c, PersonId(p), ids[0]));
        if (on_team) {
          v1::Person out = person->value;
          out.clear_email();
          return out;
        }
      }
    }
    return Denied("PERMISSION_DENIED_CROSS_CLINIC", "you may not read this person");
  });
}

absl::StatusOr<v1::ListPeopleResponse> Scheduler::ListPeople(const P& p, const v1::ListPeopleRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.clinic(), "clinics/*", "clinic"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  if (!IsAdmin(p) && !IsProvider(p) && !IsService(p) && p.role != auth::Role::kPartner) {
    return Denied("PERMISSION_DENIED_ROLE", "only staff and partners list a clinic's people");
  }
  ASSIGN_OR_RETURN(int size, api::PageSize(r.page_size(), 50, 500));
  ASSIGN_OR_RETURN(int64_t offset, api::ParsePageToken(r.page_token(), r));
  return Read<v1::ListPeopleResponse>([&](SchedulingStore& s) -> absl::StatusOr<v1::ListPeopleResponse> {
    ASSIGN_OR_RETURN(auto people, s.ListMembers(ids[0], r.role(), offset, size + 1));
    v1::ListPeopleResponse out;
    for (size_t i = 0; i < people.size() && i < static_cast<size_t>(size); ++i) {
      auto* person = out.add_people();
      *person = people[i];
      if (!IsAdmin(p) && !IsService(p)) person->clear_email();
    }
    if (people.size() > static_cast<size_t>(size)) out.set_next_page_token(api::MakePageToken(offset + size, r));
    return out;
  });
}

absl::StatusOr<v1::Person> Scheduler::UpdatePerson(const P& p, const v1::UpdatePersonRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.person().name(), "people/*", "person.name"));
  RETURN_IF_ERROR(CheckMask(r.update_mask(), {"display_name", "email", "memberships"}));
  return Mutate<v1::Person>(p, "UpdatePerson", r.request_id(), r, [&](SchedulingStore& s) -> absl::StatusOr<v1::Person> {
    ASSIGN_OR_RETURN(auto stored, s.GetPerson(ids[0]));
    if (!stored) return NotFound(r.person().name());
    RETURN_IF_ERROR(EtagMatches(r.person().etag(), stored->revision, r.person().name()));
    v1::Person person = stored->value;
    bool self = PersonId(p) == ids[0];
    if (!self) RETURN_IF_ERROR(RequireAdminOf(p, ClinicIds(person)));
    const auto& mask = r.update_mask();
    if (Masked(mask, "display_name")) person.set_display_name(r.person().display_name());
    if (Masked(mask, "email")) person.set_email(r.person().email());
    if (Masked(mask, "memberships")) {
      std::set<std::string> changed = ClinicIds(person);
      for (const auto& c : ClinicIds(r.person())) changed.insert(c);
      RETURN_IF_ERROR(RequireAdminOf(p, changed));
      *person.mutable_memberships() = r.person().memberships();
    }
    RETURN_IF_ERROR(ValidatePerson(person));
    *person.mutable_update_time() = ToProto(clock_.Now());
    person.set_etag(EtagOf(stored->revision + 1));
    RETURN_IF_ERROR(s.UpdatePerson(ids[0], person, stored->revision));
    return person;
  });
}

// ---------------------------------------------------------------------------- Care teams

absl::StatusOr<v1::CareTeam> Scheduler::GetCareTeam(const P& p, const v1::GetCareTeamRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.name(), "clinics/*/careTeams/*", "name"));
  return Read<v1::CareTeam>([&](SchedulingStore& s) -> absl::StatusOr<v1::CareTeam> {
    RETURN_IF_ERROR(RequireClientOrStaff(s, p, ids[0], ids[1]));
    ASSIGN_OR_RETURN(auto team, s.GetCareTeam(ids[0], ids[1]));
    if (team) return team->value;
    ASSIGN_OR_RETURN(cv1::Role role, s.RoleIn(ids[0], ids[1]));
    if (role != cv1::ROLE_CLIENT) return NotFound(r.name());
    v1::CareTeam empty;
    empty.set_name(r.name());
    empty.set_client(PersonName(ids[1]));
    empty.set_etag(EtagOf(0));
    return empty;
  });
}

absl::StatusOr<v1::ListCareTeamsResponse> Scheduler::ListCareTeams(const P& p, const v1::ListCareTeamsRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.parent(), "clinics/*", "parent"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  std::string member = r.member().empty() ? "" : IdOfName(r.member());
  if (IsProvider(p)) {
    if (!member.empty() && member != PersonId(p)) {
      return Denied("NOT_ON_CARE_TEAM", "therapists and clinicians list only the care teams they are on");
    }
    member = PersonId(p);
  } else if (!IsAdmin(p) && !IsService(p) && p.role != auth::Role::kPartner) {
    return Denied("PERMISSION_DENIED_ROLE", "only staff and partners list care teams");
  }
  ASSIGN_OR_RETURN(int size, api::PageSize(r.page_size(), 50, 500));
  ASSIGN_OR_RETURN(int64_t offset, api::ParsePageToken(r.page_token(), r));
  return Read<v1::ListCareTeamsResponse>([&](SchedulingStore& s) -> absl::StatusOr<v1::ListCareTeamsResponse> {
    ASSIGN_OR_RETURN(auto teams, s.ListCareTeams(ids[0], member, offset, size + 1));
    v1::ListCareTeamsResponse out;
    for (size_t i = 0; i < teams.size() && i < static_cast<size_t>(size); ++i) *out.add_care_teams() = teams[i];
    if (teams.size() > static_cast<size_t>(size)) out.set_next_page_token(api::MakePageToken(offset + size, r));
    return out;
  });
}

absl::StatusOr<v1::CareTeam> Scheduler::UpdateCareTeam(const P& p, const v1::UpdateCareTeamRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.care_team().name(), "clinics/*/careTeams/*", "care_team.name"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  if (!IsAdmin(p) && !IsService(p)) return Denied("PERMISSION_DENIED_ROLE", "only clinic admins change care teams");
  RETURN_IF_ERROR(CheckMask(r.update_mask(), {"members"}));
  if (r.care_team().members_size() > 20) return InvalidField("care_team.members", "at most 20 members");
  return Mutate<v1::CareTeam>(p, "UpdateCareTeam", r.request_id(), r, [&](SchedulingStore& s) -> absl::StatusOr<v1::CareTeam> {
    ASSIGN_OR_RETURN(cv1::Role client_role, s.RoleIn(ids[0], ids[1]));
    if (client_role != cv1::ROLE_CLIENT) {
      return InvalidField("care_team.name", absl::StrCat("people/", ids[1], " is not a client of clinics/", ids[0]));
    }
    ASSIGN_OR_RETURN(auto stored, s.GetCareTeam(ids[0], ids[1]));
    if (!stored && !r.allow_missing()) return NotFound(r.care_team().name() + " (set allow_missing to create it)");
    if (stored) RETURN_IF_ERROR(EtagMatches(r.care_team().etag(), stored->revision, r.care_team().name()));
    v1::CareTeam team = stored ? stored->value : v1::CareTeam();
    std::set<std::string> before, after;
    for (const auto& m : team.members()) before.insert(m.person());
    team.set_name(r.care_team().name());
    team.set_client(PersonName(ids[1]));
    team.clear_members();
    for (int i = 0; i < r.care_team().members_size(); ++i) {
      const std::string& person = r.care_team().members(i).person();
      std::string field = absl::StrCat("care_team.members[", i, "].person");
      if (!absl::StartsWith(person, "people/") || !after.insert(person).second) {
        return InvalidField(field, "must be people/{id}, each person at most once");
      }
      ASSIGN_OR_RETURN(cv1::Role role, s.RoleIn(ids[0], IdOfName(person)));
      if (role != cv1::ROLE_THERAPIST && role != cv1::ROLE_CLINICIAN) {
        return InvalidField(field, "must be a therapist or clinician of this clinic");
      }
      ASSIGN_OR_RETURN(auto who, s.GetPerson(IdOfName(person)));
      auto* m = team.add_members();
      m->set_person(person);
      m->set_role(role);
      if (who) m->set_display_name(who->value.display_name());
    }
    absl::Time now = clock_.Now();
    if (!stored) *team.mutable_create_time() = ToProto(now);
    *team.mutable_update_time() = ToProto(now);
    int64_t revision = stored ? stored->revision : 0;
    team.set_etag(EtagOf(revision + 1));
    RETURN_IF_ERROR(s.PutCareTeam(ids[0], ids[1], team, stored ? std::optional<int64_t>(revision) : std::nullopt));
    auto event = NewEvent(ids[0], team.name(), now);
    auto* changed = event.mutable_care_team_changed();
    *changed->mutable_care_team() = team;
    for (const auto& m : after) if (!before.count(m)) changed->add_added_members(m);
    for (const auto& m : before) if (!after.count(m)) changed->add_removed_members(m);
    RETURN_IF_ERROR(s.Publish(event, now));
    return team;
  });
}

// ---------------------------------------------------------------------------- Programs

namespace {
absl::Status CanManagePrograms(const auth::Principal& p) {
  if (IsAdmin(p) || IsService(p) || IsProvider(p) || p.role == auth::Role::kPartner) return absl::OkStatus();
  return Denied("PERMISSION_DENIED_ROLE", "only staff and partners manage programs");
}
}  // namespace

absl::StatusOr<v1::Program> Scheduler::CreateProgram(const P& p, const v1::CreateProgramRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.parent(), "clinics/*", "parent"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  RETURN_IF_ERROR(CanManagePrograms(p));
  ASSIGN_OR_RETURN(auto client, api::ParseName(r.program().client(), "people/*", "program.client"));
  if (r.program().state() != v1::Program::STATE_UNSPECIFIED && r.program().state() != v1::Program::STATE_ACTIVE) {
    return InvalidField("program.state", "a new program is ACTIVE; leave state unset");
  }
  if (r.program().display_name().size() > 200) return InvalidField("program.display_name", "at most 200 characters");
  return Mutate<v1::Program>(p, "CreateProgram", r.request_id(), r, [&](SchedulingStore& s) -> absl::StatusOr<v1::Program> {
    ASSIGN_OR_RETURN(cv1::Role role, s.RoleIn(ids[0], client[0]));
    if (role != cv1::ROLE_CLIENT) {
      return InvalidField("program.client", absl::StrCat(r.program().client(), " is not a client of ", r.parent()));
    }
    std::string id = api::NewId();
    absl::Time now = clock_.Now();
    v1::Program program;
    program.set_name(absl::StrCat(r.parent(), "/programs/", id));
    program.set_client(r.program().client());
    program.set_display_name(r.program().display_name());
    program.set_state(v1::Program::STATE_ACTIVE);
    program.mutable_progress();
    *program.mutable_create_time() = *program.mutable_update_time() = ToProto(now);
    program.set_etag(EtagOf(1));
    absl::Status st = s.InsertProgram(ids[0], id, program);
    if (st.code() == absl::StatusCode::kAlreadyExists) {
      return MakeError(absl::StatusCode::kAlreadyExists, "ALREADY_EXISTS",
                       absl::StrCat(r.program().client(), " already has an ACTIVE program in ", r.parent(),
                                    "; complete or withdraw it first"));
    }
    RETURN_IF_ERROR(st);
    auto event = NewEvent(ids[0], program.name(), now);
    *event.mutable_program_changed()->mutable_program() = program;
    event.mutable_program_changed()->set_change(events::v1::ProgramChanged::CHANGE_CREATED);
    RETURN_IF_ERROR(s.Publish(event, now));
    return program;
  });
}

namespace {

// Program.progress is derived, never stored: it is computed from the program's appointments
// whenever a program is returned, so it cannot drift from what the booking rules see.
absl::Status FillProgress(SchedulingStore& s, const std::string& clinic_id, v1::Program& program) {
  AppointmentFilter f;
  f.program_id = IdOfName(program.name());
  f.limit = 100000;
  ASSIGN_OR_RETURN(auto appts, s.ListAppointments(clinic_id, f));
  v1::ProgramProgress progress;
  absl::Time last_end = absl::InfinitePast();
  for (const auto& a : appts) {
    bool fulfilled = a.state() == v1::Appointment::STATE_FULFILLED;
    if (a.kind() == cv1::APPOINTMENT_KIND_CONSULTATION && fulfilled &&
        (!progress.has_consultation_fulfilled_time() ||
         FromProto(a.update_time()) < FromProto(progress.consultation_fulfilled_time()))) {
      *progress.mutable_consultation_fulfilled_time() = a.update_time();
    }
    if (!IsMedicine(a.kind())) continue;
    if (fulfilled || Occupies(a.state())) progress.set_medicine_sessions_counted(progress.medicine_sessions_counted() + 1);
    if (!fulfilled) continue;
    if (a.kind() == cv1::APPOINTMENT_KIND_MEDICINE_SUPERVISED) {
      progress.set_supervised_sessions_fulfilled(progress.supervised_sessions_fulfilled() + 1);
    } else {
      progress.set_self_guided_sessions_fulfilled(progress.self_guided_sessions_fulfilled() + 1);
    }
    last_end = std::max(last_end, FromProto(a.end_time()));
  }
  if (last_end != absl::InfinitePast()) *progress.mutable_last_medicine_end_time() = ToProto(last_end);
  *program.mutable_progress() = progress;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::Program> Scheduler::GetProgram(const P& p, const v1::GetProgramRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.name(), "clinics/*/programs/*", "name"));
  return Read<v1::Program>([&](SchedulingStore& s) -> absl::StatusOr<v1::Program> {
    RETURN_IF_ERROR(InClinic(p, ids[0]));
    ASSIGN_OR_RETURN(auto program, s.GetProgram(ids[0], ids[1]));
    if (!program) return NotFound(r.name());
    RETURN_IF_ERROR(RequireClientOrStaff(s, p, ids[0], IdOfName(program->value.client())));
    RETURN_IF_ERROR(FillProgress(s, ids[0], program->value));
    return program->value;
  });
}

absl::StatusOr<v1::ListProgramsResponse> Scheduler::ListPrograms(const P& p, const v1::ListProgramsRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.parent(), "clinics/*", "parent"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  std::string client = r.client().empty() ? "" : IdOfName(r.client());
  std::string member;
  if (p.role == auth::Role::kClient) {
    if (!client.empty() && client != PersonId(p)) return Denied("PERMISSION_DENIED_NOT_SELF", "clients list only their own programs");
    client = PersonId(p);
  } else if (IsProvider(p)) {
    member = PersonId(p);
  } else if (!IsAdmin(p) && !IsService(p) && p.role != auth::Role::kPartner) {
    return Denied("PERMISSION_DENIED_ROLE", "you may not list programs");
  }
  ASSIGN_OR_RETURN(int size, api::PageSize(r.page_size(), 50, 500));
  ASSIGN_OR_RETURN(int64_t offset, api::ParsePageToken(r.page_token(), r));
  std::vector<int> states(r.states().begin(), r.states().end());
  return Read<v1::ListProgramsResponse>([&](SchedulingStore& s) -> absl::StatusOr<v1::ListProgramsResponse> {
    ASSIGN_OR_RETURN(auto programs, s.ListPrograms(ids[0], client, member, states, offset, size + 1));
    v1::ListProgramsResponse out;
    for (size_t i = 0; i < programs.size() && i < static_cast<size_t>(size); ++i) {
      RETURN_IF_ERROR(FillProgress(s, ids[0], programs[i]));
      *out.add_programs() = programs[i];
    }
    if (programs.size() > static_cast<size_t>(size)) out.set_next_page_token(api::MakePageToken(offset + size, r));
    return out;
  });
}

absl::StatusOr<v1::Program> Scheduler::UpdateProgram(const P& p, const v1::UpdateProgramRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.program().name(), "clinics/*/programs/*", "program.name"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  RETURN_IF_ERROR(CheckMask(r.update_mask(), {"display_name", "state"}));
  return Mutate<v1::Program>(p, "UpdateProgram", r.request_id(), r, [&](SchedulingStore& s) -> absl::StatusOr<v1::Program> {
    ASSIGN_OR_RETURN(auto stored, s.GetProgram(ids[0], ids[1]));
    if (!stored) return NotFound(r.program().name());
    ASSIGN_OR_RETURN(bool staff, IsStaffFor(s, p, ids[0], IdOfName(stored->value.client()), /*partner_allowed=*/false));
    if (!staff) return Denied("NOT_ON_CARE_TEAM", "only staff of this client update the program");
    RETURN_IF_ERROR(EtagMatches(r.program().etag(), stored->revision, r.program().name()));
    v1::Program program = stored->value;
    if (Masked(r.update_mask(), "display_name")) program.set_display_name(r.program().display_name());
    if (Masked(r.update_mask(), "state") && r.program().state() != program.state()) {
      using S = v1::Program;
      auto from = program.state(), to = r.program().state();
      bool ok = (from == S::STATE_ACTIVE && (to == S::STATE_PAUSED || to == S::STATE_COMPLETED || to == S::STATE_WITHDRAWN)) ||
                (from == S::STATE_PAUSED && (to == S::STATE_ACTIVE || to == S::STATE_COMPLETED || to == S::STATE_WITHDRAWN));
      if (!ok) {
        return MakeError(absl::StatusCode::kFailedPrecondition, "INVALID_TRANSITION",
                         absl::StrCat("a program cannot go from ", S::State_Name(from), " to ", S::State_Name(to)),
                         {{"from", S::State_Name(from)}, {"to", S::State_Name(to)}});
      }
      program.set_state(to);
    }
    absl::Time now = clock_.Now();
    *program.mutable_update_time() = ToProto(now);
    program.set_etag(EtagOf(stored->revision + 1));
    absl::Status st = s.UpdateProgram(ids[0], ids[1], program, stored->revision);
    if (st.code() == absl::StatusCode::kAlreadyExists) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "INVALID_STATE",
                       "the client already has another ACTIVE program in this clinic");
    }
    RETURN_IF_ERROR(st);
    auto event = NewEvent(ids[0], program.name(), now);
    *event.mutable_program_changed()->mutable_program() = program;
    event.mutable_program_changed()->set_change(events::v1::ProgramChanged::CHANGE_UPDATED);
    RETURN_IF_ERROR(s.Publish(event, now));
    RETURN_IF_ERROR(FillProgress(s, ids[0], program));
    return program;
  });
}

absl::StatusOr<v1::Program> Scheduler::SetDosePlan(const P& p, const v1::SetDosePlanRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.name(), "clinics/*/programs/*", "name"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  if (p.role != auth::Role::kClinician && !IsService(p)) {
    return Denied("PERMISSION_DENIED_ROLE", "only a clinician on the client's care team sets the dose plan");
  }
  const auto& plan = r.dose_plan();
  std::vector<FieldViolation> v;
  if (plan.route() == cv1::DOSE_ROUTE_UNSPECIFIED) v.push_back({"dose_plan.route", "required"});
  if (!(plan.min_dose_mg() > 0)) v.push_back({"dose_plan.min_dose_mg", "required, > 0"});
  if (!(plan.max_dose_mg() >= plan.min_dose_mg()) || plan.max_dose_mg() > 1000) {
    v.push_back({"dose_plan.max_dose_mg", "required, >= min_dose_mg and <= 1000"});
  }
  if (plan.max_sessions() < 1 || plan.max_sessions() > 100) v.push_back({"dose_plan.max_sessions", "required, 1-100"});
  if (plan.notes().size() > 4000) v.push_back({"dose_plan.notes", "at most 4000 characters"});
  if (!v.empty()) return InvalidFields(std::move(v));
  return Mutate<v1::Program>(p, "SetDosePlan", r.request_id(), r, [&](SchedulingStore& s) -> absl::StatusOr<v1::Program> {
    ASSIGN_OR_RETURN(auto stored, s.GetProgram(ids[0], ids[1]));
    if (!stored) return NotFound(r.name());
    if (!IsService(p)) {
      ASSIGN_OR_RETURN(bool on_team, s.OnCareTeam(ids[0], IdOfName(stored->value.client()), PersonId(p)));
      if (!on_team) return Denied("NOT_ON_CARE_TEAM", "only a clinician on the client's care team sets the dose plan");
    }
    RETURN_IF_ERROR(EtagMatches(r.etag(), stored->revision, r.name()));
    v1::Program program = stored->value;
    if (program.state() != v1::Program::STATE_ACTIVE && program.state() != v1::Program::STATE_PAUSED) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "PROGRAM_NOT_ACTIVE",
                       "the program is finished; enrol the client in a new program");
    }
    absl::Time now = clock_.Now();
    *program.mutable_dose_plan() = plan;
    program.mutable_dose_plan()->set_clinician(PersonName(PersonId(p)));
    *program.mutable_dose_plan()->mutable_set_time() = ToProto(now);
    *program.mutable_update_time() = ToProto(now);
    program.set_etag(EtagOf(stored->revision + 1));
    RETURN_IF_ERROR(s.UpdateProgram(ids[0], ids[1], program, stored->revision));
    auto event = NewEvent(ids[0], program.name(), now);
    *event.mutable_program_changed()->mutable_program() = program;
    event.mutable_program_changed()->set_change(events::v1::ProgramChanged::CHANGE_DOSE_PLAN_SET);
    RETURN_IF_ERROR(s.Publish(event, now));
    RETURN_IF_ERROR(FillProgress(s, ids[0], program));
    return program;
  });
}

// ---------------------------------------------------------------------------- Availability

absl::StatusOr<v1::Availability> Scheduler::GetAvailability(const P& p, const v1::GetAvailabilityRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.name(), "clinics/*/providers/*/availability", "name"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  if (p.role == auth::Role::kClient || p.role == auth::Role::kSitter) {
    return Denied("PERMISSION_DENIED_ROLE", "use SearchSlots to find free times");
  }
  return Read<v1::Availability>([&](SchedulingStore& s) -> absl::StatusOr<v1::Availability> {
    ASSIGN_OR_RETURN(cv1::Role role, s.RoleIn(ids[0], ids[1]));
    if (role != cv1::ROLE_THERAPIST && role != cv1::ROLE_CLINICIAN) return NotFound(r.name());
    ASSIGN_OR_RETURN(auto stored, s.GetAvailability(ids[0], ids[1]));
    if (stored) return stored->value;
    v1::Availability empty;
    empty.set_name(r.name());
    empty.set_etag(EtagOf(0));
    return empty;
  });
}

namespace {
absl::Status ValidateRanges(const google::protobuf::RepeatedPtrField<v1::LocalTimeRange>& ranges,
                            const std::string& field) {
  std::vector<std::pair<int, int>> seen;
  for (int i = 0; i < ranges.size(); ++i) {
    const auto& rg = ranges[i];
    if (!ValidLocalTime(rg.start(), false) || !ValidLocalTime(rg.end(), true)) {
      return InvalidField(absl::StrCat(field, "[", i, "]"), "start and end must be valid times of day (end may be 24:00)");
    }
    int s = rg.start().hours() * 3600 + rg.start().minutes() * 60 + rg.start().seconds();
    int e = rg.end().hours() * 3600 + rg.end().minutes() * 60 + rg.end().seconds();
    if (e <= s) return InvalidField(absl::StrCat(field, "[", i, "]"), "end must be after start");
    for (const auto& [a, b] : seen) {
      if (s < b && a < e) return InvalidField(absl::StrCat(field, "[", i, "]"), "ranges must not overlap");
    }
    seen.emplace_back(s, e);
  }
  return absl::OkStatus();
}

absl::Status ValidateAvailability(const v1::Availability& a) {
  if (a.weekly_hours_size() > 50) return InvalidField("availability.weekly_hours", "at most 50 entries");
  if (a.date_overrides_size() > 500) return InvalidField("availability.date_overrides", "at most 500 entries");
  for (int d = 1; d <= 7; ++d) {
    google::protobuf::RepeatedPtrField<v1::LocalTimeRange> day;
    for (int i = 0; i < a.weekly_hours_size(); ++i) {
      const auto& w = a.weekly_hours(i);
      if (w.day_of_week() < 1 || w.day_of_week() > 7) {
        return InvalidField(absl::StrCat("availability.weekly_hours[", i, "].day_of_week"), "required");
      }
      if (w.day_of_week() == d) *day.Add() = w.hours();
    }
    RETURN_IF_ERROR(ValidateRanges(day, absl::StrCat("availability.weekly_hours(", cv1::DayOfWeek_Name(d), ")")));
  }
  std::set<std::tuple<int, int, int>> dates;
  for (int i = 0; i < a.date_overrides_size(); ++i) {
    const auto& o = a.date_overrides(i);
    std::string field = absl::StrCat("availability.date_overrides[", i, "]");
    absl::CivilDay day(o.date().year(), o.date().month(), o.date().day());
    if (day.year() != o.date().year() || day.month() != o.date().month() || day.day() != o.date().day() ||
        o.date().year() < 1) {
      return InvalidField(field + ".date", "must be a valid calendar date");
    }
    if (!dates.insert({o.date().year(), o.date().month(), o.date().day()}).second) {
      return InvalidField(field + ".date", "at most one override per date");
    }
    if (o.type() == v1::DateOverride::TYPE_UNSPECIFIED) return InvalidField(field + ".type", "required");
    if (o.type() == v1::DateOverride::TYPE_EXTRA_HOURS && o.hours().empty()) {
      return InvalidField(field + ".hours", "extra hours need at least one range");
    }
    RETURN_IF_ERROR(ValidateRanges(o.hours(), field + ".hours"));
  }
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<v1::Availability> Scheduler::UpdateAvailability(const P& p, const v1::UpdateAvailabilityRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.availability().name(), "clinics/*/providers/*/availability",
                                            "availability.name"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  if (PersonId(p) != ids[1] && !IsAdmin(p) && !IsService(p)) {
    return Denied("PERMISSION_DENIED_ROLE", "only the provider or a clinic admin changes availability");
  }
  RETURN_IF_ERROR(CheckMask(r.update_mask(), {"weekly_hours", "date_overrides"}));
  return Mutate<v1::Availability>(p, "UpdateAvailability", r.request_id(), r,
                                  [&](SchedulingStore& s) -> absl::StatusOr<v1::Availability> {
    ASSIGN_OR_RETURN(cv1::Role role, s.RoleIn(ids[0], ids[1]));
    if (role != cv1::ROLE_THERAPIST && role != cv1::ROLE_CLINICIAN) {
      return InvalidField("availability.name", "the person must be a therapist or clinician of the clinic");
    }
    ASSIGN_OR_RETURN(auto stored, s.GetAvailability(ids[0], ids[1]));
    if (stored) RETURN_IF_ERROR(EtagMatches(r.availability().etag(), stored->revision, r.availability().name()));
    v1::Availability a = stored ? stored->value : v1::Availability();
    a.set_name(r.availability().name());
    if (Masked(r.update_mask(), "weekly_hours")) *a.mutable_weekly_hours() = r.availability().weekly_hours();
    if (Masked(r.update_mask(), "date_overrides")) *a.mutable_date_overrides() = r.availability().date_overrides();
    RETURN_IF_ERROR(ValidateAvailability(a));
    int64_t revision = stored ? stored->revision : 0;
    *a.mutable_update_time() = ToProto(clock_.Now());
    a.set_etag(EtagOf(revision + 1));
    RETURN_IF_ERROR(s.PutAvailability(ids[0], ids[1], a, stored ? std::optional<int64_t>(revision) : std::nullopt));
    return a;
  });
}

}  // namespace continuum::scheduling
