// TLS and mutual TLS from configured certificate files: certificates are made with the
// openssl command for each test run; a client without a certificate signed by the
// configured CA is refused.
#include <sys/wait.h>

#include "common/auth/grpc_auth.h"
#include "common/server/service_host.h"
#include "common/testing/echo.grpc.pb.h"
#include "common/testing/harness.h"
#include "gtest/gtest.h"

namespace continuum {
namespace {

using continuum::testing::v1::EchoRequest;
using continuum::testing::v1::EchoResponse;
using continuum::testing::v1::EchoService;

class EchoImpl final : public EchoService::CallbackService {
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* ctx, const EchoRequest* req,
                                 EchoResponse* resp) override {
    resp->set_message(req->message());
    auto* r = ctx->DefaultReactor();
    r->Finish(grpc::Status::OK);
    return r;
  }
};

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    // A CA, a server certificate for 127.0.0.1, a client certificate from the same CA, and a
    // client certificate from an unrelated CA.
    std::string script = R"(set -e
cd "$1"
mkca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj "/CN=$1" -keyout $1.key -out $1.crt 2>/dev/null; }
mkcert() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
  -keyout $1.key -out $1.csr 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > $1.ext
  openssl x509 -req -in $1.csr -CA $2.crt -CAkey $2.key -CAcreateserial -days 1 \
  -extfile $1.ext -out $1.crt 2>/dev/null; }
mkca ca; mkca rogue-ca
mkcert server ca; mkcert client ca; mkcert rogue-client rogue-ca
)";
    auto p = testing::Process::Start({"bash", "-c", script, "mkcerts", dir_->path()});
    ASSERT_TRUE(p.ok());
    auto rc = (*p)->Wait(absl::Seconds(60));
    ASSERT_TRUE(rc.ok() && WIFEXITED(*rc) && WEXITSTATUS(*rc) == 0) << "openssl failed";
  }
  static void TearDownTestSuite() { delete dir_; }

  void StartServer(bool require_client_cert) {
    ServerOptions o;
    o.tls = {dir_->File("server.crt"), dir_->File("server.key"), dir_->File("ca.crt"), require_client_cert};
    host_ = std::make_unique<ServiceHost>("tls-test", o);
    host_->AddService(&echo_, "continuum.testing.v1.EchoService");
    absl::Status s = host_->Start();
    ASSERT_TRUE(s.ok()) << s;
  }

  grpc::Status Call(std::shared_ptr<grpc::ChannelCredentials> creds) {
    auto stub = EchoService::NewStub(grpc::CreateChannel(host_->address(), creds));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    EchoRequest req;
    req.set_message("hi");
    EchoResponse resp;
    return stub->Echo(&ctx, req, &resp);
  }

  std::shared_ptr<grpc::ChannelCredentials> Creds(const std::string& client) {
    auth::TlsFiles files{client.empty() ? "" : dir_->File(client + ".crt"),
                         client.empty() ? "" : dir_->File(client + ".key"), dir_->File("ca.crt")};
    auto c = auth::MakeChannelCredentials(files);
    EXPECT_TRUE(c.ok());
    return *c;
  }

  static testing::TempDir* dir_;
  EchoImpl echo_;
  std::unique_ptr<ServiceHost> host_;
};

testing::TempDir* TlsTest::dir_ = nullptr;

TEST_F(TlsTest, MutualTlsAcceptsClientWithCertificateFromConfiguredCa) {
  StartServer(true);
  grpc::Status s = Call(Creds("client"));
  EXPECT_TRUE(s.ok()) << s.error_message();
}

TEST_F(TlsTest, MutualTlsRefusesClientWithoutCertificate) {
  StartServer(true);
  EXPECT_FALSE(Call(Creds("")).ok());
}

TEST_F(TlsTest, MutualTlsRefusesClientCertificateFromAnotherCa) {
  StartServer(true);
  EXPECT_FALSE(Call(Creds("rogue-client")).ok());
}

TEST_F(TlsTest, TlsServerRefusesPlaintextClient) {
  StartServer(false);
  EXPECT_FALSE(Call(grpc::InsecureChannelCredentials()).ok());
  EXPECT_TRUE(Call(Creds("")).ok()) << "server-only TLS must accept a client that trusts the CA";
}

TEST_F(TlsTest, MissingCertificateFileIsAClearError) {
  ServerOptions o;
  o.tls = {dir_->File("nope.crt"), dir_->File("nope.key"), "", false};
  ServiceHost host("tls-test", o);
  absl::Status s = host.Start();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("nope.crt"), absl::string_view::npos);
}

}  // namespace
}  // namespace continuum
