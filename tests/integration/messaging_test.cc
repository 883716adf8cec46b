// Messaging with real binaries: two messaging replicas on one database and one Redis, the
// scheduling service, a client subscribed on replica A receiving what the therapist sends
// through replica B, a disconnect and replay from the cursor, and redis-server killed and
// restarted mid-traffic with nothing lost.
#include <set>
#include <thread>

#include "common/testing/platform.h"
#include "continuum/messaging/v1/messaging_service.grpc.pb.h"
#include "gmock/gmock.h"

namespace continuum::testing {
namespace {

namespace mv1 = ::continuum::messaging::v1;
namespace cv1 = ::continuum::common::v1;
using M = mv1::MessagingService::Stub;

class MessagingBinaryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    platform_.Start(false);
    ASSERT_FALSE(platform_.SeedMedicineSession().empty());
    std::string a = platform_.StartMessaging(), b = platform_.StartMessaging();
    ASSERT_FALSE(a.empty() || b.empty());
    a_ = mv1::MessagingService::NewStub(grpc::CreateChannel(a, grpc::InsecureChannelCredentials()));
    b_ = mv1::MessagingService::NewStub(grpc::CreateChannel(b, grpc::InsecureChannelCredentials()));
  }

  grpc::Status Send(M* stub, const std::string& token, const std::string& id, const std::string& text) {
    mv1::SendMessageRequest r;
    r.set_parent("clinics/kap/conversations/client-casey");
    r.set_message_id(id);
    r.mutable_message()->set_text(text);
    mv1::Message out;
    return CallWith(stub, &M::SendMessage, token, r, &out);
  }

  // Reads deliveries until `want` messages have arrived (and, if asked, ReplayComplete).
  struct Received {
    std::vector<std::string> texts;
    std::string cursor;
    bool replay_complete = false;
  };
  Received Read(M* stub, const std::string& cursor, size_t want, std::function<void()> after_replay = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    ctx.AddMetadata("authorization", "Bearer " + platform_.client);
    mv1::SubscribeRequest req;
    req.set_cursor(cursor);
    auto reader = stub->Subscribe(&ctx, req);
    Received got;
    got.cursor = cursor;
    mv1::Delivery d;
    while (got.texts.size() < want && reader->Read(&d)) {
      if (d.has_replay_complete()) {
        got.replay_complete = true;
        if (after_replay) after_replay();
        continue;
      }
      got.cursor = d.cursor();
      if (d.has_message()) got.texts.push_back(d.message().text());
    }
    ctx.TryCancel();
    reader->Finish().IgnoreError();
    return got;
  }

  Platform platform_;
  std::unique_ptr<M> a_, b_;
};

TEST_F(MessagingBinaryTest, LiveAcrossReplicasThenReplayFromCursorAfterDisconnect) {
  // Subscribed on A; once live, the therapist sends through B.
  auto first = Read(a_.get(), "", 2, [&] {
    ASSERT_TRUE(Send(b_.get(), platform_.therapist, "t-1", "How are you feeling?").ok());
    ASSERT_TRUE(Send(b_.get(), platform_.therapist, "t-2", "Remember to hydrate.").ok());
  });
  EXPECT_TRUE(first.replay_complete);
  if (first.texts.size() != 2) {
    ADD_FAILURE() << "replica A log:\n" << platform_.messaging[0]->log() << "\nreplica B log:\n" << platform_.messaging[1]->log();
  }
  EXPECT_THAT(first.texts, ::testing::ElementsAre("How are you feeling?", "Remember to hydrate."));
  // Disconnected: two more arrive meanwhile (one through each replica).
  ASSERT_TRUE(Send(a_.get(), platform_.therapist, "t-3", "Session at 10 tomorrow.").ok());
  ASSERT_TRUE(Send(b_.get(), platform_.clinician, "t-4", "Dose plan confirmed.").ok());
  auto second = Read(b_.get(), first.cursor, 2);
  EXPECT_THAT(second.texts, ::testing::ElementsAre("Session at 10 tomorrow.", "Dose plan confirmed."))
      << "reconnecting with the last cursor replays exactly what was missed";

  // A cursor the server never gave out is bad input, not an outage.
  for (const std::string bad : {"yesterday", "12-", "-3", "1-2-3"}) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ctx.AddMetadata("authorization", "Bearer " + platform_.client);
    mv1::SubscribeRequest req;
    req.set_cursor(bad);
    auto reader = a_->Subscribe(&ctx, req);
    mv1::Delivery d;
    EXPECT_FALSE(reader->Read(&d));
    grpc::Status s = reader->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad << ": " << s.error_message();
    EXPECT_EQ(ReasonOf(s), "INVALID_FIELD") << bad;
  }
}

// StreamHeartbeats: each heartbeat on the stream is answered in order (applied through the
// replica's batcher), presence reads back ONLINE on the other replica, closing the sending
// side ends the stream OK, a heartbeat Heartbeat would refuse ends it with that error, and a
// stream without a token is refused.
TEST_F(MessagingBinaryTest, HeartbeatStreamAnswersEachBeatInOrderAndEndsOnTheFirstBadOne) {
  auto open = [&](M* stub, grpc::ClientContext& ctx, const std::string& token) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    return stub->StreamHeartbeats(&ctx);
  };
  mv1::StreamHeartbeatsRequest msg;
  mv1::HeartbeatRequest& beat = *msg.mutable_heartbeat();
  beat.set_device_id("phone");
  beat.set_status(cv1::PRESENCE_STATUS_ONLINE);
  beat.mutable_ttl()->set_seconds(30);
  {
    grpc::ClientContext ctx;
    auto stream = open(a_.get(), ctx, platform_.therapist);
    for (int i = 0; i < 3; ++i) {
      if (i == 2) beat.set_status(cv1::PRESENCE_STATUS_DO_NOT_DISTURB);
      ASSERT_TRUE(stream->Write(msg));
      mv1::StreamHeartbeatsResponse r;
      ASSERT_TRUE(stream->Read(&r)) << "heartbeat " << i << " unanswered";
      EXPECT_EQ(r.heartbeat().presence().person(), "people/ther");
      EXPECT_EQ(r.heartbeat().presence().status(),
                i == 2 ? cv1::PRESENCE_STATUS_DO_NOT_DISTURB : cv1::PRESENCE_STATUS_ONLINE);
      EXPECT_EQ(r.heartbeat().heartbeat_interval().seconds(), 10);
    }
    ASSERT_TRUE(stream->WritesDone());
    mv1::StreamHeartbeatsResponse extra;
    EXPECT_FALSE(stream->Read(&extra));
    grpc::Status s = stream->Finish();
    EXPECT_TRUE(s.ok()) << s.error_message();
  }
  mv1::GetPresenceRequest get;
  get.set_name("people/ther/presence");
  mv1::Presence seen;
  ASSERT_TRUE(CallWith(b_.get(), &M::GetPresence, platform_.therapist, get, &seen).ok());
  EXPECT_EQ(seen.status(), cv1::PRESENCE_STATUS_DO_NOT_DISTURB);
  {
    grpc::ClientContext ctx;
    auto stream = open(a_.get(), ctx, platform_.therapist);
    beat.set_status(cv1::PRESENCE_STATUS_IN_SESSION);  // reserved to the session itself
    ASSERT_TRUE(stream->Write(msg));
    mv1::StreamHeartbeatsResponse r;
    EXPECT_FALSE(stream->Read(&r));
    grpc::Status s = stream->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), ::testing::HasSubstr("status"));
  }
  {
    grpc::ClientContext ctx;
    auto stream = open(a_.get(), ctx, "");
    mv1::StreamHeartbeatsResponse r;
    EXPECT_FALSE(stream->Read(&r));
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
}

// Unary heartbeats are applied by the same batcher as streamed ones: callers heartbeating at
// once share a Redis script call, and each is answered with its own presence (never another
// caller's), while a bad request is refused alone without reaching the batch.
TEST_F(MessagingBinaryTest, ConcurrentUnaryHeartbeatsAreEachAnsweredWithTheirOwnPresence) {
  const std::vector<std::string> tokens = {platform_.client, platform_.therapist, platform_.clinician};
  std::vector<std::set<std::string>> people(tokens.size());
  std::vector<int> ok(tokens.size(), 0);
  std::vector<std::thread> callers;
  for (size_t t = 0; t < tokens.size(); ++t) {
    callers.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        mv1::HeartbeatRequest h;
        h.set_device_id("device-" + std::to_string(i % 2));
        h.set_status(i % 3 ? cv1::PRESENCE_STATUS_ONLINE : cv1::PRESENCE_STATUS_AWAY);
        mv1::HeartbeatResponse hr;
        if (CallWith(i % 2 ? a_.get() : b_.get(), &M::Heartbeat, tokens[t], h, &hr).ok()) {
          ++ok[t];
          people[t].insert(hr.presence().person());
        }
      }
    });
  }
  mv1::HeartbeatRequest bad;
  bad.set_status(cv1::PRESENCE_STATUS_ONLINE);  // no device_id
  mv1::HeartbeatResponse unused;
  grpc::Status refused = CallWith(a_.get(), &M::Heartbeat, platform_.client, bad, &unused);
  for (auto& c : callers) c.join();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << refused.error_message();
  EXPECT_EQ(ReasonOf(refused), "INVALID_FIELD");
  std::set<std::string> all;
  for (size_t t = 0; t < tokens.size(); ++t) {
    EXPECT_EQ(ok[t], 20) << "caller " << t;
    ASSERT_EQ(people[t].size(), 1u) << "caller " << t << " was answered with someone else's presence";
    EXPECT_THAT(*people[t].begin(), ::testing::StartsWith("people/"));
    all.insert(*people[t].begin());
  }
  EXPECT_EQ(all.size(), tokens.size());
}

TEST_F(MessagingBinaryTest, RedisOutageLosesNothingAcknowledged) {
  auto before = Read(a_.get(), "", 1, [&] { ASSERT_TRUE(Send(a_.get(), platform_.therapist, "r-0", "before").ok()); });
  ASSERT_EQ(before.texts.size(), 1u);
  platform_.redis->Kill();
  // Sends still succeed: the message and its deliveries are in the database.
  for (int i = 1; i <= 3; ++i) {
    grpc::Status s = Send(i % 2 ? a_.get() : b_.get(), platform_.therapist, "r-" + std::to_string(i),
                          "during outage " + std::to_string(i));
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  // Presence needs Redis: it answers UNAVAILABLE within its deadline instead of hanging.
  mv1::HeartbeatRequest h;
  h.set_device_id("phone");
  h.set_status(cv1::PRESENCE_STATUS_ONLINE);
  mv1::HeartbeatResponse hr;
  grpc::Status down = CallWith(a_.get(), &M::Heartbeat, platform_.client, h, &hr);
  EXPECT_EQ(down.error_code(), grpc::StatusCode::UNAVAILABLE);
  // Operators see the deliveries waiting in the outbox (the replicas share it).
  auto unsent = [&] {
    return MetricValue(HttpGet(platform_.messaging[0]->metrics_port(), "/metrics"), "continuum_outbox_unsent_events");
  };
  EXPECT_TRUE(WaitUntil([&] { return unsent() >= 3; }, absl::Seconds(15))) << unsent();
  ASSERT_TRUE(platform_.redis->Restart().ok());
  // Once Redis is back the outbox relays the deliveries; the client catches up by cursor.
  Received after;
  ASSERT_TRUE(WaitUntil([&] {
    after = Read(b_.get(), before.cursor, 3);
    return after.texts.size() == 3;
  }, absl::Seconds(30)));
  EXPECT_THAT(after.texts, ::testing::ElementsAre("during outage 1", "during outage 2", "during outage 3"));
  EXPECT_TRUE(WaitUntil([&] { return unsent() == 0; }, absl::Seconds(15))) << unsent();
}

TEST_F(MessagingBinaryTest, CountsOpenLiveStreamsInMetrics) {
  auto live = [&] {
    return MetricValue(HttpGet(platform_.messaging[0]->metrics_port(), "/metrics"), "continuum_live_streams");
  };
  EXPECT_TRUE(WaitUntil([&] { return live() == 0; }, absl::Seconds(10))) << live();
  // The stream stays open inside Read until its message arrives: sent once the gauge shows it.
  auto got = Read(a_.get(), "", 1, [&] {
    EXPECT_TRUE(WaitUntil([&] { return live() == 1; }, absl::Seconds(10))) << live();
    ASSERT_TRUE(Send(a_.get(), platform_.therapist, "live-1", "counted").ok());
  });
  ASSERT_EQ(got.texts.size(), 1u);
  EXPECT_TRUE(WaitUntil([&] { return live() == 0; }, absl::Seconds(10))) << "the ended stream is still counted";
}

}  // namespace
}  // namespace continuum::testing
