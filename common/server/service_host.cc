#include "common/server/service_host.h"

#include <signal.h>

#include <atomic>
#include <cstdio>
#include <fstream>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/support/server_interceptor.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "spdlog/spdlog.h"

namespace continuum {
namespace {

using grpc::experimental::InterceptionHookPoints;

const char* CodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {
      "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
      "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
      "UNAUTHENTICATED"};
  int i = static_cast<int>(code);
  return i >= 0 && i <= 16 ? kNames[i] : "UNKNOWN";
}

struct RpcMetrics {
  prometheus::Family<prometheus::Counter>* handled;
  prometheus::Family<prometheus::Histogram>* latency;
};

// One method's counters (one per status code, made on first use) and latency histogram.
// Resolved once per method, not per call: Family::Add builds and hashes a label map under the
// family's mutex, which per call cost about 5% of a cached GetAppointment.
class MethodMetrics {
 public:
  MethodMetrics(const RpcMetrics& families, absl::string_view full_method) : families_(families) {
    std::vector<std::string> parts = absl::StrSplit(full_method, '/', absl::SkipEmpty());
    service_ = parts.size() > 0 ? parts[0] : "unknown";
    method_ = parts.size() > 1 ? parts[1] : "unknown";
    latency_ = &families_.latency->Add(
        {{"grpc_service", service_}, {"grpc_method", method_}},
        prometheus::Histogram::BucketBoundaries{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                0.25, 0.5, 1, 2.5, 5, 10});
  }

  void Observe(grpc::StatusCode code, absl::Duration elapsed) {
    int i = static_cast<int>(code);
    if (i < 0 || i >= kCodes) i = static_cast<int>(grpc::StatusCode::UNKNOWN);
    prometheus::Counter* handled = handled_[i].load(std::memory_order_acquire);
    if (handled == nullptr) {
      // Two first calls may race here: Add returns the same counter for the same labels.
      handled = &families_.handled->Add(
          {{"grpc_service", service_}, {"grpc_method", method_}, {"grpc_code", CodeName(code)}});
      handled_[i].store(handled, std::memory_order_release);
    }
    handled->Increment();
    latency_->Observe(absl::ToDoubleSeconds(elapsed));
  }

 private:
  static constexpr int kCodes = 17;
  RpcMetrics families_;
  std::string service_, method_;
  prometheus::Histogram* latency_;
  std::atomic<prometheus::Counter*> handled_[kCodes] = {};
};

// Counts every call by service, method and status code and observes its latency.
class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit MetricsInterceptor(MethodMetrics* metrics) : metrics_(metrics), start_(absl::Now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      metrics_->Observe(methods->GetSendStatus().error_code(), absl::Now() - start_);
    }
    methods->Proceed();
  }

 private:
  MethodMetrics* metrics_;
  absl::Time start_;
};

class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(RpcMetrics families) : families_(families) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    absl::string_view method = info->method() == nullptr ? "" : info->method();
    absl::MutexLock lock(&mu_);
    if (by_method_.size() >= kMaxMethods && !by_method_.contains(method)) method = "";
    auto& metrics = by_method_[method];
    if (!metrics) metrics = std::make_unique<MethodMetrics>(families_, method);
    return new MetricsInterceptor(metrics.get());
  }

 private:
  // Registered methods are far fewer; the bound only matters if gRPC ever passed a caller's
  // unregistered method name through (those are then counted as "unknown").
  static constexpr size_t kMaxMethods = 512;
  RpcMetrics families_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<MethodMetrics>> by_method_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

ServiceHost::ServiceHost(std::string name, ServerOptions options)
    : name_(std::move(name)), options_(std::move(options)),
      registry_(std::make_shared<prometheus::Registry>()),
      executor_(std::make_unique<BoundedExecutor>(options_.executor_threads, options_.executor_queue)) {}

ServiceHost::~ServiceHost() { Shutdown(); }

prometheus::Registry& ServiceHost::metrics() { return *registry_; }

void ServiceHost::AddService(grpc::Service* service, const std::string& health_name) {
  services_.emplace_back(service, health_name);
  absl::MutexLock lock(&mu_);
  serving_[health_name] = true;
}

absl::Status ServiceHost::Start() {
  auto creds = auth::MakeServerCredentials(options_.tls);
  if (!creds.ok()) return creds.status();

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen_address, *creds, &port_);
  for (auto& [service, health_name] : services_) builder.RegisterService(service);

  RpcMetrics rpc_metrics{
      &prometheus::BuildCounter()
           .Name("grpc_server_handled_total")
           .Help("RPCs completed on the server, by service, method and status code.")
           .Register(*registry_),
      &prometheus::BuildHistogram()
           .Name("grpc_server_handling_seconds")
           .Help("Latency of RPCs handled by the server.")
           .Register(*registry_)};
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<MetricsInterceptorFactory>(rpc_metrics));
  builder.experimental().SetInterceptorCreators(std::move(factories));

  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.listen_address,
                                               " (address in use or not local?)"));
  }
  {
    absl::MutexLock lock(&mu_);
    auto* health = server_->GetHealthCheckService();
    bool all = true;
    for (const auto& [svc, serving] : serving_) {
      health->SetServingStatus(svc, serving);
      all = all && serving;
    }
    health->SetServingStatus("", all);
  }
  if (!options_.metrics_address.empty()) {
    try {
      exposer_ = std::make_unique<prometheus::Exposer>(options_.metrics_address);
      exposer_->RegisterCollectable(registry_);
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on ", options_.metrics_address, ": ", e.what()));
    }
  }
  spdlog::info("{} listening on {} (metrics on port {})", name_, address(), metrics_port());
  return absl::OkStatus();
}

std::string ServiceHost::address() const {
  std::string host = options_.listen_address.substr(0, options_.listen_address.rfind(':'));
  return absl::StrCat(host, ":", port_);
}

int ServiceHost::metrics_port() const {
  if (!exposer_) return 0;
  auto ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports[0];
}

void ServiceHost::SetServing(const std::string& health_name, bool serving, bool gates_server) {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return;
  bool gates = gates_server || serving_.count(health_name) > 0;
  if (gates) serving_[health_name] = serving;
  if (!server_) return;
  auto* health = server_->GetHealthCheckService();
  health->SetServingStatus(health_name, serving);
  if (!gates) return;  // a component (e.g. "continuum.redis") does not gate the whole server
  bool all = true;
  for (const auto& [svc, s] : serving_) all = all && s;
  health->SetServingStatus("", all);
}

void ServiceHost::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  if (server_) {
    spdlog::info("{}: shutting down, draining in-flight calls for up to {}", name_,
                 absl::FormatDuration(options_.drain_deadline));
    server_->GetHealthCheckService()->Shutdown();  // every status -> NOT_SERVING
    server_->Shutdown(absl::ToChronoTime(absl::Now() + options_.drain_deadline));
  }
  executor_->Shutdown();
  exposer_.reset();
  spdlog::info("{}: stopped", name_);
}

void ServiceHost::Wait() {
  if (server_) server_->Wait();
}

grpc::ServerUnaryReactor* RunBlocking(grpc::CallbackServerContext* context, BoundedExecutor& executor,
                                      std::function<absl::Status()> fn) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  bool queued = executor.Submit([reactor, context, fn = std::move(fn)] {
    if (context->IsCancelled()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "call cancelled before it ran"));
      return;
    }
    reactor->Finish(ToGrpcStatus(fn()));
  });
  if (!queued) {
    reactor->Finish(ToGrpcStatus(MakeError(absl::StatusCode::kResourceExhausted, "OVERLOADED",
                                           "server is overloaded or shutting down; retry with back-off")));
  }
  return reactor;
}

void BlockTerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForTerminationSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

absl::Status WriteReadyFile(const std::string& path, const ServiceHost& host) {
  if (path.empty()) return absl::OkStatus();
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << "grpc=" << host.address() << "\nmetrics=" << host.metrics_port() << "\n";
    if (!out) return absl::UnavailableError("cannot write ready file " + path);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError("cannot rename ready file to " + path);
  }
  return absl::OkStatus();
}

}  // namespace continuum
