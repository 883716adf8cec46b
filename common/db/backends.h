// Backend constructors behind db::Open. Internal to common/db.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/db/database.h"

namespace continuum::db {

absl::StatusOr<std::unique_ptr<Database>> OpenSqlite(const std::string& path,
                                                     const Options& options);
absl::StatusOr<std::unique_ptr<Database>> OpenPostgres(const std::string& url,
                                                       const Options& options);

// Retries `attempt` while it returns ABORTED, with a short growing back-off.
absl::Status RetryAborted(int max_attempts, const std::function<absl::Status()>& attempt);

}  // namespace continuum::db
