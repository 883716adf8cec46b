// The client other services use to call scheduling, against in-process fake scheduling
// servers: how it spreads calls over the replicas its address resolves to.
#include "services/scheduling/client/scheduling_client.h"

#include <atomic>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/server/runtime.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace continuum::scheduling {
namespace {

// A scheduling replica that answers GetClinic and counts the calls it got.
class CountingScheduling final : public sv1::SchedulingService::CallbackService {
 public:
  grpc::ServerUnaryReactor* GetClinic(grpc::CallbackServerContext* context, const sv1::GetClinicRequest* request,
                                      sv1::Clinic* response) override {
    calls++;
    response->set_name(request->name());
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  std::atomic<int> calls{0};
};

struct Replica {
  Replica() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
  }
  ~Replica() { server->Shutdown(); }
  CountingScheduling service;
  int port = 0;
  std::unique_ptr<grpc::Server> server;
};

std::unique_ptr<SchedulingClient> Connect(const std::string& address, const std::string& load_balancing) {
  SchedulingClientConfig config{.address = address, .deadline = absl::Seconds(5), .token_file = "",
                                .care_team_cache_ttl = absl::ZeroDuration(), .load_balancing = load_balancing};
  CommonConfig common;
  common.jwt.issuer = "continuum-test";
  common.jwt.audience = "continuum";
  common.jwt.hs256_secret = "continuum-test-secret-0123456789abcdef";
  auto client = ConnectScheduling(config, common, "test-service");
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? std::move(*client) : nullptr;
}

// Calls GetClinic until every replica has answered one, or `limit` calls; returns the calls made.
int CallUntilEveryReplicaAnswered(SchedulingClient& client, const std::vector<Replica*>& replicas, int limit) {
  int made = 0;
  auto all_answered = [&] {
    for (Replica* r : replicas) {
      if (r->service.calls.load() == 0) return false;
    }
    return true;
  };
  while (made < limit && !all_answered()) {
    auto clinic = client.GetClinic("c1");
    EXPECT_TRUE(clinic.ok()) << clinic.status();
    ++made;
  }
  return made;
}

TEST(SchedulingClientTest, RoundRobinSpreadsCallsOverEveryResolvedReplica) {
  Replica a, b;
  auto client = Connect(absl::StrCat("ipv4:127.0.0.1:", a.port, ",127.0.0.1:", b.port), "round_robin");
  ASSERT_NE(client, nullptr);
  CallUntilEveryReplicaAnswered(*client, {&a, &b}, 200);
  EXPECT_GT(a.service.calls.load(), 0);
  EXPECT_GT(b.service.calls.load(), 0);
  // Once both are connected, calls alternate between them.
  const int before_a = a.service.calls.load(), before_b = b.service.calls.load();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(client->GetClinic("c1").ok());
  EXPECT_GE(a.service.calls.load() - before_a, 5);
  EXPECT_GE(b.service.calls.load() - before_b, 5);
}

TEST(SchedulingClientTest, PickFirstKeepsEveryCallOnOneReplica) {
  Replica a, b;
  auto client = Connect(absl::StrCat("ipv4:127.0.0.1:", a.port, ",127.0.0.1:", b.port), "pick_first");
  ASSERT_NE(client, nullptr);
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(client->GetClinic("c1").ok());
  EXPECT_EQ(a.service.calls.load() + b.service.calls.load(), 50);
  EXPECT_TRUE(a.service.calls.load() == 0 || b.service.calls.load() == 0)
      << a.service.calls.load() << " and " << b.service.calls.load();
}

}  // namespace
}  // namespace continuum::scheduling
