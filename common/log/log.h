// Logging setup: spdlog to stderr, one line per event, with the service name.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace continuum {

// `level`: trace, debug, info, warn, error. INVALID_ARGUMENT for anything else.
absl::Status InitLogging(const std::string& service, const std::string& level);

}  // namespace continuum
