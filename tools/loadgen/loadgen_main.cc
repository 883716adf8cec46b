// continuum-loadgen: a gRPC load generator for Continuum (callback client API).
//
//   continuum-loadgen --scenario=setup --scheduling=H:P --records=H:P --messaging=H:P --state=FILE
//       seeds a running platform once and writes the names the scenarios use to FILE.
//   continuum-loadgen --scenario=S --target=H:P --state=FILE [--mode=closed --connections=4 --inflight=32]
//                     [--mode=open --rate=5000] [--warmup=1s --duration=5s] [--label=sqlite] [--out=F]
//       S: echo | get-appointment | search-slots | book | record-write | heartbeat | heartbeat-stream | deliver
//   continuum-loadgen --scenario=streams --target=H:P --streams=10000 --server-pid=PID
//   continuum-loadgen --scenario=bare-insert --database-url=URL --threads=4
//
// Prints one JSON object per run on stdout (and appends it to --out), a summary on stderr.
// Options are flags or CONTINUUM_LOADGEN_* environment variables (--help lists them).
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/config/config_source.h"
#include "tools/loadgen/scenarios.h"

extern char** environ;

namespace continuum::loadgen {
namespace {

struct Flags {
  std::string scenario, target, state, label, out, mode;
  std::string scheduling, records, messaging, database_url;
  int connections = 4, inflight = 32, threads = 4, pacing_threads = 2, conversations = 16, streams = 10000,
      server_pid = 0, payload = 16, book_window = 0, entries_per_record = 40, record_offset = 0;
  double rate = 1000;
  absl::Duration warmup, duration, deadline, pacing_tick;
};

JsonObject LatencyJson(const Histogram& h) {
  JsonObject l;
  l.Num("p50", h.Quantile(0.5) / 1e6)
      .Num("p90", h.Quantile(0.9) / 1e6)
      .Num("p99", h.Quantile(0.99) / 1e6)
      .Num("p999", h.Quantile(0.999) / 1e6)
      .Num("max", h.max() / 1e6)
      .Num("mean", h.mean() / 1e6);
  return l;
}

// The fields every load run reports, in the same shape for every scenario.
JsonObject ResultJson(const Flags& f, const std::string& mode, const LoadResult& r) {
  JsonObject errors;
  for (const auto& [code, n] : r.errors) errors.Int(StatusCodeName(code), n);
  JsonObject j;
  j.Str("scenario", f.scenario).Str("label", f.label).Str("mode", mode);
  if (f.scenario == "bare-insert") {
    j.Int("threads", f.threads);
  } else {
    j.Int("connections", f.connections);
  }
  if (mode == "closed") {
    j.Int("inflight", f.scenario == "bare-insert" ? 1 : f.inflight).Null("rate");
  } else {
    j.Null("inflight").Num("rate", f.rate).Num("late_start_ms", r.late_start_ms);
  }
  j.Num("warmup_s", absl::ToDoubleSeconds(f.warmup))
      .Num("duration_s", r.seconds)
      .Int("started", r.started)
      .Int("ok", r.ok)
      .Num("qps", r.qps)
      .Object("latency_ms", LatencyJson(*r.latency))
      .Object("errors", errors);
  return j;
}

void Emit(const Flags& f, const JsonObject& j) {
  std::string line = j.str();
  std::printf("%s\n", line.c_str());
  if (!f.out.empty()) {
    std::ofstream out(f.out, std::ios::app);
    out << line << "\n";
  }
}

void Summary(const Flags& f, const std::string& load, const LoadResult& r) {
  int64_t errors = 0;
  for (const auto& [code, n] : r.errors) errors += n;
  std::fprintf(stderr, "%-16s %-8s %-14s %9.0f/s  p50 %7.2f ms  p99 %7.2f ms  max %8.2f ms  errors %lld\n",
               f.scenario.c_str(), f.label.c_str(), load.c_str(), r.qps, r.latency->Quantile(0.5) / 1e6,
               r.latency->Quantile(0.99) / 1e6, r.latency->max() / 1e6, static_cast<long long>(errors));
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "continuum-loadgen: %s\n", s.ToString().c_str());
  return 1;
}

int Run(const Flags& f) {
  if (f.scenario == "setup") {
    auto state = Seed({.scheduling = f.scheduling, .records = f.records, .messaging = f.messaging});
    if (!state.ok()) return Fail(state.status());
    if (auto s = state->Write(f.state); !s.ok()) return Fail(s);
    std::fprintf(stderr, "seeded; state in %s\n", f.state.c_str());
    return 0;
  }
  if (f.scenario == "streams") {
    auto j = RunStreams(f.target, f.streams, f.connections, f.server_pid);
    if (!j.ok()) return Fail(j.status());
    JsonObject head;
    head.Str("scenario", f.scenario).Str("label", f.label).Int("connections", f.connections);
    Emit(f, head.Object("streams", *j));
    std::fprintf(stderr, "streams %s\n", j->str().c_str());
    return 0;
  }
  if (f.scenario == "bare-insert") {
    auto r = RunBareInsert(f.database_url, f.threads, f.payload, f.warmup, f.duration);
    if (!r.ok()) return Fail(r.status());
    Emit(f, ResultJson(f, "closed", *r));
    Summary(f, absl::StrCat(f.threads, " threads"), *r);
    return 0;
  }

  absl::StatusOr<State> state = State();
  if (!f.state.empty()) state = State::Read(f.state);
  if (!state.ok()) return Fail(state.status());
  auto workload = MakeWorkload(f.scenario,
                               {.address = f.target,
                                .connections = f.connections,
                                .deadline = f.deadline,
                                .payload_bytes = f.payload,
                                .book_window = f.book_window,
                                .conversations = f.conversations,
                                .streams_per_connection = f.inflight,
                                .entries_per_record = f.entries_per_record,
                                .record_offset = f.record_offset},
                               *state);
  if (!workload.ok()) return Fail(workload.status());
  LoadOptions options{.mode = f.mode == "open" ? Mode::kOpen : Mode::kClosed,
                      .inflight = f.inflight,
                      .rate = f.rate,
                      .warmup = f.warmup,
                      .duration = f.duration,
                      .pacing_threads = f.pacing_threads,
                      .pacing_tick = f.pacing_tick};
  LoadResult r = RunLoad(**workload, options);
  JsonObject j = ResultJson(f, f.mode, r);
  (*workload)->AddJson(j);
  Emit(f, j);
  Summary(f, f.mode == "open" ? absl::StrFormat("%.0f/s", f.rate) : absl::StrCat(f.connections, "x", f.inflight), r);
  return 0;
}

}  // namespace
}  // namespace continuum::loadgen

int main(int argc, char** argv) {
  using continuum::ConfigSource;
  // Debian's Abseil checks every Mutex acquisition (gRPC's included) for lock-order cycles
  // unless told not to: 5-7% of the generator's CPU in profiles, taken from the servers it
  // shares the cores with (more at 16 connections than at 4).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) env.emplace_back(*e);
  ConfigSource c(std::vector<std::string>(argv + 1, argv + argc), env, "CONTINUUM_LOADGEN_");
  continuum::loadgen::Flags f;
  f.scenario = c.String("scenario", "echo",
                        "setup, echo, get-appointment, search-slots, book, record-write, heartbeat, heartbeat-stream, deliver, streams "
                        "or bare-insert");
  f.target = c.String("target", "", "host:port of the server the scenario calls");
  f.state = c.String("state", "", "setup state file (written by --scenario=setup, read by the others)");
  f.label = c.String("label", "", "free text copied into the JSON (e.g. the backend)");
  f.out = c.String("out", "", "also append each JSON result line to this file");
  f.mode = c.String("mode", "closed", "closed (connections x inflight) or open (fixed rate)");
  f.connections = static_cast<int>(c.Int("connections", 4, "channels, each its own connection", 1, 1024));
  f.inflight = static_cast<int>(c.Int("inflight", 32, "closed loop: outstanding calls per connection", 1, 100000));
  f.rate = static_cast<double>(c.Int("rate", 1000, "open loop: calls per second", 1, 10000000));
  f.pacing_threads =
      static_cast<int>(c.Int("pacing-threads", 2, "open loop: threads sharing the schedule of call starts", 1, 64));
  f.pacing_tick = c.Duration("pacing-tick", absl::ZeroDuration(),
                             "open loop: pacing threads wake on this grid and start the calls due (0: per call)");
  f.warmup = c.Duration("warmup", absl::Seconds(1), "calls started before this are not counted");
  f.duration = c.Duration("duration", absl::Seconds(5), "measured time after the warm-up");
  f.deadline = c.Duration("deadline", absl::Seconds(10), "deadline of every call");
  f.payload = static_cast<int>(c.Int("payload-bytes", 16, "echo message / timeline text / bare row size", 0, 1 << 20));
  f.book_window =
      static_cast<int>(c.Int("book-window", 0, "book: a fresh range of free slots per run (0, 1, ...)", 0, 1000));
  f.entries_per_record = static_cast<int>(c.Int(
      "entries-per-record", 40, "record-write: writes per record before moving to fresh ones (0 = no cap)", 0, 1 << 20));
  f.record_offset =
      static_cast<int>(c.Int("record-offset", 0, "record-write: first seeded record used (runs use disjoint ones)", 0));
  f.conversations = static_cast<int>(
      c.Int("conversations", 16, "deliver: client conversations sent to round robin (1 = one conversation)", 1, 64));
  f.scheduling = c.String("scheduling", "", "setup: scheduling host:port");
  f.records = c.String("records", "", "setup: session-record host:port");
  f.messaging = c.String("messaging", "", "setup: messaging host:port");
  f.streams = static_cast<int>(c.Int("streams", 10000, "streams: Subscribe streams to open", 1, 200000));
  f.server_pid = static_cast<int>(c.Int("server-pid", 0, "streams: the server process, for RSS and threads", 0));
  f.database_url = c.String("database-url", "", "bare-insert: sqlite:/path or postgresql://...");
  f.threads = static_cast<int>(c.Int("threads", 4, "bare-insert: concurrent writers", 1, 256));
  if (c.help_requested()) {
    std::fputs(c.Usage("continuum-loadgen").c_str(), stdout);
    return 0;
  }
  const std::set<std::string> kScenarios = {"setup",   "echo",         "get-appointment", "search-slots",
                                            "book",    "record-write", "heartbeat", "heartbeat-stream", "deliver",
                                            "streams", "bare-insert"};
  if (!kScenarios.count(f.scenario)) c.AddError("--scenario: unknown scenario '" + f.scenario + "'");
  if (f.mode != "closed" && f.mode != "open") c.AddError("--mode must be closed or open");
  if (f.pacing_tick < absl::ZeroDuration() || f.pacing_tick > absl::Seconds(1)) {
    c.AddError("--pacing-tick must be between 0s and 1s");
  }
  if (f.scenario == "setup" && (f.scheduling.empty() || f.records.empty() || f.messaging.empty() || f.state.empty())) {
    c.AddError("setup needs --scheduling, --records, --messaging and --state");
  }
  if (f.scenario == "bare-insert" && f.database_url.empty()) c.AddError("bare-insert needs --database-url");
  if (f.scenario != "setup" && f.scenario != "bare-insert" && f.target.empty()) c.AddError("--target is required");
  if (f.scenario == "streams" && f.server_pid == 0) c.AddError("streams needs --server-pid");
  if (auto s = c.Finish(); !s.ok()) {
    std::fprintf(stderr, "continuum-loadgen: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  return continuum::loadgen::Run(f);
}
