// gRPC adapter of the scheduling service.
#pragma once

#include <vector>

#include "continuum/scheduling/v1/scheduling_service.grpc.pb.h"
#include "common/auth/grpc_auth.h"
#include "common/db/migrations.h"
#include "common/server/executor.h"

namespace continuum::scheduling {

// Schema migrations (generated from migrations/*.sql).
const std::vector<db::Migration>& Migrations();

inline constexpr char kHealthName[] = "continuum.scheduling.v1.SchedulingService";

// Registers SchedulingService. Business methods arrive with the scheduling issue; until then the generated
// base class answers UNIMPLEMENTED for each of them.
class SchedulingServiceImpl final : public continuum::scheduling::v1::SchedulingService::CallbackService {
 public:
  SchedulingServiceImpl(const auth::Authenticator& authenticator, BoundedExecutor& executor)
      : authenticator_(authenticator), executor_(executor) {}

 private:
  const auth::Authenticator& authenticator_;
  BoundedExecutor& executor_;
};

}  // namespace continuum::scheduling
