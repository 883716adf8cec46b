#include "common/redis/client.h"

#include <openssl/sha.h>

#include "absl/strings/escaping.h"

#include <hiredis/hiredis.h>
#include <poll.h>
#include <sys/time.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/status/errors.h"
#include "common/status/macros.h"

namespace continuum::redis {
namespace {

timeval TimevalOf(absl::Duration d) {
  return absl::ToTimeval(std::max(d, absl::Milliseconds(1)));
}

std::vector<const char*> ArgvOf(const std::vector<std::string>& args, std::vector<size_t>* lens) {
  std::vector<const char*> argv;
  argv.reserve(args.size());
  lens->clear();
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens->push_back(a.size());
  }
  return argv;
}

}  // namespace

absl::Status Unavailable(absl::string_view message) {
  return MakeError(absl::StatusCode::kUnavailable, "REDIS_UNAVAILABLE", message);
}

absl::StatusOr<Options> ParseAddress(const std::string& address, Options base) {
  absl::string_view rest = address;
  absl::ConsumePrefix(&rest, "redis://");
  auto colon = rest.rfind(':');
  int port = 0;
  if (colon == absl::string_view::npos || !absl::SimpleAtoi(rest.substr(colon + 1), &port) ||
      port <= 0 || port > 65535 || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("redis address '", address, "' must look like host:port or redis://host:port"));
  }
  base.host = std::string(rest.substr(0, colon));
  base.port = port;
  return base;
}

Reply Reply::FromHiredis(const redisReply* r) {
  Reply out;
  if (r == nullptr) return out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = Type::kString;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = Type::kStatus;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = Type::kError;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = Type::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = Type::kArray;
      out.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(FromHiredis(r->element[i]));
      break;
    default:
      out.type = Type::kNil;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Connection>> Connection::Connect(const Options& options) {
  redisContext* ctx =
      redisConnectWithTimeout(options.host.c_str(), options.port, TimevalOf(options.connect_timeout));
  if (ctx == nullptr || ctx->err) {
    std::string msg = ctx ? ctx->errstr : "out of memory";
    if (ctx) redisFree(ctx);
    return Unavailable(absl::StrCat("cannot connect to redis at ", options.host, ":", options.port,
                                    ": ", msg));
  }
  std::unique_ptr<Connection> conn(new Connection(ctx, options));
  RETURN_IF_ERROR(conn->SetTimeout(options.command_timeout));
  redisEnableKeepAlive(ctx);
  return conn;
}

Connection::~Connection() { redisFree(ctx_); }

absl::Status Connection::SetTimeout(absl::Duration d) {
  if (redisSetTimeout(ctx_, TimevalOf(d)) != REDIS_OK) return IoError("set timeout");
  return absl::OkStatus();
}

absl::Status Connection::IoError(const char* what) {
  broken_ = true;
  return Unavailable(absl::StrCat("redis ", what, " failed: ", ctx_->errstr[0] ? ctx_->errstr : "I/O error"));
}

absl::StatusOr<Reply> Connection::Command(const std::vector<std::string>& args) {
  if (broken_) return Unavailable("redis connection is broken");
  std::vector<size_t> lens;
  auto argv = ArgvOf(args, &lens);
  auto* r = static_cast<redisReply*>(
      redisCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()));
  if (r == nullptr) return IoError(args.empty() ? "command" : args[0].c_str());
  Reply out = Reply::FromHiredis(r);
  freeReplyObject(r);
  return out;
}

absl::StatusOr<std::vector<Reply>> Connection::Pipeline(const std::vector<std::vector<std::string>>& commands) {
  if (broken_) return Unavailable("redis connection is broken");
  for (const auto& args : commands) {
    std::vector<size_t> lens;
    auto argv = ArgvOf(args, &lens);
    if (redisAppendCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()) != REDIS_OK) {
      return IoError("append");
    }
  }
  std::vector<Reply> replies;
  replies.reserve(commands.size());
  for (size_t i = 0; i < commands.size(); ++i) {
    void* raw = nullptr;
    // The first call flushes the whole output buffer, then each call reads one reply.
    if (redisGetReply(ctx_, &raw) != REDIS_OK || raw == nullptr) return IoError("pipeline");
    replies.push_back(Reply::FromHiredis(static_cast<redisReply*>(raw)));
    freeReplyObject(raw);
  }
  return replies;
}

absl::StatusOr<Reply> Connection::Command(const std::vector<std::string>& args,
                                          absl::Duration timeout) {
  RETURN_IF_ERROR(SetTimeout(timeout));
  auto reply = Command(args);
  if (!broken_) RETURN_IF_ERROR(SetTimeout(options_.command_timeout));
  return reply;
}

absl::Status Connection::Send(const std::vector<std::string>& args) {
  if (broken_) return Unavailable("redis connection is broken");
  std::vector<size_t> lens;
  auto argv = ArgvOf(args, &lens);
  if (redisAppendCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()) !=
      REDIS_OK) {
    return IoError("append");
  }
  int done = 0;
  while (!done) {
    if (redisBufferWrite(ctx_, &done) != REDIS_OK) return IoError("write");
  }
  return absl::OkStatus();
}

absl::StatusOr<Reply> Connection::Receive(absl::Duration timeout, bool* got) {
  *got = false;
  if (broken_) return Unavailable("redis connection is broken");
  void* raw = nullptr;
  if (redisGetReplyFromReader(ctx_, &raw) != REDIS_OK) return IoError("parse");
  if (raw == nullptr) {
    pollfd pfd{ctx_->fd, POLLIN, 0};
    int rc = poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
    if (rc < 0) return IoError("poll");
    if (rc == 0) return Reply{};
    if (redisBufferRead(ctx_) != REDIS_OK) return IoError("read");
    if (redisGetReplyFromReader(ctx_, &raw) != REDIS_OK) return IoError("parse");
    if (raw == nullptr) return Reply{};  // partial reply; the rest comes with the next read
  }
  Reply out = Reply::FromHiredis(static_cast<redisReply*>(raw));
  freeReplyObject(raw);
  *got = true;
  return out;
}

Client::Client(Options options) : options_(std::move(options)), backoff_(options_.min_backoff) {}
Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Connection>> Client::Take() {
  absl::MutexLock lock(&mu_);
  while (true) {
    if (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      return c;
    }
    if (open_ < options_.pool_size) break;
    // All connections busy: wait for one, bounded by the command timeout.
    auto has_idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return !idle_.empty(); };
    if (!mu_.AwaitWithTimeout(absl::Condition(&has_idle), options_.command_timeout)) {
      return Unavailable("no redis connection available within the command timeout");
    }
  }
  absl::Time now = absl::Now();
  if (now < next_attempt_) {
    return Unavailable(absl::StrCat("redis is unreachable (", last_error_.message(),
                                    "); next reconnect attempt in ",
                                    absl::FormatDuration(next_attempt_ - now)));
  }
  ++open_;
  mu_.Unlock();
  auto conn = Connection::Connect(options_);
  mu_.Lock();
  if (!conn.ok()) {
    --open_;
    healthy_ = false;
    last_error_ = conn.status();
    next_attempt_ = absl::Now() + backoff_;
    backoff_ = std::min(backoff_ * 2, options_.max_backoff);
    return conn.status();
  }
  healthy_ = true;
  backoff_ = options_.min_backoff;
  next_attempt_ = absl::InfinitePast();
  return conn;
}

void Client::Return(std::unique_ptr<Connection> c) {
  absl::MutexLock lock(&mu_);
  if (c->broken()) {
    --open_;
    healthy_ = false;
    return;  // dropped; the next Take reconnects
  }
  healthy_ = true;
  idle_.push_back(std::move(c));
}

absl::StatusOr<Reply> Client::CommandAllowError(const std::vector<std::string>& args) {
  ASSIGN_OR_RETURN(auto conn, Take());
  auto reply = conn->Command(args);
  Return(std::move(conn));
  return reply;
}

absl::StatusOr<std::vector<Reply>> Client::Pipeline(const std::vector<std::vector<std::string>>& commands) {
  ASSIGN_OR_RETURN(auto conn, Take());
  auto replies = conn->Pipeline(commands);
  Return(std::move(conn));
  return replies;
}

absl::StatusOr<Reply> Client::Command(const std::vector<std::string>& args) {
  ASSIGN_OR_RETURN(Reply reply, CommandAllowError(args));
  if (reply.type == Reply::Type::kError) {
    return MakeError(absl::StatusCode::kInternal, "REDIS_ERROR",
                     absl::StrCat("redis ", args.empty() ? "" : args[0], ": ", reply.str));
  }
  return reply;
}

absl::Status Client::Ping() { return Command({"PING"}).status(); }

bool Client::healthy() const {
  absl::MutexLock lock(&mu_);
  return healthy_;
}

std::string ScriptSha(absl::string_view script) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(script.data()), script.size(), digest);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

}  // namespace continuum::redis
