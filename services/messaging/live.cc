#include "services/messaging/live.h"

#include "absl/strings/str_cat.h"
#include "common/redis/streams.h"
#include "spdlog/spdlog.h"

namespace continuum::messaging {
namespace {

constexpr size_t kMaxQueued = 10000;  // a reader this far behind is cut off (it reconnects by cursor)
constexpr char kLivePrefix[] = "continuum:live:";

// Stream ids "ms-seq" compare numerically.
bool After(const std::string& a, const std::string& b) {
  if (b.empty()) return true;
  auto split = [](const std::string& id) {
    auto dash = id.find('-');
    return std::make_pair(std::stoull(id.substr(0, dash)), dash == std::string::npos ? 0ULL : std::stoull(id.substr(dash + 1)));
  };
  return split(a) > split(b);
}

}  // namespace

std::string InboxKey(const std::string& person) { return "continuum:inbox:" + person; }
std::string LiveChannel(const std::string& person) { return kLivePrefix + person; }

SubscribeReactor::SubscribeReactor(LiveHub& hub, std::string person, std::string cursor)
    : hub_(hub), person_(std::move(person)), cursor_(std::move(cursor)) {
  hub_.Register(person_, this);  // before replaying, so nothing published meanwhile is missed
  ScheduleReplay();
}

void SubscribeReactor::ScheduleReplay() {
  absl::MutexLock lock(&mu_);
  if (finished_) return;
  ++pending_tasks_;
  bool queued = hub_.executor().Submit([this] {
    Replay();
    absl::MutexLock done(&mu_);
    --pending_tasks_;
  });
  if (!queued) {
    --pending_tasks_;
    finished_ = true;
    Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "server overloaded; retry with your cursor"));
  }
}

void SubscribeReactor::Replay() {
  std::string from;
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    from = cursor_;
  }
  // Everything after the cursor, in pages.
  while (true) {
    auto r = hub_.redis().Command({"XRANGE", InboxKey(person_), from.empty() ? "-" : "(" + from, "+", "COUNT", "500"});
    if (!r.ok()) {
      End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "live delivery needs Redis, which is unreachable; retry with your cursor"));
      return;
    }
    auto entries = redis::ParseEntries(*r);
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    for (const auto& e : entries) {
      // A catch-up replay (CatchUp: the live subscription became active, or Redis came back)
      // runs while live delivery goes on: what arrived live after this page's XRANGE began
      // has moved the cursor past entries of the page. Sending those again was a duplicate on
      // the stream (and a cursor that then skipped back; seen once in CI).
      if (!After(e.id, cursor_)) continue;
      v1::Delivery d;
      if (!d.ParseFromString(e.Get("payload"))) continue;
      d.set_cursor(e.id);
      cursor_ = e.id;
      Enqueue(std::move(d));
    }
    from = cursor_;
    if (entries.size() < 500) break;
  }
  absl::MutexLock lock(&mu_);
  if (finished_) return;
  if (replaying_) {
    replaying_ = false;
    v1::Delivery done;
    done.set_cursor(cursor_);
    done.mutable_replay_complete();
    Enqueue(std::move(done));
  }
  for (auto& [id, bytes] : buffered_) {
    if (!id.empty() && !After(id, cursor_)) continue;  // already replayed
    v1::Delivery d;
    if (!d.ParseFromString(bytes)) continue;
    if (!id.empty()) cursor_ = id;
    d.set_cursor(cursor_);
    Enqueue(std::move(d));
  }
  buffered_.clear();
}

void SubscribeReactor::CatchUp() { ScheduleReplay(); }

void SubscribeReactor::OnLive(const std::string& id, const std::string& bytes) {
  absl::MutexLock lock(&mu_);
  if (finished_) return;
  if (replaying_) {
    buffered_.emplace_back(id, bytes);
    return;
  }
  if (!id.empty() && !After(id, cursor_)) return;  // a duplicate of what was replayed
  v1::Delivery d;
  if (!d.ParseFromString(bytes)) return;
  if (!id.empty()) cursor_ = id;
  d.set_cursor(cursor_);
  Enqueue(std::move(d));
}

void SubscribeReactor::Enqueue(v1::Delivery d) {
  if (queue_.size() >= kMaxQueued) {
    finished_ = true;
    Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "reader too slow; reconnect with your last cursor"));
    return;
  }
  queue_.push_back(std::move(d));
  if (!writing_) WriteNext();
}

void SubscribeReactor::WriteNext() {
  if (queue_.empty() || finished_) return;
  writing_ = true;
  StartWrite(&queue_.front());
}

void SubscribeReactor::OnWriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  writing_ = false;
  if (!ok) {
    if (!finished_) {
      finished_ = true;
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed"));
    }
    return;
  }
  queue_.pop_front();
  WriteNext();
}

void SubscribeReactor::End(const grpc::Status& status) {
  absl::MutexLock lock(&mu_);
  if (finished_) return;
  finished_ = true;
  Finish(status);
}

void SubscribeReactor::OnCancel() { End(grpc::Status::CANCELLED); }

void SubscribeReactor::OnDone() {
  hub_.Unregister(person_, this);
  {
    // Replay tasks still queued or running hold `this`; they see finished_ and return.
    absl::MutexLock lock(&mu_);
    finished_ = true;
    auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return pending_tasks_ == 0; };
    mu_.Await(absl::Condition(&idle));
  }
  delete this;
}

LiveHub::LiveHub(redis::Options redis_options, redis::Client& redis, BoundedExecutor& executor)
    : redis_(redis), executor_(executor),
      subscriber_(std::move(redis_options), [this](const std::string& c, const std::string& p) { OnMessage(c, p); },
                  [this] { OnReconnect(); }, [this](const std::string& c) { OnSubscribed(c); }) {}

LiveHub::~LiveHub() { subscriber_.Stop(); }

void LiveHub::Start() { subscriber_.Start(); }

grpc::ServerWriteReactor<v1::Delivery>* LiveHub::Refuse(const grpc::Status& status) {
  struct Refused : grpc::ServerWriteReactor<v1::Delivery> {
    explicit Refused(const grpc::Status& s) { Finish(s); }
    void OnDone() override { delete this; }
  };
  return new Refused(status);
}

grpc::ServerWriteReactor<v1::Delivery>* LiveHub::Open(const std::string& person, const std::string& cursor) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return Refuse(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server shutting down; reconnect"));
  }
  return new SubscribeReactor(*this, person, cursor);
}

void LiveHub::Register(const std::string& person, SubscribeReactor* r) {
  absl::MutexLock lock(&mu_);
  auto& set = streams_[person];
  if (set.empty()) subscriber_.Subscribe(LiveChannel(person));
  set.insert(r);
}

void LiveHub::Unregister(const std::string& person, SubscribeReactor* r) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(person);
  if (it == streams_.end()) return;
  it->second.erase(r);
  if (it->second.empty()) {
    streams_.erase(it);
    subscriber_.Unsubscribe(LiveChannel(person));
  }
}

size_t LiveHub::open_streams() const {
  absl::MutexLock lock(&mu_);
  size_t n = 0;
  for (const auto& [p, set] : streams_) n += set.size();
  return n;
}

void LiveHub::OnMessage(const std::string& channel, const std::string& payload) {
  if (channel.rfind(kLivePrefix, 0) != 0) return;
  std::string person = channel.substr(sizeof(kLivePrefix) - 1);
  // "<inbox entry id> <Delivery>" from the outbox relay, or "- <Delivery>" for live-only items.
  auto space = payload.find(' ');
  if (space == std::string::npos) return;
  std::string id = payload.substr(0, space);
  if (id == "-") id.clear();
  std::string bytes = payload.substr(space + 1);
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(person);
  if (it == streams_.end()) return;
  for (auto* r : it->second) r->OnLive(id, bytes);
}

void LiveHub::OnReconnect() {
  absl::MutexLock lock(&mu_);
  for (auto& [person, set] : streams_) {
    for (auto* r : set) r->CatchUp();
  }
}

// Publishes reach this replica only once Redis has confirmed the subscription; whatever was
// added to the inbox before that is picked up by reading it again now.
void LiveHub::OnSubscribed(const std::string& channel) {
  if (channel.rfind(kLivePrefix, 0) != 0) return;
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(channel.substr(sizeof(kLivePrefix) - 1));
  if (it == streams_.end()) return;
  for (auto* r : it->second) r->CatchUp();
}

void LiveHub::Shutdown() {
  // Under the hub lock: a reactor cannot unregister (and be deleted) meanwhile.
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
  for (auto& [person, set] : streams_) {
    for (auto* r : set) r->End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server shutting down; reconnect with your cursor"));
  }
}

}  // namespace continuum::messaging
