// continuum-messaging: configuration by flags / CONTINUUM_* environment (see --help).
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "common/redis/streams.h"
#include "common/server/runtime.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "services/messaging/messaging_service.h"
#include "spdlog/spdlog.h"

int main(int argc, char** argv) {
  using namespace continuum;
  scheduling::SchedulingClientConfig scheduling_config;
  ServiceDefinition def;
  def.name = "messaging";
  def.binary = "continuum-messaging";
  def.default_port = 7003;
  def.default_metrics_port = 9103;
  def.migrations = messaging::Migrations();
  def.read_config = [&](ConfigSource& c) {
    scheduling_config = scheduling::ReadSchedulingClientConfig(c);
  };
  std::unique_ptr<scheduling::SchedulingClient> scheduling;
  std::unique_ptr<messaging::PresenceStore> presence;
  std::unique_ptr<messaging::LiveHub> hub;
  std::unique_ptr<messaging::Messenger> messenger;
  std::unique_ptr<messaging::HeartbeatBatcher> heartbeats;
  std::vector<std::unique_ptr<redis::StreamConsumer>> consumers;
  def.build = [&](Runtime& rt)
      -> absl::StatusOr<std::vector<std::pair<std::shared_ptr<grpc::Service>, std::string>>> {
    auto connected = scheduling::ConnectScheduling(scheduling_config, rt.config, "continuum-messaging");
    if (!connected.ok()) return connected.status();
    scheduling = std::move(*connected);
    rt.periodic.push_back(scheduling::ReportSchedulingHealth(rt, *scheduling));
    rt.retention.push_back(messaging::store::ProcessedEventsRetention());
    presence = std::make_unique<messaging::PresenceStore>(*rt.redis, RealClock::Get());
    hub = std::make_unique<messaging::LiveHub>(rt.redis->options(), *rt.redis, rt.host->executor());
    outbox::Relay* relay = rt.relay.get();
    messenger = std::make_unique<messaging::Messenger>(*rt.db, RealClock::Get(), *scheduling, *presence, *rt.redis,
                                                       messaging::Messenger::Options{.on_commit = [relay] { relay->Notify(); }});
    // Events of the other services, through consumer groups (at-least-once; handled once).
    for (const std::string stream : {"continuum:events:scheduling", "continuum:events:records"}) {
      consumers.push_back(std::make_unique<redis::StreamConsumer>(
          rt.redis->options(),
          redis::StreamConsumer::Options{.stream = stream, .group = "messaging",
                                         .consumer = rt.instance_id},
          [m = messenger.get()](const redis::StreamEntry& e) -> absl::Status {
            events::v1::EventEnvelope ev;
            if (!ev.ParseFromString(e.Get("payload"))) {
              spdlog::error("undecodable event {} skipped", e.id);
              return absl::OkStatus();
            }
            return m->HandleEvent(ev);
          }));
      consumers.back()->Start();
    }
    hub->Start();
    heartbeats = std::make_unique<messaging::HeartbeatBatcher>(*messenger);
    heartbeats->Start();
    messaging::Messenger* m = messenger.get();
    rt.periodic.push_back({"messaging housekeeping", absl::Seconds(1), [m] { return m->Tick(); }});
    auto* live_streams = &prometheus::BuildGauge()
                              .Name("continuum_live_streams")
                              .Help("Subscribe streams open on this replica.")
                              .Register(rt.host->metrics())
                              .Add({});
    messaging::LiveHub* h = hub.get();
    rt.periodic.push_back({"live stream metrics", absl::Seconds(1), [h, live_streams] {
      live_streams->Set(static_cast<double>(h->open_streams()));
      return absl::OkStatus();
    }});
    rt.before_drain.push_back([&] { hub->Shutdown(); });
    rt.after_stop.push_back([&] {
      heartbeats->Stop();
      for (auto& c : consumers) c->Stop();
    });
    auto service = std::make_shared<messaging::MessagingServiceImpl>(*messenger, *hub, *heartbeats,
                                                                     *rt.authenticator, rt.host->executor());
    return std::vector<std::pair<std::shared_ptr<grpc::Service>, std::string>>{{service, messaging::kHealthName}};
  };
  return RunServiceMain(argc, argv, def);
}
