// continuum-messaging: configuration by flags / CONTINUUM_* environment (see --help).
#include "common/server/runtime.h"
#include "services/messaging/messaging_service.h"

int main(int argc, char** argv) {
  using namespace continuum;
  ServiceDefinition def;
  def.name = "messaging";
  def.binary = "continuum-messaging";
  def.default_port = 7003;
  def.default_metrics_port = 9103;
  def.migrations = messaging::Migrations();
  def.build = [](Runtime& rt)
      -> absl::StatusOr<std::vector<std::pair<std::shared_ptr<grpc::Service>, std::string>>> {
    auto service = std::make_shared<messaging::MessagingServiceImpl>(*rt.authenticator, rt.host->executor());
    return std::vector<std::pair<std::shared_ptr<grpc::Service>, std::string>>{
        {service, messaging::kHealthName}};
  };
  return RunServiceMain(argc, argv, def);
}
