// JSON Web Tokens (RFC 7519) over OpenSSL: verification with an algorithm allow-list,
// issuer, audience, expiry and not-before; HS256 for local use, RS256 / ES256 with a public
// key for production. `alg=none` is never accepted, whatever the allow-list says.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/auth/principal.h"

struct evp_pkey_st;  // OpenSSL's EVP_PKEY

namespace continuum::auth {

struct JwtOptions {
  std::string issuer;                  // required "iss"
  std::string audience;                // must appear in "aud" (string or array)
  std::vector<std::string> algorithms = {"HS256"};  // allow-list: HS256, RS256, ES256
  std::string hs256_secret;            // for HS256
  std::string public_key_pem;          // for RS256 / ES256
  // Also accepted when verifying, never used to sign: the other key while keys rotate
  // (docs/operations.md section 11). Empty = none.
  std::string hs256_verify_only_secret;
  std::string verify_only_public_key_pem;
  absl::Duration leeway = absl::Seconds(30);  // clock skew tolerated on exp / nbf
};

class JwtVerifier {
 public:
  // Checks the options (known algorithms, a key for each, issuer and audience set).
  static absl::StatusOr<JwtVerifier> Create(JwtOptions options);

  // UNAUTHENTICATED (reason UNAUTHENTICATED) with the cause when the token is not acceptable.
  absl::StatusOr<Principal> Verify(absl::string_view token, absl::Time now) const;

 private:
  explicit JwtVerifier(JwtOptions options) : options_(std::move(options)) {}
  JwtOptions options_;
  // public_key_pem and verify_only_public_key_pem, parsed once (empty: none). An EVP_PKEY is
  // only read when verifying, so verifications on several threads share it.
  std::vector<std::shared_ptr<evp_pkey_st>> public_keys_;
};

struct TokenClaims {
  std::string issuer;
  std::string audience;
  std::string subject;
  Role role = Role::kUnspecified;
  std::vector<std::string> clinics;  // clinic ids; "*" = every clinic (internal services)
  absl::Time issued_at;
  absl::Time expires_at;
  absl::Time not_before = absl::InfinitePast();
};

// Signs a token. `key` is the HS256 secret, or a PEM private key for RS256 / ES256.
// Used by the dev-token tool and by tests; production tokens come from the identity provider.
absl::StatusOr<std::string> SignJwt(const TokenClaims& claims, const std::string& algorithm,
                                    const std::string& key);

}  // namespace continuum::auth
