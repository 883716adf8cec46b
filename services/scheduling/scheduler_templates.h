// Definitions of Scheduler's transaction templates, shared by scheduler.cc and booking.cc.
#pragma once

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/api/api.h"
#include "common/api/idempotency.h"
#include "common/status/errors.h"
#include "common/status/macros.h"
#include "services/scheduling/scheduler.h"

namespace continuum::scheduling {

template <typename Resp>
absl::StatusOr<Resp> Scheduler::Mutate(const P& p, const char* method, const std::string& request_id,
                                       const google::protobuf::Message& request,
                                       const std::function<absl::StatusOr<Resp>(SchedulingStore&)>& fn) {
  AppointmentKeys changed;  // by the last attempt
  absl::StatusOr<Resp> response =
      api::RunIdempotent<Resp>(db_, clock_, p.subject, method, request_id, request, [&](db::Tx& tx) {
        changed.clear();
        SchedulingStore store(tx, &changed);
        return fn(store);
      });
  // Dropped whatever the outcome: a failed COMMIT may still have committed.
  if (options_.appointment_cache != nullptr) {
    for (const auto& [clinic_id, appointment_id] : changed) options_.appointment_cache->Invalidate(clinic_id, appointment_id);
  }
  if (!response.ok()) return response.status();
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
