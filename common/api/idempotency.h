// Idempotent mutations: the response of every successful mutating call is stored under
// (caller, method, request_id) in the same transaction as the change. A retry returns the
// stored response without applying anything again; the same request_id with a different
// request is ALREADY_EXISTS / REQUEST_ID_REUSED. Only successes are remembered.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/api/api.h"
#include "common/db/database.h"
#include "common/db/migrations.h"
#include "common/db/retention.h"
#include "common/status/errors.h"
#include "common/status/macros.h"
#include "common/time/clock.h"

namespace continuum::api {

// Schema of the idempotency table; apply with db::ApplyMigrations(db, "idempotency", ...).
const std::vector<db::Migration>& IdempotencyMigrations();

// Which rows retention deletes: responses remembered before the cutoff. A retry that comes
// later than the retention period is applied as a new request.
const db::RetentionRule& IdempotencyRetention();

struct Remembered {
  std::string request_hash;
  std::string response;
};
absl::StatusOr<std::optional<Remembered>> Recall(db::Tx& tx, const std::string& caller, const std::string& method,
                                                 const std::string& request_id);
absl::Status Remember(db::Tx& tx, const std::string& caller, const std::string& method,
                      const std::string& request_id, const Remembered& what, absl::Time now);

// How a response is remembered when not as its own bytes: `encode` gives a short reference
// (say, a version number) and `decode` turns it back into the response in the retry's
// transaction. Used where the response is large and already stored elsewhere (a session
// record's version), so that each write does not store it twice.
template <typename Resp>
struct RememberAs {
  std::function<std::string(const Resp&)> encode;
  std::function<absl::StatusOr<Resp>(db::Tx&, const std::string&)> decode;
};

// Runs `fn` in a read-write transaction, idempotently. `fn` must be repeatable (the
// transaction may be retried on a conflict, and `fn` may run for a request that turns out to
// be a retry, in a transaction that is then rolled back).
//
// A new request_id is the usual case, so the first attempt does not look the request up: it
// runs `fn` and remembers its response (on PostgreSQL that insert goes out with the COMMIT, so
// the lookup's round trip is saved: a record write is two round trips, not three). If the
// request_id was remembered before, that insert fails on the idempotency key and nothing of
// the attempt commits; the next attempt looks it up first and answers from it. If `fn` fails,
// the request may still be a retry of one that succeeded (its own first run changed what `fn`
// now sees, e.g. an etag), so the failure is returned only after a lookup finds nothing.
template <typename Resp>
absl::StatusOr<Resp> RunIdempotent(db::Database& db, Clock& clock, const std::string& caller,
                                   const std::string& method, const std::string& request_id,
                                   const google::protobuf::Message& request,
                                   const std::function<absl::StatusOr<Resp>(db::Tx&)>& fn,
                                   const RememberAs<Resp>* remember_as = nullptr) {
  RETURN_IF_ERROR(ValidateRequestId(request_id));
  const std::string hash = RequestHash(request);
  // The response remembered for this request_id, if any (REQUEST_ID_REUSED if it was
  // remembered for a different request).
  auto remembered_response = [&](db::Tx& tx) -> absl::StatusOr<std::optional<Resp>> {
    ASSIGN_OR_RETURN(auto remembered, Recall(tx, caller, method, request_id));
    if (!remembered) return std::nullopt;
    if (remembered->request_hash != hash) {
      return MakeError(absl::StatusCode::kAlreadyExists, "REQUEST_ID_REUSED",
                       "request_id '" + request_id +
                           "' was already used for a different request; use a new request_id");
    }
    Resp response;
    if (remember_as) {
      ASSIGN_OR_RETURN(response, remember_as->decode(tx, remembered->response));
    } else if (!response.ParseFromString(remembered->response)) {
      return absl::DataLossError("stored response");
    }
    return response;
  };
  for (int attempt = 0;; ++attempt) {
    const bool look_first = attempt > 0;
    Resp response;
    absl::Status s = db.InTransaction([&](db::Tx& tx) -> absl::Status {
      if (look_first) {
        ASSIGN_OR_RETURN(std::optional<Resp> earlier, remembered_response(tx));
        if (earlier) {
          response = std::move(*earlier);
          return absl::OkStatus();
        }
      }
      ASSIGN_OR_RETURN(response, fn(tx));
      return Remember(tx, caller, method, request_id,
                      {hash, remember_as ? remember_as->encode(response) : response.SerializeAsString()}, clock.Now());
    });
    // The request_id was remembered already (a retry, or a concurrent call with the same
    // request_id committed first): answer from it.
    bool remembered = s.code() == absl::StatusCode::kAlreadyExists && ErrorReason(s) == "ALREADY_EXISTS" &&
                      ErrorMetadata(s)["constraint"].find("idempotency") != std::string::npos;
    if (remembered && attempt < 2) continue;
    if (!s.ok() && !look_first && !remembered) {
      // `fn` refused it: unless it is a retry of a request that succeeded, that is the answer.
      std::optional<Resp> earlier;
      absl::Status looked = db.InTransaction([&](db::Tx& tx) -> absl::Status {
        ASSIGN_OR_RETURN(earlier, remembered_response(tx));
        return absl::OkStatus();
      }, db::TxMode::kReadOnly);
      if (!looked.ok()) return ErrorReason(looked) == "REQUEST_ID_REUSED" ? looked : s;
      if (earlier) return *std::move(earlier);
      return s;
    }
    if (!s.ok()) return s;
    return response;
  }
}

}  // namespace continuum::api
