// continuum-seed: loads demo data into a running scheduling service, through its public API.
//   continuum-seed --scheduling=127.0.0.1:7001 --secret-file=.data/jwt-secret
// Creates clinic "demo" (Europe/Berlin) with a medicine room, an admin, a therapist, a
// clinician, a client with a care team, a sitter, weekday availability, an ACTIVE program and a
// consultation on the next weekday at 10:00. Safe to run again (fixed request ids; existing
// things are kept). Prints a token for each demo person.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/auth/grpc_auth.h"
#include "common/auth/jwt.h"
#include "common/config/config_source.h"
#include "continuum/scheduling/v1/scheduling_service.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace v1 = continuum::scheduling::v1;
namespace cv1 = continuum::common::v1;

namespace {

std::string key;

std::string Token(const std::string& subject, continuum::auth::Role role, const std::vector<std::string>& clinics,
                  absl::Duration ttl = absl::Hours(12)) {
  continuum::auth::TokenClaims c;
  c.issuer = "continuum-dev";
  c.audience = "continuum";
  c.subject = subject;
  c.role = role;
  c.clinics = clinics;
  c.issued_at = absl::Now();
  c.expires_at = c.issued_at + ttl;
  return *continuum::auth::SignJwt(c, "HS256", key);
}

// OK, or "already there" (ALREADY_EXISTS) counts as done.
bool Done(const grpc::Status& s, const char* what) {
  if (s.ok() || s.error_code() == grpc::StatusCode::ALREADY_EXISTS) return true;
  std::fprintf(stderr, "continuum-seed: %s failed: %d %s\n", what, s.error_code(), s.error_message().c_str());
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace continuum;
  ConfigSource c = ConfigSource::FromMain(argc, argv);
  std::string address = c.String("scheduling", "127.0.0.1:7001", "scheduling service address");
  std::string secret_file = c.String("secret-file", ".data/jwt-secret", "HS256 secret file");
  if (c.help_requested()) {
    std::fputs(c.Usage("continuum-seed").c_str(), stdout);
    return 0;
  }
  auto secret = auth::ReadFile(secret_file);
  if (!secret.ok()) c.AddError(std::string(secret.status().message()));
  if (auto s = c.Finish(); !s.ok()) {
    std::fprintf(stderr, "continuum-seed: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  key = *secret;
  while (!key.empty() && key.back() == '\n') key.pop_back();
  auto stub = v1::SchedulingService::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  auto call = [&](const std::string& token, auto method, const auto& req, auto* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ctx.AddMetadata("authorization", "Bearer " + token);
    return (stub.get()->*method)(&ctx, req, resp);
  };
  const std::string ops = Token("continuum-seed", auth::Role::kService, {"*"}, absl::Minutes(10));

  v1::CreateClinicRequest cc;
  cc.set_clinic_id("demo");
  cc.mutable_clinic()->set_display_name("Demo KAP Clinic");
  cc.mutable_clinic()->set_time_zone("Europe/Berlin");
  auto* room = cc.mutable_clinic()->add_rooms();
  room->set_room_id("calm-room");
  room->set_display_name("Calm room");
  room->set_supports_medicine_sessions(true);
  cc.set_request_id("seed-clinic");
  v1::Clinic clinic;
  if (!Done(call(ops, &v1::SchedulingService::Stub::CreateClinic, cc, &clinic), "clinic")) return 1;

  struct Demo {
    const char* id;
    const char* name;
    cv1::Role role;
    auth::Role token_role;
  };
  const Demo people[] = {{"demo-admin", "Ada Admin", cv1::ROLE_ADMIN, auth::Role::kAdmin},
                         {"tara", "Tara Therapist", cv1::ROLE_THERAPIST, auth::Role::kTherapist},
                         {"colin", "Colin Clinician", cv1::ROLE_CLINICIAN, auth::Role::kClinician},
                         {"casey", "Casey Client", cv1::ROLE_CLIENT, auth::Role::kClient},
                         {"sam", "Sam Sitter", cv1::ROLE_SITTER, auth::Role::kSitter}};
  for (const auto& d : people) {
    v1::CreatePersonRequest r;
    r.set_person_id(d.id);
    r.mutable_person()->set_display_name(d.name);
    r.mutable_person()->add_memberships()->set_clinic("clinics/demo");
    r.mutable_person()->mutable_memberships(0)->set_role(d.role);
    r.set_request_id(absl::StrCat("seed-person-", d.id));
    v1::Person p;
    if (!Done(call(ops, &v1::SchedulingService::Stub::CreatePerson, r, &p), d.id)) return 1;
  }
  for (const char* provider : {"tara", "colin"}) {
    v1::UpdateAvailabilityRequest a;
    a.mutable_availability()->set_name(absl::StrCat("clinics/demo/providers/", provider, "/availability"));
    for (int day = 1; day <= 5; ++day) {
      auto* w = a.mutable_availability()->add_weekly_hours();
      w->set_day_of_week(static_cast<cv1::DayOfWeek>(day));
      w->mutable_hours()->mutable_start()->set_hours(9);
      w->mutable_hours()->mutable_end()->set_hours(18);
    }
    a.mutable_update_mask()->add_paths("weekly_hours");
    a.set_request_id(absl::StrCat("seed-hours-", provider));
    v1::Availability out;
    if (!Done(call(ops, &v1::SchedulingService::Stub::UpdateAvailability, a, &out), "availability")) return 1;
  }
  v1::UpdateCareTeamRequest t;
  t.mutable_care_team()->set_name("clinics/demo/careTeams/casey");
  t.mutable_care_team()->add_members()->set_person("people/tara");
  t.mutable_care_team()->add_members()->set_person("people/colin");
  t.mutable_update_mask()->add_paths("members");
  t.set_allow_missing(true);
  t.set_request_id("seed-team");
  v1::CareTeam team;
  if (!Done(call(ops, &v1::SchedulingService::Stub::UpdateCareTeam, t, &team), "care team")) return 1;

  v1::CreateProgramRequest p;
  p.set_parent("clinics/demo");
  p.mutable_program()->set_client("people/casey");
  p.mutable_program()->set_display_name("6 medicine sessions");
  p.set_request_id("seed-program");
  v1::Program program;
  if (!Done(call(ops, &v1::SchedulingService::Stub::CreateProgram, p, &program), "program")) return 1;
  if (program.name().empty()) {  // already enrolled: find it
    v1::ListProgramsRequest l;
    l.set_parent("clinics/demo");
    l.set_client("people/casey");
    v1::ListProgramsResponse programs;
    if (call(ops, &v1::SchedulingService::Stub::ListPrograms, l, &programs).ok() && programs.programs_size() > 0) {
      program = programs.programs(0);
    }
  }
  // A consultation on the next weekday at least two days ahead, 10:00 Berlin.
  absl::TimeZone berlin;
  absl::LoadTimeZone("Europe/Berlin", &berlin);
  absl::CivilDay day = absl::ToCivilDay(absl::Now(), berlin) + 2;
  while (absl::GetWeekday(day) == absl::Weekday::saturday || absl::GetWeekday(day) == absl::Weekday::sunday) ++day;
  absl::Time start = absl::FromCivil(absl::CivilSecond(day.year(), day.month(), day.day(), 10, 0, 0), berlin);
  v1::BookAppointmentRequest b;
  b.set_parent("clinics/demo");
  b.mutable_appointment()->set_kind(cv1::APPOINTMENT_KIND_CONSULTATION);
  b.mutable_appointment()->set_program(program.name());
  b.mutable_appointment()->set_provider("people/tara");
  b.mutable_appointment()->mutable_start_time()->set_seconds(absl::ToUnixSeconds(start));
  b.mutable_appointment()->mutable_end_time()->set_seconds(absl::ToUnixSeconds(start + absl::Hours(1)));
  b.set_request_id("seed-consultation");
  v1::BookAppointmentResponse booked;
  grpc::Status s = call(ops, &v1::SchedulingService::Stub::BookAppointment, b, &booked);
  if (!s.ok() && s.error_code() != grpc::StatusCode::ABORTED) Done(s, "consultation");

  std::printf("Demo data: clinic clinics/demo, program %s, consultation %s\n", program.name().c_str(),
              booked.appointment().name().empty() ? "(already booked)" : booked.appointment().name().c_str());
  std::printf("Demo tokens (12 h):\n");
  for (const auto& d : people) {
    std::printf("  %-10s %s\n", d.id, Token(absl::StrCat("people/", d.id), d.token_role, {"demo"}).c_str());
  }
  std::printf("  %-10s %s\n", "partner", Token("demo-partner", auth::Role::kPartner, {"demo"}).c_str());
  return 0;
}
