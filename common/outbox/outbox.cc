#include "common/outbox/outbox.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/log/log.h"
#include "common/redis/streams.h"
#include "common/status/errors.h"
#include "common/status/macros.h"
#include "spdlog/spdlog.h"

namespace continuum::outbox {
namespace {

// XADD the event to its stream (approximately trimmed) and, when it has a notify channel,
// PUBLISH "<entry id> <payload>" to wake live subscribers (losing that publish is fine: a
// subscriber catches up from the stream, the durable copy, by its cursor). An event without
// a stream is only PUBLISHed, as "- <payload>" (a notice such as a cache invalidation, whose
// subscribers cope with missing it).
//   KEYS[1] stream or ''; ARGV: maxlen (0 = none), event_id, type, payload, notify channel
constexpr char kRelayScript[] = R"lua(
local id = '-'
if KEYS[1] == '' then
elseif ARGV[1] ~= '0' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event_id', ARGV[2], 'type', ARGV[3], 'payload', ARGV[4])
else
  id = redis.call('XADD', KEYS[1], '*', 'event_id', ARGV[2], 'type', ARGV[3], 'payload', ARGV[4])
end
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], id .. ' ' .. ARGV[4]) end
return id
)lua";

const std::string& RelayScriptSha() {
  static const std::string* sha = new std::string(redis::ScriptSha(kRelayScript));
  return *sha;
}

}  // namespace

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
      // The relay's queries look only at unsent rows. With the index on (sent_time, id) both
      // SQLite and the relay's ORDER BY id chose a scan of the whole table, sent rows included,
      // on every pass: write throughput fell as the outbox grew (docs/perf, record writes).
      // A partial index holds just the unsent rows, so each pass reads about a batch.
      {3, "outbox_pending_index", R"sql(
DROP INDEX outbox_unsent;
CREATE INDEX outbox_pending ON outbox (id) WHERE sent_time IS NULL;
)sql"},
      // Retention (see RetentionRule) finds the oldest rows by creation time.
      {4, "outbox_created_index", R"sql(
CREATE INDEX outbox_created ON outbox (create_time);
)sql"},
  };
  return *kMigrations;
}

const db::RetentionRule& RetentionRule() {
  // Sent rows only: an unsent event is kept however old it is, until a relay gets it through.
  static const auto* const kRule = new db::RetentionRule{
      "outbox",
      "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE create_time < $1 AND sent_time IS NOT NULL"
      " ORDER BY create_time LIMIT $2)"};
  return *kRule;
}

absl::Status Enqueue(db::Tx& tx, const std::vector<Event>& events, absl::Time now) {
  if (events.empty()) return absl::OkStatus();
  db::Params params = {db::Micros(now)};
  std::string values;
  for (const Event& e : events) {
    if (e.stream.empty() && e.notify_channel.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("outbox event ", e.event_id, " has neither stream nor channel"));
    }
    const size_t n = params.size();
    absl::StrAppend(&values, values.empty() ? "" : ", ", "($", n + 1, ", $", n + 2, ", $", n + 3, ", $", n + 4,
                    ", $1, $", n + 5, ")");
    params.insert(params.end(), {e.stream, e.event_id, e.type, db::Blob{e.payload}, e.notify_channel});
  }
  // Deferred: on PostgreSQL the events go out with the transaction's commit (a duplicate
  // event_id then fails the commit instead of this call).
  return tx.ExecDeferred(
      absl::StrCat("INSERT INTO outbox (stream, event_id, type, payload, create_time, notify_channel) VALUES ", values),
      params);
}

absl::Status Enqueue(db::Tx& tx, const Event& event, absl::Time now) {
  return Enqueue(tx, std::vector<Event>{event}, now);
}

Relay::Relay(db::Database& db, redis::Client& redis, Clock& clock, Options options)
    : db_(db), redis_(redis), clock_(clock), options_(std::move(options)) {}

Relay::~Relay() { Stop(); }

absl::StatusOr<int64_t> Relay::Pending() {
  int64_t n = 0;
  RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    ASSIGN_OR_RETURN(db::Rows rows, tx.Query("SELECT COUNT(*) FROM outbox WHERE sent_time IS NULL"));
    n = rows.at(0).Int(0);
    return absl::OkStatus();
  }, db::TxMode::kReadOnly));
  return n;
}

// A row leased by this relay and still unsent (a pass that failed and could not give it back)
// is leasable again by the same owner at once, rather than when its lease runs out.
const char kLeaseSql[] =
    "UPDATE outbox SET lease_owner = $1, lease_until = $2 WHERE id IN ("
    " SELECT id FROM outbox WHERE sent_time IS NULL"
    " AND (lease_until IS NULL OR lease_until < $3 OR lease_owner = $1) ORDER BY id LIMIT $4)"
    " RETURNING id, stream, event_id, type, payload, notify_channel";
// PostgreSQL's form: the batch's ids as an array (an InitPlan, run once, then lookups by primary
// key). With `id IN (subquery)` the planner may join the batch to a sequential scan of the
// whole table: EXPLAIN showed it doing so on a 20,000-row outbox (session 15).
const char kLeaseSqlPostgres[] =
    "UPDATE outbox SET lease_owner = $1, lease_until = $2 WHERE id = ANY(ARRAY("
    " SELECT id FROM outbox WHERE sent_time IS NULL"
    " AND (lease_until IS NULL OR lease_until < $3 OR lease_owner = $1) ORDER BY id LIMIT $4))"
    " RETURNING id, stream, event_id, type, payload, notify_channel";
const char kLeasableSql[] =
    "SELECT 1 FROM outbox WHERE sent_time IS NULL AND (lease_until IS NULL OR lease_until < $1 OR lease_owner = $2)"
    " LIMIT 1";
// The relay's write transactions on PostgreSQL (goes out with the BEGIN: one round trip):
// - Custom plans: the relay's statements are prepared once per connection, and a generic plan
//   made while the outbox was small (a fresh database; before autovacuum's first ANALYZE)
//   scanned the whole, ever-growing table on every pass.
// - No bitmap scans. Every row leaves the partial index of unsent rows when it is sent, and its
//   entry stays there, dead, until a vacuum (autovacuum wakes once a minute; at 1,000 sends/s
//   that is tens of thousands of entries). The planner, which does not count dead entries,
//   chose a bitmap scan of that index for the lease: it visits the heap page of every dead
//   entry on every pass (12,000-21,000 entries, 1,000 pages), and its lease averaged 0.95-1.21
//   ms a pass at 1,000 sends/s (0.31-0.35 in the runs that followed a vacuum). A plain index
//   scan in id order marks the entries it finds dead as such in the index (LP_DEAD), so later
//   passes skip them without reading the heap: 0.19-0.34 ms a pass, alternating with the former
//   in the same runs (session 15, pg_stat_statements' execution times, 230-360 passes/s).
const char kPostgresRelaySettings[] =
    "SET LOCAL plan_cache_mode TO force_custom_plan; SET LOCAL enable_bitmapscan TO off";

namespace {

// The relay's own writes (leases, sent marks) do not wait to be durable (kReadWriteUnsynced):
// a crash that loses one makes the relay send those events again, which the outbox allows
// anyway (at least once: a crash between the Redis pipeline and the sent mark does the same,
// and consumers drop duplicates by event_id). Two WAL flushes per pass were most of the
// send -> live latency on PostgreSQL; on SQLite the pass's fsync was a tenth of messaging's
// CPU at 1,000 sends/s and one more fsync between a commit and its live delivery. The events
// themselves were committed durably by the service's own transaction.
absl::Status RelayWrite(db::Database& db, const std::function<absl::Status(db::Tx&)>& fn) {
  return db.InTransaction([&](db::Tx& tx) -> absl::Status {
    if (tx.backend() == db::Backend::kPostgres) RETURN_IF_ERROR(tx.ExecScript(kPostgresRelaySettings));
    return fn(tx);
  }, db::TxMode::kReadWriteUnsynced);
}

// One statement marks a batch sent: UPDATE ... SET stream_entry_id = CASE id WHEN .. THEN ..
// END WHERE id IN (..). A statement per row was a round trip each on PostgreSQL.
absl::Status MarkSent(db::Tx& tx, const std::vector<std::pair<int64_t, std::string>>& done, absl::Time now) {
  db::Params params = {db::Micros(now)};
  std::string cases, ids;
  for (const auto& [id, entry] : done) {
    absl::StrAppend(&cases, " WHEN $", params.size() + 1, " THEN $", params.size() + 2);
    absl::StrAppend(&ids, ids.empty() ? "" : ", ", "$", params.size() + 1);
    params.push_back(id);
    params.push_back(entry);
  }
  return tx.Exec(absl::StrCat("UPDATE outbox SET sent_time = $1, stream_entry_id = CASE id", cases,
                              " END WHERE id IN (", ids, ")"),
                 params)
      .status();
}

}  // namespace

absl::StatusOr<int> Relay::RelayOnce() { return Pass(/*look_first=*/true, /*defer_marks=*/false); }

absl::StatusOr<int> Relay::Pass(bool look_first, bool defer_marks) {
  absl::Time now = clock_.Now();
  look_first = look_first && unmarked_.empty();
  // On a poll, read first: polls mostly find nothing, and the lease is a write (on SQLite it
  // queued behind, and held up, the service's own writes). After a commit's Notify (or a full
  // batch) there is almost surely something to send, and the look is a transaction on the way
  // to every live delivery.
  if (look_first) {
    bool leasable = false;
    RETURN_IF_ERROR(db_.InTransaction([&](db::Tx& tx) -> absl::Status {
      ASSIGN_OR_RETURN(db::Rows rows, tx.Query(kLeasableSql, {db::Micros(now), options_.owner}));
      leasable = !rows.empty();
      return absl::OkStatus();
    }, db::TxMode::kReadOnly));
    if (!leasable) return 0;
  }
  // Lease a batch so that several replicas relaying at once do not publish the same rows; the
  // lease returns the rows (one statement, not a lease and then a read). The previous batch's
  // sent marks, when deferred, go in the same transaction, before the lease.
  db::Rows rows;
  RETURN_IF_ERROR(RelayWrite(db_, [&](db::Tx& tx) -> absl::Status {
    if (!unmarked_.empty()) RETURN_IF_ERROR(MarkSent(tx, unmarked_, now));
    const char* lease = tx.backend() == db::Backend::kPostgres ? kLeaseSqlPostgres : kLeaseSql;
    ASSIGN_OR_RETURN(rows, tx.Query(lease, {options_.owner, db::Micros(now + options_.lease), db::Micros(now),
                                            static_cast<int64_t>(options_.batch)}));
    return absl::OkStatus();
  }));
  unmarked_.clear();
  if (rows.empty()) return 0;
  // RETURNING has no order; events go out in the order they were written.
  std::sort(rows.begin(), rows.end(), [](const db::Row& a, const db::Row& b) { return a.Int(0) < b.Int(0); });
  // One round trip for the whole batch: SCRIPT LOAD (so the script exists even right after a
  // Redis restart; commands run in order) then one EVALSHA per row doing XADD + PUBLISH.
  // Sequential XADD, PUBLISH and a committed UPDATE per row capped live delivery near
  // 600 deliveries/s (docs/perf); now the rows are marked sent in one statement.
  std::vector<std::vector<std::string>> commands;
  commands.reserve(rows.size() + 1);
  commands.push_back({"SCRIPT", "LOAD", kRelayScript});
  const std::string maxlen = absl::StrCat(options_.stream_maxlen > 0 ? options_.stream_maxlen : 0);
  for (const db::Row& row : rows) {
    commands.push_back({"EVALSHA", RelayScriptSha(), "1", row.Text(1), maxlen, row.Text(2), row.Text(3), row.Bytes(4),
                        row.Text(5)});
  }
  auto give_back = [&] {  // the rest back at once rather than when the lease expires
    RelayWrite(db_, [&](db::Tx& tx) {
      return tx.Exec("UPDATE outbox SET lease_owner = NULL, lease_until = NULL"
                     " WHERE lease_owner = $1 AND sent_time IS NULL",
                     {options_.owner})
          .status();
    }).IgnoreError();
  };
  auto replies = redis_.Pipeline(commands);
  if (!replies.ok()) {
    give_back();
    return replies.status();
  }
  std::vector<std::pair<int64_t, std::string>> done;
  absl::Status failed;
  for (size_t i = 0; i < rows.size(); ++i) {
    const redis::Reply& r = (*replies)[i + 1];
    if (r.type != redis::Reply::Type::kString) {
      failed = MakeError(absl::StatusCode::kInternal, "REDIS_ERROR", absl::StrCat("outbox relay: ", r.str));
      break;  // keep order: later rows wait for the next attempt
    }
    done.emplace_back(rows[i].Int(0), r.str);
  }
  if (!done.empty() && defer_marks && failed.ok()) {
    // The background loop marks these in its next pass's lease transaction: one transaction
    // per batch instead of two between a commit and its delivery. That pass comes with the
    // next commit's Notify, or at the next poll: not at once, which was a second write
    // transaction per pass (at 1,000 sends/s on SQLite the relay's CPU per send was 13x its
    // CPU under full load, where batches fill). A crash before then sends them again, as a
    // crash before any sent mark always could; the lease keeps other relays off them.
    unmarked_ = std::move(done);
  } else if (!done.empty()) {
    RETURN_IF_ERROR(RelayWrite(db_, [&](db::Tx& tx) { return MarkSent(tx, done, clock_.Now()); }));
  }
  if (!failed.ok()) {
    give_back();
    return failed;
  }
  return static_cast<int>(done.size());
}

void Relay::Start() {
  thread_ = std::thread([this] {
    NameThisThread("outbox-relay");
    absl::Duration backoff = options_.poll_interval;
    bool expect_work = false;  // woken by Notify, or the last pass filled a batch
    while (true) {
      auto result = Pass(/*look_first=*/!expect_work, /*defer_marks=*/true);
      expect_work = false;
      absl::Duration wait = options_.poll_interval;
      if (!result.ok()) {
        spdlog::warn("outbox relay: {} (events kept, retry in {})", result.status().ToString(),
                     absl::FormatDuration(backoff));
        wait = backoff;
        backoff = std::min(backoff * 2, absl::Seconds(5));
      } else {
        backoff = options_.poll_interval;
        if (*result == options_.batch) {
          wait = absl::ZeroDuration();  // more to send
          expect_work = true;
        }
      }
      bool stopping = false;
      {
        absl::MutexLock lock(&mu_);
        auto woken = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return notified_ || stop_; };
        mu_.AwaitWithTimeout(absl::Condition(&woken), wait);
        stopping = stop_;
        expect_work = expect_work || notified_;
        notified_ = false;
      }
      if (stopping) {
        if (!unmarked_.empty()) {  // best effort: unmarked events are sent again later, not lost
          RelayWrite(db_, [&](db::Tx& tx) { return MarkSent(tx, unmarked_, clock_.Now()); }).IgnoreError();
        }
        return;
      }
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
