// Who is calling, as established by authentication, and the checks every handler uses.
#pragma once

#include "absl/time/time.h"

#include <initializer_list>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"

namespace continuum::auth {

enum class Role { kUnspecified, kClient, kTherapist, kClinician, kSitter, kAdmin, kPartner, kService };

// "client", "therapist", ... (the JWT "role" claim); kUnspecified for anything else.
Role RoleFromString(absl::string_view s);
absl::string_view RoleName(Role role);

struct Principal {
  std::string subject;               // person id (people/{subject}) or partner/service id
  Role role = Role::kUnspecified;
  std::vector<std::string> clinics;  // clinic ids the principal acts in; "*" = all
  // When the credential that proved this principal is acceptable (token nbf/exp with the
  // verifier's leeway); lets a verified token be reused without verifying it again.
  absl::Time valid_from = absl::InfinitePast();
  absl::Time valid_until = absl::InfiniteFuture();

  bool InClinic(absl::string_view clinic) const;
  bool Is(Role r) const { return role == r; }
};

// PERMISSION_DENIED (reason PERMISSION_DENIED_CROSS_CLINIC) unless the principal acts in
// `clinic`.
absl::Status RequireClinic(const Principal& p, absl::string_view clinic);
// PERMISSION_DENIED (reason PERMISSION_DENIED_ROLE) unless the principal has one of `roles`;
// `action` completes the message ("... may not <action>").
absl::Status RequireRole(const Principal& p, std::initializer_list<Role> roles,
                         absl::string_view action);

}  // namespace continuum::auth
