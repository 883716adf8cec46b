#include "common/redis/subscriber.h"

#include "common/log/log.h"
#include "spdlog/spdlog.h"

namespace continuum::redis {

Subscriber::Subscriber(Options options, MessageFn on_message, std::function<void()> on_reconnect,
                       std::function<void(const std::string&)> on_subscribed,
                       std::function<void()> on_disconnect)
    : options_(std::move(options)), on_message_(std::move(on_message)),
      on_reconnect_(std::move(on_reconnect)), on_subscribed_(std::move(on_subscribed)),
      on_disconnect_(std::move(on_disconnect)) {}

Subscriber::~Subscriber() { Stop(); }

void Subscriber::Subscribe(const std::string& channel) {
  absl::MutexLock lock(&mu_);
  if (channels_.insert(channel).second) pending_.push_back({"SUBSCRIBE", channel});
}

void Subscriber::Unsubscribe(const std::string& channel) {
  absl::MutexLock lock(&mu_);
  if (channels_.erase(channel)) pending_.push_back({"UNSUBSCRIBE", channel});
}

void Subscriber::Start() { thread_ = std::thread([this] {
    NameThisThread("redis-subscribe");
    Run();
  }); }

void Subscriber::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

void Subscriber::Run() {
  absl::Duration backoff = options_.min_backoff;
  std::unique_ptr<Connection> conn;
  while (!stop_.load()) {
    if (!conn || conn->broken()) {
      connected_.store(false);
      if (conn && on_disconnect_) on_disconnect_();
      conn.reset();
      auto c = Connection::Connect(options_);
      if (!c.ok()) {
        absl::Time until = absl::Now() + backoff;
        while (!stop_.load() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(20));
        backoff = std::min(backoff * 2, options_.max_backoff);
        continue;
      }
      conn = std::move(*c);
      std::vector<std::string> all;
      {
        absl::MutexLock lock(&mu_);
        pending_.clear();
        all.assign(channels_.begin(), channels_.end());
      }
      // A subscriber connection needs at least one channel to stay in pub/sub mode; an
      // internal one keeps the loop uniform when the owner has none yet.
      all.push_back("continuum:subscriber:keepalive");
      std::vector<std::string> cmd = {"SUBSCRIBE"};
      cmd.insert(cmd.end(), all.begin(), all.end());
      if (!conn->Send(cmd).ok()) continue;
      backoff = options_.min_backoff;
      connected_.store(true);
      if (on_reconnect_) on_reconnect_();
    }
    std::vector<std::vector<std::string>> commands;
    {
      absl::MutexLock lock(&mu_);
      commands.swap(pending_);
    }
    for (const auto& cmd : commands) {
      if (!conn->Send(cmd).ok()) break;
    }
    bool got = false;
    // A short wait keeps new subscriptions prompt; the thread is idle in poll() meanwhile.
    auto reply = conn->Receive(absl::Milliseconds(20), &got);
    if (!reply.ok() || !got) continue;
    const auto& e = reply->elements;
    if (e.size() == 3 && e[0].str == "message") {
      on_message_(e[1].str, e[2].str);
    } else if (e.size() == 3 && e[0].str == "subscribe" && on_subscribed_) {
      on_subscribed_(e[1].str);
    }
  }
  connected_.store(false);
  if (conn && on_disconnect_) on_disconnect_();
}

}  // namespace continuum::redis
