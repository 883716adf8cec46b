// continuum-scheduling: configuration by flags / CONTINUUM_* environment (see --help).
#include "common/redis/subscriber.h"
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
  scheduling::AppointmentCache::Options cache_options;
  def.read_config = [&](ConfigSource& c) {
    cache_options.ttl = c.Duration(
        "appointment-cache-ttl", absl::Seconds(2),
        "longest an appointment read stays cached for GetAppointment (changes on any replica drop it within "
        "milliseconds; this bounds staleness if a change notice is lost); 0s turns the cache off");
    cache_options.max_entries = static_cast<size_t>(
        c.Int("appointment-cache-entries", 100000, "most appointments the GetAppointment cache holds", 1, 10000000));
    if (cache_options.ttl < absl::ZeroDuration()) c.AddError("--appointment-cache-ttl must not be negative");
  };
  // Owned here, alive until main returns (after the server has stopped).
  std::unique_ptr<scheduling::AppointmentCache> cache;
  std::unique_ptr<redis::Subscriber> changes;
  std::unique_ptr<scheduling::Scheduler> scheduler;
  def.build = [&](Runtime& rt)
      -> absl::StatusOr<std::vector<std::pair<std::shared_ptr<grpc::Service>, std::string>>> {
    cache_options.metrics = &rt.host->metrics();
    cache = std::make_unique<scheduling::AppointmentCache>(RealClock::Get(), cache_options);
    if (cache->enabled()) {
      // Every replica's appointment changes arrive here (appointment_cache.h): the cache
      // serves only while this subscription is confirmed.
      scheduling::AppointmentCache* c = cache.get();
      changes = std::make_unique<redis::Subscriber>(
          rt.redis->options(), [c](const std::string&, const std::string& payload) { c->InvalidateFromNotice(payload); },
          nullptr,
          [c](const std::string& channel) {
            if (channel == scheduling::kAppointmentChangesChannel) c->Resume();
          },
          [c] { c->Suspend(); });
      changes->Subscribe(scheduling::kAppointmentChangesChannel);
      changes->Start();
      rt.after_stop.push_back([&] { changes->Stop(); });
    }
    outbox::Relay* relay = rt.relay.get();
    scheduler = std::make_unique<scheduling::Scheduler>(
        *rt.db, RealClock::Get(),
        scheduling::Scheduler::Options{.on_commit = [relay] { relay->Notify(); },
                                       .appointment_cache = cache->enabled() ? cache.get() : nullptr});
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
