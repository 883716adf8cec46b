// A flat-enough JSON object writer for the loadgen's one-line results (no parser needed here:
// the report script reads them with Python's json module).
#pragma once

#include <cstdint>
#include <string>

namespace continuum::loadgen {

class JsonObject {
 public:
  JsonObject& Str(const std::string& key, const std::string& value);
  JsonObject& Num(const std::string& key, double value);  // NaN/inf are written as null
  JsonObject& Int(const std::string& key, int64_t value);
  JsonObject& Bool(const std::string& key, bool value);
  JsonObject& Null(const std::string& key);
  JsonObject& Object(const std::string& key, const JsonObject& value);
  std::string str() const { return "{" + body_ + "}"; }

 private:
  JsonObject& Raw(const std::string& key, const std::string& json);
  std::string body_;
};

// `s` as a JSON string literal, quotes included.
std::string JsonQuote(const std::string& s);

}  // namespace continuum::loadgen
