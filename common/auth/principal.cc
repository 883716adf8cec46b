#include "common/auth/principal.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status/errors.h"

namespace continuum::auth {

namespace {
constexpr std::pair<Role, absl::string_view> kRoles[] = {
    {Role::kClient, "client"}, {Role::kTherapist, "therapist"}, {Role::kClinician, "clinician"},
    {Role::kSitter, "sitter"}, {Role::kAdmin, "admin"},         {Role::kPartner, "partner"},
    {Role::kService, "service"},
};
}  // namespace

Role RoleFromString(absl::string_view s) {
  for (const auto& [role, name] : kRoles) {
    if (name == s) return role;
  }
  return Role::kUnspecified;
}

absl::string_view RoleName(Role role) {
  for (const auto& [r, name] : kRoles) {
    if (r == role) return name;
  }
  return "unspecified";
}

bool Principal::InClinic(absl::string_view clinic) const {
  return std::any_of(clinics.begin(), clinics.end(),
                     [&](const std::string& c) { return c == "*" || c == clinic; });
}

absl::Status RequireClinic(const Principal& p, absl::string_view clinic) {
  if (p.InClinic(clinic)) return absl::OkStatus();
  return MakeError(absl::StatusCode::kPermissionDenied, "PERMISSION_DENIED_CROSS_CLINIC",
                   absl::StrCat("caller '", p.subject, "' does not act in clinic '", clinic,
                                "'; use a token issued for that clinic"),
                   {{"clinic", std::string(clinic)}});
}

absl::Status RequireRole(const Principal& p, std::initializer_list<Role> roles,
                         absl::string_view action) {
  if (std::find(roles.begin(), roles.end(), p.role) != roles.end()) return absl::OkStatus();
  std::string allowed;
  for (Role r : roles) absl::StrAppend(&allowed, allowed.empty() ? "" : ", ", RoleName(r));
  return MakeError(absl::StatusCode::kPermissionDenied, "PERMISSION_DENIED_ROLE",
                   absl::StrCat("a ", RoleName(p.role), " may not ", action, " (allowed: ", allowed,
                                ")"),
                   {{"role", std::string(RoleName(p.role))}});
}

}  // namespace continuum::auth
