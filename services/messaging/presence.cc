#include "services/messaging/presence.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status/macros.h"
#include "common/time/proto_time.h"

namespace continuum::messaging {
namespace {

std::string DevicesKey(const std::string& p) { return "continuum:presence:devices:" + p; }
std::string StateKey(const std::string& p) { return "continuum:presence:state:" + p; }
std::string ClinicKey(const std::string& c) { return "continuum:presence:clinic:" + c; }
constexpr char kClinicsKey[] = "continuum:presence:clinics";

// Strongest first (see PresenceStatus): IN_SESSION > DO_NOT_DISTURB > ONLINE > AWAY > OFFLINE.
int Rank(cv1::PresenceStatus s) {
  switch (s) {
    case cv1::PRESENCE_STATUS_IN_SESSION: return 4;
    case cv1::PRESENCE_STATUS_DO_NOT_DISTURB: return 3;
    case cv1::PRESENCE_STATUS_ONLINE: return 2;
    case cv1::PRESENCE_STATUS_AWAY: return 1;
    default: return 0;
  }
}

int64_t Ms(absl::Time t) { return absl::ToUnixMillis(t); }

}  // namespace

absl::StatusOr<std::vector<std::string>> PresenceStore::Clinics() {
  ASSIGN_OR_RETURN(redis::Reply r, redis_.Command({"SMEMBERS", kClinicsKey}));
  std::vector<std::string> out;
  for (const auto& e : r.elements) out.push_back(e.str);
  return out;
}

absl::StatusOr<PresenceUpdate> PresenceStore::Heartbeat(const std::string& person, const std::vector<std::string>& clinics,
                                                        const std::string& device, cv1::PresenceStatus status,
                                                        absl::Duration ttl) {
  absl::Time now = clock_.Now();
  RETURN_IF_ERROR(redis_
                      .Command({"HSET", DevicesKey(person), device,
                                absl::StrCat(static_cast<int>(status), ":", Ms(now + ttl), ":", Ms(now))})
                      .status());
  for (const auto& c : clinics) {
    RETURN_IF_ERROR(redis_.Command({"ZADD", ClinicKey(c), absl::StrCat(Ms(now)), person}).status());
    RETURN_IF_ERROR(redis_.Command({"SADD", kClinicsKey, c}).status());
  }
  return Recompute(person);
}

absl::StatusOr<PresenceUpdate> PresenceStore::SetInSession(const std::string& person,
                                                           const std::vector<std::string>& clinics, bool in_session) {
  if (in_session) {
    // A session lasts hours; the pseudo-device expires on its own if the end is never seen.
    return Heartbeat(person, clinics, "session", cv1::PRESENCE_STATUS_IN_SESSION, absl::Hours(12));
  }
  RETURN_IF_ERROR(redis_.Command({"HDEL", DevicesKey(person), "session"}).status());
  return Recompute(person);
}

absl::StatusOr<PresenceUpdate> PresenceStore::Recompute(const std::string& person) {
  absl::Time now = clock_.Now();
  ASSIGN_OR_RETURN(redis::Reply devices, redis_.Command({"HGETALL", DevicesKey(person)}));
  cv1::PresenceStatus best = cv1::PRESENCE_STATUS_OFFLINE;
  int64_t seen = 0;
  std::vector<std::string> expired;
  for (size_t i = 0; i + 1 < devices.elements.size(); i += 2) {
    std::vector<std::string> parts = absl::StrSplit(devices.elements[i + 1].str, ':');
    int status = 0;
    int64_t expires = 0, last = 0;
    if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &status) || !absl::SimpleAtoi(parts[1], &expires) ||
        !absl::SimpleAtoi(parts[2], &last)) {
      continue;
    }
    seen = std::max(seen, last);
    if (expires <= Ms(now)) {
      expired.push_back(devices.elements[i].str);
      continue;
    }
    auto s = static_cast<cv1::PresenceStatus>(status);
    if (Rank(s) > Rank(best)) best = s;
  }
  for (const auto& d : expired) RETURN_IF_ERROR(redis_.Command({"HDEL", DevicesKey(person), d}).status());
  // SET ... GET swaps atomically: of several replicas computing the same change, only the one
  // that sees the old value differ reports it.
  std::string value = absl::StrCat(static_cast<int>(best), ":", Ms(now), ":", seen);
  ASSIGN_OR_RETURN(redis::Reply old, redis_.Command({"GET", StateKey(person)}));
  PresenceUpdate u;
  int previous = 0;
  int64_t change_ms = Ms(now);
  std::vector<std::string> old_parts = absl::StrSplit(old.str, ':');
  if (old_parts.size() == 3 && absl::SimpleAtoi(old_parts[0], &previous)) {
    u.previous = static_cast<cv1::PresenceStatus>(previous);
    if (previous == static_cast<int>(best)) absl::SimpleAtoi(old_parts[1], &change_ms);
  }
  value = absl::StrCat(static_cast<int>(best), ":", change_ms, ":", seen);
  ASSIGN_OR_RETURN(redis::Reply swapped, redis_.Command({"SET", StateKey(person), value, "GET"}));
  std::vector<std::string> swapped_parts = absl::StrSplit(swapped.str, ':');
  int swapped_status = 0;
  if (swapped_parts.size() == 3 && absl::SimpleAtoi(swapped_parts[0], &swapped_status)) {
    u.previous = static_cast<cv1::PresenceStatus>(swapped_status);
  } else {
    u.previous = cv1::PRESENCE_STATUS_OFFLINE;
  }
  u.presence.set_name("people/" + person + "/presence");
  u.presence.set_person("people/" + person);
  u.presence.set_status(best);
  if (seen > 0) *u.presence.mutable_last_seen_time() = ToProto(absl::FromUnixMillis(seen));
  *u.presence.mutable_change_time() = ToProto(absl::FromUnixMillis(change_ms));
  return u;
}

absl::StatusOr<v1::Presence> PresenceStore::Get(const std::string& person) {
  ASSIGN_OR_RETURN(PresenceUpdate u, Recompute(person));
  return u.presence;
}

absl::StatusOr<std::vector<PresenceUpdate>> PresenceStore::Sweep(const std::string& clinic) {
  absl::Time now = clock_.Now();
  // Anyone not seen for 10 s (the shortest TTL) may have expired; recompute those.
  ASSIGN_OR_RETURN(redis::Reply idle, redis_.Command({"ZRANGEBYSCORE", ClinicKey(clinic), "-inf",
                                                      absl::StrCat(Ms(now - absl::Seconds(10))), "LIMIT", "0", "1000"}));
  std::vector<PresenceUpdate> changes;
  for (const auto& e : idle.elements) {
    ASSIGN_OR_RETURN(PresenceUpdate u, Recompute(e.str));
    if (u.presence.status() == cv1::PRESENCE_STATUS_OFFLINE) {
      RETURN_IF_ERROR(redis_.Command({"ZREM", ClinicKey(clinic), e.str}).status());
    }
    if (u.changed()) changes.push_back(std::move(u));
  }
  return changes;
}

}  // namespace continuum::messaging
