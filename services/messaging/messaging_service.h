// gRPC adapter of the messaging service: authenticates, runs the Messenger on the executor
// (unary calls) or opens a live stream (Subscribe), and maps statuses. No business rules.
#pragma once

#include <vector>

#include "common/auth/grpc_auth.h"
#include "common/db/migrations.h"
#include "common/server/executor.h"
#include "common/server/handler.h"
#include "continuum/messaging/v1/messaging_service.grpc.pb.h"
#include "services/messaging/heartbeats.h"
#include "services/messaging/live.h"
#include "services/messaging/messenger.h"

namespace continuum::messaging {

// Schema migrations (generated from migrations/*.sql).
const std::vector<db::Migration>& Migrations();

inline constexpr char kHealthName[] = "continuum.messaging.v1.MessagingService";

// A cursor is a Redis stream entry id, "<milliseconds>-<sequence>", as handed out in
// Delivery.cursor; empty means "from the oldest kept".
inline bool ValidCursor(const std::string& c) {
  if (c.empty()) return true;
  size_t dash = c.find('-');
  if (dash == std::string::npos || dash == 0 || dash + 1 == c.size() || c.size() > 41) return false;
  for (size_t i = 0; i < c.size(); ++i) {
    if (i != dash && (c[i] < '0' || c[i] > '9')) return false;
  }
  return true;
}

class MessagingServiceImpl final : public v1::MessagingService::CallbackService {
 public:
  MessagingServiceImpl(Messenger& messenger, LiveHub& hub, HeartbeatBatcher& heartbeats,
                       const auth::Authenticator& authenticator, BoundedExecutor& executor)
      : domain_(messenger), hub_(hub), heartbeats_(heartbeats), authenticator_(authenticator), executor_(executor) {}

  CONTINUUM_UNARY(GetConversation, v1::GetConversationRequest, v1::Conversation)
  CONTINUUM_UNARY(ListConversations, v1::ListConversationsRequest, v1::ListConversationsResponse)
  CONTINUUM_UNARY(SendMessage, v1::SendMessageRequest, v1::Message)
  CONTINUUM_UNARY(ListMessages, v1::ListMessagesRequest, v1::ListMessagesResponse)
  CONTINUUM_UNARY(MarkRead, v1::MarkReadRequest, v1::ReadReceipt)
  CONTINUUM_UNARY(GetUnreadCounts, v1::GetUnreadCountsRequest, v1::UnreadCounts)
  CONTINUUM_UNARY(GetPresence, v1::GetPresenceRequest, v1::Presence)
  CONTINUUM_UNARY(BatchGetPresence, v1::BatchGetPresenceRequest, v1::BatchGetPresenceResponse)
  CONTINUUM_UNARY(GetCareTeamPresence, v1::GetCareTeamPresenceRequest, v1::GetCareTeamPresenceResponse)
  CONTINUUM_UNARY(SitterCheckIn, v1::SitterCheckInRequest, v1::SitterCheckInResponse)
  CONTINUUM_UNARY(ListNotifications, v1::ListNotificationsRequest, v1::ListNotificationsResponse)
  CONTINUUM_UNARY(AcknowledgeNotification, v1::AcknowledgeNotificationRequest, v1::Notification)
  CONTINUUM_UNARY(ListEscalations, v1::ListEscalationsRequest, v1::ListEscalationsResponse)
  CONTINUUM_UNARY(AcknowledgeEscalation, v1::AcknowledgeEscalationRequest, v1::Escalation)

  grpc::ServerWriteReactor<v1::Delivery>* Subscribe(grpc::CallbackServerContext* context,
                                                    const v1::SubscribeRequest* request) override {
    // Verifying a token is CPU work only (no I/O), so it is done here on the gRPC thread.
    auto principal = authenticator_.Authenticate(*context);
    if (!principal.ok()) return LiveHub::Refuse(ToGrpcStatus(principal.status()));
    auto person = domain_.SubscriberOf(*principal);
    if (!person.ok()) return LiveHub::Refuse(ToGrpcStatus(person.status()));
    if (!ValidCursor(request->cursor())) {
      return LiveHub::Refuse(ToGrpcStatus(
          InvalidField("cursor", "not a cursor this server gave out: pass a Delivery.cursor unchanged, or empty")));
    }
    return hub_.Open(*person, request->cursor());
  }

  // Heartbeats (unary and streamed) go through the batcher, not the executor: see heartbeats.h.
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context, const v1::HeartbeatRequest* request,
                                      v1::HeartbeatResponse* response) override {
    return AnswerHeartbeat(context, *request, response, domain_, authenticator_, heartbeats_);
  }

  grpc::ServerBidiReactor<v1::StreamHeartbeatsRequest, v1::StreamHeartbeatsResponse>* StreamHeartbeats(
      grpc::CallbackServerContext* context) override {
    return OpenHeartbeatStream(context, domain_, authenticator_, heartbeats_);
  }

 private:
  Messenger& domain_;
  LiveHub& hub_;
  HeartbeatBatcher& heartbeats_;
  const auth::Authenticator& authenticator_;
  BoundedExecutor& executor_;
};

}  // namespace continuum::messaging
