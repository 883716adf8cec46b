// Redis pub/sub on one dedicated connection and one thread, however many channels.
// Reconnects with back-off and re-subscribes; `on_reconnect` runs after every re-subscription
// so the owner can replay from durable storage whatever was published while it was away
// (pub/sub itself keeps nothing).
#pragma once

#include <atomic>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/redis/client.h"

namespace continuum::redis {

class Subscriber {
 public:
  using MessageFn = std::function<void(const std::string& channel, const std::string& payload)>;

  // `on_subscribed(channel)` runs when Redis confirms a subscription: only from then on are
  // publishes to it received, so an owner that replays from durable storage re-reads then.
  // `on_disconnect` runs as soon as a connection is found broken: publishes are being missed
  // from then until the next `on_subscribed` (an owner that caches what they would
  // invalidate stops trusting its cache).
  Subscriber(Options options, MessageFn on_message, std::function<void()> on_reconnect = nullptr,
             std::function<void(const std::string&)> on_subscribed = nullptr,
             std::function<void()> on_disconnect = nullptr);
  ~Subscriber();

  void Subscribe(const std::string& channel);
  void Unsubscribe(const std::string& channel);
  void Start();
  void Stop();
  bool connected() const { return connected_.load(); }

 private:
  void Run();

  Options options_;
  MessageFn on_message_;
  std::function<void()> on_reconnect_;
  std::function<void(const std::string&)> on_subscribed_;
  std::function<void()> on_disconnect_;
  absl::Mutex mu_;
  std::set<std::string> channels_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<std::string>> pending_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> stop_{false};
  std::atomic<bool> connected_{false};
  std::thread thread_;
};

}  // namespace continuum::redis
