// The shape of every unary handler: authenticate the caller, run the domain call on the
// bounded executor (never on a gRPC thread), map its status once.
#pragma once

#include <functional>

#include "common/auth/grpc_auth.h"
#include "common/server/service_host.h"
#include "common/status/macros.h"

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

}  // namespace continuum
