// continuum-session-record: configuration by flags / CONTINUUM_* environment (see --help).
#include "common/server/runtime.h"
#include "services/scheduling/client/scheduling_client.h"
#include "services/session_record/audit.h"
#include "services/session_record/session_record_service.h"

int main(int argc, char** argv) {
  using namespace continuum;
  scheduling::SchedulingClientConfig scheduling_config;
  ServiceDefinition def;
  def.name = "session_record";
  def.binary = "continuum-session-record";
  def.default_port = 7002;
  def.default_metrics_port = 9102;
  def.migrations = session_record::Migrations();
  def.read_config = [&](ConfigSource& c) {
    scheduling_config = scheduling::ReadSchedulingClientConfig(c);
  };
  // Kept alive until main returns (the server is shut down before they go).
  std::unique_ptr<scheduling::SchedulingClient> scheduling;
  std::unique_ptr<records::RecordKeeper> keeper;
  std::unique_ptr<records::AuditChainer> chainer;
  def.build = [&](Runtime& rt)
      -> absl::StatusOr<std::vector<std::pair<std::shared_ptr<grpc::Service>, std::string>>> {
    auto connected = scheduling::ConnectScheduling(scheduling_config, rt.config, "continuum-session-record");
    if (!connected.ok()) return connected.status();
    scheduling = std::move(*connected);
    rt.periodic.push_back(scheduling::ReportSchedulingHealth(rt, *scheduling));
    outbox::Relay* relay = rt.relay.get();
    keeper = std::make_unique<records::RecordKeeper>(
        *rt.db, RealClock::Get(), *scheduling, records::RecordKeeper::Options{.on_commit = [relay] { relay->Notify(); }});
    // Keeps the audit chain current (entries are appended pending; see records::AppendAudit).
    // Stopped after the server, while the database is still open.
    chainer = std::make_unique<records::AuditChainer>(*rt.db, absl::Milliseconds(100));
    chainer->Start();
    rt.after_stop.push_back([&chainer] { chainer->Stop(); });
    auto service = std::make_shared<session_record::SessionRecordServiceImpl>(*keeper, *rt.authenticator,
                                                                              rt.host->executor());
    return std::vector<std::pair<std::shared_ptr<grpc::Service>, std::string>>{{service, session_record::kHealthName}};
  };
  return RunServiceMain(argc, argv, def);
}
