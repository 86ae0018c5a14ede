#pragma once
// NATS servers for the cluster suites: N (1 or 3) `nats-server` processes with JetStream,
// each on free loopback ports with its store in a temp dir, clustered by routes when N > 1.
// The constructor returns once JetStream answers on every server; the destructor SIGKILLs
// what still runs and removes the dirs. One server can be SIGKILLed and restarted on the same
// ports and store (fault tests). Every server dies with the test process (PR_SET_PDEATHSIG),
// so a crashed test never leaves one behind.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nats/nats.h>
#include <catch2/catch.hpp>

#include "tests/test_support.h"

namespace bucketd::testing {

// A loopback TCP port nothing listens on now. Another process may take it before the server
// binds it; the window is milliseconds and a clash fails the start loudly.
inline int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  close(fd);
  return ntohs(addr.sin_port);
}

class NatsCluster {
 public:
  // Bounds a start (JetStream ready on every server, meta leader elected) takes here.
  static constexpr auto kReadyTimeout = std::chrono::seconds(30);

  explicit NatsCluster(int servers) {
    REQUIRE((servers == 1 || servers == 3));
    name_ = "bucketd-test-" + std::to_string(getpid());
    for (int i = 0; i < servers; ++i) {
      Server s;
      s.name = "n" + std::to_string(i);
      s.client_port = FreeLoopbackPort();
      s.cluster_port = FreeLoopbackPort();
      s.store_dir = dir_.path() + "/" + s.name;
      servers_.push_back(s);
    }
    for (int i = 0; i < servers; ++i) Start(i);
    WaitReady();
  }
  NatsCluster(const NatsCluster&) = delete;
  NatsCluster& operator=(const NatsCluster&) = delete;

  int size() const { return static_cast<int>(servers_.size()); }
  // Every server's client URL, comma-separated: a client fails over between them.
  std::string url() const {
    std::string out;
    for (size_t i = 0; i < servers_.size(); ++i) out += (i ? "," : "") + url(static_cast<int>(i));
    return out;
  }
  std::string url(int i) const {
    return "nats://127.0.0.1:" + std::to_string(servers_.at(i).client_port);
  }

  // SIGKILL: no shutdown, no flush, as a machine that dies.
  void Kill(int i) {
    Server& s = servers_.at(i);
    REQUIRE(s.pid > 0);
    kill(s.pid, SIGKILL);
    int status = 0;
    waitpid(s.pid, &status, 0);
    s.pid = -1;
  }
  // Same name, ports and store dir; returns once that server's JetStream answers.
  void Restart(int i) {
    REQUIRE(servers_.at(i).pid < 0);
    Start(i);
    WaitReady(i);
  }

  // Waits until `$JS.API.INFO` answers without error on every live server.
  void WaitReady() {
    for (int i = 0; i < size(); ++i) {
      if (servers_[i].pid > 0) WaitReady(i);
    }
  }

 private:
  struct Server {
    std::string name;
    int client_port = 0;
    int cluster_port = 0;
    std::string store_dir;
    pid_t pid = -1;
  };

  void Start(int i) {
    const Server& me = servers_.at(i);
    std::vector<std::string> args = {
        "nats-server", "-a",    "127.0.0.1", "-p",  std::to_string(me.client_port),
        "-n",          me.name, "-js",       "-sd", me.store_dir};
    if (size() > 1) {
      std::string routes;
      for (const Server& other : servers_) {
        if (other.name == me.name) continue;
        routes += (routes.empty() ? "" : ",") + std::string("nats://127.0.0.1:") +
                  std::to_string(other.cluster_port);
      }
      args.insert(args.end(),
                  {"--cluster_name", name_, "--cluster",
                   "nats://127.0.0.1:" + std::to_string(me.cluster_port), "--routes", routes});
    }
    const std::string log_path = dir_.path() + "/" + me.name + ".log";
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
      }
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execvp(argv[0], argv.data());
      _exit(127);
    }
    servers_.at(i).pid = pid;
  }

  std::string Log(int i) const {
    std::ifstream in(dir_.path() + "/" + servers_.at(i).name + ".log");
    std::stringstream text;
    text << in.rdbuf();
    const std::string all = text.str();
    return all.size() > 4000 ? all.substr(all.size() - 4000) : all;
  }

  void WaitReady(int i) {
    const auto deadline = std::chrono::steady_clock::now() + kReadyTimeout;
    std::string last;
    for (;;) {
      int status = 0;
      if (waitpid(servers_[i].pid, &status, WNOHANG) == servers_[i].pid) {
        servers_[i].pid = -1;
        FAIL("nats-server " << servers_[i].name << " exited:\n" << Log(i));
      }
      if (JetStreamAnswers(url(i), &last)) return;
      if (std::chrono::steady_clock::now() > deadline) {
        FAIL("JetStream not ready on " << url(i) << " (" << last << "):\n" << Log(i));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  static bool JetStreamAnswers(const std::string& url, std::string* why) {
    natsConnection* nc = nullptr;
    natsOptions* opts = nullptr;
    natsOptions_Create(&opts);
    natsOptions_SetURL(opts, url.c_str());
    natsOptions_SetTimeout(opts, 500);
    natsOptions_SetAllowReconnect(opts, false);
    natsStatus s = natsConnection_Connect(&nc, opts);
    natsOptions_Destroy(opts);
    if (s != NATS_OK) {
      *why = std::string("connect: ") + natsStatus_GetText(s);
      return false;
    }
    natsMsg* reply = nullptr;
    s = natsConnection_RequestString(&reply, nc, "$JS.API.INFO", "", 1000);
    bool ok = false;
    if (s != NATS_OK) {
      *why = std::string("$JS.API.INFO: ") + natsStatus_GetText(s);
    } else {
      // An answer before the meta leader exists carries an "error" object (503).
      const std::string body(natsMsg_GetData(reply), natsMsg_GetDataLength(reply));
      ok = body.find("\"error\"") == std::string::npos;
      if (!ok) *why = body;
    }
    natsMsg_Destroy(reply);
    natsConnection_Destroy(nc);
    return ok;
  }

  // Kills what still runs when the cluster goes, also when a REQUIRE in the constructor
  // throws (no destructor of NatsCluster runs then; its members' do). Declared after dir_,
  // so the servers are dead before their store dirs are removed.
  struct Servers : std::vector<Server> {
    ~Servers() {
      for (Server& s : *this) {
        if (s.pid <= 0) continue;
        kill(s.pid, SIGKILL);
        waitpid(s.pid, nullptr, 0);
      }
    }
  };

  TempDir dir_;
  std::string name_;
  Servers servers_;
};

}  // namespace bucketd::testing
