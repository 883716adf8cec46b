#include "common/outbox/outbox.h"

#include "absl/strings/str_cat.h"
#include "common/redis/streams.h"
#include "common/status/macros.h"
#include "spdlog/spdlog.h"

namespace continuum::outbox {

const std::vector<db::Migration>& Migrations() {
  static const auto* const kMigrations = new std::vector<db::Migration>{
      {1, "create_outbox", R"sql(
CREATE TABLE outbox (
  id {{AUTOINCREMENT_PK}},
  stream TEXT NOT NULL,
  event_id TEXT NOT NULL UNIQUE,
  type TEXT NOT NULL,
  payload {{BLOB}} NOT NULL,
  create_time BIGINT NOT NULL,
  lease_owner TEXT,
  lease_until BIGINT,
  sent_time BIGINT,
  stream_entry_id TEXT
);
CREATE INDEX outbox_unsent ON outbox (sent_time, id);
)sql"},
      {2, "outbox_notify_channel", R"sql(
ALTER TABLE outbox ADD COLUMN notify_channel TEXT NOT NULL DEFAULT '';
)sql"},
  };
  return *kMigrations;
}

absl::Status Enqueue(db::Tx& tx, const Event& event, absl::Time now) {
  return tx
      .Exec("INSERT INTO outbox (stream, event_id, type, payload, create_time, notify_channel)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            {event.stream, event.event_id, event.type, db::Blob{event.payload}, db::Micros(now), event.notify_channel})
      .status();
}

Relay::Relay(db::Database& db, redis::Client& redis, Clock& clock, Options options)
    : db_(db), redis_(redis), clock_(clock), options_(std::move(options)) {}

Relay::~Relay() { Stop(); }

absl::StatusOr<int64_t> Relay::Pending() {
  ASSIGN_OR_RETURN(db::Rows rows, db_.Query("SELECT COUNT(*) FROM outbox WHERE sent_time IS NULL"));
  return rows.at(0).Int(0);
}

absl::StatusOr<int> Relay::RelayOnce() {
  absl::Time now = clock_.Now();
  // Lease a batch so that several replicas relaying at once do not publish the same rows.
  RETURN_IF_ERROR(db_.Exec(
                         "UPDATE outbox SET lease_owner = $1, lease_until = $2 WHERE id IN ("
                         " SELECT id FROM outbox WHERE sent_time IS NULL"
                         " AND (lease_until IS NULL OR lease_until < $3) ORDER BY id LIMIT $4)",
                         {options_.owner, db::Micros(now + options_.lease), db::Micros(now),
                          static_cast<int64_t>(options_.batch)})
                      .status());
  ASSIGN_OR_RETURN(db::Rows rows,
                   db_.Query("SELECT id, stream, event_id, type, payload, notify_channel FROM outbox"
                             " WHERE lease_owner = $1 AND sent_time IS NULL ORDER BY id",
                             {options_.owner}));
  int sent = 0;
  for (const db::Row& row : rows) {
    auto entry_id = redis::XAdd(redis_, row.Text(1),
                                {{"event_id", row.Text(2)}, {"type", row.Text(3)}, {"payload", row.Bytes(4)}},
                                options_.stream_maxlen);
    if (!entry_id.ok()) {
      // Give the rest back at once rather than waiting for the lease to expire.
      db_.Exec("UPDATE outbox SET lease_owner = NULL, lease_until = NULL"
               " WHERE lease_owner = $1 AND sent_time IS NULL",
               {options_.owner})
          .IgnoreError();
      return entry_id.status();
    }
    if (!row.Text(5).empty()) {
      // Wake live subscribers: "<stream entry id> <payload>". Losing this publish is fine: a
      // subscriber catches up from the stream (the durable copy) by its cursor.
      redis_.Command({"PUBLISH", row.Text(5), absl::StrCat(*entry_id, " ", row.Bytes(4))}).IgnoreError();
    }
    RETURN_IF_ERROR(db_.Exec("UPDATE outbox SET sent_time = $1, stream_entry_id = $2 WHERE id = $3",
                             {db::Micros(clock_.Now()), *entry_id, row.Int(0)})
                        .status());
    ++sent;
  }
  return sent;
}

void Relay::Start() {
  thread_ = std::thread([this] {
    absl::Duration backoff = options_.poll_interval;
    while (true) {
      auto result = RelayOnce();
      absl::Duration wait = options_.poll_interval;
      if (!result.ok()) {
        spdlog::warn("outbox relay: {} (events kept, retry in {})", result.status().ToString(),
                     absl::FormatDuration(backoff));
        wait = backoff;
        backoff = std::min(backoff * 2, absl::Seconds(5));
      } else {
        backoff = options_.poll_interval;
        if (*result == options_.batch) wait = absl::ZeroDuration();  // more to send
      }
      absl::MutexLock lock(&mu_);
      auto woken = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return notified_ || stop_; };
      mu_.AwaitWithTimeout(absl::Condition(&woken), wait);
      if (stop_) return;
      notified_ = false;
    }
  });
}

void Relay::Notify() {
  absl::MutexLock lock(&mu_);
  notified_ = true;
}

void Relay::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

}  // namespace continuum::outbox
