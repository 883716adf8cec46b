#include "common/auth/jwt.h"

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "absl/strings/escaping.h"
#include "common/auth/grpc_auth.h"
#include "common/status/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace continuum::auth {
namespace {

const std::string kSecret = "0123456789abcdef0123456789abcdef-test-secret";
const absl::Time kNow = absl::FromUnixSeconds(1790000000);

TokenClaims Claims() {
  TokenClaims c;
  c.issuer = "continuum-dev";
  c.audience = "continuum";
  c.subject = "p-therapist-1";
  c.role = Role::kTherapist;
  c.clinics = {"clinic-a"};
  c.issued_at = kNow - absl::Minutes(1);
  c.expires_at = kNow + absl::Hours(1);
  return c;
}

JwtVerifier Verifier(std::vector<std::string> algs = {"HS256"}, std::string public_pem = "") {
  JwtOptions o;
  o.issuer = "continuum-dev";
  o.audience = "continuum";
  o.algorithms = std::move(algs);
  o.hs256_secret = kSecret;
  o.public_key_pem = std::move(public_pem);
  auto v = JwtVerifier::Create(o);
  EXPECT_TRUE(v.ok()) << v.status();
  return std::move(*v);
}

// A fresh key pair: {private PEM, public PEM}.
std::pair<std::string, std::string> KeyPair(bool ec) {
  EVP_PKEY* key = ec ? EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")
                     : EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048));
  BIO* priv = BIO_new(BIO_s_mem());
  BIO* pub = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(priv, key, nullptr, nullptr, 0, nullptr, nullptr);
  PEM_write_bio_PUBKEY(pub, key);
  char* p = nullptr;
  long n = BIO_get_mem_data(priv, &p);
  std::string priv_pem(p, n);
  n = BIO_get_mem_data(pub, &p);
  std::string pub_pem(p, n);
  BIO_free(priv);
  BIO_free(pub);
  EVP_PKEY_free(key);
  return {priv_pem, pub_pem};
}

std::string Sign(const TokenClaims& c, const std::string& alg = "HS256", const std::string& key = kSecret) {
  auto t = SignJwt(c, alg, key);
  EXPECT_TRUE(t.ok()) << t.status();
  return *t;
}

void ExpectRejected(const absl::StatusOr<Principal>& p, const std::string& why) {
  ASSERT_FALSE(p.ok()) << "accepted a token that should be rejected: " << why;
  EXPECT_EQ(p.status().code(), absl::StatusCode::kUnauthenticated) << why;
  EXPECT_EQ(ErrorReason(p.status()), "UNAUTHENTICATED");
  EXPECT_THAT(std::string(p.status().message()), ::testing::HasSubstr(why));
}

TEST(JwtTest, AcceptsValidHs256TokenAndBuildsPrincipal) {
  auto p = Verifier().Verify(Sign(Claims()), kNow);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->subject, "p-therapist-1");
  EXPECT_EQ(p->role, Role::kTherapist);
  EXPECT_THAT(p->clinics, ::testing::ElementsAre("clinic-a"));
  EXPECT_TRUE(p->InClinic("clinic-a"));
  EXPECT_FALSE(p->InClinic("clinic-b"));
}

TEST(JwtTest, RejectsExpiredToken) {
  TokenClaims c = Claims();
  c.expires_at = kNow - absl::Minutes(5);
  ExpectRejected(Verifier().Verify(Sign(c), kNow), "expired");
}

TEST(JwtTest, ToleratesSmallClockSkewOnExpiry) {
  TokenClaims c = Claims();
  c.expires_at = kNow - absl::Seconds(10);
  EXPECT_TRUE(Verifier().Verify(Sign(c), kNow).ok());
}

TEST(JwtTest, RejectsTokenNotYetValid) {
  TokenClaims c = Claims();
  c.not_before = kNow + absl::Hours(1);
  ExpectRejected(Verifier().Verify(Sign(c), kNow), "nbf");
}

TEST(JwtTest, RejectsWrongAudience) {
  TokenClaims c = Claims();
  c.audience = "someone-else";
  ExpectRejected(Verifier().Verify(Sign(c), kNow), "audience");
}

TEST(JwtTest, RejectsWrongIssuer) {
  TokenClaims c = Claims();
  c.issuer = "evil";
  ExpectRejected(Verifier().Verify(Sign(c), kNow), "issuer");
}

TEST(JwtTest, RejectsAlgNone) {
  std::string header = absl::WebSafeBase64Escape(R"({"alg":"none","typ":"JWT"})");
  std::string token = Sign(Claims());
  std::string payload = token.substr(token.find('.') + 1);
  payload = payload.substr(0, payload.find('.'));
  ExpectRejected(Verifier().Verify(header + "." + payload + ".", kNow), "algorithm 'none'");
}

TEST(JwtTest, RejectsTamperedPayload) {
  std::string token = Sign(Claims());
  TokenClaims admin = Claims();
  admin.role = Role::kAdmin;
  std::string forged = Sign(admin, "HS256", "another-secret-another-secret-xx");
  // Original header and signature, forged payload.
  auto dot1 = token.find('.'), dot2 = token.rfind('.');
  auto fdot1 = forged.find('.'), fdot2 = forged.rfind('.');
  std::string spliced = token.substr(0, dot1) + forged.substr(fdot1, fdot2 - fdot1) + token.substr(dot2);
  ExpectRejected(Verifier().Verify(spliced, kNow), "signature");
}

TEST(JwtTest, RejectsNonCanonicalSignatureEncoding) {
  std::string token = Sign(Claims());
  // The last character of a 32-byte signature carries 2 unused bits; setting one keeps the
  // decoded bytes but must not be accepted as another spelling of the same token.
  char& last = token.back();
  static const std::string kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  last = kAlphabet[kAlphabet.find(last) ^ 1];
  ExpectRejected(Verifier().Verify(token, kNow), "canonical");
}

TEST(JwtTest, RejectsGarbage) {
  ExpectRejected(Verifier().Verify("not-a-token", kNow), "three");
  ExpectRejected(Verifier().Verify("a.b.c", kNow), "");
}

TEST(JwtTest, RejectsAlgorithmOutsideAllowList) {
  auto [priv, pub] = KeyPair(false);
  ExpectRejected(Verifier({"HS256"}).Verify(Sign(Claims(), "RS256", priv), kNow), "RS256");
}

TEST(JwtTest, AcceptsRs256WithPublicKey) {
  auto [priv, pub] = KeyPair(false);
  auto p = Verifier({"RS256"}, pub).Verify(Sign(Claims(), "RS256", priv), kNow);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->subject, "p-therapist-1");
}

TEST(JwtTest, AcceptsEs256WithPublicKeyAndRejectsOtherKey) {
  auto [priv, pub] = KeyPair(true);
  auto [other_priv, other_pub] = KeyPair(true);
  EXPECT_TRUE(Verifier({"ES256"}, pub).Verify(Sign(Claims(), "ES256", priv), kNow).ok());
  ExpectRejected(Verifier({"ES256"}, pub).Verify(Sign(Claims(), "ES256", other_priv), kNow), "signature");
}

TEST(JwtTest, RejectsHs256SignedWithThePublicKey) {
  // Algorithm confusion: an attacker signs HS256 using the (public) RSA key as the secret.
  auto [priv, pub] = KeyPair(false);
  ExpectRejected(Verifier({"RS256"}, pub).Verify(Sign(Claims(), "HS256", pub), kNow), "HS256");
}

TEST(JwtTest, CreateRefusesWeakOrMissingKeys) {
  JwtOptions o;
  o.issuer = "i";
  o.audience = "a";
  o.hs256_secret = "short";
  EXPECT_FALSE(JwtVerifier::Create(o).ok());
  o.algorithms = {"RS256"};
  EXPECT_FALSE(JwtVerifier::Create(o).ok());
  o.algorithms = {"none"};
  EXPECT_FALSE(JwtVerifier::Create(o).ok());
}

// Key rotation: tokens signed with the verify-only key are accepted beside the configured
// key's, tokens of any other key are not, and a verify-only key too short or not a key is
// refused at start-up.
TEST(JwtTest, AcceptsTheVerifyOnlyKeyBesideTheConfiguredOne) {
  const std::string next = "fedcba9876543210fedcba9876543210-next-secret";
  JwtOptions o;
  o.issuer = "continuum-dev";
  o.audience = "continuum";
  o.hs256_secret = kSecret;
  o.hs256_verify_only_secret = next;
  auto hs = JwtVerifier::Create(o);
  ASSERT_TRUE(hs.ok()) << hs.status();
  EXPECT_TRUE(hs->Verify(Sign(Claims()), kNow).ok());
  EXPECT_TRUE(hs->Verify(Sign(Claims(), "HS256", next), kNow).ok());
  ExpectRejected(hs->Verify(Sign(Claims(), "HS256", "0000000000000000000000000000000000-other"), kNow),
                 "signature does not verify");
  // Without it, the same token is refused.
  ExpectRejected(Verifier().Verify(Sign(Claims(), "HS256", next), kNow), "signature does not verify");

  auto [old_private, old_public] = KeyPair(/*ec=*/true);
  auto [new_private, new_public] = KeyPair(/*ec=*/true);
  auto [other_private, other_public] = KeyPair(/*ec=*/true);
  o.algorithms = {"ES256"};
  o.public_key_pem = new_public;
  o.verify_only_public_key_pem = old_public;
  auto es = JwtVerifier::Create(o);
  ASSERT_TRUE(es.ok()) << es.status();
  EXPECT_TRUE(es->Verify(Sign(Claims(), "ES256", new_private), kNow).ok());
  EXPECT_TRUE(es->Verify(Sign(Claims(), "ES256", old_private), kNow).ok());
  ExpectRejected(es->Verify(Sign(Claims(), "ES256", other_private), kNow), "signature does not verify");

  o.hs256_verify_only_secret = "short";
  EXPECT_FALSE(JwtVerifier::Create(o).ok());
  o.hs256_verify_only_secret = "";
  o.verify_only_public_key_pem = "not a key";
  EXPECT_FALSE(JwtVerifier::Create(o).ok());
}

TEST(AuthenticatorTest, RequiresBearerHeader) {
  FakeClock clock(kNow);
  Authenticator auth(Verifier(), clock);
  ExpectRejected(auth.AuthenticateHeader(""), "missing");
  ExpectRejected(auth.AuthenticateHeader("Basic abc"), "Bearer");
  EXPECT_TRUE(auth.AuthenticateHeader("Bearer " + Sign(Claims())).ok());
}

TEST(AuthenticatorTest, CachedTokenIsStillRefusedOnceItExpires) {
  FakeClock clock(kNow);
  Authenticator auth(Verifier(), clock);
  const std::string header = "Bearer " + Sign(Claims());  // valid for one hour
  auto first = auth.AuthenticateHeader(header);
  ASSERT_TRUE(first.ok()) << first.status();
  auto again = auth.AuthenticateHeader(header);  // from the cache
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->subject, first->subject);
  EXPECT_EQ(again->clinics, first->clinics);
  clock.Set(kNow + absl::Hours(2));
  ExpectRejected(auth.AuthenticateHeader(header), "expired");
  // A token whose signature was tampered with is never served from the cache of the genuine one.
  std::string forged = header;
  forged.back() = forged.back() == 'A' ? 'B' : 'A';
  clock.Set(kNow);
  EXPECT_FALSE(auth.AuthenticateHeader(forged).ok());
}

TEST(PrincipalTest, ClinicAndRoleChecks) {
  Principal p{"p1", Role::kClient, {"clinic-a"}};
  EXPECT_TRUE(RequireClinic(p, "clinic-a").ok());
  absl::Status cross = RequireClinic(p, "clinic-b");
  EXPECT_EQ(cross.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ErrorReason(cross), "PERMISSION_DENIED_CROSS_CLINIC");
  EXPECT_TRUE(RequireRole(p, {Role::kClient, Role::kAdmin}, "read").ok());
  absl::Status role = RequireRole(p, {Role::kClinician}, "set a dose plan");
  EXPECT_EQ(role.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(role.message()), ::testing::HasSubstr("a client may not set a dose plan"));
  Principal service{"svc", Role::kService, {"*"}};
  EXPECT_TRUE(service.InClinic("anything"));
}

}  // namespace
}  // namespace continuum::auth
