// The `bucketd` transport against hostile clients (issue 21): idle and slow connections,
// long-polls, bodies that dodge the size limit, ambiguous framing, and browser pages aiming
// at a tokenless server. Malformed requests go over raw POSIX sockets; no assertion is
// timed tighter than a generous bound.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <simdjson.h>
#include <catch2/catch.hpp>

#include "tests/sidecar_test_support.h"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

using bucketd::testing::SidecarArgs;
using bucketd::testing::SpawnProcess;
using Server = bucketd::testing::Sidecar;

struct TempDir {
  fs::path path;
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "bucketd-hostile-test-XXXXXX").string();
    path = mkdtemp(templ.data());
  }
  ~TempDir() { fs::remove_all(path); }
};

// A connected loopback socket; the test closes it. Reads time out after 10 s.
int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  return fd;
}

// Sends what it can (the server may close first), ignoring errors.
void SendAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

std::string ReadToEnd(int fd) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

struct RawResponse {
  int status = 0;
  std::string head;
  std::string body;
};

RawResponse Parse(const std::string& text) {
  RawResponse res;
  // Skip interim 100 Continue responses.
  size_t start = 0;
  while (text.compare(start, 12, "HTTP/1.1 100") == 0) {
    start = text.find("\r\n\r\n", start) + 4;
  }
  if (text.size() >= start + 12) res.status = std::stoi(text.substr(start + 9, 3));
  size_t end = text.find("\r\n\r\n", start);
  if (end != std::string::npos) {
    res.head = text.substr(start, end - start);
    res.body = text.substr(end + 4);
  }
  return res;
}

// One raw request on a fresh connection (it should ask to close); the whole answer.
RawResponse Raw(int port, std::string_view request) {
  int fd = Connect(port);
  SendAll(fd, request);
  std::string text = ReadToEnd(fd);
  close(fd);
  return Parse(text);
}

void RequireError(const RawResponse& res, int status, std::string_view code,
                  std::string_view field = "") {
  INFO(res.head << "\n" << res.body);
  REQUIRE(res.status == status);
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  REQUIRE(parser.parse(res.body).get(root) == 0);
  CHECK(root["error"]["code"].get_string().value() == code);
  if (!field.empty()) CHECK(root["error"]["field"].get_string().value() == field);
}

const char* kEvent = R"({"userId":"u1","event":"e"})";

std::string PostEvents(const Server& s, const std::string& headers, std::string_view body) {
  return "POST /v1/events HTTP/1.1\r\nHost: " + s.authority() + "\r\nConnection: close\r\n" +
         headers + "\r\n" + std::string(body);
}

// `body` in two chunks.
std::string Chunked(const std::string& body) {
  const size_t half = body.size() / 2;
  char line[32];
  std::string out;
  for (std::string_view part :
       {std::string_view(body).substr(0, half), std::string_view(body).substr(half)}) {
    snprintf(line, sizeof(line), "%zx\r\n", part.size());
    out += line;
    out += part;
    out += "\r\n";
  }
  return out + "0\r\n\r\n";
}

bool Healthy(const Server& s) {
  httplib::Client c = s.Client();
  auto res = c.Get("/healthz");
  return res && res->status == 200;
}

}  // namespace

TEST_CASE("hostile: 200 idle connections and 50 long-polls leave /healthz answering",
          "[server][hostile]") {
  TempDir dir;
  Server server(dir.path);
  std::vector<int> idle;
  for (int i = 0; i < 200; ++i) idle.push_back(Connect(server.port()));
  std::vector<int> polls;
  const std::string poll =
      "GET /v1/transitions?after=0&wait=30 HTTP/1.1\r\nHost: " + server.authority() + "\r\n\r\n";
  for (int i = 0; i < 50; ++i) {
    polls.push_back(Connect(server.port()));
    SendAll(polls.back(), poll);
  }
  std::this_thread::sleep_for(200ms);  // let the polls park

  // A thread-per-connection server with 32 threads answers neither within the bound.
  httplib::Client c = server.Client();
  c.set_read_timeout(2, 0);
  const auto start = Clock::now();
  auto res = c.Get("/healthz");
  REQUIRE(res);
  CHECK(res->status == 200);
  auto state = c.Get("/v1/state");
  REQUIRE(state);
  CHECK(state->status == 200);
  CHECK(Clock::now() - start < 2s);

  // SIGTERM wakes the parked polls (each gets its empty page) and exits cleanly, without
  // sitting out their 30 s.
  const auto stop_start = Clock::now();
  CHECK(server.Stop() == 0);
  CHECK(Clock::now() - stop_start < 10s);
  for (int fd : polls) {
    RawResponse woken = Parse(ReadToEnd(fd));
    CHECK(woken.status == 200);
    CHECK(woken.body.find("\"transitions\":[]") != std::string::npos);
    close(fd);
  }
  for (int fd : idle) close(fd);
}

TEST_CASE("hostile: a client sending its headers slowly is dropped after the header timeout",
          "[server][hostile]") {
  TempDir dir;
  Server server(dir.path, {"--header-timeout", "1s"});
  int fd = Connect(server.port());
  const std::string request = "GET /healthz HTTP/1.1\r\nHost: " + server.authority() +
                              "\r\nX-Padding: " + std::string(200, 'p') + "\r\n\r\n";
  // One byte every 100 ms: each read makes progress, so only a deadline on the whole
  // header ends it. The 20 s of bytes would finish the request if nothing did.
  const auto start = Clock::now();
  bool dropped = false;
  for (char byte : request) {
    if (send(fd, &byte, 1, MSG_NOSIGNAL) != 1) {
      dropped = true;
      break;
    }
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      char buf[256];
      if (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) <= 0) {
        dropped = true;
        break;
      }
    }
  }
  CHECK(dropped);
  CHECK(Clock::now() - start < 8s);
  close(fd);
  CHECK(Healthy(server));
}

TEST_CASE("hostile: a chunked body over the limit is refused with 413 before it is buffered",
          "[server][hostile]") {
  TempDir dir;
  Server server(dir.path);
  int fd = Connect(server.port());
  SendAll(fd, "POST /v1/events HTTP/1.1\r\nHost: " + server.authority() +
                  "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
  const std::string chunk(1 << 20, ' ');
  char size_line[32];
  snprintf(size_line, sizeof(size_line), "%zx\r\n", chunk.size());
  for (int i = 0; i < 17; ++i) SendAll(fd, size_line + chunk + "\r\n");
  SendAll(fd, "0\r\n\r\n");
  RawResponse res = Parse(ReadToEnd(fd));
  close(fd);
  RequireError(res, 413, "payload_too_large");
  CHECK(Healthy(server));
  // A chunked body under the limit is served.
  RawResponse ok =
      Raw(server.port(), PostEvents(server,
                                    "Content-Type: application/json\r\nTransfer-Encoding: "
                                    "chunked\r\n",
                                    Chunked(std::string("[") + kEvent + "]")));
  INFO(ok.body);
  CHECK(ok.status == 200);
}

TEST_CASE("hostile: a Content-Length body has one deadline; split and pipelined bodies are served",
          "[server][hostile]") {
  TempDir dir;
  Server server(dir.path, {"--body-timeout", "1s"});
  // One byte every 100 ms of a body: each read makes progress, so only a deadline on the
  // whole body ends it (the server reads such a body without the parser, read by read).
  {
    int fd = Connect(server.port());
    SendAll(fd, "POST /v1/events HTTP/1.1\r\nHost: " + server.authority() +
                    "\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n");
    const auto start = Clock::now();
    bool dropped = false;
    for (int i = 0; i < 200 && !dropped; ++i) {
      if (send(fd, " ", 1, MSG_NOSIGNAL) != 1) dropped = true;
      pollfd p{fd, POLLIN, 0};
      if (!dropped && poll(&p, 1, 100) > 0) {
        char buf[256];
        dropped = recv(fd, buf, sizeof(buf), MSG_DONTWAIT) <= 0;
      }
    }
    CHECK(dropped);
    CHECK(Clock::now() - start < 8s);
    close(fd);
  }
  // A body of several reads, sent in pieces, then a second request in the same bytes as
  // the end of the first body: both are answered, in order.
  std::string batch = "[";
  for (int i = 0; i < 3000; ++i) {
    batch += std::string(i == 0 ? "" : ",") + R"({"userId":"split-)" + std::to_string(i) +
             R"(","event":"e"})";
  }
  batch += "]";
  const std::string first =
      "POST /v1/events HTTP/1.1\r\nHost: " + server.authority() +
      "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(batch.size()) +
      "\r\n\r\n" + batch;
  const std::string second =
      PostEvents(server,
                 "Content-Type: application/json\r\nContent-Length: " +
                     std::to_string(std::string_view(kEvent).size()) + "\r\n",
                 kEvent);
  const std::string bytes = first + second;
  int fd = Connect(server.port());
  const size_t piece = 7000;
  for (size_t at = 0; at < bytes.size(); at += piece) {
    SendAll(fd, std::string_view(bytes).substr(at, piece));
    std::this_thread::sleep_for(2ms);
  }
  const std::string answers = ReadToEnd(fd);
  close(fd);
  RawResponse res = Parse(answers);
  INFO(answers.substr(0, 2000));
  CHECK(res.status == 200);
  CHECK(res.body.find(R"("accepted":3000)") != std::string::npos);
  const size_t second_at = answers.find("HTTP/1.1 ", 1);
  REQUIRE(second_at != std::string::npos);
  CHECK(Parse(answers.substr(second_at)).status == 200);
  CHECK(Healthy(server));
}

TEST_CASE("hostile: framing and encodings the server cannot trust are refused",
          "[server][hostile]") {
  TempDir dir;
  Server server(dir.path);
  const std::string body = kEvent;
  const std::string length = "Content-Length: " + std::to_string(body.size()) + "\r\n";
  const std::string json = "Content-Type: application/json\r\n";

  RequireError(
      Raw(server.port(), PostEvents(server, json + "Content-Encoding: gzip\r\n" + length, body)),
      415, "unsupported_media_type", "Content-Encoding");
  // Transfer-Encoding with Content-Length, in either order: 400.
  RequireError(
      Raw(server.port(),
          PostEvents(server, json + "Transfer-Encoding: chunked\r\n" + length, "0\r\n\r\n")),
      400, "invalid_argument");
  RequireError(
      Raw(server.port(),
          PostEvents(server, json + length + "Transfer-Encoding: chunked\r\n", "0\r\n\r\n")),
      400, "invalid_argument");
  // A coding other than chunked would leave the body to be read as the next request.
  RequireError(Raw(server.port(), PostEvents(server, json + "Transfer-Encoding: gzip\r\n", body)),
               400, "invalid_argument", "Transfer-Encoding");
  // Repeated Content-Length, even with equal values.
  RequireError(Raw(server.port(), PostEvents(server, json + length + length, body)), 400,
               "invalid_argument", "Content-Length");
  // No length at all.
  RequireError(Raw(server.port(), PostEvents(server, json, body)), 411, "length_required");
  // Headers over 16 KiB.
  RequireError(Raw(server.port(), "GET /healthz HTTP/1.1\r\nHost: " + server.authority() +
                                      "\r\nX-Big: " + std::string(20000, 'x') + "\r\n\r\n"),
               431, "header_too_large");
  // Non-JSON bodies: text/plain, a form, untyped.
  RequireError(
      Raw(server.port(), PostEvents(server, "Content-Type: text/plain\r\n" + length, body)), 415,
      "unsupported_media_type", "Content-Type");
  const std::string form = "userId=u1&event=e";
  RequireError(
      Raw(server.port(),
          PostEvents(server,
                     "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " +
                         std::to_string(form.size()) + "\r\n",
                     form)),
      415, "unsupported_media_type", "Content-Type");
  RequireError(Raw(server.port(), PostEvents(server, length, body)), 415, "unsupported_media_type");
  // NDJSON stays accepted on /v1/events, and a JSON type with parameters anywhere.
  CHECK(Raw(server.port(),
            PostEvents(server, "Content-Type: application/x-ndjson\r\n" + length, body))
            .status == 200);
  CHECK(Raw(server.port(),
            PostEvents(server, "Content-Type: Application/JSON; charset=utf-8\r\n" + length, body))
            .status == 200);
  httplib::Client c = server.Client();
  CHECK(c.Get("/v1/state")->body.find("\"logSeq\":2") != std::string::npos);
  CHECK(server.Stop() == 0);
}

TEST_CASE("hostile: tokenless, Host and Origin must name this server", "[server][hostile]") {
  TempDir dir;
  Server server(dir.path);
  auto get = [&](const std::string& headers) {
    return Raw(server.port(), "GET /v1/state HTTP/1.1\r\n" + headers + "Connection: close\r\n\r\n");
  };
  RequireError(get("Host: evil.example\r\n"), 403, "forbidden", "Host");
  RequireError(get("Host: evil.example:" + std::to_string(server.port()) + "\r\n"), 403,
               "forbidden", "Host");
  RequireError(get(""), 403, "forbidden", "Host");
  RequireError(get("Host: " + server.authority() + "\r\nOrigin: http://evil.example\r\n"), 403,
               "forbidden", "Origin");
  RequireError(get("Host: " + server.authority() + "\r\nOrigin: null\r\n"), 403, "forbidden",
               "Origin");
  // A page served by this server itself, and the loopback names, are this server.
  const std::string port = std::to_string(server.port());
  CHECK(get("Host: " + server.authority() + "\r\nOrigin: http://" + server.authority() + "\r\n")
            .status == 200);
  CHECK(get("Host: localhost:" + port + "\r\n").status == 200);
  CHECK(get("Host: LOCALHOST:" + port + "\r\nOrigin: http://127.0.0.1:" + port + "\r\n").status ==
        200);
  CHECK(get("Host: [::1]:" + port + "\r\n").status == 200);
  // A form posted from another site is refused whatever its body.
  RequireError(Raw(server.port(), PostEvents(server,
                                             "Origin: http://evil.example\r\nContent-Type: "
                                             "application/json\r\nContent-Length: 2\r\n",
                                             "{}")),
               403, "forbidden", "Origin");
}

TEST_CASE("hostile: with a token, the token is the protection and any Host is served",
          "[server][hostile]") {
  TempDir dir;
  Server server(dir.path, {"--auth-token", "s3cret"});
  RawResponse res = Raw(server.port(),
                        "GET /v1/state HTTP/1.1\r\nHost: proxy.example\r\nOrigin: "
                        "http://proxy.example\r\nAuthorization: Bearer s3cret\r\nConnection: "
                        "close\r\n\r\n");
  CHECK(res.status == 200);
  RequireError(Raw(server.port(),
                   "GET /v1/state HTTP/1.1\r\nHost: proxy.example\r\nConnection: close\r\n\r\n"),
               401, "unauthorized");
}

TEST_CASE("hostile: a second bucketd on a busy port exits non-zero naming the address",
          "[server][hostile]") {
  TempDir dir;
  Server server(dir.path / "first");
  int pipe_fds[2];
  REQUIRE(pipe(pipe_fds) == 0);
  pid_t pid = SpawnProcess(SidecarArgs(server.port(), dir.path / "second", {}), pipe_fds[1]);
  close(pipe_fds[1]);
  std::string err = ReadToEnd(pipe_fds[0]);
  close(pipe_fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  INFO(err << " status " << status);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) != 0);
  CHECK(err.find("in use") != std::string::npos);
  CHECK(err.find(server.authority()) != std::string::npos);
  CHECK(Healthy(server));
}
