// gRPC adapter of the messaging service.
#pragma once

#include <vector>

#include "continuum/messaging/v1/messaging_service.grpc.pb.h"
#include "common/auth/grpc_auth.h"
#include "common/db/migrations.h"
#include "common/server/executor.h"

namespace continuum::messaging {

// Schema migrations (generated from migrations/*.sql).
const std::vector<db::Migration>& Migrations();

inline constexpr char kHealthName[] = "continuum.messaging.v1.MessagingService";

// Registers MessagingService. Business methods arrive with the messaging issue; until then the generated
// base class answers UNIMPLEMENTED for each of them.
class MessagingServiceImpl final : public continuum::messaging::v1::MessagingService::CallbackService {
 public:
  MessagingServiceImpl(const auth::Authenticator& authenticator, BoundedExecutor& executor)
      : authenticator_(authenticator), executor_(executor) {}

 private:
  const auth::Authenticator& authenticator_;
  BoundedExecutor& executor_;
};

}  // namespace continuum::messaging
