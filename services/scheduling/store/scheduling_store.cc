#include "services/scheduling/store/scheduling_store.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/api/api.h"
#include "common/outbox/outbox.h"
#include "common/db/proto_rows.h"
#include "common/status/errors.h"
#include "common/status/macros.h"

namespace continuum::scheduling {
namespace {

// Reads (data, revision) rows as Stored<T>.
template <typename T>
absl::StatusOr<std::optional<Stored<T>>> One(db::Tx& tx, absl::string_view sql, const db::Params& params) {
  ASSIGN_OR_RETURN(db::Rows rows, tx.Query(sql, params));
  if (rows.empty()) return std::nullopt;
  ASSIGN_OR_RETURN(T value, db::ParseProto<T>(rows[0], 0));
  return Stored<T>{std::move(value), rows[0].Int(1)};
}

db::Blob Bytes(const google::protobuf::Message& m) { return db::Blob{m.SerializeAsString()}; }

// An UPDATE guarded by the revision read earlier in this transaction: 0 rows means someone
// else changed the row in between.
absl::Status Changed(absl::StatusOr<int64_t> n, absl::string_view what) {
  if (!n.ok()) return n.status();
  if (*n == 0) {
    return MakeError(absl::StatusCode::kAborted, "TRANSACTION_CONFLICT",
                     absl::StrCat(what, " was changed concurrently; read it again and retry"));
  }
  return absl::OkStatus();
}

int64_t Minute(absl::Time t) { return absl::ToUnixSeconds(t) / 60; }

}  // namespace

// ---- Clinics ----

absl::StatusOr<std::optional<Stored<v1::Clinic>>> SchedulingStore::GetClinic(const std::string& id) {
  return One<v1::Clinic>(tx_, "SELECT data, revision FROM clinics WHERE clinic_id = $1", {id});
}

absl::StatusOr<std::vector<v1::Clinic>> SchedulingStore::ListClinics(const std::vector<std::string>& ids,
                                                                     bool all, int64_t offset, int limit) {
  if (all) {
    return db::QueryProtos<v1::Clinic>(tx_, "SELECT data FROM clinics ORDER BY clinic_id LIMIT $1 OFFSET $2",
                            {int64_t{limit}, offset});
  }
  if (ids.empty()) return std::vector<v1::Clinic>{};
  db::Params params = {int64_t{limit}, offset};
  for (const auto& id : ids) params.push_back(id);
  return db::QueryProtos<v1::Clinic>(tx_,
                          absl::StrCat("SELECT data FROM clinics WHERE clinic_id IN ", db::Placeholders(ids.size(), 3),
                                       " ORDER BY clinic_id LIMIT $1 OFFSET $2"),
                          params);
}

absl::Status SchedulingStore::InsertClinic(const std::string& id, const v1::Clinic& clinic) {
  return tx_.Exec("INSERT INTO clinics (clinic_id, data, revision) VALUES ($1, $2, 1)", {id, Bytes(clinic)})
      .status();
}

absl::Status SchedulingStore::UpdateClinic(const std::string& id, const v1::Clinic& clinic, int64_t revision) {
  return Changed(tx_.Exec("UPDATE clinics SET data = $1, revision = $2 WHERE clinic_id = $3 AND revision = $4",
                          {Bytes(clinic), revision + 1, id, revision}),
                 "the clinic");
}

// ---- People ----

absl::StatusOr<std::optional<Stored<v1::Person>>> SchedulingStore::GetPerson(const std::string& id) {
  return One<v1::Person>(tx_, "SELECT data, revision FROM people WHERE person_id = $1", {id});
}

namespace {
absl::Status WriteMemberships(db::Tx& tx, const std::string& person_id, const v1::Person& person) {
  RETURN_IF_ERROR(tx.Exec("DELETE FROM memberships WHERE person_id = $1", {person_id}).status());
  for (const auto& m : person.memberships()) {
    std::string clinic_id = m.clinic().substr(m.clinic().find('/') + 1);
    RETURN_IF_ERROR(tx.Exec("INSERT INTO memberships (clinic_id, person_id, role) VALUES ($1, $2, $3)",
                            {clinic_id, person_id, int64_t{m.role()}})
                        .status());
  }
  return absl::OkStatus();
}
}  // namespace

absl::Status SchedulingStore::InsertPerson(const std::string& id, const v1::Person& person) {
  RETURN_IF_ERROR(
      tx_.Exec("INSERT INTO people (person_id, data, revision) VALUES ($1, $2, 1)", {id, Bytes(person)}).status());
  return WriteMemberships(tx_, id, person);
}

absl::Status SchedulingStore::UpdatePerson(const std::string& id, const v1::Person& person, int64_t revision) {
  RETURN_IF_ERROR(Changed(tx_.Exec("UPDATE people SET data = $1, revision = $2 WHERE person_id = $3 AND revision = $4",
                                   {Bytes(person), revision + 1, id, revision}),
                          "the person"));
  return WriteMemberships(tx_, id, person);
}

absl::StatusOr<cv1::Role> SchedulingStore::RoleIn(const std::string& clinic_id, const std::string& person_id) {
  ASSIGN_OR_RETURN(db::Rows rows, tx_.Query("SELECT role FROM memberships WHERE clinic_id = $1 AND person_id = $2",
                                            {clinic_id, person_id}));
  if (rows.empty()) return cv1::ROLE_UNSPECIFIED;
  return static_cast<cv1::Role>(rows[0].Int(0));
}

absl::StatusOr<std::vector<v1::Person>> SchedulingStore::ListMembers(const std::string& clinic_id, cv1::Role role,
                                                                     int64_t offset, int limit) {
  return db::QueryProtos<v1::Person>(
      tx_,
      "SELECT p.data FROM people p JOIN memberships m ON m.person_id = p.person_id"
      " WHERE m.clinic_id = $1 AND ($2 = 0 OR m.role = $2) ORDER BY p.person_id LIMIT $3 OFFSET $4",
      {clinic_id, int64_t{role}, int64_t{limit}, offset});
}

absl::StatusOr<std::vector<std::string>> SchedulingStore::MembersWithRole(const std::string& clinic_id,
                                                                          cv1::Role role) {
  ASSIGN_OR_RETURN(db::Rows rows,
                   tx_.Query("SELECT person_id FROM memberships WHERE clinic_id = $1 AND role = $2 ORDER BY person_id",
                             {clinic_id, int64_t{role}}));
  std::vector<std::string> out;
  for (const auto& r : rows) out.push_back(r.Text(0));
  return out;
}

// ---- Care teams ----

absl::StatusOr<std::optional<Stored<v1::CareTeam>>> SchedulingStore::GetCareTeam(const std::string& clinic_id,
                                                                                 const std::string& client_id) {
  return One<v1::CareTeam>(tx_, "SELECT data, revision FROM care_teams WHERE clinic_id = $1 AND client_id = $2",
                           {clinic_id, client_id});
}

absl::Status SchedulingStore::PutCareTeam(const std::string& clinic_id, const std::string& client_id,
                                          const v1::CareTeam& team, std::optional<int64_t> revision) {
  if (revision) {
    RETURN_IF_ERROR(Changed(tx_.Exec("UPDATE care_teams SET data = $1, revision = $2"
                                     " WHERE clinic_id = $3 AND client_id = $4 AND revision = $5",
                                     {Bytes(team), *revision + 1, clinic_id, client_id, *revision}),
                            "the care team"));
  } else {
    RETURN_IF_ERROR(tx_.Exec("INSERT INTO care_teams (clinic_id, client_id, data, revision) VALUES ($1, $2, $3, 1)",
                             {clinic_id, client_id, Bytes(team)})
                        .status());
  }
  RETURN_IF_ERROR(tx_.Exec("DELETE FROM care_team_members WHERE clinic_id = $1 AND client_id = $2",
                           {clinic_id, client_id})
                      .status());
  for (const auto& m : team.members()) {
    RETURN_IF_ERROR(tx_.Exec("INSERT INTO care_team_members (clinic_id, client_id, member_id) VALUES ($1, $2, $3)",
                             {clinic_id, client_id, m.person().substr(7)})
                        .status());
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> SchedulingStore::OnCareTeam(const std::string& clinic_id, const std::string& client_id,
                                                 const std::string& member_id) {
  ASSIGN_OR_RETURN(db::Rows rows, tx_.Query("SELECT 1 FROM care_team_members WHERE clinic_id = $1"
                                            " AND client_id = $2 AND member_id = $3",
                                            {clinic_id, client_id, member_id}));
  return !rows.empty();
}

absl::StatusOr<std::vector<v1::CareTeam>> SchedulingStore::ListCareTeams(const std::string& clinic_id,
                                                                         const std::string& member_id,
                                                                         int64_t offset, int limit) {
  return db::QueryProtos<v1::CareTeam>(
      tx_,
      "SELECT t.data FROM care_teams t WHERE t.clinic_id = $1 AND ($2 = '' OR EXISTS ("
      " SELECT 1 FROM care_team_members m WHERE m.clinic_id = t.clinic_id AND m.client_id = t.client_id"
      " AND m.member_id = $2)) ORDER BY t.client_id LIMIT $3 OFFSET $4",
      {clinic_id, member_id, int64_t{limit}, offset});
}

// ---- Programs ----

absl::StatusOr<std::optional<Stored<v1::Program>>> SchedulingStore::GetProgram(const std::string& clinic_id,
                                                                               const std::string& program_id) {
  return One<v1::Program>(tx_, "SELECT data, revision FROM programs WHERE clinic_id = $1 AND program_id = $2",
                          {clinic_id, program_id});
}

absl::Status SchedulingStore::InsertProgram(const std::string& clinic_id, const std::string& program_id,
                                            const v1::Program& p) {
  return tx_
      .Exec("INSERT INTO programs (clinic_id, program_id, client_id, state, create_time, data, revision)"
            " VALUES ($1, $2, $3, $4, $5, $6, 1)",
            {clinic_id, program_id, p.client().substr(7), int64_t{p.state()},
             absl::ToUnixMicros(absl::FromUnixSeconds(p.create_time().seconds()) +
                                absl::Nanoseconds(p.create_time().nanos())),
             Bytes(p)})
      .status();
}

absl::Status SchedulingStore::UpdateProgram(const std::string& clinic_id, const std::string& program_id,
                                            const v1::Program& p, int64_t revision) {
  return Changed(tx_.Exec("UPDATE programs SET data = $1, state = $2, revision = $3"
                          " WHERE clinic_id = $4 AND program_id = $5 AND revision = $6",
                          {Bytes(p), int64_t{p.state()}, revision + 1, clinic_id, program_id, revision}),
                 "the program");
}

absl::StatusOr<std::vector<v1::Program>> SchedulingStore::ListPrograms(const std::string& clinic_id,
                                                                       const std::string& client_id,
                                                                       const std::string& member_id,
                                                                       const std::vector<int>& states,
                                                                       int64_t offset, int limit) {
  db::Params params = {clinic_id, client_id, member_id, int64_t{limit}, offset};
  std::string state_filter;
  if (!states.empty()) {
    state_filter = absl::StrCat(" AND p.state IN ", db::Placeholders(states.size(), params.size() + 1));
    for (int s : states) params.push_back(int64_t{s});
  }
  return db::QueryProtos<v1::Program>(
      tx_,
      absl::StrCat("SELECT p.data FROM programs p WHERE p.clinic_id = $1 AND ($2 = '' OR p.client_id = $2)"
                   " AND ($3 = '' OR EXISTS (SELECT 1 FROM care_team_members m WHERE m.clinic_id = p.clinic_id"
                   " AND m.client_id = p.client_id AND m.member_id = $3))",
                   state_filter, " ORDER BY p.create_time, p.program_id LIMIT $4 OFFSET $5"),
      params);
}

// ---- Availability ----

absl::StatusOr<std::optional<Stored<v1::Availability>>> SchedulingStore::GetAvailability(
    const std::string& clinic_id, const std::string& provider_id) {
  return One<v1::Availability>(
      tx_, "SELECT data, revision FROM availability WHERE clinic_id = $1 AND provider_id = $2",
      {clinic_id, provider_id});
}

absl::Status SchedulingStore::PutAvailability(const std::string& clinic_id, const std::string& provider_id,
                                              const v1::Availability& a, std::optional<int64_t> revision) {
  if (!revision) {
    return tx_
        .Exec("INSERT INTO availability (clinic_id, provider_id, data, revision) VALUES ($1, $2, $3, 1)",
              {clinic_id, provider_id, Bytes(a)})
        .status();
  }
  return Changed(tx_.Exec("UPDATE availability SET data = $1, revision = $2"
                          " WHERE clinic_id = $3 AND provider_id = $4 AND revision = $5",
                          {Bytes(a), *revision + 1, clinic_id, provider_id, *revision}),
                 "the availability");
}

// ---- Appointments ----

namespace {
int64_t Micros(const google::protobuf::Timestamp& t) {
  return t.seconds() * 1000000 + t.nanos() / 1000;
}
std::string IdOf(const std::string& name) { return name.substr(name.rfind('/') + 1); }
}  // namespace

absl::StatusOr<std::optional<Stored<v1::Appointment>>> SchedulingStore::GetAppointment(
    const std::string& clinic_id, const std::string& appointment_id) {
  return One<v1::Appointment>(
      tx_, "SELECT data, revision FROM appointments WHERE clinic_id = $1 AND appointment_id = $2",
      {clinic_id, appointment_id});
}

absl::Status SchedulingStore::InsertAppointment(const std::string& clinic_id, const std::string& id,
                                                const v1::Appointment& a) {
  return tx_
      .Exec("INSERT INTO appointments (clinic_id, appointment_id, program_id, client_id, provider_id, room,"
            " kind, state, start_time, end_time, medicine_appointment_id, data, revision)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1)",
            {clinic_id, id, IdOf(a.program()), IdOf(a.client()), IdOf(a.provider()), a.room(), int64_t{a.kind()},
             int64_t{a.state()}, Micros(a.start_time()), Micros(a.end_time()),
             a.medicine_appointment().empty() ? std::string() : IdOf(a.medicine_appointment()), Bytes(a)})
      .status();
}

absl::Status SchedulingStore::UpdateAppointment(const std::string& clinic_id, const std::string& id,
                                                const v1::Appointment& a, int64_t revision, absl::Time now) {
  RETURN_IF_ERROR(Changed(tx_.Exec("UPDATE appointments SET provider_id = $1, room = $2, state = $3, start_time = $4,"
                                   " end_time = $5, data = $6, revision = $7"
                                   " WHERE clinic_id = $8 AND appointment_id = $9 AND revision = $10",
                                   {IdOf(a.provider()), a.room(), int64_t{a.state()}, Micros(a.start_time()),
                                    Micros(a.end_time()), Bytes(a), revision + 1, clinic_id, id, revision}),
                          "the appointment"));
  if (changed_appointments_ != nullptr) changed_appointments_->emplace_back(clinic_id, id);
  // Every replica's appointment cache drops it when the relay publishes this (even if this
  // process dies right after the commit: the outbox row outlives it).
  return outbox::Enqueue(tx_,
                         {"", api::NewUuid(), "AppointmentChanged",
                          absl::StrCat("clinics/", clinic_id, "/appointments/", id), kAppointmentChangesChannel},
                         now);
}

absl::StatusOr<std::vector<v1::Appointment>> SchedulingStore::ListAppointments(const std::string& clinic_id,
                                                                               const AppointmentFilter& f) {
  db::Params params = {clinic_id,
                       f.client_id,
                       f.provider_id,
                       f.room,
                       f.program_id,
                       f.from ? absl::ToUnixMicros(*f.from) : std::numeric_limits<int64_t>::min(),
                       f.to ? absl::ToUnixMicros(*f.to) : std::numeric_limits<int64_t>::max(),
                       f.member_id,
                       int64_t{f.limit},
                       f.offset};
  std::string extra;
  if (!f.kinds.empty()) {
    absl::StrAppend(&extra, " AND a.kind IN ", db::Placeholders(f.kinds.size(), params.size() + 1));
    for (int k : f.kinds) params.push_back(int64_t{k});
  }
  if (!f.states.empty()) {
    absl::StrAppend(&extra, " AND a.state IN ", db::Placeholders(f.states.size(), params.size() + 1));
    for (int s : f.states) params.push_back(int64_t{s});
  }
  return db::QueryProtos<v1::Appointment>(
      tx_,
      absl::StrCat(
          "SELECT a.data FROM appointments a WHERE a.clinic_id = $1 AND ($2 = '' OR a.client_id = $2)"
          " AND ($3 = '' OR a.provider_id = $3) AND ($4 = '' OR a.room = $4) AND ($5 = '' OR a.program_id = $5)"
          " AND a.end_time > $6 AND a.start_time < $7"
          " AND ($8 = '' OR a.provider_id = $8 OR EXISTS (SELECT 1 FROM care_team_members m"
          " WHERE m.clinic_id = a.clinic_id AND m.client_id = a.client_id AND m.member_id = $8))",
          extra, " ORDER BY a.start_time, a.appointment_id LIMIT $9 OFFSET $10"),
      params);
}

absl::Status SchedulingStore::ClaimTime(const std::string& clinic_id, const std::string& appointment_id,
                                        const std::vector<Claim>& claims) {
  for (const Claim& c : claims) {
    // One row per minute, generated inside the database by a recursive CTE (same SQL on
    // SQLite and PostgreSQL). The primary key makes overlapping claims collide.
    auto n = tx_.Exec(
        "INSERT INTO occupancy (clinic_id, resource, minute, appointment_id)"
        " WITH RECURSIVE m(v) AS (SELECT CAST($3 AS BIGINT) UNION ALL"
        " SELECT v + 1 FROM m WHERE v + 1 < CAST($4 AS BIGINT))"
        " SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), v, CAST($5 AS TEXT) FROM m",
        {clinic_id, c.resource, Minute(c.start), Minute(c.end + absl::Seconds(59)), appointment_id});
    if (!n.ok()) {
      if (n.status().code() == absl::StatusCode::kAlreadyExists) {
        std::string kind = c.resource.substr(0, c.resource.find(':'));
        return MakeError(absl::StatusCode::kAborted, "SLOT_CONFLICT",
                         absl::StrCat("the ", kind, " is already booked during that time (",
                                      c.resource.substr(kind.size() + 1),
                                      "); search free slots again and pick another"),
                         {{"conflict", kind}});
      }
      return n.status();
    }
  }
  return absl::OkStatus();
}

absl::Status SchedulingStore::ReleaseTime(const std::string& clinic_id, const std::string& appointment_id) {
  return tx_.Exec("DELETE FROM occupancy WHERE clinic_id = $1 AND appointment_id = $2", {clinic_id, appointment_id})
      .status();
}

absl::StatusOr<std::vector<std::pair<absl::Time, absl::Time>>> SchedulingStore::Busy(const std::string& clinic_id,
                                                                                    const std::string& resource,
                                                                                    absl::Time from, absl::Time to) {
  ASSIGN_OR_RETURN(db::Rows rows,
                   tx_.Query("SELECT minute FROM occupancy WHERE clinic_id = $1 AND resource = $2"
                             " AND minute >= $3 AND minute < $4 ORDER BY minute",
                             {clinic_id, resource, Minute(from) - 1, Minute(to) + 1}));
  std::vector<std::pair<absl::Time, absl::Time>> out;
  for (const auto& r : rows) {
    absl::Time s = absl::FromUnixSeconds(r.Int(0) * 60);
    if (!out.empty() && out.back().second == s) {
      out.back().second = s + absl::Minutes(1);
    } else {
      out.emplace_back(s, s + absl::Minutes(1));
    }
  }
  return out;
}

// ---- Waitlist ----

absl::StatusOr<std::optional<Stored<v1::WaitlistEntry>>> SchedulingStore::GetWaitlistEntry(
    const std::string& clinic_id, const std::string& entry_id) {
  return One<v1::WaitlistEntry>(
      tx_, "SELECT data, revision FROM waitlist_entries WHERE clinic_id = $1 AND entry_id = $2",
      {clinic_id, entry_id});
}

absl::Status SchedulingStore::InsertWaitlistEntry(const std::string& clinic_id, const std::string& entry_id,
                                                  const v1::WaitlistEntry& e) {
  return tx_
      .Exec("INSERT INTO waitlist_entries (clinic_id, entry_id, program_id, client_id, state, create_time, data,"
            " revision) VALUES ($1, $2, $3, $4, $5, $6, $7, 1)",
            {clinic_id, entry_id, IdOf(e.program()), IdOf(e.client()), int64_t{e.state()},
             Micros(e.create_time()), Bytes(e)})
      .status();
}

absl::Status SchedulingStore::UpdateWaitlistEntry(const std::string& clinic_id, const std::string& entry_id,
                                                  const v1::WaitlistEntry& e, int64_t revision) {
  return Changed(tx_.Exec("UPDATE waitlist_entries SET state = $1, data = $2, revision = $3"
                          " WHERE clinic_id = $4 AND entry_id = $5 AND revision = $6",
                          {int64_t{e.state()}, Bytes(e), revision + 1, clinic_id, entry_id, revision}),
                 "the waitlist entry");
}

absl::StatusOr<std::vector<v1::WaitlistEntry>> SchedulingStore::ListWaitlistEntries(
    const std::string& clinic_id, const std::string& client_id, const std::vector<int>& states, int64_t offset,
    int limit) {
  db::Params params = {clinic_id, client_id, int64_t{limit}, offset};
  std::string extra;
  if (!states.empty()) {
    extra = absl::StrCat(" AND state IN ", db::Placeholders(states.size(), params.size() + 1));
    for (int s : states) params.push_back(int64_t{s});
  }
  return db::QueryProtos<v1::WaitlistEntry>(
      tx_,
      absl::StrCat("SELECT data FROM waitlist_entries WHERE clinic_id = $1 AND ($2 = '' OR client_id = $2)", extra,
                   " ORDER BY create_time, entry_id LIMIT $3 OFFSET $4"),
      params);
}

absl::StatusOr<std::vector<std::pair<std::string, v1::WaitlistEntry>>> SchedulingStore::WaitlistEntriesInState(
    int state, int limit) {
  ASSIGN_OR_RETURN(db::Rows rows, tx_.Query("SELECT clinic_id, data FROM waitlist_entries WHERE state = $1"
                                            " ORDER BY create_time, entry_id LIMIT $2",
                                            {int64_t{state}, int64_t{limit}}));
  std::vector<std::pair<std::string, v1::WaitlistEntry>> out;
  for (const auto& row : rows) {
    ASSIGN_OR_RETURN(auto e, db::ParseProto<v1::WaitlistEntry>(row, 1));
    out.emplace_back(row.Text(0), std::move(e));
  }
  return out;
}

// ---- Events ----

absl::Status SchedulingStore::Publish(const events::v1::EventEnvelope& event, absl::Time now) {
  std::string type;
  if (const auto* field = event.GetReflection()->GetOneofFieldDescriptor(
          event, event.GetDescriptor()->FindOneofByName("payload"))) {
    type = field->name();
  }
  return outbox::Enqueue(tx_, {kEventStream, event.event_id(), type, event.SerializeAsString()}, now);
}

}  // namespace continuum::scheduling
