#include "common/server/service_host.h"

#include <thread>

#include "absl/synchronization/notification.h"
#include "common/testing/echo.grpc.pb.h"
#include "common/testing/harness.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace continuum {
namespace {

using continuum::testing::v1::EchoRequest;
using continuum::testing::v1::EchoResponse;
using continuum::testing::v1::EchoService;

// Echo whose calls block until the test releases them (to have a call in flight).
class GatedEcho final : public EchoService::CallbackService {
 public:
  explicit GatedEcho(BoundedExecutor* ex) : ex_(ex) {}
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* ctx, const EchoRequest* req,
                                 EchoResponse* resp) override {
    return RunBlocking(ctx, *ex_, [this, req, resp] {
      if (!entered_.HasBeenNotified()) entered_.Notify();  // calls run one at a time here
      release_.WaitForNotification();
      resp->set_message(req->message());
      return absl::OkStatus();
    });
  }
  absl::Notification entered_, release_;

 private:
  BoundedExecutor* ex_;
};

std::unique_ptr<EchoService::Stub> Stub(const std::string& addr) {
  return EchoService::NewStub(grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));
}

TEST(ServiceHostTest, ShutdownCompletesInFlightCallAndRefusesNewOnes) {
  ServiceHost host("test", {.listen_address = "127.0.0.1:0", .drain_deadline = absl::Seconds(20)});
  GatedEcho echo(&host.executor());
  host.AddService(&echo, "continuum.testing.v1.EchoService");
  ASSERT_TRUE(host.Start().ok());
  auto stub = Stub(host.address());

  grpc::Status in_flight_status;
  EchoResponse in_flight_resp;
  std::thread caller([&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    EchoRequest req;
    req.set_message("in flight");
    in_flight_status = stub->Echo(&ctx, req, &in_flight_resp);
  });
  echo.entered_.WaitForNotification();

  std::thread stopper([&] { host.Shutdown(); });
  // New calls are refused once shutdown has begun (and the in-flight one is still held).
  grpc::Status refused;
  for (int i = 0; i < 200; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    EchoRequest req;
    EchoResponse resp;
    auto fresh = Stub(host.address());  // a new connection, as a new client would
    refused = fresh->Echo(&ctx, req, &resp);
    if (!refused.ok()) break;
  }
  EXPECT_FALSE(refused.ok()) << "a new call was accepted during shutdown";
  echo.release_.Notify();
  caller.join();
  stopper.join();
  EXPECT_TRUE(in_flight_status.ok()) << in_flight_status.error_message();
  EXPECT_EQ(in_flight_resp.message(), "in flight");
}

TEST(ServiceHostTest, ShutdownCancelsCallsThatOutliveTheDrainDeadline) {
  ServiceHost host("test", {.listen_address = "127.0.0.1:0", .drain_deadline = absl::Milliseconds(200)});
  GatedEcho echo(&host.executor());
  host.AddService(&echo, "continuum.testing.v1.EchoService");
  ASSERT_TRUE(host.Start().ok());
  auto stub = Stub(host.address());
  grpc::Status status;
  std::thread caller([&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    EchoRequest req;
    EchoResponse resp;
    status = stub->Echo(&ctx, req, &resp);
  });
  echo.entered_.WaitForNotification();
  std::thread stopper([&] { host.Shutdown(); });
  caller.join();  // returns once the server cancels the call at the deadline
  echo.release_.Notify();
  stopper.join();
  EXPECT_FALSE(status.ok());
}

TEST(ServiceHostTest, HealthReportsPerServiceAndComponentStatus) {
  ServiceHost host("test", {.listen_address = "127.0.0.1:0"});
  GatedEcho echo(&host.executor());
  host.AddService(&echo, "continuum.testing.v1.EchoService");
  ASSERT_TRUE(host.Start().ok());
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(host.address(), grpc::InsecureChannelCredentials()));
  auto check = [&](const std::string& service) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status s = health->Check(&ctx, req, &resp);
    return s.ok() ? resp.status() : grpc::health::v1::HealthCheckResponse::SERVICE_UNKNOWN;
  };
  using R = grpc::health::v1::HealthCheckResponse;
  EXPECT_EQ(check(""), R::SERVING);
  EXPECT_EQ(check("continuum.testing.v1.EchoService"), R::SERVING);
  host.SetServing("continuum.redis", false);
  EXPECT_EQ(check("continuum.redis"), R::NOT_SERVING);
  EXPECT_EQ(check(""), R::SERVING) << "a component must not take the server out of rotation";
  host.SetServing("continuum.testing.v1.EchoService", false);
  EXPECT_EQ(check(""), R::NOT_SERVING);
  echo.release_.Notify();
}

TEST(ServiceHostTest, OverloadedExecutorAnswersResourceExhausted) {
  ServiceHost host("test", {.listen_address = "127.0.0.1:0", .executor_threads = 1, .executor_queue = 1});
  GatedEcho echo(&host.executor());
  host.AddService(&echo, "continuum.testing.v1.EchoService");
  ASSERT_TRUE(host.Start().ok());
  auto stub = Stub(host.address());
  std::vector<grpc::Status> results(3);
  std::vector<std::thread> callers;
  // First call occupies the worker; then one queues; the third must be refused.
  auto call = [&](int i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    EchoRequest req;
    EchoResponse resp;
    results[i] = stub->Echo(&ctx, req, &resp);
  };
  callers.emplace_back(call, 0);
  echo.entered_.WaitForNotification();
  callers.emplace_back(call, 1);
  ASSERT_TRUE(testing::WaitUntil([&] { return host.executor().queued() == 1; }, absl::Seconds(10)));
  call(2);
  EXPECT_EQ(results[2].error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  echo.release_.Notify();
  for (auto& t : callers) t.join();
  EXPECT_TRUE(results[0].ok());
  EXPECT_TRUE(results[1].ok());
}

}  // namespace
}  // namespace continuum
