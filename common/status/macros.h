// RETURN_IF_ERROR / ASSIGN_OR_RETURN: Abseil 20220623 ships neither.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define CONTINUUM_STATUS_CONCAT_INNER(a, b) a##b
#define CONTINUUM_STATUS_CONCAT(a, b) CONTINUUM_STATUS_CONCAT_INNER(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define RETURN_IF_ERROR(expr)                                      \
  do {                                                             \
    ::absl::Status continuum_status_ = (expr);                     \
    if (!continuum_status_.ok()) return continuum_status_;         \
  } while (false)

// ASSIGN_OR_RETURN(lhs, expr): evaluates the StatusOr `expr`; returns its status on error,
// otherwise moves the value into `lhs` (which may be a declaration: `auto x`).
#define ASSIGN_OR_RETURN(lhs, expr) \
  CONTINUUM_ASSIGN_OR_RETURN_IMPL(CONTINUUM_STATUS_CONCAT(continuum_statusor_, __LINE__), lhs, expr)

#define CONTINUUM_ASSIGN_OR_RETURN_IMPL(statusor, lhs, expr) \
  auto statusor = (expr);                                    \
  if (!statusor.ok()) return std::move(statusor).status();   \
  lhs = std::move(statusor).value()
