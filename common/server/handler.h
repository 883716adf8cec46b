// The shape of every unary handler: authenticate the caller, run the domain call on the
// bounded executor (never on a gRPC thread), map its status once.
#pragma once

#include <functional>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/auth/grpc_auth.h"
#include "common/server/service_host.h"
#include "common/status/errors.h"
#include "common/status/macros.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/proto_buffer_reader.h"

namespace continuum {

inline grpc::ServerUnaryReactor* RunAuthenticated(
    grpc::CallbackServerContext* context, BoundedExecutor& executor, const auth::Authenticator& authenticator,
    std::function<absl::Status(const auth::Principal&)> fn) {
  return RunBlocking(context, executor, [context, &authenticator, fn = std::move(fn)]() -> absl::Status {
    ASSIGN_OR_RETURN(auth::Principal principal, authenticator.Authenticate(*context));
    return fn(principal);
  });
}

// Defines an override of a generated CallbackService unary method that forwards to
// `domain_.Method(principal, request)` and copies the result into the response. The class
// needs members `executor_`, `authenticator_` and `domain_`.
#define CONTINUUM_UNARY(Method, Request, Response)                                                  \
  grpc::ServerUnaryReactor* Method(grpc::CallbackServerContext* context, const Request* request,    \
                                   Response* response) override {                                   \
    return ::continuum::RunAuthenticated(                                                           \
        context, executor_, authenticator_,                                                         \
        [this, request, response](const ::continuum::auth::Principal& p) -> absl::Status {          \
          ASSIGN_OR_RETURN(*response, domain_.Method(p, *request));                                 \
          return absl::OkStatus();                                                                  \
        });                                                                                         \
  }

// For methods whose answer already exists as bytes (session-record's writes answer with the
// version exactly as stored): the method is marked raw in the service class
// (WithRawCallbackMethod_X), so the request arrives as bytes and is parsed here, and the
// response is those bytes, not a message copied and serialized again. On the wire nothing
// differs from the typed method.
inline absl::Status ParseRequest(const grpc::ByteBuffer& bytes, google::protobuf::Message& request) {
  grpc::ByteBuffer shared(bytes);  // shares the slices; the reader consumes its own buffer
  grpc::ProtoBufferReader reader(&shared);
  if (!reader.status().ok() || !request.ParseFromZeroCopyStream(&reader)) {
    return InvalidField("(request)", absl::StrCat("the bytes are not a valid ", request.GetTypeName(),
                                                  " message; send the message of this method"));
  }
  return absl::OkStatus();
}

inline void SetResponseBytes(const std::string& bytes, grpc::ByteBuffer* response) {
  grpc::Slice slice(bytes);
  grpc::ByteBuffer out(&slice, 1);
  response->Swap(&out);
}

// Like CONTINUUM_UNARY for a method marked raw: `domain_.Method(principal, request)` returns a
// value whose `bytes()` are the serialized response.
#define CONTINUUM_UNARY_PRESERIALIZED(Method, Request)                                               \
  grpc::ServerUnaryReactor* Method(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request, \
                                   grpc::ByteBuffer* response) override {                           \
    return ::continuum::RunAuthenticated(                                                           \
        context, executor_, authenticator_,                                                         \
        [this, request, response](const ::continuum::auth::Principal& p) -> absl::Status {          \
          Request parsed;                                                                           \
          RETURN_IF_ERROR(::continuum::ParseRequest(*request, parsed));                             \
          ASSIGN_OR_RETURN(auto answer, domain_.Method(p, parsed));                                 \
          ::continuum::SetResponseBytes(answer.bytes(), response);                                  \
          return absl::OkStatus();                                                                  \
        });                                                                                         \
  }

}  // namespace continuum
