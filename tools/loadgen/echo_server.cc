// continuum-echo-server: the ceiling for a unary call. The test Echo service on our own
// ServiceHost (so exactly the services' ServerBuilder options: callback API, health,
// reflection, metrics interceptor) with no authentication, no database and no executor hop:
// the reply is finished on the gRPC callback thread.
//
//   continuum-echo-server [--listen-address=127.0.0.1:0] [--ready-file=F]
// Prints "grpc=HOST:PORT" once serving (and writes the ready file, as the services do); exits
// on SIGTERM/SIGINT.
#include <cstdio>

#include "absl/synchronization/mutex.h"
#include "common/config/config_source.h"
#include "common/server/service_host.h"
#include "common/testing/echo.grpc.pb.h"

namespace continuum {
namespace {

class EchoImpl final : public testing::v1::EchoService::CallbackService {
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context, const testing::v1::EchoRequest* request,
                                 testing::v1::EchoResponse* response) override {
    response->set_message(request->message());
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

}  // namespace
}  // namespace continuum

int main(int argc, char** argv) {
  using namespace continuum;
  BlockTerminationSignals();  // before any thread starts
  // As the services do (RunServiceMain): Debian's Abseil would check every Mutex acquisition,
  // gRPC's own included, for lock-order cycles, and the baseline would pay a cost the
  // services do not.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  ConfigSource c = ConfigSource::FromMain(argc, argv);
  ServerOptions options;
  options.listen_address = c.String("listen-address", "127.0.0.1:0", "host:port (port 0 = any free port)");
  options.executor_threads = 1;  // unused: Echo never blocks
  std::string ready_file = c.String("ready-file", "", "write grpc=HOST:PORT here once serving");
  if (c.help_requested()) {
    std::fputs(c.Usage("continuum-echo-server").c_str(), stdout);
    return 0;
  }
  if (auto s = c.Finish(); !s.ok()) {
    std::fprintf(stderr, "continuum-echo-server: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  EchoImpl echo;
  ServiceHost host("continuum-echo-server", options);
  host.AddService(&echo, "continuum.testing.v1.EchoService");
  if (auto s = host.Start(); !s.ok()) {
    std::fprintf(stderr, "continuum-echo-server: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("grpc=%s\n", host.address().c_str());
  std::fflush(stdout);
  if (auto s = WriteReadyFile(ready_file, host); !s.ok()) std::fprintf(stderr, "%s\n", s.ToString().c_str());
  WaitForTerminationSignal();
  host.Shutdown();
  return 0;
}
