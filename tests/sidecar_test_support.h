#pragma once
// The real `bucketd` binary as a child process, for the suites that drive it over HTTP
// (server_test, http_hostile_test, torture_test): a free loopback port, start-up until
// /readyz answers 200, and a stop by signal that reports how the process ended.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <catch2/catch.hpp>

namespace bucketd::testing {

// Where a manual clock starts unless a test says otherwise.
inline constexpr const char* kSidecarStart = "2026-01-01T00:00:00Z";

// The server binary: $BUCKETD_BIN (CTest sets it), else the build's own path.
inline std::string SidecarBinary() {
  if (const char* bin = std::getenv("BUCKETD_BIN")) return bin;
#ifdef BUCKETD_BIN_DEFAULT
  return BUCKETD_BIN_DEFAULT;
#else
  return "";
#endif
}

// A loopback port free a moment ago (another process may take it first: Sidecar retries).
inline int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// Forks and execs `args`; the child's stderr goes to `stderr_fd` when given.
inline pid_t SpawnProcess(std::vector<std::string> args, int stderr_fd = -1) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (stderr_fd >= 0) dup2(stderr_fd, STDERR_FILENO);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// A spawned child that a failed REQUIRE must not leave running: unless the test reaped it
// (Wait, Exited), the destructor kills and reaps it. A child left alive keeps ctest's
// output pipe open, so a failing case hung to the ctest timeout instead of failing.
class ChildProcess {
 public:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  ~ChildProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Waits for the child to end; waitpid's status.
  int Wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }
  // Whether the child has ended (then reaped), without waiting.
  bool Exited() {
    if (pid_ <= 0) return true;
    if (waitpid(pid_, nullptr, WNOHANG) != pid_) return false;
    pid_ = -1;
    return true;
  }

 private:
  pid_t pid_;
};

// bucketd's arguments for `port` and `data`: a manual clock from kSidecarStart and log level
// warn unless `extra` sets --clock or --log-level itself.
inline std::vector<std::string> SidecarArgs(int port, const std::filesystem::path& data,
                                            const std::vector<std::string>& extra) {
  const auto has = [&](const char* flag) {
    return std::find(extra.begin(), extra.end(), flag) != extra.end();
  };
  std::vector<std::string> args = {SidecarBinary(), "--listen", "127.0.0.1:" + std::to_string(port),
                                   "--data", data.string()};
  if (!has("--log-level")) args.insert(args.end(), {"--log-level", "warn"});
  if (!has("--clock"))
    args.insert(args.end(), {"--clock", "manual", "--start-time", kSidecarStart});
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

class Sidecar {
 public:
  // `stderr_fd`: where the child's log lines go (default: this process's stderr).
  explicit Sidecar(const std::filesystem::path& data, std::vector<std::string> extra = {},
                   int stderr_fd = -1) {
    REQUIRE_FALSE(SidecarBinary().empty());  // BUCKETD_BIN must name the server binary
    REQUIRE(std::filesystem::exists(SidecarBinary()));
    for (int attempt = 0; attempt < 5 && pid_ <= 0; ++attempt) {
      port_ = FreePort();
      pid_ = SpawnProcess(SidecarArgs(port_, data, extra), stderr_fd);
      if (!WaitReady()) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        pid_ = -1;
      }
    }
    REQUIRE(pid_ > 0);
  }
  ~Sidecar() {
    if (pid_ > 0) Stop(SIGTERM);
  }
  Sidecar(const Sidecar&) = delete;
  Sidecar& operator=(const Sidecar&) = delete;

  // Sends `signal` and reaps the process: its exit status, or 128 + the signal that ended it.
  int Stop(int signal = SIGTERM) {
    kill(pid_, signal);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string authority() const { return "127.0.0.1:" + std::to_string(port_); }
  httplib::Client Client() const {
    httplib::Client client("127.0.0.1", port_);
    client.set_connection_timeout(5, 0);
    client.set_read_timeout(40, 0);
    return client;
  }

 private:
  // /readyz, not /healthz: the port answers while the log replays, and /healthz is 200 then.
  bool WaitReady() {
    using namespace std::chrono_literals;
    for (int i = 0; i < 400; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) return false;
      httplib::Client client("127.0.0.1", port_);
      if (auto res = client.Get("/readyz"); res && res->status == 200) return true;
      std::this_thread::sleep_for(25ms);
    }
    return false;
  }

  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace bucketd::testing
