#include "common/server/runtime.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/api/api.h"
#include "common/api/idempotency.h"
#include "common/db/retention.h"
#include "common/log/log.h"
#include "common/status/macros.h"
#include "common/time/clock.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "spdlog/spdlog.h"

namespace continuum {

CommonConfig ReadCommonConfig(ConfigSource& source, const std::string& service, int default_port,
                              int default_metrics_port) {
  CommonConfig c;
  c.server.listen_address = source.String("listen-address", absl::StrCat("127.0.0.1:", default_port),
                                          "gRPC listen address host:port (port 0 = any free port)");
  c.server.metrics_address =
      source.String("metrics-address", absl::StrCat("127.0.0.1:", default_metrics_port),
                    "Prometheus /metrics listen address host:port; empty disables");
  c.server.drain_deadline = source.Duration(
      "drain-deadline", absl::Seconds(10), "on SIGTERM, how long in-flight calls may take to finish");
  c.server.executor_threads = static_cast<int>(
      source.Int("worker-threads", 8, "threads for blocking work (database, redis)", 1, 256));
  c.server.executor_queue = static_cast<int>(
      source.Int("worker-queue", 10000, "queued calls before RESOURCE_EXHAUSTED", 1, 1000000));
  c.server.tls.cert_file = source.String("tls-cert-file", "", "PEM certificate; empty = plaintext");
  c.server.tls.key_file = source.String("tls-key-file", "", "PEM private key for tls-cert-file");
  c.server.tls.ca_file = source.String("tls-ca-file", "", "PEM CA bundle for verifying peers");
  c.server.tls.require_client_cert =
      source.Bool("tls-require-client-cert", false, "mutual TLS: refuse clients without a valid cert");
  c.database_url = source.String("database-url", absl::StrCat("sqlite:", service, ".db"),
                                 "sqlite:/path/file.db, sqlite::memory: or postgres://...");
  c.database_pool = static_cast<int>(source.Int("database-pool", 8, "database connections (match worker-threads: each busy worker holds one)", 1, 256));
  c.redis_address = source.String("redis-address", "127.0.0.1:6379", "redis host:port");
  c.jwt.issuer = source.String("jwt-issuer", "continuum-dev", "required JWT 'iss'");
  c.jwt.audience = source.String("jwt-audience", "continuum", "required JWT 'aud'");
  std::string algs = source.String("jwt-algorithms", "HS256", "accepted JWT algorithms, comma-separated (HS256, RS256, ES256)");
  c.jwt.algorithms = absl::StrSplit(algs, ',', absl::SkipEmpty());
  c.jwt.hs256_secret = source.String("jwt-hs256-secret", "", "HS256 secret (prefer jwt-hs256-secret-file)");
  std::string secret_file = source.String("jwt-hs256-secret-file", "", "file holding the HS256 secret");
  std::string key_file = source.String("jwt-public-key-file", "", "PEM public key for RS256/ES256");
  std::string verify_only_secret_file = source.String(
      "jwt-hs256-verify-only-secret-file", "",
      "file holding a second HS256 secret, accepted when verifying but never used to sign (key rotation)");
  std::string verify_only_key_file = source.String(
      "jwt-verify-only-public-key-file", "",
      "PEM public key accepted besides jwt-public-key-file when verifying RS256/ES256 (key rotation)");
  c.log_level = source.String("log-level", "info", "trace, debug, info, warn, error");
  c.ready_file = source.String("ready-file", "", "write the bound addresses here once serving");
  c.retention = source.Duration("retention", absl::Hours(24 * 7),
                                "delete sent outbox events, remembered request ids and processed event ids "
                                "older than this (at least 24h: request ids are promised for 24 hours); 0s keeps them");
  if (c.retention > absl::ZeroDuration() && c.retention < absl::Hours(24)) {
    source.AddError(absl::StrCat("--retention='", absl::FormatDuration(c.retention),
                                 "' is below 24h, the time request ids are promised to be remembered (0s keeps everything)"));
  }
  // A secret file's trailing newlines are not part of the secret.
  auto read_secret = [&](const std::string& file, std::string* out) {
    auto secret = auth::ReadFile(file);
    if (!secret.ok()) return source.AddError(std::string(secret.status().message()));
    *out = *secret;
    while (!out->empty() && out->back() == '\n') out->pop_back();
  };
  auto read_key = [&](const std::string& file, std::string* out) {
    auto key = auth::ReadFile(file);
    if (key.ok()) *out = *key;
    else source.AddError(std::string(key.status().message()));
  };
  if (!secret_file.empty()) read_secret(secret_file, &c.jwt.hs256_secret);
  if (!verify_only_secret_file.empty()) read_secret(verify_only_secret_file, &c.jwt.hs256_verify_only_secret);
  if (!key_file.empty()) read_key(key_file, &c.jwt.public_key_pem);
  if (!verify_only_key_file.empty()) read_key(verify_only_key_file, &c.jwt.verify_only_public_key_pem);
  if (!c.redis_address.empty() && !redis::ParseAddress(c.redis_address).ok()) {
    source.AddError(std::string(redis::ParseAddress(c.redis_address).status().message()));
  }
  return c;
}

namespace {

// How long commits wait to be durable, for operators: a slow disk (an fsync that stalls for
// 100 ms holds every write queued behind it) or a slow PostgreSQL shows here before anywhere
// else. The transactions counter over the histogram's count is SQLite's group size. Returns
// the database's on_commit hook.
std::function<void(absl::Duration, bool, int)> CommitMetrics(prometheus::Registry& registry) {
  auto& commit_seconds = prometheus::BuildHistogram()
                             .Name("continuum_db_commit_seconds")
                             .Help("Time a COMMIT of writes took (waiting for durability), by durability.")
                             .Register(registry);
  auto& committed = prometheus::BuildCounter()
                        .Name("continuum_db_transactions_committed_total")
                        .Help("Write transactions committed (SQLite commits several at once), by durability.")
                        .Register(registry);
  const prometheus::Histogram::BucketBoundaries buckets{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                       0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5};
  // Indexed by `synced`.
  prometheus::Histogram* seconds[2] = {&commit_seconds.Add({{"durability", "unsynced"}}, buckets),
                                       &commit_seconds.Add({{"durability", "synced"}}, buckets)};
  prometheus::Counter* transactions[2] = {&committed.Add({{"durability", "unsynced"}}),
                                          &committed.Add({{"durability", "synced"}})};
  return [seconds, transactions](absl::Duration took, bool synced, int n) {
    seconds[synced]->Observe(absl::ToDoubleSeconds(took));
    transactions[synced]->Increment(n);
  };
}

// Backlogs, for operators, sampled by the housekeeping thread: blocking work waiting for an
// executor thread (a full queue answers RESOURCE_EXHAUSTED), and events committed but not yet
// published to Redis (grows while Redis is down; one indexed read every 5 s).
void AddBacklogMetrics(Runtime& rt) {
  auto& queued = prometheus::BuildGauge()
                     .Name("continuum_executor_queued_tasks")
                     .Help("Tasks waiting for an executor thread (blocking work of calls: SQL, Redis).")
                     .Register(rt.host->metrics())
                     .Add({});
  auto& unsent = prometheus::BuildGauge()
                     .Name("continuum_outbox_unsent_events")
                     .Help("Events committed to the outbox and not yet published to Redis (all replicas).")
                     .Register(rt.host->metrics())
                     .Add({});
  rt.periodic.push_back({"executor metrics", absl::Seconds(1), [&rt, &queued] {
    queued.Set(static_cast<double>(rt.host->executor().queued()));
    return absl::OkStatus();
  }});
  rt.periodic.push_back({"outbox metrics", absl::Seconds(5), [&rt, &unsent] {
    ASSIGN_OR_RETURN(int64_t n, rt.relay->Pending());
    unsent.Set(static_cast<double>(n));
    return absl::OkStatus();
  }});
}

}  // namespace

int RunServiceMain(int argc, char** argv, const ServiceDefinition& def) {
  BlockTerminationSignals();  // before any thread starts, so all inherit the mask
  // Debian's Abseil checks every Mutex acquisition for lock-order cycles (3-4% of a small
  // RPC's CPU in profiles); the tests keep the check on, the services turn it off.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  ConfigSource source = ConfigSource::FromMain(argc, argv);
  Runtime rt;
  rt.config = ReadCommonConfig(source, def.name, def.default_port, def.default_metrics_port);
  if (def.read_config) def.read_config(source);
  if (source.help_requested()) {
    std::fputs(source.Usage(def.binary).c_str(), stdout);
    return 0;
  }
  auto verifier = auth::JwtVerifier::Create(rt.config.jwt);
  if (!verifier.ok()) source.AddError(std::string(verifier.status().message()));
  absl::Status config_status = source.Finish();
  if (!config_status.ok()) {
    std::fprintf(stderr, "%s: %s\n", def.binary.c_str(), std::string(config_status.message()).c_str());
    return 2;
  }
  if (auto s = InitLogging(def.name, rt.config.log_level); !s.ok()) {
    std::fprintf(stderr, "%s: %s\n", def.binary.c_str(), std::string(s.message()).c_str());
    return 2;
  }
  auto fail = [&](const absl::Status& s) {
    spdlog::critical("start-up failed: {}", s.ToString());
    return 1;
  };

  rt.host = std::make_unique<ServiceHost>(def.binary, rt.config.server);
  auto db = db::Open({.url = rt.config.database_url,
                      .pool_size = rt.config.database_pool,
                      .on_commit = CommitMetrics(rt.host->metrics())});
  if (!db.ok()) return fail(db.status());
  rt.db = std::move(*db);
  if (auto s = db::ApplyMigrations(*rt.db, "outbox", outbox::Migrations()); !s.ok()) return fail(s);
  if (auto s = db::ApplyMigrations(*rt.db, "idempotency", api::IdempotencyMigrations()); !s.ok()) return fail(s);
  if (auto s = db::ApplyMigrations(*rt.db, def.name, def.migrations); !s.ok()) return fail(s);

  auto redis_options = redis::ParseAddress(rt.config.redis_address);
  rt.redis = std::make_unique<redis::Client>(*redis_options);
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  rt.instance_id = absl::StrCat(host, "-", getpid(), "-", api::NewId().substr(0, 8));
  spdlog::info("{}: instance {}", def.binary, rt.instance_id);
  rt.relay = std::make_unique<outbox::Relay>(*rt.db, *rt.redis, RealClock::Get(),
                                             outbox::Relay::Options{.owner = def.name + "-" + rt.instance_id});
  rt.authenticator = std::make_unique<auth::Authenticator>(std::move(*verifier), RealClock::Get());

  rt.retention = {outbox::RetentionRule(), api::IdempotencyRetention()};
  auto services = def.build(rt);
  if (!services.ok()) return fail(services.status());
  if (rt.config.retention > absl::ZeroDuration()) {
    // Short runs often: the housekeeping thread also runs the service's own tasks (messaging's
    // escalation timers), so one run deletes at most 10 batches per table (a backlog after an
    // upgrade is worked off over several runs), that is up to 60,000 rows per table and minute.
    // Rows deleted per table, so operators can see retention working (or a table it cannot
    // keep up with) without reading logs. Every table is listed from the start, at 0.
    auto& deleted = prometheus::BuildCounter()
                        .Name("continuum_retention_deleted_rows_total")
                        .Help("Rows deleted by retention (--retention), by table.")
                        .Register(rt.host->metrics());
    std::vector<prometheus::Counter*> counters;
    for (const auto& rule : rt.retention) counters.push_back(&deleted.Add({{"table", rule.table}}));
    rt.periodic.push_back({"retention", absl::Seconds(10), [&rt, counters] {
      for (size_t i = 0; i < rt.retention.size(); ++i) {
        const auto& rule = rt.retention[i];
        ASSIGN_OR_RETURN(int64_t n, db::Purge(*rt.db, rule, absl::Now() - rt.config.retention, /*batch=*/1000,
                                              /*max_batches=*/10));
        counters[i]->Increment(static_cast<double>(n));
        if (n > 0) spdlog::info("retention: deleted {} rows of {}", n, rule.table);
      }
      return absl::OkStatus();
    }});
  }
  AddBacklogMetrics(rt);
  for (auto& [service, health_name] : *services) rt.host->AddService(service.get(), health_name);
  if (auto s = rt.host->Start(); !s.ok()) {
    for (auto& fn : rt.after_stop) fn();  // stop what build() started, while the database is open
    return fail(s);
  }
  rt.relay->Start();

  // Redis health is a component status ("continuum.redis"): visible to operators and to
  // services that need Redis, without taking the whole server out of rotation. The
  // database's ("continuum.database") gates the overall status too: a replica that cannot
  // reach its database answers nothing useful, so load balancers should send calls to
  // another. The same thread runs the service's periodic housekeeping.
  std::atomic<bool> stop{false};
  std::thread housekeeping([&] {
    NameThisThread("housekeeping");
    bool redis_last = true, db_last = true;
    std::vector<absl::Time> next(rt.periodic.size(), absl::Now());
    while (!stop.load()) {
      bool ok = rt.redis->Ping().ok();
      if (ok != redis_last) spdlog::warn("redis at {} is {}", rt.config.redis_address, ok ? "back" : "unreachable");
      rt.host->SetServing("continuum.redis", ok);
      redis_last = ok;
      absl::Status db = rt.db->Ping();
      if (db.ok() != db_last) {
        if (db.ok()) spdlog::warn("database is back; serving again");
        else spdlog::error("database unreachable, reporting NOT_SERVING: {}", db.ToString());
      }
      rt.host->SetServing("continuum.database", db.ok(), /*gates_server=*/true);
      db_last = db.ok();
      for (size_t i = 0; i < rt.periodic.size(); ++i) {
        if (absl::Now() < next[i]) continue;
        if (absl::Status s = rt.periodic[i].run(); !s.ok()) spdlog::warn("{}: {}", rt.periodic[i].name, s.ToString());
        next[i] = absl::Now() + rt.periodic[i].interval;
      }
      for (int i = 0; i < 10 && !stop.load(); ++i) absl::SleepFor(absl::Milliseconds(100));
    }
  });

  if (auto s = WriteReadyFile(rt.config.ready_file, *rt.host); !s.ok()) spdlog::error("{}", s.ToString());
  int sig = WaitForTerminationSignal();
  spdlog::info("received signal {}", sig);
  for (auto& fn : rt.before_drain) fn();
  rt.host->Shutdown();
  for (auto& fn : rt.after_stop) fn();
  stop.store(true);
  housekeeping.join();
  rt.relay->Stop();
  return 0;
}

}  // namespace continuum
