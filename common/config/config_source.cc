#include "common/config/config_source.h"

#include <unistd.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"

extern char** environ;

namespace continuum {

ConfigSource::ConfigSource(std::vector<std::string> args, std::vector<std::string> env,
                           std::string env_prefix)
    : env_prefix_(std::move(env_prefix)) {
  for (const auto& arg : args) {
    if (arg == "--help" || arg == "-h") {
      help_requested_ = true;
      continue;
    }
    if (!absl::StartsWith(arg, "--")) {
      errors_.push_back(absl::StrCat("unexpected argument '", arg, "' (options are --name=value)"));
      continue;
    }
    std::string body = arg.substr(2);
    auto eq = body.find('=');
    if (eq == std::string::npos) {
      flags_[body] = "true";  // bare boolean flag
    } else {
      flags_[body.substr(0, eq)] = body.substr(eq + 1);
    }
  }
  for (const auto& kv : env) {
    auto eq = kv.find('=');
    if (eq != std::string::npos) env_[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
}

ConfigSource ConfigSource::FromMain(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) env.emplace_back(*e);
  return ConfigSource(std::move(args), std::move(env));
}

std::string ConfigSource::EnvName(const std::string& prefix, const std::string& flag) {
  return prefix + absl::AsciiStrToUpper(absl::StrReplaceAll(flag, {{"-", "_"}}));
}

bool ConfigSource::Lookup(const std::string& name, std::string* value, std::string* origin) {
  used_.insert(name);
  if (auto it = flags_.find(name); it != flags_.end()) {
    *value = it->second;
    *origin = "--" + name;
    return true;
  }
  std::string env_name = EnvName(env_prefix_, name);
  if (auto it = env_.find(env_name); it != env_.end()) {
    *value = it->second;
    *origin = env_name;
    return true;
  }
  return false;
}

void ConfigSource::Describe(const std::string& name, const std::string& default_value,
                            const std::string& help) {
  usage_.push_back(absl::StrCat("  --", name, " (env ", EnvName(env_prefix_, name), ", default '",
                                default_value, "')\n      ", help));
}

std::string ConfigSource::String(const std::string& name, const std::string& default_value,
                                 const std::string& help) {
  Describe(name, default_value, help);
  std::string value, origin;
  return Lookup(name, &value, &origin) ? value : default_value;
}

int64_t ConfigSource::Int(const std::string& name, int64_t default_value, const std::string& help,
                          int64_t min, int64_t max) {
  Describe(name, absl::StrCat(default_value), help);
  std::string value, origin;
  if (!Lookup(name, &value, &origin)) return default_value;
  int64_t parsed;
  if (!absl::SimpleAtoi(value, &parsed)) {
    errors_.push_back(absl::StrCat(origin, "='", value, "' is not an integer"));
    return default_value;
  }
  if (parsed < min || parsed > max) {
    errors_.push_back(absl::StrCat(origin, "=", parsed, " is out of range [", min, ", ", max, "]"));
    return default_value;
  }
  return parsed;
}

bool ConfigSource::Bool(const std::string& name, bool default_value, const std::string& help) {
  Describe(name, default_value ? "true" : "false", help);
  std::string value, origin;
  if (!Lookup(name, &value, &origin)) return default_value;
  bool parsed;
  if (!absl::SimpleAtob(value, &parsed)) {
    errors_.push_back(absl::StrCat(origin, "='", value, "' is not a boolean (true/false)"));
    return default_value;
  }
  return parsed;
}

absl::Duration ConfigSource::Duration(const std::string& name, absl::Duration default_value,
                                      const std::string& help) {
  Describe(name, absl::FormatDuration(default_value), help);
  std::string value, origin;
  if (!Lookup(name, &value, &origin)) return default_value;
  absl::Duration parsed;
  if (!absl::ParseDuration(value, &parsed) || parsed < absl::ZeroDuration()) {
    errors_.push_back(
        absl::StrCat(origin, "='", value, "' is not a duration (examples: 500ms, 10s, 72h)"));
    return default_value;
  }
  return parsed;
}

std::string ConfigSource::Usage(const std::string& program) const {
  return absl::StrCat("usage: ", program, " [--option=value ...]\n", absl::StrJoin(usage_, "\n"),
                      "\n");
}

absl::Status ConfigSource::Finish() const {
  std::vector<std::string> problems = errors_;
  for (const auto& [name, value] : flags_) {
    if (!used_.count(name)) problems.push_back(absl::StrCat("unknown flag --", name));
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("bad configuration: ", absl::StrJoin(problems, "; ")));
}

}  // namespace continuum
