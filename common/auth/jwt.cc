#include "common/auth/jwt.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include <algorithm>
#include <memory>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status/errors.h"
#include "common/status/macros.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace continuum::auth {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

absl::Status Unauthenticated(absl::string_view why) {
  return MakeError(absl::StatusCode::kUnauthenticated, "UNAUTHENTICATED",
                   absl::StrCat("invalid bearer token: ", why));
}

struct PkeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

Pkey LoadPem(const std::string& pem, bool is_private) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (!bio) return nullptr;
  EVP_PKEY* key = is_private ? PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr)
                             : PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  return Pkey(key);
}

std::string HmacSha256(const std::string& key, absl::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

// JWS ES256 signatures are r||s (32 bytes each); OpenSSL wants DER.
std::string EcRawToDer(absl::string_view raw) {
  if (raw.size() != 64) return "";
  ECDSA_SIG* sig = ECDSA_SIG_new();
  BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()), 32, nullptr);
  BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()) + 32, 32, nullptr);
  ECDSA_SIG_set0(sig, r, s);
  unsigned char* der = nullptr;
  int len = i2d_ECDSA_SIG(sig, &der);
  std::string out = len > 0 ? std::string(reinterpret_cast<char*>(der), len) : "";
  OPENSSL_free(der);
  ECDSA_SIG_free(sig);
  return out;
}

std::string EcDerToRaw(const std::string& der) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
  ECDSA_SIG* sig = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size()));
  if (!sig) return "";
  unsigned char raw[64] = {0};
  BN_bn2binpad(ECDSA_SIG_get0_r(sig), raw, 32);
  BN_bn2binpad(ECDSA_SIG_get0_s(sig), raw + 32, 32);
  ECDSA_SIG_free(sig);
  return std::string(reinterpret_cast<char*>(raw), 64);
}

bool VerifyAsymmetric(EVP_PKEY* key, absl::string_view data, const std::string& sig) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, key) == 1 &&
            EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                             reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

absl::StatusOr<std::string> SignAsymmetric(EVP_PKEY* key, absl::string_view data) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  size_t len = 0;
  std::string sig;
  bool ok = EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key) == 1 &&
            EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(data.data()),
                           data.size()) == 1;
  if (ok) {
    sig.resize(len);
    ok = EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                        reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
    sig.resize(len);
  }
  EVP_MD_CTX_free(ctx);
  if (!ok) return absl::InvalidArgumentError("signing failed: check the private key");
  return sig;
}

absl::StatusOr<Struct> ParseJson(const std::string& json) {
  Struct s;
  if (!google::protobuf::util::JsonStringToMessage(json, &s).ok()) {
    return Unauthenticated("segment is not a JSON object");
  }
  return s;
}

std::string Str(const Struct& s, const std::string& key) {
  auto it = s.fields().find(key);
  return it != s.fields().end() && it->second.has_string_value() ? it->second.string_value() : "";
}

bool Num(const Struct& s, const std::string& key, double* out) {
  auto it = s.fields().find(key);
  if (it == s.fields().end() || !it->second.has_number_value()) return false;
  *out = it->second.number_value();
  return true;
}

}  // namespace

absl::StatusOr<JwtVerifier> JwtVerifier::Create(JwtOptions options) {
  if (options.issuer.empty() || options.audience.empty()) {
    return absl::InvalidArgumentError("jwt: issuer and audience must be configured");
  }
  if (options.algorithms.empty()) return absl::InvalidArgumentError("jwt: no algorithm allowed");
  for (const auto& alg : options.algorithms) {
    if (alg == "HS256") {
      if (options.hs256_secret.size() < 32) {
        return absl::InvalidArgumentError("jwt: HS256 needs a secret of at least 32 bytes");
      }
    } else if (alg == "RS256" || alg == "ES256") {
      Pkey key = LoadPem(options.public_key_pem, false);
      if (!key) return absl::InvalidArgumentError("jwt: " + alg + " needs a PEM public key");
      int type = EVP_PKEY_base_id(key.get());
      if ((alg == "RS256") != (type == EVP_PKEY_RSA)) {
        return absl::InvalidArgumentError("jwt: the public key does not match " + alg);
      }
    } else {
      return absl::InvalidArgumentError("jwt: unsupported algorithm '" + alg +
                                        "' (allowed: HS256, RS256, ES256)");
    }
  }
  if (!options.hs256_verify_only_secret.empty() && options.hs256_verify_only_secret.size() < 32) {
    return absl::InvalidArgumentError("jwt: the verify-only HS256 secret needs at least 32 bytes");
  }
  if (!options.verify_only_public_key_pem.empty() && !LoadPem(options.verify_only_public_key_pem, false)) {
    return absl::InvalidArgumentError("jwt: the verify-only public key is not a PEM public key");
  }
  JwtVerifier verifier(std::move(options));
  // Parsed here, not per verification (a PEM parse costs more than an ES256 verification).
  for (const std::string* pem : {&verifier.options_.public_key_pem, &verifier.options_.verify_only_public_key_pem}) {
    if (pem->empty()) continue;
    Pkey key = LoadPem(*pem, false);
    if (key) verifier.public_keys_.emplace_back(key.release(), PkeyDeleter());
  }
  return verifier;
}

absl::StatusOr<Principal> JwtVerifier::Verify(absl::string_view token, absl::Time now) const {
  std::vector<absl::string_view> parts = absl::StrSplit(token, '.');
  if (parts.size() != 3) return Unauthenticated("expected three dot-separated segments");
  std::string header_json, payload_json, signature;
  if (!absl::WebSafeBase64Unescape(parts[0], &header_json) ||
      !absl::WebSafeBase64Unescape(parts[1], &payload_json) ||
      !absl::WebSafeBase64Unescape(parts[2], &signature)) {
    return Unauthenticated("segments must be base64url");
  }
  // Only the canonical encoding is accepted, so one signature has one spelling.
  if (absl::WebSafeBase64Escape(signature) != parts[2]) return Unauthenticated("signature is not canonical base64url");
  ASSIGN_OR_RETURN(Struct header, ParseJson(header_json));
  std::string alg = Str(header, "alg");
  if (alg.empty() || alg == "none" ||
      std::find(options_.algorithms.begin(), options_.algorithms.end(), alg) ==
          options_.algorithms.end()) {
    return Unauthenticated(absl::StrCat("algorithm '", alg, "' is not accepted"));
  }
  absl::string_view signed_part = token.substr(0, parts[0].size() + 1 + parts[1].size());
  bool valid = false;
  // The configured key first, then the verify-only one (a rotation in progress).
  if (alg == "HS256") {
    for (const std::string* secret : {&options_.hs256_secret, &options_.hs256_verify_only_secret}) {
      if (secret->empty() || valid) continue;
      std::string expected = HmacSha256(*secret, signed_part);
      valid = expected.size() == signature.size() &&
              CRYPTO_memcmp(expected.data(), signature.data(), expected.size()) == 0;
    }
  } else {
    std::string sig = alg == "ES256" ? EcRawToDer(signature) : signature;
    for (const auto& key : public_keys_) {
      if (valid || sig.empty()) continue;
      valid = VerifyAsymmetric(key.get(), signed_part, sig);
    }
  }
  if (!valid) return Unauthenticated("signature does not verify");

  ASSIGN_OR_RETURN(Struct claims, ParseJson(payload_json));
  if (Str(claims, "iss") != options_.issuer) {
    return Unauthenticated(absl::StrCat("issuer '", Str(claims, "iss"), "' is not trusted"));
  }
  bool audience_ok = Str(claims, "aud") == options_.audience;
  if (auto it = claims.fields().find("aud");
      it != claims.fields().end() && it->second.has_list_value()) {
    for (const Value& v : it->second.list_value().values()) {
      if (v.string_value() == options_.audience) audience_ok = true;
    }
  }
  if (!audience_ok) return Unauthenticated("token is not for this audience");
  double exp = 0, nbf = 0;
  if (!Num(claims, "exp", &exp)) return Unauthenticated("missing exp");
  if (now > absl::FromUnixSeconds(static_cast<int64_t>(exp)) + options_.leeway) {
    return Unauthenticated("token expired");
  }
  if (Num(claims, "nbf", &nbf) &&
      now + options_.leeway < absl::FromUnixSeconds(static_cast<int64_t>(nbf))) {
    return Unauthenticated("token not valid yet (nbf)");
  }
  Principal p;
  p.valid_until = absl::FromUnixSeconds(static_cast<int64_t>(exp)) + options_.leeway;
  if (nbf > 0) p.valid_from = absl::FromUnixSeconds(static_cast<int64_t>(nbf)) - options_.leeway;
  p.subject = Str(claims, "sub");
  if (p.subject.empty()) return Unauthenticated("missing sub");
  p.role = RoleFromString(Str(claims, "role"));
  if (p.role == Role::kUnspecified) return Unauthenticated("missing or unknown role");
  if (auto it = claims.fields().find("clinics");
      it != claims.fields().end() && it->second.has_list_value()) {
    for (const Value& v : it->second.list_value().values()) {
      if (v.has_string_value()) p.clinics.push_back(v.string_value());
    }
  }
  return p;
}

absl::StatusOr<std::string> SignJwt(const TokenClaims& c, const std::string& algorithm,
                                    const std::string& key) {
  Struct header;
  (*header.mutable_fields())["alg"].set_string_value(algorithm);
  (*header.mutable_fields())["typ"].set_string_value("JWT");
  Struct claims;
  auto& f = *claims.mutable_fields();
  f["iss"].set_string_value(c.issuer);
  f["aud"].set_string_value(c.audience);
  f["sub"].set_string_value(c.subject);
  f["role"].set_string_value(std::string(RoleName(c.role)));
  for (const auto& clinic : c.clinics) {
    f["clinics"].mutable_list_value()->add_values()->set_string_value(clinic);
  }
  f["iat"].set_number_value(static_cast<double>(absl::ToUnixSeconds(c.issued_at)));
  f["exp"].set_number_value(static_cast<double>(absl::ToUnixSeconds(c.expires_at)));
  if (c.not_before != absl::InfinitePast()) {
    f["nbf"].set_number_value(static_cast<double>(absl::ToUnixSeconds(c.not_before)));
  }
  std::string header_json, claims_json;
  if (!google::protobuf::util::MessageToJsonString(header, &header_json).ok() ||
      !google::protobuf::util::MessageToJsonString(claims, &claims_json).ok()) {
    return absl::InternalError("jwt: cannot encode JSON");
  }
  std::string signing_input =
      absl::StrCat(absl::WebSafeBase64Escape(header_json), ".", absl::WebSafeBase64Escape(claims_json));
  std::string signature;
  if (algorithm == "HS256") {
    signature = HmacSha256(key, signing_input);
  } else if (algorithm == "RS256" || algorithm == "ES256") {
    Pkey pkey = LoadPem(key, true);
    if (!pkey) return absl::InvalidArgumentError("jwt: cannot read the PEM private key");
    ASSIGN_OR_RETURN(signature, SignAsymmetric(pkey.get(), signing_input));
    if (algorithm == "ES256") signature = EcDerToRaw(signature);
  } else {
    return absl::InvalidArgumentError("jwt: cannot sign with '" + algorithm + "'");
  }
  return absl::StrCat(signing_input, ".", absl::WebSafeBase64Escape(signature));
}

}  // namespace continuum::auth
