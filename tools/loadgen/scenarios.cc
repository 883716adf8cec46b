#include "tools/loadgen/scenarios.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/db/database.h"
#include "common/status/macros.h"
#include "common/testing/echo.grpc.pb.h"
#include "common/testing/platform.h"
#include "common/time/proto_time.h"
#include "continuum/messaging/v1/messaging_service.grpc.pb.h"

namespace continuum::loadgen {
namespace {

namespace sv1 = ::continuum::scheduling::v1;
namespace rv1 = ::continuum::records::v1;
namespace mv1 = ::continuum::messaging::v1;
namespace cv1 = ::continuum::common::v1;
namespace tv1 = ::continuum::testing::v1;
using testing::TestToken;
using DoneFn = std::function<void(const grpc::Status&)>;

constexpr char kClinic[] = "clinics/kap";
constexpr char kSubscriberConversation[] = "clinics/kap/conversations/client-casey";

// Appointments made by the seed and the book scenario sit on 45-minute slots between 02:00 and
// 20:45 UTC (25 a day), inside the provider's 00-24 local availability in Europe/Berlin in
// winter and summer, so none crosses a local midnight or a DST change.
constexpr int kSlotsPerDay = 25;
absl::Time SlotStart(absl::Time day0, int64_t i) {
  return day0 + absl::Hours(24 * (i / kSlotsPerDay)) + absl::Hours(2) + absl::Minutes(45 * (i % kSlotsPerDay));
}
constexpr int kBookWindowDays = 1000;  // each book run's slots: 25,000 of them

// A unique prefix for request ids and message ids, so runs never replay each other.
std::string RunId() { return absl::StrCat("lg", getpid(), "-", absl::ToUnixMillis(absl::Now()) % 100000000); }

// Channels that do not share a connection: a distinct channel argument gives each its own
// subchannel (and the local pool keeps gRPC from reusing one across channels). Retries off:
// the generator never retries, and gRPC's retry filter keeps every call's send operations
// for a replay; without it the generator's CPU per echo call fell about a fifth at 16x100
// (19.5-28.7 us against 27.7-32.7 us, alternating runs on one echo server, session 12),
// CPU that the same two cores no longer take from the server under test.
absl::StatusOr<std::vector<std::shared_ptr<grpc::Channel>>> Connect(const std::string& address, int n) {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < n; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("continuum.loadgen.channel", i);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
    channels.push_back(grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  }
  for (auto& c : channels) {
    if (!c->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      return absl::UnavailableError(absl::StrCat("cannot connect to ", address));
    }
  }
  return channels;
}

template <typename Service>
std::vector<std::unique_ptr<typename Service::Stub>> Stubs(const std::vector<std::shared_ptr<grpc::Channel>>& ch) {
  std::vector<std::unique_ptr<typename Service::Stub>> stubs;
  for (const auto& c : ch) stubs.push_back(Service::NewStub(c));
  return stubs;
}

// One asynchronous unary call: its context, request and response live until it completes.
template <typename Req, typename Resp>
struct UnaryCall {
  grpc::ClientContext ctx;
  Req req;
  Resp resp;
};

// Starts `invoke(ctx, req, resp, callback)` (a stub's async() method) with a deadline and the
// authorization header (empty = none); `done` gets the status.
template <typename Resp, typename Req, typename Invoke>
void StartUnary(Req req, const std::string& authorization, absl::Duration deadline, Invoke invoke, DoneFn done) {
  auto* call = new UnaryCall<Req, Resp>();
  call->req = std::move(req);
  call->ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  if (!authorization.empty()) call->ctx.AddMetadata("authorization", authorization);
  invoke(&call->ctx, &call->req, &call->resp, [call, done = std::move(done)](grpc::Status s) {
    done(s);
    delete call;
  });
}

std::string Bearer(const std::string& token) { return "Bearer " + token; }

// ---- Unary scenarios ----------------------------------------------------------------------

class EchoWorkload : public ScenarioWorkload {
 public:
  EchoWorkload(const WorkloadConfig& c, std::vector<std::shared_ptr<grpc::Channel>> ch)
      : stubs_(Stubs<tv1::EchoService>(ch)), deadline_(c.deadline), message_(c.payload_bytes, 'x') {}
  int connections() const override { return static_cast<int>(stubs_.size()); }
  void Start(int conn, int64_t, int64_t, DoneFn done) override {
    tv1::EchoRequest req;
    req.set_message(message_);
    auto* stub = stubs_[conn].get();
    StartUnary<tv1::EchoResponse>(
        std::move(req), "", deadline_, [stub](auto... a) { stub->async()->Echo(a...); }, std::move(done));
  }

 private:
  std::vector<std::unique_ptr<tv1::EchoService::Stub>> stubs_;
  absl::Duration deadline_;
  std::string message_;
};

// The cheapest authenticated read: the provider reads their own appointment.
class GetAppointmentWorkload : public ScenarioWorkload {
 public:
  GetAppointmentWorkload(const WorkloadConfig& c, std::vector<std::shared_ptr<grpc::Channel>> ch, std::string name)
      : stubs_(Stubs<sv1::SchedulingService>(ch)),
        deadline_(c.deadline),
        name_(std::move(name)),
        auth_(Bearer(TestToken("people/ther", "therapist", {"kap"}))) {}
  int connections() const override { return static_cast<int>(stubs_.size()); }
  void Start(int conn, int64_t, int64_t, DoneFn done) override {
    sv1::GetAppointmentRequest req;
    req.set_name(name_);
    auto* stub = stubs_[conn].get();
    StartUnary<sv1::Appointment>(
        std::move(req), auth_, deadline_, [stub](auto... a) { stub->async()->GetAppointment(a...); }, std::move(done));
  }

 private:
  std::vector<std::unique_ptr<sv1::SchedulingService::Stub>> stubs_;
  absl::Duration deadline_;
  std::string name_, auth_;
};

// One week of the therapist's free slots, in the middle of the seeded bookings.
class SearchSlotsWorkload : public ScenarioWorkload {
 public:
  SearchSlotsWorkload(const WorkloadConfig& c, std::vector<std::shared_ptr<grpc::Channel>> ch, absl::Time from,
                      absl::Time to)
      : stubs_(Stubs<sv1::SchedulingService>(ch)),
        deadline_(c.deadline),
        auth_(Bearer(TestToken("people/boss", "admin", {"kap"}))) {
    req_.set_parent(kClinic);
    req_.set_kind(cv1::APPOINTMENT_KIND_PREPARATION);
    req_.set_provider("people/ther");
    *req_.mutable_range()->mutable_start_time() = ToProto(from);
    *req_.mutable_range()->mutable_end_time() = ToProto(to);
    req_.set_page_size(1000);
  }
  int connections() const override { return static_cast<int>(stubs_.size()); }
  void Start(int conn, int64_t, int64_t, DoneFn done) override {
    auto* stub = stubs_[conn].get();
    StartUnary<sv1::SearchSlotsResponse>(
        sv1::SearchSlotsRequest(req_), auth_, deadline_, [stub](auto... a) { stub->async()->SearchSlots(a...); },
        std::move(done));
  }

 private:
  std::vector<std::unique_ptr<sv1::SchedulingService::Stub>> stubs_;
  absl::Duration deadline_;
  std::string auth_;
  sv1::SearchSlotsRequest req_;
};

// Every call books a distinct free slot (call i -> slot i of this run's window), spread over
// the booking clients' programs, so each one succeeds.
class BookWorkload : public ScenarioWorkload {
 public:
  BookWorkload(const WorkloadConfig& c, std::vector<std::shared_ptr<grpc::Channel>> ch,
               std::vector<std::string> programs, absl::Time window_start)
      : stubs_(Stubs<sv1::SchedulingService>(ch)),
        deadline_(c.deadline),
        programs_(std::move(programs)),
        window_start_(window_start),
        auth_(Bearer(TestToken("people/boss", "admin", {"kap"}))),
        run_(RunId()) {}
  int connections() const override { return static_cast<int>(stubs_.size()); }
  void Start(int conn, int64_t seq, int64_t, DoneFn done) override {
    sv1::BookAppointmentRequest req;
    req.set_parent(kClinic);
    auto* a = req.mutable_appointment();
    a->set_kind(cv1::APPOINTMENT_KIND_PREPARATION);
    a->set_program(programs_[seq % programs_.size()]);
    a->set_provider("people/ther");
    absl::Time start = SlotStart(window_start_, seq);
    *a->mutable_start_time() = ToProto(start);
    *a->mutable_end_time() = ToProto(start + absl::Minutes(45));
    req.set_request_id(absl::StrCat(run_, "-", seq));
    auto* stub = stubs_[conn].get();
    StartUnary<sv1::BookAppointmentResponse>(
        std::move(req), auth_, deadline_, [stub](auto... a) { stub->async()->BookAppointment(a...); }, std::move(done));
  }
  void AddJson(JsonObject& out) const override { out.Int("programs", static_cast<int64_t>(programs_.size())); }

 private:
  std::vector<std::unique_ptr<sv1::SchedulingService::Stub>> stubs_;
  absl::Duration deadline_;
  std::vector<std::string> programs_;
  absl::Time window_start_;
  std::string auth_, run_;
};

// The cheapest durable write of session-record: AddTimelineEntry (one new record version, its
// audit entry and the idempotency row in one transaction), by a care-team therapist.
// Each record gets at most `entries_per_record` of the run's writes, the size of a long
// session's timeline (check-ins every 15 minutes over hours, observations, interventions): a
// write serializes the whole record (the response), so spreading a long run over a fixed set
// of records measured ever larger records, not a clinic's writes. Writes go round robin over a window of
// kWindow records (more than the calls in flight, so they rarely meet on one record); when the
// window has its entries, the next kWindow records take over. Past the seeded records it wraps
// (and records grow past the cap: the JSON says how far).
class RecordWriteWorkload : public ScenarioWorkload {
 public:
  static constexpr int64_t kWindow = 128;
  RecordWriteWorkload(const WorkloadConfig& c, std::vector<std::shared_ptr<grpc::Channel>> ch,
                      std::vector<std::string> records)
      : stubs_(Stubs<rv1::SessionRecordService>(ch)),
        deadline_(c.deadline),
        records_(std::move(records)),
        cap_(c.entries_per_record),
        offset_(c.record_offset),
        text_(std::max(1, c.payload_bytes), 'x'),
        auth_(Bearer(TestToken("people/ther", "therapist", {"kap"}))),
        run_(RunId()) {}
  int connections() const override { return static_cast<int>(stubs_.size()); }
  void Start(int conn, int64_t seq, int64_t, DoneFn done) override {
    for (int64_t seen = last_seq_.load(); seen < seq && !last_seq_.compare_exchange_weak(seen, seq);) {
    }
    rv1::AddTimelineEntryRequest req;
    req.set_name(records_[Index(seq) % records_.size()]);
    req.mutable_entry()->set_kind(rv1::TimelineEntry::KIND_OBSERVATION);
    req.mutable_entry()->set_text(text_);
    req.set_request_id(absl::StrCat(run_, "-", seq));
    auto* stub = stubs_[conn].get();
    StartUnary<rv1::SessionRecord>(
        std::move(req), auth_, deadline_, [stub](auto... a) { stub->async()->AddTimelineEntry(a...); },
        std::move(done));
  }
  void AddJson(JsonObject& out) const override {
    // What this run (warm-up included) did to the records, counted exactly.
    std::vector<int64_t> writes(records_.size());
    for (int64_t seq = 0; seq <= last_seq_.load(); ++seq) ++writes[Index(seq) % records_.size()];
    out.Int("records", static_cast<int64_t>(records_.size()));
    out.Int("record_offset", offset_);
    out.Int("entries_per_record_cap", cap_);
    out.Int("records_written", std::count_if(writes.begin(), writes.end(), [](int64_t n) { return n > 0; }));
    out.Int("entries_per_record_max", writes.empty() ? 0 : *std::max_element(writes.begin(), writes.end()));
  }

 private:
  int64_t Index(int64_t seq) const {
    if (cap_ <= 0) return offset_ + seq;
    return offset_ + seq / (kWindow * cap_) * kWindow + seq % kWindow;
  }
  std::vector<std::unique_ptr<rv1::SessionRecordService::Stub>> stubs_;
  absl::Duration deadline_;
  std::vector<std::string> records_;
  const int64_t cap_, offset_;
  std::string text_, auth_, run_;
  std::atomic<int64_t> last_seq_{-1};  // the highest call number started
};

// Presence heartbeats of 256 different people (one device each).
class HeartbeatWorkload : public ScenarioWorkload {
 public:
  HeartbeatWorkload(const WorkloadConfig& c, std::vector<std::shared_ptr<grpc::Channel>> ch)
      : stubs_(Stubs<mv1::MessagingService>(ch)), deadline_(c.deadline) {
    for (int i = 0; i < 256; ++i)
      auth_.push_back(Bearer(TestToken(absl::StrCat("people/hb", i), "therapist", {"kap"})));
  }
  int connections() const override { return static_cast<int>(stubs_.size()); }
  void Start(int conn, int64_t seq, int64_t, DoneFn done) override {
    mv1::HeartbeatRequest req;
    req.set_device_id("loadgen");
    req.set_status(cv1::PRESENCE_STATUS_ONLINE);
    auto* stub = stubs_[conn].get();
    StartUnary<mv1::HeartbeatResponse>(
        std::move(req), auth_[seq % auth_.size()], deadline_, [stub](auto... a) { stub->async()->Heartbeat(a...); },
        std::move(done));
  }

 private:
  std::vector<std::unique_ptr<mv1::MessagingService::Stub>> stubs_;
  absl::Duration deadline_;
  std::vector<std::string> auth_;
};

// The same heartbeats as messages on StreamHeartbeats streams: `streams_per_connection`
// streams per channel (256 people, one device each), each with one heartbeat in flight; a
// "call" is one heartbeat, from its write to its answer.
class HeartbeatStreamWorkload : public ScenarioWorkload {
 public:
  // One stream. Start() is called only on an idle stream (taken from the free list).
  class Stream : public grpc::ClientBidiReactor<mv1::StreamHeartbeatsRequest, mv1::StreamHeartbeatsResponse> {
   public:
    Stream(mv1::MessagingService::Stub* stub, const std::string& authorization, HeartbeatStreamWorkload* owner,
           int conn)
        : owner_(owner), conn_(conn) {
      ctx_.AddMetadata("authorization", authorization);
      req_.mutable_heartbeat()->set_device_id("loadgen-stream");
      req_.mutable_heartbeat()->set_status(cv1::PRESENCE_STATUS_ONLINE);
      stub->async()->StreamHeartbeats(&ctx_, this);
      StartCall();
    }
    void Beat(DoneFn done) {
      grpc::Status ended;
      bool open;
      {
        absl::MutexLock lock(&mu_);
        open = !ended_;
        if (open) {
          done_ = std::move(done);
          pending_ = 2;
        }
        ended = status_;
      }
      if (!open) {  // the stream had ended: not started
        done(ended);
        return;
      }
      StartRead(&resp_);
      StartWrite(&req_);
    }
    // A heartbeat is done when both its write and its read have completed (in either order):
    // only then may the stream take the next one.
    void OnWriteDone(bool ok) override { OpDone(ok); }
    void OnReadDone(bool ok) override { OpDone(ok); }
    void OpDone(bool ok) {
      DoneFn done;
      bool failed;
      {
        absl::MutexLock lock(&mu_);
        failed_ = failed_ || !ok;
        if (--pending_ > 0) return;
        done = std::move(done_);
        done_ = nullptr;
        failed = failed_;
        failed_ = false;
      }
      if (!failed) owner_->Release(conn_, this);
      if (done) done(failed ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "heartbeat stream ended") : grpc::Status::OK);
    }
    void OnDone(const grpc::Status& s) override {
      absl::MutexLock lock(&mu_);
      status_ = s.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "heartbeat stream ended") : s;
      ended_ = true;
    }
    void Close() { ctx_.TryCancel(); }
    void AwaitEnd() {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(&ended_));
    }

   private:
    HeartbeatStreamWorkload* owner_;
    const int conn_;
    grpc::ClientContext ctx_;
    mv1::StreamHeartbeatsRequest req_;
    mv1::StreamHeartbeatsResponse resp_;
    absl::Mutex mu_;
    DoneFn done_ ABSL_GUARDED_BY(mu_);
    int pending_ ABSL_GUARDED_BY(mu_) = 0;     // of the current heartbeat's write and read
    bool failed_ ABSL_GUARDED_BY(mu_) = false;
    bool ended_ ABSL_GUARDED_BY(mu_) = false;
    grpc::Status status_ ABSL_GUARDED_BY(mu_);
  };

  HeartbeatStreamWorkload(const WorkloadConfig& c, std::vector<std::shared_ptr<grpc::Channel>> ch)
      : stubs_(Stubs<mv1::MessagingService>(ch)), free_(stubs_.size()) {
    int person = 0;
    for (size_t conn = 0; conn < stubs_.size(); ++conn) {
      for (int i = 0; i < c.streams_per_connection; ++i, ++person) {
        streams_.push_back(std::make_unique<Stream>(
            stubs_[conn].get(), Bearer(TestToken(absl::StrCat("people/hb", person % 256), "therapist", {"kap"})),
            this, static_cast<int>(conn)));
        free_[conn].push_back(streams_.back().get());
      }
    }
  }
  ~HeartbeatStreamWorkload() override {
    for (auto& s : streams_) s->Close();
    for (auto& s : streams_) s->AwaitEnd();
  }
  int connections() const override { return static_cast<int>(stubs_.size()); }
  void Start(int conn, int64_t, int64_t, DoneFn done) override {
    Stream* stream = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (!free_[conn].empty()) {
        stream = free_[conn].back();
        free_[conn].pop_back();
      }
    }
    if (!stream) {  // more in flight than streams (open loop): refuse rather than queue
      done(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "every heartbeat stream is busy"));
      return;
    }
    stream->Beat(std::move(done));
  }
  void Release(int conn, Stream* stream) {
    absl::MutexLock lock(&mu_);
    free_[conn].push_back(stream);
  }

 private:
  std::vector<std::unique_ptr<mv1::MessagingService::Stub>> stubs_;
  absl::Mutex mu_;
  std::vector<std::vector<Stream*>> free_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Stream>> streams_;
};

// ---- Live delivery --------------------------------------------------------------------------

// One Subscribe stream, read with the callback API (no thread per stream here either).
class Reader : public grpc::ClientReadReactor<mv1::Delivery> {
 public:
  Reader(mv1::MessagingService::Stub* stub, const std::string& token, std::atomic<int>* live,
         std::function<void(const mv1::Delivery&)> on_item = nullptr)
      : live_(live), on_item_(std::move(on_item)) {
    ctx_.AddMetadata("authorization", Bearer(token));
    stub->async()->Subscribe(&ctx_, &req_, this);
    StartRead(&d_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    if (d_.has_replay_complete()) live_->fetch_add(1);
    if (on_item_) on_item_(d_);
    StartRead(&d_);
  }
  void OnDone(const grpc::Status& s) override {
    absl::MutexLock lock(&mu_);
    status_ = s;
    done_ = true;
  }
  void Cancel() { ctx_.TryCancel(); }
  grpc::Status AwaitDone() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
    return status_;
  }

 private:
  grpc::ClientContext ctx_;
  mv1::SubscribeRequest req_;
  mv1::Delivery d_;
  std::atomic<int>* live_;
  std::function<void(const mv1::Delivery&)> on_item_;
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

// The therapist sends messages in clients' conversations (round robin); each client's live
// stream receives those of its conversation. Each message carries its intended send time, so the
// delivery latency includes any queueing before the send as well as the send itself and the
// fan-out.
class DeliverWorkload : public ScenarioWorkload {
 public:
  DeliverWorkload(const WorkloadConfig& c, std::vector<std::shared_ptr<grpc::Channel>> ch,
                  std::vector<std::string> conversations)
      : stubs_(Stubs<mv1::MessagingService>(ch)),
        deadline_(c.deadline),
        conversations_(std::move(conversations)),
        auth_(Bearer(TestToken("people/ther", "therapist", {"kap"}))),
        run_(RunId()),
        marker_(absl::StrCat("/messages/", run_, "-")) {}
  ~DeliverWorkload() override {
    for (auto& r : readers_) r->Cancel();
    for (auto& r : readers_) r->AwaitDone();
  }

  // Opens each conversation's client stream, each on a connection of its own (as the clients'
  // phones would), and waits until all are live.
  absl::Status Subscribe(const std::string& address) {
    ASSIGN_OR_RETURN(auto ch, Connect(address, static_cast<int>(conversations_.size())));
    for (size_t i = 0; i < conversations_.size(); ++i) {
      // "clinics/kap/conversations/client-<person>" is the conversation of client <person>.
      const std::string person = conversations_[i].substr(conversations_[i].rfind("/client-") + 8);
      sub_stubs_.push_back(mv1::MessagingService::NewStub(ch[i]));
      readers_.push_back(std::make_unique<Reader>(sub_stubs_.back().get(),
                                                  TestToken("people/" + person, "client", {"kap"}), &live_,
                                                  [this](const mv1::Delivery& d) { OnDelivery(d); }));
    }
    absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (live_.load() < static_cast<int>(readers_.size())) {
      if (absl::Now() > deadline) return absl::UnavailableError("the Subscribe streams did not go live in 20 s");
      absl::SleepFor(absl::Milliseconds(5));
    }
    return absl::OkStatus();
  }

  int connections() const override { return static_cast<int>(stubs_.size()); }
  void Start(int conn, int64_t seq, int64_t intended, DoneFn done) override {
    mv1::SendMessageRequest req;
    req.set_parent(conversations_[seq % conversations_.size()]);
    req.set_message_id(absl::StrCat(run_, "-", seq));
    req.mutable_message()->set_text(absl::StrCat(intended));
    auto* stub = stubs_[conn].get();
    StartUnary<mv1::Message>(
        std::move(req), auth_, deadline_, [stub](auto... a) { stub->async()->SendMessage(a...); },
        [this, intended, done = std::move(done)](const grpc::Status& s) {
          if (s.ok()) {
            absl::MutexLock lock(&mu_);
            sent_.push_back(intended);
          }
          done(s);
        });
  }

  // Waits (up to 15 s) for every message sent successfully in the window to arrive.
  void RunEnded(int64_t window_start, int64_t window_end) override {
    auto in_window = [&](int64_t t) { return t >= window_start && t < window_end; };
    int64_t expected = 0;
    {
      absl::MutexLock lock(&mu_);
      for (int64_t t : sent_) expected += in_window(t);
    }
    absl::Time deadline = absl::Now() + absl::Seconds(15);
    int64_t got = 0;
    while (true) {
      got = 0;
      {
        absl::MutexLock lock(&mu_);
        for (const auto& [intended, latency] : delivered_) got += in_window(intended);
      }
      if (got >= expected || absl::Now() > deadline) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
    absl::MutexLock lock(&mu_);
    for (const auto& [intended, latency] : delivered_) {
      if (in_window(intended)) delivery_.Record(latency);
    }
    expected_ = expected;
  }

  void AddJson(JsonObject& out) const override {
    absl::MutexLock lock(&mu_);
    out.Int("conversations", static_cast<int64_t>(conversations_.size()));
    JsonObject d;
    d.Int("expected", expected_)
        .Int("delivered", delivery_.count())
        .Num("p50", delivery_.Quantile(0.5) / 1e6)
        .Num("p90", delivery_.Quantile(0.9) / 1e6)
        .Num("p99", delivery_.Quantile(0.99) / 1e6)
        .Num("p999", delivery_.Quantile(0.999) / 1e6)
        .Num("max", delivery_.max() / 1e6);
    out.Object("delivery_ms", d);
  }

 private:
  void OnDelivery(const mv1::Delivery& d) {
    const int64_t now = NowNs();
    if (!d.has_message() || d.message().name().find(marker_) == std::string::npos) return;
    int64_t intended = 0;
    if (!absl::SimpleAtoi(d.message().text(), &intended)) return;
    absl::MutexLock lock(&mu_);
    if (seen_.insert(d.message().name()).second) delivered_.emplace_back(intended, now - intended);  // at least once
  }

  std::vector<std::unique_ptr<mv1::MessagingService::Stub>> stubs_;
  absl::Duration deadline_;
  std::vector<std::string> conversations_;
  std::string auth_, run_, marker_;
  std::vector<std::unique_ptr<mv1::MessagingService::Stub>> sub_stubs_;
  std::atomic<int> live_{0};
  std::vector<std::unique_ptr<Reader>> readers_;
  mutable absl::Mutex mu_;
  std::vector<int64_t> sent_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<int64_t, int64_t>> delivered_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> seen_ ABSL_GUARDED_BY(mu_);
  Histogram delivery_;
  int64_t expected_ = 0;
};

std::vector<std::string> SplitList(const std::string& s) { return absl::StrSplit(s, ',', absl::SkipEmpty()); }

absl::StatusOr<absl::Time> TimeOf(const State& state, const std::string& key) {
  ASSIGN_OR_RETURN(std::string v, state.Get(key));
  int64_t seconds = 0;
  if (!absl::SimpleAtoi(v, &seconds)) return absl::InvalidArgumentError(absl::StrCat(key, " is not a unix time"));
  return absl::FromUnixSeconds(seconds);
}

// "VmRSS" (KiB) or "Threads" of a process; -1 if unreadable.
int64_t ProcField(pid_t pid, const std::string& field) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) != 0) continue;
    std::vector<std::string> parts =
        absl::StrSplit(line.substr(field.size() + 1), absl::ByAnyChar(" \t"), absl::SkipEmpty());
    int64_t v = 0;
    if (!parts.empty() && absl::SimpleAtoi(parts[0], &v)) return v;
  }
  return -1;
}

}  // namespace

// ---- State ----------------------------------------------------------------------------------

absl::StatusOr<State> State::Read(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path, " (run --scenario=setup first)"));
  State s;
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq != std::string::npos) s.values_[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return s;
}

absl::Status State::Write(const std::string& path) const {
  std::ofstream out(path);
  for (const auto& [k, v] : values_) out << k << "=" << v << "\n";
  out.close();
  if (!out) return absl::UnavailableError("cannot write " + path);
  return absl::OkStatus();
}

absl::StatusOr<std::string> State::Get(const std::string& key) const {
  auto it = values_.find(key);
  if (it == values_.end()) return absl::NotFoundError(absl::StrCat("no '", key, "' in the setup state"));
  return it->second;
}

// ---- Seed -----------------------------------------------------------------------------------

absl::StatusOr<State> Seed(const SeedConfig& config) {
  using S = sv1::SchedulingService::Stub;
  using testing::CallWith;
  testing::Platform platform;  // only its tokens, stubs and SeedMedicineSession: it starts nothing here
  ASSIGN_OR_RETURN(auto sched_ch, Connect(config.scheduling, 1));
  platform.sched = sv1::SchedulingService::NewStub(sched_ch[0]);
  State state;
  auto check = [](const grpc::Status& s, const std::string& what) -> absl::Status {
    if (s.ok()) return absl::OkStatus();
    return absl::InternalError(absl::StrCat(what, ": ", s.error_message(), " (", testing::ReasonOf(s), ")"));
  };

  // Clinic kap, its people, the client's care team and program, and one medicine session:
  // the shared seed, so the load runs on the same data as the integration tests.
  const std::string appointment = platform.SeedMedicineSession();
  if (appointment.empty()) {
    return absl::InternalError(
        "SeedMedicineSession failed (see the messages above); setup needs services on freshly created databases");
  }
  state.Set("appointment", appointment);

  // Booking clients, each with the therapist on their care team and an ACTIVE program.
  const std::string run = RunId();
  std::vector<std::string> programs;
  for (int i = 0; i < config.booking_clients; ++i) {
    const std::string id = absl::StrCat("bc", i);
    RETURN_IF_ERROR(check(platform.AddPerson(id, cv1::ROLE_CLIENT, absl::StrCat(run, "-person-", i)), "person"));
    RETURN_IF_ERROR(check(platform.SetCareTeam(id, {"ther"}, absl::StrCat(run, "-team-", i)), "care team"));
    std::string program;
    RETURN_IF_ERROR(check(platform.AddProgram(id, absl::StrCat(run, "-program-", i), &program), "program"));
    programs.push_back(program);
  }
  state.Set("book_programs", absl::StrJoin(programs, ","));

  // Days from a week ahead (UTC midnight): [0, 14) 8 bookings a day for the slot search,
  // [30, 143) the session records' appointments (25 a day), [200, ...) the book runs' windows.
  const absl::Time day0 = absl::FromUnixSeconds((absl::ToUnixSeconds(absl::Now()) / 86400 + 7) * 86400);
  auto book = [&](int64_t slot, absl::Time base, const std::string& rid) -> absl::StatusOr<std::string> {
    sv1::BookAppointmentRequest b;
    b.set_parent(kClinic);
    b.mutable_appointment()->set_kind(cv1::APPOINTMENT_KIND_PREPARATION);
    b.mutable_appointment()->set_program(programs[slot % programs.size()]);
    b.mutable_appointment()->set_provider("people/ther");
    absl::Time start = SlotStart(base, slot);
    *b.mutable_appointment()->mutable_start_time() = ToProto(start);
    *b.mutable_appointment()->mutable_end_time() = ToProto(start + absl::Minutes(45));
    b.set_request_id(rid);
    sv1::BookAppointmentResponse out;
    RETURN_IF_ERROR(check(CallWith(platform.sched.get(), &S::BookAppointment, platform.admin, b, &out), "book"));
    return out.appointment().name();
  };
  for (int d = 0; d < 14; ++d) {
    for (int h = 0; h < 8; ++h) {
      // Every third slot of the day, so free slots remain between the bookings.
      RETURN_IF_ERROR(book(d * kSlotsPerDay + 3 * h, day0, absl::StrCat(run, "-hist-", d, "-", h)).status());
    }
  }
  state.Set("search_start", absl::StrCat(absl::ToUnixSeconds(day0 + absl::Hours(24 * 3))));
  state.Set("search_end", absl::StrCat(absl::ToUnixSeconds(day0 + absl::Hours(24 * 10))));
  state.Set("book_base", absl::StrCat(absl::ToUnixSeconds(day0 + absl::Hours(24 * 200))));

  // Session records (DRAFT) on their own appointments, for the record writes.
  ASSIGN_OR_RETURN(auto rec_ch, Connect(config.records, 1));
  auto rec = rv1::SessionRecordService::NewStub(rec_ch[0]);
  std::vector<std::string> records;
  for (int i = 0; i < config.record_count; ++i) {
    ASSIGN_OR_RETURN(std::string appt, book(i, day0 + absl::Hours(24 * 30), absl::StrCat(run, "-rec-", i)));
    rv1::CreateSessionRecordRequest c;
    c.set_parent(kClinic);
    c.mutable_session_record()->set_appointment(appt);
    c.set_request_id(absl::StrCat(run, "-record-", i));
    rv1::SessionRecord out;
    RETURN_IF_ERROR(
        check(CallWith(rec.get(), &rv1::SessionRecordService::Stub::CreateSessionRecord, platform.therapist, c, &out),
              "session record"));
    records.push_back(out.name());
  }
  state.Set("records", absl::StrJoin(records, ","));

  // The client's conversation exists once someone writes in it.
  ASSIGN_OR_RETURN(auto msg_ch, Connect(config.messaging, 1));
  auto msg = mv1::MessagingService::NewStub(msg_ch[0]);
  mv1::SendMessageRequest hello;
  hello.set_parent(kSubscriberConversation);
  hello.set_message_id(absl::StrCat(run, "-hello"));
  hello.mutable_message()->set_text("hello");
  mv1::Message sent;
  RETURN_IF_ERROR(check(
      CallWith(msg.get(), &mv1::MessagingService::Stub::SendMessage, platform.therapist, hello, &sent), "message"));
  state.Set("conversation", kSubscriberConversation);
  std::vector<std::string> conversations;
  for (int i = 0; i < std::min(config.booking_clients, 64); ++i) {
    mv1::SendMessageRequest m;
    m.set_parent(absl::StrCat(kClinic, "/conversations/client-bc", i));
    m.set_message_id(absl::StrCat(run, "-hello-", i));
    m.mutable_message()->set_text("hello");
    RETURN_IF_ERROR(
        check(CallWith(msg.get(), &mv1::MessagingService::Stub::SendMessage, platform.therapist, m, &sent), "message"));
    conversations.push_back(m.parent());
  }
  state.Set("client_conversations", absl::StrJoin(conversations, ","));
  return state;
}

// ---- Factories and the non-unary runs ------------------------------------------------------

absl::StatusOr<std::unique_ptr<ScenarioWorkload>> MakeWorkload(const std::string& scenario, const WorkloadConfig& c,
                                                               const State& state) {
  ASSIGN_OR_RETURN(auto ch, Connect(c.address, c.connections));
  if (scenario == "echo") return std::make_unique<EchoWorkload>(c, ch);
  if (scenario == "get-appointment") {
    ASSIGN_OR_RETURN(std::string name, state.Get("appointment"));
    return std::make_unique<GetAppointmentWorkload>(c, ch, name);
  }
  if (scenario == "search-slots") {
    ASSIGN_OR_RETURN(absl::Time from, TimeOf(state, "search_start"));
    ASSIGN_OR_RETURN(absl::Time to, TimeOf(state, "search_end"));
    return std::make_unique<SearchSlotsWorkload>(c, ch, from, to);
  }
  if (scenario == "book") {
    ASSIGN_OR_RETURN(std::string programs, state.Get("book_programs"));
    ASSIGN_OR_RETURN(absl::Time base, TimeOf(state, "book_base"));
    return std::make_unique<BookWorkload>(c, ch, SplitList(programs),
                                          base + absl::Hours(24 * kBookWindowDays) * c.book_window);
  }
  if (scenario == "record-write") {
    ASSIGN_OR_RETURN(std::string records, state.Get("records"));
    return std::make_unique<RecordWriteWorkload>(c, ch, SplitList(records));
  }
  if (scenario == "heartbeat") return std::make_unique<HeartbeatWorkload>(c, ch);
  if (scenario == "heartbeat-stream") return std::make_unique<HeartbeatStreamWorkload>(c, ch);
  if (scenario == "deliver") {
    std::vector<std::string> conversations;
    if (c.conversations <= 1) {
      ASSIGN_OR_RETURN(std::string conversation, state.Get("conversation"));
      conversations.push_back(conversation);
    } else {
      ASSIGN_OR_RETURN(std::string all, state.Get("client_conversations"));
      conversations = SplitList(all);
      if (static_cast<int>(conversations.size()) < c.conversations) {
        return absl::InvalidArgumentError(absl::StrCat("setup made ", conversations.size(), " client conversations"));
      }
      conversations.resize(c.conversations);
    }
    auto w = std::make_unique<DeliverWorkload>(c, ch, conversations);
    RETURN_IF_ERROR(w->Subscribe(c.address));
    return w;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown scenario '", scenario, "'"));
}

absl::StatusOr<JsonObject> RunStreams(const std::string& address, int streams, int connections, pid_t server_pid) {
  ASSIGN_OR_RETURN(auto ch, Connect(address, connections));
  auto stubs = Stubs<mv1::MessagingService>(ch);
  const int64_t rss0 = ProcField(server_pid, "VmRSS"), threads0 = ProcField(server_pid, "Threads");
  std::atomic<int> live{0};
  std::vector<std::unique_ptr<Reader>> readers;
  const absl::Time t0 = absl::Now();
  for (int i = 0; i < streams; ++i) {
    readers.push_back(std::make_unique<Reader>(stubs[i % stubs.size()].get(),
                                               TestToken(absl::StrCat("people/stream", i), "client", {"kap"}), &live));
  }
  while (live.load() < streams && absl::Now() - t0 < absl::Seconds(120)) absl::SleepFor(absl::Milliseconds(20));
  const double to_live = absl::ToDoubleSeconds(absl::Now() - t0);
  absl::SleepFor(absl::Seconds(1));  // let the server's allocations settle before reading RSS
  const int64_t rss1 = ProcField(server_pid, "VmRSS"), threads1 = ProcField(server_pid, "Threads");
  for (auto& r : readers) r->Cancel();
  int64_t ended_ok = 0;
  for (auto& r : readers) ended_ok += r->AwaitDone().error_code() == grpc::StatusCode::CANCELLED;
  JsonObject out;
  out.Int("streams", streams)
      .Int("live", live.load())
      .Num("seconds_to_live", to_live)
      .Int("rss_before_kib", rss0)
      .Int("rss_after_kib", rss1)
      .Num("kib_per_stream", streams > 0 ? static_cast<double>(rss1 - rss0) / streams : 0.0)
      .Int("threads_before", threads0)
      .Int("threads_after", threads1)
      .Int("cancelled_cleanly", ended_ok);
  return out;
}

absl::StatusOr<LoadResult> RunBareInsert(const std::string& database_url, int threads, int payload_bytes,
                                         absl::Duration warmup, absl::Duration duration) {
  ASSIGN_OR_RETURN(auto db, db::Open({.url = database_url, .pool_size = std::max(4, threads)}));
  RETURN_IF_ERROR(
      db->Exec("CREATE TABLE IF NOT EXISTS loadgen_bare (id TEXT PRIMARY KEY, data TEXT NOT NULL)").status());
  const std::string payload(std::max(1, payload_bytes), 'x');
  const std::string run = RunId();
  LoadResult result;
  std::atomic<int64_t> seq{0}, ok{0}, started{0};
  absl::Mutex mu;
  std::map<grpc::StatusCode, int64_t> errors;
  const int64_t window_start = NowNs() + absl::ToInt64Nanoseconds(warmup);
  const int64_t window_end = window_start + absl::ToInt64Nanoseconds(duration);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      for (int64_t start = NowNs(); start < window_end; start = NowNs()) {
        absl::Status s =
            db->Exec("INSERT INTO loadgen_bare (id, data) VALUES ($1, $2)", {absl::StrCat(run, "-", seq++), payload})
                .status();
        const int64_t end = NowNs();
        if (start < window_start) continue;
        started++;
        if (s.ok()) {
          ok++;
          result.latency->Record(end - start);
        } else {
          absl::MutexLock lock(&mu);
          errors[static_cast<grpc::StatusCode>(s.code())]++;  // absl and gRPC codes coincide
        }
      }
    });
  }
  for (auto& w : workers) w.join();
  result.seconds = absl::ToDoubleSeconds(duration);
  result.started = started.load();
  result.ok = ok.load();
  result.qps = result.ok / result.seconds;
  result.errors = errors;
  return result;
}

}  // namespace continuum::loadgen
