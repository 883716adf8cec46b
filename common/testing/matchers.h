// GoogleTest matchers shared by the tests.
#pragma once

#include "common/status/errors.h"
#include "gmock/gmock.h"

namespace continuum::testing {

// Matches a failed absl::StatusOr / Status-bearing result with this code and ErrorInfo reason.
MATCHER_P2(IsError, code, reason, "") {
  if (arg.ok()) {
    *result_listener << "is OK";
    return false;
  }
  *result_listener << arg.status();
  return arg.status().code() == code && ErrorReason(arg.status()) == reason;
}

}  // namespace continuum::testing
