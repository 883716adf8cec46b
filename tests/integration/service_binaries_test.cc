// Each service binary, started as a real process on loopback with a real redis-server:
// health, reflection, metrics, bad configuration, SIGTERM, Redis going away and back, and the
// database (PostgreSQL) refusing connections and coming back.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/db/database.h"
#include "common/testing/harness.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace continuum {
namespace {

using testing::HttpGet;
using testing::MetricValue;
using testing::Process;
using testing::RedisServer;
using testing::TempDir;
using testing::WaitUntil;
using ::testing::HasSubstr;

const char kSecret[] = "integration-test-secret-0123456789abcdef";

struct Svc {
  std::string binary;
  std::string health_name;
};

void PrintTo(const Svc& s, std::ostream* os) { *os << s.binary; }

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs a command to completion; returns {exit code, stdout}.
std::pair<int, std::string> RunCommand(std::vector<std::string> argv, const TempDir& dir) {
  std::string out = dir.File("cmd.out");
  std::remove(out.c_str());
  auto p = Process::Start(std::move(argv), {}, out);
  EXPECT_TRUE(p.ok());
  auto rc = (*p)->Wait(absl::Seconds(30));
  EXPECT_TRUE(rc.ok());
  return {rc.ok() && WIFEXITED(*rc) ? WEXITSTATUS(*rc) : -1, Slurp(out)};
}

class ServiceBinaryTest : public ::testing::TestWithParam<Svc> {
 protected:
  void SetUp() override {
    auto redis = RedisServer::Start();
    ASSERT_TRUE(redis.ok()) << redis.status();
    redis_ = std::move(*redis);
  }

  std::vector<std::string> Argv(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {
        testing::BinDir() + "/" + GetParam().binary,
        "--listen-address=127.0.0.1:0",
        "--metrics-address=127.0.0.1:0",
        "--database-url=sqlite:" + dir_.File("svc.db"),
        "--redis-address=" + redis_->address(),
        std::string("--jwt-hs256-secret=") + kSecret,
        "--ready-file=" + dir_.File("ready"),
        "--drain-deadline=5s"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  }

  void StartService(std::vector<std::string> extra = {}) {
    auto p = Process::Start(Argv(std::move(extra)), {}, dir_.File("service.log"));
    ASSERT_TRUE(p.ok());
    service_ = std::move(*p);
    ASSERT_TRUE(WaitUntil([&] { return access(dir_.File("ready").c_str(), F_OK) == 0 || !service_->running(); },
                          absl::Seconds(30)));
    ASSERT_TRUE(service_->running()) << Slurp(dir_.File("service.log"));
    for (absl::string_view line : absl::StrSplit(Slurp(dir_.File("ready")), '\n')) {
      if (absl::ConsumePrefix(&line, "grpc=")) address_ = std::string(line);
      if (absl::ConsumePrefix(&line, "metrics=")) ASSERT_TRUE(absl::SimpleAtoi(line, &metrics_port_));
    }
    ASSERT_FALSE(address_.empty());
  }

  std::string Probe() { return testing::BinDir() + "/continuum-probe"; }

  TempDir dir_;
  std::unique_ptr<RedisServer> redis_;
  std::unique_ptr<Process> service_;
  std::string address_;
  int metrics_port_ = 0;
};

TEST_P(ServiceBinaryTest, ServesHealthReflectionAndMetrics) {
  StartService();
  auto [rc, out] = RunCommand({Probe(), address_, "health"}, dir_);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("SERVING"));
  std::tie(rc, out) = RunCommand({Probe(), address_, "health", GetParam().health_name}, dir_);
  EXPECT_EQ(rc, 0) << out;
  std::tie(rc, out) = RunCommand({Probe(), address_, "list-services"}, dir_);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr(GetParam().health_name));
  EXPECT_THAT(out, HasSubstr("grpc.health.v1.Health"));

  ASSERT_GT(metrics_port_, 0);
  std::string metrics = HttpGet(metrics_port_, "/metrics");
  EXPECT_THAT(metrics, HasSubstr("200 OK"));
  EXPECT_THAT(metrics, HasSubstr("grpc_server_handled_total{"));
  EXPECT_THAT(metrics, HasSubstr("grpc_method=\"Check\""));
  EXPECT_THAT(metrics, HasSubstr("grpc_server_handling_seconds_bucket"));
  // Retention's counters are there from the start, one per table, before anything is deleted.
  EXPECT_THAT(metrics, HasSubstr("continuum_retention_deleted_rows_total{table=\"outbox\"}"));
  EXPECT_THAT(metrics, HasSubstr("continuum_retention_deleted_rows_total{table=\"idempotency\"}"));
  // Commits are timed from the first one (the migrations at start-up are synced writes).
  const double commits = MetricValue(metrics, "continuum_db_commit_seconds_count{durability=\"synced\"}");
  const double transactions = MetricValue(metrics, "continuum_db_transactions_committed_total{durability=\"synced\"}");
  EXPECT_GT(commits, 0);
  EXPECT_GE(transactions, commits);
  EXPECT_THAT(metrics, HasSubstr("continuum_db_commit_seconds_bucket{durability=\"synced\",le=\"0.01\"}"));
  EXPECT_THAT(metrics, HasSubstr("continuum_db_commit_seconds_count{durability=\"unsynced\"}"));
  // Backlog gauges, set by the housekeeping thread (nothing is queued or unsent when idle).
  EXPECT_TRUE(WaitUntil([&] {
    metrics = HttpGet(metrics_port_, "/metrics");
    return MetricValue(metrics, "continuum_executor_queued_tasks") == 0 &&
           MetricValue(metrics, "continuum_outbox_unsent_events") == 0;
  }, absl::Seconds(10))) << metrics;
  EXPECT_EQ(MetricValue(metrics, "continuum_live_streams"), GetParam().binary == "continuum-messaging" ? 0 : -1);
}

TEST_P(ServiceBinaryTest, ExitsCleanlyOnSigterm) {
  StartService();
  service_->Signal(SIGTERM);
  auto rc = service_->Wait(absl::Seconds(15));
  ASSERT_TRUE(rc.ok()) << "did not exit within the drain deadline";
  EXPECT_TRUE(WIFEXITED(*rc));
  EXPECT_EQ(WEXITSTATUS(*rc), 0);
  EXPECT_THAT(Slurp(dir_.File("service.log")), HasSubstr("draining"));
}

TEST_P(ServiceBinaryTest, BadConfigurationExitsWithOneClearLine) {
  auto [rc, out] = RunCommand(Argv({"--drain-deadline=soon", "--no-such-flag=1"}), dir_);
  EXPECT_EQ(rc, 2);
  EXPECT_THAT(out, HasSubstr("--drain-deadline='soon' is not a duration"));
  EXPECT_THAT(out, HasSubstr("unknown flag --no-such-flag"));
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}

TEST_P(ServiceBinaryTest, ReportsRedisOutageAsComponentStatusAndRecovers) {
  StartService();
  auto redis_status = [&] { return RunCommand({Probe(), address_, "health", "continuum.redis"}, dir_); };
  EXPECT_TRUE(WaitUntil([&] { return redis_status().first == 0; }, absl::Seconds(10)));
  redis_->Kill();
  EXPECT_TRUE(WaitUntil([&] { return redis_status().second.find("NOT_SERVING") != std::string::npos; },
                        absl::Seconds(15)));
  // The service itself stays up and answers (its data lives in the database).
  auto [rc, out] = RunCommand({Probe(), address_, "health", GetParam().health_name}, dir_);
  EXPECT_EQ(rc, 0) << out;
  ASSERT_TRUE(redis_->Restart().ok());
  EXPECT_TRUE(WaitUntil([&] { return redis_status().first == 0; }, absl::Seconds(15)))
      << "redis status did not return to SERVING";
}

TEST_P(ServiceBinaryTest, DatabaseOutageTakesTheServerOutOfRotationUntilItReturns) {
  auto pg = testing::PostgresServer::Shared();
  ASSERT_TRUE(pg.ok()) << pg.status();
  auto url = (*pg)->CreateDatabase();
  ASSERT_TRUE(url.ok()) << url.status();
  const std::string name = url->substr(url->rfind('/') + 1);
  auto admin = db::Open({.url = url->substr(0, url->rfind('/') + 1) + "postgres", .pool_size = 1});
  ASSERT_TRUE(admin.ok()) << admin.status();
  StartService({"--database-url=" + *url});
  auto serving = [&](const std::string& health_name) {
    std::vector<std::string> argv = {Probe(), address_, "health"};
    if (!health_name.empty()) argv.push_back(health_name);
    return RunCommand(argv, dir_).first == 0;
  };
  EXPECT_TRUE(WaitUntil([&] { return serving("") && serving("continuum.database"); }, absl::Seconds(15)));

  // The database refuses this service's connections (and drops the ones it has).
  ASSERT_TRUE((*admin)->Exec(absl::StrCat("ALTER DATABASE \"", name, "\" ALLOW_CONNECTIONS false")).ok());
  ASSERT_TRUE((*admin)->Query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", {name}).ok());
  EXPECT_TRUE(WaitUntil([&] { return !serving("continuum.database") && !serving(""); }, absl::Seconds(15)))
      << "still SERVING without its database";
  EXPECT_TRUE(serving("continuum.redis")) << "Redis is fine; only the database is down";
  EXPECT_THAT(Slurp(dir_.File("service.log")), HasSubstr("database unreachable"));

  ASSERT_TRUE((*admin)->Exec(absl::StrCat("ALTER DATABASE \"", name, "\" ALLOW_CONNECTIONS true")).ok());
  EXPECT_TRUE(WaitUntil([&] { return serving("continuum.database") && serving(""); }, absl::Seconds(15)))
      << "did not return to SERVING with its database back";
  EXPECT_TRUE(serving(GetParam().health_name));
}

TEST_P(ServiceBinaryTest, ReportsSchedulingReachabilityAsComponentStatus) {
  auto status = [&] { return RunCommand({Probe(), address_, "health", "continuum.scheduling"}, dir_); };
  if (GetParam().binary == "continuum-scheduling") {
    StartService();
    EXPECT_NE(status().first, 0) << "scheduling depends on no scheduling service";
    return;
  }
  // A real scheduling replica on a port of our choosing, so it can come back on the same one.
  const int port = testing::FreePort();
  auto start_scheduling = [&]() -> std::unique_ptr<Process> {
    std::remove(dir_.File("sched.ready").c_str());
    auto p = Process::Start({testing::BinDir() + "/continuum-scheduling", absl::StrCat("--listen-address=127.0.0.1:", port),
                             "--metrics-address=", "--database-url=sqlite:" + dir_.File("sched.db"),
                             "--redis-address=" + redis_->address(), std::string("--jwt-hs256-secret=") + kSecret,
                             "--ready-file=" + dir_.File("sched.ready")},
                            {}, dir_.File("sched.log"));
    EXPECT_TRUE(p.ok());
    if (!p.ok()) return nullptr;
    EXPECT_TRUE(WaitUntil([&] { return access(dir_.File("sched.ready").c_str(), F_OK) == 0; }, absl::Seconds(30)))
        << Slurp(dir_.File("sched.log"));
    return std::move(*p);
  };
  auto scheduling = start_scheduling();
  ASSERT_NE(scheduling, nullptr);
  StartService({absl::StrCat("--scheduling-address=127.0.0.1:", port)});
  EXPECT_TRUE(WaitUntil([&] { return status().first == 0; }, absl::Seconds(15)));

  scheduling->Signal(SIGKILL);
  ASSERT_TRUE(scheduling->Wait(absl::Seconds(10)).ok());
  EXPECT_TRUE(WaitUntil([&] { return status().second.find("NOT_SERVING") != std::string::npos; }, absl::Seconds(15)))
      << "still SERVING with scheduling gone";
  // Not gating: the server stays in rotation (calls that need scheduling fail on their own).
  EXPECT_EQ(RunCommand({Probe(), address_, "health"}, dir_).first, 0);
  EXPECT_THAT(Slurp(dir_.File("service.log")), HasSubstr("scheduling unreachable"));

  scheduling = start_scheduling();
  ASSERT_NE(scheduling, nullptr);
  EXPECT_TRUE(WaitUntil([&] { return status().first == 0; }, absl::Seconds(30)))
      << "did not return to SERVING with scheduling back";
}

INSTANTIATE_TEST_SUITE_P(
    Services, ServiceBinaryTest,
    ::testing::Values(Svc{"continuum-scheduling", "continuum.scheduling.v1.SchedulingService"},
                      Svc{"continuum-session-record", "continuum.records.v1.SessionRecordService"},
                      Svc{"continuum-messaging", "continuum.messaging.v1.MessagingService"}),
    [](const ::testing::TestParamInfo<Svc>& info) {
      std::string n = info.param.binary.substr(10);
      std::replace(n.begin(), n.end(), '-', '_');
      return n;
    });

}  // namespace
}  // namespace continuum
