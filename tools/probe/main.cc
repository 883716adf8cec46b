// continuum-probe: checks a running server from the outside, as an operator or a test would.
//   continuum-probe ADDRESS health [SERVICE]   exit 0 when SERVING, prints the status
//   continuum-probe ADDRESS list-services      the services listed by server reflection
// Options (before ADDRESS): --timeout=5s, --ca=FILE --cert=FILE --key=FILE for (m)TLS.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int Usage() {
  std::fprintf(stderr,
               "usage: continuum-probe [--timeout=5s] [--ca=F --cert=F --key=F] ADDRESS "
               "health [SERVICE] | list-services\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  absl::Duration timeout = absl::Seconds(5);
  std::string ca, cert, key;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (absl::StartsWith(a, "--timeout=")) {
      if (!absl::ParseDuration(a.substr(10), &timeout)) return Usage();
    } else if (absl::StartsWith(a, "--ca=")) {
      ca = a.substr(5);
    } else if (absl::StartsWith(a, "--cert=")) {
      cert = a.substr(7);
    } else if (absl::StartsWith(a, "--key=")) {
      key = a.substr(6);
    } else {
      args.push_back(a);
    }
  }
  if (args.size() < 2) return Usage();
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!ca.empty()) {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = Slurp(ca);
    if (!cert.empty()) {
      o.pem_cert_chain = Slurp(cert);
      o.pem_private_key = Slurp(key);
    }
    creds = grpc::SslCredentials(o);
  }
  auto channel = grpc::CreateChannel(args[0], creds);
  auto deadline = absl::ToChronoTime(absl::Now() + timeout);

  if (args[1] == "health") {
    auto stub = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline);
    grpc::health::v1::HealthCheckRequest req;
    if (args.size() > 2) req.set_service(args[2]);
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status s = stub->Check(&ctx, req, &resp);
    if (!s.ok()) {
      std::printf("ERROR %d %s\n", s.error_code(), s.error_message().c_str());
      return 1;
    }
    std::printf("%s\n", grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status()).c_str());
    return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
  }
  if (args[1] == "list-services") {
    auto stub = grpc::reflection::v1alpha::ServerReflection::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline);
    auto stream = stub->ServerReflectionInfo(&ctx);
    grpc::reflection::v1alpha::ServerReflectionRequest req;
    req.set_list_services("*");
    grpc::reflection::v1alpha::ServerReflectionResponse resp;
    if (!stream->Write(req) || !stream->Read(&resp)) {
      std::printf("ERROR reflection stream failed\n");
      return 1;
    }
    stream->WritesDone();
    for (const auto& svc : resp.list_services_response().service()) std::printf("%s\n", svc.name().c_str());
    grpc::Status s = stream->Finish();
    return s.ok() ? 0 : 1;
  }
  return Usage();
}
