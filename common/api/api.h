// Helpers for the AIP-style API shared by every service: resource names, ids, request
// validation, idempotency hashes and page tokens. No gRPC or SQL here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"

namespace continuum::api {

// Matches `name` against `pattern`, where each "*" is one id segment, e.g.
// ParseName("clinics/c1/appointments/a9", "clinics/*/appointments/*") -> {"c1", "a9"}.
// INVALID_ARGUMENT naming `field` and the expected shape otherwise.
absl::StatusOr<std::vector<std::string>> ParseName(absl::string_view name, absl::string_view pattern,
                                                   absl::string_view field);

// A caller-chosen id: [a-z][a-z0-9-]{2,62}.
bool ValidId(absl::string_view id);
// A fresh server-assigned id: a letter then 19 lowercase base-32 characters.
std::string NewId();
// A fresh UUID for event ids: version 7 (RFC 9562), the Unix time in milliseconds and 74
// random bits, so ids made later sort later. The outbox's unique index on event_id then
// grows at its end, one B-tree page per commit, instead of taking a random leaf page per
// event (random version 4 ids: on SQLite a 4 KiB WAL frame per event of a commit).
std::string NewUuid();
// The same at `now` (for tests).
std::string NewUuidAt(absl::Time now);

// request_id: required, 1-64 characters of [A-Za-z0-9._-].
absl::Status ValidateRequestId(absl::string_view request_id);

// Lower-case hex SHA-256 of `bytes` (the digest is fetched from OpenSSL once, not per call).
std::string Sha256Hex(absl::string_view bytes);

// SHA-256 (hex) of the deterministic encoding of `request` with its request_id cleared,
// so a retry can be told apart from a different request reusing the id.
std::string RequestHash(const google::protobuf::Message& request);

// Page size per AIP-158: 0 -> default, above max -> max, negative -> INVALID_ARGUMENT.
absl::StatusOr<int> PageSize(int32_t requested, int default_size, int max_size);

// Page tokens carry an offset bound to the query they came from (a hash of the request
// without page_token / page_size): reusing a token with other filters is INVALID_ARGUMENT.
std::string MakePageToken(int64_t offset, const google::protobuf::Message& request);
absl::StatusOr<int64_t> ParsePageToken(absl::string_view token, const google::protobuf::Message& request);

}  // namespace continuum::api
