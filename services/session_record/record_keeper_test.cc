// The session-record domain with a FakeClock, SQLite :memory: and a scheduling stand-in
// (scheduling is another service; its own tests cover it): a medicine session walked from
// checklist to signed note with each gate refused and then passed, amendments, versions,
// the audit chain (and a tampered row), journals, the FHIR bundle and access.
#include "services/session_record/record_keeper.h"

#include <set>
#include <thread>

#include "common/api/idempotency.h"
#include "common/db/migrations.h"
#include "common/outbox/outbox.h"
#include "common/status/errors.h"
#include "common/status/macros.h"
#include "common/time/proto_time.h"
#include "common/testing/harness.h"
#include "common/testing/matchers.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "services/session_record/audit.h"
#include "services/session_record/session_record_service.h"

namespace continuum::records {
namespace {

using auth::Principal;
using auth::Role;
using ::testing::HasSubstr;
namespace sv1 = ::continuum::scheduling::v1;
using Item = v1::ChecklistItem;

using ::continuum::testing::IsError;

// Scheduling as the record keeper sees it: fixed data, and a log of state changes.
class FakeScheduling : public SchedulingClient {
 public:
  int care_team_calls = 0;
  absl::Status care_team_error;
  absl::StatusOr<sv1::Appointment> GetAppointment(const std::string& name) override {
    auto it = appointments.find(name);
    if (it == appointments.end()) return absl::NotFoundError(name);
    return it->second;
  }
  absl::StatusOr<sv1::CareTeam> GetCareTeam(const std::string&, const std::string& client) override {
    ++care_team_calls;
    if (!care_team_error.ok()) return care_team_error;
    sv1::CareTeam t;
    if (client == "cl1") {
      auto* a = t.add_members();
      a->set_person("people/th1");
      a->set_role(cv1::ROLE_THERAPIST);
      auto* b = t.add_members();
      b->set_person("people/cn1");
      b->set_role(cv1::ROLE_CLINICIAN);
    }
    return t;
  }
  absl::StatusOr<sv1::Program> GetProgram(const std::string&) override { return program; }
  absl::StatusOr<sv1::Clinic> GetClinic(const std::string&) override { return clinic; }
  absl::StatusOr<std::vector<std::string>> MembersWithRole(const std::string&, cv1::Role) override {
    return std::vector<std::string>{};
  }
  absl::StatusOr<sv1::Person> GetPerson(const std::string& id) override {
    sv1::Person p;
    p.set_name("people/" + id);
    auto* m = p.add_memberships();
    m->set_clinic("clinics/c01");
    m->set_role(id == "sitter1" ? cv1::ROLE_SITTER : cv1::ROLE_CLIENT);
    return p;
  }
  absl::Status SetAppointmentState(const std::string& name, sv1::Appointment::State state,
                                   const std::string&) override {
    appointments[name].set_state(state);
    transitions.push_back(sv1::Appointment::State_Name(state));
    return absl::OkStatus();
  }

  std::map<std::string, sv1::Appointment> appointments;
  sv1::Program program;
  sv1::Clinic clinic;
  std::vector<std::string> transitions;
};

class RecordKeeperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = db::Open({.url = "sqlite::memory:"});
    ASSERT_TRUE(db.ok());
    db_ = std::move(*db);
    ASSERT_TRUE(db::ApplyMigrations(*db_, "outbox", outbox::Migrations()).ok());
    ASSERT_TRUE(db::ApplyMigrations(*db_, "idempotency", api::IdempotencyMigrations()).ok());
    ASSERT_TRUE(db::ApplyMigrations(*db_, "session_record", session_record::Migrations()).ok());
    for (auto [id, kind, setting] :
         std::vector<std::tuple<std::string, cv1::AppointmentKind, cv1::CareSetting>>{
             {"med1", cv1::APPOINTMENT_KIND_MEDICINE_SUPERVISED, cv1::CARE_SETTING_IN_CLINIC},
             {"home1", cv1::APPOINTMENT_KIND_MEDICINE_SELF_GUIDED, cv1::CARE_SETTING_HOME}}) {
      sv1::Appointment a;
      a.set_name("clinics/c01/appointments/" + id);
      a.set_kind(kind);
      a.set_setting(setting);
      a.set_client("people/cl1");
      a.set_program("clinics/c01/programs/p1");
      a.set_provider("people/th1");
      a.set_state(sv1::Appointment::STATE_BOOKED);
      scheduling_.appointments[a.name()] = a;
    }
    auto* plan = scheduling_.program.mutable_dose_plan();
    plan->set_route(cv1::DOSE_ROUTE_INTRAMUSCULAR);
    plan->set_min_dose_mg(20);
    plan->set_max_dose_mg(60);
    plan->set_max_sessions(6);
    auto* policy = scheduling_.clinic.mutable_policy();
    policy->set_max_systolic_mmhg(160);
    policy->set_max_diastolic_mmhg(100);
    *policy->mutable_supervised_observation_period() = ToProto(absl::Hours(2));
    *policy->mutable_self_guided_observation_period() = ToProto(absl::Hours(1));
    keeper_ = std::make_unique<RecordKeeper>(*db_, clock_, scheduling_);
  }

  std::string Rid() { return absl::StrCat("r", next_++); }

  // Replaces the fixture's in-memory database with a new one of `backend` ("sqlite": a new
  // file in `dir`; "postgres": a new database on the shared test server), and the keeper.
  void UseDatabase(const std::string& backend, const testing::TempDir& dir) {
    absl::StatusOr<std::string> url = testing::DatabaseUrl(backend, dir, absl::StrCat("records-", next_db_++, ".db"));
    ASSERT_TRUE(url.ok()) << url.status();
    keeper_.reset();
    auto opened = db::Open({.url = *url});
    ASSERT_TRUE(opened.ok()) << opened.status();
    db_ = std::move(*opened);
    ASSERT_TRUE(db::ApplyMigrations(*db_, "outbox", outbox::Migrations()).ok());
    ASSERT_TRUE(db::ApplyMigrations(*db_, "idempotency", api::IdempotencyMigrations()).ok());
    ASSERT_TRUE(db::ApplyMigrations(*db_, "session_record", session_record::Migrations()).ok());
    keeper_ = std::make_unique<RecordKeeper>(*db_, clock_, scheduling_);
  }
  void ReplicasWriteOverEachOthersCachedCopies();
  // Runs `body` once per backend ("sqlite", then "postgres"), each on a new database
  // (UseDatabase) holding the record of appointment "med1", created by the therapist.
  void OnEachBackendWithARecord(const std::function<void(const v1::SessionRecord&)>& body) {
    testing::TempDir dir;
    for (const std::string backend : {"sqlite", "postgres"}) {
      SCOPED_TRACE(backend);
      ASSERT_NO_FATAL_FAILURE(UseDatabase(backend, dir));
      absl::StatusOr<v1::SessionRecord> rec = Create("med1", therapist_);
      ASSERT_TRUE(rec.ok()) << rec.status();
      body(*rec);
    }
  }

  absl::StatusOr<v1::SessionRecord> Create(const std::string& appointment, const Principal& who) {
    v1::CreateSessionRecordRequest r;
    r.set_parent("clinics/c01");
    r.mutable_session_record()->set_appointment("clinics/c01/appointments/" + appointment);
    r.set_request_id(Rid());
    return keeper_->CreateSessionRecord(who, r);
  }

  absl::StatusOr<v1::UpdateChecklistResponse> Check(const std::string& name, std::vector<Item> items,
                                                    const Principal& who) {
    v1::UpdateChecklistRequest r;
    r.set_name(name);
    for (auto& i : items) *r.add_items() = i;
    r.set_request_id(Rid());
    return keeper_->UpdateChecklist(who, r);
  }

  static Item Confirm(Item::Kind kind) {
    Item i;
    i.set_kind(kind);
    i.set_confirmed(true);
    return i;
  }
  static Item Bp(int sys, int dia) {
    Item i;
    i.set_kind(Item::KIND_BLOOD_PRESSURE);
    i.set_systolic_mmhg(sys);
    i.set_diastolic_mmhg(dia);
    return i;
  }
  static Item Dose(cv1::DoseRoute route, double mg) {
    Item i;
    i.set_kind(Item::KIND_DOSE_WITHIN_PLAN);
    i.set_planned_route(route);
    i.set_planned_dose_mg(mg);
    return i;
  }

  absl::StatusOr<v1::SessionRecord> StartSession(const std::string& name, const Principal& who) {
    v1::StartSessionRequest r;
    r.set_name(name);
    r.set_request_id(Rid());
    return keeper_->StartSession(who, r);
  }

  absl::StatusOr<v1::SessionRecord> StartDose(const std::string& name, double mg, const Principal& who,
                                              const std::string& override_reason = "") {
    v1::StartDoseAdministrationRequest r;
    r.set_name(name);
    r.set_route(cv1::DOSE_ROUTE_INTRAMUSCULAR);
    r.set_dose_mg(mg);
    if (!override_reason.empty()) r.mutable_override()->set_reason(override_reason);
    r.set_request_id(Rid());
    return keeper_->StartDoseAdministration(who, r);
  }

  absl::StatusOr<v1::SessionRecord> Complete(const std::string& name, const Principal& who) {
    v1::CompleteSessionRequest r;
    r.set_name(name);
    r.set_request_id(Rid());
    return keeper_->CompleteSession(who, r);
  }

  FakeClock clock_;
  FakeScheduling scheduling_;
  std::unique_ptr<db::Database> db_;
  std::unique_ptr<RecordKeeper> keeper_;
  int next_ = 0;
  int next_db_ = 0;
  Principal therapist_{"people/th1", Role::kTherapist, {"c01"}};
  Principal clinician_{"people/cn1", Role::kClinician, {"c01"}};
  Principal outsider_{"people/th9", Role::kTherapist, {"c01"}};
  Principal client_{"people/cl1", Role::kClient, {"c01"}};
  Principal sitter_{"people/sitter1", Role::kSitter, {"c01"}};
  Principal admin_{"people/ad1", Role::kAdmin, {"c01"}};
  Principal partner_{"acme", Role::kPartner, {"c01"}};
  Principal other_clinic_{"people/th1", Role::kTherapist, {"c02"}};
};

const auto kFailed = absl::StatusCode::kFailedPrecondition;
const auto kDenied = absl::StatusCode::kPermissionDenied;

TEST_F(RecordKeeperTest, MedicineSessionWalksFromChecklistToSignedNoteThroughEveryGate) {
  auto rec = Create("med1", therapist_);
  ASSERT_TRUE(rec.ok()) << rec.status();
  const std::string name = rec->name();
  EXPECT_EQ(name, "clinics/c01/sessionRecords/med1");
  EXPECT_EQ(rec->state(), v1::SessionRecord::STATE_DRAFT);
  EXPECT_FALSE(rec->checklist().passed());
  EXPECT_THAT(Create("med1", therapist_), IsError(absl::StatusCode::kAlreadyExists, "ALREADY_EXISTS"));

  // Rule 4: the checklist gates the start, and the error lists the failing items.
  auto refused = StartSession(name, therapist_);
  EXPECT_THAT(refused, IsError(kFailed, "CHECKLIST_FAILED"));
  EXPECT_THAT(ErrorMetadata(refused.status())["failing_items"], HasSubstr("KIND_TRANSPORTATION_ARRANGED"));
  ASSERT_TRUE(Check(name, {Confirm(Item::KIND_TRANSPORTATION_ARRANGED)}, client_).ok()) << "clients confirm transport";
  EXPECT_THAT(Check(name, {Confirm(Item::KIND_CONSENT_ACTIVE)}, client_), IsError(kDenied, "PERMISSION_DENIED_ROLE"));
  auto high = Check(name, {Bp(182, 95), Confirm(Item::KIND_CONSENT_ACTIVE), Dose(cv1::DOSE_ROUTE_INTRAMUSCULAR, 40)},
                    therapist_);
  ASSERT_TRUE(high.ok()) << high.status();
  EXPECT_FALSE(high->checklist().passed()) << "blood pressure above the clinic's threshold fails";
  auto still = StartSession(name, therapist_);
  EXPECT_THAT(still, IsError(kFailed, "CHECKLIST_FAILED"));
  EXPECT_EQ(ErrorMetadata(still.status())["failing_items"], "KIND_BLOOD_PRESSURE (STATUS_FAILED)");
  ASSERT_TRUE(Check(name, {Bp(128, 82)}, therapist_).ok());
  auto started = StartSession(name, therapist_);
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(started->state(), v1::SessionRecord::STATE_IN_PROGRESS);
  EXPECT_THAT(scheduling_.transitions, ::testing::ElementsAre("STATE_CHECKED_IN"));

  // Rule 5: a dose outside the plan needs a clinician's override.
  EXPECT_THAT(StartDose(name, 80, therapist_), IsError(kFailed, "DOSE_OUTSIDE_PLAN"));
  EXPECT_THAT(StartDose(name, 80, therapist_, "tolerance"), IsError(kDenied, "OVERRIDE_REQUIRES_CLINICIAN"));
  auto dosed = StartDose(name, 40, therapist_);
  ASSERT_TRUE(dosed.ok()) << dosed.status();
  EXPECT_TRUE(dosed->dose_administrations(0).within_plan());
  EXPECT_THAT(StartDose(name, 20, therapist_), IsError(kFailed, "DOSE_STILL_ACTIVE"));
  EXPECT_THAT(Complete(name, therapist_), IsError(kFailed, "DOSE_STILL_ACTIVE"));
  clock_.Advance(absl::Minutes(20));
  v1::StopDoseAdministrationRequest stop;
  stop.set_name(name);
  stop.set_administration_id(dosed->dose_administrations(0).administration_id());
  stop.set_request_id(Rid());
  absl::StatusOr<v1::SessionRecord> stopped = keeper_->StopDoseAdministration(therapist_, stop);
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(FromProto(stopped->earliest_complete_time()), clock_.Now() + absl::Hours(2));
  // Over the session total of 60 mg: refused, then overridden by the clinician with a reason.
  EXPECT_THAT(StartDose(name, 30, therapist_), IsError(kFailed, "DOSE_OUTSIDE_PLAN"));
  auto extra = StartDose(name, 30, clinician_, "partial absorption of the first dose");
  ASSERT_TRUE(extra.ok()) << extra.status();
  EXPECT_FALSE(extra->dose_administrations(1).within_plan());
  EXPECT_EQ(extra->dose_administrations(1).override().clinician(), "people/cn1");
  stop.set_administration_id(extra->dose_administrations(1).administration_id());
  stop.set_request_id(Rid());
  ASSERT_TRUE(keeper_->StopDoseAdministration(therapist_, stop).ok());

  v1::RecordVitalsRequest vitals;
  vitals.set_name(name);
  vitals.mutable_vitals()->set_systolic_mmhg(135);
  vitals.mutable_vitals()->set_diastolic_mmhg(85);
  vitals.mutable_vitals()->set_heart_rate_bpm(88);
  vitals.mutable_vitals()->set_spo2_percent(97);
  vitals.set_request_id(Rid());
  ASSERT_TRUE(keeper_->RecordVitals(therapist_, vitals).ok());
  v1::AddTimelineEntryRequest tl;
  tl.set_name(name);
  tl.mutable_entry()->set_kind(v1::TimelineEntry::KIND_OBSERVATION);
  tl.mutable_entry()->set_text("calm, eyes closed");
  tl.set_request_id(Rid());
  ASSERT_TRUE(keeper_->AddTimelineEntry(therapist_, tl).ok());

  // Rule 8: the observation period after the last dose.
  clock_.Advance(absl::Hours(1));
  auto early = Complete(name, therapist_);
  EXPECT_THAT(early, IsError(kFailed, "OBSERVATION_PERIOD_NOT_ELAPSED"));
  EXPECT_FALSE(ErrorMetadata(early.status())["earliest_complete_time"].empty());
  clock_.Advance(absl::Hours(1));
  auto completed = Complete(name, therapist_);
  ASSERT_TRUE(completed.ok()) << completed.status();
  EXPECT_THAT(scheduling_.transitions, ::testing::ElementsAre("STATE_CHECKED_IN", "STATE_FULFILLED"));

  // Sign and lock.
  v1::SignSessionRecordRequest sign;
  sign.set_name(name);
  sign.set_request_id(Rid());
  EXPECT_THAT(keeper_->SignSessionRecord(therapist_, sign), IsError(kFailed, "NOTE_REQUIRED"));
  v1::UpdateNoteRequest note;
  note.set_name(name);
  note.mutable_note()->set_kind(v1::Note::KIND_SESSION);
  note.mutable_note()->set_text("Session went well.");
  note.set_request_id(Rid());
  ASSERT_TRUE(keeper_->UpdateNote(therapist_, note).ok());
  sign.set_request_id(Rid());
  EXPECT_THAT(keeper_->SignSessionRecord(outsider_, sign), IsError(kDenied, "NOT_ON_CARE_TEAM"));
  sign.set_request_id(Rid());
  absl::StatusOr<v1::SessionRecord> signed_rec = keeper_->SignSessionRecord(clinician_, sign);
  ASSERT_TRUE(signed_rec.ok()) << signed_rec.status();
  EXPECT_EQ(signed_rec->state(), v1::SessionRecord::STATE_SIGNED);
  note.set_request_id(Rid());
  EXPECT_THAT(keeper_->UpdateNote(therapist_, note), IsError(kFailed, "RECORD_LOCKED"));
  tl.set_request_id(Rid());
  EXPECT_THAT(keeper_->AddTimelineEntry(therapist_, tl), IsError(kFailed, "RECORD_LOCKED"));

  // Amendment: a new version; every earlier version stays readable and unchanged.
  v1::AmendSessionRecordRequest amend;
  amend.set_name(name);
  amend.set_reason("dose time corrected");
  amend.set_addendum("Second dose started at 10:40, not 10:35.");
  amend.set_request_id(Rid());
  absl::StatusOr<v1::SessionRecord> amended = keeper_->AmendSessionRecord(therapist_, amend);
  ASSERT_TRUE(amended.ok()) << amended.status();
  EXPECT_EQ(amended->version(), signed_rec->version() + 1);
  EXPECT_EQ(amended->state(), v1::SessionRecord::STATE_SIGNED);
  EXPECT_EQ(amended->timeline().rbegin()->kind(), v1::TimelineEntry::KIND_ADDENDUM);
  v1::GetSessionRecordRequest get;
  get.set_name(name);
  get.set_version(signed_rec->version());
  auto old = keeper_->GetSessionRecord(therapist_, get);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->SerializeAsString(), signed_rec->SerializeAsString()) << "a version is never rewritten";
  v1::ListSessionRecordVersionsRequest versions;
  versions.set_name(name);
  auto listed = keeper_->ListSessionRecordVersions(therapist_, versions);
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->versions_size(), amended->version());
  EXPECT_EQ(listed->versions().rbegin()->reason(), "dose time corrected");

  // Events for messaging: started, adverse-free, completed, signed.
  auto types = db_->Query("SELECT type FROM outbox ORDER BY id");
  ASSERT_TRUE(types.ok());
  std::vector<std::string> t;
  for (const auto& row : *types) t.push_back(row.Text(0));
  EXPECT_THAT(t, ::testing::ElementsAre("session_started", "session_completed", "session_signed"));
}

TEST_F(RecordKeeperTest, SelfGuidedSessionNeedsSitterAndClinicianMayOverrideWithReason) {
  auto rec = Create("home1", therapist_);
  ASSERT_TRUE(rec.ok());
  const std::string name = rec->name();
  Item sitter = Confirm(Item::KIND_SITTER_PRESENT);
  sitter.set_sitter("people/sitter1");
  ASSERT_TRUE(Check(name, {sitter}, client_).ok()) << "the client names the sitter";
  EXPECT_TRUE(Check(name, {Bp(120, 80), Confirm(Item::KIND_MEDICATIONS_HELD)}, sitter_).ok())
      << "the named sitter provides blood pressure and medications";
  EXPECT_THAT(Check(name, {Confirm(Item::KIND_CONSENT_ACTIVE)}, sitter_), IsError(kDenied, "PERMISSION_DENIED_ROLE"));
  v1::GetSessionRecordRequest get;
  get.set_name(name);
  EXPECT_THAT(keeper_->GetSessionRecord(sitter_, get), IsError(kDenied, "NOT_ON_CARE_TEAM"))
      << "a sitter sees only the checklist items they provide";
  EXPECT_THAT(StartSession(name, therapist_), IsError(kFailed, "CHECKLIST_FAILED"));
  v1::OverrideChecklistRequest o;
  o.set_name(name);
  o.set_reason("consent renewed verbally, paperwork follows");
  o.set_request_id(Rid());
  EXPECT_THAT(keeper_->OverrideChecklist(therapist_, o), IsError(kDenied, "OVERRIDE_REQUIRES_CLINICIAN"));
  o.set_request_id(Rid());
  absl::StatusOr<v1::SessionRecord> overridden = keeper_->OverrideChecklist(clinician_, o);
  ASSERT_TRUE(overridden.ok()) << overridden.status();
  EXPECT_THAT(overridden->checklist().override().failing_items(),
              ::testing::Contains(Item::KIND_CONSENT_ACTIVE));
  auto started = StartSession(name, therapist_);
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(started->sitter(), "people/sitter1");
}

TEST_F(RecordKeeperTest, AuditChainVerifiesAndReportsTheFirstAlteredRow) {
  auto rec = Create("med1", therapist_);
  ASSERT_TRUE(rec.ok());
  v1::GetSessionRecordRequest get;
  get.set_name(rec->name());
  ASSERT_TRUE(keeper_->GetSessionRecord(therapist_, get).ok());
  EXPECT_FALSE(keeper_->GetSessionRecord(outsider_, get).ok());
  EXPECT_FALSE(keeper_->GetSessionRecord(admin_, get).ok()) << "admins audit, they do not read records";
  v1::ListAuditEntriesRequest list;
  list.set_parent("clinics/c01");
  EXPECT_THAT(keeper_->ListAuditEntries(therapist_, list), IsError(kDenied, "PERMISSION_DENIED_ROLE"));
  auto entries = keeper_->ListAuditEntries(admin_, list);
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->audit_entries_size(), 4);
  EXPECT_EQ(entries->audit_entries(0).action(), "CreateSessionRecord");
  EXPECT_EQ(entries->audit_entries(1).action(), "GetSessionRecord");
  EXPECT_EQ(entries->audit_entries(2).outcome(), v1::AuditEntry::OUTCOME_DENIED);
  EXPECT_EQ(entries->audit_entries(2).error_reason(), "NOT_ON_CARE_TEAM");
  EXPECT_EQ(entries->audit_entries(2).actor(), "people/th9");
  EXPECT_EQ(entries->audit_entries(1).prev_hash(), entries->audit_entries(0).hash());
  v1::VerifyAuditChainRequest verify;
  verify.set_parent("clinics/c01");
  auto ok = keeper_->VerifyAuditChain(admin_, verify);
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(ok->ok());
  EXPECT_EQ(ok->entries_checked(), 4);
  // Someone edits a row directly in the database: who read the record.
  ASSERT_TRUE(db_->Exec("UPDATE audit_log SET actor = 'people/nobody' WHERE sequence = 2").ok());
  auto broken = keeper_->VerifyAuditChain(admin_, verify);
  ASSERT_TRUE(broken.ok());
  EXPECT_FALSE(broken->ok());
  EXPECT_EQ(broken->first_broken_entry().sequence(), 2);
  EXPECT_EQ(broken->problem(), v1::VerifyAuditChainResponse::PROBLEM_HASH_MISMATCH);
}

// Audit entries are appended pending and chained later, by any replica. Four threads write
// and read their own records through two replicas while both replicas' chainers run against
// the same database (PostgreSQL, where transactions really overlap, and a SQLite file): every
// audited call ends up in the chain exactly once, numbered without gaps, each thread's calls
// in the order it made them, and the chain verifies.
TEST_F(RecordKeeperTest, AuditChainTakesEveryEntryOnceInOrderWhileReplicasWriteAndChain) {
  constexpr int kThreads = 4, kEach = 25;
  for (int t = 0; t < kThreads; ++t) {
    sv1::Appointment a = scheduling_.appointments["clinics/c01/appointments/med1"];
    a.set_name(absl::StrCat("clinics/c01/appointments/chain", t));
    scheduling_.appointments[a.name()] = a;
  }
  testing::TempDir dir;
  for (const std::string backend : {"sqlite", "postgres"}) {
    SCOPED_TRACE(backend);
    absl::StatusOr<std::string> url = testing::DatabaseUrl(backend, dir, "chain.db");
    ASSERT_TRUE(url.ok()) << url.status();
    auto opened = db::Open({.url = *url, .pool_size = 8});
    ASSERT_TRUE(opened.ok()) << opened.status();
    db::Database& db = **opened;
    ASSERT_TRUE(db::ApplyMigrations(db, "outbox", outbox::Migrations()).ok());
    ASSERT_TRUE(db::ApplyMigrations(db, "idempotency", api::IdempotencyMigrations()).ok());
    ASSERT_TRUE(db::ApplyMigrations(db, "session_record", session_record::Migrations()).ok());
    RecordKeeper a(db, clock_, scheduling_), b(db, clock_, scheduling_);
    AuditChainer chain_a(db, absl::Milliseconds(1)), chain_b(db, absl::Milliseconds(1));
    chain_a.Start();
    chain_b.Start();
    std::vector<std::string> names(kThreads);
    std::vector<absl::Status> failed(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        auto fail = [&](absl::Status s) { failed[t] = s; };
        v1::CreateSessionRecordRequest create;
        create.set_parent("clinics/c01");
        create.mutable_session_record()->set_appointment(absl::StrCat("clinics/c01/appointments/chain", t));
        create.set_request_id(absl::StrCat("create-", t));
        auto rec = a.CreateSessionRecord(therapist_, create);
        if (!rec.ok()) return fail(rec.status());
        names[t] = rec->name();
        for (int i = 0; i < kEach; ++i) {
          RecordKeeper& replica = i % 2 ? b : a;
          v1::AddTimelineEntryRequest add;
          add.set_name(rec->name());
          add.mutable_entry()->set_kind(v1::TimelineEntry::KIND_OBSERVATION);
          add.mutable_entry()->set_text(absl::StrCat("note ", i));
          add.set_request_id(absl::StrCat("add-", t, "-", i));
          if (auto w = replica.AddTimelineEntry(therapist_, add); !w.ok()) return fail(w.status());
          v1::GetSessionRecordRequest get;
          get.set_name(rec->name());
          if (auto r = replica.GetSessionRecord(therapist_, get); !r.ok()) return fail(r.status());
        }
      });
    }
    for (auto& t : threads) t.join();
    for (const auto& s : failed) ASSERT_TRUE(s.ok()) << s;
    // Listing chains what is still pending, so every call above is in the list.
    v1::ListAuditEntriesRequest list;
    list.set_parent("clinics/c01");
    list.set_page_size(1000);
    auto listed = b.ListAuditEntries(admin_, list);
    chain_a.Stop();
    chain_b.Stop();
    ASSERT_TRUE(listed.ok()) << listed.status();
    ASSERT_EQ(listed->audit_entries_size(), kThreads * (1 + 2 * kEach));
    std::map<std::string, std::vector<std::string>> calls;  // record -> its calls, in chain order
    for (int i = 0; i < listed->audit_entries_size(); ++i) {
      const v1::AuditEntry& e = listed->audit_entries(i);
      ASSERT_EQ(e.sequence(), i + 1);
      ASSERT_EQ(e.outcome(), v1::AuditEntry::OUTCOME_SUCCESS) << e.resource();
      calls[e.resource()].push_back(e.action());
    }
    std::vector<std::string> expected = {"CreateSessionRecord"};
    for (int i = 0; i < kEach; ++i) {
      expected.push_back("AddTimelineEntry");
      expected.push_back("GetSessionRecord");
    }
    for (const std::string& name : names) EXPECT_EQ(calls[name], expected) << name;
    v1::VerifyAuditChainRequest verify;
    verify.set_parent("clinics/c01");
    auto verified = a.VerifyAuditChain(admin_, verify);
    ASSERT_TRUE(verified.ok()) << verified.status();
    EXPECT_TRUE(verified->ok()) << verified->ShortDebugString();
    EXPECT_EQ(verified->entries_checked(), kThreads * (1 + 2 * kEach));
    auto left = db.InTransaction([&](db::Tx& tx) -> absl::Status {
      ASSIGN_OR_RETURN(db::Rows rows, tx.Query("SELECT COUNT(*) FROM audit_pending"));
      EXPECT_EQ(rows[0].Int(0), 0) << "nothing left pending";
      return absl::OkStatus();
    }, db::TxMode::kReadOnly);
    EXPECT_TRUE(left.ok()) << left;
  }
}

// An entry a replica appended and never chained (it stopped first) is chained by another
// replica's chainer, and chaining it twice is impossible: the second pass finds nothing.
TEST_F(RecordKeeperTest, PendingAuditEntriesLeftByAStoppedReplicaAreChainedOnceByAnother) {
  auto rec = Create("med1", therapist_);  // pending: no chainer runs in this fixture
  ASSERT_TRUE(rec.ok()) << rec.status();
  AuditChainer chainer(*db_, absl::Hours(1));
  auto first = chainer.ChainOnce();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(*first, 1);
  auto again = chainer.ChainOnce();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, 0);
  v1::ListAuditEntriesRequest list;
  list.set_parent("clinics/c01");
  auto listed = keeper_->ListAuditEntries(admin_, list);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->audit_entries_size(), 1);
  EXPECT_EQ(listed->audit_entries(0).action(), "CreateSessionRecord");
  EXPECT_EQ(listed->audit_entries(0).name(), "clinics/c01/auditEntries/1");
  EXPECT_EQ(listed->audit_entries(0).prev_hash(), std::string(64, '0'));
  EXPECT_EQ(listed->audit_entries(0).hash(), AuditHash(listed->audit_entries(0)));
}

// The chainer finds every clinic with pending entries (it probes the index clinic by clinic),
// and chains each clinic's entries into that clinic's own chain.
TEST_F(RecordKeeperTest, ChainerChainsThePendingEntriesOfEveryClinic) {
  testing::TempDir dir;
  for (const std::string backend : {"sqlite", "postgres"}) {
    SCOPED_TRACE(backend);
    absl::StatusOr<std::string> url = testing::DatabaseUrl(backend, dir, "clinics.db");
    ASSERT_TRUE(url.ok()) << url.status();
    auto opened = db::Open({.url = *url});
    ASSERT_TRUE(opened.ok()) << opened.status();
    db::Database& db = **opened;
    ASSERT_TRUE(db::ApplyMigrations(db, "session_record", session_record::Migrations()).ok());
    const std::vector<std::string> clinics = {"c01", "c02", "c10", "z9"};
    ASSERT_TRUE(db.InTransaction([&](db::Tx& tx) -> absl::Status {
                    for (int round = 0; round < 2; ++round) {
                      for (const auto& clinic : clinics) {
                        v1::AuditEntry e;
                        e.set_actor("people/ther");
                        e.set_action(absl::StrCat("Round", round));
                        *e.mutable_occur_time() = ToProto(absl::FromUnixSeconds(1000 + round));
                        RETURN_IF_ERROR(AppendAudit(tx, clinic, e));
                      }
                    }
                    return absl::OkStatus();
                  }).ok());
    AuditChainer chainer(db, absl::Hours(1));
    auto chained = chainer.ChainOnce();
    ASSERT_TRUE(chained.ok()) << chained.status();
    EXPECT_EQ(*chained, 8);
    for (const auto& clinic : clinics) {
      auto verified = db.InTransaction([&](db::Tx& tx) -> absl::Status {
        ASSIGN_OR_RETURN(auto listed, ListAudit(tx, clinic, AuditFilter{.limit = 10}));
        EXPECT_EQ(listed.size(), 2u) << clinic;
        for (size_t i = 0; i < listed.size(); ++i) {
          EXPECT_EQ(listed[i].sequence(), static_cast<int64_t>(i + 1)) << clinic;
          EXPECT_EQ(listed[i].action(), absl::StrCat("Round", i)) << clinic;
        }
        return absl::OkStatus();
      }, db::TxMode::kReadOnly);
      EXPECT_TRUE(verified.ok()) << verified;
    }
    auto again = chainer.ChainOnce();
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(*again, 0) << "nothing left pending";
  }
}

// PostgreSQL: a chain pass takes its batch by primary key, never by a scan of audit_pending
// (whose heap holds the dead rows of every entry chained since the last vacuum), and finds it
// through the clinic's index. Here: 20,000 pending entries of other clinics, fresh statistics.
TEST_F(RecordKeeperTest, PostgresChainPassTakesItsBatchByKey) {
  testing::TempDir dir;
  absl::StatusOr<std::string> url = testing::DatabaseUrl("postgres", dir, "unused.db");
  ASSERT_TRUE(url.ok()) << url.status();
  auto opened = db::Open({.url = *url});
  ASSERT_TRUE(opened.ok()) << opened.status();
  db::Database& db = **opened;
  ASSERT_TRUE(db::ApplyMigrations(db, "session_record", session_record::Migrations()).ok());
  ASSERT_TRUE(db.InTransaction([&](db::Tx& tx) {
    return tx.ExecScript(
        "INSERT INTO audit_pending (clinic_id, data)"
        " SELECT CASE WHEN g <= 200 THEN 'c01' ELSE 'c' || (g % 50) END, '\\x00'::bytea"
        " FROM generate_series(1, 20200) g;"
        "ANALYZE audit_pending");
  }).ok());
  auto plan_of = [&](const char* sql) {
    std::string plan;
    EXPECT_TRUE(db.InTransaction([&](db::Tx& tx) -> absl::Status {
      ASSIGN_OR_RETURN(db::Rows rows, tx.Query(std::string("EXPLAIN ") + sql, {std::string("c01"), int64_t{500}}));
      for (const auto& r : rows) plan += r.Text(0) + "\n";
      return absl::OkStatus();
    }).ok());
    return plan;
  };
  const std::string plan = plan_of(kTakePendingSqlPostgres);
  EXPECT_THAT(plan, ::testing::HasSubstr("Index Scan using audit_pending_pkey")) << plan;
  EXPECT_THAT(plan, ::testing::HasSubstr("audit_pending_by_clinic")) << plan;
  EXPECT_THAT(plan, ::testing::Not(::testing::HasSubstr("Seq Scan"))) << plan;
  // What the array form is for: the IN (subquery) form scans the table here.
  const std::string in_form = plan_of(kTakePendingSql);
  EXPECT_THAT(in_form, ::testing::HasSubstr("Seq Scan on audit_pending")) << in_form;
}

TEST_F(RecordKeeperTest, AuditHashFollowsTheDocumentedEncoding) {
  v1::AuditEntry e;
  e.set_prev_hash(std::string(64, '0'));
  e.set_sequence(1);
  *e.mutable_occur_time() = ToProto(absl::FromUnixSeconds(1735787045));  // 2025-01-02T03:04:05Z
  e.set_actor("people/a");
  e.set_actor_role(cv1::ROLE_CLINICIAN);
  e.set_action("GetSessionRecord");
  e.set_outcome(v1::AuditEntry::OUTCOME_SUCCESS);
  // sha256 of "64:000...0\n1:1\n30:2025-01-02T03:04:05.000000000Z\n8:people/a\n14:ROLE_CLINICIAN\n0:\n0:\n
  //            16:GetSessionRecord\n15:OUTCOME_SUCCESS\n0:\n0:\n0:\n", computed independently with sha256sum.
  EXPECT_EQ(AuditHash(e), "6df342fe5a8d01ebb52a8fc372eee49aa1df5a72cb6fc8e637559264ee5f731a");
  v1::AuditEntry changed = e;
  changed.set_actor("people/b");
  EXPECT_NE(AuditHash(e), AuditHash(changed));
}

TEST_F(RecordKeeperTest, JournalIsPrivateUnlessSharedAndExportIsValidFhir) {
  v1::CreateJournalEntryRequest j;
  j.set_parent("clinics/c01");
  j.mutable_journal_entry()->set_text("private thoughts");
  j.mutable_journal_entry()->set_visibility(v1::JournalEntry::VISIBILITY_PRIVATE);
  j.set_request_id(Rid());
  ASSERT_TRUE(keeper_->CreateJournalEntry(client_, j).ok());
  j.mutable_journal_entry()->set_text("felt connected to my grandmother");
  j.mutable_journal_entry()->set_visibility(v1::JournalEntry::VISIBILITY_SHARED_WITH_CARE_TEAM);
  j.set_request_id(Rid());
  ASSERT_TRUE(keeper_->CreateJournalEntry(client_, j).ok());
  EXPECT_THAT(keeper_->CreateJournalEntry(therapist_, j), IsError(kDenied, "PERMISSION_DENIED_ROLE"));
  v1::ListJournalEntriesRequest l;
  l.set_parent("clinics/c01");
  EXPECT_EQ(keeper_->ListJournalEntries(client_, l)->journal_entries_size(), 2);
  l.set_client("people/cl1");
  auto team_view = keeper_->ListJournalEntries(therapist_, l);
  ASSERT_TRUE(team_view.ok());
  ASSERT_EQ(team_view->journal_entries_size(), 1);
  EXPECT_EQ(team_view->journal_entries(0).text(), "felt connected to my grandmother");
  EXPECT_THAT(keeper_->ListJournalEntries(outsider_, l), IsError(kDenied, "NOT_ON_CARE_TEAM"));

  // A signed record exported as FHIR.
  auto rec = Create("med1", therapist_);
  ASSERT_TRUE(rec.ok());
  ASSERT_TRUE(Check(rec->name(), {Confirm(Item::KIND_TRANSPORTATION_ARRANGED), Bp(120, 80),
                                  Confirm(Item::KIND_CONSENT_ACTIVE), Dose(cv1::DOSE_ROUTE_INTRAMUSCULAR, 40)},
                    therapist_).ok());
  ASSERT_TRUE(StartSession(rec->name(), therapist_).ok());
  auto dosed = StartDose(rec->name(), 40, therapist_);
  ASSERT_TRUE(dosed.ok());
  v1::StopDoseAdministrationRequest stop;
  stop.set_name(rec->name());
  stop.set_administration_id(dosed->dose_administrations(0).administration_id());
  stop.set_request_id(Rid());
  ASSERT_TRUE(keeper_->StopDoseAdministration(therapist_, stop).ok());
  v1::RecordVitalsRequest vitals;
  vitals.set_name(rec->name());
  vitals.mutable_vitals()->set_systolic_mmhg(130);
  vitals.mutable_vitals()->set_diastolic_mmhg(80);
  vitals.set_request_id(Rid());
  ASSERT_TRUE(keeper_->RecordVitals(therapist_, vitals).ok());
  clock_.Advance(absl::Hours(3));
  ASSERT_TRUE(Complete(rec->name(), therapist_).ok());
  v1::UpdateNoteRequest note;
  note.set_name(rec->name());
  note.mutable_note()->set_kind(v1::Note::KIND_SESSION);
  note.mutable_note()->set_text("note");
  note.set_request_id(Rid());
  ASSERT_TRUE(keeper_->UpdateNote(therapist_, note).ok());
  v1::SignSessionRecordRequest sign;
  sign.set_name(rec->name());
  sign.set_request_id(Rid());
  ASSERT_TRUE(keeper_->SignSessionRecord(therapist_, sign).ok());

  v1::ExportFhirBundleRequest ex;
  ex.set_parent("clinics/c01");
  ex.set_client("people/cl1");
  auto bundle = keeper_->ExportFhirBundle(partner_, ex);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_EQ(bundle->record_count(), 1);
  google::protobuf::Struct parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(bundle->bundle_json(), &parsed).ok());
  EXPECT_EQ(parsed.fields().at("resourceType").string_value(), "Bundle");
  std::map<std::string, int> counts;
  std::set<std::string> loinc;
  for (const auto& entry : parsed.fields().at("entry").list_value().values()) {
    const auto& res = entry.struct_value().fields().at("resource").struct_value().fields();
    counts[res.at("resourceType").string_value()]++;
    if (res.at("resourceType").string_value() == "Observation") {
      loinc.insert(res.at("code").struct_value().fields().at("coding").list_value().values(0).struct_value()
                       .fields().at("code").string_value());
    }
  }
  EXPECT_EQ(counts["Encounter"], 1);
  EXPECT_EQ(counts["MedicationAdministration"], 1);
  EXPECT_EQ(counts["Observation"], 2);
  EXPECT_EQ(counts["DocumentReference"], 1);
  EXPECT_GE(counts["Provenance"], 8) << "one per version";
  EXPECT_THAT(loinc, ::testing::ElementsAre("8462-4", "8480-6"));
  EXPECT_THAT(keeper_->ExportFhirBundle(outsider_, ex), IsError(kDenied, "PERMISSION_DENIED_ROLE"));
  EXPECT_THAT(keeper_->ExportFhirBundle(other_clinic_, ex), IsError(kDenied, "PERMISSION_DENIED_CROSS_CLINIC"));
}

TEST_F(RecordKeeperTest, RetriedWriteIsAppliedOnceAndStaleEtagIsRefused) {
  auto rec = Create("med1", therapist_);
  ASSERT_TRUE(rec.ok());
  v1::AddTimelineEntryRequest tl;
  tl.set_name(rec->name());
  tl.mutable_entry()->set_kind(v1::TimelineEntry::KIND_CHECK_IN);
  tl.mutable_entry()->set_text("arrived");
  tl.set_request_id("same");
  absl::StatusOr<v1::SessionRecord> first = keeper_->AddTimelineEntry(therapist_, tl);
  absl::StatusOr<v1::SessionRecord> retry = keeper_->AddTimelineEntry(therapist_, tl);
  ASSERT_TRUE(first.ok() && retry.ok());
  EXPECT_EQ(first->version(), retry->version());
  EXPECT_EQ(retry->timeline_size(), 1);
  v1::UpdateNoteRequest note;
  note.set_name(rec->name());
  note.mutable_note()->set_kind(v1::Note::KIND_SESSION);
  note.mutable_note()->set_text("x");
  note.set_etag(rec->etag());  // version 1: stale now
  note.set_request_id(Rid());
  EXPECT_THAT(keeper_->UpdateNote(therapist_, note), IsError(absl::StatusCode::kAborted, "ETAG_MISMATCH"));
  // That write was built on this replica's cached copy (in place) before the transaction
  // refused it: neither the database nor the cache keeps a trace of it.
  v1::GetSessionRecordRequest get;
  get.set_name(rec->name());
  absl::StatusOr<v1::SessionRecord> after_refusal = keeper_->GetSessionRecord(therapist_, get);
  ASSERT_TRUE(after_refusal.ok()) << after_refusal.status();
  EXPECT_EQ(after_refusal->SerializeAsString(), first->SerializeAsString());

  // A write made with the current etag, retried after it succeeded: the retry's etag is now
  // stale, and it still gets the first answer (the whole record of the version it wrote).
  note.set_etag(first->etag());
  note.set_request_id("note-once");
  absl::StatusOr<v1::SessionRecord> noted = keeper_->UpdateNote(therapist_, note);
  ASSERT_TRUE(noted.ok()) << noted.status();
  absl::StatusOr<v1::SessionRecord> noted_again = keeper_->UpdateNote(therapist_, note);
  ASSERT_TRUE(noted_again.ok()) << noted_again.status();
  EXPECT_EQ(noted_again->SerializeAsString(), noted->SerializeAsString());
  EXPECT_EQ(noted->version(), first->version() + 1);
  EXPECT_EQ(noted_again->timeline_size(), 1);
  EXPECT_EQ(noted_again->note().text(), "x");
}

// Two replicas on one database: each writes from the version it cached last, and a write
// made by the other replica in between is neither lost nor hidden (the stale copy is noticed
// in the transaction and the write starts over from the database). On PostgreSQL the stale
// write's first attempt is one pipeline whose commit fails because the head did not move
// (store::AppendVersionDeferred); on SQLite the head's guarded move finds it.
TEST_F(RecordKeeperTest, AReplicasCachedCopyNeverHidesAnotherReplicasWrite) {
  testing::TempDir dir;
  for (const std::string backend : {"sqlite", "postgres"}) {
    SCOPED_TRACE(backend);
    ASSERT_NO_FATAL_FAILURE(UseDatabase(backend, dir));
    ReplicasWriteOverEachOthersCachedCopies();
  }
}

void RecordKeeperTest::ReplicasWriteOverEachOthersCachedCopies() {
  auto rec = Create("med1", therapist_);
  ASSERT_TRUE(rec.ok()) << rec.status();
  RecordKeeper other(*db_, clock_, scheduling_);
  auto add = [&](RecordKeeper& keeper, const std::string& text) -> absl::StatusOr<v1::SessionRecord> {
    v1::AddTimelineEntryRequest tl;
    tl.set_name(rec->name());
    tl.mutable_entry()->set_kind(v1::TimelineEntry::KIND_OBSERVATION);
    tl.mutable_entry()->set_text(text);
    tl.set_request_id(Rid());
    return keeper.AddTimelineEntry(therapist_, tl);
  };
  ASSERT_TRUE(add(*keeper_, "one").ok());
  ASSERT_TRUE(add(other, "two").ok());
  auto third = add(*keeper_, "three");  // keeper_ still caches the version with "one" only
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->version(), 4);
  std::vector<std::string> texts;
  for (const auto& e : third->timeline()) texts.push_back(e.text());
  EXPECT_THAT(texts, ::testing::ElementsAre("one", "two", "three"));
  v1::GetSessionRecordRequest get;
  get.set_name(rec->name());
  auto stored = other.GetSessionRecord(therapist_, get);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->SerializeAsString(), third->SerializeAsString());
}

// A write retried (same request_id) on another replica whose cached copy is older than the
// write: the retry is answered with what the first call wrote, and that replica neither answers
// nor keeps the version its own attempt built (on PostgreSQL that attempt goes as far as the
// COMMIT before the moved head fails it).
TEST_F(RecordKeeperTest, RetryOnAReplicaWithAStaleCopyIsAnsweredWithTheFirstWrite) {
  OnEachBackendWithARecord([&](const v1::SessionRecord& rec) {
    RecordKeeper other(*db_, clock_, scheduling_);
    v1::GetSessionRecordRequest get;
    get.set_name(rec.name());
    ASSERT_TRUE(other.GetSessionRecord(therapist_, get).ok());  // `other` now holds version 1
    v1::AddTimelineEntryRequest tl;
    tl.set_name(rec.name());
    tl.mutable_entry()->set_kind(v1::TimelineEntry::KIND_OBSERVATION);
    tl.mutable_entry()->set_text("first");
    tl.set_request_id("once");
    absl::StatusOr<v1::SessionRecord> first = keeper_->AddTimelineEntry(therapist_, tl);
    ASSERT_TRUE(first.ok()) << first.status();
    clock_.Advance(absl::Seconds(1));
    absl::StatusOr<v1::SessionRecord> retried = other.AddTimelineEntry(therapist_, tl);
    ASSERT_TRUE(retried.ok()) << retried.status();
    EXPECT_EQ(retried->SerializeAsString(), first->SerializeAsString());
    auto seen = other.GetSessionRecord(therapist_, get);
    ASSERT_TRUE(seen.ok()) << seen.status();
    EXPECT_EQ(seen->SerializeAsString(), first->SerializeAsString()) << "the replica kept its own attempt";
    tl.mutable_entry()->set_text("second");
    tl.set_request_id("next");
    absl::StatusOr<v1::SessionRecord> next = other.AddTimelineEntry(therapist_, tl);
    ASSERT_TRUE(next.ok()) << next.status();
    RecordKeeper fresh(*db_, clock_, scheduling_);
    auto stored = fresh.GetSessionRecord(therapist_, get);
    ASSERT_TRUE(stored.ok()) << stored.status();
    EXPECT_EQ(stored->SerializeAsString(), next->SerializeAsString());
    ASSERT_EQ(stored->timeline_size(), 2);
    EXPECT_EQ(stored->timeline(0).SerializeAsString(), first->timeline(0).SerializeAsString());
  });
}

// The database lost commits this replica had seen (a failover to a standby that was behind, a
// restore) while the replica kept running: its cached copy is ahead of the database. The next
// write must be built on what the database has, and nothing may be written above its head.
TEST_F(RecordKeeperTest, AfterTheDatabaseLostCommitsACachedCopyIsNotWrittenAboveTheHead) {
  OnEachBackendWithARecord([&](const v1::SessionRecord& rec) {
    v1::AddTimelineEntryRequest tl;
    tl.set_name(rec.name());
    tl.mutable_entry()->set_kind(v1::TimelineEntry::KIND_OBSERVATION);
    for (const char* text : {"lost one", "lost two"}) {
      tl.mutable_entry()->set_text(text);
      tl.set_request_id(Rid());
      ASSERT_TRUE(keeper_->AddTimelineEntry(therapist_, tl).ok());  // cached: version 3
    }
    ASSERT_TRUE(db_->InTransaction([](db::Tx& tx) -> absl::Status {
      RETURN_IF_ERROR(tx.Exec("DELETE FROM record_versions WHERE record_id = 'med1' AND version > 1").status());
      return tx.Exec("UPDATE session_records SET latest_version = 1 WHERE record_id = 'med1'").status();
    }).ok());
    tl.mutable_entry()->set_text("after");
    tl.set_request_id(Rid());
    absl::StatusOr<v1::SessionRecord> after = keeper_->AddTimelineEntry(therapist_, tl);
    ASSERT_TRUE(after.ok()) << after.status();
    EXPECT_EQ(after->version(), 2);
    ASSERT_EQ(after->timeline_size(), 1);
    EXPECT_EQ(after->timeline(0).text(), "after");
    absl::StatusOr<int64_t> above = -1;
    ASSERT_TRUE(db_->InTransaction([&](db::Tx& tx) -> absl::Status {
      ASSIGN_OR_RETURN(db::Rows rows, tx.Query("SELECT COUNT(*) FROM record_versions WHERE record_id = 'med1'"
                                               " AND version > 2"));
      above = rows[0].Int(0);
      return absl::OkStatus();
    }, db::TxMode::kReadOnly).ok());
    EXPECT_EQ(*above, 0) << "a version was written above the head";
  });
}

// Writers of one record on two replicas at once: every acknowledged entry is in the record
// exactly once, one version per write, and nothing else is. On PostgreSQL the writes'
// pipelines meet on the head's row lock, and the later ones find it moved, fail at commit and
// start over. A write that keeps losing the race is refused with ABORTED (retry),
// after the database layer's own retries; that is the only refusal allowed.
TEST_F(RecordKeeperTest, ConcurrentWritersOfOneRecordOnTwoReplicasLoseNothing) {
  OnEachBackendWithARecord([&](const v1::SessionRecord& rec) {
    RecordKeeper other(*db_, clock_, scheduling_);
    constexpr int kThreads = 4, kWrites = 10;
    std::vector<std::vector<std::string>> acked(kThreads);
    std::vector<std::vector<std::string>> failed(kThreads);  // refused other than ABORTED
    std::vector<std::thread> writers;
    for (int t = 0; t < kThreads; ++t) {
      writers.emplace_back([&, t] {
        RecordKeeper& keeper = t % 2 ? other : *keeper_;
        for (int i = 0; i < kWrites; ++i) {
          v1::AddTimelineEntryRequest tl;
          tl.set_name(rec.name());
          tl.mutable_entry()->set_kind(v1::TimelineEntry::KIND_OBSERVATION);
          tl.mutable_entry()->set_text(absl::StrCat("w", t, "-", i));
          tl.set_request_id(absl::StrCat("concurrent-", t, "-", i));
          absl::StatusOr<v1::SessionRecord> written = keeper.AddTimelineEntry(therapist_, tl);
          if (written.ok()) {
            acked[t].push_back(tl.entry().text());
          } else if (written.status().code() != absl::StatusCode::kAborted) {
            failed[t].push_back(written.status().ToString());
          }
        }
      });
    }
    for (auto& w : writers) w.join();
    std::multiset<std::string> want;
    for (int t = 0; t < kThreads; ++t) {
      EXPECT_THAT(failed[t], ::testing::IsEmpty()) << "writer " << t;
      want.insert(acked[t].begin(), acked[t].end());
    }
    RecordKeeper fresh(*db_, clock_, scheduling_);  // nothing cached: reads the database
    v1::GetSessionRecordRequest get;
    get.set_name(rec.name());
    auto stored = fresh.GetSessionRecord(therapist_, get);
    ASSERT_TRUE(stored.ok()) << stored.status();
    std::multiset<std::string> have;
    for (const auto& e : stored->timeline()) have.insert(e.text());
    EXPECT_EQ(have, want);
    EXPECT_EQ(stored->version(), 1 + static_cast<int64_t>(want.size()));
    EXPECT_GE(want.size(), kThreads * kWrites / 2u) << "most writes should get through their retries";
  });
}

// Versions written by list-only changes are stored as deltas over the version before (with a
// whole version at least every store::kWholeEvery versions); every version still reads back
// exactly as it was answered, through a replica that has cached nothing, one by one and as
// the latest in a listing.
TEST_F(RecordKeeperTest, EveryVersionReadsBackAsWrittenWhetherStoredWholeOrAsADelta) {
  testing::TempDir dir;
  for (const std::string backend : {"sqlite", "postgres"}) {  // the rebuilding SQL on both
    SCOPED_TRACE(backend);
    ASSERT_NO_FATAL_FAILURE(UseDatabase(backend, dir));
    auto rec = Create("med1", therapist_);
    ASSERT_TRUE(rec.ok()) << rec.status();
    std::vector<std::string> answered = {rec->SerializeAsString()};  // [v - 1]: version v as answered
    // A write's response bytes (built from the version before's: store::BytesOf) are its record.
    auto answer = [](absl::StatusOr<WrittenRecord> w) -> absl::StatusOr<v1::SessionRecord> {
      if (!w.ok()) return w.status();
      v1::SessionRecord sent;
      EXPECT_TRUE(sent.ParseFromString(w->bytes()));
      EXPECT_EQ(sent.SerializeAsString(), w->record().SerializeAsString()) << "version " << w->record().version();
      return w->record();
    };
    for (int i = 0; i < 45; ++i) {
      absl::StatusOr<v1::SessionRecord> written;
      if (i % 9 == 4) {  // a change that is not list-only: stored whole
        written = [&]() -> absl::StatusOr<v1::SessionRecord> {
          RETURN_IF_ERROR(Check(rec->name(), {Bp(120 + i, 80)}, therapist_).status());
          v1::GetSessionRecordRequest get;
          get.set_name(rec->name());
          return keeper_->GetSessionRecord(therapist_, get);
        }();
      } else if (i % 9 == 7) {
        v1::UpdateNoteRequest note;
        note.set_name(rec->name());
        note.mutable_note()->set_kind(v1::Note::KIND_SESSION);
        note.mutable_note()->set_text(i % 2 ? absl::StrCat("note ", i) : "");  // also back to empty
        note.set_request_id(Rid());
        written = answer(keeper_->UpdateNote(therapist_, note));
      } else if (i % 3 == 0) {
        v1::RecordVitalsRequest vitals;
        vitals.set_name(rec->name());
        vitals.mutable_vitals()->set_heart_rate_bpm(60 + i);
        vitals.set_request_id(Rid());
        written = answer(keeper_->RecordVitals(therapist_, vitals));
      } else {
        v1::AddTimelineEntryRequest tl;
        tl.set_name(rec->name());
        tl.mutable_entry()->set_kind(v1::TimelineEntry::KIND_OBSERVATION);
        tl.mutable_entry()->set_text(absl::StrCat("entry ", i));
        tl.set_request_id(Rid());
        written = answer(keeper_->AddTimelineEntry(therapist_, tl));
      }
      ASSERT_TRUE(written.ok()) << i << ": " << written.status();
      ASSERT_EQ(written->version(), static_cast<int64_t>(answered.size()) + 1);
      answered.push_back(written->SerializeAsString());
      clock_.Advance(absl::Seconds(1));
    }

    // What was stored: whole at versions 1, 17, 33 and for the checklist updates; deltas
    // otherwise, far smaller than the record once it has grown.
    absl::StatusOr<db::Rows> stored;
    ASSERT_TRUE(db_->InTransaction([&](db::Tx& tx) {
      stored = tx.Query("SELECT version, data FROM record_versions ORDER BY version", {});
      return stored.status();
    }).ok());
    ASSERT_EQ(stored->size(), answered.size());
    size_t deltas = 0;
    for (const auto& row : *stored) {
      const int64_t v = row.Int(0);
      const int i = static_cast<int>(v) - 2;  // the loop step that wrote version v
      const bool whole = v % store::kWholeEvery == 1 || i % 9 == 4;
      const std::string data = row.Bytes(1);
      ASSERT_FALSE(data.empty());
      EXPECT_EQ(data[0] != '\0', whole) << "version " << v;
      if (whole) {  // the version's bytes, not necessarily in field order (store::WholeAfterDelta)
        v1::SessionRecord parsed;
        EXPECT_TRUE(parsed.ParseFromString(data)) << "version " << v;
        EXPECT_EQ(parsed.SerializeAsString(), answered[v - 1]) << "version " << v;
      }
      if (!whole) {
        ++deltas;
        // The delta holds one entry and the fields that are not lists; the record, all of them.
        if (v > 30) {
          EXPECT_LT(data.size() * 3, answered[v - 1].size()) << "version " << v;
        }
      }
    }
    EXPECT_GE(deltas, 30u);

    RecordKeeper fresh(*db_, clock_, scheduling_);
    for (size_t v = 1; v <= answered.size(); ++v) {
      v1::GetSessionRecordRequest get;
      get.set_name(rec->name());
      get.set_version(static_cast<int64_t>(v));
      auto read = fresh.GetSessionRecord(therapist_, get);
      ASSERT_TRUE(read.ok()) << "version " << v << ": " << read.status();
      EXPECT_EQ(read->SerializeAsString(), answered[v - 1]) << "version " << v;
    }
    v1::ListSessionRecordsRequest list;
    list.set_parent("clinics/c01");
    list.set_client("people/cl1");
    auto listed = RecordKeeper(*db_, clock_, scheduling_).ListSessionRecords(therapist_, list);
    ASSERT_TRUE(listed.ok()) << listed.status();
    ASSERT_EQ(listed->session_records_size(), 1);
    EXPECT_EQ(listed->session_records(0).SerializeAsString(), answered.back());
  }
}

// store::BytesOf and ApplyDelta: a delta replaces every field that is not a list (also
// with a default value) and appends to the lists; anything else is stored whole.
TEST(RecordDeltaTest, DeltasReplaceFieldsAppendToListsAndOtherwiseStoreWhole) {
  v1::SessionRecord before;
  before.set_name("clinics/c01/sessionRecords/r1");
  before.set_version(2);
  before.set_sitter("people/s1");
  before.mutable_note()->set_text("draft");
  before.add_timeline()->set_text("one");
  before.add_vitals()->set_heart_rate_bpm(70);
  const store::ListSizes sizes = store::ListSizesOf(before);

  v1::SessionRecord next = before;
  next.set_version(3);
  next.clear_sitter();
  next.clear_note();
  next.add_timeline()->set_text("two");
  next.add_adverse_events()->set_description("nausea");
  const std::string next_bytes = next.SerializeAsString();
  std::string delta = store::BytesOf(next, /*only_appended=*/true, sizes, nullptr).stored;
  EXPECT_EQ(next.SerializeAsString(), next_bytes);  // restored after the lists were swapped out
  ASSERT_FALSE(delta.empty());
  EXPECT_EQ(delta[0], '\0');
  v1::SessionRecord probe;
  EXPECT_FALSE(probe.ParseFromString(delta));  // an older replica refuses it rather than misread it
  auto applied = store::ApplyDelta(before, delta);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->SerializeAsString(), next_bytes);

  // Not declared list-only, a list that shrank, or a version due to be whole: stored whole.
  EXPECT_EQ(store::BytesOf(next, /*only_appended=*/false, sizes, nullptr).stored, next_bytes);
  v1::SessionRecord shrunk = next;
  shrunk.clear_vitals();
  EXPECT_EQ(store::BytesOf(shrunk, true, sizes, nullptr).stored, shrunk.SerializeAsString());
  v1::SessionRecord due = next;
  due.set_version(store::kWholeEvery + 1);
  EXPECT_EQ(store::BytesOf(due, true, sizes, nullptr).stored, due.SerializeAsString());
  EXPECT_EQ(store::ApplyDelta(before, next_bytes).status().code(), absl::StatusCode::kDataLoss);
}

// store::WholeAfterDelta: a version's whole built from the version before's bytes and its
// delta is that version, for a change to every list and to fields set back to their default,
// and building on such bytes again neither loses nor repeats anything (nor grows them).
TEST(RecordDeltaTest, WholeAfterDeltaIsTheVersionForEveryList) {
  v1::SessionRecord base;
  base.set_name("clinics/c01/sessionRecords/r1");
  base.set_version(2);
  base.set_sitter("people/s1");
  base.mutable_note()->set_text("draft");
  *base.mutable_update_time() = ToProto(absl::FromUnixNanos(1'700'000'000'123'456'789));
  base.add_dose_administrations()->set_dose_mg(25);
  base.add_vitals()->set_heart_rate_bpm(70);
  base.add_timeline()->set_text("one");
  base.add_adverse_events()->set_description("dizzy");
  std::string base_bytes = base.SerializeAsString();

  v1::SessionRecord next = base;
  for (int v = 3; v < 3 + 2 * store::kWholeEvery; ++v) {
    SCOPED_TRACE(v);
    const store::ListSizes sizes = store::ListSizesOf(next);
    next.set_version(v);
    next.clear_sitter();  // a field back to its default: absent from the delta, so from the whole
    if (v % 2) {
      next.clear_note();
    } else {
      next.mutable_note()->set_text(absl::StrCat("note ", v));
    }
    *next.mutable_update_time() = ToProto(absl::FromUnixSeconds(1'700'000'000 + v));  // nanos back to 0
    switch (v % 4) {
      case 0:
        next.add_dose_administrations()->set_dose_mg(v);
        break;
      case 1:
        next.add_vitals()->set_heart_rate_bpm(60 + v);
        break;
      case 2:
        next.add_timeline()->set_text(absl::StrCat("entry ", v));
        break;
      default:
        next.add_adverse_events()->set_description(absl::StrCat("event ", v));
        break;
    }
    if (v % 5 == 0) next.add_timeline()->set_text("and another");  // two lists at once
    std::optional<std::string> delta = store::DeltaOf(next, /*only_appended=*/true, sizes);
    ASSERT_TRUE(delta.has_value());
    std::optional<std::string> whole = store::WholeAfterDelta(base_bytes, sizes, *delta);
    ASSERT_TRUE(whole.has_value());
    v1::SessionRecord parsed;
    ASSERT_TRUE(parsed.ParseFromString(*whole));
    EXPECT_EQ(parsed.SerializeAsString(), next.SerializeAsString());
    EXPECT_EQ(whole->size(), next.ByteSizeLong());
    // BytesOf gives the same whole, and stores the delta unless the version is due to be whole.
    store::VersionBytes bytes = store::BytesOf(next, true, sizes, &base_bytes);
    EXPECT_EQ(bytes.whole, *whole);
    EXPECT_EQ(bytes.stored, v % store::kWholeEvery == 1 ? *whole : *delta);
    base_bytes = *std::move(whole);
  }

  // Not a delta, or a base that is not a serialized message: no whole (BytesOf serializes).
  const store::ListSizes sizes = store::ListSizesOf(next);
  next.set_version(next.version() + 1);
  next.add_timeline()->set_text("last");
  std::optional<std::string> delta = store::DeltaOf(next, true, sizes);
  ASSERT_TRUE(delta.has_value());
  EXPECT_TRUE(store::WholeAfterDelta(base_bytes, sizes, *delta).has_value());
  EXPECT_FALSE(store::WholeAfterDelta(base_bytes, sizes, next.SerializeAsString()).has_value());
  EXPECT_FALSE(store::WholeAfterDelta("\xff\xff\xff", sizes, *delta).has_value());
  EXPECT_FALSE(store::WholeAfterDelta(base_bytes.substr(0, base_bytes.size() - 1), sizes, *delta).has_value());
  // Bytes of another version than the one the delta was taken over (a list longer or shorter).
  store::ListSizes other = sizes;
  ++other.vitals;
  EXPECT_FALSE(store::WholeAfterDelta(base_bytes, other, *delta).has_value());
  other = sizes;
  --other.timeline;
  EXPECT_FALSE(store::WholeAfterDelta(base_bytes, other, *delta).has_value());
  std::string garbage = "\xff\xff\xff";
  EXPECT_EQ(store::BytesOf(next, true, sizes, &garbage).whole, next.SerializeAsString());
  // A change that is not list-only has no delta.
  EXPECT_FALSE(store::DeltaOf(next, /*only_appended=*/false, sizes).has_value());
}

// The replica's cache of latest versions is bounded by entries and by serialized bytes: it
// starts over when either would be exceeded, never keeps a record larger than its whole budget,
// never goes back to an older version, and counts what Take hands out as gone.
TEST(LatestRecordsTest, StaysWithinItsEntriesAndBytesAndNeverGoesBack) {
  auto record = [](const std::string& id, int64_t version) {
    auto r = std::make_shared<v1::SessionRecord>();
    r->set_name("clinics/c01/sessionRecords/" + id);
    r->set_version(version);
    return r;
  };
  auto bytes = [](size_t n) { return std::make_shared<const std::string>(n, 'x'); };
  store::LatestRecords cache(/*max_entries=*/3, /*max_bytes=*/1000);
  cache.Put("c01", "a", record("a", 1), bytes(600));
  cache.Put("c01", "b", record("b", 1), bytes(300));
  EXPECT_EQ(cache.entries(), 2u);
  EXPECT_EQ(cache.bytes(), 900u);
  cache.Put("c01", "c", record("c", 1), bytes(200));  // 1,100 bytes would be over: starts over
  EXPECT_EQ(cache.entries(), 1u);
  EXPECT_EQ(cache.bytes(), 200u);
  EXPECT_EQ(cache.Find("c01", "a", 1), nullptr);
  EXPECT_NE(cache.Find("c01", "c", 1), nullptr);
  cache.Put("c01", "d", record("d", 1), bytes(1001));  // larger than the whole budget: not kept
  EXPECT_EQ(cache.Find("c01", "d", 1), nullptr);
  EXPECT_EQ(cache.bytes(), 200u);

  cache.Put("c01", "c", record("c", 2), bytes(250));  // a newer version replaces
  EXPECT_EQ(cache.bytes(), 250u);
  cache.Put("c01", "c", record("c", 1), bytes(10));  // an older one never does
  EXPECT_NE(cache.Find("c01", "c", 2), nullptr);
  EXPECT_EQ(cache.bytes(), 250u);
  store::LatestRecords::Entry taken = cache.Take("c01", "c");
  ASSERT_NE(taken.record, nullptr);
  EXPECT_EQ(taken.record->version(), 2);
  EXPECT_EQ(taken.bytes->size(), 250u);
  EXPECT_EQ(cache.entries(), 0u);
  EXPECT_EQ(cache.bytes(), 0u);

  // Without bytes the record's serialized size counts; the same version with bytes adds them.
  auto e = record("e", 3);
  const size_t e_size = e->ByteSizeLong();
  cache.Put("c01", "e", e);
  EXPECT_EQ(cache.bytes(), e_size);
  cache.Put("c01", "e", record("e", 3), bytes(40));
  EXPECT_EQ(cache.bytes(), 40u);
  EXPECT_NE(cache.Take("c01", "e").bytes, nullptr);

  // The entry bound: the fourth record starts it over.
  for (const char* id : {"f", "g", "h"}) cache.Put("c01", id, record(id, 1), bytes(1));
  EXPECT_EQ(cache.entries(), 3u);
  cache.Put("c01", "i", record("i", 1), bytes(1));
  EXPECT_EQ(cache.entries(), 1u);
  EXPECT_EQ(cache.bytes(), 1u);
}

// The delta code names SessionRecord's lists one by one (store::DeltaOf / ApplyDelta): a
// list added to the record must be added there too, or its entries would be lost from deltas.
TEST(RecordDeltaTest, DeltasCoverEveryListOfTheRecord) {
  std::set<std::string> lists;
  const auto* d = v1::SessionRecord::descriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    if (d->field(i)->is_repeated()) lists.insert(d->field(i)->name());
  }
  EXPECT_THAT(lists, ::testing::UnorderedElementsAre("dose_administrations", "vitals", "timeline", "adverse_events"));
}

TEST_F(RecordKeeperTest, RoleByOperationTable) {
  auto rec = Create("home1", therapist_);
  ASSERT_TRUE(rec.ok());
  Item sitter = Confirm(Item::KIND_SITTER_PRESENT);
  sitter.set_sitter("people/sitter1");
  ASSERT_TRUE(Check(rec->name(), {sitter}, therapist_).ok());
  Principal other_client{"people/cl2", Role::kClient, {"c01"}};
  Principal other_sitter{"people/sitter2", Role::kSitter, {"c01"}};
  struct Who {
    const char* label;
    Principal p;
  };
  const std::vector<Who> who = {{"therapist", therapist_}, {"clinician", clinician_},   {"outsider", outsider_},
                                {"client", client_},       {"other-client", other_client}, {"sitter", sitter_},
                                {"other-sitter", other_sitter}, {"admin", admin_},     {"partner", partner_},
                                {"other-clinic", other_clinic_}};
  const bool Y = true, N = false;
  struct Op {
    const char* label;
    std::function<absl::Status(const Principal&)> call;
    std::vector<bool> allowed;  // in the order of `who`
  };
  const std::vector<Op> ops = {
      {"GetSessionRecord",
       [&](const Principal& p) {
         v1::GetSessionRecordRequest r;
         r.set_name(rec->name());
         return keeper_->GetSessionRecord(p, r).status();
       },
       {Y, Y, N, N, N, N, N, N, N, N}},
      {"AddTimelineEntry",
       [&](const Principal& p) {
         v1::AddTimelineEntryRequest r;
         r.set_name(rec->name());
         r.mutable_entry()->set_kind(v1::TimelineEntry::KIND_OBSERVATION);
         r.mutable_entry()->set_text("t");
         r.set_request_id(Rid());
         return keeper_->AddTimelineEntry(p, r).status();
       },
       {Y, Y, N, N, N, N, N, N, N, N}},
      {"UpdateChecklist(blood pressure)",
       [&](const Principal& p) { return Check(rec->name(), {Bp(120, 80)}, p).status(); },
       {Y, Y, N, N, N, Y, N, N, N, N}},
      {"UpdateChecklist(transportation)",
       [&](const Principal& p) { return Check(rec->name(), {Confirm(Item::KIND_TRANSPORTATION_ARRANGED)}, p).status(); },
       {Y, Y, N, Y, N, N, N, N, N, N}},
      {"ListAuditEntries",
       [&](const Principal& p) {
         v1::ListAuditEntriesRequest r;
         r.set_parent("clinics/c01");
         return keeper_->ListAuditEntries(p, r).status();
       },
       {N, N, N, N, N, N, N, Y, N, N}},
      {"ExportFhirBundle",
       [&](const Principal& p) {
         v1::ExportFhirBundleRequest r;
         r.set_parent("clinics/c01");
         r.set_client("people/cl1");
         return keeper_->ExportFhirBundle(p, r).status();
       },
       {Y, Y, N, Y, N, N, N, N, Y, N}},
      {"ListJournalEntries(cl1)",
       [&](const Principal& p) {
         v1::ListJournalEntriesRequest r;
         r.set_parent("clinics/c01");
         r.set_client("people/cl1");
         return keeper_->ListJournalEntries(p, r).status();
       },
       {Y, Y, N, Y, N, N, N, N, N, N}},
  };
  for (const auto& op : ops) {
    for (size_t i = 0; i < who.size(); ++i) {
      absl::Status s = op.call(who[i].p);
      if (op.allowed[i]) {
        EXPECT_TRUE(s.ok()) << op.label << " as " << who[i].label << ": " << s;
      } else {
        EXPECT_EQ(s.code(), kDenied) << op.label << " as " << who[i].label << ": " << s;
      }
    }
  }
}

// The care-team cache in front of scheduling (scheduling/client): reused for the TTL by the
// injected clock, asked again after it, errors never remembered, bounded in size.
TEST(CareTeamCacheTest, ReusesATeamForItsTtlAndNeverRemembersAnError) {
  FakeClock clock;
  auto owned = std::make_unique<FakeScheduling>();
  FakeScheduling* inner = owned.get();
  auto cached = WithCareTeamCache(std::move(owned), clock, absl::Seconds(5), /*max_entries=*/2);

  auto team = cached->GetCareTeam("c01", "cl1");
  ASSERT_TRUE(team.ok()) << team.status();
  EXPECT_EQ(team->members_size(), 2);
  ASSERT_TRUE(cached->GetCareTeam("c01", "cl1").ok());
  EXPECT_EQ(inner->care_team_calls, 1);  // the second read came from the cache
  clock.Advance(absl::Seconds(5));
  ASSERT_TRUE(cached->GetCareTeam("c01", "cl1").ok());
  EXPECT_EQ(inner->care_team_calls, 2);  // expired: asked again

  inner->care_team_error = absl::UnavailableError("scheduling down");
  EXPECT_EQ(cached->GetCareTeam("c01", "cl2").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(cached->GetCareTeam("c01", "cl2").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(inner->care_team_calls, 4);  // both errors went to scheduling
  inner->care_team_error = absl::OkStatus();
  ASSERT_TRUE(cached->GetCareTeam("c01", "cl2").ok());  // second entry: the cache is now full
  ASSERT_TRUE(cached->GetCareTeam("c01", "cl3").ok());  // over the bound: starts over
  ASSERT_TRUE(cached->GetCareTeam("c01", "cl1").ok());
  EXPECT_EQ(inner->care_team_calls, 7);  // cl1 was dropped with the rest

  auto uncached = WithCareTeamCache(std::make_unique<FakeScheduling>(), clock, absl::ZeroDuration());
  auto* raw = dynamic_cast<FakeScheduling*>(uncached.get());
  ASSERT_NE(raw, nullptr);  // a zero TTL is no cache at all
}

}  // namespace
}  // namespace continuum::records
