#include "services/messaging/presence.h"

#include "absl/strings/match.h"
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

// Ranks in the script, strongest first (see PresenceStatus):
// IN_SESSION > DO_NOT_DISTURB > ONLINE > AWAY > OFFLINE.
int64_t Ms(absl::Time t) { return absl::ToUnixMillis(t); }

}  // namespace

absl::StatusOr<std::vector<std::string>> PresenceStore::Clinics() {
  ASSIGN_OR_RETURN(redis::Reply r, redis_.Command({"SMEMBERS", kClinicsKey}));
  std::vector<std::string> out;
  for (const auto& e : r.elements) out.push_back(e.str);
  return out;
}

namespace {

// One round trip per heartbeat: recording the device, the clinic index and recomputing the
// effective status run as one Lua script (atomic on the server). Six sequential commands
// used to cost six round trips and capped heartbeats at ~4k/s (docs/perf).
//   KEYS: devices hash, state string, clinics set, then one presence zset per clinic
//   ARGV: now_ms, device ("" = recompute only), device value, person, then the clinic ids
// Returns {best status, change_ms, last_seen_ms, previous status or -1}.
const std::string& PresenceScript() {
  static const std::string* script = new std::string(absl::StrCat(R"lua(
local now = tonumber(ARGV[1])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  for i = 4, #KEYS do
    redis.call('ZADD', KEYS[i], ARGV[1], ARGV[4])
    redis.call('SADD', KEYS[3], ARGV[i + 1])
  end
end
local rank = {)lua", "[", cv1::PRESENCE_STATUS_IN_SESSION, "]=4,[", cv1::PRESENCE_STATUS_DO_NOT_DISTURB, "]=3,[",
      cv1::PRESENCE_STATUS_ONLINE, "]=2,[", cv1::PRESENCE_STATUS_AWAY, "]=1}\nlocal best = ",
      cv1::PRESENCE_STATUS_OFFLINE, R"lua(
local best_rank, seen = 0, 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local st, exp, last = string.match(all[i + 1], '^(%-?%d+):(%-?%d+):(%-?%d+)$')
  if st then
    st, exp, last = tonumber(st), tonumber(exp), tonumber(last)
    if last > seen then seen = last end
    if exp <= now then
      redis.call('HDEL', KEYS[1], all[i])
    elseif (rank[st] or 0) > best_rank then
      best, best_rank = st, rank[st]
    end
  end
end
local change, prev = now, -1
local old = redis.call('GET', KEYS[2])
if old then
  local ps, pc = string.match(old, '^(%-?%d+):(%-?%d+):')
  if ps then
    prev = tonumber(ps)
    if prev == best then change = tonumber(pc) end
  end
end
redis.call('SET', KEYS[2], string.format('%d:%d:%d', best, change, seen))
return {best, change, seen, prev}
)lua"));
  return *script;
}

const std::string& PresenceScriptSha() {
  static const std::string* sha = new std::string(redis::ScriptSha(PresenceScript()));
  return *sha;
}

}  // namespace

namespace {

// The script call of one person: EVALSHA, sha, numkeys, keys..., argv... (see PresenceScript).
std::vector<std::string> ScriptCall(absl::Time now, const std::string& person, const std::vector<std::string>& clinics,
                                    const std::string& device, const std::string& device_value) {
  std::vector<std::string> args = {"EVALSHA", PresenceScriptSha(), absl::StrCat(3 + clinics.size()),
                                   DevicesKey(person), StateKey(person), kClinicsKey};
  for (const auto& c : clinics) args.push_back(ClinicKey(c));
  args.insert(args.end(), {absl::StrCat(Ms(now)), device, device_value, person});
  args.insert(args.end(), clinics.begin(), clinics.end());
  return args;
}

std::string DeviceValue(absl::Time now, cv1::PresenceStatus status, absl::Duration ttl) {
  return absl::StrCat(static_cast<int>(status), ":", Ms(now + ttl), ":", Ms(now));
}

absl::StatusOr<PresenceUpdate> ParseScriptReply(const std::string& person, const redis::Reply& r) {
  if (r.type != redis::Reply::Type::kArray || r.elements.size() != 4) {
    return absl::InternalError(absl::StrCat("presence script failed: ", r.str));
  }
  auto best = static_cast<cv1::PresenceStatus>(r.elements[0].integer);
  int64_t change_ms = r.elements[1].integer, seen = r.elements[2].integer, previous = r.elements[3].integer;
  PresenceUpdate u;
  u.previous = previous < 0 ? cv1::PRESENCE_STATUS_OFFLINE : static_cast<cv1::PresenceStatus>(previous);
  u.presence.set_name("people/" + person + "/presence");
  u.presence.set_person("people/" + person);
  u.presence.set_status(best);
  if (seen > 0) *u.presence.mutable_last_seen_time() = ToProto(absl::FromUnixMillis(seen));
  *u.presence.mutable_change_time() = ToProto(absl::FromUnixMillis(change_ms));
  return u;
}

}  // namespace

absl::StatusOr<PresenceUpdate> PresenceStore::Run(const std::string& person, const std::vector<std::string>& clinics,
                                                  const std::string& device, const std::string& device_value) {
  std::vector<std::string> args = ScriptCall(clock_.Now(), person, clinics, device, device_value);
  ASSIGN_OR_RETURN(redis::Reply r, redis_.CommandAllowError(args));
  if (r.type == redis::Reply::Type::kError && absl::StartsWith(r.str, "NOSCRIPT")) {
    args[0] = "EVAL";  // first use on this server (or after SCRIPT FLUSH / a restart): load it
    args[1] = PresenceScript();
    ASSIGN_OR_RETURN(r, redis_.CommandAllowError(args));
  }
  return ParseScriptReply(person, r);
}

std::vector<absl::StatusOr<PresenceUpdate>> PresenceStore::HeartbeatMany(const std::vector<Beat>& beats) {
  const absl::Time now = clock_.Now();
  std::vector<std::vector<std::string>> commands;
  commands.reserve(beats.size() + 1);
  // SCRIPT LOAD first (commands run in order), so the EVALSHAs find it even right after a
  // Redis restart; loading a loaded script is a hash lookup.
  commands.push_back({"SCRIPT", "LOAD", PresenceScript()});
  for (const Beat& b : beats) {
    commands.push_back(ScriptCall(now, b.person_id, b.clinics, b.device, DeviceValue(now, b.status, b.ttl)));
  }
  std::vector<absl::StatusOr<PresenceUpdate>> out;
  out.reserve(beats.size());
  auto replies = redis_.Pipeline(commands);
  for (size_t i = 0; i < beats.size(); ++i) {
    if (!replies.ok()) {
      out.push_back(replies.status());
    } else {
      out.push_back(ParseScriptReply(beats[i].person_id, (*replies)[i + 1]));
    }
  }
  return out;
}

absl::StatusOr<PresenceUpdate> PresenceStore::Heartbeat(const std::string& person, const std::vector<std::string>& clinics,
                                                        const std::string& device, cv1::PresenceStatus status,
                                                        absl::Duration ttl) {
  return Run(person, clinics, device, DeviceValue(clock_.Now(), status, ttl));
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

absl::StatusOr<PresenceUpdate> PresenceStore::Recompute(const std::string& person) { return Run(person, {}, "", ""); }

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
