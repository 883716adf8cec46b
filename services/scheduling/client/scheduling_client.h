// What other services need from scheduling: appointments, care teams, dose plans, clinic
// policy and people, and the appointment state changes that follow a session. Calls
// carry deadlines; an unreachable scheduling service is UNAVAILABLE / UPSTREAM_UNAVAILABLE.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/auth/grpc_auth.h"
#include "common/config/config_source.h"
#include "common/server/runtime.h"
#include "common/time/clock.h"
#include "continuum/scheduling/v1/scheduling_service.grpc.pb.h"

namespace continuum::scheduling {

namespace sv1 = ::continuum::scheduling::v1;
namespace cv1 = ::continuum::common::v1;

class SchedulingClient {
 public:
  virtual ~SchedulingClient() = default;
  virtual absl::StatusOr<sv1::Appointment> GetAppointment(const std::string& name) = 0;
  virtual absl::StatusOr<sv1::CareTeam> GetCareTeam(const std::string& clinic_id, const std::string& client_id) = 0;
  virtual absl::StatusOr<sv1::Program> GetProgram(const std::string& name) = 0;
  virtual absl::StatusOr<sv1::Clinic> GetClinic(const std::string& clinic_id) = 0;
  virtual absl::StatusOr<sv1::Person> GetPerson(const std::string& person_id) = 0;
  // Ids of the clinic's members with `role` (first 500).
  virtual absl::StatusOr<std::vector<std::string>> MembersWithRole(const std::string& clinic_id, cv1::Role role) = 0;
  // Idempotent on request_id.
  virtual absl::Status SetAppointmentState(const std::string& name, sv1::Appointment::State state,
                                           const std::string& request_id) = 0;
  // Whether scheduling can be reached now, from the connection's state (no call is made; an
  // idle connection is asked to connect). Clients without a connection are always reachable.
  virtual absl::Status Reachability() { return absl::OkStatus(); }
};

// How a service reaches scheduling, read from its flags / environment.
struct SchedulingClientConfig {
  std::string address;     // --scheduling-address
  absl::Duration deadline;  // --scheduling-deadline
  std::string token_file;  // --service-token-file (empty: mint with the HS256 secret)
  absl::Duration care_team_cache_ttl;  // --care-team-cache-ttl (0: no cache)
  // --scheduling-load-balancing: "round_robin" (calls spread over every address the name
  // resolves to, e.g. a headless Service's pods) or "pick_first" (one connection).
  std::string load_balancing = "round_robin";
};
SchedulingClientConfig ReadSchedulingClientConfig(ConfigSource& source);

// The gRPC client for a service called `subject`, with TLS settings and JWT options of the
// service's own configuration. The client owns its token source.
absl::StatusOr<std::unique_ptr<SchedulingClient>> ConnectScheduling(const SchedulingClientConfig& config,
                                                                    const CommonConfig& common,
                                                                    const std::string& subject);

// The housekeeping task that reports `client`'s reachability as the component health status
// "continuum.scheduling" of `rt`'s server (checked every second; not gating the server's
// overall status: calls that need scheduling fail UNAVAILABLE on their own, the others still
// work), with a log line when it changes.
Runtime::Periodic ReportSchedulingHealth(Runtime& rt, SchedulingClient& client);

// Remembers each care team `inner` returned for `ttl` (by the injected clock), at most
// `max_entries` of them; everything else passes through. Every session-record write and
// messaging send asks for the client's care team, and a gRPC round trip to scheduling per
// call cost more than the rest of a record write. The price: a member removed from a care
// team keeps that team's access on this replica for up to `ttl` (default 5 s, see
// docs/operations.md); errors are never cached.
std::unique_ptr<SchedulingClient> WithCareTeamCache(std::unique_ptr<SchedulingClient> inner, Clock& clock,
                                                    absl::Duration ttl, size_t max_entries = 10000);

// The gRPC implementation, authenticated as this service.
std::unique_ptr<SchedulingClient> NewGrpcSchedulingClient(std::shared_ptr<grpc::Channel> channel,
                                                          auth::ServiceTokenSource* tokens,
                                                          absl::Duration deadline = absl::Seconds(3));

}  // namespace continuum::scheduling
