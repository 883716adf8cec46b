// gRPC adapter of the session_record service.
#pragma once

#include <vector>

#include "continuum/records/v1/session_record_service.grpc.pb.h"
#include "common/auth/grpc_auth.h"
#include "common/db/migrations.h"
#include "common/server/executor.h"

namespace continuum::session_record {

// Schema migrations (generated from migrations/*.sql).
const std::vector<db::Migration>& Migrations();

inline constexpr char kHealthName[] = "continuum.records.v1.SessionRecordService";

// Registers SessionRecordService. Business methods arrive with the session_record issue; until then the generated
// base class answers UNIMPLEMENTED for each of them.
class SessionRecordServiceImpl final : public continuum::records::v1::SessionRecordService::CallbackService {
 public:
  SessionRecordServiceImpl(const auth::Authenticator& authenticator, BoundedExecutor& executor)
      : authenticator_(authenticator), executor_(executor) {}

 private:
  const auth::Authenticator& authenticator_;
  BoundedExecutor& executor_;
};

}  // namespace continuum::session_record
