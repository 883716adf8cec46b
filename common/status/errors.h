// Building errors with machine-readable details, and the one mapping to grpc::Status.
//
// Inside Continuum every failure is an absl::Status. A status may carry, as payloads, a
// google.rpc.ErrorInfo (reason in UPPER_SNAKE, domain, metadata) and a google.rpc.BadRequest
// (field violations). ToGrpcStatus turns both into the `grpc-status-details-bin` trailer so
// any gRPC client (C++, Node, Python) can read them as google.rpc.Status details.
#pragma once

#include <map>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace continuum {

// ErrorInfo.domain of every error Continuum returns.
inline constexpr absl::string_view kErrorDomain = "continuum.health";

struct FieldViolation {
  std::string field;        // e.g. "appointment.start_time"
  std::string description;  // what is wrong and how to fix it
};

// An error with ErrorInfo{reason, domain=kErrorDomain, metadata}.
absl::Status MakeError(absl::StatusCode code, absl::string_view reason, absl::string_view message,
                       const std::map<std::string, std::string>& metadata = {});

// INVALID_ARGUMENT, reason INVALID_FIELD, with a BadRequest listing the violations.
absl::Status InvalidFields(std::vector<FieldViolation> violations);
inline absl::Status InvalidField(std::string field, std::string description) {
  return InvalidFields({{std::move(field), std::move(description)}});
}

// Accessors for the details attached by the functions above ("" / empty when absent).
std::string ErrorReason(const absl::Status& status);
std::map<std::string, std::string> ErrorMetadata(const absl::Status& status);
std::vector<FieldViolation> ErrorFieldViolations(const absl::Status& status);

// Adds or replaces a metadata entry on an existing error (e.g. the resource name).
absl::Status WithMetadata(absl::Status status, const std::string& key, const std::string& value);

// The single absl::Status -> grpc::Status mapping used by every server. INTERNAL and UNKNOWN
// errors are logged with their message and returned with a generic message, never leaked.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The reverse, for service-to-service calls: keeps code, message and details.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace continuum
