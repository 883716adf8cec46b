// Scheduling benchmark (run on purpose, not a test):
//   continuum-scheduling-bench [--backend=sqlite|postgres|both] [--days=90] [--book=400] [--threads=4]
// For each backend: a provider with `days` days of bookings (8 a day), then
//   * slot search: SearchSlots over one week for that provider, repeated, searches/s and p50/p99;
//   * booking throughput: `book` bookings of distinct slots (distinct clients), sequential and
//     with `threads` concurrent callers, bookings/s.
// SQLite runs on a file with synchronous=FULL (what the service uses); PostgreSQL on a private
// server started in a temp dir with fsync on. The domain is called in-process, without gRPC.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/config/config_source.h"
#include "common/api/idempotency.h"
#include "common/db/migrations.h"
#include "common/outbox/outbox.h"
#include "common/testing/harness.h"
#include "services/scheduling/rules.h"
#include "services/scheduling/scheduler.h"
#include "services/scheduling/scheduling_service.h"

namespace continuum::scheduling {
namespace {

using auth::Principal;
using auth::Role;

struct Fixture {
  std::unique_ptr<db::Database> db;
  FakeClock clock{absl::FromCivil(absl::CivilSecond(2026, 1, 5, 6, 0, 0), absl::UTCTimeZone())};
  std::unique_ptr<Scheduler> scheduler;
  Principal service{"bench", Role::kService, {"*"}};
  absl::TimeZone tz = absl::UTCTimeZone();
  std::vector<std::string> programs;
  int next = 0;

  std::string Rid() { return absl::StrCat("r", next++); }

  void Check(const absl::Status& s, const char* what) {
    if (!s.ok()) {
      std::fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
      std::exit(1);
    }
  }

  void Setup(int clients) {
    Check(db::ApplyMigrations(*db, "outbox", outbox::Migrations()), "migrate");
    Check(db::ApplyMigrations(*db, "idempotency", api::IdempotencyMigrations()), "migrate");
    Check(db::ApplyMigrations(*db, "scheduling", Migrations()), "migrate");
    scheduler = std::make_unique<Scheduler>(*db, clock);
    v1::CreateClinicRequest cc;
    cc.set_clinic_id("bench");
    cc.mutable_clinic()->set_display_name("Bench");
    cc.mutable_clinic()->set_time_zone("UTC");
    cc.mutable_clinic()->mutable_policy()->mutable_minimum_notice()->set_seconds(60);
    cc.set_request_id(Rid());
    Check(scheduler->CreateClinic(service, cc).status(), "clinic");
    auto person = [&](const std::string& id, cv1::Role role) {
      v1::CreatePersonRequest r;
      r.set_person_id(id);
      r.mutable_person()->set_display_name(id);
      r.mutable_person()->add_memberships()->set_clinic("clinics/bench");
      r.mutable_person()->mutable_memberships(0)->set_role(role);
      r.set_request_id(Rid());
      Check(scheduler->CreatePerson(service, r).status(), "person");
    };
    person("ther", cv1::ROLE_THERAPIST);
    v1::UpdateAvailabilityRequest a;
    a.mutable_availability()->set_name("clinics/bench/providers/ther/availability");
    for (int d = 1; d <= 7; ++d) {
      auto* w = a.mutable_availability()->add_weekly_hours();
      w->set_day_of_week(static_cast<cv1::DayOfWeek>(d));
      w->mutable_hours()->mutable_start()->set_hours(0);
      w->mutable_hours()->mutable_end()->set_hours(24);
    }
    a.mutable_update_mask()->add_paths("weekly_hours");
    a.set_request_id(Rid());
    Check(scheduler->UpdateAvailability(service, a).status(), "availability");
    for (int i = 0; i < clients; ++i) {
      std::string id = absl::StrCat("client", i);
      person(id, cv1::ROLE_CLIENT);
      v1::UpdateCareTeamRequest t;
      t.mutable_care_team()->set_name("clinics/bench/careTeams/" + id);
      t.mutable_care_team()->add_members()->set_person("people/ther");
      t.mutable_update_mask()->add_paths("members");
      t.set_allow_missing(true);
      t.set_request_id(Rid());
      Check(scheduler->UpdateCareTeam(service, t).status(), "team");
      v1::CreateProgramRequest p;
      p.set_parent("clinics/bench");
      p.mutable_program()->set_client("people/" + id);
      p.set_request_id(Rid());
      auto program = scheduler->CreateProgram(service, p);
      Check(program.status(), "program");
      programs.push_back(program->name());
    }
  }

  absl::Status Book(int client, absl::Time start, const std::string& rid) {
    v1::BookAppointmentRequest r;
    r.set_parent("clinics/bench");
    r.mutable_appointment()->set_kind(cv1::APPOINTMENT_KIND_PREPARATION);
    r.mutable_appointment()->set_program(programs[client % programs.size()]);
    r.mutable_appointment()->set_provider("people/ther");
    *r.mutable_appointment()->mutable_start_time() = ToProto(start);
    *r.mutable_appointment()->mutable_end_time() = ToProto(start + absl::Minutes(45));
    r.set_request_id(rid);
    return scheduler->BookAppointment(service, r).status();
  }
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

void Run(const std::string& backend, const std::string& url, int days, int book, int threads) {
  Fixture f;
  auto db = db::Open({.url = url, .pool_size = std::max(4, threads)});
  f.Check(db.status(), "open");
  f.db = std::move(*db);
  f.Setup(64);
  absl::Time day0 = f.clock.Now() + absl::Hours(24);
  // Three months of bookings: 8 a day, one per hour from 08:00.
  absl::Time t0 = absl::Now();
  int booked = 0;
  for (int d = 0; d < days; ++d) {
    for (int h = 0; h < 8; ++h) {
      f.Check(f.Book(booked, day0 + absl::Hours(24 * d + 8 + h), f.Rid()), "history");
      ++booked;
    }
  }
  double history_s = absl::ToDoubleSeconds(absl::Now() - t0);

  // Slot search over one week in the middle of the booked period.
  std::vector<double> lat;
  int slots = 0;
  absl::Time search_end = absl::Now() + absl::Seconds(3);
  while (absl::Now() < search_end) {
    v1::SearchSlotsRequest r;
    r.set_parent("clinics/bench");
    r.set_kind(cv1::APPOINTMENT_KIND_PREPARATION);
    r.set_provider("people/ther");
    *r.mutable_range()->mutable_start_time() = ToProto(day0 + absl::Hours(24 * (days / 2)));
    *r.mutable_range()->mutable_end_time() = ToProto(day0 + absl::Hours(24 * (days / 2 + 7)));
    r.set_page_size(1000);
    absl::Time s = absl::Now();
    auto out = f.scheduler->SearchSlots(f.service, r);
    lat.push_back(absl::ToDoubleMilliseconds(absl::Now() - s));
    f.Check(out.status(), "search");
    slots = out->slots_size();
  }
  double search_total = 0;
  for (double x : lat) search_total += x;

  // Booking throughput on distinct free slots (evenings, minutes apart), sequential.
  absl::Time free0 = day0 + absl::Hours(17);
  t0 = absl::Now();
  for (int i = 0; i < book; ++i) {
    f.Check(f.Book(i, free0 + absl::Hours(24 * (i / 8)) + absl::Minutes(45 * (i % 8)), f.Rid()), "book");
  }
  double seq_s = absl::ToDoubleSeconds(absl::Now() - t0);

  // Concurrent callers on further distinct slots.
  absl::Time free1 = free0 + absl::Hours(24 * (book / 8 + 2));
  std::atomic<int> next{0}, failures{0};
  t0 = absl::Now();
  std::vector<std::thread> workers;
  for (int w = 0; w < threads; ++w) {
    workers.emplace_back([&, w] {
      for (int i = next++; i < book; i = next++) {
        absl::Status s = f.Book(i, free1 + absl::Hours(24 * (i / 8)) + absl::Minutes(45 * (i % 8)),
                                absl::StrCat("c", w, "-", i));
        if (!s.ok()) failures++;
      }
    });
  }
  for (auto& t : workers) t.join();
  double par_s = absl::ToDoubleSeconds(absl::Now() - t0);

  std::printf("%-8s history: %d bookings over %d days in %.1f s\n", backend.c_str(), booked, days, history_s);
  std::printf("%-8s slot search (1 week, %d slots found): %.1f searches/s, p50 %.2f ms, p99 %.2f ms\n",
              backend.c_str(), slots, 1000.0 * lat.size() / search_total, Percentile(lat, 0.5),
              Percentile(lat, 0.99));
  std::printf("%-8s booking distinct slots: sequential %.1f bookings/s; %d threads %.1f bookings/s (%d failed)\n",
              backend.c_str(), book / seq_s, threads, book / par_s, failures.load());
}

}  // namespace
}  // namespace continuum::scheduling

int main(int argc, char** argv) {
  using namespace continuum;
  ConfigSource c = ConfigSource::FromMain(argc, argv);
  std::string backend = c.String("backend", "both", "sqlite, postgres or both");
  int days = static_cast<int>(c.Int("days", 90, "days of existing bookings", 1, 400));
  int book = static_cast<int>(c.Int("book", 400, "bookings per throughput run", 8, 100000));
  int threads = static_cast<int>(c.Int("threads", 4, "concurrent callers", 1, 64));
  if (auto s = c.Finish(); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 2;
  }
  testing::TempDir dir;
  if (backend == "sqlite" || backend == "both") {
    scheduling::Run("sqlite", "sqlite:" + dir.File("bench.db"), days, book, threads);
  }
  if (backend == "postgres" || backend == "both") {
    setenv("CONTINUUM_TEST_PG_FSYNC", "on", 1);  // measure with production durability
    auto pg = testing::PostgresServer::Shared();
    if (!pg.ok()) {
      std::fprintf(stderr, "postgres: %s\n", pg.status().ToString().c_str());
      return 1;
    }
    auto url = (*pg)->CreateDatabase();
    scheduling::Run("postgres", *url, days, book, threads);
  }
  return 0;
}
