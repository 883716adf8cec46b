#include "common/db/database.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/db/backends.h"
#include "common/status/macros.h"

namespace continuum::db {

Value Null() { return std::monostate{}; }
Value Micros(absl::Time t) { return absl::ToUnixMicros(t); }

bool Row::IsNull(size_t i) const { return std::holds_alternative<std::monostate>(cells_.at(i)); }

int64_t Row::Int(size_t i) const {
  const Value& v = cells_.at(i);
  if (auto* n = std::get_if<int64_t>(&v)) return *n;
  if (auto* d = std::get_if<double>(&v)) return static_cast<int64_t>(*d);
  if (auto* s = std::get_if<std::string>(&v)) {
    int64_t out = 0;
    if (absl::SimpleAtoi(*s, &out)) return out;
    if (*s == "t") return 1;  // PostgreSQL boolean text
  }
  return 0;
}

double Row::Double(size_t i) const {
  const Value& v = cells_.at(i);
  if (auto* d = std::get_if<double>(&v)) return *d;
  if (auto* n = std::get_if<int64_t>(&v)) return static_cast<double>(*n);
  if (auto* s = std::get_if<std::string>(&v)) {
    double out = 0;
    if (absl::SimpleAtod(*s, &out)) return out;
  }
  return 0;
}

std::string Row::Text(size_t i) const {
  const Value& v = cells_.at(i);
  if (auto* s = std::get_if<std::string>(&v)) return *s;
  if (auto* n = std::get_if<int64_t>(&v)) return absl::StrCat(*n);
  if (auto* d = std::get_if<double>(&v)) return absl::StrCat(*d);
  if (auto* b = std::get_if<Blob>(&v)) return b->bytes;
  return "";
}

std::string Row::Bytes(size_t i) const { return Text(i); }

absl::Time Row::Time(size_t i) const { return absl::FromUnixMicros(Int(i)); }

std::optional<int64_t> Row::OptionalInt(size_t i) const {
  if (IsNull(i)) return std::nullopt;
  return Int(i);
}

absl::StatusOr<Rows> Database::Query(absl::string_view sql, const Params& params) {
  Rows out;
  RETURN_IF_ERROR(InTransaction(
      [&](Tx& tx) -> absl::Status {
        ASSIGN_OR_RETURN(out, tx.Query(sql, params));
        return absl::OkStatus();
      }));
  return out;
}

absl::Status Database::Ping() {
  return InTransaction([](Tx& tx) { return tx.Query("SELECT 1").status(); }, TxMode::kReadOnly, 1);
}

absl::StatusOr<int64_t> Database::Exec(absl::string_view sql, const Params& params) {
  int64_t changed = 0;
  RETURN_IF_ERROR(InTransaction([&](Tx& tx) -> absl::Status {
    ASSIGN_OR_RETURN(changed, tx.Exec(sql, params));
    return absl::OkStatus();
  }));
  return changed;
}

std::string Placeholders(size_t count, size_t first) {
  std::string out = "(";
  for (size_t i = 0; i < count; ++i) absl::StrAppend(&out, i ? ", $" : "$", first + i);
  return out + ")";
}

std::string ExpandDialect(absl::string_view sql, Backend backend) {
  bool pg = backend == Backend::kPostgres;
  return absl::StrReplaceAll(
      sql, {{"{{AUTOINCREMENT_PK}}", pg ? "BIGSERIAL PRIMARY KEY" : "INTEGER PRIMARY KEY AUTOINCREMENT"},
            {"{{BLOB}}", pg ? "BYTEA" : "BLOB"}});
}

absl::StatusOr<std::unique_ptr<Database>> Open(const Options& options) {
  const std::string& url = options.url;
  if (absl::StartsWith(url, "sqlite:")) return OpenSqlite(url.substr(7), options);
  if (absl::StartsWith(url, "postgres://") || absl::StartsWith(url, "postgresql://")) {
    return OpenPostgres(url, options);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "database url '", url,
      "' is not understood: use sqlite:/path/file.db, sqlite::memory: or postgres://..."));
}

}  // namespace continuum::db
