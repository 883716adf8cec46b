// The messaging domain: conversations kept in line with care teams, durable ordered
// messages with read receipts, per-person inboxes for live delivery (through the outbox, so a
// Redis outage loses nothing), presence, notifications from the other services' events,
// reminders, sitter check-ins and escalation to a clinician who is there.
#pragma once

#include <map>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/auth/principal.h"
#include "common/db/database.h"
#include "common/redis/client.h"
#include "common/time/clock.h"
#include "continuum/events/v1/events.pb.h"
#include "continuum/messaging/v1/messaging_service.pb.h"
#include "services/messaging/presence.h"
#include "services/messaging/store/messaging_store.h"
#include "services/scheduling/client/scheduling_client.h"

namespace continuum::messaging {

class Messenger {
 public:
  struct Options {
    std::function<void()> on_commit;  // wake the outbox relay
  };
  Messenger(db::Database& db, Clock& clock, scheduling::SchedulingClient& scheduling, PresenceStore& presence,
            redis::Client& redis, Options options = {});

  using P = auth::Principal;
  absl::StatusOr<v1::Conversation> GetConversation(const P& p, const v1::GetConversationRequest& r);
  absl::StatusOr<v1::ListConversationsResponse> ListConversations(const P& p, const v1::ListConversationsRequest& r);
  absl::StatusOr<v1::Message> SendMessage(const P& p, const v1::SendMessageRequest& r);
  absl::StatusOr<v1::ListMessagesResponse> ListMessages(const P& p, const v1::ListMessagesRequest& r);
  absl::StatusOr<v1::ReadReceipt> MarkRead(const P& p, const v1::MarkReadRequest& r);
  absl::StatusOr<v1::UnreadCounts> GetUnreadCounts(const P& p, const v1::GetUnreadCountsRequest& r);
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const P& p, const v1::HeartbeatRequest& r);
  // Heartbeat in two steps, for StreamHeartbeats: the checks of one request (CPU only), then
  // checked heartbeats of any callers applied together in one Redis round trip (one result
  // each, in order).
  absl::StatusOr<PresenceStore::Beat> CheckHeartbeat(const P& p, const v1::HeartbeatRequest& r);
  std::vector<absl::StatusOr<v1::HeartbeatResponse>> ApplyHeartbeats(const std::vector<PresenceStore::Beat>& beats);
  absl::StatusOr<v1::Presence> GetPresence(const P& p, const v1::GetPresenceRequest& r);
  absl::StatusOr<v1::BatchGetPresenceResponse> BatchGetPresence(const P& p, const v1::BatchGetPresenceRequest& r);
  absl::StatusOr<v1::GetCareTeamPresenceResponse> GetCareTeamPresence(const P& p,
                                                                      const v1::GetCareTeamPresenceRequest& r);
  absl::StatusOr<v1::SitterCheckInResponse> SitterCheckIn(const P& p, const v1::SitterCheckInRequest& r);
  absl::StatusOr<v1::ListNotificationsResponse> ListNotifications(const P& p, const v1::ListNotificationsRequest& r);
  absl::StatusOr<v1::Notification> AcknowledgeNotification(const P& p, const v1::AcknowledgeNotificationRequest& r);
  absl::StatusOr<v1::ListEscalationsResponse> ListEscalations(const P& p, const v1::ListEscalationsRequest& r);
  absl::StatusOr<v1::Escalation> AcknowledgeEscalation(const P& p, const v1::AcknowledgeEscalationRequest& r);

  // The person a Subscribe call streams for (the caller; any authenticated person).
  absl::StatusOr<std::string> SubscriberOf(const P& p);

  // One bus event (at-least-once; handled once by event id).
  absl::Status HandleEvent(const events::v1::EventEnvelope& event);
  // Housekeeping, run every second or so on every replica: presence sweep, escalation steps,
  // reminders and missed sitter check-ins.
  absl::Status Tick();

 private:
  struct Ctx;
  absl::Status EnsureConversations(const std::string& clinic_id, const std::string& client_id,
                                   const scheduling::v1::CareTeam* team);
  absl::StatusOr<store::Stored<v1::Conversation>> LoadConversation(const P& p, const std::string& name,
                                                                   std::vector<std::string>* ids);
  absl::Status AdvanceEscalation(const std::string& clinic_id, const std::string& escalation_id);
  // Whether `p` may see (and acknowledge) `e`; `teams` remembers care-team answers per client
  // within one call.
  absl::StatusOr<bool> MaySeeEscalation(const P& p, const std::string& clinic_id, const v1::Escalation& e,
                                        std::map<std::string, bool>& teams);
  absl::Status PublishPresence(const PresenceUpdate& u);
  absl::Status SweepUnread(absl::Time now);
  v1::HeartbeatResponse Heartbeated(const PresenceUpdate& u, absl::Duration ttl);

  db::Database& db_;
  Clock& clock_;
  scheduling::SchedulingClient& scheduling_;
  PresenceStore& presence_;
  redis::Client& redis_;
  Options options_;

  // The unread-message sweep (SweepUnread): where it is in each clinic's messages, and the
  // clinics, listed again every minute.
  struct UnreadSweep {
    std::map<std::string, store::MessageCursor> cursors;
    std::vector<std::string> clinics;
    absl::Time clinics_listed = absl::InfinitePast();
  };
  absl::Mutex sweep_mu_;
  UnreadSweep sweep_ ABSL_GUARDED_BY(sweep_mu_);
};

}  // namespace continuum::messaging
