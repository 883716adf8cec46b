#include "common/testing/platform.h"

#include "absl/strings/str_cat.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace continuum::testing {

std::string ReasonOf(const grpc::Status& s) {
  google::rpc::Status st;
  if (!st.ParseFromString(s.error_details())) return "";
  for (const auto& d : st.details()) {
    google::rpc::ErrorInfo info;
    if (d.UnpackTo(&info)) return info.reason();
  }
  return "";
}

std::string Platform::DatabaseUrl(const std::string& service) {
  if (!postgres) return "sqlite:" + dir.File(service + ".db");
  auto pg = PostgresServer::Shared();
  EXPECT_TRUE(pg.ok()) << pg.status();
  if (!pg.ok()) return "";
  auto url = (*pg)->CreateDatabase();
  EXPECT_TRUE(url.ok()) << url.status();
  return url.ok() ? *url : "";
}

void Platform::Start(bool with_records) {
  auto r = RedisServer::Start();
  ASSERT_TRUE(r.ok()) << r.status();
  redis = std::move(*r);
  auto s = ServiceProcess::Start("continuum-scheduling",
                                 {"--database-url=" + DatabaseUrl("scheduling"),
                                  "--redis-address=" + redis->address(),
                                  std::string("--jwt-hs256-secret=") + kTestJwtSecret},
                                 dir);
  ASSERT_TRUE(s.ok()) << s.status();
  scheduling = std::move(*s);
  sched = sv1::SchedulingService::NewStub(grpc::CreateChannel(scheduling->address(), grpc::InsecureChannelCredentials()));
  records_db = DatabaseUrl("records");
  if (with_records) StartRecords();
}

void Platform::StartRecords() {
  auto s = ServiceProcess::Start("continuum-session-record",
                                 {"--database-url=" + records_db, "--redis-address=" + redis->address(),
                                  "--scheduling-address=" + scheduling->address(),
                                  std::string("--jwt-hs256-secret=") + kTestJwtSecret},
                                 dir);
  ASSERT_TRUE(s.ok()) << s.status();
  records = std::move(*s);
  rec = rv1::SessionRecordService::NewStub(grpc::CreateChannel(records->address(), grpc::InsecureChannelCredentials()));
}

std::string Platform::StartMessaging() {
  if (messaging_db.empty()) messaging_db = DatabaseUrl("messaging");
  auto s = ServiceProcess::Start("continuum-messaging",
                                 {"--database-url=" + messaging_db, "--redis-address=" + redis->address(),
                                  "--scheduling-address=" + scheduling->address(),
                                  std::string("--jwt-hs256-secret=") + kTestJwtSecret},
                                 dir);
  EXPECT_TRUE(s.ok()) << s.status();
  if (!s.ok()) return "";
  messaging.push_back(std::move(*s));
  return messaging.back()->address();
}

grpc::Status Platform::AddPerson(const std::string& id, cv1::Role role, const std::string& request_id) {
  sv1::CreatePersonRequest r;
  r.set_person_id(id);
  r.mutable_person()->set_display_name(id);
  auto* membership = r.mutable_person()->add_memberships();
  membership->set_clinic("clinics/kap");
  membership->set_role(role);
  r.set_request_id(request_id);
  sv1::Person out;
  return CallWith(sched.get(), &sv1::SchedulingService::Stub::CreatePerson, admin, r, &out);
}

grpc::Status Platform::OpenAllWeek(const std::string& provider_id, const std::string& request_id) {
  sv1::UpdateAvailabilityRequest a;
  a.mutable_availability()->set_name("clinics/kap/providers/" + provider_id + "/availability");
  for (int d = 1; d <= 7; ++d) {
    auto* w = a.mutable_availability()->add_weekly_hours();
    w->set_day_of_week(static_cast<cv1::DayOfWeek>(d));
    w->mutable_hours()->mutable_start()->set_hours(0);
    w->mutable_hours()->mutable_end()->set_hours(24);
  }
  a.mutable_update_mask()->add_paths("weekly_hours");
  a.set_request_id(request_id);
  sv1::Availability out;
  return CallWith(sched.get(), &sv1::SchedulingService::Stub::UpdateAvailability, admin, a, &out);
}

grpc::Status Platform::SetCareTeam(const std::string& client_id, const std::vector<std::string>& member_ids,
                                   const std::string& request_id) {
  sv1::UpdateCareTeamRequest t;
  t.mutable_care_team()->set_name("clinics/kap/careTeams/" + client_id);
  for (const auto& m : member_ids) t.mutable_care_team()->add_members()->set_person("people/" + m);
  t.mutable_update_mask()->add_paths("members");
  t.set_allow_missing(true);
  t.set_request_id(request_id);
  sv1::CareTeam out;
  return CallWith(sched.get(), &sv1::SchedulingService::Stub::UpdateCareTeam, admin, t, &out);
}

grpc::Status Platform::AddProgram(const std::string& client_id, const std::string& request_id, std::string* name) {
  sv1::CreateProgramRequest pr;
  pr.set_parent("clinics/kap");
  pr.mutable_program()->set_client("people/" + client_id);
  pr.set_request_id(request_id);
  sv1::Program out;
  grpc::Status s = CallWith(sched.get(), &sv1::SchedulingService::Stub::CreateProgram, admin, pr, &out);
  *name = out.name();
  return s;
}

std::string Platform::SeedMedicineSession() {
  using S = sv1::SchedulingService::Stub;
  auto ok = [](const grpc::Status& s, const char* what) {
    EXPECT_TRUE(s.ok()) << what << ": " << s.error_message();
    return s.ok();
  };
  sv1::CreateClinicRequest cc;
  cc.set_clinic_id("kap");
  cc.mutable_clinic()->set_display_name("KAP");
  cc.mutable_clinic()->set_time_zone("Europe/Berlin");
  cc.mutable_clinic()->mutable_policy()->mutable_minimum_notice()->set_seconds(60);
  cc.mutable_clinic()->mutable_policy()->mutable_supervised_observation_period()->set_seconds(2);
  auto* room = cc.mutable_clinic()->add_rooms();
  room->set_room_id("room-1");
  room->set_supports_medicine_sessions(true);
  cc.set_request_id("seed-clinic");
  sv1::Clinic clinic;
  if (!ok(CallWith(sched.get(), &S::CreateClinic, ops, cc, &clinic), "clinic")) return "";
  for (auto [id, role] : std::vector<std::pair<std::string, cv1::Role>>{
           {"ther", cv1::ROLE_THERAPIST}, {"clin", cv1::ROLE_CLINICIAN}, {"casey", cv1::ROLE_CLIENT},
           {"sam", cv1::ROLE_SITTER}, {"outsider", cv1::ROLE_THERAPIST}}) {
    if (!ok(AddPerson(id, role, "seed-" + id), "person")) return "";
  }
  for (const std::string provider : {"ther", "clin"}) {
    if (!ok(OpenAllWeek(provider, "seed-hours-" + provider), "availability")) return "";
  }
  if (!ok(SetCareTeam("casey", {"ther", "clin"}, "seed-team"), "team")) return "";
  if (!ok(AddProgram("casey", "seed-program", &program), "program")) return "";
  absl::Time start = absl::Now() + absl::Hours(2);
  start = absl::FromUnixSeconds(absl::ToUnixSeconds(start) / 60 * 60);
  auto book = [&](cv1::AppointmentKind kind, absl::Time at, absl::Duration len, const std::string& rid) {
    sv1::BookAppointmentRequest b;
    b.set_parent("clinics/kap");
    b.mutable_appointment()->set_kind(kind);
    b.mutable_appointment()->set_program(program);
    b.mutable_appointment()->set_provider("people/ther");
    b.mutable_appointment()->mutable_start_time()->set_seconds(absl::ToUnixSeconds(at));
    b.mutable_appointment()->mutable_end_time()->set_seconds(absl::ToUnixSeconds(at + len));
    b.set_request_id(rid);
    sv1::BookAppointmentResponse out;
    ok(CallWith(sched.get(), &S::BookAppointment, admin, b, &out), "book");
    return out.appointment().name();
  };
  std::string consult = book(cv1::APPOINTMENT_KIND_CONSULTATION, start, absl::Hours(1), "seed-consult");
  for (auto state : {sv1::Appointment::STATE_CHECKED_IN, sv1::Appointment::STATE_FULFILLED}) {
    sv1::UpdateAppointmentStateRequest u;
    u.set_name(consult);
    u.set_state(state);
    u.set_request_id(absl::StrCat("seed-state-", state));
    sv1::Appointment a;
    if (!ok(CallWith(sched.get(), &S::UpdateAppointmentState, admin, u, &a), "consult state")) return "";
  }
  sv1::SetDosePlanRequest plan;
  plan.set_name(program);
  plan.mutable_dose_plan()->set_route(cv1::DOSE_ROUTE_INTRAMUSCULAR);
  plan.mutable_dose_plan()->set_min_dose_mg(20);
  plan.mutable_dose_plan()->set_max_dose_mg(60);
  plan.mutable_dose_plan()->set_max_sessions(6);
  plan.set_request_id("seed-plan");
  sv1::Program planned;
  if (!ok(CallWith(sched.get(), &S::SetDosePlan, clinician, plan, &planned), "plan")) return "";
  return book(cv1::APPOINTMENT_KIND_MEDICINE_SUPERVISED, start + absl::Hours(24), absl::Hours(3), "seed-medicine");
}

}  // namespace continuum::testing
