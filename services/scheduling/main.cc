// continuum-scheduling: configuration by flags / CONTINUUM_* environment (see --help).
#include "common/server/runtime.h"
#include "services/scheduling/scheduling_service.h"

int main(int argc, char** argv) {
  using namespace continuum;
  ServiceDefinition def;
  def.name = "scheduling";
  def.binary = "continuum-scheduling";
  def.default_port = 7001;
  def.default_metrics_port = 9101;
  def.migrations = scheduling::Migrations();
  def.build = [](Runtime& rt)
      -> absl::StatusOr<std::vector<std::pair<std::shared_ptr<grpc::Service>, std::string>>> {
    outbox::Relay* relay = rt.relay.get();
    // Owned by the service object's lifetime: both live until main returns.
    static std::unique_ptr<scheduling::Scheduler> scheduler;
    scheduler = std::make_unique<scheduling::Scheduler>(
        *rt.db, RealClock::Get(), scheduling::Scheduler::Options{.on_commit = [relay] { relay->Notify(); }});
    scheduling::Scheduler* domain = scheduler.get();
    rt.periodic.push_back({"waitlist expiry", absl::Seconds(30), [domain] {
                             return domain->ExpireWaitlistOffers().status();
                           }});
    auto service = std::make_shared<scheduling::SchedulingServiceImpl>(*scheduler, *rt.authenticator,
                                                                       rt.host->executor());
    return std::vector<std::pair<std::shared_ptr<grpc::Service>, std::string>>{{service, scheduling::kHealthName}};
  };
  return RunServiceMain(argc, argv, def);
}
