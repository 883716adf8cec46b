#include "services/messaging/heartbeats.h"

#include <algorithm>

#include "common/log/log.h"
#include "common/status/errors.h"

namespace continuum::messaging {

HeartbeatBatcher::HeartbeatBatcher(Messenger& messenger, size_t max_batch, int threads, size_t max_queued)
    : messenger_(messenger), max_batch_(max_batch), threads_(std::max(1, threads)), max_queued_(max_queued) {}

HeartbeatBatcher::~HeartbeatBatcher() { Stop(); }

void HeartbeatBatcher::Start() {
  absl::MutexLock lock(&mu_);
  for (int i = 0; i < threads_; ++i) workers_.emplace_back([this] {
    NameThisThread("heartbeats");
    Loop();
  });
}

namespace {
absl::Status ShuttingDown() {
  return absl::UnavailableError("this replica is shutting down; reconnect (another replica takes the stream)");
}
}  // namespace

void HeartbeatBatcher::Submit(PresenceStore::Beat beat, Done done) {
  bool full = false;
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      full = queue_.size() >= max_queued_;
      if (!full) {
        queue_.push_back({std::move(beat), std::move(done)});
        return;
      }
    }
  }
  if (full) {
    done(MakeError(absl::StatusCode::kResourceExhausted, "OVERLOADED",
                   "too many heartbeats are waiting for Redis on this replica; retry with back-off"));
    return;
  }
  done(ShuttingDown());
}

void HeartbeatBatcher::Stop() {
  std::deque<Item> never_started;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (workers_.empty()) never_started.swap(queue_);
  }
  for (auto& t : workers_) {
    if (t.joinable()) t.join();
  }
  for (Item& item : never_started) item.done(ShuttingDown());
}

void HeartbeatBatcher::Loop() {
  while (true) {
    std::vector<Item> batch;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stopping_; };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping, and everything submitted was answered
      while (!queue_.empty() && batch.size() < max_batch_) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    std::vector<PresenceStore::Beat> beats;
    beats.reserve(batch.size());
    for (const Item& item : batch) beats.push_back(item.beat);
    std::vector<absl::StatusOr<v1::HeartbeatResponse>> results = messenger_.ApplyHeartbeats(beats);
    for (size_t i = 0; i < batch.size(); ++i) batch[i].done(std::move(results[i]));
  }
}

namespace {

using Reactor = grpc::ServerBidiReactor<v1::StreamHeartbeatsRequest, v1::StreamHeartbeatsResponse>;

class Refused final : public Reactor {
 public:
  explicit Refused(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

// One read or one write (or one heartbeat in the batcher) is outstanding at any time, so the
// callbacks below never run concurrently with each other.
class HeartbeatStream final : public Reactor {
 public:
  HeartbeatStream(auth::Principal principal, Messenger& messenger, HeartbeatBatcher& batcher)
      : principal_(std::move(principal)), messenger_(messenger), batcher_(batcher) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client closed its side (or went away)
      Finish(grpc::Status::OK);
      return;
    }
    auto beat = messenger_.CheckHeartbeat(principal_, request_.heartbeat());
    if (!beat.ok()) {
      Finish(ToGrpcStatus(beat.status()));
      return;
    }
    batcher_.Submit(std::move(*beat), [this](absl::StatusOr<v1::HeartbeatResponse> result) {
      if (!result.ok()) {
        Finish(ToGrpcStatus(result.status()));
        return;
      }
      *response_.mutable_heartbeat() = std::move(*result);
      StartWrite(&response_);
    });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the stream broke while answering a heartbeat"));
      return;
    }
    StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  const auth::Principal principal_;
  Messenger& messenger_;
  HeartbeatBatcher& batcher_;
  v1::StreamHeartbeatsRequest request_;
  v1::StreamHeartbeatsResponse response_;
};

}  // namespace

grpc::ServerUnaryReactor* AnswerHeartbeat(grpc::CallbackServerContext* context, const v1::HeartbeatRequest& request,
                                          v1::HeartbeatResponse* response, Messenger& messenger,
                                          const auth::Authenticator& authenticator, HeartbeatBatcher& batcher) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto principal = authenticator.Authenticate(*context);  // CPU only, as for the stream
  if (!principal.ok()) {
    reactor->Finish(ToGrpcStatus(principal.status()));
    return reactor;
  }
  auto beat = messenger.CheckHeartbeat(*principal, request);
  if (!beat.ok()) {
    reactor->Finish(ToGrpcStatus(beat.status()));
    return reactor;
  }
  // `response` stays valid until Finish: a unary call is not done before its reactor finishes.
  batcher.Submit(std::move(*beat), [reactor, response](absl::StatusOr<v1::HeartbeatResponse> result) {
    if (!result.ok()) {
      reactor->Finish(ToGrpcStatus(result.status()));
      return;
    }
    *response = std::move(*result);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

Reactor* OpenHeartbeatStream(grpc::CallbackServerContext* context, Messenger& messenger,
                             const auth::Authenticator& authenticator, HeartbeatBatcher& batcher) {
  // Verifying a token is CPU work only (no I/O), so it is done here on the gRPC thread.
  auto principal = authenticator.Authenticate(*context);
  if (!principal.ok()) return new Refused(ToGrpcStatus(principal.status()));
  return new HeartbeatStream(std::move(*principal), messenger, batcher);
}

}  // namespace continuum::messaging
