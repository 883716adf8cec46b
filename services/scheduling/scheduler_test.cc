// The scheduling domain with a FakeClock and SQLite :memory:: the KAP rules one by one,
// idempotency, double booking, transitions, DST slot search and the waitlist.
#include "services/scheduling/scheduler.h"

#include "common/api/idempotency.h"
#include "common/db/migrations.h"
#include "common/outbox/outbox.h"
#include "common/status/errors.h"
#include "common/testing/matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/scheduling/rules.h"
#include "services/scheduling/scheduling_service.h"

namespace continuum::scheduling {
namespace {

using auth::Principal;
using auth::Role;
using ::testing::HasSubstr;
using AState = v1::Appointment::State;

using ::continuum::testing::IsError;

class SchedulerTest : public ::testing::Test {
 protected:
  // Monday 2026-03-02 08:00 in New York (13:00 UTC).
  SchedulerTest() : clock_(absl::FromCivil(absl::CivilSecond(2026, 3, 2, 13, 0, 0), absl::UTCTimeZone())) {}

  void SetUp() override {
    auto db = db::Open({.url = "sqlite::memory:"});
    ASSERT_TRUE(db.ok());
    db_ = std::move(*db);
    ASSERT_TRUE(db::ApplyMigrations(*db_, "outbox", outbox::Migrations()).ok());
    ASSERT_TRUE(db::ApplyMigrations(*db_, "idempotency", api::IdempotencyMigrations()).ok());
    auto migrated = db::ApplyMigrations(*db_, "scheduling", Migrations());
    ASSERT_TRUE(migrated.ok()) << migrated;
    scheduler_ = std::make_unique<Scheduler>(*db_, clock_);
    ASSERT_TRUE(absl::LoadTimeZone("America/New_York", &tz_));

    v1::CreateClinicRequest cc;
    cc.set_clinic_id("c01");
    cc.mutable_clinic()->set_display_name("Clinic One");
    cc.mutable_clinic()->set_time_zone("America/New_York");
    auto* room = cc.mutable_clinic()->add_rooms();
    room->set_room_id("room-a");
    room->set_supports_medicine_sessions(true);
    cc.set_request_id("clinic");
    auto clinic = scheduler_->CreateClinic(service_, cc);
    ASSERT_TRUE(clinic.ok()) << clinic.status();
    for (auto [id, role] : std::vector<std::pair<std::string, cv1::Role>>{
             {"cl1", cv1::ROLE_CLIENT}, {"cl2", cv1::ROLE_CLIENT}, {"th1", cv1::ROLE_THERAPIST},
             {"cn1", cv1::ROLE_CLINICIAN}, {"th9", cv1::ROLE_THERAPIST}}) {
      v1::CreatePersonRequest r;
      r.set_person_id(id);
      r.mutable_person()->set_display_name(id);
      auto* m = r.mutable_person()->add_memberships();
      m->set_clinic("clinics/c01");
      m->set_role(role);
      r.set_request_id("person-" + id);
      auto p = scheduler_->CreatePerson(admin_, r);
      ASSERT_TRUE(p.ok()) << p.status();
    }
    for (std::string client : {"cl1", "cl2"}) {
      v1::UpdateCareTeamRequest t;
      t.mutable_care_team()->set_name("clinics/c01/careTeams/" + client);
      t.mutable_care_team()->add_members()->set_person("people/th1");
      t.mutable_care_team()->add_members()->set_person("people/cn1");
      t.mutable_update_mask()->add_paths("members");
      t.set_allow_missing(true);
      t.set_request_id("team-" + client);
      auto team = scheduler_->UpdateCareTeam(admin_, t);
      ASSERT_TRUE(team.ok()) << team.status();
    }
    for (std::string provider : {"th1", "cn1"}) SetHours(provider, 7, 21);
    program_ = Enrol("cl1");
  }

  void SetHours(const std::string& provider, int from_hour, int to_hour) {
    v1::UpdateAvailabilityRequest a;
    a.mutable_availability()->set_name("clinics/c01/providers/" + provider + "/availability");
    for (int d = 1; d <= 7; ++d) {
      auto* w = a.mutable_availability()->add_weekly_hours();
      w->set_day_of_week(static_cast<cv1::DayOfWeek>(d));
      w->mutable_hours()->mutable_start()->set_hours(from_hour);
      w->mutable_hours()->mutable_end()->set_hours(to_hour);
    }
    a.mutable_update_mask()->add_paths("weekly_hours");
    a.set_request_id("hours-" + provider + std::to_string(from_hour) + std::to_string(to_hour));
    auto r = scheduler_->UpdateAvailability(admin_, a);
    ASSERT_TRUE(r.ok()) << r.status();
  }

  std::string Enrol(const std::string& client) {
    v1::CreateProgramRequest r;
    r.set_parent("clinics/c01");
    r.mutable_program()->set_client("people/" + client);
    r.set_request_id("enrol-" + client);
    auto p = scheduler_->CreateProgram(admin_, r);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? p->name() : "";
  }

  absl::Status SetDosePlan() {
    v1::SetDosePlanRequest r;
    r.set_name(program_);
    r.mutable_dose_plan()->set_route(cv1::DOSE_ROUTE_SUBLINGUAL);
    r.mutable_dose_plan()->set_min_dose_mg(100);
    r.mutable_dose_plan()->set_max_dose_mg(300);
    r.mutable_dose_plan()->set_max_sessions(6);
    r.set_request_id("plan");
    return scheduler_->SetDosePlan(clinician_, r).status();
  }

  // Clinic-local civil time on day `day` of March 2026 (or later days beyond 31).
  absl::Time Local(int day, int hour, int minute = 0) {
    return absl::FromCivil(absl::CivilSecond(2026, 3, day, hour, minute, 0), tz_);
  }

  absl::StatusOr<v1::BookAppointmentResponse> Book(cv1::AppointmentKind kind, absl::Time start, absl::Duration length,
                                                   const std::string& provider = "th1",
                                                   const std::string& medicine = "",
                                                   const Principal* who = nullptr, std::string program = "") {
    v1::BookAppointmentRequest r;
    r.set_parent("clinics/c01");
    auto* a = r.mutable_appointment();
    a->set_kind(kind);
    a->set_program(program.empty() ? program_ : program);
    a->set_provider("people/" + provider);
    *a->mutable_start_time() = ToProto(start);
    *a->mutable_end_time() = ToProto(start + length);
    a->set_medicine_appointment(medicine);
    r.set_request_id(absl::StrCat("book-", next_request_++));
    return scheduler_->BookAppointment(who ? *who : admin_, r);
  }

  absl::StatusOr<v1::Appointment> Move(const std::string& name, AState to, const Principal* who = nullptr) {
    v1::UpdateAppointmentStateRequest r;
    r.set_name(name);
    r.set_state(to);
    r.set_request_id(absl::StrCat("state-", next_request_++));
    return scheduler_->UpdateAppointmentState(who ? *who : admin_, r);
  }

  // Checks in and fulfils (as the session-record service for medicine sessions).
  void Fulfil(const std::string& name) {
    ASSERT_TRUE(Move(name, v1::Appointment::STATE_CHECKED_IN).ok());
    auto done = Move(name, v1::Appointment::STATE_FULFILLED, &service_);
    ASSERT_TRUE(done.ok()) << done.status();
  }

  int64_t OutboxCount(const std::string& type) {
    auto rows = db_->Query("SELECT COUNT(*) FROM outbox WHERE type = $1", {type});
    return rows.ok() ? rows->at(0).Int(0) : -1;
  }

  FakeClock clock_;
  absl::TimeZone tz_;
  std::unique_ptr<db::Database> db_;
  std::unique_ptr<Scheduler> scheduler_;
  std::string program_;
  int next_request_ = 0;
  Principal service_{"scheduler-tests", Role::kService, {"*"}};
  Principal admin_{"people/ad1", Role::kAdmin, {"c01"}};
  Principal clinician_{"people/cn1", Role::kClinician, {"c01"}};
  Principal therapist_{"people/th1", Role::kTherapist, {"c01"}};
  Principal outsider_therapist_{"people/th9", Role::kTherapist, {"c01"}};
  Principal client_{"people/cl1", Role::kClient, {"c01"}};
  Principal other_client_{"people/cl2", Role::kClient, {"c01"}};
  Principal other_clinic_admin_{"people/ad2", Role::kAdmin, {"c02"}};
};

constexpr auto kConsult = cv1::APPOINTMENT_KIND_CONSULTATION;
constexpr auto kSupervised = cv1::APPOINTMENT_KIND_MEDICINE_SUPERVISED;
constexpr auto kSelfGuided = cv1::APPOINTMENT_KIND_MEDICINE_SELF_GUIDED;
constexpr auto kIntegration = cv1::APPOINTMENT_KIND_INTEGRATION;
constexpr auto kReview = cv1::APPOINTMENT_KIND_CLINICIAN_REVIEW;
const auto kFailed = absl::StatusCode::kFailedPrecondition;

TEST_F(SchedulerTest, ProgramIsBookedRuleByRuleEachRefusedBeforeItIsMet) {
  // Rule 1: consultation first.
  EXPECT_THAT(Book(kSupervised, Local(4, 9), absl::Hours(3)), IsError(kFailed, "CONSULTATION_NOT_FULFILLED"));
  auto consult = Book(kConsult, Local(3, 9), absl::Hours(1));
  ASSERT_TRUE(consult.ok()) << consult.status();
  EXPECT_TRUE(consult->proposed_integration_slots().empty());
  clock_.Set(Local(3, 10, 30));
  Fulfil(consult->appointment().name());
  // ... and a dose plan.
  EXPECT_THAT(Book(kSupervised, Local(5, 9), absl::Hours(3)), IsError(kFailed, "DOSE_PLAN_MISSING"));
  ASSERT_TRUE(SetDosePlan().ok());

  // Rule 2: self-guided only after the supervised sessions.
  EXPECT_THAT(Book(kSelfGuided, Local(5, 9), absl::Hours(3)), IsError(kFailed, "SUPERVISED_SESSIONS_INCOMPLETE"));
  auto med1 = Book(kSupervised, Local(5, 9), absl::Hours(3));
  ASSERT_TRUE(med1.ok()) << med1.status();
  EXPECT_EQ(med1->appointment().room(), "room-a") << "in-clinic medicine sessions get a room";
  ASSERT_FALSE(med1->proposed_integration_slots().empty()) << "booking a medicine session proposes integration slots";
  for (const auto& slot : med1->proposed_integration_slots()) {
    EXPECT_GE(FromProto(slot.start_time()), Local(5, 12));
    EXPECT_LE(FromProto(slot.start_time()), Local(5, 12) + absl::Hours(72));
    EXPECT_EQ(slot.provider(), "people/th1") << "integration is with a therapist";
  }

  // Rule 3: the next medicine session needs the earlier one's integration.
  EXPECT_THAT(Book(kSupervised, Local(12, 9), absl::Hours(3), "cn1"), IsError(kFailed, "INTEGRATION_MISSING"));
  EXPECT_THAT(Book(kIntegration, Local(10, 9), absl::Hours(1), "th1", med1->appointment().name()),
              IsError(kFailed, "INTEGRATION_OUTSIDE_WINDOW"));
  auto integ1 = Book(kIntegration, FromProto(med1->proposed_integration_slots(0).start_time()), absl::Hours(1), "th1",
                     med1->appointment().name());
  ASSERT_TRUE(integ1.ok()) << integ1.status();

  // Minimum interval between medicine sessions (default 72h).
  EXPECT_THAT(Book(kSupervised, Local(7, 9), absl::Hours(3), "cn1"), IsError(kFailed, "MEDICINE_INTERVAL_TOO_SHORT"));
  auto med2 = Book(kSupervised, Local(12, 9), absl::Hours(3), "cn1");
  ASSERT_TRUE(med2.ok()) << med2.status();

  clock_.Set(Local(5, 8, 30));
  Fulfil(med1->appointment().name());
  clock_.Set(Local(12, 8, 30));
  Fulfil(med2->appointment().name());
  // med2 has no integration yet: it is listed as due, and blocks the next medicine session.
  v1::ListIntegrationDueRequest due;
  due.set_parent("clinics/c01");
  auto due_list = scheduler_->ListIntegrationDue(therapist_, due);
  ASSERT_TRUE(due_list.ok()) << due_list.status();
  ASSERT_EQ(due_list->integration_due_size(), 1);
  EXPECT_EQ(due_list->integration_due(0).medicine_appointment(), med2->appointment().name());
  EXPECT_THAT(Book(kSelfGuided, Local(19, 9), absl::Hours(3)), IsError(kFailed, "INTEGRATION_MISSING"));
  ASSERT_TRUE(Book(kIntegration, Local(13, 10), absl::Hours(1), "th1", med2->appointment().name()).ok());

  // Two supervised sessions fulfilled: self-guided is allowed now.
  auto home = Book(kSelfGuided, Local(19, 9), absl::Hours(3));
  ASSERT_TRUE(home.ok()) << home.status();
  EXPECT_EQ(home->appointment().setting(), cv1::CARE_SETTING_HOME);
  EXPECT_TRUE(home->appointment().room().empty());
  EXPECT_GE(OutboxCount("appointment_booked"), 6);
  EXPECT_GE(OutboxCount("integration_due"), 1);
}

TEST_F(SchedulerTest, ReentryAfterLongGapNeedsClinicianReview) {
  auto consult = Book(kConsult, Local(3, 9), absl::Hours(1));
  ASSERT_TRUE(consult.ok());
  clock_.Set(Local(3, 10, 30));
  Fulfil(consult->appointment().name());
  ASSERT_TRUE(SetDosePlan().ok());
  auto med = Book(kSupervised, Local(5, 9), absl::Hours(3));
  ASSERT_TRUE(med.ok()) << med.status();
  ASSERT_TRUE(Book(kIntegration, Local(6, 9), absl::Hours(1), "th1", med->appointment().name()).ok());
  clock_.Set(Local(5, 8, 30));
  Fulfil(med->appointment().name());
  // 100 days later (policy default gap: 90 days).
  clock_.Set(Local(5, 9) + absl::Hours(24 * 100));
  absl::Time later = Local(5, 9) + absl::Hours(24 * 102);
  EXPECT_THAT(Book(kSupervised, later, absl::Hours(3)), IsError(kFailed, "CLINICIAN_REVIEW_REQUIRED"));
  auto review = Book(kReview, later - absl::Hours(24), absl::Minutes(30), "cn1");
  ASSERT_TRUE(review.ok()) << review.status();
  clock_.Set(later - absl::Hours(24) - absl::Minutes(10));
  Fulfil(review->appointment().name());
  EXPECT_TRUE(Book(kSupervised, later, absl::Hours(3)).ok());
}

TEST_F(SchedulerTest, RetryWithSameRequestIdReturnsTheSameAppointment) {
  v1::BookAppointmentRequest r;
  r.set_parent("clinics/c01");
  r.mutable_appointment()->set_kind(kConsult);
  r.mutable_appointment()->set_program(program_);
  r.mutable_appointment()->set_provider("people/th1");
  *r.mutable_appointment()->mutable_start_time() = ToProto(Local(4, 10));
  *r.mutable_appointment()->mutable_end_time() = ToProto(Local(4, 11));
  r.set_request_id("same-id");
  auto first = scheduler_->BookAppointment(client_, r);
  ASSERT_TRUE(first.ok()) << first.status();
  auto retry = scheduler_->BookAppointment(client_, r);
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(first->appointment().name(), retry->appointment().name());
  v1::ListAppointmentsRequest list;
  list.set_parent("clinics/c01");
  EXPECT_EQ(scheduler_->ListAppointments(admin_, list)->appointments_size(), 1);
  *r.mutable_appointment()->mutable_start_time() = ToProto(Local(4, 12));
  *r.mutable_appointment()->mutable_end_time() = ToProto(Local(4, 13));
  EXPECT_THAT(scheduler_->BookAppointment(client_, r), IsError(absl::StatusCode::kAlreadyExists, "REQUEST_ID_REUSED"));
  EXPECT_THAT(scheduler_->BookAppointment(client_, [&] { auto x = r; x.set_request_id(""); return x; }()),
              IsError(absl::StatusCode::kInvalidArgument, "INVALID_FIELD"));
}

TEST_F(SchedulerTest, SecondBookingOfTheSameProviderTimeIsASlotConflict) {
  std::string program2 = Enrol("cl2");
  ASSERT_TRUE(Book(kConsult, Local(4, 10), absl::Hours(1)).ok());
  auto clash = Book(kConsult, Local(4, 10, 30), absl::Hours(1), "th1", "", nullptr, program2);
  EXPECT_THAT(clash, IsError(absl::StatusCode::kAborted, "SLOT_CONFLICT"));
  EXPECT_EQ(ErrorMetadata(clash.status()).at("conflict"), "provider");
  // The same client cannot be in two places either.
  auto client_clash = Book(kConsult, Local(4, 10), absl::Hours(1), "cn1");
  EXPECT_THAT(client_clash, IsError(absl::StatusCode::kAborted, "SLOT_CONFLICT"));
  EXPECT_EQ(ErrorMetadata(client_clash.status()).at("conflict"), "client");
  // Back to back is fine.
  EXPECT_TRUE(Book(kConsult, Local(4, 11), absl::Hours(1), "th1", "", nullptr, program2).ok());
}

TEST_F(SchedulerTest, BookingChecksNoticeAvailabilityAndCareTeam) {
  EXPECT_THAT(Book(kConsult, Local(2, 12), absl::Hours(1)), IsError(kFailed, "MINIMUM_NOTICE"));
  EXPECT_THAT(Book(kConsult, Local(4, 22), absl::Hours(1)), IsError(kFailed, "OUTSIDE_AVAILABILITY"));
  SetHours("th9", 7, 21);
  EXPECT_TRUE(Book(kConsult, Local(4, 10), absl::Hours(1), "th9").ok()) << "consultations need no care team";
  EXPECT_THAT(Book(cv1::APPOINTMENT_KIND_PREPARATION, Local(5, 10), absl::Hours(1), "th9"),
              IsError(kFailed, "PROVIDER_NOT_ON_CARE_TEAM"));
  EXPECT_THAT(Book(kReview, Local(5, 10), absl::Hours(1), "th1"),
              IsError(absl::StatusCode::kInvalidArgument, "INVALID_FIELD"))
      << "a therapist may not hold a clinician review";
}

TEST_F(SchedulerTest, TransitionsFollowTheTableAndNameFromAndTo) {
  auto a = Book(kConsult, Local(4, 10), absl::Hours(1));
  ASSERT_TRUE(a.ok());
  const std::string name = a->appointment().name();
  auto bad = Move(name, v1::Appointment::STATE_FULFILLED);
  EXPECT_THAT(bad, IsError(kFailed, "INVALID_TRANSITION"));
  EXPECT_EQ(ErrorMetadata(bad.status()).at("from"), "STATE_BOOKED");
  EXPECT_EQ(ErrorMetadata(bad.status()).at("to"), "STATE_FULFILLED");
  EXPECT_THAT(Move(name, v1::Appointment::STATE_NOSHOW), IsError(kFailed, "INVALID_TRANSITION"))
      << "no-show only after the start";
  EXPECT_THAT(Move(name, v1::Appointment::STATE_ARRIVED, &client_),
              IsError(absl::StatusCode::kPermissionDenied, "PERMISSION_DENIED_ROLE"));
  clock_.Set(Local(4, 9));
  ASSERT_TRUE(Move(name, v1::Appointment::STATE_ARRIVED, &therapist_).ok());
  ASSERT_TRUE(Move(name, v1::Appointment::STATE_CHECKED_IN, &therapist_).ok());
  auto done = Move(name, v1::Appointment::STATE_FULFILLED, &therapist_);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::Appointment::STATE_FULFILLED);
  EXPECT_THAT(Move(name, v1::Appointment::STATE_BOOKED), IsError(kFailed, "INVALID_TRANSITION"));
  EXPECT_TRUE(Move(name, v1::Appointment::STATE_ENTERED_IN_ERROR, &admin_).ok());
}

TEST_F(SchedulerTest, ClientsCannotCancelInsideTheWindowStaffCan) {
  auto a = Book(kConsult, Local(3, 9), absl::Hours(1));
  ASSERT_TRUE(a.ok());
  v1::CancelAppointmentRequest c;
  c.set_name(a->appointment().name());
  c.set_reason("feeling unwell");
  c.set_request_id("cancel-1");
  clock_.Set(Local(2, 20));  // 13h before: inside the 24h window
  EXPECT_THAT(scheduler_->CancelAppointment(client_, c), IsError(kFailed, "CANCELLATION_WINDOW"));
  c.set_request_id("cancel-2");
  auto cancelled = scheduler_->CancelAppointment(therapist_, c);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), v1::Appointment::STATE_CANCELLED);
  EXPECT_EQ(cancelled->cancel_reason(), "feeling unwell");
  // The slot is free again (booked by staff with enough notice, as seen from earlier).
  clock_.Set(Local(2, 8));
  auto again = Book(kConsult, Local(3, 9), absl::Hours(1));
  EXPECT_TRUE(again.ok()) << again.status();
}

TEST_F(SchedulerTest, FreedSlotIsOfferedToTheFirstWaitingClientWhoCanAcceptIt) {
  std::string program2 = Enrol("cl2");
  auto a = Book(kConsult, Local(4, 10), absl::Hours(1));
  ASSERT_TRUE(a.ok());
  v1::CreateWaitlistEntryRequest w;
  w.set_parent("clinics/c01");
  w.mutable_waitlist_entry()->set_program(program2);
  w.mutable_waitlist_entry()->set_kind(kConsult);
  *w.mutable_waitlist_entry()->mutable_earliest_start_time() = ToProto(Local(3, 0));
  *w.mutable_waitlist_entry()->mutable_latest_start_time() = ToProto(Local(10, 0));
  w.set_request_id("wait");
  auto entry = scheduler_->CreateWaitlistEntry(other_client_, w);
  ASSERT_TRUE(entry.ok()) << entry.status();
  v1::CancelAppointmentRequest c;
  c.set_name(a->appointment().name());
  c.set_reason("moved away");
  c.set_request_id("cancel");
  ASSERT_TRUE(scheduler_->CancelAppointment(admin_, c).ok());
  v1::ListWaitlistEntriesRequest l;
  l.set_parent("clinics/c01");
  auto listed = scheduler_->ListWaitlistEntries(other_client_, l);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->waitlist_entries_size(), 1);
  EXPECT_EQ(listed->waitlist_entries(0).state(), v1::WaitlistEntry::STATE_OFFERED);
  EXPECT_EQ(FromProto(listed->waitlist_entries(0).offered_slot().start_time()), Local(4, 10));
  EXPECT_EQ(OutboxCount("waitlist_offer_made"), 1);
  v1::AcceptWaitlistOfferRequest accept;
  accept.set_name(entry->name());
  accept.set_request_id("accept");
  auto booked = scheduler_->AcceptWaitlistOffer(other_client_, accept);
  ASSERT_TRUE(booked.ok()) << booked.status();
  EXPECT_EQ(booked->waitlist_entry().state(), v1::WaitlistEntry::STATE_BOOKED);
  EXPECT_EQ(booked->appointment().client(), "people/cl2");
}

TEST_F(SchedulerTest, LapsedOfferGoesBackToWaitingAndTheSlotToTheNextEntry) {
  std::string program2 = Enrol("cl2");
  auto a = Book(kConsult, Local(4, 10), absl::Hours(1));
  ASSERT_TRUE(a.ok());
  // Two other waiting programs: cl2's (first) and a third client's (second).
  v1::CreatePersonRequest person;
  person.set_person_id("cl3");
  person.mutable_person()->set_display_name("cl3");
  person.mutable_person()->add_memberships()->set_clinic("clinics/c01");
  person.mutable_person()->mutable_memberships(0)->set_role(cv1::ROLE_CLIENT);
  person.set_request_id("person-cl3");
  ASSERT_TRUE(scheduler_->CreatePerson(admin_, person).ok());
  std::string program3 = Enrol("cl3");
  std::vector<std::string> entries;
  for (const auto& program : {program2, program3}) {
    v1::CreateWaitlistEntryRequest w;
    w.set_parent("clinics/c01");
    w.mutable_waitlist_entry()->set_program(program);
    w.mutable_waitlist_entry()->set_kind(kConsult);
    *w.mutable_waitlist_entry()->mutable_earliest_start_time() = ToProto(Local(3, 0));
    *w.mutable_waitlist_entry()->mutable_latest_start_time() = ToProto(Local(10, 0));
    w.set_request_id("wait-" + std::to_string(entries.size()));
    auto e = scheduler_->CreateWaitlistEntry(admin_, w);
    ASSERT_TRUE(e.ok()) << e.status();
    entries.push_back(e->name());
    clock_.Advance(absl::Seconds(1));  // waiting order
  }
  v1::CancelAppointmentRequest c;
  c.set_name(a->appointment().name());
  c.set_reason("travel");
  c.set_request_id("cancel");
  ASSERT_TRUE(scheduler_->CancelAppointment(admin_, c).ok());
  auto state_of = [&](const std::string& name) {
    v1::ListWaitlistEntriesRequest l;
    l.set_parent("clinics/c01");
    auto listed = scheduler_->ListWaitlistEntries(admin_, l);
    for (const auto& e : listed->waitlist_entries()) {
      if (e.name() == name) return e.state();
    }
    return v1::WaitlistEntry::STATE_UNSPECIFIED;
  };
  EXPECT_EQ(state_of(entries[0]), v1::WaitlistEntry::STATE_OFFERED);
  EXPECT_EQ(state_of(entries[1]), v1::WaitlistEntry::STATE_WAITING);
  auto none = scheduler_->ExpireWaitlistOffers();
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*none, 0) << "nothing lapses before the offer TTL";
  clock_.Advance(absl::Hours(2) + absl::Minutes(1));  // default waitlist_offer_ttl: 2h
  auto lapsed = scheduler_->ExpireWaitlistOffers();
  ASSERT_TRUE(lapsed.ok()) << lapsed.status();
  EXPECT_EQ(*lapsed, 1);
  EXPECT_EQ(state_of(entries[0]), v1::WaitlistEntry::STATE_WAITING) << "keeps its place";
  EXPECT_EQ(state_of(entries[1]), v1::WaitlistEntry::STATE_OFFERED) << "the slot moves on";
  v1::AcceptWaitlistOfferRequest late;
  late.set_name(entries[0]);
  late.set_request_id("late");
  EXPECT_THAT(scheduler_->AcceptWaitlistOffer(admin_, late), IsError(kFailed, "INVALID_STATE"));
}

TEST_F(SchedulerTest, RescheduleMovesTheAppointmentAndFreesTheOldTime) {
  auto a = Book(kConsult, Local(4, 10), absl::Hours(1));
  ASSERT_TRUE(a.ok());
  v1::RescheduleAppointmentRequest r;
  r.set_name(a->appointment().name());
  *r.mutable_start_time() = ToProto(Local(5, 14));
  *r.mutable_end_time() = ToProto(Local(5, 15));
  r.set_etag(a->appointment().etag());
  r.set_request_id("move");
  auto moved = scheduler_->RescheduleAppointment(client_, r);
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(moved->name(), a->appointment().name());
  EXPECT_EQ(moved->local_start().hours(), 14);
  EXPECT_EQ(moved->state(), v1::Appointment::STATE_BOOKED);
  r.set_request_id("move-stale");
  EXPECT_THAT(scheduler_->RescheduleAppointment(client_, r), IsError(absl::StatusCode::kAborted, "ETAG_MISMATCH"));
  std::string program2 = Enrol("cl2");
  EXPECT_TRUE(Book(kConsult, Local(4, 10), absl::Hours(1), "th1", "", nullptr, program2).ok())
      << "the old time is free";
  EXPECT_THAT(Book(kConsult, Local(5, 14), absl::Hours(1), "th1", "", nullptr, program2),
              IsError(absl::StatusCode::kAborted, "SLOT_CONFLICT"));
  clock_.Set(Local(5, 2));  // 12h before: clients may not reschedule now
  r.clear_etag();
  r.set_request_id("move-late");
  *r.mutable_start_time() = ToProto(Local(6, 14));
  *r.mutable_end_time() = ToProto(Local(6, 15));
  EXPECT_THAT(scheduler_->RescheduleAppointment(client_, r), IsError(kFailed, "RESCHEDULE_WINDOW"));
  EXPECT_EQ(OutboxCount("appointment_rescheduled"), 1);
}

TEST_F(SchedulerTest, AccessIsLimitedByClinicCareTeamAndSelf) {
  auto a = Book(kConsult, Local(4, 10), absl::Hours(1));
  ASSERT_TRUE(a.ok());
  v1::GetAppointmentRequest g;
  g.set_name(a->appointment().name());
  EXPECT_TRUE(scheduler_->GetAppointment(client_, g).ok());
  EXPECT_TRUE(scheduler_->GetAppointment(therapist_, g).ok());
  EXPECT_THAT(scheduler_->GetAppointment(other_client_, g),
              IsError(absl::StatusCode::kPermissionDenied, "PERMISSION_DENIED_NOT_SELF"));
  EXPECT_THAT(scheduler_->GetAppointment(outsider_therapist_, g),
              IsError(absl::StatusCode::kPermissionDenied, "NOT_ON_CARE_TEAM"));
  EXPECT_THAT(scheduler_->GetAppointment(other_clinic_admin_, g),
              IsError(absl::StatusCode::kPermissionDenied, "PERMISSION_DENIED_CROSS_CLINIC"));
  v1::ListAppointmentsRequest l;
  l.set_parent("clinics/c01");
  EXPECT_EQ(scheduler_->ListAppointments(other_client_, l)->appointments_size(), 0);
  EXPECT_EQ(scheduler_->ListAppointments(outsider_therapist_, l)->appointments_size(), 0);
  EXPECT_EQ(scheduler_->ListAppointments(therapist_, l)->appointments_size(), 1);
  v1::SetDosePlanRequest plan;
  plan.set_name(program_);
  plan.mutable_dose_plan()->set_route(cv1::DOSE_ROUTE_INTRANASAL);
  plan.mutable_dose_plan()->set_min_dose_mg(10);
  plan.mutable_dose_plan()->set_max_dose_mg(20);
  plan.mutable_dose_plan()->set_max_sessions(2);
  plan.set_request_id("therapist-plan");
  EXPECT_THAT(scheduler_->SetDosePlan(therapist_, plan),
              IsError(absl::StatusCode::kPermissionDenied, "PERMISSION_DENIED_ROLE"));
}

// GetAppointment with the cache: answered from memory only where the token decides access,
// dropped by the scheduler's own changes at commit and by another replica's notice.
TEST_F(SchedulerTest, CachedReadsFollowChangesAndTheSameAccessRules) {
  AppointmentCache cache(clock_, {.ttl = absl::Hours(1)});  // long: only invalidation may refresh
  cache.Resume();
  Scheduler cached(*db_, clock_, Scheduler::Options{.appointment_cache = &cache});
  auto a = Book(kConsult, Local(4, 10), absl::Hours(1));
  ASSERT_TRUE(a.ok());
  v1::GetAppointmentRequest g;
  g.set_name(a->appointment().name());
  EXPECT_FALSE(cached.GetAppointmentCached(admin_, g)) << "not read yet";
  ASSERT_TRUE(cached.GetAppointment(admin_, g).ok());
  auto hit = cached.GetAppointmentCached(admin_, g);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->state(), v1::Appointment::STATE_BOOKED);
  for (const Principal* p : {&client_, &therapist_, &service_}) EXPECT_TRUE(cached.GetAppointmentCached(*p, g));
  // Not answerable from the token: refused or looked up on the slow path, same answers as uncached.
  for (const Principal* p : {&other_client_, &outsider_therapist_, &other_clinic_admin_, &clinician_}) {
    EXPECT_FALSE(cached.GetAppointmentCached(*p, g)) << p->subject;
  }
  EXPECT_TRUE(cached.GetAppointment(clinician_, g).ok()) << "on the care team";
  EXPECT_THAT(cached.GetAppointment(other_client_, g),
              IsError(absl::StatusCode::kPermissionDenied, "PERMISSION_DENIED_NOT_SELF"));
  EXPECT_THAT(cached.GetAppointment(outsider_therapist_, g),
              IsError(absl::StatusCode::kPermissionDenied, "NOT_ON_CARE_TEAM"));

  // This replica's own change: gone from the cache when the call returns.
  v1::UpdateAppointmentStateRequest checkin;
  checkin.set_name(g.name());
  checkin.set_state(v1::Appointment::STATE_CHECKED_IN);
  checkin.set_request_id("cached-checkin");
  ASSERT_TRUE(cached.UpdateAppointmentState(admin_, checkin).ok());
  EXPECT_FALSE(cached.GetAppointmentCached(admin_, g));
  EXPECT_EQ(cached.GetAppointment(admin_, g)->state(), v1::Appointment::STATE_CHECKED_IN);
  ASSERT_TRUE(cached.GetAppointmentCached(admin_, g));

  // Another replica's change (scheduler_ has no cache): stale here until its notice arrives,
  // which the change put in the outbox for the relay to publish.
  ASSERT_TRUE(Move(g.name(), v1::Appointment::STATE_FULFILLED).ok());
  EXPECT_EQ(cached.GetAppointmentCached(admin_, g)->state(), v1::Appointment::STATE_CHECKED_IN);
  auto notices = db_->Query("SELECT stream, payload, notify_channel FROM outbox WHERE type = 'AppointmentChanged'"
                            " ORDER BY id DESC LIMIT 1");
  ASSERT_TRUE(notices.ok() && notices->size() == 1);
  EXPECT_EQ(notices->at(0).Text(0), "") << "a notice, not a stream event";
  EXPECT_EQ(notices->at(0).Text(2), kAppointmentChangesChannel);
  cache.InvalidateFromNotice("- " + std::string(notices->at(0).Bytes(1)));
  EXPECT_FALSE(cached.GetAppointmentCached(admin_, g));
  EXPECT_EQ(cached.GetAppointment(admin_, g)->state(), v1::Appointment::STATE_FULFILLED);
  EXPECT_EQ(OutboxCount("AppointmentChanged"), 2) << "one notice per change";
}

TEST_F(SchedulerTest, SlotSearchSkipsTheMissingHourOnSpringForwardDay) {
  SetHours("th1", 0, 24);
  v1::SearchSlotsRequest r;
  r.set_parent("clinics/c01");
  r.set_kind(kConsult);
  r.set_provider("people/th1");
  r.set_client("people/cl1");
  *r.mutable_range()->mutable_start_time() = ToProto(Local(8, 0));
  *r.mutable_range()->mutable_end_time() = ToProto(Local(9, 0));
  r.set_page_size(1000);
  auto slots = scheduler_->SearchSlots(admin_, r);
  ASSERT_TRUE(slots.ok()) << slots.status();
  // 23 real hours on 2026-03-08 in New York, 4 starts each.
  EXPECT_EQ(slots->slots_size(), 23 * 4);
  for (const auto& s : slots->slots()) {
    EXPECT_NE(s.local_start().hours(), 2) << "02:xx does not exist on 2026-03-08";
    EXPECT_EQ(FromProto(s.end_time()) - FromProto(s.start_time()), absl::Hours(1));
  }
}

TEST_F(SchedulerTest, SlotSearchListsTheRepeatedHourTwiceOnFallBackDay) {
  SetHours("th1", 0, 24);
  clock_.Set(absl::FromCivil(absl::CivilSecond(2026, 10, 20, 12, 0, 0), tz_));
  v1::SearchSlotsRequest r;
  r.set_parent("clinics/c01");
  r.set_kind(kConsult);
  r.set_provider("people/th1");
  absl::Time day = absl::FromCivil(absl::CivilSecond(2026, 11, 1, 0, 0, 0), tz_);
  *r.mutable_range()->mutable_start_time() = ToProto(day);
  *r.mutable_range()->mutable_end_time() = ToProto(day + absl::Hours(25));
  r.set_page_size(1000);
  auto slots = scheduler_->SearchSlots(admin_, r);
  ASSERT_TRUE(slots.ok()) << slots.status();
  EXPECT_EQ(slots->slots_size(), 25 * 4);
  int one_thirty = 0;
  std::set<int64_t> starts;
  for (const auto& s : slots->slots()) {
    if (s.local_start().hours() == 1 && s.local_start().minutes() == 30) ++one_thirty;
    EXPECT_TRUE(starts.insert(s.start_time().seconds()).second) << "duplicate instant";
  }
  EXPECT_EQ(one_thirty, 2) << "01:30 happens twice, once per offset";
}

TEST_F(SchedulerTest, UnreadAlertThresholdOutsideItsRangeIsRefusedAndChangesNothing) {
  v1::UpdateClinicRequest u;
  u.mutable_clinic()->set_name("clinics/c01");
  *u.mutable_clinic()->mutable_policy()->mutable_unread_message_alert_after() = ToProto(absl::Hours(24 * 10));
  u.mutable_update_mask()->add_paths("policy.unread_message_alert_after");
  u.set_request_id("unread-10d");
  auto refused = scheduler_->UpdateClinic(admin_, u);
  ASSERT_THAT(refused, IsError(absl::StatusCode::kInvalidArgument, "INVALID_FIELD"));
  auto violations = ErrorFieldViolations(refused.status());
  ASSERT_EQ(violations.size(), 1u);
  EXPECT_EQ(violations[0].field, "clinic.policy.unread_message_alert_after");
  EXPECT_THAT(violations[0].description, ::testing::HasSubstr("between 5m"));
  v1::GetClinicRequest g;
  g.set_name("clinics/c01");
  EXPECT_EQ(FromProto(scheduler_->GetClinic(admin_, g)->policy().unread_message_alert_after()), absl::Hours(4));
  *u.mutable_clinic()->mutable_policy()->mutable_unread_message_alert_after() = ToProto(absl::Hours(24 * 7));
  u.set_request_id("unread-7d");
  auto accepted = scheduler_->UpdateClinic(admin_, u);
  ASSERT_TRUE(accepted.ok()) << accepted.status();
  EXPECT_EQ(FromProto(accepted->policy().unread_message_alert_after()), absl::Hours(24 * 7));
}

TEST_F(SchedulerTest, SlotSearchHonoursExistingBookingsBuffersAndRooms) {
  v1::UpdateClinicRequest u;
  u.mutable_clinic()->set_name("clinics/c01");
  auto* kp = u.mutable_clinic()->mutable_policy()->add_kind_policies();
  kp->set_kind(kConsult);
  *kp->mutable_duration() = ToProto(absl::Hours(1));
  *kp->mutable_buffer_after() = ToProto(absl::Minutes(30));
  u.mutable_update_mask()->add_paths("policy.kind_policies");
  u.set_request_id("buffers");
  ASSERT_TRUE(scheduler_->UpdateClinic(admin_, u).ok());
  ASSERT_TRUE(Book(kConsult, Local(4, 10), absl::Hours(1)).ok());
  v1::SearchSlotsRequest r;
  r.set_parent("clinics/c01");
  r.set_kind(kConsult);
  r.set_provider("people/th1");
  *r.mutable_range()->mutable_start_time() = ToProto(Local(4, 8));
  *r.mutable_range()->mutable_end_time() = ToProto(Local(4, 13));
  auto slots = scheduler_->SearchSlots(admin_, r);
  ASSERT_TRUE(slots.ok()) << slots.status();
  std::vector<int> minutes;
  for (const auto& s : slots->slots()) minutes.push_back(s.local_start().hours() * 60 + s.local_start().minutes());
  // Busy 10:00-11:30 (with buffer); a new 1h consult + 30m buffer must end its buffer by 10:00.
  EXPECT_THAT(minutes, ::testing::ElementsAre(8 * 60, 8 * 60 + 15, 8 * 60 + 30, 11 * 60 + 30, 11 * 60 + 45, 12 * 60,
                                              12 * 60 + 15, 12 * 60 + 30, 12 * 60 + 45));
}

}  // namespace
}  // namespace continuum::scheduling
