// Rows whose cells hold protobuf encodings (the stores keep resources this way).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/db/database.h"
#include "common/status/macros.h"

namespace continuum::db {

// The message in `row`'s column `col`; DATA_LOSS if it does not parse.
template <typename T>
absl::StatusOr<T> ParseProto(const Row& row, size_t col) {
  T value;
  if (!value.ParseFromString(row.Bytes(col))) {
    return absl::DataLossError(absl::StrCat("stored ", T::descriptor()->name(), " does not parse"));
  }
  return value;
}

// Runs `sql` and parses column 0 of every row as T.
template <typename T>
absl::StatusOr<std::vector<T>> QueryProtos(Tx& tx, absl::string_view sql, const Params& params) {
  ASSIGN_OR_RETURN(Rows rows, tx.Query(sql, params));
  std::vector<T> out;
  out.reserve(rows.size());
  for (const auto& row : rows) {
    ASSIGN_OR_RETURN(T value, ParseProto<T>(row, 0));
    out.push_back(std::move(value));
  }
  return out;
}

}  // namespace continuum::db
