#include "common/status/errors.h"

#include <atomic>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "spdlog/spdlog.h"

namespace continuum {
namespace {

constexpr char kErrorInfoUrl[] = "type.googleapis.com/google.rpc.ErrorInfo";
constexpr char kBadRequestUrl[] = "type.googleapis.com/google.rpc.BadRequest";

template <typename Message>
bool ReadPayload(const absl::Status& status, const char* url, Message* out) {
  auto payload = status.GetPayload(url);
  return payload.has_value() && out->ParseFromString(std::string(*payload));
}

void SetErrorInfo(absl::Status& status, const google::rpc::ErrorInfo& info) {
  status.SetPayload(kErrorInfoUrl, absl::Cord(info.SerializeAsString()));
}

absl::string_view DefaultReason(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument: return "INVALID_FIELD";
    case absl::StatusCode::kNotFound: return "NOT_FOUND";
    case absl::StatusCode::kAlreadyExists: return "ALREADY_EXISTS";
    case absl::StatusCode::kUnauthenticated: return "UNAUTHENTICATED";
    case absl::StatusCode::kResourceExhausted: return "OVERLOADED";
    case absl::StatusCode::kAborted: return "TRANSACTION_CONFLICT";
    case absl::StatusCode::kFailedPrecondition: return "INVALID_STATE";
    // Every reason sent is one of continuum.common.v1.ErrorReason; codes without a fitting
    // default reason go out without ErrorInfo rather than with an undocumented one.
    default: return "";
  }
}

}  // namespace

absl::Status MakeError(absl::StatusCode code, absl::string_view reason, absl::string_view message,
                       const std::map<std::string, std::string>& metadata) {
  absl::Status status(code, message);
  google::rpc::ErrorInfo info;
  info.set_reason(std::string(reason));
  info.set_domain(std::string(kErrorDomain));
  for (const auto& [k, v] : metadata) (*info.mutable_metadata())[k] = v;
  SetErrorInfo(status, info);
  return status;
}

absl::Status InvalidFields(std::vector<FieldViolation> violations) {
  std::string message;
  google::rpc::BadRequest bad_request;
  for (const auto& v : violations) {
    if (!message.empty()) absl::StrAppend(&message, "; ");
    absl::StrAppend(&message, v.field, ": ", v.description);
    auto* fv = bad_request.add_field_violations();
    fv->set_field(v.field);
    fv->set_description(v.description);
  }
  absl::Status status = MakeError(absl::StatusCode::kInvalidArgument, "INVALID_FIELD", message);
  status.SetPayload(kBadRequestUrl, absl::Cord(bad_request.SerializeAsString()));
  return status;
}

std::string ErrorReason(const absl::Status& status) {
  google::rpc::ErrorInfo info;
  return ReadPayload(status, kErrorInfoUrl, &info) ? info.reason() : "";
}

std::map<std::string, std::string> ErrorMetadata(const absl::Status& status) {
  google::rpc::ErrorInfo info;
  if (!ReadPayload(status, kErrorInfoUrl, &info)) return {};
  return {info.metadata().begin(), info.metadata().end()};
}

std::vector<FieldViolation> ErrorFieldViolations(const absl::Status& status) {
  google::rpc::BadRequest bad_request;
  std::vector<FieldViolation> out;
  if (!ReadPayload(status, kBadRequestUrl, &bad_request)) return out;
  for (const auto& v : bad_request.field_violations()) out.push_back({v.field(), v.description()});
  return out;
}

absl::Status WithMetadata(absl::Status status, const std::string& key, const std::string& value) {
  if (status.ok()) return status;
  google::rpc::ErrorInfo info;
  if (!ReadPayload(status, kErrorInfoUrl, &info)) {
    info.set_reason(std::string(DefaultReason(status.code())));
    info.set_domain(std::string(kErrorDomain));
  }
  (*info.mutable_metadata())[key] = value;
  SetErrorInfo(status, info);
  return status;
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  auto code = static_cast<grpc::StatusCode>(status.code());
  std::string message(status.message());
  if (status.code() == absl::StatusCode::kInternal || status.code() == absl::StatusCode::kUnknown ||
      status.code() == absl::StatusCode::kDataLoss) {
    // Bugs and corruption: details stay in the server log, the caller gets a reference.
    static std::atomic<uint64_t> next_ref{1};
    std::string ref = absl::StrCat("err-", next_ref.fetch_add(1));
    spdlog::error("internal error {}: {}", ref, status.ToString());
    message = absl::StrCat("internal error (reference ", ref, "); the request was not applied");
    return grpc::Status(code, message);
  }
  google::rpc::Status proto;
  proto.set_code(static_cast<int>(status.code()));
  proto.set_message(message);
  google::rpc::ErrorInfo info;
  if (!ReadPayload(status, kErrorInfoUrl, &info)) {
    info.set_reason(std::string(DefaultReason(status.code())));
    info.set_domain(std::string(kErrorDomain));
  }
  if (!info.reason().empty()) proto.add_details()->PackFrom(info);
  google::rpc::BadRequest bad_request;
  if (ReadPayload(status, kBadRequestUrl, &bad_request)) proto.add_details()->PackFrom(bad_request);
  return grpc::Status(code, message, proto.SerializeAsString());
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  absl::Status out(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  google::rpc::Status proto;
  if (!status.error_details().empty() && proto.ParseFromString(status.error_details())) {
    for (const auto& any : proto.details()) {
      if (any.Is<google::rpc::ErrorInfo>()) {
        out.SetPayload(kErrorInfoUrl, absl::Cord(any.value()));
      } else if (any.Is<google::rpc::BadRequest>()) {
        out.SetPayload(kBadRequestUrl, absl::Cord(any.value()));
      }
    }
  }
  return out;
}

}  // namespace continuum
