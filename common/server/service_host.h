// One way to run a Continuum service: gRPC callback server with grpc.health.v1 (one status
// per service name), server reflection, Prometheus metrics over HTTP (requests by method and
// code, latency histogram), a bounded executor for blocking work, and graceful shutdown:
// SIGTERM/SIGINT -> every health status NOT_SERVING -> in-flight calls drain up to the
// deadline -> the remaining ones are cancelled -> exit.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/auth/grpc_auth.h"
#include "common/server/executor.h"
#include "common/status/errors.h"
#include "grpcpp/grpcpp.h"

namespace prometheus {
class Registry;
class Exposer;
}  // namespace prometheus

namespace continuum {

struct ServerOptions {
  std::string listen_address = "127.0.0.1:0";  // host:port; port 0 = any free port
  std::string metrics_address;                 // host:port for /metrics; empty = off
  absl::Duration drain_deadline = absl::Seconds(10);
  int executor_threads = 8;
  int executor_queue = 10000;
  auth::TlsFiles tls;
};

class ServiceHost {
 public:
  ServiceHost(std::string name, ServerOptions options);
  ~ServiceHost();

  // `health_name` is the fully-qualified service name reported by grpc.health.v1.
  void AddService(grpc::Service* service, const std::string& health_name);

  absl::Status Start();
  int port() const { return port_; }
  std::string address() const;
  int metrics_port() const;

  // Per-service health (the overall "" status follows: SERVING only if all services are).
  // A name not added with AddService is a component (e.g. "continuum.redis"): reported on
  // its own, without changing the overall status, unless `gates_server` (e.g.
  // "continuum.database": nothing works without it), which makes it count like a service.
  void SetServing(const std::string& health_name, bool serving, bool gates_server = false);

  // Stops accepting calls, reports NOT_SERVING, waits for in-flight calls up to the drain
  // deadline, cancels the rest, then stops the executor. Idempotent.
  void Shutdown();
  void Wait();

  BoundedExecutor& executor() { return *executor_; }
  prometheus::Registry& metrics();
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  ServerOptions options_;
  std::vector<std::pair<grpc::Service*, std::string>> services_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<BoundedExecutor> executor_;
  absl::Mutex mu_;
  std::map<std::string, bool> serving_ ABSL_GUARDED_BY(mu_);  // what the overall status needs
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  int port_ = 0;
};

// Runs `fn` on the host's executor and finishes the unary reactor with its status.
// The handler never blocks a gRPC thread; a full queue answers RESOURCE_EXHAUSTED.
grpc::ServerUnaryReactor* RunBlocking(grpc::CallbackServerContext* context, BoundedExecutor& executor,
                                      std::function<absl::Status()> fn);

// Blocks SIGTERM/SIGINT in the calling thread (call first thing in main, before any thread
// starts, so every thread inherits the mask), then later waits for one of them.
void BlockTerminationSignals();
int WaitForTerminationSignal();

// Writes "grpc=<host:port>\nmetrics=<port>\n" atomically to `path` (tests and scripts read it
// to find a server started on port 0). No-op for an empty path.
absl::Status WriteReadyFile(const std::string& path, const ServiceHost& host);

}  // namespace continuum
