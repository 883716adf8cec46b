#include "common/log/log.h"

#include <pthread.h>

#include <cstdio>

#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace continuum {

absl::Status InitLogging(const std::string& service, const std::string& level) {
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError("log level '" + level +
                                      "' is not one of trace, debug, info, warn, error, off");
  }
  auto logger = spdlog::stderr_logger_mt(service);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %^%l%$ [%n] %v", spdlog::pattern_time_type::utc);
  logger->set_level(parsed);
  spdlog::set_default_logger(logger);
  return absl::OkStatus();
}

void NameThisThread(const char* name) {
  char truncated[16] = {};
  snprintf(truncated, sizeof truncated, "%s", name);
  pthread_setname_np(pthread_self(), truncated);
}

}  // namespace continuum
