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
// The devices hash's field that holds the person's effective state ("status:change_ms:seen_ms").
// Device ids are 1-64 characters, so no device is named "".
constexpr char kStateField[] = "";

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

// One script call applies a whole batch of heartbeats (or recomputes one person): recording
// each device, the clinic index and recomputing the effective status, atomically on the
// server. Six sequential commands per heartbeat used to cost six round trips and capped
// heartbeats at ~4k/s (docs/perf). A pipeline of one script call per heartbeat (plus a SCRIPT
// LOAD per batch) then cost Redis 13-16 us of CPU per heartbeat; one call per batch saves the
// per-command parsing and reply work. What remains is the script's work per person, mostly its
// redis.call()s (each converts its arguments and its reply between Lua and Redis): a heartbeat
// makes three, HGETALL, HSET and ZADD. The effective state is a field of the devices hash
// (kStateField) rather than a key of its own, read by the HGETALL and written by the HSET, which
// saved a GET and, on a change, a SET. A batch of 256 holds Redis for about 3 ms.
//   KEYS: the clinics set, then per person: devices hash, the state key of earlier versions,
//         one presence zset per clinic
//   ARGV: now_ms, then per person: number of clinics, device ("" = recompute only), device
//         value, person, the clinic ids
// Returns, per person, {best status, change_ms, last_seen_ms, previous status or -1}, or
// {-2, 0, 0, error message} when that person's part failed (the others still apply).
const std::string& PresenceScript() {
  static const std::string* script = new std::string(absl::StrCat(R"lua(
local now = tonumber(ARGV[1])
local rank = {)lua", "[", cv1::PRESENCE_STATUS_IN_SESSION, "]=4,[", cv1::PRESENCE_STATUS_DO_NOT_DISTURB, "]=3,[",
      cv1::PRESENCE_STATUS_ONLINE, "]=2,[", cv1::PRESENCE_STATUS_AWAY, "]=1}\nlocal offline = ",
      cv1::PRESENCE_STATUS_OFFLINE, "\nlocal state_field = '", kStateField, R"lua('
local out = {}
-- One person: recomputes the status from the stored devices with the beat's device value in
-- place of its stored one, then writes what changed; returns the four numbers. The clinic
-- keys and ids are KEYS[kc + i] and ARGV[ac + i], i = 1..n.
local function apply(devices, legacy_state, person, device, value, kc, ac, n)
  local best, best_rank, seen = offline, 0, 0
  local old, gone = nil, nil
  local function take(field, v)
    local st, exp, last = string.match(v, '^(%-?%d+):(%-?%d+):(%-?%d+)$')
    if not st then return true end
    st, exp, last = tonumber(st), tonumber(exp), tonumber(last)
    if last > seen then seen = last end
    if exp <= now then
      gone = gone or {}
      gone[#gone + 1] = field
      return false
    end
    if (rank[st] or 0) > best_rank then best, best_rank = st, rank[st] end
    return true
  end
  local all = redis.call('HGETALL', devices)
  for i = 1, #all, 2 do
    local field = all[i]
    if field == state_field then
      old = all[i + 1]
    elseif field ~= device then
      take(field, all[i + 1])
    end
  end
  local store = device ~= '' and take(device, value)
  -- A person last written by a version that kept the state in a key of its own.
  if not old then old = redis.call('GET', legacy_state) end
  local change, prev = now, -1
  if old then
    local ps, pc = string.match(old, '^(%-?%d+):(%-?%d+):')
    if ps then
      prev = tonumber(ps)
      if prev == best then change = tonumber(pc) end
    end
  end
  -- The state is written only when the status changes (almost no heartbeat changes it): it
  -- keeps the status and since when; its last-seen part is informational, last seen is always
  -- computed from the devices above.
  if prev ~= best then
    local state = string.format('%d:%d:%d', best, change, seen)
    if store then
      redis.call('HSET', devices, device, value, state_field, state)
    else
      redis.call('HSET', devices, state_field, state)
    end
  elseif store then
    redis.call('HSET', devices, device, value)
  end
  if gone then redis.call('HDEL', devices, unpack(gone)) end
  if device ~= '' then
    for i = 1, n do
      -- The clinics set only grows, so a person already in the clinic's zset needs no SADD.
      if redis.call('ZADD', KEYS[kc + i], now, person) == 1 then
        redis.call('SADD', KEYS[1], ARGV[ac + i])
      end
    end
  end
  return best, change, seen, prev
end
local k, a = 2, 2
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  -- A person whose keys are broken (e.g. of the wrong type) fails alone: {-2, 0, 0, message}.
  local ok, best, change, seen, prev = pcall(apply, KEYS[k], KEYS[k + 1], ARGV[a + 3], ARGV[a + 1], ARGV[a + 2],
                                             k + 1, a + 3, n)
  if ok then
    out[#out + 1] = best
    out[#out + 1] = change
    out[#out + 1] = seen
    out[#out + 1] = prev
  else
    out[#out + 1] = -2
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = type(best) == 'table' and best.err or tostring(best)
  end
  k = k + 2 + n
  a = a + 4 + n
end
return out
)lua"));
  return *script;
}

const std::string& PresenceScriptSha() {
  static const std::string* sha = new std::string(redis::ScriptSha(PresenceScript()));
  return *sha;
}

// One person's part of a script call.
struct ScriptPart {
  const std::string& person;
  const std::vector<std::string>& clinics;
  std::string device, device_value;
};

// The script call of `parts` (see PresenceScript): EVALSHA, sha, numkeys, keys..., argv...
std::vector<std::string> ScriptCall(absl::Time now, const std::vector<ScriptPart>& parts) {
  std::vector<std::string> keys = {kClinicsKey}, argv = {absl::StrCat(Ms(now))};
  for (const auto& p : parts) {
    keys.push_back(DevicesKey(p.person));
    keys.push_back(StateKey(p.person));
    for (const auto& c : p.clinics) keys.push_back(ClinicKey(c));
    argv.insert(argv.end(), {absl::StrCat(p.clinics.size()), p.device, p.device_value, p.person});
    argv.insert(argv.end(), p.clinics.begin(), p.clinics.end());
  }
  std::vector<std::string> args = {"EVALSHA", PresenceScriptSha(), absl::StrCat(keys.size())};
  args.reserve(3 + keys.size() + argv.size());
  std::move(keys.begin(), keys.end(), std::back_inserter(args));
  std::move(argv.begin(), argv.end(), std::back_inserter(args));
  return args;
}

std::string DeviceValue(absl::Time now, cv1::PresenceStatus status, absl::Duration ttl) {
  return absl::StrCat(static_cast<int>(status), ":", Ms(now + ttl), ":", Ms(now));
}

// Person `i`'s part of a script reply (four elements per person).
absl::StatusOr<PresenceUpdate> ParseScriptReply(const std::string& person, const redis::Reply& r, size_t i) {
  if (r.type != redis::Reply::Type::kArray || r.elements.size() < 4 * (i + 1)) {
    return absl::InternalError(absl::StrCat("presence script failed: ", r.str));
  }
  if (r.elements[4 * i].integer == -2) {
    return absl::InternalError(absl::StrCat("presence of ", person, " in Redis: ", r.elements[4 * i + 3].str));
  }
  auto best = static_cast<cv1::PresenceStatus>(r.elements[4 * i].integer);
  int64_t change_ms = r.elements[4 * i + 1].integer, seen = r.elements[4 * i + 2].integer;
  int64_t previous = r.elements[4 * i + 3].integer;
  PresenceUpdate u;
  u.previous = previous < 0 ? cv1::PRESENCE_STATUS_OFFLINE : static_cast<cv1::PresenceStatus>(previous);
  u.presence.set_name("people/" + person + "/presence");
  u.presence.set_person("people/" + person);
  u.presence.set_status(best);
  if (seen > 0) *u.presence.mutable_last_seen_time() = ToProto(absl::FromUnixMillis(seen));
  *u.presence.mutable_change_time() = ToProto(absl::FromUnixMillis(change_ms));
  return u;
}

// One script call for `parts`, loading the script when Redis does not have it. An error inside
// the script is an error reply, not an error status.
absl::StatusOr<redis::Reply> RunScript(redis::Client& redis, absl::Time now, const std::vector<ScriptPart>& parts) {
  std::vector<std::string> args = ScriptCall(now, parts);
  ASSIGN_OR_RETURN(redis::Reply r, redis.CommandAllowError(args));
  if (r.type == redis::Reply::Type::kError && absl::StartsWith(r.str, "NOSCRIPT")) {
    args[0] = "EVAL";  // first use on this server (or after SCRIPT FLUSH / a restart): load it
    args[1] = PresenceScript();
    ASSIGN_OR_RETURN(r, redis.CommandAllowError(args));
  }
  return r;
}

}  // namespace

absl::StatusOr<PresenceUpdate> PresenceStore::Run(const std::string& person, const std::vector<std::string>& clinics,
                                                  const std::string& device, const std::string& device_value) {
  ASSIGN_OR_RETURN(redis::Reply r, RunScript(redis_, clock_.Now(), {{person, clinics, device, device_value}}));
  return ParseScriptReply(person, r, 0);
}

std::vector<absl::StatusOr<PresenceUpdate>> PresenceStore::HeartbeatMany(const std::vector<Beat>& beats) {
  const absl::Time now = clock_.Now();
  std::vector<ScriptPart> parts;
  parts.reserve(beats.size());
  for (const Beat& b : beats) parts.push_back({b.person_id, b.clinics, b.device, DeviceValue(now, b.status, b.ttl)});
  absl::StatusOr<redis::Reply> r = RunScript(redis_, now, parts);
  std::vector<absl::StatusOr<PresenceUpdate>> out;
  out.reserve(beats.size());
  for (size_t i = 0; i < beats.size(); ++i) {
    if (!r.ok()) {
      out.push_back(r.status());
    } else {
      out.push_back(ParseScriptReply(beats[i].person_id, *r, i));
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
