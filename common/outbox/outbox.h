// Transactional outbox: an event is written in the same database transaction as the change
// it describes, then relayed to a Redis stream. If Redis is down nothing is lost: the row
// stays unsent until a relay gets it through. Delivery is at-least-once (a crash between
// XADD and marking the row sent re-sends it), so consumers dedupe on `event_id`.
#pragma once

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/db/database.h"
#include "common/db/migrations.h"
#include "common/db/retention.h"
#include "common/redis/client.h"
#include "common/time/clock.h"

namespace continuum::outbox {

// Schema of the outbox table; apply with db::ApplyMigrations(db, "outbox", Migrations()).
const std::vector<db::Migration>& Migrations();

struct Event {
  std::string stream;    // e.g. "continuum:events:scheduling"; empty: only PUBLISHed (a notice)
  std::string event_id;  // unique; consumers dedupe on it
  std::string type;      // e.g. "AppointmentBooked"
  std::string payload;   // serialized continuum.events.v1.EventEnvelope (or a stream's own item)
  // If set, after the XADD the relay PUBLISHes "<entry id> <payload>" on this channel, so
  // live subscribers learn of the entry at once (used by messaging's per-person inboxes).
  // Without a stream the relay PUBLISHes "- <payload>" and keeps no copy in Redis (used by
  // scheduling's appointment-cache invalidations; the relay still guarantees the PUBLISH
  // happens once the transaction commits, even if this process dies first).
  std::string notify_channel;
};

// Which rows retention deletes: events sent and created before the cutoff. A consumer that
// reads its stream later than that still gets the event from Redis (streams are trimmed by
// length, not by the outbox).
const db::RetentionRule& RetentionRule();

// Call inside the transaction that makes the change.
absl::Status Enqueue(db::Tx& tx, const Event& event, absl::Time now);
// Several events in one statement (a message to each member of a conversation, say).
absl::Status Enqueue(db::Tx& tx, const std::vector<Event>& events, absl::Time now);

// The relay's statements that read the outbox (exposed so that a test can check their
// query plans: they must read only unsent rows, whatever the number of sent ones).
extern const char kLeaseSql[];
extern const char kLeaseSqlPostgres[];
extern const char kLeasableSql[];
// Settings of the relay's write transactions on PostgreSQL (a script of SET LOCAL statements).
extern const char kPostgresRelaySettings[];

class Relay {
 public:
  struct Options {
    std::string owner = "relay";  // unique per process (lease holder)
    int batch = 100;
    absl::Duration poll_interval = absl::Milliseconds(200);
    absl::Duration lease = absl::Seconds(30);
    int64_t stream_maxlen = 1'000'000;  // approximate trim of each stream
  };

  Relay(db::Database& db, redis::Client& redis, Clock& clock, Options options);
  ~Relay();

  // Relays one batch. Returns the number of events published; UNAVAILABLE when Redis is
  // down (the events stay in the outbox).
  absl::StatusOr<int> RelayOnce();
  // Number of events not yet relayed.
  absl::StatusOr<int64_t> Pending();

  // Background loop: relays on Notify() or every poll_interval, backing off while Redis is down.
  void Start();
  void Notify();
  void Stop();

 private:
  absl::StatusOr<int> Pass(bool look_first, bool defer_marks);

  db::Database& db_;
  redis::Client& redis_;
  Clock& clock_;
  Options options_;
  absl::Mutex mu_;
  bool notified_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
  // Events published by the last pass of the background loop whose sent marks are still to be
  // written (by the next pass). Used by the relay's thread only.
  std::vector<std::pair<int64_t, std::string>> unmarked_;
};

}  // namespace continuum::outbox
