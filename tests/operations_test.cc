// The operator's view of the real binaries (issue 19): what `--version` prints, what /metrics
// says (and that promtool accepts it), how the server takes signals and probes (also while the
// log replays), what it tells systemd, --auth-token-file, and the shape of its logs.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
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

TEST_CASE(
    "--buckets applies a bucket read by a bucket leg before its reader, and prunes the "
    "reader first",
    "[operations]") {
  TempDir dir;
  const fs::path defs = dir.path / "buckets";
  fs::create_directories(defs);
  // The reader sorts before what it reads: applied in file order it would be refused.
  WriteFile(
      defs / "a-reader.json",
      R"({"id":"a-reader","criteria":{"type":"bucket","bucketId":"z-inner","check":"member"}})");
  WriteFile(defs / "z-inner.json", R"({"id":"z-inner","name":"Inner","kind":"manual"})");
  bucketd::testing::Sidecar server(dir.path / "data",
                                   {"--buckets", defs.string(), "--prune-buckets"});
  httplib::Client c = server.Client();
  CHECK(BucketName(c, "z-inner") == "Inner");
  CHECK(BucketName(c, "a-reader") == "a-reader");

  fs::remove(defs / "a-reader.json");
  fs::remove(defs / "z-inner.json");
  WriteFile(defs / "keep.json", R"({"id":"keep","name":"Keep","kind":"manual"})");
  REQUIRE(kill(server.pid(), SIGHUP) == 0);
  CHECK(EventuallyNamed(c, "keep", "Keep"));
  CHECK(EventuallyNamed(c, "z-inner", ""));
  CHECK(BucketName(c, "a-reader") == "");
  CHECK(server.Stop() == 0);
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

namespace {

std::string Scrape(httplib::Client& c) {
  auto res = c.Get("/metrics");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  return res->body;
}

bool Has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("/metrics: base units, a request latency histogram, process_*, and promtool accepts it",
          "[operations][metrics]") {
  TempDir dir;
  bucketd::testing::Sidecar server(dir.path);
  httplib::Client c = server.Client();
  // Traffic on several routes and statuses, a sweep and a snapshot, so every family has series.
  REQUIRE(
      c.Put("/v1/buckets/vip", R"({"name":"VIP","kind":"manual"})", "application/json")->status ==
      201);
  REQUIRE(c.Post("/v1/events", R"({"userId":"u1","event":"opened"})", "application/json")->status ==
          200);
  REQUIRE(c.Get("/v1/buckets/nope")->status == 404);
  REQUIRE(c.Get("/no/such/route")->status == 404);
  REQUIRE(c.Post("/v1/sweep", "", "application/json")->status == 200);
  REQUIRE(c.Post("/v1/snapshots", "", "application/json")->status == 201);
  const std::string metrics = Scrape(c);
  INFO(metrics);

  const bucketd::testing::CommandRun promtool = bucketd::testing::PromtoolCheckMetrics(metrics);
  INFO(promtool.output);
  CHECK(promtool.exit_code == 0);
  CHECK(promtool.output.empty());  // no lint finding either

  CHECK(Has(metrics, "# TYPE bucketd_sweep_duration_seconds histogram\n"));
  CHECK(Has(metrics, "bucketd_sweep_duration_seconds_bucket{le=\"0.001\"} "));
  CHECK(Has(metrics, "bucketd_sweep_duration_seconds_count 1\n"));
  CHECK_FALSE(Has(metrics, "_micros"));
  CHECK(Has(metrics, "# TYPE bucketd_http_request_duration_seconds histogram\n"));
  CHECK(Has(metrics,
            "bucketd_http_request_duration_seconds_count{route=\"events\",status=\"200\"} 1\n"));
  CHECK(Has(metrics,
            "bucketd_http_request_duration_seconds_count{route=\"bucket\",status=\"404\"} 1\n"));
  CHECK(Has(metrics,
            "bucketd_http_request_duration_seconds_bucket{route=\"unmatched\","
            "status=\"404\",le=\"+Inf\"} 1\n"));
  CHECK(Has(metrics, "bucketd_http_requests_total{route=\"snapshots\",status=\"201\"} 1\n"));
  CHECK(Has(metrics, "bucketd_snapshot_age_seconds 0.000\n"));  // manual clock: no time passed

  // The process_* families as the client libraries define them, with plausible values.
  for (const char* family :
       {"process_cpu_seconds_total counter", "process_resident_memory_bytes gauge",
        "process_virtual_memory_bytes gauge", "process_open_fds gauge", "process_max_fds gauge",
        "process_start_time_seconds gauge"}) {
    CHECK(Has(metrics, std::string("# TYPE ") + family + "\n"));
  }
  std::smatch start;
  REQUIRE(std::regex_search(metrics, start, std::regex(R"(\nprocess_start_time_seconds (\S+)\n)")));
  CHECK(std::abs(std::stod(start[1].str()) - static_cast<double>(std::time(nullptr))) < 600);
  std::smatch rss;
  REQUIRE(
      std::regex_search(metrics, rss, std::regex(R"(\nprocess_resident_memory_bytes (\d+)\n)")));
  CHECK(std::stoull(rss[1].str()) > 1'000'000);
  std::smatch fds;
  REQUIRE(std::regex_search(metrics, fds, std::regex(R"(\nprocess_open_fds (\d+)\n)")));
  CHECK(std::stoull(fds[1].str()) > 3);  // stdio, the listener, the log's files at least
}

TEST_CASE("/metrics: the snapshot age survives a restart, dated by the snapshot's own instant",
          "[operations][metrics]") {
  TempDir dir;
  {
    bucketd::testing::Sidecar server(dir.path);
    httplib::Client c = server.Client();
    // Not in the metrics before any snapshot: an age of a snapshot that does not exist.
    CHECK_FALSE(Has(Scrape(c), "bucketd_snapshot_age_seconds"));
    REQUIRE(c.Post("/v1/clock", R"({"now":"2026-01-01T00:10:00Z"})", "application/json")->status ==
            200);
    REQUIRE(c.Post("/v1/snapshots", "", "application/json")->status == 201);
    REQUIRE(server.Stop() == 0);
  }
  bucketd::testing::Sidecar server(dir.path);
  httplib::Client c = server.Client();
  // The manual clock resumes at the log's last instant, which is the snapshot's: 90 s later
  // on that clock, the snapshot is 90 s old.
  REQUIRE(c.Post("/v1/clock", R"({"now":"2026-01-01T00:11:30Z"})", "application/json")->status ==
          200);
  const std::string metrics = Scrape(c);
  INFO(metrics);
  CHECK(Has(metrics, "\nbucketd_snapshot_age_seconds 90.000\n"));
}

namespace {

void WriteMode(const fs::path& path, const std::string& text, fs::perms perms) {
  WriteFile(path, text);
  fs::permissions(path, perms);
}

constexpr fs::perms kOwnerOnly = fs::perms::owner_read | fs::perms::owner_write;

// GET /v1/buckets with `token` as the bearer token ("" sends none): the status.
int ListStatus(const bucketd::testing::Sidecar& server, const std::string& token) {
  httplib::Client c = server.Client();
  httplib::Headers headers;
  if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
  auto res = c.Get("/v1/buckets", headers);
  REQUIRE(res);
  return res->status;
}

}  // namespace

TEST_CASE("--auth-token-file: the file's line is the token, a loose mode is warned about",
          "[operations][auth]") {
  TempDir dir;
  const fs::path token = dir.path / "token";
  const fs::path log = dir.path / "stderr.log";
  WriteMode(token, "s3cret-token\n", kOwnerOnly);
  {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    REQUIRE(fd >= 0);
    bucketd::testing::Sidecar server(dir.path / "data", {"--auth-token-file", token.string()}, fd);
    close(fd);
    CHECK(ListStatus(server, "") == 401);
    CHECK(ListStatus(server, "s3cret-token") == 200);
    CHECK(server.Stop() == 0);
  }
  for (const std::string& line : Lines(log)) CHECK_FALSE(Has(line, "auth_token_file_readable"));

  // Through the environment, CRLF-terminated, readable by the group: served, with a warning.
  WriteMode(token, "other-token\r\n", kOwnerOnly | fs::perms::group_read);
  {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    REQUIRE(fd >= 0);
    setenv("BUCKETD_TOKEN_FILE", token.c_str(), 1);
    bucketd::testing::Sidecar server(dir.path / "data", {}, fd);
    unsetenv("BUCKETD_TOKEN_FILE");
    close(fd);
    CHECK(ListStatus(server, "s3cret-token") == 401);
    CHECK(ListStatus(server, "other-token") == 200);
    CHECK(server.Stop() == 0);
  }
  bool warned = false;
  for (const std::string& line : Lines(log)) {
    warned |= Has(line, "level=warning event=auth_token_file_readable path=" + token.string());
  }
  CHECK(warned);
}

TEST_CASE("--auth-token-file: an empty, unreadable or doubled token refuses to start",
          "[operations][auth]") {
  TempDir dir;
  const fs::path token = dir.path / "token";
  const std::string start = bucketd::testing::SidecarBinary() + " --listen 127.0.0.1:0 --data '" +
                            (dir.path / "data").string() + "' ";
  const auto refused = [&](const std::string& args, const std::string& reason) {
    const Run run = RunCommand(start + args + " 2>&1");
    INFO(args);
    INFO(run.output);
    CHECK(run.exit_code == 1);
    CHECK(Has(run.output, "--auth-token-file"));
    CHECK(Has(run.output, reason));
    CHECK_FALSE(Has(run.output, "event=listening"));
  };
  WriteMode(token, "", kOwnerOnly);
  refused("--auth-token-file '" + token.string() + "'", "holds no token");
  WriteMode(token, "\n", kOwnerOnly);
  refused("--auth-token-file '" + token.string() + "'", "holds no token");
  WriteMode(token, "two words\n", kOwnerOnly);
  refused("--auth-token-file '" + token.string() + "'", "without spaces");
  refused("--auth-token-file '" + (dir.path / "missing").string() + "'", "cannot read");
  refused("--auth-token-file '" + dir.path.string() + "'", "not a regular file");
  WriteMode(token, "s3cret\n", kOwnerOnly);
  refused("--auth-token x --auth-token-file '" + token.string() + "'", "not both");
  refused(
      "--auth-token-file '" + token.string() + "' --cluster-url nats://127.0.0.1:1 --auth-token x",
      "not both");
}

namespace {

// A data dir whose log takes a while to replay (no snapshot): a million synthetic events,
// about a second to replay on one thread here, longer on a loaded machine.
void WriteLongLog(const fs::path& data) {
  const Run workload = RunCommand(BucketctlBinary() + " workload --data '" + data.string() +
                                  "' --users 50000 --events 1000000 --seed 19 --manual-clock");
  INFO(workload.output);
  REQUIRE(workload.exit_code == 0);
}

std::vector<std::string> ReplayArgs() { return {"--clock", "manual", "--replay-threads", "1"}; }

// The status of GET `path` and its body; 0 when the connection failed.
std::pair<int, std::string> Get(int port, const std::string& path) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(1, 0);
  auto res = c.Get(path.c_str());
  if (!res) return {0, ""};
  return {res->status, res->body};
}

std::string JsonString(const std::string& json, const char* key) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(json).get(root) != 0) return "";
  std::string_view value;
  if (root[key].get_string().get(value) != 0) return "";
  return std::string(value);
}

}  // namespace

TEST_CASE("the port answers during replay: /healthz 200, /readyz and the API 503 starting",
          "[operations][readiness]") {
  TempDir dir;
  WriteLongLog(dir.path / "data");
  const int port = bucketd::testing::FreePort();
  bucketd::testing::ChildProcess child(bucketd::testing::SpawnProcess(
      bucketd::testing::SidecarArgs(port, dir.path / "data", ReplayArgs())));
  REQUIRE(child.pid() > 0);

  bool saw_starting = false;
  bool healthy_while_starting = false;
  bool api_starting = false;
  bool ready = false;
  // 60 s at most, by the clock: counting polls instead ended the wait after ~10 s when the
  // 503s came back fast, which a replay on a loaded machine outlasts.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!ready && std::chrono::steady_clock::now() < deadline) {
    REQUIRE_FALSE(child.Exited());
    const auto [status, body] = Get(port, "/readyz");
    if (status == 503) {
      CHECK(JsonString(body, "status") == "starting");
      saw_starting = true;
      // Asked while /readyz said starting; the replay may end in between, so only a 200
      // with "starting" counts as the liveness answer given during the replay.
      const auto [health, health_body] = Get(port, "/healthz");
      healthy_while_starting |= health == 200 && JsonString(health_body, "status") == "starting";
      const auto [api, api_body] = Get(port, "/v1/buckets");
      if (api == 503) {
        CHECK(JsonString(api_body, "status") == "starting");
        api_starting = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    } else if (status == 200) {
      CHECK(JsonString(body, "status") == "ready");
      ready = true;
    } else {
      CHECK(status == 0);  // not bound yet: nothing else may answer
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  CHECK(saw_starting);
  CHECK(healthy_while_starting);
  CHECK(api_starting);
  REQUIRE(ready);
  // Replayed: the state is the log's.
  const auto [status, body] = Get(port, "/v1/state");
  CHECK(status == 200);
  kill(child.pid(), SIGTERM);
  const int exit_status = child.Wait();
  CHECK((WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0));
}

TEST_CASE("a busy port is refused before the replay starts", "[operations][readiness]") {
  TempDir dir;
  WriteLongLog(dir.path / "data");
  bucketd::testing::Sidecar first(dir.path / "first");
  const fs::path log = dir.path / "stderr.log";
  const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  std::vector<std::string> extra = ReplayArgs();
  extra.insert(extra.end(), {"--log-level", "info"});
  bucketd::testing::ChildProcess child(bucketd::testing::SpawnProcess(
      bucketd::testing::SidecarArgs(first.port(), dir.path / "data", extra), fd));
  close(fd);
  const int exit_status = child.Wait();
  CHECK((WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 1));
  const std::vector<std::string> lines = Lines(log);
  bool listen_failed = false;
  for (const std::string& line : lines) {
    INFO(line);
    listen_failed |= Has(line, "event=listen_failed");
    CHECK_FALSE(Has(line, "event=opened"));  // it never replayed
  }
  CHECK(listen_failed);
}

namespace {

// A unix datagram socket as systemd's NOTIFY_SOCKET: what bucketd sends with sd_notify.
class NotifySocket {
 public:
  explicit NotifySocket(const fs::path& path) : path_(path) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(path.string().size() < sizeof addr.sun_path);
    std::strcpy(addr.sun_path, path.c_str());
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~NotifySocket() { close(fd_); }

  // The next message, or "" after `timeout`.
  std::string Next(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(timeout.count())) != 1) return "";
    char buffer[4096];
    const ssize_t n = recv(fd_, buffer, sizeof buffer, 0);
    return n > 0 ? std::string(buffer, n) : "";
  }

  // Reads messages until one holds `line` (a whole line of it): that message, or "" after 30 s.
  // `before` gets the messages read on the way.
  std::string Await(const std::string& line, std::vector<std::string>* before = nullptr) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      std::string message = Next(std::chrono::milliseconds(500));
      if (message.empty()) continue;
      if (HasLine(message, line)) return message;
      if (before) before->push_back(message);
    }
    return "";
  }

  static bool HasLine(const std::string& message, const std::string& line) {
    std::istringstream in(message);
    for (std::string l; std::getline(in, l);) {
      if (l == line) return true;
    }
    return false;
  }

 private:
  fs::path path_;
  int fd_ = -1;
};

}  // namespace

TEST_CASE("sd_notify: READY=1 after the replay, WATCHDOG=1 pings, RELOADING=1, STOPPING=1",
          "[operations][systemd]") {
  TempDir dir;
  WriteLongLog(dir.path / "data");
  NotifySocket notify(dir.path / "notify");
  const int port = bucketd::testing::FreePort();
  setenv("NOTIFY_SOCKET", (dir.path / "notify").c_str(), 1);
  setenv("WATCHDOG_USEC", "400000", 1);  // a ping every 200 ms
  bucketd::testing::ChildProcess child(bucketd::testing::SpawnProcess(
      bucketd::testing::SidecarArgs(port, dir.path / "data", ReplayArgs())));
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  REQUIRE(child.pid() > 0);

  std::vector<std::string> before_ready;
  const std::string ready = notify.Await("READY=1", &before_ready);
  INFO(ready);
  REQUIRE(!ready.empty());
  // Ready means replayed and accepting inputs: the routes are the engine's by then.
  CHECK(Get(port, "/readyz").first == 200);
  CHECK(NotifySocket::HasLine(ready, "STATUS=serving"));
  // While replaying it said so, and it pinged no watchdog: no engine to vouch for yet.
  REQUIRE(before_ready.size() == 1);
  CHECK(before_ready[0] == "STATUS=opening the data dir and replaying the log");

  for (int ping = 0; ping < 3; ++ping) CHECK(notify.Await("WATCHDOG=1") == "WATCHDOG=1");

  REQUIRE(kill(child.pid(), SIGHUP) == 0);
  CHECK(NotifySocket::HasLine(notify.Await("RELOADING=1"), "RELOADING=1"));
  CHECK(NotifySocket::HasLine(notify.Await("READY=1"), "READY=1"));

  REQUIRE(kill(child.pid(), SIGTERM) == 0);
  CHECK(NotifySocket::HasLine(notify.Await("STOPPING=1"), "STOPPING=1"));
  const int exit_status = child.Wait();
  CHECK((WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0));
}

TEST_CASE("a stop signal during the replay: no serving, exit 0 once the replay is done",
          "[operations][readiness]") {
  TempDir dir;
  WriteLongLog(dir.path / "data");
  const fs::path log = dir.path / "stderr.log";
  const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  const int port = bucketd::testing::FreePort();
  std::vector<std::string> extra = ReplayArgs();
  extra.insert(extra.end(), {"--log-level", "info"});
  bucketd::testing::ChildProcess child(bucketd::testing::SpawnProcess(
      bucketd::testing::SidecarArgs(port, dir.path / "data", extra), fd));
  close(fd);
  // Once /readyz says starting, the signal surely lands during the replay.
  bool starting = false;
  for (int i = 0; i < 3000 && !starting; ++i) {
    const auto [status, body] = Get(port, "/readyz");
    if (status == 200) break;  // replayed already: the check below fails and says so
    starting = status == 503 && JsonString(body, "status") == "starting";
    if (!starting) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  REQUIRE(starting);
  REQUIRE(kill(child.pid(), SIGTERM) == 0);
  const int exit_status = child.Wait();
  CHECK((WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0));
  bool opened = false, ready = false, stopped = false;
  for (const std::string& line : Lines(log)) {
    opened |= Has(line, "event=opened");
    ready |= Has(line, "event=ready");
    stopped |= Has(line, "event=stopped");
  }
  CHECK(opened);
  CHECK_FALSE(ready);
  CHECK(stopped);
}

TEST_CASE("sd_notify: a failed log withholds the WATCHDOG=1 pings", "[operations][systemd]") {
  TempDir dir;
  const fs::path small = dir.path / "small";
  fs::create_directories(small);
  // A full disk is the log failure a test can cause for real (as server_test's full-disk case).
  REQUIRE(::mount("tmpfs", small.c_str(), "tmpfs", 0, "size=24m") == 0);  // the suite runs as root
  struct Unmount {
    fs::path path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{small};
  NotifySocket notify(dir.path / "notify");
  setenv("NOTIFY_SOCKET", (dir.path / "notify").c_str(), 1);
  setenv("WATCHDOG_USEC", "200000", 1);  // a ping every 100 ms
  bucketd::testing::Sidecar server(small / "data");
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  REQUIRE(notify.Await("WATCHDOG=1") == "WATCHDOG=1");

  httplib::Client c = server.Client();
  const std::string padding(4000, 'p');
  int status = 200;
  for (int round = 0; status == 200 && round < 10000; ++round) {
    std::string body = "[";
    for (int i = 0; i < 50; ++i) {
      if (i > 0) body += ",";
      body += R"({"userId":"u)" + std::to_string(round * 50 + i) +
              R"(","event":"used","contactProperties":{"pad":")" + padding + R"("}})";
    }
    auto res = c.Post("/v1/events", body + "]", "application/json");
    REQUIRE(res);
    status = res->status;
  }
  REQUIRE(status == 507);
  REQUIRE(c.Get("/healthz")->status == 503);
  // A ping whose probe began before the failure may still arrive: let those pass, then ten
  // periods without one.
  while (!notify.Next(std::chrono::milliseconds(300)).empty()) {
  }
  std::vector<std::string> later;
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
       std::chrono::steady_clock::now() < until;) {
    if (std::string m = notify.Next(std::chrono::milliseconds(100)); !m.empty()) later.push_back(m);
  }
  for (const std::string& message : later)
    CHECK_FALSE(NotifySocket::HasLine(message, "WATCHDOG=1"));
  // No exit code check: closing the engine after a failed log fails too (exit 1).
}
