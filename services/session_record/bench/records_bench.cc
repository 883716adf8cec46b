// Session-record benchmark (run on purpose, not a test):
//   continuum-records-bench [--backend=sqlite|postgres|both] [--seconds=3] [--threads=4] [--records=64]
// For each backend, with the same durability the service uses (SQLite WAL + synchronous=FULL;
// PostgreSQL with fsync on), measured in the same run:
//   * baseline: a bare single-row INSERT per transaction;
//   * durable record writes: AddTimelineEntry through the RecordKeeper (new version row,
//     audit entry, idempotency row, one transaction), spread over `records` records;
//   * reads: GetSessionRecord (the read plus its audit entry, one transaction).
// Scheduling is replaced by an in-process stand-in: this measures the record keeper and its
// store, not the network.
#include <atomic>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/api/idempotency.h"
#include "common/config/config_source.h"
#include "common/db/migrations.h"
#include "common/outbox/outbox.h"
#include "common/testing/harness.h"
#include "services/session_record/record_keeper.h"
#include "services/session_record/session_record_service.h"

namespace continuum::records {
namespace {

namespace sv1 = ::continuum::scheduling::v1;

class BenchScheduling : public SchedulingClient {
 public:
  absl::StatusOr<sv1::Appointment> GetAppointment(const std::string& name) override {
    sv1::Appointment a;
    a.set_name(name);
    a.set_kind(cv1::APPOINTMENT_KIND_PREPARATION);
    a.set_client("people/client");
    a.set_program("clinics/bench/programs/p");
    a.set_state(sv1::Appointment::STATE_BOOKED);
    return a;
  }
  absl::StatusOr<sv1::CareTeam> GetCareTeam(const std::string&, const std::string&) override {
    sv1::CareTeam t;
    t.add_members()->set_person("people/ther");
    t.mutable_members(0)->set_role(cv1::ROLE_THERAPIST);
    return t;
  }
  absl::StatusOr<sv1::Program> GetProgram(const std::string&) override { return sv1::Program(); }
  absl::StatusOr<sv1::Clinic> GetClinic(const std::string&) override { return sv1::Clinic(); }
  absl::StatusOr<sv1::Person> GetPerson(const std::string&) override { return sv1::Person(); }
  absl::StatusOr<std::vector<std::string>> MembersWithRole(const std::string&, cv1::Role) override {
    return std::vector<std::string>{};
  }
  absl::Status SetAppointmentState(const std::string&, sv1::Appointment::State, const std::string&) override {
    return absl::OkStatus();
  }
};

void Die(const absl::Status& s, const char* what) {
  if (s.ok()) return;
  std::fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
  std::exit(1);
}

// Runs `op(thread, i)` from `threads` threads for `seconds`; returns operations per second.
double Rate(int threads, double seconds, const std::function<absl::Status(int, int)>& op) {
  std::atomic<int64_t> done{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  absl::Time start = absl::Now();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; !stop.load(); ++i) {
        Die(op(t, i), "operation");
        done++;
      }
    });
  }
  while (absl::Now() - start < absl::Seconds(seconds)) absl::SleepFor(absl::Milliseconds(20));
  stop = true;
  for (auto& w : workers) w.join();
  return done.load() / absl::ToDoubleSeconds(absl::Now() - start);
}

void Run(const std::string& backend, const std::string& url, double seconds, int threads, int records) {
  auto db = db::Open({.url = url, .pool_size = std::max(4, threads)});
  Die(db.status(), "open");
  Die(db::ApplyMigrations(**db, "outbox", outbox::Migrations()), "migrate");
  Die(db::ApplyMigrations(**db, "idempotency", api::IdempotencyMigrations()), "migrate");
  Die(db::ApplyMigrations(**db, "session_record", session_record::Migrations()), "migrate");
  Die((*db)->Exec("CREATE TABLE bare (id TEXT PRIMARY KEY, data TEXT NOT NULL)").status(), "bare");
  BenchScheduling scheduling;
  RecordKeeper keeper(**db, RealClock::Get(), scheduling);
  auth::Principal ther{"people/ther", auth::Role::kTherapist, {"bench"}};
  for (int i = 0; i < records; ++i) {
    v1::CreateSessionRecordRequest c;
    c.set_parent("clinics/bench");
    c.mutable_session_record()->set_appointment(absl::StrCat("clinics/bench/appointments/a", i));
    c.set_request_id(absl::StrCat("create-", i));
    Die(keeper.CreateSessionRecord(ther, c).status(), "create");
  }
  const std::string payload(120, 'x');
  std::atomic<int64_t> seq{0};
  for (int n : {1, threads}) {
    double bare = Rate(n, seconds, [&](int, int) {
      return (*db)->Exec("INSERT INTO bare (id, data) VALUES ($1, $2)", {absl::StrCat("k", seq++), payload}).status();
    });
    double writes = Rate(n, seconds, [&](int t, int i) {
      v1::AddTimelineEntryRequest r;
      r.set_name(absl::StrCat("clinics/bench/sessionRecords/a", (t * 7919 + i) % records));
      r.mutable_entry()->set_kind(v1::TimelineEntry::KIND_OBSERVATION);
      r.mutable_entry()->set_text(payload);
      r.set_request_id(absl::StrCat("w", seq++));
      return keeper.AddTimelineEntry(ther, r).status();
    });
    double reads = Rate(n, seconds, [&](int t, int i) {
      v1::GetSessionRecordRequest r;
      r.set_name(absl::StrCat("clinics/bench/sessionRecords/a", (t * 7919 + i) % records));
      return keeper.GetSessionRecord(ther, r).status();
    });
    std::printf("%-8s %d thread(s): bare insert %.0f/s | record writes %.0f/s (%.2fx bare) | audited reads %.0f/s\n",
                backend.c_str(), n, bare, writes, writes / bare, reads);
  }
}

}  // namespace
}  // namespace continuum::records

int main(int argc, char** argv) {
  using namespace continuum;
  ConfigSource c = ConfigSource::FromMain(argc, argv);
  std::string backend = c.String("backend", "both", "sqlite, postgres or both");
  double seconds = static_cast<double>(c.Int("seconds", 3, "seconds per measurement", 1, 600));
  int threads = static_cast<int>(c.Int("threads", 4, "concurrent writers", 1, 64));
  int records = static_cast<int>(c.Int("records", 64, "records the writes are spread over", 1, 100000));
  if (auto s = c.Finish(); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 2;
  }
  testing::TempDir dir;
  if (backend == "sqlite" || backend == "both") {
    records::Run("sqlite", "sqlite:" + dir.File("bench.db"), seconds, threads, records);
  }
  if (backend == "postgres" || backend == "both") {
    setenv("CONTINUUM_TEST_PG_FSYNC", "on", 1);
    auto pg = testing::PostgresServer::Shared();
    if (!pg.ok()) {
      std::fprintf(stderr, "postgres: %s\n", pg.status().ToString().c_str());
      return 1;
    }
    records::Run("postgres", *(*pg)->CreateDatabase(), seconds, threads, records);
  }
  return 0;
}
