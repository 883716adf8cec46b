#include "services/messaging/store/messaging_store.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/db/proto_rows.h"
#include "common/status/errors.h"
#include "common/status/macros.h"

namespace continuum::messaging::store {
namespace {

db::Blob Bytes(const google::protobuf::Message& m) { return db::Blob{m.SerializeAsString()}; }
std::string IdOf(const std::string& name) { return name.substr(name.rfind('/') + 1); }

}  // namespace

absl::StatusOr<std::optional<Stored<v1::Conversation>>> GetConversation(db::Tx& tx, const std::string& clinic_id,
                                                                        const std::string& id, Purpose purpose) {
  const bool lock = purpose == Purpose::kToChange && tx.backend() == db::Backend::kPostgres;
  ASSIGN_OR_RETURN(db::Rows rows, tx.Query(lock ? "SELECT data, revision FROM conversations WHERE clinic_id = $1"
                                                  " AND conversation_id = $2 FOR UPDATE"
                                                : "SELECT data, revision FROM conversations WHERE clinic_id = $1"
                                                  " AND conversation_id = $2",
                                           {clinic_id, id}));
  if (rows.empty()) return std::nullopt;
  ASSIGN_OR_RETURN(auto c, db::ParseProto<v1::Conversation>(rows[0], 0));
  return Stored<v1::Conversation>{std::move(c), rows[0].Int(1)};
}

absl::Status PutConversation(db::Tx& tx, const std::string& clinic_id, const std::string& id, const v1::Conversation& c,
                             const Stored<v1::Conversation>* previous) {
  std::set<std::string> before, after;
  for (const auto& m : c.members()) after.insert(IdOf(m.person()));
  if (previous) {
    const int64_t revision = previous->revision;
    for (const auto& m : previous->value.members()) before.insert(IdOf(m.person()));
    ASSIGN_OR_RETURN(int64_t n, tx.Exec("UPDATE conversations SET data = $1, last_sequence = $2, revision = $3"
                                        " WHERE clinic_id = $4 AND conversation_id = $5 AND revision = $6",
                                        {Bytes(c), c.last_message_sequence(), revision + 1, clinic_id, id, revision}));
    if (n != 1) {
      return MakeError(absl::StatusCode::kAborted, "TRANSACTION_CONFLICT", "the conversation changed concurrently");
    }
  } else {
    auto inserted = tx.Exec("INSERT INTO conversations (clinic_id, conversation_id, client_id, last_sequence, data,"
                            " revision) VALUES ($1, $2, $3, $4, $5, 1)",
                            {clinic_id, id, IdOf(c.client()), c.last_message_sequence(), Bytes(c)});
    if (inserted.status().code() == absl::StatusCode::kAlreadyExists) {
      // Created lazily: two first requests for one client race to create it. The loser's
      // transaction is retried and finds it.
      return MakeError(absl::StatusCode::kAborted, "TRANSACTION_CONFLICT", "the conversation was created concurrently");
    }
    RETURN_IF_ERROR(inserted.status());
  }
  // Sends and read receipts rewrite the conversation but seldom its membership: only the
  // difference is written (rewriting every member row was most of a send's statements).
  for (const auto& person : before) {
    if (after.count(person)) continue;
    RETURN_IF_ERROR(tx.Exec("DELETE FROM conversation_members WHERE clinic_id = $1 AND conversation_id = $2"
                            " AND person_id = $3",
                            {clinic_id, id, person})
                        .status());
  }
  for (const auto& person : after) {
    if (before.count(person)) continue;
    RETURN_IF_ERROR(tx.Exec("INSERT INTO conversation_members (clinic_id, conversation_id, person_id) VALUES ($1, $2, $3)",
                            {clinic_id, id, person})
                        .status());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Conversation>> ConversationsOf(db::Tx& tx, const std::string& person_id,
                                                              const std::string& clinic_id, int64_t offset, int limit) {
  return db::QueryProtos<v1::Conversation>(
      tx,
      "SELECT c.data FROM conversations c JOIN conversation_members m ON m.clinic_id = c.clinic_id"
      " AND m.conversation_id = c.conversation_id WHERE m.person_id = $1 AND ($2 = '' OR c.clinic_id = $2)"
      " ORDER BY c.clinic_id, c.conversation_id LIMIT $3 OFFSET $4",
      {person_id, clinic_id, int64_t{limit}, offset});
}

absl::StatusOr<std::vector<std::string>> Contacts(db::Tx& tx, const std::string& person_id,
                                                  const std::vector<std::string>& clinics) {
  db::Params params = {person_id};
  std::string in_clinics;
  if (!clinics.empty()) {
    in_clinics = " AND m.clinic_id IN " + db::Placeholders(clinics.size(), 2);
    for (const auto& c : clinics) params.push_back(c);
  }
  ASSIGN_OR_RETURN(db::Rows rows,
                   tx.Query(absl::StrCat("SELECT DISTINCT o.person_id FROM conversation_members m JOIN conversation_members o"
                                         " ON o.clinic_id = m.clinic_id AND o.conversation_id = m.conversation_id"
                                         " WHERE m.person_id = $1 AND o.person_id <> $1",
                                         in_clinics),
                            params));
  std::vector<std::string> out;
  for (const auto& r : rows) out.push_back(r.Text(0));
  return out;
}

absl::StatusOr<std::optional<v1::Message>> GetMessageById(db::Tx& tx, const std::string& clinic_id,
                                                          const std::string& conversation_id,
                                                          const std::string& message_id) {
  ASSIGN_OR_RETURN(db::Rows rows, tx.Query("SELECT data FROM messages WHERE clinic_id = $1 AND conversation_id = $2"
                                           " AND message_id = $3",
                                           {clinic_id, conversation_id, message_id}));
  if (rows.empty()) return std::nullopt;
  return db::ParseProto<v1::Message>(rows[0], 0);
}

absl::StatusOr<bool> InsertMessageIfNew(db::Tx& tx, const std::string& clinic_id, const std::string& conversation_id,
                                        const v1::Message& m) {
  ASSIGN_OR_RETURN(
      int64_t n,
      tx.Exec("INSERT INTO messages (clinic_id, conversation_id, sequence, message_id, sender_id, urgent, create_time,"
              " data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
              " ON CONFLICT (clinic_id, conversation_id, message_id) DO NOTHING",
              {clinic_id, conversation_id, m.sequence(), IdOf(m.name()), IdOf(m.sender()), int64_t{m.urgent()},
               m.create_time().seconds() * 1000000 + m.create_time().nanos() / 1000, Bytes(m)}));
  return n == 1;
}

absl::StatusOr<std::vector<v1::Message>> ListMessages(db::Tx& tx, const std::string& clinic_id,
                                                      const std::string& conversation_id, int64_t after, int limit) {
  return db::QueryProtos<v1::Message>(tx,
                           "SELECT data FROM messages WHERE clinic_id = $1 AND conversation_id = $2 AND sequence > $3"
                           " ORDER BY sequence LIMIT $4",
                           {clinic_id, conversation_id, after, int64_t{limit}});
}

absl::StatusOr<std::pair<int, int>> CountUnread(db::Tx& tx, const std::string& clinic_id,
                                                const std::string& conversation_id, int64_t after,
                                                const std::string& person_id) {
  ASSIGN_OR_RETURN(db::Rows rows, tx.Query("SELECT COUNT(*), COALESCE(SUM(urgent), 0) FROM messages WHERE clinic_id = $1"
                                           " AND conversation_id = $2 AND sequence > $3 AND sender_id <> $4",
                                           {clinic_id, conversation_id, after, person_id}));
  return std::make_pair(static_cast<int>(rows[0].Int(0)), static_cast<int>(rows[0].Int(1)));
}

absl::StatusOr<bool> InsertNotification(db::Tx& tx, const std::string& person_id, const std::string& id,
                                        const std::string& dedupe_key, const v1::Notification& n) {
  ASSIGN_OR_RETURN(int64_t inserted,
                   tx.Exec("INSERT INTO notifications (person_id, notification_id, dedupe_key, state, create_time, data)"
                           " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (person_id, dedupe_key) DO NOTHING",
                           {person_id, id, dedupe_key, int64_t{n.state()},
                            n.create_time().seconds() * 1000000 + n.create_time().nanos() / 1000, Bytes(n)}));
  return inserted == 1;
}

absl::StatusOr<std::optional<v1::Notification>> GetNotification(db::Tx& tx, const std::string& person_id,
                                                                 const std::string& id) {
  ASSIGN_OR_RETURN(db::Rows rows, tx.Query("SELECT data FROM notifications WHERE person_id = $1 AND notification_id = $2",
                                           {person_id, id}));
  if (rows.empty()) return std::nullopt;
  return db::ParseProto<v1::Notification>(rows[0], 0);
}

absl::Status UpdateNotification(db::Tx& tx, const std::string& person_id, const std::string& id,
                                const v1::Notification& n) {
  return tx
      .Exec("UPDATE notifications SET state = $1, data = $2 WHERE person_id = $3 AND notification_id = $4",
            {int64_t{n.state()}, Bytes(n), person_id, id})
      .status();
}

absl::StatusOr<std::vector<v1::Notification>> ListNotifications(db::Tx& tx, const std::string& person_id,
                                                                const std::vector<int>& states, int64_t offset,
                                                                int limit) {
  db::Params params = {person_id, int64_t{limit}, offset};
  std::string extra;
  if (!states.empty()) {
    extra = " AND state IN " + db::Placeholders(states.size(), 4);
    for (int s : states) params.push_back(int64_t{s});
  }
  return db::QueryProtos<v1::Notification>(tx,
                                absl::StrCat("SELECT data FROM notifications WHERE person_id = $1", extra,
                                             " ORDER BY create_time DESC, notification_id LIMIT $2 OFFSET $3"),
                                params);
}

absl::StatusOr<std::optional<Stored<v1::Escalation>>> GetEscalation(db::Tx& tx, const std::string& clinic_id,
                                                                    const std::string& id) {
  ASSIGN_OR_RETURN(db::Rows rows, tx.Query("SELECT data, revision FROM escalations WHERE clinic_id = $1"
                                           " AND escalation_id = $2",
                                           {clinic_id, id}));
  if (rows.empty()) return std::nullopt;
  ASSIGN_OR_RETURN(auto e, db::ParseProto<v1::Escalation>(rows[0], 0));
  return Stored<v1::Escalation>{std::move(e), rows[0].Int(1)};
}

absl::Status PutEscalation(db::Tx& tx, const std::string& clinic_id, const std::string& id, const v1::Escalation& e,
                           std::optional<absl::Time> next_step, std::optional<int64_t> revision) {
  db::Value next = next_step ? db::Micros(*next_step) : db::Null();
  if (!revision) {
    return tx
        .Exec("INSERT INTO escalations (clinic_id, escalation_id, client_id, state, next_step_time, create_time, data,"
              " revision) VALUES ($1, $2, $3, $4, $5, $6, $7, 1)",
              {clinic_id, id, IdOf(e.client()), int64_t{e.state()}, next,
               e.create_time().seconds() * 1000000 + e.create_time().nanos() / 1000, Bytes(e)})
        .status();
  }
  ASSIGN_OR_RETURN(int64_t n, tx.Exec("UPDATE escalations SET state = $1, next_step_time = $2, data = $3, revision = $4"
                                      " WHERE clinic_id = $5 AND escalation_id = $6 AND revision = $7",
                                      {int64_t{e.state()}, next, Bytes(e), *revision + 1, clinic_id, id, *revision}));
  if (n != 1) return MakeError(absl::StatusCode::kAborted, "TRANSACTION_CONFLICT", "the escalation changed concurrently");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Escalation>> ListEscalations(db::Tx& tx, const std::string& clinic_id,
                                                            const std::string& client_id, const std::vector<int>& states,
                                                            int64_t offset, int limit) {
  db::Params params = {clinic_id, client_id, int64_t{limit}, offset};
  std::string extra;
  if (!states.empty()) {
    extra = " AND state IN " + db::Placeholders(states.size(), 5);
    for (int s : states) params.push_back(int64_t{s});
  }
  return db::QueryProtos<v1::Escalation>(
      tx,
      absl::StrCat("SELECT data FROM escalations WHERE clinic_id = $1 AND ($2 = '' OR client_id = $2)", extra,
                   " ORDER BY create_time DESC, escalation_id LIMIT $3 OFFSET $4"),
      params);
}

absl::StatusOr<std::vector<std::pair<std::string, v1::Escalation>>> DueEscalations(db::Tx& tx, absl::Time now) {
  ASSIGN_OR_RETURN(db::Rows rows, tx.Query("SELECT clinic_id, data FROM escalations WHERE state = $1"
                                           " AND next_step_time IS NOT NULL AND next_step_time <= $2 LIMIT 200",
                                           {int64_t{v1::Escalation::STATE_OPEN}, db::Micros(now)}));
  std::vector<std::pair<std::string, v1::Escalation>> out;
  for (const auto& r : rows) {
    ASSIGN_OR_RETURN(auto e, db::ParseProto<v1::Escalation>(r, 1));
    out.emplace_back(r.Text(0), std::move(e));
  }
  return out;
}

namespace {
ActiveSession SessionOf(const db::Row& r) {
  ActiveSession s;
  s.clinic_id = r.Text(0);
  s.appointment_id = r.Text(1);
  s.client_id = r.Text(2);
  s.sitter_id = r.Text(3);
  s.kind = static_cast<int>(r.Int(4));
  s.start = r.Time(5);
  if (!r.IsNull(6)) s.last_check_in = r.Time(6);
  if (!r.IsNull(7)) s.next_due = r.Time(7);
  return s;
}
constexpr char kSessionColumns[] =
    "clinic_id, appointment_id, client_id, sitter_id, kind, start_time, last_check_in, next_check_in_due";
}  // namespace

absl::Status PutActiveSession(db::Tx& tx, const ActiveSession& s) {
  RETURN_IF_ERROR(DeleteActiveSession(tx, s.clinic_id, s.appointment_id));
  return tx
      .Exec(absl::StrCat("INSERT INTO active_sessions (", kSessionColumns, ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
            {s.clinic_id, s.appointment_id, s.client_id, s.sitter_id, int64_t{s.kind}, db::Micros(s.start),
             s.last_check_in ? db::Micros(*s.last_check_in) : db::Null(), s.next_due ? db::Micros(*s.next_due) : db::Null()})
      .status();
}

absl::Status DeleteActiveSession(db::Tx& tx, const std::string& clinic_id, const std::string& appointment_id) {
  return tx.Exec("DELETE FROM active_sessions WHERE clinic_id = $1 AND appointment_id = $2", {clinic_id, appointment_id})
      .status();
}

absl::StatusOr<std::vector<ActiveSession>> ActiveSessionsOf(db::Tx& tx, const std::string& clinic_id,
                                                            const std::string& client_id) {
  ASSIGN_OR_RETURN(db::Rows rows, tx.Query(absl::StrCat("SELECT ", kSessionColumns,
                                                        " FROM active_sessions WHERE clinic_id = $1 AND client_id = $2"),
                                           {clinic_id, client_id}));
  std::vector<ActiveSession> out;
  for (const auto& r : rows) out.push_back(SessionOf(r));
  return out;
}

absl::StatusOr<std::optional<ActiveSession>> GetActiveSession(db::Tx& tx, const std::string& clinic_id,
                                                              const std::string& appointment_id) {
  ASSIGN_OR_RETURN(db::Rows rows, tx.Query(absl::StrCat("SELECT ", kSessionColumns,
                                                        " FROM active_sessions WHERE clinic_id = $1 AND appointment_id = $2"),
                                           {clinic_id, appointment_id}));
  if (rows.empty()) return std::nullopt;
  return SessionOf(rows[0]);
}

absl::StatusOr<std::vector<ActiveSession>> OverdueCheckIns(db::Tx& tx, absl::Time now) {
  ASSIGN_OR_RETURN(db::Rows rows, tx.Query(absl::StrCat("SELECT ", kSessionColumns,
                                                        " FROM active_sessions WHERE next_check_in_due IS NOT NULL"
                                                        " AND next_check_in_due <= $1 LIMIT 200"),
                                           {db::Micros(now)}));
  std::vector<ActiveSession> out;
  for (const auto& r : rows) out.push_back(SessionOf(r));
  return out;
}

absl::Status PutReminder(db::Tx& tx, const std::string& clinic_id, const std::string& appointment_id,
                         int64_t offset_seconds, absl::Time due, const std::string& data) {
  return tx
      .Exec("INSERT INTO reminders (clinic_id, appointment_id, offset_seconds, due_time, data, sent)"
            " VALUES ($1, $2, $3, $4, $5, 0) ON CONFLICT (clinic_id, appointment_id, offset_seconds) DO NOTHING",
            {clinic_id, appointment_id, offset_seconds, db::Micros(due), db::Blob{data}})
      .status();
}

absl::Status DeleteReminders(db::Tx& tx, const std::string& clinic_id, const std::string& appointment_id) {
  return tx.Exec("DELETE FROM reminders WHERE clinic_id = $1 AND appointment_id = $2 AND sent = 0",
                 {clinic_id, appointment_id})
      .status();
}

absl::StatusOr<std::vector<DueReminder>> DueReminders(db::Tx& tx, absl::Time now, int limit) {
  ASSIGN_OR_RETURN(db::Rows rows, tx.Query("SELECT clinic_id, appointment_id, offset_seconds, data FROM reminders"
                                           " WHERE sent = 0 AND due_time <= $1 ORDER BY due_time LIMIT $2",
                                           {db::Micros(now), int64_t{limit}}));
  std::vector<DueReminder> out;
  for (const auto& r : rows) out.push_back({r.Text(0), r.Text(1), r.Bytes(3), r.Int(2)});
  return out;
}

absl::Status MarkReminderSent(db::Tx& tx, const DueReminder& r) {
  return tx
      .Exec("UPDATE reminders SET sent = 1 WHERE clinic_id = $1 AND appointment_id = $2 AND offset_seconds = $3",
            {r.clinic_id, r.appointment_id, r.offset_seconds})
      .status();
}

absl::StatusOr<std::vector<StoredMessage>> ClinicMessagesAfter(db::Tx& tx, const std::string& clinic_id,
                                                               const MessageCursor& after, absl::Time until, int limit) {
  ASSIGN_OR_RETURN(db::Rows rows,
                   tx.Query("SELECT conversation_id, create_time, data FROM messages"
                            " WHERE clinic_id = $1 AND create_time <= $2"
                            " AND (create_time, conversation_id, sequence) > ($3, $4, $5)"
                            " ORDER BY create_time, conversation_id, sequence LIMIT $6",
                            {clinic_id, db::Micros(until), after.create_micros, after.conversation_id, after.sequence,
                             int64_t{limit}}));
  std::vector<StoredMessage> out;
  for (const auto& r : rows) {
    ASSIGN_OR_RETURN(auto m, db::ParseProto<v1::Message>(r, 2));
    out.push_back({clinic_id, r.Text(0), std::move(m), r.Int(1)});
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> ClinicsWithConversations(db::Tx& tx) {
  ASSIGN_OR_RETURN(db::Rows rows, tx.Query("SELECT DISTINCT clinic_id FROM conversations"));
  std::vector<std::string> out;
  for (const auto& r : rows) out.push_back(r.Text(0));
  return out;
}

const db::RetentionRule& ProcessedEventsRetention() {
  static const auto* const kRule = new db::RetentionRule{
      "processed_events",
      "DELETE FROM processed_events WHERE event_id IN (SELECT event_id FROM processed_events"
      " WHERE process_time < $1 ORDER BY process_time LIMIT $2)"};
  return *kRule;
}

absl::StatusOr<bool> FirstTime(db::Tx& tx, const std::string& event_id, absl::Time now) {
  ASSIGN_OR_RETURN(int64_t n, tx.Exec("INSERT INTO processed_events (event_id, process_time) VALUES ($1, $2)"
                                      " ON CONFLICT (event_id) DO NOTHING",
                                      {event_id, db::Micros(now)}));
  return n == 1;
}

}  // namespace continuum::messaging::store
