// RETURN_IF_ERROR and ASSIGN_OR_RETURN, shaped like the macros Abseil uses internally
// (Debian's Abseil 20220623 does not ship them).
#ifndef PALISADE_SERVICES_COMMON_STATUS_MACROS_H_
#define PALISADE_SERVICES_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define PALISADE_CONCAT_INNER_(a, b) a##b
#define PALISADE_CONCAT_(a, b) PALISADE_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                            \
  do {                                                   \
    ::absl::Status palisade_status_ = (expr);            \
    if (!palisade_status_.ok()) return palisade_status_; \
  } while (0)

#define ASSIGN_OR_RETURN(lhs, expr) \
  PALISADE_ASSIGN_OR_RETURN_IMPL_(PALISADE_CONCAT_(palisade_statusor_, __LINE__), lhs, expr)

#define PALISADE_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                    \
  if (!statusor.ok()) return std::move(statusor).status();   \
  lhs = std::move(statusor).value()

#endif  // PALISADE_SERVICES_COMMON_STATUS_MACROS_H_
