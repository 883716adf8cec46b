#include <thread>

#include "common/db/backends.h"

namespace continuum::db {

absl::Status RetryAborted(int max_attempts, const std::function<absl::Status()>& attempt) {
  absl::Status status;
  for (int i = 0; i < std::max(1, max_attempts); ++i) {
    if (i > 0) {
      // Back off a little so the conflicting transaction can finish (1 ms, 4 ms, 16 ms, ...).
      std::this_thread::sleep_for(std::chrono::milliseconds(1 << (2 * std::min(i - 1, 4))));
    }
    status = attempt();
    if (status.code() != absl::StatusCode::kAborted) return status;
  }
  return status;
}

}  // namespace continuum::db
