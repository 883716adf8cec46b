#include "tools/loadgen/json.h"

#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace continuum::loadgen {

std::string JsonQuote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (c < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

JsonObject& JsonObject::Raw(const std::string& key, const std::string& json) {
  if (!body_.empty()) body_ += ",";
  absl::StrAppend(&body_, JsonQuote(key), ":", json);
  return *this;
}

JsonObject& JsonObject::Str(const std::string& key, const std::string& value) { return Raw(key, JsonQuote(value)); }

JsonObject& JsonObject::Num(const std::string& key, double value) {
  return Raw(key, std::isfinite(value) ? absl::StrFormat("%.6g", value) : "null");
}

JsonObject& JsonObject::Int(const std::string& key, int64_t value) { return Raw(key, absl::StrCat(value)); }

JsonObject& JsonObject::Bool(const std::string& key, bool value) { return Raw(key, value ? "true" : "false"); }

JsonObject& JsonObject::Null(const std::string& key) { return Raw(key, "null"); }

JsonObject& JsonObject::Object(const std::string& key, const JsonObject& value) { return Raw(key, value.str()); }

}  // namespace continuum::loadgen
