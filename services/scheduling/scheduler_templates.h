// Definitions of Scheduler's transaction templates, shared by scheduler.cc and booking.cc.
#pragma once

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/api/api.h"
#include "common/status/errors.h"
#include "common/status/macros.h"
#include "services/scheduling/scheduler.h"

namespace continuum::scheduling {

template <typename Resp>
absl::StatusOr<Resp> Scheduler::Mutate(const P& p, const char* method, const std::string& request_id,
                                       const google::protobuf::Message& request,
                                       const std::function<absl::StatusOr<Resp>(SchedulingStore&)>& fn) {
  RETURN_IF_ERROR(api::ValidateRequestId(request_id));
  std::string hash = api::RequestHash(request);
  std::string caller = p.subject;
  Resp response;
  absl::Status s = db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    SchedulingStore store(tx);
    ASSIGN_OR_RETURN(auto remembered, store.Recall(caller, method, request_id));
    if (remembered) {
      if (remembered->request_hash != hash) {
        return MakeError(absl::StatusCode::kAlreadyExists, "REQUEST_ID_REUSED",
                         absl::StrCat("request_id '", request_id,
                                      "' was already used for a different request; use a new request_id"));
      }
      if (!response.ParseFromString(remembered->response)) return absl::DataLossError("stored response");
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(response, fn(store));
    return store.Remember(caller, method, request_id, hash, response.SerializeAsString(), clock_.Now());
  });
  if (s.code() == absl::StatusCode::kAlreadyExists && ErrorReason(s) == "ALREADY_EXISTS" &&
      ErrorMetadata(s).count("constraint") && absl::StrContains(ErrorMetadata(s).at("constraint"), "idempotency")) {
    // A concurrent retry with the same request_id committed first: answer with its result.
    return Mutate(p, method, request_id, request, fn);
  }
  if (!s.ok()) return s;
  if (options_.on_commit) options_.on_commit();
  return response;
}

template <typename Resp>
absl::StatusOr<Resp> Scheduler::Read(const std::function<absl::StatusOr<Resp>(SchedulingStore&)>& fn) {
  Resp out;
  RETURN_IF_ERROR(db_.InTransaction(
      [&](db::Tx& tx) -> absl::Status {
        SchedulingStore store(tx);
        ASSIGN_OR_RETURN(out, fn(store));
        return absl::OkStatus();
      },
      db::TxMode::kReadOnly));
  return out;
}

}  // namespace continuum::scheduling
