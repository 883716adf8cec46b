// SQL of the messaging service. Functions take the caller's open transaction.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/db/database.h"
#include "common/db/retention.h"
#include "continuum/messaging/v1/conversation.pb.h"
#include "continuum/messaging/v1/escalation.pb.h"
#include "continuum/messaging/v1/notification.pb.h"

namespace continuum::messaging::store {

namespace v1 = ::continuum::messaging::v1;

template <typename T>
struct Stored {
  T value;
  int64_t revision = 0;
};

// What a read of a conversation is for. kToChange (the read before PutConversation) takes the
// row's lock on PostgreSQL until commit, so concurrent changes of one conversation (sends, read
// receipts) wait for each other instead of failing the revision check and retrying: without it
// a conversation taking 1,000 messages/s turned away about 5% of them with ABORTED. SQLite needs
// nothing: its write transactions run one at a time.
enum class Purpose { kToRead, kToChange };
absl::StatusOr<std::optional<Stored<v1::Conversation>>> GetConversation(db::Tx& tx, const std::string& clinic_id,
                                                                        const std::string& conversation_id,
                                                                        Purpose purpose = Purpose::kToRead);
// Inserts (`previous` null) or replaces `previous` (as read, at its revision); keeps
// conversation_members in step, writing only the members who joined or left.
absl::Status PutConversation(db::Tx& tx, const std::string& clinic_id, const std::string& conversation_id,
                             const v1::Conversation& c, const Stored<v1::Conversation>* previous);
// Conversations `person_id` is a member of (optionally of one clinic / client / kind).
absl::StatusOr<std::vector<v1::Conversation>> ConversationsOf(db::Tx& tx, const std::string& person_id,
                                                              const std::string& clinic_id, int64_t offset, int limit);
// Everyone who shares a conversation with `person_id` (presence watchers), in the given
// clinics (all clinics when empty).
absl::StatusOr<std::vector<std::string>> Contacts(db::Tx& tx, const std::string& person_id,
                                                  const std::vector<std::string>& clinics = {});

absl::StatusOr<std::optional<v1::Message>> GetMessageById(db::Tx& tx, const std::string& clinic_id,
                                                          const std::string& conversation_id, const std::string& message_id);
// False (and nothing written) when the conversation already has a message with this id.
// Another conflict (the sequence) is ALREADY_EXISTS.
absl::StatusOr<bool> InsertMessageIfNew(db::Tx& tx, const std::string& clinic_id, const std::string& conversation_id,
                                        const v1::Message& m);
absl::StatusOr<std::vector<v1::Message>> ListMessages(db::Tx& tx, const std::string& clinic_id,
                                                      const std::string& conversation_id, int64_t after_sequence,
                                                      int limit);
// Unread (sequence > after, not sent by person): {count, urgent count}.
absl::StatusOr<std::pair<int, int>> CountUnread(db::Tx& tx, const std::string& clinic_id,
                                                const std::string& conversation_id, int64_t after_sequence,
                                                const std::string& person_id);

// Notifications: insert unless one with the same dedupe key exists (returns false then).
absl::StatusOr<bool> InsertNotification(db::Tx& tx, const std::string& person_id, const std::string& id,
                                        const std::string& dedupe_key, const v1::Notification& n);
absl::StatusOr<std::optional<v1::Notification>> GetNotification(db::Tx& tx, const std::string& person_id,
                                                                 const std::string& id);
absl::Status UpdateNotification(db::Tx& tx, const std::string& person_id, const std::string& id,
                                const v1::Notification& n);
absl::StatusOr<std::vector<v1::Notification>> ListNotifications(db::Tx& tx, const std::string& person_id,
                                                                const std::vector<int>& states, int64_t offset,
                                                                int limit);

absl::StatusOr<std::optional<Stored<v1::Escalation>>> GetEscalation(db::Tx& tx, const std::string& clinic_id,
                                                                    const std::string& id);
absl::Status PutEscalation(db::Tx& tx, const std::string& clinic_id, const std::string& id, const v1::Escalation& e,
                           std::optional<absl::Time> next_step, std::optional<int64_t> revision);
absl::StatusOr<std::vector<v1::Escalation>> ListEscalations(db::Tx& tx, const std::string& clinic_id,
                                                            const std::string& client_id, const std::vector<int>& states,
                                                            int64_t offset, int limit);
// OPEN escalations whose next step is due, as (clinic id, escalation).
absl::StatusOr<std::vector<std::pair<std::string, v1::Escalation>>> DueEscalations(db::Tx& tx, absl::Time now);

struct ActiveSession {
  std::string clinic_id, appointment_id, client_id, sitter_id;
  int kind = 0;
  absl::Time start;
  std::optional<absl::Time> last_check_in, next_due;
};
absl::Status PutActiveSession(db::Tx& tx, const ActiveSession& s);
absl::Status DeleteActiveSession(db::Tx& tx, const std::string& clinic_id, const std::string& appointment_id);
absl::StatusOr<std::vector<ActiveSession>> ActiveSessionsOf(db::Tx& tx, const std::string& clinic_id,
                                                            const std::string& client_id);
absl::StatusOr<std::optional<ActiveSession>> GetActiveSession(db::Tx& tx, const std::string& clinic_id,
                                                              const std::string& appointment_id);
absl::StatusOr<std::vector<ActiveSession>> OverdueCheckIns(db::Tx& tx, absl::Time now);

// Reminders
absl::Status PutReminder(db::Tx& tx, const std::string& clinic_id, const std::string& appointment_id,
                         int64_t offset_seconds, absl::Time due, const std::string& data);
absl::Status DeleteReminders(db::Tx& tx, const std::string& clinic_id, const std::string& appointment_id);
struct DueReminder {
  std::string clinic_id, appointment_id, data;
  int64_t offset_seconds;
};
absl::StatusOr<std::vector<DueReminder>> DueReminders(db::Tx& tx, absl::Time now, int limit);
absl::Status MarkReminderSent(db::Tx& tx, const DueReminder& r);

// Messages created in [from, to), oldest first, as (clinic id, conversation id, message).
// A position in one clinic's messages ordered by (creation time, conversation, sequence):
// the order of the index messages_by_clinic_time.
struct MessageCursor {
  int64_t create_micros = 0;
  std::string conversation_id;
  int64_t sequence = 0;
};
struct StoredMessage {
  std::string clinic_id, conversation_id;
  v1::Message message;
  int64_t create_micros = 0;  // the row's create_time column
  MessageCursor Position() const { return {create_micros, conversation_id, message.sequence()}; }
};
// The clinic's messages after `after` and created at or before `until`, oldest first.
absl::StatusOr<std::vector<StoredMessage>> ClinicMessagesAfter(db::Tx& tx, const std::string& clinic_id,
                                                               const MessageCursor& after, absl::Time until, int limit);
// Clinics that have at least one conversation.
absl::StatusOr<std::vector<std::string>> ClinicsWithConversations(db::Tx& tx);

// Events: true the first time an event id is seen.
absl::StatusOr<bool> FirstTime(db::Tx& tx, const std::string& event_id, absl::Time now);
// Which rows retention deletes: event ids processed before the cutoff. Redelivery comes from
// a consumer group's pending entries, claimed again within minutes, so an id older than the
// retention period does not come back.
const db::RetentionRule& ProcessedEventsRetention();

}  // namespace continuum::messaging::store
