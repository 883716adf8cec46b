// Redis over hiredis 0.14 (synchronous contexts): a small thread-safe pool with connect and
// command timeouts, and reconnection with exponential back-off after the server goes away.
//
// While Redis is down, calls fail fast with UNAVAILABLE (reason REDIS_UNAVAILABLE) instead
// of hanging: a reconnect is attempted at most once per back-off period. hiredis 0.14 has no
// TLS, so Redis must sit on a private network or behind a TLS proxy.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

struct redisContext;
struct redisReply;

namespace continuum::redis {

struct Options {
  std::string host = "127.0.0.1";
  int port = 6379;
  absl::Duration connect_timeout = absl::Milliseconds(500);
  absl::Duration command_timeout = absl::Seconds(2);
  int pool_size = 4;
  absl::Duration min_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(2);
};

// Parses "redis://host:port" or "host:port".
absl::StatusOr<Options> ParseAddress(const std::string& address, Options base = {});

// A reply, copied out of hiredis' tree so it can outlive the connection.
struct Reply {
  enum class Type { kNil, kString, kStatus, kInteger, kArray, kError };
  Type type = Type::kNil;
  std::string str;  // kString, kStatus, kError
  int64_t integer = 0;
  std::vector<Reply> elements;

  bool is_nil() const { return type == Type::kNil; }
  static Reply FromHiredis(const redisReply* r);
};

// One connection. Not thread-safe; owned by a Client's pool or by a dedicated user
// (blocking reads, subscriptions).
class Connection {
 public:
  static absl::StatusOr<std::unique_ptr<Connection>> Connect(const Options& options);
  ~Connection();

  // Sends one command and waits for its reply (bounded by command_timeout). A Redis error
  // reply is returned as a Reply of type kError, not as a failed status; an I/O failure is
  // UNAVAILABLE and leaves the connection broken().
  absl::StatusOr<Reply> Command(const std::vector<std::string>& args);
  // Same, with an explicit read timeout (e.g. for XREADGROUP BLOCK).
  absl::StatusOr<Reply> Command(const std::vector<std::string>& args, absl::Duration timeout);

  // Sends all commands in one write and reads their replies in order: one round trip for
  // the batch. Redis error replies come back as kError entries.
  absl::StatusOr<std::vector<Reply>> Pipeline(const std::vector<std::vector<std::string>>& commands);

  // Pipelining for subscribers: send without waiting, then poll for replies.
  absl::Status Send(const std::vector<std::string>& args);
  // Waits up to `timeout` for one reply; returns nullopt-like kNil with `*got = false` on timeout.
  absl::StatusOr<Reply> Receive(absl::Duration timeout, bool* got);

  bool broken() const { return broken_; }

 private:
  explicit Connection(redisContext* ctx, const Options& options) : ctx_(ctx), options_(options) {}
  absl::Status SetTimeout(absl::Duration d);
  absl::Status IoError(const char* what);

  redisContext* ctx_;
  Options options_;
  bool broken_ = false;
};

class Client {
 public:
  explicit Client(Options options);
  ~Client();

  // Runs one command on a pooled connection. A Redis error reply becomes INTERNAL
  // (reason REDIS_ERROR) carrying Redis' message; use CommandAllowError to inspect it.
  absl::StatusOr<Reply> Command(const std::vector<std::string>& args);
  absl::StatusOr<Reply> CommandAllowError(const std::vector<std::string>& args);
  // Connection::Pipeline on a pooled connection (error replies stay in the vector).
  absl::StatusOr<std::vector<Reply>> Pipeline(const std::vector<std::vector<std::string>>& commands);

  absl::Status Ping();
  // True when the last connection attempt or command succeeded.
  bool healthy() const;

  const Options& options() const { return options_; }

 private:
  absl::StatusOr<std::unique_ptr<Connection>> Take();
  void Return(std::unique_ptr<Connection> c);

  Options options_;
  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time next_attempt_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Duration backoff_ ABSL_GUARDED_BY(mu_);
  bool healthy_ ABSL_GUARDED_BY(mu_) = true;
  absl::Status last_error_ ABSL_GUARDED_BY(mu_);
};

absl::Status Unavailable(absl::string_view message);

// The SHA1 (hex) Redis names a Lua script by, for EVALSHA.
std::string ScriptSha(absl::string_view script);

}  // namespace continuum::redis
