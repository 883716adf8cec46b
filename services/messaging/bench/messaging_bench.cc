// Messaging benchmark (run on purpose, not a test): real binaries on loopback.
//   continuum-messaging-bench [--streams=10000] [--seconds=5] [--rates=100,1000] [--heartbeat-threads=4]
// Starts redis-server, scheduling and one messaging replica (SQLite), then measures:
//   * open streams: `streams` concurrent Subscribe calls (distinct people) on the replica;
//     its RSS and thread count before and after, so memory per stream and "no thread per
//     stream" are visible;
//   * send -> live delivery latency (p50/p99) at fixed send rates (open loop);
//   * presence heartbeats/s next to redis-benchmark ZADD against the same redis-server.
#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/config/config_source.h"
#include "common/testing/platform.h"
#include "continuum/messaging/v1/messaging_service.grpc.pb.h"

namespace continuum::testing {
namespace {

namespace mv1 = ::continuum::messaging::v1;

// "VmRSS" (KiB) or "Threads" of a process.
int64_t ProcField(pid_t pid, const std::string& field) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      std::vector<std::string> parts =
          absl::StrSplit(line.substr(field.size() + 1), absl::ByAnyChar(" \t"), absl::SkipEmpty());
      int64_t v = 0;
      if (!parts.empty() && absl::SimpleAtoi(parts[0], &v)) return v;
    }
  }
  return -1;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

// One Subscribe stream read with the callback API (no thread per stream on this side either).
class Reader : public grpc::ClientReadReactor<mv1::Delivery> {
 public:
  Reader(mv1::MessagingService::Stub* stub, const std::string& token, std::atomic<int>* ready,
         std::function<void(const mv1::Delivery&)> on_item = nullptr)
      : ready_(ready), on_item_(std::move(on_item)) {
    ctx_.AddMetadata("authorization", "Bearer " + token);
    stub->async()->Subscribe(&ctx_, &req_, this);
    StartRead(&d_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (d_.has_replay_complete()) ready_->fetch_add(1);
    if (on_item_) on_item_(d_);
    StartRead(&d_);
  }
  void OnDone(const grpc::Status&) override {
    absl::MutexLock lock(&mu_);
    done_ = true;
  }
  void Cancel() { ctx_.TryCancel(); }
  void AwaitDone() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
  }

 private:
  grpc::ClientContext ctx_;
  mv1::SubscribeRequest req_;
  mv1::Delivery d_;
  std::atomic<int>* ready_;
  std::function<void(const mv1::Delivery&)> on_item_;
  absl::Mutex mu_;
  bool done_ = false;
};

int Run(int streams, double seconds, std::vector<int> rates, int hb_threads) {
  Platform platform;
  platform.Start(false);
  if (platform.SeedMedicineSession().empty()) return 1;
  std::string address = platform.StartMessaging();
  if (address.empty()) return 1;
  pid_t pid = platform.messaging[0]->process().pid();
  std::vector<std::unique_ptr<mv1::MessagingService::Stub>> stubs;
  for (int i = 0; i < 8; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("continuum.bench.channel", i);  // distinct channels, distinct connections
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    stubs.push_back(mv1::MessagingService::NewStub(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args)));
  }

  // ---- open streams
  int64_t rss0 = ProcField(pid, "VmRSS"), threads0 = ProcField(pid, "Threads");
  std::atomic<int> ready{0};
  std::vector<std::unique_ptr<Reader>> readers;
  absl::Time t0 = absl::Now();
  for (int i = 0; i < streams; ++i) {
    readers.push_back(std::make_unique<Reader>(stubs[i % stubs.size()].get(),
                                               TestToken(absl::StrCat("people/bench", i), "client", {"kap"}), &ready));
  }
  while (ready.load() < streams && absl::Now() - t0 < absl::Seconds(120)) absl::SleepFor(absl::Milliseconds(50));
  absl::SleepFor(absl::Seconds(1));  // let allocations settle before reading RSS
  int64_t rss1 = ProcField(pid, "VmRSS"), threads1 = ProcField(pid, "Threads");
  std::printf("open streams: %d of %d live in %.1f s; server RSS %lld -> %lld KiB (%.1f KiB per stream); "
              "server threads %lld -> %lld\n",
              ready.load(), streams, absl::ToDoubleSeconds(absl::Now() - t0), static_cast<long long>(rss0),
              static_cast<long long>(rss1), streams ? static_cast<double>(rss1 - rss0) / streams : 0.0,
              static_cast<long long>(threads0), static_cast<long long>(threads1));
  for (auto& r : readers) r->Cancel();
  for (auto& r : readers) r->AwaitDone();
  readers.clear();

  // ---- send -> live delivery latency at fixed rates (client subscribed, therapist sending)
  for (int rate : rates) {
    absl::Mutex mu;
    std::vector<double> latencies;
    std::atomic<int> live{0};
    Reader reader(stubs[0].get(), platform.client, &live, [&](const mv1::Delivery& d) {
      // Only this run's messages (a new stream replays the earlier runs' first).
      if (!d.has_message() || d.message().name().find(absl::StrCat("/messages/r", rate, "-")) == std::string::npos) return;
      int64_t sent_ns = 0;
      if (!absl::SimpleAtoi(d.message().text(), &sent_ns)) return;
      absl::MutexLock lock(&mu);
      latencies.push_back(absl::ToDoubleMilliseconds(absl::Now() - absl::FromUnixNanos(sent_ns)));
    });
    while (live.load() == 0) absl::SleepFor(absl::Milliseconds(10));
    int total = static_cast<int>(rate * seconds);
    std::atomic<int> errors{0};
    std::atomic<int> next{0};
    absl::Time start = absl::Now();
    std::vector<std::thread> senders;
    for (int t = 0; t < 16; ++t) {
      senders.emplace_back([&, t] {
        for (int i = next++; i < total; i = next++) {
          absl::Time due = start + absl::Seconds(static_cast<double>(i) / rate);  // open loop
          if (absl::Now() < due) absl::SleepFor(due - absl::Now());
          mv1::SendMessageRequest r;
          r.set_parent("clinics/kap/conversations/client-casey");
          r.set_message_id(absl::StrCat("r", rate, "-", i));
          r.mutable_message()->set_text(absl::StrCat(absl::ToUnixNanos(absl::Now())));
          mv1::Message out;
          if (!CallWith(stubs[1 + t % 7].get(), &mv1::MessagingService::Stub::SendMessage, platform.therapist, r, &out).ok()) {
            errors++;
          }
        }
      });
    }
    for (auto& s : senders) s.join();
    absl::Time wait_until = absl::Now() + absl::Seconds(10);
    while (absl::Now() < wait_until) {
      {
        absl::MutexLock lock(&mu);
        if (latencies.size() >= static_cast<size_t>(total - errors.load())) break;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    absl::MutexLock lock(&mu);
    double achieved = total / absl::ToDoubleSeconds(absl::Now() - start);
    std::printf("send -> live delivery at %d msg/s (achieved %.0f/s): delivered %zu of %d (%d send errors), "
                "p50 %.2f ms, p99 %.2f ms\n",
                rate, achieved, latencies.size(), total, errors.load(), Percentile(latencies, 0.5),
                Percentile(latencies, 0.99));
    reader.Cancel();
    reader.AwaitDone();
  }

  // ---- heartbeats vs redis-benchmark ZADD (same redis-server, same run)
  std::atomic<int64_t> beats{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  absl::Time hb_start = absl::Now();
  for (int t = 0; t < hb_threads; ++t) {
    workers.emplace_back([&, t] {
      std::string token = TestToken(absl::StrCat("people/hb", t), "therapist", {"kap"});
      mv1::HeartbeatRequest h;
      h.set_device_id("phone");
      h.set_status(common::v1::PRESENCE_STATUS_ONLINE);
      while (!stop.load()) {
        mv1::HeartbeatResponse out;
        if (CallWith(stubs[t % stubs.size()].get(), &mv1::MessagingService::Stub::Heartbeat, token, h, &out).ok()) beats++;
      }
    });
  }
  absl::SleepFor(absl::Seconds(seconds));
  stop = true;
  for (auto& w : workers) w.join();
  double hb_rate = beats.load() / absl::ToDoubleSeconds(absl::Now() - hb_start);
  std::string out_file = platform.dir.File("redis-benchmark.txt");
  auto p = Process::Start({"redis-benchmark", "-p", absl::StrCat(platform.redis->port()), "-t", "zadd", "-n", "100000",
                           "-c", absl::StrCat(hb_threads), "-q"},
                          {}, out_file);
  double zadd = 0;
  if (p.ok() && (*p)->Wait(absl::Seconds(120)).ok()) {
    std::ifstream in(out_file);
    std::string line;
    while (std::getline(in, line)) {
      auto pos = line.rfind("ZADD: ");  // after the \r-separated progress updates
      if (pos != std::string::npos) absl::SimpleAtod(line.substr(pos + 6, line.find(' ', pos + 6) - pos - 6), &zadd);
    }
  }
  std::printf("presence heartbeats: %.0f/s with %d callers | redis-benchmark ZADD: %.0f/s (-c %d) | ratio %.2fx\n",
              hb_rate, hb_threads, zadd, hb_threads, zadd > 0 ? hb_rate / zadd : 0.0);
  return 0;
}

}  // namespace
}  // namespace continuum::testing

int main(int argc, char** argv) {
  using namespace continuum;
  ConfigSource c = ConfigSource::FromMain(argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  int streams = static_cast<int>(c.Int("streams", 10000, "concurrent Subscribe streams", 0, 100000));
  double seconds = static_cast<double>(c.Int("seconds", 5, "seconds per rate / heartbeat run", 1, 600));
  std::string rates_flag = c.String("rates", "100,1000", "send rates (msg/s) for the latency runs");
  int hb_threads = static_cast<int>(c.Int("heartbeat-threads", 4, "concurrent heartbeat callers", 1, 256));
  if (auto s = c.Finish(); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 2;
  }
  std::vector<int> rates;
  for (absl::string_view r : absl::StrSplit(rates_flag, ',', absl::SkipEmpty())) {
    int v = 0;
    if (absl::SimpleAtoi(r, &v) && v > 0) rates.push_back(v);
  }
  if (!std::getenv("CONTINUUM_BIN_DIR")) {
    std::fprintf(stderr, "run from the build tree: CONTINUUM_BIN_DIR defaults to this binary's directory\n");
  }
  return continuum::testing::Run(streams, seconds, rates, hb_threads);
}
