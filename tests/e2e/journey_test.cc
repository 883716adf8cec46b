// A whole KAP program on the real binaries (scheduling, session-record, messaging), a real
// redis-server and a real PostgreSQL server, through the public API only:
//   intake and consultation -> dose plan -> two supervised medicine sessions (checklist, dosing,
//   vitals, timeline, observation, signed note, integration session inside the window) ->
//   a self-guided session with a sitter whose check-ins keep presence alive -> an urgent
//   message and an adverse event escalating to the on-call clinician while the care team is
//   away -> FHIR export and a verified audit chain.
// Every KAP rule on the way is refused once, with its documented reason, before it is met.
#include "absl/strings/str_cat.h"
#include "common/testing/platform.h"
#include "continuum/messaging/v1/messaging_service.grpc.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace continuum::testing {
namespace {

namespace mv1 = ::continuum::messaging::v1;
using S = sv1::SchedulingService::Stub;
using R = rv1::SessionRecordService::Stub;
using M = mv1::MessagingService::Stub;
using Item = rv1::ChecklistItem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

#define EXPECT_REFUSED(status, code, reason)                              \
  do {                                                                    \
    grpc::Status s_ = (status);                                           \
    EXPECT_EQ(s_.error_code(), grpc::StatusCode::code) << s_.error_message(); \
    EXPECT_EQ(ReasonOf(s_), reason) << s_.error_message();                \
  } while (0)

#define ASSERT_OK(status)                                       \
  do {                                                          \
    grpc::Status s_ = (status);                                 \
    ASSERT_TRUE(s_.ok()) << s_.error_code() << " " << ReasonOf(s_) << ": " << s_.error_message(); \
  } while (0)

google::protobuf::Duration Secs(int64_t s) {
  google::protobuf::Duration d;
  d.set_seconds(s);
  return d;
}

class KapJourneyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    p_.postgres = true;  // the production store
    p_.Start(true);
    std::string m = p_.StartMessaging();
    ASSERT_FALSE(m.empty());
    msg_ = mv1::MessagingService::NewStub(grpc::CreateChannel(m, grpc::InsecureChannelCredentials()));
  }

  // The clinic's people, their hours, the care team (ther + clin), the client's program, and
  // an on-call clinician who is not on the care team, on shift now.
  void Intake() {
    sv1::CreateClinicRequest cc;
    cc.set_clinic_id("kap");
    cc.set_request_id("clinic");
    auto* c = cc.mutable_clinic();
    c->set_display_name("Continuum KAP Berlin");
    c->set_time_zone("Europe/Berlin");
    auto* policy = c->mutable_policy();
    *policy->mutable_minimum_notice() = Secs(60);
    *policy->mutable_integration_window() = Secs(72 * 3600);
    policy->set_supervised_sessions_required(2);
    *policy->mutable_minimum_medicine_interval() = Secs(48 * 3600);
    *policy->mutable_reentry_gap() = Secs(60 * 86400);
    *policy->mutable_supervised_observation_period() = Secs(2);  // real seconds in this test
    *policy->mutable_self_guided_observation_period() = Secs(2);
    *policy->mutable_sitter_checkin_interval() = Secs(3600);
    *policy->mutable_escalation_ack_timeout() = Secs(600);
    auto* room = c->add_rooms();
    room->set_room_id("room-1");
    room->set_supports_medicine_sessions(true);
    sv1::Clinic clinic;
    ASSERT_OK(CallWith(p_.sched.get(), &S::CreateClinic, p_.ops, cc, &clinic));

    for (auto [id, role] : std::vector<std::pair<std::string, cv1::Role>>{{"ther", cv1::ROLE_THERAPIST},
                                                                         {"clin", cv1::ROLE_CLINICIAN},
                                                                         {"oncall", cv1::ROLE_CLINICIAN},
                                                                         {"casey", cv1::ROLE_CLIENT},
                                                                         {"sam", cv1::ROLE_SITTER}}) {
      ASSERT_OK(p_.AddPerson(id, role, "person-" + id));
    }
    for (const std::string provider : {"ther", "clin"}) ASSERT_OK(p_.OpenAllWeek(provider, "hours-" + provider));
    sv1::UpdateClinicRequest roster;
    roster.mutable_clinic()->set_name("clinics/kap");
    auto* shift = roster.mutable_clinic()->add_on_call_roster();
    shift->set_person("people/oncall");
    shift->mutable_interval()->mutable_start_time()->set_seconds(absl::ToUnixSeconds(absl::Now() - absl::Hours(1)));
    shift->mutable_interval()->mutable_end_time()->set_seconds(absl::ToUnixSeconds(absl::Now() + absl::Hours(12)));
    roster.mutable_update_mask()->add_paths("on_call_roster");
    roster.set_request_id("roster");
    ASSERT_OK(CallWith(p_.sched.get(), &S::UpdateClinic, p_.admin, roster, &clinic));

    ASSERT_OK(p_.SetCareTeam("casey", {"ther", "clin"}, "team"));
    ASSERT_OK(p_.AddProgram("casey", "program", &program_));
  }

  grpc::Status Book(cv1::AppointmentKind kind, absl::Time at, const std::string& rid, sv1::Appointment* out,
                    const std::string& medicine = "", const std::string& provider = "people/ther") {
    sv1::BookAppointmentRequest b;
    b.set_parent("clinics/kap");
    auto* a = b.mutable_appointment();
    a->set_kind(kind);
    a->set_program(program_);
    a->set_provider(provider);
    a->set_medicine_appointment(medicine);
    a->mutable_start_time()->set_seconds(absl::ToUnixSeconds(at));
    absl::Duration len = kind == cv1::APPOINTMENT_KIND_MEDICINE_SUPERVISED ? absl::Hours(3) : absl::Hours(1);
    a->mutable_end_time()->set_seconds(absl::ToUnixSeconds(at + len));
    b.set_request_id(rid);
    sv1::BookAppointmentResponse resp;
    grpc::Status s = CallWith(p_.sched.get(), &S::BookAppointment, p_.admin, b, &resp);
    if (out) *out = resp.appointment();
    return s;
  }

  grpc::Status Fulfil(const std::string& appointment, const std::string& rid) {
    sv1::Appointment out;
    for (auto state : {sv1::Appointment::STATE_CHECKED_IN, sv1::Appointment::STATE_FULFILLED}) {
      sv1::UpdateAppointmentStateRequest u;
      u.set_name(appointment);
      u.set_state(state);
      u.set_request_id(absl::StrCat(rid, "-", state));
      grpc::Status s = CallWith(p_.sched.get(), &S::UpdateAppointmentState, p_.therapist, u, &out);
      if (!s.ok()) return s;
    }
    return grpc::Status::OK;
  }

  sv1::Appointment GetAppointment(const std::string& name) {
    sv1::GetAppointmentRequest g;
    g.set_name(name);
    sv1::Appointment a;
    EXPECT_TRUE(CallWith(p_.sched.get(), &S::GetAppointment, p_.admin, g, &a).ok());
    return a;
  }

  rv1::SessionRecord CreateRecord(const std::string& appointment, const std::string& rid) {
    rv1::CreateSessionRecordRequest c;
    c.set_parent("clinics/kap");
    c.mutable_session_record()->set_appointment(appointment);
    c.set_request_id(rid);
    rv1::SessionRecord rec;
    grpc::Status s = CallWith(p_.rec.get(), &R::CreateSessionRecord, p_.therapist, c, &rec);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return rec;
  }

  static Item Confirm(Item::Kind kind) {
    Item i;
    i.set_kind(kind);
    i.set_confirmed(true);
    return i;
  }

  // Checklist items for a session: in clinic, or at home with sitter `sitter`.
  static rv1::UpdateChecklistRequest Checklist(const std::string& record, const std::string& sitter, int systolic) {
    rv1::UpdateChecklistRequest check;
    check.set_name(record);
    *check.add_items() = Confirm(Item::KIND_CONSENT_ACTIVE);
    if (sitter.empty()) {
      *check.add_items() = Confirm(Item::KIND_TRANSPORTATION_ARRANGED);
    } else {
      Item s = Confirm(Item::KIND_SITTER_PRESENT);
      s.set_sitter(sitter);
      *check.add_items() = s;
      *check.add_items() = Confirm(Item::KIND_MEDICATIONS_HELD);
    }
    auto* bp = check.add_items();
    bp->set_kind(Item::KIND_BLOOD_PRESSURE);
    bp->set_systolic_mmhg(systolic);
    bp->set_diastolic_mmhg(80);
    auto* dose = check.add_items();
    dose->set_kind(Item::KIND_DOSE_WITHIN_PLAN);
    dose->set_planned_route(cv1::DOSE_ROUTE_INTRAMUSCULAR);
    dose->set_planned_dose_mg(40);
    return check;
  }

  // Start (after the checklist passes), dose, vitals, timeline, observation, completion.
  // `refuse` makes each gate refuse once first. Leaves the record COMPLETED.
  void RunSession(const std::string& record, const std::string& sitter, bool refuse, const std::string& tag) {
    rv1::SessionRecord out;
    rv1::StartSessionRequest start;
    start.set_name(record);
    start.set_request_id(tag + "-start-early");
    if (refuse) {
      // Nothing checked yet: the gate lists what is missing.
      EXPECT_REFUSED(CallWith(p_.rec.get(), &R::StartSession, p_.therapist, start, &out), FAILED_PRECONDITION,
                     "CHECKLIST_FAILED");
    }
    rv1::UpdateChecklistRequest check = Checklist(record, sitter, 124);
    check.set_request_id(tag + "-check");
    rv1::UpdateChecklistResponse checked;
    ASSERT_OK(CallWith(p_.rec.get(), &R::UpdateChecklist, p_.therapist, check, &checked));
    EXPECT_TRUE(checked.checklist().passed());
    start.set_request_id(tag + "-start");
    ASSERT_OK(CallWith(p_.rec.get(), &R::StartSession, p_.therapist, start, &out));
    EXPECT_EQ(out.state(), rv1::SessionRecord::STATE_IN_PROGRESS);

    rv1::StartDoseAdministrationRequest d;
    d.set_name(record);
    d.set_route(cv1::DOSE_ROUTE_INTRAMUSCULAR);
    if (refuse) {
      d.set_dose_mg(90);  // the plan allows 20-60 mg IM
      d.set_request_id(tag + "-dose-90");
      EXPECT_REFUSED(CallWith(p_.rec.get(), &R::StartDoseAdministration, p_.therapist, d, &out), FAILED_PRECONDITION,
                     "DOSE_OUTSIDE_PLAN");
    }
    d.set_dose_mg(40);
    d.set_request_id(tag + "-dose-40");
    ASSERT_OK(CallWith(p_.rec.get(), &R::StartDoseAdministration, p_.therapist, d, &out));
    ASSERT_EQ(out.dose_administrations_size(), 1);
    rv1::StopDoseAdministrationRequest stop;
    stop.set_name(record);
    stop.set_administration_id(out.dose_administrations(0).administration_id());
    stop.set_request_id(tag + "-dose-stop");
    ASSERT_OK(CallWith(p_.rec.get(), &R::StopDoseAdministration, p_.therapist, stop, &out));

    rv1::RecordVitalsRequest v;
    v.set_name(record);
    v.mutable_vitals()->set_systolic_mmhg(131);
    v.mutable_vitals()->set_diastolic_mmhg(84);
    v.mutable_vitals()->set_heart_rate_bpm(88);
    v.mutable_vitals()->set_spo2_percent(98);
    v.set_request_id(tag + "-vitals");
    ASSERT_OK(CallWith(p_.rec.get(), &R::RecordVitals, p_.therapist, v, &out));
    rv1::AddTimelineEntryRequest t;
    t.set_name(record);
    t.mutable_entry()->set_kind(rv1::TimelineEntry::KIND_OBSERVATION);
    t.mutable_entry()->set_text("Eyes closed, calm breathing, music on.");
    t.set_request_id(tag + "-timeline");
    ASSERT_OK(CallWith(p_.rec.get(), &R::AddTimelineEntry, p_.therapist, t, &out));
    EXPECT_EQ(out.vitals_size(), 1);
    EXPECT_GE(out.timeline_size(), 1);

    rv1::CompleteSessionRequest complete;
    complete.set_name(record);
    if (refuse) {
      complete.set_request_id(tag + "-complete-early");
      EXPECT_REFUSED(CallWith(p_.rec.get(), &R::CompleteSession, p_.therapist, complete, &out), FAILED_PRECONDITION,
                     "OBSERVATION_PERIOD_NOT_ELAPSED");
    }
    // The clinic's observation period is 2 s of real time here; poll until it has passed.
    int attempt = 0;
    grpc::Status last;
    ASSERT_TRUE(WaitUntil([&] {
      complete.set_request_id(absl::StrCat(tag, "-complete-", attempt++));
      last = CallWith(p_.rec.get(), &R::CompleteSession, p_.therapist, complete, &out);
      return last.ok();
    }, absl::Seconds(30))) << last.error_message();
    EXPECT_EQ(out.state(), rv1::SessionRecord::STATE_COMPLETED);
  }

  void NoteAndSign(const std::string& record, const std::string& tag) {
    rv1::SessionRecord out;
    rv1::UpdateNoteRequest note;
    note.set_name(record);
    note.mutable_note()->set_kind(rv1::Note::KIND_SESSION);
    note.mutable_note()->set_text("Grounded, reflective; themes of grief and relief.");
    note.set_request_id(tag + "-note");
    ASSERT_OK(CallWith(p_.rec.get(), &R::UpdateNote, p_.therapist, note, &out));
    rv1::SignSessionRecordRequest sign;
    sign.set_name(record);
    sign.set_request_id(tag + "-sign");
    ASSERT_OK(CallWith(p_.rec.get(), &R::SignSessionRecord, p_.clinician, sign, &out));
    EXPECT_EQ(out.state(), rv1::SessionRecord::STATE_SIGNED);
  }

  std::vector<mv1::Escalation> Escalations(mv1::Escalation::Trigger trigger) {
    mv1::ListEscalationsRequest l;
    l.set_parent("clinics/kap");
    l.set_client("people/casey");
    mv1::ListEscalationsResponse out;
    EXPECT_TRUE(CallWith(msg_.get(), &M::ListEscalations, p_.clinician, l, &out).ok());
    std::vector<mv1::Escalation> of;
    for (const auto& e : out.escalations()) {
      if (e.trigger() == trigger) of.push_back(e);
    }
    return of;
  }

  Platform p_;
  std::unique_ptr<M> msg_;
  std::string program_;
  std::string oncall_ = TestToken("people/oncall", "clinician", {"kap"});
  std::string sitter_ = TestToken("people/sam", "sitter", {"kap"});
};

TEST_F(KapJourneyTest, WholeProgramFromIntakeToFhirExport) {
  ASSERT_NO_FATAL_FAILURE(Intake());
  // Whole minutes, two hours out, so every booking clears the minimum notice.
  const absl::Time t0 = absl::FromUnixSeconds((absl::ToUnixSeconds(absl::Now()) / 60 + 120) * 60);
  sv1::Appointment consult, med1, med2, integ1, integ2, self_guided, scratch;

  // --- Consultation first, then a dose plan.
  EXPECT_REFUSED(Book(cv1::APPOINTMENT_KIND_MEDICINE_SUPERVISED, t0 + absl::Hours(24), "med1-early", &scratch),
                 FAILED_PRECONDITION, "CONSULTATION_NOT_FULFILLED");
  ASSERT_OK(Book(cv1::APPOINTMENT_KIND_CONSULTATION, t0, "consult", &consult));
  ASSERT_OK(Fulfil(consult.name(), "consult"));
  EXPECT_REFUSED(Book(cv1::APPOINTMENT_KIND_MEDICINE_SUPERVISED, t0 + absl::Hours(24), "med1-no-plan", &scratch),
                 FAILED_PRECONDITION, "DOSE_PLAN_MISSING");
  sv1::SetDosePlanRequest plan;
  plan.set_name(program_);
  plan.mutable_dose_plan()->set_route(cv1::DOSE_ROUTE_INTRAMUSCULAR);
  plan.mutable_dose_plan()->set_min_dose_mg(20);
  plan.mutable_dose_plan()->set_max_dose_mg(60);
  plan.mutable_dose_plan()->set_max_sessions(3);
  plan.set_request_id("plan");
  sv1::Program planned;
  EXPECT_REFUSED(CallWith(p_.sched.get(), &S::SetDosePlan, p_.therapist, plan, &planned), PERMISSION_DENIED,
                 "PERMISSION_DENIED_ROLE");  // dose plans are a clinician's call
  ASSERT_OK(CallWith(p_.sched.get(), &S::SetDosePlan, p_.clinician, plan, &planned));

  // --- First supervised session; self-guided must wait for two fulfilled supervised ones.
  ASSERT_OK(Book(cv1::APPOINTMENT_KIND_MEDICINE_SUPERVISED, t0 + absl::Hours(24), "med1", &med1));
  EXPECT_REFUSED(Book(cv1::APPOINTMENT_KIND_MEDICINE_SELF_GUIDED, t0 + absl::Hours(24 * 12), "self-early", &scratch),
                 FAILED_PRECONDITION, "SUPERVISED_SESSIONS_INCOMPLETE");
  // A second medicine session needs the first one's integration session first ...
  EXPECT_REFUSED(Book(cv1::APPOINTMENT_KIND_MEDICINE_SUPERVISED, t0 + absl::Hours(36), "med2-no-integ", &scratch),
                 FAILED_PRECONDITION, "INTEGRATION_MISSING");
  // ... inside the clinic's 72 h window after the medicine session ends.
  const absl::Time med1_end = t0 + absl::Hours(27);
  EXPECT_REFUSED(Book(cv1::APPOINTMENT_KIND_INTEGRATION, med1_end + absl::Hours(96), "integ1-late", &scratch,
                      med1.name()),
                 FAILED_PRECONDITION, "INTEGRATION_OUTSIDE_WINDOW");
  ASSERT_OK(Book(cv1::APPOINTMENT_KIND_INTEGRATION, med1_end + absl::Hours(20), "integ1", &integ1, med1.name()));
  EXPECT_EQ(GetAppointment(med1.name()).integration_appointment(), integ1.name());
  // ... and 48 h apart from the first.
  EXPECT_REFUSED(Book(cv1::APPOINTMENT_KIND_MEDICINE_SUPERVISED, t0 + absl::Hours(36), "med2-soon", &scratch),
                 FAILED_PRECONDITION, "MEDICINE_INTERVAL_TOO_SHORT");
  ASSERT_OK(Book(cv1::APPOINTMENT_KIND_MEDICINE_SUPERVISED, t0 + absl::Hours(24 * 4), "med2", &med2));

  // --- Both supervised sessions, each recorded, observed, noted and signed.
  rv1::SessionRecord rec1 = CreateRecord(med1.name(), "rec1");
  ASSERT_FALSE(rec1.name().empty());
  ASSERT_NO_FATAL_FAILURE(RunSession(rec1.name(), "", /*refuse=*/true, "s1"));
  EXPECT_EQ(GetAppointment(med1.name()).state(), sv1::Appointment::STATE_FULFILLED);
  ASSERT_NO_FATAL_FAILURE(NoteAndSign(rec1.name(), "s1"));
  // Signed is locked: changes go through an amendment, a new version with author and reason.
  rv1::UpdateNoteRequest late;
  late.set_name(rec1.name());
  late.mutable_note()->set_kind(rv1::Note::KIND_SESSION);
  late.mutable_note()->set_text("edited after signing");
  late.set_request_id("s1-late-note");
  rv1::SessionRecord out;
  EXPECT_REFUSED(CallWith(p_.rec.get(), &R::UpdateNote, p_.therapist, late, &out), FAILED_PRECONDITION,
                 "RECORD_LOCKED");
  ASSERT_OK(Fulfil(integ1.name(), "integ1"));

  rv1::SessionRecord rec2 = CreateRecord(med2.name(), "rec2");
  ASSERT_NO_FATAL_FAILURE(RunSession(rec2.name(), "", /*refuse=*/false, "s2"));
  ASSERT_NO_FATAL_FAILURE(NoteAndSign(rec2.name(), "s2"));
  const absl::Time med2_end = t0 + absl::Hours(24 * 4 + 3);
  ASSERT_OK(Book(cv1::APPOINTMENT_KIND_INTEGRATION, med2_end + absl::Hours(24), "integ2", &integ2, med2.name()));
  ASSERT_OK(Fulfil(integ2.name(), "integ2"));

  // --- The self-guided session at home, with sitter Sam.
  ASSERT_OK(Book(cv1::APPOINTMENT_KIND_MEDICINE_SELF_GUIDED, t0 + absl::Hours(24 * 12), "self", &self_guided));
  EXPECT_EQ(self_guided.setting(), cv1::CARE_SETTING_HOME);
  // The plan authorised three medicine sessions; all are booked or done.
  EXPECT_REFUSED(Book(cv1::APPOINTMENT_KIND_MEDICINE_SELF_GUIDED, t0 + absl::Hours(24 * 20), "self-2", &scratch),
                 FAILED_PRECONDITION, "DOSE_PLAN_EXHAUSTED");
  rv1::SessionRecord rec3 = CreateRecord(self_guided.name(), "rec3");
  rv1::UpdateChecklistRequest no_sitter = Checklist(rec3.name(), "people/ther", 124);
  no_sitter.set_request_id("s3-wrong-sitter");
  rv1::UpdateChecklistResponse checked;
  EXPECT_REFUSED(CallWith(p_.rec.get(), &R::UpdateChecklist, p_.therapist, no_sitter, &checked), INVALID_ARGUMENT,
                 "INVALID_FIELD");  // the sitter must hold the SITTER role in this clinic

  // Before the session starts the sitter has nothing to check in to.
  mv1::SitterCheckInRequest ci;
  ci.set_appointment(self_guided.name());
  ci.set_note("all calm");
  ci.set_request_id("ci-early");
  mv1::SitterCheckInResponse ci_out;
  EXPECT_REFUSED(CallWith(msg_.get(), &M::SitterCheckIn, sitter_, ci, &ci_out), FAILED_PRECONDITION, "INVALID_STATE");

  // Start it (checklist with the sitter), dose, vitals, timeline; completion comes later.
  rv1::UpdateChecklistRequest check = Checklist(rec3.name(), "people/sam", 126);
  check.set_request_id("s3-check");
  ASSERT_OK(CallWith(p_.rec.get(), &R::UpdateChecklist, p_.therapist, check, &checked));
  ASSERT_TRUE(checked.checklist().passed());
  rv1::StartSessionRequest start;
  start.set_name(rec3.name());
  start.set_request_id("s3-start");
  ASSERT_OK(CallWith(p_.rec.get(), &R::StartSession, p_.therapist, start, &out));
  EXPECT_EQ(out.sitter(), "people/sam");

  // SessionStarted reaches messaging through the outbox; then Sam's check-ins are accepted,
  // and each keeps Sam's presence ONLINE for the care team to see.
  grpc::Status last;
  int attempt = 0;
  ASSERT_TRUE(WaitUntil([&] {
    ci.set_request_id(absl::StrCat("ci-", attempt++));
    last = CallWith(msg_.get(), &M::SitterCheckIn, sitter_, ci, &ci_out);
    return last.ok();
  }, absl::Seconds(30))) << last.error_message();
  EXPECT_EQ(ci_out.presence().status(), cv1::PRESENCE_STATUS_ONLINE);
  EXPECT_GT(ci_out.next_check_in_due_time().seconds(), absl::ToUnixSeconds(absl::Now()) + 3000);
  mv1::SitterCheckInRequest other = ci;
  other.set_request_id("ci-not-sitter");
  EXPECT_REFUSED(CallWith(msg_.get(), &M::SitterCheckIn, p_.client, other, &ci_out), PERMISSION_DENIED,
                 "NOT_DESIGNATED_SITTER");
  mv1::GetPresenceRequest gp;
  gp.set_name("people/sam/presence");
  mv1::Presence sam;
  ASSERT_OK(CallWith(msg_.get(), &M::GetPresence, p_.therapist, gp, &sam));
  EXPECT_EQ(sam.status(), cv1::PRESENCE_STATUS_ONLINE);
  // While the session runs the sitter counts with the care team for the client; the
  // clinicians themselves are away: nobody else has sent a heartbeat.
  mv1::GetCareTeamPresenceRequest tp;
  tp.set_care_team("clinics/kap/careTeams/casey");
  mv1::GetCareTeamPresenceResponse team;
  ASSERT_OK(CallWith(msg_.get(), &M::GetCareTeamPresence, p_.client, tp, &team));
  std::map<std::string, cv1::PresenceStatus> status;
  for (const auto& m : team.members()) status[m.person()] = m.status();
  EXPECT_EQ(status.size(), 3u);
  EXPECT_EQ(status["people/sam"], cv1::PRESENCE_STATUS_ONLINE);
  EXPECT_NE(status["people/ther"], cv1::PRESENCE_STATUS_ONLINE);
  EXPECT_NE(status["people/clin"], cv1::PRESENCE_STATUS_ONLINE);

  // --- An urgent message from the client while the care team is away goes to the on-call
  // clinician (who is not on the care team), live on their stream and as a notification.
  grpc::ClientContext sub_ctx;
  sub_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  sub_ctx.AddMetadata("authorization", "Bearer " + oncall_);
  auto oncall_stream = msg_->Subscribe(&sub_ctx, mv1::SubscribeRequest());
  mv1::Delivery d;
  while (oncall_stream->Read(&d) && !d.has_replay_complete()) {
  }
  ASSERT_TRUE(d.has_replay_complete()) << "the on-call clinician's stream went live";

  mv1::SendMessageRequest urgent;
  urgent.set_parent("clinics/kap/conversations/client-casey");
  urgent.set_message_id("casey-urgent-1");
  urgent.mutable_message()->set_text("I feel my heart racing and I'm scared.");
  urgent.mutable_message()->set_urgent(true);
  mv1::Message sent;
  ASSERT_OK(CallWith(msg_.get(), &M::SendMessage, p_.client, urgent, &sent));
  EXPECT_TRUE(sent.urgent());
  std::vector<mv1::Escalation> urgent_esc;
  ASSERT_TRUE(WaitUntil([&] {
    urgent_esc = Escalations(mv1::Escalation::TRIGGER_URGENT_MESSAGE);
    return !urgent_esc.empty() && urgent_esc[0].steps_size() >= 2;
  }, absl::Seconds(30)));
  const mv1::Escalation& ue = urgent_esc[0];
  EXPECT_EQ(ue.steps(0).target(), mv1::EscalationStep::TARGET_PRESENT_CARE_TEAM);
  EXPECT_TRUE(ue.steps(0).targets().empty()) << "nobody on the care team was present";
  EXPECT_EQ(ue.steps(1).target(), mv1::EscalationStep::TARGET_ON_CALL);
  EXPECT_THAT(ue.steps(1).targets(), ElementsAre("people/oncall"));
  bool live = false;
  while (!live && oncall_stream->Read(&d)) live = d.has_escalation() && d.escalation().name() == ue.name();
  EXPECT_TRUE(live) << "the escalation reached the on-call clinician's open stream";
  sub_ctx.TryCancel();
  oncall_stream->Finish().IgnoreError();

  // --- An adverse event in the self-guided session escalates the same way.
  rv1::ReportAdverseEventRequest ae;
  ae.set_name(rec3.name());
  ae.mutable_adverse_event()->set_severity(rv1::AdverseEvent::SEVERITY_SEVERE);
  ae.mutable_adverse_event()->set_description("Sustained tachycardia (138 bpm) with chest tightness.");
  ae.set_request_id("s3-adverse");
  ASSERT_OK(CallWith(p_.rec.get(), &R::ReportAdverseEvent, p_.therapist, ae, &out));
  std::vector<mv1::Escalation> adverse;
  ASSERT_TRUE(WaitUntil([&] {
    adverse = Escalations(mv1::Escalation::TRIGGER_ADVERSE_EVENT);
    return !adverse.empty() && adverse[0].steps_size() >= 2;
  }, absl::Seconds(30)));
  EXPECT_EQ(adverse[0].source(), rec3.name());
  EXPECT_THAT(adverse[0].steps(1).targets(), ElementsAre("people/oncall"));
  mv1::ListNotificationsRequest ln;
  ln.set_parent("people/oncall");
  mv1::ListNotificationsResponse notes;
  ASSERT_OK(CallWith(msg_.get(), &M::ListNotifications, oncall_, ln, &notes));
  int escalation_notes = 0;
  for (const auto& n : notes.notifications()) escalation_notes += n.type() == mv1::Notification::TYPE_ESCALATION;
  EXPECT_EQ(escalation_notes, 2) << "one per escalation, none duplicated";
  for (const auto& e : {ue, adverse[0]}) {
    mv1::AcknowledgeEscalationRequest ack;
    ack.set_name(e.name());
    ack.set_note("On my way / calling the client now.");
    ack.set_request_id("ack-" + e.name().substr(e.name().rfind('/') + 1));
    mv1::Escalation acked;
    ASSERT_OK(CallWith(msg_.get(), &M::AcknowledgeEscalation, oncall_, ack, &acked));
    EXPECT_EQ(acked.state(), mv1::Escalation::STATE_ACKNOWLEDGED);
    EXPECT_EQ(acked.acknowledged_by(), "people/oncall");
  }

  // The self-guided session completes after its observation period; note, sign.
  rv1::CompleteSessionRequest complete;
  complete.set_name(rec3.name());
  attempt = 0;
  ASSERT_TRUE(WaitUntil([&] {
    complete.set_request_id(absl::StrCat("s3-complete-", attempt++));
    last = CallWith(p_.rec.get(), &R::CompleteSession, p_.therapist, complete, &out);
    return last.ok();
  }, absl::Seconds(30))) << last.error_message();
  ASSERT_NO_FATAL_FAILURE(NoteAndSign(rec3.name(), "s3"));
  EXPECT_EQ(GetAppointment(self_guided.name()).state(), sv1::Appointment::STATE_FULFILLED);

  // The program's progress, derived from its appointments.
  sv1::GetProgramRequest gpr;
  gpr.set_name(program_);
  sv1::Program done;
  ASSERT_OK(CallWith(p_.sched.get(), &S::GetProgram, p_.therapist, gpr, &done));
  EXPECT_TRUE(done.progress().has_consultation_fulfilled_time());
  EXPECT_EQ(done.progress().supervised_sessions_fulfilled(), 2);
  EXPECT_EQ(done.progress().self_guided_sessions_fulfilled(), 1);
  EXPECT_EQ(done.progress().medicine_sessions_counted(), 3);
  EXPECT_EQ(done.progress().last_medicine_end_time().seconds(),
            absl::ToUnixSeconds(t0 + absl::Hours(24 * 12 + 1)));

  // --- FHIR export for the clinic's EHR partner: three sessions, doses and the adverse event.
  rv1::ExportFhirBundleRequest ex;
  ex.set_parent("clinics/kap");
  ex.set_client("people/casey");
  rv1::ExportFhirBundleResponse bundle;
  ASSERT_OK(CallWith(p_.rec.get(), &R::ExportFhirBundle, TestToken("ehr", "partner", {"kap"}), ex, &bundle));
  EXPECT_EQ(bundle.record_count(), 3);
  google::protobuf::Struct parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(bundle.bundle_json(), &parsed).ok());
  EXPECT_EQ(parsed.fields().at("resourceType").string_value(), "Bundle");
  std::map<std::string, int> kinds;
  std::string adverse_text;
  for (const auto& entry : parsed.fields().at("entry").list_value().values()) {
    const auto& res = entry.struct_value().fields().at("resource").struct_value().fields();
    kinds[res.at("resourceType").string_value()]++;
    if (res.at("resourceType").string_value() == "AdverseEvent") {
      adverse_text = res.at("event").struct_value().fields().at("text").string_value();
      EXPECT_EQ(res.at("severity").struct_value().fields().at("coding").list_value().values(0).struct_value()
                    .fields().at("code").string_value(), "severe");
    }
  }
  EXPECT_EQ(kinds["Encounter"], 3);
  EXPECT_EQ(kinds["MedicationAdministration"], 2) << "the self-guided session recorded no dose here";
  EXPECT_EQ(kinds["DocumentReference"], 3);
  EXPECT_EQ(kinds["AdverseEvent"], 1);
  EXPECT_THAT(adverse_text, HasSubstr("tachycardia"));

  // Every read and write above is in the clinic's audit chain, and the chain verifies.
  rv1::VerifyAuditChainRequest verify;
  verify.set_parent("clinics/kap");
  rv1::VerifyAuditChainResponse verdict;
  ASSERT_OK(CallWith(p_.rec.get(), &R::VerifyAuditChain, p_.admin, verify, &verdict));
  EXPECT_TRUE(verdict.ok());
  EXPECT_GE(verdict.entries_checked(), 30);
}

}  // namespace
}  // namespace continuum::testing
