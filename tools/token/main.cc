// continuum-token: mints a development JWT (HS256 by default) for local use and tests.
//   continuum-token --secret-file=F --subject=p1 --role=therapist --clinics=c1,c2 [--ttl=12h]
//                   [--issuer=continuum-dev] [--audience=continuum] [--algorithm=HS256|RS256|ES256
//                    --private-key-file=F]
// Production tokens come from the clinic's identity provider, not from this tool.
#include <cstdio>

#include "absl/strings/str_split.h"
#include "common/auth/grpc_auth.h"
#include "common/auth/jwt.h"
#include "common/config/config_source.h"

int main(int argc, char** argv) {
  using namespace continuum;
  ConfigSource c = ConfigSource::FromMain(argc, argv);
  std::string secret = c.String("secret", "", "HS256 secret (prefer --secret-file)");
  std::string secret_file = c.String("secret-file", "", "file holding the HS256 secret");
  std::string private_key_file = c.String("private-key-file", "", "PEM private key for RS256/ES256");
  std::string algorithm = c.String("algorithm", "HS256", "HS256, RS256 or ES256");
  auth::TokenClaims claims;
  claims.subject = c.String("subject", "", "person id (or partner/service id)");
  std::string role = c.String("role", "", "client, therapist, clinician, sitter, admin, partner, service");
  std::string clinics = c.String("clinics", "", "comma-separated clinic ids; * for all (service)");
  claims.issuer = c.String("issuer", "continuum-dev", "iss");
  claims.audience = c.String("audience", "continuum", "aud");
  absl::Duration ttl = c.Duration("ttl", absl::Hours(12), "lifetime");
  if (c.help_requested()) {
    std::fputs(c.Usage("continuum-token").c_str(), stdout);
    return 0;
  }
  claims.role = auth::RoleFromString(role);
  if (claims.subject.empty()) c.AddError("--subject is required");
  if (claims.role == auth::Role::kUnspecified) c.AddError("--role must be one of client, therapist, clinician, sitter, admin, partner, service");
  claims.clinics = absl::StrSplit(clinics, ',', absl::SkipEmpty());
  std::string key = secret;
  if (!secret_file.empty() || !private_key_file.empty()) {
    auto k = auth::ReadFile(algorithm == "HS256" ? secret_file : private_key_file);
    if (k.ok()) key = *k;
    else c.AddError(std::string(k.status().message()));
    while (algorithm == "HS256" && !key.empty() && key.back() == '\n') key.pop_back();
  }
  if (key.empty()) c.AddError("a key is required: --secret-file (HS256) or --private-key-file");
  if (auto s = c.Finish(); !s.ok()) {
    std::fprintf(stderr, "continuum-token: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  claims.issued_at = absl::Now();
  claims.expires_at = claims.issued_at + ttl;
  auto token = auth::SignJwt(claims, algorithm, key);
  if (!token.ok()) {
    std::fprintf(stderr, "continuum-token: %s\n", std::string(token.status().message()).c_str());
    return 1;
  }
  std::printf("%s\n", token->c_str());
  return 0;
}
