// The gRPC side of authentication: reads `authorization: Bearer <JWT>` from a call, and
// TLS / mutual-TLS credentials from configured certificate files.
#pragma once

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/auth/jwt.h"
#include "common/time/clock.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_context.h"

namespace continuum::auth {

// Verified tokens are cached (by their exact text, until they expire): parsing the JSON
// and checking the signature on every call cost a measurable share of a small RPC's CPU,
// and far more with RS256/ES256. A cached token is still refused once it expires.
class Authenticator {
 public:
  Authenticator(JwtVerifier verifier, Clock& clock)
      : verifier_(std::move(verifier)), clock_(clock), cache_(std::make_shared<Cache>()) {}
  // UNAUTHENTICATED when the header is missing, not "Bearer ...", or the token is invalid.
  absl::StatusOr<Principal> Authenticate(const grpc::ServerContextBase& context) const;
  absl::StatusOr<Principal> AuthenticateHeader(absl::string_view authorization) const;

 private:
  struct Cache {
    static constexpr size_t kMaxEntries = 10000;  // then cleared: bounded memory, simple
    absl::Mutex mu;
    absl::flat_hash_map<std::string, Principal> verified ABSL_GUARDED_BY(mu);
  };
  JwtVerifier verifier_;
  Clock& clock_;
  std::shared_ptr<Cache> cache_;
};

struct TlsFiles {
  std::string cert_file;  // PEM certificate chain (empty = plaintext)
  std::string key_file;   // PEM private key
  std::string ca_file;    // PEM CA bundle: verifies peers (clients for a server, servers for a client)
  bool require_client_cert = false;  // server side: mutual TLS
};

// Plaintext when no certificate is configured.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsFiles& tls);
// For calls to other services: TLS when ca_file is set, with a client certificate when
// cert_file/key_file are set (mutual TLS).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(const TlsFiles& tls);

absl::StatusOr<std::string> ReadFile(const std::string& path);

// This service's own credentials for calls to other Continuum services (role "service",
// clinics "*"): read from a file when one is configured (production: a mounted secret,
// re-read so rotation is picked up), otherwise minted with the HS256 secret (local runs).
class ServiceTokenSource {
 public:
  ServiceTokenSource(std::string subject, JwtOptions jwt, std::string token_file, Clock& clock)
      : subject_(std::move(subject)), jwt_(std::move(jwt)), token_file_(std::move(token_file)), clock_(clock) {}
  absl::StatusOr<std::string> Token();

 private:
  std::string subject_;
  JwtOptions jwt_;
  std::string token_file_;
  Clock& clock_;
  absl::Mutex mu_;
  std::string cached_ ABSL_GUARDED_BY(mu_);
  absl::Time expires_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace continuum::auth
