// Redis Streams: XADD, consumer groups, and a consumer that reclaims a dead consumer's
// pending entries (XAUTOCLAIM). Delivery is at-least-once: handlers must be idempotent
// (dedupe on the event id carried in the entry).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/redis/client.h"

namespace continuum::redis {

struct StreamEntry {
  std::string id;
  std::vector<std::pair<std::string, std::string>> fields;
  // The value of field `name`, or "" when absent.
  std::string Get(const std::string& name) const;
};

// XADD stream [MAXLEN ~ maxlen] * field value ...; returns the entry id.
absl::StatusOr<std::string> XAdd(Client& client, const std::string& stream,
                                 const std::vector<std::pair<std::string, std::string>>& fields,
                                 int64_t approx_maxlen = 0);

// XGROUP CREATE stream group start MKSTREAM; an existing group is fine.
absl::Status EnsureGroup(Client& client, const std::string& stream, const std::string& group,
                         const std::string& start_id = "0");

// Parses a list of [id, [field, value, ...]] entries.
std::vector<StreamEntry> ParseEntries(const Reply& reply);

class StreamConsumer {
 public:
  struct Options {
    std::string stream;
    std::string group;
    std::string consumer;  // unique per process, e.g. "<hostname>-<pid>"
    int count = 64;
    absl::Duration block = absl::Milliseconds(500);
    // Entries pending longer than this on any consumer (a dead one) are claimed by this one.
    absl::Duration claim_min_idle = absl::Seconds(30);
  };
  // Returning OK acknowledges the entry (XACK); an error leaves it pending for a retry.
  using Handler = std::function<absl::Status(const StreamEntry&)>;

  StreamConsumer(redis::Options redis_options, Options options, Handler handler);
  ~StreamConsumer();

  // One round: reclaim idle pending entries, read new ones (blocking up to `block`), handle
  // and acknowledge. Returns how many entries were handled successfully.
  absl::StatusOr<int> PollOnce();

  // Runs PollOnce in a background thread until Stop(), backing off while Redis is down.
  void Start();
  void Stop();

 private:
  absl::Status EnsureConnection();
  absl::StatusOr<int> HandleAll(const std::vector<StreamEntry>& entries);

  redis::Options redis_options_;
  Options options_;
  Handler handler_;
  std::unique_ptr<Connection> conn_;
  bool group_ready_ = false;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace continuum::redis
