#include "services/messaging/messenger.h"

#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/api/api.h"
#include "common/api/idempotency.h"
#include "common/outbox/outbox.h"
#include "common/status/errors.h"
#include "common/status/macros.h"
#include "common/time/proto_time.h"
#include "services/messaging/live.h"
#include "services/messaging/store/messaging_store.h"
#include "spdlog/spdlog.h"

namespace continuum::messaging {
namespace {

namespace sv1 = ::continuum::scheduling::v1;
namespace ev1 = ::continuum::events::v1;
using Conv = v1::Conversation;

constexpr char kEventStream[] = "continuum:events:messaging";

std::string IdOf(const std::string& name) { return name.substr(name.rfind('/') + 1); }
std::string PersonId(const auth::Principal& p) {
  return absl::StartsWith(p.subject, "people/") ? p.subject.substr(7) : p.subject;
}
std::string Person(const std::string& id) { return "people/" + id; }
std::string ClinicOf(const std::string& name) {  // "clinics/{c}/..." -> c
  auto rest = name.substr(8);
  return rest.substr(0, rest.find('/'));
}

absl::Status Denied(absl::string_view reason, absl::string_view message) {
  return MakeError(absl::StatusCode::kPermissionDenied, reason, message);
}
absl::Status NotFound(const std::string& name) {
  return MakeError(absl::StatusCode::kNotFound, "NOT_FOUND", name + " does not exist", {{"resource", name}});
}

bool IsMember(const Conv& c, const std::string& person_id) {
  for (const auto& m : c.members()) {
    if (m.person() == Person(person_id)) return true;
  }
  return false;
}

// Everything one transaction wants delivered to inboxes, through the outbox: the same item to
// each person's inbox, in one statement.
absl::Status Deliver(db::Tx& tx, const std::vector<std::string>& person_ids, v1::Delivery d, absl::Time now) {
  *d.mutable_enqueue_time() = ToProto(now);
  std::string type;
  if (const auto* f = d.GetReflection()->GetOneofFieldDescriptor(d, d.GetDescriptor()->FindOneofByName("item"))) {
    type = f->name();
  }
  const std::string payload = d.SerializeAsString();
  std::vector<outbox::Event> events;
  for (const auto& person_id : person_ids) {
    events.push_back({InboxKey(person_id), api::NewUuid(), type, payload, LiveChannel(person_id)});
  }
  return outbox::Enqueue(tx, events, now);
}

absl::Status DeliverToMembers(db::Tx& tx, const Conv& c, v1::Delivery d, absl::Time now) {
  std::vector<std::string> ids;
  for (const auto& member : c.members()) ids.push_back(IdOf(member.person()));
  return Deliver(tx, ids, std::move(d), now);
}

absl::Status Notify(db::Tx& tx, const std::string& person_id, v1::Notification n, const std::string& dedupe,
                    absl::Time now) {
  std::string id = api::NewId();
  n.set_name(absl::StrCat("people/", person_id, "/notifications/", id));
  n.set_state(v1::Notification::STATE_PENDING);
  *n.mutable_create_time() = ToProto(now);
  ASSIGN_OR_RETURN(bool fresh, store::InsertNotification(tx, person_id, id, dedupe, n));
  if (!fresh) return absl::OkStatus();  // already told, however often the event arrives
  v1::Delivery d;
  *d.mutable_notification() = n;
  return Deliver(tx, {person_id}, std::move(d), now);
}

v1::Notification MakeNotification(v1::Notification::Type type, const std::string& clinic, const std::string& client,
                                  const std::string& resource, std::string title, std::string body, bool urgent = false) {
  v1::Notification n;
  n.set_type(type);
  n.set_clinic(clinic);
  n.set_client(client);
  n.set_resource(resource);
  n.set_title(std::move(title));
  n.set_body(std::move(body));
  n.set_urgent(urgent);
  return n;
}

}  // namespace

Messenger::Messenger(db::Database& db, Clock& clock, scheduling::SchedulingClient& scheduling, PresenceStore& presence,
                     redis::Client& redis, Options options)
    : db_(db), clock_(clock), scheduling_(scheduling), presence_(presence), redis_(redis), options_(std::move(options)) {}

// ---------------------------------------------------------------------------- conversations

absl::Status Messenger::EnsureConversations(const std::string& clinic_id, const std::string& client_id,
                                            const sv1::CareTeam* given) {
  sv1::CareTeam team;
  if (given) {
    team = *given;
  } else {
    ASSIGN_OR_RETURN(team, scheduling_.GetCareTeam(clinic_id, client_id));
  }
  std::string client_name = client_id;
  if (auto person = scheduling_.GetPerson(client_id); person.ok()) client_name = person->display_name();
  absl::Time now = clock_.Now();
  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    ASSIGN_OR_RETURN(auto sessions, store::ActiveSessionsOf(tx, clinic_id, client_id));
    for (auto kind : {Conv::KIND_CLIENT_CARE_TEAM, Conv::KIND_CARE_TEAM_INTERNAL}) {
      std::string id = (kind == Conv::KIND_CLIENT_CARE_TEAM ? "client-" : "team-") + client_id;
      ASSIGN_OR_RETURN(auto stored, store::GetConversation(tx, clinic_id, id, store::Purpose::kToChange));
      Conv c = stored ? stored->value : Conv();
      std::map<std::string, v1::ConversationMember> before;
      for (const auto& m : c.members()) before[m.person()] = m;
      std::vector<v1::ConversationMember> members;
      auto add = [&](const std::string& person, cv1::Role role, const std::string& display) {
        v1::ConversationMember m = before.count(person) ? before[person] : v1::ConversationMember();
        m.set_person(person);
        m.set_role(role);
        m.set_display_name(display);
        members.push_back(m);
      };
      if (kind == Conv::KIND_CLIENT_CARE_TEAM) {
        add(Person(client_id), cv1::ROLE_CLIENT, client_name);
        for (const auto& s : sessions) {
          if (!s.sitter_id.empty()) add(Person(s.sitter_id), cv1::ROLE_SITTER, s.sitter_id);
        }
      }
      for (const auto& m : team.members()) add(m.person(), m.role(), m.display_name());
      bool same = stored && static_cast<size_t>(c.members_size()) == members.size();
      for (size_t i = 0; same && i < members.size(); ++i) same = c.members(i).person() == members[i].person();
      if (same) continue;
      c.set_name(absl::StrCat("clinics/", clinic_id, "/conversations/", id));
      c.set_kind(kind);
      c.set_client(Person(client_id));
      c.clear_members();
      for (auto& m : members) *c.add_members() = m;
      if (!stored) *c.mutable_create_time() = ToProto(now);
      *c.mutable_update_time() = ToProto(now);
      c.set_etag(absl::StrCat("\"", stored ? stored->revision + 1 : 1, "\""));
      RETURN_IF_ERROR(store::PutConversation(tx, clinic_id, id, c, stored ? &*stored : nullptr));
    }
    return absl::OkStatus();
  }));
  return absl::OkStatus();
}

namespace {

// The checks of a conversation's name that need no database: {clinic id, conversation id,
// client id}.
absl::StatusOr<std::vector<std::string>> ConversationIds(const auth::Principal& p, const std::string& name) {
  ASSIGN_OR_RETURN(std::vector<std::string> ids, api::ParseName(name, "clinics/*/conversations/*", "name"));
  RETURN_IF_ERROR(auth::RequireClinic(p, ids[0]));
  std::string client_id;
  if (absl::StartsWith(ids[1], "client-")) client_id = ids[1].substr(7);
  if (absl::StartsWith(ids[1], "team-")) client_id = ids[1].substr(5);
  if (client_id.empty()) return NotFound(name);
  ids.push_back(std::move(client_id));
  return ids;
}

absl::Status RequireMember(const auth::Principal& p, const Conv& c) {
  if (p.role != auth::Role::kService && !IsMember(c, PersonId(p))) {
    return Denied("NOT_CONVERSATION_MEMBER", "only the conversation's members read and write it");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<store::Stored<Conv>> Messenger::LoadConversation(const P& p, const std::string& name,
                                                                std::vector<std::string>* ids) {
  ASSIGN_OR_RETURN(*ids, ConversationIds(p, name));
  const std::string& clinic_id = (*ids)[0];
  const std::string& conv_id = (*ids)[1];
  const std::string& client_id = (*ids)[2];
  std::optional<store::Stored<Conv>> stored;
  auto load = [&]() {
    return db_.InTransaction([&](db::Tx& tx) -> absl::Status {
      ASSIGN_OR_RETURN(stored, store::GetConversation(tx, clinic_id, conv_id));
      return absl::OkStatus();
    }, db::TxMode::kReadOnly);
  };
  RETURN_IF_ERROR(load());
  if (!stored) {
    // Created lazily from the care team in scheduling (and kept current by CareTeamChanged).
    RETURN_IF_ERROR(EnsureConversations(clinic_id, client_id, nullptr));
    RETURN_IF_ERROR(load());
    if (!stored) return NotFound(name);
  }
  RETURN_IF_ERROR(RequireMember(p, stored->value));
  return *stored;
}

absl::StatusOr<v1::Conversation> Messenger::GetConversation(const P& p, const v1::GetConversationRequest& r) {
  std::vector<std::string> ids;
  ASSIGN_OR_RETURN(auto c, LoadConversation(p, r.name(), &ids));
  return c.value;
}

absl::StatusOr<v1::ListConversationsResponse> Messenger::ListConversations(const P& p,
                                                                           const v1::ListConversationsRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.parent(), "clinics/*", "parent"));
  RETURN_IF_ERROR(auth::RequireClinic(p, ids[0]));
  ASSIGN_OR_RETURN(int size, api::PageSize(r.page_size(), 50, 500));
  ASSIGN_OR_RETURN(int64_t offset, api::ParsePageToken(r.page_token(), r));
  if (p.role == auth::Role::kClient) {
    // A client's own conversation exists from the start (it is created on first sight).
    RETURN_IF_ERROR(EnsureConversations(ids[0], PersonId(p), nullptr));
  }
  v1::ListConversationsResponse out;
  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    ASSIGN_OR_RETURN(auto list, store::ConversationsOf(tx, PersonId(p), ids[0], offset, size + 1));
    int n = 0;
    for (const auto& c : list) {
      if (n == size) break;
      if (!r.client().empty() && c.client() != r.client()) continue;
      if (r.kind() != Conv::KIND_UNSPECIFIED && c.kind() != r.kind()) continue;
      *out.add_conversations() = c;
      ++n;
    }
    if (list.size() > static_cast<size_t>(size)) out.set_next_page_token(api::MakePageToken(offset + size, r));
    return absl::OkStatus();
  }, db::TxMode::kReadOnly));
  return out;
}

// ---------------------------------------------------------------------------- messages

absl::StatusOr<v1::Message> Messenger::SendMessage(const P& p, const v1::SendMessageRequest& r) {
  bool id_ok = !r.message_id().empty() && r.message_id().size() <= 64;
  for (char ch : r.message_id()) id_ok = id_ok && (absl::ascii_isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.');
  if (!id_ok) return InvalidField("message_id", "required: 1-64 characters of [A-Za-z0-9._-], unique per message");
  if (r.message().text().empty() || r.message().text().size() > 10000) {
    return InvalidField("message.text", "required, 1-10000 characters");
  }
  ASSIGN_OR_RETURN(std::vector<std::string> ids, ConversationIds(p, r.parent()));
  const std::string clinic_id = ids[0], conv_id = ids[1], me = PersonId(p);
  bool from_client_side = p.role == auth::Role::kClient || p.role == auth::Role::kSitter;
  std::optional<std::string> escalation_id;
  v1::Message out;
  // The conversation is read, and membership checked, in the write transaction itself (on
  // SQLite a separate read transaction before it was a fifth of messaging's CPU per send);
  // only a conversation not created yet takes LoadConversation's way (it asks scheduling).
  bool missing = false;
  auto send = [&](db::Tx& tx) -> absl::Status {
    absl::Time now = clock_.Now();
    escalation_id.reset();  // (a retried attempt starts again)
    ASSIGN_OR_RETURN(auto fresh, store::GetConversation(tx, clinic_id, conv_id, store::Purpose::kToChange));
    missing = !fresh;
    if (missing) return absl::OkStatus();
    Conv c = fresh->value;
    RETURN_IF_ERROR(RequireMember(p, c));
    ASSIGN_OR_RETURN(auto sessions, store::ActiveSessionsOf(tx, clinic_id, IdOf(c.client())));
    v1::Message m;
    m.set_name(absl::StrCat(r.parent(), "/messages/", r.message_id()));
    m.set_sender(Person(me));
    m.set_text(r.message().text());
    // Rule 10: during a session and its observation period, the client's and sitter's
    // messages are urgent.
    m.set_urgent_forced(from_client_side && !sessions.empty() && !r.message().urgent());
    m.set_urgent(r.message().urgent() || m.urgent_forced());
    m.set_sequence(c.last_message_sequence() + 1);
    *m.mutable_create_time() = ToProto(now);
    std::optional<v1::Escalation> escalation;
    if (m.urgent() && from_client_side && c.kind() == Conv::KIND_CLIENT_CARE_TEAM) {
      // Rule 6: escalated to a present care-team member. Stored with the message; the steps
      // run right after commit and from Tick (durable even if this replica dies).
      escalation_id = api::NewId();
      v1::Escalation& e = escalation.emplace();
      e.set_name(absl::StrCat("clinics/", clinic_id, "/escalations/", *escalation_id));
      e.set_trigger(v1::Escalation::TRIGGER_URGENT_MESSAGE);
      e.set_client(c.client());
      e.set_source(m.name());
      e.set_summary(m.text().substr(0, 300));
      e.set_state(v1::Escalation::STATE_OPEN);
      *e.mutable_create_time() = *e.mutable_update_time() = ToProto(now);
      m.set_escalation(e.name());
    }
    // The message id's uniqueness is checked by the insert itself (the constraint's index), not
    // by a lookup first: on PostgreSQL that lookup's cached plan walked the conversation's
    // messages by the primary key (every message of the conversation, per send; README,
    // Performance).
    absl::StatusOr<bool> inserted = store::InsertMessageIfNew(tx, clinic_id, conv_id, m);
    if (inserted.status().code() == absl::StatusCode::kAlreadyExists) {
      return MakeError(absl::StatusCode::kAborted, "TRANSACTION_CONFLICT", "concurrent send; retry");
    }
    RETURN_IF_ERROR(inserted.status());
    if (!*inserted) {  // this message id is taken; nothing has been written
      escalation_id.reset();
      ASSIGN_OR_RETURN(auto existing, store::GetMessageById(tx, clinic_id, conv_id, r.message_id()));
      if (existing && existing->sender() == Person(me) && existing->text() == r.message().text()) {
        out = *existing;  // the retry of a message that got through
        return absl::OkStatus();
      }
      return MakeError(absl::StatusCode::kAlreadyExists, "MESSAGE_ID_REUSED",
                       "message_id '" + r.message_id() + "' was used for a different message; use a new id");
    }
    if (escalation) RETURN_IF_ERROR(store::PutEscalation(tx, clinic_id, *escalation_id, *escalation, now, std::nullopt));
    c.set_last_message_sequence(m.sequence());
    *c.mutable_last_message_time() = m.create_time();
    for (auto& member : *c.mutable_members()) {
      if (member.person() == Person(me)) {  // the sender has read their own message
        member.set_read_sequence(m.sequence());
        *member.mutable_read_time() = m.create_time();
      }
    }
    *c.mutable_update_time() = ToProto(now);
    RETURN_IF_ERROR(store::PutConversation(tx, clinic_id, conv_id, c, &*fresh));
    v1::Delivery d;
    *d.mutable_message() = m;
    RETURN_IF_ERROR(DeliverToMembers(tx, c, std::move(d), now));
    out = m;
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(db_.InTransaction(send, db::TxMode::kReadWrite, 5));
  if (missing) {
    std::vector<std::string> unused;
    RETURN_IF_ERROR(LoadConversation(p, r.parent(), &unused).status());  // creates it, or says why not
    RETURN_IF_ERROR(db_.InTransaction(send, db::TxMode::kReadWrite, 5));
    if (missing) return NotFound(r.parent());
  }
  if (options_.on_commit) options_.on_commit();
  if (escalation_id) {
    absl::Status st = AdvanceEscalation(clinic_id, *escalation_id);
    if (!st.ok()) spdlog::warn("escalation {} will be retried: {}", *escalation_id, st.ToString());
  }
  return out;
}

absl::StatusOr<v1::ListMessagesResponse> Messenger::ListMessages(const P& p, const v1::ListMessagesRequest& r) {
  std::vector<std::string> ids;
  ASSIGN_OR_RETURN(auto conv, LoadConversation(p, r.parent(), &ids));
  ASSIGN_OR_RETURN(int size, api::PageSize(r.page_size(), 50, 500));
  ASSIGN_OR_RETURN(int64_t offset, api::ParsePageToken(r.page_token(), r));
  if (r.start_sequence() < 0) return InvalidField("start_sequence", "must not be negative");
  v1::ListMessagesResponse out;
  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    int64_t after = std::max<int64_t>(r.start_sequence() - 1, 0) + offset;
    ASSIGN_OR_RETURN(auto list, store::ListMessages(tx, ids[0], ids[1], after, size + 1));
    for (size_t i = 0; i < list.size() && i < static_cast<size_t>(size); ++i) *out.add_messages() = list[i];
    if (list.size() > static_cast<size_t>(size)) out.set_next_page_token(api::MakePageToken(offset + size, r));
    return absl::OkStatus();
  }, db::TxMode::kReadOnly));
  return out;
}

absl::StatusOr<v1::ReadReceipt> Messenger::MarkRead(const P& p, const v1::MarkReadRequest& r) {
  std::vector<std::string> ids;
  ASSIGN_OR_RETURN(auto conv, LoadConversation(p, r.name(), &ids));
  if (r.sequence() < 1) return InvalidField("sequence", "the sequence of the newest message read, >= 1");
  const std::string me = PersonId(p);
  return api::RunIdempotent<v1::ReadReceipt>(db_, clock_, p.subject, "MarkRead", r.request_id(), r,
                                             [&](db::Tx& tx) -> absl::StatusOr<v1::ReadReceipt> {
    absl::Time now = clock_.Now();
    ASSIGN_OR_RETURN(auto fresh, store::GetConversation(tx, ids[0], ids[1], store::Purpose::kToChange));
    Conv c = fresh->value;
    if (r.sequence() > c.last_message_sequence()) {
      return InvalidField("sequence", absl::StrCat("the conversation has ", c.last_message_sequence(), " messages"));
    }
    v1::ReadReceipt receipt;
    receipt.set_conversation(c.name());
    receipt.set_reader(Person(me));
    for (auto& m : *c.mutable_members()) {
      if (m.person() != Person(me)) continue;
      if (r.sequence() > m.read_sequence()) {  // read state only moves forward
        m.set_read_sequence(r.sequence());
        *m.mutable_read_time() = ToProto(now);
      }
      receipt.set_read_sequence(m.read_sequence());
      *receipt.mutable_read_time() = m.read_time();
    }
    *c.mutable_update_time() = ToProto(now);
    RETURN_IF_ERROR(store::PutConversation(tx, ids[0], ids[1], c, &*fresh));
    v1::Delivery d;
    *d.mutable_read_receipt() = receipt;
    RETURN_IF_ERROR(DeliverToMembers(tx, c, std::move(d), now));
    return receipt;
  });
}

absl::StatusOr<v1::UnreadCounts> Messenger::GetUnreadCounts(const P& p, const v1::GetUnreadCountsRequest& r) {
  std::string clinic_id;  // empty: every clinic the caller acts in
  if (!r.clinic().empty()) {
    ASSIGN_OR_RETURN(auto ids, api::ParseName(r.clinic(), "clinics/*", "clinic"));
    RETURN_IF_ERROR(auth::RequireClinic(p, ids[0]));
    clinic_id = ids[0];
  }
  const std::string me = PersonId(p);
  v1::UnreadCounts out;
  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    ASSIGN_OR_RETURN(auto convs, store::ConversationsOf(tx, me, clinic_id, 0, 1000));
    for (const auto& c : convs) {
      const std::string conv_clinic = ClinicOf(c.name());
      if (!p.InClinic(conv_clinic)) continue;  // a clinic the token does not grant
      int64_t read = 0;
      for (const auto& m : c.members()) {
        if (m.person() == Person(me)) read = m.read_sequence();
      }
      ASSIGN_OR_RETURN(auto counts, store::CountUnread(tx, conv_clinic, IdOf(c.name()), read, me));
      if (counts.first == 0) continue;  // only conversations with unread messages are listed
      auto* u = out.add_conversations();
      u->set_conversation(c.name());
      u->set_unread_count(counts.first);
      u->set_urgent_unread_count(counts.second);
      u->set_last_message_sequence(c.last_message_sequence());
      out.set_total_unread(out.total_unread() + counts.first);
      out.set_total_urgent_unread(out.total_urgent_unread() + counts.second);
    }
    return absl::OkStatus();
  }, db::TxMode::kReadOnly));
  return out;
}

absl::StatusOr<std::string> Messenger::SubscriberOf(const P& p) {
  if (p.role == auth::Role::kService || p.role == auth::Role::kPartner) {
    return Denied("PERMISSION_DENIED_ROLE", "live delivery is for people");
  }
  return PersonId(p);
}

// ---------------------------------------------------------------------------- presence

absl::Status Messenger::PublishPresence(const PresenceUpdate& u) {
  if (!u.changed()) return absl::OkStatus();
  std::vector<std::string> watchers;
  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    ASSIGN_OR_RETURN(watchers, store::Contacts(tx, IdOf(u.presence.person())));
    return absl::OkStatus();
  }, db::TxMode::kReadOnly));
  v1::Delivery d;
  d.mutable_presence_change()->mutable_presence()->CopyFrom(u.presence);
  d.mutable_presence_change()->set_previous_status(u.previous);
  *d.mutable_enqueue_time() = ToProto(clock_.Now());
  std::string payload = "- " + d.SerializeAsString();  // live only: no inbox entry
  for (const auto& w : watchers) redis_.Command({"PUBLISH", LiveChannel(w), payload}).IgnoreError();
  return absl::OkStatus();
}

absl::StatusOr<PresenceStore::Beat> Messenger::CheckHeartbeat(const P& p, const v1::HeartbeatRequest& r) {
  if (p.role == auth::Role::kService || p.role == auth::Role::kPartner) {
    return Denied("PERMISSION_DENIED_ROLE", "presence is for people");
  }
  if (r.device_id().empty() || r.device_id().size() > 64) return InvalidField("device_id", "required, 1-64 characters");
  if (r.status() != cv1::PRESENCE_STATUS_ONLINE && r.status() != cv1::PRESENCE_STATUS_AWAY &&
      r.status() != cv1::PRESENCE_STATUS_DO_NOT_DISTURB) {
    return InvalidField("status", "ONLINE, AWAY or DO_NOT_DISTURB (IN_SESSION comes from the session itself)");
  }
  absl::Duration ttl = r.has_ttl() ? FromProto(r.ttl()) : absl::Seconds(60);
  if (ttl < absl::Seconds(10) || ttl > absl::Seconds(300)) return InvalidField("ttl", "10s-300s");
  PresenceStore::Beat beat{PersonId(p), {}, r.device_id(), r.status(), ttl};
  for (const auto& c : p.clinics) {
    if (c != "*") beat.clinics.push_back(c);
  }
  return beat;
}

v1::HeartbeatResponse Messenger::Heartbeated(const PresenceUpdate& u, absl::Duration ttl) {
  PublishPresence(u).IgnoreError();
  v1::HeartbeatResponse out;
  *out.mutable_presence() = u.presence;
  *out.mutable_heartbeat_interval() = ToProto(ttl / 3);
  return out;
}

absl::StatusOr<v1::HeartbeatResponse> Messenger::Heartbeat(const P& p, const v1::HeartbeatRequest& r) {
  ASSIGN_OR_RETURN(PresenceStore::Beat b, CheckHeartbeat(p, r));
  ASSIGN_OR_RETURN(PresenceUpdate u, presence_.Heartbeat(b.person_id, b.clinics, b.device, b.status, b.ttl));
  return Heartbeated(u, b.ttl);
}

std::vector<absl::StatusOr<v1::HeartbeatResponse>> Messenger::ApplyHeartbeats(
    const std::vector<PresenceStore::Beat>& beats) {
  std::vector<absl::StatusOr<PresenceUpdate>> updates = presence_.HeartbeatMany(beats);
  std::vector<absl::StatusOr<v1::HeartbeatResponse>> out;
  out.reserve(beats.size());
  for (size_t i = 0; i < beats.size(); ++i) {
    if (!updates[i].ok()) {
      out.push_back(updates[i].status());
    } else {
      out.push_back(Heartbeated(*updates[i], beats[i].ttl));
    }
  }
  return out;
}

absl::StatusOr<v1::Presence> Messenger::GetPresence(const P& p, const v1::GetPresenceRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.name(), "people/*/presence", "name"));
  if (ids[0] != PersonId(p) && p.role != auth::Role::kService) {
    std::vector<std::string> contacts;
    // Only through care teams of the clinics this token acts in.
    std::vector<std::string> clinics;
    for (const auto& c : p.clinics) {
      if (c != "*") clinics.push_back(c);
    }
    if (clinics.empty()) return Denied("PERMISSION_DENIED_CROSS_CLINIC", "the token names no clinic");
    RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
      ASSIGN_OR_RETURN(contacts, store::Contacts(tx, PersonId(p), clinics));
      return absl::OkStatus();
    }, db::TxMode::kReadOnly));
    if (std::find(contacts.begin(), contacts.end(), ids[0]) == contacts.end()) {
      return Denied("NOT_ON_CARE_TEAM", "presence is visible to people who share a care team");
    }
  }
  return presence_.Get(ids[0]);
}

absl::StatusOr<v1::BatchGetPresenceResponse> Messenger::BatchGetPresence(const P& p, const v1::BatchGetPresenceRequest& r) {
  if (r.names_size() > 100) return InvalidField("names", "at most 100");
  v1::BatchGetPresenceResponse out;
  for (const auto& name : r.names()) {
    v1::GetPresenceRequest g;
    g.set_name(name);
    ASSIGN_OR_RETURN(*out.add_presences(), GetPresence(p, g));
  }
  return out;
}

absl::StatusOr<v1::GetCareTeamPresenceResponse> Messenger::GetCareTeamPresence(const P& p,
                                                                               const v1::GetCareTeamPresenceRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.care_team(), "clinics/*/careTeams/*", "care_team"));
  std::vector<std::string> cids;
  ASSIGN_OR_RETURN(auto conv, LoadConversation(p, absl::StrCat("clinics/", ids[0], "/conversations/client-", ids[1]), &cids));
  v1::GetCareTeamPresenceResponse out;
  for (const auto& m : conv.value.members()) {
    ASSIGN_OR_RETURN(v1::Presence pr, presence_.Get(IdOf(m.person())));
    if (m.role() == cv1::ROLE_CLIENT) {
      *out.mutable_client() = pr;
    } else {
      *out.add_members() = pr;
    }
  }
  return out;
}

absl::StatusOr<v1::SitterCheckInResponse> Messenger::SitterCheckIn(const P& p, const v1::SitterCheckInRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.appointment(), "clinics/*/appointments/*", "appointment"));
  RETURN_IF_ERROR(auth::RequireClinic(p, ids[0]));
  if (r.note().size() > 1000) return InvalidField("note", "at most 1000 characters");
  ASSIGN_OR_RETURN(sv1::Clinic clinic, scheduling_.GetClinic(ids[0]));
  absl::Duration interval = FromProto(clinic.policy().sitter_checkin_interval());
  if (interval <= absl::ZeroDuration()) interval = absl::Minutes(20);
  // Idempotent on request_id: a retried check-in answers with the due time it set and does not
  // move the session's check-in clock again.
  ASSIGN_OR_RETURN(v1::SitterCheckInResponse out,
                   api::RunIdempotent<v1::SitterCheckInResponse>(
                       db_, clock_, p.subject, "SitterCheckIn", r.request_id(), r,
                       [&](db::Tx& tx) -> absl::StatusOr<v1::SitterCheckInResponse> {
    ASSIGN_OR_RETURN(std::optional<store::ActiveSession> session, store::GetActiveSession(tx, ids[0], ids[1]));
    if (!session) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "INVALID_STATE", "no session of that appointment is in progress");
    }
    if (session->sitter_id != PersonId(p)) {
      return Denied("NOT_DESIGNATED_SITTER", "only the sitter named for this session checks in");
    }
    const absl::Time now = clock_.Now();
    session->last_check_in = now;
    session->next_due = now + interval;
    RETURN_IF_ERROR(store::PutActiveSession(tx, *session));
    v1::SitterCheckInResponse checked;
    *checked.mutable_next_check_in_due_time() = ToProto(now + interval);
    return checked;
  }));
  // A check-in counts as the sitter's heartbeat (a retry refreshes it, which is harmless).
  ASSIGN_OR_RETURN(PresenceUpdate u, presence_.Heartbeat(PersonId(p), {ids[0]}, "sitter-check-in",
                                                         cv1::PRESENCE_STATUS_ONLINE, interval + absl::Minutes(1)));
  PublishPresence(u).IgnoreError();
  *out.mutable_presence() = u.presence;
  return out;
}

// ---------------------------------------------------------------------------- notifications

absl::StatusOr<v1::ListNotificationsResponse> Messenger::ListNotifications(const P& p,
                                                                           const v1::ListNotificationsRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.parent(), "people/*", "parent"));
  if (ids[0] != PersonId(p)) return Denied("PERMISSION_DENIED_NOT_SELF", "you may list only your own notifications");
  ASSIGN_OR_RETURN(int size, api::PageSize(r.page_size(), 50, 500));
  ASSIGN_OR_RETURN(int64_t offset, api::ParsePageToken(r.page_token(), r));
  std::vector<int> states(r.states().begin(), r.states().end());
  v1::ListNotificationsResponse out;
  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    ASSIGN_OR_RETURN(auto list, store::ListNotifications(tx, ids[0], states, offset, size + 1));
    for (size_t i = 0; i < list.size() && i < static_cast<size_t>(size); ++i) *out.add_notifications() = list[i];
    if (list.size() > static_cast<size_t>(size)) out.set_next_page_token(api::MakePageToken(offset + size, r));
    return absl::OkStatus();
  }, db::TxMode::kReadOnly));
  return out;
}

absl::StatusOr<v1::Notification> Messenger::AcknowledgeNotification(const P& p,
                                                                    const v1::AcknowledgeNotificationRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.name(), "people/*/notifications/*", "name"));
  if (ids[0] != PersonId(p)) return Denied("PERMISSION_DENIED_NOT_SELF", "you may acknowledge only your own notifications");
  return api::RunIdempotent<v1::Notification>(db_, clock_, p.subject, "AcknowledgeNotification", r.request_id(), r,
                                              [&](db::Tx& tx) -> absl::StatusOr<v1::Notification> {
    ASSIGN_OR_RETURN(auto n, store::GetNotification(tx, ids[0], ids[1]));
    if (!n) return NotFound(r.name());
    if (n->state() != v1::Notification::STATE_ACKNOWLEDGED) {
      n->set_state(v1::Notification::STATE_ACKNOWLEDGED);
      *n->mutable_acknowledge_time() = ToProto(clock_.Now());
      RETURN_IF_ERROR(store::UpdateNotification(tx, ids[0], ids[1], *n));
    }
    return *n;
  });
}

// ---------------------------------------------------------------------------- escalations

absl::Status Messenger::AdvanceEscalation(const std::string& clinic_id, const std::string& escalation_id) {
  // Inputs from outside the database first: care team, presence, roster.
  std::optional<store::Stored<v1::Escalation>> esc;
  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    ASSIGN_OR_RETURN(esc, store::GetEscalation(tx, clinic_id, escalation_id));
    return absl::OkStatus();
  }, db::TxMode::kReadOnly));
  if (!esc || esc->value.state() != v1::Escalation::STATE_OPEN) return absl::OkStatus();
  const std::string client_id = IdOf(esc->value.client());
  ASSIGN_OR_RETURN(sv1::CareTeam team, scheduling_.GetCareTeam(clinic_id, client_id));
  ASSIGN_OR_RETURN(sv1::Clinic clinic, scheduling_.GetClinic(clinic_id));
  absl::Time now = clock_.Now();
  absl::Duration ack = FromProto(clinic.policy().escalation_ack_timeout());
  if (ack <= absl::ZeroDuration()) ack = absl::Minutes(5);

  std::vector<v1::EscalationStep> new_steps;
  int step = esc->value.steps_size();
  auto add_step = [&](v1::EscalationStep::Target target, std::vector<std::string> targets, std::string reason) {
    v1::EscalationStep s;
    s.set_step_number(++step);
    s.set_target(target);
    for (auto& t : targets) s.add_targets(Person(t));
    s.set_reason(std::move(reason));
    *s.mutable_step_time() = ToProto(now);
    new_steps.push_back(s);
  };
  std::string why = step == 0 ? (esc->value.trigger() == v1::Escalation::TRIGGER_URGENT_MESSAGE ? "urgent message"
                                 : esc->value.trigger() == v1::Escalation::TRIGGER_ADVERSE_EVENT ? "adverse event"
                                                                                                 : "missed sitter check-in")
                              : absl::StrCat("not acknowledged within ", absl::FormatDuration(ack));
  if (step == 0) {
    std::vector<std::string> present;
    for (const auto& m : team.members()) {
      ASSIGN_OR_RETURN(v1::Presence pr, presence_.Get(IdOf(m.person())));
      if (pr.status() == cv1::PRESENCE_STATUS_ONLINE) present.push_back(IdOf(m.person()));
    }
    if (!present.empty()) {
      add_step(v1::EscalationStep::TARGET_PRESENT_CARE_TEAM, present, why + ": care-team members present");
    } else {
      add_step(v1::EscalationStep::TARGET_PRESENT_CARE_TEAM, {}, why + ": no care-team member present");
      why = "no care-team member present";
    }
  }
  if ((step == 1 && new_steps.empty()) || (step == 1 && new_steps.back().targets().empty())) {
    std::vector<std::string> on_call;
    for (const auto& shift : clinic.on_call_roster()) {
      if (FromProto(shift.interval().start_time()) <= now && now < FromProto(shift.interval().end_time())) {
        on_call.push_back(IdOf(shift.person()));
      }
    }
    std::string reason = why;
    if (on_call.empty()) {
      ASSIGN_OR_RETURN(on_call, scheduling_.MembersWithRole(clinic_id, cv1::ROLE_CLINICIAN));
      reason += "; no on-call shift now, all clinicians";
    }
    add_step(v1::EscalationStep::TARGET_ON_CALL, on_call, reason);
  } else if (step == 2 && new_steps.empty()) {
    std::set<std::string> all;
    for (const auto& m : team.members()) all.insert(IdOf(m.person()));
    ASSIGN_OR_RETURN(auto clinicians, scheduling_.MembersWithRole(clinic_id, cv1::ROLE_CLINICIAN));
    ASSIGN_OR_RETURN(auto admins, scheduling_.MembersWithRole(clinic_id, cv1::ROLE_ADMIN));
    all.insert(clinicians.begin(), clinicians.end());
    all.insert(admins.begin(), admins.end());
    add_step(v1::EscalationStep::TARGET_ALL_CLINICAL_STAFF, {all.begin(), all.end()}, why);
  }
  if (new_steps.empty()) return absl::OkStatus();  // final step taken: stays OPEN until acknowledged

  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    ASSIGN_OR_RETURN(auto fresh, store::GetEscalation(tx, clinic_id, escalation_id));
    if (!fresh || fresh->revision != esc->revision) return absl::OkStatus();  // another replica got there first
    v1::Escalation e = fresh->value;
    bool final = false;
    for (auto& s : new_steps) {
      final = s.target() == v1::EscalationStep::TARGET_ALL_CLINICAL_STAFF;
      if (!final && !s.targets().empty()) *s.mutable_ack_deadline_time() = ToProto(now + ack);
      *e.add_steps() = s;
    }
    *e.mutable_update_time() = ToProto(now);
    e.set_etag(absl::StrCat("\"", fresh->revision + 1, "\""));
    std::optional<absl::Time> next = final ? std::nullopt : std::optional<absl::Time>(now + ack);
    RETURN_IF_ERROR(store::PutEscalation(tx, clinic_id, escalation_id, e, next, fresh->revision));
    const auto& last = e.steps(e.steps_size() - 1);
    for (const auto& target : last.targets()) {
      std::string tid = IdOf(target);
      RETURN_IF_ERROR(Notify(tx, tid,
                             MakeNotification(v1::Notification::TYPE_ESCALATION, "clinics/" + clinic_id, e.client(),
                                              e.name(), "Urgent: a client needs you", e.summary(), true),
                             absl::StrCat("escalation:", escalation_id, ":", last.step_number()), now));
      v1::Delivery d;
      *d.mutable_escalation() = e;
      RETURN_IF_ERROR(Deliver(tx, {tid}, std::move(d), now));
    }
    return absl::OkStatus();
  }));
  if (options_.on_commit) options_.on_commit();
  return absl::OkStatus();
}

// Escalations carry a client's clinical situation (a message excerpt, an adverse event), so
// clinical staff see those about their own clients' care and those that notified them (the
// on-call clinician; everyone at the final step); admins and services see the clinic's all.
absl::StatusOr<bool> Messenger::MaySeeEscalation(const P& p, const std::string& clinic_id, const v1::Escalation& e,
                                                 std::map<std::string, bool>& teams) {
  if (p.role == auth::Role::kAdmin || p.role == auth::Role::kService) return true;
  const std::string me = Person(PersonId(p));
  for (const auto& step : e.steps()) {
    for (const auto& target : step.targets()) {
      if (target == me) return true;
    }
  }
  const std::string client_id = IdOf(e.client());
  auto known = teams.find(client_id);
  if (known == teams.end()) {
    ASSIGN_OR_RETURN(sv1::CareTeam team, scheduling_.GetCareTeam(clinic_id, client_id));
    bool member = false;
    for (const auto& m : team.members()) member = member || m.person() == me;
    known = teams.emplace(client_id, member).first;
  }
  return known->second;
}

absl::StatusOr<v1::ListEscalationsResponse> Messenger::ListEscalations(const P& p, const v1::ListEscalationsRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.parent(), "clinics/*", "parent"));
  RETURN_IF_ERROR(auth::RequireClinic(p, ids[0]));
  if (p.role != auth::Role::kTherapist && p.role != auth::Role::kClinician && p.role != auth::Role::kAdmin &&
      p.role != auth::Role::kService) {
    return Denied("PERMISSION_DENIED_ROLE", "escalations are for clinical staff");
  }
  ASSIGN_OR_RETURN(int size, api::PageSize(r.page_size(), 50, 500));
  // The token holds a position among all of the clinic's matching escalations, visible or not.
  ASSIGN_OR_RETURN(int64_t offset, api::ParsePageToken(r.page_token(), r));
  std::vector<int> states(r.states().begin(), r.states().end());
  const std::string client_id = r.client().empty() ? "" : IdOf(r.client());
  // Rows are read in batches, each in its own read transaction (the care-team lookups run
  // outside any), and at most max_scan of them per page: a caller who may see few of many gets
  // a short page and a token.
  constexpr int kBatch = 100;
  const int64_t max_scan = std::max<int64_t>(1000, 10 * int64_t{size});
  std::map<std::string, bool> teams;
  v1::ListEscalationsResponse out;
  int64_t position = offset;
  bool more = true;
  while (more && out.escalations_size() < size && position - offset < max_scan) {
    std::vector<v1::Escalation> batch;
    RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
      ASSIGN_OR_RETURN(batch, store::ListEscalations(tx, ids[0], client_id, states, position, kBatch));
      return absl::OkStatus();
    }, db::TxMode::kReadOnly));
    more = batch.size() == static_cast<size_t>(kBatch);
    for (auto& e : batch) {
      if (out.escalations_size() == size) {
        more = true;  // this one starts the next page
        break;
      }
      ++position;
      ASSIGN_OR_RETURN(bool visible, MaySeeEscalation(p, ids[0], e, teams));
      if (visible) *out.add_escalations() = std::move(e);
    }
  }
  if (more) out.set_next_page_token(api::MakePageToken(position, r));
  return out;
}

absl::StatusOr<v1::Escalation> Messenger::AcknowledgeEscalation(const P& p, const v1::AcknowledgeEscalationRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.name(), "clinics/*/escalations/*", "name"));
  RETURN_IF_ERROR(auth::RequireClinic(p, ids[0]));
  if (p.role != auth::Role::kTherapist && p.role != auth::Role::kClinician && p.role != auth::Role::kAdmin) {
    return Denied("PERMISSION_DENIED_ROLE", "escalations are acknowledged by clinical staff");
  }
  if (r.note().size() > 2000) return InvalidField("note", "at most 2000 characters");
  std::optional<store::Stored<v1::Escalation>> seen;
  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    ASSIGN_OR_RETURN(seen, store::GetEscalation(tx, ids[0], ids[1]));
    return absl::OkStatus();
  }, db::TxMode::kReadOnly));
  if (!seen) return NotFound(r.name());
  std::map<std::string, bool> teams;
  ASSIGN_OR_RETURN(bool visible, MaySeeEscalation(p, ids[0], seen->value, teams));
  if (!visible) {
    return Denied("NOT_ON_CARE_TEAM", "only the client's care team and the people this escalation notified may "
                                      "acknowledge it");
  }
  return api::RunIdempotent<v1::Escalation>(db_, clock_, p.subject, "AcknowledgeEscalation", r.request_id(), r,
                                            [&](db::Tx& tx) -> absl::StatusOr<v1::Escalation> {
    ASSIGN_OR_RETURN(auto stored, store::GetEscalation(tx, ids[0], ids[1]));
    if (!stored) return NotFound(r.name());
    v1::Escalation e = stored->value;
    if (e.state() == v1::Escalation::STATE_ACKNOWLEDGED) return e;
    absl::Time now = clock_.Now();
    e.set_state(v1::Escalation::STATE_ACKNOWLEDGED);
    e.set_acknowledged_by(Person(PersonId(p)));
    *e.mutable_acknowledge_time() = ToProto(now);
    e.set_acknowledge_note(r.note());
    if (e.steps_size() > 0) e.mutable_steps(e.steps_size() - 1)->set_acknowledged(true);
    *e.mutable_update_time() = ToProto(now);
    RETURN_IF_ERROR(store::PutEscalation(tx, ids[0], ids[1], e, std::nullopt, stored->revision));
    return e;
  });
}

// ---------------------------------------------------------------------------- events

absl::Status Messenger::HandleEvent(const ev1::EventEnvelope& ev) {
  const std::string clinic_id = ev.clinic().empty() ? "" : IdOf(ev.clinic());
  std::optional<sv1::Clinic> clinic;
  auto load_clinic = [&]() -> absl::Status {
    if (!clinic) {
      ASSIGN_OR_RETURN(clinic, scheduling_.GetClinic(clinic_id));
    }
    return absl::OkStatus();
  };
  std::optional<std::pair<std::string, std::string>> raise;  // (clinic, escalation id)
  std::optional<PresenceUpdate> presence_change;
  // Inputs from other services and Redis first, then one transaction for the effects.
  std::vector<std::string> team_ids, therapist_ids;
  auto load_team = [&](const std::string& client) -> absl::Status {
    ASSIGN_OR_RETURN(sv1::CareTeam team, scheduling_.GetCareTeam(clinic_id, client));
    for (const auto& m : team.members()) {
      team_ids.push_back(IdOf(m.person()));
      if (m.role() == cv1::ROLE_THERAPIST) therapist_ids.push_back(IdOf(m.person()));
    }
    return absl::OkStatus();
  };
  switch (ev.payload_case()) {
    case ev1::EventEnvelope::kCareTeamChanged:
      RETURN_IF_ERROR(EnsureConversations(clinic_id, IdOf(ev.care_team_changed().care_team().client()),
                                          &ev.care_team_changed().care_team()));
      break;
    case ev1::EventEnvelope::kAppointmentBooked:
    case ev1::EventEnvelope::kAppointmentRescheduled:
      RETURN_IF_ERROR(load_clinic());
      break;
    case ev1::EventEnvelope::kIntegrationDue:
      RETURN_IF_ERROR(load_team(IdOf(ev.integration_due().integration_due().client())));
      break;
    case ev1::EventEnvelope::kSessionStarted: {
      RETURN_IF_ERROR(load_team(IdOf(ev.session_started().client())));
      RETURN_IF_ERROR(load_clinic());
      ASSIGN_OR_RETURN(presence_change, presence_.SetInSession(IdOf(ev.session_started().client()), {clinic_id}, true));
      break;
    }
    case ev1::EventEnvelope::kSessionCompleted: {
      ASSIGN_OR_RETURN(presence_change, presence_.SetInSession(IdOf(ev.session_completed().client()), {clinic_id}, false));
      break;
    }
    case ev1::EventEnvelope::kAdverseEventReported:
      RETURN_IF_ERROR(load_team(IdOf(ev.adverse_event_reported().client())));
      break;
    default:
      break;
  }
  bool membership_changed = false;
  std::string membership_client;
  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    absl::Time now = clock_.Now();
    ASSIGN_OR_RETURN(bool first, store::FirstTime(tx, ev.event_id(), now));
    if (!first) return absl::OkStatus();
    const std::string c = "clinics/" + clinic_id;
    auto notify_both = [&](const sv1::Appointment& a, v1::Notification::Type type, const std::string& title,
                           const std::string& dedupe_suffix) -> absl::Status {
      for (const auto& who : {a.client(), a.provider()}) {
        RETURN_IF_ERROR(Notify(tx, IdOf(who), MakeNotification(type, c, a.client(), a.name(), title, title),
                               absl::StrCat(ev.event_id(), ":", dedupe_suffix), now));
      }
      return absl::OkStatus();
    };
    auto plan_reminders = [&](const sv1::Appointment& a) -> absl::Status {
      RETURN_IF_ERROR(store::DeleteReminders(tx, clinic_id, IdOf(a.name())));
      for (const auto& offset : clinic->policy().reminder_offsets()) {
        absl::Time due = FromProto(a.start_time()) - FromProto(offset);
        if (due < now) continue;
        RETURN_IF_ERROR(store::PutReminder(tx, clinic_id, IdOf(a.name()), offset.seconds(), due, a.SerializeAsString()));
      }
      return absl::OkStatus();
    };
    switch (ev.payload_case()) {
      case ev1::EventEnvelope::kAppointmentBooked: {
        const auto& a = ev.appointment_booked().appointment();
        RETURN_IF_ERROR(notify_both(a, v1::Notification::TYPE_APPOINTMENT_BOOKED, "Appointment booked", "booked"));
        RETURN_IF_ERROR(plan_reminders(a));
        break;
      }
      case ev1::EventEnvelope::kAppointmentRescheduled: {
        const auto& a = ev.appointment_rescheduled().appointment();
        RETURN_IF_ERROR(notify_both(a, v1::Notification::TYPE_APPOINTMENT_CHANGED, "Appointment moved", "moved"));
        RETURN_IF_ERROR(plan_reminders(a));
        break;
      }
      case ev1::EventEnvelope::kAppointmentCancelled: {
        const auto& a = ev.appointment_cancelled().appointment();
        RETURN_IF_ERROR(notify_both(a, v1::Notification::TYPE_APPOINTMENT_CANCELLED, "Appointment cancelled", "cancelled"));
        RETURN_IF_ERROR(store::DeleteReminders(tx, clinic_id, IdOf(a.name())));
        break;
      }
      case ev1::EventEnvelope::kAppointmentStatusChanged: {
        const auto& a = ev.appointment_status_changed().appointment();
        auto prev = ev.appointment_status_changed().previous_state();
        bool tell = (prev == sv1::Appointment::STATE_PROPOSED && a.state() == sv1::Appointment::STATE_BOOKED) ||
                    a.state() == sv1::Appointment::STATE_NOSHOW || a.state() == sv1::Appointment::STATE_ENTERED_IN_ERROR;
        if (tell) RETURN_IF_ERROR(notify_both(a, v1::Notification::TYPE_APPOINTMENT_CHANGED, "Appointment updated", "state"));
        if (a.state() == sv1::Appointment::STATE_NOSHOW || a.state() == sv1::Appointment::STATE_ENTERED_IN_ERROR) {
          RETURN_IF_ERROR(store::DeleteReminders(tx, clinic_id, IdOf(a.name())));
        }
        break;
      }
      case ev1::EventEnvelope::kIntegrationDue: {
        const auto& d = ev.integration_due().integration_due();
        std::vector<std::string> to = therapist_ids;
        to.push_back(IdOf(d.client()));
        for (const auto& who : to) {
          RETURN_IF_ERROR(Notify(tx, who,
                                 MakeNotification(v1::Notification::TYPE_INTEGRATION_DUE, c, d.client(),
                                                  d.medicine_appointment(), "Integration session due",
                                                  "Book the integration session for the last medicine session."),
                                 ev.event_id(), now));
        }
        break;
      }
      case ev1::EventEnvelope::kWaitlistOfferMade: {
        const auto& e = ev.waitlist_offer_made().waitlist_entry();
        RETURN_IF_ERROR(Notify(tx, IdOf(e.client()),
                               MakeNotification(v1::Notification::TYPE_WAITLIST_OFFER, c, e.client(), e.name(),
                                                "An earlier slot is free", "Accept the offer to book it."),
                               ev.event_id(), now));
        break;
      }
      case ev1::EventEnvelope::kSessionStarted: {
        const auto& s = ev.session_started();
        store::ActiveSession session;
        session.clinic_id = clinic_id;
        session.appointment_id = IdOf(s.appointment());
        session.client_id = IdOf(s.client());
        session.sitter_id = s.sitter().empty() ? "" : IdOf(s.sitter());
        session.kind = s.kind();
        session.start = FromProto(s.start_time());
        if (s.kind() == cv1::APPOINTMENT_KIND_MEDICINE_SELF_GUIDED && !session.sitter_id.empty()) {
          absl::Duration interval = FromProto(clinic->policy().sitter_checkin_interval());
          session.next_due = now + (interval > absl::ZeroDuration() ? interval : absl::Minutes(20));
        }
        RETURN_IF_ERROR(store::PutActiveSession(tx, session));
        for (const auto& who : team_ids) {
          RETURN_IF_ERROR(Notify(tx, who,
                                 MakeNotification(v1::Notification::TYPE_SESSION_STARTED, c, s.client(),
                                                  s.session_record(), "Session started", "A client's session started."),
                                 ev.event_id(), now));
        }
        membership_changed = !session.sitter_id.empty();
        membership_client = session.client_id;
        break;
      }
      case ev1::EventEnvelope::kSessionCompleted: {
        const auto& s = ev.session_completed();
        RETURN_IF_ERROR(store::DeleteActiveSession(tx, clinic_id, IdOf(s.appointment())));
        membership_changed = true;
        membership_client = IdOf(s.client());
        break;
      }
      case ev1::EventEnvelope::kAdverseEventReported: {
        const auto& a = ev.adverse_event_reported();
        for (const auto& who : team_ids) {
          RETURN_IF_ERROR(Notify(tx, who,
                                 MakeNotification(v1::Notification::TYPE_ADVERSE_EVENT, c, a.client(),
                                                  a.session_record(), "Adverse event reported",
                                                  a.adverse_event().description().substr(0, 1000), true),
                                 ev.event_id(), now));
        }
        std::string eid = api::NewId();
        v1::Escalation e;
        e.set_name(absl::StrCat(c, "/escalations/", eid));
        e.set_trigger(v1::Escalation::TRIGGER_ADVERSE_EVENT);
        e.set_client(a.client());
        e.set_source(a.session_record());
        e.set_summary(absl::StrCat(v1::Escalation::Trigger_Name(e.trigger()), ": ",
                                   a.adverse_event().description().substr(0, 400)));
        e.set_state(v1::Escalation::STATE_OPEN);
        *e.mutable_create_time() = *e.mutable_update_time() = ToProto(now);
        RETURN_IF_ERROR(store::PutEscalation(tx, clinic_id, eid, e, now, std::nullopt));
        raise = std::make_pair(clinic_id, eid);
        break;
      }
      default:
        break;
    }
    return absl::OkStatus();
  }, db::TxMode::kReadWrite, 5));
  if (options_.on_commit) options_.on_commit();
  if (membership_changed) RETURN_IF_ERROR(EnsureConversations(clinic_id, membership_client, nullptr));
  if (presence_change) PublishPresence(*presence_change).IgnoreError();
  if (raise) {
    absl::Status s = AdvanceEscalation(raise->first, raise->second);
    if (!s.ok()) spdlog::warn("escalation {} will be retried: {}", raise->second, s.ToString());
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------- housekeeping

absl::Status Messenger::Tick() {
  absl::Time now = clock_.Now();
  // Presence: people whose every device expired go OFFLINE (Redis may be down: skip then).
  if (auto clinics = presence_.Clinics(); clinics.ok()) {
    for (const auto& c : *clinics) {
      auto changes = presence_.Sweep(c);
      if (!changes.ok()) break;
      for (const auto& u : *changes) PublishPresence(u).IgnoreError();
    }
  }
  // Escalation steps that are due.
  std::vector<std::pair<std::string, v1::Escalation>> due;
  std::vector<store::DueReminder> reminders;
  std::vector<store::ActiveSession> missed;
  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    ASSIGN_OR_RETURN(due, store::DueEscalations(tx, now));
    ASSIGN_OR_RETURN(reminders, store::DueReminders(tx, now, 200));
    ASSIGN_OR_RETURN(missed, store::OverdueCheckIns(tx, now));
    return absl::OkStatus();
  }, db::TxMode::kReadOnly));
  for (const auto& [clinic_id, e] : due) {
    absl::Status s = AdvanceEscalation(clinic_id, IdOf(e.name()));
    if (!s.ok()) spdlog::warn("escalation {}: {}", e.name(), s.ToString());
  }
  // Reminders: each delivered once (marked sent in the transaction that notifies).
  for (const auto& r : reminders) {
    sv1::Appointment a;
    if (!a.ParseFromString(r.data)) continue;
    RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
      std::string title = absl::StrCat("Appointment in ", absl::FormatDuration(absl::Seconds(r.offset_seconds)));
      for (const auto& who : {a.client(), a.provider()}) {
        RETURN_IF_ERROR(Notify(tx, IdOf(who),
                               MakeNotification(v1::Notification::TYPE_APPOINTMENT_REMINDER, "clinics/" + r.clinic_id,
                                                a.client(), a.name(), title, title),
                               absl::StrCat("reminder:", r.appointment_id, ":", r.offset_seconds), now));
      }
      return store::MarkReminderSent(tx, r);
    }));
  }
  // Missed sitter check-ins: alert the care team and escalate, then wait another interval.
  for (const auto& s : missed) {
    ASSIGN_OR_RETURN(sv1::Clinic clinic, scheduling_.GetClinic(s.clinic_id));
    ASSIGN_OR_RETURN(sv1::CareTeam team, scheduling_.GetCareTeam(s.clinic_id, s.client_id));
    absl::Duration interval = FromProto(clinic.policy().sitter_checkin_interval());
    if (interval <= absl::ZeroDuration()) interval = absl::Minutes(20);
    std::string eid = api::NewId();
    RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
      ASSIGN_OR_RETURN(auto fresh, store::GetActiveSession(tx, s.clinic_id, s.appointment_id));
      if (!fresh || !fresh->next_due || *fresh->next_due > now) return absl::OkStatus();
      const std::string c = "clinics/" + s.clinic_id;
      const std::string appointment = absl::StrCat(c, "/appointments/", s.appointment_id);
      ev1::EventEnvelope ev;
      ev.set_event_id(api::NewUuid());
      *ev.mutable_occur_time() = ToProto(now);
      ev.set_clinic(c);
      ev.set_source_service("messaging");
      ev.set_aggregate(appointment);
      auto* m = ev.mutable_sitter_check_in_missed();
      m->set_appointment(appointment);
      m->set_client(Person(s.client_id));
      m->set_sitter(Person(s.sitter_id));
      if (fresh->last_check_in) *m->mutable_last_check_in_time() = ToProto(*fresh->last_check_in);
      *m->mutable_due_time() = ToProto(*fresh->next_due);
      RETURN_IF_ERROR(outbox::Enqueue(
          tx, {kEventStream, ev.event_id(), "sitter_check_in_missed", ev.SerializeAsString(), /*notify_channel=*/""},
          now));
      for (const auto& member : team.members()) {
        RETURN_IF_ERROR(Notify(tx, IdOf(member.person()),
                               MakeNotification(v1::Notification::TYPE_SITTER_CHECK_IN_MISSED, c, Person(s.client_id),
                                                appointment, "Sitter check-in missed",
                                                "The sitter of a self-guided session has not checked in.", true),
                               ev.event_id(), now));
      }
      v1::Escalation e;
      e.set_name(absl::StrCat(c, "/escalations/", eid));
      e.set_trigger(v1::Escalation::TRIGGER_SITTER_CHECK_IN_MISSED);
      e.set_client(Person(s.client_id));
      e.set_source(appointment);
      e.set_summary("Sitter check-in missed");
      e.set_state(v1::Escalation::STATE_OPEN);
      *e.mutable_create_time() = *e.mutable_update_time() = ToProto(now);
      RETURN_IF_ERROR(store::PutEscalation(tx, s.clinic_id, eid, e, now, std::nullopt));
      store::ActiveSession next = *fresh;
      next.next_due = now + interval;
      return store::PutActiveSession(tx, next);
    }));
    AdvanceEscalation(s.clinic_id, eid).IgnoreError();
  }
  RETURN_IF_ERROR(SweepUnread(now));
  if (options_.on_commit) options_.on_commit();
  return absl::OkStatus();
}

// Messages left unread past the clinic's threshold: MESSAGE_UNREAD to each recipient who has
// not read them, once per message (the dedupe key). Each clinic's messages are read in creation
// order from a cursor, up to those created `threshold` ago, so a message is looked at once, when
// it becomes due, however many messages the clinic has. (Before, every tick re-read the oldest
// 2,000 messages of the last eight days, unindexed: a whole-table scan each second that grew
// with the table, and alerts missed for any message past the first 2,000.)
//
// The cursors live in memory. A replica that starts, or first sees a clinic, begins a day
// before the clinic's due line: messages already more than a day past due get no alert, and
// the dedupe keys keep the alerts of the overlap (and of other replicas) single.
absl::Status Messenger::SweepUnread(absl::Time now) {
  constexpr int kPage = 500;
  constexpr int kPerTick = 2000;  // the rest waits for the next tick
  absl::MutexLock lock(&sweep_mu_);
  if (now - sweep_.clinics_listed >= absl::Minutes(1) || now < sweep_.clinics_listed) {
    RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
      ASSIGN_OR_RETURN(sweep_.clinics, store::ClinicsWithConversations(tx));
      return absl::OkStatus();
    }, db::TxMode::kReadOnly));
    sweep_.clinics_listed = now;
  }
  int budget = kPerTick;
  for (const std::string& clinic_id : sweep_.clinics) {
    auto clinic = scheduling_.GetClinic(clinic_id);
    if (!clinic.ok()) continue;  // its messages wait for the next tick
    absl::Duration threshold = FromProto(clinic->policy().unread_message_alert_after());
    if (threshold <= absl::ZeroDuration()) threshold = absl::Hours(4);
    const absl::Time due_line = now - threshold;
    store::MessageCursor& cursor = sweep_.cursors[clinic_id];
    const int64_t oldest = absl::ToUnixMicros(due_line - absl::Hours(24));
    if (cursor.create_micros < oldest) cursor = {oldest, "", 0};
    while (budget > 0) {
      const int limit = std::min(budget, kPage);
      std::vector<store::StoredMessage> due;
      RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
        ASSIGN_OR_RETURN(due, store::ClinicMessagesAfter(tx, clinic_id, cursor, due_line, limit));
        return absl::OkStatus();
      }, db::TxMode::kReadOnly));
      for (const auto& sm : due) {
        RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
          ASSIGN_OR_RETURN(auto conv, store::GetConversation(tx, sm.clinic_id, sm.conversation_id));
          if (!conv) return absl::OkStatus();
          for (const auto& m : conv->value.members()) {
            if (m.person() == sm.message.sender() || m.read_sequence() >= sm.message.sequence()) continue;
            RETURN_IF_ERROR(Notify(tx, IdOf(m.person()),
                                   MakeNotification(v1::Notification::TYPE_MESSAGE_UNREAD, "clinics/" + sm.clinic_id,
                                                    conv->value.client(), sm.message.name(),
                                                    "You have an unread message",
                                                    "A message to you has not been read yet.", sm.message.urgent()),
                                   absl::StrCat("unread:", sm.message.name()), now));
          }
          return absl::OkStatus();
        }));
        cursor = sm.Position();  // only past a message once its alerts are committed
        --budget;
      }
      if (static_cast<int>(due.size()) < limit) break;  // caught up with the due line
    }
  }
  return absl::OkStatus();
}

}  // namespace continuum::messaging
