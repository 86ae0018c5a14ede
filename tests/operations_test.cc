// The operator's view of the real binaries (issue 19): what `--version` prints, what /metrics
// says about the build, how the server takes signals and probes, and the shape of its logs.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <simdjson.h>
#include <catch2/catch.hpp>

#include "tests/command_test_support.h"
#include "tests/sidecar_test_support.h"

namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "bucketd-operations-test-XXXXXX").string();
    path = mkdtemp(templ.data());
  }
  ~TempDir() { fs::remove_all(path); }
};

using Run = bucketd::testing::CommandRun;
using bucketd::testing::RunCommand;

std::string BucketctlBinary() {
  const char* bin = std::getenv("BUCKETCTL_BIN");
  REQUIRE(bin != nullptr);  // CTest sets it
  return bin;
}

}  // namespace

TEST_CASE("--version: bucketd and bucketctl print the same version and commit, exit 0",
          "[operations]") {
  const Run server = RunCommand(bucketd::testing::SidecarBinary() + " --version");
  CHECK(server.exit_code == 0);
  INFO(server.output);
  CHECK(std::regex_match(server.output, std::regex(R"(bucketd \d+\.\d+\.\d+ \([^()\s]+\)\n)")));
  const Run ctl = RunCommand(BucketctlBinary() + " --version");
  CHECK(ctl.exit_code == 0);
  CHECK(ctl.output == server.output);
}

TEST_CASE("/metrics: bucketd_build_info names the version and commit --version prints",
          "[operations]") {
  const Run version = RunCommand(bucketd::testing::SidecarBinary() + " --version");
  std::smatch printed;
  REQUIRE(std::regex_match(version.output, printed, std::regex(R"(bucketd (\S+) \((\S+)\)\n)")));
  TempDir dir;
  bucketd::testing::Sidecar server(dir.path);
  httplib::Client c = server.Client();
  auto res = c.Get("/metrics");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  const std::string gauge = "bucketd_build_info{version=\"" + printed[1].str() + "\",commit=\"" +
                            printed[2].str() + "\"} 1\n";
  INFO(res->body);
  CHECK(res->body.find("# TYPE bucketd_build_info gauge\n" + gauge) != std::string::npos);
}

TEST_CASE("bucketctl: BUCKETD_DATA stands for --data; help shows the defaults", "[operations]") {
  TempDir dir;
  {
    bucketd::testing::Sidecar server(dir.path);
    httplib::Client c = server.Client();
    auto res = c.Put("/v1/buckets/vip", R"({"name":"VIP","kind":"manual"})", "application/json");
    REQUIRE(res);
    REQUIRE(res->status == 201);
    REQUIRE(server.Stop() == 0);
  }
  // The variable alone: the log the server wrote is the one inspected.
  const Run inspect =
      RunCommand("env BUCKETD_DATA='" + dir.path.string() + "' " + BucketctlBinary() + " inspect");
  INFO(inspect.output);
  CHECK(inspect.exit_code == 0);
  CHECK(inspect.output.find("log             seq 1 ..") != std::string::npos);
  // Neither the flag nor the variable: refused, not run on the current directory.
  CHECK(RunCommand("env -u BUCKETD_DATA " + BucketctlBinary() + " inspect 2>/dev/null").exit_code !=
        0);

  const Run replay_help = RunCommand(BucketctlBinary() + " replay --help");
  CHECK(replay_help.output.find("BUCKETD_DATA") != std::string::npos);
  CHECK(std::regex_search(replay_help.output, std::regex(R"(--threads\s.*=0\s)")));
  const Run workload_help = RunCommand(BucketctlBinary() + " workload --help");
  CHECK(std::regex_search(workload_help.output, std::regex(R"(--batch\s.*=1000\s)")));
  CHECK(std::regex_search(workload_help.output, std::regex(R"(--start-time\s.*=1767225600000\s)")));
}

namespace {

void WriteFile(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

// The bucket's name as GET /v1/buckets/{id} answers it ("" when not 200).
std::string BucketName(httplib::Client& c, const std::string& id) {
  auto res = c.Get(("/v1/buckets/" + id).c_str());
  if (!res || res->status != 200) return "";
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(res->body).get(root) != 0) return "";
  std::string_view name;
  if (root["name"].get_string().get(name) != 0) return "";
  return std::string(name);
}

// SIGHUP is handled on the server's own thread, after kill() returns: poll for its effect.
bool EventuallyNamed(httplib::Client& c, const std::string& id, const std::string& name) {
  using namespace std::chrono_literals;
  for (int i = 0; i < 200; ++i) {
    if (BucketName(c, id) == name) return true;
    std::this_thread::sleep_for(25ms);
  }
  return false;
}

}  // namespace

TEST_CASE("SIGHUP re-applies --buckets; a bad file is logged and the server keeps serving",
          "[operations]") {
  TempDir dir;
  const fs::path defs = dir.path / "buckets";
  fs::create_directories(defs);
  WriteFile(defs / "vip.json", R"({"id":"vip","name":"VIP","kind":"manual"})");
  bucketd::testing::Sidecar server(dir.path / "data", {"--buckets", defs.string()});
  httplib::Client c = server.Client();
  REQUIRE(BucketName(c, "vip") == "VIP");

  WriteFile(defs / "vip.json", R"({"id":"vip","name":"VIP renamed","kind":"manual"})");
  WriteFile(defs / "new.json", R"({"id":"new","name":"New","kind":"manual"})");
  REQUIRE(kill(server.pid(), SIGHUP) == 0);
  CHECK(EventuallyNamed(c, "vip", "VIP renamed"));
  CHECK(EventuallyNamed(c, "new", "New"));

  // A file that does not parse: nothing is applied, not even the files before it, and the
  // server stays up; the next SIGHUP with the file fixed applies everything.
  WriteFile(defs / "new.json", R"({"id":"new","name":"New again","kind":"manual"})");
  WriteFile(defs / "vip.json", R"({"id":"vip","name":"Broken",)");
  REQUIRE(kill(server.pid(), SIGHUP) == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(BucketName(c, "vip") == "VIP renamed");
  CHECK(BucketName(c, "new") == "New");
  WriteFile(defs / "vip.json", R"({"id":"vip","name":"VIP fixed","kind":"manual"})");
  REQUIRE(kill(server.pid(), SIGHUP) == 0);
  CHECK(EventuallyNamed(c, "vip", "VIP fixed"));
  CHECK(BucketName(c, "new") == "New again");
  CHECK(server.Stop() == 0);  // SIGTERM still stops it cleanly after the reloads
}

TEST_CASE("SIGHUP without --buckets changes nothing and the server stays up", "[operations]") {
  TempDir dir;
  bucketd::testing::Sidecar server(dir.path);
  httplib::Client c = server.Client();
  REQUIRE(kill(server.pid(), SIGHUP) == 0);
  REQUIRE(kill(server.pid(), SIGHUP) == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto res = c.Get("/healthz");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(server.Stop() == 0);
}

namespace {

// A loopback TCP connection to `port`, for requests sent in pieces.
int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  return fd;
}

void SendAll(int fd, const std::string& text) {
  REQUIRE(send(fd, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size()));
}

std::string ReadToEnd(int fd) {
  std::string out;
  char buffer[4096];
  for (ssize_t n; (n = recv(fd, buffer, sizeof buffer, 0)) > 0;) out.append(buffer, n);
  return out;
}

}  // namespace

TEST_CASE("/readyz: 200 ready while serving, 503 shutting_down once SIGTERM arrives",
          "[operations]") {
  TempDir dir;
  bucketd::testing::Sidecar server(dir.path);
  httplib::Client c = server.Client();
  auto res = c.Get("/readyz");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->body == R"({"status":"ready"})");

  // A request whose headers arrived before the signal is still served during the drain (its
  // body is still on its way): it sees the server stopping.
  const int fd = Connect(server.port());
  SendAll(
      fd,
      "GET /readyz HTTP/1.1\r\nHost: " + server.authority() +
          "\r\nContent-Type: application/json\r\nContent-Length: 1\r\nConnection: close\r\n\r\n");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  REQUIRE(kill(server.pid(), SIGTERM) == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  SendAll(fd, "0");
  const std::string reply = ReadToEnd(fd);
  close(fd);
  INFO(reply);
  CHECK(reply.starts_with("HTTP/1.1 503"));
  CHECK(reply.ends_with(R"({"status":"shutting_down"})"));
  CHECK(server.Stop(0) == 0);
}

namespace {

// The child's stderr, one entry a line.
std::vector<std::string> Lines(const fs::path& file) {
  std::ifstream in(file);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Whether `ts` (2026-01-01T00:00:00.000Z) is within a minute of now, read as UTC: a local
// time in a zone away from UTC would be hours off.
bool IsUtcNow(const std::string& ts) {
  std::tm tm{};
  if (strptime(ts.c_str(), "%Y-%m-%dT%H:%M:%S", &tm) == nullptr) return false;
  return std::abs(std::difftime(timegm(&tm), std::time(nullptr))) < 60;
}

// Runs a server with `extra` flags at log level info in a zone five and a half hours from
// UTC, its stderr in `log`; reload: write a broken definitions file and SIGHUP, so that a
// line carries an error with quotes in it.
void RunLogging(const TempDir& dir, const fs::path& log, std::vector<std::string> extra) {
  const fs::path defs = dir.path / "buckets";
  fs::create_directories(defs);
  WriteFile(defs / "vip.json", R"({"id":"vip","name":"VIP","kind":"manual"})");
  extra.insert(extra.end(), {"--log-level", "info", "--buckets", defs.string()});
  const char* tz = std::getenv("TZ");
  const std::string saved_tz = tz ? tz : "";
  setenv("TZ", "Asia/Kolkata", 1);
  const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  {
    bucketd::testing::Sidecar server(dir.path / "data", extra, fd);
    WriteFile(defs / "vip.json", R"({"id":"vip","name":"Broken",)");
    REQUIRE(kill(server.pid(), SIGHUP) == 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    CHECK(server.Stop() == 0);
  }
  close(fd);
  if (tz) {
    setenv("TZ", saved_tz.c_str(), 1);
  } else {
    unsetenv("TZ");
  }
}

}  // namespace

TEST_CASE("logs: UTC RFC 3339 with milliseconds and Z, then level=, on stderr", "[operations]") {
  TempDir dir;
  const fs::path log = dir.path / "stderr.log";
  RunLogging(dir, log, {});
  const std::vector<std::string> lines = Lines(log);
  REQUIRE(lines.size() >= 4);  // opened, bucket_loaded, listening, reload..., shutdown, stopped
  const std::regex line(
      R"((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) level=(info|warning|error) event=\S+.*)");
  bool reload_failed = false;
  for (const std::string& text : lines) {
    INFO(text);
    std::smatch match;
    REQUIRE(std::regex_match(text, match, line));
    CHECK(IsUtcNow(match[1].str()));
    reload_failed |= text.find("level=error event=reload_failed") != std::string::npos;
  }
  CHECK(reload_failed);
}

TEST_CASE("logs: --log-format json writes one object a line: ts, level, msg", "[operations]") {
  TempDir dir;
  const fs::path log = dir.path / "stderr.log";
  RunLogging(dir, log, {"--log-format", "json"});
  const std::vector<std::string> lines = Lines(log);
  REQUIRE(lines.size() >= 4);
  bool reload_failed = false;
  for (const std::string& text : lines) {
    INFO(text);
    simdjson::dom::parser parser;
    simdjson::dom::object object;
    REQUIRE(parser.parse(text).get(object) == 0);
    CHECK(object.size() == 3);
    std::string_view ts, level, msg;
    REQUIRE(object["ts"].get_string().get(ts) == 0);
    REQUIRE(object["level"].get_string().get(level) == 0);
    REQUIRE(object["msg"].get_string().get(msg) == 0);
    CHECK(
        std::regex_match(std::string(ts), std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")));
    CHECK(IsUtcNow(std::string(ts)));
    CHECK(msg.starts_with("event="));
    // The failed reload's message holds quotes (error="..."): escaped, the line still parses.
    if (msg.starts_with("event=reload_failed")) {
      reload_failed = true;
      CHECK(level == "error");
      CHECK(msg.find("error=\"") != std::string_view::npos);
    }
  }
  CHECK(reload_failed);
}
