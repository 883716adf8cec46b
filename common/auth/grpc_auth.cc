#include "common/auth/grpc_auth.h"

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status/errors.h"
#include "common/status/macros.h"

namespace continuum::auth {

absl::StatusOr<Principal> Authenticator::AuthenticateHeader(absl::string_view authorization) const {
  if (authorization.empty()) {
    return MakeError(absl::StatusCode::kUnauthenticated, "UNAUTHENTICATED",
                     "missing 'authorization: Bearer <token>' metadata");
  }
  if (!absl::StartsWithIgnoreCase(authorization, "bearer ")) {
    return MakeError(absl::StatusCode::kUnauthenticated, "UNAUTHENTICATED",
                     "authorization metadata must be 'Bearer <token>'");
  }
  absl::string_view token = authorization.substr(7);
  absl::Time now = clock_.Now();
  {
    absl::MutexLock lock(&cache_->mu);
    auto it = cache_->verified.find(token);
    if (it != cache_->verified.end()) {
      if (now >= it->second.valid_from && now <= it->second.valid_until) return it->second;
      cache_->verified.erase(it);  // expired: Verify below says why
    }
  }
  absl::StatusOr<Principal> p = verifier_.Verify(token, now);
  if (p.ok()) {
    absl::MutexLock lock(&cache_->mu);
    if (cache_->verified.size() >= Cache::kMaxEntries) cache_->verified.clear();
    cache_->verified.emplace(std::string(token), *p);
  }
  return p;
}

absl::StatusOr<Principal> Authenticator::Authenticate(const grpc::ServerContextBase& context) const {
  const auto& md = context.client_metadata();
  auto it = md.find("authorization");
  absl::string_view header = it == md.end() ? absl::string_view()
                                           : absl::string_view(it->second.data(), it->second.size());
  return AuthenticateHeader(header);
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read file '", path, "'"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsFiles& tls) {
  if (tls.cert_file.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options(
      tls.require_client_cert ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                              : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  ASSIGN_OR_RETURN(std::string cert, ReadFile(tls.cert_file));
  ASSIGN_OR_RETURN(std::string key, ReadFile(tls.key_file));
  options.pem_key_cert_pairs.push_back({key, cert});
  if (!tls.ca_file.empty()) {
    ASSIGN_OR_RETURN(options.pem_root_certs, ReadFile(tls.ca_file));
  } else if (tls.require_client_cert) {
    return absl::InvalidArgumentError("mutual TLS needs a CA file to verify client certificates");
  }
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(const TlsFiles& tls) {
  if (tls.ca_file.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  ASSIGN_OR_RETURN(options.pem_root_certs, ReadFile(tls.ca_file));
  if (!tls.cert_file.empty()) {
    ASSIGN_OR_RETURN(options.pem_cert_chain, ReadFile(tls.cert_file));
    ASSIGN_OR_RETURN(options.pem_private_key, ReadFile(tls.key_file));
  }
  return grpc::SslCredentials(options);
}

absl::StatusOr<std::string> ServiceTokenSource::Token() {
  if (!token_file_.empty()) {
    ASSIGN_OR_RETURN(std::string token, ReadFile(token_file_));
    while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
    return token;
  }
  absl::MutexLock lock(&mu_);
  absl::Time now = clock_.Now();
  if (now + absl::Minutes(5) < expires_) return cached_;
  if (jwt_.hs256_secret.empty()) {
    return absl::FailedPreconditionError(
        "no credentials for calling other services: set service-token-file (or an HS256 secret)");
  }
  TokenClaims c;
  c.issuer = jwt_.issuer;
  c.audience = jwt_.audience;
  c.subject = subject_;
  c.role = Role::kService;
  c.clinics = {"*"};
  c.issued_at = now;
  c.expires_at = now + absl::Hours(1);
  ASSIGN_OR_RETURN(cached_, SignJwt(c, "HS256", jwt_.hs256_secret));
  expires_ = c.expires_at;
  return cached_;
}

}  // namespace continuum::auth
