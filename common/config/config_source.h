// Configuration from command-line flags and the environment, read only in main().
//
// Each option has a kebab-case flag name; its environment variable is the prefix plus the
// name in UPPER_SNAKE: "listen-address" -> --listen-address=... or CONTINUUM_LISTEN_ADDRESS.
// A flag beats the environment, which beats the default. Unknown flags, malformed values and
// failed validations are collected, so main() can print one clear line and exit non-zero.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace continuum {

class ConfigSource {
 public:
  // `env` is a list of "KEY=value" strings (pass `environ` in main, a vector in tests).
  ConfigSource(std::vector<std::string> args, std::vector<std::string> env,
               std::string env_prefix = "CONTINUUM_");
  static ConfigSource FromMain(int argc, char** argv);

  std::string String(const std::string& name, const std::string& default_value,
                     const std::string& help);
  int64_t Int(const std::string& name, int64_t default_value, const std::string& help,
              int64_t min = INT64_MIN, int64_t max = INT64_MAX);
  bool Bool(const std::string& name, bool default_value, const std::string& help);
  // Durations in absl syntax: "500ms", "10s", "72h".
  absl::Duration Duration(const std::string& name, absl::Duration default_value,
                          const std::string& help);

  // Records a validation failure found by the caller (e.g. two options that conflict).
  void AddError(std::string error) { errors_.push_back(std::move(error)); }

  bool help_requested() const { return help_requested_; }
  // The --help text: every option read so far with its env var, default and help.
  std::string Usage(const std::string& program) const;
  // OK, or InvalidArgument with every problem on one line (including unknown flags).
  absl::Status Finish() const;

  static std::string EnvName(const std::string& prefix, const std::string& flag);

 private:
  // Returns the raw value and where it came from ("--flag" or "ENV"), if set.
  bool Lookup(const std::string& name, std::string* value, std::string* origin);
  void Describe(const std::string& name, const std::string& default_value,
                const std::string& help);

  std::string env_prefix_;
  std::map<std::string, std::string> flags_;
  std::map<std::string, std::string> env_;
  std::set<std::string> used_;
  std::vector<std::string> errors_;
  std::vector<std::string> usage_;
  bool help_requested_ = false;
};

}  // namespace continuum
