// Test harness: temp dirs, free loopback ports, child processes, and real redis-server and
// PostgreSQL instances started for a test and stopped after it.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace continuum::testing {

// A directory under $TMPDIR removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A port on 127.0.0.1 that was free a moment ago (bind to :0, read, close).
int FreePort();

// A child process; killed with SIGKILL on destruction if still running.
class Process {
 public:
  // `env` entries are added to (and override) the parent's environment.
  static absl::StatusOr<std::unique_ptr<Process>> Start(
      std::vector<std::string> argv, std::map<std::string, std::string> env = {},
      const std::string& log_file = "");
  ~Process();
  pid_t pid() const { return pid_; }
  void Signal(int sig);
  // Waits for exit up to `timeout`; returns the exit status (as from waitpid) or
  // DEADLINE_EXCEEDED.
  absl::StatusOr<int> Wait(absl::Duration timeout);
  bool running();

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = 0;
};

// Polls `ready` every 10 ms until it returns true or `timeout` passes. For readiness of
// external processes only (a server accepting connections), never to order test steps.
bool WaitUntil(const std::function<bool()>& ready, absl::Duration timeout);

// A plain HTTP/1.0 GET to 127.0.0.1:port (a service's /metrics); the whole response, headers
// included, or "" when nothing answers within 5 s.
std::string HttpGet(int port, const std::string& path);
// The value of one sample (`name{labels}` exactly as exported, or just `name`) in a Prometheus
// text page such as HttpGet returns; -1 when it is not there.
double MetricValue(const std::string& page, const std::string& sample);

// A real redis-server in a temp dir on a free loopback port.
class RedisServer {
 public:
  static absl::StatusOr<std::unique_ptr<RedisServer>> Start();
  ~RedisServer();
  int port() const { return port_; }
  std::string address() const;
  // SIGKILL, as a crash would.
  void Kill();
  // Starts again on the same port.
  absl::Status Restart();

 private:
  absl::Status Launch();
  TempDir dir_;
  int port_ = 0;
  std::unique_ptr<Process> process_;
};

// A real PostgreSQL cluster (initdb + postgres) in a temp dir on a free loopback port.
// One cluster per test process, created on first use; each caller gets a fresh database.
// When run as root, the server runs as the `postgres` user (initdb refuses root).
class PostgresServer {
 public:
  static absl::StatusOr<PostgresServer*> Shared();
  // CREATE DATABASE with a unique name; returns its postgres:// URL.
  absl::StatusOr<std::string> CreateDatabase();
  int port() const { return port_; }
  ~PostgresServer();

 private:
  absl::Status Launch();
  std::string dir_;
  int port_ = 0;
  std::unique_ptr<Process> process_;
  int next_db_ = 0;
};

// A database URL for tests that run on both backends: "sqlite" (or any other name) gives the
// file `file` in `dir`; "postgres" a new database on the shared test server.
absl::StatusOr<std::string> DatabaseUrl(const std::string& backend, const TempDir& dir, const std::string& file);

// A Continuum service binary started on 127.0.0.1:0 with a ready file; stopped (SIGTERM,
// then SIGKILL) on destruction.
class ServiceProcess {
 public:
  // `binary` is a file name in BinDir(); `args` are added to --listen-address, --metrics-address
  // and --ready-file, which the harness sets. Waits until the service is serving.
  static absl::StatusOr<std::unique_ptr<ServiceProcess>> Start(const std::string& binary,
                                                               std::vector<std::string> args,
                                                               const TempDir& dir);
  ~ServiceProcess();
  const std::string& address() const { return address_; }
  int metrics_port() const { return metrics_port_; }
  Process& process() { return *process_; }
  std::string log() const;

 private:
  std::unique_ptr<Process> process_;
  std::string address_, log_file_;
  int metrics_port_ = 0;
};

// The HS256 secret the test harness gives services, and tokens signed with it.
inline constexpr char kTestJwtSecret[] = "continuum-test-secret-0123456789abcdef";
std::string TestToken(const std::string& subject, const std::string& role, const std::vector<std::string>& clinics);

// The directory holding the repo's built binaries (from CONTINUUM_BIN_DIR, set by ctest).
std::string BinDir();

}  // namespace continuum::testing
