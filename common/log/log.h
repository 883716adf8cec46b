// Logging setup: spdlog to stderr, one line per event, with the service name.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace continuum {

// `level`: trace, debug, info, warn, error. INVALID_ARGUMENT for anything else.
absl::Status InitLogging(const std::string& service, const std::string& level);

// Names the calling thread (at most 15 characters shown) for `top -H`, `perf` and gdb, so an
// operator can tell which background loop burns CPU.
void NameThisThread(const char* name);

}  // namespace continuum
