// The scheduling binary over gRPC with a real Redis, on SQLite and on PostgreSQL:
// concurrent bookings of one slot (exactly one wins), the role x operation table, and events
// arriving on the Redis stream.
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/redis/client.h"
#include "common/redis/streams.h"
#include "common/testing/harness.h"
#include "continuum/events/v1/events.pb.h"
#include "continuum/scheduling/v1/scheduling_service.grpc.pb.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace continuum {
namespace {

namespace v1 = continuum::scheduling::v1;
namespace cv1 = continuum::common::v1;
using testing::PostgresServer;
using testing::RedisServer;
using testing::ServiceProcess;
using testing::TempDir;
using testing::TestToken;

std::string Reason(const grpc::Status& s) {
  google::rpc::Status st;
  if (!st.ParseFromString(s.error_details())) return "";
  for (const auto& d : st.details()) {
    google::rpc::ErrorInfo info;
    if (d.UnpackTo(&info)) return info.reason();
  }
  return "";
}

google::protobuf::Timestamp Ts(absl::Time t) {
  google::protobuf::Timestamp out;
  out.set_seconds(absl::ToUnixSeconds(t));
  return out;
}

class SchedulingBinaryTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto redis = RedisServer::Start();
    ASSERT_TRUE(redis.ok()) << redis.status();
    redis_ = std::move(*redis);
    std::string url = "sqlite:" + dir_.File("scheduling.db");
    if (GetParam() == "postgres") {
      auto pg = PostgresServer::Shared();
      ASSERT_TRUE(pg.ok()) << pg.status();
      auto u = (*pg)->CreateDatabase();
      ASSERT_TRUE(u.ok()) << u.status();
      url = *u;
    }
    // A cached appointment lives an hour here: only a change notice can refresh it in time.
    args_ = {"--database-url=" + url, "--redis-address=" + redis_->address(),
             std::string("--jwt-hs256-secret=") + testing::kTestJwtSecret, "--worker-threads=16",
             "--database-pool=8", "--appointment-cache-ttl=1h"};
    auto svc = ServiceProcess::Start("continuum-scheduling", args_, dir_);
    ASSERT_TRUE(svc.ok()) << svc.status();
    service_ = std::move(*svc);
    stub_ = v1::SchedulingService::NewStub(
        grpc::CreateChannel(service_->address(), grpc::InsecureChannelCredentials()));
    Seed();
  }

  template <typename Req, typename Resp>
  grpc::Status Call(grpc::Status (v1::SchedulingService::Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
                    const std::string& token, const Req& req, Resp* resp,
                    v1::SchedulingService::Stub* stub = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    ctx.AddMetadata("authorization", "Bearer " + token);
    return ((stub != nullptr ? stub : stub_.get())->*method)(&ctx, req, resp);
  }

  // One clinic, a therapist and a clinician open 07:00-21:00 every day, kClients clients
  // each with a care team and an ACTIVE program.
  static constexpr int kClients = 12;
  void Seed() {
    v1::CreateClinicRequest cc;
    cc.set_clinic_id("north");
    cc.mutable_clinic()->set_display_name("North");
    cc.mutable_clinic()->set_time_zone("Europe/Berlin");
    cc.set_request_id("c");
    v1::Clinic clinic;
    ASSERT_TRUE(Call(&v1::SchedulingService::Stub::CreateClinic, service_token_, cc, &clinic).ok());
    auto person = [&](const std::string& id, cv1::Role role) {
      v1::CreatePersonRequest r;
      r.set_person_id(id);
      r.mutable_person()->set_display_name(id);
      r.mutable_person()->add_memberships()->set_clinic("clinics/north");
      r.mutable_person()->mutable_memberships(0)->set_role(role);
      r.set_request_id("p-" + id);
      v1::Person out;
      auto s = Call(&v1::SchedulingService::Stub::CreatePerson, admin_, r, &out);
      ASSERT_TRUE(s.ok()) << s.error_message();
    };
    person("ther", cv1::ROLE_THERAPIST);
    person("clin", cv1::ROLE_CLINICIAN);
    person("outsider", cv1::ROLE_THERAPIST);
    for (const std::string provider : {"ther", "clin"}) {
      v1::UpdateAvailabilityRequest a;
      a.mutable_availability()->set_name("clinics/north/providers/" + provider + "/availability");
      for (int d = 1; d <= 7; ++d) {
        auto* w = a.mutable_availability()->add_weekly_hours();
        w->set_day_of_week(static_cast<cv1::DayOfWeek>(d));
        w->mutable_hours()->mutable_start()->set_hours(7);
        w->mutable_hours()->mutable_end()->set_hours(21);
      }
      a.mutable_update_mask()->add_paths("weekly_hours");
      a.set_request_id("a-" + provider);
      v1::Availability out;
      ASSERT_TRUE(Call(&v1::SchedulingService::Stub::UpdateAvailability, admin_, a, &out).ok());
    }
    for (int i = 0; i < kClients; ++i) {
      std::string id = "client" + std::to_string(i);
      person(id, cv1::ROLE_CLIENT);
      v1::UpdateCareTeamRequest t;
      t.mutable_care_team()->set_name("clinics/north/careTeams/" + id);
      t.mutable_care_team()->add_members()->set_person("people/ther");
      t.mutable_care_team()->add_members()->set_person("people/clin");
      t.mutable_update_mask()->add_paths("members");
      t.set_allow_missing(true);
      t.set_request_id("t-" + id);
      v1::CareTeam team;
      ASSERT_TRUE(Call(&v1::SchedulingService::Stub::UpdateCareTeam, admin_, t, &team).ok());
      v1::CreateProgramRequest p;
      p.set_parent("clinics/north");
      p.mutable_program()->set_client("people/" + id);
      p.set_request_id("prog-" + id);
      v1::Program program;
      ASSERT_TRUE(Call(&v1::SchedulingService::Stub::CreateProgram, admin_, p, &program).ok());
      programs_.push_back(program.name());
    }
  }

  v1::BookAppointmentRequest Consultation(int client, absl::Time start, const std::string& request_id) {
    v1::BookAppointmentRequest r;
    r.set_parent("clinics/north");
    r.mutable_appointment()->set_kind(cv1::APPOINTMENT_KIND_CONSULTATION);
    r.mutable_appointment()->set_program(programs_[client]);
    r.mutable_appointment()->set_provider("people/ther");
    *r.mutable_appointment()->mutable_start_time() = Ts(start);
    *r.mutable_appointment()->mutable_end_time() = Ts(start + absl::Hours(1));
    r.set_request_id(request_id);
    return r;
  }

  // 10:00 Berlin time, 10 days from now.
  absl::Time SlotTime(int days = 10) {
    absl::TimeZone berlin;
    absl::LoadTimeZone("Europe/Berlin", &berlin);
    absl::CivilDay day = absl::ToCivilDay(absl::Now(), berlin) + days;
    return absl::FromCivil(absl::CivilSecond(day.year(), day.month(), day.day(), 10, 0, 0), berlin);
  }

  TempDir dir_;
  std::vector<std::string> args_;
  std::unique_ptr<RedisServer> redis_;
  std::unique_ptr<ServiceProcess> service_;
  std::unique_ptr<v1::SchedulingService::Stub> stub_;
  std::vector<std::string> programs_;
  std::string service_token_ = TestToken("ops", "service", {"*"});
  std::string admin_ = TestToken("people/boss", "admin", {"north"});
};

TEST_P(SchedulingBinaryTest, ConcurrentBookingsOfOneSlotHaveExactlyOneWinner) {
  absl::Time slot = SlotTime();
  std::vector<grpc::Status> results(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      v1::BookAppointmentResponse resp;
      results[i] = Call(&v1::SchedulingService::Stub::BookAppointment, admin_,
                        Consultation(i, slot, "race-" + std::to_string(i)), &resp);
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0, conflicts = 0;
  for (const auto& s : results) {
    if (s.ok()) {
      ++ok;
    } else if (s.error_code() == grpc::StatusCode::ABORTED && Reason(s) == "SLOT_CONFLICT") {
      ++conflicts;
    } else {
      ADD_FAILURE() << "unexpected: " << s.error_code() << " " << s.error_message() << " " << Reason(s);
    }
  }
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(conflicts, kClients - 1);
  v1::ListAppointmentsRequest l;
  l.set_parent("clinics/north");
  v1::ListAppointmentsResponse listed;
  ASSERT_TRUE(Call(&v1::SchedulingService::Stub::ListAppointments, admin_, l, &listed).ok());
  EXPECT_EQ(listed.appointments_size(), 1) << "exactly one appointment is stored";
}

// The value of one metric series ("name{labels}") on a service's /metrics, or -1.
double Metric(const ServiceProcess& svc, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(testing::HttpGet(svc.metrics_port(), "/metrics"), '\n')) {
    double value = 0;
    if (absl::ConsumePrefix(&line, series + " ") && absl::SimpleAtod(line, &value)) return value;
  }
  return -1;
}

// Two replicas on one database, each with its appointment cache: a change made through one
// reaches the other's cache within moments (the outbox notice; cached values would otherwise
// live an hour here), and while Redis is down the other replica reads the database (its cache
// is suspended), so it never answers with an appointment as it was before a change.
TEST_P(SchedulingBinaryTest, ReplicasCacheAppointmentsAndSeeEachOthersChanges) {
  auto other = ServiceProcess::Start("continuum-scheduling", args_, dir_);
  ASSERT_TRUE(other.ok()) << other.status();
  auto other_stub =
      v1::SchedulingService::NewStub(grpc::CreateChannel((*other)->address(), grpc::InsecureChannelCredentials()));
  const std::string serving = "continuum_appointment_cache_serving";
  const std::string hits = "continuum_appointment_cache_lookups_total{result=\"hit\"}";
  ASSERT_TRUE(testing::WaitUntil([&] { return Metric(**other, serving) == 1; }, absl::Seconds(10)));
  auto read_on_other = [&](const std::string& name) {
    v1::GetAppointmentRequest g;
    g.set_name(name);
    v1::Appointment a;
    grpc::Status s = Call(&v1::SchedulingService::Stub::GetAppointment, admin_, g, &a, other_stub.get());
    EXPECT_TRUE(s.ok()) << s.error_message();
    return a.state();
  };

  v1::BookAppointmentResponse booked;
  ASSERT_TRUE(Call(&v1::SchedulingService::Stub::BookAppointment, admin_, Consultation(0, SlotTime(), "r1"), &booked)
                  .ok());
  const std::string name = booked.appointment().name();
  EXPECT_EQ(read_on_other(name), v1::Appointment::STATE_BOOKED);
  EXPECT_EQ(read_on_other(name), v1::Appointment::STATE_BOOKED);
  EXPECT_GE(Metric(**other, hits), 1) << "the second read comes from the cache";

  v1::CancelAppointmentRequest cancel;
  cancel.set_name(name);
  cancel.set_request_id("cancel-1");
  cancel.set_reason("client asked to move it");
  v1::Appointment cancelled;
  grpc::Status st = Call(&v1::SchedulingService::Stub::CancelAppointment, admin_, cancel, &cancelled);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_TRUE(testing::WaitUntil([&] { return read_on_other(name) == v1::Appointment::STATE_CANCELLED; },
                                 absl::Seconds(10)))
      << "the other replica still shows the appointment as it was before the change";

  // Redis down: changes still commit (the notices wait in the outbox), and the other replica,
  // missing them, stops serving from its cache.
  ASSERT_TRUE(Call(&v1::SchedulingService::Stub::BookAppointment, admin_, Consultation(1, SlotTime(11), "r2"), &booked)
                  .ok());
  const std::string second = booked.appointment().name();
  EXPECT_EQ(read_on_other(second), v1::Appointment::STATE_BOOKED);
  EXPECT_EQ(read_on_other(second), v1::Appointment::STATE_BOOKED);
  redis_->Kill();
  ASSERT_TRUE(testing::WaitUntil([&] { return Metric(**other, serving) == 0; }, absl::Seconds(10)));
  cancel.set_name(second);
  cancel.set_request_id("cancel-2");
  st = Call(&v1::SchedulingService::Stub::CancelAppointment, admin_, cancel, &cancelled);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(read_on_other(second), v1::Appointment::STATE_CANCELLED) << "read from the database at once";
  ASSERT_TRUE(redis_->Restart().ok());
  ASSERT_TRUE(testing::WaitUntil([&] { return Metric(**other, serving) == 1; }, absl::Seconds(20)));
  EXPECT_EQ(read_on_other(second), v1::Appointment::STATE_CANCELLED);
  EXPECT_EQ(read_on_other(second), v1::Appointment::STATE_CANCELLED);
}

TEST_P(SchedulingBinaryTest, EventsArriveOnTheRedisStream) {
  v1::BookAppointmentResponse booked;
  ASSERT_TRUE(Call(&v1::SchedulingService::Stub::BookAppointment, admin_, Consultation(0, SlotTime(), "ev"), &booked).ok());
  redis::Options o;
  o.port = redis_->port();
  redis::Client client(o);
  events::v1::EventEnvelope found;
  ASSERT_TRUE(testing::WaitUntil([&] {
    auto r = client.Command({"XRANGE", "continuum:events:scheduling", "-", "+"});
    if (!r.ok()) return false;
    for (const auto& e : redis::ParseEntries(*r)) {
      events::v1::EventEnvelope env;
      if (e.Get("type") == "appointment_booked" && env.ParseFromString(e.Get("payload"))) {
        found = env;
        return true;
      }
    }
    return false;
  }, absl::Seconds(15))) << "no appointment_booked event on continuum:events:scheduling";
  EXPECT_EQ(found.appointment_booked().appointment().name(), booked.appointment().name());
  EXPECT_EQ(found.clinic(), "clinics/north");
  EXPECT_EQ(found.source_service(), "scheduling");
  EXPECT_FALSE(found.event_id().empty());
}

TEST_P(SchedulingBinaryTest, RoleByOperationTable) {
  v1::BookAppointmentResponse booked;
  ASSERT_TRUE(Call(&v1::SchedulingService::Stub::BookAppointment, admin_, Consultation(0, SlotTime(), "rt"), &booked).ok());
  const std::string appt = booked.appointment().name();
  struct Who {
    std::string label, token;
  };
  std::vector<Who> who = {
      {"client-self", TestToken("people/client0", "client", {"north"})},
      {"client-other", TestToken("people/client1", "client", {"north"})},
      {"therapist-on-team", TestToken("people/ther", "therapist", {"north"})},
      {"therapist-off-team", TestToken("people/outsider", "therapist", {"north"})},
      {"admin", admin_},
      {"partner", TestToken("acme-ehr", "partner", {"north"})},
      {"admin-other-clinic", TestToken("people/boss2", "admin", {"south"})},
  };
  using Code = grpc::StatusCode;
  const Code OK = Code::OK, DENIED = Code::PERMISSION_DENIED;
  struct Op {
    std::string label;
    std::function<grpc::Status(const std::string&)> call;
    std::vector<Code> expected;  // in the order of `who`
  };
  std::vector<Op> ops = {
      {"GetAppointment",
       [&](const std::string& t) {
         v1::GetAppointmentRequest r;
         r.set_name(appt);
         v1::Appointment a;
         return Call(&v1::SchedulingService::Stub::GetAppointment, t, r, &a);
       },
       {OK, DENIED, OK, DENIED, OK, OK, DENIED}},
      {"GetProgram",
       [&](const std::string& t) {
         v1::GetProgramRequest r;
         r.set_name(programs_[0]);
         v1::Program p;
         return Call(&v1::SchedulingService::Stub::GetProgram, t, r, &p);
       },
       {OK, DENIED, OK, DENIED, OK, OK, DENIED}},
      {"GetCareTeam",
       [&](const std::string& t) {
         v1::GetCareTeamRequest r;
         r.set_name("clinics/north/careTeams/client0");
         v1::CareTeam c;
         return Call(&v1::SchedulingService::Stub::GetCareTeam, t, r, &c);
       },
       {OK, DENIED, OK, DENIED, OK, OK, DENIED}},
      {"ListPeople",
       [&](const std::string& t) {
         v1::ListPeopleRequest r;
         r.set_clinic("clinics/north");
         v1::ListPeopleResponse p;
         return Call(&v1::SchedulingService::Stub::ListPeople, t, r, &p);
       },
       {DENIED, DENIED, OK, OK, OK, OK, DENIED}},
      {"UpdateCareTeam",
       [&](const std::string& t) {
         v1::UpdateCareTeamRequest r;
         r.mutable_care_team()->set_name("clinics/north/careTeams/client0");
         r.mutable_care_team()->add_members()->set_person("people/ther");
         r.mutable_care_team()->add_members()->set_person("people/clin");
         r.mutable_update_mask()->add_paths("members");
         r.set_request_id("ut-" + std::to_string(std::hash<std::string>()(t)));
         v1::CareTeam c;
         return Call(&v1::SchedulingService::Stub::UpdateCareTeam, t, r, &c);
       },
       {DENIED, DENIED, DENIED, DENIED, OK, DENIED, DENIED}},
      {"CreateClinic",
       [&](const std::string& t) {
         v1::CreateClinicRequest r;
         r.set_clinic_id("x" + std::to_string(std::hash<std::string>()(t) % 100000));
         r.mutable_clinic()->set_display_name("X");
         r.mutable_clinic()->set_time_zone("UTC");
         r.set_request_id("cc");
         v1::Clinic c;
         return Call(&v1::SchedulingService::Stub::CreateClinic, t, r, &c);
       },
       {DENIED, DENIED, DENIED, DENIED, DENIED, DENIED, DENIED}},
  };
  for (const auto& op : ops) {
    for (size_t i = 0; i < who.size(); ++i) {
      grpc::Status s = op.call(who[i].token);
      EXPECT_EQ(s.error_code(), op.expected[i])
          << op.label << " as " << who[i].label << ": " << s.error_message();
    }
  }
  // No token at all, and a forged one.
  grpc::ClientContext ctx;
  v1::GetAppointmentRequest r;
  r.set_name(appt);
  v1::Appointment a;
  EXPECT_EQ(stub_->GetAppointment(&ctx, r, &a).error_code(), Code::UNAUTHENTICATED);
  std::string forged = TestToken("people/client0", "admin", {"north"});
  char& c = forged[forged.size() - 10];  // inside the signature
  c = c == 'A' ? 'B' : 'A';
  EXPECT_EQ(Call(&v1::SchedulingService::Stub::GetAppointment, forged, r, &a).error_code(), Code::UNAUTHENTICATED);
}

TEST_P(SchedulingBinaryTest, BadInputIsInvalidArgumentWithFieldViolations) {
  v1::BookAppointmentRequest r = Consultation(0, SlotTime(), "bad");
  r.mutable_appointment()->mutable_end_time()->set_seconds(r.appointment().start_time().seconds() - 60);
  r.mutable_appointment()->set_kind(cv1::APPOINTMENT_KIND_UNSPECIFIED);
  v1::BookAppointmentResponse resp;
  grpc::Status s = Call(&v1::SchedulingService::Stub::BookAppointment, admin_, r, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  google::rpc::Status st;
  ASSERT_TRUE(st.ParseFromString(s.error_details()));
  google::rpc::BadRequest bad;
  bool has_bad_request = false;
  for (const auto& d : st.details()) has_bad_request = has_bad_request || d.UnpackTo(&bad);
  ASSERT_TRUE(has_bad_request);
  std::vector<std::string> fields;
  for (const auto& v : bad.field_violations()) fields.push_back(v.field());
  EXPECT_THAT(fields, ::testing::IsSupersetOf({"appointment.kind", "appointment.end_time"}));
  v1::GetAppointmentRequest g;
  g.set_name("not/a/name");
  v1::Appointment a;
  EXPECT_EQ(Call(&v1::SchedulingService::Stub::GetAppointment, admin_, g, &a).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

INSTANTIATE_TEST_SUITE_P(Backends, SchedulingBinaryTest, ::testing::Values("sqlite", "postgres"));

}  // namespace
}  // namespace continuum
