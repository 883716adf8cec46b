#include "common/testing/harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <glob.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/auth/jwt.h"
#include <fstream>
#include <sstream>
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

extern char** environ;

namespace continuum::testing {

TempDir::TempDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = absl::StrCat(tmp && *tmp ? tmp : "/tmp", "/continuum-test-XXXXXX");
  char* made = mkdtemp(tmpl.data());
  path_ = made ? made : "";
}

TempDir::~TempDir() {
  std::error_code ec;
  if (!path_.empty()) std::filesystem::remove_all(path_, ec);
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

absl::StatusOr<std::unique_ptr<Process>> Process::Start(std::vector<std::string> argv,
                                                        std::map<std::string, std::string> env,
                                                        const std::string& log_file) {
  if (argv.empty()) return absl::InvalidArgumentError("empty argv");
  // Everything the child needs is prepared before fork: only async-signal-safe calls after.
  std::map<std::string, std::string> merged;
  for (char** e = environ; e && *e; ++e) {
    std::string kv(*e);
    auto eq = kv.find('=');
    if (eq != std::string::npos) merged[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (auto& [k, v] : env) merged[k] = v;
  std::vector<std::string> env_strings;
  for (auto& [k, v] : merged) env_strings.push_back(k + "=" + v);
  std::vector<char*> cargv, cenv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  for (auto& e : env_strings) cenv.push_back(e.data());
  cenv.push_back(nullptr);
  int log_fd = -1;
  if (!log_file.empty()) {
    log_fd = open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) return absl::InternalError("cannot open log file " + log_file);
  }
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (log_fd >= 0) {
      dup2(log_fd, 1);
      dup2(log_fd, 2);
    }
    execvpe(cargv[0], cargv.data(), cenv.data());
    _exit(127);
  }
  if (log_fd >= 0) close(log_fd);
  auto p = std::unique_ptr<Process>(new Process());
  p->pid_ = pid;
  return p;
}

Process::~Process() {
  if (running()) {
    Signal(SIGKILL);
    Wait(absl::Seconds(10)).IgnoreError();
  }
}

void Process::Signal(int sig) {
  if (!exited_) kill(pid_, sig);
}

bool Process::running() {
  if (exited_) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exited_ = true;
    status_ = status;
  }
  return !exited_;
}

absl::StatusOr<int> Process::Wait(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (running()) {
    if (absl::Now() > deadline) return absl::DeadlineExceededError("process did not exit in time");
    absl::SleepFor(absl::Milliseconds(5));
  }
  return status_;
}

double MetricValue(const std::string& page, const std::string& sample) {
  for (absl::string_view line : absl::StrSplit(page, '\n')) {
    if (!absl::StartsWith(line, sample + " ")) continue;
    double v = 0;
    if (absl::SimpleAtod(absl::StripAsciiWhitespace(line.substr(sample.size() + 1)), &v)) return v;
  }
  return -1;
}

std::string HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  std::string body;
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    std::string req = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
    if (write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = read(fd, buf, sizeof(buf))) > 0) body.append(buf, n);
    }
  }
  close(fd);
  return body;
}


bool WaitUntil(const std::function<bool()>& ready, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (!ready()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

namespace {

bool RedisAnswers(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  bool ok = false;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const char ping[] = "PING\r\n";
    char buf[16] = {0};
    ok = write(fd, ping, sizeof(ping) - 1) == sizeof(ping) - 1 && read(fd, buf, sizeof(buf)) > 0 &&
         std::string(buf).rfind("+PONG", 0) == 0;
  }
  close(fd);
  return ok;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::Start() {
  auto server = std::unique_ptr<RedisServer>(new RedisServer());
  absl::Status last;
  for (int attempt = 0; attempt < 5; ++attempt) {  // a free port can be taken meanwhile
    server->port_ = FreePort();
    last = server->Launch();
    if (last.ok()) return server;
  }
  return last;
}

absl::Status RedisServer::Launch() {
  auto p = Process::Start({"redis-server", "--port", absl::StrCat(port_), "--bind", "127.0.0.1",
                           "--dir", dir_.path(), "--save", "", "--appendonly", "no",
                           "--logfile", dir_.File("redis.log")});
  if (!p.ok()) return p.status();
  process_ = std::move(*p);
  if (!WaitUntil([&] { return RedisAnswers(port_) || !process_->running(); }, absl::Seconds(10)) ||
      !process_->running()) {
    process_.reset();
    return absl::UnavailableError(absl::StrCat("redis-server did not start on port ", port_));
  }
  return absl::OkStatus();
}

RedisServer::~RedisServer() = default;

std::string RedisServer::address() const { return absl::StrCat("127.0.0.1:", port_); }

void RedisServer::Kill() {
  if (process_) {
    process_->Signal(SIGKILL);
    process_->Wait(absl::Seconds(10)).IgnoreError();
    process_.reset();
  }
}

absl::Status RedisServer::Restart() {
  Kill();
  absl::Status s;
  // The old socket may linger briefly; retry on the same port.
  for (int i = 0; i < 50; ++i) {
    s = Launch();
    if (s.ok()) return s;
  }
  return s;
}

namespace {

std::string PgBin(const std::string& name) {
  glob_t g;
  std::string found = name;
  if (glob("/usr/lib/postgresql/*/bin", 0, nullptr, &g) == 0 && g.gl_pathc > 0) {
    found = absl::StrCat(g.gl_pathv[g.gl_pathc - 1], "/", name);  // newest version
  }
  globfree(&g);
  return found;
}

// initdb and postgres refuse to run as root: run them as the `postgres` user then.
std::vector<std::string> AsPostgresUser(std::vector<std::string> argv) {
  if (getuid() != 0) return argv;
  std::vector<std::string> out = {"setpriv", "--reuid=postgres", "--regid=postgres",
                                  "--clear-groups", "--"};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

// Tests run without fsync (nothing here survives the test anyway); benchmarks set
// CONTINUUM_TEST_PG_FSYNC=on to measure with the durability production uses.
std::string FsyncSetting() {
  const char* v = std::getenv("CONTINUUM_TEST_PG_FSYNC");
  return std::string("fsync=") + (v && std::string(v) == "on" ? "on" : "off");
}

std::string ConnInfo(int port, const std::string& db) {
  return absl::StrCat("host=127.0.0.1 port=", port, " user=postgres dbname=", db,
                      " connect_timeout=5");
}

}  // namespace

absl::StatusOr<PostgresServer*> PostgresServer::Shared() {
  static absl::Mutex mu(absl::kConstInit);
  static PostgresServer* server = nullptr;
  static absl::Status error;
  absl::MutexLock lock(&mu);
  if (server == nullptr && error.ok()) {
    auto* s = new PostgresServer();
    error = s->Launch();
    if (error.ok()) {
      server = s;
      std::atexit([] { delete server; });
    } else {
      delete s;
    }
  }
  if (!error.ok()) return error;
  return server;
}

absl::Status PostgresServer::Launch() {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = absl::StrCat(tmp && *tmp ? tmp : "/tmp", "/continuum-pg-XXXXXX");
  if (!mkdtemp(tmpl.data())) return absl::InternalError("mkdtemp failed");
  dir_ = tmpl;
  if (getuid() == 0) {
    passwd* pw = getpwnam("postgres");
    if (!pw) return absl::FailedPreconditionError("running as root but there is no 'postgres' user");
    if (chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) return absl::InternalError("chown failed");
  }
  std::string data = dir_ + "/data";
  auto init = Process::Start(AsPostgresUser({PgBin("initdb"), "-D", data, "-U", "postgres", "-A",
                                             "trust", "--no-sync", "-E", "UTF8", "--locale=C"}),
                             {}, dir_ + "/initdb.log");
  if (!init.ok()) return init.status();
  auto rc = (*init)->Wait(absl::Seconds(120));
  if (!rc.ok() || *rc != 0) {
    return absl::InternalError(absl::StrCat("initdb failed; see ", dir_, "/initdb.log"));
  }
  for (int attempt = 0; attempt < 5; ++attempt) {
    port_ = FreePort();
    auto p = Process::Start(
        AsPostgresUser({PgBin("postgres"), "-D", data, "-p", absl::StrCat(port_), "-k", dir_, "-c",
                        "listen_addresses=127.0.0.1", "-c", FsyncSetting(), "-c", "max_connections=200"}),
        {}, dir_ + "/postgres.log");
    if (!p.ok()) return p.status();
    process_ = std::move(*p);
    bool up = WaitUntil(
        [&] { return PQping(ConnInfo(port_, "postgres").c_str()) == PQPING_OK || !process_->running(); },
        absl::Seconds(60));
    if (up && process_->running()) return absl::OkStatus();
    process_.reset();
  }
  return absl::UnavailableError(absl::StrCat("postgres did not start; see ", dir_, "/postgres.log"));
}

absl::StatusOr<std::string> PostgresServer::CreateDatabase() {
  std::string name = absl::StrCat("test_", getpid(), "_", next_db_++);
  PGconn* conn = PQconnectdb(ConnInfo(port_, "postgres").c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(conn);
    PQfinish(conn);
    return absl::UnavailableError("cannot connect to test postgres: " + msg);
  }
  PGresult* r = PQexec(conn, ("CREATE DATABASE " + name).c_str());
  bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  std::string msg = PQerrorMessage(conn);
  PQclear(r);
  PQfinish(conn);
  if (!ok) return absl::InternalError("CREATE DATABASE failed: " + msg);
  return absl::StrCat("postgresql://postgres@127.0.0.1:", port_, "/", name);
}

absl::StatusOr<std::string> DatabaseUrl(const std::string& backend, const TempDir& dir, const std::string& file) {
  if (backend != "postgres") return "sqlite:" + dir.File(file);
  auto pg = PostgresServer::Shared();
  if (!pg.ok()) return pg.status();
  return (*pg)->CreateDatabase();
}

PostgresServer::~PostgresServer() {
  if (process_) {
    process_->Signal(SIGINT);  // fast shutdown
    process_->Wait(absl::Seconds(30)).IgnoreError();
    process_.reset();
  }
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

namespace {
std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

absl::StatusOr<std::unique_ptr<ServiceProcess>> ServiceProcess::Start(const std::string& binary,
                                                                      std::vector<std::string> args,
                                                                      const TempDir& dir) {
  static int counter = 0;
  std::string tag = absl::StrCat(binary, "-", getpid(), "-", counter++);
  std::string ready = dir.File(tag + ".ready");
  auto svc = std::unique_ptr<ServiceProcess>(new ServiceProcess());
  svc->log_file_ = dir.File(tag + ".log");
  std::vector<std::string> argv = {BinDir() + "/" + binary, "--listen-address=127.0.0.1:0",
                                   "--metrics-address=127.0.0.1:0", "--ready-file=" + ready};
  argv.insert(argv.end(), args.begin(), args.end());
  auto p = Process::Start(argv, {}, svc->log_file_);
  if (!p.ok()) return p.status();
  svc->process_ = std::move(*p);
  if (!WaitUntil([&] { return access(ready.c_str(), F_OK) == 0 || !svc->process_->running(); },
                 absl::Seconds(60)) ||
      !svc->process_->running()) {
    return absl::UnavailableError(absl::StrCat(binary, " did not start: ", svc->log()));
  }
  for (absl::string_view line : absl::StrSplit(Slurp(ready), '\n')) {
    if (absl::ConsumePrefix(&line, "grpc=")) svc->address_ = std::string(line);
    if (absl::ConsumePrefix(&line, "metrics=")) (void)absl::SimpleAtoi(line, &svc->metrics_port_);
  }
  return svc;
}

ServiceProcess::~ServiceProcess() {
  if (process_ && process_->running()) {
    process_->Signal(SIGTERM);
    if (!process_->Wait(absl::Seconds(15)).ok()) process_->Signal(SIGKILL);
  }
}

std::string ServiceProcess::log() const { return Slurp(log_file_); }

std::string TestToken(const std::string& subject, const std::string& role, const std::vector<std::string>& clinics) {
  auth::TokenClaims c;
  c.issuer = "continuum-dev";
  c.audience = "continuum";
  c.subject = subject;
  c.role = auth::RoleFromString(role);
  c.clinics = clinics;
  c.issued_at = absl::Now();
  c.expires_at = c.issued_at + absl::Hours(1);
  return *auth::SignJwt(c, "HS256", kTestJwtSecret);
}

std::string BinDir() {
  const char* dir = std::getenv("CONTINUUM_BIN_DIR");
  if (dir && *dir) return dir;
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  buf[n] = 0;
  return std::filesystem::path(buf).parent_path().string();
}

}  // namespace continuum::testing
