// Presence in Redis. Per person: a hash of devices ("status:expires_ms:seen_ms") that also
// holds, under the field "", the effective state ("status:change_ms:seen_ms", written when the
// status changes; last seen is computed from the devices); per clinic: a sorted set of people
// scored by last-seen time, which the sweeper scans to mark people OFFLINE deterministically
// once every device's TTL has passed (keyspace notifications are late and lossy, so they are
// not used).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/redis/client.h"
#include "common/time/clock.h"
#include "continuum/messaging/v1/presence.pb.h"

namespace continuum::messaging {

namespace v1 = ::continuum::messaging::v1;
namespace cv1 = ::continuum::common::v1;

struct PresenceUpdate {
  v1::Presence presence;
  cv1::PresenceStatus previous = cv1::PRESENCE_STATUS_OFFLINE;
  bool changed() const { return presence.status() != previous; }
};

class PresenceStore {
 public:
  PresenceStore(redis::Client& redis, Clock& clock) : redis_(redis), clock_(clock) {}

  // A heartbeat from one device; IN_SESSION is reserved to SetInSession.
  absl::StatusOr<PresenceUpdate> Heartbeat(const std::string& person_id, const std::vector<std::string>& clinics,
                                           const std::string& device, cv1::PresenceStatus status, absl::Duration ttl);
  // Several heartbeats (of any people) in one Redis script call; one result per beat, in order.
  struct Beat {
    std::string person_id;
    std::vector<std::string> clinics;
    std::string device;
    cv1::PresenceStatus status;
    absl::Duration ttl;
  };
  std::vector<absl::StatusOr<PresenceUpdate>> HeartbeatMany(const std::vector<Beat>& beats);
  // The client's medicine session (a pseudo-device "session" that outranks the others).
  absl::StatusOr<PresenceUpdate> SetInSession(const std::string& person_id, const std::vector<std::string>& clinics,
                                              bool in_session);
  absl::StatusOr<v1::Presence> Get(const std::string& person_id);
  // People of `clinic_id` whose every device has expired: marks them OFFLINE and returns the
  // changes (each change is returned by exactly one replica).
  absl::StatusOr<std::vector<PresenceUpdate>> Sweep(const std::string& clinic_id);
  // Clinics that have had presence.
  absl::StatusOr<std::vector<std::string>> Clinics();

 private:
  // Records `device` (unless empty) and recomputes the effective status in one script call.
  absl::StatusOr<PresenceUpdate> Run(const std::string& person, const std::vector<std::string>& clinics,
                                     const std::string& device, const std::string& device_value);
  absl::StatusOr<PresenceUpdate> Recompute(const std::string& person_id);

  redis::Client& redis_;
  Clock& clock_;
};

}  // namespace continuum::messaging
