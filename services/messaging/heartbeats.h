// StreamHeartbeats: heartbeats as messages on a long-lived stream, applied in batches.
//
// A unary Heartbeat is a whole call plus a Redis round trip held on an executor thread; with
// many clients heartbeating, both dominate (docs/perf: heartbeats at 0.14x of a bare ZADD).
// On a stream a heartbeat is one message, and the batcher applies every heartbeat that
// arrived while the previous batch was in Redis in one script call, so the round trip and
// the script's per-call cost in Redis are shared by all streams of the replica.
#pragma once

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/auth/grpc_auth.h"
#include "continuum/messaging/v1/messaging_service.grpc.pb.h"
#include "services/messaging/messenger.h"

namespace continuum::messaging {

class HeartbeatBatcher {
 public:
  using Done = std::function<void(absl::StatusOr<v1::HeartbeatResponse>)>;

  // `threads` batches can be in Redis at once (each on its own pooled connection). At most
  // `max_queued` heartbeats wait; beyond that they are refused (RESOURCE_EXHAUSTED, OVERLOADED),
  // as the executor refuses calls beyond its queue.
  explicit HeartbeatBatcher(Messenger& messenger, size_t max_batch = 256, int threads = 2, size_t max_queued = 10000);
  ~HeartbeatBatcher();  // Stop()

  void Start();
  // `done` runs once, on the batcher's thread (or at once: UNAVAILABLE after Stop,
  // RESOURCE_EXHAUSTED when `max_queued` wait already). Heartbeats submitted before Start wait
  // for it.
  void Submit(PresenceStore::Beat beat, Done done);
  // Applies what was submitted (answers it UNAVAILABLE if never started), then answers later
  // submissions UNAVAILABLE at once.
  void Stop();

 private:
  struct Item {
    PresenceStore::Beat beat;
    Done done;
  };
  void Loop();

  Messenger& messenger_;
  const size_t max_batch_;
  const int threads_;
  const size_t max_queued_;
  absl::Mutex mu_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

// A unary Heartbeat through the same batcher: authenticates and checks the request on the
// gRPC thread (CPU only), then the batcher applies it with whatever else is queued and
// finishes the call from its thread. Before, each call held an executor thread for its own
// Redis round trip and script call (docs/perf: 11k heartbeats/s against 27k on streams).
grpc::ServerUnaryReactor* AnswerHeartbeat(grpc::CallbackServerContext* context, const v1::HeartbeatRequest& request,
                                          v1::HeartbeatResponse* response, Messenger& messenger,
                                          const auth::Authenticator& authenticator, HeartbeatBatcher& batcher);

// The reactor of one StreamHeartbeats call: authenticates once when the stream opens, then
// reads a heartbeat, checks it, has it applied, writes its answer, and reads the next.
grpc::ServerBidiReactor<v1::StreamHeartbeatsRequest, v1::StreamHeartbeatsResponse>* OpenHeartbeatStream(
    grpc::CallbackServerContext* context, Messenger& messenger, const auth::Authenticator& authenticator,
    HeartbeatBatcher& batcher);

}  // namespace continuum::messaging
