// continuum-session-record: configuration by flags / CONTINUUM_* environment (see --help).
#include "common/server/runtime.h"
#include "services/session_record/session_record_service.h"

int main(int argc, char** argv) {
  using namespace continuum;
  ServiceDefinition def;
  def.name = "session_record";
  def.binary = "continuum-session-record";
  def.default_port = 7002;
  def.default_metrics_port = 9102;
  def.migrations = session_record::Migrations();
  def.build = [](Runtime& rt)
      -> absl::StatusOr<std::vector<std::pair<std::shared_ptr<grpc::Service>, std::string>>> {
    auto service = std::make_shared<session_record::SessionRecordServiceImpl>(*rt.authenticator, rt.host->executor());
    return std::vector<std::pair<std::shared_ptr<grpc::Service>, std::string>>{
        {service, session_record::kHealthName}};
  };
  return RunServiceMain(argc, argv, def);
}
