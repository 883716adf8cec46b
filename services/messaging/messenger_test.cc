// The messaging domain with a FakeClock, SQLite :memory:, a real redis-server (presence lives
// there) and a scheduling stand-in: messages, urgency during sessions, escalation steps,
// presence going offline, notifications from events (once per event), reminders and missed
// sitter check-ins.
#include "services/messaging/messenger.h"

#include <set>
#include <thread>

#include "common/api/idempotency.h"
#include "common/db/migrations.h"
#include "common/outbox/outbox.h"
#include "common/status/errors.h"
#include "common/status/macros.h"
#include "common/testing/harness.h"
#include "common/time/proto_time.h"
#include "common/testing/matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/messaging/messaging_service.h"

namespace continuum::messaging {
namespace {

using auth::Principal;
using auth::Role;
namespace sv1 = ::continuum::scheduling::v1;
namespace ev1 = ::continuum::events::v1;

using ::continuum::testing::IsError;

class FakeScheduling : public scheduling::SchedulingClient {
 public:
  absl::StatusOr<sv1::Appointment> GetAppointment(const std::string&) override { return absl::NotFoundError("n/a"); }
  absl::StatusOr<sv1::CareTeam> GetCareTeam(const std::string&, const std::string& client) override {
    sv1::CareTeam t;
    t.set_client("people/" + client);
    for (auto [id, role] : std::vector<std::pair<std::string, cv1::Role>>{{"th1", cv1::ROLE_THERAPIST},
                                                                          {"cn1", cv1::ROLE_CLINICIAN}}) {
      auto* m = t.add_members();
      m->set_person("people/" + id);
      m->set_role(role);
      m->set_display_name(id);
    }
    return t;
  }
  absl::StatusOr<sv1::Program> GetProgram(const std::string&) override { return sv1::Program(); }
  absl::StatusOr<sv1::Clinic> GetClinic(const std::string&) override { return clinic; }
  absl::StatusOr<sv1::Person> GetPerson(const std::string& id) override {
    sv1::Person p;
    p.set_display_name("Name of " + id);
    return p;
  }
  absl::StatusOr<std::vector<std::string>> MembersWithRole(const std::string&, cv1::Role role) override {
    if (role == cv1::ROLE_CLINICIAN) return std::vector<std::string>{"cn1", "oncall1"};
    if (role == cv1::ROLE_ADMIN) return std::vector<std::string>{"ad1"};
    return std::vector<std::string>{};
  }
  absl::Status SetAppointmentState(const std::string&, sv1::Appointment::State, const std::string&) override {
    return absl::OkStatus();
  }
  sv1::Clinic clinic;
};

class MessengerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = testing::RedisServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    redis_server_ = std::move(*server);
    redis::Options o;
    o.port = redis_server_->port();
    redis_ = std::make_unique<redis::Client>(o);
    auto db = db::Open({.url = "sqlite::memory:"});
    ASSERT_TRUE(db.ok());
    db_ = std::move(*db);
    ASSERT_TRUE(Migrate(*db_).ok());
    auto* policy = scheduling_.clinic.mutable_policy();
    *policy->mutable_escalation_ack_timeout() = ToProto(absl::Minutes(5));
    *policy->mutable_sitter_checkin_interval() = ToProto(absl::Minutes(20));
    *policy->add_reminder_offsets() = ToProto(absl::Hours(24));
    *policy->add_reminder_offsets() = ToProto(absl::Hours(1));
    auto* shift = scheduling_.clinic.add_on_call_roster();
    shift->set_person("people/oncall1");
    *shift->mutable_interval()->mutable_start_time() = ToProto(clock_.Now() - absl::Hours(1));
    *shift->mutable_interval()->mutable_end_time() = ToProto(clock_.Now() + absl::Hours(12));
    presence_ = std::make_unique<PresenceStore>(*redis_, clock_);
    messenger_ = std::make_unique<Messenger>(*db_, clock_, scheduling_, *presence_, *redis_);
  }

  // The schema messaging's process applies at start.
  static absl::Status Migrate(db::Database& db) {
    RETURN_IF_ERROR(db::ApplyMigrations(db, "outbox", outbox::Migrations()));
    RETURN_IF_ERROR(db::ApplyMigrations(db, "idempotency", api::IdempotencyMigrations()));
    return db::ApplyMigrations(db, "messaging", Migrations());
  }

  absl::StatusOr<v1::Message> Send(const Principal& p, const std::string& conv, const std::string& id,
                                   const std::string& text, bool urgent = false) {
    v1::SendMessageRequest r;
    r.set_parent("clinics/c01/conversations/" + conv);
    r.set_message_id(id);
    r.mutable_message()->set_text(text);
    r.mutable_message()->set_urgent(urgent);
    return messenger_->SendMessage(p, r);
  }

  absl::Status Event(ev1::EventEnvelope e, const std::string& id) {
    e.set_event_id(id);
    e.set_clinic("clinics/c01");
    *e.mutable_occur_time() = ToProto(clock_.Now());
    return messenger_->HandleEvent(e);
  }

  ev1::EventEnvelope SessionStarted(cv1::AppointmentKind kind, const std::string& sitter = "") {
    ev1::EventEnvelope e;
    auto* s = e.mutable_session_started();
    s->set_session_record("clinics/c01/sessionRecords/a1");
    s->set_appointment("clinics/c01/appointments/a1");
    s->set_client("people/cl1");
    s->set_kind(kind);
    s->set_sitter(sitter);
    *s->mutable_start_time() = ToProto(clock_.Now());
    return e;
  }

  std::vector<v1::Notification> NotificationsOf(const std::string& person) {
    v1::ListNotificationsRequest r;
    r.set_parent("people/" + person);
    r.set_page_size(500);
    auto out = messenger_->ListNotifications(Principal{"people/" + person, Role::kTherapist, {"c01"}}, r);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? std::vector<v1::Notification>(out->notifications().begin(), out->notifications().end())
                    : std::vector<v1::Notification>{};
  }

  int Count(const std::vector<v1::Notification>& list, v1::Notification::Type type) {
    return static_cast<int>(std::count_if(list.begin(), list.end(), [&](const auto& n) { return n.type() == type; }));
  }

  void Online(const std::string& person) {
    v1::HeartbeatRequest h;
    h.set_device_id("phone");
    h.set_status(cv1::PRESENCE_STATUS_ONLINE);
    *h.mutable_ttl() = ToProto(absl::Seconds(30));
    ASSERT_TRUE(messenger_->Heartbeat(Principal{"people/" + person, Role::kTherapist, {"c01"}}, h).ok());
  }

  FakeClock clock_;
  FakeScheduling scheduling_;
  std::unique_ptr<testing::RedisServer> redis_server_;
  std::unique_ptr<redis::Client> redis_;
  std::unique_ptr<db::Database> db_;
  std::unique_ptr<PresenceStore> presence_;
  std::unique_ptr<Messenger> messenger_;
  Principal client_{"people/cl1", Role::kClient, {"c01"}};
  Principal therapist_{"people/th1", Role::kTherapist, {"c01"}};
  Principal clinician_{"people/cn1", Role::kClinician, {"c01"}};
  Principal outsider_{"people/th9", Role::kTherapist, {"c01"}};
  Principal other_clinic_{"people/cl1", Role::kClient, {"c02"}};
  Principal sitter_{"people/sit1", Role::kSitter, {"c01"}};
};

const auto kDenied = absl::StatusCode::kPermissionDenied;

// Membership follows the care team: a member who leaves stops seeing the conversations and a
// new one starts, while sends and read receipts in between leave membership alone.
TEST_F(MessengerTest, ConversationMembershipFollowsCareTeamChanges) {
  ASSERT_TRUE(Send(client_, "client-cl1", "m-1", "hello").ok());
  auto listed = [&](const Principal& who) {
    v1::ListConversationsRequest r;
    r.set_parent("clinics/c01");
    auto out = messenger_->ListConversations(who, r);
    EXPECT_TRUE(out.ok()) << out.status();
    std::vector<std::string> names;
    if (out.ok()) {
      for (const auto& c : out->conversations()) names.push_back(c.name());
    }
    return names;
  };
  const std::vector<std::string> both = {"clinics/c01/conversations/client-cl1", "clinics/c01/conversations/team-cl1"};
  EXPECT_EQ(listed(therapist_), both);
  EXPECT_TRUE(listed(outsider_).empty());
  ev1::EventEnvelope e;
  auto* team = e.mutable_care_team_changed()->mutable_care_team();
  team->set_client("people/cl1");
  for (auto [id, role] : std::vector<std::pair<std::string, cv1::Role>>{{"th9", cv1::ROLE_THERAPIST},
                                                                        {"cn1", cv1::ROLE_CLINICIAN}}) {
    auto* m = team->add_members();
    m->set_person("people/" + id);
    m->set_role(role);
  }
  ASSERT_TRUE(Event(e, "team-change-1").ok());
  EXPECT_TRUE(listed(therapist_).empty()) << "th1 left the care team";
  EXPECT_EQ(listed(outsider_), both) << "th9 joined it";
  EXPECT_THAT(Send(therapist_, "client-cl1", "m-2", "?"), IsError(kDenied, "NOT_CONVERSATION_MEMBER"));
  ASSERT_TRUE(Send(outsider_, "client-cl1", "m-3", "hi, I am taking over").ok());
  EXPECT_EQ(listed(outsider_), both) << "a send leaves membership as it is";
  EXPECT_EQ(listed(client_), std::vector<std::string>{"clinics/c01/conversations/client-cl1"});
}

// Concurrent sends to one conversation on PostgreSQL, where transactions really overlap: each
// waits for the conversation's row lock, so none is turned away and sequences have no gaps.
TEST_F(MessengerTest, ConcurrentSendsToOneConversationAllGetThroughOnPostgres) {
  auto pg = testing::PostgresServer::Shared();
  ASSERT_TRUE(pg.ok()) << pg.status();
  auto url = (*pg)->CreateDatabase();
  ASSERT_TRUE(url.ok()) << url.status();
  auto db = db::Open({.url = *url, .pool_size = 8});
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_TRUE(Migrate(**db).ok());
  Messenger messenger(**db, clock_, scheduling_, *presence_, *redis_);
  constexpr int kThreads = 8, kEach = 15;
  std::vector<std::thread> threads;
  std::vector<absl::StatusOr<v1::Message>> sent(kThreads * kEach, absl::UnknownError("not sent"));
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        v1::SendMessageRequest r;
        r.set_parent("clinics/c01/conversations/client-cl1");
        r.set_message_id(absl::StrCat("m-", t, "-", i));
        r.mutable_message()->set_text("hello");
        sent[t * kEach + i] = messenger.SendMessage(t % 2 ? therapist_ : client_, r);
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<int64_t> sequences;
  for (const auto& m : sent) {
    ASSERT_TRUE(m.ok()) << m.status();
    sequences.insert(m->sequence());
  }
  EXPECT_EQ(sequences.size(), static_cast<size_t>(kThreads * kEach));
  EXPECT_EQ(*sequences.begin(), 1);
  EXPECT_EQ(*sequences.rbegin(), kThreads * kEach);
}


TEST_F(MessengerTest, MessagesAreOrderedIdempotentAndOnlyForMembers) {
  auto m1 = Send(client_, "client-cl1", "m-1", "hello");
  ASSERT_TRUE(m1.ok()) << m1.status();
  EXPECT_EQ(m1->sequence(), 1);
  EXPECT_FALSE(m1->urgent());
  auto again = Send(client_, "client-cl1", "m-1", "hello");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->sequence(), 1) << "a resend with the same message_id is the same message";
  EXPECT_THAT(Send(client_, "client-cl1", "m-1", "different"),
              IsError(absl::StatusCode::kAlreadyExists, "MESSAGE_ID_REUSED"));
  ASSERT_TRUE(Send(therapist_, "client-cl1", "m-2", "hi, how are you?").ok());
  EXPECT_THAT(Send(outsider_, "client-cl1", "m-3", "?"), IsError(kDenied, "NOT_CONVERSATION_MEMBER"));
  EXPECT_THAT(Send(client_, "team-cl1", "m-4", "?"), IsError(kDenied, "NOT_CONVERSATION_MEMBER"))
      << "the client is not in the care team's internal conversation";
  EXPECT_THAT(Send(other_clinic_, "client-cl1", "m-5", "?"), IsError(kDenied, "PERMISSION_DENIED_CROSS_CLINIC"));
  ASSERT_TRUE(Send(clinician_, "team-cl1", "t-1", "dose plan ok?").ok());

  v1::ListMessagesRequest l;
  l.set_parent("clinics/c01/conversations/client-cl1");
  auto listed = messenger_->ListMessages(therapist_, l);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->messages_size(), 2);
  EXPECT_EQ(listed->messages(0).text(), "hello");
  EXPECT_EQ(listed->messages(1).sequence(), 2);

  v1::GetUnreadCountsRequest u;
  u.set_clinic("clinics/c01");
  auto unread = messenger_->GetUnreadCounts(client_, u);
  ASSERT_TRUE(unread.ok());
  EXPECT_EQ(unread->total_unread(), 1) << "the therapist's reply";
  ASSERT_EQ(unread->conversations_size(), 1);
  EXPECT_EQ(unread->conversations(0).conversation(), "clinics/c01/conversations/client-cl1");
  auto everywhere = messenger_->GetUnreadCounts(client_, v1::GetUnreadCountsRequest());
  ASSERT_TRUE(everywhere.ok()) << "no clinic: all of the caller's clinics; " << everywhere.status();
  EXPECT_EQ(everywhere->total_unread(), 1);
  EXPECT_EQ(messenger_->GetUnreadCounts(other_clinic_, v1::GetUnreadCountsRequest())->total_unread(), 0)
      << "a token for another clinic counts nothing of this one";
  v1::MarkReadRequest read;
  read.set_name("clinics/c01/conversations/client-cl1");
  read.set_sequence(2);
  read.set_request_id("read-1");
  auto receipt = messenger_->MarkRead(client_, read);
  ASSERT_TRUE(receipt.ok()) << receipt.status();
  EXPECT_EQ(receipt->read_sequence(), 2);
  EXPECT_EQ(messenger_->GetUnreadCounts(client_, u)->total_unread(), 0);
  v1::GetConversationRequest g;
  g.set_name("clinics/c01/conversations/client-cl1");
  auto conv = messenger_->GetConversation(therapist_, g);
  ASSERT_TRUE(conv.ok());
  EXPECT_EQ(conv->members_size(), 3);
  EXPECT_EQ(conv->last_message_sequence(), 2);
  // Deliveries went to the members' inboxes through the outbox.
  auto inboxes = db_->Query("SELECT COUNT(*) FROM outbox WHERE stream = 'continuum:inbox:cl1'");
  EXPECT_EQ(inboxes->at(0).Int(0), 3) << "two messages and a read receipt";
}

TEST_F(MessengerTest, UrgentMessageEscalatesToOnCallWhenNoCareTeamMemberIsPresentThenToEveryone) {
  auto m = Send(client_, "client-cl1", "u-1", "I feel very unwell", /*urgent=*/true);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_FALSE(m->escalation().empty());
  v1::ListEscalationsRequest l;
  l.set_parent("clinics/c01");
  auto list = messenger_->ListEscalations(therapist_, l);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->escalations_size(), 1);
  v1::Escalation e = list->escalations(0);
  ASSERT_EQ(e.steps_size(), 2) << "nobody present: step 1 is recorded empty and step 2 follows at once";
  EXPECT_EQ(e.steps(0).target(), v1::EscalationStep::TARGET_PRESENT_CARE_TEAM);
  EXPECT_TRUE(e.steps(0).targets().empty());
  EXPECT_THAT(e.steps(0).reason(), ::testing::HasSubstr("no care-team member present"));
  EXPECT_EQ(e.steps(1).target(), v1::EscalationStep::TARGET_ON_CALL);
  EXPECT_THAT(e.steps(1).targets(), ::testing::ElementsAre("people/oncall1"));
  EXPECT_EQ(Count(NotificationsOf("oncall1"), v1::Notification::TYPE_ESCALATION), 1);
  // Not acknowledged within the clinic's 5 minutes: the final step reaches everyone.
  clock_.Advance(absl::Minutes(5) + absl::Seconds(1));
  ASSERT_TRUE(messenger_->Tick().ok());
  e = messenger_->ListEscalations(therapist_, l)->escalations(0);
  ASSERT_EQ(e.steps_size(), 3);
  EXPECT_EQ(e.steps(2).target(), v1::EscalationStep::TARGET_ALL_CLINICAL_STAFF);
  EXPECT_THAT(e.steps(2).targets(), ::testing::UnorderedElementsAre("people/th1", "people/cn1", "people/oncall1",
                                                                    "people/ad1"));
  clock_.Advance(absl::Minutes(10));
  ASSERT_TRUE(messenger_->Tick().ok());
  EXPECT_EQ(messenger_->ListEscalations(therapist_, l)->escalations(0).steps_size(), 3) << "the final step is not repeated";
  v1::AcknowledgeEscalationRequest ack;
  ack.set_name(e.name());
  ack.set_note("called the client");
  ack.set_request_id("ack");
  auto acked = messenger_->AcknowledgeEscalation(clinician_, ack);
  ASSERT_TRUE(acked.ok()) << acked.status();
  EXPECT_EQ(acked->state(), v1::Escalation::STATE_ACKNOWLEDGED);
  EXPECT_EQ(acked->acknowledged_by(), "people/cn1");
}

// An escalation tells of a client's clinical situation: a therapist outside the client's care
// team who was not notified neither lists nor acknowledges it; the on-call clinician it
// notified does, and so does an admin.
TEST_F(MessengerTest, EscalationsAreSeenByTheCareTeamAndThePeopleTheyNotifiedOnly) {
  ASSERT_TRUE(Send(client_, "client-cl1", "u-1", "I feel very unwell", /*urgent=*/true).ok());
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(Send(client_, "client-cl1", "u-2", "still unwell", /*urgent=*/true).ok());
  v1::ListEscalationsRequest l;
  l.set_parent("clinics/c01");
  const Principal oncall{"people/oncall1", Role::kClinician, {"c01"}};
  const Principal admin{"people/ad1", Role::kAdmin, {"c01"}};
  auto all = messenger_->ListEscalations(admin, l);
  ASSERT_TRUE(all.ok()) << all.status();
  const int raised = all->escalations_size();
  ASSERT_GE(raised, 1);
  EXPECT_EQ(messenger_->ListEscalations(therapist_, l)->escalations_size(), raised) << "care team";
  EXPECT_EQ(messenger_->ListEscalations(oncall, l)->escalations_size(), raised) << "notified at step 2";
  auto outside = messenger_->ListEscalations(outsider_, l);
  ASSERT_TRUE(outside.ok()) << outside.status();
  EXPECT_EQ(outside->escalations_size(), 0);
  EXPECT_TRUE(outside->next_page_token().empty());
  // Page by page, the on-call clinician sees the same ones.
  l.set_page_size(1);
  std::vector<std::string> paged;
  for (int page = 0; page < 10; ++page) {
    auto one = messenger_->ListEscalations(oncall, l);
    ASSERT_TRUE(one.ok()) << one.status();
    for (const auto& e : one->escalations()) paged.push_back(e.name());
    if (one->next_page_token().empty()) break;
    l.set_page_token(one->next_page_token());
  }
  EXPECT_EQ(static_cast<int>(paged.size()), raised);
  v1::AcknowledgeEscalationRequest ack;
  ack.set_name(all->escalations(0).name());
  ack.set_request_id("ack-outside");
  EXPECT_THAT(messenger_->AcknowledgeEscalation(outsider_, ack), IsError(kDenied, "NOT_ON_CARE_TEAM"));
  ack.set_request_id("ack-oncall");
  auto acked = messenger_->AcknowledgeEscalation(oncall, ack);
  ASSERT_TRUE(acked.ok()) << acked.status();
  EXPECT_EQ(acked->acknowledged_by(), "people/oncall1");
}

TEST_F(MessengerTest, EscalationGoesToThePresentCareTeamFirst) {
  Online("th1");
  ASSERT_TRUE(Send(client_, "client-cl1", "u-1", "help", true).ok());
  v1::ListEscalationsRequest l;
  l.set_parent("clinics/c01");
  auto e = messenger_->ListEscalations(therapist_, l)->escalations(0);
  ASSERT_EQ(e.steps_size(), 1);
  EXPECT_THAT(e.steps(0).targets(), ::testing::ElementsAre("people/th1"));
  EXPECT_TRUE(e.steps(0).has_ack_deadline_time());
}

TEST_F(MessengerTest, DuringASessionClientAndSitterMessagesAreUrgentAndTheClientIsInSession) {
  ASSERT_TRUE(Event(SessionStarted(cv1::APPOINTMENT_KIND_MEDICINE_SELF_GUIDED, "people/sit1"), "ev-start").ok());
  auto m = Send(client_, "client-cl1", "s-1", "colours are intense");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->urgent());
  EXPECT_TRUE(m->urgent_forced());
  auto from_sitter = Send(sitter_, "client-cl1", "s-2", "all fine here");
  ASSERT_TRUE(from_sitter.ok()) << "the sitter joins the conversation for the session: " << from_sitter.status();
  EXPECT_TRUE(from_sitter->urgent_forced());
  auto from_team = Send(therapist_, "client-cl1", "s-3", "thanks");
  ASSERT_TRUE(from_team.ok());
  EXPECT_FALSE(from_team->urgent());
  v1::GetPresenceRequest g;
  g.set_name("people/cl1/presence");
  auto pr = messenger_->GetPresence(therapist_, g);
  ASSERT_TRUE(pr.ok()) << pr.status();
  EXPECT_EQ(pr->status(), cv1::PRESENCE_STATUS_IN_SESSION);
  EXPECT_EQ(Count(NotificationsOf("th1"), v1::Notification::TYPE_SESSION_STARTED), 1);

  ev1::EventEnvelope done;
  done.mutable_session_completed()->set_appointment("clinics/c01/appointments/a1");
  done.mutable_session_completed()->set_client("people/cl1");
  ASSERT_TRUE(Event(done, "ev-done").ok());
  EXPECT_FALSE(Send(client_, "client-cl1", "s-4", "back to normal")->urgent());
  EXPECT_THAT(Send(sitter_, "client-cl1", "s-5", "bye"), IsError(kDenied, "NOT_CONVERSATION_MEMBER"))
      << "the sitter leaves with the session";
  EXPECT_NE(messenger_->GetPresence(therapist_, g)->status(), cv1::PRESENCE_STATUS_IN_SESSION);
}

TEST_F(MessengerTest, MissedSitterCheckInAlertsTheCareTeamAndEscalates) {
  ASSERT_TRUE(Event(SessionStarted(cv1::APPOINTMENT_KIND_MEDICINE_SELF_GUIDED, "people/sit1"), "ev-start").ok());
  v1::SitterCheckInRequest c;
  c.set_appointment("clinics/c01/appointments/a1");
  c.set_request_id("c1");
  clock_.Advance(absl::Minutes(10));
  auto checked = messenger_->SitterCheckIn(sitter_, c);
  ASSERT_TRUE(checked.ok()) << checked.status();
  EXPECT_EQ(FromProto(checked->next_check_in_due_time()), clock_.Now() + absl::Minutes(20));
  EXPECT_EQ(checked->presence().status(), cv1::PRESENCE_STATUS_ONLINE) << "a check-in counts as a heartbeat";
  // A retry (same request_id) is answered with the first due time and does not check in again.
  clock_.Advance(absl::Minutes(1));
  auto retried = messenger_->SitterCheckIn(sitter_, c);
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_EQ(FromProto(retried->next_check_in_due_time()), clock_.Now() - absl::Minutes(1) + absl::Minutes(20));
  v1::SitterCheckInRequest changed = c;
  changed.set_note("a different check-in under the same request_id");
  EXPECT_THAT(messenger_->SitterCheckIn(sitter_, changed),
              IsError(absl::StatusCode::kAlreadyExists, "REQUEST_ID_REUSED"));
  EXPECT_THAT(messenger_->SitterCheckIn(Principal{"people/sit2", Role::kSitter, {"c01"}}, c),
              IsError(kDenied, "NOT_DESIGNATED_SITTER"));
  clock_.Advance(absl::Minutes(18));  // 19 minutes after the check-in
  ASSERT_TRUE(messenger_->Tick().ok());
  EXPECT_EQ(Count(NotificationsOf("th1"), v1::Notification::TYPE_SITTER_CHECK_IN_MISSED), 0);
  clock_.Advance(absl::Minutes(2));
  ASSERT_TRUE(messenger_->Tick().ok());
  EXPECT_EQ(Count(NotificationsOf("th1"), v1::Notification::TYPE_SITTER_CHECK_IN_MISSED), 1);
  EXPECT_EQ(Count(NotificationsOf("cn1"), v1::Notification::TYPE_SITTER_CHECK_IN_MISSED), 1);
  auto published = db_->Query("SELECT COUNT(*) FROM outbox WHERE type = 'sitter_check_in_missed'");
  EXPECT_EQ(published->at(0).Int(0), 1);
  v1::ListEscalationsRequest l;
  l.set_parent("clinics/c01");
  auto list = messenger_->ListEscalations(therapist_, l);
  ASSERT_EQ(list->escalations_size(), 1);
  EXPECT_EQ(list->escalations(0).trigger(), v1::Escalation::TRIGGER_SITTER_CHECK_IN_MISSED);
}

TEST_F(MessengerTest, PresenceGoesOfflineWhenEveryDeviceExpires) {
  v1::HeartbeatRequest h;
  h.set_device_id("phone");
  h.set_status(cv1::PRESENCE_STATUS_ONLINE);
  *h.mutable_ttl() = ToProto(absl::Seconds(30));
  ASSERT_TRUE(messenger_->Heartbeat(therapist_, h).ok());
  h.set_device_id("laptop");
  h.set_status(cv1::PRESENCE_STATUS_AWAY);
  *h.mutable_ttl() = ToProto(absl::Seconds(120));
  auto both = messenger_->Heartbeat(therapist_, h);
  ASSERT_TRUE(both.ok());
  EXPECT_EQ(both->presence().status(), cv1::PRESENCE_STATUS_ONLINE) << "the strongest device wins";
  h.set_status(cv1::PRESENCE_STATUS_IN_SESSION);
  EXPECT_THAT(messenger_->Heartbeat(therapist_, h), IsError(absl::StatusCode::kInvalidArgument, "INVALID_FIELD"));
  ASSERT_TRUE(Send(client_, "client-cl1", "x", "hi").ok());  // client and therapist now share a conversation
  v1::GetPresenceRequest g;
  g.set_name("people/th1/presence");
  clock_.Advance(absl::Seconds(31));
  ASSERT_TRUE(messenger_->Tick().ok());
  EXPECT_EQ(messenger_->GetPresence(client_, g)->status(), cv1::PRESENCE_STATUS_AWAY) << "the phone expired";
  clock_.Advance(absl::Seconds(90));
  ASSERT_TRUE(messenger_->Tick().ok());
  EXPECT_EQ(messenger_->GetPresence(client_, g)->status(), cv1::PRESENCE_STATUS_OFFLINE);
  EXPECT_THAT(messenger_->GetPresence(Principal{"people/cl7", Role::kClient, {"c01"}}, g),
              IsError(kDenied, "NOT_ON_CARE_TEAM")) << "presence only for people sharing a care team";
}

// Heartbeats applied together (one script call for a batch) give each beat the answer it would
// get on its own, in order, also for two devices of one person in one batch; a beat that fails
// in Redis fails alone; and the batch works after Redis lost its scripts.
TEST_F(MessengerTest, BatchedHeartbeatsAnswerEachBeatInOrderAndFailAlone) {
  using Beat = PresenceStore::Beat;
  const std::vector<std::string> c01 = {"c01"};
  auto beats = presence_->HeartbeatMany({Beat{"a", c01, "phone", cv1::PRESENCE_STATUS_ONLINE, absl::Seconds(30)},
                                         Beat{"b", c01, "laptop", cv1::PRESENCE_STATUS_AWAY, absl::Seconds(30)},
                                         Beat{"a", c01, "laptop", cv1::PRESENCE_STATUS_DO_NOT_DISTURB, absl::Seconds(60)}});
  ASSERT_EQ(beats.size(), 3u);
  for (const auto& b : beats) ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(beats[0]->presence.person(), "people/a");
  EXPECT_EQ(beats[0]->presence.status(), cv1::PRESENCE_STATUS_ONLINE);
  EXPECT_EQ(beats[0]->previous, cv1::PRESENCE_STATUS_OFFLINE);
  EXPECT_EQ(beats[1]->presence.person(), "people/b");
  EXPECT_EQ(beats[1]->presence.status(), cv1::PRESENCE_STATUS_AWAY);
  EXPECT_EQ(beats[2]->presence.status(), cv1::PRESENCE_STATUS_DO_NOT_DISTURB) << "the later beat sees the earlier one";
  EXPECT_EQ(beats[2]->previous, cv1::PRESENCE_STATUS_ONLINE);
  EXPECT_EQ(FromProto(beats[2]->presence.last_seen_time()), absl::FromUnixMillis(absl::ToUnixMillis(clock_.Now())));
  auto clinics = presence_->Clinics();
  ASSERT_TRUE(clinics.ok());
  EXPECT_EQ(*clinics, c01) << "the sweep finds the clinic";

  const absl::Time first_batch = absl::FromUnixMillis(absl::ToUnixMillis(clock_.Now()));

  // A person whose devices key holds the wrong type: only that beat fails.
  ASSERT_TRUE(redis_->Command({"SET", "continuum:presence:devices:broken", "not a hash"}).ok());
  ASSERT_TRUE(redis_->Command({"SCRIPT", "FLUSH"}).ok());  // and Redis lost the script (a restart)
  clock_.Advance(absl::Seconds(40));  // a's phone (30 s) has expired
  beats = presence_->HeartbeatMany({Beat{"b", c01, "laptop", cv1::PRESENCE_STATUS_ONLINE, absl::Seconds(30)},
                                    Beat{"broken", c01, "phone", cv1::PRESENCE_STATUS_ONLINE, absl::Seconds(30)},
                                    Beat{"a", c01, "tablet", cv1::PRESENCE_STATUS_AWAY, absl::Seconds(30)}});
  ASSERT_EQ(beats.size(), 3u);
  ASSERT_TRUE(beats[0].ok()) << beats[0].status();
  EXPECT_EQ(beats[0]->presence.status(), cv1::PRESENCE_STATUS_ONLINE);
  EXPECT_EQ(beats[0]->previous, cv1::PRESENCE_STATUS_AWAY);
  EXPECT_FALSE(beats[1].ok()) << "WRONGTYPE in Redis";
  ASSERT_TRUE(beats[2].ok()) << beats[2].status();
  EXPECT_EQ(beats[2]->presence.status(), cv1::PRESENCE_STATUS_DO_NOT_DISTURB) << "the laptop (60 s) is still alive";
  // A beat that leaves the status as it was keeps the time of the last change (the state is
  // written only on a change); last seen is always the latest beat.
  const absl::Time now = absl::FromUnixMillis(absl::ToUnixMillis(clock_.Now()));
  EXPECT_EQ(FromProto(beats[2]->presence.change_time()), first_batch);
  EXPECT_EQ(FromProto(beats[2]->presence.last_seen_time()), now);
  EXPECT_EQ(FromProto(beats[0]->presence.change_time()), now) << "b changed from AWAY to ONLINE";
  auto a = presence_->Get("a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->status(), cv1::PRESENCE_STATUS_DO_NOT_DISTURB);
  auto devices = redis_->Command({"HKEYS", "continuum:presence:devices:a"});
  ASSERT_TRUE(devices.ok());
  std::vector<std::string> names;
  for (const auto& e : devices->elements) names.push_back(e.str);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"", "laptop", "tablet"}))
      << "the expired phone is dropped (the field \"\" is the state)";
}

// The batcher holds at most `max_queued` heartbeats: one more is refused at once (OVERLOADED),
// the others are applied once it runs, each answered with its own person's presence.
TEST_F(MessengerTest, HeartbeatBatcherRefusesBeyondItsQueueAndAnswersTheRest) {
  HeartbeatBatcher batcher(*messenger_, /*max_batch=*/2, /*threads=*/1, /*max_queued=*/3);
  absl::Mutex mu;
  std::vector<absl::StatusOr<v1::HeartbeatResponse>> answers(4, absl::UnknownError("not answered"));
  int answered = 0;
  for (int i = 0; i < 4; ++i) {  // before Start: nothing is applied yet, so the queue fills
    batcher.Submit({absl::StrCat("q", i), {"c01"}, "phone", cv1::PRESENCE_STATUS_ONLINE, absl::Seconds(30)},
                   [&, i](absl::StatusOr<v1::HeartbeatResponse> r) {
                     absl::MutexLock lock(&mu);
                     answers[i] = std::move(r);
                     ++answered;
                   });
  }
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(answered, 1) << "only the fourth is answered before the batcher runs";
    EXPECT_THAT(answers[3], IsError(absl::StatusCode::kResourceExhausted, "OVERLOADED"));
  }
  batcher.Start();
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(+[](int* n) { return *n == 4; }, &answered));
  }
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(answers[i].ok()) << i << ": " << answers[i].status();
    EXPECT_EQ(answers[i]->presence().person(), absl::StrCat("people/q", i));
    EXPECT_EQ(answers[i]->presence().status(), cv1::PRESENCE_STATUS_ONLINE);
  }
  batcher.Stop();
  absl::StatusOr<v1::HeartbeatResponse> late = absl::UnknownError("not answered");
  batcher.Submit({"q9", {"c01"}, "phone", cv1::PRESENCE_STATUS_ONLINE, absl::Seconds(30)},
                 [&](absl::StatusOr<v1::HeartbeatResponse> r) { late = std::move(r); });
  EXPECT_EQ(late.status().code(), absl::StatusCode::kUnavailable) << late.status();
}

// Earlier versions kept the effective state in a key of its own ("continuum:presence:state:
// {person}"); the devices hash now holds it. A person last written by such a version keeps the
// time of their last change and is not reported as changed (a replica being replaced by a newer
// one must not announce everyone as having come online).
TEST_F(MessengerTest, HeartbeatReadsTheStateKeptByEarlierVersions) {
  using Beat = PresenceStore::Beat;
  const std::vector<std::string> c01 = {"c01"};
  const absl::Time since = absl::FromUnixMillis(absl::ToUnixMillis(clock_.Now()));
  ASSERT_TRUE(redis_->Command({"SET", "continuum:presence:state:old",
                               absl::StrCat(static_cast<int>(cv1::PRESENCE_STATUS_ONLINE), ":",
                                            absl::ToUnixMillis(since), ":", absl::ToUnixMillis(since))}).ok());
  clock_.Advance(absl::Seconds(20));
  auto beats = presence_->HeartbeatMany({Beat{"old", c01, "phone", cv1::PRESENCE_STATUS_ONLINE, absl::Seconds(30)}});
  ASSERT_EQ(beats.size(), 1u);
  ASSERT_TRUE(beats[0].ok()) << beats[0].status();
  EXPECT_EQ(beats[0]->previous, cv1::PRESENCE_STATUS_ONLINE);
  EXPECT_FALSE(beats[0]->changed());
  EXPECT_EQ(FromProto(beats[0]->presence.change_time()), since);
  // A change is written to the hash, and the hash wins over the old key from then on.
  clock_.Advance(absl::Seconds(1));
  beats = presence_->HeartbeatMany({Beat{"old", c01, "phone", cv1::PRESENCE_STATUS_AWAY, absl::Seconds(30)}});
  ASSERT_TRUE(beats[0].ok()) << beats[0].status();
  EXPECT_EQ(beats[0]->previous, cv1::PRESENCE_STATUS_ONLINE);
  EXPECT_EQ(beats[0]->presence.status(), cv1::PRESENCE_STATUS_AWAY);
  const absl::Time changed = absl::FromUnixMillis(absl::ToUnixMillis(clock_.Now()));
  clock_.Advance(absl::Seconds(1));
  beats = presence_->HeartbeatMany({Beat{"old", c01, "phone", cv1::PRESENCE_STATUS_AWAY, absl::Seconds(30)}});
  ASSERT_TRUE(beats[0].ok()) << beats[0].status();
  EXPECT_EQ(beats[0]->previous, cv1::PRESENCE_STATUS_AWAY) << "read from the hash, not the old key";
  EXPECT_EQ(FromProto(beats[0]->presence.change_time()), changed);
}

// Processed event ids are kept for the retention period, then forgotten; newer ones stay.
TEST_F(MessengerTest, RetentionForgetsOnlyOldProcessedEventIds) {
  auto first_time = [&](const std::string& id) {
    absl::StatusOr<bool> first;
    EXPECT_TRUE(db_->InTransaction([&](db::Tx& tx) -> absl::Status {
      first = store::FirstTime(tx, id, clock_.Now());
      return first.status();
    }).ok());
    return first.ok() && *first;
  };
  ASSERT_TRUE(first_time("e-old"));
  clock_.Advance(absl::Hours(48));
  ASSERT_TRUE(first_time("e-new"));
  EXPECT_FALSE(first_time("e-old")) << "seen";
  auto deleted = db::Purge(*db_, store::ProcessedEventsRetention(), clock_.Now() - absl::Hours(24));
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(*deleted, 1);
  EXPECT_FALSE(first_time("e-new")) << "newer than the cutoff: still seen";
  EXPECT_TRUE(first_time("e-old")) << "forgotten";
}

TEST_F(MessengerTest, NotificationsFromEventsAreCreatedOnceAndRemindersFireAtTheirOffsets) {
  ev1::EventEnvelope booked;
  auto* a = booked.mutable_appointment_booked()->mutable_appointment();
  a->set_name("clinics/c01/appointments/a9");
  a->set_client("people/cl1");
  a->set_provider("people/th1");
  *a->mutable_start_time() = ToProto(clock_.Now() + absl::Hours(48));
  ASSERT_TRUE(Event(booked, "ev-booked").ok());
  ASSERT_TRUE(Event(booked, "ev-booked").ok()) << "delivered twice by the stream";
  EXPECT_EQ(Count(NotificationsOf("cl1"), v1::Notification::TYPE_APPOINTMENT_BOOKED), 1);
  EXPECT_EQ(Count(NotificationsOf("th1"), v1::Notification::TYPE_APPOINTMENT_BOOKED), 1);
  clock_.Advance(absl::Hours(23));
  ASSERT_TRUE(messenger_->Tick().ok());
  EXPECT_EQ(Count(NotificationsOf("cl1"), v1::Notification::TYPE_APPOINTMENT_REMINDER), 0);
  clock_.Advance(absl::Hours(1) + absl::Minutes(1));
  ASSERT_TRUE(messenger_->Tick().ok());
  ASSERT_TRUE(messenger_->Tick().ok());
  EXPECT_EQ(Count(NotificationsOf("cl1"), v1::Notification::TYPE_APPOINTMENT_REMINDER), 1) << "24h reminder, once";
  clock_.Advance(absl::Hours(23));
  ASSERT_TRUE(messenger_->Tick().ok());
  EXPECT_EQ(Count(NotificationsOf("cl1"), v1::Notification::TYPE_APPOINTMENT_REMINDER), 2) << "and the 1h one";

  // Cancelled appointments drop their pending reminders.
  ev1::EventEnvelope other = booked;
  other.mutable_appointment_booked()->mutable_appointment()->set_name("clinics/c01/appointments/b1");
  *other.mutable_appointment_booked()->mutable_appointment()->mutable_start_time() = ToProto(clock_.Now() + absl::Hours(30));
  ASSERT_TRUE(Event(other, "ev-b1").ok());
  ev1::EventEnvelope cancelled;
  *cancelled.mutable_appointment_cancelled()->mutable_appointment() = other.appointment_booked().appointment();
  ASSERT_TRUE(Event(cancelled, "ev-b1-cancel").ok());
  clock_.Advance(absl::Hours(30));
  ASSERT_TRUE(messenger_->Tick().ok());
  EXPECT_EQ(Count(NotificationsOf("cl1"), v1::Notification::TYPE_APPOINTMENT_REMINDER), 2);
  EXPECT_EQ(Count(NotificationsOf("cl1"), v1::Notification::TYPE_APPOINTMENT_CANCELLED), 1);

  auto list = NotificationsOf("cl1");
  v1::AcknowledgeNotificationRequest ack;
  ack.set_name(list[0].name());
  ack.set_request_id("ack");
  auto acked = messenger_->AcknowledgeNotification(client_, ack);
  ASSERT_TRUE(acked.ok()) << acked.status();
  EXPECT_EQ(acked->state(), v1::Notification::STATE_ACKNOWLEDGED);
  EXPECT_THAT(messenger_->AcknowledgeNotification(therapist_, ack), IsError(kDenied, "PERMISSION_DENIED_NOT_SELF"));
}

TEST_F(MessengerTest, AdverseEventNotifiesTheCareTeamAndEscalates) {
  Online("cn1");
  ev1::EventEnvelope ae;
  auto* r = ae.mutable_adverse_event_reported();
  r->set_session_record("clinics/c01/sessionRecords/a1");
  r->set_client("people/cl1");
  r->mutable_adverse_event()->set_severity(continuum::records::v1::AdverseEvent::SEVERITY_SEVERE);
  r->mutable_adverse_event()->set_description("vomiting");
  ASSERT_TRUE(Event(ae, "ev-ae").ok());
  EXPECT_EQ(Count(NotificationsOf("th1"), v1::Notification::TYPE_ADVERSE_EVENT), 1);
  EXPECT_EQ(Count(NotificationsOf("cn1"), v1::Notification::TYPE_ESCALATION), 1) << "the present clinician";
  EXPECT_EQ(Count(NotificationsOf("th1"), v1::Notification::TYPE_ESCALATION), 0) << "the absent therapist, not yet";
}

TEST_F(MessengerTest, MessageUnreadPastTheThresholdNotifiesEachRecipientOnce) {
  *scheduling_.clinic.mutable_policy()->mutable_unread_message_alert_after() = ToProto(absl::Hours(4));
  ASSERT_TRUE(Send(therapist_, "client-cl1", "q-1", "how did the week go?").ok());
  clock_.Advance(absl::Hours(1));
  v1::MarkReadRequest read;
  read.set_name("clinics/c01/conversations/client-cl1");
  read.set_sequence(1);
  read.set_request_id("cn1-read");
  ASSERT_TRUE(messenger_->MarkRead(clinician_, read).ok());  // the clinician read it; the client did not
  clock_.Advance(absl::Hours(2));
  ASSERT_TRUE(messenger_->Tick().ok());
  EXPECT_EQ(Count(NotificationsOf("cl1"), v1::Notification::TYPE_MESSAGE_UNREAD), 0) << "not yet past 4h";
  clock_.Advance(absl::Hours(1) + absl::Minutes(1));
  ASSERT_TRUE(messenger_->Tick().ok());
  ASSERT_TRUE(messenger_->Tick().ok());
  EXPECT_EQ(Count(NotificationsOf("cl1"), v1::Notification::TYPE_MESSAGE_UNREAD), 1);
  EXPECT_EQ(Count(NotificationsOf("cn1"), v1::Notification::TYPE_MESSAGE_UNREAD), 0) << "read in time";
  EXPECT_EQ(Count(NotificationsOf("th1"), v1::Notification::TYPE_MESSAGE_UNREAD), 0) << "the sender";
}

// The sweep reads each clinic's messages from a cursor: every due message is looked at, however
// many there are (more than a tick's budget here, all created at the same instant), once; a
// message already more than a day past due when the sweep first sees it gets no alert.
TEST_F(MessengerTest, UnreadSweepReachesEveryDueMessageOnceWhateverTheirNumber) {
  *scheduling_.clinic.mutable_policy()->mutable_unread_message_alert_after() = ToProto(absl::Hours(4));
  ASSERT_TRUE(Send(therapist_, "client-cl1", "old", "from yesterday").ok());
  clock_.Advance(absl::Hours(30));  // due 26h ago
  constexpr int kMessages = 2100;
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_TRUE(Send(therapist_, "client-cl1", absl::StrCat("m-", i), "homework").ok()) << i;
  }
  v1::MarkReadRequest read;
  read.set_name("clinics/c01/conversations/client-cl1");
  read.set_sequence(1 + 1700);  // the client read "old" and the first 1,700
  read.set_request_id("cl1-read");
  ASSERT_TRUE(messenger_->MarkRead(client_, read).ok());
  clock_.Advance(absl::Hours(3));
  ASSERT_TRUE(messenger_->Tick().ok());
  EXPECT_EQ(Count(NotificationsOf("cl1"), v1::Notification::TYPE_MESSAGE_UNREAD), 0) << "not yet past 4h";
  clock_.Advance(absl::Hours(1) + absl::Minutes(1));
  for (int tick = 0; tick < 3; ++tick) ASSERT_TRUE(messenger_->Tick().ok());
  const auto alerts = NotificationsOf("cl1");
  EXPECT_EQ(Count(alerts, v1::Notification::TYPE_MESSAGE_UNREAD), kMessages - 1700)
      << "one per unread message, the last ones included";
  std::set<std::string> about;
  for (const auto& n : alerts) {
    if (n.type() == v1::Notification::TYPE_MESSAGE_UNREAD) about.insert(n.resource());
  }
  EXPECT_EQ(about.size(), static_cast<size_t>(kMessages - 1700)) << "no message twice";
  EXPECT_EQ(about.count("clinics/c01/conversations/client-cl1/messages/old"), 0u) << "more than a day past due";
  EXPECT_EQ(about.count("clinics/c01/conversations/client-cl1/messages/m-2099"), 1u);
}

TEST_F(MessengerTest, RoleByOperationTable) {
  ASSERT_TRUE(Send(therapist_, "client-cl1", "seed", "hello").ok());
  Online("th1");
  Principal other_client{"people/cl2", Role::kClient, {"c01"}};
  Principal admin{"people/ad1", Role::kAdmin, {"c01"}};
  Principal partner{"acme", Role::kPartner, {"c01"}};
  struct Who {
    const char* label;
    Principal p;
  };
  const std::vector<Who> who = {{"client", client_},        {"therapist", therapist_}, {"clinician", clinician_},
                                {"outsider", outsider_},    {"other-client", other_client}, {"admin", admin},
                                {"partner", partner},       {"other-clinic", other_clinic_}};
  const bool Y = true, N = false;
  int n = 0;
  struct Op {
    const char* label;
    std::function<absl::Status(const Principal&)> call;
    std::vector<bool> allowed;
  };
  const std::vector<Op> ops = {
      {"ListMessages(client conversation)",
       [&](const Principal& p) {
         v1::ListMessagesRequest r;
         r.set_parent("clinics/c01/conversations/client-cl1");
         return messenger_->ListMessages(p, r).status();
       },
       {Y, Y, Y, N, N, N, N, N}},
      {"ListMessages(care-team conversation)",
       [&](const Principal& p) {
         v1::ListMessagesRequest r;
         r.set_parent("clinics/c01/conversations/team-cl1");
         return messenger_->ListMessages(p, r).status();
       },
       {N, Y, Y, N, N, N, N, N}},
      {"SendMessage(client conversation)",
       [&](const Principal& p) { return Send(p, "client-cl1", "role-" + std::to_string(n++), "x").status(); },
       {Y, Y, Y, N, N, N, N, N}},
      {"GetPresence(th1)",
       [&](const Principal& p) {
         v1::GetPresenceRequest r;
         r.set_name("people/th1/presence");
         return messenger_->GetPresence(p, r).status();
       },
       {Y, Y, Y, N, N, N, N, N}},
      {"ListEscalations",
       [&](const Principal& p) {
         v1::ListEscalationsRequest r;
         r.set_parent("clinics/c01");
         return messenger_->ListEscalations(p, r).status();
       },
       {N, Y, Y, Y, N, Y, N, N}},
      {"ListNotifications(people/th1)",
       [&](const Principal& p) {
         v1::ListNotificationsRequest r;
         r.set_parent("people/th1");
         return messenger_->ListNotifications(p, r).status();
       },
       {N, Y, N, N, N, N, N, N}},
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

}  // namespace
}  // namespace continuum::messaging
