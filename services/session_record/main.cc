// continuum-session-record: configuration by flags / CONTINUUM_* environment (see --help).
#include "common/server/runtime.h"
#include "services/scheduling/client/scheduling_client.h"
#include "services/session_record/session_record_service.h"

int main(int argc, char** argv) {
  using namespace continuum;
  std::string scheduling_address, service_token_file;
  absl::Duration scheduling_deadline;
  ServiceDefinition def;
  def.name = "session_record";
  def.binary = "continuum-session-record";
  def.default_port = 7002;
  def.default_metrics_port = 9102;
  def.migrations = session_record::Migrations();
  def.read_config = [&](ConfigSource& c) {
    scheduling_address = c.String("scheduling-address", "127.0.0.1:7001", "scheduling service host:port");
    scheduling_deadline = c.Duration("scheduling-deadline", absl::Seconds(3), "deadline of each call to scheduling");
    service_token_file = c.String("service-token-file", "",
                                  "this service's token for calling scheduling; empty = mint one with the HS256 secret");
  };
  // Kept alive until main returns (the server is shut down before they go).
  std::unique_ptr<auth::ServiceTokenSource> tokens;
  std::unique_ptr<scheduling::SchedulingClient> scheduling;
  std::unique_ptr<records::RecordKeeper> keeper;
  def.build = [&](Runtime& rt)
      -> absl::StatusOr<std::vector<std::pair<std::shared_ptr<grpc::Service>, std::string>>> {
    tokens = std::make_unique<auth::ServiceTokenSource>("continuum-session-record", rt.config.jwt,
                                                        service_token_file, RealClock::Get());
    auto creds = auth::MakeChannelCredentials(rt.config.server.tls);
    if (!creds.ok()) return creds.status();
    scheduling = scheduling::NewGrpcSchedulingClient(grpc::CreateChannel(scheduling_address, *creds), tokens.get(),
                                                  scheduling_deadline);
    outbox::Relay* relay = rt.relay.get();
    keeper = std::make_unique<records::RecordKeeper>(
        *rt.db, RealClock::Get(), *scheduling, records::RecordKeeper::Options{.on_commit = [relay] { relay->Notify(); }});
    auto service = std::make_shared<session_record::SessionRecordServiceImpl>(*keeper, *rt.authenticator,
                                                                              rt.host->executor());
    return std::vector<std::pair<std::shared_ptr<grpc::Service>, std::string>>{{service, session_record::kHealthName}};
  };
  return RunServiceMain(argc, argv, def);
}
