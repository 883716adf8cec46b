#include <atomic>
#include <set>

#include "absl/synchronization/mutex.h"
#include "common/redis/client.h"
#include "common/redis/streams.h"
#include "common/redis/subscriber.h"
#include "common/status/errors.h"
#include "common/testing/harness.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace continuum::redis {
namespace {

using continuum::testing::RedisServer;
using continuum::testing::WaitUntil;

class RedisTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = RedisServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    options_.port = server_->port();
    options_.command_timeout = absl::Seconds(1);
    options_.max_backoff = absl::Milliseconds(200);
  }
  std::unique_ptr<RedisServer> server_;
  Options options_;
};

TEST_F(RedisTest, RunsCommandsAndReportsRedisErrors) {
  Client client(options_);
  ASSERT_TRUE(client.Command({"SET", "k", std::string("v\0w", 3)}).ok());
  auto got = client.Command({"GET", "k"});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->str, std::string("v\0w", 3));
  auto zadd = client.Command({"ZADD", "z", "1", "a", "2", "b"});
  ASSERT_TRUE(zadd.ok());
  EXPECT_EQ(zadd->integer, 2);
  auto bad = client.Command({"INCR", "k"});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(ErrorReason(bad.status()), "REDIS_ERROR");
}

TEST_F(RedisTest, PipelineReturnsEveryReplyInOrderWithErrorsInPlace) {
  Client client(options_);
  std::vector<std::vector<std::string>> commands;
  for (int i = 0; i < 200; ++i) commands.push_back({"INCR", "counter"});
  commands.push_back({"HSET", "counter", "f", "v"});  // wrong type: an error reply, in place
  commands.push_back({"GET", "counter"});
  auto replies = client.Pipeline(commands);
  ASSERT_TRUE(replies.ok()) << replies.status();
  ASSERT_EQ(replies->size(), 202u);
  for (int i = 0; i < 200; ++i) ASSERT_EQ((*replies)[i].integer, i + 1);
  EXPECT_EQ((*replies)[200].type, Reply::Type::kError);
  EXPECT_EQ((*replies)[201].str, "200");
  // A script is named by the SHA1 Redis computes for it.
  const std::string script = "return ARGV[1]";
  auto loaded = client.Command({"SCRIPT", "LOAD", script});
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->str, ScriptSha(script));
  server_->Kill();
  EXPECT_EQ(client.Pipeline(commands).status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(RedisTest, FailsFastWhileDownAndReconnectsAfterRestart) {
  Client client(options_);
  ASSERT_TRUE(client.Ping().ok());
  server_->Kill();
  absl::Time start = absl::Now();
  for (int i = 0; i < 20; ++i) {
    absl::Status s = client.Ping();
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(ErrorReason(s), "REDIS_UNAVAILABLE");
  }
  // 20 calls during the outage, each bounded by timeouts and back-off: no hang.
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_FALSE(client.healthy());
  ASSERT_TRUE(server_->Restart().ok());
  EXPECT_TRUE(WaitUntil([&] { return client.Ping().ok(); }, absl::Seconds(10)))
      << "client did not reconnect after redis-server came back";
  EXPECT_TRUE(client.healthy());
}

TEST_F(RedisTest, ParseAddressAcceptsHostPortAndUrl) {
  auto a = ParseAddress("redis://10.0.0.1:6380");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "10.0.0.1");
  EXPECT_EQ(a->port, 6380);
  EXPECT_FALSE(ParseAddress("localhost").ok());
  EXPECT_FALSE(ParseAddress("localhost:99999").ok());
}

TEST_F(RedisTest, ConsumerGroupAcksHandledEntriesAndReclaimsFromDeadConsumer) {
  Client client(options_);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(XAdd(client, "events", {{"event_id", "e" + std::to_string(i)}}).ok());
  }
  // Consumer A takes the entries and dies before acknowledging (handler fails).
  StreamConsumer dead(options_, {.stream = "events", .group = "g", .consumer = "a",
                                 .block = absl::Milliseconds(50)},
                      [](const StreamEntry&) { return absl::UnavailableError("crashed"); });
  auto a = dead.PollOnce();
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(*a, 0);
  auto pending = client.Command({"XPENDING", "events", "g"});
  ASSERT_TRUE(pending.ok());
  EXPECT_EQ(pending->elements.at(0).integer, 3);

  // Consumer B reclaims them (min idle 0 for the test) and handles each once.
  std::vector<std::string> seen;
  StreamConsumer live(options_, {.stream = "events", .group = "g", .consumer = "b",
                                 .block = absl::Milliseconds(50), .claim_min_idle = absl::ZeroDuration()},
                      [&](const StreamEntry& e) {
                        seen.push_back(e.Get("event_id"));
                        return absl::OkStatus();
                      });
  auto b = live.PollOnce();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(*b, 3);
  EXPECT_THAT(seen, ::testing::ElementsAre("e0", "e1", "e2"));
  pending = client.Command({"XPENDING", "events", "g"});
  ASSERT_TRUE(pending.ok());
  EXPECT_EQ(pending->elements.at(0).integer, 0);
}

TEST_F(RedisTest, SubscriberReceivesAndResubscribesAfterRestart) {
  absl::Mutex mu;
  std::vector<std::string> got;
  std::atomic<int> reconnects{0};
  Subscriber sub(
      options_,
      [&](const std::string& channel, const std::string& payload) {
        absl::MutexLock lock(&mu);
        got.push_back(channel + ":" + payload);
      },
      [&] { reconnects++; });
  sub.Subscribe("presence:c1");
  sub.Start();
  Client client(options_);
  auto delivered = [&](const std::string& want) {
    absl::MutexLock lock(&mu);
    return std::find(got.begin(), got.end(), want) != got.end();
  };
  // PUBLISH returns the receiver count: publish until the subscription is live.
  ASSERT_TRUE(WaitUntil([&] {
    auto r = client.Command({"PUBLISH", "presence:c1", "hello"});
    return r.ok() && r->integer == 1;
  }, absl::Seconds(10)));
  EXPECT_TRUE(WaitUntil([&] { return delivered("presence:c1:hello"); }, absl::Seconds(10)));

  server_->Kill();
  ASSERT_TRUE(server_->Restart().ok());
  ASSERT_TRUE(WaitUntil([&] {
    auto r = client.Command({"PUBLISH", "presence:c1", "again"});
    return r.ok() && r->integer == 1;
  }, absl::Seconds(15))) << "subscriber did not re-subscribe after restart";
  EXPECT_TRUE(WaitUntil([&] { return delivered("presence:c1:again"); }, absl::Seconds(10)));
  EXPECT_GE(reconnects.load(), 2);
  sub.Stop();
}

TEST_F(RedisTest, SubscriberTakesChannelsAddedWhileRunning) {
  absl::Mutex mu;
  std::vector<std::string> got;
  Subscriber sub(options_, [&](const std::string& channel, const std::string& payload) {
    absl::MutexLock lock(&mu);
    got.push_back(channel + ":" + payload);
  });
  sub.Start();
  ASSERT_TRUE(WaitUntil([&] { return sub.connected(); }, absl::Seconds(10)));
  sub.Subscribe("late");
  Client client(options_);
  ASSERT_TRUE(WaitUntil([&] {
    auto r = client.Command({"PUBLISH", "late", "x"});
    return r.ok() && r->integer == 1;
  }, absl::Seconds(10))) << "a channel added after start was never subscribed";
  EXPECT_TRUE(WaitUntil([&] {
    absl::MutexLock lock(&mu);
    return !got.empty() && got[0] == "late:x";
  }, absl::Seconds(10)));
  sub.Stop();
}

}  // namespace
}  // namespace continuum::redis
