// Test helpers for tests that run the real binaries: start scheduling (+ session-record)
// against a real redis-server, and seed a clinic through the public API.
#pragma once

#include <memory>
#include <string>

#include "common/testing/harness.h"
#include "continuum/records/v1/session_record_service.grpc.pb.h"
#include "continuum/scheduling/v1/scheduling_service.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace continuum::testing {

namespace sv1 = ::continuum::scheduling::v1;
namespace rv1 = ::continuum::records::v1;
namespace cv1 = ::continuum::common::v1;

// Calls `method` on `stub` with a bearer token and a 20 s deadline.
template <typename Stub, typename Req, typename Resp>
grpc::Status CallWith(Stub* stub, grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
                      const std::string& token, const Req& req, Resp* resp) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  ctx.AddMetadata("authorization", "Bearer " + token);
  return (stub->*method)(&ctx, req, resp);
}

// The ErrorInfo.reason of a failed call ("" if none).
std::string ReasonOf(const grpc::Status& s);

struct Platform {
  TempDir dir;
  std::unique_ptr<RedisServer> redis;
  std::unique_ptr<ServiceProcess> scheduling, records;
  std::unique_ptr<sv1::SchedulingService::Stub> sched;
  std::unique_ptr<rv1::SessionRecordService::Stub> rec;
  std::string records_db;

  std::string ops = TestToken("ops", "service", {"*"});
  std::string admin = TestToken("people/boss", "admin", {"kap"});
  std::string therapist = TestToken("people/ther", "therapist", {"kap"});
  std::string clinician = TestToken("people/clin", "clinician", {"kap"});
  std::string client = TestToken("people/casey", "client", {"kap"});

  // Where each service keeps its data: SQLite files in `dir` (default) or, when `postgres` is
  // set before Start(), a fresh database per service on the shared test PostgreSQL server.
  bool postgres = false;
  std::string DatabaseUrl(const std::string& service);

  // Starts redis and scheduling (and session-record when `with_records`).
  void Start(bool with_records);
  void StartRecords();  // (re)starts only session-record, on the same database file
  // Starts one more messaging replica on the shared database file; returns its address.
  std::string StartMessaging();
  std::vector<std::unique_ptr<ServiceProcess>> messaging;
  std::string messaging_db;
  // Seeding steps through the public API, as admin of clinic "kap"; shared by the seed below,
  // the e2e journey and the load generator's setup. `request_id` makes each retry-safe.
  grpc::Status AddPerson(const std::string& id, cv1::Role role, const std::string& request_id);
  grpc::Status OpenAllWeek(const std::string& provider_id, const std::string& request_id);  // 24 h, 7 days
  grpc::Status SetCareTeam(const std::string& client_id, const std::vector<std::string>& member_ids,
                           const std::string& request_id);
  // Creates an ACTIVE program for the client; its name goes to `*name`.
  grpc::Status AddProgram(const std::string& client_id, const std::string& request_id, std::string* name);

  // Clinic "kap" (Europe/Berlin, 60 s notice, 2 s supervised observation), therapist "ther",
  // clinician "clin", client "casey" with care team and ACTIVE program, consultation fulfilled,
  // dose plan IM 20-60 mg, and one supervised medicine session tomorrow. Returns its name.
  std::string SeedMedicineSession();
  std::string program;
};

}  // namespace continuum::testing
