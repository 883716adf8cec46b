#include "common/redis/streams.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log/log.h"
#include "common/status/errors.h"
#include "common/status/macros.h"
#include "spdlog/spdlog.h"

namespace continuum::redis {

std::string StreamEntry::Get(const std::string& name) const {
  for (const auto& [k, v] : fields) {
    if (k == name) return v;
  }
  return "";
}

absl::StatusOr<std::string> XAdd(Client& client, const std::string& stream,
                                 const std::vector<std::pair<std::string, std::string>>& fields,
                                 int64_t approx_maxlen) {
  std::vector<std::string> args = {"XADD", stream};
  if (approx_maxlen > 0) {
    args.insert(args.end(), {"MAXLEN", "~", absl::StrCat(approx_maxlen)});
  }
  args.push_back("*");
  for (const auto& [k, v] : fields) {
    args.push_back(k);
    args.push_back(v);
  }
  ASSIGN_OR_RETURN(Reply reply, client.Command(args));
  return reply.str;
}

absl::Status EnsureGroup(Client& client, const std::string& stream, const std::string& group,
                         const std::string& start_id) {
  ASSIGN_OR_RETURN(Reply reply,
                   client.CommandAllowError({"XGROUP", "CREATE", stream, group, start_id, "MKSTREAM"}));
  if (reply.type == Reply::Type::kError && !absl::StartsWith(reply.str, "BUSYGROUP")) {
    return absl::InternalError(absl::StrCat("XGROUP CREATE ", stream, " ", group, ": ", reply.str));
  }
  return absl::OkStatus();
}

std::vector<StreamEntry> ParseEntries(const Reply& reply) {
  std::vector<StreamEntry> out;
  for (const Reply& e : reply.elements) {
    // A deleted entry can appear as [id, nil] in a pending list.
    if (e.elements.size() != 2 || e.elements[1].type != Reply::Type::kArray) continue;
    StreamEntry entry;
    entry.id = e.elements[0].str;
    const auto& kv = e.elements[1].elements;
    for (size_t i = 0; i + 1 < kv.size(); i += 2) entry.fields.emplace_back(kv[i].str, kv[i + 1].str);
    out.push_back(std::move(entry));
  }
  return out;
}

StreamConsumer::StreamConsumer(redis::Options redis_options, Options options, Handler handler)
    : redis_options_(std::move(redis_options)), options_(std::move(options)), handler_(std::move(handler)) {}

StreamConsumer::~StreamConsumer() { Stop(); }

absl::Status StreamConsumer::EnsureConnection() {
  if (conn_ && !conn_->broken()) return absl::OkStatus();
  conn_.reset();
  group_ready_ = false;
  ASSIGN_OR_RETURN(conn_, Connection::Connect(redis_options_));
  ASSIGN_OR_RETURN(Reply reply, conn_->Command({"XGROUP", "CREATE", options_.stream, options_.group,
                                                "0", "MKSTREAM"}));
  if (reply.type == Reply::Type::kError && !absl::StartsWith(reply.str, "BUSYGROUP")) {
    return absl::InternalError(absl::StrCat("XGROUP CREATE: ", reply.str));
  }
  group_ready_ = true;
  return absl::OkStatus();
}

absl::StatusOr<int> StreamConsumer::HandleAll(const std::vector<StreamEntry>& entries) {
  int handled = 0;
  for (const StreamEntry& entry : entries) {
    absl::Status s = handler_(entry);
    if (!s.ok()) {
      spdlog::warn("stream {} entry {} not handled (stays pending): {}", options_.stream, entry.id,
                   s.ToString());
      continue;
    }
    ASSIGN_OR_RETURN(Reply ack, conn_->Command({"XACK", options_.stream, options_.group, entry.id}));
    if (ack.type == Reply::Type::kError) return absl::InternalError("XACK: " + ack.str);
    ++handled;
  }
  return handled;
}

absl::StatusOr<int> StreamConsumer::PollOnce() {
  RETURN_IF_ERROR(EnsureConnection());
  int handled = 0;
  // Reclaim what a dead consumer left pending (and our own failures) once idle long enough.
  ASSIGN_OR_RETURN(Reply claimed,
                   conn_->Command({"XAUTOCLAIM", options_.stream, options_.group, options_.consumer,
                                   absl::StrCat(absl::ToInt64Milliseconds(options_.claim_min_idle)),
                                   "0-0", "COUNT", absl::StrCat(options_.count)}));
  if (claimed.type == Reply::Type::kError) return absl::InternalError("XAUTOCLAIM: " + claimed.str);
  if (claimed.elements.size() >= 2) {
    ASSIGN_OR_RETURN(int n, HandleAll(ParseEntries(claimed.elements[1])));
    handled += n;
  }
  ASSIGN_OR_RETURN(
      Reply read,
      conn_->Command({"XREADGROUP", "GROUP", options_.group, options_.consumer, "COUNT",
                      absl::StrCat(options_.count), "BLOCK",
                      absl::StrCat(absl::ToInt64Milliseconds(options_.block)), "STREAMS",
                      options_.stream, ">"},
                     options_.block + redis_options_.command_timeout));
  if (read.type == Reply::Type::kError) return absl::InternalError("XREADGROUP: " + read.str);
  for (const Reply& stream : read.elements) {
    if (stream.elements.size() != 2) continue;
    ASSIGN_OR_RETURN(int n, HandleAll(ParseEntries(stream.elements[1])));
    handled += n;
  }
  return handled;
}

void StreamConsumer::Start() {
  thread_ = std::thread([this] {
    NameThisThread("event-consumer");
    absl::Duration backoff = redis_options_.min_backoff;
    while (!stop_.load()) {
      auto result = PollOnce();
      if (result.ok()) {
        backoff = redis_options_.min_backoff;
        continue;
      }
      spdlog::warn("stream consumer {}/{}: {}", options_.stream, options_.group,
                   result.status().ToString());
      absl::Time until = absl::Now() + backoff;
      while (!stop_.load() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(20));
      backoff = std::min(backoff * 2, redis_options_.max_backoff);
    }
  });
}

void StreamConsumer::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

}  // namespace continuum::redis
