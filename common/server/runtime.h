// What every Continuum binary does around its own service: read the common configuration
// (flags / CONTINUUM_* environment), open the database and apply migrations, connect Redis,
// run the outbox relay, authenticate callers, serve, and shut down gracefully on SIGTERM.
// A service's main() only supplies a ServiceDefinition.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/auth/grpc_auth.h"
#include "common/config/config_source.h"
#include "common/db/database.h"
#include "common/db/migrations.h"
#include "common/outbox/outbox.h"
#include "common/redis/client.h"
#include "common/server/service_host.h"

namespace continuum {

struct CommonConfig {
  ServerOptions server;
  std::string database_url;
  int database_pool = 4;
  std::string redis_address;
  auth::JwtOptions jwt;
  std::string log_level;
  std::string ready_file;
  // Housekeeping rows (sent outbox events, remembered request ids, processed event ids) older
  // than this are deleted; zero keeps them forever.
  absl::Duration retention = absl::Hours(24 * 7);
};

// Reads the options every service shares; problems are recorded in `source`.
CommonConfig ReadCommonConfig(ConfigSource& source, const std::string& service, int default_port,
                              int default_metrics_port);

// What a running service gets to build itself from.
struct Runtime {
  CommonConfig config;
  std::unique_ptr<db::Database> db;
  std::unique_ptr<redis::Client> redis;
  std::unique_ptr<outbox::Relay> relay;
  std::unique_ptr<auth::Authenticator> authenticator;
  std::unique_ptr<ServiceHost> host;
  // This process among all replicas: "<host>-<pid>-<random>". In a container the pid is
  // often 1 in every replica (and hosts can repeat with host networking), so the random part
  // keeps outbox lease owners and Redis consumer names distinct.
  std::string instance_id;

  // Background housekeeping (e.g. expiring offers), run every `interval` on one thread
  // until shutdown. Errors are logged; the task runs again at the next interval.
  struct Periodic {
    std::string name;
    absl::Duration interval;
    std::function<absl::Status()> run;
  };
  std::vector<Periodic> periodic;
  // Tables whose old rows are deleted every 10 s per config.retention (the outbox and the
  // idempotency table; a service adds its own).
  std::vector<db::RetentionRule> retention;
  // Run on SIGTERM before the server drains (e.g. end open streams so clients reconnect
  // elsewhere), and after it has stopped (e.g. stop event consumers), in order.
  std::vector<std::function<void()>> before_drain, after_stop;
};

struct ServiceDefinition {
  std::string name;                    // "scheduling"
  std::string binary;                  // "continuum-scheduling"
  int default_port = 0;
  int default_metrics_port = 0;
  std::vector<db::Migration> migrations;
  // Reads service-specific options (optional).
  std::function<void(ConfigSource&)> read_config;
  // Builds the gRPC services (kept alive until exit) and names them for health checks.
  std::function<absl::StatusOr<std::vector<std::pair<std::shared_ptr<grpc::Service>, std::string>>>(
      Runtime&)>
      build;
};

// The whole life of a service process. Returns the process exit code: 0 after a clean
// shutdown, 2 on bad configuration (one line on stderr), 1 when start-up fails.
int RunServiceMain(int argc, char** argv, const ServiceDefinition& definition);

}  // namespace continuum
