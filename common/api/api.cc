#include "common/api/api.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/status/errors.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/wire_format_lite.h"

namespace continuum::api {
namespace {

absl::BitGen& Rng() {
  static absl::BitGen* gen = new absl::BitGen();
  return *gen;
}
absl::Mutex rng_mu(absl::kConstInit);

std::string Deterministic(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::io::StringOutputStream stream(&out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  m.SerializeToCodedStream(&coded);
  coded.Trim();
  return out;
}

// The deterministic bytes of `m` without its top-level `fields`: the same bytes as a copy with
// those fields cleared would serialize to (deterministic serialization writes each field once,
// in field-number order, so the others' bytes are unchanged), but without copying the message
// by reflection, which was most of a request hash's cost on every idempotent write. Stored
// request hashes depend on these bytes: they must not change (test in api_test.cc).
std::string DeterministicWithout(const google::protobuf::Message& m, std::initializer_list<const char*> fields) {
  std::vector<int> skip;
  for (const char* f : fields) {
    if (const auto* fd = m.GetDescriptor()->FindFieldByName(f)) skip.push_back(fd->number());
  }
  std::string all = Deterministic(m);
  if (skip.empty()) return all;
  std::string out;
  out.reserve(all.size());
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(all.data()), static_cast<int>(all.size()));
  for (;;) {
    const int start = in.CurrentPosition();
    const uint32_t tag = in.ReadTag();
    if (tag == 0) break;
    if (!google::protobuf::internal::WireFormatLite::SkipField(&in, tag)) break;  // cannot happen: our own bytes
    const int number = static_cast<int>(google::protobuf::internal::WireFormatLite::GetTagFieldNumber(tag));
    if (std::find(skip.begin(), skip.end(), number) == skip.end()) {
      out.append(all, start, in.CurrentPosition() - start);
    }
  }
  return out;
}

std::string HashWithout(const google::protobuf::Message& request, std::initializer_list<const char*> fields) {
  return Sha256Hex(DeterministicWithout(request, fields));
}

}  // namespace

// OpenSSL 3's one-shot SHA256() fetches the digest on every call, about twice the cost of
// hashing a small request; the digest is fetched once here.
std::string Sha256Hex(absl::string_view bytes) {
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (md == nullptr || EVP_Digest(bytes.data(), bytes.size(), digest, &len, md, nullptr) != 1) {
    SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), digest);
    len = SHA256_DIGEST_LENGTH;
  }
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(digest), len));
}

absl::StatusOr<std::vector<std::string>> ParseName(absl::string_view name, absl::string_view pattern,
                                                   absl::string_view field) {
  std::vector<absl::string_view> parts = absl::StrSplit(name, '/');
  std::vector<absl::string_view> want = absl::StrSplit(pattern, '/');
  std::vector<std::string> ids;
  bool ok = parts.size() == want.size();
  for (size_t i = 0; ok && i < parts.size(); ++i) {
    if (want[i] == "*") {
      ok = !parts[i].empty() && parts[i].size() <= 63;
      ids.emplace_back(parts[i]);
    } else {
      ok = parts[i] == want[i];
    }
  }
  if (!ok) {
    return InvalidField(std::string(field),
                        absl::StrCat("'", name, "' is not a resource name of the form ",
                                     absl::StrReplaceAll(pattern, {{"*", "{id}"}})));
  }
  return ids;
}

bool ValidId(absl::string_view id) {
  if (id.size() < 3 || id.size() > 63 || !(id[0] >= 'a' && id[0] <= 'z')) return false;
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return true;
}

std::string NewId() {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
  absl::MutexLock lock(&rng_mu);
  std::string id(1, "abcdefghijklmnopqrstuvwxyz"[absl::Uniform(Rng(), 0, 26)]);
  for (int i = 0; i < 19; ++i) id.push_back(kAlphabet[absl::Uniform(Rng(), 0, 32)]);
  return id;
}

std::string NewUuid() { return NewUuidAt(absl::Now()); }

std::string NewUuidAt(absl::Time now) {
  const uint64_t ms = static_cast<uint64_t>(std::max<int64_t>(0, absl::ToUnixMillis(now))) & 0xffffffffffffULL;
  absl::MutexLock lock(&rng_mu);
  uint64_t hi = absl::Uniform<uint64_t>(Rng()), lo = absl::Uniform<uint64_t>(Rng());
  hi = (ms << 16) | 0x7000 | (hi & 0x0fff);                   // unix_ts_ms, version 7, rand_a
  lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // RFC 9562 variant, rand_b
  return absl::StrFormat("%08x-%04x-%04x-%04x-%012x", hi >> 32, (hi >> 16) & 0xffff, hi & 0xffff,
                         lo >> 48, lo & 0xffffffffffffULL);
}

absl::Status ValidateRequestId(absl::string_view request_id) {
  bool ok = !request_id.empty() && request_id.size() <= 64;
  for (char c : request_id) {
    ok = ok && (absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-');
  }
  if (ok) return absl::OkStatus();
  return InvalidField("request_id",
                      "required: 1-64 characters of [A-Za-z0-9._-] (a UUID is recommended), the same on every retry");
}

std::string RequestHash(const google::protobuf::Message& request) {
  return HashWithout(request, {"request_id"});
}

absl::StatusOr<int> PageSize(int32_t requested, int default_size, int max_size) {
  if (requested < 0) return InvalidField("page_size", "must not be negative");
  if (requested == 0) return default_size;
  return std::min<int>(requested, max_size);
}

std::string MakePageToken(int64_t offset, const google::protobuf::Message& request) {
  std::string hash = HashWithout(request, {"page_token", "page_size"}).substr(0, 16);
  return absl::WebSafeBase64Escape(absl::StrCat(offset, ":", hash));
}

absl::StatusOr<int64_t> ParsePageToken(absl::string_view token, const google::protobuf::Message& request) {
  if (token.empty()) return 0;
  std::string raw;
  int64_t offset = 0;
  std::vector<std::string> parts;
  if (absl::WebSafeBase64Unescape(token, &raw)) parts = absl::StrSplit(raw, ':');
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &offset) || offset < 0 ||
      parts[1] != HashWithout(request, {"page_token", "page_size"}).substr(0, 16)) {
    return InvalidField("page_token",
                        "not a token from a previous response to this same request; start again without it");
  }
  return offset;
}

}  // namespace continuum::api
