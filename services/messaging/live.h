// Live delivery: each person has a durable inbox (Redis stream "continuum:inbox:{person}",
// written through the outbox) and a pub/sub channel ("continuum:live:{person}") that wakes
// whichever replica holds the person's Subscribe streams. A stream replays the inbox from its
// cursor, says ReplayComplete, then goes live; anything published while it replays is
// buffered and de-duplicated by stream id, so nothing is missed or doubled. Open streams hold
// no thread: one subscriber thread per replica serves all of them.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/synchronization/mutex.h"
#include "common/redis/client.h"
#include "common/redis/subscriber.h"
#include "common/server/executor.h"
#include "continuum/messaging/v1/messaging_service.pb.h"
#include "grpcpp/grpcpp.h"

namespace continuum::messaging {

namespace v1 = ::continuum::messaging::v1;

std::string InboxKey(const std::string& person_id);
std::string LiveChannel(const std::string& person_id);

class LiveHub;

// One open Subscribe call.
class SubscribeReactor final : public grpc::ServerWriteReactor<v1::Delivery> {
 public:
  SubscribeReactor(LiveHub& hub, std::string person_id, std::string cursor);
  // From the hub: an inbox entry (id, serialized Delivery) or a live-only item (empty id).
  void OnLive(const std::string& entry_id, const std::string& delivery);
  // The subscriber reconnected: catch up from the inbox by cursor.
  void CatchUp();
  // Ends the stream (shutdown, Redis loss, slow reader).
  void End(const grpc::Status& status);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  void Replay();
  void ScheduleReplay();
  void Enqueue(v1::Delivery d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WriteNext() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  LiveHub& hub_;
  const std::string person_;
  absl::Mutex mu_;
  std::string cursor_ ABSL_GUARDED_BY(mu_);  // last inbox id delivered (or queued)
  bool replaying_ ABSL_GUARDED_BY(mu_) = true;
  std::vector<std::pair<std::string, std::string>> buffered_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::Delivery> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  int pending_tasks_ ABSL_GUARDED_BY(mu_) = 0;  // executor tasks holding `this`
};

class LiveHub {
 public:
  LiveHub(redis::Options redis_options, redis::Client& redis, BoundedExecutor& executor);
  ~LiveHub();
  void Start();

  grpc::ServerWriteReactor<v1::Delivery>* Open(const std::string& person_id, const std::string& cursor);
  // A stream that ends at once with `status` (authentication failures, shutdown).
  static grpc::ServerWriteReactor<v1::Delivery>* Refuse(const grpc::Status& status);
  // Ends every open stream with UNAVAILABLE (graceful shutdown); new ones are refused.
  void Shutdown();
  size_t open_streams() const;

  redis::Client& redis() { return redis_; }
  BoundedExecutor& executor() { return executor_; }
  void Register(const std::string& person_id, SubscribeReactor* r);
  void Unregister(const std::string& person_id, SubscribeReactor* r);

 private:
  void OnMessage(const std::string& channel, const std::string& payload);
  void OnReconnect();
  void OnSubscribed(const std::string& channel);

  redis::Client& redis_;
  BoundedExecutor& executor_;
  redis::Subscriber subscriber_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::set<SubscribeReactor*>> streams_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace continuum::messaging
