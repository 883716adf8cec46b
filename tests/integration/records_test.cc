// session-record and scheduling as real binaries with a real Redis: a medicine session
// walked from checklist to signed note across both services, the audit chain broken by a
// direct database edit, and the SIGKILL ledger test (nothing acknowledged is ever lost).
#include <signal.h>

#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "grpcpp/generic/generic_stub.h"
#include "common/db/database.h"
#include "common/redis/client.h"
#include "common/redis/streams.h"
#include "gmock/gmock.h"
#include "common/testing/platform.h"

namespace continuum::testing {
namespace {

using R = rv1::SessionRecordService::Stub;
using S = sv1::SchedulingService::Stub;
using Item = rv1::ChecklistItem;

Item Confirm(Item::Kind kind) {
  Item i;
  i.set_kind(kind);
  i.set_confirmed(true);
  return i;
}

class RecordsBinaryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    platform_.Start(true);
    medicine_ = platform_.SeedMedicineSession();
    ASSERT_FALSE(medicine_.empty());
    rv1::CreateSessionRecordRequest c;
    c.set_parent("clinics/kap");
    c.mutable_session_record()->set_appointment(medicine_);
    c.set_request_id("create");
    grpc::Status s = CallWith(platform_.rec.get(), &R::CreateSessionRecord, platform_.therapist, c, &record_);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  sv1::Appointment::State AppointmentState() {
    sv1::GetAppointmentRequest g;
    g.set_name(medicine_);
    sv1::Appointment a;
    EXPECT_TRUE(CallWith(platform_.sched.get(), &S::GetAppointment, platform_.admin, g, &a).ok());
    return a.state();
  }

  Platform platform_;
  std::string medicine_;
  rv1::SessionRecord record_;
};

TEST_F(RecordsBinaryTest, MedicineSessionFromChecklistToSignedNoteAcrossBothServices) {
  const std::string name = record_.name();
  rv1::SessionRecord out;
  rv1::StartSessionRequest start;
  start.set_name(name);
  start.set_request_id("start-1");
  grpc::Status s = CallWith(platform_.rec.get(), &R::StartSession, platform_.therapist, start, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ReasonOf(s), "CHECKLIST_FAILED");

  rv1::UpdateChecklistRequest check;
  check.set_name(name);
  *check.add_items() = Confirm(Item::KIND_TRANSPORTATION_ARRANGED);
  *check.add_items() = Confirm(Item::KIND_CONSENT_ACTIVE);
  auto* bp = check.add_items();
  bp->set_kind(Item::KIND_BLOOD_PRESSURE);
  bp->set_systolic_mmhg(122);
  bp->set_diastolic_mmhg(78);
  auto* dose = check.add_items();
  dose->set_kind(Item::KIND_DOSE_WITHIN_PLAN);
  dose->set_planned_route(cv1::DOSE_ROUTE_INTRAMUSCULAR);
  dose->set_planned_dose_mg(40);
  check.set_request_id("check");
  rv1::UpdateChecklistResponse checked;
  ASSERT_TRUE(CallWith(platform_.rec.get(), &R::UpdateChecklist, platform_.therapist, check, &checked).ok());
  EXPECT_TRUE(checked.checklist().passed());
  start.set_request_id("start-2");
  s = CallWith(platform_.rec.get(), &R::StartSession, platform_.therapist, start, &out);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(AppointmentState(), sv1::Appointment::STATE_CHECKED_IN);

  rv1::StartDoseAdministrationRequest d;
  d.set_name(name);
  d.set_route(cv1::DOSE_ROUTE_INTRAMUSCULAR);
  d.set_dose_mg(80);
  d.set_request_id("dose-80");
  s = CallWith(platform_.rec.get(), &R::StartDoseAdministration, platform_.therapist, d, &out);
  EXPECT_EQ(ReasonOf(s), "DOSE_OUTSIDE_PLAN") << "the dose plan comes from scheduling";
  d.set_dose_mg(40);
  d.set_request_id("dose-40");
  ASSERT_TRUE(CallWith(platform_.rec.get(), &R::StartDoseAdministration, platform_.therapist, d, &out).ok());
  rv1::StopDoseAdministrationRequest stop;
  stop.set_name(name);
  stop.set_administration_id(out.dose_administrations(0).administration_id());
  stop.set_request_id("stop");
  ASSERT_TRUE(CallWith(platform_.rec.get(), &R::StopDoseAdministration, platform_.therapist, stop, &out).ok());

  rv1::CompleteSessionRequest complete;
  complete.set_name(name);
  complete.set_request_id("complete-early");
  s = CallWith(platform_.rec.get(), &R::CompleteSession, platform_.therapist, complete, &out);
  EXPECT_EQ(ReasonOf(s), "OBSERVATION_PERIOD_NOT_ELAPSED");
  int attempt = 0;
  // The clinic's observation period is 2 s of real time here.
  ASSERT_TRUE(WaitUntil([&] {
    complete.set_request_id("complete-" + std::to_string(attempt++));
    return CallWith(platform_.rec.get(), &R::CompleteSession, platform_.therapist, complete, &out).ok();
  }, absl::Seconds(20)));
  EXPECT_EQ(AppointmentState(), sv1::Appointment::STATE_FULFILLED);

  rv1::UpdateNoteRequest note;
  note.set_name(name);
  note.mutable_note()->set_kind(rv1::Note::KIND_SESSION);
  note.mutable_note()->set_text("Grounded, reflective.");
  note.set_request_id("note");
  ASSERT_TRUE(CallWith(platform_.rec.get(), &R::UpdateNote, platform_.therapist, note, &out).ok());
  rv1::SignSessionRecordRequest sign;
  sign.set_name(name);
  sign.set_request_id("sign");
  ASSERT_TRUE(CallWith(platform_.rec.get(), &R::SignSessionRecord, platform_.clinician, sign, &out).ok());
  EXPECT_EQ(out.state(), rv1::SessionRecord::STATE_SIGNED);

  // Events reach the records stream through the outbox.
  redis::Options o;
  o.port = platform_.redis->port();
  redis::Client redis(o);
  std::vector<std::string> types;
  EXPECT_TRUE(WaitUntil([&] {
    auto r = redis.Command({"XRANGE", "continuum:events:records", "-", "+"});
    types.clear();
    if (r.ok()) {
      for (const auto& e : redis::ParseEntries(*r)) types.push_back(e.Get("type"));
    }
    return types.size() >= 3;
  }, absl::Seconds(15)));
  EXPECT_THAT(types, ::testing::ElementsAre("session_started", "session_completed", "session_signed"));

  // FHIR export for a partner of the clinic.
  rv1::ExportFhirBundleRequest ex;
  ex.set_parent("clinics/kap");
  ex.set_client("people/casey");
  rv1::ExportFhirBundleResponse bundle;
  ASSERT_TRUE(CallWith(platform_.rec.get(), &R::ExportFhirBundle, TestToken("ehr", "partner", {"kap"}), ex, &bundle).ok());
  EXPECT_EQ(bundle.record_count(), 1);
  EXPECT_THAT(bundle.bundle_json(), ::testing::HasSubstr("\"MedicationAdministration\""));

  // The audit chain verifies; a row altered in the database is reported.
  rv1::VerifyAuditChainRequest verify;
  verify.set_parent("clinics/kap");
  rv1::VerifyAuditChainResponse verdict;
  ASSERT_TRUE(CallWith(platform_.rec.get(), &R::VerifyAuditChain, platform_.admin, verify, &verdict).ok());
  EXPECT_TRUE(verdict.ok());
  EXPECT_GE(verdict.entries_checked(), 10);
  auto db = db::Open({.url = platform_.records_db});
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->Exec("UPDATE audit_log SET resource = 'clinics/kap/sessionRecords/other' WHERE sequence = 5").ok());
  ASSERT_TRUE(CallWith(platform_.rec.get(), &R::VerifyAuditChain, platform_.admin, verify, &verdict).ok());
  EXPECT_FALSE(verdict.ok());
  EXPECT_EQ(verdict.first_broken_entry().sequence(), 5);
}

// Record writes answer with the version's bytes as stored (their methods are raw on the
// server): the answer must be the same record a read returns, and bytes that are not a request
// are refused as the caller's error, not the server's.
TEST_F(RecordsBinaryTest, WritesAnswerWithTheStoredVersionAndRefuseMalformedRequests) {
  rv1::AddTimelineEntryRequest add;
  add.set_name(record_.name());
  add.mutable_entry()->set_kind(rv1::TimelineEntry::KIND_OBSERVATION);
  add.mutable_entry()->set_text("calm, eyes closed");
  add.set_request_id("observe-1");
  rv1::SessionRecord written;
  ASSERT_TRUE(CallWith(platform_.rec.get(), &R::AddTimelineEntry, platform_.therapist, add, &written).ok());
  EXPECT_EQ(written.version(), record_.version() + 1);
  ASSERT_EQ(written.timeline_size(), 1);
  EXPECT_EQ(written.timeline(0).text(), "calm, eyes closed");
  rv1::GetSessionRecordRequest get;
  get.set_name(record_.name());
  rv1::SessionRecord read;
  ASSERT_TRUE(CallWith(platform_.rec.get(), &R::GetSessionRecord, platform_.therapist, get, &read).ok());
  EXPECT_EQ(written.SerializeAsString(), read.SerializeAsString());
  // The retry is answered from the stored version: the same bytes again.
  rv1::SessionRecord retried;
  ASSERT_TRUE(CallWith(platform_.rec.get(), &R::AddTimelineEntry, platform_.therapist, add, &retried).ok());
  EXPECT_EQ(retried.SerializeAsString(), written.SerializeAsString());

  auto channel = grpc::CreateChannel(platform_.records->address(), grpc::InsecureChannelCredentials());
  grpc::GenericStub generic(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  ctx.AddMetadata("authorization", "Bearer " + platform_.therapist);
  const std::string garbage = "\xff\xff\xff\xff not a protobuf message";
  grpc::Slice slice(garbage);
  grpc::ByteBuffer request(&slice, 1), response;
  absl::Notification done;
  grpc::Status status;
  generic.UnaryCall(&ctx, "/continuum.records.v1.SessionRecordService/AddTimelineEntry", grpc::StubOptions(),
                    &request, &response, [&](grpc::Status s) {
                      status = std::move(s);
                      done.Notify();
                    });
  done.WaitForNotification();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_EQ(ReasonOf(status), "INVALID_FIELD");
  EXPECT_THAT(status.error_message(), ::testing::HasSubstr("continuum.records.v1.AddTimelineEntryRequest"));
  // Nothing was written by it, and the server still answers.
  ASSERT_TRUE(CallWith(platform_.rec.get(), &R::GetSessionRecord, platform_.therapist, get, &read).ok());
  EXPECT_EQ(read.version(), written.version());
}

TEST_F(RecordsBinaryTest, NothingAcknowledgedIsLostAcrossRepeatedSigkill) {
  const std::string name = record_.name();
  absl::Mutex mu;
  std::vector<int> ledger;  // acknowledged entries
  int next = 0;
  std::optional<int> pending;  // the write in flight when the server died, retried with its id
  auto write = [&](int i) {
    rv1::AddTimelineEntryRequest r;
    r.set_name(name);
    r.mutable_entry()->set_kind(rv1::TimelineEntry::KIND_OBSERVATION);
    r.mutable_entry()->set_text("ledger entry " + std::to_string(i));
    r.set_request_id("ledger-" + std::to_string(i));
    rv1::SessionRecord out;
    return CallWith(platform_.rec.get(), &R::AddTimelineEntry, platform_.therapist, r, &out).ok();
  };
  constexpr int kRounds = 4;
  for (int round = 0; round < kRounds; ++round) {
    if (pending) {
      ASSERT_TRUE(write(*pending)) << "retry after restart";
      absl::MutexLock lock(&mu);
      ledger.push_back(*pending);
      pending.reset();
    }
    size_t kill_at;
    {
      absl::MutexLock lock(&mu);
      kill_at = ledger.size() + 8 + 5 * round;
    }
    std::thread writer([&] {
      while (true) {
        int i;
        {
          absl::MutexLock lock(&mu);
          i = next++;
        }
        if (!write(i)) {
          pending = i;  // unknown outcome: committed or not, the retry settles it
          return;
        }
        absl::MutexLock lock(&mu);
        ledger.push_back(i);
      }
    });
    {
      absl::MutexLock lock(&mu);
      auto reached = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu) { return ledger.size() >= kill_at; };
      mu.Await(absl::Condition(&reached));
    }
    platform_.records->process().Signal(SIGKILL);  // the writer is mid-stream
    ASSERT_TRUE(platform_.records->process().Wait(absl::Seconds(10)).ok());
    writer.join();
    platform_.StartRecords();
  }
  if (pending) {
    ASSERT_TRUE(write(*pending));
    ledger.push_back(*pending);
  }
  rv1::GetSessionRecordRequest g;
  g.set_name(name);
  rv1::SessionRecord rec;
  ASSERT_TRUE(CallWith(platform_.rec.get(), &R::GetSessionRecord, platform_.therapist, g, &rec).ok());
  std::multiset<std::string> stored;
  for (const auto& e : rec.timeline()) stored.insert(e.text());
  std::multiset<std::string> acknowledged;
  for (int i : ledger) acknowledged.insert("ledger entry " + std::to_string(i));
  EXPECT_GE(ledger.size(), 40u);
  EXPECT_EQ(stored, acknowledged) << "every acknowledged write is stored exactly once, unaltered";
  EXPECT_EQ(rec.version(), static_cast<int64_t>(1 + ledger.size()));
}

}  // namespace
}  // namespace continuum::testing
